"""Tests of nsp_pipeline.render.pages and .tables: the pages, their data, colour scales and failures."""

from __future__ import annotations

import itertools
import math
import re
import sys
import time

import h5py
import matplotlib
import numpy as np
import pytest
from matplotlib.backends.backend_pdf import PdfPages, RendererPdf
from matplotlib.colors import SymLogNorm
from matplotlib.figure import Figure

import nsp_pipeline.render.pages as render
from nsp_pipeline.core.layout import Layer, Layout
from nsp_pipeline.core.pattern import Pattern
from nsp_pipeline.io import hdf5
from nsp_pipeline.pipeline import stages
from nsp_pipeline.render import canvas
from nsp_pipeline.render.pages import (
    SCALES,
    SYMLOG_DECADES,
    SYMLOG_PERCENTILE,
    color_limits,
    color_norms,
    layer_image,
    page_figures,
    render_pattern,
    symlog_threshold,
)
from nsp_pipeline.render.tables import MAX_NAME, frequency_points, layer_summaries, residual_share

SHAPES = [(1, 4, 4), (3, 5, 5), (70, 2, 2), (10,), (4, 7)]

#: Per-sample layer shapes of nsp_pipeline.model.architectures.DigitsCNN at granularity "children".
DIGITS_CNN = [(1, 8, 8), (8, 8, 8), (8, 8, 8), (8, 4, 4), (16, 4, 4), (16, 4, 4), (16, 2, 2), (64,), (10,)]


def make_pattern(shapes, n_samples=2, seed=0, **metadata) -> Pattern:
    layers = tuple(
        Layer(f"layer{i}", shape, "input" if i == 0 else f"Kind{i}", parents=() if i == 0 else (i - 1,))
        for i, shape in enumerate(shapes)
    )
    layout = Layout(layers)
    values = np.random.default_rng(seed).normal(size=(n_samples, layout.n_nodes))
    return Pattern(layout, values, **metadata)


def causal_spectrum(shapes, n_samples=2, seed=0) -> Pattern:
    """A synthetic causal spectrum: values over many orders of magnitude, precision diagnostics."""
    activations = make_pattern(shapes, n_samples, seed, labels=[3] * n_samples, predictions=[5] * n_samples)
    rng = np.random.default_rng(seed + 1)
    values = activations.values * 10.0 ** rng.integers(-3, 6, size=activations.values.shape)
    shape = (n_samples, len(shapes))
    diagnostics = {"significant_digits": rng.uniform(3, 16, shape), "below_noise": rng.uniform(0, 0.2, shape)}
    return activations.with_values(values, "standard", diagnostics=diagnostics)


def laplacian_spectrum(shapes, k=None, n_samples=2, seed=0) -> Pattern:
    """A synthetic Laplacian spectrum; partial (NaN beyond k, with residual energy) if k is given."""
    activations = make_pattern(shapes, n_samples, seed)
    n = activations.layout.n_nodes
    k = n if k is None else k
    values = activations.values.copy()
    values[:, k:] = np.nan
    values[:, 3] = 0.0  # an exactly zero coefficient: no place on a log axis
    eigenvalues = np.sort(np.random.default_rng(seed).uniform(0, 12, k))
    eigenvalues[0] = -1e-15  # roundoff around the zero eigenvalue
    diagnostics = {"residual_energy": np.arange(1.0, n_samples + 1)} if k < n else {}
    return activations.with_values(values, "laplacian", eigenvalues, diagnostics)


def pdf_pages(data: bytes) -> int:
    """Page objects in a PDF (``/Type /Page``, not ``/Type /Pages``)."""
    return len(re.findall(rb"/Type\s*/Page\b", data))


def pdf_images(data: bytes) -> int:
    return len(re.findall(rb"/Subtype\s*/Image\b", data))


def texts(figure: Figure) -> list[str]:
    """Every text on a page."""
    return [t.get_text() for t in figure.texts if t.get_text()]


def parts(figure: Figure, gid: str) -> list:
    """The artists of a page with ``gid`` (see nsp_pipeline.render.canvas)."""
    return figure.findobj(lambda artist: artist.get_gid() == gid, include_self=False)


def main_image(figure: Figure) -> canvas.PixelImage:
    """The one image of a layer page (or the input of the first summary page)."""
    (image,) = parts(figure, canvas.LAYER_IMAGE)
    return image


def image_title(figure: Figure) -> str:
    (title,) = parts(figure, canvas.IMAGE_TITLE)
    return title.get_text()


def subtitle(figure: Figure) -> str:
    (line,) = [t.get_text() for t in figure.texts if t.get_text().startswith(("colour scale:", "magnitude"))]
    return line


def layer_pages(figures: list[Figure], n_layers: int) -> list[Figure]:
    """The layer pages: the last ``n_layers`` pages."""
    pages = figures[len(figures) - n_layers :]
    assert all(parts(page, canvas.LAYER_IMAGE) and "shape (" in image_title(page) for page in pages)
    return pages


def table_lines(figures: list[Figure]) -> list[str]:
    """The rows of the summary table, over all summary pages (lines starting with a layer index)."""
    return [t.strip() for figure in figures for t in texts(figure) if re.match(r" *\d+ ", t)]


def info_block(figure: Figure) -> str:
    """The facts beside the input image on the first summary page."""
    (block,) = [t for t in texts(figure) if t.startswith("sample ") and "\n" in t]
    return block


def assert_in_order(line: str, tokens: list[str]) -> None:
    position = 0
    for token in tokens:
        found = line.find(token, position)
        assert found >= 0, f"{token!r} not found after column {position} in {line!r}"
        position = found + len(token)


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


def test_pdf_has_summary_then_one_page_per_layer(tmp_path):
    shapes = [(1, 4, 4), (2, 3, 2, 2), (6, 1, 1), (4, 7), (1234,)]
    pattern = make_pattern(shapes)
    path = tmp_path / "sub" / "pattern.pdf"
    out = render_pattern(pattern, str(path))
    assert out == path and path.is_file()
    data = path.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    assert pdf_pages(data) == 1 + len(shapes)  # one summary page
    assert pdf_images(data) >= 1 + len(shapes)  # the input and each layer are raster images
    assert list(tmp_path.rglob(".*.tmp")) == []
    assert len(list(page_figures(pattern, summary=False))) == len(shapes)


def test_render_writes_the_pages_of_page_figures(tmp_path, captured):
    pattern = laplacian_spectrum(SHAPES, k=40)
    path = render_pattern(pattern, tmp_path / "p.pdf", sample=1, scale="globalnorm", symlog=True, model="M")
    assert pdf_pages(path.read_bytes()) == 1 + 1 + len(SHAPES)  # summary, frequencies, layers
    built = list(page_figures(pattern, sample=1, scale="globalnorm", symlog=True, model="M"))
    assert [texts(figure) for figure in captured] == [texts(figure) for figure in built]


@pytest.mark.parametrize(
    ("scale", "cmap"),
    list(zip(SCALES, ["viridis", "RdBu_r", "tab20c", matplotlib.colormaps["magma"]], strict=True)),
)
def test_every_scale_and_colormap(tmp_path, scale, cmap):
    path = render_pattern(
        make_pattern([(3, 5, 5)]), tmp_path / "p.pdf", scale=scale, cmap=cmap, summary=False
    )
    assert pdf_pages(path.read_bytes()) == 1


@pytest.mark.parametrize(
    ("pattern", "symlog"),
    [
        (make_pattern(SHAPES), False),
        (causal_spectrum(SHAPES), True),
        (laplacian_spectrum(SHAPES), False),
        (laplacian_spectrum(SHAPES, 9), True),
    ],
    ids=["activations", "standard-symlog", "laplacian", "partial-laplacian-symlog"],
)
def test_every_page_has_a_title_a_scale_and_layer_pages_a_colourbar(pattern, symlog):
    figures = list(page_figures(pattern, scale="layernorm", symlog=symlog))
    n_layers = len(SHAPES)
    expected = 1 + n_layers + (pattern.domain == "laplacian")
    assert len(figures) == expected
    scale_name = "symmetric log" if symlog else "linear"
    for figure in figures:
        assert figure.get_suptitle().startswith("sample 0") and pattern.domain in figure.get_suptitle()
        assert "layernorm" in subtitle(figure) and scale_name in subtitle(figure)
    assert "Summary" in texts(figures[0])
    if pattern.domain == "laplacian":
        assert image_title(figures[1]) == "Laplacian spectrum — |ŝ| against frequency"
        assert "|ŝ| (log scale)" in texts(figures[1])
    for figure, layer in zip(layer_pages(figures, n_layers), pattern.layout.layers, strict=True):
        shape = ", ".join(map(str, layer.shape))
        assert image_title(figure) == f"{layer.name} — {layer.kind} — shape ({shape})"
        (bar,) = parts(figure, canvas.COLOURBAR)
        np.testing.assert_array_equal(bar.get_array(), np.linspace(0, 1, 256)[None])  # the whole colormap
        assert bar.cmap is main_image(figure).cmap
        (ticks,) = parts(figure, canvas.COLOURBAR_TICK)
        assert len(ticks.strings) >= 3
        assert not figure.axes  # drawn without matplotlib Axes (see nsp_pipeline.render.canvas)


def test_pdf_images_are_the_hdf5_values_in_colour(tmp_path, monkeypatch):
    """Read a pattern file back with h5py and compare with the pixels handed to the PDF writer."""
    shapes = [(1, 6, 6), (5, 3, 4), (130,), (4, 7)]
    pattern = make_pattern(shapes, n_samples=3, sample_ids=[40, 41, 42])  # a shard of three samples
    stored = tmp_path / "pattern.h5"
    hdf5.write_pattern(stored, pattern, {"note": "test"})
    drawn = []  # (gid, pixels) of every image, in the order written
    original = RendererPdf.draw_image

    def open_group(self, name, gid=None):
        if name == "pixel-image":
            drawn.append([gid])

    def draw_image(self, gc, x, y, im, transform=None):
        drawn[-1].append(im.copy())
        original(self, gc, x, y, im, transform)

    monkeypatch.setattr(RendererPdf, "open_group", open_group)
    monkeypatch.setattr(RendererPdf, "draw_image", draw_image)
    stages.render_file(stored, tmp_path / "p.pdf", scale="layernorm", cmap="coolwarm", sample=41)
    layer_images = [pixels for gid, pixels in drawn if gid == canvas.LAYER_IMAGE][1:]  # after the input
    assert len(layer_images) == len(shapes)
    cmap = matplotlib.colormaps["coolwarm"].with_extremes(bad=render.BACKGROUND)
    with h5py.File(stored, "r") as f:
        for index, pixels in enumerate(layer_images):
            values = f[f"layers/{index:03d}"][1]  # sample id 41, as stored
            bound = np.abs(values).max()  # layernorm: -max|x| .. max|x|
            image = layer_image(values)
            colours = cmap(matplotlib.colors.Normalize(-bound, bound)(image), bytes=True)
            block = canvas.block_size(image.shape)
            expected = np.repeat(np.repeat(colours, block, axis=0), block, axis=1)
            np.testing.assert_array_equal(pixels[::-1], expected)  # backends take row 0 at the bottom


@pytest.mark.parametrize("scale", SCALES)
def test_pages_use_color_limits_of_scale(scale):
    pattern = make_pattern([(3, 5, 5), (10,), (4, 7)], n_samples=2)
    figures = layer_pages(list(page_figures(pattern, sample=1, scale=scale)), 3)
    expected = color_limits([pattern.layer(i)[1] for i in range(3)], scale)
    assert [main_image(figure).get_clim() for figure in figures] == expected


def test_pages_show_layer_image():
    shapes = [*SHAPES, (6, 1, 1)]
    pattern = make_pattern(
        shapes, n_samples=3, sample_ids=[7, 8, 9], labels=[1, -1, 4], predictions=[2, 3, 4]
    )
    figures = layer_pages(list(page_figures(pattern, sample=1, cmap="RdBu_r")), len(shapes))
    for i, figure in enumerate(figures):
        values = pattern.layer(i)[1]
        image = main_image(figure)  # one image per page, however many channels
        np.testing.assert_array_equal(image.get_array(), layer_image(values))
        assert image.cmap.name.startswith("RdBu_r")
        suptitle = figure.get_suptitle()
        assert "sample 1" in suptitle and "id 8" in suptitle and "prediction 3" in suptitle
        assert "label" not in suptitle  # label -1 means unknown
        assert "activations" in suptitle


def test_images_hold_whole_pixels_per_value():
    pattern = make_pattern([(1, 8, 8), (3, 5, 5), (10,), (4, 7), (5000,), (600, 3)])
    figures = list(page_figures(pattern))
    for figure in [figures[0], *layer_pages(figures, 6)]:
        image = main_image(figure)
        values = image.get_array()
        block = canvas.block_size(values.shape)
        assert image.pixels.shape[:2] == (values.shape[0] * block, values.shape[1] * block)
        assert max(image.pixels.shape[:2]) >= canvas.MIN_IMAGE_PIXELS or block == 1
        colours = image.cmap(image.norm(values), bytes=True)
        np.testing.assert_array_equal(image.pixels[::block, ::block], colours)  # one colour per block
        np.testing.assert_array_equal(image.pixels[block - 1 :: block, block - 1 :: block], colours)


def test_explicit_title_and_no_title():
    pattern = make_pattern([(3, 5, 5)])
    assert {f.get_suptitle() for f in page_figures(pattern, title="my title")} == {"my title"}
    figures = list(page_figures(pattern, title=""))
    assert {f.get_suptitle() for f in figures} == {""}
    assert "Summary" in texts(figures[0]) and image_title(figures[1])  # page headings remain


@pytest.mark.parametrize("channels", [1, 3, 64, 70, 512])
def test_tile_labels(channels):
    height, width = 2, 3
    (figure,) = page_figures(make_pattern([(channels, height, width)]), summary=False)
    image = main_image(figure)
    rows, columns = image.get_array().shape
    cols = (columns + 1) // (width + 1)
    (tile_labels,) = parts(figure, render.TILE_LABEL)
    labels = [int(text) for text in tile_labels.strings]
    if channels <= 64:
        assert labels == list(range(channels))
    else:
        assert labels == list(range(0, channels, cols))  # first tile of every row
    left, bottom, box_w, box_h = image.rect
    for (x, y), channel in zip(tile_labels.positions, labels, strict=True):
        # figure fractions -> image columns and rows
        column, row = (x - left) / box_w * columns, (bottom + box_h - y) / box_h * rows
        top, first = (channel // cols) * (height + 1), (channel % cols) * (width + 1)
        assert first <= column < first + width and top <= row < top + height
    (backgrounds,) = [c for c in figure.artists if isinstance(c, matplotlib.collections.PolyCollection)]
    assert len(backgrounds.get_paths()) == len(labels)  # one pale box behind each label
    assert tile_labels.get_zorder() > backgrounds.get_zorder() > main_image(figure).get_zorder()


# --- the summary page ------------------------------------------------------------------------------------


def test_summary_facts():
    pattern = make_pattern(
        SHAPES, n_samples=3, sample_ids=[7, 8, 9], labels=[1, -1, 4], predictions=[2, 3, 4]
    )
    info = info_block(
        next(page_figures(pattern, sample=2, scale="globalscale", cmap="magma", model="TinyNet"))
    )
    for key, value in [
        ("sample", "2 (id 9)"),
        ("true label", "4"),
        ("prediction", "4 (correct)"),
        ("model", "TinyNet"),
        ("transform", "none (activations)"),
        ("layers", f"5 ({pattern.layout.n_nodes:,} nodes)"),
        ("colour scale", "globalscale"),
        ("colour norm", "linear"),
        ("colormap", "magma"),
    ]:
        assert re.search(rf"^{key} +{re.escape(value)}$", info, re.MULTILINE), key
    info = info_block(next(page_figures(pattern, sample=1)))
    assert re.search(r"^true label +unknown$", info, re.MULTILINE)
    assert re.search(r"^model +not given$", info, re.MULTILINE)


def test_summary_table_numbers_equal_numpy():
    pattern = causal_spectrum(SHAPES, n_samples=2)
    rows = layer_summaries(pattern, 1)
    for i, row in enumerate(rows):
        values = pattern.layer(i)[1]
        assert (row.index, row.name, row.kind, row.shape) == (
            i,
            f"layer{i}",
            pattern.layout.layers[i].kind,
            SHAPES[i],
        )
        assert row.minimum == values.min() and row.maximum == values.max()
        assert row.energy == pytest.approx(np.sum(values**2), rel=1e-12)
        assert row.computed == values.size
        assert row.significant_digits == pattern.diagnostics["significant_digits"][1, i]
        assert row.below_noise == pattern.diagnostics["below_noise"][1, i]
    lines = table_lines(list(page_figures(pattern, sample=1, model="m")))
    assert len(lines) == len(SHAPES)
    for i, line in enumerate(lines):
        values = pattern.layer(i)[1]
        digits = pattern.diagnostics["significant_digits"][1, i]
        below = 100 * pattern.diagnostics["below_noise"][1, i]
        tokens = [
            f"{i} ",
            f"layer{i}",
            f"{values.min():.4g}",
            f"{values.max():.4g}",
            f"{np.sum(values**2):.4g}",
        ]
        assert_in_order(line, [*tokens, f"{digits:.3g}", f"{below:.3g} %"])


def test_summary_of_a_partial_laplacian_spectrum():
    k = 40
    pattern = laplacian_spectrum(SHAPES, k=k)
    rows = layer_summaries(pattern, 0)
    offsets = pattern.layout.offsets
    for i, row in enumerate(rows):
        values = pattern.layer(i)[0].ravel()
        finite = values[np.isfinite(values)]
        assert row.computed == finite.size == max(0, min(k, offsets[i + 1]) - offsets[i])
        if finite.size:
            assert (row.minimum, row.maximum) == (finite.min(), finite.max())
            assert row.energy == pytest.approx(np.sum(finite**2), rel=1e-12)
            eigenvalues = pattern.eigenvalues[offsets[i] : min(k, offsets[i + 1])]
            assert row.frequencies == (eigenvalues.min(), eigenvalues.max())
        else:
            assert math.isnan(row.minimum) and math.isnan(row.energy) and row.frequencies is None
    spectrum = pattern.values[0, :k]
    residual, share = residual_share(pattern, 0)
    assert residual == 1.0 and share == pytest.approx(1.0 / (np.sum(spectrum**2) + 1.0))
    figures = list(page_figures(pattern))
    info = info_block(figures[0])
    assert f"{k} of {pattern.layout.n_nodes} (λ 0 to" in info  # negative roundoff shows as 0
    assert f"({100 * share:.3g} % of ‖s‖²)" in info
    lines = table_lines(figures[:1])
    assert "0–" in lines[0] and f"{rows[0].computed}/16" in lines[0]
    assert_in_order(lines[-1], [f"{len(SHAPES) - 1} ", "—", "—", "—", "—", "0/28"])  # nothing computed
    assert "coefficients not computed (k = 40)" in subtitle(figures[-1])
    assert "coefficients 0–15, λ 0–" in subtitle(figures[2])


def test_long_tables_continue_on_more_pages():
    shapes = [(3, 2, 2)] * 70  # ResNet-18 at granularity "ops" has about 70 layers
    pattern = make_pattern(shapes, n_samples=1)
    *summaries, first_layer = itertools.islice(page_figures(pattern), 4)  # pages are built one by one
    assert "shape (3, 2, 2)" in image_title(first_layer)
    assert [line.split()[0] for line in table_lines(summaries)] == [str(i) for i in range(70)]
    for figure in summaries[1:]:
        assert any(text.startswith("Summary (continued): layers") for text in texts(figure))
        assert any(text.strip().startswith("#  layer") for text in texts(figure))  # the header again
    for figure in summaries:  # legible: no smaller than 7 pt, every row inside the page
        rows = [t for t in figure.texts if re.match(r" *\d+ ", t.get_text())]
        assert min(t.get_fontsize() for t in rows) >= 7
        assert min(t.get_position()[1] for t in rows) > 0.03


def test_long_names_are_shortened_in_the_table():
    layers = (
        Layer("input", (2,), "input"),
        Layer("features_" * 8 + "end", (3,), "VeryLongOperationKindName" * 2),
    )
    pattern = Pattern(Layout(layers), np.arange(5.0))
    (_, line) = table_lines(list(page_figures(pattern))[:1])
    name = next(part for part in line.split() if part.startswith("features"))
    assert name == "features_featu…_features_end" and len(name) == MAX_NAME


def test_summary_input_image():
    activations = make_pattern([(1, 8, 8), (4,)], n_samples=2)
    summary = next(page_figures(activations, sample=1))
    np.testing.assert_array_equal(main_image(summary).get_array(), activations.layer(0)[1][0])
    assert main_image(summary).cmap.name.startswith("gray") and len(parts(summary, canvas.COLOURBAR)) == 1
    spectrum = activations.with_values(activations.values * 2, "standard")
    summary = next(page_figures(spectrum))
    assert not parts(summary, canvas.LAYER_IMAGE) and any("not given" in text for text in texts(summary))
    given = np.arange(64.0).reshape(1, 8, 8)
    summary = next(page_figures(spectrum, input_image=given))
    np.testing.assert_array_equal(main_image(summary).get_array(), given[0])
    rgb = np.random.default_rng(0).normal(size=(3, 4, 5))
    shown = main_image(next(page_figures(spectrum, input_image=rgb))).get_array()
    expected = (rgb - rgb.min()) / (rgb.max() - rgb.min())
    np.testing.assert_allclose(shown, expected.transpose(1, 2, 0))
    with pytest.raises(ValueError, match=r"input_image .* got shape \(1, 3, 4, 5\)"):
        page_figures(spectrum, input_image=rgb[None])


# --- the Laplacian frequency page ------------------------------------------------------------------------


@pytest.mark.parametrize("k", [None, 40])
def test_frequency_page_plots_magnitude_against_eigenvalue(k):
    pattern = laplacian_spectrum(SHAPES, k=k, n_samples=2)
    figure = list(page_figures(pattern, sample=1))[1]
    (line,) = parts(figure, render.FREQUENCY_POINTS)
    n = len(pattern.eigenvalues)
    coefficients = pattern.values[1, :n]
    drawn = coefficients != 0  # finite: the first n are computed
    np.testing.assert_array_equal(line.get_xdata(), pattern.eigenvalues[drawn])
    np.testing.assert_array_equal(line.get_ydata(), np.abs(coefficients[drawn]))
    assert frequency_points(pattern, 1)[2] == 1  # the zero coefficient is counted, not drawn
    notes = texts(figure)
    assert any(f"{drawn.sum()} coefficients drawn of {n} computed" in text for text in notes)
    assert any("1 exactly zero are left out" in text for text in notes)
    if k is not None:
        assert any("not computed (NaN) are left out" in text and "% of ‖s‖²" in text for text in notes)
    left, bottom, width, height = (0.9 / 8, 1.3 / 8, 6.7 / 8, 5.7 / 8)  # the plot's box on the page
    placed = figure.transFigure.inverted().transform(line.get_transform().transform(line.get_xydata()))
    assert np.all((placed >= (left, bottom)) & (placed <= (left + width, bottom + height)))  # all in the box
    order = np.argsort(line.get_ydata())
    assert np.all(np.diff(placed[order, 1]) >= -1e-12)  # larger |ŝ| drawn higher


def test_frequency_points_need_eigenvalues():
    with pytest.raises(ValueError, match="no eigenvalues"):
        frequency_points(make_pattern(SHAPES), 0)


# --- symmetric-log colour scale --------------------------------------------------------------------------


def test_symlog_threshold_rule():
    values = np.concatenate([np.zeros(5), np.geomspace(1e-3, 1e3, 101), [np.nan, -np.inf]])
    magnitudes = np.geomspace(1e-3, 1e3, 101)
    assert symlog_threshold(values) == np.percentile(magnitudes, SYMLOG_PERCENTILE)
    wide = np.array([1e-12] * 50 + [1.0] * 50)  # most small values: the floor applies
    assert symlog_threshold(wide) == pytest.approx(10.0**-SYMLOG_DECADES)
    assert symlog_threshold(np.zeros(4)) == 1.0
    assert symlog_threshold(np.array([np.nan])) == 1.0


def test_color_norms():
    per_layer = [np.array([-1e4, 1.0, 2.0, 1e-2]), np.array([0.0, 3.0, 5e-3]), np.zeros(3)]
    linear = color_norms(per_layer, "layernorm")
    assert [(n.vmin, n.vmax) for n in linear] == color_limits(per_layer, "layernorm")
    assert not any(isinstance(n, SymLogNorm) for n in linear)
    for scale in SCALES:
        norms = color_norms(per_layer, scale, symlog=True)
        assert all(isinstance(n, SymLogNorm) for n in norms)
        assert [(n.vmin, n.vmax) for n in norms] == color_limits(per_layer, scale)
        thresholds = [n.linthresh for n in norms]
        if scale.startswith("layer"):
            assert thresholds == [symlog_threshold(v) for v in per_layer]
        else:
            assert thresholds == [symlog_threshold(np.concatenate(per_layer))] * 3


def test_symlog_pages_say_so():
    pattern = causal_spectrum(SHAPES)
    figures = list(page_figures(pattern, scale="layernorm", symlog=True))
    assert "symmetric log (linear within ±t, t per layer: see the table)" in subtitle(figures[0])
    info = info_block(figures[0])
    assert re.search(r"^colour norm +symmetric log$", info, re.MULTILINE)
    lines = table_lines(figures[:1])
    for i, (figure, line) in enumerate(zip(layer_pages(figures, len(SHAPES)), lines, strict=True)):
        norm = main_image(figure).norm
        t = symlog_threshold(pattern.layer(i)[0])
        assert isinstance(norm, SymLogNorm) and norm.linthresh == t
        assert f"symmetric log (linear within ±{t:.2g})" in subtitle(figure)
        assert line.endswith(f"{t:.2g}")  # the table's last column
    shared = list(page_figures(pattern, scale="globalnorm", symlog=True))
    t = symlog_threshold(pattern.values[0])
    assert all(f"globalnorm, symmetric log (linear within ±{t:.2g})" in subtitle(f) for f in shared)


def test_narrow_symlog_colourbar_keeps_tick_labels():
    pattern = make_pattern([(2,), (8,)], n_samples=1)
    narrow = pattern.with_values(
        np.concatenate([[1.0, -1e3], 18840.0 + np.linspace(0, 1, 8)])[None], "standard"
    )
    for figure in layer_pages(list(page_figures(narrow, symlog=True)), 2):
        (ticks,) = parts(figure, canvas.COLOURBAR_TICK)
        assert len(ticks.strings) >= 3


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
    assert pdf_pages(path.read_bytes()) == 1 + 1 + len(shapes)


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
    with pytest.raises(ValueError, match="input_image"):
        render_pattern(pattern, path, input_image=np.zeros((1, 1, 2, 2)))
    assert list(tmp_path.iterdir()) == []
    render_pattern(pattern, path, sample=-1, summary=False)  # negative indices count from the end
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
        render_pattern(make_pattern(SHAPES), path, summary=False)
    assert len(pages) == 2  # it did crash in the middle
    assert list(tmp_path.iterdir()) == []


def test_rendering_never_imports_pyplot(tmp_path, monkeypatch):
    assert not any(getattr(value, "__name__", "") == "matplotlib.pyplot" for value in vars(render).values())
    monkeypatch.delitem(sys.modules, "matplotlib.pyplot", raising=False)
    render_pattern(laplacian_spectrum([(2, 3, 3), (5,)], k=10), tmp_path / "p.pdf", symlog=True)
    assert "matplotlib.pyplot" not in sys.modules


def test_pattern_without_layers_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no layers"):
        render_pattern(make_pattern([]), tmp_path / "p.pdf")
    assert list(tmp_path.iterdir()) == []


# --- speed and size --------------------------------------------------------------------------------------


def test_render_speed_and_size(tmp_path):
    pattern = make_pattern([(64, 12, 12), (512, 4, 4)], n_samples=1)
    start = time.perf_counter()
    path = render_pattern(pattern, tmp_path / "p.pdf")
    elapsed = time.perf_counter() - start
    size = path.stat().st_size
    print(f"\nrender (64, 12, 12) + (512, 4, 4): {elapsed:.3f} s, {size / 1024:.0f} KiB")
    assert pdf_pages(path.read_bytes()) == 1 + 2
    assert size < 150_000  # raster images, not 17,408 vector rectangles


def test_digits_cnn_report_time_and_size(tmp_path):
    """A report of the default model's layout (DigitsCNN): its largest kind, a Laplacian spectrum."""
    pattern = laplacian_spectrum(DIGITS_CNN, n_samples=1)
    start = time.perf_counter()
    path = render_pattern(pattern, tmp_path / "p.pdf", symlog=True, model="DigitsCNN")
    elapsed = time.perf_counter() - start
    size = path.stat().st_size
    print(f"\nDigitsCNN Laplacian report: {elapsed:.3f} s, {size / 1024:.0f} KiB")
    assert pdf_pages(path.read_bytes()) == 1 + 1 + len(DIGITS_CNN)
    assert size < 200_000


@pytest.mark.parametrize("min_digits", [3.0, 8.0])
def test_layers_below_the_wanted_digits_are_drawn_as_noise(min_digits):
    """A layer with fewer correct digits than wanted: grey, hatched, its digits in the title."""
    pattern = causal_spectrum([(2, 3, 3), (4,), (3, 2)])
    digits = np.array([[15.6, 1.25, 7.5], [15.6, 15.6, 15.6]])
    pattern = pattern.with_values(pattern.values, "standard", diagnostics={"significant_digits": digits})
    pages = list(render.page_figures(pattern, sample=0, summary=False, min_digits=min_digits))
    for index, page in enumerate(pages):
        noise = digits[0, index] < min_digits
        assert bool(parts(page, render.LOW_PRECISION)) == noise
        assert (main_image(page).cmap.name == render.NOISE_CMAP) == noise
        assert (f"{digits[0, index]:.1f} correct digits" in image_title(page)) == noise
    other_sample = list(render.page_figures(pattern, sample=1, summary=False, min_digits=min_digits))
    assert not any(parts(page, render.LOW_PRECISION) for page in other_sample)
