"""The fer2013 adapter on a real-layout table: codes 0-6, Usage as the split (train, val, test), a row's media
is the table plus its row number with a fingerprint of its own; every bad row a recorded reason naming the
file and row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fer_pipeline import video
from fer_pipeline.datasets import fer2013, read_manifest, write_manifest

from fixtures_stills import make_fer2013_tree, stills_config


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_fer2013_tree(tmp_path_factory.mktemp("fer") / "fer2013")


def test_rows_are_clips_with_label_usage_and_their_own_fingerprint(tree):
    records, _ = fer2013.scan(tree.root)
    by_id = {r["clip_id"]: r for r in records}
    assert set(by_id) == set(tree.clips)
    assert {r["split"] for r in records} == {"train", "val", "test"}
    assert {r["label"] for r in records} == set(fer2013.CLASSES)
    for clip_id, expected in tree.clips.items():
        record = by_id[clip_id]
        assert (record["label"], record["split"], record["row"]) == (expected["label"], expected["split"], expected["row"])
        assert record["path"] == str((tree.root / "fer2013.csv").resolve())
        assert record["sha256"] == video.pixel_sha256(expected["pixels"])
        assert record["box"] == "0 0 48 48"
    assert len({r["sha256"] for r in records}) == len(records)


def test_a_row_reads_as_a_still_of_one_frame(tree):
    path, clip = tree.root / "fer2013.csv", tree.clips["fer00002"]
    assert video.media_kind(path) == "pixels" and video.is_still(path)
    decoded = video.read(path, row=clip["row"])
    grey = np.array(clip["pixels"].split(), dtype=np.uint8).reshape(48, 48)
    assert decoded.frames.shape == (1, 48, 48, 3) and (decoded.frames[0, ..., 1] == grey).all()
    assert video.probe(path, row=clip["row"]).width == 48
    assert video.sha256(path, row=clip["row"]) == video.pixel_sha256(clip["pixels"])
    with pytest.raises(video.VideoError, match="row 8: the pixel string has 2303 values"):
        video.read(path, row=8)
    with pytest.raises(video.VideoError, match="give the row"):
        video.read(path)


def test_bad_rows_are_skipped_with_a_reason_naming_file_and_row(tree):
    _, skipped = fer2013.scan(tree.root)
    table = str((tree.root / "fer2013.csv").resolve())
    reasons = [row["reason"] for row in skipped if row["path"] == table]
    for where, fragment in tree.skipped.items():
        assert any(r.startswith(f"{where}: ") and fragment in r for r in reasons), (where, fragment, reasons)
    others = {row["path"].rsplit("/", 1)[1]: row["reason"] for row in skipped if row["path"] != table}
    assert "Kaggle" in others["train.csv"] and "not read" in others["README"]


def test_manifest_of_three_partitions_under_the_fixed_protocol(tree, tmp_path):
    config = stills_config(tmp_path / "results", "fer", "fer2013", tree.root)
    out = tmp_path / "results" / "fer" / "manifest.csv"
    write_manifest(config, "fer", out, out.with_name("manifest_skipped.csv"))
    manifest = read_manifest(out)
    assert manifest["split"].value_counts().to_dict() == {"train": 3, "val": 2, "test": 2}
    assert (manifest["fold"] == -1).all() and manifest["shard"].nunique() == 2
    skipped = pd.read_csv(out.with_name("manifest_skipped.csv"))
    assert skipped["reason"].str.startswith("row ").sum() == len(tree.skipped)


@pytest.mark.slow
def test_workflow_manifest_and_features_of_the_table(tree, tmp_path):
    """`snakemake --cores 2` from fer2013.csv to the inspected stills store of the fer48 preset."""
    from fer_pipeline import paths, stills

    from fixtures_stills import run_snakemake

    results = tmp_path / "results"
    config = stills_config(results, "fer", "fer2013", tree.root)
    target = paths.features_inspection(results, "fer", "fer48")
    result = run_snakemake(config, tmp_path, str(target), str(paths.contact_sheet(results, "fer", "fer48")))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert target.read_text().count("kind=stills") == 2
    manifest = read_manifest(paths.manifest_csv(results, "fer"))
    index = stills.index_images(config, "fer", "fer48", manifest)
    assert sorted(index["clip_id"]) == sorted(tree.clips)
    assert stills.load_images(index).shape == (7, 48, 48, 3)
