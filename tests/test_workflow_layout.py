"""The workflow's results layout and rerun triggers: every path from fer_pipeline.paths and quoted (a results
folder with a space runs), a distributed dataset's manifest sees a video added, only the shard whose manifest
rows changed is recomputed, and `snakemake --lint` has nothing to say."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fer_pipeline import config as config_mod
from fer_pipeline import paths, video
from fer_pipeline.datasets import listing_fingerprint, shard_fingerprint

REPO = Path(__file__).resolve().parent.parent


def run_snakemake(config: dict, folder: Path, *targets: str) -> subprocess.CompletedProcess:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    # Targets go before --configfile, which takes every word after it.
    result = subprocess.run([sys.executable, "-m", "snakemake", *targets, "--cores", "2", "--configfile", str(path)],
                            cwd=REPO, capture_output=True, text=True, timeout=1200)
    with open(folder / "snakemake.log", "a") as log:
        log.write(result.stdout + result.stderr)
    return result


def jobs_run(result: subprocess.CompletedProcess) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job snakemake started, from the job blocks it prints (grouped jobs' blocks
    are indented): ``rule detect_faces:`` ... ``wildcards: dataset=enterface, shard=subject02``."""
    jobs, rule, wildcards = set(), None, ""
    for line in (result.stdout + result.stderr).splitlines():
        header = re.fullmatch(r"\s*(?:local)?(?:rule|checkpoint) (\w+):", line)
        if header:
            if rule:
                jobs.add((rule, wildcards))
            rule, wildcards = header.group(1), ""
            continue
        match = re.fullmatch(r"\s*wildcards: (.*)", line)
        if match and rule:
            wildcards = match.group(1).strip()
    if rule:
        jobs.add((rule, wildcards))
    return jobs


def tiny_demo(face_assets: Path) -> dict:
    """2 subjects x 2 classes x 1 clip of ~1 s at 360x288."""
    return {"subjects": 2, "clips_per_class": 1, "classes": ["happiness", "surprise"], "duration_s": [1.0, 1.1],
            "width": 360, "height": 288, "assets": str(face_assets)}


# ---- fast -----------------------------------------------------------------------------------------------------

def test_lint_is_clean(tmp_path):
    # A results root of its own: loading the workflow writes the run's config file under it.
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--config", f"results={tmp_path / 'r s'}"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "Lints for" not in out, out[-3000:]


def test_the_rules_build_no_results_path_of_their_own():
    """Every path comes from fer_pipeline.paths (no f-string, no RESULTS in a shell command), every rule calls
    the CLI literally and quotes every file it hands to it."""
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        assert not re.search(r'\bf"', text), f"{smk.name}: an f-string"
        for name in ("{RESULTS", "{FER}", "{CONFIG_FILE}"):
            assert name not in text, f"{smk.name}: {name}"
        if smk.name == "common.smk":
            continue
        for shell in re.findall(r"shell:\n((?:\s+\".*\"\n)+)", text):
            assert shell.strip().startswith('"fer-pipeline '), shell
            for field in re.findall(r"\{(input|output|log|params)(\.\w+)?(:q)?\}", shell):
                assert field[2] == ":q", f"{smk.name}: {{{field[0]}{field[1]}}} unquoted in {shell}"


def test_listing_fingerprint_sees_names_sizes_and_mtimes(tmp_path):
    (tmp_path / "subject 1" / "happiness").mkdir(parents=True)
    clip = tmp_path / "subject 1" / "happiness" / "a.avi"
    clip.write_bytes(b"x" * 10)
    first = listing_fingerprint(tmp_path)
    assert listing_fingerprint(tmp_path) == first and len(first) == 64
    clip.write_bytes(b"y" * 11)  # resized
    resized = listing_fingerprint(tmp_path)
    assert resized != first
    os.utime(clip, ns=(time.time_ns(), time.time_ns() - 10**9))  # touched
    touched = listing_fingerprint(tmp_path)
    assert touched != resized
    (tmp_path / "subject 1" / "happiness" / "b.avi").write_bytes(b"")  # added
    assert listing_fingerprint(tmp_path) != touched
    assert listing_fingerprint(tmp_path / "absent") == listing_fingerprint(tmp_path / "subject 1" / "surprise")


def test_shard_fingerprint_changes_with_that_shards_rows_only(tmp_path):
    rows = pd.DataFrame({"clip_id": ["s1_ha_1", "s1_su_1", "s2_ha_1"], "label": ["happiness", "surprise", "happiness"],
                         "fold": [0, 0, 1], "shard": ["subject01", "subject01", "subject02"], "sha256": ["a", "b", "c"]})
    manifest = tmp_path / "manifest.csv"
    rows.to_csv(manifest, index=False)
    before = {s: shard_fingerprint(manifest, s) for s in ("subject01", "subject02")}
    assert before["subject01"] != before["subject02"]
    rows.loc[2, "sha256"] = "c2"  # subject 2's video repaired
    time.sleep(0.01)
    rows.to_csv(manifest, index=False)
    assert shard_fingerprint(manifest, "subject01") == before["subject01"]
    assert shard_fingerprint(manifest, "subject02") != before["subject02"]
    rows["fold"] = [1, 1, 0]  # the folds dealt anew (a subject added elsewhere): no preprocessing input
    rows.to_csv(manifest, index=False)
    os.utime(manifest, ns=(time.time_ns(), time.time_ns() + 10**9))  # whatever the clock's resolution
    assert shard_fingerprint(manifest, "subject01") == before["subject01"]
    rows.loc[0, "label"] = "sadness"  # relabelled
    rows.to_csv(manifest, index=False)
    os.utime(manifest, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert shard_fingerprint(manifest, "subject01") != before["subject01"]


# ---- slow: end to end -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_results_folder_with_a_space_runs_the_preprocessing(tmp_path, face_assets):
    results = tmp_path / "my results"
    config = config_mod.deep_update(config_mod.load(), {
        "results": str(results),
        "datasets": {"demo": {"root": None, "presets": ["ec112", "xu128"], "protocol": {"name": "losgo", "groups": 2}}},
        "demo": tiny_demo(face_assets),
        "detection": {"min_face_size": 20},
    })
    target = paths.features_inspection(results, "demo", "ec112")
    result = run_snakemake(config, tmp_path, str(target))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    # The demo's root is under this run's results (datasets.demo.root is null).
    assert (paths.generated_root(results, "demo") / ".complete").is_file()
    manifest = pd.read_csv(paths.manifest_csv(results, "demo"), dtype={"subject": str})
    assert len(manifest) == 4 and sorted(manifest["subject"].unique()) == ["1", "2"]
    assert all(str(paths.generated_root(results, "demo")) in p for p in manifest["path"])
    for shard in manifest["shard"].unique():
        detections = json.loads(paths.detections_summary(results, "demo", shard).read_text())
        features = json.loads(paths.features_summary(results, "demo", "ec112", shard).read_text())
        assert set(detections["clips"]) == set(features["clips"]) == set(manifest.loc[manifest["shard"] == shard, "clip_id"])
        assert paths.features_store(results, "demo", "ec112", shard).is_dir()
        assert paths.log_file(results, "demo", "detect_faces", shard).is_file()
    text = target.read_text()
    assert "skipped clips: 0" in text
    # Only the preset asked for ran its features jobs; the detections job wrote the dataset's other preset from
    # the same decode (preprocess.detect_shard), which that preset's jobs will find current.
    assert not any(paths.features_dir(results, "demo", "xu128").glob("*.json"))
    assert paths.features_store(results, "demo", "xu128", manifest["shard"].iloc[0]).is_dir()
    # Another config (another config file's name, params.config) with nothing the preprocessing depends on
    # changed: nothing to rerun.
    other = config_mod.deep_update(config, {"studies": {"fusion": {"svm": {"C": [1.0]}}}})
    again = run_snakemake(other, tmp_path, "-n", str(target))
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, \
        (again.stdout + again.stderr)[-3000:]


@pytest.mark.slow
def test_a_video_added_to_a_distributed_dataset_reruns_its_shard_only(tmp_path, face_assets):
    from fer_pipeline import demo

    cfg = config_mod.load()
    root = tmp_path / "enterface"
    demo.generate(root, {**cfg["demo"], **tiny_demo(face_assets)}, seed=1, progress=False)
    (root / ".complete").unlink()  # as distributed: nothing marks it generated
    results = tmp_path / "results"
    config = config_mod.deep_update(cfg, {
        "results": str(results),
        "datasets": {"enterface": {"root": str(root), "protocol": {"name": "losgo", "groups": 2}, "presets": ["ec112"]}},
        "detection": {"min_face_size": 20},
    })
    target = str(paths.features_inspection(results, "enterface", "ec112"))
    first = run_snakemake(config, tmp_path, target)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    manifest = pd.read_csv(paths.manifest_csv(results, "enterface"), dtype={"subject": str})
    assert len(manifest) == 4
    shards = dict(zip(manifest["subject"], manifest["shard"]))
    changed, kept = shards["2"], shards["1"]
    kept_summaries = {p: p.stat().st_mtime_ns for p in (paths.detections_summary(results, "enterface", kept),
                                                        paths.features_summary(results, "enterface", "ec112", kept))}

    # A new clip of subject 2: one of its videos played backwards, in a new sentence folder.
    source = next(root.glob("subject 2/happiness/sentence 1/*.avi"))
    frames, fps = video.decode(source)
    video.write(root / "subject 2" / "happiness" / "sentence 2" / "s2_ha_2.avi", frames[::-1].copy(), fps)
    second = run_snakemake(config, tmp_path, target)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    ran = jobs_run(second)
    assert ("manifest", "dataset=enterface") in ran, ran
    per_shard = {(rule, wildcards) for rule, wildcards in ran if rule in ("detect_faces", "extract_features")}
    assert per_shard == {("detect_faces", f"dataset=enterface, shard={changed}"),
                         ("extract_features", f"dataset=enterface, preset=ec112, shard={changed}")}, ran
    manifest = pd.read_csv(paths.manifest_csv(results, "enterface"), dtype={"subject": str})
    assert "s2_ha_2" in set(manifest["clip_id"]) and len(manifest) == 5
    for summary in (paths.detections_summary(results, "enterface", changed),
                    paths.features_summary(results, "enterface", "ec112", changed)):
        assert "s2_ha_2" in json.loads(summary.read_text())["clips"], summary
    assert {p: p.stat().st_mtime_ns for p in kept_summaries} == kept_summaries  # the other shard untouched

    third = run_snakemake(config, tmp_path, target)
    assert third.returncode == 0, (third.stdout + third.stderr)[-3000:]
    assert "Nothing to be done" in third.stdout + third.stderr, (third.stdout + third.stderr)[-3000:]
    assert jobs_run(third) == set()


def test_the_manifest_depends_on_the_adapters_options_and_not_on_the_studies():
    """An adapter option (Oulu's modality, BP4D's split) changes what the manifest lists: the workflow must
    rerun it; a dataset's presets, studies and sample_fps are read downstream of the manifest only."""
    from fer_pipeline.datasets import manifest_parameters

    config = config_mod.load()
    before = manifest_parameters(config, "oulu")
    assert manifest_parameters(config_mod.deep_update(config, {"datasets": {"oulu": {"modality": "NI"}}}), "oulu") != before
    for key, value in (("presets", ["ec112"]), ("studies", ["ablation"]), ("sample_fps", 10)):
        assert manifest_parameters(config_mod.deep_update(config, {"datasets": {"oulu": {key: value}}}), "oulu") == before
