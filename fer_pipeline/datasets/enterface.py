"""eNTERFACE'05 as distributed: ``subject N/<emotion>/sentence M/*.avi``.

Every fact is read from the folder names, never from the file names, because the file names are unreliable:
subject 11's files are all named ``s12_*``, and typos such as ``s16_su_3avi.avi`` and ``s_3_*`` exist.
The archive's other irregularities (the project notes, DATASETS.md §1) are tolerated and reported:

- subject 6 is six whole unsegmented sessions (56-107 s) lying directly in the emotion folders, with no
  ``sentence N`` level; they are skipped, as public loaders do, which leaves the paper's 43 subjects;
- folder names differ in case (``Subject 3``, ``Happiness``) and, in copies whose spaces were replaced,
  use ``-`` or ``_`` (``subject-3``); all are accepted;
- stray files (notes, system files such as ``.DS_Store``, a folder that is not one of the six emotions,
  videos that cannot be probed) are skipped with a reason.

A truncated video whose header is intact probes fine and is listed: probing reads only the header, and
decoding later yields the frames before the damage.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from .. import labels, video
from .layout import is_system_file, probe_clip, walk_files

CLASSES = labels.ENTERFACE_CLASSES
VIDEO_SUFFIXES = {".avi"}

UNSEGMENTED = "unsegmented session: the video lies directly in the emotion folder (no sentence level)"

_SUBJECT = re.compile(r"subject[\s_-]*([0-9]+)", re.IGNORECASE)
_SENTENCE = re.compile(r"sentence[\s_-]*([0-9]+)", re.IGNORECASE)


def _classify(relative: Path) -> tuple[tuple[int, str, int, str] | None, str | None]:
    """Read ``(subject, label, sentence, raw_label)`` from a file's folders, or say why the file is no clip."""
    parts = relative.parts
    if is_system_file(relative):
        return None, "system file"
    if relative.suffix.lower() not in VIDEO_SUFFIXES:
        return None, f"not a video ({relative.suffix or 'no extension'}): eNTERFACE'05 clips are .avi"
    subject_match = _SUBJECT.fullmatch(parts[0].strip()) if len(parts) > 1 else None
    if subject_match is None:
        return None, "not inside a 'subject N' folder"
    if len(parts) == 2:
        return None, "video directly in the subject folder (no emotion folder)"
    raw_label = parts[1]
    label = labels.canonical(raw_label)
    if label not in CLASSES:
        return None, f"emotion folder '{raw_label}' is not one of the six eNTERFACE'05 classes ({', '.join(CLASSES)})"
    if len(parts) == 3:
        return None, UNSEGMENTED
    sentence_match = _SENTENCE.fullmatch(parts[2].strip())
    if sentence_match is None:
        return None, f"folder '{parts[2]}' is not a 'sentence N' folder"
    if len(parts) > 4:
        return None, "nested below the sentence folder (expected subject N/<emotion>/sentence M/<clip>.avi)"
    return (int(subject_match.group(1)), label, int(sentence_match.group(1)), raw_label), None


def _unsegmented_reason(path: Path) -> str:
    """The skip reason of a video lying in an emotion folder, with its length when the header gives one, so
    the skipped list shows it is a whole session (subject 6's run 56-107 s; clips 1-5 s)."""
    try:
        info = video.probe(path)
    except video.VideoError:
        return UNSEGMENTED
    if info.fps <= 0:
        return UNSEGMENTED
    length = f"unsegmented session of {info.n_frames / info.fps:.1f} s"
    return UNSEGMENTED.replace("unsegmented session", length, 1)


def scan(root: Path, block: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """List the clips under an eNTERFACE'05 root (the folder holding ``subject 1`` ... ``subject 44``).

    Returns ``(records, skipped)``. A record has clip_id, subject, label (canonical), raw_label (the emotion
    folder's name), path (absolute), n_frames, fps, width, height. A skipped entry has path and reason; every
    file under ``root`` ends up in exactly one of the two lists.

    ``clip_id`` is ``s{subject}_{code}_{sentence}`` (``s11_ha_3``), built from the folders and safe as a folder
    name. Files that share one subject, emotion and sentence (two files in a sentence folder, or ``Subject 3``
    beside ``subject 3``) all get a ``_v1``, ``_v2``, ... suffix in the order of their relative paths, so
    none is lost and the ids do not depend on which of them probe.
    """
    root = Path(root).resolve()
    skipped: list[dict[str, Any]] = []
    by_clip: dict[tuple[int, str, int], list[tuple[Path, str]]] = defaultdict(list)
    for path in walk_files(root):
        relative = path.relative_to(root)
        parsed, reason = _classify(relative)
        if parsed is None:
            if reason == UNSEGMENTED:
                reason = _unsegmented_reason(path)
            skipped.append({"path": str(path), "reason": reason})
            continue
        subject, label, sentence, raw_label = parsed
        by_clip[(subject, label, sentence)].append((path, raw_label))

    records: list[dict[str, Any]] = []
    for (subject, label, sentence), files in sorted(by_clip.items()):
        base = f"s{subject}_{labels.ENTERFACE_CODES[label]}_{sentence}"
        for number, (path, raw_label) in enumerate(files, start=1):
            clip_id = base if len(files) == 1 else f"{base}_v{number}"
            fields, reason = probe_clip(path)
            if fields is None:
                skipped.append({"path": str(path), "reason": reason})
                continue
            records.append({"clip_id": clip_id, "subject": str(subject), "label": label, "raw_label": raw_label,
                            **fields})
    skipped.sort(key=lambda entry: entry["path"])
    return records, skipped
