# Linear SVMs and score fusion (study fusion): per round, the SVMs on the networks' stored features, then the
# weighted sum of the classifiers' probabilities. No network runs here: these jobs re-run in seconds.


rule fusion_svm:
    # The torch env: the clip index comes from fer_pipeline.windows, which imports torch.
    conda:
        "../../envs/torch.yaml"
    input:
        manifest=paths.manifest_csv(RESULTS, "{dataset}"),
        vgg_face=paths.network_features_summary(paths.fusion_job(RESULTS, "{dataset}", "{fold}", "{seed}", "vgg_face")),
        resnet10=paths.network_features_summary(paths.fusion_job(RESULTS, "{dataset}", "{fold}", "{seed}", "resnet10")),
        c3d=paths.network_features_summary(paths.fusion_job(RESULTS, "{dataset}", "{fold}", "{seed}", "c3d")),
    output:
        predictions=paths.run_predictions(paths.fusion_job(RESULTS, "{dataset}", "{fold}", "{seed}", "svm")),
    log:
        paths.log_file(RESULTS, "{dataset}", "fusion_svm", "fold{fold}_seed{seed}"),
    benchmark:
        paths.benchmark_file(RESULTS, "{dataset}", "fusion_svm", "fold{fold}_seed{seed}")
    params:
        study=lambda wildcards: fusion_parameters(wildcards.dataset, "svm"),
        out_dir=lambda wildcards, output: Path(output.predictions).parent,
        config=config_file,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "fer-pipeline fusion-svm --dataset {wildcards.dataset} --fold {wildcards.fold} --seed {wildcards.seed} --manifest {input.manifest:q} "
        "--vgg-face {input.vgg_face:q} --resnet10 {input.resnet10:q} --c3d {input.c3d:q} "
        "--out-dir {params.out_dir:q} --config {params.config:q} 2> {log:q}"


rule fusion_scores:
    group:
        "study_tables"
    conda:
        "../../envs/report.yaml"
    input:
        svm=paths.run_predictions(paths.fusion_job(RESULTS, "{dataset}", "{fold}", "{seed}", "svm")),
        lstm=paths.run_predictions(paths.fusion_job(RESULTS, "{dataset}", "{fold}", "{seed}", "lstm")),
    output:
        predictions=paths.run_predictions(paths.fusion_round(RESULTS, "{dataset}", "{fold}", "{seed}")),
        summary=paths.run_summary(paths.fusion_round(RESULTS, "{dataset}", "{fold}", "{seed}")),
    log:
        paths.log_file(RESULTS, "{dataset}", "fusion_scores", "fold{fold}_seed{seed}"),
    params:
        study=lambda wildcards: fusion_parameters(wildcards.dataset, "scores"),
        out_dir=lambda wildcards, output: Path(output.summary).parent,
        config=config_file,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "fer-pipeline fusion-scores --dataset {wildcards.dataset} --fold {wildcards.fold} --seed {wildcards.seed} --out-dir {params.out_dir:q} "
        "--config {params.config:q} {input.svm:q} {input.lstm:q} 2> {log:q}"
