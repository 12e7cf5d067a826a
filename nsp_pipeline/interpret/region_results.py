"""The linear regions of a network on a 2-D slice, with its decision boundary (torch-free).

:class:`RegionPartition` holds what :func:`nsp_pipeline.interpret.regions.linear_regions`
computes, as numpy arrays and JSON-able metadata, so that storage and drawing never import torch.
The cells are convex polygons in slice coordinates ``t`` (ragged: ``vertices`` and ``offsets``,
see :mod:`nsp_pipeline.interpret.polygons`); on each the network is the affine map
``f(t) = A t + c``.

Stored form (:meth:`RegionPartition.to_arrays`; ``n`` cells, ``k`` classes, i.e. outputs):

=====================  ====================  ===================================================
name                   shape, dtype          meaning
=====================  ====================  ===================================================
``vertices``           ``(n_v, 2)`` float64  every cell's vertices, counter-clockwise
``offsets``            ``(n + 1,)`` int64    cell ``i`` is ``vertices[offsets[i]:offsets[i+1]]``
``patterns``           ``(n, B)`` uint8      activation pattern per cell (see below)
``affine_A``           ``(n, k, 2)``         slope of the output w.r.t. ``t`` on each cell
``affine_c``           ``(n, k)``            offset: ``f(t) = affine_A @ t + affine_c``
``areas``              ``(n,)``              cell areas
``slope_norm``         ``(n,)``              Frobenius norm of ``affine_A[i]``
``predicted``          ``(n,)`` int64        class at the cell's vertex mean (scalar output: 1 if > 0)
``touches_boundary``   ``(n,)`` bool         the decision boundary runs through or along the cell
``cells_after_layer``  ``(L,)`` int64        number of cells after each kink layer's splits
``layer_sites``        ``(L,)`` int64        kink sites per layer
``layer_pieces``       ``(L,)`` int64        pieces per site: 1 sign sites, else argmax sites
``boundary_segments``  ``(m, 2, 2)``         decision boundary segments (two end points each)
``boundary_classes``   ``(m, 2)`` int64      the two classes tied on each segment (lower first)
``boundary_cells``     ``(m,)`` int64        the cell each segment lies in
``pair_segments``      ``(p, 2, 2)``         where the classes ``pair`` tie (their logits' zero line)
``domain``             ``(d, 2)``            the slice's region (domain cut by box constraints)
``anchors``            ``(a, 2)``            slice coordinates of the anchors
``origin``             ``S``                 the slice's origin (input shape ``S``)
``directions``         ``(2, *S)``           the slice's directions
=====================  ====================  ===================================================

Patterns: per kink layer in order, sign layers (``layer_pieces == 1``: 1 where the site's value is
``> 0``) as ``numpy.packbits`` bytes (big bit order, ``ceil(sites / 8)`` bytes), argmax layers as one
byte per site (the index of the largest piece, the first on ties). :meth:`RegionPartition.site_values`
unpacks them to one value per site. With ``patterns=False`` the array has no columns.

:meth:`~RegionPartition.attributes` gives the rest: ``schema``, ``layer_names``, ``anchor_labels``,
``pair``, ``parameters``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from nsp_pipeline.interpret import polygons
from nsp_pipeline.interpret.results import json_safe

#: Version of the stored form (``attributes()["schema"]``).
SCHEMA = "nsp-pipeline linear regions 1"

_ARRAYS = (
    "vertices",
    "offsets",
    "patterns",
    "affine_A",
    "affine_c",
    "areas",
    "slope_norm",
    "predicted",
    "touches_boundary",
    "cells_after_layer",
    "layer_sites",
    "layer_pieces",
    "boundary_segments",
    "boundary_classes",
    "boundary_cells",
    "pair_segments",
    "domain",
    "anchors",
    "origin",
    "directions",
)


@dataclass(frozen=True, eq=False)
class RegionPartition:
    """The exact partition of a 2-D input slice into the linear regions of a network.

    Every array is described in the module docstring; ``layer_names`` names the kink layers
    (the fx node of each piecewise-linear operation that bends), ``anchor_labels`` the anchors,
    ``pair`` the two classes of ``pair_segments`` (or ``None``), ``parameters`` the tolerances,
    timings and other JSON-able facts of the computation.
    """

    vertices: np.ndarray
    offsets: np.ndarray
    patterns: np.ndarray
    affine_A: np.ndarray
    affine_c: np.ndarray
    areas: np.ndarray
    slope_norm: np.ndarray
    predicted: np.ndarray
    touches_boundary: np.ndarray
    layer_names: tuple[str, ...]
    cells_after_layer: np.ndarray
    layer_sites: np.ndarray
    layer_pieces: np.ndarray
    boundary_segments: np.ndarray
    boundary_classes: np.ndarray
    boundary_cells: np.ndarray
    domain: np.ndarray
    anchors: np.ndarray
    anchor_labels: tuple[str, ...]
    origin: np.ndarray
    directions: np.ndarray
    pair: tuple[int, int] | None = None
    pair_segments: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 2)))
    parameters: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.offsets) - 1
        for name in (
            "patterns",
            "affine_A",
            "affine_c",
            "areas",
            "slope_norm",
            "predicted",
            "touches_boundary",
        ):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"region partition: {name} has {len(getattr(self, name))} rows for {n} cells"
                )
        if not len(self.layer_names) == len(self.cells_after_layer) == len(self.layer_sites):
            raise ValueError(
                "region partition: layer_names, cells_after_layer and layer_sites differ in length"
            )
        object.__setattr__(self, "layer_names", tuple(self.layer_names))
        object.__setattr__(self, "anchor_labels", tuple(self.anchor_labels))
        if self.pair is not None:
            object.__setattr__(self, "pair", (int(self.pair[0]), int(self.pair[1])))

    @property
    def n_cells(self) -> int:
        """Number of cells."""
        return len(self.offsets) - 1

    @property
    def n_outputs(self) -> int:
        """Number of outputs (classes; 1 for a scalar output)."""
        return self.affine_c.shape[1]

    @property
    def site_layers(self) -> np.ndarray:
        """``(n_sites,)``: the kink layer of each pattern site."""
        return np.repeat(np.arange(len(self.layer_sites)), self.layer_sites)

    def site_values(self, cells: np.ndarray | slice | None = None) -> np.ndarray:
        """Unpacked patterns ``(n, n_sites)`` uint8: the sign bit or piece index of every site.

        Raises ``ValueError`` if the partition was computed without patterns.
        """
        rows = self.patterns[slice(None) if cells is None else cells]
        if rows.shape[1] == 0 and self.layer_sites.sum() > 0:
            raise ValueError("this region partition was computed without patterns (patterns=False)")
        columns, start = [], 0
        for sites, pieces in zip(self.layer_sites, self.layer_pieces):
            width = -(-int(sites) // 8) if pieces == 1 else int(sites)
            block = rows[:, start : start + width]
            columns.append(np.unpackbits(block, axis=1, count=int(sites)) if pieces == 1 else block)
            start += width
        return np.concatenate(columns, 1) if columns else np.zeros((len(rows), 0), dtype=np.uint8)

    def cell(self, index: int) -> dict:
        """Everything about one cell: ``vertices``, ``area``, ``pattern`` (unpacked, if stored),
        ``A``, ``c``, ``slope_norm``, ``predicted``, ``touches_boundary``."""
        if not -self.n_cells <= index < self.n_cells:
            raise IndexError(f"cell {index} of a partition with {self.n_cells} cells")
        index %= self.n_cells
        stored = self.patterns.shape[1] > 0 or self.layer_sites.sum() == 0
        return {
            "vertices": self.vertices[self.offsets[index] : self.offsets[index + 1]],
            "area": float(self.areas[index]),
            "pattern": self.site_values(slice(index, index + 1))[0] if stored else None,
            "A": self.affine_A[index],
            "c": self.affine_c[index],
            "slope_norm": float(self.slope_norm[index]),
            "predicted": int(self.predicted[index]),
            "touches_boundary": bool(self.touches_boundary[index]),
        }

    def local_complexity(self, radius: float) -> np.ndarray:
        """Per anchor: the number of cells that meet the disk of ``radius`` around it, per unit area.

        The count is divided by the disk's area ``π radius²`` (cells per unit of slice area).
        """
        if radius <= 0:
            raise ValueError(f"radius must be positive, got {radius}")
        counts = [
            np.count_nonzero(polygons.distances(anchor, self.vertices, self.offsets) <= radius)
            for anchor in self.anchors
        ]
        return np.asarray(counts, dtype=np.float64) / (np.pi * radius**2)

    def pair_tie(self, first: int, second: int) -> np.ndarray:
        """``(p, 2, 2)``: the segments where outputs ``first`` and ``second`` are equal."""
        return tie_segments(self.vertices, self.offsets, self.affine_A, self.affine_c, first, second)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays of the stored form."""
        return {name: np.asarray(getattr(self, name)) for name in _ARRAYS}

    def attributes(self) -> dict:
        """The JSON-able metadata of the stored form."""
        return json_safe(
            {
                "schema": SCHEMA,
                "layer_names": list(self.layer_names),
                "anchor_labels": list(self.anchor_labels),
                "pair": None if self.pair is None else list(self.pair),
                "parameters": self.parameters,
            }
        )

    def to_dict(self) -> dict:
        """``{"arrays": to_arrays(), "attributes": attributes()}``."""
        return {"arrays": self.to_arrays(), "attributes": self.attributes()}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], attributes: Mapping) -> RegionPartition:
        """Rebuild a partition from its stored form."""
        if attributes.get("schema") != SCHEMA:
            raise ValueError(
                f"not a linear regions record: schema {attributes.get('schema')!r}, expected {SCHEMA!r}"
            )
        missing = [name for name in _ARRAYS if name not in arrays]
        if missing:
            raise ValueError(f"linear regions record lacks arrays {missing}")
        pair = attributes.get("pair")
        return cls(
            **{name: np.asarray(arrays[name]) for name in _ARRAYS},
            layer_names=tuple(attributes["layer_names"]),
            anchor_labels=tuple(attributes["anchor_labels"]),
            pair=None if pair is None else tuple(pair),
            parameters=dict(attributes.get("parameters", {})),
        )

    @classmethod
    def from_dict(cls, stored: Mapping) -> RegionPartition:
        """Rebuild a partition from :meth:`to_dict`'s form."""
        return cls.from_arrays(stored["arrays"], stored["attributes"])


def output_pieces(affine_A: np.ndarray, affine_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The functions whose argmax is the prediction: the logits, or ``(0, f)`` for a scalar output ``f``."""
    if affine_c.shape[1] == 1:
        return np.concatenate([np.zeros_like(affine_A), affine_A], 1), np.concatenate(
            [np.zeros_like(affine_c), affine_c], 1
        )
    return affine_A, affine_c


def decision_boundary(
    vertices: np.ndarray, offsets: np.ndarray, affine_A: np.ndarray, affine_c: np.ndarray, rtol: float
) -> dict[str, np.ndarray]:
    """The argmax boundary of affine outputs on convex cells (a scalar output: its zero level set).

    Each cell where no class is the largest at every vertex is split into the regions where each
    class is the largest (:func:`~nsp_pipeline.interpret.polygons.argmax_split`). A region's edge is
    on the boundary when, at its midpoint, the runner-up ties the region's class within the
    tolerance (``rtol`` times the largest absolute output at the cell's vertices); each such edge
    is kept once, from the region of the lower class. Edges of whole cells count too, so a boundary
    that runs along a cell edge is found.

    Returns
    -------
    dict
        ``segments`` ``(m, 2, 2)``, ``classes`` ``(m, 2)``, ``cells`` ``(m,)``, ``predicted`` ``(n,)``
        and ``touches`` ``(n,)`` bool.
    """
    slopes, intercepts = output_pieces(affine_A, affine_c)
    centre = polygons.vertex_means(vertices, offsets)
    local = intercepts + np.einsum("nkd,nd->nk", slopes, centre)
    owner = polygons.owners(offsets)
    values = polygons.affine_values(vertices, owner, local, slopes, centre)
    scale = np.zeros(len(centre))
    np.maximum.at(scale, owner, np.abs(values).max(1))
    tol = rtol * scale
    top = values.max(1, keepdims=True)
    dominant = np.ones(local.shape, dtype=bool)
    np.logical_and.at(dominant, owner, values >= top - tol[owner, None])
    whole = dominant.any(1)
    split_vertices, split_offsets = polygons.take(vertices, offsets, ~whole)
    split = np.flatnonzero(~whole)
    pieces = polygons.argmax_split(
        split_vertices, split_offsets, local[split], slopes[split], centre[split], tol[split]
    )
    region_vertices = np.concatenate([polygons.take(vertices, offsets, whole)[0], pieces[0]])
    region_offsets = polygons.offsets_of(np.concatenate([np.diff(offsets)[whole], np.diff(pieces[1])]))
    region_cell = np.concatenate([np.flatnonzero(whole), split[pieces[2]]])
    region_label = np.concatenate([dominant[whole].argmax(1), pieces[3]])
    start, end, region = polygons.edges(region_vertices, region_offsets)
    cell = region_cell[region]
    label = region_label[region]
    middle = polygons.affine_values(0.5 * (start + end), cell, local, slopes, centre)
    own = middle[np.arange(len(middle)), label]
    middle[np.arange(len(middle)), label] = -np.inf
    partner = middle.argmax(1)
    tied = own - middle[np.arange(len(middle)), partner] <= tol[cell]
    touches = np.bincount(region_cell, minlength=len(centre)) > 1
    touches[cell[tied]] = True
    kept = tied & (label < partner)
    predicted = local.argmax(1)
    return {
        "segments": np.stack([start[kept], end[kept]], 1),
        "classes": np.stack([label[kept], partner[kept]], 1).astype(np.int64),
        "cells": cell[kept].astype(np.int64),
        "predicted": predicted.astype(np.int64),
        "touches": touches,
    }


def tie_segments(
    vertices: np.ndarray,
    offsets: np.ndarray,
    affine_A: np.ndarray,
    affine_c: np.ndarray,
    first: int,
    second: int,
) -> np.ndarray:
    """``(p, 2, 2)``: the zero line of ``f_first − f_second`` clipped to every cell."""
    n_outputs = affine_c.shape[1]
    for index in (first, second):
        if not 0 <= index < n_outputs:
            raise ValueError(f"class {index} is out of range for {n_outputs} outputs")
    if first == second:
        raise ValueError(f"a pair needs two different classes, got ({first}, {second})")
    owner = polygons.owners(offsets)
    slope = affine_A[:, first] - affine_A[:, second]
    offset = affine_c[:, first] - affine_c[:, second]
    values = offset[owner] + np.einsum("nd,nd->n", vertices, slope[owner])
    return polygons.segments(vertices, offsets, values)[0]
