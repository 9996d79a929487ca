# Xu et al.'s networks (study fusion), one job per (network, round): VGG-Face, ResNet-10 and C3D are fine-tuned
# and write their features of every clip; the BiLSTM reads VGG-Face's. Before the rounds, VGG-Face is fine-tuned on
# FER2013 (the paper's first stage, studies.fusion.pretrain) once per training seed. The SVMs and the score fusion
# are in classical.smk; the table gathers every round.


rule fusion_pretrain:
    conda:
        "../../envs/torch.yaml"
    input:
        # The FER2013-layout dataset's manifest and stills store, the weights.vgg_face file (none: scratch).
        unpack(fusion_pretrain_inputs),
    output:
        summary=paths.pretrain_summary(paths.fusion_pretrain(RESULTS, "{dataset}", "{seed}")),
    log:
        paths.log_file(RESULTS, "{dataset}", "fusion_pretrain", "seed{seed}"),
    benchmark:
        paths.benchmark_file(RESULTS, "{dataset}", "fusion_pretrain", "seed{seed}")
    params:
        study=lambda wildcards: fusion_parameters(wildcards.dataset, "pretrain"),
        out_dir=lambda wildcards, output: Path(output.summary).parent,
        config=config_file,
    threads: 1
    resources:
        # VGG-16 at 224, batches of 32, FER2013's 28k pictures (48 px) in memory.
        mem_mb=12000,
        runtime=1440,
        gpu=fer_config.requested_gpus(config["device"], auto=1),
    shell:
        "fer-pipeline fusion-pretrain --dataset {wildcards.dataset} --seed {wildcards.seed} "
        "--manifest {input.manifest:q} --out-dir {params.out_dir:q} --threads {threads} "
        "--config {params.config:q} 2> {log:q}"


rule fusion_network:
    conda:
        "../../envs/torch.yaml"
    input:
        manifest=paths.manifest_csv(RESULTS, "{dataset}"),
        features=study_features("fusion"),
        # The weights file, or VGG-Face's FER2013 stage; unset weights with if_missing: stop end the DAG here.
        start=fusion_network_start,
    output:
        summary=paths.network_features_summary(paths.fusion_job(RESULTS, "{dataset}", "{fold}", "{seed}", "{network}")),
    wildcard_constraints:
        network="vgg_face|resnet10|c3d",
    log:
        paths.log_file(RESULTS, "{dataset}", "fusion_network", "{network}_fold{fold}_seed{seed}"),
    benchmark:
        paths.benchmark_file(RESULTS, "{dataset}", "fusion_network", "{network}_fold{fold}_seed{seed}")
    params:
        study=lambda wildcards: fusion_parameters(wildcards.dataset, wildcards.network),
        out_dir=lambda wildcards, output: Path(output.summary).parent,
        config=config_file,
    threads: 1
    resources:
        # At the paper's sizes: VGG-16 at 224 and C3D on 128 x 112 x 112 clips, batches of 32 and 8.
        mem_mb=lambda wildcards: {"vgg_face": 12000, "resnet10": 6000, "c3d": 12000}[wildcards.network],
        runtime=1440,
        gpu=fer_config.requested_gpus(config["device"], auto=1),
    shell:
        "fer-pipeline fusion-network --dataset {wildcards.dataset} --network {wildcards.network} "
        "--fold {wildcards.fold} --seed {wildcards.seed} --manifest {input.manifest:q} --out-dir {params.out_dir:q} --threads {threads} "
        "--config {params.config:q} 2> {log:q}"


rule fusion_lstm:
    conda:
        "../../envs/torch.yaml"
    input:
        manifest=paths.manifest_csv(RESULTS, "{dataset}"),
        vgg_face=paths.network_features_summary(paths.fusion_job(RESULTS, "{dataset}", "{fold}", "{seed}", "vgg_face")),
    output:
        predictions=paths.run_predictions(paths.fusion_job(RESULTS, "{dataset}", "{fold}", "{seed}", "lstm")),
    log:
        paths.log_file(RESULTS, "{dataset}", "fusion_lstm", "fold{fold}_seed{seed}"),
    benchmark:
        paths.benchmark_file(RESULTS, "{dataset}", "fusion_lstm", "fold{fold}_seed{seed}")
    params:
        study=lambda wildcards: fusion_parameters(wildcards.dataset, "lstm"),
        out_dir=lambda wildcards, output: Path(output.predictions).parent,
        config=config_file,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=fer_config.requested_gpus(config["device"], auto=1),
    shell:
        "fer-pipeline fusion-lstm --dataset {wildcards.dataset} --fold {wildcards.fold} --seed {wildcards.seed} --manifest {input.manifest:q} "
        "--vgg-face {input.vgg_face:q} --out-dir {params.out_dir:q} --threads {threads} "
        "--config {params.config:q} 2> {log:q}"


rule fusion_table:
    group:
        "study_tables"
    conda:
        "../../envs/report.yaml"
    input:
        fusion_rounds,
    output:
        table=paths.study_table(RESULTS, "{dataset}", "fusion"),
        folds=paths.study_folds_table(RESULTS, "{dataset}", "fusion"),
        notes=paths.study_notes(RESULTS, "{dataset}", "fusion"),
    log:
        paths.log_file(RESULTS, "{dataset}", "fusion_table"),
    params:
        study=lambda wildcards: study(wildcards.dataset, "fusion"),
        config=config_file,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "fer-pipeline fusion-table --dataset {wildcards.dataset} --out {output.table:q} --config {params.config:q} "
        "{input:q} > {log:q} 2>&1"
