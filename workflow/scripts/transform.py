"""Snakemake script of rule transform."""

from nsp_pipeline.cli import log_to
from nsp_pipeline.stages import transform_file

with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
    transform_file(
        snakemake.input.activations,  # noqa: F821
        snakemake.input.operator,  # noqa: F821
        snakemake.output.spectrum,  # noqa: F821
    )
