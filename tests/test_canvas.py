"""Tests of nsp_pipeline.render.canvas: pixel images, tick choice and labels, colourbars, log plots."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize, SymLogNorm
from matplotlib.figure import Figure

from nsp_pipeline.render import canvas


def parsed(label: str, factor: str = "") -> float:
    """The number a tick label shows (``−`` minus, ``10ⁿ`` powers, a ``×10ⁿ`` factor)."""
    digits = str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹−", "-0123456789-")
    scale = 10.0 ** int(factor[3:].translate(digits)) if factor else 1.0
    label = label.translate(digits)
    if "10" in label and label.lstrip("-").startswith("10") and label.lstrip("-") != "10":
        sign = -1.0 if label.startswith("-") else 1.0
        return sign * 10.0 ** int(label.lstrip("-")[2:])
    return float(label) * scale


@pytest.mark.parametrize(
    "values",
    [
        [-0.8, -0.4, 0.0, 0.4, 0.8],
        [0.0, 25_000.0, 50_000.0],
        [0.001, 0.002, 0.003],
        [-300.0, -150.0, 0.0, 150.0, 300.0],
        [1.0, 1.5, 2.0, 2.5],
        [-2e-5, 0.0, 2e-5],
    ],
)
def test_linear_tick_labels_read_back_as_their_values(values):
    labels, factor = canvas.linear_tick_labels(np.array(values))
    np.testing.assert_allclose([parsed(label, factor) for label in labels], values, atol=1e-15)
    assert len(set(labels)) == len(labels)
    largest = max(abs(v) for v in values)
    assert bool(factor) == (not 1e-2 <= largest < 1e4)
    assert all("-" not in label for label in labels)  # a true minus sign, as matplotlib writes it


def test_signed_powers_of_ten():
    assert canvas.signed_power_of_ten(0.0) == "0"
    assert canvas.signed_power_of_ten(1e-3) == "10⁻³"
    assert canvas.signed_power_of_ten(-1e5) == "−10⁵"
    assert canvas.signed_power_of_ten(-2.5e5) == "−2.5e+05"


norms = [
    Normalize(-0.8, 0.8),
    Normalize(3.2, 18_841.0),
    Normalize(-1e-6, 4e-6),
    SymLogNorm(0.16, linscale=1.0, vmin=-9.0, vmax=9.0, base=10),
    SymLogNorm(99.0, linscale=1.0, vmin=-1.5e7, vmax=1.5e7, base=10),
    SymLogNorm(1e-6, linscale=1.0, vmin=-1e3, vmax=1e3, base=10),
    SymLogNorm(1.0, linscale=1.0, vmin=18_840.0, vmax=18_841.0, base=10),  # no decade fits
]


@pytest.mark.parametrize("norm", norms, ids=lambda n: f"{type(n).__name__}({n.vmin:g},{n.vmax:g})")
def test_colourbar_ticks_lie_on_the_bar_and_say_their_value(norm):
    ticks = canvas.colourbar_ticks(norm)
    assert len(ticks.values) >= 3
    assert np.all((ticks.values >= norm.vmin) & (ticks.values <= norm.vmax))
    shown = [parsed(label, ticks.factor) for label in ticks.labels]
    np.testing.assert_allclose(shown, ticks.values, rtol=1e-9, atol=1e-15)
    positions = np.sort(np.asarray(norm(ticks.values), dtype=float))
    if isinstance(norm, SymLogNorm) and all("10" in label or label == "0" for label in ticks.labels):
        assert np.diff(positions).min() >= 0.08 - 1e-12  # decades apart enough to read
        assert len(ticks.values) <= canvas.MAX_COLOURBAR_TICKS


def test_integer_ticks():
    for count in (1, 2, 7, 64, 1000):
        ticks = canvas.integer_ticks(count, 8)
        assert ticks.dtype.kind == "i" and ticks[0] == 0
        assert np.all((ticks >= 0) & (ticks < count)) and len(ticks) <= 9


def test_pixel_image_blocks_and_orientation_on_a_raster_page():
    """Agg resamples the pixels to the box: every value fills its block, row 0 at the top."""
    values = np.array([[0.0, 1.0, 2.0], [3.0, np.nan, 5.0]])
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="red")
    figure = Figure(figsize=(3, 2), dpi=100)
    image = canvas.draw_image(figure, (0, 0, 1, 1), values, cmap, Normalize(0, 5), canvas.LAYER_IMAGE)
    block = -(-canvas.MIN_IMAGE_PIXELS // 3)  # whole pixels per value, the longer side at least that wide
    assert image.pixels.shape == (2 * block, 3 * block, 4)
    FigureCanvasAgg(figure).draw()
    page = np.asarray(figure.canvas.buffer_rgba())
    assert page.shape[:2] == (200, 300)
    expected = cmap(Normalize(0, 5)(values), bytes=True)
    for row in range(2):
        for col in range(3):
            np.testing.assert_array_equal(page[50 + 100 * row, 50 + 100 * col], expected[row, col])


def test_rgb_pixel_image():
    rgb = np.random.default_rng(0).uniform(size=(2, 2, 3))
    image = canvas.PixelImage((0, 0, 1, 1), rgb, None, None, block=3)
    assert image.pixels.shape == (6, 6, 4)
    np.testing.assert_array_equal(image.pixels[::3, ::3, :3], np.round(rgb * 255).astype(np.uint8))
    assert np.all(image.pixels[..., 3] == 255)


def test_log_scatter_spans_whole_decades_around_the_points():
    figure = Figure(figsize=(4, 4))
    rect = (0.1, 0.1, 0.8, 0.8)
    x, y = np.array([0.0, 2.0, 5.0]), np.array([3e-4, 1.0, 20.0])
    points = canvas.draw_log_scatter(figure, rect, x, y, "points")
    placed = figure.transFigure.inverted().transform(points.get_transform().transform(points.get_xydata()))
    # decades 10⁻⁴ .. 10²: log10(y) + 4 over 6 of the box's height
    np.testing.assert_allclose(placed[:, 1], 0.1 + 0.8 * (np.log10(y) + 4) / 6)
    assert np.all(np.diff(placed[:, 0]) > 0) and np.all((placed > 0.1) & (placed < 0.9))
    labels = [
        text for artist in figure.artists if isinstance(artist, canvas.Labels) for text in artist.strings
    ]
    assert {"10⁻⁴", "10⁰", "10²"} <= set(labels)


@pytest.mark.parametrize("ha", ["left", "center", "right"])
@pytest.mark.parametrize("va", ["top", "center", "bottom", "baseline"])
def test_labels_sit_where_matplotlib_texts_do(ha, va):
    """Labels drawn straight to the renderer cover the same pixels as Text artists with the same alignment."""
    strings, anchors = ["0", "−10⁴", "128", "ly"], [(0.2, 0.3), (0.5, 0.5), (0.8, 0.7), (0.4, 0.85)]

    def ink(add) -> np.ndarray:
        figure = Figure(figsize=(3, 3), dpi=200)
        add(figure)
        FigureCanvasAgg(figure).draw()
        return np.asarray(figure.canvas.buffer_rgba())[..., 0] < 128

    def as_texts(figure):
        for (x, y), text in zip(anchors, strings, strict=True):
            figure.text(x, y, text, fontsize=9, ha=ha, va=va)

    expected = ink(as_texts)
    drawn = ink(lambda figure: canvas.draw_labels(figure, anchors, strings, 9, ha, va))
    assert expected.sum() > 100
    rows, columns = np.nonzero(expected)
    drawn_rows, drawn_columns = np.nonzero(drawn)
    assert abs(rows.min() - drawn_rows.min()) <= 1 and abs(rows.max() - drawn_rows.max()) <= 1
    assert abs(columns.min() - drawn_columns.min()) <= 1 and abs(columns.max() - drawn_columns.max()) <= 1
    assert (expected != drawn).mean() < 0.002  # the same glyphs at the same places, up to antialiasing
