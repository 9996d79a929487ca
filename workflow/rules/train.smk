# Network training: one job per (study variant, fold), so a cluster trains them side by side.


rule train_ablation:
    conda:
        "../../envs/torch.yaml"
    input:
        manifest=f"{RESULTS}/{{dataset}}/manifest.csv",
        features=study_features("ablation"),
    output:
        predictions=f"{RESULTS}/{{dataset}}/ablation/{{variant}}/fold{{fold}}/predictions.csv",
        summary=f"{RESULTS}/{{dataset}}/ablation/{{variant}}/fold{{fold}}/fold.json",
    log:
        f"{RESULTS}/logs/{{dataset}}/train_ablation/{{variant}}_fold{{fold}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/train_ablation/{{variant}}_fold{{fold}}.tsv"
    params:
        study=lambda wildcards: study(wildcards.dataset, "ablation"),
        out_dir=lambda wildcards, output: Path(output.predictions).parent,
    threads: 1
    resources:
        mem_mb=6000,
        runtime=600,
        # Training asks for a GPU unless told to run on the CPU ('auto' trains on the GPU it is given).
        gpu=fer_config.requested_gpus(config["device"], auto=1),
    shell:
        "{FER} train-fold --dataset {wildcards.dataset} --variant {wildcards.variant} --fold {wildcards.fold} "
        "--manifest {input.manifest} --out-dir {params.out_dir} --threads {threads} "
        "--config {CONFIG_FILE} 2> {log}"
