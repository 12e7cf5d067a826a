"""Dataset statistics against plain loops; their HDF5 file, plots and rendered averages; atomicity."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
from matplotlib.backends.backend_pdf import PdfPages

import nsp_pipeline.render.dataset_plots as dataset_plots
from nsp_pipeline.analysis.dataset_statistics import (
    TABLE_COLUMNS,
    TOP_K,
    class_statistics,
    summary_table,
    top_k_columns,
    top_k_entry,
    top_k_label,
    top_k_nodes,
)
from nsp_pipeline.core.layout import Layer, Layout
from nsp_pipeline.core.pattern import Pattern
from nsp_pipeline.io import hdf5
from nsp_pipeline.io.hdf5 import read_averages, read_dataset_summary
from nsp_pipeline.io.provenance import provenance
from nsp_pipeline.pipeline.summaries import summarize_dataset
from nsp_pipeline.render.dataset_plots import render_averages, render_summary_averages

#: Layers of the synthetic patterns: a mosaic, a 0-d layer, a strip, and 120 nodes in rows.
SHAPES = [(1, 3, 3), (2, 5, 5), (), (7,), (4, 30)]


def make_layout(shapes=SHAPES) -> Layout:
    return Layout(
        tuple(
            Layer(f"layer{i}", shape, "input" if i == 0 else f"Kind{i}", parents=() if i == 0 else (i - 1,))
            for i, shape in enumerate(shapes)
        )
    )


def make_pattern(domain="activations", n_samples=12, seed=0) -> Pattern:
    """Random values of every scale, labels 0, 2 and 5 and some unknown (-1), sample ids."""
    rng = np.random.default_rng(seed)
    layout = make_layout()
    values = rng.normal(size=(n_samples, layout.n_nodes)) * rng.uniform(0.1, 10, size=layout.n_nodes)
    labels = np.resize([0, 2, 5, -1, 2], n_samples)
    return Pattern(layout, values, domain, sample_ids=np.arange(n_samples) + 100, labels=labels)


def partial_spectrum(pattern: Pattern, computed: int) -> Pattern:
    """A Laplacian-like spectrum: the pattern's values, NaN beyond the first ``computed`` nodes."""
    values = pattern.values.copy()
    values[:, computed:] = np.nan
    eigenvalues = np.linspace(0.0, 5.0, pattern.layout.n_nodes)
    diagnostics = {"residual_energy": np.ones(pattern.n_samples)}
    return pattern.with_values(values, "laplacian", eigenvalues, diagnostics)


def pdf_pages(path) -> int:
    data = path.read_bytes()
    return data.count(b"/Type /Page") - data.count(b"/Type /Pages")


def loop_groups(pattern: Pattern) -> dict:
    """Samples of each group: ``"all"``, then each known label in ascending order."""
    groups = {"all": list(range(pattern.n_samples))}
    for label in sorted(set(pattern.labels.tolist()) - {-1}):
        groups[label] = [s for s in range(pattern.n_samples) if pattern.labels[s] == label]
    return groups


def loop_layer(pattern: Pattern, sample: int, layer: int) -> list[float]:
    """The computed (non-NaN) values of one layer of one sample."""
    return [v for v in pattern.values[sample, pattern.layout.slice(layer)] if not np.isnan(v)]


def loop_energy(pattern: Pattern, samples: list[int], layer: int) -> float:
    return sum(sum(v * v for v in loop_layer(pattern, s, layer)) for s in samples) / len(samples)


def loop_top_k(pattern: Pattern, samples: list[int], layer: int, k: int) -> float:
    """Mean share of the energy in the ``k`` largest squares, over samples with energy."""
    shares = []
    for sample in samples:
        squares = sorted((v * v for v in loop_layer(pattern, sample, layer)), reverse=True)
        if sum(squares) > 0:
            shares.append(sum(squares[:k]) / sum(squares))
    return sum(shares) / len(shares) if shares else np.nan


def loop_average(pattern: Pattern, samples: list[int]) -> np.ndarray:
    average = np.full(pattern.layout.n_nodes, np.nan)
    for node in range(pattern.layout.n_nodes):
        known = [pattern.values[s, node] for s in samples if not np.isnan(pattern.values[s, node])]
        if known:
            average[node] = sum(known) / len(known)
    return average


def check_against_loops(pattern: Pattern) -> None:
    stats = class_statistics(pattern)
    groups = loop_groups(pattern)
    classes = [label for label in groups if label != "all"]
    np.testing.assert_array_equal(stats.classes, classes)
    np.testing.assert_array_equal(stats.class_samples, [len(groups[label]) for label in classes])
    assert stats.n_samples == pattern.n_samples
    sizes = [layer.size for layer in pattern.layout.layers]
    for row, label in enumerate(["all", *classes]):
        samples = groups[label]
        energy = stats.mean_energy if label == "all" else stats.class_mean_energy[row - 1]
        fraction = stats.top_k_fraction if label == "all" else stats.class_top_k_fraction[row - 1]
        average = stats.average.values[0] if label == "all" else stats.class_average.values[row - 1]
        for layer in range(len(pattern.layout)):
            assert energy[layer] == pytest.approx(loop_energy(pattern, samples, layer), rel=1e-12)
            for entry, k in enumerate(top_k_nodes(TOP_K, sizes)[:, layer]):
                expected = loop_top_k(pattern, samples, layer, int(k))
                assert fraction[entry, layer] == pytest.approx(expected, rel=1e-12, nan_ok=True)
        np.testing.assert_allclose(average, loop_average(pattern, samples), rtol=1e-12, atol=1e-14)


# --- statistics --------------------------------------------------------------------------------------------


def test_energies_top_k_and_averages_equal_loops():
    check_against_loops(make_pattern())


def test_partial_spectrum_skips_nan_coefficients():
    """NaN beyond k: energies and fractions of the computed part, NaN where nothing is computed."""
    pattern = make_pattern()
    spectrum = partial_spectrum(pattern, computed=20)  # layer 0 (9 nodes) and 11 of layer 1's 50
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_against_loops(spectrum)
        stats = class_statistics(spectrum)
    np.testing.assert_array_equal(stats.computed_nodes, [9, 11, 0, 0, 0])
    np.testing.assert_array_equal(stats.mean_energy[2:], 0.0)
    assert np.isnan(stats.top_k_fraction[:, 2:]).all()
    assert np.isnan(stats.average.values[0, 20:]).all() and not np.isnan(stats.average.values[0, :20]).any()
    np.testing.assert_array_equal(stats.average.eigenvalues, spectrum.eigenvalues)
    assert stats.average.diagnostics == {} and stats.class_average.diagnostics == {}


def test_nan_in_some_samples_only():
    """A coefficient missing in one sample is averaged over the samples that have it."""
    pattern = make_pattern()
    values = pattern.values.copy()
    values[0, 3] = values[4, 40] = np.nan
    check_against_loops(pattern.with_values(values, "laplacian"))


def test_top_k_of_one_big_coefficient():
    """One coefficient of -10 among 199 of 1 in a layer, 5 equal ones in another."""
    layout = make_layout([(200,), (5,)])
    values = np.ones((2, 205))
    values[:, 7] = -10.0
    stats = class_statistics(Pattern(layout, values), top_k=(1, 10, 100, 0.01, 0.1))
    total = 100.0 + 199.0
    big_layer = [100 / total, 109 / total, 199 / total, 101 / total, 119 / total]  # 1 % → 2, 10 % → 20
    np.testing.assert_allclose(stats.top_k_fraction[:, 0], big_layer, rtol=1e-14)
    np.testing.assert_allclose(stats.top_k_fraction[:, 1], [0.2, 1.0, 1.0, 0.2, 0.2], rtol=1e-14)
    np.testing.assert_array_equal(stats.top_k_nodes, [[1, 1], [10, 5], [100, 5], [2, 1], [20, 1]])


def test_layer_without_energy_has_no_fraction():
    layout = make_layout([(3,), (4,)])
    values = np.array([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0]])
    stats = class_statistics(Pattern(layout, values), top_k=(1,))
    assert stats.top_k_fraction[0, 0] == 1.0  # both samples hold all their energy in one coefficient
    assert stats.top_k_fraction[0, 1] == 1.0  # the first sample (no energy) is left out
    np.testing.assert_array_equal(stats.mean_energy, [2.5, 4.5])


def test_top_k_nodes_rules_and_errors():
    np.testing.assert_array_equal(
        top_k_nodes((1, 100, 0.01, 0.5, 1.0, np.int64(3)), [0, 1, 150, 1000]),
        [[0, 1, 1, 1], [0, 1, 100, 100], [0, 1, 2, 10], [0, 1, 75, 500], [0, 1, 150, 1000], [0, 1, 3, 3]],
    )
    assert top_k_columns(TOP_K) == ["top_1", "top_10", "top_100", "top_1pct", "top_10pct"]
    for bad in (0, -1, 0.0, 1.5, True, "10"):
        with pytest.raises(ValueError, match="top-k entry"):
            top_k_nodes((bad,), [10])


def test_unlabelled_samples_count_only_in_all():
    pattern = make_pattern()
    stats = class_statistics(Pattern(pattern.layout, pattern.values))
    assert stats.classes.size == 0 and stats.class_mean_energy.shape == (0, len(pattern.layout))
    assert stats.class_top_k_fraction.shape == (0, len(TOP_K), len(pattern.layout))
    assert stats.class_average.n_samples == 0
    np.testing.assert_allclose(stats.mean_energy, class_statistics(pattern).mean_energy, rtol=1e-12)


def test_average_patterns_are_labelled_patterns():
    stats = class_statistics(make_pattern("standard"))
    assert stats.average.domain == stats.class_average.domain == "standard"
    np.testing.assert_array_equal(stats.average.labels, [-1])
    np.testing.assert_array_equal(stats.class_average.labels, [0, 2, 5])
    assert stats.class_average.sample_ids is None and stats.class_average.predictions is None


# --- files -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def patterns() -> dict[str, Pattern]:
    activations = make_pattern()
    return {
        "activations": activations,
        "standard": activations.with_values(activations.values * 3.0 + 1.0, "standard"),
        "laplacian": partial_spectrum(activations, computed=20),
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory, patterns):
    folder = tmp_path_factory.mktemp("written")
    summary_file, plots = folder / "out" / "summary.h5", folder / "out" / "plots.pdf"
    stats = summarize_dataset(
        patterns, summary_file, plots, title="net × data", attributes={"model": "net", "dataset": "data"}
    )
    return stats, summary_file, plots


def test_hdf5_read_back_with_h5py_equals_statistics(written, patterns):
    stats, summary_file, _ = written
    with h5py.File(summary_file, "r") as file:
        assert file.attrs["schema"] == "nsp-pipeline/dataset_summary" and file.attrs["schema_version"] == 2
        assert file.attrs["model"] == "net" and file.attrs["dataset"] == "data"
        assert file.attrs["nsp_pipeline_version"] and len(file.attrs["content_sha256"]) == 64
        assert list(file.attrs["patterns"]) == list(patterns)
        assert list(file.attrs["top_k"]) == ["1", "10", "100", "1%", "10%"]
        assert hdf5.read_layout(file["layout"]) == patterns["activations"].layout
        for name, pattern in patterns.items():
            group, expected = file[name], stats[name]
            assert group.attrs["domain"] == pattern.domain and group.attrs["n_samples"] == pattern.n_samples
            table = group["table"]
            assert set(table) == {*TABLE_COLUMNS, *top_k_columns()}
            n_layers = len(pattern.layout)
            assert all(len(table[column]) == 4 * n_layers for column in table)  # all, classes 0, 2, 5
            np.testing.assert_array_equal(table["class"][()], np.repeat([-1, 0, 2, 5], n_layers))
            np.testing.assert_array_equal(table["samples"][()], np.repeat([12, 3, 5, 2], n_layers))
            np.testing.assert_array_equal(table["layer"][()], np.tile(np.arange(n_layers), 4))
            assert list(table["name"].asstr()[:n_layers]) == pattern.layout.names
            assert list(table["kind"].asstr()[:n_layers]) == [layer.kind for layer in pattern.layout.layers]
            np.testing.assert_array_equal(table["nodes"][:n_layers], [9, 50, 1, 7, 120])
            np.testing.assert_array_equal(table["computed_nodes"][:n_layers], expected.computed_nodes)
            energy = table["mean_energy"][()].reshape(4, n_layers)
            np.testing.assert_array_equal(energy[0], expected.mean_energy)
            np.testing.assert_array_equal(energy[1:], expected.class_mean_energy)
            for entry, column in enumerate(top_k_columns()):
                fraction = table[column][()].reshape(4, n_layers)
                np.testing.assert_array_equal(fraction[0], expected.top_k_fraction[entry])
                np.testing.assert_array_equal(fraction[1:], expected.class_top_k_fraction[:, entry])
            np.testing.assert_array_equal(group["top_k_nodes"][()], expected.top_k_nodes)
            np.testing.assert_array_equal(group["average"][()], expected.average.values[0])
            np.testing.assert_array_equal(group["classes"][()], [0, 2, 5])
            np.testing.assert_array_equal(group["class_average"][()], expected.class_average.values)
            assert ("eigenvalues" in group) == (name == "laplacian")
        np.testing.assert_array_equal(file["laplacian/eigenvalues"][()], patterns["laplacian"].eigenvalues)


def test_read_averages_round_trip(written):
    stats, summary_file, _ = written
    for name, expected in stats.items():
        average, class_average = read_averages(summary_file, name)
        for read, computed in ((average, expected.average), (class_average, expected.class_average)):
            assert read.layout == computed.layout and read.domain == computed.domain
            np.testing.assert_array_equal(read.values, computed.values)
            np.testing.assert_array_equal(read.labels, computed.labels)
            if computed.eigenvalues is None:
                assert read.eigenvalues is None
            else:
                np.testing.assert_array_equal(read.eigenvalues, computed.eigenvalues)


def test_read_dataset_summary_round_trip(written):
    """Every statistic of every pattern reads back as computed."""
    stats, summary_file, _ = written
    read = read_dataset_summary(summary_file)
    assert list(read) == list(stats)
    for name, expected in stats.items():
        got = read[name]
        assert got.domain == expected.domain and got.layout == expected.layout
        assert got.n_samples == expected.n_samples and got.top_k == expected.top_k == TOP_K
        for field in (
            "classes",
            "class_samples",
            "computed_nodes",
            "mean_energy",
            "class_mean_energy",
            "top_k_nodes",
            "top_k_fraction",
            "class_top_k_fraction",
        ):
            np.testing.assert_array_equal(getattr(got, field), getattr(expected, field), strict=True)
    assert hdf5.read_provenance(summary_file) == provenance(model="net", dataset="data")


def test_top_k_labels_read_back():
    assert [top_k_entry(top_k_label(entry)) for entry in (*TOP_K, 0.5, 0.125, 1.0)] == [
        *TOP_K,
        0.5,
        0.125,
        1.0,
    ]
    with pytest.raises(ValueError, match="top-k label 'ten'"):
        top_k_entry("ten")


def test_summary_table_rows(written):
    stats = written[0]["standard"]
    table = summary_table(stats)
    assert list(table) == [*TABLE_COLUMNS, *top_k_columns()]
    row = 2 * len(stats.layout) + 3  # class 2, layer 3
    assert (table["class"][row], table["layer"][row], table["samples"][row]) == (2, 3, 5)
    assert table["mean_energy"][row] == stats.class_mean_energy[1, 3]


def test_pdf_has_a_page_per_plot(written, patterns):
    assert pdf_pages(written[2]) == 1 + 2 * len(patterns)


def test_plots_have_titles_labels_and_legends(tmp_path, patterns, monkeypatch):
    figures = []
    original = PdfPages.savefig

    def savefig(self, figure=None, **kwargs):
        figures.append(figure)
        original(self, figure, **kwargs)

    monkeypatch.setattr(PdfPages, "savefig", savefig)
    statistics = {name: class_statistics(pattern) for name, pattern in patterns.items()}
    dataset_plots.plot_statistics(statistics, tmp_path / "p.pdf", "t")
    assert len(figures) == 7
    for figure in figures:
        ax = figure.axes[0]
        assert ax.get_title().startswith("t: ") and ax.get_xlabel() and ax.get_ylabel()
        assert ax.get_legend() is not None
    energy_axes = figures[0].axes[0]
    assert energy_axes.get_yscale() == "log"
    assert [text.get_text() for text in energy_axes.get_legend().get_texts()] == [
        "activations",
        "standard",
        "laplacian, partial:\n20 of 187 coefficients",
    ]
    class_axes = figures[1].axes[0]
    assert class_axes.get_yscale() == "log" and len(class_axes.get_lines()) == 4  # 3 classes and all
    assert len(figures[4].axes[0].get_lines()) == len(TOP_K)
    assert "partial spectrum: 20 of 187 coefficients computed" in figures[6].axes[0].get_title()


def test_many_classes_get_a_colour_bar(tmp_path):
    layout = make_layout([(4,), (6,)])
    rng = np.random.default_rng(2)
    pattern = Pattern(layout, rng.normal(size=(60, 10)), labels=np.arange(60) % 30)
    summarize_dataset({"activations": pattern}, tmp_path / "s.h5", tmp_path / "p.pdf")
    assert pdf_pages(tmp_path / "p.pdf") == 3


def test_files_as_input_equal_patterns(tmp_path, patterns):
    patterns = {name: patterns[name] for name in ("activations", "laplacian")}
    files = {}
    for name, pattern in patterns.items():
        files[name] = [tmp_path / f"{sample}_{name}.h5" for sample in range(pattern.n_samples)]
        for sample, path in enumerate(files[name]):
            hdf5.write_pattern(path, pattern.sample(sample), {"note": "test"})
    from_files = summarize_dataset(files, tmp_path / "a.h5", tmp_path / "a.pdf")
    direct = {name: class_statistics(pattern) for name, pattern in patterns.items()}
    for name in patterns:
        np.testing.assert_array_equal(from_files[name].class_mean_energy, direct[name].class_mean_energy)
        np.testing.assert_array_equal(from_files[name].top_k_fraction, direct[name].top_k_fraction)


def test_layouts_must_agree(tmp_path, patterns):
    other = Pattern(make_layout([(3,)]), np.ones((2, 3)), "standard")
    with pytest.raises(ValueError, match="other layers"):
        summarize_dataset({**patterns, "standard": other}, tmp_path / "s.h5", tmp_path / "p.pdf")
    with pytest.raises(ValueError, match="at least one"):
        summarize_dataset({}, tmp_path / "s.h5", tmp_path / "p.pdf")
    assert list(tmp_path.iterdir()) == []


def test_failure_leaves_no_file(tmp_path, patterns, monkeypatch):
    """A failing plot removes the HDF5 file and the PDF being written: the folder stays empty."""

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(PdfPages, "savefig", fail)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk full"):
        summarize_dataset(patterns, out / "summary.h5", out / "plots.pdf")
    assert list(out.iterdir()) == []


def test_failed_rendering_of_averages_leaves_no_summary(tmp_path, patterns, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("cannot render")

    monkeypatch.setattr(dataset_plots, "render_pattern", fail)
    one = {"standard": patterns["standard"]}
    with pytest.raises(RuntimeError, match="cannot render"):
        summarize_dataset(one, tmp_path / "s.h5", tmp_path / "p.pdf", averages_dir=tmp_path / "avg")
    assert [path.name for path in tmp_path.iterdir()] == []


def recorded_renders(monkeypatch) -> list:
    """Calls of render_pattern by the averages' renderers, which then write nothing."""
    calls = []

    def record(pattern, path, **options):
        calls.append((pattern, path, options))
        return path

    monkeypatch.setattr(dataset_plots, "render_pattern", record)
    return calls


def test_render_averages_one_pdf_per_group(tmp_path, patterns, monkeypatch):
    calls = recorded_renders(monkeypatch)
    stats = {"standard": class_statistics(patterns["standard"])}
    written = render_averages(
        stats, tmp_path / "avg", title="net", scale="layernorm", cmap="RdBu_r", symlog=True
    )
    names = ["standard_all.pdf", "standard_class_0.pdf", "standard_class_2.pdf", "standard_class_5.pdf"]
    assert [path.name for path in written] == names
    assert [call[1].name for call in calls] == names
    assert calls[0][0] is stats["standard"].average and calls[0][2]["sample"] == 0
    for row, call in enumerate(calls[1:]):
        assert call[0] is stats["standard"].class_average and call[2]["sample"] == row
        assert call[2]["scale"] == "layernorm" and call[2]["cmap"] == "RdBu_r" and call[2]["symlog"] is True
    assert calls[2][2]["title"] == "net: standard, average of class 2 (5 samples)"


def test_summary_averages_are_rendered_as_the_statistics_are(tmp_path, written, monkeypatch):
    """From the file: the same averages, titles and colour settings (symlog too) as from the statistics."""
    stats, summary_file, _ = written
    calls = recorded_renders(monkeypatch)
    render_averages(stats, tmp_path / "direct", title="net", scale="globalnorm", symlog=True)
    direct, calls[:] = list(calls), []
    files = render_summary_averages(
        summary_file, tmp_path / "avg", title="net", scale="globalnorm", symlog=True
    )
    assert [path.name for path in files] == [path.name for _, path, _ in direct]
    assert all(path.parent == tmp_path / "avg" for path in files)
    for (read, _, options), (computed, _, expected) in zip(calls, direct, strict=True):
        assert options == expected and options["symlog"] is True
        np.testing.assert_array_equal(read.values, computed.values)
        np.testing.assert_array_equal(read.labels, computed.labels)


def test_averages_rendered_in_worker_processes_are_the_same_files(tmp_path):
    """PDFs carry no timestamp, so a parallel render and a serial one give the same bytes."""
    layout = make_layout([(2, 3, 3), (5,)])
    values = np.random.default_rng(4).normal(size=(6, 23))
    stats = {"activations": class_statistics(Pattern(layout, values, labels=[0, 1, 1, 2, 0, 2]))}
    serial = render_averages(stats, tmp_path / "serial", scale="layernorm", processes=1)
    parallel = render_averages(stats, tmp_path / "parallel", scale="layernorm", processes=2)
    assert [path.name for path in parallel] == [path.name for path in serial] and len(serial) == 4
    for one, other in zip(serial, parallel, strict=True):
        assert one.read_bytes() == other.read_bytes()


def test_rendered_averages_are_pdfs(tmp_path):
    """Real rendering of a partial spectrum (NaN coefficients) of one class: two PDFs."""
    layout = make_layout([(2, 3, 3), (5,)])
    values = np.random.default_rng(3).normal(size=(4, 23))
    values[:, 20:] = np.nan
    spectrum = Pattern(layout, values, "laplacian", labels=[1, 1, -1, 1], eigenvalues=np.arange(23.0))
    written = render_averages({"laplacian": class_statistics(spectrum)}, tmp_path / "avg")
    assert [path.name for path in written] == ["laplacian_all.pdf", "laplacian_class_1.pdf"]
    assert all(pdf_pages(path) >= len(layout) for path in written)  # render_pattern may add summary pages
    assert sorted(path.name for path in (tmp_path / "avg").iterdir()) == sorted(path.name for path in written)
