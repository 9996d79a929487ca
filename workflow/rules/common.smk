# Config validation, wildcard constraints and the input functions every rule file uses.
import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

from fer_pipeline import config as fer_config
from fer_pipeline import protocols as fer_protocols
from fer_pipeline.datasets import read_manifest
from fer_pipeline.demo import GENERATOR_VERSION as DEMO_GENERATOR_VERSION
from fer_pipeline.files import write_text_atomic
from fer_pipeline.provenance import fingerprint as fer_fingerprint
from fer_pipeline.studies import fusion as fer_fusion

# The package's check first: its message names the offending key (e.g. "detection.keyframe_intervall");
# snakemake's validate then fills in the schema's defaults.
try:
    fer_config.validate(config, source="config")
except fer_config.ConfigError as exc:
    raise WorkflowError(str(exc)) from None
validate(config, schema="../schemas/config.schema.yaml")

RESULTS = config["results"]
# The exact config of this run (config.yaml plus --configfile/--config overrides), written once under a name
# made of its hash and handed to every job, so the package reads what snakemake read. Each rule's `params`
# hold only the config parts its output depends on: changing one preset reruns that preset's jobs only.
CONFIG_FILE = str(Path(RESULTS) / ".config" / f"config-{fer_fingerprint(config)[:12]}.json")
if not Path(CONFIG_FILE).is_file():
    write_text_atomic(CONFIG_FILE, json.dumps(config, indent=1, sort_keys=True))
# Jobs call the package's CLI. When snakemake was started as .venv/bin/snakemake without activating the
# venv, the CLI beside its interpreter is put on PATH; a rule's conda env (--sdm conda) still comes first.
FER = "fer-pipeline"
if shutil.which(FER) is None:
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


wildcard_constraints:
    dataset=r"[a-z][a-z0-9_]*",
    preset=r"[a-z][a-z0-9_]*",
    shard=r"[A-Za-z0-9_\-]+",
    variant=r"[a-z][a-z0-9_]*",
    network=r"[a-z][a-z0-9_]*",
    fold=r"[0-9]+",


def dataset_root_or_stop(dataset):
    """The dataset's root; a missing one stops the DAG before any job runs, naming the key to set."""
    try:
        return fer_config.dataset_root(config, dataset)
    except fer_config.ConfigError as exc:
        raise WorkflowError(str(exc)) from None


def manifest_inputs(wildcards):
    """A generated dataset's manifest waits for the generator; a distributed one needs its root to exist."""
    root = dataset_root_or_stop(wildcards.dataset)
    if config["datasets"][wildcards.dataset].get("generated", False):
        return [str(root / ".complete")]
    return []


def manifest_parameters(dataset):
    """What a manifest depends on: the adapter, root, protocol, shard size and seed (not the studies)."""
    block = config["datasets"][dataset]
    return {key: block.get(key) for key in ("adapter", "root", "protocol", "shard_size")} | {"seed": config["seed"]}


def shards(dataset):
    """Shard names of a dataset, read from its manifest once the manifest checkpoint has run."""
    manifest = checkpoints.manifest.get(dataset=dataset).output.manifest
    return sorted(pd.read_csv(manifest, dtype={"shard": str})["shard"].unique())


def feature_summaries(wildcards):
    return expand(f"{RESULTS}/{{dataset}}/features/{{preset}}/{{shard}}.json",
                  dataset=wildcards.dataset, preset=wildcards.preset, shard=shards(wildcards.dataset))


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
        return f"{RESULTS}/{wildcards.dataset}/features/{preset}/inspect.txt"
    return inputs


def ablation_folds(wildcards):
    return expand(f"{RESULTS}/{{dataset}}/ablation/{{variant}}/fold{{fold}}/fold.json",
                  dataset=wildcards.dataset, variant=study(wildcards.dataset, "ablation")["variants"],
                  fold=folds(wildcards.dataset))


def fusion_rounds(wildcards):
    return expand(f"{RESULTS}/{{dataset}}/fusion/fold{{fold}}/fold.json", dataset=wildcards.dataset,
                  fold=folds(wildcards.dataset))


def fusion_parameters(dataset, job):
    """A fusion job's params: only the part of the study's config its output depends on."""
    return fer_fusion.job_parameters(study(dataset, "fusion"), job)


def study_tables(wildcards):
    return [f"{RESULTS}/{wildcards.dataset}/{name}.csv" for name in config["datasets"][wildcards.dataset].get("studies", [])]


def get_final_output():
    """Default target: the demo dataset's presets (inspected, with a contact sheet), studies and report."""
    if "demo" not in config["datasets"]:
        return []
    demo = config["datasets"]["demo"]
    return [f"{RESULTS}/demo/features/{p}/inspect.txt" for p in demo["presets"]] + \
           [f"{RESULTS}/demo/features/{p}/contact_sheet.png" for p in demo["presets"]] + \
           [f"{RESULTS}/demo/{name}.csv" for name in demo.get("studies", [])] + \
           ([f"{RESULTS}/demo/report.html"] if demo.get("studies") else [])
