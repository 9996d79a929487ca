"""The BP4D adapter and its per-frame AU table, on a tiny copy in the real layout with its quirks (DATASETS.md §6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fer_pipeline import datasets, protocols, video
from fer_pipeline.config import ConfigError
from fer_pipeline.datasets import bp4d
from fixtures_mmi_bp4d import (BP4D_FPS, BP4D_SIZE, BP4D_SPLIT, F001_T1_ROWS, F001_T2_ROWS, M002_T4_ROWS, bp4d_config,
                               make_bp4d_tree)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_bp4d_tree(tmp_path_factory.mktemp("bp4d") / "BP4D")


@pytest.fixture(scope="module")
def scanned(tree):
    records, skipped = bp4d.scan(tree.root, {"split": BP4D_SPLIT})
    return records, skipped


def _relative(path, root):
    return str(Path(path).relative_to(root))


def _reasons(skipped, root):
    """Skipped reasons by relative path (an AU file may have several rows: one per unmatched frame)."""
    reasons: dict[str, list[str]] = {}
    for entry in skipped:
        reasons.setdefault(_relative(entry["path"], root), []).append(entry["reason"])
    return reasons


def _expected_codes(clip_id, frames, rows):
    """The AU table a clip should get: its frames, each row's codes where the frame has an image, 9 as NaN."""
    coded = {row[0]: row[1:] for row in rows}
    values = [[np.nan if coded.get(frame, (9,) * 4)[k] == 9 else float(coded[frame][k]) for k in range(4)]
              for frame in frames]
    table = pd.DataFrame(values, columns=["AU1", "AU2", "AU3", "AU4"])
    table.insert(0, "frame", np.asarray(frames, dtype=np.int64))
    table.insert(0, "clip_id", clip_id)
    return table


def test_lists_each_task_folder_as_a_clip_labelled_by_its_task(tree, scanned):
    records, _ = scanned
    by_path = {_relative(r["path"], tree.root): r for r in records}
    assert set(by_path) == set(tree.clips)
    for relative, record in by_path.items():
        expected = tree.clips[relative]
        assert (record["clip_id"], record["subject"], record["label"], record["split"]) == (
            expected.clip_id, expected.subject, expected.label, expected.split)
        assert record["raw_label"] == relative.rsplit("/", 1)[1]
        assert (record["fps"], record["width"], record["height"]) == (BP4D_FPS, *BP4D_SIZE)
        assert record["n_frames"] == len(video.frame_files(record["path"]))
    assert by_path["Sequences(2D+3D)/M002/T4"]["label"] == "embarrassment"
    assert by_path["Sequences(2D+3D)/M002/T6"]["label"] == "pain"


def test_every_file_is_a_frame_an_au_file_or_skipped(tree, scanned):
    records, skipped = scanned
    reasons = _reasons(skipped, tree.root)
    assert set(reasons) == set(tree.skipped)
    for relative, fragment in tree.skipped.items():
        assert any(fragment in reason for reason in reasons[relative]), (relative, reasons[relative])
    clips = [_relative(r["path"], tree.root) for r in records]
    for relative in tree.files():
        frame = any(relative.startswith(f"{clip}/") for clip in clips) and relative not in reasons
        covered = any(relative == path or relative.startswith(f"{path}/") for path in reasons)
        assert frame + covered + (relative in tree.label_files) >= 1, relative
        assert not (frame and covered), relative


def test_au_table_has_every_frame_nan_for_9_and_uncoded_and_numeric_frame_order(tree, scanned):
    records, _ = scanned
    table = bp4d.frame_labels(tree.root, pd.DataFrame(records))
    assert list(table.columns) == ["clip_id", "frame", "AU1", "AU2", "AU3", "AU4"]
    f001_t1 = table[table["clip_id"] == "F001_T1"].reset_index(drop=True)
    assert f001_t1["frame"].tolist() == list(range(996, 1004))  # 999.jpg before 1000.jpg
    pd.testing.assert_frame_equal(f001_t1, _expected_codes("F001_T1", range(996, 1004), F001_T1_ROWS))
    assert f001_t1["AU3"].isna().all()  # coded 9 throughout
    assert f001_t1.loc[f001_t1["frame"].isin([996, 997, 1003]), ["AU1", "AU2", "AU4"]].isna().all().all()
    coded_zeros = sum(value == 0 for row in F001_T1_ROWS if row[0] <= 1003 for value in row[1:])
    assert (f001_t1.fillna(-1)[["AU1", "AU2", "AU3", "AU4"]] == 0).sum().sum() == coded_zeros == 8
    for clip_id, frames, rows in (("F001_T2", range(52, 58), F001_T2_ROWS), ("M002_T4", range(5, 10), M002_T4_ROWS)):
        got = table[table["clip_id"] == clip_id].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, _expected_codes(clip_id, frames, rows))


def test_a_row_whose_frame_has_no_image_is_skipped_with_file_and_row(tree, scanned):
    _, skipped = scanned
    rows = _reasons(skipped, tree.root)["AUCoding/AU_OCC/F001_T1.csv"]
    assert rows == ["row 6: frame 1010 matches no image in Sequences(2D+3D)/F001/T1 (its AU codes are not used)"]


def test_an_au_file_that_does_not_parse_leaves_its_clip_listed_and_uncoded(tree, scanned):
    records, skipped = scanned
    reasons = _reasons(skipped, tree.root)
    assert reasons["AUCoding/AU_OCC/M001_T8.csv"][0].startswith("its header is not 0,1,2,...")
    assert reasons["AUCoding/AU_OCC/F002_T3.csv"] == ["frame 10 is coded twice (rows 1 and 3)"]
    table = bp4d.frame_labels(tree.root, pd.DataFrame(records))
    for clip_id in ("M001_T8", "F002_T3", "M001_T1", "M002_T6"):  # bad files, and no file at all
        rows = table[table["clip_id"] == clip_id]
        assert len(rows) and rows[["AU1", "AU2", "AU3", "AU4"]].isna().all().all()


def test_subjects_in_neither_list_are_one_skipped_row_and_no_split_lists_them(tree):
    records, skipped = bp4d.scan(tree.root, {"split": BP4D_SPLIT})
    f003 = [s for s in skipped if "/F003" in s["path"] and "Sequences" in s["path"]]
    assert [_relative(s["path"], tree.root) for s in f003] == ["Sequences(2D+3D)/F003"]
    assert {r["split"] for r in records if r["subject"] in BP4D_SPLIT["train"]} == {protocols.FIXED_TRAIN}
    assert {r["split"] for r in records if r["subject"] in BP4D_SPLIT["test"]} == {protocols.FIXED_TEST}
    records, skipped = bp4d.scan(tree.root, {})
    assert "F003_T1" in {r["clip_id"] for r in records} and {r["split"] for r in records} == {""}
    assert not any("neither" in s["reason"] for s in skipped)
    with pytest.raises(ConfigError, match="lists F001 both in train and in test"):
        bp4d.scan(tree.root, {"split": {"train": ["F001"], "test": ["F001", "F002"]}})


def test_the_sequences_folder_may_be_named_2d_3d_and_a_second_copy_is_skipped(tmp_path, tree):
    other = make_bp4d_tree(tmp_path / "BP4D", sequences="2D+3D")
    records, _ = bp4d.scan(other.root, {"split": BP4D_SPLIT})
    assert sorted(r["clip_id"] for r in records) == sorted(c.clip_id for c in tree.clips.values())
    (other.root / "Sequences(2D+3D)").symlink_to(tree.root / "Sequences(2D+3D)")
    records, skipped = bp4d.scan(other.root, {"split": BP4D_SPLIT})
    assert all("/Sequences(2D+3D)/" in r["path"] for r in records)
    assert {s["reason"] for s in skipped if s["path"].endswith("/2D+3D")} == {
        "a second copy of the sequences: Sequences(2D+3D)/ is read"}


def test_manifest_splits_subjects_and_writes_the_frame_labels_beside_it(tree, tmp_path):
    config = bp4d_config(tree.root)
    manifest = datasets.write_manifest(config, "bp4d", tmp_path / "manifest.csv", tmp_path / "manifest_skipped.csv")
    assert datasets.present_classes(config, "bp4d", manifest) == [
        "disgust", "embarrassment", "happiness", "pain", "sadness", "surprise"]
    assert sorted(set(manifest["subject"])) == ["F001", "F002", "M001", "M002"]
    assert (manifest["fold"] == protocols.NO_FOLD).all()
    split = protocols.fold_split(manifest, 0, 0.0, 0)
    assert (split["train"], split["test"]) == (["F001", "M001"], ["F002", "M002"])
    assert not set(manifest.loc[manifest["split"] == "train", "subject"]) & set(
        manifest.loc[manifest["split"] == "val", "subject"])
    assert all(digest == video.sha256(path) and len(digest) == 64
               for digest, path in zip(manifest["sha256"], manifest["path"]))
    written = pd.read_csv(tmp_path / "manifest_frame_labels.csv")
    pd.testing.assert_frame_equal(written, bp4d.frame_labels(tree.root, manifest))
    assert len(written) == manifest["n_frames"].sum()
