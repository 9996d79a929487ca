"""The CK+-layout demo in the workflow: the default target asks for it, its generator job is the CK+ layout's,
and snakemake runs a tiny one through the ckplus adapter, detection and features (image-sequence media end to
end)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fer_pipeline import config as config_mod
from fer_pipeline import demo, paths
from fer_pipeline.datasets import read_manifest
from fer_pipeline.store import ShardStore, read_field
from fer_pipeline.windows import index_clips

REPO = Path(__file__).resolve().parent.parent
DATASET = "demo_ckplus"


def run_snakemake(config: dict, folder: Path, *args: str) -> subprocess.CompletedProcess:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    # Targets go before --configfile, which takes every word after it.
    result = subprocess.run([sys.executable, "-m", "snakemake", *args, "--cores", "2", "--configfile", str(path)],
                            cwd=REPO, capture_output=True, text=True, timeout=1200)
    (folder / "snakemake.log").write_text(result.stdout + result.stderr)
    return result


def test_the_default_target_generates_and_inspects_every_generated_dataset(tmp_path):
    """`make demo`'s target: the eNTERFACE demo and the CK+ demo, each written by its layout's generator job
    (the CK+ one with `fer-pipeline demo --dataset demo_ckplus`), each preset inspected with a contact sheet."""
    config = config_mod.deep_update(config_mod.load(), {"results": str(tmp_path / "results")})
    result = run_snakemake(config, tmp_path, "-n", "-p")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert re.search(r"^demo_videos\s+1$", out, re.M) and re.search(r"^demo_sequences\s+1$", out, re.M)
    assert re.search(r"^manifest\s+4$", out, re.M)
    results = tmp_path / "results"
    wanted = [paths.features_inspection(results, DATASET, "ec112"), paths.contact_sheet(results, DATASET, "ec112"),
              paths.features_inspection(results, "demo", "ec112"), paths.study_table(results, "demo", "ablation")]
    (inputs,) = re.findall(r"^rule all:\n\s+input: (.*)$", out, re.M)
    assert all(str(path) in inputs.split(", ") for path in wanted), inputs
    assert str(paths.study_table(results, DATASET, "nlstm")) in inputs.split(", ")  # the CK+ layout's study
    commands = re.findall(r"^Shell command: (fer-pipeline demo .*)$", out, re.M)
    assert sorted(command.split(" --config")[0] for command in commands) == \
        ["fer-pipeline demo --dataset demo", "fer-pipeline demo --dataset demo_affectnet",
         f"fer-pipeline demo --dataset {DATASET}", "fer-pipeline demo --dataset demo_fer2013"]
    # Each generator job writes the `.complete` of its own datasets' roots.
    for rule, dataset in (("demo_videos", "demo"), ("demo_sequences", DATASET)):
        block = out.split(f"rule {rule}:\n", 1)[1].split("\n\n", 1)[0]
        assert f"output: {paths.generated_root(results, dataset) / demo.COMPLETE_MARKER}" in block, block


@pytest.mark.slow
def test_a_tiny_ckplus_demo_runs_through_detection_and_features(tmp_path, face_assets):
    """2 subjects x 2 classes of short sequences at 360x288, generated in the CK+ layout, read by the ckplus
    adapter: every labelled sequence is in the manifest with its label and gets aligned faces, flow and
    dynamic images; the unlabelled ones are skipped as such; the eNTERFACE demo is not touched."""
    results = tmp_path / "results"
    config = config_mod.deep_update(config_mod.load(), {
        "results": str(results),
        "datasets": {DATASET: {"protocol": {"name": "kfold", "groups": 2}}},
        "demo": {"subjects": 2, "classes": ["happiness", "surprise"], "width": 360, "height": 288,
                 "sequence_frames": [10, 14], "assets": str(face_assets)},
        "detection": {"min_face_size": 20},
    })
    target = paths.features_inspection(results, DATASET, "ec112")
    result = run_snakemake(config, tmp_path, str(target))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert re.search(r"^demo_sequences\s+1$", log, re.M) and not re.search(r"^demo_videos\s", log, re.M)

    root = paths.generated_root(results, DATASET)
    table = pd.read_csv(root / demo.CLIPS_FILE)
    labelled = table[table["labelled"]]
    assert len(labelled) == 4 and (~table["labelled"]).sum() == 2
    manifest = read_manifest(paths.manifest_csv(results, DATASET))
    expected = {f"{row.ckplus_subject}_{row.sequence:03d}": (row.ckplus_subject, row.label, row.n_frames)
                for row in labelled.itertuples()}
    assert {row.clip_id: (row.subject, row.label, row.n_frames) for row in manifest.itertuples()} == expected
    assert sorted(manifest["fold"].unique()) == [0, 1]
    skipped = pd.read_csv(paths.manifest_skipped_csv(results, DATASET))
    unlabelled = {str(root.resolve() / path) for path in table.loc[~table["labelled"], "path"]}
    assert unlabelled <= set(skipped.loc[skipped["reason"].str.startswith("unlabelled"), "path"])

    clips = index_clips(config, DATASET, "ec112", manifest)
    assert sorted(clips["clip_id"]) == sorted(expected)
    for row in clips.itertuples():
        group = ShardStore(row.store, mode="r").clip(row.clip_id)
        n = expected[row.clip_id][2]
        assert group["rgb"].shape == (n, 112, 112, 3) and read_field(group, "flow").shape == (n - 1, 112, 112, 2)
        # MTCNN misses the odd grey apex of these synthetic faces (a frame held from its neighbour, marked
        # invalid): most frames, and the neutral first one, have a face.
        valid = read_field(group, "valid")
        assert valid[0] and valid.mean() >= 0.8 and read_field(group, "dyn_rgb").shape[0] >= 1, (row.clip_id, valid)
        assert group.attrs["source"]["path"] == str(root.resolve() / "cohn-kanade-images" / row.subject /
                                                    row.clip_id.split("_")[1])
        # The aligned face moves from the neutral first frame to the apex: the flow is not empty.
        assert np.abs(read_field(group, "flow")).mean() > 0.05
    text = target.read_text()
    # One "total" line per shard store (the demos hold five subjects a shard).
    assert sum(int(n) for n in re.findall(r"^total: (\d+) clips", text, re.M)) == len(expected)
    assert "skipped clips: 0" in text
    assert not paths.dataset_dir(results, "demo").exists()


@pytest.mark.slow
def test_the_nlstm_study_runs_end_to_end_on_a_tiny_ckplus_demo(tmp_path, face_assets):
    """3 subjects x 2 classes in the CK+ layout, 3 subject folds: every network on every trial, then nlstm.csv
    with the four rows in the paper's order, its numbers beside (CK+'s, as the demo asks), the per-trial
    table, STC-NLSTM's confusion matrix and the per-class bars; every trial subject-independent; adding a
    repeat trains only the new repeat's trials."""
    results = tmp_path / "results"
    tiny = {"sizes": {"input_size": 16, "sequence_length": 6, "channels": 4, "lstm_hidden": 8},
            "training": {"iterations": 6, "batch_size": 4}, "augmentation": {"flip": True, "angles": [5.0]}}
    config = config_mod.deep_update(config_mod.load(), {
        "results": str(results),
        "datasets": {DATASET: {"protocol": {"name": "kfold", "groups": 3}, "presets": ["stc64"],
                               "study_overrides": {"nlstm": tiny}}},
        "demo": {"subjects": 3, "classes": ["happiness", "surprise"], "width": 360, "height": 288,
                 "sequence_frames": [8, 12], "assets": str(face_assets)},
        "detection": {"min_face_size": 20},
    })
    target = paths.study_table(results, DATASET, "nlstm")
    result = run_snakemake(config, tmp_path, str(target))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert len(re.findall(r"\(Rule: train_nlstm\)", log)) == 12, log[-3000:]

    table = pd.read_csv(target)
    assert table["variant"].tolist() == ["stc", "stc_lstm", "stc_slstm", "stc_nlstm"]
    assert table["trials"].tolist() == [3] * 4
    assert table["paper_accuracy"].tolist() == [98.9, 99.3, 99.4, 99.8]
    for column in ("accuracy_mean", "accuracy_std", "macro_recall_mean", "macro_f1_mean", "accuracy_happiness",
                   "accuracy_surprise"):
        assert table[column].between(0, 100).all(), column
    trials = pd.read_csv(paths.study_folds_table(results, DATASET, "nlstm"))
    assert len(trials) == 12 and set(trials["fold"]) == {0, 1, 2} and set(trials["repeat"]) == {0}
    manifest = read_manifest(paths.manifest_csv(results, DATASET))
    for variant in table["variant"]:
        tested = []
        for fold in range(3):
            run = paths.nlstm_run(results, DATASET, variant, 0, fold, 0)
            split = json.loads(paths.run_summary(run).read_text())["split"]
            assert not set(split["test"]) & (set(split["train"]) | set(split["val"]))
            predictions = pd.read_csv(paths.run_predictions(run), dtype={"subject": str})
            assert set(predictions["subject"]) == set(split["test"])
            tested += predictions["clip_id"].tolist()
        assert sorted(tested) == sorted(manifest["clip_id"])  # every sequence tested once per repeat
    figures = target.with_suffix("")
    for name in ("stc_nlstm_confusion.png", "stc_nlstm_curves.png", "class_accuracy.png"):
        assert (figures / name).stat().st_size > 1000, name
    confusion = pd.read_csv(figures / "stc_nlstm_confusion.csv", index_col=0)
    assert np.allclose(confusion.sum(axis=1), 100, atol=0.05)

    config["datasets"][DATASET]["study_overrides"]["nlstm"]["repeats"] = 2
    result = run_snakemake(config, tmp_path, str(target), "-n")
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert re.search(r"^train_nlstm\s+12$", log, re.M), log[-3000:]
    assert "repeat0" not in "".join(re.findall(r"^\s+output: (.*)$", log, re.M))
