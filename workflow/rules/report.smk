# What the feature store holds: the inspection text, the skipped clips and a contact sheet to look at.


rule inspect_features:
    group:
        "features_summary"
    conda:
        "../../envs/report.yaml"
    input:
        feature_summaries,
    output:
        text=f"{RESULTS}/{{dataset}}/features/{{preset}}/inspect.txt",
        skipped=f"{RESULTS}/{{dataset}}/features/{{preset}}/skipped.csv",
    log:
        f"{RESULTS}/logs/{{dataset}}/inspect_features/{{preset}}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "{FER} collect {input} --skipped {output.skipped} --out {output.text} 2> {log}"


rule contact_sheet:
    group:
        "features_summary"
    conda:
        "../../envs/report.yaml"
    input:
        f"{RESULTS}/{{dataset}}/features/{{preset}}/inspect.txt",
    output:
        f"{RESULTS}/{{dataset}}/features/{{preset}}/contact_sheet.png",
    log:
        f"{RESULTS}/logs/{{dataset}}/contact_sheet/{{preset}}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "{FER} inspect {RESULTS}/{wildcards.dataset}/features/{wildcards.preset} --png {output} > {log} 2>&1"


rule ablation_table:
    group:
        "study_tables"
    conda:
        "../../envs/report.yaml"
    input:
        ablation_folds,
    output:
        table=f"{RESULTS}/{{dataset}}/ablation.csv",
        folds=f"{RESULTS}/{{dataset}}/ablation_folds.csv",
        notes=f"{RESULTS}/{{dataset}}/ablation.md",
    log:
        f"{RESULTS}/logs/{{dataset}}/ablation_table.log",
    params:
        study=lambda wildcards: study(wildcards.dataset, "ablation"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{FER} ablation-table --dataset {wildcards.dataset} --out {output.table} --config {CONFIG_FILE} "
        "{input} > {log} 2>&1"


rule report:
    group:
        "study_tables"
    conda:
        "../../envs/report.yaml"
    input:
        study_tables,
    output:
        f"{RESULTS}/{{dataset}}/report.html",
    log:
        f"{RESULTS}/logs/{{dataset}}/report.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "{FER} report --dataset {wildcards.dataset} --results {RESULTS}/{wildcards.dataset} --out {output} > {log} 2>&1"
