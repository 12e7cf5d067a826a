"""Snakemake script of rule build_graph."""

from nsp_pipeline.pipeline.logs import log_to
from nsp_pipeline.pipeline.stages import build_graph_file

with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
    build_graph_file(
        snakemake.input.model,  # noqa: F821
        snakemake.output.graph,  # noqa: F821
        snakemake.params.granularity,  # noqa: F821
        snakemake.params.incl,  # noqa: F821
        snakemake.params.reference,  # noqa: F821
        entry=snakemake.params.entry,  # noqa: F821
        metadata_path=snakemake.input.metadata,  # noqa: F821
    )
