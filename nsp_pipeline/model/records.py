"""What a traced forward pass records: the operation behind each layer and the trace itself.

:class:`OpCall` and :class:`Trace` are made by :mod:`nsp_pipeline.model.capture`, regrouped by
:mod:`nsp_pipeline.model.merge` and read by the operation registry (:mod:`nsp_pipeline.model.ops`),
the edge rules and the factorised operator's builder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from math import prod

import numpy as np
import torch
from torch import nn

from nsp_pipeline.core.errors import TraceError
from nsp_pipeline.core.layout import Layout
from nsp_pipeline.core.pattern import Pattern


@dataclass(frozen=True)
class OpCall:
    """The operation that produced one layer, replayable on other inputs.

    Parameters
    ----------
    target : nn.Module, callable or str
        The module, the function, or the tensor method name that was called.
    inputs : tuple of torch.Tensor
        The tensors the operation read, in argument order.
    input_layers : tuple of int
        The layer each input comes from. An input may have another shape than its layer
        (``children`` granularity: a ``view`` between children) but always the same
        number of elements, in the same C order unless ``moves`` reorders them.
    output : torch.Tensor
        The operation's output.
    replay : callable
        ``replay(*tensors)`` calls the operation again with ``tensors`` in place of ``inputs``
        and every other argument unchanged.
    args, kwargs : tuple, dict
        The arguments of the call, with their recorded values (for functional operations,
        whose parameters such as ``kernel_size`` are arguments).
    moves : tuple of tuple of OpCall
        Granularity ``merged``: per input, the merged shape-only operations that turn its
        layer into the tensor read (empty: none, also for the other granularities).
    absorbed : tuple of OpCall
        Granularity ``merged``: the operations merged into this layer, in call order; the
        layer holds the last one's output, in the order of ``output`` (empty: none).
    """

    target: nn.Module | Callable | str
    inputs: tuple[torch.Tensor, ...]
    input_layers: tuple[int, ...]
    output: torch.Tensor
    replay: Callable[..., torch.Tensor]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    moves: tuple[tuple[OpCall, ...], ...] = ()
    absorbed: tuple[OpCall, ...] = ()

    @property
    def kind(self) -> str:
        """Short type name: module class, function name or method name."""
        return target_kind(self.target)

    def read_positions(self, k: int) -> np.ndarray | None:
        """For each element of one sample of input ``k`` (C order), its position in its layer.

        ``None`` where input ``k`` holds its layer's elements in C order (no ``moves``, or
        moves that only reshape).
        """
        if not self.moves or not self.moves[k]:
            return None
        per_sample = self.inputs[k][0].numel()
        positions = moved_positions(self.moves[k], tuple(self.moves[k][0].inputs[0].shape))[:per_sample]
        return None if np.array_equal(positions, np.arange(per_sample)) else positions


def target_kind(target) -> str:
    """Short type name of an operation: module class, function name or method name."""
    if isinstance(target, nn.Module):
        return type(target).__name__
    if isinstance(target, str):
        return target
    return getattr(target, "__name__", repr(target))


def moved_positions(moves: tuple[OpCall, ...], shape: tuple[int, ...]) -> np.ndarray:
    """Replay shape-only operations on element codes: the flat source position of each result element."""
    codes = torch.arange(prod(shape)).reshape(shape)
    for move in moves:
        codes = move.replay(codes)
    return codes.reshape(-1).numpy()


@dataclass(frozen=True)
class Trace:
    """What one forward pass recorded.

    Parameters
    ----------
    layout : Layout
        Recorded layers.
    values : list of torch.Tensor
        Each layer's output, shape ``(n_samples, *layer.shape)``.
    calls : list of OpCall or None
        The operation behind each layer (``None`` for the input). Replays are exact for the
        batch the trace ran on; the graph builder traces a batch of one reference sample.
    model_output : torch.Tensor
        The model's output.
    granularity : str
        ``"children"``, ``"ops"`` or ``"merged"``.
    model : nn.Module
        The traced model (its operations are replayed when edges are derived).
    output_layer : int or None
        The layer the model returns, if it returns one recorded layer.
    """

    layout: Layout
    values: list[torch.Tensor]
    calls: list[OpCall | None]
    model_output: torch.Tensor
    granularity: str
    model: nn.Module
    output_layer: int | None = None

    def pattern(self, labels=None, sample_ids=None) -> Pattern:
        """The recorded activations as a float64 :class:`Pattern`."""
        n_samples = self.values[0].shape[0]
        sizes = [value[0].numel() for value in self.values]
        values, start = np.empty((n_samples, sum(sizes))), 0
        for value, size in zip(self.values, sizes):  # one float64 pass, no per-layer copies
            np.copyto(values[:, start : start + size], value.detach().reshape(n_samples, -1).cpu().numpy())
            start += size
        return Pattern(
            layout=self.layout,
            values=values,
            domain="activations",
            sample_ids=sample_ids,
            labels=labels,
            predictions=predictions(self.model_output),
        )


def predictions(model_output: torch.Tensor) -> np.ndarray | None:
    """Predicted class per sample (argmax of ``(n_samples, n_classes)`` output), else ``None``."""
    if isinstance(model_output, torch.Tensor) and model_output.ndim == 2 and model_output.shape[1] > 1:
        return model_output.argmax(dim=1).cpu().numpy()
    return None


def check_output(model_output, n_samples: int) -> str | None:
    """The pipeline's policy on what a model returns (README, "What the model returns").

    A tensor ``(n_samples, n_classes)`` with ``n_classes >= 2`` gives each sample's prediction,
    its argmax (:func:`predictions`). Another tensor with a leading batch axis (``(n, 1)``
    scores, feature maps) gives none. Anything else is refused.

    Parameters
    ----------
    model_output : object
        What the model's ``forward`` returned for a batch.
    n_samples : int
        The batch's size.

    Returns
    -------
    str or None
        ``None`` if the output gives predictions, else why it gives none, for a warning.

    Raises
    ------
    TraceError
        If the output is not one tensor with a leading batch axis of ``n_samples`` (a tuple, a
        list, a dict, a tensor without the batch axis); the message says how to fix the model.
    """
    returned = f"returns {describe_output(model_output)} for a batch of {n_samples}"
    if not isinstance(model_output, torch.Tensor):
        raise TraceError(
            f"{returned}; expected one tensor of shape (batch, classes): return the class scores (logits) "
            "from forward, or wrap the model in a module whose forward returns them (e.g. "
            "`return self.model(x)[0]` or `return self.model(x)['logits']`)"
        )
    if model_output.ndim == 0 or model_output.shape[0] != n_samples:
        raise TraceError(
            f"{returned}; expected a leading batch axis of {n_samples}, e.g. (batch, classes) "
            "(does forward drop the batch axis or fold it into others, e.g. x.squeeze() or x.view(-1)?)"
        )
    if predictions(model_output) is None:
        return f"{returned}, not (batch, classes) scores with at least 2 classes"
    return None


def describe_output(value) -> str:
    """A model's output for a message: ``a tensor of shape (2, 10)``, ``a tuple of 2 (...)``, ...."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, tuple | list):
        parts = ", ".join(describe_output(item) for item in value[:4]) + (", ..." if len(value) > 4 else "")
        return f"a {type(value).__name__} of {len(value)} ({parts})"
    if isinstance(value, dict):
        return f"a {type(value).__name__} with keys {list(value)[:10]}"
    return f"a {type(value).__name__}"
