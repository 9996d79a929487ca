"""AFEW 7.0 (EmotiW 2017) as distributed: ``Train_AFEW/<Emotion>/<clip id>.avi`` and ``Val_AFEW/...``.

The emotion folder is the label (Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise: seven classes with
neutral), mapped to the canonical names (anger, ..., happiness, neutral, sadness, surprise). The partition
folder is recorded in the manifest's ``split`` column (``train``, ``val``); the dataset's protocol is
``fixed``: train on Train, score on Val, as Xu et al. and the challenge do (the Test labels are withheld).

Subjects: AFEW has no subject ids (its clips are cut from films). The manifest leaves ``subject`` empty, so
clips are sharded in groups of ``shard_size``, and the clip is the unit that splits inside a partition keep
on one side (fer_pipeline.protocols.units); the Train/Val partition itself is the organisers', used as
shipped: nothing here can check that an actor is not in both.

Irregularities (the project notes, DATASETS.md §2), tolerated and reported:

- the same numeric clip id can be in Train and in Val, so clip ids carry the partition:
  ``train_013736360``, ``val_013736360``;
- the partition folders also hold the organisers' metadata (``Train_6.xml``) and their aligned faces
  (``AlignedFaces_LBPTOP_Points.zip``, or extracted ``.../Faces/<clip id>/*.jpg``): skipped, this pipeline
  detects and aligns its own faces;
- the EmotiW test partition (``Test_vid_Distribute``, ``Test_2016_Faces_Distribute``) is unlabelled: skipped;
- folder names are matched without regard to case (``train_afew``, ``HAPPY``);
- stray files, system files and videos that cannot be probed are skipped with a reason.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from .. import labels
from .layout import is_system_file, probe_clip, walk_files

CLASSES = labels.AFEW_CLASSES
VIDEO_SUFFIXES = {".avi"}

_PARTITION = re.compile(r"(train|val)(?:[\s_-]*afew)?", re.IGNORECASE)
_TEST_PARTITION = re.compile(r"test.*", re.IGNORECASE)
_ALIGNED_FACES = re.compile(r"alignedfaces.*|faces", re.IGNORECASE)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def _classify(relative: Path) -> tuple[tuple[str, str, str] | None, str | None]:
    """Read ``(split, label, raw_label)`` from a file's folders, or say why the file is no clip."""
    parts = relative.parts
    if is_system_file(relative):
        return None, "system file"
    if len(parts) > 1 and _TEST_PARTITION.fullmatch(parts[0].strip()):
        return None, f"test partition '{parts[0]}': its labels are withheld"
    if any(_ALIGNED_FACES.fullmatch(part.strip()) for part in parts[1:-1]):
        return None, "the organisers' aligned faces: not used (this pipeline detects and aligns its own)"
    if relative.suffix.lower() not in VIDEO_SUFFIXES:
        return None, f"not a video ({relative.suffix or 'no extension'}): AFEW clips are .avi"
    partition = _PARTITION.fullmatch(parts[0].strip()) if len(parts) > 1 else None
    if partition is None:
        return None, "not inside Train_AFEW or Val_AFEW"
    if len(parts) == 2:
        return None, "video directly in the partition folder (no emotion folder)"
    raw_label = parts[1]
    label = labels.canonical(raw_label)
    if label not in CLASSES:
        return None, f"emotion folder '{raw_label}' is not one of AFEW's seven classes ({', '.join(CLASSES)})"
    if len(parts) > 3:
        return None, "nested below the emotion folder (expected <partition>/<Emotion>/<clip>.avi)"
    return (partition.group(1).lower(), label, raw_label), None


def scan(root: Path, block: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """List the clips under an AFEW root (the folder holding ``Train_AFEW`` and ``Val_AFEW``).

    Returns ``(records, skipped)`` as every adapter does (fer_pipeline.datasets); a record has clip_id,
    subject (empty), label, raw_label, split, path, n_frames, fps, width, height. ``clip_id`` is
    ``<split>_<file stem>`` with characters other than letters, digits, ``_`` and ``-`` replaced by ``_``;
    files that end up with one id (a copy beside the original, one id in two emotion folders) get ``_v1``,
    ``_v2``, ... in the order of their relative paths.
    """
    root = Path(root).resolve()
    skipped: list[dict[str, Any]] = []
    by_clip: dict[str, list[tuple[Path, str, str, str]]] = defaultdict(list)
    for path in walk_files(root):
        parsed, reason = _classify(path.relative_to(root))
        if parsed is None:
            skipped.append({"path": str(path), "reason": reason})
            continue
        split, label, raw_label = parsed
        by_clip[f"{split}_{_UNSAFE.sub('_', path.stem)}"].append((path, split, label, raw_label))

    records: list[dict[str, Any]] = []
    for base, files in sorted(by_clip.items()):
        for number, (path, split, label, raw_label) in enumerate(files, start=1):
            fields, reason = probe_clip(path)
            if fields is None:
                skipped.append({"path": str(path), "reason": reason})
                continue
            records.append({"clip_id": base if len(files) == 1 else f"{base}_v{number}", "subject": "",
                            "label": label, "raw_label": raw_label, "split": split, **fields})
    skipped.sort(key=lambda entry: entry["path"])
    return records, skipped
