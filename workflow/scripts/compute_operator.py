"""Snakemake script of rule compute_operator: the precomputed operator of one transform type."""

from nsp_pipeline.pipeline.logs import log_to
from nsp_pipeline.pipeline.stages import compute_operator_file

with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
    compute_operator_file(
        snakemake.input.graph,  # noqa: F821
        snakemake.wildcards.transform,  # noqa: F821
        snakemake.output.operator,  # noqa: F821
        model_path=snakemake.input.get("model"),  # noqa: F821
        max_nodes=snakemake.config["laplacian"]["max_nodes"],  # noqa: F821
        **snakemake.params.settings,  # noqa: F821
    )
