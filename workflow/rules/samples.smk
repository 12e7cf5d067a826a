# Per-batch stages. The analysed samples of each model and dataset are cut into batches of
# `batching.samples_per_job` (batch0000, batch0001, ...): per batch, one job per stage (one
# process, one forward pass, one batched transform) and one shard file per pattern, holding the
# batch's samples in order, each with its sample id. PDFs are rendered in render batches of
# `render.samples_per_job` samples of one batch, a folder of per-sample PDFs each.


rule extract_activations:
    input:
        model="results/models/{model}/model.pt",
        data=batch_data,
    output:
        activations="results/{model}/{dataset}/activations/{batch}.h5",
    log:
        "results/logs/extract_activations/{model}/{dataset}/{batch}.log",
    benchmark:
        "results/benchmarks/extract_activations/{model}/{dataset}/{batch}.tsv"
    conda:
        "../envs/nsp-pipeline.yaml"
    threads: config["batching"]["threads"]
    resources:
        **batch_resources(megabytes_per_sample=2),
    params:
        dataset=lookup(dpath="datasets/{dataset}", within=config),
        positions=batch_positions,
        granularity=config["graph"]["granularity"],
        files=stamps(batch_data),
        entry=lookup(dpath="models/{model}", within=config),
        storage=config["storage"],
    script:
        "../scripts/extract_activations.py"


rule transform:
    input:
        activations="results/{model}/{dataset}/activations/{batch}.h5",
        operator="results/models/{model}/operator_{transform}.h5",
    output:
        spectra="results/{model}/{dataset}/{transform}/{batch}.h5",
    log:
        "results/logs/transform/{model}/{dataset}/{transform}/{batch}.log",
    benchmark:
        "results/benchmarks/transform/{model}/{dataset}/{transform}/{batch}.tsv"
    conda:
        "../envs/nsp-pipeline.yaml"
    threads: 1
    resources:
        **batch_resources(megabytes_per_sample=2),
    params:
        storage=config["storage"],
        precision=config["causal"]["precision"],
        digits=config["causal"]["digits"],
    script:
        "../scripts/transform.py"


rule render:
    input:
        unpack(render_inputs),
    output:
        pdfs=report(
            directory("results/{model}/{dataset}/pdf/{batch}"),
            patterns=["{sample}_{pattern}.pdf"],
            caption="../report/sample_pdf.rst",
            category="Samples",
            subcategory="{model} × {dataset}",
            labels={"sample": "{sample}", "pattern": "{pattern}"},
        ),
    log:
        "results/logs/render/{model}/{dataset}/{batch}.log",
    benchmark:
        "results/benchmarks/render/{model}/{dataset}/{batch}.tsv"
    conda:
        "../envs/nsp-pipeline.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input, attempt: int((1000 + 6 * input.size_mb) * attempt),
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        rows=render_rows,
        samples=render_names,
        scale=config["render"]["scale"],
        cmap=config["render"]["cmap"],
        symlog=config["render"]["symlog"],
        min_digits=config["render"]["min_digits"],
    script:
        "../scripts/render.py"


rule interpret:
    input:
        model="results/models/{model}/model.pt",
        metadata="results/models/{model}/model.json",
        data=batch_data,
    output:
        maps="results/{model}/{dataset}/interpret/{batch}.h5",
    log:
        "results/logs/interpret/{model}/{dataset}/{batch}.log",
    benchmark:
        "results/benchmarks/interpret/{model}/{dataset}/{batch}.tsv"
    conda:
        "../envs/nsp-pipeline.yaml"
    threads: 1
    resources:
        **batch_resources(megabytes_per_sample=20),
    params:
        dataset=lookup(dpath="datasets/{dataset}", within=config),
        positions=batch_positions,
        settings=interpret_settings,
        files=stamps(batch_data),
        entry=lookup(dpath="models/{model}", within=config),
    script:
        "../scripts/interpret.py"
