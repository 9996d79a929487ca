"""The fusion study's data and bookkeeping: frames and sequences from a store, the SVMs fitted on training
units only, the fusion weights searched on validation units only, and what each job depends on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fer_pipeline import classical, config
from fer_pipeline.frames import (FrameDataset, SequenceDataset, augment, evenly_spaced, sequence_indices,
                                 sequence_start)
from fer_pipeline.store import ArraySpec, ShardStore
from fer_pipeline.studies import fusion

CLASSES = ["anger", "happiness"]


@pytest.fixture
def store(tmp_path):
    """Two clips whose frame t is filled with the value 10 t: 'a' (6 frames, frames 1 and 4 without a face)
    and 'b' (3 frames), and a features store of the same clips."""
    faces = ShardStore(tmp_path / "faces.zarr", attrs={"stage": "test"})
    features = ShardStore(tmp_path / "features.zarr", attrs={"stage": "test"})
    for clip_id, n, invalid in (("a", 6, (1, 4)), ("b", 3, ())):
        rgb = (np.arange(n, dtype=np.uint8) * 10)[:, None, None, None] * np.ones((1, 16, 16, 3), np.uint8)
        valid = np.ones(n, bool)
        valid[list(invalid)] = False
        faces.write_clip(clip_id, {"rgb": ArraySpec(rgb, ("frame", "y", "x", "channel")),
                                   "valid": ArraySpec(valid, ("frame",))}, {"label": "anger"})
        features.write_clip(clip_id, {"features": ArraySpec(np.arange(n * 2, dtype=np.float32).reshape(n, 2),
                                                            ("frame", "feature"))}, {"label": "anger"})
    clips = pd.DataFrame({"clip_id": ["a", "b"], "store": str(tmp_path / "faces.zarr"), "label": CLASSES})
    return clips, tmp_path / "features.zarr"


def test_evenly_spaced_and_looping_sequences():
    assert evenly_spaced(10, 3).tolist() == [0, 4, 9] and evenly_spaced(4, None).tolist() == [0, 1, 2, 3]
    assert evenly_spaced(2, 5).tolist() == [0, 1]
    assert sequence_indices(5, 8, 0).tolist() == [0, 1, 2, 3, 4, 0, 1, 2]  # a short clip loops
    assert sequence_indices(10, 3, 2, stride=3).tolist() == [2, 5, 8]
    assert sequence_start(100, 16, random=False) == 42  # centred
    assert sequence_start(100, 16, random=False, stride=4) == 19  # span (16 - 1) * 4 + 1 = 61
    assert sequence_start(5, 8, random=True) == 0  # no longer than the sequence: it loops from the start
    torch.manual_seed(0)
    assert {sequence_start(20, 16, random=True) for _ in range(200)} == set(range(5))


def test_frames_are_the_valid_frames_resized(store):
    clips, _ = store
    data = FrameDataset(clips, CLASSES, size=8)
    assert data.items.tolist() == [[0, 0], [0, 1], [0, 2], [0, 3], [1, 0], [1, 1], [1, 2]]
    item = data[3]  # clip a's fourth valid frame is frame 5
    assert item["rgb"].shape == (3, 8, 8) and float(item["rgb"].mean()) == pytest.approx(50 / 255)
    assert int(item["label"]) == 0 and int(data[4]["label"]) == 1
    torch.testing.assert_close(data.clip_frames(0)[:, 0, 0, 0] * 255, torch.tensor([0.0, 20.0, 30.0, 50.0]))
    assert FrameDataset(clips, CLASSES, size=8, frames_per_clip=2).items.tolist() == [[0, 0], [0, 3], [1, 0], [1, 2]]


def test_sequences_loop_short_clips_and_crop_the_centre(store):
    clips, _ = store
    data = SequenceDataset(clips, CLASSES, length=6, array="rgb", resize_to=(8, 12), crop=6)
    item = data[0]
    assert item["rgb"].shape == (6, 3, 6, 6)
    # clip a's valid frames are 0, 2, 3, 5: looped from the start
    assert (item["rgb"][:, 0, 0, 0] * 255).round().tolist() == [0, 20, 30, 50, 0, 20]
    features = SequenceDataset(clips.assign(store=str(store[1])), CLASSES, length=4, stride=2, array="features")
    assert features[1]["features"].tolist() == [[0, 1], [4, 5], [2, 3], [0, 1]]  # 3 rows, every 2nd, looped
    with pytest.raises(ValueError, match="resize_to"):
        SequenceDataset(clips, CLASSES, length=4, array="rgb", resize_to=(8, 8), crop=10)


def test_augmentation_treats_every_frame_of_a_sequence_alike():
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    frames[:, :, :2] = 255  # a bright band on the left
    torch.manual_seed(1)
    out = [augment(frames, flip=True, rotate_deg=0) for _ in range(20)]
    flipped = [o for o in out if o[0, :, -1].mean() > 0]
    assert flipped and len(flipped) < 20  # about half
    for o in out:
        assert all(np.array_equal(o[0], f) for f in o[1:])
    rotated = augment(frames, flip=False, rotate_deg=30)
    assert not np.array_equal(rotated, frames) and all(np.array_equal(rotated[0], f) for f in rotated[1:])


# -- no test data in the SVMs or the weight search -----------------------------------------------------------

def round_clips():
    """Nine clips of six subjects: units 1-3 train, 4 validation, 5-6 test; two classes."""
    rows = [(f"c{u}{k}", str(u), part, CLASSES[k % 2])
            for u, part in ((1, "train"), (2, "train"), (3, "train"), (4, "val"), (5, "test"), (6, "test"))
            for k in range(4)]
    return pd.DataFrame(rows, columns=["clip_id", "unit", "part", "label"])


def test_svms_are_fitted_on_training_units_only(monkeypatch):
    clips = round_clips()
    rng = np.random.default_rng(0)
    # every clip's vector is its own: the spy can tell which clips an SVM was fitted on
    vectors = {n: {c: rng.normal(size=3) + (label == "anger") for c, label in zip(clips["clip_id"], clips["label"])}
               for n in fusion.NETWORKS}
    fitted = []
    real = classical.fit_linear_svm

    def spy(features, labels, groups, *args, **kwargs):
        fitted.append((np.asarray(features), list(groups)))
        return real(features, labels, groups, *args, **kwargs)

    monkeypatch.setattr(classical, "fit_linear_svm", spy)
    svm = {"C": [0.1, 1.0], "cv_folds": 3, "calibration": "sigmoid", "standardise": True}
    predictions, info = fusion.svm_predictions(vectors, clips, CLASSES, svm, fold=0, seed=0)
    assert len(fitted) == len(fusion.SVM_INPUTS) == 4
    train = clips[clips["part"] == "train"]
    for (features, groups), (method, networks) in zip(fitted, fusion.SVM_INPUTS.items()):
        assert set(groups) == {"1", "2", "3"} and info[method]["fitted_units"] == ["1", "2", "3"]
        expected = np.stack([np.concatenate([vectors[n][c] for n in networks]) for c in train["clip_id"]])
        np.testing.assert_array_equal(features, expected)
    # validation and test clips are scored, training clips are not
    assert set(predictions["part"]) == {"val", "test"}
    assert set(predictions["clip_id"]) == set(clips.loc[clips["part"] != "train", "clip_id"])
    assert set(predictions["method"]) == set(fusion.SVM_INPUTS)


def scored_rows(method, part, clip_ids, units, labels, p_anger):
    return pd.DataFrame({"method": method, "fold": 0, "part": part, "clip_id": clip_ids, "unit": units,
                         "label": labels, "prediction": "", "p_anger": p_anger, "p_happiness": 1 - np.array(p_anger)})


def test_fusion_weights_are_searched_on_validation_units_only(monkeypatch):
    labels = ["anger", "happiness"] * 2
    right = [0.9, 0.1, 0.9, 0.1]   # confident and right
    wrong = [0.2, 0.8, 0.2, 0.8]   # confident and wrong
    val_ids, test_ids = ["v1", "v2", "v3", "v4"], ["t1", "t2", "t3", "t4"]
    # On validation only the LSTM is right; on the test clips only C3D is: were the test rows used, the
    # search would favour C3D.
    parts = [("val", val_ids, "4", {"aggregation": wrong, "c3d": wrong, "lstm": right}),
             ("test", test_ids, "5", {"aggregation": wrong, "c3d": right, "lstm": wrong})]
    predictions = pd.concat([scored_rows(m, part, ids, unit, labels, p)
                             for part, ids, unit, by_method in parts for m, p in by_method.items()],
                            ignore_index=True)
    seen = []
    real = classical.search_weights

    def spy(probabilities, labels_, step, prior):
        seen.append({m: np.asarray(p) for m, p in probabilities.items()})
        return real(probabilities, labels_, step, prior)

    monkeypatch.setattr(classical, "search_weights", spy)
    settings = {"mode": "search", "weights": {"aggregation": 0.5, "c3d": 0.25, "lstm": 0.25}, "step": 0.25}
    fused, info = fusion.fuse_predictions(predictions, CLASSES, settings, fold=0)
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0]["lstm"][:, 0], right)  # the validation rows, and only they
    np.testing.assert_allclose(seen[0]["c3d"][:, 0], wrong)
    assert info["searched_on_units"] == ["4"]
    assert info["weights"]["lstm"] > info["weights"]["c3d"] and info["val_accuracy"] == 1.0
    test = fused[fused["part"] == "test"]
    assert sorted(test["clip_id"]) == test_ids and (test["method"] == "fusion").all()
    # fixed mode: the paper's weights, whatever the data
    _, fixed = fusion.fuse_predictions(predictions, CLASSES, {**settings, "mode": "fixed"}, fold=0)
    assert fixed["weights"] == settings["weights"] and "searched_on_units" not in fixed


def test_search_without_validation_units_names_the_key():
    predictions = scored_rows("aggregation", "test", ["t1"], "5", ["anger"], [0.9])
    settings = {"mode": "search", "weights": {"aggregation": 1.0}, "step": 0.5}
    with pytest.raises(config.ConfigError, match=r"studies\.fusion\.val_fraction"):
        fusion.fuse_predictions(predictions, CLASSES, settings, fold=0)


def test_each_job_depends_only_on_its_part_of_the_config():
    cfg = config.load()
    study = config.study_config(cfg, "demo", "fusion")
    changed = config.deep_update(study, {"vgg_face": {"sizes": {"fc_width": 7}}, "svm": {"C": [1.0]}})
    differs = {job: fusion.job_parameters(study, job) != fusion.job_parameters(changed, job)
               for job in (*fusion.NETWORKS, "lstm", "svm", "scores")}
    assert differs == {"vgg_face": True, "resnet10": False, "c3d": False, "lstm": False, "svm": True, "scores": False}
    with pytest.raises(ValueError, match="unknown fusion job"):
        fusion.job_parameters(study, "table")


def test_features_of_an_earlier_run_of_a_network_are_not_read(tmp_path):
    """A clip left in a network's store by an earlier run (another run id) is not that network's feature."""
    import json

    with ShardStore(tmp_path / "features.zarr") as store:
        for clip_id, run in (("a", "earlier"), ("b", "now")):
            store.write_clip(clip_id, {"features": ArraySpec(np.ones((2, 3), np.float32), ("frame", "feature"))},
                             {"run_sha256": run})
    summary = tmp_path / "features.json"
    summary.write_text(json.dumps({"run_sha256": "now", "features": {"store": str(tmp_path / "features.zarr")}}))
    assert fusion.read_features(summary, ["b"])["b"].shape == (2, 3)
    with pytest.raises(ValueError, match="no features of clips a: rerun its job"):
        fusion.read_features(summary, ["a", "b"])
