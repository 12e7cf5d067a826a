# Per analysis: the tables and dataset summary, the class averages; over all analyses: the sweep table.


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
    conda:
        "../envs/nsp-pipeline.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
        runtime=lambda wildcards, attempt: 20 * attempt,
    params:
        samples=sample_names,
    script:
        "../scripts/summarize.py"


rule interpret_report:
    input:
        maps=interpret_inputs,
    output:
        samples=report(
            "results/{model}/{dataset}/interpret/samples.pdf",
            caption="../report/interpret.rst",
            category="What drives the units",
            labels={"model": "{model}", "dataset": "{dataset}", "pages": "samples"},
        ),
        top=report(
            "results/{model}/{dataset}/interpret/top_images.pdf",
            caption="../report/interpret.rst",
            category="What drives the units",
            labels={"model": "{model}", "dataset": "{dataset}", "pages": "top images"},
        ),
    log:
        "results/logs/interpret_report/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/interpret_report/{model}/{dataset}.tsv"
    conda:
        "../envs/nsp-pipeline.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input, attempt: int((2000 + 3 * input.size_mb) * attempt),
        runtime=lambda wildcards, attempt: 20 * attempt,
    params:
        rows=interpret_rows,
        top_k=config["interpret"]["top_k"],
    script:
        "../scripts/interpret_report.py"


rule minimal_images:
    input:
        model="results/models/{model}/model.pt",
        metadata="results/models/{model}/model.json",
        data=rendered_data,
    output:
        results="results/{model}/{dataset}/interpret/minimal.h5",
        pdf=report(
            "results/{model}/{dataset}/interpret/minimal.pdf",
            caption="../report/minimal.rst",
            category="What drives the units",
            labels={"model": "{model}", "dataset": "{dataset}", "pages": "minimal images"},
        ),
    log:
        "results/logs/minimal_images/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/minimal_images/{model}/{dataset}.tsv"
    conda:
        "../envs/nsp-pipeline.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        dataset=lookup(dpath="datasets/{dataset}", within=config),
        positions=rendered_positions,
        settings=interpret_settings,
        files=stamps(rendered_data),
        entry=lookup(dpath="models/{model}", within=config),
    script:
        "../scripts/minimal_images.py"


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
    log:
        "results/logs/render_averages/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/render_averages/{model}/{dataset}.tsv"
    conda:
        "../envs/nsp-pipeline.yaml"
    threads: 4  # PDFs rendered side by side, one worker process per thread
    resources:
        mem_mb=lambda wildcards, input, threads, attempt: int(
            (600 + 400 * threads + 10 * input.size_mb) * attempt
        ),
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        scale=config["render"]["scale"],
        cmap=config["render"]["cmap"],
        symlog=config["render"]["symlog"],
    script:
        "../scripts/render_averages.py"


rule summarize_sweep:
    input:
        samples=[f"{plan.folder}/summary.csv" for plan in ANALYSES],
        layers=[f"{plan.folder}/layers.csv" for plan in ANALYSES],
    output:
        table=report(
            "results/sweep/summary.csv",
            caption="../report/sweep.rst",
            category="Sweep",
            labels={"table": "sweep"},
        ),
        hdf5="results/sweep/summary.h5",
    log:
        "results/logs/summarize_sweep.log",
    benchmark:
        "results/benchmarks/summarize_sweep.tsv"
    conda:
        "../envs/nsp-pipeline.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 1000 * attempt,
        runtime=lambda wildcards, attempt: 10 * attempt,
    params:
        analyses=[[plan.model, plan.dataset] for plan in ANALYSES],
    script:
        "../scripts/summarize_sweep.py"
