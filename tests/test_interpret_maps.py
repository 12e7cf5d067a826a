"""The one-call API :func:`interpret` and its result :class:`AttributionMaps`.

Oracles: the direct calls of :mod:`nsp_pipeline.interpret.attributions` and ``target_values`` (same
parameters and seeds: the API must return exactly their maps); receptive-field boxes derived by hand
from DigitsCNN's kernels, paddings and pools; the support of autograd gradients of a linear conv net
with positive weights (no cancellation, so the gradient is non-zero exactly on the field);
``json`` and ``h5py`` for the stored form.
"""

import json

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from nsp_pipeline.interpret import attributions
from nsp_pipeline.interpret.maps import interpret
from nsp_pipeline.interpret.results import AttributionMaps
from nsp_pipeline.interpret.targets import Target, target_values
from nsp_pipeline.model.architectures import DigitsCNN

TARGETS = [
    Target("fc", unit=(3,)),
    Target("conv2", channel=5, reduction="mean"),
    Target("pool2", channel=1, unit=(0, 0)),
    Target("pool2", channel=2, unit=(1, 1)),
]
PARAMS = {
    "smoothgrad": {"n": 4, "sigma": 0.2, "seed": 3},
    "occlusion": {"window": 3, "stride": 2, "fill": 0.5},
    "activation_map": {"mode": "nearest", "threshold_percentile": 50.0},
}


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(0)
    model = DigitsCNN()
    inputs = torch.rand(5, 1, 8, 8)
    result = interpret(
        model, inputs, TARGETS, labels=[0, 1, 2, 3, 4], class_names=[str(i) for i in range(10)], **PARAMS
    )
    return model, inputs, result


def test_maps_equal_the_direct_calls(digits):
    model, inputs, result = digits
    direct = {
        "saliency": attributions.saliency(model, inputs, TARGETS),
        "guided_backprop": attributions.guided_backprop(model, inputs, TARGETS),
        "smoothgrad": attributions.smoothgrad(model, inputs, TARGETS, **PARAMS["smoothgrad"]),
        "occlusion": attributions.occlusion(model, inputs, TARGETS, **PARAMS["occlusion"]),
    }
    assert result.methods == ("saliency", "guided_backprop", "smoothgrad", "occlusion", "activation_map")
    for method, expected in direct.items():
        np.testing.assert_array_equal(result.maps[method], expected.numpy(), err_msg=method)
    activation = result.maps["activation_map"]
    assert activation.shape == (5, 4, 8, 8)
    assert np.isnan(activation[:, 0]).all()  # fc has no channel map
    for k, (layer, channel) in enumerate([("conv2", 5), ("pool2", 1), ("pool2", 2)], start=1):
        expected = attributions.upsampled_activation_map(
            model, inputs, layer, channel, **PARAMS["activation_map"]
        )
        np.testing.assert_array_equal(activation[:, k], expected.numpy())
    np.testing.assert_array_equal(result.values, target_values(model, inputs, TARGETS).numpy())
    np.testing.assert_array_equal(result.inputs, inputs.numpy())
    assert result.parameters["smoothgrad"] == {**PARAMS["smoothgrad"], **{
        "method": "saliency", "wrt": "input", "batch_size": 256}}  # fmt: skip
    assert result.parameters["occlusion"]["output"] == "grid"


def test_receptive_fields_by_hand(digits):
    # conv 3×3 pad 1 → pool 2 → conv 3×3 pad 1 → pool 2 on 8×8: pool2 (r, c) reads conv2 rows 2r..2r+1,
    # pool1 rows 2r−1..2r+2, conv1 rows 4r−2..4r+5, input rows 4r−3..4r+6, clipped to 0..7.
    _, _, result = digits
    whole = [[0, 1], [0, 8], [0, 8]]
    expected = [whole, whole, [[0, 1], [0, 7], [0, 7]], [[0, 1], [1, 8], [1, 8]]]
    np.testing.assert_array_equal(result.rf_boxes, expected)
    assert result.rf_size(2) == (7, 7)
    for k, ((_, _), (r0, r1), (c0, c1)) in enumerate(expected):  # no dilation: the fields are full boxes
        box = np.zeros((1, 8, 8), dtype=bool)
        box[:, r0:r1, c0:c1] = True
        np.testing.assert_array_equal(result.rf_masks[k], box)


class DilatedLinear(nn.Module):
    """Two linear convolutions with positive weights: 3×3 dilation 2 stride 2, then 2×2 stride 1."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, stride=2, dilation=2, bias=False)
        self.conv2 = nn.Conv2d(2, 2, 2, bias=False)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                conv.weight.uniform_(0.5, 1.0)

    def forward(self, x):
        return self.conv2(self.conv1(x))


@pytest.mark.parametrize(
    "target",
    [
        Target("conv1", channel=0, reduction="mean"),
        Target("conv2", channel=1, reduction="max"),
        Target("conv2", channel=0, unit=(1, 2)),
        Target("conv2", reduction="mean"),
    ],
)
def test_receptive_field_masks_are_the_gradient_support(target):
    torch.manual_seed(4)
    model = DilatedLinear().double()
    inputs = torch.rand(1, 1, 11, 12, dtype=torch.float64) + 0.5
    result = interpret(model, inputs, target, methods=("saliency",))
    x = inputs.clone().requires_grad_(True)
    values = model.conv1(x) if target.layer == "conv1" else model(x)
    part = values[0] if target.channel is None else values[0, target.channel]
    if target.unit is not None:
        part = part[target.unit]
    part.sum().backward()  # a reduction's field is the union of its units' fields, max or mean alike
    support = (x.grad[0] != 0).numpy()
    np.testing.assert_array_equal(result.rf_masks[0], support)
    rows, columns = np.flatnonzero(support.any(axis=(0, 2))), np.flatnonzero(support.any(axis=(0, 1)))
    assert result.rf_boxes[0].tolist() == [[0, 1], [rows[0], rows[-1] + 1], [columns[0], columns[-1] + 1]]
    assert not support.all()  # dilation holes: the mask is not its box


def test_round_trip_through_json_and_hdf5(digits, tmp_path):
    _, _, result = digits
    attributes = json.loads(json.dumps(result.attributes()))
    path = tmp_path / "maps.h5"
    with h5py.File(path, "w") as file:
        for name, array in result.to_arrays().items():
            file[name] = array
        file.attrs["metadata"] = json.dumps(attributes)
    with h5py.File(path, "r") as file:
        arrays = {name: file[name][()] for name in result.to_arrays()}
        attributes = json.loads(file.attrs["metadata"])
    again = AttributionMaps.from_arrays(arrays, attributes)
    assert again.attributes() == result.attributes()
    assert again.to_arrays().keys() == result.to_arrays().keys()
    for name, array in result.to_arrays().items():
        np.testing.assert_array_equal(again.to_arrays()[name], array, err_msg=name)
        assert again.to_arrays()[name].dtype == array.dtype
    assert again.targets[2] == {"layer": "pool2", "channel": 1, "unit": [0, 0], "reduction": None}
    assert again.target_label(1) == "conv2[5] mean"
    assert again.predictions is None and again.labels.tolist() == [0, 1, 2, 3, 4]


def test_from_arrays_names_what_is_missing(digits):
    _, _, result = digits
    arrays = result.to_arrays()
    del arrays["maps/occlusion"]
    with pytest.raises(ValueError, match=r"maps/occlusion"):
        AttributionMaps.from_arrays(arrays, result.attributes())


def test_bad_arguments_are_named():
    torch.manual_seed(0)
    model, inputs = DigitsCNN(), torch.rand(2, 1, 8, 8)
    target = Target("fc", unit=(1,))
    with pytest.raises(ValueError, match=r"expected distinct names among"):
        interpret(model, inputs, target, methods=("saliency", "lrp"))
    with pytest.raises(ValueError, match=r"smoothgrad: unknown parameters \['noise'\]"):
        interpret(model, inputs, target, methods=("smoothgrad",), smoothgrad={"noise": 0.1})
    with pytest.raises(ValueError, match=r"parameters given for \['occlusion'\]"):
        interpret(model, inputs, target, methods=("saliency",), occlusion={"window": 2})
    with pytest.raises(ValueError, match=r"channel 16 out of range for layer 'conv2'"):
        interpret(model, inputs, Target("conv2", channel=16, reduction="mean"), methods=("saliency",))
    with pytest.raises(
        ValueError, match=r"3 class names given but labels range over 0..9: expected at least 10"
    ):
        interpret(model, inputs, target, methods=("saliency",), labels=[0, 9], class_names=["a", "b", "c"])


def test_result_shapes_are_checked():
    with pytest.raises(ValueError, match=r"values has shape \(2, 1\); expected \(3, 1\)"):
        AttributionMaps(
            inputs=np.zeros((3, 1, 4, 4)),
            targets=[{"layer": "fc", "unit": [0]}],
            values=np.zeros((2, 1)),
            maps={},
            parameters={},
        )


def test_targets_in_a_layer_that_absorbed_a_flatten():
    """cifar10_cnn5's conv_2 holds relu, flatten and dropout merged: its units keep their (C, H, W) index."""
    from nsp_pipeline.interpret.targets import Target, target_values
    from nsp_pipeline.model.architectures import Cifar10CNN5

    torch.manual_seed(0)
    model = Cifar10CNN5().eval()
    x = torch.rand(2, 3, 32, 32)
    (values,) = target_values(model, x, [Target("conv_2", channel=7, unit=(2, 2))]).T
    conv = x
    with torch.no_grad():
        for name, child in model.named_children():  # up to conv_2's ReLU, before the flatten
            conv = child(conv)
            if name == "relu_2":
                break
    torch.testing.assert_close(torch.as_tensor(values), conv[:, 7, 2, 2], rtol=1e-6, atol=1e-7)
