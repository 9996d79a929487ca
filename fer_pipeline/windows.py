"""Random access to training windows across every shard of a dataset's feature store.

Studies read only from here: no video is decoded during training. A window is ``length`` aligned frames
starting at one of the clip's ``window_start`` values, with the flow between them and the two dynamic
images the preprocessing computed for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .motion import window_indices
from .store import ShardStore, StoreError, shard_stores

FIELDS = ("rgb", "flow", "dyn_rgb", "dyn_flow")


def index_clips(features_dir: str | Path) -> pd.DataFrame:
    """One row per complete clip of a preset's store: clip_id, shard, store, subject, label, frames, windows."""
    rows = []
    for shard in shard_stores(features_dir):
        for clip_id in shard.clip_ids():
            attrs = shard.clip_attrs(clip_id)
            rows.append({"clip_id": clip_id, "shard": shard.path.stem, "store": str(shard.path),
                         "subject": attrs["subject"], "label": attrs["label"],
                         "n_frames": attrs["n_frames"], "n_windows": attrs["n_windows"]})
    if not rows:
        raise StoreError(f"{features_dir}: the feature store holds no complete clip")
    return pd.DataFrame(rows).sort_values(["shard", "clip_id"], ignore_index=True)


class WindowDataset(Dataset):
    """Every window of the selected clips, as tensors for a network.

    Items are dicts: ``rgb`` (L, 3, S, S) float in [0, 1]; ``flow`` (L-1, 2, S, S) float pixels;
    ``dyn_rgb`` (3, S, S) and ``dyn_flow`` (2, S, S) float; ``label`` (int index into ``classes``);
    ``clip`` (int index into ``self.clips``). Only the requested ``fields`` are read.
    """

    def __init__(self, clips: pd.DataFrame, classes: Sequence[str], fields: Iterable[str] = FIELDS,
                 subjects: Iterable[str] | None = None):
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
        self._groups: dict[str, object] = {}  # opened per worker process, never pickled open

    def __len__(self) -> int:
        return len(self.items)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_groups"] = {}
        return state

    def _group(self, clip: int):
        row = self.clips.iloc[clip]
        key = f"{row['store']}::{row['clip_id']}"
        if key not in self._groups:
            self._groups[key] = ShardStore(row["store"], mode="r").clip(row["clip_id"])
        return self._groups[key]

    def window(self, clip: int, window: int) -> dict[str, np.ndarray]:
        """The raw arrays of one window (numpy, stored dtypes)."""
        group = self._group(clip)
        start = int(group["window_start"][window])
        length = int(group["window_start"].attrs["length"])
        n_frames = int(self.clips.iloc[clip]["n_frames"])
        out: dict[str, np.ndarray] = {}
        if "rgb" in self.fields:
            out["rgb"] = group["rgb"].oindex[window_indices(start, length, n_frames)]
        if "flow" in self.fields:
            out["flow"] = group["flow"].oindex[window_indices(start, length - 1, n_frames - 1)]
        for name in ("dyn_rgb", "dyn_flow"):
            if name in self.fields:
                out[name] = group[name][window]
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clip, window = (int(v) for v in self.items[index])
        raw = self.window(clip, window)
        item: dict[str, torch.Tensor] = {}
        if "rgb" in raw:
            item["rgb"] = torch.from_numpy(raw["rgb"]).permute(0, 3, 1, 2).float() / 255.0
        if "flow" in raw:
            item["flow"] = torch.from_numpy(raw["flow"].astype(np.float32)).permute(0, 3, 1, 2)
        for name in ("dyn_rgb", "dyn_flow"):
            if name in raw:
                item[name] = torch.from_numpy(raw[name].astype(np.float32)).permute(2, 0, 1)
        item["label"] = torch.tensor(self.classes.index(self.clips.iloc[clip]["label"]))
        item["clip"] = torch.tensor(clip)
        return item
