"""FER2013 as distributed (the ICML 2013 challenge's ``fer2013.csv``): one row per picture, columns ``emotion``,
``pixels``, ``Usage``.

A clip is one row: a 48 x 48 grey face as 2304 values 0-255 separated by spaces (already cropped and
roughly centred by the dataset's makers). Its media is the table itself plus the row's number
(fer_pipeline.video reads a ``.csv`` path with ``row=``); its fingerprint (``sha256``) is the SHA-256 of the
row's pixel string, so one changed picture changes one clip. Labels: 0 anger, 1 disgust, 2 fear,
3 happiness, 4 sadness, 5 surprise, 6 neutral (:data:`CODES`). The ``Usage`` column is the split:
``Training`` -> ``train``, ``PublicTest`` -> ``val``, ``PrivateTest`` -> ``test`` (protocol ``fixed``: the
challenge trains on Training, validates on PublicTest and scores PrivateTest). FER2013 has no subject ids:
clips are sharded ``shard_size`` at a time. Clip ids are ``fer<row, 5 digits>`` (``fer00001``).

The face is the whole picture: the manifest's ``box`` is ``0 0 48 48`` (so ``detection_source: dataset``
crops nothing), and MTCNN (``detection_source: mtcnn``) would look for a face of at least
``detection.min_face_size`` pixels in a 48-pixel picture, which it does not find at the default 80.

Skipped, each with a reason naming the file and the row: a row whose field count is not 3, whose emotion is
not 0-6, whose usage is none of the three, or whose pixel string has the wrong length (not 2304 values) or
holds something other than integers 0-255. Any other file under the root is skipped as not read (the
Kaggle re-distribution's ``train.csv`` / ``test.csv`` / ``icml_face_data.csv`` say so by name).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from .. import video
from .affectnet import annotation_sha256, box_text
from .layout import unused

CLASSES = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
CODES = {0: "anger", 1: "disgust", 2: "fear", 3: "happiness", 4: "sadness", 5: "surprise", 6: "neutral"}
USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
TABLE = "fer2013.csv"
COLUMNS = ["emotion", "pixels", "Usage"]
SIZE = (48, 48)
KAGGLE = {"train.csv", "test.csv", "icml_face_data.csv"}


def _table(root: Path, skipped: list[dict[str, Any]]) -> Path | None:
    """``fer2013.csv`` in the root (or in a ``fer2013/`` folder, as the tarball extracts); the rest is skipped."""
    table = None
    for candidate in (root / TABLE, root / "fer2013" / TABLE):
        if candidate.is_file():
            table = candidate
            break
    for entry in sorted(root.iterdir()):
        if table is not None and entry in (table, table.parent) and entry != root:
            if entry.is_dir():
                skipped.extend(unused(inner, f"not read (the dataset is {TABLE})")
                               for inner in sorted(entry.iterdir()) if inner != table)
            continue
        if entry.name in KAGGLE:
            skipped.append({"path": str(entry), "reason": f"the Kaggle re-distribution's {entry.name}: not read "
                                                          f"(the adapter reads {TABLE}, the original table)"})
        else:
            skipped.append(unused(entry, f"not read (the dataset is {TABLE})"))
    return table


def scan(root: Path, block: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """List the pictures of a FER2013 root (the folder holding ``fer2013.csv``).

    Returns ``(records, skipped)`` as every adapter does (fer_pipeline.datasets); a record has clip_id,
    subject (empty), label, raw_label (the code), split (from Usage), path (the table), n_frames 1, fps 0,
    width and height 48, row, box (the whole picture), annotation_sha256 and sha256 (the pixel string's).
    """
    root = Path(root).resolve()
    skipped: list[dict[str, Any]] = []
    table = _table(root, skipped)
    records: list[dict[str, Any]] = []
    if table is None:
        skipped.sort(key=lambda entry: entry["path"])
        return records, skipped
    box = [0.0, 0.0, float(SIZE[1]), float(SIZE[0])]
    annotation = annotation_sha256(box, None)
    with open(table, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        if header != COLUMNS:
            skipped.append({"path": str(table), "reason": f"its header is not {','.join(COLUMNS)}: "
                                                          f"{','.join(header)[:80]!r}"})
            return records, skipped
        for number, fields in enumerate(reader, start=1):
            def skip(why: str) -> None:
                skipped.append({"path": str(table), "reason": f"row {number}: {why}"})

            if len(fields) != len(COLUMNS):
                skip(f"{len(fields)} fields, not the 3 of the header ({','.join(COLUMNS)})")
                continue
            emotion, pixels, usage = (field.strip() for field in fields)
            try:
                code = int(emotion)
            except ValueError:
                code = None
            if code not in CODES:
                skip(f"emotion {emotion!r} is not a FER2013 code (0-6)")
                continue
            if usage not in USAGE:
                skip(f"Usage {usage!r} is none of {', '.join(USAGE)}")
                continue
            try:
                video.pixel_image(pixels, SIZE)
            except ValueError as exc:
                skip(str(exc))
                continue
            records.append({"clip_id": f"fer{number:05d}", "subject": "", "label": CODES[code],
                            "raw_label": str(code), "split": USAGE[usage], "path": str(table), "n_frames": 1,
                            "fps": 0.0, "width": SIZE[1], "height": SIZE[0], "row": number, "box": box_text(box),
                            "annotation_sha256": annotation, "sha256": video.pixel_sha256(pixels)})
    skipped.sort(key=lambda entry: entry["path"])
    return records, skipped
