"""Pictures of what drives a neuron: maps over the input image, the receptive field outlined.

:func:`plot_attributions` draws one PDF page per sample and target: the input image, then each
method's map drawn over the image in gray, side by side, each with its colour scale, the
target's theoretical receptive field outlined on every panel, and the numbers in the titles
(target value, receptive-field box, each method's parameters). :func:`plot_top_images` is the
data-set view: per target one page with the ``k`` samples of highest target value, each with
its maps.

Colours: signed maps (saliency, guided backpropagation, SmoothGrad, occlusion) use a diverging
colour map centred at 0 (blue negative, red positive) scaled to the panel's largest magnitude;
magnitudes (saliency with ``abs``) and activation maps a sequential one from the panel's
minimum to its maximum. A colour covers the gray image in proportion to its strength, so
where a map is 0 (or at its minimum) the image shows through. Maps with a channel axis are
summed over the channels; an occlusion grid is drawn nearest-neighbour, each cell centred on
its window's centre and one stride wide (pixels no cell covers show the image only); maps
with respect to a layer other than the input are drawn alone. Everything is computed from the
numpy arrays of an :class:`~nsp_pipeline.interpret.results.AttributionMaps` (no torch), drawn
with :mod:`nsp_pipeline.render.canvas` (text as vector text, images as embedded pixel
blocks), and written atomically without timestamps, so the same maps give the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import patheffects
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from nsp_pipeline.interpret.results import AttributionMaps, check_class_names
from nsp_pipeline.render import canvas
from nsp_pipeline.render.pdf_pages import checked_indices, write_pages
from nsp_pipeline.render.text import number_text, wrapped

PathLike = str | os.PathLike

#: Colour map of signed maps (centred at 0) and of magnitudes and activations.
DIVERGING, SEQUENTIAL = "RdBu_r", "inferno"
#: Colour of the receptive-field outline.
FIELD_COLOUR = "#00d000"
#: Largest share of a pixel a map's colour covers (at full strength).
OPACITY = 0.9
#: ``gid`` of the receptive-field outlines and of the map images.
FIELD_BOX, MAP_IMAGE = "receptive-field-box", "attribution-map"

_PANEL, _GAP, _MARGIN = 1.9, 0.5, 0.45  # inches: panel side, gap between panels, page side margins
_TOP, _BOTTOM = 1.25, 1.0  # inches above the panels (page title, panel titles) and below (colourbars, note)
_ROW_TOP = 0.55  # inches above each row of the top-k pages
_HIDDEN = ("batch_size",)
_GRAY_LOW, _GRAY_SPAN = (
    0.2,
    0.6,
)  # the image under a map, in gray from 0.2 (black) to 0.8 (white)  # parameters that do not change a map


def plot_attributions(
    maps: AttributionMaps,
    path: PathLike,
    title: str = "",
    samples: Sequence[int] | None = None,
    targets: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Draw every (sample, target) as a PDF page: the image and each method's map over it.

    Parameters
    ----------
    maps : AttributionMaps
        What :func:`nsp_pipeline.interpret.maps.interpret` returns (images ``(C, H, W)`` with
        1 or 3 channels, or ``(H, W)``).
    path : path
        The PDF, written atomically: ``len(samples) · len(targets)`` pages, sample by sample.
    title : str
        Context put before every page title.
    samples, targets : sequence of int, optional
        Rows of ``maps`` (0-based positions, not ``sample_ids``) and target indices; all by default.
    class_names : sequence of str, optional
        Names of the labels and predictions (``maps.class_names`` by default).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        For a sample or target out of range, too few class names, or inputs that are not
        images; nothing is written.
    """
    samples = checked_indices("sample", samples, maps.n_samples, "rows of the maps")
    targets = checked_indices("target", targets, len(maps.targets), "targets")
    names = _class_names(maps, class_names)
    _image_shape(maps)
    return write_pages(
        path, title, (_attribution_page(maps, s, k, title, names) for s in samples for k in targets)
    )


def plot_top_images(
    maps: AttributionMaps,
    path: PathLike,
    k: int = 8,
    title: str = "",
    targets: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Draw per target the ``k`` samples of highest target value, each with its maps (one page each).

    Parameters
    ----------
    maps : AttributionMaps
        As in :func:`plot_attributions`.
    path : path
        The PDF, written atomically: one page per target.
    k : int
        Samples per page (all if fewer); ties keep the samples' order.
    title : str
        Context put before every page title.
    targets : sequence of int, optional
        Target indices; all by default.
    methods : sequence of str, optional
        Methods drawn, in order; all by default.
    class_names : sequence of str, optional
        As in :func:`plot_attributions`.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        For ``k < 1``, an unknown method or target, too few class names, or inputs that are not
        images; nothing is written.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1 (samples per page), got {k!r}")
    targets = checked_indices("target", targets, len(maps.targets), "targets")
    methods = maps.methods if methods is None else tuple(methods)
    unknown = [m for m in methods if m not in maps.maps]
    if unknown:
        raise ValueError(f"methods {unknown} are not in the maps; expected some of {list(maps.methods)}")
    names = _class_names(maps, class_names)
    _image_shape(maps)
    return write_pages(path, title, (_top_page(maps, t, k, methods, title, names) for t in targets))


def _class_names(maps: AttributionMaps, class_names) -> tuple[str, ...] | None:
    if class_names is None:
        return maps.class_names
    names = tuple(str(name) for name in class_names)
    check_class_names(names, maps.labels, maps.predictions)
    return names


def _image_shape(maps: AttributionMaps) -> tuple[int, int]:
    """Rows and columns of the input images (``ValueError`` unless ``(1|3, H, W)`` or ``(H, W)``)."""
    shape = maps.inputs.shape[1:]
    if len(shape) == 2 or (len(shape) == 3 and shape[0] in (1, 3)):
        return shape[-2], shape[-1]
    raise ValueError(
        f"inputs of per-sample shape {shape} are not images: expected (1, H, W), (3, H, W) or (H, W)"
    )


# --------------------------------------------------------------------------- panels


def _image(maps: AttributionMaps, sample: int) -> tuple[np.ndarray, np.ndarray]:
    """The input as drawn (RGB or gray, scaled to 0..1) and its gray version (channel mean)."""
    image = np.asarray(maps.inputs[sample], dtype=np.float64)
    image = image[None] if image.ndim == 2 else image
    low, high = np.nanmin(image), np.nanmax(image)
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    gray = scaled.mean(axis=0)
    shown = np.moveaxis(scaled, 0, -1) if len(scaled) == 3 else np.repeat(gray[..., None], 3, axis=-1)
    return shown, gray


def _plane(
    maps: AttributionMaps, method: str, values: np.ndarray, size: tuple[int, int]
) -> np.ndarray | None:
    """A map as ``size`` values over the image (NaN where nothing is drawn); None if it is not over it."""
    parameters = maps.parameters[method]
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 3:
        values = values.sum(axis=0)
    if values.ndim != 2 or parameters.get("wrt", "input") != "input":
        return None
    if values.shape == size:
        return values
    if method == "occlusion" and parameters.get("output") == "grid":
        window, stride = (_pair(parameters[key]) for key in ("window", "stride"))
        cells = []
        for axis in (0, 1):
            first = (window[axis] - 1) / 2 - stride[axis] / 2  # cell g: its window's centre ± stride / 2
            cells.append(np.floor((np.arange(size[axis]) - first) / stride[axis]).astype(np.int64))
        rows, columns = np.meshgrid(*cells, indexing="ij")
        inside = (rows >= 0) & (rows < values.shape[0]) & (columns >= 0) & (columns < values.shape[1])
        plane = np.full(size, np.nan)
        plane[inside] = values[rows[inside], columns[inside]]
        return plane
    rows = (np.arange(size[0]) + 0.5) * values.shape[0] / size[0]  # nearest over the whole image
    columns = (np.arange(size[1]) + 0.5) * values.shape[1] / size[1]
    return values[np.ix_(rows.astype(np.int64), columns.astype(np.int64))]


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if np.ndim(value) == 0 else tuple(int(v) for v in value[-2:])


def _colours(
    maps: AttributionMaps, method: str, values: np.ndarray
) -> tuple[Normalize, Colormap, np.ndarray]:
    """Norm, colour map and strength (0..1, 0 where NaN) of a panel's values."""
    finite = values[np.isfinite(values)]
    if maps.is_signed(method):
        top = float(np.max(np.abs(finite))) if finite.size else 0.0
        top = top if top > 0 else 1.0
        norm, strength = Normalize(-top, top), np.abs(values) / top
        cmap = matplotlib.colormaps[DIVERGING]
    else:
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        high = high if high > low else low + 1.0
        norm, strength = Normalize(low, high), (values - low) / (high - low)
        cmap = matplotlib.colormaps[SEQUENTIAL]
    return norm, cmap, np.nan_to_num(np.clip(strength, 0.0, 1.0))


def _blend(
    gray: np.ndarray | None, values: np.ndarray, norm: Normalize, cmap: Colormap, strength
) -> np.ndarray:
    """RGB of ``values``' colours laid over ``gray`` with opacity ``OPACITY · strength``."""
    colours = cmap(norm(np.nan_to_num(values)))[..., :3]
    if gray is None:
        return np.where(np.isfinite(values)[..., None], colours, 1.0)
    alpha = (OPACITY * strength)[..., None]
    return (1 - alpha) * (_GRAY_LOW + _GRAY_SPAN * gray[..., None]) + alpha * colours


def _field_box(fig: Figure, rect, maps: AttributionMaps, target: int, size: tuple[int, int]) -> None:
    """Outline target ``target``'s receptive-field box on an image panel filling ``rect``."""
    if maps.rf_boxes is None:
        return
    (_, _), (r0, r1), (c0, c1) = maps.rf_boxes[target]
    if r1 <= r0 or c1 <= c0:
        return
    left, bottom, width, height = rect
    box = Rectangle(
        (left + width * c0 / size[1], bottom + height * (1 - r1 / size[0])),
        width * (c1 - c0) / size[1],
        height * (r1 - r0) / size[0],
        fill=False,
        edgecolor=FIELD_COLOUR,
        linewidth=1.2,
        linestyle="--",
        transform=fig.transFigure,
        gid=FIELD_BOX,
        path_effects=[patheffects.withStroke(linewidth=2.6, foreground="black")],  # seen on any colour
    )
    fig.add_artist(box)


def _map_panel(fig, rect, maps, method, sample, target, gray, size, colourbar: bool) -> str:
    """Draw one method's map of (sample, target) in ``rect``; return its range as text."""
    plane = _plane(maps, method, maps.maps[method][sample, target], size)
    if (
        plane is not None
        and not np.isfinite(plane).any()
        and np.isnan(maps.maps[method][sample, target]).all()
    ):
        left, bottom, width, height = rect
        canvas.draw_frame(fig, rect, color="0.7")
        fig.text(left + width / 2, bottom + height / 2, "no map\nfor this target", ha="center", va="center",
                 fontsize=8, color="0.4")  # fmt: skip
        return "n/a"
    over = plane is not None
    if not over:
        plane = np.asarray(maps.maps[method][sample, target], dtype=np.float64)
        plane = plane.sum(axis=0) if plane.ndim == 3 else plane.reshape(1, -1) if plane.ndim < 2 else plane
    norm, cmap, strength = _colours(maps, method, plane)
    canvas.draw_image(
        fig, rect, _blend(gray if over else None, plane, norm, cmap, strength), None, None, MAP_IMAGE
    )
    canvas.draw_frame(fig, rect, linewidth=0.5)
    if over:
        _field_box(fig, rect, maps, target, size)
    if colourbar:
        left, bottom, width, _ = rect
        inch = 1 / fig.get_figheight()
        canvas.draw_colourbar(fig, (left, bottom - 0.22 * inch, width, 0.1 * inch), norm, cmap, fontsize=7)
    finite = plane[np.isfinite(plane)]
    return f"{number_text(finite.min())} … {number_text(finite.max())}" if finite.size else "n/a"


def _parameters(maps: AttributionMaps, method: str) -> str:
    """A method's parameters that change its map, as ``name=value`` text."""
    shown = []
    for name, value in maps.parameters[method].items():
        if name in _HIDDEN or value is None or (name == "wrt" and value == "input"):
            continue
        value = "×".join(str(v) for v in value) if isinstance(value, list) else value
        shown.append(f"{name}={value}")
    return ", ".join(shown)


def _sample_text(maps: AttributionMaps, sample: int, names) -> str:
    parts = [f"sample {maps.sample_ids[sample]}"]
    for what, classes in (("label", maps.labels), ("prediction", maps.predictions)):
        if classes is not None:
            index = int(classes[sample])
            parts.append(f"{what} {names[index] if names else index}")
    return ", ".join(parts)


def _field_text(maps: AttributionMaps, target: int) -> str:
    if maps.rf_boxes is None:
        return f"receptive field unknown ({maps.receptive_field_error})"
    (_, _), (r0, r1), (c0, c1) = maps.rf_boxes[target]
    if r1 <= r0 or c1 <= c0:
        return "empty receptive field"
    rows, columns = maps.inputs.shape[-2:]
    count = int(maps.rf_masks[target].sum()) if maps.rf_masks is not None else None
    neurons = f", {count} of {maps.rf_masks[target].size} input neurons" if count is not None else ""
    return (
        f"receptive field {r1 - r0}×{c1 - c0} of {rows}×{columns} (rows {r0}–{r1 - 1}, "
        f"columns {c0}–{c1 - 1}{neurons})"
    )


_NOTE = (
    "Signed maps: blue < 0 < red, scaled to the panel's largest |value|; magnitudes and activations: "
    "dark → bright from the panel's minimum to maximum. Colour covers the gray image in proportion to "
    "its strength. Gradient maps are summed over the input channels; an occlusion grid cell is drawn "
    "at its window's centre, one stride wide. Dashed green on black: the bounding box of the target's "
    "theoretical receptive field."
)


def _attribution_page(maps: AttributionMaps, sample: int, target: int, title: str, names) -> Figure:
    size = _image_shape(maps)
    methods = maps.methods
    panel_h = _PANEL * min(size[0] / size[1], 2.0)
    width = 2 * _MARGIN + (1 + len(methods)) * _PANEL + len(methods) * _GAP
    height = _TOP + panel_h + _BOTTOM
    fig = Figure(figsize=(width, height))
    prefix = f"{title}: " if title else ""
    value = number_text(float(maps.values[sample, target]))
    fig.text(
        0.5,
        1 - 0.15 / height,
        f"{prefix}{_sample_text(maps, sample, names)} — target {maps.target_label(target)} = {value}\n"
        f"{_field_text(maps, target)}",
        ha="center",
        va="top",
        fontsize=11,
        parse_math=False,
    )
    shown, gray = _image(maps, sample)
    for column, method in enumerate(("input", *methods)):
        left = (_MARGIN + column * (_PANEL + _GAP)) / width
        rect = (left, _BOTTOM / height, _PANEL / width, panel_h / height)
        if method == "input":
            canvas.draw_image(fig, rect, shown, None, None, canvas.LAYER_IMAGE)
            canvas.draw_frame(fig, rect, linewidth=0.5)
            _field_box(fig, rect, maps, target, size)
            heading = f"input {size[0]}×{size[1]}"
        else:
            span = _map_panel(fig, rect, maps, method, sample, target, gray, size, colourbar=True)
            heading = wrapped(
                ", ".join(filter(None, [method.replace("_", " "), _parameters(maps, method)])), 30
            )
            heading += f"\nrange {span}"
        canvas.draw_title(fig, rect, heading, fontsize=8)
    fig.text(0.5, 0.08 / height, _wrap_note(_NOTE, width), ha="center", va="bottom", fontsize=7, color="0.3",
             parse_math=False)  # fmt: skip
    return fig


def _wrap_note(text: str, width: float) -> str:
    """``text`` in lines that fit ``width`` inches at 7 points (about 16 characters per inch)."""
    return wrapped(text, max(40, int(width * 16)), " ")


def _top_page(maps: AttributionMaps, target: int, k: int, methods, title: str, names) -> Figure:
    size = _image_shape(maps)
    values = maps.values[:, target]
    order = [int(i) for i in np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable")[:k]]
    panel = _PANEL * 0.75
    panel_h = panel * min(size[0] / size[1], 2.0)
    width = 2 * _MARGIN + (1 + len(methods)) * panel + len(methods) * _GAP
    row_h = _ROW_TOP + panel_h
    height = 0.9 + 0.15 * len(methods) + len(order) * row_h + 0.6
    fig = Figure(figsize=(width, height))
    prefix = f"{title}: " if title else ""
    methods_text = "\n".join(
        f"{m.replace('_', ' ')}: {_parameters(maps, m) or 'no parameters'}" for m in methods
    )
    top = 0.9 + 0.15 * len(methods)  # inches: three title lines and one per method
    fig.text(
        0.5,
        1 - 0.15 / height,
        f"{prefix}target {maps.target_label(target)}: the {len(order)} of {maps.n_samples} samples with the "
        f"highest value\n{_field_text(maps, target)}\n{methods_text}",
        ha="center",
        va="top",
        fontsize=8,
        parse_math=False,
    )
    for row, sample in enumerate(order):
        bottom = (height - top - (row + 1) * row_h) / height
        shown, gray = _image(maps, sample)
        for column, method in enumerate(("input", *methods)):
            rect = ((_MARGIN + column * (panel + _GAP)) / width, bottom, panel / width, panel_h / height)
            if method == "input":
                canvas.draw_image(fig, rect, shown, None, None, canvas.LAYER_IMAGE)
                canvas.draw_frame(fig, rect, linewidth=0.5)
                _field_box(fig, rect, maps, target, size)
                value = number_text(float(values[sample]))
                heading = f"#{row + 1}: {_sample_text(maps, sample, names)}\nvalue {value}"
            else:
                span = _map_panel(fig, rect, maps, method, sample, target, gray, size, colourbar=False)
                heading = f"{method.replace('_', ' ')}\n{span}"
            canvas.draw_title(fig, rect, heading, fontsize=7, pad=0.04)
    fig.text(0.5, 0.08 / height, _wrap_note(_NOTE, width), ha="center", va="bottom", fontsize=7, color="0.3",
             parse_math=False)  # fmt: skip
    return fig
