# Datasets: the generated demo, and the manifest of any dataset (a checkpoint: its shards fan out the DAG).


rule demo_videos:
    conda:
        "../../envs/torch.yaml"
    output:
        complete=Path(config["datasets"]["demo"]["root"]) / ".complete" if "demo" in config["datasets"] else [],
    log:
        f"{RESULTS}/logs/demo_videos.log",
    benchmark:
        f"{RESULTS}/benchmarks/demo_videos.tsv"
    params:
        # The generator's version too: frames made by an older generator are remade (snakemake reruns a job
        # whose params changed).
        demo=lambda wildcards: {**config["demo"], "seed": config["seed"], "generator": DEMO_GENERATOR_VERSION},
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "{FER} demo --dataset demo --config {CONFIG_FILE} 2> {log}"


checkpoint manifest:
    conda:
        "../../envs/report.yaml"
    input:
        manifest_inputs,
    output:
        manifest=f"{RESULTS}/{{dataset}}/manifest.csv",
        skipped=f"{RESULTS}/{{dataset}}/manifest_skipped.csv",
    log:
        f"{RESULTS}/logs/{{dataset}}/manifest.log",
    params:
        dataset=lambda wildcards: manifest_parameters(wildcards.dataset),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    shell:
        "{FER} manifest --dataset {wildcards.dataset} --out {output.manifest} --skipped {output.skipped} "
        "--config {CONFIG_FILE} 2> {log}"
