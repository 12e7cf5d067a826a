"""Empirical receptive fields of a channel's units over a dataset, with the theoretical field.

For each image the unit of the channel is chosen (the position of its maximal activation, as
Zhou et al., or a fixed position, as Luo et al.'s centre unit), its map of what drives it is
computed (an occlusion discrepancy map or the gradient magnitude), re-centred on the unit and
averaged over the images where the unit is most active. Re-centring puts each unit's
unclipped theoretical window (:mod:`nsp_pipeline.graph.receptive_fields`) on one common grid,
so every unit's theoretical centre lands on the grid's centre; positions of that grid outside
an image are missing (NaN) for that image and do not count in the average.

The empirical field is reported next to the theoretical one and is always inside it: a
gradient vanishes outside the theoretical field (chain rule), and an occlusion map is kept
only on the theoretical field (see :func:`empirical_receptive_field`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from nsp_pipeline.core.defaults import default
from nsp_pipeline.graph.receptive_fields import receptive_fields
from nsp_pipeline.interpret.attributions import occlusion, saliency
from nsp_pipeline.interpret.targets import LayerReader, Target

#: Maps an empirical field can average.
METHODS = ("occlusion", "gradient")
#: ``(start, stop)`` along one axis of the re-centred grid, inclusive–exclusive.
Range = tuple[int, int]


@dataclass(frozen=True)
class EmpiricalField:
    """A channel's empirical receptive field: re-centred maps, their mean, and the theoretical field.

    Every map is on the re-centred grid of the layer's unclipped theoretical window, of side
    ``size`` (dnnbrain's ``rf_size``): grid position ``(a, b)`` of image ``i`` is input
    position ``window_starts[i] + (a, b)``, and the unit's theoretical centre is the grid's
    centre ``((size_r − 1) / 2, (size_c − 1) / 2)``. Boxes are ``((row start, row stop),
    (column start, column stop))`` on that grid; an empty box is ``((0, 0), (0, 0))``.

    Attributes
    ----------
    layer, method : str
        Layer name and ``"occlusion"`` or ``"gradient"``.
    channel : int
        0-based channel (dnnbrain's are 1-based).
    images : numpy.ndarray
        ``(k,)`` indices of the images used, by decreasing activation of their unit.
    units : numpy.ndarray
        ``(k, 2)`` each image's unit (row, column) in the channel's map.
    activations : numpy.ndarray
        ``(k,)`` each image's unit activation.
    window_starts : numpy.ndarray
        ``(k, 2)`` input position of each unit's unclipped window start (negative in the padding).
    maps : numpy.ndarray
        ``(k, size_r, size_c)`` re-centred maps, NaN outside the image.
    mean_map : numpy.ndarray
        ``(size_r, size_c)`` mean over the images whose map covers each position (NaN where none).
    count : numpy.ndarray
        ``(size_r, size_c)`` number of images covering each position.
    theoretical_mask : numpy.ndarray
        ``(size_r, size_c)`` booleans: the union over the images of their unit's exact
        theoretical field (any input channel), re-centred.
    threshold : float
        Fraction of the mean map's maximum that defines :attr:`empirical_box`.
    """

    layer: str
    channel: int
    method: str
    images: np.ndarray
    units: np.ndarray
    activations: np.ndarray
    window_starts: np.ndarray
    maps: np.ndarray
    mean_map: np.ndarray
    count: np.ndarray
    theoretical_mask: np.ndarray
    threshold: float

    @property
    def theoretical_box(self) -> tuple[Range, Range]:
        """Bounding box of :attr:`theoretical_mask`."""
        return _bounding_box(self.theoretical_mask)

    @property
    def empirical_box(self) -> tuple[Range, Range]:
        """Bounding box of the positions where the mean map reaches ``threshold × its maximum``.

        As Zhou et al. threshold the averaged discrepancy map; empty for a unit that nothing
        drives (a zero mean map). Always inside :attr:`theoretical_box`.
        """
        values = np.nan_to_num(self.mean_map, nan=0.0)
        peak = values.max()
        return _bounding_box((values >= self.threshold * peak) & (values > 0))

    def mass_box(self, fraction: float = 0.9) -> tuple[Range, Range]:
        """Per axis, the range between the ``(1 − f) / 2`` and ``(1 + f) / 2`` quantiles of the mass.

        The mass is the mean map (NaN as 0) summed over the other axis; ``f = 1`` gives the
        bounding box of the map's support. Always inside :attr:`theoretical_box`.
        """
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        values = np.nan_to_num(self.mean_map, nan=0.0)
        if not values.any():
            return ((0, 0), (0, 0))
        ranges = []
        for axis in (1, 0):
            marginal = values.sum(axis=axis)
            tail = (1 - fraction) / 2 * marginal.sum()
            start = int(np.searchsorted(np.cumsum(marginal), tail, side="right"))
            stop = len(marginal) - int(np.searchsorted(np.cumsum(marginal[::-1]), tail, side="right"))
            ranges.append((start, stop))
        return tuple(ranges)  # type: ignore[return-value]

    @property
    def theoretical_size(self) -> tuple[int, int]:
        """Sides (rows, columns) of :attr:`theoretical_box`."""
        return _sides(self.theoretical_box)

    @property
    def empirical_size(self) -> tuple[int, int]:
        """Sides (rows, columns) of :attr:`empirical_box`."""
        return _sides(self.empirical_box)


def _sides(box: tuple[Range, Range]) -> tuple[int, int]:
    return tuple(stop - start for start, stop in box)  # type: ignore[return-value]


def _bounding_box(mask: np.ndarray) -> tuple[Range, Range]:
    if not mask.any():
        return ((0, 0), (0, 0))
    ranges = []
    for axis in (1, 0):
        hit = np.flatnonzero(mask.any(axis=axis))
        ranges.append((int(hit[0]), int(hit[-1]) + 1))
    return tuple(ranges)  # type: ignore[return-value]


def empirical_receptive_field(
    model: nn.Module,
    inputs: torch.Tensor,
    layer: str,
    channel: int,
    method: str = "occlusion",
    unit: tuple[int, int] | None = None,
    top_k: int | None = None,
    window: int | tuple[int, int] = 11,
    stride: int | tuple[int, int] = 3,
    fill: float = 0.0,
    threshold: float = 0.5,
    granularity: str = default("interpret.granularity"),
    batch_size: int = 64,
) -> EmpiricalField:
    """Empirical receptive field of a channel's units over a batch of images.

    For each image, the unit is the channel's position of maximal activation (``unit=None``,
    Zhou et al.; ties: the first in row-major order) or the given position (Luo et al.'s
    centre unit). The ``top_k`` images of highest unit activation are kept, and each gets a map:

    ``"occlusion"``
        Zhou et al.'s discrepancy map: the magnitude of the unit's change when a
        ``window`` filled with ``fill`` occludes the image, per pixel the mean over the windows
        covering it (:func:`~nsp_pipeline.interpret.attributions.occlusion`, ``output="pixel"``),
        kept on the unit's exact theoretical field and 0 elsewhere: occluding pixels outside
        the field changes nothing, so a window's change is due to its pixels inside the field
        (spreading it over the whole window, as Zhou et al. do, would blur the field by the
        window's size beyond the theoretical one).
    ``"gradient"``
        Luo et al.'s effective receptive field: ``Σ_c |∂ unit / ∂ x_c|`` over input channels.

    Each map is re-centred on its unit (see :class:`EmpiricalField`) and the maps are averaged
    position by position over the images covering it.

    dnnbrain's ``EmpiricalReceptiveField.compute`` reads attributes its engines do not have
    and writes each image's field to ``tmp.png`` in the working directory; this function
    writes nothing: the per-image maps and their mean are returned as arrays, for the caller
    to store or draw.

    Parameters
    ----------
    model : nn.Module
        An fx-traceable network; it runs in eval mode.
    inputs : torch.Tensor
        Images ``(n, channels, height, width)``.
    layer : str
        A layer ``(channels, rows, columns)`` whose units have a window geometry (a chain of
        convolutions, poolings and elementwise operations from the input).
    channel : int
        0-based channel (dnnbrain's are 1-based).
    method : {"occlusion", "gradient"}
        Which map (see above).
    unit : (int, int), optional
        Fixed unit (row, column) in the channel's map; default: each image's maximal unit.
    top_k : int, optional
        Number of images kept (default: all).
    window, stride, fill
        Occluder (Zhou et al.: 11 × 11, stride 3), as in
        :func:`~nsp_pipeline.interpret.attributions.occlusion`.
    threshold : float
        In (0, 1]: the empirical box holds the mean map's values ``>= threshold × max``.
    granularity : {"merged", "ops"}
        How ``layer`` is named.
    batch_size : int
        Forward passes' batch size.

    Returns
    -------
    EmpiricalField

    Raises
    ------
    ValueError
        For an unknown layer, a channel or unit out of range, a layer without spatial window
        geometry, or invalid parameters; messages name the layer.

    References
    ----------
    B. Zhou, A. Khosla, A. Lapedriza, A. Oliva, A. Torralba, "Object detectors emerge in deep scene
    CNNs", ICLR 2015.
    W. Luo, Y. Li, R. Urtasun, R. Zemel, "Understanding the effective receptive field in deep
    convolutional neural networks", NeurIPS 2016.
    X. Chen et al., "DNNBrain: a unifying toolbox for mapping deep neural networks and brains",
    Front. Comput. Neurosci. 14, 2020.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if inputs.ndim != 4:
        raise ValueError(
            f"inputs must be images (n, channels, height, width), got shape {tuple(inputs.shape)}"
        )
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    reader = LayerReader(model, inputs, granularity)
    shape = reader.shape(layer)
    if len(shape) != 3:
        raise ValueError(f"layer {layer!r} of shape {shape} is not (channels, rows, columns)")
    Target(layer, channel=channel, unit=unit or (0, 0)).check(shape)
    field = receptive_fields(model, inputs[:1], [layer], granularity)[layer]
    if any(g is None for g in field.geometry):
        raise ValueError(
            f"layer {layer!r} has no window geometry (a linear layer, adaptive pooling with uneven bins or "
            "branches of unequal strides mix its positions), so its units cannot be re-centred"
        )
    images, units, activations = _top_units(reader, inputs, layer, channel, unit, top_k, batch_size)
    size = tuple(g.size for g in field.geometry)
    starts = np.array(
        [[g.offset + position * g.jump for g, position in zip(field.geometry, u)] for u in units]
    ).reshape(-1, 2)
    maps = np.full((len(images), *size), np.nan)
    theoretical = np.zeros(size, dtype=bool)
    for position in {tuple(u) for u in units.tolist()}:
        rows = np.flatnonzero((units == position).all(axis=1))
        target = Target(layer, channel=channel, unit=position)
        mask = field.mask((channel, *position)).reshape(-1, *inputs.shape[2:]).any(axis=0)
        batch = inputs[torch.from_numpy(images[rows])]
        if method == "gradient":
            found = saliency(model, batch, target, granularity=granularity, batch_size=batch_size)
            found = found[:, 0].abs().sum(dim=1)
        else:
            found = occlusion(model, batch, target, window, stride, fill, "pixel", granularity, batch_size)
            found = found[:, 0].abs() * torch.from_numpy(mask).to(found)
        found = found.detach().cpu().double().numpy()
        for row, values in zip(rows, found):
            _place(maps[row], values, starts[row])
        placed = np.zeros(size, dtype=bool)
        _place(placed, mask, starts[rows[0]])
        theoretical |= placed
    count = (~np.isnan(maps)).sum(axis=0)
    with np.errstate(invalid="ignore"):
        mean_map = np.where(count > 0, np.nansum(maps, axis=0) / count, np.nan)
    return EmpiricalField(
        layer,
        channel,
        method,
        images,
        units,
        activations,
        starts,
        maps,
        mean_map,
        count,
        theoretical,
        threshold,
    )


def _top_units(reader, inputs, layer, channel, unit, top_k, batch_size):
    """Per image the unit (its maximum or the fixed one) and its activation; the ``top_k`` images."""
    module = reader.module([layer])
    with torch.no_grad():
        maps = torch.cat(
            [
                module(inputs[row : row + batch_size])[layer][:, channel]
                for row in range(0, len(inputs), batch_size)
            ]
        )
    maps = maps.detach().cpu().double().numpy()
    if unit is None:
        flat = maps.reshape(len(maps), -1).argmax(axis=1)
        units = np.stack(np.unravel_index(flat, maps.shape[1:]), axis=1)
    else:
        units = np.tile(np.asarray(unit), (len(maps), 1))
    activations = maps[np.arange(len(maps)), units[:, 0], units[:, 1]]
    order = np.argsort(-activations, kind="stable")[:top_k]
    return order, units[order], activations[order]


def _place(grid: np.ndarray, values: np.ndarray, start) -> None:
    """Copy an input-space map onto a re-centred grid whose position (0, 0) is input ``start``."""
    source, target = [], []
    for origin, n_grid, n_input in zip(start, grid.shape, values.shape):
        first, stop = max(0, -origin), min(n_grid, n_input - origin)
        target.append(slice(first, max(first, stop)))
        source.append(slice(origin + first, origin + max(first, stop)))
    grid[tuple(target)] = values[tuple(source)]
