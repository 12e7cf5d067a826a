"""Tables of results: per analysis (samples, per-layer energies) and over a whole sweep.

Energies are ``Σ_v x_v²`` over a layer's nodes, averaged over the samples; coefficients a
partial Laplacian spectrum did not compute (NaN) are left out, and the file's
``residual_energy`` diagnostic says how much energy they hold.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from nsp_pipeline.analysis.dataset_statistics import write_dataset_summary
from nsp_pipeline.core.atomic import atomic_output
from nsp_pipeline.core.pattern import Pattern, concatenate
from nsp_pipeline.io import hdf5

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: Columns of the per-layer table of an analysis.
LAYER_COLUMNS = ("pattern", "layer", "name", "kind", "nodes", "mean_energy", "energy_share", "min_digits")

#: Columns of the sweep table (one row per model, dataset, pattern and layer).
SWEEP_COLUMNS = ("model", "dataset", "transform", "samples", "accuracy", *LAYER_COLUMNS[1:])


def _read_all(paths: Sequence[PathLike]) -> Pattern:
    return concatenate([hdf5.read_pattern(path) for path in paths])


def layer_rows(pattern: Pattern) -> list[dict]:
    """Per-layer rows of a batch: node count, mean energy, share of the total, fewest digits."""
    energies = np.array(
        [np.nansum(values.reshape(pattern.n_samples, -1) ** 2, axis=1) for values in pattern.layers()]
    )
    total = energies.sum(axis=0)
    digits = pattern.diagnostics.get("significant_digits")
    rows = []
    for index, layer in enumerate(pattern.layout.layers):
        share = np.divide(energies[index], total, out=np.zeros_like(total), where=total > 0)
        rows.append(
            {
                "pattern": pattern.domain,
                "layer": index,
                "name": layer.name,
                "kind": layer.kind,
                "nodes": layer.size,
                "mean_energy": float(energies[index].mean()),
                "energy_share": float(share.mean()),
                "min_digits": "" if digits is None else round(float(digits[:, index].min()), 2),
            }
        )
    return rows


def summarize(
    patterns: Mapping[str, Sequence[PathLike]],
    pdfs: Sequence[PathLike],
    samples_out: PathLike,
    layers_out: PathLike,
    dataset_out: PathLike | None = None,
    plots_out: PathLike | None = None,
    title: str = "",
) -> None:
    """Write an analysis's per-sample and per-layer tables (CSV), and its dataset-level summary.

    Parameters
    ----------
    patterns : mapping of str to sequence of path
        ``"activations"`` and each transform type to its per-sample files, aligned.
    pdfs : sequence of path
        Rendered PDFs, named ``<sample>_<pattern>.pdf`` (only some samples may have them).
    samples_out : path
        One row per sample: position, source id, label, prediction, its files.
    layers_out : path
        One row per pattern and layer: see :data:`LAYER_COLUMNS`.
    dataset_out, plots_out : path, optional
        Per-class energies, average patterns and top-k energy fractions (HDF5) and their plots
        (PDF), see :func:`nsp_pipeline.analysis.dataset_statistics.write_dataset_summary`; both or neither.
    title : str
        Context for the plots' titles, e.g. ``"digits_cnn × digits"``.
    """
    activations = patterns["activations"]
    by_name = {Path(pdf).name: str(pdf) for pdf in pdfs}
    loaded = {name: _read_all(files) for name, files in patterns.items()}
    first = loaded["activations"]
    with atomic_output(samples_out) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["sample", "source_id", "label", "prediction", *patterns, *(f"{p}_pdf" for p in patterns)]
        )
        for row, path in enumerate(activations):
            stem = Path(path).stem
            metadata = [
                "" if column is None else int(column[row])
                for column in (first.sample_ids, first.labels, first.predictions)
            ]
            files = [str(files[row]) for files in patterns.values()]
            rendered = [by_name.get(f"{stem}_{name}.pdf", "") for name in patterns]
            writer.writerow([stem, *metadata, *files, *rendered])
    with atomic_output(layers_out) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LAYER_COLUMNS)
        writer.writeheader()
        for pattern in loaded.values():
            writer.writerows(layer_rows(pattern))
    if dataset_out is not None:
        write_dataset_summary(loaded, dataset_out, plots_out, title=title)
    log.info("summary of %d samples -> %s, %s", len(activations), samples_out, layers_out)


def accuracy(samples_table: PathLike) -> float:
    """Share of samples whose prediction equals their label (NaN if none has both)."""
    with open(samples_table, newline="") as handle:
        pairs = [(row["label"], row["prediction"]) for row in csv.DictReader(handle)]
    known = [
        (label, prediction) for label, prediction in pairs if label not in ("", "-1") and prediction != ""
    ]
    return float(np.mean([label == prediction for label, prediction in known])) if known else float("nan")


def summarize_sweep(
    analyses: Sequence[Sequence[str]],
    samples_tables: Sequence[PathLike],
    layer_tables: Sequence[PathLike],
    table_out: PathLike,
    hdf5_out: PathLike,
) -> None:
    """One table over every analysis of a sweep, as CSV and HDF5.

    Parameters
    ----------
    analyses : sequence of (model, dataset)
        The analyses, aligned with the tables.
    samples_tables, layer_tables : sequence of path
        Each analysis's tables from :func:`summarize`.
    table_out : path
        CSV with :data:`SWEEP_COLUMNS`, one row per model, dataset, pattern and layer.
    hdf5_out : path
        The same table, a dataset per column in the group ``table`` (strings UTF-8).
    """
    rows = []
    for (model, dataset), samples_table, layer_table in zip(
        analyses, samples_tables, layer_tables, strict=True
    ):
        with open(samples_table, newline="") as handle:
            n_samples = sum(1 for _ in csv.DictReader(handle))
        score = accuracy(samples_table)
        with open(layer_table, newline="") as handle:
            for row in csv.DictReader(handle):
                rows.append(
                    {
                        "model": model,
                        "dataset": dataset,
                        "transform": row.pop("pattern"),
                        "samples": n_samples,
                        "accuracy": score,
                        **row,
                    }
                )
    with atomic_output(table_out) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SWEEP_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with atomic_output(hdf5_out) as temporary, h5py.File(temporary, "w", locking=False) as file:
        file.attrs["schema"] = "nsp-pipeline/sweep_summary"
        group = file.create_group("table")
        for column in SWEEP_COLUMNS:
            values = [row[column] for row in rows]
            if column in ("samples", "layer", "nodes"):
                data = np.asarray(values, dtype=np.int64)
            elif column in ("accuracy", "mean_energy", "energy_share", "min_digits"):
                data = np.asarray([np.nan if v == "" else float(v) for v in values], dtype=np.float64)
            else:
                data = np.asarray(values, dtype=h5py.string_dtype("utf-8"))
            group.create_dataset(column, data=data, track_times=False)
    log.info("sweep summary of %d analyses, %d rows -> %s, %s", len(analyses), len(rows), table_out, hdf5_out)
