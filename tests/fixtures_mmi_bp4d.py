"""Tiny MMI and BP4D-Spontaneous trees in their real on-disk layouts (DATASETS.md §5 and §6), for tests.

``make_mmi_tree`` builds ``Sessions/<n>/`` folders of tiny AVIs with their metadata XML and session.xml;
``make_bp4d_tree`` builds ``Sequences(2D+3D)/<subject>/<task>/`` folders of 32x24 JPEG frames with their
``AUCoding/AU_OCC`` CSVs. Each has the archive's known quirks and says which paths an adapter should list, which
it should skip (a fragment of the reason), and which files are the labels of a listed clip.

The XML formats: the recording's ``<Metatag Name="Emotion" Value="..."/>`` and session.xml's ``<track
view="...">`` are what public MMI loaders read (the Emotion tag is the second Metatag there, so another one
precedes it here; its name is a stand-in). ``<subject id="..."/>`` inside ``<session>``, and the track's
``<annotation filename="...">``, follow the session.xml of MAHNOB-HCI, a database of the same iBUG web
platform; nothing here was checked against a real MMI download.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fer_pipeline import video
from fixtures import ExpectedClip


@dataclass
class Tree:
    """A built tree. ``clips``: relative path of a clip (a video, or a frame folder) -> the clip it should
    become; ``skipped``: relative path of each file or folder that should be skipped -> a fragment of its
    reason; ``label_files``: the metadata files of listed clips (neither clips nor skipped)."""
    root: Path
    clips: dict[str, ExpectedClip] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    label_files: set[str] = field(default_factory=set)

    def files(self) -> list[str]:
        """Every file under the root, relative, sorted."""
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------------- MMI

MMI_FPS = 24.0  # DATASETS.md §5: 24 fps
MMI_EMOTIONS = {"1": "anger", "2": "disgust", "3": "fear", "4": "happiness", "5": "sadness", "6": "surprise"}


def recording_xml(emotion: str | None) -> str:
    """A recording's metadata: a stand-in Metatag, then the Emotion one (none when ``emotion`` is None)."""
    tags = ['  <Metatag Name="Gender" Value="Male" />']
    if emotion is not None:
        tags.append(f'  <Metatag Name="Emotion" Value="{emotion}" />')
    return '<?xml version="1.0" encoding="utf-8"?>\n<Metatags>\n' + "\n".join(tags) + "\n</Metatags>\n"


def session_xml(session: int, stem: str, subject: str | None, view: str) -> str:
    """A session.xml: the session, its subject (none when ``subject`` is None) and one video track."""
    subject_line = f'  <subject id="{subject}" />\n' if subject is not None else ""
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<session sessionId="{session}" mediaFile="{stem}.avi">\n'
            f'{subject_line}  <track id="0" type="Video" view="{view}" filename="{stem}.avi">\n'
            f'    <annotation id="1" type="FACS" filename="{stem}-oao_aucs.xml" />\n  </track>\n</session>\n')


def mmi_config(root: Path, dataset: str = "mmi", groups: int = 10) -> dict:
    """A minimal config holding one MMI dataset at ``root``, as config.yaml's block (kfold 10, 10 fps)."""
    return {"seed": 0, "datasets": {dataset: {"adapter": "mmi", "root": str(root), "sample_fps": 10,
                                              "protocol": {"name": "kfold", "groups": groups}, "presets": []}}}


def make_mmi_tree(root: Path, n_frames: int = 6, size: tuple[int, int] = (64, 48), seed: int = 0) -> Tree:
    """Build an MMI download under ``root``: ``Sessions/<n>/`` with one recording each. Listed: subjects 1-10,
    one frontal recording each with an Emotion 1-6 (subject 1 two: S001-002 and S001-003, and session 3 copied
    as session 40, so S001-003 becomes S001-003_v1 and _v2). Quirks, each skipped with its reason:

    - a dual view (view 2), a rotated view (view 1) and an unknown view (3), by session.xml;
    - Emotion 7 (not one of the six) and a recording XML with no Emotion Metatag;
    - a recording XML and a session.xml that do not parse, a session without session.xml, a session.xml that
      names no subject, a recording without its XML;
    - a session of stills (two JPEGs, a session.xml and the recording's XML, no video);
    - a corrupt AVI of random bytes; the OAO AU coding beside a listed video; a ``.DS_Store``; a file directly
      in ``Sessions/``, one at the root, and a video nested below a session folder.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    width, height = size
    tree = Tree(root=root)
    with tempfile.TemporaryDirectory() as scratch:
        template = Path(scratch, "template.avi")
        video.write(template, rng.integers(0, 256, (n_frames, height, width, 3), dtype=np.uint8), MMI_FPS)

        def session(number: int, stem: str, emotion: str | None = "1", subject: str | None = "auto",
                    view: str = "0", with_video: bool = True, with_xml: bool = True,
                    with_session: bool = True) -> str:
            folder = root / "Sessions" / str(number)
            folder.mkdir(parents=True, exist_ok=True)
            if subject == "auto":
                subject = str(int(stem[1:4]))
            if with_video:
                shutil.copyfile(template, folder / f"{stem}.avi")
            if with_xml:
                (folder / f"{stem}.xml").write_text(recording_xml(emotion))
            if with_session:
                (folder / "session.xml").write_text(session_xml(number, stem, subject, view))
            return f"Sessions/{number}"

        def listed(where: str, stem: str, clip_id: str, subject: str, emotion: str) -> None:
            tree.clips[f"{where}/{stem}.avi"] = ExpectedClip(clip_id, subject, MMI_EMOTIONS[emotion])
            tree.label_files |= {f"{where}/{stem}.xml", f"{where}/session.xml"}

        def skipped(where: str, stem: str, reason: str, xml: str = "which is skipped",
                    session: str = "no listed recording") -> None:
            tree.skipped[f"{where}/{stem}.avi"] = reason
            tree.skipped.setdefault(f"{where}/{stem}.xml", xml)
            tree.skipped.setdefault(f"{where}/session.xml", session)

        where = session(2, "S001-002", "1")
        listed(where, "S001-002", "S001-002", "1", "1")
        (root / where / "S001-002-oao_aucs.xml").write_text('<?xml version="1.0"?>\n<ActionUnits />\n')
        tree.skipped[f"{where}/S001-002-oao_aucs.xml"] = "frame-level AU coding (OAO FACS): not read"
        (root / where / ".DS_Store").write_bytes(b"\0")
        tree.skipped[f"{where}/.DS_Store"] = "system file"
        where = session(3, "S001-003", "4")
        listed(where, "S001-003", "S001-003_v1", "1", "4")
        shutil.copytree(root / where, root / "Sessions" / "40")
        listed("Sessions/40", "S001-003", "S001-003_v2", "1", "4")
        for index, emotion in enumerate("235612345", start=2):
            stem = f"S{index:03d}-001"
            listed(session(100 + index, stem, emotion), stem, stem, str(index), emotion)

        skipped(session(20, "S002-010", "4", view="2"), "S002-010", "dual view (session.xml: track view 2)")
        skipped(session(21, "S003-010", "5", view="1"), "S003-010", "rotated view (session.xml: track view 1)")
        skipped(session(22, "S003-011", "5", view="3"), "S003-011", "unknown view '3' in session.xml")
        skipped(session(23, "S004-010", "7"), "S004-010", "Emotion '7' in S004-010.xml is not one of the six")
        skipped(session(24, "S004-011", None), "S004-011", "S004-011.xml has no Emotion Metatag")
        where = session(25, "S005-010", "2")
        (root / where / "S005-010.xml").write_text('<?xml version="1.0"?>\n<Metatags>\n  <Metatag Name="Emotion"')
        skipped(where, "S005-010", "its metadata S005-010.xml does not parse as XML", xml="does not parse as XML")
        where = session(26, "S005-011", "2")
        (root / where / "session.xml").write_text("<session><subject id='5'></session>\n")
        skipped(where, "S005-011", "its session.xml does not parse as XML", session="does not parse as XML")
        where = session(27, "S006-010", "3", with_session=False)
        skipped(where, "S006-010", "no session.xml in the session folder")
        del tree.skipped[f"{where}/session.xml"]
        skipped(session(28, "S006-011", "3", subject=None), "S006-011", "session.xml names no subject")
        where = session(29, "S007-011", "6", with_xml=False)
        skipped(where, "S007-011", "no metadata file S007-011.xml beside it")
        del tree.skipped[f"{where}/S007-011.xml"]
        where = session(30, "S007-010", "6")
        (root / where / "S007-010.avi").write_bytes(rng.bytes(4096))
        skipped(where, "S007-010", "cannot be opened")

        where = session(31, "S002-100", "4", with_video=False)
        for name in ("S002-100-001.jpg", "S002-100-002.jpg"):
            cv2.imwrite(str(root / where / name), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
            tree.skipped[f"{where}/{name}"] = "a still image, not a video: sessions of stills are not read"
        tree.skipped[f"{where}/S002-100.xml"] = "metadata of a recording whose video (S002-100.avi) is not in"
        tree.skipped[f"{where}/session.xml"] = "metadata of a session with no listed recording"

        for relative in ("Sessions/index.txt", "download_log.txt"):
            (root / relative).write_text("stray\n")
            tree.skipped[relative] = "not inside a session folder (Sessions/<n>/)"
        (root / "Sessions/2/backup").mkdir()
        shutil.copyfile(template, root / "Sessions/2/backup/S001-002.avi")
        tree.skipped["Sessions/2/backup/S001-002.avi"] = "nested below the session folder"
    return tree


# --------------------------------------------------------------------------------------------------- BP4D

BP4D_FPS = 25.0
BP4D_SIZE = (32, 24)  # width, height
BP4D_TASKS = {"T1": "happiness", "T2": "sadness", "T3": "surprise", "T4": "embarrassment", "T5": "fear",
              "T6": "pain", "T7": "anger", "T8": "disgust"}
BP4D_SPLIT = {"train": ["F001", "M001"], "test": ["F002", "M002"]}
# F001_T1's AU codes (frames 998-1002 of its 996-1003, then a row for frame 1010, which has no image):
# header 0 (the frame), AUs 1-4; AU 3 is 9 (unknown) throughout.
F001_T1_ROWS = [(998, 1, 0, 9, 0), (999, 1, 9, 9, 1), (1000, 0, 0, 9, 1), (1001, 9, 1, 9, 0), (1002, 0, 0, 9, 0),
                (1010, 1, 1, 9, 1)]
F001_T2_ROWS = [(52, 0, 0, 9, 0), (53, 1, 0, 9, 0), (54, 1, 1, 9, 0), (55, 0, 9, 9, 1), (56, 0, 0, 9, 1),
                (57, 0, 0, 9, 0)]
M002_T4_ROWS = [(7, 1, 1, 9, 1), (8, 0, 0, 9, 0)]


def bp4d_config(root: Path, split: dict | None = None, protocol: dict | None = None, dataset: str = "bp4d") -> dict:
    """A minimal config holding one BP4D dataset at ``root``: ``split`` (default :data:`BP4D_SPLIT`, None for
    none), protocol ``fixed`` unless given."""
    block = {"adapter": "bp4d", "root": str(root), "protocol": protocol or {"name": "fixed"}, "presets": [],
             "split": BP4D_SPLIT if split is None else split}
    if split == {}:
        del block["split"]
    return {"seed": 0, "datasets": {dataset: block}}


def occurrence_csv(rows: list[tuple[int, ...]], header: str = "0,1,2,3,4") -> str:
    """An AU_OCC file: the header ``0,1,2,...`` then one line per coded frame."""
    return header + "\n" + "".join(",".join(str(value) for value in row) + "\n" for row in rows)


def make_bp4d_tree(root: Path, sequences: str = "Sequences(2D+3D)", seed: int = 0) -> Tree:
    """Build a BP4D-Spontaneous copy under ``root`` (the sequences folder named ``sequences``). Listed:

    - F001/T1: frames ``996.jpg`` ... ``1003.jpg`` (3-digit padding, so ``999`` before ``1000``), coded on
      998-1002 only, with 9s, and one row for frame 1010, which has no image (that row is skipped);
    - F001/T2: ``0052.jpg`` ... ``0057.jpg`` (4-digit padding), all coded;
    - M001/T1 (no AU file), with a stray ``notes.txt`` and a ``.DS_Store`` beside its frames (skipped);
    - M001/T8, whose AU file does not parse (its header is not 0,1,2,...: skipped, the clip still listed);
    - F002/T3, whose AU file codes one frame twice (skipped as not parsing);
    - M002/T4 (coded 007-008 of 005-009, 3-digit) and M002/T6 (no AU file).

    Skipped: subject F003 (in neither split: one row, its AU file as labelling no listed clip), a task
    folder F001/T5 with ``052.jpg`` and ``0052.jpg`` (the same frame twice), a folder ``F002/T9`` and a file
    ``F002/notes.txt`` (no task), ``README.txt`` in the sequences folder (no subject), AU files of a clip with no
    frames (F001_T7) and of no clip (``summary.csv``), a ``.DS_Store`` in AU_OCC, ``AUCoding/AU_INT/`` (one
    row) and ``documentation.pdf`` at the root.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    width, height = BP4D_SIZE
    tree = Tree(root=root)
    seq = root / sequences
    occ = root / "AUCoding" / "AU_OCC"
    occ.mkdir(parents=True)

    def frames(subject: str, task: str, names: list[str]) -> str:
        folder = seq / subject / task
        folder.mkdir(parents=True)
        for name in names:
            cv2.imwrite(str(folder / name), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        return f"{sequences}/{subject}/{task}"

    def listed(subject: str, task: str, names: list[str], split: str) -> str:
        relative = frames(subject, task, names)
        tree.clips[relative] = ExpectedClip(f"{subject}_{task}", subject, BP4D_TASKS[task], split)
        return relative

    def coded(subject: str, task: str, text: str) -> str:
        (occ / f"{subject}_{task}.csv").write_text(text)
        return f"AUCoding/AU_OCC/{subject}_{task}.csv"

    listed("F001", "T1", [f"{n:03d}.jpg" for n in range(996, 1004)], "train")
    relative = coded("F001", "T1", occurrence_csv(F001_T1_ROWS))
    tree.label_files.add(relative)  # it labels the clip, and its row for frame 1010 is skipped
    tree.skipped[relative] = f"row 6: frame 1010 matches no image in {sequences}/F001/T1"
    listed("F001", "T2", [f"{n:04d}.jpg" for n in range(52, 58)], "train")
    tree.label_files.add(coded("F001", "T2", occurrence_csv(F001_T2_ROWS)))
    relative = listed("M001", "T1", [f"{n:04d}.jpg" for n in range(1, 5)], "train")
    (root / relative / "notes.txt").write_text("stray\n")
    tree.skipped[f"{relative}/notes.txt"] = "not a frame of the sequence"
    (root / relative / ".DS_Store").write_bytes(b"\0")
    tree.skipped[f"{relative}/.DS_Store"] = "system file"
    listed("M001", "T8", [f"{n:04d}.jpg" for n in range(1, 4)], "train")
    tree.skipped[coded("M001", "T8", occurrence_csv([(1, 0, 0, 0, 0)], header="frame,AU1,AU2,AU3,AU4"))] = \
        "its header is not 0,1,2,..."
    listed("F002", "T3", [f"{n:04d}.jpg" for n in range(10, 13)], "val")
    tree.skipped[coded("F002", "T3", occurrence_csv([(10, 1, 0, 0, 0), (11, 0, 0, 0, 0), (10, 0, 1, 0, 0)]))] = \
        "frame 10 is coded twice (rows 1 and 3)"
    listed("M002", "T4", [f"{n:03d}.jpg" for n in range(5, 10)], "val")
    tree.label_files.add(coded("M002", "T4", occurrence_csv(M002_T4_ROWS)))
    listed("M002", "T6", [f"{n:03d}.jpg" for n in range(1, 4)], "val")

    frames("F003", "T1", ["0001.jpg", "0002.jpg"])
    tree.skipped[f"{sequences}/F003"] = "subject F003 is in neither the train nor the test list"
    tree.skipped[coded("F003", "T1", occurrence_csv([(1, 1, 0, 0, 0)]))] = "labels no listed clip: F003/T1"
    tree.skipped[frames("F001", "T5", ["052.jpg", "0052.jpg"])] = "both have frame number 52"
    tree.skipped[frames("F002", "T9", ["0001.jpg"])] = "not a task folder (T1 ... T8)"
    (seq / "F002" / "notes.txt").write_text("stray\n")
    tree.skipped[f"{sequences}/F002/notes.txt"] = "not a task folder"
    (seq / "README.txt").write_text("stray\n")
    tree.skipped[f"{sequences}/README.txt"] = "not a subject folder"
    tree.skipped[coded("F001", "T7", occurrence_csv([(1, 1, 0, 0, 0)]))] = "labels no listed clip: F001/T7"
    (occ / "summary.csv").write_text("subject,task\n")
    tree.skipped["AUCoding/AU_OCC/summary.csv"] = "not an AU occurrence file"
    (occ / ".DS_Store").write_bytes(b"\0")
    tree.skipped["AUCoding/AU_OCC/.DS_Store"] = "system file"
    intensity = root / "AUCoding" / "AU_INT" / "AU06"
    intensity.mkdir(parents=True)
    (intensity / "F001_T1_AU06.csv").write_text("996,0\n")
    tree.skipped["AUCoding/AU_INT"] = "AU intensity codes: not read"
    (root / "documentation.pdf").write_bytes(b"%PDF-1.4\n")
    tree.skipped["documentation.pdf"] = "not part of the BP4D layout"
    return tree
