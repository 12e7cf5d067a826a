"""The numbers of a rendered report: per-layer summaries and the Laplacian frequency plot.

Pure numpy, no matplotlib: :mod:`nsp_pipeline.render.pages` draws exactly these numbers, so tests
can compare them with the pattern and with what is on the pages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nsp_pipeline.core.pattern import Pattern

#: How each domain is named on the summary page.
TRANSFORM_NAMES = {
    "activations": "none (activations)",
    "standard": "causal Fourier transform (standard)",
    "laplacian": "graph Laplacian transform",
}

_DASH = "—"

#: Longest layer name and kind shown in the summary table (longer ones lose their middle).
MAX_NAME = 28


@dataclass(frozen=True)
class LayerSummary:
    """One row of the summary table: one layer of one sample.

    Parameters
    ----------
    index : int
        Layer index.
    name, kind : str
        Layer name and short op type.
    shape : tuple of int
        Per-sample shape.
    minimum, maximum, energy : float
        Smallest and largest value and the energy ``Σ x²`` over the layer's finite values
        (NaN marks Laplacian coefficients that were not computed); NaN if there are none.
    computed : int
        Number of finite values: the layer's size, except in partial Laplacian spectra.
    significant_digits, below_noise : float or None
        Causal spectra: significant digits of the layer in float64 and the share of its
        coefficients below their rounding error (see :mod:`nsp_pipeline.transforms.causal.precision`).
    frequencies : tuple of float or None
        Laplacian spectra: smallest and largest eigenvalue of the layer's computed
        coefficients (coefficient ``i`` belongs to eigenvalue ``i``); ``None`` if none are.
    """

    index: int
    name: str
    kind: str
    shape: tuple[int, ...]
    minimum: float
    maximum: float
    energy: float
    computed: int
    significant_digits: float | None = None
    below_noise: float | None = None
    frequencies: tuple[float, float] | None = None


def layer_summaries(pattern: Pattern, sample: int) -> list[LayerSummary]:
    """The summary of every layer of one sample (the rows of the summary table).

    Parameters
    ----------
    pattern : Pattern
        Activations or spectrum.
    sample : int
        Sample index.

    Returns
    -------
    list of LayerSummary
        One per layer, in layout order.
    """
    digits = pattern.diagnostics.get("significant_digits")
    below_noise = pattern.diagnostics.get("below_noise")
    eigenvalues = pattern.eigenvalues
    rows = []
    for index, layer in enumerate(pattern.layout.layers):
        positions = pattern.layout.slice(index)
        values = pattern.values[sample, positions]
        finite = values[np.isfinite(values)]
        frequencies = None
        if eigenvalues is not None:
            known = eigenvalues[positions.start : min(positions.stop, len(eigenvalues))]
            known = known[np.isfinite(values[: len(known)])]
            frequencies = (float(known.min()), float(known.max())) if known.size else None
        rows.append(
            LayerSummary(
                index=index,
                name=layer.name,
                kind=layer.kind,
                shape=layer.shape,
                minimum=float(finite.min()) if finite.size else math.nan,
                maximum=float(finite.max()) if finite.size else math.nan,
                energy=float(finite @ finite) if finite.size else math.nan,
                computed=int(finite.size),
                significant_digits=None if digits is None else float(digits[sample, index]),
                below_noise=None if below_noise is None else float(below_noise[sample, index]),
                frequencies=frequencies,
            )
        )
    return rows


def residual_share(pattern: Pattern, sample: int) -> tuple[float, float] | None:
    """Energy of the frequencies a partial Laplacian spectrum did not compute, and its share.

    By Parseval ``‖s‖² = ‖ŝ_k‖² + residual``, so the share of the signal's energy is
    ``residual / (‖ŝ_k‖² + residual)``, computed from the spectrum alone.

    Returns
    -------
    tuple of float or None
        ``(residual, share)``, or ``None`` for a pattern without ``residual_energy``.
    """
    residual = pattern.diagnostics.get("residual_energy")
    if residual is None:
        return None
    residual = float(residual[sample])
    coefficients = pattern.values[sample]
    captured = float(np.sum(coefficients[np.isfinite(coefficients)] ** 2))
    total = captured + residual
    return residual, residual / total if total > 0 else 0.0


def frequency_points(pattern: Pattern, sample: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The points of the Laplacian frequency plot of one sample.

    Returns
    -------
    eigenvalues, magnitudes : numpy.ndarray
        ``λ_i`` and ``|ŝ_i|`` of the computed (finite), non-zero coefficients, in order.
    zeros : int
        Computed coefficients equal to zero (they have no place on a log axis).

    Raises
    ------
    ValueError
        If the pattern has no eigenvalues.
    """
    if pattern.eigenvalues is None:
        raise ValueError(f"a {pattern.domain!r} pattern has no eigenvalues to plot against")
    k = len(pattern.eigenvalues)
    magnitudes = np.abs(pattern.values[sample, :k])
    finite = np.isfinite(magnitudes)
    drawn = finite & (magnitudes > 0)
    return pattern.eigenvalues[drawn], magnitudes[drawn], int(np.count_nonzero(finite & ~drawn))


def number(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits; a dash for ``None`` or NaN."""
    return _DASH if value is None or math.isnan(value) else f"{value:.{digits}g}"


def eigenvalue(value: float) -> str:
    """An eigenvalue of a Laplacian (positive semidefinite) to 3 digits, negative roundoff as 0."""
    return number(max(value, 0.0), 3)


def table_columns(rows: list[LayerSummary], thresholds: list[float] | None = None) -> list[str]:
    """Column headers of the summary table for these rows (see :func:`table_row`)."""
    columns = ["#", "layer", "kind", "shape", "min", "max", "energy Σx²"]
    if rows and rows[0].significant_digits is not None:
        columns += ["sig. digits", "< noise"]
    if any(row.frequencies is not None for row in rows):
        columns.append("λ range")
    if any(row.computed < _size(row) for row in rows):
        columns.append("computed")
    if thresholds is not None:
        columns.append("symlog t")
    return columns


def table_row(row: LayerSummary, columns: list[str], threshold: float | None = None) -> list[str]:
    """The cells of one table row, in the order of ``columns``."""
    cells = {
        "#": str(row.index),
        "layer": _shortened(row.name),
        "kind": _shortened(row.kind),
        "shape": "(" + ", ".join(map(str, row.shape)) + ")",
        "min": number(row.minimum),
        "max": number(row.maximum),
        "energy Σx²": number(row.energy),
        "sig. digits": number(row.significant_digits, 3),
        "< noise": _DASH if row.below_noise is None else f"{100 * row.below_noise:.3g} %",
        "λ range": _DASH if row.frequencies is None else "–".join(map(eigenvalue, row.frequencies)),
        "computed": f"{row.computed}/{_size(row)}",
        "symlog t": number(threshold, 2),
    }
    return [cells[column] for column in columns]


def _size(row: LayerSummary) -> int:
    return math.prod(row.shape)


def _shortened(text: str) -> str:
    """``text`` of at most :data:`MAX_NAME` characters: the middle of a longer one becomes ``…``."""
    if len(text) <= MAX_NAME:
        return text
    keep = MAX_NAME - 1
    return f"{text[: (keep + 1) // 2]}…{text[len(text) - keep // 2 :]}"
