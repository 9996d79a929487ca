# Aligned faces, optical flow and dynamic images of every training window: one job per shard and preset.


rule extract_features:
    group:
        "preprocess"
    conda:
        "../../envs/torch.yaml"
    input:
        manifest=f"{RESULTS}/{{dataset}}/manifest.csv",
        detections=f"{RESULTS}/{{dataset}}/detections/{{shard}}.json",
    output:
        summary=f"{RESULTS}/{{dataset}}/features/{{preset}}/{{shard}}.json",
    log:
        f"{RESULTS}/logs/{{dataset}}/extract_features/{{preset}}/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/extract_features/{{preset}}/{{shard}}.tsv"
    params:
        preset=lambda wildcards: config["presets"][wildcards.preset],
    threads: 1
    resources:
        mem_mb=3000,
        runtime=120,
    shell:
        "{FER} features --dataset {wildcards.dataset} --preset {wildcards.preset} --shard {wildcards.shard} "
        "--manifest {input.manifest} --detections {input.detections} --summary {output.summary} --threads {threads} "
        "--config {CONFIG_FILE} 2> {log}"
