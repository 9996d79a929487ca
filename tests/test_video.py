"""Bad media is reported, not hidden: real files written by OpenCV, then cut, scrambled or concatenated."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_pipeline import video

N_FRAMES, HEIGHT, WIDTH, FPS = 100, 288, 360, 25.0


def moving_frames(n: int = N_FRAMES, height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> np.ndarray:
    """Smooth texture drifting and a disc circling, with a little noise: compresses like real footage, so a
    cut file loses a realistic share of its frames (random noise would make every frame a key frame)."""
    rng = np.random.default_rng(seed)
    texture = cv2.resize(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8), (width, height))
    frames = np.empty((n, height, width, 3), np.uint8)
    for t in range(n):
        frame = np.roll(texture, (3 * t, 2 * t), axis=(0, 1)).copy()
        centre = (int(width / 2 + width / 4 * np.cos(t / 10)), int(height / 2 + height / 4 * np.sin(t / 10)))
        cv2.circle(frame, centre, height // 7, (255, 200, 50), -1)
        frames[t] = np.clip(frame + rng.integers(-8, 9, frame.shape), 0, 255)
    return frames


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One intact XVID AVI and one mp4v MP4 of the same 100 frames, and each cut to a third of its bytes."""
    folder = tmp_path_factory.mktemp("videos")
    frames = moving_frames()
    paths = {}
    for name, fourcc in (("clip.avi", "XVID"), ("clip.mp4", "mp4v")):
        intact = folder / name
        video.write(intact, frames, FPS, fourcc)
        cut = folder / f"cut_{name}"
        data = intact.read_bytes()
        cut.write_bytes(data[: len(data) // 3])
        paths[name], paths[f"cut_{name}"] = intact, cut
    return paths


@pytest.mark.parametrize("name", ["clip.avi", "clip.mp4"])
def test_intact_file_is_not_truncated(clips, name):
    decoded = video.read(clips[name])
    # Measured: for an intact file OpenCV's count equals the decoded count exactly, so tolerance 0 holds.
    assert decoded.container_frames == decoded.decoded_frames == N_FRAMES
    assert decoded.frames.shape == (N_FRAMES, HEIGHT, WIDTH, 3) and decoded.frames.dtype == np.uint8
    assert decoded.fps == FPS
    assert not decoded.is_truncated(0)
    assert not decoded.is_truncated(1)


def test_truncated_avi_is_reported(clips):
    path = clips["cut_clip.avi"]
    decoded = video.read(path)
    # The cut file lost its index (idx1) but not its header: OpenCV still reports the written count.
    assert decoded.container_frames == N_FRAMES
    assert 0 < decoded.decoded_frames < N_FRAMES / 2
    assert decoded.is_truncated(2)
    missing = decoded.container_frames - decoded.decoded_frames  # up to that many lost frames are tolerated
    assert decoded.is_truncated(missing - 1) and not decoded.is_truncated(missing)
    reason = decoded.truncation_reason(path)
    assert reason == (f"{path}: {decoded.decoded_frames} of the {N_FRAMES} frames its header claims could be "
                      f"decoded (truncated or damaged file)")
    # decode() is the same read, without the count.
    frames, fps = video.decode(path)
    assert np.array_equal(frames, decoded.frames) and fps == decoded.fps


def test_a_limited_read_is_not_a_truncation(clips):
    intact, cut = video.read(clips["clip.avi"], max_frames=30), video.read(clips["cut_clip.avi"], max_frames=60)
    assert intact.decoded_frames == 30 and not intact.is_truncated(0)
    assert cut.decoded_frames < 60 and cut.is_truncated(2)
    assert f"of the first 60 of the {N_FRAMES} frames its header claims" in cut.truncation_reason(clips["cut_clip.avi"])
    short = video.read(clips["cut_clip.avi"], max_frames=10)
    assert short.decoded_frames == 10 and not short.is_truncated(0)


def test_truncated_mp4_does_not_open(clips):
    # OpenCV writes the MP4 index (moov atom) at the end: a cut file has none and does not open at all.
    path = clips["cut_clip.mp4"]
    with pytest.raises(video.VideoError, match="cannot be opened as a video") as error:
        video.read(path)
    assert str(path) in str(error.value)


def test_random_bytes_are_not_a_video(tmp_path):
    path = tmp_path / "noise.avi"
    path.write_bytes(np.random.default_rng(0).bytes(50_000))
    for reader in (video.read, video.decode, video.probe):
        with pytest.raises(video.VideoError, match="cannot be opened as a video") as error:
            reader(path)
        assert str(path) in str(error.value)


def test_a_stream_without_a_count_is_never_truncated(tmp_path):
    # Concatenated JPEGs open as a raw MJPEG stream, for which OpenCV reports INT64_MIN frames.
    path = tmp_path / "stream.mjpeg"
    frames = moving_frames(5, 96, 128)
    path.write_bytes(b"".join(cv2.imencode(".jpg", frame)[1].tobytes() for frame in frames))
    decoded = video.read(path)
    assert decoded.decoded_frames == 5
    assert decoded.container_frames == 0 and video.probe(path).n_frames == 0
    assert not decoded.is_truncated(0)


def test_frame_size_change_names_the_file_and_frame(clips, monkeypatch):
    # OpenCV 5's FFmpeg backend scales every frame to the stream header's size, so no real file (two
    # MPEG-TS or Matroska streams of different sizes, concatenated) yields a size change through it. The
    # frame source is swapped for one that changes size at frame 3; the rest of read() is the real one.
    small, large = np.zeros((240, 320, 3), np.uint8), np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    monkeypatch.setattr(video, "_read_frames", lambda capture, max_frames: iter([small, small, small, large]))
    path = clips["clip.avi"]
    with pytest.raises(video.VideoError) as error:
        video.read(path)
    message = str(error.value)
    assert message.startswith(f"{path}: frame 3 is {WIDTH}x{HEIGHT} but frame 0 is 320x240")
    with pytest.raises(video.VideoError, match="frame 3"):
        video.decode(path)
