"""Optical flow, windows and dynamic images against what they are defined to compute."""

import numpy as np
import pytest

from fer_pipeline import motion
from fer_pipeline.config import load

FLOW = load()["presets"]["ec112"]["flow"]


def _textured(size=112, seed=0):
    rng = np.random.default_rng(seed)
    import cv2

    noise = rng.random((size // 4, size // 4)).astype(np.float32)
    image = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    image = (image - image.min()) / (image.max() - image.min()) * 255
    return np.repeat(image[..., None], 3, axis=2).astype(np.uint8)


@pytest.mark.parametrize("dx,dy", [(2, 0), (0, -3), (1, 1)])
def test_flow_of_a_shifted_image_recovers_the_shift(dx, dy):
    frame = _textured()
    shifted = np.roll(np.roll(frame, dy, axis=0), dx, axis=1)
    flow = motion.farneback(np.stack([frame, shifted]), FLOW)
    assert flow.shape == (1, 112, 112, 2) and flow.dtype == np.float32
    inner = flow[0, 16:-16, 16:-16]  # the wrap-around border is not a shift
    assert np.median(inner[..., 0]) == pytest.approx(dx, abs=0.15)
    assert np.median(inner[..., 1]) == pytest.approx(dy, abs=0.15)


def test_rank_pooling_weights_follow_bilen_formula():
    for length in (1, 2, 5, 16):
        alpha = motion.rank_pooling_weights(length)
        for t in range(1, length + 1):
            h_T = sum(1.0 / i for i in range(1, length + 1))
            h_prev = sum(1.0 / i for i in range(1, t))
            assert alpha[t - 1] == pytest.approx(2 * (length - t + 1) - (length + 1) * (h_T - h_prev))
    alpha = motion.rank_pooling_weights(16)
    # Early frames weigh negative and late ones positive (the pooled vector ranks time forward), and the
    # weights sum to zero, so a static sequence has a zero dynamic image.
    assert alpha[0] == alpha.min() < 0 < alpha[-1]
    assert np.all(alpha[:3] < 0) and np.all(alpha[-8:] > 0)
    assert alpha.sum() == pytest.approx(0, abs=1e-9)


def test_dynamic_image_is_the_weighted_sum_and_zero_for_a_static_clip():
    rng = np.random.default_rng(1)
    clip = rng.random((16, 4, 4, 3))
    alpha = motion.rank_pooling_weights(16)
    expected = sum(alpha[t] * clip[t] for t in range(16))
    np.testing.assert_allclose(motion.dynamic_image(clip), expected, rtol=1e-10)
    static = np.repeat(clip[:1], 16, axis=0)
    np.testing.assert_allclose(motion.dynamic_image(static), 0, atol=1e-9)
    # A brightening sequence gives a positive dynamic image, a darkening one a negative one.
    ramp = np.linspace(0, 1, 16)[:, None, None, None] * np.ones((16, 2, 2, 1))
    assert motion.dynamic_image(ramp).min() > 0 and motion.dynamic_image(ramp[::-1]).max() < 0


def test_windows_cover_the_clip_with_the_papers_overlap():
    np.testing.assert_array_equal(motion.window_starts(40, 16, 8), [0, 8, 16, 24])
    np.testing.assert_array_equal(motion.window_starts(41, 16, 8), [0, 8, 16, 24, 25])  # end covered
    np.testing.assert_array_equal(motion.window_starts(16, 16, 8), [0])
    np.testing.assert_array_equal(motion.window_starts(10, 16, 8), [0])
    np.testing.assert_array_equal(motion.window_indices(0, 16, 10)[-7:], [9] * 7)  # padded by repetition
    images = motion.dynamic_images(np.arange(41, dtype=np.float32)[:, None, None, None], motion.window_starts(41, 16, 8), 16)
    assert images.shape == (5, 1, 1, 1)


def test_flow_picture_encodes_direction_as_hue():
    right = np.zeros((8, 8, 2), np.float32)
    right[..., 0] = 1
    down = np.zeros((8, 8, 2), np.float32)
    down[..., 1] = 1
    a, b = motion.flow_to_rgb(right), motion.flow_to_rgb(down)
    assert a.dtype == np.uint8 and not np.array_equal(a, b)
    assert motion.flow_to_rgb(np.zeros((8, 8, 2), np.float32)).max() == 0
