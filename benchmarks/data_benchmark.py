"""Time to get one batch of samples from a large ``.npy`` file: whole load and index vs reading the batch.

Writes a 20,000-sample ``.npy`` file of 1×28×28 float32 inputs (63 MB) to a temporary folder and
times, for one batch of 256 consecutive samples (what one activations job asks for),
``load_dataset(spec).inputs[positions]`` against ``load_samples(spec, positions)``, which
memory-maps the file and reads only the batch's rows. Both read from the page cache (the file was
just written), so the ratio is a floor on what a cold disk or a network file system gives.

Usage: ``python benchmarks/data_benchmark.py [--samples 20000] [--batch 256] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import tempfile
import timeit
from pathlib import Path

import numpy as np
import torch

from nsp_pipeline.data.loading import load_dataset, load_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000, help="samples in the file")
    parser.add_argument("--batch", type=int, default=256, help="samples to get")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (best time is reported)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "inputs.npy"
        inputs = np.random.default_rng(0).random((args.samples, 1, 28, 28), dtype=np.float32)
        np.save(path, inputs)
        spec = {"source": "array", "path": str(path)}
        start = args.samples // 2
        positions = np.arange(start, start + args.batch)
        index = torch.as_tensor(positions)

        def whole():
            return load_dataset(spec).inputs[index]

        def batch():
            return load_samples(spec, positions).inputs

        assert torch.equal(whole(), batch()) and torch.equal(batch(), torch.from_numpy(inputs[positions]))
        times = {
            name: min(timeit.repeat(function, number=1, repeat=args.repeat))
            for name, function in (("whole", whole), ("batch", batch))
        }
    file = f"1×28×28 float32, {inputs.nbytes / 1e6:.0f} MB .npy"
    print(f"{args.batch} of {args.samples:,} samples ({file}), best of {args.repeat}:")
    print(f"  load_dataset + index  {times['whole'] * 1e3:9.2f} ms")
    print(f"  load_samples          {times['batch'] * 1e3:9.2f} ms")
    print(f"  ratio                 {times['whole'] / times['batch']:9.1f}×")


if __name__ == "__main__":
    main()
