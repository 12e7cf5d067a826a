"""The graph Laplacian transform of a signal on the undirected neuron graph.

``L = D - W`` with ``W`` the 0/1 adjacency of the undirected graph and ``D`` its degrees.
With ``L = U diag(λ) Uᵀ`` (``λ`` ascending), the spectrum is ``ŝ = Uᵀ s`` and the inverse
``s = U ŝ``; coefficient ``i`` belongs to frequency ``λ_i``.

Partial spectra
---------------
A dense eigendecomposition is O(n³) (minutes at 10,000 nodes, impossible at 50,000).
``laplacian_operator(graph, k=...)`` computes only the ``k`` lowest-frequency eigenpairs
``U_k`` (``n × k``) with a sparse solver, and the operator is *partial*:

* :meth:`LaplacianOperator.coefficients` gives the ``k`` coefficients ``ŝ_k = U_kᵀ s``;
* :meth:`LaplacianOperator.forward` keeps the package's one-value-per-node convention: a
  ``(n_samples, n_nodes)`` array with ``ŝ_k`` in the first ``k`` positions and NaN (not
  computed) in the other ``n - k``, exactly where the full spectrum has them;
* :meth:`LaplacianOperator.residual_energy` is the energy of the missing coefficients,
  ``‖s‖² - ‖ŝ_k‖²`` by Parseval (:meth:`~LaplacianOperator.captured_energy` is ``‖ŝ_k‖²``);
* :meth:`LaplacianOperator.inverse` gives ``U_k ŝ_k``: the least-squares reconstruction of
  the signal from its ``k`` coefficients (its orthogonal projection onto the ``k`` lowest
  frequencies), not the signal itself.

For a full operator (``k = n``) all of this reduces to the exact transform.

Graph Laplacians of networks have eigenvalues of high multiplicity: permuting the channels
of a convolution (and of the layers that follow it channel by channel) maps the graph onto
itself, so the eigenvalues of channel-difference modes repeat ``C - 1`` times or more (the
9,594-node MNIST tutorial network has one of multiplicity 304 between positions 44 and 347).
When such an eigenvalue straddles position ``k``, ``U_k`` holds an arbitrary orthonormal
basis of part of its eigenspace: the eigenvalues are unique, the eigenvectors are not. A
full decomposition has the same freedom inside each eigenspace.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as sla

from nsp_pipeline.core.defaults import default
from nsp_pipeline.core.layout import Layout
from nsp_pipeline.core.progress import progress_bar
from nsp_pipeline.graph.neuron_graph import NeuronGraph

log = logging.getLogger(__name__)

#: Default largest graph (in nodes) for the full eigendecomposition, the configuration's
#: ``laplacian.max_nodes``: U alone takes 8·n² bytes (800 MB at 10,000 nodes) and ``eigh`` is O(n³).
DEFAULT_MAX_NODES = default("laplacian.max_nodes")

#: Default largest ``n · k`` of a partial decomposition: ``U_k`` takes 8·n·k bytes (2 GB at
#: this limit), and the solver holds a few times as much while it runs.
DEFAULT_MAX_DENSE_ENTRIES = 250_000_000

#: Rounds of deflated Lanczos runs after which the partial solver gives up.
_MAX_ROUNDS = 50

#: Eigenpairs asked of each deflated run.
_DEFLATED_REQUEST = 16


class GraphTooLargeError(ValueError):
    """The requested dense computation does not fit the configured size limit."""


@dataclass(frozen=True)
class LaplacianOperator:
    """Eigendecomposition of the graph Laplacian, full or partial.

    Parameters
    ----------
    layout : Layout
        Node order.
    eigenvalues : numpy.ndarray
        ``(k,)`` ascending eigenvalues (frequencies); ``k = n_nodes`` for a full operator.
    eigenvectors : numpy.ndarray
        ``(n_nodes, k)`` orthonormal columns ``U_k``; column ``i`` belongs to ``eigenvalues[i]``.
        ``k < n_nodes`` makes a partial operator: the ``k`` lowest frequencies only.
    """

    layout: Layout
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray

    transform_type: ClassVar[str] = "laplacian"

    def __post_init__(self) -> None:
        n = self.layout.n_nodes
        k = np.shape(self.eigenvalues)[0] if np.ndim(self.eigenvalues) == 1 else -1
        if k < 1 or k > n or np.shape(self.eigenvectors) != (n, k):
            raise ValueError(
                f"a Laplacian operator on {n} nodes needs eigenvalues of shape (k,) and eigenvectors "
                f"of shape ({n}, k) with 1 <= k <= {n}; got {np.shape(self.eigenvalues)} and "
                f"{np.shape(self.eigenvectors)}"
            )

    @property
    def n_nodes(self) -> int:
        """Number of nodes of the graph."""
        return self.layout.n_nodes

    @property
    def k(self) -> int:
        """Number of eigenpairs (coefficients) the operator holds."""
        return self.eigenvectors.shape[1]

    @property
    def is_partial(self) -> bool:
        """``True`` if only the ``k < n_nodes`` lowest frequencies were computed."""
        return self.k < self.n_nodes

    def coefficients(self, signal: np.ndarray) -> np.ndarray:
        """The ``k`` computed coefficients ``ŝ_k = U_kᵀ s`` of ``(n_samples, n_nodes)`` signals.

        Returns
        -------
        numpy.ndarray
            ``(n_samples, k)``; for a full operator the same as :meth:`forward`.
        """
        return np.atleast_2d(np.asarray(signal, dtype=np.float64)) @ self.eigenvectors

    def forward(self, signal: np.ndarray) -> np.ndarray:
        """Spectrum ``ŝ = Uᵀ s`` of ``(n_samples, n_nodes)`` signals, one value per node.

        For a partial operator, positions ``k`` to ``n_nodes - 1`` (frequencies that were
        not computed) are NaN; :meth:`residual_energy` gives their total energy.
        """
        spectrum = self.coefficients(signal)
        if not self.is_partial:
            return spectrum
        padded = np.full((spectrum.shape[0], self.n_nodes), np.nan)
        padded[:, : self.k] = spectrum
        return padded

    def inverse(self, spectrum: np.ndarray) -> np.ndarray:
        """Signal ``s = U ŝ`` of ``(n_samples, n_nodes)`` spectra.

        For a partial operator, ``spectrum`` is either what :meth:`forward` returns (only
        its first ``k`` columns are read; the NaN tail is ignored) or the ``(n_samples, k)``
        of :meth:`coefficients`. The result ``U_k ŝ_k`` is the least-squares reconstruction
        of the signal from its ``k`` lowest-frequency coefficients (the orthogonal projection
        of the signal onto them): it misses exactly :meth:`residual_energy`.
        """
        spectrum = np.atleast_2d(np.asarray(spectrum, dtype=np.float64))
        if self.is_partial:
            if spectrum.shape[-1] not in (self.k, self.n_nodes):
                raise ValueError(
                    f"a partial spectrum has {self.n_nodes} (padded) or {self.k} columns, "
                    f"got {spectrum.shape[-1]}"
                )
            spectrum = spectrum[..., : self.k]
        return spectrum @ self.eigenvectors.T

    def captured_energy(self, signal: np.ndarray) -> np.ndarray:
        """``‖ŝ_k‖²`` per sample: the energy of the computed coefficients, ``(n_samples,)``."""
        coefficients = self.coefficients(signal)
        return np.einsum("bi,bi->b", coefficients, coefficients)

    def residual_energy(self, signal: np.ndarray) -> np.ndarray:
        """``‖s‖² - ‖ŝ_k‖²`` per sample: the energy of the missing coefficients, ``(n_samples,)``.

        By Parseval this is the squared distance of ``s`` to :meth:`inverse` of its
        spectrum, and it is computed that way (no cancellation, never negative). It is zero
        for a full operator.
        """
        signal = np.atleast_2d(np.asarray(signal, dtype=np.float64))
        if not self.is_partial:
            return np.zeros(signal.shape[0])
        residual = signal - self.coefficients(signal) @ self.eigenvectors.T
        return np.einsum("bi,bi->b", residual, residual)


def laplacian_matrix(graph: NeuronGraph) -> sp.csr_array:
    """Sparse ``L = D - W`` of the undirected graph (unit edge weights)."""
    adjacency = graph.adjacency().astype(np.float64)
    undirected = ((adjacency + adjacency.T) > 0).astype(np.float64)
    degrees = np.asarray(undirected.sum(axis=1)).ravel()
    return (sp.diags_array(degrees) - undirected).tocsr()


def laplacian_operator(
    graph: NeuronGraph,
    max_nodes: int = DEFAULT_MAX_NODES,
    k: int | None = default("laplacian.k"),
    max_dense_entries: int = DEFAULT_MAX_DENSE_ENTRIES,
) -> LaplacianOperator:
    """Eigendecomposition of the graph Laplacian: full, or the ``k`` lowest frequencies.

    Each eigenvector's sign is fixed so that its largest-magnitude entry is positive,
    which makes the result reproducible across runs. Eigenvalues are ascending.

    Parameters
    ----------
    graph : NeuronGraph
        The neuron graph.
    max_nodes : int
        Full decomposition only: refuse graphs with more nodes than this (dense ``n × n``
        memory, O(n³) time).
    k : int, optional
        ``None`` (the default, the configuration's ``laplacian.k``): the full dense
        decomposition. An int ``1 <= k < n_nodes``: the
        ``k`` lowest-frequency eigenpairs by a sparse solver that never forms an ``n × n``
        matrix (see :func:`partial_eigenpairs`), giving a partial operator.
    max_dense_entries : int
        Partial decomposition only: refuse ``n_nodes · k`` above this (``U_k`` takes
        ``8 · n_nodes · k`` bytes).

    Raises
    ------
    GraphTooLargeError
        If the graph has more than ``max_nodes`` nodes (full), or ``n_nodes · k`` exceeds
        ``max_dense_entries`` (partial).
    ValueError
        If ``k`` is not an integer in ``1 .. n_nodes - 1``.
    """
    n = graph.n_nodes
    if k is not None:
        return _partial_operator(graph, k, max_dense_entries)
    if n > max_nodes:
        gib = 2 * 8 * n * n / 2**30
        raise GraphTooLargeError(
            f"the Laplacian transform needs a dense eigendecomposition of a {n} x {n} matrix "
            f"(about {gib:.1f} GiB, O(n^3) time), above the limit of {max_nodes} nodes; "
            "raise max_nodes if the machine can take it, compute only the k lowest frequencies "
            "(k=...), or use the 'standard' transform, which has no such limit"
        )
    log.info("eigendecomposition of the %d x %d graph Laplacian (O(n^3), may take minutes)", n, n)
    eigenvalues, eigenvectors = dense_eigh(laplacian_matrix(graph))
    return LaplacianOperator(layout=graph.layout, eigenvalues=eigenvalues, eigenvectors=eigenvectors)


def dense_eigh(laplacian: sp.sparray) -> tuple[np.ndarray, np.ndarray]:
    """All eigenpairs of a graph Laplacian by dense divide and conquer (LAPACK ``syevd``).

    Graph Laplacians of networks have eigenvalues of multiplicity in the thousands, where
    the MRRR driver (``syevr``, SciPy's default) runs several times slower than divide and
    conquer and QR (``syev``) slower still, for the same accuracy
    (``benchmarks/laplacian_driver_benchmark.py``); ``syevd`` is also what ``numpy.linalg.eigh``
    and the predecessor nsp use. The dense matrix is overwritten by ``U``, so the peak memory
    is ``3n²`` floats, the workspace of ``syevd`` being ``2n²`` (``syevr`` needs ``2n²`` in
    all, ``numpy.linalg.eigh`` ``5n²``). The result is deterministic (the same bytes on
    reruns with the same LAPACK and thread count), and each eigenvector's sign is fixed so
    that its largest-magnitude entry is positive.

    Parameters
    ----------
    laplacian : scipy.sparse array
        Symmetric ``(n, n)`` matrix.

    Returns
    -------
    eigenvalues : numpy.ndarray
        ``(n,)`` ascending.
    eigenvectors : numpy.ndarray
        ``(n, n)`` orthonormal columns, column ``i`` for ``eigenvalues[i]``.

    References
    ----------
    J. J. M. Cuppen, "A divide and conquer method for the symmetric tridiagonal eigenproblem",
    Numer. Math. 36 (1981); M. Gu and S. C. Eisenstat, SIAM J. Matrix Anal. Appl. 16 (1995).
    """
    # Fortran order (L is symmetric), so that LAPACK works on this array without a copy.
    dense = sp.csr_array(laplacian, dtype=np.float64).toarray(order="F")
    eigenvalues, eigenvectors = scipy.linalg.eigh(dense, driver="evd", overwrite_a=True, check_finite=False)
    _fix_signs(eigenvectors)
    return eigenvalues, eigenvectors


def _partial_operator(graph: NeuronGraph, k: int, max_dense_entries: int) -> LaplacianOperator:
    n = graph.n_nodes
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be an integer number of eigenpairs or None, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1 (the number of lowest frequencies to compute), got {k}")
    if k >= n:
        raise ValueError(
            f"k={k} asks for all {n} eigenpairs of a {n}-node graph (a partial spectrum needs "
            f"k < {n}); use the full decomposition (k=None) instead"
        )
    if n * k > max_dense_entries:
        raise GraphTooLargeError(
            f"the {k} lowest Laplacian eigenvectors of a {n}-node graph take {n} x {k} = {n * k:,} "
            f"float64 values ({8 * n * k / 2**30:.1f} GiB, a few times that while solving), above "
            f"the limit of {max_dense_entries:,}; lower k, or raise max_dense_entries if the "
            "machine can take it"
        )
    log.info("%d lowest eigenpairs of the %d-node graph Laplacian (sparse shift-invert Lanczos)", k, n)
    eigenvalues, eigenvectors = partial_eigenpairs(laplacian_matrix(graph), k)
    _fix_signs(eigenvectors)
    return LaplacianOperator(layout=graph.layout, eigenvalues=eigenvalues, eigenvectors=eigenvectors)


def partial_eigenpairs(laplacian: sp.sparray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` lowest eigenpairs of a graph Laplacian, without dense ``n × n`` matrices.

    Shift-invert Lanczos (ARPACK's ``eigsh``) with the sparse LU factorization of
    ``L - σI``, ``σ = -10⁻³ · max degree`` (``L`` is positive semi-definite and singular, so
    ``L - σI`` is positive definite and the lowest eigenvalues become the largest of
    ``(L - σI)⁻¹``). One Lanczos run finds every distinct eigenvalue but, in floating point,
    only some copies of a repeated one, and graph Laplacians of networks have eigenvalues of
    multiplicity in the hundreds. So it runs again on the complement of what it has found
    (deflation), from a new random start, merging by Rayleigh–Ritz, until a run finds
    nothing below the current ``k``-th eigenvalue: the lowest eigenvalue of ``L`` on that
    complement is an extreme one, which Lanczos finds reliably, so this also verifies that
    no eigenvalue was missed. Missing copies of eigenvalues within ``10⁻⁹`` (relative) of the
    ``k``-th are not searched for, as they are interchangeable with it.

    Parameters
    ----------
    laplacian : scipy.sparse array
        Symmetric positive semi-definite ``(n, n)`` matrix (a graph Laplacian).
    k : int
        Number of eigenpairs, ``1 <= k < n``.
    seed : int
        Seed of the random start vectors (the result is deterministic).

    Returns
    -------
    eigenvalues : numpy.ndarray
        ``(k,)`` ascending.
    eigenvectors : numpy.ndarray
        ``(n, k)`` orthonormal columns, in no particular sign convention.

    Raises
    ------
    RuntimeError
        If the solver does not converge.
    """
    n = laplacian.shape[0]
    laplacian = sp.csr_array(laplacian, dtype=np.float64)
    if not 1 <= k < n:
        raise ValueError(f"k must be in 1 .. {n - 1}, got {k}")
    max_degree = max(float(laplacian.diagonal().max()), 1.0)
    sigma = -1e-3 * max_degree
    shifted = sp.csc_array(laplacian - sigma * sp.eye_array(n, format="csr"))
    # L - σI is symmetric positive definite: a symmetric ordering and diagonal pivots are
    # stable and keep the fill-in several times lower than the default COLAMD ordering.
    factor = sla.splu(
        shifted, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True}
    )
    log.info("sparse LU of L - σI: %d nonzeros (L has %d)", factor.L.nnz + factor.U.nnz, laplacian.nnz)
    rng = np.random.default_rng(seed)
    basis, values = np.empty((n, 0)), np.empty(0)
    extra = min(k, _DEFLATED_REQUEST)
    with progress_bar(k, "Lanczos rounds", unit="eigenpair") as bar:
        for round_ in range(_MAX_ROUNDS):
            bar.set_postfix_str(f"round {round_}")
            found = basis.shape[1]
            request = k if round_ == 0 else min(k, max(extra, k - found))
            new_values, new_vectors = _deflated_lowest(laplacian, factor, sigma, basis, request, rng)
            complete = found >= k and (
                len(new_values) == 0
                or new_values.min() >= values[k - 1] - 1e-9 * max(1.0, abs(values[k - 1]))
            )
            if complete:
                break
            log.info(
                "Lanczos round %d: %d eigenpairs, %d below the current k-th eigenvalue",
                round_,
                len(new_values),
                int(np.sum(new_values < values[k - 1])) if found >= k else len(new_values),
            )
            values, basis = _rayleigh_ritz(laplacian, np.hstack([basis, new_vectors]), k)
            bar.update(basis.shape[1] - bar.n)
        else:
            raise RuntimeError(f"the partial Laplacian eigensolver did not settle in {_MAX_ROUNDS} rounds")
    residual = np.linalg.norm(laplacian @ basis - basis * values, axis=0).max()
    if not residual <= 1e-6 * max_degree:  # ‖L‖ <= 2 · max degree
        raise RuntimeError(f"the partial Laplacian eigensolver did not converge (residual {residual:.2e})")
    return values, basis


def _deflated_lowest(
    laplacian: sp.csr_array,
    factor: sla.SuperLU,
    sigma: float,
    basis: np.ndarray,
    request: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Lowest ``request`` eigenpairs of ``L`` on the orthogonal complement of ``basis``."""
    n, found = basis.shape
    remaining = n - found

    def project(x: np.ndarray) -> np.ndarray:
        return x - basis @ (basis.T @ x) if found else x

    if 2 * request + 1 >= remaining:
        # Little is left: Rayleigh–Ritz on the whole complement, with an explicit basis.
        complement, _ = np.linalg.qr(project(project(rng.standard_normal((n, remaining)))))
        return _rayleigh_ritz(laplacian, complement, request)

    def solve(x: np.ndarray) -> np.ndarray:
        return project(factor.solve(project(x)))

    operator = sla.LinearOperator((n, n), matvec=solve, dtype=np.float64)
    start = project(rng.standard_normal(n))
    try:
        values, vectors = sla.eigsh(laplacian, k=request, sigma=sigma, which="LM", OPinv=operator, v0=start)
    except sla.ArpackNoConvergence as error:  # keep what converged; the next round goes on
        values, vectors = error.eigenvalues, error.eigenvectors
    order = np.argsort(values)
    return values[order], project(vectors[:, order])


def _rayleigh_ritz(laplacian: sp.csr_array, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` lowest Ritz pairs of ``L`` on the span of ``vectors``."""
    basis, _ = np.linalg.qr(vectors)
    projected = basis.T @ (laplacian @ basis)
    values, rotation = scipy.linalg.eigh((projected + projected.T) / 2)
    return values[:k], basis @ rotation[:, :k]


def _fix_signs(eigenvectors: np.ndarray) -> None:
    """Make each column's largest-magnitude entry positive (in place)."""
    peak = np.argmax(np.abs(eigenvectors), axis=0)
    signs = np.sign(eigenvectors[peak, np.arange(eigenvectors.shape[1])])
    eigenvectors *= np.where(signs == 0, 1.0, signs)
