"""Preprocessing speed and landmark accuracy, measured side by side in one run on a 720x576 demo clip.

    .venv/bin/python benchmarks/preprocess.py [--repeats 3] [--threads 1] [--seconds 4]

Rows (frames per second, median over repeats; every row includes decoding the video):
  decode                      OpenCV decoding alone
  MTCNN every frame, full res the full cascade on each 720x576 frame (the accuracy reference); smoothed as the
                              pipeline smooths its track: the reference's own jitter, the floor of any smooth track
  pipeline: detections        fer_pipeline's tracker (config.yaml's detection block); the same with keyframes
                              at half resolution, and with keyframes searched around the track
                              (detection.search_region)
  pipeline: decode -> Zarr    the whole path of one clip as the workflow's jobs run it: the detections job
                              decodes once, tracks, writes the face track and the preset's features (align,
                              Farneback flow, windows, dynamic images); the features job then finds them current
  ... decoded in each stage   the same work with a second decode in the features job (the layout before the
                              detections job wrote the features): the baseline of the row above
  ... 2 jobs in parallel      the whole path in two processes at once, as the workflow runs two shard jobs on
                              a 2-core machine (aggregate frames/s)
Each process uses --threads threads (1, as the workflow's jobs do: two 1-thread jobs beat one 2-thread job).
Landmark error: mean distance (pixels of the 720x576 frame) between each row's landmarks and the full cascade's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fer_pipeline import config as config_mod  # noqa: E402
from fer_pipeline import demo, faces, preprocess, video  # noqa: E402
from fer_pipeline.store import ShardStore  # noqa: E402

SEARCH_REGION = {"margin": 0.5, "min_face": 0.5}  # the search_region row's setting


def make_clip(folder: Path, seconds: float, cfg: dict) -> Path:
    """One 720x576 demo clip (happiness: mouth, cheeks and lids move) written as the demo writes it."""
    demo_cfg = {**cfg["demo"], "subjects": 1, "clips_per_class": 1, "classes": ["happiness", "sadness"],
                "duration_s": [seconds, seconds], "width": 720, "height": 576}
    table = demo.generate(folder / "demo", demo_cfg, seed=cfg["seed"], progress=False)
    return Path(table[table["label"] == "happiness"]["path"].iloc[0])


def timed(function, repeats: int):
    """Median wall time of ``function`` over ``repeats`` calls, and its last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--preset", default="ec112")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> tuple[str, list[tuple[str, float, float | None]], int]:
    """The rows (name, seconds for the clip, mean landmark error), a line saying what was measured, and the
    clip's frame count."""
    import cv2
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    cfg = config_mod.load()
    detection = cfg["detection"]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = make_clip(tmp, args.seconds, cfg)
        frames, _ = video.decode(path)
        n = len(frames)
        detector = faces.FaceDetector(detection, device=cfg["device"])
        detector.track(frames[:10])  # warm-up: first calls allocate

        t_decode, _ = timed(lambda: video.decode(path), args.repeats)

        def full_cascade():
            clip, _ = video.decode(path)
            return detector.detect_frames(clip, scale=1.0)

        t_full, full = timed(full_cascade, args.repeats)
        reference = np.stack([points[0] if len(points) else np.full((5, 2), np.nan) for _, points in full])

        def tracker(config=detection):
            clip, _ = video.decode(path)
            return _track(detector, clip, config)

        t_track, track = timed(tracker, args.repeats)
        half = {**detection, "scale": 0.5, "min_face_size": detection["min_face_size"] // 2}
        t_half, track_half = timed(lambda: tracker(half), args.repeats)
        region = {**detection, "search_region": SEARCH_REGION}
        t_region, track_region = timed(lambda: tracker(region), args.repeats)

        t_whole, _ = timed(lambda: whole_path(detector, path, cfg, args.preset, tmp), args.repeats)
        t_twice, _ = timed(lambda: whole_path(detector, path, cfg, args.preset, tmp, decodes=2), args.repeats)
        with ProcessPoolExecutor(2) as pool:
            jobs = [pool.submit(parallel_worker, path, cfg, args.preset, tmp / f"job{j}", args.threads,
                                args.repeats) for j in range(2)]
            per_job = [job.result() for job in jobs]
        # Both jobs time the same clip over the same repeats once warm: aggregate rate = 2 clips per median.
        t_parallel = max(per_job) / 2

    def error(landmarks):
        return float(np.nanmean(np.linalg.norm(landmarks - reference, axis=-1)))

    interval = detection["keyframe_interval"]
    rows = [
        ("decode", t_decode, None),
        ("MTCNN every frame, full res", t_full, 0.0),
        # The reference's own frame-to-frame jitter: no smooth track comes closer to it than this.
        (f"MTCNN every frame, smoothed over {detection['smoothing_frames']} frames as the pipeline smooths", t_full,
         error(faces.smooth(reference.reshape(n, -1), detection["smoothing_frames"]).reshape(n, 5, 2))),
        ("pipeline: detections, keyframes at half resolution", t_half, error(track_half.landmarks)),
        (f"pipeline: detections, keyframes searched around the track (search_region {SEARCH_REGION})", t_region,
         error(track_region.landmarks)),
        (f"pipeline: detections (every {interval}th frame at x{detection['scale']}, interpolated, ONet check of "
         "every frame)", t_track, error(track.landmarks)),
        (f"pipeline: decode -> Zarr ({args.preset}), decoded in each stage (before)", t_twice, error(track.landmarks)),
        (f"pipeline: decode -> Zarr ({args.preset}), decoded once", t_whole, error(track.landmarks)),
        (f"pipeline: decode -> Zarr ({args.preset}), 2 jobs in parallel", t_parallel, error(track.landmarks)),
    ]
    line = (f"clip: {n} frames of 720x576, {args.threads} threads, median of {args.repeats} runs, "
            f"torch {torch.__version__}, OpenCV {cv2.__version__}")
    return line, rows, n


def main() -> None:
    args = arguments()
    line, rows, n = measure(args)
    t_full = rows[1][1]
    print(line)
    print("| path | frames/s | vs full-res MTCNN | mean landmark error (px) |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds, err in rows:
        err_text = "-" if err is None else f"{err:.2f}"
        print(f"| {name} | {n / seconds:.1f} | {t_full / seconds:.1f}x | {err_text} |")


def whole_path(detector: faces.FaceDetector, path: Path, cfg: dict, preset_name: str, out: Path,
               decodes: int = 1) -> None:
    """One clip from video to both stores with the functions the workflow's jobs call: decode, track, write
    the track and the features (``decodes=2``: decoded again for the features, as a separate stage would)."""
    preset = cfg["presets"][preset_name]
    decoded = video.read(path)
    track = _track(detector, decoded.frames, cfg["detection"])
    row = pd.Series({"path": str(path), "clip_id": "clip"})
    track_specs = preprocess.track_arrays(track)
    with ShardStore(out / "detections.zarr", store_config=cfg["store"]) as store:
        store.write_clip("clip", track_specs, {"n_frames": len(decoded.frames)})
    if decodes == 2:
        decoded = video.read(path)
    arrays, record = preprocess.clip_feature_arrays(row, decoded, {}, track_specs, track.valid_fraction,
                                                    preset_name, preset)
    with ShardStore(out / "features.zarr", store_config=cfg["store"]) as store:
        store.write_clip("clip", arrays, record)


def parallel_worker(path: Path, cfg: dict, preset_name: str, out: Path, threads: int, repeats: int) -> float:
    """A separate process (like a shard job): warm up, then the median time of the whole path."""
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    detector = faces.FaceDetector(cfg["detection"], device=cfg["device"])
    whole_path(detector, path, cfg, preset_name, out)
    seconds, _ = timed(lambda: whole_path(detector, path, cfg, preset_name, out), repeats)
    return seconds


def _track(detector: faces.FaceDetector, clip: np.ndarray, config: dict) -> faces.Detections:
    """The pipeline's tracker under a given detection config (the same MTCNN weights)."""
    detector.config = config
    return detector.track(clip)


if __name__ == "__main__":
    main()
