"""Snakemake script of rule interpret_report: pages per sample and target, and the top images."""

from nsp_pipeline.pipeline.logs import log_to
from nsp_pipeline.pipeline.stages import interpret_report

with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
    interpret_report(
        snakemake.input.maps,  # noqa: F821
        snakemake.output.samples,  # noqa: F821
        snakemake.output.top,  # noqa: F821
        rows=snakemake.params.rows,  # noqa: F821
        top_k=snakemake.params.top_k,  # noqa: F821
        title=f"{snakemake.wildcards.model} on {snakemake.wildcards.dataset}",  # noqa: F821
    )
