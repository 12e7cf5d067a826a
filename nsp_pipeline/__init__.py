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
    "Analysis": "analysis",
    "analyze": "analysis",
    "GRANULARITIES": "graph",
    "Trace": "capture",
    "trace": "capture",
    "CausalOperator": "causal",
    "causal_operator": "causal",
    "supported_operations": "edges",
    "FactorizedCausalOperator": "factorized",
    "NotFactorizableError": "factorized",
    "factorized_operator": "factorized",
    "LayerPrecision": "precision",
    "TraceError": "errors",
    "UnsupportedLayerError": "errors",
    "NeuronGraph": "graph",
    "build_graph": "graph_builder",
    "GraphTooLargeError": "laplacian",
    "LaplacianOperator": "laplacian",
    "laplacian_matrix": "laplacian",
    "laplacian_operator": "laplacian",
    "Layer": "layout",
    "Layout": "layout",
    "Activations": "legacy",
    "NNGraph": "legacy",
    "Visualizer": "legacy",
    "Pattern": "pattern",
    "SCALES": "render",
    "render_pattern": "render",
    "TRANSFORM_TYPES": "transforms",
    "compute_operator": "transforms",
    "inverse_transform": "transforms",
    "transform": "transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"nsp_pipeline.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'nsp_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
