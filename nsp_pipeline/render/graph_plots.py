"""The PDF of a graph summary: what a user looks at to see the weighted neuron graph.

:func:`plot_graph_summary` draws a :class:`~nsp_pipeline.analysis.graph_summary.GraphSummary`:
the edges between every pair of layers, each centrality per neuron along the node order (log
scale, layers marked), the output layer's centralities by class name, the adjacency blocks as
heatmaps, the paths and hop distances, and the directed Laplacian's lowest eigenvalues.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.colors import LogNorm, TwoSlopeNorm
from matplotlib.figure import Figure

from nsp_pipeline.analysis.graph_summary import BlockView, GraphSummary
from nsp_pipeline.core.layout import Layout
from nsp_pipeline.render.pdf_pages import write_pages

_PAGE = (11.0, 7.0)  # inches, landscape
_MAX_POINTS = 200_000  # points of a centrality scatter (evenly thinned beyond)
_MAX_NAME = 24  # characters of a layer name in tick labels
_MAX_LAYER_TICKS = 40

_WEIGHTS = {
    "structural": "structural weights (the model's parameters)",
    "local": "local weights (partial derivatives at the reference sample)",
    "none": "unweighted (every edge 1)",
}


def plot_graph_summary(
    summary: GraphSummary, path: str | os.PathLike, title: str = "", class_names: Sequence[str] | None = None
) -> None:
    """Draw a graph summary to a PDF.

    Parameters
    ----------
    summary : GraphSummary
        The analytics.
    path : path
        The PDF, written atomically.
    title : str
        Context put before every page title (e.g. the model's name).
    class_names : sequence of str, optional
        Names of the output layer's neurons (default: their indices).
    """
    prefix = f"{title}: " if title else ""
    output = summary.layout.layers[-1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(output.size)]
    if len(names) != output.size:
        raise ValueError(
            f"{len(names)} class names for the {output.size} neurons of the output layer {output.name!r}"
        )
    figures = [_overview_page(summary, prefix)]
    figures += [_centrality_page(summary, name, prefix) for name in summary.centralities]
    if summary.centralities:
        figures.append(_output_page(summary, names, prefix))
    if summary.paths or summary.hops is not None:
        figures.append(_paths_page(summary, prefix))
    if summary.laplacian_eigenvalues is not None:
        figures.append(_eigenvalue_page(summary, prefix))
    figures += [_block_page(summary, view, prefix) for view in summary.blocks]
    write_pages(path, f"{prefix}graph analytics", figures)


def _figure() -> Figure:
    return Figure(figsize=_PAGE)


def _short(name: str) -> str:
    return name if len(name) <= _MAX_NAME else name[: _MAX_NAME - 1] + "…"


def _layer_ticks(ax, layout: Layout, axis: str = "x") -> None:
    """Layer boundaries as lines and layer names at their centres along the node axis."""
    offsets = np.asarray(layout.offsets, dtype=float)
    step = max(1, -(-len(layout) // _MAX_LAYER_TICKS))
    centres = (offsets[:-1] + offsets[1:]) / 2
    labels = [_short(name) for name in layout.names]
    if axis == "x":
        for boundary in offsets[1:-1]:
            ax.axvline(boundary, color="0.85", linewidth=0.5, zorder=0)
        ax.set_xticks(centres[::step], labels[::step], rotation=90, fontsize=6)
        ax.set_xlim(0, offsets[-1])
    else:
        ax.set_yticks(np.arange(len(layout))[::step], labels[::step], fontsize=6)


def _overview_page(summary: GraphSummary, prefix: str) -> Figure:
    fig = _figure()
    layout = summary.layout
    fig.suptitle(
        f"{prefix}neuron graph: {layout.n_nodes:,} neurons, {summary.n_edges:,} edges, "
        f"density {summary.density:.6g}\n{_WEIGHTS.get(summary.weight_kind, summary.weight_kind)}",
        fontsize=11,
    )
    ax = fig.add_axes((0.2, 0.12, 0.55, 0.7))
    counts = summary.layer_edge_counts.astype(float)
    shown = np.where(counts > 0, counts, np.nan)
    norm = LogNorm(vmin=1, vmax=max(2.0, np.nanmax(shown))) if np.isfinite(shown).any() else None
    image = ax.imshow(shown, cmap="viridis", norm=norm, interpolation="nearest", aspect="auto")
    ax.set_title("edges from layer (row) to layer (column)", fontsize=9)
    _layer_ticks(ax, layout, axis="y")
    step = max(1, -(-len(layout) // _MAX_LAYER_TICKS))
    ax.set_xticks(
        np.arange(len(layout))[::step], [_short(n) for n in layout.names][::step], rotation=90, fontsize=6
    )
    fig.colorbar(image, ax=ax, label="edges (log scale)")
    return fig


def _centrality_page(summary: GraphSummary, name: str, prefix: str) -> Figure:
    fig = _figure()
    values = summary.centralities[name]
    nodes = np.arange(len(values))
    if len(values) > _MAX_POINTS:
        nodes = np.linspace(0, len(values) - 1, _MAX_POINTS).astype(np.int64)
    magnitude = np.abs(values[nodes])
    positive = magnitude > 0
    ax = fig.add_axes((0.08, 0.25, 0.86, 0.62))
    colours = np.where(values[nodes] >= 0, "tab:blue", "tab:red")
    ax.scatter(
        nodes[positive], magnitude[positive], s=1.5, c=colours[positive], linewidths=0, rasterized=True
    )
    if positive.any():
        ax.set_yscale("log")
    _layer_ticks(ax, summary.layout)
    ax.set_ylabel(f"|{name}| (log scale; red: negative)")
    zeros = int((~positive).sum())
    thinned = "" if len(nodes) == len(values) else f", {len(nodes):,} of {len(values):,} neurons drawn"
    ax.set_title(f"{prefix}{name} centrality per neuron, in node order ({zeros:,} zeros not drawn{thinned})")
    return fig


def _output_page(summary: GraphSummary, names: list[str], prefix: str) -> Figure:
    fig = _figure()
    output = summary.layout.slice(-1)
    count = len(summary.centralities)
    fig.suptitle(f"{prefix}the output layer {summary.layout.names[-1]!r}: centrality by class", fontsize=11)
    for index, (name, values) in enumerate(summary.centralities.items()):
        ax = fig.add_subplot(1, count, index + 1)
        ax.barh(np.arange(len(names)), values[output], color="tab:blue")
        ax.set_yticks(np.arange(len(names)), names if index == 0 else [""] * len(names), fontsize=7)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=9)
        ax.tick_params(axis="x", labelsize=6)
    return fig


def _paths_page(summary: GraphSummary, prefix: str) -> Figure:
    fig = _figure()
    layout = summary.layout
    fig.suptitle(f"{prefix}paths and hop distances", fontsize=11)
    ax = fig.add_axes((0.08, 0.3, 0.4, 0.55))
    lines = []
    for name, (nodes, value) in summary.paths.items():
        layers = layout.layer_of_node(nodes)
        sizes = np.diff(layout.offsets)[layers]
        where = (nodes - layout.offsets[layers] + 0.5) / sizes  # position within its layer, 0 to 1
        ax.plot(layers, where, marker="o", markersize=3, label=name)
        lines.append(f"{name}: {len(nodes)} neurons, value {value:.6g}")
    ax.set_xlabel("layer index")
    ax.set_ylabel("neuron's position within its layer (0: first, 1: last)")
    ax.set_ylim(0, 1)
    ax.set_title("the neurons each path goes through", fontsize=9)
    if summary.paths:
        ax.legend(fontsize=7)
    fig.text(0.08, 0.08, "\n".join(lines), fontsize=8, family="monospace")
    if summary.hops is not None:
        ax = fig.add_axes((0.56, 0.3, 0.4, 0.55))
        per_layer = layout.split(summary.hops)
        reached = [h[h >= 0] for h in per_layer]
        low = [h.min() if len(h) else np.nan for h in reached]
        high = [h.max() if len(h) else np.nan for h in reached]
        ax.vlines(np.arange(len(layout)), low, high, color="tab:blue", linewidth=3)
        ax.plot(np.arange(len(layout)), low, "v", np.arange(len(layout)), high, "^", color="tab:blue")
        ax.set_xlabel("layer index")
        ax.set_ylabel("fewest edges from an input neuron")
        ax.set_title("hop distance from the input: min to max per layer", fontsize=9)
    return fig


def _eigenvalue_page(summary: GraphSummary, prefix: str) -> Figure:
    fig = _figure()
    ax = fig.add_axes((0.1, 0.15, 0.85, 0.7))
    values = summary.laplacian_eigenvalues
    ax.stem(np.arange(len(values)), values)
    ax.set_xlabel("index")
    ax.set_ylabel("eigenvalue")
    settings = summary.settings
    ax.set_title(
        f"{prefix}lowest eigenvalues of the directed Laplacian (Chung 2005; PageRank walk, "
        f"α = {settings.get('laplacian_alpha')})"
    )
    return fig


def _block_page(summary: GraphSummary, view: BlockView, prefix: str) -> Figure:
    fig = _figure()
    layout = summary.layout
    source, target = layout.layers[view.source], layout.layers[view.target]
    ax = fig.add_axes((0.1, 0.1, 0.7, 0.78))
    finite = view.heatmap[np.isfinite(view.heatmap)]
    limit = float(np.abs(finite).max()) if len(finite) else 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit or -1.0, vmax=limit or 1.0)
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")
    image = ax.imshow(view.heatmap, cmap=cmap, norm=norm, interpolation="nearest", aspect="auto")
    binned = "" if view.bins == (1, 1) else f", mean over bins of {view.bins[0]}×{view.bins[1]} neurons"
    ax.set_title(
        f"{prefix}adjacency block {source.name!r} ({source.size:,}) → {target.name!r} ({target.size:,})"
        f"{binned}; white: no edge",
        fontsize=9,
    )
    ax.set_ylabel(f"source neuron of {_short(source.name)} (bin)")
    ax.set_xlabel(f"target neuron of {_short(target.name)} (bin)")
    fig.colorbar(image, ax=ax, label="weight")
    return fig
