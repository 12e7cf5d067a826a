"""Snakemake script of rule extract_activations: one forward pass over a batch, one shard file."""

from nsp_pipeline.pipeline.logs import log_to
from nsp_pipeline.pipeline.stages import extract_activations

with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
    extract_activations(
        snakemake.input.model,  # noqa: F821
        snakemake.params.dataset,  # noqa: F821
        snakemake.params.positions,  # noqa: F821
        snakemake.output.activations,  # noqa: F821
        snakemake.params.granularity,  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
        entry=snakemake.params.entry,  # noqa: F821
        storage=snakemake.params.storage,  # noqa: F821
    )
