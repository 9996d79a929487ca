"""The CK+ adapter, on a tiny tree in the real layout (frame folders, Emotion label files) with its quirks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fer_pipeline import config as fer_config
from fer_pipeline import datasets, protocols, video
from fer_pipeline.datasets import ckplus
from fixtures_sequences import CKPLUS_LISTED, accounted, skipped_reasons, make_ckplus_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_ckplus_tree(tmp_path_factory.mktemp("ckplus") / "CK+")


@pytest.fixture(scope="module")
def scanned(tree):
    return ckplus.scan(tree.root, {})


def test_lists_exactly_the_labelled_sequences(tree, scanned):
    records, _ = scanned
    assert records == tree.records()
    assert [r["clip_id"] for r in records] == [f"{subject}_{sequence}" for subject, sequence, _, _ in CKPLUS_LISTED]


def test_labels_are_the_float_codes_and_contempt_is_kept(scanned):
    records, _ = scanned
    by_id = {r["clip_id"]: r for r in records}
    assert (by_id["S005_001"]["raw_label"], by_id["S005_001"]["label"]) == ("1", "anger")
    assert (by_id["S010_001"]["raw_label"], by_id["S010_001"]["label"]) == ("2", "contempt")
    assert {r["label"] for r in records} == set(ckplus.CLASSES)
    assert "contempt" in ckplus.CLASSES and "neutral" not in ckplus.CLASSES


def test_every_file_is_a_frame_a_read_label_or_skipped_with_its_reason(tree, scanned):
    records, skipped = scanned
    how = accounted(tree, records, skipped)
    assert sorted(how) == tree.files()
    reasons = skipped_reasons(tree, skipped)
    assert set(reasons) == set(tree.skipped)
    for relative, fragment in tree.skipped.items():
        assert fragment in reasons[relative], (relative, reasons[relative])
    assert {f for f, kind in how.items() if kind == "read"} == tree.read
    frames = {}
    for relative, kind in how.items():
        if kind == "frame":
            frames[str(Path(relative).parent)] = frames.get(str(Path(relative).parent), 0) + 1
    assert frames == tree.frames


def test_system_files_among_frames_are_skipped_not_counted(tree, scanned):
    records, skipped = scanned
    reasons = skipped_reasons(tree, skipped)
    assert reasons["cohn-kanade-images/S005/001/.DS_Store"] == "system file"
    assert reasons["cohn-kanade-images/S005/.DS_Store"] == "system file"
    assert next(r for r in records if r["clip_id"] == "S005_001")["n_frames"] == 3


def test_unlabelled_sequences_are_skipped_naming_the_label_folder(tree, scanned):
    _, skipped = scanned
    reasons = skipped_reasons(tree, skipped)
    assert reasons["cohn-kanade-images/S005/002"] == "unlabelled: Emotion/S005/002 holds no *_emotion.txt file"
    assert reasons["cohn-kanade-images/S501/002"] == "unlabelled: no Emotion/S501/002 folder"


def test_unusable_label_files_are_skipped_with_their_sequences(tree, scanned):
    _, skipped = scanned
    reasons = skipped_reasons(tree, skipped)
    broken = "Emotion/S999/002/S999_002_00000003_emotion.txt"
    assert reasons[broken] == "label file does not parse as a number ('n/a')"
    assert reasons["cohn-kanade-images/S999/002"].startswith(f"unlabelled: its label file {broken} does not parse")
    assert "holds code 0" in reasons["Emotion/S999/003/S999_003_00000003_emotion.txt"]
    assert "holds 2 label files" in reasons["cohn-kanade-images/S999/004"]


def test_a_sequence_folder_without_image_is_skipped_and_its_label_with_it(tree, scanned):
    _, skipped = scanned
    reasons = skipped_reasons(tree, skipped)
    assert reasons["cohn-kanade-images/S501/003"].startswith("no image file")
    assert reasons["Emotion/S501/003/S501_003_00000003_emotion.txt"].startswith("labels no listed sequence")


def test_the_labels_zip_extracted_as_emotion_labels_reads_the_same(tmp_path, tree, scanned):
    other = make_ckplus_tree(tmp_path / "CK+", labels_folder="Emotion_labels/Emotion")
    records, skipped = ckplus.scan(other.root, {})
    assert records == other.records()
    assert [r["clip_id"] for r in records] == [r["clip_id"] for r in scanned[0]]
    assert set(skipped_reasons(other, skipped)) == set(other.skipped)


def test_a_second_copy_of_the_labels_is_skipped_as_one_folder(tmp_path):
    tree = make_ckplus_tree(tmp_path / "CK+")
    shutil.copytree(tree.root / "Emotion", tree.root / "Emotion_labels" / "Emotion")
    records, skipped = ckplus.scan(tree.root, {})
    assert records == tree.records()
    assert skipped_reasons(tree, skipped)["Emotion_labels/Emotion"] == "a second copy of the labels: Emotion/ is read"


def test_manifest_from_the_config_block(tree):
    """The config.yaml block (10-fold, subject-independent) on the tree: classes, subjects in id order (S005
    before S501 before S999) dealt into the folds, each subject in one fold, every clip hashed."""
    config = fer_config.load(overrides={"datasets": {"ckplus": {"root": str(tree.root)}}})
    manifest, skipped = datasets.build_manifest(config, "ckplus")
    assert datasets.present_classes(config, "ckplus", manifest) == list(ckplus.CLASSES)
    subjects = [subject for subject, _, _, _ in CKPLUS_LISTED]
    assert list(dict.fromkeys(manifest["subject"])) == subjects
    assert manifest.groupby("subject")["fold"].nunique().max() == 1
    # Sorted subjects dealt round-robin: fold k takes subjects k, k+10, ... (S999, the 11th, joins S005).
    assert dict(zip(manifest["subject"], manifest["fold"])) == {s: i % 10 for i, s in enumerate(subjects)}
    assert [test for _, _, test in protocols.folds(manifest)] == [["S005", "S999"]] + [[s] for s in subjects[1:10]]
    assert (manifest["fps"] == ckplus.FPS).all() and manifest["shard"].iloc[0] == "subjectS005"
    assert all(len(h) == 64 for h in manifest["sha256"])
    assert list(manifest["sha256"]) == [video.sha256(p) for p in manifest["path"]]
    assert len(skipped) == len(tree.skipped)
