"""The AFEW 7.0 adapter and its fixed split, on a tiny tree in the real layout with the archive's quirks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_pipeline import datasets, protocols
from fer_pipeline.config import ConfigError
from fixtures import afew_config, make_afew_tree


@pytest.fixture(scope="module")
def afew(tmp_path_factory):
    """The tree, and its manifest, skipped list and sidecar written with shards of 5 clips."""
    tree = make_afew_tree(tmp_path_factory.mktemp("afew") / "AFEW_7.0")
    out = tmp_path_factory.mktemp("manifest")
    manifest = datasets.write_manifest(afew_config(tree.root, shard_size=5), "afew", out / "manifest.csv",
                                       out / "skipped.csv")
    return tree, manifest, out


def test_manifest_holds_exactly_the_expected_clips(afew):
    tree, manifest, _ = afew
    assert list(manifest.columns) == datasets.MANIFEST_COLUMNS
    assert {str(Path(p).relative_to(tree.root)) for p in manifest["path"]} == set(tree.clips)
    for row in manifest.itertuples():
        expected = tree.clips[str(Path(row.path).relative_to(tree.root))]
        assert (row.clip_id, row.subject, row.label, row.split) == (expected.clip_id, "", expected.label,
                                                                     expected.split)
        assert (row.n_frames, row.width, row.height, row.fps) == (8, 64, 48, 25.0)
    assert len(manifest) == 7 * 2 + 7 - 1  # Train 2 per class, Val 1 per class, one corrupt Val clip
    assert manifest["clip_id"].is_unique


def test_the_same_id_in_train_and_val_stays_two_clips(afew):
    _, manifest, _ = afew
    by_id = manifest.set_index("clip_id")
    assert by_id.loc["train_000000001", "split"] == "train" and by_id.loc["val_000000001", "split"] == "val"
    assert Path(by_id.loc["train_000000001", "path"]).name == Path(by_id.loc["val_000000001", "path"]).name


def test_labels_map_to_the_seven_canonical_classes(afew):
    _, manifest, out = afew
    sidecar = json.loads((out / "manifest.json").read_text())
    assert sidecar["classes"] == ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
    assert sidecar["label_mapping"] == {"Angry": "anger", "Disgust": "disgust", "Fear": "fear", "Happy": "happiness",
                                        "happy": "happiness", "Neutral": "neutral", "Sad": "sadness",
                                        "Surprise": "surprise"}
    assert sidecar["split_counts"] == {"train": 14, "val": 6}
    assert sidecar["n_subjects"] == 0 and sidecar["protocol"] == {"name": "fixed"}


def test_every_file_is_listed_or_skipped_with_a_reason(afew):
    tree, manifest, out = afew
    skipped = datasets.read_manifest(out / "skipped.csv")
    listed = {str(Path(p).relative_to(tree.root)) for p in manifest["path"]}
    reasons = {str(Path(p).relative_to(tree.root)): r for p, r in zip(skipped["path"], skipped["reason"])}
    assert not listed & set(reasons)
    assert sorted(listed | set(reasons)) == tree.files()
    assert set(reasons) == set(tree.skipped)
    for relative, fragment in tree.skipped.items():
        assert fragment in reasons[relative], (relative, reasons[relative])


def test_no_subjects_means_shards_of_shard_size_and_one_fixed_round(afew):
    _, manifest, _ = afew
    assert (manifest["fold"] == protocols.NO_FOLD).all()
    assert sorted(manifest["shard"].unique()) == ["part000", "part001", "part002", "part003"]
    assert manifest["shard"].value_counts().max() == 5
    assert protocols.rounds(manifest) == [0]
    split = protocols.fold_split(manifest, 0, 0.25, seed=0)
    # Without subject ids the clip is the unit: train and validation come from Train, test is all of Val.
    assert split["test"] == sorted(manifest.loc[manifest["split"] == "val", "clip_id"])
    assert sorted(split["train"] + split["val"]) == sorted(manifest.loc[manifest["split"] == "train", "clip_id"])
    assert len(split["val"]) == 4 and not set(split["train"]) & set(split["val"])
    with pytest.raises(ValueError, match="single round 0"):
        protocols.fold_split(manifest, 1, 0.25, seed=0)


def test_a_fixed_protocol_needs_the_dataset_partition(enterface_tree):
    config = afew_config(enterface_tree.root)
    config["datasets"]["afew"]["adapter"] = "enterface"
    with pytest.raises(ConfigError, match=r"datasets\.afew\.protocol: protocol 'fixed' trains on the 'train'"):
        datasets.build_manifest(config, "afew")


def test_a_root_one_level_too_high_names_the_folder_to_point_at(afew, tmp_path):
    (tmp_path / "archive").symlink_to(afew[0].root)
    with pytest.raises(ConfigError, match=r"datasets\.afew\.root.*Train_AFEW and Val_AFEW"):
        datasets.build_manifest(afew_config(tmp_path), "afew")
