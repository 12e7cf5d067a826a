"""Empirical receptive fields against independent oracles.

Oracles: the closed form of a linear conv net's gradient (the convolution of its kernels, by
``scipy.signal.convolve2d``); hand-computed re-centred maps of one 3×3 convolution (numpy
loops); the exact theoretical fields of :mod:`nsp_pipeline.graph.receptive_fields` (tested
against the dense closure in ``tests/test_receptive_fields.py``) for the support.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.signal import convolve2d
from torch import nn

from nsp_pipeline.interpret.empirical_fields import empirical_receptive_field


class LinearConvs(nn.Module):
    """conv (2→3, 3×3, stride 2) then conv (3→2, 3×3, dilation 2), no nonlinearity, no padding."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(2, 3, 3, stride=2).double()
        self.conv2 = nn.Conv2d(3, 2, 3, dilation=2).double()

    def forward(self, x):
        return self.conv2(self.conv1(x))


class Mixed(nn.Module):
    """Strided and dilated convolutions, max pooling and a residual addition, with ReLUs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.conv3 = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = x + F.relu(self.conv2(x))
        return self.conv3(x)


class OneConv(nn.Module):
    """One 3×3 convolution, padding 1, whose centre tap dominates (1 against at most 0.1)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1).double()
        kernel = torch.tensor(
            [[0.1, -0.05, 0.08], [-0.1, 1.0, 0.02], [0.06, -0.07, 0.09]], dtype=torch.double
        )
        with torch.no_grad():
            self.conv.weight.copy_(kernel[None, None])
            self.conv.bias.fill_(0.3)

    def forward(self, x):
        return self.conv(x)


def spread(kernel: np.ndarray, step: int) -> np.ndarray:
    """A kernel with ``step − 1`` zeros between its taps (dilation in input positions)."""
    out = np.zeros(((kernel.shape[0] - 1) * step + 1, (kernel.shape[1] - 1) * step + 1))
    out[::step, ::step] = kernel
    return out


def test_gradient_field_of_a_linear_conv_net_is_the_kernel_composition():
    model = LinearConvs()
    x = torch.randn(5, 2, 23, 23, dtype=torch.double)  # conv1: 11×11, conv2: 7×7
    k1, k2 = model.conv1.weight.detach().numpy(), model.conv2.weight.detach().numpy()
    for channel in (0, 1):
        field = empirical_receptive_field(model, x, "conv2", channel, method="gradient", unit=(3, 2))
        # unit o reads x[2 o + t] through Σ_m k2[m] (dilation 2, stride 2 → step 4) ⊛ k1[m]
        composed = [sum(convolve2d(spread(k2[channel, m], 4), k1[m, c]) for m in range(3)) for c in range(2)]
        expected = np.abs(composed[0]) + np.abs(composed[1])
        assert field.mean_map.shape == expected.shape == (11, 11)
        np.testing.assert_allclose(field.mean_map, expected, rtol=1e-12, atol=1e-14)
        assert (field.count == 5).all() and (field.window_starts == [6, 4]).all()
        seen = np.isin(np.arange(11), [0, 1, 2, 4, 5, 6, 8, 9, 10])  # taps {0, 4, 8} + {0, 1, 2}: holes
        np.testing.assert_array_equal(field.theoretical_mask, np.outer(seen, seen))
        assert field.theoretical_box == ((0, 11), (0, 11))


def test_recentred_maps_of_one_convolution_by_hand():
    torch.manual_seed(2)
    x = 0.1 * torch.rand(3, 1, 6, 6, dtype=torch.double)
    bright = [(0, 0, 3.0), (2, 3, 2.0), (5, 4, 1.0)]  # each image's maximal unit is its bright pixel
    for i, (r, c, v) in enumerate(bright):
        x[i, 0, r, c] = v
    kernel = OneConv().conv.weight.detach().numpy()[0, 0]
    for method in ("gradient", "occlusion"):
        field = empirical_receptive_field(OneConv(), x, "conv", 0, method=method, top_k=2, window=1, stride=1)
        np.testing.assert_array_equal(field.images, [0, 1])
        np.testing.assert_array_equal(field.units, [[0, 0], [2, 3]])
        np.testing.assert_array_equal(field.window_starts, [[-1, -1], [1, 2]])
        expected = np.full((2, 3, 3), np.nan)
        for k, (r, c, _) in enumerate(bright[:2]):
            for a in range(3):
                for b in range(3):
                    row, col = r - 1 + a, c - 1 + b
                    if 0 <= row < 6 and 0 <= col < 6:
                        # gradient: |k|; occlusion (1×1, fill 0) of a linear unit: |k · x|
                        scale = 1.0 if method == "gradient" else float(x[k, 0, row, col])
                        expected[k, a, b] = abs(kernel[a, b] * scale)
        np.testing.assert_allclose(field.maps, expected, rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(field.count, [[1, 1, 1], [1, 2, 2], [1, 2, 2]])
        np.testing.assert_allclose(field.mean_map, np.nanmean(expected, axis=0), rtol=1e-12)
        assert field.theoretical_mask.all() and field.empirical_box == ((1, 2), (1, 2))
        np.testing.assert_allclose(field.activations, [3.0 + 0.3, 2.0 + 0.3], atol=0.2)


@pytest.mark.parametrize("method", ["gradient", "occlusion"])
def test_maps_vanish_outside_the_theoretical_field_with_stride_dilation_pooling_and_residual(method):
    torch.manual_seed(3)
    model, x = Mixed(), torch.rand(6, 3, 20, 20)
    field = empirical_receptive_field(
        model, x, "conv3", 1, method=method, top_k=4, window=3, stride=1, threshold=0.2
    )
    assert len(field.images) == 4 and (np.diff(field.activations) <= 0).all()
    outside = ~field.theoretical_mask
    covered = ~np.isnan(field.maps)
    assert (field.maps[covered & outside[None]] == 0).all()  # exact zeros outside the field
    assert (field.maps[covered & field.theoretical_mask[None]] != 0).any()
    assert np.all((field.mean_map[outside] == 0) | np.isnan(field.mean_map[outside]))
    (r0, r1), (c0, c1) = field.theoretical_box
    for (a0, a1), (b0, b1) in (field.empirical_box, field.mass_box(0.8), field.mass_box(1.0)):
        assert r0 <= a0 < a1 <= r1 and c0 <= b0 < b1 <= c1
    assert field.mass_box(1.0) == _support_box(field.mean_map)


def _support_box(values):
    rows, cols = np.nonzero(np.nan_to_num(values))
    return ((rows.min(), rows.max() + 1), (cols.min(), cols.max() + 1))


def test_errors_name_the_layer():
    model, x = LinearConvs(), torch.randn(2, 2, 23, 23, dtype=torch.double)
    with pytest.raises(ValueError, match="method must be"):
        empirical_receptive_field(model, x, "conv2", 0, method="upsampling")
    with pytest.raises(ValueError, match="channel 5 out of range for layer 'conv2'"):
        empirical_receptive_field(model, x, "conv2", 5)
    with pytest.raises(ValueError, match="no layer named 'fc'"):
        empirical_receptive_field(model, x, "fc", 0)
