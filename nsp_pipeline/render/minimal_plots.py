"""Pictures of minimal parcel, minimal component and masked images (torch-free).

:func:`plot_minimal_images` draws one PDF page per target with up to three rows:

- **parcels**: the image, its segmentation (parcel borders in white, the minimal set's parcels
  outlined in colour), the minimal parcel image, and the curve of the target against the number
  of parcels (greedy prefixes as a line, exact best per size as points, the threshold
  ``fraction · v`` as a dashed line, the full value ``v`` dotted, the minimal sizes marked);
- **components**: the image, the base (mean patches), the minimal component image and the
  same curve against the number of components;
- **masked**: the saliency map, the mask sequence as one map (the number of erosion steps each
  pixel survives), the masked image at the chosen step and at the stopping step, and the
  target per step with the threshold ``ratio · baseline``.

Images share the colour scale of the original image (values clipped to its range), so a
removed parcel shows its baseline as it compares with the image. Everything comes from the
numpy arrays of :mod:`nsp_pipeline.interpret.minimal_results`, drawn with
:mod:`nsp_pipeline.render.canvas`, written atomically without timestamps: the same results give
the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nsp_pipeline.interpret.minimal_results import MaskedImage, MinimalImage
from nsp_pipeline.render import canvas
from nsp_pipeline.render.pdf_pages import write_pages
from nsp_pipeline.render.text import number_text

PathLike = str | os.PathLike

#: Colours of the greedy curve, the exact points and the chosen parcels' outline.
GREEDY_COLOUR, EXACT_COLOUR = "#1f77b4", "#d62728"
#: ``gid`` of the image panels.
PANEL_IMAGE = "minimal-image"

_PANEL, _GAP, _MARGIN, _CURVE = 1.7, 0.35, 0.45, 2.6  # inches: panel side, gaps, margins, curve width
_ROW_TOP, _ROW_BOTTOM = 0.75, 0.55  # inches above (titles) and below (axis labels) each row
_TITLE = 0.7  # inches for the page title


def plot_minimal_images(
    path: PathLike,
    parcels: Sequence[MinimalImage] | None = None,
    components: Sequence[MinimalImage] | None = None,
    masked: Sequence[MaskedImage] | None = None,
    title: str = "",
) -> Path:
    """Draw per target a page with its minimal parcel and component images and its masked image.

    Parameters
    ----------
    path : path
        The PDF, written atomically: one page per target.
    parcels, components, masked : sequence, optional
        What :func:`~nsp_pipeline.interpret.minimal_images.minimal_parcel_image`,
        :func:`~nsp_pipeline.interpret.minimal_images.minimal_component_image` and
        :func:`~nsp_pipeline.interpret.minimal_images.masked_image` return (one result per
        target, the same targets and samples in the same order); a row per method given. The
        page title names the result's sample id when it has one.
    title : str
        Context put before every page title.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If nothing is given, the sequences differ in length, targets or samples, a parcel result is
        given as components (or the reverse), or the images are not ``(1|3, H, W)`` or
        ``(H, W)``; nothing is written.
    """
    rows = {
        name: tuple(given)
        for name, given in (("parcels", parcels), ("components", components), ("masked", masked))
        if given is not None
    }
    if not rows or not any(rows.values()):
        raise ValueError("nothing to draw: give parcels, components or masked results (one per target)")
    counts = {name: len(results) for name, results in rows.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"one result per target is expected in every sequence, got {counts}")
    for name in ("parcels", "components"):
        wrong = [r.kind for r in rows.get(name, ()) if r.kind != name]
        if wrong:
            raise ValueError(f"{name} results have kind {wrong[0]!r}; expected {name!r}")
    n_targets = next(iter(counts.values()))
    for k in range(n_targets):
        records = {name: results[k].target for name, results in rows.items()}
        if len({str(r) for r in records.values()}) != 1:
            raise ValueError(f"target {k} differs between the sequences: {records}")
        samples = {name: results[k].sample_id for name, results in rows.items()}
        if len(set(samples.values())) != 1:
            raise ValueError(f"result {k} comes from different samples in the sequences: {samples}")
        for results in rows.values():
            _check_image(results[k].image)
    pages = (_page({name: results[k] for name, results in rows.items()}, title) for k in range(n_targets))
    return write_pages(path, title, pages)


def _check_image(image: np.ndarray) -> None:
    if image.ndim == 2 or (image.ndim == 3 and image.shape[0] in (1, 3)):
        return
    raise ValueError(
        f"images of shape {image.shape} cannot be drawn: expected (1, H, W), (3, H, W) or (H, W)"
    )


def _rgb(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``values`` (shaped as ``reference``) as RGB 0..1 on ``reference``'s value range."""
    low, high = float(reference.min()), float(reference.max())
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(values)
    scaled = scaled[None] if scaled.ndim == 2 else scaled
    return np.moveaxis(scaled, 0, -1) if len(scaled) == 3 else np.repeat(scaled[0][..., None], 3, axis=-1)


def _borders(labels: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour has another label."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def _size_text(size: int) -> str:
    return "none" if size < 0 else str(size)


def _page(row_results: dict, title: str) -> Figure:
    first = next(iter(row_results.values()))
    rows = [name for name in ("parcels", "components", "masked") if name in row_results]
    height_of = first.image.shape[-2] / first.image.shape[-1]
    panel_h = _PANEL * min(height_of, 2.0)
    width = 2 * _MARGIN + 4 * (_PANEL + _GAP) + _CURVE
    row_h = _ROW_TOP + panel_h + _ROW_BOTTOM
    height = _TITLE + len(rows) * row_h
    fig = Figure(figsize=(width, height))
    prefix = f"{title}: " if title else ""
    sample = "" if first.sample_id is None else f"sample {first.sample_id} — "
    fig.text(
        0.5,
        1 - 0.15 / height,
        f"{prefix}{sample}target {first.target_label()}",
        ha="center",
        va="top",
        fontsize=12,
        parse_math=False,
    )
    for index, name in enumerate(rows):
        bottom = height - _TITLE - (index + 1) * row_h + _ROW_BOTTOM
        place = _Placer(fig, width, height, bottom, panel_h)
        if name == "masked":
            _masked_row(place, row_results[name])
        else:
            _minimal_row(place, row_results[name])
    return fig


class _Placer:
    """Rectangles of one row: image panels from the left, then the curve's axes."""

    def __init__(self, fig: Figure, width: float, height: float, bottom: float, panel_h: float):
        self.fig, self.width, self.height, self.bottom, self.panel_h = fig, width, height, bottom, panel_h

    def panel(self, column: int) -> tuple[float, float, float, float]:
        left = _MARGIN + column * (_PANEL + _GAP)
        return left / self.width, self.bottom / self.height, _PANEL / self.width, self.panel_h / self.height

    def image(self, column: int, rgb: np.ndarray, heading: str) -> None:
        rect = self.panel(column)
        canvas.draw_image(self.fig, rect, rgb, None, None, PANEL_IMAGE)
        canvas.draw_frame(self.fig, rect, linewidth=0.5)
        canvas.draw_title(self.fig, rect, heading, fontsize=7)

    def axes(self):
        left = _MARGIN + 4 * (_PANEL + _GAP) + 0.25
        rect = (
            left / self.width,
            self.bottom / self.height,
            (_CURVE - 0.35) / self.width,
            self.panel_h / self.height,
        )
        ax = self.fig.add_axes(rect)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        return ax


def _minimal_row(place: _Placer, result: MinimalImage) -> None:
    image, kind = result.image, result.kind
    place.image(0, _rgb(image, image), f"image\n{result.target_label()} = {number_text(result.full_value)}")
    if kind == "parcels":
        rgb = _rgb(image, image)
        rgb[_borders(result.labels)] = 1.0
        rgb[_borders(result.minimal_set[result.labels])] = matplotlib.colors.to_rgb(EXACT_COLOUR)
        place.image(1, rgb, f"{result.method}: {result.n_pieces} parcels\n(chosen ones outlined)")
    else:
        patch = result.parameters.get("patch_size")
        place.image(
            1,
            _rgb(result.base, image),
            f"{result.method}: base (mean {patch}×{patch} patch)\n{result.n_pieces} components",
        )
    search = "exact" if result.exact_size >= 0 else "greedy"
    chosen = int(result.minimal_set.sum())
    place.image(
        2,
        _rgb(result.minimal_image, image),
        f"minimal image ({search}): {chosen} {kind}\nvalue {number_text(result.minimal_value)}",
    )
    unit = "parcel" if kind == "parcels" else "component"
    values = result.piece_values
    best = int(np.argmax(values))
    place.image(
        3,
        _rgb(result.compose(np.arange(result.n_pieces) == best), image),
        f"best single {unit} (#{best})\nvalue {number_text(values[best])}",
    )
    ax = place.axes()
    sizes = np.arange(result.n_pieces + 1)
    ax.plot(
        sizes,
        result.greedy_curve,
        color=GREEDY_COLOUR,
        marker=".",
        markersize=3,
        linewidth=1,
        label=f"greedy ({result.parameters.get('greedy')}) prefixes",
    )
    if result.exact:
        ax.plot(
            sizes,
            result.exact_curve,
            linestyle="none",
            marker="o",
            markersize=4,
            markerfacecolor="none",
            color=EXACT_COLOUR,
            label="exact best per size",
        )
    ax.axhline(
        result.threshold,
        color="0.3",
        linestyle="--",
        linewidth=0.8,
        label=f"{result.fraction:g} × full value",
    )
    ax.axhline(result.full_value, color="0.3", linestyle=":", linewidth=0.8, label="full value")
    for size, colour in ((result.greedy_size, GREEDY_COLOUR), (result.exact_size, EXACT_COLOUR)):
        if size >= 0:
            curve = result.greedy_curve if colour == GREEDY_COLOUR else result.exact_curve
            ax.plot([size], [curve[size]], marker="*", markersize=9, color=colour, linestyle="none")
    ax.set_xlabel(f"number of {kind}", fontsize=7)
    ax.set_ylabel("target", fontsize=7)
    ax.legend(fontsize=6, loc="best")
    ax.set_title(
        f"greedy size {_size_text(result.greedy_size)}, exact size "
        f"{_size_text(result.exact_size) if result.exact else 'not searched'}",
        fontsize=7,
    )


def _masked_row(place: _Placer, result: MaskedImage) -> None:
    image = result.image
    saliency = result.saliency
    top = float(saliency.max()) if saliency.max() > saliency.min() else float(saliency.min()) + 1.0
    colours = matplotlib.colormaps["inferno"](Normalize(float(saliency.min()), top)(saliency))[..., :3]
    parameters = result.parameters
    place.image(
        0, colours, f"{parameters['saliency_method']} map\ntop {100 - parameters['percentile']:g}% → hull"
    )
    depth = result.masks.sum(axis=0).astype(np.float64)
    steps = len(result.values) - 1
    shades = matplotlib.colormaps["viridis"](Normalize(0, max(steps + 1, 1))(depth))[..., :3]
    shades[depth == 0] = 1.0
    place.image(
        1, shades, f"masks: steps survived (0…{steps + 1})\nerosion {parameters['erosion_step']} px/step"
    )
    chosen = result.chosen_step
    place.image(
        2,
        _rgb(result.masked_image, image),
        f"masked image, step {chosen}\nvalue {number_text(result.values[chosen])}",
    )
    last = len(result.values) - 1
    place.image(
        3,
        _rgb(result.masked(last), image),
        f"step {last} ({result.stop_reason})\nvalue {number_text(result.values[last])}",
    )
    ax = place.axes()
    ax.plot(
        np.arange(len(result.values)),
        result.values,
        color=GREEDY_COLOUR,
        marker=".",
        markersize=3,
        linewidth=1,
        label="target per step",
    )
    ax.axhline(
        result.threshold, color="0.3", linestyle="--", linewidth=0.8, label=f"{result.ratio:g} × baseline"
    )
    ax.plot(
        [chosen],
        [result.values[chosen]],
        marker="*",
        markersize=9,
        color=EXACT_COLOUR,
        linestyle="none",
        label="masked image",
    )
    ax.set_xlabel("erosion step", fontsize=7)
    ax.set_ylabel("target", fontsize=7)
    ax.legend(fontsize=6, loc="best")
    areas = result.masks.sum(axis=(1, 2))
    ax.set_title(f"mask area {areas[0]} → {areas[-1]} pixels; stop: {result.stop_reason}", fontsize=7)
