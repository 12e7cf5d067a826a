"""The built-in VGG-11, ResNet-18, MobileNetV2 and the notebook's CIFAR-10 CNN: published sizes,
tracing, graphs, causal transform."""

from types import SimpleNamespace

import networkx as nx
import numpy as np
import pytest
import scipy.linalg
import torch
from oracles import assert_close_to_scale, dense_zeta
from torch.fx.passes.shape_prop import ShapeProp

from nsp_pipeline.graph.build import build_graph
from nsp_pipeline.model.architectures import (
    ARCHITECTURES,
    VGG11,
    Cifar10CNN5,
    MobileNetV2,
    ResNet18,
    round_channels,
)
from nsp_pipeline.model.artifact import build_model
from nsp_pipeline.model.capture import trace
from nsp_pipeline.transforms.causal.closure import causal_operator

# Published parameter counts, and activations per sample at 224×224 in 'ops' granularity
# (input included; every op, BatchNorm, ReLU, flatten and eval-mode dropout is a layer).
FULL_SIZE = {
    "vgg11": (VGG11, 132_863_336, 16_608_744),
    "resnet18": (ResNet18, 11_689_512, 8_381_416),
    "mobilenet_v2": (MobileNetV2, 3_504_872, 19_833_768),
}

# Reduced models small enough for a dense closure oracle; node counts in 'ops' granularity.
# VGG-11 needs 32×32 inputs (five max-pools): at the smallest width 1 its input, first
# convolution and ReLU alone are 3,072 nodes. MobileNetV2 keeps all 17 blocks, at a width
# where most of them run at 1×1 or 2×2.
REDUCED = {
    "vgg11": (
        {"width": 1, "in_channels": 1, "input_size": 32, "classifier_width": 16, "num_classes": 10},
        6370,
    ),
    "resnet18": ({"width": 2, "in_channels": 1, "input_size": 24, "num_classes": 10}, 3906),
    "mobilenet_v2": (
        {"width_mult": 0.05, "input_size": 8, "last_channel": 16, "round_nearest": 2, "num_classes": 10},
        4322,
    ),
}


def reduced(name, seed=0):
    return build_model({"architecture": name, "kwargs": REDUCED[name][0], "seed": seed})


def test_registry():
    assert ARCHITECTURES["vgg11"] is VGG11
    assert ARCHITECTURES["resnet18"] is ResNet18
    assert ARCHITECTURES["mobilenet_v2"] is MobileNetV2
    assert ARCHITECTURES["cifar10_cnn5"] is Cifar10CNN5
    assert {"digits_cnn", "mnist_tutorial"} <= set(ARCHITECTURES)


@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_parameters_shapes_and_activations(name):
    """Built on the meta device: nothing is allocated or computed, only shapes propagate."""
    cls, n_parameters, n_activations = FULL_SIZE[name]
    with torch.device("meta"):
        model = cls()
    assert model.input_shape == (3, 224, 224)
    assert sum(p.numel() for p in model.parameters()) == n_parameters
    graph_module = torch.fx.symbolic_trace(model)
    example = torch.zeros(1, *model.input_shape, device="meta")
    assert model(example).shape == (1, 1000)
    ShapeProp(graph_module).propagate(example)
    sizes = [n.meta["tensor_meta"].shape[1:].numel() for n in graph_module.graph.nodes if n.op != "output"]
    assert sum(sizes) == n_activations


def test_parameter_names_follow_the_usual_layout():
    """Reference ``state_dict`` files load as ``weights``: same names and shapes."""
    with torch.device("meta"):
        vgg, resnet, mobilenet = VGG11(), ResNet18(), MobileNetV2()
    expected = {
        vgg: {
            "features.0.weight": (64, 3, 3, 3),
            "features.18.weight": (512, 512, 3, 3),
            "classifier.0.weight": (4096, 25088),
            "classifier.3.weight": (4096, 4096),
            "classifier.6.bias": (1000,),
        },
        resnet: {
            "conv1.weight": (64, 3, 7, 7),
            "bn1.running_var": (64,),
            "layer1.0.conv2.weight": (64, 64, 3, 3),
            "layer2.0.downsample.0.weight": (128, 64, 1, 1),
            "layer4.1.bn2.num_batches_tracked": (),
            "fc.weight": (1000, 512),
        },
        mobilenet: {
            "features.0.0.weight": (32, 3, 3, 3),
            "features.1.conv.0.0.weight": (32, 1, 3, 3),
            "features.1.conv.1.weight": (16, 32, 1, 1),
            "features.2.conv.0.0.weight": (96, 16, 1, 1),
            "features.2.conv.1.0.weight": (96, 1, 3, 3),
            "features.2.conv.3.running_mean": (24,),
            "features.18.0.weight": (1280, 320, 1, 1),
            "classifier.1.weight": (1000, 1280),
        },
    }
    for model, shapes in expected.items():
        state = model.state_dict()
        for key, shape in shapes.items():
            assert tuple(state[key].shape) == shape, key
    assert len(resnet.state_dict()) == 122
    assert len(mobilenet.state_dict()) == 314


def test_round_channels():
    values = (32, 16 * 0.5, 24 * 0.35, 96 * 0.1, 1280 * 1.4)
    assert [round_channels(v) for v in values] == [32, 8, 8, 16, 1792]
    assert MobileNetV2(width_mult=0.5, num_classes=3).last_channel == 1280  # as in the paper
    assert MobileNetV2(width_mult=0.5, num_classes=3, last_channel=64).classifier[1].in_features == 64


def test_bad_arguments():
    with pytest.raises(ValueError, match="32×32"):
        VGG11(input_size=16)
    with pytest.raises(ValueError, match="width"):
        ResNet18(width=0)


@pytest.mark.parametrize("name", REDUCED)
def test_reduced_models_run_trace_and_seed(name):
    model = reduced(name)
    assert model(torch.zeros(2, *model.input_shape)).shape == (2, 10)
    torch.fx.symbolic_trace(model)
    same, other = reduced(name), reduced(name, seed=1)
    for key, value in model.state_dict().items():
        assert torch.equal(value, same.state_dict()[key]), key
    assert any(
        not torch.equal(value, other.state_dict()[key])
        for key, value in model.state_dict().items()
        if value.is_floating_point()
    )


@pytest.mark.parametrize("name", REDUCED)
def test_reduced_causal_transform_matches_dense_oracle(name):
    model = reduced(name)
    torch.manual_seed(5)
    example = torch.randn(1, *model.input_shape)
    graph = build_graph(model, example, "ops")
    assert graph.n_nodes == REDUCED[name][1] == trace(model, example, "ops").layout.n_nodes
    operator = causal_operator(graph)
    zeta = dense_zeta(graph)
    assert operator.n_closure_entries == int(zeta.sum()) - graph.n_nodes

    signals = np.random.default_rng(0).normal(size=(3, graph.n_nodes))
    expected = scipy.linalg.solve_triangular(zeta.astype(float), signals.T, lower=True, unit_diagonal=True).T
    assert_close_to_scale(operator.forward(signals), expected, zeta)


@pytest.mark.parametrize("name", REDUCED)
def test_reduced_children_granularity(name):
    """Direct children are the layers; containers (stages, ``features``) get composite edges."""
    model = reduced(name)
    graph = build_graph(model, torch.randn(1, *model.input_shape), "children")
    children = [child for child, _ in model.named_children()]
    assert [layer.name for layer in graph.layout.layers] == ["input", *children]
    assert graph.layout.layers[-1].shape == (10,)
    assert graph.n_edges > 0


# The graph-view notebook's CIFAR-10 CNN (Keras model CIFAR-10_CNN5.h5), as its printed output
# states it: per layer the output shape (H, W, C), the weights' fan-in and the parameters.
NOTEBOOK_LAYERS = {
    "conv_0": ((30, 30, 32), 3 * 3 * 3, (3 * 3 * 3 + 1) * 32),
    "max_pooling2d": ((15, 15, 32), 2 * 2, 0),
    "conv_1": ((13, 13, 64), 3 * 3 * 32, (3 * 3 * 32 + 1) * 64),
    "max_pooling2d_1": ((6, 6, 64), 2 * 2, 0),  # the 13th row and column are in no window
    "conv_2": ((4, 4, 64), 3 * 3 * 64, (3 * 3 * 64 + 1) * 64),
    "dense_0": ((64,), 1024, (1024 + 1) * 64),
    "dense_1": ((10,), 64, (64 + 1) * 10),
}
NOTEBOOK_OFFSETS = {
    "conv_0": 3072,
    "max_pooling2d": 31872,
    "conv_1": 39072,
    "max_pooling2d_1": 49888,
    "conv_2": 52192,
    "dense_0": 53216,
    "dense_1": 53280,
    "end": 53290,
}
NOTEBOOK_DENSITY = 0.0016151387935422858  # nx.density of the notebook's graph


def test_cifar10_cnn5_parameters_and_output():
    model = Cifar10CNN5().eval()
    n_parameters = sum(parameters for _, _, parameters in NOTEBOOK_LAYERS.values())
    assert n_parameters == 122_570
    assert sum(p.numel() for p in model.parameters()) == n_parameters
    assert model(torch.zeros(2, *model.input_shape)).shape == (2, 10)
    torch.fx.symbolic_trace(model)


def test_cifar10_cnn5_merged_graph_is_the_notebooks():
    """Nodes, layer names and offsets, edges per layer and density as the notebook printed them."""
    graph = build_graph(Cifar10CNN5(), torch.zeros(1, 3, 32, 32), granularity="merged")
    layout = graph.layout
    assert layout.names == ["input", *NOTEBOOK_LAYERS]
    assert dict(zip([*layout.names[1:], "end"], layout.offsets[1:].tolist())) == NOTEBOOK_OFFSETS
    assert graph.n_nodes == 53_290

    edges_into = np.diff(graph.indptr[layout.offsets])  # edges whose target is in each layer
    expected = [int(np.prod(shape)) * fan_in for shape, fan_in, _ in NOTEBOOK_LAYERS.values()]
    assert edges_into.tolist() == [0, *expected]
    assert graph.n_edges == sum(expected) == 4_586_624

    # networkx's density reads only these three methods: no 4.6-million-edge DiGraph needed
    n = graph.n_nodes
    counts = SimpleNamespace(
        number_of_nodes=lambda: n, number_of_edges=lambda: graph.n_edges, is_directed=lambda: True
    )
    assert graph.n_edges / (n * (n - 1)) == nx.density(counts) == NOTEBOOK_DENSITY
