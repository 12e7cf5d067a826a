"""Activation maximisation: one batched run for every channel of a layer vs one run per channel.

Part 1: all 16 channels of DigitsCNN's last convolution (``conv2``, merged granularity), 256
steps, pixel and Fourier parameterisations: one call of ``synthesize`` with 16 objectives vs 16
calls with one each (the ratio; the issue's goal is >= 4x). Part 2: VGG-11 (random weights) at
3x224x224, the 64 channels of its first convolution (``features.0``) in one batched run, Fourier
parameterisation with lucent's standard transforms; ``--vgg-steps`` (default 16: 256 steps take
minutes on two shared cores) and the time per step, so the time for 256 steps is extrapolated
and printed as such. Absolute wall times, one run each, on this machine's CPU threads.

Run: ``python benchmarks/synthesis_benchmark.py [--vgg-steps N] [--threads T]``.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from nsp_pipeline.interpret.synthesis import STANDARD_TRANSFORMS, synthesize
from nsp_pipeline.interpret.targets import Target
from nsp_pipeline.model.architectures import VGG11, DigitsCNN


def timed(call):
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--vgg-steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} torch thread(s)"
    )

    torch.manual_seed(0)
    digits = DigitsCNN().eval()
    channels = [Target("conv2", channel=c, reduction="mean") for c in range(16)]
    synthesize(digits, channels[:1], (1, 8, 8), steps=2)  # warm-up (imports, first trace)
    print(f"\nDigitsCNN conv2, 16 channels, {args.steps} steps, value_range (0, 1)")
    print(f"{'parameterisation':>16} {'batched s':>10} {'per-channel s':>14} {'ratio':>7}")
    for parameterisation in ("pixel", "fourier"):
        options = {"steps": args.steps, "parameterisation": parameterisation, "value_range": (0.0, 1.0)}
        batched, batched_s = timed(lambda o=options: synthesize(digits, channels, (1, 8, 8), **o))
        singles, single_s = timed(lambda o=options: [synthesize(digits, c, (1, 8, 8), **o) for c in channels])
        gap = max(abs(float(s.values[0]) - float(v)) for s, v in zip(singles, batched.values))
        print(
            f"{parameterisation:>16} {batched_s:>10.2f} {single_s:>14.2f} {single_s / batched_s:>6.1f}x"
            f"   (largest |batched - single| final value {gap:.1e})"
        )

    torch.manual_seed(0)
    vgg = VGG11().eval()
    targets = [Target("features.0", channel=c, reduction="mean") for c in range(64)]
    options = {"parameterisation": "fourier", "transforms": STANDARD_TRANSFORMS, "value_range": (0.0, 1.0)}
    _, one_s = timed(lambda: synthesize(vgg, targets, (3, 224, 224), steps=1, **options))
    result, run_s = timed(lambda: synthesize(vgg, targets, (3, 224, 224), steps=args.vgg_steps, **options))
    per_step = (run_s - one_s) / max(args.vgg_steps - 1, 1)
    print(
        "\nVGG-11 (random weights) 3x224x224, features.0, 64 channels in one batch,"
        " fourier + lucent's transforms"
    )
    print(
        f"  1 step (trace + setup + 1 step): {one_s:.1f} s; {args.vgg_steps} steps: {run_s:.1f} s; "
        f"{per_step:.2f} s per step; 256 steps extrapolated: {one_s + 255 * per_step:.0f} s "
        f"(NOT run: {args.vgg_steps} steps only)"
    )
    print(
        f"  mean objective first step {result.trajectory[0].mean():.3g}, "
        f"last {result.trajectory[-1].mean():.3g}"
    )


if __name__ == "__main__":
    main()
