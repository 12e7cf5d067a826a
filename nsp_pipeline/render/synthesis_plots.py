"""Pictures of synthesised inputs: one page per objective, and the per-layer feature sheet.

:func:`plot_synthesis` draws per objective a page with the synthesised input and the trajectory
of its objective over the steps (the objective on each step's transformed input, its final
value on the untransformed input as a dashed line and, with candidates, the best candidate's
value dotted), and which start gave the input. :func:`plot_feature_sheet` draws the
classic feature-visualisation sheet: per layer one page, a grid of every channel's synthesised
input in channel order, each captioned with its channel and final value.

Inputs are drawn in their value range when the synthesis had one (``value_range``: the lower
end black, the upper white), else each from its own minimum to maximum; three channels as RGB,
one as gray. Everything is computed from the numpy arrays of a
:class:`~nsp_pipeline.interpret.synthesis_results.SynthesisResult` (no torch) and written
atomically without timestamps, so the same result gives the same bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from nsp_pipeline.interpret.synthesis_results import SynthesisResult
from nsp_pipeline.render import canvas
from nsp_pipeline.render.pdf_pages import checked_indices, write_pages
from nsp_pipeline.render.text import number_text, wrapped

PathLike = str | os.PathLike

#: ``gid`` of a synthesised input's image and of the trajectory line.
SYNTHESISED_IMAGE, TRAJECTORY = "synthesised-input", "objective-trajectory"

_PANEL, _GAP, _MARGIN = 2.6, 0.8, 0.5  # inches: panel side, gap, page side margins
_CELL, _CELL_GAP = 0.9, 0.35  # inches: a sheet's image side, and the caption space under each image
_SHOWN_PARAMETERS = (
    "parameterisation",
    "steps",
    "lr",
    "regularisers",
    "transforms",
    "blur_every",
    "blur_sigma",
    "value_range",
    "norm_bound",
    "init",
    "restarts",
    "candidates",
    "seed",
)


def plot_synthesis(
    result: SynthesisResult, path: PathLike, title: str = "", objectives: Sequence[int] | None = None
) -> Path:
    """Draw each objective's synthesised input and trajectory on a PDF page of its own.

    Parameters
    ----------
    result : SynthesisResult
        What :func:`nsp_pipeline.interpret.synthesis.synthesize` returns.
    path : path
        The PDF, written atomically.
    title : str
        Context put before every page title.
    objectives : sequence of int, optional
        Objective indices (0-based); all by default.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        For an index out of range; nothing is written.
    """
    indices = checked_indices("objective", objectives, result.n_inputs, "objectives")
    return write_pages(path, title, (_objective_page(result, k, title) for k in indices))


def plot_feature_sheet(
    result: SynthesisResult,
    path: PathLike,
    title: str = "",
    layers: Sequence[str] | None = None,
    columns: int = 8,
) -> Path:
    """Draw per layer a grid of its channels' synthesised inputs (the feature-visualisation sheet).

    Only objectives that are one channel of a layer with weight 1 and no unit
    (:meth:`~SynthesisResult.channel_of`) are drawn; a channel synthesised twice shows its first.

    Parameters
    ----------
    result : SynthesisResult
        What :func:`nsp_pipeline.interpret.synthesis.synthesize` returns.
    path : path
        The PDF, written atomically: one page per layer, layers in the order first met.
    title : str
        Context put before every page title.
    layers : sequence of str, optional
        Layers drawn, in order; all that have channel objectives by default.
    columns : int
        Images per row.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If no objective is a channel, a layer has none, or ``columns < 1``; nothing is written.
    """
    if not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be an int >= 1, got {columns!r}")
    by_layer: dict[str, dict[int, int]] = {}
    for k in range(result.n_inputs):
        channel = result.channel_of(k)
        if channel is not None:
            by_layer.setdefault(channel[0], {}).setdefault(channel[1], k)
    if not by_layer:
        raise ValueError(
            "no objective is one channel of a layer (a target with a channel, no unit, weight 1): "
            "nothing to put on a feature sheet"
        )
    layers = list(by_layer) if layers is None else list(layers)
    missing = [layer for layer in layers if layer not in by_layer]
    if missing or not layers:
        raise ValueError(
            f"layers {missing or layers} have no channel objectives; expected some of {list(by_layer)}"
        )
    pages = (_sheet_page(result, layer, by_layer[layer], title, columns) for layer in layers)
    return write_pages(path, title, pages)


def shown_image(result: SynthesisResult, k: int) -> np.ndarray:
    """Input ``k`` as drawn: ``(H, W, 3)`` in 0..1 (a 1-D input as one row)."""
    image = np.asarray(result.inputs[k], dtype=np.float64)
    if image.ndim == 1:
        image = image[None, None]
    elif image.ndim == 2:
        image = image[None]
    elif image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"input {k} has shape {image.shape}; expected (1, H, W), (3, H, W), (H, W) or (d,)")
    limits = result.parameters.get("value_range")
    low, high = limits if limits is not None else (image.min(), image.max())
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    scaled = np.clip(scaled, 0.0, 1.0)
    return np.moveaxis(scaled, 0, -1) if len(scaled) == 3 else np.repeat(scaled[0][..., None], 3, axis=-1)


def _parameter_text(result: SynthesisResult) -> str:
    parts = []
    for name in _SHOWN_PARAMETERS:
        value = result.parameters.get(name)
        if value in (None, [], 0) and name != "seed":
            continue
        if name == "regularisers":
            value = ", ".join(f"{key} {weight:g}" for key, weight in value.items() if weight) or None
        elif name == "transforms":
            value = " → ".join(f"{t['kind']} {_values(t['values'])}" for t in value)
        elif isinstance(value, list):
            value = "…".join(f"{v:g}" for v in value)
        if value is not None:
            parts.append(f"{name.replace('_', ' ')}: {value}")
    return "; ".join(parts)


def _values(values: list) -> str:
    return f"{values[0]:g}" if len(values) == 1 else f"{min(values):g}…{max(values):g} ({len(values)})"


def _objective_page(result: SynthesisResult, k: int, title: str) -> Figure:
    image = shown_image(result, k)
    rows, columns = image.shape[:2]
    image_h = _PANEL * min(rows / columns, 1.5)
    width = 2 * _MARGIN + 2 * _PANEL + _GAP + 0.4
    height = 1.6 + max(image_h, _PANEL) + 0.9
    fig = Figure(figsize=(width, height))
    prefix = f"{title}: " if title else ""
    fig.text(
        0.5,
        1 - 0.15 / height,
        f"{prefix}synthesised input for {result.label(k)} (value {number_text(float(result.values[k]), 4)})\n"
        + wrapped(_parameter_text(result), int(width * 13), "; "),
        ha="center",
        va="top",
        fontsize=9,
        parse_math=False,
    )
    bottom = 0.9 / height
    rect = (_MARGIN / width, bottom, _PANEL / width, image_h / height)
    canvas.draw_image(fig, rect, image, None, None, SYNTHESISED_IMAGE)
    canvas.draw_frame(fig, rect, linewidth=0.5)
    canvas.draw_title(fig, rect, f"input {rows}×{columns}\nfrom the {result.start_label(k)}", fontsize=8)
    axes = fig.add_axes(((_MARGIN + _PANEL + _GAP + 0.4) / width, bottom, _PANEL / width, _PANEL / height))
    steps = np.arange(1, result.steps + 1)
    axes.plot(
        steps, result.trajectory[:, k], color="C0", linewidth=1.0, gid=TRAJECTORY, label="during the steps"
    )
    axes.axhline(result.values[k], color="C3", linewidth=0.8, linestyle="--", label="final, untransformed")
    if np.isfinite(result.candidate_values[k]):
        axes.axhline(
            result.candidate_values[k], color="0.4", linewidth=0.8, linestyle=":", label="best candidate"
        )
    axes.set_xlabel("step", fontsize=8)
    axes.set_ylabel("objective", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.legend(fontsize=7, loc="lower right")
    axes.set_title("objective per step", fontsize=8)
    return fig


def _sheet_page(
    result: SynthesisResult, layer: str, channels: dict[int, int], title: str, columns: int
) -> Figure:
    order = sorted(channels)
    columns = min(columns, len(order))
    grid_rows = math.ceil(len(order) / columns)
    first = shown_image(result, channels[order[0]])
    cell_h = _CELL * min(first.shape[0] / first.shape[1], 1.5)
    width = 2 * _MARGIN + columns * _CELL + (columns - 1) * 0.15
    width = max(width, 4.0)
    height = 1.0 + grid_rows * (cell_h + _CELL_GAP) + 0.3
    fig = Figure(figsize=(width, height))
    prefix = f"{title}: " if title else ""
    fig.text(
        0.5,
        1 - 0.15 / height,
        f"{prefix}layer {layer}: synthesised input per channel ({len(order)} channels)\n"
        + wrapped(_parameter_text(result), int(width * 13), "; "),
        ha="center",
        va="top",
        fontsize=8,
        parse_math=False,
    )
    left_edge = (width - (columns * _CELL + (columns - 1) * 0.15)) / 2
    for position, channel in enumerate(order):
        k = channels[channel]
        row, column = divmod(position, columns)
        bottom = height - 1.0 - (row + 1) * (cell_h + _CELL_GAP) + _CELL_GAP
        rect = (
            (left_edge + column * (_CELL + 0.15)) / width,
            bottom / height,
            _CELL / width,
            cell_h / height,
        )
        canvas.draw_image(fig, rect, shown_image(result, k), None, None, SYNTHESISED_IMAGE)
        canvas.draw_frame(fig, rect, linewidth=0.4)
        fig.text(
            rect[0] + rect[2] / 2,
            rect[1] - 0.04 / height,
            f"{channel}: {number_text(float(result.values[k]), 4)}",
            ha="center",
            va="top",
            fontsize=6,
            parse_math=False,
        )
    return fig
