# nsp-pipeline: activations, neuron graphs, causal and Laplacian spectra, PDFs.
# Usage: snakemake --cores 8   (configuration: config.yaml, schema: workflow/schemas/)


import os


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


# HDF5 file locks fail on many network filesystems; outputs are never written concurrently.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")


envvars:
    "HDF5_USE_FILE_LOCKING",


include: "workflow/rules/common.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/samples.smk"


wildcard_constraints:
    model="[A-Za-z0-9][A-Za-z0-9_-]*",
    dataset="[A-Za-z0-9][A-Za-z0-9_-]*",
    sample="[0-9]+",
    transform="standard|laplacian",


rule all:
    input:
        [f"{plan.folder}/summary.csv" for plan in ANALYSES],
        [f"{plan.folder}/averages" for plan in ANALYSES],
        "results/sweep/summary.csv",
