# Xu et al.'s networks (study fusion), one job per (network, round): VGG-Face, ResNet-10 and C3D are fine-tuned
# and write their features of every clip; the BiLSTM reads VGG-Face's. The SVMs and the score fusion are in
# classical.smk; the table gathers every round.


rule fusion_network:
    conda:
        "../../envs/torch.yaml"
    input:
        manifest=f"{RESULTS}/{{dataset}}/manifest.csv",
        features=study_features("fusion"),
    output:
        summary=f"{RESULTS}/{{dataset}}/fusion/fold{{fold}}/{{network}}/features.json",
    wildcard_constraints:
        network="vgg_face|resnet10|c3d",
    log:
        f"{RESULTS}/logs/{{dataset}}/fusion_network/{{network}}_fold{{fold}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/fusion_network/{{network}}_fold{{fold}}.tsv"
    params:
        study=lambda wildcards: fusion_parameters(wildcards.dataset, wildcards.network),
        out_dir=lambda wildcards, output: Path(output.summary).parent,
    threads: 1
    resources:
        # At the paper's sizes: VGG-16 at 224 and C3D on 128 x 112 x 112 clips, batches of 32 and 8.
        mem_mb=lambda wildcards: {"vgg_face": 12000, "resnet10": 6000, "c3d": 12000}[wildcards.network],
        runtime=1440,
        gpu=fer_config.requested_gpus(config["device"], auto=1),
    shell:
        "{FER} fusion-network --dataset {wildcards.dataset} --network {wildcards.network} --fold {wildcards.fold} "
        "--manifest {input.manifest} --out-dir {params.out_dir} --threads {threads} --config {CONFIG_FILE} 2> {log}"


rule fusion_lstm:
    conda:
        "../../envs/torch.yaml"
    input:
        manifest=f"{RESULTS}/{{dataset}}/manifest.csv",
        vgg_face=f"{RESULTS}/{{dataset}}/fusion/fold{{fold}}/vgg_face/features.json",
    output:
        predictions=f"{RESULTS}/{{dataset}}/fusion/fold{{fold}}/lstm/predictions.csv",
    log:
        f"{RESULTS}/logs/{{dataset}}/fusion_lstm/fold{{fold}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/fusion_lstm/fold{{fold}}.tsv"
    params:
        study=lambda wildcards: fusion_parameters(wildcards.dataset, "lstm"),
        out_dir=lambda wildcards, output: Path(output.predictions).parent,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=fer_config.requested_gpus(config["device"], auto=1),
    shell:
        "{FER} fusion-lstm --dataset {wildcards.dataset} --fold {wildcards.fold} --manifest {input.manifest} "
        "--vgg-face {input.vgg_face} --out-dir {params.out_dir} --threads {threads} --config {CONFIG_FILE} 2> {log}"


rule fusion_table:
    group:
        "study_tables"
    conda:
        "../../envs/report.yaml"
    input:
        fusion_rounds,
    output:
        table=f"{RESULTS}/{{dataset}}/fusion.csv",
        folds=f"{RESULTS}/{{dataset}}/fusion_folds.csv",
        notes=f"{RESULTS}/{{dataset}}/fusion.md",
    log:
        f"{RESULTS}/logs/{{dataset}}/fusion_table.log",
    params:
        study=lambda wildcards: study(wildcards.dataset, "fusion"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{FER} fusion-table --dataset {wildcards.dataset} --out {output.table} --config {CONFIG_FILE} "
        "{input} > {log} 2>&1"
