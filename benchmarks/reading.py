"""Training windows per second: read from the feature store, against computing them again from the video.

    .venv/bin/python benchmarks/reading.py [--store results/demo/features/ec112] [--videos results/demo/videos]
                                           [--windows 480] [--recompute 24] [--h5 FILE]

Rows, measured side by side in one run on the same random windows (all four fields: 16 aligned frames, 15
flow fields, both dynamic images, at the store's size, 112 for ec112), as a study's DataLoader gets them
(batches of --batch-size, torch tensors as fer_pipeline.windows.WindowDataset makes them):

  recompute from the video  per window, with the package's own functions: decode the video up to the
                            window's last frame (fer_pipeline.video.read), track the face on the window's
                            frames (faces.FaceDetector.track: MTCNN on keyframes, ONet on every frame), align,
                            Farneback flow, dynamic images (preprocess.clip_features); one process, 1 thread.
                            This is the cheapest honest recomputation: tracking only the window's 16 frames
                            and fitting its alignment on them, where the stage tracks the whole clip.
  Zarr store                WindowDataset without cache, through a DataLoader with 1 and with 2 workers
                            (each worker 1 thread: the workflow's training jobs share the cores the same way)
  HDF5 export               the same windows from the store exported by fer-pipeline export (gzip --format hdf5 4 +
                            shuffle; exported here into a temporary folder unless --h5 names a file), read
                            with h5py by a Dataset that mirrors WindowDataset (its items are checked equal)
  Zarr, dynamic images only the two dynamic images of each window, 1 worker

Times include the DataLoader's start-up (forking its workers) and collation; the page cache is warm (the
export just read the whole store). Windows/s on a machine shared with other jobs vary: rerun to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset, Subset  # noqa: E402

from fer_pipeline import config as config_mod  # noqa: E402
from fer_pipeline import faces, preprocess, video  # noqa: E402
from fer_pipeline.motion import window_indices  # noqa: E402
from fer_pipeline.store import dequantise, shard_stores  # noqa: E402
from fer_pipeline.windows import FIELDS, WindowDataset  # noqa: E402


def store_clips(folder: Path) -> tuple[pd.DataFrame, dict]:
    """The complete clips of every shard store in ``folder``, as the rows index_clips gives, and the preset
    parameters the store was made with."""
    rows, parameters = [], None
    for store in shard_stores(folder):
        parameters = parameters or dict(store.root.attrs)["parameters"]
        for clip_id in store.clip_ids():
            attrs = store.clip_attrs(clip_id)
            rows.append({"clip_id": clip_id, "shard": store.path.stem, "store": str(store.path),
                         "subject": str(attrs["subject"]), "label": attrs["label"], "n_frames": int(attrs["n_frames"]),
                         "n_windows": int(attrs["n_windows"]), "source": attrs["source"]["path"]})
    return pd.DataFrame(rows), parameters


def tensors(rgb: np.ndarray, flow: np.ndarray, dyn_rgb: np.ndarray, dyn_flow: np.ndarray) -> dict[str, torch.Tensor]:
    """Window arrays as WindowDataset.__getitem__ makes them."""
    return {"rgb": torch.from_numpy(np.ascontiguousarray(rgb, np.float32)).permute(0, 3, 1, 2) / 255.0,
            "flow": torch.from_numpy(flow.astype(np.float32)).permute(0, 3, 1, 2),
            "dyn_rgb": torch.from_numpy(dyn_rgb.astype(np.float32)).permute(2, 0, 1),
            "dyn_flow": torch.from_numpy(dyn_flow.astype(np.float32)).permute(2, 0, 1)}


class Hdf5Windows(Dataset):
    """The windows of ``clips`` read from an export file, --format hdf5 items as WindowDataset's (all four fields).
    The file is opened lazily in each worker process, never inherited open."""

    def __init__(self, h5_path: Path, clips: pd.DataFrame, classes: list[str], items: np.ndarray):
        self.h5_path, self.clips, self.classes, self.items = str(h5_path), clips, classes, items
        self._file = None
        self._starts: dict[int, tuple[np.ndarray, int]] = {}

    def __getstate__(self):
        return {**self.__dict__, "_file": None}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        import h5py

        if self._file is None:
            self._file = h5py.File(self.h5_path, "r")
        clip, window = (int(v) for v in self.items[index])
        row = self.clips.iloc[clip]
        group = self._file[f"{row['shard']}/clips/{row['clip_id']}"]
        if clip not in self._starts:
            self._starts[clip] = (group["window_start"][...], int(group["window_start"].attrs["length"]))
        starts, length = self._starts[clip]
        start, n = int(starts[window]), int(row["n_frames"])
        # h5py reads a slice; the indices past the clip's end repeat its last frame, as window_indices says.
        # Flow and dynamic images are exported quantised as the store keeps them: stored * scale.
        rgb = group["rgb"][start:start + length][window_indices(0, length, n - start)]
        flow = group["flow"][start:start + length - 1][window_indices(0, length - 1, n - 1 - start)]
        flow = dequantise(flow, group["flow"].attrs.get("scale"))
        if "dyn" in group:
            dyn = dequantise(group["dyn"][window], json.loads(group["dyn"].attrs["scale"]))
            dyn_rgb, dyn_flow = dyn[..., :3], dyn[..., 3:]
        else:
            dyn_rgb, dyn_flow = group["dyn_rgb"][window], group["dyn_flow"][window]
        item = tensors(rgb, flow, dyn_rgb, dyn_flow)
        item["label"] = torch.tensor(self.classes.index(row["label"]))
        item["clip"] = torch.tensor(clip)
        return item


def one_thread(_worker: int = 0) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def loader_rate(dataset, workers: int, batch_size: int) -> float:
    """Windows per second through a DataLoader (start-up and collation included)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        worker_init_fn=one_thread if workers else None)
    start, count = time.perf_counter(), 0
    for batch in loader:
        count += len(batch["label"])
    return count / (time.perf_counter() - start)


class Recompute:
    """The same windows computed again from the video, with the package's own functions (see the module doc)."""

    def __init__(self, cfg: dict, preset: dict, clips: pd.DataFrame, videos: Path):
        self.detector = faces.FaceDetector(cfg["detection"], config_mod.detection_device(cfg))
        self.preset, self.clips, self.videos = preset, clips, videos
        self.length = preset["window"]["length"]

    def _path(self, source: str) -> Path:
        path = Path(source)
        if path.exists():
            return path
        # The store records the absolute path it was made from; a moved demo keeps its relative layout.
        relative = path.parts[path.parts.index("videos") + 1:] if "videos" in path.parts else path.parts[-1:]
        return self.videos.joinpath(*relative)

    def window(self, clip: int, window: int, starts: np.ndarray) -> dict[str, torch.Tensor]:
        row = self.clips.iloc[clip]
        start = int(starts[window])
        decoded = video.read(self._path(row["source"]), max_frames=start + self.length)
        frames = decoded.frames[window_indices(start, self.length, len(decoded.frames))]
        track = self.detector.track(frames)
        arrays = preprocess.clip_features(frames, track.landmarks, track.valid, self.preset, self.length)
        flow = dequantise(arrays["flow"].data, (arrays["flow"].attrs or {}).get("scale"))
        dyn = dequantise(arrays["dyn"].data[0], arrays["dyn"].attrs["scale"])
        return tensors(arrays["rgb"].data, flow, dyn[..., :3], dyn[..., 3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=str(REPO / "results/demo/features/ec112"))
    parser.add_argument("--videos", default=str(REPO / "results/demo/videos"))
    parser.add_argument("--windows", type=int, default=480, help="random windows read from the store per row")
    parser.add_argument("--recompute", type=int, default=24, help="windows computed again from the video")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--h5", help="an export file --format hdf5 of --store (default: export it now, into a temp folder)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    one_thread()

    from fer_pipeline.export import export_hdf5

    store = Path(args.store)
    clips, preset = store_clips(store)
    classes = sorted(set(clips["label"]))
    data = WindowDataset(clips, classes, fields=FIELDS)  # without cache
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(data), size=min(args.windows, len(data)), replace=False)
    cfg = config_mod.load()
    with tempfile.TemporaryDirectory() as tmp:
        if args.h5:
            h5_path, export_line = Path(args.h5), f"HDF5 file: {args.h5} (given)"
        else:
            h5_path = Path(tmp) / f"{store.name}.h5"
            summary = export_hdf5(store, h5_path, progress=False)
            export_line = (f"HDF5 export (fer-pipeline export --format hdf5, gzip 4 + shuffle): {summary['clips']} clips in "
                           f"{summary['seconds']:.1f} s, {summary['store_bytes'] / 1e6:.0f} MB in Zarr -> "
                           f"{summary['hdf5_bytes'] / 1e6:.0f} MB in HDF5")
        h5_data = Hdf5Windows(h5_path, data.clips, classes, data.items)
        for index in picks[:8]:  # the HDF5 reader gives WindowDataset's items
            a, b = data[int(index)], h5_data[int(index)]
            assert all(torch.equal(a[k], b[k]) for k in (*FIELDS, "label", "clip")), f"item {index} differs"
        h5_data._file = None  # opened in the main process for the check: workers open their own

        recompute = Recompute(cfg, preset, data.clips, Path(args.videos))
        recompute.window(0, 0, data._windows(0)[0])  # warm-up: MTCNN's first calls allocate
        started = time.perf_counter()
        for index in picks[:args.recompute]:
            clip, window = (int(v) for v in data.items[index])
            recompute.window(clip, window, data._windows(clip)[0])
        t_recompute = (time.perf_counter() - started) / min(args.recompute, len(picks))

        dyn_only = WindowDataset(clips, classes, fields=("dyn_rgb", "dyn_flow"))
        rates = [
            ("recompute from the video (decode, track, align, flow, dynamic images)", "main", 1 / t_recompute,
             min(args.recompute, len(picks))),
            ("Zarr store, WindowDataset (no cache)", 1, loader_rate(Subset(data, picks), 1, args.batch_size), len(picks)),
            ("Zarr store, WindowDataset (no cache)", 2, loader_rate(Subset(data, picks), 2, args.batch_size), len(picks)),
            ("HDF5 export (h5py)", 1, loader_rate(Subset(h5_data, picks), 1, args.batch_size), len(picks)),
            ("HDF5 export (h5py)", 2, loader_rate(Subset(h5_data, picks), 2, args.batch_size), len(picks)),
            ("Zarr store, dynamic images only", 1, loader_rate(Subset(dyn_only, picks), 1, args.batch_size),
             len(picks)),
        ]
    size = preset["size"]
    print(f"store: {store} ({len(clips)} clips, {len(data)} windows of {data._windows(0)[1]} frames at {size} px); "
          f"random windows, seed {args.seed}, batches of {args.batch_size}; 1 thread per process; "
          f"torch {torch.__version__}, OpenCV {cv2.__version__}; load average {os.getloadavg()[0]:.2f} at the end")
    print(export_line)
    print("| path | DataLoader workers | windows | windows/s | ms per window | vs recomputing |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, workers, rate, count in rates:
        print(f"| {name} | {workers} | {count} | {rate:.1f} | {1000 / rate:.1f} | {rate * t_recompute:.1f}x |")


if __name__ == "__main__":
    main()
