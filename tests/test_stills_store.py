"""The stills store: arrays of many images per shard with a per-image table, written whole under the store's
lock, read only at the fingerprints the manifest and config imply now; reruns copy what is current and compute
what changed; inspect, gc and the killed writer's leftovers."""

from __future__ import annotations

import csv
import json
import os
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
import zarr

from fer_pipeline import config as config_mod
from fer_pipeline import lineage, paths, preprocess, stills, video
from fer_pipeline.datasets import read_manifest, write_manifest
from fer_pipeline.inspect_store import contact_sheet, summarize
from fer_pipeline.store import StoreError, StoreLocked

from fixtures_stills import make_affectnet_tree, make_fer2013_tree, stills_config

DATASET = "fer"


def build_manifest(config, dataset=DATASET):
    out = paths.manifest_csv(config["results"], dataset)
    write_manifest(config, dataset, out, paths.manifest_skipped_csv(config["results"], dataset))
    return read_manifest(out)


def run_stages(config, dataset=DATASET, preset="fer48"):
    """Both stages of every shard, as the workflow's jobs run them; the summaries by (stage, shard)."""
    results, manifest_csv = config["results"], paths.manifest_csv(config["results"], dataset)
    summaries = {}
    for shard in read_manifest(manifest_csv)["shard"].unique():
        detections = paths.detections_summary(results, dataset, shard)
        summaries["detections", shard] = preprocess.detect_shard(config, dataset, shard, manifest_csv, detections)
        summaries["features", shard] = preprocess.features_shard(config, dataset, preset, shard, manifest_csv, detections,
                                                                 paths.features_summary(results, dataset, preset, shard))
    return summaries


def counts(summaries, stage):
    total = {"written": 0, "cached": 0, "skipped": 0}
    for (name, _), summary in summaries.items():
        if name == stage:
            total = {k: total[k] + summary["counts"][k] for k in total}
    return total


@pytest.fixture
def fer(tmp_path):
    tree = make_fer2013_tree(tmp_path / "fer2013")
    config = stills_config(tmp_path / "results", DATASET, "fer2013", tree.root)
    config["detection"]["verify_every_frame"] = False  # no MTCNN: the dataset's box as it is
    manifest = build_manifest(config)
    return tree, config, manifest


def rewrite_row(tree, row, emotion=None, pixels=None):
    path = tree.root / "fer2013.csv"
    lines = list(csv.reader(path.open()))
    if emotion is not None:
        lines[row][0] = str(emotion)
    if pixels is not None:
        lines[row][1] = pixels
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(lines)


def test_round_trip_many_images_per_store_and_plain_zarr_and_xarray(fer):
    tree, config, manifest = fer
    summaries = run_stages(config)
    assert counts(summaries, "features") == {"written": 7, "cached": 0, "skipped": 0}
    index = stills.index_images(config, DATASET, "fer48", manifest)
    assert sorted(index["clip_id"]) == sorted(tree.clips)
    faces = stills.load_images(index)
    for clip_id, face in zip(index["clip_id"], faces):
        grey = np.array(tree.clips[clip_id]["pixels"].split(), dtype=np.uint8).reshape(48, 48)
        assert (face[..., 0] == grey).all()  # the whole picture, as the box says, at 48
    store = paths.features_store(config["results"], DATASET, "fer48", "part000")
    assert [p.name for p in store.parent.glob("*.zarr")] == ["part000.zarr", "part001.zarr"]
    assert not (store / "clips").exists()  # no group per image
    group = zarr.open_group(str(store), mode="r")
    assert group["rgb"].shape == (4, 48, 48, 3) and group["clip_id"].shape == (4,)
    import xarray as xr

    ds = xr.open_zarr(str(store), consolidated=False)
    assert ds.sizes["image"] == 4 and list(ds["label"].values) == list(stills.read_table(store)["label"])
    table = stills.read_table(store)
    assert set(stills.FEATURE_COLUMNS) == set(table.columns) and (table["box_source"] == "dataset").all()
    item = stills.StillDataset(index, ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"])[0]
    assert item["rgb"].shape == (3, 48, 48) and item["rgb"].max() <= 1.0


def test_a_rerun_computes_only_what_changed_and_stale_images_are_never_read(fer):
    tree, config, manifest = fer
    run_stages(config)
    again = run_stages(config)
    assert counts(again, "features") == {"written": 0, "cached": 7, "skipped": 0}
    assert not any(summary["rewritten"] for summary in again.values())

    # One picture changes: until its stages rerun, it is stale and not read; the others still are.
    rng = np.random.default_rng(5)
    rewrite_row(tree, 1, pixels=" ".join(str(v) for v in rng.integers(0, 256, 2304)))
    manifest = build_manifest(config)
    report = lineage.audit(config, DATASET, manifest, "fer48")
    assert [clip for _, clip, _ in report.stale_clips] == ["fer00001"]
    index = stills.index_images(config, DATASET, "fer48", manifest)
    assert "fer00001" not in set(index["clip_id"]) and len(index) == 6
    after = run_stages(config)
    assert counts(after, "detections") == {"written": 1, "cached": 6, "skipped": 0}
    assert counts(after, "features") == {"written": 1, "cached": 6, "skipped": 0}
    index = stills.index_images(config, DATASET, "fer48", manifest)
    face = stills.load_images(index[index["clip_id"] == "fer00001"])[0]
    assert (face[..., 0] == video.read(tree.root / "fer2013.csv", row=1).frames[0, ..., 0]).all()

    # A relabelled picture: read with the manifest's label at once, the store's table follows on the rerun,
    # nothing is recomputed.
    rewrite_row(tree, 2, emotion=0)
    manifest = build_manifest(config)
    index = stills.index_images(config, DATASET, "fer48", manifest)
    assert index.set_index("clip_id").at["fer00002", "label"] == "anger"
    relabelled = run_stages(config)
    assert counts(relabelled, "features")["written"] == 0
    table = stills.read_table(paths.features_store(config["results"], DATASET, "fer48", manifest.set_index(
        "clip_id").at["fer00002", "shard"]))
    assert table.set_index("clip_id").at["fer00002", "label"] == "anger"


def test_a_changed_preset_makes_every_crop_stale_until_recomputed(fer):
    _, config, manifest = fer
    run_stages(config)
    changed = config_mod.deep_update(config, {"presets": {"fer48": {"size": 40}}})
    with pytest.raises(StoreError, match="no image of the manifest at the current fingerprints"):
        stills.index_images(changed, DATASET, "fer48", manifest)
    summaries = run_stages(changed)
    assert counts(summaries, "detections") == {"written": 0, "cached": 7, "skipped": 0}  # detection is no preset's
    assert counts(summaries, "features") == {"written": 7, "cached": 0, "skipped": 0}
    assert stills.load_images(stills.index_images(changed, DATASET, "fer48", manifest)).shape == (7, 40, 40, 3)


def test_one_writer_and_a_killed_writers_store_is_restored(fer, tmp_path):
    _, config, _ = fer
    run_stages(config)
    store = paths.features_store(config["results"], DATASET, "fer48", "part000")
    with stills.StillsWriter(store):
        with pytest.raises(StoreLocked, match="another job is writing this store"):
            stills.StillsWriter(store)
    # Killed between the two renames of a publish: the old version waits in staging/old.
    staging = store.with_name(store.name + ".staging")
    staging.mkdir()
    os.replace(store, staging / "old")
    with stills.StillsWriter(store) as writer:
        attrs, table = writer.current()
    assert len(table) == 4 and not staging.exists()


def test_gc_drops_images_the_manifest_no_longer_lists(fer):
    tree, config, manifest = fer
    run_stages(config)
    rewrite_row(tree, 3, emotion=9)  # no longer a FER2013 code: skipped by the adapter
    manifest = build_manifest(config)
    assert "fer00003" not in set(manifest["clip_id"])
    done = lineage.collect_garbage(config, DATASET, manifest)
    assert any("fer00003" in line for line in done), done
    for shard in ("part000", "part001"):
        assert "fer00003" not in set(stills.read_table(paths.features_store(config["results"], DATASET, "fer48", shard))["clip_id"])
    assert not lineage.audit(config, DATASET, manifest, "fer48").stale_clips


def test_inspect_summarises_a_stills_folder_and_draws_its_crops(fer, tmp_path):
    _, config, _ = fer
    run_stages(config)
    folder = paths.features_dir(config["results"], DATASET, "fer48")
    text = summarize(folder)
    assert "kind=stills" in text and "rgb" in text and "total: 7 clips" in text
    assert "fer00002" in summarize(folder, "fer00002")
    png = contact_sheet(folder, None, tmp_path / "sheet.png")
    assert cv2.imread(str(png)) is not None


def test_affectnet_box_crop_and_landmarks_in_crop_pixels(tmp_path):
    tree = make_affectnet_tree(tmp_path / "AffectNet")
    config = stills_config(tmp_path / "results", "an", "affectnet", tree.root, presets=["affect224"])
    config["detection"]["verify_every_frame"] = False
    config["presets"]["affect224"]["size"] = 32
    manifest = build_manifest(config, "an")
    run_stages(config, "an", "affect224")
    index = stills.index_images(config, "an", "affect224", manifest)
    assert len(index) == len(tree.clips)
    faces = stills.load_images(index)
    landmarks = stills.load_images(index, "landmarks")
    companion = pd.read_csv(paths.manifest_companion_csv(config["results"], "an", "landmarks"), dtype=str)
    by_id = dict(zip(companion["clip_id"], companion["landmarks"]))
    for clip_id, face, points in zip(index["clip_id"], faces, landmarks):
        clip = tree.clips[clip_id]
        x0, y0, x1, y1 = (int(v) for v in clip["box"])
        picture = video.read_still(clip["path"])
        expected = cv2.resize(picture[y0:y1, x0:x1], (32, 32), interpolation=cv2.INTER_AREA)
        assert np.abs(face.astype(int) - expected).max() <= 1
        source = np.array(by_id[clip_id].split(";"), float).reshape(68, 2)
        assert np.allclose(points, (source - [x0, y0]) * [32 / (x1 - x0), 32 / (y1 - y0)], atol=1e-3)


def test_a_stills_dataset_refuses_a_motion_preset(fer):
    _, config, manifest = fer
    shard = manifest["shard"].iloc[0]
    results = config["results"]
    preprocess.detect_shard(config, DATASET, shard, paths.manifest_csv(results, DATASET),
                            paths.detections_summary(results, DATASET, shard))
    with pytest.raises(config_mod.ConfigError, match="a still .* does not have"):
        preprocess.features_shard(config, DATASET, "ec112", shard, paths.manifest_csv(results, DATASET),
                                  paths.detections_summary(results, DATASET, shard), results + "/x.json")


def test_mtcnn_as_the_box_source_finds_a_real_face_and_skips_a_faceless_still(tmp_path, face_assets):
    """detection_source: mtcnn: MTCNN's box and five points instead of the dataset's; a picture without a face
    is skipped in both stages, with the reason naming the file."""
    tree = make_affectnet_tree(tmp_path / "AffectNet")
    face = cv2.imread(str(face_assets / "0-f1-su-ph.jpg"))
    scale = 400 / max(face.shape[:2])
    face = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    real = next(c for c in tree.clips.values() if c["label"] == "neutral")
    cv2.imwrite(str(real["path"]), face)
    path = tree.root / "Manually_Annotated_file_lists" / "training.csv"
    rows = list(csv.reader(path.open()))
    rows[real["row"]][1:5] = ["1", "1", str(face.shape[1] - 2), str(face.shape[0] - 2)]  # a box inside the new size
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    config = stills_config(tmp_path / "results", "an", "affectnet", tree.root, presets=["affect224"],
                           detection_source="mtcnn")
    config["presets"]["affect224"]["size"] = 32
    manifest = build_manifest(config, "an")
    summaries = run_stages(config, "an", "affect224")
    index = stills.index_images(config, "an", "affect224", manifest)
    clip_id = manifest.loc[(manifest["split"] == "train") & (manifest["row"] == real["row"]), "clip_id"].iloc[0]
    assert list(index["clip_id"]) == [clip_id]
    table = stills.read_table(index["store"].iloc[0])
    assert (table["box_source"] == "mtcnn").all()
    points = stills.load_images(index, "points")[0]
    assert not np.isnan(points).any() and (points > 0).all() and (points < 32).all()
    reasons = [info["reason"] for (stage, _), s in summaries.items() if stage == "detections"
               for info in s["clips"].values() if info["status"] == "skipped"]
    assert len(reasons) == len(tree.clips) - 1 and all("a face was found on 0 of 1 frames" in r for r in reasons)
    assert all(r.startswith(str(tree.root.resolve())) for r in reasons)
