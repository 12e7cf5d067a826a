"""Snakemake script of rule summarize: per-sample and per-layer tables of one analysis."""

from pathlib import Path

from nsp_pipeline.pipeline.logs import log_to
from nsp_pipeline.pipeline.summaries import summarize

with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
    inputs = dict(snakemake.input.items())  # noqa: F821
    pdfs = [pdf for folder in inputs.pop("pdfs") for pdf in sorted(Path(folder).glob("*.pdf"))]
    output = snakemake.output  # noqa: F821
    title = f"{snakemake.wildcards.model} × {snakemake.wildcards.dataset}"  # noqa: F821
    summarize(
        inputs,
        pdfs,
        output.samples,
        output.layers,
        output.dataset,
        output.plots,
        title,
        samples=snakemake.params.samples,  # noqa: F821
    )
