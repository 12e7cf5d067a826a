# Configuration checks and helper functions of the workflow (no rules here).

import itertools
from dataclasses import dataclass

from nsp_pipeline.data.specs import DatasetError, dataset_size, select_samples  # torch-free
from nsp_pipeline.io.config import validate_config

# The packaged schema (nsp_pipeline/core/config.schema.yaml) and its cross-checks, as for the command
# line's --config: a bad config stops here, with a message naming its file and key; defaults are filled in.
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
        return [int(position) for position in select_samples(size, selection)]
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
            batches = named_batches(selected("samples", dataset, sizes[dataset]), per_job)
            rendered = set(selected("render.samples", dataset, sizes[dataset]))
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


def sample_names(wildcards):
    """Names of every sample of an analysis, in the order of its shards."""
    return [sample_name(p) for positions in analysis(wildcards).batches.values() for p in positions]


def batch_resources(megabytes_per_sample):
    """mem_mb and runtime (minutes) of a batch job, growing with its inputs and each retry."""
    return {
        "mem_mb": lambda wildcards, input, attempt: int(
            (1000 + 3 * input.size_mb + megabytes_per_sample * len(batch_positions(wildcards))) * attempt
        ),
        "runtime": lambda wildcards, attempt: 10 * attempt,
    }


def dataset_files(wildcards):
    """Files of a user dataset, so that changing them reruns what depends on them."""
    spec = config["datasets"][wildcards.dataset]
    return [spec[key] for key in ("path", "labels") if key in spec]


def model_files(wildcards):
    """Files a model entry reads (module, weights, pickle)."""
    entry = config["models"][wildcards.model]
    return [entry[key] for key in ("module", "weights", "pickle") if key in entry]


def train_dataset(wildcards):
    """Dataset spec that trains a model, or None."""
    name = config["models"][wildcards.model].get("train_data")
    return config["datasets"][name] if name else None


def graph_reference():
    """The reference sample of an incl=false graph, or None."""
    reference = config["graph"].get("reference")
    if config["graph"]["incl"] or reference is None:
        return None
    return {"dataset": config["datasets"][reference["dataset"]], "index": reference.get("index", 0)}


def operator_inputs(wildcards):
    """The graph; for the causal transform also the model, traced for the factorised operator."""
    inputs = {"graph": f"results/models/{wildcards.model}/graph.h5"}
    if wildcards.transform == "standard":
        inputs["model"] = f"results/models/{wildcards.model}/model.pt"
    return inputs


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
