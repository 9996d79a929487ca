# The nlstm study (STC-NLSTM and its baselines): one job per (network, repeat, fold, training seed), then the
# table. Every trial reads the stc64 faces of the feature store only.


rule train_nlstm:
    conda:
        "../../envs/torch.yaml"
    input:
        manifest=paths.manifest_csv(RESULTS, "{dataset}"),
        features=study_features("nlstm"),
    output:
        predictions=paths.run_predictions(
            paths.nlstm_run(RESULTS, "{dataset}", "{variant}", "{repeat}", "{fold}", "{seed}")
        ),
        summary=paths.run_summary(paths.nlstm_run(RESULTS, "{dataset}", "{variant}", "{repeat}", "{fold}", "{seed}")),
    log:
        paths.log_file(RESULTS, "{dataset}", "train_nlstm", "{variant}_repeat{repeat}_fold{fold}_seed{seed}"),
    benchmark:
        paths.benchmark_file(RESULTS, "{dataset}", "train_nlstm", "{variant}_repeat{repeat}_fold{fold}_seed{seed}")
    params:
        # All of the study's config but its seeds and repeats: adding either trains the new trials only.
        study=lambda wildcards: fer_nlstm.run_parameters(study(wildcards.dataset, "nlstm")),
        out_dir=lambda wildcards, output: Path(output.predictions).parent,
        config=config_file,
    threads: 1
    resources:
        mem_mb=lambda wildcards, input: fer_resources.train_mem_mb(config, wildcards.dataset, "nlstm", input.manifest),
        runtime=600,
        gpu=fer_config.requested_gpus(config["device"], auto=1),
    shell:
        "fer-pipeline train-nlstm --dataset {wildcards.dataset} --variant {wildcards.variant} "
        "--repeat {wildcards.repeat} --fold {wildcards.fold} --seed {wildcards.seed} --manifest {input.manifest:q} "
        "--out-dir {params.out_dir:q} --threads {threads} --config {params.config:q} 2> {log:q}"


rule nlstm_table:
    group:
        "study_tables"
    conda:
        "../../envs/report.yaml"
    input:
        nlstm_trials,
    output:
        table=paths.study_table(RESULTS, "{dataset}", "nlstm"),
        folds=paths.study_folds_table(RESULTS, "{dataset}", "nlstm"),
        notes=paths.study_notes(RESULTS, "{dataset}", "nlstm"),
    log:
        paths.log_file(RESULTS, "{dataset}", "nlstm_table"),
    params:
        study=lambda wildcards: study(wildcards.dataset, "nlstm"),
        config=config_file,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "fer-pipeline nlstm-table --dataset {wildcards.dataset} --out {output.table:q} --config {params.config:q} "
        "{input:q} > {log:q} 2>&1"
