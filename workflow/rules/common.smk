# Configuration checks and helper functions of the workflow (no rules here).

import itertools
from dataclasses import dataclass

import matplotlib
from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")


def as_list(value):
    """A config value that may be one name or a list of names, as a list."""
    return list(value) if isinstance(value, list) else [value]


def check_config():
    """Cross-checks the schema cannot express, with messages that name the key to fix."""
    for index, analysis in enumerate(config["analyses"]):
        for key, section in (("model", "models"), ("dataset", "datasets")):
            for name in as_list(analysis[key]):
                if name not in config[section]:
                    raise ValueError(
                        f"config: analyses[{index}].{key} names {name!r}; "
                        f"expected one of the {section}: {sorted(config[section])}"
                    )
    for name, entry in config["models"].items():
        if "pickle" in entry and entry.get("trusted") is not True:
            raise ValueError(
                f"config: models.{name} is a pickled model ({entry['pickle']}) without 'trusted: true'; "
                "unpickling runs whatever code the file holds, so add 'trusted: true' only if you made "
                "the file or trust its source (or save a state_dict and use 'module', 'class' and 'weights')"
            )
        if "train" in entry and entry.get("train_data") not in config["datasets"]:
            raise ValueError(
                f"config: models.{name} has 'train' but its train_data {entry.get('train_data')!r} "
                f"is not one of the datasets {sorted(config['datasets'])}"
            )
    if config["render"]["cmap"] not in matplotlib.colormaps:
        raise ValueError(
            f"config: render.cmap {config['render']['cmap']!r} is not a matplotlib colormap "
            "(e.g. viridis, magma, RdBu_r)"
        )
    graph = config["graph"]
    if not graph["incl"] and graph.get("reference", {}).get("dataset") not in config["datasets"]:
        raise ValueError(
            "config: graph.incl is false, which needs graph.reference.dataset (one of the datasets) "
            "to evaluate partial derivatives at"
        )


check_config()

# Imported after the checks above, so that a bad config fails before torch's import (seconds).
from nsp_pipeline.data.datasets import DatasetError, dataset_size, select_samples


@dataclass(frozen=True)
class Analysis:
    """One model on one dataset: its samples, their batches (one job each), those rendered."""

    model: str
    dataset: str
    samples: tuple
    batches: tuple
    rendered: tuple
    render_batches: tuple

    @property
    def folder(self):
        return f"results/{self.model}/{self.dataset}"


def selected(key, dataset, size):
    """Positions a sample selection of the config (``samples`` or ``render.samples``) picks."""
    selection = config["render"].get("samples", config["samples"]) if key == "render.samples" else config[key]
    try:
        return select_samples(size, selection)
    except DatasetError as error:
        raise ValueError(f"config: {key} for dataset {dataset!r}: {error}") from None


def size_of(dataset):
    """Number of samples of a dataset of the config, with the dataset named in its errors."""
    try:
        return dataset_size(config["datasets"][dataset])
    except DatasetError as error:
        raise ValueError(f"config: datasets.{dataset}: {error}") from None


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
            positions = selected("samples", dataset, sizes[dataset])
            samples = tuple(f"{position:05d}" for position in positions)
            rendered = set(selected("render.samples", dataset, sizes[dataset]))
            batches = tuple(samples[start : start + per_job] for start in range(0, len(samples), per_job))
            chosen = tuple(name for name, position in zip(samples, positions) if position in rendered)
            render_batches = tuple(
                chosen[start : start + render_per_job] for start in range(0, len(chosen), render_per_job)
            )
            plans[model, dataset] = Analysis(model, dataset, samples, batches, chosen, render_batches)
    return list(plans.values())


ANALYSES = plan_analyses()
PATTERNS = ["activations", *config["transforms"]]


def analysis(wildcards):
    """The planned analysis of a job's model and dataset wildcards."""
    return next(a for a in ANALYSES if (a.model, a.dataset) == (wildcards.model, wildcards.dataset))


def rule_name(stage, plan, batch):
    """Rule name of one batch of one analysis (model and dataset names may hold '-')."""
    return f"{stage}__{plan.model}__{plan.dataset}__{batch:04d}".replace("-", "_")


def batch_resources(samples_per_job, megabytes_per_sample):
    """mem_mb and runtime (minutes) of a batch job, growing with its inputs and each retry."""
    return {
        "mem_mb": lambda wildcards, input, attempt: int(
            (1000 + 3 * input.size_mb + megabytes_per_sample * samples_per_job) * attempt
        ),
        "runtime": lambda wildcards, attempt: 10 * attempt,
    }


def dataset_files(dataset):
    """Files of a user dataset, so that changing them reruns what depends on them."""
    spec = config["datasets"][dataset]
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


def summary_inputs(wildcards):
    """Per-sample files of one analysis, by kind, for its summary tables."""
    plan, base = analysis(wildcards), f"results/{wildcards.model}/{wildcards.dataset}"
    inputs = {pattern: [f"{base}/{pattern}/{s}.h5" for s in plan.samples] for pattern in PATTERNS}
    for pattern in PATTERNS:
        inputs[f"{pattern}_pdf"] = [f"{base}/pdf/{s}_{pattern}.pdf" for s in plan.rendered]
    return inputs


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
