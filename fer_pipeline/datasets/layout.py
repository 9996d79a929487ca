"""What every adapter does the same way: walk a distributed tree, tell system files from data, probe a clip.

Adapters read layouts that people unpacked, copied and linked by hand, so the walk follows symbolic links to
folders (entering each real folder once, so a link cycle cannot loop) and files that archivers and operating
systems leave behind are recognised as such, never taken for data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import video

# Folders archivers leave behind; never data. (The system file names are video.SYSTEM_FILES: a frame folder
# skips them too.)
SYSTEM_FOLDERS = {"__macosx"}


def walk_files(root: Path) -> list[Path]:
    """Every file under ``root``, sorted, following symbolic links to folders but entering each real folder
    once."""
    seen: set[str] = set()
    found: list[Path] = []
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        found.extend(Path(folder, name) for name in names)
    return sorted(found)


def is_system_file(relative: Path) -> bool:
    """A file no dataset ships: system files, hidden files (macOS's "._" forks, the demo generator's
    ".<clip>.partial.avi" while it writes) and anything inside a system folder."""
    return (video.is_system_name(relative.name)
            or any(part.lower() in SYSTEM_FOLDERS for part in relative.parts[:-1]))


def probe_clip(path: Path, fps: float | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """A clip's manifest fields (path, n_frames, fps, width, height), or why it cannot be a clip.

    ``path`` is a video, a frame folder or a still (:func:`~fer_pipeline.video.media_kind`); ``fps`` is the
    rate the dataset documents for frame images, which carry none (a video's header rate wins). The reason
    is relative to the clip: without its path, and a frame of a folder by its name alone.
    """
    try:
        info = video.probe(path, fps=fps)
    except video.VideoError as exc:
        return None, str(exc).removeprefix(f"{path}: ").removeprefix(f"{path}{os.sep}")
    if info.n_frames <= 0:
        return None, "the header reports no frames"
    return {"path": str(path), "n_frames": info.n_frames, "fps": info.fps, "width": info.width,
            "height": info.height}, None


def unused(path: Path, reason: str) -> dict[str, Any]:
    """The skipped row of a file or folder an adapter does not read: a system file or folder as such,
    anything else with ``reason``."""
    if is_system_file(Path(path.name)) or path.name.lower() in SYSTEM_FOLDERS:
        reason = "system folder" if path.is_dir() else "system file"
    return {"path": str(path), "reason": reason}


def probe_sequence(folder: Path, fps: float, skipped: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str | None]:
    """A folder of frames' manifest fields (at the dataset's documented ``fps``), or why it is no clip; a
    file in it that is no frame is added to ``skipped``."""
    fields, reason = probe_clip(folder, fps=fps)
    if fields is None:
        return None, reason
    frames = {file.name for file in video.frame_files(folder)}
    skipped.extend(unused(entry, "not a frame of the sequence (not an image file)")
                   for entry in sorted(folder.iterdir()) if entry.name not in frames)
    return fields, None
