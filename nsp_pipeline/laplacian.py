"""The graph Laplacian transform of a signal on the undirected neuron graph.

``L = D - W`` with ``W`` the 0/1 adjacency of the undirected graph and ``D`` its degrees.
With ``L = U diag(λ) Uᵀ`` (``λ`` ascending), the spectrum is ``ŝ = Uᵀ s`` and the inverse
``s = U ŝ``; coefficient ``k`` belongs to frequency ``λ_k``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from nsp_pipeline.graph import NeuronGraph
from nsp_pipeline.layout import Layout

log = logging.getLogger(__name__)

#: Default largest graph (in nodes) for the full eigendecomposition: U alone takes
#: 8·n² bytes (800 MB at 10,000 nodes) and ``eigh`` is O(n³).
DEFAULT_MAX_NODES = 10_000


class GraphTooLargeError(ValueError):
    """The requested dense computation does not fit the configured size limit."""


@dataclass(frozen=True)
class LaplacianOperator:
    """Eigendecomposition of the graph Laplacian.

    Parameters
    ----------
    layout : Layout
        Node order.
    eigenvalues : numpy.ndarray
        ``(n_nodes,)`` ascending eigenvalues (frequencies).
    eigenvectors : numpy.ndarray
        ``(n_nodes, n_nodes)`` orthonormal ``U``; column ``k`` belongs to ``eigenvalues[k]``.
    """

    layout: Layout
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray

    transform_type: ClassVar[str] = "laplacian"

    def forward(self, signal: np.ndarray) -> np.ndarray:
        """Spectrum ``ŝ = Uᵀ s`` of ``(n_samples, n_nodes)`` signals."""
        return np.atleast_2d(np.asarray(signal, dtype=np.float64)) @ self.eigenvectors

    def inverse(self, spectrum: np.ndarray) -> np.ndarray:
        """Signal ``s = U ŝ`` of ``(n_samples, n_nodes)`` spectra."""
        return np.atleast_2d(np.asarray(spectrum, dtype=np.float64)) @ self.eigenvectors.T


def laplacian_matrix(graph: NeuronGraph) -> sp.csr_array:
    """Sparse ``L = D - W`` of the undirected graph (unit edge weights)."""
    adjacency = graph.adjacency().astype(np.float64)
    undirected = ((adjacency + adjacency.T) > 0).astype(np.float64)
    degrees = np.asarray(undirected.sum(axis=1)).ravel()
    return (sp.diags_array(degrees) - undirected).tocsr()


def laplacian_operator(graph: NeuronGraph, max_nodes: int = DEFAULT_MAX_NODES) -> LaplacianOperator:
    """Full eigendecomposition of the graph Laplacian.

    Each eigenvector's sign is fixed so that its largest-magnitude entry is positive,
    which makes the result reproducible across runs.

    Parameters
    ----------
    graph : NeuronGraph
        The neuron graph.
    max_nodes : int
        Refuse graphs with more nodes than this (dense ``n × n`` memory, O(n³) time).

    Raises
    ------
    GraphTooLargeError
        If the graph has more than ``max_nodes`` nodes.
    """
    n = graph.n_nodes
    if n > max_nodes:
        gib = 2 * 8 * n * n / 2**30
        raise GraphTooLargeError(
            f"the Laplacian transform needs a dense eigendecomposition of a {n} x {n} matrix "
            f"(about {gib:.1f} GiB, O(n^3) time), above the limit of {max_nodes} nodes; "
            "raise max_nodes if the machine can take it, or use the 'standard' transform, "
            "which has no such limit"
        )
    log.info("eigendecomposition of the %d x %d graph Laplacian (O(n^3), may take minutes)", n, n)
    eigenvalues, eigenvectors = scipy.linalg.eigh(laplacian_matrix(graph).toarray())
    peak = np.argmax(np.abs(eigenvectors), axis=0)
    signs = np.sign(eigenvectors[peak, np.arange(n)])
    eigenvectors *= np.where(signs == 0, 1.0, signs)
    return LaplacianOperator(layout=graph.layout, eigenvalues=eigenvalues, eigenvectors=eigenvectors)
