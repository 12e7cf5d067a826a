"""Activation maximisation: one batched run for every channel of a layer vs one run per channel.

Part 1: all 16 channels of DigitsCNN's last convolution (``conv2``, merged granularity),
``--steps`` steps (256), pixel and Fourier parameterisations: one call of ``synthesize`` with 16
objectives vs 16 calls with one each (the ratio; the issue's goal is >= 4x), with the time per
step of each side. Part 2: VGG-11 (random weights) at 3x224x224, the ``--vgg-channels`` (64)
channels of its first convolution (``features.0``) in one batched run, Fourier parameterisation
with lucent's standard transforms, ``--vgg-steps`` steps: a 1-step run (tracing and setup)
and the ``--vgg-steps`` run, so that the time per step is ``(T_N − T_1) / (N − 1)``; ``--vgg-steps
256`` is the issue's run, measured; fewer steps (default 16) extrapolate to 256, printed as
such (a step costs seconds on a CPU thread: 64 images of 64×224×224 activations and their
gradients); ``--vgg-steps 0`` skips part 2. Absolute wall times, one run each, on this
machine's CPU threads.

Run: ``python benchmarks/synthesis_benchmark.py [--steps N] [--vgg-steps N] [--vgg-channels C]
[--threads T]``.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from nsp_pipeline.interpret.synthesis import STANDARD_TRANSFORMS, synthesize
from nsp_pipeline.interpret.targets import Target
from nsp_pipeline.model.architectures import VGG11, DigitsCNN

#: The issue's number of steps.
ISSUE_STEPS = 256


def timed(call):
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def digits_part(steps: int) -> None:
    torch.manual_seed(0)
    digits = DigitsCNN().eval()
    channels = [Target("conv2", channel=c, reduction="mean") for c in range(16)]
    synthesize(digits, channels[:1], (1, 8, 8), steps=2)  # warm-up (imports, first trace)
    print(f"\nDigitsCNN conv2, 16 channels, {steps} steps, value_range (0, 1)")
    print(
        f"{'parameterisation':>16} {'batched s':>10} {'ms/step':>8} {'per-channel s':>14} {'ms/step':>8} "
        f"{'ratio':>7}"
    )
    for parameterisation in ("pixel", "fourier"):
        options = {"steps": steps, "parameterisation": parameterisation, "value_range": (0.0, 1.0)}
        batched, batched_s = timed(lambda o=options: synthesize(digits, channels, (1, 8, 8), **o))
        singles, single_s = timed(lambda o=options: [synthesize(digits, c, (1, 8, 8), **o) for c in channels])
        gap = max(abs(float(s.values[0]) - float(v)) for s, v in zip(singles, batched.values))
        print(
            f"{parameterisation:>16} {batched_s:>10.2f} {1e3 * batched_s / steps:>8.2f} {single_s:>14.2f} "
            f"{1e3 * single_s / steps:>8.2f} {single_s / batched_s:>6.1f}x"
            f"   (largest |batched - single| final value {gap:.1e})"
        )


def vgg_part(steps: int, channels: int) -> None:
    torch.manual_seed(0)
    vgg = VGG11().eval()
    targets = [Target("features.0", channel=c, reduction="mean") for c in range(channels)]
    options = {"parameterisation": "fourier", "transforms": STANDARD_TRANSFORMS, "value_range": (0.0, 1.0)}
    print(
        f"\nVGG-11 (random weights) 3x224x224, features.0, {channels} channels in one batch,"
        " fourier + lucent's transforms"
    )
    _, one_s = timed(lambda: synthesize(vgg, targets, (3, 224, 224), steps=1, **options))
    print(f"  1 step (trace + setup + 1 step): {one_s:.1f} s", flush=True)
    result, run_s = timed(lambda: synthesize(vgg, targets, (3, 224, 224), steps=steps, **options))
    per_step = (run_s - one_s) / max(steps - 1, 1)
    print(f"  {steps} steps: {run_s:.1f} s in all, {per_step:.2f} s per step")
    if steps == ISSUE_STEPS:
        print(f"  {ISSUE_STEPS} steps measured: {run_s:.0f} s")
    else:
        print(
            f"  {ISSUE_STEPS} steps EXTRAPOLATED (not run): {one_s + (ISSUE_STEPS - 1) * per_step:.0f} s "
            f"(setup and first step + {ISSUE_STEPS - 1} x the time per step)"
        )
    print(
        f"  mean objective first step {result.trajectory[0].mean():.3g}, "
        f"last {result.trajectory[-1].mean():.3g}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=ISSUE_STEPS, help="steps of part 1 (digits)")
    parser.add_argument("--vgg-steps", type=int, default=16, help="steps of part 2 (VGG-11); 0 skips it")
    parser.add_argument("--vgg-channels", type=int, default=64, help="channels of features.0 (at most 64)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.steps < 1 or args.vgg_steps < 0 or not 1 <= args.vgg_channels <= 64:
        parser.error("expected --steps >= 1, --vgg-steps >= 0 and --vgg-channels in 1..64")
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} torch thread(s)"
    )
    digits_part(args.steps)
    if args.vgg_steps:
        vgg_part(args.vgg_steps, args.vgg_channels)


if __name__ == "__main__":
    main()
