"""Video decoding and probing (OpenCV's FFmpeg backend).

Every failure names the file and what is wrong with it: a file that does not open, a file with no frames
at all, a stream whose frame size changes. A file whose header claims more frames than can be decoded (a
truncated or damaged file) is not an error here: ``read`` returns the frames before the damage together
with the header's count, so the caller decides, with its own tolerance, to skip the clip and say why.

What OpenCV 5 (FFmpeg backend) reports, measured on files written by ``write``:

* An intact XVID or MJPG AVI, or mp4v MP4: CAP_PROP_FRAME_COUNT equals the decoded count exactly
  (1 to 260 frames, 15 to 30 fps).
* An AVI cut short loses its index (idx1, at the end) but keeps its header, and FFmpeg takes the count
  from the stream header (strh dwLength, next to avih dwTotalFrames at the start of the file): a 100-frame
  XVID AVI cut to a third still reports 100 and decodes 34. So OpenCV's count is the written count and no
  AVI header parsing of our own is needed.
* An MP4 written by OpenCV keeps its index (the moov atom) at the end: cut anywhere, it does not open.
* A stream without a count (concatenated JPEGs) reports INT64_MIN; it is taken as "no count" (0).
* A stream whose frame size changes mid-stream (two MPEG-TS or Matroska streams concatenated) comes out
  scaled to the size in the stream header. ``read`` still checks every frame's size against the first
  one's, so a backend or build that returns the frames as decoded fails with the file named.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


class VideoError(RuntimeError):
    """A video cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class VideoInfo:
    n_frames: int  # as the container's header claims (0 when it gives none); a truncated file decodes fewer
    fps: float
    width: int
    height: int


@dataclass(frozen=True)
class Decoded:
    """The frames of a video and what its container claims, so a short decode is seen, not hidden."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    fps: float
    container_frames: int  # the frame count the container's header claims (0 when it gives none)
    max_frames: int | None = None  # the limit the frames were read with: a limited read is not short

    @property
    def decoded_frames(self) -> int:
        return len(self.frames)

    @property
    def expected_frames(self) -> int:
        """How many frames the read should have yielded: the header's count, capped by ``max_frames``."""
        if self.max_frames is None:
            return self.container_frames
        return min(self.container_frames, self.max_frames)

    def is_truncated(self, tolerance: int) -> bool:
        """Whether more than ``tolerance`` (>= 0) of the expected frames could not be decoded (a truncated
        or damaged file). False when the container gives no count: 0 frames are expected then."""
        return self.decoded_frames < self.expected_frames - tolerance

    def truncation_reason(self, path: str | Path) -> str:
        """The skip reason for a truncated file: the file and both counts."""
        if self.expected_frames == self.container_frames:
            claimed = f"the {self.container_frames} frames its header claims"
        else:
            claimed = f"the first {self.expected_frames} of the {self.container_frames} frames its header claims"
        return f"{path}: {self.decoded_frames} of {claimed} could be decoded (truncated or damaged file)"


def _open(path: Path) -> cv2.VideoCapture:
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        raise VideoError(f"{path}: cannot be opened as a video (not a video, a corrupt header, or a file cut "
                         f"short before its index, e.g. an MP4 whose moov atom was at the end)")
    return capture


def _container_frames(capture: cv2.VideoCapture) -> int:
    """The header's frame count, 0 when it gives none. Without a count in the stream OpenCV reports
    duration x fps, and a nonsense negative number (INT64_MIN for a raw MJPEG stream) when the duration is
    unknown too."""
    count = float(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    return int(count) if math.isfinite(count) and count > 0 else 0


def _read_frames(capture: cv2.VideoCapture, max_frames: int | None) -> Iterator[np.ndarray]:
    """The decoded BGR frames, up to ``max_frames``; stops at the end of the stream or at the damage."""
    n = 0
    while max_frames is None or n < max_frames:
        ok, frame = capture.read()
        if not ok:
            return
        n += 1
        yield frame


def _stack_rgb(path: Path, frames_bgr: Iterable[np.ndarray]) -> np.ndarray:
    """Stack BGR frames into one RGB array (T, H, W, 3).

    A frame whose size differs from the first frame's raises VideoError naming the file, the frame and both
    sizes: the clip cannot be one array, and np.stack's bare ValueError would not say which file it was.
    A stream that yields no frame raises VideoError too.
    """
    frames: list[np.ndarray] = []
    for index, frame in enumerate(frames_bgr):
        if frames and frame.shape != frames[0].shape:
            first = frames[0].shape
            raise VideoError(f"{path}: frame {index} is {frame.shape[1]}x{frame.shape[0]} but frame 0 is "
                             f"{first[1]}x{first[0]} (the frame size changes mid-stream)")
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    if not frames:
        raise VideoError(f"{path}: no frame could be decoded (empty or corrupt video)")
    return np.stack(frames)


def probe(path: str | Path) -> VideoInfo:
    """Read the header: frame count, frame rate and size, without decoding the frames."""
    path = Path(path)
    capture = _open(path)
    try:
        info = VideoInfo(
            n_frames=_container_frames(capture),
            fps=float(capture.get(cv2.CAP_PROP_FPS)),
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        capture.release()
    if info.width <= 0 or info.height <= 0:
        raise VideoError(f"{path}: the header gives no frame size")
    return info


def read(path: str | Path, max_frames: int | None = None) -> Decoded:
    """Decode every frame (or the first ``max_frames``) as RGB uint8, with the frame rate and the count the
    container's header claims.

    A file that does not open, yields no frame or changes frame size raises VideoError. A truncated or
    damaged file yields the frames before the damage: ``Decoded.is_truncated`` tells, so callers can skip
    such a clip with ``Decoded.truncation_reason`` instead of processing part of it unawares.
    """
    path = Path(path)
    capture = _open(path)
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS)) or 25.0
        container_frames = _container_frames(capture)
        frames = _stack_rgb(path, _read_frames(capture, max_frames))
    finally:
        capture.release()
    return Decoded(frames=frames, fps=fps, container_frames=container_frames, max_frames=max_frames)


def decode(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode every frame as RGB uint8, shape (T, H, W, 3), and return it with the frame rate.

    ``read`` without the header's count: a truncated file yields the frames before the damage, unreported.
    """
    decoded = read(path, max_frames)
    return decoded.frames, decoded.fps


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
