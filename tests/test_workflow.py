"""The Snakemake workflow end to end on a tiny config, against direct library calls."""

import csv
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from cli_helpers import run
from oracles import assert_close_to_scale, dense_zeta

import nsp_pipeline as nsp
from nsp_pipeline.data.loading import load_dataset
from nsp_pipeline.io import hdf5
from nsp_pipeline.io.hdf5 import read_averages
from nsp_pipeline.model.artifact import load_model

pytest.importorskip("snakemake")

pytestmark = [pytest.mark.slow, pytest.mark.workflow]

REPO = Path(__file__).resolve().parents[1]

CONFIG = {
    "models": {"net_a": {"architecture": "digits_cnn", "train": {"epochs": 1}, "train_data": "digits"}},
    "datasets": {
        "digits": {"source": "digits", "split": "test"},
        "digits16": {"source": "digits", "split": "test", "size": 16},
    },
    "analyses": [{"model": "net_a", "dataset": ["digits", "digits16"]}],
    "samples": {"indices": [3, 10, 11]},
    "batching": {"samples_per_job": 2},
    "transforms": ["standard", "laplacian"],
    "render": {"scale": "layernorm", "cmap": "viridis", "samples": {"indices": [3, 10]}},
    "interpret": {
        "targets": [{"layer": "fc", "unit": [3]}, {"layer": "conv2", "channel": 1, "reduction": "max"}],
        "smoothgrad": {"n": 4},
        "occlusion": {"window": 2, "stride": 2},
        "top_k": 2,
        "minimal": {"methods": ["parcels", "masked"], "parcels": {"segmentation_kwargs": {"n_segments": 6}}},
        "synthesis": {
            "enabled": True,
            "layers": ["conv2"],
            "steps": 8,
            "value_range": [0, 1],
            "candidates": "digits16",
        },
    },
    "regions": {
        "slices": [{"model": "net_a", "dataset": "digits", "samples": [3, 10, 11]}],
        "scale": 0.6,
        "value_range": [0.0, 1.0],
    },
}
BATCHES = [[3, 10], [11]]  # batch0000, batch0001: a shard file per pattern each
RENDERED = [3, 10]  # one render batch (batch0000), inside batch0000
PATTERNS = ["activations", *CONFIG["transforms"]]


def snakemake(workdir: Path, *args: str) -> str:
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("workflow")
    (directory / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    snakemake(directory)
    return directory


def page_count(path: Path) -> int:
    data = path.read_bytes()
    return data.count(b"/Type /Page") - data.count(b"/Type /Pages")


def assert_same_laplacian_spectrum(spectrum, direct):
    """Same eigenvalues and the same energy in every eigenspace.

    Inside an eigenspace of multiplicity > 1 the basis is LAPACK's choice (it may change with
    the number of threads), so single coefficients there are not comparable between runs.
    """
    np.testing.assert_allclose(spectrum.eigenvalues, direct.eigenvalues, atol=1e-9)
    groups = np.concatenate([[0], np.cumsum(np.diff(direct.eigenvalues) > 1e-5)])
    energy = np.bincount(groups, weights=spectrum.values[0] ** 2)
    expected = np.bincount(groups, weights=direct.values[0] ** 2)
    np.testing.assert_allclose(energy, expected, rtol=1e-8, atol=1e-12 * expected.sum())


def test_outputs_agree_with_library(workdir):
    results, model_name = workdir / "results", "net_a"
    model, metadata = load_model(results / "models" / model_name / "model.pt")
    data = load_dataset(CONFIG["datasets"]["digits"], tuple(metadata["input_shape"]))
    graph = hdf5.read_graph(results / "models" / model_name / "graph.h5")
    expected_graph = nsp.build_graph(model, data.inputs[:1])
    np.testing.assert_array_equal(graph.indptr, expected_graph.indptr)
    np.testing.assert_array_equal(graph.indices, expected_graph.indices)

    zeta = dense_zeta(graph)
    operators = {kind: nsp.compute_operator(graph, kind) for kind in CONFIG["transforms"]}
    assert hdf5.read_provenance(results / "models" / model_name / "operator_standard.h5")["method"] == (
        "factorized"
    )
    folder = results / model_name / "digits"
    for index, batch in enumerate(BATCHES):
        # One forward pass per batch: float32 kernels may round differently for other batch sizes.
        batch_pattern = nsp.trace(model, data.inputs[batch]).pattern()
        shard_name = f"batch{index:04d}.h5"
        shard = hdf5.read_pattern(folder / "activations" / shard_name)
        np.testing.assert_array_equal(shard.values, batch_pattern.values)
        assert shard.sample_ids.tolist() == data.ids[batch].tolist()
        spectra = {kind: hdf5.read_pattern(folder / kind / shard_name) for kind in CONFIG["transforms"]}
        for row, position in enumerate(batch):
            expected = batch_pattern.sample(row)
            activations = shard.sample(row)
            alone = nsp.trace(model, data.inputs[position : position + 1]).pattern()
            np.testing.assert_allclose(activations.values, alone.values, rtol=1e-5, atol=1e-5)
            assert activations.labels[0] == data.labels[position]
            assert activations.sample_ids[0] == data.ids[position]
            for transform_type in CONFIG["transforms"]:
                spectrum = spectra[transform_type].sample(row)
                assert spectrum.sample_ids[0] == data.ids[position]
                direct = nsp.transform(expected, operators[transform_type])
                if transform_type == "standard":  # factorised operator against the closure
                    assert_close_to_scale(spectrum.values[0], direct.values[0], zeta)
                    assert spectrum.diagnostics["significant_digits"].shape == (1, len(graph.layout))
                else:
                    assert_same_laplacian_spectrum(spectrum, direct)
            for pattern in PATTERNS:
                pdfs = list((folder / "pdf").rglob(f"{position:05d}_{pattern}.pdf"))
                if position in RENDERED:
                    assert [pdf.parent.name for pdf in pdfs] == ["batch0000"]
                    # a summary page, for the Laplacian a frequency page, then a page per layer
                    assert page_count(pdfs[0]) == len(graph.layout) + 1 + (pattern == "laplacian")
                else:
                    assert pdfs == []


def test_pdf_equals_render_of_the_sample_by_id(workdir, tmp_path):
    """A workflow PDF is what ``render --sample ID`` makes of the same sample of the shards."""
    folder = workdir / "results" / "net_a" / "digits"
    position = RENDERED[1]
    sample_id = int(hdf5.read_pattern(folder / "activations" / "batch0000.h5").sample_ids[1])
    spectra, activations = (folder / kind / "batch0000.h5" for kind in ("laplacian", "activations"))
    options = ("--scale", CONFIG["render"]["scale"], "--cmap", CONFIG["render"]["cmap"], "--model", "net_a")
    chosen = ("--sample", sample_id, "--input", activations)
    assert run("render", spectra, tmp_path / "s.pdf", *chosen, *options) == 0
    workflow_pdf = folder / "pdf" / "batch0000" / f"{position:05d}_laplacian.pdf"
    assert (tmp_path / "s.pdf").read_bytes() == workflow_pdf.read_bytes()


def test_one_job_per_batch(workdir):
    """Each batch of samples is one job per stage (a log per batch) and one shard per pattern."""
    logs, results = workdir / "results" / "logs", workdir / "results" / "net_a"
    for dataset in CONFIG["analyses"][0]["dataset"]:
        folders = [logs / "extract_activations" / "net_a" / dataset]
        folders += [logs / "transform" / "net_a" / dataset / kind for kind in CONFIG["transforms"]]
        for folder in folders:
            found = sorted(path.name for path in folder.iterdir())
            assert found == ["batch0000.log", "batch0001.log"], (folder, found)
        for pattern in PATTERNS:
            shards = sorted(path.name for path in (results / dataset / pattern).iterdir())
            assert shards == ["batch0000.h5", "batch0001.h5"], (dataset, pattern, shards)
        rendered = sorted(path.name for path in (logs / "render" / "net_a" / dataset).iterdir())
        assert rendered == ["batch0000.log"]  # the 2 rendered samples fit one render batch


def test_sweep_summary(workdir):
    """One row per dataset × pattern × layer, with the accuracy of the analysed samples."""
    with open(workdir / "results" / "sweep" / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    n_layers = len(hdf5.read_graph(workdir / "results" / "models" / "net_a" / "graph.h5").layout)
    combinations = {(row["model"], row["dataset"], row["transform"]) for row in rows}
    patterns = ["activations", *CONFIG["transforms"]]
    assert combinations == {("net_a", d, p) for d in ("digits", "digits16") for p in patterns}
    assert len(rows) == 2 * len(patterns) * n_layers
    for dataset in ("digits", "digits16"):
        with open(workdir / "results" / "net_a" / dataset / "summary.csv") as handle:
            samples = list(csv.DictReader(handle))
        correct = np.mean([row["label"] == row["prediction"] for row in samples])
        for row in rows:
            if row["dataset"] == dataset:
                assert int(row["samples"]) == len(samples) == 3
                np.testing.assert_allclose(float(row["accuracy"]), correct)
    with h5py.File(workdir / "results" / "sweep" / "summary.h5", "r") as file:
        table = file["table"]
        assert table["model"].asstr()[()].tolist() == [row["model"] for row in rows]
        np.testing.assert_allclose(table["mean_energy"][()], [float(row["mean_energy"]) for row in rows])


def test_summary_table(workdir):
    with open(workdir / "results" / "net_a" / "digits" / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["sample"] for row in rows] == ["00003", "00010", "00011"]
    for row in rows:
        # a sample of a shard, addressed by its id
        pattern = hdf5.read_pattern(workdir / row["activations"], sample_ids=[int(row["source_id"])])
        assert pattern.sample_ids.tolist() == [int(row["source_id"])]
        assert int(row["label"]) == pattern.labels[0]
        assert int(row["prediction"]) == pattern.predictions[0]
        if int(row["sample"]) in RENDERED:
            assert (workdir / row["laplacian_pdf"]).is_file()
        else:
            assert row["laplacian_pdf"] == ""


def test_rerun_does_nothing(workdir):
    assert "Nothing to be done" in snakemake(workdir, "--dry-run")


def dry_run_with(workdir: Path, config: dict) -> str:
    changed = workdir / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    return snakemake(workdir, "--dry-run", "--configfile", str(changed))


def test_changed_model_entry_reruns_what_depends_on_it(workdir):
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["models"]["net_a"]["train"]["epochs"] = 2
    outputs = [
        line for line in dry_run_with(workdir, config).splitlines() if line.strip().startswith("output:")
    ]
    for output in ("models/net_a/model.pt", "models/net_a/graph.h5", "net_a/digits/summary.csv"):
        assert any(f"results/{output}" in line for line in outputs)


def test_added_model_runs_only_its_own_jobs(workdir):
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["models"]["net_b"] = {"architecture": "digits_cnn", "seed": 1}
    config["analyses"].append({"model": "net_b", "dataset": "digits"})
    outputs = [
        line for line in dry_run_with(workdir, config).splitlines() if line.strip().startswith("output:")
    ]
    assert any("results/models/net_b/model.pt" in line for line in outputs)
    assert any("results/sweep/summary.csv" in line for line in outputs)  # the table gains net_b's rows
    assert not any("net_a" in line for line in outputs)


def test_dataset_summary_and_class_averages(workdir):
    """Per analysis: the dataset summary's average activations equal the mean of the sample files."""
    folder = workdir / "results" / "net_a" / "digits"
    patterns = [hdf5.read_pattern(folder / "activations" / f"batch{i:04d}.h5") for i in range(len(BATCHES))]
    average, by_class = read_averages(folder / "dataset_summary.h5", "activations")
    values = np.concatenate([p.values for p in patterns])
    np.testing.assert_allclose(average.values[0], values.mean(axis=0), rtol=1e-12, atol=1e-12)
    labels = np.concatenate([p.labels for p in patterns])
    assert sorted(by_class.labels.tolist()) == sorted(set(labels.tolist()))
    assert page_count(folder / "dataset_summary.pdf") >= 3
    expected = {f"{name}_all.pdf" for name in PATTERNS}
    expected |= {f"{name}_class_{label}.pdf" for name in PATTERNS for label in labels}
    assert {path.name for path in (folder / "averages").glob("*.pdf")} == expected


def test_snakemake_report(workdir):
    """`snakemake --report` collects the PDFs, the dataset plots, the class averages and the sweep table."""
    snakemake(workdir, "--report", str(workdir / "report.zip"))
    with zipfile.ZipFile(workdir / "report.zip") as archive:
        names = [Path(name).name for name in archive.namelist()]
    assert "report.html" in names
    datasets = len(CONFIG["analyses"][0]["dataset"])
    for position in RENDERED:
        for pattern in PATTERNS:
            assert names.count(f"{position:05d}_{pattern}.pdf") == datasets
    for name in ("dataset_summary.pdf", "activations_all.pdf", "standard_all.pdf"):
        assert names.count(name) == datasets, name
    assert names.count("summary.csv") == 1  # the sweep table


def test_interpret_maps_agree_with_library(workdir):
    """The interpret jobs' maps are the one-call API's on the same samples; one page per rendered one."""
    from nsp_pipeline.interpret.maps import interpret
    from nsp_pipeline.interpret.targets import Target

    results = workdir / "results"
    model, metadata = load_model(results / "models" / "net_a" / "model.pt")
    data = load_dataset(CONFIG["datasets"]["digits"], tuple(metadata["input_shape"]))
    targets = [Target("fc", unit=(3,)), Target("conv2", channel=1, reduction="max")]
    folder = results / "net_a" / "digits" / "interpret"
    for index, batch in enumerate(BATCHES):
        stored = hdf5.read_attribution_maps(folder / f"batch{index:04d}.h5")
        direct = interpret(
            model, data.inputs[batch], targets, smoothgrad={"n": 4}, occlusion={"window": 2, "stride": 2}
        )
        assert stored.sample_ids.tolist() == data.ids[batch].tolist()
        assert stored.methods == direct.methods
        for method in direct.methods:  # float32: kernels may round differently in another process
            scale = float(np.nanmax(np.abs(direct.maps[method])))
            np.testing.assert_allclose(
                stored.maps[method], direct.maps[method], rtol=1e-5, atol=1e-6 * scale, err_msg=method
            )
        np.testing.assert_allclose(stored.values, direct.values, rtol=1e-6)
    assert page_count(folder / "samples.pdf") == len(RENDERED) * len(targets)
    assert page_count(folder / "top_images.pdf") == len(targets)


def test_graph_analytics_of_each_model(workdir):
    """The per-model graph analytics: structural weights, Katz as networkx computes it."""
    import networkx as nx

    from nsp_pipeline.graph.weights import edge_weights

    folder = workdir / "results" / "models" / "net_a"
    summary = hdf5.read_graph_summary(folder / "graph_analytics.h5")
    model, metadata = load_model(folder / "model.pt")
    graph = hdf5.read_graph(folder / "graph.h5")
    example = load_dataset(CONFIG["datasets"]["digits"], tuple(metadata["input_shape"])).inputs[:1]
    weighted = graph.with_weights(edge_weights(model, example, graph, "structural"), "structural")
    katz = nx.katz_centrality(weighted.to_networkx(), alpha=0.1, weight="weight", max_iter=5000, tol=1e-12)
    keys = [graph.node_label(v) for v in range(graph.n_nodes)]
    np.testing.assert_allclose(summary.centralities["katz"], [katz[k] for k in keys], rtol=1e-6)
    assert summary.weight_kind == "structural" and summary.n_edges == graph.n_edges
    assert page_count(folder / "graph_analytics.pdf") >= 1 + len(summary.centralities)


def test_minimal_images_of_the_rendered_samples(workdir):
    """The minimal_images job's results are the library's, for each rendered sample and target."""
    from nsp_pipeline.interpret.minimal_images import masked_image, minimal_parcel_image
    from nsp_pipeline.interpret.targets import Target

    results = workdir / "results"
    model, metadata = load_model(results / "models" / "net_a" / "model.pt")
    data = load_dataset(CONFIG["datasets"]["digits"], tuple(metadata["input_shape"]))
    targets = [Target("fc", unit=(3,)), Target("conv2", channel=1, reduction="max")]
    stored = hdf5.read_minimal_images(results / "net_a" / "digits" / "interpret" / "minimal.h5")
    expected = []
    for position in RENDERED:
        image, sample_id = data.inputs[position], int(data.ids[position])
        parcels = minimal_parcel_image(
            model, image, targets, segmentation_kwargs={"n_segments": 6}, sample_id=sample_id
        )
        masked = masked_image(model, image, targets, sample_id=sample_id)
        expected += [(sample_id, result) for result in (*parcels, *masked)]
    assert [sample_id for sample_id, _ in stored] == [sample_id for sample_id, _ in expected]
    for (_, got), (_, want) in zip(stored, expected, strict=True):
        for key, value in want.attributes().items():  # float32 values may round differently elsewhere
            close = isinstance(value, float) and value == pytest.approx(got.attributes()[key], rel=1e-5)
            assert close or got.attributes()[key] == value, key
        for name, values in want.to_arrays().items():
            scale = float(np.abs(values).max()) if values.size else 0.0
            got_values = got.to_arrays()[name]
            np.testing.assert_allclose(got_values, values, rtol=1e-5, atol=1e-6 * scale, err_msg=name)
    pages = results / "net_a" / "digits" / "interpret" / "minimal.pdf"
    assert page_count(pages) == len(RENDERED) * len(targets)


def test_synthesis_of_each_model(workdir):
    """The synthesize job: the targets and every channel of the sheet's layers, as the library makes them."""
    from nsp_pipeline.interpret.synthesis import synthesize
    from nsp_pipeline.interpret.targets import Target

    folder = workdir / "results" / "models" / "net_a"
    model, _ = load_model(folder / "model.pt")
    stored = hdf5.read_synthesis(folder / "synthesis.h5")
    targets = [Target("fc", unit=(3,)), Target("conv2", channel=1, reduction="max")]
    targets += [Target("conv2", channel=c, reduction="mean") for c in range(16)]
    digits16 = load_dataset(CONFIG["datasets"]["digits16"], (1, 8, 8)).inputs  # resized as the job does
    expected = synthesize(model, targets, (1, 8, 8), steps=8, value_range=(0.0, 1.0), candidates=digits16)
    np.testing.assert_allclose(stored.inputs, expected.inputs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(stored.candidate, expected.candidate)
    assert page_count(folder / "synthesis.pdf") == len(targets)
    assert page_count(folder / "feature_sheet.pdf") == 1


def test_regions_of_a_slice_through_three_digits(workdir):
    """The regions job: the library's partition of the plane through the three digits, tiling its domain."""
    import shapely
    from shapely.geometry import Polygon

    from nsp_pipeline.interpret.regions import linear_regions
    from nsp_pipeline.interpret.slices import Slice

    model, _ = load_model(workdir / "results" / "models" / "net_a" / "model.pt")
    folder = workdir / "results" / "net_a" / "digits" / "regions"
    stored = hdf5.read_regions(folder / "3-10-11.h5")
    digits = load_dataset({"source": "digits", "split": "test"})
    points = digits.inputs[[3, 10, 11]].numpy().astype(np.float64)
    expected = linear_regions(model, Slice.through(points, margin=0.6, lo=0.0, hi=1.0), patterns=True)
    assert len(stored.areas) == len(expected.areas) > 1
    np.testing.assert_allclose(np.sort(stored.areas), np.sort(expected.areas), rtol=1e-9, atol=1e-15)
    cells = [Polygon(stored.vertices[a:b]) for a, b in zip(stored.offsets[:-1], stored.offsets[1:])]
    domain = Polygon(stored.domain)
    # Covered: 200,000 random points of the domain each lie in a cell (GEOS's union of ~10⁴ cells with
    # slivers is not exact enough to compare areas); with the areas summing to the domain's, no overlaps.
    low, high = np.array(domain.bounds[:2]), np.array(domain.bounds[2:])
    points = shapely.points(np.random.default_rng(0).uniform(low, high, (200_000, 2)))
    points = points[shapely.contains_properly(domain, points)]
    found, _ = shapely.STRtree(cells).query(points, predicate="intersects")
    assert np.unique(found).size == len(points) > 100_000
    assert abs(sum(cell.area for cell in cells) - domain.area) <= 1e-9 * domain.area
    np.testing.assert_allclose(stored.slope_norm, expected.slope_norm, rtol=1e-9)
    assert page_count(folder / "3-10-11.pdf") == 3
