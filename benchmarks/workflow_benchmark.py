"""The whole digits dataset through the workflow, and how much of the time is process start-up.

Runs ``snakemake --cores N`` in a fresh folder on all 1,797 digits (or the first ``--samples``)
with the default model: activations, both transforms and the summaries for every sample, PDFs
for a few. Prints the wall time, the jobs and their summed run time per stage (Snakemake's
``benchmark:`` files), and the start-up share: each job starts a Python process that imports what
its script needs, timed here in fresh processes, times the number of jobs, over the summed job time.

``--baseline PATH`` compares with another commit, checked out at PATH (e.g. ``git worktree add
PATH <commit>``): the same run is made with that checkout's Snakefile and its own package
(``PYTHONPATH=PATH``; the benchmark checks which ``nsp_pipeline`` that imports, and the
checkout's jobs import its own modules), then with this checkout, back to back. Both are printed,
with the ratio of their wall times and whether their activations and spectra agree bit for bit
(every HDF5 pattern file, one per sample or one per batch, read in sample order).

Usage: ``python benchmarks/workflow_benchmark.py [--cores 2] [--samples-per-job 256] [--samples N]
[--baseline PATH] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import ast
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
DIGITS = 1797
MODEL, DATASET = "digits_cnn", "digits_all"
PATTERNS = ("activations", "standard", "laplacian")

#: What the script of each stage imports before it starts working (besides the logs module), by
#: rule. A checkout's own benchmark file gives its rules' lists (see :func:`stage_imports`).
IMPORTS = {
    "export_model": [
        "nsp_pipeline.pipeline.stages",
        "nsp_pipeline.model.artifact",
        "nsp_pipeline.model.training",
    ],
    "build_graph": ["nsp_pipeline.pipeline.stages", "nsp_pipeline.graph.build"],
    "compute_operator": ["nsp_pipeline.pipeline.stages"],
    "extract_activations": [
        "nsp_pipeline.pipeline.stages",
        "nsp_pipeline.model.capture",
        "nsp_pipeline.data.loading",
    ],
    "transform": ["nsp_pipeline.pipeline.stages"],
    "render": ["nsp_pipeline.pipeline.stages", "nsp_pipeline.render.pages"],
    "render_averages": ["nsp_pipeline.render.dataset_plots"],
    "summarize": ["nsp_pipeline.pipeline.summaries"],
    "summarize_sweep": ["nsp_pipeline.pipeline.summaries"],
}


@dataclass
class Run:
    """One benchmark run: wall seconds, job seconds and start-up seconds per job, by stage."""

    name: str
    folder: Path
    wall: float
    times: dict[str, list[float]]
    startup: dict[str, float | None]


def config(samples: int | None, samples_per_job: int, rendered: int) -> dict:
    return {
        "models": {
            MODEL: {
                "architecture": "digits_cnn",
                "train": {"epochs": 20, "learning_rate": 0.01, "batch_size": 64, "seed": 0},
                "train_data": "digits",
            }
        },
        "datasets": {
            "digits": {"source": "digits", "split": "test"},
            DATASET: {"source": "digits", "split": "all"},
        },
        "analyses": [{"model": MODEL, "dataset": DATASET}],
        "samples": {"all": True} if samples is None else {"count": samples},
        "batching": {"samples_per_job": samples_per_job},
        "transforms": ["standard", "laplacian"],
        "render": {"scale": "layernorm", "cmap": "RdBu_r", "samples": {"count": rendered}},
    }


def environment(checkout: Path) -> dict[str, str]:
    """The environment of a run of ``checkout``: its own package first on the path (another checkout)."""
    if checkout == REPO:
        return dict(os.environ)
    return os.environ | {"PYTHONPATH": os.pathsep.join([str(checkout), os.environ.get("PYTHONPATH", "")])}


def check_package(checkout: Path, env: dict[str, str], folder: Path) -> None:
    """Stop unless a Python process with ``env``, started in ``folder``, imports the ``nsp_pipeline`` of
    ``checkout`` (Python puts the working folder first on the path: runs start in their own folder)."""
    found = subprocess.run(
        [sys.executable, "-c", "import nsp_pipeline; print(nsp_pipeline.__file__)"],
        env=env, cwd=folder, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if Path(found).resolve().parent != (checkout / "nsp_pipeline").resolve():
        raise SystemExit(f"the run of {checkout} would import nsp_pipeline from {found}, not from {checkout}")


def stage_imports(checkout: Path) -> dict[str, list[str]]:
    """The ``IMPORTS`` table of a checkout's own copy of this benchmark (empty if it has none)."""
    if checkout == REPO:
        return IMPORTS
    path = checkout / "benchmarks" / "workflow_benchmark.py"
    if not path.is_file():
        return {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["IMPORTS"]:
            return ast.literal_eval(node.value)
    return {}


def import_seconds(modules: list[str], env: dict[str, str], folder: Path, repeat: int = 3) -> float:
    """Median wall time of a fresh Python process (``env``, in ``folder``) that imports ``modules``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        command = [sys.executable, "-c", f"import {', '.join(modules)}"]
        subprocess.run(command, env=env, cwd=folder, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def job_times(results: Path) -> dict[str, list[float]]:
    """Wall seconds of every job by stage (rule), from the benchmark files of the workflow."""
    times: dict[str, list[float]] = defaultdict(list)
    for path in sorted((results / "benchmarks").rglob("*.tsv")):
        stage = path.relative_to(results / "benchmarks").parts[0].removesuffix(".tsv")
        with open(path, newline="") as handle:
            times[stage].append(float(next(csv.DictReader(handle, delimiter="\t"))["s"]))
    return times


def run(name: str, checkout: Path, folder: Path, settings: dict, cores: int) -> Run:
    """Run the workflow of ``checkout`` in ``folder`` with its own package; time it."""
    env = environment(checkout)
    folder.mkdir(parents=True, exist_ok=True)
    check_package(checkout, env, folder)
    (folder / "config.yaml").write_text(yaml.safe_dump(settings))
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(checkout / "Snakefile"),
        "--directory", str(folder), "--cores", str(cores),
    ]  # fmt: skip
    log = folder / "snakemake.log"
    print(f"{name}: running {' '.join(command[2:])} (output in {log}) ...", flush=True)
    start = time.perf_counter()
    with open(log, "w") as output:
        finished = subprocess.run(command, env=env, cwd=folder, stdout=output, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if finished.returncode != 0:
        raise SystemExit(f"{name}: snakemake failed (exit {finished.returncode}):\n{log.read_text()[-3000:]}")
    times = job_times(folder / "results")
    imports = stage_imports(checkout)
    startup = {
        stage: import_seconds(imports[stage], env, folder) if stage in imports else None for stage in times
    }
    return Run(name, folder, wall, times, startup)


def report(result: Run, samples: int, cores: int) -> None:
    rate = samples / result.wall
    print(f"\n{result.name}: wall time {result.wall:.1f} s on {cores} cores ({rate:.1f} samples/s)")
    print(f"{'stage':<22}{'jobs':>6}{'job time s':>12}{'start-up s/job':>16}{'start-up share':>16}")
    total_job = total_startup = 0.0
    for stage, seconds in result.times.items():
        spent, per_job = sum(seconds), result.startup[stage]
        total_job += spent
        if per_job is None:
            print(f"{stage:<22}{len(seconds):>6}{spent:>12.1f}{'-':>16}{'-':>16}")
            continue
        total_startup += per_job * len(seconds)
        share = per_job * len(seconds) / spent
        print(f"{stage:<22}{len(seconds):>6}{spent:>12.1f}{per_job:>16.2f}{share:>16.1%}")
    jobs = sum(map(len, result.times.values()))
    print(f"{'all':<22}{jobs:>6}{total_job:>12.1f}{'':>16}{total_startup / total_job:>16.1%}")
    print(f"results in {result.folder}")


def pattern_values(folder: Path, pattern: str) -> np.ndarray:
    """Every sample's values of one pattern, ``(n_samples, n_nodes)``, in sample order.

    The files of a pattern (one per sample, ``00000.h5``, ..., or one per batch, ``batch0000.h5``,
    ...) are named in sample order; each holds its samples' layers as datasets ``layers/NNN``.
    """
    rows = []
    for path in sorted((folder / "results" / MODEL / DATASET / pattern).glob("*.h5")):
        with h5py.File(path, "r", locking=False) as file:
            layers = [file["layers"][name][()] for name in sorted(file["layers"])]
        rows.append(np.concatenate([layer.reshape(len(layer), -1) for layer in layers], axis=1))
    return np.concatenate(rows)


def compare(baseline: Run, current: Run) -> None:
    """Print whether the two runs' activations and spectra agree bit for bit."""
    ratio = current.wall / baseline.wall
    print(f"\nwall time: {current.wall:.1f} s against {baseline.wall:.1f} s of the baseline ({ratio:.0%})")
    for pattern in PATTERNS:
        old, new = pattern_values(baseline.folder, pattern), pattern_values(current.folder, pattern)
        if old.shape != new.shape:
            print(f"{pattern:<12} DIFFERENT shapes: {old.shape} against {new.shape}")
        elif np.array_equal(old, new, equal_nan=True):
            print(f"{pattern:<12} identical ({old.shape[0]} samples × {old.shape[1]} values)")
        else:
            print(f"{pattern:<12} DIFFERENT: largest difference {np.nanmax(np.abs(old - new)):.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--samples-per-job", type=int, default=256)
    parser.add_argument("--samples", type=int, help=f"only the first N digits (default: all {DIGITS:,})")
    parser.add_argument("--rendered", type=int, default=8, help="samples that get PDFs")
    parser.add_argument("--baseline", type=Path, help="a checkout of another commit, run first and compared")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="nsp-workflow-benchmark-"))
    samples = args.samples or DIGITS
    settings = config(args.samples, args.samples_per_job, min(args.rendered, samples))
    runs = []
    if args.baseline is not None:
        runs.append(run("baseline", args.baseline.resolve(), root / "baseline", settings, args.cores))
    runs.append(run("current", REPO, root / "current", settings, args.cores))
    for result in runs:
        report(result, samples, args.cores)
    if args.baseline is not None:
        compare(*runs)


if __name__ == "__main__":
    main()
