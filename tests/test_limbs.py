"""Exact multi-limb causal transform on the factorised operator, the float64 digit estimate, and the
per-layer choice of arithmetic: all against Python-integer Möbius inversion on the sparse closure."""

from fractions import Fraction

import numpy as np
import pytest
import torch
from oracles import dense_zeta
from torch import nn

from nsp_pipeline import build_graph, causal_operator, trace
from nsp_pipeline.analysis.analyze import analyze
from nsp_pipeline.model.architectures import VGG11, ResNet18
from nsp_pipeline.transforms.api import transform
from nsp_pipeline.transforms.causal.builder import factorized_operator
from nsp_pipeline.transforms.causal.exact import exact_causal_spectrum
from nsp_pipeline.transforms.causal.limbs import lowest_exponent, normalise, split
from nsp_pipeline.transforms.causal.precision import FLOAT64_DIGITS

SMALL_MODELS = {  # ≤ 5k neurons at granularity "ops": the Python-integer closure is quick (MobileNetV2's
    # smallest is 17k neurons, 80 s; its residual adds are ResNet's, checked here)
    "resnet18": (lambda: ResNet18(width=1, in_channels=1, input_size=16, num_classes=4), (1, 16, 16)),
    "pooled": (
        lambda: nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(3, 4, 3, padding=1),
            nn.AdaptiveAvgPool2d(5),
            nn.Flatten(),
            nn.Linear(100, 6),
            nn.ReLU(),
            nn.Linear(6, 3),
        ),
        (1, 6, 6),
    ),
}


def _small(name: str, n_samples: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    make, shape = SMALL_MODELS[name]
    model = make().eval()
    inputs = torch.randn(n_samples, *shape)
    return model, inputs


def _python_fractions(values: np.ndarray) -> list[Fraction]:
    return [Fraction(float(v)) for v in values.ravel()]


def _correct_digits(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Correct significant digits of each value (17: equal; -inf: non-zero where exact is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        digits = -np.log10(np.abs(got - exact) / np.abs(exact))
    return np.where(got == exact, 17.0, np.minimum(digits, 17.0))


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_limb_spectrum_equals_python_integer_mobius(name):
    model, inputs = _small(name)
    recorded = trace(model, inputs, "ops")
    signal = recorded.pattern().values
    operator = factorized_operator(trace(model, inputs[:1], "ops"))
    limbs = operator.exact_forward(signal)
    reference = exact_causal_spectrum(causal_operator(build_graph(model, inputs[:1], "ops")), signal)
    assert signal.shape[1] <= 5_000
    shift = limbs.exponent - reference.exponent  # both are exact: numerators differ by 2**shift
    assert shift >= 0
    got = [int(n) << shift for n in limbs.numerators().ravel()]
    assert got == [int(n) for n in reference.numerators.ravel()]
    assert max(limbs.limb_counts()) >= 2  # more than one limb was exercised


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_exact_round_trip_rebuilds_every_bit(name):
    """Z ŝ = s in the same (exact) arithmetic gives back the float32 activations bit for bit."""
    model, inputs = _small(name)
    signal = trace(model, inputs, "ops").pattern().values
    operator = factorized_operator(trace(model, inputs[:1], "ops"))
    rebuilt = operator.exact_inverse(operator.exact_forward(signal)).to_float()
    assert np.array_equal(rebuilt.view(np.int64), signal.view(np.int64))
    assert np.array_equal(signal.astype(np.float32).astype(np.float64), signal)  # they were float32


def test_exact_spectrum_solves_the_dense_system():
    """Σ_{u ≤ v} ŝ_u = s_v with ŝ in Python fractions from the limbs (dense zeta matrix)."""
    model, inputs = _small("pooled", n_samples=1)
    graph = build_graph(model, inputs, "ops")
    signal = trace(model, inputs, "ops").pattern().values
    limbs = factorized_operator(trace(model, inputs, "ops")).exact_forward(signal)
    spectrum = [Fraction(int(n)) * Fraction(2) ** limbs.exponent for n in limbs.numerators()[0]]
    zeta = dense_zeta(graph)
    for v, expected in enumerate(_python_fractions(signal[0])):
        assert sum((spectrum[u] for u in np.flatnonzero(zeta[v])), Fraction(0)) == expected


def test_split_and_normalise_keep_python_integer_values():
    rng = np.random.default_rng(0)
    values = (
        np.concatenate([rng.standard_normal(200) * 10.0 ** rng.integers(-20, 20, 200), [0.0, 1e-40, -3.0e38]])
        .astype(np.float32)
        .astype(np.float64)
    )
    exponent, width = lowest_exponent(values), 24
    limbs = split(values, exponent, width)
    assert np.all(np.abs(limbs) <= 2 ** (width - 1))
    for index, value in enumerate(values):
        total = sum(int(limbs[k, index]) << (width * k) for k in range(len(limbs)))
        assert Fraction(total) * Fraction(2) ** exponent == Fraction(float(value))
    unnormalised = rng.integers(-(2**50), 2**50, size=(3, 100)).astype(np.float64)
    expected = [sum(int(unnormalised[k, i]) << (width * k) for k in range(3)) for i in range(100)]
    normalised = normalise(unnormalised.copy(), width)
    assert np.all(np.abs(normalised) <= 2 ** (width - 1))
    got = [sum(int(normalised[k, i]) << (width * k) for k in range(len(normalised))) for i in range(100)]
    assert got == expected


def test_term_bound_covers_every_ancestor_sum():
    """The limb width rests on a bound of the terms each sum adds: at least every node's ancestors."""
    model, inputs = _small("resnet18", n_samples=1)
    operator = factorized_operator(trace(model, inputs, "ops"))
    ancestors = dense_zeta(build_graph(model, inputs, "ops")).sum(axis=1) - 1
    layout = operator.layout
    for index, plan in enumerate(operator._plan.layers):
        if operator.single_parents[index] is None and index > 0:
            assert plan.max_terms >= ancestors[layout.slice(index)].max()


def test_residual_add_reads_its_parent_activation():
    """x + f(x): x is an ancestor of f(x), so the add's ancestor sum is f(x)'s activation."""
    model, inputs = _small("resnet18", n_samples=1)
    recorded = trace(model, inputs, "ops")
    operator = factorized_operator(recorded)
    adds = [i for i, layer in enumerate(recorded.layout.layers) if layer.name.startswith("add")]
    shortcuts = [i for i in adds if operator.single_parents[i] is not None]
    assert len(shortcuts) == 5  # the identity shortcuts; the three downsampling ones are not dominated
    zeta = dense_zeta(build_graph(model, inputs, "ops"))
    strict = zeta & ~np.eye(len(zeta), dtype=bool)
    for index in shortcuts:
        (parent,) = operator.single_parents[index]
        nodes, parent_nodes = recorded.layout.slice(index), recorded.layout.slice(parent)
        assert np.array_equal(strict[nodes], zeta[parent_nodes])  # same position, same down-set


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_estimated_digits_are_not_optimistic(name):
    model, inputs = _small(name)
    signal = trace(model, inputs, "ops").pattern().values
    operator = factorized_operator(trace(model, inputs[:1], "ops"))
    spectrum, _, _, estimated = operator.spectrum_with_estimates(signal)
    exact = exact_causal_spectrum(causal_operator(build_graph(model, inputs[:1], "ops")), signal).to_float()
    for index in range(len(operator.layout)):
        nodes = operator.layout.slice(index)
        actual = _correct_digits(spectrum[:, nodes], exact[:, nodes]).min(axis=1)
        assert np.all(actual >= estimated[:, index]), operator.layout.layers[index].name


@pytest.fixture(scope="module")
def cancelling_vgg():
    """VGG-11 at 64 pixels: its adaptive pooling reads one input in some bins (ŝ = 0 there), which
    float64 gets only as rounding noise of the huge ancestor sums."""
    torch.manual_seed(0)
    model = VGG11(input_size=64, width=1, classifier_width=16, num_classes=4).eval()
    inputs = torch.randn(2, *model.input_shape)
    operator = factorized_operator(trace(model, inputs[:1], "ops"))
    activations = trace(model, inputs, "ops").pattern()
    return model, inputs, operator, activations


def test_float64_loses_digits_where_the_estimate_says(cancelling_vgg):
    _, _, operator, activations = cancelling_vgg
    spectrum = transform(activations, operator, precision="float64")
    exact = operator.exact_forward(activations.values).to_float()
    estimated = spectrum.diagnostics["significant_digits"]
    pooled = activations.layout.index("avgpool")
    nodes = activations.layout.slice(pooled)
    actual = _correct_digits(spectrum.values[:, nodes], exact[:, nodes])
    assert estimated[:, pooled].max() < 1 and np.all(actual.min(axis=1) < 1)
    assert not spectrum.diagnostics["exact_arithmetic"].any()
    assert np.array_equal(spectrum.values, operator.forward(activations.values))  # float64 path unchanged


def test_auto_recomputes_exactly_where_float64_falls_short(cancelling_vgg):
    model, inputs, operator, activations = cancelling_vgg
    result = analyze(model, inputs, granularity="ops", digits=6)
    spectrum = result.spectra["standard"]
    exact = operator.exact_forward(activations.values).to_float()
    flags = spectrum.diagnostics["exact_arithmetic"]
    pooled = activations.layout.index("avgpool")
    assert flags[:, pooled].all() and flags.any(axis=0).sum() < len(activations.layout) + 1
    for index, report in enumerate(result.precision["standard"]):
        nodes = activations.layout.slice(index)
        actual = _correct_digits(spectrum.values[:, nodes], exact[:, nodes]).min()
        assert actual >= 6 and report.digits >= 6
        assert report.arithmetic == ("exact" if flags[0, index] else "float64")
        if flags[0, index]:
            assert report.digits == FLOAT64_DIGITS and actual >= FLOAT64_DIGITS


def test_forced_exact_and_unknown_precision(cancelling_vgg):
    _, _, operator, activations = cancelling_vgg
    spectrum = transform(activations, operator, precision="exact")
    assert spectrum.diagnostics["exact_arithmetic"].all()
    small = _small("resnet18")
    graph_operator = causal_operator(build_graph(small[0], small[1][:1], "ops"))
    signal = trace(*small, "ops").pattern()
    closure_exact = transform(signal, graph_operator, precision="exact").values
    reference = exact_causal_spectrum(graph_operator, signal.values).to_float()
    assert np.array_equal(closure_exact, reference)
    with pytest.raises(ValueError, match=r"unknown precision 'double'.*auto"):
        transform(activations, operator, precision="double")


def test_auto_recomputes_only_the_samples_that_need_it():
    model, inputs = _small("resnet18")
    operator = factorized_operator(trace(model, inputs[:1], "ops"))
    activations = trace(model, inputs, "ops").pattern()
    float64 = transform(activations, operator, precision="float64")
    lowest = float64.diagnostics["significant_digits"].min(axis=1)
    low, high = int(np.argmin(lowest)), int(np.argmax(lowest))
    assert lowest[low] < lowest[high]
    spectrum = transform(activations, operator, digits=float(lowest.mean()))  # between the two samples
    flags = spectrum.diagnostics["exact_arithmetic"]
    assert flags[low].any() and not flags[high].any()
    assert np.array_equal(spectrum.values[high], float64.values[high])
    end = activations.layout.slice(int(np.flatnonzero(flags[low])[-1])).stop
    exact = operator.exact_forward(activations.values).to_float()
    assert np.array_equal(spectrum.values[low, :end], exact[low, :end])
    assert np.array_equal(spectrum.values[low, end:], float64.values[low, end:])
