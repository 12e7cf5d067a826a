"""Command line: every stage of the pipeline as a subcommand (``python -m nsp_pipeline <stage>``).

The subcommands call the same functions (:mod:`nsp_pipeline.pipeline.stages`) as the Snakemake workflow.
A ``--config`` file is checked as the workflow checks its own (:func:`nsp_pipeline.io.config.load_config`),
and option defaults are the configuration schema's (:func:`nsp_pipeline.core.defaults.default`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from nsp_pipeline.core.atomic import check_outputs
from nsp_pipeline.core.defaults import default
from nsp_pipeline.core.layout import GRANULARITIES
from nsp_pipeline.io.config import load_config
from nsp_pipeline.pipeline import stages
from nsp_pipeline.pipeline.logs import FORMAT
from nsp_pipeline.pipeline.summaries import summarize
from nsp_pipeline.render.pages import SCALES
from nsp_pipeline.transforms.api import TRANSFORM_TYPES


def _config(path: str | None) -> dict:
    if path is None:
        raise ValueError("--config is needed to look up the dataset")
    return load_config(path)


def _entry(config: dict, section: str, name: str, source: str) -> dict:
    entries = config.get(section) or {}
    if name not in entries:
        raise KeyError(f"{source} has no {section} entry {name!r}; it has {sorted(entries)}")
    return dict(entries[name])


def _named_files(entry: dict | None, base: Path, what: str) -> list[tuple[str, Path]]:
    """The existing files a config entry names (its text values, relative to ``base``), as inputs."""
    values = (entry or {}).items()
    return [
        (f"{what} {key}", base / value)
        for key, value in values
        if isinstance(value, str) and (base / value).is_file()
    ]


def _export(args) -> None:
    config = _config(args.config)
    entry = _entry(config, "models", args.model, args.config)
    train = entry.get("train_data")
    spec = _entry(config, "datasets", train, args.config) if train else None
    base = Path(args.config).parent
    check_outputs(
        [
            ("config", args.config),
            *_named_files(entry, base, "model"),
            *_named_files(spec, Path(), "dataset"),
        ],
        [("model artifact", args.out), ("metadata", args.metadata)],
    )
    stages.export_model(entry, args.out, args.metadata, spec, base_dir=base)


def _graph(args) -> None:
    reference, inputs = None, [("model", args.model)]
    if args.dataset is not None:
        config = _config(args.config)
        reference = {"dataset": _entry(config, "datasets", args.dataset, args.config), "index": args.index}
        inputs += [("config", args.config), *_named_files(reference["dataset"], Path(), "dataset")]
    check_outputs(inputs, [("graph", args.out)])
    stages.build_graph_file(args.model, args.out, args.granularity, not args.exclude_zero_edges, reference)


def _operator(args) -> None:
    inputs = [("graph", args.graph)] + ([] if args.model is None else [("model", args.model)])
    check_outputs(inputs, [("operator", args.out)])
    stages.compute_operator_file(args.graph, args.transform, args.out, args.model, args.max_nodes, args.k)


def _extract(args) -> None:
    config = _config(args.config)
    spec = _entry(config, "datasets", args.dataset, args.config)
    inputs = [("model", args.model), ("config", args.config), *_named_files(spec, Path(), "dataset")]
    check_outputs(inputs, [("activations", args.out)])
    stages.extract_activations(args.model, spec, args.samples, args.out, args.granularity)


def parse_target(text: str) -> dict:
    """A target of the command line, ``LAYER[:CHANNEL][@I,J,...][/mean|max]``, as a config entry.

    ``fc@3`` is unit 3 of ``fc``; ``conv2:5/mean`` the mean of channel 5; ``conv2:5@1,2`` one
    neuron of channel 5's map (0-based).
    """
    rest, _, reduction = text.partition("/")
    rest, _, unit = rest.partition("@")
    layer, _, channel = rest.partition(":")
    try:
        target = {"layer": layer}
        if channel:
            target["channel"] = int(channel)
        if unit:
            target["unit"] = [int(i) for i in unit.split(",")]
    except ValueError:
        raise ValueError(
            f"--target {text!r}: expected LAYER[:CHANNEL][@I,J,...][/mean|max] with integer channel and unit"
        ) from None
    if reduction:
        if reduction not in ("mean", "max"):
            raise ValueError(f"--target {text!r}: the reduction after '/' is mean or max, got {reduction!r}")
        target["reduction"] = reduction
    if not layer:
        raise ValueError(f"--target {text!r}: no layer name before ':', '@' or '/'")
    return target


#: Per interpret subcommand: its method and its options (config key, type, help).
_INTERPRET_COMMANDS = {
    "saliency": ("saliency", [("abs", "flag", "absolute gradients")]),
    "guided-backprop": ("guided_backprop", []),
    "smoothgrad": (
        "smoothgrad",
        [("n", int, "noisy copies per sample"), ("sigma", float, "noise std as a fraction of the range"),
         ("seed", int, "seed of the noise")],
    ),
    "occlusion": (
        "occlusion",
        [("window", int, "window side"), ("stride", int, "step of the window"),
         ("fill", float, "value of the occluded window"), ("output", ("grid", "pixel"), "grid or pixel")],
    ),
    "activation-map": (
        "activation_map",
        [("mode", ("nearest", "bilinear", "bicubic", "area"), "interpolation"),
         ("threshold_percentile", float, "dnnbrain's threshold (raises the floor)")],
    ),
}  # fmt: skip


def _interpret(args) -> None:
    method, options = _INTERPRET_COMMANDS[args.stage]
    config = _config(args.config)
    spec = _entry(config, "datasets", args.dataset, args.config)
    settings = dict(config["interpret"])
    if args.target:
        settings["targets"] = [parse_target(text) for text in args.target]
    settings["methods"] = [method]
    if options:
        section = dict(settings[method])
        for key, *_ in options:
            if getattr(args, key) is not None:
                section[key] = getattr(args, key)
        settings[method] = section
    inputs = [("model", args.model), ("config", args.config), *_named_files(spec, Path(), "dataset")]
    outputs = [("maps", args.out)] + ([] if args.pdf is None else [("PDF", args.pdf)])
    check_outputs(inputs, outputs)
    stages.interpret_batch(args.model, spec, args.samples, args.out, settings)
    if args.pdf is not None:
        stages.interpret_pictures(args.out, args.pdf)


def _minimal(args) -> None:
    config = _config(args.config)
    spec = _entry(config, "datasets", args.dataset, args.config)
    settings = dict(config["interpret"])
    if args.target:
        settings["targets"] = [parse_target(text) for text in args.target]
    settings["minimal"] = {**settings["minimal"], "methods": args.methods}
    inputs = [("model", args.model), ("config", args.config), *_named_files(spec, Path(), "dataset")]
    check_outputs(inputs, [("results", args.out), ("PDF", args.pdf)])
    stages.minimal_images_file(args.model, spec, args.samples, args.out, args.pdf, settings)


def _synthesize(args) -> None:
    config = _config(args.config) if args.config else None
    settings = dict(config["interpret"]) if config else {}
    if args.target:
        settings["targets"] = [parse_target(text) for text in args.target]
    synthesis = {**default("interpret.synthesis"), **settings.get("synthesis", {})}
    candidates = None
    if synthesis["candidates"] is not None:
        candidates = _entry(config, "datasets", synthesis["candidates"], args.config)
    for key in ("layers", "steps", "seed", "parameterisation"):
        if getattr(args, key) is not None:
            synthesis[key] = getattr(args, key)
    if args.value_range is not None:
        synthesis["value_range"] = args.value_range
    settings["synthesis"] = synthesis
    inputs = [("model", args.model)] + ([("config", args.config)] if args.config else [])
    if candidates is not None:
        inputs += _named_files(candidates, Path(), "candidates")
    check_outputs(inputs, [("result", args.out), ("PDF", args.pdf), ("feature sheet", args.sheet)])
    stages.synthesis_file(args.model, args.out, args.pdf, args.sheet, settings, candidates=candidates)


def _regions(args) -> None:
    config = _config(args.config)
    spec = _entry(config, "datasets", args.dataset, args.config)
    settings = {key: value for key, value in config["regions"].items() if key != "slices"}
    if args.scale is not None:
        settings["scale"] = args.scale
    for key in ("value_range", "pair"):
        if getattr(args, key) is not None:
            settings[key] = list(getattr(args, key))
    inputs = [("model", args.model), ("config", args.config), *_named_files(spec, Path(), "dataset")]
    check_outputs(inputs, [("partition", args.out), ("PDF", args.pdf)])
    stages.regions_file(args.model, spec, args.samples, args.out, args.pdf, settings)


def _interpret_parsers(sub) -> None:
    for command, (method, options) in _INTERPRET_COMMANDS.items():
        parser = sub.add_parser(
            command,
            help=f"{method.replace('_', ' ')} maps of chosen units for dataset samples -> HDF5 (and a PDF)",
        )
        parser.add_argument("model", help="model artifact")
        parser.add_argument(
            "--config", required=True, help="config holding the dataset (and interpret settings)"
        )
        parser.add_argument("--dataset", required=True, help="name of the dataset entry")
        parser.add_argument("--samples", type=int, nargs="+", required=True, help="sample positions")
        parser.add_argument(
            "--target", action="append",
            help="LAYER[:CHANNEL][@I,J,...][/mean|max], 0-based; repeat for several (default: the config's)",
        )  # fmt: skip
        parser.add_argument("--out", required=True, help="maps file (.h5)")
        parser.add_argument("--pdf", help="a page per sample and target")
        for key, kind, text in options:
            flag = "--" + key.replace("_", "-")
            default_value = default(f"interpret.{method}.{key}")
            if kind == "flag":
                parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
            elif isinstance(kind, tuple):
                parser.add_argument(flag, choices=kind, help=f"{text} (default: {default_value})")
            else:
                parser.add_argument(flag, type=kind, help=f"{text} (default: {default_value})")
        parser.set_defaults(run=_interpret)
    minimal = sub.add_parser(
        "minimal-images",
        help="minimal parcel, minimal component and masked images of chosen units -> HDF5, PDF",
    )
    minimal.add_argument("model", help="model artifact")
    minimal.add_argument(
        "--config", required=True, help="config holding the dataset (and interpret settings)"
    )
    minimal.add_argument("--dataset", required=True, help="name of the dataset entry")
    minimal.add_argument("--samples", type=int, nargs="+", required=True, help="sample positions")
    minimal.add_argument(
        "--target",
        action="append",
        help="LAYER[:CHANNEL][@I,J,...][/mean|max], 0-based (default: the config's)",
    )
    minimal.add_argument(
        "--methods", nargs="+", choices=("parcels", "components", "masked"),
        default=["parcels", "components", "masked"], help="which images (default: all three)",
    )  # fmt: skip
    minimal.add_argument("--out", required=True, help="results file (.h5)")
    minimal.add_argument("--pdf", required=True, help="a page per sample and target")
    minimal.set_defaults(run=_minimal)
    regions = sub.add_parser(
        "regions",
        help="the exact linear regions and decision boundary on the plane through three samples -> HDF5, PDF",
    )
    regions.add_argument("model", help="model artifact (a piecewise-linear network)")
    regions.add_argument("--config", required=True, help="config holding the dataset (and regions settings)")
    regions.add_argument("--dataset", required=True, help="name of the dataset entry")
    regions.add_argument(
        "--samples", type=int, nargs=3, required=True, metavar="POSITION",
        help="positions of the three samples the plane goes through (the first is its origin)",
    )  # fmt: skip
    regions.add_argument(
        "--scale", type=float, help=f"domain half-side / anchor spread (default: {default('regions.scale')})"
    )
    regions.add_argument(
        "--value-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
        help="clip the domain to inputs within [LOW, HIGH] (default: the config's)",
    )  # fmt: skip
    regions.add_argument(
        "--pair", type=int, nargs=2, metavar="CLASS", help="also draw the tie of two classes"
    )
    regions.add_argument("--out", required=True, help="partition file (.h5)")
    regions.add_argument("--pdf", required=True, help="pictures of the partition (.pdf)")
    regions.set_defaults(run=_regions)
    synth = sub.add_parser(
        "synthesize", help="inputs that maximise units (activation maximisation) -> HDF5, PDF, feature sheet"
    )
    synth.add_argument("model", help="model artifact")
    synth.add_argument("--config", help="config whose interpret section sets targets and parameters")
    synth.add_argument(
        "--layers", nargs="+", help="layers whose every channel is synthesised (the feature sheet)"
    )
    synth.add_argument("--target", action="append", help="LAYER[:CHANNEL][@I,J,...][/mean|max], 0-based")
    synth.add_argument(
        "--steps", type=int, help=f"optimisation steps (default: {default('interpret.synthesis.steps')})"
    )
    synth.add_argument("--seed", type=int, help="seed (default: the config's, else 0)")
    synth.add_argument("--parameterisation", choices=("pixel", "fourier"), help="default: fourier")
    synth.add_argument(
        "--value-range", type=float, nargs=2, metavar=("LOW", "HIGH"), help="valid input range"
    )
    synth.add_argument("--out", required=True, help="result file (.h5)")
    synth.add_argument("--pdf", required=True, help="a page per objective: the input and its trajectory")
    synth.add_argument("--sheet", required=True, help="the feature sheet of each layer")
    synth.set_defaults(run=_synthesize)


def _transform(args) -> None:
    folder = Path(args.out_dir)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"--out-dir {folder} is a file; expected a folder (created if missing)")
    outputs = [folder / Path(path).name for path in args.activations]
    stages.transform_files(
        args.activations, args.operator, outputs, precision=args.precision, digits=args.digits
    )


def _graph_analytics(args) -> None:
    settings, reference, inputs = {}, None, [("model", args.model), ("graph", args.graph)]
    if args.config is not None:
        config = _config(args.config)
        settings = dict(config["graph_analytics"])
        settings["blocks"] = (settings["blocks"] or {}).get(args.name)
        inputs.append(("config", args.config))
        if args.dataset is not None:
            spec = _entry(config, "datasets", args.dataset, args.config)
            reference = {"dataset": spec, "index": args.index}
            inputs += _named_files(spec, Path(), "dataset")
    elif args.dataset is not None:
        raise ValueError("--dataset needs --config, the file that defines it")
    for key in ("weights", "analytics"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    check_outputs(inputs, [("graph summary", args.out), ("PDF", args.pdf)])
    stages.graph_analytics_file(
        args.model, args.graph, args.out, args.pdf, settings, reference, title=args.name
    )


def _granularity_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--granularity", choices=GRANULARITIES, default=default("graph.granularity"),
        help="layer granularity (default: %(default)s)",
    )  # fmt: skip


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m nsp_pipeline``."""
    main = argparse.ArgumentParser(prog="python -m nsp_pipeline", description=__doc__.splitlines()[0])
    main.add_argument("-q", "--quiet", action="store_true", help="only print warnings and errors")
    sub = main.add_subparsers(dest="stage", required=True, metavar="STAGE")

    export = sub.add_parser(
        "export-model", help="build (and train) a model of a config file; write its artifact"
    )
    export.add_argument("--config", required=True, help="the workflow's config file (checked alike)")
    export.add_argument("--model", required=True, help="name of the model entry")
    export.add_argument("--out", required=True, help="model artifact (.pt)")
    export.add_argument("--metadata", required=True, help="metadata (.json)")
    export.set_defaults(run=_export)

    graph = sub.add_parser("build-graph", help="neuron DAG of an exported model -> HDF5")
    graph.add_argument("model", help="model artifact")
    graph.add_argument("out", help="graph file (.h5)")
    _granularity_option(graph)
    graph.add_argument(
        "--exclude-zero-edges", action=argparse.BooleanOptionalAction, default=not default("graph.incl"),
        help="INCL=False: keep only edges with a non-zero partial derivative at the reference sample",
    )  # fmt: skip
    graph.add_argument("--config", help="config holding the reference dataset")
    graph.add_argument("--dataset", help="dataset of the reference sample (with --exclude-zero-edges)")
    graph.add_argument(
        "--index", type=int, default=default("graph.reference.index"),
        help="position of the reference sample (default: %(default)s)",
    )  # fmt: skip
    graph.set_defaults(run=_graph)

    operator = sub.add_parser("compute-operator", help="precomputed operator of a transform type -> HDF5")
    operator.add_argument("graph", help="graph file")
    operator.add_argument("out", help="operator file (.h5)")
    operator.add_argument("--transform", choices=TRANSFORM_TYPES, default="standard")
    operator.add_argument("--model", help="standard: the model artifact, traced for the factorised operator")
    operator.add_argument(
        "--max-nodes", type=int, default=default("laplacian.max_nodes"),
        help="Laplacian: size limit of the full eigendecomposition (default: %(default)s)",
    )  # fmt: skip
    operator.add_argument(
        "--k", type=int, default=default("laplacian.k"),
        help="Laplacian: only the k lowest frequencies (partial spectrum; default: all)",
    )  # fmt: skip
    operator.set_defaults(run=_operator)

    extract = sub.add_parser(
        "extract-activations", help="activations of dataset samples in one forward pass -> one shard file"
    )
    extract.add_argument("model", help="model artifact")
    extract.add_argument("--config", required=True, help="config holding the dataset")
    extract.add_argument("--dataset", required=True, help="name of the dataset entry")
    extract.add_argument("--samples", type=int, nargs="+", required=True, help="sample positions")
    extract.add_argument("--out", required=True, help="shard file (.h5) of the samples, in the order given")
    _granularity_option(extract)
    extract.set_defaults(run=_extract)

    spectrum = sub.add_parser("transform", help="spectra of activations shards, a spectra shard per shard")
    spectrum.add_argument("operator", help="operator file")
    spectrum.add_argument("activations", nargs="+", help="activations files (shards)")
    spectrum.add_argument("--out-dir", required=True, help="folder for the spectra (same file names)")
    spectrum.add_argument(
        "--precision", choices=("auto", "float64", "exact"), default=default("causal.precision"),
        help="arithmetic of causal spectra: exact integer arithmetic where float64 keeps fewer than --digits "
        "correct digits (auto), or either everywhere (default: %(default)s)",
    )  # fmt: skip
    spectrum.add_argument(
        "--digits", type=float, default=default("causal.digits"),
        help="correct digits wanted per coefficient with --precision auto (default: %(default)s)",
    )  # fmt: skip
    spectrum.set_defaults(run=_transform)

    render = sub.add_parser(
        "render", help="PDF of one sample of an activations or spectrum file, a page per layer"
    )
    render.add_argument("pattern", help="activations or spectrum file (a shard)")
    render.add_argument("out", help="PDF file")
    scale = default("render.scale")
    render.add_argument("--scale", choices=SCALES, default=scale, help="colour limits (default: %(default)s)")
    render.add_argument(
        "--cmap", default=default("render.cmap"), help="any matplotlib colormap (default: %(default)s)"
    )
    render.add_argument(
        "--symlog", action=argparse.BooleanOptionalAction, default=default("render.symlog"),
        help="symmetric-log colour scale",
    )  # fmt: skip
    render.add_argument("--model", help="model name for the summary page")
    render.add_argument("--input", help="the sample's activations file (its input image, for spectra)")
    render.add_argument(
        "--sample", type=int, help="id of the sample to draw (its source index); needed for a file of several"
    )
    render.add_argument(
        "--min-digits", type=float, default=default("render.min_digits"),
        help="causal layers with fewer correct digits are drawn hatched, as noise (default: %(default)s)",
    )  # fmt: skip
    render.set_defaults(
        run=lambda a: stages.render_file(
            a.pattern, a.out, a.scale, a.cmap, a.symlog, a.model, a.input, a.sample, a.min_digits
        )
    )

    analytics = sub.add_parser(
        "graph-analytics", help="analytics of a model's weighted neuron graph -> HDF5 and a PDF of plots"
    )
    analytics.add_argument("model", help="model artifact")
    analytics.add_argument("graph", help="its graph file (build-graph)")
    analytics.add_argument("--out", required=True, help="graph summary file (.h5)")
    analytics.add_argument("--pdf", required=True, help="PDF of the plots")
    analytics.add_argument(
        "--config", help="config whose section graph_analytics sets the analytics (and holds --dataset)"
    )
    analytics.add_argument(
        "--weights", choices=("structural", "local", "none"),
        help=f"edge weights (default: the config's, else {default('graph_analytics.weights')})",
    )  # fmt: skip
    analytics.add_argument(
        "--analytics", nargs="+", choices=default("graph_analytics.analytics"),
        help="which analytics (default: the config's, else all)",
    )  # fmt: skip
    analytics.add_argument("--dataset", help="dataset of the sample of the local weights (with --config)")
    analytics.add_argument(
        "--index", type=int, default=0, help="position of that sample (default: %(default)s)"
    )
    analytics.add_argument(
        "--name", default="", help="the model's name: its blocks in the config, and the PDF's titles"
    )
    analytics.set_defaults(run=_graph_analytics)

    _interpret_parsers(sub)

    summary = sub.add_parser("summarize", help="CSV tables of samples and of layer energies")
    summary.add_argument("activations", nargs="+", help="activations files")
    summary.add_argument("--out", required=True, help="per-sample CSV file")
    summary.add_argument("--layers", required=True, help="per-layer CSV file")
    summary.set_defaults(run=lambda a: summarize({"activations": a.activations}, [], a.out, a.layers))
    return main


def main(argv: list[str] | None = None) -> int:
    """Run one stage; errors are printed as one line, with exit status 1.

    No stage writes over one of its inputs: an output that is an input (by any path or link), or
    that two inputs would share, is refused before anything runs
    (:func:`nsp_pipeline.core.atomic.check_outputs`).
    """
    args = parser().parse_args(argv)
    level = logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format=FORMAT, datefmt="%H:%M:%S")
    try:
        args.run(args)
    except (ValueError, KeyError, IndexError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0
