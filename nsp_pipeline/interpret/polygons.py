"""Vectorised geometry of many convex polygons at once (float64, torch-free).

A set of ``n`` polygons is *ragged*: ``vertices`` ``(n_vertices, 2)`` lists the vertices of every
polygon one after another, counter-clockwise, and ``offsets`` ``(n + 1,)`` (int64, ``offsets[0] =
0``) says where each polygon starts, so polygon ``i`` is ``vertices[offsets[i]:offsets[i + 1]]``.
Every function works on all polygons at once with numpy, without a Python loop over polygons.

Cutting a convex polygon with a line needs only the values of an affine function at its vertices:
the function is linear along each edge, so where it changes sign the zero lies at the linear
interpolation of the two end values (Sutherland–Hodgman clipping, see Sutherland & Hodgman,
*Reentrant polygon clipping*, CACM 17(1), 1974, restricted to one convex polygon and one
half-plane at a time).

Tolerance: a vertex whose value lies within ``tol`` of zero counts as *on* the line; it is kept by
both sides and no edge is cut there, so a line through a vertex or along an edge cuts nothing off.
"""

from __future__ import annotations

import numpy as np

#: A piece is dropped as a sliver when its area is at most this fraction of the area of the polygon
#: it was cut from (a linear size of about 1e-9 of the polygon's: only numerically degenerate
#: pieces, e.g. where three cutting lines meet in one point).
SLIVER_AREA = 1e-18


def owners(offsets: np.ndarray) -> np.ndarray:
    """The polygon of each vertex."""
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def following(offsets: np.ndarray) -> np.ndarray:
    """The index of each vertex's successor in its polygon (the last vertex is followed by the first)."""
    following = np.arange(1, offsets[-1] + 1)
    ends = offsets[1:][np.diff(offsets) > 0]
    following[ends - 1] = offsets[:-1][np.diff(offsets) > 0]
    return following


def ragged_range(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + c) for s, c in zip(starts, counts)])``, without the loop."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    group_starts = np.cumsum(counts) - counts
    steps = np.ones(total, dtype=np.int64)
    nonempty = counts > 0
    starts = np.asarray(starts, dtype=np.int64)[nonempty]
    previous_ends = np.concatenate([[0], (starts + counts[nonempty] - 1)[:-1]])
    steps[group_starts[nonempty]] = starts - previous_ends
    steps[0] = starts[0]
    return np.cumsum(steps)


def offsets_of(counts: np.ndarray) -> np.ndarray:
    """Offsets of polygons with ``counts`` vertices."""
    return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])


def take(vertices: np.ndarray, offsets: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The polygons ``which`` (indices or a boolean mask), in that order."""
    which = np.flatnonzero(which) if np.asarray(which).dtype == bool else np.asarray(which, dtype=np.int64)
    counts = np.diff(offsets)[which]
    return vertices[ragged_range(offsets[:-1][which], counts)], offsets_of(counts)


def areas(vertices: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Signed areas by the shoelace formula, in each polygon's own frame (its first vertex at 0).

    Counter-clockwise polygons have positive area; an empty polygon has area 0.
    """
    owner = owners(offsets)
    local = vertices - vertices[offsets[:-1][owner]] if len(vertices) else vertices
    after = local[following(offsets)]
    cross = local[:, 0] * after[:, 1] - after[:, 0] * local[:, 1]
    return 0.5 * np.bincount(owner, weights=cross, minlength=len(offsets) - 1)


def centroids(vertices: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Area centroids ``(n, 2)`` (NaN for polygons of zero area)."""
    owner = owners(offsets)
    first = vertices[offsets[:-1][owner]]
    local = vertices - first
    after = local[following(offsets)]
    cross = local[:, 0] * after[:, 1] - after[:, 0] * local[:, 1]
    n = len(offsets) - 1
    area = 0.5 * np.bincount(owner, weights=cross, minlength=n)
    sums = np.stack(
        [np.bincount(owner, weights=(local[:, k] + after[:, k]) * cross, minlength=n) for k in range(2)], 1
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return vertices[offsets[:-1]] + sums / (6.0 * area[:, None])


def vertex_means(vertices: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The mean of each polygon's vertices ``(n, 2)``: strictly inside a convex polygon of nonzero area."""
    owner = owners(offsets)
    counts = np.diff(offsets)
    sums = np.stack([np.bincount(owner, weights=vertices[:, k], minlength=len(counts)) for k in range(2)], 1)
    return sums / counts[:, None]


def clip(
    vertices: np.ndarray, offsets: np.ndarray, values: np.ndarray, tol: float | np.ndarray = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Clip every convex polygon to the half-plane where an affine function is ``>= 0``.

    Parameters
    ----------
    vertices, offsets : numpy.ndarray
        The polygons (ragged, see the module docstring).
    values : numpy.ndarray
        ``(n_vertices,)``: the affine function of each polygon at its vertices (each polygon may
        have its own function).
    tol : float or numpy.ndarray
        Values within ``tol`` of zero count as zero (scalar, or one per polygon).

    Returns
    -------
    vertices, offsets : numpy.ndarray
        The clipped polygons, one per input polygon, counter-clockwise; a polygon left with fewer
        than three vertices (nothing, a point or a segment) is empty.
    """
    n = len(offsets) - 1
    owner = owners(offsets)
    after = following(offsets)
    tol = np.asarray(tol, dtype=np.float64)
    tol = tol[owner] if tol.ndim else tol
    side = np.where(values > tol, 1, np.where(values < -tol, -1, 0)).astype(np.int8)
    keep = side >= 0
    cross = side * side[after] < 0
    emit = keep.astype(np.int64) + cross
    counts = np.bincount(owner, weights=emit, minlength=n).astype(np.int64)
    counts[counts < 3] = 0
    alive = counts[owner] > 0
    keep &= alive
    cross &= alive
    emit = keep.astype(np.int64) + cross
    position = np.cumsum(emit) - emit
    clipped = np.empty((int(counts.sum()), 2))
    clipped[position[keep]] = vertices[keep]
    start, end = vertices[cross], vertices[after[cross]]
    value_start, value_end = values[cross], values[after[cross]]
    fraction = value_start / (value_start - value_end)
    clipped[position[cross] + keep[cross]] = start + fraction[:, None] * (end - start)
    return clipped, offsets_of(counts)


def segments(
    vertices: np.ndarray, offsets: np.ndarray, values: np.ndarray, tol: float | np.ndarray = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Where the zero line of an affine function crosses each convex polygon.

    A polygon yields a segment when the function takes both signs (beyond ``tol``) at its
    vertices; the segment's ends are its zeros on the polygon's boundary: vertices within ``tol``
    of zero, and the interpolated zeros of edges whose ends have opposite signs.

    Returns
    -------
    ends : numpy.ndarray
        ``(n_segments, 2, 2)``: per segment its two end points.
    polygon : numpy.ndarray
        ``(n_segments,)``: the polygon each segment lies in.
    """
    n = len(offsets) - 1
    owner = owners(offsets)
    after = following(offsets)
    tol = np.asarray(tol, dtype=np.float64)
    side = np.sign(values) * (np.abs(values) > (tol[owner] if tol.ndim else tol))
    positive = np.bincount(owner, weights=side > 0, minlength=n) > 0
    negative = np.bincount(owner, weights=side < 0, minlength=n) > 0
    crossed = (positive & negative)[owner]
    on_vertex = crossed & (side == 0)
    on_edge = crossed & (side * side[after] < 0)
    # Candidate ends in boundary order: a vertex on the line, then the zero of the edge after it.
    order = np.concatenate([2 * np.flatnonzero(on_vertex), 2 * np.flatnonzero(on_edge) + 1]).argsort()
    start, end = vertices[on_edge], vertices[after[on_edge]]
    fraction = values[on_edge] / (values[on_edge] - values[after[on_edge]])
    points = np.concatenate([vertices[on_vertex], start + fraction[:, None] * (end - start)])[order]
    point_owner = np.concatenate([owner[on_vertex], owner[on_edge]])[order]
    polygon, first, count = np.unique(point_owner, return_index=True, return_counts=True)
    return np.stack([points[first], points[first + count - 1]], 1), polygon


def affine_values(
    vertices: np.ndarray,
    owner: np.ndarray,
    intercepts: np.ndarray,
    slopes: np.ndarray,
    origins: np.ndarray,
) -> np.ndarray:
    """Values at ``vertices`` of affine functions ``h + g · (t − o)`` (one per row of the coefficients).

    Parameters
    ----------
    vertices : numpy.ndarray
        ``(m, 2)`` points.
    owner : numpy.ndarray
        ``(m,)``: the row of the coefficients of each point.
    intercepts : numpy.ndarray
        ``(r, w)``: ``h`` of ``w`` functions per row.
    slopes : numpy.ndarray
        ``(r, w, 2)``: ``g``.
    origins : numpy.ndarray
        ``(r, 2)``: ``o``, the point where each row's functions take the value ``h``.

    Returns
    -------
    numpy.ndarray
        ``(m, w)``.
    """
    local = vertices - origins[owner]
    slope = slopes[owner]
    return intercepts[owner] + local[:, None, 0] * slope[:, :, 0] + local[:, None, 1] * slope[:, :, 1]


def argmax_split(
    vertices: np.ndarray,
    offsets: np.ndarray,
    intercepts: np.ndarray,
    slopes: np.ndarray,
    origins: np.ndarray,
    tol: np.ndarray,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split every convex polygon into the regions where each of its affine functions is the largest.

    Polygon ``p`` has ``w`` affine functions ``z_i(t) = h_i + g_i · (t − o_p)``; its piece ``i``
    is ``{t in p : z_i(t) >= z_l(t) for all l}``, the polygon clipped by ``w − 1`` half-planes. Two
    functions that agree within ``tol`` at every vertex are the same function on the polygon; only
    the one of lower index has a piece (ties go to the lower index, as ``argmax`` does). Pieces
    are convex, tile the polygon, and no edge between two pieces separates equal functions.

    Parameters
    ----------
    vertices, offsets : numpy.ndarray
        The polygons.
    intercepts, slopes, origins : numpy.ndarray
        ``(n, w)``, ``(n, w, 2)``, ``(n, 2)``: the functions (see :func:`affine_values`).
    tol : numpy.ndarray
        ``(n,)``: differences within ``tol`` of zero count as zero.
    valid : numpy.ndarray, optional
        ``(n, w)`` bool: functions that take part (default all; e.g. not the padding of a window).

    Returns
    -------
    vertices, offsets : numpy.ndarray
        The nonempty pieces (slivers dropped, see :data:`SLIVER_AREA`), ordered by polygon, then
        function.
    polygon : numpy.ndarray
        ``(n_pieces,)``: the polygon each piece was cut from.
    label : numpy.ndarray
        ``(n_pieces,)``: the function that is largest on it.
    """
    n, width = intercepts.shape
    valid = np.ones((n, width), dtype=bool) if valid is None else valid
    owner = owners(offsets)
    values = affine_values(vertices, owner, np.where(valid, intercepts, 0.0), slopes, origins)
    difference = values[:, :, None] - values[:, None, :]
    largest = np.full((n, width, width), -np.inf)
    smallest = np.full((n, width, width), np.inf)
    np.maximum.at(largest, owner, difference)
    np.minimum.at(smallest, owner, difference)
    scale = tol[:, None, None]
    pair_valid = valid[:, :, None] & valid[:, None, :]
    same = (largest <= scale) & (smallest >= -scale) & pair_valid
    # A function takes part if it is valid, no function of lower index equals it, and none
    # exceeds it at every vertex (its half-plane would miss the polygon).
    lower = np.tril(np.ones((width, width), dtype=bool), -1)
    duplicate = (same & lower[None]).any(2)
    beaten = ((largest < -scale) & pair_valid).any(2)
    candidate = valid & ~duplicate & ~beaten
    rows, labels = np.nonzero(candidate)
    piece_vertices, piece_offsets = take(vertices, offsets, rows)
    piece_owner = owners(piece_offsets)
    for other in range(width):
        # Half-plane z_label − z_other >= 0; no cut where other is label, equal to it, or absent.
        cuts = (labels != other) & valid[rows, other] & ~same[rows, labels, other]
        if not cuts.any():
            continue
        r = rows[piece_owner]
        local = piece_vertices - origins[r]
        lab = labels[piece_owner]
        gap = slopes[r, lab] - slopes[r, other]
        cut_values = (
            intercepts[r, lab] - intercepts[r, other] + local[:, 0] * gap[:, 0] + local[:, 1] * gap[:, 1]
        )
        cut_values = np.where(cuts[piece_owner], cut_values, 1.0)
        piece_vertices, piece_offsets = clip(piece_vertices, piece_offsets, cut_values, tol[rows])
        piece_owner = owners(piece_offsets)
    whole = areas(vertices, offsets)
    kept = areas(piece_vertices, piece_offsets) > SLIVER_AREA * whole[rows]
    piece_vertices, piece_offsets = take(piece_vertices, piece_offsets, kept)
    return piece_vertices, piece_offsets, rows[kept], labels[kept]


def edges(vertices: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every edge: start points ``(m, 2)``, end points ``(m, 2)`` and the polygon of each."""
    return vertices, vertices[following(offsets)], owners(offsets)


def distances(point: np.ndarray, vertices: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Euclidean distance from ``point`` to each convex polygon (0 inside)."""
    start, end, owner = edges(vertices, offsets)
    direction = end - start
    length2 = np.einsum("ij,ij->i", direction, direction)
    with np.errstate(invalid="ignore", divide="ignore"):
        along = np.clip(np.einsum("ij,ij->i", point - start, direction) / length2, 0.0, 1.0)
    along = np.nan_to_num(along)
    nearest = start + along[:, None] * direction
    gap = np.hypot(*(point - nearest).T)
    n = len(offsets) - 1
    distance = np.full(n, np.inf)
    np.minimum.at(distance, owner, gap)
    outside = direction[:, 0] * (point[1] - start[:, 1]) - direction[:, 1] * (point[0] - start[:, 0]) < 0
    inside = np.bincount(owner, weights=outside, minlength=n) == 0
    distance[inside] = 0.0
    return distance
