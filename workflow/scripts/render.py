"""Snakemake script of rule render: a folder of PDFs (activations and spectra) of a render batch."""

from nsp_pipeline.pipeline.logs import log_to
from nsp_pipeline.pipeline.stages import render_samples

with log_to(snakemake.log[0]):  # noqa: F821 (set by Snakemake)
    params = snakemake.params  # noqa: F821
    render_samples(
        dict(snakemake.input.items()),  # noqa: F821
        params.rows,
        params.samples,
        snakemake.output.pdfs,  # noqa: F821
        params.scale,
        params.cmap,
        params.symlog,
        model=snakemake.wildcards.model,  # noqa: F821
        min_digits=params.min_digits,
    )
