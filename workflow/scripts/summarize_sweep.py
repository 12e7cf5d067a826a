"""Snakemake script of rule summarize_sweep: one table over every model × dataset × transform."""

from nsp_pipeline.pipeline.logs import log_to
from nsp_pipeline.pipeline.summaries import summarize_sweep

with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
    summarize_sweep(
        snakemake.params.analyses,  # noqa: F821
        snakemake.input.samples,  # noqa: F821
        snakemake.input.layers,  # noqa: F821
        snakemake.output.table,  # noqa: F821
        snakemake.output.hdf5,  # noqa: F821
    )
