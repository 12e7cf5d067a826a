# Per-model stages, run once and shared by every dataset and batch: export the model, build
# its neuron graph, precompute the transform operators.


rule export_model:
    input:
        model_files,
    output:
        model="results/models/{model}/model.pt",
        metadata="results/models/{model}/model.json",
    params:
        entry=lambda wildcards: config["models"][wildcards.model],
        train_dataset=train_dataset,
    log:
        "results/logs/export_model/{model}.log",
    benchmark:
        "results/benchmarks/export_model/{model}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input, attempt: int((2000 + 4 * input.size_mb) * attempt),
        runtime=lambda wildcards, attempt: 60 * attempt,
    conda:
        "../envs/nsp-pipeline.yaml"
    script:
        "../scripts/export_model.py"


rule build_graph:
    input:
        model="results/models/{model}/model.pt",
    output:
        graph="results/models/{model}/graph.h5",
    params:
        granularity=config["graph"]["granularity"],
        incl=config["graph"]["incl"],
        reference=graph_reference(),
    log:
        "results/logs/build_graph/{model}.log",
    benchmark:
        "results/benchmarks/build_graph/{model}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input, attempt: int((2000 + 20 * input.size_mb) * attempt),
        runtime=lambda wildcards, attempt: 30 * attempt,
    conda:
        "../envs/nsp-pipeline.yaml"
    script:
        "../scripts/build_graph.py"


rule compute_inverse:
    input:
        unpack(operator_inputs),
    output:
        operator="results/models/{model}/operator_{transform}.h5",
    params:
        max_nodes=config["laplacian"]["max_nodes"],
        k=config["laplacian"].get("k"),
    log:
        "results/logs/compute_inverse/{model}_{transform}.log",
    benchmark:
        "results/benchmarks/compute_inverse/{model}_{transform}.tsv"
    threads: 1
    resources:
        mem_mb=operator_memory,
        runtime=lambda wildcards, attempt: 120 * attempt,
    conda:
        "../envs/nsp-pipeline.yaml"
    script:
        "../scripts/compute_inverse.py"
