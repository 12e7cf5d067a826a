"""Tables of results: per analysis (samples, per-layer energies, dataset statistics) and over a sweep.

Energies are ``Σ_v x_v²`` over a layer's nodes, averaged over the samples; coefficients a
partial Laplacian spectrum did not compute (NaN) are left out, and the file's
``residual_energy`` diagnostic says how much energy they hold.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from nsp_pipeline.analysis.dataset_statistics import TOP_K, ClassStatistics, class_statistics
from nsp_pipeline.core.atomic import atomic_output, check_outputs
from nsp_pipeline.core.errors import ProvenanceError
from nsp_pipeline.core.pattern import Pattern, concatenate
from nsp_pipeline.io import hdf5
from nsp_pipeline.io.provenance import provenance
from nsp_pipeline.pipeline.stages import check_batch
from nsp_pipeline.render.dataset_plots import plot_statistics, render_averages

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: Columns of the per-layer table of an analysis.
LAYER_COLUMNS = ("pattern", "layer", "name", "kind", "nodes", "mean_energy", "energy_share", "min_digits")

#: Columns of the sweep table (one row per model, dataset, pattern and layer).
SWEEP_COLUMNS = ("model", "dataset", "transform", "samples", "accuracy", *LAYER_COLUMNS[1:])


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
    samples: Sequence[str] | None = None,
) -> None:
    """Write an analysis's per-sample and per-layer tables (CSV), and its dataset-level summary.

    Parameters
    ----------
    patterns : mapping of str to sequence of path
        ``"activations"`` and each transform type to its files (shards of one or more samples),
        aligned: the same samples in the same order.
    pdfs : sequence of path
        Rendered PDFs, named ``<sample>_<pattern>.pdf`` (only some samples may have them).
    samples_out : path
        One row per sample: its name, source id, label, prediction, the file holding it per pattern.
    layers_out : path
        One row per pattern and layer: see :data:`LAYER_COLUMNS`.
    dataset_out, plots_out : path, optional
        Per-class energies, average patterns and top-k energy fractions (HDF5) and their plots
        (PDF), see :func:`summarize_dataset`; both or neither. The HDF5 file's provenance names the
        activations' model and dataset.
    title : str
        Context for the plots' titles, e.g. ``"digits_cnn × digits"``.
    samples : sequence of str, optional
        Names of the samples, in order (the workflow's: zero-padded positions in the dataset);
        default: their source ids.

    Raises
    ------
    ProvenanceError
        If the files of a batch hold other samples, files come from other models, data or settings
        (:func:`nsp_pipeline.pipeline.stages.check_batch`), or spectra of one transform from other
        operators.
    ValueError
        If a file holds another pattern than its name says, the patterns have different numbers of
        files, or a sample is in two files.
    FileExistsError
        If an output would overwrite an input (:func:`nsp_pipeline.core.atomic.check_outputs`).
    """
    outputs = {"samples table": samples_out, "layers table": layers_out}
    outputs |= {"dataset summary": dataset_out, "plots": plots_out} if dataset_out is not None else {}
    inputs = [(name, path) for name, files in patterns.items() for path in files]
    check_outputs([*inputs, *(("PDF", pdf) for pdf in pdfs)], outputs.items())
    by_name = {Path(pdf).name: str(pdf) for pdf in pdfs}
    shards = {name: [hdf5.read_pattern(path) for path in files] for name, files in patterns.items()}
    _check_shards(patterns, shards)
    loaded = {name: concatenate(parts) for name, parts in shards.items()}
    first = loaded["activations"]
    holders = {
        name: [str(path) for path, part in zip(patterns[name], parts) for _ in range(part.n_samples)]
        for name, parts in shards.items()
    }
    ids = range(first.n_samples) if first.sample_ids is None else first.sample_ids.tolist()
    names = [str(sample) for sample in (ids if samples is None else samples)]
    if len(names) != first.n_samples:
        raise ValueError(
            f"{len(names)} sample names for the {first.n_samples} samples of {patterns['activations']}"
        )
    with atomic_output(samples_out) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["sample", "source_id", "label", "prediction", *patterns, *(f"{p}_pdf" for p in patterns)]
        )
        for row, sample in enumerate(names):
            metadata = [
                "" if column is None else int(column[row])
                for column in (first.sample_ids, first.labels, first.predictions)
            ]
            files = [files[row] for files in holders.values()]
            rendered = [by_name.get(f"{sample}_{name}.pdf", "") for name in patterns]
            writer.writerow([sample, *metadata, *files, *rendered])
    with atomic_output(layers_out) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LAYER_COLUMNS)
        writer.writeheader()
        for pattern in loaded.values():
            writer.writerows(layer_rows(pattern))
    if dataset_out is not None:
        source = hdf5.read_provenance(patterns["activations"][0])
        attributes = {key: source[key] for key in ("model_checksum", "dataset") if key in source}
        summarize_dataset(loaded, dataset_out, plots_out, title=title, attributes=attributes)
    log.info("summary of %d samples -> %s, %s", len(names), samples_out, layers_out)


def _check_shards(
    patterns: Mapping[str, Sequence[PathLike]], shards: Mapping[str, Sequence[Pattern]]
) -> None:
    """Refuse shards that are not of one analysis.

    Each pattern's files hold its domain, the spectra come from one operator (``operator_sha256``);
    the files of a batch hold the same samples
    (:func:`~nsp_pipeline.pipeline.stages.check_batch`); all come from one model, data set and
    settings; no sample is in two files.
    """
    activations = list(zip(patterns["activations"], shards["activations"], strict=True))
    for name, files in patterns.items():
        if len(files) != len(activations):
            raise ValueError(
                f"{len(files)} {name} files but {len(activations)} activations files; "
                "expected one file of each pattern per batch, in the same order"
            )
        for path, shard in zip(files, shards[name], strict=True):
            if shard.domain != name:
                raise ValueError(f"{path} holds {shard.domain!r} patterns; expected {name!r} ones")
        operators = {path: hdf5.read_provenance(path).get("operator_sha256", "") for path in files}
        first, operator = next(iter(operators.items()))
        for path, other in operators.items():
            if other != operator:
                raise ProvenanceError(
                    f"{path} has operator_sha256 {other[:16]}... but {first} has {operator[:16]}...; "
                    f"the {name} spectra of an analysis come from one operator: regenerate {path}"
                )
    for index, (path, shard) in enumerate(activations):
        batch = [(patterns[name][index], shards[name][index]) for name in patterns if name != "activations"]
        check_batch((path, shard), batch)
    check_batch(activations[0], activations[1:], same_samples=False)
    seen: dict[int, PathLike] = {}
    for path, shard in activations:
        for sample in [] if shard.sample_ids is None else shard.sample_ids.tolist():
            if sample in seen and sample >= 0:
                raise ValueError(
                    f"sample {sample} is in {seen[sample]} and in {path}; expected each sample in one file"
                )
            seen[sample] = path


def summarize_dataset(
    patterns: Mapping[str, Pattern | Sequence[PathLike]],
    hdf5_out: PathLike,
    plots_out: PathLike,
    averages_dir: PathLike | None = None,
    *,
    title: str = "",
    attributes: Mapping[str, str] | None = None,
    top_k: Sequence[int | float] = TOP_K,
    **render_options: object,
) -> dict[str, ClassStatistics]:
    """Dataset-level statistics of an analysis: written (HDF5), plotted (PDF), averages rendered.

    Both files appear together or not at all.

    Parameters
    ----------
    patterns : mapping of str to Pattern or sequence of path
        Each pattern's name (``"activations"``, a transform type) to a batch of its samples, or
        to its files (read and stacked here). All must share one layout.
    hdf5_out : path
        The statistics (:func:`nsp_pipeline.io.hdf5.write_dataset_summary`).
    plots_out : path
        Their plots (:func:`nsp_pipeline.render.dataset_plots.plot_statistics`).
    averages_dir : path, optional
        Folder for the average patterns drawn like samples
        (:func:`nsp_pipeline.render.dataset_plots.render_averages`).
    title : str
        Context put before every plot title, e.g. ``"digits_cnn × digits"``.
    attributes : mapping of str to str, optional
        Further provenance of the HDF5 file (:func:`nsp_pipeline.io.provenance.provenance`'s
        ``model_checksum``, or extras such as model and dataset names).
    top_k : sequence of int or float, default TOP_K
        Top-k entries (see :func:`nsp_pipeline.analysis.dataset_statistics.top_k_nodes`).
    **render_options
        ``scale``, ``cmap``, ``symlog`` of the rendered averages (see
        :func:`nsp_pipeline.render.pages.render_pattern`).

    Returns
    -------
    dict of str to ClassStatistics
        The statistics of each pattern.

    Raises
    ------
    ValueError
        If no pattern is given or their layouts differ.
    """
    if not patterns:
        raise ValueError("summarize_dataset needs at least one pattern")
    loaded = {
        name: value
        if isinstance(value, Pattern)
        else concatenate([hdf5.read_pattern(path) for path in value])
        for name, value in patterns.items()
    }
    first = next(iter(loaded))
    common = set.intersection(*(set(pattern.layout.names) for pattern in loaded.values()))
    if any(len(pattern.layout) != len(common) for pattern in loaded.values()):  # spectra of some layers
        loaded = {
            name: pattern.select_layers([n for n in pattern.layout.names if n in common])
            for name, pattern in loaded.items()
        }
    for name, pattern in loaded.items():
        if pattern.layout != loaded[first].layout:
            raise ValueError(f"pattern {name!r} has other layers than {first!r}")
    statistics = {name: class_statistics(pattern, top_k) for name, pattern in loaded.items()}
    with ExitStack() as outputs:
        hdf5_temporary = outputs.enter_context(atomic_output(hdf5_out))
        plots_temporary = outputs.enter_context(atomic_output(plots_out))
        hdf5.write_dataset_summary(hdf5_temporary, statistics, provenance(**(attributes or {})))
        plot_statistics(statistics, plots_temporary, title)
        if averages_dir is not None:
            render_averages(statistics, averages_dir, title, **render_options)
    return statistics


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
    columns = {}
    for column in SWEEP_COLUMNS:
        values = [row[column] for row in rows]
        if column in ("samples", "layer", "nodes"):
            columns[column] = np.asarray(values, dtype=np.int64)
        elif column in ("accuracy", "mean_energy", "energy_share", "min_digits"):
            columns[column] = np.asarray([np.nan if v == "" else float(v) for v in values], dtype=np.float64)
        else:
            columns[column] = np.asarray(values, dtype=object)
    hdf5.write_sweep_summary(hdf5_out, columns, provenance())
    log.info("sweep summary of %d analyses, %d rows -> %s, %s", len(analyses), len(rows), table_out, hdf5_out)
