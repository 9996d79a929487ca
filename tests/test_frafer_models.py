"""The FRA-FER networks (fer_pipeline.models.frafer): shapes at 224 (the paper's S of 1 x 112 x 112 and H_att of
32 x 112 x 112 at p = q = 1), eq. 5's maximum, the frozen FR network (no gradient, batch-norm statistics that
never move while the whole model trains), FER and FR weights from torchvision-style state dicts the tests
write, the bad-input errors (wrong-shape or missing keys, layer indices p and q that do not exist, a .dat that
is not dlib's), and every Table III variant forward and backward at 64 px.

The FR network is a torchvision EfficientNet-B0 from a state dict written here (random weights: frozen
parts need no training to be tested), and dlib's ResNet when `make assets` has fetched it into
.cache/fr-models (those tests skip otherwise, saying so).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from fer_pipeline.assets import COMPLETE_MARKER
from fer_pipeline.config import ConfigError
from fer_pipeline.models import MODELS, build_model
from fer_pipeline.models.dlib_resnet import DlibFormatError
from fer_pipeline.models.frafer import (
    B0_FEATURE_SHAPES, FER_WEIGHTS_KEY, FR_WEIGHTS_KEY, FRAFERNet, FRAttention, FrozenFR)
from fer_pipeline.train import make_optimizer

REPO = Path(__file__).resolve().parent.parent
FR_MODELS = REPO / ".cache" / "fr-models"
DLIB_FILE = FR_MODELS / "dlib_face_recognition_resnet_model_v1.dat"
needs_dlib = pytest.mark.skipif(
    not (FR_MODELS / COMPLETE_MARKER).is_file() or not DLIB_FILE.is_file(),
    reason=f"dlib's face-recognition ResNet is not in {FR_MODELS} (`make assets` fetches it)")

TABLE_III = ["frafer_b0", "frafer_concat", "frafer_cscsse", "frafer_csse", "frafer_ssce", "frafer"]


def _b0_state(num_classes: int, seed: int) -> dict[str, torch.Tensor]:
    """A torchvision EfficientNet-B0 state dict with random weights and batch-norm statistics that are not
    the defaults (so that a loaded or a moved statistic shows)."""
    torch.manual_seed(seed)
    state = torchvision.models.efficientnet_b0(weights=None, num_classes=num_classes).state_dict()
    g = torch.Generator().manual_seed(seed)
    for name, value in state.items():
        if name.endswith("running_mean"):
            state[name] = 0.1 * torch.randn(value.shape, generator=g)
        elif name.endswith("running_var"):
            state[name] = 0.5 + torch.rand(value.shape, generator=g)
    return state


@pytest.fixture(scope="module")
def fr_b0_file(tmp_path_factory) -> Path:
    """An FR EfficientNet-B0 as the paper's (identity classification on VGGFace2: 9131 classes)."""
    path = tmp_path_factory.mktemp("fr") / "b0_vggface2.pt"
    torch.save(_b0_state(9131, seed=1), path)
    return path


def fr_sizes(fr_b0_file: Path, **more) -> dict:
    return dict(fr_network="efficientnet_b0", fr_weights=str(fr_b0_file), **more)


def rgb(batch: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.rand(batch, 3, size, size, generator=g), "label": torch.randint(0, 7, (batch,), generator=g)}


# ---------------------------------------------------------------------------------------------------------
# The registry and the shapes


def test_table_iii_variants_are_registered_with_descriptions():
    assert {name for name in MODELS if name.startswith("frafer")} == set(TABLE_III)
    for name in TABLE_III:
        assert len(MODELS[name].description) > 10, name


def test_shapes_at_224_with_an_efficientnet_fr(fr_b0_file):
    model = build_model("frafer", 8, **fr_sizes(fr_b0_file)).eval()
    batch = rgb(2, 224)
    with torch.no_grad():
        maps = model.attention_maps(batch)
        assert maps["attention"].shape == (2, 1, 112, 112)        # the paper's S, p = q = 1
        assert maps["before"].shape == maps["after"].shape == (2, 32, 112, 112)
        assert model.attention_map(batch).shape == (2, 1, 112, 112)
        assert model.pooled_features(batch).shape == (2, 1280)
        assert model(batch).shape == (2, 8)
    assert model.fr.feature_map(batch["rgb"], model.fr_index).shape == (2, 32, 112, 112)


@pytest.mark.parametrize("q", sorted(B0_FEATURE_SHAPES))
def test_every_fer_map_q_has_its_advertised_shape(q):
    model = build_model("frafer_csse", 7, q=q).eval()
    with torch.no_grad():
        maps = model.attention_maps(rgb(1, 224))
    c, h, w = B0_FEATURE_SHAPES[q]
    assert maps["after"].shape == (1, c, h, w) and maps["attention"].shape == (1, 1, h, w)


@needs_dlib
def test_shapes_at_224_with_dlibs_fr():
    model = build_model("frafer", 8, fr_weights=str(DLIB_FILE)).eval()   # p = 1: dlib's stem, 32 x 72 x 72
    batch = rgb(2, 224)
    assert model.fr.feature_map(batch["rgb"], model.fr_index).shape == (2, 32, 72, 72)  # the face at 150
    with torch.no_grad():
        assert model.attention_map(batch).shape == (2, 1, 112, 112)                 # interpolated to H_FER_1
        assert model(batch).shape == (2, 8)
    pooled = build_model("frafer", 8, fr_weights=str(DLIB_FILE), p="pool")
    assert pooled.fr_index == 1 and pooled.attention.conv.in_channels == 32
    assert build_model("frafer_concat", 8, fr_weights=str(DLIB_FILE)).fer.classifier[1].in_features == 1280 + 128


@needs_dlib
def test_dlib_is_the_default_fr_network_read_from_config():
    model = build_model("frafer", 7)
    assert model.fr.kind == "dlib_resnet" and Path(model.fr.source).name == DLIB_FILE.name
    assert "from scratch" in model.weights_note and DLIB_FILE.name in model.weights_note


# ---------------------------------------------------------------------------------------------------------
# Eqs. 3-5


def test_eq3_is_the_resized_sigmoid_of_a_1x1_convolution():
    torch.manual_seed(0)
    attention = FRAttention(fr_channels=32)
    h_fr, h_fer = torch.randn(2, 32, 72, 72), torch.randn(2, 32, 112, 112)
    _, s = attention(h_fr, h_fer)
    expected = F.interpolate(torch.sigmoid(attention.conv(h_fr)), size=(112, 112), mode="bilinear",
                             align_corners=False)
    assert s.shape == (2, 1, 112, 112)
    torch.testing.assert_close(s, expected)
    assert (s > 0).all() and (s < 1).all()


def test_eq5_takes_the_elementwise_max_of_the_attended_and_the_plain_map():
    torch.manual_seed(0)
    attention = FRAttention(fr_channels=16)
    h_fr, h_fer = torch.randn(2, 16, 40, 40), torch.randn(2, 32, 56, 56)   # both signs, as after SiLU
    h_att, s = attention(h_fr, h_fer)
    attended = s * h_fer                                                   # eq. 4, S over every channel
    assert h_att.shape == h_fer.shape
    assert (h_att >= h_fer).all()                                          # eq. 5
    wins = attended > h_fer
    assert 0.2 < wins.float().mean() < 0.8                                 # both branches are exercised
    assert torch.equal(h_att[wins], attended[wins])
    assert torch.equal(h_att[~wins], h_fer[~wins])


def test_the_whole_network_carries_on_from_the_max(fr_b0_file):
    model = build_model("frafer", 7, **fr_sizes(fr_b0_file, fr_input_size=64)).eval()
    with torch.no_grad():
        maps = model.attention_maps(rgb(2, 64))
    assert (maps["after"] >= maps["before"]).all()
    attended = maps["attention"] * maps["before"]
    assert torch.equal(maps["after"], torch.maximum(attended, maps["before"]))


# ---------------------------------------------------------------------------------------------------------
# The frozen FR network


def _train_steps(model: FRAFERNet, steps: int = 2, size: int = 64) -> None:
    optimizer = make_optimizer(model, {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-4})
    model.train()
    for step in range(steps):
        batch = rgb(4, size, seed=step)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(batch), batch["label"])
        loss.backward()
        for name, p in model.fr.named_parameters():
            assert p.grad is None, f"a gradient reached the frozen FR network's {name}"
        optimizer.step()


@pytest.mark.parametrize("variant", ["frafer", "frafer_concat"])
def test_the_fr_network_gets_no_gradient_and_its_batch_norm_statistics_do_not_move(fr_b0_file, variant):
    model = build_model(variant, 7, **fr_sizes(fr_b0_file, fr_input_size=64))
    fr_before = {k: v.clone() for k, v in model.fr.state_dict().items()}
    fer_before = {k: v.clone() for k, v in model.fer.state_dict().items()}
    assert all(not p.requires_grad for p in model.fr.parameters())
    assert any(k.endswith("running_mean") for k in fr_before)             # B0 has batch norm to protect

    _train_steps(model)

    assert model.training and not model.fr.training                       # .train() leaves the FR in eval
    assert all(not m.training for m in model.fr.modules())
    for name, value in model.fr.state_dict().items():
        assert torch.equal(value, fr_before[name]), f"the frozen FR network's {name} moved"
    # The rest did train: the FER network's statistics and weights moved.
    fer_after = model.fer.state_dict()
    assert not torch.equal(fer_after["features.0.1.running_mean"], fer_before["features.0.1.running_mean"])
    assert not torch.equal(fer_after["features.0.0.weight"], fer_before["features.0.0.weight"])
    if variant == "frafer":
        assert model.attention.conv.weight.grad is not None and model.attention.conv.weight.grad.abs().sum() > 0


@needs_dlib
def test_dlibs_fr_network_stays_frozen_too():
    model = build_model("frafer", 7, fr_weights=str(DLIB_FILE))
    before = {k: v.clone() for k, v in model.fr.state_dict().items()}
    _train_steps(model, steps=1)
    assert not model.fr.training
    assert all(torch.equal(v, before[k]) for k, v in model.fr.state_dict().items())


def test_frozen_fr_ignores_train_mode():
    fr = FrozenFR(64)
    fr.bn = torch.nn.BatchNorm2d(3)
    fr.train()
    assert not fr.training and not fr.bn.training


# ---------------------------------------------------------------------------------------------------------
# Weights from files


def test_fer_weights_load_from_a_torchvision_state_dict(tmp_path):
    affectnet = tmp_path / "b0_affectnet.pt"
    state = _b0_state(8, seed=3)
    torch.save({"state_dict": state}, affectnet)                 # wrapped, as training checkpoints are
    model = build_model("frafer_b0", 8, fer_weights=str(affectnet))
    own = model.fer.state_dict()
    for name, value in state.items():
        assert torch.equal(own[name], value), name               # the 8-class head too
    assert model.provenance["fer"] == str(affectnet) and str(affectnet) in model.weights_note

    imagenet = tmp_path / "b0_imagenet.pt"
    torch.save(_b0_state(1000, seed=4), imagenet)
    model = build_model("frafer", 7, fer_weights=str(imagenet), **fr_sizes_for(tmp_path))
    loaded = torch.load(imagenet, weights_only=True)
    assert torch.equal(model.fer.state_dict()["features.3.0.block.1.1.weight"], loaded["features.3.0.block.1.1.weight"])
    assert model.fer.classifier[1].out_features == 7             # the 1000-class head is replaced

    scratch = build_model("frafer_ssce", 7)
    assert scratch.provenance == {"fer": "scratch", "fr": None} and "from scratch" in scratch.weights_note


def fr_sizes_for(tmp_path: Path) -> dict:
    path = tmp_path / "fr.pt"
    if not path.is_file():
        torch.save(_b0_state(9131, seed=5), path)
    return dict(fr_network="efficientnet_b0", fr_weights=str(path), fr_input_size=64)


def test_fr_weights_load_and_the_identity_head_is_not_needed(fr_b0_file, tmp_path):
    model = build_model("frafer", 7, **fr_sizes(fr_b0_file))
    state = torch.load(fr_b0_file, weights_only=True)
    own = model.fr.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if k.startswith("features."))
    assert model.provenance["fr"] == str(fr_b0_file)
    features_only = tmp_path / "features_only.pt"
    torch.save({k: v for k, v in state.items() if k.startswith("features.")}, features_only)
    build_model("frafer", 7, fr_network="efficientnet_b0", fr_weights=str(features_only))


def test_fer_weights_of_the_wrong_shape_name_the_key_and_the_file(tmp_path):
    state = _b0_state(8, seed=0)
    state["features.1.0.block.0.0.weight"] = torch.zeros(16, 1, 3, 3)
    bad = tmp_path / "wrong_shape.pt"
    torch.save(state, bad)
    with pytest.raises(ConfigError) as error:
        build_model("frafer_b0", 8, fer_weights=str(bad))
    assert "features.1.0.block.0.0.weight" in str(error.value) and str(bad) in str(error.value)
    assert FER_WEIGHTS_KEY in str(error.value)

    state = _b0_state(8, seed=0)
    del state["features.2.1.block.0.1.running_var"]
    missing = tmp_path / "missing_key.pt"
    torch.save(state, missing)
    with pytest.raises(ConfigError, match=r"missing: features\.2\.1\.block\.0\.1\.running_var") as error:
        build_model("frafer_b0", 8, fer_weights=str(missing))
    assert str(missing) in str(error.value)

    with pytest.raises(ConfigError, match="no such file"):
        build_model("frafer_b0", 8, fer_weights=str(tmp_path / "absent.pt"))


def test_fr_weights_of_the_wrong_shape_name_the_key_and_the_file(tmp_path):
    state = _b0_state(9131, seed=0)
    state["features.0.0.weight"] = torch.zeros(24, 3, 3, 3)
    bad = tmp_path / "fr_wrong.pt"
    torch.save(state, bad)
    with pytest.raises(ConfigError) as error:
        build_model("frafer", 7, fr_network="efficientnet_b0", fr_weights=str(bad))
    message = str(error.value)
    assert "features.0.0.weight" in message and str(bad) in message and FR_WEIGHTS_KEY in message


def test_an_fr_file_that_is_not_dlibs_is_refused_naming_it(tmp_path):
    garbage = tmp_path / "not_dlib.dat"
    garbage.write_bytes(b"\x01\x0cnot a network at all")
    with pytest.raises(DlibFormatError, match=str(garbage)):
        build_model("frafer", 7, fr_weights=str(garbage))
    with pytest.raises(FileNotFoundError, match="missing.dat"):
        build_model("frafer_concat", 7, fr_weights=str(tmp_path / "missing.dat"))


def test_a_torchvision_fr_network_needs_its_weights():
    with pytest.raises(ValueError, match=FR_WEIGHTS_KEY):
        build_model("frafer", 7, fr_network="efficientnet_b0")


# ---------------------------------------------------------------------------------------------------------
# Layer indices and other bad input


@pytest.mark.parametrize("q", [0, 10, -1, "stem", 1.0, True])
def test_a_fer_map_q_the_network_lacks_names_the_valid_ones(q):
    with pytest.raises(ValueError, match=r"q \(the FER map\).*valid: q = 1 \.\. 9 of EfficientNet-B0: 1 \(32x112x112"):
        build_model("frafer_cscsse", 7, q=q)


@pytest.mark.parametrize("p", [0, 8, "level5"])
def test_an_fr_map_p_dlib_lacks_names_the_valid_ones_before_reading_the_file(p, tmp_path):
    # The file does not exist: the index is checked first.
    with pytest.raises(ValueError, match=r"valid: p = 1 \(stem, 32x72x72 at 150\).*7 \(level0"):
        build_model("frafer", 7, p=p, fr_weights=str(tmp_path / "absent.dat"))


def test_an_fr_map_p_a_torchvision_fr_lacks_names_the_valid_ones(fr_b0_file):
    with pytest.raises(ValueError, match=r"p = 1 \.\. 9 of efficientnet_b0 .*channels 32, 16, 24"):
        build_model("frafer", 7, **fr_sizes(fr_b0_file, p=10))


def test_unknown_sizes_and_networks_are_refused():
    with pytest.raises(TypeError, match="unknown model sizes"):
        build_model("frafer_b0", 7, input_size=224)
    with pytest.raises(ValueError, match="not 'dlib_resnet' nor a torchvision model"):
        build_model("frafer", 7, fr_network="arcface", fr_weights="x.pt")
    with pytest.raises(ValueError, match="interpolation"):
        build_model("frafer_b0", 7, interpolation="area")


def test_bad_batches_and_variants_without_a_map_are_refused():
    model = build_model("frafer_ssce", 7).eval()
    with pytest.raises(ValueError, match=r"batch\['rgb'\] as \(B, 3, H, W\)"):
        model({"rgb": torch.rand(1, 4, 3, 64, 64)})
    with pytest.raises(ValueError, match="per channel"):
        model.attention_map(rgb(1, 64))
    with pytest.raises(ValueError, match="no attention"):
        build_model("frafer_b0", 7).attention_map(rgb(1, 64))


# ---------------------------------------------------------------------------------------------------------
# Every Table III row, forward and backward


@pytest.mark.parametrize("name", TABLE_III)
def test_every_variant_runs_forward_and_backward_at_64_px(name, fr_b0_file):
    torch.manual_seed(0)
    model = build_model(name, 7, **fr_sizes(fr_b0_file, fr_input_size=64, dropout=0.0, stochastic_depth=0.0))
    model.train()
    batch = rgb(2, 64)
    logits = model(batch)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    assert model.pooled_features(batch).shape == (2, 1280)
    F.cross_entropy(logits, batch["label"]).backward()
    for pname, p in model.named_parameters():
        if pname.startswith("fr."):
            assert not p.requires_grad and p.grad is None, pname
            continue
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name}: {pname}'s gradient is zero"
    if name in ("frafer", "frafer_concat"):
        assert model.fr is not None
    else:
        assert model.fr is None
