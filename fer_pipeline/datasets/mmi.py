"""The MMI Facial Expression Database as downloaded: ``Sessions/<n>/S<subject>-<recording>.avi``.

Each numeric session folder holds one recording: the video, its metadata ``<recording>.xml`` and the
session's ``session.xml`` (DATASETS.md §5). The label is the ``Metatag`` named ``Emotion`` in the
recording's XML, 1 anger, 2 disgust, 3 fear, 4 happiness, 5 sadness, 6 surprise (labels.MMI_CODES); it is
looked up by name, not by position (public loaders take the second Metatag). The subject is the ``id`` of
``session.xml``'s ``<subject>`` element and the view its first ``<track>``'s ``view``, as the loaders read
them; nothing is taken from the file names.

The STC-NLSTM paper uses 205 sequences of the six emotions from frontal recordings, sampled at 10 fps
(``datasets.<name>.sample_fps``; the manifest keeps each video's own rate) and scored by 10-fold cross
validation (here: protocol ``kfold``, 10 subject folds). Which 205 is not published; this adapter lists
every frontal recording whose Emotion is 1-6 and says why it skips each other file:

- a recording whose Emotion is missing or another value (the database tags more than the six);
- a dual view (``view="2"``: two faces side by side in one frame) or a rotated one (``view="1"``), by
  session.xml; some frontal (``view="0"``) videos are said to need rotation too (one loader rotates those
  whose frame height is not 480), which nothing in the metadata says, so they are listed as they are;
- sessions of stills: ``.jpg``/``.png`` images instead of a video; the images are not clips;
- a metadata file that does not parse, and the recording it would label, both with the parser's message;
- the frame-level AU coding (``<recording>-oao_aucs.xml``), not read; system files, stray files.

Every file under the root is a listed video, the metadata of one (its XML and its session.xml), or skipped
with a reason: the metadata of a recording that is not listed is skipped with it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path
from typing import Any

from .. import labels, video
from .layout import is_system_file, probe_clip, walk_files

CLASSES = labels.MMI_CLASSES
SESSIONS = "Sessions"
SESSION_XML = "session.xml"
AU_CODING_SUFFIX = "-oao_aucs.xml"
VIDEO_SUFFIX = ".avi"
FRONTAL = "0"
VIEWS = {"1": "rotated view (session.xml: track view 1): the face is turned by 90 degrees",
         "2": "dual view (session.xml: track view 2): two faces side by side in one frame"}


def _xml(path: Path) -> tuple[ElementTree.Element | None, str | None]:
    """A metadata file's root element, or the parser's reason it has none."""
    try:
        return ElementTree.parse(path).getroot(), None
    except ElementTree.ParseError as exc:
        return None, f"does not parse as XML ({exc})"


def _session(path: Path | None) -> tuple[tuple[str, str] | None, str | None]:
    """``(subject, view)`` from a session.xml, or why the session's recordings have neither."""
    if path is None:
        return None, f"no {SESSION_XML} in the session folder: its subject and view are unknown"
    element, reason = _xml(path)
    if element is None:
        return None, f"its {SESSION_XML} {reason}"
    subject = element.find(".//subject")
    track = element.find(".//track")
    subject_id = (subject.get("id") or "").strip() if subject is not None else ""
    view = (track.get("view") or "").strip() if track is not None else ""
    if not subject_id:
        return None, f"{SESSION_XML} names no subject (<subject id=...>)"
    if not view:
        return None, f"{SESSION_XML} gives no view (<track view=...>)"
    return (subject_id, view), None


def _emotion(path: Path) -> tuple[str | None, str | None]:
    """The Emotion code ("1" ... "6") in a recording's XML, or why it labels no clip."""
    if not path.is_file():
        return None, f"no metadata file {path.name} beside it (its Emotion label)"
    element, reason = _xml(path)
    if element is None:
        return None, f"its metadata {path.name} {reason}"
    values = [tag.get("Value", "").strip() for tag in element.iter("Metatag") if tag.get("Name") == "Emotion"]
    if not values:
        return None, f"{path.name} has no Emotion Metatag"
    if values[0] not in labels.MMI_CODES:
        return None, f"Emotion {values[0]!r} in {path.name} is not one of the six basic emotions (1-6)"
    return values[0], None


def _classify(relative: Path) -> str | None:
    """Why a file cannot be part of a session (None when it lies in a ``Sessions/<n>/`` folder)."""
    parts = relative.parts
    if is_system_file(relative):
        return "system file"
    if len(parts) < 3 or parts[0] != SESSIONS:
        return f"not inside a session folder ({SESSIONS}/<n>/)"
    if len(parts) > 3:
        return "nested below the session folder (expected Sessions/<n>/<recording>.avi)"
    return None


def _file_reason(file: Path) -> str:
    """Why a session's file that is neither a video nor the metadata of one is no clip."""
    if file.name.lower().endswith(AU_CODING_SUFFIX):
        return "frame-level AU coding (OAO FACS): not read (the label is the recording's Emotion Metatag)"
    if file.suffix.lower() in video.IMAGE_SUFFIXES:
        return "a still image, not a video: sessions of stills are not read (MMI's clips are .avi)"
    if file.suffix.lower() == ".xml":
        return f"metadata of a recording whose video ({file.stem}{VIDEO_SUFFIX}) is not in the session"
    return f"not a video ({file.suffix or 'no extension'}): MMI clips are .avi"


def _recording(file: Path, session: tuple[str, str] | None,
               session_reason: str | None) -> tuple[tuple[str, str, dict[str, Any]] | None, str | None]:
    """``(subject, Emotion code, manifest fields)`` of a session's video, or why it is no clip."""
    if session is None:
        return None, session_reason
    code, reason = _emotion(file.with_suffix(".xml"))
    if code is None:
        return None, reason
    subject, view = session
    if view != FRONTAL:
        return None, VIEWS.get(view, f"unknown view {view!r} in {SESSION_XML} (0 frontal, 1 rotated, 2 dual)")
    fields, reason = probe_clip(file)
    if fields is None:
        return None, reason
    return (subject, code, fields), None


def _unlisted_metadata(file: Path, what: str) -> dict[str, Any]:
    """The skipped row of a metadata file that labels no listed clip: its parse error, or ``what`` it was."""
    _, reason = _xml(file)
    return {"path": str(file), "reason": reason or what}


def scan(root: Path, block: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """List the clips under an MMI root (the folder holding ``Sessions/``). The adapter reads no option;
    ``sample_fps`` in ``block`` is for the reader of the clips.

    Returns ``(records, skipped)`` as every adapter does (fer_pipeline.datasets); a record has clip_id (the
    recording, ``S001-002``), subject (session.xml's, ``"1"``), label (canonical), raw_label (the Emotion
    code, ``"4"``), path, n_frames, fps, width, height (from the video's header). Recordings that end up with
    one id (a session copied under another number) get ``_v1``, ``_v2``, ... in the order of their paths.
    """
    root = Path(root).resolve()
    skipped: list[dict[str, Any]] = []
    sessions: dict[Path, list[Path]] = defaultdict(list)
    for path in walk_files(root):
        reason = _classify(path.relative_to(root))
        if reason is None:
            sessions[path.parent].append(path)
        else:
            skipped.append({"path": str(path), "reason": reason})

    listed: dict[str, list[tuple[Path, str, str, dict[str, Any]]]] = defaultdict(list)
    for folder, files in sorted(sessions.items()):
        session_xml = folder / SESSION_XML if folder / SESSION_XML in files else None
        session, session_reason = _session(session_xml)
        videos = [file for file in files if file.suffix.lower() == VIDEO_SUFFIX]
        kept = set()
        for file in videos:
            clip, reason = _recording(file, session, session_reason)
            if clip is None:
                skipped.append({"path": str(file), "reason": reason})
                continue
            listed[file.stem].append((file, *clip))
            kept.add(file)
        metadata = {file.with_suffix(".xml"): file for file in videos}
        for file in files:
            if file in videos or metadata.get(file) in kept or (file == session_xml and kept):
                continue  # a listed video, or the metadata that labels one
            if file == session_xml:
                skipped.append(_unlisted_metadata(file, "metadata of a session with no listed recording"))
            elif file in metadata:
                skipped.append(_unlisted_metadata(file, f"metadata of {metadata[file].name}, which is skipped"))
            else:
                skipped.append({"path": str(file), "reason": _file_reason(file)})

    records: list[dict[str, Any]] = []
    for stem, entries in sorted(listed.items()):
        for number, (path, subject, code, fields) in enumerate(entries, start=1):
            records.append({"clip_id": stem if len(entries) == 1 else f"{stem}_v{number}", "subject": subject,
                            "label": labels.MMI_CODES[code], "raw_label": code, **fields})
    skipped.sort(key=lambda entry: entry["path"])
    return records, skipped
