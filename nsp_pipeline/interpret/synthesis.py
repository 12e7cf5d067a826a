"""Activation maximisation: inputs that maximise a target, by gradient ascent (feature visualisation).

:func:`synthesize` optimises one input per objective, all in one batch: every image of the
batch sees only its own objective (the loss is the sum over the batch of each image's own
objective minus its penalties, the optimiser is elementwise, and the model runs in eval mode,
so batch norms use running statistics), so the batched result equals one run per objective
up to floating-point rounding: CPU kernels (convolutions, matrix products, the inverse FFT)
round a row differently in batches of different sizes (by an epsilon or so), and the values the
clipping puts on a bound are snapped onto it exactly (``_bounded``), so that this rounding does
not decide the model's ties (max pooling over a region at the bound) and grow into different
ascents. An objective is a target or a weighted sum of targets (:class:`Objective`; negative
weights minimise). Each step:

1. the image is decoded from its parameters: ``pixel`` (the image itself) or ``fourier``
   (a spectrum scaled by ``1 / f^decay_power``, Olah et al.'s 1/f parameterisation), for RGB
   inputs optionally through lucid's colour decorrelation; then, with ``norm_bound = r``,
   scaled into the ball ``‖x‖ ≤ r`` (``x · r / max(r, ‖x‖)``, differentiable, so that the
   elementwise optimiser stops where the gradient vanishes: projecting after an Adam step
   would stop where ``sign(w)`` points out of the ball, not at ``r·w/‖w‖``);
2. the penalties ``l1·Σ|x| + l2·Σx² + tv·Σ|∇x|`` are taken on it;
3. each image is transformed on its own (``pad``, then ``jitter``, ``scale`` and ``rotate`` in
   the order given, composed into one bilinear resampling back to the input size);
4. the objective is read from the model, stopping at the deepest layer needed
   (:class:`~nsp_pipeline.interpret.targets.LayerReader`);
5. one Adam step on ``Σ_i (penalty_i − objective_i)``, gradients taken with respect to the
   inputs only (the model's parameters get no ``.grad``);
6. every ``blur_every`` steps the image is blurred (Gaussian, ``blur_sigma``) and written back
   into the same parameters, and with ``value_range`` it is clipped into the range (for
   ``pixel`` a projection; for ``fourier`` through the exact image → spectrum inverse). The
   optimiser and its moments are kept.

Each objective has ``restarts`` starts from ``init`` and, given ``candidates`` (e.g. the data
set), one more from its best candidate; of the final inputs and that candidate unoptimised,
the one of highest score (objective minus penalties) is kept, and the result records which.

Randomness (the initial noise and the transforms' draws) comes from one private numpy
generator per image seeded from ``seed`` and the image's objective, so an image does not
depend on the rest of its batch; torch's global generator is seeded with ``seed`` and restored
afterwards, and deterministic algorithms are on for the run: the same arguments give the same
bytes on the same machine and thread count.

dnnbrain's ``SynthesisImage``, which this replaces, does not run as published: with its default
arguments the loss computes ``None * 0`` (``regular_lambda=None``) and raises; its Fourier
smoothing calls ``torch.rfft``, removed in torch 1.8; its Gaussian-blur preconditioning builds
a new optimiser at every step (losing the optimiser's state); and it takes one channel per
run. lucent (Olah et al.'s recipe in PyTorch) draws one transform for the whole batch and needs
torchvision and kornia; here each image draws its own.

References
----------
D. Erhan, Y. Bengio, A. Courville, P. Vincent, "Visualizing higher-layer features of a deep
network", University of Montreal technical report 1341, 2009.
A. Mahendran, A. Vedaldi, "Understanding deep image representations by inverting them", CVPR 2015.
J. Yosinski, J. Clune, A. Nguyen, T. Fuchs, H. Lipson, "Understanding neural networks through deep
visualization", ICML workshop, 2015 (Gaussian-blur preconditioning).
C. Olah, A. Mordvintsev, L. Schubert, "Feature visualization", Distill, 2017 (1/f Fourier
parameterisation, colour decorrelation, transformation robustness).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nsp_pipeline.core.defaults import default
from nsp_pipeline.interpret.synthesis_results import SynthesisResult
from nsp_pipeline.interpret.targets import LayerReader, Target

#: How the synthesised image is parameterised.
PARAMETERISATIONS = ("pixel", "fourier")
#: Penalties on the image, with their weights in ``regularisers``.
REGULARISERS = ("l1", "l2", "tv")
#: Named initial images (an array is also accepted).
INITS = ("noise", "uniform", "zeros")
#: Kinds of :class:`Transform`.
TRANSFORM_KINDS = ("jitter", "scale", "rotate", "pad")
#: Ways to fill the canvas a :func:`pad` adds.
PAD_MODES = ("constant", "reflect", "replicate")

#: Values closer than this many machine epsilons (times the width of ``value_range``) to a bound
#: are put on it (see ``_bounded``): 64 is over ten times the Fourier round trip's error.
SNAP_EPSILONS = 64

#: lucid's RGB colour correlation (square root of ImageNet's colour covariance), columns scaled so
#: that the largest has norm 1: the decorrelated parameters ``y`` give ``rgb = M y`` per pixel.
COLOUR_CORRELATION = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOUR_CORRELATION = COLOUR_CORRELATION / np.max(np.linalg.norm(COLOUR_CORRELATION, axis=0))


# --------------------------------------------------------------------------- objectives


@dataclass(frozen=True)
class Objective:
    """A weighted sum of targets, ``Σ weight · target``, one value per input.

    Parameters
    ----------
    terms : tuple of (Target, float)
        The targets and their weights; a negative weight minimises its target.

    Examples
    --------
    ``Objective.of(Target("fc", unit=(3,)))`` maximises class score 3;
    ``Objective(((Target("fc", unit=(3,)), 1.0), (Target("fc", unit=(5,)), -1.0)))`` the margin
    of class 3 over class 5; ``Objective.of(Target("conv2", channel=1, reduction="mean"), -1)``
    minimises channel 1's mean.
    """

    terms: tuple[tuple[Target, float], ...]

    def __post_init__(self) -> None:
        terms = tuple(self.terms)
        if not terms:
            raise ValueError("an objective needs at least one (Target, weight) term")
        checked = []
        for term in terms:
            if not (isinstance(term, tuple) and len(term) == 2 and isinstance(term[0], Target)):
                raise TypeError(f"an objective's terms are (Target, weight) pairs, got {term!r}")
            weight = float(term[1])
            if not math.isfinite(weight):
                raise ValueError(f"the weight of {term[0]} is {weight}; expected a finite number")
            checked.append((term[0], weight))
        object.__setattr__(self, "terms", tuple(checked))

    @classmethod
    def of(cls, target: Target, weight: float = 1.0) -> Objective:
        """One target with a weight (``-1`` minimises it)."""
        return cls(((target, weight),))

    def record(self) -> list[dict]:
        """The terms as JSON-able dicts ``{"target": {layer, channel, unit, reduction}, "weight": w}``."""
        return [
            {
                "target": {
                    "layer": t.layer,
                    "channel": t.channel,
                    "unit": None if t.unit is None else list(t.unit),
                    "reduction": t.reduction,
                },
                "weight": w,
            }
            for t, w in self.terms
        ]


def as_objectives(targets: Target | Objective | Sequence[Target | Objective]) -> tuple[Objective, ...]:
    """One or more targets or objectives as a non-empty tuple of :class:`Objective` (a target weighs 1)."""
    items = (targets,) if isinstance(targets, Target | Objective) else tuple(targets)
    if not items:
        raise ValueError("nothing to synthesise: expected at least one Target or Objective")
    objectives = []
    for item in items:
        if isinstance(item, Target):
            objectives.append(Objective.of(item))
        elif isinstance(item, Objective):
            objectives.append(item)
        else:
            raise TypeError(f"expected Targets or Objectives, got {item!r}")
    return tuple(objectives)


class _Evaluator:
    """``inputs (n, ...) -> (n,)``: row ``i`` is objective ``i`` on input ``i`` (and nothing else).

    Terms that differ only in their channel (every channel of a layer, say) are read together:
    one gather ``values[rows, channels]`` per layer, unit and reduction.
    """

    def __init__(self, reader: LayerReader, objectives: Sequence[Objective], device, dtype) -> None:
        targets = [t for o in objectives for t, _ in o.terms]
        reader.check(targets)
        layers = sorted({t.layer for t in targets}, key=reader.position)
        self.module = reader.module(layers)
        families: dict[tuple, tuple[list[int], list[int], list[float]]] = {}
        for row, objective in enumerate(objectives):
            for target, weight in objective.terms:
                if target.channel is None:
                    key = (target, None)
                else:
                    key = (Target(target.layer, 0, target.unit, target.reduction), True)
                rows, channels, weights = families.setdefault(key, ([], [], []))
                rows.append(row)
                channels.append(0 if target.channel is None else target.channel)
                weights.append(weight)
        self.families = [
            (
                target,
                by_channel,
                *(torch.tensor(v, device=device) for v in (rows, channels)),
                torch.tensor(weights, dtype=dtype, device=device),
            )
            for (target, by_channel), (rows, channels, weights) in families.items()
        ]

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        values = self.module(inputs)
        total = torch.zeros(len(inputs), dtype=inputs.dtype, device=inputs.device)
        for target, by_channel, rows, channels, weights in self.families:
            if by_channel:  # the channel's maps of the rows, as a layer of one channel
                selected = Target(target.layer, None, target.unit, target.reduction)
                read = selected.select(values[target.layer][rows, channels])
            else:
                read = target.select(values[target.layer][rows])
            total = total.index_add(0, rows, weights * read)
        return total


def objective_values(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: Target | Objective | Sequence[Target | Objective],
    granularity: str = default("interpret.granularity"),
) -> torch.Tensor:
    """Objective ``i`` on input ``i``, differentiably: what :func:`synthesize` maximises per image.

    Parameters
    ----------
    model : nn.Module
        An fx-traceable network; it runs in eval mode.
    inputs : torch.Tensor
        ``(n, *input_shape)``, one input per objective.
    targets : Target, Objective or sequence of them
        ``n`` objectives (0-based channels and units).
    granularity : {"merged", "ops"}
        How targets name layers.

    Returns
    -------
    torch.Tensor
        ``(n,)``.
    """
    objectives = as_objectives(targets)
    if len(inputs) != len(objectives):
        raise ValueError(f"{len(inputs)} inputs for {len(objectives)} objectives; expected one input each")
    reader = LayerReader(model, inputs[:1], granularity)
    return _Evaluator(reader, objectives, inputs.device, inputs.dtype)(inputs)


# --------------------------------------------------------------------------- transforms


@dataclass(frozen=True)
class Transform:
    """One of the random transformations applied to each image at each step (see :func:`jitter`).

    Parameters
    ----------
    kind : {"jitter", "scale", "rotate", "pad"}
        What it does.
    values : tuple of float
        ``jitter``: ``(px,)``; ``scale``: the factors; ``rotate``: the angles in degrees (one
        drawn uniformly per image and step); ``pad``: ``(px,)``.
    mode : {"constant", "reflect", "replicate"}
        ``pad`` only: how the canvas is filled.
    value : float, optional
        ``pad`` with ``mode="constant"`` only: the fill (default: the middle of ``value_range``,
        or 0).
    """

    kind: str
    values: tuple[float, ...]
    mode: str = "constant"
    value: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in TRANSFORM_KINDS:
            raise ValueError(f"transform kind must be one of {TRANSFORM_KINDS}, got {self.kind!r}")
        values = tuple(float(v) for v in np.atleast_1d(self.values))
        object.__setattr__(self, "values", values)
        if not values or not all(math.isfinite(v) for v in values):
            raise ValueError(f"{self.kind} transform: values {values} must be finite and non-empty")
        if self.kind in ("jitter", "pad") and (
            len(values) != 1 or values[0] < 0 or values[0] != int(values[0])
        ):
            raise ValueError(f"{self.kind} transform: expected one whole number of pixels >= 0, got {values}")
        if self.kind == "scale" and min(values) <= 0:
            raise ValueError(f"scale transform: factors must be positive, got {values}")
        if self.mode not in PAD_MODES:
            raise ValueError(f"pad mode must be one of {PAD_MODES}, got {self.mode!r}")

    def record(self) -> dict:
        """JSON-able form (``kind``, ``values``, and for ``pad`` its ``mode`` and ``value``)."""
        record = {"kind": self.kind, "values": list(self.values)}
        if self.kind == "pad":
            record.update(mode=self.mode, value=self.value)
        return record

    @classmethod
    def from_record(cls, record: Mapping) -> Transform:
        """The transform of a :meth:`record` (as a configuration file gives it)."""
        return cls(
            record["kind"], tuple(record["values"]), record.get("mode", "constant"), record.get("value")
        )


def jitter(px: int) -> Transform:
    """Shift each image by whole pixels, ``(dy, dx)`` uniform in ``-px .. px`` (lucent's: ``0 .. px−1``)."""
    return Transform("jitter", (px,))


def scale(factors: Sequence[float]) -> Transform:
    """Zoom each image about its centre by a factor drawn from ``factors`` (> 1 enlarges)."""
    return Transform("scale", tuple(factors))


def rotate(degrees: Sequence[float]) -> Transform:
    """Rotate each image about its centre by an angle drawn from ``degrees``."""
    return Transform("rotate", tuple(degrees))


def pad(px: int, mode: str = "constant", value: float | None = None) -> Transform:
    """Surround the image by ``px`` pixels that the other transforms can bring into view.

    The output keeps the input's size: padding alone changes nothing. Beyond the padding the
    canvas's border repeats. Applied first wherever it is listed; at most one per run.
    """
    return Transform("pad", (px,), mode, value)


#: lucent's ``standard_transforms`` (for 224×224 inputs), with jitter made symmetric.
STANDARD_TRANSFORMS = (
    pad(12, "constant", 0.5),
    jitter(8),
    scale([1 + (i - 5) / 50.0 for i in range(11)]),
    rotate(list(range(-10, 11)) + 5 * [0]),
    jitter(4),
)


class _Resampler:
    """Per-image random affine resampling of ``(n, C, H, W)`` images, drawn from per-image generators."""

    def __init__(self, transforms: Sequence[Transform], size: tuple[int, int], fill: float) -> None:
        pads = [t for t in transforms if t.kind == "pad"]
        if len(pads) > 1:
            raise ValueError(f"at most one pad transform, got {len(pads)}: {[t.record() for t in pads]}")
        self.moves = [t for t in transforms if t.kind != "pad"]
        self.pad = int(pads[0].values[0]) if pads else 0
        self.mode = pads[0].mode if pads else "constant"
        self.fill = (fill if pads[0].value is None else pads[0].value) if pads else fill
        height, width = size
        if self.mode == "reflect" and self.pad >= min(height, width):
            raise ValueError(
                f"reflect padding of {self.pad} px needs inputs larger than that, got {height}×{width}"
            )
        self.out = np.diag([width / 2, height / 2, 1.0])
        self.into = np.diag([2 / (width + 2 * self.pad), 2 / (height + 2 * self.pad), 1.0])

    @property
    def active(self) -> bool:
        return bool(self.moves)

    def _inverse(self, rng: np.random.Generator) -> np.ndarray:
        """The image-to-canvas map in centred pixel coordinates ``(x, y, 1)``, inverted."""
        forward = np.eye(3)
        for move in self.moves:
            step = np.eye(3)
            if move.kind == "jitter":
                px = int(move.values[0])
                step[1, 2], step[0, 2] = rng.integers(-px, px + 1, size=2)
            elif move.kind == "scale":
                step[0, 0] = step[1, 1] = move.values[rng.integers(len(move.values))]
            else:
                angle = math.radians(move.values[rng.integers(len(move.values))])
                step[:2, :2] = [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
            forward = step @ forward
        return np.linalg.inv(forward)

    def __call__(self, images: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        theta = np.stack([(self.into @ self._inverse(rng) @ self.out)[:2] for rng in rngs])
        theta = torch.as_tensor(theta, dtype=images.dtype, device=images.device)
        canvas = images
        if self.pad:
            value = self.fill if self.mode == "constant" else None
            canvas = F.pad(images, [self.pad] * 4, mode=self.mode, value=value)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(canvas, grid, mode="bilinear", padding_mode="border", align_corners=False)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur ``(n, C, H, W)`` images channel by channel with a Gaussian of ``sigma`` pixels.

    The kernel is truncated at ``int(3·sigma + 0.5)`` pixels (at least 1) and normalised; edges
    repeat the border (as ``scipy.ndimage.gaussian_filter(mode="nearest", truncate=3)``).
    """
    radius = max(1, int(3 * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    blurred = F.pad(images, [radius] * 4, mode="replicate")
    blurred = F.conv2d(blurred, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


# --------------------------------------------------------------------------- parameterisations


def fourier_scale(height: int, width: int, decay_power: float = 1.0) -> np.ndarray:
    """``1 / max(f, 1/max(H, W))^decay_power`` per frequency of a real 2-D FFT, ``(H, W // 2 + 1)``.

    ``f = sqrt(fy² + fx²)`` in cycles per pixel (lucid's ``rfft2d_freqs``).
    """
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    return 1.0 / np.maximum(np.sqrt(fx * fx + fy * fy), 1.0 / max(height, width)) ** decay_power


def _colour(images: torch.Tensor, matrix: np.ndarray) -> torch.Tensor:
    """``matrix @ pixel`` for every pixel of ``(n, 3, H, W)`` images."""
    return torch.einsum(
        "ck,nkhw->nchw", torch.as_tensor(matrix, dtype=images.dtype, device=images.device), images
    )


def spectrum_to_image(
    spectrum: torch.Tensor, size: tuple[int, int], decay_power: float = 1.0, decorrelate: bool = False
) -> torch.Tensor:
    """Images ``(n, C, H, W)`` from scaled spectra ``(n, C, H, W // 2 + 1, 2)`` (real, imaginary).

    ``image = irfft2(fourier_scale · spectrum)`` (orthonormal), then ``COLOUR_CORRELATION`` per
    pixel when ``decorrelate`` (3 channels). :func:`image_to_spectrum` is its inverse.
    """
    height, width = size
    weights = torch.as_tensor(
        fourier_scale(height, width, decay_power), dtype=spectrum.dtype, device=spectrum.device
    )
    images = torch.fft.irfft2(torch.view_as_complex(spectrum) * weights, s=(height, width), norm="ortho")
    return _colour(images, COLOUR_CORRELATION) if decorrelate else images


def image_to_spectrum(
    images: torch.Tensor, decay_power: float = 1.0, decorrelate: bool = False
) -> torch.Tensor:
    """Scaled spectra ``(n, C, H, W // 2 + 1, 2)`` of images ``(n, C, H, W)``; see ``spectrum_to_image``."""
    height, width = images.shape[-2:]
    if decorrelate:
        images = _colour(images, np.linalg.inv(COLOUR_CORRELATION))
    weights = torch.as_tensor(
        fourier_scale(height, width, decay_power), dtype=images.dtype, device=images.device
    )
    return torch.view_as_real(torch.fft.rfft2(images, norm="ortho") / weights).contiguous()


class _Parameterisation:
    """Maps between an image batch ``(n, *input_shape)`` and the tensor the optimiser updates."""

    def __init__(
        self, kind: str, input_shape: tuple[int, ...], decay_power: float, decorrelate: bool
    ) -> None:
        self.kind, self.input_shape, self.decay_power = kind, input_shape, decay_power
        self.image_shape = _image_shape(input_shape)
        self.decorrelate = bool(decorrelate and self.image_shape is not None and self.image_shape[0] == 3)
        if kind == "fourier":
            channels, height, width = self.image_shape
            self.shape = (channels, height, width // 2 + 1, 2)
        else:
            self.shape = tuple(input_shape)

    def decode(self, parameters: torch.Tensor) -> torch.Tensor:
        n = len(parameters)
        if self.kind == "fourier":
            images = spectrum_to_image(parameters, self.image_shape[1:], self.decay_power, self.decorrelate)
        elif self.decorrelate:
            images = _colour(parameters.reshape(n, *self.image_shape), COLOUR_CORRELATION)
        else:
            return parameters
        return images.reshape(n, *self.input_shape)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        n = len(images)
        if self.kind == "fourier":
            return image_to_spectrum(images.reshape(n, *self.image_shape), self.decay_power, self.decorrelate)
        if self.decorrelate:
            matrix = np.linalg.inv(COLOUR_CORRELATION)
            return _colour(images.reshape(n, *self.image_shape), matrix).reshape(n, *self.input_shape)
        return images


def _image_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of an image input ``(C, H, W)`` or ``(H, W)``; None for other shapes."""
    if len(input_shape) == 3:
        return tuple(input_shape)
    if len(input_shape) == 2:
        return (1, *input_shape)
    return None


# --------------------------------------------------------------------------- synthesis


def _penalties(images: torch.Tensor, weights: Mapping[str, float]) -> torch.Tensor:
    """``l1·Σ|x| + l2·Σx² + tv·Σ|Δx|`` per image (differences along the last two axes, or the last)."""
    flat = images.reshape(len(images), -1)
    total = torch.zeros(len(images), dtype=images.dtype, device=images.device)
    if weights["l1"]:
        total = total + weights["l1"] * flat.abs().sum(dim=1)
    if weights["l2"]:
        total = total + weights["l2"] * flat.pow(2).sum(dim=1)
    if weights["tv"]:
        for axis in range(max(1, images.ndim - 2), images.ndim):
            total = total + weights["tv"] * images.diff(dim=axis).abs().reshape(len(images), -1).sum(dim=1)
    return total


def _bounded(
    images: torch.Tensor, radius: float | None, low: float | None, high: float | None
) -> torch.Tensor:
    """``x · r / max(r, ‖x‖)`` per image (inside the ball ``‖x‖ ≤ r``), its values clamped to ``[low, high]``.

    The clamp is straight-through (its gradient is 1) and snaps values within
    :data:`SNAP_EPSILONS` machine epsilons of the range's width onto the bound. After a step's
    projection through the spectrum (image → clamp → spectrum) the values the clamp put on a
    bound come back from the round trip up to ±5 epsilons (at 8×8 to 224×224), on either side,
    and the batched FFT rounds differently from a single image's. Without the snap, a region
    that the projection set to the bound holds values ``low`` and ``low + ε`` that differ between
    a batched run and a single one; the model's ties on that region (max pooling over equal
    values) break differently, the gradient jumps and the runs part (by 0.1–1 within a few
    steps). Snapped, the region is exactly ``low`` in both, as in the pixel parameterisation.
    """
    if low is not None:
        snap = SNAP_EPSILONS * torch.finfo(images.dtype).eps * (high - low)
        inside = images.clamp(low, high)
        inside = torch.where(inside <= low + snap, low, torch.where(inside >= high - snap, high, inside))
        images = images + (inside - images).detach()
    if radius is None:
        return images
    norms = images.reshape(len(images), -1).norm(dim=1)
    factor = radius / torch.maximum(norms, torch.full_like(norms, radius))
    return images * factor.reshape(-1, *[1] * (images.ndim - 1))


def image_generator(seed: int, objective: Objective, restart: int = 0) -> np.random.Generator:
    """The private generator of an image: seeded from ``seed``, its objective and its restart only."""
    key = zlib.crc32(json.dumps(objective.record(), sort_keys=True).encode())
    return np.random.default_rng(np.random.SeedSequence([int(seed) % 2**64, key, int(restart)]))


@contextmanager
def _reproducible(seed: int):
    """Seed torch's global generator and use deterministic algorithms (both restored after).

    Deterministic mode also fills every new tensor with NaN (``fill_uninitialized_memory``), a
    debugging aid that writes each intermediate twice (a quarter of the CPU time of a 2-step
    VGG-11 run at 224×224 in a profile); it is off for the run: every operation here writes all
    of its output.
    """
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) % 2**63)
        torch.use_deterministic_algorithms(True)
        torch.utils.deterministic.fill_uninitialized_memory = False
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
            torch.utils.deterministic.fill_uninitialized_memory = fill


def _checked(arguments: Mapping) -> dict:
    """Validate :func:`synthesize`'s arguments (by name); return the parameters its result records.

    The record is JSON-able with every default: the three regulariser weights, ``value_range``
    as a list, ``init`` ``"given"`` for an array, ``candidates`` as their count.
    """
    shape = tuple(arguments["input_shape"])
    if not shape or not all(isinstance(n, int | np.integer) and n >= 1 for n in shape):
        raise ValueError(
            f"input_shape must be positive ints, e.g. (1, 8, 8), got {arguments['input_shape']!r}"
        )
    steps, lr, restarts = arguments["steps"], arguments["lr"], arguments["restarts"]
    if not isinstance(steps, int | np.integer) or steps < 1 or not lr > 0:
        raise ValueError(f"expected steps >= 1 and lr > 0, got steps={steps!r}, lr={lr!r}")
    if not isinstance(restarts, int | np.integer) or restarts < 1:
        raise ValueError(f"restarts must be an int >= 1, got {restarts!r}")
    regularisers = arguments["regularisers"] or {}
    unknown = [key for key in regularisers if key not in REGULARISERS]
    if unknown:
        raise ValueError(f"unknown regularisers {unknown}; expected some of {REGULARISERS}")
    weights = dict.fromkeys(REGULARISERS, 0.0)
    for key, weight in regularisers.items():
        if not (math.isfinite(float(weight)) and float(weight) >= 0):
            raise ValueError(f"regulariser {key!r} has weight {weight!r}; expected a finite number >= 0")
        weights[key] = float(weight)
    parameterisation, transforms = arguments["parameterisation"], tuple(arguments["transforms"])
    if parameterisation not in PARAMETERISATIONS:
        raise ValueError(f"parameterisation must be one of {PARAMETERISATIONS}, got {parameterisation!r}")
    blur_every, blur_sigma = arguments["blur_every"], arguments["blur_sigma"]
    image_ops = [
        what
        for what, used in (
            (f"parameterisation {parameterisation!r}", parameterisation == "fourier"),
            ("transforms", bool(transforms)),
            ("blur_every", bool(blur_every)),
        )
        if used
    ]
    if image_ops and _image_shape(shape) is None:
        raise ValueError(f"{', '.join(image_ops)} need image inputs (C, H, W) or (H, W), got {shape}")
    if not all(isinstance(t, Transform) for t in transforms):
        raise TypeError(
            f"transforms must be Transform objects (jitter, scale, rotate, pad), got {transforms!r}"
        )
    if not isinstance(blur_every, int | np.integer) or blur_every < 0 or not blur_sigma > 0:
        raise ValueError(
            f"expected blur_every >= 0 (0: never) and blur_sigma > 0, got {blur_every!r}, {blur_sigma!r}"
        )
    value_range, norm_bound = arguments["value_range"], arguments["norm_bound"]
    if value_range is not None and not (
        len(value_range) == 2 and float(value_range[0]) < float(value_range[1])
    ):
        raise ValueError(f"value_range must be (low, high) with low < high, got {value_range!r}")
    if norm_bound is not None and not float(norm_bound) > 0:
        raise ValueError(f"norm_bound must be positive (the radius of the input ball), got {norm_bound!r}")
    init, init_scale = arguments["init"], arguments["init_scale"]
    if isinstance(init, str) and init not in INITS:
        raise ValueError(f"init must be one of {INITS} or an array of inputs, got {init!r}")
    if isinstance(init, str) and init == "uniform" and value_range is None:
        raise ValueError("init='uniform' draws pixels in value_range: give value_range=(low, high)")
    if not init_scale >= 0:
        raise ValueError(f"init_scale must be >= 0, got {init_scale!r}")
    candidates = arguments["candidates"]
    if candidates is not None and (np.ndim(candidates) != len(shape) + 1 or not len(candidates)):
        raise ValueError(
            f"candidates have shape {tuple(np.shape(candidates))}; expected (m, *{shape}) with m >= 1, "
            "one input per row"
        )
    if candidates is not None and tuple(np.shape(candidates)[1:]) != shape:
        raise ValueError(f"candidates have shape {tuple(np.shape(candidates))}; expected (m, *{shape})")
    return {
        "input_shape": [int(n) for n in shape],
        "steps": int(steps),
        "lr": float(lr),
        "optimizer": "adam",
        "regularisers": weights,
        "parameterisation": parameterisation,
        "decay_power": float(arguments["decay_power"]),
        "decorrelate": bool(arguments["decorrelate"]),
        "transforms": [t.record() for t in transforms],
        "blur_every": int(blur_every),
        "blur_sigma": float(blur_sigma),
        "value_range": None if value_range is None else [float(value_range[0]), float(value_range[1])],
        "norm_bound": None if norm_bound is None else float(norm_bound),
        "init": init if isinstance(init, str) else "given",
        "init_scale": float(init_scale),
        "restarts": int(restarts),
        "candidates": None if candidates is None else len(candidates),
        "seed": int(arguments["seed"]),
    }


def synthesize(
    model: nn.Module,
    targets: Target | Objective | Sequence[Target | Objective],
    input_shape: Sequence[int],
    steps: int = default("interpret.synthesis.steps"),
    lr: float = default("interpret.synthesis.lr"),
    regularisers: Mapping[str, float] | None = None,
    parameterisation: str = default("interpret.synthesis.parameterisation"),
    decay_power: float = default("interpret.synthesis.decay_power"),
    decorrelate: bool = default("interpret.synthesis.decorrelate"),
    transforms: Sequence[Transform] = (),
    blur_every: int = default("interpret.synthesis.blur_every"),
    blur_sigma: float = default("interpret.synthesis.blur_sigma"),
    value_range: tuple[float, float] | None = default("interpret.synthesis.value_range"),
    norm_bound: float | None = default("interpret.synthesis.norm_bound"),
    init: str | np.ndarray | torch.Tensor = default("interpret.synthesis.init"),
    init_scale: float = default("interpret.synthesis.init_scale"),
    restarts: int = default("interpret.synthesis.restarts"),
    candidates: np.ndarray | torch.Tensor | None = None,
    seed: int = default("interpret.synthesis.seed"),
    granularity: str = default("interpret.granularity"),
) -> SynthesisResult:
    """Inputs that maximise each objective, optimised together in one batch (see the module docstring).

    Parameters
    ----------
    model : nn.Module
        An fx-traceable network with one tensor input; it runs in eval mode, on its device.
    targets : Target, Objective or sequence of them
        One synthesised input per item (e.g. every channel of a layer). 0-based channels and
        units; a target weighs 1, an :class:`Objective` combines several with weights.
    input_shape : sequence of int
        Per-sample input shape, e.g. ``(1, 8, 8)`` or ``(3, 224, 224)``.
    steps : int
        Optimisation steps (Adam).
    lr : float
        Adam's step size (in the parameterisation's units).
    regularisers : mapping, optional
        Weights of ``"l1"`` (``Σ|x|``), ``"l2"`` (``Σx² = ‖x‖²``) and ``"tv"`` (anisotropic total
        variation ``Σ|Δx|`` along the last two axes); missing ones are 0.
    parameterisation : {"pixel", "fourier"}
        Optimise the image itself, or its 1/f-scaled spectrum (images only).
    decay_power : float
        Exponent of the Fourier scaling.
    decorrelate : bool
        For 3-channel images, optimise lucid's decorrelated colours (either parameterisation).
    transforms : sequence of Transform
        Random transformations (:func:`pad`, :func:`jitter`, :func:`scale`, :func:`rotate`) drawn
        per image and step; :data:`STANDARD_TRANSFORMS` is lucent's set for 224×224 inputs.
    blur_every : int
        Blur the image every ``blur_every`` steps (0: never), keeping the optimiser's state.
    blur_sigma : float
        Standard deviation of that blur, pixels.
    value_range : (float, float), optional
        Valid inputs' range: the image is clipped into it after every step.
    norm_bound : float, optional
        Keep every image in the ball ``‖x‖ ≤ norm_bound`` (by a differentiable rescaling).
    init : {"noise", "uniform", "zeros"} or array
        Start: noise of ``init_scale`` in the parameterisation around the middle of
        ``value_range`` (or 0); pixels uniform in ``value_range``; zeros; or given inputs
        ``(*input_shape)`` or ``(n, *input_shape)``.
    init_scale : float
        Standard deviation of the initial noise.
    restarts : int
        Starts from ``init`` per objective (each with its own draws, all in the same batch).
        Gradient ascent finds a local maximum: a unit that is 0 after a ReLU on the whole start
        has no gradient, and more, diverse starts (``init="uniform"``) are the remedy.
    candidates : array, optional
        Inputs ``(m, *input_shape)`` to start from as well, typically the data set. Each
        objective gets one more start: its best candidate, the one of highest score (objective
        minus penalties, untransformed; the first of equal ones), the candidates read in
        batches of the optimisation's size. Olah et al. (2017) set beside each optimised input
        the data set examples that activate the unit most; starting the ascent from the best of
        them (as DeepDream starts from a photograph) makes the result score at least as high as
        every candidate (without regularisers: its objective is at least every candidate's),
        by construction: the best candidate itself competes with the final inputs, since
        gradient ascent under transforms, clipping and Adam's steps need not raise the
        untransformed score. A candidate outside ``value_range`` or the ball of ``norm_bound``
        is started from and compared as clipped into them.
    seed : int
        Seed of the per-image generators (initial noise, transforms) and of torch.
    granularity : {"merged", "ops"}
        How targets name layers.

    Returns
    -------
    SynthesisResult
        Per objective, the input of highest score (objective minus penalties, untransformed)
        among the final inputs of its starts and, with ``candidates``, its best candidate
        unoptimised: which one won is ``start`` (the first of equal scores). Also its objective
        value, the trajectory ``(steps, n)`` of the start that won, the best candidate and its
        objective, and every parameter used.

    Raises
    ------
    ValueError
        For an argument out of range, a target outside its layer, or image operations on
        non-image inputs; the message names what was expected.
    TraceError
        If the model cannot be traced or normalises with batch statistics.

    References
    ----------
    C. Olah, A. Mordvintsev, L. Schubert, "Feature visualization", Distill, 2017 (dataset
    examples beside optimisation). A. Mordvintsev, C. Olah, M. Tyka, "Inceptionism: going deeper
    into neural networks", Google Research blog, 2015 (ascent from a photograph).
    """
    record = _checked(locals())
    input_shape, transforms, weights = tuple(record["input_shape"]), tuple(transforms), record["regularisers"]
    wanted = as_objectives(targets)
    starts = restarts + (candidates is not None)  # the candidate's start is the last of each objective
    objectives = [objective for objective in wanted for _ in range(starts)]
    n, count = len(objectives), len(wanted)
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else torch.float32
    low, high = (None, None) if value_range is None else (float(value_range[0]), float(value_range[1]))
    centre = 0.0 if value_range is None else (low + high) / 2
    space = _Parameterisation(parameterisation, input_shape, decay_power, decorrelate)
    record["decorrelate"] = space.decorrelate
    resampler = _Resampler(transforms, space.image_shape[1:], centre) if transforms else None
    with _reproducible(seed):
        reader = LayerReader(model, torch.zeros((1, *input_shape), dtype=dtype, device=device), granularity)
        evaluate = _Evaluator(reader, objectives, device, dtype)
        rngs = [image_generator(seed, objective, k % starts) for k, objective in enumerate(objectives)]
        drawn = [rng for k, rng in enumerate(rngs) if k % starts < restarts]
        parameters = _initial(space, init, init_scale, (low, high), drawn, restarts, dtype, device)
        best_index = torch.full((count,), -1, dtype=torch.int64)
        best_value = torch.full((count,), math.nan, dtype=torch.float64)
        if candidates is not None:
            pool = torch.as_tensor(candidates, dtype=dtype, device=device)
            if not torch.isfinite(pool).all():
                raise ValueError("candidates hold NaN or infinite values; expected finite inputs")
            best_value, best_index = _best_candidates(reader, wanted, pool, weights, n)
            chosen = _bounded(pool[best_index.to(device)], norm_bound, low, high)
            from_pool = space.encode(chosen)[:, None]
            parameters = torch.cat([parameters.reshape(count, restarts, *space.shape), from_pool], dim=1)
        parameters = parameters.reshape(n, *space.shape).contiguous().requires_grad_(True)
        with torch.no_grad():
            _project(space, parameters, low, high, None)
        optimizer = torch.optim.Adam([parameters], lr=lr)
        trajectory = []
        for step in range(steps):
            images = _bounded(space.decode(parameters), norm_bound, low, high)
            seen = images
            if resampler is not None and resampler.active:
                seen = resampler(images.reshape(n, *space.image_shape), rngs).reshape(n, *input_shape)
            objective = evaluate(seen)
            loss = (_penalties(images, weights) - objective).sum()
            (parameters.grad,) = torch.autograd.grad(loss, parameters)
            optimizer.step()
            with torch.no_grad():
                blur = blur_sigma if blur_every and (step + 1) % blur_every == 0 else None
                _project(space, parameters, low, high, blur)
            trajectory.append(objective.detach())
        with torch.no_grad():
            final = _bounded(space.decode(parameters), norm_bound, low, high).detach()
            outcomes = final.reshape(count, starts, *input_shape)
            values = evaluate(final).reshape(count, starts)
            if candidates is not None:  # the best candidate unoptimised competes too
                unoptimised = _Evaluator(reader, wanted, device, dtype)(chosen)
                outcomes = torch.cat([outcomes, chosen[:, None]], dim=1)
                values = torch.cat([values, unoptimised[:, None]], dim=1)
            penalties = _penalties(outcomes.reshape(-1, *input_shape), weights)
    won = (values - penalties.reshape(values.shape)).argmax(dim=1)
    rows = torch.arange(count, device=device)
    ran = rows * starts + won.clamp(max=starts - 1)  # the unoptimised candidate: its start's trajectory
    return SynthesisResult(
        inputs=outcomes[rows, won].cpu().numpy(),
        objectives=tuple(o.record() for o in wanted),
        trajectory=torch.stack(trajectory)[:, ran].cpu().double().numpy(),
        values=values[rows, won].cpu().double().numpy(),
        parameters=record,
        granularity=granularity,
        start=won.cpu().numpy(),
        candidate=best_index.numpy(),
        candidate_values=best_value.numpy(),
    )


def _best_candidates(
    reader: LayerReader,
    objectives: Sequence[Objective],
    pool: torch.Tensor,
    weights: Mapping[str, float],
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per objective, its row of ``pool`` of highest objective minus penalties (the first of equal ones).

    Returns the objective on that row (float64) and the row (int64); ``pool`` is read in batches.
    """
    layers = sorted({t.layer for o in objectives for t, _ in o.terms}, key=reader.position)
    module = reader.module(layers)
    best_score = torch.full((len(objectives),), -math.inf, dtype=torch.float64)
    best_value = torch.full((len(objectives),), math.nan, dtype=torch.float64)
    best_index = torch.zeros(len(objectives), dtype=torch.int64)
    with torch.no_grad():
        for start in range(0, len(pool), batch_size):
            chunk = pool[start : start + batch_size]
            read = module(chunk)
            values = torch.stack(
                [sum(w * t.select(read[t.layer]) for t, w in o.terms) for o in objectives], dim=1
            )
            scores = values - _penalties(chunk, weights)[:, None]
            score, index = scores.double().cpu().max(dim=0)  # the first of equal maxima
            better = score > best_score
            best_score = torch.where(better, score, best_score)
            best_value = torch.where(better, values.double().cpu()[index, range(len(objectives))], best_value)
            best_index = torch.where(better, index + start, best_index)
    return best_value, best_index


def _initial(space: _Parameterisation, init, scale_: float, value_range, rngs, restarts: int, dtype, device):
    """The optimised parameters at the start (no gradient yet), one image per generator."""
    n, (low, high) = len(rngs), value_range
    centre = 0.0 if low is None else (low + high) / 2
    if isinstance(init, str) and init == "uniform":
        draws = np.stack([rng.uniform(low, high, size=space.input_shape) for rng in rngs])
        images = torch.as_tensor(draws, dtype=dtype, device=device)
    elif isinstance(init, str):
        images = torch.full(
            (n, *space.input_shape), centre if init == "noise" else 0.0, dtype=dtype, device=device
        )
    else:
        given = torch.as_tensor(np.asarray(init), dtype=dtype, device=device)
        if given.shape == space.input_shape:
            given = given.expand(n // restarts, *space.input_shape)
        if tuple(given.shape) != (n // restarts, *space.input_shape):
            raise ValueError(
                f"init has shape {tuple(given.shape)}; expected {space.input_shape} or "
                f"({n // restarts}, *{space.input_shape}), one input per objective"
            )
        images = given.repeat_interleave(restarts, dim=0)
    parameters = space.encode(images).detach().clone()
    if isinstance(init, str) and init == "noise" and scale_ > 0:
        noise = np.stack([rng.standard_normal(space.shape, dtype=np.float32) for rng in rngs])
        parameters = parameters + scale_ * torch.as_tensor(noise, dtype=dtype, device=device)
    return parameters


def _project(space: _Parameterisation, parameters: torch.Tensor, low, high, blur: float | None) -> None:
    """Blur (optional) and clip the decoded images into ``[low, high]``, in place in ``parameters``."""
    if low is None and blur is None:
        return
    if space.kind == "pixel" and not space.decorrelate and blur is None:
        parameters.clamp_(low, high)
        return
    images = space.decode(parameters)
    if blur is not None:
        n = len(images)
        images = gaussian_blur(images.reshape(n, *space.image_shape), blur).reshape(n, *space.input_shape)
    if low is not None:
        images = images.clamp(low, high)
    parameters.copy_(space.encode(images))
