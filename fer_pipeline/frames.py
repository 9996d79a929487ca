"""Single frames and fixed-length sequences of whole clips, read from a store: the datasets of the networks
that see a clip frame by frame (VGG-Face, ResNet-10) or as one sequence (C3D, the BiLSTM).

Next to fer_pipeline.windows (the windows of the ablation study), and like it, studies read only from here:
no video is decoded during training. A clip's rows are its frames where a face was seen (the store's
``valid`` mask; Xu et al. keep "a list of frames containing human faces"): the aligned faces (``rgb``) of the
preset's store, or the per-frame features a frame network wrote into a store of its own (``features``,
whose rows are already those frames). Frames are resized at load to the size each network wants (the store
keeps the preset's one aligned size).

Sequences: ``length`` rows of a clip, every ``stride``-th (1: consecutive, as Xu et al.; a demo can cover
a whole clip with fewer steps), from a random start in training and from the centre otherwise. A clip
shorter than the sequence's span is looped (row n-1 is followed by row 0), so every position holds a real
face and the motion goes on instead of freezing on a repeated last frame; on the demo and in AFEW the
expression returns towards its start by the clip's end, so the seam is mild.

STC-NLSTM's inputs: :class:`NormalisedSequenceDataset` (each clip as one sequence of a fixed length, uniform
sampling or the last frame repeated, with the paper's x14 augmentation made on the fly) and
:class:`ActionUnitSequenceDataset` (BP4D: sequences ending on each AU-coded frame, multi-label targets).

Every dataset here reads a clip's rows through :class:`ClipRows`: by default directly
(fer_pipeline.store.ClipReader, the same values as zarr, bit for bit), ``direct=False`` through zarr.

Augmentation in training, as Xu et al. ("we flip and rotate the input images"): a horizontal flip with
probability 1/2 and a rotation by an angle drawn uniformly from +-``rotate_deg``, the same for every frame of
a sequence. Random draws use torch's generator, which fer_pipeline.train seeds.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .store import ClipReader, StoreError, clip_reader, read_field
from .windows import evenly_spaced, resize


def sequence_indices(n: int, length: int, start: int, stride: int = 1) -> np.ndarray:
    """Positions of ``length`` rows every ``stride`` rows from ``start``, looping past row n-1 back to row 0."""
    return (start + stride * np.arange(length)) % n


def sequence_start(n: int, length: int, random: bool, stride: int = 1) -> int:
    """Where a clip's sequence starts: drawn uniformly when ``random`` (training), else centred; 0 for a clip
    no longer than the sequence's span (it loops)."""
    span = (length - 1) * stride + 1
    if n <= span:
        return 0
    if random:
        return int(torch.randint(0, n - span + 1, (1,)))
    return (n - span) // 2


def augment(frames: np.ndarray, flip: bool, rotate_deg: float) -> np.ndarray:
    """One random flip and rotation applied to all (N, H, W, C) frames alike (see the module docstring)."""
    if flip and bool(torch.rand(()) < 0.5):
        frames = frames[:, :, ::-1]
    if rotate_deg > 0:
        angle = float((torch.rand(()) * 2 - 1) * rotate_deg)
        height, width = frames.shape[1:3]
        matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)
        frames = np.stack([cv2.warpAffine(np.ascontiguousarray(f), matrix, (width, height),
                                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                           for f in frames]).reshape(frames.shape)
    return np.ascontiguousarray(frames)


class ClipRows:
    """The rows of one array (``rgb`` or ``features``) of each clip in ``clips`` (columns ``store``,
    ``clip_id``), restricted to valid frames when the clip has a ``valid`` mask. ``cache`` keeps each clip's
    rows in memory once read, at the stored size (resizing happens per item). ``direct`` (default) reads
    through :class:`fer_pipeline.store.ClipReader` (the values ``read_field`` gives, bit for bit, without
    zarr's machinery per read: docs/performance.md); False reads through zarr (``read_field``), as
    :class:`fer_pipeline.windows.WindowDataset` does."""

    def __init__(self, clips: pd.DataFrame, array: str, cache: bool, direct: bool = True):
        self.clips, self.array, self.cache, self.direct = clips.reset_index(drop=True), array, cache, direct
        self._keys = [(str(s), str(c)) for s, c in zip(self.clips["store"], self.clips["clip_id"])]
        self._readers: dict[int, ClipReader] = {}  # opened per worker process, never pickled open
        self._cached: dict[int, np.ndarray] = {}
        self.rows = [self._valid_rows(clip) for clip in range(len(self.clips))]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_readers"], state["_cached"] = {}, {}
        return state

    def _reader(self, clip: int) -> ClipReader:
        if clip not in self._readers:
            self._readers[clip] = clip_reader(*self._keys[clip])
        return self._readers[clip]

    def _field(self, clip: int, name: str, index=None):
        """Field ``name`` (rows ``index``, or all) of clip ``clip``: directly, or through zarr."""
        if self.direct:
            return self._reader(clip).field(name, index)
        return read_field(self._reader(clip).group, name, index)

    def _valid_rows(self, clip: int) -> np.ndarray:
        reader = self._reader(clip)
        shape = reader.shape(self.array) if self.direct else (
            tuple(reader.group[self.array].shape) if self.array in reader.group else None)
        if shape is None:
            raise StoreError(f"{self._keys[clip][0]}: clip '{self._keys[clip][1]}' has no array '{self.array}'")
        valid = self._field(clip, "valid")  # an array, or inline in the clip's zarr.json (store layout 2)
        if valid is None:
            return np.arange(shape[0])
        rows = np.flatnonzero(valid[:shape[0]])
        if len(rows) == 0:
            raise ValueError(f"{self._keys[clip][0]}: clip '{self._keys[clip][1]}' has no frame with a face")
        return rows

    def __len__(self) -> int:
        return len(self.clips)

    def count(self, clip: int) -> int:
        """How many rows clip ``clip`` has."""
        return len(self.rows[clip])

    def read(self, clip: int, positions: np.ndarray) -> np.ndarray:
        """Rows at ``positions`` (0 .. count-1, repeats allowed) of clip ``clip``."""
        if self.cache:
            if clip not in self._cached:  # the valid rows, by whole chunks (sharded arrays)
                self._cached[clip] = self._field(clip, self.array, self.rows[clip])
            return self._cached[clip][positions]
        return self._field(clip, self.array, self.rows[clip][np.asarray(positions, np.int64)])


def _labels(clips: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    unknown = sorted(set(clips["label"]) - set(classes))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {list(classes)}")
    return np.array([list(classes).index(label) for label in clips["label"]], np.int64)


def _rgb_tensor(frames: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) values in 0..255 -> (N, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames, np.float32)).permute(0, 3, 1, 2) / 255.0


class FrameDataset(Dataset):
    """Frames of the selected clips, one item per frame: ``rgb`` (3, S, S) float in [0, 1], ``label`` (class
    index), ``clip`` (index into ``self.clips``). Every frame labelled with its video's label, as Xu et al.
    fine-tune. ``frames_per_clip`` keeps that many evenly spaced frames of each clip (None: all); ``items``
    holds (clip, frame) rows, so fer_pipeline.train can draw a few frames per clip per epoch.
    ``augmentation`` (``{flip, rotate_deg}``) applies in training only; pass None otherwise."""

    def __init__(self, clips: pd.DataFrame, classes: Sequence[str], size: int, frames_per_clip: int | None = None,
                 augmentation: Mapping[str, Any] | None = None, cache: bool = True, direct: bool = True):
        self.reader = ClipRows(clips, "rgb", cache, direct)
        self.clips, self.classes = self.reader.clips, list(classes)
        self.labels = _labels(self.clips, self.classes)
        self.size, self.augmentation = size, augmentation
        self.items = np.array([(clip, position) for clip in range(len(self.reader))
                               for position in evenly_spaced(self.reader.count(clip), frames_per_clip)],
                              dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clip, position = (int(v) for v in self.items[index])
        frame = self.reader.read(clip, np.array([position]))
        if self.augmentation:
            frame = augment(frame, self.augmentation["flip"], self.augmentation["rotate_deg"])
        return {"rgb": _rgb_tensor(resize(frame, self.size, is_flow=False))[0],
                "label": torch.tensor(self.labels[clip]), "clip": torch.tensor(clip)}

    def clip_frames(self, clip: int) -> torch.Tensor:
        """Every item of clip ``clip`` at once, (n, 3, S, S) without augmentation: for reading features out."""
        positions = self.items[self.items[:, 0] == clip, 1]
        return _rgb_tensor(resize(self.reader.read(clip, positions), self.size, is_flow=False))


class SequenceDataset(Dataset):
    """One ``length``-row sequence per clip, every ``stride``-th row (see the module docstring for starts
    and looping).

    ``array="rgb"``: aligned faces resized to (height, width) = ``resize``, then cut to ``crop`` x ``crop``
    (a random crop in training, the centre otherwise), as ``rgb`` (length, 3, crop, crop) in [0, 1];
    ``array="features"``: a frame network's features, as ``features`` (length, D). ``train`` draws random
    starts (and crops, and ``augmentation`` for faces); items also hold ``label`` and ``clip``, and
    ``items`` has one (clip, 0) row per clip."""

    def __init__(self, clips: pd.DataFrame, classes: Sequence[str], length: int, stride: int = 1,
                 array: str = "rgb", resize_to: Sequence[int] | None = None, crop: int | None = None,
                 train: bool = False, augmentation: Mapping[str, Any] | None = None, cache: bool = True,
                 direct: bool = True):
        if array == "rgb" and (resize_to is None or crop is None or crop > min(resize_to)):
            raise ValueError(f"face sequences need resize_to (height, width) and a crop no larger: got "
                             f"{resize_to} and {crop}")
        self.reader = ClipRows(clips, array, cache, direct)
        self.clips, self.classes = self.reader.clips, list(classes)
        self.labels = _labels(self.clips, self.classes)
        self.length, self.stride, self.array, self.resize_to, self.crop = length, stride, array, resize_to, crop
        self.train, self.augmentation = train, augmentation
        self.items = np.stack([np.arange(len(self.reader)), np.zeros(len(self.reader), np.int64)], axis=1)

    def __len__(self) -> int:
        return len(self.reader)

    def _crop(self, frames: np.ndarray) -> np.ndarray:
        height, width = frames.shape[1:3]
        if self.train:
            top = int(torch.randint(0, height - self.crop + 1, (1,)))
            left = int(torch.randint(0, width - self.crop + 1, (1,)))
        else:
            top, left = (height - self.crop) // 2, (width - self.crop) // 2
        return frames[:, top:top + self.crop, left:left + self.crop]

    def start(self, clip: int) -> int:
        """The row position clip ``clip``'s sequence starts at (random in training)."""
        return sequence_start(self.reader.count(clip), self.length, self.train, self.stride)

    def __getitem__(self, clip: int) -> dict[str, torch.Tensor]:
        n = self.reader.count(clip)
        rows = self.reader.read(clip, sequence_indices(n, self.length, self.start(clip), self.stride))
        item = {"label": torch.tensor(self.labels[clip]), "clip": torch.tensor(clip)}
        if self.array == "features":
            item["features"] = torch.from_numpy(np.ascontiguousarray(rows, np.float32))
            return item
        if self.train and self.augmentation:
            rows = augment(rows, self.augmentation["flip"], self.augmentation["rotate_deg"])
        item["rgb"] = _rgb_tensor(self._crop(resize(rows, self.resize_to, is_flow=False)))
        return item


def normalised_positions(n: int, length: int) -> np.ndarray:
    """The ``length`` row positions of a sequence of ``n`` rows normalised in length as STC-NLSTM (Sec.
    4.1): a longer sequence sampled uniformly from its first row to its last (the neutral onset and the apex
    of CK+ and Oulu-CASIA are both kept), a shorter one followed by its last row repeated."""
    if n < 1:
        raise ValueError("a sequence needs at least one row")
    if n >= length:
        return np.linspace(0, n - 1, length).round().astype(np.int64)
    return np.concatenate([np.arange(n), np.full(length - n, n - 1)]).astype(np.int64)


def augmentations(flip: bool, angles: Sequence[float]) -> list[tuple[bool, float]]:
    """Every (flip, angle) of STC-NLSTM's augmentation: the sequence and its mirror image, each unrotated
    and rotated by +-each of ``angles`` degrees: (1 + 1) x (1 + 2 x 3) = 14 copies for the paper's 2.5, 5,
    7.5 ("a new dataset which is 14 times as big as the original one")."""
    turns = [0.0] + [sign * float(a) for a in angles for sign in (-1, 1)]
    return [(mirror, angle) for mirror in ((False, True) if flip else (False,)) for angle in turns]


def rotate(frames: np.ndarray, angle: float) -> np.ndarray:
    """(N, H, W, C) frames rotated by ``angle`` degrees about their centre; the corners that come in are
    black, as the zero-padded crops they rotate."""
    if angle == 0:
        return frames
    height, width = frames.shape[1:3]
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)
    return np.stack([cv2.warpAffine(np.ascontiguousarray(f), matrix, (width, height), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                     for f in frames]).reshape(frames.shape)


def augmented_copy(frames: np.ndarray, size: int, copy: tuple[bool, float]) -> np.ndarray:
    """(N, H, W, 3) frames resized to ``size`` and made the augmented ``copy`` (mirror, angle) of
    :func:`augmentations`: a contiguous array of values 0..255."""
    mirror, angle = copy
    frames = resize(frames, size, is_flow=False)
    if mirror:
        frames = frames[:, :, ::-1]
    return np.ascontiguousarray(rotate(frames, angle))


class NormalisedSequenceDataset(Dataset):
    """STC-NLSTM's input: each clip's face frames (valid rows of ``rgb``) as one sequence of ``length`` steps
    (:func:`normalised_positions`), resized to ``size``, as ``rgb`` (length, 3, size, size) in [0, 1].

    ``augmentation`` (``{flip, angles}``; training only, None otherwise) makes the paper's augmented
    dataset on the fly: each clip is there once per (flip, angle) of :func:`augmentations`, so an epoch sees
    all 14 copies of every sequence and none is stored. ``items`` holds (clip, copy) rows."""

    def __init__(self, clips: pd.DataFrame, classes: Sequence[str], length: int, size: int,
                 augmentation: Mapping[str, Any] | None = None, cache: bool = True, direct: bool = True):
        self.reader = ClipRows(clips, "rgb", cache, direct)
        self.clips, self.classes = self.reader.clips, list(classes)
        self.labels = _labels(self.clips, self.classes)
        self.length, self.size = length, size
        self.copies = (augmentations(augmentation["flip"], augmentation["angles"]) if augmentation
                       else [(False, 0.0)])
        self.items = np.array([(clip, copy) for clip in range(len(self.reader)) for copy in range(len(self.copies))],
                              dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.items)

    def sequence(self, clip: int, copy: int = 0) -> np.ndarray:
        """The (length, size, size, 3) sequence of clip ``clip`` in augmented copy ``copy``."""
        rows = self.reader.read(clip, normalised_positions(self.reader.count(clip), self.length))
        return augmented_copy(rows, self.size, self.copies[copy])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clip, copy = (int(v) for v in self.items[index])
        return {"rgb": _rgb_tensor(self.sequence(clip, copy)), "label": torch.tensor(self.labels[clip]),
                "clip": torch.tensor(clip)}


class ActionUnitSequenceDataset(Dataset):
    """STC-NLSTM on BP4D: sequences of ``length`` consecutive face frames, each labelled with the action units
    of its last frame, as ``rgb`` (length, 3, size, size) in [0, 1] and ``label`` (K,) floats: 1 present, 0
    absent, NaN unknown (BP4D's 9, and the frames outside its coded segment), which the masked loss and the
    F1 leave out (fer_pipeline.train.masked_bce).

    ``frame_labels`` is the manifest's per-frame table (columns ``clip_id``, ``frame``, ``AU<k>``; one row per
    frame in frame order, as the bp4d adapter writes it); ``units`` the AU columns read. A sequence ends on
    every ``stride``-th face frame that has a known label; it reaches back over the face frames before it and
    repeats the clip's first face frame where it would start before it. ``augmentation`` as
    :class:`NormalisedSequenceDataset` (training only). ``items`` holds (clip, end, copy) rows; ``frames``
    the image number each item ends on."""

    def __init__(self, clips: pd.DataFrame, frame_labels: pd.DataFrame, units: Sequence[str], length: int,
                 size: int, stride: int = 1, augmentation: Mapping[str, Any] | None = None, cache: bool = True,
                 direct: bool = True):
        self.reader = ClipRows(clips, "rgb", cache, direct)
        self.clips, self.units, self.length, self.size = self.reader.clips, list(units), length, size
        missing = sorted(set(self.units) - set(frame_labels.columns))
        if missing:
            raise ValueError(f"the frame labels have no column {missing} (they have "
                             f"{[c for c in frame_labels.columns if c.startswith('AU')]})")
        self.copies = (augmentations(augmentation["flip"], augmentation["angles"]) if augmentation
                       else [(False, 0.0)])
        by_clip = {clip_id: table for clip_id, table in frame_labels.groupby("clip_id", sort=False)}
        self.targets, self.numbers, items = [], [], []
        for clip, clip_id in enumerate(self.clips["clip_id"]):
            table = by_clip.get(clip_id)
            n_frames = int(self.clips.iloc[clip]["n_frames"])
            if table is None or len(table) != n_frames:
                raise ValueError(f"clip '{clip_id}': {0 if table is None else len(table)} rows of frame labels for "
                                 f"{n_frames} stored frames (a dataset read with sample_fps has no per-frame labels)")
            rows = self.reader.rows[clip]  # the face frames' positions in the clip
            targets = table[self.units].to_numpy(np.float32)[rows]
            self.targets.append(targets)
            self.numbers.append(table["frame"].to_numpy()[rows])
            ends = np.flatnonzero(~np.isnan(targets).all(axis=1))
            ends = ends[ends % stride == 0] if stride > 1 else ends
            items += [(clip, end, copy) for end in ends for copy in range(len(self.copies))]
        self.items = np.array(items, dtype=np.int64).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self.items)

    def frame_number(self, index: int) -> int:
        """The image number item ``index`` ends on (BP4D's frame number)."""
        clip, end, _ = (int(v) for v in self.items[index])
        return int(self.numbers[clip][end])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clip, end, copy = (int(v) for v in self.items[index])
        positions = np.clip(np.arange(end - self.length + 1, end + 1), 0, None)
        rows = augmented_copy(self.reader.read(clip, positions), self.size, self.copies[copy])
        return {"rgb": _rgb_tensor(rows),
                "label": torch.from_numpy(self.targets[clip][end].copy()), "clip": torch.tensor(clip)}
