"""Motion: Farneback optical flow on aligned faces, training windows, and dynamic images.

Both the Enhanced ConvLSTM paper (flow after Farneback 2003, dynamic images after Bilen et al. 2016) and
its ResNet streams read these, so they are computed once per clip and cached in the feature store.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np


def farneback(faces_rgb: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Dense flow between consecutive aligned faces: (T, H, W, 3) uint8 -> (T-1, H, W, 2) float32 pixels.

    Farneback's polynomial-expansion method on the grayscale crops; channel 0 is the x (rightward)
    displacement, channel 1 the y (downward) displacement of each pixel of frame t in frame t+1.
    ``params`` is a preset's ``flow`` block (pyr_scale, levels, winsize, iterations, poly_n, poly_sigma).
    """
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in faces_rgb]
    height, width = faces_rgb.shape[1:3]
    flow = np.empty((max(0, len(gray) - 1), height, width, 2), np.float32)
    for t in range(len(gray) - 1):
        flow[t] = cv2.calcOpticalFlowFarneback(
            gray[t], gray[t + 1], None,
            params["pyr_scale"], params["levels"], params["winsize"],
            params["iterations"], params["poly_n"], params["poly_sigma"], 0,
        )
    return flow


def window_starts(n_frames: int, length: int, stride: int) -> np.ndarray:
    """First frame of each training window: ``length`` frames every ``stride`` frames (16 and 8 in the
    paper: consecutive windows overlap by 8). The last window is aligned to the clip's end when the stride
    does not reach it, so no frame is left out; a clip shorter than ``length`` has one window at 0, which
    :func:`window_indices` pads by repeating the last frame."""
    if n_frames <= length:
        return np.zeros(1, np.int64)
    starts = np.arange(0, n_frames - length + 1, stride)
    if starts[-1] != n_frames - length:
        starts = np.r_[starts, n_frames - length]
    return starts.astype(np.int64)


def window_indices(start: int, length: int, n_frames: int) -> np.ndarray:
    """Frame indices of the window at ``start``; past the clip's end the last frame repeats."""
    return np.minimum(np.arange(start, start + length), n_frames - 1)


def rank_pooling_weights(length: int) -> np.ndarray:
    """Approximate rank pooling coefficients (Bilen et al., CVPR 2016, eq. 6).

    alpha_t = 2(T - t + 1) - (T + 1)(H_T - H_{t-1}),  t = 1..T,  H_t = sum_{i=1..t} 1/i,  H_0 = 0.
    """
    t = np.arange(1, length + 1, dtype=np.float64)
    harmonic = np.r_[0.0, np.cumsum(1.0 / t)]  # harmonic[k] = H_k
    return 2.0 * (length - t + 1) - (length + 1) * (harmonic[length] - harmonic[t.astype(int) - 1])


def dynamic_image(frames: np.ndarray) -> np.ndarray:
    """One dynamic image of a sequence (T, ...): sum_t alpha_t * x_t, computed in float64."""
    alpha = rank_pooling_weights(len(frames))
    return (alpha @ frames.reshape(len(frames), -1).astype(np.float64)).reshape(frames.shape[1:])


def dynamic_images(sequence: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Dynamic image of each window of ``sequence`` (T, H, W, C): (len(starts), H, W, C) float32."""
    out = np.empty((len(starts),) + sequence.shape[1:], np.float32)
    for i, start in enumerate(starts):
        out[i] = dynamic_image(sequence[window_indices(int(start), length, len(sequence))])
    return out


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Flow (H, W, 2) as a picture: hue is the direction, brightness the magnitude (uint8 RGB)."""
    magnitude, angle = cv2.cartToPolar(flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32))
    scale = max_magnitude or max(float(magnitude.max()), 1e-6)
    hsv = np.zeros(flow.shape[:2] + (3,), np.uint8)
    hsv[..., 0] = (angle * 90 / np.pi).astype(np.uint8)
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(magnitude / scale * 255, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
