"""Loading and validating config.yaml.

The same JSON schema (workflow/schemas/config.schema.yaml) serves snakemake's ``validate`` and the package's
command line, so a wrong key is caught the same way wherever the config enters.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from . import paths

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value is missing, unknown or of the wrong type; the message names the key."""


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        # jsonschema reports the parent; name the offending key itself.
        known = set(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - known)
        parts += extra[:1]
    elif error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        parts += missing[:1]
    return ".".join(parts) or "<top level>"


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    """The schema's validator, parsed once per process (the workflow validates each selection candidate's
    config for every job it plans)."""
    return jsonschema.Draft202012Validator(yaml.safe_load(SCHEMA_PATH.read_text()))


def validate(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate ``config`` against the schema; raise :class:`ConfigError` naming the first bad key."""
    errors = sorted(_validator().iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        raise ConfigError(f"{source}: key '{_key_path(error)}': {error.message}")
    return config


def deep_update(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``base`` with ``overrides`` merged in, nested dicts merged key by key."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_update(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class ConfigLoader(yaml.SafeLoader):
    """YAML with YAML 1.2's floats: ``3e-5`` and ``1e3`` are numbers (YAML 1.1, PyYAML's default, reads a float
    without a dot as a string, so ``lr: 3e-5`` would fail validation as "not of type 'number'")."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
               r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def load(path: str | Path = REPO_ROOT / "config.yaml", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a config file (YAML, :class:`ConfigLoader`; or the JSON the workflow hands its jobs), merge
    ``overrides`` and validate the result."""
    path = Path(path)
    try:
        text = path.read_text()
        config = (json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=ConfigLoader)) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    if overrides:
        config = deep_update(config, overrides)
    return validate(config, source=str(path))


def dataset_config(config: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The ``datasets.<dataset>`` block, or a ConfigError that lists the datasets that are configured."""
    try:
        return config["datasets"][dataset]
    except KeyError:
        known = ", ".join(sorted(config.get("datasets", {})))
        raise ConfigError(f"dataset '{dataset}' is not configured under 'datasets' (configured: {known})") from None


def dataset_root(config: dict[str, Any], dataset: str) -> Path:
    """The dataset's root folder; a ConfigError naming ``datasets.<dataset>.root`` when it is unset or absent.

    A generated dataset (the demo) is made by the workflow, so its root may not exist yet; unset, it is
    ``<results>/<dataset>/videos`` (fer_pipeline.paths).
    """
    block = dataset_config(config, dataset)
    root = block.get("root")
    key = f"datasets.{dataset}.root"
    if not root and block.get("generated", False):
        # Under this run's results folder, so a run with another `results:` never overwrites the default's.
        return paths.generated_root(config["results"], dataset)
    if not root:
        raise ConfigError(f"{key} is not set: set it in config.yaml (or in a file given with --configfile) to "
                          f"the folder that holds the dataset as distributed")
    path = Path(root)
    if not block.get("generated", False) and not path.is_dir():
        raise ConfigError(f"{key} = '{root}' is not a folder: set {key} to the extracted dataset")
    return path


def study_config(config: dict[str, Any], dataset: str, study: str) -> dict[str, Any]:
    """``studies.<study>`` with ``datasets.<dataset>.study_overrides.<study>`` merged in (e.g. the demo's sizes)."""
    if study not in config.get("studies", {}):
        raise ConfigError(f"studies.{study} is not configured")
    overrides = dataset_config(config, dataset).get("study_overrides", {}).get(study, {})
    return deep_update(config["studies"][study], overrides)


def detection_device(config: dict[str, Any]) -> str:
    """The device MTCNN runs on: ``detection.device``, where 'auto' defers to the global ``device``."""
    device = config["detection"]["device"]
    return config["device"] if device == "auto" else device


def requested_gpus(device: str, auto: int) -> int:
    """The GPUs a job that runs on ``device`` asks the scheduler for (its ``gpu`` resource, which the SLURM
    executor turns into --gpus): one for cuda, none for cpu or mps, and ``auto`` for 'auto', whose device is
    only decided where the job runs."""
    if device == "auto":
        return auto
    return 1 if device.startswith("cuda") else 0


def preset_config(config: dict[str, Any], preset: str) -> dict[str, Any]:
    try:
        return config["presets"][preset]
    except KeyError:
        known = ", ".join(sorted(config["presets"]))
        raise ConfigError(f"preset '{preset}' is not defined under 'presets' (defined: {known})") from None


def training_seeds(config: dict[str, Any], study: dict[str, Any]) -> list[int]:
    """The training seeds of a study: its ``seeds`` list (each fold is trained once per seed and the table
    gives mean and std over folds and seeds), or the one global ``seed``."""
    return list(study.get("seeds") or [config["seed"]])


def run_seed(seed: int, fold: int) -> int:
    """The seed of one training run: apart for every fold and training seed (seed 0 gives the fold's index)."""
    return 1000 * seed + fold
