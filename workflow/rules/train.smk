# Network training: one job per (study variant, fold, training seed), so a cluster trains them side by side.


rule train_ablation:
    conda:
        "../../envs/torch.yaml"
    input:
        manifest=paths.manifest_csv(RESULTS, "{dataset}"),
        features=study_features("ablation"),
    output:
        predictions=paths.run_predictions(paths.ablation_run(RESULTS, "{dataset}", "{variant}", "{fold}", "{seed}")),
        summary=paths.run_summary(paths.ablation_run(RESULTS, "{dataset}", "{variant}", "{fold}", "{seed}")),
    log:
        paths.log_file(RESULTS, "{dataset}", "train_ablation", "{variant}_fold{fold}_seed{seed}"),
    benchmark:
        paths.benchmark_file(RESULTS, "{dataset}", "train_ablation", "{variant}_fold{fold}_seed{seed}")
    params:
        # All of the study's config but its list of seeds: adding a seed trains the new seed's runs only.
        study=lambda wildcards: fer_ablation.run_parameters(study(wildcards.dataset, "ablation")),
        out_dir=lambda wildcards, output: Path(output.predictions).parent,
        config=config_file,
    threads: 1
    resources:
        # The process (6000 MB) plus the windows it caches (cache_windows): the manifest's frames at the
        # preset's bytes per frame for the fields this variant reads (fer_pipeline.resources).
        mem_mb=lambda wildcards, input: fer_resources.train_mem_mb(
            config, wildcards.dataset, "ablation", input.manifest, wildcards.variant
        ),
        runtime=600,
        # Training asks for a GPU unless told to run on the CPU ('auto' trains on the GPU it is given).
        gpu=fer_config.requested_gpus(config["device"], auto=1),
    shell:
        "fer-pipeline train-fold --dataset {wildcards.dataset} --variant {wildcards.variant} --fold {wildcards.fold} "
        "--seed {wildcards.seed} --manifest {input.manifest:q} --out-dir {params.out_dir:q} --threads {threads} "
        "--config {params.config:q} 2> {log:q}"


# The ablation's settings chosen on validation subjects: one job per (selection candidate, fold), scored on the
# round's validation subjects (the test subjects are not read); `snakemake results/{dataset}/ablation_selection.csv`.
rule select_ablation:
    conda:
        "../../envs/torch.yaml"
    input:
        manifest=paths.manifest_csv(RESULTS, "{dataset}"),
        features=study_features("ablation"),
    output:
        predictions=paths.run_predictions(
            paths.ablation_selection_run(RESULTS, "{dataset}", "{candidate}", "{fold}", "{seed}")
        ),
        summary=paths.run_summary(paths.ablation_selection_run(RESULTS, "{dataset}", "{candidate}", "{fold}", "{seed}")),
    log:
        paths.log_file(RESULTS, "{dataset}", "select_ablation", "{candidate}_fold{fold}_seed{seed}"),
    benchmark:
        paths.benchmark_file(RESULTS, "{dataset}", "select_ablation", "{candidate}_fold{fold}_seed{seed}")
    params:
        # The candidate's study config and variant: a changed candidate retrains its runs only.
        run=lambda wildcards: fer_ablation.candidate_parameters(config, wildcards.dataset, wildcards.candidate),
        variant=lambda wildcards: study(wildcards.dataset, "ablation")["selection"]["variant"],
        out_dir=lambda wildcards, output: Path(output.predictions).parent,
        config=config_file,
    threads: 1
    resources:
        mem_mb=lambda wildcards, input: fer_resources.train_mem_mb(
            fer_ablation.candidate_config(config, wildcards.dataset, wildcards.candidate),
            wildcards.dataset,
            "ablation",
            input.manifest,
            study(wildcards.dataset, "ablation")["selection"]["variant"],
        ),
        runtime=600,
        gpu=fer_config.requested_gpus(config["device"], auto=1),
    shell:
        "fer-pipeline train-fold --dataset {wildcards.dataset} --variant {params.variant:q} --fold {wildcards.fold} "
        "--seed {wildcards.seed} --candidate {wildcards.candidate} --manifest {input.manifest:q} "
        "--out-dir {params.out_dir:q} --threads {threads} --config {params.config:q} 2> {log:q}"
