"""Ragged convex-polygon geometry and slices, against shapely and closed forms."""

from itertools import pairwise

import numpy as np
import pytest
import shapely
from scipy.spatial import ConvexHull

from nsp_pipeline.interpret import polygons
from nsp_pipeline.interpret.slices import Slice


def random_polygons(rng, n, scale=1.0):
    """``n`` random convex polygons (hulls of random points), counter-clockwise, as ragged arrays."""
    parts = []
    for _ in range(n):
        points = rng.normal(size=(int(rng.integers(3, 12)), 2)) * scale + rng.normal(size=2) * 3
        parts.append(points[ConvexHull(points).vertices])  # scipy: counter-clockwise in 2-D
    return np.concatenate(parts), polygons.offsets_of([len(p) for p in parts])


def as_shapely(vertices, offsets):
    return [shapely.Polygon(vertices[a:b]) for a, b in pairwise(offsets)]


def test_ragged_range_is_the_concatenated_ranges():
    starts, counts = np.array([5, 0, 9, 2]), np.array([3, 0, 2, 1])
    expected = np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)])
    np.testing.assert_array_equal(polygons.ragged_range(starts, counts), expected)


def test_areas_and_centroids_match_shapely():
    vertices, offsets = random_polygons(np.random.default_rng(0), 40)
    shapes = as_shapely(vertices, offsets)
    np.testing.assert_allclose(polygons.areas(vertices, offsets), [s.area for s in shapes], rtol=1e-12)
    np.testing.assert_allclose(
        polygons.centroids(vertices, offsets), [s.centroid.coords[0] for s in shapes], rtol=1e-10, atol=1e-12
    )
    means = polygons.vertex_means(vertices, offsets)
    assert all(shape.contains(shapely.Point(*m)) for shape, m in zip(shapes, means))


def test_clip_equals_shapely_intersection_with_the_half_plane():
    rng = np.random.default_rng(1)
    vertices, offsets = random_polygons(rng, 60)
    normals = rng.normal(size=(60, 2))
    levels = rng.normal(size=60) * 3
    owner = polygons.owners(offsets)
    values = np.einsum("ij,ij->i", vertices, normals[owner]) - levels[owner]
    clipped_vertices, clipped_offsets = polygons.clip(vertices, offsets, values)
    assert len(clipped_offsets) == 61
    for i, shape in enumerate(as_shapely(vertices, offsets)):
        # The half-plane n · t >= level as a big polygon.
        normal, level = normals[i], levels[i]
        foot = normal * level / (normal @ normal)
        along = np.array([-normal[1], normal[0]]) * 1e3
        half_plane = shapely.Polygon(
            [foot - along, foot + along, foot + along + normal * 1e3, foot - along + normal * 1e3]
        )
        expected = shape.intersection(half_plane)
        part = clipped_vertices[clipped_offsets[i] : clipped_offsets[i + 1]]
        if expected.area < 1e-12:
            assert len(part) == 0
            continue
        got = shapely.Polygon(part)
        assert got.symmetric_difference(expected).area < 1e-9 * shape.area
        assert polygons.areas(part, np.array([0, len(part)]))[0] > 0  # still counter-clockwise


def test_a_line_through_a_vertex_or_along_an_edge_cuts_nothing_off():
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    offsets = np.array([0, 4])
    along_edge = square[:, 0]  # t_x >= 0: the edge x = 0 lies on the line
    kept, _ = polygons.clip(square, offsets, along_edge)
    np.testing.assert_array_equal(kept, square)
    diagonal = square[:, 0] - square[:, 1]  # through two vertices
    half, half_offsets = polygons.clip(square, offsets, diagonal)
    assert len(half) == 3 and polygons.areas(half, half_offsets)[0] == pytest.approx(0.5)


def test_segments_match_shapely_line_intersection():
    rng = np.random.default_rng(2)
    vertices, offsets = random_polygons(rng, 50)
    normal, level = np.array([0.3, -1.1]), 0.4
    values = vertices @ normal - level
    ends, which = polygons.segments(vertices, offsets, values)
    direction = np.array([-normal[1], normal[0]]) * 1e3
    foot = normal * level / (normal @ normal)
    line = shapely.LineString([foot - direction, foot + direction])
    expected = {i: shape.intersection(line) for i, shape in enumerate(as_shapely(vertices, offsets))}
    crossing = [i for i, part in expected.items() if part.length > 0]
    assert list(which) == crossing
    for (a, b), i in zip(ends, which):
        assert abs(np.hypot(*(b - a)) - expected[i].length) < 1e-9
        assert shapely.LineString([a, b]).hausdorff_distance(expected[i]) < 1e-9


def test_argmax_split_tiles_and_labels_each_piece_by_its_largest_function():
    rng = np.random.default_rng(3)
    vertices, offsets = random_polygons(rng, 30)
    n, width = 30, 5
    intercepts, slopes = rng.normal(size=(n, width)), rng.normal(size=(n, width, 2))
    origins = polygons.vertex_means(vertices, offsets)
    intercepts[:, 3] = intercepts[:, 1]  # function 3 equals function 1: it never has a piece
    slopes[:, 3] = slopes[:, 1]
    valid = np.ones((n, width), dtype=bool)
    valid[:, 4] = False
    pieces, piece_offsets, polygon, label = polygons.argmax_split(
        vertices, offsets, intercepts, slopes, origins, np.full(n, 1e-12), valid
    )
    assert not np.isin(label, [3, 4]).any()
    totals = np.bincount(polygon, weights=polygons.areas(pieces, piece_offsets), minlength=n)
    np.testing.assert_allclose(totals, polygons.areas(vertices, offsets), rtol=1e-12)
    # Oracle: the largest of the functions, evaluated directly at random points inside each piece.
    for i in range(len(label)):
        corner = pieces[piece_offsets[i] : piece_offsets[i + 1]]
        weights = rng.dirichlet(np.ones(len(corner)), size=20)
        points = weights @ corner
        p = polygon[i]
        values = intercepts[p] + (points - origins[p]) @ slopes[p].T
        values[:, 4] = -np.inf
        assert np.all(values.argmax(1) == label[i])
    # No two pieces of one polygon share a label (no over-splitting).
    assert len(set(zip(polygon, label))) == len(label)


def test_distances_match_shapely():
    vertices, offsets = random_polygons(np.random.default_rng(4), 25)
    point = np.array([0.5, -0.2])
    expected = [shape.distance(shapely.Point(point)) for shape in as_shapely(vertices, offsets)]
    np.testing.assert_allclose(polygons.distances(point, vertices, offsets), expected, atol=1e-12)


def test_slice_through_three_points_puts_them_at_their_anchors():
    rng = np.random.default_rng(5)
    points = rng.normal(size=(3, 2, 4, 4))
    plane = Slice.through(points, margin=2.0, labels=["a", "b", "c"])
    basis = plane.directions.reshape(2, -1)
    np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(plane.points(plane.anchors), points, atol=1e-12)
    np.testing.assert_allclose(plane.coordinates(points), plane.anchors, atol=1e-12)
    spread = np.max(np.hypot(*plane.anchors.T))
    np.testing.assert_allclose(np.abs(plane.region).max(0), [2 * spread, 2 * spread])
    assert plane.anchor_labels == ("a", "b", "c")
    with pytest.raises(ValueError, match="one line"):
        Slice.through(np.stack([points[0], points[1], 2 * points[1] - points[0]]))


def test_box_constraints_cut_the_domain_to_the_points_whose_inputs_are_in_range():
    rng = np.random.default_rng(6)
    points = rng.uniform(0.2, 0.8, size=(3, 6))
    plane = Slice.through(points, margin=3.0, lo=0.0, hi=1.0)
    region = shapely.Polygon(plane.region)
    domain = shapely.Polygon(plane.domain)
    assert region.area < domain.area
    grid = rng.uniform(plane.domain.min(0), plane.domain.max(0), size=(4000, 2))
    inputs = plane.points(grid)
    valid = np.all((inputs >= 0) & (inputs <= 1), axis=1)
    inside = shapely.contains_xy(region, grid[:, 0], grid[:, 1])
    near = shapely.distance(region.boundary, shapely.points(grid)) < 1e-9
    np.testing.assert_array_equal(valid[~near], inside[~near])
