"""Window geometry of convolution and pooling: which input positions each output position reads.

Read alike from a module (``nn.Conv2d``) and from a functional call (``F.conv2d``) through the
operation's registry entry (:mod:`nsp_pipeline.model.ops`); used by the neuron-edge rules
(:mod:`nsp_pipeline.graph.edges`) and by the per-axis ancestor relations
(:mod:`nsp_pipeline.graph.relations`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from nsp_pipeline.model.ops import Operation
from nsp_pipeline.model.records import OpCall


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


def call_window(call: OpCall, entry: Operation) -> Window:
    """The window of a call of a windowed operation (``entry.window`` is ``(kind, spatial axes)``)."""
    kind, n = entry.window
    if kind.startswith("adaptive"):
        return Window(kind, (), (), (), ())

    def argument(name: str, default=None):
        return entry.argument(call, name, default)

    dilation = _per_axis(argument("dilation", 1), n)
    if kind == "conv":
        weight = argument("weight")
        kernel = tuple(weight.shape[2:])
        return Window(
            "conv", kernel, _per_axis(argument("stride", 1), n), dilation,
            _conv_padding(argument("padding", 0), kernel, dilation, n), argument("padding_mode", "zeros"),
            int(argument("groups", 1)), weight,
        )  # fmt: skip
    kernel = _per_axis(argument("kernel_size"), n)
    stride = _per_axis(argument("stride") or argument("kernel_size"), n)
    padding = tuple((p, p) for p in _per_axis(argument("padding", 0), n))
    return Window(kind, kernel, stride, dilation, padding, ceil_mode=bool(argument("ceil_mode", False)))


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
