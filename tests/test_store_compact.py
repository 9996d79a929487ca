"""The compact feature store (layout 2): quantised flow and dynamic images read back within their step,
every array of a clip in one file (sharding), the track inline, <= 8 files per clip, older stores still read."""

import dataclasses

import cv2
import numpy as np
import pytest
import zarr

from fer_pipeline import motion, preprocess
from fer_pipeline.store import (ArraySpec, ShardStore, clip_footprint, dequantise, quantise, read_field, read_fields,
                                read_rows)
from fer_pipeline.windows import WindowDataset

PRESET = {"alignment": "rigid", "alignment_reference": "clip_median", "size": 112,
          "flow": {"iterations": 3, "levels": 3, "poly_n": 5, "poly_sigma": 1.2, "pyr_scale": 0.5, "winsize": 15},
          "window": {"length": 16, "stride": 8}}
LANDMARKS = np.array([[70, 80], [130, 80], [100, 110], [75, 140], [125, 140]], np.float32)


def _clip(frames=37, seed=0):
    """A textured face-sized picture drifting and deforming: real Farneback flow of a few pixels."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8), (0, 0), 3)
    out = []
    for t in range(frames):
        matrix = np.float32([[1 + 0.004 * t, 0, 0.6 * t], [0, 1, 0.3 * t]])
        out.append(cv2.warpAffine(base, matrix, (200, 200), borderMode=cv2.BORDER_REFLECT))
    frames_ = np.stack(out)
    landmarks = np.repeat(LANDMARKS[None], frames, axis=0)
    return frames_, landmarks, np.ones(frames, bool)


def _write(tmp_path, frames=37):
    video, landmarks, valid = _clip(frames)
    arrays = preprocess.clip_features(video, landmarks, valid, PRESET)  # chunks of the window stride
    track = preprocess.track_arrays(type("Track", (), {"boxes": np.tile([[40, 50, 160, 170]], (frames, 1)).astype(np.float32),
                                                       "landmarks": landmarks, "scores": np.full(frames, 0.99, np.float32),
                                                       "valid": valid})())
    arrays.update({name: dataclasses.replace(spec, inline=True) for name, spec in track.items()})
    with ShardStore(tmp_path / "s.zarr", attrs={"stage": "features"}) as store:
        store.write_clip("c1", arrays, {"label": "anger", "subject": "1", "n_frames": frames,
                                        "n_windows": len(arrays["window_start"].data)})
    return video, landmarks, valid, arrays


def test_quantised_flow_and_dynamic_images_read_back_within_half_a_step(tmp_path):
    video, landmarks, valid, arrays = _write(tmp_path)
    group = ShardStore(tmp_path / "s.zarr", mode="r").clip("c1")
    assert group["flow"].dtype == np.int16 and group["dyn"].dtype == np.int16
    scale = group["flow"].attrs["scale"]
    assert scale == preprocess.FLOW_STEP
    # The float32 flow the stage computed, against what every reader gets back.
    from fer_pipeline import faces

    aligned = faces.align(video, faces.alignment_landmarks(landmarks, valid, "clip_median"), "rigid", 112)
    flow = motion.farneback(aligned, PRESET["flow"])
    assert np.abs(flow).max() > 10 * preprocess.FLOW_STEP  # real motion, many steps wide
    read = read_field(group, "flow")
    assert read.dtype == np.float32
    assert np.abs(read - flow).max() <= scale / 2 + 1e-6  # fails if the scale were dropped or wrong
    assert np.sqrt(np.mean((read - flow) ** 2)) < scale / 3
    starts = read_field(group, "window_start")
    np.testing.assert_array_equal(starts, motion.window_starts(len(video), 16, 8))
    dyn_rgb = motion.dynamic_images(aligned.astype(np.float32) / 255.0, starts, 16)
    dyn_flow = motion.dynamic_images(flow, starts, 15)
    assert np.abs(read_field(group, "dyn_rgb") - dyn_rgb).max() <= preprocess.DYN_RGB_STEP / 2 + 1e-6
    assert np.abs(read_field(group, "dyn_flow") - dyn_flow).max() <= preprocess.DYN_FLOW_STEP / 2 + 1e-5
    both = read_fields(group, ["dyn_rgb", "dyn_flow"], [1, 0])
    np.testing.assert_array_equal(both["dyn_flow"], read_field(group, "dyn_flow")[[1, 0]])
    # What WindowDataset gives a network is the dequantised flow.
    data = WindowDataset(__import__("pandas").DataFrame([{
        "clip_id": "c1", "store": str(tmp_path / "s.zarr"), "subject": "1", "label": "anger", "n_frames": len(video),
        "n_windows": len(starts)}]), ["anger"])
    item = data[1]
    np.testing.assert_allclose(item["flow"].permute(0, 2, 3, 1).numpy(), read[8:23])
    np.testing.assert_allclose(item["dyn_flow"].permute(1, 2, 0).numpy(), read_field(group, "dyn_flow")[1])


def test_a_clip_is_at_most_eight_files_whatever_its_length(tmp_path):
    _write(tmp_path, frames=70)
    size, files = clip_footprint(tmp_path / "s.zarr", "c1")
    assert files <= 8, sorted(p.relative_to(tmp_path) for p in (tmp_path / "s.zarr" / "clips" / "c1").rglob("*"))
    reader = ShardStore(tmp_path / "s.zarr", mode="r")
    assert reader.clip_ids() == ["c1"]  # complete, inline arrays included
    group = reader.clip("c1")
    assert group["rgb"].chunks[0] == 8 and group["rgb"].shards[0] >= 70  # the window stride per chunk, one shard
    assert read_field(group, "valid").dtype == bool and read_field(group, "landmarks").shape == (70, 5, 2)
    np.testing.assert_array_equal(read_field(group, "landmarks"), np.repeat(LANDMARKS[None], 70, axis=0))
    # Plain zarr still opens it.
    assert zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["clips/c1/rgb"].shape == (70, 112, 112, 3)


def test_read_rows_takes_any_rows_of_a_sharded_array(tmp_path):
    data = np.arange(50 * 4, dtype=np.int16).reshape(50, 4)
    with ShardStore(tmp_path / "s.zarr") as store:
        store.write_clip("c", {"x": ArraySpec(data, ("frame", "v"), 16)}, {})
    array = ShardStore(tmp_path / "s.zarr", mode="r").clip("c")["x"]
    index = np.array([49, 3, 3, 17, 0, 31, 32])
    np.testing.assert_array_equal(read_rows(array, index), data[index])


def test_quantise_widens_a_step_too_fine_for_the_range_and_older_floats_pass_through():
    q, scale = quantise(np.array([0.0, 3000.0, -0.5]), 1 / 32)
    assert scale == 1 / 8 and q.dtype == np.int16  # 3000 * 32 overflows int16; * 8 does not
    np.testing.assert_allclose(dequantise(q, scale), [0.0, 3000.0, -0.5])
    q, scale = quantise(np.ones((2, 5)), [1 / 64] * 3 + [1 / 8] * 2)
    assert scale == [1 / 64] * 3 + [1 / 8] * 2 and q[0].tolist() == [64, 64, 64, 8, 8]
    old = np.ones(3, np.float16)
    assert dequantise(old, None).dtype == np.float16  # an older store's floats pass through as stored


def test_a_store_of_the_older_layout_still_reads(tmp_path):
    rng = np.random.default_rng(0)
    flow = rng.normal(size=(19, 8, 8, 2)).astype(np.float16)
    with ShardStore(tmp_path / "s.zarr") as store:
        store.write_clip("c", {"flow": ArraySpec(flow, ("pair", "y", "x", "uv"), 16),
                               "window_start": ArraySpec(np.array([0, 4]), ("window",), attrs={"length": 16}),
                               "dyn_rgb": ArraySpec(rng.normal(size=(2, 8, 8, 3)).astype(np.float16),
                                                    ("window", "y", "x", "channel"))}, {})
    group = ShardStore(tmp_path / "s.zarr", mode="r").clip("c")
    np.testing.assert_array_equal(read_field(group, "flow", [2, 1]), flow[[2, 1]].astype(np.float32))
    assert read_field(group, "window_start").tolist() == [0, 4] and read_field(group, "dyn_flow") is None
