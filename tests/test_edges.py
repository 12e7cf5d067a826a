"""Neuron edges against an independent oracle: the non-zero pattern of the layer Jacobian.

The oracle never looks at :mod:`nsp_pipeline.graph.edges`: it is the Jacobian computed by
``torch.autograd.functional.jacobian`` in float64 of the very operation that made a layer.

- ``incl=True`` (every structural edge): the Jacobian of a copy of the operation with unit
  weights (biases 0, BatchNorm running statistics 0 / 1), united over many probe inputs: one
  spike per input element on a small random background (so every element is the maximum of
  every pooling window that holds it) and random normal inputs at three scales (so every
  elementwise activation has a non-zero slope somewhere).
- ``incl=False`` (edges with a non-zero partial derivative at the reference sample): the
  Jacobian at the first sample of the example, with random weights of which some are exactly 0.

Per-sample Jacobians of a batch are read off the Jacobian of the batch sum, as every layer
here acts on each sample independently (eval mode).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from math import prod

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nsp_pipeline.core.errors import TraceError, UnsupportedLayerError
from nsp_pipeline.graph.build import build_graph
from nsp_pipeline.model.architectures import MnistTutorialNet
from nsp_pipeline.model.ops import OPERATIONS, EdgeRule

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add overhead (tens of times slower on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# Oracle helpers (independent of nsp_pipeline)


def jacobian_pattern(fn: Callable, inputs: list[torch.Tensor], wrt: int = 0) -> np.ndarray:
    """``(n_out, n_in)`` union over the batch of the patterns ``d fn[b] / d inputs[wrt][b] != 0``."""
    inputs = [t.detach().to(torch.float64) for t in inputs]

    def summed(t):
        args = list(inputs)
        args[wrt] = t
        return fn(*args).sum(0)

    jac = torch.autograd.functional.jacobian(summed, inputs[wrt])
    batch, n_in = inputs[wrt].shape[0], inputs[wrt][0].numel()
    return (jac.reshape(-1, batch, n_in) != 0).any(1).numpy()


def probes(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Probe batch: a spike on every element over a [0, 1) background, then normal inputs at 3 scales."""
    gen = torch.Generator().manual_seed(seed)
    n = prod(shape)
    spikes = torch.rand((n, n), generator=gen, dtype=torch.float64) + 10 * torch.eye(n, dtype=torch.float64)
    normal = [scale * torch.randn((3, n), generator=gen, dtype=torch.float64) for scale in (0.3, 1.0, 3.0)]
    return torch.cat([spikes, *normal]).reshape(-1, *shape)


def _replace_max_pools(module: nn.Module) -> nn.Module:
    """Max pools become average pools of the same geometry (same structural pattern, no argmax)."""

    def swap(m: nn.Module) -> nn.Module:
        if isinstance(m, nn.MaxPool1d | nn.MaxPool2d) and m.dilation in (1, (1,), (1, 1)):
            avg = nn.AvgPool1d if isinstance(m, nn.MaxPool1d) else nn.AvgPool2d
            return avg(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode)
        if isinstance(m, nn.AdaptiveMaxPool1d):
            return nn.AdaptiveAvgPool1d(m.output_size)
        if isinstance(m, nn.AdaptiveMaxPool2d):
            return nn.AdaptiveAvgPool2d(m.output_size)
        return m

    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            setattr(parent, name, swap(child))
    return swap(module)


def double_copy(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).double().eval()


def unit_copy(module: nn.Module, max_to_avg: bool = False) -> nn.Module:
    """Float64 copy with every weight 1, every bias 0, BatchNorm mean 0 and variance 1."""
    unit = double_copy(module)
    with torch.no_grad():
        for name, parameter in unit.named_parameters():
            parameter.zero_() if name.rsplit(".", 1)[-1] == "bias" else parameter.fill_(1.0)
        for name, buffer in unit.named_buffers():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_mean":
                buffer.zero_()
            elif leaf == "running_var":
                buffer.fill_(1.0)
    return _replace_max_pools(unit) if max_to_avg else unit


def randomize_with_zeros(module: nn.Module, seed: int = 1) -> nn.Module:
    """Random weights, about 30 % of them (and the first one) exactly 0; random BatchNorm statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            values = torch.randn(parameter.shape, generator=gen)
            if name.rsplit(".", 1)[-1] != "bias":
                values[torch.rand(parameter.shape, generator=gen) < 0.3] = 0.0
                values.view(-1)[0] = 0.0
            parameter.copy_(values)
        for name, buffer in module.named_buffers():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_mean":
                buffer.copy_(torch.randn(buffer.shape, generator=gen))
            elif leaf == "running_var":
                buffer.copy_(0.5 + 1.5 * torch.rand(buffer.shape, generator=gen))
    return module


def assert_same_pattern(got, expected: np.ndarray, what: str = "") -> None:
    """0/1 edge block (targets x sources) equals the expected Jacobian pattern."""
    got = np.asarray(got.toarray() if hasattr(got, "toarray") else got) != 0
    assert expected.any(), f"{what}: the oracle pattern is empty, the case tests nothing"
    assert got.shape == expected.shape, f"{what}: block {got.shape} vs Jacobian {expected.shape}"
    missing, extra = np.argwhere(expected & ~got), np.argwhere(got & ~expected)
    assert not len(missing) and not len(extra), (
        f"{what}: {len(missing)} missing edges (target, source), e.g. {missing[:5].tolist()}; "
        f"{len(extra)} extra edges, e.g. {extra[:5].tolist()}"
    )


def assert_only_from(graph, layer: int, parents: list[int]) -> None:
    """Every in-edge of ``layer`` comes from one of ``parents``."""
    block = graph.layer_block(layer).tocsc()
    mask = np.ones(graph.n_nodes, dtype=bool)
    for parent in parents:
        mask[graph.layout.slice(parent)] = False
    assert block[:, np.flatnonzero(mask)].nnz == 0, f"layer {layer} has in-edges outside layers {parents}"


# ---------------------------------------------------------------------------------------------
# Single layers, children granularity: nn.Sequential(layer), layer 1 reads the input


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[], nn.Module]
    shape: tuple[int, ...]
    fixed: bool = False  # keep the weights set by `make` for incl=False


def _cancelling_conv() -> nn.Module:
    """Reflect padding makes taps 0 and 2 of output 0 both read input 1: weights 1 and -1 cancel."""
    conv = nn.Conv1d(1, 1, 3, padding=1, padding_mode="reflect", bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[1.0, 0.5, -1.0]]]))
    return conv


WINDOW_CASES = [
    # Conv1d
    Case("conv1d", lambda: nn.Conv1d(2, 3, 3), (2, 7)),
    Case("conv1d-stride-pad-groups", lambda: nn.Conv1d(2, 4, 3, stride=2, padding=1, groups=2), (2, 8)),
    Case("conv1d-same-dilation", lambda: nn.Conv1d(2, 2, 3, dilation=2, padding="same"), (2, 7)),
    Case("conv1d-same-even-kernel", lambda: nn.Conv1d(2, 2, 4, padding="same"), (2, 6)),
    Case("conv1d-valid-stride3", lambda: nn.Conv1d(2, 2, 3, padding="valid", stride=3), (2, 8)),
    Case("conv1d-reflect", lambda: nn.Conv1d(2, 2, 3, padding=2, padding_mode="reflect"), (2, 5)),
    Case(
        "conv1d-circular-stride",
        lambda: nn.Conv1d(2, 2, 3, padding=1, padding_mode="circular", stride=2),
        (2, 6),
    ),
    Case("conv1d-replicate", lambda: nn.Conv1d(1, 1, 3, padding=1, padding_mode="replicate"), (1, 4)),
    Case("conv1d-reflect-cancelling-weights", _cancelling_conv, (1, 4), fixed=True),
    # Conv2d
    Case("conv2d", lambda: nn.Conv2d(2, 3, 3), (2, 5, 5)),
    Case(
        "conv2d-nonsquare-stride-pad",
        lambda: nn.Conv2d(2, 4, (2, 3), stride=(2, 1), padding=(1, 0)),
        (2, 5, 4),
    ),
    Case("conv2d-depthwise", lambda: nn.Conv2d(3, 3, 3, padding=1, groups=3), (3, 4, 4)),
    Case("conv2d-depthwise-multiplier", lambda: nn.Conv2d(2, 4, 3, groups=2, stride=2), (2, 5, 5)),
    Case("conv2d-same-dilation", lambda: nn.Conv2d(2, 4, 3, padding="same", dilation=2), (2, 5, 5)),
    Case("conv2d-same-even-kernel", lambda: nn.Conv2d(2, 2, (3, 2), padding="same"), (2, 4, 5)),
    Case("conv2d-valid-dilation", lambda: nn.Conv2d(1, 2, 2, padding="valid", dilation=(2, 1)), (1, 4, 4)),
    Case("conv2d-1x1-groups", lambda: nn.Conv2d(4, 2, 1, groups=2), (4, 3, 3)),
    Case("conv2d-reflect", lambda: nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), (2, 4, 4)),
    Case(
        "conv2d-replicate-stride",
        lambda: nn.Conv2d(1, 2, (3, 2), padding=(1, 1), padding_mode="replicate", stride=2),
        (1, 5, 4),
    ),
    Case("conv2d-circular", lambda: nn.Conv2d(2, 1, 3, padding=(2, 1), padding_mode="circular"), (2, 3, 4)),
    Case(
        "conv2d-last-taps-outside-narrow-width",
        lambda: nn.Conv2d(1, 1, (3, 5), padding=(1, 2)),
        (1, 3, 2),
    ),
    Case(
        "conv2d-same-k5-narrow-width",
        lambda: nn.Conv2d(1, 2, 5, padding="same"),
        (1, 4, 2),
    ),
    # Max pooling
    Case("maxpool1d", lambda: nn.MaxPool1d(2), (2, 7)),
    Case("maxpool1d-stride-pad", lambda: nn.MaxPool1d(3, stride=2, padding=1), (2, 8)),
    Case("maxpool1d-ceil", lambda: nn.MaxPool1d(3, stride=2, ceil_mode=True), (2, 8)),
    Case("maxpool1d-dilation-pad", lambda: nn.MaxPool1d(2, dilation=2, padding=1), (1, 7)),
    Case("maxpool2d", lambda: nn.MaxPool2d(2), (2, 5, 5)),
    Case("maxpool2d-ceil", lambda: nn.MaxPool2d(2, ceil_mode=True), (2, 5, 5)),
    Case("maxpool2d-nonsquare", lambda: nn.MaxPool2d((3, 2), stride=(2, 1), padding=(1, 0)), (1, 5, 4)),
    Case("maxpool2d-dilation", lambda: nn.MaxPool2d(3, stride=2, padding=1, dilation=2), (1, 7, 6)),
    Case("maxpool2d-ceil-pad", lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (1, 6, 6)),
    # Average pooling
    Case("avgpool1d", lambda: nn.AvgPool1d(3, stride=2), (2, 8)),
    Case("avgpool1d-ceil-pad", lambda: nn.AvgPool1d(3, stride=2, padding=1, ceil_mode=True), (2, 8)),
    Case("avgpool1d-exclude-pad", lambda: nn.AvgPool1d(2, padding=1, count_include_pad=False), (1, 5)),
    Case("avgpool2d", lambda: nn.AvgPool2d(2), (2, 5, 5)),
    Case("avgpool2d-nonsquare", lambda: nn.AvgPool2d((2, 3), stride=(1, 2), padding=(1, 1)), (1, 4, 5)),
    Case(
        "avgpool2d-ceil-pad",
        lambda: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        (1, 6, 6),
    ),
    Case("avgpool2d-ceil", lambda: nn.AvgPool2d(2, ceil_mode=True), (2, 5, 5)),
    # Adaptive pooling, sizes that do not divide
    Case("adaptive-avg1d-7to3", lambda: nn.AdaptiveAvgPool1d(3), (2, 7)),
    Case("adaptive-avg1d-3to4", lambda: nn.AdaptiveAvgPool1d(4), (2, 3)),
    Case("adaptive-avg2d-7x5to3x2", lambda: nn.AdaptiveAvgPool2d((3, 2)), (1, 7, 5)),
    Case("adaptive-avg2d-5to2", lambda: nn.AdaptiveAvgPool2d(2), (2, 5, 5)),
    Case("adaptive-max1d-7to3", lambda: nn.AdaptiveMaxPool1d(3), (2, 7)),
    Case("adaptive-max2d-7x5to3x2", lambda: nn.AdaptiveMaxPool2d((3, 2)), (1, 7, 5)),
    Case("adaptive-max2d-5to2", lambda: nn.AdaptiveMaxPool2d(2), (2, 5, 5)),
    Case("adaptive-avg2d-none-axis", lambda: nn.AdaptiveAvgPool2d((None, 2)), (1, 3, 5)),
    Case("adaptive-max2d-upsampling-5x2to7x3", lambda: nn.AdaptiveMaxPool2d((7, 3)), (1, 5, 2)),
]

OTHER_CASES = [
    Case("linear", lambda: nn.Linear(5, 3), (5,)),
    Case("linear-on-last-axis", lambda: nn.Linear(4, 3), (3, 4)),
    Case("linear-3d-no-bias", lambda: nn.Linear(3, 2, bias=False), (2, 2, 3)),
    Case("softmax-dim1", lambda: nn.Softmax(dim=1), (3, 4)),
    Case("softmax-dim-last", lambda: nn.Softmax(dim=-1), (3, 4)),
    Case("softmax-flat", lambda: nn.Softmax(dim=1), (5,)),
    Case("logsoftmax-dim2", lambda: nn.LogSoftmax(dim=2), (2, 3, 2)),
    Case("flatten", lambda: nn.Flatten(), (2, 3, 2)),
    Case("flatten-from-2", lambda: nn.Flatten(start_dim=2), (2, 3, 2)),
    Case("unflatten", lambda: nn.Unflatten(1, (2, 3)), (6,)),
    Case("upsample-nearest-x2", lambda: nn.Upsample(scale_factor=2, mode="nearest"), (2, 2, 3)),
    Case("upsample-nearest-size", lambda: nn.Upsample(size=(5, 4), mode="nearest"), (1, 2, 3)),
    Case("upsample-nearest-1d", lambda: nn.Upsample(scale_factor=3), (2, 3)),
    Case("zeropad2d", lambda: nn.ZeroPad2d((1, 2, 0, 1)), (2, 3, 3)),
    Case("zeropad2d-crop", lambda: nn.ZeroPad2d((-1, 1, 1, -1)), (1, 3, 3)),
    Case("constantpad2d-zero", lambda: nn.ConstantPad2d(1, 0.0), (1, 2, 2)),
    Case("constantpad1d-one", lambda: nn.ConstantPad1d(2, 1.0), (2, 3)),
    Case("pixelshuffle", lambda: nn.PixelShuffle(2), (4, 2, 2)),
    Case("pixelunshuffle", lambda: nn.PixelUnshuffle(2), (1, 4, 2)),
    Case("channelshuffle", lambda: nn.ChannelShuffle(2), (4, 2, 1)),
]

_ELEMENTWISE_MAKE = {
    nn.Threshold: lambda: nn.Threshold(0.1, 20.0),
    nn.PReLU: lambda: nn.PReLU(2),
    nn.BatchNorm1d: lambda: nn.BatchNorm1d(2),
    nn.BatchNorm2d: lambda: nn.BatchNorm2d(2),
    nn.BatchNorm3d: lambda: nn.BatchNorm3d(2),
}
_ELEMENTWISE_SHAPE = {
    nn.BatchNorm2d: (2, 3, 3),
    nn.BatchNorm3d: (2, 2, 2, 2),
    nn.Dropout2d: (2, 3, 3),
    nn.Dropout3d: (2, 2, 2, 2),
}
#: Every module class whose edges are elementwise (activations, dropout, identity, batch norm).
ELEMENTWISE_MODULES = [cls for op in OPERATIONS if op.edges is EdgeRule.ELEMENTWISE for cls in op.modules]
ELEMENTWISE_CASES = [
    Case(cls.__name__, _ELEMENTWISE_MAKE.get(cls, cls), _ELEMENTWISE_SHAPE.get(cls, (2, 5)))
    for cls in ELEMENTWISE_MODULES
]
ELEMENTWISE_CASES.append(Case("BatchNorm1d-flat", lambda: nn.BatchNorm1d(4), (4,)))
OTHER_CASES.append(
    Case(
        "batchnorm2d-batch-statistics",
        lambda: nn.BatchNorm2d(2, track_running_stats=False),
        (2, 2, 2),
        fixed=True,
    )
)

ALL_CASES = WINDOW_CASES + OTHER_CASES + ELEMENTWISE_CASES


def _params(cases: list[Case]) -> list:
    return [pytest.param(case, id=case.id) for case in cases]


def test_elementwise_cases_cover_every_elementwise_module():
    covered = {case.id for case in ELEMENTWISE_CASES}
    assert covered >= {cls.__name__ for cls in ELEMENTWISE_MODULES}
    assert len(ELEMENTWISE_CASES) == len(ELEMENTWISE_MODULES) + 1


def test_exact_edges_of_zero_weight_linear_are_empty():
    fc = nn.Linear(3, 2)
    with torch.no_grad():
        fc.weight.zero_()
    x = torch.randn(1, 3)
    assert not jacobian_pattern(double_copy(fc), [x]).any()
    graph = build_graph(nn.Sequential(fc), x, incl=False)
    assert graph.n_nodes == 5
    assert graph.n_edges == 0


@pytest.mark.parametrize("case", _params(ALL_CASES))
def test_incl_edges_equal_unit_weight_jacobian(case: Case):
    torch.manual_seed(0)
    layer = case.make()
    x = torch.randn(2, *case.shape)
    graph = build_graph(nn.Sequential(layer), x, "children", incl=True)
    assert graph.layout.names == ["input", "0"]
    n_in = prod(case.shape)
    assert_only_from(graph, 1, [0])
    expected = jacobian_pattern(unit_copy(layer), [probes(case.shape)])
    assert_same_pattern(graph.layer_block(1)[:, :n_in], expected, case.id)


@pytest.mark.parametrize("case", _params(ALL_CASES))
def test_exact_edges_equal_jacobian_at_reference_sample(case: Case):
    torch.manual_seed(0)
    layer = case.make()
    if not case.fixed:
        randomize_with_zeros(layer)
    x = torch.randn(3, *case.shape)  # samples 1 and 2 differ: only sample 0 may matter
    graph = build_graph(nn.Sequential(layer), x, "children", incl=False)
    n_in = prod(case.shape)
    assert_only_from(graph, 1, [0])
    expected = jacobian_pattern(double_copy(layer), [x[:1]])
    assert_same_pattern(graph.layer_block(1)[:, :n_in], expected, case.id)


def test_exact_edges_drop_cancelling_reflect_taps():
    """Output 0 of the cancelling conv reads input 1 through taps 0 and 2 with weights 1 and -1."""
    conv = _cancelling_conv()
    x = torch.randn(1, 1, 4)
    incl = build_graph(nn.Sequential(conv), x, incl=True).layer_block(1).toarray()
    exact = build_graph(nn.Sequential(conv), x, incl=False).layer_block(1).toarray()
    jac = jacobian_pattern(double_copy(conv), [x])
    assert not jac[0, 1] and incl[0, 1] and not exact[0, 1]
    assert_same_pattern(exact[:, :4], jac, "cancelling conv")


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id) for c in WINDOW_CASES if "maxpool" in c.id and "dilation" not in c.id]
)
def test_max_pool_incl_edges_equal_avg_pool_of_same_geometry(case: Case):
    layer = case.make()
    graph = build_graph(nn.Sequential(layer), torch.randn(1, *case.shape), incl=True)
    avg = unit_copy(layer, max_to_avg=True)
    assert not isinstance(avg, nn.MaxPool1d | nn.MaxPool2d)
    x = torch.rand(1, *case.shape, dtype=torch.float64)
    assert_same_pattern(graph.layer_block(1)[:, : prod(case.shape)], jacobian_pattern(avg, [x]), case.id)


# ---------------------------------------------------------------------------------------------
# Children granularity with composite, custom and formerly crashing children


class Residual(nn.Module):
    """A user-defined child: sigmoid(conv(x)) + x."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return torch.sigmoid(self.conv(x)) + x


class ReshapeHead(nn.Module):
    """A user-defined child with functional ops: relu, view, linear."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.fc = nn.Linear(n_in, n_out)

    def forward(self, x):
        return self.fc(F.relu(x).view(x.size(0), -1))


def children_model() -> nn.Sequential:
    """Every child the predecessor nsp crashed on, a Sequential child and two custom children."""
    return nn.Sequential(
        nn.Conv2d(1, 2, 3),  # 9x9 -> 7x7
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),  # 7x7 -> 4x4, last window partial
        nn.Sequential(nn.Conv2d(2, 2, 2, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)),  # -> 3x3
        Residual(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Unflatten(1, (2, 9)),
        ReshapeHead(18, 4),
        nn.Softmax(dim=1),
    )


def check_children(model: nn.Module, steps: list, names: list[str], x: torch.Tensor, incl: bool) -> None:
    """Each child's in-edges come from the previous layer and equal the child's Jacobian pattern.

    ``steps``: the children in call order, each a module name or ``(name, input shape)`` when the
    forward reshapes the previous layer before calling the child.
    """
    model, x = double_copy(model), x.double()
    graph = build_graph(model, x, "children", incl=incl)
    assert graph.layout.names == ["input", *names]
    modules = dict(model.named_modules())
    value = x[:1]
    sizes = [value[0].numel()]
    for index, step in enumerate(steps, start=1):
        name, shape = step if isinstance(step, tuple) else (step, tuple(value.shape[1:]))
        child, value = modules[name], value.reshape(-1, *shape)
        if incl:
            expected = jacobian_pattern(unit_copy(child, max_to_avg=True), [probes(shape)])
        else:
            expected = jacobian_pattern(child, [value])
        assert_only_from(graph, index, [index - 1])
        block = graph.layer_block(index)[:, graph.layout.slice(index - 1)]
        assert_same_pattern(block, expected, f"layer {index} {names[index - 1]}")
        with torch.no_grad():
            value = child(value)
        assert graph.layout.layers[index].shape == tuple(value.shape[1:])
        sizes.append(value[0].numel())
    assert graph.n_nodes == sum(sizes)


@pytest.mark.parametrize("incl", [True, False])
def test_children_composite_custom_and_formerly_crashing_children(incl: bool):
    torch.manual_seed(0)
    model = randomize_with_zeros(children_model(), seed=3)
    names = [str(i) for i in range(10)]
    check_children(model, names, names, torch.randn(2, 1, 9, 9), incl)


class CalledTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.Tanh()
        self.pool = nn.MaxPool1d(2, ceil_mode=True)

    def forward(self, x):
        return self.pool(self.fc(self.act(self.fc(x))).unsqueeze(1))


@pytest.mark.parametrize("incl", [True, False])
def test_children_same_module_called_twice(incl: bool):
    torch.manual_seed(0)
    model = randomize_with_zeros(CalledTwice(), seed=4)
    steps = ["fc", "act", "fc", ("pool", (1, 4))]
    check_children(model, steps, ["fc", "act", "fc_1", "pool"], torch.randn(2, 4), incl)


class InPlace(nn.Module):
    """An in-place activation: nn.Threshold(inplace=True) child, or F.threshold(inplace=True)."""

    def __init__(self, functional: bool):
        super().__init__()
        self.functional = functional
        self.fc = nn.Linear(4, 5)
        self.act = nn.Threshold(0.1, 20.0, inplace=True)

    def forward(self, x):
        if self.functional:
            return F.threshold(self.fc(x), 0.1, 20.0, inplace=True)
        return self.act(self.fc(x))


@pytest.mark.parametrize("granularity", ["children", "ops"])
def test_exact_edges_of_in_place_activation(granularity: str):
    torch.manual_seed(0)
    model, x = InPlace(functional=granularity == "ops"), torch.randn(2, 4)
    graph = build_graph(model, x, granularity, incl=False)
    with torch.no_grad():
        hidden = model.fc(x[:1]).double()
    assert (hidden <= 0.1).any() and (hidden > 0.1).any()
    expected = jacobian_pattern(lambda h: F.threshold(h, 0.1, 20.0), [hidden])
    assert_same_pattern(graph.layer_block(2)[:, graph.layout.slice(1)], expected, "threshold")


def _edges_per_layer(graph) -> list[int]:
    return [int(np.diff(graph.indptr)[graph.layout.slice(i)].sum()) for i in range(len(graph.layout))]


def test_mnist_tutorial_network_children_counts():
    torch.manual_seed(0)
    model, x = MnistTutorialNet(), torch.randn(2, 1, 28, 28)
    graph = build_graph(model, x, "children", incl=True)
    assert graph.layout.names == ["input", "conv1", "pool1", "conv2", "pool2", "fc"]
    assert graph.n_nodes == 9594 == 784 + 5760 + 1440 + 1280 + 320 + 10
    assert _edges_per_layer(graph) == [0, 5760 * 25, 1440 * 4, 1280 * 250, 320 * 4, 320 * 10]
    assert graph.n_edges == 474240
    exact = build_graph(model, x, "children", incl=False)  # pools keep only their argmax
    assert _edges_per_layer(exact) == [0, 5760 * 25, 1440, 1280 * 250, 320, 320 * 10]
    assert exact.n_edges == 468960


def test_mnist_tutorial_network_ops_counts():
    torch.manual_seed(0)
    graph = build_graph(MnistTutorialNet(), torch.randn(1, 1, 28, 28), "ops", incl=True)
    assert graph.layout.names == ["input", "conv1", "pool1", "relu", "conv2", "pool2", "relu_1", "view", "fc"]
    assert graph.n_nodes == 9594 + 1440 + 320 + 320
    assert graph.n_edges == 474240 + 1440 + 320 + 320


# ---------------------------------------------------------------------------------------------
# "ops" granularity: every traced operation is a layer reading its argument layers

Spec = list[tuple[str, list[str], Callable]]


def assert_parent_blocks(block, layout, index, name, parents, parent_ids, fn, unit_fn, values, incl) -> None:
    """Each parent's block of a layer's in-edges equals the Jacobian pattern of its function.

    ``incl``: the pattern of ``unit_fn`` (unit weights) at random probes; otherwise of ``fn`` at the
    reference values ``values`` of the parents.
    """
    for k, (parent, parent_id) in enumerate(zip(parents, parent_ids)):
        if incl:
            probe = probes(tuple(values[parent].shape[1:]), seed=index)
            gen = torch.Generator().manual_seed(k)
            args = [
                probe
                if q == parent
                else torch.randn(len(probe), *values[q].shape[1:], generator=gen).double()
                for q in parents
            ]
            expected = jacobian_pattern(unit_fn, args, wrt=k)
        else:
            expected = jacobian_pattern(fn, [values[q] for q in parents], wrt=k)
        assert_same_pattern(block[:, layout.slice(parent_id)], expected, f"{name} <- {parent}")


def check_ops(model: nn.Module, spec: Spec, unit_spec: Spec, x: torch.Tensor, incl: bool) -> None:
    """For each layer and each parent, the block of in-edges equals the op's Jacobian pattern.

    ``spec`` is an independent step-by-step rewrite of the model's forward: (layer name,
    parent layer names, function of the parents); ``unit_spec`` the same with unit weights.
    """
    graph = build_graph(model, x, "ops", incl=incl)
    names = ["input", *(name for name, _, _ in spec)]
    assert graph.layout.names == names
    values = {"input": x[:1].double()}
    for index, ((name, parents, fn), (_, _, unit_fn)) in enumerate(zip(spec, unit_spec), start=1):
        parent_ids = [names.index(p) for p in parents]
        assert graph.layout.layers[index].parents == tuple(sorted(parent_ids))
        assert_only_from(graph, index, parent_ids)
        block = graph.layer_block(index)
        assert_parent_blocks(block, graph.layout, index, name, parents, parent_ids, fn, unit_fn, values, incl)
        with torch.no_grad():
            values[name] = fn(*(values[q] for q in parents))
    with torch.no_grad():
        assert torch.allclose(values[names[-1]], model(x[:1]).double())


class OpsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(50, 4)

    def forward(self, x):
        a = self.conv(x)
        b = torch.sigmoid(a)
        c = F.relu(a)
        d = b + c
        e = torch.cat([d, x], dim=1)
        f = e.permute(0, 2, 3, 1).contiguous()
        g = f[:, :2]
        h = g.view(g.size(0), -1)
        return F.softmax(self.fc(h), dim=1)


def ops_net_spec(model: OpsNet) -> Spec:
    return [
        ("conv", ["input"], model.conv),
        ("sigmoid", ["conv"], torch.sigmoid),
        ("relu", ["conv"], F.relu),
        ("add", ["sigmoid", "relu"], lambda b, c: b + c),
        ("cat", ["add", "input"], lambda d, x: torch.cat([d, x], dim=1)),
        ("permute", ["cat"], lambda e: e.permute(0, 2, 3, 1)),
        ("contiguous", ["permute"], lambda f: f.contiguous()),
        ("getitem", ["contiguous"], lambda f: f[:, :2]),
        ("view", ["getitem"], lambda g: g.reshape(g.shape[0], -1)),
        ("fc", ["view"], model.fc),
        ("softmax", ["fc"], lambda z: F.softmax(z, dim=1)),
    ]


class TwiceNet(nn.Module):
    """The same module called twice, a residual addition and a product of two layers."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        a = self.fc(x)
        b = torch.tanh(a)
        c = self.fc(b)
        d = c + x
        return torch.relu(d * a)


def twice_net_spec(model: TwiceNet) -> Spec:
    return [
        ("fc", ["input"], model.fc),
        ("tanh", ["fc"], torch.tanh),
        ("fc_1", ["tanh"], model.fc),
        ("add", ["fc_1", "input"], lambda c, x: c + x),
        ("mul", ["add", "fc"], lambda d, a: d * a),
        ("relu", ["mul"], torch.relu),
    ]


@pytest.mark.parametrize("incl", [True, False])
@pytest.mark.parametrize(
    ("make", "spec_of", "shape"),
    [
        pytest.param(OpsNet, ops_net_spec, (2, 5, 5), id="conv-sigmoid-relu-add-cat-permute-slice-view-fc"),
        pytest.param(TwiceNet, twice_net_spec, (4,), id="module-called-twice-residual"),
    ],
)
def test_ops_models_edges_equal_jacobian_of_each_op(make, spec_of, shape, incl: bool):
    torch.manual_seed(0)
    model = double_copy(randomize_with_zeros(make(), seed=5))
    x = torch.randn(2, *shape, dtype=torch.float64)
    check_ops(model, spec_of(model), spec_of(unit_copy(model)), x, incl)


def functional_model(fn: Callable) -> nn.Module:
    class Op(nn.Module):
        def forward(self, x):
            return fn(x)

    return Op()


def _weight(shape: tuple[int, ...], unit: bool) -> torch.Tensor:
    if unit:
        return torch.ones(shape, dtype=torch.float64)
    gen = torch.Generator().manual_seed(7)
    weight = torch.randn(shape, generator=gen, dtype=torch.float64)
    weight[torch.rand(shape, generator=gen) < 0.3] = 0.0
    weight.view(-1)[0] = 0.0
    return weight


@dataclass(frozen=True)
class OpCase:
    id: str
    name: str  # fx node name of the op, i.e. the layer name
    make: Callable[[bool], Callable]  # unit weights? -> function of the input
    shape: tuple[int, ...]


OP_CASES = [
    OpCase("F.max_pool2d", "max_pool2d", lambda u: lambda x: F.max_pool2d(x, 2), (2, 5, 5)),
    OpCase(
        "F.max_pool2d-kwargs",
        "max_pool2d",
        lambda u: lambda x: F.max_pool2d(x, kernel_size=3, stride=2, padding=1, ceil_mode=True),
        (1, 6, 6),
    ),
    OpCase("F.max_pool1d", "max_pool1d", lambda u: lambda x: F.max_pool1d(x, 3, 2), (2, 7)),
    OpCase("F.avg_pool2d", "avg_pool2d", lambda u: lambda x: F.avg_pool2d(x, 2), (2, 5, 5)),
    OpCase(
        "F.avg_pool2d-kwargs",
        "avg_pool2d",
        lambda u: lambda x: F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, ceil_mode=True),
        (1, 6, 6),
    ),
    OpCase("F.avg_pool1d", "avg_pool1d", lambda u: lambda x: F.avg_pool1d(x, 2), (2, 7)),
    OpCase(
        "F.conv2d",
        "conv2d",
        lambda u: lambda x: F.conv2d(x, _weight((3, 2, 3, 3), u), padding=1),
        (2, 4, 4),
    ),
    OpCase("F.linear", "linear", lambda u: lambda x: F.linear(x, _weight((2, 4), u)), (3, 4)),
    OpCase("torch.softmax", "softmax", lambda u: lambda x: torch.softmax(x, dim=-1), (3, 4)),
    OpCase("Tensor.softmax", "softmax", lambda u: lambda x: x.softmax(dim=1), (3, 4)),
    OpCase("F.softmax", "softmax", lambda u: lambda x: F.softmax(x, dim=1), (3, 4)),
    OpCase("F.log_softmax", "log_softmax", lambda u: lambda x: F.log_softmax(x, dim=-1), (3, 4)),
    OpCase(
        "F.adaptive_avg_pool2d",
        "adaptive_avg_pool2d",
        lambda u: lambda x: F.adaptive_avg_pool2d(x, 2),
        (2, 5, 5),
    ),
    OpCase(
        "F.adaptive_max_pool2d",
        "adaptive_max_pool2d",
        lambda u: lambda x: F.adaptive_max_pool2d(x, 2),
        (2, 5, 5),
    ),
    OpCase(
        "F.interpolate-nearest",
        "interpolate",
        lambda u: lambda x: F.interpolate(x, scale_factor=2, mode="nearest"),
        (1, 2, 3),
    ),
    OpCase("F.pad-zero", "pad", lambda u: lambda x: F.pad(x, (1, 2)), (2, 3)),
    OpCase("F.pad-one", "pad", lambda u: lambda x: F.pad(x, (1, 2), value=1.0), (2, 3)),
    OpCase("torch.flatten", "flatten", lambda u: lambda x: torch.flatten(x, 1), (2, 2, 3)),
    OpCase("Tensor.transpose", "transpose", lambda u: lambda x: x.transpose(1, 2), (2, 3)),
    OpCase("Tensor.unsqueeze", "unsqueeze", lambda u: lambda x: x.unsqueeze(1), (2, 3)),
    OpCase("Tensor.view", "view", lambda u: lambda x: x.view(x.size(0), 3, 2), (6,)),
    OpCase("getitem-step", "getitem", lambda u: lambda x: x[:, 1:, ::2], (3, 5)),
    OpCase("mul-self", "mul", lambda u: lambda x: x * x, (2, 3)),
    OpCase("torch.clamp", "clamp", lambda u: lambda x: torch.clamp(x, min=0.0), (2, 3)),
    OpCase("torch.exp", "exp", lambda u: lambda x: torch.exp(x), (2, 3)),
]


@pytest.mark.parametrize("incl", [True, False])
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in OP_CASES])
def test_ops_single_functional_op_edges_equal_jacobian(case: OpCase, incl: bool):
    torch.manual_seed(0)
    fn, unit_fn = case.make(False), case.make(True)
    x = torch.randn(2, *case.shape, dtype=torch.float64)
    check_ops(functional_model(fn), [(case.name, ["input"], fn)], [(case.name, ["input"], unit_fn)], x, incl)


# ---------------------------------------------------------------------------------------------
# Errors


class Wrap(nn.Module):
    """``layer`` as a child called on the input, then a linear layer."""

    def __init__(self, name: str, layer: nn.Module, tuple_output: bool = False):
        super().__init__()
        self.name, self.tuple_output = name, tuple_output
        self.add_module(name, layer)

    def forward(self, x):
        y = getattr(self, self.name)(x)
        return y[0] if self.tuple_output else y


@pytest.mark.parametrize("granularity", ["children", "ops"])
def test_unsupported_child_names_layer_and_type(granularity: str):
    model = Wrap("up", nn.ConvTranspose2d(2, 1, 2))
    with pytest.raises(UnsupportedLayerError, match=r"'up'.*ConvTranspose2d"):
        build_graph(model, torch.randn(1, 2, 3, 3), granularity)


def test_unsupported_layer_inside_sequential_child_names_inner_layer():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2, 1, 2)))
    with pytest.raises(UnsupportedLayerError, match=r"'1'.*Sequential.*'1'.*ConvTranspose2d"):
        build_graph(model, torch.randn(1, 1, 5, 5), "children")


@pytest.mark.parametrize("granularity", ["children", "ops"])
def test_lstm_child_raises_unsupported_layer_error(granularity: str):
    model = Wrap("lstm", nn.LSTM(4, 3, batch_first=True), tuple_output=True)
    with pytest.raises(UnsupportedLayerError, match=r"'lstm'.*LSTM"):
        build_graph(model, torch.randn(1, 3, 4), granularity)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(4, 1, batch_first=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y, _ = self.mha(x, x, x)
        return self.fc(y)


def test_multihead_attention_raises_unsupported_layer_error():
    with pytest.raises(UnsupportedLayerError, match=r"'mha'.*MultiheadAttention"):
        build_graph(Attention(), torch.randn(1, 3, 4), "ops")


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return x


def test_untraceable_model_ops_raises_trace_error_and_children_still_works():
    model, x = DataDependent(), torch.rand(2, 3) + 0.1  # positive: the branch calls fc
    with pytest.raises(TraceError, match="'children' still works"):
        build_graph(model, x, "ops")
    graph = build_graph(model, x, "children")
    assert graph.layout.names == ["input", "fc"]
    assert graph.n_edges == 9
    assert_same_pattern(graph.layer_block(1)[:, :3], jacobian_pattern(unit_copy(model.fc), [probes((3,))]))
