# Face tracks (MTCNN), one job per shard; detection is shared by every preset.


rule detect_faces:
    group:
        "preprocess"
    conda:
        "../../envs/torch.yaml"
    input:
        # Ancient: a rewritten manifest reruns this shard only when its rows changed (params.rows).
        manifest=ancient(paths.manifest_csv(RESULTS, "{dataset}")),
    output:
        summary=paths.detections_summary(RESULTS, "{dataset}", "{shard}"),
    log:
        paths.log_file(RESULTS, "{dataset}", "detect_faces", "{shard}"),
    benchmark:
        paths.benchmark_file(RESULTS, "{dataset}", "detect_faces", "{shard}")
    params:
        # What a track is made from (fer_pipeline.lineage): detection without its execution settings, and the
        # dataset's sample_fps.
        detection=lambda wildcards: fer_lineage.detection_parameters(config, wildcards.dataset),
        rows=shard_rows,
        # The stage's own version: a change of what its arrays are (e.g. the store's layout) reruns every shard.
        version=fer_lineage.DETECTION_VERSION,
        config=config_file,
    threads: 1
    resources:
        mem_mb=3000,
        runtime=120,
        # MTCNN asks for a GPU only when configured for one: on 'auto' it uses whatever the node has.
        gpu=fer_config.requested_gpus(fer_config.detection_device(config), auto=0),
    shell:
        "fer-pipeline detect --dataset {wildcards.dataset} --shard {wildcards.shard} --manifest {input.manifest:q} "
        "--summary {output.summary:q} --threads {threads} --config {params.config:q} 2> {log:q}"
