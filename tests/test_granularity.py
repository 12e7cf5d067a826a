"""Granularities ``merged`` and ``children``: edges against layer Jacobians, spectra against a closure.

Oracles as in ``test_edges.py`` and ``test_causal.py``: each merged layer's in-edges equal the
non-zero pattern of the autograd Jacobian of an independent rewrite of that layer (its operation
composed with the operations merged around it) with respect to its parent layers, and causal
spectra equal a dense triangular solve with the dense closure of the merged graph. Under
``children``, a child that reads the previous child through functional operations (global pooling
in ``forward``) is checked the same way against a rewrite of those operations and the child.
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
    assert_same_pattern,
    double_copy,
    jacobian_pattern,
    probes,
    randomize_with_zeros,
    unit_copy,
)
from torch import nn

from nsp_pipeline import analyze
from nsp_pipeline.core.errors import NotFactorizableError
from nsp_pipeline.graph.build import build_graph, graph_from_trace
from nsp_pipeline.graph.edges import op_edges
from nsp_pipeline.graph.weights import operation_weights
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


# ---------------------------------------------------------------------------------------------
# Granularity children: functional operations between children


def small_mobilenet_v2(input_size: int = 64) -> MobileNetV2:
    """MobileNetV2 at 5 % width: at 64×64 its last feature map is 2×2, so the global pooling matters."""
    return MobileNetV2(
        width_mult=0.05, input_size=input_size, last_channel=16, round_nearest=2, num_classes=10
    )


def pooled_head(model: MobileNetV2) -> Callable:
    """Independent rewrite of what ``classifier``'s layer computes from ``features``' output."""
    return lambda features: model.classifier(torch.flatten(F.adaptive_avg_pool2d(features, 1), 1))


def test_mobilenet_v2_children_read_through_the_functional_pooling():
    torch.manual_seed(7)
    model, x = small_mobilenet_v2().eval(), torch.randn(2, 3, 64, 64)
    recorded = trace(model, x, "children")
    assert recorded.layout.names == ["input", "features", "classifier"]
    assert [layer.parents for layer in recorded.layout.layers] == [(), (0,), (1,)]
    classifier = recorded.layout.layers[2]
    assert classifier.kind == "Sequential"
    assert classifier.description.startswith("adaptive_avg_pool2d((1, 1)) -> flatten(1) -> Sequential(")
    with torch.no_grad():
        features = model.features(x)
        expected = pooled_head(model)(features)
        assert torch.equal(recorded.values[1], features)
        assert torch.equal(recorded.values[2], expected) and torch.equal(recorded.model_output, model(x))
        call = recorded.calls[2]
        assert call.input_layers == (1,) and torch.equal(call.inputs[0], features)
        assert torch.equal(call.replay(features), expected)
    assert recorded.calls[1].target is model.features  # a child read directly stays the module itself


@pytest.mark.parametrize("incl", [True, False])
def test_mobilenet_v2_classifier_edges_and_weights_equal_the_jacobian_of_pooling_and_classifier(incl):
    """The composed layer's edges against the Jacobian pattern, its local weights against the Jacobian."""
    torch.manual_seed(8)
    model = double_copy(randomize_with_zeros(small_mobilenet_v2(), seed=9))
    call = trace(model, torch.randn(1, 3, 64, 64, dtype=torch.float64), "children").calls[2]
    features = call.inputs[0]
    shape = tuple(features.shape[1:])
    if incl:
        expected = jacobian_pattern(pooled_head(unit_copy(model)), [probes(shape)])
    else:
        expected = jacobian_pattern(pooled_head(model), [features])
    n_in = features[0].numel()
    block = np.zeros((10, n_in), dtype=bool)
    for k, sources, targets in op_edges(call, incl):
        assert k == 0
        block[targets, sources] = True
    assert_same_pattern(block, expected, "classifier")

    jacobian = torch.autograd.functional.jacobian(pooled_head(model), features).reshape(10, n_in).numpy()
    weights = operation_weights(call, "local")
    local = np.zeros((10, n_in))
    for _, sources, targets, values in weights.parts:
        np.add.at(local, (targets, sources), values)
    np.testing.assert_allclose(local, jacobian, rtol=1e-12, atol=1e-15)
    with torch.no_grad():  # affine: output = J f + b
        offset = (pooled_head(model)(features) - features.reshape(1, -1) @ torch.from_numpy(jacobian).T)[0]
    np.testing.assert_allclose(weights.bias, offset.numpy(), rtol=1e-10, atol=1e-12)


def positive_reach(module: nn.Module, inputs: torch.Tensor) -> np.ndarray:
    """``(n_out, n_in)``: which inputs each output of ``module`` depends on structurally (autograd).

    Every convolution averages (weights ``1 / fan_in``), batch norm is the identity and the input a
    small positive constant: every value stays in ``(0, 6)``, every partial derivative along a path
    is positive, so the Jacobian is non-zero exactly where a path of structural edges exists.
    """
    positive = double_copy(module)
    with torch.no_grad():
        for sub in positive.modules():
            if isinstance(sub, nn.Conv2d):
                sub.weight.fill_(1.0 / sub.weight[0].numel())
            elif isinstance(sub, nn.BatchNorm2d):
                sub.reset_parameters()  # mean 0, variance 1, weight 1, bias 0
    point = torch.full_like(inputs[:1], 1e-3, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda t: positive(t).reshape(-1), point)
    return jacobian.reshape(jacobian.shape[0], -1).numpy() != 0


def test_analyze_mobilenet_v2_children_matches_block_closure_oracle():
    """The causal spectrum against forward substitution with the closure of input -> features -> classifier.

    Blocks of the closure: ``features`` from the input by autograd reach (:func:`positive_reach`);
    ``classifier`` reads every ``features`` neuron (global pooling, dense linear layer), so it reaches
    every input that some ``features`` neuron reaches.
    """
    torch.manual_seed(10)
    model, inputs = small_mobilenet_v2().eval(), torch.randn(2, 3, 64, 64)
    result = analyze(model, inputs, ("standard",), granularity="children")
    layout = result.activations.layout
    assert layout.names == ["input", "features", "classifier"]
    values, spectrum = result.activations.values, result.spectra["standard"].values
    s_in, s_features, s_classifier = (values[:, layout.slice(i)] for i in range(3))

    reach = positive_reach(model.features, inputs)  # (features, input)
    head = jacobian_pattern(pooled_head(unit_copy(model)), [probes((16, 2, 2))])  # (classifier, features)
    assert head.all() and reach.all()  # at 64×64 every features neuron sees the whole input
    head_reach = (head.astype(int) @ reach.astype(int)) > 0  # (classifier, input)
    expected_features = s_features - s_in @ reach.T
    expected_classifier = s_classifier - s_in @ head_reach.T - expected_features @ head.T
    expected = np.concatenate([s_in, expected_features, expected_classifier], axis=1)
    scale = np.concatenate(  # Z |ŝ| per node, the oracle's own scale
        [
            np.abs(s_in),
            np.abs(expected_features) + np.abs(s_in) @ reach.T,
            np.abs(expected_classifier) + np.abs(s_in) @ head_reach.T + np.abs(expected_features) @ head.T,
        ],
        axis=1,
    )
    assert np.all(np.abs(spectrum - expected) <= 1e-9 * scale + 1e-300)


class PadPoolNet(nn.Module):
    """Functional operations before the first child (padding the input) and between the two children."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        x = self.conv(F.pad(x, (1, 1, 1, 1)))  # reads 2×6×6 from a 2×4×4 input
        return torch.sigmoid(self.fc(torch.flatten(F.max_pool2d(x, 2), 1)))  # sigmoid after the last child


def pad_pool_rewrites(model: PadPoolNet) -> list[Callable]:
    return [
        lambda x: model.conv(F.pad(x, (1, 1, 1, 1))),
        lambda c: model.fc(F.max_pool2d(c, 2).reshape(len(c), -1)),
    ]


@pytest.mark.parametrize("incl", [True, False])
def test_children_compose_functional_operations_on_the_input_and_between_children(incl):
    torch.manual_seed(11)
    model = double_copy(randomize_with_zeros(PadPoolNet(), seed=12))
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    graph = build_graph(model, x, "children", incl=incl)
    assert graph.layout.names == ["input", "conv", "fc"]
    recorded = trace(model, x, "children")
    descriptions = [layer.description.split(" -> ") for layer in recorded.layout.layers[1:]]
    assert [[step.split("(")[0] for step in steps] for steps in descriptions] == [
        ["pad", "Conv2d"],
        ["max_pool2d", "flatten", "Linear"],
    ]
    value = x[:1]
    for index, (rewrite, unit_rewrite) in enumerate(
        zip(pad_pool_rewrites(model), pad_pool_rewrites(unit_copy(model))), start=1
    ):
        shape = tuple(value.shape[1:])
        expected = (
            jacobian_pattern(unit_rewrite, [probes(shape)]) if incl else jacobian_pattern(rewrite, [value])
        )
        assert_only_from(graph, index, [index - 1])
        block = graph.layer_block(index)[:, graph.layout.slice(index - 1)]
        assert_same_pattern(block, expected, f"layer {index}")
        with torch.no_grad():
            value = rewrite(value)
        np.testing.assert_allclose(recorded.values[index][:1].numpy(), value.numpy(), rtol=1e-12, atol=1e-14)
    with torch.no_grad():
        assert torch.equal(recorded.model_output, torch.sigmoid(recorded.values[2]))  # after the last child


class ReadsTwoChildren(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.second = nn.Linear(4, 4)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        y = self.first(x)
        return self.head(torch.cat([y, self.second(y)], dim=1))


class PoolsDependingOnData(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(12, 2)

    def forward(self, x):
        x = self.conv(x)
        if x.sum() > 0:  # torch.fx cannot trace this
            x = F.avg_pool2d(x, 2)
        else:
            x = F.max_pool2d(x, 2)
        return self.fc(x.flatten(1))


def test_children_refuse_operations_that_read_several_children_or_cannot_be_traced():
    with pytest.raises(
        TraceError, match=r"child 'head' \(Linear\) reads 'first', 'second'.*granularity 'ops'"
    ):
        trace(ReadsTwoChildren(), torch.randn(2, 4), "children")
    with pytest.raises(
        TraceError,
        match=r"child 'fc' \(Linear\) reads 12 values.*'conv' has 48.*torch.fx cannot trace.*'ops'",
    ):
        trace(PoolsDependingOnData(), torch.randn(2, 1, 4, 4), "children")


@pytest.mark.parametrize(("make", "shape"), architectures()[:3])
def test_children_read_directly_keep_their_module_as_the_operation(make, shape):
    """Where every child reads the previous one (up to reshapes), each layer's operation is its child."""
    model = make().eval()
    recorded = trace(model, torch.randn(1, *shape), "children")
    children = dict(model.named_children())
    assert recorded.layout.names[1:] == list(children)
    assert all(
        call.target is children[name] for name, call in zip(recorded.layout.names[1:], recorded.calls[1:])
    )
