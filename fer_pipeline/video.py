"""Clips as frames: video files, folders of frame images and stills, all read through one interface.

A clip is one of three kinds (:func:`media_kind`), each read by :func:`read` into the same :class:`Decoded`
and probed by :func:`probe` into the same :class:`VideoInfo`, so detection and every preset never ask which:

* a **video** file (eNTERFACE'05, AFEW, MMI), decoded with OpenCV's FFmpeg backend;
* a **frame folder** (CK+, Oulu-CASIA, BP4D ship sequences as folders of images): the image files in it
  (:data:`IMAGE_SUFFIXES`), in the order of the frame number in their names (:func:`frame_files`);
* a **still** (AffectNet): one image file, a clip of one frame;
* a **pixel row** (FER2013): one row of a CSV table that holds each picture as a string of grey values
  (``fer2013.csv``'s ``pixels``: 48 x 48 numbers 0-255 separated by spaces), a clip of one frame. Its media
  is the table's path plus the row's number (``row=``, the n-th data row after the header, from 1), and its
  fingerprint is the SHA-256 of that row's pixel string (:func:`pixel_sha256`), so one changed picture
  changes one clip's lineage, not the whole table's.

Frame images carry no frame rate, so ``read`` and ``probe`` take the dataset's documented one (``fps``, which
the adapter records in the manifest); a clip without one reports 0.

Every failure names the file and what is wrong with it: a file that does not open, a clip with no frames at
all, a frame size that changes within the clip, a frame image that is empty or does not decode. A video
whose header claims more frames than can be decoded (a truncated or damaged file) is not an error here:
``read`` returns the frames before the damage together with the header's count, so the caller decides, with
its own tolerance, to skip the clip and say why. A frame folder's count is its number of image files and
every one of them must decode: an unreadable frame is an error, not a truncation.

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
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

# The image formats frame folders and stills come in (compared lower-case).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
# Files operating systems and archivers leave behind; never data.
SYSTEM_FILES = {".ds_store", "thumbs.db", "desktop.ini"}
# A frame's number: the last run of digits in its file name's stem.
_FRAME_NUMBER = re.compile(r"(\d+)\D*$")

# Tables of pixel strings (FER2013's fer2013.csv): a clip is one row.
PIXEL_TABLE_SUFFIXES = {".csv"}
PIXEL_COLUMN = "pixels"

MediaKind = Literal["video", "frames", "still", "pixels"]


class VideoError(RuntimeError):
    """A clip (video, frame folder or still) cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class VideoInfo:
    n_frames: int  # as the container's header claims (0 when it gives none), or a folder's number of images
    fps: float  # the container's rate, or the one given for frame images (0 when unknown)
    width: int
    height: int


@dataclass(frozen=True)
class Decoded:
    """The frames of a clip and what its container claims, so a short decode is seen, not hidden."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB: the frames kept (all decoded ones unless sampled)
    fps: float  # the rate of ``frames``: the clip's, or the sampled rate
    container_frames: int  # the frame count the container's header claims (0 when it gives none)
    decoded_frames: int  # how many frames were decoded, before sampling: truncation is judged on these
    frame_indices: np.ndarray  # (T,) the source frame index of each of ``frames``
    max_frames: int | None = None  # the limit the frames were read with: a limited read is not short

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


def is_system_name(name: str) -> bool:
    """A file name no dataset ships: system files and hidden files (macOS's "._" forks, the demo generator's
    ".<clip>.partial.avi" while it writes)."""
    name = name.lower()
    return name in SYSTEM_FILES or name.startswith(".")


def media_kind(path: str | Path) -> MediaKind:
    """Which kind of clip ``path`` is: a folder is a frame folder, an image file a still, a CSV table a table
    of pixel rows (read one row at a time), anything else a video (a path that does not exist is judged by
    its name, so reading it says "no such file")."""
    path = Path(path)
    if path.is_dir():
        return "frames"
    suffix = path.suffix.lower()
    if suffix in PIXEL_TABLE_SUFFIXES:
        return "pixels"
    return "still" if suffix in IMAGE_SUFFIXES else "video"


def is_still(path: str | Path) -> bool:
    """A clip of one picture: an image file or a row of a pixel table."""
    return media_kind(path) in ("still", "pixels")


def pixel_sha256(text: str) -> str:
    """The fingerprint of one pixel row: the SHA-256 of its pixel string, surrounding blanks stripped."""
    return hashlib.sha256(text.strip().encode()).hexdigest()


def pixel_image(text: str, shape: tuple[int, int] = (48, 48)) -> np.ndarray:
    """A pixel string (grey values 0-255 separated by blanks, row by row) as an RGB uint8 image (H, W, 3).

    Raises ValueError saying what is wrong: a value that is no integer or lies outside 0-255, or a count
    other than H x W (FER2013: 2304)."""
    values = text.split()
    expected = shape[0] * shape[1]
    if len(values) != expected:
        raise ValueError(f"the pixel string has {len(values)} values, not {expected} ({shape[0]}x{shape[1]})")
    try:
        grey = np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        bad = next(v for v in values if not v.lstrip("-").isdigit())
        raise ValueError(f"the pixel string holds {bad[:20]!r}, not an integer 0-255") from None
    if grey.min() < 0 or grey.max() > 255:
        raise ValueError(f"the pixel string holds {int(grey.min() if grey.min() < 0 else grey.max())}, outside 0-255")
    return np.repeat(grey.astype(np.uint8).reshape(shape)[..., None], 3, axis=-1)


def read_pixel_rows(path: str | Path, rows: Iterable[int], column: str = PIXEL_COLUMN) -> dict[int, str]:
    """The pixel strings of data rows ``rows`` (from 1, after the header) of a pixel table, in one pass over
    the file (a shard's rows at once: FER2013's table is ~290 MB). A row the table does not have is absent
    from the result; a table without a ``column`` raises VideoError."""
    import csv

    path = Path(path)
    wanted = set(int(r) for r in rows)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    found: dict[int, str] = {}
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        if column not in header:
            raise VideoError(f"{path}: no '{column}' column (header: {','.join(header)[:80]})")
        index = header.index(column)
        for number, fields in enumerate(reader, start=1):
            if number in wanted:
                found[number] = fields[index] if index < len(fields) else ""
                if len(found) == len(wanted):
                    break
    return found


def read_pixel_row(path: str | Path, row: int, shape: tuple[int, int] = (48, 48)) -> np.ndarray:
    """One pixel row of a table as an RGB image; VideoError naming the file and row when it is absent or
    does not parse."""
    text = read_pixel_rows(path, [row]).get(int(row))
    if text is None:
        raise VideoError(f"{path}: no row {row}")
    try:
        return pixel_image(text, shape)
    except ValueError as exc:
        raise VideoError(f"{path}: row {row}: {exc}") from None


def read_still(path: str | Path) -> np.ndarray:
    """One image file as RGB uint8 (H, W, 3); VideoError naming the file when it is empty or does not decode."""
    return cv2.cvtColor(_read_image(Path(path)), cv2.COLOR_BGR2RGB)


def frame_files(folder: str | Path) -> list[Path]:
    """The frames of a frame folder in frame order: its image files, ordered by frame number.

    A frame's number is the last run of digits in its name (``S005_001_00000011.png`` is 11, BP4D's
    ``0999.jpg`` and ``1000.jpg`` are 999 and 1000, Oulu-CASIA's ``000.jpeg`` is 0), compared as an integer:
    padding differs between datasets and even within one sequence, so the lexical order is not the frame
    order. System and hidden files (``.DS_Store``, macOS's ``._0001.png``) and files of other types are not
    frames. A folder with no image, an image without a number in its name, or two images with the same
    number (``1.png`` and ``001.png``) raise VideoError: the sequence and its order would be guesses.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoError(f"{folder}: no such folder")
    numbered: dict[int, Path] = {}
    for file in sorted(folder.iterdir()):
        if file.suffix.lower() not in IMAGE_SUFFIXES or is_system_name(file.name):
            continue
        match = _FRAME_NUMBER.search(file.stem)
        if match is None:
            raise VideoError(f"{file}: no frame number in the name (frames are ordered by the last run of digits "
                             f"in their names)")
        number = int(match.group(1))
        if number in numbered:
            raise VideoError(f"{folder}: {numbered[number].name} and {file.name} both have frame number {number}")
        numbered[number] = file
    if not numbered:
        raise VideoError(f"{folder}: no image file ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder")
    return [numbered[number] for number in sorted(numbered)]


def resample_indices(n_frames: int, fps: float, target_fps: float) -> np.ndarray:
    """The indices of the frames to keep to sample ``n_frames`` frames at ``fps`` down to ``target_fps``.

    Some papers sample their datasets at a fixed rate (the STC-NLSTM paper reads MMI at 10 fps), whatever
    rate each clip was recorded at. Samples are taken uniformly in time from the clip's start, at times
    k / target_fps, and each takes the frame on screen then, frame floor(k * fps / target_fps) (frame i is
    shown from i / fps to (i + 1) / fps): the first frame is always kept, 30 -> 10 fps keeps frames 0, 3, 6,
    ..., 25 -> 10 fps keeps 0, 2, 5, 7, 10, ... (2.5 frames apart on average). A target at or above ``fps``
    keeps every frame: frames are never repeated to raise the rate.
    """
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    if fps <= 0 or target_fps <= 0:
        raise ValueError(f"frame rates must be > 0, got fps={fps} and target_fps={target_fps}")
    if target_fps >= fps:
        return np.arange(n_frames)
    step = fps / target_fps  # > 1, so the indices rise strictly
    # The small offset keeps k * step from landing just below an integer (29.97 / 9.99 * k) by rounding.
    indices = np.floor(np.arange(math.ceil(n_frames / step) + 1) * step + 1e-9).astype(np.int64)
    return indices[indices < n_frames]


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


def _image_files(path: Path) -> list[Path]:
    """The image files of a frame folder in frame order, or the still itself."""
    return frame_files(path) if path.is_dir() else [path]


def _read_image(file: Path) -> np.ndarray:
    """One frame image as BGR uint8 (H, W, 3), whatever its colour type and depth.

    IMREAD_COLOR makes OpenCV replicate a grey image to three channels, expand a palette, drop an alpha
    channel and keep the high byte of a 16-bit image, so the grey and colour frames of one sequence (CK+ has
    both) stack into one RGB clip.
    """
    if not file.is_file():
        raise VideoError(f"{file}: no such file")
    if file.stat().st_size == 0:
        raise VideoError(f"{file}: empty file (0 bytes)")
    image = cv2.imread(str(file), cv2.IMREAD_COLOR)
    if image is None:
        raise VideoError(f"{file}: cannot be decoded as an image (corrupt, cut short, or not the format its "
                         f"suffix says)")
    return image


def _stack_rgb(path: Path, frames_bgr: Iterable[tuple[str, np.ndarray]]) -> np.ndarray:
    """Stack named BGR frames ("frame 3" of a video, "0004.png" of a folder) into one RGB array (T, H, W, 3).

    A frame whose size differs from the first frame's raises VideoError naming the clip, both frames and both
    sizes: the clip cannot be one array, and np.stack's bare ValueError would not say which file it was.
    A clip that yields no frame raises VideoError too.
    """
    frames: list[np.ndarray] = []
    first_name = ""
    for name, frame in frames_bgr:
        if not frames:
            first_name = name
        elif frame.shape != frames[0].shape:
            first = frames[0].shape
            raise VideoError(f"{path}: {name} is {frame.shape[1]}x{frame.shape[0]} but {first_name} is "
                             f"{first[1]}x{first[0]} (the frame size changes within the clip)")
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    if not frames:
        raise VideoError(f"{path}: no frame could be decoded (empty or corrupt video)")
    return np.stack(frames)


def probe(path: str | Path, *, fps: float | None = None, row: int | None = None) -> VideoInfo:
    """A clip's frame count, frame rate and size, without decoding all its frames.

    A video's come from its header. A frame folder's count is its number of image files and its size the
    first frame's (the others are checked when read); a still is one frame. ``fps`` is the rate where the
    files carry none (frame images; a video whose header gives none); without it such a clip reports 0.
    """
    path = Path(path)
    if media_kind(path) == "pixels":
        height, width = read_pixel_row(path, _row(path, row)).shape[:2]
        return VideoInfo(n_frames=1, fps=fps or 0.0, width=width, height=height)
    if media_kind(path) != "video":
        files = _image_files(path)
        height, width = _read_image(files[0]).shape[:2]
        return VideoInfo(n_frames=len(files), fps=fps or 0.0, width=width, height=height)
    capture = _open(path)
    try:
        info = VideoInfo(
            n_frames=_container_frames(capture),
            fps=float(capture.get(cv2.CAP_PROP_FPS)) or fps or 0.0,
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        capture.release()
    if info.width <= 0 or info.height <= 0:
        raise VideoError(f"{path}: the header gives no frame size")
    return info


def _row(path: Path, row: int | None) -> int:
    if row is None:
        raise VideoError(f"{path}: a table of pixel rows is read one row at a time: give the row")
    return int(row)


def read(path: str | Path, max_frames: int | None = None, *, fps: float | None = None,
         sample_fps: float | None = None, row: int | None = None) -> Decoded:
    """Decode every frame of a clip (or the first ``max_frames``) as RGB uint8, with its frame rate and the
    count its container claims.

    ``fps`` is the rate where the files carry none (frame images; a video whose header gives none, which
    otherwise is taken as 25); a frame folder or still read without it reports 0. ``sample_fps`` samples the
    decoded frames down to that rate (:func:`resample_indices`; ``Decoded.frame_indices`` says which were
    kept, and ``Decoded.fps`` becomes the sampled rate); a clip whose rate is unknown cannot be sampled.

    A clip that does not open, yields no frame or changes frame size raises VideoError, as does a frame
    image that is empty or does not decode. A truncated or damaged video yields the frames before the
    damage: ``Decoded.is_truncated`` tells (judged on the frames decoded, before sampling), so callers can
    skip such a clip with ``Decoded.truncation_reason`` instead of processing part of it unawares.
    """
    path = Path(path)
    kind = media_kind(path)
    if kind == "pixels":
        frames = read_pixel_row(path, _row(path, row))[None]
        rate, container_frames = fps or 0.0, 1
    elif kind == "video":
        capture = _open(path)
        try:
            rate = float(capture.get(cv2.CAP_PROP_FPS)) or fps or 25.0
            container_frames = _container_frames(capture)
            frames = _stack_rgb(path, ((f"frame {index}", frame)
                                       for index, frame in enumerate(_read_frames(capture, max_frames))))
        finally:
            capture.release()
    else:
        files = _image_files(path)
        rate, container_frames = fps or 0.0, len(files)
        frames = _stack_rgb(path, ((file.name, _read_image(file)) for file in files[:max_frames]))
    decoded_frames = len(frames)
    indices = np.arange(decoded_frames)
    if sample_fps is not None:
        if rate <= 0:
            raise VideoError(f"{path}: cannot be sampled at {sample_fps} fps: its frame rate is unknown (frame "
                             f"images carry none; pass the dataset's as fps)")
        indices = resample_indices(decoded_frames, rate, sample_fps)
        frames, rate = frames[indices], min(rate, float(sample_fps))
    return Decoded(frames=frames, fps=rate, container_frames=container_frames, decoded_frames=decoded_frames,
                   frame_indices=indices, max_frames=max_frames)


def decode(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode every frame as RGB uint8, shape (T, H, W, 3), and return it with the frame rate.

    ``read`` without the header's count: a truncated file yields the frames before the damage, unreported.
    """
    decoded = read(path, max_frames)
    return decoded.frames, decoded.fps


def _file_sha256(path: Path, chunk_bytes: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def sha256(path: str | Path, chunk_bytes: int = 1 << 20, row: int | None = None) -> str:
    """The clip's SHA-256, for provenance: a file's bytes; a frame folder's frames, as the SHA-256 over each
    frame's name and the SHA-256 of its bytes, in frame order. So renaming, reordering, adding or changing a
    frame changes a folder's hash, and a file that is no frame (a stray ``.DS_Store``) does not. A pixel
    row (``row`` given): the SHA-256 of its pixel string (:func:`pixel_sha256`)."""
    path = Path(path)
    if row is not None and media_kind(path) == "pixels":
        text = read_pixel_rows(path, [row]).get(int(row))
        if text is None:
            raise VideoError(f"{path}: no row {row}")
        return pixel_sha256(text)
    if not path.is_dir():
        return _file_sha256(path, chunk_bytes)
    digest = hashlib.sha256()
    for file in frame_files(path):
        digest.update(os.fsencode(file.name) + b"\0" + _file_sha256(file, chunk_bytes).encode() + b"\n")
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
