"""BP4D-Spontaneous as distributed: ``Sequences(2D+3D)/<subject>/<task>/*.jpg`` and
``AUCoding/AU_OCC/<subject>_<task>.csv``.

A clip is one task of one subject, a folder of frames (``F001/T1/``: clip id ``F001_T1``, subject ``F001``).
The sequences folder is also seen as ``2D+3D/``; either is read (when both are there, ``Sequences(2D+3D)/``,
and the other is skipped as a second copy). Frames are named by their number, zero-padded to 3 or 4 digits
(``052.jpg``, ``0052.jpg``, and ``999.jpg`` before ``1000.jpg``): the number, not the name, orders them and
matches them to their AU codes (DATASETS.md §6).

Labels. BP4D codes action units, not emotions. The clip's ``label`` is the emotion its task was made to
elicit (labels.BP4D_TASKS: T1 happiness, T2 sadness, T3 surprise, T4 embarrassment, T5 fear, T6 pain,
T7 anger, T8 disgust; a convention, not a rating of the face), ``raw_label`` the task. The AU occurrence
codes are per frame: :func:`frame_labels` makes the table ``clip_id, frame, AU1, AU2, ...`` of every frame of
every listed clip, 1 present, 0 absent, missing (NaN) where the coder wrote 9 (unknown), where the value is
anything else, and on the frames outside the coded segment (an AU_OCC file's rows cover only part of the
sequence) or of a clip with no readable AU file: never 0 where nobody coded 0. ``write_manifest`` writes it
beside the manifest.

Split. The STC-NLSTM paper scores AU F1 on BP4D's fixed FERA 2015 partition (training, development and test:
75,586 / 71,261 / 75,726 images, Table 9 on the test partition, 11 AUs). The FERA 2015 test subjects are not
part of the distributed BP4D, so a study here trains on one list of the 41 subjects and tests another:
``datasets.<name>.split: {train: [...], test: [...]}``. Protocol ``fixed`` trains on the manifest's
``train`` partition and tests its ``val`` one (fer_pipeline.protocols), so ``test`` subjects get ``val``.
A subject in neither list is skipped, one row for its folder; with no ``split`` the partition is empty and a
subject protocol (``kfold``, ``losgo``: BP4D's usual 3-fold subject-exclusive split) applies.

Every file under the root is a frame of a listed clip, the AU file of one, or skipped with a reason, alone
or with its folder: ``AUCoding/AU_INT/`` (intensity codes, not read) is one row, and so is a task folder that
is no clip, with its frames. The AU file of a clip that is not listed, an AU file that does not parse, and
each row of an AU file whose frame matches no image (with its row number) are skipped too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import labels, protocols, video
from ..config import ConfigError
from .layout import probe_clip, unused

CLASSES = labels.BP4D_CLASSES
# Frame images carry no rate. BP4D-Spontaneous was recorded at 25 frames per second (Zhang et al. 2014,
# "BP4D-Spontaneous: a high-resolution spontaneous 3D dynamic facial expression database"); DATASETS.md §6
# gives no rate.
FPS = 25.0

SEQUENCES = ("Sequences(2D+3D)", "2D+3D")  # the first that is there is read
AU_CODING = "AUCoding"
OCCURRENCE = "AU_OCC"
NOT_READ = {"AU_INT": "AU intensity codes: not read (the AU labels are the occurrence codes of AU_OCC)"}
UNKNOWN = 9  # the coders' "unknown": missing, never absent

_SUBJECT = re.compile(r"[FM][0-9]{3}")
_TASK = re.compile(r"T[1-8]")
_OCCURRENCE_FILE = re.compile(r"([FM][0-9]{3})_(T[1-8])\.csv")
# A frame's number, as the media layer orders frames (video.frame_files): the last run of digits in its name.
_FRAME_NUMBER = re.compile(r"(\d+)\D*$")

Key = tuple[str, str]  # (subject, task): F001, T1


def _partitions(block: dict[str, Any]) -> dict[str, str] | None:
    """Subject -> manifest partition (``train``, ``val``) from ``split``, or None when the config has none."""
    split = block.get("split")
    if split is None:
        return None
    train, test = set(split.get("train", [])), set(split.get("test", []))
    both = sorted(train & test)
    if both:
        raise ConfigError(f"the bp4d adapter's split lists {', '.join(both)} both in train and in test: a subject "
                          f"is trained on or tested, not both")
    return {**{subject: protocols.FIXED_TRAIN for subject in train},
            **{subject: protocols.FIXED_TEST for subject in test}}


def _layout(root: Path, skipped: list[dict[str, Any]]) -> tuple[Path | None, Path | None]:
    """The sequences folder and the AU_OCC folder under ``root`` (None where absent); the rest is skipped."""
    found = {entry.name: entry for entry in sorted(root.iterdir()) if entry.is_dir()}
    sequences = next((found[name] for name in SEQUENCES if name in found), None)
    occurrence = None
    for entry in sorted(root.iterdir()):
        if entry == sequences:
            continue
        if entry.is_dir() and entry.name in SEQUENCES:
            skipped.append({"path": str(entry), "reason": f"a second copy of the sequences: {sequences.name}/ "
                                                          f"is read"})
        elif entry.is_dir() and entry.name == AU_CODING:
            for coding in sorted(entry.iterdir()):
                if coding.is_dir() and coding.name == OCCURRENCE:
                    occurrence = coding
                elif coding.is_dir() and coding.name in NOT_READ:
                    skipped.append({"path": str(coding), "reason": NOT_READ[coding.name]})
                else:
                    skipped.append(unused(coding, f"not part of {AU_CODING}/ ({OCCURRENCE}/, AU_INT/)"))
        else:
            skipped.append(unused(entry, f"not part of the BP4D layout ({SEQUENCES[0]}/ or {SEQUENCES[1]}/, "
                                          f"{AU_CODING}/)"))
    return sequences, occurrence


def _clips(sequences: Path, partitions: dict[str, str] | None,
           skipped: list[dict[str, Any]]) -> dict[Key, tuple[Path, str]]:
    """The task folders of the subjects the split keeps, with each one's partition ('' without a split)."""
    found: dict[Key, tuple[Path, str]] = {}
    for subject in sorted(sequences.iterdir()):
        if not (subject.is_dir() and _SUBJECT.fullmatch(subject.name)):
            skipped.append(unused(subject, "not a subject folder (F001 ... F023, M001 ... M018)"))
            continue
        if partitions is not None and subject.name not in partitions:
            skipped.append({"path": str(subject), "reason": f"subject {subject.name} is in neither the train nor "
                                                            f"the test list of the dataset's split"})
            continue
        for task in sorted(subject.iterdir()):
            if task.is_dir() and _TASK.fullmatch(task.name):
                found[(subject.name, task.name)] = (task, "" if partitions is None else partitions[subject.name])
            else:
                skipped.append(unused(task, "not a task folder (T1 ... T8)"))
    return found


def _frame_number(file: Path) -> int:
    """A frame image's number (``052.jpg`` and ``0052.jpg`` are 52), which AU_OCC's column 0 gives."""
    return int(_FRAME_NUMBER.search(file.stem).group(1))


def _occurrence(csv: Path) -> pd.DataFrame:
    """An AU_OCC file as ``frame, AU<k>, ...`` (one row per coded frame, in the file's order): 0 and 1 as
    coded, 9 and any other value missing. Raises ValueError saying why the file does not parse."""
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"does not parse as CSV ({str(exc).strip()})") from None
    header = [name.strip() for name in table.columns]
    if not header or header[0] != "0" or not all(name.isdigit() for name in header):
        raise ValueError(f"its header is not 0,1,2,... (frame, then AU numbers): {','.join(header)[:60]!r}")
    frames = pd.to_numeric(table.iloc[:, 0].str.strip(), errors="coerce")
    if frames.isna().any() or (frames % 1 != 0).any():
        row = int(np.flatnonzero(frames.isna() | (frames % 1 != 0))[0]) + 1
        raise ValueError(f"row {row}: frame {table.iloc[row - 1, 0]!r} is not a frame number")
    repeated = frames[frames.duplicated()]
    if not repeated.empty:
        rows = np.flatnonzero(frames == repeated.iloc[0]) + 1
        raise ValueError(f"frame {int(repeated.iloc[0])} is coded twice (rows {rows[0]} and {rows[1]})")
    codes = table.iloc[:, 1:].apply(lambda column: pd.to_numeric(column.str.strip(), errors="coerce"))
    codes = codes.where(codes.isin([0, 1])).astype(float)
    codes.columns = [f"AU{int(name)}" for name in header[1:]]
    return pd.concat([frames.astype(np.int64).rename("frame"), codes], axis=1)


def _occurrence_files(occurrence: Path | None, skipped: list[dict[str, Any]]) -> dict[Key, Path]:
    """The AU_OCC files by (subject, task); files not named ``<subject>_<task>.csv`` are skipped."""
    found: dict[Key, Path] = {}
    for entry in sorted(occurrence.iterdir()) if occurrence is not None else []:
        match = _OCCURRENCE_FILE.fullmatch(entry.name)
        if entry.is_file() and match:
            found[(match.group(1), match.group(2))] = entry
        else:
            skipped.append(unused(entry, "not an AU occurrence file (<subject>_<task>.csv, F001_T1.csv)"))
    return found


def _check_occurrence(csv: Path, folder: Path, root: Path, skipped: list[dict[str, Any]]) -> None:
    """Skip an AU file that does not parse, and each of its rows whose frame matches no image of ``folder``
    (row n is the n-th line after the header)."""
    try:
        coded = _occurrence(csv)
    except ValueError as exc:
        skipped.append({"path": str(csv), "reason": str(exc)})
        return
    numbers = {_frame_number(file) for file in video.frame_files(folder)}
    skipped.extend({"path": str(csv), "reason": f"row {row}: frame {frame} matches no image in "
                                                f"{folder.relative_to(root)} (its AU codes are not used)"}
                   for row, frame in enumerate(coded["frame"], start=1) if frame not in numbers)


def scan(root: Path, block: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """List the clips under a BP4D root (the folder holding ``Sequences(2D+3D)/`` or ``2D+3D/`` and
    ``AUCoding/``); ``block`` is the dataset's config, whose ``split`` (optional) gives the partition.

    Returns ``(records, skipped)`` as every adapter does (fer_pipeline.datasets); a record has clip_id
    (``F001_T1``), subject (``F001``), label (the task's elicited emotion), raw_label (the task, ``T1``),
    split (``train``, ``val`` or ''), path (the task folder, absolute), n_frames (its frame images), fps
    (:data:`FPS`), width, height (its first frame's). Raises ConfigError when ``split`` puts one subject on
    both sides.
    """
    root = Path(root).resolve()
    partitions = _partitions(block or {})
    skipped: list[dict[str, Any]] = []
    sequences, occurrence = _layout(root, skipped)
    clips = _clips(sequences, partitions, skipped) if sequences is not None else {}
    coded = _occurrence_files(occurrence, skipped)

    records: list[dict[str, Any]] = []
    for (subject, task), (folder, split) in sorted(clips.items()):
        fields, reason = probe_clip(folder, fps=FPS)
        if fields is None:
            skipped.append({"path": str(folder), "reason": reason})
            continue
        frames = {file.name for file in video.frame_files(folder)}
        skipped.extend(unused(entry, "not a frame of the sequence (not an image file)")
                       for entry in sorted(folder.iterdir()) if entry.name not in frames)
        if (subject, task) in coded:
            _check_occurrence(coded.pop((subject, task)), folder, root, skipped)
        records.append({"clip_id": f"{subject}_{task}", "subject": subject, "label": labels.BP4D_TASKS[task],
                        "raw_label": task, "split": split, **fields})
    # AU files left over label no listed clip: its task folder is absent, or skipped above.
    skipped.extend({"path": str(csv), "reason": f"labels no listed clip: {subject}/{task} is absent from the "
                                                f"sequences or skipped"}
                   for (subject, task), csv in coded.items())
    skipped.sort(key=lambda entry: entry["path"])
    return records, skipped


def frame_labels(root: Path, manifest: pd.DataFrame) -> pd.DataFrame:
    """The AU occurrence table of a BP4D manifest: one row per frame image of every clip, in manifest and
    frame order, columns ``clip_id``, ``frame`` (the image's number), then ``AU<k>`` for every AU the AU_OCC
    files code, by number: 1.0 present, 0.0 absent, NaN missing (coded 9 or otherwise unknown, outside the
    coded segment, or a clip whose AU file is absent or does not parse; :func:`scan` lists the latter and the
    rows whose frame matches no image, which are left out here)."""
    occurrence = Path(root).resolve() / AU_CODING / OCCURRENCE
    tables = []
    for clip in manifest.itertuples():
        numbers = [_frame_number(file) for file in video.frame_files(clip.path)]
        frames = pd.DataFrame({"clip_id": clip.clip_id, "frame": np.asarray(numbers, dtype=np.int64)})
        csv = occurrence / f"{clip.subject}_{clip.raw_label}.csv"
        try:
            coded = _occurrence(csv) if csv.is_file() else None
        except ValueError:
            coded = None
        tables.append(frames if coded is None else frames.merge(coded, on="frame", how="left"))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["clip_id", "frame"])
    units = sorted((column for column in table.columns if column.startswith("AU")), key=lambda name: int(name[2:]))
    return table[["clip_id", "frame", *units]]
