"""Edge weights of the neuron graph and the affine offsets of its layers, from the operation registry.

Two kinds of weight per edge ``u -> v`` of a :class:`~nsp_pipeline.graph.neuron_graph.NeuronGraph`:

``structural``
    The value of the parameter that connects ``u`` to ``v``: the convolution kernel entry at
    that offset (summed where the same pair is reached through several taps, as with circular
    padding), the ``Linear`` weight, ``1 / divisor`` for average pooling (``count_include_pad``,
    ``divisor_override``; adaptive: ``1 /`` the window's size), the batch-norm scale
    ``gamma / sqrt(var + eps)``, 1 for ``add``, ±1 for ``sub``, the constant of a product or
    quotient by a constant, and 1 for max-pool windows, copies and nonlinear operations
    (activations, softmax, products of two layers).
``local``
    The exact partial derivative ``dv/du`` at the first sample of the example: ReLU masks,
    1 on each max-pool window's argmax and 0 on its other edges, sigmoid and tanh slopes,
    softmax ``s_i (delta_ij - s_j)``, ``y`` for ``x * y``. Propagating the input through the
    locally weighted DAG layer by layer, plus :func:`layer_biases`, reproduces the forward pass
    (exactly for piecewise-linear networks; for the others it is each layer's tangent at the
    sample, which passes through the recorded values).

Under granularity ``merged`` a layer also carries the unary operations merged into it (a ReLU
after a convolution) and reads its inputs through shape-only operations (a flatten): its
structural weights are those of its own operation; its local weights are the operation's
partials times the merged operations' slopes, and the flatten only renumbers sources.

Which rule an operation follows is its registry entry's ``weights``
(:class:`~nsp_pipeline.model.ops.WeightRule`); each rule is a function in :data:`WEIGHT_RULES`.
Edge positions come from the edge rules (:mod:`nsp_pipeline.graph.edges`) with ``incl=True``, so
the weights cover every structural edge; with ``incl=False`` graphs the edges whose partial
derivative is 0 are dropped. Every layer is computed with vectorised numpy and torch, never a
Python loop over edges.

The graph-view notebook's defects this avoids
---------------------------------------------
The notebook (``CIFAR-10_CNN5.h5`` as a weighted networkx graph) attaches Keras weights by hand:

- its Keras ``Flatten`` is channels-last (H, W, C) while it numbers the convolution neurons
  channel-first (C, H, W), so every edge into the first dense layer is attached to the wrong
  neuron (all but 4 of 1,024 sources). Here a flatten is a data movement replayed on element
  codes, so every source position is exact;
- it gives max-pool edges weight 1, which makes the pooling a sum over the window. Here the
  structural weight is 1 too, but the local weights select the argmax (1 there, 0 elsewhere), so
  propagation reproduces the max;
- it has no activations and no biases: its weighted graph is a purely linear network. Here the
  local weights include the ReLU masks (and every other slope), and :func:`layer_biases` gives
  each layer's bias (convolution and linear biases, batch-norm shifts, through the masks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from nsp_pipeline.core.errors import UnsupportedLayerError
from nsp_pipeline.graph.build import build_graph
from nsp_pipeline.graph.edges import EDGE_RULES, elementwise_partials, window_reads
from nsp_pipeline.graph.neuron_graph import NeuronGraph
from nsp_pipeline.model.capture import eval_mode, fx_trace, record_graph_module, trace
from nsp_pipeline.model.ops import EdgeRule, Operation, WeightRule, is_shape_only, lookup
from nsp_pipeline.model.records import OpCall, Trace, moved_positions
from nsp_pipeline.model.windows import Window, call_window

#: The kinds of edge weight.
KINDS = ("structural", "local")

Parts = list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class OpWeights:
    """The weighted edges of one operation and its affine offset, in the positions of the tensors it reads.

    Parameters
    ----------
    parts : list of (int, numpy.ndarray, numpy.ndarray, numpy.ndarray)
        ``(input k, source positions in input k, target positions, weights)``; a (source, target)
        pair may occur more than once (its weights add up).
    bias : numpy.ndarray or None
        For ``local`` weights, per output element (C order of one sample) the offset ``b`` with
        ``output = sum(weight * input) + b`` at the recorded input; ``None`` for ``structural``.
    """

    parts: Parts
    bias: np.ndarray | None = None


def edge_weights(
    model: nn.Module, example: torch.Tensor, graph: NeuronGraph, kind: str = "structural"
) -> np.ndarray:
    """Weights of every edge of ``graph``, aligned with ``graph.indices``.

    Parameters
    ----------
    model : nn.Module
        The network the graph was built from (run in eval mode; its mode is restored).
    example : torch.Tensor
        The batch the graph was built from; its first sample is where ``local`` weights are taken.
    graph : NeuronGraph
        The graph of ``model`` on ``example`` (:func:`~nsp_pipeline.graph.build.build_graph`), at
        its granularity and ``incl``.
    kind : {"structural", "local"}
        See the module docstring.

    Returns
    -------
    numpy.ndarray
        ``(graph.n_edges,)`` float64. With ``incl=True`` the structural edges whose local weight
        is 0 (a dead ReLU, a max-pool window's other entries) are 0.

    Raises
    ------
    UnsupportedLayerError
        If an operation has no weight rule (the message names the layer and the operation).
    ValueError
        If ``kind`` is unknown, or ``graph`` was not built from this model and example (other
        layers, or other edges than the weights found).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    recorded = _trace_of(model, example, graph)
    weights = np.zeros(graph.n_edges)
    with eval_mode(recorded.model):
        for index in range(1, len(recorded.layout)):  # one layer at a time: memory of its edges only
            _align_layer(graph, recorded, index, _named(recorded, index, kind).parts, kind, weights)
    return weights


def weighted_graph(
    model: nn.Module,
    example: torch.Tensor,
    kind: str = "structural",
    granularity: str = "merged",
    incl: bool = True,
) -> NeuronGraph:
    """The neuron graph of ``model`` (:func:`~nsp_pipeline.graph.build.build_graph`) with edge weights.

    Parameters
    ----------
    model, example
        As for :func:`edge_weights`.
    kind : {"structural", "local"}
        Edge weights (see the module docstring).
    granularity : {"children", "ops", "merged"}
        Layer granularity.
    incl : bool
        Keep every structural edge (``True``) or only those with a non-zero partial derivative
        at the first sample.

    Returns
    -------
    NeuronGraph
        With ``weights`` and ``weight_kind`` set.
    """
    graph = build_graph(model, example[:1], granularity, incl)
    return graph.with_weights(edge_weights(model, example, graph, kind), kind)


def layer_biases(model: nn.Module, example: torch.Tensor, graph: NeuronGraph) -> np.ndarray:
    """Per node the constant term of its layer's affine map at the first sample of ``example``.

    At that input, ``v = sum over parents u of w_local(u, v) * u + b_v``: ``b_v`` is the
    operation's own offset (the convolution or linear bias, the batch-norm shift
    ``beta - mean * scale``, the value a padding writes, 0 for ReLU, max-pool and data movement),
    passed through the unary operations merged into the layer (a dead ReLU zeroes it). For
    operations that are not piecewise linear (sigmoid, softmax) it is the offset of the tangent at
    the sample, ``v - sum w_local u``.

    Parameters
    ----------
    model, example, graph
        As for :func:`edge_weights`.

    Returns
    -------
    numpy.ndarray
        ``(graph.n_nodes,)`` float64, 0 on the input layer.
    """
    recorded = _trace_of(model, example, graph)
    biases = np.zeros(graph.n_nodes)
    with eval_mode(recorded.model):
        for index in range(1, len(recorded.layout)):
            biases[recorded.layout.slice(index)] = _named(recorded, index, "local").bias
    return biases


def _trace_of(model: nn.Module, example: torch.Tensor, graph: NeuronGraph) -> Trace:
    """The trace of the first sample at the graph's granularity; it must have the graph's layers."""
    recorded = trace(model, example[:1], graph.granularity)
    ours, theirs = recorded.layout, graph.layout
    if [(layer.name, layer.shape) for layer in ours.layers] != [
        (layer.name, layer.shape) for layer in theirs.layers
    ]:
        raise ValueError(
            f"the graph was not built from this model and example: its layers are {theirs.names}, "
            f"the model's at granularity {graph.granularity!r} are {ours.names}"
        )
    return recorded


def _named(recorded: Trace, index: int, kind: str) -> OpWeights:
    """:func:`layer_weights` of one layer, errors naming the layer."""
    try:
        return layer_weights(recorded.calls[index], kind)
    except UnsupportedLayerError as error:
        layer = recorded.layout.layers[index]
        raise UnsupportedLayerError(
            f"weights of layer {index} {layer.name!r} ({layer.kind}): {error}"
        ) from None


def layer_weights(call: OpCall, kind: str) -> OpWeights:
    """Weighted edges of one layer's operation, with sources in its input layers' positions.

    Under granularity ``merged``, ``local`` weights and the offset include the unary operations
    merged into the layer (``call.absorbed``), and sources are read through ``call.moves``.
    """
    weights = operation_weights(call, kind)
    parts, bias = weights.parts, weights.bias
    if call.absorbed and kind == "local":
        slope, offset = _absorbed_affine(call)
        parts = [(k, sources, targets, values * slope[targets]) for k, sources, targets, values in parts]
        bias = slope * bias + offset
    return OpWeights([(k, _layer_positions(call, k, s), t, w) for k, s, t, w in parts], bias)


def operation_weights(call: OpCall, kind: str) -> OpWeights:
    """Weighted edges of an operation alone, between the tensors it reads and its output."""
    entry = lookup(call)
    return WEIGHT_RULES[entry.weights](call, entry, kind)


def _layer_positions(call: OpCall, k: int, sources: np.ndarray) -> np.ndarray:
    positions = call.read_positions(k)
    return sources if positions is None else positions[sources]


def _absorbed_affine(call: OpCall) -> tuple[np.ndarray, np.ndarray]:
    """Slope and offset of the merged unary operations, per element of the operation's output.

    Each merged operation is ``z -> a z + c`` at the recorded values (its local weight and its
    offset), so their composite is ``A z + C``; shape-only steps between them only reorder.
    """
    n = call.output[0].numel()
    slope, offset = np.ones(n), np.zeros(n)
    order = np.arange(n)  # for each element of the current tensor, its position in the output
    for step in call.absorbed:
        if is_shape_only(step):
            order = order[moved_positions((step,), tuple(step.inputs[0].shape))]
            continue
        weights = operation_weights(step, "local")
        ((_, _, targets, values),) = weights.parts
        step_slope = np.zeros(n)
        step_slope[targets] = values
        slope[order] *= step_slope
        offset[order] = step_slope * offset[order] + weights.bias
    return slope, offset


def _align_layer(
    graph: NeuronGraph, recorded: Trace, index: int, parts: Parts, kind: str, out: np.ndarray
) -> None:
    """Sum the weights of each (target, source) pair into one layer, in ``out`` as ``graph.indices``."""
    n, offsets = graph.n_nodes, recorded.layout.offsets
    rows = recorded.layout.slice(index)
    inputs = recorded.calls[index].input_layers
    targets, sources, values = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    for k, source, target, weights in parts:
        targets.append(target.astype(np.int64))
        sources.append(source.astype(np.int64) + int(offsets[inputs[k]]))
        values.append(np.asarray(weights, dtype=np.float64))
    triples = (np.concatenate(values), (np.concatenate(targets), np.concatenate(sources)))
    found = sp.coo_array(triples, shape=(rows.stop - rows.start, n)).tocsr()
    found.sum_duplicates()  # sorted per row, repeated pairs summed, zeros kept
    edges = slice(int(graph.indptr[rows.start]), int(graph.indptr[rows.stop]))
    indptr = graph.indptr[rows.start : rows.stop + 1] - graph.indptr[rows.start]
    indices = graph.indices[edges]
    if np.array_equal(found.indptr, indptr) and np.array_equal(found.indices, indices):
        out[edges] = found.data
        return
    base = rows.start * n  # keys of the layer's rows: global target * n + source
    keys, expected = _keys(found.indptr, found.indices, n) + base, _keys(indptr, indices, n) + base
    position = np.minimum(np.searchsorted(keys, expected), max(len(keys) - 1, 0))
    missing = keys[position] != expected if len(keys) else np.ones(len(expected), dtype=bool)
    if missing.any():
        _mismatch(graph, int(expected[np.argmax(missing)]), "has an edge the weight rules do not give")
    extra = np.ones(len(keys), dtype=bool)
    extra[position] = False
    # Graphs with incl=False drop edges whose local weight is 0 (and only those).
    if not graph.incl:
        extra &= (found.data != 0) & (kind == "local")
    if extra.any():
        _mismatch(graph, int(keys[np.argmax(extra)]), "lacks an edge the weight rules give")
    out[edges] = found.data[position]


def _keys(indptr: np.ndarray, indices: np.ndarray, n: int) -> np.ndarray:
    """``row * n + source`` of every edge of a CSR of in-edges (ascending when rows are sorted)."""
    return np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr)) * n + indices


def _mismatch(graph: NeuronGraph, key: int, what: str) -> None:
    target, source = divmod(key, graph.n_nodes)
    layer = graph.layout.layers[int(graph.layout.layer_of_node(target))]
    raise ValueError(
        f"the graph {what}: {graph.node_label(source)} -> {graph.node_label(target)} (into layer "
        f"{layer.name!r}); was it built from this model, example and incl={graph.incl}?"
    )


# ---------------------------------------------------------------------------------------------
# Rules: rule(call, entry, kind) -> OpWeights


def _flat(tensor: torch.Tensor) -> np.ndarray:
    """The first sample of a tensor, flat, float64."""
    return tensor[0].detach().reshape(-1).to(torch.float64).cpu().numpy()


def _positions(call: OpCall, entry: Operation) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Every structural edge of the operation (its edge rule with ``incl=True``)."""
    return EDGE_RULES[entry.edges](call, entry, True)


def _tangent_offset(call: OpCall, parts: Parts) -> np.ndarray:
    """``output - sum(weight * input)`` per output element: the offset of the tangent at the input."""
    offset = _flat(call.output)
    for k, sources, targets, weights in parts:
        offset = offset - np.bincount(targets, weights * _flat(call.inputs[k])[sources], len(offset))
    return offset


def _constant_term(call: OpCall) -> np.ndarray:
    """The output at all-zero inputs: the offset of an affine operation, or what a movement writes."""
    with torch.no_grad():
        return _flat(call.replay(*(torch.zeros_like(tensor) for tensor in call.inputs)))


def _movement(call: OpCall, entry: Operation, kind: str) -> OpWeights:
    """Copies: weight 1; the offset is what the operation writes itself (a padding's value)."""
    parts = [(k, s, t, np.ones(len(s))) for k, s, t in _positions(call, entry)]
    return OpWeights(parts, _constant_term(call) if kind == "local" else None)


def _partials(call: OpCall, entry: Operation) -> Parts:
    """Elementwise edges weighted by their partial derivative at the recorded input."""
    partials = elementwise_partials(call)
    return [(k, s, t, partials[k][t]) for k, s, t in _positions(call, entry)]


def _affine(call: OpCall, entry: Operation, kind: str) -> OpWeights:
    """Elementwise and affine (add, sub, neg, dropout): the partials are the constant coefficients."""
    return OpWeights(_partials(call, entry), _constant_term(call) if kind == "local" else None)


def _slope(call: OpCall, entry: Operation, kind: str) -> OpWeights:
    """Elementwise and nonlinear: structural 1, local the slope."""
    if kind == "structural":
        return OpWeights([(k, s, t, np.ones(len(s))) for k, s, t in _positions(call, entry)])
    parts = _partials(call, entry)
    return OpWeights(parts, _tangent_offset(call, parts))


def _product(call: OpCall, entry: Operation, kind: str) -> OpWeights:
    """``x * c``: the factor ``c``; ``x * y`` of two layers: structural 1, local the other factor."""
    linear = len(call.inputs) == 1
    return (_affine if linear else _slope)(call, entry, kind)


def _quotient(call: OpCall, entry: Operation, kind: str) -> OpWeights:
    """``x / c``: ``1 / c``; ``c / x`` or ``x / y``: structural 1, local the partial derivative."""
    linear = len(call.inputs) == 1 and bool(call.args) and call.args[0] is call.inputs[0]
    return (_affine if linear else _slope)(call, entry, kind)


def _batch_norm(call: OpCall, entry: Operation, kind: str) -> OpWeights:
    """Batch norm on running statistics: ``gamma / sqrt(var + eps)``, offset ``beta - mean * scale``."""
    ((k, sources, targets),) = _positions(call, entry)
    channels = call.output.shape[1]
    per_channel = call.output[0].numel() // channels

    def parameter(name: str, fill: float) -> np.ndarray:
        value = entry.argument(call, name)
        return np.full(channels, fill) if value is None else value.detach().double().cpu().numpy()

    scale = parameter("weight", 1.0) / np.sqrt(parameter("running_var", 1.0) + _eps(call))
    weights = scale[targets // per_channel]
    if kind == "structural":
        return OpWeights([(k, sources, targets, weights)])
    shift = parameter("bias", 0.0) - parameter("running_mean", 0.0) * scale
    return OpWeights([(k, sources, targets, weights)], np.repeat(shift, per_channel))


def _eps(call: OpCall) -> float:
    """``eps`` of a batch norm module, or of ``F.batch_norm`` (8th parameter, default 1e-5)."""
    if isinstance(call.target, nn.Module):
        return float(call.target.eps)
    return float(call.kwargs.get("eps", call.args[7] if len(call.args) > 7 else 1e-5))


def _channels(call: OpCall, entry: Operation, kind: str) -> OpWeights:
    """Normalisation with the sample's own statistics: structural 1, local by autograd per channel.

    The Jacobian is block diagonal by channel, so one backward pass per position within a channel
    (all channels at once, batched) gives every partial.
    """
    ((k, sources, targets),) = _positions(call, entry)
    if kind == "structural":
        return OpWeights([(k, sources, targets, np.ones(len(sources)))])
    channels = call.output.shape[1]
    per_channel = call.output[0].numel() // channels
    leaf = call.inputs[0].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        output = call.replay(leaf)
        seeds = torch.eye(per_channel, dtype=output.dtype).reshape(per_channel, 1, 1, per_channel)
        seeds = seeds.expand(per_channel, 1, channels, per_channel).reshape(per_channel, *output.shape)
        (grads,) = torch.autograd.grad(output, leaf, seeds, is_grads_batched=True)
    jacobian = grads.reshape(per_channel, channels, per_channel).double().numpy()  # [out j, channel, in i]
    weights = jacobian[targets % per_channel, targets // per_channel, sources % per_channel]
    parts = [(k, sources, targets, weights)]
    return OpWeights(parts, _tangent_offset(call, parts))


def _softmax(call: OpCall, entry: Operation, kind: str) -> OpWeights:
    """Softmax: structural 1, local ``s_i (delta_ij - s_j)``."""
    return _softmax_weights(call, entry, kind, log=False)


def _log_softmax(call: OpCall, entry: Operation, kind: str) -> OpWeights:
    """Log-softmax: structural 1, local ``delta_ij - s_j`` with ``s`` the softmax."""
    return _softmax_weights(call, entry, kind, log=True)


def _softmax_weights(call: OpCall, entry: Operation, kind: str, log: bool) -> OpWeights:
    ((k, sources, targets),) = _positions(call, entry)
    if kind == "structural":
        return OpWeights([(k, sources, targets, np.ones(len(sources)))])
    output = _flat(call.output)
    probabilities = np.exp(output) if log else output
    weights = (sources == targets) - probabilities[sources]
    parts = [(k, sources, targets, weights if log else probabilities[targets] * weights)]
    return OpWeights(parts, _tangent_offset(call, parts))


def _linear(call: OpCall, entry: Operation, kind: str) -> OpWeights:
    """``Linear``: ``W[o, i]``; offset the bias."""
    ((k, sources, targets),) = _positions(call, entry)
    weight = entry.argument(call, "weight").detach().double().cpu().numpy()
    out_features, in_features = weight.shape
    parts = [(k, sources, targets, weight[targets % out_features, sources % in_features])]
    if kind == "structural":
        return OpWeights(parts)
    prefixes = call.output[0].numel() // out_features
    return OpWeights(parts, np.tile(_bias(entry, call, out_features), prefixes))


def _bias(entry: Operation, call: OpCall, size: int) -> np.ndarray:
    bias = entry.argument(call, "bias")
    return np.zeros(size) if bias is None else bias.detach().double().cpu().numpy()


def _windowed(call: OpCall, entry: Operation, kind: str) -> OpWeights:
    """Convolution: kernel entries; average pooling: ``1 / divisor``; max pooling: 1, local the argmax."""
    window = call_window(call, entry)
    sources, targets, taps = window_reads(call, window)
    out_shape = tuple(call.output.shape[1:])
    out_spatial = int(np.prod(out_shape[1:]))
    if window.kind == "conv":
        weights = window.weight.detach().double().cpu().numpy().reshape(-1)[taps]
    elif window.kind in ("max", "adaptive_max"):
        weights = np.ones(len(sources))
        if kind == "local":
            ((_, best_sources, best_targets),) = EDGE_RULES[EdgeRule.WINDOWED](call, entry, False)
            best = np.empty(call.output[0].numel(), dtype=np.int64)
            best[best_targets] = best_sources
            weights = (sources == best[targets]).astype(np.float64)
    elif window.kind == "avg":
        weights = 1.0 / _divisor(call, entry, window)[targets % out_spatial]
    else:  # adaptive average: 1 / the number of reads of the window
        weights = 1.0 / np.bincount(targets)[targets]
    if kind == "structural":
        return OpWeights([(0, sources, targets, weights)])
    bias = np.zeros(out_shape[0])
    if window.kind == "conv":
        bias = _bias(entry, call, out_shape[0])
    return OpWeights([(0, sources, targets, weights)], np.repeat(bias, out_spatial))


def _divisor(call: OpCall, entry: Operation, window: Window) -> np.ndarray:
    """Average pooling's divisor per output position (PyTorch's rule, per axis then multiplied)."""
    out_spatial = tuple(call.output.shape[2:])
    override = entry.argument(call, "divisor_override")
    if override:
        return np.full(int(np.prod(out_spatial)), float(override))
    include_pad = bool(entry.argument(call, "count_include_pad", True))
    divisor = np.ones(1)
    for a, n_out in enumerate(out_spatial):
        n_in, (pad, _) = call.inputs[0].shape[2 + a], window.padding[a]
        start = np.arange(n_out) * window.stride[a] - pad
        stop = np.minimum(start + window.kernel[a], n_in + pad)
        if not include_pad:
            start, stop = np.maximum(start, 0), np.minimum(stop, n_in)
        divisor = (divisor[:, None] * (stop - start)[None, :]).reshape(-1)
    return divisor.astype(np.float64)


def _composite(call: OpCall, entry: Operation, kind: str) -> OpWeights:
    """A container: its operations traced, their weights multiplied along paths (sparse products).

    ``local``: the chain rule, so the exact Jacobian of the container, and its offset propagated
    the same way; ``structural``: the products of the inner structural weights.
    """
    with torch.no_grad():
        inner = record_graph_module(fx_trace(call.target), call.inputs[0])
    if inner.output_layer is None:
        raise UnsupportedLayerError(f"{call.kind} does not return a single tensor computed from its input")
    sizes = [layer.size for layer in inner.layout.layers]
    maps = [sp.eye_array(sizes[0], format="csr")]
    offsets = [np.zeros(sizes[0])]
    for index in range(1, len(sizes)):
        inner_call = inner.calls[index]
        try:
            weights = operation_weights(inner_call, kind)
        except UnsupportedLayerError as error:
            name = inner.layout.layers[index].name
            raise UnsupportedLayerError(f"inside {call.kind}, at {name!r}: {error}") from None
        total = sp.csr_array((sizes[index], sizes[0]))
        offset = weights.bias if kind == "local" else np.zeros(sizes[index])
        for k, sources, targets, values in weights.parts:
            parent = inner_call.input_layers[k]
            block = sp.csr_array((values, (targets, sources)), shape=(sizes[index], sizes[parent]))
            total = total + block @ maps[parent]
            offset = offset + block @ offsets[parent]
        maps.append(total.tocsr())
        offsets.append(offset)
    ((k, sources, targets),) = _positions(call, entry)
    weights = np.asarray(maps[inner.output_layer][targets, sources], dtype=np.float64).reshape(-1)
    return OpWeights(
        [(k, sources, targets, weights)], offsets[inner.output_layer] if kind == "local" else None
    )


#: The rule of each :class:`~nsp_pipeline.model.ops.WeightRule`: ``rule(call, entry, kind) -> OpWeights``.
WEIGHT_RULES: dict[WeightRule, Callable[[OpCall, Operation, str], OpWeights]] = {
    WeightRule.MOVEMENT: _movement,
    WeightRule.AFFINE: _affine,
    WeightRule.PRODUCT: _product,
    WeightRule.QUOTIENT: _quotient,
    WeightRule.SLOPE: _slope,
    WeightRule.NORMALISATION: _batch_norm,
    WeightRule.CHANNELS: _channels,
    WeightRule.WINDOWED: _windowed,
    WeightRule.LINEAR: _linear,
    WeightRule.SOFTMAX: _softmax,
    WeightRule.LOG_SOFTMAX: _log_softmax,
    WeightRule.COMPOSITE: _composite,
}
