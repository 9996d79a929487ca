"""Public releases' weights load into this project's networks (fer_pipeline.models.converters): each on a state
dict written here with the release's names and shapes; a wrong or missing key names the key and the file."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet, resnet18

from fer_pipeline.config import ConfigError
from fer_pipeline.models import build_model
from fer_pipeline.models.converters import convert, reverse_input_channels
from fer_pipeline.models.pretrained import load_pretrained

# The releases' layer names, written out here (not taken from the converters).
VGG_FACE_PORT_CONVS = [f"conv{b}_{i}" for b, n in enumerate((2, 2, 3, 3, 3), start=1) for i in range(1, n + 1)]
C3D_PORT_CONVS = ["conv1", "conv2", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b"]
SMALL_VGG = {"input_size": 32, "width_multiplier": 0.125, "fc_width": 16, "dropout": 0.0}
SMALL_C3D = {"crop": 32, "width_multiplier": 0.125, "fc_width": 16, "dropout": 0.0}


def vgg_face_port(model: nn.Module, classes: int = 2622) -> dict[str, torch.Tensor]:
    """A state dict as the VGG-Face PyTorch port has it, with ``model``'s (our names') values."""
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    state = {}
    for name, conv in zip(VGG_FACE_PORT_CONVS, convs, strict=True):
        state[f"{name}.weight"], state[f"{name}.bias"] = conv.weight.detach().clone(), conv.bias.detach().clone()
    for fc in ("fc6", "fc7"):
        state[f"{fc}.weight"] = getattr(model, fc).weight.detach().clone()
        state[f"{fc}.bias"] = getattr(model, fc).bias.detach().clone()
    state["fc8.weight"] = torch.randn(classes, model.fc8.in_features)
    state["fc8.bias"] = torch.randn(classes)
    return state


def c3d_port(model: nn.Module, classes: int = 487) -> dict[str, torch.Tensor]:
    state = {}
    for name in C3D_PORT_CONVS:
        conv = model.blocks[name][0]
        state[f"{name}.weight"], state[f"{name}.bias"] = conv.weight.detach().clone(), conv.bias.detach().clone()
    for fc in ("fc6", "fc7"):
        state[f"{fc}.weight"] = getattr(model, fc).weight.detach().clone()
        state[f"{fc}.bias"] = getattr(model, fc).bias.detach().clone()
    state["fc8.weight"], state["fc8.bias"] = torch.randn(classes, model.fc8.in_features), torch.randn(classes)
    return state


# -- VGG-Face ------------------------------------------------------------------------------------------------

def test_vgg_face_port_loads_into_vgg_face(tmp_path):
    torch.manual_seed(0)
    source = build_model("vgg_face", 7, **SMALL_VGG)
    torch.save(vgg_face_port(source), tmp_path / "vgg_face_dag.pth")
    torch.manual_seed(1)
    target = build_model("vgg_face", 7, **SMALL_VGG)
    skipped = load_pretrained(target, tmp_path / "vgg_face_dag.pth", "studies.fusion.weights.vgg_face")
    assert skipped == ["fc8.bias", "fc8.weight"]  # 2622 identities: the head is re-initialised
    for name, value in source.state_dict().items():
        if not name.startswith("fc8."):
            assert torch.equal(value, target.state_dict()[name]), name
    frames = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(source.eval().extract(frames), target.eval().extract(frames))


def test_vgg_face_port_at_the_papers_size_has_the_published_shapes():
    """At 224, the port's shapes (conv1_1 (64, 3, 3, 3) ... fc6 (4096, 25088), fc8 (2622, 4096)) fit; fc6 kept
    as a 7 x 7 convolution (as some ports do) is flattened. On the meta device: no memory."""
    with torch.device("meta"):
        model = build_model("vgg_face", 7)
        widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
        state, channels = {}, 3
        for name, width in zip(VGG_FACE_PORT_CONVS, widths):
            state[f"{name}.weight"], state[f"{name}.bias"] = torch.empty(width, channels, 3, 3), torch.empty(width)
            channels = width
        state.update({"fc6.weight": torch.empty(4096, 512, 7, 7), "fc6.bias": torch.empty(4096),
                      "fc7.weight": torch.empty(4096, 4096), "fc7.bias": torch.empty(4096),
                      "fc8.weight": torch.empty(2622, 4096), "fc8.bias": torch.empty(2622)})
        converted, fresh = convert(model, state, "vgg_face_dag.pth", "studies.fusion.weights.vgg_face")
    assert fresh == [] and converted["features.28.weight"].shape == (512, 512, 3, 3)
    assert converted["fc6.weight"].shape == (4096, 25088)


def test_vgg_face_port_with_a_missing_or_misshaped_key_names_it_and_the_file(tmp_path):
    model = build_model("vgg_face", 7, **SMALL_VGG)
    state = vgg_face_port(model)
    del state["conv5_3.weight"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(ConfigError, match=r"studies\.fusion\.weights\.vgg_face = '.*cut\.pth' \(the VGG-Face "
                                         r"PyTorch port.*missing: conv5_3\.weight"):
        load_pretrained(build_model("vgg_face", 7, **SMALL_VGG), tmp_path / "cut.pth", "studies.fusion.weights.vgg_face")
    state = vgg_face_port(model)
    state["conv2_1.weight"] = torch.zeros(5, 8, 3, 3)
    state["conv6_1.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(ConfigError, match=r"odd\.pth.*no place in the network: conv6_1\.weight.*other shapes: "
                                         r"conv2_1\.weight: file \(5, 8, 3, 3\), network \(16, 8, 3, 3\)"):
        load_pretrained(build_model("vgg_face", 7, **SMALL_VGG), tmp_path / "odd.pth", "studies.fusion.weights.vgg_face")
    torch.save(vgg_face_port(model), tmp_path / "port.pth")
    with pytest.raises(ConfigError, match="no batch normalisation: set sizes.batch_norm false"):
        load_pretrained(build_model("vgg_face", 7, **SMALL_VGG, batch_norm=True), tmp_path / "port.pth",
                        "studies.fusion.weights.vgg_face")


# -- C3D -----------------------------------------------------------------------------------------------------

def test_c3d_sports1m_port_loads_into_c3d_also_from_data_parallel(tmp_path):
    torch.manual_seed(0)
    source = build_model("c3d", 7, **SMALL_C3D)
    state = {f"module.{k}": v for k, v in c3d_port(source).items()}  # saved from nn.DataParallel
    torch.save(state, tmp_path / "c3d.pickle")
    torch.manual_seed(1)
    target = build_model("c3d", 7, **SMALL_C3D)
    assert load_pretrained(target, tmp_path / "c3d.pickle", "studies.fusion.weights.c3d") == ["fc8.bias", "fc8.weight"]
    clips = torch.rand(1, 16, 3, 32, 32)
    torch.testing.assert_close(source.eval().extract(clips), target.eval().extract(clips))
    state = c3d_port(source)
    del state["conv4b.bias"]
    torch.save(state, tmp_path / "cut.pickle")
    with pytest.raises(ConfigError, match=r"studies\.fusion\.weights\.c3d = '.*cut\.pickle' \(the C3D Sports-1M "
                                         r"PyTorch port.*missing: conv4b\.bias"):
        load_pretrained(target, tmp_path / "cut.pickle", "studies.fusion.weights.c3d")


def test_c3d_port_at_the_papers_size_has_the_published_shapes():
    with torch.device("meta"):
        model = build_model("c3d", 7)
        widths = [64, 128, 256, 256, 512, 512, 512, 512]
        state, channels = {}, 3
        for name, width in zip(C3D_PORT_CONVS, widths):
            state[f"{name}.weight"], state[f"{name}.bias"] = torch.empty(width, channels, 3, 3, 3), torch.empty(width)
            channels = width
        state.update({"fc6.weight": torch.empty(4096, 8192), "fc6.bias": torch.empty(4096),
                      "fc7.weight": torch.empty(4096, 4096), "fc7.bias": torch.empty(4096),
                      "fc8.weight": torch.empty(487, 4096), "fc8.bias": torch.empty(487)})
        converted, _ = convert(model, state, "c3d.pickle", "studies.fusion.weights.c3d")
    assert converted["blocks.conv5b.0.weight"].shape == (512, 512, 3, 3, 3)


# -- torchvision ResNet --------------------------------------------------------------------------------------

def test_torchvision_resnet10_state_dict_loads_and_fc1_stays_new(tmp_path):
    torch.manual_seed(0)
    source = ResNet(BasicBlock, [1, 1, 1, 1])  # torchvision's own class: its real names, ImageNet's 1000 classes
    torch.save(source.state_dict(), tmp_path / "resnet10_imagenet.pth")
    target = build_model("resnet10", 7)
    fc1_before = target.fc1.weight.clone()
    left = load_pretrained(target, tmp_path / "resnet10_imagenet.pth", "studies.fusion.weights.resnet10")
    assert left == ["fc.bias", "fc.weight", "fc1.bias", "fc1.weight"]
    assert torch.equal(target.fc1.weight, fc1_before)
    for name, value in source.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(value, target.state_dict()[name]), name
    # the same trunk: torchvision's pooled features are what our fc1 reads
    source.eval(), target.eval()
    x = torch.rand(1, 3, 64, 64)
    trunk = nn.Sequential(*list(source.children())[:-1])(
        (255 * x - torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)) / torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1))
    torch.testing.assert_close(target.fc1(trunk.flatten(1)), target.extract(x))


def test_torchvision_resnet18_names_the_blocks_resnet10_lacks(tmp_path):
    torch.save(resnet18().state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(ConfigError, match=r"studies\.fusion\.weights\.resnet10 = '.*resnet18\.pth' \(a torchvision "
                                         r"ResNet.*no place in the network: layer1\.1\.bn1\.bias"):
        load_pretrained(build_model("resnet10", 7), tmp_path / "resnet18.pth", "studies.fusion.weights.resnet10")


def test_this_projects_names_pass_unchanged_and_channels_reverse():
    model = build_model("c3d", 7, **SMALL_C3D)
    state = model.state_dict()
    converted, fresh = convert(model, state, "best.pt", "key")
    assert fresh == [] and converted.keys() == state.keys()
    flipped = reverse_input_channels(c3d_port(model), "conv1.weight")
    assert torch.equal(flipped["conv1.weight"][:, 0], model.blocks["conv1"][0].weight[:, 2])


# -- studies.fusion.weights.if_missing -----------------------------------------------------------------------

def test_unset_weights_stop_with_what_to_give_or_train_from_scratch_when_chosen():
    from fer_pipeline import config as config_mod
    from fer_pipeline.studies import fusion

    cfg = config_mod.load()
    model = build_model("c3d", 7, **SMALL_C3D)
    afew = config_mod.study_config(cfg, "afew", "fusion")  # a real dataset: the default, stop
    with pytest.raises(ConfigError, match=r"studies\.fusion\.weights\.c3d is not set.*C3D on Sports-1M.*c3d\.pickle"
                                         r".*if_missing: scratch"):
        fusion.initialise(model, afew, "c3d")
    demo = config_mod.study_config(cfg, "demo", "fusion")  # the demo chooses scratch explicitly
    note = fusion.initialise(model, demo, "c3d")
    assert "trained from scratch" in note and "not the paper's pretrained C3D" in note and "if_missing: scratch" in note


# -- timm's efficientnet_b0 (HSEmotion's AffectNet B0) into FRA-FER's EfficientNet-B0 ---------------------------

# timm's efficientnet_b0, written out from timm/models/efficientnet.py (_gen_efficientnet's arch_def: blocks per
# stage 1, 2, 2, 3, 3, 4, 1; stage 0 'ds', the others 'ir') and _efficientnet_blocks.py (the layers of
# DepthwiseSeparableConv and InvertedResidual, in their order); not taken from the converter.
TIMM_B0_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
TIMM_DS_LAYERS = ("conv_dw", "bn1", "se.conv_reduce", "se.conv_expand", "conv_pw", "bn2")
TIMM_IR_LAYERS = ("conv_pw", "bn1", "conv_dw", "bn2", "se.conv_reduce", "se.conv_expand", "conv_pwl", "bn3")
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def timm_b0_keys(classifier: str | None = "classifier") -> list[str]:
    """timm's efficientnet_b0 state dict keys in its order (``classifier``: the head's prefix; None: no head)."""
    def params(layer: str) -> tuple[str, ...]:
        last = layer.rsplit(".", 1)[-1]
        return BN if last.startswith("bn") else ("weight", "bias") if last.startswith("conv_re") or \
            last.startswith("conv_ex") else ("weight",)

    layers = ["conv_stem", "bn1"]
    for stage, depth in enumerate(TIMM_B0_DEPTHS):
        for block in range(depth):
            layers += [f"blocks.{stage}.{block}.{name}" for name in (TIMM_DS_LAYERS if stage == 0 else TIMM_IR_LAYERS)]
    layers += ["conv_head", "bn2"]
    keys = [f"{layer}.{p}" for layer in layers for p in params(layer)]
    return keys + ([f"{classifier}.weight", f"{classifier}.bias"] if classifier else [])


def timm_b0_state(classes: int = 1000, classifier: str | None = "classifier") -> tuple[nn.Module, dict]:
    """A torchvision B0 with random weights and batch-norm statistics, and the same weights in timm's names and
    shapes (both networks list their tensors in the same order)."""
    import torchvision

    torch.manual_seed(0)
    source = torchvision.models.efficientnet_b0(weights=None, num_classes=classes)
    for module in source.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1), module.running_var.uniform_(0.5, 1.5)
    values = list(source.state_dict().values())
    keys = timm_b0_keys(classifier)
    if classifier is None:
        values = values[:-2]
    state = dict(zip(keys, values, strict=True))
    assert state["conv_stem.weight"].shape == (32, 3, 3, 3) and state["blocks.0.0.conv_dw.weight"].shape == (32, 1, 3, 3)
    assert state["blocks.1.0.conv_pw.weight"].shape == (96, 16, 1, 1)
    assert state["blocks.1.0.se.conv_reduce.weight"].shape == (4, 96, 1, 1)  # timm: a quarter of the block's input
    assert state["blocks.6.0.conv_pwl.weight"].shape == (320, 1152, 1, 1) and state["conv_head.weight"].shape == (1280, 320, 1, 1)
    return source, state


def test_a_timm_efficientnet_b0_loads_into_the_frafer_fer_network(tmp_path):
    """Through the frafer study's loading (sizes.fer_weights, load_pretrained): timm's names, the ImageNet head
    re-initialised for 7 classes; an HSEmotion-style head (classifier.0, 8 classes) kept when the classes fit."""
    source, state = timm_b0_state()
    torch.save(state, tmp_path / "efficientnet_b0_timm.pth")
    model = build_model("frafer_b0", 7, fer_weights=str(tmp_path / "efficientnet_b0_timm.pth"))
    assert model.provenance["fer"].endswith("efficientnet_b0_timm.pth")
    ours = model.fer.state_dict()
    for name, value in source.state_dict().items():
        if not name.startswith("classifier."):
            assert torch.equal(ours[name], value), name
    source.eval(), model.eval()
    x = torch.rand(2, 3, 64, 64)
    normalised = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.pooled_features({"rgb": x}), source.avgpool(source.features(normalised)).flatten(1))
    hsemotion, state8 = timm_b0_state(classes=8, classifier="classifier.0")
    torch.save(state8, tmp_path / "enet_b0_8.pth")
    eight = build_model("frafer_b0", 8, fer_weights=str(tmp_path / "enet_b0_8.pth"))
    assert torch.equal(eight.fer.classifier[1].weight, hsemotion.classifier[1].weight)


def test_a_timm_efficientnet_b0_with_a_missing_or_misshaped_key_names_it_and_the_file(tmp_path):
    _, state = timm_b0_state()
    del state["blocks.3.1.conv_dw.weight"]
    state["blocks.6.1.conv_pw.weight"] = torch.zeros(1152, 320, 1, 1)  # B0's last stage has one block
    torch.save(state, tmp_path / "cut.pth")
    model = build_model("frafer_b0", 7)
    with pytest.raises(ConfigError, match=r"studies\.frafer\.weights\.fer = '.*cut\.pth' \(a timm efficientnet_b0 "
                                         r".*missing: blocks\.3\.1\.conv_dw\.weight; no place in the network: "
                                         r"blocks\.6\.1\.conv_pw\.weight"):
        load_pretrained(model.fer, tmp_path / "cut.pth", "studies.frafer.weights.fer")
    _, state = timm_b0_state()
    state["blocks.2.0.se.conv_reduce.weight"] = torch.zeros(5, 144, 1, 1)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(ConfigError, match=r"odd\.pth.*other shapes: blocks\.2\.0\.se\.conv_reduce\.weight: file "
                                         r"\(5, 144, 1, 1\), network \(6, 144, 1, 1\)"):
        load_pretrained(model.fer, tmp_path / "odd.pth", "studies.frafer.weights.fer")


def test_a_timm_efficientnet_b0_without_a_head_loads_as_the_frozen_fr_network(tmp_path):
    """HSEmotion's VGGFace2-trained B0 is saved with its classifier removed: the FR net's identity head is unused."""
    from fer_pipeline.models.frafer import TorchvisionFR

    source, state = timm_b0_state(classifier=None)
    torch.save(state, tmp_path / "state_vggface2_enet0.pth")
    fr = TorchvisionFR("efficientnet_b0").load(tmp_path / "state_vggface2_enet0.pth", "studies.frafer.weights.fr")
    for name, value in source.state_dict().items():
        if name.startswith("features."):
            assert torch.equal(fr.state_dict()[name], value), name
    torch.save(state, tmp_path / "b0.pth")
    with pytest.raises(ConfigError, match=r"studies\.frafer\.weights\.fr = '.*b0\.pth'.*fits torchvision's "
                                         r"EfficientNet-B0"):
        TorchvisionFR("mobilenet_v2").load(tmp_path / "b0.pth", "studies.frafer.weights.fr")
