"""Video decoding and probing (OpenCV's FFmpeg backend).

Every failure names the file and what is wrong with it: a file that does not open, a file whose header
claims frames that cannot be decoded, a file with no frames at all.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


class VideoError(RuntimeError):
    """A video cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class VideoInfo:
    n_frames: int  # as the container's header claims; decoding may yield fewer for a truncated file
    fps: float
    width: int
    height: int


def _open(path: Path) -> cv2.VideoCapture:
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        raise VideoError(f"{path}: cannot be opened as a video (not a video, or corrupt header)")
    return capture


def probe(path: str | Path) -> VideoInfo:
    """Read the header: frame count, frame rate and size, without decoding the frames."""
    path = Path(path)
    capture = _open(path)
    try:
        info = VideoInfo(
            n_frames=int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
            fps=float(capture.get(cv2.CAP_PROP_FPS)),
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        capture.release()
    if info.width <= 0 or info.height <= 0:
        raise VideoError(f"{path}: the header gives no frame size")
    return info


def decode(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode every frame as RGB uint8, shape (T, H, W, 3), and return it with the frame rate.

    A file that yields no frame raises VideoError; a truncated file yields the frames before the damage.
    """
    path = Path(path)
    capture = _open(path)
    frames: list[np.ndarray] = []
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS)) or 25.0
        while max_frames is None or len(frames) < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise VideoError(f"{path}: no frame could be decoded (empty or corrupt video)")
    return np.stack(frames), fps


def sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """The file's SHA-256, for provenance."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def write(path: str | Path, frames_rgb: np.ndarray, fps: float, fourcc: str = "XVID") -> None:
    """Write RGB frames (T, H, W, 3) to an AVI (XVID: MPEG-4 part 2, the DivX family eNTERFACE'05 uses)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames_rgb.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise VideoError(f"{path}: OpenCV cannot write {fourcc} video here")
    try:
        for frame in frames_rgb:
            writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
