"""The fingerprint chain from a video's bytes to a training run: readers take what the manifest lists at the
fingerprints the config implies, stale clips and stores are never read, a changed preset retrains a fold from
epoch 1, a relabelled clip is trained with its new label, and the features stage reads only current tracks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from fer_pipeline import config as config_mod
from fer_pipeline import lineage, paths, preprocess, protocols, video
from fer_pipeline.datasets import MANIFEST_COLUMNS, read_manifest
from fer_pipeline.motion import window_starts
from fer_pipeline.store import ArraySpec, ShardStore, StoreError
from fer_pipeline.studies import ablation
from fer_pipeline.windows import WindowDataset, index_clips

DATASET, PRESET, SIZE = "tiny", "ec112", 16
CLASSES = ["happiness", "surprise"]
TINY_ABLATION = {
    "variants": ["ablation_e"], "val_fraction": 0.0, "cache_windows": False,
    "sizes": {"input_size": SIZE, "feature_dim": 4, "convlstm_hidden": [2, 2, 2, 2], "norm_groups": 1,
              "resnet_width_multiplier": 0.125, "resnet_blocks": [1, 1, 1, 1], "fc_hidden": [4, 4]},
    "training": {"epochs": 2, "batch_size": 4, "patience": 2, "windows_per_clip": 1},
}


def make_config(tmp_path, **overrides) -> dict:
    cfg = config_mod.deep_update(config_mod.load(), {
        "results": str(tmp_path / "results"),
        "datasets": {DATASET: {"adapter": "enterface", "root": str(tmp_path), "protocol": {"name": "losgo", "groups": 3},
                               "presets": [PRESET], "study_overrides": {"ablation": TINY_ABLATION}}},
    })
    return config_mod.deep_update(cfg, overrides)


def make_manifest(tmp_path, subjects=("1", "2", "3")) -> pd.DataFrame:
    """One clip per subject and class; the 'videos' are small files whose bytes differ per clip."""
    rows = []
    for subject in subjects:
        for label in CLASSES:
            clip_id = f"s{subject}_{label[:2]}"
            path = tmp_path / "media" / f"{clip_id}.avi"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(clip_id.encode())
            rows.append({"clip_id": clip_id, "dataset": DATASET, "subject": subject, "label": label,
                         "raw_label": label, "split": "", "path": str(path), "n_frames": 20, "fps": 25.0,
                         "width": 64, "height": 48, "sha256": video.sha256(path)})
    manifest = pd.DataFrame(rows)
    manifest["fold"] = [int(s) % 3 for s in manifest["subject"]]  # as losgo over 3 groups deals them
    manifest["shard"] = protocols.assign_shards(manifest, 50)
    return manifest[MANIFEST_COLUMNS]


def save_manifest(config, manifest) -> str:
    path = paths.manifest_csv(config["results"], DATASET)
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(path, index=False)
    return str(path)


def clip_arrays(label: str, n_frames: int, flow_value: float, length: int = 16, stride: int = 8) -> dict:
    """Feature arrays a network can learn the label from: bright faces for happiness, dark for surprise."""
    level = 200 if label == "happiness" else 50
    starts = window_starts(n_frames, length, stride)
    rgb = np.full((n_frames, SIZE, SIZE, 3), level, np.uint8)
    return {
        "rgb": ArraySpec(rgb, ("frame", "y", "x", "channel"), length),
        "flow": ArraySpec(np.full((n_frames - 1, SIZE, SIZE, 2), flow_value, np.float16), ("pair", "y", "x", "uv"), length),
        "window_start": ArraySpec(starts, ("window",), attrs={"length": length, "stride": stride}),
        "dyn_rgb": ArraySpec(np.full((len(starts), SIZE, SIZE, 3), level / 255, np.float16), ("window", "y", "x", "channel")),
        "dyn_flow": ArraySpec(np.full((len(starts), SIZE, SIZE, 2), flow_value, np.float16), ("window", "y", "x", "uv")),
    }


def write_features(config, manifest, flow_value=0.5, n_frames=20) -> None:
    """The feature stores as the features stage would write them, at the fingerprints ``config`` implies."""
    expected = lineage.expected(config, manifest, PRESET).set_index("clip_id")
    for shard, rows in manifest.groupby("shard"):
        with ShardStore(paths.features_store(config["results"], DATASET, PRESET, shard), attrs={"stage": "features"}) as store:
            for row in rows.itertuples():
                e = expected.loc[row.clip_id]
                store.write_clip(row.clip_id, clip_arrays(row.label, n_frames, flow_value), {
                    "source_sha256": e.source_sha256, "track_sha256": e.track_sha256,
                    "features_sha256": e.features_sha256, "label": row.label, "subject": row.subject,
                    "n_frames": n_frames, "n_windows": len(window_starts(n_frames, 16, 8))})


def test_the_readers_order_is_the_manifests_whatever_the_sharding(tmp_path):
    """Sharding is storage: five subjects a shard or one each, the clips come in the manifest's order, so a
    training run (its sampler's draws, its fingerprint) is the same either way."""
    subjects = ("1", "2", "10", "11")  # "10" and "11" sort before "2" as clip ids (s10_... < s2_...)
    orders = []
    for per_shard in (1, 5):
        folder = tmp_path / f"per{per_shard}"
        config, manifest = make_config(folder), make_manifest(folder, subjects=subjects)
        manifest["shard"] = protocols.assign_shards(manifest, 50, per_shard)
        write_features(config, manifest)
        clips = index_clips(config, DATASET, PRESET, manifest)
        assert clips["shard"].nunique() == (4 if per_shard == 1 else 1)
        orders.append(clips["clip_id"].tolist())
    assert orders[0] == orders[1] == make_manifest(tmp_path / "again", subjects=subjects)["clip_id"].tolist()


def test_readers_take_the_manifests_labels_and_the_current_fingerprints_only(tmp_path):
    config, manifest = make_config(tmp_path), make_manifest(tmp_path)
    write_features(config, manifest)
    clips = index_clips(config, DATASET, PRESET, manifest)
    assert sorted(clips["clip_id"]) == sorted(manifest["clip_id"])
    # A relabelled clip: the store still says happiness, the manifest now says surprise.
    relabelled = manifest.copy()
    relabelled.loc[relabelled["clip_id"] == "s1_ha", "label"] = "surprise"
    clips = index_clips(config, DATASET, PRESET, relabelled)
    assert clips.set_index("clip_id").at["s1_ha", "label"] == "surprise"
    data = WindowDataset(clips, CLASSES, fields=("dyn_rgb",))
    position = int(np.flatnonzero(data.clips["clip_id"] == "s1_ha")[0])
    window = int(np.flatnonzero(data.items[:, 0] == position)[0])
    assert CLASSES[int(data[window]["label"])] == "surprise"
    # A clip the manifest no longer lists, and a store of a shard it does not have, are not read.
    dropped = manifest[manifest["clip_id"] != "s2_su"]
    with ShardStore(paths.features_store(config["results"], DATASET, PRESET, "old_part000")) as old:
        old.write_clip("s3_ha", clip_arrays("happiness", 20, 9.0), {"label": "happiness"})
    clips = index_clips(config, DATASET, PRESET, dropped)
    assert "s2_su" not in set(clips["clip_id"]) and not clips["store"].str.contains("old_part000").any()
    # Another preset parameter: every stored clip is stale until the features are made again.
    changed = config_mod.deep_update(config, {"presets": {PRESET: {"flow": {"winsize": 9}}}})
    with pytest.raises(StoreError, match="no clip of the manifest at the current fingerprints"):
        index_clips(changed, DATASET, PRESET, manifest)
    report = lineage.audit(changed, DATASET, manifest, PRESET)
    assert len(report.stale_clips) == len(manifest) and [p.name for p in report.stale_stores] == ["old_part000.zarr"]


def _weights(out_dir) -> dict:
    return torch.load(out_dir / "best.pt", weights_only=True)["model"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_changed_flow_parameter_retrains_the_fold_from_epoch_one(tmp_path):
    config, manifest = make_config(tmp_path), make_manifest(tmp_path)
    manifest_csv = save_manifest(config, manifest)
    write_features(config, manifest, flow_value=0.5)
    run = tmp_path / "run"
    first = ablation.run_fold(config, DATASET, "ablation_e", 0, manifest_csv, run)
    old_weights = _weights(run)
    # The preset changes and the features stage makes the clips again: other flow, other fingerprints.
    changed = config_mod.deep_update(config, {"presets": {PRESET: {"flow": {"winsize": 9}}}})
    write_features(changed, manifest, flow_value=-1.5)
    again = ablation.run_fold(changed, DATASET, "ablation_e", 0, manifest_csv, run)
    fresh = ablation.run_fold(changed, DATASET, "ablation_e", 0, manifest_csv, tmp_path / "fresh")
    assert again["run_sha256"] != first["run_sha256"] and again["run_sha256"] == fresh["run_sha256"]
    # Trained again from epoch 1 on the new features: the weights of a fresh run, not the old ones.
    assert _same(_weights(run), _weights(tmp_path / "fresh")) and not _same(_weights(run), old_weights)
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [1, 2]


def test_a_relabelled_clip_is_another_run(tmp_path):
    config, manifest = make_config(tmp_path), make_manifest(tmp_path)
    write_features(config, manifest)
    first = ablation.run_fold(config, DATASET, "ablation_e", 0, save_manifest(config, manifest), tmp_path / "run")
    relabelled = manifest.copy()
    # s1 trains in round 0 and s3 is tested: both see the manifest's new labels
    relabelled.loc[relabelled["clip_id"].isin(["s1_ha", "s3_ha"]), "label"] = "surprise"
    again = ablation.run_fold(config, DATASET, "ablation_e", 0, save_manifest(config, relabelled), tmp_path / "run")
    assert again["run_sha256"] != first["run_sha256"]
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv", dtype={"subject": str})
    assert set(predictions.loc[predictions["clip_id"] == "s3_ha", "label"]) == {"surprise"}


# -- the stages' loop -----------------------------------------------------------------------------------------

def _rows(tmp_path):
    manifest = make_manifest(tmp_path, subjects=("1",))
    return manifest, {c: {"source_sha256": s} for c, s in zip(manifest["clip_id"], manifest["sha256"])}


def _arrays(row, source=None):
    return {"x": ArraySpec(np.full(3, len(row["clip_id"]), np.int16), ("frame",))}, {"n_frames": 3}


def test_an_unexpected_error_in_one_clip_fails_the_job_naming_it_after_the_others_finish(tmp_path):
    manifest, fingerprints = _rows(tmp_path)
    summary = tmp_path / "summary.json"

    def process(row, source):
        if row["clip_id"] == "s1_ha":
            raise ZeroDivisionError("a bug")
        return _arrays(row)

    store = ShardStore(tmp_path / "s.zarr")
    with pytest.raises(preprocess.StageFailed, match=r"1 of 2 clips failed(.|\n)*s1_ha.avi: ZeroDivisionError: a bug"):
        preprocess._run_shard("test", manifest, store, fingerprints, process, summary)
    assert not summary.exists()  # the job failed: no summary that says it is done
    assert ShardStore(tmp_path / "s.zarr", mode="r").clip_ids() == ["s1_su"]  # the other clip is stored
    # The rerun resumes: the stored clip is cached, the failed one is made now.
    done = preprocess._run_shard("test", manifest, ShardStore(tmp_path / "s.zarr"), fingerprints, _arrays, summary)
    assert {c: i["status"] for c, i in done["clips"].items()} == {"s1_ha": "written", "s1_su": "cached"}


def test_the_next_writer_removes_stale_clips_and_follows_a_relabelling(tmp_path):
    manifest, fingerprints = _rows(tmp_path)
    with ShardStore(tmp_path / "s.zarr") as store:
        store.write_clip("renamed_away", *_arrays({"clip_id": "renamed_away"}))
    preprocess._run_shard("test", manifest, ShardStore(tmp_path / "s.zarr"), fingerprints, _arrays,
                          tmp_path / "summary.json")
    relabelled = manifest.assign(label="fear")
    summary = preprocess._run_shard("test", relabelled, ShardStore(tmp_path / "s.zarr"), fingerprints, _arrays,
                                    tmp_path / "summary.json")
    reader = ShardStore(tmp_path / "s.zarr", mode="r")
    assert reader.clip_ids() == ["s1_ha", "s1_su"]
    assert summary["clips"]["s1_ha"] == {"status": "cached", "updated": ["label"], "warnings": []}
    assert reader.clip_attrs("s1_ha")["label"] == "fear"


def _avi(path, n_frames=60):
    t = np.arange(n_frames)[:, None, None, None]
    frames = ((np.indices((96, 128)).sum(0)[None, :, :, None] * 3 + t * 7) % 255).astype(np.uint8).repeat(3, axis=3)
    video.write(path, frames, 25.0)
    return path


def test_a_truncated_video_is_skipped_or_kept_as_config_says_naming_both_counts(tmp_path):
    good = _avi(tmp_path / "good.avi")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(preprocess.SkipClip, match=r"cut\.avi: \d+ of the 60 frames its header claims"):
        preprocess.read_video(cut, {"on_truncated": "skip", "frame_count_tolerance": 1})
    decoded, extra = preprocess.read_video(cut, {"on_truncated": "keep", "frame_count_tolerance": 1})
    assert extra["media"]["truncated"] and extra["media"]["container_frames"] == 60 > decoded.decoded_frames
    assert "cut.avi" in extra["warnings"][0] and "kept" in extra["warnings"][0]
    decoded, extra = preprocess.read_video(good, {"on_truncated": "skip", "frame_count_tolerance": 0})
    assert decoded.decoded_frames == 60 and not extra["warnings"]


def _track(n_frames):
    """A steady face track in a 128x96 frame (landmarks of a face about 40 px wide)."""
    points = np.array([[50, 40], [78, 40], [64, 55], [53, 68], [75, 68]], np.float32)
    return {"boxes": ArraySpec(np.tile([[40, 25, 88, 80]], (n_frames, 1)).astype(np.float32), ("frame", "box")),
            "landmarks": ArraySpec(np.tile(points, (n_frames, 1, 1)), ("frame", "point", "xy")),
            "scores": ArraySpec(np.ones(n_frames, np.float32), ("frame",)),
            "valid": ArraySpec(np.ones(n_frames, bool), ("frame",))}


def test_the_features_stage_reads_only_the_track_of_the_current_detection_parameters(tmp_path):
    config = make_config(tmp_path)
    manifest = make_manifest(tmp_path, subjects=("1",))
    for row in manifest.itertuples():  # real videos: 10 frames, shorter than one 16-frame window
        _avi(tmp_path / "media" / f"{row.clip_id}.avi", n_frames=10)
    manifest["sha256"] = [video.sha256(p) for p in manifest["path"]]
    manifest_csv = save_manifest(config, manifest)
    expected = lineage.expected(config, manifest).set_index("clip_id")
    results, shard = config["results"], manifest["shard"].iloc[0]
    with ShardStore(paths.detections_store(results, DATASET, shard)) as detections:
        for row in manifest.itertuples():
            # s1_su's track was made under other detection parameters (another fingerprint)
            track = expected.at[row.clip_id, "track_sha256"] if row.clip_id == "s1_ha" else "another"
            detections.write_clip(row.clip_id, _track(10), {"track_sha256": track, "valid_fraction": 1.0})
    summary_json = paths.detections_summary(results, DATASET, shard)
    summary_json.write_text(json.dumps({"clips": {}}))
    summary = preprocess.features_shard(config, DATASET, PRESET, shard, manifest_csv, summary_json,
                                        paths.features_summary(results, DATASET, PRESET, shard))
    assert summary["clips"]["s1_ha"]["status"] == "written"
    assert summary["clips"]["s1_su"]["status"] == "skipped"
    assert "no face track at the current detection parameters" in summary["clips"]["s1_su"]["reason"]
    # A clip shorter than one window is stored padded, and says so.
    assert "shorter than one 16-frame window" in summary["clips"]["s1_ha"]["warnings"][0]
    clips = index_clips(config, DATASET, PRESET, read_manifest(paths.manifest_csv(results, DATASET)))
    assert clips["clip_id"].tolist() == ["s1_ha"] and clips["padded_frames"].tolist() == [6]


def test_inspect_reports_stale_clips_and_stores_and_gc_removes_them(tmp_path, capsys):
    from fer_pipeline import cli
    from fer_pipeline.store import StoreLocked

    config, manifest = make_config(tmp_path), make_manifest(tmp_path)
    save_manifest(config, manifest)
    write_features(config, manifest)
    results = config["results"]
    with ShardStore(paths.features_store(results, DATASET, PRESET, "old_part000")) as old:
        old.write_clip("s3_ha", clip_arrays("happiness", 20, 9.0), {"label": "happiness"})
    # The user's config changes a flow parameter: every clip of the preset is stale now.
    changed = config_mod.deep_update(config, {"presets": {PRESET: {"flow": {"winsize": 9}}}})
    config_file = tmp_path / "changed.yaml"
    config_file.write_text(json.dumps(changed))
    features = paths.features_dir(results, DATASET, PRESET)
    assert cli.main(["inspect", str(features), "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "0 current clips, 6 stale clips, 1 stale stores" in out and "made from other inputs" in out
    assert f"fer-pipeline gc {paths.dataset_dir(results, DATASET)}" in out
    dataset_dir = str(paths.dataset_dir(results, DATASET))
    assert cli.main(["gc", dataset_dir, "--config", str(config_file), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("would remove") == 7 and len(lineage.audit(changed, DATASET, manifest, PRESET).stale_clips) == 6
    # A store that a job is writing is left alone: gc stops naming it.
    busy = ShardStore(paths.features_store(results, DATASET, PRESET, manifest["shard"].iloc[0]))
    with pytest.raises(StoreLocked):
        lineage.collect_garbage(changed, DATASET, manifest)
    busy.close()
    assert cli.main(["gc", dataset_dir, "--config", str(config_file)]) == 0
    report = lineage.audit(changed, DATASET, manifest, PRESET)
    assert not report.stale_clips and not report.stale_stores and len(report.missing) == len(manifest)
    assert lineage.audit(config, DATASET, manifest, PRESET).current == []  # gone, not merely hidden


def test_a_datasets_frame_rate_sampling_is_part_of_its_tracks_fingerprint(tmp_path):
    """MMI is read at 10 fps (datasets.<name>.sample_fps): its tracks are made of the sampled frames, so a
    changed rate makes every track again, and the stage reads the clip sampled."""
    config, manifest = make_config(tmp_path), make_manifest(tmp_path, subjects=("1",))
    sampled = config_mod.deep_update(config, {"datasets": {DATASET: {"sample_fps": 10}}})
    assert lineage.detection_parameters(sampled, DATASET)["sample_fps"] == 10
    before = lineage.expected(config, manifest)["track_sha256"]
    after = lineage.expected(sampled, manifest)["track_sha256"]
    assert not (before == after).any()
    decoded, extra = preprocess.read_video(_avi(tmp_path / "clip.avi", n_frames=30), config["media"], 25.0, 10)
    assert decoded.decoded_frames == 30 and len(decoded.frames) == 12 and decoded.fps == 10
    assert extra["media"]["sample_fps"] == 10 and not extra["media"]["truncated"]


class _SteadyFace:
    """Stands in for MTCNN: the steady face of ``_track`` on every frame."""

    def __init__(self, *args):
        pass

    def track(self, frames):
        from fer_pipeline.faces import Detections

        arrays = _track(len(frames))
        return Detections(**{name: spec.data for name, spec in arrays.items()})


def test_the_detections_job_decodes_once_for_the_track_and_every_preset(tmp_path, monkeypatch):
    """The detections job writes every video preset's features while the frames are decoded; the features job
    then decodes nothing and finds them current, and they equal what the features job computes alone."""
    config = make_config(tmp_path, datasets={DATASET: {"presets": ["ec112", "xu128"]}})
    manifest = make_manifest(tmp_path, subjects=("1",))
    for row in manifest.itertuples():
        _avi(tmp_path / "media" / f"{row.clip_id}.avi", n_frames=20)
    manifest["sha256"] = [video.sha256(p) for p in manifest["path"]]
    manifest_csv = save_manifest(config, manifest)
    results, shard = config["results"], manifest["shard"].iloc[0]
    monkeypatch.setattr(preprocess.faces, "FaceDetector", _SteadyFace)
    decodes = []
    real_read = preprocess.read_video
    monkeypatch.setattr(preprocess, "read_video", lambda *a, **k: decodes.append(a[0]) or real_read(*a, **k))

    detections = paths.detections_summary(results, DATASET, shard)
    summary = preprocess.detect_shard(config, DATASET, shard, manifest_csv, detections)
    assert summary["counts"]["written"] == 2 and len(decodes) == 2  # one decode per clip
    stored = {}
    for preset in ("ec112", "xu128"):
        features = preprocess.features_shard(config, DATASET, preset, shard, manifest_csv, detections,
                                             paths.features_summary(results, DATASET, preset, shard))
        assert features["counts"] == {"written": 0, "cached": 2, "skipped": 0}, preset
        reader = ShardStore(paths.features_store(results, DATASET, preset, shard), mode="r")
        stored[preset] = {c: {k: np.asarray(v[...]) for k, v in reader.clip(c).arrays()} for c in reader.clip_ids()}
        assert reader.clip_attrs("s1_ha")["features_sha256"] == lineage.expected(
            config, manifest, preset).set_index("clip_id").at["s1_ha", "features_sha256"]
    assert len(decodes) == 2  # the features jobs decoded nothing

    # The features job alone (its store removed) decodes each clip and writes the same arrays.
    for preset in ("ec112", "xu128"):
        shutil.rmtree(paths.features_store(results, DATASET, preset, shard))
        features = preprocess.features_shard(config, DATASET, preset, shard, manifest_csv, detections,
                                             paths.features_summary(results, DATASET, preset, shard))
        assert features["counts"]["written"] == 2
        reader = ShardStore(paths.features_store(results, DATASET, preset, shard), mode="r")
        for clip_id, arrays in stored[preset].items():
            again = {k: np.asarray(v[...]) for k, v in reader.clip(clip_id).arrays()}
            assert sorted(again) == sorted(arrays) and all(np.array_equal(again[k], arrays[k]) for k in arrays)
    assert len(decodes) == 2 + 4
