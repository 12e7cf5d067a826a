# Per-model stages: export the model, build its neuron graph, precompute the transform operators.


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
    conda:
        "../envs/nsp-pipeline.yaml"
    threads: 1
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
    conda:
        "../envs/nsp-pipeline.yaml"
    script:
        "../scripts/build_graph.py"


rule compute_inverse:
    input:
        graph="results/models/{model}/graph.h5",
    output:
        operator="results/models/{model}/operator_{transform}.h5",
    params:
        max_nodes=config["laplacian"]["max_nodes"],
    log:
        "results/logs/compute_inverse/{model}_{transform}.log",
    conda:
        "../envs/nsp-pipeline.yaml"
    script:
        "../scripts/compute_inverse.py"
