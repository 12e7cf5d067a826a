"""The exact causal transform on full-size VGG-11, ResNet-18 and MobileNetV2, measured in one run.

For each network (random weights and inputs) and batch size, times the model's own forward pass,
the capture (``trace`` and ``.pattern()``), the factorised operator's build, the transform alone
(``operator.forward``), the transform with its per-layer precision diagnostics (what ``transform()``
and ``analyze`` run), and ``analyze()`` end to end with the operator already built (it is cached per
model and input shape). Every time is printed in ms beside its ratio to the forward pass. The
machine's copy bandwidth is measured in the same run: the transform reads ``s`` and writes ``ŝ``
(16 bytes per neuron and sample), and the table gives that memory-traffic limit's share of the
transform time. Then the batched throughput on the default digits model.

Timings on a shared machine are noisy: each figure is the best of ``--repeat`` runs, and both sides
of every ratio come from the same run.

Usage: ``python benchmarks/scale_benchmark.py [--size 224] [--batches 1 16] [--models vgg11 resnet18]``
"""

from __future__ import annotations

import argparse
import logging
import time

import numba
import numpy as np
import torch

from nsp_pipeline.analysis.analyze import analyze
from nsp_pipeline.model.architectures import ARCHITECTURES, DigitsCNN
from nsp_pipeline.model.capture import trace
from nsp_pipeline.transforms.causal import kernels
from nsp_pipeline.transforms.causal.builder import factorized_operator


def best_time(repeat: int, function) -> tuple[float, object]:
    """Smallest wall time of ``repeat`` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def copy_bandwidth(n_bytes: int = 256 * 2**20, repeat: int = 5) -> float:
    """Bytes per second moved by ``np.copyto`` (read + write) between two preallocated arrays."""
    source, target = np.ones(n_bytes // 8), np.empty(n_bytes // 8)
    seconds, _ = best_time(repeat, lambda: np.copyto(target, source))
    return 2 * n_bytes / seconds


def network(name: str, size: int, batch: int, repeat: int, bandwidth: float) -> str:
    """One table row: times (ms) and their ratios to the forward pass."""
    torch.manual_seed(0)
    model = ARCHITECTURES[name](input_size=size).eval()
    inputs = torch.randn(batch, *model.input_shape)
    with torch.no_grad():
        forward, _ = best_time(repeat, lambda: model(inputs))
    capture, recorded = best_time(repeat, lambda: trace(model, inputs, "ops"))
    pattern, activations = best_time(repeat, recorded.pattern)
    reference = trace(model, inputs[:1], "ops")
    build, operator = best_time(1, lambda: factorized_operator(reference))
    compile_plan, _ = best_time(1, lambda: operator._plan)
    signal = activations.values
    transform, _ = best_time(repeat, lambda: operator.forward(signal))
    with_precision, _ = best_time(repeat, lambda: operator.spectrum_with_precision(signal))
    analyze(model, inputs, granularity="ops")  # builds and caches the operator
    end_to_end, _ = best_time(repeat, lambda: analyze(model, inputs, granularity="ops"))
    limit = 16 * signal.size / bandwidth
    cells = [
        ("capture", capture + pattern),
        ("build", build + compile_plan),
        ("transform", transform),
        ("diagnostics", with_precision - transform),
        ("transform()", with_precision),
        ("analyze()", end_to_end),
    ]
    shown = " | ".join(f"{ms * 1e3:,.0f} ms ({ms / forward:.2f}×)" for _, ms in cells)
    return (
        f"| {name} | {batch} | {signal.shape[1] / 1e6:.1f} M | {forward * 1e3:,.0f} ms | {shown} | "
        f"{limit * 1e3:,.0f} ms ({limit / transform:.0%}) |"
    )


def digits_throughput(repeat: int, batch: int = 4096) -> str:
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    inputs = torch.rand(batch, 1, 8, 8)
    operator = factorized_operator(trace(model, inputs[:1], "ops"))
    signal = trace(model, inputs, "ops").pattern().values
    seconds, _ = best_time(repeat, lambda: operator.forward(signal))
    diagnosed, _ = best_time(repeat, lambda: operator.spectrum_with_precision(signal))
    return (
        f"digits_cnn (batch of {batch}): transform {batch / seconds:,.0f} samples/s, "
        f"with diagnostics {batch / diagnosed:,.0f} samples/s"
    )


def warm_up() -> float:
    """Seconds to compile (or read from Numba's disk cache) the transform's loops, timed apart."""
    model = DigitsCNN().eval()
    inputs = torch.rand(2, 1, 8, 8)
    operator = factorized_operator(trace(model, inputs[:1], "ops"))
    signal = trace(model, inputs, "ops").pattern().values
    start = time.perf_counter()
    operator.spectrum_with_precision(signal)
    operator.forward(signal)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="batch sizes")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (best time is reported)")
    parser.add_argument("--models", nargs="+", default=["vgg11", "resnet18", "mobilenet_v2"])
    parser.add_argument("--threads", type=int, default=2, help="threads of torch and the transform")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kernels.set_threads(args.threads)
    np.seterr(all="ignore")
    logging.disable(logging.WARNING)  # random weights: the precision warning is expected
    bandwidth = copy_bandwidth()
    print(f"compiled loops ready (compiled, or read from Numba's cache) in {warm_up():.1f} s")
    print(
        f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write); input {args.size}×{args.size}; "
        f"{torch.get_num_threads()} torch threads, {numba.get_num_threads()} Numba threads\n"
    )
    print(
        "| network | batch | neurons | forward | capture | operator build | transform | diagnostics "
        "| transform() | analyze() | memory limit (share) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        for batch in args.batches:
            print(network(name, args.size, batch, args.repeat, bandwidth), flush=True)
    print()
    print(digits_throughput(args.repeat))


if __name__ == "__main__":
    main()
