"""Edge weights and layer biases of the neuron graph (:mod:`nsp_pipeline.graph.weights`).

Oracles, none of them computed by the code under test:

- ``local`` weights: each layer's dense Jacobian, ``torch.autograd.functional.jacobian`` of the
  recorded operation (with the shape-only operations it reads through and the unary operations
  merged into it) with respect to its input layers, at the recorded values;
- propagation: the input pushed through the locally weighted DAG with biases read from the
  model's parameters (convolution and linear biases, batch-norm shifts, through the ReLU masks of
  the recorded pre-activations), in scipy sparse matvecs, reproduces every recorded layer;
- ``structural`` weights: closed forms written here from the parameters (kernel entries, the
  ``Linear`` matrix, ``1 / divisor``, the batch-norm scale, the sum of two kernel taps under
  circular padding), and for a linear network the product of its blocks is ``W1 @ W0``;
- the registry: every :class:`WeightRule` has a rule and every entry a weight rule.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nsp_pipeline.graph.build import build_graph
from nsp_pipeline.graph.weights import WEIGHT_RULES, edge_weights, layer_biases, weighted_graph
from nsp_pipeline.model.architectures import Cifar10CNN5, DigitsCNN, MnistTutorialNet
from nsp_pipeline.model.capture import trace
from nsp_pipeline.model.ops import OPERATIONS, WeightRule, is_shape_only

GRANULARITIES = ("children", "ops", "merged")


class Mixed(nn.Module):
    """Convolutions (dilation, groups, circular padding), BN, pools, residual add, cat, arithmetic."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.avg = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.adapt = nn.AdaptiveAvgPool2d(2)
        self.circ = nn.Conv2d(8, 2, 3, padding=1, padding_mode="circular")
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        a = F.relu(self.bn1(self.conv1(x)))
        b = a + torch.sigmoid(self.conv2(a))
        c = torch.cat([self.pool(b), self.avg(b)], 1)
        d = torch.tanh(c) * 0.5 - c / 4
        e = self.circ(self.adapt(d))
        f = e * torch.sigmoid(e)
        return F.log_softmax(self.fc(torch.flatten(f, 1)), dim=1)


class OwnStatistics(nn.Module):
    """Batch norm with the sample's own statistics, and a softmax."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 2)
        self.bn = nn.BatchNorm2d(3, track_running_stats=False)
        self.fc = nn.Linear(27, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return torch.softmax(self.fc(x.flatten(1)), dim=1)


class Arithmetic(nn.Module):
    """Batch norm, then sums, differences, products and quotients by constants, a constant over a layer."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x):
        y = self.bn(x)
        return (torch.relu(y) - 3 * y) / 4 + y + 2 / torch.exp(y)


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input, ReLU, average pooling, linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(3)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return self.fc(self.pool(F.relu(y + x)).flatten(1))


class Permuted(nn.Module):
    """Operations merged into a convolution after a reordering (channels-last), then a linear layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 2)
        self.fc = nn.Linear(27, 2)

    def forward(self, x):
        y = self.conv(x).permute(0, 2, 3, 1)
        return self.fc((torch.tanh(y) * 2 + 1).reshape(x.shape[0], -1))


def sequential_cnn():
    """Every step a child, one of them a container (granularity ``children`` reads them in order)."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, stride=2),
        nn.BatchNorm2d(4),
        nn.Tanh(),
        nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.BatchNorm2d(4), nn.ReLU()),
        nn.AvgPool2d(2),
        nn.Sigmoid(),
        nn.Flatten(),
        nn.Linear(16, 3),
    )


def prepared(model: nn.Module, seed: int = 0) -> nn.Module:
    """The model in float64 and eval mode, with non-trivial batch-norm parameters and statistics."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 2.0)
            nn.init.normal_(module.bias)
            if module.running_mean is not None:
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    return model.double().eval()


def example(shape, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(2, *shape, dtype=torch.float64)


def layer_jacobians(recorded, index: int) -> dict[int, np.ndarray]:
    """Dense Jacobian of layer ``index`` with respect to each of its input layers, by autograd."""
    call = recorded.calls[index]
    parents = tuple(recorded.values[layer] for layer in call.input_layers)
    assert not any(is_shape_only(step) for step in call.absorbed), "test models keep reshapes out of layers"

    def layer(*values):
        tensors = []
        for k, value in enumerate(values):
            for move in call.moves[k] if call.moves else ():
                value = move.replay(value)
            tensors.append(value.reshape(call.inputs[k].shape))
        output = call.replay(*tensors)
        for step in call.absorbed:
            output = step.replay(output)
        return output

    # The replayed layer is the recorded one, so its Jacobian is the layer's.
    torch.testing.assert_close(layer(*parents), recorded.values[index], rtol=0, atol=0)
    size = recorded.values[index][0].numel()
    jacobians = torch.autograd.functional.jacobian(layer, parents, vectorize=True)
    blocks: dict[int, np.ndarray] = {}
    for parent, jacobian in zip(call.input_layers, jacobians):
        block = jacobian.reshape(size, -1).numpy()
        blocks[parent] = blocks.get(parent, 0) + block
    return blocks


def assert_local_weights_are_jacobians(model, x, granularity, incl=True):
    graph = weighted_graph(model, x, "local", granularity, incl)
    recorded = trace(model, x[:1], granularity)
    adjacency = graph.adjacency().tocsr()
    layout = graph.layout
    for index in range(1, len(layout)):
        rows = adjacency[layout.slice(index)].tocsc()
        blocks = layer_jacobians(recorded, index)
        for parent in range(index):
            block = rows[:, layout.slice(parent)].toarray()
            expected = blocks.get(parent, np.zeros_like(block))
            np.testing.assert_allclose(
                block, expected, rtol=1e-12, atol=1e-13, err_msg=f"{granularity}: {layout.names[index]}"
            )


@pytest.mark.parametrize("granularity", ["ops", "merged"])
@pytest.mark.parametrize("model_class", [Mixed, OwnStatistics, ResidualBlock, Arithmetic])
def test_local_weights_are_the_layer_jacobians(model_class, granularity):
    model = prepared(model_class())
    shapes = {Mixed: (2, 6, 6), OwnStatistics: (1, 4, 4), ResidualBlock: (3, 4, 4), Arithmetic: (2, 2, 2)}
    shape = shapes[model_class]
    assert_local_weights_are_jacobians(model, example(shape), granularity)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_local_weights_of_sequential_models(granularity):
    mlp = prepared(nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)))
    assert_local_weights_are_jacobians(mlp, example((5,)), granularity)
    assert_local_weights_are_jacobians(prepared(sequential_cnn()), example((1, 8, 8)), granularity)
    assert_local_weights_are_jacobians(prepared(DigitsCNN()), example((1, 8, 8)), granularity)


def test_local_weights_without_zero_edges():
    """``incl=False`` graphs: the weights of the edges kept are still the Jacobian's entries."""
    assert_local_weights_are_jacobians(prepared(Mixed()), example((2, 6, 6)), "merged", incl=False)
    model, x = prepared(Mixed()), example((2, 6, 6))
    graph = weighted_graph(model, x, "local", "merged", incl=False)
    assert np.all(graph.weights != 0)
    # Structural weights of the kept edges: those of the full graph (the closed forms are tested below).
    full = weighted_graph(model, x, "structural", "merged").adjacency().tocsr()
    kept = weighted_graph(model, x, "structural", "merged", incl=False)
    targets = np.repeat(np.arange(kept.n_nodes), np.diff(kept.indptr))
    np.testing.assert_array_equal(kept.weights, full[targets, kept.indices])


# ---------------------------------------------------------------------------------------------
# Propagation through the locally weighted DAG reproduces the forward pass


def parameter_biases(recorded, index: int) -> np.ndarray:
    """A layer's bias from the model's parameters: conv/linear bias, BN shift, ReLU masks."""
    call = recorded.calls[index]
    shape = tuple(recorded.values[index].shape[1:])
    bias = torch.zeros(shape, dtype=torch.float64)
    if isinstance(call.target, nn.Conv2d | nn.Linear) and call.target.bias is not None:
        per_channel = call.target.bias.detach()
        bias = bias + (per_channel[:, None, None] if isinstance(call.target, nn.Conv2d) else per_channel)
    for step in call.absorbed:
        if isinstance(step.target, nn.BatchNorm2d):
            bn = step.target
            scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias.detach() - bn.running_mean * scale
            bias = scale[:, None, None] * bias + shift[:, None, None]
        elif isinstance(step.target, nn.ReLU) or step.target in (F.relu, torch.relu):
            bias = bias * (step.inputs[0][0] > 0)
        else:  # the others are shape-only or identities in these models
            assert is_shape_only(step) or isinstance(step.target, nn.Dropout)
    return bias.reshape(-1).numpy()


def propagate(graph, x: np.ndarray, biases: np.ndarray) -> list[np.ndarray]:
    """Every layer's value: the weighted sum of its (propagated) parents plus its bias."""
    layout, adjacency = graph.layout, graph.adjacency().tocsr()
    values = np.zeros(graph.n_nodes)
    values[layout.slice(0)] = x
    for index in range(1, len(layout)):
        rows = layout.slice(index)
        values[rows] = adjacency[rows] @ values + biases[rows]
    return [values[layout.slice(index)] for index in range(len(layout))]


@pytest.mark.parametrize(
    "model_class",
    [DigitsCNN, MnistTutorialNet, ResidualBlock, Cifar10CNN5],
)
def test_propagation_reproduces_the_forward_pass(model_class):
    model = prepared(model_class())
    x = example(getattr(model, "input_shape", (3, 4, 4)))
    recorded = trace(model, x[:1], "merged")
    graph = weighted_graph(model, x, "local", "merged")
    expected = np.concatenate(
        [np.zeros(recorded.layout.layers[0].size)]
        + [parameter_biases(recorded, index) for index in range(1, len(recorded.layout))]
    )
    biases = layer_biases(model, x, graph)
    np.testing.assert_allclose(biases, expected, rtol=1e-12, atol=1e-12)
    propagated = propagate(graph, recorded.values[0][0].reshape(-1).numpy(), expected)
    for index, value in enumerate(propagated):
        recorded_value = recorded.values[index][0].reshape(-1).numpy()
        scale = max(1.0, np.abs(recorded_value).max())
        np.testing.assert_allclose(
            value, recorded_value, rtol=0, atol=1e-12 * scale, err_msg=graph.layout.names[index]
        )


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_tangents_pass_through_the_recorded_values(granularity):
    """Non piecewise-linear layers (sigmoid, tanh, softmax, containers): ``A x + b`` is the layer's value.

    ``Permuted`` merges ``tanh``, ``* 2`` and ``+ 1`` into its convolution behind a permute.
    """
    models = [(sequential_cnn(), (1, 8, 8)), (Mixed(), (2, 6, 6)), (OwnStatistics(), (1, 4, 4))]
    for model, shape in [*models, (Permuted(), (2, 4, 4))]:
        if granularity == "children" and not isinstance(model, nn.Sequential):
            continue
        model, x = prepared(model), example(shape)
        graph = weighted_graph(model, x, "local", granularity)
        recorded = trace(model, x[:1], granularity)
        adjacency, biases = graph.adjacency().tocsr(), layer_biases(model, x, graph)
        values = np.concatenate([v[0].reshape(-1).numpy() for v in recorded.values])
        np.testing.assert_allclose(
            adjacency @ values + biases, np.where(_input_mask(graph), 0, values), atol=1e-12
        )


def _input_mask(graph) -> np.ndarray:
    mask = np.zeros(graph.n_nodes, dtype=bool)
    mask[graph.layout.slice(0)] = True
    return mask


# ---------------------------------------------------------------------------------------------
# Structural weights against closed forms


def block(graph, target: int, source: int) -> np.ndarray:
    layout = graph.layout
    return graph.adjacency().tocsr()[layout.slice(target)][:, layout.slice(source)].toarray()


def test_structural_convolution_linear_and_pooling():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, dilation=1)
    model = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 4)).double().eval()
    x = example((2, 8, 8))
    graph = weighted_graph(model, x, "structural", "children")
    weight = conv.weight.detach().numpy()
    conv_block = block(graph, 1, 0).reshape(3, 4, 4, 2, 8, 8)
    # Output (co, oy, ox) reads input (ci, 2 oy - 1 + ty, 2 ox - 1 + tx) through kernel entry (ty, tx).
    for co, ci, oy, ox, ty, tx in [(0, 0, 0, 0, 1, 1), (2, 1, 3, 2, 0, 2), (1, 0, 2, 3, 2, 0)]:
        assert conv_block[co, oy, ox, ci, 2 * oy - 1 + ty, 2 * ox - 1 + tx] == weight[co, ci, ty, tx]
    assert np.count_nonzero(conv_block) == graph.layer_block(1).nnz  # one kernel entry per edge
    np.testing.assert_array_equal(block(graph, 2, 1), np.eye(48))  # ReLU: 1
    pool = block(graph, 3, 2).reshape(3, 2, 2, 3, 4, 4)
    assert set(np.unique(pool)) == {0.0, 1.0} and pool[1, 1, 0, 1, 3, 1] == 1  # max-pool windows: 1
    np.testing.assert_array_equal(block(graph, 5, 4), model[4].weight.detach().numpy())


@pytest.mark.parametrize(
    ("pool", "corner"),
    [
        (nn.AvgPool2d(2), 1 / 4),
        (nn.AvgPool2d(3, stride=2, padding=1), 1 / 9),  # padding counts
        (nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), 1 / 4),
        (nn.AvgPool2d(3, stride=2, padding=1, divisor_override=5), 1 / 5),
        (nn.AdaptiveAvgPool2d(3), 1 / 4),  # 4 -> 3: windows of 2 x 2
    ],
)
def test_structural_average_pooling(pool, corner):
    graph = weighted_graph(nn.Sequential(pool), example((1, 4, 4)), "structural", "children")
    weights = block(graph, 1, 0)
    assert weights[0, 0] == corner
    assert weights[0, 5] == corner  # input (1, 1) is in the first window of every pool here


def test_structural_circular_padding_adds_taps():
    """Length 2, kernel 3, circular padding 1: padded ``[x1, x0, x1, x0]``, so ``x1 -> y0`` is two taps."""
    conv = nn.Conv1d(1, 1, 3, padding=1, padding_mode="circular", bias=False).double()
    graph = weighted_graph(nn.Sequential(conv), example((1, 2)), "structural", "children")
    w = conv.weight.detach().numpy()[0, 0]
    np.testing.assert_allclose(block(graph, 1, 0), [[w[1], w[0] + w[2]], [w[0] + w[2], w[1]]], rtol=1e-15)


def test_structural_batch_norm_and_arithmetic():
    model = prepared(Arithmetic())
    x = example((2, 2, 2))
    graph = weighted_graph(model, x, "structural", "ops")
    names = graph.layout.names
    bn = model.bn
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    np.testing.assert_allclose(block(graph, 1, 0), np.diag(np.repeat(scale, 4)), rtol=1e-14)
    layer = {name: index for index, name in enumerate(names)}
    eye = np.eye(8)
    np.testing.assert_array_equal(block(graph, layer["relu"], 1), eye)
    np.testing.assert_array_equal(block(graph, layer["mul"], 1), 3 * eye)
    np.testing.assert_array_equal(block(graph, layer["sub"], layer["relu"]), eye)
    np.testing.assert_array_equal(block(graph, layer["sub"], layer["mul"]), -eye)
    np.testing.assert_array_equal(block(graph, layer["truediv"], layer["sub"]), eye / 4)
    np.testing.assert_array_equal(block(graph, layer["add"], 1), eye)
    np.testing.assert_array_equal(block(graph, layer["truediv_1"], layer["exp"]), eye)  # 2 / x: nonlinear


def test_linear_network_product_is_the_jacobian():
    """The notebook's ``W0 @ W1`` (Keras stores ``W`` transposed): here ``W1 @ W0``, the net's Jacobian."""
    model = prepared(nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 3)))
    x = example((6,))
    graph = weighted_graph(model, x, "structural", "merged")
    product = block(graph, 2, 1) @ block(graph, 1, 0)
    w0, w1 = model[0].weight.detach().numpy(), model[1].weight.detach().numpy()
    np.testing.assert_allclose(product, w1 @ w0, rtol=1e-14)
    jacobian = torch.autograd.functional.jacobian(model, x[:1]).reshape(3, 6).numpy()
    np.testing.assert_allclose(product, jacobian, rtol=1e-14)


def test_merged_structural_weights_are_the_operations_own():
    """Merged ReLUs and a flatten do not change structural weights: ``fc`` reads ``pool2`` by ``W``."""
    model, x = prepared(DigitsCNN()), example((1, 8, 8))
    graph = build_graph(model, x[:1], "merged")
    weights = graph.with_weights(edge_weights(model, x, graph, "structural"), "structural")
    names = graph.layout.names
    assert names == ["input", "conv1", "pool1", "conv2", "pool2", "fc"]
    np.testing.assert_array_equal(block(weights, 5, 4), model.fc.weight.detach().numpy())
    conv = block(weights, 1, 0).reshape(8, 8, 8, 8, 8)  # conv1 (c, y, x) <- input (y', x'), padding 1
    np.testing.assert_array_equal(conv[:, 3, 4, 2:5, 3:6], model.conv1.weight.detach().numpy()[:, 0])


# ---------------------------------------------------------------------------------------------
# Registry and errors


def test_every_weight_rule_has_a_function_and_every_entry_a_rule():
    assert set(WEIGHT_RULES) == set(WeightRule)
    for entry in OPERATIONS:
        assert isinstance(entry.weights, WeightRule), entry.name


def test_refused_graph_and_kind():
    model = prepared(DigitsCNN())
    x = example((1, 8, 8))
    graph = build_graph(model, x[:1], "merged")
    with pytest.raises(ValueError, match="kind must be one of"):
        edge_weights(model, x, graph, "gradient")
    other = prepared(nn.Sequential(nn.Linear(4, 3)))
    with pytest.raises(ValueError, match="not built from this model"):
        edge_weights(other, example((4,)), graph)
    relabelled = replace(build_graph(model, x[:1], "merged", incl=False), incl=True)
    with pytest.raises(ValueError, match="lacks an edge the weight rules give"):
        edge_weights(model, x, relabelled, "local")
    indices = graph.indices.copy()
    first = graph.layout.offsets[1]  # conv1 (0, 0, 0) reads input pixels (0..1, 0..1)
    indices[graph.indptr[first + 1] - 1] = 63
    with pytest.raises(ValueError, match="has an edge the weight rules do not give"):
        edge_weights(model, x, replace(graph, indices=indices))
