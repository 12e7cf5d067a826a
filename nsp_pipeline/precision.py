"""How many digits of a causal spectrum can be trusted, layer by layer.

The causal spectrum grows roughly like width^depth while activations stay O(1), so
``ŝ_v = s_v − Σ_{u<v} ŝ_u`` cancels large terms. In floating point, each coefficient and each
activation rebuilt as ``s = Z ŝ`` carries a rounding error of about ``ε · (Z|ŝ|)_v``: the size of
the terms that were summed. This module compares that noise floor with the values themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nsp_pipeline.layout import Layout

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


def layer_precision(
    layout: Layout, signal: np.ndarray, spectrum: np.ndarray, scale: np.ndarray
) -> list[LayerPrecision]:
    """Per-layer precision of spectra (worst case over the samples of the batch).

    Parameters
    ----------
    layout : Layout
        Node order.
    signal, spectrum : numpy.ndarray
        ``(n_samples, n_nodes)`` activations and their causal spectrum.
    scale : numpy.ndarray
        ``(n_samples, n_nodes)`` magnitude of the terms summed for each coefficient
        (``operator.rounding_scale(signal, spectrum)``; ``Z|ŝ|`` for the plain closure).
    """
    report = []
    for index, layer in enumerate(layout.layers):
        nodes = layout.slice(index)
        peak = np.abs(signal[:, nodes]).max(axis=1, initial=0.0)
        noise = EPSILON * scale[:, nodes].max(axis=1, initial=0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            digits = np.where(noise > 0, -np.log10(noise / np.maximum(peak, np.finfo(float).tiny)), 16.0)
        coefficients = np.abs(spectrum[:, nodes])
        nonzero = coefficients > 0
        below = nonzero & (coefficients < EPSILON * scale[:, nodes])
        fraction = float(below.sum() / nonzero.sum()) if nonzero.any() else 0.0
        report.append(LayerPrecision(layer.name, float(np.clip(digits.min(), 0.0, 16.0)), fraction))
    return report
