"""Results of minimal parcel, minimal component and masked images (torch-free).

:class:`MinimalImage` (parcels or components) and :class:`MaskedImage` hold numpy arrays and
JSON-able metadata only, so that storage (``to_arrays`` and ``attributes``) and drawing
(:mod:`nsp_pipeline.render.minimal_plots`) never import torch. They also hold the torch-free
parts of the recipes, so that what is drawn is what was evaluated: :meth:`MinimalImage.compose`
(the image rebuilt from a subset of pieces) and :func:`feather` / :func:`masked_input` (the
masked image of a mask).

Stored form of a :class:`MinimalImage` (``n`` pieces, image of shape ``S``):

=================  =============  =========================================================
name               shape, dtype   meaning
=================  =============  =========================================================
``image``          ``S``          the image (float64)
``base``           ``S``          the image with no piece (baseline, or the mean patches)
``labels``         ``(H, W)``     parcels: the parcel of each pixel, ``0..n−1`` (int64)
``components``     ``(n, *S)``    components: each component's contribution (float64)
``piece_values``   ``(n,)``       the target on each piece alone
``greedy_order``   ``(n,)``       pieces in the order the greedy search added them (int64)
``greedy_curve``   ``(n + 1,)``   the target on the greedy prefixes of 0..n pieces
``exact_curve``    ``(n + 1,)``   the best target over all subsets of each size (NaN: not run)
``exact_sets``     ``(n + 1, n)`` the first best subset of each size (bool)
``minimal_set``    ``(n,)``       the pieces of the minimal image (bool)
``minimal_image``  ``S``          the minimal image (float64)
=================  =============  =========================================================

A :class:`MaskedImage` stores ``image``, ``saliency`` ``(H, W)``, ``masks`` ``(steps + 1, H,
W)`` bool, ``values`` ``(steps + 1,)``, ``fill`` (one value per channel) and ``masked_image``;
the rest is in ``attributes()``, among it ``sample_id``: the data set id of the image (``None``
when not given).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from nsp_pipeline.interpret.results import json_safe, target_label, target_record

#: Versions of the stored forms (``attributes()["schema"]``).
MINIMAL_SCHEMA = "nsp-pipeline minimal image 1"
MASKED_SCHEMA = "nsp-pipeline masked image 1"

#: What a :class:`MinimalImage` is made of.
KINDS = ("parcels", "components")
#: Why the erosion of a :class:`MaskedImage` stopped.
STOP_REASONS = ("below ratio", "empty mask", "max steps", "non-positive baseline")


def _size(curve: np.ndarray, threshold: float) -> int:
    """The smallest ``k`` with ``curve[k] >= threshold`` (NaN never reaches), or −1."""
    reached = np.flatnonzero(np.nan_to_num(curve, nan=-np.inf) >= threshold)
    return int(reached[0]) if reached.size else -1


@dataclass(frozen=True, eq=False)
class MinimalImage:
    """The smallest set of pieces (parcels or components) of an image that keeps a target high.

    Parameters
    ----------
    kind : {"parcels", "components"}
        What the pieces are.
    method : str
        The segmentation (``felzenszwalb``, ``slic``, ``quickshift``) or decomposition
        (``pca``, ``ica``).
    target : dict
        :func:`~nsp_pipeline.interpret.results.target_record` of the target (0-based).
    parameters : dict
        Every parameter the search ran with (JSON-able).
    image, base : numpy.ndarray
        The image and the image with no piece, of the same shape ``S``.
    labels : numpy.ndarray, optional
        Parcels: ``(H, W)`` int labels ``0..n−1`` over the image's last two axes.
    components : numpy.ndarray, optional
        Components: ``(n, *S)``, each component's contribution to the image.
    full_value : float
        The target on the image.
    fraction : float
        The share of ``full_value`` to keep: the threshold is ``fraction · full_value``.
    piece_values : numpy.ndarray
        ``(n,)``: the target on each piece alone (on ``base``).
    greedy_order, greedy_curve : numpy.ndarray
        ``(n,)`` pieces in the greedy order and ``(n + 1,)`` the target on its prefixes.
    exact_curve : numpy.ndarray
        ``(n + 1,)`` best target over the subsets of each size; all NaN when the exact search
        did not run (too many pieces).
    exact_sets : numpy.ndarray
        ``(n + 1, n)`` bool: per size the first best subset (in ``itertools.combinations``
        order); all False when the exact search did not run.
    minimal_set : numpy.ndarray
        ``(n,)`` bool: the exact minimal set when the exact search ran, else the greedy one;
        all True when no set reaches the threshold.
    minimal_value : float
        The target on the minimal image.
    sample_id : int, optional
        The data set id of the image (``Dataset.ids``), shown on its page.

    Raises
    ------
    ValueError
        If shapes disagree or the pieces of ``kind`` are missing; the message names the array.
    """

    kind: str
    method: str
    target: dict
    parameters: dict
    image: np.ndarray
    base: np.ndarray
    full_value: float
    fraction: float
    piece_values: np.ndarray
    greedy_order: np.ndarray
    greedy_curve: np.ndarray
    exact_curve: np.ndarray
    exact_sets: np.ndarray
    minimal_set: np.ndarray
    minimal_value: float
    labels: np.ndarray | None = None
    components: np.ndarray | None = None
    sample_id: int | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "sample_id", _sample_id(self.sample_id))
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        put(self, "target", target_record(**self.target))
        put(self, "parameters", json_safe(dict(self.parameters)))
        for name in ("image", "base", "piece_values", "greedy_curve", "exact_curve"):
            put(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        put(self, "greedy_order", np.asarray(self.greedy_order, dtype=np.int64))
        for name in ("exact_sets", "minimal_set"):
            put(self, name, np.asarray(getattr(self, name), dtype=bool))
        put(self, "full_value", float(self.full_value))
        put(self, "fraction", float(self.fraction))
        put(self, "minimal_value", float(self.minimal_value))
        shape = self.image.shape
        if self.kind == "parcels":
            if self.labels is None:
                raise ValueError("parcels need labels (H, W); got None")
            put(self, "labels", np.asarray(self.labels, dtype=np.int64))
            _expect("labels", self.labels, shape[-2:])
            n = int(self.labels.max()) + 1 if self.labels.size else 0
        else:
            if self.components is None:
                raise ValueError("components need the component images (n, *image shape); got None")
            put(self, "components", np.asarray(self.components, dtype=np.float64))
            n = len(self.components)
            _expect("components", self.components, (n, *shape))
        _expect("base", self.base, shape)
        for name, expected in (
            ("piece_values", (n,)),
            ("greedy_order", (n,)),
            ("greedy_curve", (n + 1,)),
            ("exact_curve", (n + 1,)),
            ("exact_sets", (n + 1, n)),
            ("minimal_set", (n,)),
        ):
            _expect(name, getattr(self, name), expected)

    @property
    def n_pieces(self) -> int:
        """Number of parcels or components."""
        return len(self.piece_values)

    @property
    def threshold(self) -> float:
        """``fraction · full_value``: the value a minimal image keeps."""
        return self.fraction * self.full_value

    @property
    def exact(self) -> bool:
        """Whether the exact search ran."""
        return bool(np.isfinite(self.exact_curve).any())

    @property
    def greedy_size(self) -> int:
        """Pieces of the smallest greedy prefix reaching the threshold (−1: none does)."""
        return _size(self.greedy_curve, self.threshold)

    @property
    def exact_size(self) -> int:
        """Pieces of the smallest subset reaching the threshold (−1: none, or no exact search)."""
        return _size(self.exact_curve, self.threshold)

    def target_label(self) -> str:
        """Short name of the target."""
        return target_label(self.target)

    def compose(self, subset: np.ndarray) -> np.ndarray:
        """The image rebuilt from the pieces in ``subset`` (``(n,)`` bool), as the search built it.

        Parcels: the image where a chosen parcel is, ``base`` elsewhere. Components: ``base``
        plus the chosen components' contributions (all of them give the image back).
        """
        subset = np.asarray(subset, dtype=bool)
        _expect("subset", subset, (self.n_pieces,))
        if self.kind == "parcels":
            return np.where(subset[self.labels], self.image, self.base)
        return self.base + np.tensordot(subset.astype(np.float64), self.components, axes=1)

    @property
    def minimal_image(self) -> np.ndarray:
        """The image of :attr:`minimal_set`."""
        return self.compose(self.minimal_set)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named numpy arrays (names as in the module docstring)."""
        arrays = {
            name: getattr(self, name)
            for name in (
                "image",
                "base",
                "piece_values",
                "greedy_order",
                "greedy_curve",
                "exact_curve",
                "exact_sets",
                "minimal_set",
            )
        }
        arrays["minimal_image"] = self.minimal_image
        arrays["labels" if self.kind == "parcels" else "components"] = (
            self.labels if self.kind == "parcels" else self.components
        )
        return arrays

    def attributes(self) -> dict:
        """JSON-able metadata; with :meth:`to_arrays`, everything."""
        return {
            "schema": MINIMAL_SCHEMA,
            "kind": self.kind,
            "method": self.method,
            "target": dict(self.target),
            "parameters": self.parameters,
            "full_value": self.full_value,
            "fraction": self.fraction,
            "minimal_value": self.minimal_value,
            "greedy_size": self.greedy_size,
            "exact_size": self.exact_size,
            "sample_id": self.sample_id,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], attributes: Mapping) -> MinimalImage:
        """Rebuild from :meth:`to_arrays` and :meth:`attributes` (``ValueError`` naming what is missing)."""
        _schema(attributes, MINIMAL_SCHEMA)
        pieces = "labels" if attributes["kind"] == "parcels" else "components"
        needed = ["image", "base", "piece_values", "greedy_order", "greedy_curve", "exact_curve"]
        needed += ["exact_sets", "minimal_set", pieces]
        _present(arrays, needed)
        return cls(
            kind=attributes["kind"],
            method=attributes["method"],
            target=attributes["target"],
            parameters=attributes["parameters"],
            full_value=attributes["full_value"],
            fraction=attributes["fraction"],
            minimal_value=attributes["minimal_value"],
            sample_id=attributes.get("sample_id"),
            **{name: np.asarray(arrays[name]) for name in needed},
        )


def feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    """A boolean mask blurred by a Gaussian of standard deviation ``sigma`` pixels (float64, 0..1)."""
    mask = np.asarray(mask, dtype=np.float64)
    return gaussian_filter(mask, sigma=sigma) if sigma > 0 else mask


def masked_input(image: np.ndarray, mask: np.ndarray, sigma: float, fill: np.ndarray) -> np.ndarray:
    """``f · image + (1 − f) · fill`` with ``f`` the feathered mask (dnnbrain's masked image).

    ``image`` is ``(C, H, W)`` or ``(H, W)``; ``fill`` one value per channel (a scalar for 2-D).
    """
    image = np.asarray(image, dtype=np.float64)
    weight = feather(mask, sigma)
    fill = np.asarray(fill, dtype=np.float64).reshape(-1, 1, 1) if image.ndim == 3 else float(fill)
    return weight * image + (1 - weight) * fill


@dataclass(frozen=True, eq=False)
class MaskedImage:
    """A salient region's convex hull, feathered and eroded step by step while the target holds.

    Parameters
    ----------
    target, parameters
        As in :class:`MinimalImage`.
    image : numpy.ndarray
        ``(C, H, W)`` or ``(H, W)``.
    saliency : numpy.ndarray
        ``(H, W)``: the map whose top percentile made the first mask.
    masks : numpy.ndarray
        ``(steps + 1, H, W)`` bool: step 0 is the convex hull, step ``k`` its ``k``-th erosion;
        the sequence ends at the step where the erosion stopped.
    values : numpy.ndarray
        ``(steps + 1,)``: the target on each step's masked image; ``values[0]`` is the baseline.
    fill : numpy.ndarray
        ``(C,)`` (or ``(1,)`` for 2-D images): the value outside the mask, per channel.
    ratio : float
        The erosion stops at the first step with ``values[k] < ratio · values[0]``.
    stop_reason : str
        One of :data:`STOP_REASONS`.
    sample_id : int, optional
        As in :class:`MinimalImage`.
    """

    target: dict
    parameters: dict
    image: np.ndarray
    saliency: np.ndarray
    masks: np.ndarray
    values: np.ndarray
    fill: np.ndarray
    ratio: float
    stop_reason: str
    sample_id: int | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "sample_id", _sample_id(self.sample_id))
        put(self, "target", target_record(**self.target))
        put(self, "parameters", json_safe(dict(self.parameters)))
        for name in ("image", "saliency", "values", "fill"):
            put(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        put(self, "masks", np.asarray(self.masks, dtype=bool))
        put(self, "fill", self.fill.reshape(-1))
        put(self, "ratio", float(self.ratio))
        if self.stop_reason not in STOP_REASONS:
            raise ValueError(f"stop_reason must be one of {STOP_REASONS}, got {self.stop_reason!r}")
        size = self.image.shape[-2:]
        _expect("saliency", self.saliency, size)
        _expect("masks", self.masks, (len(self.values), *size))
        channels = self.image.shape[0] if self.image.ndim == 3 else 1
        _expect("fill", self.fill, (channels,))
        if not len(self.values):
            raise ValueError("values is empty: expected at least step 0 (the convex hull)")

    @property
    def feather_sigma(self) -> float:
        """Standard deviation (pixels) of the Gaussian that feathers the masks."""
        return float(self.parameters["feather_sigma"])

    @property
    def threshold(self) -> float:
        """``ratio · values[0]``."""
        return self.ratio * float(self.values[0])

    @property
    def stop_step(self) -> int:
        """The first step below the threshold (the last step), or −1 if the erosion stopped otherwise."""
        return len(self.values) - 1 if self.stop_reason == "below ratio" else -1

    @property
    def chosen_step(self) -> int:
        """The last step whose value is at or above the threshold: the masked image's step."""
        return max(len(self.values) - 2, 0) if self.stop_reason == "below ratio" else len(self.values) - 1

    def masked(self, step: int) -> np.ndarray:
        """The masked image of ``step``."""
        return masked_input(self.image, self.masks[step], self.feather_sigma, self._fill())

    @property
    def masked_image(self) -> np.ndarray:
        """The masked image at :attr:`chosen_step` (the smallest mask that keeps the target)."""
        return self.masked(self.chosen_step)

    def _fill(self) -> np.ndarray | float:
        return self.fill if self.image.ndim == 3 else float(self.fill[0])

    def target_label(self) -> str:
        """Short name of the target."""
        return target_label(self.target)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named numpy arrays (names as in the module docstring)."""
        arrays = {name: getattr(self, name) for name in ("image", "saliency", "masks", "values", "fill")}
        arrays["masked_image"] = self.masked_image
        return arrays

    def attributes(self) -> dict:
        """JSON-able metadata; with :meth:`to_arrays`, everything."""
        return {
            "schema": MASKED_SCHEMA,
            "target": dict(self.target),
            "parameters": self.parameters,
            "ratio": self.ratio,
            "stop_reason": self.stop_reason,
            "stop_step": self.stop_step,
            "chosen_step": self.chosen_step,
            "sample_id": self.sample_id,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], attributes: Mapping) -> MaskedImage:
        """Rebuild from :meth:`to_arrays` and :meth:`attributes` (``ValueError`` naming what is missing)."""
        _schema(attributes, MASKED_SCHEMA)
        needed = ["image", "saliency", "masks", "values", "fill"]
        _present(arrays, needed)
        return cls(
            target=attributes["target"],
            parameters=attributes["parameters"],
            ratio=attributes["ratio"],
            stop_reason=attributes["stop_reason"],
            sample_id=attributes.get("sample_id"),
            **{name: np.asarray(arrays[name]) for name in needed},
        )


def _sample_id(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"sample_id must be an int (the data set id of the image) or None, got {value!r}")
    return int(value)


def _schema(attributes: Mapping, schema: str) -> None:
    if attributes.get("schema") != schema:
        raise ValueError(f"attributes have schema {attributes.get('schema')!r}, expected {schema!r}")


def _present(arrays: Mapping, needed: list[str]) -> None:
    missing = [name for name in needed if name not in arrays]
    if missing:
        raise ValueError(f"arrays {missing} are missing; expected {needed}")


def _expect(name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if array.shape != tuple(shape):
        raise ValueError(f"{name} has shape {array.shape}; expected {tuple(shape)}")
