"""HDF5 export (fer_pipeline.export): every array bit for bit, every attribute, only complete clips, atomic."""

import json

import h5py
import numpy as np
import pytest
import zarr

from fer_pipeline import cli
from fer_pipeline.export import dimension_names, export_hdf5, read_attrs
from fer_pipeline.store import ArraySpec, ShardStore, StoreError


def _arrays(seed: int, frames: int = 21) -> dict[str, ArraySpec]:
    """A clip's arrays as the features stage writes them (small): every dtype the store holds."""
    rng = np.random.default_rng(seed)
    windows = 2
    return {
        "rgb": ArraySpec(rng.integers(0, 256, (frames, 8, 8, 3), dtype=np.uint8), ("frame", "y", "x", "channel"), 16),
        "flow": ArraySpec(rng.normal(size=(frames - 1, 8, 8, 2)).astype(np.float16), ("pair", "y", "x", "uv"), 16,
                          attrs={"units": "pixels per frame", "pair_t": "frame t -> frame t+1"}),
        "window_start": ArraySpec(np.array([0, frames - 16], np.int64), ("window",), attrs={"length": 16, "stride": 8}),
        "dyn_rgb": ArraySpec(rng.normal(size=(windows, 8, 8, 3)).astype(np.float16), ("window", "y", "x", "channel")),
        "dyn_flow": ArraySpec(rng.normal(size=(windows, 8, 8, 2)).astype(np.float16), ("window", "y", "x", "uv")),
        "landmarks": ArraySpec(rng.normal(size=(frames, 5, 2)).astype(np.float32), ("frame", "point", "xy"),
                               attrs={"units": "pixels"}),
        "valid": ArraySpec(rng.random(frames) > 0.2, ("frame",), attrs={"meaning": "a face was seen"}),
    }


def _attrs(clip_id: str, subject: str) -> dict:
    return {"source_sha256": f"src-{clip_id}", "track_sha256": f"trk-{clip_id}", "features_sha256": f"fea-{clip_id}",
            "subject": subject, "label": "anger", "n_frames": 21, "n_windows": 2, "fps": 25.0, "padded_frames": 0,
            "valid_fraction": 0.8, "warnings": [], "media": {"truncated": False, "sample_fps": None},
            "source": {"path": f"/data/{clip_id}.avi", "bytes": 1234, "sha256": f"src-{clip_id}"},
            "parameters": {"preset": "ec112", "size": 112, "flow": {"levels": 3, "pyr_scale": 0.5}}}


@pytest.fixture
def store_folder(tmp_path):
    """A preset folder of two shard stores written by the package's writer; ``s2_half`` is marked incomplete
    (as a clip folder copied by hand from staging would be)."""
    folder = tmp_path / "features" / "ec112"
    for shard, clips in (("subject01", ["s1_a", "s1_b"]), ("subject02", ["s2_a", "s2_half"])):
        with ShardStore(folder / f"{shard}.zarr", attrs={"stage": "features", "dataset": "demo", "shard": shard,
                                                         "preset": "ec112", "parameters": {"size": 112}}) as store:
            for i, clip_id in enumerate(clips):
                store.write_clip(clip_id, _arrays(seed=sum(clip_id.encode()) + i), _attrs(clip_id, shard[-1]))
    half = zarr.open_group(str(folder / "subject02.zarr" / "clips" / "s2_half"), mode="a")
    half.attrs["complete"] = False
    return folder


def _complete_clips(folder):
    return {(p.stem, c) for p in sorted(folder.glob("*.zarr")) for c in ShardStore(p, mode="r").clip_ids()}


def test_export_round_trips_every_array_and_attribute_and_leaves_incomplete_clips_out(store_folder, tmp_path):
    out = tmp_path / "ec112.h5"
    summary = export_hdf5(store_folder, out, progress=False)
    assert summary["clips"] == 3 and summary["hdf5_bytes"] == out.stat().st_size
    with h5py.File(out, "r") as h5:  # plain h5py
        exported = {(shard, clip) for shard in h5 for clip in h5[shard]["clips"]}
        assert exported == _complete_clips(store_folder) == {("subject01", "s1_a"), ("subject01", "s1_b"),
                                                             ("subject02", "s2_a")}
        assert "s2_half" not in h5["subject02/clips"]
        top = read_attrs(h5)
        assert top["exported_from"] == str(store_folder.resolve()) and top["exported_at"]
        assert top["code"]["package"] == "fer-pipeline" and "version" in top["code"]
        assert top["clips"] == 3 and any("s2_half" in line for line in top["left_out"])
        for shard, clip_id in exported:
            store = ShardStore(store_folder / f"{shard}.zarr", mode="r")
            assert read_attrs(h5[shard]) == {**dict(store.root.attrs), "store": str(store.path.resolve())}
            group, target = store.clip(clip_id), h5[f"{shard}/clips/{clip_id}"]
            assert read_attrs(target) == dict(group.attrs)  # fingerprints, provenance, parameters, arrays
            names = sorted(name for name, _ in group.arrays())
            assert sorted(target) == names
            for name in names:
                source, dataset = group[name], target[name]
                data = dataset[...]
                assert data.dtype == source.dtype and data.shape == source.shape
                assert data.tobytes() == source[...].tobytes()  # bit for bit
                assert dimension_names(dataset) == tuple(source.metadata.dimension_names)
                assert read_attrs(dataset) == dict(source.attrs)
                if dataset.ndim and dataset.size:
                    assert dataset.chunks[0] == source.chunks[0]  # chunks along frames kept
                    assert dataset.compression == "gzip" and dataset.shuffle == (dataset.dtype.itemsize > 1)
    # The clip attributes a user reads without this package: scalars natively, the rest as JSON text.
    with h5py.File(out, "r") as h5:
        clip = h5["subject01/clips/s1_a"]
        assert clip.attrs["label"] == "anger" and clip.attrs["n_frames"] == 21
        assert json.loads(clip.attrs["source"])["path"] == "/data/s1_a.avi"
        assert "source" in json.loads(clip.attrs["json_encoded_attributes"])


def test_selected_clips_one_shard_current_only_and_lzf(store_folder, tmp_path):
    out = tmp_path / "some.h5"
    export_hdf5(store_folder, out, clips=["s1_b", "s2_a"], progress=False)
    with h5py.File(out, "r") as h5:
        assert {(s, c) for s in h5 for c in h5[s]["clips"]} == {("subject01", "s1_b"), ("subject02", "s2_a")}
    with pytest.raises(StoreError, match="no clip nope"):
        export_hdf5(store_folder, out, clips=["nope"], progress=False)
    # One shard's store; only the pairs lineage calls current (s1_b made from other parameters, say).
    shard = store_folder / "subject01.zarr"
    export_hdf5(shard, out, current={(str(shard.resolve()), "s1_a")}, compression="lzf", progress=False)
    with h5py.File(out, "r") as h5:
        assert list(h5) == ["subject01"] and list(h5["subject01/clips"]) == ["s1_a"]
        assert h5["subject01/clips/s1_a/rgb"].compression == "lzf"
        assert "current fingerprints" in h5.attrs["selection"]


def test_a_failed_export_leaves_no_file_and_keeps_the_previous_one(store_folder, tmp_path, monkeypatch):
    from fer_pipeline import export

    out = tmp_path / "ec112.h5"
    out.write_bytes(b"previous export")
    real, copied = export._copy_array, []

    def failing(group, name, array, compression, level):
        if len(copied) == 5:
            raise OSError("disk full")
        copied.append(name)
        real(group, name, array, compression, level)

    monkeypatch.setattr(export, "_copy_array", failing)
    with pytest.raises(OSError, match="disk full"):
        export_hdf5(store_folder, out, progress=False)
    assert out.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ec112.h5", "features"]  # no temporary left


def test_the_cli_writes_the_file(store_folder, tmp_path, capsys):
    out = tmp_path / "cli.h5"
    assert cli.main(["export", str(store_folder), "--format", "hdf5", str(out), "--no-progress"]) == 0
    assert "3 clips" in capsys.readouterr().out
    with h5py.File(out, "r") as h5:
        assert sorted(h5) == ["subject01", "subject02"]
    assert cli.main(["export", str(tmp_path / "absent"), "--format", "hdf5", str(out)]) == 1  # a message, not a traceback


def test_current_only_exports_what_readers_read(tmp_path):
    """``--current-only`` holds the store against the manifest and config (lineage): a stale clip stays out."""
    from test_lineage import DATASET, PRESET, clip_arrays, make_config, make_manifest, save_manifest, write_features

    from fer_pipeline import paths

    config, manifest = make_config(tmp_path), make_manifest(tmp_path)
    save_manifest(config, manifest)
    write_features(config, manifest)
    folder = paths.features_dir(config["results"], DATASET, PRESET)
    store = sorted(folder.glob("*.zarr"))[0]
    with ShardStore(store) as writer:  # made from other parameters: complete, but stale
        writer.write_clip("s1_ha", clip_arrays("happiness", 20, 9.0),
                          {"features_sha256": "old", "label": "happiness", "n_frames": 20})
    config_json = tmp_path / "config.json"
    config_json.write_text(json.dumps(config))
    every, current = tmp_path / "every.h5", tmp_path / "current.h5"
    assert cli.main(["export", str(folder), "--format", "hdf5", str(every), "--no-progress"]) == 0
    assert cli.main(["export", str(folder), "--format", "hdf5", str(current), "--current-only", "--config", str(config_json),
                     "--no-progress"]) == 0
    with h5py.File(every, "r") as a, h5py.File(current, "r") as b:
        clips_a = {c for s in a for c in a[s]["clips"]}
        clips_b = {c for s in b for c in b[s]["clips"]}
    assert clips_a == set(manifest["clip_id"]) and clips_b == clips_a - {"s1_ha"}


def test_export_of_the_current_layout_keeps_its_chunks_and_values(tmp_path):
    """A store as the features stage writes it now (chunks of the window stride, sharded, int16 with their
    scale, the track inline): every field comes back from the HDF5 file as store.read_field gives it."""
    from test_store_direct import FRAMES, _write

    from fer_pipeline.store import dequantise, read_field

    folder = tmp_path / "ec112"
    _write(folder / "subject01.zarr", FRAMES)
    out = tmp_path / "ec112.h5"
    export_hdf5(folder, out, progress=False)
    store = ShardStore(folder / "subject01.zarr", mode="r")
    with h5py.File(out, "r") as h5:
        for clip_id in FRAMES:
            group, target = store.clip(clip_id), h5[f"subject01/clips/{clip_id}"]
            assert target["rgb"].chunks[0] == group["rgb"].chunks[0] == min(8, FRAMES[clip_id])
            np.testing.assert_array_equal(target["rgb"][...], read_field(group, "rgb"))
            flow = dequantise(target["flow"][...], target["flow"].attrs["scale"])
            assert flow.dtype == np.float32 and flow.tobytes() == read_field(group, "flow").tobytes()
            dyn = dequantise(target["dyn"][...], json.loads(target["dyn"].attrs["scale"]))
            assert dyn[..., :3].tobytes() == read_field(group, "dyn_rgb").tobytes()
            for name in ("window_start", "landmarks", "valid"):
                np.testing.assert_array_equal(target[name][...], read_field(group, name))
                assert target[name].attrs["stored_inline"]
