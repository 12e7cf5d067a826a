"""Snakemake script of rule summarize: per-sample and per-layer tables of one analysis."""

from nsp_pipeline.pipeline.logs import log_to
from nsp_pipeline.pipeline.summaries import summarize

with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
    inputs = dict(snakemake.input.items())  # noqa: F821
    patterns = {name: files for name, files in inputs.items() if not name.endswith("_pdf")}
    pdfs = [pdf for name, files in inputs.items() if name.endswith("_pdf") for pdf in files]
    output = snakemake.output  # noqa: F821
    title = f"{snakemake.wildcards.model} × {snakemake.wildcards.dataset}"  # noqa: F821
    summarize(patterns, pdfs, output.samples, output.layers, output.dataset, output.plots, title)
