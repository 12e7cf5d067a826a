"""The built-in VGG-11, ResNet-18, MobileNetV2 and the notebook's CIFAR-10 CNN: published sizes,
torchvision's module trees and ``state_dict`` layouts, tracing, graphs, causal transform.

The reference module trees and ``state_dict`` keys (``TORCHVISION_*``, at the end of the file) were
written out from torchvision's definitions (``torchvision/models/vgg.py``, ``resnet.py``,
``mobilenetv2.py`` and ``ops/misc.py``'s ``Conv2dNormActivation``), built with their defaults;
torchvision itself does not install beside this torch.
"""

import ast
import re
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
# convolution and ReLU alone are 3,072 nodes, and its 8×1×1 last map pools to 8×7×7 (392
# neurons, and 392 more after flatten). MobileNetV2 keeps all 17 blocks, at a width
# where most of them run at 1×1 or 2×2.
REDUCED = {
    "vgg11": (
        {"width": 1, "in_channels": 1, "input_size": 32, "classifier_width": 16, "num_classes": 10},
        7138,
    ),
    "resnet18": ({"width": 2, "in_channels": 1, "input_size": 24, "num_classes": 10}, 3906),
    "mobilenet_v2": (
        {"width_mult": 0.05, "input_size": 8, "last_channel": 16, "round_nearest": 2, "num_classes": 10},
        4322,
    ),
}


TORCHVISION_NAMES = ["vgg11", "resnet18", "mobilenet_v2"]


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


def torchvision_modules(name):
    """``(qualified name, class name)`` of each submodule of torchvision's model, ``named_modules`` order."""
    return [tuple(line.split(" ")) for line in TORCHVISION[name][0].splitlines()]


def torchvision_state(name):
    """``(key, shape)`` of every entry of torchvision's ``state_dict``, in its order."""
    return [
        (key, ast.literal_eval(shape))
        for key, shape in (line.split(" ", 1) for line in TORCHVISION[name][1].splitlines())
    ]


def state_dict_from_list(name, device):
    """A ``state_dict`` with torchvision's keys and shapes: normal floats, batch counts as int64."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in torchvision_state(name):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7, dtype=torch.int64, device=device)
        elif device == "meta":
            state[key] = torch.empty(shape, device="meta")
        else:
            state[key] = torch.randn(shape, generator=generator).abs_() + 0.5  # valid running_var too
    return state


@pytest.mark.parametrize("name", TORCHVISION_NAMES)
def test_module_tree_is_torchvisions(name):
    """Every submodule's qualified name and class, in order, as torchvision defines the model."""
    with torch.device("meta"):
        model = ARCHITECTURES[name]()
    modules = [(key, type(module).__name__) for key, module in model.named_modules() if key]
    assert modules == torchvision_modules(name)
    assert [key for key, _ in model.named_children()] == [
        key for key, _ in torchvision_modules(name) if "." not in key
    ]


@pytest.mark.parametrize("name", TORCHVISION_NAMES)
def test_state_dict_keys_and_shapes_are_torchvisions(name):
    with torch.device("meta"):
        model = ARCHITECTURES[name]()
    assert [(key, tuple(value.shape)) for key, value in model.state_dict().items()] == torchvision_state(name)


@pytest.mark.parametrize("name", TORCHVISION_NAMES)
def test_torchvision_state_dict_loads_strict_at_every_input_size(name):
    """Strict loads at 32, 64 and 224 (parameters do not depend on the input size); a wrong shape fails."""
    for size in (32, 64, 224):
        with torch.device("meta"):
            model = ARCHITECTURES[name](input_size=size)
        model.load_state_dict(state_dict_from_list(name, "meta"), strict=True)
    state = state_dict_from_list(name, "meta")
    key, shape = torchvision_state(name)[0]
    state[key] = torch.empty(shape[0] + 1, *shape[1:], device="meta")
    with pytest.raises(RuntimeError, match=re.escape(key)):
        model.load_state_dict(state, strict=True)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_state_dict_values_load(name):
    """Loaded on the CPU, every parameter and buffer holds the given value (VGG-11's 0.5 GB: on meta only)."""
    model = ARCHITECTURES[name]()
    state = state_dict_from_list(name, "cpu")
    model.load_state_dict(state, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("name", TORCHVISION_NAMES)
@pytest.mark.parametrize("size", [32, 64, 224])
def test_output_shapes_at_every_input_size(name, size):
    with torch.device("meta"):
        model = ARCHITECTURES[name](input_size=size).eval()
        assert model.input_shape == (3, size, size)
        assert model(torch.zeros(2, 3, size, size)).shape == (2, 1000)
        if name == "vgg11":  # torchvision's AdaptiveAvgPool2d((7, 7)) whatever the input size
            assert model.avgpool(model.features(torch.zeros(2, 3, size, size))).shape == (2, 512, 7, 7)


def test_vgg11_width_scales_the_classifier_input():
    """``width`` thins every convolution, and the classifier reads ``channels × 7 × 7`` at every size."""
    for size in (32, 64, 224):
        with torch.device("meta"):
            model = VGG11(width=8, classifier_width=16, input_size=size)
        assert model.features[-3].out_channels == 512 * 8 // 64
        assert model.classifier[0].in_features == 64 * 7 * 7


def test_vgg11_pools_a_1x1_map_to_49_copies():
    """At 32×32 the five max-pools leave 1×1, which pooling to 7×7 repeats (each window is that pixel)."""
    torch.manual_seed(0)
    model = VGG11(width=2, in_channels=1, input_size=32, classifier_width=8, num_classes=3).eval()
    x = torch.randn(2, 1, 32, 32)
    features = model.features(x)
    assert features.shape == (2, 16, 1, 1)
    pooled = model.avgpool(features)
    assert torch.equal(pooled, features.expand(2, 16, 7, 7))


def test_mobilenet_v2_pools_functionally():
    """No ``avgpool`` child: the classifier reads the spatial mean of ``features`` (a closed form)."""
    torch.manual_seed(0)
    model = MobileNetV2(width_mult=0.1, input_size=64, last_channel=16, num_classes=5).eval()
    assert [key for key, _ in model.named_children()] == ["features", "classifier"]
    x = torch.randn(2, 3, 64, 64)
    features = model.features(x)
    assert features.shape[2:] == (2, 2)
    expected = model.classifier(features.mean(dim=(2, 3)))
    torch.testing.assert_close(model(x), expected, rtol=1e-6, atol=1e-7)


def test_resnet18_blocks_reuse_one_relu():
    """torchvision's BasicBlock applies its one ``relu`` twice: after ``bn1`` and after the sum."""
    graph_module = torch.fx.symbolic_trace(ResNet18(width=1, num_classes=2, input_size=32))
    calls = [node.target for node in graph_module.graph.nodes if node.op == "call_module"]
    assert calls.count("layer2.0.relu") == 2
    assert calls.index("layer2.0.bn2") < calls.index("layer2.0.downsample.0")  # torchvision's order


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
    """Direct children are the layers; containers (stages, ``features``) get composite edges.

    MobileNetV2's global pooling is functional (as torchvision's): ``classifier`` reads as many
    values as ``features`` holds only because the reduced model's last map is 1×1.
    """
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


# ---------------------------------------------------------------------------------------------
# torchvision's models with their defaults: ``named_modules`` (qualified name, class) and
# ``state_dict`` (key, shape), in order.

TORCHVISION_VGG11_MODULES = """\
features Sequential
features.0 Conv2d
features.1 ReLU
features.2 MaxPool2d
features.3 Conv2d
features.4 ReLU
features.5 MaxPool2d
features.6 Conv2d
features.7 ReLU
features.8 Conv2d
features.9 ReLU
features.10 MaxPool2d
features.11 Conv2d
features.12 ReLU
features.13 Conv2d
features.14 ReLU
features.15 MaxPool2d
features.16 Conv2d
features.17 ReLU
features.18 Conv2d
features.19 ReLU
features.20 MaxPool2d
avgpool AdaptiveAvgPool2d
classifier Sequential
classifier.0 Linear
classifier.1 ReLU
classifier.2 Dropout
classifier.3 Linear
classifier.4 ReLU
classifier.5 Dropout
classifier.6 Linear
"""

TORCHVISION_VGG11_STATE = """\
features.0.weight (64, 3, 3, 3)
features.0.bias (64,)
features.3.weight (128, 64, 3, 3)
features.3.bias (128,)
features.6.weight (256, 128, 3, 3)
features.6.bias (256,)
features.8.weight (256, 256, 3, 3)
features.8.bias (256,)
features.11.weight (512, 256, 3, 3)
features.11.bias (512,)
features.13.weight (512, 512, 3, 3)
features.13.bias (512,)
features.16.weight (512, 512, 3, 3)
features.16.bias (512,)
features.18.weight (512, 512, 3, 3)
features.18.bias (512,)
classifier.0.weight (4096, 25088)
classifier.0.bias (4096,)
classifier.3.weight (4096, 4096)
classifier.3.bias (4096,)
classifier.6.weight (1000, 4096)
classifier.6.bias (1000,)
"""

TORCHVISION_RESNET18_MODULES = """\
conv1 Conv2d
bn1 BatchNorm2d
relu ReLU
maxpool MaxPool2d
layer1 Sequential
layer1.0 BasicBlock
layer1.0.conv1 Conv2d
layer1.0.bn1 BatchNorm2d
layer1.0.relu ReLU
layer1.0.conv2 Conv2d
layer1.0.bn2 BatchNorm2d
layer1.1 BasicBlock
layer1.1.conv1 Conv2d
layer1.1.bn1 BatchNorm2d
layer1.1.relu ReLU
layer1.1.conv2 Conv2d
layer1.1.bn2 BatchNorm2d
layer2 Sequential
layer2.0 BasicBlock
layer2.0.conv1 Conv2d
layer2.0.bn1 BatchNorm2d
layer2.0.relu ReLU
layer2.0.conv2 Conv2d
layer2.0.bn2 BatchNorm2d
layer2.0.downsample Sequential
layer2.0.downsample.0 Conv2d
layer2.0.downsample.1 BatchNorm2d
layer2.1 BasicBlock
layer2.1.conv1 Conv2d
layer2.1.bn1 BatchNorm2d
layer2.1.relu ReLU
layer2.1.conv2 Conv2d
layer2.1.bn2 BatchNorm2d
layer3 Sequential
layer3.0 BasicBlock
layer3.0.conv1 Conv2d
layer3.0.bn1 BatchNorm2d
layer3.0.relu ReLU
layer3.0.conv2 Conv2d
layer3.0.bn2 BatchNorm2d
layer3.0.downsample Sequential
layer3.0.downsample.0 Conv2d
layer3.0.downsample.1 BatchNorm2d
layer3.1 BasicBlock
layer3.1.conv1 Conv2d
layer3.1.bn1 BatchNorm2d
layer3.1.relu ReLU
layer3.1.conv2 Conv2d
layer3.1.bn2 BatchNorm2d
layer4 Sequential
layer4.0 BasicBlock
layer4.0.conv1 Conv2d
layer4.0.bn1 BatchNorm2d
layer4.0.relu ReLU
layer4.0.conv2 Conv2d
layer4.0.bn2 BatchNorm2d
layer4.0.downsample Sequential
layer4.0.downsample.0 Conv2d
layer4.0.downsample.1 BatchNorm2d
layer4.1 BasicBlock
layer4.1.conv1 Conv2d
layer4.1.bn1 BatchNorm2d
layer4.1.relu ReLU
layer4.1.conv2 Conv2d
layer4.1.bn2 BatchNorm2d
avgpool AdaptiveAvgPool2d
fc Linear
"""

TORCHVISION_RESNET18_STATE = """\
conv1.weight (64, 3, 7, 7)
bn1.weight (64,)
bn1.bias (64,)
bn1.running_mean (64,)
bn1.running_var (64,)
bn1.num_batches_tracked ()
layer1.0.conv1.weight (64, 64, 3, 3)
layer1.0.bn1.weight (64,)
layer1.0.bn1.bias (64,)
layer1.0.bn1.running_mean (64,)
layer1.0.bn1.running_var (64,)
layer1.0.bn1.num_batches_tracked ()
layer1.0.conv2.weight (64, 64, 3, 3)
layer1.0.bn2.weight (64,)
layer1.0.bn2.bias (64,)
layer1.0.bn2.running_mean (64,)
layer1.0.bn2.running_var (64,)
layer1.0.bn2.num_batches_tracked ()
layer1.1.conv1.weight (64, 64, 3, 3)
layer1.1.bn1.weight (64,)
layer1.1.bn1.bias (64,)
layer1.1.bn1.running_mean (64,)
layer1.1.bn1.running_var (64,)
layer1.1.bn1.num_batches_tracked ()
layer1.1.conv2.weight (64, 64, 3, 3)
layer1.1.bn2.weight (64,)
layer1.1.bn2.bias (64,)
layer1.1.bn2.running_mean (64,)
layer1.1.bn2.running_var (64,)
layer1.1.bn2.num_batches_tracked ()
layer2.0.conv1.weight (128, 64, 3, 3)
layer2.0.bn1.weight (128,)
layer2.0.bn1.bias (128,)
layer2.0.bn1.running_mean (128,)
layer2.0.bn1.running_var (128,)
layer2.0.bn1.num_batches_tracked ()
layer2.0.conv2.weight (128, 128, 3, 3)
layer2.0.bn2.weight (128,)
layer2.0.bn2.bias (128,)
layer2.0.bn2.running_mean (128,)
layer2.0.bn2.running_var (128,)
layer2.0.bn2.num_batches_tracked ()
layer2.0.downsample.0.weight (128, 64, 1, 1)
layer2.0.downsample.1.weight (128,)
layer2.0.downsample.1.bias (128,)
layer2.0.downsample.1.running_mean (128,)
layer2.0.downsample.1.running_var (128,)
layer2.0.downsample.1.num_batches_tracked ()
layer2.1.conv1.weight (128, 128, 3, 3)
layer2.1.bn1.weight (128,)
layer2.1.bn1.bias (128,)
layer2.1.bn1.running_mean (128,)
layer2.1.bn1.running_var (128,)
layer2.1.bn1.num_batches_tracked ()
layer2.1.conv2.weight (128, 128, 3, 3)
layer2.1.bn2.weight (128,)
layer2.1.bn2.bias (128,)
layer2.1.bn2.running_mean (128,)
layer2.1.bn2.running_var (128,)
layer2.1.bn2.num_batches_tracked ()
layer3.0.conv1.weight (256, 128, 3, 3)
layer3.0.bn1.weight (256,)
layer3.0.bn1.bias (256,)
layer3.0.bn1.running_mean (256,)
layer3.0.bn1.running_var (256,)
layer3.0.bn1.num_batches_tracked ()
layer3.0.conv2.weight (256, 256, 3, 3)
layer3.0.bn2.weight (256,)
layer3.0.bn2.bias (256,)
layer3.0.bn2.running_mean (256,)
layer3.0.bn2.running_var (256,)
layer3.0.bn2.num_batches_tracked ()
layer3.0.downsample.0.weight (256, 128, 1, 1)
layer3.0.downsample.1.weight (256,)
layer3.0.downsample.1.bias (256,)
layer3.0.downsample.1.running_mean (256,)
layer3.0.downsample.1.running_var (256,)
layer3.0.downsample.1.num_batches_tracked ()
layer3.1.conv1.weight (256, 256, 3, 3)
layer3.1.bn1.weight (256,)
layer3.1.bn1.bias (256,)
layer3.1.bn1.running_mean (256,)
layer3.1.bn1.running_var (256,)
layer3.1.bn1.num_batches_tracked ()
layer3.1.conv2.weight (256, 256, 3, 3)
layer3.1.bn2.weight (256,)
layer3.1.bn2.bias (256,)
layer3.1.bn2.running_mean (256,)
layer3.1.bn2.running_var (256,)
layer3.1.bn2.num_batches_tracked ()
layer4.0.conv1.weight (512, 256, 3, 3)
layer4.0.bn1.weight (512,)
layer4.0.bn1.bias (512,)
layer4.0.bn1.running_mean (512,)
layer4.0.bn1.running_var (512,)
layer4.0.bn1.num_batches_tracked ()
layer4.0.conv2.weight (512, 512, 3, 3)
layer4.0.bn2.weight (512,)
layer4.0.bn2.bias (512,)
layer4.0.bn2.running_mean (512,)
layer4.0.bn2.running_var (512,)
layer4.0.bn2.num_batches_tracked ()
layer4.0.downsample.0.weight (512, 256, 1, 1)
layer4.0.downsample.1.weight (512,)
layer4.0.downsample.1.bias (512,)
layer4.0.downsample.1.running_mean (512,)
layer4.0.downsample.1.running_var (512,)
layer4.0.downsample.1.num_batches_tracked ()
layer4.1.conv1.weight (512, 512, 3, 3)
layer4.1.bn1.weight (512,)
layer4.1.bn1.bias (512,)
layer4.1.bn1.running_mean (512,)
layer4.1.bn1.running_var (512,)
layer4.1.bn1.num_batches_tracked ()
layer4.1.conv2.weight (512, 512, 3, 3)
layer4.1.bn2.weight (512,)
layer4.1.bn2.bias (512,)
layer4.1.bn2.running_mean (512,)
layer4.1.bn2.running_var (512,)
layer4.1.bn2.num_batches_tracked ()
fc.weight (1000, 512)
fc.bias (1000,)
"""

TORCHVISION_MOBILENET_V2_MODULES = """\
features Sequential
features.0 Conv2dNormActivation
features.0.0 Conv2d
features.0.1 BatchNorm2d
features.0.2 ReLU6
features.1 InvertedResidual
features.1.conv Sequential
features.1.conv.0 Conv2dNormActivation
features.1.conv.0.0 Conv2d
features.1.conv.0.1 BatchNorm2d
features.1.conv.0.2 ReLU6
features.1.conv.1 Conv2d
features.1.conv.2 BatchNorm2d
features.2 InvertedResidual
features.2.conv Sequential
features.2.conv.0 Conv2dNormActivation
features.2.conv.0.0 Conv2d
features.2.conv.0.1 BatchNorm2d
features.2.conv.0.2 ReLU6
features.2.conv.1 Conv2dNormActivation
features.2.conv.1.0 Conv2d
features.2.conv.1.1 BatchNorm2d
features.2.conv.1.2 ReLU6
features.2.conv.2 Conv2d
features.2.conv.3 BatchNorm2d
features.3 InvertedResidual
features.3.conv Sequential
features.3.conv.0 Conv2dNormActivation
features.3.conv.0.0 Conv2d
features.3.conv.0.1 BatchNorm2d
features.3.conv.0.2 ReLU6
features.3.conv.1 Conv2dNormActivation
features.3.conv.1.0 Conv2d
features.3.conv.1.1 BatchNorm2d
features.3.conv.1.2 ReLU6
features.3.conv.2 Conv2d
features.3.conv.3 BatchNorm2d
features.4 InvertedResidual
features.4.conv Sequential
features.4.conv.0 Conv2dNormActivation
features.4.conv.0.0 Conv2d
features.4.conv.0.1 BatchNorm2d
features.4.conv.0.2 ReLU6
features.4.conv.1 Conv2dNormActivation
features.4.conv.1.0 Conv2d
features.4.conv.1.1 BatchNorm2d
features.4.conv.1.2 ReLU6
features.4.conv.2 Conv2d
features.4.conv.3 BatchNorm2d
features.5 InvertedResidual
features.5.conv Sequential
features.5.conv.0 Conv2dNormActivation
features.5.conv.0.0 Conv2d
features.5.conv.0.1 BatchNorm2d
features.5.conv.0.2 ReLU6
features.5.conv.1 Conv2dNormActivation
features.5.conv.1.0 Conv2d
features.5.conv.1.1 BatchNorm2d
features.5.conv.1.2 ReLU6
features.5.conv.2 Conv2d
features.5.conv.3 BatchNorm2d
features.6 InvertedResidual
features.6.conv Sequential
features.6.conv.0 Conv2dNormActivation
features.6.conv.0.0 Conv2d
features.6.conv.0.1 BatchNorm2d
features.6.conv.0.2 ReLU6
features.6.conv.1 Conv2dNormActivation
features.6.conv.1.0 Conv2d
features.6.conv.1.1 BatchNorm2d
features.6.conv.1.2 ReLU6
features.6.conv.2 Conv2d
features.6.conv.3 BatchNorm2d
features.7 InvertedResidual
features.7.conv Sequential
features.7.conv.0 Conv2dNormActivation
features.7.conv.0.0 Conv2d
features.7.conv.0.1 BatchNorm2d
features.7.conv.0.2 ReLU6
features.7.conv.1 Conv2dNormActivation
features.7.conv.1.0 Conv2d
features.7.conv.1.1 BatchNorm2d
features.7.conv.1.2 ReLU6
features.7.conv.2 Conv2d
features.7.conv.3 BatchNorm2d
features.8 InvertedResidual
features.8.conv Sequential
features.8.conv.0 Conv2dNormActivation
features.8.conv.0.0 Conv2d
features.8.conv.0.1 BatchNorm2d
features.8.conv.0.2 ReLU6
features.8.conv.1 Conv2dNormActivation
features.8.conv.1.0 Conv2d
features.8.conv.1.1 BatchNorm2d
features.8.conv.1.2 ReLU6
features.8.conv.2 Conv2d
features.8.conv.3 BatchNorm2d
features.9 InvertedResidual
features.9.conv Sequential
features.9.conv.0 Conv2dNormActivation
features.9.conv.0.0 Conv2d
features.9.conv.0.1 BatchNorm2d
features.9.conv.0.2 ReLU6
features.9.conv.1 Conv2dNormActivation
features.9.conv.1.0 Conv2d
features.9.conv.1.1 BatchNorm2d
features.9.conv.1.2 ReLU6
features.9.conv.2 Conv2d
features.9.conv.3 BatchNorm2d
features.10 InvertedResidual
features.10.conv Sequential
features.10.conv.0 Conv2dNormActivation
features.10.conv.0.0 Conv2d
features.10.conv.0.1 BatchNorm2d
features.10.conv.0.2 ReLU6
features.10.conv.1 Conv2dNormActivation
features.10.conv.1.0 Conv2d
features.10.conv.1.1 BatchNorm2d
features.10.conv.1.2 ReLU6
features.10.conv.2 Conv2d
features.10.conv.3 BatchNorm2d
features.11 InvertedResidual
features.11.conv Sequential
features.11.conv.0 Conv2dNormActivation
features.11.conv.0.0 Conv2d
features.11.conv.0.1 BatchNorm2d
features.11.conv.0.2 ReLU6
features.11.conv.1 Conv2dNormActivation
features.11.conv.1.0 Conv2d
features.11.conv.1.1 BatchNorm2d
features.11.conv.1.2 ReLU6
features.11.conv.2 Conv2d
features.11.conv.3 BatchNorm2d
features.12 InvertedResidual
features.12.conv Sequential
features.12.conv.0 Conv2dNormActivation
features.12.conv.0.0 Conv2d
features.12.conv.0.1 BatchNorm2d
features.12.conv.0.2 ReLU6
features.12.conv.1 Conv2dNormActivation
features.12.conv.1.0 Conv2d
features.12.conv.1.1 BatchNorm2d
features.12.conv.1.2 ReLU6
features.12.conv.2 Conv2d
features.12.conv.3 BatchNorm2d
features.13 InvertedResidual
features.13.conv Sequential
features.13.conv.0 Conv2dNormActivation
features.13.conv.0.0 Conv2d
features.13.conv.0.1 BatchNorm2d
features.13.conv.0.2 ReLU6
features.13.conv.1 Conv2dNormActivation
features.13.conv.1.0 Conv2d
features.13.conv.1.1 BatchNorm2d
features.13.conv.1.2 ReLU6
features.13.conv.2 Conv2d
features.13.conv.3 BatchNorm2d
features.14 InvertedResidual
features.14.conv Sequential
features.14.conv.0 Conv2dNormActivation
features.14.conv.0.0 Conv2d
features.14.conv.0.1 BatchNorm2d
features.14.conv.0.2 ReLU6
features.14.conv.1 Conv2dNormActivation
features.14.conv.1.0 Conv2d
features.14.conv.1.1 BatchNorm2d
features.14.conv.1.2 ReLU6
features.14.conv.2 Conv2d
features.14.conv.3 BatchNorm2d
features.15 InvertedResidual
features.15.conv Sequential
features.15.conv.0 Conv2dNormActivation
features.15.conv.0.0 Conv2d
features.15.conv.0.1 BatchNorm2d
features.15.conv.0.2 ReLU6
features.15.conv.1 Conv2dNormActivation
features.15.conv.1.0 Conv2d
features.15.conv.1.1 BatchNorm2d
features.15.conv.1.2 ReLU6
features.15.conv.2 Conv2d
features.15.conv.3 BatchNorm2d
features.16 InvertedResidual
features.16.conv Sequential
features.16.conv.0 Conv2dNormActivation
features.16.conv.0.0 Conv2d
features.16.conv.0.1 BatchNorm2d
features.16.conv.0.2 ReLU6
features.16.conv.1 Conv2dNormActivation
features.16.conv.1.0 Conv2d
features.16.conv.1.1 BatchNorm2d
features.16.conv.1.2 ReLU6
features.16.conv.2 Conv2d
features.16.conv.3 BatchNorm2d
features.17 InvertedResidual
features.17.conv Sequential
features.17.conv.0 Conv2dNormActivation
features.17.conv.0.0 Conv2d
features.17.conv.0.1 BatchNorm2d
features.17.conv.0.2 ReLU6
features.17.conv.1 Conv2dNormActivation
features.17.conv.1.0 Conv2d
features.17.conv.1.1 BatchNorm2d
features.17.conv.1.2 ReLU6
features.17.conv.2 Conv2d
features.17.conv.3 BatchNorm2d
features.18 Conv2dNormActivation
features.18.0 Conv2d
features.18.1 BatchNorm2d
features.18.2 ReLU6
classifier Sequential
classifier.0 Dropout
classifier.1 Linear
"""

TORCHVISION_MOBILENET_V2_STATE = """\
features.0.0.weight (32, 3, 3, 3)
features.0.1.weight (32,)
features.0.1.bias (32,)
features.0.1.running_mean (32,)
features.0.1.running_var (32,)
features.0.1.num_batches_tracked ()
features.1.conv.0.0.weight (32, 1, 3, 3)
features.1.conv.0.1.weight (32,)
features.1.conv.0.1.bias (32,)
features.1.conv.0.1.running_mean (32,)
features.1.conv.0.1.running_var (32,)
features.1.conv.0.1.num_batches_tracked ()
features.1.conv.1.weight (16, 32, 1, 1)
features.1.conv.2.weight (16,)
features.1.conv.2.bias (16,)
features.1.conv.2.running_mean (16,)
features.1.conv.2.running_var (16,)
features.1.conv.2.num_batches_tracked ()
features.2.conv.0.0.weight (96, 16, 1, 1)
features.2.conv.0.1.weight (96,)
features.2.conv.0.1.bias (96,)
features.2.conv.0.1.running_mean (96,)
features.2.conv.0.1.running_var (96,)
features.2.conv.0.1.num_batches_tracked ()
features.2.conv.1.0.weight (96, 1, 3, 3)
features.2.conv.1.1.weight (96,)
features.2.conv.1.1.bias (96,)
features.2.conv.1.1.running_mean (96,)
features.2.conv.1.1.running_var (96,)
features.2.conv.1.1.num_batches_tracked ()
features.2.conv.2.weight (24, 96, 1, 1)
features.2.conv.3.weight (24,)
features.2.conv.3.bias (24,)
features.2.conv.3.running_mean (24,)
features.2.conv.3.running_var (24,)
features.2.conv.3.num_batches_tracked ()
features.3.conv.0.0.weight (144, 24, 1, 1)
features.3.conv.0.1.weight (144,)
features.3.conv.0.1.bias (144,)
features.3.conv.0.1.running_mean (144,)
features.3.conv.0.1.running_var (144,)
features.3.conv.0.1.num_batches_tracked ()
features.3.conv.1.0.weight (144, 1, 3, 3)
features.3.conv.1.1.weight (144,)
features.3.conv.1.1.bias (144,)
features.3.conv.1.1.running_mean (144,)
features.3.conv.1.1.running_var (144,)
features.3.conv.1.1.num_batches_tracked ()
features.3.conv.2.weight (24, 144, 1, 1)
features.3.conv.3.weight (24,)
features.3.conv.3.bias (24,)
features.3.conv.3.running_mean (24,)
features.3.conv.3.running_var (24,)
features.3.conv.3.num_batches_tracked ()
features.4.conv.0.0.weight (144, 24, 1, 1)
features.4.conv.0.1.weight (144,)
features.4.conv.0.1.bias (144,)
features.4.conv.0.1.running_mean (144,)
features.4.conv.0.1.running_var (144,)
features.4.conv.0.1.num_batches_tracked ()
features.4.conv.1.0.weight (144, 1, 3, 3)
features.4.conv.1.1.weight (144,)
features.4.conv.1.1.bias (144,)
features.4.conv.1.1.running_mean (144,)
features.4.conv.1.1.running_var (144,)
features.4.conv.1.1.num_batches_tracked ()
features.4.conv.2.weight (32, 144, 1, 1)
features.4.conv.3.weight (32,)
features.4.conv.3.bias (32,)
features.4.conv.3.running_mean (32,)
features.4.conv.3.running_var (32,)
features.4.conv.3.num_batches_tracked ()
features.5.conv.0.0.weight (192, 32, 1, 1)
features.5.conv.0.1.weight (192,)
features.5.conv.0.1.bias (192,)
features.5.conv.0.1.running_mean (192,)
features.5.conv.0.1.running_var (192,)
features.5.conv.0.1.num_batches_tracked ()
features.5.conv.1.0.weight (192, 1, 3, 3)
features.5.conv.1.1.weight (192,)
features.5.conv.1.1.bias (192,)
features.5.conv.1.1.running_mean (192,)
features.5.conv.1.1.running_var (192,)
features.5.conv.1.1.num_batches_tracked ()
features.5.conv.2.weight (32, 192, 1, 1)
features.5.conv.3.weight (32,)
features.5.conv.3.bias (32,)
features.5.conv.3.running_mean (32,)
features.5.conv.3.running_var (32,)
features.5.conv.3.num_batches_tracked ()
features.6.conv.0.0.weight (192, 32, 1, 1)
features.6.conv.0.1.weight (192,)
features.6.conv.0.1.bias (192,)
features.6.conv.0.1.running_mean (192,)
features.6.conv.0.1.running_var (192,)
features.6.conv.0.1.num_batches_tracked ()
features.6.conv.1.0.weight (192, 1, 3, 3)
features.6.conv.1.1.weight (192,)
features.6.conv.1.1.bias (192,)
features.6.conv.1.1.running_mean (192,)
features.6.conv.1.1.running_var (192,)
features.6.conv.1.1.num_batches_tracked ()
features.6.conv.2.weight (32, 192, 1, 1)
features.6.conv.3.weight (32,)
features.6.conv.3.bias (32,)
features.6.conv.3.running_mean (32,)
features.6.conv.3.running_var (32,)
features.6.conv.3.num_batches_tracked ()
features.7.conv.0.0.weight (192, 32, 1, 1)
features.7.conv.0.1.weight (192,)
features.7.conv.0.1.bias (192,)
features.7.conv.0.1.running_mean (192,)
features.7.conv.0.1.running_var (192,)
features.7.conv.0.1.num_batches_tracked ()
features.7.conv.1.0.weight (192, 1, 3, 3)
features.7.conv.1.1.weight (192,)
features.7.conv.1.1.bias (192,)
features.7.conv.1.1.running_mean (192,)
features.7.conv.1.1.running_var (192,)
features.7.conv.1.1.num_batches_tracked ()
features.7.conv.2.weight (64, 192, 1, 1)
features.7.conv.3.weight (64,)
features.7.conv.3.bias (64,)
features.7.conv.3.running_mean (64,)
features.7.conv.3.running_var (64,)
features.7.conv.3.num_batches_tracked ()
features.8.conv.0.0.weight (384, 64, 1, 1)
features.8.conv.0.1.weight (384,)
features.8.conv.0.1.bias (384,)
features.8.conv.0.1.running_mean (384,)
features.8.conv.0.1.running_var (384,)
features.8.conv.0.1.num_batches_tracked ()
features.8.conv.1.0.weight (384, 1, 3, 3)
features.8.conv.1.1.weight (384,)
features.8.conv.1.1.bias (384,)
features.8.conv.1.1.running_mean (384,)
features.8.conv.1.1.running_var (384,)
features.8.conv.1.1.num_batches_tracked ()
features.8.conv.2.weight (64, 384, 1, 1)
features.8.conv.3.weight (64,)
features.8.conv.3.bias (64,)
features.8.conv.3.running_mean (64,)
features.8.conv.3.running_var (64,)
features.8.conv.3.num_batches_tracked ()
features.9.conv.0.0.weight (384, 64, 1, 1)
features.9.conv.0.1.weight (384,)
features.9.conv.0.1.bias (384,)
features.9.conv.0.1.running_mean (384,)
features.9.conv.0.1.running_var (384,)
features.9.conv.0.1.num_batches_tracked ()
features.9.conv.1.0.weight (384, 1, 3, 3)
features.9.conv.1.1.weight (384,)
features.9.conv.1.1.bias (384,)
features.9.conv.1.1.running_mean (384,)
features.9.conv.1.1.running_var (384,)
features.9.conv.1.1.num_batches_tracked ()
features.9.conv.2.weight (64, 384, 1, 1)
features.9.conv.3.weight (64,)
features.9.conv.3.bias (64,)
features.9.conv.3.running_mean (64,)
features.9.conv.3.running_var (64,)
features.9.conv.3.num_batches_tracked ()
features.10.conv.0.0.weight (384, 64, 1, 1)
features.10.conv.0.1.weight (384,)
features.10.conv.0.1.bias (384,)
features.10.conv.0.1.running_mean (384,)
features.10.conv.0.1.running_var (384,)
features.10.conv.0.1.num_batches_tracked ()
features.10.conv.1.0.weight (384, 1, 3, 3)
features.10.conv.1.1.weight (384,)
features.10.conv.1.1.bias (384,)
features.10.conv.1.1.running_mean (384,)
features.10.conv.1.1.running_var (384,)
features.10.conv.1.1.num_batches_tracked ()
features.10.conv.2.weight (64, 384, 1, 1)
features.10.conv.3.weight (64,)
features.10.conv.3.bias (64,)
features.10.conv.3.running_mean (64,)
features.10.conv.3.running_var (64,)
features.10.conv.3.num_batches_tracked ()
features.11.conv.0.0.weight (384, 64, 1, 1)
features.11.conv.0.1.weight (384,)
features.11.conv.0.1.bias (384,)
features.11.conv.0.1.running_mean (384,)
features.11.conv.0.1.running_var (384,)
features.11.conv.0.1.num_batches_tracked ()
features.11.conv.1.0.weight (384, 1, 3, 3)
features.11.conv.1.1.weight (384,)
features.11.conv.1.1.bias (384,)
features.11.conv.1.1.running_mean (384,)
features.11.conv.1.1.running_var (384,)
features.11.conv.1.1.num_batches_tracked ()
features.11.conv.2.weight (96, 384, 1, 1)
features.11.conv.3.weight (96,)
features.11.conv.3.bias (96,)
features.11.conv.3.running_mean (96,)
features.11.conv.3.running_var (96,)
features.11.conv.3.num_batches_tracked ()
features.12.conv.0.0.weight (576, 96, 1, 1)
features.12.conv.0.1.weight (576,)
features.12.conv.0.1.bias (576,)
features.12.conv.0.1.running_mean (576,)
features.12.conv.0.1.running_var (576,)
features.12.conv.0.1.num_batches_tracked ()
features.12.conv.1.0.weight (576, 1, 3, 3)
features.12.conv.1.1.weight (576,)
features.12.conv.1.1.bias (576,)
features.12.conv.1.1.running_mean (576,)
features.12.conv.1.1.running_var (576,)
features.12.conv.1.1.num_batches_tracked ()
features.12.conv.2.weight (96, 576, 1, 1)
features.12.conv.3.weight (96,)
features.12.conv.3.bias (96,)
features.12.conv.3.running_mean (96,)
features.12.conv.3.running_var (96,)
features.12.conv.3.num_batches_tracked ()
features.13.conv.0.0.weight (576, 96, 1, 1)
features.13.conv.0.1.weight (576,)
features.13.conv.0.1.bias (576,)
features.13.conv.0.1.running_mean (576,)
features.13.conv.0.1.running_var (576,)
features.13.conv.0.1.num_batches_tracked ()
features.13.conv.1.0.weight (576, 1, 3, 3)
features.13.conv.1.1.weight (576,)
features.13.conv.1.1.bias (576,)
features.13.conv.1.1.running_mean (576,)
features.13.conv.1.1.running_var (576,)
features.13.conv.1.1.num_batches_tracked ()
features.13.conv.2.weight (96, 576, 1, 1)
features.13.conv.3.weight (96,)
features.13.conv.3.bias (96,)
features.13.conv.3.running_mean (96,)
features.13.conv.3.running_var (96,)
features.13.conv.3.num_batches_tracked ()
features.14.conv.0.0.weight (576, 96, 1, 1)
features.14.conv.0.1.weight (576,)
features.14.conv.0.1.bias (576,)
features.14.conv.0.1.running_mean (576,)
features.14.conv.0.1.running_var (576,)
features.14.conv.0.1.num_batches_tracked ()
features.14.conv.1.0.weight (576, 1, 3, 3)
features.14.conv.1.1.weight (576,)
features.14.conv.1.1.bias (576,)
features.14.conv.1.1.running_mean (576,)
features.14.conv.1.1.running_var (576,)
features.14.conv.1.1.num_batches_tracked ()
features.14.conv.2.weight (160, 576, 1, 1)
features.14.conv.3.weight (160,)
features.14.conv.3.bias (160,)
features.14.conv.3.running_mean (160,)
features.14.conv.3.running_var (160,)
features.14.conv.3.num_batches_tracked ()
features.15.conv.0.0.weight (960, 160, 1, 1)
features.15.conv.0.1.weight (960,)
features.15.conv.0.1.bias (960,)
features.15.conv.0.1.running_mean (960,)
features.15.conv.0.1.running_var (960,)
features.15.conv.0.1.num_batches_tracked ()
features.15.conv.1.0.weight (960, 1, 3, 3)
features.15.conv.1.1.weight (960,)
features.15.conv.1.1.bias (960,)
features.15.conv.1.1.running_mean (960,)
features.15.conv.1.1.running_var (960,)
features.15.conv.1.1.num_batches_tracked ()
features.15.conv.2.weight (160, 960, 1, 1)
features.15.conv.3.weight (160,)
features.15.conv.3.bias (160,)
features.15.conv.3.running_mean (160,)
features.15.conv.3.running_var (160,)
features.15.conv.3.num_batches_tracked ()
features.16.conv.0.0.weight (960, 160, 1, 1)
features.16.conv.0.1.weight (960,)
features.16.conv.0.1.bias (960,)
features.16.conv.0.1.running_mean (960,)
features.16.conv.0.1.running_var (960,)
features.16.conv.0.1.num_batches_tracked ()
features.16.conv.1.0.weight (960, 1, 3, 3)
features.16.conv.1.1.weight (960,)
features.16.conv.1.1.bias (960,)
features.16.conv.1.1.running_mean (960,)
features.16.conv.1.1.running_var (960,)
features.16.conv.1.1.num_batches_tracked ()
features.16.conv.2.weight (160, 960, 1, 1)
features.16.conv.3.weight (160,)
features.16.conv.3.bias (160,)
features.16.conv.3.running_mean (160,)
features.16.conv.3.running_var (160,)
features.16.conv.3.num_batches_tracked ()
features.17.conv.0.0.weight (960, 160, 1, 1)
features.17.conv.0.1.weight (960,)
features.17.conv.0.1.bias (960,)
features.17.conv.0.1.running_mean (960,)
features.17.conv.0.1.running_var (960,)
features.17.conv.0.1.num_batches_tracked ()
features.17.conv.1.0.weight (960, 1, 3, 3)
features.17.conv.1.1.weight (960,)
features.17.conv.1.1.bias (960,)
features.17.conv.1.1.running_mean (960,)
features.17.conv.1.1.running_var (960,)
features.17.conv.1.1.num_batches_tracked ()
features.17.conv.2.weight (320, 960, 1, 1)
features.17.conv.3.weight (320,)
features.17.conv.3.bias (320,)
features.17.conv.3.running_mean (320,)
features.17.conv.3.running_var (320,)
features.17.conv.3.num_batches_tracked ()
features.18.0.weight (1280, 320, 1, 1)
features.18.1.weight (1280,)
features.18.1.bias (1280,)
features.18.1.running_mean (1280,)
features.18.1.running_var (1280,)
features.18.1.num_batches_tracked ()
classifier.1.weight (1000, 1280)
classifier.1.bias (1000,)
"""

TORCHVISION = {
    "vgg11": (TORCHVISION_VGG11_MODULES, TORCHVISION_VGG11_STATE),
    "resnet18": (TORCHVISION_RESNET18_MODULES, TORCHVISION_RESNET18_STATE),
    "mobilenet_v2": (TORCHVISION_MOBILENET_V2_MODULES, TORCHVISION_MOBILENET_V2_STATE),
}
