"""Correct digits of the causal spectrum per layer, float64 against exact, on full-size networks.

For VGG-11, ResNet-18 and MobileNetV2 at 224×224 (batch 1, random weights; ``--trained-like`` gives
the batch norms random statistics and affine parameters), in one run:

- times: the model's forward pass, the float64 transform (``operator.forward``), the float64
  transform with its diagnostics and digit estimates, the exact multi-limb transform
  (``operator.exact_forward`` and its rounding to float64; ratio to float64), and ``analyze()`` end
  to end with the automatic choice of arithmetic (operator cached), as a ratio to the forward pass;
- digits per layer (each layer's smallest over its coefficients; min and median over layers) of
  float64 against exact, before (the residual ``add`` layers summed over boxes, as until now) and
  after (read from their parent's activation), and of the automatic choice;
- the precision table: layers below 3 digits by the round-trip metric (what ``analyze()``
  reported until now), by the true float64 digits before and after, and with ``auto``; and
  whether the estimate was ever optimistic (estimate above the true digits).

Timings on a shared machine are noisy: each figure is the best of ``--repeat`` runs, both sides of
every ratio from the same run; the load average is printed.

Usage: ``python benchmarks/precision_benchmark.py [--size 224] [--models vgg11 resnet18] [--trained-like]``
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace

import numpy as np
import torch
from scale_benchmark import best_time  # this folder is on the path when the script runs

from nsp_pipeline.analysis.analyze import analyze
from nsp_pipeline.model.architectures import ARCHITECTURES
from nsp_pipeline.model.capture import trace
from nsp_pipeline.transforms.causal.builder import factorized_operator

MODELS = ("vgg11", "resnet18", "mobilenet_v2")


def layer_digits(layout, got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Each layer's smallest correct significant digits (17: all equal; -inf: noise where ŝ = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        digits = -np.log10(np.abs(got - exact) / np.abs(exact))
    digits = np.where(got == exact, 17.0, np.minimum(digits, 17.0))
    return np.array([digits[:, layout.slice(i)].min() for i in range(len(layout))])


def trained_like(model: torch.nn.Module) -> None:
    """Batch norms with random running statistics and affine parameters, as after training."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(0.5 * torch.randn(n, generator=generator))
            module.running_var.copy_(0.2 + 2.8 * torch.rand(n, generator=generator))
            module.weight.data.copy_(0.3 + 1.7 * torch.rand(n, generator=generator))
            module.bias.data.copy_(0.5 * torch.randn(n, generator=generator))


def network(name: str, size: int, repeat: int, like_trained: bool) -> tuple[str, str]:
    """One row of the timing table and one of the precision table."""
    torch.manual_seed(0)
    model = ARCHITECTURES[name](input_size=size).eval()
    if like_trained:
        trained_like(model)
    inputs = torch.randn(1, *model.input_shape)
    with torch.no_grad():
        forward, _ = best_time(repeat, lambda: model(inputs))
    activations = trace(model, inputs, "ops").pattern()
    signal, layout = activations.values, activations.layout
    recorded = trace(model, inputs, "ops")
    operator = factorized_operator(recorded)
    operator.forward(signal)  # compiles the sweep
    shortcuts = {  # residual adds read from their parent's activation (summed over boxes until now)
        i
        for i, parents in enumerate(operator.single_parents)
        if parents is not None and len(set(recorded.calls[i].input_layers)) > 1
    }
    before = replace(
        operator,
        single_parents=[None if i in shortcuts else p for i, p in enumerate(operator.single_parents)],
    )
    float64, spectrum = best_time(repeat, lambda: operator.forward(signal))
    estimates, (_, round_trip, _, estimated) = best_time(
        repeat, lambda: operator.spectrum_with_estimates(signal)
    )
    exact_time, exact = best_time(max(1, repeat // 2), lambda: operator.exact_forward(signal).to_float())
    analyze(model, inputs, granularity="ops")  # builds and caches the operator
    end_to_end, result = best_time(repeat, lambda: analyze(model, inputs, granularity="ops"))
    auto = result.spectra["standard"]
    digits_before = layer_digits(layout, before.forward(signal), exact)
    digits_after = layer_digits(layout, spectrum, exact)
    digits_auto = layer_digits(layout, auto.values, exact)
    optimistic = int((digits_after < estimated[0]).sum())
    n_layers, n_exact = len(layout), int(auto.diagnostics["exact_arithmetic"][0].sum())

    def spread(digits: np.ndarray) -> str:
        return f"{digits.min():.1f} / {np.median(digits):.1f}"

    timing = (
        f"| {name} | {signal.shape[1] / 1e6:.1f} M | {forward * 1e3:,.0f} ms | {float64 * 1e3:,.0f} ms | "
        f"{estimates * 1e3:,.0f} ms | {exact_time * 1e3:,.0f} ms ({exact_time / float64:.1f}×) | "
        f"{end_to_end * 1e3:,.0f} ms ({end_to_end / forward:.1f}×) | {n_exact} of {n_layers} |"
    )
    table = (
        f"| {name} | {int((round_trip[0] < 3).sum())} of {n_layers} | {int((digits_before < 3).sum())} "
        f"({spread(digits_before)}) | {int((digits_after < 3).sum())} ({spread(digits_after)}) | "
        f"{int((digits_auto < 6).sum())} ({spread(digits_auto)}) | {estimated.min():.1f} | {optimistic} |"
    )
    return timing, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=sorted(ARCHITECTURES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--trained-like", action="store_true")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.size}×{args.size}")
    rows = [network(name, args.size, args.repeat, args.trained_like) for name in args.models]
    print(
        "\n| network | neurons | forward | float64 | float64 + estimates | exact (ratio) | analyze() auto "
        "(× forward) | layers exact in auto |\n|---|---|---|---|---|---|---|---|"
    )
    print("\n".join(timing for timing, _ in rows))
    print(
        "\n| network | round trip < 3 digits (reported until now) | float64 < 3 digits before (min / median) "
        "| float64 < 3 after (min / median) | auto < 6 digits (min / median) | min estimate "
        "| layers estimate > true |\n|---|---|---|---|---|---|---|"
    )
    print("\n".join(table for _, table in rows))
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
