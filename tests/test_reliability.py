"""Reliability: bad inputs, killed jobs, reruns and untrusted files.

- Every bad input of a table is tried through the command line in-process (``cli.main`` returns 1
  and prints one ``error: ...`` line) or, for config errors, through ``snakemake``, which stops
  while it reads the config, before any job; the message must name the offending key, file or
  layer and what was expected, and no output (nor any ``.tmp`` file) may be left behind.
- A workflow whose activations job is SIGKILLed in the middle of its writes leaves only outputs
  that read back complete (checksums verified); rerunning ``snakemake`` finishes the work.
- Two runs of the workflow (the second one killed and rerun) give bit-identical HDF5 datasets,
  tables and PDFs.
- Pickled code runs only for ``trusted: true`` entries; YAML tags for Python objects are refused;
  model and dataset names cannot lead outputs out of ``results/``.

The workflow runs on a tiny user model (290 neurons) so that the module stays fast.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from cli_helpers import error_line, run

from nsp_pipeline.core.atomic import atomic_output
from nsp_pipeline.io import hdf5
from nsp_pipeline.io.hdf5 import read_averages
from nsp_pipeline.model.artifact import build_model, load_model

pytest.importorskip("snakemake")

REPO = Path(__file__).resolve().parents[1]

TINY_MODEL = """\
import torch
from torch import nn


class Tiny(nn.Module):
    input_shape = (1, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(72, 10)

    def forward(self, x):
        return self.fc(self.flatten(self.relu(self.conv(x))))


class Log(nn.Module):
    def forward(self, x):
        return torch.log(x)


class LogNet(Tiny):
    '''-inf activations wherever a pixel is 0.'''

    def __init__(self):
        super().__init__()
        self.log = Log()

    def forward(self, x):
        return super().forward(self.log(x))


class Normed(Tiny):
    '''A LayerNorm, which has no neuron-edge rule.'''

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(72)

    def forward(self, x):
        return self.fc(self.norm(self.flatten(self.relu(self.conv(x)))))
"""

TINY = {"module": "tiny.py", "class": "Tiny"}
DIGITS = {"source": "digits", "split": "test"}
WORKFLOW_CONFIG = {
    "models": {"tiny": TINY},
    "datasets": {"digits": DIGITS},
    "analyses": [{"model": "tiny", "dataset": "digits"}],
    "samples": {"count": 3},
    "batching": {"samples_per_job": 3},
    "render": {"scale": "layernorm", "cmap": "viridis", "samples": {"count": 1}},
}
MARKER = "code_ran"

#: Imported by every Python process started with PYTHONPATH=<its folder>: the process whose
#: write reaches PAUSE_BEFORE is stopped just before renaming its complete temporary file into
#: place, and says so in the file PAUSED, so that the test can kill it in the middle of its work.
PAUSE_HOOK = """\
import os
import time

_target = os.environ.get("PAUSE_BEFORE")
if _target:
    _replace = os.replace

    def replace(source, destination, **kwargs):
        if str(destination).endswith(_target):
            with open(os.environ["PAUSED"], "w") as handle:
                handle.write(str(os.getpid()))
            time.sleep(600)
        return _replace(source, destination, **kwargs)

    os.replace = replace
"""
PAUSE_BEFORE = "activations/batch0000.h5"  # the activations job's shard (the 3 samples are one batch)


class Evil:
    """Unpickling it creates a file: the stand-in for code hidden in a data file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def write_evil_pickle(path: Path) -> Path:
    """A ``torch.save`` file whose unpickling creates ``<its folder>/code_ran``; returns that path."""
    torch.save(Evil(path.parent / MARKER), path)
    return path.parent / MARKER


def new_workdir(directory: Path, config: dict | str) -> Path:
    """A folder with tiny.py and config.yaml (a text config: MARKER_PATH is the folder's marker)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tiny.py").write_text(TINY_MODEL)
    if isinstance(config, str):
        text = config.replace("MARKER_PATH", str(directory / MARKER))
    else:
        text = yaml.safe_dump(config, sort_keys=False)
    (directory / "config.yaml").write_text(text)
    return directory


def snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """Start Snakemake in a session of its own (see :func:`stop`); its output is piped."""
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args,
    ]  # fmt: skip
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )


def stop(process: subprocess.Popen) -> None:
    """SIGKILL a process started by :func:`snakemake` and every job it started, if still running."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def finished(process: subprocess.Popen, timeout: float = 300) -> str:
    """The output of a Snakemake run, once it has ended (stopped if it runs past ``timeout``)."""
    try:
        return process.communicate(timeout=timeout)[0]
    finally:
        if process.returncode is None:
            stop(process)


def completed(workdir: Path, *args: str) -> str:
    process = snakemake(workdir, *args)
    output = finished(process)
    assert process.returncode == 0, output[-5000:]
    return output


def is_temporary(path: Path) -> bool:
    """A file being written by :func:`nsp_pipeline.core.atomic.atomic_output` (or left by a killed job)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def output_files(workdir: Path) -> list[Path]:
    """Every output in ``results/`` (no logs, benchmarks or hidden files), relative to ``workdir``."""
    results = workdir / "results"
    skip = {results / "logs", results / "benchmarks"}
    return sorted(
        path.relative_to(workdir)
        for path in results.rglob("*")
        if path.is_file() and not path.name.startswith(".") and not any(f in path.parents for f in skip)
    )


def read_back(path: Path) -> None:
    """Read an output completely; raises if it is truncated, corrupt or not what its name says."""
    if path.suffix == ".h5":
        with h5py.File(path, "r", locking=False) as file:
            schema = str(file.attrs.get("schema", ""))
        if schema == "nsp-pipeline/dataset_summary":
            read_averages(path, "activations")
        elif schema == "nsp-pipeline/sweep_summary":
            hdf5_datasets(path)
        else:
            kind = hdf5.read_header(path)["kind"]
            readers = {
                "graph": hdf5.read_graph,
                "pattern": hdf5.read_pattern,
                "graph_summary": hdf5.read_graph_summary,
            }
            readers.get(kind, hdf5.read_operator)(path)
    elif path.suffix == ".pt":
        load_model(path)
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".csv":
        assert list(csv.DictReader(path.open()))
    elif path.suffix == ".pdf":
        assert path.read_bytes().rstrip().endswith(b"%%EOF")
    else:
        raise AssertionError(f"unexpected output {path}")


def hdf5_datasets(path: Path) -> dict[str, tuple]:
    """Every dataset of an HDF5 file: dtype, shape and raw bytes (strings as text)."""
    found = {}

    def collect(name, item):
        if isinstance(item, h5py.Dataset):
            if h5py.check_string_dtype(item.dtype) is not None:
                data = item.asstr()[()]
                found[name] = ("str", item.shape, np.asarray(data, dtype=object).tolist())
            else:
                found[name] = (item.dtype.str, item.shape, np.ascontiguousarray(item[()]).tobytes())

    with h5py.File(path, "r", locking=False) as file:
        file.visititems(collect)
        found["@content_sha256"] = file.attrs.get("content_sha256")
    return found


# --------------------------------------------------------------------------- workflow runs
#
# Two runs start together: a plain one, and one whose activations job is held just before it
# renames its second file into place, then killed with all of Snakemake, and rerun. Their
# outputs must agree bit for bit. The tests that use them come first and last in the module,
# so that the runs go on in the background while the tests in between run.


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> dict:
    """Both workflow runs, started; whatever still runs at the end of the module is stopped."""
    root = tmp_path_factory.mktemp("workflow")
    plain = new_workdir(root / "plain", WORKFLOW_CONFIG)
    held = new_workdir(root / "killed", WORKFLOW_CONFIG)
    (root / "hook").mkdir()
    (root / "hook" / "sitecustomize.py").write_text(PAUSE_HOOK)
    paused = root / "paused"
    hook = {"PYTHONPATH": str(root / "hook"), "PAUSE_BEFORE": PAUSE_BEFORE, "PAUSED": str(paused)}
    runs = {
        "plain": (plain, snakemake(plain)),
        "held": (held, snakemake(held, env=os.environ | hook)),
        "paused": paused,
        "more": [],
    }
    yield runs
    for process in [runs["plain"][1], runs["held"][1], *runs["more"]]:
        stop(process)


@pytest.fixture(scope="module")
def workflow(launched) -> Path:
    """The plain run, finished."""
    workdir, process = launched["plain"]
    output = finished(process)
    assert process.returncode == 0, output[-5000:]
    return workdir


@pytest.fixture(scope="module")
def killed(launched) -> dict:
    """The held run, SIGKILLed (Snakemake and its jobs) while its activations job writes.

    What is on disk then is recorded: every output, and ``None`` if it reads back or the error it
    raises. Then the lock the killed Snakemake left is removed, and the rerun is started.
    """
    workdir, process = launched["held"]
    paused = launched["paused"]
    deadline = time.monotonic() + 300
    while not (paused.exists() and paused.read_text()) and process.poll() is None:
        assert time.monotonic() < deadline, "the activations job never reached its write"
        time.sleep(0.05)
    if process.poll() is not None:
        pytest.fail("the run ended before its activations job was held:\n" + finished(process)[-5000:])
    worker = int(paused.read_text())
    stop(process)
    try:
        os.kill(worker, signal.SIGKILL)  # in case the job runs in a session of its own
    except ProcessLookupError:
        pass
    outputs = {}
    for path in output_files(workdir):
        try:
            read_back(workdir / path)
            outputs[str(path)] = None
        except Exception as error:  # recorded for the test to report
            outputs[str(path)] = f"{type(error).__name__}: {error}"
    leftovers = sorted(path.name for path in (workdir / "results").rglob("*") if is_temporary(path))
    completed(workdir, "--unlock")
    rerun = snakemake(workdir, "--rerun-incomplete")
    launched["more"].append(rerun)
    return {
        "workdir": workdir,
        "returncode": process.returncode,
        "outputs": outputs,
        "leftovers": leftovers,
        "rerun": rerun,
    }


@pytest.fixture(scope="module")
def rerun(killed) -> Path:
    """The killed run, rerun to completion."""
    output = finished(killed["rerun"])
    assert killed["rerun"].returncode == 0, output[-5000:]
    return killed["workdir"]


@pytest.mark.slow
@pytest.mark.workflow
def test_killed_job_leaves_only_complete_outputs(killed):
    assert killed["returncode"] == -signal.SIGKILL
    outputs = killed["outputs"]
    unreadable = {path: error for path, error in outputs.items() if error is not None}
    assert unreadable == {}
    # complete under its temporary name, never renamed
    assert "results/tiny/digits/activations/batch0000.h5" not in outputs
    assert len(killed["leftovers"]) == 1 and killed["leftovers"][0].startswith(".batch0000.h5.")
    assert {"results/models/tiny/model.pt", "results/models/tiny/model.json"} <= outputs.keys()
    assert not any(path.startswith("results/sweep") for path in outputs)


def test_folder_output_appears_complete_or_not_at_all(tmp_path):
    """A folder of outputs (the class averages) is filled under a temporary name, then renamed."""
    final = tmp_path / "averages"
    final.mkdir()
    (final / "old.pdf").write_text("old")
    with pytest.raises(RuntimeError), atomic_output(final) as folder:
        folder.mkdir()
        (folder / "new.pdf").write_text("new")
        raise RuntimeError("interrupted")
    assert [path.name for path in tmp_path.iterdir()] == ["averages"]
    assert [path.name for path in final.iterdir()] == ["old.pdf"]
    with atomic_output(final) as folder:
        folder.mkdir()
        (folder / "new.pdf").write_text("new")
    assert [path.name for path in tmp_path.iterdir()] == ["averages"]
    assert [path.name for path in final.iterdir()] == ["new.pdf"]


# --------------------------------------------------------------------------- config errors (snakemake)

DELETE = object()


def config_with(**sections) -> dict:
    """The workflow config with whole top-level sections replaced (or deleted)."""
    config = copy.deepcopy(WORKFLOW_CONFIG)
    for key, value in sections.items():
        if value is DELETE:
            del config[key]
        else:
            config[key] = value
    return config


#: A config whose loading, by yaml.load or yaml.unsafe_load, would create the file MARKER_PATH.
PYTHON_TAG_CONFIG = """\
models: !!python/object/apply:pathlib.Path.touch ["MARKER_PATH"]
datasets: {digits: {source: digits}}
analyses: [{model: tiny, dataset: digits}]
"""

#: Bad configs run through Snakemake: (id, config, fragments of the message).
CONFIG_ERRORS = [
    (
        "unknown key",
        config_with(sampels={"count": 3}),
        ["config.yaml: sampels: unknown key; expected one of ['analyses',", "(did you mean 'samples'?)"],
    ),
    (
        "unknown key in a model",
        config_with(models={"tiny": {**TINY, "wieghts": "w.pt"}}),
        ["models.tiny.wieghts: unknown key", "(did you mean 'weights'?)"],
    ),
    (
        "wrong type",
        config_with(batching={"samples_per_job": "many"}),
        ["batching.samples_per_job: 'many' is not of type 'integer'"],
    ),
    ("missing required key", config_with(analyses=DELETE), ["config.yaml: analyses: missing"]),
    (
        "empty sample list",
        config_with(samples={"indices": []}),
        ["samples.indices: [] should be non-empty"],
    ),
    (
        "empty sample range",
        config_with(samples={"range": [5, 5]}),
        ["config: samples for dataset 'digits': samples.range is [5, 5]; expected 0 <= start"],
    ),
    (
        "data file missing",
        config_with(datasets={"digits": {"source": "array", "path": "nowhere.npy"}}),
        ["config: datasets.digits: dataset 'path' nowhere.npy does not exist"],
    ),
    (
        "unknown model name",
        config_with(analyses=[{"model": "tiyn", "dataset": "digits"}]),
        ["config.yaml: analyses[0].model: 'tiyn' is not one of the models ['tiny']"],
    ),
    (
        "unknown dataset name",
        config_with(analyses=[{"model": "tiny", "dataset": ["digits", "digts"]}]),
        ["config.yaml: analyses[0].dataset: 'digts' is not one of the datasets ['digits']"],
    ),
    (
        "unknown architecture",
        config_with(models={"tiny": {"architecture": "resnet99"}}),
        ["models.tiny.architecture: 'resnet99' is not one of ['digits_cnn',"],
    ),
    (
        "unknown transform type",
        config_with(transforms=["standard", "fourier"]),
        ["transforms[1]: 'fourier' is not one of ['standard', 'laplacian']"],
    ),
    (
        "unknown colour scale",
        config_with(render={"scale": "rainbow"}),
        ["render.scale: 'rainbow' is not one of ['layerscale', 'layernorm',"],
    ),
    (
        "colormap matplotlib lacks",
        config_with(render={"cmap": "not_a_cmap"}),
        ["config.yaml: render.cmap: 'not_a_cmap' is not a matplotlib colormap"],
    ),
    (
        "pickle without trusted",
        config_with(models={"tiny": {"pickle": "evil.pt", "input_shape": [1, 8, 8]}}),
        ["config.yaml: models.tiny: a pickled model (evil.pt) without 'trusted: true'", "unpickling runs"],
    ),
    (
        "model name leaving results/",
        config_with(models={"../../escape": TINY}, analyses=[{"model": "../../escape", "dataset": "digits"}]),
        ["models: entry name '../../escape' does not match '^[A-Za-z0-9][A-Za-z0-9_-]*$'"],
    ),
    (
        "dataset name leaving results/",
        config_with(datasets={"/tmp/escape": DIGITS}, analyses=[{"model": "tiny", "dataset": "/tmp/escape"}]),
        ["datasets: entry name '/tmp/escape' does not match '^[A-Za-z0-9][A-Za-z0-9_-]*$'"],
    ),
    ("YAML tag for a Python object", PYTHON_TAG_CONFIG, ["Config file is not valid JSON or YAML"]),
]


@pytest.fixture(scope="module")
def config_runs(tmp_path_factory) -> dict[str, tuple[Path, int, str]]:
    """Every bad config given to a real ``snakemake`` run (not a dry run), all at once."""
    root = tmp_path_factory.mktemp("configs")

    def attempt(index: int) -> tuple[Path, int, str]:
        workdir = new_workdir(root / f"case{index}", CONFIG_ERRORS[index][1])
        write_evil_pickle(workdir / "evil.pt")
        process = snakemake(workdir)
        output = finished(process)
        return workdir, process.returncode, output

    with ThreadPoolExecutor(max_workers=len(CONFIG_ERRORS)) as pool:
        runs = list(pool.map(attempt, range(len(CONFIG_ERRORS))))
    return {case[0]: run for case, run in zip(CONFIG_ERRORS, runs, strict=True)}


@pytest.mark.workflow
@pytest.mark.parametrize(("case", "expected"), [(case, expected) for case, _, expected in CONFIG_ERRORS])
def test_bad_config_stops_snakemake_before_any_job(config_runs, case, expected):
    workdir, returncode, output = config_runs[case]
    assert returncode == 1, output[-3000:]
    for fragment in expected:
        assert fragment in output, f"{fragment!r} not in:\n{output[-3000:]}"
    assert "Building DAG of jobs" not in output
    assert not (workdir / "results").exists()
    assert not (workdir / MARKER).exists()


# --------------------------------------------------------------------------- bad inputs (command line)


@pytest.fixture(scope="module")
def built(workflow, tmp_path_factory) -> dict[str, Path]:
    """The workflow's files, and the graph and Laplacian operator of a second model (seed 1)."""
    models = workflow / "results" / "models" / "tiny"
    other = tmp_path_factory.mktemp("other")
    argv, _ = export(other, {**TINY, "seed": 1})
    assert run(*argv) == 0
    assert run("build-graph", other / "m.pt", other / "graph.h5") == 0
    operator = ("compute-operator", other / "graph.h5", other / "laplacian.h5", "--transform", "laplacian")
    assert run(*operator) == 0
    return {
        "model": models / "model.pt",
        "graph": models / "graph.h5",
        "standard": models / "operator_standard.h5",
        "laplacian": models / "operator_laplacian.h5",
        "activations": workflow / "results" / "tiny" / "digits" / "activations" / "batch0000.h5",
        "other_model": other / "m.pt",
        "other_laplacian": other / "laplacian.h5",
    }


def write_config(folder: Path, models: dict | None = None, datasets: dict | None = None) -> Path:
    """A complete config (the command line checks it as the workflow does) holding these entries."""
    models, datasets = models or {"tiny": TINY}, datasets or {"digits": DIGITS}
    analyses = [{"model": next(iter(models)), "dataset": next(iter(datasets))}]
    new_workdir(folder, {"models": models, "datasets": datasets, "analyses": analyses})
    return folder / "config.yaml"


def export(folder: Path, entry: dict) -> tuple[list, list[Path]]:
    """export-model of ``entry`` (module paths relative to ``folder``, which holds tiny.py)."""
    config = write_config(folder, models={"m": entry})
    model, metadata = folder / "m.pt", folder / "m.json"
    argv = ["export-model", "--config", config, "--model", "m", "--out", model, "--metadata", metadata]
    return argv, [model, metadata]


def exported(folder: Path, class_name: str) -> Path:
    argv, (model, _) = export(folder, {**TINY, "class": class_name})
    assert run(*argv) == 0
    return model


def extract(folder: Path, model: Path, spec: dict) -> tuple[list, list[Path]]:
    """extract-activations of samples 0 and 1 of the dataset ``spec``."""
    config = write_config(folder / "config", datasets={"data": spec})
    out = folder / "out" / "activations.h5"
    argv = ["extract-activations", model, "--config", config, "--dataset", "data", "--samples", 0, 1]
    return [*argv, "--out", out], [out]


def array_file(folder: Path, values: np.ndarray, name: str = "inputs.npy") -> dict:
    np.save(folder / name, values)
    return {"source": "array", "path": str(folder / name)}


def transform_with(folder: Path, operator: Path, activations: Path) -> tuple[list, list[Path]]:
    out = folder / "out"
    return ["transform", operator, activations, "--out-dir", out], [out / activations.name]


def corrupt_copy(source: Path, folder: Path, change) -> Path:
    path = folder / source.name
    path.write_bytes(source.read_bytes())
    change(path)
    return path


def truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def flip_a_value(path: Path) -> None:
    with h5py.File(path, "r+", locking=False) as file:
        file["layers/001"][0, 0, 0, 0] += 1.0


def with_nan(folder: Path, source: Path) -> Path:
    """A valid activations file (checksum and all) with one NaN in layer 'relu'."""
    pattern = hdf5.read_pattern(source)
    values = pattern.values.copy()
    values[0, pattern.layout.offsets[2]] = np.nan
    hdf5.write_pattern(
        folder / source.name, pattern.with_values(values, "activations"), hdf5.read_provenance(source)
    )
    return folder / source.name


def tiny_weights(folder: Path, change) -> dict:
    """A ``weights`` entry for Tiny whose state_dict ``change`` has edited."""
    (folder / "tiny.py").write_text(TINY_MODEL)
    state = build_model(TINY, base_dir=folder).state_dict()
    change(state)
    torch.save(state, folder / "w.pt")
    return {**TINY, "weights": "w.pt"}


def image_folder(folder: Path) -> dict:
    from PIL import Image

    images = folder / "images"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(images / "a.png")
    (images / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really an image")
    return {"source": "images", "path": str(images)}


def bad_array(values: np.ndarray, labels: np.ndarray | None = None):
    def make(folder: Path, files: dict):
        spec = array_file(folder, values)
        if labels is not None:
            spec["labels"] = array_file(folder, labels, "labels.npy")["path"]
        return extract(folder, files["model"], spec)

    return make


def raw_file(content: bytes, suffix: str):
    def make(folder: Path, files: dict):
        (folder / f"bad{suffix}").write_bytes(content)
        return extract(folder, files["model"], {"source": "array", "path": str(folder / f"bad{suffix}")})

    return make


def truncated_npy(folder: Path, files: dict):
    spec = array_file(folder, np.ones((5, 1, 8, 8)))
    truncate(Path(spec["path"]))
    return extract(folder, files["model"], spec)


def evil_entry(entry: dict):
    """Export of a model entry that names evil.pt, a pickle that would create a marker file."""

    def make(folder: Path, files: dict):
        marker = write_evil_pickle(folder / "evil.pt")
        argv, outputs = export(folder, entry)
        return argv, [*outputs, marker]

    return make


def pickled_artifact(folder: Path, files: dict):
    marker = write_evil_pickle(folder / "evil.pt")
    return ["build-graph", folder / "evil.pt", folder / "graph.h5"], [folder / "graph.h5", marker]


def python_tag_config(folder: Path, files: dict):
    new_workdir(folder, PYTHON_TAG_CONFIG)
    model, metadata = folder / "m.pt", folder / "m.json"
    argv = ["export-model", "--config", folder / "config.yaml", "--model", "tiny", "--out", model]
    return [*argv, "--metadata", metadata], [model, metadata, folder / MARKER]


NAN_INPUTS = np.zeros((5, 1, 8, 8))  # extract() reads samples 0 and 1 only: both are bad, 3 is not read
NAN_INPUTS[1, 0, 2, 2], NAN_INPUTS[0, 0, 0, 0], NAN_INPUTS[3, 0, 0, 0] = np.nan, np.inf, np.nan

#: Bad inputs given to the command line: (id, make(folder, files) -> (argv, paths that must not
#: exist afterwards), fragments of the message).
CLI_ERRORS = [
    # ----- model
    (
        "module file missing",
        lambda folder, files: export(folder, {**TINY, "module": "nowhere.py"}),
        ["model module 'nowhere.py' class 'Tiny': 'module' file", "nowhere.py does not exist"],
    ),
    (
        "class missing",
        lambda folder, files: export(folder, {**TINY, "class": "Tinny"}),
        ["has no nn.Module class 'Tinny'; it defines ['Log', 'LogNet', 'Normed', 'Tiny']"],
    ),
    (
        "weights: missing and unexpected keys",
        lambda folder, files: export(
            folder, tiny_weights(folder, lambda state: state.update({"head.weight": state.pop("fc.bias")}))
        ),
        ["w.pt does not fit Tiny: missing keys ['fc.bias'], unexpected keys ['head.weight']"],
    ),
    (
        "weights: shape mismatch",
        lambda folder, files: export(
            folder, tiny_weights(folder, lambda state: state.update({"fc.weight": torch.zeros(10, 71)}))
        ),
        ["w.pt does not fit Tiny", "shape mismatches ['fc.weight: file (10, 71), model (10, 72)']"],
    ),
    (
        "pickled model without trusted: true",
        evil_entry({"pickle": "evil.pt", "input_shape": [1, 8, 8]}),
        ["models.m: a pickled model (evil.pt) without 'trusted: true'", "unpickling runs whatever code"],
    ),
    (
        "weights file holding code",
        evil_entry({"architecture": "digits_cnn", "weights": "evil.pt"}),
        ["evil.pt cannot be loaded as a state_dict with weights_only=True", "expected tensors"],
    ),
    (
        "model artifact holding code",
        pickled_artifact,
        ["evil.pt cannot be loaded as a model artifact with weights_only=True"],
    ),
    (
        "input shape the model rejects",
        lambda folder, files: export(folder, {**TINY, "input_shape": [1, 5, 5]}),
        ["class 'Tiny': the model rejects inputs of shape (1, 5, 5)"],
    ),
    (
        "unsupported layer",
        lambda folder, files: (
            ["build-graph", exported(folder, "Normed"), folder / "graph.h5"],
            [folder / "graph.h5"],
        ),
        ["layer 4 'norm' (LayerNorm): no neuron-edge rule for LayerNorm", "supported_operations()"],
    ),
    # ----- data
    (
        "data file missing",
        lambda folder, files: extract(
            folder, files["model"], {"source": "array", "path": str(folder / "nowhere.npy")}
        ),
        ["dataset 'path'", "nowhere.npy does not exist"],
    ),
    (
        "corrupt .npy",
        raw_file(b"not an array", ".npy"),
        [
            "bad.npy cannot be read as .npy data (it has no NumPy header)",
            "expected an array saved by numpy.save",
        ],
    ),
    ("truncated .npy", truncated_npy, ["inputs.npy cannot be read as .npy data"]),
    ("corrupt .h5", raw_file(b"not an HDF5 file", ".h5"), ["bad.h5 cannot be read as .h5 data"]),
    (
        "corrupt image",
        lambda folder, files: extract(folder, files["model"], image_folder(folder)),
        ["image", "b.png cannot be read", "expected a complete .png/.jpg/.jpeg/.bmp/.gif image"],
    ),
    (
        "inputs of one dimension",
        bad_array(np.zeros(5)),
        ["inputs have shape (5,); expected (N, *sample_shape)"],
    ),
    (
        "inputs with 3 channels",
        bad_array(np.zeros((5, 3, 8, 8))),
        ["has samples of shape (3, 8, 8); the model expects (1, 8, 8)"],
    ),
    (
        "labels length mismatch",
        bad_array(np.zeros((5, 1, 8, 8)), labels=np.zeros(4, dtype=int)),
        ["labels have shape (4,); expected (5,), one per input"],
    ),
    (
        "NaN and Inf inputs",
        bad_array(NAN_INPUTS),
        ["2 samples contain NaN or Inf (positions [0, 1]); expected finite inputs"],
    ),
    (
        "NaN and Inf activations",
        lambda folder, files: extract(folder, exported(folder, "LogNet"), DIGITS),
        ["gives NaN or Inf activations for samples [0, 1]", "in layers ['log', 'conv', 'relu', 'flatten', "],
    ),
    # ----- HDF5 intermediates
    (
        "truncated operator",
        lambda folder, files: transform_with(
            folder, corrupt_copy(files["laplacian"], folder, truncate), files["activations"]
        ),
        ["operator_laplacian.h5 is corrupt or truncated", "delete it and regenerate it"],
    ),
    (
        "activations changed after writing",
        lambda folder, files: transform_with(
            folder, files["standard"], corrupt_copy(files["activations"], folder, flip_a_value)
        ),
        ["batch0000.h5 is corrupt or truncated: content checksum", "does not match the stored"],
    ),
    (
        "NaN in an activations file",
        lambda folder, files: transform_with(
            folder, files["standard"], with_nan(folder, files["activations"])
        ),
        ["batch0000.h5 holds NaN or Inf activations in layers ['relu']; expected finite activations"],
    ),
    (
        "activations of another model",
        lambda folder, files: transform_with(folder, files["other_laplacian"], files["activations"]),
        ["batch0000.h5 holds activations of model", "but operator", "laplacian.h5 belongs to model"],
    ),
    (
        "operator of another model's graph",
        lambda folder, files: (
            ["compute-operator", files["graph"], folder / "op.h5", "--model", files["other_model"]],
            [folder / "op.h5"],
        ),
        ["m.pt (checksum", "is not the model of graph", "graph.h5"],
    ),
    # ----- size
    (
        "Laplacian too large for memory",
        lambda folder, files: (
            [
                "compute-operator",
                files["graph"],
                folder / "op.h5",
                "--transform",
                "laplacian",
                "--max-nodes",
                100,
            ],
            [folder / "op.h5"],
        ),
        [
            "dense eigendecomposition of a 290 x 290 matrix",
            "above the limit of 100 nodes",
            "compute only the k lowest frequencies (k=...), or use the 'standard' transform",
        ],
    ),
    # ----- config
    ("YAML tag for a Python object", python_tag_config, ["is not valid YAML", "python/object/apply"]),
]


@pytest.mark.slow  # the files it corrupts come from the workflow run
@pytest.mark.workflow
@pytest.mark.parametrize(
    ("make", "expected"), [pytest.param(make, expected, id=case) for case, make, expected in CLI_ERRORS]
)
def test_bad_input_gives_one_clear_error_and_no_output(built, tmp_path, capsys, make, expected):
    argv, absent = make(tmp_path, built)
    capsys.readouterr()
    assert run(*argv) == 1
    line = error_line(capsys)
    for fragment in expected:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    for path in absent:
        assert not path.exists(), path
    assert list(tmp_path.rglob("*.tmp")) == []


# --------------------------------------------------------------------------- security


def test_trusted_pickle_runs_its_code(tmp_path):
    """The pickles above are refused before unpickling: trusted, the same file does run code."""
    marker = write_evil_pickle(tmp_path / "evil.pt")
    argv, _ = export(tmp_path, {"pickle": "evil.pt", "trusted": True, "input_shape": [1, 8, 8]})
    assert run(*argv) == 1
    assert marker.exists()


@pytest.mark.slow
@pytest.mark.workflow
def test_rerun_after_kill_completes(rerun, workflow):
    assert output_files(rerun) == output_files(workflow)
    for path in output_files(rerun):
        read_back(rerun / path)
    with open(rerun / "results" / "tiny" / "digits" / "summary.csv") as handle:
        assert [row["sample"] for row in csv.DictReader(handle)] == ["00000", "00001", "00002"]


@pytest.mark.slow
@pytest.mark.workflow
def test_reruns_are_bit_identical(workflow, rerun):
    """Every HDF5 dataset, checksum, table, PDF and model artifact of the two runs agrees bit for bit."""
    compared = pdfs = 0
    for path in output_files(workflow):
        if path.suffix == ".h5":
            first, second = hdf5_datasets(workflow / path), hdf5_datasets(rerun / path)
            assert first.keys() == second.keys(), path
            differing = [name for name in first if first[name] != second[name]]
            assert differing == [], f"{path}: {differing} differ between runs"
            compared += 1
        elif path.suffix in (".pt", ".csv", ".pdf"):  # PDFs carry no timestamp
            assert (workflow / path).read_bytes() == (rerun / path).read_bytes(), path
            pdfs += path.suffix == ".pdf"
    # graph, its analytics, 2 operators, a shard per pattern (3), dataset and sweep summaries
    assert compared == 9
    assert pdfs > 0
