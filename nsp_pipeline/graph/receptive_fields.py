"""Exact theoretical receptive fields of every neuron of a network.

The receptive field of a neuron ``v`` is the set of input-layer (layer 0) neurons among its
ancestors in the neuron DAG with every structural edge (``incl=True``). For convolution,
pooling, elementwise, reshape and linear layers the ancestors of ``v`` in the input layer form
a union of per-axis products ``channels × rows × columns``: the factorised ancestor relations
of :mod:`nsp_pipeline.graph.kronecker`, composed layer by layer along the DAG from each
operation's own relation (``op_relations`` of :mod:`nsp_pipeline.graph.relations`).
So a neuron's field, its mask and its bounding box are read off a few small per-axis 0/1 maps,
and the bounding boxes of all neurons of a layer are per-axis vectors, never an
``n × n_input`` matrix.

Everything here is exact: dilation holes, padding clipped at the borders (or reflected,
replicated, wrapped for other padding modes), strides, grouped convolutions and
concatenations (a neuron's field may depend on its channel), residual additions (the union of
the branches), average and adaptive pooling, flatten and linear layers (a linear neuron sees
everything its inputs see). Compared with dnnbrain's ``TheoreticalReceptiveField`` (Chen et
al., *DNNBrain*, Front. Comput. Neurosci. 2020), which needs a ``model.features`` chain of
square, undilated kernels, rejects ``AvgPool`` and ``Dropout`` and treats ResNet blocks as
identity, any model :func:`~nsp_pipeline.model.capture.trace` records works, and every
neuron gets its exact set, not only a box. Channels, rows, columns and units are 0-based
(dnnbrain's are 1-based); ranges are ``(start, stop)``, inclusive–exclusive.

Two kinds of numbers are reported per layer (:class:`LayerReceptiveField`):

*clipped*
    from the exact sets: the bounding box of a neuron's field inside the input (``size`` of
    the central position, ``max_size``, ``clipped_offset`` of unit 0).
*unclipped*
    dnnbrain's ``rf_size``, ``jump`` and ``start`` (Dumoulin & Visin, *A guide to convolution
    arithmetic for deep learning*, 2016; Araujo et al., *Computing receptive fields of
    convolutional neural networks*, Distill 2019), exact for any DAG: along each spatial axis,
    unit ``o`` reads input positions ``offset + o · stride + taps`` before any clipping, where
    ``taps`` composes (sumset) along each path and unites over branches of equal stride. Taken
    from each operation's window geometry (kernel, stride, padding, dilation), not from the
    clipped maps, which cannot show what the borders cut off. ``offset`` is the start of unit
    0's unclipped window (dnnbrain's ``start`` is its centre, ``offset + (size − 1) / 2``).
    Undefined (``None``) once an axis is mixed by anything but a uniform window: linear layers,
    adaptive pooling with uneven bins, interpolation, branches of unequal strides. Adaptive
    pooling with even bins is the window it computes at this input size (global pooling: one
    window over all units), and a linear layer on a 1×1 grid (after global pooling) mixes
    channels only, so it keeps the geometry.

The clipped summaries take a spatial position's box as the union over the layer's channels
(one box unless the field depends on the channel); ``size`` is that of position
``(H // 2, W // 2)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from nsp_pipeline.core.layout import Layout
from nsp_pipeline.graph.kronecker import AxisMap, Relation, Term

if TYPE_CHECKING:
    import torch
    from torch import nn

    from nsp_pipeline.model.records import Trace
    from nsp_pipeline.transforms.causal.factorized import FactorizedCausalOperator

#: A layer as a 3-axis grid (channels, rows, columns) whose C order is the node order.
Grid = tuple[int, int, int]
#: ``(start, stop)`` along one axis, inclusive–exclusive.
Range = tuple[int, int]
#: ``(channel range, row range, column range)``.
Box = tuple[Range, Range, Range]

_AXIS_SHAPES = ((-1, 1, 1), (1, -1, 1), (1, 1, -1))
_EMPTY_BOX: Box = ((0, 0), (0, 0), (0, 0))


@dataclass(frozen=True)
class AxisGeometry:
    """Unclipped window along one spatial axis: unit ``o`` reads ``offset + o · jump + taps``.

    Parameters
    ----------
    jump : int
        Distance, in input positions, between the windows of neighbouring units (the stride).
    offset : int
        Start of unit 0's window (negative where it starts in the padding).
    taps : numpy.ndarray
        Sorted positions read, relative to the window's start (the first is 0); gaps are
        dilation holes.
    """

    jump: int
    offset: int
    taps: np.ndarray

    @classmethod
    def identity(cls) -> AxisGeometry:
        """Every unit reads its own position."""
        return cls(1, 0, np.zeros(1, dtype=np.int64))

    @classmethod
    def window(cls, kernel: int, stride: int, padding: int, dilation: int = 1) -> AxisGeometry:
        """A convolution or pooling window (``padding`` before the first position)."""
        return cls(stride, -padding, np.arange(kernel, dtype=np.int64) * dilation)

    @property
    def size(self) -> int:
        """Side of the unclipped window (dnnbrain's ``rf_size``)."""
        return int(self.taps[-1]) + 1

    def compose(self, inner: AxisGeometry) -> AxisGeometry:
        """Through ``self`` (layer → parent) then ``inner`` (parent → input)."""
        taps = np.unique(np.add.outer(self.taps * inner.jump, inner.taps))
        return AxisGeometry(self.jump * inner.jump, inner.offset + self.offset * inner.jump, taps)

    def union(self, other: AxisGeometry) -> AxisGeometry | None:
        """Positions read by either (``None`` if the strides differ: no single window)."""
        if self.jump != other.jump:
            return None
        offset = min(self.offset, other.offset)
        taps = np.union1d(self.taps + (self.offset - offset), other.taps + (other.offset - offset))
        return AxisGeometry(self.jump, offset, taps)


#: Unclipped geometry of the row and column axes (``None`` where undefined).
Geometry = tuple[AxisGeometry | None, AxisGeometry | None]


class ReceptiveFieldRow(NamedTuple):
    """One layer of :func:`receptive_field_table` (sizes and offsets as ``(rows, columns)``)."""

    layer: str
    kind: str
    shape: tuple[int, ...]
    size: tuple[int, int]
    max_size: tuple[int, int]
    stride: tuple[int | None, int | None]
    offset: tuple[int | None, int | None]
    unclipped_size: tuple[int | None, int | None]
    clipped_offset: tuple[int, int]


def _axis_extent(axis: AxisMap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per target position: whether it reads anything, and the first and last + 1 source read."""
    n = axis.shape[0]
    if axis.outer is not None:
        rows, cols = axis.outer
        if not cols.any():
            return np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        first, stop = int(np.argmax(cols)), len(cols) - int(np.argmax(cols[::-1]))
        return rows.copy(), np.full(n, first, dtype=np.int64), np.full(n, stop, dtype=np.int64)
    indptr, indices = axis.matrix.indptr, axis.matrix.indices
    nonempty = np.diff(indptr) > 0
    first, stop = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    first[nonempty] = indices[indptr[:-1][nonempty]]
    stop[nonempty] = indices[indptr[1:][nonempty] - 1] + 1
    return nonempty, first, stop


def _axis_set(axis: AxisMap, position: int) -> np.ndarray:
    """Source positions read by one target position."""
    if axis.outer is not None:
        rows, cols = axis.outer
        return np.flatnonzero(cols) if rows[position] else np.zeros(0, dtype=np.int64)
    indptr = axis.matrix.indptr
    return axis.matrix.indices[indptr[position] : indptr[position + 1]].astype(np.int64)


class LayerReceptiveField:
    """The receptive fields of every neuron of one layer.

    A neuron (unit) is given as its index in the layer's node order (C order) or as a tuple
    in the layer's shape. Its field is ``⋃_t channels_t × rows_t × columns_t`` over the terms
    of ``relation``; a unit that no input neuron reaches has an empty field and the box
    ``((0, 0), (0, 0), (0, 0))``.

    Parameters
    ----------
    name, kind : str
        Layer name and kind.
    shape, input_shape : tuple of int
        Per-sample shapes of the layer and of the input layer.
    grid, input_grid : (int, int, int)
        Their 3-axis grids (channels, rows, columns) in node order.
    relation : Relation
        Input-layer ancestors (target: this layer's grid, source: the input grid).
    geometry : (AxisGeometry or None, AxisGeometry or None)
        Unclipped geometry of rows and columns (see the module docstring).
    """

    def __init__(
        self,
        name: str,
        kind: str,
        shape: tuple[int, ...],
        grid: Grid,
        input_shape: tuple[int, ...],
        input_grid: Grid,
        relation: Relation,
        geometry: Geometry = (None, None),
    ) -> None:
        self.name, self.kind, self.shape, self.grid = name, kind, tuple(shape), tuple(grid)
        self.input_shape, self.input_grid = tuple(input_shape), tuple(input_grid)
        self.relation, self.geometry = relation, geometry
        for term in relation.terms:
            if tuple(a.shape for a in term.axes) != tuple(zip(self.grid, self.input_grid)):
                raise ValueError(
                    f"layer {name!r}: a relation term maps {[a.shape for a in term.axes]}, expected "
                    f"(layer grid {self.grid}) × (input grid {self.input_grid}) per axis"
                )
        self._starts, self._stops = self._compact_boxes()

    @property
    def n_units(self) -> int:
        """Number of neurons in the layer."""
        return int(np.prod(self.grid))

    def _compact_boxes(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per axis, box starts and stops broadcastable to the grid (per-axis vectors when possible)."""
        extents = [[_axis_extent(axis) for axis in term.axes] for term in self.relation.terms]
        if len(extents) == 1 and all(nonempty.all() for nonempty, _, _ in extents[0]):
            starts = [first.reshape(s) for (_, first, _), s in zip(extents[0], _AXIS_SHAPES)]
            stops = [stop.reshape(s) for (_, _, stop), s in zip(extents[0], _AXIS_SHAPES)]
            return starts, stops
        big = np.iinfo(np.int64).max
        starts = [np.full(self.grid, big, dtype=np.int64) for _ in range(3)]
        stops = [np.zeros(self.grid, dtype=np.int64) for _ in range(3)]
        covered = np.zeros(self.grid, dtype=bool)
        for term in extents:
            reads = np.ones(self.grid, dtype=bool)
            for (nonempty, _, _), s in zip(term, _AXIS_SHAPES):
                reads &= nonempty.reshape(s)
            covered |= reads
            for axis, ((_, first, stop), s) in enumerate(zip(term, _AXIS_SHAPES)):
                np.minimum(starts[axis], first.reshape(s), out=starts[axis], where=reads)
                np.maximum(stops[axis], stop.reshape(s), out=stops[axis], where=reads)
        for axis in range(3):
            starts[axis][~covered] = 0
        return starts, stops

    def _position(self, unit) -> tuple[int, int, int]:
        """Grid position of a unit (flat index or tuple in the layer's shape)."""
        try:
            flat = int(np.ravel_multi_index(tuple(unit), self.shape)) if np.ndim(unit) else int(unit)
        except (ValueError, TypeError) as error:
            raise IndexError(f"layer {self.name!r}: unit {unit!r} is not in shape {self.shape}") from error
        if not 0 <= flat < self.n_units:
            raise IndexError(f"layer {self.name!r}: unit {unit!r} is not in 0..{self.n_units - 1}")
        return tuple(int(i) for i in np.unravel_index(flat, self.grid))

    def products(self, unit) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The field as a union of products ``(channels, rows, columns)`` of input indices."""
        position = self._position(unit)
        result = []
        for term in self.relation.terms:
            sets = tuple(_axis_set(axis, p) for axis, p in zip(term.axes, position))
            if all(len(s) for s in sets):
                result.append(sets)
        return result

    def mask(self, unit) -> np.ndarray:
        """Boolean array of the input's shape: the input neurons in the unit's field."""
        mask = np.zeros(self.input_grid, dtype=bool)
        for channels, rows, cols in self.products(unit):
            mask[np.ix_(channels, rows, cols)] = True
        return mask.reshape(self.input_shape)

    def boxes(self, unit) -> list[Box]:
        """The bounding box of each product of :meth:`products` (their union covers the field)."""
        return [
            tuple((int(s[0]), int(s[-1]) + 1) for s in product)  # type: ignore[misc]
            for product in self.products(unit)
        ]

    def bounding_box(self, unit) -> Box:
        """Bounding box of the unit's field: ``(channel, row, column)`` ranges in the input grid."""
        position = self._position(unit)
        box = tuple(
            (int(start[self._index(start, position)]), int(stop[self._index(stop, position)]))
            for start, stop in zip(self._starts, self._stops)
        )
        return box  # type: ignore[return-value]

    @staticmethod
    def _index(array: np.ndarray, position: tuple[int, int, int]) -> tuple[int, ...]:
        return tuple(p if n > 1 else 0 for p, n in zip(position, array.shape))

    def bounding_boxes(self) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """Bounding boxes of all units: per axis (channels, rows, columns) ``(starts, stops)``.

        Each array has the layer's grid shape ``(channels, rows, columns)`` (index it with
        ``numpy.unravel_index(unit, grid)``); read-only views of per-axis vectors when every
        unit's field is one product.
        """
        return tuple(
            (np.broadcast_to(start, self.grid), np.broadcast_to(stop, self.grid))
            for start, stop in zip(self._starts, self._stops)
        )

    def _position_range(self, axis: int, row: int, col: int) -> Range:
        """Union over channels of the boxes of one spatial position, along ``axis``."""
        position = (slice(None), row, col)
        start = np.broadcast_to(self._starts[axis], self.grid)[position]
        stop = np.broadcast_to(self._stops[axis], self.grid)[position]
        channel_start = np.broadcast_to(self._starts[0], self.grid)[position]
        channel_stop = np.broadcast_to(self._stops[0], self.grid)[position]
        reached = channel_stop > channel_start
        if not reached.any():
            return (0, 0)
        return int(start[reached].min()), int(stop[reached].max())

    @property
    def size(self) -> tuple[int, int]:
        """Bounding-box side (rows, columns) at the central position ``(H // 2, W // 2)``.

        The box of a position is the union over the layer's channels (one box when the field
        does not depend on the channel).
        """
        row, col = self.grid[1] // 2, self.grid[2] // 2
        ranges = [self._position_range(axis, row, col) for axis in (1, 2)]
        return tuple(stop - start for start, stop in ranges)  # type: ignore[return-value]

    @property
    def max_size(self) -> tuple[int, int]:
        """Largest bounding-box side (rows, columns) over all units."""
        return tuple(int(np.max(self._stops[axis] - self._starts[axis])) for axis in (1, 2))  # type: ignore[return-value]

    @property
    def clipped_offset(self) -> tuple[int, int]:
        """Start (rows, columns) of the clipped box of position ``(0, 0)`` (union over channels)."""
        return tuple(self._position_range(axis, 0, 0)[0] for axis in (1, 2))  # type: ignore[return-value]

    @property
    def stride(self) -> tuple[int | None, int | None]:
        """Unclipped jump (rows, columns) between neighbouring units' windows (``None``: undefined)."""
        return tuple(None if g is None else g.jump for g in self.geometry)  # type: ignore[return-value]

    @property
    def offset(self) -> tuple[int | None, int | None]:
        """Unclipped start (rows, columns) of unit 0's window; negative inside the padding."""
        return tuple(None if g is None else g.offset for g in self.geometry)  # type: ignore[return-value]

    @property
    def unclipped_size(self) -> tuple[int | None, int | None]:
        """Unclipped window side (rows, columns), dnnbrain's ``rf_size``."""
        return tuple(None if g is None else g.size for g in self.geometry)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (
            f"LayerReceptiveField({self.name!r}, {self.kind}, shape={self.shape}, size={self.size}, "
            f"stride={self.stride}, offset={self.offset}, unclipped_size={self.unclipped_size})"
        )


def identity_relation(grid: Grid) -> Relation:
    """Every neuron of a layer relates to itself (the input layer's field)."""
    return Relation([Term.identity(grid)])


def fields_from_relations(
    layout: Layout,
    grids: list[Grid],
    relations: list[Relation | None],
    geometries: list[Geometry] | None = None,
    layers: list[str] | None = None,
) -> dict[str, LayerReceptiveField]:
    """Receptive fields from each layer's relation to the input layer (the torch-free core).

    Parameters
    ----------
    layout : Layout
        Layers in node order.
    grids : list of (int, int, int)
        Each layer's 3-axis grid.
    relations : list of Relation or None
        Per layer, its input-layer ancestors (``None``: none).
    geometries : list of (AxisGeometry or None, AxisGeometry or None), optional
        Per layer, the unclipped row and column geometry (default: undefined).
    layers : list of str, optional
        Names of the layers to return (default: all, the input included).

    Returns
    -------
    dict of str to LayerReceptiveField
        In node order.
    """
    names = layout.names
    wanted = names if layers is None else list(layers)
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise KeyError(f"no layer {unknown} in the model; its layers are {names}")
    geometries = geometries or [(None, None)] * len(names)
    input_layer = layout.layers[0]
    fields = {}
    for index, layer in enumerate(layout.layers):
        if layer.name in wanted:
            fields[layer.name] = LayerReceptiveField(
                layer.name, layer.kind, layer.shape, grids[index], input_layer.shape, grids[0],
                relations[index] or Relation(), geometries[index],
            )  # fmt: skip
    return fields


def fields_from_operator(
    operator: FactorizedCausalOperator, layers: list[str] | None = None
) -> dict[str, LayerReceptiveField]:
    """Receptive fields from a factorised causal operator's ancestor relations.

    The operator keeps no window geometry, so the unclipped numbers are undefined (``None``);
    :func:`receptive_fields` gives them.
    """
    relations = [identity_relation(operator.grids[0])]
    relations += [ancestors.get(0) for ancestors in operator.ancestors[1:]]
    return fields_from_relations(operator.layout, operator.grids, relations, layers=layers)


def _op_geometry(call, entry, edges: Relation, in_grid: Grid, out_grid: Grid, axis: int):
    """Unclipped geometry of one operation along grid ``axis`` (1: rows, 2: columns), or None."""
    from nsp_pipeline.model.ops import RelationKind
    from nsp_pipeline.model.windows import call_window

    if entry.relation is RelationKind.WINDOW:
        window = call_window(call, entry)
        if window.kind.startswith("adaptive"):
            n_in, n_out = in_grid[axis], out_grid[axis]
            return AxisGeometry.window(n_in // n_out, n_in // n_out, 0) if n_in % n_out == 0 else None
        spatial = axis - 1
        if spatial >= len(window.kernel):  # the size-1 axis of a 1-D window's grid
            return AxisGeometry.identity()
        kernel, stride, dilation = window.kernel[spatial], window.stride[spatial], window.dilation[spatial]
        return AxisGeometry.window(kernel, stride, window.padding[spatial][0], dilation)
    if len(edges.terms) == 1:
        axis_map = edges.terms[0].axes[axis]
        if axis_map.is_identity or (axis_map.shape == (1, 1) and axis_map.nnz == 1):
            return AxisGeometry.identity()
    return None


def fields_from_trace(recorded: Trace, layers: list[str] | None = None) -> dict[str, LayerReceptiveField]:
    """Receptive fields of a traced model (see :func:`receptive_fields`).

    Each layer's relation to the input is the union, over the layer's inputs, of the
    operation's own relation composed with that input's relation to the input layer; its
    unclipped geometry composes the operation's window geometry the same way.

    Parameters
    ----------
    recorded : Trace
        A trace of one sample (:func:`nsp_pipeline.model.capture.trace`), any granularity.
    layers : list of str, optional
        Names of the layers to return (default: all, the input included).

    Returns
    -------
    dict of str to LayerReceptiveField
        In node order.

    Raises
    ------
    NotFactorizableError
        If a layer's relation is not a union of per-axis products (a permutation, a
        container under ``children``); the message names the layer.
    """
    from nsp_pipeline.core.errors import NotFactorizableError
    from nsp_pipeline.graph.relations import natural_grid, op_relations
    from nsp_pipeline.model.capture import eval_mode
    from nsp_pipeline.model.ops import lookup

    layout = recorded.layout
    grids = [natural_grid(layout.layers[0].shape)]
    relations: list[Relation | None] = [identity_relation(grids[0])]
    geometries: list[Geometry] = [(AxisGeometry.identity(), AxisGeometry.identity())]
    with eval_mode(recorded.model):
        for index in range(1, len(layout)):
            call = recorded.calls[index]
            in_grids = [grids[p] for p in call.input_layers]
            try:
                out_grid, parts = op_relations(call, in_grids)
            except NotFactorizableError as error:
                name = layout.layers[index].name
                raise NotFactorizableError(f"layer {index} {name!r} ({call.kind}): {error}") from None
            relation, geometry, reached = Relation(), [None, None], False
            for k, edges in parts:
                parent = call.input_layers[k]
                if relations[parent] is None:
                    continue
                relation.union(edges.compose(relations[parent]))
                for axis in (0, 1):
                    inner = geometries[parent][axis]
                    outer = _op_geometry(call, lookup(call), edges, in_grids[k], out_grid, axis + 1)
                    step = None if inner is None or outer is None else outer.compose(inner)
                    if not reached:
                        geometry[axis] = step
                    elif step is None or geometry[axis] is None:
                        geometry[axis] = None
                    else:
                        geometry[axis] = geometry[axis].union(step)
                reached = True
            grids.append(out_grid)
            relations.append(relation if reached else None)
            geometries.append(tuple(geometry))
    return fields_from_relations(layout, grids, relations, geometries, layers)


def receptive_fields(
    model: nn.Module, example: torch.Tensor, layers: list[str] | None = None, granularity: str = "merged"
) -> dict[str, LayerReceptiveField]:
    """Exact theoretical receptive fields of every neuron, per layer.

    Parameters
    ----------
    model : nn.Module
        The network (traced once, in eval mode, on the first sample of ``example``).
    example : torch.Tensor
        A batch of inputs ``(n, *input_shape)``; fields depend only on its shape.
    layers : list of str, optional
        Names of the layers to return (default: all, the input included).
    granularity : {"merged", "ops", "children"}
        Layer granularity (:mod:`nsp_pipeline.model.capture`).

    Returns
    -------
    dict of str to LayerReceptiveField
        In node order.

    Raises
    ------
    NotFactorizableError
        If a layer's relation is not a union of per-axis products (a permutation, a
        container under ``children``); the message names the layer.
    KeyError
        If a name in ``layers`` is not a layer of the model.
    """
    from nsp_pipeline.model.capture import trace

    return fields_from_trace(trace(model, example[:1], granularity), layers)


def receptive_field_table(fields: dict[str, LayerReceptiveField]) -> list[ReceptiveFieldRow]:
    """Per-layer summary, like dnnbrain's receptive-field table (one row per layer)."""
    return [
        ReceptiveFieldRow(name, *(getattr(field, key) for key in ReceptiveFieldRow._fields[1:]))
        for name, field in fields.items()
    ]
