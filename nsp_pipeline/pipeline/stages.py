"""The pipeline's stages, file in, file out: called alike by the CLI and the Snakemake workflow.

1. :func:`export_model` — build (and train) a model, write the artifact and its metadata;
2. :func:`build_graph_file` — the model's neuron DAG;
3. :func:`compute_operator_file` — the precomputed operator of one transform type;
   :func:`graph_analytics_file` — the analytics of the weighted neuron graph, HDF5 and PDF;
4. :func:`extract_activations` — activations of a batch of samples in one forward pass, written as
   one shard file (a pattern file of the batch's samples, each addressable by its sample id);
5. :func:`transform_files` — the spectra of shards, a spectra shard per activations shard;
6. :func:`render_file` — a PDF of one sample's activations or spectrum; :func:`render_samples` — the
   PDFs of some samples of a shard (the workflow's render jobs);
7. :func:`interpret_batch` — the maps of what drives chosen units, for a batch of samples;
   :func:`interpret_report` — their pictures, per sample and the top images of each unit;
   :func:`minimal_images_file` — minimal and masked images of some samples, HDF5 and PDF;
   :func:`synthesis_file` — inputs that maximise units (activation maximisation), HDF5 and PDFs;
8. :func:`regions_file` — the exact linear regions of a slice through three samples, HDF5 and PDF.

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

from nsp_pipeline.core.atomic import atomic_output, check_outputs
from nsp_pipeline.core.defaults import default
from nsp_pipeline.core.errors import NonFiniteError, ProvenanceError, TraceError, shortened
from nsp_pipeline.core.pattern import Pattern
from nsp_pipeline.core.progress import progress
from nsp_pipeline.io import hdf5
from nsp_pipeline.transforms.api import causal_operator_of, compute_operator, transform
from nsp_pipeline.transforms.causal import kernels
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
    from nsp_pipeline.data.loading import load_dataset
    from nsp_pipeline.model import artifact

    train = test = None
    if train_dataset is not None:
        input_shape = tuple(artifact.build_model(entry, base_dir).input_shape)
        train = load_dataset({**train_dataset, "split": "train"}, input_shape)
        test = load_dataset({**train_dataset, "split": "test"}, input_shape)
    metadata = artifact.export_model(entry, model_out, base_dir=base_dir, train_data=train, test_data=test)
    with atomic_output(metadata_out) as temporary:
        temporary.write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n")
    log.info("exported model to %s (test accuracy %s)", model_out, metadata.get("accuracy"))
    return metadata


def _reference_input(
    model_path: PathLike,
    reference: Mapping | None,
    entry: Mapping | None = None,
    metadata_path: PathLike | None = None,
):
    """The exported model (verified against its entry and metadata) and the sample its graph is built at."""
    import torch

    from nsp_pipeline.data.loading import load_samples
    from nsp_pipeline.model import artifact

    model, metadata = artifact.load_model(model_path, entry, metadata_path)
    shape = tuple(metadata["input_shape"])
    if reference is None:
        return model, torch.zeros(1, *shape)
    return model, load_samples(reference["dataset"], [int(reference.get("index", 0))], shape).inputs


def build_graph_file(
    model_path: PathLike,
    graph_out: PathLike,
    granularity: str = default("graph.granularity"),
    incl: bool = True,
    reference: Mapping | None = None,
    entry: Mapping | None = None,
    metadata_path: PathLike | None = None,
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
    entry, metadata_path : mapping, path, optional
        The model's config entry and the metadata exported with it; the artifact must belong to
        both (:func:`nsp_pipeline.model.artifact.load_model`).
    """
    from nsp_pipeline.graph.build import build_graph
    from nsp_pipeline.io.provenance import provenance
    from nsp_pipeline.model.artifact import model_checksum

    if not incl and reference is None:
        raise ValueError("incl=False keeps edges by their partial derivative at a reference sample; give one")
    model, example = _reference_input(model_path, reference, entry, metadata_path)
    graph = build_graph(model, example, granularity, incl=incl)
    settings = {"granularity": granularity, "incl": incl, "reference": reference}
    hdf5.write_graph(graph_out, graph, provenance(settings, model_checksum(model)))
    log.info("graph of %s: %d nodes, %d edges -> %s", model_path, graph.n_nodes, graph.n_edges, graph_out)


def graph_analytics_file(
    model_path: PathLike,
    graph_path: PathLike,
    summary_out: PathLike,
    pdf_out: PathLike,
    settings: Mapping | None = None,
    reference: Mapping | None = None,
    entry: Mapping | None = None,
    metadata_path: PathLike | None = None,
    title: str = "",
) -> None:
    """Weigh a model's neuron graph, compute its analytics, write them (HDF5) and draw them (PDF).

    Parameters
    ----------
    model_path : path
        Exported model artifact.
    graph_path : path
        Its graph file (:func:`build_graph_file`); the weights follow the graph's granularity.
    summary_out, pdf_out : path
        Output files (:func:`nsp_pipeline.io.hdf5.write_graph_summary`,
        :func:`nsp_pipeline.render.graph_plots.plot_graph_summary`).
    settings : mapping, optional
        The configuration section ``graph_analytics`` (defaults for what is absent).
    reference : mapping, optional
        ``{"dataset": spec, "index": position}``: the sample of the local weights (default: zeros).
    entry, metadata_path : mapping, path, optional
        The model's config entry and metadata; the artifact must belong to both.
    title : str
        Put before every page title of the PDF.
    """
    from nsp_pipeline.analysis.graph_summary import summarize_graph
    from nsp_pipeline.graph.weights import edge_weights
    from nsp_pipeline.io.provenance import provenance
    from nsp_pipeline.model.artifact import model_checksum
    from nsp_pipeline.render.graph_plots import plot_graph_summary

    settings = {**default("graph_analytics"), **(settings or {})}
    settings.pop("enabled", None)
    if settings["weights"] == "local" and reference is None:
        log.warning("local weights without a reference sample: partial derivatives at an all-zero input")
    model, example = _reference_input(model_path, reference, entry, metadata_path)
    graph = hdf5.read_graph(graph_path)
    checksum = model_checksum(model)
    if hdf5.read_provenance(graph_path).get("model_checksum", checksum) != checksum:
        raise ProvenanceError(f"{graph_path} was built from another model than {model_path}; rebuild it")
    if settings["weights"] != "none":
        graph = graph.with_weights(
            edge_weights(model, example, graph, settings["weights"]), settings["weights"]
        )
    summary = summarize_graph(graph, settings)
    hdf5.write_graph_summary(summary_out, summary, provenance({**settings, "reference": reference}, checksum))
    plot_graph_summary(summary, pdf_out, title, settings.get("class_names"))
    log.info("graph analytics of %s (%d nodes, %d edges) -> %s, %s", model_path, graph.n_nodes,
             graph.n_edges, summary_out, pdf_out)  # fmt: skip


def compute_operator_file(
    graph_path: PathLike,
    transform_type: str,
    operator_out: PathLike,
    model_path: PathLike | None = None,
    max_nodes: int = DEFAULT_MAX_NODES,
    k: int | None = default("laplacian.k"),
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
    from nsp_pipeline.io.provenance import provenance

    graph = hdf5.read_graph(graph_path)
    graph_sha256 = hdf5.read_header(graph_path)["content_sha256"]
    graph_model = hdf5.read_provenance(graph_path).get("model_checksum", "")
    settings = {"transform": transform_type, "max_nodes": max_nodes, "k": k}
    if transform_type == "standard":
        recorded = None
        if model_path is not None:
            from nsp_pipeline.model.artifact import model_checksum
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
    attributes = provenance(settings, graph_model, graph_sha256=graph_sha256, method=method)
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
    activations_out: PathLike,
    granularity: str = default("graph.granularity"),
    threads: int | None = None,
    entry: Mapping | None = None,
    storage: Mapping | None = None,
) -> None:
    """Record the activations of selected samples in one forward pass, as one shard file.

    Parameters
    ----------
    model_path : path
        Exported model artifact.
    dataset : mapping
        Dataset spec (see :mod:`nsp_pipeline.data.specs`).
    positions : sequence of int
        Positions of the samples in the dataset; only these samples are read.
    activations_out : path
        The shard: a pattern file holding the samples in the order of ``positions``, each with its
        ``sample_ids`` (index in the source data), label and prediction.
    granularity : {"children", "ops", "merged"}
        Layer granularity (must match the graph's).
    threads : int, optional
        Threads of torch's CPU kernels (``None``: torch's default).
    entry : mapping, optional
        The model's config entry, which the artifact must have been exported from.
    storage : mapping, optional
        The configuration's ``storage`` section (default: its defaults); see
        :func:`nsp_pipeline.io.hdf5.pattern_storage`.

    Raises
    ------
    NonFiniteError
        If the model gives NaN or Inf activations for a sample (nothing is written).
    TraceError
        If the model returns something else than one tensor with a batch axis
        (:func:`nsp_pipeline.model.records.check_output`; a tensor that is not ``(batch,
        classes)`` scores gives a warning and no predictions), or would normalise several
        samples with their batch's statistics.
    """
    import torch

    from nsp_pipeline.data.loading import load_samples
    from nsp_pipeline.io.provenance import provenance
    from nsp_pipeline.model import artifact
    from nsp_pipeline.model.capture import batch_statistics, trace
    from nsp_pipeline.model.records import check_output

    if threads is not None:
        torch.set_num_threads(threads)
    model, metadata = artifact.load_model(model_path, entry)
    if len(positions) > 1 and batch_statistics(model):
        raise TraceError(
            f"model {model_path}: batch norm {shortened(batch_statistics(model))} has no running statistics, "
            f"so each of the {len(positions)} samples would be normalised with the statistics of its whole "
            "batch; expected activations of each sample alone: give the module running statistics "
            "(track_running_stats=True) or extract one sample per job (batching.samples_per_job: 1)"
        )
    data = load_samples(dataset, positions, tuple(metadata["input_shape"]))
    recorded = trace(model, data.inputs, granularity)
    try:
        no_predictions = check_output(recorded.model_output, len(positions))
    except TraceError as error:
        raise TraceError(f"model {model_path} {error}") from None
    if no_predictions is not None:
        log.warning("model %s %s: its samples get no predictions (-1)", model_path, no_predictions)
    pattern = recorded.pattern(labels=data.labels, sample_ids=data.ids)
    finite = np.isfinite(pattern.values)
    if not finite.all():
        samples = [positions[row] for row in np.flatnonzero(~finite.all(axis=1))]
        raise NonFiniteError(
            f"model {model_path} gives NaN or Inf activations for samples {shortened(samples)} of dataset "
            f"{data.name!r}, in layers {_non_finite_layers(pattern)}; expected finite activations "
            "(the model overflows or takes e.g. log(0); rescale the inputs or fix the model)"
        )
    settings = {"dataset": dict(dataset), "granularity": granularity}
    attributes = provenance(settings, artifact.model_checksum(model), dataset=data.name)
    options = hdf5.pattern_storage({**default("storage"), **(storage or {})}, "activations")
    hdf5.write_pattern(activations_out, pattern, attributes, **options)
    log.info("activations of %d samples of %s -> %s", len(positions), data.name, activations_out)


def transform_files(
    activations_paths: Sequence[PathLike],
    operator_path: PathLike,
    spectra_out: Sequence[PathLike],
    storage: Mapping | None = None,
    precision: str = default("causal.precision"),
    digits: float = default("causal.digits"),
    threads: int | None = None,
) -> None:
    """Spectra of activations files (shards) with a precomputed operator, a spectra file per shard.

    Each file is transformed as one batch, and its spectra are written to the file at the same
    place in ``spectra_out``, sample for sample. Nothing is written unless every file can be
    transformed. Causal spectra whose layers keep fewer than 3 significant digits in float64 are
    written all the same, with their per-layer digits in the file; a warning names the layers.
    ``storage`` is the configuration's ``storage`` section (default: its defaults; see
    :func:`nsp_pipeline.io.hdf5.pattern_storage`); ``precision`` and ``digits`` choose the
    arithmetic of causal spectra (:func:`nsp_pipeline.transforms.api.transform`); ``threads`` the
    threads of its compiled loops (``None``: every core; a workflow job passes its rule's).

    Raises
    ------
    NonFiniteError
        If an activations file holds NaN or Inf values.
    ProvenanceError
        If an activations file comes from another model than the operator's graph.
    FileExistsError
        If an output would overwrite an input or another output (see
        :func:`nsp_pipeline.core.atomic.check_outputs`).
    """
    if len(activations_paths) != len(spectra_out):
        raise ValueError(f"{len(activations_paths)} activations files but {len(spectra_out)} output files")
    check_outputs(
        [("operator", operator_path), *(("activations", path) for path in activations_paths)],
        [(f"spectra of {source}", path) for source, path in zip(activations_paths, spectra_out, strict=True)],
    )
    # verified below, by read_operator, before anything is written
    operator_model = hdf5.read_provenance(operator_path, verify=False).get("model_checksum", "")
    shards = []
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
        shards.append((path, pattern, source))
    operator = hdf5.read_operator(operator_path)
    kernels.set_threads(threads)
    spectra = []
    for path, pattern, _ in shards:
        try:
            spectra.append(transform(pattern, operator, precision=precision, digits=digits))
        except ValueError as error:
            raise ValueError(f"transforming {path} with {operator_path}: {error}") from None
    operator_sha256 = hdf5.read_header(operator_path)["content_sha256"]
    storage = {**default("storage"), **(storage or {})}
    for (_, _, source), spectrum, path in zip(shards, spectra, spectra_out, strict=True):
        hdf5.write_pattern(
            path,
            spectrum,
            source | {"operator_sha256": operator_sha256},
            **hdf5.pattern_storage(storage, spectrum.domain),
        )
        _warn_about_precision(spectrum)
        log.info(
            "%s spectra of %d samples with %s -> %s", spectrum.domain, spectrum.n_samples, operator_path, path
        )


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
            "causal spectra: layers %s keep fewer than 3 correct digits for some samples (estimated; "
            "per-layer digits in each file's diagnostics/significant_digits, exact layers in "
            "diagnostics/exact_arithmetic; causal.precision: exact computes every layer exactly)",
            names,
        )


def render_file(
    pattern_path: PathLike,
    pdf_out: PathLike,
    scale: str = default("render.scale"),
    cmap: str = default("render.cmap"),
    symlog: bool = default("render.symlog"),
    model: str | None = None,
    input_path: PathLike | None = None,
    sample: int | None = None,
    min_digits: float = default("render.min_digits"),
) -> None:
    """Render one sample of an activations or spectrum file as a PDF: a summary page, then a page per layer.

    Parameters
    ----------
    pattern_path, pdf_out : path
        The pattern file (a shard of one or more samples) and the PDF to write.
    scale, cmap : str
        Colour scale (``layerscale``, ``layernorm``, ``globalscale``, ``globalnorm``) and colormap.
    symlog : bool
        Symmetric-log colour scale (for spectra spanning many orders of magnitude).
    model : str, optional
        Model name for the summary page.
    input_path : path, optional
        The sample's activations file, whose layer 0 (the input) the summary page of a spectrum shows.
    sample : int, optional
        The sample's id (its index in the source data, the files' ``sample_ids``); needed when the
        file holds more than one sample.
    min_digits : float
        Causal layers with fewer correct digits are drawn grey and hatched, as rounding noise.

    Raises
    ------
    ValueError
        If ``sample`` is None and the file holds several samples.
    ProvenanceError
        If ``input_path`` does not hold this sample, or comes from other data (see :func:`check_batch`).
    FileExistsError
        If ``pdf_out`` would overwrite an input.
    """
    from nsp_pipeline.render.pages import render_pattern

    inputs = [("pattern", pattern_path)] + ([] if input_path is None else [("input", input_path)])
    check_outputs(inputs, [("PDF", pdf_out)])
    chosen = None if sample is None else [sample]
    pattern = hdf5.read_pattern(pattern_path, sample_ids=chosen)
    if pattern.n_samples != 1:
        ids = "unknown" if pattern.sample_ids is None else shortened(pattern.sample_ids.tolist())
        raise ValueError(
            f"{pattern_path} holds {pattern.n_samples} samples (ids {ids}); choose one by its id "
            "(render --sample ID)"
        )
    input_image = None
    if input_path is not None:
        source = hdf5.read_pattern(input_path)
        if source.domain != "activations":
            raise ValueError(f"input {input_path} holds a {source.domain!r} spectrum; expected activations")
        if pattern.sample_ids is not None and source.sample_ids is not None:
            rows = np.flatnonzero(source.sample_ids == pattern.sample_ids[0])
            source = source.sample(int(rows[0])) if len(rows) else source
        check_batch((input_path, source), [(pattern_path, pattern)])
        input_image = source.layer(0)[0]
    render_pattern(
        pattern,
        pdf_out,
        scale=scale,
        cmap=cmap,
        symlog=symlog,
        model=model,
        input_image=input_image,
        min_digits=min_digits,
    )


#: Provenance that the files of one batch share: the model, the data set and the settings of the
#: activations (a spectrum carries those of the activations it was computed from).
SHARED_PROVENANCE = ("model_checksum", "dataset", "config_hash")


def check_batch(
    reference: tuple[PathLike, Pattern],
    others: Sequence[tuple[PathLike, Pattern]],
    same_samples: bool = True,
) -> None:
    """Refuse files that are not of one batch: the same samples, model, data set and settings.

    Parameters
    ----------
    reference : (path, Pattern)
        A file (normally the activations) and what was read of it.
    others : sequence of (path, Pattern)
        The batch's other files (spectra; or activations of other batches if not ``same_samples``).
    same_samples : bool
        Also require the same sample ids in the same order (the same number of samples if the
        ids are unknown).

    Raises
    ------
    ProvenanceError
        Naming both files: the first provenance attribute of :data:`SHARED_PROVENANCE` that differs
        (where both files record it), or the first sample that differs.
    """
    reference_path, reference_pattern = reference
    recorded = hdf5.read_provenance(reference_path)
    for path, pattern in others:
        attributes = hdf5.read_provenance(path)
        for key in SHARED_PROVENANCE:
            mine, theirs = attributes.get(key, ""), recorded.get(key, "")
            if mine and theirs and mine != theirs:
                raise ProvenanceError(
                    f"{path} has {key} {mine[:16]}... but {reference_path} has {theirs[:16]}...; "
                    "the files of a batch come from one model, data set and settings: regenerate "
                    f"{path} from {reference_path}"
                )
        if same_samples:
            _check_same_samples(reference_path, reference_pattern, path, pattern)


def _check_same_samples(
    reference_path: PathLike, reference: Pattern, path: PathLike, pattern: Pattern
) -> None:
    """Refuse a file whose sample ids (or number of samples, if the ids are unknown) differ."""
    expected, found = (None if p.sample_ids is None else p.sample_ids.tolist() for p in (reference, pattern))
    if expected == found and reference.n_samples == pattern.n_samples:
        return
    if expected is None or found is None:
        ids = ["unknown" if known is None else shortened(known) for known in (expected, found)]
        counts = reference.n_samples, pattern.n_samples
        detail = f"{counts[0]} samples (ids {ids[0]}) but {path} holds {counts[1]} (ids {ids[1]})"
    else:
        row = next((row for row, pair in enumerate(zip(expected, found)) if pair[0] != pair[1]), None)
        if row is None:
            row = min(len(expected), len(found))
        at = [f"id {ids[row]}" if row < len(ids) else "no sample" for ids in (expected, found)]
        detail = (
            f"sample ids {shortened(expected)} but {path} holds {shortened(found)}; the first difference "
            f"is at row {row}: {at[0]} in {reference_path}, {at[1]} in {path}"
        )
    raise ProvenanceError(
        f"{reference_path} holds {detail}; the files of a batch hold the same samples in the same "
        f"order: regenerate {path} from {reference_path}"
    )


def render_samples(
    shards: Mapping[str, PathLike],
    rows: Sequence[int],
    names: Sequence[str],
    pdf_dir: PathLike,
    scale: str = default("render.scale"),
    cmap: str = default("render.cmap"),
    symlog: bool = default("render.symlog"),
    model: str | None = None,
    min_digits: float = default("render.min_digits"),
) -> None:
    """PDFs of some samples of a shard, its activations and each spectrum: ``<pdf_dir>/<name>_<pattern>.pdf``.

    Each PDF is what :func:`render_file` makes of that sample alone; the summary pages of the
    spectra show the sample's input, layer 0 of its activations.

    Parameters
    ----------
    shards : mapping of str to path
        ``"activations"`` and each transform type to its shard file (the same samples, in the same order).
    rows : sequence of int
        Rows of the samples to render in the shards.
    names : sequence of str
        Their names in the PDF file names (the workflow names a sample by its zero-padded position).
    pdf_dir : path
        Folder of the PDFs; it appears complete or not at all.
    scale, cmap, symlog, model, min_digits
        As in :func:`render_file`.

    Raises
    ------
    ProvenanceError
        If the shards do not hold the same samples in the same order, or come from different models,
        data or settings (see :func:`check_batch`).
    """
    from nsp_pipeline.render.pages import render_pattern

    if len(rows) != len(names):
        raise ValueError(f"{len(rows)} rows but {len(names)} sample names")
    patterns = {kind: hdf5.read_pattern(path) for kind, path in shards.items()}
    check_batch(
        (shards["activations"], patterns["activations"]),
        [(shards[kind], pattern) for kind, pattern in patterns.items() if kind != "activations"],
    )
    inputs = patterns["activations"].layer(0)
    with atomic_output(pdf_dir) as folder:
        folder.mkdir()
        for row, name in zip(rows, names, strict=True):
            for kind, pattern in patterns.items():
                render_pattern(
                    pattern.sample(row),
                    folder / f"{name}_{kind}.pdf",
                    scale=scale,
                    cmap=cmap,
                    symlog=symlog,
                    model=model,
                    input_image=inputs[row],
                    min_digits=min_digits,
                )
    log.info("PDFs of %d samples -> %s", len(rows), pdf_dir)


def interpret_batch(
    model_path: PathLike,
    dataset: Mapping,
    positions: Sequence[int],
    maps_out: PathLike,
    settings: Mapping | None = None,
    entry: Mapping | None = None,
    metadata_path: PathLike | None = None,
) -> None:
    """Maps of what drives each target of ``settings`` for some samples of a dataset, to HDF5.

    Parameters
    ----------
    model_path : path
        Exported model artifact.
    dataset : mapping
        Dataset spec.
    positions : sequence of int
        Positions of the samples in the dataset.
    maps_out : path
        Output file (:func:`nsp_pipeline.io.hdf5.write_attribution_maps`).
    settings : mapping, optional
        The configuration section ``interpret`` (defaults for what is absent): targets, methods,
        each method's parameters.
    entry, metadata_path : mapping, path, optional
        The model's config entry and metadata; the artifact must belong to both.

    Raises
    ------
    ValueError
        Without targets, or for a target the model does not have (the message names the layer
        and the model's layers or the layer's shape).
    """
    import torch

    from nsp_pipeline.data.loading import load_samples
    from nsp_pipeline.interpret.maps import interpret
    from nsp_pipeline.io.provenance import provenance
    from nsp_pipeline.model import artifact
    from nsp_pipeline.model.records import check_output, predictions

    settings = {**default("interpret"), **(settings or {})}
    targets = _interpret_targets(settings)
    model, metadata = artifact.load_model(model_path, entry, metadata_path)
    data = load_samples(dataset, positions, tuple(metadata["input_shape"]))
    parameters = {
        method: {key: value for key, value in settings[method].items() if value is not None}
        for method in settings["methods"]
        if method in settings
    }
    with torch.no_grad():
        output = model.eval()(data.inputs)
    check_output(output, len(positions))
    maps = interpret(
        model, data.inputs, targets, settings["methods"], granularity=settings["granularity"],
        sample_ids=data.ids, labels=data.labels, predictions=predictions(output), **parameters,
    )  # fmt: skip
    attributes = provenance(settings, artifact.model_checksum(model), dataset=data.name)
    hdf5.write_attribution_maps(maps_out, maps, attributes)
    log.info("maps of %d targets for %d samples -> %s", len(targets), len(positions), maps_out)


def interpret_pictures(maps_file: PathLike, pdf_out: PathLike, title: str = "") -> None:
    """A page per sample and target of a maps file (:func:`interpret_batch`)."""
    from nsp_pipeline.render.interpret_plots import plot_attributions

    plot_attributions(hdf5.read_attribution_maps(maps_file), pdf_out, title)


def interpret_report(
    maps_files: Sequence[PathLike],
    samples_pdf: PathLike,
    top_pdf: PathLike,
    rows: Sequence[int] | None = None,
    top_k: int = default("interpret.top_k"),
    title: str = "",
) -> None:
    """Draw the maps of an analysis's batches: a page per sample and target, and the top images.

    Parameters
    ----------
    maps_files : sequence of path
        The batches' maps files, in sample order.
    samples_pdf : path
        Pages of the samples at ``rows`` (positions in the concatenated batches; default all).
    top_pdf : path
        Per target, the ``top_k`` samples of highest target value with their maps.
    rows : sequence of int, optional
        Which samples get pages.
    top_k : int
        Images per target.
    title : str
        Put before every page title.
    """
    from nsp_pipeline.interpret.results import concatenate
    from nsp_pipeline.render.interpret_plots import plot_attributions, plot_top_images

    maps = concatenate([hdf5.read_attribution_maps(path) for path in maps_files])
    plot_attributions(maps, samples_pdf, title, samples=rows)
    plot_top_images(maps, top_pdf, k=min(top_k, maps.n_samples), title=title)
    log.info("pictures of %d samples -> %s, %s", maps.n_samples, samples_pdf, top_pdf)


def _interpret_targets(settings: Mapping) -> list:
    """The targets of a configuration section ``interpret``, as ``Target`` objects."""
    from nsp_pipeline.interpret.targets import Target

    if not settings["targets"]:
        raise ValueError("interpret: no targets; list them in the config's interpret.targets")
    return [
        Target(t["layer"], t.get("channel"), tuple(t["unit"]) if "unit" in t else None, t.get("reduction"))
        for t in settings["targets"]
    ]


def minimal_images_file(
    model_path: PathLike,
    dataset: Mapping,
    positions: Sequence[int],
    results_out: PathLike,
    pdf_out: PathLike,
    settings: Mapping | None = None,
    entry: Mapping | None = None,
    metadata_path: PathLike | None = None,
    title: str = "",
) -> None:
    """Minimal parcel, minimal component and masked images of each target for some samples.

    Parameters
    ----------
    model_path : path
        Exported model artifact.
    dataset : mapping
        Dataset spec.
    positions : sequence of int
        Positions of the samples in the dataset.
    results_out, pdf_out : path
        Output files (:func:`nsp_pipeline.io.hdf5.write_minimal_images`,
        :func:`nsp_pipeline.render.minimal_plots.plot_minimal_images`: a page per sample and target).
    settings : mapping, optional
        The configuration section ``interpret``: its targets and ``minimal`` (methods and their
        parameters).
    entry, metadata_path : mapping, path, optional
        The model's config entry and metadata; the artifact must belong to both.
    title : str
        Put before every page title.
    """
    from nsp_pipeline.data.loading import load_samples
    from nsp_pipeline.interpret import minimal_images
    from nsp_pipeline.io.provenance import provenance
    from nsp_pipeline.model import artifact
    from nsp_pipeline.render.minimal_plots import plot_minimal_images

    settings = {**default("interpret"), **(settings or {})}
    minimal = {**default("interpret.minimal"), **settings["minimal"]}
    if not minimal["methods"]:
        raise ValueError("interpret.minimal.methods is empty: name parcels, components or masked")
    targets = _interpret_targets(settings)
    model, metadata = artifact.load_model(model_path, entry, metadata_path)
    data = load_samples(dataset, positions, tuple(metadata["input_shape"]))
    functions = {
        "parcels": minimal_images.minimal_parcel_image,
        "components": minimal_images.minimal_component_image,
        "masked": minimal_images.masked_image,
    }
    per_method: dict[str, list] = {method: [] for method in minimal["methods"]}
    stored = []
    for image, sample_id in progress(list(zip(data.inputs, data.ids)), "minimal images", unit="sample"):
        for method in minimal["methods"]:
            found = functions[method](
                model,
                image,
                targets,
                granularity=settings["granularity"],
                sample_id=int(sample_id),
                **minimal[method],
            )
            per_method[method].extend(found)
            stored.extend((int(sample_id), result) for result in found)
    hdf5.write_minimal_images(results_out, stored, provenance(settings, artifact.model_checksum(model)))
    plot_minimal_images(pdf_out, title=title, **per_method)
    log.info("minimal images of %d samples x %d targets -> %s", len(positions), len(targets), results_out)


def synthesis_file(
    model_path: PathLike,
    result_out: PathLike,
    pdf_out: PathLike,
    sheet_out: PathLike,
    settings: Mapping | None = None,
    entry: Mapping | None = None,
    metadata_path: PathLike | None = None,
    title: str = "",
    candidates: Mapping | None = None,
) -> None:
    """Synthesise inputs that maximise the targets of ``settings`` and every channel of its layers.

    Parameters
    ----------
    model_path : path
        Exported model artifact.
    result_out : path
        Output file (:func:`nsp_pipeline.io.hdf5.write_synthesis`).
    pdf_out, sheet_out : path
        A page per objective (input and trajectory); the feature sheet of each layer of
        ``synthesis.layers`` (every channel's input in a grid).
    settings : mapping, optional
        The configuration section ``interpret``: its targets and ``synthesis``.
    entry, metadata_path : mapping, path, optional
        The model's config entry and metadata; the artifact must belong to both.
    title : str
        Put before every page title.
    candidates : mapping, optional
        The spec of the data set that ``synthesis.candidates`` names: each objective also starts
        from its best sample of the first ``synthesis.candidate_samples`` (all: None), so that
        its input scores at least as high as each of them.
    """
    import torch

    from nsp_pipeline.data.loading import load_dataset, load_samples
    from nsp_pipeline.interpret.synthesis import Transform, synthesize
    from nsp_pipeline.interpret.targets import LayerReader, Target
    from nsp_pipeline.io.provenance import provenance
    from nsp_pipeline.model import artifact
    from nsp_pipeline.render.synthesis_plots import plot_feature_sheet, plot_synthesis

    settings = {**default("interpret"), **(settings or {})}
    options = {**default("interpret.synthesis"), **settings["synthesis"]}
    model, metadata = artifact.load_model(model_path, entry, metadata_path)
    shape = tuple(metadata["input_shape"])
    if not options["layers"]:
        raise ValueError("interpret.synthesis.layers is empty: name the layers of the feature sheet")
    reader = LayerReader(model, torch.zeros(1, *shape), settings["granularity"])
    targets = _interpret_targets(settings) if settings["targets"] else []
    for layer in options["layers"]:
        targets += [Target(layer, channel=c, reduction="mean") for c in range(reader.shape(layer)[0])]
    if (candidates is None) != (options["candidates"] is None):
        raise ValueError(
            f"interpret.synthesis.candidates is {options['candidates']!r} but the data set spec was "
            f"{'not ' if candidates is None else ''}given: give both or neither"
        )
    own = ("enabled", "layers", "candidates", "candidate_samples")
    parameters = {key: value for key, value in options.items() if key not in own}
    if candidates is not None:
        count = options["candidate_samples"]
        if count is None:
            parameters["candidates"] = load_dataset(candidates, shape).inputs
        else:
            parameters["candidates"] = load_samples(candidates, range(count), shape).inputs
    parameters["transforms"] = [Transform.from_record(record) for record in options["transforms"]]
    if parameters["value_range"] is not None:
        parameters["value_range"] = tuple(parameters["value_range"])
    result = synthesize(model, targets, shape, granularity=settings["granularity"], **parameters)
    hdf5.write_synthesis(result_out, result, provenance(settings, artifact.model_checksum(model)))
    plot_synthesis(result, pdf_out, title)
    plot_feature_sheet(result, sheet_out, title, layers=options["layers"])
    log.info("%d synthesised inputs of %s -> %s", len(targets), model_path, result_out)


def regions_file(
    model_path: PathLike,
    dataset: Mapping,
    positions: Sequence[int],
    partition_out: PathLike,
    pdf_out: PathLike,
    settings: Mapping | None = None,
    entry: Mapping | None = None,
    metadata_path: PathLike | None = None,
    title: str = "",
) -> None:
    """The exact linear regions and decision boundary of a model on the plane through three samples.

    Parameters
    ----------
    model_path : path
        Exported model artifact of a piecewise-linear network.
    dataset : mapping
        Dataset spec.
    positions : sequence of int
        Positions in the dataset of the three samples the plane goes through
        (:meth:`nsp_pipeline.interpret.slices.Slice.through`).
    partition_out, pdf_out : path
        Output files (:func:`nsp_pipeline.io.hdf5.write_regions`,
        :func:`nsp_pipeline.render.region_plots.write_region_pdf`).
    settings : mapping, optional
        The configuration section ``regions`` (``scale``, ``value_range``, ``pair``,
        ``class_names``, ``patterns``, ``max_cells``).
    entry, metadata_path : mapping, path, optional
        The model's config entry and metadata; the artifact must belong to both.
    title : str
        Put before every page title.

    Raises
    ------
    ValueError
        If the partition grows beyond ``max_cells`` cells (naming the slice and the layer).
    """
    from nsp_pipeline.data.loading import load_samples
    from nsp_pipeline.interpret.regions import linear_regions
    from nsp_pipeline.interpret.slices import Slice
    from nsp_pipeline.io.provenance import provenance
    from nsp_pipeline.model import artifact
    from nsp_pipeline.render.region_plots import write_region_pdf

    settings = {**default("regions"), **(settings or {})}
    settings.pop("slices", None)
    model, metadata = artifact.load_model(model_path, entry, metadata_path)
    data = load_samples(dataset, positions, tuple(metadata["input_shape"]))
    points = data.inputs.detach().cpu().numpy().astype(np.float64)
    labels = [
        f"#{int(sample)}" + ("" if label < 0 else f" ({_class_name(int(label), settings)})")
        for sample, label in zip(data.ids, data.labels)
    ]
    low, high = settings["value_range"] or (None, None)
    plane = Slice.through(points, margin=settings["scale"], labels=labels, lo=low, hi=high)
    name = "-".join(str(int(p)) for p in positions)

    def report(layer: str, n_cells: int) -> None:
        log.info("slice %s: %d cells after %s", name, n_cells, layer)
        if n_cells > settings["max_cells"]:
            raise ValueError(
                f"slice {name}: {n_cells} cells after layer {layer!r}, more than regions.max_cells "
                f"({settings['max_cells']}); shrink regions.scale or raise max_cells"
            )

    pair = None if settings["pair"] is None else tuple(settings["pair"])
    partition = linear_regions(model, plane, patterns=settings["patterns"], pair=pair, progress=report)
    hdf5.write_regions(partition_out, partition, provenance(settings, artifact.model_checksum(model)))
    write_region_pdf(
        pdf_out,
        partition,
        title=f"{title}, plane through samples {', '.join(labels)}" if title else "",
        thumbnails=list(points),
        class_names=settings.get("class_names"),
    )
    log.info("%d linear regions of slice %s -> %s", len(partition.areas), name, partition_out)


def _class_name(label: int, settings: Mapping) -> str:
    names = settings.get("class_names") or []
    return names[label] if label < len(names) else str(label)
