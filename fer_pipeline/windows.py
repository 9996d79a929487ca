"""Random access to training windows across every shard of a dataset's feature store.

Studies read only from here: no video is decoded during training. A window is ``length`` aligned frames
starting at one of the clip's ``window_start`` values, with the flow between them and the two dynamic
images the preprocessing computed for it.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from . import lineage
from .motion import window_indices
from .store import ClipReader, StoreError, clip_reader, dequantise, field_attrs, read_field, read_fields

log = logging.getLogger(__name__)

FIELDS = ("rgb", "flow", "dyn_rgb", "dyn_flow")


def index_clips(config: Mapping[str, Any], dataset: str, preset: str, manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per clip of ``manifest`` whose features under ``preset`` are in the store at the fingerprint
    the manifest and the config imply now (fer_pipeline.lineage): clip_id, shard, store, subject and label
    (the manifest's, never the store's), frames, windows, padded frames, and ``features_sha256``, in the
    manifest's order. Stale
    clips and stores are never read; manifest clips without current features (skipped by preprocessing, with
    their reason in ``skipped.csv``) are left out, with a log line."""
    report = lineage.audit(config, dataset, manifest, preset)
    by_id = manifest.set_index("clip_id")
    rows = [{"clip_id": c["clip_id"], "shard": c["shard"], "store": c["store"],
             "subject": str(by_id.at[c["clip_id"], "subject"]), "label": by_id.at[c["clip_id"], "label"],
             "n_frames": c["n_frames"], "n_windows": c["n_windows"], "padded_frames": c.get("padded_frames", 0),
             "features_sha256": c["features_sha256"]} for c in report.current]
    if report.missing:
        log.info("%s: %d clips of the manifest have no current features (skipped, or not computed yet): %s",
                 report.folder, len(report.missing), ", ".join(report.missing[:10]))
    if report.stale_clips or report.stale_stores:
        log.info("%s: %d stale clips and %d stale stores are not read (fer-pipeline gc removes them)",
                 report.folder, len(report.stale_clips), len(report.stale_stores))
    if not rows:
        raise StoreError(f"{report.folder}: the feature store holds no clip of the manifest at the current "
                         f"fingerprints ({len(report.stale_clips)} stale): run the preprocessing first")
    # The manifest's order, not the stores': how clips are sharded (datasets.<name>.subjects_per_shard) is
    # storage, and must change no training run (a sampler's draws follow this order).
    position = {clip_id: i for i, clip_id in enumerate(manifest["clip_id"])}
    return pd.DataFrame(rows).sort_values("clip_id", key=lambda ids: ids.map(position), ignore_index=True)


def evenly_spaced(n: int, count: int | None) -> np.ndarray:
    """``count`` positions spread evenly over ``range(n)`` (all of them when ``count`` is None or >= n)."""
    if count is None or count >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, count).round().astype(np.int64))


def resize(frames: np.ndarray, size: int | Sequence[int], is_flow: bool) -> np.ndarray:
    """Resize (N, H, W, C) frames to ``size`` x ``size``, or to (height, width) = ``size`` (area
    interpolation); flow vectors, being pixel displacements, are scaled by the same factors (x by the
    width's, y by the height's)."""
    height, width = (size, size) if isinstance(size, int) else size
    if frames.shape[1:3] == (height, width):
        return frames
    out = np.stack([cv2.resize(np.asarray(f, np.float32), (width, height), interpolation=cv2.INTER_AREA)
                    for f in frames]).reshape(len(frames), height, width, frames.shape[-1])
    if is_flow:
        out *= np.array([width / frames.shape[2], height / frames.shape[1]], np.float32)
    return out


class WindowDataset(Dataset):
    """Every window of the selected clips, as tensors for a network.

    Items are dicts: ``rgb`` (L, 3, S, S) float in [0, 1]; ``flow`` (L-1, 2, S, S) float pixels;
    ``dyn_rgb`` (3, S, S) and ``dyn_flow`` (2, S, S) float; ``label`` (int index into ``classes``);
    ``clip`` (int index into ``self.clips``). Only the requested ``fields`` are read. ``mirror`` flips each
    item left-right with probability 1/2 (torch's global generator, which training seeds), for training data. ``size`` resizes at
    load (the store keeps the preset's size; small demo networks read smaller inputs). ``cache`` keeps
    each clip's (resized) arrays in memory after the first read, for data that fits and many epochs.
    ``direct`` (default) reads through :class:`fer_pipeline.store.ClipReader` (the same values as
    ``read_field``, ~5x faster a window: docs/performance.md); False reads every field through zarr.
    """

    def __init__(self, clips: pd.DataFrame, classes: Sequence[str], fields: Iterable[str] = FIELDS,
                 subjects: Iterable[str] | None = None, size: int | None = None, cache: bool = False,
                 mirror: bool = False, direct: bool = True):
        if subjects is not None:
            clips = clips[clips["subject"].isin(set(map(str, subjects)))]
        self.clips = clips.reset_index(drop=True)
        self.classes = list(classes)
        unknown = set(self.clips["label"]) - set(self.classes)
        if unknown:
            raise ValueError(f"labels {sorted(unknown)} are not among the classes {self.classes}")
        self.fields = tuple(fields)
        bad = set(self.fields) - set(FIELDS)
        if bad:
            raise ValueError(f"unknown fields {sorted(bad)}; choose from {FIELDS}")
        self.items = np.array([(c, w) for c, n in enumerate(self.clips["n_windows"]) for w in range(n)],
                              dtype=np.int64).reshape(-1, 2)
        self.size, self.cache, self.mirror, self.direct = size, cache, mirror, direct
        # Per clip, what every item needs (a DataFrame row lookup costs ~0.2 ms, a window's reads ~2 ms).
        self._clip_rows = [(str(s), str(c), int(n), self.classes.index(label)) for s, c, n, label in
                           zip(self.clips["store"], self.clips["clip_id"], self.clips["n_frames"], self.clips["label"])]
        self._readers: dict[str, ClipReader] = {}  # opened per worker process, never pickled open
        self._cached: dict[int, dict[str, np.ndarray]] = {}
        self._scales: dict[int, dict[str, object]] = {}  # quantised fields' scales of the cached clips
        self._starts: dict[int, tuple[np.ndarray, int]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_readers"], state["_cached"], state["_scales"] = {}, {}, {}
        return state

    def _reader(self, clip: int) -> ClipReader:
        store, clip_id = self._clip_rows[clip][:2]
        key = f"{store}::{clip_id}"
        if key not in self._readers:
            self._readers[key] = clip_reader(store, clip_id)
        return self._readers[key]

    def _group(self, clip: int):
        return self._reader(clip).group

    def _windows(self, clip: int) -> tuple[np.ndarray, int]:
        """A clip's window starts and window length (read once: tiny, but each zarr read costs ~ms)."""
        if clip not in self._starts:
            if self.direct:
                reader = self._reader(clip)
                starts, attrs = reader.field("window_start"), reader.field_attrs("window_start")
            else:
                group = self._group(clip)
                starts, attrs = read_field(group, "window_start"), field_attrs(group, "window_start")
            self._starts[clip] = (starts, int(attrs["length"]))
        return self._starts[clip]

    def _read(self, clip: int, field: str, index) -> np.ndarray:
        """``field``'s rows ``index`` of a clip, resized; from memory when caching."""
        if self.cache:
            if clip not in self._cached:
                group = self._group(clip)
                if self.size is None:  # the stored values (int16 flow: half float32's memory), dequantised per item
                    entries = {name: read_field(group, name, raw=True) for name in self.fields}
                    self._cached[clip] = {name: data for name, (data, _) in entries.items()}
                    self._scales[clip] = {name: scale for name, (_, scale) in entries.items()}
                else:
                    self._cached[clip] = {name: self._resized(name, read_field(group, name)) for name in self.fields}
            rows = self._cached[clip][field][index]
            scale = self._scales.get(clip, {}).get(field)
            return dequantise(rows, scale) if scale is not None else rows
        # Flow and dynamic images come back dequantised (float32) whatever the store keeps.
        if self.direct:
            return self._resized(field, self._reader(clip).field(field, index))
        return self._resized(field, read_field(self._group(clip), field, index))

    def _resized(self, field: str, frames: np.ndarray) -> np.ndarray:
        if self.size is None:
            return frames
        return resize(frames, self.size, is_flow=field in ("flow", "dyn_flow"))

    def _rows(self, clip: int, window: int) -> dict[str, np.ndarray]:
        """Which rows of each field window ``window`` of a clip is."""
        starts, length = self._windows(clip)
        start, n_frames = int(starts[window]), self._clip_rows[clip][2]
        return {"rgb": window_indices(start, length, n_frames), "flow": window_indices(start, length - 1, n_frames - 1),
                "dyn_rgb": np.array([window]), "dyn_flow": np.array([window])}

    def window(self, clip: int, window: int) -> dict[str, np.ndarray]:
        """The arrays of one window (numpy)."""
        rows = self._rows(clip, window)
        out: dict[str, np.ndarray] = {}
        for name in ("rgb", "flow"):
            if name in self.fields:
                out[name] = self._read(clip, name, rows[name])
        dyn = [name for name in ("dyn_rgb", "dyn_flow") if name in self.fields]
        if self.cache or len(dyn) < 2:
            for name in dyn:
                out[name] = self._read(clip, name, rows[name])[0]
        else:  # both from one read of the clip's dyn array
            read = (self._reader(clip).fields(dyn, rows["dyn_rgb"]) if self.direct
                    else read_fields(self._group(clip), dyn, rows["dyn_rgb"]))
            for name, values in read.items():
                out[name] = self._resized(name, values)[0]
        return out

    def _channels_first(self, clip: int, window: int) -> dict[str, torch.Tensor]:
        """:meth:`__getitem__`'s tensors read as they are laid out for a network, (frames,) channels, y, x:
        the values of the :meth:`window` path, bit for bit, without its copies (the store's size, no cache)."""
        reader, rows = self._reader(clip), self._rows(clip, window)
        item: dict[str, torch.Tensor] = {}
        if "rgb" in self.fields:
            rgb = reader.field("rgb", rows["rgb"], channels_first=True)
            item["rgb"] = torch.from_numpy(rgb.astype(np.float32)).div_(255.0)  # a new array: divided in place
        if "flow" in self.fields:  # float32 already (dequantised): no copy
            item["flow"] = torch.from_numpy(np.asarray(reader.field("flow", rows["flow"], channels_first=True),
                                                       np.float32))
        dyn = [name for name in ("dyn_rgb", "dyn_flow") if name in self.fields]
        for name, values in reader.fields(dyn, rows["dyn_rgb"], channels_first=True).items():
            item[name] = torch.from_numpy(np.ascontiguousarray(values[0], np.float32))
        return item

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clip, window = (int(v) for v in self.items[index])
        if self.direct and not self.cache and self.size is None:
            item = self._channels_first(clip, window)
        else:
            raw = self.window(clip, window)
            item = {}
            if "rgb" in raw:
                item["rgb"] = torch.from_numpy(np.ascontiguousarray(raw["rgb"], np.float32)).permute(0, 3, 1, 2) / 255.0
            if "flow" in raw:
                item["flow"] = torch.from_numpy(raw["flow"].astype(np.float32)).permute(0, 3, 1, 2)
            for name in ("dyn_rgb", "dyn_flow"):
                if name in raw:
                    item[name] = torch.from_numpy(raw[name].astype(np.float32)).permute(2, 0, 1)
        if self.mirror and torch.rand(()) < 0.5:
            item = mirrored(item)
        item["label"] = torch.tensor(self._clip_rows[clip][3])
        item["clip"] = torch.tensor(clip)
        return item


def mirrored(item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The window of the mirrored face: images flipped left-right, and flow's horizontal component (channel 0)
    negated as well, since a motion to the right becomes one to the left. An expression and its mirror
    image carry the same label, which makes mirroring the standard augmentation of face expression data."""
    out = {}
    for name, tensor in item.items():
        flipped = tensor.flip(-1)
        if name in ("flow", "dyn_flow"):
            flipped = torch.cat([-flipped[..., :1, :, :], flipped[..., 1:, :, :]], dim=-3)
        out[name] = flipped
    return out
