"""Building the neuron DAG of a model: trace it once, derive every layer's edges, store CSR."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from nsp_pipeline.core.defaults import default
from nsp_pipeline.core.errors import UnsupportedLayerError
from nsp_pipeline.core.progress import progress
from nsp_pipeline.graph.edges import op_edges
from nsp_pipeline.graph.neuron_graph import NeuronGraph
from nsp_pipeline.model.capture import eval_mode, trace
from nsp_pipeline.model.records import Trace

log = logging.getLogger(__name__)


def build_graph(
    model: nn.Module,
    example: torch.Tensor,
    granularity: str = default("graph.granularity"),
    incl: bool = default("graph.incl"),
) -> NeuronGraph:
    """Build the neuron DAG of ``model``.

    Parameters
    ----------
    model : nn.Module
        The network (run in eval mode; its mode is restored afterwards).
    example : torch.Tensor
        A batch of inputs; its first sample is the reference sample (shapes, and the
        partial derivatives when ``incl=False``).
    granularity : {"children", "ops", "merged"}
        Layer granularity (see :mod:`nsp_pipeline.model.capture`). Under ``merged`` a layer's edges
        are those of the composite of its operation and the operations merged around it.
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
    n = layout.n_nodes
    counts, indices = [np.zeros(layout.layers[0].size, dtype=np.int64)], []
    for index in progress(range(1, len(layout)), "graph edges", unit="layer"):
        layer, call = layout.layers[index], recorded.calls[index]
        try:
            parts = op_edges(call, incl)
        except UnsupportedLayerError as error:
            raise UnsupportedLayerError(
                f"layer {index} {layer.name!r} ({layer.kind}): {error}. "
                "See nsp_pipeline.supported_operations() for what is supported"
            ) from None
        # A layer's in-edges are its own rows of the CSR: built one layer at a time, so that
        # memory holds one layer's edge list, not the whole graph's.
        targets = np.concatenate([target for _, _, target in parts] + [np.zeros(0, np.int64)])
        sources = [source + layout.offsets[call.input_layers[k]] for k, source, _ in parts]
        sources = np.concatenate([*sources, np.zeros(0, np.int64)])
        row_counts, row_indices = _csr(targets, sources, layer.size, n)
        counts.append(row_counts)
        indices.append(row_indices)
        log.info("edges of layer %d/%d %r (%s)", index, len(layout) - 1, layer.name, layer.kind)
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
    return NeuronGraph(layout, indptr, np.concatenate([*indices, np.zeros(0, np.int64)]), incl=incl,
                       granularity=recorded.granularity)  # fmt: skip


def _csr(targets: np.ndarray, sources: np.ndarray, rows: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Edges per row and their sorted, duplicate-free sources, of an edge list into ``rows`` rows."""
    keys = np.sort(targets.astype(np.int64) * n + sources.astype(np.int64))
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if len(keys) else keys
    return np.bincount(keys // n, minlength=rows).astype(np.int64), keys % n
