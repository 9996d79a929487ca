"""Tiny datasets in their real on-disk layouts, for tests: import from here, or use the fixtures in conftest.py.

``make_enterface_tree`` builds eNTERFACE'05 as distributed (``subject N/<emotion>/sentence M/*.avi``) and
``make_afew_tree`` AFEW 7.0 (``Train_AFEW/<Emotion>/*.avi``, ``Val_AFEW/...``), with real, tiny AVIs and the
archives' known irregularities (the project notes, DATASETS.md §1 and §2), and say which files an adapter
should list and which it should skip.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer_pipeline import labels, video


@dataclass(frozen=True)
class ExpectedClip:
    clip_id: str
    subject: str
    label: str
    split: str = ""  # the dataset's own partition, where it ships one (AFEW)


@dataclass
class DatasetTree:
    """A built tree: ``clips`` maps a file's path relative to ``root`` to the clip it should become;
    ``skipped`` maps each file that should be skipped to a fragment of the expected reason."""
    root: Path
    clips: dict[str, ExpectedClip] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def path_of(self, clip_id: str) -> str:
        """The relative path of the file expected to become ``clip_id``."""
        return next(relative for relative, clip in self.clips.items() if clip.clip_id == clip_id)

    def files(self) -> list[str]:
        """Every file under the root, relative, sorted."""
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())


def enterface_config(root: Path, groups: int = 5, dataset: str = "enterface") -> dict:
    """A minimal config holding one eNTERFACE'05 dataset at ``root`` under ``datasets.<dataset>``."""
    return {"seed": 0,
            "datasets": {dataset: {"adapter": "enterface", "root": str(root),
                                   "protocol": {"name": "losgo", "groups": groups}, "presets": ["ec112"]}}}


def make_enterface_tree(root: Path, subjects: tuple[int, ...] = (1, 2, 3, 6, 11, 16),
                        classes: tuple[str, ...] = labels.ENTERFACE_CLASSES, sentences: int = 2,
                        irregular: bool = True, n_frames: int = 8, size: tuple[int, int] = (64, 48),
                        fps: float = 25.0, seed: int = 0) -> DatasetTree:
    """Build an eNTERFACE'05 tree under ``root``: per subject, class and sentence one AVI of ``n_frames``
    frames of ``size`` (width, height).

    With ``irregular`` (needs two subjects other than 6, two sentences and the six classes), the tree also has
    the archive's quirks, where the subjects exist:

    - subject 6: one whole session per emotion directly in the emotion folder, no sentence level (skipped);
    - subject 11: files named ``s12_*`` (still subject 11); subject 3: folder ``Subject 3`` and ``s_3_*`` names;
    - subject 16: an extra ``surprise/sentence 3/s16_su_3avi.avi`` (a doubled extension);
    - the second subject's happiness folder is spelled ``Happiness``;
    - on the first subject: a stray ``notes.txt`` and ``.DS_Store`` (skipped), a ``neutral`` emotion folder
      (skipped: not one of the six), and a second file in ``anger/sentence 1`` (both listed, ``_v1``/``_v2``);
    - on the second subject: a corrupt AVI of random bytes (skipped) and a truncated AVI, the first half of
      a real one (listed: its header is intact).
    """
    root = Path(root)
    regular = [s for s in subjects if not (irregular and s == 6)]
    if irregular and (len(regular) < 2 or sentences < 2 or set(classes) != set(labels.ENTERFACE_CLASSES)):
        raise ValueError("irregular trees need two subjects besides 6, two sentences and the six classes")
    rng = np.random.default_rng(seed)
    width, height = size
    with tempfile.TemporaryDirectory() as scratch:
        # One real AVI, copied to every clip: writing each one anew would only cost time.
        template = Path(scratch, "template.avi")
        video.write(template, rng.integers(0, 256, (n_frames, height, width, 3), dtype=np.uint8), fps)
        return _build(root, template, subjects, classes, sentences, irregular, regular, rng)


def _subject_dir(subject: int, irregular: bool) -> str:
    return "Subject 3" if irregular and subject == 3 else f"subject {subject}"


def _build(root: Path, template: Path, subjects: tuple[int, ...], classes: tuple[str, ...], sentences: int,
           irregular: bool, regular: list[int], rng: np.random.Generator) -> DatasetTree:
    tree = DatasetTree(root=root)

    def place(relative: str) -> Path:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, path)
        return path

    first, second = regular[:2] if irregular else (None, None)
    for subject in subjects:
        subject_dir = _subject_dir(subject, irregular)
        for label in classes:
            code = labels.ENTERFACE_CODES[label]
            emotion_dir = "Happiness" if irregular and subject == second and label == "happiness" else label
            if irregular and subject == 6:
                relative = f"{subject_dir}/{emotion_dir}/s6_{code}.avi"
                place(relative)
                tree.skipped[relative] = "unsegmented session"
                continue
            for sentence in range(1, sentences + 1):
                stem = f"s{subject}_{code}_{sentence}"
                if irregular and subject == 11:
                    stem = f"s12_{code}_{sentence}"
                elif irregular and subject == 3:
                    stem = f"s_3_{code}_{sentence}"
                relative = f"{subject_dir}/{emotion_dir}/sentence {sentence}/{stem}.avi"
                place(relative)
                tree.clips[relative] = ExpectedClip(f"s{subject}_{code}_{sentence}", str(subject), label)

    if irregular:
        if 16 in subjects:
            relative = "subject 16/surprise/sentence 3/s16_su_3avi.avi"
            place(relative)
            tree.clips[relative] = ExpectedClip("s16_su_3", "16", "surprise")
        for name, reason in (("notes.txt", "not a video"), ("anger/.DS_Store", "system file")):
            relative = f"{_subject_dir(first, True)}/{name}"
            (root / relative).write_bytes(b"stray\n")
            tree.skipped[relative] = reason
        relative = f"{_subject_dir(first, True)}/neutral/sentence 1/s{first}_ne_1.avi"
        place(relative)
        tree.skipped[relative] = "not one of the six"
        # Sorted by path, "s1_an_1 (copy).avi" comes before "s1_an_1.avi": the copy is _v1.
        original = tree.path_of(f"s{first}_an_1")
        copy = original.removesuffix(".avi") + " (copy).avi"
        place(copy)
        tree.clips[copy] = ExpectedClip(f"s{first}_an_1_v1", str(first), "anger")
        tree.clips[original] = ExpectedClip(f"s{first}_an_1_v2", str(first), "anger")

        corrupt = tree.path_of(f"s{second}_fe_2")
        (root / corrupt).write_bytes(rng.bytes(4096))
        del tree.clips[corrupt]
        tree.skipped[corrupt] = "cannot be opened"
        truncated = root / tree.path_of(f"s{second}_sa_1")
        truncated.write_bytes(template.read_bytes()[: template.stat().st_size // 2])
    return tree


AFEW_FOLDERS = {"anger": "Angry", "disgust": "Disgust", "fear": "Fear", "happiness": "Happy", "neutral": "Neutral",
                "sadness": "Sad", "surprise": "Surprise"}


def afew_config(root: Path, dataset: str = "afew", shard_size: int = 50) -> dict:
    """A minimal config holding one AFEW 7.0 dataset at ``root`` under ``datasets.<dataset>``."""
    return {"seed": 0,
            "datasets": {dataset: {"adapter": "afew", "root": str(root), "protocol": {"name": "fixed"},
                                   "presets": ["xu128"], "shard_size": shard_size}}}


def make_afew_tree(root: Path, train_per_class: int = 2, val_per_class: int = 1, n_frames: int = 8,
                   size: tuple[int, int] = (64, 48), fps: float = 25.0, seed: int = 0) -> DatasetTree:
    """Build an AFEW 7.0 tree under ``root``: ``Train_AFEW`` and ``Val_AFEW`` with one folder per emotion, named
    as shipped, holding AVIs of ``n_frames`` frames named by 9-digit clip ids, and the archive's quirks:

    - clip ``000000001`` is in Train (Angry) and in Val (Angry): the ids must carry the partition;
    - the organisers' files beside the emotion folders: ``Train_6.xml``, ``AlignedFaces_LBPTOP_Points.zip``
      and, in Val, its extracted ``AlignedFaces_LBPTOP_Points_Val/Faces/<id>/*.jpg`` (skipped);
    - Val's happy folder is spelled ``happy``; a ``.DS_Store`` in Train/Angry (skipped);
    - the unlabelled test partition ``Test_vid_Distribute/*.avi`` (skipped), a stray ``README.txt`` at the
      root (skipped), a video directly in ``Train_AFEW`` (skipped), an ``Unknown`` emotion folder (skipped),
      a corrupt AVI of random bytes in Val/Fear (skipped).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    width, height = size
    tree = DatasetTree(root=root)
    with tempfile.TemporaryDirectory() as scratch:
        template = Path(scratch, "template.avi")
        video.write(template, rng.integers(0, 256, (n_frames, height, width, 3), dtype=np.uint8), fps)

        def place(relative: str) -> None:
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(template, root / relative)

        for split, folder, per_class in (("train", "Train_AFEW", train_per_class), ("val", "Val_AFEW", val_per_class)):
            number = 0  # each partition numbers its clips from 1: ids repeat across partitions, as in AFEW
            for label, emotion in AFEW_FOLDERS.items():
                emotion = "happy" if split == "val" and emotion == "Happy" else emotion
                for _ in range(per_class):
                    number += 1
                    clip = f"{number:09d}"
                    relative = f"{folder}/{emotion}/{clip}.avi"
                    place(relative)
                    tree.clips[relative] = ExpectedClip(f"{split}_{clip}", "", label, split)

        strays = {
            "README.txt": "not a video",
            "Train_AFEW/Train_6.xml": "not a video",
            "Train_AFEW/AlignedFaces_LBPTOP_Points.zip": "not a video",
            "Train_AFEW/Angry/.DS_Store": "system file",
            "Val_AFEW/Val_6.xml": "not a video",
            "Val_AFEW/AlignedFaces_LBPTOP_Points_Val/Faces/000000001/000000001-001.jpg": "aligned faces",
        }
        for relative, reason in strays.items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_bytes(b"stray\n")
            tree.skipped[relative] = reason
        for relative, reason in (("Test_vid_Distribute/000000999.avi", "labels are withheld"),
                                 ("Train_AFEW/000000998.avi", "no emotion folder"),
                                 ("Train_AFEW/Unknown/000000997.avi", "not one of AFEW's seven classes")):
            place(relative)
            tree.skipped[relative] = reason
        corrupt = tree.path_of("val_000000003")  # Val/Fear
        (root / corrupt).write_bytes(rng.bytes(4096))
        del tree.clips[corrupt]
        tree.skipped[corrupt] = "cannot be opened"
    return tree
