"""Brute-force references the transforms are checked against (dense, for small networks only)."""

import numpy as np


def dense_zeta(graph) -> np.ndarray:
    """Reflexive transitive closure by OR-ing dense parent rows in node order."""
    n = graph.n_nodes
    zeta = np.eye(n, dtype=bool)
    for v in range(n):
        for u in graph.parents(v):
            zeta[v] |= zeta[u]
    return zeta


def assert_close_to_scale(got, expected, zeta, rtol=1e-9):
    """|got - expected| <= rtol * (Z |expected|) at every node (the node's own scale)."""
    scale = np.abs(expected) @ zeta.T.astype(float)
    assert np.all(np.abs(got - expected) <= rtol * scale + 1e-300), np.max(np.abs(got - expected) / scale)
