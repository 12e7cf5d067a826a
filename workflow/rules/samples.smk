# Per-sample stages: activations, spectra, PDFs; and the per-analysis summary.


rule extract_activations:
    input:
        model="results/models/{model}/model.pt",
        data=dataset_files,
    output:
        activations="results/{model}/{dataset}/activations/{sample}.h5",
    params:
        dataset=lambda wildcards: config["datasets"][wildcards.dataset],
        position=lambda wildcards: int(wildcards.sample),
        granularity=config["graph"]["granularity"],
    log:
        "results/logs/extract_activations/{model}/{dataset}/{sample}.log",
    conda:
        "../envs/nsp-pipeline.yaml"
    script:
        "../scripts/extract_activations.py"


rule transform:
    input:
        activations="results/{model}/{dataset}/activations/{sample}.h5",
        operator="results/models/{model}/operator_{transform}.h5",
    output:
        spectrum="results/{model}/{dataset}/{transform}/{sample}.h5",
    log:
        "results/logs/transform/{model}/{dataset}/{transform}/{sample}.log",
    conda:
        "../envs/nsp-pipeline.yaml"
    script:
        "../scripts/transform.py"


rule render:
    input:
        patterns=expand(
            "results/{{model}}/{{dataset}}/{pattern}/{{sample}}.h5",
            pattern=["activations", *config["transforms"]],
        ),
    output:
        pdfs=expand(
            "results/{{model}}/{{dataset}}/pdf/{{sample}}_{pattern}.pdf",
            pattern=["activations", *config["transforms"]],
        ),
    params:
        scale=config["render"]["scale"],
        cmap=config["render"]["cmap"],
    log:
        "results/logs/render/{model}/{dataset}/{sample}.log",
    conda:
        "../envs/nsp-pipeline.yaml"
    script:
        "../scripts/render.py"


rule summarize:
    input:
        unpack(summary_inputs),
    output:
        table="results/{model}/{dataset}/summary.csv",
    log:
        "results/logs/summarize/{model}/{dataset}.log",
    conda:
        "../envs/nsp-pipeline.yaml"
    script:
        "../scripts/summarize.py"
