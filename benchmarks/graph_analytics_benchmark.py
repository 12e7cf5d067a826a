"""Graph analytics on the notebook's CIFAR-10 network: the package against networkx, same run.

The graph-view notebook (``seeds/004``) turned its CIFAR-10 CNN into a weighted
``networkx.DiGraph`` (53,290 neurons, 4,586,624 edges) and ran networkx on it. This script builds
the same network (:class:`~nsp_pipeline.model.architectures.Cifar10CNN5`, granularity ``merged``,
``structural`` weights of a seeded random initialisation) and times, in one process, each analytic
of :mod:`nsp_pipeline.graph.analytics` and its networkx counterpart on the same edges: graph build
(networkx: ``DiGraph`` from the package's edge arrays, which spares it the notebook's Python loops),
density, Katz, PageRank, the longest path (networkx's semantics), the notebook's 3,392 × 1,098
adjacency block (networkx: ``adjacency_matrix`` then slice, sparse) and HITS. It prints wall
times, their ratios and how far the two results are apart. networkx's dense directed Laplacian
cannot run here: the script prints its memory need. Analytics networkx has no counterpart for
(input→output paths, Jacobian blocks, the Laplacian's lowest eigenvalues) are timed for the
package alone. Peak resident memory is printed after the package's analytics and again after
networkx's graph and analytics.

PageRank is unweighted on both sides (``weight=None``): structural weights have both signs, and a
random walk needs non-negative ones (networkx would run and return meaningless values).

``--vgg11-64`` (off by default; minutes and about 10 GB) runs the package's analytics on VGG-11 at
64 × 64 instead (1.38 M neurons, 560 M edges) and prints their times and the peak memory.

Usage: ``nice -n 5 python benchmarks/graph_analytics_benchmark.py [--vgg11-64]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import time

import numpy as np


def peak_resident_gib() -> float:
    """This process's peak resident memory so far (``ru_maxrss``), GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed(function):
    """``(seconds, result)`` of one call."""
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def weighted(model, example):
    """The model's merged neuron graph with structural weights, and the seconds it took."""
    from nsp_pipeline.graph.weights import weighted_graph

    return timed(lambda: weighted_graph(model, example, "structural", granularity="merged"))


def package_analytics(graph, block):
    """Time every analytic of the package on ``graph``: ``{name: (seconds, result)}``."""
    from nsp_pipeline.graph import analytics as ga

    first_layer = np.arange(graph.layout.layers[0].size)
    last = len(graph.layout) - 1
    steps = {
        "density": lambda: ga.density(graph),
        "layer edge counts": lambda: ga.layer_edge_counts(graph),
        "Katz (alpha 0.1)": lambda: ga.katz_centrality(graph, alpha=0.1),
        "PageRank (unweighted)": lambda: ga.pagerank(graph, weight=None),
        "longest path (networkx's)": lambda: ga.dag_longest_path_networkx(graph),
        f"block {block[2]}": lambda: ga.adjacency_block(graph, block[0], block[1]),
        "HITS": lambda: ga.hits(graph),
        "longest input→output path": lambda: ga.longest_path(graph),
        "strongest input→output path": lambda: ga.strongest_path(graph),
        "eigenvector (DAG limit)": lambda: ga.eigenvector_centrality(graph),
        "hop distances from the input": lambda: ga.hop_distances(graph, first_layer),
        f"Jacobian block {graph.layout.names[last - 2]}→{graph.layout.names[last]}": lambda: (
            ga.jacobian_block(graph, last - 2, last)
        ),
        "directed Laplacian operator (|w|)": lambda: ga.directed_laplacian(graph, weight="abs"),
        "directed Laplacian, 6 lowest eigenvalues": lambda: ga.directed_laplacian_eigenvalues(
            graph, k=6, weight="abs"
        ),
    }
    results = {}
    for name, step in steps.items():
        results[name] = timed(step)
        print(f"  package  {name:<45}{results[name][0]:9.3f} s", flush=True)
    return results


def networkx_analytics(graph, block_rows, block_columns):
    """Build the networkx graph and time its counterparts: ``{name: (seconds, result)}``."""
    import networkx as nx

    def build():
        digraph = nx.DiGraph()
        digraph.add_nodes_from(range(graph.n_nodes))  # node order = the package's node ids
        targets = np.repeat(np.arange(graph.n_nodes), np.diff(graph.indptr))
        digraph.add_weighted_edges_from(zip(graph.indices.tolist(), targets.tolist(), graph.weights.tolist()))
        return digraph

    results = {"graph build": timed(build)}
    digraph = results["graph build"][1]
    print(f"  networkx graph build{results['graph build'][0]:44.3f} s", flush=True)

    def as_array(values):
        return np.array([values[v] for v in range(graph.n_nodes)])

    steps = {
        "density": lambda: nx.density(digraph),
        "Katz (alpha 0.1)": lambda: as_array(nx.katz_centrality(digraph, alpha=0.1, weight="weight")),
        "PageRank (unweighted)": lambda: as_array(nx.pagerank(digraph, weight=None)),
        "longest path (networkx's)": lambda: nx.dag_longest_path(digraph, weight="weight"),
        "block": lambda: nx.adjacency_matrix(digraph)[block_rows][:, block_columns],
        "HITS": lambda: tuple(as_array(values) for values in nx.hits(digraph)),
    }
    for name, step in steps.items():
        results[name] = timed(step)
        print(f"  networkx {name:<45}{results[name][0]:9.3f} s", flush=True)
    return results


def agreement(name, ours, theirs) -> str:
    """How far the package's result is from networkx's."""
    if name == "density":
        return f"|Δ| = {abs(ours - theirs):.1e}"
    if name.startswith("block"):
        return "identical" if (ours != theirs.tocsr()).nnz == 0 else "DIFFERENT"
    if name.startswith("longest"):
        return "same path" if ours[0].tolist() == theirs else "DIFFERENT path"
    if name == "HITS":
        hubs, authorities = (np.abs(ours[i] - theirs[i]).max() for i in (0, 1))
        return f"max |Δ| hubs {hubs:.1e}, authorities {authorities:.1e}"
    return f"max |Δ| = {np.abs(ours - theirs).max():.1e} (max |x| {np.abs(theirs).max():.1e})"


def notebook_benchmark() -> None:
    import torch

    from nsp_pipeline.model.architectures import Cifar10CNN5

    torch.manual_seed(0)
    build_seconds, graph = weighted(Cifar10CNN5(), torch.zeros(1, *Cifar10CNN5.input_shape))
    n = graph.n_nodes
    offsets = dict(zip(graph.layout.names, graph.layout.offsets.tolist()))
    rows = slice(offsets["max_pooling2d_1"], offsets["dense_1"])  # the notebook's slice of adj
    columns = slice(offsets["conv_2"], n)
    label = f"{rows.stop - rows.start:,}×{columns.stop - columns.start:,}"
    block = (("max_pooling2d_1", "dense_0"), ("conv_2", "dense_1"), label)
    print(f"cifar10_cnn5, merged, structural weights: {n:,} nodes, {graph.n_edges:,} edges")
    print(f"  package  graph build (build_graph + structural weights){build_seconds:15.3f} s", flush=True)
    ours = package_analytics(graph, block)
    ours_peak = peak_resident_gib()
    theirs = networkx_analytics(graph, rows, columns)
    total_peak = peak_resident_gib()

    print("\n| analytic | package (s) | networkx (s) | ratio | agreement |\n|---|---:|---:|---:|---|")
    print(
        f"| graph build | {build_seconds:.3f} | {theirs['graph build'][0]:.3f} | "
        f"{theirs['graph build'][0] / build_seconds:.0f}× | networkx from the package's edge arrays |"
    )
    total_ours, total_theirs = build_seconds, theirs["graph build"][0]
    for name, (seconds, result) in ours.items():
        key = "block" if name.startswith("block") else name
        if key in theirs:
            nx_seconds, nx_result = theirs[key]
            total_ours += seconds
            total_theirs += nx_seconds
            print(
                f"| {name} | {seconds:.3f} | {nx_seconds:.3f} | {nx_seconds / seconds:.0f}× | "
                f"{agreement(name, result, nx_result)} |"
            )
        else:
            print(f"| {name} | {seconds:.3f} | — | — | package only |")
    print(
        f"| **total (compared rows)** | **{total_ours:.2f}** | **{total_theirs:.2f}** | "
        f"**{total_theirs / total_ours:.0f}×** | |"
    )
    dense = 4 * n * n * 8
    print(
        f"\nnetworkx.directed_laplacian_matrix not run: P, Q, Q + Qᵀ and L are dense n×n float64, "
        f"4 × {n * n * 8 / 1e9:.1f} GB = {dense / 1e9:.1f} GB ({dense / 2**30:.0f} GiB)."
    )
    print(
        f"peak resident memory: {ours_peak:.2f} GiB after the package's analytics, "
        f"{total_peak:.2f} GiB with networkx's graph and analytics"
    )


def vgg_benchmark() -> None:
    import torch

    from nsp_pipeline.model.architectures import VGG11

    torch.manual_seed(0)
    model = VGG11(input_size=64)
    build_seconds, graph = weighted(model, torch.zeros(1, *model.input_shape))
    print(f"VGG-11 at 64×64, merged, structural weights: {graph.n_nodes:,} nodes, {graph.n_edges:,} edges")
    print(f"  package  graph build (build_graph + structural weights){build_seconds:15.1f} s", flush=True)
    names = graph.layout.names
    block = (len(names) - 3, len(names) - 2, f"{names[-3]}→{names[-2]}")
    ours = package_analytics(graph, block)
    print("\n| analytic | package (s) |\n|---|---:|")
    print(f"| graph build | {build_seconds:.1f} |")
    for name, (seconds, _) in ours.items():
        print(f"| {name} | {seconds:.2f} |")
    print(f"| **total** | **{build_seconds + sum(s for s, _ in ours.values()):.1f}** |")
    print(f"peak resident memory: {peak_resident_gib():.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--vgg11-64", action="store_true", help="VGG-11 at 64×64 (package only; minutes, ~10 GB)"
    )
    args = parser.parse_args()
    import networkx as nx
    import scipy

    print(
        f"{datetime.datetime.now().isoformat(timespec='seconds')} on {platform.node()}: "
        f"{os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}; numpy {np.__version__}, scipy {scipy.__version__}, "
        f"networkx {nx.__version__}"
    )
    if args.vgg11_64:
        vgg_benchmark()
    else:
        notebook_benchmark()


if __name__ == "__main__":
    main()
