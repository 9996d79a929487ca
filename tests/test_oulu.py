"""The Oulu-CASIA adapter, on a tiny tree in the real layout (frame folders per modality, illumination,
subject and emotion) with its quirks."""

from __future__ import annotations

from pathlib import Path

import pytest

from fer_pipeline import config as fer_config
from fer_pipeline import datasets, protocols, video
from fer_pipeline.datasets import oulu
from fixtures_sequences import OULU_SUBJECTS, accounted, skipped_reasons, make_oulu_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_oulu_tree(tmp_path_factory.mktemp("oulu") / "Oulu-CASIA")


@pytest.fixture(scope="module")
def scanned(tree):
    return oulu.scan(tree.root, {})


def test_lists_exactly_the_vl_strong_sequences(tree, scanned):
    records, _ = scanned
    assert records == tree.records()
    assert len(records) == 10 * 6 - 1  # P004/Fear has no image
    assert all("/OriginalImg/VL/Strong/" in r["path"] for r in records)


def test_every_file_is_a_frame_or_skipped_with_its_reason(tree, scanned):
    records, skipped = scanned
    how = accounted(tree, records, skipped)
    assert sorted(how) == tree.files()
    reasons = skipped_reasons(tree, skipped)
    assert set(reasons) == set(tree.skipped)
    for relative, fragment in tree.skipped.items():
        assert fragment in reasons[relative], (relative, reasons[relative])
    frames = {}
    for relative, kind in how.items():
        if kind == "frame":
            frames[str(Path(relative).parent)] = frames.get(str(Path(relative).parent), 0) + 1
    assert frames == tree.frames


def test_frames_are_enumerated_whatever_their_names(tree, scanned):
    records, _ = scanned
    renamed = next(r for r in records if r["clip_id"] == "P002_surprise")
    assert sorted(p.name for p in Path(renamed["path"]).iterdir()) == ["028.jpeg", "029.jpeg", "030.jpeg"]
    assert renamed["n_frames"] == 3
    assert next(r for r in records if r["clip_id"] == "P001_anger")["n_frames"] == 3  # beside a .DS_Store


def test_unused_modalities_and_illuminations_are_one_row_each(tree, scanned):
    _, skipped = scanned
    reasons = skipped_reasons(tree, skipped)
    unused = {path: reason for path, reason in reasons.items() if "not read" in reason}
    assert unused == {
        "OriginalImg/NI": "modality NI: not read (the dataset's modality option, datasets.<name>.modality, is VL)",
        "OriginalImg/VL/Dark": "illumination Dark: not read (the dataset's illumination option, "
                               "datasets.<name>.illumination, is Strong)",
        "OriginalImg/VL/Weak": "illumination Weak: not read (the dataset's illumination option, "
                               "datasets.<name>.illumination, is Strong)"}


def test_the_options_choose_modality_and_illumination(tree):
    records, skipped = oulu.scan(tree.root, {"modality": "NI", "illumination": "Weak"})
    assert [(r["clip_id"], r["n_frames"], r["raw_label"]) for r in records] == [("P001_anger", 5, "Anger")]
    assert records[0]["path"] == str(tree.root.resolve() / "OriginalImg" / "NI" / "Weak" / "P001" / "Anger")
    reasons = skipped_reasons(tree, skipped)
    assert reasons["OriginalImg/VL"].startswith("modality VL: not read")
    assert reasons["OriginalImg/NI/Strong"].startswith("illumination Strong: not read")


def test_the_archive_folder_above_originalimg_is_a_root_too(tmp_path, scanned):
    nested = make_oulu_tree(tmp_path / "Oulu-CASIA", nested=True)
    records, skipped = oulu.scan(nested.root, {})
    assert records == nested.records()
    assert [r["clip_id"] for r in records] == [r["clip_id"] for r in scanned[0]]
    reasons = skipped_reasons(nested, skipped)
    assert set(reasons) == set(nested.skipped)
    assert reasons["B_OriginalImg/license.txt"] == "not part of the Oulu-CASIA layout (B_OriginalImg/OriginalImg is read)"


def test_manifest_from_the_config_block(tree):
    """The config.yaml block (10-fold, subject-independent, VL/Strong by default) on the tree: the six
    classes, the subjects in order, one fold per subject here, each subject in one fold, every clip hashed."""
    config = fer_config.load(overrides={"datasets": {"oulu": {"root": str(tree.root)}}})
    manifest, skipped = datasets.build_manifest(config, "oulu")
    assert datasets.present_classes(config, "oulu", manifest) == list(oulu.CLASSES)
    assert list(dict.fromkeys(manifest["subject"])) == OULU_SUBJECTS
    assert manifest.groupby("subject")["fold"].nunique().max() == 1
    assert [test for _, _, test in protocols.folds(manifest)] == [[s] for s in OULU_SUBJECTS]
    assert (manifest["fps"] == oulu.FPS).all() and manifest["shard"].iloc[0] == "subjectP001"
    assert all(len(h) == 64 for h in manifest["sha256"])
    assert list(manifest["sha256"]) == [video.sha256(p) for p in manifest["path"]]
    assert len(skipped) == len(tree.skipped)
