"""How many digits of a causal spectrum can be trusted, layer by layer.

The causal spectrum grows roughly like width^depth while activations stay O(1), so
``ŝ_v = s_v − Σ_{u<v} ŝ_u`` cancels large terms. In floating point, each coefficient and each
activation rebuilt as ``s = Z ŝ`` carries a rounding error of about ``ε · (Z|ŝ|)_v``: the size of
the terms that were summed. This module compares that noise floor with the values themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nsp_pipeline.core.layout import Layout

#: Unit roundoff of float64.
EPSILON = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class LayerPrecision:
    """Floating-point faithfulness of one layer's spectrum.

    Parameters
    ----------
    layer : str
        Layer name.
    digits : float
        Significant decimal digits of the layer's largest activation that survive the round
        trip ``s = Z ŝ``: ``-log10(ε · max (Z|ŝ|) / max |s|)``, between 0 and 16.
    below_noise : float
        Fraction of the layer's non-zero coefficients whose magnitude is below their own
        rounding error ``ε · (Z|ŝ|)_v`` (such coefficients are noise).
    """

    layer: str
    digits: float
    below_noise: float

    @property
    def trustworthy(self) -> bool:
        """At least 3 digits survive and no coefficient is below the noise floor."""
        return self.digits >= 3 and self.below_noise == 0


def precision_table(
    layout: Layout, signal: np.ndarray, spectrum: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample, per-layer precision of spectra.

    Parameters
    ----------
    layout : Layout
        Node order.
    signal, spectrum : numpy.ndarray
        ``(n_samples, n_nodes)`` activations and their causal spectrum.
    scale : numpy.ndarray
        ``(n_samples, n_nodes)`` magnitude of the terms summed for each coefficient
        (``operator.rounding_scale(signal, spectrum)``; ``Z|ŝ|`` for the plain closure).

    Returns
    -------
    digits, below_noise : numpy.ndarray
        ``(n_samples, n_layers)``: as :class:`LayerPrecision`, for each sample.
    """
    n_samples, n_layers = signal.shape[0], len(layout)
    digits, below_noise = np.empty((n_samples, n_layers)), np.empty((n_samples, n_layers))
    for index in range(n_layers):
        nodes = layout.slice(index)
        peak = np.abs(signal[:, nodes]).max(axis=1, initial=0.0)
        noise = EPSILON * scale[:, nodes].max(axis=1, initial=0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = noise / np.maximum(peak, np.finfo(float).tiny)
            layer_digits = np.where(noise > 0, -np.log10(relative), 16.0)
        digits[:, index] = np.clip(layer_digits, 0.0, 16.0)
        coefficients = np.abs(spectrum[:, nodes])
        nonzero = coefficients > 0
        below = nonzero & (coefficients < EPSILON * scale[:, nodes])
        counts = nonzero.sum(axis=1)
        below_noise[:, index] = np.where(counts > 0, below.sum(axis=1) / np.maximum(counts, 1), 0.0)
    return digits, below_noise


def layer_precision(
    layout: Layout, signal: np.ndarray, spectrum: np.ndarray, scale: np.ndarray
) -> list[LayerPrecision]:
    """Per-layer precision of spectra, worst case over the samples (see :func:`precision_table`)."""
    digits, below_noise = precision_table(layout, signal, spectrum, scale)
    return summarize_precision(layout, digits, below_noise)


def summarize_precision(layout: Layout, digits: np.ndarray, below_noise: np.ndarray) -> list[LayerPrecision]:
    """Worst case over samples of a :func:`precision_table`, one :class:`LayerPrecision` per layer."""
    return [
        LayerPrecision(layer.name, float(digits[:, i].min()), float(below_noise[:, i].max()))
        for i, layer in enumerate(layout.layers)
    ]
