"""The workflow's rules: one per stage, its jobs addressed by wildcards, torch only where needed.

- Dry runs (nothing executes) check that Snakemake's per-rule options (``--set-resources``,
  ``--set-threads``, ``--groups``) reach every batch job of a stage, and that ``--list-rules`` is
  the fixed list of stages whatever the number of samples.
- Parsing the Snakefile, and the transform, render and summary jobs (their scripts, run as
  Snakemake runs them, in fresh processes), never import torch: a ``sitecustomize`` module on
  ``PYTHONPATH`` makes ``import torch`` fail in those processes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nsp_pipeline.core.defaults import default
from nsp_pipeline.io import hdf5
from nsp_pipeline.model.artifact import export_model
from nsp_pipeline.pipeline import stages

pytest.importorskip("snakemake")

REPO = Path(__file__).resolve().parents[1]

#: The workflow's rules: one per stage, and the target rule.
STAGES = [
    "all", "build_graph", "compute_operator", "export_model", "extract_activations", "graph_analytics",
    "interpret", "interpret_report", "minimal_images", "regions", "render", "render_averages",
    "summarize", "summarize_sweep", "synthesize", "transform",
]  # fmt: skip

MODEL = {"architecture": "digits_cnn"}
DIGITS = {"source": "digits", "split": "test"}


def config(samples: int, per_job: int, rendered: int, render_per_job: int) -> dict:
    return {
        "models": {"net": MODEL},
        "datasets": {"digits": DIGITS},
        "analyses": [{"model": "net", "dataset": "digits"}],
        "samples": {"count": samples},
        "batching": {"samples_per_job": per_job},
        "transforms": ["standard", "laplacian"],
        "render": {"samples": {"count": rendered}, "samples_per_job": render_per_job},
    }


SMALL = config(samples=5, per_job=2, rendered=3, render_per_job=2)  # batches 0-1, 2-3, 4; renders 0-1, 2
LARGE = config(samples=40, per_job=4, rendered=40, render_per_job=1)

#: Put on PYTHONPATH, it makes every ``import torch`` of the process fail, naming the importer.
TORCH_GUARD = """\
import sys


class RefuseTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"{name} imported by a process that must not import torch")


sys.meta_path.insert(0, RefuseTorch())
"""


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory) -> dict:
    """The environment of a process that cannot import torch."""
    folder = tmp_path_factory.mktemp("guard")
    (folder / "sitecustomize.py").write_text(TORCH_GUARD)
    return os.environ | {"PYTHONPATH": str(folder)}


def snakemake(workdir: Path, settings: dict, *args: str, env: dict | None = None) -> str:
    """Output of Snakemake on the workflow with ``settings`` as config.yaml (fails the test on errors)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(settings))
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--cores", "4", *args,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def planned_jobs(output: str) -> list[dict]:
    """Every job a dry run prints: rule, wildcards, threads, resources, and its group (or None).

    Snakemake 9 prints a block per job: ``rule <name>:`` (``localrule`` for local rules), then
    indented ``key: value`` lines; the jobs of a group follow a ``Group job <name> (...)`` line,
    indented one level more.
    """
    jobs, group = [], None
    for line in output.splitlines():
        text = line.strip()
        if match := re.search(r"Group job (\S+) ", line):
            group = match[1]
        elif match := re.fullmatch(r"(?:local)?rule (\w+):", text):
            jobs.append({"rule": match[1], "group": group if line.startswith(" ") else None, "threads": 1})
        elif jobs and text.startswith(("wildcards: ", "resources: ")):
            key, _, value = text.partition(": ")
            jobs[-1][key] = dict(item.split("=", 1) for item in value.split(", "))
        elif jobs and text.startswith("threads: "):
            jobs[-1]["threads"] = int(text.removeprefix("threads: "))
    return jobs


def of_rule(jobs: list[dict], rule: str) -> list[dict]:
    return [job for job in jobs if job["rule"] == rule]


def batches(jobs: list[dict], rule: str, **wildcards: str) -> list[str]:
    """The batch wildcards of a rule's jobs (restricted to jobs with the given wildcards), sorted."""
    chosen = [job for job in of_rule(jobs, rule) if wildcards.items() <= job["wildcards"].items()]
    return sorted(job["wildcards"]["batch"] for job in chosen)


@pytest.mark.workflow
def test_set_resources_and_threads_reach_every_batch_job(tmp_path):
    options = ["--set-resources", "extract_activations:mem_mb=1234", "--set-threads", "transform=2"]
    jobs = planned_jobs(snakemake(tmp_path, SMALL, "--dry-run", *options))
    assert batches(jobs, "extract_activations") == ["batch0000", "batch0001", "batch0002"]
    assert all(job["resources"]["mem_mb"] == "1234" for job in of_rule(jobs, "extract_activations"))
    others = [job for job in jobs if job["rule"] != "extract_activations"]
    assert not any(job["resources"].get("mem_mb") == "1234" for job in others)
    for kind in ("standard", "laplacian"):
        assert batches(jobs, "transform", transform=kind) == ["batch0000", "batch0001", "batch0002"]
    assert len(of_rule(jobs, "transform")) == 6
    assert {job["threads"] for job in of_rule(jobs, "transform")} == {2}
    assert {job["threads"] for job in jobs if job["rule"] not in ("transform", "render_averages")} == {1}


@pytest.mark.workflow
def test_groups_gather_every_render_job(tmp_path):
    jobs = planned_jobs(snakemake(tmp_path, SMALL, "--dry-run", "--groups", "render=g"))
    assert batches(jobs, "render") == ["batch0000", "batch0001"]  # samples 0-1 of batch0000, 2 of batch0001
    assert {job["group"] for job in of_rule(jobs, "render")} == {"g"}
    assert {job["group"] for job in jobs if job["rule"] != "render"} == {None}


@pytest.mark.workflow
def test_one_rule_per_stage_whatever_the_dataset_size(tmp_path):
    for name, settings in (("small", SMALL), ("large", LARGE)):
        output = snakemake(tmp_path / name, settings, "--list-rules")
        assert output.split() == STAGES, name
    jobs = planned_jobs(snakemake(tmp_path / "large", LARGE, "--dry-run"))
    assert len(of_rule(jobs, "extract_activations")) == 10
    assert len(of_rule(jobs, "render")) == 40
    # the interpret stages run only when the config asks for them (interpret.targets, .minimal,
    # .synthesis, regions.slices)
    optional = {"interpret", "interpret_report", "minimal_images", "regions", "synthesize"}
    assert sorted({job["rule"] for job in jobs}) == sorted(set(STAGES) - optional)


@pytest.mark.workflow
def test_parsing_the_snakefile_does_not_import_torch(tmp_path, no_torch):
    refused = subprocess.run(
        [sys.executable, "-c", "import torch"], capture_output=True, text=True, env=no_torch
    )
    assert refused.returncode == 1 and "must not import torch" in refused.stderr  # the guard works
    output = snakemake(tmp_path, SMALL, "--dry-run", env=no_torch)
    assert "This was a dry-run" in output
    assert len(of_rule(planned_jobs(output), "extract_activations")) == 3


# --------------------------------------------------------------------------- jobs without torch

#: Runs a workflow script as a Snakemake job does (``snakemake`` given as a global, its inputs,
#: outputs and params named lists), then checks that torch was never imported.
RUN_SCRIPT = """\
import json
import runpy
import sys

from snakemake.iocontainers import Namedlist


class Job:
    pass


job = Job()
spec = json.loads(sys.argv[2])
for key in ("input", "output", "params", "wildcards"):
    setattr(job, key, Namedlist(fromdict=spec.get(key, {})))
job.log, job.threads = Namedlist([spec["log"]]), 1
runpy.run_path(sys.argv[1], init_globals={"snakemake": job}, run_name="__main__")
assert "torch" not in sys.modules, "torch was imported"
"""


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> dict[str, Path]:
    """What the jobs before the torch-free ones make: model, graph, operators, an activations shard."""
    folder = tmp_path_factory.mktemp("batch")
    files = {
        "model": folder / "model.pt",
        "graph": folder / "graph.h5",
        "standard_operator": folder / "operator_standard.h5",
        "laplacian_operator": folder / "operator_laplacian.h5",
        "activations": folder / "activations" / "batch0000.h5",
    }
    export_model(MODEL, files["model"])
    stages.build_graph_file(files["model"], files["graph"])
    stages.compute_operator_file(files["graph"], "standard", files["standard_operator"], files["model"])
    stages.compute_operator_file(files["graph"], "laplacian", files["laplacian_operator"], k=8)
    files["activations"].parent.mkdir()
    stages.extract_activations(files["model"], DIGITS, [4, 1, 7], files["activations"])
    return files


def run_job(script: str, env: dict, log: Path, **spec) -> None:
    """Run ``workflow/scripts/<script>.py`` in a fresh process with ``env``; fail on any error."""
    command = [sys.executable, "-c", RUN_SCRIPT, str(REPO / "workflow" / "scripts" / f"{script}.py")]
    result = subprocess.run(
        [*command, json.dumps({"log": str(log), **spec})], capture_output=True, text=True, env=env
    )
    logged = log.read_text() if log.exists() else ""
    assert result.returncode == 0, f"{script}: {result.stderr[-3000:]}\n{logged[-3000:]}"


def test_transform_render_and_summary_jobs_do_not_import_torch(batch, tmp_path, no_torch):
    net = {"model": "net", "dataset": "digits"}
    shards = {"activations": str(batch["activations"])}
    for kind in ("standard", "laplacian"):
        shards[kind] = str(tmp_path / kind / "batch0000.h5")
        inputs = {"activations": shards["activations"], "operator": str(batch[f"{kind}_operator"])}
        wildcards = net | {"transform": kind, "batch": "batch0000"}
        run_job(
            "transform", no_torch, tmp_path / f"transform_{kind}.log",
            input=inputs, output={"spectra": shards[kind]}, wildcards=wildcards,
            params={"storage": default("storage"), "precision": "auto", "digits": 6},
        )  # fmt: skip
        ids = hdf5.read_pattern(shards[kind]).sample_ids
        assert ids.tolist() == hdf5.read_pattern(shards["activations"]).sample_ids.tolist()
    pdfs = tmp_path / "pdf" / "batch0000"
    run_job(
        "render", no_torch, tmp_path / "render.log",
        input=shards, output={"pdfs": str(pdfs)}, wildcards=net | {"batch": "batch0000"},
        params={
            "rows": [1], "samples": ["00001"], "scale": "layernorm", "cmap": "RdBu_r", "symlog": False,
            "min_digits": 3,
        },
    )  # fmt: skip
    assert sorted(path.name for path in pdfs.iterdir()) == [
        "00001_activations.pdf", "00001_laplacian.pdf", "00001_standard.pdf"
    ]  # fmt: skip
    tables = {name: str(tmp_path / f"summary.{name}") for name in ("csv", "layers.csv", "h5", "pdf")}
    run_job(
        "summarize", no_torch, tmp_path / "summarize.log",
        input={kind: [path] for kind, path in shards.items()} | {"pdfs": [str(pdfs)]},
        output={
            "samples": tables["csv"], "layers": tables["layers.csv"],
            "dataset": tables["h5"], "plots": tables["pdf"],
        },
        params={"samples": ["00004", "00001", "00007"]}, wildcards=net,
    )  # fmt: skip
    rows = Path(tables["csv"]).read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["00004", "00001", "00007"]
    assert rows[2].endswith(f"{pdfs / '00001_standard.pdf'},{pdfs / '00001_laplacian.pdf'}")
    run_job(
        "render_averages", no_torch, tmp_path / "render_averages.log",
        input={"dataset": tables["h5"]}, output={"averages": str(tmp_path / "averages")},
        params={"scale": "layernorm", "cmap": "RdBu_r", "symlog": False}, wildcards=net,
    )  # fmt: skip
    assert (tmp_path / "averages" / "laplacian_all.pdf").is_file()
    run_job(
        "summarize_sweep", no_torch, tmp_path / "summarize_sweep.log",
        input={"samples": [tables["csv"]], "layers": [tables["layers.csv"]]},
        output={"table": str(tmp_path / "sweep.csv"), "hdf5": str(tmp_path / "sweep.h5")},
        params={"analyses": [["net", "digits"]]},
    )  # fmt: skip
    assert (tmp_path / "sweep.csv").is_file()
