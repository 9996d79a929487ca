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
