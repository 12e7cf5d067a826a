"""Pattern files of VGG-11 at 224x224 per storage option; reading large files hashed once per process.

Suite ``patterns``: one VGG-11 sample (random weights and input, ``ops`` granularity), its
activations and its causal spectrum written with each storage option of ``write_pattern`` (the
config's ``storage`` section): float64 as before, float32 (``auto``: bit for bit for activations),
gzip and LZF compression, layer subsets. For each: bytes per sample, write time, and read time
with the checksum verified (a first read in a process) and without; the files are read from the
page cache. For float32 spectra it also prints how many digits the round trip ``s = Z ŝ`` keeps.

Suite ``verification``: writes a Laplacian operator of ``--nodes`` nodes (all ``n`` eigenpairs:
``8 n²`` bytes of eigenvectors, 800 MB for 10,000 nodes) and a pattern file of ``--samples``
samples of the same network, then times, best of ``--repeat``:

- the operator read as every read did before: its SHA-256 verified each time (here: as the first
  read in a process);
- later reads of the same file in the same process (verified once already), and ``verify=False``;
- one sample after another of the pattern file, by id: each read hashing the whole file, as
  before, against once per process.

Usage: ``python benchmarks/storage_benchmark.py [--suite patterns|verification|all] [--size 224]
[--nodes 10000] [--samples 256] [--repeat 3]``
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
from nsp_pipeline.transforms.api import inverse_transform, transform
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


def vgg11_patterns(size: int) -> tuple[Pattern, Pattern, object]:
    """One VGG-11 sample (random weights and input): its activations, causal spectrum and operator."""
    import torch

    from nsp_pipeline.model.architectures import ARCHITECTURES
    from nsp_pipeline.model.capture import trace
    from nsp_pipeline.transforms.causal.builder import factorized_operator

    torch.manual_seed(0)
    model = ARCHITECTURES["vgg11"](input_size=size).eval()
    recorded = trace(model, torch.randn(1, *model.input_shape), "ops")
    activations = recorded.pattern(sample_ids=[0])
    operator = factorized_operator(recorded)
    return activations, transform(activations, operator), operator


def round_trip_digits(activations: Pattern, spectrum: Pattern, operator) -> np.ndarray:
    """Per layer, decimal digits of the layer's largest activation that ``s = Z ŝ`` keeps."""
    rebuilt = inverse_transform(spectrum, operator)
    digits = []
    for original, again in zip(activations.layers(), rebuilt.layers(), strict=True):
        scale, error = np.abs(original).max(), np.abs(again - original).max()
        digits.append(16.0 if error == 0 else 0.0 if scale == 0 else -np.log10(error / scale))
    return np.clip(digits, 0.0, 16.0)


def pattern_suite(size: int, repeat: int) -> None:
    """Bytes per sample and write/read times of VGG-11's activations and spectrum per storage option."""
    start = time.perf_counter()
    activations, spectrum, operator = vgg11_patterns(size)
    layout = activations.layout
    relus = [layer.name for layer in layout.layers if layer.kind in ("relu", "ReLU")]
    classifier = [layer.name for layer in layout.layers if layer.size <= 25_088]  # 512 x 7 x 7 and after
    share = {
        name: sum(layout.layers[layout.index(n)].size for n in names) / layout.n_nodes
        for name, names in (("relu", relus), ("classifier", classifier))
    }
    print(
        f"VGG-11 at {size}x{size}, ops granularity: {layout.n_nodes:,} neurons in {len(layout)} layers; "
        f"float64: {layout.n_nodes * 8 / 1e6:.0f} MB per sample and pattern "
        f"(set up in {time.perf_counter() - start:.0f} s)"
    )
    options = [
        ("activations", activations, "float64, none (before)", {}),
        ("activations", activations, "auto (float32, exact)", {"dtype": "auto"}),
        (
            "activations",
            activations,
            "auto + gzip 1",
            {"dtype": "auto", "compression": "gzip", "compression_level": 1},
        ),
        (
            "activations",
            activations,
            "auto + gzip 4",
            {"dtype": "auto", "compression": "gzip", "compression_level": 4},
        ),
        ("activations", activations, "auto + lzf", {"dtype": "auto", "compression": "lzf"}),
        ("standard", spectrum, "float64, none (before)", {}),
        ("standard", spectrum, "float32 (rounded)", {"dtype": "float32"}),
        ("standard", spectrum, "float64 + gzip 1", {"compression": "gzip", "compression_level": 1}),
        ("standard", spectrum, "float64 + gzip 4", {"compression": "gzip", "compression_level": 4}),
        ("standard", spectrum, "float64 + lzf", {"compression": "lzf"}),
        ("standard", spectrum, f"float64, {len(relus)} relu layers", {"layers": relus}),
        ("standard", spectrum, f"float64, {len(classifier)} last layers", {"layers": classifier}),
    ]
    print("| pattern | storage | MB per sample | of float64 | write (s) | read, verified (s) | read (s) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for number, (name, pattern, label, settings) in enumerate(options):
            path = Path(folder) / f"{number}.h5"
            write = functools.partial(hdf5.write_pattern, path, pattern, provenance(), **settings)
            written = best(write, repeat, fresh=False)
            read = functools.partial(hdf5.read_pattern, path)
            verified = best(read, repeat, fresh=True)
            unverified = best(functools.partial(read, verify=False), repeat, fresh=False)
            size_mb = path.stat().st_size / 1e6
            print(
                f"| {name} | {label} | {size_mb:.1f} | {size_mb / (layout.n_nodes * 8e-6):.2f} | "
                f"{written:.2f} | {verified:.2f} | {unverified:.2f} |"
            )
            if settings == {"dtype": "float32"}:
                rounded = hdf5.read_pattern(path, verify=False)
                exact, single = (round_trip_digits(activations, s, operator) for s in (spectrum, rounded))
                middle = (exact >= 3) & (exact < 15)
                print(
                    f"  s = Z ŝ keeps fewer than 3 digits in {(exact < 3).sum()} of {len(exact)} layers from "
                    f"the float64 spectrum, in {(single < 3).sum()} from the float32 one; where float64 "
                    f"keeps 3 to 15 digits, float32 loses {np.median((exact - single)[middle]):.1f} more "
                    f"(median; the bound is log10(2^29) = {29 * np.log10(2):.1f})"
                )
    print(f"relu layers: {share['relu']:.0%} of the neurons; last layers: {share['classifier']:.2%}")


def verification_suite(args: argparse.Namespace) -> None:
    """Reading a large operator, and samples of a pattern file, hashed on every read vs once."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000, help="nodes of the network")
    parser.add_argument("--samples", type=int, default=256, help="samples in the pattern file")
    parser.add_argument("--read", type=int, default=16, help="samples read one by one from it")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (best time is reported)")
    parser.add_argument("--suite", choices=["patterns", "verification", "all"], default="all")
    parser.add_argument("--size", type=int, default=224, help="VGG-11 input size of the patterns suite")
    args = parser.parse_args()
    if args.suite in ("patterns", "all"):
        pattern_suite(args.size, args.repeat)
    if args.suite in ("verification", "all"):
        verification_suite(args)


if __name__ == "__main__":
    main()
