"""Each operation's ancestor relation to its inputs, as unions of per-axis products.

For convolution, pooling, elementwise, reshape and linear operations the structural edges
between an output and an input layer factorise per axis (:mod:`nsp_pipeline.graph.kronecker`);
the rule per operation is its :class:`~nsp_pipeline.model.ops.RelationKind`. Used by the
factorised causal operator (:mod:`nsp_pipeline.transforms.causal.builder`) and by the receptive
fields (:mod:`nsp_pipeline.graph.receptive_fields`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from nsp_pipeline.core.errors import NotFactorizableError, TraceError, UnsupportedLayerError
from nsp_pipeline.core.progress import progress
from nsp_pipeline.graph.edges import op_edges
from nsp_pipeline.graph.kronecker import AxisMap, Relation, Term
from nsp_pipeline.model.capture import fx_trace, record_graph_module
from nsp_pipeline.model.ops import Family, Operation, RelationKind, lookup
from nsp_pipeline.model.records import OpCall, Trace
from nsp_pipeline.model.windows import axis_windows, call_window

log = logging.getLogger(__name__)

#: A layer as a 3-axis grid (channels, rows, columns) whose C order is the node order.
Grid = tuple[int, int, int]

#: An output grid and, per input ``k``, its relation.
Relations = tuple[Grid, list[tuple[int, Relation]]]


def natural_grid(shape: tuple[int, ...]) -> Grid:
    """The 3-axis grid of a per-sample shape: ``(C, H, W)``, ``(C, L, 1)``, ``(F, 1, 1)``."""
    if len(shape) > 3:
        raise NotFactorizableError(f"per-sample shape {shape} has more than 3 axes")
    return (*shape, 1, 1, 1)[:3] if shape else (1, 1, 1)


def _reshape_relations(call: OpCall, entry: Operation, in_grids: list[Grid]) -> Relations:
    """An order-preserving reshape of one input keeps the input's grid.

    A neuron keeps its position in C order, so a flattened conv output is still channels × rows ×
    columns.
    """
    if len(call.inputs) != 1:
        return _generic_relations(call, entry, in_grids)
    return in_grids[0], [(0, Relation([Term.identity(in_grids[0])]))]


def _identity_relations(call: OpCall, entry: Operation, in_grids: list[Grid]) -> Relations:
    """Elementwise on inputs of the output's shape and one grid: every neuron reads its own position."""
    shape = call.output.shape
    if any(t.shape != shape for t in call.inputs) or len(set(in_grids)) != 1:
        return _generic_relations(call, entry, in_grids)
    return in_grids[0], [(k, Relation([Term.identity(in_grids[0])])) for k in range(len(call.inputs))]


def _window_relations(call: OpCall, entry: Operation, in_grids: list[Grid]) -> Relations:
    """Convolution and pooling: per-axis windows, channel groups."""
    window = call_window(call, entry)
    in_grid, out_grid = in_grids[0], natural_grid(tuple(call.output.shape[1:]))
    in_shape, out_shape = tuple(call.inputs[0].shape[1:]), tuple(call.output.shape[1:])
    if natural_grid(in_shape) != in_grid:
        raise NotFactorizableError(f"{call.kind} reads a reshaped layer")
    n_spatial = len(in_shape) - 1
    axes = []
    for axis in range(2):
        if axis < n_spatial:
            out, source, _ = axis_windows(in_shape[1 + axis], out_shape[1 + axis], window, axis)
            axes.append(AxisMap.from_pairs(out, source, (out_grid[1 + axis], in_grid[1 + axis])))
        else:
            axes.append(AxisMap.identity(1))
    c_in, c_out = in_grid[0], out_grid[0]
    if window.kind == "conv" and window.groups == 1:
        channels = AxisMap.ones(c_out, c_in)
    elif window.kind == "conv":
        groups = window.groups
        per_in, per_out = c_in // groups, c_out // groups
        out_channel = np.repeat(np.arange(c_out), per_in)
        in_channel = (out_channel // per_out) * per_in + np.tile(np.arange(per_in), c_out)
        channels = AxisMap.from_pairs(out_channel, in_channel, (c_out, c_in))
    else:
        channels = AxisMap.identity(c_in)
    return out_grid, [(0, Relation([Term(channels, *axes)]))]


def _linear_relations(call: OpCall, entry: Operation, in_grids: list[Grid]) -> Relations:
    """Linear on a flat input (all to all) or on a ``(T, N)`` input (the last axis mixes), else generic."""
    in_shape, in_grid = tuple(call.inputs[0].shape[1:]), in_grids[0]
    out_features = entry.argument(call, "weight").shape[0]
    if len(in_shape) == 1:  # every output reads the whole (flattened) input
        out_grid = (out_features, 1, 1)
        return out_grid, [(0, Relation([Term(*(AxisMap.ones(o, i) for o, i in zip(out_grid, in_grid)))]))]
    if len(in_shape) == 2 and natural_grid(in_shape) == in_grid:  # (T, N): the last axis mixes
        out_grid = (in_shape[0], out_features, 1)
        term = Term(
            AxisMap.identity(in_shape[0]), AxisMap.ones(out_features, in_shape[1]), AxisMap.identity(1)
        )
        return out_grid, [(0, Relation([term]))]
    return _generic_relations(call, entry, in_grids)


def _factorize(sources: np.ndarray, targets: np.ndarray, in_grid: Grid, out_grid: Grid) -> Term | None:
    """The term equal to an edge set, if the edge set is a per-axis product."""
    if len(sources) == 0:
        return None
    source_axes = np.unravel_index(sources, in_grid)
    target_axes = np.unravel_index(targets, out_grid)
    axes = [
        AxisMap.from_pairs(t, s, (out_size, in_size))
        for t, s, out_size, in_size in zip(target_axes, source_axes, out_grid, in_grid)
    ]
    pairs = np.unique(targets.astype(np.int64) * int(np.prod(in_grid)) + sources)
    if len(pairs) != np.prod([axis.nnz for axis in axes], dtype=np.int64):
        return None
    return Term(*axes)


def _generic_relations(call: OpCall, entry: Operation, in_grids: list[Grid]) -> Relations:
    """Exact edges of a cheap operation, factorised per axis; the output grid is chosen to fit."""
    try:
        parts = op_edges(call, incl=True)
    except UnsupportedLayerError as error:
        raise NotFactorizableError(str(error)) from None
    out_shape = tuple(call.output.shape[1:])
    candidates = [natural_grid(out_shape)]
    if int(np.prod(in_grids[0])) == int(np.prod(out_shape)):
        candidates.insert(0, in_grids[0])
    for out_grid in candidates:
        relations = []
        for k, sources, targets in parts:
            term = _factorize(sources, targets, in_grids[k], out_grid)
            if term is None:
                break
            relations.append((k, Relation([term])))
        else:
            return out_grid, relations
    raise NotFactorizableError(f"the edges of {call.kind} are not a per-axis product")


def _container_relations(call: OpCall, entry: Operation, in_grids: list[Grid]) -> Relations:
    """A container (granularity ``children``): its operations traced and their relations composed.

    Each output neuron relates to the input neurons it reaches through the container's operations,
    as :func:`nsp_pipeline.graph.edges.op_edges` composes their edges.
    """
    if entry.family is not Family.CONTAINER:
        raise NotFactorizableError(f"{call.kind} has no per-axis relation")
    try:
        with torch.no_grad():
            inner = record_graph_module(fx_trace(call.target), call.inputs[0])
    except (TraceError, UnsupportedLayerError) as error:
        raise NotFactorizableError(f"container {call.kind} cannot be traced ({error})") from None
    if inner.output_layer is None:
        raise NotFactorizableError(
            f"container {call.kind} does not return one tensor computed from its input"
        )
    if inner.layout.layers[0].size != int(np.prod(in_grids[0])):
        raise NotFactorizableError(f"container {call.kind} reads another number of values than its layer")
    try:  # the input in C order is the layer's, so its grid is the layer's
        grids, ancestors, _ = _compose_layers(inner, in_grids[0], only_input=True)
    except NotFactorizableError as error:
        raise NotFactorizableError(f"inside container {call.kind}: {error}") from None
    out = inner.output_layer
    if out == 0:
        return in_grids[0], [(0, Relation([Term.identity(in_grids[0])]))]
    if 0 not in ancestors[out]:
        raise NotFactorizableError(f"the output of container {call.kind} does not depend on its input")
    return grids[out], [(0, ancestors[out][0])]


#: The rule of each :class:`~nsp_pipeline.model.ops.RelationKind`:
#: ``rule(call, entry, input grids) -> (output grid, [(input k, relation)])``.
RELATION_RULES: dict[RelationKind, Callable[[OpCall, Operation, list[Grid]], Relations]] = {
    RelationKind.RESHAPE: _reshape_relations,
    RelationKind.IDENTITY: _identity_relations,
    RelationKind.WINDOW: _window_relations,
    RelationKind.LINEAR: _linear_relations,
    RelationKind.GENERIC: _generic_relations,
    RelationKind.COMPOSITE: _container_relations,
}


def op_relations(call: OpCall, in_grids: list[Grid]) -> Relations:
    """The grid of an operation's output and its relation to each input (structural edges).

    The relation kind is the operation's entry in :mod:`nsp_pipeline.model.ops`.

    Raises
    ------
    NotFactorizableError
        If the operation's edges are not unions of per-axis products.
    """
    reordered = [
        move.kind
        for k in range(len(call.inputs))
        if call.read_positions(k) is not None
        for move in call.moves[k]
    ]
    if reordered:
        raise NotFactorizableError(
            f"{call.kind} reads its input through {', '.join(reordered)} (granularity 'merged'), "
            "which reorders the elements"
        )
    try:
        entry = lookup(call)
    except UnsupportedLayerError as error:
        raise NotFactorizableError(str(error)) from None
    return RELATION_RULES[entry.relation](call, entry, in_grids)


def ancestor_relations(
    recorded: Trace, input_grid: Grid | None = None
) -> tuple[list[Grid], list[dict[int, Relation]], list[list[tuple[int, Relation]]]]:
    """Every layer's grid, its strict ancestors in each earlier layer, and its relations to its inputs.

    Layer by layer in order: the ancestors of a layer are its parents and their ancestors, each
    relation composed with the edges to the parent (structural edges, ``incl=True``).

    Parameters
    ----------
    recorded : Trace
        A trace of one reference sample.
    input_grid : (int, int, int), optional
        The input layer's grid (default: its natural grid, :func:`natural_grid`).

    Returns
    -------
    grids, ancestors, parts : list
        Per layer: its grid, ``{earlier layer: relation}``, and ``[(input k, relation)]`` (empty
        for the input layer).

    Raises
    ------
    NotFactorizableError
        If some layer's relation does not factorise; the message names the layer.
    """
    return _compose_layers(recorded, input_grid, only_input=False)


def _compose_layers(
    recorded: Trace, input_grid: Grid | None, only_input: bool
) -> tuple[list[Grid], list[dict[int, Relation]], list[list[tuple[int, Relation]]]]:
    """:func:`ancestor_relations`; with ``only_input``, the ancestors in the input layer alone."""
    layout = recorded.layout
    grids = [input_grid or natural_grid(layout.layers[0].shape)]
    ancestors: list[dict[int, Relation]] = [{}]
    parts_per_layer: list[list[tuple[int, Relation]]] = [[]]
    for index in progress(range(1, len(layout)), "causal relations", unit="layer"):
        call = recorded.calls[index]
        try:
            out_grid, parts = op_relations(call, [grids[p] for p in call.input_layers])
        except NotFactorizableError as error:
            name = layout.layers[index].name
            raise NotFactorizableError(f"layer {index} {name!r} ({call.kind}): {error}") from None
        relations: dict[int, Relation] = {}
        for k, edges in parts:
            parent = call.input_layers[k]
            if parent == 0 or not only_input:
                relations.setdefault(parent, Relation()).union(edges)
            for source, relation in ancestors[parent].items():
                through = edges.compose(relation)  # a new relation: kept as it is if it is the first
                if source in relations:
                    relations[source].union(through)
                else:
                    relations[source] = through
        grids.append(out_grid)
        ancestors.append(relations)
        parts_per_layer.append(parts)
        log.info("relations of layer %d/%d %r", index, len(layout) - 1, layout.layers[index].name)
    return grids, ancestors, parts_per_layer
