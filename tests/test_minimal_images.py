"""Minimal parcel and component images and masked images, against brute force and scipy/skimage."""

from itertools import combinations

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_erosion, gaussian_filter
from skimage.segmentation import slic
from torch import nn

from nsp_pipeline.interpret.minimal_images import (
    decompose,
    masked_image,
    minimal_component_image,
    minimal_parcel_image,
    segment,
)
from nsp_pipeline.interpret.minimal_results import MaskedImage, MinimalImage
from nsp_pipeline.interpret.targets import Target
from nsp_pipeline.render import minimal_plots
from nsp_pipeline.render.minimal_plots import plot_minimal_images


class Linear(nn.Module):
    """``w·x + b`` per output: a linear unit of the image."""

    def __init__(self, shape, outputs=2, seed=0, positive=False):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(int(np.prod(shape)), outputs)
        if positive:
            with torch.no_grad():
                self.fc.weight.abs_()
                self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))


class Conv(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 12 * 12, 3)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def blocks(channels=3, size=12, seed=0) -> torch.Tensor:
    """An image of 3×3 blocks of 4×4 pixels, each of its own colour, plus a little noise (0..1)."""
    rng = np.random.default_rng(seed)
    colours = rng.uniform(0.1, 0.9, size=(channels, 3, 3))
    image = np.kron(colours, np.ones((size // 3, size // 3))) + rng.uniform(
        -0.02, 0.02, (channels, size, size)
    )
    image = (image - image.min()) / (image.max() - image.min())
    return torch.from_numpy(image).float()


def linear_parts(model, pieces):
    """Bias and each piece's contribution ``w·piece`` of a linear unit, per output (float64)."""
    w = model.fc.weight.detach().double().numpy()
    b = model.fc.bias.detach().double().numpy()
    return b, np.stack([w @ piece.reshape(-1) for piece in pieces])


def brute_force(bias, contributions, fraction):
    """Best value per subset size and the smallest size reaching ``fraction ×`` the full value."""
    n = len(contributions)
    best = np.array(
        [max(bias + sum(contributions[list(s)]) for s in combinations(range(n), k)) for k in range(n + 1)]
    )
    threshold = fraction * (bias + contributions.sum())
    return best, int(np.flatnonzero(best >= threshold - 1e-5 * abs(threshold))[0])


@pytest.mark.parametrize("greedy", ["marginal", "ranked"])
def test_parcels_of_linear_unit_match_brute_force(greedy):
    image = blocks()
    model = Linear(image.shape)
    with torch.no_grad():  # unit 0: every parcel adds (a non-trivial minimal size); unit 1: mixed signs
        model.fc.weight[0].abs_()
        model.fc.bias.zero_()
    results = minimal_parcel_image(
        model,
        image,
        [Target("fc", unit=(0,)), Target("fc", unit=(1,))],
        segmentation="felzenszwalb",
        segmentation_kwargs={"scale": 50, "sigma": 0.0, "min_size": 4},
        fraction=0.8,
        greedy=greedy,
    )
    labels = results[0].labels
    n = labels.max() + 1
    assert 6 <= n <= 12  # the 9 blocks, give or take: small enough for the brute force
    pieces = [np.where(labels == p, image.numpy(), 0.0) for p in range(n)]
    bias, contributions = linear_parts(model, pieces)
    for unit, result in enumerate(results):
        full = bias[unit] + contributions[:, unit].sum()
        if full <= 0:  # make the target positive so that a fraction of it is a goal
            continue
        best, size = brute_force(bias[unit], contributions[:, unit], 0.8)
        np.testing.assert_allclose(result.exact_curve, best, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(result.greedy_curve, best, rtol=1e-5, atol=1e-5)  # greedy is optimal
        assert result.greedy_size == result.exact_size == size
        assert result.minimal_set.sum() == size
        assert result.minimal_value >= 0.8 * full - 1e-5
        np.testing.assert_allclose(result.full_value, full, rtol=1e-5)
    assert results[0].exact_size >= 3  # the brute force had something to find


def test_components_of_linear_unit_match_brute_force():
    image = blocks()
    model = Linear(image.shape, seed=1)
    (result,) = minimal_component_image(model, image, Target("fc", unit=(0,)), n_components=8, fraction=0.5)
    assert result.n_pieces == 8 and result.exact
    bias, contributions = linear_parts(model, [result.base, *result.components])
    best, _ = brute_force(bias[0] + contributions[0, 0], contributions[1:, 0], 1.0)
    np.testing.assert_allclose(result.exact_curve, best, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.greedy_curve, best, rtol=1e-5, atol=1e-5)
    expected = np.flatnonzero(best >= 0.5 * result.full_value)
    assert result.greedy_size == result.exact_size == (expected[0] if expected.size else -1)


@pytest.mark.parametrize("method", ["pca", "ica"])
@pytest.mark.parametrize("shape", [(3, 12, 12), (10, 13)])
def test_all_components_rebuild_the_image(method, shape):
    image = np.random.default_rng(4).normal(size=shape)
    base, components = decompose(image, method, patch_size=4)
    assert components.shape[1:] == shape
    np.testing.assert_allclose(base + components.sum(axis=0), image, atol=1e-9)


def test_component_search_with_all_components_reaches_the_image():
    image = blocks()
    (result,) = minimal_component_image(
        Conv(), image, Target("conv", channel=1, reduction="mean"), n_components=None, exact_max_components=0
    )
    np.testing.assert_allclose(result.compose(np.ones(result.n_pieces, bool)), image.numpy(), atol=1e-6)
    np.testing.assert_allclose(result.greedy_curve[-1], result.full_value, rtol=1e-4)
    assert not result.exact and result.exact_size == -1 and np.isnan(result.exact_curve).all()


def test_segmentation_kwargs_reach_skimage():
    image = blocks(seed=2)  # values span 0..1 exactly: segment's rescaling is the identity
    for n_segments in (4, 16):
        labels = segment(image.numpy(), "slic", {"n_segments": n_segments, "compactness": 5.0})
        direct = slic(
            np.moveaxis(image.numpy().astype(np.float64), 0, -1), n_segments=n_segments, compactness=5.0
        )
        pairs = set(zip(labels.reshape(-1).tolist(), direct.reshape(-1).tolist()))
        assert len(pairs) == len(np.unique(labels)) == len(np.unique(direct))  # the same partition
    counts = [segment(image.numpy(), "slic", {"n_segments": k}).max() + 1 for k in (4, 16)]
    assert counts[0] < counts[1]
    gray = segment(image[0].numpy(), "quickshift", {"kernel_size": 2})
    assert gray.shape == (12, 12)


def test_bad_segmentation_kwarg_is_named():
    with pytest.raises(ValueError, match=r"n_segmentz.*n_segments"):
        minimal_parcel_image(Conv(), blocks(), Target("fc", unit=(0,)), segmentation_kwargs={"n_segmentz": 5})
    with pytest.raises(ValueError, match="segmentation must be one of"):
        minimal_parcel_image(Conv(), blocks(), Target("fc", unit=(0,)), segmentation="watershed")


def test_masked_image_erodes_until_the_first_step_below_the_ratio():
    image = blocks()
    model = Linear(image.shape, outputs=1, positive=True)
    ratio = 0.5
    (result,) = masked_image(
        model, image, Target("fc", unit=(0,)), percentile=50, feather_sigma=1.0, ratio=ratio, fill=0.0
    )
    w = model.fc.weight.detach().double().numpy().reshape(image.shape)
    np.testing.assert_allclose(result.saliency, np.abs(w).sum(axis=0), rtol=1e-6)  # gradient of w·x
    areas = result.masks.sum(axis=(1, 2))
    assert np.all(np.diff(areas) < 0) and len(areas) >= 3
    for before, after in zip(result.masks[:-1], result.masks[1:]):
        np.testing.assert_array_equal(after, binary_erosion(before, np.ones((3, 3)), border_value=0))
    expected = [
        float((w * gaussian_filter(m.astype(float), 1.0) * image.numpy()).sum()) for m in result.masks
    ]  # fill 0, bias 0: w·(f·x)
    np.testing.assert_allclose(result.values, expected, rtol=1e-5)
    threshold = ratio * result.values[0]
    assert result.stop_reason == "below ratio"
    assert np.all(result.values[:-1] >= threshold) and result.values[-1] < threshold
    assert result.chosen_step == len(areas) - 2
    np.testing.assert_allclose(
        result.masked_image, gaussian_filter(result.masks[-2].astype(float), 1.0) * image.numpy()
    )


def test_masked_image_other_stops():
    image = blocks()
    model = Linear(image.shape, outputs=1, positive=True)
    (capped,) = masked_image(model, image, Target("fc", unit=(0,)), ratio=0.01, max_steps=2, fill=0.0)
    assert capped.stop_reason == "max steps" and len(capped.values) == 3 and capped.chosen_step == 2
    (emptied,) = masked_image(model, image, Target("fc", unit=(0,)), ratio=1e-3, fill=0.5)
    assert emptied.stop_reason == "empty mask" and not emptied.masks[-1].any()
    with torch.no_grad():
        model.fc.weight.neg_()
    (negative,) = masked_image(model, image, Target("fc", unit=(0,)), fill=0.0)
    assert negative.stop_reason == "non-positive baseline" and len(negative.values) == 1


def _bytes(results):
    return [
        (name, array.dtype.str, array.tobytes())
        for r in results
        for name, array in sorted(r.to_arrays().items())
    ]


def test_reproducible_and_round_trip():
    image, model = blocks(), Conv()
    targets = [Target("conv", channel=1, reduction="mean"), Target("fc", unit=(2,))]
    runs = [
        (
            minimal_parcel_image(
                model, image, targets, segmentation_kwargs={"n_segments": 9}, batch_size=7, sample_id=17
            ),
            minimal_component_image(
                model, image, targets, method="ica", n_components=6, seed=3, sample_id=17
            ),
            masked_image(model, image, targets, saliency_method="smoothgrad", seed=5, sample_id=17),
        )
        for _ in range(2)
    ]
    for first, second in zip(*runs):
        assert _bytes(first) == _bytes(second)
        assert [r.attributes() for r in first] == [r.attributes() for r in second]
    for results, kind in zip(runs[0], (MinimalImage, MinimalImage, MaskedImage)):
        for result in results:
            again = kind.from_arrays(result.to_arrays(), result.attributes())
            assert _bytes([again]) == _bytes([result]) and again.attributes() == result.attributes()
            assert again.sample_id == 17


def _pages(path) -> int:
    data = path.read_bytes()
    return data.count(b"/Type /Page") - data.count(b"/Type /Pages")


def test_pictures_one_page_per_target_same_bytes(tmp_path):
    image, model = blocks(), Conv()
    targets = [Target("conv", channel=1, reduction="mean"), Target("fc", unit=(2,))]
    parcels = minimal_parcel_image(model, image, targets, segmentation_kwargs={"n_segments": 9})
    components = minimal_component_image(model, image, targets, n_components=6)
    masked = masked_image(model, image, targets)
    first = plot_minimal_images(tmp_path / "a.pdf", parcels, components, masked, title="blocks")
    second = plot_minimal_images(tmp_path / "b.pdf", parcels, components, masked, title="blocks")
    assert _pages(first) == 2 and first.read_bytes() == second.read_bytes()
    assert _pages(plot_minimal_images(tmp_path / "c.pdf", masked=masked[:1])) == 1
    with pytest.raises(ValueError, match="one result per target"):
        plot_minimal_images(tmp_path / "d.pdf", parcels, masked=masked[:1])
    with pytest.raises(ValueError, match="kind 'parcels'"):
        plot_minimal_images(tmp_path / "d.pdf", components=parcels)
    assert not (tmp_path / "d.pdf").exists()


def test_page_title_names_the_sample(tmp_path):
    image, model, target = blocks(), Conv(), Target("conv", channel=1, reduction="mean")
    (parcels,) = minimal_parcel_image(
        model, image, target, segmentation_kwargs={"n_segments": 4}, sample_id=17
    )
    (masked,) = masked_image(model, image, target, saliency_method="contrast", sample_id=17)
    fig = minimal_plots._page({"parcels": parcels, "masked": masked}, "blocks")
    assert "blocks: sample 17 — target conv[1] mean" in [t.get_text() for t in fig.texts]
    (unnamed,) = masked_image(model, image, target, saliency_method="contrast")
    assert "target conv[1] mean" in [t.get_text() for t in minimal_plots._page({"masked": unnamed}, "").texts]
    with pytest.raises(
        ValueError, match=r"different samples in the sequences: \{'parcels': 17, 'masked': None\}"
    ):
        plot_minimal_images(tmp_path / "e.pdf", parcels=[parcels], masked=[unnamed])
    with pytest.raises(ValueError, match="sample_id must be an int"):
        masked_image(model, image, target, saliency_method="contrast", sample_id="17")
