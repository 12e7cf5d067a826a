"""Exact integer Möbius inversion, and what it shows about float64 spectra."""

import numpy as np
import torch
from oracles import dense_zeta

from nsp_pipeline import build_graph, causal_operator, trace
from nsp_pipeline.model.architectures import ResNet18
from nsp_pipeline.transforms.causal.builder import factorized_operator
from nsp_pipeline.transforms.causal.exact import exact_causal_spectrum, exact_integers
from nsp_pipeline.transforms.causal.precision import EPSILON


def test_exact_spectrum_rebuilds_the_signal_exactly():
    torch.manual_seed(0)
    model = ResNet18(width=1, in_channels=1, input_size=16, num_classes=4).eval()
    x = torch.randn(1, 1, 16, 16)
    graph = build_graph(model, x, "ops")
    signal = trace(model, x, "ops").pattern().values
    exact = exact_causal_spectrum(causal_operator(graph), signal)
    numerators, exponent = exact_integers(signal)
    assert exponent == exact.exponent
    zeta = dense_zeta(graph)
    for v in range(graph.n_nodes):  # s_v = Σ_{u ≤ v} ŝ_u, in integers
        assert sum(exact.numerators[0, zeta[v]].tolist(), 0) == numerators[0, v]
    np.testing.assert_array_equal(np.ldexp(numerators.astype(float), exponent), signal)


def test_float_spectra_against_exact():
    """The closure is exact where little cancels; single-parent layers of the factorised transform
    stay exact at any depth, where the closure's ancestor sums cancel catastrophically."""
    torch.manual_seed(0)
    model = ResNet18(width=2, in_channels=1, input_size=24, num_classes=10).eval()
    x = torch.randn(1, 1, 24, 24)
    recorded = trace(model, x, "ops")
    closure = causal_operator(build_graph(model, x, "ops"))
    signal = recorded.pattern().values
    exact = exact_causal_spectrum(closure, signal).to_float()

    spectrum = closure.forward(signal)
    first_stage = recorded.layout.slice("layer1.0.conv1")
    assert np.all(np.abs(spectrum[:, first_stage] - exact[:, first_stage]) <= 1e-12 * np.abs(exact).max())

    factorized = factorized_operator(recorded)
    fast = factorized.forward(signal)
    scale = factorized.rounding_scale(signal, fast)
    for index, single in enumerate(factorized.single_parents):
        if single is not None and index > 0:
            nodes = recorded.layout.slice(index)
            assert np.all(np.abs(fast[:, nodes] - exact[:, nodes]) <= 2 * EPSILON * scale[:, nodes])
    deep = recorded.layout.slice("layer4.1.bn2")
    assert (
        np.abs(spectrum[:, deep] - exact[:, deep]).max() > 1e3 * np.abs(fast[:, deep] - exact[:, deep]).max()
    )
