# Linear SVMs and score fusion (study fusion): per round, the SVMs on the networks' stored features, then the
# weighted sum of the classifiers' probabilities. No network runs here: these jobs re-run in seconds.


rule fusion_svm:
    # The torch env: the clip index comes from fer_pipeline.windows, which imports torch.
    conda:
        "../../envs/torch.yaml"
    input:
        manifest=f"{RESULTS}/{{dataset}}/manifest.csv",
        vgg_face=f"{RESULTS}/{{dataset}}/fusion/fold{{fold}}/vgg_face/features.json",
        resnet10=f"{RESULTS}/{{dataset}}/fusion/fold{{fold}}/resnet10/features.json",
        c3d=f"{RESULTS}/{{dataset}}/fusion/fold{{fold}}/c3d/features.json",
    output:
        predictions=f"{RESULTS}/{{dataset}}/fusion/fold{{fold}}/svm/predictions.csv",
    log:
        f"{RESULTS}/logs/{{dataset}}/fusion_svm/fold{{fold}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/fusion_svm/fold{{fold}}.tsv"
    params:
        study=lambda wildcards: fusion_parameters(wildcards.dataset, "svm"),
        out_dir=lambda wildcards, output: Path(output.predictions).parent,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "{FER} fusion-svm --dataset {wildcards.dataset} --fold {wildcards.fold} --manifest {input.manifest} "
        "--vgg-face {input.vgg_face} --resnet10 {input.resnet10} --c3d {input.c3d} --out-dir {params.out_dir} "
        "--config {CONFIG_FILE} 2> {log}"


rule fusion_scores:
    group:
        "study_tables"
    conda:
        "../../envs/report.yaml"
    input:
        svm=f"{RESULTS}/{{dataset}}/fusion/fold{{fold}}/svm/predictions.csv",
        lstm=f"{RESULTS}/{{dataset}}/fusion/fold{{fold}}/lstm/predictions.csv",
    output:
        predictions=f"{RESULTS}/{{dataset}}/fusion/fold{{fold}}/predictions.csv",
        summary=f"{RESULTS}/{{dataset}}/fusion/fold{{fold}}/fold.json",
    log:
        f"{RESULTS}/logs/{{dataset}}/fusion_scores/fold{{fold}}.log",
    params:
        study=lambda wildcards: fusion_parameters(wildcards.dataset, "scores"),
        out_dir=lambda wildcards, output: Path(output.summary).parent,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "{FER} fusion-scores --dataset {wildcards.dataset} --fold {wildcards.fold} --out-dir {params.out_dir} "
        "--config {CONFIG_FILE} {input.svm} {input.lstm} 2> {log}"
