"""Tiny stills datasets in their real layouts, with the quirks DATASETS.md §7 and the FER2013 table have.

AffectNet: ``Manually_Annotated_file_lists/{training,validation}.csv`` (the 9 columns as distributed, 68
landmarks as 136 numbers separated by ';') and the images in the archive's nested extraction
``Manually_Annotated/Manually_Annotated_Images/<dir>/<sha1-like>.jpg``, with the automatically annotated
lists beside them. FER2013: ``fer2013.csv`` (emotion, pixels, Usage). Pictures are random textures (their
faces are whatever the box says: the adapters and the stills store do not look at the content).
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fer_pipeline.datasets import affectnet

HEADER = affectnet.COLUMNS


@dataclass
class StillsTree:
    root: Path
    clips: dict[str, dict] = field(default_factory=dict)  # clip_id -> {label, split, path, box, ...}
    skipped: dict[str, str] = field(default_factory=dict)  # what must be skipped -> a fragment of its reason


def _picture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    base = cv2.resize(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(base.astype(np.int16) + rng.integers(-20, 20, (height, width, 3)), 0, 255).astype(np.uint8)


def _landmarks(box: tuple[float, float, float, float]) -> list[float]:
    x, y, w, h = box
    t = np.linspace(0, 1, affectnet.N_LANDMARKS)
    return [round(float(v), 2) for pair in zip(x + w * (0.1 + 0.8 * t), y + h * (0.2 + 0.6 * np.abs(np.sin(7 * t))))
            for v in pair]


def affectnet_row(file: str, box: tuple[float, float, float, float], code: int, landmarks: list[float] | None = None,
                  valence: float = 0.1, arousal: float = 0.2) -> list[str]:
    landmarks = _landmarks(box) if landmarks is None else landmarks
    return [file, *(f"{v:g}" for v in box), ";".join(f"{v:g}" for v in landmarks), str(code), str(valence),
            str(arousal)]


def make_affectnet_tree(root: Path, seed: int = 0) -> StillsTree:
    """Eight labelled stills (codes 0-7) in training and validation, and every quirk: codes 8-10, an absent
    file, a box leaving its image, a negative width, a zero-byte and a corrupt image, a row that does not
    parse, a file listed twice, an unlisted image, the automatic lists, a system file."""
    rng = np.random.default_rng(seed)
    tree = StillsTree(root)
    images = root / "Manually_Annotated" / affectnet.IMAGES
    lists = root / affectnet.LISTS
    lists.mkdir(parents=True)
    (root / "Automatically_Annotated_file_lists").mkdir()
    (root / "Automatically_Annotated_file_lists" / "automatically_annotated.csv").write_text(",".join(HEADER) + "\n")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")

    def image(name: str, width: int = 120, height: int = 100, folder: str = "101") -> str:
        relative = f"{folder}/{hashlib.sha1(name.encode()).hexdigest()}.jpg"
        (images / relative).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(images / relative), _picture(rng, width, height))
        return relative

    rows = {"training.csv": [], "validation.csv": []}

    def add(list_name: str, relative: str, box, code: int, expect: str | None = None, **kw) -> None:
        rows[list_name].append(affectnet_row(relative, box, code, **kw))
        split = affectnet.LIST_FILES[list_name]
        number = len(rows[list_name])
        if expect is None:
            tree.clips[f"{split}_{Path(relative).stem}"] = {
                "label": affectnet.CODES[code], "split": split, "path": images / relative, "row": number,
                "box": [box[0], box[1], box[0] + box[2], box[1] + box[3]], "list": list_name}
        else:
            tree.skipped[f"{list_name} row {number}"] = expect

    for code, name in ((0, "neutral"), (1, "happy"), (7, "contempt"), (6, "anger")):
        add("training.csv", image(name), (10, 12, 80, 76), code)
    add("training.csv", image("none"), (10, 10, 60, 60), 8, "expression 8 (None) has no emotion class")
    add("training.csv", image("noface"), (10, 10, 60, 60), 10, "expression 10 (No-Face) has no emotion class")
    add("training.csv", "101/" + "0" * 40 + ".jpg", (10, 10, 60, 60), 1, "the listed image is absent")
    add("training.csv", image("outside"), (70, 20, 80, 60), 1, "leaves the 120x100 image")
    add("training.csv", image("negative"), (10, 10, -5, 60), 2, "the face box has no area")
    empty = f"102/{hashlib.sha1(b'empty').hexdigest()}.jpg"
    (images / empty).parent.mkdir(parents=True, exist_ok=True)
    (images / empty).write_bytes(b"")
    add("training.csv", empty, (10, 10, 60, 60), 3, "empty file (0 bytes)")
    corrupt = f"102/{hashlib.sha1(b'corrupt').hexdigest()}.jpg"
    (images / corrupt).write_bytes(b"not a jpeg at all" * 10)
    add("training.csv", corrupt, (10, 10, 60, 60), 3, "cannot be read as an image")
    first = rows["training.csv"][0][0]
    add("training.csv", first, (10, 12, 80, 76), 0, "lists the image of row 1 again")
    for code, name in ((2, "sad"), (3, "surprise"), (4, "fear"), (5, "disgust")):
        add("validation.csv", image(name, 96, 110, "103"), (8, 9, 70, 80), code)
    add("validation.csv", image("uncertain", folder="103"), (5, 5, 50, 50), 9,
        "expression 9 (Uncertain) has no emotion class")
    for list_name, list_rows in rows.items():
        with open(lists / list_name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(HEADER)
            writer.writerows(list_rows)
    # A row that does not parse (5 fields), appended as a damaged line is.
    with open(lists / "training.csv", "a") as handle:
        handle.write("101/broken.jpg,1,2,3\n")
    tree.skipped[f"training.csv row {len(rows['training.csv']) + 1}"] = "4 fields, not the 9"
    unlisted = image("unlisted", folder="104")
    tree.skipped[unlisted] = "not listed in training.csv or validation.csv"
    return tree


def pixel_text(rng: np.random.Generator, n: int = 48 * 48) -> str:
    return " ".join(str(v) for v in rng.integers(0, 256, n))


def make_fer2013_tree(root: Path, seed: int = 0) -> StillsTree:
    """Seven good rows (every code, every usage) and the bad ones: a pixel string of the wrong length, one
    with a non-number and one with 256, an unknown emotion and usage, a row of the wrong field count; plus a
    README and the Kaggle re-distribution's train.csv beside the table."""
    rng = np.random.default_rng(seed)
    tree = StillsTree(root)
    root.mkdir(parents=True)
    (root / "README").write_text("FER2013\n")
    (root / "train.csv").write_text("emotion,pixels\n")
    good = [(0, "Training"), (3, "Training"), (6, "Training"), (4, "PublicTest"), (1, "PublicTest"),
            (5, "PrivateTest"), (2, "PrivateTest")]
    lines = [["emotion", "pixels", "Usage"]]
    from fer_pipeline.datasets import fer2013

    for code, usage in good:
        lines.append([str(code), pixel_text(rng), usage])
        tree.clips[f"fer{len(lines) - 1:05d}"] = {"label": fer2013.CODES[code], "split": fer2013.USAGE[usage],
                                                 "row": len(lines) - 1, "pixels": lines[-1][1]}
    bad = [(["3", pixel_text(rng, 2303), "Training"], "2303 values, not 2304"),
           (["3", pixel_text(rng).replace(" 1", " x", 1), "Training"], "not an integer 0-255"),
           (["3", "256 " + pixel_text(rng, 2303), "Training"], "outside 0-255"),
           (["7", pixel_text(rng), "Training"], "emotion '7' is not a FER2013 code"),
           (["2", pixel_text(rng), "Validation"], "Usage 'Validation' is none of"),
           (["2", pixel_text(rng)], "2 fields, not the 3")]
    for fields, reason in bad:
        lines.append(fields)
        tree.skipped[f"row {len(lines) - 1}"] = reason
    with open(root / "fer2013.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(lines)
    return tree


def stills_config(results: Path, dataset: str, adapter: str, root: Path, **block) -> dict:
    """The repo's config with ``results`` and one stills dataset (protocol fixed, small shards, the fer48 preset
    unless ``presets`` says otherwise), validated."""
    from fer_pipeline import config as config_mod

    entry = {"adapter": adapter, "root": str(root), "protocol": {"name": "fixed"}, "shard_size": 4,
             "presets": ["fer48"], "studies": [], **block}
    return config_mod.load(overrides={"results": str(results), "datasets": {dataset: entry}})


def run_snakemake(config: dict, folder: Path, *targets: str):
    """``snakemake --cores 2`` on ``targets`` with ``config`` as its config file (the log in ``folder``)."""
    import subprocess
    import sys

    import yaml

    repo = Path(__file__).resolve().parent.parent
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "snakemake", *targets, "--cores", "2", "--configfile", str(path)],
                            cwd=repo, capture_output=True, text=True, timeout=1200)
    with open(folder / "snakemake.log", "a") as log:
        log.write(result.stdout + result.stderr)
    return result
