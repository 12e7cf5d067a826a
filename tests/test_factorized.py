"""The factorised causal transform against the sparse closure and a dense oracle."""

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from oracles import dense_zeta
from torch import nn

from nsp_pipeline.core.errors import NotFactorizableError
from nsp_pipeline.graph.build import graph_from_trace
from nsp_pipeline.graph.kronecker import AxisMap, Relation, Term
from nsp_pipeline.model.architectures import VGG11, DigitsCNN, MnistTutorialNet, MobileNetV2, ResNet18
from nsp_pipeline.model.capture import trace
from nsp_pipeline.transforms.causal.builder import factorized_operator
from nsp_pipeline.transforms.causal.closure import causal_operator
from nsp_pipeline.transforms.causal.precision import precision_table


def random_map(rng, shape, density=0.4):
    return (rng.random(shape) < density).astype(float)


@pytest.mark.parametrize("seed", range(5))
def test_axis_maps_against_dense_booleans(seed):
    rng = np.random.default_rng(seed)
    a, b = random_map(rng, (5, 6)), random_map(rng, (6, 4))
    c = random_map(rng, (5, 6))
    ones = AxisMap.ones(5, 6)
    for left, dense_left in ((AxisMap(sp.csr_array(a)), a), (ones, np.ones((5, 6)))):
        right = AxisMap(sp.csr_array(b))
        np.testing.assert_array_equal(left.compose(right).sparse().toarray() > 0, (dense_left @ b) > 0)
        other = AxisMap(sp.csr_array(c))
        np.testing.assert_array_equal(left.intersect(other).sparse().toarray() > 0, (dense_left * c) > 0)
        assert left.contains(other) == bool(np.all(dense_left >= c))
        values = rng.normal(size=(2, 6, 3))
        np.testing.assert_allclose(left.apply(values, 1), np.einsum("ts,bsk->btk", dense_left, values))


def test_union_counts_each_ancestor_once():
    """Overlapping terms that are not nested: inclusion–exclusion sums each source once."""
    rng = np.random.default_rng(1)
    terms = [Term(*(AxisMap(sp.csr_array(random_map(rng, (3, 4), 0.6))) for _ in range(3))) for _ in range(3)]
    relation = Relation(terms)
    dense = relation.dense().astype(float)
    for term in terms:
        assert (term.dense() <= relation.dense()).all()
    assert len(relation.terms) > 1  # the terms overlap without nesting
    values = rng.normal(size=(2, 4, 4, 4))
    np.testing.assert_allclose(relation.apply(values).reshape(2, -1), values.reshape(2, -1) @ dense.T)


class Permuted(nn.Module):
    def forward(self, x):
        return torch.relu(x.permute(0, 2, 3, 1))


class Linears(nn.Module):
    """``Linear`` on the last axis of a (C, H, W) layer; ``F.linear`` with as many outputs as inputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(6, 5)
        self.weight = nn.Parameter(torch.randn(40, 40))

    def forward(self, x):
        hidden = self.fc(torch.relu(self.conv(x)))
        return F.linear(hidden.flatten(1), self.weight)


def models():
    torch.manual_seed(0)
    strided = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2),
        nn.AvgPool2d(2, ceil_mode=True),
        nn.Tanh(),
        nn.Conv2d(4, 2, 1),
        nn.Flatten(),
        nn.Linear(18, 5),
    )
    return [
        ("strided", strided, (2, 9, 9), "ops"),
        ("mnist-children", MnistTutorialNet(), (1, 28, 28), "children"),
        ("digits-ops", DigitsCNN(), (1, 8, 8), "ops"),
        ("linear-shapes", Linears(), (1, 4, 6), "ops"),
        (
            "vgg11",
            VGG11(width=1, in_channels=1, input_size=32, classifier_width=16, num_classes=10),
            (1, 32, 32),
            "ops",
        ),
        ("resnet18", ResNet18(width=2, in_channels=1, input_size=24, num_classes=10), (1, 24, 24), "ops"),
        (
            "resnet18-children",
            ResNet18(width=2, in_channels=1, input_size=16, num_classes=10),
            (1, 16, 16),
            "children",
        ),
        (
            "vgg11-children",
            VGG11(width=1, in_channels=1, input_size=32, classifier_width=8, num_classes=10),
            (1, 32, 32),
            "children",
        ),
        (
            "mobilenet_v2",
            MobileNetV2(width_mult=0.05, input_size=8, last_channel=16, round_nearest=2, num_classes=10),
            (3, 8, 8),
            "ops",
        ),
    ]


@pytest.mark.parametrize(("name", "model", "shape", "granularity"), models(), ids=lambda p: str(p))
def test_relations_and_spectra_equal_the_closure(name, model, shape, granularity):
    recorded = trace(model.eval(), torch.randn(1, *shape), granularity)
    graph = graph_from_trace(recorded)
    closure = causal_operator(graph)
    operator = factorized_operator(recorded)

    # Every ancestor relation equals the closure's block, neuron by neuron.
    zeta = closure.zeta().tocsr()
    layout = graph.layout
    for layer, relations in enumerate(operator.ancestors):
        rows = zeta[layout.slice(layer)]
        for source in range(layer):
            block = rows[:, layout.slice(source)].toarray() > 0
            if source in relations:
                np.testing.assert_array_equal(relations[source].dense(), block)
            else:
                assert not block.any()

    signals = np.random.default_rng(0).normal(size=(3, graph.n_nodes))
    expected = closure.forward(signals)
    scale = closure.inverse(np.abs(expected))  # (Z|ŝ|)_v
    spectrum = operator.forward(signals)
    assert np.all(np.abs(spectrum - expected) <= 1e-9 * scale)
    assert np.all(np.abs(operator.inverse(spectrum) - signals) <= 1e-9 * scale)


def test_against_dense_solve():
    """Independent of the sparse closure: a dense triangular solve on a small residual network."""
    model = ResNet18(width=1, in_channels=1, input_size=16, num_classes=4).eval()
    recorded = trace(model, torch.randn(1, 1, 16, 16), "ops")
    graph = graph_from_trace(recorded)
    zeta = dense_zeta(graph)
    signal = np.random.default_rng(2).normal(size=(2, graph.n_nodes))
    expected = scipy.linalg.solve_triangular(zeta.astype(float), signal.T, lower=True, unit_diagonal=True).T
    spectrum = factorized_operator(recorded).forward(signal)
    assert np.all(np.abs(spectrum - expected) <= 1e-9 * (np.abs(expected) @ zeta.T))


def test_not_factorizable_names_the_layer():
    recorded = trace(Permuted(), torch.randn(1, 2, 3, 4), "ops")
    with pytest.raises(NotFactorizableError, match=r"'permute'"):
        factorized_operator(recorded)


def test_precision_in_the_sweep_against_the_closure():
    """Digits and share below noise, computed with the spectrum, equal the definition on the closure's values.

    The oracle's rounding scale is ``(Z|ŝ|)_v`` from the sparse closure, except where a neuron reads
    one parent position by position (``|ŝ_v| + |s_parent|``); a batch gives each sample's own result.
    """
    torch.manual_seed(0)
    model = ResNet18(width=2, in_channels=1, input_size=16, num_classes=4).eval()
    inputs = torch.randn(3, 1, 16, 16)
    recorded = trace(model, inputs[:1], "ops")
    operator = factorized_operator(recorded)
    closure = causal_operator(graph_from_trace(recorded))
    signal = trace(model, inputs, "ops").pattern().values
    spectrum, digits, below_noise = operator.spectrum_with_precision(signal)
    expected = closure.forward(signal)
    full_scale = closure.inverse(np.abs(expected))
    assert np.all(np.abs(spectrum - expected) <= 1e-12 * full_scale)
    np.testing.assert_array_equal(spectrum, operator.forward(signal))

    layout, scale = recorded.layout, closure.inverse(np.abs(spectrum))
    for index, parents in enumerate(operator.single_parents):
        if parents is not None:
            ((parent, _),) = parents.items()  # ReLU, batch norm, flatten: one parent, same positions
            nodes = layout.slice(index)
            scale[:, nodes] = np.abs(spectrum[:, nodes]) + np.abs(signal[:, layout.slice(parent)])
    oracle_digits, oracle_below = precision_table(layout, signal, spectrum, scale)
    np.testing.assert_allclose(digits, oracle_digits, rtol=0, atol=1e-9)
    sizes = np.array([layer.size for layer in layout.layers])
    assert np.all(np.abs(below_noise - oracle_below) * sizes <= 2)  # at most 2 borderline coefficients
    for sample in range(len(signal)):
        alone = operator.spectrum_with_precision(signal[sample : sample + 1])
        for batched, single in zip((spectrum, digits, below_noise), alone):
            np.testing.assert_array_equal(batched[sample : sample + 1], single)
