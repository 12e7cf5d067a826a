"""Snakemake script of rule interpret: the maps of what drives each target, for a batch of samples."""

from nsp_pipeline.pipeline.logs import log_to
from nsp_pipeline.pipeline.stages import interpret_batch

with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
    interpret_batch(
        snakemake.input.model,  # noqa: F821
        snakemake.params.dataset,  # noqa: F821
        snakemake.params.positions,  # noqa: F821
        snakemake.output.maps,  # noqa: F821
        snakemake.params.settings,  # noqa: F821
        entry=snakemake.params.entry,  # noqa: F821
        metadata_path=snakemake.input.metadata,  # noqa: F821
    )
