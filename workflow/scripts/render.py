"""Snakemake script of the render rules: for each sample of a batch, PDFs of its activations and spectra."""

from nsp_pipeline.logs import log_to
from nsp_pipeline.stages import render_file

with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
    for pattern, pdf in zip(snakemake.input.patterns, snakemake.output.pdfs, strict=True):  # noqa: F821
        render_file(pattern, pdf, snakemake.params.scale, snakemake.params.cmap)  # noqa: F821
