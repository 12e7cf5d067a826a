"""The command line: every stage of ``python -m nsp_pipeline`` run in-process on a tiny config.

One module-scoped chain (export-model -> build-graph -> compute-operator -> extract-activations ->
transform -> render -> summarize) runs in a temporary folder; its outputs are read back with
:mod:`nsp_pipeline.io.hdf5` and compared with direct library calls on the same samples.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import error_line, run
from oracles import assert_close_to_scale, dense_zeta
from threadpoolctl import threadpool_limits

import nsp_pipeline
from nsp_pipeline.data.loading import load_dataset
from nsp_pipeline.io import hdf5
from nsp_pipeline.model.artifact import load_model
from nsp_pipeline.pipeline import cli

CONFIG = """\
models:
  tiny:
    architecture: digits_cnn
    train: {epochs: 1}
    train_data: digits
datasets:
  digits: {source: digits, split: test}
analyses:
  - {model: tiny, dataset: digits}
"""
DIGITS_TEST = {"source": "digits", "split": "test"}
SAMPLES = (3, 17, 42)
REFERENCE_INDEX = 5
TRANSFORMS = ("standard", "laplacian")

#: Every subcommand and the arguments its --help must list.
OPTIONS = {
    "export-model": ("--config", "--model", "--out", "--metadata"),
    "build-graph": tuple("model out --granularity --exclude-zero-edges --config --dataset --index".split()),
    "compute-operator": ("graph", "out", "--transform", "--model", "--max-nodes", "--k"),
    "extract-activations": ("model", "--config", "--dataset", "--samples", "--out", "--granularity"),
    "transform": ("operator", "activations", "--out-dir", "--precision", "--digits"),
    "render": (
        "pattern",
        "out",
        "--scale",
        "--cmap",
        "--symlog",
        "--model",
        "--input",
        "--sample",
        "--min-digits",
    ),
    "summarize": ("activations", "--out", "--layers"),
    **{
        command: ("model", "--config", "--dataset", "--samples", "--target", "--out", "--pdf", *extra)
        for command, extra in {
            "saliency": ("--abs",),
            "guided-backprop": (),
            "smoothgrad": ("--n", "--sigma", "--seed"),
            "occlusion": ("--window", "--stride", "--fill", "--output"),
            "activation-map": ("--mode", "--threshold-percentile"),
        }.items()
    },
    "minimal-images": tuple("model --config --dataset --samples --target --methods --out --pdf".split()),
    "synthesize": tuple("model --config --layers --target --steps --seed --out --pdf --sheet".split()),
    "regions": tuple("model --config --dataset --samples --scale --value-range --pair --out --pdf".split()),
    "graph-analytics": tuple(
        "model graph --out --pdf --config --weights --analytics --dataset --index --name".split()
    ),
}


def pdf_pages(path: Path) -> int:
    raw = path.read_bytes()
    assert raw.startswith(b"%PDF")
    return raw.count(b"/Type /Page") - raw.count(b"/Type /Pages")


def assert_close(got: np.ndarray, expected: np.ndarray) -> None:
    """Equal to 1e-12 relative (to each value, or to the largest one for values near zero)."""
    assert got.shape == expected.shape
    scale = float(np.abs(expected).max()) or 1.0
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * scale)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def single_blas_thread():
    """One BLAS thread: the two dense Laplacian eigendecompositions (1,866 nodes) dominate the
    runtime, and on a busy 2-core machine a second, contended thread makes them 2-3x slower."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Run every stage through the CLI once; return the paths of all outputs."""
    root = tmp_path_factory.mktemp("cli")
    config = root / "config.yaml"
    config.write_text(CONFIG)
    paths = {
        "root": root,
        "config": config,
        "model": root / "model.pt",
        "metadata": root / "model.json",
        "graph": root / "graph.h5",
        "operators": {kind: root / f"{kind}.h5" for kind in TRANSFORMS},
        "activations": root / "activations.h5",  # a shard of the SAMPLES
        "spectra": {kind: root / "spectra" / kind / "activations.h5" for kind in TRANSFORMS},
        "pdf": root / "laplacian.pdf",
        "summary": root / "summary.csv",
        "layers": root / "layers.csv",
    }
    model, graph = paths["model"], paths["graph"]
    assert run(
        "export-model", "--config", config, "--model", "tiny", "--out", model, "--metadata", paths["metadata"]
    ) == 0  # fmt: skip
    assert run("build-graph", model, graph) == 0
    for kind, operator in paths["operators"].items():
        assert run("compute-operator", graph, operator, "--transform", kind) == 0
    assert run(
        "extract-activations", model, "--config", config, "--dataset", "digits",
        "--samples", *SAMPLES, "--out", paths["activations"],
    ) == 0  # fmt: skip
    for kind in TRANSFORMS:
        out_dir = root / "spectra" / kind
        assert run("transform", paths["operators"][kind], paths["activations"], "--out-dir", out_dir) == 0
    first = int(hdf5.read_pattern(paths["activations"]).sample_ids[0])  # SAMPLES[0], by its id
    assert run(
        "render", paths["spectra"]["laplacian"], paths["pdf"], "--sample", first,
        "--scale", "layernorm", "--cmap", "RdBu_r",
    ) == 0  # fmt: skip
    summary = ("--out", paths["summary"], "--layers", paths["layers"])
    assert run("summarize", paths["activations"], *summary) == 0
    return paths


@pytest.fixture(scope="module")
def direct(chain):
    """The same results from direct library calls on the exported model and the same samples."""
    model, metadata = load_model(chain["model"])
    data = load_dataset(DIGITS_TEST, tuple(metadata["input_shape"]))
    inputs = data.inputs[list(SAMPLES)]
    pattern = nsp_pipeline.trace(model, inputs).pattern()
    graph = nsp_pipeline.build_graph(model, inputs[:1])
    operators = {kind: nsp_pipeline.compute_operator(graph, kind) for kind in TRANSFORMS}
    with torch.no_grad():
        outputs = model(inputs)
    return {
        "model": model,
        "metadata": metadata,
        "data": data,
        "pattern": pattern,
        "graph": graph,
        "operators": operators,
        "spectra": {kind: nsp_pipeline.transform(pattern, op) for kind, op in operators.items()},
        "predictions": outputs.argmax(dim=1).numpy(),
    }


# --------------------------------------------------------------------------- entry point and help


def test_module_entry_point_help():
    result = subprocess.run(
        [sys.executable, "-m", "nsp_pipeline", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "usage: python -m nsp_pipeline" in result.stdout
    for stage in OPTIONS:
        assert stage in result.stdout


def test_every_subcommand_is_covered():
    (subparsers,) = [
        action for action in cli.parser()._actions if isinstance(action, argparse._SubParsersAction)
    ]
    assert set(subparsers.choices) == set(OPTIONS)


@pytest.mark.parametrize("stage", sorted(OPTIONS))
def test_subcommand_help(stage, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([stage, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m nsp_pipeline {stage}")
    for option in OPTIONS[stage]:
        assert option in out, f"{stage} --help does not list {option}"


# --------------------------------------------------------------------------- the chain


def test_chain_outputs_exist(chain):
    files = [
        chain["model"], chain["metadata"], chain["graph"], *chain["operators"].values(),
        chain["activations"], *chain["spectra"].values(),
        chain["pdf"], chain["summary"], chain["layers"],
    ]  # fmt: skip
    for path in files:
        assert path.is_file() and path.stat().st_size > 0, path
    leftovers = list(chain["root"].rglob(".*.tmp"))
    assert leftovers == []


def test_exported_model_metadata(chain, direct):
    metadata = json.loads(chain["metadata"].read_text())
    assert metadata["checksum"] == direct["metadata"]["checksum"]
    assert metadata["input_shape"] == [1, 8, 8]
    assert metadata["training"]["epochs"] == 1
    assert 0.0 <= metadata["accuracy"] <= 1.0


def test_activations_equal_direct_trace(chain, direct):
    expected = direct["pattern"]
    data = direct["data"]
    pattern = hdf5.read_pattern(chain["activations"])
    assert pattern.domain == "activations"
    assert pattern.layout == expected.layout
    np.testing.assert_array_equal(pattern.values, expected.values)
    assert pattern.labels.tolist() == [int(data.labels[p]) for p in SAMPLES]
    assert pattern.sample_ids.tolist() == [int(data.ids[p]) for p in SAMPLES]
    assert pattern.predictions.tolist() == direct["predictions"].tolist()
    for row, position in enumerate(SAMPLES):  # each sample of the shard, read by its id
        alone = hdf5.read_pattern(chain["activations"], sample_ids=[int(data.ids[position])])
        np.testing.assert_array_equal(alone.values, expected.values[row : row + 1])


def test_graph_equals_direct_build(chain, direct):
    graph, expected = hdf5.read_graph(chain["graph"]), direct["graph"]
    assert graph.incl and graph.granularity == "children"
    assert graph.layout == expected.layout
    assert graph.n_nodes == expected.n_nodes and graph.n_edges == expected.n_edges > 0
    np.testing.assert_array_equal(graph.indptr, expected.indptr)
    np.testing.assert_array_equal(graph.indices, expected.indices)


@pytest.mark.parametrize("kind", TRANSFORMS)
def test_spectra_equal_direct_transform(chain, direct, kind):
    expected = direct["spectra"][kind]
    spectrum = hdf5.read_pattern(chain["spectra"][kind])
    assert spectrum.domain == kind
    assert spectrum.layout == expected.layout
    assert_close(spectrum.values, expected.values)
    if kind == "laplacian":
        assert_close(spectrum.eigenvalues, direct["operators"]["laplacian"].eigenvalues)
    else:
        assert spectrum.eigenvalues is None
    assert spectrum.labels.tolist() == [int(direct["data"].labels[p]) for p in SAMPLES]


def test_operator_files_equal_direct_operators(chain, direct):
    causal = hdf5.read_causal_operator(chain["operators"]["standard"])
    expected = direct["operators"]["standard"]
    for name in ("indptr", "indices", "row_map", "layer_rows"):
        np.testing.assert_array_equal(getattr(causal, name), getattr(expected, name))
    laplacian = hdf5.read_laplacian_operator(chain["operators"]["laplacian"])
    assert_close(laplacian.eigenvalues, direct["operators"]["laplacian"].eigenvalues)


def test_pdf_has_a_page_per_layer(chain, direct):
    n_layers = len(direct["pattern"].layout.layers)
    assert n_layers == 9  # input and the 8 children of DigitsCNN
    assert pdf_pages(chain["pdf"]) == n_layers + 2  # a summary page and the frequency page first


def test_summary_rows(chain, direct):
    with open(chain["summary"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    data = direct["data"]
    assert [row["sample"] for row in rows] == [str(data.ids[p]) for p in SAMPLES]  # named by their ids
    assert [int(row["label"]) for row in rows] == [int(data.labels[p]) for p in SAMPLES]
    assert [int(row["source_id"]) for row in rows] == [int(data.ids[p]) for p in SAMPLES]
    assert [int(row["prediction"]) for row in rows] == direct["predictions"].tolist()
    assert [row["activations"] for row in rows] == [str(chain["activations"])] * len(SAMPLES)


def test_provenance(chain, direct):
    checksum = json.loads(chain["metadata"].read_text())["checksum"]
    attributes = hdf5.read_provenance(chain["activations"])
    assert attributes["model_checksum"] == checksum
    assert attributes["torch_version"] == str(torch.__version__)
    assert attributes["nsp_pipeline_version"] == nsp_pipeline.__version__
    assert attributes["numpy_version"] == np.__version__
    assert attributes["dataset"] == direct["data"].name
    assert hdf5.read_provenance(chain["graph"])["model_checksum"] == checksum
    graph_sha = hdf5.read_header(chain["graph"])["content_sha256"]
    for kind, operator in chain["operators"].items():
        assert hdf5.read_provenance(operator)["graph_sha256"] == graph_sha
        spectrum = hdf5.read_provenance(chain["spectra"][kind])
        assert spectrum["model_checksum"] == checksum
        assert spectrum["operator_sha256"] == hdf5.read_header(operator)["content_sha256"]


# --------------------------------------------------------------------------- build-graph incl=False


def test_exclude_zero_edges_with_reference(chain, direct, tmp_path):
    out = tmp_path / "graph_excl.h5"
    assert run(
        "build-graph", chain["model"], out, "--exclude-zero-edges",
        "--config", chain["config"], "--dataset", "digits", "--index", REFERENCE_INDEX,
    ) == 0  # fmt: skip
    graph, full = hdf5.read_graph(out), hdf5.read_graph(chain["graph"])
    assert not graph.incl
    assert graph.layout == full.layout
    assert 0 < graph.n_edges <= full.n_edges
    reference = direct["data"].inputs[REFERENCE_INDEX : REFERENCE_INDEX + 1]
    expected = nsp_pipeline.build_graph(direct["model"], reference, incl=False)
    np.testing.assert_array_equal(graph.indptr, expected.indptr)
    np.testing.assert_array_equal(graph.indices, expected.indices)


def test_exclude_zero_edges_needs_reference(chain, tmp_path, capsys):
    out = tmp_path / "graph_excl.h5"
    assert run("build-graph", chain["model"], out, "--exclude-zero-edges") == 1
    assert "reference sample" in error_line(capsys)
    assert not out.exists()


def test_build_graph_dataset_without_config(chain, tmp_path, capsys):
    out = tmp_path / "graph_excl.h5"
    assert run("build-graph", chain["model"], out, "--exclude-zero-edges", "--dataset", "digits") == 1
    assert "--config" in error_line(capsys)


def test_build_graph_reference_index_out_of_range(chain, tmp_path, capsys):
    out = tmp_path / "graph_excl.h5"
    assert run(
        "build-graph", chain["model"], out, "--exclude-zero-edges",
        "--config", chain["config"], "--dataset", "digits", "--index", 5000,
    ) == 1  # fmt: skip
    assert "5000" in error_line(capsys)


# --------------------------------------------------------------------------- error paths


def test_unknown_model_name(chain, tmp_path, capsys):
    out = tmp_path / "m.pt"
    status = run(
        "export-model", "--config", chain["config"], "--model", "no_such_model",
        "--out", out, "--metadata", tmp_path / "m.json",
    )  # fmt: skip
    assert status == 1
    line = error_line(capsys)
    assert "no_such_model" in line and "models" in line
    assert not out.exists()


def test_missing_config_file(tmp_path, capsys):
    missing = tmp_path / "nowhere.yaml"
    status = run(
        "export-model", "--config", missing, "--model", "tiny",
        "--out", tmp_path / "m.pt", "--metadata", tmp_path / "m.json",
    )  # fmt: skip
    assert status == 1
    line = error_line(capsys)
    assert str(missing) in line and "does not exist" in line


def test_malformed_config_file(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("models: [\n")
    status = run(
        "export-model", "--config", config, "--model", "tiny",
        "--out", tmp_path / "m.pt", "--metadata", tmp_path / "m.json",
    )  # fmt: skip
    assert status == 1
    assert str(config) in error_line(capsys)


def test_truncated_activations_file(chain, tmp_path, capsys):
    source = chain["activations"]
    truncated = tmp_path / "truncated.h5"
    shutil.copyfile(source, truncated)
    with open(truncated, "r+b") as handle:
        handle.truncate(source.stat().st_size // 2)
    out = tmp_path / "spectra" / truncated.name
    assert run("transform", chain["operators"]["standard"], truncated, "--out-dir", out.parent) == 1
    line = error_line(capsys)
    assert str(truncated) in line and "truncated" in line
    assert not out.exists()


def test_pattern_file_as_operator(chain, tmp_path, capsys):
    pattern = chain["spectra"]["standard"]
    out = tmp_path / chain["activations"].name
    assert run("transform", pattern, chain["activations"], "--out-dir", tmp_path) == 1
    line = error_line(capsys)
    assert str(pattern) in line and "pattern file" in line and "operator" in line
    assert not out.exists()


def test_render_unknown_colormap(chain, tmp_path, capsys):
    out = tmp_path / "x.pdf"
    first = str(hdf5.read_pattern(chain["activations"]).sample_ids[0])
    assert run("render", chain["activations"], out, "--sample", first, "--cmap", "not_a_cmap") == 1
    line = error_line(capsys)
    assert "not_a_cmap" in line and "colormap" in line
    assert not out.exists()


def test_laplacian_above_max_nodes(chain, direct, tmp_path, capsys):
    out = tmp_path / "laplacian.h5"
    n_nodes = direct["graph"].n_nodes
    assert run(
        "compute-operator", chain["graph"], out, "--transform", "laplacian", "--max-nodes", n_nodes - 1
    ) == 1  # fmt: skip
    line = error_line(capsys)
    assert str(n_nodes) in line and str(n_nodes - 1) in line and "max_nodes" in line
    assert not out.exists()


# --------------------------------------------------------------------------- factorised and partial operators


def test_factorized_operator_from_model(chain, direct, tmp_path):
    """With --model the causal operator is factorised; its spectra equal the closure's to rounding."""
    out = tmp_path / "standard.h5"
    options = ("--transform", "standard", "--model", chain["model"])
    assert run("compute-operator", chain["graph"], out, *options) == 0
    assert hdf5.read_header(out)["kind"] == "factorized_causal_operator"
    assert hdf5.read_provenance(out)["method"] == "factorized"
    assert run("transform", out, chain["activations"], "--out-dir", tmp_path / "spectra") == 0
    zeta = dense_zeta(direct["graph"])
    expected = direct["spectra"]["standard"]
    spectra = hdf5.read_pattern(tmp_path / "spectra" / chain["activations"].name)
    for row in range(len(SAMPLES)):
        assert_close_to_scale(spectra.values[row], expected.values[row], zeta)
    digits = spectra.diagnostics["significant_digits"]
    assert digits.shape == (len(SAMPLES), len(expected.layout)) and np.all(digits > 3)


def test_partial_laplacian_records_residual_energy(chain, direct, tmp_path):
    """--k keeps the k lowest frequencies; each spectrum file holds the energy they miss (Parseval)."""
    full = direct["operators"]["laplacian"]
    gaps = np.flatnonzero(np.diff(full.eigenvalues) > 1e-6) + 1
    k = int(gaps[gaps >= 12][0])  # not inside an eigenspace, whose basis would be arbitrary
    out = tmp_path / "laplacian.h5"
    assert run("compute-operator", chain["graph"], out, "--transform", "laplacian", "--k", k) == 0
    assert hdf5.read_provenance(out)["method"] == f"{k} lowest eigenpairs"
    assert run("transform", out, chain["activations"], "--out-dir", tmp_path / "spectra") == 0
    spectra = hdf5.read_pattern(tmp_path / "spectra" / chain["activations"].name)
    for row in range(len(SAMPLES)):
        spectrum = spectra.sample(row)
        assert np.all(np.isnan(spectrum.values[0, k:]))
        np.testing.assert_allclose(spectrum.eigenvalues, full.eigenvalues[:k], atol=1e-8)
        signal = direct["pattern"].values[row]
        missing = np.sum((signal @ full.eigenvectors[:, k:]) ** 2)
        residual = spectrum.diagnostics["residual_energy"][0]
        np.testing.assert_allclose(residual, missing, rtol=1e-8)
        captured = np.nansum(spectrum.values[0] ** 2)
        np.testing.assert_allclose(captured + residual, np.sum(signal**2), rtol=1e-10)


def test_layer_table(chain, direct):
    """Per-layer energies of the summary equal Σ s² over each layer, averaged over the samples."""
    with open(chain["layers"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    layers = direct["pattern"].layers()
    assert [row["name"] for row in rows] == direct["pattern"].layout.names
    total = sum(float(np.sum(values**2)) for values in layers)
    for row, values in zip(rows, layers, strict=True):
        assert row["pattern"] == "activations"
        energy = float(np.sum(values**2)) / len(SAMPLES)
        np.testing.assert_allclose(float(row["mean_energy"]), energy, rtol=1e-12)
        assert int(row["nodes"]) == values[0].size
    shares = [float(row["energy_share"]) for row in rows]
    np.testing.assert_allclose(sum(shares), 1.0, rtol=1e-12)
    assert total > 0


def test_render_spectrum_with_symlog_and_input(chain, direct, tmp_path):
    """A causal spectrum with the symmetric-log scale, its model name and the sample's input image."""
    out = tmp_path / "standard.pdf"
    spectrum, activations = chain["spectra"]["standard"], chain["activations"]
    first = str(hdf5.read_pattern(activations).sample_ids[0])
    options = ("--scale", "layernorm", "--symlog", "--model", "tiny", "--input", activations)
    assert run("render", spectrum, out, "--sample", first, *options) == 0
    assert pdf_pages(out) == len(direct["pattern"].layout) + 1
    raw = out.read_bytes()
    assert raw.startswith(b"%PDF") and not list(tmp_path.glob(".*.tmp"))
