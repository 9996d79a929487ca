"""Faces: MTCNN detection on keyframes, a per-frame face check, gap filling, smoothing, alignment.

Detection follows Zhang et al.'s MTCNN (facenet-pytorch's weights, which ship inside the package). Running
the full three-stage cascade on every 720x576 frame costs ~90 ms here, so the pipeline:

1. runs the cascade on every ``keyframe_interval``-th frame (optionally downscaled by ``scale``), and on
   every frame around a keyframe that missed the face;
2. interpolates boxes and landmarks between detections at most one keyframe interval apart (faces move
   little in 1/5 s; the benchmark measures the landmark error this costs against the full cascade);
3. checks every frame with MTCNN's last stage alone (ONet on a 48x48 crop of the interpolated box), whose
   face probability is the per-frame score;
4. fills short runs of frames without a face from their neighbours and smooths boxes and landmarks with a
   centred moving average.

A frame is valid when it lies between two detections and (with ``verify_every_frame``) ONet still sees a
face there; invalid frames hold filled values and are flagged in the mask.

Alignment has the two modes the papers use: a five-point similarity transform onto a template (the
Enhanced ConvLSTM paper's OpenFace-style crops) and a rotation-and-scale on the two eyes (Xu et al.). The
transform is fitted on each frame's landmarks or, for motion features, once per clip on its median landmarks
(``alignment_landmarks``): MTCNN's landmarks drift with the expression itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import cv2
import numpy as np

from .device import resolve_device

log = logging.getLogger(__name__)

# ArcFace/InsightFace five-point template for a 112x112 crop: left eye, right eye, nose tip, left and right
# mouth corners (in the image's left-right sense, as MTCNN orders them). Scaled to other crop sizes.
FIVE_POINT_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
# Two-eye template as fractions of the crop side: eyes level, 40% of the side apart, at 38% height.
TWO_EYE_TEMPLATE = np.array([[0.30, 0.38], [0.70, 0.38]], dtype=np.float64)

# The eye box of STC-NLSTM's preprocessing, in eye distances (this project's choice: the paper gives none):
# 2.2 wide, centred between the eyes, from 1.0 above the eyes to 1.8 below them (brows to chin on an upright
# face). The paper: "determine the final rectangular face by keeping the distances between two eyes
# invariable. Finally, we turn a rectangle into a square through zero padding and resize" (Sec. 4.1).
EYE_BOX = {"width": 2.2, "above": 1.0, "below": 1.8}

ONET_SIZE = 48
ALIGNMENT_MODES = ("five_point", "rigid", "two_eye", "eye_box")
ALIGNMENT_REFERENCES = ("frame", "clip_median")


@dataclass
class Detections:
    """Per-frame face track of one clip (T frames, full-resolution pixel coordinates)."""

    boxes: np.ndarray  # (T, 4) float32 x0, y0, x1, y1
    landmarks: np.ndarray  # (T, 5, 2) float32 eyes, nose, mouth corners
    scores: np.ndarray  # (T,) float32 face probability (0 where no face was seen)
    valid: np.ndarray  # (T,) bool: a face was seen on this frame (before filling)

    @property
    def valid_fraction(self) -> float:
        return float(self.valid.mean()) if len(self.valid) else 0.0


class NoFaceError(RuntimeError):
    """A clip holds too little face to be used; the message says how much and what the threshold is."""


def _largest_or_tracked(boxes: np.ndarray, previous: np.ndarray | None) -> int:
    """Index of the face to follow: the one overlapping the previous choice most, else the largest."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    if previous is None:
        return int(np.argmax(areas))
    x0 = np.maximum(boxes[:, 0], previous[0])
    y0 = np.maximum(boxes[:, 1], previous[1])
    x1 = np.minimum(boxes[:, 2], previous[2])
    y1 = np.minimum(boxes[:, 3], previous[3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    prev_area = (previous[2] - previous[0]) * (previous[3] - previous[1])
    iou = inter / (areas + prev_area - inter + 1e-9)
    return int(np.argmax(iou)) if iou.max() > 0.1 else int(np.argmax(areas))


def _square(box: np.ndarray) -> np.ndarray:
    """MTCNN's ``rerec``: the square of side max(w, h) around the box's centre."""
    w, h = box[..., 2] - box[..., 0], box[..., 3] - box[..., 1]
    side = np.maximum(w, h)
    cx, cy = box[..., 0] + w / 2, box[..., 1] + h / 2
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=-1)


def _crop_with_border(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """The integer pixel region MTCNN reads for ``box`` (zero outside the frame), area-resized to size."""
    x0, y0 = int(box[0]) - 1, int(box[1]) - 1
    x1, y1 = int(box[2]), int(box[3])
    height, width = frame.shape[:2]
    pad = max(0, -x0, -y0, x1 - width, y1 - height)
    if pad:
        frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    crop = frame[y0 + pad:y1 + pad, x0 + pad:x1 + pad]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


class FaceDetector:
    """MTCNN on keyframes plus an ONet check of every frame; one instance serves a whole shard.

    ``config`` is the ``detection`` block of config.yaml.
    """

    def __init__(self, config: dict[str, Any], device: str | None = None):
        import torch
        from facenet_pytorch import MTCNN

        self._torch = torch
        self.config = config
        self.device = resolve_device(str(device or config["device"]))
        self.mtcnn = MTCNN(
            min_face_size=config["min_face_size"],
            thresholds=list(config["thresholds"]),
            select_largest=True,
            keep_all=True,
            device=self.device,
        ).eval()

    # -- stage 1: the full cascade on keyframes ---------------------------------------------------------
    def detect_frames(self, frames: np.ndarray, scale: float = 1.0,
                      min_face_size: float | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Run MTCNN on RGB frames (N, H, W, 3); per frame (boxes (K,4), landmarks (K,5,2)) at full scale.
        ``min_face_size`` (pixels of the frames as given, before ``scale``; default ``detection.min_face_size``,
        in pixels of the resized frames) sets where the image pyramid starts."""
        if scale != 1.0:
            height, width = frames.shape[1:3]
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
        results = []
        batch = self.config["batch_size"]
        # detection.min_face_size is in pixels of the resized frame; a region's is in the frame's own.
        self.mtcnn.min_face_size = self.config["min_face_size"] if min_face_size is None else \
            max(12.0, min_face_size * scale)
        for start in range(0, len(frames), batch):
            with self._torch.inference_mode():
                boxes, _, points = self.mtcnn.detect(frames[start:start + batch], landmarks=True)
            for b, p in zip(boxes, points):
                if b is None:
                    results.append((np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32)))
                else:
                    # facenet-pytorch returns object arrays under numpy 2: cast explicitly.
                    results.append((np.asarray(b, np.float32) / scale, np.asarray(p, np.float32) / scale))
        return results

    def detect_near(self, frame: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The cascade on the search region around ``box`` (the face's last detection): the box widened by
        ``search_region.margin`` box sides on each side, faces from ``search_region.min_face`` box sides up.
        Boxes and landmarks come back in the frame's coordinates; none when the region holds no face."""
        region = self.config["search_region"]
        height, width = frame.shape[:2]
        side = float(max(box[2] - box[0], box[3] - box[1]))
        grow = region["margin"] * side
        x0, y0 = max(0, int(box[0] - grow)), max(0, int(box[1] - grow))
        x1, y1 = min(width, int(np.ceil(box[2] + grow))), min(height, int(np.ceil(box[3] + grow)))
        min_face = self._pyramid_min_face(region["min_face"] * side)
        if x1 - x0 < min_face or y1 - y0 < min_face:  # the face left the frame
            return np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32)
        crop = np.ascontiguousarray(frame[y0:y1, x0:x1])
        (boxes, points), = self.detect_frames(crop[None], scale=self.config["scale"], min_face_size=min_face)
        offset = np.array([x0, y0], np.float32)
        return boxes + np.tile(offset, 2), points + offset

    # -- stage 2: ONet on every frame ---------------------------------------------------------------------
    def face_probability(self, frames: np.ndarray, indices: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """MTCNN's output network's face probability for ``boxes[i]`` in frame ``indices[i]``.

        The same crop and normalisation as facenet-pytorch's third stage, on one given box per frame.
        (ONet's landmarks are not used: read off a box the cascade did not produce, they carry a bias of
        ~1 px against the cascade's own, larger than the error of interpolating between keyframes.)
        Frames are indexed, not copied: a clip's frames are large.
        """
        squares = _square(boxes.astype(np.float64))
        crops = np.stack([_crop_with_border(frames[t], b, ONET_SIZE) for t, b in zip(indices, squares)])
        probabilities = []
        batch = max(64, self.config["batch_size"])
        for start in range(0, len(crops), batch):
            x = self._torch.as_tensor(crops[start:start + batch], device=self.device).permute(0, 3, 1, 2).float()
            with self._torch.inference_mode():
                _, _, prob = self.mtcnn.onet((x - 127.5) * 0.0078125)
            probabilities.append(prob[:, 1].cpu().numpy())
        return np.concatenate(probabilities).astype(np.float32)

    def _pyramid_min_face(self, pixels: float) -> float:
        """The largest minimum face size at most ``pixels`` (frame pixels) whose image pyramid is a tail of the
        whole frame's: MTCNN's scales are 12 / min_face_size x factor^k, so stepping ``min_face_size`` by
        1 / factor drops the frame's finest scales and keeps the others as they are. The region then sees the
        face at the scales the whole frame does, and the cascade's boxes and landmarks agree with the whole
        frame's (another scale set moves them by ~1 px)."""
        base = self.config["min_face_size"] / self.config["scale"]
        steps = max(0, int(np.floor(np.log(pixels / base) / -np.log(self.mtcnn.factor)))) if pixels > base else 0
        return base / self.mtcnn.factor ** steps

    def _detect_into(self, frames: np.ndarray, indices: np.ndarray,
                     found: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        """Run the cascade on ``frames[indices]``; record the followed face of each frame that has one.

        Whole frames go through the cascade in batches of ``batch_size`` (on a GPU, one batch on the device).
        With ``search_region`` set, frames go one by one instead, each near a detection (within one keyframe
        interval) searched around it only, and the whole frame only when that region holds no face (the
        track is lost): the region is a fraction of the frame and its pyramid starts at the face's own scale."""
        if len(indices) == 0:
            return
        if not self.config["search_region"]:
            previous = None
            for t, (boxes, points) in zip(indices, self.detect_frames(frames[indices], scale=self.config["scale"])):
                if len(boxes):
                    pick = _largest_or_tracked(boxes, previous)
                    found[int(t)] = (boxes[pick], points[pick])
                    previous = boxes[pick]
            return
        interval = self.config["keyframe_interval"]
        for t in (int(i) for i in indices):
            near = [u for u in found if abs(u - t) <= interval]
            anchor = found[min(near, key=lambda u: abs(u - t))][0] if near else None
            boxes, points = self.detect_near(frames[t], anchor) if anchor is not None else (np.zeros((0, 4)), None)
            if not len(boxes):
                (boxes, points), = self.detect_frames(frames[t][None], scale=self.config["scale"])
            if len(boxes):
                pick = _largest_or_tracked(boxes, anchor)
                found[t] = (boxes[pick], points[pick])

    # -- the whole track --------------------------------------------------------------------------------
    def track(self, frames: np.ndarray) -> Detections:
        """Face track of one clip: keyframe detection, interpolation, per-frame check, filling, smoothing."""
        cfg = self.config
        n = len(frames)
        keyframes = np.unique(np.r_[np.arange(0, n, cfg["keyframe_interval"]), n - 1])
        found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._detect_into(frames, keyframes, found)
        # Where a keyframe missed the face, look at every frame around it, so one bad keyframe does not
        # cost the frames on both sides of it.
        dense = [t for a, b in zip(keyframes[:-1], keyframes[1:]) if a not in found or b not in found
                 for t in range(a + 1, b)]
        self._detect_into(frames, np.array(dense, dtype=int), found)

        boxes = np.full((n, 4), np.nan)
        landmarks = np.full((n, 5, 2), np.nan)
        seen = sorted(found)
        for t in seen:
            boxes[t], landmarks[t] = found[t]
        # Frames between two detections at most one keyframe interval apart get the interpolated track.
        for a, b in zip(seen[:-1], seen[1:]):
            if 1 < b - a <= cfg["keyframe_interval"]:
                w = ((np.arange(a + 1, b) - a) / (b - a))[:, None]
                boxes[a + 1:b] = (1 - w) * boxes[a] + w * boxes[b]
                landmarks[a + 1:b] = ((1 - w) * landmarks[a].reshape(1, -1) +
                                      w * landmarks[b].reshape(1, -1)).reshape(-1, 5, 2)
        valid = ~np.isnan(boxes[:, 0])
        scores = np.where(valid, 1.0, 0.0)

        if cfg["verify_every_frame"] and valid.any():
            idx = np.flatnonzero(valid)
            scores[idx] = self.face_probability(frames, idx, boxes[idx])
            lost = idx[scores[idx] < cfg["thresholds"][2]]
            valid[lost] = False
            boxes[lost] = np.nan
            landmarks[lost] = np.nan

        if valid.mean() < cfg["min_valid_fraction"]:
            raise NoFaceError(
                f"a face was found on {valid.sum()} of {n} frames ({valid.mean():.0%}), below "
                f"detection.min_valid_fraction = {cfg['min_valid_fraction']:.0%}"
            )
        flat = np.concatenate([boxes, landmarks.reshape(n, -1)], axis=1)
        flat = fill_gaps(flat, valid, cfg["max_gap_frames"])
        flat = smooth(flat, cfg["smoothing_frames"])
        return Detections(
            boxes=flat[:, :4].astype(np.float32),
            landmarks=flat[:, 4:].reshape(n, 5, 2).astype(np.float32),
            scores=scores.astype(np.float32),
            valid=valid,
        )


def fill_gaps(values: np.ndarray, valid: np.ndarray, max_gap: int) -> np.ndarray:
    """Fill rows of ``values`` (T, D) where ``valid`` is False.

    Runs of at most ``max_gap`` invalid frames between two valid ones are linearly interpolated; longer
    runs and runs at either end hold the nearest valid row (they stay marked invalid in the mask, so a
    consumer can drop them). At least one row must be valid.
    """
    values = values.astype(np.float64).copy()
    good = np.flatnonzero(valid)
    if len(good) == 0:
        raise ValueError("fill_gaps needs at least one valid frame")
    t = np.arange(len(values))
    nearest = good[np.clip(np.searchsorted(good, t), 0, len(good) - 1)]
    before = good[np.clip(np.searchsorted(good, t, side="right") - 1, 0, len(good) - 1)]
    use_prev = np.abs(t - before) <= np.abs(nearest - t)
    nearest = np.where(use_prev, before, nearest)
    filled = values[nearest]
    # Interpolate inside short interior gaps.
    for start, stop in _runs(~valid):
        if start > 0 and stop < len(values) and stop - start <= max_gap:
            w = ((np.arange(start, stop) - (start - 1)) / (stop - (start - 1)))[:, None]
            filled[start:stop] = (1 - w) * values[start - 1] + w * values[stop]
    filled[good] = values[good]
    return filled


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in a boolean vector."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def smooth(values: np.ndarray, frames: int) -> np.ndarray:
    """Centred moving average over ``frames`` frames along axis 0 (edges padded by repetition)."""
    if frames <= 1 or len(values) < 2:
        return values
    half = frames // 2
    padded = np.pad(values, ((half, frames - 1 - half), (0, 0)), mode="edge")
    kernel = np.ones(frames) / frames
    return np.stack([np.convolve(padded[:, d], kernel, mode="valid") for d in range(values.shape[1])], axis=1)


# -- alignment ---------------------------------------------------------------------------------------------
def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    Umeyama (1991): with centred point sets X, Y and the SVD U S V^T of Y^T X / n,
    R = U diag(1, det(U V^T)) V^T, s = trace(S D) / var(X), t = mean(Y) - s R mean(X). Returns 2x3.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ d @ vt
    scale = np.trace(np.diag(sig) @ d) / xs.var(0).sum()
    translation = mu_d - scale * rotation @ mu_s
    return np.hstack([scale * rotation, translation[:, None]])


def alignment_matrix(landmarks: np.ndarray, mode: str, size: int) -> np.ndarray:
    """The 2x3 matrix that maps a frame onto the ``size`` x ``size`` aligned crop.

    ``five_point``: similarity of all five landmarks onto the ArcFace template scaled to ``size``.
    ``rigid``: the same template, fitted on the eyes and the nose tip only. OpenFace aligns on its rigid
    landmarks (eye corners, nose, not the mouth or brows) for the same reason: the mouth corners move with
    the expression, and a fit that follows them shifts and scales the whole crop as the face moves, which
    buries the expression's own motion under motion of the crop.
    ``two_eye``: the similarity that puts the two eyes on TWO_EYE_TEMPLATE (exact for two points).
    ``eye_box``: no rotation; the square that holds :func:`eye_box` centred, scaled to ``size`` (the
    rectangle's sides are padded with zeros by :func:`align`, not filled with the frame).
    """
    if mode not in ALIGNMENT_MODES:
        raise ValueError(f"unknown alignment mode '{mode}' (choose from {', '.join(ALIGNMENT_MODES)})")
    if mode == "eye_box":
        x0, y0, x1, y1 = eye_box(landmarks)
        side = max(x1 - x0, y1 - y0)
        scale = size / side
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        return np.array([[scale, 0.0, size / 2 - scale * cx], [0.0, scale, size / 2 - scale * cy]])
    if mode == "two_eye":
        return similarity_transform(landmarks[:2], TWO_EYE_TEMPLATE * size)
    points = slice(0, 5) if mode == "five_point" else slice(0, 3)
    return similarity_transform(landmarks[points], FIVE_POINT_TEMPLATE_112[points] * (size / 112.0))


def alignment_landmarks(landmarks: np.ndarray, valid: np.ndarray, reference: str) -> np.ndarray:
    """The (T, 5, 2) landmarks each frame is aligned on.

    ``frame``: the frame's own (smoothed) landmarks, so the crop follows every head movement.
    ``clip_median``: the per-coordinate median over the clip's valid frames (all frames when none is valid),
    on every frame: one transform for the whole clip. MTCNN regresses its landmarks from the whole face, and
    they drift with the expression itself: on the demo's clips the eye-to-nose distance changes by up to 30 %
    at the apex (the mouth opening in surprise pulls the nose point down, though the nose stays put; the
    nose wrinkler lifts it over twice as far as the nose rises). Fitted on each frame, that drift zooms and
    shifts the crop with the expression, a motion larger than the face's own, which optical flow then
    records and which differs between identities. A seated subject's head moves a few pixels in a clip of a
    few seconds; that motion stays in the crop.
    """
    if reference not in ALIGNMENT_REFERENCES:
        raise ValueError(f"unknown alignment reference '{reference}' (choose from {', '.join(ALIGNMENT_REFERENCES)})")
    if reference == "frame":
        return landmarks
    valid = np.asarray(valid, bool)
    median = np.median(landmarks[valid] if valid.any() else landmarks, axis=0)
    return np.broadcast_to(median, landmarks.shape).astype(landmarks.dtype)


def eye_box(landmarks: np.ndarray, box: Mapping[str, float] = EYE_BOX) -> tuple[float, float, float, float]:
    """The face rectangle (x0, y0, x1, y1) of STC-NLSTM's preprocessing, from the two eyes only: its sides
    are ``box``'s multiples of the eye distance, so every face of every frame has the same size in eye
    distances whatever its distance to the camera (:data:`EYE_BOX`)."""
    left, right = np.asarray(landmarks[0], np.float64), np.asarray(landmarks[1], np.float64)
    distance = float(np.linalg.norm(right - left))
    cx, cy = (left + right) / 2
    half = box["width"] * distance / 2
    return cx - half, cy - box["above"] * distance, cx + half, cy + box["below"] * distance


def align(frames: np.ndarray, landmarks: np.ndarray, mode: str, size: int) -> np.ndarray:
    """Aligned face crops (T, size, size, 3) uint8; outside the frame is black (zero padding), and so is
    the square's part outside the eye box (``eye_box``: the paper's zero padding of a rectangle)."""
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, (frame, points) in enumerate(zip(frames, landmarks)):
        matrix = alignment_matrix(points, mode, size)
        out[i] = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if mode == "eye_box":
            x0, y0, x1, y1 = eye_box(points)
            (left, top), (right, bottom) = (matrix[:, :2] @ np.array([[x0, x1], [y0, y1]]) + matrix[:, 2:]).T
            columns, rows = np.arange(size) + 0.5, np.arange(size)[:, None] + 0.5
            out[i][~((columns >= left) & (columns <= right) & (rows >= top) & (rows <= bottom))] = 0
    return out
