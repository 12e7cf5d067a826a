"""The operation registry: lookup, the list of supported operations, errors, merge predicates.

Oracles: the names ``supported_operations()`` returned before the registry existed (pinned
below), the registry's entries enumerated here independently of ``Operation.spellings``, and,
for granularity ``merged``, the ``ops`` trace of each built-in architecture with the kinds of
operation that map one neuron to one written out by hand.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nsp_pipeline
from nsp_pipeline.core.errors import UnsupportedLayerError
from nsp_pipeline.graph.build import build_graph
from nsp_pipeline.graph.edges import EDGE_RULES
from nsp_pipeline.graph.relations import RELATION_RULES
from nsp_pipeline.model.architectures import VGG11, DigitsCNN, MnistTutorialNet, MobileNetV2, ResNet18
from nsp_pipeline.model.capture import trace
from nsp_pipeline.model.ops import (
    OPERATIONS,
    EdgeRule,
    Family,
    Merge,
    Operation,
    RelationKind,
    is_shape_only,
    is_unary_elementwise,
    lookup,
    supported_operations,
)

#: ``supported_operations()`` before the registry: nothing may be dropped.
PREVIOUS_SUPPORTED = """
AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveMaxPool1d AdaptiveMaxPool2d AlphaDropout AvgPool1d
AvgPool2d BatchNorm1d BatchNorm2d BatchNorm3d CELU ChannelShuffle ConstantPad1d ConstantPad2d Conv1d
Conv2d Dropout Dropout1d Dropout2d Dropout3d ELU FeatureAlphaDropout Flatten GELU Hardshrink
Hardsigmoid Hardswish Hardtanh Identity LeakyReLU Linear LogSigmoid LogSoftmax MaxPool1d MaxPool2d
Mish PReLU PixelShuffle PixelUnshuffle RReLU ReLU ReLU6 SELU SiLU Sigmoid Softmax Softplus
Softshrink Softsign Tanh Tanhshrink Tensor.__add__ Tensor.__getitem__ Tensor.__mul__ Tensor.__radd__
Tensor.__rmul__ Tensor.__sub__ Tensor.__truediv__ Tensor.abs Tensor.add Tensor.add_ Tensor.clamp
Tensor.clamp_ Tensor.contiguous Tensor.div Tensor.double Tensor.exp Tensor.expand Tensor.expand_as
Tensor.flatten Tensor.float Tensor.log Tensor.log_softmax Tensor.movedim Tensor.mul Tensor.mul_
Tensor.narrow Tensor.neg Tensor.permute Tensor.relu Tensor.relu_ Tensor.reshape Tensor.reshape_as
Tensor.sigmoid Tensor.sigmoid_ Tensor.softmax Tensor.sqrt Tensor.square Tensor.squeeze Tensor.sub
Tensor.t Tensor.tanh Tensor.tanh_ Tensor.transpose Tensor.unflatten Tensor.unsqueeze Tensor.view
Tensor.view_as Threshold Unflatten Upsample ZeroPad1d ZeroPad2d _threshold abs adaptive_avg_pool1d
adaptive_avg_pool2d adaptive_max_pool1d adaptive_max_pool2d add alpha_dropout avg_pool1d avg_pool2d
batch_norm cat celu clamp concat conv1d conv2d cos div dropout dropout1d dropout2d elu exp flatten
gelu getitem hardshrink hardsigmoid hardswish hardtanh iadd imul interpolate leaky_relu linear log
log_sigmoid log_softmax max_pool1d max_pool2d maximum minimum mish movedim mul narrow neg pad
permute pixel_shuffle pixel_unshuffle pos prelu relu relu6 relu_ reshape selu sigmoid silu sin
softmax softplus softshrink softsign sqrt square squeeze stack sub t tanh tanhshrink transpose
truediv unflatten unsqueeze where
""".split()


def _instance(cls: type[nn.Module]) -> nn.Module:
    """An instance of a module class without running its constructor (lookup reads only the class)."""
    return cls.__new__(cls)


# ---------------------------------------------------------------------------------------------
# Lookup and the list of supported operations


def test_every_spelling_of_every_entry_resolves_to_that_entry():
    for entry in OPERATIONS:
        assert entry.modules or entry.functions or entry.methods, f"{entry.name} has no spelling"
        for cls in entry.modules:
            assert lookup(_instance(cls)) is entry, cls
        for function in entry.functions:
            assert lookup(function) is entry, function
        for method in entry.methods:
            assert lookup(method) is entry, method
    assert len({entry.name for entry in OPERATIONS}) == len(OPERATIONS)


class UserConv(nn.Conv2d):
    pass


class UserBlock(nn.Module):
    def forward(self, x):
        return x


class UserSequential(nn.Sequential):
    pass


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (nn.ReLU6(), "relu6"),  # a subclass of nn.Hardtanh: the most derived registered class
        (nn.Hardtanh(), "hardtanh"),
        (UserConv(1, 1, 1), "conv2d"),
        (UserBlock(), "container"),
        (UserSequential(), "container"),
        (nn.Sequential(), "container"),
    ],
)
def test_modules_resolve_by_their_most_derived_registered_class(module: nn.Module, name: str):
    assert lookup(module).name == name


def test_supported_operations_lists_exactly_the_registry():
    expected = set()
    for entry in OPERATIONS:
        expected |= {cls.__name__ for cls in entry.modules}
        expected |= {getattr(function, "__name__", repr(function)) for function in entry.functions}
        expected |= {f"Tensor.{method}" for method in entry.methods}
    names = supported_operations()
    assert names == sorted(expected)
    assert set(PREVIOUS_SUPPORTED) <= set(names)
    assert nsp_pipeline.supported_operations is supported_operations


def test_every_rule_of_the_registry_is_implemented():
    assert set(EDGE_RULES) == set(EdgeRule)
    assert set(RELATION_RULES) == set(RelationKind)
    for entry in OPERATIONS:
        assert isinstance(entry.edges, EdgeRule) and isinstance(entry.relation, RelationKind), entry.name
        assert isinstance(entry.merges, Merge), entry.name


def test_a_new_entry_takes_its_rules_from_its_family():
    """The module docstring's example: ``torch.erf`` declared as elementwise."""
    erf = Operation("erf", Family.ELEMENTWISE, functions=(torch.erf,), methods=("erf",))
    assert (erf.edges, erf.relation, erf.merges) == (EdgeRule.ELEMENTWISE, RelationKind.IDENTITY, Merge.VALUE)
    reshape = Operation("view", Family.SHAPE_ONLY, methods=("view",), relation=RelationKind.RESHAPE)
    assert (reshape.edges, reshape.relation, reshape.merges) == (
        EdgeRule.MOVEMENT,
        RelationKind.RESHAPE,
        Merge.MOVE,
    )


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            nn.LayerNorm(3),
            r"no neuron-edge rule for LayerNorm \(module torch\.nn\.modules\.normalization\.LayerNorm\)",
        ),
        (
            nn.ConvTranspose2d(1, 1, 2),
            r"ConvTranspose2d \(module torch\.nn\.modules\.conv\.ConvTranspose2d\)",
        ),
        (F.layer_norm, r"no neuron-edge rule for layer_norm \(function torch\.nn\.functional\.layer_norm\)"),
        ("cumsum", r"no neuron-edge rule for cumsum \(tensor method \.cumsum\(\)\)"),
    ],
    ids=["LayerNorm", "ConvTranspose2d", "F.layer_norm", "Tensor.cumsum"],
)
def test_an_unregistered_operation_raises_naming_it(target, message: str):
    with pytest.raises(UnsupportedLayerError, match=message):
        lookup(target)


class Functional(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fn(self.fc(x).reshape(x.size(0), 1, 2, 2))


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (
            lambda h: F.layer_norm(h, (2,)),
            r"layer 3 'layer_norm' \(layer_norm\): no neuron-edge rule for layer_norm",
        ),
        (
            lambda h: F.interpolate(h, scale_factor=2, mode="bilinear"),
            r"layer 3 'interpolate' \(interpolate\):.* with mode 'bilinear': only mode 'nearest'",
        ),
    ],
    ids=["layer_norm", "interpolate-bilinear"],
)
def test_building_a_graph_names_the_layer_of_an_unsupported_call(fn, message: str):
    with pytest.raises(UnsupportedLayerError, match=message + r".*nsp_pipeline\.supported_operations\(\)"):
        build_graph(Functional(fn), torch.randn(1, 4), "ops")


def test_capture_does_not_import_the_graph_layer():
    code = (
        "import sys, torch, nsp_pipeline.model.capture as capture\n"
        "model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())\n"
        "assert len(capture.trace(model, torch.ones(1, 2), 'merged').layout) == 2\n"
        "print(sorted(m for m in sys.modules if m.startswith('nsp_pipeline.graph')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Merge predicates


class Mixed(nn.Module):
    """One operation of each merge case, each a layer of its own under granularity 'ops'."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)
        self.batch_norm = nn.BatchNorm2d(3, track_running_stats=False)
        self.up = nn.Upsample(scale_factor=2)
        self.register_buffer("grid", torch.ones(3, 48))

    def forward(self, x):
        a = self.norm(self.conv(x))
        b = self.batch_norm(a)
        c = torch.sigmoid(b.view(b.size(0), -1)) * 2
        d = (c + c.exp()).unsqueeze(1)
        e = d + self.grid  # one layer, broadcast to a larger shape
        f = F.batch_norm(a, None, None, training=True)
        return e, self.up(f).permute(0, 2, 3, 1)[:, 1:], F.relu(f)


#: Layer name -> (shape-only, unary elementwise), decided by hand for each operation of Mixed.
MIXED_EXPECTED = {
    "conv": (False, False),
    "norm": (False, True),  # eval-mode batch norm with running statistics: per element
    "batch_norm": (False, False),  # batch norm with the sample's statistics mixes each channel
    "view": (True, False),
    "sigmoid": (False, True),
    "mul": (False, True),  # times a constant
    "exp": (False, True),
    "add": (False, False),  # two layers
    "unsqueeze": (True, False),
    "add_1": (False, False),  # output larger than its one input layer
    "batch_norm_1": (False, False),  # F.batch_norm with training=True
    "up": (False, False),  # data movement, not a bijection
    "permute": (True, False),
    "getitem": (False, False),
    "relu": (False, True),
}


def test_merge_predicates_on_each_kind_of_operation():
    torch.manual_seed(0)
    ops = trace(Mixed(), torch.randn(2, 1, 4, 4), "ops")
    assert ops.layout.names[1:] == list(MIXED_EXPECTED)
    for name, call in zip(ops.layout.names[1:], ops.calls[1:]):
        assert (is_shape_only(call), is_unary_elementwise(call)) == MIXED_EXPECTED[name], name


#: Kinds of the built-in architectures' operations that map one neuron to one neuron.
ONE_TO_ONE = {"ReLU", "ReLU6", "relu", "BatchNorm2d", "Dropout", "Flatten", "flatten", "view"}


@pytest.mark.parametrize(
    ("make", "shape", "n_merged"),
    [
        pytest.param(MnistTutorialNet, (1, 28, 28), 6, id="mnist_tutorial"),
        pytest.param(DigitsCNN, (1, 8, 8), 6, id="digits_cnn"),
        pytest.param(
            lambda: VGG11(width=1, in_channels=1, input_size=32, classifier_width=16, num_classes=10),
            (1, 32, 32),
            18,
            id="vgg11",
        ),
        pytest.param(
            lambda: ResNet18(width=1, in_channels=1, input_size=16, num_classes=4),
            (1, 16, 16),
            32,
            id="resnet18",
        ),
        pytest.param(
            lambda: MobileNetV2(
                width_mult=0.05, input_size=8, last_channel=16, round_nearest=2, num_classes=10
            ),
            (3, 8, 8),
            66,
            id="mobilenet_v2",
        ),
    ],
)
def test_merged_layers_of_the_built_in_architectures(make, shape, n_merged: int):
    """Exactly the one-to-one operations of the ``ops`` trace merge (``n_merged``: the previous count)."""
    torch.manual_seed(0)
    model, x = make().eval(), torch.randn(1, *shape)
    ops, merged = trace(model, x, "ops"), trace(model, x, "merged")
    layers = ops.layout.layers
    for layer in layers[1:]:
        if layer.kind in ONE_TO_ONE:
            (parent,) = layer.parents
            assert layer.size == layers[parent].size, layer.name
    assert merged.layout.names == [layer.name for layer in layers if layer.kind not in ONE_TO_ONE]
    assert len(merged.layout) == n_merged
