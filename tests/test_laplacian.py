"""The Laplacian transform: L = D - W from the edge list, eigenpairs, Parseval, round trips.

Partial spectra (the k lowest frequencies) are checked against the full decomposition. Graph
Laplacians of networks have eigenvalues of high multiplicity, and U_k is unique only up to
rotations inside each eigenspace, so eigenvectors are compared through projectors and
per-eigenspace energies, with k at an eigenvalue gap.
"""

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp
import torch

from nsp_pipeline.graph.build import build_graph
from nsp_pipeline.model.architectures import DigitsCNN
from nsp_pipeline.transforms.laplacian import (
    GraphTooLargeError,
    LaplacianOperator,
    laplacian_matrix,
    laplacian_operator,
    partial_eigenpairs,
)


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


# --- Partial spectra: the k lowest frequencies by the sparse solver -------------------------------


def gap_position(eigenvalues: np.ndarray, start: int) -> int:
    """First k >= start where eigenvalue k-1 and k differ: no eigenspace is split at k."""
    return start + int(np.argmax(np.diff(eigenvalues[start - 1 :]) > 1e-6))


def eigenspace_energies(eigenvalues: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """Energy of each sample in each eigenspace (groups of equal eigenvalues), ``(n, groups)``."""
    groups = np.concatenate([[0], np.cumsum(np.diff(eigenvalues) > 1e-6)])
    return np.stack([(coefficients[:, groups == g] ** 2).sum(axis=1) for g in range(groups[-1] + 1)], 1)


@pytest.fixture(scope="module")
def digits_graph():
    """DigitsCNN's graph (1,866 nodes): the eigenvalue 0.9625 has multiplicity 60 (positions 9-68)."""
    torch.manual_seed(0)
    return build_graph(DigitsCNN(), torch.randn(1, 1, 8, 8))


@pytest.fixture(scope="module")
def digits_full(digits_graph):
    return laplacian_operator(digits_graph)


def test_partial_equals_lowest_of_full(digits_graph, digits_full):
    lam = digits_full.eigenvalues
    # k at an eigenvalue gap beyond the 60-fold eigenvalue: U_k is unique up to rotations
    # inside each eigenspace, so its projector and the energy per eigenspace are comparable.
    k = gap_position(lam, 60)
    assert np.max(np.unique(np.round(lam[:k], 6), return_counts=True)[1]) >= 60
    partial = laplacian_operator(digits_graph, k=k)
    assert partial.is_partial and not digits_full.is_partial
    assert (partial.k, partial.eigenvectors.shape) == (k, (digits_graph.n_nodes, k))
    np.testing.assert_allclose(partial.eigenvalues, lam[:k], atol=1e-8, rtol=0)
    u_full, u_k = digits_full.eigenvectors[:, :k], partial.eigenvectors
    np.testing.assert_allclose(u_k @ u_k.T, u_full @ u_full.T, atol=1e-8)
    signals = np.random.default_rng(1).normal(size=(5, digits_graph.n_nodes))
    np.testing.assert_allclose(
        eigenspace_energies(lam[:k], partial.coefficients(signals)),
        eigenspace_energies(lam[:k], signals @ u_full),
        atol=1e-9,
    )


@pytest.mark.parametrize("k", [1, 7, 40])
def test_partial_eigenpairs(digits_graph, digits_full, k):
    """Any k, even one that splits the 60-fold eigenspace (positions 9-68; then U_k is one of many)."""
    partial = laplacian_operator(digits_graph, k=k)
    lap, u, lam = dense_laplacian(digits_graph), partial.eigenvectors, partial.eigenvalues
    assert np.all(np.diff(lam) >= 0)
    np.testing.assert_allclose(lam, digits_full.eigenvalues[:k], atol=1e-8, rtol=0)
    np.testing.assert_allclose(lap @ u, u * lam, atol=1e-9)
    np.testing.assert_allclose(u.T @ u, np.eye(k), atol=1e-10)
    peak = np.abs(u).argmax(axis=0)
    assert np.all(u[peak, np.arange(k)] > 0)


def test_partial_eigenpairs_are_reproducible(graph):
    first, second = laplacian_operator(graph, k=12), laplacian_operator(graph, k=12)
    np.testing.assert_array_equal(first.eigenvalues, second.eigenvalues)
    np.testing.assert_array_equal(first.eigenvectors, second.eigenvectors)


@pytest.mark.parametrize("copies, start", [(12, 20), (24, 50)])
def test_partial_finds_every_copy_of_repeated_eigenvalues(seed_net, seed_image, copies, start):
    """Disjoint copies of a graph: every eigenvalue repeats ``copies`` times, 0 included.

    A single Lanczos run finds one copy of each in exact arithmetic (and, here, misses some
    in floating point); the deflated reruns must find the rest.
    """
    base = laplacian_matrix(build_graph(seed_net, seed_image))
    lap = sp.block_diag([base] * copies, format="csr")
    expected = np.sort(np.repeat(scipy.linalg.eigvalsh(base.toarray()), copies))
    k = gap_position(expected, start)
    values, vectors = partial_eigenpairs(lap, k)
    np.testing.assert_allclose(values, expected[:k], atol=1e-8, rtol=0)
    assert np.sum(np.abs(values) < 1e-9) == copies  # one constant vector per component
    np.testing.assert_allclose(lap @ vectors, vectors * values, atol=1e-9)
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(k), atol=1e-10)


def test_partial_spectrum_representation(digits_graph):
    k, n = 30, digits_graph.n_nodes
    operator = laplacian_operator(digits_graph, k=k)
    signals = np.random.default_rng(2).normal(size=(3, n))
    coefficients = operator.coefficients(signals)
    spectrum = operator.forward(signals)
    assert coefficients.shape == (3, k) and spectrum.shape == (3, n)
    np.testing.assert_array_equal(spectrum[:, :k], coefficients)
    assert np.isnan(spectrum[:, k:]).all()

    energy = np.sum(signals**2, axis=1)
    residual, captured = operator.residual_energy(signals), operator.captured_energy(signals)
    assert residual.shape == (3,) and np.all(residual >= 0)
    np.testing.assert_allclose(residual, energy - np.sum(coefficients**2, axis=1), atol=1e-10 * energy.max())
    np.testing.assert_allclose(captured + residual, energy, rtol=1e-12)

    # The inverse is the least-squares reconstruction U_k ŝ_k: the projection onto span U_k.
    rebuilt = operator.inverse(spectrum)
    np.testing.assert_array_equal(rebuilt, operator.inverse(coefficients))
    u = operator.eigenvectors
    np.testing.assert_allclose(rebuilt, signals @ u @ u.T, atol=1e-12)
    np.testing.assert_allclose(np.sum((signals - rebuilt) ** 2, axis=1), residual, rtol=1e-10)
    np.testing.assert_allclose((signals - rebuilt) @ u, 0, atol=1e-10)
    # A signal made of the k lowest frequencies round-trips exactly and leaves no residual.
    low_pass = np.random.default_rng(3).normal(size=(2, k)) @ u.T
    np.testing.assert_allclose(operator.inverse(operator.forward(low_pass)), low_pass, atol=1e-12)
    np.testing.assert_allclose(operator.residual_energy(low_pass), 0, atol=1e-20 + 1e-12 * low_pass.size)
    with pytest.raises(ValueError, match="1866 \\(padded\\) or 30 columns"):
        operator.inverse(np.zeros((1, 31)))


def test_full_operator_is_not_partial(digits_graph, digits_full):
    operator = digits_full
    signals = np.random.default_rng(4).normal(size=(2, digits_graph.n_nodes))
    assert operator.k == digits_graph.n_nodes and not operator.is_partial
    np.testing.assert_array_equal(operator.residual_energy(signals), np.zeros(2))
    np.testing.assert_array_equal(operator.forward(signals), signals @ operator.eigenvectors)
    np.testing.assert_array_equal(operator.coefficients(signals), operator.forward(signals))
    np.testing.assert_allclose(operator.captured_energy(signals), np.sum(signals**2, axis=1), rtol=1e-12)


def test_full_decomposition_is_exact_and_reproducible(digits_graph, digits_full, tmp_path):
    lap = laplacian_matrix(digits_graph)
    u, lam = digits_full.eigenvectors, digits_full.eigenvalues
    assert np.abs(lap @ u - u * lam).max() <= 1e-10
    assert np.abs(u.T @ u - np.eye(digits_graph.n_nodes)).max() <= 1e-10
    np.testing.assert_allclose(lam, np.linalg.eigvalsh(dense_laplacian(digits_graph)), atol=1e-10)

    # The same bytes in fresh processes (and in this one), eigenspaces of multiplicity 60 included.
    path = tmp_path / "laplacian.npz"
    sp.save_npz(path, sp.csr_matrix(lap))
    script = (
        "import hashlib, sys, scipy.sparse as sp\n"
        "from nsp_pipeline.transforms.laplacian import dense_eigh\n"
        "lam, u = dense_eigh(sp.load_npz(sys.argv[1]))\n"
        "print(hashlib.sha256(lam.tobytes() + u.tobytes()).hexdigest())\n"
    )
    digests = [
        subprocess.run(
            [sys.executable, "-c", script, str(path)], check=True, capture_output=True, text=True
        ).stdout.strip()
        for _ in range(2)
    ]
    assert digests[0] == digests[1] == hashlib.sha256(lam.tobytes() + u.tobytes()).hexdigest()


@pytest.mark.parametrize(
    "k, message",
    [
        (0, "k must be at least 1"),
        (-2, "k must be at least 1"),
        (1125, r"k=1125 asks for all 1125 eigenpairs.*use the full decomposition \(k=None\)"),
        (2000, r"k=2000 asks for all 1125 eigenpairs"),
        (2.5, "k must be an integer"),
        (True, "k must be an integer"),
    ],
)
def test_partial_refuses_bad_k(graph, k, message):
    with pytest.raises(ValueError, match=message):
        laplacian_operator(graph, k=k)


def test_partial_size_limits(graph):
    with pytest.raises(GraphTooLargeError, match=r"1125 x 10 = 11,250.*limit of 1,000; lower k"):
        laplacian_operator(graph, k=10, max_dense_entries=1000)
    # max_nodes bounds the full decomposition only.
    assert laplacian_operator(graph, k=np.int64(3), max_nodes=100).k == 3


def test_operator_checks_shapes(graph):
    n = graph.n_nodes
    with pytest.raises(ValueError, match="eigenvectors of shape"):
        LaplacianOperator(graph.layout, np.zeros(3), np.zeros((n, 4)))
    with pytest.raises(ValueError, match="1 <= k <= 1125"):
        LaplacianOperator(graph.layout, np.zeros(0), np.zeros((n, 0)))
