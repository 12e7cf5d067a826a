"""Snakemake script of rule transform: the spectra of one batch's shard with one transform type."""

from nsp_pipeline.pipeline.logs import log_to
from nsp_pipeline.pipeline.stages import transform_files

with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
    transform_files(
        [snakemake.input.activations],  # noqa: F821
        snakemake.input.operator,  # noqa: F821
        [snakemake.output.spectra],  # noqa: F821
        storage=snakemake.params.storage,  # noqa: F821
        precision=snakemake.params.precision,  # noqa: F821
        digits=snakemake.params.digits,  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
    )
