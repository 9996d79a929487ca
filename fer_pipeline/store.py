"""The Zarr (v3) feature store: one store per dataset shard, one group per clip, complete or absent.

Layout of ``<shard>.zarr`` (opens with plain ``zarr.open_group`` and with ``xarray.open_zarr(path,
group="clips/<clip_id>", consolidated=False)``; every array carries ``dimension_names``)::

    zarr.json                 attrs: dataset, shard, stage, parameters, code version
    clips/<clip_id>/          attrs: fingerprints (fer_pipeline.lineage), provenance (source path, size,
                              sha256), label, subject, the list of its arrays with their shapes, complete=True
        <array> ...           whatever the stage writes (see fer_pipeline.preprocess)
    <shard>.zarr.lock         beside the store while a job writes it: host, pid, start (fer-pipeline gc
                              and the next writer know a dead holder from a live one)

One writer per store: a writer takes ``<shard>.zarr.lock`` for its life (an exclusive ``flock`` on a file
that names its host and PID). A second writer stops with a message naming the holder; the lock of a
process that died on this host is taken over; a lock file left by another host is reported with the
command that clears it, since whether that job still runs cannot be told from here.

A clip is written into ``<shard>.zarr.staging/<clip_id>`` first, flushed to disk (fsync), and moved into
``clips/`` by one ``rename``. A job killed mid-write therefore leaves only a staging folder, which the next
writer (holding the lock, so no live job owns it) deletes. A clip counts as complete only when its
``complete`` mark is set and every array its attributes list is there with the listed shape, and arrays
that share a dimension name agree on its length (``pair`` is one shorter than ``frame``).

Compactness (a cluster's shared filesystem is hurt by file counts and bytes; docs/performance.md):

- every array chunked along frames is *sharded* (zarr v3's ``sharding_indexed`` codec): its chunks of one
  window's frames (the unit a reader decompresses) sit inside one file per array, so an array is two files
  (``zarr.json`` and ``c/0/...``) whatever the clip's length;
- small per-frame arrays (the face track a feature clip repeats, the window starts) are *inline*
  (``ArraySpec(inline=True)``): kept in the clip's ``zarr.json`` under ``inline`` (dims, dtype, shape,
  values, attributes) instead of as files of their own; :func:`read_field` gives them back as arrays;
- real-valued fields (optical flow, dynamic images) are *quantised*: integers ``q`` with an attribute
  ``scale`` (a number, or one per channel of the last axis), the value being ``q * scale``
  (:func:`quantise`); :func:`read_field` dequantises, so no reader sees the integers.

Readers go through :func:`read_field` (or :func:`read_rows` for rows of a plain array), which also reads
stores of the older layout (float16 arrays, one array per dynamic image, the track as arrays).
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import logging
import os
import shutil
import socket
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import zarr
import zarr.codecs

from .files import write_text_atomic
from .provenance import code_version

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """A store or clip is missing or malformed; the message names the path."""


class StoreLocked(StoreError):
    """Another job writes this store; the message names it and what to do."""


@dataclass
class ArraySpec:
    """An array to write: data, one name per dimension, and the frames per chunk along axis 0."""

    data: np.ndarray
    dims: tuple[str, ...]
    frames_per_chunk: int | None = None  # None: one chunk
    attrs: Mapping[str, Any] | None = None
    inline: bool = False  # kept in the clip's zarr.json (small arrays), not as files of its own
    codec: str = "default"  # a key of CODECS: how the chunks are laid out and compressed


# Storage orders (zarr's spec'd ``transpose`` codec, inside each chunk; readers see the logical order) and
# compressors tuned per kind of array (measured in docs/performance.md): "frames" puts each pixel's frames
# next to each other and bit-shuffles (aligned faces barely change from frame to frame: ~10 % smaller than
# zstd alone); "field" stores a quantised field channel by channel (u, then v), so that zstd sees smooth planes.
CODECS = {
    "default": None,
    "frames": {"order": (3, 1, 2, 0), "compressor": lambda level: zarr.codecs.BloscCodec(
        cname="zstd", clevel=min(9, max(1, level + 2)), shuffle=zarr.codecs.BloscShuffle.bitshuffle, typesize=1)},
    "field": {"order": (0, 3, 1, 2), "compressor": lambda level: zarr.codecs.BloscCodec(
        cname="zstd", clevel=min(9, max(1, level + 4)), shuffle=zarr.codecs.BloscShuffle.shuffle, typesize=2)},
}


def compressors(store_config: Mapping[str, Any]) -> tuple:
    name = store_config["compressor"]
    if name == "zstd":
        return (zarr.codecs.ZstdCodec(level=store_config["level"]),)
    if name == "lz4":
        return (zarr.codecs.BloscCodec(cname="lz4", clevel=min(9, store_config["level"]),
                                       shuffle=zarr.codecs.BloscShuffle.bitshuffle),)
    return ()


def _codecs(spec: ArraySpec, ndim: int, store_config: Mapping[str, Any]) -> tuple[tuple, tuple]:
    """(filters, compressors) of an array: the spec's tuned codec for 4-D arrays with the store's zstd, else
    the store's compressor as configured."""
    tuned = CODECS.get(spec.codec)
    if tuned is None or ndim != len(tuned["order"]) or store_config.get("compressor") != "zstd":
        return (), compressors(store_config)
    return (zarr.codecs.TransposeCodec(order=tuned["order"]),), (tuned["compressor"](store_config["level"]),)


# -- quantised fields ----------------------------------------------------------------------------------------

def quantise(values: np.ndarray, step: float | list[float], dtype=np.int16) -> tuple[np.ndarray, float | list[float]]:
    """``values`` as integers of ``dtype`` on a grid of ``step`` (one number, or one per channel of the last
    axis): ``round(values / step)``, the value being ``q * scale``. A step too fine for the values' range
    is doubled until they fit (never clipped); the step used is returned as the ``scale`` to record."""
    values = np.asarray(values, np.float32)
    steps = np.atleast_1d(np.asarray(step, np.float64)).copy()
    limit = np.iinfo(dtype).max
    if values.size:
        peak = (np.abs(values).max(axis=tuple(range(values.ndim - 1))) if len(steps) > 1
                else np.array([np.abs(values).max()], np.float64))
        while np.any(peak / steps > limit):
            steps = np.where(peak / steps > limit, steps * 2, steps)
    q = np.rint(values / steps.astype(np.float32)).astype(dtype)
    scale = [float(v) for v in steps] if len(steps) > 1 else float(steps[0])
    return q, scale


def dequantise(data: np.ndarray, scale: float | list[float] | None) -> np.ndarray:
    """Stored values as float32: ``data * scale`` (the last axis by channel for a list), or as they are
    when the array carries no ``scale`` (floats of the older layout)."""
    if scale is None:  # floats of the older layout (float16) as they are: readers convert them
        return np.asarray(data)
    return np.asarray(data).astype(np.float32) * np.asarray(scale, np.float32)


# Fields the clip's ``dyn`` array holds (its channels), for readers asking for one of them by name.
DYN_CHANNELS = {"dyn_rgb": (0, 3), "dyn_flow": (3, 5)}


def read_rows(array: zarr.Array, index=None) -> np.ndarray:
    """Rows ``index`` (integers along axis 0, repeats and any order allowed; None: all) of a zarr array,
    read by slices of whole chunks: zarr's orthogonal indexing decodes a sharded array's shard again for
    every chunk it touches, slices read just the chunks (and decompress each once)."""
    if index is None:
        return array[...]
    index = np.asarray(index, np.int64).reshape(-1)
    if index.size == 0:
        return np.empty((0, *array.shape[1:]), array.dtype)
    unique, inverse = np.unique(index, return_inverse=True)
    chunk = array.chunks[0]
    blocks, first = [], unique // chunk
    for c in np.unique(first):
        rows = unique[first == c]
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        blocks.append(array[lo:hi][rows - lo])
    return np.concatenate(blocks)[inverse]


def read_field(group: zarr.Group, name: str, index=None, raw: bool = False):
    """A clip's field ``name`` (rows ``index`` along its first axis, or all) as a reader wants it: quantised
    fields dequantised to float32 (``flow``, ``dyn_rgb``, ``dyn_flow``), inline arrays (the track,
    ``window_start``) from the clip's attributes, and arrays stored as they are; None when the clip has no
    such field. Reads stores of the older layout too (float16 arrays, separate dynamic images). ``raw``:
    (the stored values, their scale or None) instead, for a cache that keeps the compact integers."""
    done = (lambda data, scale: (data, scale)) if raw else dequantise
    if name in group:
        array = group[name]
        return done(read_rows(array, index), array.attrs.get("scale"))
    inline = group.attrs.get("inline", {})
    if name in inline:
        values = inline_array(inline[name])
        values = values if index is None else values[np.asarray(index, np.int64)]
        return (values, None) if raw else values
    if name in DYN_CHANNELS and "dyn" in group:
        lo, hi = DYN_CHANNELS[name]
        array = group["dyn"]
        scale = array.attrs.get("scale")
        if isinstance(scale, list):
            scale = scale[lo:hi]
        return done(np.ascontiguousarray(read_rows(array, index)[..., lo:hi]), scale)
    return None


def read_fields(group: zarr.Group, names, index=None) -> dict[str, np.ndarray | None]:
    """:func:`read_field` of several fields, reading a shared array once (both dynamic images of ``dyn``)."""
    names = list(names)
    shared = [n for n in names if n in DYN_CHANNELS and n not in group and "dyn" in group]
    out: dict[str, np.ndarray | None] = {}
    if len(shared) > 1:
        array = group["dyn"]
        rows, scale = read_rows(array, index), array.attrs.get("scale")
        for name in shared:
            lo, hi = DYN_CHANNELS[name]
            out[name] = dequantise(rows[..., lo:hi], scale[lo:hi] if isinstance(scale, list) else scale)
    for name in names:
        if name not in out:
            out[name] = read_field(group, name, index)
    return out


def field_attrs(group: zarr.Group, name: str) -> dict[str, Any]:
    """The attributes of a clip's field (an array's, an inline array's, or those of ``dyn`` for a dynamic image)."""
    if name in group:
        return dict(group[name].attrs)
    inline = group.attrs.get("inline", {})
    if name in inline:
        return dict(inline[name].get("attrs", {}))
    if name in DYN_CHANNELS and "dyn" in group:
        return dict(group["dyn"].attrs)
    raise StoreError(f"{group.store_path}: no field '{name}'")


def _inline_record(data: np.ndarray, dims: tuple[str, ...], attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    """An array as JSON: floats by the shortest decimals that give back the same value in its dtype."""
    if data.dtype.kind == "f":
        values = np.vectorize(lambda v: float(np.format_float_positional(v, unique=True, trim="-")),
                              otypes=[float])(data).tolist() if data.size else data.tolist()
    else:
        values = data.tolist()
    return {"dims": list(dims), "dtype": data.dtype.str, "shape": list(data.shape), "values": values,
            "attrs": dict(attrs or {})}


def inline_array(record: Mapping[str, Any]) -> np.ndarray:
    return np.asarray(record["values"], dtype=np.dtype(record["dtype"])).reshape(record["shape"])


# -- one writer per store -------------------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


class StoreLock:
    """An exclusive lock on ``<store>.lock`` for one writer's life (see the module docstring).

    ``flock`` does the excluding: the kernel drops it when its holder dies, however it dies. The file's
    content (host, pid, start) names the holder for the message a second writer gets, and tells a lock left
    by another host, where ``flock`` may not reach, from one of this host.
    """

    def __init__(self, store_path: Path):
        self.store_path = Path(store_path)
        self.path = self.store_path.with_name(self.store_path.name + ".lock")
        self._fd: int | None = None

    @staticmethod
    def _holder(fd: int) -> dict[str, Any]:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
        try:
            return json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            return {}

    @staticmethod
    def describe(holder: Mapping[str, Any]) -> str:
        return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
                f"since {holder.get('started', '?')}")

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                raise StoreLocked(f"{self.store_path}: another job is writing this store ({self.describe(holder)}); "
                                  f"two writers would corrupt it. Wait for that job, or stop it.") from None
            # Its previous holder may have removed the file between our open and our flock: lock the file
            # that is at the path now, not an orphaned one.
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        holder = self._holder(fd)
        if holder and holder.get("host") != host:
            os.close(fd)
            raise StoreLocked(f"{self.store_path}: locked by a job on another host ({self.describe(holder)}). If no "
                              f"job of that host writes this store any more, clear the lock: rm '{self.path}'")
        if holder and holder.get("pid") != os.getpid():
            state = "still running but not holding it" if _pid_alive(int(holder.get("pid", 0))) else "dead"
            log.warning("%s: taking over the lock of %s (%s)", self.store_path, self.describe(holder), state)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({"host": host, "pid": os.getpid(),
                                 "started": _dt.datetime.now(_dt.UTC).isoformat()}).encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder below ``root`` to disk: a rename must never publish data still in cache."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def consistency_problems(arrays: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Arrays that share a dimension name must agree on its length; ``pair`` (frame t -> t+1) is one
    shorter than ``frame``. ``arrays`` maps names to ``{"shape": [...], "dims": [...]}``."""
    lengths: dict[str, tuple[int, str]] = {}
    problems = []
    for name, spec in sorted(arrays.items()):
        for dim, size in zip(spec["dims"], spec["shape"]):
            if dim in lengths and lengths[dim][0] != size:
                problems.append(f"{name} has {size} along '{dim}' but {lengths[dim][1]} has {lengths[dim][0]}")
            lengths.setdefault(dim, (size, name))
    if "frame" in lengths and "pair" in lengths and lengths["pair"][0] != max(0, lengths["frame"][0] - 1):
        problems.append(f"{lengths['pair'][0]} flow pairs for {lengths['frame'][0]} frames")
    return problems


# -- the store ------------------------------------------------------------------------------------------------

class ShardStore:
    """Writer (``mode="a"``: takes the store's lock until :meth:`close`) or reader (``mode="r"``) of one
    shard's store. Use a writer as a context manager, or call :meth:`close`."""

    def __init__(self, path: str | Path, attrs: Mapping[str, Any] | None = None,
                 store_config: Mapping[str, Any] | None = None, mode: str = "a"):
        self.path = Path(path)
        self.staging = self.path.with_name(self.path.name + ".staging")
        self.store_config = store_config or {"compressor": "zstd", "level": 3}
        self.lock: StoreLock | None = None
        if mode == "r":
            if not (self.path / "zarr.json").is_file():
                raise StoreError(f"{self.path}: not a feature store (no zarr.json)")
            self.root = zarr.open_group(str(self.path), mode="r", zarr_format=3)
            return
        self.lock = StoreLock(self.path)
        self.lock.acquire()
        self._release = weakref.finalize(self, self.lock.release)
        self.root = zarr.open_group(str(self.path), mode="a", zarr_format=3)
        self.root.require_group("clips")
        if attrs:
            self.root.attrs.update({**attrs, "code": code_version()})
        # Whatever a killed job left half-written is never trusted; holding the lock, nobody owns it now.
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> "ShardStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------------------
    def stored_clip_ids(self) -> list[str]:
        """Ids of every clip folder under ``clips/``, complete or not, sorted."""
        clips = self.path / "clips"
        if not clips.is_dir():
            return []
        return sorted(p.name for p in clips.iterdir() if (p / "zarr.json").is_file())

    def clip_ids(self) -> list[str]:
        """Ids of the clips that are complete (:meth:`clip_problems` finds nothing), sorted."""
        return [clip_id for clip_id in self.stored_clip_ids() if not self.clip_problems(clip_id)]

    def clip_attrs(self, clip_id: str) -> dict[str, Any]:
        meta = _read_json(self.path / "clips" / clip_id / "zarr.json")
        if meta is None:
            raise StoreError(f"{self.path}: no clip '{clip_id}'")
        return dict(meta.get("attributes", {}))

    def clip_state(self, clip_id: str) -> tuple[dict[str, Any], list[str]]:
        """The clip's attributes and why it is not complete (an empty list when it is), from one read of its
        metadata; an absent clip has no attributes."""
        meta = _read_json(self.path / "clips" / clip_id / "zarr.json")
        if meta is None:
            return {}, ["absent"]
        attrs = dict(meta.get("attributes", {}))
        return attrs, self._problems(clip_id, attrs)

    def clip_problems(self, clip_id: str) -> list[str]:
        """Why clip ``clip_id`` is not complete: an empty list when it is."""
        return self.clip_state(clip_id)[1]

    def _problems(self, clip_id: str, attrs: Mapping[str, Any]) -> list[str]:
        """What a clip with attributes ``attrs`` lacks: its mark, its list of arrays, an array or a shape."""
        if attrs.get("complete") is not True:
            return ["not marked complete"]
        arrays = attrs.get("arrays")
        if not isinstance(arrays, dict) or not arrays:
            return ["no list of its arrays (written by an older version of fer-pipeline)"]
        folder = self.path / "clips" / clip_id
        problems = []
        inline = attrs.get("inline") or {}
        for name, spec in arrays.items():
            if spec.get("inline"):
                if name not in inline or list(inline[name].get("shape", [])) != list(spec["shape"]):
                    problems.append(f"inline array '{name}' is missing or has another shape")
                continue
            array = _read_json(folder / name / "zarr.json")
            if array is None or array.get("node_type") != "array":
                problems.append(f"array '{name}' is missing")
            elif list(array["shape"]) != list(spec["shape"]):
                problems.append(f"array '{name}' has shape {array['shape']}, its clip says {spec['shape']}")
        return problems + consistency_problems(arrays)

    def is_complete(self, clip_id: str, fingerprint: Mapping[str, Any]) -> bool:
        """True when the clip was made from the same inputs and parameters and is complete (the arrays are
        only looked at when the fingerprint matches)."""
        meta = _read_json(self.path / "clips" / clip_id / "zarr.json")
        attrs = meta.get("attributes", {}) if meta is not None else None
        if attrs is None or any(attrs.get(k) != v for k, v in fingerprint.items()):
            return False
        return not self._problems(clip_id, attrs)

    def clip(self, clip_id: str) -> zarr.Group:
        path = self.path / "clips" / clip_id
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{self.path}: no clip '{clip_id}'")
        return zarr.open_group(str(path), mode="r", zarr_format=3)

    # -- writing ------------------------------------------------------------------------------------------
    def _writable(self) -> None:
        if self.lock is None or not self.lock.held:
            raise StoreError(f"{self.path}: opened for reading, or closed: no write without the store's lock")

    def write_clip(self, clip_id: str, arrays: Mapping[str, ArraySpec], attrs: Mapping[str, Any]) -> None:
        """Write all arrays of a clip, flush them, then publish the clip with one rename (replacing an older
        version)."""
        self._writable()
        staged = self.staging / clip_id
        shutil.rmtree(staged, ignore_errors=True)
        group = zarr.open_group(str(staged), mode="w", zarr_format=3)
        listed, inline = {}, {}
        for name, spec in arrays.items():
            data = np.ascontiguousarray(spec.data)
            if len(spec.dims) != data.ndim:
                raise StoreError(f"{clip_id}/{name}: {len(spec.dims)} dimension names for {data.ndim} axes")
            listed[name] = {"shape": list(data.shape), "dims": list(spec.dims)}
            if spec.inline:
                inline[name] = _inline_record(data, spec.dims, spec.attrs)
                listed[name]["inline"] = True
                continue
            chunks = list(data.shape) or None
            shards = None
            if spec.frames_per_chunk and data.ndim and data.shape[0]:
                chunks[0] = min(spec.frames_per_chunk, data.shape[0])
                if data.shape[0] > chunks[0]:  # every chunk in one file: the shard is the whole array
                    shards = (-(-data.shape[0] // chunks[0]) * chunks[0], *data.shape[1:])
            filters, compressors_ = _codecs(spec, data.ndim, self.store_config)
            array = group.create_array(
                name, shape=data.shape, dtype=data.dtype, chunks=tuple(max(1, c) for c in chunks) if chunks else None,
                shards=shards, filters=filters, compressors=compressors_, dimension_names=spec.dims, fill_value=0,
            )
            if data.size:
                array[...] = data
            if spec.attrs:
                array.attrs.update(dict(spec.attrs))
        problems = consistency_problems(listed)
        if problems:
            raise StoreError(f"{self.path}: clip '{clip_id}' is inconsistent: {'; '.join(problems)}")
        # The completion mark, with the list of arrays it vouches for, is the last thing written.
        group.attrs.update({**attrs, "clip_id": clip_id, "created": _dt.datetime.now(_dt.UTC).isoformat(),
                            **({"inline": inline} if inline else {}), "arrays": listed, "complete": True})
        _fsync_tree(staged)
        target = self.path / "clips" / clip_id
        if target.exists():
            trash = self.staging / f".old-{clip_id}"
            os.replace(target, trash)
            shutil.rmtree(trash)
        os.replace(staged, target)
        _fsync_dir(target.parent)

    def update_clip_attrs(self, clip_id: str, updates: Mapping[str, Any]) -> None:
        """Change attributes of a published clip (a relabelled clip's label) without touching its arrays:
        the group's ``zarr.json`` is replaced in one rename, so a kill leaves the old or the new one."""
        self._writable()
        path = self.path / "clips" / clip_id / "zarr.json"
        meta = _read_json(path)
        if meta is None:
            raise StoreError(f"{self.path}: no clip '{clip_id}'")
        meta["attributes"] = {**meta.get("attributes", {}), **updates}
        write_text_atomic(path, json.dumps(meta, indent=2))

    def remove_clip(self, clip_id: str) -> None:
        """Delete a clip (stale: no longer in the manifest, or made from other inputs)."""
        self._writable()
        target = self.path / "clips" / clip_id
        if target.exists():
            trash = self.staging / f".removed-{clip_id}"
            self.staging.mkdir(parents=True, exist_ok=True)
            os.replace(target, trash)
            shutil.rmtree(trash)

    def close(self) -> None:
        if self.lock is not None and self.lock.held:
            shutil.rmtree(self.staging, ignore_errors=True)
            self._release()


def shard_stores(folder: str | Path) -> list[ShardStore]:
    """Every shard store (``*.zarr``) in a folder, sorted by name, whatever made it: for inspection and
    clean-up. Studies read through fer_pipeline.windows.index_clips, which takes what the manifest lists."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StoreError(f"{folder}: no such feature-store folder")
    return [ShardStore(p, mode="r") for p in sorted(folder.glob("*.zarr")) if (p / "zarr.json").is_file()]


def iter_clips(folder: str | Path) -> Iterable[tuple[ShardStore, str]]:
    for shard in shard_stores(folder):
        for clip_id in shard.clip_ids():
            yield shard, clip_id


def clip_footprint(store_path: str | Path, clip_id: str) -> tuple[int, int]:
    """(bytes, files) a clip takes on disk: what a shared filesystem pays for it."""
    folder = Path(store_path) / "clips" / clip_id
    size = files = 0
    for root, _, names in os.walk(folder):
        for name in names:
            size += os.path.getsize(os.path.join(root, name))
            files += 1
    return size, files
