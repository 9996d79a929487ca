"""AffectNet as distributed: ``Manually_Annotated_file_lists/{training,validation}.csv`` and the images they list
under ``Manually_Annotated_Images/`` (or ``Manually_Annotated/Manually_Annotated_Images/``, the other way the
archive extracts).

A clip is one still: the image a list row names (``subDirectory_filePath``, relative to the images folder,
e.g. ``103/29a3...0a.jpg``). Its label is the row's ``expression`` code (DATASETS.md §7): 0 neutral,
1 happiness, 2 sadness, 3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt (:data:`CODES`); codes 8 None,
9 Uncertain and 10 No-Face have no class and are skipped with that reason. ``training.csv`` is the ``train``
partition, ``validation.csv`` the ``val`` one (protocol ``fixed``; the papers test on it). Clip ids carry the
partition (``train_29a3...0a``), because the same file can be listed in both.

The row's face box (``face_x, face_y, face_width, face_height``, pixels of the image) is kept in the
manifest's ``box`` column as ``x0 y0 x1 y1``, and the row's 68 landmarks (``facial_landmarks``: 136 numbers
``x;y;x;y...``, iBUG order) in the companion table ``manifest_landmarks.csv`` (:func:`landmarks_table`);
the manifest's ``annotation_sha256`` is the fingerprint of both, so a changed box or landmark recomputes that
image's face and features, and nothing else. ``row`` is the row's number in its list (the n-th data row
after the header, from 1).

Irregularities (DATASETS.md §7), tolerated and reported, each a row of ``manifest_skipped.csv`` naming the
list file and row (or the image):

- a row that does not parse (a field count other than 9, a number that is none, landmarks that are not 136
  numbers), a box with no area (AffectNet has negative ``face_width`` rows), a box that leaves the image;
- a row whose image is absent, empty (0 bytes) or cannot be read as an image (the validation set's one
  corrupt file), and a file listed twice in one list (the second row);
- codes 8-10 and any code outside 0-10;
- images no list names, and the automatically annotated half of the archive (``Automatically_Annotated*``,
  one row each: not read); anything else under the root, one row each.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from .layout import is_system_file, unused, walk_files

CLASSES = ("anger", "contempt", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
CODES = {0: "neutral", 1: "happiness", 2: "sadness", 3: "surprise", 4: "fear", 5: "disgust", 6: "anger",
         7: "contempt"}
NO_CLASS = {8: "None", 9: "Uncertain", 10: "No-Face"}

LISTS = "Manually_Annotated_file_lists"
LIST_FILES = {"training.csv": "train", "validation.csv": "val"}
IMAGES = "Manually_Annotated_Images"
IMAGE_FOLDERS = (Path(IMAGES), Path("Manually_Annotated") / IMAGES)
NOT_READ = ("Automatically_Annotated_file_lists", "Automatically_Annotated_Images", "Automatically_Annotated")
COLUMNS = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
           "expression", "valence", "arousal"]
N_LANDMARKS = 68

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def annotation_sha256(box: list[float], landmarks: list[float] | None) -> str:
    """The fingerprint of a still's annotation: its box (x0 y0 x1 y1) and landmarks (136 numbers or none)."""
    return hashlib.sha256(json.dumps({"box": [float(v) for v in box],
                                      "landmarks": None if landmarks is None else [float(v) for v in landmarks]})
                          .encode()).hexdigest()


def box_text(box: list[float]) -> str:
    """A box as the manifest's ``box`` column holds it: ``x0 y0 x1 y1`` in pixels."""
    return " ".join(number_text(v) for v in box)


def number_text(value: float) -> str:
    """A number as text that reads back as the same float (``12``, ``12.5``, ``0.1``)."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def parse_box(text: str) -> list[float] | None:
    """The manifest's ``box`` column back as four numbers (None where it is empty)."""
    values = str(text).split()
    return [float(v) for v in values] if len(values) == 4 else None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image from its header (no decode: AffectNet has ~290k); ValueError saying why
    the file is no image."""
    from PIL import Image, UnidentifiedImageError

    if path.stat().st_size == 0:
        raise ValueError("empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot be read as an image ({type(exc).__name__})") from None


def _images_folder(root: Path) -> Path | None:
    return next((root / folder for folder in IMAGE_FOLDERS if (root / folder).is_dir()), None)


def parse_row(fields: list[str]) -> tuple[dict[str, Any] | None, str | None]:
    """One list row as {file, box (x0 y0 x1 y1), landmarks (136 numbers), code}, or why it does not parse."""
    if len(fields) != len(COLUMNS):
        return None, f"{len(fields)} fields, not the {len(COLUMNS)} of the header ({','.join(COLUMNS)})"
    file = fields[0].strip()
    try:
        x, y, w, h = (float(v) for v in fields[1:5])
    except ValueError:
        return None, f"the face box {','.join(fields[1:5])!r} is not four numbers"
    try:
        code = int(float(fields[6]))
    except ValueError:
        return None, f"expression {fields[6]!r} is not a number"
    text = fields[5].strip()
    try:
        landmarks = [float(v) for v in text.split(";") if v.strip()] if text else []
    except ValueError:
        return None, "facial_landmarks does not parse as numbers separated by ';'"
    if len(landmarks) != 2 * N_LANDMARKS:
        return None, f"facial_landmarks holds {len(landmarks)} numbers, not {2 * N_LANDMARKS} (68 points x, y)"
    return {"file": file, "box": [x, y, x + w, y + h], "width": w, "height": h, "landmarks": landmarks,
            "code": code}, None


def _read_list(csv_path: Path) -> tuple[list[tuple[int, list[str]]], str | None]:
    """The data rows of a list file with their numbers (from 1), or why the file is unusable."""
    try:
        with open(csv_path, newline="", encoding="utf-8", errors="replace") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            if header[:len(COLUMNS)] != COLUMNS:
                return [], f"its header is not {','.join(COLUMNS)}: {','.join(header)[:100]!r}"
            return [(number, fields) for number, fields in enumerate(reader, start=1) if fields], None
    except csv.Error as exc:
        return [], f"does not parse as CSV ({exc})"


def scan(root: Path, block: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """List the stills under an AffectNet root (the folder holding ``Manually_Annotated_file_lists/`` and
    ``Manually_Annotated_Images/``).

    Returns ``(records, skipped)`` as every adapter does (fer_pipeline.datasets); a record has clip_id
    (``train_<file stem>``), subject (empty: AffectNet has none), label, raw_label (the code), split,
    path (the image), n_frames 1, fps 0, width, height, row (in its list), box (``x0 y0 x1 y1``) and
    annotation_sha256 (box and landmarks).
    """
    root = Path(root).resolve()
    skipped: list[dict[str, Any]] = []
    images = _images_folder(root)
    lists = root / LISTS
    known = {root / LISTS, *(root / f for f in IMAGE_FOLDERS), root / "Manually_Annotated"}
    for entry in sorted(root.iterdir()):
        if entry.name in NOT_READ:
            skipped.append({"path": str(entry), "reason": "the automatically annotated part: not read (the "
                                                          "manually annotated lists are the dataset's labels)"})
        elif entry not in known:
            skipped.append(unused(entry, f"not part of the AffectNet layout ({LISTS}/, {IMAGES}/)"))
    if (root / "Manually_Annotated").is_dir():
        for entry in sorted((root / "Manually_Annotated").iterdir()):
            if entry.name != IMAGES:
                skipped.append(unused(entry, f"not part of the AffectNet layout ({IMAGES}/)"))

    records: list[dict[str, Any]] = []
    listed: set[Path] = set()
    for entry in sorted(lists.iterdir()) if lists.is_dir() else []:
        if entry.name not in LIST_FILES:
            skipped.append(unused(entry, f"not one of the manual lists ({', '.join(LIST_FILES)})"))
    for name, split in LIST_FILES.items():
        csv_path = lists / name
        if not csv_path.is_file():
            continue
        rows, problem = _read_list(csv_path)
        if problem:
            skipped.append({"path": str(csv_path), "reason": problem})
            continue
        first_row: dict[Path, int] = {}
        for number, fields in rows:
            where = f"{name} row {number}"
            parsed, reason = parse_row(fields)
            if parsed is None:
                skipped.append({"path": str(csv_path), "reason": f"{where}: {reason}"})
                continue
            image = (images if images is not None else root / IMAGES) / parsed["file"]
            listed.add(image)

            def skip(why: str) -> None:
                skipped.append({"path": str(image), "reason": f"{where}: {why}"})

            if image in first_row:
                skip(f"lists the image of row {first_row[image]} again")
                continue
            first_row[image] = number
            code = parsed["code"]
            if code in NO_CLASS:
                skip(f"expression {code} ({NO_CLASS[code]}) has no emotion class")
                continue
            if code not in CODES:
                skip(f"expression {code} is not an AffectNet code (0-10)")
                continue
            if not image.is_file():
                skip("the listed image is absent")
                continue
            try:
                width, height = image_size(image)
            except ValueError as exc:
                skip(str(exc))
                continue
            x0, y0, x1, y1 = parsed["box"]
            if parsed["width"] <= 0 or parsed["height"] <= 0:
                skip(f"the face box has no area (face_width {parsed['width']:g}, face_height {parsed['height']:g})")
                continue
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                skip(f"the face box x {x0:g}-{x1:g}, y {y0:g}-{y1:g} leaves the {width}x{height} image")
                continue
            records.append({"clip_id": f"{split}_{_UNSAFE.sub('_', Path(parsed['file']).stem)}", "subject": "",
                            "label": CODES[code], "raw_label": str(code), "split": split, "path": str(image),
                            "n_frames": 1, "fps": 0.0, "width": width, "height": height, "row": number,
                            "box": box_text(parsed["box"]),
                            "annotation_sha256": annotation_sha256(parsed["box"], parsed["landmarks"])})
    if not lists.is_dir():
        skipped.append({"path": str(lists), "reason": f"absent: {LISTS}/ holds the labels ({', '.join(LIST_FILES)})"})
    if images is not None:
        for file in walk_files(images):
            if file not in listed:
                reason = "system file" if is_system_file(file.relative_to(images)) else \
                    f"not listed in {' or '.join(LIST_FILES)}"
                skipped.append({"path": str(file), "reason": reason})
    # Two rows of one partition naming files with one stem: the ids must stay unique.
    seen: dict[str, int] = {}
    for record in records:
        seen[record["clip_id"]] = seen.get(record["clip_id"], 0) + 1
    repeated = {cid for cid, n in seen.items() if n > 1}
    if repeated:
        counters: dict[str, int] = {}
        for record in records:
            if record["clip_id"] in repeated:
                counters[record["clip_id"]] = counters.get(record["clip_id"], 0) + 1
                record["clip_id"] = f"{record['clip_id']}_v{counters[record['clip_id']]}"
    skipped.sort(key=lambda entry: entry["path"])
    return records, skipped


def landmarks_table(root: Path, manifest: pd.DataFrame) -> pd.DataFrame:
    """The 68 landmarks of every manifest still, as their lists give them: columns ``clip_id`` and
    ``landmarks`` (136 numbers ``x;y;...`` in the image's pixels, iBUG order), in manifest order."""
    root = Path(root).resolve()
    by_split: dict[str, dict[int, str]] = {}
    for name, split in LIST_FILES.items():
        wanted = set(manifest.loc[manifest["split"] == split, "row"].astype(int))
        rows, _ = _read_list(root / LISTS / name) if (root / LISTS / name).is_file() else ([], None)
        by_split[split] = {}
        for number, fields in rows:
            if number in wanted:
                parsed, _ = parse_row(fields)
                if parsed is not None:
                    by_split[split][number] = ";".join(number_text(v) for v in parsed["landmarks"])
    values = [by_split.get(split, {}).get(int(row), "") for split, row in zip(manifest["split"], manifest["row"])]
    return pd.DataFrame({"clip_id": manifest["clip_id"].to_numpy(), "landmarks": values})


def parse_landmarks(text: str) -> list[float] | None:
    """The companion table's ``landmarks`` back as 136 numbers (None where empty)."""
    values = [float(v) for v in str(text).split(";") if v.strip()]
    return values if len(values) == 2 * N_LANDMARKS else None
