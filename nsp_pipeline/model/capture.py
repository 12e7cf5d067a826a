"""Run a model once and record every layer: its output, and the operation that made it.

Three layer granularities:

``children``
    The outputs of the model's direct children in call order, plus the input as layer 0:
    exactly the predecessor ``nsp``'s semantics. Functional operations between children
    (``torch.sigmoid``, ``x.view``) are invisible; each child reads the previous layer.
    Where a child reads another number of values than the previous layer holds (global
    pooling in ``forward`` between torchvision's MobileNetV2 ``features`` and ``classifier``),
    the operations in between are found with ``torch.fx`` and the child's layer is their
    composition with the child, reading the previous layer.
``ops``
    Every module and functional operation of the model, traced with ``torch.fx``, so
    functional activations, reshapes, additions and concatenations are layers of their own
    and each layer reads exactly the layers its operation takes as arguments.
``merged``
    The ``ops`` layers without the operations that map each neuron to exactly one neuron
    (shape-only and unary elementwise operations, merged into the layer they read), so that
    ``conv1`` followed by ``relu1`` is one layer ``conv1`` holding the ReLU's output; every kept
    neuron keeps exactly its ancestors (:mod:`nsp_pipeline.model.merge`).

What each layer records is an :class:`~nsp_pipeline.model.records.OpCall` in a
:class:`~nsp_pipeline.model.records.Trace`.
"""

from __future__ import annotations

import operator
import weakref
from collections import OrderedDict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx
from torch import nn

from nsp_pipeline.core.defaults import default
from nsp_pipeline.core.errors import TraceError, UnsupportedLayerError, shortened
from nsp_pipeline.core.layout import GRANULARITIES, Layer, Layout
from nsp_pipeline.model.merge import merged
from nsp_pipeline.model.records import OpCall, Trace, target_kind


def trace(model: nn.Module, inputs: torch.Tensor, granularity: str = default("graph.granularity")) -> Trace:
    """Run ``model`` on a batch and record every layer.

    The model runs in eval mode (restored afterwards) without gradients, on a copy of
    ``inputs``; the input layer holds ``inputs`` as given and every other layer its output as
    produced, so in-place operations (on the input too: ``x.clamp_(0, 1)``) alter neither.

    Parameters
    ----------
    model : nn.Module
        The network.
    inputs : torch.Tensor
        A batch ``(n_samples, *input_shape)``.
    granularity : {"children", "ops", "merged"}
        Which layers to record (see the module docstring).

    Returns
    -------
    Trace

    Raises
    ------
    TraceError
        If the model cannot be recorded at this granularity, or its forward pass is not a
        function of its input alone: it changes its parameters or buffers, or draws random
        numbers (:func:`pure_forward`).

    Notes
    -----
    Tracing a model again costs little more than its forward pass: purity is checked on the first
    trace of a model and again whenever its parameters or buffers change (:func:`pure_forward`), and
    the ``torch.fx`` graphs are kept per model object until a module, a plain attribute of one
    (number, string, flag, tensor), a parameter or a buffer is replaced. Other Python state the
    forward pass reads (containers, class attributes, globals) is not watched: after changing it,
    trace a new model object (``copy.deepcopy``).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if not isinstance(inputs, torch.Tensor) or inputs.ndim < 1:
        raise TypeError("inputs must be a torch.Tensor with a leading batch axis")
    with eval_mode(model), torch.no_grad(), pure_forward(model) as known:
        if granularity == "children":
            return _trace_children(model, inputs, known)
        if known.graph_module is None:
            known.graph_module = fx_trace(model)
        recorded, returned = _record(known.graph_module, inputs)
        return merged(recorded, returned) if granularity == "merged" else recorded


@contextmanager
def eval_mode(model: nn.Module):
    """Put ``model`` in eval mode for the duration of a ``with`` block, then restore every module."""
    modes = {module: module.training for module in model.modules()}
    if any(modes.values()):
        model.eval()
    try:
        yield
    finally:
        for module, mode in modes.items():
            if module.training != mode:
                module.training = mode


@contextmanager
def pure_forward(model: nn.Module):
    """Refuse a forward pass that changes the model or whose activations change from run to run.

    Raises :class:`TraceError` after the ``with`` block if the model changed its parameters or
    buffers (in place, through ``.data``, or by assigning new tensors) or drew random numbers
    from torch's CPU generator (``F.dropout(x, p)`` without ``training=self.training``,
    ``torch.rand``).

    The parameters' and buffers' values (which see ``.data`` edits) are compared on the first
    trace of a model and again whenever its parameters or buffers change (new tensors, or version
    counters bumped by in-place updates such as an optimizer step) or its modules do; in between,
    only new tensors, in-place changes and random numbers are looked for, so a ``.data`` edit that
    the forward pass starts making later goes unseen.

    Yields
    ------
    _Known
        What earlier blocks established about the model in its current structure (its fx graphs),
        kept for later blocks if this one passes.
    """
    name = type(model).__name__
    tensors = model.state_dict(keep_vars=True)
    snapshot = _Snapshot.of(model, tensors)
    earlier = _KNOWN.get(id(model))
    same_structure = earlier is not None and earlier.snapshot.same_structure(snapshot)
    known = _Known(snapshot, *((earlier.graph_module, earlier.children_graph) if same_structure else ()))
    read = _versions if same_structure and earlier.snapshot.versions == snapshot.versions else _fingerprints
    before = read(tensors)
    random_state = torch.get_rng_state()
    yield known
    after = read(model.state_dict(keep_vars=True))
    changed = [key for key in before.keys() | after.keys() if not _unchanged(before.get(key), after.get(key))]
    if changed:
        raise TraceError(
            f"{name} changes its parameters or buffers {shortened(sorted(changed))} when it runs; expected a "
            "forward pass that leaves the model as it is (each batch would see other weights, so results "
            "would depend on the order of the samples): do not assign to or modify weights in forward"
        )
    if not torch.equal(torch.get_rng_state(), random_state):
        raise TraceError(
            f"{name} draws random numbers when it runs in eval mode, so its activations change from run to "
            "run; expected a deterministic forward pass (e.g. F.dropout(x, p, training=self.training), "
            "or nn.Dropout, which eval mode switches off)"
        )
    if id(model) not in _KNOWN:
        weakref.finalize(model, _KNOWN.pop, id(model), None)
    _KNOWN[id(model)] = known


_PLAIN = frozenset({bool, int, float, str, type(None)})
_UNWATCHED = frozenset({dict, OrderedDict, list, set})  # hooks, registries: not part of a snapshot


@dataclass(frozen=True)
class _Snapshot:
    """What a model's traces depend on, read without touching tensor values.

    ``structure`` holds each module's name, identity, type and plain attributes (numbers, strings,
    flags, tuples of them, and tensors by identity: the Python values ``torch.fx`` bakes into a graph;
    containers and other objects are not watched) and each parameter's and buffer's name and
    identity; ``versions`` their version counters. Identities are unique only while their objects
    live, so ``alive`` refers to them weakly.
    """

    structure: tuple
    versions: tuple[int, ...]
    alive: tuple[weakref.ref, ...]

    @classmethod
    def of(cls, model: nn.Module, tensors: dict[str, torch.Tensor]) -> _Snapshot:
        """The snapshot of ``model``, whose ``state_dict(keep_vars=True)`` is ``tensors``."""
        alive, modules = [], []
        for name, module in model.named_modules():
            attributes = []
            for key, value in vars(module).items():
                kind = type(value)
                if kind in _PLAIN or (kind is tuple and _is_plain(value)):
                    attributes.append((key, value))
                elif kind not in _UNWATCHED and isinstance(value, torch.Tensor):
                    attributes.append((key, id(value)))
                    alive.append(weakref.ref(value))
            modules.append((name, id(module), type(module), tuple(attributes)))
            alive.append(weakref.ref(module))
        alive.extend(weakref.ref(tensor) for tensor in tensors.values())
        structure = (tuple(modules), tuple((key, id(tensor)) for key, tensor in tensors.items()))
        return cls(structure, tuple(tensor._version for tensor in tensors.values()), tuple(alive))

    def same_structure(self, other: _Snapshot) -> bool:
        """Whether ``other`` has this structure, the same modules and tensors (not necessarily versions)."""
        return self.structure == other.structure and all(ref() is not None for ref in self.alive)


def _is_plain(value) -> bool:
    return type(value) in _PLAIN or (type(value) is tuple and all(_is_plain(item) for item in value))


@dataclass
class _Known:
    """A model's snapshot and the fx graphs traced of it in that structure, once traced."""

    snapshot: _Snapshot
    graph_module: torch.fx.GraphModule | None = None  # ``ops`` and ``merged``
    children_graph: torch.fx.Graph | None = None  # ``children``: its direct children as leaves


#: Per model (by identity; dropped when the model is collected, so unhashable models work too): what
#: its last passing :func:`pure_forward` block established. Its graph modules hold the model's
#: submodules, not the model.
_KNOWN: dict[int, _Known] = {}


def batch_statistics(model: nn.Module) -> list[str]:
    """The batch norm modules without running statistics: in eval mode too they normalise with the batch's."""
    return [
        key
        for key, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is None
    ]


def _fingerprints(tensors: dict[str, torch.Tensor]) -> dict[str, tuple]:
    """Per ``state_dict`` entry: the tensor, its version counter and its sum (which sees ``.data`` edits)."""
    prints = {}
    for key, tensor in tensors.items():
        total = None if tensor.is_complex() else _float64_sum(tensor.detach())
        prints[key] = (tensor, (tensor._version, "nan" if total != total else total))
    return prints


def _float64_sum(tensor: torch.Tensor) -> float:
    """Sum in float64: NumPy's where it can read the tensor (several times faster than torch's upcast)."""
    if tensor.device.type == "cpu" and tensor.layout == torch.strided and tensor.dtype != torch.bfloat16:
        return float(tensor.numpy().sum(dtype=np.float64))
    return tensor.sum(dtype=torch.float64).item()


def _versions(tensors: dict[str, torch.Tensor]) -> dict[str, tuple]:
    """Per ``state_dict`` entry: the tensor and its version counter (bumped by in-place changes)."""
    return {key: (tensor, tensor._version) for key, tensor in tensors.items()}


def _unchanged(before: tuple | None, after: tuple | None) -> bool:
    return before is not None and after is not None and before[0] is after[0] and before[1] == after[1]


def _describe(target, args=(), kwargs=None) -> str:
    if isinstance(target, nn.Module):
        return " ".join(repr(target).split())
    shown = [a for a in args if not isinstance(a, torch.fx.Node)]
    extra = ", ".join([*(repr(a) for a in shown), *(f"{k}={v!r}" for k, v in (kwargs or {}).items())])
    return f"{target_kind(target)}({extra})" if extra else target_kind(target)


def _input_layer(inputs: torch.Tensor) -> Layer:
    return Layer("input", tuple(inputs.shape[1:]), "input", f"Input{list(inputs.shape[1:])}")


def _check_batch(name: str, output, n_samples: int) -> torch.Tensor:
    if not isinstance(output, torch.Tensor):
        raise TraceError(f"layer {name!r} returns {type(output).__name__}, not a tensor")
    if output.ndim < 1 or output.shape[0] != n_samples:
        raise TraceError(
            f"layer {name!r} returns shape {tuple(output.shape)}; expected a leading batch axis of "
            f"{n_samples} (does the model fold the batch into other axes, e.g. view(-1)?)"
        )
    return output


def _trace_children(
    model: nn.Module, inputs: torch.Tensor, known: _Known, copy_every_layer: bool = False
) -> Trace:
    """The ``children`` trace; what each child reads and returns is held as :func:`_record` holds layers."""
    n_samples = inputs.shape[0]
    given = inputs.detach().clone()  # the input layer, before the model can change its input in place
    run_on = inputs.detach().clone()
    uncopied = _Uncopied(copy_every_layer)
    records: list[tuple[str, nn.Module, list[torch.Tensor], list[torch.Tensor]]] = []  # tensors in cells
    pending: dict[str, list[torch.Tensor]] = {}

    def before(name):
        def remember_input(module, args):
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            if len(tensors) != 1 or len(args) != 1:
                raise TraceError(
                    f"child {name!r} ({type(module).__name__}) takes {len(args)} arguments; the "
                    "'children' granularity needs one tensor per child, use granularity 'ops'"
                )
            pending[name] = [tensors[0].detach()]
            uncopied.hold(pending[name])
            if getattr(module, "inplace", False):  # as mutates_input: nn.ReLU(inplace=True) and kin
                uncopied.copy_before_writing(tensors[0])

        return remember_input

    def after(name):
        def record(module, args, output):
            if not isinstance(output, torch.Tensor):
                raise UnsupportedLayerError(
                    f"child {name!r} ({type(module).__name__}) returns {type(output).__name__}, "
                    "not one tensor; such layers are not supported"
                )
            output_cell = [output.detach()]
            uncopied.hold(output_cell)
            records.append((name, module, pending.pop(name), output_cell))

        return record

    handles = []
    for name, child in model.named_children():
        handles.append(child.register_forward_pre_hook(before(name)))
        handles.append(child.register_forward_hook(after(name)))
    try:
        model_output = model(run_on)
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        if isinstance(error, TraceError | UnsupportedLayerError):
            raise
        raise TraceError(
            f"{type(model).__name__} rejected inputs of shape {tuple(inputs.shape)} "
            f"(batch, *input_shape): {error}"
        ) from error
    finally:
        for handle in handles:
            handle.remove()
    if uncopied.overwritten():
        return _trace_children(model, inputs, known, copy_every_layer=True)
    layers = [_input_layer(given)]
    values = [given]
    calls: list[OpCall | None] = [None]
    names = {"input": 0}
    between: _Between | None = None  # traced on the first child that does not read the previous layer
    for position, (name, module, (child_input,), (output,)) in enumerate(records):
        output = _check_batch(name, output, n_samples)
        unique = _unique_name(name, names)
        previous = len(layers) - 1
        description = _describe(module)
        target: nn.Module = module
        if child_input[0].numel() != values[previous][0].numel():
            if between is None:
                between = _Between(known, model, [name for name, *_ in records], layers, values)
            target, description = between.composed(position, child_input)
            child_input = values[previous].clone()  # what the composition reads: the previous layer
        layers.append(Layer(unique, tuple(output.shape[1:]), target_kind(module), description, (previous,)))
        values.append(output)
        calls.append(
            OpCall(
                target=target,
                inputs=(child_input,),
                input_layers=(previous,),
                output=output,
                replay=target,
                args=(child_input,),
            )
        )
    return Trace(Layout(tuple(layers)), values, calls, model_output, "children", model)


class _ChildrenAsLeaves(torch.fx.Tracer):
    """An fx tracer that keeps a model's direct children as single calls: what remains is between them."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.children = {id(child) for child in model.children()}

    def is_leaf_module(self, module: nn.Module, module_qualified_name: str) -> bool:
        return id(module) in self.children or super().is_leaf_module(module, module_qualified_name)


class _Between:
    """The functional operations between a model's children, found with ``torch.fx``.

    The model is traced with its direct children as leaves (:class:`_ChildrenAsLeaves`), so its
    graph holds one node per child call, in the order the forward hooks recorded them, and the
    functional operations between them.

    Parameters
    ----------
    known : _Known
        Where the graph is kept for later traces of the model (and found, if traced before).
    model : nn.Module
        The traced model.
    child_names : list of str
        The children's names in the order the hooks recorded their calls.
    layers, values : list
        The layers recorded so far (the input first), one per child before the child in question,
        and their values.
    """

    def __init__(
        self, known: _Known, model: nn.Module, child_names: list[str], layers: list[Layer], values: list
    ) -> None:
        self.model, self.child_names, self.layers, self.values = model, child_names, layers, values
        children = {id(child) for child in model.children()}
        try:
            if known.children_graph is None:
                known.children_graph = _ChildrenAsLeaves(model).trace(model)
        except Exception as error:  # fx raises many types (TraceError, TypeError, ...)
            self.graph, self.error = None, f"torch.fx cannot trace {type(model).__name__}: {error}"
            return
        self.graph = known.children_graph
        self.error = None
        self.placeholder = next((n for n in self.graph.nodes if n.op == "placeholder"), None)
        self.child_nodes = [
            node
            for node in self.graph.nodes
            if node.op == "call_module" and id(model.get_submodule(node.target)) in children
        ]
        traced = [node.target for node in self.child_nodes]
        if traced != child_names:
            self.error = (
                f"torch.fx traced the children {shortened(traced)} but they ran as {shortened(child_names)}"
            )

    def composed(self, position: int, child_input: torch.Tensor) -> tuple[torch.fx.GraphModule, str]:
        """The child at ``position`` after the operations from the previous layer, and its description.

        Raises
        ------
        TraceError
            If the model cannot be traced, or the operations in between read other layers than the
            previous one, or do not give what the child read.
        """
        previous = len(self.layers) - 1
        previous_name = self.layers[previous].name
        if self.error is not None:
            raise TraceError(
                f"{self._reads(position, child_input)}, and the operations between them cannot be found "
                f"({self.error}); the 'children' granularity assumes each child reads the previous child's "
                "output (up to reshapes and elementwise functions), use granularity 'ops'"
            )
        child = self.child_nodes[position]
        start = self.child_nodes[position - 1] if position > 0 else self.placeholder
        steps, sources = self._steps(child)
        if sources != [start]:
            read = ", ".join(repr(self._layer_name(source)) for source in sources) or "no layer"
            raise TraceError(
                f"child {child.target!r} ({self._kind(child)}) reads {read} through the functional "
                f"operations {shortened([step.name for step in steps])}, not the previous layer "
                f"{previous_name!r} alone; "
                "the 'children' granularity needs each child to read the previous child's output, "
                "use granularity 'ops'"
            )
        with torch.no_grad():
            computed = self._graph_module(start, steps, child.args[0])(self.values[previous].clone())
        if not (
            isinstance(computed, torch.Tensor)
            and computed.shape == child_input.shape
            and torch.allclose(computed, child_input)
        ):
            raise TraceError(
                f"{self._reads(position, child_input)}; the operations torch.fx found between them "
                f"({shortened([step.name for step in steps])}) do not give what the child read, "
                "use granularity 'ops'"
            )
        shown = [self._describe_step(step) for step in steps if step.op != "get_attr"]
        description = " -> ".join([*shown, _describe(self.model.get_submodule(child.target))])
        return self._graph_module(start, steps, child), description

    def _reads(self, position: int, child_input: torch.Tensor) -> str:
        previous = len(self.layers) - 1
        name = self.child_names[position]
        return (
            f"child {name!r} ({type(self.model.get_submodule(name)).__name__}) reads "
            f"{child_input[0].numel()} values per sample but the previous layer "
            f"{self.layers[previous].name!r} has {self.values[previous][0].numel()}"
        )

    def _kind(self, node: torch.fx.Node) -> str:
        return type(self.model.get_submodule(node.target)).__name__

    def _steps(self, child: torch.fx.Node) -> tuple[list[torch.fx.Node], list[torch.fx.Node]]:
        """The operations ``child`` reads through and the layers (children, input) they start from."""
        boundary = {*self.child_nodes, self.placeholder}
        steps: set[torch.fx.Node] = set()
        sources: set[torch.fx.Node] = set()
        pending = list(child.all_input_nodes)
        while pending:
            node = pending.pop()
            if node in boundary:
                sources.add(node)
            elif node not in steps:
                steps.add(node)
                pending.extend(node.all_input_nodes)
        order = {node: index for index, node in enumerate(self.graph.nodes)}
        return sorted(steps, key=order.get), sorted(sources, key=order.get)

    def _graph_module(
        self, start: torch.fx.Node, steps: list[torch.fx.Node], last: torch.fx.Node
    ) -> torch.fx.GraphModule:
        """A module that applies ``steps`` to the output of ``start`` and returns ``last``'s value.

        ``last`` is the child's node (the steps, then the child) or the node the child reads.
        """
        graph = torch.fx.Graph()
        env = {start: graph.placeholder("previous")}
        for node in steps:
            env[node] = graph.node_copy(node, lambda n: env[n])
        if last not in env:
            env[last] = graph.node_copy(last, lambda n: env[n])
        graph.output(env[last])
        return torch.fx.GraphModule(self.model, graph, class_name="Composed")

    def _layer_name(self, node: torch.fx.Node) -> str:
        return "input" if node is self.placeholder else self.layers[self.child_nodes.index(node) + 1].name

    def _describe_step(self, node: torch.fx.Node) -> str:
        target = self.model.get_submodule(node.target) if node.op == "call_module" else node.target
        return _describe(target, node.args, node.kwargs)


def _unique_name(name: str, seen: dict[str, int]) -> str:
    count = seen.get(name, 0)
    seen[name] = count + 1
    return name if count == 0 else f"{name}_{count}"


def fx_trace(model: nn.Module) -> torch.fx.GraphModule:
    """Symbolically trace ``model`` with ``torch.fx``, with a clear error if it cannot be traced."""
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as error:  # fx raises many types (TraceError, TypeError, ...)
        raise TraceError(
            f"torch.fx cannot trace {type(model).__name__}: {error}. The 'ops' and 'merged' "
            "granularities need a model without data-dependent control flow; granularity 'children' "
            "still works for models whose children are called one after another"
        ) from error


def record_graph_module(graph_module: torch.fx.GraphModule, inputs: torch.Tensor) -> Trace:
    """Run a traced model node by node and record every tensor-valued operation."""
    return _record(graph_module, inputs)[0]


def _record(
    graph_module: torch.fx.GraphModule, inputs: torch.Tensor, copy_every_layer: bool = False
) -> tuple[Trace, set[int]]:
    """:func:`record_graph_module`, and the layers the model returns (also inside tuples or dicts).

    Each layer holds its operation's output itself, copied only before an operation that writes in
    place (:func:`_overwrites`) runs on its memory (:class:`_Uncopied`); if another operation wrote
    there, the model runs again, copying every layer as it is recorded (``copy_every_layer``).
    """
    n_samples = inputs.shape[0]
    placeholders = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise TraceError(f"the model takes {len(placeholders)} inputs; exactly one tensor input is supported")
    modules = dict(graph_module.named_modules())
    _read_after_in_place(graph_module, modules)
    env: dict[torch.fx.Node, object] = {}
    layer_of: dict[torch.fx.Node, int] = {}
    version: dict[torch.fx.Node, int] = {}  # each layer's tensor's version counter when it was recorded
    layers = [_input_layer(inputs)]
    cells = [[inputs.detach().clone()]]  # each layer's value, in a cell that a copy may replace
    uncopied = _Uncopied(copy_every_layer)
    recorded_nodes: list[tuple[torch.fx.Node, object, Callable]] = []
    names = {"input": 0}
    model_output = output_layer = None
    returned: set[int] = set()
    for node in graph_module.graph.nodes:
        if node.op == "placeholder":
            env[node] = inputs.detach().clone()  # the model may change its input in place
            layer_of[node] = 0
            version[node] = env[node]._version
            continue
        if node.op == "output":
            model_output = torch.fx.graph.map_arg(node.args[0], lambda n: env[n])
            output_layer = layer_of.get(node.args[0]) if isinstance(node.args[0], torch.fx.Node) else None
            returned = {layer_of[n] for n in node.all_input_nodes if n in layer_of}
            continue
        if node.op == "get_attr":
            env[node] = _fetch_attr(graph_module, node.target)
            continue
        target = modules[node.target] if node.op == "call_module" else node.target
        run = _runner(node.op, target)
        sources = [n for n in node.all_input_nodes if n in layer_of]
        for source in sources:
            if env[source]._version != version[source]:
                raise UnsupportedLayerError(
                    f"operation {node.name!r} ({target_kind(target)}) reads layer "
                    f"{layers[layer_of[source]].name!r} after it was changed in place through a view of it "
                    "or an item assignment, so the layer no longer holds what the operation reads; expected "
                    "out-of-place operations there (e.g. x = x.clamp(0, 1), x = torch.where(mask, v, x))"
                )
        args = torch.fx.graph.map_arg(node.args, lambda n: env[n])
        kwargs = torch.fx.graph.map_arg(node.kwargs, lambda n: env[n])
        if args and isinstance(args[0], torch.Tensor) and _overwrites(node, target):
            uncopied.copy_before_writing(args[0])
        try:
            result = run(*args, **kwargs)
        except (RuntimeError, ValueError, TypeError, IndexError) as error:
            raise TraceError(
                f"operation {node.name!r} ({target_kind(target)}) failed on inputs of shape "
                f"{tuple(inputs.shape)} (batch, *input_shape): {error}"
            ) from error
        env[node] = result
        if sources and isinstance(result, tuple | list) and any(isinstance(r, torch.Tensor) for r in result):
            raise UnsupportedLayerError(
                f"layer {node.name!r} ({target_kind(target)}) returns {len(result)} tensors; operations with "
                "several outputs are not supported"
            )
        if not isinstance(result, torch.Tensor) or not sources:
            continue  # sizes, shapes, and tensors computed from parameters alone are not layers
        name = node.target if node.op == "call_module" else node.name
        _check_batch(name, result, n_samples)
        index = len(layers)
        layers.append(
            Layer(
                _unique_name(name, names),
                tuple(result.shape[1:]),
                target_kind(target),
                _describe(target, node.args, node.kwargs),
                tuple(sorted({layer_of[n] for n in sources})),
            )
        )
        cells.append([result.detach()])
        uncopied.hold(cells[index])
        layer_of[node] = index
        version[node] = result._version
        recorded_nodes.append((node, target, run))
    if uncopied.overwritten():
        return _record(graph_module, inputs, copy_every_layer=True)
    values = [value for (value,) in cells]
    calls: list[OpCall | None] = [None]
    calls += [_node_call(node, target, run, env, values, layer_of) for node, target, run in recorded_nodes]
    recorded = Trace(Layout(tuple(layers)), values, calls, model_output, "ops", graph_module, output_layer)
    return recorded, returned


def _overwrites(node: torch.fx.Node, target) -> bool:
    """Whether an fx node writes into its first argument: :func:`mutates_input`, or ``x[i] = v``."""
    return target is operator.setitem or mutates_input(node, target)


class _Uncopied:
    """Recorded tensors held without copies, each copied just before an operation writes into its memory.

    Each tensor is held in a cell (a one-element list) whose content a copy replaces. A write that
    :meth:`copy_before_writing` did not hear of moves the tensor's version counter (shared by its
    views), and :meth:`overwritten` says so: the caller records again with ``copy_all``, which copies
    every tensor as it is held.
    """

    def __init__(self, copy_all: bool) -> None:
        self.copy_all = copy_all
        self.held: dict[int, list[tuple[list[torch.Tensor], int]]] = {}  # storage -> (cell, version)
        self.stale = False

    def hold(self, cell: list[torch.Tensor]) -> None:
        if self.copy_all or cell[0].layout != torch.strided:
            cell[0] = cell[0].clone()
        else:
            self.held.setdefault(_storage(cell[0]), []).append((cell, cell[0]._version))

    def copy_before_writing(self, tensor: torch.Tensor) -> None:
        """Copy the held tensors that share ``tensor``'s memory, which an operation is about to write."""
        if tensor.layout == torch.strided:
            for cell, version in self.held.pop(_storage(tensor), []):
                self.stale |= cell[0]._version != version
                cell[0] = cell[0].clone()

    def overwritten(self) -> bool:
        """Whether a held tensor was written before it was copied."""
        return self.stale or any(
            cell[0]._version != version for held in self.held.values() for cell, version in held
        )


def _storage(tensor: torch.Tensor) -> int:
    """Where a strided tensor's memory starts: the same for all its views."""
    return tensor.untyped_storage().data_ptr()


def _read_after_in_place(graph_module: torch.fx.GraphModule, modules: dict[str, nn.Module]) -> None:
    """Make every operation that reads a tensor after an in-place operation overwrote it read that operation.

    ``torch.fx`` records ``x.clamp_(0, 1); y = f(x)`` as ``f`` reading ``x``, but ``f`` reads the clamped
    values: its parent layer is ``clamp_``'s. The graph is rewired (and recompiled) accordingly.
    """
    graph = graph_module.graph
    position = {node: index for index, node in enumerate(graph.nodes)}
    rewired = False
    for node in graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method") or not node.args:
            continue
        overwritten = node.args[0]
        target = modules[node.target] if node.op == "call_module" else node.target
        if not (isinstance(overwritten, torch.fx.Node) and mutates_input(node, target)):
            continue
        for user in list(overwritten.users):
            if position[user] > position[node]:
                user.replace_input_with(overwritten, node)
                rewired = True
    if rewired:
        graph_module.recompile()


def mutates_input(node: torch.fx.Node, target) -> bool:
    """Whether an fx node overwrites its input (``inplace=True`` modules and functions, ``x.relu_()``)."""
    if isinstance(target, nn.Module):
        return bool(getattr(target, "inplace", False))
    if node.kwargs.get("inplace", False):
        return True
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    return (name.endswith("_") and not name.endswith("__")) or name in {"iadd", "isub", "imul", "itruediv"}


def _fetch_attr(graph_module: torch.fx.GraphModule, target: str):
    value = graph_module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _runner(op: str, target) -> Callable:
    if op == "call_method":
        return lambda self, *args, **kwargs: getattr(self, target)(*args, **kwargs)
    return target


def _node_call(node: torch.fx.Node, target, run: Callable, env: dict, values: list, layer_of: dict) -> OpCall:
    """Describe one fx node as a replayable :class:`OpCall` that reads the recorded layers."""
    tensor_nodes = [n for n in _ordered_inputs(node) if n in layer_of]

    def recorded(n):  # a layer's tensor may be overwritten later by an in-place operation
        return values[layer_of[n]] if n in layer_of else env[n]

    def replay(*tensors):
        replaced = dict(zip(tensor_nodes, tensors))

        def value(n):
            return replaced[n] if n in replaced else env[n]

        args = torch.fx.graph.map_arg(node.args, value)
        kwargs = torch.fx.graph.map_arg(node.kwargs, value)
        return run(*args, **kwargs)

    return OpCall(
        target=target,
        inputs=tuple(recorded(n) for n in tensor_nodes),
        input_layers=tuple(layer_of[n] for n in tensor_nodes),
        output=values[layer_of[node]],
        replay=replay,
        args=torch.fx.graph.map_arg(node.args, recorded),
        kwargs=torch.fx.graph.map_arg(node.kwargs, recorded),
    )


def _ordered_inputs(node: torch.fx.Node) -> list[torch.fx.Node]:
    seen: list[torch.fx.Node] = []
    torch.fx.graph.map_arg((node.args, node.kwargs), lambda n: seen.append(n) if n not in seen else None)
    return seen
