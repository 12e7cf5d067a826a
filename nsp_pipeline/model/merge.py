"""Granularity ``merged``: the ``ops`` layers without the operations that map one neuron to one.

Shape-only operations (a bijection of one layer's elements: view, reshape, flatten, permute,
...) and unary elementwise operations (activations, eval-mode batch norm, dropout, identity,
arithmetic with constants such as ``x * 2`` or ``x + 1``) are merged into the layer they read;
which operations these are is the registry's ``merges`` (:mod:`nsp_pipeline.model.ops`). That
layer keeps its name, kind, shape and element order (C order of its own operation's output) and
holds the values of the last merged operation in that order: ``conv1`` followed by ``relu1`` is
one layer ``conv1`` holding the ReLU's output. Layers that read a merged operation read the
layer it was merged into, through the shape-only operations in between (:attr:`OpCall.moves`).
Operations on two layers (residual ``+``, ``cat``), slicing and padding stay layers. A
value-changing operation is merged only where the value it replaces is read by nothing else (no
other operation, not the model's output), and never into the input layer, which always holds
the model's inputs.

A merged operation ``v -> v'`` is an edge whose target has ``v`` as its only parent. Merging
contracts such edges, so every kept neuron keeps exactly its ancestors: the causal transform
means the same on fewer nodes, and the model's output is still recorded (in the element order
of the layer that holds it).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from nsp_pipeline.core.layout import Layout
from nsp_pipeline.model.ops import is_shape_only, is_unary_elementwise
from nsp_pipeline.model.records import OpCall, Trace, moved_positions


def merged(ops: Trace, returned: set[int]) -> Trace:
    """The ``merged`` granularity of an ``ops`` trace (see the module docstring).

    Parameters
    ----------
    ops : Trace
        A trace of granularity ``ops``.
    returned : set of int
        The layers the model returns (also inside tuples or dicts); they count as read, so no
        operation's value replaces theirs.
    """
    n_layers = len(ops.layout)
    readers = [int(index in returned) for index in range(n_layers)]
    for call in ops.calls[1:]:
        for layer in call.input_layers:
            readers[layer] += 1
    holder = list(range(n_layers))  # the layer each recorded layer is merged into (itself if kept)
    path: list[tuple[int, ...]] = [()] * n_layers  # merged layers from the holder's operation to it
    last_value: dict[int, int] = {}  # holder -> the merged layer whose values it holds
    shape_only: set[int] = set()
    for index in range(1, n_layers):
        call = ops.calls[index]
        if len(call.input_layers) != 1:
            continue
        source = call.input_layers[0]
        if is_shape_only(call):
            shape_only.add(index)
        elif (
            is_unary_elementwise(call)
            and holder[source] != 0
            and all(readers[layer] == 1 for layer in (holder[source], *path[source]))
        ):
            last_value[holder[source]] = index
        else:
            continue
        holder[index] = holder[source]
        path[index] = (*path[source], index)

    def moves(layer: int) -> tuple[OpCall, ...]:
        return tuple(ops.calls[step] for step in path[layer] if step in shape_only)

    kept = [index for index in range(n_layers) if holder[index] == index]
    renumber = {old: new for new, old in enumerate(kept)}
    layers, values, calls = [ops.layout.layers[0]], [ops.values[0]], [None]
    for index in kept[1:]:
        call, layer = ops.calls[index], ops.layout.layers[index]
        absorbed = tuple(ops.calls[step] for step in path[last_value[index]]) if index in last_value else ()
        value = ops.values[index]
        if absorbed:
            value = _in_layer_order(ops.values[last_value[index]], moves(last_value[index]), value.shape)
        input_layers = tuple(renumber[holder[source]] for source in call.input_layers)
        calls.append(
            replace(
                call,
                input_layers=input_layers,
                moves=tuple(moves(source) for source in call.input_layers),
                absorbed=absorbed,
            )
        )
        description = " -> ".join([layer.description, *(step.kind for step in absorbed)])
        layers.append(replace(layer, description=description, parents=tuple(sorted(set(input_layers)))))
        values.append(value)
    output_layer = ops.output_layer
    if output_layer is not None:  # still one recorded layer if only reshapes lie between
        output_moves, shape = moves(output_layer), tuple(ops.values[holder[output_layer]].shape)
        positions = moved_positions(output_moves, shape) if output_moves else None
        in_order = positions is None or np.array_equal(positions, np.arange(len(positions)))
        output_layer = renumber[holder[output_layer]] if in_order else None
    return replace(
        ops,
        layout=Layout(tuple(layers)),
        values=values,
        calls=calls,
        granularity="merged",
        output_layer=output_layer,
    )


def _in_layer_order(value: torch.Tensor, moves: tuple[OpCall, ...], shape: torch.Size) -> torch.Tensor:
    """Undo shape-only operations: ``value`` (their result) in the element order of a tensor of ``shape``."""
    if not moves:
        return value
    ordered = torch.empty(value.numel(), dtype=value.dtype, device=value.device)
    positions = torch.from_numpy(moved_positions(moves, tuple(shape))).to(value.device)
    ordered[positions] = value.reshape(-1)
    return ordered.reshape(shape)
