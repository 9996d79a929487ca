"""CK+ (the Extended Cohn-Kanade dataset) as distributed: ``cohn-kanade-images/S005/001/*.png`` and
``Emotion/S005/001/*_emotion.txt``.

A clip is one image sequence, a folder of frames running from a neutral face (the first frame) to the peak
of an expression (the last): ``cohn-kanade-images/<subject>/<sequence>/``, clip id ``S005_001``, subject
``S005``. Its label is the code in the sequence's Emotion file (``Emotion/<subject>/<sequence>/``, one
``*_emotion.txt`` named after the peak frame), a float in text (``   3.0000000e+00``) read as
``int(float(text))``: 1 anger, 2 contempt, 3 disgust, 4 fear, 5 happiness, 6 sadness, 7 surprise
(labels.CKPLUS_CODES). Contempt is kept as a class: a study of the six classes drops it, not the adapter.
Subject and sequence come from the folder names, never from the file names.

Irregularities (DATASETS.md §3), tolerated and reported:

- the labels zip extracts to ``Emotion/`` or to ``Emotion_labels/Emotion/``; either is read (when both are
  there, ``Emotion/``, and the other is skipped as a second copy);
- only 327 of the 593 sequences are labelled: some Emotion folders are empty, some sequences have none;
  those sequences are skipped as unlabelled, and so is a sequence whose label file does not parse as a
  number, holds a code outside 1-7 or has a second label file beside it (each such file is skipped too);
- ``.DS_Store`` files lie in subject and sequence folders: skipped as system files, never taken for frames;
- subject ids are not contiguous (S005 ... S160, S501 ... S506, S895, S999): kept as spelled, three digits,
  so they sort as text in the order of their numbers (protocols.subject_key) and the protocol deals sorted
  subjects into folds, CK+'s usual "fold k takes subjects k, k+10, ...";
- most sequences are grey, some colour: the media layer reads both as RGB (video.read).

Every file under the root is a frame of a listed sequence, the label file of one, or skipped with a reason,
alone or with its folder: ``FACS/`` (action-unit codes) and ``Landmarks/`` (AAM points of every frame, tens of
thousands of files), which nothing here reads, are one skipped row each, and so is a sequence that is not
listed (unlabelled, or with no image), with its frames. The distribution's documents (README, paper,
agreement forms), stray files and any file in a sequence folder that is no frame are skipped one by one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .. import labels
from .layout import is_system_file, probe_sequence, unused

CLASSES = labels.CKPLUS_CLASSES
# Frame images carry no rate and CK+ documents none (neither its README nor DATASETS.md §3). The sequences
# were recorded on video in the US and digitised frame by frame (Kanade, Cohn & Tian 2000, "Comprehensive
# database for facial expression analysis"), hence NTSC's 30: an inference, not a documented value. No
# study here reads CK+ by time (STC-NLSTM resamples every sequence to 18 frames), so the value only fills
# the manifest's fps column.
FPS = 30.0

IMAGES = "cohn-kanade-images"
EMOTION = "Emotion"
EMOTION_ZIP = "Emotion_labels"  # the other extraction of Emotion_labels.zip: Emotion_labels/Emotion/
LABEL_SUFFIX = "_emotion.txt"
NOT_READ = {"FACS": "FACS action-unit codes: not read (the labels come from Emotion/)",
            "Landmarks": "AAM landmarks of every frame: not read (this pipeline detects its own faces)"}

_SUBJECT = re.compile(r"S[0-9]{3}")
_SEQUENCE = re.compile(r"[0-9]{3}")

Key = tuple[str, str]  # (subject, sequence): S005, 001


def _folders(parent: Path, pattern: re.Pattern[str], expected: str,
             skipped: list[dict[str, Any]]) -> dict[str, Path]:
    """The folders in ``parent`` whose names match ``pattern``, by name; every other entry is skipped."""
    found: dict[str, Path] = {}
    for entry in sorted(parent.iterdir()):
        if entry.is_dir() and pattern.fullmatch(entry.name):
            found[entry.name] = entry
        else:
            skipped.append(unused(entry, f"not a {expected} folder"))
    return found


def _tree(parent: Path, skipped: list[dict[str, Any]]) -> dict[Key, Path]:
    """The ``<subject>/<sequence>`` folders under ``parent`` (the images' or the labels' tree)."""
    return {(subject, sequence): folder
            for subject, subject_folder in _folders(parent, _SUBJECT, "subject (S005)", skipped).items()
            for sequence, folder in _folders(subject_folder, _SEQUENCE, "sequence (001)", skipped).items()}


def _layout(root: Path, skipped: list[dict[str, Any]]) -> tuple[Path | None, Path | None]:
    """The images folder and the Emotion folder under ``root`` (None where absent); the rest is skipped."""
    images = emotion = zipped = None
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and entry.name == IMAGES:
            images = entry
        elif entry.is_dir() and entry.name == EMOTION:
            emotion = entry
        elif entry.is_dir() and entry.name == EMOTION_ZIP:
            zipped = entry
        elif entry.is_dir() and entry.name in NOT_READ:
            skipped.append({"path": str(entry), "reason": NOT_READ[entry.name]})
        else:
            skipped.append(unused(entry, f"not part of the CK+ layout ({IMAGES}/, {EMOTION}/)"))
    if zipped is not None:
        for entry in sorted(zipped.iterdir()):
            if entry.is_dir() and entry.name == EMOTION and emotion is None:
                emotion = entry
            elif entry.is_dir() and entry.name == EMOTION:
                skipped.append({"path": str(entry), "reason": f"a second copy of the labels: {EMOTION}/ is read"})
            else:
                skipped.append(unused(entry, f"not the {EMOTION} folder of the labels zip"))
    return images, emotion


def _parse(file: Path) -> tuple[int | None, str | None]:
    """The code in a label file, or why it has none that labels a sequence."""
    text = file.read_text(errors="replace").strip()
    try:
        code = int(float(text))
    except (ValueError, OverflowError):
        return None, f"does not parse as a number ({text[:40]!r})"
    if code not in labels.CKPLUS_CODES:
        return None, f"holds code {code}, not one of the expression codes 1-7 (0, neutral, labels no sequence)"
    return code, None


def _labels(emotion: Path, root: Path,
            skipped: list[dict[str, Any]]) -> tuple[dict[Key, tuple[Path, int]], dict[Key, str]]:
    """Every label folder's outcome: ``(labelled, unlabelled)``, the label file and code of each labelled
    sequence, and why each other sequence with a label folder has no label."""
    labelled: dict[Key, tuple[Path, int]] = {}
    unlabelled: dict[Key, str] = {}
    for key, folder in _tree(emotion, skipped).items():
        where = folder.relative_to(root)
        files = []
        for entry in sorted(folder.iterdir()):
            if entry.is_file() and entry.name.endswith(LABEL_SUFFIX) and not is_system_file(Path(entry.name)):
                files.append(entry)
            else:
                skipped.append(unused(entry, f"not a label file (*{LABEL_SUFFIX})"))
        if not files:
            unlabelled[key] = f"unlabelled: {where} holds no *{LABEL_SUFFIX} file"
            continue
        if len(files) > 1:
            names = ", ".join(file.name for file in files)
            skipped.extend({"path": str(file), "reason": f"one of {len(files)} label files in {where}: ambiguous"}
                           for file in files)
            unlabelled[key] = f"unlabelled: {where} holds {len(files)} label files ({names})"
            continue
        code, reason = _parse(files[0])
        if code is None:
            skipped.append({"path": str(files[0]), "reason": f"label file {reason}"})
            unlabelled[key] = f"unlabelled: its label file {files[0].relative_to(root)} {reason}"
            continue
        labelled[key] = (files[0], code)
    return labelled, unlabelled


def scan(root: Path, block: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """List the labelled sequences under a CK+ root (the folder holding ``cohn-kanade-images/`` and
    ``Emotion/`` or ``Emotion_labels/Emotion/``). CK+ has no options: ``block`` is not read.

    Returns ``(records, skipped)`` as every adapter does (fer_pipeline.datasets); a record has clip_id
    (``S005_001``), subject (``S005``), label (canonical), raw_label (the code, ``"3"``), path (the sequence
    folder, absolute), n_frames (its frame images), fps (:data:`FPS`), width, height (its first frame's).
    """
    root = Path(root).resolve()
    skipped: list[dict[str, Any]] = []
    images, emotion = _layout(root, skipped)
    sequences = _tree(images, skipped) if images is not None else {}
    labelled, unlabelled = _labels(emotion, root, skipped) if emotion is not None else ({}, {})

    records: list[dict[str, Any]] = []
    for (subject, sequence), folder in sorted(sequences.items()):
        if (subject, sequence) not in labelled:
            reason = unlabelled.get((subject, sequence)) or (
                f"unlabelled: no {emotion.relative_to(root) / subject / sequence} folder" if emotion is not None
                else f"unlabelled: no {EMOTION}/ (or {EMOTION_ZIP}/{EMOTION}/) folder under the root")
            skipped.append({"path": str(folder), "reason": reason})
            continue
        fields, reason = probe_sequence(folder, FPS, skipped)
        if fields is None:
            skipped.append({"path": str(folder), "reason": reason})
            continue
        _, code = labelled.pop((subject, sequence))
        records.append({"clip_id": f"{subject}_{sequence}", "subject": subject, "label": labels.CKPLUS_CODES[code],
                        "raw_label": str(code), **fields})
    # Labels left over label no listed sequence: it is absent from the images, or skipped above.
    skipped.extend({"path": str(file), "reason": f"labels no listed sequence: {IMAGES}/{subject}/{sequence} is "
                                                 f"absent or skipped"}
                   for (subject, sequence), (file, _) in labelled.items())
    skipped.sort(key=lambda entry: entry["path"])
    return records, skipped
