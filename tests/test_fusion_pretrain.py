"""The fusion study's first stage (001, sec. III-B and IV-A): VGG-Face fine-tuned on FER2013, then every round's
vgg_face job starts from it; the stage's dataset is checked by name and adapter; the table's notes say whether it
ran; and (slow) the workflow on a tiny demo and a FER2013 table: the vgg_face job starts from the stage's kept
weights and both rerun when a FER2013 picture changes."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from fer_pipeline import config as config_mod
from fer_pipeline import paths
from fer_pipeline.config import ConfigError
from fer_pipeline.models import build_model
from fer_pipeline.stills import StillDataset
from fer_pipeline.studies import fusion

SMALL_VGG = {"input_size": 32, "width_multiplier": 0.125, "fc_width": 16, "dropout": 0.0}
FER2013_CLASSES = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]


@pytest.fixture(scope="module")
def cfg():
    return config_mod.load()


def pretrained_summary(tmp_path, classes) -> tuple[dict, dict]:
    """A FER2013 stage's summary and the state dict of its kept weights (best.pt as fer_pipeline.train writes it)."""
    torch.manual_seed(0)
    state = build_model("vgg_face", len(classes), **SMALL_VGG).state_dict()
    torch.save({"model": state, "epoch": 3}, tmp_path / "best.pt")
    summary = {"checkpoint": str(tmp_path / "best.pt"), "classes": classes, "run_sha256": "ab" * 32,
               "note": "fer, 3/2/2 train/val/test pictures"}
    return summary, state


def test_a_round_starts_from_the_fer2013_stage_and_keeps_its_head_only_for_the_same_classes(cfg, tmp_path):
    study = config_mod.study_config(cfg, "afew", "fusion")  # weights unset, if_missing stop: not read with a stage
    summary, state = pretrained_summary(tmp_path, FER2013_CLASSES)
    torch.manual_seed(1)
    same = build_model("vgg_face", 7, **SMALL_VGG)
    note = fusion.initialise(same, study, "vgg_face", summary, FER2013_CLASSES)
    assert note.startswith("fine-tuned from VGG-Face fine-tuned on FER2013 first (fer, 3/2/2")
    for name, value in state.items():
        assert torch.equal(same.state_dict()[name], value), name  # the head too: the same seven classes
    torch.manual_seed(1)
    other = build_model("vgg_face", 7, **SMALL_VGG)
    reordered = FER2013_CLASSES[1:] + FER2013_CLASSES[:1]  # seven classes in another order: the head is not theirs
    fusion.initialise(other, study, "vgg_face", summary, reordered)
    for name, value in state.items():
        assert torch.equal(other.state_dict()[name], value) != name.startswith("fc8."), name
    demo = build_model("vgg_face", 2, **SMALL_VGG)  # the demo's classes: another head shape
    fusion.initialise(demo, study, "vgg_face", summary, ["happiness", "surprise"])
    assert torch.equal(demo.fc6.weight, state["fc6.weight"]) and demo.fc8.weight.shape == (2, 16)
    # Without the stage, the study's weights decide: unset with if_missing stop, the message names the key.
    with pytest.raises(ConfigError, match=r"studies\.fusion\.weights\.vgg_face is not set"):
        fusion.initialise(build_model("vgg_face", 7, **SMALL_VGG), study, "vgg_face")


def test_the_stage_dataset_is_a_configured_fer2013_dataset_or_null(cfg):
    assert fusion.pretrain_source(cfg, "afew") == "fer2013"  # the paper's first stage, by default
    assert fusion.pretrain_source(cfg, "demo") is None  # its pictures are the demo's own test subjects
    off = config_mod.deep_update(cfg, {"studies": {"fusion": {"pretrain": {"dataset": None}}}})
    assert fusion.pretrain_source(off, "afew") is None
    for name, what in (("affectnet", "read by the affectnet adapter"), ("nosuch", "not configured")):
        bad = config_mod.deep_update(cfg, {"studies": {"fusion": {"pretrain": {"dataset": name}}}})
        with pytest.raises(ConfigError, match=rf"studies\.fusion\.pretrain\.dataset of afew is '{name}', which (is )?"
                                              rf"{what}.*fer2013 adapter.*or null"):
            fusion.pretrain_source(bad, "afew")


def test_what_the_stage_and_the_vgg_face_jobs_depend_on(cfg):
    study = config_mod.deep_update(config_mod.study_config(cfg, "demo", "fusion"),
                                   {"pretrain": {"dataset": "demo_fer2013"}})
    off = config_mod.deep_update(study, {"pretrain": {"dataset": None}})
    assert "pretrain" in fusion.job_parameters(study, "vgg_face")
    assert "pretrain" not in fusion.job_parameters(off, "vgg_face")  # null: the jobs' params are as before the stage
    changes = {"pretrain": {"training": {"epochs": 2}}, "vgg_face": {"training": {"epochs": 2}},
               "augmentation": {"rotate_deg": 3}, "svm": {"C": [1.0]}, "weights": {"vgg_face": "v.pth"}}
    differs = {(what, job): fusion.job_parameters(study, job) != fusion.job_parameters(
        config_mod.deep_update(study, {what: change}), job)
        for what, change in changes.items() for job in ("pretrain", "vgg_face", "resnet10")}
    assert differs == {("pretrain", "pretrain"): True, ("pretrain", "vgg_face"): True, ("pretrain", "resnet10"): False,
                       ("vgg_face", "pretrain"): False, ("vgg_face", "vgg_face"): True, ("vgg_face", "resnet10"): False,
                       ("augmentation", "pretrain"): True, ("augmentation", "vgg_face"): True,
                       ("augmentation", "resnet10"): True,
                       ("svm", "pretrain"): False, ("svm", "vgg_face"): False, ("svm", "resnet10"): False,
                       ("weights", "pretrain"): True, ("weights", "vgg_face"): True, ("weights", "resnet10"): False}


def _fold_dir(tmp_path, initialised: str):
    fold = tmp_path / "fold0"
    for network in fusion.NETWORKS:
        (fold / network).mkdir(parents=True)
        (fold / network / "features.json").write_text(json.dumps({"initialised": initialised}))
    (fold / "svm").mkdir()
    methods = {m: {"C": 0.1, "dims": 8} for m in fusion.SVM_INPUTS}
    (fold / "svm" / "svm.json").write_text(json.dumps({"methods": methods}))
    return fold


def test_the_notes_say_whether_the_fer2013_stage_ran(cfg, tmp_path):
    study = config_mod.deep_update(config_mod.study_config(cfg, "demo", "fusion"),
                                   {"pretrain": {"dataset": "demo_fer2013"}})
    summaries = [{"fusion": {"weights": {"aggregation": 0.5, "c3d": 0.25, "lstm": 0.25}}}]
    ran = fusion._notes(study, [_fold_dir(tmp_path / "a", "fine-tuned from VGG-Face fine-tuned on FER2013 first (x)")],
                        summaries)
    assert "fine-tuned on FER2013 first (x)" in ran["vgg_face"] and "not fine-tuned" not in ran["vgg_face"]
    off = config_mod.deep_update(study, {"pretrain": {"dataset": None}})
    skipped = fusion._notes(off, [_fold_dir(tmp_path / "b", "trained from scratch")], summaries)
    assert "not fine-tuned on FER2013 first (studies.fusion.pretrain.dataset null" in skipped["vgg_face"]
    assert "FER2013" not in skipped["resnet10"]


def test_still_crops_are_flipped_and_rotated_in_training_only(monkeypatch):
    import pandas as pd

    face = np.zeros((8, 8, 3), np.uint8)
    face[:, :2] = 255  # a bright band on the left
    index = pd.DataFrame({"store": ["s"], "index": [0], "label": ["a"]})
    monkeypatch.setattr(StillDataset, "_crop", lambda self, i: face)
    torch.manual_seed(0)
    flipped = [StillDataset(index, ["a"], augmentation={"flip": True, "rotate_deg": 0})[0]["rgb"][0, 0, -1] > 0
               for _ in range(40)]
    assert 5 < sum(flipped) < 35
    assert not any(StillDataset(index, ["a"])[0]["rgb"][0, 0, -1] > 0 for _ in range(10))
    rotated = StillDataset(index, ["a"], augmentation={"flip": False, "rotate_deg": 30})[0]["rgb"]
    assert not np.array_equal(rotated, StillDataset(index, ["a"])[0]["rgb"])


@pytest.mark.slow
def test_the_vgg_face_jobs_start_from_the_fer2013_stage_and_rerun_when_fer2013_changes(face_assets, tmp_path):
    """A 3-subject demo (2 classes, 3 folds) and the FER2013 fixture table through snakemake: the stage trains on
    Training, keeps an epoch by PublicTest, scores PrivateTest; fold 0's vgg_face job starts from its kept weights
    (at lr 1e-12 it keeps them, but the head: 2 classes, not 7); a changed FER2013 picture reruns the stage and
    the job, and none of the demo's preprocessing."""
    from fixtures_stills import make_fer2013_tree, run_snakemake

    tree = make_fer2013_tree(tmp_path / "fer2013")
    results = tmp_path / "results"
    sizes = {"width_multiplier": 0.0625, "fc_width": 8, "batch_norm": False, "dropout": 0.0}
    fusion_overrides = {
        "val_fraction": 0.0,
        "pretrain": {"dataset": "fer", "training": {"epochs": 2, "batch_size": 4, "patience": 2}},
        "vgg_face": {"input_size": 32, "val_frames_per_clip": 2, "sizes": sizes,
                     "training": {"epochs": 1, "batch_size": 8, "lr": 1e-12, "patience": 1, "windows_per_clip": 2}}}
    config = config_mod.deep_update(config_mod.load(), {
        "results": str(results),
        "datasets": {"demo": {"protocol": {"name": "losgo", "groups": 3}, "presets": ["xu128"],
                              "studies": ["fusion"], "study_overrides": {"fusion": fusion_overrides}},
                     "fer": {"adapter": "fer2013", "root": str(tree.root), "protocol": {"name": "fixed"},
                             "shard_size": 4, "detection_source": "dataset", "presets": ["fer48"], "studies": []}},
        "demo": {"subjects": 3, "clips_per_class": 1, "classes": ["happiness", "surprise"], "duration_s": [1.0, 1.4],
                 "width": 360, "height": 288, "assets": str(face_assets)},
        "detection": {"min_face_size": 20},
    })
    job = paths.fusion_job(results, "demo", 0, 0, "vgg_face")
    target = str(paths.network_features_summary(job))
    stage = paths.fusion_pretrain(results, "demo", 0)
    result = run_snakemake(config, tmp_path, target)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    summary = json.loads(paths.pretrain_summary(stage).read_text())
    assert (summary["source"], summary["images"], summary["paper_accuracy"]) == ("fer", {"train": 3, "val": 2, "test": 2},
                                                                                  71.01)
    assert summary["classes"] == FER2013_CLASSES and summary["test_accuracy"] is not None
    assert summary["weights_sha256"] is None and "trained from scratch" in summary["initialised"]  # the demo's scratch
    features = json.loads((job / "features.json").read_text())
    assert features["pretrained"]["run_sha256"] == summary["run_sha256"]
    assert features["initialised"].startswith("fine-tuned from VGG-Face fine-tuned on FER2013 first (fer, 3/2/2")

    def kept(path):
        return torch.load(path, map_location="cpu", weights_only=True)["model"]

    stage_weights, job_weights = kept(stage / "best.pt"), kept(job / "best.pt")
    for name, value in stage_weights.items():
        if not name.startswith("fc8."):
            torch.testing.assert_close(job_weights[name], value, rtol=0, atol=1e-6, msg=name)
    assert job_weights["fc8.weight"].shape == (2, 8) and stage_weights["fc8.weight"].shape == (7, 8)

    # A FER2013 Training picture changes (row 1): the stage reruns with another run, and the vgg_face job after it.
    table = tree.root / "fer2013.csv"
    lines = table.read_text().splitlines()
    code, pixels, usage = lines[1].split(",")
    assert usage == "Training"
    lines[1] = ",".join([code, " ".join(str(255 - int(v)) for v in pixels.split()), usage])
    table.write_text("\n".join(lines) + "\n")
    first_shard = pd.read_csv(paths.manifest_csv(results, "demo"), dtype={"shard": str})["shard"].iloc[0]
    demo_features = paths.features_summary(results, "demo", "xu128", first_shard)
    before = demo_features.stat().st_mtime_ns
    result = run_snakemake(config, tmp_path, target)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    ran = set(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", result.stdout + result.stderr, flags=re.M))
    assert {"manifest", "extract_features", "fusion_pretrain", "fusion_network"} <= ran
    again = json.loads(paths.pretrain_summary(stage).read_text())
    assert again["run_sha256"] != summary["run_sha256"]
    assert json.loads((job / "features.json").read_text())["pretrained"]["run_sha256"] == again["run_sha256"]
    assert demo_features.stat().st_mtime_ns == before  # the demo's own preprocessing did not rerun
