# Configuration checks and helper functions of the workflow (no rules here).

import collections
import functools
import itertools
import os
import random
from dataclasses import dataclass
from pathlib import Path

from snakemake.logging import logger

from nsp_pipeline.data.specs import DatasetError, dataset_size, image_files, select_samples  # torch-free
from nsp_pipeline.io.config import validate_config

# The packaged schema (nsp_pipeline/core/config.schema.yaml) and its cross-checks, as for the command
# line's --config: a bad config stops here, with a message naming its file and key; defaults are filled in
# and every mapping's keys sorted, so that the params of a rule (compared by their text) are equal for
# equal configs, whatever the order of their keys.
config.update(validate_config(config, files=workflow.configfiles))


def as_list(value):
    """A config value that may be one name or a list of names, as a list."""
    return list(value) if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Analysis:
    """One model on one dataset: its samples in batches, and the render batches of those rendered.

    A batch is one job per stage and one shard file per pattern (activations, each transform),
    named ``batch0000``, ``batch0001``, ...; ``batches`` maps each name to the positions of its
    samples in the dataset, in order. A render batch holds samples of one batch only, so that its
    job reads one shard per pattern; ``render_batches`` maps each name (numbered on their own) to
    its batch and the positions it renders.
    """

    model: str
    dataset: str
    batches: dict
    render_batches: dict

    @property
    def folder(self):
        return f"results/{self.model}/{self.dataset}"


def selected(key, dataset, size):
    """Positions a sample selection of the config (``samples`` or ``render.samples``) picks."""
    selection = config["render"].get("samples", config["samples"]) if key == "render.samples" else config[key]
    try:
        return [int(position) for position in select_samples(size, selection, key)]
    except DatasetError as error:
        raise ValueError(f"config: {key} for dataset {dataset!r}: {error}") from None


def size_of(dataset):
    """Number of samples of a dataset of the config, with the dataset named in its errors."""
    try:
        return dataset_size(config["datasets"][dataset])
    except DatasetError as error:
        raise ValueError(f"config: datasets.{dataset}: {error}") from None


def named_batches(items, size):
    """Consecutive chunks of ``size`` items, named batch0000, batch0001, ..."""
    chunks = [tuple(items[start : start + size]) for start in range(0, len(items), size)]
    return {f"batch{index:04d}": chunk for index, chunk in enumerate(chunks)}


def plan_analyses():
    """Every (model, dataset) combination of the config's analyses (lists sweep a product)."""
    sizes, plans = {}, {}
    per_job = config["batching"]["samples_per_job"]
    render_per_job = min(per_job, config["render"]["samples_per_job"])  # PDFs are slower per sample
    for analysis in config["analyses"]:
        for model, dataset in itertools.product(as_list(analysis["model"]), as_list(analysis["dataset"])):
            if (model, dataset) in plans:
                continue
            if dataset not in sizes:
                sizes[dataset] = size_of(dataset)
            analysed = selected("samples", dataset, sizes[dataset])
            batches = named_batches(analysed, per_job)
            rendered = set(selected("render.samples", dataset, sizes[dataset]))
            if not_analysed := sorted(rendered - set(analysed)):
                raise ValueError(
                    f"config: render.samples for dataset {dataset!r} selects positions {not_analysed[:10]}"
                    f"{' ...' if len(not_analysed) > 10 else ''} that samples does not analyse; "
                    "expected positions among those samples selects"
                )
            render_chunks = [
                (name, chunk)
                for name, positions in batches.items()
                for chunk in named_batches([p for p in positions if p in rendered], render_per_job).values()
            ]
            render_batches = {f"batch{index:04d}": chunk for index, chunk in enumerate(render_chunks)}
            plans[model, dataset] = Analysis(model, dataset, batches, render_batches)
    return plans


PLANS = plan_analyses()
ANALYSES = list(PLANS.values())
PATTERNS = ["activations", *config["transforms"]]


def sample_name(position):
    """A sample's name in file names and tables: its position in the dataset, zero-padded."""
    return f"{position:05d}"


def expected_pdfs(plan):
    """The folders of PDFs of an analysis that exist, each with the names of the PDFs it must hold.

    A render folder holds ``<sample>_<pattern>.pdf`` of its samples; the averages folder
    ``<pattern>_all.pdf`` and ``<pattern>_class_<label>.pdf`` of each class of its dataset summary
    (:func:`nsp_pipeline.render.dataset_plots.render_averages`), if that summary can be read.
    """
    folders = {}
    for name, (_, positions) in plan.render_batches.items():
        folder = Path(plan.folder, "pdf", name)
        if folder.is_dir():
            folders[folder] = {f"{sample_name(p)}_{pattern}.pdf" for p in positions for pattern in PATTERNS}
    averages, summary = Path(plan.folder, "averages"), Path(plan.folder, "dataset_summary.h5")
    if averages.is_dir() and summary.is_file():
        from nsp_pipeline.io.hdf5 import read_dataset_summary  # torch-free

        try:
            statistics = read_dataset_summary(summary, verify=False)
        except (OSError, ValueError):
            return folders  # a corrupt summary reruns nothing here; the job reading it names it
        folders[averages] = {
            f"{name}_{group}.pdf"
            for name, stats in statistics.items()
            for group in ["all", *(f"class_{label}" for label in stats.classes)]
        }
    return folders


def render_incomplete_folders_again():
    """Make Snakemake rerun the job of every folder of PDFs from which a PDF was deleted.

    A folder of PDFs is a ``directory()`` output: Snakemake knows it as a whole, by the time
    stamp of its ``.snakemake_timestamp`` file, and would not notice a PDF missing from it.
    Setting that time stamp to 1970 makes the folder older than its inputs, so its job runs
    again (a dry run shows it); nothing is deleted.
    """
    for plan in ANALYSES:
        for folder, expected in expected_pdfs(plan).items():
            missing = sorted(expected - {path.name for path in folder.iterdir()})
            if missing:
                shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
                logger.warning(f"{folder} lacks {len(missing)} of its PDFs ({shown}): its job runs again")
                stamp = folder / ".snakemake_timestamp"
                os.utime(stamp if stamp.exists() else folder, ns=(0, 0))


def warn_of_leftovers():
    """Name the batch files and folders of PDFs that earlier configs made and this one does not.

    Changing ``samples`` or the batch sizes renumbers the batches; what the old numbering left
    behind is read by no job, and is not deleted (it may be wanted): the warning says which.
    """
    for plan in ANALYSES:
        planned = {f"{pattern}/{batch}.h5" for pattern in PATTERNS for batch in plan.batches}
        planned |= {f"pdf/{batch}" for batch in plan.render_batches}
        found = {
            str(path.relative_to(plan.folder))
            for pattern in [*PATTERNS, "pdf"]
            for path in Path(plan.folder, pattern).glob("batch*")
        }
        if leftovers := sorted(found - planned):
            shown = ", ".join(leftovers[:5]) + (", ..." if len(leftovers) > 5 else "")
            logger.warning(
                f"{plan.folder} holds {len(leftovers)} batch outputs the config no longer makes ({shown}): "
                "no job reads them; delete them unless you want to keep them"
            )


if workflow.is_main_process:  # not in each cluster job, which parses this file again
    render_incomplete_folders_again()
    warn_of_leftovers()


def analysis(wildcards):
    """The planned analysis of a job's model and dataset wildcards."""
    try:
        return PLANS[wildcards.model, wildcards.dataset]
    except KeyError:
        planned = sorted(f"{model}/{dataset}" for model, dataset in PLANS)
        raise ValueError(
            f"results/{wildcards.model}/{wildcards.dataset}: no analysis of the config runs model "
            f"{wildcards.model!r} on dataset {wildcards.dataset!r}; planned: {planned}"
        ) from None


def planned(batches, wildcards, what):
    """The entry of ``wildcards.batch`` in a plan's batches or render batches, with a clear error."""
    try:
        return batches[wildcards.batch]
    except KeyError:
        raise ValueError(
            f"results/{wildcards.model}/{wildcards.dataset}: no {what} {wildcards.batch}; "
            f"the config makes {', '.join(batches) or 'none'}"
        ) from None


def batch_positions(wildcards):
    """Positions in the dataset of the samples of a batch job, in order."""
    return list(planned(analysis(wildcards).batches, wildcards, "batch"))


def shard(wildcards, pattern, batch):
    """The shard file of one pattern (activations or a transform type) of a batch."""
    return f"results/{wildcards.model}/{wildcards.dataset}/{pattern}/{batch}.h5"


def render_inputs(wildcards):
    """The shards a render job reads: its batch's, one per pattern."""
    batch, _ = planned(analysis(wildcards).render_batches, wildcards, "render batch")
    return {pattern: shard(wildcards, pattern, batch) for pattern in PATTERNS}


def render_rows(wildcards):
    """Rows in their shards of the samples a render job renders."""
    batch, positions = planned(analysis(wildcards).render_batches, wildcards, "render batch")
    return [analysis(wildcards).batches[batch].index(position) for position in positions]


def render_names(wildcards):
    """Names of the samples a render job renders (its PDFs are ``<name>_<pattern>.pdf``)."""
    _, positions = planned(analysis(wildcards).render_batches, wildcards, "render batch")
    return [sample_name(position) for position in positions]


def summary_inputs(wildcards):
    """Every shard of one analysis by pattern, and its folders of PDFs, for its summary tables."""
    plan = analysis(wildcards)
    inputs = {pattern: [shard(wildcards, pattern, batch) for batch in plan.batches] for pattern in PATTERNS}
    inputs["pdfs"] = [f"{plan.folder}/pdf/{batch}" for batch in plan.render_batches]
    return inputs


def interpret_settings(wildcards):
    """The settings of the interpret jobs (``top_k`` is the report's)."""
    return {key: value for key, value in config["interpret"].items() if key != "top_k"}


def interpret_inputs(wildcards):
    """The maps files of every batch of an analysis, in sample order."""
    plan = analysis(wildcards)
    return [f"{plan.folder}/interpret/{batch}.h5" for batch in plan.batches]


def rendered_positions(wildcards):
    """Positions in the dataset of the samples of an analysis that render.samples selects, in order."""
    plan = analysis(wildcards)
    return [p for _, positions in plan.render_batches.values() for p in positions]


def rendered_data(wildcards):
    """Dataset files the rendered samples of an analysis are read from."""
    return data_files(wildcards.dataset, rendered_positions(wildcards))


def interpret_rows(wildcards):
    """Rows, among an analysis's samples in batch order, of those render.samples selects."""
    plan = analysis(wildcards)
    rendered = {p for _, positions in plan.render_batches.values() for p in positions}
    ordered = [p for positions in plan.batches.values() for p in positions]
    return [row for row, position in enumerate(ordered) if position in rendered]


def sample_names(wildcards):
    """Names of every sample of an analysis, in the order of its shards."""
    return [sample_name(p) for positions in analysis(wildcards).batches.values() for p in positions]


def synthesis_candidates():
    """The spec of the dataset whose samples each synthesis objective also starts from (or None)."""
    name = config["interpret"]["synthesis"]["candidates"]
    return None if name is None else config["datasets"][name]


def synthesis_candidate_data(wildcards):
    """Files of the synthesis candidates' dataset (none without candidates)."""
    name = config["interpret"]["synthesis"]["candidates"]
    return [] if name is None else data_files(name)


def region_slices():
    """``(model, dataset, anchors)`` of every slice of ``regions.slices``, random draws made.

    ``anchors`` names the three samples the plane goes through, positions in the dataset joined by
    ``-`` (the first is the slice's origin); random draws are reproducible from the slice's seed.
    """
    slices = []
    for index, spec in enumerate(config["regions"]["slices"]):
        size = size_of(spec["dataset"])
        if "samples" in spec:
            draws = [spec["samples"]]
            outside = [position for position in spec["samples"] if position >= size]
            if outside:
                raise ValueError(
                    f"config: regions.slices[{index}].samples: {outside} outside dataset "
                    f"{spec['dataset']!r} of {size} samples"
                )
        else:
            if size < 3:
                raise ValueError(
                    f"config: regions.slices[{index}]: dataset {spec['dataset']!r} has {size} samples, "
                    "a slice needs 3"
                )
            generator = random.Random(spec["seed"])
            draws = [generator.sample(range(size), 3) for _ in range(spec["random"])]
        slices.extend(
            (spec["model"], spec["dataset"], "-".join(str(position) for position in draw)) for draw in draws
        )
    return list(dict.fromkeys(slices))


def region_settings(wildcards):
    """The settings of a regions job: the section without its list of slices."""
    return {key: value for key, value in config["regions"].items() if key != "slices"}


def region_positions(wildcards):
    """Positions in the dataset of the three samples a slice goes through."""
    return [int(position) for position in wildcards.anchors.split("-")]


def region_data(wildcards):
    """Dataset files the three samples of a slice are read from."""
    return data_files(wildcards.dataset, region_positions(wildcards))


def every_output(wildcards):
    """Every output of every job of the config's analyses, from the rules' own output patterns.

    The input of the target ``all``, because Snakemake makes a deleted file again only if a target
    needs it, not when an output made from it is still there and up to date.
    """
    jobs = collections.defaultdict(list, summarize_sweep=[{}])
    for model in sorted({plan.model for plan in ANALYSES}):
        jobs["export_model"].append({"model": model})
        jobs["build_graph"].append({"model": model})
        jobs["compute_operator"].extend({"model": model, "transform": t} for t in config["transforms"])
        if config["graph_analytics"]["enabled"]:
            jobs["graph_analytics"].append({"model": model})
        if config["interpret"]["synthesis"]["enabled"]:
            jobs["synthesize"].append({"model": model})
    for model, dataset, anchors in region_slices():
        jobs["regions"].append({"model": model, "dataset": dataset, "anchors": anchors})
    for plan in ANALYSES:
        names = {"model": plan.model, "dataset": plan.dataset}
        jobs["summarize"].append(names)
        jobs["render_averages"].append(names)
        jobs["extract_activations"].extend(names | {"batch": batch} for batch in plan.batches)
        jobs["transform"].extend(
            names | {"batch": batch, "transform": t} for batch in plan.batches for t in config["transforms"]
        )
        jobs["render"].extend(names | {"batch": batch} for batch in plan.render_batches)
        if config["interpret"]["targets"]:
            jobs["interpret"].extend(names | {"batch": batch} for batch in plan.batches)
            jobs["interpret_report"].append(names)
            if config["interpret"]["minimal"]["methods"]:
                jobs["minimal_images"].append(names)
    return [
        pattern.format(**job)
        for name, stage_jobs in jobs.items()
        for job in stage_jobs
        for pattern in getattr(rules, name).output
    ]


def batch_resources(megabytes_per_sample):
    """mem_mb and runtime (minutes) of a batch job, growing with its inputs and each retry."""
    return {
        "mem_mb": lambda wildcards, input, attempt: int(
            (1000 + 6 * input.size_mb + megabytes_per_sample * len(batch_positions(wildcards))) * attempt
        ),
        "runtime": lambda wildcards, attempt: 10 * attempt,
    }


@functools.cache
def images_of(dataset):
    """The image files of an image-folder dataset of the config, in the order of its positions."""
    try:
        return [str(path) for path in image_files(Path(config["datasets"][dataset]["path"]))]
    except DatasetError as error:
        raise ValueError(f"config: datasets.{dataset}: {error}") from None


def data_files(dataset, positions=None):
    """Files the samples of a dataset of the config (those at ``positions``, or all) are read from.

    An image folder's images are listed one by one: rewriting an image changes its own
    modification time, not its folder's, and a batch depends on its own images only.
    """
    spec = config["datasets"][dataset]
    if spec["source"] == "digits":
        files = []
    elif spec["source"] == "images":
        images = images_of(dataset)
        files = images if positions is None else [images[position] for position in positions]
    else:
        files = [spec["path"]]
    return files + ([spec["labels"]] if "labels" in spec else [])


def stamps(input_files):
    """A param of a rule's files from outside ``results/``: ``[path, size, mtime_ns]`` of each.

    Snakemake reruns a job whose input is newer than its output; a file replaced by an older
    one or by one of another size changes its stamp, a param, and so reruns the job as well.
    """

    def of(wildcards):
        stamped = []
        for path in input_files(wildcards):
            try:
                status = os.stat(path)
            except OSError:
                stamped.append([path, None, None])  # Snakemake reports the missing input
            else:
                stamped.append([path, status.st_size, status.st_mtime_ns])
        return stamped

    return of


def batch_data(wildcards):
    """Dataset files a batch job reads."""
    return data_files(wildcards.dataset, batch_positions(wildcards))


def model_files(wildcards):
    """Files a model entry reads (module, weights, pickle) and the dataset that trains it."""
    entry = config["models"][wildcards.model]
    files = [entry[key] for key in ("module", "weights", "pickle") if key in entry]
    return files + (data_files(entry["train_data"]) if "train" in entry else [])


def train_dataset(wildcards):
    """Dataset spec that trains a model, or None."""
    name = config["models"][wildcards.model].get("train_data")
    return config["datasets"][name] if name else None


def graph_reference():
    """The reference sample of an incl=false graph, or None."""
    reference = config["graph"].get("reference")
    if config["graph"]["incl"] or reference is None:
        return None
    return {"dataset": config["datasets"][reference["dataset"]], "index": reference["index"]}


def reference_data(wildcards):
    """Dataset files the reference sample of an incl=false graph is read from."""
    if graph_reference() is None:
        return []
    reference = config["graph"]["reference"]
    try:
        select_samples(size_of(reference["dataset"]), {"indices": [reference["index"]]})
    except DatasetError as error:
        raise ValueError(f"config: graph.reference.index: {error}") from None
    return data_files(reference["dataset"], [reference["index"]])


def analytics_reference_spec(model):
    """``(dataset name, index)`` of the sample of a model's local edge weights, or None.

    ``graph_analytics.reference``, else ``graph.reference``, else the first dataset the model is
    analysed on, at its first selected sample; None unless the weights are local.
    """
    settings = config["graph_analytics"]
    if settings["weights"] != "local":
        return None
    chosen = settings.get("reference") or config["graph"].get("reference")
    if chosen is not None:
        return chosen["dataset"], chosen["index"]
    dataset = next(plan.dataset for plan in ANALYSES if plan.model == model)
    return dataset, next(iter(PLANS[model, dataset].batches.values()))[0]


def analytics_reference(wildcards):
    """The reference sample of a model's local edge weights (dataset spec and index), or None."""
    spec = analytics_reference_spec(wildcards.model)
    if spec is None:
        return None
    dataset, index = spec
    try:
        select_samples(size_of(dataset), {"indices": [index]})
    except DatasetError as error:
        raise ValueError(f"config: graph_analytics.reference.index: {error}") from None
    return {"dataset": config["datasets"][dataset], "index": index}


def analytics_reference_data(wildcards):
    """Dataset files the reference sample of a model's local edge weights is read from."""
    spec = analytics_reference_spec(wildcards.model)
    return [] if spec is None else data_files(spec[0], [spec[1]])


def analytics_settings(wildcards):
    """The settings of a model's graph_analytics job: its own blocks; ``enabled`` is the workflow's."""
    settings = {key: value for key, value in config["graph_analytics"].items() if key != "enabled"}
    settings["blocks"] = (settings["blocks"] or {}).get(wildcards.model)
    return settings


def operator_inputs(wildcards):
    """The graph; for the causal transform also the model, traced for the factorised operator."""
    inputs = {"graph": f"results/models/{wildcards.model}/graph.h5"}
    if wildcards.transform == "standard":
        inputs["model"] = f"results/models/{wildcards.model}/model.pt"
    return inputs


def operator_settings(wildcards):
    """Settings an operator depends on: ``k`` of the Laplacian; none for the causal operator.

    The params of a job hold only what its output depends on, so that changing the Laplacian's
    ``k`` recomputes the Laplacian operator and what depends on it, never the causal one (the
    size limit ``laplacian.max_nodes`` refuses or allows, never changes, an operator: its job
    reads it from the config).
    """
    return {"k": config["laplacian"]["k"]} if wildcards.transform == "laplacian" else {}


def operator_memory(wildcards, input, attempt):
    """mem_mb of an operator job: the dense n × n Laplacian (full) or n × k eigenvectors (partial).

    The graph file holds about 16 bytes per edge; its node count is not known before it is
    read, so memory grows with the graph file and with each retry.
    """
    megabytes = 2000 + 20 * input.size_mb
    if wildcards.transform == "laplacian":
        n = config["laplacian"]["max_nodes"]
        k = config["laplacian"].get("k")
        megabytes += (8 * n * (k or n) * 4) / 2**20
    return int(megabytes * attempt)
