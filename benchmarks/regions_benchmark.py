"""Linear regions on 2-D slices: cells, seconds and cells per second (one run).

Networks: random MLPs 2-D→(64, 64, 64)→10 and 64-D→(512, 256)→10, the default digits model
(trained as the workflow trains it) on a slice through three test digits, VGG-11 at 32×32 (random
weights) on a slice through three random inputs, within a time budget; and the cost of one
ReLU layer of 3 widths on a 2-D slice. Slices are the plane through three points with a square
domain reaching ``margin`` (2) times the points' spread. The machine's other load shows in the
times: read them as one run. The VGG budget is checked between kink layers only: on a full slice
the first convolution's 65,536 ReLU sites nearly all cross the domain, an arrangement of up to
~2·10⁹ cells, so that first layer alone does not finish (measured: > 400 s).

Run: ``python benchmarks/regions_benchmark.py [--vgg-budget SECONDS] [--quick]``.
"""

from __future__ import annotations

import argparse
import time
from itertools import pairwise

import numpy as np
import torch
from torch import nn

from nsp_pipeline.data.loading import load_dataset
from nsp_pipeline.interpret.regions import linear_regions
from nsp_pipeline.interpret.slices import Slice
from nsp_pipeline.model.architectures import VGG11, DigitsCNN
from nsp_pipeline.model.training import train_classifier


class _Budget(Exception):
    """The time budget ran out (raised from the progress callback)."""


def mlp(widths: tuple[int, ...], seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for width_in, width_out in pairwise(widths[:-1]):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    layers.append(nn.Linear(widths[-2], widths[-1]))
    return nn.Sequential(*layers)


def run(name: str, model: nn.Module, plane: Slice, budget: float | None = None) -> dict:
    """Partition one slice; with ``budget`` (seconds), stop after the first layer past it."""
    reached: list[tuple[str, int]] = []
    start = time.perf_counter()

    def progress(layer: str, cells: int) -> None:
        reached.append((layer, cells))
        if budget is not None and time.perf_counter() - start > budget and layer != "output":
            raise _Budget

    try:
        result = linear_regions(model, plane, progress=progress, patterns=False)
        cells, note = result.n_cells, f"cells after each kink layer {result.cells_after_layer.tolist()}"
    except _Budget:
        cells = reached[-1][1]
        note = (
            f"budget: stopped after {reached[-1][0]} ({len(reached)} kink layers), cells per layer {reached}"
        )
    seconds = time.perf_counter() - start
    row = {"name": name, "cells": cells, "seconds": seconds, "rate": cells / seconds, "note": note}
    print(f"{name:<42} {cells:>9,} {seconds:>9.2f} {cells / seconds:>10,.0f}  {note}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vgg-budget", type=float, default=600.0, help="seconds for VGG-11 (default 600)")
    parser.add_argument("--quick", action="store_true", help="smaller networks (a smoke run)")
    options = parser.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'network':<42} {'cells':>9} {'seconds':>9} {'cells/s':>10}")
    # Warm-up: torch.func's first call imports its compiler stack (seconds, once per process).
    run("warm-up (tiny MLP)", mlp((2, 4, 2), 0), Slice.through(rng.normal(size=(3, 2))))
    small = (2, 16, 16, 16, 10) if options.quick else (2, 64, 64, 64, 10)
    run(f"MLP {small}", mlp(small, 1), Slice.through(rng.normal(size=(3, 2))))
    wide = (64, 64, 32, 10) if options.quick else (64, 512, 256, 10)
    run(f"MLP {wide}", mlp(wide, 2), Slice.through(rng.normal(size=(3, 64))))
    for width in (16, 32, 64) if options.quick else (64, 128, 256):
        run(
            f"one ReLU layer (2, {width}, 10)", mlp((2, width, 10), 3), Slice.through(rng.normal(size=(3, 2)))
        )
    train = load_dataset({"source": "digits", "split": "train"})
    test = load_dataset({"source": "digits", "split": "test"})
    digits = DigitsCNN()
    train_classifier(digits, train)
    picks = [int(np.flatnonzero(test.labels == label)[0]) for label in (0, 1, 7)]
    run("DigitsCNN (trained), digits 0, 1, 7", digits, Slice.through(test.inputs[picks].numpy()))
    torch.manual_seed(4)
    vgg = VGG11(num_classes=10, input_size=32, width=16 if options.quick else 64)
    run(
        f"VGG-11 32x32 (random, budget {options.vgg_budget:.0f} s)",
        vgg,
        Slice.through(rng.normal(size=(3, 3, 32, 32))),
        budget=options.vgg_budget,
    )


if __name__ == "__main__":
    main()
