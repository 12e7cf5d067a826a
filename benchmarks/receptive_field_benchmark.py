"""Receptive fields of every neuron of VGG-11 at 224×224 against the model's forward pass.

Full-size VGG-11 (132,863,336 parameters), one 3×224×224 sample, ``merged`` granularity, in
one process, on the CPU threads torch is given. Timed (median of ``--repeats`` after one
warm-up run, except the single end-to-end run):

- ``forward``: ``model(x)`` under ``torch.no_grad`` in eval mode (the goal's reference);
- ``trace``: the one recording forward pass :func:`receptive_fields` runs;
- ``relations``: every layer's input relation and unclipped geometry, from the trace
  (:func:`~nsp_pipeline.graph.receptive_fields.fields_from_trace` minus the trace);
- ``boxes (all neurons)``: every neuron's bounding box materialised as six contiguous int64
  arrays per layer, plus the summary table;
- ``end to end``: ``receptive_fields(model, x)`` plus all boxes, as a user calls it.

It also prints the mean time of one neuron's exact mask (random neurons), the table, and the
ratios to the forward pass (goal: receptive fields of every neuron ≤ the forward pass).

Usage: ``python benchmarks/receptive_field_benchmark.py [--repeats 5] [--masks 200]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from nsp_pipeline.graph.receptive_fields import fields_from_trace, receptive_field_table, receptive_fields
from nsp_pipeline.model.architectures import VGG11
from nsp_pipeline.model.capture import trace


def timed(function, repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls after one warm-up call, and the last result."""
    result = function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def all_boxes(fields) -> int:
    """Materialise every neuron's bounding box; returns the number of neurons."""
    n = 0
    for field in fields.values():
        arrays = [np.ascontiguousarray(a) for pair in field.bounding_boxes() for a in pair]
        n += arrays[0].size
    receptive_field_table(fields)
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--masks", type=int, default=200, help="random neurons whose exact mask is timed")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = VGG11().eval()
    x = torch.rand(1, 3, 224, 224)
    print(f"VGG-11, 1×3×224×224, torch {torch.__version__}, {torch.get_num_threads()} threads")

    def forward():
        with torch.no_grad():
            return model(x)

    t_forward, _ = timed(forward, args.repeats)
    t_trace, recorded = timed(lambda: trace(model, x, "merged"), args.repeats)
    t_relations, fields = timed(lambda: fields_from_trace(recorded), args.repeats)
    t_boxes, n_neurons = timed(lambda: all_boxes(fields), args.repeats)

    start = time.perf_counter()
    all_boxes(receptive_fields(model, x))
    t_end_to_end = time.perf_counter() - start

    rng = np.random.default_rng(0)
    spatial = [f for f in fields.values() if len(f.shape) == 3]
    picks = [
        (f, int(rng.integers(f.n_units)))
        for f in (spatial[i] for i in rng.integers(len(spatial), size=args.masks))
    ]
    start = time.perf_counter()
    for field, unit in picks:
        field.mask(unit)
    t_mask = (time.perf_counter() - start) / max(len(picks), 1)

    print(
        f"\n{'layer':<14}{'kind':<19}{'shape':<16}{'size':>6}{'max':>6}{'stride':>8}{'offset':>8}{'unclipped':>11}"
    )
    for row in receptive_field_table(fields):
        print(
            f"{row.layer:<14}{row.kind:<19}{row.shape!s:<16}{row.size[0]:>6}{row.max_size[0]:>6}"
            f"{row.stride[0]!s:>8}{row.offset[0]!s:>8}{row.unclipped_size[0]!s:>11}"
        )

    print(f"\n{n_neurons:,} neurons in {len(fields)} layers (rows shown; columns are equal)")
    rows = [
        ("forward pass", t_forward),
        ("trace (recording forward pass)", t_trace),
        ("relations + geometry (all layers)", t_relations),
        ("boxes of all neurons + table", t_boxes),
        ("receptive fields without trace", t_relations + t_boxes),
        ("end to end (one run)", t_end_to_end),
    ]
    print(f"\n{'step':<36}{'seconds':>10}{'/ forward':>11}")
    for name, seconds in rows:
        print(f"{name:<36}{seconds:>10.4f}{seconds / t_forward:>11.2f}")
    print(f"one neuron's exact mask (mean of {len(picks)}): {t_mask * 1e6:.0f} µs")


if __name__ == "__main__":
    main()
