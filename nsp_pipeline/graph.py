"""The neuron DAG of a network: a node per activation, an edge where one feeds another."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from nsp_pipeline.capture import Trace, eval_mode, trace
from nsp_pipeline.edges import op_edges
from nsp_pipeline.errors import UnsupportedLayerError
from nsp_pipeline.layout import Layout

log = logging.getLogger(__name__)


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
    granularity : {"children", "ops"}
        How layers were chosen when the graph was built.
    """

    layout: Layout
    indptr: np.ndarray
    indices: np.ndarray
    incl: bool = True
    granularity: str = "children"

    def __post_init__(self) -> None:
        n = self.layout.n_nodes
        if self.indptr.shape != (n + 1,) or self.indptr[0] != 0 or self.indptr[-1] != len(self.indices):
            raise ValueError(f"indptr must have {n + 1} entries from 0 to {len(self.indices)}")

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
        """Sparse ``A`` with ``A[v, u] = 1`` for every edge ``u -> v`` (strictly lower triangular)."""
        data = np.ones(len(self.indices), dtype=np.int8)
        return sp.csr_array((data, self.indices, self.indptr), shape=(self.n_nodes, self.n_nodes))

    def layer_block(self, layer: int | str) -> sp.csr_array:
        """In-edges of one layer's nodes: ``(layer size, n_nodes)`` 0/1 matrix."""
        rows = self.layout.slice(layer)
        indptr = self.indptr[rows.start : rows.stop + 1] - self.indptr[rows.start]
        indices = self.indices[self.indptr[rows.start] : self.indptr[rows.stop]]
        data = np.ones(len(indices), dtype=np.int8)
        return sp.csr_array((data, indices, indptr), shape=(rows.stop - rows.start, self.n_nodes))

    def node_label(self, node: int) -> tuple[int, ...]:
        """``nsp``'s node key ``(layer, *index)`` of a global node id."""
        layer = int(self.layout.layer_of_node(node))
        local = node - int(self.layout.offsets[layer])
        return (layer, *(int(i) for i in np.unravel_index(local, self.layout.layers[layer].shape)))

    def to_networkx(self):
        """Export as ``networkx.DiGraph`` with ``nsp``'s node keys ``(layer, *index)``.

        Requires the optional dependency ``networkx``.
        """
        try:
            import networkx as nx
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("to_networkx needs networkx: pip install networkx") from error
        keys = [self.node_label(v) for v in range(self.n_nodes)]
        digraph = nx.DiGraph(incl=self.incl, granularity=self.granularity)
        digraph.add_nodes_from(keys)
        targets = np.repeat(np.arange(self.n_nodes), np.diff(self.indptr))
        digraph.add_edges_from((keys[u], keys[v]) for u, v in zip(self.indices.tolist(), targets.tolist()))
        return digraph


def build_graph(
    model: nn.Module, example: torch.Tensor, granularity: str = "children", incl: bool = True
) -> NeuronGraph:
    """Build the neuron DAG of ``model``.

    Parameters
    ----------
    model : nn.Module
        The network (run in eval mode; its mode is restored afterwards).
    example : torch.Tensor
        A batch of inputs; its first sample is the reference sample (shapes, and the
        partial derivatives when ``incl=False``).
    granularity : {"children", "ops"}
        Layer granularity (see :mod:`nsp_pipeline.capture`).
    incl : bool
        Keep every structural edge (``True``, ``nsp``'s default ``INCL``) or only edges with a
        non-zero partial derivative at the reference sample (``False``).

    Returns
    -------
    NeuronGraph
    """
    return graph_from_trace(trace(model, example[:1], granularity), incl)


def graph_from_trace(recorded: Trace, incl: bool = True) -> NeuronGraph:
    """Neuron DAG from a trace of one reference sample (see :func:`build_graph`)."""
    if recorded.values[0].shape[0] != 1:
        raise ValueError("the graph is built from a trace of exactly one reference sample")
    with eval_mode(recorded.model):
        return _graph_from_calls(recorded, incl)


def _graph_from_calls(recorded: Trace, incl: bool) -> NeuronGraph:
    layout = recorded.layout
    targets, sources = [], []
    for index in range(1, len(layout)):
        layer, call = layout.layers[index], recorded.calls[index]
        try:
            parts = op_edges(call, incl)
        except UnsupportedLayerError as error:
            raise UnsupportedLayerError(
                f"layer {index} {layer.name!r} ({layer.kind}): {error}. "
                "See nsp_pipeline.edges.supported_operations() for what is supported"
            ) from None
        for k, source, target in parts:
            sources.append(source + layout.offsets[call.input_layers[k]])
            targets.append(target + layout.offsets[index])
        log.info("edges of layer %d/%d %r (%s)", index, len(layout) - 1, layer.name, layer.kind)
    indptr, indices = _csr(np.concatenate([*targets, []]), np.concatenate([*sources, []]), layout.n_nodes)
    return NeuronGraph(layout, indptr, indices, incl=incl, granularity=recorded.granularity)


def _csr(targets: np.ndarray, sources: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, duplicate-free CSR (rows: targets) of an edge list."""
    keys = np.sort(targets.astype(np.int64) * n + sources.astype(np.int64))
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if len(keys) else keys
    rows = keys // n
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int64)
    return indptr, keys % n
