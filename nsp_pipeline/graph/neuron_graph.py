"""The neuron DAG of a network: a node per activation, an edge where one feeds another."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from nsp_pipeline.core.defaults import default
from nsp_pipeline.core.layout import Layout


@dataclass(frozen=True)
class NeuronGraph:
    """Neuron DAG stored as CSR of in-edges (parents) in node order.

    The parents of node ``v`` are ``indices[indptr[v]:indptr[v + 1]]`` (sorted, unique,
    all in earlier layers). An edge ``u -> v`` means ``v`` depends on ``u``.

    Parameters
    ----------
    layout : Layout
        Layers, shapes and node offsets.
    indptr : numpy.ndarray
        ``(n_nodes + 1,)`` int64 row pointers.
    indices : numpy.ndarray
        ``(n_edges,)`` int64 parent node ids.
    incl : bool
        ``True`` if every structural edge is kept (``nsp``'s ``INCL``), ``False`` if only
        edges with a non-zero partial derivative at the reference sample are kept.
    granularity : {"children", "ops", "merged"}
        How layers were chosen when the graph was built.
    weights : numpy.ndarray, optional
        ``(n_edges,)`` float64 edge weights aligned with ``indices`` (``None``: unweighted).
    weight_kind : {"structural", "local"}, optional
        What ``weights`` hold (:mod:`nsp_pipeline.graph.weights`).
    """

    layout: Layout
    indptr: np.ndarray
    indices: np.ndarray
    incl: bool = default("graph.incl")
    granularity: str = default("graph.granularity")
    weights: np.ndarray | None = None
    weight_kind: str | None = None

    def __post_init__(self) -> None:
        n = self.layout.n_nodes
        if self.indptr.shape != (n + 1,) or self.indptr[0] != 0 or self.indptr[-1] != len(self.indices):
            raise ValueError(f"indptr must have {n + 1} entries from 0 to {len(self.indices)}")
        if self.weights is not None and self.weights.shape != self.indices.shape:
            raise ValueError(
                f"weights must have one value per edge ({len(self.indices)}), got shape {self.weights.shape}"
            )
        if (self.weights is None) != (self.weight_kind is None):
            raise ValueError("weights and weight_kind are given together")

    def with_weights(self, weights: np.ndarray | None, kind: str | None) -> NeuronGraph:
        """The same graph with edge weights ``weights`` of kind ``kind`` (``None``: unweighted)."""
        values = None if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
        return replace(self, weights=values, weight_kind=kind)

    def edge_values(self) -> np.ndarray:
        """Edge weights, or ones for an unweighted graph (float64, aligned with ``indices``)."""
        return np.ones(len(self.indices)) if self.weights is None else self.weights

    @property
    def n_nodes(self) -> int:
        """Number of nodes (neurons)."""
        return self.layout.n_nodes

    @property
    def n_edges(self) -> int:
        """Number of edges."""
        return len(self.indices)

    def parents(self, node: int) -> np.ndarray:
        """Parent node ids of one node."""
        return self.indices[self.indptr[node] : self.indptr[node + 1]]

    def adjacency(self) -> sp.csr_array:
        """Sparse ``A`` with ``A[v, u] = 1`` for every edge ``u -> v`` (strictly lower triangular).

        A weighted graph has its weights (float64) in place of the ones.
        """
        data = np.ones(len(self.indices), dtype=np.int8) if self.weights is None else self.weights
        return sp.csr_array((data, self.indices, self.indptr), shape=(self.n_nodes, self.n_nodes))

    def layer_block(self, layer: int | str) -> sp.csr_array:
        """In-edges of one layer's nodes: ``(layer size, n_nodes)`` 0/1 (or weight) matrix."""
        rows = self.layout.slice(layer)
        indptr = self.indptr[rows.start : rows.stop + 1] - self.indptr[rows.start]
        edges = slice(self.indptr[rows.start], self.indptr[rows.stop])
        indices = self.indices[edges]
        data = np.ones(len(indices), dtype=np.int8) if self.weights is None else self.weights[edges]
        return sp.csr_array((data, indices, indptr), shape=(rows.stop - rows.start, self.n_nodes))

    def node_label(self, node: int) -> tuple[int, ...]:
        """``nsp``'s node key ``(layer, *index)`` of a global node id."""
        layer = int(self.layout.layer_of_node(node))
        local = node - int(self.layout.offsets[layer])
        return (layer, *(int(i) for i in np.unravel_index(local, self.layout.layers[layer].shape)))

    def to_networkx(self):
        """Export as ``networkx.DiGraph`` with ``nsp``'s node keys ``(layer, *index)``.

        A weighted graph's edges carry their weight as the attribute ``weight``. Requires the
        optional dependency ``networkx``.
        """
        try:
            import networkx as nx
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("to_networkx needs networkx: pip install networkx") from error
        keys = [self.node_label(v) for v in range(self.n_nodes)]
        digraph = nx.DiGraph(incl=self.incl, granularity=self.granularity)
        digraph.add_nodes_from(keys)
        targets = np.repeat(np.arange(self.n_nodes), np.diff(self.indptr))
        pairs = zip(self.indices.tolist(), targets.tolist())
        if self.weights is None:
            digraph.add_edges_from((keys[u], keys[v]) for u, v in pairs)
        else:
            weights = self.weights.tolist()
            digraph.add_weighted_edges_from((keys[u], keys[v], w) for (u, v), w in zip(pairs, weights))
        return digraph
