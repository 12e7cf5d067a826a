"""One call for every map of every sample and target: :func:`interpret`.

It runs the chosen methods of :mod:`nsp_pipeline.interpret.attributions` (each batched), reads
the targets' values, computes each target's exact theoretical receptive field
(:func:`nsp_pipeline.graph.receptive_fields.receptive_fields`) and returns them together as an
:class:`~nsp_pipeline.interpret.results.AttributionMaps` of numpy arrays, ready to store
(``to_arrays``, ``attributes``) or draw (:mod:`nsp_pipeline.render.interpret_plots`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from nsp_pipeline.core.defaults import default
from nsp_pipeline.core.errors import NotFactorizableError
from nsp_pipeline.graph.receptive_fields import LayerReceptiveField, receptive_fields
from nsp_pipeline.interpret import attributions
from nsp_pipeline.interpret.results import AttributionMaps, target_record
from nsp_pipeline.interpret.targets import LayerReader, Target, as_targets, target_values

#: Methods of :func:`interpret`, in their default order.
METHODS = tuple(default("interpret.methods"))

_FUNCTIONS: dict[str, Callable] = {
    "saliency": attributions.saliency,
    "guided_backprop": attributions.guided_backprop,
    "smoothgrad": attributions.smoothgrad,
    "occlusion": attributions.occlusion,
    "activation_map": attributions.upsampled_activation_map,
}
#: Arguments :func:`interpret` itself passes (not method parameters).
_OWN = ("model", "inputs", "targets", "granularity", "layer", "channel")


def interpret(
    model: nn.Module,
    inputs: torch.Tensor | np.ndarray,
    targets: Target | Sequence[Target],
    methods: Sequence[str] = METHODS,
    *,
    granularity: str = default("interpret.granularity"),
    sample_ids: Sequence[int] | None = None,
    labels: Sequence[int] | None = None,
    predictions: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    **method_params: Mapping,
) -> AttributionMaps:
    """Every chosen map of every sample and target, with the targets' values and receptive fields.

    Parameters
    ----------
    model : nn.Module
        An fx-traceable network (functional ReLUs included); it runs in eval mode.
    inputs : torch.Tensor or numpy.ndarray
        ``(n_samples, *input_shape)``.
    targets : Target or sequence of Target
        0-based channels and units (dnnbrain's are 1-based).
    methods : sequence of str
        Any of :data:`METHODS`: ``"saliency"`` (:func:`~.attributions.saliency`),
        ``"guided_backprop"``, ``"smoothgrad"``, ``"occlusion"`` and ``"activation_map"``
        (:func:`~.attributions.upsampled_activation_map` of the target's channel).
    granularity : {"merged", "ops"}
        How targets name layers.
    sample_ids, labels, predictions, class_names : optional
        Stored with the maps (see :class:`~nsp_pipeline.interpret.results.AttributionMaps`).
    **method_params : dict
        Per method name, keyword arguments of its function, e.g. ``smoothgrad={"n": 20}``,
        ``occlusion={"window": 4, "stride": 2}``. Occlusion's default window is
        ``max(1, min(H, W) // 8)`` on the last two input axes, its stride half the window
        (at least 1). Every parameter a method ran with, defaults included, is recorded.

    Returns
    -------
    AttributionMaps
        ``maps[method]`` is ``(n_samples, n_targets, *map_shape)`` in the inputs' dtype: the
        input's shape for the gradient maps (the ``wrt`` layer's if given), the window grid
        (or the input's last axes with ``output="pixel"``) for occlusion, the input's axes after
        the channel axis for activation maps, NaN for targets without a channel map (no
        channel, and no unit whose first index is one, or a layer without spatial axes).
        Receptive fields: a unit's own; a reduction's is the union of its units' fields.

    Raises
    ------
    ValueError
        For an unknown method or parameter (naming the valid ones), or a target that does not fit
        its layer (naming the layer and its shape).
    """
    inputs = torch.as_tensor(inputs)
    targets = as_targets(targets)
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods or len(set(methods)) != len(methods):
        raise ValueError(f"methods {list(methods)}: expected distinct names among {METHODS}")
    stray = [name for name in method_params if name not in methods]
    if stray:
        raise ValueError(f"parameters given for {stray}, which are not among the methods run {list(methods)}")
    reader = LayerReader(model, inputs, granularity)
    reader.check(targets)
    parameters = {m: _parameters(m, method_params.get(m, {}), inputs) for m in methods}
    maps = {}
    for method in methods:
        if method == "activation_map":
            maps[method] = _activation_maps(model, inputs, targets, reader, granularity, parameters[method])
        else:
            result = _FUNCTIONS[method](model, inputs, targets, granularity=granularity, **parameters[method])
            maps[method] = result.detach().cpu().numpy()
    values = target_values(model, inputs, targets, granularity).detach().cpu().numpy()
    try:
        boxes, masks = _receptive_fields(model, inputs, targets, reader, granularity)
        error = None
    except NotFactorizableError as exception:
        boxes, masks, error = None, None, str(exception)
    return AttributionMaps(
        inputs=inputs.detach().cpu().numpy(),
        targets=tuple(target_record(t.layer, t.channel, t.unit, t.reduction) for t in targets),
        values=values,
        maps=maps,
        parameters=parameters,
        rf_boxes=boxes,
        rf_masks=masks,
        sample_ids=None if sample_ids is None else np.asarray(sample_ids),
        labels=None if labels is None else np.asarray(labels),
        predictions=None if predictions is None else np.asarray(predictions),
        class_names=class_names,
        granularity=granularity,
        receptive_field_error=error,
    )


def _parameters(method: str, given: Mapping, inputs: torch.Tensor) -> dict:
    """Every keyword parameter of a method's function: its defaults updated with ``given``."""
    signature = inspect.signature(_FUNCTIONS[method])
    allowed = [name for name in signature.parameters if name not in _OWN]
    unknown = [name for name in given if name not in allowed]
    if unknown:
        raise ValueError(f"{method}: unknown parameters {unknown}; expected some of {allowed}")
    parameters = {
        name: p.default
        for name, p in signature.parameters.items()
        if name in allowed and p.default is not p.empty
    }
    if method == "occlusion" and "window" not in given:
        side = min(inputs.shape[-2:]) if inputs.ndim >= 3 else inputs.shape[-1]
        parameters["window"] = max(1, int(side) // 8)
        parameters["stride"] = max(1, parameters["window"] // 2)
    parameters.update(given)
    missing = [name for name in allowed if name not in parameters]
    if missing:
        raise ValueError(f"{method}: parameters {missing} are needed")
    return parameters


def _channel(target: Target, shape: tuple[int, ...]) -> int | None:
    """The channel whose map an activation map of ``target`` shows (None: no channel map)."""
    if len(shape) < 2:
        return None
    if target.channel is not None:
        return target.channel
    return target.unit[0] if target.unit else None


def _activation_maps(model, inputs, targets, reader: LayerReader, granularity: str, parameters: dict):
    """``(n_samples, n_targets, *size)`` upsampled activation maps; NaN for targets without a channel map."""
    size = parameters.get("size")
    size = tuple(inputs.shape[2:]) if size is None else tuple(size)
    result = np.full((len(inputs), len(targets), *size), np.nan, dtype=inputs.detach().cpu().numpy().dtype)
    done: dict[tuple[str, int], np.ndarray] = {}
    for k, target in enumerate(targets):
        channel = _channel(target, reader.shape(target.layer))
        if channel is None:
            continue
        key = (target.layer, channel)
        if key not in done:
            maps = attributions.upsampled_activation_map(
                model, inputs, target.layer, channel, granularity=granularity, **parameters
            )
            done[key] = maps.detach().cpu().numpy()
        result[:, k] = done[key]
    return result


def _receptive_fields(model, inputs, targets, reader: LayerReader, granularity: str):
    """Per target the bounding box ``(3, 2)`` and mask of the union of its selected units' fields."""
    fields = receptive_fields(model, inputs[:1], sorted({t.layer for t in targets}), granularity)
    boxes, masks = [], []
    for target in targets:
        field = fields[target.layer]
        selected = np.zeros(reader.shape(target.layer), dtype=bool)
        selected[((target.channel,) if target.channel is not None else ()) + (target.unit or ())] = True
        mask = _union_mask(field, selected.reshape(field.grid))
        boxes.append(_box(mask.reshape(field.input_grid)))
        masks.append(mask.reshape(field.input_shape))
    return np.array(boxes, dtype=np.int64), np.array(masks, dtype=bool)


def _union_mask(field: LayerReceptiveField, selected: np.ndarray) -> np.ndarray:
    """Input-grid mask of the union of the fields of the ``selected`` grid positions.

    A selection that is a product ``P₀ × P₁ × P₂`` (a unit, a channel, a layer) unites, per
    term of the field's relation, to ``reach(P₀) × reach(P₁) × reach(P₂)``; any other is
    united unit by unit.
    """
    axes = [selected.any(axis=tuple(a for a in range(3) if a != axis)) for axis in range(3)]
    mask = np.zeros(field.input_grid, dtype=bool)
    if np.array_equal(selected, axes[0][:, None, None] & axes[1][None, :, None] & axes[2][None, None, :]):
        for term in field.relation.terms:
            reach = [axis_map.reaches_from(positions) for axis_map, positions in zip(term.axes, axes)]
            mask |= reach[0][:, None, None] & reach[1][None, :, None] & reach[2][None, None, :]
        return mask
    for unit in np.flatnonzero(selected):
        mask |= field.mask(int(unit)).reshape(field.input_grid)
    return mask


def _box(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` per axis of a 3-axis mask's bounding box (``(0, 0)`` each if empty)."""
    if not mask.any():
        return [(0, 0)] * 3
    box = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append((int(hit[0]), int(hit[-1]) + 1))
    return box
