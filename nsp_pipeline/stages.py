"""The pipeline's stages, file in, file out: called alike by the CLI and the Snakemake workflow.

1. :func:`export_model` — build (and train) a model, write the artifact and its metadata;
2. :func:`build_graph_file` — the model's neuron DAG;
3. :func:`compute_operator_file` — the precomputed operator of one transform type;
4. :func:`extract_activations` — activations of selected samples, one file per sample;
5. :func:`transform_file` — the spectrum of one sample;
6. :func:`render_file` — a PDF of activations or a spectrum;
7. :func:`summarize` — a table of the samples, their predictions and output files.

Every output is written atomically and carries provenance attributes. Stages that need
torch import it when they run, so that the many per-sample transform and render jobs start fast.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from nsp_pipeline import storage
from nsp_pipeline.atomic import atomic_output
from nsp_pipeline.laplacian import DEFAULT_MAX_NODES
from nsp_pipeline.render import render_pattern
from nsp_pipeline.transforms import compute_operator, transform

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


def export_model(
    entry: Mapping,
    model_out: PathLike,
    metadata_out: PathLike,
    train_dataset: Mapping | None = None,
    base_dir: PathLike = ".",
) -> dict:
    """Build the model of a config entry (training it if the entry says so) and export it.

    Parameters
    ----------
    entry : mapping
        The model's config entry (see :func:`nsp_pipeline.models.build_model`).
    model_out : path
        The artifact (``torch.save`` dict, loadable with ``weights_only=True``).
    metadata_out : path
        JSON metadata: architecture, checksum, input shape, accuracy, training metrics.
    train_dataset : mapping, optional
        Dataset spec for training and test accuracy (its ``train`` and ``test`` splits).
    base_dir : path
        Folder that relative paths in ``entry`` are relative to.
    """
    from nsp_pipeline import datasets, models

    train = test = None
    if train_dataset is not None:
        input_shape = tuple(models.build_model(entry, base_dir).input_shape)
        train = datasets.load_dataset({**train_dataset, "split": "train"}, input_shape)
        test = datasets.load_dataset({**train_dataset, "split": "test"}, input_shape)
    metadata = models.export_model(entry, model_out, base_dir=base_dir, train_data=train, test_data=test)
    with atomic_output(metadata_out) as temporary:
        temporary.write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n")
    log.info("exported model to %s (test accuracy %s)", model_out, metadata.get("accuracy"))
    return metadata


def _reference_input(model_path: PathLike, reference: Mapping | None):
    """The exported model and the sample its graph is built at (zeros if none is needed)."""
    import torch

    from nsp_pipeline import datasets, models

    model, metadata = models.load_model(model_path)
    shape = tuple(metadata["input_shape"])
    if reference is None:
        return model, torch.zeros(1, *shape)
    dataset = datasets.load_dataset(reference["dataset"], shape)
    position = int(reference.get("index", 0))
    if not 0 <= position < len(dataset.inputs):
        raise IndexError(
            f"reference sample {position} is outside dataset {dataset.name!r} of {len(dataset.inputs)}"
        )
    return model, dataset.inputs[position : position + 1]


def build_graph_file(
    model_path: PathLike,
    graph_out: PathLike,
    granularity: str = "children",
    incl: bool = True,
    reference: Mapping | None = None,
) -> None:
    """Build a model's neuron DAG and write it to HDF5.

    Parameters
    ----------
    model_path : path
        Exported model artifact.
    graph_out : path
        Output graph file.
    granularity : {"children", "ops"}
        Layer granularity.
    incl : bool
        Keep every structural edge; ``False`` needs a ``reference`` sample.
    reference : mapping, optional
        ``{"dataset": spec, "index": position}``: the sample at which partial derivatives are
        evaluated when ``incl`` is ``False``.
    """
    from nsp_pipeline.graph_builder import build_graph
    from nsp_pipeline.provenance import provenance

    if not incl and reference is None:
        raise ValueError("incl=False keeps edges by their partial derivative at a reference sample; give one")
    model, example = _reference_input(model_path, reference)
    graph = build_graph(model, example, granularity, incl=incl)
    settings = {"granularity": granularity, "incl": incl, "reference": reference}
    storage.write_graph(graph_out, graph, provenance(settings, model))
    log.info("graph of %s: %d nodes, %d edges -> %s", model_path, graph.n_nodes, graph.n_edges, graph_out)


def compute_operator_file(
    graph_path: PathLike, transform_type: str, operator_out: PathLike, max_nodes: int = DEFAULT_MAX_NODES
) -> None:
    """Precompute the operator of one transform type and write it to HDF5."""
    from nsp_pipeline.provenance import provenance

    graph = storage.read_graph(graph_path)
    operator = compute_operator(graph, transform_type, max_nodes=max_nodes)
    graph_sha256 = storage.read_header(graph_path)["content_sha256"]
    attributes = provenance({"transform": transform_type, "max_nodes": max_nodes}, graph_sha256=graph_sha256)
    if transform_type == "standard":
        storage.write_causal_operator(operator_out, operator, attributes)
    else:
        storage.write_laplacian_operator(operator_out, operator, attributes)
    log.info("%s operator of %s -> %s", transform_type, graph_path, operator_out)


def extract_activations(
    model_path: PathLike,
    dataset: Mapping,
    positions: Sequence[int],
    activations_out: Sequence[PathLike],
    granularity: str = "children",
) -> None:
    """Record the activations of selected samples in one forward pass, one file per sample.

    Parameters
    ----------
    model_path : path
        Exported model artifact.
    dataset : mapping
        Dataset spec (see :func:`nsp_pipeline.datasets.load_dataset`).
    positions : sequence of int
        Positions of the samples in the dataset.
    activations_out : sequence of path
        One output file per position.
    granularity : {"children", "ops"}
        Layer granularity (must match the graph's).
    """
    import torch

    from nsp_pipeline import datasets, models
    from nsp_pipeline.capture import trace
    from nsp_pipeline.provenance import provenance

    if len(positions) != len(activations_out):
        raise ValueError(f"{len(positions)} samples but {len(activations_out)} output files")
    model, metadata = models.load_model(model_path)
    data = datasets.load_dataset(dataset, tuple(metadata["input_shape"]))
    index = torch.as_tensor(list(positions), dtype=torch.long)
    if len(index) and (index.min() < 0 or index.max() >= len(data.inputs)):
        raise IndexError(
            f"sample positions {list(positions)} outside dataset {data.name!r} of {len(data.inputs)}"
        )
    pattern = trace(model, data.inputs[index], granularity).pattern(
        labels=data.labels[index.numpy()], sample_ids=data.ids[index.numpy()]
    )
    attributes = provenance({"dataset": dict(dataset), "granularity": granularity}, model, dataset=data.name)
    for row, path in enumerate(activations_out):
        storage.write_pattern(path, pattern.sample(row), attributes)
    log.info("activations of %d samples of %s", len(positions), data.name)


def transform_file(activations_path: PathLike, operator_path: PathLike, spectrum_out: PathLike) -> None:
    """Spectrum of one activations file with a precomputed operator."""
    pattern = storage.read_pattern(activations_path)
    header = storage.read_header(operator_path)
    read = (
        storage.read_causal_operator
        if header["kind"] == "causal_operator"
        else storage.read_laplacian_operator
    )
    spectrum = transform(pattern, read(operator_path))
    attributes = storage.read_provenance(activations_path) | {"operator_sha256": header["content_sha256"]}
    storage.write_pattern(spectrum_out, spectrum, attributes)


def render_file(
    pattern_path: PathLike, pdf_out: PathLike, scale: str = "layerscale", cmap: str = "viridis"
) -> None:
    """Render an activations or spectrum file as a PDF, a page per layer."""
    render_pattern(storage.read_pattern(pattern_path), pdf_out, scale=scale, cmap=cmap)


def summarize(
    activations: Sequence[PathLike], outputs: Mapping[str, Sequence[PathLike]], table_out: PathLike
) -> None:
    """Write a CSV of the samples: position, source id, label, prediction and output files.

    Parameters
    ----------
    activations : sequence of path
        Activations files, one per sample.
    outputs : mapping of str to sequence of path
        Further per-sample files by column name (spectra, PDFs), aligned with ``activations``.
    table_out : path
        The CSV file.
    """
    with atomic_output(table_out) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample", "source_id", "label", "prediction", "activations", *outputs])
        for row, path in enumerate(activations):
            pattern = storage.read_pattern(path)
            label = "" if pattern.labels is None else int(pattern.labels[0])
            prediction = "" if pattern.predictions is None else int(pattern.predictions[0])
            source = "" if pattern.sample_ids is None else int(pattern.sample_ids[0])
            writer.writerow(
                [Path(path).stem, source, label, prediction, path, *(v[row] for v in outputs.values())]
            )
