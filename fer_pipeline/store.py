"""The Zarr (v3) feature store: one store per dataset shard, one group per clip, complete or absent.

Layout of ``<shard>.zarr`` (opens with plain ``zarr.open_group`` and with ``xarray.open_zarr(path,
group="clips/<clip_id>", consolidated=False)``; every array carries ``dimension_names``)::

    zarr.json                 attrs: dataset, shard, stage, parameters, code version
    clips/<clip_id>/          attrs: provenance (source path, size, sha256), label, subject, complete=True
        <array> ...           whatever the stage writes (see fer_pipeline.preprocess)

A clip is written into ``<shard>.zarr.staging/<clip_id>`` first and moved into ``clips/`` by one
``rename`` once every array and its attributes are on disk. A job killed mid-write therefore leaves only a
staging folder, which the next writer deletes; a clip under ``clips/`` is complete by construction, and its
``complete`` attribute and parameter fingerprint are checked again before it is trusted.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import zarr
import zarr.codecs

from .provenance import code_version


class StoreError(RuntimeError):
    """A store or clip is missing or malformed; the message names the path."""


@dataclass
class ArraySpec:
    """An array to write: data, one name per dimension, and the frames per chunk along axis 0."""

    data: np.ndarray
    dims: tuple[str, ...]
    frames_per_chunk: int | None = None  # None: one chunk
    attrs: Mapping[str, Any] | None = None


def compressors(store_config: Mapping[str, Any]) -> tuple:
    name = store_config["compressor"]
    if name == "zstd":
        return (zarr.codecs.ZstdCodec(level=store_config["level"]),)
    if name == "lz4":
        return (zarr.codecs.BloscCodec(cname="lz4", clevel=min(9, store_config["level"]),
                                       shuffle=zarr.codecs.BloscShuffle.bitshuffle),)
    return ()


class ShardStore:
    """Writer and reader of one shard's store. Exactly one job writes a given shard at a time."""

    def __init__(self, path: str | Path, attrs: Mapping[str, Any] | None = None,
                 store_config: Mapping[str, Any] | None = None, mode: str = "a"):
        self.path = Path(path)
        self.staging = self.path.with_name(self.path.name + ".staging")
        self.store_config = store_config or {"compressor": "zstd", "level": 3}
        if mode == "r":
            if not (self.path / "zarr.json").is_file():
                raise StoreError(f"{self.path}: not a feature store (no zarr.json)")
            self.root = zarr.open_group(str(self.path), mode="r", zarr_format=3)
        else:
            self.root = zarr.open_group(str(self.path), mode="a", zarr_format=3)
            self.root.require_group("clips")
            if attrs:
                self.root.attrs.update({**attrs, "code": code_version()})
            # Whatever a killed job left half-written is never trusted.
            shutil.rmtree(self.staging, ignore_errors=True)

    # -- reading ------------------------------------------------------------------------------------------
    def clip_ids(self) -> list[str]:
        """Ids of the clips present and marked complete, sorted."""
        clips = self.path / "clips"
        if not clips.is_dir():
            return []
        return sorted(p.name for p in clips.iterdir()
                      if (p / "zarr.json").is_file() and self.clip_attrs(p.name).get("complete") is True)

    def clip_attrs(self, clip_id: str) -> dict[str, Any]:
        return dict(zarr.open_group(str(self.path / "clips" / clip_id), mode="r", zarr_format=3).attrs)

    def is_complete(self, clip_id: str, fingerprint: Mapping[str, Any]) -> bool:
        """True when the clip is complete and was made from the same inputs and parameters."""
        if not (self.path / "clips" / clip_id / "zarr.json").is_file():
            return False
        attrs = self.clip_attrs(clip_id)
        return attrs.get("complete") is True and all(attrs.get(k) == v for k, v in fingerprint.items())

    def clip(self, clip_id: str) -> zarr.Group:
        path = self.path / "clips" / clip_id
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{self.path}: no clip '{clip_id}'")
        return zarr.open_group(str(path), mode="r", zarr_format=3)

    # -- writing ------------------------------------------------------------------------------------------
    def write_clip(self, clip_id: str, arrays: Mapping[str, ArraySpec], attrs: Mapping[str, Any]) -> None:
        """Write all arrays of a clip, then publish the clip with one rename (replacing an older version)."""
        staged = self.staging / clip_id
        shutil.rmtree(staged, ignore_errors=True)
        group = zarr.open_group(str(staged), mode="w", zarr_format=3)
        for name, spec in arrays.items():
            data = np.ascontiguousarray(spec.data)
            if len(spec.dims) != data.ndim:
                raise StoreError(f"{clip_id}/{name}: {len(spec.dims)} dimension names for {data.ndim} axes")
            chunks = list(data.shape) or None
            if spec.frames_per_chunk and data.ndim and data.shape[0]:
                chunks[0] = min(spec.frames_per_chunk, data.shape[0])
            array = group.create_array(
                name, shape=data.shape, dtype=data.dtype, chunks=tuple(max(1, c) for c in chunks) if chunks else None,
                compressors=compressors(self.store_config), dimension_names=spec.dims, fill_value=0,
            )
            if data.size:
                array[...] = data
            if spec.attrs:
                array.attrs.update(dict(spec.attrs))
        # The completion mark is the last thing written before the clip becomes visible.
        group.attrs.update({**attrs, "clip_id": clip_id, "created": _dt.datetime.now(_dt.UTC).isoformat(),
                            "complete": True})
        target = self.path / "clips" / clip_id
        if target.exists():
            trash = self.staging / f".old-{clip_id}"
            os.replace(target, trash)
            shutil.rmtree(trash)
        os.replace(staged, target)

    def close(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def shard_stores(folder: str | Path) -> list[ShardStore]:
    """Every shard store (``*.zarr``) in a folder, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StoreError(f"{folder}: no such feature-store folder")
    return [ShardStore(p, mode="r") for p in sorted(folder.glob("*.zarr")) if (p / "zarr.json").is_file()]


def iter_clips(folder: str | Path) -> Iterable[tuple[ShardStore, str]]:
    for shard in shard_stores(folder):
        for clip_id in shard.clip_ids():
            yield shard, clip_id
