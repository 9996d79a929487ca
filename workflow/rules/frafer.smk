# The frafer study (FRA-FER and its Table III baselines). Stills datasets: one job per (network, class set,
# training seed) on the stills store; video datasets: one job per (network, training seed) that reads the
# network a stills dataset's job trained ([14]'s frame features -> statistics -> LinearSVC). Then the table.


rule train_frafer:
    conda:
        "../../envs/torch.yaml"
    input:
        manifest=paths.manifest_csv(RESULTS, "{dataset}"),
        features=frafer_features,
        # weights.fer; unset with weights.if_missing: stop, the DAG ends here with the study's message.
        weights=frafer_weights,
    output:
        predictions=paths.run_predictions(fer_frafer.run_dir(RESULTS, "{dataset}", "{variant}", "{classes}", "{seed}")),
        summary=paths.run_summary(fer_frafer.run_dir(RESULTS, "{dataset}", "{variant}", "{classes}", "{seed}")),
    wildcard_constraints:
        classes=r"[78]",
    log:
        paths.log_file(RESULTS, "{dataset}", "train_frafer", "{variant}_classes{classes}_seed{seed}"),
    benchmark:
        paths.benchmark_file(RESULTS, "{dataset}", "train_frafer", "{variant}_classes{classes}_seed{seed}")
    params:
        # The study's config but its seeds, video block and paper numbers: the job's output depends on it.
        study=lambda wildcards: fer_frafer.run_parameters(study(wildcards.dataset, "frafer")),
        out_dir=lambda wildcards, output: Path(output.predictions).parent,
        config=config_file,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=600,
        gpu=fer_config.requested_gpus(config["device"], auto=1),
    shell:
        "fer-pipeline train-frafer --dataset {wildcards.dataset} --variant {wildcards.variant} "
        "--classes {wildcards.classes} --seed {wildcards.seed} --manifest {input.manifest:q} "
        "--out-dir {params.out_dir:q} --threads {threads} --config {params.config:q} 2> {log:q}"


rule frafer_video:
    conda:
        "../../envs/torch.yaml"
    input:
        manifest=paths.manifest_csv(RESULTS, "{dataset}"),
        features=frafer_features,
        network=frafer_video_network,
    output:
        predictions=paths.run_predictions(fer_frafer.video_dir(RESULTS, "{dataset}", "{variant}", "{seed}")),
        summary=paths.run_summary(fer_frafer.video_dir(RESULTS, "{dataset}", "{variant}", "{seed}")),
    log:
        paths.log_file(RESULTS, "{dataset}", "frafer_video", "{variant}_seed{seed}"),
    benchmark:
        paths.benchmark_file(RESULTS, "{dataset}", "frafer_video", "{variant}_seed{seed}")
    params:
        study=lambda wildcards: fer_frafer.video_parameters(study(wildcards.dataset, "frafer")),
        # The stills job's summary ("" with video.weights instead: the CLI then reads that file).
        network=lambda wildcards, input: str(input.network),
        out_dir=lambda wildcards, output: Path(output.predictions).parent,
        config=config_file,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=600,
        gpu=fer_config.requested_gpus(config["device"], auto=1),
    shell:
        "fer-pipeline frafer-video --dataset {wildcards.dataset} --variant {wildcards.variant} "
        "--seed {wildcards.seed} --manifest {input.manifest:q} --network={params.network:q} "
        "--out-dir {params.out_dir:q} --threads {threads} --config {params.config:q} 2> {log:q}"


rule frafer_table:
    group:
        "study_tables"
    conda:
        "../../envs/report.yaml"
    input:
        frafer_runs,
    output:
        table=paths.study_table(RESULTS, "{dataset}", "frafer"),
        folds=paths.study_folds_table(RESULTS, "{dataset}", "frafer"),
        notes=paths.study_notes(RESULTS, "{dataset}", "frafer"),
    log:
        paths.log_file(RESULTS, "{dataset}", "frafer_table"),
    params:
        study=lambda wildcards: study(wildcards.dataset, "frafer"),
        config=config_file,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "fer-pipeline frafer-table --dataset {wildcards.dataset} --out {output.table:q} --config {params.config:q} "
        "{input:q} > {log:q} 2>&1"
