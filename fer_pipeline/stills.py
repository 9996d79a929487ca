"""Stills at scale: shard stores that hold arrays of many images, never a group per image.

AffectNet ships ~290k training pictures and FER2013 ~36k; a Zarr group per picture would be hundreds of
thousands of folders and metadata files. A stills dataset (its adapter is in
fer_pipeline.lineage.STILLS_ADAPTERS) therefore keeps each shard's pictures as the rows of a few arrays, in
the same places and under the same lock as the video stores (``detections/<shard>.zarr``,
``features/<preset>/<shard>.zarr``), with the per-image table as one string array per column along the
same ``image`` axis::

    features/affect224/part000.zarr/      attrs: kind=stills, stage, dataset, shard, preset, parameters,
                                          detection, code, n_images, arrays (name -> shape, dims), complete
        rgb        (image, y, x, channel)  uint8    the face crops; chunks of 16 images, 256 per shard file
        boxes      (image, box)            float32  x0 y0 x1 y1 of the crop in the picture's pixels
        landmarks  (image, point, xy)      float32  the dataset's 68 points, in the crop's pixels (NaN: none)
        points     (image, point5, xy)     float32  MTCNN's five points, in the crop's pixels (NaN: not run)
        scores     (image)                 float32  ONet's face probability of the box (NaN: not checked)
        clip_id, label, subject, split, source, source_sha256, track_sha256, features_sha256, box_source
                   (image)                 string   the per-image table
    detections/part000.zarr/              the same table (without features_sha256) with boxes, landmarks,
                                          points and scores in the picture's pixels

It opens with ``zarr.open_group(path)`` and as one ``xarray.open_zarr(path, consolidated=False)`` dataset
(every array's first dimension is ``image``).

A shard store is written whole: a new version is built in ``<shard>.zarr.staging/new``, flushed to disk,
and swapped in by two renames (the old version to ``staging/old``, the new one into place; a writer that
finds the store missing and ``staging/old`` present restores it first), so a reader sees the old store or
the new one, never a mixture, and a killed job leaves the old one. Images whose fingerprint (the
manifest's row and the config, fer_pipeline.lineage) is unchanged are copied from the old version, never
recomputed; only new or changed images are decoded and cropped, and images the shard no longer lists are
dropped. When nothing changed, the store is not rewritten at all. Readers (:func:`index_images`,
:func:`load_images`, :class:`StillDataset`) take only the images the manifest lists at the fingerprints the
config implies now, with the manifest's label: nothing stale is ever read.

Faces: the dataset's own box where it has one (AffectNet's ``face_x ...``; FER2013's whole picture) with
``datasets.<name>.detection_source: dataset`` (the default), MTCNN's with ``mtcnn``. A stills preset crops
the box tight (``alignment: box``, ``margin`` 0) and resizes it to ``size`` (HSEmotion and FRA-FER: 224), or
aligns on five points (``five_point``, ``rigid``, ``two_eye``, ``eye_box``: MTCNN's, or the five AffectNet's
68 landmarks give: the eye centres, the nose tip, the mouth corners).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping

import cv2
import numpy as np
import pandas as pd
import zarr

from . import faces, lineage, paths, video
from .config import ConfigError, detection_device, preset_config
from .datasets.affectnet import annotation_sha256, parse_box, parse_landmarks
from .files import save_figure, write_text_atomic
from .provenance import code_version
from .store import StoreError, StoreLock, _fsync_dir, _fsync_tree, _read_json, compressors

log = logging.getLogger(__name__)

KIND = "stills"
CHUNK_IMAGES = 16  # images per chunk: a random read decodes 16 crops at most
SHARD_IMAGES = 256  # images per file (Zarr's sharding codec): few files per store
N_LANDMARKS = 68
DETECTION_COLUMNS = ["clip_id", "label", "subject", "split", "source", "source_sha256", "track_sha256", "box_source"]
FEATURE_COLUMNS = DETECTION_COLUMNS + ["features_sha256"]
BOX_ALIGNMENT = "box"
# AffectNet's 68 points (iBUG order) -> the five MTCNN gives: the eye centres, the nose tip, the mouth corners.
FIVE_FROM_68 = (tuple(range(36, 42)), tuple(range(42, 48)), (30,), (48,), (54,))


class SkipImage(RuntimeError):
    """An image a stage cannot use; the reason (naming the file and row) is recorded in the stage's summary."""


# -- the store ------------------------------------------------------------------------------------------------

def is_stills_store(path: str | Path) -> bool:
    meta = _read_json(Path(path) / "zarr.json")
    return bool(meta) and meta.get("attributes", {}).get("kind") == KIND


def store_attrs(path: str | Path) -> dict[str, Any] | None:
    meta = _read_json(Path(path) / "zarr.json")
    return dict(meta.get("attributes", {})) if meta else None


def store_problems(path: str | Path, attrs: Mapping[str, Any] | None = None) -> list[str]:
    """Why a stills store is not complete: an empty list when it is (its mark, and every array it lists there
    with the listed shape, one row per image)."""
    path = Path(path)
    attrs = store_attrs(path) if attrs is None else attrs
    if attrs is None:
        return ["absent"]
    if attrs.get("kind") != KIND:
        return ["not a stills store"]
    if attrs.get("complete") is not True:
        return ["not marked complete"]
    n = attrs.get("n_images")
    problems = []
    for name, spec in (attrs.get("arrays") or {}).items():
        meta = _read_json(path / name / "zarr.json")
        if meta is None or meta.get("node_type") != "array":
            problems.append(f"array '{name}' is missing")
        elif list(meta["shape"]) != list(spec["shape"]):
            problems.append(f"array '{name}' has shape {meta['shape']}, the store says {spec['shape']}")
        elif not spec["shape"] or spec["shape"][0] != n:
            problems.append(f"array '{name}' has {spec['shape'][:1]} rows for {n} images")
    if not attrs.get("arrays"):
        problems.append("no list of its arrays")
    return problems


def read_table(path: str | Path) -> pd.DataFrame:
    """The per-image table of a stills store (its string arrays), one row per image in store order."""
    group = zarr.open_group(str(path), mode="r", zarr_format=3)
    columns = store_attrs(path).get("columns", [])
    return pd.DataFrame({name: [str(v) for v in np.asarray(group[name][...]).tolist()] for name in columns},
                        columns=columns)


def read_rows(path: str | Path, name: str, indices: np.ndarray) -> np.ndarray:
    """Rows ``indices`` of array ``name`` (in the order given)."""
    array = zarr.open_group(str(path), mode="r", zarr_format=3)[name]
    indices = np.asarray(indices, np.int64)
    if len(indices) == 0:
        return np.zeros((0, *array.shape[1:]), array.dtype)
    order = np.argsort(indices)
    values = array.oindex[indices[order]] if len(indices) > 1 else array[int(indices[0])][None]
    out = np.empty_like(values)
    out[order] = values
    return out


def _chunks(shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    n = shape[0]
    chunk = max(1, min(CHUNK_IMAGES, n))
    if n <= chunk:
        return (chunk, *shape[1:]), None
    shard = min(SHARD_IMAGES, math.ceil(n / chunk) * chunk)
    return (chunk, *shape[1:]), (shard, *shape[1:])


class StillsWriter:
    """The one writer of a stills store (its ``<shard>.zarr.lock``, as every store's: fer_pipeline.store)."""

    def __init__(self, path: str | Path, store_config: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.staging = self.path.with_name(self.path.name + ".staging")
        self.store_config = store_config or {"compressor": "zstd", "level": 3}
        self.lock = StoreLock(self.path)
        self.lock.acquire()
        old = self.staging / "old"
        if not self.path.exists() and (old / "zarr.json").is_file():
            # A writer was killed between its two renames: its predecessor is whole; put it back.
            os.replace(old, self.path)
            log.warning("%s: restored the previous version left by a killed writer", self.path)
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> "StillsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.lock.held:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.lock.release()

    def current(self) -> tuple[dict[str, Any] | None, pd.DataFrame | None]:
        """The published version's attributes and table, or (None, None) when there is none complete."""
        attrs = store_attrs(self.path)
        if attrs is None or store_problems(self.path, attrs):
            return None, None
        return attrs, read_table(self.path)

    def publish(self, arrays: Mapping[str, tuple[np.ndarray, tuple[str, ...], Mapping[str, Any]]],
                table: pd.DataFrame, attrs: Mapping[str, Any]) -> None:
        """Write a new version (``arrays``: name -> (data, dims, attrs), one row per image; ``table``: the
        per-image columns) and swap it in (see the module docstring)."""
        if not self.lock.held:
            raise StoreError(f"{self.path}: closed: no write without the store's lock")
        n = len(table)
        new = self.staging / "new"
        shutil.rmtree(new, ignore_errors=True)
        new.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(str(new), mode="w", zarr_format=3)
        listed = {}
        for name, (data, dims, array_attrs) in arrays.items():
            data = np.ascontiguousarray(data)
            if data.shape[:1] != (n,) or len(dims) != data.ndim:
                raise StoreError(f"{self.path}: array '{name}' {data.shape} does not fit {n} images and dims {dims}")
            chunks, shards = _chunks(data.shape) if n else ((1, *data.shape[1:]), None)
            array = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=chunks, shards=shards,
                                       compressors=compressors(self.store_config), dimension_names=dims,
                                       fill_value=0)
            if data.size:
                array[...] = data
            if array_attrs:
                array.attrs.update(dict(array_attrs))
            listed[name] = {"shape": list(data.shape), "dims": list(dims)}
        for name in table.columns:
            values = np.asarray(table[name].astype(str).to_numpy(), dtype=str)
            array = group.create_array(name, shape=(n,), dtype=str, chunks=(max(1, n),), dimension_names=("image",))
            if n:
                array[...] = values
            listed[name] = {"shape": [n], "dims": ["image"]}
        group.attrs.update({**attrs, "kind": KIND, "code": code_version(), "n_images": n,
                            "columns": list(table.columns), "arrays": listed,
                            "created": _dt.datetime.now(_dt.UTC).isoformat(), "complete": True})
        _fsync_tree(new)
        if self.path.exists():
            os.replace(self.path, self.staging / "old")
        os.replace(new, self.path)
        _fsync_dir(self.path.parent)
        shutil.rmtree(self.staging, ignore_errors=True)


def remove_images(path: str | Path, clip_ids: list[str], store_config: Mapping[str, Any] | None = None) -> None:
    """Drop images from a stills store (``fer-pipeline gc``), under its lock: the rest is copied into a new
    version."""
    drop = set(clip_ids)
    with StillsWriter(path, store_config) as writer:
        attrs, table = writer.current()
        if table is None:
            return
        keep = np.flatnonzero(~table["clip_id"].isin(drop).to_numpy())
        arrays = {}
        for name, spec in attrs["arrays"].items():
            if name in table.columns:
                continue
            array = zarr.open_group(str(writer.path), mode="r", zarr_format=3)[name]
            arrays[name] = (read_rows(writer.path, name, keep), tuple(spec["dims"]), dict(array.attrs))
        kept_attrs = {k: v for k, v in attrs.items() if k not in ("arrays", "columns", "n_images", "created",
                                                                    "complete", "code", "kind")}
        writer.publish(arrays, table.iloc[keep].reset_index(drop=True), kept_attrs)


# -- sources: image files and pixel rows ----------------------------------------------------------------------

class Sources:
    """The pictures of a shard's manifest rows as they are now: an image file, or a row of a pixel table
    (FER2013), whose rows are read in one pass per table."""

    def __init__(self, rows: pd.DataFrame):
        self._texts: dict[str, dict[int, str]] = {}
        tables = rows[[video.media_kind(p) == "pixels" for p in rows["path"]]]
        for path, group in tables.groupby("path"):
            self._texts[path] = video.read_pixel_rows(path, group["row"].astype(int))

    @staticmethod
    def where(row: pd.Series) -> str:
        return f"{row['path']} row {int(row['row'])}" if video.media_kind(row["path"]) == "pixels" else str(row["path"])

    def check(self, row: pd.Series) -> dict[str, Any]:
        """The picture's provenance; SkipImage when it is gone or changed since the manifest was made."""
        path = Path(row["path"])
        if video.media_kind(path) == "pixels":
            text = self._texts.get(str(path), {}).get(int(row["row"]))
            if text is None:
                raise SkipImage(f"{self.where(row)}: the row is gone from the table")
            sha = video.pixel_sha256(text)
        else:
            if not path.is_file():
                raise SkipImage(f"{path}: file is gone")
            sha = video.sha256(path)
        if sha != row["sha256"]:
            raise SkipImage(f"{self.where(row)}: changed since the manifest was made (sha256 {sha[:12]}, the "
                            f"manifest says {str(row['sha256'])[:12]}): rebuild the manifest")
        source = {"path": str(path), "sha256": sha}
        if video.media_kind(path) == "pixels":
            source["row"] = int(row["row"])
        return source

    def image(self, row: pd.Series) -> np.ndarray:
        """The picture as RGB uint8 (H, W, 3); SkipImage naming the file (and row) when it does not decode."""
        path = row["path"]
        try:
            if video.media_kind(path) == "pixels":
                return video.pixel_image(self._texts[str(path)][int(row["row"])], (int(row["height"]), int(row["width"])))
            return video.read_still(path)
        except (video.VideoError, ValueError) as exc:
            message = str(exc)
            raise SkipImage(message if str(path) in message else f"{self.where(row)}: {message}") from None


def _annotation(row: pd.Series, landmarks_text: Mapping[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's box (4,) and 68 landmarks (68, 2) (NaN where it gives none) of a manifest row, checked
    against the row's annotation_sha256 (the companion table must be the manifest's)."""
    box = parse_box(row.get("box", ""))
    if box is None:
        raise SkipImage(f"{Sources.where(row)}: the manifest gives no face box (detection_source: mtcnn finds one)")
    values = parse_landmarks(landmarks_text.get(row["clip_id"], ""))
    if annotation_sha256(box, values) != row.get("annotation_sha256"):
        raise SkipImage(f"{Sources.where(row)}: its box and landmarks do not match the manifest's annotation_sha256 "
                        f"(manifest_landmarks.csv from another manifest?): rebuild the manifest")
    points = np.full((N_LANDMARKS, 2), np.nan, np.float32) if values is None else \
        np.asarray(values, np.float32).reshape(N_LANDMARKS, 2)
    return np.asarray(box, np.float32), points


def companion_landmarks(manifest_csv: str | Path) -> dict[str, str]:
    """``manifest_landmarks.csv`` beside a manifest as clip_id -> landmarks text ({} when there is none)."""
    manifest_csv = Path(manifest_csv)
    path = manifest_csv.with_name(f"{manifest_csv.stem}_landmarks.csv")
    if not path.is_file():
        return {}
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    return dict(zip(table["clip_id"], table["landmarks"]))


def five_from_68(landmarks: np.ndarray) -> np.ndarray:
    """The five MTCNN points (eye centres, nose tip, mouth corners) of 68 iBUG landmarks (..., 68, 2)."""
    return np.stack([landmarks[..., list(group), :].mean(axis=-2) for group in FIVE_FROM_68], axis=-2)


# -- the stages -----------------------------------------------------------------------------------------------

def _run(stage: str, rows: pd.DataFrame, path: Path, fingerprints: Mapping[str, Mapping[str, str]],
         columns: list[str], process: Callable[[pd.Series], tuple[dict[str, np.ndarray], dict[str, str]]],
         specs: Mapping[str, tuple[tuple[int, ...], Any, tuple[str, ...], Mapping[str, Any]]],
         attrs: Mapping[str, Any], store_config: Mapping[str, Any], summary_json: str | Path) -> dict[str, Any]:
    """The loop both stills stages share: keep what is current, process the rest, record every outcome, and
    publish a new version of the store when anything changed. ``specs``: array name -> (per-image shape,
    dtype, dims, attrs); ``process(row)`` returns one image's arrays and its table values."""
    from .preprocess import StageFailed

    clips: dict[str, Any] = {}
    started = time.perf_counter()
    written: dict[str, dict[str, np.ndarray]] = {}
    values: dict[str, dict[str, str]] = {}
    cached: dict[str, int] = {}
    with StillsWriter(path, store_config) as writer:
        old_attrs, old = writer.current()
        old_index = {cid: i for i, cid in enumerate(old["clip_id"])} if old is not None else {}
        for _, row in rows.iterrows():
            clip_id, fp = row["clip_id"], fingerprints[row["clip_id"]]
            i = old_index.get(clip_id)
            if i is not None and all(old.at[i, k] == v for k, v in fp.items()):
                cached[clip_id] = i
                clips[clip_id] = {"status": "cached"}
                continue
            try:
                written[clip_id], values[clip_id] = process(row)
            except (SkipImage, video.VideoError, faces.NoFaceError) as exc:
                reason = str(exc) if str(row["path"]) in str(exc) else f"{Sources.where(row)}: {exc}"
                clips[clip_id] = {"status": "skipped", "reason": reason}
                log.warning("%s: skipped: %s", clip_id, reason)
                continue
            except Exception as exc:  # noqa: BLE001 - one image's bug must not cost the shard's others
                clips[clip_id] = {"status": "failed", "reason": f"{Sources.where(row)}: {type(exc).__name__}: {exc}"}
                log.exception("%s: failed", clip_id)
                continue
            clips[clip_id] = {"status": "written"}
        kept = [cid for cid in rows["clip_id"] if cid in cached or cid in written]
        by_id = rows.set_index("clip_id")
        table = pd.DataFrame([{"clip_id": cid, "label": by_id.at[cid, "label"], "subject": str(by_id.at[cid, "subject"]),
                               "split": str(by_id.at[cid, "split"]),
                               **{k: (old.at[cached[cid], k] if cid in cached else values[cid][k])
                                  for k in columns if k not in ("clip_id", "label", "subject", "split")}}
                              for cid in kept], columns=columns)
        removed = sorted(set(old_index) - set(kept))
        unchanged = old is not None and not written and list(old.columns) == columns and \
            old.reset_index(drop=True).equals(table.reset_index(drop=True)) and \
            all(old_attrs.get(k) == v for k, v in attrs.items())
        if not unchanged:
            arrays = {}
            positions = [cached.get(cid) for cid in kept]
            from_old = np.array([p for p in positions if p is not None], np.int64)
            for name, (shape, dtype, dims, array_attrs) in specs.items():
                data = np.zeros((len(kept), *shape), dtype)
                if len(from_old):
                    data[[k for k, p in enumerate(positions) if p is not None]] = read_rows(writer.path, name, from_old)
                for k, cid in enumerate(kept):
                    if cid in written:
                        data[k] = written[cid][name]
                arrays[name] = (data, dims, array_attrs)
            writer.publish(arrays, table, attrs)
    seconds = time.perf_counter() - started
    failed = {c: info["reason"] for c, info in clips.items() if info["status"] == "failed"}
    if failed:
        raise StageFailed(f"{stage} {path}: {len(failed)} of {len(clips)} images failed (the store is unchanged; "
                          f"a rerun retries them):\n" + "\n".join(f"  {c}: {r}" for c, r in sorted(failed.items())))
    summary = {"stage": stage, "store": str(path), "kind": KIND, "clips": clips, "code": code_version(),
               "counts": {s: sum(c["status"] == s for c in clips.values()) for s in ("written", "cached", "skipped")},
               "removed_stale": removed, "rewritten": not unchanged,
               "frames_processed": len(written), "seconds": round(seconds, 2),
               "frames_per_second": round(len(written) / seconds, 1) if written else None}
    write_text_atomic(summary_json, json.dumps(summary, indent=2, sort_keys=True))
    log.info("%s %s: %s in %.1f s%s", stage, path.name, summary["counts"], seconds,
             f", {len(removed)} stale images dropped" if removed else "")
    return summary


def _shard_rows(manifest_csv: str | Path, shard: str) -> pd.DataFrame:
    from .preprocess import read_shard

    return read_shard(manifest_csv, shard)


def detect_shard(config: Mapping[str, Any], dataset: str, shard: str, manifest_csv: str | Path,
                 summary_json: str | Path) -> dict[str, Any]:
    """Stage 1 of a stills shard: every picture's face box into ``detections/<shard>.zarr``: the dataset's
    own (with ONet's face probability of it when ``detection.verify_every_frame``) or MTCNN's."""
    detection = lineage.detection_parameters(config, dataset)
    source_kind = detection["detection_source"]
    rows = _shard_rows(manifest_csv, shard)
    expected = lineage.expected(config, rows).set_index("clip_id")
    fingerprints = {c: {"source_sha256": e.source_sha256, "track_sha256": e.track_sha256} for c, e in expected.iterrows()}
    sources = Sources(rows)
    landmarks_text = companion_landmarks(manifest_csv)
    detector: faces.FaceDetector | None = None

    def process(row: pd.Series):
        nonlocal detector
        source = sources.check(row)
        need_image = source_kind == "mtcnn" or detection["verify_every_frame"]
        image = sources.image(row) if need_image else None
        if need_image:
            detector = detector or faces.FaceDetector(config["detection"], detection_device(config))
        landmarks = np.full((N_LANDMARKS, 2), np.nan, np.float32)
        points = np.full((5, 2), np.nan, np.float32)
        if source_kind == "dataset":
            box, landmarks = _annotation(row, landmarks_text)
            score = detector.face_probability(image[None], np.array([0]), box[None].astype(np.float64))[0] \
                if detection["verify_every_frame"] else np.nan
        else:
            if not pd.isna(row.get("annotation_sha256")) and row.get("annotation_sha256"):
                _, landmarks = _annotation(row, landmarks_text)  # kept as the dataset gives them
            track = detector.track(image[None])
            box, points, score = track.boxes[0], track.landmarks[0], track.scores[0]
        return ({"boxes": np.asarray(box, np.float32), "landmarks": landmarks, "points": np.asarray(points, np.float32),
                 "scores": np.float32(score)},
                {"source": Sources.where(row), "source_sha256": source["sha256"],
                 "track_sha256": fingerprints[row["clip_id"]]["track_sha256"], "box_source": source_kind})

    specs = {"boxes": ((4,), np.float32, ("image", "box"), {"units": "pixels of the picture", "order": "x0 y0 x1 y1"}),
             "landmarks": ((N_LANDMARKS, 2), np.float32, ("image", "point", "xy"),
                           {"units": "pixels of the picture", "points": "the dataset's 68 (iBUG order); NaN: none"}),
             "points": ((5, 2), np.float32, ("image", "point5", "xy"),
                        {"units": "pixels of the picture", "points": "MTCNN's eyes, nose, mouth corners; NaN: not run"}),
             "scores": ((), np.float32, ("image",), {"meaning": "ONet face probability of the box; NaN: not checked"})}
    attrs = {"stage": "detections", "dataset": dataset, "shard": shard, "parameters": detection}
    return _run("detections", rows, Path(paths.detections_store(config["results"], dataset, shard)), fingerprints,
                DETECTION_COLUMNS, process, specs, attrs, config["store"], summary_json)


def check_preset(config: Mapping[str, Any], dataset: str, preset: str) -> dict[str, Any]:
    """The preset's config, or a ConfigError when it cannot crop stills (it computes motion)."""
    preset_cfg = preset_config(config, preset)
    if preset_cfg.get("flow") is not None or preset_cfg.get("window") is not None:
        raise ConfigError(f"presets.{preset} computes optical flow and windows, which a still (one picture) does not "
                          f"have: dataset '{dataset}' holds stills; give datasets.{dataset}.presets a stills preset "
                          f"(flow: null, window: null; e.g. affect224)")
    return preset_cfg


def crop(image: np.ndarray, box: np.ndarray, size: int, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The box (x0 y0 x1 y1, grown by ``margin`` of its side on every side) cut out on whole pixels (zero
    outside the picture) and resized to ``size`` x ``size`` (its aspect is not kept, as HSEmotion and
    FRA-FER resize the box); returns the crop and the pixel box actually cut (x0 y0 x1 y1)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    cx0, cy0 = int(math.floor(x0 - dx + 0.5)), int(math.floor(y0 - dy + 0.5))
    cx1, cy1 = max(cx0 + 1, int(math.floor(x1 + dx + 0.5))), max(cy0 + 1, int(math.floor(y1 + dy + 0.5)))
    height, width = image.shape[:2]
    pad = max(0, -cx0, -cy0, cx1 - width, cy1 - height)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    region = image[cy0 + pad:cy1 + pad, cx0 + pad:cx1 + pad]
    shrink = region.shape[0] > size or region.shape[1] > size
    out = cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out, np.array([cx0, cy0, cx1, cy1], np.float32)


def features_shard(config: Mapping[str, Any], dataset: str, preset: str, shard: str, manifest_csv: str | Path,
                   detections_json: str | Path, summary_json: str | Path) -> dict[str, Any]:
    """Stage 2 of a stills shard and preset: every picture's face crop into ``features/<preset>/<shard>.zarr``,
    from the face box of its current track (never another)."""
    preset_cfg = check_preset(config, dataset, preset)
    size, mode = int(preset_cfg["size"]), preset_cfg["alignment"]
    rows = _shard_rows(manifest_csv, shard)
    expected = lineage.expected(config, rows, preset).set_index("clip_id")
    fingerprints = {c: {"source_sha256": e.source_sha256, "track_sha256": e.track_sha256,
                        "features_sha256": e.features_sha256} for c, e in expected.iterrows()}
    detections_path = Path(paths.detections_store(config["results"], dataset, shard))
    if store_problems(detections_path):
        raise StoreError(f"{detections_path}: no complete detections store ({'; '.join(store_problems(detections_path))}): "
                         f"rerun the detections")
    tracks = read_table(detections_path)
    track_index = {cid: i for i, cid in enumerate(tracks["clip_id"])}
    track_arrays = {name: read_rows(detections_path, name, np.arange(len(tracks)))
                    for name in ("boxes", "landmarks", "points", "scores")}
    detection_summary = json.loads(Path(detections_json).read_text())["clips"]
    sources = Sources(rows)

    def process(row: pd.Series):
        clip_id = row["clip_id"]
        i = track_index.get(clip_id)
        if i is None or tracks.at[i, "track_sha256"] != fingerprints[clip_id]["track_sha256"]:
            reason = detection_summary.get(clip_id, {}).get("reason", "no face box at the current detection "
                                                                      "parameters: rerun the detections")
            raise SkipImage(f"no face box: {reason}")
        source = sources.check(row)
        image = sources.image(row)
        box, landmarks, points = track_arrays["boxes"][i], track_arrays["landmarks"][i], track_arrays["points"][i]
        if mode == BOX_ALIGNMENT:
            face, cut = crop(image, box, size, float(preset_cfg.get("margin", 0.0)))
            scale = np.array([size / (cut[2] - cut[0]), size / (cut[3] - cut[1])], np.float32)
            matrix = np.array([[scale[0], 0, -cut[0] * scale[0]], [0, scale[1], -cut[1] * scale[1]]], np.float64)
        else:
            five = points if not np.isnan(points).any() else five_from_68(landmarks)
            if np.isnan(five).any():
                raise SkipImage(f"{Sources.where(row)}: alignment '{mode}' needs five landmarks, and neither MTCNN "
                                f"(detection_source: mtcnn) nor the dataset gives them")
            matrix = faces.alignment_matrix(five.astype(np.float64), mode, size)
            face = faces.align(image[None], five[None], mode, size)[0]
            cut = box
        def to_crop(p: np.ndarray) -> np.ndarray:
            return (p @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)
        return ({"rgb": face, "boxes": np.asarray(cut, np.float32), "landmarks": to_crop(landmarks),
                 "points": to_crop(points), "scores": track_arrays["scores"][i]},
                {"source": Sources.where(row), "source_sha256": source["sha256"],
                 "track_sha256": fingerprints[clip_id]["track_sha256"],
                 "features_sha256": fingerprints[clip_id]["features_sha256"], "box_source": tracks.at[i, "box_source"]})

    specs = {"rgb": ((size, size, 3), np.uint8, ("image", "y", "x", "channel"), {"meaning": "face crops, RGB"}),
             "boxes": ((4,), np.float32, ("image", "box"),
                       {"units": "pixels of the picture", "order": "x0 y0 x1 y1", "meaning": "the region cut"}),
             "landmarks": ((N_LANDMARKS, 2), np.float32, ("image", "point", "xy"),
                           {"units": "pixels of the crop", "points": "the dataset's 68 (iBUG order); NaN: none"}),
             "points": ((5, 2), np.float32, ("image", "point5", "xy"),
                        {"units": "pixels of the crop", "points": "MTCNN's eyes, nose, mouth corners; NaN: not run"}),
             "scores": ((), np.float32, ("image",), {"meaning": "ONet face probability of the box; NaN: not checked"})}
    attrs = {"stage": "features", "dataset": dataset, "shard": shard, "preset": preset, "parameters": preset_cfg,
             "detection": lineage.detection_parameters(config, dataset)}
    return _run(f"features[{preset}]", rows, Path(paths.features_store(config["results"], dataset, preset, shard)),
                fingerprints, FEATURE_COLUMNS, process, specs, attrs, config["store"], summary_json)


# -- readers --------------------------------------------------------------------------------------------------

def audit(config: Mapping[str, Any], dataset: str, manifest: pd.DataFrame, preset: str | None = None) -> lineage.Audit:
    """:func:`fer_pipeline.lineage.audit` of a stills dataset: every image of its stores held against the
    manifest and the config (``current`` rows carry ``store``, ``index``, the image's table row,
    ``n_frames`` 1 and ``n_windows`` 0)."""
    results = config["results"]
    folder = paths.features_dir(results, dataset, preset) if preset else paths.detections_dir(results, dataset)
    key = "features_sha256" if preset else "track_sha256"
    wanted = lineage.expected(config, manifest, preset)
    report = lineage.Audit(folder, preset)
    shards = set(wanted["shard"])
    report.stale_stores = [p for p in sorted(folder.glob("*.zarr")) if p.stem not in shards] if folder.is_dir() else []
    for shard, rows in wanted.groupby("shard", sort=True):
        path = (paths.features_store(results, dataset, preset, shard) if preset
                else paths.detections_store(results, dataset, shard))
        expected_fp = dict(zip(rows["clip_id"], rows[key]))
        attrs = store_attrs(path)
        if attrs is None:
            report.missing += sorted(expected_fp)
            continue
        problems = store_problems(path, attrs)
        if problems:
            report.stale_clips.append((path, "*", "incomplete store: " + "; ".join(problems)))
            report.missing += sorted(expected_fp)
            continue
        table = read_table(path)
        found = set()
        for index, image in enumerate(table.to_dict("records")):
            clip_id = image["clip_id"]
            if clip_id not in expected_fp:
                report.stale_clips.append((path, clip_id, f"not in shard {shard} of the manifest"))
            elif image.get(key) != expected_fp[clip_id]:
                report.stale_clips.append((path, clip_id, f"made from other inputs or parameters ({key} "
                                                          f"{str(image.get(key))[:12]}, now {expected_fp[clip_id][:12]})"))
            else:
                found.add(clip_id)
                report.current.append({**image, "shard": shard, "store": str(path), "index": index,
                                       "n_frames": 1, "n_windows": 0, "padded_frames": 0})
        report.missing += sorted(set(expected_fp) - found)
    return report


def index_images(config: Mapping[str, Any], dataset: str, preset: str, manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per still of ``manifest`` whose crop under ``preset`` is stored at the fingerprint the
    manifest and config imply now: clip_id, shard, store, index (its row in the store), subject, label and
    split (the manifest's, never the store's) and features_sha256. The promise of
    fer_pipeline.windows.index_clips: stale images and stores are never read."""
    report = audit(config, dataset, manifest, preset)
    by_id = manifest.set_index("clip_id")
    rows = [{"clip_id": c["clip_id"], "shard": c["shard"], "store": c["store"], "index": c["index"],
             "subject": str(by_id.at[c["clip_id"], "subject"]), "label": by_id.at[c["clip_id"], "label"],
             "split": str(by_id.at[c["clip_id"], "split"]), "features_sha256": c["features_sha256"]}
            for c in report.current]
    if report.missing:
        log.info("%s: %d images of the manifest have no current crop (skipped, or not computed yet)",
                 report.folder, len(report.missing))
    if report.stale_clips or report.stale_stores:
        log.info("%s: %d stale images and %d stale stores are not read (fer-pipeline gc removes them)",
                 report.folder, len(report.stale_clips), len(report.stale_stores))
    if not rows:
        raise StoreError(f"{report.folder}: the stills store holds no image of the manifest at the current "
                         f"fingerprints ({len(report.stale_clips)} stale): run the preprocessing first")
    return pd.DataFrame(rows).sort_values(["shard", "index"], ignore_index=True)


def load_images(index: pd.DataFrame, name: str = "rgb") -> np.ndarray:
    """Array ``name`` of the images ``index`` lists (rows of :func:`index_images`), in its order."""
    parts, order = [], []
    for store, rows in index.groupby("store", sort=False):
        parts.append(read_rows(store, name, rows["index"].to_numpy()))
        order.append(rows.index.to_numpy())
    if not parts:
        return np.zeros((0,))
    values = np.concatenate(parts)
    out = np.empty_like(values)
    out[np.argsort(np.concatenate(order), kind="stable")] = values
    return out


class StillDataset:
    """The crops of the images :func:`index_images` gives, as a map-style dataset (a torch DataLoader reads
    it): item i is ``{"rgb": (3, S, S) float32 in [0, 1], "label": class index, "clip": i}``. ``size``
    resizes at load; ``cache`` keeps each store's crops in memory once read. ``augmentation``
    (``{flip, rotate_deg}``, training only; None otherwise) flips and rotates each crop at random before the
    resize, as fer_pipeline.frames does a video's frames."""

    def __init__(self, index: pd.DataFrame, classes: list[str], size: int | None = None, cache: bool = True,
                 augmentation: Mapping[str, Any] | None = None):
        self.index = index.reset_index(drop=True)
        self.classes = list(classes)
        self.size = size
        self.augmentation = augmentation
        self._cache: dict[str, np.ndarray] = {} if cache else None
        unknown = sorted(set(self.index["label"]) - set(self.classes))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the classes {self.classes}")

    def __len__(self) -> int:
        return len(self.index)

    def _crop(self, i: int) -> np.ndarray:
        row = self.index.iloc[i]
        if self._cache is None:
            return read_rows(row["store"], "rgb", np.array([row["index"]]))[0]
        if row["store"] not in self._cache:
            self._cache[row["store"]] = zarr.open_group(row["store"], mode="r", zarr_format=3)["rgb"][...]
        return self._cache[row["store"]][int(row["index"])]

    def __getitem__(self, i: int) -> dict[str, Any]:
        face = self._crop(i)
        if self.augmentation:
            from .frames import augment  # torch's generator, which fer_pipeline.train seeds

            face = augment(face[None], self.augmentation["flip"], self.augmentation["rotate_deg"])[0]
        if self.size and face.shape[0] != self.size:
            face = cv2.resize(face, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return {"rgb": np.ascontiguousarray(face.transpose(2, 0, 1), np.float32) / 255.0,
                "label": self.classes.index(self.index.at[i, "label"]), "clip": i}


# -- inspection -----------------------------------------------------------------------------------------------

def summarize_store(path: str | Path, clip_id: str | None = None) -> tuple[list[str], int, int]:
    """Lines about one stills store for ``fer-pipeline inspect``; (lines, images, bytes stored). With
    ``clip_id``, that image's table row (no lines and 0 images when the store does not hold it)."""
    path = Path(path)
    attrs = store_attrs(path) or {}
    problems = store_problems(path, attrs)
    code = attrs.get("code", {})
    lines = [f"{path}  kind=stills stage={attrs.get('stage')} dataset={attrs.get('dataset')} shard={attrs.get('shard')} "
             f"preset={attrs.get('preset', '-')} images={attrs.get('n_images', 0)}"
             + (f" INCOMPLETE ({'; '.join(problems)})" if problems else ""),
             f"  code: {code.get('package')} {code.get('version')} commit={code.get('git_commit')}"
             f"{' (modified)' if code.get('git_dirty') else ''}"]
    if problems:
        return lines, 0, 0
    group = zarr.open_group(str(path), mode="r", zarr_format=3)
    table = read_table(path)
    labels = Counter(table["label"])
    lines.append("  labels: " + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())) +
                 "; box sources: " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(table["box_source"]).items())))
    stored = 0
    for name in sorted(attrs.get("arrays", {})):
        array = group[name]
        stored += array.nbytes_stored()
        if name in attrs.get("columns", []):
            continue
        codecs = ",".join(type(c).__name__.replace("Codec", "").lower() for c in array.compressors) or "none"
        size = array.nbytes_stored()
        lines.append(f"    {name:<10} {str(array.shape):<20} {str(array.dtype):<8} "
                     f"({','.join(array.metadata.dimension_names or ())}) chunks={array.chunks} shards={array.shards} "
                     f"{codecs} {array.nbytes / 1e6:.2f} MB -> {size / 1e6:.2f} MB")
    lines.append(f"    table      {len(table)} rows: {', '.join(attrs.get('columns', []))}")
    if clip_id is not None:  # one image: its table row, or nothing when this store does not hold it
        hit = table.index[table["clip_id"] == clip_id]
        if len(hit) == 0:
            return [], 0, 0
        lines.append(f"  image {clip_id} (row {int(hit[0])}): " + json.dumps(table.iloc[int(hit[0])].to_dict(), sort_keys=True))
        return lines, 1, stored
    return lines, int(attrs.get("n_images", 0)), stored


def contact_sheet(stores: list[Path], out_png: str | Path, clip_id: str | None = None, columns: int = 8,
                  per_label: int = 2) -> Path:
    """A PNG of stills crops: ``per_label`` images of every label (the first stored), or one image, with its
    68 landmarks where the dataset gives them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks: list[tuple[Path, int, str, str]] = []
    counts: Counter = Counter()
    for store in stores:
        if store_problems(store) or "rgb" not in store_attrs(store).get("arrays", {}):
            continue
        for i, (cid, label) in enumerate(zip(*(read_table(store)[c] for c in ("clip_id", "label")))):
            if (clip_id is None and counts[label] < per_label) or cid == clip_id:
                picks.append((store, i, cid, label))
                counts[label] += 1
    if not picks:
        raise StoreError(f"{stores[0].parent if stores else '?'}: no complete stills crop"
                         + (f" '{clip_id}'" if clip_id else "") + " (point inspect at a preset's feature folder)")
    picks.sort(key=lambda p: (p[3], p[2]))
    rows = -(-len(picks) // columns)
    fig, axes = plt.subplots(rows, min(columns, len(picks)), figsize=(1.6 * min(columns, len(picks)), 1.9 * rows),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (store, i, cid, label) in zip(axes.flat, picks):
        face = read_rows(store, "rgb", np.array([i]))[0]
        points = read_rows(store, "landmarks", np.array([i]))[0]
        ax.imshow(face)
        if not np.isnan(points).all():
            ax.scatter(points[:, 0], points[:, 1], s=1.5, c="lime")
        ax.set_title(f"{label}\n{cid[:18]}", fontsize=6)
    fig.suptitle(f"{len(picks)} stills crops ({stores[0].parent.name})", fontsize=8)
    return save_figure(fig, out_png)
