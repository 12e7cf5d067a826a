"""Pictures of the linear regions of a network on a 2-D slice of its input space (torch-free).

A network built from piecewise-linear operations is affine on each cell of a partition of a
2-D slice (SplineCam, Humayun et al., CVPR 2023). :func:`plot_partition` draws such a
partition: the cells coloured by the norm of their slope ``‖A‖`` or by their predicted class,
the argmax decision boundary (and the tie of one chosen pair of classes) over them, the domain's
outline, the anchors (the inputs that span the slice) with their labels and thumbnails, and an
optional zoomed inset. All cells are one :class:`~matplotlib.collections.PolyCollection` and all
boundary segments one :class:`~matplotlib.collections.LineCollection`, so a page of 10⁵ cells
stays vector output that is written in seconds; cell edges thin with the cell count and take
the cells' own colours beyond :data:`EDGE_CELL_LIMIT` cells.

The partition is read through these attributes only (as
:class:`nsp_pipeline.interpret.region_results.RegionPartition` has them): ``vertices``,
``offsets``, ``slope_norm``, ``predicted``, ``boundary_segments``, ``pair``,
``pair_segments``, ``domain``, ``anchors``, ``anchor_labels``, ``layer_names``,
``cells_after_layer`` and the method ``local_complexity(radius)``.

Artists carry a ``gid`` (:data:`CELLS`, :data:`BOUNDARY`, ...) to be found again with
:meth:`~matplotlib.figure.Figure.findobj`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import Colormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from matplotlib.patches import Circle, Patch, Polygon

from nsp_pipeline.core.atomic import atomic_output
from nsp_pipeline.render import canvas
from nsp_pipeline.render.pdf_pages import write_pages

PathLike = str | os.PathLike

#: ``gid`` of the cells' collection (one per axes: the main picture and the inset).
CELLS = "region-cells"
#: ``gid`` of the argmax decision boundary's segments (drawn over a white halo, :data:`HALO`).
BOUNDARY = "region-boundary"
#: ``gid`` of the chosen pair's tie segments.
PAIR = "region-pair"
#: ``gid`` of the white lines under the boundary and tie segments.
HALO = "region-halo"
#: ``gid`` of the anchors' markers.
ANCHORS = "region-anchors"
#: ``gid`` of the anchors' thumbnails.
THUMBNAIL = "region-thumbnail"
#: ``gid`` of the domain's outline.
DOMAIN = "region-domain"
#: ``gid`` of the zoomed inset's axes.
INSET = "region-inset"
#: ``gid`` of the bars of :func:`plot_cells_per_layer`.
LAYER_BARS = "region-layer-bars"

#: Colours of the argmax boundary and of the pair's tie (dashed); both lie on a white halo.
BOUNDARY_COLOUR, PAIR_COLOUR = "#d62728", "black"
#: Colormap of the slope norm; cells with ``‖A‖ = 0`` (constant output) take :data:`ZERO_SLOPE_COLOUR`.
SLOPE_CMAP = "viridis"
ZERO_SLOPE_COLOUR = "0.8"
#: A slope norm range wider than this ratio is coloured on a log scale.
LOG_RANGE = 100.0
#: Above this many cells, edges take the cells' colours (they only close anti-aliasing seams).
EDGE_CELL_LIMIT = 20_000
COLOR_BY = ("slope", "class")

_THUMBNAIL_INCHES = 0.55  # longer side of a thumbnail
_THUMBNAIL_OFFSET = 48.0  # points from the anchor to the thumbnail's centre
_COMPLEXITY_RADIUS = 0.05  # default radius of the local complexity, in domain bounding-box diagonals


def plot_partition(
    partition,
    *,
    color_by: str = "slope",
    ax: Axes | None = None,
    boundary: bool = True,
    pair: bool = True,
    anchors: bool = True,
    thumbnails: Sequence[np.ndarray] | None = None,
    class_names: Sequence[str] | None = None,
    inset: tuple[float, float, float, float] | None = None,
    edge_width: float | None = None,
    complexity_radius: float | None = None,
    title: str = "",
) -> Figure:
    """Draw the cells of a partition of a 2-D slice, its decision boundary and its anchors.

    Parameters
    ----------
    partition : RegionPartition
        The partition (see the module's docstring for the attributes read).
    color_by : {"slope", "class"}
        Colour cells by ``‖A‖`` (log scale when its range exceeds :data:`LOG_RANGE`, with a
        colour bar) or by predicted class (with a legend of ``class_names``).
    ax : matplotlib.axes.Axes, optional
        Where to draw; by default a new figure. The colour bar, inset and legend are placed
        outside its right and lower edges.
    boundary, pair, anchors : bool
        Draw the argmax boundary, the chosen pair's tie (if the partition has one), the anchors.
    thumbnails : sequence of numpy.ndarray, optional
        One image per anchor, ``(H, W)`` or ``(1|3, H, W)``, drawn framed beside it with an arrow.
    class_names : sequence of str, optional
        Names of the classes ``0 .. n−1`` (default their numbers).
    inset : tuple of float, optional
        ``(x0, x1, y0, y1)`` in slice coordinates: a zoomed copy of that window.
    edge_width : float, optional
        Cell edge width in points (0: none); by default thinner with more cells.
    complexity_radius : float, optional
        Radius of the local complexity (cells per unit area) given near each anchor in the
        title; default 5 % of the domain's bounding-box diagonal.
    title : str
        Put before the facts in the title.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If ``color_by``, ``class_names``, ``thumbnails`` or ``inset`` do not fit the partition.
    """
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by={color_by!r}: expected one of {COLOR_BY}")
    polygons = _cell_polygons(partition)
    n_anchors = len(partition.anchors)
    anchors = anchors and n_anchors > 0
    if thumbnails is not None and len(thumbnails) != n_anchors:
        raise ValueError(
            f"{len(thumbnails)} thumbnails given for {n_anchors} anchors: expected one per anchor"
        )
    names = _class_names(partition, class_names)
    if inset is not None and not (len(inset) == 4 and inset[0] < inset[1] and inset[2] < inset[3]):
        raise ValueError(f"inset {inset}: expected (x0, x1, y0, y1) with x0 < x1 and y0 < y1")
    if ax is None:
        fig = Figure(figsize=(10.0, 7.0))
        ax = fig.add_axes((0.07, 0.2, 0.56, 0.68))
    fig = ax.figure
    cells = _draw_cells(ax, polygons, partition, color_by, names, edge_width)
    _draw_lines(ax, partition, boundary, pair)
    domain = np.asarray(partition.domain, dtype=np.float64)
    ax.add_patch(Polygon(domain, closed=True, fill=False, edgecolor="black", linewidth=0.8, gid=DOMAIN))
    low, high = domain.min(axis=0), domain.max(axis=0)
    margin = 0.02 * (high - low).max()
    ax.set_xlim(low[0] - margin, high[0] + margin)
    ax.set_ylim(low[1] - margin, high[1] + margin)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=7)
    ax.set_xlabel("slice coordinate 1", fontsize=8)
    ax.set_ylabel("slice coordinate 2", fontsize=8)
    if complexity_radius is None:
        complexity_radius = _COMPLEXITY_RADIUS * float(np.hypot(*(high - low)))
    if anchors:
        _draw_anchors(ax, partition, thumbnails, complexity_radius)
    if color_by == "slope":
        colour_bar = fig.colorbar(cells, cax=ax.inset_axes((0.0, -0.15, 1.0, 0.03)), orientation="horizontal")
        scale = " (log scale)" if isinstance(cells.norm, LogNorm) else ""
        zeros = int(np.sum(np.asarray(partition.slope_norm) == 0))
        zero = f"; grey: ‖A‖ = 0 in {zeros} cell(s)" if scale and zeros else ""
        colour_bar.set_label(f"slope norm ‖A‖ of the cell's affine map{scale}{zero}", fontsize=8)
        colour_bar.ax.tick_params(labelsize=7)
    if inset is not None:
        _draw_inset(ax, partition, polygons, inset, color_by, names, cells, boundary, pair, anchors)
    _legend(ax, partition, color_by, names, boundary, pair)
    ax.set_title(_facts(partition, complexity_radius if anchors else None, title), fontsize=8, loc="left")
    return fig


def plot_cells_per_layer(partition, *, ax: Axes | None = None, title: str = "") -> Figure:
    """Bars of how many cells each layer's kinks created (the domain is one cell before the first).

    ``cells_after_layer[i]`` is read as the number of cells once the kinks of layers ``0 .. i``
    are resolved, so layer ``i`` created ``cells_after_layer[i] − cells_after_layer[i−1]``.

    Raises
    ------
    ValueError
        If ``layer_names`` and ``cells_after_layer`` differ in length, or the counts decrease.
    """
    names = list(partition.layer_names)
    after = np.asarray(partition.cells_after_layer, dtype=np.int64)
    if len(names) != len(after):
        raise ValueError(
            f"{len(names)} layer_names but {len(after)} cells_after_layer: expected one count per layer"
        )
    created = np.diff(after, prepend=1)
    if np.any(created < 0):
        layer = names[int(np.argmax(created < 0))]
        raise ValueError(
            f"cells_after_layer {after.tolist()} decreases (at layer {layer!r}): "
            "expected non-decreasing cell counts from 1"
        )
    if ax is None:
        fig = Figure(figsize=(max(5.0, 0.5 * len(names) + 2.0), 4.5))
        ax = fig.add_axes((0.12, 0.25, 0.83, 0.62))
    bars = ax.bar(np.arange(len(names)), created, color="C0", gid=LAYER_BARS)
    ax.bar_label(bars, labels=[f"+{c}\n({a})" for c, a in zip(created, after, strict=True)], fontsize=6)
    ax.set_xticks(np.arange(len(names)), names, rotation=45 if len(names) > 4 else 0, ha="right", fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_ylabel("cells created by the layer's kinks", fontsize=8)
    ax.margins(y=0.15)
    prefix = f"{title}: " if title else ""
    total = int(after[-1]) if len(after) else 1
    ax.set_title(f"{prefix}cells per layer (+created, (total after)); {total} cells in all", fontsize=9)
    return ax.figure


def region_pages(partition, *, title: str = "", **options) -> list[Figure]:
    """The pages of a slice: cells by slope norm, cells by predicted class, cells per layer.

    ``options`` go to :func:`plot_partition` (``thumbnails``, ``class_names``, ``inset``, ...).
    """
    return [
        plot_partition(partition, color_by="slope", title=title, **options),
        plot_partition(partition, color_by="class", title=title, **options),
        plot_cells_per_layer(partition, title=title),
    ]


def write_region_pdf(path: PathLike, partition, *, title: str = "", **options) -> Path:
    """Write :func:`region_pages` to the PDF ``path`` (atomically, the same bytes for the same input)."""
    return write_pages(path, title, region_pages(partition, title=title, **options))


def save_figure(fig: Figure, path: PathLike) -> Path:
    """Save ``fig`` as PDF, SVG or PNG (by the suffix of ``path``), atomically and without timestamps.

    SVG element ids are salted with a fixed string, so the same figure gives the same bytes.
    """
    path = Path(path)
    metadata = {".pdf": {"CreationDate": None}, ".svg": {"Date": None}, ".png": {}}
    if path.suffix.lower() not in metadata:
        raise ValueError(f"cannot save a figure as {path.name!r}: expected a .pdf, .svg or .png file")
    suffix = path.suffix.lower()
    with matplotlib.rc_context({"svg.hashsalt": "nsp-pipeline"}), atomic_output(path) as temporary:
        fig.savefig(temporary, format=suffix[1:], metadata=metadata[suffix])
    return path


def _cell_polygons(partition) -> list[np.ndarray]:
    """The cells' vertex arrays, checked against ``offsets``."""
    vertices = np.asarray(partition.vertices, dtype=np.float64)
    offsets = np.asarray(partition.offsets, dtype=np.int64)
    if offsets.ndim != 1 or len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != len(vertices):
        raise ValueError(
            f"offsets {offsets[:3].tolist()}…{offsets[-2:].tolist()} do not split {len(vertices)} vertices: "
            "expected 0, increasing, ending at the number of vertices"
        )
    if np.any(np.diff(offsets) < 3):
        raise ValueError(f"cell {int(np.argmax(np.diff(offsets) < 3))} has fewer than 3 vertices")
    for name in ("slope_norm", "predicted"):
        if len(getattr(partition, name)) != len(offsets) - 1:
            raise ValueError(
                f"{name} has {len(getattr(partition, name))} values for {len(offsets) - 1} cells: "
                "expected one per cell"
            )
    return np.split(vertices, offsets[1:-1])


def _class_names(partition, class_names) -> list[str]:
    """``class_names`` checked to name every class the partition mentions (default the numbers)."""
    classes = [np.asarray(partition.predicted).ravel(), np.asarray(partition.boundary_classes).ravel()]
    if getattr(partition, "pair", None) is not None:
        classes.append(np.asarray(partition.pair).ravel())
    count = int(max((c.max() for c in classes if c.size), default=0)) + 1
    if class_names is None:
        return [str(k) for k in range(count)]
    if len(class_names) < count:
        raise ValueError(
            f"{len(class_names)} class names given but the partition has classes 0..{count - 1}: "
            f"expected at least {count}"
        )
    return [str(name) for name in class_names]


def class_colours(count: int) -> np.ndarray:
    """``(count, 4)`` RGBA colours of classes ``0 .. count−1``: tab10, tab20, else evenly on turbo."""
    if count <= 10:
        return matplotlib.colormaps["tab10"](np.arange(count))
    if count <= 20:
        return matplotlib.colormaps["tab20"](np.arange(count))
    return matplotlib.colormaps["turbo"](np.linspace(0.05, 0.95, count))


def slope_norm(values: np.ndarray) -> Normalize:
    """Linear, or log over the positive values when their range exceeds :data:`LOG_RANGE`."""
    positive = values[values > 0]
    if positive.size and positive.max() > LOG_RANGE * positive.min():
        return LogNorm(float(positive.min()), float(positive.max()))
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    return Normalize(low, high if high > low else low + 1.0)


def _edges(n_cells: int, edge_width: float | None) -> dict:
    """Edge width and colour of ``n_cells`` cells (see :data:`EDGE_CELL_LIMIT`)."""
    if edge_width is not None:
        return {"linewidths": edge_width, "edgecolors": (0, 0, 0, 0.5) if edge_width > 0 else "none"}
    if n_cells > EDGE_CELL_LIMIT:
        return {"linewidths": 0.1, "edgecolors": "face"}
    return {"linewidths": 0.5 * min(1.0, np.sqrt(1000 / max(n_cells, 1))), "edgecolors": (0, 0, 0, 0.5)}


def _draw_cells(
    ax: Axes,
    polygons: list[np.ndarray],
    partition,
    color_by: str,
    names: list[str],
    edge_width: float | None,
    chosen: np.ndarray | None = None,
    norm: Normalize | None = None,
) -> PolyCollection:
    """One collection of the cells (``chosen`` of them; all by default), coloured as asked."""
    chosen = np.arange(len(polygons)) if chosen is None else chosen
    cells = PolyCollection(
        [polygons[i] for i in chosen], closed=True, gid=CELLS, **_edges(len(chosen), edge_width)
    )
    if color_by == "slope":
        values = np.asarray(partition.slope_norm, dtype=np.float64)
        cmap: Colormap = matplotlib.colormaps[SLOPE_CMAP].with_extremes(bad=ZERO_SLOPE_COLOUR)
        cells.set_cmap(cmap)
        cells.set_norm(norm or slope_norm(values))
        cells.set_array(values[chosen])
    else:
        predicted = np.asarray(partition.predicted, dtype=np.int64)
        cells.set_facecolor(class_colours(len(names))[predicted[chosen]])
    ax.add_collection(cells, autolim=False)
    return cells


def _segments_in(segments: np.ndarray, window: tuple[float, float, float, float] | None) -> np.ndarray:
    """The segments whose bounding boxes meet ``window`` (all if None)."""
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2, 2)
    if window is None:
        return segments
    x0, x1, y0, y1 = window
    low, high = segments.min(axis=1), segments.max(axis=1)
    return segments[(high[:, 0] >= x0) & (low[:, 0] <= x1) & (high[:, 1] >= y0) & (low[:, 1] <= y1)]


def _draw_lines(ax: Axes, partition, boundary: bool, pair: bool, window=None) -> None:
    """The argmax boundary (solid) and the pair's tie (dashed), each over a white halo."""
    width = 1.2
    layers = []
    if boundary:
        layers.append((_segments_in(partition.boundary_segments, window), BOUNDARY_COLOUR, "solid", BOUNDARY))
    pair_segments = getattr(partition, "pair_segments", None)
    if pair and getattr(partition, "pair", None) is not None and pair_segments is not None:
        layers.append((_segments_in(pair_segments, window), PAIR_COLOUR, (0, (3, 2)), PAIR))
    for segments, colour, style, gid in layers:
        halo = LineCollection(segments, colors="white", linewidths=width + 1.2, gid=HALO, zorder=2.9)
        ax.add_collection(halo, autolim=False)
        lines = LineCollection(
            segments, colors=colour, linewidths=width, linestyles=style, gid=gid, zorder=3, capstyle="round"
        )
        ax.add_collection(lines, autolim=False)


def _image_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(1|3, H, W)`` as ``(H, W, 3)`` on its own range, enlarged to whole-pixel blocks."""
    image = np.asarray(image, dtype=np.float64)
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[0] in (1, 3))):
        raise ValueError(f"a thumbnail of shape {image.shape}: expected (H, W), (1, H, W) or (3, H, W)")
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    scaled = scaled[None] if scaled.ndim == 2 else scaled
    rgb = np.moveaxis(np.repeat(scaled, 3 // len(scaled), axis=0), 0, -1)
    block = canvas.block_size(rgb.shape)
    return np.repeat(np.repeat(rgb, block, axis=0), block, axis=1)


def _draw_anchors(ax: Axes, partition, thumbnails, radius: float) -> None:
    """Markers, labels, local-complexity circles and thumbnails of the anchors."""
    points = np.asarray(partition.anchors, dtype=np.float64).reshape(-1, 2)
    ax.scatter(*points.T, s=28, c="white", edgecolors="black", linewidths=0.8, zorder=4, gid=ANCHORS)
    outward = points - points.mean(axis=0)
    lengths = np.hypot(*outward.T)
    outward = np.where(lengths[:, None] > 0, outward / np.maximum(lengths, 1e-300)[:, None], np.sqrt(0.5))
    for k, (point, direction) in enumerate(zip(points, outward, strict=True)):
        ax.add_patch(Circle(point, radius, fill=False, linestyle=":", linewidth=0.7, edgecolor="black"))
        ax.annotate(
            partition.anchor_labels[k],
            point,
            xytext=-10 * direction,
            textcoords="offset points",
            ha="center",
            va="center",
            fontsize=7,
            zorder=5,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.8, "linewidth": 0},
        )
        if thumbnails is not None:
            rgb = _image_rgb(thumbnails[k])
            zoom = _THUMBNAIL_INCHES * 72 / max(rgb.shape[:2])
            box = AnnotationBbox(
                OffsetImage(rgb, zoom=zoom, interpolation="none"),
                point,
                xybox=tuple(_THUMBNAIL_OFFSET * direction),
                boxcoords="offset points",
                pad=0.1,
                arrowprops={"arrowstyle": "->", "linewidth": 0.7},
                annotation_clip=False,
                zorder=5,
            )
            box.set_gid(THUMBNAIL)
            ax.add_artist(box)


def _draw_inset(
    ax: Axes, partition, polygons, window, color_by, names, cells, boundary, pair, anchors
) -> None:
    """The cells, lines and anchors inside ``window``, zoomed, to the right of ``ax``."""
    x0, x1, y0, y1 = window
    offsets = np.asarray(partition.offsets, dtype=np.int64)
    vertices = np.asarray(partition.vertices, dtype=np.float64)
    low = np.minimum.reduceat(vertices, offsets[:-1], axis=0)
    high = np.maximum.reduceat(vertices, offsets[:-1], axis=0)
    chosen = np.flatnonzero((high[:, 0] >= x0) & (low[:, 0] <= x1) & (high[:, 1] >= y0) & (low[:, 1] <= y1))
    zoomed = ax.inset_axes((1.08, 0.42, 0.5, 0.5), xlim=(x0, x1), ylim=(y0, y1))
    zoomed.set_gid(INSET)
    _draw_cells(zoomed, polygons, partition, color_by, names, None, chosen, cells.norm)
    _draw_lines(zoomed, partition, boundary, pair, window)
    if anchors:
        points = np.asarray(partition.anchors, dtype=np.float64).reshape(-1, 2)
        zoomed.scatter(*points.T, s=28, c="white", edgecolors="black", linewidths=0.8, zorder=4)
    zoomed.set_aspect("equal")
    zoomed.tick_params(labelsize=6)
    zoomed.locator_params(nbins=4)
    zoomed.set_title(f"zoom: {len(chosen)} cells", fontsize=7)
    ax.indicate_inset_zoom(zoomed, edgecolor="black")


def _legend(ax: Axes, partition, color_by, names, boundary, pair) -> None:
    """Classes (when cells are coloured by class) and the lines drawn, right of ``ax``, below an inset."""
    handles = []
    if color_by == "class":
        present = np.unique(np.asarray(partition.predicted, dtype=np.int64))
        colours = class_colours(len(names))
        handles += [Patch(facecolor=colours[k], label=f"predicted {names[k]}") for k in present]
    if boundary:
        handles.append(Line2D([], [], color=BOUNDARY_COLOUR, label="decision boundary"))
    chosen = getattr(partition, "pair", None)
    if pair and chosen is not None and getattr(partition, "pair_segments", None) is not None:
        a, b = (names[int(k)] for k in chosen)
        handles.append(Line2D([], [], color=PAIR_COLOUR, linestyle=(0, (3, 2)), label=f"tie {a} = {b}"))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.04, 0.36), fontsize=7, frameon=False)


def _facts(partition, radius: float | None, title: str) -> str:
    """Title lines: cells, domain area, cells per unit area within ``radius`` of each anchor."""
    n_cells = len(partition.offsets) - 1
    x, y = np.asarray(partition.domain, dtype=np.float64).T
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    lines = [f"{title}: " if title else ""]
    lines[0] += (
        f"{n_cells:,} linear regions; domain area {area:.4g}; {n_cells / area:.4g} cells per unit area"
    )
    if radius is not None:
        density = np.atleast_1d(np.asarray(partition.local_complexity(radius), dtype=np.float64))
        labels = partition.anchor_labels if len(density) == len(partition.anchors) else range(len(density))
        near = ", ".join(f"{label}: {value:.4g}" for label, value in zip(labels, density, strict=True))
        lines.append(f"cells per unit area within {radius:.3g} of the anchors (dotted circles): {near}")
    return "\n".join(lines)
