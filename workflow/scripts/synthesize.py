"""Snakemake script of rule synthesize: inputs that maximise units (activation maximisation)."""

from nsp_pipeline.pipeline.logs import log_to
from nsp_pipeline.pipeline.stages import synthesis_file

with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
    synthesis_file(
        snakemake.input.model,  # noqa: F821
        snakemake.output.result,  # noqa: F821
        snakemake.output.pdf,  # noqa: F821
        snakemake.output.sheet,  # noqa: F821
        snakemake.params.settings,  # noqa: F821
        entry=snakemake.params.entry,  # noqa: F821
        metadata_path=snakemake.input.metadata,  # noqa: F821
        title=snakemake.wildcards.model,  # noqa: F821
        candidates=snakemake.params.candidates,  # noqa: F821
    )
