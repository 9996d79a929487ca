"""The affectnet adapter on a real-layout fixture: codes 0-7 to the canonical classes, training/validation as the
split, the box and 68 landmarks kept; every quirk a recorded reason naming the list file and row."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fer_pipeline import video
from fer_pipeline.datasets import affectnet, read_manifest, write_manifest

from fixtures_stills import make_affectnet_tree, stills_config


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_affectnet_tree(tmp_path_factory.mktemp("affectnet") / "AffectNet")


def test_every_labelled_still_is_a_clip_with_its_code_split_and_box(tree):
    records, _ = affectnet.scan(tree.root)
    by_id = {r["clip_id"]: r for r in records}
    assert set(by_id) == set(tree.clips)
    assert {r["label"] for r in records} == set(affectnet.CLASSES)  # neutral and contempt included
    for clip_id, expected in tree.clips.items():
        record = by_id[clip_id]
        assert (record["label"], record["split"], record["row"]) == (expected["label"], expected["split"], expected["row"])
        assert Path(record["path"]) == expected["path"].resolve()
        assert affectnet.parse_box(record["box"]) == expected["box"]
        assert record["subject"] == "" and record["n_frames"] == 1


def test_each_quirk_is_skipped_with_a_reason_naming_the_file_and_row(tree):
    _, skipped = affectnet.scan(tree.root)
    reasons = [f"{row['path']} | {row['reason']}" for row in skipped]
    for where, fragment in tree.skipped.items():
        hits = [r for r in reasons if where in r and fragment in r]
        assert hits, f"no skipped row with {where!r} and {fragment!r}:\n" + "\n".join(reasons)
    assert any("Automatically_Annotated_file_lists" in r and "not read" in r for r in reasons)
    assert any(r.endswith("| system file") for r in reasons)
    # Nothing under the root is unaccounted for: every file is a clip's, a skipped row's, or in a skipped folder.
    records, _ = affectnet.scan(tree.root)
    used = {Path(r["path"]) for r in records} | {Path(s["path"]) for s in skipped}
    lists = tree.root.resolve() / affectnet.LISTS
    for file in tree.root.resolve().rglob("*"):
        if file.is_file() and file.parent != lists and "Automatically" not in str(file):
            assert file in used, file


def test_manifest_keeps_box_row_fingerprints_and_the_68_landmarks(tree, tmp_path):
    config = stills_config(tmp_path / "results", "an", "affectnet", tree.root, presets=["affect224"])
    out = tmp_path / "results" / "an" / "manifest.csv"
    write_manifest(config, "an", out, out.with_name("manifest_skipped.csv"))
    manifest = read_manifest(out)
    assert {"row", "box", "annotation_sha256"} <= set(manifest.columns)
    assert set(manifest["split"]) == {"train", "val"}
    assert list(manifest["shard"].unique()) == ["part000", "part001"]  # no subjects: parts of shard_size 4
    for row in manifest.itertuples():
        assert row.sha256 == video.sha256(row.path)
    landmarks = pd.read_csv(out.with_name("manifest_landmarks.csv"), dtype=str)
    assert list(landmarks["clip_id"]) == list(manifest["clip_id"])
    for clip_id, text in zip(landmarks["clip_id"], landmarks["landmarks"]):
        values = affectnet.parse_landmarks(text)
        assert values is not None and len(values) == 136
        row = manifest.set_index("clip_id").loc[clip_id]
        # The landmarks the list gives, and the fingerprint of box and landmarks that the track depends on.
        assert affectnet.annotation_sha256(affectnet.parse_box(row["box"]), values) == row["annotation_sha256"]
    skipped = pd.read_csv(out.with_name("manifest_skipped.csv"))
    assert skipped["reason"].str.contains("training.csv row 6: expression 10").any()


def test_a_changed_box_changes_only_that_stills_fingerprint(tree, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tree.root, root)
    before = {r["clip_id"]: r for r in affectnet.scan(root)[0]}
    path = root / affectnet.LISTS / "training.csv"
    rows = list(csv.reader(path.open()))
    rows[1][1] = str(float(rows[1][1]) + 2)  # row 1's face_x
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    after = {r["clip_id"]: r for r in affectnet.scan(root)[0]}
    changed = [c for c in before if before[c]["annotation_sha256"] != after[c]["annotation_sha256"]]
    assert len(changed) == 1 and after[changed[0]]["row"] == 1


@pytest.mark.slow
def test_workflow_manifest_and_features_and_a_changed_box_recomputes_one_image(tree, tmp_path):
    """`snakemake --cores 2` from the fixture to the inspected stills store (the dataset's boxes, ONet's score
    of each); then one box changes in training.csv: the manifest reruns, then only that image's shard, and in
    it only that image is cropped again."""
    import json
    import shutil

    from fer_pipeline import paths

    from fixtures_stills import run_snakemake

    root = tmp_path / "AffectNet"
    shutil.copytree(tree.root, root)
    results = tmp_path / "results"
    config = stills_config(results, "an", "affectnet", root, presets=["affect224"])
    config["presets"]["affect224"]["size"] = 32
    target = str(paths.features_inspection(results, "an", "affect224"))
    result = run_snakemake(config, tmp_path, target, str(paths.contact_sheet(results, "an", "affect224")))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    text = paths.features_inspection(results, "an", "affect224").read_text()
    assert text.count("kind=stills") == 2 and text.count("images=4") == 2  # two shards of 4
    detections = json.loads(paths.detections_summary(results, "an", "part000").read_text())
    assert detections["counts"]["written"] == 4

    path = root / affectnet.LISTS / "training.csv"
    rows = list(csv.reader(path.open()))
    rows[2][1] = str(int(rows[2][1]) + 3)  # row 2's face_x
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    result = run_snakemake(config, tmp_path, target)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    manifest = read_manifest(paths.manifest_csv(results, "an"))
    shard = manifest.loc[(manifest["split"] == "train") & (manifest["row"] == 2), "shard"].iloc[0]
    features = json.loads(paths.features_summary(results, "an", "affect224", shard).read_text())
    assert features["counts"] == {"written": 1, "cached": 3, "skipped": 0}
    other = "part001" if shard == "part000" else "part000"
    assert f"shard={other}" not in out  # the other shard's jobs did not run
