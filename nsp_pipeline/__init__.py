"""nsp-pipeline: signal processing on neural networks at scale.

Modern API (one module per concept)::

    from nsp_pipeline import trace, build_graph, compute_operator, transform, render_pattern

    pattern = trace(model, inputs).pattern()           # activations of a batch
    graph = build_graph(model, inputs[:1])             # neuron DAG (CSR)
    operator = compute_operator(graph, "standard")     # sparse closure, reused for all samples
    spectrum = transform(pattern, operator)            # batched Möbius inversion
    render_pattern(spectrum, "spectrum.pdf", sample=0, scale="layernorm")

The predecessor ``nsp``'s API (``Activations``, ``NNGraph``, ``Visualizer``) is available too:
``import nsp_pipeline as nsp`` runs its README example unchanged.
"""

__version__ = "0.1.0"

from nsp_pipeline.capture import GRANULARITIES, Trace, trace
from nsp_pipeline.causal import CausalOperator, causal_operator
from nsp_pipeline.edges import supported_operations
from nsp_pipeline.errors import TraceError, UnsupportedLayerError
from nsp_pipeline.graph import NeuronGraph, build_graph
from nsp_pipeline.laplacian import GraphTooLargeError, LaplacianOperator, laplacian_matrix, laplacian_operator
from nsp_pipeline.layout import Layer, Layout
from nsp_pipeline.legacy import Activations, NNGraph, Visualizer
from nsp_pipeline.pattern import Pattern
from nsp_pipeline.render import SCALES, render_pattern
from nsp_pipeline.transforms import TRANSFORM_TYPES, compute_operator, inverse_transform, transform

__all__ = [
    "GRANULARITIES",
    "SCALES",
    "TRANSFORM_TYPES",
    "Activations",
    "CausalOperator",
    "GraphTooLargeError",
    "LaplacianOperator",
    "Layer",
    "Layout",
    "NNGraph",
    "NeuronGraph",
    "Pattern",
    "Trace",
    "TraceError",
    "UnsupportedLayerError",
    "Visualizer",
    "build_graph",
    "causal_operator",
    "compute_operator",
    "inverse_transform",
    "laplacian_matrix",
    "laplacian_operator",
    "render_pattern",
    "supported_operations",
    "trace",
    "transform",
]
