# Datasets: the generated demos, and the manifest of any dataset (a checkpoint: its shards fan out the DAG).


# The demo generator, one rule per layout: each generated dataset (datasets.<name>.generated) is written in
# the layout its adapter reads. demo_videos: the eNTERFACE'05 layout (AVI videos; the `demo` dataset).
rule demo_videos:
    conda:
        "../../envs/torch.yaml"
    output:
        # Each dataset's `.complete`, in its root (datasets.<name>.root, or <results>/<name>/videos when null).
        complete=generator_outputs("enterface"),
    log:
        paths.log_file(RESULTS, None, "demo_videos"),
    benchmark:
        paths.benchmark_file(RESULTS, None, "demo_videos")
    params:
        # The layout's demo config, the seed and the generator's version: frames made by an older generator
        # are remade (snakemake reruns a job whose params changed).
        demo=lambda wildcards: generator_parameters("enterface"),
        datasets=generator_datasets("enterface"),
        config=config_file,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "fer-pipeline demo --dataset {params.datasets:q} --config {params.config:q} 2> {log:q}"


# demo_sequences: the CK+ layout (image sequences of PNG frames and Emotion label files; `demo_ckplus`).
use rule demo_videos as demo_sequences with:
    output:
        complete=generator_outputs("ckplus"),
    log:
        paths.log_file(RESULTS, None, "demo_sequences"),
    benchmark:
        paths.benchmark_file(RESULTS, None, "demo_sequences")
    params:
        demo=lambda wildcards: generator_parameters("ckplus"),
        datasets=generator_datasets("ckplus"),
        config=config_file,



# demo_stills: the AffectNet layout (JPEG stills, Manually_Annotated_file_lists/{training,validation}.csv with
# boxes, 68 landmarks and codes; `demo_affectnet`).
use rule demo_videos as demo_stills with:
    output:
        complete=generator_outputs("affectnet"),
    log:
        paths.log_file(RESULTS, None, "demo_stills"),
    benchmark:
        paths.benchmark_file(RESULTS, None, "demo_stills")
    params:
        demo=lambda wildcards: generator_parameters("affectnet"),
        datasets=generator_datasets("affectnet"),
        config=config_file,


# demo_pixels: the FER2013 layout (fer2013.csv: emotion, 48 x 48 grey pixels, Usage; `demo_fer2013`).
use rule demo_videos as demo_pixels with:
    output:
        complete=generator_outputs("fer2013"),
    log:
        paths.log_file(RESULTS, None, "demo_pixels"),
    benchmark:
        paths.benchmark_file(RESULTS, None, "demo_pixels")
    params:
        demo=lambda wildcards: generator_parameters("fer2013"),
        datasets=generator_datasets("fer2013"),
        config=config_file,


checkpoint manifest:
    conda:
        "../../envs/report.yaml"
    input:
        manifest_inputs,
    output:
        manifest=paths.manifest_csv(RESULTS, "{dataset}"),
        skipped=paths.manifest_skipped_csv(RESULTS, "{dataset}"),
    log:
        paths.log_file(RESULTS, "{dataset}", "manifest"),
    params:
        dataset=lambda wildcards: manifest_parameters(config, wildcards.dataset),
        # A distributed dataset's files (names, sizes, mtimes): the manifest reruns when one is added,
        # removed or repaired. None for a generated dataset, whose `.complete` input does that.
        listing=manifest_listing,
        config=config_file,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    shell:
        "fer-pipeline manifest --dataset {wildcards.dataset} --out {output.manifest:q} --skipped {output.skipped:q} "
        "--config {params.config:q} 2> {log:q}"
