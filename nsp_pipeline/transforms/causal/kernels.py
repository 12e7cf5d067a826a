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
from numba import prange, types


class _Kernel:
    """A loop compiled (or read from Numba's disk cache) for one signature on its first call.

    Arrays of any layout are accepted (views, broadcast views), so each kernel is compiled once.
    """

    def __init__(self, function, *argument_types) -> None:
        self.dispatcher = numba.njit(parallel=True, cache=True)(function)
        self.signature, self.ready = argument_types, False
        self.__doc__, self.__name__ = function.__doc__, function.__name__

    def __call__(self, *arguments):
        if not self.ready:
            self.dispatcher.compile(self.signature)
            self.dispatcher.disable_compile()
            self.ready = True
        return self.dispatcher(*arguments)


def _arrays(dtype, dimensions: int, readonly: bool = True) -> types.Array:
    return types.Array(dtype, dimensions, "A", readonly=readonly)


_VALUES, _OUT = _arrays(types.float64, 4), _arrays(types.float64, 4, readonly=False)


def _finish(base, sums, sign, result, summed, totals):  # pragma: no cover - compiled
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


finish = _Kernel(_finish, _VALUES, _VALUES, types.float64, _OUT, types.int64, _OUT)


def _finish_with_precision(
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
        ``(6, n_samples, n_rows)``: per sample and row, in this order, the largest ``|s|``,
        the largest rounding scale, the non-zero coefficients, those below ``epsilon`` times their
        scale, the largest scale over ``|ŝ|`` of the non-zero ones (0 if none), and the sum of ``ŝ``
        (not finite if an input was not).
    """
    n_samples, n_channels, n_rows, n_columns = signal.shape
    statistics = np.zeros((6, n_samples, n_rows))
    for task in prange(n_samples * n_rows):
        sample, row = task // n_rows, task % n_rows
        peak = largest = nonzero = below = conditioning = total = 0.0
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
                total += solved
                size = abs(given)
                peak = size if size > peak else peak
                scale = magnitude + abs(magnitudes[sample, channel, row, column])
                largest = scale if scale > largest else largest
                positive = magnitude > 0  # branch-free below, so the loop stays simple
                nonzero += positive
                below += positive and magnitude < scale * epsilon
                ratio = scale / magnitude if positive else 0.0
                conditioning = ratio if ratio > conditioning else conditioning
        statistics[0, sample, row] = peak
        statistics[1, sample, row] = largest
        statistics[2, sample, row] = nonzero
        statistics[3, sample, row] = below
        statistics[4, sample, row] = conditioning
        statistics[5, sample, row] = total
    return statistics


finish_with_precision = _Kernel(
    _finish_with_precision,
    *(_VALUES, _VALUES, _VALUES, _OUT, types.boolean, _OUT, types.boolean, _OUT, types.float64),
)


def _box_sums(sources, offsets, boxes, terms, maps, indptr, indices, side_by_side, out):  # pragma: no cover
    """Add separable box sums of source grids to ``out``, each sample and channel on its own.

    Box ``k`` first combines its sources, ``Σ_t sign_t · source_t`` (as NumPy would, term after term),
    then sums the combination over ``rows(i)`` (``partial[i, b]``) and that over ``columns(j)`` for
    each target ``(i, j)``. A map with one target row (or column) sums every source row and is
    broadcast over the target's rows.

    Parameters
    ----------
    sources : numpy.ndarray
        ``(n_samples, length)``: the source layers flattened, side by side, each ``(channels, rows,
        columns)`` with as many channels as ``out`` (channel ``c`` reads channel ``c``).
    offsets : numpy.ndarray
        int64: per source layer, its offset in ``sources``.
    boxes : numpy.ndarray
        ``(n_boxes, 6)`` int64: first term, end of terms, source height and width, row map and
        column map.
    terms : numpy.ndarray
        ``(n_terms, 2)`` int64: a source layer, and its sign (±1).
    maps : numpy.ndarray
        ``(n_maps, 2)`` int64: a per-axis map's first entry in ``indptr`` and its number of targets.
    indptr, indices : numpy.ndarray
        The maps in compressed sparse rows, side by side (``indptr`` entries index ``indices``).
    side_by_side : bool
        Run the boxes in parallel (one channel only), else the samples and channels.
    out : numpy.ndarray
        ``(n_samples, channels, rows, columns)``, added to.
    """
    n_samples, n_channels, n_rows, n_columns = out.shape
    n_boxes = boxes.shape[0]
    largest_grid = largest_partial = 1
    for box in range(n_boxes):
        largest_grid = max(largest_grid, boxes[box, 2] * boxes[box, 3])
        largest_partial = max(largest_partial, maps[boxes[box, 4], 1] * boxes[box, 3])
    if side_by_side:  # the boxes run side by side, then add up in order
        parts = np.zeros((n_samples * n_boxes, n_rows, n_columns))
        for task in prange(n_samples * n_boxes):
            sample, box = task // n_boxes, task % n_boxes
            combined, partial = np.empty(largest_grid), np.empty(largest_partial)
            _add_box(sources[sample], 0, offsets, boxes[box], terms, maps, indptr, indices, combined, partial,
                     parts[task])  # fmt: skip
        for sample in prange(n_samples):
            for box in range(n_boxes):
                out[sample, 0] += parts[sample * n_boxes + box]
        return
    for task in prange(n_samples * n_channels):
        sample, channel = task // n_channels, task % n_channels
        combined, partial = np.empty(largest_grid), np.empty(largest_partial)
        for box in range(n_boxes):
            _add_box(sources[sample], channel, offsets, boxes[box], terms, maps, indptr, indices, combined,
                     partial, out[sample, channel])  # fmt: skip


@numba.njit(cache=True)
def _add_box(
    sources, channel, offsets, box, terms, maps, indptr, indices, combined, partial, out
):  # pragma: no cover - compiled
    """One box of :func:`_box_sums` on one sample's ``sources`` and ``channel``, added to ``out``."""
    n_rows, n_columns = out.shape
    first, end, width = box[0], box[1], box[3]
    size = box[2] * width
    row_start, n_targets = maps[box[4], 0], maps[box[4], 1]
    column_start, n_target_columns = maps[box[5], 0], maps[box[5], 1]
    offset, sign = offsets[terms[first, 0]] + channel * size, terms[first, 1]
    for position in range(size):
        combined[position] = sign * sources[offset + position]
    for term in range(first + 1, end):
        offset, sign = offsets[terms[term, 0]] + channel * size, terms[term, 1]
        for position in range(size):
            combined[position] += sign * sources[offset + position]
    partial[: n_targets * width] = 0.0
    for target in range(n_targets):
        row = target * width
        for entry in range(indptr[row_start + target], indptr[row_start + target + 1]):
            source_row = indices[entry] * width
            for column in range(width):
                partial[row + column] += combined[source_row + column]
    for target in range(n_targets):
        rows = (0, n_rows) if n_targets == 1 else (target, target + 1)
        for target_column in range(n_target_columns):
            total = 0.0
            pointer = column_start + target_column
            for entry in range(indptr[pointer], indptr[pointer + 1]):
                total += partial[target * width + indices[entry]]
            columns = (0, n_columns) if n_target_columns == 1 else (target_column, target_column + 1)
            for row in range(rows[0], rows[1]):  # a map with one target broadcasts
                for column in range(columns[0], columns[1]):
                    out[row, column] += total


_box_sums_kernel = _Kernel(
    _box_sums,
    _arrays(types.float64, 2),
    _arrays(types.int64, 1),
    *(_arrays(types.int64, 2),) * 3,
    *(_arrays(types.int64, 1),) * 2,
    types.boolean,
    _OUT,
)


def box_sums(sources, offsets, boxes, terms, maps, indptr, indices, out) -> None:
    """:func:`_box_sums`, the boxes of channel sums side by side when the samples are too few to share out."""
    side_by_side = out.shape[1] == 1 and len(boxes) > 1 and out.shape[0] < numba.get_num_threads()
    _box_sums_kernel(sources, offsets, boxes, terms, maps, indptr, indices, side_by_side, out)


def set_threads(threads: int | None) -> None:
    """Run the kernels of the calling thread on at most ``threads`` threads (``None``: every core).

    A workflow job sets its rule's ``threads``, so parallel jobs do not oversubscribe the cores.
    """
    available = numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(available if threads is None else max(1, min(int(threads), available)))
