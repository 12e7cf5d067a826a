# Per-sample stages, run in batches of `batching.samples_per_job` samples per job (one process,
# one forward pass, one batched transform), one file per sample: activations, spectra, and the
# PDFs of the samples chosen by `render.samples`. Then the per-analysis and sweep summaries.
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

    for batch, samples in enumerate(plan.render_batches):
        tag = f"{plan.model}/{plan.dataset}/batch{batch:04d}"

        rule:
            name:
                rule_name("render", plan, batch)
            input:
                patterns=[f"{plan.folder}/{p}/{s}.h5" for s in samples for p in PATTERNS],
            output:
                pdfs=[
                    report(
                        f"{plan.folder}/pdf/{s}_{p}.pdf",
                        caption="../report/sample_pdf.rst",
                        category="Samples",
                        subcategory=f"{plan.model} × {plan.dataset}",
                        labels={"sample": s, "pattern": p},
                    )
                    for s in samples
                    for p in PATTERNS
                ],
            params:
                scale=config["render"]["scale"],
                cmap=config["render"]["cmap"],
                symlog=config["render"]["symlog"],
                model=plan.model,
                inputs=[f"{plan.folder}/activations/{s}.h5" for s in samples for p in PATTERNS],
            log:
                f"results/logs/render/{tag}.log",
            benchmark:
                f"results/benchmarks/render/{tag}.tsv"
            threads: 1
            resources:
                mem_mb=lambda wildcards, input, attempt: int((1000 + 2 * input.size_mb) * attempt),
                runtime=lambda wildcards, attempt: 30 * attempt,
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
        dataset="results/{model}/{dataset}/dataset_summary.h5",
        plots=report(
            "results/{model}/{dataset}/dataset_summary.pdf",
            caption="../report/dataset_summary.rst",
            category="Datasets",
            labels={"model": "{model}", "dataset": "{dataset}"},
        ),
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


rule render_averages:
    input:
        dataset="results/{model}/{dataset}/dataset_summary.h5",
    output:
        averages=report(
            directory("results/{model}/{dataset}/averages"),
            patterns=["{name}.pdf"],
            caption="../report/averages.rst",
            category="Class averages",
            subcategory="{model} × {dataset}",
            labels={"average": "{name}"},
        ),
    params:
        scale=config["render"]["scale"],
        cmap=config["render"]["cmap"],
    log:
        "results/logs/render_averages/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/render_averages/{model}/{dataset}.tsv"
    threads: 4  # PDFs rendered side by side, one worker process per thread
    resources:
        mem_mb=lambda wildcards, input, threads, attempt: int((600 + 400 * threads + 10 * input.size_mb) * attempt),
        runtime=lambda wildcards, attempt: 30 * attempt,
    conda:
        "../envs/nsp-pipeline.yaml"
    script:
        "../scripts/render_averages.py"


rule summarize_sweep:
    input:
        samples=[f"{plan.folder}/summary.csv" for plan in ANALYSES],
        layers=[f"{plan.folder}/layers.csv" for plan in ANALYSES],
    output:
        table=report(
            "results/sweep/summary.csv", caption="../report/sweep.rst", category="Sweep", labels={"table": "sweep"}
        ),
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
