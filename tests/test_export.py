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


# -- netCDF-4 (xarray + h5netcdf) ------------------------------------------------------------------------------

def _exported_clips_nc(path):
    import h5netcdf

    with h5netcdf.File(path, "r") as nc:
        return {(shard, clip) for shard in nc.groups for clip in nc[shard]["clips"].groups}


def test_netcdf_export_round_trips_every_array_and_attribute(store_folder, tmp_path):
    """Every array (float16, bool, uint8, float32, int64) and every attribute of every complete clip back from
    the netCDF file, through plain h5netcdf and through xarray.open_dataset(group=...); incomplete clips out."""
    import h5netcdf
    import xarray as xr

    from fer_pipeline.export import decode_attrs, export_netcdf

    out = tmp_path / "ec112.nc"
    summary = export_netcdf(store_folder, out, progress=False)
    assert summary["clips"] == 3 and summary["file_bytes"] == summary["netcdf_bytes"] == out.stat().st_size
    exported = _exported_clips_nc(out)
    assert exported == _complete_clips(store_folder) == {("subject01", "s1_a"), ("subject01", "s1_b"),
                                                        ("subject02", "s2_a")}
    with h5netcdf.File(out, "r") as nc:  # plain h5netcdf
        top = decode_attrs(nc.attrs)
        assert top["exported_from"] == str(store_folder.resolve()) and top["exported_at"]
        assert top["code"]["package"] == "fer-pipeline" and top["clips"] == 3
        assert any("s2_half" in line for line in top["left_out"]) and top["h5netcdf"] == h5netcdf.__version__
        for shard, clip_id in exported:
            store = ShardStore(store_folder / f"{shard}.zarr", mode="r")
            assert decode_attrs(nc[shard].attrs) == {**dict(store.root.attrs), "store": str(store.path.resolve())}
            group, target = store.clip(clip_id), nc[f"{shard}/clips/{clip_id}"]
            assert decode_attrs(target.attrs) == dict(group.attrs)  # fingerprints, provenance, parameters, arrays
            # netCDF-legal attributes only: strings and numbers (booleans, dicts, lists as JSON text)
            assert all(isinstance(v, (str, np.integer, np.floating)) for v in target.attrs.values())
            assert isinstance(target.attrs["complete"], str) and json.loads(target.attrs["complete"]) is True
            names = sorted(name for name, _ in group.arrays())
            assert sorted(target.variables) == names
            for name in names:
                source, variable = group[name], target.variables[name]
                assert variable.dimensions == tuple(source.metadata.dimension_names)
                raw, attrs = variable[...], decode_attrs(variable.attrs)
                if source.dtype == np.float16:  # no netCDF type: float32, every value exactly
                    assert raw.dtype == np.float32 and attrs.pop("store_dtype") == "float16"
                    assert raw.astype(np.float16).tobytes() == source[...].tobytes()
                elif source.dtype == bool:  # xarray's encoding: int8 marked dtype=bool
                    assert raw.dtype == np.int8 and attrs.pop("dtype") == "bool"
                    assert raw.astype(bool).tobytes() == source[...].tobytes()
                else:
                    assert raw.dtype == source.dtype and raw.tobytes() == source[...].tobytes()
                assert attrs == dict(source.attrs) and "_FillValue" not in variable.attrs
                if variable.ndim and source.size:
                    assert variable.chunks[0] == source.chunks[0] and variable.compression == "gzip"
                    assert variable.shuffle == (raw.dtype.itemsize > 1) and variable.fletcher32
    for shard, clip_id in exported:  # xarray, as a user opens a clip
        group = ShardStore(store_folder / f"{shard}.zarr", mode="r").clip(clip_id)
        with xr.open_dataset(out, group=f"{shard}/clips/{clip_id}", engine="h5netcdf") as ds:
            assert decode_attrs(ds.attrs) == dict(group.attrs)
            assert sorted(ds.data_vars) == sorted(name for name, _ in group.arrays())
            for name, source in group.arrays():
                values = ds[name].values
                assert ds[name].dims == tuple(source.metadata.dimension_names)
                expected = source[...].astype(np.float32) if source.dtype == np.float16 else source[...]
                assert values.dtype == expected.dtype and values.shape == expected.shape
                assert values.tobytes() == expected.tobytes()


def test_netcdf_export_of_the_current_layout(tmp_path):
    """A store as the features stage writes it now (int16 with their scale, the track inline): every field
    comes back as store.read_field gives it."""
    import xarray as xr

    from test_store_direct import FRAMES, _write

    from fer_pipeline.export import decode_attrs, export_netcdf
    from fer_pipeline.store import dequantise, read_field

    folder = tmp_path / "ec112"
    _write(folder / "subject01.zarr", FRAMES)
    out = tmp_path / "ec112.nc"
    export_netcdf(folder, out, compression="none", progress=False)
    store = ShardStore(folder / "subject01.zarr", mode="r")
    for clip_id in FRAMES:
        group = store.clip(clip_id)
        with xr.open_dataset(out, group=f"subject01/clips/{clip_id}", engine="h5netcdf") as ds:
            assert ds["rgb"].encoding["chunksizes"][0] == group["rgb"].chunks[0] == min(8, FRAMES[clip_id])
            assert "zlib" not in ds["rgb"].encoding or not ds["rgb"].encoding["zlib"]
            np.testing.assert_array_equal(ds["rgb"].values, read_field(group, "rgb"))
            flow = dequantise(ds["flow"].values, ds["flow"].attrs["scale"])
            assert flow.dtype == np.float32 and flow.tobytes() == read_field(group, "flow").tobytes()
            dyn = dequantise(ds["dyn"].values, decode_attrs(ds["dyn"].attrs)["scale"])
            assert dyn[..., :3].tobytes() == read_field(group, "dyn_rgb").tobytes()
            assert dyn[..., 3:].tobytes() == read_field(group, "dyn_flow").tobytes()
            for name in ("window_start", "landmarks", "valid", "boxes", "scores"):
                expected = read_field(group, name)
                assert ds[name].dtype == expected.dtype and ds[name].values.tobytes() == expected.tobytes()
                assert decode_attrs(ds[name].attrs)["stored_inline"] is True


def test_the_netcdf_c_library_reads_the_file(store_folder, tmp_path):
    """ncdump (netCDF-C, not h5py's HDF5) decodes every group, variable and attribute: a valid netCDF-4 file."""
    import shutil
    import subprocess

    from fer_pipeline.export import export_netcdf

    if shutil.which("ncdump") is None:
        pytest.skip("ncdump (Debian's netcdf-bin) is not installed")
    out = tmp_path / "ec112.nc"
    export_netcdf(store_folder, out, progress=False)
    dump = subprocess.run(["ncdump", str(out)], capture_output=True, text=True, check=True).stdout  # every value
    assert dump.count("float flow(pair, y, x, uv) ;") == 3 and dump.count("ubyte rgb(frame, y, x, channel) ;") == 3
    assert "byte valid(frame) ;" in dump and 'valid:dtype = "bool" ;' in dump and "group: s1_a" in dump
    assert 'flow:store_dtype = "float16" ;' in dump and "_FillValue" not in dump
    values = subprocess.run(["ncdump", "-v", "window_start", "-g", "s1_a", str(out)], capture_output=True, text=True,
                            check=True).stdout
    assert "window_start = 0, 5 ;" in values


def test_netcdf_from_the_cli_gzip_or_none_and_a_failed_export_leaves_no_file(store_folder, tmp_path, monkeypatch,
                                                                            capsys):
    from fer_pipeline import export

    out = tmp_path / "cli.nc"
    assert cli.main(["export", str(store_folder), "--format", "netcdf", str(out), "--no-progress",
                     "--clips", "s1_b", "s2_a"]) == 0
    printed = capsys.readouterr().out
    assert "2 clips" in printed and "MB in netCDF-4" in printed
    assert _exported_clips_nc(out) == {("subject01", "s1_b"), ("subject02", "s2_a")}
    bad = tmp_path / "lzf.nc"
    assert cli.main(["export", str(store_folder), "--format", "netcdf", str(bad), "--compression", "lzf"]) == 1
    assert not bad.exists()
    # A failure midway: the previous file kept, no temporary left.
    real, written = export._netcdf_variable, []

    def failing(*args, **kwargs):
        if len(written) == 9:
            raise OSError("disk full")
        written.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "_netcdf_variable", failing)
    with pytest.raises(OSError, match="disk full"):
        export.export_netcdf(store_folder, out, progress=False)
    assert len(written) == 9 and _exported_clips_nc(out) == {("subject01", "s1_b"), ("subject02", "s2_a")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.nc", "features"]
