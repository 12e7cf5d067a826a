"""Snakemake script of rule render_averages: the class-average patterns, rendered like samples.

The rendering runs in worker processes; where they start afresh ("spawn", "forkserver") they
import this file again, and the guard keeps them from running the job themselves.
"""

from nsp_pipeline.pipeline.logs import log_to
from nsp_pipeline.render.dataset_plots import render_summary_averages

if __name__ == "__main__":
    with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
        render_summary_averages(
            snakemake.input.dataset,  # noqa: F821
            snakemake.output.averages,  # noqa: F821
            title=f"{snakemake.wildcards.model} × {snakemake.wildcards.dataset}",  # noqa: F821
            scale=snakemake.params.scale,  # noqa: F821
            cmap=snakemake.params.cmap,  # noqa: F821
            symlog=snakemake.params.symlog,  # noqa: F821
            processes=snakemake.threads,  # noqa: F821
        )
