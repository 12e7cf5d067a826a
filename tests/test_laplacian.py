"""The Laplacian transform: L = D - W from the edge list, eigenpairs, Parseval, round trips."""

import numpy as np
import pytest
import torch

from nsp_pipeline.graph_builder import build_graph
from nsp_pipeline.laplacian import GraphTooLargeError, laplacian_matrix, laplacian_operator


def dense_laplacian(graph) -> np.ndarray:
    """Oracle: L = D - W of the undirected graph, built from the edge list by hand."""
    n = graph.n_nodes
    w = np.zeros((n, n))
    for v in range(n):
        for u in graph.parents(v):
            w[u, v] = w[v, u] = 1.0
    return np.diag(w.sum(axis=1)) - w


@pytest.fixture
def graph(small_resnet):
    return build_graph(small_resnet, torch.randn(1, 1, 8, 8), "ops")


def test_laplacian_matrix(graph):
    np.testing.assert_array_equal(laplacian_matrix(graph).toarray(), dense_laplacian(graph))


def test_eigendecomposition_and_parseval(graph):
    operator = laplacian_operator(graph)
    lap = dense_laplacian(graph)
    u, lam = operator.eigenvectors, operator.eigenvalues
    assert np.all(np.diff(lam) >= 0)
    assert abs(lam[0]) < 1e-9  # the constant vector on a connected graph
    np.testing.assert_allclose(lap @ u, u * lam, atol=1e-9)
    np.testing.assert_allclose(u.T @ u, np.eye(graph.n_nodes), atol=1e-10)

    signals = np.random.default_rng(0).normal(size=(4, graph.n_nodes))
    spectrum = operator.forward(signals)
    np.testing.assert_allclose(np.linalg.norm(spectrum, axis=1), np.linalg.norm(signals, axis=1), rtol=1e-12)
    np.testing.assert_allclose(operator.inverse(spectrum), signals, atol=1e-12)
    # Quadratic form: sᵀ L s equals the eigenvalue-weighted spectral energy.
    np.testing.assert_allclose(
        np.einsum("bi,ij,bj->b", signals, lap, signals), (spectrum**2) @ lam, rtol=1e-10
    )


def test_signs_are_fixed(graph):
    u = laplacian_operator(graph).eigenvectors
    peak = np.abs(u).argmax(axis=0)
    assert np.all(u[peak, np.arange(u.shape[1])] > 0)


def test_refuses_large_graphs(graph):
    with pytest.raises(GraphTooLargeError, match=r"1125 x 1125.*limit of 100 nodes.*'standard'"):
        laplacian_operator(graph, max_nodes=100)
