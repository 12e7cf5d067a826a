"""The whole digits dataset through the workflow, and how much of the time is process start-up.

Runs ``snakemake --cores N`` in a fresh folder on all 1,797 digits with the default model:
activations, both transforms and the summaries for every sample, PDFs for a few. Prints the
wall time, the jobs and their summed run time per stage (Snakemake's ``benchmark:`` files), and
the start-up share: each job starts a Python process that imports what its script needs, timed
here in fresh processes, times the number of jobs, over the summed job time.

Usage: ``python benchmarks/workflow_benchmark.py [--cores 2] [--samples-per-job 256] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

#: What the script of each stage imports before it starts working (besides nsp_pipeline.pipeline.logs).
IMPORTS = {
    "export_model": [
        "nsp_pipeline.pipeline.stages",
        "nsp_pipeline.model.artifact",
        "nsp_pipeline.model.training",
    ],
    "build_graph": ["nsp_pipeline.pipeline.stages", "nsp_pipeline.graph.build"],
    "compute_inverse": ["nsp_pipeline.pipeline.stages"],
    "extract_activations": [
        "nsp_pipeline.pipeline.stages",
        "nsp_pipeline.model.capture",
        "nsp_pipeline.data.datasets",
    ],
    "transform_standard": ["nsp_pipeline.pipeline.stages"],
    "transform_laplacian": ["nsp_pipeline.pipeline.stages"],
    "render": ["nsp_pipeline.pipeline.stages", "nsp_pipeline.render.pages"],
    "render_averages": ["nsp_pipeline.analysis.dataset_statistics"],
    "summarize": ["nsp_pipeline.pipeline.summaries"],
    "summarize_sweep": ["nsp_pipeline.pipeline.summaries"],
}


def config(samples_per_job: int, rendered: int) -> dict:
    return {
        "models": {
            "digits_cnn": {
                "architecture": "digits_cnn",
                "train": {"epochs": 20, "learning_rate": 0.01, "batch_size": 64, "seed": 0},
                "train_data": "digits",
            }
        },
        "datasets": {
            "digits": {"source": "digits", "split": "test"},
            "digits_all": {"source": "digits", "split": "all"},
        },
        "analyses": [{"model": "digits_cnn", "dataset": "digits_all"}],
        "samples": {"all": True},
        "batching": {"samples_per_job": samples_per_job},
        "transforms": ["standard", "laplacian"],
        "render": {"scale": "layernorm", "cmap": "RdBu_r", "samples": {"count": rendered}},
    }


def import_seconds(modules: list[str], repeat: int = 3) -> float:
    """Median wall time of a fresh Python process that imports ``modules``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        command = f"import nsp_pipeline.pipeline.logs, {', '.join(modules)}"
        subprocess.run([sys.executable, "-c", command], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def job_times(results: Path) -> dict[str, list[float]]:
    """Wall seconds of every job by stage, from the benchmark files of the workflow."""
    times: dict[str, list[float]] = defaultdict(list)
    for path in sorted((results / "benchmarks").rglob("*.tsv")):
        stage = path.relative_to(results / "benchmarks").parts[0].removesuffix(".tsv")
        with open(path, newline="") as handle:
            times[stage].append(float(next(csv.DictReader(handle, delimiter="\t"))["s"]))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--samples-per-job", type=int, default=256)
    parser.add_argument("--rendered", type=int, default=8, help="samples that get PDFs")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="nsp-workflow-benchmark-"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config(args.samples_per_job, args.rendered)))
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(folder),
        "--cores", str(args.cores), "--quiet",
    ]  # fmt: skip
    print(f"running {' '.join(command[2:])} (all 1,797 digits) ...", flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start

    times = job_times(folder / "results")
    startup = {stage: import_seconds(IMPORTS[stage]) for stage in times}
    print(f"\nwall time: {wall:.1f} s on {args.cores} cores ({1797 / wall:.1f} samples/s end to end)")
    print(f"{'stage':<22}{'jobs':>6}{'job time s':>12}{'start-up s/job':>16}{'start-up share':>16}")
    total_job, total_startup = 0.0, 0.0
    for stage, seconds in times.items():
        spent, starting = sum(seconds), startup[stage] * len(seconds)
        total_job, total_startup = total_job + spent, total_startup + starting
        print(f"{stage:<22}{len(seconds):>6}{spent:>12.1f}{startup[stage]:>16.2f}{starting / spent:>16.1%}")
    jobs = sum(map(len, times.values()))
    print(f"{'all':<22}{jobs:>6}{total_job:>12.1f}{'':>16}{total_startup / total_job:>16.1%}")
    print(f"\nresults in {folder}")


if __name__ == "__main__":
    main()
