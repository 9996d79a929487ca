# Config validation, wildcard constraints and the input functions every rule file uses.
import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

from fer_pipeline import config as fer_config

# The package's check first: its message names the offending key (e.g. "detection.keyframe_intervall");
# snakemake's validate then fills in the schema's defaults.
try:
    fer_config.validate(config, source="config")
except fer_config.ConfigError as exc:
    raise WorkflowError(str(exc)) from None
validate(config, schema="../schemas/config.schema.yaml")

RESULTS = config["results"]
# The exact config of this run, passed to every job, so `--config key=value` overrides reach the package.
CONFIG_JSON = json.dumps(config, sort_keys=True)
# Jobs call the package's CLI. When snakemake was started as .venv/bin/snakemake without activating the
# venv, the CLI beside its interpreter is put on PATH; a rule's conda env (--sdm conda) still comes first.
FER = "fer-pipeline"
if shutil.which(FER) is None:
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


wildcard_constraints:
    dataset=r"[a-z][a-z0-9_]*",
    preset=r"[a-z][a-z0-9_]*",
    shard=r"[A-Za-z0-9_\-]+",


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


def shards(dataset):
    """Shard names of a dataset, read from its manifest once the manifest checkpoint has run."""
    manifest = checkpoints.manifest.get(dataset=dataset).output.manifest
    return sorted(pd.read_csv(manifest, dtype={"shard": str})["shard"].unique())


def feature_summaries(wildcards):
    return expand(f"{RESULTS}/{{dataset}}/features/{{preset}}/{{shard}}.json",
                  dataset=wildcards.dataset, preset=wildcards.preset, shard=shards(wildcards.dataset))


def uses_gpu(device):
    return 1 if str(device).startswith("cuda") else 0


def get_final_output():
    """Default target: every preset of the demo dataset, inspected, with a contact sheet."""
    presets = config["datasets"]["demo"]["presets"] if "demo" in config["datasets"] else []
    return [f"{RESULTS}/demo/features/{p}/inspect.txt" for p in presets] + \
           [f"{RESULTS}/demo/features/{p}/contact_sheet.png" for p in presets]
