"""Preprocessing stages, one shard (a subject, or a fixed group of clips) per call.

Stage 1, :func:`detect_shard`: decode -> MTCNN track (fer_pipeline.faces) -> ``detections/<shard>.zarr``.
Detection does not depend on the crop preset, so it runs once per clip.

Stage 2, :func:`features_shard`: decode -> align with a preset's mode and size -> Farneback flow ->
windows -> dynamic images of RGB and of flow -> ``features/<preset>/<shard>.zarr``.

Both stages resume: a clip already in the store with the same source checksum and parameter fingerprint
is kept; anything else is (re)computed. Clips that cannot be used (unreadable video, too little face) are
listed with their reason in the stage's JSON summary, which is also the job's declared output.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import faces, motion, video
from .config import detection_device
from .datasets import read_manifest
from .files import write_text_atomic
from .provenance import code_version, fingerprint
from .store import ArraySpec, ShardStore

log = logging.getLogger(__name__)


def results_dir(config: Mapping[str, Any], dataset: str) -> Path:
    return Path(config["results"]) / dataset


def detections_path(config: Mapping[str, Any], dataset: str, shard: str) -> Path:
    return results_dir(config, dataset) / "detections" / f"{shard}.zarr"


def features_dir(config: Mapping[str, Any], dataset: str, preset: str) -> Path:
    return results_dir(config, dataset) / "features" / preset


def features_path(config: Mapping[str, Any], dataset: str, preset: str, shard: str) -> Path:
    return features_dir(config, dataset, preset) / f"{shard}.zarr"


def read_shard(manifest_csv: str | Path, shard: str) -> pd.DataFrame:
    manifest = read_manifest(Path(manifest_csv))
    rows = manifest[manifest["shard"] == shard]
    if rows.empty:
        raise ValueError(f"{manifest_csv}: no clip belongs to shard '{shard}'")
    return rows


def _source(row: pd.Series) -> dict[str, Any]:
    path = Path(row["path"])
    return {"path": str(path), "bytes": path.stat().st_size if path.exists() else None,
            "sha256": video.sha256(path) if path.exists() else None}


class SkipClip(RuntimeError):
    """A clip that a stage cannot use; the reason is recorded in the stage's summary."""


def track_arrays(track: faces.Detections) -> dict[str, ArraySpec]:
    """The face track as store arrays (shared by both stages: the feature store repeats it per clip)."""
    return {
        "boxes": ArraySpec(track.boxes, ("frame", "box"), attrs={"units": "pixels", "order": "x0 y0 x1 y1"}),
        "landmarks": ArraySpec(track.landmarks, ("frame", "point", "xy"), attrs={
            "units": "pixels", "points": "left eye, right eye, nose, left mouth corner, right mouth corner"}),
        "scores": ArraySpec(track.scores, ("frame",), attrs={"meaning": "ONet face probability"}),
        "valid": ArraySpec(track.valid, ("frame",), attrs={
            "meaning": "a face was seen on this frame; invalid frames hold filled values"}),
    }


def clip_features(frames: np.ndarray, landmarks: np.ndarray, valid: np.ndarray, preset: Mapping[str, Any],
                  frames_per_chunk: int) -> dict[str, ArraySpec]:
    """Aligned faces, flow, windows and dynamic images of one clip, as store arrays."""
    reference = faces.alignment_landmarks(landmarks, valid, preset["alignment_reference"])
    aligned = faces.align(frames, reference, preset["alignment"], preset["size"])
    flow = motion.farneback(aligned, preset["flow"])
    length, stride = preset["window"]["length"], preset["window"]["stride"]
    starts = motion.window_starts(len(aligned), length, stride)
    # RGB in [0, 1] and flow in pixels keep dynamic images within float16's range.
    dyn_rgb = motion.dynamic_images(aligned.astype(np.float32) / 255.0, starts, length)
    dyn_flow = motion.dynamic_images(flow, starts, length - 1)
    return {
        "rgb": ArraySpec(aligned, ("frame", "y", "x", "channel"), frames_per_chunk),
        "flow": ArraySpec(flow.astype(np.float16), ("pair", "y", "x", "uv"), frames_per_chunk,
                          attrs={"units": "pixels per frame", "pair_t": "frame t -> frame t+1"}),
        "window_start": ArraySpec(starts, ("window",), attrs={"length": length, "stride": stride}),
        "dyn_rgb": ArraySpec(dyn_rgb.astype(np.float16), ("window", "y", "x", "channel"),
                             attrs={"input": "RGB / 255", "method": "approximate rank pooling"}),
        "dyn_flow": ArraySpec(dyn_flow.astype(np.float16), ("window", "y", "x", "uv"),
                              attrs={"input": "flow in pixels", "method": "approximate rank pooling"}),
    }


def _run_shard(stage: str, rows: pd.DataFrame, store: ShardStore, parameters: Mapping[str, Any],
               process, summary_json: str | Path) -> dict[str, Any]:
    """The loop both stages share: fingerprint, skip what is done, process, record every outcome."""
    parameters_sha256 = fingerprint(parameters)
    clips: dict[str, Any] = {}
    started, frames_done = time.perf_counter(), 0
    for _, row in tqdm(list(rows.iterrows()), desc=f"{stage} {store.path.name}", unit="clip"):
        clip_id = row["clip_id"]
        source = _source(row)
        if source["sha256"] is None:
            clips[clip_id] = {"status": "skipped", "reason": f"{source['path']}: file is gone"}
            log.warning("%s: skipped: %s", clip_id, clips[clip_id]["reason"])
            continue
        fp = {"source_sha256": source["sha256"], "parameters_sha256": parameters_sha256}
        if store.is_complete(clip_id, fp):
            clips[clip_id] = {"status": "cached"}
            continue
        try:
            arrays, extra = process(row)
        except (video.VideoError, faces.NoFaceError, SkipClip) as exc:
            # Every reason names the file; VideoError and forwarded detection reasons already do.
            reason = str(exc) if source["path"] in str(exc) else f"{source['path']}: {exc}"
            clips[clip_id] = {"status": "skipped", "reason": reason}
            log.warning("%s: skipped: %s", clip_id, reason)
            continue
        store.write_clip(clip_id, arrays, {
            **fp, "source": source, "subject": str(row["subject"]), "label": row["label"],
            "parameters": dict(parameters), **extra,
        })
        frames_done += int(extra.get("n_frames", 0))
        clips[clip_id] = {"status": "written"}
    store.close()
    seconds = time.perf_counter() - started
    summary = {
        "stage": stage, "store": str(store.path), "parameters_sha256": parameters_sha256,
        "clips": clips, "code": code_version(),
        "counts": {s: sum(c["status"] == s for c in clips.values()) for s in ("written", "cached", "skipped")},
        "frames_processed": frames_done, "seconds": round(seconds, 2),
        "frames_per_second": round(frames_done / seconds, 1) if frames_done else None,
    }
    write_text_atomic(summary_json, json.dumps(summary, indent=2, sort_keys=True))
    log.info("%s %s: %s in %.1f s", stage, store.path.name, summary["counts"], seconds)
    return summary


def detect_shard(config: Mapping[str, Any], dataset: str, shard: str, manifest_csv: str | Path,
                 summary_json: str | Path) -> dict[str, Any]:
    """Stage 1 for one shard: face tracks of every clip into ``detections/<shard>.zarr``."""
    parameters = dict(config["detection"])
    store = ShardStore(detections_path(config, dataset, shard),
                       attrs={"stage": "detections", "dataset": dataset, "shard": shard, "parameters": parameters},
                       store_config=config["store"])
    detector: faces.FaceDetector | None = None

    def process(row: pd.Series):
        nonlocal detector
        frames, fps = video.decode(row["path"])
        detector = detector or faces.FaceDetector(parameters, detection_device(config))
        track = detector.track(frames)
        return track_arrays(track), {"n_frames": len(frames), "fps": fps, "valid_fraction": track.valid_fraction}

    return _run_shard("detections", read_shard(manifest_csv, shard), store, parameters, process, summary_json)


def features_shard(config: Mapping[str, Any], dataset: str, preset: str, shard: str,
                   manifest_csv: str | Path, detections_json: str | Path, summary_json: str | Path) -> dict[str, Any]:
    """Stage 2 for one shard and preset: aligned faces, flow and dynamic images into the feature store.

    ``detections_json`` is stage 1's summary of the shard: clips it skipped are skipped here with its reason.
    """
    from .config import preset_config

    preset_cfg = preset_config(config, preset)
    detections = ShardStore(detections_path(config, dataset, shard), mode="r")
    # The detection parameters are part of this stage's fingerprint: new tracks mean new crops.
    parameters = {"preset": preset, **preset_cfg, "detection": detections.root.attrs.get("parameters")}
    store = ShardStore(features_path(config, dataset, preset, shard),
                       attrs={"stage": "features", "dataset": dataset, "shard": shard, "preset": preset,
                              "parameters": parameters},
                       store_config=config["store"])
    available = set(detections.clip_ids())
    detection_summary = json.loads(Path(detections_json).read_text())["clips"]

    def process(row: pd.Series):
        if row["clip_id"] not in available:
            reason = detection_summary.get(row["clip_id"], {}).get("reason", "not in the detections store")
            raise SkipClip(f"no face track: {reason}")
        track = detections.clip(row["clip_id"])
        # Read once: the feature store repeats the track, and alignment uses its landmarks and mask.
        track_specs = {name: ArraySpec(track[name][...], tuple(track[name].metadata.dimension_names),
                                       attrs=dict(track[name].attrs))
                       for name in ("boxes", "landmarks", "scores", "valid")}
        landmarks = track_specs["landmarks"].data
        frames, fps = video.decode(row["path"])
        if len(frames) != len(landmarks):
            raise SkipClip(f"decoded {len(frames)} frames but the face track has {len(landmarks)}: "
                           f"the video changed since detection; rerun the detections")
        if len(frames) < 2:
            raise SkipClip("a single frame has no motion")
        arrays = clip_features(frames, landmarks, track_specs["valid"].data, preset_cfg,
                               preset_cfg["window"]["length"])
        arrays.update(track_specs)
        return arrays, {"n_frames": len(frames), "fps": fps, "n_windows": len(arrays["window_start"].data),
                        "valid_fraction": track.attrs["valid_fraction"]}

    return _run_shard(f"features[{preset}]", read_shard(manifest_csv, shard), store, parameters, process,
                      summary_json)


def collect_summaries(summaries: list[Path], skipped_csv: Path, out_txt: Path) -> pd.DataFrame:
    """Gather shard summaries: every skipped clip with its stage and reason, and the store's inspection."""
    from .inspect_store import summarize

    rows, stores = [], []
    for path in summaries:
        summary = json.loads(Path(path).read_text())
        stores.append(Path(summary["store"]))
        rows += [{"clip_id": clip_id, "shard": Path(summary["store"]).stem, "stage": summary["stage"],
                  "reason": info["reason"]}
                 for clip_id, info in sorted(summary["clips"].items()) if info["status"] == "skipped"]
    skipped = pd.DataFrame(rows, columns=["clip_id", "shard", "stage", "reason"])
    skipped_csv.parent.mkdir(parents=True, exist_ok=True)
    skipped.to_csv(skipped_csv, index=False)
    text = "\n".join(summarize(store) for store in stores if store.exists())
    text += f"\nskipped clips: {len(skipped)} (see {skipped_csv})\n"
    write_text_atomic(out_txt, text)
    return skipped
