"""Snakemake script of rule export_model."""

from nsp_pipeline.pipeline.logs import log_to
from nsp_pipeline.pipeline.stages import export_model

with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
    export_model(
        snakemake.params.entry,  # noqa: F821
        snakemake.output.model,  # noqa: F821
        snakemake.output.metadata,  # noqa: F821
        snakemake.params.train_dataset,  # noqa: F821
    )
