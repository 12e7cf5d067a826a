"""The views of a weighted neuron graph that the graph_analytics stage stores and draws.

:func:`summarize_graph` runs the analytics of :mod:`nsp_pipeline.graph.analytics` that a
configuration asks for (section ``graph_analytics``) on one graph and gathers them in a
:class:`GraphSummary`: what :func:`nsp_pipeline.io.hdf5.write_graph_summary` stores and
:func:`nsp_pipeline.render.graph_plots.plot_graph_summary` draws. Torch-free: the weights are
already on the graph (:func:`nsp_pipeline.graph.weights.weighted_graph`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from nsp_pipeline.core.defaults import default
from nsp_pipeline.core.layout import Layout
from nsp_pipeline.core.progress import progress
from nsp_pipeline.graph import analytics
from nsp_pipeline.graph.neuron_graph import NeuronGraph

#: Largest side of a block heatmap: bigger blocks are averaged over bins of neighbouring neurons.
HEATMAP_SIDE = 256

#: Centralities by the name of their analytic, in the order they are drawn.
CENTRALITIES = ("katz", "pagerank", "hubs", "authorities", "eigenvector")

#: Paths by name: the best input→output path, networkx's dag_longest_path, the strongest path.
PATHS = ("longest", "longest_networkx", "strongest")


@dataclass(frozen=True)
class BlockView:
    """One adjacency block between two layers: its heatmap and, when asked for, the block itself.

    Parameters
    ----------
    source, target : int
        Layer indices (rows: the source layer's neurons).
    heatmap : numpy.ndarray
        ``(rows, columns)`` float64: the mean weight of the edges in each bin of
        ``bin_rows × bin_columns`` neurons, NaN where a bin has no edge.
    bins : (int, int)
        Neurons per heatmap bin along each axis (1: exact).
    block : scipy.sparse.csr_array, optional
        The whole block (source size × target size).
    """

    source: int
    target: int
    heatmap: np.ndarray
    bins: tuple[int, int]
    block: sp.csr_array | None = None


@dataclass(frozen=True)
class GraphSummary:
    """The analytics of one weighted neuron graph.

    Parameters
    ----------
    layout : Layout
        The graph's layers.
    weight_kind : {"structural", "local", "none"}
        What the edge weights were.
    n_edges : int
        Number of edges.
    density : float
        ``m / (n (n - 1))``, as networkx defines it.
    layer_edge_counts : numpy.ndarray
        ``(n_layers, n_layers)``: edges from layer i to layer j.
    centralities : dict of str to numpy.ndarray
        Per node, by name (see :data:`CENTRALITIES`).
    laplacian_eigenvalues : numpy.ndarray, optional
        The lowest eigenvalues of the directed Laplacian (Chung 2005).
    paths : dict of str to (numpy.ndarray, float)
        Node ids and value of each path (see :data:`PATHS`).
    hops : numpy.ndarray, optional
        Per node, the fewest edges from an input neuron (-1: unreachable).
    blocks : tuple of BlockView
        The adjacency blocks drawn.
    settings : dict
        The settings they were computed with.
    """

    layout: Layout
    weight_kind: str
    n_edges: int
    density: float
    layer_edge_counts: np.ndarray
    centralities: dict[str, np.ndarray] = field(default_factory=dict)
    laplacian_eigenvalues: np.ndarray | None = None
    paths: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict)
    hops: np.ndarray | None = None
    blocks: tuple[BlockView, ...] = ()
    settings: dict = field(default_factory=dict)


def summarize_graph(graph: NeuronGraph, settings: Mapping | None = None) -> GraphSummary:
    """Compute the analytics a ``graph_analytics`` configuration section asks for.

    PageRank, HITS and the directed Laplacian need non-negative weights (random walks, Perron
    vectors): they weigh edges by ``|weight|``.

    Parameters
    ----------
    graph : NeuronGraph
        The graph, weighted or not (unweighted: every edge weighs 1).
    settings : mapping, optional
        The section ``graph_analytics`` of the configuration (defaults filled in for what is absent).

    Returns
    -------
    GraphSummary
    """
    settings = {**default("graph_analytics"), **(settings or {})}
    layout = graph.layout
    centralities: dict[str, np.ndarray] = {}
    paths: dict[str, tuple[np.ndarray, float]] = {}
    eigenvalues = hops = None
    for step in progress(settings["analytics"], "graph analytics", unit="analytic"):
        if step == "katz":
            centralities["katz"] = analytics.katz_centrality(graph, alpha=settings["katz_alpha"])
        elif step == "pagerank":
            alpha = settings["pagerank_alpha"]
            centralities["pagerank"] = analytics.pagerank(graph, alpha=alpha, weight="abs")
        elif step == "hits":
            centralities["hubs"], centralities["authorities"] = analytics.hits(graph, weight="abs")
        elif step == "eigenvector":
            centralities["eigenvector"] = analytics.eigenvector_centrality(graph)
        elif step == "directed_laplacian":
            k = min(settings["laplacian_k"], graph.n_nodes - 2)
            if k >= 1:
                eigenvalues = analytics.directed_laplacian_eigenvalues(
                    graph, k=k, alpha=settings["laplacian_alpha"], weight="abs"
                )
        elif step == "paths":
            paths["longest"] = analytics.longest_path(graph)
            paths["longest_networkx"] = analytics.dag_longest_path_networkx(graph)
            paths["strongest"] = analytics.strongest_path(graph)
        elif step == "hops":
            hops = analytics.hop_distances(graph, np.arange(layout.layers[0].size))
    pairs, keep = block_pairs(layout, settings["blocks"])
    blocks = tuple(_block_view(graph, source, target, keep) for source, target in pairs if source != target)
    return GraphSummary(
        layout=layout,
        weight_kind=graph.weight_kind or "none",
        n_edges=graph.n_edges,
        density=analytics.density(graph),
        layer_edge_counts=analytics.layer_edge_counts(graph),
        centralities={name: centralities[name] for name in CENTRALITIES if name in centralities},
        laplacian_eigenvalues=eigenvalues,
        paths=paths,
        hops=hops,
        blocks=blocks,
        settings=dict(settings),
    )


def block_pairs(layout: Layout, blocks: Sequence | None) -> tuple[list[tuple[int, int]], bool]:
    """The (source, target) layer pairs of the blocks to draw, and whether to keep the blocks whole.

    Raises
    ------
    ValueError
        If a block names a layer the layout does not have, or a target before its source.
    """
    if blocks is None:
        pairs = [(parent, index) for index, layer in enumerate(layout.layers) for parent in layer.parents]
        return pairs, False
    pairs = []
    for number, (source, target) in enumerate(blocks):
        try:
            pair = (layout.index(source), layout.index(target))
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"graph_analytics.blocks[{number}] = [{source!r}, {target!r}]: {error.args[0]}"
            ) from None
        if pair[0] >= pair[1]:
            raise ValueError(
                f"graph_analytics.blocks[{number}] = [{source!r}, {target!r}]: edges go from earlier to "
                "later layers; give the source layer first"
            )
        pairs.append(pair)
    return pairs, True


def _block_view(graph: NeuronGraph, source: int, target: int, keep: bool) -> BlockView:
    block = analytics.adjacency_block(graph, source, target)
    heatmap, bins = block_heatmap(block)
    return BlockView(source, target, heatmap, bins, block.tocsr() if keep else None)


def block_heatmap(block: sp.sparray, side: int = HEATMAP_SIDE) -> tuple[np.ndarray, tuple[int, int]]:
    """Mean edge weight per bin of at most ``side × side`` bins (NaN: no edge in the bin).

    Parameters
    ----------
    block : scipy.sparse array
        ``(rows, columns)`` block; its stored entries are the edges.
    side : int
        Most bins per axis.

    Returns
    -------
    heatmap : numpy.ndarray
        ``(ceil(rows / r), ceil(columns / c))`` float64.
    bins : (int, int)
        Neurons per bin ``(r, c)``.
    """
    coo = sp.coo_array(block)
    rows, columns = coo.shape
    bins = (-(-rows // side), -(-columns // side))
    shape = (-(-rows // bins[0]), -(-columns // bins[1]))
    flat = (coo.row // bins[0]) * shape[1] + coo.col // bins[1]
    sums = np.bincount(flat, weights=coo.data.astype(np.float64), minlength=shape[0] * shape[1])
    counts = np.bincount(flat, minlength=shape[0] * shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        heatmap = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return heatmap.reshape(shape), bins
