# What the feature store holds: the inspection text, the skipped clips and a contact sheet to look at.


rule inspect_features:
    group:
        "features_summary"
    conda:
        "../../envs/report.yaml"
    input:
        feature_summaries,
    output:
        text=paths.features_inspection(RESULTS, "{dataset}", "{preset}"),
        skipped=paths.features_skipped(RESULTS, "{dataset}", "{preset}"),
    log:
        paths.log_file(RESULTS, "{dataset}", "inspect_features", "{preset}"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "fer-pipeline collect {input:q} --skipped {output.skipped:q} --out {output.text:q} 2> {log:q}"


rule contact_sheet:
    group:
        "features_summary"
    conda:
        "../../envs/report.yaml"
    input:
        paths.features_inspection(RESULTS, "{dataset}", "{preset}"),
    output:
        paths.contact_sheet(RESULTS, "{dataset}", "{preset}"),
    log:
        paths.log_file(RESULTS, "{dataset}", "contact_sheet", "{preset}"),
    params:
        store=lambda wildcards: paths.features_dir(RESULTS, wildcards.dataset, wildcards.preset),
        config=config_file,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "fer-pipeline inspect {params.store:q} --png {output:q} --config {params.config:q} > {log:q} 2>&1"


rule ablation_table:
    group:
        "study_tables"
    conda:
        "../../envs/report.yaml"
    input:
        ablation_folds,
    output:
        table=paths.study_table(RESULTS, "{dataset}", "ablation"),
        folds=paths.study_folds_table(RESULTS, "{dataset}", "ablation"),
        notes=paths.study_notes(RESULTS, "{dataset}", "ablation"),
    log:
        paths.log_file(RESULTS, "{dataset}", "ablation_table"),
    params:
        study=lambda wildcards: study(wildcards.dataset, "ablation"),
        config=config_file,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "fer-pipeline ablation-table --dataset {wildcards.dataset} --out {output.table:q} --config {params.config:q} "
        "{input:q} > {log:q} 2>&1"


rule ablation_selection:
    conda:
        "../../envs/report.yaml"
    input:
        ablation_selection_runs,
    output:
        table=paths.study_table(RESULTS, "{dataset}", "ablation_selection"),
        folds=paths.study_folds_table(RESULTS, "{dataset}", "ablation_selection"),
        notes=paths.study_notes(RESULTS, "{dataset}", "ablation_selection"),
    log:
        paths.log_file(RESULTS, "{dataset}", "ablation_selection"),
    params:
        selection=lambda wildcards: study(wildcards.dataset, "ablation")["selection"],
        config=config_file,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "fer-pipeline ablation-selection-table --dataset {wildcards.dataset} --out {output.table:q} "
        "--config {params.config:q} {input:q} > {log:q} 2>&1"


# Every study that ran on the dataset side by side (fer_pipeline.report.studies_table): which method wins here.
rule studies_table:
    group:
        "study_tables"
    conda:
        "../../envs/report.yaml"
    input:
        study_tables,
    output:
        fer_report.studies_csv(RESULTS, "{dataset}"),
    log:
        paths.log_file(RESULTS, "{dataset}", "studies_table"),
    params:
        config=config_file,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "fer-pipeline studies-table --dataset {wildcards.dataset} --out {output:q} --config {params.config:q} "
        "{input:q} > {log:q} 2>&1"


rule report:
    group:
        "study_tables"
    conda:
        "../../envs/report.yaml"
    input:
        study_tables,
        fer_report.studies_csv(RESULTS, "{dataset}"),
    output:
        paths.report_html(RESULTS, "{dataset}"),
    log:
        paths.log_file(RESULTS, "{dataset}", "report"),
    params:
        results=lambda wildcards: paths.dataset_dir(RESULTS, wildcards.dataset),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "fer-pipeline report --dataset {wildcards.dataset} --results {params.results:q} --out {output:q} > {log:q} 2>&1"


# Not in the default target: `snakemake results/{dataset}/features/{preset}.h5` when a tool wants HDF5.
rule export_features_hdf5:
    conda:
        "../../envs/report.yaml"
    input:
        paths.features_inspection(RESULTS, "{dataset}", "{preset}"),
    output:
        paths.features_hdf5(RESULTS, "{dataset}", "{preset}"),
    log:
        paths.log_file(RESULTS, "{dataset}", "export_features_hdf5", "{preset}"),
    params:
        store=lambda wildcards: paths.features_dir(RESULTS, wildcards.dataset, wildcards.preset),
        config=config_file,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    shell:
        "fer-pipeline export {params.store:q} --format hdf5 {output:q} --current-only --config {params.config:q} "
        "--no-progress > {log:q} 2>&1"
