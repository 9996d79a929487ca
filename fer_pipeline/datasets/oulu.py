"""Oulu-CASIA NIR&VIS as distributed: ``OriginalImg/<modality>/<illumination>/P001/<Emotion>/000.jpeg``.

A clip is one image sequence, a folder of frames running from a neutral face to the peak of an expression:
``.../P001/Anger/``, clip id ``P001_anger``, subject ``P001``, label the folder's emotion (Anger, Disgust,
Fear, Happiness, Sadness, Surprise: the six classes, no neutral). The frames are the image files the folder
holds, in the order of their numbers (video.frame_files): the archive's frame names changed between its
editions (ExprGAN issue #5: old lists name files that no longer exist), so none is assumed.

What is read: one modality and one illumination, the options ``datasets.<name>.modality`` (VL, visible
light, or NI, near-infrared; default VL) and ``datasets.<name>.illumination`` (Strong, Weak or Dark; default
Strong). VL/Strong is what the STC-NLSTM paper uses: 480 sequences (80 subjects x 6) "under normal
illumination". The other modality and illuminations hold the same sessions filmed otherwise; each of their
folders is one skipped row saying so, not thousands of rows of frames. To study one of them, configure a
second dataset with the same root and other options.

Root: the folder holding ``OriginalImg/``, or the archive's folder above it (``B_OriginalImg/OriginalImg/``,
found one level down). Every file under the root is a frame of a listed sequence or skipped with a reason,
alone or with its folder: system files (``.DS_Store``) beside or among the frames as such; files and folders
that are no part of the layout (a folder as one row, with everything in it), a sequence folder with no
image, and any file in a sequence folder that is no frame, each with its reason.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .. import labels
from .layout import probe_sequence, unused

CLASSES = labels.OULU_CLASSES
# Frame images carry no rate and DATASETS.md §4 gives none: "The imaging hardware works at the rate of 25
# frames per second" (Zhao, Huang, Taini, Li, Pietikäinen 2011, "Facial expression recognition from
# near-infrared videos", the dataset's paper).
FPS = 25.0

ORIGINALS = "OriginalImg"
MODALITIES = ("VL", "NI")
ILLUMINATIONS = ("Strong", "Weak", "Dark")
DEFAULT_MODALITY, DEFAULT_ILLUMINATION = "VL", "Strong"  # the schema's defaults
# The archive's emotion folders, spelled as shipped: Anger, Disgust, Fear, Happiness, Sadness, Surprise.
EMOTIONS = {label.capitalize(): label for label in CLASSES}

_SUBJECT = re.compile(r"P[0-9]{3}")


def _originals(root: Path, skipped: list[dict[str, Any]]) -> Path | None:
    """``root/OriginalImg`` or ``root/<archive folder>/OriginalImg`` (None when neither is there); every
    other entry of the folders on the way is skipped."""
    holders = [root] + [entry for entry in sorted(root.iterdir()) if entry.is_dir()]
    holder = next((folder for folder in holders if (folder / ORIGINALS).is_dir()), None)
    if holder is None:
        skipped.extend(unused(entry, f"not part of the Oulu-CASIA layout (no {ORIGINALS} folder here or one "
                                      f"level down)") for entry in sorted(root.iterdir()))
        return None
    originals = holder / ORIGINALS
    for folder in dict.fromkeys([root, holder]):
        skipped.extend(unused(entry, f"not part of the Oulu-CASIA layout ({originals.relative_to(root)} is read)")
                       for entry in sorted(folder.iterdir()) if entry not in (holder, originals))
    return originals


def _choose(parent: Path, chosen: str, options: tuple[str, ...], kind: str,
            skipped: list[dict[str, Any]]) -> Path | None:
    """The folder ``chosen`` in ``parent`` (None when absent); every other option's folder is one skipped row,
    as not read, and every other entry is skipped as stray."""
    found = None
    for entry in sorted(parent.iterdir()):
        if entry.is_dir() and entry.name == chosen:
            found = entry
        elif entry.is_dir() and entry.name in options:
            skipped.append({"path": str(entry), "reason": f"{kind} {entry.name}: not read (the dataset's {kind} "
                                                          f"option, datasets.<name>.{kind}, is {chosen})"})
        else:
            skipped.append(unused(entry, f"not a {kind} folder ({', '.join(options)})"))
    return found


def scan(root: Path, block: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """List the sequences of one modality and illumination under an Oulu-CASIA root (the folder holding
    ``OriginalImg/``, or the archive's folder above it); ``block`` gives ``modality`` and ``illumination``.

    Returns ``(records, skipped)`` as every adapter does (fer_pipeline.datasets); a record has clip_id
    (``P001_anger``), subject (``P001``), label (canonical), raw_label (the emotion folder's name), path (the
    sequence folder, absolute), n_frames (its frame images), fps (:data:`FPS`), width, height (its first
    frame's).
    """
    block = block or {}
    root = Path(root).resolve()
    skipped: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    originals = _originals(root, skipped)
    modality = None if originals is None else _choose(originals, block.get("modality", DEFAULT_MODALITY),
                                                      MODALITIES, "modality", skipped)
    illumination = None if modality is None else _choose(modality, block.get("illumination", DEFAULT_ILLUMINATION),
                                                         ILLUMINATIONS, "illumination", skipped)
    for subject_folder in [] if illumination is None else sorted(illumination.iterdir()):
        if not (subject_folder.is_dir() and _SUBJECT.fullmatch(subject_folder.name)):
            skipped.append(unused(subject_folder, "not a subject folder (P001)"))
            continue
        subject = subject_folder.name
        for folder in sorted(subject_folder.iterdir()):
            if not (folder.is_dir() and folder.name in EMOTIONS):
                skipped.append(unused(folder, f"not one of the six emotion folders ({', '.join(EMOTIONS)})"))
                continue
            fields, reason = probe_sequence(folder, FPS, skipped)
            if fields is None:
                skipped.append({"path": str(folder), "reason": reason})
                continue
            label = EMOTIONS[folder.name]
            records.append({"clip_id": f"{subject}_{label}", "subject": subject, "label": label,
                            "raw_label": folder.name, **fields})
    skipped.sort(key=lambda entry: entry["path"])
    return records, skipped
