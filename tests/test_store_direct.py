"""The direct reader (fer_pipeline.store.ClipReader): what store.read_field (zarr) gives, bit for bit, for every
field, every window, a clip's last window and a clip shorter than a window, in every layout the store writes;
anything unusual read through zarr; an index kept from a clip since rewritten never used; WindowDataset's
items the same as through zarr."""

import dataclasses
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

import fer_pipeline.store as store_mod
from fer_pipeline import motion, preprocess
from fer_pipeline.motion import window_indices
from fer_pipeline.store import (ArraySpec, ClipReader, ShardStore, StoreError, _permute, read_field, read_fields,
                                window_chunk)
from fer_pipeline.windows import FIELDS, WindowDataset

from test_store_compact import PRESET, _clip

FRAMES = {"c37": 37, "c10": 10, "c16": 16, "c24": 24}  # windows at 0, 8, 16 and the end (21); shorter than one; one; two
FIELD_NAMES = ("rgb", "flow", "dyn_rgb", "dyn_flow", "dyn", "window_start", "landmarks", "valid", "boxes", "scores")


def _feature_arrays(frames: int, seed: int = 0) -> dict[str, ArraySpec]:
    """A clip as the features stage writes it: preprocess.clip_features, the track inline."""
    video, landmarks, valid = _clip(frames, seed)
    arrays = preprocess.clip_features(video, landmarks, valid, PRESET)
    track = preprocess.track_arrays(type("Track", (), {
        "boxes": np.tile([[40, 50, 160, 170]], (frames, 1)).astype(np.float32), "landmarks": landmarks,
        "scores": np.linspace(0.9, 1, frames).astype(np.float32), "valid": valid})())
    arrays.update({name: dataclasses.replace(spec, inline=True) for name, spec in track.items()})
    return arrays


def _write(path, clips: dict[str, int], store_config=None, seed=0) -> pd.DataFrame:
    rows = []
    with ShardStore(path, attrs={"stage": "features"}, store_config=store_config) as store:
        for i, (clip_id, n) in enumerate(clips.items()):
            arrays = _feature_arrays(n, seed + i)
            windows = len(arrays["window_start"].data)
            store.write_clip(clip_id, arrays, {"label": "anger", "subject": "1", "n_frames": n, "n_windows": windows})
            rows.append({"clip_id": clip_id, "store": str(path), "subject": "1", "label": ["anger", "fear"][i % 2],
                         "n_frames": n, "n_windows": windows})
    return pd.DataFrame(rows)


def _same(a, b):
    """Equal values, dtype and shape, and the same bytes (so -0.0 is not 0.0, NaN is its NaN)."""
    if a is None or b is None:
        assert a is None and b is None
        return
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _every_read(group, reader, n_frames):
    """Each field's read_field and ClipReader.field, for all rows, random rows, and every window's rows."""
    rng = np.random.default_rng(1)
    starts = read_field(group, "window_start")
    for name in FIELD_NAMES:
        length = len(starts) if name.startswith("dyn") or name == "window_start" else n_frames - (name == "flow")
        indices = [None, rng.integers(0, length, 9), np.array([length - 1, 0, 0]), np.array([], np.int64)]
        for index in indices:
            expected, got = read_field(group, name, index), reader.field(name, index)
            _same(expected, got)
            if expected is not None and expected.ndim >= 3:
                moved = reader.field(name, index, channels_first=True)
                _same(np.ascontiguousarray(np.moveaxis(expected, -1, 1)), moved)
                assert moved.flags.c_contiguous
    for window, start in enumerate(starts):
        rows = {"rgb": window_indices(int(start), 16, n_frames), "flow": window_indices(int(start), 15, n_frames - 1)}
        for name, index in rows.items():
            _same(read_field(group, name, index), reader.field(name, index))
        expected = read_fields(group, ["dyn_rgb", "dyn_flow"], [window])
        for channels_first in (False, True):
            got = reader.fields(["dyn_rgb", "dyn_flow"], [window], channels_first=channels_first)
            for name in expected:
                want = np.ascontiguousarray(np.moveaxis(expected[name], -1, 1)) if channels_first else expected[name]
                _same(want, got[name])
    return len(starts)


@pytest.mark.parametrize("store_config", [None, {"compressor": "zstd", "level": 1}, {"compressor": "lz4", "level": 5},
                                          {"compressor": "none", "level": 0}])
def test_the_direct_reader_gives_what_zarr_gives_for_every_field_and_window(tmp_path, store_config):
    _write(tmp_path / "s.zarr", FRAMES, store_config)
    reader_store = ShardStore(tmp_path / "s.zarr", mode="r")
    windows = 0
    for clip_id, n in FRAMES.items():
        group = reader_store.clip(clip_id)
        reader = ClipReader(tmp_path / "s.zarr" / "clips" / clip_id)
        windows += _every_read(group, reader, n)
        if clip_id == "c37":  # the layout the reader is for: sharded, chunks of the window stride, transposed
            assert group["rgb"].chunks[0] == 8 and group["rgb"].shards[0] >= 37
            assert all(isinstance(reader._array(name), store_mod._DirectArray) for name in ("rgb", "flow", "dyn"))
    assert windows == 4 + 1 + 1 + 2


def test_chunks_hold_the_window_stride_and_a_window_reads_two_of_them(tmp_path):
    assert window_chunk({"length": 16, "stride": 8}) == 8
    assert window_chunk({"length": 16, "stride": 6}) == 16 and window_chunk(None) == 16
    assert window_chunk({"length": 16, "stride": 16}) == 16
    _write(tmp_path / "s.zarr", {"c37": 37})
    reader = ClipReader(tmp_path / "s.zarr" / "clips" / "c37")
    rgb = reader._array("rgb")
    chunks = []
    original = rgb._raw_chunks
    rgb._raw_chunks = lambda ids: chunks.append(list(ids)) or original(ids)
    for start in (0, 8, 16, 21):
        reader.field("rgb", window_indices(start, 16, 37))
    assert chunks == [[0, 1], [1, 2], [2, 3], [2, 3, 4]]  # the clip's last window, aligned to its end: three


def test_an_older_layout_and_arrays_of_unusual_layouts_read_the_same(tmp_path):
    rng = np.random.default_rng(3)
    # Layout 1: float16 arrays, the track and dynamic images as arrays (and a file per chunk: below).
    with ShardStore(tmp_path / "old.zarr") as store:
        store.write_clip("c", {
            "rgb": ArraySpec(rng.integers(0, 256, (40, 6, 6, 3), dtype=np.uint8), ("frame", "y", "x", "channel"), 16),
            "flow": ArraySpec(rng.normal(size=(39, 6, 6, 2)).astype(np.float16), ("pair", "y", "x", "uv"), 16),
            "window_start": ArraySpec(np.array([0, 8, 16, 24]), ("window",), attrs={"length": 16}),
            "dyn_rgb": ArraySpec(rng.normal(size=(4, 6, 6, 3)).astype(np.float16), ("window", "y", "x", "channel")),
            "dyn_flow": ArraySpec(rng.normal(size=(4, 6, 6, 2)).astype(np.float16), ("window", "y", "x", "uv")),
            "valid": ArraySpec(rng.random(40) > 0.5, ("frame",)),
        }, {})
    path = tmp_path / "old.zarr" / "clips" / "c"
    files = zarr.create_array(str(path / "files"), shape=(39, 6, 6, 2), dtype=np.float16, chunks=(16, 6, 6, 2),
                              compressors=zarr.codecs.ZstdCodec(level=3), fill_value=0)  # layout 1: a file per chunk
    files[...] = rng.normal(size=(39, 6, 6, 2))
    group = ShardStore(tmp_path / "old.zarr", mode="r").clip("c")
    reader = ClipReader(path)
    assert isinstance(reader._array("files"), store_mod._DirectArray) and reader._array("files").per_shard is None
    _every_read(group, reader, 40)
    # Written with zarr alone: chunked along y (not a layout the reader reads itself), big-endian, gzip.
    data = rng.normal(size=(20, 6, 6, 2)).astype(">f4")
    odd = zarr.create_array(str(path / "odd"), shape=data.shape, dtype=data.dtype, chunks=(5, 3, 6, 2),
                            compressors=zarr.codecs.GzipCodec(), fill_value=0)
    odd[...] = data
    assert isinstance(reader._array("odd"), store_mod._ViaZarr)
    be = zarr.create_array(str(path / "be"), shape=data.shape, dtype=data.dtype, chunks=(6, 6, 6, 2),
                           serializer=zarr.codecs.BytesCodec(endian="big"), compressors=zarr.codecs.GzipCodec(),
                           fill_value=0)
    be[...] = data
    assert isinstance(reader._array("be"), store_mod._DirectArray)
    for name in ("files", "odd", "be"):
        for index in (None, [19, 0, 7, 7]):
            _same(read_field(group, name, index), reader.field(name, index))
            _same(np.ascontiguousarray(np.moveaxis(read_field(group, name, index), -1, 1)),
                  reader.field(name, index, channels_first=True))


def test_chunks_never_written_read_as_the_fill_value(tmp_path):
    flow = np.zeros((30, 6, 6, 2), np.int16)
    flow[20:] = 7  # chunks 0 and 1 are all fill value: zarr does not write them
    with ShardStore(tmp_path / "s.zarr") as store:
        store.write_clip("c", {"flow": ArraySpec(flow, ("pair", "y", "x", "uv"), 8, codec="field", attrs={"scale": 0.5}),
                               "empty": ArraySpec(np.zeros((30, 4), np.uint8), ("sample", "v"), 8)}, {})
    reader = ClipReader(tmp_path / "s.zarr" / "clips" / "c")
    index = reader._array("flow")._index
    reader.field("flow", [0])
    assert (list(index.values())[0][1][:2] == store_mod._MAX_UINT64).all()  # really not written
    group = ShardStore(tmp_path / "s.zarr", mode="r").clip("c")
    for name in ("flow", "empty"):  # "empty": no shard file at all
        _same(read_field(group, name, [0, 9, 29, 19]), reader.field(name, [0, 9, 29, 19]))
        _same(read_field(group, name), reader.field(name))


def test_an_index_kept_from_a_clip_since_rewritten_is_never_used(tmp_path, monkeypatch):
    _write(tmp_path / "s.zarr", {"c": 37}, seed=0)
    reader = ClipReader(tmp_path / "s.zarr" / "clips" / "c")
    rows = window_indices(8, 16, 37)
    before = reader.field("rgb", rows)
    # The clip written again (other frames, the same shapes): the reader holds the old version's index.
    _write(tmp_path / "s.zarr", {"c": 37}, seed=5)
    group = ShardStore(tmp_path / "s.zarr", mode="r").clip("c")
    expected = read_field(group, "rgb", rows)
    assert not np.array_equal(before, expected)
    _same(expected, reader.field("rgb", rows))
    _same(read_field(group, "flow", rows[:15]), reader.field("flow", rows[:15]))
    # The array's data replaced in place through zarr (its zarr.json unchanged): the shard is a new file.
    flow = zarr.open_array(str(tmp_path / "s.zarr" / "clips" / "c" / "flow"), mode="r+")
    reader.field("flow", rows[:15])  # index of the current file kept
    flow[...] = (flow[...] // 2 + 3).astype(np.int16)
    _same(read_field(group, "flow", rows[:15]), reader.field("flow", rows[:15]))
    # Without the check (every version of a file looks the same) the old index is used: what the check prevents.
    monkeypatch.setattr(store_mod, "_file_id", lambda st: (0,))
    reader = ClipReader(tmp_path / "s.zarr" / "clips" / "c")
    reader.field("rgb", rows)
    _write(tmp_path / "s.zarr", {"c": 37}, seed=9)
    expected = read_field(ShardStore(tmp_path / "s.zarr", mode="r").clip("c"), "rgb", rows)
    try:
        stale = reader.field("rgb", rows)
    except Exception:  # noqa: BLE001 - old offsets into the new file: garbage to the decompressor
        stale = None
    assert stale is None or not np.array_equal(stale, expected)


def test_a_corrupt_shard_index_is_an_error_not_values(tmp_path):
    _write(tmp_path / "s.zarr", {"c": 37})
    shard = tmp_path / "s.zarr" / "clips" / "c" / "rgb" / "c" / "0" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0xFF  # inside the index, before its checksum
    shard.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="checksum"):
        ClipReader(tmp_path / "s.zarr" / "clips" / "c").field("rgb", [0])


def test_a_reader_pickles_as_its_path_and_a_missing_clip_is_an_error(tmp_path):
    _write(tmp_path / "s.zarr", {"c": 24})
    reader = ClipReader(tmp_path / "s.zarr" / "clips" / "c")
    first = reader.field("rgb", [3, 20])
    copy = pickle.loads(pickle.dumps(reader))
    assert copy._arrays == {} and copy._group is None  # nothing of the other process's state
    _same(first, copy.field("rgb", [3, 20]))
    with pytest.raises(StoreError, match="no clip 'nope'"):
        ClipReader(tmp_path / "s.zarr" / "clips" / "nope")


def test_permute_is_numpy_transpose():
    rng = np.random.default_rng(0)
    for dtype in (np.uint8, np.int16, np.float32, np.float64, bool):
        x = (rng.normal(size=(3, 4, 5, 2)) * 50).astype(dtype)
        for perm in ((0, 1, 2, 3), (3, 0, 1, 2), (0, 2, 3, 1), (3, 1, 2, 0), (2, 0, 3, 1), (1, 0, 2, 3)):
            _same(np.ascontiguousarray(x.transpose(perm)), _permute(x, perm))


@pytest.mark.parametrize("options", [{}, {"fields": ("rgb",)}, {"fields": ("dyn_flow", "flow")}, {"size": 20},
                                     {"mirror": True}, {"cache": True}])
def test_window_dataset_items_are_those_read_through_zarr(tmp_path, options):
    clips = _write(tmp_path / "s.zarr", FRAMES)
    classes = ["anger", "fear"]
    direct, through_zarr = WindowDataset(clips, classes, **options), WindowDataset(clips, classes, direct=False, **options)
    assert len(direct) == clips["n_windows"].sum() == 8
    for index in range(len(direct)):
        torch.manual_seed(index)
        a = through_zarr[index]
        torch.manual_seed(index)
        b = direct[index]
        assert a.keys() == b.keys() == {*options.get("fields", FIELDS), "label", "clip"}
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (index, key)
    # The last window of the 37-frame clip starts at 21; the 10-frame clip's window repeats its last frame.
    if not {"size", "mirror"} & set(options) and "rgb" in direct.fields:
        group = ShardStore(tmp_path / "s.zarr", mode="r").clip("c10")
        rgb = direct[4]["rgb"]
        assert int(direct.items[4][0]) == 1
        expected = group["rgb"][...][np.minimum(np.arange(16), 9)]
        assert torch.equal(rgb, torch.from_numpy(expected.astype(np.float32)).permute(0, 3, 1, 2) / 255)
        starts = read_field(ShardStore(tmp_path / "s.zarr", mode="r").clip("c37"), "window_start")
        assert starts.tolist() == [0, 8, 16, 21] == motion.window_starts(37, 16, 8).tolist()


# -- frames.ClipRows (FrameDataset, SequenceDataset, NormalisedSequenceDataset, ActionUnitSequenceDataset) ------

def _frames_stores(tmp_path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clips as the features stage writes them with frames where no face was seen (the inline ``valid``), one of
    the older layout (``valid`` an array, rgb a file per chunk of 16), and a frame network's ``features`` store
    (no ``valid``): the clips table of each."""
    rng = np.random.default_rng(7)
    rows = []
    with ShardStore(tmp_path / "s.zarr", attrs={"stage": "features"}) as store:
        for i, (clip_id, n) in enumerate({"c37": 37, "c10": 10, "c24": 24}.items()):
            arrays = _feature_arrays(n, seed=i)
            valid = rng.random(n) > 0.3
            valid[[0, -1]] = i % 2 == 0, True  # a clip that starts without a face, and one with
            arrays["valid"] = dataclasses.replace(arrays["valid"], data=valid)
            store.write_clip(clip_id, arrays, {"label": "anger", "subject": "1", "n_frames": n})
            rows.append({"clip_id": clip_id, "store": str(tmp_path / "s.zarr"), "label": ["anger", "fear"][i % 2],
                         "subject": "1", "n_frames": n})
        store.write_clip("old", {
            "rgb": ArraySpec(rng.integers(0, 256, (40, 12, 12, 3), dtype=np.uint8), ("frame", "y", "x", "channel"), 16),
            "valid": ArraySpec(rng.random(40) > 0.4, ("frame",)),
        }, {"label": "fear", "subject": "2", "n_frames": 40})
        rows.append({"clip_id": "old", "store": str(tmp_path / "s.zarr"), "label": "fear", "subject": "2",
                     "n_frames": 40})
    features = []
    with ShardStore(tmp_path / "features.zarr", attrs={"stage": "vgg_face"}) as store:
        for clip_id, n in (("c37", 30), ("c10", 7)):
            store.write_clip(clip_id, {
                "features": ArraySpec(rng.normal(size=(n, 6)).astype(np.float32), ("frame", "feature")),
                "frame": ArraySpec(np.arange(n, dtype=np.int64), ("frame",))}, {"label": "anger"})
            features.append({"clip_id": clip_id, "store": str(tmp_path / "features.zarr"), "label": "anger",
                             "subject": "1", "n_frames": n})
    return pd.DataFrame(rows), pd.DataFrame(features)


def _same_items(a, b, n):
    for index in range(n):
        torch.manual_seed(index)
        x = a[index]
        torch.manual_seed(index)
        y = b[index]
        assert x.keys() == y.keys()
        for key in x:
            assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), (index, key)


@pytest.mark.parametrize("cache", [False, True])
def test_clip_rows_read_directly_what_zarr_gives(tmp_path, cache):
    from fer_pipeline.frames import (ClipRows, FrameDataset, NormalisedSequenceDataset, SequenceDataset,
                                     sequence_indices)

    clips, features = _frames_stores(tmp_path)
    rng = np.random.default_rng(0)
    for table, array in ((clips, "rgb"), (features, "features")):
        direct, through_zarr = ClipRows(table, array, cache), ClipRows(table, array, cache, direct=False)
        assert direct.direct and not through_zarr.direct
        for clip in range(len(table)):
            group = ShardStore(table["store"][clip], mode="r").clip(table["clip_id"][clip])
            valid = read_field(group, "valid")
            expected_rows = np.arange(group[array].shape[0]) if valid is None else np.flatnonzero(valid)
            _same(expected_rows, through_zarr.rows[clip])
            _same(expected_rows, direct.rows[clip])
            n = direct.count(clip)
            assert n == len(expected_rows) < group[array].shape[0] if valid is not None else n == group[array].shape[0]
            for positions in (rng.integers(0, n, 12), np.arange(n)[::-1], np.array([n - 1, 0, 0, n - 1]),
                              sequence_indices(n, 20, n // 2, 2), np.array([], np.int64)):
                expected = group[array][...][expected_rows[positions]]  # zarr's own, all rows read
                _same(expected, through_zarr.read(clip, positions))
                _same(expected, direct.read(clip, positions))
        # The direct path never opens zarr (every clip's layout is one the reader reads itself); the fallback does.
        assert len(direct._readers) == len(table) and all(r._group is None for r in direct._readers.values())
        assert all(r._group is not None for r in through_zarr._readers.values())
        # Pickled (a DataLoader worker): no reader, no cache carried along; the same rows after.
        copy = pickle.loads(pickle.dumps(direct))
        assert copy._readers == {} and copy._cached == {}
        _same(direct.read(0, np.arange(3)), copy.read(0, np.arange(3)))
    # The datasets on top: the same items, bit for bit (augmentation draws seeded alike).
    classes = ["anger", "fear"]
    aug = {"flip": True, "angles": [5.0]}
    for make in (lambda **kw: NormalisedSequenceDataset(clips, classes, 12, 16, aug, cache, **kw),
                 lambda **kw: FrameDataset(clips, classes, 10, 4, {"flip": True, "rotate_deg": 5.0}, cache, **kw),
                 lambda **kw: SequenceDataset(clips, classes, 6, 2, "rgb", (14, 14), 10, True,
                                              {"flip": True, "rotate_deg": 5.0}, cache, **kw),
                 lambda **kw: SequenceDataset(features, ["anger"], 8, 1, "features", cache=cache, **kw)):
        direct, through_zarr = make(), make(direct=False)
        assert direct.reader.direct and not through_zarr.reader.direct and len(direct) == len(through_zarr)
        _same_items(through_zarr, direct, len(direct))


def test_a_clip_rows_clip_without_the_array_or_a_face_is_an_error(tmp_path):
    from fer_pipeline.frames import ClipRows

    clips, _ = _frames_stores(tmp_path)
    for direct in (True, False):
        with pytest.raises(StoreError, match="has no array 'features'"):
            ClipRows(clips, "features", False, direct=direct)
        with pytest.raises(StoreError, match="not a feature store"):
            ClipRows(clips.assign(store=str(tmp_path / "nope.zarr")), "rgb", False, direct=direct)
    with ShardStore(tmp_path / "s.zarr") as store:
        store.write_clip("blind", {"rgb": ArraySpec(np.zeros((5, 4, 4, 3), np.uint8), ("frame", "y", "x", "channel")),
                                   "valid": ArraySpec(np.zeros(5, bool), ("frame",), inline=True)}, {})
    for direct in (True, False):
        with pytest.raises(ValueError, match="no frame with a face"):
            ClipRows(pd.DataFrame([{"clip_id": "blind", "store": str(tmp_path / "s.zarr")}]), "rgb", False, direct)
