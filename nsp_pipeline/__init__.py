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

import importlib

#: Public names and the module each lives in. Modules load on first use, so that a job
#: that only reads HDF5 and renders PDFs does not pay for importing torch.
_EXPORTS = {
    "Analysis": "analysis.analyze",
    "analyze": "analysis.analyze",
    "GRANULARITIES": "core.layout",
    "Trace": "model.capture",
    "trace": "model.capture",
    "CausalOperator": "transforms.causal.closure",
    "causal_operator": "transforms.causal.closure",
    "supported_operations": "model.ops",
    "FactorizedCausalOperator": "transforms.causal.builder",
    "NotFactorizableError": "core.errors",
    "factorized_operator": "transforms.causal.builder",
    "LayerPrecision": "transforms.causal.precision",
    "TraceError": "core.errors",
    "UnsupportedLayerError": "core.errors",
    "NeuronGraph": "graph.neuron_graph",
    "GraphSummary": "analysis.graph_summary",
    "summarize_graph": "analysis.graph_summary",
    "graph_analytics": "analysis.analyze",
    "plot_graph_summary": "render.graph_plots",
    "build_graph": "graph.build",
    "GraphTooLargeError": "transforms.laplacian",
    "LaplacianOperator": "transforms.laplacian",
    "laplacian_matrix": "transforms.laplacian",
    "laplacian_operator": "transforms.laplacian",
    "Layer": "core.layout",
    "Layout": "core.layout",
    "Activations": "legacy",
    "NNGraph": "legacy",
    "OutputLoader": "legacy",
    "Transformer": "legacy",
    "Visualizer": "legacy",
    "Pattern": "core.pattern",
    "SCALES": "render.pages",
    "render_pattern": "render.pages",
    "TRANSFORM_TYPES": "transforms.api",
    "compute_operator": "transforms.api",
    "inverse_transform": "transforms.api",
    "transform": "transforms.api",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"nsp_pipeline.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'nsp_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
