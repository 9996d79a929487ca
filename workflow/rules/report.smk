# What the feature store holds: the inspection text, the skipped clips and a contact sheet to look at.


rule inspect_features:
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
