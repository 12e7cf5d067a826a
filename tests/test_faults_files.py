"""File-integrity and command-line faults: what a user meets when files are damaged, mixed up,
left behind by killed jobs, or named as outputs over inputs.

Each fault ends in a message that names the culprit (file, attribute, sample) and what was
expected, or in a correct result; no fault loses finished work.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cli_helpers import error_line, run
from file_kinds import write_analysis_kinds

from nsp_pipeline.analysis.dataset_statistics import class_statistics
from nsp_pipeline.core.atomic import atomic_output, check_outputs, remove_stale_temporaries
from nsp_pipeline.core.errors import ProvenanceError
from nsp_pipeline.core.layout import Layer, Layout
from nsp_pipeline.core.pattern import Pattern, concatenate
from nsp_pipeline.graph.neuron_graph import NeuronGraph
from nsp_pipeline.io import hdf5
from nsp_pipeline.io.hdf5 import SchemaError
from nsp_pipeline.io.provenance import provenance
from nsp_pipeline.model.capture import trace
from nsp_pipeline.pipeline.stages import render_file, render_samples, transform_files
from nsp_pipeline.pipeline.summaries import summarize
from nsp_pipeline.transforms.api import compute_operator
from nsp_pipeline.transforms.causal.builder import factorized_operator

MODEL = "a" * 64
SETTINGS = {"dataset": {"source": "digits", "split": "test"}, "granularity": "children"}
SOURCE = provenance(SETTINGS, MODEL, dataset="digits")
HOST = socket.gethostname()


@pytest.fixture
def layout() -> Layout:
    """An input image of 2x2 pixels and a dense layer of 3 neurons: 7 nodes."""
    return Layout((Layer("input", (1, 2, 2), "input"), Layer("fc", (3,), "Linear", "fc", (0,))))


@pytest.fixture
def graph(layout) -> NeuronGraph:
    indptr = np.array([0, 0, 0, 0, 0, 4, 8, 12], dtype=np.int64)
    return NeuronGraph(layout, indptr, np.tile(np.arange(4), 3).astype(np.int64), granularity="children")


def activations(layout: Layout, ids: list[int], seed: int = 0) -> Pattern:
    rng = np.random.default_rng(seed)
    return Pattern(
        layout,
        rng.normal(size=(len(ids), layout.n_nodes)),
        "activations",
        sample_ids=np.array(ids),
        labels=np.array([sample % 2 for sample in ids]),
        predictions=np.zeros(len(ids), dtype=np.int64),
    )


@pytest.fixture
def batch(tmp_path, layout, graph) -> dict:
    """Two activations shards (ids 3, 4 and 5, 6), the Laplacian operator, and the spectra of both."""
    operator = tmp_path / "operator_laplacian.h5"
    laplacian = compute_operator(graph, "laplacian")
    hdf5.write_laplacian_operator(operator, laplacian, provenance({"transform": "laplacian"}, MODEL))
    shards = [tmp_path / "activations" / "batch0000.h5", tmp_path / "activations" / "batch0001.h5"]
    for path, ids, seed in zip(shards, ([3, 4], [5, 6]), (0, 1), strict=True):
        path.parent.mkdir(exist_ok=True)
        hdf5.write_pattern(path, activations(layout, ids, seed), SOURCE)
    spectra = [tmp_path / "laplacian" / path.name for path in shards]
    transform_files(shards, operator, spectra)
    return {"operator": operator, "activations": shards, "laplacian": spectra, "root": tmp_path}


# --------------------------------------------------------------------------- attributes are checksummed


def write_every_kind(folder: Path, layout: Layout, graph: NeuronGraph) -> dict[str, Path]:
    """One small file of every kind of :data:`nsp_pipeline.io.hdf5.KINDS`."""
    folder.mkdir(exist_ok=True)
    paths = {kind: folder / f"{kind}.h5" for kind in hdf5.KINDS}
    hdf5.write_graph(paths["graph"], graph, SOURCE)
    hdf5.write_causal_operator(paths["causal_operator"], compute_operator(graph, "standard"), SOURCE)
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 2), torch.nn.ReLU())
    recorded = trace(network, torch.zeros(1, 1, 3, 3), "ops")
    hdf5.write_factorized_causal_operator(
        paths["factorized_causal_operator"], factorized_operator(recorded), SOURCE
    )
    hdf5.write_laplacian_operator(paths["laplacian_operator"], compute_operator(graph, "laplacian"), SOURCE)
    pattern = activations(layout, [3, 4, 5])
    hdf5.write_pattern(paths["pattern"], pattern, SOURCE)
    hdf5.write_dataset_summary(paths["dataset_summary"], {"activations": class_statistics(pattern)}, SOURCE)
    table = {"model": np.array(["net", "nët"], dtype=object), "layer": np.array([0, 3])}
    hdf5.write_sweep_summary(paths["sweep_summary"], table, SOURCE)
    write_analysis_kinds(paths, graph, SOURCE)
    return paths


def every_attribute(path: Path) -> list[tuple[str, str]]:
    """(object path, name) of every attribute of a file but ``content_sha256``; ``""`` is the root."""
    found = []
    with h5py.File(path, "r", locking=False) as file:
        found += [("", name) for name in file.attrs if name != "content_sha256"]
        file.visititems(lambda name, item: found.extend((name, key) for key in item.attrs))
    return found


def altered(value):
    """Another value of the same kind: a string with one more character, a number plus one."""
    array = np.asarray(value)
    if array.dtype.kind in "OUS":
        if array.ndim == 0:
            return str(value) + "x"
        return np.array([str(item) + "x" for item in array.ravel()] or ["x"], dtype=h5py.string_dtype())
    return array + 1 if array.size else np.ones(1, dtype=array.dtype)


@pytest.mark.parametrize("kind", hdf5.KINDS)
def test_every_changed_attribute_is_refused_naming_the_file(tmp_path, layout, graph, kind):
    source = write_every_kind(tmp_path / "written", layout, graph)[kind]
    reader = getattr(hdf5, f"read_{kind}")
    attributes = every_attribute(source)
    assert ("", "config_hash") in attributes and ("", "model_checksum") in attributes
    assert len(attributes) >= 12
    for index, (owner, name) in enumerate(attributes):
        path = tmp_path / f"{index}_{kind}.h5"
        path.write_bytes(source.read_bytes())
        with h5py.File(path, "r+", locking=False) as file:
            target = file[owner] if owner else file
            target.attrs[name] = altered(target.attrs[name])
        for read in (reader, hdf5.read_provenance, hdf5.read_header):
            with pytest.raises(SchemaError, match=rf"{path.name} (is corrupt|has|is an HDF5)") as error:
                read(path)
            assert str(path) in str(error.value), (owner, name)
        assert reader(source) is not None  # the original is intact


@pytest.mark.parametrize(("kind", "value"), [("graph", "children"), ("pattern", "config_hash")])
def test_bit_flip_in_a_root_attribute_is_refused(tmp_path, layout, graph, kind, value):
    """One bit of ``granularity`` or ``config_hash`` flipped on disk, as a disk error would."""
    path = write_every_kind(tmp_path, layout, graph)[kind]
    text = (SOURCE["config_hash"] if value == "config_hash" else value).encode()
    data = bytearray(path.read_bytes())
    assert data.count(text) == 1
    data[data.find(text) + 1] ^= 0x02
    path.write_bytes(bytes(data))
    with pytest.raises(
        SchemaError, match=rf"{path.name} is corrupt or truncated: content checksum .* attribute"
    ):
        getattr(hdf5, f"read_{kind}")(path)
    with pytest.raises(SchemaError, match="content checksum"):
        hdf5.read_provenance(path)


def documented_checksum(path: Path) -> str:
    """``content_sha256`` computed as docs/hdf5-schema.md says, from what plain h5py reads."""

    def record(digest, label: str, values: np.ndarray) -> None:
        shape = ",".join(map(str, values.shape))
        if values.dtype.kind in "OU":
            digest.update(f"{label}\0utf-8\0{shape}\0".encode())
            for value in values.ravel():
                text = str(value).encode()
                digest.update(len(text).to_bytes(8, "little") + text)
        else:
            little = values.astype(values.dtype.newbyteorder("<"))
            digest.update(f"{label}\0{little.dtype.str}\0{shape}\0".encode() + little.tobytes(order="C"))

    datasets, attributes = {}, {}
    with h5py.File(path, "r", locking=False) as file:
        attributes.update({("", k): v for k, v in file.attrs.items() if k != "content_sha256"})

        def visit(name, item):
            attributes.update({(name, key): value for key, value in item.attrs.items()})
            if isinstance(item, h5py.Dataset):
                datasets[name] = item.asstr()[()] if h5py.check_string_dtype(item.dtype) else item[()]

        file.visititems(visit)
    digest = hashlib.sha256()
    for name in sorted(datasets):
        record(digest, f"dataset\0{name}", np.asarray(datasets[name]))
    for owner, name in sorted(attributes):
        record(digest, f"attribute\0{owner}\0{name}", np.asarray(attributes[owner, name]))
    return digest.hexdigest()


@pytest.mark.parametrize("kind", hdf5.KINDS)
def test_checksum_is_the_documented_one(tmp_path, layout, graph, kind):
    path = write_every_kind(tmp_path, layout, graph)[kind]
    with h5py.File(path, "r", locking=False) as file:
        stored = file.attrs["content_sha256"]
    assert documented_checksum(path) == stored == hdf5.read_header(path)["content_sha256"]


def test_pattern_file_without_samples_is_refused(tmp_path, layout):
    """A file another tool wrote with zero samples (and a valid checksum) is named, not half-read."""
    path = tmp_path / "empty.h5"
    hdf5.write_pattern(path, activations(layout, [3]), SOURCE)
    with h5py.File(path, "r+", locking=False) as file:
        for name in ("layers/000", "layers/001", "sample_ids", "labels", "predictions"):
            empty = file[name][()][:0]
            del file[name]
            file[name] = empty
        file.attrs["content_sha256"] = documented_checksum(path)
    with pytest.raises(SchemaError, match=r"empty\.h5 holds no samples; a pattern file holds at least one"):
        hdf5.read_pattern(path)


def test_old_schema_version_says_to_regenerate(tmp_path, graph):
    path = tmp_path / "g.h5"
    hdf5.write_graph(path, graph, SOURCE)
    with h5py.File(path, "r+", locking=False) as file:
        file.attrs["schema_version"] = np.int64(1)  # as every file written before attributes were hashed
    with pytest.raises(
        SchemaError, match=r"g\.h5 has schema_version 1, written by an older .* regenerate it"
    ):
        hdf5.read_graph(path)


def test_file_open_in_another_writer_is_read(tmp_path, batch):
    """Readers do not take HDF5 file locks: a file held open for writing elsewhere still reads."""
    path = batch["activations"][0]
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import h5py, time; f = h5py.File({str(path)!r}, 'r+'); print('open', flush=1); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        assert hdf5.read_pattern(path).sample_ids.tolist() == [3, 4]
        assert run("transform", batch["operator"], path, "--out-dir", batch["root"] / "again") == 0
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------- files of one batch


def test_spectrum_of_other_samples_is_not_rendered(tmp_path, batch):
    shards = {"activations": batch["activations"][0], "laplacian": batch["laplacian"][1]}
    with pytest.raises(ProvenanceError) as error:
        render_samples(shards, [0], ["00003"], tmp_path / "pdf" / "batch0000")
    message = str(error.value)
    assert "batch0000.h5 holds sample ids [3, 4]" in message and str(batch["laplacian"][1]) in message
    assert "row 0: id 3 in" in message and "id 5 in" in message
    assert not (tmp_path / "pdf").exists()


def test_spectrum_of_samples_in_another_order_is_refused(tmp_path, layout, batch):
    swapped = tmp_path / "swapped.h5"
    pattern = hdf5.read_pattern(batch["laplacian"][0])
    reordered = concatenate([pattern.sample(1), pattern.sample(0)])
    hdf5.write_pattern(swapped, reordered, hdf5.read_provenance(batch["laplacian"][0]))
    with pytest.raises(ProvenanceError, match=r"row 0: id 3 in .*batch0000\.h5, id 4 in .*swapped\.h5"):
        render_samples(
            {"activations": batch["activations"][0], "laplacian": swapped}, [0], ["a"], tmp_path / "p"
        )


@pytest.mark.parametrize("key", ["model_checksum", "dataset", "config_hash"])
def test_spectrum_of_another_model_or_data_is_not_rendered_nor_summarised(tmp_path, batch, key):
    other = tmp_path / "other.h5"
    spectrum = hdf5.read_pattern(batch["laplacian"][0])
    hdf5.write_pattern(other, spectrum, hdf5.read_provenance(batch["laplacian"][0]) | {key: "b" * 64})
    with pytest.raises(ProvenanceError, match=rf"other\.h5 has {key} b+\.\.\. but .*batch0000\.h5 has"):
        render_samples(
            {"activations": batch["activations"][0], "laplacian": other}, [0], ["a"], tmp_path / "p"
        )
    with pytest.raises(ProvenanceError, match=rf"other\.h5 has {key}"):
        summarize(
            {"activations": batch["activations"][:1], "laplacian": [other]},
            [],
            tmp_path / "s.csv",
            tmp_path / "l.csv",
        )
    assert not (tmp_path / "s.csv").exists()


def test_render_input_of_another_sample_is_refused(tmp_path, batch, capsys):
    spectrum, wrong = batch["laplacian"][0], batch["activations"][1]
    with pytest.raises(ProvenanceError, match=r"batch0001\.h5 holds sample ids \[5, 6\] but .*id 5 .*id 3"):
        render_file(spectrum, tmp_path / "x.pdf", sample=3, input_path=wrong)
    assert run("render", spectrum, tmp_path / "x.pdf", "--sample", 3, "--input", wrong) == 1
    assert "id 3" in error_line(capsys) and not (tmp_path / "x.pdf").exists()


def test_render_input_that_is_a_spectrum_is_refused(tmp_path, batch):
    with pytest.raises(ValueError, match=r"input .*laplacian/batch0000\.h5 holds a 'laplacian' spectrum"):
        render_file(batch["laplacian"][0], tmp_path / "x.pdf", sample=3, input_path=batch["laplacian"][0])


def test_matching_shards_are_rendered_with_their_own_input(tmp_path, batch, monkeypatch):
    """The right files pass the checks, and each PDF gets its own sample's input image."""
    drawn = []
    monkeypatch.setattr(
        "nsp_pipeline.render.pages.render_pattern",
        lambda pattern, path, input_image=None, **options: (
            drawn.append((pattern, input_image)),
            Path(path).touch(),
        ),
    )
    shards = {"activations": batch["activations"][1], "laplacian": batch["laplacian"][1]}
    render_samples(shards, [1], ["00006"], tmp_path / "pdf")
    assert sorted(path.name for path in (tmp_path / "pdf").iterdir()) == [
        "00006_activations.pdf",
        "00006_laplacian.pdf",
    ]
    source = hdf5.read_pattern(batch["activations"][1])
    for pattern, image in drawn:
        assert pattern.sample_ids.tolist() == [6]
        np.testing.assert_array_equal(image, source.layer(0)[1])
    drawn.clear()
    render_file(batch["laplacian"][1], tmp_path / "six.pdf", sample=6, input_path=batch["activations"][1])
    np.testing.assert_array_equal(drawn[0][1], source.layer(0)[1])


def test_summary_refuses_shards_of_other_samples(tmp_path, batch):
    patterns = {"activations": batch["activations"], "laplacian": batch["laplacian"][::-1]}
    with pytest.raises(
        ProvenanceError, match=r"activations/batch0000\.h5 holds sample ids \[3, 4\] but .*row 0: id 3"
    ):
        summarize(patterns, [], tmp_path / "s.csv", tmp_path / "l.csv")
    assert list(tmp_path.glob("*.csv")) == []


def test_summary_refuses_a_sample_twice_and_a_wrong_domain(tmp_path, batch, capsys):
    twice = [batch["activations"][0], batch["activations"][0]]
    assert run("summarize", *twice, "--out", tmp_path / "s.csv", "--layers", tmp_path / "l.csv") == 1
    assert "sample 3 is in" in error_line(capsys)
    assert (
        run("summarize", batch["laplacian"][0], "--out", tmp_path / "s.csv", "--layers", tmp_path / "l.csv")
        == 1
    )
    assert "holds 'laplacian' patterns; expected 'activations'" in error_line(capsys)


def test_summary_refuses_spectra_of_two_operators(tmp_path, batch, graph):
    """Spectra of one transform computed with different operators (e.g. another laplacian.k)."""
    other = tmp_path / "operator_k2.h5"
    hdf5.write_laplacian_operator(other, compute_operator(graph, "laplacian", k=2), provenance(None, MODEL))
    transform_files(batch["activations"][1:], other, [tmp_path / "k2.h5"])
    spectra = [batch["laplacian"][0], tmp_path / "k2.h5"]
    with pytest.raises(
        ProvenanceError, match=r"k2\.h5 has operator_sha256 .* but .*batch0000\.h5 has .*one operator"
    ):
        summarize(
            {"activations": batch["activations"], "laplacian": spectra},
            [],
            tmp_path / "s.csv",
            tmp_path / "l.csv",
        )


def test_summary_of_matching_shards_is_written(tmp_path, batch):
    summarize(
        {"activations": batch["activations"], "laplacian": batch["laplacian"]},
        [],
        tmp_path / "s.csv",
        tmp_path / "l.csv",
    )
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["3", "4", "5", "6"]


def test_operator_of_another_model_is_refused(tmp_path, batch, graph):
    other = tmp_path / "other_operator.h5"
    hdf5.write_laplacian_operator(other, compute_operator(graph, "laplacian"), provenance(None, "c" * 64))
    with pytest.raises(
        ProvenanceError,
        match=r"batch0000\.h5 holds activations of model a+\.\.\. but operator .*other_operator\.h5",
    ):
        transform_files(batch["activations"][:1], other, [tmp_path / "out.h5"])
    assert not (tmp_path / "out.h5").exists()


def test_pattern_given_as_operator_is_named(tmp_path, batch, capsys):
    shard = batch["activations"][0]
    assert run("transform", shard, shard, "--out-dir", tmp_path / "out") == 1
    assert error_line(capsys) == (
        f"error: {shard} is a pattern file, expected an operator file "
        "(causal_operator, factorized_causal_operator, laplacian_operator)"
    )


# --------------------------------------------------------------------------- temporaries of killed jobs

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from nsp_pipeline.core.atomic import atomic_output
    with atomic_output(sys.argv[1]) as temporary:
        if sys.argv[2] == "folder":
            temporary.mkdir()
            (temporary / "00003_activations.pdf").write_bytes(b"%PDF partial")
        else:
            temporary.write_bytes(b"partial")
        print(temporary, flush=True)
        time.sleep(120)
    """
)


def writer(path: Path, kind: str = "file") -> tuple[subprocess.Popen, Path]:
    """A process in the middle of an atomic write of ``path``, and its temporary."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), kind], stdout=subprocess.PIPE, text=True
    )
    temporary = Path(process.stdout.readline().strip())
    assert temporary.exists() and temporary.name.startswith(f".{path.name}.{HOST}.")
    return process, temporary


def killed_writer(path: Path, kind: str = "file") -> Path:
    """The temporary of a write of ``path`` whose process was SIGKILLed."""
    process, temporary = writer(path, kind)
    process.kill()
    process.wait()
    assert temporary.exists()
    return temporary


def test_rerun_removes_the_temporary_of_a_killed_transform(tmp_path, batch):
    output = batch["laplacian"][0]
    left = killed_writer(output)
    running, held = writer(output)
    try:
        transform_files(batch["activations"][:1], batch["operator"], [output])
        assert not left.exists()
        assert held.exists()  # a job still writing keeps its temporary
        assert hdf5.read_pattern(output).sample_ids.tolist() == [3, 4]
    finally:
        running.kill()
        running.wait()


def test_rerun_removes_the_folder_of_a_killed_render(tmp_path, batch, monkeypatch):
    monkeypatch.setattr(
        "nsp_pipeline.render.pages.render_pattern", lambda pattern, path, **options: Path(path).touch()
    )
    pdfs = tmp_path / "pdf" / "batch0000"
    left = killed_writer(pdfs, "folder")
    shards = {"activations": batch["activations"][0], "laplacian": batch["laplacian"][0]}
    render_samples(shards, [0], ["00003"], pdfs)
    assert not left.exists()
    assert sorted(path.name for path in pdfs.parent.iterdir()) == ["batch0000"]


def test_only_stale_temporaries_of_this_host_and_output_are_removed(tmp_path):
    output = tmp_path / "spectra.h5"
    dead = killed_writer(output).name.split(".")[-2]
    stale = [
        tmp_path / f".spectra.h5.{HOST}.{dead}.tmp",
        tmp_path / f".spectra.h5.{dead}.tmp",  # the name older versions wrote
        tmp_path / f"..spectra.h5.{HOST}.{dead}.tmp.{HOST}.{dead}.tmp",  # written inside a temporary
    ]
    kept = [
        tmp_path / f".spectra.h5.other-host.{dead}.tmp",
        tmp_path / f".spectra.h5.{HOST}.{os.getppid()}.tmp",  # a running process
        tmp_path / f".spectra.h5.{HOST}.{os.getpid()}.tmp",
        tmp_path / f".other.h5.{HOST}.{dead}.tmp",
        tmp_path / "spectra.h5.tmp",
    ]
    for path in stale + kept:
        path.write_text("x")
    assert sorted(remove_stale_temporaries(output)) == sorted(stale)
    assert all(path.exists() for path in kept)
    with atomic_output(output) as temporary:
        temporary.write_text("done")
    assert output.read_text() == "done"


# --------------------------------------------------------------------------- outputs over inputs


def test_transform_into_the_activations_folder_is_refused(batch, capsys):
    shard = batch["activations"][0]
    before = shard.read_bytes()
    assert run("transform", batch["operator"], shard, "--out-dir", shard.parent) == 1
    assert error_line(capsys) == (
        f"error: output {shard} (spectra of {shard}) would overwrite input {shard} (activations); "
        "write it to another file"
    )
    assert shard.read_bytes() == before


def test_transform_through_a_linked_folder_is_refused(batch, capsys):
    link = batch["root"] / "link"
    link.symlink_to(batch["activations"][0].parent)
    assert run("transform", batch["operator"], batch["activations"][0], "--out-dir", link) == 1
    assert "would overwrite input" in error_line(capsys)


def test_two_shards_of_one_name_are_refused(batch, capsys):
    other = batch["root"] / "elsewhere" / "batch0000.h5"
    other.parent.mkdir()
    other.write_bytes(batch["activations"][1].read_bytes())
    out = batch["root"] / "out"
    assert run("transform", batch["operator"], batch["activations"][0], other, "--out-dir", out) == 1
    assert error_line(capsys) == (
        f"error: output {out / 'batch0000.h5'} (spectra of {other}) would overwrite output "
        f"{out / 'batch0000.h5'} (spectra of {batch['activations'][0]}); write it to another file"
    )
    assert not out.exists()


def test_out_dir_that_is_a_file_and_a_missing_out_dir(batch, capsys):
    shard, not_a_folder = batch["activations"][0], batch["root"] / "notes.txt"
    not_a_folder.write_text("notes")
    assert run("transform", batch["operator"], shard, "--out-dir", not_a_folder) == 1
    assert (
        error_line(capsys)
        == f"error: --out-dir {not_a_folder} is a file; expected a folder (created if missing)"
    )
    assert not_a_folder.read_text() == "notes"
    missing = batch["root"] / "new" / "deeper"
    assert run("transform", batch["operator"], shard, "--out-dir", missing) == 0
    assert hdf5.read_pattern(missing / shard.name).domain == "laplacian"


def test_render_onto_its_input_is_refused(batch, capsys):
    spectrum = batch["laplacian"][0]
    before = spectrum.read_bytes()
    assert run("render", spectrum, spectrum, "--sample", 3) == 1
    assert error_line(capsys) == (
        f"error: output {spectrum} (PDF) would overwrite input {spectrum} (pattern); write it to another file"
    )
    assert run("render", spectrum, batch["root"], "--sample", 3) == 1
    assert (
        error_line(capsys)
        == f"error: output {batch['root']} (PDF) is an existing folder; expected a file name"
    )
    assert spectrum.read_bytes() == before


def test_summary_onto_its_input_is_refused(batch, capsys):
    shard = batch["activations"][0]
    before = shard.read_bytes()
    assert run("summarize", shard, "--out", shard, "--layers", batch["root"] / "l.csv") == 1
    assert "would overwrite input" in error_line(capsys)
    assert shard.read_bytes() == before


@pytest.mark.parametrize(
    "argv",
    [
        lambda root: ["build-graph", root / "model.pt", root / "model.pt"],
        lambda root: ["compute-operator", root / "graph.h5", root / "graph.h5"],
        lambda root: ["compute-operator", root / "graph.h5", root / "model.pt", "--model", root / "model.pt"],
    ],
)
def test_other_stages_never_write_over_their_inputs(tmp_path, capsys, argv):
    for name in ("model.pt", "graph.h5"):
        (tmp_path / name).write_text("precious")
    assert run(*argv(tmp_path)) == 1
    assert "would overwrite input" in error_line(capsys)
    assert all((tmp_path / name).read_text() == "precious" for name in ("model.pt", "graph.h5"))


def test_output_below_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(
        NotADirectoryError, match=r"output .*file/out\.h5 \(spectra\) cannot be written: .*file is a file"
    ):
        check_outputs([], [("spectra", tmp_path / "file" / "out.h5")])
