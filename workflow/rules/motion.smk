# Aligned faces, optical flow and dynamic images of every training window: one job per shard and preset.


rule extract_features:
    group:
        "preprocess"
    conda:
        "../../envs/torch.yaml"
    input:
        # Ancient: a rewritten manifest reruns this shard only when its rows changed (params.rows).
        manifest=ancient(paths.manifest_csv(RESULTS, "{dataset}")),
        detections=paths.detections_summary(RESULTS, "{dataset}", "{shard}"),
    output:
        summary=paths.features_summary(RESULTS, "{dataset}", "{preset}", "{shard}"),
    log:
        paths.log_file(RESULTS, "{dataset}", "extract_features", "{preset}/{shard}"),
    benchmark:
        paths.benchmark_file(RESULTS, "{dataset}", "extract_features", "{preset}/{shard}")
    params:
        preset=lambda wildcards: config["presets"][wildcards.preset],
        rows=shard_rows,
        # The stage's own version: a change of what its arrays are (e.g. the store's layout) reruns every shard.
        version=fer_lineage.FEATURES_VERSION,
        config=config_file,
    threads: 1
    resources:
        mem_mb=3000,
        runtime=120,
    shell:
        "fer-pipeline features --dataset {wildcards.dataset} --preset {wildcards.preset} --shard {wildcards.shard} "
        "--manifest {input.manifest:q} --detections {input.detections:q} --summary {output.summary:q} "
        "--threads {threads} --config {params.config:q} 2> {log:q}"
