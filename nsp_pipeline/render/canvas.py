"""Axes-free drawing on report pages: images, frames, ticks and colourbars in figure coordinates.

A matplotlib ``Axes`` builds and draws dozens of artists (spines, tick lines, tick labels,
offset texts) even where a page shows a single image; for a report of many small pages that
is most of the rendering time. The parts here draw the same things from a handful of
artists placed in figure fractions: an image is one :class:`PixelImage` (colours computed
once, embedded without resampling), a frame one rectangle, all tick marks of a side one
line collection, all their labels one :class:`Labels` artist, a heading one text.

Every part carries a ``gid`` (:data:`LAYER_IMAGE`, :data:`COLOURBAR`, ...) so that the
data drawn on a page can be found again with :meth:`~matplotlib.figure.Figure.findobj`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.artist import Artist
from matplotlib.collections import LineCollection
from matplotlib.colors import Colormap, Normalize, SymLogNorm
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.scale import LogTransform
from matplotlib.text import Text
from matplotlib.textpath import TextToPath
from matplotlib.ticker import MaxNLocator, SymmetricalLogLocator
from matplotlib.transforms import Affine2D, IdentityTransform, blended_transform_factory

#: ``gid`` of the main image of a page (a layer, or the input on the summary page).
LAYER_IMAGE = "layer-image"

#: ``gid`` of a colourbar's gradient image; its tick labels have :data:`COLOURBAR_TICK`.
COLOURBAR = "colourbar"

#: ``gid`` of the tick labels of a colourbar.
COLOURBAR_TICK = "colourbar-tick"

#: ``gid`` of a colourbar's common factor (``×10ⁿ``), where its labels have one.
COLOURBAR_FACTOR = "colourbar-factor"

#: ``gid`` of the heading above an image.
IMAGE_TITLE = "image-title"

#: How far a label of each horizontal alignment starts left of its anchor, in its widths.
_SHIFT_X = {"left": 0.0, "center": 0.5, "right": 1.0}

#: Most labelled ticks on a colourbar; decades of a symmetric-log bar are thinned to fit.
MAX_COLOURBAR_TICKS = 9

_TICK = 0.05  # tick length, inches
_GRADIENT = 256  # colours in a colourbar's gradient

Rect = tuple[float, float, float, float]  # left, bottom, width, height as figure fractions


#: Images are embedded at least this many pixels across their longer side, as blocks of
#: whole pixels per value (viewers that smooth scaled images then blur only block edges).
MIN_IMAGE_PIXELS = 256


def block_size(shape: tuple[int, ...]) -> int:
    """Pixels per value, across and down, of an image of ``shape`` (see :data:`MIN_IMAGE_PIXELS`)."""
    return max(1, math.ceil(MIN_IMAGE_PIXELS / max(shape[0], shape[1], 1)))


class PixelImage(Artist):
    """An image filling a box of the figure, mapped to colours once and embedded as is.

    Unlike :class:`~matplotlib.image.AxesImage`, nothing is resampled when a vector page
    is written: the colours are computed at construction, each value becomes a
    :func:`block_size` square of pixels, and the PDF scales that pixel array to the box.
    Raster backends get the pixels resampled to the box (nearest neighbour).

    Parameters
    ----------
    rect : tuple of float
        ``(left, bottom, width, height)`` in figure fractions.
    values : numpy.ndarray
        2-D values (row 0 at the top; NaN drawn in the colormap's "bad" colour), or
        ``(H, W, 3)`` RGB in ``0 .. 1``.
    cmap : matplotlib.colors.Colormap or None
        Colormap of 2-D values.
    norm : matplotlib.colors.Normalize or None
        Normalisation of 2-D values.
    block : int, default 1
        Pixels per value, across and down.
    """

    def __init__(
        self,
        rect: Rect,
        values: np.ndarray,
        cmap: Colormap | None,
        norm: Normalize | None,
        block: int = 1,
    ) -> None:
        super().__init__()
        self.rect, self.norm, self.cmap = rect, norm, cmap
        self._values = np.asarray(values, dtype=np.float64)
        if self._values.ndim == 3:
            rgb = np.clip(self._values, 0.0, 1.0)
            colours = np.concatenate([rgb, np.ones_like(rgb[..., :1])], axis=-1)
            colours = np.round(colours * 255).astype(np.uint8)
        else:
            colours = cmap(norm(self._values), bytes=True)
        self.pixels = np.repeat(np.repeat(colours, block, axis=0), block, axis=1)

    def get_array(self) -> np.ndarray:
        """The values drawn (a copy)."""
        return self._values.copy()

    def get_clim(self) -> tuple[float, float]:
        """The colour limits ``(vmin, vmax)`` of 2-D values."""
        return self.norm.vmin, self.norm.vmax

    def draw(self, renderer) -> None:
        """Draw the pixels into the box: scaled by the backend where it can, else resampled."""
        if not self.get_visible():
            return
        left, bottom, width, height = self.rect
        corners = self.figure.transFigure.transform([(left, bottom), (left + width, bottom + height)])
        (x0, y0), (x1, y1) = corners
        renderer.open_group("pixel-image", gid=self.get_gid())
        gc = renderer.new_gc()
        pixels = self.pixels[::-1]  # backends put row 0 at the bottom
        if renderer.option_scale_image():
            renderer.draw_image(gc, x0, y0, pixels, Affine2D().scale(x1 - x0, y1 - y0))
        else:
            rows = max(round(y1 - y0), 1)
            columns = max(round(x1 - x0), 1)
            take_rows = ((np.arange(rows) + 0.5) * pixels.shape[0] / rows).astype(int)
            take_columns = ((np.arange(columns) + 0.5) * pixels.shape[1] / columns).astype(int)
            renderer.draw_image(gc, round(x0), round(y0), pixels[take_rows][:, take_columns])
        gc.restore()
        renderer.close_group("pixel-image")
        self.stale = False


def draw_image(
    fig: Figure,
    rect: Rect,
    values: np.ndarray,
    cmap: Colormap | None,
    norm: Normalize | None,
    gid: str,
    block: int | None = None,
) -> PixelImage:
    """Draw ``values`` (2-D, or ``(H, W, 3)`` RGB in 0..1) filling ``rect``, row 0 at the top.

    ``block`` pixels per value; :func:`block_size` of the values if ``None``.
    """
    shown = PixelImage(rect, values, cmap, norm, block_size(np.shape(values)) if block is None else block)
    shown.set_gid(gid)
    fig.add_artist(shown)
    return shown


def draw_frame(fig: Figure, rect: Rect, color: str = "black", linewidth: float = 0.8) -> None:
    """Outline ``rect`` with a thin line."""
    left, bottom, width, height = rect
    frame = Rectangle(
        (left, bottom),
        width,
        height,
        fill=False,
        edgecolor=color,
        linewidth=linewidth,
        transform=fig.transFigure,
    )
    fig.add_artist(frame)


def draw_title(fig: Figure, rect: Rect, text: str, fontsize: float = 11, pad: float = 0.08) -> Text:
    """A heading centred above ``rect``, ``pad`` inches over its top edge."""
    left, bottom, width, height = rect
    y = bottom + height + pad / fig.get_figheight()
    return fig.text(
        left + width / 2,
        y,
        text,
        fontsize=fontsize,
        ha="center",
        va="bottom",
        gid=IMAGE_TITLE,
        parse_math=False,
    )


_TEXT_TO_PATH = TextToPath()


@functools.lru_cache(maxsize=4096)
def _extent(text: str, fontsize: float) -> tuple[float, float, float]:
    """Width, height and descent (points) of one line of ``text`` in the default font.

    At least the height and descent of ``"lp"``, as :class:`~matplotlib.text.Text` lays out a
    line, so that labels of one row share a baseline.
    """
    prop = FontProperties(size=fontsize)
    width, height, descent = _TEXT_TO_PATH.get_text_width_height_descent(text, prop, ismath=False)
    _, line_height, line_descent = _TEXT_TO_PATH.get_text_width_height_descent("lp", prop, ismath=False)
    return width, max(height, line_height), max(descent, line_descent)


class Labels(Artist):
    """Short one-line labels in the default font, black, drawn by one artist.

    A :class:`~matplotlib.text.Text` measures itself with FreeType on every draw, which is a
    good part of the time to write a page with dozens of tick and tile labels. Here each
    distinct label is measured once (cached) and handed straight to the renderer, aligned at
    its anchor as ``ha``/``va`` say, as a Text would be. They stay real text in the PDF.

    Parameters
    ----------
    positions : sequence of (float, float)
        Anchor of each label, in figure fractions.
    strings : sequence of str
        The labels, one line each (drawn as is: no mathtext).
    fontsize : float
        Size in points.
    ha : {"left", "center", "right"}
        Horizontal alignment of every label at its anchor.
    va : {"top", "center", "bottom", "baseline"}
        Vertical alignment of every label at its anchor.
    """

    def __init__(
        self,
        positions: Sequence[tuple[float, float]],
        strings: Sequence[str],
        fontsize: float,
        ha: str = "left",
        va: str = "baseline",
    ) -> None:
        super().__init__()
        if len(positions) != len(strings):
            raise ValueError(f"{len(positions)} positions for {len(strings)} labels")
        if ha not in _SHIFT_X or va not in ("top", "center", "bottom", "baseline"):
            raise ValueError(f"unknown alignment ha={ha!r}, va={va!r}")
        self.set_zorder(3)  # above images, frames and label backgrounds, as text is
        self.positions = [(float(x), float(y)) for x, y in positions]
        self.strings = [str(text) for text in strings]
        self.fontsize, self.ha, self.va = float(fontsize), ha, va

    def baselines(self, to_display, points_to_display: float) -> list[tuple[float, float]]:
        """Where each label starts on its baseline, in display units."""
        starts = []
        for (x, y), text in zip(to_display.transform(self.positions), self.strings, strict=True):
            width, height, descent = (points_to_display * value for value in _extent(text, self.fontsize))
            lift = {
                "top": descent - height,
                "center": descent - height / 2,
                "bottom": descent,
                "baseline": 0.0,
            }
            starts.append((x - _SHIFT_X[self.ha] * width, y + lift[self.va]))
        return starts

    def draw(self, renderer) -> None:
        """Draw every label at its anchor."""
        if not self.get_visible() or not self.strings:
            return
        starts = self.baselines(self.figure.transFigure, renderer.points_to_pixels(1.0))
        prop = FontProperties(size=self.fontsize)
        renderer.open_group("labels", gid=self.get_gid())
        gc = renderer.new_gc()
        gc.set_foreground("black")
        height = renderer.get_canvas_width_height()[1]
        for (x, y), text in zip(starts, self.strings, strict=True):
            renderer.draw_text(gc, x, height - y if renderer.flipy() else y, text, prop, 0.0)
        gc.restore()
        renderer.close_group("labels")
        self.stale = False


def draw_labels(
    fig: Figure,
    positions: Sequence[tuple[float, float]],
    strings: Sequence[str],
    fontsize: float,
    ha: str,
    va: str,
    gid: str | None = None,
) -> Labels:
    """Add a :class:`Labels` artist with ``gid`` to ``fig``."""
    labels = Labels(positions, strings, fontsize, ha, va)
    labels.set_gid(gid)
    fig.add_artist(labels)
    return labels


def draw_ticks(
    fig: Figure,
    rect: Rect,
    side: str,
    positions: Sequence[float],
    labels: Sequence[str],
    fontsize: float = 8,
    gid: str | None = None,
) -> Labels:
    """Tick marks and labels outside one side of ``rect``.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The page.
    rect : tuple of float
        The box the ticks belong to, in figure fractions.
    side : {"bottom", "left", "right"}
        The side of the box.
    positions : sequence of float
        Places along the side as fractions of its length, from the left (``bottom``) or
        from the bottom (``left``, ``right``).
    labels : sequence of str
        One label per position.
    fontsize : float, default 8
        Label size in points.
    gid : str or None
        ``gid`` of the labels.

    Returns
    -------
    Labels
        The labels.
    """
    left, bottom, width, height = rect
    tick_x, tick_y = _TICK / fig.get_figwidth(), _TICK / fig.get_figheight()
    positions = np.asarray(positions, dtype=np.float64)
    if side == "bottom":
        x = left + positions * width
        segments = [[(at, bottom), (at, bottom - tick_y)] for at in x]
        anchors = [(at, bottom - 1.6 * tick_y) for at in x]
        ha, va = "center", "top"
    else:
        y = bottom + positions * height
        edge = left if side == "left" else left + width
        sign = -1.0 if side == "left" else 1.0
        segments = [[(edge, at), (edge + sign * tick_x, at)] for at in y]
        anchors = [(edge + sign * 1.6 * tick_x, at) for at in y]
        ha, va = ("right" if side == "left" else "left"), "center"
    fig.add_artist(LineCollection(segments, colors="black", linewidths=0.6, transform=fig.transFigure))
    return draw_labels(fig, anchors, labels, fontsize, ha, va, gid)


def draw_axis_label(
    fig: Figure, rect: Rect, side: str, text: str, fontsize: float = 8, offset: float = 0.3
) -> None:
    """A label along one side (``bottom`` or ``left``) of ``rect``, ``offset`` inches outside it."""
    left, bottom, width, height = rect
    if side == "bottom":
        fig.text(
            left + width / 2,
            bottom - offset / fig.get_figheight(),
            text,
            fontsize=fontsize,
            ha="center",
            va="top",
        )
    else:
        x = left - offset / fig.get_figwidth()
        fig.text(x, bottom + height / 2, text, fontsize=fontsize, ha="right", va="center", rotation=90)


def integer_ticks(count: int, most: int) -> np.ndarray:
    """At most about ``most`` round integer positions in ``0 .. count - 1`` (all if ``count`` is 1)."""
    ticks = MaxNLocator(nbins=max(most, 1), integer=True, steps=[1, 2, 5, 10]).tick_values(
        0, max(count - 1, 0)
    )
    return ticks[(ticks >= 0) & (ticks <= count - 1)].astype(int)


_SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def power_of_ten(exponent: int) -> str:
    """``10ⁿ`` in plain text (mathtext looks alike and is far slower to lay out)."""
    return "10" + str(exponent).translate(_SUPERSCRIPTS)


def _minus(text: str) -> str:
    return text.replace("-", "−")


def linear_tick_labels(values: np.ndarray) -> tuple[list[str], str]:
    """Labels of evenly spaced ticks, and a common factor (``"×10ⁿ"``, or ``""``) as matplotlib shows.

    Values of magnitude ≥ 10⁴ or below 10⁻² are written as multiples of a power of ten given
    once; every label has the fewest decimals that write all of them exactly.
    """
    values = np.asarray(values, dtype=np.float64)
    largest = float(np.max(np.abs(values))) if values.size else 0.0
    exponent = 0
    if largest and not 1e-2 <= largest < 1e4:
        exponent = math.floor(math.log10(largest))
    scaled = values / 10.0**exponent
    step = float(np.min(np.diff(scaled))) if scaled.size > 1 else 1.0
    decimals = next(
        (d for d in range(12) if np.allclose(np.round(scaled, d), scaled, rtol=0, atol=1e-6 * abs(step))), 12
    )
    labels = [_minus(f"{0.0 if v == 0 else v:.{decimals}f}") for v in scaled]
    return labels, (f"×{power_of_ten(exponent)}" if exponent else "")


def signed_power_of_ten(value: float) -> str:
    """``0``, ``±10ⁿ`` for a power of ten, else 3 significant digits."""
    if value == 0:
        return "0"
    exponent = math.log10(abs(value))
    if not math.isclose(exponent, round(exponent), abs_tol=1e-9):
        return _minus(f"{value:.3g}")
    return ("−" if value < 0 else "") + power_of_ten(round(exponent))


@dataclass(frozen=True)
class ColourbarTicks:
    """Where a colourbar is labelled: ``values``, their ``labels``, and a common ``factor`` text."""

    values: np.ndarray
    labels: list[str]
    factor: str


def _spaced(values: np.ndarray, positions: np.ndarray, gap: float) -> np.ndarray:
    """The values whose positions lie ``gap`` apart, taken greedily: 0 first, then largest ``|v|`` first."""
    order = sorted(range(len(values)), key=lambda i: (values[i] != 0, -abs(values[i])))
    kept: list[int] = []
    for i in order:
        if all(abs(positions[i] - positions[j]) >= gap for j in kept):
            kept.append(i)
    return np.sort(values[kept])


def colourbar_ticks(norm: Normalize, most: int = 5, gap: float = 0.08) -> ColourbarTicks:
    """The labelled values of a colourbar of ``norm``.

    Linear norms get about ``most`` round values. Symmetric-log norms get ``0`` and ``±10ⁿ``
    at decades, at least ``gap`` of the bar's length apart and at most
    :data:`MAX_COLOURBAR_TICKS`, or round linear values if fewer than 3 decades fit.
    """
    vmin, vmax = float(norm.vmin), float(norm.vmax)
    if isinstance(norm, SymLogNorm):
        locator = SymmetricalLogLocator(base=10, linthresh=norm.linthresh)
        decades = np.asarray(locator.tick_values(vmin, vmax), dtype=np.float64)
        decades = decades[(decades >= vmin) & (decades <= vmax)]
        positions = np.asarray(norm(decades), dtype=np.float64)
        kept = _spaced(decades, positions, max(gap, 1.0 / MAX_COLOURBAR_TICKS))
        if len(kept) >= 3:
            return ColourbarTicks(kept, [signed_power_of_ten(v) for v in kept], "")
    values = MaxNLocator(nbins=most).tick_values(vmin, vmax)
    values = values[(values >= vmin - 1e-12 * abs(vmin)) & (values <= vmax + 1e-12 * abs(vmax))]
    labels, factor = linear_tick_labels(values)
    return ColourbarTicks(values, labels, factor)


def draw_colourbar(
    fig: Figure, rect: Rect, norm: Normalize, cmap: Colormap, vertical: bool = False, fontsize: float = 8
) -> ColourbarTicks:
    """A colourbar of ``norm`` and ``cmap`` filling ``rect``, labelled below (or right of) it.

    The gradient is ``cmap`` over ``0 .. 1`` in even steps, so a value ``v`` sits at ``norm(v)``
    along the bar: linear or symmetric-log, exactly as the image's colours.

    Returns
    -------
    ColourbarTicks
        The labelled values.
    """
    gradient = np.linspace(0.0, 1.0, _GRADIENT)
    image = gradient[::-1, None] if vertical else gradient[None, :]
    draw_image(fig, rect, image, cmap, Normalize(0.0, 1.0), COLOURBAR, block=1)
    draw_frame(fig, rect, linewidth=0.5)
    ticks = colourbar_ticks(norm)
    positions = np.asarray(norm(ticks.values), dtype=np.float64)
    draw_ticks(
        fig, rect, "right" if vertical else "bottom", positions, ticks.labels, fontsize, COLOURBAR_TICK
    )
    if ticks.factor:
        left, bottom, width, height = rect
        x, y = (left + width, bottom + height) if vertical else (left + width, bottom)
        place = {"ha": "left", "va": "bottom"} if vertical else {"ha": "left", "va": "center"}
        pad = 0.08 / fig.get_figwidth()
        lift = (0.05 if vertical else -0.2) / fig.get_figheight()
        fig.text(x + pad, y + lift, ticks.factor, fontsize=fontsize, gid=COLOURBAR_FACTOR, **place)
    return ticks


def _decade_ticks(low: int, high: int) -> np.ndarray:
    """Exponents of the labelled decades from ``low`` to ``high``: every one, or every n-th if many."""
    stride = math.ceil((high - low + 1) / MAX_COLOURBAR_TICKS)
    return np.arange(low, high + 1)[(np.arange(low, high + 1) - low) % stride == 0]


def draw_log_scatter(
    fig: Figure, rect: Rect, x: np.ndarray, y: np.ndarray, gid: str, fontsize: float = 8
) -> Line2D:
    """Points ``(x, y)`` in ``rect`` on a linear x and a base-10 log y axis, with grid, ticks and frame.

    ``y`` must be positive. The y axis spans whole decades (at least one) around ``y``; the
    x axis spans ``x`` with 2 % margins.

    Returns
    -------
    matplotlib.lines.Line2D
        The points: data ``(x, y)``, drawn through a transform into figure fractions.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    low = math.floor(np.log10(y.min())) if y.size else 0
    high = max(math.ceil(np.log10(y.max())) if y.size else 1, low + 1)
    x_low, x_high = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
    margin = 0.02 * (x_high - x_low) or 0.5
    x_low, x_high = x_low - margin, x_high + margin
    left, bottom, width, height = rect
    scale = (width / (x_high - x_low), height / (high - low))
    to_figure = Affine2D().translate(-x_low, -low).scale(*scale).translate(left, bottom) + fig.transFigure
    transform = blended_transform_factory(IdentityTransform(), LogTransform(10)) + to_figure
    x_ticks = MaxNLocator(nbins=8).tick_values(x_low, x_high)
    x_ticks = x_ticks[(x_ticks >= x_low) & (x_ticks <= x_high)]
    decades = _decade_ticks(low, high)
    grid = [[(x, bottom), (x, bottom + height)] for x in left + (x_ticks - x_low) / (x_high - x_low) * width]
    grid += [[(left, y), (left + width, y)] for y in bottom + (decades - low) / (high - low) * height]
    fig.add_artist(LineCollection(grid, colors="0.85", linewidths=0.5, transform=fig.transFigure))
    points = Line2D(
        x, y, linestyle="none", marker=".", markersize=3, color="C0", transform=transform, gid=gid
    )
    fig.add_artist(points)
    draw_frame(fig, rect)
    x_labels, factor = linear_tick_labels(x_ticks)
    draw_ticks(fig, rect, "bottom", (x_ticks - x_low) / (x_high - x_low), x_labels, fontsize)
    if factor:
        fig.text(
            left + width, bottom - 0.35 / fig.get_figheight(), factor, fontsize=fontsize, ha="right", va="top"
        )
    draw_ticks(
        fig, rect, "left", (decades - low) / (high - low), [power_of_ten(d) for d in decades], fontsize
    )
    return points
