"""Preprocessing stages, one shard (a subject, or a fixed group of clips) per call.

Stage 1, :func:`detect_shard`: decode -> MTCNN track (fer_pipeline.faces) -> ``detections/<shard>.zarr``.
Detection does not depend on the crop preset, so it runs once per clip.

Stage 2, :func:`features_shard`: decode -> align with a preset's mode and size -> Farneback flow ->
windows -> dynamic images of RGB and of flow -> ``features/<preset>/<shard>.zarr``.

Both stages resume: a clip already in the store at the fingerprint the manifest and config imply now
(fer_pipeline.lineage: the video's bytes, the detection parameters, the preset) is kept; anything else is
(re)computed, and clips of the store that the shard no longer holds, or that were not made again, are
removed. Clips that cannot be used (unreadable or truncated video, too little face) are listed with their
reason in the stage's JSON summary, which is also the job's declared output. An unexpected error in one clip
is recorded with its file and exception; the shard's other clips still finish, and then the job fails
naming every failed clip (what finished stays in the store: a rerun resumes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import faces, lineage, motion, paths, video
from .config import ConfigError, detection_device, preset_config
from .datasets import read_manifest
from .files import write_text_atomic
from .provenance import code_version
from .store import ArraySpec, ShardStore, quantise

log = logging.getLogger(__name__)


class SkipClip(RuntimeError):
    """A clip that a stage cannot use; the reason is recorded in the stage's summary."""


class StageFailed(RuntimeError):
    """Clips of a shard failed with unexpected errors; the message names each file and its error."""


def read_shard(manifest_csv: str | Path, shard: str) -> pd.DataFrame:
    manifest = read_manifest(Path(manifest_csv))
    rows = manifest[manifest["shard"] == shard]
    if rows.empty:
        raise ValueError(f"{manifest_csv}: no clip belongs to shard '{shard}'")
    return rows


def _source(row: pd.Series) -> dict[str, Any]:
    """The clip's file as it is now; a file that changed since the manifest was made is not used."""
    path = Path(row["path"])
    if not path.exists():
        raise SkipClip(f"{path}: file is gone")
    sha256 = video.sha256(path)
    if sha256 != row["sha256"]:
        raise SkipClip(f"{path}: the file changed since the manifest was made (sha256 {sha256[:12]}, the manifest "
                       f"says {row['sha256'][:12]}): rebuild the manifest")
    files = video.frame_files(path) if path.is_dir() else [path]
    return {"path": str(path), "bytes": sum(f.stat().st_size for f in files), "sha256": sha256}


def read_video(path: str | Path, media: Mapping[str, Any], fps: float | None = None,
               sample_fps: float | None = None) -> tuple[video.Decoded, dict[str, Any]]:
    """Decode a clip (a video, a folder of frames or a still; ``fps``: the manifest's rate, for media that
    carry none) and check it against its container: a truncated file is skipped or kept as
    ``media.on_truncated`` says; ``sample_fps`` resamples it in time (fer_pipeline.video.resample_indices).
    Returns the decoded clip and what to record about it on the clip."""
    decoded = video.read(path, fps=fps, sample_fps=sample_fps)
    truncated = decoded.is_truncated(media["frame_count_tolerance"])
    if truncated and media["on_truncated"] == "skip":
        raise SkipClip(decoded.truncation_reason(path) + "; media.on_truncated: keep would use the frames that decode")
    record = {"container_frames": decoded.container_frames, "decoded_frames": decoded.decoded_frames,
              "truncated": truncated, "sample_fps": sample_fps}
    warnings = [decoded.truncation_reason(path) + " (kept: media.on_truncated is keep)"] if truncated else []
    return decoded, {"media": record, "warnings": warnings}


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


# Quantisation steps of the stored real-valued fields (fer_pipeline.store.quantise; docs/performance.md
# measures their error against Farneback's own): flow in 1/32 px, dynamic images of RGB / 255 in 1/64, of flow
# in 1/8 px. Each is far below the noise its field carries from its input.
FLOW_STEP = 1 / 32
DYN_RGB_STEP = 1 / 64
DYN_FLOW_STEP = 1 / 8


def clip_features(frames: np.ndarray, landmarks: np.ndarray, valid: np.ndarray, preset: Mapping[str, Any],
                  frames_per_chunk: int | None = None) -> dict[str, ArraySpec]:
    """Aligned faces, flow, windows and dynamic images of one clip, as store arrays; the aligned faces only
    for a preset without ``flow`` (STC-NLSTM's ``stc64`` reads nothing else).

    ``rgb`` and ``flow`` are chunked by ``frames_per_chunk`` frames, by default
    :func:`~fer_pipeline.store.window_chunk` of the preset's window: its stride (8 of 16 frames), so that a
    window is two whole chunks; 16 frames for a preset without windows.

    Flow is stored as int16 in steps of :data:`FLOW_STEP` px, the two dynamic images of a window as the five
    channels of one int16 array ``dyn`` (RGB's three, then flow's two, each with its step in ``scale``), the
    window starts inline (fer_pipeline.store: :func:`~fer_pipeline.store.read_field` gives ``flow``,
    ``dyn_rgb``, ``dyn_flow`` and ``window_start`` back as floats and integers)."""
    from .store import window_chunk

    frames_per_chunk = frames_per_chunk or window_chunk(preset.get("window"))
    reference = faces.alignment_landmarks(landmarks, valid, preset["alignment_reference"])
    aligned = faces.align(frames, reference, preset["alignment"], preset["size"])
    rgb = ArraySpec(aligned, ("frame", "y", "x", "channel"), frames_per_chunk, codec="frames")
    if preset["flow"] is None:
        return {"rgb": rgb}
    flow = motion.farneback(aligned, preset["flow"])
    length, stride = preset["window"]["length"], preset["window"]["stride"]
    starts = motion.window_starts(len(aligned), length, stride)
    dyn_rgb = motion.dynamic_images(aligned.astype(np.float32) / 255.0, starts, length)
    dyn_flow = motion.dynamic_images(flow, starts, length - 1)
    flow_q, flow_scale = quantise(flow, FLOW_STEP)
    dyn_q, dyn_scale = quantise(np.concatenate([dyn_rgb, dyn_flow], axis=-1), [DYN_RGB_STEP] * 3 + [DYN_FLOW_STEP] * 2)
    return {
        "rgb": rgb,
        "flow": ArraySpec(flow_q, ("pair", "y", "x", "uv"), frames_per_chunk, codec="field", attrs={
            "units": "pixels per frame", "pair_t": "frame t -> frame t+1", "scale": flow_scale,
            "quantised": "value = stored integer * scale (fer_pipeline.store.read_field dequantises)"}),
        "window_start": ArraySpec(starts, ("window",), attrs={"length": length, "stride": stride}, inline=True),
        "dyn": ArraySpec(dyn_q, ("window", "y", "x", "dyn_channel"), 1, codec="field", attrs={
            "channels": ["dyn_rgb r", "dyn_rgb g", "dyn_rgb b", "dyn_flow u", "dyn_flow v"],
            "fields": {"dyn_rgb": [0, 3], "dyn_flow": [3, 5]},
            "input": {"dyn_rgb": "RGB / 255", "dyn_flow": "flow in pixels"}, "method": "approximate rank pooling",
            "scale": dyn_scale,
            "quantised": "value = stored integer * scale[channel] (fer_pipeline.store.read_field dequantises)"}),
    }


def clip_record(fingerprint: Mapping[str, str], row: pd.Series, source: Mapping[str, Any],
                extra: Mapping[str, Any]) -> dict[str, Any]:
    """What a stage records on a clip it writes: the fingerprints it was made from, the manifest's subject
    and label, the source file, the warnings and what the stage adds (``extra``)."""
    return {**fingerprint, "subject": str(row["subject"]), "label": row["label"], "source": dict(source),
            "warnings": list(extra.get("warnings", [])), **{k: v for k, v in extra.items() if k != "warnings"}}


def _run_shard(stage: str, rows: pd.DataFrame, store: ShardStore, fingerprints: Mapping[str, Mapping[str, str]],
               process, summary_json: str | Path) -> dict[str, Any]:
    """The loop both stages share: skip what is current, process the rest, record every outcome, remove
    what the shard no longer holds. ``fingerprints[clip_id]`` is what the clip's arrays must be made from."""
    clips: dict[str, Any] = {}
    started, frames_done = time.perf_counter(), 0
    with store:
        for _, row in tqdm(list(rows.iterrows()), desc=f"{stage} {store.path.name}", unit="clip"):
            clip_id, fp = row["clip_id"], fingerprints[row["clip_id"]]
            labels = {"subject": str(row["subject"]), "label": row["label"]}
            held, problems = store.clip_state(clip_id)
            if not problems and all(held.get(k) == v for k, v in fp.items()):
                clips[clip_id] = {"status": "cached"}
                changed = {k: v for k, v in labels.items() if held.get(k) != v}
                if changed:  # relabelled in the manifest: the arrays stand, the record follows the manifest
                    store.update_clip_attrs(clip_id, changed)
                    clips[clip_id]["updated"] = sorted(changed)
                clips[clip_id]["warnings"] = held.get("warnings", [])
                continue
            try:
                source = _source(row)
                arrays, extra = process(row, source)
            except (video.VideoError, faces.NoFaceError, SkipClip) as exc:
                # Every reason names the file; VideoError and forwarded detection reasons already do.
                reason = str(exc) if row["path"] in str(exc) else f"{row['path']}: {exc}"
                clips[clip_id] = {"status": "skipped", "reason": reason}
                log.warning("%s: skipped: %s", clip_id, reason)
                continue
            except Exception as exc:  # noqa: BLE001 - one clip's bug must not cost the shard's other clips
                reason = f"{row['path']}: {type(exc).__name__}: {exc}"
                clips[clip_id] = {"status": "failed", "reason": reason}
                log.exception("%s: failed: %s", clip_id, reason)
                continue
            warnings = extra.get("warnings", [])
            store.write_clip(clip_id, arrays, clip_record(fp, row, source, extra))
            for warning in warnings:
                log.warning("%s: %s", clip_id, warning)
            frames_done += int(extra.get("n_frames", 0))
            clips[clip_id] = {"status": "written", "warnings": warnings}
        # Whatever else the store holds is stale: clips no longer in this shard, or not made again now.
        current = {c for c, info in clips.items() if info["status"] in ("written", "cached")}
        removed = [c for c in store.stored_clip_ids() if c not in current]
        for clip_id in removed:
            store.remove_clip(clip_id)
    seconds = time.perf_counter() - started
    failed = {c: info["reason"] for c, info in clips.items() if info["status"] == "failed"}
    if failed:
        raise StageFailed(f"{stage} {store.path}: {len(failed)} of {len(clips)} clips failed (the others are stored; "
                          f"a rerun resumes):\n" + "\n".join(f"  {c}: {r}" for c, r in sorted(failed.items())))
    summary = {
        "stage": stage, "store": str(store.path), "clips": clips, "code": code_version(),
        "counts": {s: sum(c["status"] == s for c in clips.values()) for s in ("written", "cached", "skipped")},
        "removed_stale": removed,
        "frames_processed": frames_done, "seconds": round(seconds, 2),
        "frames_per_second": round(frames_done / seconds, 1) if frames_done else None,
    }
    write_text_atomic(summary_json, json.dumps(summary, indent=2, sort_keys=True))
    log.info("%s %s: %s in %.1f s%s", stage, store.path.name, summary["counts"], seconds,
             f", {len(removed)} stale clips removed" if removed else "")
    return summary


def video_presets(config: Mapping[str, Any], dataset: str) -> list[str]:
    """The dataset's presets that align faces on landmarks (a video's; ``box`` presets crop stills)."""
    return [p for p in config["datasets"][dataset].get("presets", [])
            if preset_config(config, p)["alignment"] != "box"]


def features_store(config: Mapping[str, Any], dataset: str, preset: str, shard: str) -> ShardStore:
    """The shard's feature store of ``preset``, with what it is made from as the store's attributes."""
    return ShardStore(paths.features_store(config["results"], dataset, preset, shard),
                      attrs={"stage": "features", "dataset": dataset, "shard": shard, "preset": preset,
                             "parameters": preset_config(config, preset),
                             "detection": lineage.detection_parameters(config, dataset)},
                      store_config=config["store"])


def features_fingerprints(config: Mapping[str, Any], rows: pd.DataFrame, preset: str) -> dict[str, dict[str, str]]:
    """Per clip, what its features under ``preset`` must be made from now (fer_pipeline.lineage)."""
    expected = lineage.expected(config, rows, preset).set_index("clip_id")
    return {c: {"source_sha256": e.source_sha256, "track_sha256": e.track_sha256,
                "features_sha256": e.features_sha256} for c, e in expected.iterrows()}


def clip_feature_arrays(row: pd.Series, decoded: video.Decoded, extra: Mapping[str, Any],
                        track_specs: Mapping[str, ArraySpec], valid_fraction: float, preset: str,
                        preset_cfg: Mapping[str, Any]) -> tuple[dict[str, ArraySpec], dict[str, Any]]:
    """One clip's feature arrays under ``preset`` from its decoded frames and its face track, and what to
    record on it (both stages call it: the detections job for every preset of the dataset while the frames
    are decoded, the features job for what is still missing)."""
    landmarks = track_specs["landmarks"].data
    frames = decoded.frames
    if len(frames) != len(landmarks):
        raise SkipClip(f"decoded {len(frames)} frames but the face track has {len(landmarks)}: "
                       f"the video changed since detection; rerun the detections")
    motion_ = preset_cfg["flow"] is not None
    if motion_ and len(frames) < 2:
        raise SkipClip("a single frame has no motion")
    # A window's frames (16 for a preset without windows); clip_features chunks by the window stride.
    length = preset_cfg["window"]["length"] if motion_ else 16
    arrays = clip_features(frames, landmarks, track_specs["valid"].data, preset_cfg)
    # The feature clip repeats the track inline (in its zarr.json: no files of its own).
    arrays.update({name: dataclasses.replace(spec, inline=True) for name, spec in track_specs.items()})
    warnings = list(extra.get("warnings", []))
    padded = max(0, length - len(frames)) if motion_ else 0
    if padded:
        warnings.append(f"{row['path']}: {len(frames)} frames, shorter than one {length}-frame window: "
                        f"its window repeats the last frame {padded} times")
    n_windows = len(arrays["window_start"].data) if motion_ else 0
    return arrays, {**extra, "warnings": warnings, "n_frames": len(frames), "fps": decoded.fps,
                    "n_windows": n_windows, "padded_frames": padded, "valid_fraction": valid_fraction,
                    "parameters": {"preset": preset, **preset_cfg}}


def detect_shard(config: Mapping[str, Any], dataset: str, shard: str, manifest_csv: str | Path,
                 summary_json: str | Path) -> dict[str, Any]:
    """Stage 1 for one shard: face tracks of every clip into ``detections/<shard>.zarr`` (a stills dataset's
    face boxes into its stills store: fer_pipeline.stills).

    A video is decoded once: while its frames are in memory, the clip's features under every preset of the
    dataset are computed from the new track and written to their stores too (decoding is a large part of
    each stage's cost). The features stage then finds them current and computes only what this job did not
    make (a preset added or changed since, a clip whose features failed here: its reason is recorded there).
    """
    if lineage.is_stills(config, dataset):
        from . import stills

        return stills.detect_shard(config, dataset, shard, manifest_csv, summary_json)
    detection = lineage.detection_parameters(config, dataset)
    sample_fps = config["datasets"][dataset].get("sample_fps")
    rows = read_shard(manifest_csv, shard)
    expected = lineage.expected(config, rows).set_index("clip_id")
    fingerprints = {c: {"source_sha256": e.source_sha256, "track_sha256": e.track_sha256}
                    for c, e in expected.iterrows()}
    store = ShardStore(paths.detections_store(config["results"], dataset, shard),
                       attrs={"stage": "detections", "dataset": dataset, "shard": shard, "parameters": detection},
                       store_config=config["store"])
    presets = {p: (features_store(config, dataset, p, shard), preset_config(config, p),
                   features_fingerprints(config, rows, p)) for p in video_presets(config, dataset)}
    detector: faces.FaceDetector | None = None

    def process(row: pd.Series, source: Mapping[str, Any]):
        nonlocal detector
        decoded, extra = read_video(row["path"], config["media"], row["fps"], sample_fps)
        detector = detector or faces.FaceDetector(config["detection"], detection_device(config))
        track = detector.track(decoded.frames)
        arrays = track_arrays(track)
        made = [p for p, (features, cfg, fps) in presets.items()
                if write_features(features, row, source, decoded, extra, arrays, track.valid_fraction, p, cfg, fps)]
        return arrays, {"n_frames": len(decoded.frames), "fps": decoded.fps, "valid_fraction": track.valid_fraction,
                        "parameters": detection, "features_written": made, **extra}

    with contextlib.ExitStack() as stack:
        for features, _, _ in presets.values():
            stack.enter_context(features)
        return _run_shard("detections", rows, store, fingerprints, process, summary_json)


def write_features(store: ShardStore, row: pd.Series, source: Mapping[str, Any], decoded: video.Decoded,
                   extra: Mapping[str, Any], track_specs: Mapping[str, ArraySpec], valid_fraction: float,
                   preset: str, preset_cfg: Mapping[str, Any], fingerprints: Mapping[str, Mapping[str, str]]) -> bool:
    """The detections job's features of one clip under ``preset``, unless the store holds them current
    already; False when they were not written (current, or not computable: the features job then records
    why)."""
    fingerprint = fingerprints[row["clip_id"]]
    if store.is_complete(row["clip_id"], fingerprint):
        return False
    try:
        arrays, record = clip_feature_arrays(row, decoded, extra, track_specs, valid_fraction, preset, preset_cfg)
    except Exception as exc:  # noqa: BLE001 - the features stage makes it again and records the reason
        log.info("%s: features[%s] left to the features stage: %s", row["clip_id"], preset, exc)
        return False
    store.write_clip(row["clip_id"], arrays, clip_record(fingerprint, row, source, record))
    return True


def features_shard(config: Mapping[str, Any], dataset: str, preset: str, shard: str,
                   manifest_csv: str | Path, detections_json: str | Path, summary_json: str | Path) -> dict[str, Any]:
    """Stage 2 for one shard and preset: aligned faces, flow and dynamic images into the feature store
    (what the detections job did not already write there, :func:`detect_shard`).

    Each clip reads the face track at the fingerprint the current detection parameters imply, never another;
    ``detections_json`` is stage 1's summary of the shard: clips it skipped are skipped here with its reason.
    A stills dataset's shard goes to fer_pipeline.stills (face crops, arrays of many images per store).
    """
    if lineage.is_stills(config, dataset):
        from . import stills

        return stills.features_shard(config, dataset, preset, shard, manifest_csv, detections_json, summary_json)
    preset_cfg = preset_config(config, preset)
    if preset_cfg["alignment"] == "box":
        raise ConfigError(f"presets.{preset} crops a still's face box (alignment: box), but dataset '{dataset}' holds "
                          f"videos or frame folders: give datasets.{dataset}.presets a preset that aligns on landmarks")
    rows = read_shard(manifest_csv, shard)
    track_fingerprints = lineage.expected(config, rows).set_index("clip_id")["track_sha256"]
    detections = ShardStore(paths.detections_store(config["results"], dataset, shard), mode="r")
    detection_summary = json.loads(Path(detections_json).read_text())["clips"]

    def process(row: pd.Series, source: Mapping[str, Any]):
        clip_id = row["clip_id"]
        if not detections.is_complete(clip_id, {"track_sha256": track_fingerprints[clip_id]}):
            reason = detection_summary.get(clip_id, {}).get("reason", "no face track at the current detection "
                                                                      "parameters: rerun the detections")
            raise SkipClip(f"no face track: {reason}")
        track = detections.clip(clip_id)
        # Read once: the feature store repeats the track, and alignment uses its landmarks and mask.
        track_specs = {name: ArraySpec(track[name][...], tuple(track[name].metadata.dimension_names),
                                       attrs=dict(track[name].attrs))
                       for name in ("boxes", "landmarks", "scores", "valid")}
        decoded, extra = read_video(row["path"], config["media"], row["fps"],
                                    config["datasets"][dataset].get("sample_fps"))
        return clip_feature_arrays(row, decoded, extra, track_specs, track.attrs["valid_fraction"], preset, preset_cfg)

    return _run_shard(f"features[{preset}]", rows, features_store(config, dataset, preset, shard),
                      features_fingerprints(config, rows, preset), process, summary_json)


def collect_summaries(summaries: list[Path], skipped_csv: Path, out_txt: Path) -> pd.DataFrame:
    """Gather shard summaries: every skipped clip with its stage and reason, the clips kept with a warning
    (a truncated video kept, a clip shorter than a window), and the store's inspection."""
    from .inspect_store import summarize

    rows, stores, warnings = [], [], []
    for path in summaries:
        summary = json.loads(Path(path).read_text())
        stores.append(Path(summary["store"]))
        for clip_id, info in sorted(summary["clips"].items()):
            if info["status"] == "skipped":
                rows.append({"clip_id": clip_id, "shard": Path(summary["store"]).stem, "stage": summary["stage"],
                             "reason": info["reason"]})
            warnings += [f"  {clip_id}: {w}" for w in info.get("warnings", [])]
    skipped = pd.DataFrame(rows, columns=["clip_id", "shard", "stage", "reason"])
    skipped_csv.parent.mkdir(parents=True, exist_ok=True)
    skipped.to_csv(skipped_csv, index=False)
    text = "\n".join(summarize(store) for store in stores if store.exists())
    text += f"\nskipped clips: {len(skipped)} (see {skipped_csv})\n"
    text += f"clips kept with a warning: {len(warnings)}\n" + "".join(w + "\n" for w in warnings)
    write_text_atomic(out_txt, text)
    return skipped
