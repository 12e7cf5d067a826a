"""The causal ("standard") Fourier transform on a neuron DAG.

With ``Z`` the 0/1 reflexive transitive closure of the DAG (``Z[v, u] = 1`` iff ``u == v``
or ``u`` is an ancestor of ``v``), a signal ``s`` and its spectrum ``ŝ`` satisfy
``s = Z ŝ``: every activation is the sum of the spectrum over itself and its ancestors
(Seifert, Wendler, Püschel, *Causal Fourier analysis on DAGs and posets*). The spectrum
``ŝ = Z⁻¹ s`` is Möbius inversion.

``Z`` is never formed densely. The strict ancestor sets are built sparsely, layer by layer
in topological order, and neurons with identical parent sets (e.g. all outputs of a
``Linear`` layer) share one stored row. Since no neuron depends on another of its own layer,
``Z`` is block lower triangular with identity diagonal blocks, so ``Z⁻¹ s`` is one sparse
product per layer, for a whole batch at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from nsp_pipeline.core.layout import Layout
from nsp_pipeline.graph.neuron_graph import NeuronGraph
from nsp_pipeline.transforms.causal.precision import conditioning_table, estimated_digits, precision_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CausalOperator:
    """Strict ancestor sets of every node, the precomputed operator of the causal transform.

    Node ``v``'s strict ancestors are row ``row_map[v]`` of the CSR matrix
    ``(indptr, indices)``; rows are grouped by layer, layer ``l`` owning rows
    ``layer_rows[l]:layer_rows[l + 1]``.

    Parameters
    ----------
    layout : Layout
        Node order.
    indptr, indices : numpy.ndarray
        CSR structure of the distinct ancestor sets (column ids are node ids).
    row_map : numpy.ndarray
        ``(n_nodes,)`` row of each node.
    layer_rows : numpy.ndarray
        ``(n_layers + 1,)`` first row of each layer.
    """

    layout: Layout
    indptr: np.ndarray
    indices: np.ndarray
    row_map: np.ndarray
    layer_rows: np.ndarray

    transform_type: ClassVar[str] = "standard"

    @property
    def n_closure_entries(self) -> int:
        """Number of (node, strict ancestor) pairs, i.e. ``nnz(Z) - n_nodes``."""
        lengths = np.diff(self.indptr)
        return int(lengths[self.row_map].sum())

    def _rows(self, first: int, stop: int, n_columns: int) -> sp.csr_array:
        indptr = self.indptr[first : stop + 1] - self.indptr[first]
        indices = self.indices[self.indptr[first] : self.indptr[stop]]
        data = np.ones(len(indices))
        return sp.csr_array((data, indices, indptr), shape=(stop - first, n_columns))

    def forward(self, signal: np.ndarray) -> np.ndarray:
        """Spectrum ``ŝ = Z⁻¹ s`` of ``(n_samples, n_nodes)`` signals."""
        signal = _as_batch(signal, self.layout.n_nodes)
        spectrum = np.zeros((self.layout.n_nodes, len(signal)))  # node-major, filled layer by layer
        for layer in range(len(self.layout)):
            nodes = self.layout.slice(layer)
            first, stop = int(self.layer_rows[layer]), int(self.layer_rows[layer + 1])
            # Ancestors of this layer's nodes all lie in earlier layers, already solved.
            ancestor_sums = self._rows(first, stop, nodes.start) @ spectrum[: nodes.start]
            spectrum[nodes] = signal[:, nodes].T - ancestor_sums[self.row_map[nodes] - first]
        return spectrum.T

    def inverse(self, spectrum: np.ndarray) -> np.ndarray:
        """Signal ``s = Z ŝ`` of ``(n_samples, n_nodes)`` spectra."""
        spectrum = _as_batch(spectrum, self.layout.n_nodes)
        n = self.layout.n_nodes
        ancestor_sums = self._rows(0, len(self.indptr) - 1, n) @ np.ascontiguousarray(spectrum.T)
        return spectrum + ancestor_sums[self.row_map].T

    def rounding_scale(self, signal: np.ndarray, spectrum: np.ndarray) -> np.ndarray:
        """Magnitude of the terms summed for each coefficient, ``Z|ŝ|`` (its rounding error over ε)."""
        return self.inverse(np.abs(spectrum))

    def spectrum_with_precision(self, signal: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Spectrum and its per-layer precision (as :func:`.precision.precision_table`)."""
        return self.spectrum_with_estimates(signal)[:3]

    def spectrum_with_estimates(self, signal: np.ndarray) -> tuple[np.ndarray, ...]:
        """Spectrum, its round-trip precision and the estimated correct digits of its coefficients.

        As :meth:`.factorized.FactorizedCausalOperator.spectrum_with_estimates`.
        """
        signal = _as_batch(signal, self.layout.n_nodes)
        spectrum = self.forward(signal)
        scale = self.rounding_scale(signal, spectrum)
        digits, below_noise = precision_table(self.layout, signal, spectrum, scale)
        conditioning = conditioning_table(self.layout, spectrum, scale)
        return spectrum, digits, below_noise, estimated_digits(conditioning, self.error_structure())

    def error_structure(self) -> list[tuple[list[int], int] | None]:
        """How rounding errors reach each layer (:func:`.precision.estimated_digits`).

        Every ancestor sum is formed from the spectrum: each layer but the input inherits from all
        earlier layers and adds its longest row of ancestors.
        """
        lengths = np.diff(self.indptr)
        structure: list[tuple[list[int], int] | None] = [None]
        for layer in range(1, len(self.layout)):
            rows = lengths[self.layer_rows[layer] : self.layer_rows[layer + 1]]
            structure.append((list(range(layer)), int(rows.max(initial=0))))
        return structure

    def zeta(self) -> sp.csr_array:
        """The reflexive closure ``Z`` as a sparse matrix (for inspection of small graphs)."""
        lengths = np.diff(self.indptr)[self.row_map]
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        rows = [self.indices[self.indptr[r] : self.indptr[r + 1]] for r in self.row_map]
        indices = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        strict = sp.csr_array((np.ones(len(indices)), indices, indptr), shape=(self.layout.n_nodes,) * 2)
        return (strict + sp.eye_array(self.layout.n_nodes, format="csr")).tocsr()


def _as_batch(values: np.ndarray, n_nodes: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[None, :]
    if values.ndim != 2 or values.shape[1] != n_nodes:
        raise ValueError(f"expected values of shape (n_samples, {n_nodes}), got {values.shape}")
    return values


def causal_operator(graph: NeuronGraph) -> CausalOperator:
    """Compute the strict ancestor sets of every node of ``graph``, sparsely.

    Layer by layer in topological order: the ancestors of ``v`` are its parents and their
    ancestors. Nodes of one layer with identical parent sets share one row.

    Parameters
    ----------
    graph : NeuronGraph
        The DAG.

    Returns
    -------
    CausalOperator
    """
    layout: Layout = graph.layout
    n = layout.n_nodes
    row_map = np.empty(n, dtype=np.int64)
    blocks: list[sp.csr_array] = []
    layer_rows = [0]
    stored = sp.csr_array((0, n), dtype=np.int8)  # all rows computed so far
    for layer in range(len(layout)):
        nodes = layout.slice(layer)
        parents = graph.layer_block(layer)
        first_of_group, group = _group_identical_rows(parents)
        row_map[nodes] = layer_rows[-1] + group
        distinct = parents[first_of_group]
        if distinct.nnz:
            # Columns of `distinct` are earlier nodes; map each to its stored ancestor row.
            via_rows = sp.csr_array(
                (distinct.data.astype(np.int64), row_map[distinct.indices], distinct.indptr),
                shape=(distinct.shape[0], stored.shape[0]),
            )
            ancestors = distinct.astype(np.int64) + via_rows @ stored.astype(np.int64)
            block = _binary(ancestors)
        else:
            block = sp.csr_array((distinct.shape[0], n), dtype=np.int8)
        blocks.append(block)
        stored = sp.vstack([stored, block], format="csr", dtype=np.int8)
        layer_rows.append(layer_rows[-1] + block.shape[0])
        log.info(
            "closure of layer %d/%d %r: %d distinct ancestor sets, %d entries",
            layer, len(layout) - 1, layout.layers[layer].name, block.shape[0], block.nnz,
        )  # fmt: skip
    stored.sort_indices()
    return CausalOperator(
        layout=layout,
        indptr=stored.indptr.astype(np.int64),
        indices=stored.indices.astype(np.int64),
        row_map=row_map,
        layer_rows=np.asarray(layer_rows, dtype=np.int64),
    )


def _binary(matrix: sp.csr_array) -> sp.csr_array:
    matrix = matrix.tocsr()
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return sp.csr_array(
        (np.ones(matrix.nnz, dtype=np.int8), matrix.indices, matrix.indptr), shape=matrix.shape
    )


def _group_identical_rows(matrix: sp.csr_array) -> tuple[np.ndarray, np.ndarray]:
    """Group identical CSR rows: (index of each group's first row, group of every row)."""
    matrix = matrix.tocsr()
    matrix.sort_indices()
    seen: dict[bytes, int] = {}
    first_rows: list[int] = []
    group = np.empty(matrix.shape[0], dtype=np.int64)
    indices, indptr = matrix.indices, matrix.indptr
    for row in range(matrix.shape[0]):
        key = indices[indptr[row] : indptr[row + 1]].tobytes()
        found = seen.get(key)
        if found is None:
            found = seen[key] = len(first_rows)
            first_rows.append(row)
        group[row] = found
    return np.asarray(first_rows, dtype=np.int64), group
