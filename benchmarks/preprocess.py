"""Preprocessing speed and landmark accuracy, measured side by side in one run on a 720x576 demo clip.

    .venv/bin/python benchmarks/preprocess.py [--repeats 3] [--threads 2] [--seconds 4]

Rows (frames per second, median over repeats; every row includes decoding the video):
  decode                      OpenCV decoding alone
  MTCNN every frame, full res the full cascade on each 720x576 frame (the accuracy reference)
  pipeline: detections        fer_pipeline's tracker (config.yaml's detection block), and the same with
                              keyframes at half resolution
  pipeline: decode -> Zarr    the whole path of one clip as the workflow's two jobs run it: decode, track,
                              write the face track; decode again, align (five-point, 112), Farneback flow,
                              windows, dynamic images, write the features
  ... 2 jobs in parallel      the same path in two processes at once, as the workflow runs two shard jobs
                              on a 2-core machine (aggregate frames/s)
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fer_pipeline import config as config_mod  # noqa: E402
from fer_pipeline import demo, faces, preprocess, video  # noqa: E402
from fer_pipeline.store import ShardStore  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--preset", default="ec112")
    args = parser.parse_args()

    import cv2
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    cfg = config_mod.load()
    detection, preset = cfg["detection"], cfg["presets"][args.preset]

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

        t_whole, _ = timed(lambda: whole_path(detector, path, cfg, args.preset, tmp), args.repeats)
        with ProcessPoolExecutor(2) as pool:
            jobs = [pool.submit(parallel_worker, path, cfg, args.preset, tmp / f"job{j}", args.threads,
                                args.repeats) for j in range(2)]
            per_job = [job.result() for job in jobs]
        # Both jobs time the same clip over the same repeats once warm: aggregate rate = 2 clips per median.
        t_parallel = max(per_job) / 2

    def error(landmarks):
        return float(np.nanmean(np.linalg.norm(landmarks - reference, axis=-1)))

    rows = [
        ("decode", t_decode, None),
        ("MTCNN every frame, full res", t_full, 0.0),
        (f"pipeline: detections, keyframes at half resolution", t_half, error(track_half.landmarks)),
        (f"pipeline: detections (every {detection['keyframe_interval']}th frame at x{detection['scale']}, "
         "interpolated, ONet check of every frame)", t_track, error(track.landmarks)),
        (f"pipeline: decode -> Zarr ({args.preset})", t_whole, error(track.landmarks)),
        (f"pipeline: decode -> Zarr ({args.preset}), 2 jobs in parallel", t_parallel, error(track.landmarks)),
    ]
    print(f"clip: {n} frames of 720x576, {args.threads} threads, median of {args.repeats} runs, "
          f"torch {torch.__version__}, OpenCV {cv2.__version__}")
    print("| path | frames/s | vs full-res MTCNN | mean landmark error (px) |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds, err in rows:
        err_text = "-" if err is None else f"{err:.2f}"
        print(f"| {name} | {n / seconds:.1f} | {t_full / seconds:.1f}x | {err_text} |")


def whole_path(detector: faces.FaceDetector, path: Path, cfg: dict, preset_name: str, out: Path) -> None:
    """One clip from video to both stores, with the functions the workflow's two jobs call (each decodes)."""
    preset = cfg["presets"][preset_name]
    clip, _ = video.decode(path)
    track = _track(detector, clip, cfg["detection"])
    attrs = {"n_frames": len(clip)}
    with ShardStore(out / "detections.zarr", store_config=cfg["store"]) as store:
        store.write_clip("clip", preprocess.track_arrays(track), attrs)
    clip, _ = video.decode(path)
    arrays = preprocess.clip_features(clip, track.landmarks, track.valid, preset, preset["window"]["length"])
    with ShardStore(out / "features.zarr", store_config=cfg["store"]) as store:
        store.write_clip("clip", arrays, attrs)


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
