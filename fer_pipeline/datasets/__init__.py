"""Dataset adapters and the manifest they produce: one row per clip, the first step of every pipeline.

An adapter reads a dataset exactly as its distributor ships it: ``scan(root, block) -> (records, skipped)``,
``block`` being the dataset's ``datasets.<name>`` config (the options of a dataset that has some). Every
file under the root lands in one of the two lists (a frame of a frame-folder clip with its record, a file
in a folder skipped as a whole with that folder's row), so a file the adapter cannot use is reported with a
reason, never dropped silently. :func:`build_manifest` adds the evaluation fold and the feature-store shard
of every clip; :func:`write_manifest` writes ``manifest.csv``, the skipped list and a ``manifest.json``
sidecar recording how the manifest was made, including the raw -> canonical label mapping, so that each
dataset's labels map to one canonical set and the record says how.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from .. import __version__, protocols, video
from ..files import write_text_atomic
from ..config import ConfigError, dataset_config, dataset_root
from . import affectnet, afew, bp4d, ckplus, enterface, fer2013, mmi, oulu
from .layout import walk_files

Scan = Callable[[Path, dict[str, Any]], tuple[list[dict[str, Any]], list[dict[str, Any]]]]

ADAPTERS: dict[str, Scan] = {"affectnet": affectnet.scan, "afew": afew.scan, "bp4d": bp4d.scan, "ckplus": ckplus.scan,
                             "enterface": enterface.scan, "fer2013": fer2013.scan, "mmi": mmi.scan, "oulu": oulu.scan}
# The canonical classes each adapter's dataset defines, in canonical order: a model's class index.
CLASSES: dict[str, tuple[str, ...]] = {"affectnet": affectnet.CLASSES, "afew": afew.CLASSES, "bp4d": bp4d.CLASSES,
                                       "ckplus": ckplus.CLASSES, "enterface": enterface.CLASSES,
                                       "fer2013": fer2013.CLASSES, "mmi": mmi.CLASSES, "oulu": oulu.CLASSES}
# Which folder datasets.<name>.root must name, for the error when an adapter finds nothing there.
ROOTS: dict[str, str] = {"affectnet": "for AffectNet the one holding Manually_Annotated_file_lists and "
                                      "Manually_Annotated_Images",
                         "afew": "for AFEW 7.0 the one holding Train_AFEW and Val_AFEW",
                         "bp4d": "for BP4D the one holding Sequences(2D+3D) (or 2D+3D) and AUCoding",
                         "ckplus": "for CK+ the one holding cohn-kanade-images and Emotion (or Emotion_labels)",
                         "enterface": "for eNTERFACE'05 the one holding 'subject 1' ... 'subject 44'",
                         "fer2013": "for FER2013 the one holding fer2013.csv",
                         "mmi": "for MMI the one holding Sessions",
                         "oulu": "for Oulu-CASIA the one holding OriginalImg (or the archive's folder above it)"}
# Adapters whose dataset labels frames, not only clips (BP4D's AU codes): ``(root, manifest) -> table`` with
# columns clip_id, frame and the labels, which write_manifest writes beside the manifest.
FRAME_LABELS: dict[str, Callable[[Path, pd.DataFrame], pd.DataFrame]] = {"bp4d": bp4d.frame_labels}
# Adapters whose dataset annotates each still with more than the manifest holds (AffectNet's 68 landmarks):
# ``name -> (root, manifest) -> table`` with a clip_id column, written as ``<manifest stem>_<name>.csv``.
COMPANIONS: dict[str, dict[str, Callable[[Path, pd.DataFrame], pd.DataFrame]]] = {
    "affectnet": {"landmarks": affectnet.landmarks_table}}
# Manifest columns of the stills adapters beyond MANIFEST_COLUMNS: ``row`` (the picture's row in the
# dataset's list or table, from 1), ``box`` (the dataset's face box, ``x0 y0 x1 y1`` in pixels) and
# ``annotation_sha256`` (the fingerprint of the box and any landmarks: part of the face track's).
STILL_COLUMNS = ["row", "box", "annotation_sha256"]
EXTRA_COLUMNS: dict[str, list[str]] = {"affectnet": STILL_COLUMNS, "fer2013": STILL_COLUMNS}

# ``split``: the dataset's own partition (AFEW's train/val), empty for datasets that ship none.
MANIFEST_COLUMNS = ["clip_id", "dataset", "subject", "label", "raw_label", "split", "path", "n_frames", "fps",
                    "width", "height", "fold", "shard", "sha256"]
SKIPPED_COLUMNS = ["path", "reason"]
DEFAULT_SHARD_SIZE = 50  # the schema's default for datasets.<name>.shard_size
_TEXT_COLUMNS = ["clip_id", "dataset", "subject", "label", "raw_label", "split", "path", "shard", "sha256", "box",
                 "annotation_sha256"]


def _adapter(config: dict[str, Any], dataset: str) -> str:
    name = dataset_config(config, dataset).get("adapter")
    if name not in ADAPTERS:
        raise ConfigError(f"datasets.{dataset}.adapter = {name!r} is not a known adapter "
                          f"(known: {', '.join(sorted(ADAPTERS))})")
    return name


def build_manifest(config: dict[str, Any], dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scan ``datasets.<dataset>.root`` with its adapter; return ``(manifest, skipped)`` as DataFrames.

    The manifest has :data:`MANIFEST_COLUMNS`, sorted by subject (as an integer), label and clip_id, with the
    fold from the dataset's protocol and the shard from its subjects (or ``shard_size``). Raises ConfigError
    naming the key to fix when the root is unset or absent, when the adapter finds no clip there, or when the
    protocol cannot split the clips found.
    """
    block = dataset_config(config, dataset)
    adapter = _adapter(config, dataset)
    root = dataset_root(config, dataset)
    if not root.is_dir():
        # A generated dataset's root may legitimately be absent before generation; scanning it is not.
        raise ConfigError(f"datasets.{dataset}.root = '{root}' does not exist yet: generate the dataset first")
    records, skipped_records = ADAPTERS[adapter](root, block)
    skipped = pd.DataFrame(skipped_records, columns=SKIPPED_COLUMNS)
    if not records:
        raise ConfigError(f"datasets.{dataset}.root = '{root}': the {adapter} adapter found no clip there "
                          f"({len(skipped)} files skipped). Point the key at the folder that holds the dataset "
                          f"as distributed ({ROOTS[adapter]}).")

    manifest = pd.DataFrame(records)
    manifest["dataset"] = dataset
    if "split" not in manifest.columns:
        manifest["split"] = ""
    _check(manifest, adapter)
    order = sorted(range(len(manifest)), key=lambda i: (protocols.subject_key(manifest.at[i, "subject"]),
                                                         manifest.at[i, "label"], manifest.at[i, "clip_id"]))
    manifest = manifest.iloc[order].reset_index(drop=True)
    try:
        manifest["fold"] = protocols.assign_folds(manifest, block["protocol"], config.get("seed", 0))
        if protocols.resolve(block["protocol"])["name"] == "fixed":
            protocols.fold_split(manifest, 0, 0.0, 0)  # the partitions a fixed split needs are there
    except ValueError as exc:
        raise ConfigError(f"datasets.{dataset}.protocol: {exc}") from None
    manifest["shard"] = protocols.assign_shards(manifest, block.get("shard_size", DEFAULT_SHARD_SIZE),
                                                block.get("subjects_per_shard", 1))
    # The videos' content is part of the manifest, so that a changed video (a re-generated demo, a repaired
    # file) changes the manifest and snakemake reruns the stages that read it. An adapter whose clips are
    # rows of one table (FER2013) gives each row's own fingerprint: the table's would be every row's.
    given = manifest["sha256"] if "sha256" in manifest.columns else pd.Series([None] * len(manifest))
    manifest["sha256"] = [sha if isinstance(sha, str) and sha else video.sha256(path)
                          for path, sha in tqdm(zip(manifest["path"], given), total=len(manifest),
                                                desc=f"{dataset}: hashing videos", unit="video", leave=False)]
    return manifest[MANIFEST_COLUMNS + EXTRA_COLUMNS.get(adapter, [])], skipped


# Keys of a dataset's config that no manifest reads (what is made from the manifest reads them).
MANIFEST_IGNORES = ("presets", "studies", "study_overrides", "sample_fps", "detection_source")


def manifest_parameters(config: dict[str, Any], dataset: str) -> dict[str, Any]:
    """What a dataset's manifest depends on: its config block (adapter, root, protocol, shard size and the
    adapter's own options: Oulu's modality, BP4D's split, ...) but for :data:`MANIFEST_IGNORES`, and the
    seed. The workflow reruns the manifest when they change."""
    block = dataset_config(config, dataset)
    return {key: value for key, value in block.items() if key not in MANIFEST_IGNORES} | {"seed": config["seed"]}


def _check(manifest: pd.DataFrame, adapter: str) -> None:
    """Hold the adapter to its contract: unique clip ids, and labels from the dataset's canonical classes."""
    duplicated = sorted(manifest.loc[manifest["clip_id"].duplicated(), "clip_id"].unique())
    if duplicated:
        raise RuntimeError(f"the {adapter} adapter produced duplicate clip ids: {', '.join(duplicated[:10])}")
    unknown = sorted(set(manifest["label"]) - set(CLASSES[adapter]))
    if unknown:
        raise RuntimeError(f"the {adapter} adapter produced labels outside its classes: {', '.join(unknown)}")


def describe(config: dict[str, Any], dataset: str, manifest: pd.DataFrame, skipped: pd.DataFrame) -> dict[str, Any]:
    """The ``manifest.json`` sidecar: what the manifest holds and how it was made.

    It has no timestamp, so building the same dataset twice gives byte-identical files.
    """
    block = dataset_config(config, dataset)
    adapter = _adapter(config, dataset)
    classes = list(CLASSES[adapter])
    counts = manifest["label"].value_counts()
    mapping = manifest[["raw_label", "label"]].drop_duplicates().sort_values(["label", "raw_label"])
    subjects = sorted(set(manifest["subject"]) - {""}, key=protocols.subject_key)  # AFEW has none
    protocol = protocols.resolve(block["protocol"])
    by_fold = {} if protocol["name"] == "fixed" else {str(k): test for k, _, test in protocols.folds(manifest)}
    return {
        "dataset": dataset,
        "adapter": adapter,
        "root": str(dataset_root(config, dataset).resolve()),
        "classes": classes,
        "class_counts": {name: int(counts.get(name, 0)) for name in classes},
        "label_mapping": dict(zip(mapping["raw_label"], mapping["label"])),
        "n_clips": len(manifest),
        "n_subjects": len(subjects),
        "subjects": subjects,
        "protocol": protocol,
        "split_counts": {str(k): int(v) for k, v in sorted(manifest["split"].value_counts().items()) if k},
        "test_subjects_by_fold": by_fold,
        "n_shards": int(manifest["shard"].nunique()),
        "n_skipped": len(skipped),
        "version": __version__,
        "parameters": {"seed": config.get("seed", 0),
                       "shard_size": block.get("shard_size", DEFAULT_SHARD_SIZE),
                       **{k: block[k] for k in ("subjects_per_shard",) if k in block}},
    }


def write_manifest(config: dict[str, Any], dataset: str, manifest_csv: Path, skipped_csv: Path) -> pd.DataFrame:
    """Build the manifest and write it with its skipped list and its JSON sidecar; return the manifest.

    The sidecar is ``manifest_csv`` with the suffix ``.json`` (``manifest.csv`` -> ``manifest.json``). An
    adapter in :data:`FRAME_LABELS` also gets its per-frame labels as ``<manifest stem>_frame_labels.csv``
    (``manifest_frame_labels.csv``), one in :data:`COMPANIONS` its tables as ``<manifest stem>_<name>.csv``
    (AffectNet's ``manifest_landmarks.csv``). The manifest is written last, so its presence means the others are complete.
    """
    manifest_csv, skipped_csv = Path(manifest_csv), Path(skipped_csv)
    manifest, skipped = build_manifest(config, dataset)
    adapter = _adapter(config, dataset)
    if adapter in FRAME_LABELS:
        table = FRAME_LABELS[adapter](dataset_root(config, dataset), manifest)
        write_text_atomic(manifest_csv.with_name(f"{manifest_csv.stem}_frame_labels.csv"),
                          table.to_csv(index=False, lineterminator="\n"))
    for name, make in COMPANIONS.get(adapter, {}).items():
        table = make(dataset_root(config, dataset), manifest)
        write_text_atomic(manifest_csv.with_name(f"{manifest_csv.stem}_{name}.csv"),
                          table.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(skipped_csv, skipped.to_csv(index=False, lineterminator="\n"))
    sidecar = describe(config, dataset, manifest, skipped)
    write_text_atomic(manifest_csv.with_suffix(".json"), json.dumps(sidecar, indent=2) + "\n")
    write_text_atomic(manifest_csv, manifest.to_csv(index=False, lineterminator="\n"))
    return manifest


def present_classes(config: dict[str, Any], dataset: str, manifest: pd.DataFrame) -> list[str]:
    """The adapter's canonical classes that the manifest holds, in canonical order: a study's class indices."""
    held = set(manifest["label"])
    return [c for c in CLASSES[_adapter(config, dataset)] if c in held]


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest CSV back with its ids as text (``subject`` "01" must not become the integer 1)."""
    return pd.read_csv(path, dtype={column: str for column in _TEXT_COLUMNS}, keep_default_na=False)


def listing_fingerprint(root: str | Path) -> str:
    """SHA-256 of what a dataset folder lists: every file under ``root`` as (relative path, size, mtime_ns).

    The files are the ones an adapter scans (:func:`~fer_pipeline.datasets.layout.walk_files`: symbolic links
    to folders followed, each real folder once), sorted by relative path. Only names and ``os.stat`` are
    read, never file contents, so it takes milliseconds on a dataset of thousands of videos. A file added,
    removed, renamed, rewritten or touched changes the hash: the workflow gives it to the manifest of a
    distributed dataset as a parameter, so snakemake reruns the manifest when the listing changed. A missing
    root lists nothing (the manifest job then says the root does not exist).
    """
    root = Path(root)
    entries = []
    if root.is_dir():
        for path in walk_files(root):
            try:
                stat = os.stat(path)
            except FileNotFoundError:  # removed while listing (e.g. a partial file being written)
                continue
            entries.append((path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    # JSON keeps the tuples unambiguous whatever the names hold (spaces, newlines, undecodable bytes).
    return hashlib.sha256(json.dumps(sorted(entries)).encode()).hexdigest()


PREPROCESSING_IGNORES = ("fold",)  # manifest columns that no preprocessing job reads


@functools.lru_cache(maxsize=8)
def _shard_fingerprints(manifest_csv: str, inode: int, mtime_ns: int, size: int) -> dict[str, str]:
    """Every shard's fingerprint of one version of a manifest (cached by path, inode, mtime and size: the
    manifest is replaced by an atomic rename, so each version is a new inode)."""
    with open(manifest_csv, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        column = header.index("shard") if "shard" in header else None
        # The evaluation fold is no input of a shard's jobs: a subject added elsewhere may deal the folds
        # anew without any shard's faces or features changing.
        kept = [i for i, name in enumerate(header) if name not in PREPROCESSING_IGNORES]
        rows: dict[str, list[list[str]]] = {}
        for row in reader:
            if column is not None and row:
                rows.setdefault(row[column], []).append([row[i] for i in kept])
    columns = [header[i] for i in kept]
    return {shard: hashlib.sha256(json.dumps({"columns": columns, "rows": shard_rows}).encode()).hexdigest()
            for shard, shard_rows in rows.items()}


def shard_fingerprint(manifest_csv: str | Path, shard: str) -> str:
    """SHA-256 of one shard's rows of a manifest: every column but ``fold``, as written, in the manifest's order.

    A clip added to, removed from, repaired (its ``sha256``) or relabelled in the shard changes it; rows of
    other shards do not. The workflow gives it to the per-shard jobs as a parameter, with the manifest as an
    ``ancient`` input, so a rewritten manifest reruns only the shards whose rows changed. Reads the CSV as
    text (no dtype guessing); a shard with no rows has the hash of no rows.
    """
    stat = os.stat(manifest_csv)
    fingerprints = _shard_fingerprints(str(manifest_csv), stat.st_ino, stat.st_mtime_ns, stat.st_size)
    if shard in fingerprints:
        return fingerprints[shard]
    return hashlib.sha256(json.dumps({"columns": [], "rows": []}).encode()).hexdigest()
