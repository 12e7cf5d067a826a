"""Snakemake script of rule render."""

from nsp_pipeline.cli import log_to
from nsp_pipeline.stages import render_file

with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
    render_file(
        snakemake.input.pattern,  # noqa: F821
        snakemake.output.pdf,  # noqa: F821
        snakemake.params.scale,  # noqa: F821
        snakemake.params.cmap,  # noqa: F821
    )
