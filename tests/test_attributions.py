"""Targets, gradient maps, SmoothGrad, occlusion and upsampled activation maps against independent oracles.

Oracles: closed forms on linear, one-hidden-ReLU and quadratic models; ``torch.autograd.functional.jacobian``
of hand-written forward functions; brute-force occlusion loops (also where deep units skip windows and
crop the input); captum's ``Occlusion`` and ``GuidedBackprop`` (on ReLU modules); numpy's percentile.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import GuidedBackprop
from captum.attr import Occlusion as CaptumOcclusion
from torch import nn

from nsp_pipeline.interpret.attributions import (
    _covers,
    _restriction,
    guided_backprop,
    occlusion,
    saliency,
    smoothgrad,
    upsampled_activation_map,
)
from nsp_pipeline.interpret.targets import LayerReader, Target, target_values
from nsp_pipeline.model.architectures import DigitsCNN, MnistTutorialNet

SHAPE = (2, 4, 5)  # channels, rows, columns of the linear model's input


class Linear(nn.Module):
    """f = W x + b on a flattened (2, 4, 5) input, with dyadic weights (sums of copies are exact)."""

    def __init__(self, n_out=3):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(math.prod(SHAPE), n_out).double()
        with torch.no_grad():
            self.fc.weight.copy_(torch.randint(-8, 9, self.fc.weight.shape).double() / 4)
            self.fc.bias.copy_(torch.randint(-8, 9, self.fc.bias.shape).double() / 4)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))


class HiddenReLU(nn.Module):
    """f = vᵀ relu(W x), with a functional or a module ReLU."""

    def __init__(self, functional):
        super().__init__()
        torch.manual_seed(1)
        self.hidden = nn.Linear(6, 12, bias=False).double()
        self.out = nn.Linear(12, 1, bias=False).double()
        self.functional = functional
        self.relu = nn.ReLU()

    def forward(self, x):
        h = self.hidden(x)
        return self.out(F.relu(h) if self.functional else self.relu(h))


class Quadratic(nn.Module):
    """f = xᵀ Q x."""

    def __init__(self, q):
        super().__init__()
        self.q = nn.Parameter(q)

    def forward(self, x):
        return ((x @ self.q) * x).sum(dim=1, keepdim=True)


class TwoConvs(nn.Module):
    """Two 3×3 convolutions, stride 1, no padding: a unit sees a 5×5 input window."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv1 = nn.Conv2d(2, 4, 3)
        self.conv2 = nn.Conv2d(4, 3, 3)

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(x)))


class InPlace(nn.Module):
    """A conv whose output an in-place ReLU overwrites."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(1, 2, 3)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(2 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.relu(self.conv(x)), 1))


def linear_inputs(n=3):
    torch.manual_seed(4)
    return torch.randn(n, *SHAPE, dtype=torch.float64)


# --- targets ---------------------------------------------------------------------------------------


def test_target_values_match_direct_forward_with_functional_and_module_relus():
    torch.manual_seed(5)
    digits, x8 = DigitsCNN(), torch.randn(4, 1, 8, 8)
    conv1 = F.relu(digits.conv1(x8))
    targets = [
        Target("conv1", channel=2, unit=(3, 4)),
        Target("conv1", channel=5, reduction="mean"),
        Target("conv1", channel=5, reduction="max"),
        Target("fc", unit=(7,)),
        Target("conv1", reduction="max"),
    ]
    expected = torch.stack(
        [
            conv1[:, 2, 3, 4],
            conv1[:, 5].mean(dim=(1, 2)),
            conv1[:, 5].amax(dim=(1, 2)),
            digits(x8)[:, 7],
            conv1.amax(dim=(1, 2, 3)),
        ],
        dim=1,
    )
    torch.testing.assert_close(target_values(digits, x8, targets), expected, rtol=0, atol=1e-6)
    mnist, x28 = MnistTutorialNet(), torch.randn(3, 1, 28, 28)
    pooled = F.relu(mnist.pool1(mnist.conv1(x28)))  # merged layer "pool1" holds the functional ReLU
    got = target_values(
        mnist, x28, [Target("pool1", channel=1, unit=(0, 11)), Target("pool1", unit=(9, 2, 2))]
    )
    torch.testing.assert_close(
        got, torch.stack([pooled[:, 1, 0, 11], pooled[:, 9, 2, 2]], 1), rtol=0, atol=1e-6
    )
    ops = target_values(mnist, x28, Target("relu", channel=1, unit=(0, 11)), granularity="ops")
    torch.testing.assert_close(ops[:, 0], pooled[:, 1, 0, 11], rtol=0, atol=1e-6)


def test_target_errors_name_the_layer_and_what_is_valid():
    model, x = MnistTutorialNet(), torch.randn(2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"no layer named 'conv9'.*\['input', 'conv1', 'pool1'"):
        target_values(model, x, Target("conv9", channel=0, reduction="mean"))
    with pytest.raises(
        ValueError, match=r"channel 20 out of range for layer 'conv2' of shape \(20, 8, 8\).*0\.\.19"
    ):
        target_values(model, x, Target("conv2", channel=20, reduction="mean"))
    with pytest.raises(
        ValueError, match=r"unit \(8, 0\) is not an index of the channel map of shape \(8, 8\)"
    ):
        target_values(model, x, Target("conv2", channel=0, unit=(8, 0)))
    with pytest.raises(ValueError, match=r"selects 64 neurons of layer 'conv2'.*give a unit or a reduction"):
        target_values(model, x, Target("conv2", channel=0))
    with pytest.raises(ValueError, match="reduction must be one of"):
        Target("conv2", channel=0, reduction="median")
    with pytest.raises(ValueError, match="not both"):
        Target("conv2", channel=0, unit=(1, 1), reduction="max")
    with pytest.raises(ValueError, match=r"need targets in later layers; \['conv1'\]"):
        saliency(model, x, Target("conv1", channel=0, reduction="mean"), wrt="pool1")


def test_in_place_relu_leaves_the_earlier_layer_its_value():
    model, x = InPlace(), torch.randn(2, 1, 6, 6)
    got = target_values(model, x, Target("conv", channel=1, unit=(2, 3)), granularity="ops")
    torch.testing.assert_close(got[:, 0], model.conv(x)[:, 1, 2, 3], rtol=0, atol=1e-6)
    grad = saliency(model, x, Target("fc", unit=(1,)), granularity="ops")[:, 0]
    for i in range(len(x)):
        expected = torch.autograd.functional.jacobian(lambda s: InPlace.forward(model, s[None])[0, 1], x[i])
        torch.testing.assert_close(grad[i], expected, rtol=1e-5, atol=1e-6)


# --- gradient maps ---------------------------------------------------------------------------------


def test_linear_saliency_is_the_weight_row_and_smoothgrad_is_it_exactly():
    model, x = Linear(), linear_inputs()
    targets = [Target("fc", unit=(k,)) for k in range(3)]
    weights = model.fc.weight.detach().reshape(3, *SHAPE)
    expected = weights.expand(len(x), *weights.shape)
    assert torch.equal(saliency(model, x, targets), expected)
    assert torch.equal(saliency(model, x, targets, abs=True), expected.abs())
    for n, sigma in [(1, 0.1), (7, 2.0), (50, 0.15)]:
        assert torch.equal(smoothgrad(model, x, targets, n=n, sigma=sigma, seed=n, batch_size=16), expected)


def test_guided_backprop_on_one_hidden_relu_layer_functional_and_module():
    torch.manual_seed(6)
    x = torch.randn(5, 6, dtype=torch.float64)
    maps = {}
    for functional in (True, False):
        model = HiddenReLU(functional)
        w, v = model.hidden.weight.detach(), model.out.weight.detach()[0]
        assert (v > 0).any() and (v < 0).any()
        active = (x @ w.T > 0).double()
        guided = guided_backprop(model, x, Target("out", unit=(0,)))[:, 0]
        torch.testing.assert_close(guided, (active * v.clamp(min=0)) @ w, rtol=1e-12, atol=1e-12)
        plain = saliency(model, x, Target("out", unit=(0,)))[:, 0]
        torch.testing.assert_close(plain, (active * v) @ w, rtol=1e-12, atol=1e-12)
        captum = GuidedBackprop(model).attribute(x, target=0)
        maps[functional] = guided, plain, captum
    assert torch.equal(maps[True][0], maps[False][0])
    torch.testing.assert_close(maps[False][2], maps[False][0], rtol=1e-12, atol=1e-12)  # captum hooks nn.ReLU
    torch.testing.assert_close(maps[True][2], maps[True][1], rtol=1e-12, atol=1e-12)  # but not F.relu


def test_captum_guided_backprop_returns_plain_gradients_on_the_tutorial_net_and_ours_does_not():
    torch.manual_seed(7)
    mnist, x = MnistTutorialNet(), torch.randn(3, 1, 28, 28)
    target = Target("fc", unit=(4,))
    captum = GuidedBackprop(mnist).attribute(x, target=4)
    plain, guided = saliency(mnist, x, target)[:, 0], guided_backprop(mnist, x, target)[:, 0]
    torch.testing.assert_close(captum, plain, rtol=1e-5, atol=1e-7)
    assert (guided - plain).abs().max() > 1e-3
    digits, x8 = DigitsCNN(), torch.randn(3, 1, 8, 8)  # ReLU modules: captum's hooks apply
    torch.testing.assert_close(
        guided_backprop(digits, x8, Target("fc", unit=(2,)))[:, 0],
        GuidedBackprop(digits).attribute(x8, target=2),
        rtol=1e-5,
        atol=1e-7,
    )


def test_saliency_matches_the_jacobian_on_a_small_cnn_wrt_input_and_a_layer(small_resnet):
    torch.manual_seed(8)
    x = torch.randn(3, 1, 8, 8)
    names = LayerReader(small_resnet, x, "ops").names
    assert "add" in names
    grads = saliency(
        small_resnet,
        x,
        [Target("head", unit=(2,)), Target("pool", channel=1, reduction="max")],
        "input",
        granularity="ops",
    )
    for i in range(len(x)):
        head = torch.autograd.functional.jacobian(lambda s: small_resnet(s[None])[0, 2], x[i])
        torch.testing.assert_close(grads[i, 0], head, rtol=1e-5, atol=1e-6)

        def pool_max(s):
            h = F.relu(small_resnet.stem(s[None]))
            return small_resnet.pool(h + torch.sigmoid(small_resnet.branch(h)))[0, 1].amax()

        torch.testing.assert_close(
            grads[i, 1], torch.autograd.functional.jacobian(pool_max, x[i]), rtol=1e-5, atol=1e-6
        )
    digits, x8 = DigitsCNN(), torch.randn(3, 1, 8, 8)
    layer_grads = saliency(digits, x8, Target("fc", unit=(3,)), wrt="conv1")[:, 0]

    def from_conv1(h):  # layer "conv1" holds relu1's output
        return digits.fc(digits.flatten(digits.pool2(digits.relu2(digits.conv2(digits.pool1(h[None]))))))[
            0, 3
        ]

    for i in range(len(x8)):
        h = F.relu(digits.conv1(x8[i : i + 1]))[0].detach()
        torch.testing.assert_close(
            layer_grads[i], torch.autograd.functional.jacobian(from_conv1, h), rtol=1e-5, atol=1e-6
        )


def test_smoothgrad_is_seeded_and_independent_of_batch_size():
    digits, x = DigitsCNN(), torch.randn(4, 1, 8, 8)
    target = Target("fc", unit=(1,))
    first = smoothgrad(digits, x, target, n=10, seed=3, batch_size=256)
    assert torch.equal(first, smoothgrad(digits, x, target, n=10, seed=3, batch_size=7))
    assert not torch.equal(first, smoothgrad(digits, x, target, n=10, seed=4))
    guided = smoothgrad(digits, x, target, n=10, seed=3, method="guided")
    assert not torch.equal(first, guided)


def test_smoothgrad_on_a_quadratic_converges_to_2qx_with_noise_of_std_sigma():
    torch.manual_seed(9)
    a = torch.randn(5, 5, dtype=torch.float64)
    q = (a + a.T) / 2
    model, x = Quadratic(q), torch.randn(5, dtype=torch.float64)
    target = Target(LayerReader(model, x[None]).names[-1], unit=(0,))
    sigma = 0.15
    std = sigma * float(x.max() - x.min())
    # n = 1 on 2000 copies: 2000 independent gradients 2Q(x + ε); their variance is 4σ²(Q²)_jj.
    draws = smoothgrad(model, x.expand(2000, 5), target, n=1, sigma=sigma, seed=0)[:, 0]
    expected_var = 4 * std**2 * torch.diag(q @ q)
    relative = draws.var(dim=0) / expected_var
    assert ((relative - 1).abs() < 5 * math.sqrt(2 / 1999)).all(), relative  # chi-square spread, 5 sd
    # n = 50 on 40 copies: 40 independent SmoothGrad means; their average is within 5 standard errors
    means = smoothgrad(model, x.expand(40, 5), target, n=50, sigma=sigma, seed=1)[:, 0]
    error = (means.mean(dim=0) - 2 * q @ x).abs()
    assert (error <= 5 * means.std(dim=0) / math.sqrt(40)).all(), error


# --- occlusion ---------------------------------------------------------------------------------------


def linear_occlusion_oracle(w, x, fill, window, stride, pixel):
    """Σ_{i∈S} w_i (x_i − β) per window S; per pixel the mean over the windows covering it."""
    rows, cols = x.shape[-2:]
    starts = []
    for size, win, step in zip((rows, cols), window, stride):
        s = list(range(0, size - win + 1, step))
        if pixel and (size - win) % step:
            s.append(s[-1] + step)
        starts.append(s)
    grid = np.zeros((len(starts[0]), len(starts[1])))
    total, count = np.zeros((rows, cols)), np.zeros((rows, cols))
    for a, r in enumerate(starts[0]):
        for b, c in enumerate(starts[1]):
            window_sum = float(
                (
                    w[:, r : r + window[0], c : c + window[1]]
                    * (x[:, r : r + window[0], c : c + window[1]] - fill)
                ).sum()
            )
            grid[a, b] = window_sum
            total[r : r + window[0], c : c + window[1]] += window_sum
            count[r : r + window[0], c : c + window[1]] += 1
    return total / count if pixel else grid


@pytest.mark.parametrize(
    ("window", "stride", "fill"), [((2, 2), (1, 1), 0.0), ((2, 3), (2, 2), 0.5), ((3, 2), (2, 1), -1.0)]
)
def test_linear_occlusion_is_the_weighted_window_sum(window, stride, fill):
    model, x = Linear(), linear_inputs()
    targets = [Target("fc", unit=(k,)) for k in range(3)]
    w = model.fc.weight.detach().reshape(3, *SHAPE).numpy()
    for output in ("grid", "pixel"):
        got = occlusion(model, x, targets, window, stride, fill=fill, output=output, batch_size=5)
        for i in range(len(x)):
            for k in range(3):
                expected = linear_occlusion_oracle(
                    w[k], x[i].numpy(), fill, window, stride, output == "pixel"
                )
                np.testing.assert_allclose(got[i, k].numpy(), expected, rtol=1e-12, atol=1e-12)


def test_occlusion_grid_matches_one_forward_per_window_and_pixel_matches_captum():
    torch.manual_seed(10)
    digits, x = DigitsCNN(), torch.rand(2, 1, 8, 8)
    grid = occlusion(digits, x, Target("fc", unit=(5,)), window=3, stride=2, fill=0.25, output="grid")[:, 0]
    assert grid.shape == (2, 3, 3)
    with torch.no_grad():
        for i in range(2):
            base = digits(x[i : i + 1])[0, 5]
            for a, r in enumerate(range(0, 6, 2)):
                for b, c in enumerate(range(0, 6, 2)):
                    occluded = x[i : i + 1].clone()
                    occluded[..., r : r + 3, c : c + 3] = 0.25
                    torch.testing.assert_close(
                        grid[i, a, b], base - digits(occluded)[0, 5], rtol=1e-5, atol=1e-6
                    )
    x9 = torch.rand(2, 1, 9, 9)  # (9 - 4) % 3 and (9 - 2) % 2 != 0: captum adds windows cut at the border
    pixel = occlusion(digits, x9, Target("fc", unit=(5,)), window=(4, 2), stride=(3, 2), output="pixel")[:, 0]
    reference = CaptumOcclusion(lambda s: digits(s)[:, 5]).attribute(
        x9, sliding_window_shapes=(1, 4, 2), strides=(1, 3, 2)
    )
    torch.testing.assert_close(pixel, reference[:, 0], rtol=1e-5, atol=1e-6)


def test_gradient_and_occlusion_maps_of_a_unit_vanish_outside_its_5x5_receptive_field():
    model, x = TwoConvs(), torch.randn(2, 2, 12, 12)
    target = Target("conv2", channel=1, unit=(4, 6))  # sees input rows 4..8, columns 6..10
    outside = torch.ones(12, 12, dtype=torch.bool)
    outside[4:9, 6:11] = False
    for method in (saliency, guided_backprop):
        grad = method(model, x, target)[:, 0]
        assert (grad[:, :, outside] == 0).all() and (grad[:, :, ~outside] != 0).any()
    occluded = occlusion(model, x, target, window=1, stride=1)[:, 0]
    assert (occluded[:, outside] == 0).all() and (occluded[:, ~outside] != 0).any()
    smooth = smoothgrad(model, x, target, n=4)[:, 0]
    assert (smooth[:, :, outside] == 0).all()


class Deep(nn.Module):
    """conv, max pool, conv, conv (padding 1, ReLUs), then a linear head: deep units see 14×14 of 24×24."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(11)
        self.features = nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(3 * 12 * 12, 2)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


@pytest.mark.parametrize("output", ["grid", "pixel"])
def test_occlusion_of_deep_units_skips_windows_and_crops_yet_equals_the_full_computation_and_loop(output):
    model, x = Deep(), torch.rand(2, 2, 24, 24)
    targets = [
        Target("features.5", channel=1, unit=(5, 6)),  # field rows 5..16, columns 7..18
        Target("features.5", channel=2, unit=(0, 11)),  # at the border: field rows 0..6, columns 17..23
        Target("features.3", channel=0, reduction="mean"),  # not a unit: every window counts
    ]
    reader, covers = LayerReader(model, x), [_covers(24, 3, 2, output, axis) for axis in (0, 1)]
    plan = _restriction(model, x, reader, tuple(targets[:2]), covers, "merged")
    assert plan.crop is not None and plan.hits.any(dim=0).all() and not plan.hits.all()
    mixed = _restriction(model, x, reader, tuple(targets), covers, "merged")
    assert mixed.crop is None and mixed.hits[:, 2].all() and (mixed.hits[:, :2] == plan.hits).all()
    results = []
    for chosen in (targets[:2], targets):  # units alone: skip and crop; with the mean: skip only
        fast = occlusion(model, x, chosen, window=3, stride=2, fill=0.3, output=output, batch_size=7)
        full = occlusion(model, x, chosen, window=3, stride=2, fill=0.3, output=output, restrict=False)
        torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
        results.append(fast)
    if output == "grid":
        skipped = ~mixed.hits.T.reshape(3, 11, 11)
        assert (fast[:, skipped] == 0).all() and (full[:, skipped].abs() < 1e-6).all()
        with torch.no_grad():  # dnnbrain's loop: one full forward pass per window
            base = model.features(x)
            for a, r in enumerate(range(0, 22, 2)):
                for b, c in enumerate(range(0, 22, 2)):
                    occluded = x.clone()
                    occluded[..., r : r + 3, c : c + 3] = 0.3
                    after = model.features(occluded)
                    for k, (channel, row, col) in enumerate([(1, 5, 6), (2, 0, 11)]):
                        for result in results:
                            torch.testing.assert_close(
                                result[:, k, a, b], base[:, channel, row, col] - after[:, channel, row, col],
                                rtol=1e-5, atol=1e-6,
                            )  # fmt: skip


def test_occlusion_rejects_windows_that_do_not_fit():
    model, x = Linear(), linear_inputs()
    with pytest.raises(ValueError, match="larger than the input"):
        occlusion(model, x, Target("fc", unit=(0,)), window=(5, 2), stride=1)
    with pytest.raises(ValueError, match="stride <= window"):
        occlusion(model, x, Target("fc", unit=(0,)), window=(2, 2), stride=(3, 1), output="pixel")


# --- upsampled activation maps --------------------------------------------------------------------------


def test_upsampled_activation_map_nearest_and_dnnbrain_threshold():
    torch.manual_seed(11)
    model, x = MnistTutorialNet(), torch.randn(2, 1, 28, 28)
    channel_map = F.relu(model.pool2(model.conv2(F.relu(model.pool1(model.conv1(x))))))[:, 3].detach()
    nearest = upsampled_activation_map(model, x, "pool2", 3, mode="nearest")
    assert nearest.shape == (2, 28, 28)
    expected = np.kron(channel_map.numpy(), np.ones((7, 7)))  # 4×4 → 28×28
    np.testing.assert_array_equal(nearest.numpy(), expected)
    for mode in ("floor", "zero"):
        got = upsampled_activation_map(
            model, x, "pool2", 3, mode="nearest", threshold_percentile=58, threshold_mode=mode
        )
        for i in range(2):
            t = np.percentile(expected[i], 58)
            want = (
                np.clip(expected[i], t, None)
                if mode == "floor"
                else np.where(expected[i] < t, 0, expected[i])
            )
            np.testing.assert_allclose(got[i].numpy(), want, rtol=1e-6, atol=1e-7)
    bicubic = upsampled_activation_map(model, x, "conv1", 0, size=(30, 31), mode="bicubic")
    assert bicubic.shape == (2, 30, 31)
    with pytest.raises(ValueError, match="channel 20 out of range for layer 'pool2'"):
        upsampled_activation_map(model, x, "pool2", 20)
