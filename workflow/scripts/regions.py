"""Snakemake script of rule regions: the linear regions of a slice through three samples, HDF5 and PDF."""

from nsp_pipeline.pipeline.logs import log_to
from nsp_pipeline.pipeline.stages import regions_file

with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
    regions_file(
        snakemake.input.model,  # noqa: F821
        snakemake.params.dataset,  # noqa: F821
        snakemake.params.positions,  # noqa: F821
        snakemake.output.partition,  # noqa: F821
        snakemake.output.pdf,  # noqa: F821
        snakemake.params.settings,  # noqa: F821
        entry=snakemake.params.entry,  # noqa: F821
        metadata_path=snakemake.input.metadata,  # noqa: F821
        title=f"{snakemake.wildcards.model} on {snakemake.wildcards.dataset}",  # noqa: F821
    )
