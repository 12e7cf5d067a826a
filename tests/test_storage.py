"""HDF5 storage: round trips, reproducibility, schema checks, integrity checks, atomicity, provenance."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from conftest import SmallResNet
from file_kinds import write_analysis_kinds

from nsp_pipeline.analysis.dataset_statistics import class_statistics
from nsp_pipeline.core.layout import Layer, Layout
from nsp_pipeline.core.pattern import Pattern
from nsp_pipeline.graph.neuron_graph import NeuronGraph
from nsp_pipeline.io import hdf5
from nsp_pipeline.io.hdf5 import (
    SchemaError,
    read_causal_operator,
    read_factorized_causal_operator,
    read_graph,
    read_header,
    read_laplacian_operator,
    read_layout,
    read_pattern,
    read_provenance,
    read_sweep_summary,
    write_causal_operator,
    write_dataset_summary,
    write_factorized_causal_operator,
    write_graph,
    write_laplacian_operator,
    write_layout,
    write_pattern,
    write_sweep_summary,
)
from nsp_pipeline.io.provenance import config_hash, provenance, torch_version
from nsp_pipeline.model.artifact import model_checksum
from nsp_pipeline.model.capture import trace
from nsp_pipeline.transforms.causal.builder import factorized_operator
from nsp_pipeline.transforms.causal.closure import CausalOperator
from nsp_pipeline.transforms.laplacian import LaplacianOperator

PROVENANCE = {"nsp_pipeline_version": "0.1.0", "config_hash": "abc", "note": "ünïcode"}


@pytest.fixture
def layout() -> Layout:
    """Four layers with awkward names, a 0-d layer and a two-parent layer; 2 + 3 + 1 + 2 nodes."""
    return Layout(
        (
            Layer("input", (2,), "input"),
            Layer("features.0/conv", (1, 3), "Conv2d", "Conv2d(1, 1, kernel_size=2)", (0,)),
            Layer("mean", (), "mean", "", (1,)),
            Layer("añadir", (2,), "add", "sum of two", (0, 2)),
        )
    )


@pytest.fixture
def graph(layout: Layout) -> NeuronGraph:
    parents = [[], [], [0], [0, 1], [1], [2, 3, 4], [0, 5], [1, 5]]
    indptr = np.concatenate([[0], np.cumsum([len(p) for p in parents])]).astype(np.int64)
    indices = np.array([u for p in parents for u in p], dtype=np.int64)
    return NeuronGraph(layout, indptr, indices, incl=False, granularity="ops")


@pytest.fixture
def causal(layout: Layout) -> CausalOperator:
    """Strict ancestor sets of ``graph``; the two nodes of the last layer have different parents."""
    return CausalOperator(
        layout=layout,
        indptr=np.array([0, 0, 1, 3, 4, 9, 15, 21], dtype=np.int64),
        indices=np.array([0, 0, 1, 1, 0, 1, 2, 3, 4, *range(6), *range(6)], dtype=np.int64),
        row_map=np.array([0, 0, 1, 2, 3, 4, 5, 6], dtype=np.int64),
        layer_rows=np.array([0, 1, 4, 5, 7], dtype=np.int64),
    )


@pytest.fixture
def factorized():
    """Factorised operator of a small residual network (union terms, all-to-all and sparse maps)."""
    torch.manual_seed(0)
    network = SmallResNet()
    inputs = torch.randn(3, 1, 8, 8)
    return factorized_operator(trace(network, inputs[:1], "ops")), trace(network, inputs, "ops").pattern()


@pytest.fixture
def laplacian(layout: Layout) -> LaplacianOperator:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(layout.n_nodes, layout.n_nodes))
    eigenvalues, eigenvectors = np.linalg.eigh(matrix + matrix.T)
    return LaplacianOperator(layout, eigenvalues, eigenvectors)


def _pattern(layout: Layout, full: bool) -> Pattern:
    rng = np.random.default_rng(1)
    n_samples = 3 if full else 1
    return Pattern(
        layout=layout,
        values=rng.normal(size=(n_samples, layout.n_nodes)),
        domain="laplacian" if full else "activations",
        sample_ids=np.array([7, 8, 9]) if full else None,
        labels=np.array([1, -1, 0]) if full else None,
        predictions=np.array([1, 2, 0]) if full else None,
        eigenvalues=np.linspace(0.0, 4.0, layout.n_nodes) if full else None,
        diagnostics={"residual_energy": np.array([0.5, 0.0, 2.0]), "digits": rng.normal(size=(3, 4))}
        if full
        else {},
    )


def _assert_same_layout(read: Layout, written: Layout) -> None:
    assert read == written
    np.testing.assert_array_equal(read.offsets, written.offsets)


def _assert_same_array(read: np.ndarray, written: np.ndarray) -> None:
    assert read.dtype == written.dtype
    np.testing.assert_array_equal(read, written, strict=True)


def _sweep_table() -> dict[str, np.ndarray]:
    return {
        "model": np.array(["net", "nët"], dtype=object),
        "layer": np.array([0, 3]),
        "mean_energy": np.array([1.5, np.nan]),
    }


def _write_all(tmp_path, layout, graph, causal, laplacian, factorized) -> dict[str, object]:
    """Write one file of every kind; return the path of each kind."""
    paths = {kind: tmp_path / f"{kind}.h5" for kind in hdf5.KINDS}
    write_graph(paths["graph"], graph, PROVENANCE)
    write_causal_operator(paths["causal_operator"], causal, PROVENANCE)
    write_factorized_causal_operator(paths["factorized_causal_operator"], factorized[0], PROVENANCE)
    write_laplacian_operator(paths["laplacian_operator"], laplacian, PROVENANCE)
    write_pattern(paths["pattern"], _pattern(layout, full=True), PROVENANCE)
    statistics = {"laplacian": class_statistics(_pattern(layout, full=True))}
    write_dataset_summary(paths["dataset_summary"], statistics, PROVENANCE)
    write_sweep_summary(paths["sweep_summary"], _sweep_table(), PROVENANCE)
    write_analysis_kinds(paths, graph, PROVENANCE)
    assert paths.keys() == hdf5.KINDS.keys()
    return paths


def test_graph_round_trip(tmp_path, graph: NeuronGraph) -> None:
    write_graph(tmp_path / "g.h5", graph, PROVENANCE)
    read = read_graph(tmp_path / "g.h5")
    _assert_same_layout(read.layout, graph.layout)
    _assert_same_array(read.indptr, graph.indptr)
    _assert_same_array(read.indices, graph.indices)
    assert read.incl is False and read.granularity == "ops"


def test_causal_operator_round_trip(tmp_path, causal: CausalOperator) -> None:
    write_causal_operator(tmp_path / "c.h5", causal, PROVENANCE)
    read = read_causal_operator(tmp_path / "c.h5")
    _assert_same_layout(read.layout, causal.layout)
    for name in ("indptr", "indices", "row_map", "layer_rows"):
        _assert_same_array(getattr(read, name), getattr(causal, name))


def test_factorized_operator_round_trip(tmp_path, factorized) -> None:
    """The operator read back has the same relations and gives bit-identical spectra."""
    operator, pattern = factorized
    write_factorized_causal_operator(tmp_path / "f.h5", operator, PROVENANCE)
    read = read_factorized_causal_operator(tmp_path / "f.h5")
    _assert_same_layout(read.layout, operator.layout)
    assert read.grids == operator.grids and read.n_terms == operator.n_terms
    for got, expected in zip(read.ancestors, operator.ancestors, strict=True):
        assert list(got) == list(expected)
        for source in expected:
            np.testing.assert_array_equal(got[source].dense(), expected[source].dense())
    assert [p is None for p in read.single_parents] == [p is None for p in operator.single_parents]
    np.testing.assert_array_equal(read.forward(pattern.values), operator.forward(pattern.values))
    assert hdf5.read_operator(tmp_path / "f.h5").n_terms == operator.n_terms


def test_laplacian_operator_round_trip(tmp_path, laplacian: LaplacianOperator) -> None:
    write_laplacian_operator(tmp_path / "l.h5", laplacian, PROVENANCE)
    read = read_laplacian_operator(tmp_path / "l.h5")
    _assert_same_layout(read.layout, laplacian.layout)
    _assert_same_array(read.eigenvalues, laplacian.eigenvalues)
    _assert_same_array(read.eigenvectors, laplacian.eigenvectors)


@pytest.mark.parametrize("full", [True, False], ids=["with-metadata", "bare"])
def test_pattern_round_trip(tmp_path, layout: Layout, full: bool) -> None:
    pattern = _pattern(layout, full)
    write_pattern(tmp_path / "p.h5", pattern, PROVENANCE)
    read = read_pattern(tmp_path / "p.h5")
    _assert_same_layout(read.layout, layout)
    _assert_same_array(read.values, pattern.values)
    assert read.domain == pattern.domain
    for name in ("sample_ids", "labels", "predictions", "eigenvalues"):
        written = getattr(pattern, name)
        if written is None:
            assert getattr(read, name) is None
        else:
            _assert_same_array(getattr(read, name), written)
    assert sorted(read.diagnostics) == sorted(pattern.diagnostics)
    for name, values in pattern.diagnostics.items():
        _assert_same_array(read.diagnostics[name], values)


def test_pattern_file_is_readable_with_plain_h5py(tmp_path, layout: Layout) -> None:
    pattern = _pattern(layout, full=True)
    write_pattern(tmp_path / "p.h5", pattern, PROVENANCE)
    with h5py.File(tmp_path / "p.h5", "r") as file:
        dataset = file["layers/001"]
        assert dataset.attrs["name"] == "features.0/conv"
        assert dataset.attrs["kind"] == "Conv2d"
        assert dataset.attrs["offset"] == 2
        np.testing.assert_array_equal(dataset.attrs["parents"], [0])
        np.testing.assert_array_equal(dataset[()], pattern.layer("features.0/conv"))
        np.testing.assert_array_equal(file["layers/003"].attrs["parents"], [0, 2])
        assert file["labels"].dtype == np.int64 and file.attrs["domain"] == "laplacian"
        assert file.attrs["schema"] == "nsp-pipeline/pattern" and file.attrs["schema_version"] == 2


def test_missing_metadata_is_stored_as_minus_one(tmp_path, layout: Layout) -> None:
    write_pattern(tmp_path / "p.h5", _pattern(layout, full=False), PROVENANCE)
    with h5py.File(tmp_path / "p.h5", "r") as file:
        for name in ("sample_ids", "labels", "predictions"):
            np.testing.assert_array_equal(file[name][()], [-1])
        assert "eigenvalues" not in file


def test_empty_pattern_is_refused(tmp_path, layout: Layout) -> None:
    empty = Pattern(layout, np.zeros((0, layout.n_nodes)))
    with pytest.raises(ValueError, match="at least one sample"):
        write_pattern(tmp_path / "p.h5", empty, PROVENANCE)
    assert not (tmp_path / "p.h5").exists()


def test_layout_group_round_trip(tmp_path, layout: Layout) -> None:
    with h5py.File(tmp_path / "layout.h5", "w") as file:
        write_layout(file.create_group("layout"), layout)
    with h5py.File(tmp_path / "layout.h5", "r") as file:
        _assert_same_layout(read_layout(file["layout"]), layout)


def test_files_are_bit_reproducible_and_untimestamped(
    tmp_path, layout, graph, causal, laplacian, factorized
) -> None:
    first = _write_all(tmp_path / "a", layout, graph, causal, laplacian, factorized)
    second = _write_all(tmp_path / "b", layout, graph, causal, laplacian, factorized)
    for kind in hdf5.KINDS:
        assert first[kind].read_bytes() == second[kind].read_bytes(), kind
        with h5py.File(first[kind], "r") as file:
            objects = [file, *(file[name] for name in _all_names(file))]
            assert all(h5py.h5o.get_info(item.id).ctime == 0 for item in objects), kind


def _all_names(file: h5py.File) -> list[str]:
    names: list[str] = []
    file.visit(names.append)
    return names


def test_large_indices_are_compressed_and_round_trip(tmp_path) -> None:
    n_nodes = 3000
    layout = Layout((Layer("input", (1000,), "input"), Layer("fc", (2000,), "Linear", "", (0,))))
    indptr = np.concatenate([np.zeros(1001), np.arange(1, 2001) * 1000]).astype(np.int64)
    indices = np.tile(np.arange(1000), 2000).astype(np.int64)
    graph = NeuronGraph(layout, indptr, indices)
    assert graph.n_nodes == n_nodes
    write_graph(tmp_path / "g.h5", graph, PROVENANCE)
    with h5py.File(tmp_path / "g.h5", "r") as file:
        assert file["indices"].compression == "gzip" and file["indices"].shuffle
        assert file["indptr"].compression is None
    assert (tmp_path / "g.h5").stat().st_size < indices.nbytes / 10
    read = read_graph(tmp_path / "g.h5")
    _assert_same_array(read.indices, indices)


def test_sweep_summary_round_trip(tmp_path) -> None:
    write_sweep_summary(tmp_path / "s.h5", _sweep_table(), PROVENANCE)
    read = read_sweep_summary(tmp_path / "s.h5")
    assert list(read) == ["model", "layer", "mean_energy"]
    assert read["model"].tolist() == ["net", "nët"]
    _assert_same_array(read["layer"], np.array([0, 3], dtype=np.int64))
    _assert_same_array(read["mean_energy"], np.array([1.5, np.nan]))
    assert read_provenance(tmp_path / "s.h5") == PROVENANCE
    with h5py.File(tmp_path / "s.h5", "r") as file:  # the layout readers with plain h5py rely on
        assert file.attrs["schema"] == "nsp-pipeline/sweep_summary" and "layout" not in file
        assert file["table/model"].asstr()[()].tolist() == ["net", "nët"]
    with pytest.raises(ValueError, match="differ in length"):
        write_sweep_summary(tmp_path / "t.h5", {"a": np.zeros(2), "b": np.zeros(3)}, PROVENANCE)


def test_provenance_is_stored_and_read_back(tmp_path, graph: NeuronGraph) -> None:
    checksum = model_checksum(torch.nn.Linear(2, 1))
    attributes = provenance(config={"seed": 0}, model_checksum=checksum, dataset="mnist")
    write_graph(tmp_path / "g.h5", graph, attributes)
    assert read_provenance(tmp_path / "g.h5") == attributes


def test_header_names_kind_and_checksum(tmp_path, causal: CausalOperator) -> None:
    write_causal_operator(tmp_path / "c.h5", causal, PROVENANCE)
    with h5py.File(tmp_path / "c.h5", "r") as file:
        stored = file.attrs["content_sha256"]
    assert read_header(tmp_path / "c.h5") == {"kind": "causal_operator", "content_sha256": stored}


def test_reserved_provenance_keys_are_rejected(tmp_path, graph: NeuronGraph) -> None:
    with pytest.raises(ValueError, match="reserved"):
        write_graph(tmp_path / "g.h5", graph, {"schema": "mine"})


@pytest.mark.parametrize(
    ("written", "reader", "expected"),
    [
        ("pattern", read_graph, "graph"),
        ("graph", read_pattern, "pattern"),
        ("causal_operator", read_laplacian_operator, "laplacian_operator"),
        ("laplacian_operator", read_causal_operator, "causal_operator"),
        ("factorized_causal_operator", read_causal_operator, "causal_operator"),
    ],
)
def test_wrong_kind_is_a_schema_error(
    tmp_path, layout, graph, causal, laplacian, factorized, written, reader, expected
) -> None:
    paths = _write_all(tmp_path, layout, graph, causal, laplacian, factorized)
    with pytest.raises(SchemaError, match=rf"{written}\.h5 is a {written} file.*expected a {expected} file"):
        reader(paths[written])


def test_pattern_is_not_an_operator(tmp_path, layout) -> None:
    write_pattern(tmp_path / "p.h5", _pattern(layout, full=False), PROVENANCE)
    with pytest.raises(SchemaError, match=r"p\.h5 is a pattern file, expected an operator file"):
        hdf5.read_operator(tmp_path / "p.h5")


def test_foreign_hdf5_file_is_a_schema_error(tmp_path) -> None:
    with h5py.File(tmp_path / "other.h5", "w") as file:
        file["x"] = np.arange(3)
    with pytest.raises(SchemaError, match=r"other\.h5 .*without an nsp-pipeline 'schema'"):
        read_graph(tmp_path / "other.h5")


def test_newer_schema_version_is_a_schema_error(tmp_path, graph: NeuronGraph) -> None:
    write_graph(tmp_path / "g.h5", graph, PROVENANCE)
    with h5py.File(tmp_path / "g.h5", "r+") as file:
        file.attrs["schema_version"] = hdf5.SCHEMA_VERSION + 1
    with pytest.raises(
        SchemaError, match=rf"g\.h5 has schema_version {hdf5.SCHEMA_VERSION + 1}; .* reads version"
    ):
        read_graph(tmp_path / "g.h5")


def test_missing_file_is_file_not_found(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothere\.h5"):
        read_pattern(tmp_path / "nothere.h5")


def test_non_hdf5_file_is_a_schema_error(tmp_path) -> None:
    (tmp_path / "notes.h5").write_text("not hdf5")
    with pytest.raises(SchemaError, match=r"notes\.h5 is not an HDF5 file"):
        read_provenance(tmp_path / "notes.h5")


@pytest.mark.parametrize("dataset", ["indices", "layout/names", "layout/offsets"])
def test_modified_dataset_is_reported_corrupt(tmp_path, graph: NeuronGraph, dataset: str) -> None:
    write_graph(tmp_path / "g.h5", graph, PROVENANCE)
    with h5py.File(tmp_path / "g.h5", "r+") as file:
        values = file[dataset]
        values[0] = "x" if dataset == "layout/names" else values[0] + 1
    with pytest.raises(SchemaError, match=r"g\.h5 is corrupt or truncated: content checksum"):
        read_graph(tmp_path / "g.h5")


def test_modified_layer_is_reported_corrupt(tmp_path, layout: Layout) -> None:
    write_pattern(tmp_path / "p.h5", _pattern(layout, full=True), PROVENANCE)
    with h5py.File(tmp_path / "p.h5", "r+") as file:
        file["layers/002"][1] = 0.5
    with pytest.raises(SchemaError, match="corrupt"):
        read_pattern(tmp_path / "p.h5")


def test_deleted_dataset_is_reported_corrupt(tmp_path, layout: Layout) -> None:
    write_pattern(tmp_path / "p.h5", _pattern(layout, full=True), PROVENANCE)
    with h5py.File(tmp_path / "p.h5", "r+") as file:
        del file["layers/003"]
    with pytest.raises(SchemaError, match=r"corrupt.*\['layers/003'\]"):
        read_pattern(tmp_path / "p.h5")


@pytest.mark.parametrize("kind", hdf5.KINDS)
def test_truncated_file_is_reported_corrupt(
    tmp_path, layout, graph, causal, laplacian, factorized, kind
) -> None:
    path = _write_all(tmp_path, layout, graph, causal, laplacian, factorized)[kind]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(SchemaError, match="corrupt or truncated"):
        getattr(hdf5, f"read_{kind}")(path)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch, layout: Layout) -> None:
    path = tmp_path / "out" / "p.h5"
    calls = []

    def failing_create(group, name, values, compression=None):
        calls.append(name)
        if len(calls) > 3:
            raise RuntimeError("disk full")
        return original(group, name, values, compression)

    original = hdf5._create
    monkeypatch.setattr(hdf5, "_create", failing_create)
    with pytest.raises(RuntimeError, match="disk full"):
        write_pattern(path, _pattern(layout, full=True), PROVENANCE)
    assert len(calls) == 4
    assert list(path.parent.iterdir()) == []


def test_failed_overwrite_keeps_the_old_file(tmp_path, monkeypatch, graph: NeuronGraph) -> None:
    path = tmp_path / "g.h5"
    write_graph(path, graph, PROVENANCE)
    before = path.read_bytes()
    monkeypatch.setattr(hdf5, "content_sha256", _raise)
    with pytest.raises(RuntimeError):
        write_graph(path, graph, {"other": "provenance"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["g.h5"]


def _raise(*args, **kwargs):
    raise RuntimeError("interrupted")


def test_provenance_records_versions_and_hashes() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    attributes = provenance(config={"b": [1, 2], "a": "x"}, model_checksum=model_checksum(model), run="r1")
    assert all(isinstance(value, str) for value in attributes.values())
    assert attributes["torch_version"] == torch_version() == str(torch.__version__)
    assert attributes["numpy_version"] == np.__version__
    assert attributes["h5py_version"] == h5py.__version__
    for key in ("nsp_pipeline_version", "python_version", "scipy_version", "hdf5_version"):
        assert attributes[key]
    assert attributes["config_hash"] == config_hash({"a": "x", "b": [1, 2]}) != config_hash({"a": "y"})
    assert attributes["model_checksum"] == model_checksum(model) == model_checksum(model.state_dict())
    assert attributes["run"] == "r1"
    assert provenance() == provenance()
    assert provenance()["config_hash"] == "" and provenance()["model_checksum"] == ""


def test_model_checksum_changes_with_one_weight() -> None:
    model = torch.nn.Linear(4, 3)
    before = model_checksum(model)
    with torch.no_grad():
        model.weight[1, 2] += 1e-6
    assert model_checksum(model) != before


def test_model_checksum_covers_names_and_dtypes() -> None:
    model = torch.nn.Linear(2, 2)
    state = model.state_dict()
    renamed = {f"x.{key}": value for key, value in state.items()}
    widened = {key: value.to(torch.float64) for key, value in state.items()}
    assert len({model_checksum(state), model_checksum(renamed), model_checksum(widened)}) == 3


def test_provenance_rejects_clashing_extras() -> None:
    with pytest.raises(ValueError, match="torch_version"):
        provenance(torch_version="1.0")


def test_provenance_wants_the_checksum_not_the_model() -> None:
    with pytest.raises(TypeError, match=r"model_checksum is a Linear; expected the checksum string"):
        provenance(None, torch.nn.Linear(2, 1))


def test_storage_does_not_import_torch() -> None:
    """Reading and writing files, provenance included, works in a job that never imports torch."""
    code = (
        "import sys, nsp_pipeline.io.hdf5, nsp_pipeline.io.provenance as p; p.provenance(); "
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'torch'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------- verification


def _flip_byte_of(path, values: np.ndarray) -> None:
    """Flip one bit in the stored bytes of ``values`` (found in the raw file), as a disk error would."""
    data = bytearray(path.read_bytes())
    at = data.find(np.ascontiguousarray(values, dtype="<f8").tobytes())
    assert at >= 0
    data[at + 3] ^= 0x10
    path.write_bytes(bytes(data))


def test_flipped_byte_is_reported_with_the_file(tmp_path, laplacian) -> None:
    write_laplacian_operator(tmp_path / "l.h5", laplacian, PROVENANCE)
    _flip_byte_of(tmp_path / "l.h5", laplacian.eigenvectors[2])
    with pytest.raises(
        SchemaError, match=r"l\.h5 is corrupt or truncated: content checksum .* does not match"
    ):
        read_laplacian_operator(tmp_path / "l.h5")


def _count_hashes(monkeypatch) -> list[int]:
    calls = []
    original = hdf5.content_sha256

    def counted(arrays, attributes):
        calls.append(len(arrays))
        return original(arrays, attributes)

    monkeypatch.setattr(hdf5, "content_sha256", counted)
    return calls


def test_a_file_is_hashed_once_per_process(tmp_path, monkeypatch, laplacian) -> None:
    path = tmp_path / "l.h5"
    write_laplacian_operator(path, laplacian, PROVENANCE)
    calls = _count_hashes(monkeypatch)
    for _ in range(3):
        _assert_same_array(read_laplacian_operator(path).eigenvectors, laplacian.eigenvectors)
    assert hdf5.read_operator(path).n_nodes == laplacian.n_nodes
    assert len(calls) == 1
    read_laplacian_operator(path, verify=False)
    assert len(calls) == 1


def test_a_rewritten_file_is_hashed_again(tmp_path, monkeypatch, laplacian) -> None:
    path = tmp_path / "l.h5"
    write_laplacian_operator(path, laplacian, PROVENANCE)
    calls = _count_hashes(monkeypatch)
    read_laplacian_operator(path)
    shifted = LaplacianOperator(laplacian.layout, laplacian.eigenvalues + 1.0, laplacian.eigenvectors)
    write_laplacian_operator(path, shifted, PROVENANCE)
    n_writes = len(calls)
    _assert_same_array(read_laplacian_operator(path).eigenvalues, shifted.eigenvalues)
    assert len(calls) == n_writes + 1


def test_edit_after_a_verified_read_is_detected(tmp_path, layout) -> None:
    """A file changed later (a new modification time) is verified again; ``verify=False`` trusts it."""
    path = tmp_path / "p.h5"
    write_pattern(path, _pattern(layout, full=True), PROVENANCE)
    read_pattern(path)
    with h5py.File(path, "r+") as file:
        file["layers/000"][0, 0] += 1.0
    modified = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(modified, modified))
    assert read_pattern(path, verify=False).values[0, 0] == _pattern(layout, full=True).values[0, 0] + 1.0
    with pytest.raises(SchemaError, match=r"p\.h5 is corrupt or truncated: content checksum"):
        read_pattern(path)


# --------------------------------------------------------------------------- samples of a file


@pytest.mark.parametrize("verify", [True, False])
def test_read_samples_by_id(tmp_path, monkeypatch, layout, verify) -> None:
    """Selected samples equal the rows of the whole pattern, on a first (hashing) read and after it."""
    pattern = _pattern(layout, full=True)  # ids 7, 8, 9
    write_pattern(tmp_path / "p.h5", pattern, PROVENANCE)
    calls = _count_hashes(monkeypatch)
    for _ in range(2):
        read = read_pattern(tmp_path / "p.h5", sample_ids=[9, 7, 9], verify=verify)
        rows = [2, 0, 2]
        _assert_same_array(read.values, pattern.values[rows])
        for name in ("sample_ids", "labels", "predictions"):
            _assert_same_array(getattr(read, name), getattr(pattern, name)[rows])
        for name, values in pattern.diagnostics.items():
            _assert_same_array(read.diagnostics[name], values[rows])
        _assert_same_array(read.eigenvalues, pattern.eigenvalues)
        assert read.domain == pattern.domain and read.layout == layout
    assert len(calls) == verify  # one hash for the first verified read; none after it, none unverified
    one = read_pattern(tmp_path / "p.h5", sample_ids=np.array([8]))
    assert one.n_samples == 1 and one.labels is None  # label -1: unknown


def test_missing_sample_ids_are_named(tmp_path, layout) -> None:
    write_pattern(tmp_path / "p.h5", _pattern(layout, full=True), PROVENANCE)
    with pytest.raises(
        SchemaError, match=r"p\.h5 holds no samples with ids \[3, -1\]; it holds ids \[7, 8, 9\]"
    ):
        read_pattern(tmp_path / "p.h5", sample_ids=[7, 3, -1])
    write_pattern(tmp_path / "bare.h5", _pattern(layout, full=False), PROVENANCE)
    with pytest.raises(SchemaError, match=r"bare\.h5 stores no sample ids"):
        read_pattern(tmp_path / "bare.h5", sample_ids=[0])


# --------------------------------------------------------------------------- storage options of patterns


def _as_bits(values: np.ndarray) -> np.ndarray:
    """The float64 values' bit patterns: equal bits, not merely equal numbers (-0.0 differs from 0.0)."""
    return np.ascontiguousarray(values, dtype=np.float64).view(np.int64)


def _stored_dtypes(path) -> dict[str, str]:
    with h5py.File(path, "r") as file:
        return {name: file["layers"][name].dtype.str for name in file["layers"]}


def test_default_storage_is_float64_uncompressed_and_whole(tmp_path, layout: Layout) -> None:
    write_pattern(tmp_path / "p.h5", _pattern(layout, full=True), PROVENANCE)
    with h5py.File(tmp_path / "p.h5", "r") as file:
        assert "stored_layers" not in file.attrs
        for index in range(len(layout)):
            dataset = file[f"layers/{index:03d}"]
            assert dataset.dtype.str == "<f8" and dataset.compression is None and dataset.chunks is None


@pytest.mark.parametrize("dtype", ["auto", "float32"])
def test_float32_storage_of_float32_activations_is_lossless(tmp_path, dtype: str) -> None:
    """A float32 model's activations are float32 numbers: stored as float32 they read back bit for bit."""
    torch.manual_seed(0)
    network = SmallResNet()
    inputs = torch.randn(3, 1, 8, 8)
    pattern = trace(network, inputs, "ops").pattern(sample_ids=[4, 5, 6])
    write_pattern(tmp_path / "a.h5", pattern, PROVENANCE, dtype=dtype)
    assert set(_stored_dtypes(tmp_path / "a.h5").values()) == {"<f4"}
    read = read_pattern(tmp_path / "a.h5")
    assert read.values.dtype == np.float64
    np.testing.assert_array_equal(_as_bits(read.values), _as_bits(pattern.values))
    np.testing.assert_array_equal(_as_bits(read.layer(0)), _as_bits(inputs.numpy()))  # the float32 input
    assert (tmp_path / "a.h5").stat().st_size < pattern.values.nbytes * 0.6 + 64_000


def test_auto_storage_keeps_float64_where_float32_would_round(tmp_path, layout: Layout) -> None:
    """Per layer: float32 only where every value is a float32 number (signed zeros, infinities, NaN)."""
    values = np.zeros((2, layout.n_nodes))
    values[:, 0:2] = [[0.5, -0.0], [np.inf, np.nan]]  # input: float32 numbers
    values[:, 2:5] = [[0.1, 1.0, 2.0], [3.0, 4.0, 5.0]]  # 0.1 is not a float32 number
    values[:, 5] = [1e-40, 3.0]  # 1e-40 is no float32 number (subnormals are multiples of 2⁻¹⁴⁹)
    values[:, 6:8] = [[2.0**-149, -(2.0**127)], [1.5, 7.0]]  # float32's extremes: exact
    pattern = Pattern(layout, values, domain="activations")
    write_pattern(tmp_path / "p.h5", pattern, PROVENANCE, dtype="auto")
    assert _stored_dtypes(tmp_path / "p.h5") == {"000": "<f4", "001": "<f8", "002": "<f8", "003": "<f4"}
    np.testing.assert_array_equal(_as_bits(read_pattern(tmp_path / "p.h5").values), _as_bits(values))


def test_float32_storage_rounds_to_nearest(tmp_path, layout: Layout) -> None:
    """Stored float32 values are IEEE round-to-nearest: within 2⁻²⁴ of each value, relatively."""
    rng = np.random.default_rng(2)
    spectrum = rng.normal(size=(3, layout.n_nodes)) * 10.0 ** rng.integers(-30, 30, size=(3, layout.n_nodes))
    write_pattern(
        tmp_path / "s.h5", Pattern(layout, spectrum, domain="standard"), PROVENANCE, dtype="float32"
    )
    read = read_pattern(tmp_path / "s.h5").values
    np.testing.assert_array_equal(read, spectrum.astype(np.float32).astype(np.float64))
    assert np.all(np.abs(read - spectrum) <= 2.0**-24 * np.abs(spectrum))
    assert np.any(read != spectrum)


@pytest.mark.parametrize(
    ("compression", "level"), [("gzip", 1), ("gzip", 2), ("lzf", 4)], ids=["gzip1", "gzip2", "lzf"]
)
def test_compressed_layers_round_trip(tmp_path, compression: str, level: int) -> None:
    """Compressed layers read back bit for bit, one chunk per sample of a large layer, reproducibly."""
    layout = Layout((Layer("input", (3, 32, 32), "input"), Layer("relu", (4, 512, 512), "relu", "", (0,))))
    rng = np.random.default_rng(3)
    values = np.maximum(rng.normal(size=(2, layout.n_nodes)), 0.0)  # half zeros, as after a ReLU
    pattern = Pattern(layout, values, domain="activations", sample_ids=[1, 2])
    for name in ("a.h5", "b.h5"):
        write_pattern(tmp_path / name, pattern, PROVENANCE, compression=compression, compression_level=level)
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    with h5py.File(tmp_path / "a.h5", "r") as file:
        small, large = file["layers/000"], file["layers/001"]
        assert small.compression == large.compression == compression and large.shuffle
        assert large.compression_opts == (level if compression == "gzip" else None)
        assert small.chunks == (2, 3, 32, 32) and large.chunks == (1, 4, 512, 512)
    assert (tmp_path / "a.h5").stat().st_size < values.nbytes * 0.9
    np.testing.assert_array_equal(_as_bits(read_pattern(tmp_path / "a.h5").values), _as_bits(values))
    one = read_pattern(tmp_path / "a.h5", sample_ids=[2])
    np.testing.assert_array_equal(_as_bits(one.values), _as_bits(values[1:]))


def _causal_spectrum(layout: Layout) -> Pattern:
    """A causal spectrum of 3 samples with per-sample and per-layer diagnostics."""
    rng = np.random.default_rng(4)
    return Pattern(
        layout=layout,
        values=rng.normal(size=(3, layout.n_nodes)),
        domain="standard",
        sample_ids=[7, 8, 9],
        labels=[1, 0, 1],
        diagnostics={
            "significant_digits": rng.uniform(0, 16, size=(3, 4)),
            "below_noise": rng.uniform(0, 1, size=(3, 4)),
            "residual_energy": rng.uniform(size=3),
        },
    )


def test_layer_subset_reads_back_on_its_layout(tmp_path, layout: Layout) -> None:
    """Layers ``input`` (nodes 0-1) and ``añadir`` (nodes 6-7, parents input and mean) of 2 + 3 + 1 + 2."""
    spectrum = _causal_spectrum(layout)
    path = tmp_path / "s.h5"
    write_pattern(path, spectrum, PROVENANCE, layers=["añadir", 0, "añadir"])
    with h5py.File(path, "r") as file:
        assert sorted(file["layers"]) == ["000", "003"]
        np.testing.assert_array_equal(file.attrs["stored_layers"], [0, 3])
        assert file["layers/003"].attrs["name"] == "añadir" and file["layers/003"].attrs["offset"] == 6
    _assert_same_layout(read_layout_of(path), layout)  # the file keeps the whole network's layout
    read = read_pattern(path)
    assert read.layout == Layout(
        (Layer("input", (2,), "input"), Layer("añadir", (2,), "add", "sum of two", (0,)))
    )
    _assert_same_array(read.values, spectrum.values[:, [0, 1, 6, 7]])
    _assert_same_array(
        read.diagnostics["significant_digits"], spectrum.diagnostics["significant_digits"][:, [0, 3]]
    )
    _assert_same_array(read.diagnostics["below_noise"], spectrum.diagnostics["below_noise"][:, [0, 3]])
    _assert_same_array(read.diagnostics["residual_energy"], spectrum.diagnostics["residual_energy"])
    assert read.domain == "standard" and read.labels.tolist() == [1, 0, 1]
    one = read_pattern(path, sample_ids=[9], layers=[3])
    assert one.layout.names == ["añadir"] and one.layout.layers[0].parents == ()
    _assert_same_array(one.values, spectrum.values[2:, [6, 7]])
    _assert_same_array(
        one.diagnostics["significant_digits"], spectrum.diagnostics["significant_digits"][2:, [3]]
    )


def read_layout_of(path) -> Layout:
    with h5py.File(path, "r") as file:
        return read_layout(file["layout"])


def test_reading_an_unstored_layer_names_it_and_the_file(tmp_path, layout: Layout) -> None:
    path = tmp_path / "s.h5"
    write_pattern(path, _causal_spectrum(layout), PROVENANCE, layers=["input", "añadir"])
    with pytest.raises(
        hdf5.LayerNotStoredError,
        match=r"s\.h5 does not store layer 'mean' \(layer 2 of its network\): it stores only the "
        r"layers \['input', 'añadir'\]",
    ):
        read_pattern(path, layers=["añadir", "mean"])
    with pytest.raises(
        hdf5.LayerNotStoredError, match=r"s\.h5 has no layer named 'nope': its network's layers"
    ):
        read_pattern(path, layers=["nope"])
    with pytest.raises(hdf5.LayerNotStoredError, match=r"s\.h5 has no layer 4: its network has 4 layers"):
        read_pattern(path, layers=[4])
    with h5py.File(path, "r+") as file:
        del file["layers/003"]
    with pytest.raises(SchemaError, match=r"corrupt.*\['layers/003'\]"):
        read_pattern(path, layers=["input"])


def test_laplacian_layer_subset_keeps_the_eigenvalues_of_its_positions(tmp_path, layout: Layout) -> None:
    spectrum = _pattern(layout, full=True)  # eigenvalues linspace(0, 4, 8): node v has 4v/7
    write_pattern(tmp_path / "l.h5", spectrum, PROVENANCE, layers=[1, 3])
    read = read_pattern(tmp_path / "l.h5", layers=["añadir"])
    _assert_same_array(read.eigenvalues, np.array([24.0, 28.0]) / 7)
    _assert_same_array(read.values, spectrum.values[:, [6, 7]])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dtype": "float16"}, r"dtype 'float16': expected one of \('float64', 'float32', 'auto'\)"),
        ({"compression": "zstd"}, r"compression 'zstd': expected one of \('none', 'gzip', 'lzf'\)"),
        ({"compression": "gzip", "compression_level": 12}, r"gzip compression level 12: expected 0"),
    ],
)
def test_unknown_storage_options_are_refused(tmp_path, layout: Layout, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        write_pattern(tmp_path / "p.h5", _pattern(layout, full=True), PROVENANCE, **options)
    with pytest.raises(KeyError, match=r"no layer named 'fc'"):
        write_pattern(tmp_path / "p.h5", _pattern(layout, full=True), PROVENANCE, layers=["fc"])
    assert not (tmp_path / "p.h5").exists()


def test_pattern_storage_applies_the_settings_by_domain() -> None:
    """Activations whole (the transforms read every layer); the layer subset for causal spectra only."""
    settings = {
        "activations_dtype": "auto",
        "spectra_dtype": "float32",
        "layers": ["fc"],
        "compression": "lzf",
        "compression_level": 4,
    }
    shared = {"compression": "lzf", "compression_level": 4}
    assert hdf5.pattern_storage(settings, "activations") == {"dtype": "auto", "layers": None, **shared}
    assert hdf5.pattern_storage(settings, "standard") == {"dtype": "float32", "layers": ["fc"], **shared}
    assert hdf5.pattern_storage(settings, "laplacian") == {"dtype": "float32", "layers": None, **shared}


def test_select_layers_keeps_each_layer_and_renumbers_parents(layout: Layout) -> None:
    spectrum = _causal_spectrum(layout)
    selected = spectrum.select_layers(["añadir", "features.0/conv", 3])
    assert selected.layout.names == ["features.0/conv", "añadir"]
    assert [layer.parents for layer in selected.layout.layers] == [(), ()]  # input and mean are dropped
    assert spectrum.select_layers([0, 3]).layout.layers[1].parents == (0,)
    for name in selected.layout.names:
        _assert_same_array(selected.layer(name), spectrum.layer(name))
    _assert_same_array(selected.diagnostics["below_noise"], spectrum.diagnostics["below_noise"][:, [1, 3]])
    with pytest.raises(ValueError, match="at least one layer"):
        spectrum.select_layers([])
