"""The operation registry: everything the package knows about each supported operation, in one entry.

Each supported operation is one :class:`Operation` in :data:`OPERATIONS`. An entry names every
spelling of the operation (module classes, functions, tensor method names) and says

- its ``family`` (shape-only, movement, elementwise, normalisation, windowed, linear, softmax,
  container), from which the next three default;
- its ``edges`` rule, the :class:`EdgeRule` that :mod:`nsp_pipeline.graph.edges` applies;
- its ``relation``, the :class:`RelationKind` of its factorised ancestor relation
  (:mod:`nsp_pipeline.graph.relations`);
- whether it ``merges`` under granularity ``merged`` (:mod:`nsp_pipeline.model.merge`): as a
  shape-only bijection or as a unary elementwise operation;
- the parameter names of its functional form (``signature``), so that :meth:`Operation.argument`
  reads a parameter alike from a module's attribute and from a call's arguments, and the window
  geometry of convolutions and pooling (``window``);
- its ``weights`` rule, the :class:`WeightRule` that :mod:`nsp_pipeline.graph.weights` applies
  (structural and local edge weights, and the operation's affine offset);
- its ``kinks``: whether it is piecewise linear and where it bends (:func:`no_kinks` for affine
  operations, a function giving the kink sites of a call for piecewise-linear ones, ``None`` for
  operations that are not piecewise linear), read by :mod:`nsp_pipeline.interpret.regions`;
- slots for what later rules need (``affine``, ``gradient``).

:func:`lookup` finds the entry of a recorded call (module by class, function by identity, method
by name); :func:`supported_operations` lists every spelling of every entry.

Adding an operation is one entry in :data:`OPERATIONS`. For example, ``torch.erf`` (also
``x.erf()``) is elementwise: its edges, its factorised relation and its merging follow from
the family::

    Operation("erf", Family.ELEMENTWISE, functions=(torch.erf,), methods=("erf",)),

An operation whose edges no existing rule describes also needs a member of :class:`EdgeRule` and
its rule function in :mod:`nsp_pipeline.graph.edges` (``tests/test_ops.py`` checks that every rule
has one); likewise for its weights, a member of :class:`WeightRule` and its rule function in
:mod:`nsp_pipeline.graph.weights` (checked by ``tests/test_weights.py``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import nn

from nsp_pipeline.core.errors import UnsupportedLayerError
from nsp_pipeline.model.records import OpCall, target_kind


class Family(StrEnum):
    """What an operation does to the neurons it reads."""

    SHAPE_ONLY = "shape-only"  # reshapes or reorders the elements of one tensor (a bijection)
    MOVEMENT = "movement"  # copies elements: slicing, concatenation, padding, nearest upsampling
    ELEMENTWISE = "elementwise"  # output position p reads position p of every (broadcast) input
    NORMALISATION = "normalisation"  # elementwise with running statistics, else mixes each channel
    WINDOWED = "windowed"  # convolution and pooling
    LINEAR = "linear"  # mixes the last axis
    SOFTMAX = "softmax"  # mixes every line along one axis
    CONTAINER = "container"  # a module made of others (``Sequential``, user-defined)


class EdgeRule(StrEnum):
    """How :mod:`nsp_pipeline.graph.edges` derives an operation's neuron edges."""

    ELEMENTWISE = "elementwise"  # position to position, through broadcasting
    MOVEMENT = "movement"  # the operation replayed on element codes
    CHANNELS = "channels"  # each output reads its whole channel
    WINDOWED = "windowed"  # per-axis windows, combined over axes and channels
    LINEAR = "linear"  # every input feature of the last axis
    SOFTMAX = "softmax"  # every element of the line along ``dim``
    COMPOSITE = "composite"  # the container traced, its inner edges composed


class WeightRule(StrEnum):
    """How :mod:`nsp_pipeline.graph.weights` derives an operation's edge weights and affine offset.

    Per rule: the ``structural`` weight of an edge, its ``local`` weight (the partial derivative at
    the recorded input) and the offset ``b`` with ``output = sum(local weight * input) + b`` there.
    """

    MOVEMENT = "movement"  # copies: weight 1; offset: constants the operation writes (pad value)
    AFFINE = "affine"  # elementwise, affine in its inputs (add, sub, neg): weight = the constant partial
    PRODUCT = "product"  # mul: structural the constant factor when one operand is a constant, else 1
    QUOTIENT = "quotient"  # div: structural 1 / the divisor when it is a constant, else 1
    SLOPE = "slope"  # elementwise nonlinear (activations): structural 1, local the slope
    NORMALISATION = "normalisation"  # batch norm on running statistics: the scale gamma / sqrt(var + eps)
    CHANNELS = "channels"  # normalisation with the sample's own statistics: structural 1, local by autograd
    WINDOWED = "windowed"  # kernel entry (conv), 1 / divisor (average), 1 and the argmax (max)
    LINEAR = "linear"  # the weight matrix entry
    SOFTMAX = "softmax"  # structural 1, local s_i (delta_ij - s_j)
    LOG_SOFTMAX = "log_softmax"  # structural 1, local delta_ij - s_j
    COMPOSITE = "composite"  # the container traced, its inner weights multiplied along paths


class RelationKind(StrEnum):
    """How the factorised operator's builder relates an operation's output grid to its inputs."""

    RESHAPE = "reshape"  # keeps the grid of its one input (C order unchanged), else generic
    IDENTITY = "identity"  # identity on the common grid of inputs shaped as the output, else generic
    WINDOW = "window"  # per-axis windows and channel groups
    LINEAR = "linear"  # all-to-all on the features of a flat or (T, N) input, else generic
    GENERIC = "generic"  # the exact edges, factorised per axis where they are a per-axis product
    COMPOSITE = "composite"  # containers: traced, inner relations composed (graph.relations)


#: Per family: default weight rule of its entries.
_FAMILY_WEIGHTS: dict[Family, WeightRule] = {
    Family.SHAPE_ONLY: WeightRule.MOVEMENT,
    Family.MOVEMENT: WeightRule.MOVEMENT,
    Family.ELEMENTWISE: WeightRule.SLOPE,
    Family.NORMALISATION: WeightRule.NORMALISATION,
    Family.WINDOWED: WeightRule.WINDOWED,
    Family.LINEAR: WeightRule.LINEAR,
    Family.SOFTMAX: WeightRule.SOFTMAX,
    Family.CONTAINER: WeightRule.COMPOSITE,
}


class Merge(StrEnum):
    """Whether an operation on one layer merges into that layer under granularity ``merged``."""

    MOVE = "move"  # shape-only: later layers read the layer through it
    VALUE = "value"  # unary elementwise: the layer holds its value
    NEVER = "never"  # stays a layer


#: Per family: default edge rule, relation kind and merging of its entries.
_FAMILY_DEFAULTS: dict[Family, tuple[EdgeRule, RelationKind, Merge]] = {
    Family.SHAPE_ONLY: (EdgeRule.MOVEMENT, RelationKind.GENERIC, Merge.MOVE),
    Family.MOVEMENT: (EdgeRule.MOVEMENT, RelationKind.GENERIC, Merge.NEVER),
    Family.ELEMENTWISE: (EdgeRule.ELEMENTWISE, RelationKind.IDENTITY, Merge.VALUE),
    Family.NORMALISATION: (EdgeRule.ELEMENTWISE, RelationKind.IDENTITY, Merge.VALUE),
    Family.WINDOWED: (EdgeRule.WINDOWED, RelationKind.WINDOW, Merge.NEVER),
    Family.LINEAR: (EdgeRule.LINEAR, RelationKind.LINEAR, Merge.NEVER),
    Family.SOFTMAX: (EdgeRule.SOFTMAX, RelationKind.GENERIC, Merge.NEVER),
    Family.CONTAINER: (EdgeRule.COMPOSITE, RelationKind.COMPOSITE, Merge.NEVER),
}


@dataclass(frozen=True)
class Operation:
    """One supported operation and everything the package knows about it.

    Parameters
    ----------
    name : str
        Short name (``"relu"``, ``"conv2d"``).
    family : Family
        What it does to the neurons it reads; the defaults of ``edges``, ``relation``, ``merges``
        and ``weights``.
    modules : tuple of type
        Module classes (subclasses match too, the most derived registered class first).
    functions : tuple of callable
        Functions, matched by identity (``torch.relu``, ``operator.add``).
    methods : tuple of str
        Tensor method names (``"relu"`` for ``x.relu()``).
    edges : EdgeRule, optional
        Neuron-edge rule (default: the family's).
    relation : RelationKind, optional
        Factorised relation (default: the family's).
    merges : Merge, optional
        Merging under granularity ``merged`` (default: the family's). Merging also needs one input
        layer and, for ``Merge.VALUE``, an output of the input's shape.
    signature : tuple of str
        Parameter names of the functional form in positional order (the tensor first), for
        :meth:`argument`; a module's parameters are its attributes of the same names.
    window : (str, int), optional
        Windowed operations: the kind (``"conv"``, ``"max"``, ``"avg"``, ``"adaptive_avg"``,
        ``"adaptive_max"``) and the number of spatial axes (:mod:`nsp_pipeline.model.windows`).
    refine : callable, optional
        ``refine(entry, call)``: the entry as it applies to one call (a variant, e.g. batch norm
        with the sample's own statistics); raises :class:`UnsupportedLayerError` for a call the
        entry does not cover (e.g. interpolation other than ``nearest``).
    weights : WeightRule, optional
        Edge-weight rule (default: the family's).
    kinks : callable, optional
        Piecewise-linear operations: ``kinks(target, args, kwargs, varies)`` gives the kink sites
        of a call on a batch (``varies(value)``: whether an argument depends on the network's
        input), a tensor ``(batch, n_sites, n_pieces)``: the operation is affine wherever, at every
        site, the same piece is the largest (``argmax``, the first on ties); ``n_pieces == 1``
        means a sign site, bending where its value crosses 0. :func:`no_kinks` (returns ``None``)
        for affine operations. It raises :class:`UnsupportedLayerError` for a call that is not
        piecewise linear (a product of two inputs, batch statistics). ``None``: the operation is
        not piecewise linear (or not declared).
    affine, gradient : callable, optional
        Reserved for rules still to come: the affine map of a piecewise-linear operation, the
        gradient rule. ``None``: not declared.
    """

    name: str
    family: Family
    modules: tuple[type[nn.Module], ...] = ()
    functions: tuple[Callable, ...] = ()
    methods: tuple[str, ...] = ()
    edges: EdgeRule | None = None
    relation: RelationKind | None = None
    merges: Merge | None = None
    signature: tuple[str, ...] = ()
    window: tuple[str, int] | None = None
    refine: Callable[[Operation, OpCall], Operation] | None = None
    weights: WeightRule | None = None
    affine: Callable | None = None
    kinks: Callable | None = None
    gradient: Callable | None = None

    def __post_init__(self) -> None:
        edges, relation, merges = _FAMILY_DEFAULTS[self.family]
        object.__setattr__(self, "edges", self.edges or edges)
        object.__setattr__(self, "relation", self.relation or relation)
        object.__setattr__(self, "merges", self.merges or merges)
        object.__setattr__(self, "weights", self.weights or _FAMILY_WEIGHTS[self.family])

    def argument(self, call: OpCall, name: str, default=None):
        """Parameter ``name`` of a call: the module's attribute, or the function's argument.

        Function and method arguments are matched to ``signature`` by position, then by keyword
        (many torch functions have no Python signature).
        """
        if isinstance(call.target, nn.Module):
            return getattr(call.target, name, default)
        return (dict(zip(self.signature, call.args)) | dict(call.kwargs)).get(name, default)

    def spellings(self) -> list[str]:
        """The names :func:`supported_operations` lists for this entry."""
        names = [cls.__name__ for cls in self.modules]
        names += [getattr(function, "__name__", repr(function)) for function in self.functions]
        return names + [f"Tensor.{method}" for method in self.methods]


def _batch_statistics(entry: Operation, call: OpCall) -> Operation:
    """Batch norm normalising with the sample's own statistics mixes each channel.

    Such a call does not merge and its relation is the generic one. Modules were recorded in
    eval mode, so a module does so only without running statistics; a functional call says so
    with ``training``.
    """
    if isinstance(call.target, nn.Module):
        own = call.target.running_mean is None
    else:
        own = bool(entry.argument(call, "training", False))
    if own:
        return replace(
            entry,
            edges=EdgeRule.CHANNELS,
            relation=RelationKind.GENERIC,
            merges=Merge.NEVER,
            weights=WeightRule.CHANNELS,
        )
    return entry


def _nearest_only(entry: Operation, call: OpCall) -> Operation:
    """Only ``nearest`` interpolation copies values; other modes compute new ones."""
    mode = entry.argument(call, "mode", "nearest")
    if mode != "nearest":
        raise UnsupportedLayerError(
            f"no neuron-edge rule for {call.kind} ({_target_text(call.target)}) with mode {mode!r}: "
            "only mode 'nearest' is supported"
        )
    return entry


def no_kinks(target, args, kwargs, varies) -> None:
    """The ``kinks`` of an affine operation: none."""
    return None


def _parameter(target, args, kwargs, position: int, name: str, default=None):
    """Parameter ``name`` of a call: the module's attribute, else positional ``position`` or keyword."""
    if isinstance(target, nn.Module):
        return getattr(target, name, default)
    return args[position] if len(args) > position else kwargs.get(name, default)


def _input(args, kwargs) -> torch.Tensor:
    """The tensor a call operates on: its first argument."""
    return args[0] if args else kwargs["input"]


def _sign_sites(x: torch.Tensor, *levels) -> torch.Tensor:
    """Sign sites ``(batch, n_sites, 1)``: ``x − level`` for every element and level (element-major)."""
    if levels == (0,):
        return x.reshape(len(x), -1, 1)
    return torch.stack([x - level for level in levels], -1).reshape(len(x), -1, 1)


def _at(*levels: float) -> Callable:
    """Kinks where the input crosses fixed ``levels`` (ReLU at 0, ReLU6 at 0 and 6)."""

    def kinks(target, args, kwargs, varies):
        return _sign_sites(_input(args, kwargs), *levels)

    return kinks


def _at_parameters(*parameters: tuple[int, str, float], negated: bool = False) -> Callable:
    """Kinks where the input crosses levels given by the call's parameters ``(position, name, default)``.

    ``negated``: the levels ``−λ`` and ``λ`` of one parameter ``λ`` (hardshrink, softshrink).
    """

    def kinks(target, args, kwargs, varies):
        levels = [_parameter(target, args, kwargs, *parameter) for parameter in parameters]
        if negated:
            levels = [-levels[0], levels[0]]
        return _sign_sites(_input(args, kwargs), *levels)

    return kinks


def _clamp_kinks(target, args, kwargs, varies) -> torch.Tensor:
    """``clamp(x, min, max)`` bends where ``x`` crosses each bound given (bounds independent of the input)."""
    bounds = [_parameter(target, args, kwargs, position, name) for position, name in ((1, "min"), (2, "max"))]
    if any(varies(bound) for bound in bounds):
        raise UnsupportedLayerError(
            "clamp with bounds that depend on the input: use torch.maximum / torch.minimum"
        )
    return _sign_sites(_input(args, kwargs), *(bound for bound in bounds if bound is not None))


def _larger_kinks(sign: float) -> Callable:
    """``maximum(a, b)`` or ``minimum(a, b)`` (``sign`` 1, −1): the larger of ``sign·a``, ``sign·b``."""

    def kinks(target, args, kwargs, varies):
        first, second = torch.broadcast_tensors(*(torch.as_tensor(a, dtype=args[0].dtype) for a in args[:2]))
        return sign * torch.stack([first, second], -1).reshape(len(first), -1, 2)

    return kinks


def _max_pool_kinks(target, args, kwargs, varies) -> torch.Tensor:
    """Max pooling: one argmax site per output element, its pieces the elements of its window.

    Window elements in the padding are ``−inf`` (never the largest). The number of windows is read
    from the pooled output, so ``ceil_mode`` needs no formula of its own.
    """
    x = _input(args, kwargs)
    spatial = x.ndim - 2
    kernel, padding, dilation = (
        _per_axis(_parameter(target, args, kwargs, position, name, default), spatial)
        for position, name, default in ((1, "kernel_size", None), (3, "padding", 0), (4, "dilation", 1))
    )
    stride = _parameter(target, args, kwargs, 2, "stride")
    stride = kernel if stride is None or stride == [] or stride == () else _per_axis(stride, spatial)
    pooled = _pool_call(target, args, kwargs)
    windows = x
    for axis in range(spatial):
        dim = 2 + axis
        size = x.shape[dim]
        out = pooled.shape[dim]
        span = dilation[axis] * (kernel[axis] - 1) + 1
        right = max(0, (out - 1) * stride[axis] + span - size - padding[axis])
        pad = [0, 0] * (windows.ndim - dim - 1) + [padding[axis], right]
        windows = F.pad(windows, pad, value=-torch.inf)
        windows = windows.unfold(dim, span, stride[axis])[..., :: dilation[axis]].narrow(dim, 0, out)
    return _windows_last(windows, spatial)


def _adaptive_max_kinks(target, args, kwargs, varies) -> torch.Tensor:
    """Adaptive max pooling: window ``i`` of ``out`` over ``n`` elements is ``[⌊i n/out⌋, ⌈(i+1) n/out⌉)``."""
    x = _input(args, kwargs)
    spatial = x.ndim - 2
    pooled = _pool_call(target, args, kwargs)
    windows = x
    for axis in range(spatial):
        dim = 2 + axis
        size, out = x.shape[dim], pooled.shape[dim]
        starts = [(i * size) // out for i in range(out)]
        stops = [-((-(i + 1) * size) // out) for i in range(out)]
        width = max(stop - start for start, stop in zip(starts, stops))
        index = torch.tensor(
            [
                [start + k if start + k < stop else size for k in range(width)]
                for start, stop in zip(starts, stops)
            ]
        )
        padded = F.pad(windows, [0, 0] * (windows.ndim - dim - 1) + [0, 1], value=-torch.inf)
        gathered = padded.index_select(dim, index.reshape(-1))
        windows = gathered.unflatten(dim, (out, width)).movedim(dim + 1, -1)
    return _windows_last(windows, spatial)


def _per_axis(value, spatial: int) -> tuple:
    return tuple(value) if isinstance(value, tuple | list) else (value,) * spatial


def _pool_call(target, args, kwargs) -> torch.Tensor:
    """The pooled output of a call (for its size), without indices."""
    result = target(*args, **kwargs)
    return result[0] if isinstance(result, tuple) else result


def _windows_last(windows: torch.Tensor, spatial: int) -> torch.Tensor:
    """``(batch, C, *out, *kernel)`` windows as ``(batch, C · prod(out), prod(kernel))`` sites."""
    return windows.reshape(len(windows), -1, math.prod(windows.shape[windows.ndim - spatial :]))


def _product_kinks(target, args, kwargs, varies) -> None:
    """A product is affine when at most one factor depends on the input."""
    if varies(args[0]) and varies(args[1]):
        raise UnsupportedLayerError("it multiplies two tensors that both depend on the input")
    return None


def _quotient_kinks(target, args, kwargs, varies) -> None:
    """A quotient is affine when its divisor does not depend on the input."""
    if varies(_parameter(target, args, kwargs, 1, "other")):
        raise UnsupportedLayerError("it divides by a tensor that depends on the input")
    return None


def _normalisation_kinks(target, args, kwargs, varies) -> None:
    """Batch norm is affine on its running statistics; with the batch's own it mixes the samples."""
    if (
        (target.running_mean is None)
        if isinstance(target, nn.Module)
        else _parameter(target, args, kwargs, 5, "training", False)
    ):
        raise UnsupportedLayerError("it normalises with the batch's own statistics, not running ones")
    return None


def _dropout_kinks(target, args, kwargs, varies) -> None:
    """Dropout is the identity in eval mode; the functional form drops unless ``training=False``."""
    if not isinstance(target, nn.Module) and _parameter(target, args, kwargs, 2, "training", True):
        raise UnsupportedLayerError("it draws random numbers (pass training=self.training)")
    return None


_RELU_LIKE = _at(0)


_E, _S, _M = Family.ELEMENTWISE, Family.SHAPE_ONLY, Family.MOVEMENT
_RESHAPE = RelationKind.RESHAPE
_AFFINE = WeightRule.AFFINE
_CONV = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_MAX_POOL = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVG_POOL = (
    "input",
    "kernel_size",
    "stride",
    "padding",
    "ceil_mode",
    "count_include_pad",
    "divisor_override",
)
_ADAPTIVE = ("input", "output_size")


def _windowed(kind: str, n: int, module: type[nn.Module], function: Callable, signature) -> Operation:
    """A convolution or pooling over ``n`` spatial axes, named after its function."""
    name = function.__name__
    kinks = {"max": _max_pool_kinks, "adaptive_max": _adaptive_max_kinks}.get(kind, no_kinks)
    return Operation(
        name, Family.WINDOWED, (module,), (function,), signature=signature, window=(kind, n), kinks=kinks
    )


#: Every supported operation.
OPERATIONS: tuple[Operation, ...] = (
    # Elementwise activations
    Operation("relu", _E, (nn.ReLU,), (F.relu, F.relu_, torch.relu), ("relu", "relu_"), kinks=_RELU_LIKE),
    Operation("relu6", _E, (nn.ReLU6,), (F.relu6,), kinks=_at(0, 6)),
    Operation("leaky_relu", _E, (nn.LeakyReLU,), (F.leaky_relu,), kinks=_RELU_LIKE),
    Operation("prelu", _E, (nn.PReLU,), (F.prelu,), kinks=_RELU_LIKE),
    Operation("rrelu", _E, (nn.RReLU,), kinks=_RELU_LIKE),  # eval mode: a fixed slope
    Operation("elu", _E, (nn.ELU,), (F.elu,)),
    Operation("selu", _E, (nn.SELU,), (F.selu,)),
    Operation("celu", _E, (nn.CELU,), (F.celu,)),
    Operation("gelu", _E, (nn.GELU,), (F.gelu,)),
    Operation("silu", _E, (nn.SiLU,), (F.silu,)),
    Operation("mish", _E, (nn.Mish,), (F.mish,)),
    Operation("sigmoid", _E, (nn.Sigmoid,), (F.sigmoid, torch.sigmoid), ("sigmoid", "sigmoid_")),
    Operation("tanh", _E, (nn.Tanh,), (F.tanh, torch.tanh), ("tanh", "tanh_")),
    Operation("softplus", _E, (nn.Softplus,), (F.softplus,)),
    Operation("softsign", _E, (nn.Softsign,), (F.softsign,)),
    Operation(
        "hardtanh",
        _E,
        (nn.Hardtanh,),
        (F.hardtanh,),
        kinks=_at_parameters((1, "min_val", -1.0), (2, "max_val", 1.0)),
    ),
    Operation("hardswish", _E, (nn.Hardswish,), (F.hardswish,)),
    Operation("hardsigmoid", _E, (nn.Hardsigmoid,), (F.hardsigmoid,), kinks=_at(-3, 3)),
    Operation(
        "hardshrink",
        _E,
        (nn.Hardshrink,),
        (F.hardshrink,),
        kinks=_at_parameters((1, "lambd", 0.5), negated=True),
    ),
    Operation(
        "softshrink",
        _E,
        (nn.Softshrink,),
        (F.softshrink,),
        kinks=_at_parameters((1, "lambd", 0.5), negated=True),
    ),
    Operation("tanhshrink", _E, (nn.Tanhshrink,), (F.tanhshrink,)),
    Operation("logsigmoid", _E, (nn.LogSigmoid,), (F.logsigmoid,)),
    Operation("threshold", _E, (nn.Threshold,), (F.threshold,), kinks=_at_parameters((1, "threshold", 0.0))),
    # Identities in eval mode
    Operation("identity", _E, (nn.Identity,), weights=_AFFINE, kinks=no_kinks),
    Operation(
        "dropout",
        _E,
        (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout),
        (F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout),
        weights=_AFFINE,
        kinks=_dropout_kinks,
    ),
    Operation("cast", _E, methods=("float", "double"), weights=_AFFINE, kinks=no_kinks),
    # Elementwise arithmetic (with broadcasting)
    Operation("exp", _E, functions=(torch.exp,), methods=("exp",)),
    Operation("log", _E, functions=(torch.log,), methods=("log",)),
    Operation("abs", _E, functions=(torch.abs,), methods=("abs",), kinks=_RELU_LIKE),
    Operation(
        "neg", _E, functions=(torch.neg, operator.neg), methods=("neg",), weights=_AFFINE, kinks=no_kinks
    ),
    Operation("pos", _E, functions=(operator.pos,), weights=_AFFINE, kinks=no_kinks),
    Operation("sqrt", _E, functions=(torch.sqrt,), methods=("sqrt",)),
    Operation("square", _E, functions=(torch.square,), methods=("square",)),
    Operation("sin", _E, functions=(torch.sin,)),
    Operation("cos", _E, functions=(torch.cos,)),
    Operation("clamp", _E, functions=(torch.clamp,), methods=("clamp", "clamp_"), kinks=_clamp_kinks),
    Operation(
        "add",
        _E,
        functions=(torch.add, operator.add, operator.iadd),
        methods=("add", "add_", "__add__", "__radd__"),
        weights=_AFFINE,
        kinks=no_kinks,
    ),
    Operation(
        "sub",
        _E,
        functions=(torch.sub, operator.sub),
        methods=("sub", "__sub__"),
        weights=_AFFINE,
        kinks=no_kinks,
    ),
    Operation(
        "mul",
        _E,
        functions=(torch.mul, operator.mul, operator.imul),
        methods=("mul", "mul_", "__mul__", "__rmul__"),
        weights=WeightRule.PRODUCT,
        kinks=_product_kinks,
    ),
    Operation(
        "div",
        _E,
        functions=(torch.div, operator.truediv),
        methods=("div", "__truediv__"),
        weights=WeightRule.QUOTIENT,
        kinks=_quotient_kinks,
    ),
    Operation("maximum", _E, functions=(torch.maximum,), kinks=_larger_kinks(1.0)),
    Operation("minimum", _E, functions=(torch.minimum,), kinks=_larger_kinks(-1.0)),
    Operation("where", _E, functions=(torch.where,)),
    # Normalisation
    Operation(
        "batch_norm",
        Family.NORMALISATION,
        (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d),
        (F.batch_norm,),
        signature=("input", "running_mean", "running_var", "weight", "bias", "training"),
        refine=_batch_statistics,
        kinks=_normalisation_kinks,
    ),
    # Shape-only: order-preserving reshapes keep their input's grid, reorderings do not
    Operation(
        "flatten", _S, (nn.Flatten,), (torch.flatten,), ("flatten",), relation=_RESHAPE, kinks=no_kinks
    ),
    Operation(
        "unflatten",
        _S,
        (nn.Unflatten,),
        (torch.unflatten,),
        ("unflatten",),
        relation=_RESHAPE,
        kinks=no_kinks,
    ),
    Operation(
        "reshape",
        _S,
        functions=(torch.reshape,),
        methods=("reshape", "view"),
        relation=_RESHAPE,
        kinks=no_kinks,
    ),
    Operation("reshape_as", _S, methods=("reshape_as", "view_as"), relation=_RESHAPE, kinks=no_kinks),
    Operation(
        "squeeze", _S, functions=(torch.squeeze,), methods=("squeeze",), relation=_RESHAPE, kinks=no_kinks
    ),
    Operation(
        "unsqueeze",
        _S,
        functions=(torch.unsqueeze,),
        methods=("unsqueeze",),
        relation=_RESHAPE,
        kinks=no_kinks,
    ),
    Operation("contiguous", _S, methods=("contiguous",), relation=_RESHAPE, kinks=no_kinks),
    Operation("permute", _S, functions=(torch.permute,), methods=("permute",), kinks=no_kinks),
    Operation("transpose", _S, functions=(torch.transpose,), methods=("transpose",), kinks=no_kinks),
    Operation("t", _S, functions=(torch.t,), methods=("t",), kinks=no_kinks),
    Operation("movedim", _S, functions=(torch.movedim,), methods=("movedim",), kinks=no_kinks),
    Operation("pixel_shuffle", _S, (nn.PixelShuffle,), (F.pixel_shuffle,), kinks=no_kinks),
    Operation("pixel_unshuffle", _S, (nn.PixelUnshuffle,), (F.pixel_unshuffle,), kinks=no_kinks),
    Operation("channel_shuffle", _S, (nn.ChannelShuffle,), kinks=no_kinks),
    # Other data movement
    Operation(
        "pad", _M, (nn.ZeroPad1d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d), (F.pad,), kinks=no_kinks
    ),
    Operation("cat", _M, functions=(torch.cat, torch.concat), kinks=no_kinks),
    Operation("stack", _M, functions=(torch.stack,), kinks=no_kinks),
    Operation("narrow", _M, functions=(torch.narrow,), methods=("narrow",), kinks=no_kinks),
    Operation("getitem", _M, functions=(operator.getitem,), methods=("__getitem__",), kinks=no_kinks),
    Operation("expand", _M, methods=("expand", "expand_as"), kinks=no_kinks),
    Operation(
        "interpolate",
        _M,
        (nn.Upsample,),
        (F.interpolate,),
        signature=("input", "size", "scale_factor", "mode"),
        refine=_nearest_only,
        kinks=no_kinks,  # every mode is linear in the input
    ),
    # Softmax
    Operation(
        "softmax",
        Family.SOFTMAX,
        (nn.Softmax,),
        (F.softmax, torch.softmax),
        ("softmax",),
        signature=("input", "dim"),
    ),
    Operation(
        "log_softmax",
        Family.SOFTMAX,
        (nn.LogSoftmax,),
        (F.log_softmax, torch.log_softmax),
        ("log_softmax",),
        signature=("input", "dim"),
        weights=WeightRule.LOG_SOFTMAX,
    ),
    # Linear
    Operation(
        "linear",
        Family.LINEAR,
        (nn.Linear,),
        (F.linear,),
        signature=("input", "weight", "bias"),
        kinks=no_kinks,
    ),
    # Convolution and pooling
    _windowed("conv", 1, nn.Conv1d, F.conv1d, _CONV),
    _windowed("conv", 2, nn.Conv2d, F.conv2d, _CONV),
    _windowed("max", 1, nn.MaxPool1d, F.max_pool1d, _MAX_POOL),
    _windowed("max", 2, nn.MaxPool2d, F.max_pool2d, _MAX_POOL),
    _windowed("avg", 1, nn.AvgPool1d, F.avg_pool1d, _AVG_POOL),
    _windowed("avg", 2, nn.AvgPool2d, F.avg_pool2d, _AVG_POOL),
    _windowed("adaptive_avg", 1, nn.AdaptiveAvgPool1d, F.adaptive_avg_pool1d, _ADAPTIVE),
    _windowed("adaptive_avg", 2, nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d, _ADAPTIVE),
    _windowed("adaptive_max", 1, nn.AdaptiveMaxPool1d, F.adaptive_max_pool1d, _ADAPTIVE),
    _windowed("adaptive_max", 2, nn.AdaptiveMaxPool2d, F.adaptive_max_pool2d, _ADAPTIVE),
    # Containers: Sequential, and every module class defined outside torch.nn (see lookup)
    Operation("container", Family.CONTAINER, (nn.Sequential,)),
)


def _index() -> tuple[dict, dict, dict, Operation]:
    """Spelling -> entry maps; a spelling registered twice is an error."""
    by_class: dict[type, Operation] = {}
    by_function: dict[Callable, Operation] = {}
    by_method: dict[str, Operation] = {}
    for entry in OPERATIONS:
        spellings = ((by_class, entry.modules), (by_function, entry.functions), (by_method, entry.methods))
        for table, keys in spellings:
            for key in keys:
                if table.get(key, entry) is not entry:
                    raise ValueError(f"{key!r} is registered twice: {table[key].name!r} and {entry.name!r}")
                table[key] = entry
    (container,) = (entry for entry in OPERATIONS if entry.family is Family.CONTAINER)
    return by_class, by_function, by_method, container


_BY_CLASS, _BY_FUNCTION, _BY_METHOD, _CONTAINER = _index()


def lookup(call_or_target: OpCall | nn.Module | Callable | str) -> Operation:
    """The registry entry of a recorded call or of an operation's target.

    Modules match by class (the most derived registered class; any module class defined outside
    ``torch.nn`` is a container), functions by identity, tensor methods by name. For an
    :class:`OpCall` the entry is refined to the call (see ``Operation.refine``).

    Raises
    ------
    UnsupportedLayerError
        If no entry covers it (the message names the type and where it is defined).
    """
    call = call_or_target if isinstance(call_or_target, OpCall) else None
    target = call.target if call is not None else call_or_target
    entry = _entry(target)
    if entry is None:
        raise UnsupportedLayerError(f"no neuron-edge rule for {target_kind(target)} ({_target_text(target)})")
    return entry if call is None or entry.refine is None else entry.refine(entry, call)


def _entry(target) -> Operation | None:
    if isinstance(target, nn.Module):
        for cls in type(target).__mro__:
            if cls in _BY_CLASS:
                return _BY_CLASS[cls]
        return None if type(target).__module__.startswith("torch.nn") else _CONTAINER
    if isinstance(target, str):
        return _BY_METHOD.get(target)
    return _BY_FUNCTION.get(target)


def _target_text(target) -> str:
    if isinstance(target, nn.Module):
        return f"module {type(target).__module__}.{type(target).__name__}"
    if isinstance(target, str):
        return f"tensor method .{target}()"
    return f"function {getattr(target, '__module__', '')}.{target_kind(target)}"


def supported_operations() -> list[str]:
    """Names of every module, function and tensor method (``Tensor.name``) with an entry, sorted."""
    return sorted({name for entry in OPERATIONS for name in entry.spellings()})


def is_shape_only(call: OpCall) -> bool:
    """Whether an operation on one layer only reshapes or reorders its elements (``Merge.MOVE``)."""
    return len(call.inputs) == 1 and _merges(call) is Merge.MOVE


def is_unary_elementwise(call: OpCall) -> bool:
    """Whether an operation maps each element of one layer to the element at its position, nothing else."""
    unary = len(call.inputs) == 1 and call.output.shape == call.inputs[0].shape
    return unary and _merges(call) is Merge.VALUE


def _merges(call: OpCall) -> Merge:
    try:
        return lookup(call).merges
    except UnsupportedLayerError:  # stays a layer; building its edges reports it
        return Merge.NEVER
