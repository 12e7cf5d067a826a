"""The maps of :func:`nsp_pipeline.interpret.maps.interpret` with their metadata (torch-free).

:class:`AttributionMaps` holds numpy arrays and small JSON-able metadata only, so that storage
(:meth:`AttributionMaps.to_arrays`, :meth:`AttributionMaps.attributes`) and drawing
(:mod:`nsp_pipeline.render.interpret_plots`) never import torch.

Stored form (``to_arrays`` names; ``n`` samples, ``T`` targets):

=========================  ===========================  ==============================================
name                       shape, dtype                 meaning
=========================  ===========================  ==============================================
``inputs``                 ``(n, *input_shape)``        the samples (float)
``values``                 ``(n, T)``                   each target's value per sample (float)
``sample_ids``             ``(n,)`` int64               the samples' indices in their data set
``maps/<method>``          ``(n, T, *map_shape)``       one map per sample and target (float)
``receptive_field/boxes``  ``(T, 3, 2)`` int64          ``(start, stop)`` of channels, rows, columns
``receptive_field/masks``  ``(T, *input_shape)`` bool   the exact theoretical receptive field
``labels``                 ``(n,)`` int64               only when given
``predictions``            ``(n,)`` int64               only when given
=========================  ===========================  ==============================================

:meth:`~AttributionMaps.attributes` gives the rest: ``schema``, ``targets`` (``layer``, ``channel``,
``unit``, ``reduction``; 0-based), ``methods``, ``parameters`` (per method, every parameter used,
defaults included), ``class_names``, ``granularity`` and ``receptive_field_error``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: Version of the stored form (``attributes()["schema"]``).
SCHEMA = "nsp-pipeline attribution maps 1"

#: Methods whose maps are signed (drawn with a diverging colour map centred at 0), unless ``abs``.
SIGNED_METHODS = ("saliency", "guided_backprop", "smoothgrad", "occlusion")

_TARGET_KEYS = ("layer", "channel", "unit", "reduction")


def target_record(layer: str, channel=None, unit=None, reduction=None) -> dict:
    """A target as a JSON-able dict ``{layer, channel, unit, reduction}`` (``unit`` a list or None)."""
    return {
        "layer": str(layer),
        "channel": None if channel is None else int(channel),
        "unit": None if unit is None else [int(i) for i in unit],
        "reduction": reduction,
    }


def target_label(target: Mapping) -> str:
    """Short name of a target record: ``conv2[5] mean``, ``conv2[5, 1, 2]``, ``fc[3]``."""
    index = ([] if target["channel"] is None else [target["channel"]]) + list(target["unit"] or [])
    text = target["layer"] + (f"[{', '.join(str(i) for i in index)}]" if index else "")
    return text + (f" {target['reduction']}" if target["reduction"] else "")


def json_safe(value):
    """``value`` with tuples and numpy scalars turned into JSON types (``ValueError`` if it cannot be)."""
    try:
        return json.loads(
            json.dumps(value, default=lambda v: v.item() if isinstance(v, np.generic) else str(v))
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"metadata must be JSON-able: {error}") from None


@dataclass(frozen=True, eq=False)
class AttributionMaps:
    """Maps of what drives each target, for every sample, with everything needed to read them.

    Parameters
    ----------
    inputs : numpy.ndarray
        ``(n_samples, *input_shape)``.
    targets : sequence of dict
        :func:`target_record` per target (0-based channels and units).
    values : numpy.ndarray
        ``(n_samples, n_targets)``: each target's value.
    maps : mapping of str to numpy.ndarray
        Per method, ``(n_samples, n_targets, *map_shape)``; NaN where a method has no map for a
        target (an activation map of a target without a channel map).
    parameters : mapping of str to dict
        Per method, the parameters it ran with (JSON-able).
    rf_boxes : numpy.ndarray, optional
        ``(n_targets, 3, 2)`` int64: per target the ``(start, stop)`` (inclusive–exclusive) of
        the input channels, rows and columns of its theoretical receptive field's bounding box.
        A unit's box is its own; a reduction's is the box of the union of its units' fields
        (what its value can depend on). ``((0, 0),) * 3`` for an empty field; ``None`` when the
        fields could not be computed (see ``receptive_field_error``).
    rf_masks : numpy.ndarray, optional
        ``(n_targets, *input_shape)`` bool: the exact field (union over a reduction's units).
    sample_ids : numpy.ndarray, optional
        ``(n_samples,)``: the samples' indices in their data set (default ``0..n−1``).
    labels, predictions : numpy.ndarray, optional
        ``(n_samples,)`` int class indices.
    class_names : sequence of str, optional
        Name per class index; must cover every label and prediction.
    granularity : str
        How the targets name layers (:mod:`nsp_pipeline.model.capture`).
    receptive_field_error : str, optional
        Why ``rf_boxes`` is ``None``.

    Raises
    ------
    ValueError
        If shapes disagree, or a label or prediction has no class name; the message names the
        array and the shape expected.
    """

    inputs: np.ndarray
    targets: tuple[dict, ...]
    values: np.ndarray
    maps: dict[str, np.ndarray]
    parameters: dict[str, dict]
    rf_boxes: np.ndarray | None = None
    rf_masks: np.ndarray | None = None
    sample_ids: np.ndarray | None = None
    labels: np.ndarray | None = None
    predictions: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    granularity: str = "merged"
    receptive_field_error: str | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "inputs", np.asarray(self.inputs))
        n = len(self.inputs)
        put(
            self, "targets", tuple(target_record(**{k: t.get(k) for k in _TARGET_KEYS}) for t in self.targets)
        )
        n_targets = len(self.targets)
        put(self, "values", np.asarray(self.values))
        _expect("values", self.values, (n, n_targets))
        put(self, "maps", {str(m): np.asarray(a) for m, a in self.maps.items()})
        for method, array in self.maps.items():
            _expect(f"maps/{method}", array, (n, n_targets), prefix=True)
        put(self, "parameters", json_safe({str(m): dict(p) for m, p in self.parameters.items()}))
        missing = [m for m in self.maps if m not in self.parameters]
        if missing:
            raise ValueError(f"parameters of methods {missing} are missing; expected one dict per method")
        if self.rf_boxes is not None:
            put(self, "rf_boxes", np.asarray(self.rf_boxes, dtype=np.int64))
            _expect("receptive_field/boxes", self.rf_boxes, (n_targets, 3, 2))
        if self.rf_masks is not None:
            put(self, "rf_masks", np.asarray(self.rf_masks, dtype=bool))
            _expect("receptive_field/masks", self.rf_masks, (n_targets, *self.inputs.shape[1:]))
        ids = np.arange(n) if self.sample_ids is None else self.sample_ids
        put(self, "sample_ids", np.asarray(ids, dtype=np.int64))
        _expect("sample_ids", self.sample_ids, (n,))
        for name in ("labels", "predictions"):
            if getattr(self, name) is not None:
                put(self, name, np.asarray(getattr(self, name), dtype=np.int64))
                _expect(name, getattr(self, name), (n,))
        if self.class_names is not None:
            put(self, "class_names", tuple(str(name) for name in self.class_names))
            check_class_names(self.class_names, self.labels, self.predictions)

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return len(self.inputs)

    @property
    def methods(self) -> tuple[str, ...]:
        """Names of the methods, in the order they ran."""
        return tuple(self.maps)

    def target_label(self, k: int) -> str:
        """Short name of target ``k`` (:func:`target_label`)."""
        return target_label(self.targets[k])

    def rf_size(self, k: int) -> tuple[int, int] | None:
        """Rows × columns of target ``k``'s receptive-field box (``None`` if unknown)."""
        if self.rf_boxes is None:
            return None
        (_, _), (r0, r1), (c0, c1) = self.rf_boxes[k]
        return int(r1 - r0), int(c1 - c0)

    def is_signed(self, method: str) -> bool:
        """Whether a method's maps are signed (saliency with ``abs=True`` and activation maps are not)."""
        return method in SIGNED_METHODS and not self.parameters.get(method, {}).get("abs", False)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named numpy arrays (names as in the module docstring; ``/`` separates HDF5 groups)."""
        arrays = {"inputs": self.inputs, "values": self.values, "sample_ids": self.sample_ids}
        arrays.update({f"maps/{method}": array for method, array in self.maps.items()})
        if self.rf_boxes is not None:
            arrays["receptive_field/boxes"] = self.rf_boxes
        if self.rf_masks is not None:
            arrays["receptive_field/masks"] = self.rf_masks
        for name in ("labels", "predictions"):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        return arrays

    def attributes(self) -> dict:
        """JSON-able metadata (``json.dumps`` works on it); with :meth:`to_arrays`, everything."""
        return {
            "schema": SCHEMA,
            "targets": [dict(t) for t in self.targets],
            "methods": list(self.methods),
            "parameters": self.parameters,
            "class_names": None if self.class_names is None else list(self.class_names),
            "granularity": self.granularity,
            "receptive_field_error": self.receptive_field_error,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], attributes: Mapping) -> AttributionMaps:
        """Rebuild from :meth:`to_arrays` and :meth:`attributes` (``ValueError`` naming what is missing)."""
        if attributes.get("schema") != SCHEMA:
            raise ValueError(f"attributes have schema {attributes.get('schema')!r}, expected {SCHEMA!r}")
        needed = ["inputs", "values", "sample_ids", *(f"maps/{m}" for m in attributes["methods"])]
        missing = [name for name in needed if name not in arrays]
        if missing:
            raise ValueError(f"arrays {missing} are missing; expected {needed}")
        return cls(
            inputs=np.asarray(arrays["inputs"]),
            targets=tuple(attributes["targets"]),
            values=np.asarray(arrays["values"]),
            maps={m: np.asarray(arrays[f"maps/{m}"]) for m in attributes["methods"]},
            parameters=attributes["parameters"],
            rf_boxes=arrays.get("receptive_field/boxes"),
            rf_masks=arrays.get("receptive_field/masks"),
            sample_ids=np.asarray(arrays["sample_ids"]),
            labels=arrays.get("labels"),
            predictions=arrays.get("predictions"),
            class_names=attributes["class_names"],
            granularity=attributes["granularity"],
            receptive_field_error=attributes["receptive_field_error"],
        )


def concatenate(parts: Sequence[AttributionMaps]) -> AttributionMaps:
    """The maps of several batches as one, samples in the order given.

    Raises
    ------
    ValueError
        If the parts differ in targets, methods, parameters, receptive fields, granularity or
        class names (batches of one analysis never do).
    """
    if not parts:
        raise ValueError("nothing to concatenate: expected the maps of at least one batch")
    first = parts[0]
    for number, part in enumerate(parts[1:], start=1):
        same = (
            part.targets == first.targets
            and part.parameters == first.parameters
            and part.methods == first.methods
            and part.granularity == first.granularity
            and part.class_names == first.class_names
            and _equal(part.rf_boxes, first.rf_boxes)
            and _equal(part.rf_masks, first.rf_masks)
        )
        if not same:
            raise ValueError(
                f"batch {number} has other targets, methods, parameters or receptive fields than batch 0"
            )

    def joined(name: str) -> np.ndarray | None:
        values = [getattr(part, name) for part in parts]
        return None if any(v is None for v in values) else np.concatenate(values)

    return AttributionMaps(
        inputs=joined("inputs"),
        targets=first.targets,
        values=joined("values"),
        maps={method: np.concatenate([part.maps[method] for part in parts]) for method in first.methods},
        parameters=first.parameters,
        rf_boxes=first.rf_boxes,
        rf_masks=first.rf_masks,
        sample_ids=joined("sample_ids"),
        labels=joined("labels"),
        predictions=joined("predictions"),
        class_names=first.class_names,
        granularity=first.granularity,
        receptive_field_error=first.receptive_field_error,
    )


def _equal(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


def _expect(name: str, array: np.ndarray, shape: tuple[int, ...], prefix: bool = False) -> None:
    """Raise ``ValueError`` unless ``array``'s shape is ``shape`` (or starts with it)."""
    actual = array.shape[: len(shape)] if prefix else array.shape
    if actual != tuple(shape):
        wanted = f"{tuple(shape)} + map shape" if prefix else str(tuple(shape))
        raise ValueError(f"{name} has shape {array.shape}; expected {wanted} (samples, targets)")


def check_class_names(class_names, labels: np.ndarray | None, predictions: np.ndarray | None) -> None:
    """Raise ``ValueError`` unless every label and prediction is an index of ``class_names``."""
    for name, classes in (("labels", labels), ("predictions", predictions)):
        if classes is None or not len(classes):
            continue
        low, high = int(np.min(classes)), int(np.max(classes))
        if low < 0 or high >= len(class_names):
            raise ValueError(
                f"{len(class_names)} class names given but {name} range over {low}..{high}: expected "
                f"at least {max(high + 1, 1)} names, one per class index 0..{max(high, 0)}"
            )
