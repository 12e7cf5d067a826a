"""What part of an image a target needs: minimal parcel, minimal component and masked images.

Three ways to shrink an image while a target (:class:`~nsp_pipeline.interpret.targets.Target`,
0-based) keeps its value, after dnnbrain's ``MinimalParcelImage``, ``MinimalComponentImage``
and ``MaskedImage`` (Chen et al., 2020) and the minimal images of Ullman et al. (2016):

- :func:`minimal_parcel_image`: segment the image into parcels (scikit-image) and find the
  fewest parcels that keep the target at ``fraction`` of its value on the whole image;
- :func:`minimal_component_image`: the same with the PCA or ICA components of the image's
  patches (scikit-learn);
- :func:`masked_image`: erode a feathered convex-hull mask of the salient pixels until the
  target falls below ``ratio`` of its value on the first masked image.

Each takes one image ``(C, H, W)`` (or ``(H, W)`` for models whose samples are 2-D) and one or
more targets, evaluates all candidate images in batches of ``batch_size`` through a model cut
at the targets' layers, and returns one torch-free result per target
(:mod:`nsp_pipeline.interpret.minimal_results`). Everything is deterministic: the same inputs,
parameters and seeds give the same arrays.

References
----------
X. Chen, M. Zhou, Z. Gong, W. Xu, X. Liu, T. Huang, Z. Zhen, J. Liu, "DNNBrain: a unifying
toolbox for mapping deep neural networks and brains", Frontiers in Computational Neuroscience
14, 2020.
S. Ullman, L. Assif, E. Fetaya, D. Harari, "Atoms of recognition in human and computer vision",
PNAS 113(10), 2016.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations

import numpy as np
import torch
from skimage import segmentation as skseg
from skimage.morphology import convex_hull_image, erosion, footprint_rectangle
from sklearn.decomposition import PCA, FastICA
from torch import nn

from nsp_pipeline.core.defaults import default
from nsp_pipeline.interpret import attributions
from nsp_pipeline.interpret.minimal_results import MaskedImage, MinimalImage, masked_input
from nsp_pipeline.interpret.results import target_record
from nsp_pipeline.interpret.targets import LayerReader, Target, as_targets

#: Segmentations of :func:`minimal_parcel_image` (``skimage.segmentation`` functions).
SEGMENTATIONS = ("felzenszwalb", "slic", "quickshift")
#: Decompositions of :func:`minimal_component_image`.
DECOMPOSITIONS = ("pca", "ica")
#: Greedy searches: forward selection by marginal gain, or dnnbrain's ranking by single pieces.
GREEDY_SEARCHES = ("marginal", "ranked")
#: Maps whose top percentile makes the first mask of :func:`masked_image`.
SALIENCY_METHODS = ("saliency", "guided_backprop", "smoothgrad", "contrast")


class _Evaluator:
    """The targets' values on batches of images built on demand, through a model cut at their layers."""

    def __init__(self, model, image, targets, granularity, batch_size):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        reader = LayerReader(model, image[None], granularity)
        reader.check(targets)
        self.module = reader.module(sorted({t.layer for t in targets}))
        self.targets, self.batch_size = targets, batch_size

    def images(self, images: torch.Tensor) -> np.ndarray:
        """``(n, n_targets)`` float64 values of a batch of images."""
        with torch.no_grad():
            values = self.module(images)
            return torch.stack([t.select(values[t.layer]) for t in self.targets], dim=1).double().numpy()

    def subsets(self, compose: Callable[[np.ndarray], torch.Tensor], subsets: np.ndarray) -> np.ndarray:
        """``(n_subsets, n_targets)`` values of the images ``compose`` builds from ``(n_subsets, n)`` bool."""
        parts = [
            self.images(compose(subsets[row : row + self.batch_size]))
            for row in range(0, len(subsets), self.batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.targets)))


def _search(evaluator, compose, n, fraction, greedy, exact_max, full):
    """Per target: piece values, greedy order and curve, exact curve and best sets, minimal set."""
    singles = evaluator.subsets(compose, np.eye(n, dtype=bool))
    empty = evaluator.subsets(compose, np.zeros((1, n), dtype=bool))[0]
    exact = None
    if n <= exact_max:
        by_size = [
            np.array([np.isin(np.arange(n), c) for c in combinations(range(n), k)], dtype=bool).reshape(-1, n)
            for k in range(n + 1)
        ]
        exact = (by_size, evaluator.subsets(compose, np.concatenate(by_size)))
    found = []
    for t in range(len(evaluator.targets)):
        if greedy == "marginal":
            order, curve = _marginal(evaluator, compose, n, t, singles[:, t], empty[t])
        else:
            order = np.argsort(-singles[:, t], kind="stable")
            prefixes = np.zeros((n + 1, n), dtype=bool)
            for k in range(1, n + 1):
                prefixes[k, order[:k]] = True
            curve = evaluator.subsets(compose, prefixes)[:, t]
        exact_curve, exact_sets = np.full(n + 1, np.nan), np.zeros((n + 1, n), dtype=bool)
        if exact is not None:
            by_size, values = exact
            start = 0
            for k, sets in enumerate(by_size):
                best = int(np.argmax(values[start : start + len(sets), t]))  # the first best
                exact_curve[k], exact_sets[k] = values[start + best, t], sets[best]
                start += len(sets)
        threshold = fraction * full[t]
        minimal = np.ones(n, dtype=bool)
        reached = np.flatnonzero(np.nan_to_num(exact_curve, nan=-np.inf) >= threshold)
        if reached.size:
            minimal = exact_sets[reached[0]]
        elif exact is None and np.any(curve >= threshold):
            minimal = np.isin(np.arange(n), order[: int(np.flatnonzero(curve >= threshold)[0])])
        found.append((singles[:, t], order, curve, exact_curve, exact_sets, minimal))
    return found


def _marginal(evaluator, compose, n, t, singles, empty):
    """Forward selection: add the piece whose addition gives the highest value (ties: lowest index)."""
    chosen = np.zeros(n, dtype=bool)
    order, curve = [], [empty]
    for step in range(n):
        remaining = np.flatnonzero(~chosen)
        if step == 0:
            values = singles[remaining]
        else:
            candidates = np.repeat(chosen[None], len(remaining), axis=0)
            candidates[np.arange(len(remaining)), remaining] = True
            values = evaluator.subsets(compose, candidates)[:, t]
        best = int(np.argmax(values))
        chosen[remaining[best]] = True
        order.append(int(remaining[best]))
        curve.append(values[best])
    return np.array(order, dtype=np.int64), np.array(curve)


def _check_search(fraction, greedy, exact_max):
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if greedy not in GREEDY_SEARCHES:
        raise ValueError(f"greedy must be one of {GREEDY_SEARCHES}, got {greedy!r}")
    if not 0 <= exact_max <= 20:
        raise ValueError(f"exact_max_pieces must be in 0..20 (2**n subsets are evaluated), got {exact_max}")


def _as_image(image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim not in (2, 3):
        shape = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
        raise ValueError(
            f"image must be one sample, a tensor (C, H, W) or (H, W) without batch axis, got {shape}"
        )
    return image.detach()


def _results(kind, method, targets, parameters, image, base, pieces, found, full, compose_np, sample_id):
    results = []
    for t, (singles, order, curve, exact_curve, exact_sets, minimal) in enumerate(found):
        results.append(
            MinimalImage(
                kind=kind,
                method=method,
                target=target_record(**vars(targets[t])),
                parameters=parameters,
                image=image,
                base=base,
                full_value=full[t],
                fraction=parameters["fraction"],
                piece_values=singles,
                greedy_order=order,
                greedy_curve=curve,
                exact_curve=exact_curve,
                exact_sets=exact_sets,
                minimal_set=minimal,
                minimal_value=compose_np(minimal, t),
                sample_id=sample_id,
                **pieces,
            )
        )
    return tuple(results)


def segment(image: np.ndarray, method: str, segmentation_kwargs: Mapping | None = None) -> np.ndarray:
    """Parcels of an image: ``(H, W)`` int64 labels ``0..n−1`` (numbered in order of first pixel).

    The image ``(C, H, W)`` or ``(H, W)`` is rescaled linearly to 0..1 over all its values (the
    range scikit-image's colour conversions expect), channels last; one channel is segmented as
    a gray image (``channel_axis=None``; quickshift: one channel, which it needs), and quickshift
    of a non-RGB image gets ``convert2lab=False`` unless given.

    Parameters
    ----------
    image : numpy.ndarray
        ``(C, H, W)`` or ``(H, W)``.
    method : {"felzenszwalb", "slic", "quickshift"}
        The ``skimage.segmentation`` function.
    segmentation_kwargs : mapping, optional
        Its keyword arguments (``scale``, ``n_segments``, ``kernel_size``...), passed by keyword.

    Raises
    ------
    ValueError
        For an unknown method, or a keyword the function does not take (named, with the ones it
        takes).

    References
    ----------
    P. F. Felzenszwalb, D. P. Huttenlocher, "Efficient graph-based image segmentation", IJCV
    59(2), 2004.
    R. Achanta, A. Shaji, K. Smith, A. Lucchi, P. Fua, S. Süsstrunk, "SLIC superpixels compared
    to state-of-the-art superpixel methods", IEEE TPAMI 34(11), 2012.
    A. Vedaldi, S. Soatto, "Quick shift and kernel methods for mode seeking", ECCV 2008.
    """
    if method not in SEGMENTATIONS:
        raise ValueError(f"segmentation must be one of {SEGMENTATIONS}, got {method!r}")
    function = getattr(skseg, method)
    kwargs = dict(segmentation_kwargs or {})
    accepted = [p for p in inspect.signature(function).parameters if p not in ("image", "channel_axis")]
    unknown = [key for key in kwargs if key not in accepted]
    if unknown:
        raise ValueError(
            f"skimage.segmentation.{method} takes no keyword argument {', '.join(map(repr, unknown))}; "
            f"it takes {accepted}"
        )
    array = np.asarray(image, dtype=np.float64)
    low, high = array.min(), array.max()
    array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    channels = 1 if array.ndim == 2 else array.shape[0]
    if channels == 1 and method != "quickshift":  # quickshift needs a channel axis, even of length 1
        array, axis = array.reshape(array.shape[-2:]), None
    else:
        array, axis = np.moveaxis(array.reshape(channels, *array.shape[-2:]), 0, -1), -1
    if method == "quickshift" and channels != 3:
        kwargs.setdefault("convert2lab", False)
    labels = function(array, channel_axis=axis, **kwargs)
    _, first = np.unique(labels.reshape(-1), return_index=True)
    renumber = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    renumber[labels.reshape(-1)[np.sort(first)]] = np.arange(len(first))
    return renumber[labels]


def minimal_parcel_image(
    model: nn.Module,
    image: torch.Tensor,
    targets: Target | Sequence[Target],
    segmentation: str = default("interpret.minimal.parcels.segmentation"),
    segmentation_kwargs: Mapping | None = None,
    fraction: float = default("interpret.minimal.parcels.fraction"),
    baseline: float | str = default("interpret.minimal.parcels.baseline"),
    greedy: str = default("interpret.minimal.parcels.greedy"),
    exact_max_parcels: int = default("interpret.minimal.parcels.exact_max_parcels"),
    granularity: str = default("interpret.granularity"),
    batch_size: int = 256,
    sample_id: int | None = None,
) -> tuple[MinimalImage, ...]:
    """The fewest parcels of an image that keep each target at ``fraction`` of its full value.

    The image is segmented (:func:`segment`); the image "restricted" to a set of parcels keeps
    its pixels there and has ``baseline`` elsewhere. The target on the whole image is ``v``;
    a set is enough when its image gives at least ``fraction · v``. Two searches:

    - **greedy** (all ``n`` prefixes, where dnnbrain compared only the first 10 and kept the
      highest, whatever its size): ``"marginal"`` adds at each step the parcel that gives
      the highest value together with those already chosen (``n (n + 1) / 2`` images);
      ``"ranked"`` is dnnbrain's order, the parcels ranked once by their value alone (``n``
      images). Its curve, the target on the prefixes of 0..n parcels, is dnnbrain's
      unimplemented "fitting curve"; the greedy size is the first prefix that is enough.
    - **exact**, when ``n <= exact_max_parcels``: every subset (``2**n`` images), the best per
      size, and the smallest enough size.

    When the target is linear in the input and ``baseline`` is 0, parcel contributions add up,
    so both greedy searches are exact. The minimal set is the exact one when the exact search
    ran, else the greedy one; all parcels when no set is enough (possible when ``v < 0``).

    Parameters
    ----------
    model : nn.Module
        An fx-traceable network; it runs in eval mode.
    image : torch.Tensor
        One sample ``(C, H, W)`` or ``(H, W)`` (no batch axis).
    targets : Target or sequence of Target
        What to keep (0-based); one search per target, all targets read in each forward pass.
    segmentation : {"felzenszwalb", "slic", "quickshift"}
        The scikit-image segmentation.
    segmentation_kwargs : mapping, optional
        Its keyword arguments (see :func:`segment`).
    fraction : float
        Share of the full value to keep, in (0, 1].
    baseline : float or "mean"
        Value of the pixels outside the chosen parcels, or ``"mean"`` (the image's mean per
        channel). dnnbrain uses 0 (black).
    greedy : {"marginal", "ranked"}
        The greedy search.
    exact_max_parcels : int
        Largest parcel count searched exactly (0..20).
    granularity : {"merged", "ops"}
        How the targets name layers.
    batch_size : int
        Images per forward pass (the results do not depend on it beyond float rounding).
    sample_id : int, optional
        The data set id of the image, recorded in the results (and shown on their pages).

    Returns
    -------
    tuple of MinimalImage
        One per target, ``kind="parcels"``.

    References
    ----------
    X. Chen et al., "DNNBrain: a unifying toolbox for mapping deep neural networks and brains",
    Front. Comput. Neurosci. 14, 2020. S. Ullman, L. Assif, E. Fetaya, D. Harari, "Atoms of
    recognition in human and computer vision", PNAS 113(10), 2016. Segmentations: see
    :func:`segment`.
    """
    _check_search(fraction, greedy, exact_max_parcels)
    image, targets = _as_image(image), as_targets(targets)
    labels = segment(image.numpy(), segmentation, segmentation_kwargs)
    n = int(labels.max()) + 1
    base = _baseline(image, baseline)
    evaluator = _Evaluator(model, image, targets, granularity, batch_size)
    where = torch.from_numpy(labels)

    def compose(subsets: np.ndarray) -> torch.Tensor:
        keep = torch.from_numpy(subsets)[:, where]  # (b, H, W)
        keep = keep if image.ndim == 2 else keep[:, None]
        return torch.where(keep, image, base)

    full = evaluator.images(image[None])[0]
    found = _search(evaluator, compose, n, fraction, greedy, exact_max_parcels, full)
    parameters = {
        "segmentation": segmentation,
        "segmentation_kwargs": dict(segmentation_kwargs or {}),
        "fraction": fraction,
        "baseline": baseline,
        "greedy": greedy,
        "exact_max_parcels": exact_max_parcels,
        "granularity": granularity,
    }
    return _results(
        "parcels",
        segmentation,
        targets,
        parameters,
        image.double().numpy(),
        base.double().expand_as(image).numpy(),
        {"labels": labels},
        found,
        full,
        lambda subset, t: evaluator.subsets(compose, subset[None])[0, t],
        sample_id,
    )


def _baseline(image: torch.Tensor, baseline) -> torch.Tensor:
    if baseline == "mean":
        return image.mean(dim=(-2, -1), keepdim=True)
    if isinstance(baseline, str) or not np.isfinite(baseline):
        raise ValueError(f"baseline must be a finite number or 'mean', got {baseline!r}")
    return torch.tensor(float(baseline), dtype=image.dtype)


def decompose(
    image: np.ndarray, method: str, n_components: int | None = None, patch_size: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """An image as a base plus component images: ``image = base + components.sum(axis=0)``.

    **What the components of one image are.** The image ``(C, H, W)`` is cut into
    non-overlapping ``patch_size × patch_size`` patches (the border patches padded by repeating
    the edge); each patch, all channels together, is one sample of ``C · p²`` values. PCA or
    FastICA fitted on these samples gives ``k`` components (patterns of one patch); component
    ``j``'s image is, at every patch, the patch's coefficient on ``j`` times the pattern, and
    ``base`` is the mean patch repeated. Patches rather than rows or columns: the image alone
    is the data, patches give many samples of a small dimension from any image size, the
    components are local patterns (image ICA on patches gives edge detectors, Hyvärinen et al.)
    and the result treats rows and columns alike. With every component (the default ``k =
    min(n_patches − 1, C · p²)``, the rank of the centred samples at most) the image is
    rebuilt up to float rounding.

    Parameters
    ----------
    image : numpy.ndarray
        ``(C, H, W)`` or ``(H, W)``.
    method : {"pca", "ica"}
        ``sklearn.decomposition.PCA`` (full SVD) or ``FastICA`` (``whiten="unit-variance"``).
    n_components : int, optional
        ``k``; all by default.
    patch_size : int
        Side ``p`` of the patches.
    seed : int
        FastICA's ``random_state``.

    Returns
    -------
    base : numpy.ndarray
        The image's shape, float64.
    components : numpy.ndarray
        ``(k, *image.shape)`` float64, in the decomposition's order (PCA: decreasing variance).

    References
    ----------
    A. Hyvärinen, E. Oja, "Independent component analysis: algorithms and applications", Neural
    Networks 13(4–5), 2000. A. Hyvärinen, J. Hurri, P. O. Hoyer, "Natural image statistics",
    Springer, 2009.
    """
    if method not in DECOMPOSITIONS:
        raise ValueError(f"method must be one of {DECOMPOSITIONS}, got {method!r}")
    array = np.asarray(image, dtype=np.float64)
    flat = array.ndim == 2
    array = array[None] if flat else array
    channels, height, width = array.shape
    if not isinstance(patch_size, int | np.integer) or not 1 <= patch_size <= min(height, width):
        raise ValueError(
            f"patch_size must be an int in 1..{min(height, width)} (the image's sides), got {patch_size}"
        )
    p = int(patch_size)
    rows, columns = -(-height // p), -(-width // p)
    padded = np.pad(array, ((0, 0), (0, rows * p - height), (0, columns * p - width)), mode="edge")
    patches = (
        padded.reshape(channels, rows, p, columns, p).transpose(1, 3, 0, 2, 4).reshape(rows * columns, -1)
    )
    most = min(len(patches) - 1, patches.shape[1])
    k = most if n_components is None else n_components
    if not isinstance(k, int | np.integer) or not 1 <= k <= most:
        raise ValueError(
            f"n_components must be an int in 1..{most} ({len(patches)} patches of {patches.shape[1]} "
            f"values), got {n_components}"
        )
    if method == "pca":
        fitted = PCA(n_components=int(k), svd_solver="full").fit(patches)
        scores, patterns = fitted.transform(patches), fitted.components_
    else:
        fitted = FastICA(n_components=int(k), whiten="unit-variance", random_state=seed, max_iter=1000)
        scores = fitted.fit_transform(patches)
        patterns = fitted.mixing_.T
    parts = scores.T[:, :, None] * patterns[:, None, :]  # (k, patches, values)

    def as_image(values: np.ndarray) -> np.ndarray:
        grid = values.reshape(-1, rows, columns, channels, p, p).transpose(0, 3, 1, 4, 2, 5)
        grid = grid.reshape(-1, channels, rows * p, columns * p)[:, :, :height, :width]
        return grid[:, 0] if flat else grid

    base = as_image(np.broadcast_to(fitted.mean_, patches.shape)[None])[0]
    return np.ascontiguousarray(base), np.ascontiguousarray(as_image(parts))


def minimal_component_image(
    model: nn.Module,
    image: torch.Tensor,
    targets: Target | Sequence[Target],
    method: str = default("interpret.minimal.components.method"),
    n_components: int | None = default("interpret.minimal.components.n_components"),
    patch_size: int = default("interpret.minimal.components.patch_size"),
    fraction: float = default("interpret.minimal.components.fraction"),
    greedy: str = default("interpret.minimal.components.greedy"),
    exact_max_components: int = default("interpret.minimal.components.exact_max_components"),
    seed: int = default("interpret.minimal.components.seed"),
    granularity: str = default("interpret.granularity"),
    batch_size: int = 256,
    sample_id: int | None = None,
) -> tuple[MinimalImage, ...]:
    """The fewest PCA or ICA components of an image that keep each target at ``fraction`` of its value.

    The image is ``base + Σ_j component_j`` (:func:`decompose`: components of its patches); the
    image of a subset of components is ``base`` plus theirs (the mean patches with no
    component). The target on the whole image is ``v``; the search for the fewest components
    whose image gives at least ``fraction · v`` is that of :func:`minimal_parcel_image`
    (greedy over all prefixes, exact up to ``exact_max_components``). dnnbrain's
    ``MinimalComponentImage`` is an empty stub.

    Parameters
    ----------
    model, image, targets, fraction, greedy, granularity, batch_size, sample_id
        As in :func:`minimal_parcel_image`.
    method : {"pca", "ica"}
        The decomposition.
    n_components : int, optional
        Components kept (PCA: those of largest variance); ``None`` (default) for all of them
        (48 for RGB images and 4×4 patches), which rebuild the image exactly, so the curve
        ends at the full value. With fewer, no candidate holds what the others carry.
    patch_size : int
        Side of the patches.
    exact_max_components : int
        Largest component count searched exactly (0..20).
    seed : int
        FastICA's random state.

    Returns
    -------
    tuple of MinimalImage
        One per target, ``kind="components"``.

    References
    ----------
    X. Chen et al., 2020 and S. Ullman et al., 2016 (see the module); A. Hyvärinen, E. Oja,
    "Independent component analysis: algorithms and applications", Neural Networks 13, 2000.
    """
    _check_search(fraction, greedy, exact_max_components)
    image, targets = _as_image(image), as_targets(targets)
    base, components = decompose(image.numpy(), method, n_components, patch_size, seed)
    n = len(components)
    evaluator = _Evaluator(model, image, targets, granularity, batch_size)
    base_t = torch.from_numpy(base).to(image.dtype)
    pieces = torch.from_numpy(components).to(image.dtype)

    def compose(subsets: np.ndarray) -> torch.Tensor:
        weights = torch.from_numpy(subsets).to(image.dtype)
        return base_t + torch.tensordot(weights, pieces, dims=1)

    full = evaluator.images(image[None])[0]
    found = _search(evaluator, compose, n, fraction, greedy, exact_max_components, full)
    parameters = {
        "method": method,
        "n_components": n_components,
        "patch_size": patch_size,
        "fraction": fraction,
        "greedy": greedy,
        "exact_max_components": exact_max_components,
        "seed": seed,
        "granularity": granularity,
    }
    return _results(
        "components",
        method,
        targets,
        parameters,
        image.double().numpy(),
        base,
        {"components": components},
        found,
        full,
        lambda subset, t: evaluator.subsets(compose, subset[None])[0, t],
        sample_id,
    )


def masked_image(
    model: nn.Module,
    image: torch.Tensor,
    targets: Target | Sequence[Target],
    saliency_method: str = default("interpret.minimal.masked.saliency_method"),
    percentile: float = default("interpret.minimal.masked.percentile"),
    feather_sigma: float = default("interpret.minimal.masked.feather_sigma"),
    erosion_step: int = default("interpret.minimal.masked.erosion_step"),
    ratio: float = default("interpret.minimal.masked.ratio"),
    max_steps: int = default("interpret.minimal.masked.max_steps"),
    fill: float | str = default("interpret.minimal.masked.fill"),
    seed: int = default("interpret.minimal.masked.seed"),
    granularity: str = default("interpret.granularity"),
    batch_size: int = 64,
    sample_id: int | None = None,
) -> tuple[MaskedImage, ...]:
    """dnnbrain's masked image: a salient region's hull, eroded while the target keeps ``ratio`` of its value.

    1. A map over the pixels: ``"saliency"``, ``"guided_backprop"`` or ``"smoothgrad"`` (the
       absolute gradient of the target, summed over channels) or ``"contrast"`` (dnnbrain's:
       ``|gray − mean(gray)|`` of the channel-mean image).
    2. The pixels at or above the map's ``percentile`` and their convex hull
       (``skimage.morphology.convex_hull_image``): the mask of step 0.
    3. Step ``k``: the mask eroded ``k`` times by a ``(2·erosion_step + 1)²`` square
       (``skimage.morphology.erosion``, pixels outside the image count as outside the mask, so
       a non-empty mask always loses pixels). Its masked image is ``f · image + (1 − f) ·
       fill`` with ``f`` the mask blurred by a Gaussian of ``feather_sigma`` pixels.
    4. The baseline is the target on step 0's masked image. Steps are evaluated (in batches)
       until the first one below ``ratio · baseline``, the mask is empty, or ``max_steps``.

    The mask sequence and the per-step values up to the stopping step are kept; the masked
    image is the last step still at or above the threshold. dnnbrain's ``put_mask`` computes
    the first step, then in its loop reads ``self.activ_loss``, an attribute nothing sets, so
    it raises ``AttributeError`` before a second erosion; had it run, it would return the
    image of the first step *below* the ratio (here the step before it), convert RGB to gray,
    threshold at ``stdev_size_thr`` standard deviations of the contrast instead of a
    percentile, and raise an error after ``maxiteration`` steps (here: ``stop_reason="max
    steps"``). With a baseline ≤ 0 the ratio cannot be fallen below meaningfully: no erosion
    is done (``stop_reason="non-positive baseline"``).

    Parameters
    ----------
    model, image, targets, granularity, sample_id
        As in :func:`minimal_parcel_image`.
    saliency_method : {"saliency", "guided_backprop", "smoothgrad", "contrast"}
        The map of step 1 (one map per target, except ``"contrast"``).
    percentile : float
        In [0, 100): the pixels of the map at or above it are salient.
    feather_sigma : float
        Gaussian blur of the masks, in pixels (0: hard masks); dnnbrain's ``filter_sigma``.
    erosion_step : int
        Half-width of the square eroding the mask at each step (dnnbrain: 1, a 3×3 square).
    ratio : float
        In (0, 1]: stop at the first step below ``ratio`` × the baseline (dnnbrain's
        ``target_reduction_ratio``, 0.9 there).
    max_steps : int
        Most erosions.
    fill : float or "mean"
        Value outside the mask; ``"mean"``: the image's mean per channel (dnnbrain's gray mean).
    seed : int
        SmoothGrad's seed.
    batch_size : int
        Masked images per forward pass.

    Returns
    -------
    tuple of MaskedImage
        One per target.

    References
    ----------
    X. Chen et al., "DNNBrain: a unifying toolbox for mapping deep neural networks and brains",
    Front. Comput. Neurosci. 14, 2020 (``MaskedImage``); K. Simonyan, A. Vedaldi, A. Zisserman,
    "Deep inside convolutional networks", ICLR workshop, 2014.
    """
    if saliency_method not in SALIENCY_METHODS:
        raise ValueError(f"saliency_method must be one of {SALIENCY_METHODS}, got {saliency_method!r}")
    if not 0 <= percentile < 100 or not 0 < ratio <= 1 or feather_sigma < 0:
        raise ValueError(
            f"expected percentile in [0, 100), ratio in (0, 1] and feather_sigma >= 0, got {percentile}, "
            f"{ratio}, {feather_sigma}"
        )
    if erosion_step < 1 or max_steps < 0:
        raise ValueError(f"expected erosion_step >= 1 and max_steps >= 0, got {erosion_step}, {max_steps}")
    image, targets = _as_image(image), as_targets(targets)
    array = image.double().numpy()
    if fill == "mean":
        fills = array.mean(axis=(-2, -1)).reshape(-1)
    elif isinstance(fill, str) or not np.isfinite(fill):
        raise ValueError(f"fill must be a finite number or 'mean', got {fill!r}")
    else:
        fills = np.full(array.shape[0] if array.ndim == 3 else 1, float(fill))
    fill_arg = fills if array.ndim == 3 else float(fills[0])
    evaluator = _Evaluator(model, image, targets, granularity, batch_size)
    maps = _saliency(model, image, targets, saliency_method, seed, granularity)
    footprint = footprint_rectangle((2 * erosion_step + 1,) * 2)
    parameters = {
        "saliency_method": saliency_method,
        "percentile": percentile,
        "feather_sigma": feather_sigma,
        "erosion_step": erosion_step,
        "ratio": ratio,
        "max_steps": max_steps,
        "fill": fill,
        "seed": seed,
        "granularity": granularity,
    }
    results = []
    for t, target in enumerate(targets):
        saliency = maps[t]
        masks = [convex_hull_image(saliency >= np.percentile(saliency, percentile))]
        while len(masks) <= max_steps and masks[-1].any():
            masks.append(erosion(masks[-1], footprint, mode="min"))
        values, reason = [], "max steps"
        for start in range(0, len(masks), batch_size):
            chunk = np.stack(
                [masked_input(array, m, feather_sigma, fill_arg) for m in masks[start : start + batch_size]]
            )
            values.extend(evaluator.images(torch.from_numpy(chunk).to(image.dtype))[:, t])
            if values[0] <= 0:
                values, reason = values[:1], "non-positive baseline"
                break
            below = np.flatnonzero(np.array(values) < ratio * values[0])
            if below.size:
                values, reason = values[: below[0] + 1], "below ratio"
                break
        else:
            if not masks[-1].any():
                reason = "empty mask"
        results.append(
            MaskedImage(
                target=target_record(**vars(target)),
                parameters=parameters,
                image=array,
                saliency=saliency,
                masks=np.stack(masks[: len(values)]),
                values=np.array(values),
                fill=fills,
                ratio=ratio,
                stop_reason=reason,
                sample_id=sample_id,
            )
        )
    return tuple(results)


def _saliency(model, image, targets, method, seed, granularity) -> np.ndarray:
    """``(n_targets, H, W)`` float64 maps of step 1 of :func:`masked_image`."""
    if method == "contrast":
        gray = image.double().numpy()
        gray = gray.mean(axis=0) if gray.ndim == 3 else gray
        return np.repeat(np.abs(gray - gray.mean())[None], len(targets), axis=0)
    batch = image[None]
    if method == "saliency":
        maps = attributions.saliency(model, batch, targets, abs=True, granularity=granularity)
    elif method == "guided_backprop":
        maps = attributions.guided_backprop(model, batch, targets, granularity=granularity).abs()
    else:
        maps = attributions.smoothgrad(model, batch, targets, seed=seed, granularity=granularity).abs()
    maps = maps[0].double().numpy()
    return maps.sum(axis=1) if image.ndim == 3 else maps
