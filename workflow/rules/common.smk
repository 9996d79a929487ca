# Config validation, wildcard constraints and the input functions every rule file uses.
import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

from fer_pipeline import config as fer_config
from fer_pipeline import paths
from fer_pipeline import protocols as fer_protocols
from fer_pipeline import lineage as fer_lineage
from fer_pipeline import resources as fer_resources  # the training rules' mem_mb
from fer_pipeline import report as fer_report  # studies.csv's path
from fer_pipeline.datasets import listing_fingerprint, manifest_parameters, read_manifest, shard_fingerprint
from fer_pipeline.demo import COMPLETE_MARKER as DEMO_COMPLETE_MARKER
from fer_pipeline.demo import GENERATOR_VERSION as DEMO_GENERATOR_VERSION
from fer_pipeline.demo import dataset_layout as demo_layout
from fer_pipeline.demo import layout_config as demo_layout_config
from fer_pipeline.files import write_text_atomic
from fer_pipeline.provenance import fingerprint as fer_fingerprint
from fer_pipeline.studies import ablation as fer_ablation
from fer_pipeline.studies import fusion as fer_fusion
from fer_pipeline.studies import frafer as fer_frafer
from fer_pipeline.studies import nlstm as fer_nlstm

# The package's check first: its message names the offending key (e.g. "detection.keyframe_intervall");
# snakemake's validate then fills in the schema's defaults.
try:
    fer_config.validate(config, source="config")
except fer_config.ConfigError as exc:
    raise WorkflowError(str(exc)) from None
validate(config, schema="../schemas/config.schema.yaml")

# Every path a rule writes or reads comes from fer_pipeline.paths (the layout the stages and studies share),
# under this root; rules pass their wildcards as "{dataset}", "{shard}", ... and get the pattern back.
RESULTS = config["results"]
# The exact config of this run (config.yaml plus --configfile/--config overrides), written once under a name
# made of its hash and handed to every job (params.config), so the package reads what snakemake read. Each
# rule's other `params` hold only the config parts its output depends on: changing one preset reruns that
# preset's jobs only.
CONFIG_FILE = str(paths.config_file(RESULTS, fer_fingerprint(config)))
if not Path(CONFIG_FILE).is_file():
    write_text_atomic(CONFIG_FILE, json.dumps(config, indent=1, sort_keys=True))
# Jobs call the package's CLI, `fer-pipeline`. When snakemake was started as .venv/bin/snakemake without
# activating the venv, the CLI beside its interpreter is put on PATH; a rule's conda env (--sdm conda) still
# comes first.
if shutil.which("fer-pipeline") is None:
    os.environ.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)]))


wildcard_constraints:
    dataset=r"[a-z][a-z0-9_]*",
    preset=r"[a-z][a-z0-9_]*",
    shard=r"[A-Za-z0-9_\-]+",
    variant=r"[a-z][a-z0-9_]*",
    network=r"[a-z][a-z0-9_]*",
    fold=r"[0-9]+",
    seed=r"[0-9]+",
    repeat=r"[0-9]+",
    candidate=r"[A-Za-z0-9_\-]+",


def config_file(wildcards, output):
    """params.config of the rules whose jobs read the config: this run's config file (CONFIG_FILE).

    Its name is the hash of the whole config, so it changes with any key. Taking `output` makes it a derived
    param for snakemake, which leaves it out of the params rerun trigger (as it leaves out the paths derived
    from a job's files): what a job depends on is in its other params, not in the file's name.
    """
    return CONFIG_FILE


def dataset_root_or_stop(dataset):
    """The dataset's root; a missing one stops the DAG before any job runs, naming the key to set."""
    try:
        return fer_config.dataset_root(config, dataset)
    except fer_config.ConfigError as exc:
        raise WorkflowError(str(exc)) from None


def generated_datasets(layout=None):
    """The generated datasets (``datasets.<name>.generated``) in config order; with ``layout``, those whose
    adapter reads that layout of the demo generator (enterface: AVI videos, ckplus: image sequences, affectnet:
    stills)."""
    return [name for name, block in config["datasets"].items()
            if block.get("generated", False) and layout in (None, block["adapter"])]


# A generated dataset is written in the layout its adapter reads; an adapter the generator has no layout for
# stops the DAG here, naming the key.
for _dataset in generated_datasets():
    try:
        demo_layout(config, _dataset)
    except ValueError as exc:
        raise WorkflowError(str(exc)) from None


def generator_outputs(layout):
    """The `.complete` markers of a layout's generated datasets, each in the dataset's root (datasets.<name>.root,
    or <results>/<name>/videos when it is null): the outputs of the layout's generator job."""
    return [dataset_root_or_stop(name) / DEMO_COMPLETE_MARKER for name in generated_datasets(layout)]


def generator_parameters(layout):
    """params.demo of a layout's generator job: the demo config that layout reads, the seed and the generator's
    version (frames made by an older generator are remade: snakemake reruns a job whose params changed)."""
    return {**demo_layout_config(config["demo"], layout), "seed": config["seed"], "generator": DEMO_GENERATOR_VERSION}


def generator_datasets(layout):
    """params.datasets of a layout's generator job: the datasets it writes. Derived from the outputs (it takes
    `output`), so it is no rerun trigger of its own: a dataset added or removed changes the outputs."""
    def datasets(wildcards, output):
        return generated_datasets(layout)
    return datasets


def manifest_inputs(wildcards):
    """A generated dataset's manifest waits for the generator; a distributed one needs its root to exist."""
    root = dataset_root_or_stop(wildcards.dataset)
    if config["datasets"][wildcards.dataset].get("generated", False):
        return [root / DEMO_COMPLETE_MARKER]
    return []


def manifest_listing(wildcards):
    """A distributed dataset's listing (names, sizes, mtimes of every file under its root): a video added,
    removed or repaired changes this param, and snakemake's params trigger reruns the manifest. A generated
    dataset has none: its `.complete` input (rewritten by each generation) reruns it."""
    if config["datasets"][wildcards.dataset].get("generated", False):
        return None
    return listing_fingerprint(dataset_root_or_stop(wildcards.dataset))


def manifest_csv(wildcards):
    """The dataset's manifest once the checkpoint has run (raises snakemake's incomplete-checkpoint signal
    before: a param that needs it is then filled in after the checkpoint, from the new manifest)."""
    return checkpoints.manifest.get(dataset=wildcards.dataset).output.manifest


def shard_rows(wildcards):
    """The fingerprint of the shard's manifest rows (all columns): the per-shard jobs take the manifest as an
    ancient input and this as a param, so a rewritten manifest reruns only the shards whose rows changed."""
    return shard_fingerprint(manifest_csv(wildcards), wildcards.shard)


def shards(dataset):
    """Shard names of a dataset, read from its manifest once the manifest checkpoint has run."""
    manifest = checkpoints.manifest.get(dataset=dataset).output.manifest
    return sorted(pd.read_csv(manifest, dtype={"shard": str})["shard"].unique())


def feature_summaries(wildcards):
    return [paths.features_summary(RESULTS, wildcards.dataset, wildcards.preset, shard)
            for shard in shards(wildcards.dataset)]


def folds(dataset):
    """The rounds of a dataset's protocol, from its manifest: its subject folds, or 0 for a fixed split."""
    manifest = checkpoints.manifest.get(dataset=dataset).output.manifest
    return fer_protocols.rounds(read_manifest(manifest))


def study(dataset, name):
    """A study's config for a dataset: studies.<name> with the dataset's study_overrides merged in."""
    return fer_config.study_config(config, dataset, name)


def study_features(name):
    """Input function: the inspected feature store of the preset the study reads."""
    def inputs(wildcards):
        preset = study(wildcards.dataset, name)["preset"]
        return paths.features_inspection(RESULTS, wildcards.dataset, preset)
    return inputs


def ablation_folds(wildcards):
    """Every (variant, fold, training seed) run's summary."""
    ablation = study(wildcards.dataset, "ablation")
    return [paths.run_summary(paths.ablation_run(RESULTS, wildcards.dataset, variant, fold, seed))
            for variant in ablation["variants"] for fold in folds(wildcards.dataset)
            for seed in fer_config.training_seeds(config, ablation)]


def ablation_selection_runs(wildcards):
    """Every (candidate, fold) run of the ablation's selection, with the study's first training seed."""
    ablation = study(wildcards.dataset, "ablation")
    seed = fer_config.training_seeds(config, ablation)[0]
    return [paths.run_summary(paths.ablation_selection_run(RESULTS, wildcards.dataset, candidate, fold, seed))
            for candidate in fer_ablation.candidates(config, wildcards.dataset) for fold in folds(wildcards.dataset)]


def nlstm_trials(wildcards):
    """Every (network, repeat, fold, training seed) trial's summary."""
    nlstm = study(wildcards.dataset, "nlstm")
    manifest = read_manifest(checkpoints.manifest.get(dataset=wildcards.dataset).output.manifest)
    return [paths.run_summary(paths.nlstm_run(RESULTS, wildcards.dataset, variant, repeat, fold, seed))
            for variant in fer_nlstm.variants(nlstm) for repeat, fold in fer_nlstm.trials(config, wildcards.dataset, manifest)
            for seed in fer_config.training_seeds(config, nlstm)]


def frafer_features(wildcards):
    """Input function: the inspected feature store the frafer jobs of a dataset read (the stills preset, or the
    video block's preset of a video dataset)."""
    return paths.features_inspection(RESULTS, wildcards.dataset, fer_frafer.preset(config, wildcards.dataset))


def frafer_weights(wildcards):
    """Input function of train_frafer: the FER network's weights file (weights.fer), as an input list; unset with
    weights.if_missing: stop, the DAG stops here, before any job runs, with the study's message
    (fer_pipeline.studies.frafer.missing_weights_message)."""
    frafer = study(wildcards.dataset, "frafer")
    try:
        fer_frafer.check_weights(frafer, wildcards.dataset)
    except fer_config.ConfigError as exc:
        raise WorkflowError(str(exc)) from None
    return [frafer["weights"]["fer"]] if frafer["weights"].get("fer") else []


def frafer_video_network(wildcards):
    """A frafer video job's network: the summary of the stills job (studies.frafer.video.features_from) whose
    kept weights it reads; none when video.weights names a file instead."""
    run = fer_frafer.video_network_run(config, wildcards.dataset, wildcards.variant, wildcards.seed)
    return [] if run is None else [paths.run_summary(run)]


def frafer_runs(wildcards):
    """Every frafer job's summary: (network, class set, seed) on stills, (network, seed) on videos."""
    return [paths.run_summary(run) for run in fer_frafer.jobs(config, wildcards.dataset)]


def fusion_weights(dataset, network):
    """The weights file a fusion job starts ``network`` from on ``dataset``, as an input list ([]: trained from
    scratch, weights.if_missing: scratch). Unset with weights.if_missing: stop, the DAG stops here, before any
    job runs, with the study's message (fer_pipeline.studies.fusion.missing_weights_message)."""
    try:
        path = fer_fusion.weights_file(study(dataset, "fusion"), network)
    except fer_config.ConfigError as exc:
        raise WorkflowError(str(exc)) from None
    return [] if path is None else [path]


def fusion_pretrain_source(dataset):
    """studies.fusion.pretrain.dataset of ``dataset`` (None: no FER2013 stage); a name that is no dataset of the
    fer2013 adapter, or one whose root is missing, stops the DAG here, naming the keys."""
    try:
        return fer_fusion.pretrain_source(config, dataset, check_root=True)
    except fer_config.ConfigError as exc:
        raise WorkflowError(str(exc)) from None


def fusion_network_start(wildcards):
    """Input function of fusion_network: what the network starts from. VGG-Face with a FER2013 stage: that
    stage's summary (its job reads weights.vgg_face); otherwise the weights file, if any (fusion_weights)."""
    if wildcards.network == "vgg_face" and fusion_pretrain_source(wildcards.dataset):
        return [paths.pretrain_summary(paths.fusion_pretrain(RESULTS, wildcards.dataset, wildcards.seed))]
    return fusion_weights(wildcards.dataset, wildcards.network)


def fusion_pretrain_inputs(wildcards):
    """Input function of fusion_pretrain: the FER2013-layout dataset's manifest and inspected stills store
    (studies.fusion.pretrain's dataset and preset), and the VGG-Face weights the stage starts from."""
    source = fusion_pretrain_source(wildcards.dataset)
    if source is None:
        raise WorkflowError(fer_fusion.no_pretrain_message(wildcards.dataset))
    preset = study(wildcards.dataset, "fusion")["pretrain"]["preset"]
    return {"manifest": paths.manifest_csv(RESULTS, source),
            "features": paths.features_inspection(RESULTS, source, preset),
            "weights": fusion_weights(wildcards.dataset, "vgg_face")}


def fusion_rounds(wildcards):
    """Every (round, training seed) of the fusion study: its fused predictions' summary. The networks' weights
    and the FER2013 stage's dataset are checked first, so a missing one stops the DAG before any job runs (the
    rounds come from the manifest: the network jobs join the DAG only once its checkpoint has run)."""
    for network in fer_fusion.NETWORKS:
        fusion_weights(wildcards.dataset, network)
    fusion_pretrain_source(wildcards.dataset)
    fusion = study(wildcards.dataset, "fusion")
    return [paths.run_summary(paths.fusion_round(RESULTS, wildcards.dataset, fold, seed))
            for fold in folds(wildcards.dataset) for seed in fer_config.training_seeds(config, fusion)]


def fusion_parameters(dataset, job):
    """A fusion job's params: only the part of the study's config its output depends on."""
    return fer_fusion.job_parameters(study(dataset, "fusion"), job)


def study_tables(wildcards):
    return [paths.study_table(RESULTS, wildcards.dataset, name)
            for name in config["datasets"][wildcards.dataset].get("studies", [])]


def get_final_output():
    """Default target: every generated dataset's presets (inspected, with a contact sheet), studies, the studies
    side by side (studies.csv) and report
    (the demo in the eNTERFACE layout, demo_ckplus in the CK+ layout, demo_affectnet's stills in the AffectNet
    layout)."""
    targets = []
    for name in generated_datasets():
        block = config["datasets"][name]
        studies = block.get("studies", [])
        targets += [paths.features_inspection(RESULTS, name, p) for p in block["presets"]] + \
                   [paths.contact_sheet(RESULTS, name, p) for p in block["presets"]] + \
                   [paths.study_table(RESULTS, name, study) for study in studies] + \
                   ([fer_report.studies_csv(RESULTS, name), paths.report_html(RESULTS, name)] if studies else [])
    return targets
