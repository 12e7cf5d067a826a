"""Reading a large operator file, and samples of a pattern file: hashed on every read vs once per process.

Writes a Laplacian operator of ``--nodes`` nodes (all ``n`` eigenpairs: ``8 n²`` bytes of
eigenvectors, 800 MB for 10,000 nodes) and a pattern file of ``--samples`` samples of the same
network, then times, best of ``--repeat``:

- the operator read as every read did before: its SHA-256 verified each time (here: as the first
  read in a process);
- later reads of the same file in the same process (verified once already), and ``verify=False``;
- one sample after another of the pattern file, by id: each read hashing the whole file, as
  before, against once per process.

Usage: ``python benchmarks/storage_benchmark.py [--nodes 10000] [--samples 256] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nsp_pipeline.core.layout import Layer, Layout
from nsp_pipeline.core.pattern import Pattern
from nsp_pipeline.io import hdf5
from nsp_pipeline.io.provenance import provenance
from nsp_pipeline.transforms.laplacian import LaplacianOperator


def best(read: Callable[[], object], repeat: int, fresh: bool) -> float:
    """Best wall time of ``read``; ``fresh``: as the first read in a process (nothing verified yet)."""
    times = []
    for _ in range(repeat):
        if fresh:
            hdf5._VERIFIED.clear()
        start = time.perf_counter()
        read()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000, help="nodes of the network")
    parser.add_argument("--samples", type=int, default=256, help="samples in the pattern file")
    parser.add_argument("--read", type=int, default=16, help="samples read one by one from it")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (best time is reported)")
    args = parser.parse_args()
    n = args.nodes
    layout = Layout((Layer("input", (n // 2,), "input"), Layer("fc", (n - n // 2,), "Linear", parents=(0,))))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        operator_file, pattern_file = Path(folder) / "operator.h5", Path(folder) / "pattern.h5"
        operator = LaplacianOperator(layout, np.sort(rng.normal(size=n)), rng.normal(size=(n, n)))
        hdf5.write_laplacian_operator(operator_file, operator, provenance())
        del operator
        ids = np.arange(args.samples) + 1000
        pattern = Pattern(layout, rng.normal(size=(args.samples, n)), sample_ids=ids)
        hdf5.write_pattern(pattern_file, pattern, provenance())
        print(f"Laplacian operator of {n} nodes: {operator_file.stat().st_size / 2**20:.0f} MiB")
        read = functools.partial(hdf5.read_laplacian_operator, operator_file)
        rows = [
            ("before: SHA-256 on every read", read, True),
            ("after: first read in a process (SHA-256)", read, True),
            ("after: later reads of the file in the process", read, False),
            ("after: verify=False", functools.partial(read, verify=False), False),
        ]
        for label, reader, fresh in rows:
            print(f"  {label:<52} {best(reader, args.repeat, fresh):7.3f} s")
        size = pattern_file.stat().st_size / 2**20
        print(
            f"{args.read} samples, one by one, of a pattern file of {args.samples} samples ({size:.0f} MiB):"
        )
        wanted = ids[:: max(1, args.samples // args.read)][: args.read]

        def one_by_one(fresh: bool) -> None:
            for sample in wanted:
                if fresh:
                    hdf5._VERIFIED.clear()
                hdf5.read_pattern(pattern_file, sample_ids=[sample])

        before = best(functools.partial(one_by_one, True), args.repeat, True)
        after = best(functools.partial(one_by_one, False), args.repeat, True)
        print(f"  {'before: the whole file read and hashed for each':<52} {before:7.3f} s")
        print(f"  {'after: hashed once, then only its rows read':<52} {after:7.3f} s")


if __name__ == "__main__":
    main()
