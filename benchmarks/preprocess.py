"""Preprocessing speed and landmark accuracy, measured side by side in one run on a 720x576 demo clip.

    .venv/bin/python benchmarks/preprocess.py [--repeats 3] [--threads 2] [--seconds 4]

Rows (frames per second, median over repeats; every row includes decoding the video):
  decode                      OpenCV decoding alone
  MTCNN every frame, full res the full cascade on each 720x576 frame (the accuracy reference)
  pipeline: detections        fer_pipeline's tracker (keyframes at reduced scale + ONet on every frame)
  pipeline: decode -> Zarr    the whole path of one clip: decode, track, write the face track, align
                              (five-point, 112), Farneback flow, windows, dynamic images, write the features
Landmark error: mean distance (pixels of the 720x576 frame) between each row's landmarks and the full cascade's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
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
    parser.add_argument("--threads", type=int, default=2)
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
        no_refine = {**detection, "refine_landmarks": False}
        t_norefine, track_norefine = timed(lambda: tracker(no_refine), args.repeats)

        counter = iter(range(10_000))

        def whole_path():
            i = next(counter)
            clip, fps = video.decode(path)
            t = _track(detector, clip, detection)
            ShardStore(tmp / f"det{i}.zarr").write_clip("clip", preprocess.track_arrays(t), {"n_frames": n})
            arrays = preprocess.clip_features(clip, t.landmarks, preset, preset["window"]["length"])
            ShardStore(tmp / f"feat{i}.zarr", store_config=cfg["store"]).write_clip("clip", arrays, {"n_frames": n})

        t_whole, _ = timed(whole_path, args.repeats)

    def error(landmarks):
        return float(np.nanmean(np.linalg.norm(landmarks - reference, axis=-1)))

    rows = [
        ("decode", t_decode, None),
        ("MTCNN every frame, full res", t_full, 0.0),
        (f"tracker without ONet (every {detection['keyframe_interval']}th frame at x{detection['scale']}, "
         "interpolated)", t_norefine, error(track_norefine.landmarks)),
        ("pipeline: detections (tracker + ONet every frame)", t_track, error(track.landmarks)),
        (f"pipeline: decode -> Zarr ({args.preset})", t_whole, error(track.landmarks)),
    ]
    print(f"clip: {n} frames of 720x576, {args.threads} threads, median of {args.repeats} runs, "
          f"torch {torch.__version__}, OpenCV {cv2.__version__}")
    print("| path | frames/s | vs full-res MTCNN | mean landmark error (px) |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds, err in rows:
        err_text = "-" if err is None else f"{err:.2f}"
        print(f"| {name} | {n / seconds:.1f} | {t_full / seconds:.1f}x | {err_text} |")


def _track(detector: faces.FaceDetector, clip: np.ndarray, config: dict) -> faces.Detections:
    """The pipeline's tracker under a given detection config (the same MTCNN weights)."""
    detector.config = config
    return detector.track(clip)


if __name__ == "__main__":
    main()
