"""``fer-pipeline export``: a preset's Zarr feature store (every shard) as one HDF5 file (``--format hdf5``,
with h5py) or one netCDF-4 file (``--format netcdf``, with xarray and h5netcdf).

For MATLAB, R, Julia, HDFView and any tool that reads HDF5 but not Zarr. The file keeps the store's layout,
one group per shard and per clip, with the same array names, dtypes and chunks along frames::

    /                          attrs: exported_from, exported_at, code (of the exporter), selection, ...
    /<shard>/                  the shard store's root attributes (stage, dataset, preset, parameters, code)
    /<shard>/clips/<clip_id>/  the clip's attributes: fingerprints, provenance (source path, size, sha256),
                               label, subject, parameters, the list of its arrays, complete
        <array>                the same values bit for bit; dimension labels (HDF5 dimension scales' labels:
                               frame, y, x, channel, ...) and the array's own attributes. Quantised fields
                               (``flow``, ``dyn``: int16) are copied as they are, with their ``scale``
                               attribute: the value is ``stored * scale`` (per channel of the last axis when
                               ``scale`` is a list), as fer_pipeline.store.dequantise computes it
        <inline array>         arrays the store keeps in the clip's zarr.json (the face track, window_start)
                               as datasets of their own (attribute ``stored_inline``)

Attributes: strings, booleans, integers and floats are HDF5 attributes of their own type; everything else
(dicts, lists, null) is stored as its JSON text, and the attribute ``json_encoded_attributes`` of that
object lists which (:func:`read_attrs` decodes them).

Compression: gzip (DEFLATE, level 4) after the shuffle filter, with Fletcher-32 checksums, because every
HDF5 build has these filters (MATLAB's ``h5read``, R's hdf5r, netCDF-4, HDFView): a file meant for other
tools must not need a plugin. ``lzf`` (``--compression lzf``) writes ~3-10x faster but only h5py ships its
filter, so such a file opens with h5py alone.

Only complete clips are exported (:meth:`fer_pipeline.store.ShardStore.clip_state`); with ``current`` only
those at the fingerprints the manifest and config imply now (fer_pipeline.lineage). The file is written
under a temporary name beside the target and renamed into place when complete, so a killed export never
leaves a file that looks whole.

netCDF-4 (:func:`export_netcdf`): the same groups, one ``xarray.Dataset`` per clip written by xarray's
h5netcdf backend into its group ``<shard>/clips/<clip_id>`` (what ``Dataset.to_netcdf(group=..., mode="a",
engine="h5netcdf")`` does, the file held open: :class:`_NetcdfWriter`); every array (the inline ones too) a
variable on the store's dimension names, with the same values and attributes. What netCDF has
not is encoded so that the file stays a valid netCDF-4 file (``ncdump`` reads it): attributes that are not
strings, integers or floats (booleans, dicts, lists, null) are JSON text listed in
``json_encoded_attributes`` (:func:`decode_attrs` decodes them); float16 arrays (the older store layout)
are float32 variables (every float16 value exactly) with the attribute ``store_dtype = "float16"``;
boolean arrays are xarray's int8 with ``dtype = "bool"`` (``xarray.open_dataset`` gives them back as
bool); no ``_FillValue`` is added. Compression gzip (netCDF's zlib, with shuffle and Fletcher-32) or none:
netCDF readers have no LZF. A clip's arrays are held in memory while it is written (~6 MB a demo clip).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .provenance import code_version
from .store import ShardStore, StoreError, inline_array, shard_stores

log = logging.getLogger(__name__)

JSON_ATTRS = "json_encoded_attributes"
COMPRESSIONS = ("gzip", "lzf", "none")
BLOCK_BYTES = 64 << 20  # rows copied per step: bounded memory whatever a clip's length


def write_attrs(target, attrs: Mapping[str, Any]) -> None:
    """Set ``attrs`` on an h5py object: scalars natively, anything else as JSON text (listed in
    ``json_encoded_attributes``)."""
    encoded = []
    for key, value in attrs.items():
        if isinstance(value, bool):
            target.attrs[key] = np.bool_(value)
        elif isinstance(value, int) and -(1 << 63) <= value < (1 << 63):
            target.attrs[key] = np.int64(value)
        elif isinstance(value, (float, str)):
            target.attrs[key] = value
        else:
            target.attrs[key] = json.dumps(value, sort_keys=True)
            encoded.append(key)
    if encoded:
        target.attrs[JSON_ATTRS] = json.dumps(sorted(encoded))


def netcdf_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``attrs`` as netCDF attributes: strings, integers (int64) and floats as they are, anything else
    (booleans, dicts, lists, null) as JSON text, listed in ``json_encoded_attributes``."""
    out, encoded = {}, []
    for key, value in attrs.items():
        if isinstance(value, int) and not isinstance(value, bool) and -(1 << 63) <= value < (1 << 63):
            out[key] = np.int64(value)
        elif isinstance(value, (float, str)):
            out[key] = value
        else:
            out[key] = json.dumps(value, sort_keys=True)
            encoded.append(key)
    if encoded:
        out[JSON_ATTRS] = json.dumps(sorted(encoded))
    return out


def read_attrs(source) -> dict[str, Any]:
    """The attributes of an h5py object as :func:`write_attrs` was given them (JSON decoded, numpy scalars
    as Python values)."""
    return decode_attrs(source.attrs)


def decode_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes as the exporter was given them: those ``json_encoded_attributes`` lists decoded, numpy
    scalars as Python values; of an h5py object's ``attrs``, an h5netcdf or an xarray object's ``attrs``."""
    attrs = dict(attrs)
    encoded = set(json.loads(attrs.pop(JSON_ATTRS, "[]")))
    out = {}
    for key, value in attrs.items():
        if key == "DIMENSION_LABELS":  # HDF5's own, set through Dataset.dims
            continue
        if isinstance(value, bytes):
            value = value.decode()
        if key in encoded:
            value = json.loads(value)
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def dimension_names(dataset) -> tuple[str, ...]:
    """The dimension labels of an h5py dataset (what the store's ``dimension_names`` were)."""
    return tuple(dim.label for dim in dataset.dims)


def _stores(path: Path) -> list[ShardStore]:
    """One store (``<shard>.zarr``) or every store of a preset's folder."""
    if (path / "zarr.json").is_file() and (path / "clips").is_dir():
        return [ShardStore(path, mode="r")]
    stores = shard_stores(path)
    if not stores:
        raise StoreError(f"{path}: holds no feature store (*.zarr)")
    return stores


def _folder_bytes(folder: Path) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)


def _filters(compression: str, level: int, dtype: np.dtype) -> dict[str, Any]:
    if compression == "none":
        return {}
    options: dict[str, Any] = {"shuffle": dtype.itemsize > 1, "fletcher32": True}
    if compression == "gzip":
        options.update(compression="gzip", compression_opts=level)
    else:
        options.update(compression="lzf")
    return options


def _copy_array(group, name: str, array, compression: str, level: int) -> None:
    """One Zarr array into an h5py group: same shape, dtype and chunks, copied in blocks of whole chunks."""
    shape, dtype = tuple(array.shape), np.dtype(array.dtype)
    if array.size == 0 or not shape:  # HDF5 chunks need a non-empty shape: small arrays stay contiguous
        dataset = group.create_dataset(name, data=array[...])
    else:
        chunks = tuple(max(1, min(c, s)) for c, s in zip(array.chunks, shape))
        dataset = group.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks,
                                       **_filters(compression, level, dtype))
        row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)
        step = max(chunks[0], BLOCK_BYTES // row_bytes // chunks[0] * chunks[0])
        for start in range(0, shape[0], step):
            dataset[start:start + step] = array[start:start + step]
    for axis, dim in enumerate(array.metadata.dimension_names or ()):
        if dim is not None:
            dataset.dims[axis].label = dim
    write_attrs(dataset, dict(array.attrs))


def _inline_dataset(group, name: str, record: Mapping[str, Any]) -> None:
    """An array the store keeps inline (in the clip's zarr.json: the face track, the window starts) as an
    HDF5 dataset of its own, so that other tools find it where they find the others."""
    dataset = group.create_dataset(name, data=inline_array(record))
    for axis, dim in enumerate(record.get("dims", [])):
        dataset.dims[axis].label = dim
    write_attrs(dataset, {**record.get("attrs", {}), "stored_inline": True})


def select_clips(stores: list[ShardStore], clips: Iterable[str] | None = None,
                 current: set[tuple[str, str]] | None = None) -> tuple[list[tuple[ShardStore, str]], list[str]]:
    """The (store, clip_id) pairs to export: complete clips, of ``clips`` when given, at the current
    fingerprints when ``current`` ((resolved store path, clip_id) pairs) is given; and one line per clip left
    out, with why."""
    wanted = set(clips) if clips is not None else None
    chosen, left_out, seen = [], [], set()
    for store in stores:
        for clip_id in store.stored_clip_ids():
            if wanted is not None and clip_id not in wanted:
                continue
            seen.add(clip_id)
            _, problems = store.clip_state(clip_id)
            if problems:
                left_out.append(f"{store.path.name}/{clip_id}: incomplete ({'; '.join(problems)})")
            elif current is not None and (str(store.path.resolve()), clip_id) not in current:
                left_out.append(f"{store.path.name}/{clip_id}: not at the current fingerprints (stale)")
            else:
                chosen.append((store, clip_id))
    if wanted is not None and wanted - seen:
        raise StoreError(f"no clip {', '.join(sorted(wanted - seen))} in {', '.join(str(s.path) for s in stores)}")
    return chosen, left_out


def current_clips(config: Mapping[str, Any], dataset: str, preset: str | None) -> set[tuple[str, str]]:
    """(resolved store path, clip_id) of every clip of the dataset's preset (or detections, for ``preset``
    None) at the fingerprints its manifest and ``config`` imply now."""
    from . import lineage, paths
    from .datasets import read_manifest

    manifest_csv = paths.manifest_csv(config["results"], dataset)
    if not manifest_csv.is_file():
        raise FileNotFoundError(f"{manifest_csv}: no manifest, so which clips are current cannot be told")
    report = lineage.audit(config, dataset, read_manifest(manifest_csv), preset)
    return {(str(Path(c["store"]).resolve()), c["clip_id"]) for c in report.current}


class _Hdf5Writer:
    """One HDF5 file with h5py (:func:`export_hdf5`)."""

    name, suffix = "HDF5", "hdf5"

    def __init__(self, path: Path, compression: str, level: int):
        import h5py

        self.compression, self.level = compression, level
        self.file = h5py.File(path, "w")
        self.shards: dict[Path, Any] = {}

    def header(self) -> dict[str, Any]:
        import h5py

        return {"format": "fer-pipeline feature store, HDF5 export of its Zarr v3 shard stores",
                "layout": "/<shard>/clips/<clip_id>/<array>; dimension labels on every array; attributes that "
                          "are not scalars hold JSON text, listed in json_encoded_attributes",
                "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version}

    def root(self, attrs: Mapping[str, Any]) -> None:
        write_attrs(self.file, attrs)

    def clip(self, store: ShardStore, clip_id: str, group, attrs: Mapping[str, Any]) -> None:
        if store.path not in self.shards:
            self.shards[store.path] = self.file.create_group(store.path.stem)
            write_attrs(self.shards[store.path], _shard_attrs(store))
        target = self.shards[store.path].create_group(f"clips/{clip_id}")
        write_attrs(target, attrs)
        for name, array in sorted(group.arrays()):
            _copy_array(target, name, array, self.compression, self.level)
        for name, record in sorted(attrs.get("inline", {}).items()):
            _inline_dataset(target, name, record)

    def close(self) -> None:
        self.file.close()


def _dims(name: str, dims, ndim: int) -> tuple[str, ...]:
    """An array's dimension names (the store's; ``<array>_<axis>`` where it names none)."""
    dims = list(dims or [])
    return tuple(dims[axis] if axis < len(dims) and dims[axis] is not None else f"{name}_{axis}"
                 for axis in range(ndim))


def _netcdf_variable(name: str, data: np.ndarray, dims, attrs: Mapping[str, Any], chunks, compression: str,
                     level: int):
    """(xarray.Variable, its encoding) of one array: float16 as float32 (``store_dtype``), no fill value,
    chunks along frames as the store's, zlib + shuffle + Fletcher-32 for ``gzip``."""
    import xarray as xr

    attrs = dict(attrs)
    if data.dtype == np.float16:  # no netCDF type: float32 holds every float16 value exactly
        data, attrs["store_dtype"] = data.astype(np.float32), "float16"
    encoding: dict[str, Any] = {"_FillValue": None}
    if chunks is not None and data.ndim and data.size:
        encoding["chunksizes"] = tuple(max(1, min(int(c), s)) for c, s in zip(chunks, data.shape))
        if compression == "gzip":
            encoding.update(zlib=True, complevel=level, shuffle=data.dtype.itemsize > 1, fletcher32=True)
    return xr.Variable(_dims(name, dims, data.ndim), data, netcdf_attrs(attrs)), encoding


class _NetcdfWriter:
    """One netCDF-4 file with xarray and h5netcdf: a ``Dataset`` per group, written by xarray into the file held
    open (``H5NetCDFStore``, ``Dataset.dump_to_store``: what ``Dataset.to_netcdf(group=..., mode="a")`` does,
    without opening the file again per clip: h5netcdf walks every object already written on each opening, to
    number the dimensions, ~1 ms x clips^2 in all; +15 s on the demo's 120 clips, about an hour at 1,800)."""

    name, suffix = "netCDF-4", "netcdf"

    def __init__(self, path: Path, compression: str, level: int):
        if compression not in ("gzip", "none"):
            raise ValueError(f"compression '{compression}': netCDF readers have gzip (zlib) or none, not LZF")
        from xarray.backends import H5NetCDFStore

        self.compression, self.level = compression, level
        self.store = H5NetCDFStore.open(str(path), mode="w", invalid_netcdf=False)
        self.shards: set[Path] = set()

    def header(self) -> dict[str, Any]:
        import h5netcdf
        import h5py
        import xarray as xr

        return {"format": "fer-pipeline feature store, netCDF-4 export of its Zarr v3 shard stores",
                "layout": "/<shard>/clips/<clip_id>/<array>: a netCDF group per clip, a variable per array on the "
                          "store's dimension names; attributes that are not strings or numbers hold JSON text, "
                          "listed in json_encoded_attributes; float16 arrays as float32 (store_dtype)",
                "xarray": xr.__version__, "h5netcdf": h5netcdf.__version__, "hdf5": h5py.version.hdf5_version}

    def _write(self, dataset, group: str | None = None, encoding=None) -> None:
        dataset.dump_to_store(self.store if group is None else self.store.get_child_store(group),
                              encoding=encoding or {})

    def root(self, attrs: Mapping[str, Any]) -> None:
        import xarray as xr

        self._write(xr.Dataset(attrs=netcdf_attrs(attrs)))

    def clip(self, store: ShardStore, clip_id: str, group, attrs: Mapping[str, Any]) -> None:
        import xarray as xr

        shard = store.path.stem
        if store.path not in self.shards:
            self._write(xr.Dataset(attrs=netcdf_attrs(_shard_attrs(store))), group=shard)
            self.shards.add(store.path)
        variables, encoding = {}, {}
        for name, array in sorted(group.arrays()):
            variables[name], encoding[name] = _netcdf_variable(
                name, array[...], array.metadata.dimension_names, dict(array.attrs), array.chunks,
                self.compression, self.level)
        for name, record in sorted(attrs.get("inline", {}).items()):
            variables[name], encoding[name] = _netcdf_variable(
                name, inline_array(record), record.get("dims"), {**record.get("attrs", {}), "stored_inline": True},
                None, self.compression, self.level)
        try:
            dataset = xr.Dataset(variables, attrs=netcdf_attrs(attrs))
        except ValueError as exc:  # arrays that disagree on a dimension's length
            raise StoreError(f"{store.path}/clips/{clip_id}: not one netCDF group ({exc})") from exc
        self._write(dataset, group=f"{shard}/clips/{clip_id}", encoding=encoding)

    def close(self) -> None:
        self.store.close()


def _shard_attrs(store: ShardStore) -> dict[str, Any]:
    return {**dict(store.root.attrs), "store": str(store.path.resolve())}


def export_hdf5(source: str | Path, out: str | Path, clips: Iterable[str] | None = None,
                current: set[tuple[str, str]] | None = None, compression: str = "gzip", level: int = 4,
                progress: bool = True) -> dict[str, Any]:
    """Write the complete clips of ``source`` (a preset's feature folder, or one ``<shard>.zarr``) into the
    HDF5 file ``out`` (see the module docstring); ``clips`` selects clip ids, ``current`` keeps only those
    pairs (:func:`current_clips`). Returns a summary: clips, frames, bytes in the store and in the file."""
    return _export(_Hdf5Writer, source, out, clips, current, compression, level, progress)


def export_netcdf(source: str | Path, out: str | Path, clips: Iterable[str] | None = None,
                  current: set[tuple[str, str]] | None = None, compression: str = "gzip", level: int = 4,
                  progress: bool = True) -> dict[str, Any]:
    """:func:`export_hdf5`, into the netCDF-4 file ``out`` (see the module docstring): ``compression``
    gzip or none."""
    return _export(_NetcdfWriter, source, out, clips, current, compression, level, progress)


EXPORTERS = {"hdf5": export_hdf5, "netcdf": export_netcdf}


def _export(writer_class, source, out, clips, current, compression: str, level: int, progress: bool) -> dict[str, Any]:
    from tqdm import tqdm

    if compression not in COMPRESSIONS:
        raise ValueError(f"compression '{compression}': choose from {', '.join(COMPRESSIONS)}")
    source, out = Path(source), Path(out)
    stores = _stores(source)
    chosen, left_out = select_clips(stores, clips, current)
    for line in left_out:
        log.warning("not exported: %s", line)
    if not chosen:
        raise StoreError(f"{source}: no clip to export ({len(left_out)} left out)")
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    started = time.perf_counter()
    frames, store_bytes = 0, 0
    selection = "complete clips" + (" at the current fingerprints" if current is not None else "") + \
                (f", of {len(set(clips))} requested" if clips is not None else "")
    try:
        temporary.unlink(missing_ok=True)
        writer = writer_class(temporary, compression, level)
        try:
            writer.root({**writer.header(),
                         "exported_from": str(source.resolve()), "exported_at": _dt.datetime.now(_dt.UTC).isoformat(),
                         "code": code_version(), "selection": selection,
                         "compression": summary_compression(compression, level),
                         "clips": len(chosen), "left_out": left_out})
            for store, clip_id in tqdm(chosen, desc=f"export {out.name}", unit="clip", disable=not progress):
                group = store.clip(clip_id)
                attrs = dict(group.attrs)
                writer.clip(store, clip_id, group, attrs)
                frames += int(attrs.get("n_frames", 0))
                store_bytes += _folder_bytes(store.path / "clips" / clip_id)
        finally:
            writer.close()
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, out)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - started
    size = out.stat().st_size
    summary = {"out": str(out), "format": writer_class.suffix, "clips": len(chosen), "left_out": left_out,
               "frames": frames, "store_bytes": store_bytes, "file_bytes": size, f"{writer_class.suffix}_bytes": size,
               "seconds": round(seconds, 2)}
    log.info("%s: %d clips (%d frames) of %d stores, %.1f MB in Zarr -> %.1f MB in %s (%s) in %.1f s%s",
             out, len(chosen), frames, len({s.path for s, _ in chosen}), store_bytes / 1e6, size / 1e6,
             writer_class.name, summary_compression(compression, level), seconds,
             f"; {len(left_out)} clips left out" if left_out else "")
    return summary


def summary_compression(compression: str, level: int) -> str:
    return f"gzip level {level} + shuffle" if compression == "gzip" else (
        "lzf + shuffle" if compression == "lzf" else "uncompressed")
