"""Render one sample of a :class:`~nsp_pipeline.core.pattern.Pattern` to a PDF report.

The report has, in order:

- summary page(s): the input image, the sample's label and prediction, the model and
  transform, the colour scale, and a table of every layer (kind, shape, min, max, energy,
  and per transform: significant digits, eigenvalue range, computed coefficients), split
  over as many pages as it needs;
- for Laplacian spectra, a page plotting ``|ŝ|`` against the eigenvalue (frequency);
- one page per layer.

Every layer is drawn as a single raster image (one ``imshow``), so that layers with
hundreds of channels stay fast to draw and small on disk:

- ``(C, H, W)``: a mosaic of ``C`` tiles on a near-square grid, separated by 1-pixel
  NaN gaps drawn in :data:`BACKGROUND`; more than three dimensions fold the leading
  ones into channels, and ``(C, 1, 1)`` is drawn like ``(C,)``;
- ``(C, L)``: one row per channel;
- ``(L,)``: a strip, wrapped into rows of a round width (100, 200, 500, ...) when long.

Images are embedded as blocks of whole pixels per value, at least
:data:`~nsp_pipeline.render.canvas.MIN_IMAGE_PIXELS` across their longer side, and never resampled
(:class:`~nsp_pipeline.render.canvas.PixelImage`). Colours map linearly or on a symmetric-log scale
(:func:`color_norms`).

Every page has a title and a subtitle naming the colour scale; every layer page has a
colourbar. A causal spectrum's layer with fewer correct digits than ``min_digits`` (its
``significant_digits`` diagnostic, :func:`nsp_pipeline.transforms.api.transform`) is rounding noise:
it is drawn in grey under red hatching (:data:`LOW_PRECISION`), its digits in its title, never in
the report's colour map. :func:`page_figures` builds the pages without writing them (what
:func:`render_pattern` writes), and the numbers of the summary table and the frequency
plot come from :mod:`nsp_pipeline.render.tables`. Figures are built with
:class:`matplotlib.figure.Figure` directly, never with ``pyplot``, so rendering leaves
matplotlib's global backend state alone.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.collections import PolyCollection
from matplotlib.colors import Colormap, Normalize, SymLogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from nsp_pipeline.core.atomic import atomic_output
from nsp_pipeline.core.defaults import default
from nsp_pipeline.core.layout import Layer
from nsp_pipeline.core.pattern import Pattern
from nsp_pipeline.core.progress import progress
from nsp_pipeline.render import canvas
from nsp_pipeline.render.tables import (
    TRANSFORM_NAMES,
    LayerSummary,
    eigenvalue,
    frequency_points,
    layer_summaries,
    number,
    residual_share,
    table_columns,
    table_row,
)

#: Valid colour scales of :func:`render_pattern` (as in the predecessor ``nsp``).
SCALES = ("layerscale", "layernorm", "globalscale", "globalnorm")

#: Mosaics with at most this many channels label every tile; larger ones label the
#: first tile of each row of tiles (of every k-th row if there are more rows than this).
MAX_TILE_LABELS = 64

#: ``gid`` of the channel indices written on the tiles of a mosaic.
TILE_LABEL = "tile-label"

#: ``gid`` of the points of the Laplacian frequency page.
FREQUENCY_POINTS = "frequency-points"

#: ``gid`` of the hatching over a layer with fewer correct digits than wanted.
LOW_PRECISION = "low-precision"

#: Colormap of a layer with fewer correct digits than wanted (never the report's: not mistaken for signal).
NOISE_CMAP = "Greys"

#: Correct significant digits below which a layer of a causal spectrum is drawn as noise.
DEFAULT_MIN_DIGITS = 3.0

#: Colour of the gaps between tiles and of the padding after a wrapped strip (NaN pixels).
BACKGROUND = "0.8"

#: The symmetric-log threshold is this percentile of the non-zero magnitudes ...
SYMLOG_PERCENTILE = 10.0

#: ... but at most this many decades below the largest magnitude.
SYMLOG_DECADES = 6

_PAGE = 8.0  # page width and height, inches
_MARGINS = {"left": 0.9, "right": 0.4, "top": 1.0, "bottom": 1.3}  # inches
_MAX_RATIO = 16.0  # most elongated axes box drawn; beyond it pixels stretch
_DPI = 100  # of pages saved to raster formats (PDF pages embed images at their own resolution)


def _canonical(values: np.ndarray) -> np.ndarray:
    """Reshape one sample of a layer to the ``(L,)``, ``(C, L)`` or ``(C, H, W)`` form drawn."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0 or values.size == 0:
        return values.reshape(-1)
    if values.ndim >= 3:
        values = values.reshape(-1, *values.shape[-2:])
        if values.shape[1:] == (1, 1):
            return values.reshape(-1)
    return values


def _strip_width(length: int) -> int:
    """Row width of a 1-D strip: the whole strip up to 100, else a round width >= sqrt(length)."""
    if length <= 100:
        return max(length, 1)
    width, step = 100, 0
    while width < math.sqrt(length):
        step += 1
        width = (1, 2, 5)[step % 3] * 10 ** (2 + step // 3)
    return width


def _mosaic_grid(channels: int, height: int, width: int) -> tuple[int, int]:
    """Rows and columns of tiles making a ``(channels, height, width)`` mosaic near-square."""
    cols = math.ceil(math.sqrt(channels * (height + 1) / (width + 1)))
    cols = min(max(cols, 1), channels)
    return math.ceil(channels / cols), cols


def layer_image(values: np.ndarray) -> np.ndarray:
    """The 2-D image drawn for one layer of one sample.

    Parameters
    ----------
    values : numpy.ndarray
        One sample of one layer, with the layer's per-sample shape.

    Returns
    -------
    numpy.ndarray
        Float64 image. ``(L,)`` gives ``(1, L)`` up to ``L = 100``, else rows of a round
        width (100, 200, 500, 1000, ...) of at least ``√L``, NaN-padded at the end, with
        neuron ``i`` at ``divmod(i, width)``; ``(C, L)`` is copied as is; ``(C, H, W)`` gives a
        ``rows·(H+1)-1`` by ``cols·(W+1)-1`` mosaic with channel ``c`` in tile
        ``divmod(c, cols)`` and NaN in the gaps and unused tiles. Leading dimensions
        beyond three fold into channels, ``(C, 1, 1)`` is treated as ``(C,)``, and an
        empty layer gives one NaN pixel.
    """
    values = _canonical(values)
    if values.ndim == 1:
        width = _strip_width(values.size)
        rows = max(math.ceil(values.size / width), 1)
        image = np.full(rows * width, np.nan)
        image[: values.size] = values
        return image.reshape(rows, width)
    if values.ndim == 2:
        return values.copy()
    channels, height, width = values.shape
    rows, cols = _mosaic_grid(channels, height, width)
    tiles = np.full((rows * cols, height + 1, width + 1), np.nan)
    tiles[:channels, :height, :width] = values
    mosaic = tiles.reshape(rows, cols, height + 1, width + 1).transpose(0, 2, 1, 3)
    return mosaic.reshape(rows * (height + 1), cols * (width + 1))[:-1, :-1].copy()


def _finite_range(values: np.ndarray) -> tuple[float, float] | None:
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else None


def _guarded(vmin: float, vmax: float) -> tuple[float, float]:
    if vmin < vmax:
        return vmin, vmax
    pad = 0.5 * max(1.0, abs(vmin))
    return vmin - pad, vmax + pad


def color_limits(per_layer_values: Sequence[np.ndarray], scale: str) -> list[tuple[float, float]]:
    """Colour limits ``(vmin, vmax)`` of every layer of one sample.

    Parameters
    ----------
    per_layer_values : sequence of numpy.ndarray
        The values of each layer for one sample (any shapes). Non-finite values are
        ignored; a layer without finite values counts as ``0..0``.
    scale : {"layerscale", "layernorm", "globalscale", "globalnorm"}
        ``layerscale``: min..max of each layer; ``layernorm``: ±max|x| of each layer;
        ``globalscale``: min..max over all layers; ``globalnorm``: ±max|x| over all layers.

    Returns
    -------
    list of tuple of float
        One ``(vmin, vmax)`` per layer, always with ``vmin < vmax``: a constant range
        ``v..v`` widens to ``v ± max(1, |v|)/2`` (``0..0`` centred becomes ``-1..1``).
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid scales are {', '.join(SCALES)}")
    ranges = [_finite_range(np.asarray(v, dtype=np.float64)) for v in per_layer_values]
    if scale.startswith("global"):
        known = [r for r in ranges if r is not None]
        whole = (min(lo for lo, _ in known), max(hi for _, hi in known)) if known else None
        ranges = [whole] * len(ranges)
    ranges = [(0.0, 0.0) if r is None else r for r in ranges]
    if scale.endswith("norm"):
        bounds = [max(abs(lo), abs(hi)) or 1.0 for lo, hi in ranges]
        return [(-bound, bound) for bound in bounds]
    return [_guarded(lo, hi) for lo, hi in ranges]


def symlog_threshold(values: np.ndarray) -> float:
    """Threshold ``t`` of a symmetric-log colour scale: linear within ``±t``, logarithmic beyond.

    ``t`` is the :data:`SYMLOG_PERCENTILE`-th percentile of the non-zero finite magnitudes
    ``|x|``, raised to ``max |x| · 10^-SYMLOG_DECADES`` if smaller: most values fall on the
    logarithmic part, which spans their own orders of magnitude (at most
    :data:`SYMLOG_DECADES`), while the smallest tenth and exact zeros share the linear part.

    Parameters
    ----------
    values : numpy.ndarray
        The values that share one colour scale (one layer, or all layers of a global scale).

    Returns
    -------
    float
        ``t > 0``; 1 if no value is finite and non-zero.
    """
    magnitudes = np.abs(np.asarray(values, dtype=np.float64).ravel())
    magnitudes = magnitudes[np.isfinite(magnitudes) & (magnitudes > 0)]
    if not magnitudes.size:
        return 1.0
    floor = float(magnitudes.max()) * 10.0**-SYMLOG_DECADES
    return max(float(np.percentile(magnitudes, SYMLOG_PERCENTILE)), floor)


def color_norms(per_layer_values: Sequence[np.ndarray], scale: str, symlog: bool = False) -> list[Normalize]:
    """The colour normalisation of every layer of one sample.

    Parameters
    ----------
    per_layer_values : sequence of numpy.ndarray
        The values of each layer for one sample.
    scale : {"layerscale", "layernorm", "globalscale", "globalnorm"}
        Colour limits, see :func:`color_limits`.
    symlog : bool, default False
        ``False``: linear :class:`~matplotlib.colors.Normalize`. ``True``:
        :class:`~matplotlib.colors.SymLogNorm` (base 10, ``linscale`` 1) with the threshold of
        :func:`symlog_threshold` over the values sharing the limits: each layer for the
        ``layer`` scales, all layers together for the ``global`` ones.

    Returns
    -------
    list of matplotlib.colors.Normalize
        One per layer, with ``vmin``/``vmax`` from :func:`color_limits`.
    """
    limits = color_limits(per_layer_values, scale)
    if not symlog:
        return [Normalize(vmin, vmax) for vmin, vmax in limits]
    if scale.startswith("global"):
        shared = symlog_threshold(np.concatenate([np.ravel(v) for v in per_layer_values]))
        thresholds = [shared] * len(limits)
    else:
        thresholds = [symlog_threshold(v) for v in per_layer_values]
    return [
        SymLogNorm(t, linscale=1.0, vmin=vmin, vmax=vmax, base=10)
        for t, (vmin, vmax) in zip(thresholds, limits, strict=True)
    ]


def _colormap(cmap: str | Colormap) -> Colormap:
    if isinstance(cmap, Colormap):
        return cmap
    try:
        return matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(
            f"unknown colormap {cmap!r}; use a matplotlib colormap name such as "
            "'viridis', 'magma', 'gray', 'coolwarm' or 'RdBu_r'"
        ) from None


def _default_title(pattern: Pattern, sample: int) -> str:
    parts = [f"sample {sample}"]
    if pattern.sample_ids is not None:
        parts[0] += f" (id {pattern.sample_ids[sample]})"
    for name in ("labels", "predictions"):
        column = getattr(pattern, name)
        if column is not None and column[sample] >= 0:
            parts.append(f"{name[:-1]} {column[sample]}")
    parts.append(pattern.domain)
    return " — ".join(parts)


def _norm_name(norm: Normalize) -> str:
    return "symmetric log" if isinstance(norm, SymLogNorm) else "linear"


def norm_description(norm: Normalize) -> str:
    """How a colour normalisation maps values: ``"linear"`` or ``"symmetric log (linear within ±t)"``."""
    if isinstance(norm, SymLogNorm):
        return f"symmetric log (linear within ±{norm.linthresh:.2g})"
    return "linear"


@dataclass(frozen=True)
class _Report:
    """Everything one report draws, checked and resolved."""

    pattern: Pattern
    sample: int
    scale: str
    colormap: Colormap
    title: str
    norms: list[Normalize]
    model: str | None
    input_image: np.ndarray | None
    summary: bool
    min_digits: float = DEFAULT_MIN_DIGITS

    def layer_digits(self, index: int) -> float | None:
        """The layer's correct significant digits in this sample, if the pattern records them."""
        digits = self.pattern.diagnostics.get("significant_digits")
        return None if digits is None else float(digits[self.sample, index])

    @property
    def symlog(self) -> bool:
        """Whether colours are on a symmetric-log scale."""
        return isinstance(self.norms[0], SymLogNorm)

    def scale_text(self, norm: Normalize | None = None) -> str:
        """The subtitle naming the colour scale (of one page's ``norm``, or of the report)."""
        if norm is not None:
            kind = norm_description(norm)
        elif self.symlog and self.scale.startswith("layer"):
            kind = "symmetric log (linear within ±t, t per layer: see the table)"
        else:
            kind = norm_description(self.norms[0])
        return f"colour scale: {self.scale}, {kind} — colormap {self.colormap.name}"


def _resolve(
    pattern: Pattern,
    sample: int,
    scale: str,
    cmap: str | Colormap,
    title: str | None,
    symlog: bool,
    model: str | None,
    input_image: np.ndarray | None,
    summary: bool,
    min_digits: float = DEFAULT_MIN_DIGITS,
) -> _Report:
    """Check the arguments of :func:`render_pattern` and resolve their defaults."""
    if not pattern.layout.layers:
        raise ValueError("the pattern has no layers to render")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid scales are {', '.join(SCALES)}")
    colormap = _colormap(cmap)
    sample = operator.index(sample)
    if not -pattern.n_samples <= sample < pattern.n_samples:
        raise IndexError(f"sample {sample} out of range for a pattern of {pattern.n_samples} samples")
    sample %= pattern.n_samples
    if input_image is not None:
        input_image = np.asarray(input_image, dtype=np.float64)
        if not 1 <= input_image.ndim <= 3 or input_image.size == 0:
            raise ValueError(
                "input_image must be a non-empty (C, H, W), (H, W) or (L,) array, "
                f"got shape {input_image.shape}"
            )
    elif pattern.domain == "activations":
        input_image = pattern.layer(0)[sample]
    return _Report(
        pattern=pattern,
        sample=sample,
        scale=scale,
        colormap=colormap.with_extremes(bad=BACKGROUND),
        title=_default_title(pattern, sample) if title is None else title,
        norms=color_norms([values[sample] for values in pattern.layers()], scale, symlog),
        model=model,
        input_image=input_image,
        summary=summary,
        min_digits=float(min_digits),
    )


# --- pages -----------------------------------------------------------------------------------------------


def _page(report: _Report, subtitle: str) -> Figure:
    """An empty page with the report's title and a subtitle below it."""
    fig = Figure(figsize=(_PAGE, _PAGE), dpi=_DPI)
    if report.title:
        fig.suptitle(report.title, fontsize=12, y=1 - 0.22 / _PAGE, va="top")
    fig.text(0.5, 1 - 0.5 / _PAGE, subtitle, fontsize=9, color="0.3", ha="center", va="top")
    return fig


def _axes_rect(height: int, width: int) -> tuple[float, float, float, float]:
    """Figure-fraction rectangle of an axes box with the image's aspect, top-aligned."""
    area_w = _PAGE - _MARGINS["left"] - _MARGINS["right"]
    area_h = _PAGE - _MARGINS["top"] - _MARGINS["bottom"]
    ratio = min(max(height / width, 1 / _MAX_RATIO), _MAX_RATIO)
    box_w, box_h = (area_w, area_w * ratio) if area_w * ratio <= area_h else (area_h / ratio, area_h)
    left = _MARGINS["left"] + (area_w - box_w) / 2
    bottom = _PAGE - _MARGINS["top"] - box_h
    return left / _PAGE, bottom / _PAGE, box_w / _PAGE, box_h / _PAGE


def _label_tiles(
    fig: Figure, rect: canvas.Rect, image_shape: tuple[int, int], tile: tuple[int, int, int, int]
) -> None:
    """Write channel indices at the top-left corners of the tiles (see :data:`MAX_TILE_LABELS`).

    ``image_shape`` is the mosaic's ``(rows, columns)`` of values, ``tile`` the layer's
    ``(channels, height, width, tile columns)``. The labels are one
    :class:`~nsp_pipeline.render.canvas.Labels` artist, their pale backgrounds one collection of
    rectangles.
    """
    channels, height, width, cols = tile
    rows = math.ceil(channels / cols)
    step = 1 if channels <= MAX_TILE_LABELS else cols * math.ceil(rows / MAX_TILE_LABELS)
    left, bottom, box_w, box_h = rect
    value_w, value_h = box_w / image_shape[1], box_h / image_shape[0]  # one value, in figure fractions
    size = min(max((width + 1) * value_w * _PAGE * 72 * 0.25, 3.0), 6.0)
    pad = 0.1 * size / 72 / _PAGE  # figure fraction
    anchors, boxes = [], []
    for channel in range(0, channels, step):
        row, col = divmod(channel, cols)
        x = left + (col * (width + 1) + 0.15 * width) * value_w
        y = bottom + box_h - (row * (height + 1) + 0.05 * height) * value_h
        anchors.append((x, y))
        x0, y0 = x - pad, y + pad
        x1 = x0 + len(str(channel)) * 0.64 * size / 72 / _PAGE + 2 * pad
        y1 = y0 - 0.8 * size / 72 / _PAGE - 2 * pad
        boxes.append([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
    backgrounds = PolyCollection(
        boxes, facecolors="white", alpha=0.6, edgecolors="none", transform=fig.transFigure
    )
    fig.add_artist(backgrounds)
    strings = [str(channel) for channel in range(0, channels, step)]
    canvas.draw_labels(fig, anchors, strings, size, "left", "top", TILE_LABEL)


def _draw_layer(
    fig: Figure,
    layer: Layer,
    values: np.ndarray,
    norm: Normalize,
    cmap: Colormap,
    noise_digits: float | None = None,
) -> None:
    """Draw one layer of one sample on a page: one image with its heading, ticks and colourbar.

    With ``noise_digits`` (the layer keeps fewer correct digits than wanted), the image is drawn in
    :data:`NOISE_CMAP` under red hatching and the title gives the digits.
    """
    canonical = _canonical(values)
    image = layer_image(values)
    rect = _axes_rect(*image.shape)
    if noise_digits is not None:
        cmap = _colormap(NOISE_CMAP).with_extremes(bad=BACKGROUND)
    canvas.draw_image(fig, rect, image, cmap, norm, canvas.LAYER_IMAGE)
    canvas.draw_frame(fig, rect)
    shape = ", ".join(str(n) for n in layer.shape)
    title = f"{layer.name} — {layer.kind} — shape ({shape})"
    if noise_digits is not None:
        _draw_hatching(fig, rect)
        title = f"{title}\nROUNDING NOISE: {noise_digits:.1f} correct digits (hatched, not signal)"
    canvas.draw_title(fig, rect, title)
    rows, columns = image.shape
    if canonical.ndim == 3:
        channels, height, width = canonical.shape
        _label_tiles(
            fig, rect, image.shape, (channels, height, width, _mosaic_grid(channels, height, width)[1])
        )
    else:
        x_ticks = canvas.integer_ticks(columns, 8)
        canvas.draw_ticks(fig, rect, "bottom", (x_ticks + 0.5) / columns, [str(t) for t in x_ticks])
        y_label = "channel"
        if canonical.ndim == 1:
            y_label = "first neuron of row" if rows > 1 else None
        if y_label is not None:
            fitting = max(1, int(rect[3] * _PAGE * 72 / 14))  # y tick labels of 8 pt that fit the box
            y_ticks = canvas.integer_ticks(rows, min(rows, fitting, 8))
            step = columns if canonical.ndim == 1 else 1
            canvas.draw_ticks(fig, rect, "left", 1 - (y_ticks + 0.5) / rows, [str(t * step) for t in y_ticks])
            canvas.draw_axis_label(fig, rect, "left", y_label, offset=0.45)
        canvas.draw_axis_label(fig, rect, "bottom", "neuron" if canonical.ndim == 1 else "position")
    bar_w = 0.6 * (_PAGE - _MARGINS["left"] - _MARGINS["right"]) / _PAGE
    bar = (0.5 - bar_w / 2, rect[1] - 0.75 / _PAGE, bar_w, 0.15 / _PAGE)
    canvas.draw_colourbar(fig, bar, norm, cmap)


def _draw_hatching(fig: Figure, rect: tuple[float, float, float, float]) -> None:
    """Red hatching over ``rect``: the values under it are rounding noise."""
    left, bottom, width, height = rect
    hatching = Rectangle(
        (left, bottom), width, height, fill=False, hatch="///", edgecolor="red", linewidth=1.5,
        transform=fig.transFigure, gid=LOW_PRECISION,
    )  # fmt: skip
    fig.add_artist(hatching)


def _noise_digits(report: _Report, index: int) -> float | None:
    """The layer's digits if they are fewer than the report's ``min_digits``, else None."""
    digits = report.layer_digits(index)
    return digits if digits is not None and digits < report.min_digits else None


def _layer_subtitle(report: _Report, index: int) -> str:
    """The subtitle of a layer page; Laplacian spectra add the layer's coefficients and frequencies."""
    text = report.scale_text(report.norms[index])
    eigenvalues = report.pattern.eigenvalues
    if eigenvalues is None:
        return text
    positions = report.pattern.layout.slice(index)
    if positions.start >= len(eigenvalues):
        return f"{text} — coefficients not computed (k = {len(eigenvalues)})"
    last = min(positions.stop, len(eigenvalues)) - 1
    return (
        f"{text} — coefficients {positions.start}–{last}, "
        f"λ {eigenvalue(eigenvalues[positions.start])}–{eigenvalue(eigenvalues[last])}"
    )


# --- summary pages ---------------------------------------------------------------------------------------

# Summary pages, in inches from the top of the page (the bottom margin from the bottom).
_HEADING = 0.8  # the page's heading
_TOP = 1.45  # the input image and the facts beside it
_PANEL = 2.5  # the largest side of the input image
_INFO_LEFT = 4.2  # left edge of the facts
_TABLE_TOP = 4.3  # the table's heading on the first page; its rows begin 0.3 lower
_CONTINUED_TOP = 1.2  # the rows of a continued table
_TABLE_BOTTOM = 0.45
_MONO = "DejaVu Sans Mono"
_MONO_ADVANCE = 0.602  # advance width of a DejaVu Sans Mono character, in em
_LINE = 1.45  # table row pitch, in font sizes


def _info_lines(report: _Report, rows: list[LayerSummary]) -> list[tuple[str, str]]:
    """The key-value block of the first summary page."""
    pattern, sample = report.pattern, report.sample

    def known(column: np.ndarray | None) -> int | None:
        return None if column is None or column[sample] < 0 else int(column[sample])

    label, prediction = known(pattern.labels), known(pattern.predictions)
    verdict = (
        "" if label is None or prediction is None else (" (correct)" if label == prediction else " (wrong)")
    )
    identity = f"{sample}" + ("" if pattern.sample_ids is None else f" (id {pattern.sample_ids[sample]})")
    lines = [
        ("sample", identity),
        ("true label", "unknown" if label is None else str(label)),
        ("prediction", ("unknown" if prediction is None else str(prediction)) + verdict),
        ("model", report.model or "not given"),
        ("transform", TRANSFORM_NAMES[pattern.domain]),
        ("layers", f"{len(rows)} ({pattern.layout.n_nodes:,} nodes)"),
        ("colour scale", report.scale),
        ("colour norm", _norm_name(report.norms[0])),
        ("colormap", report.colormap.name),
    ]
    if report.symlog and report.scale.startswith("global"):
        lines.append(("symlog t", number(report.norms[0].linthresh, 2)))
    if pattern.eigenvalues is not None:
        k, eigenvalues = len(pattern.eigenvalues), pattern.eigenvalues
        span = f"λ {eigenvalue(eigenvalues[0])} to {eigenvalue(eigenvalues[-1])}"
        lines.append(("frequencies", f"{k:,} of {pattern.layout.n_nodes:,} ({span})"))
    residual = residual_share(pattern, sample)
    if residual is not None:
        lines.append(("residual ‖s‖²", f"{number(residual[0])} ({100 * residual[1]:.3g} % of ‖s‖²)"))
    if rows and rows[0].significant_digits is not None:
        worst = min(rows, key=lambda row: row.significant_digits)
        lines.append(("precision", f"≥ {worst.significant_digits:.3g} digits (fewest: {worst.name})"))
    return lines


def _panel_box(height: int, width: int, size: float) -> tuple[float, float]:
    """Width and height (inches) of an image box of the image's aspect inside a ``size`` square."""
    ratio = min(max(height / width, 1 / _MAX_RATIO), _MAX_RATIO)
    return (size, size * ratio) if ratio <= 1 else (size / ratio, size)


def _input_picture(image: np.ndarray) -> np.ndarray:
    """What the summary page draws of an input: ``(H, W, 3)`` RGB for 3 channels, else :func:`layer_image`."""
    return image.transpose(1, 2, 0) if image.ndim == 3 and image.shape[0] == 3 else layer_image(image)


def _draw_input(fig: Figure, image: np.ndarray | None, cmap: Colormap) -> None:
    """The input image panel of the first summary page (RGB, grey or a mosaic), with a colourbar."""
    left = _MARGINS["left"]
    if image is None:
        rect = (left / _PAGE, 1 - (_TOP + _PANEL) / _PAGE, _PANEL / _PAGE, _PANEL / _PAGE)
        canvas.draw_frame(fig, rect)
        canvas.draw_title(fig, rect, "input", fontsize=10)
        note = "not given\n(the pattern holds the\ninput layer's spectrum)"
        fig.text(
            rect[0] + rect[2] / 2,
            rect[1] + rect[3] / 2,
            note,
            ha="center",
            va="center",
            fontsize=9,
            color="0.4",
        )
        return
    drawn = _input_picture(image)
    width, height = _panel_box(drawn.shape[0], drawn.shape[1], _PANEL)
    rect = (left / _PAGE, 1 - (_TOP + height) / _PAGE, width / _PAGE, height / _PAGE)
    shape = ", ".join(str(n) for n in image.shape)
    limits = _guarded(*(_finite_range(drawn) or (0.0, 0.0)))
    if drawn.ndim == 3:
        rgb = np.clip((drawn - limits[0]) / (limits[1] - limits[0]), 0, 1)
        canvas.draw_image(fig, rect, rgb, None, None, canvas.LAYER_IMAGE)
        canvas.draw_frame(fig, rect)
        canvas.draw_title(fig, rect, f"input ({shape}) as RGB", fontsize=10)
        return
    grey = image.ndim < 3 or image.shape[0] == 1
    colormap = matplotlib.colormaps["gray"].with_extremes(bad=BACKGROUND) if grey else cmap
    norm = Normalize(*limits)
    canvas.draw_image(fig, rect, drawn, colormap, norm, canvas.LAYER_IMAGE)
    canvas.draw_frame(fig, rect)
    canvas.draw_title(fig, rect, f"input ({shape})", fontsize=10)
    bar = ((left + width + 0.08) / _PAGE, rect[1], 0.1 / _PAGE, rect[3])
    canvas.draw_colourbar(fig, bar, norm, colormap, vertical=True, fontsize=7)


def _table_lines(report: _Report, rows: list[LayerSummary]) -> tuple[str, list[str]]:
    """The header and rows of the summary table as fixed-width lines."""
    thresholds = None
    if report.symlog and report.scale.startswith("layer"):
        thresholds = [norm.linthresh for norm in report.norms]
    columns = table_columns(rows, thresholds)
    cells = [table_row(row, columns, None if thresholds is None else thresholds[row.index]) for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    left_aligned = {"layer", "kind", "shape"}

    def line(values: list[str]) -> str:
        return "  ".join(
            value.ljust(width) if column in left_aligned else value.rjust(width)
            for column, value, width in zip(columns, values, widths, strict=True)
        )

    return line(columns), [line(values) for values in cells]


def _draw_table(fig: Figure, header: str, lines: list[str], top: float, fontsize: float) -> None:
    """Fixed-width table lines from ``top`` (inches below the page top), a grey band every other row."""
    pitch = fontsize * _LINE / 72 / _PAGE  # figure fraction
    left = _MARGINS["left"] / _PAGE
    right = left + (len(header) + 1) * _MONO_ADVANCE * fontsize / 72 / _PAGE
    y = 1 - top / _PAGE
    text = {"family": _MONO, "fontsize": fontsize, "va": "center", "ha": "left", "parse_math": False}
    fig.text(left, y - pitch / 2, header, **text)
    fig.add_artist(
        Line2D([left, right], [y - pitch] * 2, color="0.3", linewidth=0.6, transform=fig.transFigure)
    )
    bands = [
        [
            (left, y - (i + 1) * pitch),
            (right, y - (i + 1) * pitch),
            (right, y - (i + 2) * pitch),
            (left, y - (i + 2) * pitch),
        ]
        for i in range(0, len(lines), 2)
    ]
    fig.add_artist(PolyCollection(bands, facecolors="0.93", edgecolors="none", transform=fig.transFigure))
    for i, row in enumerate(lines):
        fig.text(left, y - (i + 1.5) * pitch, row, **text)


def _text_size(characters: int, inches: float, largest: float) -> float:
    """Font size (points) fitting ``characters`` monospace characters in ``inches``, at most ``largest``."""
    return min(largest, inches * 72 / (_MONO_ADVANCE * max(characters, 1)))


def _summary_pages(report: _Report) -> Iterator[Figure]:
    """The summary page and, for long tables, its continuation pages."""
    rows = layer_summaries(report.pattern, report.sample)
    header, lines = _table_lines(report, rows)
    fontsize = _text_size(len(header), _PAGE - _MARGINS["left"] - _MARGINS["right"], 8.0)
    pitch = fontsize * _LINE / 72
    left = _MARGINS["left"] / _PAGE

    def fitting(top: float) -> int:
        return max(1, int((_PAGE - top - _TABLE_BOTTOM) / pitch) - 1)  # one row for the header

    fig = _page(report, report.scale_text())
    fig.text(left, 1 - _HEADING / _PAGE, "Summary", fontsize=13, weight="bold", va="top")
    _draw_input(fig, report.input_image, report.colormap)
    info = _info_lines(report, rows)
    key_width = max(len(key) for key, _ in info)
    info = [f"{key.ljust(key_width)}  {value}" for key, value in info]
    fig.text(
        _INFO_LEFT / _PAGE,
        1 - (_TOP + 0.05) / _PAGE,
        "\n".join(info),
        family=_MONO,
        fontsize=_text_size(max(map(len, info)), _PAGE - _MARGINS["right"] - _INFO_LEFT, 8.0),
        va="top",
        ha="left",
        linespacing=1.5,
        parse_math=False,
    )
    fig.text(left, 1 - _TABLE_TOP / _PAGE, f"Layers ({len(rows)})", fontsize=11, weight="bold", va="top")
    count = fitting(_TABLE_TOP + 0.3)
    _draw_table(fig, header, lines[:count], _TABLE_TOP + 0.3, fontsize)
    yield fig
    done = count
    while done < len(lines):
        count = fitting(_CONTINUED_TOP)
        fig = _page(report, report.scale_text())
        last = min(done + count, len(lines)) - 1
        heading = f"Summary (continued): layers {done}–{last} of {len(lines)}"
        fig.text(left, 1 - _HEADING / _PAGE, heading, fontsize=13, weight="bold", va="top")
        _draw_table(fig, header, lines[done : done + count], _CONTINUED_TOP, fontsize)
        yield fig
        done += count


# --- the Laplacian frequency page ------------------------------------------------------------------------


def _draw_frequencies(fig: Figure, report: _Report) -> None:
    """Plot ``|ŝ|`` against the eigenvalue on a log axis, leaving out uncomputed (NaN) and zero values."""
    pattern = report.pattern
    eigenvalues, magnitudes, zeros = frequency_points(pattern, report.sample)
    width = _PAGE - _MARGINS["left"] - _MARGINS["right"]
    height = _PAGE - _MARGINS["top"] - _MARGINS["bottom"]
    rect = (_MARGINS["left"] / _PAGE, _MARGINS["bottom"] / _PAGE, width / _PAGE, height / _PAGE)
    canvas.draw_log_scatter(fig, rect, eigenvalues, magnitudes, FREQUENCY_POINTS)
    canvas.draw_title(fig, rect, "Laplacian spectrum — |ŝ| against frequency")
    canvas.draw_axis_label(fig, rect, "bottom", "eigenvalue λ of L = D − W (frequency)", fontsize=9)
    canvas.draw_axis_label(fig, rect, "left", "|ŝ| (log scale)", fontsize=9, offset=0.5)
    k, n = len(pattern.eigenvalues), pattern.layout.n_nodes
    notes = [f"{len(magnitudes):,} coefficients drawn of {k:,} computed ({n:,} nodes)"]
    if k < n:
        notes.append(f"the {n - k:,} not computed (NaN) are left out")
    if zeros:
        notes.append(f"{zeros:,} exactly zero are left out (log axis)")
    residual = residual_share(pattern, report.sample)
    if residual is not None:
        notes.append(f"residual energy {number(residual[0])} ({100 * residual[1]:.3g} % of ‖s‖²)")
    fig.text(
        0.5, 0.8 / _PAGE, "\n".join(notes), fontsize=9, color="0.3", ha="center", va="top", linespacing=1.5
    )


def _frequency_subtitle(report: _Report) -> str:
    """The subtitle of the frequency page: its log axis, and the colour scale of the layer pages."""
    kind = f"{report.scale}, {_norm_name(report.norms[0])}"
    return f"magnitude axis: log — layer pages: colour scale {kind}, colormap {report.colormap.name}"


# --- the report ------------------------------------------------------------------------------------------


def _pages(report: _Report) -> Iterator[Figure]:
    pattern = report.pattern
    if report.summary:
        yield from _summary_pages(report)
        if pattern.eigenvalues is not None:
            fig = _page(report, _frequency_subtitle(report))
            _draw_frequencies(fig, report)
            yield fig
    layers = zip(pattern.layout.layers, pattern.layers(), strict=True)
    for index, (layer, values) in enumerate(progress(layers, "layer pages", len(pattern.layout), "page")):
        fig = _page(report, _layer_subtitle(report, index))
        noise = _noise_digits(report, index)
        _draw_layer(fig, layer, values[report.sample], report.norms[index], report.colormap, noise)
        yield fig


def page_figures(
    pattern: Pattern,
    sample: int = 0,
    scale: str = default("render.scale"),
    cmap: str | Colormap = default("render.cmap"),
    title: str | None = None,
    *,
    symlog: bool = default("render.symlog"),
    model: str | None = None,
    input_image: np.ndarray | None = None,
    summary: bool = True,
    min_digits: float = DEFAULT_MIN_DIGITS,
) -> Iterator[Figure]:
    """The pages :func:`render_pattern` writes, as figures built one at a time.

    Arguments are checked at once; see :func:`render_pattern` for their meaning.

    Returns
    -------
    iterator of matplotlib.figure.Figure
        Summary page(s), the Laplacian frequency page (Laplacian spectra), then one page
        per layer; only the layer pages if ``summary`` is ``False``.
    """
    report = _resolve(pattern, sample, scale, cmap, title, symlog, model, input_image, summary, min_digits)
    return _pages(report)


def render_pattern(
    pattern: Pattern,
    path: str | os.PathLike,
    sample: int = 0,
    scale: str = default("render.scale"),
    cmap: str | Colormap = default("render.cmap"),
    title: str | None = None,
    *,
    symlog: bool = default("render.symlog"),
    model: str | None = None,
    input_image: np.ndarray | None = None,
    summary: bool = True,
    min_digits: float = DEFAULT_MIN_DIGITS,
) -> Path:
    """Render one sample of a pattern to a multi-page PDF report.

    Parameters
    ----------
    pattern : Pattern
        Activations or spectrum to draw.
    path : str or os.PathLike
        PDF file to write. It appears only once complete (see :func:`atomic_output`).
    sample : int, default 0
        Sample of the batch to draw; negative indices count from the end.
    scale : {"layerscale", "layernorm", "globalscale", "globalnorm"}
        Colour limits; see :func:`color_limits`. Default: the configuration's ``render.scale``
        (:func:`nsp_pipeline.core.defaults.default`), as are those of ``cmap`` and ``symlog``.
    cmap : str or matplotlib.colors.Colormap
        Matplotlib colormap. The ``norm`` scales suit diverging maps such as ``"RdBu_r"``.
    title : str or None
        Overall title above every page. ``None`` builds one from the sample index, its
        id, label and prediction where known, and the pattern's domain; ``""`` shows none.
    symlog : bool
        Map colours on a symmetric-log scale (for spectra spanning many orders of
        magnitude), linear within ``±t`` with ``t`` from :func:`symlog_threshold`; see
        :func:`color_norms`. Every page's subtitle names the scale and ``t``.
    model : str or None
        Model name shown on the summary page.
    input_image : numpy.ndarray or None
        The sample's input, ``(C, H, W)``, ``(H, W)`` or ``(L,)``, for the summary page
        (3 channels are drawn as RGB). ``None`` uses layer 0 of an activations pattern; a
        spectrum holds only the input's spectrum, so its summary then shows no image.
    summary : bool, default True
        Begin with the summary page(s) and, for Laplacian spectra, the frequency page.
        ``False`` writes only the layer pages, one per layer.
    min_digits : float, default 3
        Causal spectra: a layer whose ``significant_digits`` diagnostic (correct digits of its
        coefficients) is below this is drawn as rounding noise — grey, hatched, its digits in the
        title — never in ``cmap``.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ValueError
        For an unknown ``scale`` or ``cmap``, a pattern without layers, or an
        ``input_image`` of more than three dimensions.
    IndexError
        If ``sample`` is out of range.
    """
    report = _resolve(pattern, sample, scale, cmap, title, symlog, model, input_image, summary, min_digits)
    path = Path(path)
    metadata = {"Title": report.title, "CreationDate": None}  # no timestamp: reruns give the same bytes
    with atomic_output(path) as temporary, PdfPages(temporary, metadata=metadata) as pdf:
        for fig in _pages(report):
            pdf.savefig(fig)
    return path
