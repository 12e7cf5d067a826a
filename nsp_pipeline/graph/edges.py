"""Neuron-level edges of one operation, derived analytically from its type and parameters.

Each rule maps an :class:`~nsp_pipeline.model.records.OpCall` to arrays of edges
``(input k, source position in input k, target position in the output)``, positions
being C-order flat indices of the per-sample tensors. With ``incl=True`` every structural
edge is kept (even with weight 0); with ``incl=False`` only edges whose partial derivative
is non-zero at the recorded input.

Which rule applies is the operation's entry in the registry (:mod:`nsp_pipeline.model.ops`,
:class:`~nsp_pipeline.model.ops.EdgeRule`); the rules:

- windowed (convolution and pooling, also adaptive): per spatial axis, which input
  positions each output position reads (kernel, stride, padding, dilation, ``ceil_mode``,
  padding mode), combined over axes and channels (``groups``);
- linear on the last axis;
- elementwise (activations, normalisation in eval mode, dropout, arithmetic with
  broadcasting): output position ``p`` reads position ``p`` of every (broadcast) input;
- channels (normalisation with the sample's own statistics): each output reads its channel;
- data movement (view, reshape, flatten, permute, cat, slicing, zero padding, nearest
  upsampling): the operation is replayed on tensors holding each input element's index,
  so the output says exactly where each value came from;
- softmax along one axis: each output reads the whole line along that axis;
- composite (containers): the container traced, the edges of its operations composed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from nsp_pipeline.core.errors import UnsupportedLayerError
from nsp_pipeline.model.capture import fx_trace, record_graph_module
from nsp_pipeline.model.ops import EdgeRule, Operation, lookup
from nsp_pipeline.model.records import OpCall
from nsp_pipeline.model.windows import Window, axis_windows, call_window

Edges = list[tuple[int, np.ndarray, np.ndarray]]


def op_edges(call: OpCall, incl: bool = True) -> Edges:
    """Edges of one operation: list of ``(input k, source positions, target positions)``.

    Sources are positions in the input layers: for a layer of granularity ``merged``, the
    operation's own edges composed with the merged shape-only operations it reads through
    (``call.moves``); with ``incl=False`` its targets where the merged unary operations
    (``call.absorbed``) have slope 0 at the recorded input lose every in-edge, as the
    partial derivatives of the composite are 0 there.

    Raises
    ------
    UnsupportedLayerError
        If no rule covers the operation (the message names the type).
    """
    edges = _operation_edges(call, incl)
    if call.absorbed and not incl:
        live = _absorbed_slopes(call) != 0
        edges = [(k, sources[live[targets]], targets[live[targets]]) for k, sources, targets in edges]
    return [(k, _layer_positions(call, k, sources), targets) for k, sources, targets in edges]


def _layer_positions(call: OpCall, k: int, sources: np.ndarray) -> np.ndarray:
    positions = call.read_positions(k)
    return sources if positions is None else positions[sources]


def _absorbed_slopes(call: OpCall) -> np.ndarray:
    """Per output element, the derivative of the merged unary operations' result (the layer's value)."""
    output = call.absorbed[0].inputs[0].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        value = output.clone()  # merged operations may work in place
        for merged in call.absorbed:
            value = merged.replay(value)
        (slopes,) = torch.autograd.grad(value.sum(), output, allow_unused=True)
    return np.zeros(output.numel()) if slopes is None else slopes.reshape(-1).numpy()


def _operation_edges(call: OpCall, incl: bool) -> Edges:
    """Edges of the operation alone, between the tensors it reads and its output."""
    entry = lookup(call)
    return EDGE_RULES[entry.edges](call, entry, incl)


def _sample_numel(tensor: torch.Tensor) -> int:
    return tensor[0].numel()


# ---------------------------------------------------------------------------------------------
# Elementwise and data movement


def _elementwise(call: OpCall, entry: Operation, incl: bool) -> Edges:
    out_shape = call.output.shape
    n_out = _sample_numel(call.output)
    targets = np.arange(n_out)
    edges: Edges = []
    partials = None if incl else elementwise_partials(call)
    for k, tensor in enumerate(call.inputs):
        positions = torch.arange(tensor.numel()).reshape(tensor.shape)
        try:
            sources = torch.broadcast_to(positions, out_shape).reshape(-1).numpy()
        except RuntimeError as error:
            raise UnsupportedLayerError(
                f"{call.kind}: input {k} of shape {tuple(tensor.shape)} does not broadcast to the "
                f"output shape {tuple(out_shape)}, so it is not elementwise"
            ) from error
        keep = slice(None) if partials is None else partials[k] != 0
        edges.append((k, sources[keep], targets[keep]))
    return edges


def elementwise_partials(call: OpCall) -> list[np.ndarray]:
    """Partial derivative of each output element with respect to its own input element."""
    out_shape = call.output.shape
    leaves = [t.detach().expand(out_shape).clone() for t in call.inputs]
    differentiable = [leaf for leaf in leaves if leaf.is_floating_point()]
    for leaf in differentiable:
        leaf.requires_grad_(True)
    with torch.enable_grad():
        output = call.replay(*(leaf.clone() for leaf in leaves))
        grads = torch.autograd.grad(output.sum(), differentiable, allow_unused=True)
    found = {id(leaf): g for leaf, g in zip(differentiable, grads)}
    zeros = np.zeros(out_shape.numel())
    return [
        zeros if found.get(id(leaf)) is None else found[id(leaf)].reshape(-1).detach().numpy()
        for leaf in leaves
    ]


def _movement(call: OpCall, entry: Operation, incl: bool) -> Edges:
    """Replay a data-movement operation on element codes to see where each output value came from.

    Every moved value has partial derivative 1, so ``incl`` changes nothing.
    """
    sizes = [t.numel() for t in call.inputs]
    bases = np.concatenate([[0], np.cumsum(sizes)])
    codes = [
        (torch.arange(t.numel(), dtype=torch.float64) + 1 + int(base)).reshape(t.shape)
        for t, base in zip(call.inputs, bases)
    ]
    moved = call.replay(*codes)
    if not isinstance(moved, torch.Tensor) or moved.shape != call.output.shape:
        raise UnsupportedLayerError(f"{call.kind} did not replay as a pure data movement")
    # Constants written by the op (a pad value) are the same on zero inputs: remove them.
    constants = call.replay(*(torch.zeros_like(c) for c in codes))
    flat = (moved - constants).reshape(-1).numpy()
    if not np.array_equal(flat, np.round(flat)) or flat.min() < 0 or flat.max() > bases[-1]:
        raise UnsupportedLayerError(f"{call.kind} computes new values, it is not a pure data movement")
    targets = np.flatnonzero(flat)
    codes_out = flat[targets].astype(np.int64) - 1
    which = np.searchsorted(bases, codes_out, side="right") - 1
    return [(k, codes_out[which == k] - bases[k], targets[which == k]) for k in range(len(sizes))]


def _channel_mixing(call: OpCall, entry: Operation, incl: bool) -> Edges:
    """Normalisation with statistics of the sample itself: each output reads its whole channel."""
    shape = call.output.shape[1:]
    channels, per_channel = shape[0], shape[1:].numel()
    positions = np.arange(shape.numel()).reshape(channels, per_channel)
    sources = np.repeat(positions, per_channel, axis=0).reshape(-1)
    targets = np.repeat(positions.reshape(-1), per_channel)
    return [(0, sources, targets)]


def _softmax(call: OpCall, entry: Operation, incl: bool) -> Edges:
    """Softmax mixes every element of a line along ``dim``."""
    shape, dim = call.output.shape, entry.argument(call, "dim")
    if dim is None:
        raise UnsupportedLayerError(f"{call.kind} without an explicit dim is not supported")
    dim = dim % len(shape)
    if dim == 0:
        raise UnsupportedLayerError(f"{call.kind} along the batch axis mixes samples")
    positions = np.arange(shape.numel()).reshape(tuple(shape))
    lines = np.moveaxis(positions, dim, -1).reshape(-1, shape[dim])
    sources = np.repeat(lines, shape[dim], axis=0).reshape(-1)
    targets = np.repeat(lines.reshape(-1), shape[dim])
    return [(0, sources, targets)]


def _composite(call: OpCall, entry: Operation, incl: bool) -> Edges:
    """Edges of a container module: which of its input neurons reach each output neuron."""
    with torch.no_grad():
        inner = record_graph_module(fx_trace(call.target), call.inputs[0])
    if inner.output_layer is None:
        raise UnsupportedLayerError(f"{call.kind} does not return a single tensor computed from its input")
    sizes = [layer.size for layer in inner.layout.layers]
    reach = [sp.eye_array(sizes[0], format="csr", dtype=np.int64)]
    for index in range(1, len(sizes)):
        inner_call = inner.calls[index]
        try:
            parts = op_edges(inner_call, incl)
        except UnsupportedLayerError as error:
            name = inner.layout.layers[index].name
            raise UnsupportedLayerError(f"inside {call.kind}, at {name!r}: {error}") from None
        total = sp.csr_array((sizes[index], sizes[0]), dtype=np.int64)
        for k, sources, targets in parts:
            parent = inner_call.input_layers[k]
            local = sp.csr_array(
                (np.ones(len(sources), dtype=np.int64), (targets, sources)),
                shape=(sizes[index], sizes[parent]),
            )
            total = total + local @ reach[parent]
        reach.append((total > 0).astype(np.int64).tocsr())
    reached = reach[inner.output_layer].tocoo()
    return [(0, reached.col.astype(np.int64), reached.row.astype(np.int64))]


# ---------------------------------------------------------------------------------------------
# Linear


def _linear(call: OpCall, entry: Operation, incl: bool) -> Edges:
    (tensor,), weight = call.inputs[:1], entry.argument(call, "weight")
    out_features, in_features = weight.shape
    prefixes = _sample_numel(tensor) // in_features
    allowed = np.ones((out_features, in_features), dtype=bool)
    if not incl:
        allowed = weight.detach().cpu().numpy() != 0
    o, i = np.nonzero(allowed)
    p = np.arange(prefixes)[:, None]
    return [(0, (p * in_features + i).reshape(-1), (p * out_features + o).reshape(-1))]


# ---------------------------------------------------------------------------------------------
# Windowed operations: convolution, pooling, adaptive pooling


def _windowed(call: OpCall, entry: Operation, incl: bool) -> Edges:
    tensor, window = call.inputs[0], call_window(call, entry)
    in_shape, out_shape = tuple(tensor.shape[1:]), tuple(call.output.shape[1:])
    n_spatial = len(in_shape) - 1
    if len(out_shape) != len(in_shape) or n_spatial not in (1, 2):
        raise UnsupportedLayerError(
            f"{call.kind} on per-sample shape {in_shape}: expected (channels, length) or "
            "(channels, height, width)"
        )
    if window.kind == "max" and not incl:
        return _argmax_edges(call, window, n_spatial)
    if window.kind == "adaptive_max" and not incl:
        return _argmax_edges(call, window, n_spatial)
    sources, targets, taps = window_reads(call, window)
    if window.kind == "conv" and not incl:
        weights = window.weight.detach().cpu().double().numpy().reshape(-1)
        return [(0, *_nonzero_sums(sources, targets, weights[taps]))]
    return [(0, sources, targets)]


def window_reads(call: OpCall, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Every read of a windowed operation: source, target and (convolution) flat index into its weight."""
    in_shape, out_shape = tuple(call.inputs[0].shape[1:]), tuple(call.output.shape[1:])
    n_spatial = len(in_shape) - 1
    axes = [axis_windows(in_shape[1 + a], out_shape[1 + a], window, a) for a in range(n_spatial)]
    # Combine axes: every combination of one read per axis.
    out_pos, in_pos, tap_pos = axes[0]
    # Taps index the convolution kernel (pooling has no weights to look up).
    kernel_shape = window.kernel if window.kind == "conv" else (1,) * n_spatial
    for a in range(1, n_spatial):
        o2, i2, t2 = axes[a]
        out_pos = (out_pos[:, None] * out_shape[1 + a] + o2[None, :]).reshape(-1)
        in_pos = (in_pos[:, None] * in_shape[1 + a] + i2[None, :]).reshape(-1)
        tap_pos = (tap_pos[:, None] * kernel_shape[a] + t2[None, :]).reshape(-1)
    in_spatial, out_spatial = int(np.prod(in_shape[1:])), int(np.prod(out_shape[1:]))
    c_in, c_out = in_shape[0], out_shape[0]
    if window.kind == "conv":
        per_group_in = c_in // window.groups
        per_group_out = c_out // window.groups
        co = np.repeat(np.arange(c_out), per_group_in)
        ci_local = np.tile(np.arange(per_group_in), c_out)
        ci = (co // per_group_out) * per_group_in + ci_local
    else:
        co = ci = np.arange(c_in)
    sources = (ci[:, None] * in_spatial + in_pos[None, :]).reshape(-1)
    targets = (co[:, None] * out_spatial + out_pos[None, :]).reshape(-1)
    if window.kind != "conv":
        return sources, targets, None
    taps_per_channel = int(np.prod(kernel_shape))
    taps = ((co * per_group_in + ci_local)[:, None] * taps_per_channel + tap_pos[None, :]).reshape(-1)
    return sources, targets, taps


def _nonzero_sums(sources: np.ndarray, targets: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sum ``values`` over repeated (source, target) pairs and keep the pairs with a non-zero sum."""
    keys = targets.astype(np.int64) * (int(sources.max(initial=0)) + 1) + sources
    unique, inverse = np.unique(keys, return_inverse=True)
    sums = np.zeros(len(unique))
    np.add.at(sums, inverse, values)
    keep = sums != 0
    width = int(sources.max(initial=0)) + 1
    return unique[keep] % width, unique[keep] // width


def _argmax_edges(call: OpCall, window: Window, n_spatial: int) -> Edges:
    """Max pooling at the recorded input: each output reads only its maximum."""
    tensor = call.inputs[0]
    out_shape = tuple(call.output.shape[1:])
    if window.kind == "adaptive_max":
        pool = F.adaptive_max_pool1d if n_spatial == 1 else F.adaptive_max_pool2d
        _, argmax = pool(tensor, out_shape[1:], return_indices=True)
    else:
        pool = F.max_pool1d if n_spatial == 1 else F.max_pool2d
        _, argmax = pool(
            tensor, window.kernel, window.stride, [p[0] for p in window.padding], window.dilation,
            window.ceil_mode, return_indices=True,
        )  # fmt: skip
    in_spatial = int(np.prod(tensor.shape[2:]))
    channel = np.repeat(np.arange(out_shape[0]), int(np.prod(out_shape[1:])))
    sources = channel * in_spatial + argmax.reshape(-1).numpy()
    return [(0, sources, np.arange(len(sources)))]


#: The rule of each :class:`~nsp_pipeline.model.ops.EdgeRule`: ``rule(call, entry, incl) -> edges``.
EDGE_RULES: dict[EdgeRule, Callable[[OpCall, Operation, bool], Edges]] = {
    EdgeRule.ELEMENTWISE: _elementwise,
    EdgeRule.MOVEMENT: _movement,
    EdgeRule.CHANNELS: _channel_mixing,
    EdgeRule.WINDOWED: _windowed,
    EdgeRule.LINEAR: _linear,
    EdgeRule.SOFTMAX: _softmax,
    EdgeRule.COMPOSITE: _composite,
}
