"""The causal spectrum with every digit.

Activations are binary floating-point numbers, i.e. integers times a power of two, and the
closure ``Z`` is a 0/1 matrix, so Möbius inversion can be done exactly in integer arithmetic.
Two implementations: on the factorised operator, multi-limb integers in float64 arrays
(:mod:`nsp_pipeline.transforms.causal.limbs`, full-size networks); on the sparse closure, Python
integers (:func:`exact_causal_spectrum`: Python-level work per ancestor pair, small and medium
networks; the independent reference of the tests). :func:`exact_spectrum` uses either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nsp_pipeline.transforms.causal.closure import CausalOperator


@dataclass(frozen=True)
class ExactSpectrum:
    """Exact values ``numerators · 2**exponent``.

    Parameters
    ----------
    numerators : numpy.ndarray
        ``(n_samples, n_nodes)`` array of Python integers.
    exponent : int
        The common power of two.
    """

    numerators: np.ndarray
    exponent: int

    def to_float(self) -> np.ndarray:
        """The values correctly rounded to float64."""
        rounded = [math.ldexp(float(n), self.exponent) for n in self.numerators.ravel()]
        return np.asarray(rounded, dtype=np.float64).reshape(self.numerators.shape)


def exact_spectrum(operator, signal: np.ndarray, stop: int | None = None) -> np.ndarray:
    """The exact causal spectrum rounded to float64, within one unit in the last place.

    Parameters
    ----------
    operator : CausalOperator or FactorizedCausalOperator
        The causal operator (factorised: multi-limb integers; closure: Python integers).
    signal : numpy.ndarray
        ``(n_samples, n_nodes)`` finite activations.
    stop : int, optional
        Only layers ``0 … stop − 1`` are needed: the result may hold only their nodes.
    """
    if isinstance(operator, CausalOperator):
        return exact_causal_spectrum(operator, signal).to_float()
    return operator.exact_forward(signal, stop).to_float()


def exact_integers(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Exact integer numerators and a common power of two for finite floats."""
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("exact arithmetic needs finite values; the signal holds NaN or Inf")
    mantissas, exponents = np.frexp(values)
    integers = (mantissas * 2.0**53).astype(np.int64)  # exact: |mantissa| < 1 has 53 bits
    shifts = exponents.astype(np.int64) - 53
    exponent = int(shifts[integers != 0].min()) if np.any(integers) else 0
    numerators = np.empty(values.shape, dtype=object)
    flat = numerators.reshape(-1)
    for index, (integer, shift) in enumerate(zip(integers.ravel().tolist(), shifts.ravel().tolist())):
        flat[index] = integer << (shift - exponent) if integer else 0
    return numerators, exponent


def exact_causal_spectrum(operator: CausalOperator, signal: np.ndarray) -> ExactSpectrum:
    """``ŝ = Z⁻¹ s`` in exact integer arithmetic, on the sparse closure.

    Parameters
    ----------
    operator : CausalOperator
        The closure of the network's graph.
    signal : numpy.ndarray
        ``(n_samples, n_nodes)`` activations (any finite floats).
    """
    numerators, exponent = exact_integers(np.atleast_2d(signal))
    spectrum = np.empty_like(numerators)
    layout = operator.layout
    for layer in range(len(layout)):
        nodes = layout.slice(layer)
        first, stop = int(operator.layer_rows[layer]), int(operator.layer_rows[layer + 1])
        sums = np.empty((spectrum.shape[0], stop - first), dtype=object)
        for row in range(first, stop):
            ancestors = operator.indices[operator.indptr[row] : operator.indptr[row + 1]]
            for sample in range(spectrum.shape[0]):
                sums[sample, row - first] = sum(spectrum[sample, ancestors].tolist(), 0)
        spectrum[:, nodes] = numerators[:, nodes] - sums[:, operator.row_map[nodes] - first]
    return ExactSpectrum(spectrum, exponent)
