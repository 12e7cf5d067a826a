"""Targets (a layer, a channel, a unit or a reduction) and reading layers with gradients.

A :class:`Target` names a layer as the package names layers (:mod:`nsp_pipeline.model.capture`):
with the default granularity ``merged``, ``"conv1"`` is the layer that holds ``conv1``'s output
after the ReLU merged into it, and ``"input"`` is the input; with ``"ops"``, every ``torch.fx``
operation (``"relu"``, ``"view"``) is a layer of its own. Channels and units are **0-based**;
dnnbrain's channels are 1-based (its ``channel=1`` is ``channel=0`` here).

:class:`LayerReader` turns a model into a ``torch.fx`` graph module that returns the values of
chosen layers, differentiably and for any batch: it stops at the last layer asked for, runs
in-place operations on copies (so an earlier layer keeps its value), and can give every ReLU
(module, ``F.relu``, ``torch.relu`` or ``Tensor.relu``) the guided backward rule.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from nsp_pipeline.core.defaults import default
from nsp_pipeline.core.errors import TraceError, shortened
from nsp_pipeline.model.capture import batch_statistics, eval_mode, mutates_input, trace
from nsp_pipeline.model.ops import is_shape_only
from nsp_pipeline.model.records import moved_positions

#: Reductions of a target's selected neurons to one value per sample.
REDUCTIONS = ("mean", "max")


@dataclass(frozen=True)
class Target:
    """One value per sample read from a layer: a unit, or a reduction of a channel or layer.

    Parameters
    ----------
    layer : str
        Layer name (see the module docstring; ``"input"`` included).
    channel : int, optional
        0-based index on the layer's first axis (dnnbrain's channels are 1-based).
    unit : tuple of int, optional
        0-based index of one neuron: in the channel's map when ``channel`` is given (dnnbrain's
        ``unit=(row, column)``), else in the layer's whole shape (``(k,)`` for a linear layer).
    reduction : {"mean", "max"}, optional
        How the selected neurons become one value: needed when more than one is selected
        (a channel without ``unit``: ``"mean"`` as dnnbrain's default).

    Examples
    --------
    ``Target("fc", unit=(3,))`` is class score 3; ``Target("conv2", channel=5, reduction="mean")``
    the mean of channel 5's map; ``Target("conv2", channel=5, unit=(1, 2))`` one neuron of it.
    """

    layer: str
    channel: int | None = None
    unit: tuple[int, ...] | None = None
    reduction: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str):
            raise TypeError(f"a target's layer is a layer name (str), got {self.layer!r}")
        if self.reduction is not None and self.reduction not in REDUCTIONS:
            raise ValueError(
                f"target on layer {self.layer!r}: reduction must be one of {REDUCTIONS} or None, "
                f"got {self.reduction!r}"
            )
        if self.channel is not None and (not _is_index(self.channel) or self.channel < 0):
            raise ValueError(
                f"target on layer {self.layer!r}: channel must be an int >= 0 (0-based), got {self.channel!r}"
            )
        if self.unit is not None:
            unit = (self.unit,) if _is_index(self.unit) else tuple(self.unit)
            if not all(_is_index(i) and i >= 0 for i in unit):
                raise ValueError(
                    f"target on layer {self.layer!r}: unit must be a tuple of ints >= 0 (0-based), "
                    f"got {self.unit!r}"
                )
            object.__setattr__(self, "unit", tuple(int(i) for i in unit))
            if self.reduction is not None:
                raise ValueError(
                    f"target on layer {self.layer!r}: give a unit or a reduction, not both "
                    f"(unit={self.unit}, reduction={self.reduction!r})"
                )

    def check(self, shape: tuple[int, ...]) -> None:
        """Raise ``ValueError`` naming the layer and its shape unless the target fits ``shape``."""
        where = f"layer {self.layer!r} of shape {shape}"
        rest = shape
        if self.channel is not None:
            if not shape or self.channel >= shape[0]:
                channels = f"channels 0..{shape[0] - 1}" if shape else "no channel axis"
                raise ValueError(
                    f"channel {self.channel} out of range for {where} ({channels}; 0-based, "
                    "dnnbrain's channels are 1-based)"
                )
            rest = shape[1:]
        if self.unit is not None:
            inside = "the channel map" if self.channel is not None else "the layer"
            if len(self.unit) != len(rest) or any(i >= n for i, n in zip(self.unit, rest)):
                raise ValueError(
                    f"unit {self.unit} is not an index of {inside} of shape {rest} ({where}; 0-based)"
                )
            rest = ()
        if prod(rest) > 1 and self.reduction is None:
            raise ValueError(
                f"the target selects {prod(rest)} neurons of {where}: give a unit or a reduction {REDUCTIONS}"
            )

    def select(self, values: torch.Tensor) -> torch.Tensor:
        """The target's value per sample, ``(batch,)``, from a layer's values ``(batch, *shape)``."""
        part = values if self.channel is None else values[:, self.channel]
        if self.unit is not None:
            part = part[(slice(None), *self.unit)]
        part = part.reshape(part.shape[0], -1)
        if self.reduction == "max":
            return part.amax(dim=1)
        return part.mean(dim=1)  # one element (no reduction) or "mean"


def _is_index(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def as_targets(targets: Target | Sequence[Target]) -> tuple[Target, ...]:
    """One target or a sequence of them, as a non-empty tuple."""
    if isinstance(targets, Target):
        return (targets,)
    targets = tuple(targets)
    if not targets or not all(isinstance(t, Target) for t in targets):
        raise TypeError(f"targets must be a Target or a non-empty sequence of Targets, got {targets!r}")
    return targets


#: The ReLUs the guided backward rule replaces: functions, tensor methods, and modules.
RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_, F.relu_)
RELU_METHODS = ("relu", "relu_")


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes only positive gradients at positive inputs (Springenberg et al.)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.where((x > 0) & (grad > 0), grad, torch.zeros_like(grad))


def guided_relu(x: torch.Tensor) -> torch.Tensor:
    """``relu(x)`` with the guided backpropagation rule ``grad_in = grad_out · 1[x > 0] · 1[grad_out > 0]``.

    References
    ----------
    J. T. Springenberg, A. Dosovitskiy, T. Brox, M. Riedmiller, "Striving for simplicity: the all
    convolutional net", ICLR workshop, 2015.
    """
    return _GuidedReLU.apply(x)


@dataclass(frozen=True)
class _Source:
    """Where a layer's values come from: an fx node, and the gather that puts them in layer order."""

    node: str
    order: torch.Tensor | None  # per-sample flat index into the node's value, or None (already in order)
    shape: tuple[int, ...]
    index: int

    def in_order(self, value: torch.Tensor) -> torch.Tensor:
        if self.order is None:
            return value.reshape(value.shape[0], *self.shape)
        return value.reshape(value.shape[0], -1)[:, self.order].reshape(value.shape[0], *self.shape)


class LayerReader:
    """A model's layers, readable differentiably for any batch through ``torch.fx``.

    Parameters
    ----------
    model : nn.Module
        An fx-traceable network with one tensor input; it runs in eval mode (restored after).
    example : torch.Tensor
        A batch ``(n, *input_shape)``; its first sample names and shapes the layers.
    granularity : {"merged", "ops"}
        How layers are named (:mod:`nsp_pipeline.model.capture`); ``children`` has no fx graph.

    Raises
    ------
    TraceError
        If the model cannot be traced, or normalises with batch statistics in eval mode (a
        sample's map would depend on the others in its batch).
    """

    def __init__(
        self, model: nn.Module, example: torch.Tensor, granularity: str = default("interpret.granularity")
    ) -> None:
        if granularity not in ("merged", "ops"):
            raise ValueError(
                f"granularity must be 'merged' or 'ops' (layers of the fx graph), got {granularity!r}"
            )
        batch_norms = batch_statistics(model)
        if batch_norms:
            raise TraceError(
                f"{type(model).__name__} normalises with batch statistics in eval mode "
                f"({shortened(batch_norms)}: no running statistics), so a sample's map would depend on "
                "the rest of its batch; expected batch norms with running statistics"
            )
        self.model = model
        self.granularity = granularity
        first = example[:1].detach()
        ops = trace(model, first, "ops")
        self._graph_module = ops.model
        nodes = _layer_nodes(self._graph_module, first, len(ops.layout))
        if granularity == "ops":
            self.layout = ops.layout
            self._sources = {
                layer.name: _Source(node, None, layer.shape, index)
                for index, (layer, node) in enumerate(zip(ops.layout.layers, nodes))
            }
        else:
            merged = trace(model, first, "merged")
            self.layout = merged.layout
            self._sources = _merged_sources(ops, merged, nodes)

    @property
    def names(self) -> list[str]:
        """Layer names in order."""
        return self.layout.names

    def shape(self, layer: str) -> tuple[int, ...]:
        """Per-sample shape of a layer; ``ValueError`` naming the valid layers if there is none."""
        if layer not in self._sources:
            raise ValueError(
                f"no layer named {layer!r} in {type(self.model).__name__} (granularity "
                f"{self.granularity!r}); layers are {self.names}"
            )
        return self._sources[layer].shape

    def check(self, targets: Sequence[Target]) -> None:
        """Raise ``ValueError`` for a target on an unknown layer or outside its layer's shape."""
        for target in targets:
            target.check(self.shape(target.layer))

    def position(self, layer: str) -> int:
        """Index of a layer in :attr:`layout` (layers are in topological order)."""
        self.shape(layer)
        return self._sources[layer].index

    def in_node_order(self, layer: str) -> bool:
        """Whether the traced value of ``layer`` holds its neurons in the layer's C order already."""
        self.shape(layer)
        return self._sources[layer].order is None

    def module(self, layers: Sequence[str], guided: bool = False) -> _Module:
        """A callable ``inputs -> {layer: values}`` computing only what ``layers`` need.

        With ``guided``, every ReLU (module, function or method) uses :func:`guided_relu`.
        """
        graph = copy.deepcopy(self._graph_module.graph)
        modules = dict(self._graph_module.named_modules())
        by_name = {node.name: node for node in graph.nodes}
        for node in list(graph.nodes):
            if node.op not in ("call_module", "call_function", "call_method"):
                continue
            target = modules[node.target] if node.op == "call_module" else node.target
            if guided and _is_relu(node, target):
                source = node.args[0] if node.args else node.kwargs["input"]
                node.op, node.target, node.args, node.kwargs = "call_function", guided_relu, (source,), {}
            elif mutates_input(node, target) and isinstance(node.args[0], torch.fx.Node):
                with graph.inserting_before(node):  # the in-place operation overwrites a copy
                    node.update_arg(0, graph.call_method("clone", (node.args[0],)))
        wanted = [by_name[self._sources[layer].node] for layer in layers]
        output = next(node for node in graph.nodes if node.op == "output")
        graph.erase_node(output)
        graph.output(tuple(wanted))
        graph_module = torch.fx.GraphModule(self._graph_module, graph)
        graph_module.graph.eliminate_dead_code()
        graph_module.recompile()
        return _Module(graph_module, self, tuple(layers))


def _is_relu(node: torch.fx.Node, target) -> bool:
    if node.op == "call_module":
        return isinstance(target, nn.ReLU)
    if node.op == "call_method":
        return target in RELU_METHODS
    return any(target is relu for relu in RELU_FUNCTIONS)


class _Module:
    """A graph module returning chosen layers; ``raw`` gives the fx values (for gradients)."""

    def __init__(self, graph_module: torch.fx.GraphModule, reader: LayerReader, layers: tuple[str, ...]):
        self.graph_module, self.reader, self.layers = graph_module, reader, layers

    def raw(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The fx nodes' values behind ``layers`` (the input itself for ``"input"``)."""
        with eval_mode(self.reader.model):
            return tuple(self.graph_module(inputs))

    def ordered(self, layer: str, value: torch.Tensor) -> torch.Tensor:
        """A raw value (or a gradient with respect to it) in the layer's element order and shape."""
        return self.reader._sources[layer].in_order(value)

    def __call__(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {layer: self.ordered(layer, value) for layer, value in zip(self.layers, self.raw(inputs))}


def _layer_nodes(graph_module: torch.fx.GraphModule, example: torch.Tensor, n_layers: int) -> list[str]:
    """The fx node behind each ``ops`` layer: the nodes computing a tensor from a layer, in order."""
    layers: list[str] = []

    class Marker(torch.fx.Interpreter):
        def run_node(self, node):
            result = super().run_node(node)
            from_layer = any(n.name in layers for n in node.all_input_nodes)
            computed = node.op != "output" and isinstance(result, torch.Tensor) and from_layer
            if node.op == "placeholder" or computed:
                layers.append(node.name)
            return result

    with torch.no_grad():
        Marker(graph_module).run(example.clone())
    if len(layers) != n_layers:
        raise TraceError(
            f"{len(layers)} fx nodes compute layers but the trace recorded {n_layers} layers; "
            "cannot match layers to graph nodes"
        )
    return layers


def _merged_sources(ops, merged, nodes: list[str]) -> dict[str, _Source]:
    """Per merged layer, the fx node of its last merged operation and the gather to layer order."""
    index = {name: i for i, name in enumerate(ops.layout.names)}
    readers: dict[int, list[int]] = {}
    for reader_index, call in enumerate(ops.calls[1:], start=1):
        for layer in set(call.input_layers):
            readers.setdefault(layer, []).append(reader_index)
    sources = {}
    for position, layer in enumerate(merged.layout.layers):
        last = index[layer.name]
        call = merged.calls[position]
        absorbed = call.absorbed if call is not None else ()
        for step in absorbed:  # merged operations form a chain of single readers (model.merge)
            following = readers.get(last, [])
            if len(following) != 1 or ops.calls[following[0]].kind != step.kind:
                raise TraceError(f"cannot follow the operations merged into layer {layer.name!r}")
            last = following[0]
        moves = tuple(step for step in absorbed if is_shape_only(step))
        order = None
        if moves:
            positions = moved_positions(moves, (1, *layer.shape))
            if not np.array_equal(positions, np.arange(len(positions))):
                order = torch.from_numpy(np.argsort(positions))
        sources[layer.name] = _Source(nodes[last], order, layer.shape, position)
    return sources


def target_values(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: Target | Sequence[Target],
    granularity: str = default("interpret.granularity"),
) -> torch.Tensor:
    """Each target's value for each sample, from one forward pass.

    Parameters
    ----------
    model : nn.Module
        An fx-traceable network (functional ReLUs included); it runs in eval mode.
    inputs : torch.Tensor
        A batch ``(n_samples, *input_shape)``.
    targets : Target or sequence of Target
        What to read (0-based channels and units).
    granularity : {"merged", "ops"}
        How the targets name layers.

    Returns
    -------
    torch.Tensor
        ``(n_samples, n_targets)``.
    """
    targets = as_targets(targets)
    reader = LayerReader(model, inputs, granularity)
    reader.check(targets)
    module = reader.module(sorted({t.layer for t in targets}))
    with torch.no_grad():
        values = module(inputs)
    return torch.stack([t.select(values[t.layer]) for t in targets], dim=1)
