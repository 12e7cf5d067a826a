"""One entry point for both transform types: compute the operator, transform, invert."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from nsp_pipeline.core.defaults import default
from nsp_pipeline.core.pattern import Pattern
from nsp_pipeline.graph.neuron_graph import NeuronGraph
from nsp_pipeline.transforms.causal.closure import CausalOperator, causal_operator
from nsp_pipeline.transforms.causal.precision import precision_table
from nsp_pipeline.transforms.laplacian import DEFAULT_MAX_NODES, LaplacianOperator, laplacian_operator

if TYPE_CHECKING:
    from nsp_pipeline.model.capture import Trace
    from nsp_pipeline.transforms.causal.factorized import FactorizedCausalOperator

    #: What the transforms accept: a causal (closure or factorised) or a Laplacian operator.
    Operator = CausalOperator | FactorizedCausalOperator | LaplacianOperator

log = logging.getLogger(__name__)

#: Transform types, as named by ``nsp``.
TRANSFORM_TYPES = ("standard", "laplacian")


def compute_operator(
    graph: NeuronGraph,
    type: str = "standard",
    max_nodes: int = DEFAULT_MAX_NODES,
    k: int | None = default("laplacian.k"),
    recorded: Trace | None = None,
) -> Operator:
    """Precompute the operator of a transform type on ``graph``.

    Parameters
    ----------
    graph : NeuronGraph
        The neuron DAG.
    type : {"standard", "laplacian"}
        ``standard``: causal Fourier transform; ``laplacian``: eigendecomposition of L = D − W.
    max_nodes : int
        Size limit of the full (dense) Laplacian eigendecomposition (default: the configuration's
        ``laplacian.max_nodes``).
    k : int, optional
        Laplacian only: compute the ``k`` lowest frequencies (a partial spectrum) instead of all
        (default: the configuration's ``laplacian.k``, every frequency).
    recorded : Trace, optional
        Standard only: the trace of one reference sample the graph was built from. With it,
        the factorised operator is used where the network allows it (see
        :func:`causal_operator_of`); without it, the sparse closure.
    """
    if type == "standard":
        return causal_operator_of(graph, recorded)[0]
    if type == "laplacian":
        return laplacian_operator(graph, max_nodes=max_nodes, k=k)
    raise ValueError(f"unknown transform type {type!r}; expected one of {TRANSFORM_TYPES}")


def causal_operator_of(graph: NeuronGraph | None, recorded: Trace | None = None) -> tuple[Operator, str]:
    """The causal operator: factorised if the trace allows it, else the sparse closure of ``graph``.

    Parameters
    ----------
    graph : NeuronGraph or None
        The neuron DAG (needed for the sparse closure; ``None`` if only a trace is at hand).
    recorded : Trace, optional
        A trace of one reference sample with the graph's granularity. The factorised
        operator covers structural edges only, so it is used only when ``graph`` keeps every
        edge (``incl=True``).

    Returns
    -------
    operator, method : Operator, str
        ``method`` is ``"factorized"`` or ``"sparse closure: <why>"``.
    """
    from_graph = graph is None or graph.incl
    if recorded is not None and from_graph:
        from nsp_pipeline.core.errors import NotFactorizableError
        from nsp_pipeline.transforms.causal.builder import factorized_operator

        try:
            operator = factorized_operator(recorded)
        except NotFactorizableError as error:
            reason = str(error)
        else:
            if graph is None or operator.layout == graph.layout:
                return operator, "factorized"
            reason = "the trace's layers differ from the graph's"
    elif recorded is None:
        reason = "no trace of the model was given"
    else:
        reason = "the graph keeps only edges with a non-zero derivative (incl=False)"
    if graph is None:
        from nsp_pipeline.graph.build import graph_from_trace

        graph = graph_from_trace(recorded)
    log.info("causal transform by the sparse closure: %s", reason)
    return causal_operator(graph), f"sparse closure: {reason}"


def transform_type(operator: Operator) -> str:
    """The transform type an operator computes (its ``transform_type`` attribute)."""
    return operator.transform_type


def transform(pattern: Pattern, operator: Operator) -> Pattern:
    """Spectrum of an activation pattern, in the same layout, with its diagnostics.

    Causal spectra carry, per sample and layer, the significant digits that survive in
    float64 and the share of coefficients below their rounding error
    (:func:`nsp_pipeline.transforms.causal.precision.precision_table`); Laplacian spectra carry
    the eigenvalues, and partial ones the energy of the frequencies not computed (``residual_energy``).
    """
    if pattern.domain != "activations":
        raise ValueError(f"expected an activation pattern, got a {pattern.domain!r} spectrum")
    _check_layout(pattern, operator)
    values = operator.forward(pattern.values)
    if transform_type(operator) == "standard":
        scale = operator.rounding_scale(pattern.values, values)
        digits, below_noise = precision_table(pattern.layout, pattern.values, values, scale)
        return pattern.with_values(
            values, "standard", diagnostics={"significant_digits": digits, "below_noise": below_noise}
        )
    diagnostics = {"residual_energy": operator.residual_energy(pattern.values)} if operator.is_partial else {}
    return pattern.with_values(values, "laplacian", operator.eigenvalues, diagnostics)


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
