"""Snakemake script of the render rules: for each sample of a batch, PDFs of its activations and spectra."""

from nsp_pipeline.pipeline.logs import log_to
from nsp_pipeline.pipeline.stages import render_file

with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
    params = snakemake.params  # noqa: F821
    files = zip(snakemake.input.patterns, snakemake.output.pdfs, params.inputs, strict=True)  # noqa: F821
    for pattern, pdf, activations in files:
        render_file(pattern, pdf, params.scale, params.cmap, params.symlog, params.model, activations)
