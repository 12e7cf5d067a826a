"""Exact theoretical receptive fields against the dense closure of the neuron graph and closed forms."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from oracles import dense_zeta
from torch import nn

from nsp_pipeline.core.errors import NotFactorizableError
from nsp_pipeline.graph.build import build_graph
from nsp_pipeline.graph.receptive_fields import (
    fields_from_operator,
    receptive_field_table,
    receptive_fields,
)
from nsp_pipeline.model.architectures import VGG11, DigitsCNN, MnistTutorialNet, MobileNetV2, ResNet18
from nsp_pipeline.model.capture import trace
from nsp_pipeline.transforms.causal.builder import factorized_operator


class BranchyNet(nn.Module):
    """Grouped strided dilated conv, residual add, max/avg pooling, a concatenation of branches
    with different fields (channel-dependent fields), flatten and linear; 2×11×13 inputs."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2, groups=2)
        self.grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1)
        self.wide = nn.Conv2d(4, 2, (1, 3), padding=(0, 1), groups=2)
        self.head = nn.Linear(6 * 3 * 4, 3)

    def forward(self, x):
        a = F.relu(self.stem(x))
        b = a + self.grouped(a)
        c = self.pool(b)
        d = torch.cat([self.avg(c), torch.sigmoid(self.wide(c))], dim=1)
        return self.head(torch.flatten(d, 1))


class Conv1dNet(nn.Module):
    """A 1-D chain (grids ``(C, L, 1)``): dilated conv, max-pool, linear; 2×17 inputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3, dilation=3, padding=2)
        self.pool = nn.MaxPool1d(2)
        self.fc = nn.Linear(3 * 7, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def small_resnet18():
    return ResNet18(num_classes=4, in_channels=1, width=2, input_size=24)


def small_mobilenet_v2():
    """All 17 inverted-residual blocks (depthwise convolutions, residual additions) at 8×8."""
    return MobileNetV2(width_mult=0.05, input_size=8, last_channel=16, round_nearest=2, num_classes=4)


SMALL_NETS = {
    "branchy": (BranchyNet, (2, 11, 13)),
    "conv1d": (Conv1dNet, (2, 17)),
    "digits": (DigitsCNN, (1, 8, 8)),
    "resnet18": (small_resnet18, (1, 24, 24)),
    "mobilenet_v2": (small_mobilenet_v2, (3, 8, 8)),
}
CASES = [
    ("branchy", "merged"),
    ("branchy", "ops"),
    ("conv1d", "merged"),
    ("digits", "merged"),
    ("digits", "ops"),
    ("digits", "children"),
    ("resnet18", "merged"),
    ("mobilenet_v2", "merged"),
]


def oracle_masks(model, example, granularity):
    """Input-layer ancestors of every neuron, from the dense reflexive closure of the neuron graph."""
    graph = build_graph(model, example, granularity)
    zeta = dense_zeta(graph)
    return graph.layout, zeta[:, graph.layout.slice(0)]


def mask_box(mask):
    """Bounding box of a boolean (channels, rows, columns) mask; empty → zeros."""
    if not mask.any():
        return ((0, 0), (0, 0), (0, 0))
    return tuple(
        (int(np.flatnonzero(mask.any(axis=other))[0]), int(np.flatnonzero(mask.any(axis=other))[-1]) + 1)
        for other in ((1, 2), (0, 2), (0, 1))
    )


def grid_of(shape):
    return (*shape, 1, 1, 1)[:3]


@pytest.mark.parametrize(("net", "granularity"), CASES)
def test_masks_and_boxes_equal_the_dense_closure(net, granularity):
    factory, input_shape = SMALL_NETS[net]
    torch.manual_seed(0)
    model, example = factory(), torch.randn(1, *input_shape)
    layout, ancestors = oracle_masks(model, example, granularity)
    fields = receptive_fields(model, example, granularity=granularity)
    assert list(fields) == layout.names
    input_grid = grid_of(input_shape)
    for index, layer in enumerate(layout.layers):
        field = fields[layer.name]
        boxes = field.bounding_boxes()
        for unit, node in enumerate(range(*layout.offsets[index : index + 2])):
            expected = ancestors[node].reshape(input_shape)
            np.testing.assert_array_equal(field.mask(unit), expected, err_msg=f"{layer.name} unit {unit}")
            box = mask_box(expected.reshape(input_grid))
            assert field.bounding_box(unit) == box, (layer.name, unit)
            position = np.unravel_index(unit, field.grid)
            assert tuple((int(s[position]), int(e[position])) for s, e in boxes) == box
            covered = np.zeros(input_grid, dtype=bool)
            for (c0, c1), (r0, r1), (q0, q1) in field.boxes(unit):
                covered[c0:c1, r0:r1, q0:q1] = True
            assert np.all(covered >= expected.reshape(input_grid))
        if layer.shape:  # units as tuples of the layer's shape
            last = tuple(s - 1 for s in layer.shape)
            np.testing.assert_array_equal(field.mask(last), field.mask(layer.size - 1))


def test_fields_depend_on_the_channel_through_groups_and_concatenation():
    torch.manual_seed(0)
    model, example = BranchyNet(), torch.randn(1, 2, 11, 13)
    fields = receptive_fields(model, example, layers=["cat"])
    field = fields["cat"]
    assert list(fields) == ["cat"]
    avg, wide = field.bounding_box((0, 0, 0)), field.bounding_box((4, 0, 0))
    assert avg[0] == wide[0] == (0, 1)  # group 0 reads input channel 0 only
    assert field.bounding_box((5, 0, 0))[0] == (1, 2)
    assert avg[1] == (0, 11) and wide[1] == (0, 7)  # 3×3 average vs 1×3 convolution: rows differ


def test_fields_from_the_factorised_operator_equal_the_dense_closure():
    torch.manual_seed(0)
    model, example = BranchyNet(), torch.randn(1, 2, 11, 13)
    layout, ancestors = oracle_masks(model, example, "merged")
    fields = fields_from_operator(factorized_operator(trace(model, example, "merged")))
    for index, layer in enumerate(layout.layers):
        nodes = range(*layout.offsets[index : index + 2])
        got = np.stack([fields[layer.name].mask(unit).reshape(-1) for unit in range(len(nodes))])
        np.testing.assert_array_equal(got, ancestors[nodes.start : nodes.stop], err_msg=layer.name)
        if index:
            assert fields[layer.name].stride == (None, None)


def chain_closed_form(steps):
    """Standard recursion for a chain (Araujo et al., Distill 2019): per step (kernel, stride,
    padding, dilation), r += (k − 1)·d·j, offset −= p·j, j *= s."""
    size, jump, offset = 1, 1, 0
    rows = []
    for kernel, stride, padding, dilation in steps:
        size, offset, jump = size + (kernel - 1) * dilation * jump, offset - padding * jump, jump * stride
        rows.append((size, jump, offset))
    return rows


def test_plain_chain_matches_the_closed_form_recursion():
    rows_steps = [(3, 2, 1, 1), (5, 1, 4, 2), (2, 2, 0, 1), (3, 1, 1, 1), (3, 2, 0, 1)]
    cols_steps = [(5, 1, 2, 1), (3, 2, 2, 2), (3, 3, 1, 1), (1, 1, 0, 1), (2, 1, 1, 1)]
    modules = []
    for index, (r, c) in enumerate(zip(rows_steps, cols_steps)):
        if index == 2:
            modules.append(nn.MaxPool2d((r[0], c[0]), (r[1], c[1]), (r[2], c[2])))
        else:
            modules.append(
                nn.Conv2d(1, 1, (r[0], c[0]), (r[1], c[1]), (r[2], c[2]), (r[3], c[3]), bias=False)
            )
    model, shape = nn.Sequential(*modules), (1, 97, 89)
    fields = receptive_fields(model, torch.zeros(1, *shape))
    names = list(fields)[1:]
    for axis, steps, n_input in ((0, rows_steps, shape[1]), (1, cols_steps, shape[2])):
        for name, (size, jump, offset) in zip(names, chain_closed_form(steps)):
            field = fields[name]
            got = (field.unclipped_size[axis], field.stride[axis], field.offset[axis])
            assert got == (size, jump, offset), name
            starts, stops = field.bounding_boxes()[axis + 1]
            unit_start = offset + jump * np.arange(field.grid[axis + 1])
            start = np.moveaxis(starts, axis + 1, 0)[:, 0, 0]
            stop = np.moveaxis(stops, axis + 1, 0)[:, 0, 0]
            inside = (unit_start >= 0) & (unit_start + size <= n_input)
            assert inside.any(), name
            np.testing.assert_array_equal(start[inside], unit_start[inside])  # unclipped windows: exact
            np.testing.assert_array_equal(stop[inside], unit_start[inside] + size)
            assert np.all(start >= np.maximum(unit_start, 0))  # clipped: inside the cut window
            assert np.all(stop <= np.minimum(unit_start + size, n_input))


def test_resnet18_blocks_grow_the_field():
    """dnnbrain treats residual blocks as identity (11 after the max-pool); the main path's
    recursion gives 27, 43, ..., 435 (ResNet-18's published receptive field)."""
    model = ResNet18(num_classes=10, width=1)
    fields = receptive_fields(model, torch.zeros(1, 3, 224, 224))
    steps = [(7, 2, 3, 1), (3, 2, 1, 1)]
    for stage in range(4):
        for block in range(2):
            steps += [(3, 2 if stage and not block else 1, 1, 1), (3, 1, 1, 1)]
    chain = chain_closed_form(steps)
    block_outputs = [chain[3 + 2 * b] for b in range(8)]
    adds = ["add"] + [f"add_{b}" for b in range(1, 8)]
    assert [fields[name].unclipped_size[0] for name in adds] == [size for size, _, _ in block_outputs]
    assert [fields[name].offset for name in adds] == [(offset, offset) for _, _, offset in block_outputs]
    assert fields["add_7"].unclipped_size == (435, 435)
    assert fields["add"].size == (27, 27) and fields["maxpool"].size == (11, 11)
    assert fields["add_7"].size == (224, 224)  # clipped to the input


@pytest.mark.slow
def test_vgg11_known_sizes_at_224():
    """Full-size VGG-11: last convolution 134, last max-pool 150 (central unit, inside the input)."""
    torch.manual_seed(0)
    model = VGG11()
    fields = receptive_fields(model, torch.zeros(1, 3, 224, 224))
    table = receptive_field_table(fields)
    last_conv = [row for row in table if row.kind == "Conv2d"][-1]
    last_pool = [row for row in table if row.kind == "MaxPool2d"][-1]
    assert (last_conv.layer, last_conv.size, last_conv.unclipped_size) == (
        "features.18",
        (134,) * 2,
        (134,) * 2,
    )
    assert (last_pool.layer, last_pool.size, last_pool.unclipped_size) == (
        "features.20",
        (150,) * 2,
        (150,) * 2,
    )
    assert (last_conv.stride, last_pool.stride) == ((16, 16), (32, 32))


def test_vgg11_sizes_do_not_depend_on_width():
    fields = receptive_fields(VGG11(width=1, classifier_width=8), torch.zeros(1, 3, 224, 224))
    assert fields["features.18"].size == (134, 134) and fields["features.20"].size == (150, 150)


def test_digits_cnn_pool2_is_10_where_the_input_holds_it():
    """At 8×8 the 10-wide window is clipped (7 at every unit); on a 32×32 input the same layers
    give 10 for the central unit."""
    torch.manual_seed(0)
    model = DigitsCNN()
    at_8 = receptive_fields(model, torch.zeros(1, 1, 8, 8), layers=["pool2"], granularity="children")["pool2"]
    assert (at_8.unclipped_size, at_8.size, at_8.max_size) == ((10, 10), (7, 7), (7, 7))
    assert at_8.offset == (-3, -3) and at_8.stride == (4, 4)
    features = nn.Sequential(*list(model.children())[:6])  # conv1 … pool2, without flatten and fc
    at_32 = receptive_fields(features, torch.zeros(1, 1, 32, 32))
    assert at_32["5"].size == (10, 10) and at_32["5"].unclipped_size == (10, 10)


def test_mnist_tutorial_pool2_is_16():
    fields = receptive_fields(MnistTutorialNet(), torch.zeros(1, 1, 28, 28))
    field = fields["pool2"]
    assert (field.size, field.max_size, field.unclipped_size, field.stride) == ((16, 16),) * 3 + ((4, 4),)
    assert fields["fc"].size == (28, 28) and fields["fc"].unclipped_size == (None, None)


def test_clear_errors():
    model = MnistTutorialNet()
    example = torch.zeros(1, 1, 28, 28)
    with pytest.raises(KeyError, match=r"no layer \['pool9'\].*'pool2'"):
        receptive_fields(model, example, layers=["pool9"])
    field = receptive_fields(model, example, layers=["pool2"])["pool2"]
    with pytest.raises(IndexError, match=r"'pool2'.*320"):
        field.mask(320)
    with pytest.raises(IndexError, match=r"'pool2'.*not in shape \(20, 4, 4\)"):
        field.bounding_box((0, 4, 0))

    class Permuting(nn.Module):
        def forward(self, x):
            return torch.relu(x.permute(0, 2, 3, 1))

    with pytest.raises(NotFactorizableError, match=r"layer 1 'relu'.*permute"):
        receptive_fields(Permuting(), torch.zeros(1, 2, 3, 4))
