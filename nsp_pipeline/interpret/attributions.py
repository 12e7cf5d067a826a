"""Maps of what drives a target: gradients, guided backprop, SmoothGrad, occlusion, upsampled activations.

Every function takes a model, a batch ``(n_samples, *input_shape)`` and one or more
:class:`~nsp_pipeline.interpret.targets.Target` (0-based channels and units; dnnbrain's are 1-based)
and returns maps per sample and target, on the inputs' device (CPU unless the inputs are
elsewhere), for any input size. Models are fx-traceable networks with one tensor input; ReLUs
may be modules or functions. Batches are processed in chunks of ``batch_size`` rows; the
results do not depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import lcm, prod

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nsp_pipeline.core.defaults import default
from nsp_pipeline.core.errors import NotFactorizableError
from nsp_pipeline.graph.receptive_fields import fields_from_trace
from nsp_pipeline.interpret.targets import LayerReader, Target, as_targets
from nsp_pipeline.model.capture import trace
from nsp_pipeline.model.ops import Family, RelationKind, lookup

#: Occlusion outputs: one value per window position, or per input position (mean over its windows).
OCCLUSION_OUTPUTS = ("grid", "pixel")
#: Interpolation modes of :func:`upsampled_activation_map`.
UPSAMPLING_MODES = ("nearest", "bilinear", "bicubic", "area")
#: What :func:`upsampled_activation_map` does below the threshold: dnnbrain's floor, or zero.
THRESHOLD_MODES = ("floor", "zero")


def saliency(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: Target | Sequence[Target],
    wrt: str = "input",
    abs: bool = default("interpret.saliency.abs"),
    granularity: str = default("interpret.granularity"),
    batch_size: int = 256,
) -> torch.Tensor:
    """Gradient of each target with respect to the input or an earlier layer (vanilla saliency).

    Signed by default, like dnnbrain's ``VanillaSaliencyImage``; ``abs=True`` gives Simonyan et
    al.'s magnitude map.

    Parameters
    ----------
    model : nn.Module
        An fx-traceable network; it runs in eval mode.
    inputs : torch.Tensor
        ``(n_samples, *input_shape)``.
    targets : Target or sequence of Target
        What to differentiate.
    wrt : str
        ``"input"`` or the name of a layer before every target's layer.
    abs : bool
        Absolute values of the gradients.
    granularity : {"merged", "ops"}
        How targets and ``wrt`` name layers.
    batch_size : int
        Samples per forward pass.

    Returns
    -------
    torch.Tensor
        ``(n_samples, n_targets, *shape)``: ``shape`` is the input's or the ``wrt`` layer's.

    References
    ----------
    K. Simonyan, A. Vedaldi, A. Zisserman, "Deep inside convolutional networks: visualising image
    classification models and saliency maps", ICLR workshop, 2014.
    """
    maps = _gradient_maps(model, inputs, targets, wrt, False, granularity, batch_size)
    return maps.abs() if abs else maps


def guided_backprop(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: Target | Sequence[Target],
    wrt: str = "input",
    granularity: str = default("interpret.granularity"),
    batch_size: int = 256,
) -> torch.Tensor:
    """Guided backpropagation: gradients where every ReLU passes back only positive gradients.

    At each ReLU with input ``x`` the backward pass is ``grad_in = grad_out · 1[x > 0] ·
    1[grad_out > 0]``, for ReLU modules and for ``F.relu``, ``torch.relu`` and ``Tensor.relu``
    alike (the model's fx graph is rewritten; captum's ``GuidedBackprop`` hooks ``nn.ReLU``
    modules only and returns plain gradients for functional ReLUs). Other activations
    (ReLU6, LeakyReLU, GELU) keep their ordinary gradients. Parameters and result as in
    :func:`saliency`.

    References
    ----------
    J. T. Springenberg, A. Dosovitskiy, T. Brox, M. Riedmiller, "Striving for simplicity: the all
    convolutional net", ICLR workshop, 2015.
    """
    return _gradient_maps(model, inputs, targets, wrt, True, granularity, batch_size)


def smoothgrad(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: Target | Sequence[Target],
    n: int = default("interpret.smoothgrad.n"),
    sigma: float = default("interpret.smoothgrad.sigma"),
    seed: int = default("interpret.smoothgrad.seed"),
    method: str = default("interpret.smoothgrad.method"),
    wrt: str = "input",
    granularity: str = default("interpret.granularity"),
    batch_size: int = 256,
) -> torch.Tensor:
    """SmoothGrad: the mean of the gradient maps at ``x + ε`` over ``n`` draws of ``ε ~ N(0, σ²)``.

    The noise's standard deviation (not its variance) is ``σ = sigma · (x.max() − x.min())`` per
    sample. dnnbrain's ``backprop_smooth`` differs: it draws with standard deviation σ² and,
    through ``image + image.normal_(...)``, overwrites the image with the noise.

    Parameters
    ----------
    n : int
        Noise draws per sample, evaluated in batches.
    sigma : float
        Noise level as a fraction of each sample's value range.
    seed : int
        Seed of a private generator: sample ``i`` of the batch gets the ``i``-th block of draws,
        so equal inputs and seed give equal maps whatever ``batch_size``.
    method : {"saliency", "guided"}
        Plain gradients (:func:`saliency`, signed) or :func:`guided_backprop`.
    model, inputs, targets, wrt, granularity, batch_size
        As in :func:`saliency` (``batch_size`` counts noisy copies).

    Returns
    -------
    torch.Tensor
        ``(n_samples, n_targets, *shape)``.

    References
    ----------
    D. Smilkov, N. Thorat, B. Kim, F. Viégas, M. Wattenberg, "SmoothGrad: removing noise by
    adding noise", ICML workshop, 2017.
    """
    if method not in ("saliency", "guided"):
        raise ValueError(f"method must be 'saliency' or 'guided', got {method!r}")
    if n < 1 or sigma < 0 or batch_size < 1:
        raise ValueError(f"expected n >= 1, sigma >= 0 and batch_size >= 1, got {n}, {sigma}, {batch_size}")
    targets, module = _prepare(model, inputs, targets, wrt, method == "guided", granularity)
    generator = torch.Generator(device=inputs.device).manual_seed(seed)
    per_chunk = max(1, batch_size // n)
    maps = []
    for start in range(0, len(inputs), per_chunk):
        samples = inputs[start : start + per_chunk].detach()
        noise = torch.stack(
            [
                torch.randn(
                    (n, *inputs.shape[1:]), generator=generator, dtype=inputs.dtype, device=inputs.device
                )
                for _ in range(len(samples))
            ]
        )
        flat = samples.reshape(len(samples), -1)
        scale = sigma * (flat.amax(dim=1) - flat.amin(dim=1))
        noisy = samples[:, None] + scale.reshape(-1, 1, *[1] * (inputs.ndim - 1)) * noise
        noisy = noisy.reshape(-1, *inputs.shape[1:])
        grads = torch.cat(
            [
                _batch_gradients(module, noisy[row : row + batch_size], targets, wrt)
                for row in range(0, len(noisy), batch_size)
            ]
        )
        maps.append(grads.reshape(len(samples), n, *grads.shape[1:]).mean(dim=1))
    return torch.cat(maps)


def occlusion(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: Target | Sequence[Target],
    window: int | Sequence[int],
    stride: int | Sequence[int],
    fill: float = default("interpret.occlusion.fill"),
    output: str = default("interpret.occlusion.output"),
    granularity: str = default("interpret.granularity"),
    batch_size: int = 64,
    restrict: bool = True,
) -> torch.Tensor:
    """Occlusion: the change ``target(x) − target(occluded x)`` as a window slides over the input.

    The window covers every channel (all axes between the batch axis and the slid axes) and is
    filled with ``fill``. All occluded copies of all samples are evaluated in batches, and the
    model runs only up to the targets' layers.

    With ``restrict``, a target that is one neuron (a unit) is evaluated only where it can
    change. A window that misses the unit's exact theoretical receptive field
    (:func:`~nsp_pipeline.graph.receptive_fields.receptive_fields`) leaves the unit's inputs,
    hence its value, unchanged: its entry is 0 without a forward pass. And when every layer the
    units depend on commutes with translations (convolutions, non-adaptive pooling, batch norm
    on running statistics, elementwise operations whose constants do not vary across
    positions), the model runs on the smallest input crop that holds the units' unclipped
    windows, its start aligned to the units' strides, so a deep unit of a large image costs a
    forward pass of its field's size (the graph stops at the targets' layers, so later layers,
    such as a linear head of fixed size, never see the crop). The result is the same as without
    ``restrict`` (skipped entries exactly 0, the others up to floating-point rounding); models
    whose receptive fields cannot be traced fall back to the full computation.

    Parameters
    ----------
    window, stride : int or sequence of int
        Window size and step along the last ``len(window)`` axes (``(height, width)`` for
        images; an int means a square over the last two axes, or the last axis of 1-D inputs).
    fill : float
        Value of the occluded positions.
    output : {"grid", "pixel"}
        ``"grid"``: one value per window position, the windows that fit inside the input,
        ``(L − w) // s + 1`` per axis, top-left first (dnnbrain's ``OccluderDiscrepancyMapping``,
        here with a (height, width) window; dnnbrain takes (width, height)). ``"pixel"``: per input
        position the mean over the windows covering it, with captum's windows (when ``s`` does not
        divide ``L − w``, one more window per axis, cut at the border, so every position is
        covered; needs ``stride <= window``).
    model, inputs, targets, granularity
        As in :func:`saliency`.
    batch_size : int
        Occluded copies per forward pass.
    restrict : bool
        Skip the windows that miss a unit target's receptive field and crop the input to it
        (see above); ``False`` evaluates every window on the whole input.

    Returns
    -------
    torch.Tensor
        ``(n_samples, n_targets, *grid)`` or ``(n_samples, n_targets, *spatial)`` (the slid axes).

    References
    ----------
    M. D. Zeiler, R. Fergus, "Visualizing and understanding convolutional networks", ECCV 2014.
    B. Zhou, A. Khosla, A. Lapedriza, A. Oliva, A. Torralba, "Object detectors emerge in deep scene
    CNNs", ICLR 2015.
    """
    if output not in OCCLUSION_OUTPUTS:
        raise ValueError(f"output must be one of {OCCLUSION_OUTPUTS}, got {output!r}")
    targets = as_targets(targets)
    sample_shape = tuple(inputs.shape[1:])
    window, stride = _window(window, stride, sample_shape)
    spatial = sample_shape[len(sample_shape) - len(window) :]
    covers = [
        _covers(size, w, s, output, axis) for axis, (size, w, s) in enumerate(zip(spatial, window, stride))
    ]
    reader = LayerReader(model, inputs, granularity)
    reader.check(targets)
    grid = tuple(len(c) for c in covers)
    n_windows = prod(grid)
    plan = _restriction(model, inputs, reader, targets, covers, granularity) if restrict else None
    hits = torch.ones(n_windows, len(targets), dtype=torch.bool) if plan is None else plan.hits
    crop = (slice(None),) * len(window) if plan is None or plan.crop is None else plan.crop
    run_targets = targets if plan is None or plan.crop is None else plan.targets
    module = reader.module(sorted({t.layer for t in run_targets}))
    cut = [cover[:, part] for cover, part in zip(covers, crop)]
    region = inputs[(Ellipsis, *crop)]
    spatial = tuple(region.shape[region.ndim - len(window) :])
    channel_axes = (1,) * (len(sample_shape) - len(window))
    kept = torch.nonzero(hits.any(dim=1))[:, 0].to(inputs.device)
    diffs = torch.zeros(len(inputs), n_windows, len(targets), dtype=inputs.dtype, device=inputs.device)
    with torch.no_grad():
        raw = run_targets is not targets  # a crop: layers in order (checked), of the crop's size
        base = _values(module, _fast_layout(region), run_targets, raw)
        rows = torch.arange(len(inputs) * len(kept), device=inputs.device)
        for chunk in rows.split(batch_size):
            sample, position = chunk // len(kept), kept[chunk % len(kept)]
            mask = torch.ones(len(chunk), *[1] * len(window), dtype=torch.bool, device=inputs.device)
            for axis, index in enumerate(torch.unravel_index(position, grid)):
                shape = [len(chunk), *[1] * len(window)]
                shape[1 + axis] = spatial[axis]
                mask = mask & cut[axis].to(inputs.device)[index].reshape(shape)
            mask = mask.reshape(len(chunk), *channel_axes, *spatial)
            occluded = torch.where(mask, torch.as_tensor(fill, dtype=inputs.dtype), region[sample])
            diffs[sample, position] = base[sample] - _values(module, _fast_layout(occluded), run_targets, raw)
    diffs = torch.where(
        hits.to(inputs.device), diffs, torch.zeros((), dtype=diffs.dtype, device=diffs.device)
    )
    maps = diffs.permute(0, 2, 1).reshape(len(inputs), len(targets), *grid)
    if output == "grid":
        return maps
    for cover in covers:  # sum over the windows covering each position, axis by axis
        maps = torch.tensordot(maps, cover.to(maps), dims=([2], [0]))
    counts = torch.ones((), dtype=maps.dtype, device=maps.device)
    for cover in covers:
        counts = counts[..., None] * cover.sum(dim=0).to(maps)
    return maps / counts


def upsampled_activation_map(
    model: nn.Module,
    inputs: torch.Tensor,
    layer: str,
    channel: int,
    size: Sequence[int] | None = None,
    mode: str = default("interpret.activation_map.mode"),
    threshold_percentile: float | None = default("interpret.activation_map.threshold_percentile"),
    threshold_mode: str = default("interpret.activation_map.threshold_mode"),
    granularity: str = default("interpret.granularity"),
) -> torch.Tensor:
    """A channel's activation map resized to the input (dnnbrain's ``UpsamplingActivationMapping``).

    Parameters
    ----------
    model, inputs, granularity
        As in :func:`saliency`.
    layer : str
        A layer ``(channels, *spatial)``.
    channel : int
        0-based channel (dnnbrain's are 1-based).
    size : sequence of int, optional
        Output size; the input's spatial size (its axes after the channel axis) by default.
    mode : {"nearest", "bilinear", "bicubic", "area"}
        ``torch.nn.functional.interpolate`` mode (``align_corners=False``, as dnnbrain's
        current code; dnnbrain's default mode is ``"bicubic"``, which can overshoot).
    threshold_percentile : float, optional
        Percentile ``q`` in [0, 100] of each resized map (linear interpolation, as
        ``numpy.percentile``); dnnbrain's ``interp_threshold`` is ``q / 100``.
    threshold_mode : {"floor", "zero"}
        What happens below the percentile value ``t``. ``"floor"`` is what dnnbrain does: its
        "threshold" raises the floor, ``np.clip(map, t, None)``, so values below ``t`` become
        ``t`` and nothing becomes 0. ``"zero"`` sets them to 0 (a mask of the top values, as
        dnnbrain's earlier releases did before dividing by the maximum).

    Returns
    -------
    torch.Tensor
        ``(n_samples, *size)``.

    References
    ----------
    B. Zhou, A. Khosla, A. Lapedriza, A. Oliva, A. Torralba, "Object detectors emerge in deep scene
    CNNs", ICLR 2015.
    """
    if mode not in UPSAMPLING_MODES:
        raise ValueError(f"mode must be one of {UPSAMPLING_MODES}, got {mode!r}")
    if threshold_mode not in THRESHOLD_MODES:
        raise ValueError(f"threshold_mode must be one of {THRESHOLD_MODES}, got {threshold_mode!r}")
    if threshold_percentile is not None and not 0 <= threshold_percentile <= 100:
        raise ValueError(f"threshold_percentile must be in [0, 100], got {threshold_percentile}")
    reader = LayerReader(model, inputs, granularity)
    shape = reader.shape(layer)
    if len(shape) < 2:
        raise ValueError(f"layer {layer!r} of shape {shape} has no spatial axes to upsample")
    Target(layer, channel=channel, reduction="mean").check(shape)
    size = tuple(inputs.shape[2:]) if size is None else tuple(size)
    if len(size) != len(shape) - 1:
        raise ValueError(
            f"size {size} has {len(size)} axes but channel maps of layer {layer!r} (shape {shape}) have "
            f"{len(shape) - 1}"
        )
    with torch.no_grad():
        maps = reader.module([layer])(inputs)[layer][:, channel : channel + 1]
    smooth = {"bilinear": "bilinear" if len(size) == 2 else "linear" if len(size) == 1 else "trilinear"}
    corners = False if mode in ("bilinear", "bicubic") else None
    maps = F.interpolate(maps, size=size, mode=smooth.get(mode, mode), align_corners=corners)[:, 0]
    if threshold_percentile is None:
        return maps
    flat = maps.reshape(len(maps), -1)
    threshold = torch.quantile(flat, threshold_percentile / 100, dim=1).reshape(-1, *[1] * len(size))
    if threshold_mode == "floor":
        return torch.maximum(maps, threshold)
    return torch.where(maps < threshold, torch.zeros_like(maps), maps)


def _prepare(model, inputs, targets, wrt, guided, granularity):
    targets = as_targets(targets)
    reader = LayerReader(model, inputs, granularity)
    reader.check(targets)
    if wrt != "input":
        after = [t.layer for t in targets if reader.position(t.layer) <= reader.position(wrt)]
        if after:
            raise ValueError(
                f"gradients with respect to layer {wrt!r} need targets in later layers; {after} are not "
                f"(layers in order: {reader.names})"
            )
    module = reader.module([*sorted({t.layer for t in targets}), *([] if wrt == "input" else [wrt])], guided)
    return targets, module


def _gradient_maps(model, inputs, targets, wrt, guided, granularity, batch_size) -> torch.Tensor:
    targets, module = _prepare(model, inputs, targets, wrt, guided, granularity)
    return torch.cat(
        [
            _batch_gradients(module, inputs[row : row + batch_size], targets, wrt)
            for row in range(0, len(inputs), batch_size)
        ]
    )


def _batch_gradients(module, inputs: torch.Tensor, targets: tuple[Target, ...], wrt: str) -> torch.Tensor:
    """``(batch, n_targets, *shape)`` gradients of the targets with respect to ``wrt`` (one forward pass)."""
    x = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        raw = dict(zip(module.layers, module.raw(x)))
        values = torch.stack([t.select(module.ordered(t.layer, raw[t.layer])) for t in targets], dim=1)
        source = x if wrt == "input" else raw[wrt]
        grads = []
        for k in range(len(targets)):
            (grad,) = torch.autograd.grad(
                values[:, k].sum(), source, retain_graph=k + 1 < len(targets), allow_unused=True
            )
            grad = torch.zeros_like(source) if grad is None else grad
            grads.append(grad if wrt == "input" else module.ordered(wrt, grad))
    return torch.stack(grads, dim=1).detach()


def _values(module, inputs: torch.Tensor, targets: tuple[Target, ...], raw: bool = False) -> torch.Tensor:
    """The targets' values; ``raw``: read the fx values as they are (layers in order, any spatial size)."""
    values = dict(zip(module.layers, module.raw(inputs))) if raw else module(inputs)
    return torch.stack([t.select(values[t.layer]) for t in targets], dim=1)


def _fast_layout(images: torch.Tensor) -> torch.Tensor:
    """Image batches in channels-last memory order, oneDNN's faster layout for 2-D convolutions on CPU."""
    return images.contiguous(memory_format=torch.channels_last) if images.ndim == 4 else images


def _window(window, stride, sample_shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    d = len(window) if isinstance(window, Sequence) else min(2, len(sample_shape))
    window = tuple(window) if isinstance(window, Sequence) else (window,) * d
    stride = tuple(stride) if isinstance(stride, Sequence) else (stride,) * d
    if len(stride) != d or not 1 <= d <= len(sample_shape):
        raise ValueError(
            f"window {window} and stride {stride} must have the same number of axes, at most the "
            f"{len(sample_shape)} axes of the input's shape {sample_shape}"
        )
    if any(not isinstance(v, int) or v < 1 for v in (*window, *stride)):
        raise ValueError(f"window {window} and stride {stride} must be positive ints")
    too_big = [w > n for w, n in zip(window, sample_shape[len(sample_shape) - d :])]
    if any(too_big):
        raise ValueError(f"window {window} is larger than the input's last axes {sample_shape[-d:]}")
    return window, stride


def _covers(size: int, window: int, stride: int, output: str, axis: int) -> torch.Tensor:
    """``(positions, size)`` booleans: which positions of one axis each window start covers."""
    starts = list(range(0, size - window + 1, stride))
    if output == "pixel":
        if stride > window:
            raise ValueError(
                f"output 'pixel' needs stride <= window on every axis (axis {axis}: stride {stride}, "
                f"window {window}), else some positions are covered by no window"
            )
        if (size - window) % stride:
            starts.append(starts[-1] + stride)  # captum's last window, cut at the border
    positions = torch.arange(size)
    start = torch.tensor(starts)[:, None]
    return (positions >= start) & (positions < start + window)


def unit_index(target: Target, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The index in a layer of ``shape`` of the one neuron a target selects, or ``None`` (several)."""
    index = (*(() if target.channel is None else (target.channel,)), *(target.unit or ()))
    rest = shape[len(index) :]
    return (*index, *[0] * len(rest)) if prod(rest) == 1 else None


@dataclass(frozen=True)
class _Restriction:
    """Which windows can change each target, and the input crop (with its reader and targets) to run."""

    hits: torch.Tensor  # (n_windows, n_targets) bool
    crop: tuple[slice, ...] | None
    targets: tuple[Target, ...] | None  # the targets' units in the crop


def _restriction(model, inputs, reader, targets, covers, granularity) -> _Restriction | None:
    """Windows meeting each unit target's receptive field, and the crop holding the units' windows."""
    units = [unit_index(t, reader.shape(t.layer)) for t in targets]
    if all(u is None for u in units):
        return None
    recorded = trace(model, inputs[:1], granularity)
    try:
        fields = fields_from_trace(
            recorded, sorted({t.layer for t, u in zip(targets, units) if u is not None})
        )
    except NotFactorizableError:
        return None
    d = len(covers)
    hits = []
    for target, unit in zip(targets, units):
        if unit is None:
            hits.append(np.ones([len(c) for c in covers], dtype=bool))
            continue
        mask = fields[target.layer].mask(unit)
        counts = mask.reshape(-1, *mask.shape[mask.ndim - d :]).sum(axis=0, dtype=np.float64)
        for axis, cover in enumerate(covers):  # windows × positions, contracted axis by axis
            counts = np.moveaxis(
                np.tensordot(cover.numpy().astype(np.float64), counts, axes=([1], [axis])), 0, axis
            )
        hits.append(counts > 0)
    hits = torch.from_numpy(np.stack([h.reshape(-1) for h in hits], axis=1))
    in_order = all(reader.in_node_order(t.layer) for t in targets)
    crop = _crop(recorded, fields, targets, units, inputs.shape, d) if in_order else None
    if crop is None:
        return _Restriction(hits, None, None)
    slices, shifts = crop
    shifted = tuple(
        Target(t.layer, t.channel, _shifted(t.unit, shift), t.reduction) for t, shift in zip(targets, shifts)
    )
    return _Restriction(hits, slices, shifted)


def _shifted(unit: tuple[int, ...], shift: tuple[int, int]) -> tuple[int, ...]:
    return (*unit[:-2], unit[-2] - shift[0], unit[-1] - shift[1])


def _crop(recorded, fields, targets, units, input_shape, d):
    """Input slices (rows, columns) holding every unit's unclipped window, and each unit's shift.

    Only for images ``(n, C, H, W)`` occluded along rows and columns, unit targets with their
    position in the last two axes of a ``(C, H, W)`` layer, and layers that commute with
    translations (:func:`_translation_equivariant`).
    """
    index = {name: i for i, name in enumerate(recorded.layout.names)}
    if (
        len(input_shape) != 4
        or d != 2
        or any(u is None or len(u) != 3 or t.unit is None or len(t.unit) < 2 for t, u in zip(targets, units))
    ):
        return None
    geometries = [fields[t.layer].geometry for t in targets]
    if any(g is None for geometry in geometries for g in geometry):
        return None
    if not all(_translation_equivariant(recorded, index[t.layer]) for t in targets):
        return None
    slices, starts = [], []
    for axis in (0, 1):
        size = input_shape[2 + axis]
        jump = lcm(*(geometry[axis].jump for geometry in geometries))
        first = [g[axis].offset + u[1 + axis] * g[axis].jump for g, u in zip(geometries, units)]
        start = max(0, min(first)) // jump * jump
        stop = min(size, max(f + g[axis].size for f, g in zip(first, geometries)))
        slices.append(slice(start, stop))
        starts.append(start)
    shifts = [tuple(s // g[axis].jump for axis, s in enumerate(starts)) for g in geometries]
    if all(s.start == 0 and s.stop == n for s, n in zip(slices, input_shape[2:])):
        return None
    return tuple(slices), shifts


def _translation_equivariant(recorded, layer: int) -> bool:
    """Whether every operation ``layer`` depends on commutes with translations of its input.

    Convolution, non-adaptive pooling, batch norm on running statistics, and elementwise
    operations whose constant operands are the same at every position; no reshape between them.
    """
    seen, stack = set(), [layer]
    while stack:
        position = stack.pop()
        if position == 0 or position in seen:
            continue
        seen.add(position)
        call = recorded.calls[position]
        if any(call.moves) or not all(_commutes(step) for step in (call, *call.absorbed)):
            return False
        stack.extend(call.input_layers)
    return True


def _commutes(call) -> bool:
    entry = lookup(call)
    if entry.family is Family.WINDOWED:
        return not entry.window[0].startswith("adaptive")
    if entry.family is Family.NORMALISATION:
        return entry.relation is RelationKind.IDENTITY
    if entry.family is not Family.ELEMENTWISE:
        return False
    constants = [
        value
        for value in (*call.args, *call.kwargs.values())
        if isinstance(value, torch.Tensor) and not any(value is x for x in call.inputs)
    ]
    return all(value.ndim < 2 or value.shape[-2:] == (1, 1) for value in constants)
