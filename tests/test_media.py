"""Frame folders and stills are clips like videos: real image files written by OpenCV, then misnamed,
mixed, emptied, corrupted or resized."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_pipeline import preprocess, video
from fer_pipeline.datasets.layout import probe_clip

HEIGHT, WIDTH = 48, 64


def write_frame(path: Path, value: int, shape: tuple[int, ...] = (HEIGHT, WIDTH, 3),
                dtype: type = np.uint8) -> Path:
    """One uniform frame image of ``value`` (uniform, so even a JPEG decodes to it within a level or two)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full(shape, value, dtype))
    return path


def frame_values(decoded: video.Decoded) -> list[int]:
    """The value each decoded frame was written with, rounded to the step of 10 the tests write them at."""
    return [int(round(frame.mean() / 10)) * 10 for frame in decoded.frames]


def write_sequence(folder: Path, names: list[str]) -> Path:
    """Frames named ``names``; the k-th name's frame has value 10 k, so the read order shows in the pixels."""
    for k, name in enumerate(names):
        write_frame(folder / name, 10 * k)
    return folder


def test_media_kinds(tmp_path):
    folder = write_sequence(tmp_path / "seq", ["1.png"])
    assert video.media_kind(folder) == "frames"
    assert video.media_kind(folder / "1.png") == video.media_kind(tmp_path / "x.JPEG") == "still"
    assert video.media_kind(tmp_path / "clip.avi") == "video"


def test_frames_come_in_frame_number_order_not_lexical(tmp_path):
    # Unpadded 1..12 sorts lexically as 1, 10, 11, 12, 2, ...; the frame numbers must order them.
    unpadded = write_sequence(tmp_path / "unpadded", [f"S005_001_{n}.png" for n in range(1, 13)])
    assert [f.name for f in video.frame_files(unpadded)] == [f"S005_001_{n}.png" for n in range(1, 13)]
    assert frame_values(video.read(unpadded)) == [10 * k for k in range(12)]
    # BP4D pads to 3 or 4 digits: 998 999 1000 1001, lexically 1000 1001 998 999.
    bp4d = write_sequence(tmp_path / "bp4d", ["998.jpg", "999.jpg", "1000.jpg", "1001.jpg"])
    assert [f.name for f in video.frame_files(bp4d)] == ["998.jpg", "999.jpg", "1000.jpg", "1001.jpg"]
    assert frame_values(video.read(bp4d)) == [0, 10, 20, 30]


def test_every_image_suffix_in_any_case_is_a_frame_and_nothing_else_is(tmp_path):
    folder = write_sequence(tmp_path / "seq", ["000.jpeg", "001.PNG", "002.Bmp", "003.JPG"])
    (folder / "notes.txt").write_text("not a frame")
    assert [f.name for f in video.frame_files(folder)] == ["000.jpeg", "001.PNG", "002.Bmp", "003.JPG"]
    assert video.read(folder).decoded_frames == 4


def test_system_and_hidden_files_are_not_frames(tmp_path):
    folder = write_sequence(tmp_path / "seq", ["0001.png", "0002.png"])
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    (folder / "Thumbs.db").write_bytes(bytes(64))
    (folder / "._0001.png").write_bytes(b"\x00\x05\x16\x07" + bytes(80))  # a macOS AppleDouble fork
    assert [f.name for f in video.frame_files(folder)] == ["0001.png", "0002.png"]
    decoded = video.read(folder)
    assert decoded.decoded_frames == decoded.container_frames == 2 and not decoded.is_truncated(0)


def test_grey_colour_alpha_and_16_bit_frames_all_come_back_rgb_uint8(tmp_path):
    folder = tmp_path / "ckplus"
    write_frame(folder / "01.png", 70, (HEIGHT, WIDTH))  # grey, as most CK+ frames
    colour = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    colour[...] = (10, 20, 30)  # BGR, as OpenCV writes it
    cv2.imwrite(str(folder / "02.png"), colour)
    rgba = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
    rgba[...] = (10, 20, 30, 0)  # fully transparent: the alpha channel is dropped, not applied
    cv2.imwrite(str(folder / "03.png"), rgba)
    write_frame(folder / "04.png", 200 * 256 + 99, (HEIGHT, WIDTH), np.uint16)  # 16-bit grey: its high byte
    decoded = video.read(folder)
    assert decoded.frames.shape == (4, HEIGHT, WIDTH, 3) and decoded.frames.dtype == np.uint8
    assert (decoded.frames[0] == 70).all()  # grey replicated to the three channels
    assert (decoded.frames[1] == (30, 20, 10)).all() and (decoded.frames[2] == (30, 20, 10)).all()  # RGB
    assert (decoded.frames[3] == 200).all()


def test_a_still_is_a_clip_of_one_frame(tmp_path):
    still = write_frame(tmp_path / "affectnet" / "29a31ebf.jpg", 120)
    decoded = video.read(still)
    assert decoded.frames.shape == (1, HEIGHT, WIDTH, 3) and decoded.fps == 0.0
    assert decoded.container_frames == decoded.decoded_frames == 1 and not decoded.is_truncated(0)
    assert video.read(still, fps=25.0).fps == 25.0
    assert video.probe(still) == video.VideoInfo(n_frames=1, fps=0.0, width=WIDTH, height=HEIGHT)
    assert video.sha256(still) == hashlib.sha256(still.read_bytes()).hexdigest()


def _empty_folder(folder: Path) -> tuple[Path, list[str]]:
    folder.mkdir()
    (folder / ".DS_Store").write_bytes(bytes(16))  # not a frame, so the folder still has none
    return folder, [str(folder), "no image file"]


def _zero_byte_frame(folder: Path) -> tuple[Path, list[str]]:
    write_sequence(folder, ["1.png", "2.png", "3.png"])
    (folder / "2.png").write_bytes(b"")
    return folder, [str(folder / "2.png"), "empty file (0 bytes)"]


def _corrupt_frame(folder: Path) -> tuple[Path, list[str]]:
    write_sequence(folder, ["1.png", "2.png", "3.png"])
    data = (folder / "3.png").read_bytes()
    (folder / "3.png").write_bytes(data[: len(data) // 3])  # cut short, as by an interrupted copy
    return folder, [str(folder / "3.png"), "cannot be decoded as an image"]


def _size_change(folder: Path) -> tuple[Path, list[str]]:
    write_sequence(folder, ["1.png", "2.png"])
    write_frame(folder / "3.png", 0, (HEIGHT + 2, WIDTH, 3))
    return folder, [str(folder), f"3.png is {WIDTH}x{HEIGHT + 2} but 1.png is {WIDTH}x{HEIGHT}"]


def _duplicate_number(folder: Path) -> tuple[Path, list[str]]:
    write_sequence(folder, ["1.png", "001.png"])
    return folder, [str(folder), "001.png and 1.png both have frame number 1"]


def _no_number(folder: Path) -> tuple[Path, list[str]]:
    write_sequence(folder, ["1.png", "peak.png"])
    return folder, [str(folder / "peak.png"), "no frame number in the name"]


@pytest.mark.parametrize("make", [_empty_folder, _zero_byte_frame, _corrupt_frame, _size_change,
                                  _duplicate_number, _no_number], ids=lambda make: make.__name__.strip("_"))
def test_a_bad_frame_folder_names_the_file(tmp_path, make):
    folder, expected = make(tmp_path / "seq")
    with pytest.raises(video.VideoError) as error:
        video.read(folder)
    message = str(error.value)
    assert all(part in message for part in expected), message


def test_folder_hash_follows_the_frames(tmp_path):
    folder = write_sequence(tmp_path / "seq", ["1.png", "2.png", "3.png"])
    original = video.sha256(folder)
    (folder / ".DS_Store").write_bytes(bytes(16))
    (folder / "._1.png").write_bytes(bytes(16))
    assert video.sha256(folder) == original  # files that are no frame do not count
    changed = tmp_path / "changed"  # one frame's bytes
    write_sequence(changed, ["1.png", "2.png", "3.png"])
    write_frame(changed / "2.png", 11)
    assert video.sha256(changed) != original
    swapped = tmp_path / "swapped"  # frames 1 and 2 swapped in name: same files, other order
    write_sequence(swapped, ["2.png", "1.png", "3.png"])
    assert video.sha256(swapped) != original
    renamed = tmp_path / "renamed"  # same frames in the same order, one named differently
    write_sequence(renamed, ["1.png", "2.png", "4.png"])
    assert video.sha256(renamed) != original
    added = write_sequence(tmp_path / "added", ["1.png", "2.png", "3.png", "4.png"])
    assert video.sha256(added) != original


def test_resample_indices():
    # 30 -> 10 fps: every third frame, from the first.
    assert video.resample_indices(30, 30.0, 10.0).tolist() == list(range(0, 30, 3))
    # 25 -> 10 fps: a sample every 2.5 frames takes the frame on screen then (floor): 0, 2, 5, 7, ...
    kept = video.resample_indices(25, 25.0, 10.0)
    assert kept.tolist() == [0, 2, 5, 7, 10, 12, 15, 17, 20, 22]
    # Uniform in time: sample k is within one source frame of time k / 10.
    assert np.all(np.abs(kept / 25.0 - np.arange(len(kept)) / 10.0) < 1 / 25.0)
    # A rate that does not divide: 29.97 -> 9.99 fps is still exactly every third frame.
    assert video.resample_indices(300, 29.97, 9.99).tolist() == list(range(0, 300, 3))
    # Float rounding does not move a sample to the frame before: 23.976 -> 5 fps takes sample 625 (125 s)
    # at exactly frame 2997, which 625 * (23.976 / 5) computes as 2996.9999999999995.
    assert video.resample_indices(3000, 23.976, 5.0)[625] == 2997
    # A target at or above the clip's rate keeps every frame.
    assert video.resample_indices(7, 10.0, 10.0).tolist() == video.resample_indices(7, 10.0, 30.0).tolist() \
        == list(range(7))
    assert video.resample_indices(0, 30.0, 10.0).tolist() == []
    with pytest.raises(ValueError, match="frame rates must be > 0"):
        video.resample_indices(10, 0.0, 10.0)


def test_read_samples_a_frame_folder_after_judging_truncation(tmp_path):
    folder = write_sequence(tmp_path / "mmi", [f"{n:04d}.png" for n in range(12)])
    decoded = video.read(folder, fps=30.0, sample_fps=10.0)
    assert decoded.frame_indices.tolist() == [0, 3, 6, 9]
    assert frame_values(decoded) == [0, 30, 60, 90] and decoded.fps == 10.0
    # 12 frames decoded of 12 files: sampling keeps 4 but the clip is whole.
    assert decoded.decoded_frames == decoded.container_frames == 12 and not decoded.is_truncated(0)
    unsampled = video.read(folder, fps=30.0)
    assert unsampled.frame_indices.tolist() == list(range(12)) and unsampled.fps == 30.0
    with pytest.raises(video.VideoError, match="frame rate is unknown"):
        video.read(folder, sample_fps=10.0)  # frame images carry no rate and none was given


def test_read_samples_a_video_after_judging_truncation(tmp_path):
    path = tmp_path / "clip.avi"
    video.write(path, np.zeros((30, HEIGHT, WIDTH, 3), np.uint8), 30.0)
    decoded = video.read(path, sample_fps=10.0)
    assert decoded.frame_indices.tolist() == list(range(0, 30, 3)) and len(decoded.frames) == 10
    assert decoded.fps == 10.0 and decoded.decoded_frames == decoded.container_frames == 30
    assert not decoded.is_truncated(0)


def test_probe_clip_of_a_frame_folder(tmp_path):
    folder = write_sequence(tmp_path / "S005" / "001", [f"S005_001_{n:08d}.png" for n in range(1, 6)])
    fields, reason = probe_clip(folder, fps=30.0)
    assert reason is None
    assert fields == {"path": str(folder), "n_frames": 5, "fps": 30.0, "width": WIDTH, "height": HEIGHT}
    # The reason is relative to the clip: a broken first frame by its name, an empty folder without its path.
    (folder / "S005_001_00000001.png").write_bytes(b"")
    assert probe_clip(folder, fps=30.0) == (None, "S005_001_00000001.png: empty file (0 bytes)")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert probe_clip(empty) == (None, "no image file (.bmp, .jpeg, .jpg, .png) in the folder")


def test_preprocess_reads_a_frame_folder_unchanged(tmp_path):
    folder = write_sequence(tmp_path / "oulu" / "P001" / "Happiness", [f"{n:03d}.jpeg" for n in range(6)])
    decoded, extra = preprocess.read_video(folder, {"frame_count_tolerance": 0, "on_truncated": "skip"})
    assert decoded.frames.shape == (6, HEIGHT, WIDTH, 3)
    assert extra == {"media": {"container_frames": 6, "decoded_frames": 6, "truncated": False,
                                "sample_fps": None}, "warnings": []}
