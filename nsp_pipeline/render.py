"""Render one sample of a :class:`~nsp_pipeline.pattern.Pattern` to a PDF, one page per layer.

Every layer is drawn as a single raster image (one ``imshow``), so that layers with
hundreds of channels stay fast to draw and small on disk:

- ``(C, H, W)``: a mosaic of ``C`` tiles on a near-square grid, separated by 1-pixel
  NaN gaps drawn in :data:`BACKGROUND`; more than three dimensions fold the leading
  ones into channels, and ``(C, 1, 1)`` is drawn like ``(C,)``;
- ``(C, L)``: one row per channel;
- ``(L,)``: a strip, wrapped into rows of a round width (100, 200, 500, ...) when long.

Figures are built with :class:`matplotlib.figure.Figure` directly, never with
``pyplot``, so rendering leaves matplotlib's global backend state alone.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from nsp_pipeline.atomic import atomic_output
from nsp_pipeline.layout import Layer
from nsp_pipeline.pattern import Pattern

#: Valid colour scales of :func:`render_pattern` (as in the predecessor ``nsp``).
SCALES = ("layerscale", "layernorm", "globalscale", "globalnorm")

#: Mosaics with at most this many channels label every tile; larger ones label the
#: first tile of each row of tiles (of every k-th row if there are more rows than this).
MAX_TILE_LABELS = 64

#: Colour of the gaps between tiles and of the padding after a wrapped strip (NaN pixels).
BACKGROUND = "0.8"

_PAGE = 8.0  # page width and height, inches
_MARGINS = {"left": 0.9, "right": 0.4, "top": 1.0, "bottom": 1.3}  # inches
_MAX_RATIO = 16.0  # most elongated axes box drawn; beyond it pixels stretch
_DPI = 100


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


def _axes_rect(height: int, width: int) -> tuple[float, float, float, float]:
    """Figure-fraction rectangle of an axes box with the image's aspect, top-aligned."""
    area_w = _PAGE - _MARGINS["left"] - _MARGINS["right"]
    area_h = _PAGE - _MARGINS["top"] - _MARGINS["bottom"]
    ratio = min(max(height / width, 1 / _MAX_RATIO), _MAX_RATIO)
    box_w, box_h = (area_w, area_w * ratio) if area_w * ratio <= area_h else (area_h / ratio, area_h)
    left = _MARGINS["left"] + (area_w - box_w) / 2
    bottom = _PAGE - _MARGINS["top"] - box_h
    return left / _PAGE, bottom / _PAGE, box_w / _PAGE, box_h / _PAGE


def _label_tiles(ax, channels: int, height: int, width: int, cols: int, tile_inches: float) -> None:
    """Write channel indices at the top-left corners of the tiles (see :data:`MAX_TILE_LABELS`)."""
    rows = math.ceil(channels / cols)
    step = 1 if channels <= MAX_TILE_LABELS else cols * math.ceil(rows / MAX_TILE_LABELS)
    size = min(max(tile_inches * 72 * 0.25, 3.0), 6.0)
    for channel in range(0, channels, step):
        row, col = divmod(channel, cols)
        ax.text(
            col * (width + 1) - 0.5 + 0.15 * width,
            row * (height + 1) - 0.5 + 0.05 * height,
            str(channel),
            fontsize=size,
            color="black",
            ha="left",
            va="top",
            bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "alpha": 0.6, "linewidth": 0},
        )


def _draw_layer(
    fig: Figure, layer: Layer, values: np.ndarray, limits: tuple[float, float], cmap: Colormap
) -> None:
    """Draw one layer of one sample on an empty page: one image, its title and colourbar."""
    canonical = _canonical(values)
    image = layer_image(values)
    rect = _axes_rect(*image.shape)
    ax = fig.add_axes(rect)
    shown = ax.imshow(
        image,
        cmap=cmap.with_extremes(bad=BACKGROUND),
        vmin=limits[0],
        vmax=limits[1],
        interpolation="nearest",
        aspect="auto",
    )
    shape = ", ".join(str(n) for n in layer.shape)
    ax.set_title(f"{layer.name} — {layer.kind} — shape ({shape})", fontsize=11)
    ax.tick_params(labelsize=8)
    if canonical.ndim == 3:
        ax.set_xticks([])
        ax.set_yticks([])
        channels, height, width = canonical.shape
        cols = _mosaic_grid(channels, height, width)[1]
        _label_tiles(ax, channels, height, width, cols, rect[2] * _PAGE * (width + 1) / image.shape[1])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fitting = max(1, int(rect[3] * _PAGE * 72 / 14))  # y tick labels of 8 pt that fit the box
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(image.shape[0], fitting, 8)))
        if canonical.ndim == 1:
            ax.set_xlabel("neuron", fontsize=8)
            if image.shape[0] == 1:
                ax.set_yticks([])
            else:
                row_width = image.shape[1]
                ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{round(y) * row_width}"))
                ax.set_ylabel("first neuron of row", fontsize=8)
        else:
            ax.set_xlabel("position", fontsize=8)
            ax.set_ylabel("channel", fontsize=8)
    cbar_w = 0.6 * (_PAGE - _MARGINS["left"] - _MARGINS["right"]) / _PAGE
    cax = fig.add_axes((0.5 - cbar_w / 2, rect[1] - 0.75 / _PAGE, cbar_w, 0.15 / _PAGE))
    fig.colorbar(shown, cax=cax, orientation="horizontal").ax.tick_params(labelsize=8)


def render_pattern(
    pattern: Pattern,
    path: str | os.PathLike,
    sample: int = 0,
    scale: str = "layerscale",
    cmap: str | Colormap = "viridis",
    title: str | None = None,
) -> Path:
    """Render one sample of a pattern to a multi-page PDF, one page per layer.

    Parameters
    ----------
    pattern : Pattern
        Activations or spectrum to draw.
    path : str or os.PathLike
        PDF file to write. It appears only once complete (see :func:`atomic_output`).
    sample : int, default 0
        Sample of the batch to draw; negative indices count from the end.
    scale : {"layerscale", "layernorm", "globalscale", "globalnorm"}, default "layerscale"
        Colour scale; see :func:`color_limits`.
    cmap : str or matplotlib.colors.Colormap, default "viridis"
        Matplotlib colormap. The ``norm`` scales suit diverging maps such as ``"RdBu_r"``.
    title : str or None
        Overall title above every page. ``None`` builds one from the sample index, its
        id, label and prediction where known, and the pattern's domain; ``""`` shows none.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ValueError
        For an unknown ``scale`` or ``cmap``, or a pattern without layers.
    IndexError
        If ``sample`` is out of range.
    """
    if not pattern.layout.layers:
        raise ValueError("the pattern has no layers to render")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid scales are {', '.join(SCALES)}")
    colormap = _colormap(cmap)
    sample = operator.index(sample)
    if not -pattern.n_samples <= sample < pattern.n_samples:
        raise IndexError(f"sample {sample} out of range for a pattern of {pattern.n_samples} samples")
    sample %= pattern.n_samples
    if title is None:
        title = _default_title(pattern, sample)
    per_layer = [values[sample] for values in pattern.layers()]
    limits = color_limits(per_layer, scale)
    path = Path(path)
    with atomic_output(path) as temporary, PdfPages(temporary, metadata={"Title": title}) as pdf:
        for layer, values, layer_limits in zip(pattern.layout.layers, per_layer, limits, strict=True):
            fig = Figure(figsize=(_PAGE, _PAGE), dpi=_DPI)
            if title:
                fig.suptitle(title, fontsize=12, y=1 - 0.3 / _PAGE, va="top")
            _draw_layer(fig, layer, values, layer_limits, colormap)
            pdf.savefig(fig)
    return path
