"""Granularity ``merged``: what merges, edges against layer Jacobians, spectra against a dense closure.

Oracles as in ``test_edges.py`` and ``test_causal.py``: each merged layer's in-edges equal the
non-zero pattern of the autograd Jacobian of an independent rewrite of that layer (its operation
composed with the operations merged around it) with respect to its parent layers, and causal
spectra equal a dense triangular solve with the dense closure of the merged graph.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from conftest import SmallResNet
from oracles import assert_close_to_scale, dense_zeta
from test_edges import (
    DataDependent,
    assert_only_from,
    assert_parent_blocks,
    double_copy,
    randomize_with_zeros,
    unit_copy,
)
from torch import nn

from nsp_pipeline import analyze
from nsp_pipeline.core.errors import NotFactorizableError
from nsp_pipeline.graph.build import build_graph, graph_from_trace
from nsp_pipeline.model.architectures import VGG11, DigitsCNN, MobileNetV2, ResNet18
from nsp_pipeline.model.capture import TraceError, trace
from nsp_pipeline.transforms.causal.builder import factorized_operator
from nsp_pipeline.transforms.causal.closure import causal_operator


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# Networks and independent rewrites of their merged layers

Spec = list[tuple[str, list[str], Callable]]


class ConvNet(nn.Module):
    """conv -> relu (in place) -> max-pool -> flatten -> linear -> sigmoid."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.fc = nn.Linear(27, 4)

    def forward(self, x):
        x = self.pool(self.relu(self.conv(x)))
        return torch.sigmoid(self.fc(torch.flatten(x, 1)))


def conv_net_spec(model: ConvNet) -> Spec:
    return [
        ("conv", ["input"], lambda x: F.relu(model.conv(x))),
        ("pool", ["conv"], model.pool),
        ("fc", ["pool"], lambda p: torch.sigmoid(model.fc(p.reshape(len(p), -1)))),
    ]


class PermuteNet(nn.Module):
    """Permutes between layers: a linear layer on the channel axis, then on the transposed result."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.mix = nn.Linear(3, 4)
        self.fc = nn.Linear(80, 3)

    def forward(self, x):
        a = torch.tanh(self.conv(x).permute(0, 2, 3, 1))  # permute and tanh merge into conv
        b = self.mix(a).transpose(1, 2).relu()  # mix reads conv through the permute
        return self.fc(b.flatten(1))  # fc reads mix through transpose and flatten


def permute_net_spec(model: PermuteNet) -> Spec:
    return [
        ("conv", ["input"], lambda x: torch.tanh(model.conv(x))),
        ("mix", ["conv"], lambda c: torch.relu(model.mix(c.permute(0, 2, 3, 1)))),
        ("fc", ["mix"], lambda m: model.fc(m.transpose(1, 2).reshape(len(m), -1))),
    ]


def small_resnet_spec(model: SmallResNet) -> Spec:
    return [
        ("stem", ["input"], lambda x: F.relu(model.stem(x))),
        ("branch", ["stem"], lambda s: torch.sigmoid(model.branch(s))),
        ("add", ["stem", "branch"], lambda s, b: s + b),
        ("pool", ["add"], model.pool),
        ("head", ["pool"], lambda p: model.head(p.reshape(len(p), -1))),
    ]


class Rules(nn.Module):
    """Elementwise operations that stay layers: on the input, on a value read twice, on a returned value."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 3)

    def forward(self, x):
        y = x * 2 + 1  # 'mul' stays (the input holds the inputs); '+ 1' merges into it
        a = self.fc(y)
        b, c = torch.sigmoid(a), torch.relu(a)  # a is read twice: both stay
        d = self.fc2(b * c)
        return d, torch.tanh(d)  # d is returned: tanh stays


def rules_spec(model: Rules) -> Spec:
    return [
        ("mul", ["input"], lambda x: x * 2 + 1),
        ("fc", ["mul"], model.fc),
        ("sigmoid", ["fc"], torch.sigmoid),
        ("relu", ["fc"], torch.relu),
        ("mul_1", ["sigmoid", "relu"], lambda b, c: b * c),
        ("fc2", ["mul_1"], model.fc2),
        ("tanh", ["fc2"], torch.tanh),
    ]


NETWORKS = [
    pytest.param(ConvNet, conv_net_spec, (2, 5, 5), 7, id="conv-relu-pool-flatten-linear-sigmoid"),
    pytest.param(PermuteNet, permute_net_spec, (2, 4, 5), 9, id="permute-between-layers"),
    pytest.param(SmallResNet, small_resnet_spec, (1, 8, 8), 9, id="small-resnet"),
    pytest.param(Rules, rules_spec, (4,), 9, id="elementwise-that-stays"),
]


def check_merged(model: nn.Module, spec: Spec, unit_spec: Spec, x: torch.Tensor, incl: bool) -> None:
    """Names, parents, values and, per parent, the block of in-edges against the rewrite's Jacobian."""
    graph = build_graph(model, x, "merged", incl=incl)
    names = ["input", *(name for name, _, _ in spec)]
    assert graph.layout.names == names
    recorded = trace(model, x[:1], "merged").pattern()
    values = {"input": x[:1]}
    for index, ((name, parents, fn), (_, _, unit_fn)) in enumerate(zip(spec, unit_spec), start=1):
        parent_ids = [names.index(p) for p in parents]
        assert graph.layout.layers[index].parents == tuple(sorted(parent_ids))
        assert_only_from(graph, index, parent_ids)
        block = graph.layer_block(index)
        assert_parent_blocks(block, graph.layout, index, name, parents, parent_ids, fn, unit_fn, values, incl)
        with torch.no_grad():
            values[name] = fn(*(values[q] for q in parents))
        np.testing.assert_allclose(recorded.layer(name), values[name].numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("incl", [True, False])
@pytest.mark.parametrize(("make", "spec_of", "shape", "n_ops_layers"), NETWORKS)
def test_edges_equal_jacobian_of_each_merged_layer(make, spec_of, shape, n_ops_layers, incl):
    torch.manual_seed(0)
    model = double_copy(randomize_with_zeros(make(), seed=5))
    x = torch.randn(2, *shape, dtype=torch.float64)
    check_merged(model, spec_of(model), spec_of(unit_copy(model)), x, incl)
    ops, merged = trace(model, x, "ops"), trace(model, x, "merged")
    assert len(ops.layout) == n_ops_layers > len(merged.layout)
    assert torch.equal(merged.values[-1], ops.values[-1])


def test_exact_edges_drop_where_a_merged_relu_is_flat():
    """incl=False: a conv neuron whose merged ReLU is cut off at the reference sample has no in-edges."""
    torch.manual_seed(0)
    model, x = ConvNet(), torch.randn(1, 2, 5, 5)
    with torch.no_grad():
        cut = (model.conv(x) <= 0).reshape(-1).numpy()
    assert cut.any() and not cut.all()
    graph = build_graph(model, x, "merged", incl=False)
    in_degree = np.diff(graph.indptr)[graph.layout.slice("conv")]
    assert not in_degree[cut].any() and in_degree[~cut].all()
    assert build_graph(model, x, "merged", incl=True).n_edges > graph.n_edges


@pytest.mark.parametrize("incl", [True, False])
@pytest.mark.parametrize(("make", "spec_of", "shape", "n_ops_layers"), NETWORKS)
def test_closure_spectrum_matches_dense_oracle(make, spec_of, shape, n_ops_layers, incl):
    torch.manual_seed(1)
    graph = build_graph(make(), torch.randn(1, *shape), "merged", incl=incl)
    zeta = dense_zeta(graph)
    signal = np.random.default_rng(0).normal(size=(3, graph.n_nodes))
    expected = scipy.linalg.solve_triangular(zeta.astype(float), signal.T, lower=True, unit_diagonal=True).T
    assert_close_to_scale(causal_operator(graph).forward(signal), expected, zeta)


# ---------------------------------------------------------------------------------------------
# Built-in architectures: fewer layers, same ancestors, same last layer, factorised transform


def architectures():
    return [
        pytest.param(DigitsCNN, (1, 8, 8), id="digits_cnn"),
        pytest.param(
            lambda: VGG11(width=1, in_channels=1, input_size=32, classifier_width=16, num_classes=10),
            (1, 32, 32),
            id="vgg11",
        ),
        pytest.param(
            lambda: ResNet18(width=1, in_channels=1, input_size=16, num_classes=4), (1, 16, 16), id="resnet18"
        ),
        pytest.param(
            lambda: MobileNetV2(
                width_mult=0.05, input_size=8, last_channel=16, round_nearest=2, num_classes=10
            ),
            (3, 8, 8),
            id="mobilenet_v2",
        ),
    ]


@pytest.mark.parametrize(("make", "shape"), architectures())
def test_architectures_shrink_and_keep_the_transform(make, shape):
    torch.manual_seed(2)
    model, x = make().eval(), torch.randn(1, *shape)
    merged, ops = trace(model, x, "merged"), trace(model, x, "ops")
    assert len(merged.layout) < len(ops.layout) and merged.layout.n_nodes < ops.layout.n_nodes
    assert torch.equal(merged.values[-1], ops.values[-1])
    assert set(merged.layout.names) < set(ops.layout.names)

    # Same ancestors: merged node (layer, p) is ops node (layer, p) of the operation it is named after.
    graph = graph_from_trace(merged)
    zeta = dense_zeta(graph)
    nodes = np.arange(ops.layout.n_nodes)
    kept = np.concatenate([nodes[ops.layout.slice(name)] for name in merged.layout.names])
    np.testing.assert_array_equal(zeta, dense_zeta(graph_from_trace(ops))[np.ix_(kept, kept)])

    signal = np.random.default_rng(3).normal(size=(2, graph.n_nodes))
    expected = scipy.linalg.solve_triangular(zeta.astype(float), signal.T, lower=True, unit_diagonal=True).T
    operator = factorized_operator(merged)
    assert_close_to_scale(operator.forward(signal), expected, zeta)
    scale = np.abs(expected) @ zeta.T.astype(float)  # the round trip sums Z |ŝ|
    assert np.all(np.abs(operator.inverse(expected) - signal) <= 1e-9 * scale)


def test_layers_are_named_after_the_operation_that_absorbed_the_others():
    torch.manual_seed(4)
    model, x = DigitsCNN().eval(), torch.rand(3, 1, 8, 8)
    merged, ops = trace(model, x, "merged"), trace(model, x, "ops")
    assert merged.layout.names == ["input", "conv1", "pool1", "conv2", "pool2", "fc"]
    assert ops.layout.names[1:4] == ["conv1", "relu1", "pool1"] and len(ops.layout) == 9
    conv1 = merged.layout.layers[1]
    assert conv1.kind == "Conv2d" and conv1.description.endswith("-> ReLU")
    pattern, ops_pattern = merged.pattern(), ops.pattern()
    for name, holds in (("conv1", "relu1"), ("pool1", "pool1"), ("conv2", "relu2"), ("pool2", "pool2")):
        np.testing.assert_array_equal(pattern.layer(name), ops_pattern.layer(holds))
    np.testing.assert_array_equal(pattern.predictions, ops_pattern.predictions)
    assert merged.output_layer == len(merged.layout) - 1


def test_permuted_values_stay_in_the_order_of_the_layer_that_holds_them():
    torch.manual_seed(5)
    model, x = PermuteNet().eval(), torch.randn(3, 2, 4, 5)
    pattern = trace(model, x, "merged").pattern()
    with torch.no_grad():
        np.testing.assert_allclose(pattern.layer("conv"), torch.tanh(model.conv(x)).numpy(), rtol=1e-6)
        mixed = model.mix(torch.tanh(model.conv(x)).permute(0, 2, 3, 1)).relu()
    np.testing.assert_allclose(pattern.layer("mix"), mixed.numpy(), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# analyze, factorised transform, errors


@pytest.mark.parametrize(
    ("make", "shape", "method"),
    [
        pytest.param(SmallResNet, (1, 8, 8), "factorized", id="small-resnet"),
        pytest.param(ConvNet, (2, 5, 5), "factorized", id="conv-net"),
        pytest.param(PermuteNet, (2, 4, 5), "sparse closure", id="permute-net"),
    ],
)
def test_analyze_merged_matches_dense_oracle(make, shape, method):
    torch.manual_seed(6)
    model, inputs = make().eval(), torch.randn(3, *shape)
    result = analyze(model, inputs, ("standard",), granularity="merged")
    assert result.methods["standard"].startswith(method)
    activations = result.activations
    assert activations.layout == trace(model, inputs[:1], "merged").layout
    zeta = dense_zeta(build_graph(model, inputs[:1], "merged"))
    expected = scipy.linalg.solve_triangular(
        zeta.astype(float), activations.values.T, lower=True, unit_diagonal=True
    ).T
    assert_close_to_scale(result.spectra["standard"].values, expected, zeta)


def test_reading_through_a_permute_is_not_factorizable():
    recorded = trace(PermuteNet().eval(), torch.randn(1, 2, 4, 5), "merged")
    with pytest.raises(NotFactorizableError, match=r"'mix' \(Linear\).*through permute.*reorders"):
        factorized_operator(recorded)


def test_untraceable_model_raises_trace_error():
    with pytest.raises(TraceError, match=r"'merged' granularities need.*'children' still works"):
        trace(DataDependent(), torch.rand(2, 3) + 0.1, "merged")
