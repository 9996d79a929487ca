"""The MMI adapter, on a tiny download in the real layout with the database's quirks (DATASETS.md §5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fer_pipeline import config as fer_config
from fer_pipeline import datasets, protocols, video
from fer_pipeline.config import ConfigError
from fer_pipeline.datasets import mmi
from fixtures_mmi_bp4d import MMI_FPS, make_mmi_tree, mmi_config


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """The tree and what the adapter makes of it: records and skipped reasons by relative path."""
    tree = make_mmi_tree(tmp_path_factory.mktemp("mmi") / "mmi-facial-expression-database_download_2019-04-27")
    records, skipped = mmi.scan(tree.root, {"sample_fps": 10})
    by_path = {str(Path(r["path"]).relative_to(tree.root)): r for r in records}
    reasons = {str(Path(s["path"]).relative_to(tree.root)): s["reason"] for s in skipped}
    assert len(reasons) == len(skipped)  # one row per file
    return tree, by_path, reasons


def _reason(reasons, relative, fragment):
    assert relative in reasons, relative
    assert fragment in reasons[relative], (relative, reasons[relative])


def test_lists_exactly_the_frontal_recordings_of_the_six_emotions(scanned):
    tree, by_path, _ = scanned
    assert set(by_path) == set(tree.clips)
    for relative, record in by_path.items():
        expected = tree.clips[relative]
        assert (record["clip_id"], record["subject"], record["label"]) == (expected.clip_id, expected.subject,
                                                                           expected.label)
        assert (record["n_frames"], record["fps"], record["width"], record["height"]) == (6, MMI_FPS, 64, 48)
        assert record.get("split", "") == ""
    assert by_path["Sessions/2/S001-002.avi"]["raw_label"] == "1"


def test_every_file_is_listed_skipped_or_the_metadata_of_a_listed_clip(scanned):
    tree, by_path, reasons = scanned
    assert set(reasons) == set(tree.skipped)
    for relative, fragment in tree.skipped.items():
        _reason(reasons, relative, fragment)
    assert not (set(by_path) | tree.label_files) & set(reasons)
    assert sorted(set(by_path) | set(reasons) | tree.label_files) == tree.files()


def test_dual_rotated_and_unknown_views_are_skipped_by_session_xml(scanned):
    _, by_path, reasons = scanned
    _reason(reasons, "Sessions/20/S002-010.avi", "dual view (session.xml: track view 2)")
    _reason(reasons, "Sessions/21/S003-010.avi", "rotated view (session.xml: track view 1)")
    _reason(reasons, "Sessions/22/S003-011.avi", "unknown view '3' in session.xml")
    # Their metadata goes with them.
    _reason(reasons, "Sessions/20/S002-010.xml", "metadata of S002-010.avi, which is skipped")
    _reason(reasons, "Sessions/20/session.xml", "metadata of a session with no listed recording")


def test_emotion_outside_one_to_six_or_missing_is_skipped(scanned):
    _, _, reasons = scanned
    _reason(reasons, "Sessions/23/S004-010.avi", "Emotion '7' in S004-010.xml is not one of the six basic")
    _reason(reasons, "Sessions/24/S004-011.avi", "S004-011.xml has no Emotion Metatag")
    _reason(reasons, "Sessions/29/S007-011.avi", "no metadata file S007-011.xml beside it")


def test_metadata_that_does_not_parse_is_named_with_the_parser_message(scanned):
    _, _, reasons = scanned
    _reason(reasons, "Sessions/25/S005-010.avi", "its metadata S005-010.xml does not parse as XML (unclosed token")
    _reason(reasons, "Sessions/25/S005-010.xml", "does not parse as XML (unclosed token")
    _reason(reasons, "Sessions/26/S005-011.avi", "its session.xml does not parse as XML (mismatched tag")
    _reason(reasons, "Sessions/26/session.xml", "does not parse as XML (mismatched tag")


def test_the_subject_comes_from_session_xml(scanned):
    _, by_path, reasons = scanned
    assert by_path["Sessions/2/S001-002.avi"]["subject"] == "1"  # session.xml's id, not the name's "001"
    assert sorted({r["subject"] for r in by_path.values()}, key=int) == [str(s) for s in range(1, 11)]
    _reason(reasons, "Sessions/27/S006-010.avi", "no session.xml in the session folder")
    _reason(reasons, "Sessions/28/S006-011.avi", "session.xml names no subject")


def test_sessions_of_stills_and_other_files_are_skipped(scanned):
    _, _, reasons = scanned
    for name in ("S002-100-001.jpg", "S002-100-002.jpg"):
        _reason(reasons, f"Sessions/31/{name}", "a still image, not a video")
    _reason(reasons, "Sessions/31/S002-100.xml", "whose video (S002-100.avi) is not in the session")
    _reason(reasons, "Sessions/2/S001-002-oao_aucs.xml", "frame-level AU coding (OAO FACS): not read")
    _reason(reasons, "Sessions/30/S007-010.avi", "cannot be opened")
    _reason(reasons, "Sessions/30/S007-010.xml", "metadata of S007-010.avi, which is skipped")


def test_a_recording_in_two_sessions_gets_two_ids(scanned):
    _, by_path, _ = scanned
    assert by_path["Sessions/3/S001-003.avi"]["clip_id"] == "S001-003_v1"
    assert by_path["Sessions/40/S001-003.avi"]["clip_id"] == "S001-003_v2"


def test_manifest_has_the_six_classes_and_ten_subject_folds(scanned):
    tree, _, _ = scanned
    manifest, skipped = datasets.build_manifest(mmi_config(tree.root), "mmi")
    assert datasets.present_classes(mmi_config(tree.root), "mmi", manifest) == list(mmi.CLASSES)
    assert len(manifest) == len(tree.clips) and len(skipped) == len(tree.skipped)
    assert sorted(set(manifest["subject"]), key=int) == [str(s) for s in range(1, 11)]
    assert (manifest.groupby("subject")["fold"].nunique() == 1).all()
    assert sorted(manifest["fold"].unique()) == list(range(10))
    for fold in protocols.rounds(manifest):
        split = protocols.fold_split(manifest, fold, 0.0, 0)
        assert split["test"] and not set(split["test"]) & set(split["train"])
    assert all(digest == video.sha256(path) and len(digest) == 64
               for digest, path in zip(manifest["sha256"], manifest["path"]))


def test_sample_fps_is_a_dataset_option_set_to_ten_for_mmi():
    loaded = fer_config.load()
    assert loaded["datasets"]["mmi"]["sample_fps"] == 10
    assert "sample_fps" not in loaded["datasets"]["enterface"]  # optional: null (every frame) by default
    with pytest.raises(ConfigError, match=r"datasets\.mmi\.sample_fps"):
        fer_config.load(overrides={"datasets": {"mmi": {"sample_fps": "ten"}}})
    with pytest.raises(ConfigError, match=r"datasets\.mmi\.sample_fps"):
        fer_config.load(overrides={"datasets": {"mmi": {"sample_fps": 0}}})
