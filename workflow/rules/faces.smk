# Face tracks (MTCNN), one job per shard; detection is shared by every preset.


rule detect_faces:
    group:
        "preprocess"
    conda:
        "../../envs/torch.yaml"
    input:
        manifest=f"{RESULTS}/{{dataset}}/manifest.csv",
    output:
        summary=f"{RESULTS}/{{dataset}}/detections/{{shard}}.json",
    log:
        f"{RESULTS}/logs/{{dataset}}/detect_faces/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/detect_faces/{{shard}}.tsv"
    params:
        detection=config["detection"],
    threads: 1
    resources:
        mem_mb=3000,
        runtime=120,
        # MTCNN asks for a GPU only when configured for one: on 'auto' it uses whatever the node has.
        gpu=fer_config.requested_gpus(fer_config.detection_device(config), auto=0),
    shell:
        "{FER} detect --dataset {wildcards.dataset} --shard {wildcards.shard} --manifest {input.manifest} "
        "--summary {output.summary} --threads {threads} --config {CONFIG_FILE} 2> {log}"
