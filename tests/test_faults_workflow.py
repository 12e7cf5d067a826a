"""Configuration and workflow-state faults: each gives a clear refusal, reruns what it must, and no more.

- Config files are read with bounds (:func:`nsp_pipeline.io.config.read_yaml`): a "billion laughs"
  file, one that is too large, too deeply nested or holds a recursive alias is refused at once,
  naming the file, by the library, the command line and the workflow alike; a key given twice in the
  workflow's own ``config.yaml`` stops it too.
- What reruns: a *fabricated* finished run (every output made empty, then ``snakemake --touch
  --forceall``, which records the params and inputs of every job as a real run does) is dry-run
  with a changed config or changed files, and the planned jobs are compared with what depends on
  the change: keys in another order or comments rerun nothing; the Laplacian's ``k`` reruns only the
  Laplacian side; render settings recompute no spectrum; an image rewritten in place reruns its own
  batch; a data or model file replaced by an older one reruns what reads it; a deleted shard or PDF
  is made again.
- End to end (slow): a corrupt shard is named by the job that reads it; deleting it as the message
  says and rerunning regenerates it and the outputs the failed job removed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from cli_helpers import error_line, run
from PIL import Image
from test_workflow_rules import of_rule, planned_jobs

from nsp_pipeline.io import hdf5
from nsp_pipeline.io.config import MAX_CONFIG_BYTES, MAX_CONFIG_NODES, ConfigError, read_yaml, validate_config

pytest.importorskip("snakemake")

REPO = Path(__file__).resolve().parents[1]

BASE = """\
models: {net: {architecture: digits_cnn, seed: 1}}
datasets: {digits: {source: digits, split: test}}
analyses: [{model: net, dataset: digits}]
samples: {count: 2}
"""


def list_bomb(levels: int = 9) -> str:
    """A "billion laughs" document of lists: ``levels`` aliases deep, 9 of the previous in each."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def mapping_bomb(levels: int = 9) -> str:
    """The same of mappings (Snakemake's own reader would copy it without end)."""
    lines = ["m0: &m0 {" + ", ".join(f"k{j}: lol" for j in range(9)) + "}"]
    for i in range(1, levels):
        lines.append(f"m{i}: &m{i} {{" + ", ".join(f"k{j}: *m{i - 1}" for j in range(9)) + "}")
    return "\n".join(lines) + "\n"


def snakemake(workdir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Snakemake on the workflow in ``workdir`` (its ``config.yaml``), however it ends."""
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--cores", "2", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def output_of(result: subprocess.CompletedProcess, returncode: int = 0) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == returncode, output[-3000:]
    return output


# --------------------------------------------------------------------------- bounded YAML


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (list_bomb(), f"holds more than {MAX_CONFIG_NODES} values once its aliases (*name) are expanded"),
        (mapping_bomb(), f"holds more than {MAX_CONFIG_NODES} values once its aliases (*name) are expanded"),
        ("a: &a [1, *a]\n", "holds infinitely many (an alias inside the value it names) values"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nests its lists or mappings too deeply to be read"),
        ("a: [" + "1, " * (MAX_CONFIG_BYTES // 3) + "]\n", f"is larger than {MAX_CONFIG_BYTES} bytes"),
    ],
    ids=["list bomb", "mapping bomb", "recursive alias", "deep nesting", "huge file"],
)
def test_oversized_yaml_is_refused_at_once_naming_the_file(tmp_path, text, fragment):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    assert str(info.value).startswith(f"config file {path} ") and fragment in str(info.value)


def test_aliases_within_the_bound_still_work(tmp_path):
    path = tmp_path / "config.yaml"
    levels = 4  # 9**4 = 6,561 values
    path.write_text(
        list_bomb(levels) + "base: &base {cmap: viridis}\nrender: {<<: *base, scale: layernorm}\n"
    )
    config = read_yaml(path)
    assert np.asarray(config[f"l{levels - 1}"]).size == 9**levels
    assert config["render"] == {"cmap": "viridis", "scale": "layernorm"}


def test_cli_refuses_an_alias_bomb(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(BASE + mapping_bomb())
    argv = ["export-model", "--config", path, "--model", "net", "--out", tmp_path / "m.pt"]
    assert run(*argv, "--metadata", tmp_path / "m.json") == 1
    assert error_line(capsys).startswith(
        f"error: config file {path} holds more than {MAX_CONFIG_NODES} values"
    )
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.workflow
@pytest.mark.parametrize("bomb", [list_bomb, mapping_bomb], ids=["lists", "mappings"])
def test_alias_bomb_in_config_yaml_stops_snakemake_at_once(tmp_path, bomb):
    (tmp_path / "config.yaml").write_text(BASE + bomb())
    output = output_of(snakemake(tmp_path, "--dry-run", timeout=120), returncode=1)
    assert f"config file config.yaml holds more than {MAX_CONFIG_NODES} values" in output
    assert "Building DAG of jobs" not in output


@pytest.mark.workflow
def test_alias_bomb_of_lists_in_a_configfile_option_stops_snakemake(tmp_path):
    """Snakemake reads ``--configfile`` itself first (lists by reference); the workflow's check refuses it."""
    (tmp_path / "config.yaml").write_text(BASE)
    (tmp_path / "bomb.yaml").write_text(list_bomb())
    result = snakemake(tmp_path, "--dry-run", "--configfile", str(tmp_path / "bomb.yaml"), timeout=120)
    assert f"config file {tmp_path / 'bomb.yaml'} holds more than" in output_of(result, returncode=1)


@pytest.mark.workflow
def test_key_given_twice_in_config_yaml_stops_snakemake(tmp_path):
    """The workflow's own ``configfile:``, which Snakemake reads keeping the last of two keys."""
    (tmp_path / "config.yaml").write_text(BASE + "samples: {count: 3}\n")
    output = output_of(snakemake(tmp_path, "--dry-run"), returncode=1)
    assert (
        "config.yaml, line 5: key 'samples' appears a second time in one mapping (first on line 4)" in output
    )
    assert not (tmp_path / "results").exists()


# --------------------------------------------------------------------------- config meaning


@pytest.mark.workflow
def test_rendering_a_sample_that_is_not_analysed_is_refused(tmp_path):
    (tmp_path / "config.yaml").write_text(
        BASE.replace("samples: {count: 2}", "samples: {indices: [3, 10]}\nrender: {samples: {count: 4}}")
    )
    output = output_of(snakemake(tmp_path, "--dry-run"), returncode=1)
    assert (
        "config: render.samples for dataset 'digits' selects positions [0, 1, 2] that samples does not "
        "analyse; expected positions among those samples selects"
    ) in output


def test_validated_config_is_canonical():
    """Equal configs with keys in another order validate to the same text (Snakemake's params)."""
    config = yaml.safe_load(BASE + "render: {symlog: true, cmap: viridis}\n")
    reordered = {key: config[key] for key in reversed(config)}
    reordered["render"] = {"cmap": "viridis", "symlog": True}
    assert list(reordered) != list(config)
    first, second = validate_config(config), validate_config(reordered)
    assert repr(first) == repr(second)
    assert list(first["render"]) == sorted(first["render"])


# --------------------------------------------------------------------------- what reruns

#: A finished run to fabricate: two models (a built-in one and one from a module file) on a
#: folder of 4 images with a labels CSV; samples 0-2 in batches [0, 1] and [2], one PDF batch each.
RUN_CONFIG = {
    "models": {
        "net": {"architecture": "digits_cnn", "train": {"epochs": 1, "seed": 0}, "train_data": "digits"},
        "own": {"module": "own_net.py", "class": "Net", "input_shape": [1, 8, 8]},
    },
    "datasets": {
        "digits": {"source": "digits", "split": "test"},
        "imgs": {"source": "images", "path": "imgs", "labels": "labels.csv"},
    },
    "analyses": [{"model": ["net", "own"], "dataset": "imgs"}],
    "samples": {"count": 3},
    "batching": {"samples_per_job": 2},
    "laplacian": {"max_nodes": 10000, "k": None},
    "render": {"samples_per_job": 1, "cmap": "RdBu_r"},
}
PATTERNS = ["activations", "standard", "laplacian"]
PDF_RULES = {"render", "render_averages"}


def reordered(value):
    """``value`` with the keys of every mapping in reverse order."""
    if isinstance(value, dict):
        return {key: reordered(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(item) for item in value]
    return value


def write_config(workdir: Path, config: dict, comment: str = "") -> None:
    (workdir / "config.yaml").write_text(comment + yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A workdir whose every output exists and whose every job Snakemake records as run."""
    workdir = tmp_path_factory.mktemp("finished")
    (workdir / "imgs").mkdir()
    for index in range(4):
        image = Image.fromarray(np.full((8, 8), 60 * index, dtype=np.uint8))
        image.save(workdir / "imgs" / f"{index:05d}.png")
    (workdir / "labels.csv").write_text("".join(f"{index:05d}.png,{index}\n" for index in range(4)))
    (workdir / "own_net.py").write_text("import torch\n\n\nclass Net(torch.nn.Linear):\n    pass\n")
    write_config(workdir, RUN_CONFIG)
    planned = output_of(snakemake(workdir, "--dry-run"))
    outputs = {
        path.strip()
        for line in planned.splitlines()
        if line.strip().startswith("output:")
        for path in line.strip().removeprefix("output:").split(",")
    }
    for output in outputs:
        path = workdir / output
        path.parent.mkdir(parents=True, exist_ok=True)
        if "/pdf/batch" in output:  # render batch i holds sample i
            path.mkdir()
            for pattern in PATTERNS:
                (path / f"{int(output[-4:]):05d}_{pattern}.pdf").touch()
        elif output.endswith("averages"):
            path.mkdir()
        else:
            path.touch()
    output_of(snakemake(workdir, "--touch", "--forceall"))
    assert "Nothing to be done" in output_of(snakemake(workdir, "--dry-run"))
    return workdir


@pytest.fixture
def workdir(finished, tmp_path) -> Path:
    """A copy of the finished run (times stamps, Snakemake's records and all) for one test to change."""
    copy = tmp_path / "run"
    shutil.copytree(finished, copy, symlinks=True)
    return copy


def planned(workdir: Path) -> list[dict]:
    """The jobs a dry run plans, without ``all``."""
    return [job for job in planned_jobs(output_of(snakemake(workdir, "--dry-run"))) if job["rule"] != "all"]


def described(jobs: list[dict]) -> set[tuple]:
    """Each job as (rule, model, transform or dataset-less, batch) for comparisons."""
    return {
        (job["rule"], *(job.get("wildcards", {}).get(key) for key in ("model", "transform", "batch")))
        for job in jobs
    }


def age(path: Path, seconds: float = 10**8) -> None:
    """Set a file's modification time ``seconds`` into the past (as ``mv`` of an old file would)."""
    stamp = path.stat().st_mtime - seconds
    os.utime(path, (stamp, stamp))


@pytest.mark.workflow
def test_keys_in_another_order_and_comments_rerun_nothing(workdir):
    write_config(workdir, reordered(RUN_CONFIG), comment="# the same settings, in another order\n")
    assert "Nothing to be done" in output_of(snakemake(workdir, "--dry-run"))


@pytest.mark.workflow
def test_laplacian_k_reruns_only_the_laplacian_side(workdir):
    write_config(workdir, RUN_CONFIG | {"laplacian": {"max_nodes": 10000, "k": 5}})
    jobs = planned(workdir)
    assert {job["wildcards"]["transform"] for job in of_rule(jobs, "compute_operator")} == {"laplacian"}
    assert {job["wildcards"]["transform"] for job in of_rule(jobs, "transform")} == {"laplacian"}
    assert len(of_rule(jobs, "transform")) == 4  # 2 models × 2 batches
    assert not {job["rule"] for job in jobs} & {"export_model", "build_graph", "extract_activations"}


@pytest.mark.workflow
def test_laplacian_size_limit_reruns_nothing(workdir):
    """``max_nodes`` refuses or allows an operator, never changes one."""
    write_config(workdir, RUN_CONFIG | {"laplacian": {"max_nodes": 20000, "k": None}})
    assert "Nothing to be done" in output_of(snakemake(workdir, "--dry-run"))


@pytest.mark.workflow
def test_render_settings_recompute_no_spectrum(workdir):
    write_config(workdir, RUN_CONFIG | {"render": {"samples_per_job": 1, "cmap": "viridis"}})
    rules = {job["rule"] for job in planned(workdir)}
    assert {"render", "render_averages"} <= rules <= {*PDF_RULES, "summarize", "summarize_sweep"}


@pytest.mark.workflow
def test_image_rewritten_in_place_reruns_its_batch_only(workdir):
    image = workdir / "imgs" / "00002.png"  # batch0001 (samples 2), render batch0002
    folder_time = (workdir / "imgs").stat().st_mtime_ns
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(image)
    assert (workdir / "imgs").stat().st_mtime_ns == folder_time  # the folder does not show it
    jobs = planned(workdir)
    assert described(of_rule(jobs, "extract_activations")) == {
        ("extract_activations", model, None, "batch0001") for model in ("net", "own")
    }
    assert {job["wildcards"]["batch"] for job in of_rule(jobs, "render")} == {"batch0002"}
    assert not of_rule(jobs, "export_model")


@pytest.mark.workflow
def test_data_file_replaced_by_an_older_one_reruns_what_reads_it(workdir):
    labels = workdir / "labels.csv"
    labels.write_text("".join(f"{index:05d}.png,{9 - index}\n" for index in range(4)))
    age(labels)  # older than every output: the modification time alone would not show it
    jobs = planned(workdir)
    assert len(of_rule(jobs, "extract_activations")) == 4
    assert not of_rule(jobs, "export_model")


@pytest.mark.workflow
def test_model_files_edited_or_replaced_rerun_their_model(workdir):
    module = workdir / "own_net.py"
    module.write_text(module.read_text() + "\n# edited\n")
    age(module)
    jobs = planned(workdir)
    assert described(of_rule(jobs, "export_model")) == {("export_model", "own", None, None)}
    assert {job["wildcards"]["model"] for job in of_rule(jobs, "extract_activations")} == {"own"}


@pytest.mark.workflow
def test_training_images_edited_retrain_the_model(workdir):
    """A model trained on a dataset depends on its files, those of its samples not analysed too."""
    config = yaml.safe_load(yaml.safe_dump(RUN_CONFIG))
    config["models"]["net"]["train_data"] = "imgs"
    write_config(workdir, config)
    output_of(snakemake(workdir, "--touch", "--forceall"))
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(workdir / "imgs" / "00003.png")  # not analysed
    jobs = planned(workdir)
    assert described(of_rule(jobs, "export_model")) == {("export_model", "net", None, None)}


@pytest.mark.workflow
def test_deleted_shard_is_made_again(workdir):
    (workdir / "results" / "own" / "imgs" / "standard" / "batch0001.h5").unlink()
    jobs = planned(workdir)
    assert described(of_rule(jobs, "transform")) == {("transform", "own", "standard", "batch0001")}
    assert {job["rule"] for job in jobs} == {"transform", *PDF_RULES, "summarize", "summarize_sweep"}


@pytest.mark.workflow
def test_deleted_pdf_is_rendered_again(workdir):
    folder = workdir / "results" / "net" / "imgs" / "pdf" / "batch0001"
    (folder / "00001_standard.pdf").unlink()
    output = output_of(snakemake(workdir, "--dry-run"))
    assert (
        "results/net/imgs/pdf/batch0001 lacks 1 of its PDFs (00001_standard.pdf): its job runs again"
        in output
    )
    jobs = [job for job in planned_jobs(output) if job["rule"] == "render"]
    assert described(jobs) == {("render", "net", None, "batch0001")}
    assert sorted(path.name for path in folder.iterdir() if path.suffix == ".pdf") == [
        "00001_activations.pdf", "00001_laplacian.pdf"
    ]  # fmt: skip


@pytest.mark.workflow
def test_batches_of_an_earlier_config_are_named(workdir):
    """One batch of 3 instead of batches of 2 and 1: batch0001 of each pattern is left over."""
    write_config(workdir, RUN_CONFIG | {"batching": {"samples_per_job": 3}})
    output = output_of(snakemake(workdir, "--dry-run"))
    assert (
        "results/net/imgs holds 3 batch outputs the config no longer makes (activations/batch0001.h5, "
        "laplacian/batch0001.h5, standard/batch0001.h5): no job reads them"
    ) in output
    assert (workdir / "results" / "net" / "imgs" / "activations" / "batch0001.h5").is_file()


# --------------------------------------------------------------------------- end to end

#: The smallest real run: an untrained CNN, 2 digits in 1 batch, both transforms, 1 PDF batch.
REAL_CONFIG = BASE + "render: {samples: {count: 1}}\n"


def flip_a_value(path: Path) -> None:
    """Change one float of an HDF5 file in place, as a bit flip on disk would (its checksum fails)."""
    found = []

    def floats(name, item):
        if isinstance(item, h5py.Dataset) and item.dtype.kind == "f" and item.size:
            found.append(name)

    with h5py.File(path, "r+") as file:
        file.visititems(floats)
        data = file[found[0]][()]
        data.flat[0] += 1.0
        file[found[0]][...] = data


@pytest.mark.slow
@pytest.mark.workflow
def test_corrupt_shard_reported_deleted_and_made_again(tmp_path):
    (tmp_path / "config.yaml").write_text(REAL_CONFIG)
    output_of(snakemake(tmp_path, timeout=900))
    folder = tmp_path / "results" / "net" / "digits"
    shard = folder / "activations" / "batch0000.h5"
    readers = [folder / kind / "batch0000.h5" for kind in ("standard", "laplacian")] + [
        folder / "pdf" / "batch0000"
    ]
    expected = hdf5.read_pattern(shard).values
    flip_a_value(shard)
    failed = output_of(snakemake(tmp_path, timeout=900), returncode=1)
    assert str(shard.relative_to(tmp_path)) in failed and "delete it and regenerate it" in failed
    removed = [path for path in readers if not path.exists()]
    assert removed  # the failed jobs removed their outputs
    shard.unlink()  # as the message says
    averages_pdf = next((folder / "averages").glob("laplacian_class_*.pdf"))
    averages_pdf.unlink()  # and a PDF deleted from a folder by hand
    output_of(snakemake(tmp_path, timeout=900))
    np.testing.assert_array_equal(hdf5.read_pattern(shard).values, expected)
    assert all(path.exists() for path in removed) and averages_pdf.is_file()
    assert "Nothing to be done" in output_of(snakemake(tmp_path, "--dry-run"))
