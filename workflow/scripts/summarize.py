"""Snakemake script of rule summarize."""

from nsp_pipeline.cli import log_to
from nsp_pipeline.stages import summarize

with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
    inputs = dict(snakemake.input.items())  # noqa: F821
    activations = inputs.pop("activations")
    summarize(activations, inputs, snakemake.output.table)  # noqa: F821
