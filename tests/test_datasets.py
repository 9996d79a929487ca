"""The eNTERFACE'05 adapter and the manifest, on a tiny tree in the real, irregular layout."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fer_pipeline import __version__, datasets, video
from fer_pipeline.config import ConfigError
from fer_pipeline.datasets import enterface
from fixtures import enterface_config, make_enterface_tree


@pytest.fixture(scope="module")
def built(enterface_tree, tmp_path_factory):
    """The fixture tree's manifest, skipped list and sidecar, written once for this module."""
    out = tmp_path_factory.mktemp("manifest")
    manifest = datasets.write_manifest(enterface_config(enterface_tree.root), "enterface", out / "manifest.csv",
                                       out / "skipped.csv")
    return manifest, out


def _relative(paths, root):
    return {str(Path(p).relative_to(root)) for p in paths}


def test_manifest_holds_exactly_the_expected_clips(enterface_tree, built):
    manifest, _ = built
    assert list(manifest.columns) == datasets.MANIFEST_COLUMNS
    assert _relative(manifest["path"], enterface_tree.root) == set(enterface_tree.clips)
    for row in manifest.itertuples():
        expected = enterface_tree.clips[str(Path(row.path).relative_to(enterface_tree.root))]
        assert (row.clip_id, row.subject, row.label) == (expected.clip_id, expected.subject, expected.label)
        assert Path(row.path).is_absolute()
        assert (row.n_frames, row.width, row.height, row.fps) == (8, 64, 48, 25.0)
        assert row.sha256 == video.sha256(row.path)
    assert (manifest["dataset"] == "enterface").all()


def test_a_changed_video_changes_the_manifest(tmp_path):
    """The manifest is what the detection and feature jobs depend on: a video whose bytes change (a demo
    made by a newer generator, a repaired file) must change it, or snakemake would keep stale tracks."""
    tree = make_enterface_tree(tmp_path / "tree")
    config = enterface_config(tree.root)
    before, _ = datasets.build_manifest(config, "enterface")
    changed = Path(before.loc[0, "path"])
    changed.write_bytes(changed.read_bytes() + b"\0")  # trailing bytes: the header and frames still read
    after, _ = datasets.build_manifest(config, "enterface")
    differs = before["sha256"] != after["sha256"]
    assert differs.tolist() == [True] + [False] * (len(before) - 1)


def test_irregular_files_land_where_they_belong(enterface_tree, built):
    manifest, _ = built
    by_id = manifest.set_index("clip_id")
    # Subject 11's files are named s12_*: the folder decides.
    assert by_id.loc["s11_an_1", "subject"] == "11"
    assert Path(by_id.loc["s11_an_1", "path"]).name == "s12_an_1.avi"
    assert not manifest["clip_id"].str.startswith("s12_").any()
    assert Path(by_id.loc["s16_su_3", "path"]).name == "s16_su_3avi.avi"
    assert Path(by_id.loc["s3_di_2", "path"]).name == "s_3_di_2.avi"
    assert by_id.loc["s3_di_2", "subject"] == "3"  # from the folder "Subject 3"
    assert (by_id.loc["s2_ha_1", "raw_label"], by_id.loc["s2_ha_1", "label"]) == ("Happiness", "happiness")
    assert {"s1_an_1_v1", "s1_an_1_v2"} <= set(manifest["clip_id"]) and "s1_an_1" not in set(manifest["clip_id"])
    assert "6" not in set(manifest["subject"])
    assert by_id.loc["s2_sa_1", "n_frames"] == 8  # truncated, but its header is intact


def test_every_file_is_listed_or_skipped_with_a_reason(enterface_tree, built):
    manifest, out = built
    skipped = datasets.read_manifest(out / "skipped.csv")
    assert list(skipped.columns) == datasets.SKIPPED_COLUMNS
    listed = _relative(manifest["path"], enterface_tree.root)
    dropped = _relative(skipped["path"], enterface_tree.root)
    assert not listed & dropped
    assert sorted(listed | dropped) == enterface_tree.files()
    assert len(manifest) + len(skipped) == len(enterface_tree.files())
    reasons = {str(Path(p).relative_to(enterface_tree.root)): r for p, r in zip(skipped["path"], skipped["reason"])}
    assert set(reasons) == set(enterface_tree.skipped)
    for relative, fragment in enterface_tree.skipped.items():
        assert fragment in reasons[relative], (relative, reasons[relative])
    session = reasons["subject 6/anger/s6_an.avi"]
    assert session.startswith("unsegmented session of 0.3 s") and session.endswith("(no sentence level)")


def test_clip_ids_are_unique_and_safe_as_folder_names(built):
    manifest, _ = built
    assert manifest["clip_id"].is_unique
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", clip_id) for clip_id in manifest["clip_id"])


def test_manifest_is_sorted_by_integer_subject_then_label(built):
    manifest, _ = built
    subjects = list(dict.fromkeys(manifest["subject"]))
    assert subjects == ["1", "2", "3", "11", "16"]  # as strings, "11" and "16" would come before "2"
    keys = list(zip(manifest["subject"].astype(int), manifest["label"], manifest["clip_id"]))
    assert keys == sorted(keys)


def test_folds_and_shards_follow_subjects(built):
    manifest, _ = built
    assert manifest.groupby("subject")["fold"].nunique().eq(1).all()
    assert sorted(manifest["fold"].unique()) == [0, 1, 2, 3, 4]
    assert set(manifest["shard"]) == {"subject01", "subject02", "subject03", "subject11", "subject16"}
    assert (manifest["shard"] == "subject" + manifest["subject"].str.zfill(2)).all()


def test_sidecar_records_the_label_mapping_and_provenance(built):
    manifest, out = built
    sidecar = json.loads((out / "manifest.json").read_text())
    assert sidecar["label_mapping"] == {"anger": "anger", "disgust": "disgust", "fear": "fear",
                                        "Happiness": "happiness", "happiness": "happiness", "sadness": "sadness",
                                        "surprise": "surprise"}
    assert sidecar["classes"] == ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    assert sidecar["class_counts"] == manifest["label"].value_counts().to_dict()
    assert sum(sidecar["class_counts"].values()) == sidecar["n_clips"] == len(manifest)
    assert sidecar["n_subjects"] == 5 and sidecar["n_skipped"] == 10
    assert sidecar["protocol"] == {"name": "losgo", "groups": 5}
    assert sidecar["adapter"] == "enterface" and sidecar["dataset"] == "enterface"
    assert sidecar["version"] == __version__
    assert not list(out.glob("*.tmp")), "temporary files were left behind"


def test_written_manifest_reads_back_identical(built):
    manifest, out = built
    assert datasets.read_manifest(out / "manifest.csv").equals(manifest)


def test_two_builds_are_identical(enterface_tree, built, tmp_path):
    _, out = built
    datasets.write_manifest(enterface_config(enterface_tree.root), "enterface", tmp_path / "manifest.csv",
                            tmp_path / "skipped.csv")
    for name in ("manifest.csv", "skipped.csv", "manifest.json"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_missing_root_names_the_config_key(tmp_path):
    config = enterface_config(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"datasets\.enterface\.root"):
        datasets.build_manifest(config, "enterface")
    config["datasets"]["enterface"]["root"] = None
    with pytest.raises(ConfigError, match=r"datasets\.enterface\.root"):
        datasets.build_manifest(config, "enterface")


def test_root_without_clips_is_an_error_not_an_empty_manifest(tmp_path):
    (tmp_path / "README.txt").write_text("the archive is one level down\n")
    with pytest.raises(ConfigError, match=r"datasets\.enterface\.root.*no clip"):
        datasets.build_manifest(enterface_config(tmp_path), "enterface")


def test_too_few_subjects_for_the_groups_names_the_protocol_key(tmp_path):
    tree = make_enterface_tree(tmp_path / "root", subjects=(1, 2), irregular=False)
    with pytest.raises(ConfigError, match=r"datasets\.enterface\.protocol.*5 groups"):
        datasets.build_manifest(enterface_config(tree.root), "enterface")


def test_unknown_adapter_is_a_config_error(tmp_path):
    config = enterface_config(tmp_path)
    config["datasets"]["enterface"]["adapter"] = "nope"
    with pytest.raises(ConfigError, match=r"datasets\.enterface\.adapter"):
        datasets.build_manifest(config, "enterface")


def test_regular_tree_lists_every_file(tmp_path):
    tree = make_enterface_tree(tmp_path / "root", subjects=(4, 31), sentences=1, irregular=False)
    records, skipped = enterface.scan(tree.root)
    assert skipped == []
    assert sorted(r["clip_id"] for r in records) == sorted(c.clip_id for c in tree.clips.values())
    assert len(records) == 12


def test_scan_tolerates_renamed_folders_and_system_folders(tmp_path):
    tree = make_enterface_tree(tmp_path / "root", subjects=(5,), sentences=1, irregular=False)
    (tree.root / "subject 5").rename(tree.root / "subject-5")  # spaces replaced, as some copies have them
    (tree.root / "__MACOSX" / "subject-5").mkdir(parents=True)
    (tree.root / "__MACOSX" / "subject-5" / "._s5_an_1.avi").write_bytes(b"\x00\x05\x16\x07")
    (tree.root / "subject-5" / "anger" / "sentence 1" / "extra").mkdir()
    (tree.root / "subject-5" / "anger" / "sentence 1" / "extra" / "s5_an_1.avi").write_bytes(b"")
    records, skipped = enterface.scan(tree.root)
    assert len(records) == 6 and {r["subject"] for r in records} == {"5"}
    reasons = {Path(s["path"]).name: s["reason"] for s in skipped}
    assert reasons["._s5_an_1.avi"] == "system file"
    assert "nested below the sentence folder" in reasons["s5_an_1.avi"]
