"""Activation maximisation (issue 15 item 1) against closed-form maximisers, the data set and scipy."""

import copy
import functools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from nsp_pipeline.data.loading import load_dataset
from nsp_pipeline.interpret import synthesis
from nsp_pipeline.interpret.synthesis import (
    Objective,
    _bounded,
    fourier_scale,
    gaussian_blur,
    image_to_spectrum,
    jitter,
    objective_values,
    pad,
    rotate,
    scale,
    spectrum_to_image,
    synthesize,
)
from nsp_pipeline.interpret.synthesis_results import SynthesisResult
from nsp_pipeline.interpret.targets import Target, target_values
from nsp_pipeline.model.architectures import DigitsCNN
from nsp_pipeline.model.training import train_classifier
from nsp_pipeline.render import synthesis_plots
from nsp_pipeline.render.synthesis_plots import plot_feature_sheet, plot_synthesis, shown_image

CONV2 = [Target("conv2", channel=c, reduction="mean") for c in range(16)]


class LinearUnit(nn.Module):
    """``w·x + b`` on the flattened input."""

    def __init__(self, size):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(size, 1)

    def forward(self, x):
        return self.fc(self.flatten(x))


class BatchNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.norm(self.conv(x))), 1))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these small problems run fastest so on a shared machine (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def trained_digits(seed):
    """DigitsCNN trained briefly (seed ``seed``) on the digits' train split, with all 1,797 digits."""
    train = load_dataset({"source": "digits", "split": "train"})
    torch.manual_seed(seed)
    model = DigitsCNN()
    train_classifier(model, train, epochs=4, learning_rate=0.01, batch_size=64, seed=seed)
    return model.eval(), load_dataset({"source": "digits", "split": "all"}).inputs


@pytest.fixture(scope="module")
def trained():
    return trained_digits(0)


def _linear(shape, seed=0):
    torch.manual_seed(seed)
    model = LinearUnit(int(np.prod(shape)))
    return model, model.fc.weight.detach().numpy()[0].reshape(shape)


@pytest.mark.parametrize(
    "shape, parameterisation, lam",
    [
        ((6,), "pixel", 0.5),
        ((1, 4, 4), "pixel", 2.0),
        ((1, 4, 4), "fourier", 0.5),
        ((3, 5, 6), "fourier", 2.0),
    ],
)
def test_linear_unit_with_l2_penalty_reaches_w_over_2_lambda(shape, parameterisation, lam):
    # maximise w·x + b − λ‖x‖²: the gradient w − 2λx vanishes at x = w / (2λ)
    model, w = _linear(shape)
    result = synthesize(
        model,
        Target("fc", unit=(0,)),
        shape,
        steps=400,
        regularisers={"l2": lam},
        parameterisation=parameterisation,
        init="zeros",
    )
    np.testing.assert_allclose(result.inputs[0], w / (2 * lam), atol=1e-5)
    bias = float(model.fc.bias.detach())
    assert result.values[0] == pytest.approx(float((w * w).sum()) / (2 * lam) + bias, abs=1e-5)


@pytest.mark.parametrize(
    "shape, parameterisation", [((6,), "pixel"), ((3, 5, 6), "pixel"), ((1, 4, 4), "fourier")]
)
def test_linear_unit_in_a_ball_reaches_r_w_over_norm_w(shape, parameterisation):
    model, w = _linear(shape, seed=1)
    radius = 1.5
    result = synthesize(
        model, Target("fc", unit=(0,)), shape, steps=400, norm_bound=radius, parameterisation=parameterisation
    )
    np.testing.assert_allclose(result.inputs[0], radius * w / np.linalg.norm(w), atol=1e-5)


def test_linear_unit_in_a_box_reaches_its_corner_and_minimises_with_a_negative_weight():
    # max w·x over [lo, hi]^d: hi where w > 0, lo where w < 0 (and the reverse for −w·x)
    model, w = _linear((1, 5, 5), seed=2)
    target = Target("fc", unit=(0,))
    result = synthesize(
        model,
        [target, Objective.of(target, -1.0)],
        (1, 5, 5),
        steps=400,
        parameterisation="pixel",
        value_range=(-0.5, 1.0),
    )
    np.testing.assert_array_equal(result.inputs[0], np.where(w > 0, 1.0, -0.5).astype(np.float32))
    np.testing.assert_array_equal(result.inputs[1], np.where(w > 0, -0.5, 1.0).astype(np.float32))


class Quadratic(nn.Module):
    """``−‖x − c‖²``: the one maximum is ``c``."""

    def __init__(self, centre):
        super().__init__()
        self.register_buffer("centre", torch.as_tensor(centre, dtype=torch.float32))

    def forward(self, x):
        return -(x - self.centre).pow(2).flatten(1).sum(dim=1, keepdim=True)


# Batched kernels round in the last bits differently from the data set's single forward pass
ROUNDING = 1e-6


@pytest.mark.parametrize("parameterisation", ["pixel", "fourier"])
@pytest.mark.parametrize("training_seed", [0, 2, 4])  # from noise alone, 2 and 4 end below a digit
def test_started_from_the_digits_synthesis_beats_every_digit_for_every_training_seed(
    training_seed, parameterisation
):
    model, digits = trained_digits(training_seed)
    objectives = CONV2 + [Target("fc", unit=(c,)) for c in range(10)]
    result = synthesize(
        model,
        objectives,
        (1, 8, 8),
        steps=64,
        parameterisation=parameterisation,
        value_range=(0.0, 1.0),
        seed=1,
        candidates=digits,
    )
    assert result.inputs.min() >= 0.0 and result.inputs.max() <= 1.0
    every_digit = target_values(model, digits, objectives)  # (1797, 26), one independent forward pass
    best = every_digit.amax(dim=0).numpy()
    assert (result.values >= best - ROUNDING * np.maximum(1, np.abs(best))).all(), (result.values, best)
    np.testing.assert_allclose(result.candidate_values, best, rtol=ROUNDING, atol=ROUNDING)
    chosen = every_digit[torch.as_tensor(result.candidate), torch.arange(len(objectives))].numpy()
    np.testing.assert_allclose(chosen, best, rtol=ROUNDING, atol=ROUNDING)  # the row holds the best
    # the values, recomputed by hand from the modules (an independent forward pass)
    with torch.no_grad():
        x = torch.as_tensor(result.inputs)
        conv2 = model.relu2(model.conv2(model.pool1(model.relu1(model.conv1(x)))))
        by_hand = [conv2[i, i].mean() for i in range(16)] + [model(x)[16 + c, c] for c in range(10)]
    np.testing.assert_allclose(result.values, torch.stack(by_hand).numpy(), rtol=1e-5, atol=1e-6)
    # an unoptimised digit is kept only where no ascent ended higher; then it is that digit
    for k in np.flatnonzero(result.start == 2):
        np.testing.assert_array_equal(result.inputs[k], digits[result.candidate[k]].numpy())
    # the trajectory rises on average: per objective from noise, over the objectives in all
    tenth = result.steps // 10
    rise = result.trajectory[-tenth:].mean(axis=0) - result.trajectory[:tenth].mean(axis=0)
    assert (rise[result.start == 0] >= 0).all() and rise.mean() > 0, rise


def test_the_best_candidate_is_kept_unoptimised_when_every_ascent_ends_lower():
    centre = np.full((1, 3, 3), 2.0, dtype=np.float32)
    model = Quadratic(centre)
    candidates = np.stack([centre + 0.5, centre + 0.01, np.zeros_like(centre)])
    # one Adam step of lr 1 moves each pixel by 1: from the candidate 0.01 away, past the maximum
    result = synthesize(
        model,
        Target("sum_1", unit=(0,)),
        (1, 3, 3),
        steps=1,
        lr=1.0,
        parameterisation="pixel",
        init="zeros",
        restarts=2,
        candidates=candidates,
    )
    assert result.start.tolist() == [3] and result.candidate.tolist() == [1]
    np.testing.assert_array_equal(result.inputs[0], candidates[1])
    assert result.values[0] == pytest.approx(-9 * 0.01**2, rel=1e-4)  # −‖x − c‖² of that candidate
    assert result.start_label(0) == "best candidate (row 1), unoptimised"
    # small steps from that candidate approach the maximum: the ascent wins
    closer = synthesize(
        model,
        Target("sum_1", unit=(0,)),
        (1, 3, 3),
        steps=50,
        lr=0.002,
        parameterisation="pixel",
        init="zeros",
        restarts=2,
        candidates=candidates,
    )
    assert closer.start.tolist() == [2] and closer.values[0] > result.values[0]


def test_candidates_are_ranked_by_objective_minus_penalties():
    # w·x + b − λ‖x‖²: a long candidate along w has the higher objective, w/(2λ) the higher score
    model, w = _linear((6,))
    lam = 0.5
    long = 10 * w / np.linalg.norm(w)
    result = synthesize(
        model,
        Target("fc", unit=(0,)),
        (6,),
        steps=400,
        regularisers={"l2": lam},
        parameterisation="pixel",
        init="zeros",
        candidates=np.stack([long, w / (2 * lam)]),
    )
    bias = float(model.fc.bias.detach())
    assert result.candidate.tolist() == [1]
    assert result.candidate_values[0] == pytest.approx(float(w @ w) / (2 * lam) + bias, abs=1e-5)
    np.testing.assert_allclose(result.inputs[0], w / (2 * lam), atol=1e-5)


RECIPE = {
    "steps": 24,
    "transforms": [pad(2), jitter(1), scale([0.9, 1.0, 1.1]), rotate([-15, 0, 15])],
    "blur_every": 4,
    "value_range": (0.0, 1.0),
    "regularisers": {"tv": 1e-3, "l1": 1e-3},
}


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(trained):
    model, _ = trained
    first, second, other = (synthesize(model, CONV2[:4], (1, 8, 8), seed=s, **RECIPE) for s in (3, 3, 4))
    for name, array in first.to_arrays().items():
        assert array.tobytes() == second.to_arrays()[name].tobytes(), name
    assert first.parameters == second.parameters
    assert not np.array_equal(first.inputs, other.inputs)


def test_the_clamp_snaps_values_within_a_few_epsilons_onto_the_bounds():
    width, epsilon = 2.0, torch.finfo(torch.float32).eps
    images = torch.tensor(
        [-1.0 + 10 * epsilon * width, 1.0 - 10 * epsilon * width, -3.0, 0.25, -1.0 + 100 * epsilon * width],
        requires_grad=True,
    )
    bounded = _bounded(images, None, -1.0, 1.0)
    expected = torch.tensor([-1.0, 1.0, -1.0, 0.25, float(-1.0 + 100 * epsilon * width)])
    assert torch.equal(bounded.detach(), expected)
    bounded.sum().backward()
    assert torch.equal(images.grad, torch.ones(5))  # straight through


@pytest.mark.parametrize(
    "parameterisation, value_range, restarts",
    [("pixel", (0.0, 1.0), 1), ("fourier", None, 1), ("fourier", (0.0, 1.0), 1), ("fourier", (0.0, 1.0), 2)],
)
def test_a_batch_equals_one_run_per_objective(trained, parameterisation, value_range, restarts):
    # A single image runs through other float32 kernels than a batch; their last bits differ by
    # processor (AVX2 or AVX-512), and over 24 steps the runs part by up to 1e-2 on an AVX2 machine
    # (max-pool ties). In float64 the comparison is about batching itself.
    model = copy.deepcopy(trained[0]).double()
    objectives = [
        CONV2[2],
        Target("fc", unit=(4,)),
        CONV2[7],
        Objective.of(Target("pool1", channel=1, unit=(2, 2)), -1),
    ]
    recipe = {
        **RECIPE,
        "value_range": value_range,
        "parameterisation": parameterisation,
        "seed": 5,
        "restarts": restarts,
    }
    batch = synthesize(model, objectives, (1, 8, 8), **recipe)
    for k, objective in enumerate(objectives):
        alone = synthesize(model, objective, (1, 8, 8), **recipe)
        np.testing.assert_allclose(alone.inputs[0], batch.inputs[k], atol=1e-5)
        np.testing.assert_allclose(alone.trajectory[:, 0], batch.trajectory[:, k], rtol=1e-5, atol=1e-5)


def test_each_objective_depends_only_on_its_own_input_with_batch_norm_in_eval_mode():
    torch.manual_seed(0)
    model = BatchNormNet()
    model.norm.running_mean.uniform_(-1, 1)
    model.norm.running_var.uniform_(0.5, 2)
    model.train()
    objectives = [
        Target("fc", unit=(1,)),
        Target("conv", channel=2, reduction="max"),
        Objective(((Target("fc", unit=(0,)), 1.0), (Target("conv", channel=3, unit=(1, 1)), -2.0))),
    ]
    x = torch.randn(3, 3, 5, 5)
    jacobian = torch.autograd.functional.jacobian(
        lambda inputs: objective_values(model, inputs, objectives), x
    )
    for i in range(3):
        for j in range(3):
            block = jacobian[i, j]
            assert (block != 0).any() if i == j else (block == 0).all(), (i, j)
    assert model.training  # restored
    result = synthesize(model, objectives, (3, 5, 5), steps=3)
    assert all(p.grad is None for p in model.parameters())  # gradients only with respect to the inputs
    assert result.inputs.shape == (3, 3, 5, 5) and result.trajectory.shape == (3, 3)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 7, 5), (2, 6, 9)])
def test_fourier_round_trip_and_numpy_spectrum(shape):
    images = torch.randn(2, *shape, dtype=torch.float64)
    decorrelate = shape[0] == 3
    spectrum = image_to_spectrum(images, decay_power=1.0, decorrelate=decorrelate)
    assert spectrum.shape == (2, shape[0], shape[1], shape[2] // 2 + 1, 2)
    back = spectrum_to_image(spectrum, shape[1:], decay_power=1.0, decorrelate=decorrelate)
    np.testing.assert_allclose(back.numpy(), images.numpy(), atol=1e-12)
    if not decorrelate:
        expected = np.fft.rfft2(images.numpy(), norm="ortho") / fourier_scale(*shape[1:])
        np.testing.assert_allclose(
            spectrum[..., 0].numpy() + 1j * spectrum[..., 1].numpy(), expected, atol=1e-12
        )
    scales = fourier_scale(*shape[1:])
    assert scales[0, 0] == max(shape[1:])  # the DC term: 1 / (1 / max(H, W))
    fy, fx = np.fft.fftfreq(shape[1])[1], np.fft.rfftfreq(shape[2])[1]
    assert scales[1, 0] == pytest.approx(1 / max(fy, 1 / max(shape[1:])))
    assert scales[0, 1] == pytest.approx(1 / max(fx, 1 / max(shape[1:])))


@pytest.mark.parametrize("sigma", [0.5, 0.7, 1.3])
def test_gaussian_blur_is_scipys_gaussian_filter(sigma):
    images = torch.rand(2, 3, 9, 7, dtype=torch.float64)
    expected = ndimage.gaussian_filter(
        images.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=3.0
    )
    np.testing.assert_allclose(gaussian_blur(images, sigma).numpy(), expected, atol=1e-12)


def _resample(images, transforms, seed=0):
    resampler = synthesis._Resampler(transforms, tuple(images.shape[-2:]), fill=0.0)
    return resampler(images, [np.random.default_rng(seed) for _ in images])


def test_transforms_jitter_rotate_and_pad_move_pixels_as_expected():
    images = torch.rand(3, 2, 6, 6, dtype=torch.float64)
    np.testing.assert_allclose(
        _resample(images, [rotate([90])]).numpy(), torch.rot90(images, -1, (2, 3)).numpy(), atol=1e-12
    )
    np.testing.assert_allclose(_resample(images, [pad(3), scale([1.0])]).numpy(), images.numpy(), atol=1e-12)
    rng = np.random.default_rng(0)
    dy, dx = rng.integers(-2, 3, size=2)  # the first draws of each image's generator
    rows = np.clip(np.arange(6) - dy, 0, 5)
    columns = np.clip(np.arange(6) - dx, 0, 5)
    shifted = images.numpy()[:, :, rows][:, :, :, columns]  # border pixels repeat
    np.testing.assert_allclose(_resample(images, [jitter(2)]).numpy(), shifted, atol=1e-12)
    padded = _resample(images, [pad(2, "constant", 0.25), jitter(2)]).numpy()
    inside = (np.arange(6) - dy >= 0) & (np.arange(6) - dy < 6)
    assert np.allclose(padded[:, :, ~inside], 0.25)


def test_a_transform_per_image_independent_of_the_batch():
    images = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    transforms = [jitter(3), rotate([-30, 30])]
    together = _resample(images, transforms, seed=9)
    for i in range(4):
        np.testing.assert_array_equal(
            _resample(images[i : i + 1], transforms, seed=9)[0].numpy(), together[i].numpy()
        )


def test_errors_name_what_was_expected():
    model = DigitsCNN()
    with pytest.raises(ValueError, match="channel 16 out of range for layer 'conv2'"):
        synthesize(model, Target("conv2", channel=16, reduction="mean"), (1, 8, 8), steps=1)
    with pytest.raises(ValueError, match="unknown regularisers"):
        synthesize(model, CONV2[0], (1, 8, 8), steps=1, regularisers={"l3": 1.0})
    with pytest.raises(ValueError, match="need image inputs"):
        synthesize(LinearUnit(6), Target("fc", unit=(0,)), (6,), steps=1)  # fourier by default
    with pytest.raises(ValueError, match="init has shape"):
        synthesize(model, CONV2[:2], (1, 8, 8), steps=1, init=np.zeros((3, 1, 8, 8)))
    with pytest.raises(ValueError, match="at most one pad"):
        synthesize(model, CONV2[0], (1, 8, 8), steps=1, transforms=[pad(1), pad(2)])
    with pytest.raises(ValueError, match=r"candidates have shape \(4, 8, 8\); expected \(m, \*\(1, 8, 8\)\)"):
        synthesize(model, CONV2[0], (1, 8, 8), steps=1, candidates=np.zeros((4, 8, 8)))
    with pytest.raises(ValueError, match="candidates hold NaN"):
        synthesize(model, CONV2[0], (1, 8, 8), steps=1, candidates=np.full((2, 1, 8, 8), np.nan))


def _pages(path):
    data = path.read_bytes()
    return data.count(b"/Type /Page") - data.count(b"/Type /Pages")


def test_result_round_trip_and_plots_reproducible(trained, tmp_path):
    model, digits = trained
    objectives = [*CONV2[:5], Target("fc", unit=(2,)), Target("pool1", channel=3, reduction="max")]
    result = synthesize(model, objectives, (1, 8, 8), steps=8, value_range=(0.0, 1.0), candidates=digits[:40])
    again = SynthesisResult.from_arrays(result.to_arrays(), json.loads(json.dumps(result.attributes())))
    assert set(result.to_arrays()) == {
        "inputs",
        "trajectory",
        "values",
        "start",
        "candidate",
        "candidate_values",
    }
    for name, array in result.to_arrays().items():
        np.testing.assert_array_equal(again.to_arrays()[name], array)
    assert again.attributes() == result.attributes() and result.parameters["candidates"] == 40
    page = synthesis_plots._objective_page(result, 5, "")
    (axes,) = page.axes
    dotted = [line for line in axes.lines if line.get_label() == "best candidate"]
    assert len(dotted) == 1 and dotted[0].get_ydata()[0] == result.candidate_values[5]
    assert f"from the {result.start_label(5)}" in "".join(t.get_text() for t in page.texts)
    assert (
        result.label(5) == "fc[2]" and result.channel_of(3) == ("conv2", 3) and result.channel_of(5) is None
    )
    np.testing.assert_array_equal(shown_image(result, 0)[..., 0], result.inputs[0, 0])  # range (0, 1) as is
    for name in ("a", "b"):
        plot_synthesis(result, tmp_path / f"{name}.pdf", title="digits")
        plot_feature_sheet(result, tmp_path / f"sheet_{name}.pdf", columns=4)
    assert _pages(tmp_path / "a.pdf") == 7 and _pages(tmp_path / "sheet_a.pdf") == 2  # conv2, pool1
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
    assert (tmp_path / "sheet_a.pdf").read_bytes() == (tmp_path / "sheet_b.pdf").read_bytes()
    with pytest.raises(ValueError, match="no objective is one channel"):
        plot_feature_sheet(
            SynthesisResult.from_arrays(
                {k: v[..., 5:6] if k == "trajectory" else v[5:6] for k, v in result.to_arrays().items()},
                {**result.attributes(), "objectives": result.attributes()["objectives"][5:6]},
            ),
            tmp_path / "x.pdf",
        )
    assert not (tmp_path / "x.pdf").exists()
