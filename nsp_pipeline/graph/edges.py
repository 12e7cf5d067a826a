"""Neuron-level edges of one operation, derived analytically from its type and parameters.

Each rule maps an :class:`~nsp_pipeline.model.capture.OpCall` to arrays of edges
``(input k, source position in input k, target position in the output)``, positions
being C-order flat indices of the per-sample tensors. With ``incl=True`` every structural
edge is kept (even with weight 0); with ``incl=False`` only edges whose partial derivative
is non-zero at the recorded input.

Rule families:

- windowed (convolution and pooling, also adaptive): per spatial axis, which input
  positions each output position reads (kernel, stride, padding, dilation, ``ceil_mode``,
  padding mode), combined over axes and channels (``groups``);
- ``Linear`` on the last axis;
- elementwise (activations, normalisation in eval mode, dropout, arithmetic with
  broadcasting): output position ``p`` reads position ``p`` of every (broadcast) input;
- data movement (view, reshape, flatten, permute, cat, slicing, zero padding, nearest
  upsampling): the operation is replayed on tensors holding each input element's index,
  so the output says exactly where each value came from;
- softmax along one axis: each output reads the whole line along that axis.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from nsp_pipeline.core.errors import UnsupportedLayerError
from nsp_pipeline.model.capture import OpCall, fx_trace, record_graph_module

Edges = list[tuple[int, np.ndarray, np.ndarray]]


ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
    nn.Hardshrink, nn.Softshrink, nn.Tanhshrink, nn.LogSigmoid, nn.Threshold, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
)  # fmt: skip
ELEMENTWISE_FUNCTIONS = {
    F.relu, F.relu_, F.relu6, F.leaky_relu, F.prelu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish,
    F.sigmoid, F.tanh, F.softplus, F.softsign, F.hardtanh, F.hardswish, F.hardsigmoid, F.hardshrink,
    F.softshrink, F.tanhshrink, F.logsigmoid, F.threshold, F.dropout, F.dropout1d, F.dropout2d,
    F.alpha_dropout, F.batch_norm,
    torch.relu, torch.sigmoid, torch.tanh, torch.exp, torch.log, torch.abs, torch.neg, torch.sqrt,
    torch.square, torch.sin, torch.cos, torch.clamp, torch.add, torch.sub, torch.mul, torch.div,
    torch.maximum, torch.minimum, torch.where,
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.pos,
    operator.iadd, operator.imul,
}  # fmt: skip
ELEMENTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "exp", "log", "abs", "neg", "sqrt",
    "square", "clamp", "clamp_", "add", "add_", "sub", "mul", "mul_", "div", "float", "double",
    "__add__", "__radd__", "__mul__", "__rmul__", "__sub__", "__truediv__",
}  # fmt: skip
MOVEMENT_MODULES = (
    nn.Flatten, nn.Unflatten, nn.ZeroPad1d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d,
    nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle,
)  # fmt: skip
MOVEMENT_FUNCTIONS = {
    torch.flatten, torch.reshape, torch.cat, torch.concat, torch.stack, torch.permute, torch.transpose,
    torch.squeeze, torch.unsqueeze, torch.narrow, torch.movedim, torch.t, torch.unflatten,
    operator.getitem, F.pad, F.pixel_shuffle, F.pixel_unshuffle,
}  # fmt: skip
MOVEMENT_METHODS = {
    "view", "reshape", "flatten", "unflatten", "permute", "transpose", "squeeze", "unsqueeze",
    "contiguous", "narrow", "movedim", "t", "view_as", "reshape_as", "expand", "expand_as",
    "__getitem__",
}  # fmt: skip
SOFTMAX = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}
#: Data movement that only reshapes or reorders the elements of one tensor (a bijection):
#: merged into the layer before under granularity ``merged``.
SHAPE_ONLY_MODULES = (nn.Flatten, nn.Unflatten, nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle)
SHAPE_ONLY_FUNCTIONS = {
    torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze,
    torch.movedim, torch.t, torch.unflatten, F.pixel_shuffle, F.pixel_unshuffle,
}  # fmt: skip
SHAPE_ONLY_METHODS = {
    "view", "reshape", "flatten", "unflatten", "permute", "transpose", "squeeze", "unsqueeze",
    "contiguous", "movedim", "t", "view_as", "reshape_as",
}  # fmt: skip


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


def is_shape_only(call: OpCall) -> bool:
    """Whether an operation on one layer only reshapes or reorders its elements (``SHAPE_ONLY_*``)."""
    target = call.target
    if len(call.inputs) != 1:
        return False
    if isinstance(target, nn.Module):
        return isinstance(target, SHAPE_ONLY_MODULES)
    if isinstance(target, str):
        return target in SHAPE_ONLY_METHODS
    return target in SHAPE_ONLY_FUNCTIONS


def is_unary_elementwise(call: OpCall) -> bool:
    """Whether an operation maps each element of one layer to the element at its position, nothing else."""
    if len(call.inputs) != 1 or call.output.shape != call.inputs[0].shape or _batch_statistics(call):
        return False
    target = call.target
    if isinstance(target, nn.Module):
        return isinstance(target, ELEMENTWISE_MODULES)
    if isinstance(target, str):
        return target in ELEMENTWISE_METHODS
    return target in ELEMENTWISE_FUNCTIONS


def _batch_statistics(call: OpCall) -> bool:
    """Batch norm with the statistics of the sample itself (no running statistics, or training)."""
    target = call.target
    if isinstance(target, nn.modules.batchnorm._BatchNorm):
        return target.running_mean is None
    return target is F.batch_norm and bool(
        _arguments(_BATCH_NORM_PARAMETERS, call.args, call.kwargs).get("training")
    )


def _operation_edges(call: OpCall, incl: bool) -> Edges:
    """Edges of the operation alone, between the tensors it reads and its output."""
    target = call.target
    if _batch_statistics(call):
        return _channel_mixing(call)
    if isinstance(target, nn.Module):
        if isinstance(target, ELEMENTWISE_MODULES):
            return _elementwise(call, incl)
        if isinstance(target, MOVEMENT_MODULES) or (
            isinstance(target, nn.Upsample) and target.mode == "nearest"
        ):
            return _movement(call)
        if isinstance(target, nn.Linear):
            return _linear(call, target.weight, incl)
        if isinstance(target, nn.Softmax | nn.LogSoftmax):
            return _softmax(call, target.dim)
        window = module_window(target)
        if window is not None:
            return _windowed(call, window, incl)
        if is_container(target):
            return _composite(call, incl)
    elif isinstance(target, str):
        if target in ELEMENTWISE_METHODS:
            return _elementwise(call, incl)
        if target in MOVEMENT_METHODS:
            return _movement(call)
        if target in ("softmax", "log_softmax"):
            return _softmax(call, _arguments(("input", "dim"), call.args, call.kwargs).get("dim"))
    else:
        if target in ELEMENTWISE_FUNCTIONS:
            return _elementwise(call, incl)
        if target in MOVEMENT_FUNCTIONS:
            return _movement(call)
        if target is F.linear:
            return _linear(call, _arguments(("input", "weight"), call.args, call.kwargs)["weight"], incl)
        if target in SOFTMAX:
            return _softmax(call, _arguments(("input", "dim"), call.args, call.kwargs).get("dim"))
        if target is F.interpolate and _interpolation_mode(call) == "nearest":
            return _movement(call)
        window = function_window(call)
        if window is not None:
            return _windowed(call, window, incl)
    raise UnsupportedLayerError(f"no neuron-edge rule for {call.kind} ({_target_text(target)})")


def supported_operations() -> list[str]:
    """Names of every module, function and method with an edge rule."""
    modules = [*ELEMENTWISE_MODULES, *MOVEMENT_MODULES, nn.Upsample, nn.Linear, nn.Softmax, nn.LogSoftmax]
    modules += [*_WINDOW_MODULES]
    functions = ELEMENTWISE_FUNCTIONS | MOVEMENT_FUNCTIONS | SOFTMAX | {F.linear, F.interpolate}
    functions |= set(_WINDOW_FUNCTIONS)
    names = {m.__name__ for m in modules}
    names |= {getattr(f, "__name__", repr(f)) for f in functions}
    names |= {f"Tensor.{m}" for m in ELEMENTWISE_METHODS | MOVEMENT_METHODS | {"softmax", "log_softmax"}}
    return sorted(names)


def _target_text(target) -> str:
    if isinstance(target, nn.Module):
        return f"module {type(target).__module__}.{type(target).__name__}"
    if isinstance(target, str):
        return f"tensor method .{target}()"
    return f"function {getattr(target, '__module__', '')}.{getattr(target, '__name__', repr(target))}"


def _arguments(names: tuple[str, ...], args: tuple, kwargs: dict) -> dict:
    """Arguments of a call by parameter name (many torch functions have no Python signature)."""
    return dict(zip(names, args)) | dict(kwargs)


def _interpolation_mode(call: OpCall) -> str:
    names = ("input", "size", "scale_factor", "mode")
    return _arguments(names, call.args, call.kwargs).get("mode", "nearest")


def _sample_numel(tensor: torch.Tensor) -> int:
    return tensor[0].numel()


# ---------------------------------------------------------------------------------------------
# Elementwise and data movement


def _elementwise(call: OpCall, incl: bool) -> Edges:
    out_shape = call.output.shape
    n_out = _sample_numel(call.output)
    targets = np.arange(n_out)
    edges: Edges = []
    partials = None if incl else _elementwise_partials(call)
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


def _elementwise_partials(call: OpCall) -> list[np.ndarray]:
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


def _movement(call: OpCall) -> Edges:
    """Replay a data-movement operation on element codes to see where each output value came from."""
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


_BATCH_NORM_PARAMETERS = ("input", "running_mean", "running_var", "weight", "bias", "training")


def _channel_mixing(call: OpCall) -> Edges:
    """Normalisation with statistics of the sample itself: each output reads its whole channel."""
    shape = call.output.shape[1:]
    channels, per_channel = shape[0], shape[1:].numel()
    positions = np.arange(shape.numel()).reshape(channels, per_channel)
    sources = np.repeat(positions, per_channel, axis=0).reshape(-1)
    targets = np.repeat(positions.reshape(-1), per_channel)
    return [(0, sources, targets)]


def _softmax(call: OpCall, dim: int | None) -> Edges:
    """Softmax mixes every element of a line along ``dim``."""
    shape = call.output.shape
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


def is_container(module: nn.Module) -> bool:
    """A module that is not a ``torch.nn`` building block (``Sequential`` or user-defined)."""
    return isinstance(module, nn.Sequential) or not type(module).__module__.startswith("torch.nn")


def _composite(call: OpCall, incl: bool) -> Edges:
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


def _linear(call: OpCall, weight: torch.Tensor, incl: bool) -> Edges:
    (tensor,) = call.inputs[:1]
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


@dataclass(frozen=True)
class Window:
    """Per-axis geometry of a convolution or pooling.

    Parameters
    ----------
    kind : {"conv", "max", "avg", "adaptive_avg", "adaptive_max"}
        Operation family.
    kernel, stride, dilation : tuple of int
        Per spatial axis (unused for adaptive pooling).
    padding : tuple of (int, int)
        ``(before, after)`` per spatial axis.
    padding_mode : str
        ``"zeros"`` or a mode of ``torch.nn.functional.pad`` (``reflect``, ``replicate``, ``circular``).
    groups : int
        Convolution groups (1 for pooling).
    weight : torch.Tensor or None
        Convolution weight ``(C_out, C_in / groups, *kernel)``.
    ceil_mode : bool
        Pooling ``ceil_mode`` (the output size already reflects it).
    """

    kind: str
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    padding_mode: str = "zeros"
    groups: int = 1
    weight: torch.Tensor | None = None
    ceil_mode: bool = False


_WINDOW_MODULES = (
    nn.Conv1d, nn.Conv2d, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)  # fmt: skip
_CONV_PARAMETERS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_POOL_PARAMETERS = {
    "max": ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "avg": (
        "input",
        "kernel_size",
        "stride",
        "padding",
        "ceil_mode",
        "count_include_pad",
        "divisor_override",
    ),
}
_WINDOW_FUNCTIONS = {
    F.conv1d: ("conv", 1), F.conv2d: ("conv", 2), F.max_pool1d: ("max", 1), F.max_pool2d: ("max", 2),
    F.avg_pool1d: ("avg", 1), F.avg_pool2d: ("avg", 2), F.adaptive_avg_pool1d: ("adaptive_avg", 1),
    F.adaptive_avg_pool2d: ("adaptive_avg", 2), F.adaptive_max_pool1d: ("adaptive_max", 1),
    F.adaptive_max_pool2d: ("adaptive_max", 2),
}  # fmt: skip


def _per_axis(value, n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    return value if len(value) == n else value * n


def _conv_padding(padding, kernel, dilation, n: int) -> tuple[tuple[int, int], ...]:
    if padding == "valid":
        return ((0, 0),) * n
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((p, p) for p in _per_axis(padding, n))


def module_window(module: nn.Module) -> Window | None:
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        n = module.weight.ndim - 2
        kernel, dilation = _per_axis(module.kernel_size, n), _per_axis(module.dilation, n)
        return Window(
            "conv", kernel, _per_axis(module.stride, n), dilation,
            _conv_padding(module.padding, kernel, dilation, n), module.padding_mode,
            module.groups, module.weight,
        )  # fmt: skip
    if isinstance(module, nn.MaxPool1d | nn.MaxPool2d | nn.AvgPool1d | nn.AvgPool2d):
        n = 1 if isinstance(module, nn.MaxPool1d | nn.AvgPool1d) else 2
        kind = "max" if isinstance(module, nn.MaxPool1d | nn.MaxPool2d) else "avg"
        kernel = _per_axis(module.kernel_size, n)
        stride = _per_axis(module.stride or module.kernel_size, n)
        dilation = _per_axis(getattr(module, "dilation", 1), n)
        padding = tuple((p, p) for p in _per_axis(module.padding, n))
        return Window(kind, kernel, stride, dilation, padding, ceil_mode=module.ceil_mode)
    if isinstance(module, nn.AdaptiveAvgPool1d | nn.AdaptiveAvgPool2d):
        return Window("adaptive_avg", (), (), (), ())
    if isinstance(module, nn.AdaptiveMaxPool1d | nn.AdaptiveMaxPool2d):
        return Window("adaptive_max", (), (), (), ())
    return None


def function_window(call: OpCall) -> Window | None:
    entry = _WINDOW_FUNCTIONS.get(call.target)
    if entry is None:
        return None
    kind, n = entry
    if kind.startswith("adaptive"):
        return Window(kind, (), (), (), ())
    args = _arguments(_CONV_PARAMETERS if kind == "conv" else _POOL_PARAMETERS[kind], call.args, call.kwargs)
    if kind == "conv":
        kernel = tuple(args["weight"].shape[2:])
        dilation = _per_axis(args.get("dilation", 1), n)
        return Window(
            "conv", kernel, _per_axis(args.get("stride", 1), n), dilation,
            _conv_padding(args.get("padding", 0), kernel, dilation, n), "zeros",
            int(args.get("groups", 1)), args["weight"],
        )  # fmt: skip
    kernel = _per_axis(args["kernel_size"], n)
    stride = _per_axis(args.get("stride") or args["kernel_size"], n)
    padding = tuple((p, p) for p in _per_axis(args.get("padding", 0), n))
    dilation = _per_axis(args.get("dilation", 1), n)
    return Window(kind, kernel, stride, dilation, padding, ceil_mode=bool(args.get("ceil_mode", False)))


def axis_windows(n_in: int, n_out: int, window: Window, axis: int) -> tuple[np.ndarray, ...]:
    """Along one spatial axis: ``(output position, input position, kernel tap)`` of every read."""
    o = np.arange(n_out)
    if window.kind.startswith("adaptive"):
        start = (o * n_in) // n_out
        stop = -((-(o + 1) * n_in) // n_out)
        width = int((stop - start).max())
        taps = np.arange(width)
        positions = start[:, None] + taps[None, :]
        valid = positions < stop[:, None]
        out = np.broadcast_to(o[:, None], positions.shape)
        return out[valid], positions[valid], np.broadcast_to(taps, positions.shape)[valid]
    kernel, stride, dilation = window.kernel[axis], window.stride[axis], window.dilation[axis]
    before, after = window.padding[axis]
    taps = np.arange(kernel)
    padded = o[:, None] * stride + taps[None, :] * dilation  # position in the padded axis
    if window.padding_mode == "zeros":
        source = padded - before
        valid = (source >= 0) & (source < n_in)
    else:
        codes = torch.arange(1, n_in + 1, dtype=torch.float64).reshape(1, 1, n_in)
        mapping = F.pad(codes, (before, after), mode=window.padding_mode).reshape(-1).long().numpy() - 1
        valid = padded < len(mapping)
        source = np.where(valid, mapping[np.minimum(padded, len(mapping) - 1)], -1)
    out = np.broadcast_to(o[:, None], padded.shape)
    tap = np.broadcast_to(taps[None, :], padded.shape)
    return out[valid], source[valid], tap[valid]


def _windowed(call: OpCall, window: Window, incl: bool) -> Edges:
    tensor = call.inputs[0]
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
        ci_local = np.zeros(c_in, dtype=np.int64)
    sources = (ci[:, None] * in_spatial + in_pos[None, :]).reshape(-1)
    targets = (co[:, None] * out_spatial + out_pos[None, :]).reshape(-1)
    if window.kind == "conv" and not incl:
        taps_per_channel = int(np.prod(window.weight.shape[2:]))
        weights = window.weight.detach().cpu().double().numpy().reshape(-1)
        flat = ((co * per_group_in + ci_local)[:, None] * taps_per_channel + tap_pos[None, :]).reshape(-1)
        return [(0, *_nonzero_sums(sources, targets, weights[flat]))]
    return [(0, sources, targets)]


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
