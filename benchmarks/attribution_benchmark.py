"""Time occlusion on VGG-11 against dnnbrain's loop, and gradient maps on the digits.

1. Occlusion of one unit of VGG-11 (random weights, seed 0; by default the centre unit of
   channel 0 of the last convolution ``features.18``, a deep unit) on one 224×224 image,
   window 11, stride 2: 107 × 107 = 11,449 windows. Ours
   (:func:`~nsp_pipeline.interpret.attributions.occlusion`) skips the windows that miss the
   unit's exact receptive field, evaluates the others in batches on the input crop holding the
   unit's window, and runs the model only up to the unit's layer. The baseline is dnnbrain's
   ``OccluderDiscrepancyMapping.compute`` loop reimplemented: per window, a copy of the image
   with the window zeroed and one full forward pass of batch 1 (as dnnbrain's
   ``compute_activation`` runs the whole model and reads the layer with a hook). The baseline
   runs on ``--baseline-windows`` windows drawn at random (seed 0) and its time is extrapolated
   linearly to all of them (printed as such); the maps agree on those windows.
2. Saliency, guided backprop and SmoothGrad (n = 50) of one class score of the default model
   (``DigitsCNN``, random weights) for the 1,797 images of scikit-learn's ``load_digits``.

Usage: ``python benchmarks/attribution_benchmark.py [--layer features.18] [--baseline-windows 20]
[--occlusion-only]``
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from sklearn.datasets import load_digits

from nsp_pipeline.graph.receptive_fields import receptive_fields
from nsp_pipeline.interpret.attributions import guided_backprop, occlusion, saliency, smoothgrad
from nsp_pipeline.interpret.targets import LayerReader, Target
from nsp_pipeline.model.architectures import VGG11, DigitsCNN


def dnnbrain_occlusion(model, hooked, image, target, window, stride, positions):
    """dnnbrain's loop: one full forward pass of one occluded copy per window (at ``positions``)."""
    values = {}
    handle = hooked.register_forward_hook(lambda m, i, o: values.update(out=o))
    side = (image.shape[-1] - window) // stride + 1
    diffs = []
    try:
        with torch.no_grad():
            model(image)
            base = target.select(values["out"])
            for position in positions.tolist():
                row, col = divmod(position, side)
                occluded = image.clone()
                occluded[..., row * stride : row * stride + window, col * stride : col * stride + window] = 0
                model(occluded)
                diffs.append(base - target.select(values["out"]))
    finally:
        handle.remove()
    return torch.cat(diffs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--layer", default="features.18", help="VGG-11 layer (merged granularity) of the unit"
    )
    parser.add_argument("--baseline-windows", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--occlusion-only", action="store_true", help="skip the gradient maps")
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )

    torch.manual_seed(0)
    vgg, image = VGG11().eval(), torch.rand(1, 3, 224, 224)
    reader = LayerReader(vgg, image)
    rows, cols = reader.shape(args.layer)[1:]
    target = Target(args.layer, channel=0, unit=(rows // 2, cols // 2))
    window, stride, n_windows = 11, 2, ((224 - 11) // 2 + 1) ** 2
    start = time.perf_counter()
    ours = occlusion(vgg, image, target, window, stride, batch_size=args.batch_size)[0, 0].reshape(-1)
    ours_s = time.perf_counter() - start
    # a merged convolution layer holds the ReLU after it: dnnbrain's hook then reads that ReLU
    index = int(args.layer.split(".")[1])
    hooked = vgg.features[index + isinstance(vgg.features[index], torch.nn.Conv2d)]
    positions = torch.randperm(n_windows, generator=torch.Generator().manual_seed(0))[: args.baseline_windows]
    start = time.perf_counter()
    baseline = dnnbrain_occlusion(vgg, hooked, image, target, window, stride, positions)
    per_window = (time.perf_counter() - start) / args.baseline_windows
    torch.testing.assert_close(ours[positions], baseline, rtol=1e-4, atol=1e-5)
    fields = receptive_fields(vgg, image, [args.layer])[args.layer]
    box = fields.bounding_box((0, rows // 2, cols // 2))
    print(
        f"\nOcclusion, VGG-11 unit {target}, 224×224, window {window}, stride {stride}: {n_windows:,} windows"
    )
    meeting = 1
    for start, stop in box[1:]:
        meeting *= sum(start - window < s < stop for s in range(0, 224 - window + 1, stride))
    print(
        f"  receptive field box rows {box[1]}, columns {box[2]}: {meeting:,} windows meet it "
        f"({int((ours != 0).sum()):,} non-zero map entries)"
    )
    print(f"  ours (batches of {args.batch_size}, windows meeting the field, on its crop): {ours_s:9.1f} s")
    print(
        f"  dnnbrain loop (one full forward per window): {per_window * n_windows:9.1f} s "
        f"(extrapolated linearly from {args.baseline_windows} random windows at {per_window:.3f} s each)"
    )
    print(f"  ratio: {per_window * n_windows / ours_s:.1f}x; maps agree on the timed windows")
    if args.occlusion_only:
        return

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    target = Target("fc", unit=(0,))
    print(f"\nGradient maps, DigitsCNN, {len(x):,} digits, target {target}")
    total = 0.0
    for name, run in [
        ("saliency", lambda: saliency(model, x, target)),
        ("guided backprop", lambda: guided_backprop(model, x, target)),
        ("SmoothGrad n=50 (saliency)", lambda: smoothgrad(model, x, target, n=50)),
    ]:
        start = time.perf_counter()
        maps = run()
        elapsed = time.perf_counter() - start
        total += elapsed
        print(f"  {name:28s} {elapsed:7.2f} s  maps {tuple(maps.shape)}")
    print(f"  {'total':28s} {total:7.2f} s")


if __name__ == "__main__":
    main()
