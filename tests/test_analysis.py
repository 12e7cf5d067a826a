"""The one-call API and the precision report."""

import numpy as np
import torch
from torch import nn

import nsp_pipeline.analysis.analyze as analysis_module
from nsp_pipeline import analyze, build_graph, causal_operator, trace
from nsp_pipeline.core.layout import Layer, Layout
from nsp_pipeline.model.architectures import DigitsCNN, ResNet18
from nsp_pipeline.transforms.causal.builder import factorized_operator
from nsp_pipeline.transforms.causal.precision import EPSILON, layer_precision


class Permuted(nn.Module):
    """A permute has no per-axis product form: the causal transform falls back to the closure."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return torch.sigmoid(self.conv(x).permute(0, 2, 3, 1))


def closure_spectrum(model, inputs, granularity="ops"):
    graph = build_graph(model, inputs[:1], granularity)
    return causal_operator(graph), causal_operator(graph).forward(
        trace(model, inputs, granularity).pattern().values
    )


def test_factorized_and_fallback_agree_with_the_closure():
    torch.manual_seed(0)
    for model, inputs, method in (
        (
            ResNet18(width=2, in_channels=1, input_size=16, num_classes=4).eval(),
            torch.randn(3, 1, 16, 16),
            "factorized",
        ),
        (Permuted().eval(), torch.randn(2, 1, 6, 6), "sparse closure"),
    ):
        result = analyze(model, inputs, ("standard", "laplacian"), granularity="ops")
        assert result.methods["standard"].startswith(method)
        np.testing.assert_array_equal(result.activations.values, trace(model, inputs, "ops").pattern().values)
        closure, expected = closure_spectrum(model, inputs)
        scale = closure.inverse(np.abs(expected))
        assert np.all(np.abs(result.spectra["standard"].values - expected) <= 1e-9 * scale)
        laplacian = result.spectra["laplacian"]
        np.testing.assert_allclose(
            np.linalg.norm(laplacian.values, axis=1),
            np.linalg.norm(result.activations.values, axis=1),
            rtol=1e-10,
        )
        assert laplacian.eigenvalues is not None
    permuted = analyze(Permuted().eval(), torch.randn(1, 1, 6, 6), granularity="ops")
    assert "'permute'" in permuted.methods["standard"]


def test_rounding_scale():
    """Multi-parent neurons sum over all ancestors (Z|ŝ|); single-parent neurons read their parent."""
    torch.manual_seed(1)
    model, inputs = DigitsCNN().eval(), torch.rand(2, 1, 8, 8)
    recorded = trace(model, inputs[:1], "ops")
    operator = factorized_operator(recorded)
    closure, spectrum = closure_spectrum(model, inputs)
    signal = trace(model, inputs, "ops").pattern().values
    scale = operator.rounding_scale(signal, spectrum)
    full = closure.inverse(np.abs(spectrum))
    layout = recorded.layout
    for index, layer in enumerate(layout.layers):
        nodes = layout.slice(index)
        if layer.kind in ("Conv2d", "Linear", "MaxPool2d"):
            np.testing.assert_allclose(scale[:, nodes], full[:, nodes], rtol=1e-12)
        elif layer.kind in ("ReLU", "Flatten"):  # one parent, the previous layer, position by position
            parent = layout.slice(index - 1)
            np.testing.assert_allclose(
                scale[:, nodes], np.abs(spectrum[:, nodes]) + np.abs(signal[:, parent])
            )


def test_precision_report_definition():
    layout = Layout((Layer("input", (2,), "input"), Layer("deep", (3,), "Linear", parents=(0,))))
    signal = np.array([[1.0, -2.0, 4.0, 0.5, 0.0]])
    spectrum = np.array([[1.0, -2.0, 1e-9, 3.0, 0.0]])
    scale = np.array([[1.0, 2.0, 1e8, 1e3, 0.0]])
    report = layer_precision(layout, signal, spectrum, scale)
    assert report[0].digits > 15 and report[0].below_noise == 0.0
    np.testing.assert_allclose(report[1].digits, -np.log10(EPSILON * 1e8 / 4.0))
    assert report[1].below_noise == 0.5  # 1e-9 < ε·1e8, 3.0 > ε·1e3; the zero coefficient is not counted
    assert report[0].trustworthy and not report[1].trustworthy


def test_exact_mode_agrees_with_float64_where_digits_survive():
    """exact=True adds the integer Möbius inversion; float64 agrees with it to its own noise floor."""
    torch.manual_seed(0)
    model, inputs = DigitsCNN().eval(), torch.randn(2, 1, 8, 8)
    result = analyze(model, inputs, transforms=("standard",), granularity="children", exact=True)
    exact, rounded = result.spectra["standard_exact"].values, result.spectra["standard"].values
    assert result.methods["standard_exact"] == "exact integer Möbius inversion"
    graph = build_graph(model, inputs[:1], "children")
    scale = causal_operator(graph).rounding_scale(result.activations.values, exact)
    assert np.all(np.abs(rounded - exact) <= 64 * EPSILON * scale + 1e-300)


def test_partial_laplacian_in_one_call():
    """k lowest frequencies: NaN beyond k, and captured + residual energy = ‖s‖² per sample."""
    torch.manual_seed(0)
    model, inputs = DigitsCNN().eval(), torch.randn(2, 1, 8, 8)
    result = analyze(model, inputs, transforms=("laplacian",), granularity="children", k=20)
    spectrum, signal = result.spectra["laplacian"], result.activations.values
    assert result.methods["laplacian"] == "20 lowest eigenpairs"
    assert np.all(np.isnan(spectrum.values[:, 20:])) and not np.any(np.isnan(spectrum.values[:, :20]))
    captured = np.nansum(spectrum.values**2, axis=1)
    np.testing.assert_allclose(captured + spectrum.diagnostics["residual_energy"], np.sum(signal**2, axis=1))


def test_operator_is_built_once_per_model_and_shape():
    """A second call reuses the operator and gives the closure's spectrum; another granularity rebuilds."""
    torch.manual_seed(2)
    model = DigitsCNN().eval()
    first = analyze(model, torch.rand(1, 1, 8, 8), granularity="ops")
    inputs = torch.rand(3, 1, 8, 8)
    second = analyze(model, inputs, granularity="ops")
    operators = list(analysis_module._OPERATORS[model].values())
    assert len(operators) == 1 and first.methods == second.methods == {"standard": "factorized"}
    closure, expected = closure_spectrum(model, inputs)
    scale = closure.inverse(np.abs(expected))
    assert np.all(np.abs(second.spectra["standard"].values - expected) <= 1e-12 * scale)
    analyze(model, torch.rand(1, 1, 8, 8), granularity="children")
    assert len(analysis_module._OPERATORS[model]) == 2
