"""``weights.if_missing: stop`` fires while snakemake builds the DAG: a fusion or frafer job whose weights are unset
stops the run before any job, with the study's message; targets that do not involve the study still run. So does
a FER2013 stage whose dataset has no root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fer_pipeline import config as config_mod
from fer_pipeline import paths
from fer_pipeline.studies import frafer, fusion

REPO = Path(__file__).resolve().parent.parent


def snakemake(tmp_path, config: dict, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    # Targets go before --configfile, which takes every word after it.
    return subprocess.run([sys.executable, "-m", "snakemake", *args, "--cores", "1", "--configfile", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def afew(tmp_path_factory):
    """The repo's config with the AFEW fixture as afew's root (fusion weights unset, if_missing stop: the defaults)."""
    from fixtures import make_afew_tree

    folder = tmp_path_factory.mktemp("afew")
    tree = make_afew_tree(folder / "AFEW_7.0")
    config = config_mod.deep_update(config_mod.load(), {"results": str(folder / "results"),
                                                        "datasets": {"afew": {"root": str(tree.root)}}})
    assert config_mod.study_config(config, "afew", "fusion")["weights"]["if_missing"] == "stop"
    return config


def test_a_fusion_table_without_weights_stops_before_any_job(afew, tmp_path):
    results = Path(afew["results"])
    target = str(paths.study_table(results, "afew", "fusion"))
    for dry in (["-n"], []):
        result = snakemake(tmp_path, afew, target, *dry)
        assert result.returncode != 0
        assert one_line(fusion.missing_weights_message("vgg_face")) in one_line(result.stdout + result.stderr)
    assert not paths.manifest_csv(results, "afew").exists()  # the real run stopped before the manifest, too
    # A network job named on its own stops with its own network's message.
    c3d = paths.network_features_summary(paths.fusion_job(results, "afew", 0, 0, "c3d"))
    result = snakemake(tmp_path, afew, str(c3d), "-n")
    assert result.returncode != 0
    assert one_line(fusion.missing_weights_message("c3d")) in one_line(result.stdout + result.stderr)


def test_targets_without_the_study_still_run(afew, tmp_path):
    results = Path(afew["results"])
    result = snakemake(tmp_path, afew, str(paths.features_inspection(results, "afew", "xu128")), "-n")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "extract_features" in result.stdout or "manifest" in result.stdout


def test_a_fer2013_stage_without_its_dataset_stops_naming_both_keys(afew, tmp_path):
    scratch = config_mod.deep_update(afew, {"datasets": {"afew": {"study_overrides": {"fusion": {
        "weights": {"if_missing": "scratch"}}}}}})
    target = str(paths.study_table(Path(afew["results"]), "afew", "fusion"))
    result = snakemake(tmp_path, scratch, target, "-n")
    out = one_line(result.stdout + result.stderr)
    assert result.returncode != 0
    assert "datasets.fer2013.root is not set" in out and "studies.fusion.pretrain.dataset of afew" in out
    skipped = config_mod.deep_update(scratch, {"datasets": {"afew": {"study_overrides": {"fusion": {
        "pretrain": {"dataset": None}}}}}})
    result = snakemake(tmp_path, skipped, target, "-n")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def test_a_frafer_table_without_fer_weights_stops_before_any_job(tmp_path):
    from fixtures_stills import make_affectnet_tree

    tree = make_affectnet_tree(tmp_path / "AffectNet")
    results = tmp_path / "results"
    config = config_mod.deep_update(config_mod.load(), {"results": str(results),
                                                        "datasets": {"affectnet": {"root": str(tree.root)}}})
    result = snakemake(tmp_path, config, str(paths.study_table(results, "affectnet", "frafer")), "-n")
    assert result.returncode != 0
    assert one_line(frafer.missing_weights_message("affectnet")) in one_line(result.stdout + result.stderr)
    result = snakemake(tmp_path, config, str(paths.features_inspection(results, "affectnet", "affect224")), "-n")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
