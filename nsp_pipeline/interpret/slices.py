"""Two-dimensional slices of a network's input space (torch-free).

A :class:`Slice` is the plane ``x(t) = origin + t_0 · directions[0] + t_1 · directions[1]`` of
inputs, with a convex polygon of slice coordinates ``t`` (the *domain*) and optional box
constraints ``lo <= x(t) <= hi`` on the input (e.g. the valid pixel range), which cut the domain
down to its *region*. :meth:`Slice.through` makes the plane through three inputs, as SplineCam
does (Humayun et al., *SplineCam: Exact visualization and characterization of deep network
geometry and decision boundaries*, CVPR 2023).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nsp_pipeline.interpret import polygons

#: Box constraints: values within this fraction of the constraint's scale count as on its line.
_CONSTRAINT_TOL = 1e-12


@dataclass(frozen=True, eq=False)
class Slice:
    """A plane of inputs with a convex domain of slice coordinates.

    Parameters
    ----------
    origin : numpy.ndarray
        The input at ``t = 0`` (shape ``S``, the model's input shape).
    directions : numpy.ndarray
        ``(2, *S)``: the inputs' change per unit of ``t_0`` and ``t_1`` (linearly independent).
    domain : numpy.ndarray
        ``(k, 2)``: a convex polygon of slice coordinates (either orientation; stored
        counter-clockwise).
    anchors : numpy.ndarray, optional
        ``(n_anchors, 2)``: slice coordinates of marked inputs (e.g. the three data points).
    anchor_labels : sequence of str
        A name per anchor.
    lo, hi : float or numpy.ndarray, optional
        Box constraints on the input (scalars or arrays of shape ``S``).

    Attributes
    ----------
    region : numpy.ndarray
        ``(m, 2)``: the domain cut by the box constraints, counter-clockwise.
    """

    origin: np.ndarray
    directions: np.ndarray
    domain: np.ndarray
    anchors: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    anchor_labels: Sequence[str] = ()
    lo: float | np.ndarray | None = None
    hi: float | np.ndarray | None = None

    def __post_init__(self) -> None:
        origin = np.asarray(self.origin, dtype=np.float64)
        directions = np.asarray(self.directions, dtype=np.float64)
        if directions.shape != (2, *origin.shape):
            raise ValueError(
                f"slice directions have shape {directions.shape}; expected (2, *origin.shape) = "
                f"{(2, *origin.shape)}"
            )
        flat = directions.reshape(2, -1)
        if np.linalg.matrix_rank(flat) < 2:
            raise ValueError("slice directions are linearly dependent; expected two independent directions")
        domain = np.asarray(self.domain, dtype=np.float64)
        if domain.ndim != 2 or domain.shape[1] != 2 or len(domain) < 3:
            raise ValueError(f"slice domain has shape {domain.shape}; expected (k >= 3, 2) vertices")
        domain = _counter_clockwise(domain)
        anchors = np.asarray(self.anchors, dtype=np.float64).reshape(-1, 2)
        labels = tuple(str(label) for label in self.anchor_labels) or tuple(
            str(i) for i in range(len(anchors))
        )
        if len(labels) != len(anchors):
            raise ValueError(f"{len(labels)} anchor labels for {len(anchors)} anchors")
        for name, value in (("origin", origin), ("directions", directions), ("domain", domain)):
            if not np.all(np.isfinite(value)):
                raise ValueError(f"slice {name} has NaN or Inf values")
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "directions", directions)
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "anchors", anchors)
        object.__setattr__(self, "anchor_labels", labels)
        object.__setattr__(self, "region", self._constrained(domain))

    @classmethod
    def through(
        cls,
        points: np.ndarray,
        margin: float = 2.0,
        labels: Sequence[str] = (),
        lo: float | np.ndarray | None = None,
        hi: float | np.ndarray | None = None,
    ) -> Slice:
        """The plane through three inputs.

        The origin is the points' mean; the directions are the Gram–Schmidt orthonormal basis of
        ``points[1] − points[0]`` and ``points[2] − points[0]``; the domain is the square centred
        on the origin whose half-side is ``margin`` times the *spread* of the points (their
        largest distance from the origin).

        Parameters
        ----------
        points : numpy.ndarray
            ``(3, *S)``: three inputs, not on one line.
        margin : float
            Half-side of the domain over the points' spread (2: the square reaches twice as far as
            the farthest point).
        labels : sequence of str
            A name per point (default ``0``, ``1``, ``2``).
        lo, hi : float or numpy.ndarray, optional
            Box constraints on the input.
        """
        points = np.asarray(points, dtype=np.float64)
        if len(points) != 3:
            raise ValueError(f"a slice through points needs 3 points, got {len(points)}")
        if margin <= 0:
            raise ValueError(f"margin must be positive, got {margin}")
        origin = points.mean(0)
        flat = points.reshape(3, -1)
        first = flat[1] - flat[0]
        second = flat[2] - flat[0]
        if np.linalg.norm(first) == 0:
            raise ValueError("the first two points are equal; a slice needs three points not on one line")
        first = first / np.linalg.norm(first)
        second = second - (second @ first) * first
        if np.linalg.norm(second) <= 1e-12 * np.linalg.norm(flat[2] - flat[0]):
            raise ValueError("the three points lie on one line; a slice needs three points not on one line")
        second = second / np.linalg.norm(second)
        basis = np.stack([first, second])
        anchors = (flat - origin.reshape(-1)) @ basis.T
        half = margin * np.max(np.hypot(*anchors.T))
        domain = half * np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
        return cls(origin, basis.reshape(2, *origin.shape), domain, anchors, labels, lo, hi)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input."""
        return self.origin.shape

    def points(self, t: np.ndarray) -> np.ndarray:
        """The inputs ``(n, *S)`` at slice coordinates ``t`` ``(n, 2)``."""
        t = np.asarray(t, dtype=np.float64).reshape(-1, 2)
        flat = self.origin.reshape(-1) + t @ self.directions.reshape(2, -1)
        return flat.reshape(len(t), *self.origin.shape)

    def coordinates(self, inputs: np.ndarray) -> np.ndarray:
        """Slice coordinates ``(n, 2)`` of the inputs' orthogonal projections onto the plane."""
        flat = np.asarray(inputs, dtype=np.float64).reshape(-1, self.origin.size) - self.origin.reshape(-1)
        basis = self.directions.reshape(2, -1)
        return np.linalg.solve(basis @ basis.T, basis @ flat.T).T

    def _constrained(self, domain: np.ndarray) -> np.ndarray:
        """The domain cut by ``lo <= x(t) <= hi``, one half-plane per element and bound."""
        if self.lo is None and self.hi is None:
            return domain
        flat = self.directions.reshape(2, -1)
        origin = self.origin.reshape(-1)
        rows = []  # half-planes a · t + b >= 0
        for bound, sign in ((self.lo, 1.0), (self.hi, -1.0)):
            if bound is not None:
                bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), self.origin.shape).reshape(-1)
                rows.append(np.concatenate([sign * flat.T, sign * (origin - bound)[:, None]], 1))
        planes = np.concatenate(rows)
        scale = np.abs(planes[:, :2]).sum(1) * np.abs(domain).max() + np.abs(planes[:, 2])
        values = domain @ planes[:, :2].T + planes[:, 2]
        violated = np.flatnonzero((values < -_CONSTRAINT_TOL * scale).any(0))
        vertices, offsets = domain, np.array([0, len(domain)])
        for plane in violated:
            values = vertices @ planes[plane, :2] + planes[plane, 2]
            vertices, offsets = polygons.clip(vertices, offsets, values, _CONSTRAINT_TOL * scale[plane])
            if offsets[-1] == 0:
                raise ValueError(
                    "the slice's box constraints leave nothing of its domain: no point of the domain "
                    f"keeps input element {plane % self.origin.size} within [lo, hi]"
                )
        return vertices


def _counter_clockwise(polygon: np.ndarray) -> np.ndarray:
    """The convex polygon counter-clockwise; ``ValueError`` if it is not convex or has no area."""
    offsets = np.array([0, len(polygon)])
    area = polygons.areas(polygon, offsets)[0]
    if area == 0:
        raise ValueError("slice domain has zero area")
    polygon = polygon if area > 0 else polygon[::-1].copy()
    edge = np.roll(polygon, -1, 0) - polygon
    turn = edge[:, 0] * np.roll(edge, -1, 0)[:, 1] - edge[:, 1] * np.roll(edge, -1, 0)[:, 0]
    if np.any(turn < -1e-12 * np.abs(area)):
        raise ValueError("slice domain is not convex; expected a convex polygon")
    return polygon
