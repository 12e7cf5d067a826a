"""Snakemake script of rule graph_analytics: the weighted neuron graph's analytics, HDF5 and PDF."""

from nsp_pipeline.pipeline.logs import log_to
from nsp_pipeline.pipeline.stages import graph_analytics_file

with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
    graph_analytics_file(
        snakemake.input.model,  # noqa: F821
        snakemake.input.graph,  # noqa: F821
        snakemake.output.summary,  # noqa: F821
        snakemake.output.pdf,  # noqa: F821
        snakemake.params.settings,  # noqa: F821
        snakemake.params.reference,  # noqa: F821
        entry=snakemake.params.entry,  # noqa: F821
        metadata_path=snakemake.input.metadata,  # noqa: F821
        title=snakemake.wildcards.model,  # noqa: F821
    )
