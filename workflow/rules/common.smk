# Configuration checks and helper functions of the workflow (no rules here).

import matplotlib
from snakemake.utils import validate

from nsp_pipeline.datasets import dataset_size, select_samples


validate(config, schema="../schemas/config.schema.yaml")


def check_config():
    """Cross-checks the schema cannot express, with messages that name the key to fix."""
    for index, analysis in enumerate(config["analyses"]):
        for key, section in (("model", "models"), ("dataset", "datasets")):
            if analysis[key] not in config[section]:
                raise ValueError(
                    f"config: analyses[{index}].{key} is {analysis[key]!r}; "
                    f"expected one of the {section}: {sorted(config[section])}"
                )
    for name, entry in config["models"].items():
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


def sample_names(dataset):
    """Zero-padded positions of the configured samples of a dataset."""
    positions = select_samples(dataset_size(config["datasets"][dataset]), config["samples"])
    return [f"{position:05d}" for position in positions]


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


def summary_inputs(wildcards):
    """Per-sample files of one analysis, by kind, for its summary table."""
    samples = sample_names(wildcards.dataset)
    base = f"results/{wildcards.model}/{wildcards.dataset}"
    inputs = {"activations": [f"{base}/activations/{s}.h5" for s in samples]}
    for transform in config["transforms"]:
        inputs[transform] = [f"{base}/{transform}/{s}.h5" for s in samples]
    for pattern in ["activations", *config["transforms"]]:
        inputs[f"{pattern}_pdf"] = [f"{base}/pdf/{s}_{pattern}.pdf" for s in samples]
    return inputs
