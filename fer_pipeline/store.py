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

- every array chunked along frames is *sharded* (zarr v3's ``sharding_indexed`` codec): its chunks (the
  unit a reader decompresses: the window stride's frames, :func:`window_chunk`, so that a window is two
  whole chunks) sit inside one file per array, so an array is two files (``zarr.json`` and ``c/0/...``)
  whatever the clip's length;
- small per-frame arrays (the face track a feature clip repeats, the window starts) are *inline*
  (``ArraySpec(inline=True)``): kept in the clip's ``zarr.json`` under ``inline`` (dims, dtype, shape,
  values, attributes) instead of as files of their own; :func:`read_field` gives them back as arrays;
- real-valued fields (optical flow, dynamic images) are *quantised*: integers ``q`` with an attribute
  ``scale`` (a number, or one per channel of the last axis), the value being ``q * scale``
  (:func:`quantise`); :func:`read_field` dequantises, so no reader sees the integers.

Readers go through :func:`read_field` (or :func:`read_rows` for rows of a plain array), which also reads
stores of the older layouts (float16 arrays, one array per dynamic image, the track as arrays; chunks of a
whole window). :class:`ClipReader` gives the same values, bit for bit, without zarr's machinery per call
(each array's metadata and shard index read once per process and checked against the files on every read):
what training windows and clips' frames are read through (fer_pipeline.windows.WindowDataset,
fer_pipeline.frames.ClipRows; docs/performance.md).
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
# zstd alone), the whole chunk one blosc block (up to 4 MiB: 3 % smaller and ~25 % faster to decompress than
# blosc's 128 KiB blocks); "field" stores a quantised field channel by channel (u, then v), so that zstd sees
# smooth planes.
CODECS = {
    "default": None,
    "frames": {"order": (3, 1, 2, 0), "compressor": lambda level: zarr.codecs.BloscCodec(
        cname="zstd", clevel=min(9, max(1, level + 2)), shuffle=zarr.codecs.BloscShuffle.bitshuffle, typesize=1,
        blocksize=1 << 22)},
    "field": {"order": (0, 3, 1, 2), "compressor": lambda level: zarr.codecs.BloscCodec(
        cname="zstd", clevel=min(9, max(1, level + 4)), shuffle=zarr.codecs.BloscShuffle.shuffle, typesize=2)},
}


def window_chunk(window: Mapping[str, Any] | None) -> int:
    """Frames per chunk of a clip's arrays along frames: the window stride when it divides the window length
    (windows start every ``stride`` frames, so each reads ``length / stride`` whole chunks and decompresses
    nothing it does not return, but the last window of a clip, aligned to its end), else the length; 16 for a
    preset without windows."""
    if not window:
        return 16
    length, stride = int(window["length"]), int(window["stride"])
    return stride if 0 < stride <= length and length % stride == 0 else length


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
    values = np.asarray(data).astype(np.float32)  # a new array: multiplied in place, the same values
    values *= np.asarray(scale, np.float32)
    return values


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


# -- direct reads: a clip's chunks without zarr's per-call machinery -------------------------------------------
#
# Through zarr every read of a window's field costs ~2-5 ms whatever its size (its event loop, a metadata
# read per array opened, the shard index read again per call, numpy's transpose codec); the chunks' own
# decompression is ~0.1-0.6 ms (docs/performance.md). ClipReader reads the same bytes itself: each array's
# zarr.json and each shard's index once per process (checked against the files on every read, so a clip
# rewritten since is read again), one read per chunk, decoded with the codecs its zarr.json names
# (numcodecs' blosc, zstd, gzip; crc32c), OpenCV's transpose for the storage order. Arrays with anything
# else in their metadata are read through zarr (read_field): the values are the same either way.

_MAX_UINT64 = 2**64 - 1
_NUMERIC = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
            "float16", "float32", "float64"}


@dataclass(frozen=True)
class _ViaZarr:
    """An array ClipReader leaves to zarr (``meta_id``: the version of its zarr.json that said so)."""

    meta_id: tuple[int, ...]


class _Unsupported(Exception):
    """Something the direct reader does not read itself: zarr does."""


def _file_id(st: os.stat_result) -> tuple[int, ...]:
    """What tells one version of a file from the next: a rewritten clip's files are new files."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _transpose_rows(x: np.ndarray) -> np.ndarray:
    """(batch, rows, cols) -> (batch, cols, rows), C-contiguous: OpenCV's transpose copies elements by their
    size (no arithmetic), ~20x faster than numpy's strided copy for a window's frames."""
    batch, rows, cols = x.shape
    if rows == 1 or cols == 1 or x.size == 0:
        return np.ascontiguousarray(x).reshape(batch, cols, rows)
    size = x.dtype.itemsize
    if size not in (1, 2, 4, 8) or max(rows, cols) >= 2**31:
        return np.ascontiguousarray(x.transpose(0, 2, 1))
    import cv2

    x = np.ascontiguousarray(x)
    view = x.view({1: np.uint8, 2: np.uint16, 4: np.int32, 8: np.int32}[size])
    if size == 8:  # two int32 channels: one element of 8 bytes to OpenCV
        view = view.reshape(batch, rows, cols, 2)
    out = np.empty((batch, cols, rows, *view.shape[3:]), view.dtype)
    for b in range(batch):
        out[b] = cv2.transpose(view[b])
    return out.view(x.dtype).reshape(batch, cols, rows)


def _permute(a: np.ndarray, perm) -> np.ndarray:
    """``np.ascontiguousarray(a.transpose(perm))``, as a few batched 2-D transposes (:func:`_transpose_rows`):
    each moves the axis that belongs next to its place, with the axes after it."""
    perm = [int(p) for p in perm]
    a = np.ascontiguousarray(a)
    while True:
        n, b = len(perm), 0
        while b < n and perm[b] == b:
            b += 1
        if b >= n - 1:
            return a
        j, shape = perm[b], a.shape
        x = a.reshape(int(np.prod(shape[:b], dtype=np.int64)), int(np.prod(shape[b:j], dtype=np.int64)),
                      int(np.prod(shape[j:], dtype=np.int64)))
        a = _transpose_rows(x).reshape(*shape[:b], *shape[j:], *shape[b:j])
        axes = list(range(b)) + list(range(j, n)) + list(range(b, j))  # a's axes, as the old ones
        perm = [axes.index(p) for p in perm]


def _crc32c_strip(data: bytes) -> bytes:
    import google_crc32c

    if len(data) < 4 or np.uint32(google_crc32c.value(data[:-4])).tobytes() != bytes(data[-4:]):
        raise StoreError("checksum (crc32c) mismatch")
    return data[:-4]


def _decoder(codec: Mapping[str, Any]):
    """A bytes -> bytes decoder for one codec of an array's zarr.json."""
    name = codec.get("name")
    if name == "blosc":
        from numcodecs import blosc

        return blosc.decompress  # blosc frames describe themselves (typesize, shuffle, compressor)
    if name == "zstd":
        from numcodecs.zstd import Zstd

        return Zstd().decode
    if name == "gzip":
        from numcodecs.gzip import GZip

        return GZip().decode
    if name == "crc32c":
        return _crc32c_strip
    raise _Unsupported(f"codec {name}")


class _DirectArray:
    """One array's layout, from its zarr.json: chunks along axis 0 only (each chunk every other axis whole),
    unsharded (a file per chunk) or sharded (``sharding_indexed``, shards along axis 0 only)."""

    def __init__(self, folder: Path, meta: Mapping[str, Any], meta_id: tuple[int, ...]):
        self.folder, self.meta_id = folder, meta_id
        self.attrs = dict(meta.get("attributes") or {})
        if meta.get("node_type") != "array" or meta.get("zarr_format") != 3 or meta.get("storage_transformers"):
            raise _Unsupported("not a plain zarr v3 array")
        self.shape = tuple(int(s) for s in meta["shape"])
        if not self.shape or meta.get("data_type") not in _NUMERIC:
            raise _Unsupported("0-d array or not a numeric data type")
        self.dtype = np.dtype(meta["data_type"])
        fill = meta.get("fill_value")
        if isinstance(fill, str) or fill is None:
            raise _Unsupported("fill value")
        self.fill = np.array(fill).astype(self.dtype)
        grid = meta.get("chunk_grid") or {}
        if grid.get("name") != "regular":
            raise _Unsupported("chunk grid")
        outer = [int(c) for c in grid["configuration"]["chunk_shape"]]
        keys = meta.get("chunk_key_encoding") or {}
        if keys.get("name") == "default":
            self._sep, self._prefix = (keys.get("configuration") or {}).get("separator", "/"), ["c"]
        elif keys.get("name") == "v2":
            self._sep, self._prefix = (keys.get("configuration") or {}).get("separator", "."), []
        else:
            raise _Unsupported("chunk key encoding")
        codecs = list(meta.get("codecs") or [])
        if codecs and codecs[0].get("name") == "sharding_indexed":
            if len(codecs) != 1:
                raise _Unsupported("codecs after sharding")
            config = codecs[0]["configuration"]
            inner = [int(c) for c in config["chunk_shape"]]
            if inner[1:] != outer[1:] or outer[0] % inner[0]:
                raise _Unsupported("inner chunks")
            index_codecs = [c.get("name") for c in config.get("index_codecs", [])]
            endian = (config.get("index_codecs") or [{}])[0].get("configuration", {}).get("endian")
            if index_codecs not in (["bytes"], ["bytes", "crc32c"]) or endian != "little":
                raise _Unsupported("shard index codecs")
            if config.get("index_location", "end") not in ("start", "end"):
                raise _Unsupported("shard index location")
            self.per_shard = outer[0] // inner[0]
            self.index_crc = index_codecs[-1] == "crc32c"
            self.index_end = config.get("index_location", "end") == "end"
            self.chunk_shape, codecs = tuple(inner), list(config.get("codecs") or [])
        else:
            self.per_shard, self.chunk_shape = None, tuple(outer)
        if list(self.chunk_shape[1:]) != list(self.shape[1:]) or self.chunk_shape[0] < 1:
            raise _Unsupported("chunked along more than the first axis")
        self.chunk_rows = self.chunk_shape[0]
        self.order = list(range(len(self.shape)))
        if codecs and codecs[0].get("name") == "transpose":
            order = codecs.pop(0).get("configuration", {}).get("order")
            if not isinstance(order, list) or sorted(order) != self.order:
                raise _Unsupported("transpose order")
            self.order = [int(o) for o in order]
        if not codecs or codecs[0].get("name") != "bytes":
            raise _Unsupported("array -> bytes codec")
        endian = (codecs.pop(0).get("configuration") or {}).get("endian")
        if self.dtype.itemsize > 1 and endian not in ("little", "big"):
            raise _Unsupported("byte order")
        self.stored_dtype = self.dtype.newbyteorder("<" if endian != "big" else ">") if self.dtype.itemsize > 1 \
            else self.dtype
        self.decoders = [_decoder(c) for c in reversed(codecs)]
        self.stored_shape = tuple(self.chunk_shape[o] for o in self.order)
        self._index: dict[str, tuple[tuple[int, ...], np.ndarray]] = {}  # shard key: (file id, index)

    def _key(self, coord: int) -> Path:
        return self.folder.joinpath(self._sep.join(self._prefix + [str(coord)] + ["0"] * (len(self.shape) - 1)))

    def _shard_index(self, fd: int, key: str, fid: tuple[int, ...], size: int) -> np.ndarray:
        """The shard's (offset, length) per chunk: read once per version of the file (``fid``)."""
        cached = self._index.get(key)
        if cached is not None and cached[0] == fid:
            return cached[1]
        nbytes = 16 * self.per_shard + 4 * self.index_crc
        raw = os.pread(fd, nbytes, size - nbytes if self.index_end else 0)
        if len(raw) != nbytes:
            raise StoreError(f"{key}: shard shorter than its index")
        if self.index_crc:
            try:
                raw = _crc32c_strip(raw)
            except StoreError as exc:
                raise StoreError(f"{key}: shard index: {exc}") from None
        index = np.frombuffer(raw, "<u8").reshape(self.per_shard, 2)
        self._index[key] = (fid, index)
        return index

    def _raw_chunks(self, chunks: Iterable[int]) -> dict[int, bytes | None]:
        """The stored bytes of each chunk (None: never written, i.e. all fill value), one read per chunk."""
        out: dict[int, bytes | None] = {}
        files: dict[int, list[int]] = {}
        for c in chunks:
            files.setdefault(c // self.per_shard if self.per_shard else c, []).append(c)
        for coord, members in files.items():
            path = self._key(coord)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                out.update({c: None for c in members})
                continue
            try:
                st = os.fstat(fd)
                if not self.per_shard:
                    out[members[0]] = os.pread(fd, st.st_size, 0)
                    continue
                index = self._shard_index(fd, str(path), _file_id(st), st.st_size)
                for c in members:
                    offset, length = (int(v) for v in index[c % self.per_shard])
                    if offset == _MAX_UINT64:
                        out[c] = None
                        continue
                    out[c] = os.pread(fd, length, offset)
                    if len(out[c]) != length:
                        raise StoreError(f"{path}: chunk {c} is cut short")
            finally:
                os.close(fd)
        return out

    def _decode(self, raw: bytes | None, axes: list[int]) -> np.ndarray:
        """A chunk's rows with the logical axes ``axes`` (a permutation of the array's), C-contiguous."""
        if raw is None:
            return np.full(tuple(self.chunk_shape[a] for a in axes), self.fill, self.dtype)
        for decode in self.decoders:
            raw = decode(raw)
        data = np.frombuffer(raw, self.stored_dtype)
        if data.size != int(np.prod(self.stored_shape, dtype=np.int64)):
            raise StoreError(f"{self.folder}: a chunk decodes to {data.size} values, not {self.stored_shape}")
        data = data.reshape(self.stored_shape)  # stored axis i is the array's axis order[i]
        return _permute(data, [self.order.index(a) for a in axes])

    def rows(self, index: np.ndarray, channels_first: bool = False) -> np.ndarray:
        """Rows ``index`` of the array (its stored values, native byte order); ``channels_first`` moves the
        last axis to the second place (arrays of 3 axes and more)."""
        axes = list(range(len(self.shape)))
        if channels_first and len(axes) >= 3:
            axes = [0, axes[-1], *axes[1:-1]]
        index = np.asarray(index, np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= self.shape[0]):
            raise _Unsupported("rows outside the array")  # zarr says what it says
        out = np.empty((index.size, *(self.shape[a] for a in axes[1:])), self.dtype.newbyteorder("="))
        chunk_of = index // self.chunk_rows
        for c, raw in self._raw_chunks(np.unique(chunk_of).tolist()).items():
            block = self._decode(raw, axes)
            where = np.flatnonzero(chunk_of == c)
            local = index[where] - c * self.chunk_rows
            if np.all(np.diff(where) == 1) and np.all(np.diff(local) == 1):
                out[where[0]:where[-1] + 1] = block[local[0]:local[-1] + 1]
            else:
                out[where] = block[local]
        return out


def _dequantise_moved(data: np.ndarray, scale, channels_first: bool) -> np.ndarray:
    """:func:`dequantise` of rows whose channels (``scale``'s list) are axis 1 rather than the last."""
    if scale is None or not channels_first or data.ndim < 3 or np.ndim(scale) == 0:
        return dequantise(data, scale)
    values = np.asarray(data).astype(np.float32)
    values *= np.asarray(scale, np.float32).reshape(-1, *([1] * (data.ndim - 2)))
    return values


class ClipReader:
    """A clip's fields as :func:`read_field` gives them, bit for bit, read without zarr's per-call machinery
    (see above); for the training windows' random access (fer_pipeline.windows.WindowDataset).

    ``channels_first`` (``field``, ``fields``): rows with their last axis (channels) second, (N, C, H, W) as
    a network takes them, with no extra copy. Per process: each array's metadata and each shard's index are
    kept after their first read, and on every read checked against their files (inode, size, times): a
    clip rewritten (a new version is new files, published by one rename) is read anew, never through its
    old index. Holds no open file between reads (fork-safe); pickles as its path alone (caches rebuilt in
    the process that unpickles it). Arrays of an unusual layout are read through zarr (``group``).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise StoreError(f"{self.path.parent.parent}: no clip '{self.path.name}'")
        self._reset()

    def _reset(self) -> None:
        self._arrays: dict[str, _DirectArray | _ViaZarr] = {}
        self._meta: tuple[tuple[int, ...], dict[str, Any]] | None = None
        self._inline: dict[str, np.ndarray] = {}
        self._group: zarr.Group | None = None

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.path = state["path"]
        self._reset()

    @property
    def group(self) -> zarr.Group:
        """The clip's zarr group (opened on first use): what anything the direct reader leaves reads."""
        if self._group is None:
            self._group = zarr.open_group(str(self.path), mode="r", zarr_format=3)
        return self._group

    @staticmethod
    def _read_meta(path: Path) -> tuple[tuple[int, ...], dict[str, Any]] | None:
        try:
            with open(path, "rb") as f:
                return _file_id(os.fstat(f.fileno())), json.loads(f.read())
        except (FileNotFoundError, NotADirectoryError):
            return None

    def attrs(self) -> dict[str, Any]:
        """The clip group's attributes (its zarr.json, read again when it changed)."""
        path = self.path / "zarr.json"
        try:
            fid = _file_id(os.stat(path))
        except FileNotFoundError:
            raise StoreError(f"{self.path}: the clip is gone") from None
        if self._meta is None or self._meta[0] != fid:
            meta = self._read_meta(path)
            if meta is None:
                raise StoreError(f"{self.path}: the clip is gone")
            self._meta, self._inline = (meta[0], dict(meta[1].get("attributes") or {})), {}
        return self._meta[1]

    def _array(self, name: str) -> _DirectArray | _ViaZarr | None:
        """The array ``name`` (its layout, or _ViaZarr), None when the clip has none."""
        path = self.path / name / "zarr.json"
        try:
            fid = _file_id(os.stat(path))
        except (FileNotFoundError, NotADirectoryError):
            self._arrays.pop(name, None)
            return None
        known = self._arrays.get(name)
        if known is not None and known.meta_id == fid:
            return known
        meta = self._read_meta(path)
        if meta is None:
            return None
        try:
            self._arrays[name] = _DirectArray(self.path / name, meta[1], meta[0])
        except (_Unsupported, KeyError, TypeError, ValueError) as exc:
            log.debug("%s/%s: read through zarr (%s)", self.path, name, exc)
            self._arrays[name] = _ViaZarr(meta[0])
        return self._arrays[name]

    @staticmethod
    def _rows(array: _DirectArray, index, channels_first: bool) -> np.ndarray:
        return array.rows(np.arange(array.shape[0]) if index is None else index, channels_first)

    def _through_zarr(self, name: str, index, channels_first: bool):
        value = read_field(self.group, name, index)
        if channels_first and value is not None and value.ndim >= 3:
            value = np.ascontiguousarray(np.moveaxis(value, -1, 1))
        return value

    def field(self, name: str, index=None, channels_first: bool = False):
        """:func:`read_field` (``group``, ``name``, ``index``) of this clip: the same values."""
        try:
            array = self._array(name)
            if isinstance(array, _ViaZarr):
                return self._through_zarr(name, index, channels_first)
            if array is not None:
                return _dequantise_moved(self._rows(array, index, channels_first), array.attrs.get("scale"),
                                         channels_first)
            inline = self.attrs().get("inline", {})
            if name in inline:
                if name not in self._inline:
                    self._inline[name] = inline_array(inline[name])
                values = self._inline[name]
                values = values.copy() if index is None else values[np.asarray(index, np.int64)]
                return np.ascontiguousarray(np.moveaxis(values, -1, 1)) if channels_first and values.ndim >= 3 \
                    else values
            if name in DYN_CHANNELS:
                return self.fields([name], index, channels_first)[name]
            return None
        except _Unsupported:
            return self._through_zarr(name, index, channels_first)

    def fields(self, names, index=None, channels_first: bool = False) -> dict[str, np.ndarray | None]:
        """:func:`read_fields`: several fields, a shared array (``dyn``) read once."""
        names = list(names)
        out: dict[str, np.ndarray | None] = {}
        shared = [n for n in names if n in DYN_CHANNELS and self._array(n) is None]
        dyn = self._array("dyn") if shared else None
        if isinstance(dyn, _DirectArray):
            try:
                rows = self._rows(dyn, index, channels_first)
            except _Unsupported:
                rows = None
            if rows is not None:
                scale = dyn.attrs.get("scale")
                for name in shared:
                    lo, hi = DYN_CHANNELS[name]
                    part = rows[:, lo:hi] if channels_first and rows.ndim >= 3 else rows[..., lo:hi]
                    out[name] = _dequantise_moved(np.ascontiguousarray(part),
                                                  scale[lo:hi] if isinstance(scale, list) else scale, channels_first)
        for name in names:
            if name in out:
                continue
            if name in shared:  # dyn through zarr, or no dyn (an inline array of that name: read_field's order)
                out[name] = self._through_zarr(name, index, channels_first)
            else:
                out[name] = self.field(name, index, channels_first)
        return out

    def shape(self, name: str) -> tuple[int, ...] | None:
        """The shape of the clip's array (or inline array) ``name``, from its metadata; None when it has none."""
        array = self._array(name)
        if isinstance(array, _DirectArray):
            return array.shape
        if isinstance(array, _ViaZarr):
            return tuple(self.group[name].shape)
        inline = self.attrs().get("inline", {})
        if name in inline:
            return tuple(int(s) for s in inline[name]["shape"])
        return None

    def field_attrs(self, name: str) -> dict[str, Any]:
        """:func:`field_attrs` of this clip."""
        array = self._array(name)
        if isinstance(array, _DirectArray):
            return dict(array.attrs)
        if isinstance(array, _ViaZarr):
            return field_attrs(self.group, name)
        inline = self.attrs().get("inline", {})
        if name in inline:
            return dict(inline[name].get("attrs", {}))
        if name in DYN_CHANNELS and self._array("dyn") is not None:
            return self.field_attrs("dyn")
        raise StoreError(f"{self.path}: no field '{name}'")


def clip_reader(store: str | Path, clip_id: str) -> ClipReader:
    """The :class:`ClipReader` of clip ``clip_id`` of the shard store ``store``; a StoreError when the store or
    the clip is not there. What the datasets of fer_pipeline.windows and fer_pipeline.frames read through
    (each keeps its readers per process, never pickled open; ``direct=False`` reads ``reader.group`` with
    :func:`read_field`, the same values)."""
    store = Path(store)
    if not (store / "zarr.json").is_file():
        raise StoreError(f"{store}: not a feature store (no zarr.json)")
    return ClipReader(store / "clips" / clip_id)


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
