"""The frafer study: the class sets, the scored partition kept out of training, HSEmotion's class weights in the
loss, [14]'s per-video statistics, and (slow) the workflow on a tiny AffectNet-layout demo."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fer_pipeline import config as config_mod
from fer_pipeline import paths, train
from fer_pipeline.models import build_model
from fer_pipeline.store import ArraySpec, ShardStore
from fer_pipeline.studies import frafer

CLASSES8 = ["anger", "contempt", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]


def affectnet_manifest(per_class_train=6, per_class_val=3) -> pd.DataFrame:
    """A manifest as the affectnet adapter writes it: no subjects, the train/val partitions, a fixed protocol."""
    rows = []
    for split, count in (("train", per_class_train), ("val", per_class_val)):
        for label in CLASSES8:
            for i in range(count + (2 if label == "happiness" and split == "train" else 0)):
                rows.append({"clip_id": f"{split}_{label}_{i}", "subject": "", "label": label, "split": split,
                             "fold": -1})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def cfg():
    return config_mod.load()


def test_the_7_class_set_drops_contempts_images_and_its_logit(cfg):
    manifest = affectnet_manifest()
    classes8, _, parts8 = frafer.stills_split(cfg, "affectnet", manifest, 8, 0.1)
    classes7, kept, parts7 = frafer.stills_split(cfg, "affectnet", manifest, 7, 0.1)
    assert classes8 == CLASSES8
    assert classes7 == [c for c in CLASSES8 if c != "contempt"]
    assert "contempt" not in set(kept["label"])
    assert not any("contempt" in c for part in parts7.values() for c in part)
    assert any("contempt" in c for part in parts8.values() for c in part)
    model = build_model("frafer_b0", len(classes7), dropout=0.2, stochastic_depth=0.2)
    with torch.no_grad():
        assert model.eval()({"rgb": torch.rand(1, 3, 32, 32)}).shape == (1, 7)


def test_no_scored_image_is_trained_or_validated_on(cfg):
    manifest = affectnet_manifest()
    for n in (8, 7):
        _, kept, parts = frafer.stills_split(cfg, "affectnet", manifest, n, 0.2)
        split_of = dict(zip(kept["clip_id"], kept["split"]))
        assert set(parts["test"]) == {c for c, s in split_of.items() if s == "val"}  # all of the scored partition
        assert {split_of[c] for c in parts["train"] + parts["val"]} == {"train"}
        assert not set(parts["test"]) & (set(parts["train"]) | set(parts["val"]))
        assert not set(parts["train"]) & set(parts["val"]) and parts["val"]


def test_class_weights_are_one_over_count_with_the_smallest_one():
    labels = ["a"] * 10 + ["b"] * 5 + ["c"] * 2
    assert frafer.class_weights(labels, ["a", "b", "c", "d"]) == [1.0, 2.0, 5.0, 1.0]


class Blobs(torch.utils.data.Dataset):
    def __init__(self, n=48):
        rng = np.random.default_rng(0)
        self.y = rng.integers(0, 2, n)
        self.x = (rng.normal(size=(n, 4)) + self.y[:, None]).astype(np.float32)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": torch.from_numpy(self.x[i]), "label": torch.tensor(int(self.y[i]))}


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, batch):
        return self.fc(batch["x"])


def _trained(tmp_path, name, weights):
    torch.manual_seed(0)
    model = Linear()
    training = {"epochs": 2, "batch_size": 8, "lr": 0.1, "optimizer": "adam", "weight_decay": 0.0, "patience": 5,
                "workers": 0, "schedule": {"name": "constant"}}
    train.train(model, Blobs(), None, training, tmp_path / name, "cpu", 0, name, class_weights=weights)
    return model.fc.weight.detach().clone()


def test_class_weights_reach_the_loss(tmp_path):
    # Mutation check: dropping the weights on the way to F.cross_entropy makes the weighted run equal the plain one.
    plain = _trained(tmp_path, "plain", None)
    assert torch.equal(plain, _trained(tmp_path, "ones", [1.0, 1.0]))  # a weighted mean with equal weights
    assert not torch.allclose(plain, _trained(tmp_path, "weighted", [1.0, 10.0]))


def test_video_statistics_over_face_frames_zeros_without_a_face_and_l2(tmp_path):
    frames = np.array([[1.0, 0.0], [3.0, 4.0], [2.0, 2.0]])
    stats = frafer.video_statistics(frames, dim=2)
    np.testing.assert_allclose(stats, [2, 2, np.std([1, 3, 2]), np.std([0, 4, 2]), 1, 0, 3, 4])
    assert not frafer.video_statistics(None, dim=2).any() and frafer.video_statistics(None, dim=2).shape == (8,)
    vectors = frafer.video_descriptors({"a": frames, "b": None}, ["a", "b", "c"], dim=2)
    np.testing.assert_allclose(vectors[0], stats / np.linalg.norm(stats))
    assert not vectors[1:].any()

    # Over the valid (face) frames only, read from a feature store as the video job reads it.
    store_path = tmp_path / "part.zarr"
    rgb = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (10, 20, 30, 40)])
    with ShardStore(store_path, attrs={"stage": "features/x"}) as store:
        store.write_clip("a", {"rgb": ArraySpec(rgb, ("frame", "y", "x", "channel")),
                               "valid": ArraySpec(np.array([True, False, True, True]), ("frame",))}, {})
        store.write_clip("b", {"rgb": ArraySpec(rgb, ("frame", "y", "x", "channel")),
                               "valid": ArraySpec(np.zeros(4, bool), ("frame",))}, {})

    class MeanPixel(nn.Module):
        def pooled_features(self, batch):
            return batch["rgb"].mean(dim=(2, 3))

    clips = pd.DataFrame({"clip_id": ["a", "b"], "store": [str(store_path)] * 2, "label": ["fear", "fear"]})
    features = frafer.frame_features(MeanPixel(), clips, 8, None, 2, "cpu")
    np.testing.assert_allclose(features["a"][:, 0], np.array([10, 30, 40]) / 255, rtol=1e-6)
    assert features["b"] is None
    stats = frafer.video_statistics(features["a"], dim=3)
    np.testing.assert_allclose(stats[[0, 3, 6, 9]], np.array([80 / 3, np.std([10, 30, 40]), 10, 40]) / 255, rtol=1e-5)


@pytest.mark.slow
def test_a_tiny_affectnet_demo_gives_the_frafer_table(face_assets, tmp_path):
    from fixtures_stills import run_snakemake

    results = tmp_path / "results"
    tiny = {"subjects": 3, "clips_per_class": 1, "classes": ["happiness", "surprise"], "duration_s": [1.0, 1.1],
            "fps": 25, "width": 360, "height": 288, "stills_per_class": 2, "assets": str(face_assets)}
    overrides = {"input_size": 32, "val_fraction": 0.2, "attention_faces": 3,
                 "training": {"epochs": 1, "batch_size": 4, "lr": 0.001, "patience": 1}}
    config = config_mod.deep_update(config_mod.load(), {
        "results": str(results), "demo": tiny,
        "datasets": {"demo_affectnet": {"study_overrides": {"frafer": overrides}}}})
    target = paths.study_table(results, "demo_affectnet", "frafer")
    result = run_snakemake(config, tmp_path, str(target), str(paths.report_html(results, "demo_affectnet")))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    table = pd.read_csv(target)
    variants = config["studies"]["frafer"]["variants"]
    assert [(r.variant, r.classes) for r in table.itertuples()] == [(v, n) for n in (8, 7) for v in variants]
    paper = table.set_index(["variant", "classes"])["paper_accuracy"]
    assert paper[("frafer", 8)] == 63.28 and paper[("frafer_b0", 7)] == 65.74 and paper[("frafer_concat", 8)] == 34.18
    assert np.isnan(paper[("frafer_concat", 7)])
    assert {"accuracy_mean", "macro_recall_mean", "macro_f1_mean", "runs", "accuracy_happiness"} <= set(table.columns)
    by_row = table.set_index(["variant", "classes"])
    assert not np.isnan(by_row.loc[("frafer", 8), "accuracy_contempt"])
    assert np.isnan(by_row.loc[("frafer", 7), "accuracy_contempt"])  # no contempt image is scored at 7 classes
    figures = results / "demo_affectnet" / "frafer"
    assert (figures / "attention_maps.png").stat().st_size > 0
    assert (figures / "frafer_classes8_confusion.png").is_file() and (figures / "curves_classes7.png").is_file()
    manifest = pd.read_csv(paths.manifest_csv(results, "demo_affectnet"))
    scored = set(manifest.loc[manifest["split"] == "val", "clip_id"])
    run = frafer.run_dir(results, "demo_affectnet", "frafer", 7, 0)
    predictions = pd.read_csv(run / "predictions.csv")
    assert set(predictions["clip_id"]) == scored - set(manifest.loc[manifest["label"] == "contempt", "clip_id"])
    assert "p_contempt" not in predictions.columns
    summary = json.loads((run / "fold.json").read_text())
    assert summary["images"]["train"] + summary["images"]["val"] == int(
        ((manifest["split"] == "train") & (manifest["label"] != "contempt")).sum())
    assert "scratch" in (results / "demo_affectnet" / "frafer.md").read_text()
    assert "frafer" in (results / "demo_affectnet" / "report.html").read_text()


def test_a_last_training_batch_of_one_moves_to_validation():
    train_, val = pd.DataFrame({"clip_id": list("abcdefghi")}), pd.DataFrame({"clip_id": ["v"]})
    kept, validation = frafer.avoid_single_batch(train_, val, 8)
    assert len(kept) == 8 and list(validation["clip_id"]) == ["v", "i"]
    assert len(frafer.avoid_single_batch(train_.iloc[:7], val, 8)[0]) == 7


@pytest.mark.slow
def test_the_afew_video_path_runs_on_the_afew_fixture(tmp_path):
    """Table II's procedure through the workflow on the AFEW fixture, the FER network from a B0 state dict
    (video.weights): its noise videos have no face, so every video is scored from zeros (and said so)."""
    import torchvision
    from fixtures import make_afew_tree
    from fixtures_stills import run_snakemake

    tree = make_afew_tree(tmp_path / "AFEW_7.0", size=(200, 160))  # larger than detection.min_face_size
    weights = tmp_path / "b0.pt"
    torch.save(torchvision.models.efficientnet_b0(weights=None).state_dict(), weights)
    results = tmp_path / "results"
    config = config_mod.deep_update(config_mod.load(), {
        "results": str(results),
        "datasets": {"afew": {"root": str(tree.root), "studies": ["frafer"], "study_overrides": {"frafer": {
            "input_size": 64, "video": {"features_from": None, "weights": str(weights), "frames_per_clip": 2}}}}}})
    target = paths.study_table(results, "afew", "frafer")
    result = run_snakemake(config, tmp_path, str(target))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    table = pd.read_csv(target)
    assert list(table["variant"]) == ["frafer_b0", "frafer"] and list(table["paper_accuracy"]) == [59.27, 60.83]
    assert (table["classes"] == 7).all() and (table["paper_table"] == "Table II").all()
    manifest = pd.read_csv(paths.manifest_csv(results, "afew"))
    predictions = pd.read_csv(frafer.video_dir(results, "afew", "frafer", 0) / "predictions.csv", dtype={"clip_id": str})
    assert set(predictions["clip_id"]) == set(manifest.loc[manifest["split"] == "val", "clip_id"])  # all of Val
    assert predictions["faceless"].all()
    notes = (results / "afew" / "frafer.md").read_text()
    assert str(weights) in notes and "LinearSVC(C=1.1)" in notes
