"""How many digits of a causal spectrum can be trusted, layer by layer.

The causal spectrum grows roughly like width^depth while activations stay O(1) (``2**118`` at the
end of VGG-11 at 224, ``2**300`` at the end of MobileNetV2), so the activations rebuilt as
``s = Z ŝ`` cancel huge terms. Two different questions follow:

- *Round trip* (:func:`precision_table`): how many digits of ``s`` survive ``s = Z ŝ`` in float64,
  ``-log10(ε · max (Z|ŝ|) / max |s|)``. Deep layers keep none, even with the exact ``ŝ`` rounded
  to float64: a float64 spectrum cannot rebuild deep activations. The exact arithmetic of
  :mod:`nsp_pipeline.transforms.causal.limbs` rebuilds them to the last bit.
- *Coefficients* (:func:`estimated_digits`): how many digits of ``ŝ`` itself are correct. Measured
  against the exact spectrum at 224×224 (random weights), float64 keeps at least 10.7 digits in
  every coefficient of VGG-11, ResNet-18 and MobileNetV2, except where the exact ``ŝ_v`` is small
  against the terms summed for it — ``ŝ_v = s_v − Σ_{u<v} ŝ_u`` with ``|ŝ_v| ≪ (Z|ŝ|)_v``, e.g. an
  adaptive pooling whose output reads one input, or a residual ``x + f(x)`` summed over boxes
  (the factorised operator reads that one from the activations instead, exactly). There float64
  keeps nothing, and the estimate says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nsp_pipeline.core.layout import Layout

#: Machine epsilon of float64 (2**-52: twice the unit roundoff).
EPSILON = float(np.finfo(np.float64).eps)

#: Correct digits of an exact value rounded to float64 (within one unit in the last place).
FLOAT64_DIGITS = float(-np.log10(EPSILON))

#: Arithmetics of the causal transform: ``auto`` chooses per layer between the other two.
ARITHMETICS = ("auto", "float64", "exact")


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
    arithmetic : {"float64", "exact"}
        How the layer's spectrum was computed. In reports of spectra (:func:`summarize_precision`
        of a transform's diagnostics) ``digits`` are then the correct digits of the coefficients
        (:func:`estimated_digits` for float64, :data:`FLOAT64_DIGITS` for exact layers).
    """

    layer: str
    digits: float
    below_noise: float
    arithmetic: str = "float64"

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
        digits[:, index], below_noise[:, index] = layer_precision_stats(
            signal[:, nodes], np.abs(spectrum[:, nodes]), scale[:, nodes].copy()
        )
    return digits, below_noise


def layer_precision_stats(
    signal: np.ndarray, magnitude: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Digits and share below noise of one layer, per sample (the columns of :func:`precision_table`).

    Parameters
    ----------
    signal : numpy.ndarray
        ``(n_samples, ...)`` the layer's activations.
    magnitude : numpy.ndarray
        The coefficients' magnitudes ``|ŝ|``, of the same shape.
    scale : numpy.ndarray
        Their rounding scales, of the same shape; overwritten (used as scratch space).
    """
    n_samples = signal.shape[0]
    axes = tuple(range(1, signal.ndim))
    peak = np.maximum(signal.max(axis=axes, initial=0.0), -signal.min(axis=axes, initial=0.0))
    largest_scale = scale.max(axis=axes, initial=0.0)
    nonzero = np.count_nonzero(magnitude.reshape(n_samples, -1), axis=1)
    np.multiply(scale, EPSILON, out=scale)
    below = np.less(magnitude, scale)
    below &= magnitude > 0
    counts = np.count_nonzero(below.reshape(n_samples, -1), axis=1)
    return precision_from_counts(peak, largest_scale, nonzero, counts)


def precision_from_counts(
    peak: np.ndarray, largest_scale: np.ndarray, nonzero: np.ndarray, below: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Digits and share below noise of one layer from its per-sample extremes and counts.

    Parameters
    ----------
    peak, largest_scale : numpy.ndarray
        Per sample: the largest ``|s|`` and the largest rounding scale of the layer.
    nonzero, below : numpy.ndarray
        Per sample: the number of non-zero coefficients, and of those below their rounding error.
    """
    noise = EPSILON * largest_scale
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = noise / np.maximum(peak, np.finfo(float).tiny)
        layer_digits = np.where(noise > 0, -np.log10(relative), 16.0)
    shares = np.where(nonzero > 0, below / np.maximum(nonzero, 1), 0.0)
    return np.clip(layer_digits, 0.0, 16.0), shares


def layer_precision(
    layout: Layout, signal: np.ndarray, spectrum: np.ndarray, scale: np.ndarray
) -> list[LayerPrecision]:
    """Per-layer precision of spectra, worst case over the samples (see :func:`precision_table`)."""
    digits, below_noise = precision_table(layout, signal, spectrum, scale)
    return summarize_precision(layout, digits, below_noise)


def summarize_precision(
    layout: Layout, digits: np.ndarray, below_noise: np.ndarray, exact: np.ndarray | None = None
) -> list[LayerPrecision]:
    """Worst case over samples, one :class:`LayerPrecision` per layer.

    Parameters
    ----------
    layout : Layout
        Node order.
    digits, below_noise : numpy.ndarray
        ``(n_samples, n_layers)``, e.g. of a :func:`precision_table`.
    exact : numpy.ndarray, optional
        ``(n_samples, n_layers)``, non-zero where the layer was computed in exact arithmetic.
    """
    exact = np.zeros(digits.shape, dtype=bool) if exact is None else np.asarray(exact) != 0
    return [
        LayerPrecision(
            layer.name,
            float(digits[:, i].min()),
            float(below_noise[:, i].max()),
            "exact" if exact[:, i].all() else "float64",
        )
        for i, layer in enumerate(layout.layers)
    ]


def conditioning_table(layout: Layout, spectrum: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Per sample and layer, ``max (Z|ŝ|)_v / |ŝ_v|`` over the non-zero coefficients (1 if none).

    ``scale`` is the rounding scale (:func:`precision_table`); the ratio is how much larger the
    terms summed for a coefficient are than the coefficient itself.
    """
    out = np.ones((spectrum.shape[0], len(layout)))
    for index in range(len(layout)):
        nodes = layout.slice(index)
        magnitude = np.abs(spectrum[:, nodes])
        ratio = np.divide(scale[:, nodes], magnitude, out=np.ones_like(magnitude), where=magnitude > 0)
        out[:, index] = ratio.max(axis=1, initial=1.0)
    return out


def estimated_digits(conditioning: np.ndarray, structure: list[tuple[list[int], int] | None]) -> np.ndarray:
    """Estimated correct significant digits of each layer's float64 coefficients, per sample.

    A first-order model of the rounding errors of the sweep ``ŝ_v = s_v − Σ_{u<v} ŝ_u``, with ``u``
    the unit roundoff (``2**-53``) and ``κ_l`` the layer's :func:`conditioning_table`:

    - a layer read from the activations (the input; one parent per neuron, or a residual
      ``x + f(x)``: ``ŝ_v = s_v − s_p``) has one rounding: relative error ``u · κ_l``;
    - another layer sums at most ``T_l`` ancestor coefficients, each with the relative error of its
      layer: ``max_{ancestor layers m} err_m + u · κ_l · log2(T_l + 1)``.

    It is an estimate, not a bound (rounding errors of opposite signs cancel; a worst-case bound
    would grow like ``κ^depth`` and say nothing). Checked against the exact spectrum
    (:mod:`nsp_pipeline.transforms.causal.limbs`): on VGG-11, ResNet-18 and MobileNetV2 at 64 and
    224 pixels, random and trained-like batch-norm statistics, every layer's smallest correct
    digits were at least the estimate (by 1 to 4 digits); the tests check it on small networks.

    Parameters
    ----------
    conditioning : numpy.ndarray
        ``(n_samples, n_layers)`` ``κ_l``.
    structure : list
        Per layer ``None`` (read from the activations) or ``(ancestor layers, T_l)``
        (``operator.error_structure()``).

    Returns
    -------
    numpy.ndarray
        ``(n_samples, n_layers)`` digits, between 0 and :data:`FLOAT64_DIGITS`.
    """
    unit = EPSILON / 2
    errors = np.empty(conditioning.shape)
    for index, reach in enumerate(structure):
        if reach is None:
            errors[:, index] = unit * conditioning[:, index]
            continue
        ancestors, terms = reach
        inherited = errors[:, ancestors].max(axis=1) if ancestors else 0.0
        errors[:, index] = inherited + unit * conditioning[:, index] * np.log2(terms + 1)
    return np.clip(-np.log10(errors), 0.0, FLOAT64_DIGITS)
