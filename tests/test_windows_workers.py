"""A torch DataLoader with worker processes reads fer_pipeline.windows.WindowDataset from a store correctly:
the same items, in the same order, as without workers and as through zarr, each worker reading through
readers (store.ClipReader: cached metadata and shard indexes) of its own."""

import os

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from fer_pipeline.motion import window_indices, window_starts
from fer_pipeline.store import ArraySpec, ShardStore
from fer_pipeline.windows import FIELDS, WindowDataset

CLASSES = ["anger", "fear"]
SIZE, LENGTH, STRIDE = 12, 16, 8


class RecordingDataset(WindowDataset):
    """WindowDataset that says which process read each item and how many clip readers it held then."""

    def __getitem__(self, index):
        item = super().__getitem__(index)
        item["pid"] = torch.tensor(os.getpid())
        item["handles"] = torch.tensor(len(self._readers))
        return item


def _store(tmp_path) -> pd.DataFrame:
    """Two shards, five clips of different lengths (one shorter than a window), random contents: the rows
    index_clips would give for them."""
    rng = np.random.default_rng(7)
    rows = []
    for shard, clips in (("subject01", {"c1": 40, "c2": 10}), ("subject02", {"c3": 33, "c4": 24, "c5": 17})):
        path = tmp_path / f"{shard}.zarr"
        with ShardStore(path, attrs={"stage": "features"}) as store:
            for clip_id, n in clips.items():
                starts = window_starts(n, LENGTH, STRIDE)
                store.write_clip(clip_id, {
                    "rgb": ArraySpec(rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8),
                                     ("frame", "y", "x", "channel"), LENGTH),
                    "flow": ArraySpec(rng.normal(size=(n - 1, SIZE, SIZE, 2)).astype(np.float16),
                                      ("pair", "y", "x", "uv"), LENGTH),
                    "window_start": ArraySpec(starts, ("window",), attrs={"length": LENGTH, "stride": STRIDE}),
                    "dyn_rgb": ArraySpec(rng.normal(size=(len(starts), SIZE, SIZE, 3)).astype(np.float16),
                                         ("window", "y", "x", "channel")),
                    "dyn_flow": ArraySpec(rng.normal(size=(len(starts), SIZE, SIZE, 2)).astype(np.float16),
                                          ("window", "y", "x", "uv")),
                }, {"n_frames": n})
                rows.append({"clip_id": clip_id, "shard": shard, "store": str(path), "subject": shard[-1],
                             "label": CLASSES[len(rows) % 2], "n_frames": n, "n_windows": len(starts)})
    return pd.DataFrame(rows)


def _read_all(data, **loader) -> dict[str, torch.Tensor]:
    batches = list(DataLoader(data, batch_size=4, shuffle=False, **loader))
    return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_two_workers_read_the_same_items_as_none(tmp_path, start_method):
    clips = _store(tmp_path)
    data = RecordingDataset(clips, CLASSES, fields=FIELDS)
    assert len(data) == clips["n_windows"].sum() > 8  # more batches than workers
    alone = _read_all(data)
    assert set(alone["pid"].tolist()) == {os.getpid()} and data._readers  # the main process opened its own
    workers = _read_all(data, num_workers=2, multiprocessing_context=start_method)
    through_zarr = _read_all(WindowDataset(clips, CLASSES, fields=FIELDS, direct=False))
    for key in (*FIELDS, "label", "clip"):
        assert workers[key].dtype == alone[key].dtype and torch.equal(workers[key], alone[key]), key
        assert torch.equal(alone[key], through_zarr[key]), key  # the direct reader: zarr's values
    # Read in two other processes, each through readers it opened itself: with spawn the dataset reaches
    # a worker pickled, and __getstate__ sends it without the main process's readers.
    pids = set(workers["pid"].tolist())
    assert len(pids) == 2 and os.getpid() not in pids
    if start_method == "spawn":
        assert workers["handles"].min() >= 1 and workers["handles"].max() <= len(clips)
        first = {pid: int(workers["handles"][workers["pid"] == pid][0]) for pid in pids}
        assert all(count == 1 for count in first.values())  # each worker started with none open
    # And the items are the store's values, not merely equal to each other.
    row = clips.iloc[1]  # c2: 10 frames, one window padded by repeating the last frame
    group = ShardStore(row["store"], mode="r").clip(row["clip_id"])
    index = int(np.flatnonzero(alone["clip"].numpy() == 1)[0])
    expected = group["rgb"][...][window_indices(0, LENGTH, 10)]
    assert torch.equal(workers["rgb"][index], torch.from_numpy(expected.astype(np.float32)).permute(0, 3, 1, 2) / 255)
    assert torch.equal(workers["dyn_flow"][index], torch.from_numpy(group["dyn_flow"][0].astype(np.float32)).permute(2, 0, 1))


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_two_workers_read_the_current_layout_as_zarr_does(tmp_path, start_method):
    """The store as the features stage writes it now (sharded int16 chunks of the window stride, the track
    inline): workers whose readers were filled in the main process first (fork: inherited) or not (spawn)."""
    from test_store_direct import FRAMES, _write

    clips = _write(tmp_path / "s.zarr", FRAMES)
    data = RecordingDataset(clips, CLASSES, fields=FIELDS)
    alone = _read_all(data)  # fills the main process's readers: a forked worker starts with them
    assert data._readers and all(r._arrays for r in data._readers.values())
    workers = _read_all(data, num_workers=2, multiprocessing_context=start_method)
    assert len(set(workers["pid"].tolist())) == 2
    through_zarr = _read_all(WindowDataset(clips, CLASSES, fields=FIELDS, direct=False))
    torch.manual_seed(0)
    mirrored = _read_all(WindowDataset(clips, CLASSES, fields=FIELDS, mirror=True))
    torch.manual_seed(0)
    mirrored_zarr = _read_all(WindowDataset(clips, CLASSES, fields=FIELDS, mirror=True, direct=False))
    for key in (*FIELDS, "label", "clip"):
        assert torch.equal(workers[key], alone[key]), key
        assert torch.equal(alone[key], through_zarr[key]), key
        assert torch.equal(mirrored[key], mirrored_zarr[key]), key
