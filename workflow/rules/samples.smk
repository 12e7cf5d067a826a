# Per-sample stages, run in batches: activations and spectra of `batching.samples_per_job`
# samples per job (one process, one forward pass, one batched transform), one file per sample;
# a PDF per rendered sample; and the per-analysis summary tables.
#
# A batch's output files are known only from the config, so each batch gets its own rule,
# defined in the loop below (named <stage>__<model>__<dataset>__<batch>).


for plan in ANALYSES:
    for batch, samples in enumerate(plan.batches):
        tag = f"{plan.model}/{plan.dataset}/batch{batch:04d}"

        rule:
            name:
                rule_name("extract_activations", plan, batch)
            input:
                model=f"results/models/{plan.model}/model.pt",
                data=dataset_files(plan.dataset),
            output:
                activations=[f"{plan.folder}/activations/{s}.h5" for s in samples],
            params:
                dataset=config["datasets"][plan.dataset],
                positions=[int(s) for s in samples],
                granularity=config["graph"]["granularity"],
            log:
                f"results/logs/extract_activations/{tag}.log",
            benchmark:
                f"results/benchmarks/extract_activations/{tag}.tsv"
            threads: config["batching"]["threads"]
            resources:
                **batch_resources(len(samples), megabytes_per_sample=2),
            conda:
                "../envs/nsp-pipeline.yaml"
            script:
                "../scripts/extract_activations.py"

        for transform in config["transforms"]:

            rule:
                name:
                    rule_name(f"transform_{transform}", plan, batch)
                input:
                    activations=[f"{plan.folder}/activations/{s}.h5" for s in samples],
                    operator=f"results/models/{plan.model}/operator_{transform}.h5",
                output:
                    spectra=[f"{plan.folder}/{transform}/{s}.h5" for s in samples],
                log:
                    f"results/logs/transform_{transform}/{tag}.log",
                benchmark:
                    f"results/benchmarks/transform_{transform}/{tag}.tsv"
                threads: 1
                resources:
                    **batch_resources(len(samples), megabytes_per_sample=2),
                conda:
                    "../envs/nsp-pipeline.yaml"
                script:
                    "../scripts/transform.py"


rule render:
    input:
        patterns=expand(
            "results/{{model}}/{{dataset}}/{pattern}/{{sample}}.h5", pattern=PATTERNS
        ),
    output:
        pdfs=expand(
            "results/{{model}}/{{dataset}}/pdf/{{sample}}_{pattern}.pdf", pattern=PATTERNS
        ),
    params:
        scale=config["render"]["scale"],
        cmap=config["render"]["cmap"],
    log:
        "results/logs/render/{model}/{dataset}/{sample}.log",
    benchmark:
        "results/benchmarks/render/{model}/{dataset}/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input, attempt: int((1000 + 10 * input.size_mb) * attempt),
        runtime=lambda wildcards, attempt: 10 * attempt,
    conda:
        "../envs/nsp-pipeline.yaml"
    script:
        "../scripts/render.py"


rule summarize:
    input:
        unpack(summary_inputs),
    output:
        samples="results/{model}/{dataset}/summary.csv",
        layers="results/{model}/{dataset}/layers.csv",
    log:
        "results/logs/summarize/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/summarize/{model}/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
        runtime=lambda wildcards, attempt: 20 * attempt,
    conda:
        "../envs/nsp-pipeline.yaml"
    script:
        "../scripts/summarize.py"


rule summarize_sweep:
    input:
        samples=[f"{plan.folder}/summary.csv" for plan in ANALYSES],
        layers=[f"{plan.folder}/layers.csv" for plan in ANALYSES],
    output:
        table="results/sweep/summary.csv",
        hdf5="results/sweep/summary.h5",
    params:
        analyses=[[plan.model, plan.dataset] for plan in ANALYSES],
    log:
        "results/logs/summarize_sweep.log",
    benchmark:
        "results/benchmarks/summarize_sweep.tsv"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 1000 * attempt,
        runtime=lambda wildcards, attempt: 10 * attempt,
    conda:
        "../envs/nsp-pipeline.yaml"
    script:
        "../scripts/summarize_sweep.py"
