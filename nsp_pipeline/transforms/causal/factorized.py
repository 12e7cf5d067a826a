"""The factorised causal operator: per-layer ancestor relations, applied without torch.

Built by :func:`nsp_pipeline.transforms.causal.builder.factorized_operator` from a trace; stored and read by
:mod:`nsp_pipeline.io.hdf5`, so that per-sample transform jobs need neither torch nor the model.

Applying it is one sweep over the layers in order. A neuron with one parent per input position (ReLU,
batch norm, reshapes, concatenation) needs only its parent's activation; any other neuron ``v`` of a
layer ``l`` needs ``Σ ŝ_u`` over its strict ancestors, which in each earlier layer ``m`` form a union of
boxes ``channels × rows × columns``. The sweep is compiled once per operator (:class:`_Plan`):

- every union is expanded by inclusion–exclusion into signed boxes, once;
- boxes of equal shape and equal grids are applied once to the sum of their source layers (in a
  ResNet at ``ops`` granularity, a convolution, its batch norm and its ReLU share every box);
- a box over all channels is applied to the source's channel sums (computed once per source layer),
  so it costs ``O(rows × columns)`` and is broadcast over the target's channels once;
- a layer's boxes are applied in one compiled call (:func:`.kernels.box_sums`: sources combined, then
  summed over rows, then over columns, per sample and channel, threaded), and the layer is finished in
  one more (:func:`.kernels.finish`: ``ŝ = s − sums`` and its channel sums in one pass). Only boxes
  whose channel map is not the identity (grouped convolutions) use NumPy (:meth:`_Box.apply`), as does
  the exact sweep on integer limbs.

The per-layer precision diagnostics (:mod:`nsp_pipeline.transforms.causal.precision`) are computed in the
same sweep (:meth:`FactorizedCausalOperator.spectrum_with_precision`): the magnitudes ``|ŝ|`` ride along
the signed values as extra samples, so no second sweep and no ``(n_samples, n_nodes)`` scale array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from itertools import combinations
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from nsp_pipeline.core.layout import Layout
from nsp_pipeline.graph.kronecker import AxisMap, Relation, Term
from nsp_pipeline.transforms.causal import kernels
from nsp_pipeline.transforms.causal.limbs import (
    LimbValues,
    limb_width,
    lowest_exponent,
    normalise,
    padded_sum,
    split,
)
from nsp_pipeline.transforms.causal.precision import EPSILON, estimated_digits, precision_from_counts

#: A layer as a 3-axis grid (channels, rows, columns) whose C order is the node order.
Grid = tuple[int, int, int]

#: Windows with more taps than this are applied as a dense matrix product instead of slice additions.
MAX_WINDOW_TAPS = 16

#: Per-axis maps up to this many entries (target × source positions) may be applied as dense products.
MAX_DENSE_ENTRIES = 4_000_000


@dataclass(frozen=True)
class FactorizedCausalOperator:
    """The causal transform as per-layer ancestor relations in factorised form.

    Parameters
    ----------
    layout : Layout
        Node order.
    grids : list of (int, int, int)
        Each layer's 3-axis grid (its C order is the layer's node order).
    ancestors : list of dict of int to Relation
        For each layer, its strict ancestors in every earlier layer.
    single_parents : list of dict of int to Relation or None
        For layers whose every neuron has exactly one parent (elementwise, reshapes, nearest
        upsampling, concatenation): the parent relations. There the ancestor sum of ``v`` is
        simply its parent's activation, which avoids cancelling the large ancestor sums.
    """

    layout: Layout
    grids: list[Grid]
    ancestors: list[dict[int, Relation]]
    single_parents: list[dict[int, Relation] | None]

    transform_type: ClassVar[str] = "standard"

    @property
    def n_terms(self) -> int:
        """Number of per-axis product terms over all layer pairs."""
        return sum(len(r.terms) for layer in self.ancestors for r in layer.values())

    @cached_property
    def _plan(self) -> _Plan:
        return _Plan.compile(self)

    def forward(self, signal: np.ndarray) -> np.ndarray:
        """Spectrum ``ŝ = Z⁻¹ s`` of ``(n_samples, n_nodes)`` signals."""
        signal = self._batch(signal)
        spectrum = np.empty_like(signal)
        self._plan.sweep(self, "forward", signal, spectrum)
        return spectrum

    def inverse(self, spectrum: np.ndarray) -> np.ndarray:
        """Signal ``s = Z ŝ`` of ``(n_samples, n_nodes)`` spectra."""
        spectrum = self._batch(spectrum)
        signal = np.empty_like(spectrum)
        self._plan.sweep(self, "inverse", signal, spectrum)
        return signal

    def rounding_scale(self, signal: np.ndarray, spectrum: np.ndarray) -> np.ndarray:
        """Magnitude of the terms summed for each coefficient (its rounding error over ε).

        ``|ŝ_v| + |s_p|`` where ``v`` reads one parent ``p`` position by position, else
        ``|ŝ_v| + Σ_{u<v} |ŝ_u| = (Z|ŝ|)_v``.
        """
        signal, spectrum = np.abs(self._batch(signal)), np.abs(self._batch(spectrum))
        scale = np.empty_like(spectrum)
        self._plan.sweep(self, "scale", signal, spectrum, out=scale)
        return scale

    def spectrum_with_precision(self, signal: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Spectrum and its per-layer precision in one sweep.

        Returns
        -------
        spectrum, digits, below_noise : numpy.ndarray
            As :meth:`forward` and :func:`~nsp_pipeline.transforms.causal.precision.precision_table`
            with :meth:`rounding_scale` (``(n_samples, n_layers)`` each).
        """
        return self.spectrum_with_estimates(signal)[:3]

    def spectrum_with_estimates(self, signal: np.ndarray) -> tuple[np.ndarray, ...]:
        """Spectrum, its round-trip precision and the estimated correct digits of its coefficients.

        Returns
        -------
        spectrum, digits, below_noise, estimated : numpy.ndarray
            As :meth:`spectrum_with_precision`, and ``(n_samples, n_layers)`` estimated correct
            significant digits of each layer's coefficients
            (:func:`~nsp_pipeline.transforms.causal.precision.estimated_digits`).
        """
        signal = self._batch(signal)
        spectrum = np.empty_like(signal)
        digits, below_noise, conditioning = self._plan.sweep(
            self, "forward", signal, spectrum, precision=True
        )
        return spectrum, digits, below_noise, estimated_digits(conditioning, self.error_structure())

    def error_structure(self) -> list[tuple[list[int], int] | None]:
        """How rounding errors reach each layer (:func:`.precision.estimated_digits`).

        ``None`` for layers read from the activations (the input, single-parent layers), else the
        ancestor layers and the most terms one ancestor sum adds.
        """
        return [
            None
            if index == 0 or self.single_parents[index] is not None
            else (sorted(ancestors), plan.max_terms)
            for index, (ancestors, plan) in enumerate(zip(self.ancestors, self._plan.layers))
        ]

    @property
    def limb_width(self) -> int:
        """Bits per limb of the exact sweep: sums of the most terms any layer forms stay below 2**53."""
        return limb_width(max(plan.max_terms for plan in self._plan.layers))

    def exact_forward(self, signal: np.ndarray, stop: int | None = None) -> LimbValues:
        """The spectrum ``ŝ = Z⁻¹ s`` in exact integer arithmetic (:mod:`.limbs`).

        Parameters
        ----------
        signal : numpy.ndarray
            ``(n_samples, n_nodes)`` finite activations.
        stop : int, optional
            Compute layers ``0 … stop − 1`` only (the returned values hold those layers).
        """
        signal = self._batch(signal)
        layers = self._layer_grids(signal)[:stop]
        exponent, width = (
            lowest_exponent(signal[:, : self.layout.slice(len(layers) - 1).stop]),
            self.limb_width,
        )
        given = [split(layer, exponent, width) for layer in layers]
        return self._limb_values(self._plan.limb_sweep("forward", given, width), exponent, width)

    def exact_inverse(self, spectrum: LimbValues) -> LimbValues:
        """The signal ``s = Z ŝ`` of an exact spectrum, exactly."""
        if spectrum.layout != self.layout or spectrum.width != self.limb_width:
            raise ValueError(
                "the exact spectrum was computed by another operator (layout or limb width differ)"
            )
        given = [
            limbs.reshape(*limbs.shape[:2], *plan.grid)
            for limbs, plan in zip(spectrum.layers, self._plan.layers)
        ]
        result = self._plan.limb_sweep("inverse", given, spectrum.width)
        return self._limb_values(result, spectrum.exponent, spectrum.width)

    def _layer_grids(self, values: np.ndarray) -> list[np.ndarray]:
        return _grid_view(values, self.layout, self._plan.layers)

    def _limb_values(self, layers: list[np.ndarray], exponent: int, width: int) -> LimbValues:
        flat = [limbs.reshape(*limbs.shape[:2], -1) for limbs in layers]
        return LimbValues(self.layout, flat, exponent, width)

    def _batch(self, values: np.ndarray) -> np.ndarray:
        values = np.atleast_2d(np.asarray(values, dtype=np.float64))
        if values.ndim != 2 or values.shape[1] != self.layout.n_nodes:
            n_nodes = self.layout.n_nodes
            raise ValueError(f"expected values of shape (n_samples, {n_nodes}), got {values.shape}")
        return values


# ---------------------------------------------------------------------------------------------
# The compiled sweep


def _axis_key(axis: AxisMap) -> tuple:
    """A hashable description of a per-axis map (equal keys: equal maps)."""
    if axis.is_identity:
        return ("identity", axis.shape)
    if axis.outer is not None:
        rows, columns = (np.packbits(mask).tobytes() for mask in axis.outer)
        return ("outer", axis.shape, rows, columns)
    return ("matrix", axis.shape, axis.matrix.indptr.tobytes(), axis.matrix.indices.tobytes())


def _window(axis: AxisMap) -> tuple[int, np.ndarray] | None:
    """``(stride, offsets)`` if target ``i`` reads sources ``stride·i + offsets`` (clipped), else None."""
    if axis.matrix is None:
        return None
    indptr, indices = axis.matrix.indptr, axis.matrix.indices
    n_out, n_in = axis.shape
    counts = np.diff(indptr)
    widest = int(np.argmax(counts))
    if counts[widest] == 0 or counts[widest] > MAX_WINDOW_TAPS:
        return None
    if n_out == 1:
        stride = 1
    else:
        neighbour = widest + 1 if widest + 1 < n_out and counts[widest + 1] == counts[widest] else widest - 1
        if neighbour < 0 or counts[neighbour] != counts[widest]:
            return None
        low, high = sorted((widest, neighbour))
        stride = int(indices[indptr[high]] - indices[indptr[low]])
        if stride <= 0:
            return None
    offsets = indices[indptr[widest] : indptr[widest + 1]].astype(np.int64) - stride * widest
    columns = stride * np.arange(n_out)[:, None] + offsets[None, :]
    inside = (columns >= 0) & (columns < n_in)
    if np.array_equal(inside.sum(axis=1), counts) and np.array_equal(columns[inside], indices):
        return stride, offsets
    return None


class _Axis:
    """A per-axis map compiled for one axis of ``(batch, channels, rows, columns)`` arrays.

    ``identity`` (nothing to do), ``ones`` (a sum, kept as a size-1 axis that later broadcasts),
    ``window`` (strided slice additions), ``dense`` (a matrix product) or ``sparse`` (the map's own
    :meth:`~nsp_pipeline.graph.kronecker.AxisMap.apply`).
    """

    __slots__ = ("axis", "kind", "map", "matrix", "size", "slices", "taps")

    def __init__(self, axis_map: AxisMap, axis: int) -> None:
        self.map, self.axis, self.size = axis_map, axis, axis_map.shape[0]
        self.taps = _row_count(axis_map)
        self.matrix, self.slices = None, []
        if axis_map.is_identity:
            self.kind = "identity"
        elif axis_map.is_ones:
            self.kind = "ones"
        elif (window := _window(axis_map)) is not None:
            self.kind = "window"
            self.slices = _window_slices(*window, *axis_map.shape)
        elif axis != 1 and axis_map.matrix is not None and np.prod(axis_map.shape) <= MAX_DENSE_ENTRIES:
            matrix = axis_map.matrix.toarray()
            self.kind, self.matrix = "dense", matrix if axis == 2 else np.ascontiguousarray(matrix.T).T
        else:
            self.kind = "sparse"

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Sum ``values`` over the related source positions along this axis."""
        if self.kind == "identity":
            return values
        if self.kind == "ones":
            return values.sum(axis=self.axis, keepdims=True)
        if self.kind == "dense":  # rows (axis 2) or columns (axis 3) of (batch, channels, rows, columns)
            return np.matmul(self.matrix, values) if self.axis == 2 else np.matmul(values, self.matrix.T)
        if self.kind == "sparse":
            return self.map.apply(values, self.axis)
        shape = list(values.shape)
        shape[self.axis] = self.size
        out = np.zeros(shape)
        prefix = (slice(None),) * self.axis
        for target, source in self.slices:
            part = out[(*prefix, target)]
            np.add(part, values[(*prefix, source)], out=part)
        return out


def _window_slices(stride: int, offsets: np.ndarray, n_out: int, n_in: int) -> list[tuple[slice, slice]]:
    """Per offset ``o``: the targets ``i`` with ``0 <= stride·i + o < n_in`` and their sources."""
    slices = []
    for offset in offsets.tolist():
        first = max(0, -(offset // stride) if offset < 0 else 0)
        while stride * first + offset < 0:
            first += 1
        last = min(n_out - 1, (n_in - 1 - offset) // stride)
        if first <= last:
            source = slice(stride * first + offset, stride * last + offset + 1, stride)
            slices.append((slice(first, last + 1), source))
    return slices


@dataclass
class _Box:
    """One signed box of ancestors, applied to the (signed) sum of its source layers."""

    sources: list[tuple[int, float]]
    all_channels: bool
    axes: list[_Axis]
    source_grid: Grid

    @property
    def axes_by_number(self) -> dict[int, AxisMap]:
        """The per-axis maps by axis of ``(batch, channels, rows, columns)`` (no channels if summed)."""
        return {axis.axis: axis.map for axis in self.axes}

    def max_terms(self, grids: list[Grid]) -> int:
        """Bound on the terms summed per target (source positions times sources)."""
        per_source = math.prod(axis.taps for axis in self.axes)
        return sum(per_source * (grids[m][0] if self.all_channels else 1) for m, _ in self.sources)

    def apply(self, full: list[np.ndarray | None], totals: dict[int, np.ndarray]) -> np.ndarray:
        """The box sums of one target layer, ``(batch, C or 1, H, W)`` (size-1 axes broadcast)."""
        arrays = [totals[m] if self.all_channels else full[m] for m, _ in self.sources]
        first_sign, rest = self.sources[0][1], self.sources[1:]
        values = arrays[0] if first_sign > 0 and not rest else arrays[0] * first_sign
        if rest:
            values = values.copy() if values is arrays[0] else values
            for (_, sign), array in zip(rest, arrays[1:]):
                (np.add if sign > 0 else np.subtract)(values, array, out=values)
        for axis in self.axes:
            values = axis.apply(values)
        return values


@dataclass
class _LayerPlan:
    """How one layer's sums are formed: from its parents' signal, or from its ancestors' spectrum."""

    grid: Grid
    parents: list[tuple[int, Relation | None]] | None = None
    boxes: list[_Box] = field(default_factory=list)
    max_terms: int = 1
    summed_boxes: _CompiledBoxes | None = None
    channel_boxes: _CompiledBoxes | None = None
    other_boxes: list[_Box] = field(default_factory=list)


@dataclass
class _Plan:
    """The compiled sweep of a :class:`FactorizedCausalOperator` (built once, on first use)."""

    layers: list[_LayerPlan]
    summed_sources: set[int]
    full_sources: set[int]
    offsets: dict[str, np.ndarray] = field(default_factory=dict)
    lengths: dict[str, int] = field(default_factory=dict)

    @classmethod
    def compile(cls, operator: FactorizedCausalOperator) -> _Plan:
        layers: list[_LayerPlan] = []
        summed: set[int] = set()
        full: set[int] = set()
        maps = _Maps()
        for index, grid in enumerate(operator.grids):
            plan = _LayerPlan(tuple(grid))
            parents = operator.single_parents[index]
            if parents is not None:
                plan.parents = [(p, _parent_map(r, operator.grids[p], grid)) for p, r in parents.items()]
                plan.max_terms += sum(_relation_terms(r) for r in parents.values())
            elif index > 0:
                plan.boxes = _boxes(operator, index, maps)
                for box in plan.boxes:
                    (summed if box.all_channels else full).update(m for m, _ in box.sources)
                    plan.max_terms += box.max_terms(operator.grids)
            layers.append(plan)
        for plan in layers:
            by_channel = [box for box in plan.boxes if not box.all_channels]
            plan.other_boxes = [box for box in by_channel if not box.axes_by_number[1].is_identity]
            plan.summed_boxes = _CompiledBoxes.compile([box for box in plan.boxes if box.all_channels])
            plan.channel_boxes = _CompiledBoxes.compile([b for b in by_channel if b not in plan.other_boxes])
        sizes = [int(np.prod(grid)) for grid in operator.grids]
        offsets = {
            "summed": _offsets(
                [int(np.prod(grid[1:])) if m in summed else 0 for m, grid in enumerate(operator.grids)]
            ),
            "full": _offsets([size if m in full else 0 for m, size in enumerate(sizes)]),
            "layout": _offsets(sizes),
        }
        return cls(
            layers,
            summed,
            full,
            {k: v[:-1] for k, v in offsets.items()},
            {k: int(v[-1]) for k, v in offsets.items()},
        )

    def limb_sweep(self, mode: str, given: list[np.ndarray], width: int) -> list[np.ndarray]:
        """The sweep on exact integer limbs (:mod:`nsp_pipeline.transforms.causal.limbs`).

        ``given`` holds per layer the ``(K, n_samples, *grid)`` limbs of the signal (``forward``) or
        of the spectrum (``inverse``) of the first ``len(given)`` layers; returns the other,
        normalised, for the same layers.
        """
        result: list[np.ndarray | None] = [None] * len(given)
        spectrum, signal = (result, given) if mode == "forward" else (given, result)
        totals: dict[int, np.ndarray] = {}
        for index, plan in enumerate(self.layers[: len(given)]):
            parts = [(1.0, given[index])]
            sign = -1.0 if mode == "forward" else 1.0
            if plan.parents is not None:
                parts += [(sign, _map_limbs(mapping, signal[p])) for p, mapping in plan.parents]
            else:
                parts += [(sign, _limb_box(box, spectrum, totals)) for box in plan.boxes]
            total = padded_sum(parts)
            result[index] = normalise(total.copy() if total is given[index] else total, width)
            if index in self.summed_sources:
                totals[index] = spectrum[index].sum(axis=2, keepdims=True)
        return result

    def sweep(
        self,
        operator: FactorizedCausalOperator,
        mode: str,
        signal: np.ndarray,
        spectrum: np.ndarray,
        out: np.ndarray | None = None,
        precision: bool = False,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Fill layer by layer ``spectrum`` (``forward``), ``signal`` (``inverse``) or ``out`` (``scale``).

        ``scale`` takes magnitudes ``|s|``, ``|ŝ|`` and writes ``|ŝ_v| + sums``. With ``precision``
        (``forward`` only), the magnitudes ride along as samples ``n..2n`` of every ancestor sum and
        the per-layer digits and share below noise are returned.
        """
        n_samples, layout = signal.shape[0], operator.layout
        result = {"forward": spectrum, "inverse": signal, "scale": out}[mode]
        grids = [_grid_view(array, layout, self.layers) for array in (signal, spectrum, result)]
        signal_grid, spectrum_grid, result_grid = grids
        n_rows = n_samples * (2 if precision else 1)  # with precision, |ŝ| rides along as samples n..2n
        summed = np.zeros((n_rows, self.lengths["summed"]))
        totals = {m: self._view(summed, "summed", m, channels=1) for m in self.summed_sources}
        if precision:
            stacked = np.empty((n_rows, self.lengths["full"]))
            full = [
                self._view(stacked, "full", m) if m in self.full_sources else None for m in range(len(layout))
            ]
            sources = (stacked, self.offsets["full"])
        else:
            full = [spectrum_grid[m] if m in self.full_sources else None for m in range(len(layout))]
            sources = (spectrum, self.offsets["layout"])
        digits, below_noise, conditioning = (np.empty((n_samples, len(layout))) for _ in range(3))
        for index, plan in enumerate(self.layers):
            sums = magnitudes = None  # the input layer has no ancestors
            if plan.parents is not None:
                sums, magnitudes = self._parent_sums(plan, signal_grid, precision)
            elif index > 0:
                sums = self._box_sums(plan, full, totals, (summed, self.offsets["summed"]), sources)
                if precision:
                    sums, magnitudes = sums[:n_samples], sums[n_samples:]
            if precision:
                digits[:, index], below_noise[:, index], conditioning[:, index] = self._finish_with_precision(
                    index, signal_grid[index], sums, magnitudes, spectrum_grid[index], full, totals
                )
                continue
            base = spectrum_grid[index] if mode != "forward" else signal_grid[index]
            kernels.finish(
                base,
                _broadcast(sums, base.shape),
                -1.0 if mode == "forward" else 1.0,
                result_grid[index],
                (1 if mode == "forward" else 2) if index in totals else 0,
                totals.get(index, _NOTHING),
            )
        return (digits, below_noise, conditioning) if precision else None

    def _finish_with_precision(
        self,
        index: int,
        signal: np.ndarray,
        sums: np.ndarray | None,
        magnitudes: np.ndarray | None,
        spectrum: np.ndarray,
        full: list[np.ndarray | None],
        totals: dict[int, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``ŝ = s − sums``, the layer's precision and conditioning (:func:`.kernels.finish_with_precision`).

        The conditioning is ``max (Z|ŝ|)_v / |ŝ_v|`` over the non-zero coefficients (1 if none).
        """
        peak, largest, nonzero, below, conditioning, total = kernels.finish_with_precision(
            signal,
            _broadcast(sums, signal.shape),
            _broadcast(magnitudes, signal.shape),
            spectrum,
            index in self.full_sources,
            full[index] if index in self.full_sources else _NOTHING,
            index in self.summed_sources,
            totals.get(index, _NOTHING),
            EPSILON,
        )
        peak = np.where(np.isfinite(total.sum(axis=1)), peak.max(axis=1), np.nan)  # NaN in, NaN digits out
        digits, below_noise = precision_from_counts(
            peak, largest.max(axis=1), nonzero.sum(axis=1), below.sum(axis=1)
        )
        return digits, below_noise, np.maximum(conditioning.max(axis=1), 1.0)

    @staticmethod
    def _parent_sums(
        plan: _LayerPlan, signal_grid: list[np.ndarray], precision: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Sum of the parents' signal at each position, and what stands for its magnitude.

        Every position reads exactly one parent position, so the sum's absolute value is the sum of
        the magnitudes: the sum itself stands for both (the kernels take absolute values).
        """
        sums = None
        for parent, mapping in plan.parents:
            mapped = _map_parent(mapping, signal_grid[parent])
            sums = mapped if sums is None else sums + mapped
        return sums, sums if precision else None

    def _view(self, buffer: np.ndarray, kind: str, layer: int, channels: int | None = None) -> np.ndarray:
        """Layer ``layer``'s ``(rows, channels, height, width)`` part of a buffer of ``kind`` offsets."""
        n_channels, height, width = self.layers[layer].grid
        channels = n_channels if channels is None else channels
        start = self.offsets[kind][layer]
        part = buffer[:, start : start + channels * height * width]
        return part.reshape(buffer.shape[0], channels, height, width)

    @staticmethod
    def _box_sums(
        plan: _LayerPlan,
        full: list[np.ndarray | None],
        totals: dict[int, np.ndarray],
        summed: tuple[np.ndarray, np.ndarray],
        sources: tuple[np.ndarray, np.ndarray],
    ) -> np.ndarray:
        """``Σ_{u<v} ŝ_u`` for every neuron of one layer (stacked with ``Σ |ŝ_u|`` for precision).

        ``summed`` and ``sources`` are buffers holding the earlier layers' channel sums and their
        spectra side by side, with each layer's offset (``totals`` and ``full`` are their views).
        """
        n_rows, (n_channels, height, width) = summed[0].shape[0], plan.grid
        channel_sums = per_channel = None
        if plan.summed_boxes is not None:
            channel_sums = np.zeros((n_rows, 1, height, width))
            plan.summed_boxes.apply(*summed, channel_sums)
        if plan.channel_boxes is not None:
            per_channel = np.zeros((n_rows, n_channels, height, width))
            plan.channel_boxes.apply(*sources, per_channel)
        for box in plan.other_boxes:
            part = box.apply(full, totals)
            per_channel = part if per_channel is None else np.add(per_channel, part)
        if per_channel is None:
            return np.zeros((n_rows, 1, 1, 1)) if channel_sums is None else channel_sums
        return per_channel if channel_sums is None else np.add(per_channel, channel_sums)


def _offsets(sizes: list[int]) -> np.ndarray:
    """Start of each part of sizes ``sizes`` laid side by side, and the total (last entry)."""
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


@dataclass
class _CompiledBoxes:
    """Boxes compiled for :func:`.kernels.box_sums`: each reads one source channel (or channel sums)."""

    boxes: np.ndarray
    terms: np.ndarray
    maps: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray

    @classmethod
    def compile(cls, boxes: list[_Box]) -> _CompiledBoxes | None:
        """The boxes' sources, signs and row and column maps (``None`` without boxes)."""
        if not boxes:
            return None
        numbers: dict[tuple, int] = {}
        table, indptr, indices = [], [np.zeros(1, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        n_pointers = n_entries = 0

        def map_number(axis: AxisMap) -> int:
            nonlocal n_pointers, n_entries
            key = _axis_key(axis)
            if key not in numbers:
                matrix = sp.csr_array(np.ones((1, axis.shape[1]))) if axis.is_ones else axis.sparse()
                numbers[key] = len(table)
                table.append((n_pointers, matrix.shape[0]))
                indptr.append(matrix.indptr[1:].astype(np.int64) + n_entries)
                indices.append(matrix.indices.astype(np.int64))
                n_pointers, n_entries = n_pointers + matrix.shape[0], n_entries + matrix.nnz
            return numbers[key]

        rows, terms = [], []
        for box in boxes:
            _, height, width = box.source_grid
            maps = box.axes_by_number
            rows.append((len(terms), len(terms) + len(box.sources), height, width, map_number(maps[2]),
                         map_number(maps[3])))  # fmt: skip
            terms += [(source, int(sign)) for source, sign in box.sources]
        return cls(
            np.array(rows, dtype=np.int64),
            np.array(terms, dtype=np.int64),
            np.array(table, dtype=np.int64),
            np.concatenate(indptr),
            np.concatenate(indices),
        )

    def apply(self, sources: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:
        """Add the box sums of the layers in ``sources`` (at ``offsets``) to ``out``."""
        kernels.box_sums(sources, offsets, self.boxes, self.terms, self.maps, self.indptr, self.indices, out)


def _map_limbs(mapping: Relation | None, limbs: np.ndarray) -> np.ndarray:
    """A parent map applied to each limb (the limbs ride along the batch axis)."""
    if mapping is None:
        return limbs
    mapped = mapping.apply(limbs.reshape(-1, *limbs.shape[2:]))
    return mapped.reshape(limbs.shape[0], limbs.shape[1], *mapped.shape[1:])


def _limb_box(box: _Box, spectrum: list[np.ndarray], totals: dict[int, np.ndarray]) -> np.ndarray:
    """One box's sums on limbs ``(K, n_samples, C or 1, H, W)``: its sources added, then its axes."""
    arrays = totals if box.all_channels else spectrum
    values = padded_sum([(sign, arrays[m]) for m, sign in box.sources])
    n_limbs, n_samples = values.shape[:2]
    values = values.reshape(n_limbs * n_samples, *values.shape[2:])
    for axis in box.axes:
        values = axis.apply(values)
    return values.reshape(n_limbs, n_samples, *values.shape[1:])


def _row_count(axis: AxisMap) -> int:
    """The most source positions one target position reads along an axis."""
    if axis.is_identity:
        return 1
    if axis.outer is not None:
        return int(axis.outer[1].sum())
    return int(np.diff(axis.matrix.indptr).max(initial=0))


def _relation_terms(relation: Relation) -> int:
    """Bound on the terms summed per target by :meth:`Relation.apply` (inclusion–exclusion included)."""
    return sum(int(np.prod([_row_count(a) for a in term.axes])) for _, term in _signed_terms(relation))


def _grid_view(values: np.ndarray | None, layout: Layout, layers: list[_LayerPlan]) -> list:
    if values is None:
        return [None] * len(layers)
    n_samples = values.shape[0]
    return [values[:, layout.slice(i)].reshape(n_samples, *plan.grid) for i, plan in enumerate(layers)]


def _parent_map(relation: Relation, parent_grid: Grid, grid: Grid) -> Relation | None:
    """``None`` where the parent is read position by position (the identity on equal grids)."""
    (term,) = relation.terms if len(relation.terms) == 1 else (None,)
    if term is not None and tuple(parent_grid) == tuple(grid) and all(a.is_identity for a in term.axes):
        return None
    return relation


def _map_parent(mapping, values: np.ndarray) -> np.ndarray:
    return values if mapping is None else mapping.apply(values)


#: Stands for an array a kernel does not use.
_NOTHING = np.zeros((1, 1, 1, 1))


def _broadcast(values: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """``values`` (``None``: zeros) as a read-only view of ``shape`` (size-1 axes repeated)."""
    return np.broadcast_to(_NOTHING if values is None else values, shape)


def _signed_terms(relation: Relation) -> list[tuple[float, Term]]:
    """Inclusion–exclusion: signed intersections whose sum counts each related pair once."""
    signed = []
    for size in range(1, len(relation.terms) + 1):
        for subset in combinations(relation.terms, size):
            term = subset[0]
            for other in subset[1:]:
                term = term.intersect(other)
            if not term.is_empty:
                signed.append((1.0 if size % 2 else -1.0, term))
    return signed


class _Maps:
    """The per-axis maps met while compiling one plan, each one's key and compiled forms made once."""

    def __init__(self) -> None:
        self._keys: dict[int, tuple] = {}
        self._compiled: dict[tuple[int, int], _Axis] = {}
        self._seen: list[AxisMap] = []  # keeps every map alive, so that its id stays its own

    def key(self, axis: AxisMap) -> tuple:
        """:func:`_axis_key` of ``axis``."""
        key = self._keys.get(id(axis))
        if key is None:
            self._seen.append(axis)
            key = self._keys[id(axis)] = _axis_key(axis)
        return key

    def compiled(self, axis: AxisMap, number: int) -> _Axis:
        """``axis`` compiled for axis ``number`` of ``(batch, channels, rows, columns)`` arrays."""
        compiled = self._compiled.get((id(axis), number))
        if compiled is None:
            self._seen.append(axis)
            compiled = self._compiled[id(axis), number] = _Axis(axis, number)
        return compiled


def _boxes(operator: FactorizedCausalOperator, index: int, maps: _Maps) -> list[_Box]:
    """The signed boxes of one layer, those of equal shape on equal grids merged."""
    merged: dict[tuple, _Box] = {}
    for source, relation in sorted(operator.ancestors[index].items()):
        for sign, term in _signed_terms(relation):
            key = (tuple(operator.grids[source]), *(maps.key(axis) for axis in term.axes))
            box = merged.get(key)
            if box is None:
                all_channels = term.channels.is_ones
                axes = [maps.compiled(a, k + 1) for k, a in enumerate(term.axes) if k or not all_channels]
                merged[key] = _Box(
                    [(source, sign)], all_channels, _cheapest_first(axes), tuple(operator.grids[source])
                )
            else:
                box.sources.append((source, sign))
    return list(merged.values())


def _cheapest_first(axes: list[_Axis]) -> list[_Axis]:
    """Apply the axes that shrink the data most first (stable otherwise)."""
    return sorted(axes, key=lambda axis: axis.size / max(axis.map.shape[1], 1))
