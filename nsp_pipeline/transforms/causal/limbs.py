"""The exact causal transform on the factorised operator, in multi-limb integer arithmetic.

Activations are binary floating-point numbers, and the Möbius inversion ``ŝ = Z⁻¹ s`` only adds
and subtracts them (``Z`` is 0/1), so every coefficient is an integer multiple of ``2**exponent``,
the weight of the lowest bit set in any activation. Each layer's values are held as integers in
that unit, split into ``K`` *limbs* of ``width`` bits::

    value = Σ_k limbs[k] · 2**(exponent + width·k),    |limbs[k]| ≤ 2**(width − 1) (normalised)

The limbs are float64 arrays holding integers, and they ride along the sweep of
:class:`~nsp_pipeline.transforms.causal.factorized.FactorizedCausalOperator` as extra samples: the same
box sums, channel sums, slice additions and matrix products (with 0/1 matrices) apply to each limb.
``width`` is chosen per operator so that no sum a layer forms (of at most ``T`` limbs, counted
when the sweep is compiled) exceeds ``2**53``: every float64 operation on limbs is then exact, in any
summation order (BLAS included). After each layer, carries are propagated (normalisation) and the
limbs that became zero on top are dropped, so each layer carries as many limbs as its values need:
a few in the first layers, more where the spectrum has grown (``2**118`` in VGG-11 at 224, ``2**280``
in MobileNetV2).

Nothing is rounded: the spectrum is exact, and :meth:`LimbValues.to_float` rounds it to float64
(within one unit in the last place). The inverse sweep rebuilds ``s = Z ŝ`` exactly, to the last bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nsp_pipeline.core.layout import Layout

#: Largest integer magnitude below which every float64 integer is exact: 2**53.
EXACT_BITS = 53


@dataclass(frozen=True)
class LimbValues:
    """Exact values on every node: per layer, ``Σ_k limbs[k] · 2**(exponent + width·k)``.

    Parameters
    ----------
    layout : Layout
        Node order.
    layers : list of numpy.ndarray
        Per layer, ``(K_l, n_samples, n_nodes_l)`` float64 arrays of integer limbs (the first
        ``len(layers)`` layers of ``layout``).
    exponent : int
        Weight of the lowest limb's unit (a power of two).
    width : int
        Bits per limb.
    """

    layout: Layout
    layers: list[np.ndarray]
    exponent: int
    width: int

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return self.layers[0].shape[1]

    def limb_counts(self) -> list[int]:
        """Limbs per layer (how many ``width``-bit words each layer's values need)."""
        return [limbs.shape[0] for limbs in self.layers]

    @property
    def n_nodes(self) -> int:
        """Number of nodes held (those of the layers held)."""
        return self.layout.slice(len(self.layers) - 1).stop

    def to_float(self) -> np.ndarray:
        """The values as ``(n_samples, n_nodes)`` float64, within one unit in the last place."""
        out = np.empty((self.n_samples, self.n_nodes))
        for index, limbs in enumerate(self.layers):
            out[:, self.layout.slice(index)] = limbs_to_float(limbs, self.exponent, self.width)
        return out

    def numerators(self) -> np.ndarray:
        """The exact integers (values over ``2**exponent``), ``(n_samples, n_nodes)`` Python ints."""
        out = np.empty((self.n_samples, self.n_nodes), dtype=object)
        for index, limbs in enumerate(self.layers):
            total = np.zeros(limbs.shape[1:], dtype=object)
            for k in range(limbs.shape[0] - 1, -1, -1):
                total = total * (1 << self.width) + limbs[k].astype(np.int64).astype(object)
            out[:, self.layout.slice(index)] = total
        return out


def lowest_exponent(values: np.ndarray) -> int:
    """The weight (a power of two) of the lowest set bit over all non-zero finite ``values``."""
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("exact arithmetic needs finite values; the signal holds NaN or Inf")
    nonzero = values[values != 0]
    if nonzero.size == 0:
        return 0
    mantissas, exponents = np.frexp(nonzero)
    integers = np.abs(mantissas * 2.0**EXACT_BITS).astype(np.int64)  # exact: 53-bit mantissas
    lowest_bits = np.frexp((integers & -integers).astype(np.float64))[1] - 1
    return int((exponents.astype(np.int64) - EXACT_BITS + lowest_bits).min())


def split(values: np.ndarray, exponent: int, width: int) -> np.ndarray:
    """Normalised limbs ``(K, *values.shape)`` of floats that are multiples of ``2**exponent``."""
    remainder = np.ldexp(np.asarray(values, dtype=np.float64), -exponent)  # exact integers
    if not np.array_equal(remainder, np.rint(remainder)):
        raise ValueError(f"values are not multiples of 2**{exponent}: they cannot be split exactly")
    base, limbs = 2.0**width, []
    while True:
        carry = np.rint(remainder * (1.0 / base))  # exact: a power-of-two scaling, then rounding
        limbs.append(remainder - carry * base)  # exact: the difference fits in `width` bits
        if not carry.any():
            return np.stack(limbs)
        remainder = carry


def normalise(limbs: np.ndarray, width: int) -> np.ndarray:
    """Carry-propagated limbs ``|limbs[k]| ≤ 2**(width − 1)``, zero limbs on top dropped (exact).

    ``limbs`` (overwritten) may hold any integers below ``2**53``; limbs are appended while the top
    one carries.
    """
    base, inverse = 2.0**width, 2.0**-width
    parts = list(limbs)
    k = 0
    while k < len(parts):
        carry = np.rint(parts[k] * inverse)
        if carry.any():
            parts[k] -= carry * base
            if k + 1 == len(parts):
                parts.append(np.zeros_like(carry))
            parts[k + 1] += carry
        k += 1
    while len(parts) > 1 and not parts[-1].any():
        parts.pop()
    return np.stack(parts) if len(parts) != len(limbs) else limbs


def limbs_to_float(limbs: np.ndarray, exponent: int, width: int) -> np.ndarray:
    """``Σ_k limbs[k] · 2**(exponent + width·k)`` in float64, summed from the top limb down.

    With normalised limbs of ``width ≤ 26`` bits, the top two limbs add exactly and each further
    one rounds once, far below the top limb: the result is within one unit in the last place.
    """
    total = np.zeros(limbs.shape[1:])
    for k in range(limbs.shape[0] - 1, -1, -1):
        total += np.ldexp(limbs[k], exponent + width * k)
    return total


def limb_width(max_terms: int) -> int:
    """Bits per limb such that sums of ``max_terms`` normalised limbs stay within ``2**52``."""
    width = EXACT_BITS - math.ceil(math.log2(max_terms + 1))
    if width < 8:
        raise ValueError(f"sums of {max_terms} terms leave fewer than 8 bits per limb for exact arithmetic")
    return width


def padded_sum(parts: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """``Σ sign · part`` of limb arrays ``(K_i, batch, ...)`` with different ``K_i`` (and broadcasting)."""
    n_limbs = max(part.shape[0] for _, part in parts)
    shape = np.broadcast_shapes(*(part.shape[1:] for _, part in parts))
    first_sign, first = parts[0]
    if first.shape == (n_limbs, *shape) and len(parts) == 1 and first_sign > 0:
        return first
    total = np.zeros((n_limbs, *shape))
    for sign, part in parts:
        target = total[: part.shape[0]]
        (np.add if sign > 0 else np.subtract)(target, part, out=target)
    return total
