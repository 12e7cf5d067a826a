# Per-model stages, run once and shared by every dataset and batch: export the model, build
# its neuron graph, precompute the transform operators.


rule export_model:
    input:
        model_files,
    output:
        model="results/models/{model}/model.pt",
        metadata="results/models/{model}/model.json",
    log:
        "results/logs/export_model/{model}.log",
    benchmark:
        "results/benchmarks/export_model/{model}.tsv"
    conda:
        "../envs/nsp-pipeline.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input, attempt: int((2000 + 4 * input.size_mb) * attempt),
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        entry=lookup(dpath="models/{model}", within=config),
        train_dataset=train_dataset,
        files=stamps(model_files),
    script:
        "../scripts/export_model.py"


rule build_graph:
    input:
        model="results/models/{model}/model.pt",
        metadata="results/models/{model}/model.json",
        reference=reference_data,
    output:
        graph="results/models/{model}/graph.h5",
    log:
        "results/logs/build_graph/{model}.log",
    benchmark:
        "results/benchmarks/build_graph/{model}.tsv"
    conda:
        "../envs/nsp-pipeline.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input, attempt: int((2000 + 20 * input.size_mb) * attempt),
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        granularity=config["graph"]["granularity"],
        incl=config["graph"]["incl"],
        reference=graph_reference(),
        files=stamps(reference_data),
        entry=lookup(dpath="models/{model}", within=config),
    script:
        "../scripts/build_graph.py"


rule compute_operator:
    input:
        unpack(operator_inputs),
    output:
        operator="results/models/{model}/operator_{transform}.h5",
    log:
        "results/logs/compute_operator/{model}/{transform}.log",
    benchmark:
        "results/benchmarks/compute_operator/{model}/{transform}.tsv"
    conda:
        "../envs/nsp-pipeline.yaml"
    threads: 1
    resources:
        mem_mb=operator_memory,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        settings=operator_settings,
    script:
        "../scripts/compute_operator.py"


rule graph_analytics:
    input:
        model="results/models/{model}/model.pt",
        metadata="results/models/{model}/model.json",
        graph="results/models/{model}/graph.h5",
        reference=analytics_reference_data,
    output:
        summary="results/models/{model}/graph_analytics.h5",
        pdf="results/models/{model}/graph_analytics.pdf",
    log:
        "results/logs/graph_analytics/{model}.log",
    benchmark:
        "results/benchmarks/graph_analytics/{model}.tsv"
    conda:
        "../envs/nsp-pipeline.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input, attempt: int((2000 + 40 * input.size_mb) * attempt),
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        settings=analytics_settings,
        reference=analytics_reference,
        files=stamps(analytics_reference_data),
        entry=lookup(dpath="models/{model}", within=config),
    script:
        "../scripts/graph_analytics.py"


rule synthesize:
    input:
        model="results/models/{model}/model.pt",
        metadata="results/models/{model}/model.json",
        candidates=synthesis_candidate_data,
    output:
        result="results/models/{model}/synthesis.h5",
        pdf="results/models/{model}/synthesis.pdf",
        sheet="results/models/{model}/feature_sheet.pdf",
    log:
        "results/logs/synthesize/{model}.log",
    benchmark:
        "results/benchmarks/synthesize/{model}.tsv"
    conda:
        "../envs/nsp-pipeline.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        settings=interpret_settings,
        candidates=synthesis_candidates(),
        files=stamps(synthesis_candidate_data),
        entry=lookup(dpath="models/{model}", within=config),
    script:
        "../scripts/synthesize.py"
