"""One entry point for both transform types: compute the operator, transform, invert."""

from __future__ import annotations

from nsp_pipeline.causal import CausalOperator, causal_operator
from nsp_pipeline.graph import NeuronGraph
from nsp_pipeline.laplacian import DEFAULT_MAX_NODES, LaplacianOperator, laplacian_operator
from nsp_pipeline.pattern import Pattern

#: Transform types, as named by ``nsp``.
TRANSFORM_TYPES = ("standard", "laplacian")

Operator = CausalOperator | LaplacianOperator


def compute_operator(
    graph: NeuronGraph, type: str = "standard", max_nodes: int = DEFAULT_MAX_NODES
) -> Operator:
    """Precompute the operator of a transform type on ``graph``.

    Parameters
    ----------
    graph : NeuronGraph
        The neuron DAG.
    type : {"standard", "laplacian"}
        ``standard``: causal Fourier transform (sparse closure); ``laplacian``: eigendecomposition.
    max_nodes : int
        Size limit of the dense Laplacian eigendecomposition.
    """
    if type == "standard":
        return causal_operator(graph)
    if type == "laplacian":
        return laplacian_operator(graph, max_nodes=max_nodes)
    raise ValueError(f"unknown transform type {type!r}; expected one of {TRANSFORM_TYPES}")


def transform_type(operator: Operator) -> str:
    """The transform type an operator computes (its ``transform_type`` attribute)."""
    return operator.transform_type


def transform(pattern: Pattern, operator: Operator) -> Pattern:
    """Spectrum of an activation pattern (same layout; Laplacian spectra carry eigenvalues)."""
    if pattern.domain != "activations":
        raise ValueError(f"expected an activation pattern, got a {pattern.domain!r} spectrum")
    _check_layout(pattern, operator)
    eigenvalues = getattr(operator, "eigenvalues", None)
    return pattern.with_values(operator.forward(pattern.values), transform_type(operator), eigenvalues)


def inverse_transform(spectrum: Pattern, operator: Operator) -> Pattern:
    """Activation pattern of a spectrum computed with the same operator."""
    if spectrum.domain != transform_type(operator):
        raise ValueError(
            f"a {spectrum.domain!r} spectrum cannot be inverted by a {transform_type(operator)!r} operator"
        )
    _check_layout(spectrum, operator)
    return spectrum.with_values(operator.inverse(spectrum.values), "activations")


def _check_layout(pattern: Pattern, operator: Operator) -> None:
    if pattern.layout != operator.layout:
        raise ValueError(
            "the pattern and the operator belong to different networks or granularities: layers "
            f"{pattern.layout.names[:4]}... vs {operator.layout.names[:4]}..."
        )
