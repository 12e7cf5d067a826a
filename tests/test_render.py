"""Tests of nsp_pipeline.render: PDF pages, the drawn images, colour limits and failures."""

from __future__ import annotations

import math
import re
import sys
import time

import matplotlib
import numpy as np
import pytest
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

import nsp_pipeline.render as render
from nsp_pipeline.layout import Layer, Layout
from nsp_pipeline.pattern import Pattern
from nsp_pipeline.render import SCALES, color_limits, layer_image, render_pattern

SHAPES = [(1, 4, 4), (3, 5, 5), (70, 2, 2), (10,), (4, 7)]


def make_pattern(shapes, n_samples=2, seed=0, **metadata) -> Pattern:
    layers = tuple(
        Layer(f"layer{i}", shape, "input" if i == 0 else f"Kind{i}", parents=() if i == 0 else (i - 1,))
        for i, shape in enumerate(shapes)
    )
    layout = Layout(layers)
    values = np.random.default_rng(seed).normal(size=(n_samples, layout.n_nodes))
    return Pattern(layout, values, **metadata)


def pdf_pages(data: bytes) -> int:
    """Page objects in a PDF (``/Type /Page``, not ``/Type /Pages``)."""
    return len(re.findall(rb"/Type\s*/Page\b", data))


def pdf_images(data: bytes) -> int:
    return len(re.findall(rb"/Subtype\s*/Image\b", data))


@pytest.fixture
def captured(monkeypatch):
    """Figures handed to PdfPages.savefig during a render, in page order.

    For speed, a blank page is saved in place of each captured figure.
    """
    figures = []
    original = PdfPages.savefig

    def savefig(self, figure=None, **kwargs):
        figures.append(figure)
        original(self, Figure(), **kwargs)

    monkeypatch.setattr(PdfPages, "savefig", savefig)
    return figures


# --- the PDF ---------------------------------------------------------------------------------------------


def test_pdf_has_one_page_per_layer(tmp_path):
    shapes = [*SHAPES, (2, 3, 2, 2), (6, 1, 1), (1234,)]
    pattern = make_pattern(shapes)
    path = tmp_path / "sub" / "pattern.pdf"
    out = render_pattern(pattern, str(path))
    assert out == path and path.is_file()
    data = path.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    assert pdf_pages(data) == len(shapes)
    assert pdf_images(data) >= len(shapes)  # each layer is a raster image
    assert list(tmp_path.rglob(".*.tmp")) == []


@pytest.mark.parametrize(
    ("scale", "cmap"),
    list(zip(SCALES, ["viridis", "RdBu_r", "tab20c", matplotlib.colormaps["magma"]], strict=True)),
)
def test_every_scale_and_colormap(tmp_path, scale, cmap):
    path = render_pattern(make_pattern([(3, 5, 5)]), tmp_path / "p.pdf", scale=scale, cmap=cmap)
    assert pdf_pages(path.read_bytes()) == 1


@pytest.mark.parametrize("scale", SCALES)
def test_pages_use_color_limits_of_scale(captured, tmp_path, scale):
    pattern = make_pattern([(3, 5, 5), (10,), (4, 7)], n_samples=2)
    render_pattern(pattern, tmp_path / "p.pdf", sample=1, scale=scale)
    expected = color_limits([pattern.layer(i)[1] for i in range(3)], scale)
    assert [figure.axes[0].images[0].get_clim() for figure in captured] == expected
    colorbars = [figure.axes[1].images or figure.axes[1].collections for figure in captured]
    assert all(colorbars)  # the second axes is the colourbar


def test_pages_show_layer_image(tmp_path, captured):
    shapes = [*SHAPES, (6, 1, 1)]
    pattern = make_pattern(
        shapes, n_samples=3, sample_ids=[7, 8, 9], labels=[1, -1, 4], predictions=[2, 3, 4]
    )
    render_pattern(pattern, tmp_path / "p.pdf", sample=1, cmap="RdBu_r")
    assert len(captured) == len(shapes)
    for i, (figure, layer) in enumerate(zip(captured, pattern.layout.layers, strict=True)):
        values = pattern.layer(i)[1]
        ax = figure.axes[0]
        assert len(ax.images) == 1  # one imshow per page, however many channels
        image = ax.images[0]
        np.testing.assert_array_equal(np.ma.filled(image.get_array(), np.nan), layer_image(values))
        assert image.get_interpolation() == "nearest"
        assert image.get_cmap().name.startswith("RdBu_r")
        shape = ", ".join(map(str, layer.shape))
        assert ax.get_title() == f"{layer.name} — {layer.kind} — shape ({shape})"
        suptitle = figure.get_suptitle()
        assert "sample 1" in suptitle and "id 8" in suptitle and "prediction 3" in suptitle
        assert "label" not in suptitle  # label -1 means unknown
        assert "activations" in suptitle
        assert len(figure.axes) == 2  # image and one colourbar


def test_explicit_title_and_no_title(tmp_path, captured):
    pattern = make_pattern([(3, 5, 5)])
    render_pattern(pattern, tmp_path / "a.pdf", title="my title")
    render_pattern(pattern, tmp_path / "b.pdf", title="")
    assert captured[0].get_suptitle() == "my title"
    assert captured[1].get_suptitle() == ""


@pytest.mark.parametrize("channels", [1, 3, 64, 70, 512])
def test_tile_labels(tmp_path, captured, channels):
    height, width = 2, 3
    render_pattern(make_pattern([(channels, height, width)]), tmp_path / "p.pdf")
    ax = captured[0].axes[0]
    cols = (ax.images[0].get_array().shape[1] + 1) // (width + 1)
    labels = [int(text.get_text()) for text in ax.texts]
    if channels <= 64:
        assert labels == list(range(channels))
    else:
        assert labels == list(range(0, channels, cols))  # first tile of every row
    for text, channel in zip(ax.texts, labels, strict=True):
        x, y = text.get_position()
        top, left = (channel // cols) * (height + 1), (channel % cols) * (width + 1)
        assert left - 0.5 <= x < left + width - 0.5 and top - 0.5 <= y < top + height - 0.5


# --- layer_image -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 4, 4), (3, 5, 5), (70, 2, 2), (512, 4, 4), (5, 3, 8), (2, 3, 2, 2)])
def test_layer_image_mosaic(shape):
    values = np.random.default_rng(1).normal(size=shape)
    image = layer_image(values)
    *lead, height, width = shape
    channels = math.prod(lead)
    tiles = values.reshape(channels, height, width)
    rows, cols = (image.shape[0] + 1) / (height + 1), (image.shape[1] + 1) / (width + 1)
    assert rows == int(rows) and cols == int(cols), "image must be whole tiles with 1-pixel gaps"
    rows, cols = int(rows), int(cols)
    assert (rows - 1) * cols < channels <= rows * cols  # no empty row of tiles
    if height == width:
        assert abs(rows - cols) <= 1  # near-square grid
    expected = np.full(image.shape, np.nan)
    for channel in range(channels):
        top, left = (channel // cols) * (height + 1), (channel % cols) * (width + 1)
        expected[top : top + height, left : left + width] = tiles[channel]
    np.testing.assert_array_equal(image, expected)
    assert np.array_equal(np.sort(image[~np.isnan(image)]), np.sort(values.ravel()))


@pytest.mark.parametrize("length", [1, 10, 100, 101, 1234, 100_352])
def test_layer_image_strip(length):
    values = np.random.default_rng(2).normal(size=length)
    image = layer_image(values)
    rows, width = image.shape
    if length <= 100:
        assert image.shape == (1, length)
    else:
        assert rows > 1 and width >= 100 and str(width).strip("0") in {"1", "2", "5"}  # a round width
        assert rows <= width  # wrapped towards a square, not a tall column
    assert (rows - 1) * width < length <= rows * width
    flat = image.ravel()
    np.testing.assert_array_equal(flat[:length], values)  # neuron i at (i // width, i % width)
    assert np.isnan(flat[length:]).all()


def test_layer_image_channels_as_rows_and_pooled_vectors():
    values = np.random.default_rng(3).normal(size=(4, 7))
    np.testing.assert_array_equal(layer_image(values), values)
    pooled = np.random.default_rng(4).normal(size=(150, 1, 1))
    np.testing.assert_array_equal(layer_image(pooled), layer_image(pooled.ravel()))
    np.testing.assert_array_equal(layer_image(np.float64(2.5)), [[2.5]])


def test_empty_layers_draw_one_nan_pixel(tmp_path):
    shapes = [(0,), (3, 0), (0, 2, 2), (2, 0, 3)]
    for shape in shapes:
        image = layer_image(np.zeros(shape))
        assert image.shape == (1, 1) and np.isnan(image).all()
    path = render_pattern(make_pattern([(2, 2), *shapes]), tmp_path / "p.pdf")
    assert pdf_pages(path.read_bytes()) == 1 + len(shapes)


# --- color_limits ----------------------------------------------------------------------------------------


def test_color_limits_against_numpy():
    rng = np.random.default_rng(5)
    per_layer = [
        rng.normal(2.0, 1.0, size=(3, 5, 5)),
        rng.normal(-4.0, 0.5, size=10),
        rng.normal(size=(4, 7)),
    ]
    flat = np.concatenate([v.ravel() for v in per_layer])
    expected = {
        "layerscale": [(v.min(), v.max()) for v in per_layer],
        "layernorm": [(-np.abs(v).max(), np.abs(v).max()) for v in per_layer],
        "globalscale": [(flat.min(), flat.max())] * 3,
        "globalnorm": [(-np.abs(flat).max(), np.abs(flat).max())] * 3,
    }
    for scale, limits in expected.items():
        assert color_limits(per_layer, scale) == limits, scale


def test_color_limits_guard_constant_layers():
    per_layer = [np.full(4, 3.0), np.zeros((2, 2)), np.full(3, -1e20)]
    for scale in ("layerscale", "layernorm"):
        for (vmin, vmax), values in zip(color_limits(per_layer, scale), per_layer, strict=True):
            assert vmin < vmax and vmin <= values.min() and values.max() <= vmax
    norm = color_limits(per_layer, "layernorm")
    assert all(vmin == -vmax for vmin, vmax in norm)
    assert norm[1] == (-1.0, 1.0)
    assert color_limits([np.zeros(3), np.zeros(2)], "globalnorm") == [(-1.0, 1.0)] * 2


def test_color_limits_ignore_non_finite_values():
    per_layer = [np.array([np.nan, 1.0, 2.0, np.inf]), np.full(3, np.nan), np.array([3.0, -np.inf])]
    assert color_limits(per_layer, "layerscale") == [(1.0, 2.0), (-0.5, 0.5), (1.5, 4.5)]
    assert color_limits(per_layer, "globalscale") == [(1.0, 3.0)] * 3  # the NaN layer adds no 0
    assert color_limits(per_layer, "globalnorm") == [(-3.0, 3.0)] * 3


# --- errors and atomicity --------------------------------------------------------------------------------


def test_bad_arguments_raise_clear_errors_and_write_nothing(tmp_path):
    pattern = make_pattern([(3, 5, 5)], n_samples=2)
    path = tmp_path / "p.pdf"
    with pytest.raises(ValueError, match=r"'not_a_cmap'.*viridis"):
        render_pattern(pattern, path, cmap="not_a_cmap")
    with pytest.raises(ValueError, match="layerscale, layernorm, globalscale, globalnorm") as info:
        render_pattern(pattern, path, scale="minmax")
    assert "'minmax'" in str(info.value)
    with pytest.raises(ValueError, match="'minmax'"):
        color_limits([np.zeros(2)], "minmax")
    for sample in (2, -3):
        with pytest.raises(IndexError, match=rf"sample {sample} out of range .* 2 samples"):
            render_pattern(pattern, path, sample=sample)
    assert list(tmp_path.iterdir()) == []
    render_pattern(pattern, path, sample=-1)  # negative indices count from the end
    assert path.is_file()


def test_crash_mid_render_leaves_no_file(tmp_path, monkeypatch):
    pages = []
    draw = render._draw_layer

    def draw_then_crash(fig, *args):
        if len(pages) == 2:
            raise RuntimeError("boom")
        pages.append(fig)
        draw(fig, *args)

    monkeypatch.setattr(render, "_draw_layer", draw_then_crash)
    path = tmp_path / "p.pdf"
    with pytest.raises(RuntimeError, match="boom"):
        render_pattern(make_pattern(SHAPES), path)
    assert len(pages) == 2  # it did crash in the middle
    assert list(tmp_path.iterdir()) == []


def test_rendering_never_imports_pyplot(tmp_path, monkeypatch):
    assert not any(getattr(value, "__name__", "") == "matplotlib.pyplot" for value in vars(render).values())
    monkeypatch.delitem(sys.modules, "matplotlib.pyplot", raising=False)
    render_pattern(make_pattern([(2, 3, 3), (5,)]), tmp_path / "p.pdf")
    assert "matplotlib.pyplot" not in sys.modules


def test_pattern_without_layers_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no layers"):
        render_pattern(make_pattern([]), tmp_path / "p.pdf")
    assert list(tmp_path.iterdir()) == []


# --- speed and size --------------------------------------------------------------------------------------


def test_render_speed_and_size(tmp_path):
    pattern = make_pattern([(64, 12, 12), (512, 4, 4)], n_samples=1)
    render_pattern(make_pattern([(70, 2, 2)]), tmp_path / "warmup.pdf")  # fonts and caches
    start = time.perf_counter()
    path = render_pattern(pattern, tmp_path / "p.pdf")
    elapsed = time.perf_counter() - start
    size = path.stat().st_size
    print(f"\nrender (64, 12, 12) + (512, 4, 4): {elapsed:.3f} s, {size / 1024:.0f} KiB")
    assert pdf_pages(path.read_bytes()) == 2
    assert size < 150_000  # raster images, not 17,408 vector rectangles
