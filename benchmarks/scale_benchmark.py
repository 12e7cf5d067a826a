"""The exact causal transform on full-size VGG-11, ResNet-18 and MobileNetV2, measured in one run.

For each network at 224×224 (batch of one, random weights and input), prints the model's own
forward pass time, the factorised operator's build time and the transform time, their ratio, and
the transform's peak extra memory against the activation bytes (float64). Then the batched
throughput on the default digits model.

Usage: ``python benchmarks/scale_benchmark.py [--size 224] [--repeat 3] [--models vgg11 resnet18]``
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import torch

from nsp_pipeline.model.architectures import ARCHITECTURES, DigitsCNN
from nsp_pipeline.model.capture import trace
from nsp_pipeline.transforms.causal.builder import factorized_operator


def best_time(repeat: int, function) -> tuple[float, object]:
    """Smallest wall time of ``repeat`` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def network(name: str, size: int, repeat: int) -> None:
    torch.manual_seed(0)
    model = ARCHITECTURES[name](input_size=size).eval()
    inputs = torch.randn(1, *model.input_shape)
    with torch.no_grad():
        forward, _ = best_time(repeat, lambda: model(inputs))
    recorded = trace(model, inputs, "ops")
    build, operator = best_time(1, lambda: factorized_operator(recorded))
    signal = recorded.pattern().values
    transform, spectrum = best_time(repeat, lambda: operator.forward(signal))
    tracemalloc.start()
    operator.forward(signal)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    activation_bytes = signal.nbytes
    extra = peak - spectrum.nbytes  # the output itself is not extra
    print(
        f"{name:13s} {size}x{size}: {signal.shape[1]:>11,} neurons  forward {forward * 1e3:7.0f} ms  "
        f"build {build * 1e3:6.0f} ms  transform {transform * 1e3:7.0f} ms  "
        f"ratio {transform / forward:5.2f}x  peak extra memory {extra / activation_bytes:4.2f}x activations"
    )


def digits_throughput(repeat: int, batch: int = 1024) -> None:
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    inputs = torch.rand(batch, 1, 8, 8)
    operator = factorized_operator(trace(model, inputs[:1], "ops"))
    signal = trace(model, inputs, "ops").pattern().values
    seconds, _ = best_time(repeat, lambda: operator.forward(signal))
    print(f"digits_cnn transform throughput: {batch / seconds:,.0f} samples/s (batch of {batch})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (best time is reported)")
    parser.add_argument("--models", nargs="+", default=["vgg11", "resnet18", "mobilenet_v2"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the forward pass")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    np.seterr(all="ignore")
    for name in args.models:
        network(name, args.size, args.repeat)
    digits_throughput(args.repeat)


if __name__ == "__main__":
    main()
