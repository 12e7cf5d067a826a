"""One entry point for both transform types: compute the operator, transform, invert."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from nsp_pipeline.core.defaults import default
from nsp_pipeline.core.pattern import Pattern
from nsp_pipeline.graph.neuron_graph import NeuronGraph
from nsp_pipeline.transforms.causal.closure import CausalOperator, causal_operator
from nsp_pipeline.transforms.causal.exact import exact_spectrum
from nsp_pipeline.transforms.causal.precision import ARITHMETICS, FLOAT64_DIGITS
from nsp_pipeline.transforms.laplacian import DEFAULT_MAX_NODES, LaplacianOperator, laplacian_operator

if TYPE_CHECKING:
    from nsp_pipeline.model.capture import Trace
    from nsp_pipeline.transforms.causal.factorized import FactorizedCausalOperator

    #: What the transforms accept: a causal (closure or factorised) or a Laplacian operator.
    Operator = CausalOperator | FactorizedCausalOperator | LaplacianOperator

log = logging.getLogger(__name__)

#: Transform types, as named by ``nsp``.
TRANSFORM_TYPES = ("standard", "laplacian")

#: Correct significant digits wanted per causal coefficient by ``precision="auto"``.
DEFAULT_DIGITS = 6.0


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


def transform(
    pattern: Pattern, operator: Operator, precision: str = "auto", digits: float = DEFAULT_DIGITS
) -> Pattern:
    """Spectrum of an activation pattern, in the same layout, with its diagnostics.

    Parameters
    ----------
    pattern : Pattern
        Activations.
    operator : Operator
        From :func:`compute_operator`.
    precision : {"auto", "float64", "exact"}
        Causal spectra only: the arithmetic. ``float64`` is one sweep; ``exact`` is integer Möbius
        inversion (:mod:`nsp_pipeline.transforms.causal.limbs` on the factorised operator: 2–15
        limbs of ~28 bits per value, several times the float64 time), rounded to float64;
        ``auto`` computes in float64 and recomputes exactly, for each sample where some layer's
        estimated correct digits (:func:`~nsp_pipeline.transforms.causal.precision.estimated_digits`)
        fall below ``digits``, every layer up to the last such one.
    digits : float
        Causal spectra with ``precision="auto"``: the correct significant digits wanted per
        coefficient.

    Returns
    -------
    Pattern
        Causal spectra carry, per sample and layer (``(n_samples, n_layers)`` each):
        ``significant_digits`` (estimated correct digits of the coefficients; 15.65 where exact),
        ``exact_arithmetic`` (1 where the layer was computed exactly, else 0), ``below_noise`` and
        ``round_trip_digits`` (the digits of ``s = Z ŝ`` rebuilt in float64 from the float64
        spectrum: :func:`~nsp_pipeline.transforms.causal.precision.precision_table`). Laplacian
        spectra carry the eigenvalues, and partial ones the energy of the frequencies not computed
        (``residual_energy``).
    """
    if pattern.domain != "activations":
        raise ValueError(f"expected an activation pattern, got a {pattern.domain!r} spectrum")
    if precision not in ARITHMETICS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {ARITHMETICS}")
    _check_layout(pattern, operator)
    if transform_type(operator) == "standard":
        values, round_trip, below_noise, estimated = operator.spectrum_with_estimates(pattern.values)
        exact = np.zeros(estimated.shape)
        wanted = {"auto": digits, "float64": -np.inf, "exact": np.inf}[precision]
        low = estimated < wanted
        stops = np.where(low.any(axis=1), low.shape[1] - np.argmax(low[:, ::-1], axis=1), 0)
        for stop in np.unique(stops[stops > 0]).tolist():
            rows = np.flatnonzero(stops == stop)
            end = pattern.layout.slice(stop - 1).stop
            log.info(
                "causal spectrum: layers 0-%d of %d samples in exact arithmetic (%s wanted)",
                stop - 1, rows.size, precision,
            )  # fmt: skip
            values[rows, :end] = exact_spectrum(operator, pattern.values[rows], stop)[:, :end]
            exact[rows, :stop], estimated[rows, :stop], below_noise[rows, :stop] = 1.0, FLOAT64_DIGITS, 0.0
        diagnostics = {
            "significant_digits": estimated,
            "exact_arithmetic": exact,
            "below_noise": below_noise,
            "round_trip_digits": round_trip,
        }
        return pattern.with_values(values, "standard", diagnostics=diagnostics)
    values = operator.forward(pattern.values)
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
