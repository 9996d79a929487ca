"""The chain of fingerprints from a video's bytes to a table: what each cached result was made from.

Every stage stamps its output with the fingerprint of exactly what it read, and every reader asks for the
fingerprint the manifest and the config imply now; anything else is stale and is neither used nor trusted::

    manifest row      source_sha256 (the file's bytes), label, subject
      -> track        track_sha256    = H(source_sha256, detection parameters, DETECTION_VERSION)
                      (a still's: H(source_sha256, annotation_sha256, detection parameters, DETECTION_VERSION),
                      annotation_sha256 being the dataset's own face box and landmarks, when its manifest has them)
      -> features     features_sha256 = H(track_sha256, preset parameters, FEATURES_VERSION)
      -> a training run: H(study config, split, seed, (clip_id, label, subject, features_sha256) of each clip)

Label and subject are not part of the arrays' fingerprints (no array depends on them, and relabelling a
clip must not recompute its faces); readers take them from the manifest, and training runs include them.

The ``*_VERSION`` numbers stand for the code: bump one when a change of fer_pipeline.faces (detection) or of
alignment, flow or dynamic images (fer_pipeline.preprocess, faces, motion) changes what the same inputs
give, and every cached track or feature clip made before is recomputed. Commits that change nothing of the
arrays leave the caches valid; the git commit is recorded beside each array for provenance, not keyed on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import logging
import shutil

import pandas as pd

from . import paths
from .provenance import fingerprint
from .store import ShardStore, StoreLock

log = logging.getLogger(__name__)

DETECTION_VERSION = 1
FEATURES_VERSION = 3  # 2: flow and dynamic images quantised, sharded arrays, the track inline (store layout 2);
#                       3: chunks of the window stride (8 frames), rgb one blosc block a chunk (the same values)

# Detection settings that say how the work is done, not what it gives: changing them keeps the tracks.
DETECTION_EXECUTION_KEYS = ("device", "batch_size")
# Adapters whose clips are stills (one picture each), kept as arrays of many images per shard (fer_pipeline.stills).
STILLS_ADAPTERS = ("affectnet", "fer2013")
# Where a still's face box comes from (datasets.<name>.detection_source): the dataset's own box, or MTCNN.
DETECTION_SOURCES = ("dataset", "mtcnn")


def is_stills(config: Mapping[str, Any], dataset: str | None) -> bool:
    """Whether ``dataset``'s clips are stills (its adapter is one of :data:`STILLS_ADAPTERS`)."""
    return bool(dataset) and config["datasets"].get(dataset, {}).get("adapter") in STILLS_ADAPTERS


def detection_source(config: Mapping[str, Any], dataset: str) -> str:
    """A stills dataset's box source: ``datasets.<name>.detection_source`` (default ``dataset``)."""
    return config["datasets"][dataset].get("detection_source") or "dataset"


def detection_parameters(config: Mapping[str, Any], dataset: str | None = None) -> dict[str, Any]:
    """The parameters a track depends on: ``detection`` without its execution settings, and the frame rate
    the dataset's clips are resampled to when it sets one (``datasets.<name>.sample_fps``: the track is
    made of the sampled frames)."""
    parameters = {k: v for k, v in config["detection"].items() if k not in DETECTION_EXECUTION_KEYS}
    if parameters.get("search_region") is None:  # whole keyframes, as before the key existed: tracks stay current
        parameters.pop("search_region", None)
    if is_stills(config, dataset):
        # A still's face: the dataset's box (with ONet's face probability of it when every frame is checked),
        # or MTCNN's; nothing else of the detection block changes one picture's result.
        if detection_source(config, dataset) == "dataset":
            return {"detection_source": "dataset", "verify_every_frame": parameters["verify_every_frame"]}
        return {"detection_source": "mtcnn", **{k: parameters[k] for k in (
            "min_face_size", "thresholds", "scale", "verify_every_frame")}}
    sample_fps = config["datasets"].get(dataset, {}).get("sample_fps") if dataset else None
    return parameters | ({"sample_fps": sample_fps} if sample_fps else {})


def track_sha256(source_sha256: str, detection: Mapping[str, Any], annotation_sha256: str | None = None) -> str:
    """The fingerprint of a clip's face track: its video's bytes and the detection parameters (and a still's
    annotation, the dataset's box and landmarks, where its manifest gives one)."""
    identity = {"source_sha256": source_sha256, "detection": dict(detection), "version": DETECTION_VERSION}
    if annotation_sha256:
        identity["annotation_sha256"] = annotation_sha256
    return fingerprint(identity)


def features_sha256(track: str, preset: Mapping[str, Any]) -> str:
    """The fingerprint of a clip's features under a preset: its track and the preset's parameters."""
    return fingerprint({"track_sha256": track, "preset": dict(preset), "version": FEATURES_VERSION})


def expected(config: Mapping[str, Any], manifest: pd.DataFrame, preset: str | None = None) -> pd.DataFrame:
    """What every manifest row's cached arrays must have been made from now: one row per clip with
    ``clip_id``, ``shard``, ``source_sha256``, ``track_sha256`` and, for a preset, ``features_sha256``."""
    datasets = set(manifest["dataset"]) if "dataset" in manifest.columns else set()
    detection = detection_parameters(config, next(iter(datasets)) if len(datasets) == 1 else None)
    out = pd.DataFrame({"clip_id": manifest["clip_id"].to_numpy(), "shard": manifest["shard"].to_numpy(),
                        "source_sha256": manifest["sha256"].to_numpy()})
    annotations = manifest["annotation_sha256"].to_numpy() if "annotation_sha256" in manifest.columns \
        else [None] * len(out)
    out["track_sha256"] = [track_sha256(sha, detection, annotation)
                           for sha, annotation in zip(out["source_sha256"], annotations)]
    if preset is not None:
        parameters = config["presets"][preset]
        out["features_sha256"] = [features_sha256(track, parameters) for track in out["track_sha256"]]
    return out


@dataclass
class Audit:
    """A stage's stores held against the manifest and the config: what a reader may use and what is stale.

    ``current``: one row per clip at the expected fingerprint (clip_id, shard, store, and the clip's
    attributes); ``stale_clips``: (store, clip_id, why) of clips a reader must not use; ``stale_stores``:
    stores of shards the manifest no longer has (an old ``shard_size``, a removed subject); ``missing``:
    manifest clips with no current clip (skipped by a stage, with its reason in the stage's summary, or
    not computed yet).
    """

    folder: Path
    preset: str | None  # None: the detections
    current: list[dict[str, Any]] = field(default_factory=list)
    stale_clips: list[tuple[Path, str, str]] = field(default_factory=list)
    stale_stores: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def audit(config: Mapping[str, Any], dataset: str, manifest: pd.DataFrame, preset: str | None = None) -> Audit:
    """Hold the detections (``preset`` None) or a preset's feature stores of ``dataset`` against
    ``manifest`` and ``config``: see :class:`Audit`."""
    if is_stills(config, dataset):
        from . import stills  # stills imports this module

        return stills.audit(config, dataset, manifest, preset)
    results = config["results"]
    folder = paths.features_dir(results, dataset, preset) if preset else paths.detections_dir(results, dataset)
    key = "features_sha256" if preset else "track_sha256"
    wanted = expected(config, manifest, preset)
    report = Audit(folder, preset)
    shards = set(wanted["shard"])
    report.stale_stores = [p for p in sorted(folder.glob("*.zarr")) if p.stem not in shards] if folder.is_dir() else []
    for shard, rows in wanted.groupby("shard", sort=True):
        path = (paths.features_store(results, dataset, preset, shard) if preset
                else paths.detections_store(results, dataset, shard))
        fingerprints = dict(zip(rows["clip_id"], rows[key]))
        if not (path / "zarr.json").is_file():
            report.missing += sorted(fingerprints)
            continue
        store = ShardStore(path, mode="r")
        found = set()
        for clip_id in store.stored_clip_ids():
            attrs, problems = store.clip_state(clip_id)
            if clip_id not in fingerprints:
                report.stale_clips.append((path, clip_id, f"not in shard {shard} of the manifest"))
            elif problems:
                report.stale_clips.append((path, clip_id, "incomplete: " + "; ".join(problems)))
            elif attrs.get(key) != fingerprints[clip_id]:
                report.stale_clips.append((path, clip_id, f"made from other inputs or parameters ({key} "
                                                          f"{str(attrs.get(key))[:12]}, now {fingerprints[clip_id][:12]})"))
            else:
                found.add(clip_id)
                report.current.append({"clip_id": clip_id, "shard": shard, "store": str(path), **attrs})
        report.missing += sorted(set(fingerprints) - found)
    return report


def audits(config: Mapping[str, Any], dataset: str, manifest: pd.DataFrame) -> list[Audit]:
    """:func:`audit` of the detections and of every preset folder of ``dataset`` that config defines."""
    features = paths.dataset_dir(config["results"], dataset) / "features"
    presets = sorted(p.name for p in features.iterdir() if p.is_dir() and p.name in config["presets"]) \
        if features.is_dir() else []
    return [audit(config, dataset, manifest)] + [audit(config, dataset, manifest, preset) for preset in presets]


def stale_preset_dirs(config: Mapping[str, Any], dataset: str) -> list[Path]:
    """Feature folders of presets that config no longer defines."""
    features = paths.dataset_dir(config["results"], dataset) / "features"
    return sorted(p for p in features.iterdir() if p.is_dir() and p.name not in config["presets"]) \
        if features.is_dir() else []


def collect_garbage(config: Mapping[str, Any], dataset: str, manifest: pd.DataFrame,
                    dry_run: bool = False) -> list[str]:
    """Remove what no reader may use any more (``fer-pipeline gc``): stale clips (through the store's
    writer, so a store a job is writing is left alone with a message), stores of shards the manifest no
    longer has, with their job summaries, and the folders of presets config no longer defines. Returns one
    line per removal ("would remove" with ``dry_run``)."""
    verb = "would remove" if dry_run else "removed"
    done = []
    for folder in stale_preset_dirs(config, dataset):
        done.append(f"{verb} {folder} (preset '{folder.name}' is not in config)")
        if not dry_run:
            shutil.rmtree(folder)
    for report in audits(config, dataset, manifest):
        for store in report.stale_stores:
            done.append(f"{verb} {store} (shard '{store.stem}' is not in the manifest)")
            if not dry_run:
                lock = StoreLock(store)  # never under a running job
                lock.acquire()
                lock.release()
                shutil.rmtree(store)
                shutil.rmtree(store.with_name(store.name + ".staging"), ignore_errors=True)
                store.with_suffix(".json").unlink(missing_ok=True)
        by_store: dict[Path, list[tuple[str, str]]] = {}
        for store, clip_id, why in report.stale_clips:
            by_store.setdefault(store, []).append((clip_id, why))
        for store, clips in sorted(by_store.items()):
            if is_stills(config, dataset):
                from . import stills

                done += [f"{verb} image {clip_id} of {store} ({why})" for clip_id, why in clips]
                if not dry_run:
                    stills.remove_images(store, [clip_id for clip_id, _ in clips], config["store"])
                continue
            done += [f"{verb} {store}/clips/{clip_id} ({why})" for clip_id, why in clips]
            if not dry_run:
                with ShardStore(store) as writer:
                    for clip_id, _ in clips:
                        writer.remove_clip(clip_id)
    return done
