"""A digest of a dataset's results: one SHA-256 per stage, so that two machines can see where they part.

Two machines that run the same commit on the same data should get the same tables; when they do not
(floating-point kernels, thread counts and library builds differ; docs/reproducibility.md), comparing their
digests stage by stage names the first stage whose results differ. Each item hashes what a stage computed
and nothing of how or when it was stored:

    videos               the manifest's (clip_id, sha256) pairs, i.e. the bytes of every input file
    tracks               the current face tracks (detections/*.zarr)
    features/<preset>    the current clips of each preset's feature stores
    <study>/<run>        each run's predictions.csv (its bytes: these files are written deterministically),
                         and each run's own feature store (the fusion networks' features.zarr)
    tables/<study>.csv   each study's table and its _folds.csv, by content, without provenance columns

A store is hashed over its arrays' decoded values (clip id, array name, dtype, shape and bytes, in clip-id
and array-name order), never over the compressed chunk files (their bytes depend on the codec and its
version) or the attributes (they hold creation times, source paths and code versions). Only the clips that
fer_pipeline.lineage finds current for the manifest and the config enter the tracks and features items: a
stale clip that a reader would not use does not make two machines differ (a run's own store enters with its
complete clips: the run's job removes those of an earlier run). A table's ``notes`` column (code
versions, paths, how a row was trained) and the ``<study>.md`` files are provenance, not results, and are
left out too.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from tqdm import tqdm

from . import lineage, paths
from .datasets import read_manifest
from .files import write_text_atomic
from .provenance import code_version
from .store import ShardStore

log = logging.getLogger(__name__)

# Table columns that hold provenance text (code versions, paths), not results: left out of a table's hash.
PROVENANCE_COLUMNS = ("notes",)
# The folders of a dataset's results (fer_pipeline.paths) that are not a study's.
STAGE_FOLDERS = ("videos", "detections", "features")


@dataclass(frozen=True)
class Item:
    """One line of the digest: a stage or run, the SHA-256 of its content, and how many clips or rows it has."""

    name: str
    sha256: str
    count: int
    unit: str  # "clips" or "rows"


def _hash_clips(clips: Iterable[tuple[str, Path]], desc: str) -> tuple[str, int]:
    """SHA-256 over the decoded arrays of ``(clip_id, store path)`` pairs, in clip-id order, and their number.

    Per clip its id, then per array (by name) a JSON line of name, dtype (little-endian) and shape, then its
    bytes in C order: dtype and shape fix each array's length, so the stream reads back one way only.
    """
    clips = sorted(clips)
    digest = hashlib.sha256()
    stores: dict[Path, ShardStore] = {}
    # tqdm shows its bar only when hashing takes longer than two seconds (the full-size feature stores).
    for clip_id, store_path in tqdm(clips, desc=desc, unit="clip", delay=2, leave=False):
        store = stores.setdefault(store_path, ShardStore(store_path, mode="r"))
        group = store.clip(clip_id)
        digest.update(json.dumps({"clip": clip_id}).encode() + b"\n")
        for name in sorted(group.array_keys()):
            values = np.asarray(group[name][...])
            values = np.ascontiguousarray(values.astype(values.dtype.newbyteorder("<"), copy=False))
            digest.update(json.dumps({"array": name, "dtype": values.dtype.str,
                                      "shape": list(values.shape)}).encode() + b"\n")
            digest.update(values)
    return digest.hexdigest(), len(clips)


def _current_clips(report: lineage.Audit, name: str) -> Item:
    """The item of the detections or of a preset's stores: the clips the audit found current."""
    if report.stale_clips or report.stale_stores:
        log.info("%s: left out %d stale clips and %d stale stores (fer-pipeline inspect lists them, fer-pipeline gc "
                 "removes them)", name, len(report.stale_clips), len(report.stale_stores))
    sha256, count = _hash_clips(((c["clip_id"], Path(c["store"])) for c in report.current), name)
    return Item(name, sha256, count, "clips")


def _csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _run_items(dataset_dir: Path, study: Path) -> list[Item]:
    """Each run of a study: its predictions.csv by bytes, its own feature store (``*.zarr``) by values."""
    items = []
    for predictions in sorted(study.rglob(paths.run_predictions(".").name)):
        name = predictions.parent.relative_to(dataset_dir).as_posix()
        rows = len(_csv_rows(predictions)) - 1  # without the header
        items.append(Item(name, hashlib.sha256(predictions.read_bytes()).hexdigest(), rows, "rows"))
    for store_path in sorted(p for p in study.rglob("*.zarr") if (p / "zarr.json").is_file()):
        name = store_path.relative_to(dataset_dir).as_posix()
        store = ShardStore(store_path, mode="r")
        sha256, count = _hash_clips(((clip_id, store_path) for clip_id in store.clip_ids()), name)
        items.append(Item(name, sha256, count, "clips"))
    return items


def _table_item(dataset_dir: Path, table: Path) -> Item:
    """A study table by content: its cells as text (the CSV's own spelling of every number), without the
    :data:`PROVENANCE_COLUMNS`."""
    rows = _csv_rows(table)
    if not rows:
        raise ValueError(f"{table}: empty table (not even a header): rerun the study's table job")
    keep = [i for i, column in enumerate(rows[0]) if column not in PROVENANCE_COLUMNS]
    content = json.dumps([[row[i] for i in keep] for row in rows])
    return Item(f"tables/{table.relative_to(dataset_dir).as_posix()}", hashlib.sha256(content.encode()).hexdigest(),
                len(rows) - 1, "rows")


def digest(config: Mapping[str, Any], dataset: str) -> list[Item]:
    """The digest of ``<config["results"]>/<dataset>``, in the order of the chain: videos, tracks,
    ``features/<preset>`` (sorted), the studies' runs (sorted), the tables.

    ``config`` tells which clips are current (fer_pipeline.lineage): pass the config the results were made
    with. A preset folder that the config does not define is stale, as for ``fer-pipeline gc``, and left out.
    Raises FileNotFoundError when the folder or its manifest is missing.
    """
    results = config["results"]
    folder = paths.dataset_dir(results, dataset)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such results folder (give a dataset's folder, e.g. results/demo)")
    manifest_path = paths.manifest_csv(results, dataset)
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: no manifest, so nothing tells which clips are current: make it "
                                f"first (snakemake {manifest_path})")
    manifest = read_manifest(manifest_path)
    pairs = sorted(zip(manifest["clip_id"], manifest["sha256"]))
    items = [Item("videos", hashlib.sha256(json.dumps(pairs).encode()).hexdigest(), len(pairs), "clips")]
    for report in lineage.audits(config, dataset, manifest):  # the detections, then each preset's stores
        items.append(_current_clips(report, "tracks" if report.preset is None else f"features/{report.preset}"))
    for stale in lineage.stale_preset_dirs(config, dataset):
        log.info("%s: left out, preset '%s' is not in the config (fer-pipeline gc removes it; pass the config "
                 "that made it with --config to digest it)", stale, stale.name)
    studies = sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in STAGE_FOLDERS)
    items += sorted((item for study in studies for item in _run_items(folder, study)), key=lambda i: i.name)
    for study in studies:
        for table in (paths.study_table(results, dataset, study.name),
                      paths.study_folds_table(results, dataset, study.name)):
            if table.is_file():
                items.append(_table_item(folder, table))
    return items


def format_lines(items: Iterable[Item]) -> str:
    """One line per item: ``<name>  <sha256[:16]>  (<n> clips|rows)``, the names padded to one width."""
    items = list(items)
    width = max((len(i.name) for i in items), default=0)
    return "\n".join(f"{i.name:<{width}}  {i.sha256[:16]}  ({i.count} {i.unit})" for i in items)


def write_json(path: str | Path, dataset: str, items: Iterable[Item]) -> Path:
    """The digest with full hashes, and the code that computed it, as JSON (what ``--compare`` reads)."""
    document = {"dataset": dataset, "code": code_version(),
                "items": {i.name: {k: v for k, v in asdict(i).items() if k != "name"} for i in items}}
    write_text_atomic(Path(path), json.dumps(document, indent=2) + "\n")
    return Path(path)


def read_json(path: str | Path) -> dict[str, Any]:
    """A digest written by :func:`write_json`; FileNotFoundError or ValueError naming the file otherwise."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such digest (write one with fer-pipeline digest --json)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a digest: invalid JSON ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("items"), dict):
        raise ValueError(f"{path}: not a digest: no 'items' (write one with fer-pipeline digest --json)")
    return document


def compare(items: Iterable[Item], other: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(name, how)`` of every item that differs from the digest ``other`` (see :func:`read_json`), in this
    digest's order, then the items only ``other`` has: the first is where the two results part."""
    items = list(items)
    theirs = other["items"]
    differences = []
    for item in items:
        there = theirs.get(item.name)
        if there is None:
            differences.append((item.name, "only here"))
        elif there.get("sha256") != item.sha256:
            differences.append((item.name, f"here {item.sha256[:16]} ({item.count} {item.unit}), there "
                                           f"{str(there.get('sha256'))[:16]} "
                                           f"({there.get('count')} {there.get('unit')})"))
    ours = {i.name for i in items}
    differences += [(name, "only there") for name in theirs if name not in ours]
    return differences
