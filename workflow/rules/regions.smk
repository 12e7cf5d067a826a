rule regions:
    input:
        model="results/models/{model}/model.pt",
        metadata="results/models/{model}/model.json",
        data=region_data,
    output:
        partition="results/{model}/{dataset}/regions/{anchors}.h5",
        pdf=report(
            "results/{model}/{dataset}/regions/{anchors}.pdf",
            caption="../report/regions.rst",
            category="Linear regions",
            labels={"model": "{model}", "dataset": "{dataset}", "slice": "{anchors}"},
        ),
    log:
        "results/logs/regions/{model}/{dataset}/{anchors}.log",
    benchmark:
        "results/benchmarks/regions/{model}/{dataset}/{anchors}.tsv"
    wildcard_constraints:
        anchors=r"\d+-\d+-\d+",
    conda:
        "../envs/nsp-pipeline.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        dataset=lookup(dpath="datasets/{dataset}", within=config),
        positions=region_positions,
        settings=region_settings,
        files=stamps(region_data),
        entry=lookup(dpath="models/{model}", within=config),
    script:
        "../scripts/regions.py"
