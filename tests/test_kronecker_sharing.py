"""Shared per-axis maps and remembered operations give the relations of dense boolean products."""

import numpy as np
import scipy.sparse as sp

from nsp_pipeline.graph.kronecker import AxisMap, Relation, Term


def random_map(rng, shape, density=0.4):
    return (rng.random(shape) < density).astype(float)


def pairs_map(dense):
    target, source = np.nonzero(dense)
    return AxisMap.from_pairs(target, source, dense.shape)


def test_equal_maps_are_one_object():
    rng = np.random.default_rng(0)
    dense = random_map(rng, (6, 5))
    first, second = pairs_map(dense), pairs_map(dense.copy())
    assert first is second
    assert AxisMap.identity(7) is AxisMap.identity(7)
    assert AxisMap.ones(3, 4) is AxisMap.ones(3, 4)


def test_remembered_operations_match_dense_booleans():
    """Each operation asked twice, in both orders, over maps shared by several products."""
    rng = np.random.default_rng(1)
    denses = [random_map(rng, (5, 5)) for _ in range(4)] + [np.ones((5, 5)), np.eye(5), np.zeros((5, 5))]
    maps = [pairs_map(dense) for dense in denses[:-1]] + [AxisMap(sp.csr_array(denses[-1]))]
    for _ in range(2):
        for left, dense_left in zip(maps, denses):
            for right, dense_right in zip(maps, denses):
                composed = left.compose(right).sparse().toarray() > 0
                np.testing.assert_array_equal(composed, (dense_left @ dense_right) > 0)
                common = left.intersect(right).sparse().toarray() > 0
                np.testing.assert_array_equal(common, (dense_left * dense_right) > 0)
                assert left.contains(right) == bool(np.all(dense_left >= dense_right))
                assert left.nnz == int(dense_left.sum())


def test_identity_composition_is_a_new_relation():
    rng = np.random.default_rng(2)
    grid = (3, 4, 4)
    terms = [Term(*(pairs_map(random_map(rng, (size, size), 0.6)) for size in grid)) for _ in range(2)]
    inner = Relation(terms)
    before = inner.dense().copy()
    through = Relation([Term.identity(grid)]).compose(inner)
    assert through is not inner
    np.testing.assert_array_equal(through.dense(), before)
    through.union(Relation([Term(*(AxisMap.ones(size, size) for size in grid))]))
    np.testing.assert_array_equal(inner.dense(), before)
    assert through.dense().all()
