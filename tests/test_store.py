"""The Zarr feature store: round trip, what a killed writer leaves, resumption, plain-zarr/xarray access."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr
import zarr

from fer_pipeline.store import ArraySpec, ShardStore, StoreError, iter_clips


def _arrays(seed=0, frames=20):
    rng = np.random.default_rng(seed)
    return {
        "rgb": ArraySpec(rng.integers(0, 255, (frames, 8, 8, 3), dtype=np.uint8), ("frame", "y", "x", "channel"), 16),
        "flow": ArraySpec(rng.normal(size=(frames - 1, 8, 8, 2)).astype(np.float16), ("pair", "y", "x", "uv"), 16),
        "valid": ArraySpec(np.ones(frames, bool), ("frame",)),
    }


FP = {"source_sha256": "abc", "parameters_sha256": "p1"}


def test_round_trip_keeps_arrays_dims_chunks_and_provenance(tmp_path):
    store = ShardStore(tmp_path / "s.zarr", attrs={"stage": "features", "shard": "s"})
    arrays = _arrays()
    store.write_clip("c1", arrays, {**FP, "source": {"path": "/x.avi", "sha256": "abc"}, "label": "fear"})
    reader = ShardStore(tmp_path / "s.zarr", mode="r")
    assert reader.clip_ids() == ["c1"]
    group = reader.clip("c1")
    for name, spec in arrays.items():
        np.testing.assert_array_equal(group[name][...], spec.data)
        assert group[name].dtype == spec.data.dtype
        assert tuple(group[name].metadata.dimension_names) == spec.dims
    assert group["rgb"].chunks == (16, 8, 8, 3)  # one window's frames per chunk
    assert group["rgb"].compressors  # compressed
    assert group.attrs["source"]["path"] == "/x.avi" and group.attrs["complete"] is True
    assert reader.root.attrs["code"]["version"]
    assert reader.is_complete("c1", FP) and not reader.is_complete("c1", {**FP, "parameters_sha256": "p2"})
    # Plain zarr and xarray open it without this package's help.
    plain = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert plain["clips/c1/rgb"].shape == (20, 8, 8, 3)
    ds = xr.open_zarr(str(tmp_path / "s.zarr"), group="clips/c1", consolidated=False)
    assert ds["rgb"].dims == ("frame", "y", "x", "channel") and ds.sizes["pair"] == 19


def test_rewriting_a_clip_replaces_it(tmp_path):
    store = ShardStore(tmp_path / "s.zarr")
    store.write_clip("c1", _arrays(0), FP)
    store.write_clip("c1", _arrays(1), {**FP, "parameters_sha256": "p2"})
    group = ShardStore(tmp_path / "s.zarr", mode="r").clip("c1")
    np.testing.assert_array_equal(group["rgb"][...], _arrays(1)["rgb"].data)
    assert group.attrs["parameters_sha256"] == "p2"


def test_a_writer_killed_mid_clip_leaves_no_clip_that_reads_as_complete(tmp_path):
    """A real process is killed (SIGKILL) while writing its second clip; the first stays, the second is absent."""
    path = tmp_path / "s.zarr"
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from fer_pipeline import store as st
        s = st.ShardStore({str(path)!r})
        s.write_clip("done", {{"x": st.ArraySpec(np.ones((4, 4)), ("a", "b"))}}, {{"complete_marker": 1}})
        real = st.zarr.Group.create_array
        def dying(self, name, **kw):
            if name == "second":
                os.kill(os.getpid(), signal.SIGKILL)  # die between two arrays of one clip
            return real(self, name, **kw)
        st.zarr.Group.create_array = dying
        s.write_clip("half", {{"first": st.ArraySpec(np.ones(3), ("a",)), "second": st.ArraySpec(np.ones(3), ("a",))}}, {{}})
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -9, result.stderr.decode()
    assert (tmp_path / "s.zarr.staging" / "half").exists()  # the half-written clip is in staging only
    reader = ShardStore(path, mode="r")
    assert reader.clip_ids() == ["done"]
    with pytest.raises(StoreError):
        reader.clip("half")
    # The next writer clears the leftovers and can write the clip.
    writer = ShardStore(path)
    assert not (tmp_path / "s.zarr.staging").exists()
    writer.write_clip("half", _arrays(), FP)
    assert ShardStore(path, mode="r").clip_ids() == ["done", "half"]


def test_a_clip_folder_without_the_complete_mark_is_not_trusted(tmp_path):
    store = ShardStore(tmp_path / "s.zarr")
    store.write_clip("c1", _arrays(), FP)
    group = zarr.open_group(str(tmp_path / "s.zarr" / "clips" / "c1"), mode="a")
    group.attrs["complete"] = False  # e.g. copied by hand from a staging folder
    reader = ShardStore(tmp_path / "s.zarr", mode="r")
    assert reader.clip_ids() == [] and not reader.is_complete("c1", FP)


def test_errors_name_the_path(tmp_path):
    with pytest.raises(StoreError, match="not a feature store"):
        ShardStore(tmp_path / "nothing.zarr", mode="r")
    with pytest.raises(StoreError, match="dimension names"):
        ShardStore(tmp_path / "s.zarr").write_clip("c", {"x": ArraySpec(np.ones((2, 2)), ("a",))}, FP)
    with pytest.raises(StoreError, match="no such feature-store folder"):
        list(iter_clips(tmp_path / "absent"))


def test_a_clip_whose_arrays_are_gone_is_not_complete(tmp_path):
    """An orphaned writer's clip: marked complete, but an array it lists was deleted under it."""
    import shutil

    with ShardStore(tmp_path / "s.zarr") as store:
        store.write_clip("c1", _arrays(), FP)
        store.write_clip("c2", _arrays(), FP)
    shutil.rmtree(tmp_path / "s.zarr" / "clips" / "c1" / "flow")
    reader = ShardStore(tmp_path / "s.zarr", mode="r")
    assert reader.clip_ids() == ["c2"] and not reader.is_complete("c1", FP)
    assert reader.clip_problems("c1") == ["array 'flow' is missing"]


def test_arrays_that_disagree_on_a_dimension_are_refused(tmp_path):
    arrays = {**_arrays(frames=20), "valid": ArraySpec(np.ones(19, bool), ("frame",))}
    with ShardStore(tmp_path / "s.zarr") as store, pytest.raises(StoreError, match="along 'frame'"):
        store.write_clip("c1", arrays, FP)
    flow_of_other_clip = {**_arrays(frames=20), "flow": _arrays(frames=25)["flow"]}
    with ShardStore(tmp_path / "s.zarr") as store, pytest.raises(StoreError, match="24 flow pairs for 20 frames"):
        store.write_clip("c1", flow_of_other_clip, FP)


HOLDER = textwrap.dedent("""
    import sys, time
    from fer_pipeline.store import ShardStore
    store = ShardStore(sys.argv[1])
    print("holding", flush=True)
    time.sleep(60)
""")


def test_a_second_writer_stops_naming_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
    import socket

    from fer_pipeline.store import StoreLocked

    path = tmp_path / "s.zarr"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(StoreLocked, match=f"another job is writing this store \\(host {socket.gethostname()}, "
                                              f"pid {holder.pid}"):
            ShardStore(path)
        ShardStore(path, mode="r")  # readers are not stopped
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL leaves the lock file behind; its process is dead, so the next writer takes it over.
    assert path.with_name("s.zarr.lock").is_file()
    with ShardStore(path) as store:
        store.write_clip("c1", _arrays(), FP)
    assert not path.with_name("s.zarr.lock").exists()  # released on close


def test_a_lock_left_by_another_host_is_reported_with_the_command_that_clears_it(tmp_path):
    import json

    from fer_pipeline.store import StoreLocked

    lock = tmp_path / "s.zarr.lock"
    lock.write_text(json.dumps({"host": "gpu-node-17", "pid": 4242, "started": "2026-12-01T10:00:00"}))
    with pytest.raises(StoreLocked, match=f"host gpu-node-17, pid 4242.*rm '{lock}'"):
        ShardStore(tmp_path / "s.zarr")
    lock.unlink()
    ShardStore(tmp_path / "s.zarr").close()


def test_a_reader_cannot_write(tmp_path):
    ShardStore(tmp_path / "s.zarr").close()
    with pytest.raises(StoreError, match="no write without the store's lock"):
        ShardStore(tmp_path / "s.zarr", mode="r").write_clip("c1", _arrays(), FP)
