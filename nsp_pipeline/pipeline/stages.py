"""The pipeline's stages, file in, file out: called alike by the CLI and the Snakemake workflow.

1. :func:`export_model` — build (and train) a model, write the artifact and its metadata;
2. :func:`build_graph_file` — the model's neuron DAG;
3. :func:`compute_operator_file` — the precomputed operator of one transform type;
4. :func:`extract_activations` — activations of a batch of samples, one file per sample;
5. :func:`transform_files` — spectra of a batch of samples, one file per sample;
6. :func:`render_file` — a PDF of activations or a spectrum;

The summary tables are made by :mod:`nsp_pipeline.pipeline.summaries`.

Every output is written atomically and carries provenance attributes. Stages import torch and
matplotlib only when they need them, so that transform jobs start fast.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np

from nsp_pipeline.core.atomic import atomic_output
from nsp_pipeline.core.errors import NonFiniteError, ProvenanceError, shortened
from nsp_pipeline.core.pattern import Pattern, concatenate
from nsp_pipeline.io import hdf5
from nsp_pipeline.transforms.api import causal_operator_of, compute_operator, transform
from nsp_pipeline.transforms.laplacian import DEFAULT_MAX_NODES

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
        The model's config entry (see :func:`nsp_pipeline.model.artifact.build_model`).
    model_out : path
        The artifact (``torch.save`` dict, loadable with ``weights_only=True``).
    metadata_out : path
        JSON metadata: architecture, checksum, input shape, accuracy, training metrics.
    train_dataset : mapping, optional
        Dataset spec for training and test accuracy (its ``train`` and ``test`` splits).
    base_dir : path
        Folder that relative paths in ``entry`` are relative to.
    """
    from nsp_pipeline.data import datasets
    from nsp_pipeline.model import artifact

    train = test = None
    if train_dataset is not None:
        input_shape = tuple(artifact.build_model(entry, base_dir).input_shape)
        train = datasets.load_dataset({**train_dataset, "split": "train"}, input_shape)
        test = datasets.load_dataset({**train_dataset, "split": "test"}, input_shape)
    metadata = artifact.export_model(entry, model_out, base_dir=base_dir, train_data=train, test_data=test)
    with atomic_output(metadata_out) as temporary:
        temporary.write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n")
    log.info("exported model to %s (test accuracy %s)", model_out, metadata.get("accuracy"))
    return metadata


def _reference_input(model_path: PathLike, reference: Mapping | None):
    """The exported model and the sample its graph is built at (zeros if none is needed)."""
    import torch

    from nsp_pipeline.data import datasets
    from nsp_pipeline.model import artifact

    model, metadata = artifact.load_model(model_path)
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
    from nsp_pipeline.graph.build import build_graph
    from nsp_pipeline.io.provenance import provenance

    if not incl and reference is None:
        raise ValueError("incl=False keeps edges by their partial derivative at a reference sample; give one")
    model, example = _reference_input(model_path, reference)
    graph = build_graph(model, example, granularity, incl=incl)
    settings = {"granularity": granularity, "incl": incl, "reference": reference}
    hdf5.write_graph(graph_out, graph, provenance(settings, model))
    log.info("graph of %s: %d nodes, %d edges -> %s", model_path, graph.n_nodes, graph.n_edges, graph_out)


def compute_operator_file(
    graph_path: PathLike,
    transform_type: str,
    operator_out: PathLike,
    model_path: PathLike | None = None,
    max_nodes: int = DEFAULT_MAX_NODES,
    k: int | None = None,
) -> str:
    """Precompute the operator of one transform type and write it to HDF5.

    Parameters
    ----------
    graph_path : path
        The model's neuron graph.
    transform_type : {"standard", "laplacian"}
        Which operator.
    operator_out : path
        Output file.
    model_path : path, optional
        Standard only: the exported model, traced once more so that the factorised operator
        can be used (the same code path as :func:`nsp_pipeline.analysis.analyze.analyze`); without it,
        or where the network does not factorise, the sparse closure is stored.
    max_nodes : int
        Size limit of the full Laplacian eigendecomposition.
    k : int, optional
        Laplacian only: the number of lowest frequencies of a partial spectrum (``None``: all).

    Returns
    -------
    str
        How the operator was computed; also stored as the file's ``method`` attribute. The
        file also records the graph's ``graph_sha256`` and its ``model_checksum``.

    Raises
    ------
    ProvenanceError
        If ``model_path`` is not the model the graph was built from.
    """
    from nsp_pipeline.io.provenance import model_checksum, provenance

    graph = hdf5.read_graph(graph_path)
    graph_sha256 = hdf5.read_header(graph_path)["content_sha256"]
    graph_model = hdf5.read_provenance(graph_path).get("model_checksum", "")
    settings = {"transform": transform_type, "max_nodes": max_nodes, "k": k}
    if transform_type == "standard":
        recorded = None
        if model_path is not None:
            from nsp_pipeline.model.capture import trace

            model, example = _reference_input(model_path, None)
            if graph_model and model_checksum(model) != graph_model:
                raise ProvenanceError(
                    f"model {model_path} (checksum {model_checksum(model)[:12]}...) is not the model of "
                    f"graph {graph_path} (checksum {graph_model[:12]}...); give the graph's own model"
                )
            recorded = trace(model, example, graph.granularity)
        operator, method = causal_operator_of(graph, recorded)
    else:
        operator = compute_operator(graph, transform_type, max_nodes=max_nodes, k=k)
        method = f"{k} lowest eigenpairs" if operator.is_partial else "full eigendecomposition"
    attributes = provenance(settings, graph_sha256=graph_sha256) | {
        "model_checksum": graph_model,
        "method": method,
    }
    writers = {
        "CausalOperator": hdf5.write_causal_operator,
        "FactorizedCausalOperator": hdf5.write_factorized_causal_operator,
        "LaplacianOperator": hdf5.write_laplacian_operator,
    }
    writers[type(operator).__name__](operator_out, operator, attributes)
    log.info("%s operator of %s (%s) -> %s", transform_type, graph_path, method, operator_out)
    return method


def extract_activations(
    model_path: PathLike,
    dataset: Mapping,
    positions: Sequence[int],
    activations_out: Sequence[PathLike],
    granularity: str = "children",
    threads: int | None = None,
) -> None:
    """Record the activations of selected samples in one forward pass, one file per sample.

    Parameters
    ----------
    model_path : path
        Exported model artifact.
    dataset : mapping
        Dataset spec (see :func:`nsp_pipeline.data.datasets.load_dataset`).
    positions : sequence of int
        Positions of the samples in the dataset.
    activations_out : sequence of path
        One output file per position.
    granularity : {"children", "ops", "merged"}
        Layer granularity (must match the graph's).
    threads : int, optional
        Threads of torch's CPU kernels (``None``: torch's default).

    Raises
    ------
    NonFiniteError
        If the model gives NaN or Inf activations for a sample (nothing is written).
    """
    import torch

    from nsp_pipeline.data import datasets
    from nsp_pipeline.io.provenance import provenance
    from nsp_pipeline.model import artifact
    from nsp_pipeline.model.capture import trace

    if len(positions) != len(activations_out):
        raise ValueError(f"{len(positions)} samples but {len(activations_out)} output files")
    if threads is not None:
        torch.set_num_threads(threads)
    model, metadata = artifact.load_model(model_path)
    data = datasets.load_dataset(dataset, tuple(metadata["input_shape"]))
    index = torch.as_tensor(list(positions), dtype=torch.long)
    if len(index) and (index.min() < 0 or index.max() >= len(data.inputs)):
        raise IndexError(
            f"sample positions {list(positions)} outside dataset {data.name!r} of {len(data.inputs)}"
        )
    pattern = trace(model, data.inputs[index], granularity).pattern(
        labels=data.labels[index.numpy()], sample_ids=data.ids[index.numpy()]
    )
    finite = np.isfinite(pattern.values)
    if not finite.all():
        samples = [positions[row] for row in np.flatnonzero(~finite.all(axis=1))]
        raise NonFiniteError(
            f"model {model_path} gives NaN or Inf activations for samples {shortened(samples)} of dataset "
            f"{data.name!r}, in layers {_non_finite_layers(pattern)}; expected finite activations "
            "(the model overflows or takes e.g. log(0); rescale the inputs or fix the model)"
        )
    attributes = provenance({"dataset": dict(dataset), "granularity": granularity}, model, dataset=data.name)
    for row, path in enumerate(activations_out):
        hdf5.write_pattern(path, pattern.sample(row), attributes)
    log.info("activations of %d samples of %s", len(positions), data.name)


def transform_files(
    activations_paths: Sequence[PathLike], operator_path: PathLike, spectra_out: Sequence[PathLike]
) -> None:
    """Spectra of activations files with a precomputed operator, as one batch, one file per sample.

    Causal spectra whose layers keep fewer than 3 significant digits in float64 are written
    all the same, with their per-layer digits in the file; a warning names the layers.

    Raises
    ------
    NonFiniteError
        If an activations file holds NaN or Inf values.
    ProvenanceError
        If an activations file comes from another model than the operator's graph.
    """
    if len(activations_paths) != len(spectra_out):
        raise ValueError(f"{len(activations_paths)} activations files but {len(spectra_out)} output files")
    operator_model = hdf5.read_provenance(operator_path).get("model_checksum", "")
    patterns, sources = [], []
    for path in activations_paths:
        pattern, source = hdf5.read_pattern(path), hdf5.read_provenance(path)
        if pattern.domain == "activations" and not np.isfinite(pattern.values).all():
            raise NonFiniteError(
                f"{path} holds NaN or Inf activations in layers {_non_finite_layers(pattern)}; "
                "expected finite activations, extract them again"
            )
        if operator_model and source.get("model_checksum") != operator_model:
            raise ProvenanceError(
                f"{path} holds activations of model {source.get('model_checksum', '')[:12]}... but "
                f"operator {operator_path} belongs to model {operator_model[:12]}... (its graph's "
                "model_checksum); use the operator computed from this model's graph"
            )
        patterns.append(pattern)
        sources.append(source)
    operator = hdf5.read_operator(operator_path)
    try:
        spectra = transform(concatenate(patterns), operator)
    except ValueError as error:
        raise ValueError(f"transforming {activations_paths[0]} ... with {operator_path}: {error}") from None
    operator_sha256 = hdf5.read_header(operator_path)["content_sha256"]
    for row, (source, path) in enumerate(zip(sources, spectra_out, strict=True)):
        hdf5.write_pattern(path, spectra.sample(row), source | {"operator_sha256": operator_sha256})
    _warn_about_precision(spectra)
    log.info("%s spectra of %d samples with %s", spectra.domain, len(spectra_out), operator_path)


def _non_finite_layers(pattern: Pattern) -> str:
    """Names of the layers where a pattern has NaN or Inf values, for a message."""
    layers = zip(pattern.layout.layers, pattern.layers(), strict=True)
    return shortened([layer.name for layer, values in layers if not np.isfinite(values).all()])


def _warn_about_precision(spectra: Pattern) -> None:
    digits = spectra.diagnostics.get("significant_digits")
    if digits is None:
        return
    names = [spectra.layout.layers[i].name for i in np.flatnonzero(digits.min(axis=0) < 3)]
    if names:
        log.warning(
            "causal spectra: layers %s keep fewer than 3 significant digits in float64 for some samples "
            "(per-layer digits are stored in each file's diagnostics/significant_digits)",
            names,
        )


def render_file(
    pattern_path: PathLike,
    pdf_out: PathLike,
    scale: str = "layerscale",
    cmap: str = "viridis",
    symlog: bool = False,
    model: str | None = None,
    input_path: PathLike | None = None,
) -> None:
    """Render an activations or spectrum file as a PDF: a summary page, then a page per layer.

    Parameters
    ----------
    pattern_path, pdf_out : path
        The pattern file and the PDF to write.
    scale, cmap : str
        Colour scale (``layerscale``, ``layernorm``, ``globalscale``, ``globalnorm``) and colormap.
    symlog : bool
        Symmetric-log colour scale (for spectra spanning many orders of magnitude).
    model : str, optional
        Model name for the summary page.
    input_path : path, optional
        The sample's activations file, whose layer 0 (the input) the summary page of a spectrum shows.
    """
    from nsp_pipeline.render.pages import render_pattern

    input_image = None if input_path is None else hdf5.read_pattern(input_path).layer(0)[0]
    pattern = hdf5.read_pattern(pattern_path)
    render_pattern(
        pattern, pdf_out, scale=scale, cmap=cmap, symlog=symlog, model=model, input_image=input_image
    )
