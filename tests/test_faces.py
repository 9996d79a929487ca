"""Face tracking, gap filling, smoothing and alignment, on synthetic geometry and a real face photograph."""

import numpy as np
import pytest
import skimage.data

from fer_pipeline import faces
from fer_pipeline.config import load

DETECTION = load()["detection"]


def test_similarity_transform_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.random((5, 2)) * 100
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rot.T + shift
    matrix = faces.similarity_transform(src, dst)
    np.testing.assert_allclose(matrix[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


@pytest.mark.parametrize("mode,size", [("five_point", 112), ("two_eye", 128), ("five_point", 64), ("rigid", 112)])
def test_alignment_puts_the_eyes_on_the_template(mode, size):
    # A face rotated by 20 degrees and scaled: its landmarks must land on the template after alignment.
    template = faces.FIVE_POINT_TEMPLATE_112 * 2 + 100
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = (template - 200) @ rot.T + 200
    matrix = faces.alignment_matrix(landmarks, mode, size)
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    expected_eyes = (faces.TWO_EYE_TEMPLATE * size if mode == "two_eye"
                     else faces.FIVE_POINT_TEMPLATE_112[:2] * size / 112)
    np.testing.assert_allclose(mapped[:2], expected_eyes, atol=1e-6)


def test_rigid_alignment_ignores_the_mouth_and_five_point_does_not():
    """A smile moves the mouth corners up and out: the rigid crop stays put, the five-point crop moves."""
    neutral = faces.FIVE_POINT_TEMPLATE_112 * 2 + 100
    smiling = neutral.copy()
    smiling[3] += [-6.0, -8.0]
    smiling[4] += [6.0, -8.0]
    np.testing.assert_allclose(faces.alignment_matrix(smiling, "rigid", 112),
                               faces.alignment_matrix(neutral, "rigid", 112), atol=1e-9)
    moved = faces.alignment_matrix(smiling, "five_point", 112) - faces.alignment_matrix(neutral, "five_point", 112)
    assert np.abs(moved).max() > 0.5
    with pytest.raises(ValueError, match="rigid"):
        faces.alignment_matrix(neutral, "three_point", 112)


def test_align_warps_pixels_where_the_matrix_says():
    frame = np.zeros((200, 200, 3), np.uint8)
    landmarks = faces.FIVE_POINT_TEMPLATE_112 + 40  # the template, shifted by 40 px
    for x, y in landmarks.astype(int):
        frame[y - 1:y + 2, x - 1:x + 2] = 255
    crop = faces.align(frame[None], landmarks[None], "five_point", 112)[0]
    assert crop.shape == (112, 112, 3)
    for x, y in faces.FIVE_POINT_TEMPLATE_112.round().astype(int):
        assert crop[y, x].max() > 100  # the bright dots are where the template puts them


def test_clip_median_reference_holds_one_crop_while_the_landmarks_drift():
    """MTCNN's nose point drifts with the expression (mouth opening pulls it down); aligned on each frame, a
    still face zooms in the crop; aligned on the clip's median landmarks, every crop is the same."""
    canvas = np.zeros((600, 720, 3), np.uint8)
    canvas[32:544, 104:616] = skimage.data.astronaut()
    frames = np.repeat(canvas[None], 9, axis=0)
    still = faces.FIVE_POINT_TEMPLATE_112 * 2.5 + [220, 60]
    landmarks = np.repeat(still[None], 9, axis=0).astype(np.float32)
    landmarks[3:6, 2, 1] += 14.0                 # the apex: the nose point 14 px down, the face unchanged
    valid = np.ones(9, bool)
    per_frame = faces.align(frames, faces.alignment_landmarks(landmarks, valid, "frame"), "rigid", 112)
    per_clip = faces.align(frames, faces.alignment_landmarks(landmarks, valid, "clip_median"), "rigid", 112)
    drift = np.abs(per_frame[4].astype(int) - per_frame[0].astype(int)).mean()
    assert drift > 5                             # the crop moved with the landmark drift
    assert all(np.array_equal(crop, per_clip[0]) for crop in per_clip)
    np.testing.assert_allclose(faces.alignment_matrix(faces.alignment_landmarks(landmarks, valid, "clip_median")[4],
                                                      "rigid", 112),
                               faces.alignment_matrix(still, "rigid", 112), atol=1e-4)


def test_clip_median_reference_ignores_invalid_frames():
    landmarks = np.repeat((faces.FIVE_POINT_TEMPLATE_112 + 50)[None], 6, axis=0).astype(np.float32)
    landmarks[:4] += 200.0                       # filled values on frames without a face
    valid = np.array([False, False, False, False, True, True])
    reference = faces.alignment_landmarks(landmarks, valid, "clip_median")
    np.testing.assert_allclose(reference, np.repeat(landmarks[4:5], 6, axis=0))
    np.testing.assert_array_equal(faces.alignment_landmarks(landmarks, valid, "frame"), landmarks)
    # no valid frame at all: the median of every frame rather than nothing
    np.testing.assert_allclose(faces.alignment_landmarks(landmarks, np.zeros(6, bool), "clip_median")[0],
                               np.median(landmarks, axis=0))
    with pytest.raises(ValueError, match="clip_median"):
        faces.alignment_landmarks(landmarks, valid, "clip_mean")


def test_fill_gaps_interpolates_short_gaps_and_holds_long_ones():
    values = np.arange(20, dtype=float)[:, None] * np.array([[1.0, 2.0]])
    valid = np.ones(20, bool)
    valid[5:8] = False  # short interior gap: interpolated exactly (values are linear)
    valid[12:19] = False  # long gap (7 > 4): held from the nearest valid frame
    values[~valid] = np.nan
    filled = faces.fill_gaps(values, valid, max_gap=4)
    np.testing.assert_allclose(filled[5:8, 0], [5, 6, 7])
    assert not np.isnan(filled).any()
    np.testing.assert_allclose(filled[12:16, 0], 11)  # nearer to frame 11
    np.testing.assert_allclose(filled[16:19, 0], 19)  # nearer to frame 19
    with pytest.raises(ValueError):
        faces.fill_gaps(values, np.zeros(20, bool), 4)


def test_smoothing_averages_noise_and_keeps_length():
    rng = np.random.default_rng(0)
    values = 10 + rng.normal(0, 1, (200, 3))
    smoothed = faces.smooth(values, 5)
    assert smoothed.shape == values.shape
    assert smoothed.std(0).max() < 0.6 * values.std(0).min()
    np.testing.assert_allclose(faces.smooth(np.full((10, 2), 3.0), 5), 3.0)


@pytest.fixture(scope="module")
def detector():
    return faces.FaceDetector(DETECTION, device="cpu")


def _moving_face_clip(n=24, step=3):
    canvas = np.zeros((576, 720, 3), np.uint8)
    canvas[32:544, 104:616] = skimage.data.astronaut()
    return np.stack([np.roll(canvas, i * step, axis=1) for i in range(n)])


def test_track_follows_a_real_moving_face(detector):
    clip = _moving_face_clip()
    track = detector.track(clip)
    assert track.boxes.shape == (24, 4) and track.landmarks.shape == (24, 5, 2)
    assert track.valid.all() and (track.scores > 0.9).all()  # ONet checked every frame
    # The face moves 3 px to the right per frame; the left eye follows.
    motion = np.diff(track.landmarks[:, 0, 0])
    assert np.median(motion) == pytest.approx(3, abs=0.5)
    # Against the full cascade on each full-resolution frame, landmarks are within 2 px on average.
    full = detector.detect_frames(clip[::6], scale=1.0)
    reference = np.stack([points[0] for _, points in full])
    error = np.linalg.norm(track.landmarks[::6] - reference, axis=-1).mean()
    assert error < 2.0


def test_a_clip_without_a_face_is_refused_with_the_numbers(detector):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 40, (10, 240, 320, 3), dtype=np.uint8)
    with pytest.raises(faces.NoFaceError, match=r"0 of 10 frames .*min_valid_fraction"):
        detector.track(noise)


def test_frames_that_lose_the_face_are_marked_invalid_and_filled(detector):
    clip = _moving_face_clip(n=20, step=1)
    clip[8:11] = 0  # three black frames: no face there
    track = detector.track(clip)
    assert not track.valid[8:11].any() and track.valid[:7].all() and track.valid[12:].all()
    assert not np.isnan(track.landmarks).any()
    # Filled landmarks lie between their neighbours.
    assert track.landmarks[7, 0, 0] - 2 <= track.landmarks[9, 0, 0] <= track.landmarks[12, 0, 0] + 2


def test_device_auto_picks_what_is_there():
    import torch

    from fer_pipeline.device import resolve_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"


def test_search_region_looks_around_the_track_and_at_the_whole_frame_when_it_is_lost(monkeypatch):
    region = faces.FaceDetector({**DETECTION, "search_region": {"margin": 0.5, "min_face": 0.5}}, device="cpu")
    seen = []  # the sizes of the images the cascade ran on
    real = region.detect_frames
    monkeypatch.setattr(region, "detect_frames", lambda frames, **kw: seen.append(frames.shape[1:3]) or real(frames, **kw))
    clip = _moving_face_clip(n=24, step=3)
    clip[16:] = np.roll(clip[16:], -300, axis=2)  # the face jumps 300 px left, out of its search region
    track = region.track(clip)
    # (between keyframes 8 and 16 the interpolated box misses the face, as it would on whole frames: ONet says so)
    assert track.valid[:9].all() and track.valid[16:].all()
    whole = [i for i, shape in enumerate(seen) if shape == clip.shape[1:3]]
    # The first keyframe and the one after the jump saw the whole frame; the others a region around the face.
    assert len(whole) == 2 and whole[0] == 0 and len(seen) > len(whole)
    assert all(shape[0] * shape[1] < 0.75 * clip.shape[1] * clip.shape[2] for i, shape in enumerate(seen)
               if i not in whole)
    # The track is in the frame's coordinates and follows the jump (3 px a frame, then 300 px to the left).
    np.testing.assert_allclose(track.landmarks[:7:2], region_free_landmarks(clip[:7:2]), atol=3)
    assert track.landmarks[20, 0, 0] - track.landmarks[4, 0, 0] == pytest.approx(16 * 3 - 300, abs=5)


def region_free_landmarks(frames):
    """The full cascade's left-to-right landmarks of each frame's face (the reference for the region's)."""
    detector = faces.FaceDetector(DETECTION, device="cpu")
    return np.stack([points[0] for _, points in detector.detect_frames(frames)])
