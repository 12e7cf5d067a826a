# nsp-pipeline: activations, neuron graphs, causal and Laplacian spectra, PDFs.
# Usage: snakemake --cores 8   (configuration: config.yaml, schema: nsp_pipeline/core/config.schema.yaml)
# One rule per stage, its jobs addressed by wildcards (model, dataset, batch, transform): e.g.
# --set-resources extract_activations:mem_mb=8000, --groups render=g1, --set-threads transform=2.

import os

from snakemake.utils import min_version

from nsp_pipeline.io.config import read_yaml

min_version("9.0")

CONFIGFILE = "config.yaml"
# Read first with the package's bounded reader, before Snakemake's own, which would expand a
# "billion laughs" file without end and keep the last of two equal keys: either stops here, naming
# the file. (Snakemake reads --configfile files before this Snakefile: read_yaml checks them too,
# after Snakemake has read them; see the README.)
if os.path.exists(CONFIGFILE):
    read_yaml(CONFIGFILE)


configfile: CONFIGFILE


report: "workflow/report/workflow.rst"


# HDF5 file locks fail on many network filesystems; outputs are never written concurrently.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")


envvars:
    "HDF5_USE_FILE_LOCKING",


include: "workflow/rules/common.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/samples.smk"
include: "workflow/rules/summaries.smk"
include: "workflow/rules/regions.smk"


wildcard_constraints:
    model="[A-Za-z0-9][A-Za-z0-9_-]*",
    dataset="[A-Za-z0-9][A-Za-z0-9_-]*",
    batch="batch[0-9]+",
    transform="standard|laplacian",


# Tiny aggregation jobs run in the Snakemake process itself, never as cluster jobs.
localrules:
    all,
    summarize_sweep,


# Every output of the analyses is a target, so that a deleted one is made again.
rule all:
    input:
        every_output,
