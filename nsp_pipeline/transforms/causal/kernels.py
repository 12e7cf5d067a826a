"""Fused per-layer loops of the factorised causal sweep, compiled by Numba.

Finishing a layer (``ŝ = s − Σ_{u<v} ŝ_u``, its channel sums for later layers and, with the precision
diagnostics, ``|ŝ|``, the rounding scale and five per-sample statistics) takes one NumPy pass over
memory per operation: about twenty with the diagnostics. Here it is one pass, threaded over samples
and rows, so a layer costs about what reading its inputs and writing its spectrum costs.

Arrays are ``(samples, channels, rows, columns)``; ``sums`` and ``magnitudes`` may be broadcast views
(zero strides) of smaller arrays. The channel sums add channels in order, as ``ndarray.sum(axis=1)``
does, so they are bit-identical to NumPy's.

References
----------
S. K. Lam, A. Pitrou, S. Seibert, "Numba: a LLVM-based Python JIT compiler", LLVM-HPC 2015.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

#: The statistics :func:`finish_with_precision` returns per sample and row, in this order.
STATISTICS = ("peak", "largest", "nonzero", "below", "smallest")


@numba.njit(parallel=True, cache=True)
def finish(base, sums, sign, result, summed, totals):  # pragma: no cover - compiled
    """``result = base + sign · sums``; with ``summed`` in {1, 2}, ``totals`` += channel sums.

    ``summed`` 1 sums ``result`` over channels, 2 sums ``base``, 0 neither (``totals`` unused).
    """
    n_samples, n_channels, n_rows, n_columns = base.shape
    for task in prange(n_samples * n_rows):
        sample, row = task // n_rows, task % n_rows
        for channel in range(n_channels):
            for column in range(n_columns):
                value = base[sample, channel, row, column] + sign * sums[sample, channel, row, column]
                result[sample, channel, row, column] = value
                if summed == 1:
                    totals[sample, 0, row, column] += value
                elif summed == 2:
                    totals[sample, 0, row, column] += base[sample, channel, row, column]


@numba.njit(parallel=True, cache=True)
def finish_with_precision(
    signal, sums, magnitudes, spectrum, keep_full, full, summed, totals, epsilon
):  # pragma: no cover - compiled
    """``ŝ = s − sums`` with the layer's precision statistics, in one pass.

    Parameters
    ----------
    signal, sums, magnitudes : numpy.ndarray
        ``s``, the ancestor sums ``Σ_{u<v} ŝ_u`` and the sums of their magnitudes (their absolute
        value is taken, so a parent's signal may stand for its magnitude).
    spectrum : numpy.ndarray
        Written: ``ŝ``.
    keep_full, full : bool, numpy.ndarray
        If set, ``full[:n] = ŝ`` and ``full[n:] = |ŝ|`` (``2n`` samples).
    summed, totals : bool, numpy.ndarray
        If set, ``totals[:n]`` += channel sums of ``ŝ`` and ``totals[n:]`` of ``|ŝ|``.
    epsilon : float
        The unit roundoff of the rounding scale ``|ŝ| + |magnitudes|``.

    Returns
    -------
    numpy.ndarray
        ``(5, n_samples, n_rows)``: per sample and row the :data:`STATISTICS`: the largest ``|s|``,
        the largest rounding scale, the non-zero coefficients, those below ``epsilon`` times their
        scale, and the smallest ``|ŝ| / scale`` over non-zero coefficients (1 if none).
    """
    n_samples, n_channels, n_rows, n_columns = signal.shape
    statistics = np.zeros((5, n_samples, n_rows))
    for task in prange(n_samples * n_rows):
        sample, row = task // n_rows, task % n_rows
        peak = largest = nonzero = below = 0.0
        smallest = 1.0
        for channel in range(n_channels):
            for column in range(n_columns):
                given = signal[sample, channel, row, column]
                solved = given - sums[sample, channel, row, column]
                magnitude = abs(solved)
                spectrum[sample, channel, row, column] = solved
                if keep_full:
                    full[sample, channel, row, column] = solved
                    full[n_samples + sample, channel, row, column] = magnitude
                if summed:
                    totals[sample, 0, row, column] += solved
                    totals[n_samples + sample, 0, row, column] += magnitude
                size = abs(given)
                if size > peak or size != size:
                    peak = size
                scale = magnitude + abs(magnitudes[sample, channel, row, column])
                if scale > largest or scale != scale:
                    largest = scale
                if magnitude > 0:
                    nonzero += 1.0
                    ratio = magnitude / scale
                    if ratio < smallest or ratio != ratio:
                        smallest = ratio
                    if magnitude < scale * epsilon:
                        below += 1.0
        statistics[0, sample, row] = peak
        statistics[1, sample, row] = largest
        statistics[2, sample, row] = nonzero
        statistics[3, sample, row] = below
        statistics[4, sample, row] = smallest
    return statistics


def set_threads(threads: int | None) -> None:
    """Run the kernels of the calling thread on at most ``threads`` threads (``None``: every core).

    A workflow job sets its rule's ``threads``, so parallel jobs do not oversubscribe the cores.
    """
    available = numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(available if threads is None else max(1, min(int(threads), available)))
