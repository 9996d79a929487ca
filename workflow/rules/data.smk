# Datasets: the generated demo, and the manifest of any dataset (a checkpoint: its shards fan out the DAG).


rule demo_videos:
    conda:
        "../../envs/torch.yaml"
    output:
        # The demo's root from the config (datasets.demo.root, or <results>/demo/videos when it is null).
        complete=dataset_root_or_stop("demo") / DEMO_COMPLETE_MARKER if "demo" in config["datasets"] else [],
    log:
        paths.log_file(RESULTS, None, "demo_videos"),
    benchmark:
        paths.benchmark_file(RESULTS, None, "demo_videos")
    params:
        # The generator's version too: frames made by an older generator are remade (snakemake reruns a job
        # whose params changed).
        demo=lambda wildcards: {**config["demo"], "seed": config["seed"], "generator": DEMO_GENERATOR_VERSION},
        config=config_file,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "fer-pipeline demo --dataset demo --config {params.config:q} 2> {log:q}"


checkpoint manifest:
    conda:
        "../../envs/report.yaml"
    input:
        manifest_inputs,
    output:
        manifest=paths.manifest_csv(RESULTS, "{dataset}"),
        skipped=paths.manifest_skipped_csv(RESULTS, "{dataset}"),
    log:
        paths.log_file(RESULTS, "{dataset}", "manifest"),
    params:
        dataset=lambda wildcards: manifest_parameters(wildcards.dataset),
        # A distributed dataset's files (names, sizes, mtimes): the manifest reruns when one is added,
        # removed or repaired. None for a generated dataset, whose `.complete` input does that.
        listing=manifest_listing,
        config=config_file,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    shell:
        "fer-pipeline manifest --dataset {wildcards.dataset} --out {output.manifest:q} --skipped {output.skipped:q} "
        "--config {params.config:q} 2> {log:q}"
