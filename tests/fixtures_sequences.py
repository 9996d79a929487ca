"""Tiny image-sequence datasets in their real on-disk layouts, for tests: CK+ and Oulu-CASIA.

``make_ckplus_tree`` builds CK+ as distributed (``cohn-kanade-images/S005/001/S005_001_00000001.png``,
``Emotion/S005/001/S005_001_00000003_emotion.txt``) and ``make_oulu_tree`` Oulu-CASIA
(``OriginalImg/VL/Strong/P001/Anger/000.jpeg``), with real 32x24 PNG/JPEG frames written by OpenCV and the
archives' known irregularities (DATASETS.md §3 and §4), and say which sequences an adapter should list,
which label files it reads and which files or folders it should skip, with a fragment of each reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fer_pipeline import labels
from fixtures import ExpectedClip

SIZE = (32, 24)  # width, height of every frame


@dataclass
class SequenceTree:
    """A built tree of frame folders. ``clips`` maps a sequence folder (relative to ``root``) to the clip it
    should become and ``frames`` to its number of frames; ``read`` holds the label files read for listed
    clips; ``skipped`` maps each file or folder that should be skipped (a folder with everything in it) to a
    fragment of the expected reason."""
    root: Path
    fps: float
    clips: dict[str, ExpectedClip] = field(default_factory=dict)
    frames: dict[str, int] = field(default_factory=dict)
    raw_labels: dict[str, str] = field(default_factory=dict)
    read: set[str] = field(default_factory=set)
    skipped: dict[str, str] = field(default_factory=dict)

    def files(self) -> list[str]:
        """Every file under the root, relative, sorted."""
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())

    def records(self) -> list[dict]:
        """The records the adapter should return, in its order (by clip id)."""
        return [{"clip_id": clip.clip_id, "subject": clip.subject, "label": clip.label,
                 "raw_label": self.raw_labels[relative], "path": str(self.root.resolve() / relative),
                 "n_frames": self.frames[relative], "fps": self.fps, "width": SIZE[0], "height": SIZE[1]}
                for relative, clip in sorted(self.clips.items(), key=lambda item: item[1].clip_id)]


def _frames(folder: Path, names: list[str], rng: np.random.Generator, colour: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    width, height = SIZE
    for name in names:
        shape = (height, width, 3) if colour else (height, width)
        assert cv2.imwrite(str(folder / name), rng.integers(0, 256, shape, dtype=np.uint8))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# CK+: (subject, sequence, frames, code) of the labelled, listed sequences; S010's frames are colour.
CKPLUS_LISTED = [("S005", "001", 3, 1), ("S010", "001", 4, 2), ("S011", "001", 3, 3), ("S022", "001", 4, 4),
                 ("S026", "001", 3, 5), ("S032", "001", 4, 6), ("S034", "001", 3, 7), ("S037", "001", 4, 1),
                 ("S042", "001", 3, 5), ("S501", "001", 4, 2), ("S999", "001", 3, 7)]


def make_ckplus_tree(root: Path, labels_folder: str = "Emotion", seed: int = 0) -> SequenceTree:
    """Build a CK+ tree under ``root`` with its labels in ``labels_folder`` (``Emotion`` or the zip's other
    extraction ``Emotion_labels/Emotion``): the 11 labelled sequences of :data:`CKPLUS_LISTED` (non-contiguous
    subject ids S005 ... S042, S501, S999; every code 1-7, contempt among them), and the archive's quirks:

    - ``.DS_Store`` in a subject folder, in a sequence folder (beside the frames) and in the labels' tree;
      a non-image file in a sequence folder (skipped; the sequence is listed with its frames);
    - S005/002: an empty Emotion folder; S501/002: no Emotion folder (both skipped, unlabelled);
    - S501/003: a labelled sequence folder with no image (skipped, and its label file with it);
    - S999/002: a label file that does not parse; S999/003: code 0; S999/004: two label files (skipped, with
      their sequences);
    - ``FACS/`` and ``Landmarks/`` (one skipped row each), the distribution's README and paper at the root,
      a stray file among the subject folders (skipped).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    tree = SequenceTree(root=root, fps=30.0)
    images, emotion = Path("cohn-kanade-images"), Path(labels_folder)

    def sequence(subject: str, number: str, n_frames: int, colour: bool = False) -> Path:
        relative = images / subject / number
        _frames(root / relative, [f"{subject}_{number}_{i:08d}.png" for i in range(1, n_frames + 1)], rng, colour)
        return relative

    def label(subject: str, number: str, n_frames: int, text: str) -> Path:
        relative = emotion / subject / number / f"{subject}_{number}_{n_frames:08d}_emotion.txt"
        _write(root / relative, text)
        return relative

    for subject, number, n_frames, code in CKPLUS_LISTED:
        relative = str(sequence(subject, number, n_frames, colour=subject == "S010"))
        tree.read.add(str(label(subject, number, n_frames, f"   {code:.7e}\n")))
        tree.clips[relative] = ExpectedClip(f"{subject}_{number}", subject, labels.CKPLUS_CODES[code])
        tree.frames[relative] = n_frames
        tree.raw_labels[relative] = str(code)

    for relative in (images / "S005" / ".DS_Store", images / "S005" / "001" / ".DS_Store",
                     emotion / "S999" / ".DS_Store"):
        _write(root / relative, "\0\0\0\1Bud1")
        tree.skipped[str(relative)] = "system file"
    _write(root / images / "S005" / "001" / "S005_001_notes.txt", "peak at frame 3\n")
    tree.skipped[str(images / "S005" / "001" / "S005_001_notes.txt")] = "not a frame of the sequence"

    tree.skipped[str(sequence("S005", "002", 3))] = f"unlabelled: {emotion / 'S005' / '002'} holds no"
    (root / emotion / "S005" / "002").mkdir(parents=True)
    tree.skipped[str(sequence("S501", "002", 3))] = f"unlabelled: no {emotion / 'S501' / '002'} folder"

    empty = images / "S501" / "003"
    _write(root / empty / ".DS_Store", "\0\0\0\1Bud1")
    tree.skipped[str(empty)] = "no image file"
    tree.skipped[str(label("S501", "003", 3, "   5.0000000e+00\n"))] = "labels no listed sequence"

    broken = label("S999", "002", 3, "n/a\n")
    tree.skipped[str(sequence("S999", "002", 3))] = f"unlabelled: its label file {broken} does not parse"
    tree.skipped[str(broken)] = "label file does not parse as a number ('n/a')"
    neutral = label("S999", "003", 3, "   0.0000000e+00\n")
    tree.skipped[str(sequence("S999", "003", 3))] = f"unlabelled: its label file {neutral} holds code 0"
    tree.skipped[str(neutral)] = "holds code 0, not one of the expression codes 1-7"
    tree.skipped[str(sequence("S999", "004", 4))] = f"unlabelled: {emotion / 'S999' / '004'} holds 2 label files"
    for n_frames in (3, 4):
        tree.skipped[str(label("S999", "004", n_frames, "   6.0000000e+00\n"))] = "one of 2 label files"

    for folder, name, reason in (("FACS", "S005_001_00000003_facs.txt", "FACS action-unit codes: not read"),
                                 ("Landmarks", "S005_001_00000001_landmarks.txt", "AAM landmarks")):
        _write(root / folder / "S005" / "001" / name, "   1.0000000e+00   0.0000000e+00\n")
        tree.skipped[folder] = reason
    for name in ("ReadMeCohnKanadeDatabase_website.txt", "CVPR2010_CK.pdf"):
        _write(root / name, "The Extended Cohn-Kanade (CK+) database distribution\n")
        tree.skipped[name] = "not part of the CK+ layout"
    _write(root / images / "README.txt", "593 sequences\n")
    tree.skipped[str(images / "README.txt")] = "not a subject (S005) folder"
    return tree


OULU_SUBJECTS = [f"P{number:03d}" for number in range(1, 11)]
OULU_FOLDERS = ("Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")  # as shipped


def make_oulu_tree(root: Path, nested: bool = False, seed: int = 0) -> SequenceTree:
    """Build an Oulu-CASIA tree under ``root``: ``OriginalImg/VL/Strong/`` with P001 ... P010, six emotion
    folders each of 3 or 4 frames ``000.jpeg`` ..., and the archive's quirks (with ``nested``, ``OriginalImg``
    lies in the archive's folder ``B_OriginalImg`` one level down, beside a stray file):

    - the other modality and illuminations (``VL/Weak``, ``VL/Dark``, ``NI/Strong``, ``NI/Weak``) hold a
      sequence each: one skipped row per unused folder (``NI`` once); ``NI/Weak/P001/Anger`` has 5 frames;
    - P002/Surprise's frames are named ``028.jpeg`` ... ``030.jpeg`` (the renamed edition: no ``000.jpeg``);
    - ``.DS_Store`` in a subject folder and among P001/Anger's frames (skipped; the frames are still 3);
    - P003/Neutral: a folder that is not one of the six (skipped); P004/Fear: no image (skipped);
      P005/Happiness: a text file among its frames (skipped); ``OriginalImg/list.txt``, a ``readme.txt`` among
      the subject folders, a ``README.txt`` and a ``Preprocess Img`` folder beside (the folder holding)
      ``OriginalImg`` (skipped).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    tree = SequenceTree(root=root, fps=25.0)
    holder = Path("B_OriginalImg") if nested else Path(".")
    originals = holder / "OriginalImg"
    strong = originals / "VL" / "Strong"
    for s, subject in enumerate(OULU_SUBJECTS):
        for e, (folder, label) in enumerate(zip(OULU_FOLDERS, labels.OULU_CLASSES)):
            relative = strong / subject / folder
            if (subject, folder) == ("P004", "Fear"):
                _write(root / relative / ".DS_Store", "\0\0\0\1Bud1")
                tree.skipped[str(relative)] = "no image file"
                continue
            n_frames = 3 + (s + e) % 2
            numbers = range(28, 28 + n_frames) if (subject, folder) == ("P002", "Surprise") else range(n_frames)
            _frames(root / relative, [f"{number:03d}.jpeg" for number in numbers], rng, colour=True)
            tree.clips[str(relative)] = ExpectedClip(f"{subject}_{label}", subject, label)
            tree.frames[str(relative)] = n_frames
            tree.raw_labels[str(relative)] = folder

    for relative in (strong / "P001" / ".DS_Store", strong / "P001" / "Anger" / ".DS_Store",
                     originals / "Thumbs.db"):
        _write(root / relative, "\0\0\0\1Bud1")
        tree.skipped[str(relative)] = "system file"
    _frames(root / strong / "P003" / "Neutral", ["000.jpeg", "001.jpeg"], rng, colour=True)
    tree.skipped[str(strong / "P003" / "Neutral")] = "not one of the six emotion folders"
    _write(root / strong / "P005" / "Happiness" / "list.txt", "000.jpeg\n001.jpeg\n")
    tree.skipped[str(strong / "P005" / "Happiness" / "list.txt")] = "not a frame of the sequence"
    _write(root / strong / "readme.txt", "80 subjects\n")
    tree.skipped[str(strong / "readme.txt")] = "not a subject folder (P001)"
    _write(root / originals / "list.txt", "VL NI\n")
    tree.skipped[str(originals / "list.txt")] = "not a modality folder (VL, NI)"

    for modality, illumination, n_frames in (("VL", "Weak", 3), ("VL", "Dark", 3), ("NI", "Strong", 4),
                                             ("NI", "Weak", 5)):
        _frames(root / originals / modality / illumination / "P001" / "Anger",
                [f"{number:03d}.jpeg" for number in range(n_frames)], rng)
    tree.skipped[str(originals / "VL" / "Weak")] = "illumination Weak: not read"
    tree.skipped[str(originals / "VL" / "Dark")] = "illumination Dark: not read"
    tree.skipped[str(originals / "NI")] = "modality NI: not read"

    _write(root / "README.txt", "Oulu-CASIA NIR&VIS facial expression database\n")
    tree.skipped["README.txt"] = "not part of the Oulu-CASIA layout"
    _frames(root / "Preprocess Img" / "VL" / "P001" / "Anger", ["000.jpeg"], rng)
    tree.skipped["Preprocess Img"] = "not part of the Oulu-CASIA layout"
    if nested:
        _write(root / holder / "license.txt", "research use only\n")
        tree.skipped[str(holder / "license.txt")] = "not part of the Oulu-CASIA layout"
    return tree


def skipped_reasons(tree: SequenceTree, skipped: list[dict]) -> dict[str, str]:
    """Each skipped row's reason by its path relative to the tree's root."""
    root = tree.root.resolve()
    return {str(Path(entry["path"]).relative_to(root)): entry["reason"] for entry in skipped}


def accounted(tree: SequenceTree, records: list[dict], skipped: list[dict]) -> dict[str, str]:
    """How each file under the tree's root is accounted for by an adapter's output: ``frame`` (in a listed
    sequence folder), ``read`` (a label file of a listed sequence), ``skipped`` (a skipped file) or
    ``skipped folder`` (inside one); a file in none of them is absent from the result."""
    root = tree.root.resolve()
    listed = {Path(record["path"]).relative_to(root) for record in records}
    dropped = {Path(entry["path"]).relative_to(root) for entry in skipped}
    how = {}
    for relative in map(Path, tree.files()):
        if relative in dropped:
            how[str(relative)] = "skipped"
        elif any(parent in dropped for parent in relative.parents):
            how[str(relative)] = "skipped folder"
        elif relative.parent in listed:
            how[str(relative)] = "frame"
        elif str(relative) in tree.read:
            how[str(relative)] = "read"
    return how
