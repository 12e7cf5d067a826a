"""Time and memory of the core library on the nsp tutorial MNIST network (9,594 neurons).

Prints graph construction, closure, and per-sample transform times, the peak memory of
those steps against the 736 MB a dense n×n float64 matrix would take, and, with
``--compare-original``, the original ``nsp``'s graph construction measured in the same run.

Usage: ``python benchmarks/core_benchmark.py [--batch 256] [--repeat 5] [--compare-original]``
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import torch

from nsp_pipeline import build_graph, causal_operator, trace, transform
from nsp_pipeline.model.architectures import MnistTutorialNet


def best_of(repeat: int, function):
    """Smallest wall time of ``repeat`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="samples per transform call")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (best time is reported)")
    parser.add_argument("--compare-original", action="store_true", help="also time the original nsp")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = MnistTutorialNet().eval()
    inputs = torch.rand(args.batch, 1, 28, 28)
    example = inputs[:1]

    graph_time, graph = best_of(args.repeat, lambda: build_graph(model, example))
    closure_time, operator = best_of(args.repeat, lambda: causal_operator(graph))
    capture_time, pattern = best_of(args.repeat, lambda: trace(model, inputs).pattern())
    forward_time, spectrum = best_of(args.repeat, lambda: transform(pattern, operator))
    inverse_time, rebuilt = best_of(args.repeat, lambda: operator.inverse(spectrum.values))

    # Peak memory, measured apart from the timings (tracing allocations slows them down).
    tracemalloc.start()
    causal_operator(build_graph(model, example))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    transform(pattern, operator)
    _, transform_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    n = graph.n_nodes
    dense_bytes = 8 * n * n
    closure_bytes = operator.indices.nbytes + operator.indptr.nbytes + operator.row_map.nbytes
    scale = np.abs(spectrum.values) @ operator.zeta().T
    round_trip = np.max(np.abs(rebuilt - pattern.values) / scale)
    print(f"network: nsp tutorial MNIST, {n} neurons, {graph.n_edges} edges, batch {args.batch}")
    print(f"graph construction        {graph_time * 1e3:9.1f} ms")
    print(
        f"closure (sparse)          {closure_time * 1e3:9.1f} ms   "
        f"{operator.n_closure_entries} ancestor pairs in {len(operator.indptr) - 1} distinct rows"
    )
    print(f"graph + closure           {(graph_time + closure_time) * 1e3:9.1f} ms")
    print(f"activation capture        {capture_time / args.batch * 1e3:9.3f} ms/sample")
    print(f"causal transform          {forward_time / args.batch * 1e3:9.3f} ms/sample")
    print(f"inverse transform         {inverse_time / args.batch * 1e3:9.3f} ms/sample")
    print(f"round trip max error      {round_trip:9.2e} (relative to Z|ŝ| per node)")
    print(f"closure storage           {closure_bytes / 2**20:9.1f} MiB")
    print(
        f"peak memory graph+closure {peak / 2**20:9.1f} MiB   "
        f"(dense n×n float64: {dense_bytes / 2**20:.0f} MiB, ratio {dense_bytes / peak:.1f}×)"
    )
    print(
        f"peak memory transform     {transform_peak / 2**20:9.1f} MiB   "
        f"(batch of {args.batch}; input and output alone take {2 * pattern.values.nbytes / 2**20:.1f} MiB)"
    )

    if args.compare_original:
        import nsp as original

        start = time.perf_counter()
        old_activations = original.Activations(model, example)
        old_graph = original.NNGraph(old_activations)
        old_graph_time = time.perf_counter() - start
        start = time.perf_counter()
        old_graph.get_transformer("standard")
        old_closure_time = time.perf_counter() - start
        start = time.perf_counter()
        old_spectrum = np.array(old_graph.transform(old_activations).to_vector())
        old_transform_time = time.perf_counter() - start
        ours = transform(trace(model, example).pattern(), operator).values[0]
        agree = np.max(np.abs(ours - old_spectrum) / (np.abs(old_spectrum) @ operator.zeta().T + 1e-300))
        print(
            f"original nsp: graph {old_graph_time:.1f} s, closure {old_closure_time:.1f} s, "
            f"transform {old_transform_time * 1e3:.1f} ms/sample; spectra agree to {agree:.1e}"
        )
        speedup = (old_graph_time + old_closure_time) / (graph_time + closure_time)
        print(f"speed-up graph + closure  {speedup:9.0f}×")
        print(f"speed-up transform        {old_transform_time / (forward_time / args.batch):9.0f}×")


if __name__ == "__main__":
    main()
