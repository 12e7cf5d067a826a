"""One call from a model and a batch of inputs to activations and spectra, in memory.

>>> from nsp_pipeline import analyze
>>> result = analyze(model, inputs, transforms=("standard",))      # doctest: +SKIP
>>> result.spectra["standard"].layer("fc")                         # doctest: +SKIP
>>> result.precision["standard"]                                   # doctest: +SKIP

The causal transform uses the factorised method (:mod:`nsp_pipeline.transforms.causal.builder`) when every
layer allows it, and the sparse closure (:mod:`nsp_pipeline.transforms.causal.closure`) otherwise; ``methods``
says which, and why.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from nsp_pipeline.analysis.graph_summary import GraphSummary, summarize_graph
from nsp_pipeline.core.defaults import default
from nsp_pipeline.core.pattern import Pattern
from nsp_pipeline.graph.build import build_graph, graph_from_trace
from nsp_pipeline.graph.weights import weighted_graph
from nsp_pipeline.model.capture import trace
from nsp_pipeline.model.records import Trace
from nsp_pipeline.transforms.api import DEFAULT_DIGITS, TRANSFORM_TYPES, causal_operator_of, transform
from nsp_pipeline.transforms.causal.exact import exact_spectrum
from nsp_pipeline.transforms.causal.precision import LayerPrecision, summarize_precision
from nsp_pipeline.transforms.laplacian import laplacian_operator

if TYPE_CHECKING:
    from nsp_pipeline.transforms.api import Operator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Analysis:
    """Activations and spectra of a batch.

    Parameters
    ----------
    activations : Pattern
        Every layer's activations (``activations.layer(name)`` gives ``(n_samples, *shape)``).
    spectra : dict of str to Pattern
        One spectrum per requested transform type, in the same layout.
    methods : dict of str to str
        How each transform was computed (``"factorized"``, ``"sparse closure: <reason>"``,
        ``"full eigendecomposition"``, ``"<k> lowest eigenpairs"``).
    precision : dict of str to list of LayerPrecision
        For the causal transform: per layer (worst sample), the arithmetic used, the correct digits
        of the coefficients (estimated for float64, 15.65 for exact layers) and the share of
        coefficients below their float64 rounding error.
    """

    activations: Pattern
    spectra: dict[str, Pattern]
    methods: dict[str, str]
    precision: dict[str, list[LayerPrecision]] = field(default_factory=dict)


def analyze(
    model: nn.Module,
    inputs: torch.Tensor,
    transforms: Sequence[str] = ("standard",),
    granularity: str = default("graph.granularity"),
    max_nodes: int = default("laplacian.max_nodes"),
    k: int | None = default("laplacian.k"),
    exact: bool = False,
    precision: str = "auto",
    digits: float = DEFAULT_DIGITS,
) -> Analysis:
    """Activations and spectra of ``model`` on a batch, with nothing written to disk.

    Parameters
    ----------
    model : nn.Module
        The network (recorded in eval mode; its mode is restored).
    inputs : torch.Tensor
        ``(n_samples, *input_shape)``.
    transforms : sequence of {"standard", "laplacian"}
        Spectra to compute.
    granularity : {"children", "ops", "merged"}
        Layer granularity: ``children`` (the model's direct submodules, ``nsp``'s layers) by
        default, as the workflow's ``graph.granularity``; ``ops`` sees every torch.fx operation
        (see :mod:`nsp_pipeline.model.capture`).
    max_nodes : int
        Size limit of the full (dense) Laplacian eigendecomposition (default: the
        configuration's ``laplacian.max_nodes``).
    k : int, optional
        Compute only the ``k`` lowest Laplacian frequencies (a partial spectrum, whose
        ``diagnostics["residual_energy"]`` is the energy not captured); by default (the
        configuration's ``laplacian.k``) every frequency.
    exact : bool
        Also compute the causal spectrum in exact integer arithmetic, as ``spectra["standard_exact"]``
        rounded to float64, to compare with ``spectra["standard"]``
        (:func:`nsp_pipeline.transforms.causal.exact.exact_spectrum`: multi-limb integers on the
        factorised operator, Python integers on the sparse closure).
    precision : {"auto", "float64", "exact"}
        Arithmetic of the causal spectrum (:func:`nsp_pipeline.transforms.api.transform`): by
        default float64 for the layers where it keeps ``digits`` correct digits, exact integer
        arithmetic up to the last layer where it does not.
    digits : float
        Correct significant digits wanted per causal coefficient (``precision="auto"``).
    """
    unknown = [t for t in transforms if t not in TRANSFORM_TYPES]
    if unknown:
        raise ValueError(f"unknown transform types {unknown}; expected some of {TRANSFORM_TYPES}")
    if exact and "standard" not in transforms:
        raise ValueError("exact=True computes the exact causal spectrum: include 'standard' in transforms")
    arithmetic = precision
    recorded = trace(model, inputs, granularity)
    activations = recorded.pattern()
    reference = recorded if len(inputs) == 1 else None
    spectra, methods, report = {}, {}, {}
    graph = None
    for kind in transforms:
        if kind == "standard":
            operator, methods[kind] = cached_causal_operator(
                model, inputs, granularity, activations, reference
            )
            spectrum = transform(activations, operator, precision=arithmetic, digits=digits)
            diagnostics = spectrum.diagnostics
            report[kind] = summarize_precision(
                activations.layout,
                diagnostics["significant_digits"],
                diagnostics["below_noise"],
                diagnostics["exact_arithmetic"],
            )
            _warn_about_noise(report[kind], digits)
        else:
            reference = reference or trace(model, inputs[:1], granularity)
            graph = graph or graph_from_trace(reference)
            operator = laplacian_operator(graph, max_nodes=max_nodes, k=k)
            spectrum = transform(activations, operator)
            methods[kind] = f"{k} lowest eigenpairs" if operator.is_partial else "full eigendecomposition"
        spectra[kind] = spectrum
    if exact:
        operator, _ = cached_causal_operator(model, inputs, granularity, activations, reference)
        exact_values = exact_spectrum(operator, activations.values)
        spectra["standard_exact"] = activations.with_values(exact_values, "standard")
        methods["standard_exact"] = "exact integer Möbius inversion"
    return Analysis(activations, spectra, methods, report)


#: Causal operators built by :func:`analyze`, per model, input shape, granularity and module structure.
_OPERATORS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple[Operator, str]]] = (
    weakref.WeakKeyDictionary()
)


def cached_causal_operator(
    model: nn.Module,
    inputs: torch.Tensor,
    granularity: str,
    activations: Pattern,
    reference: Trace | None = None,
) -> tuple[Operator, str]:
    """The causal operator of ``model`` on inputs of this shape, built once per process and reused.

    The operator depends on the network's structure only (its ancestor relations), not on its
    weights or inputs: it is kept per model (weakly), input shape, granularity and the model's
    modules (types and parameter shapes), and rebuilt if the recorded layers differ.

    Parameters
    ----------
    model : nn.Module
        The network.
    inputs : torch.Tensor
        The batch (its per-sample shape is the key).
    granularity : str
        Layer granularity.
    activations : Pattern
        The batch's activations (their layout must be the operator's).
    reference : Trace, optional
        A trace of one sample, if at hand (else one is recorded when the operator is built).

    Returns
    -------
    operator, method : Operator, str
        As :func:`nsp_pipeline.transforms.api.causal_operator_of`.
    """
    key = (tuple(inputs.shape[1:]), granularity, _structure(model))
    per_model = _OPERATORS.setdefault(model, {})
    cached = per_model.get(key)
    if cached is not None and cached[0].layout == activations.layout:
        return cached
    reference = reference or trace(model, inputs[:1], granularity)
    per_model[key] = causal_operator_of(None, reference)
    return per_model[key]


def _structure(model: nn.Module) -> tuple:
    """The model's modules and parameter shapes: what the operator depends on besides the input shape."""
    modules = tuple(
        (name, type(module).__name__, module.extra_repr()) for name, module in model.named_modules()
    )
    shapes = tuple((name, tuple(tensor.shape)) for name, tensor in model.state_dict(keep_vars=True).items())
    return modules, shapes


def _warn_about_noise(report: list[LayerPrecision], digits: float) -> None:
    doubtful = [layer for layer in report if layer.digits < digits]
    if doubtful:
        worst = min(doubtful, key=lambda layer: layer.digits)
        log.warning(
            "causal spectrum: %d of %d layers keep fewer than %g correct digits (estimated), from layer "
            "%r on (worst: %r, %.1f digits); see Analysis.precision",
            len(doubtful), len(report), digits, doubtful[0].layer, worst.layer, worst.digits,
        )  # fmt: skip


def graph_analytics(
    model: nn.Module,
    example: torch.Tensor,
    weights: str = default("graph_analytics.weights"),
    granularity: str = "merged",
    **settings: object,
) -> GraphSummary:
    """The analytics of a model's weighted neuron graph, in memory (the graph_analytics stage).

    >>> summary = graph_analytics(model, x[:1], weights="local", analytics=["katz"])  # doctest: +SKIP
    >>> summary.centralities["katz"]                                                 # doctest: +SKIP

    Parameters
    ----------
    model : nn.Module
        The network.
    example : torch.Tensor
        A batch whose first sample sets the shapes and, for ``weights="local"``, the point of the
        partial derivatives.
    weights : {"structural", "local", "none"}
        Edge weights (:func:`nsp_pipeline.graph.weights.edge_weights`); ``"none"``: every edge 1.
    granularity : {"children", "ops", "merged"}
        Layer granularity; ``merged`` (activations and reshapes merged into the layers that feed
        them) gives the layers a graph view usually means.
    **settings
        Keys of the configuration section ``graph_analytics`` (``analytics``, ``katz_alpha``,
        ``blocks``, ...).

    Returns
    -------
    GraphSummary
    """
    if weights == "none":
        graph = build_graph(model, example[:1], granularity)
    else:
        graph = weighted_graph(model, example[:1], weights, granularity)
    return summarize_graph(graph, {**settings, "weights": weights})
