"""Training windows per second: read from the feature store, against computing them again from the video.

    .venv/bin/python benchmarks/reading.py [--store results/demo/features/ec112] [--videos results/demo/videos]
                                           [--windows 480] [--recompute 24] [--h5 FILE] [--no-relayout]

Rows, measured side by side in one run on the same random windows (all four fields: 16 aligned frames, 15
flow fields, both dynamic images, at the store's size, 112 for ec112), as a study's DataLoader gets them
(batches of --batch-size, torch tensors as fer_pipeline.windows.WindowDataset makes them):

  recompute from the video  per window, with the package's own functions: decode the video up to the
                            window's last frame (fer_pipeline.video.read), track the face on the window's
                            frames (faces.FaceDetector.track: MTCNN on keyframes, ONet on every frame), align,
                            Farneback flow, dynamic images (preprocess.clip_features); one process, 1 thread.
                            This is the cheapest honest recomputation: tracking only the window's 16 frames
                            and fitting its alignment on them, where the stage tracks the whole clip.
  Zarr store, through zarr  WindowDataset(direct=False) without cache: every field by store.read_field (zarr),
                            as before the direct reader
  Zarr store, direct        WindowDataset without cache (its default: store.ClipReader), the target row
  ... current layout        the same with the store's clips re-written by this code's writer into a temporary
                            folder (chunks of store.window_chunk: the window stride), when --store is of an
                            older layout (--no-relayout: not)
  HDF5 export               the same windows from the store exported by fer-pipeline export --format hdf5
                            (gzip 4 + shuffle; exported here into a temporary folder unless --h5 names a
                            file), read with h5py by a Dataset that mirrors WindowDataset (items checked equal)
  Zarr, dynamic images only the two dynamic images of each window, direct, 1 worker
  no reading                a Dataset that hands out the same tensors already made: what the DataLoader alone
                            costs (forking, collating into shared memory, passing batches between processes)

Each DataLoader row with 1 and 2 workers, each worker 1 thread (the workflow's training jobs share the cores
the same way); "per worker" is windows/s divided by the workers. Every reader's items are checked equal to
the zarr path's (torch.equal) before timing. Times include the DataLoader's start-up and collation; the page
cache is warm (the export just read the whole store). A second table gives the CPU time per window of each
read in one process (no DataLoader), by field. Windows/s on a machine shared with other jobs vary: rerun to
compare, and compare rows of one run.
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
from fer_pipeline.store import (ArraySpec, ShardStore, clip_footprint, dequantise, inline_array,  # noqa: E402
                                read_field, read_fields, shard_stores, window_chunk)
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
        arrays = preprocess.clip_features(frames, track.landmarks, track.valid, self.preset)
        flow = dequantise(arrays["flow"].data, (arrays["flow"].attrs or {}).get("scale"))
        dyn = dequantise(arrays["dyn"].data[0], arrays["dyn"].attrs["scale"])
        return tensors(arrays["rgb"].data, flow, dyn[..., :3], dyn[..., 3:])


class Ready(Dataset):
    """The no-reading row: hands out copies of tensors already made (a window's worth each), as WindowDataset
    items are shaped, so that what remains is the DataLoader's own cost."""

    def __init__(self, item: dict[str, torch.Tensor], n: int):
        self.item, self.n = item, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.item.items()}


def layout(folder: Path) -> tuple[int, float, float]:
    """Frames per chunk of the first clip's ``rgb``, and the folder's KB per frame and files per clip (what
    `fer-pipeline inspect` prints as its footprint)."""
    size = files = frames = clips = 0
    chunk = 0
    for store in shard_stores(folder):
        for clip_id in store.clip_ids():
            s, f = clip_footprint(store.path, clip_id)
            size, files, clips = size + s, files + f, clips + 1
            frames += int(store.clip_attrs(clip_id)["n_frames"])
            chunk = chunk or int(store.clip(clip_id)["rgb"].chunks[0])
    return chunk, size / max(frames, 1) / 1000, files / max(clips, 1)


def relayout(source: Path, target: Path, store_config: dict) -> float:
    """Every clip of ``source`` written again into ``target`` by this code's writer, values as they are
    (flow and dyn as their stored integers, with their attributes): chunks of store.window_chunk, the codecs
    of store.CODECS, as preprocess.clip_features lays them out now. Returns the seconds it took."""
    started = time.perf_counter()
    for store in shard_stores(source):
        root = {k: v for k, v in dict(store.root.attrs).items() if k != "code"}
        chunk = window_chunk(root["parameters"].get("window"))
        with ShardStore(target / store.path.name, attrs=root, store_config=store_config) as out:
            for clip_id in store.clip_ids():
                group, attrs = store.clip(clip_id), store.clip_attrs(clip_id)
                arrays = {}
                for name, codec, frames in (("rgb", "frames", chunk), ("flow", "field", chunk), ("dyn", "field", 1)):
                    array = group[name]
                    arrays[name] = ArraySpec(array[...], tuple(array.metadata.dimension_names), frames,
                                             attrs=dict(array.attrs), codec=codec)
                for name, record in attrs.get("inline", {}).items():
                    arrays[name] = ArraySpec(inline_array(record), tuple(record["dims"]),
                                             attrs=record.get("attrs") or None, inline=True)
                out.write_clip(clip_id, arrays, {k: v for k, v in attrs.items()
                                                 if k not in ("arrays", "inline", "complete", "clip_id", "created")})
    return time.perf_counter() - started


def cpu_per_field(data: WindowDataset, picks: np.ndarray, direct: bool) -> dict[str, float]:
    """CPU ms per window of each field's read in this process (window starts already read), and of a whole
    item (``__getitem__``), through zarr (store.read_field) or the direct reader (store.ClipReader)."""
    for clip in range(len(data.clips)):
        data._windows(clip)
    windows = [(int(c), int(w)) for c, w in data.items[picks]]
    sources = {}
    for clip in {c for c, _ in windows}:
        sources[clip] = data._reader(clip) if direct else data._group(clip)

    def field(clip, name, rows):
        return sources[clip].field(name, rows) if direct else read_field(sources[clip], name, rows)

    def dyn(clip, rows):
        return sources[clip].fields(["dyn_rgb", "dyn_flow"], rows) if direct else \
            read_fields(sources[clip], ["dyn_rgb", "dyn_flow"], rows)

    reads = {"rgb": lambda c, w: field(c, "rgb", data._rows(c, w)["rgb"]),
             "flow": lambda c, w: field(c, "flow", data._rows(c, w)["flow"]),
             "dyn_rgb": lambda c, w: field(c, "dyn_rgb", [w]),
             "dyn_flow": lambda c, w: field(c, "dyn_flow", [w]),
             "both dynamic images, one read": lambda c, w: dyn(c, [w])}
    out = {}
    for name, read in reads.items():
        for c, w in windows[:10]:
            read(c, w)
        started = time.process_time()
        for c, w in windows:
            read(c, w)
        out[name] = (time.process_time() - started) / len(windows) * 1e3
    started = time.process_time()
    for index in picks:
        data[int(index)]
    out["item (WindowDataset[i], all four fields)"] = (time.process_time() - started) / len(picks) * 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=str(REPO / "results/demo/features/ec112"))
    parser.add_argument("--videos", default=str(REPO / "results/demo/videos"))
    parser.add_argument("--windows", type=int, default=480, help="random windows read from the store per row")
    parser.add_argument("--recompute", type=int, default=24, help="windows computed again from the video")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--h5", help="an export file --format hdf5 of --store (default: export it now, into a temp folder)")
    parser.add_argument("--no-relayout", action="store_true",
                        help="do not re-write a store of an older layout into the current one for its own rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this file (benchmarks/targets.py reads it)")
    args = parser.parse_args()
    one_thread()
    load_before = os.getloadavg()[0]

    from fer_pipeline.export import export_hdf5

    store = Path(args.store)
    clips, preset = store_clips(store)
    classes = sorted(set(clips["label"]))
    zarr_data = WindowDataset(clips, classes, fields=FIELDS, direct=False)  # without cache, through zarr
    data = WindowDataset(clips, classes, fields=FIELDS)  # without cache, direct
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(data), size=min(args.windows, len(data)), replace=False)
    cfg = config_mod.load()
    chunk, kb_frame, files_clip = layout(store)
    layouts = [f"{store.name}: chunks of {chunk} frames, {kb_frame:.1f} KB per frame, {files_clip:.1f} files per clip"]
    with tempfile.TemporaryDirectory() as tmp:
        current = None
        if not args.no_relayout and chunk != window_chunk(preset.get("window")):
            target = Path(tmp) / store.name
            seconds = relayout(store, target, cfg["store"])
            chunk_, kb_, files_ = layout(target)
            current = WindowDataset(store_clips(target)[0], classes, fields=FIELDS)
            layouts.append(f"re-written in the current layout (store level {cfg['store']['level']}, {seconds:.0f} s): "
                           f"chunks of {chunk_} frames, {kb_:.1f} KB per frame, {files_:.1f} files per clip")
        if args.h5:
            h5_path, export_line = Path(args.h5), f"HDF5 file: {args.h5} (given)"
        else:
            h5_path = Path(tmp) / f"{store.name}.h5"
            summary = export_hdf5(store, h5_path, progress=False)
            export_line = (f"HDF5 export (fer-pipeline export --format hdf5, gzip 4 + shuffle): {summary['clips']} clips in "
                           f"{summary['seconds']:.1f} s, {summary['store_bytes'] / 1e6:.0f} MB in Zarr -> "
                           f"{summary['hdf5_bytes'] / 1e6:.0f} MB in HDF5")
        h5_data = Hdf5Windows(h5_path, data.clips, classes, data.items)
        checked = [d for d in (data, current, h5_data) if d is not None]
        for index in picks[:16]:  # every reader gives the zarr path's items, bit for bit
            a = zarr_data[int(index)]
            for other in checked:
                b = other[int(index)]
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
        ready = Ready(data[int(picks[0])], len(picks))
        n = len(picks)
        rows = [("recompute from the video (decode, track, align, flow, dynamic images)", "main", 1 / t_recompute,
                 min(args.recompute, n))]
        readers = [("Zarr store, WindowDataset (no cache), through zarr (`direct=False`: as before)", zarr_data),
                   ("**Zarr store, WindowDataset (no cache), direct reader (default)**", data)]
        if current is not None:
            readers.append(("Zarr store re-written in the current layout, WindowDataset (no cache), direct", current))
        readers.append(("HDF5 export (h5py)", h5_data))
        for name, dataset in readers:
            for workers in (1, 2):
                rows.append((name, workers, loader_rate(Subset(dataset, picks), workers, args.batch_size), n))
        rows.append(("Zarr store, dynamic images only, direct", 1, loader_rate(Subset(dyn_only, picks), 1, args.batch_size), n))
        for workers in (1, 2):
            rows.append(("no reading: the DataLoader alone (the same tensors, already made)", workers,
                         loader_rate(ready, workers, args.batch_size), n))
        cpu = {"through zarr": cpu_per_field(zarr_data, picks, direct=False),
               "direct": cpu_per_field(data, picks, direct=True)}
        if current is not None:
            cpu["direct, current layout"] = cpu_per_field(current, picks, direct=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": [
            {"path": name, "workers": workers, "windows_per_s": rate, "windows": count}
            for name, workers, rate, count in rows]}, indent=2))
    size = preset["size"]
    print(f"store: {store} ({len(clips)} clips, {len(data)} windows of {data._windows(0)[1]} frames at {size} px); "
          f"random windows, seed {args.seed}, batches of {args.batch_size}; 1 thread per process; "
          f"torch {torch.__version__}, OpenCV {cv2.__version__}; load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} at the end")
    print("layouts: " + "; ".join(layouts))
    print(export_line)
    print()
    print("| path | DataLoader workers | windows | windows/s | windows/s per worker | ms per window | vs recomputing |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, workers, rate, count in rows:
        per = rate / workers if isinstance(workers, int) else rate
        print(f"| {name} | {workers} | {count} | {rate:.1f} | {per:.1f} | {1000 / rate:.1f} | {rate * t_recompute:.1f}x |")
    print()
    print("CPU ms per window in one process (no DataLoader), by field:")
    print()
    print("| read | " + " | ".join(cpu) + " |")
    print("| --- |" + " ---: |" * len(cpu))
    for name in next(iter(cpu.values())):
        print(f"| {name} | " + " | ".join(f"{values[name]:.2f}" for values in cpu.values()) + " |")


if __name__ == "__main__":
    main()
