"""The Snakemake workflow end to end on a tiny config, against direct library calls."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import nsp_pipeline as nsp
from nsp_pipeline import storage
from nsp_pipeline.datasets import load_dataset
from nsp_pipeline.models import load_model

pytest.importorskip("snakemake")

REPO = Path(__file__).resolve().parents[1]

CONFIG = {
    "models": {"net_a": {"architecture": "digits_cnn", "train": {"epochs": 1}, "train_data": "digits"}},
    "datasets": {"digits": {"source": "digits", "split": "test"}},
    "analyses": [{"model": "net_a", "dataset": "digits"}],
    "samples": {"indices": [3, 10]},
    "transforms": ["standard", "laplacian"],
    "render": {"scale": "layernorm", "cmap": "viridis"},
}


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
    graph = storage.read_graph(results / "models" / model_name / "graph.h5")
    expected_graph = nsp.build_graph(model, data.inputs[:1])
    np.testing.assert_array_equal(graph.indptr, expected_graph.indptr)
    np.testing.assert_array_equal(graph.indices, expected_graph.indices)

    for position in CONFIG["samples"]["indices"]:
        # The workflow records each sample alone; float32 kernels may round differently per batch size.
        expected = nsp.trace(model, data.inputs[position : position + 1]).pattern()
        activations = storage.read_pattern(
            results / model_name / "digits" / "activations" / f"{position:05d}.h5"
        )
        np.testing.assert_array_equal(activations.values, expected.values)
        assert activations.labels[0] == data.labels[position]
        assert activations.sample_ids[0] == data.ids[position]
        for transform_type in CONFIG["transforms"]:
            spectrum = storage.read_pattern(
                results / model_name / "digits" / transform_type / f"{position:05d}.h5"
            )
            direct = nsp.transform(expected, nsp.compute_operator(graph, transform_type))
            if transform_type == "standard":
                np.testing.assert_array_equal(spectrum.values, direct.values)
            else:
                assert_same_laplacian_spectrum(spectrum, direct)
            pdf = results / model_name / "digits" / "pdf" / f"{position:05d}_{transform_type}.pdf"
            assert page_count(pdf) == len(graph.layout)
        assert page_count(results / model_name / "digits" / "pdf" / f"{position:05d}_activations.pdf") == len(
            graph.layout
        )


def test_summary_table(workdir):
    with open(workdir / "results" / "net_a" / "digits" / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["sample"] for row in rows] == ["00003", "00010"]
    for row in rows:
        pattern = storage.read_pattern(workdir / row["activations"])
        assert int(row["label"]) == pattern.labels[0]
        assert int(row["prediction"]) == pattern.predictions[0]
        assert (workdir / row["laplacian_pdf"]).is_file()


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
    assert not any("net_a" in line for line in outputs)
