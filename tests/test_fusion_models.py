"""The fusion study's networks (VGG-Face, ResNet-10, C3D, the residual BiLSTM): the registry sweep (shapes,
finite outputs, a gradient for every parameter), each family's structure, and pretrained weights from a file."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fer_pipeline.config import ConfigError
from fer_pipeline.models import MODELS, build_model
from fer_pipeline.models.pretrained import load_pretrained

# Tiny sizes per registered network, and a batch like fer_pipeline.frames' items.
TINY = {
    "vgg_face": dict(input_size=32, width_multiplier=0.0625, fc_width=8, batch_norm=True, dropout=0.1),
    "resnet10": dict(input_size=32, width_multiplier=0.125, fc1_width=8, dropout=0.1),
    "c3d": dict(crop=32, width_multiplier=0.0625, fc_width=8, batch_norm=True, dropout=0.1),
    "bilstm": dict(input_dim=12, hidden=5, layers=2, dropout=0.1),
}
FEATURE_DIMS = {"vgg_face": 8, "resnet10": 8, "c3d": 8}


def make_batch(name: str, batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = {"vgg_face": (batch, 3, 32, 32), "resnet10": (batch, 3, 32, 32), "c3d": (batch, 16, 3, 32, 32)}
    out = {"label": torch.randint(0, 7, (batch,), generator=g)}
    if name == "bilstm":
        out["features"] = torch.randn(batch, 10, 12, generator=g)
    else:
        out["rgb"] = torch.rand(shapes[name], generator=g)
    return out


def test_every_registered_network_is_swept():
    others = {name for name in MODELS if name.startswith(("ablation_", "stc", "frafer"))}  # test_models.py, test_nlstm.py, test_frafer_models.py
    assert set(MODELS) - others == set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_and_backward(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, **TINY[name])
    batch = make_batch(name)
    assert set(model.fields) <= set(batch)
    logits = model(batch)
    assert logits.shape == (3, 7) and torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, batch["label"]).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name}: {pname}'s gradient is zero"


@pytest.mark.parametrize("name", sorted(FEATURE_DIMS))
def test_extract_gives_the_feature_layer(name):
    model = build_model(name, num_classes=7, **TINY[name]).eval()
    with torch.no_grad():
        features = model.extract(make_batch(name)["rgb"])
    assert features.shape == (3, FEATURE_DIMS[name])


def test_vgg16_has_13_convolutions_5_poolings_and_fc6_of_the_paper():
    model = build_model("vgg_face", 7, input_size=224, width_multiplier=1 / 16, fc_width=4096)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 5
    assert [c.out_channels for c in convs] == [4, 4, 8, 8, 16, 16, 16, 32, 32, 32, 32, 32, 32]  # 64..512 / 16
    assert model.fc6.in_features == 32 * 7 * 7 and model.fc6.out_features == 4096  # 224 / 2^5 = 7
    assert model.fc8.out_features == 7
    with pytest.raises(ValueError, match="224 x 224"):
        model.extract(torch.rand(1, 3, 112, 112))


def test_resnet10_has_four_basic_blocks_and_fc1():
    model = build_model("resnet10", 7, width_multiplier=0.125, fc1_width=512)
    blocks = [getattr(model, f"layer{i}") for i in range(1, 5)]
    assert [len(b) for b in blocks] == [1, 1, 1, 1]
    assert [b[0].conv2.out_channels for b in blocks] == [8, 16, 32, 64]  # 64, 128, 256, 512 / 8
    assert model.fc1.out_features == 512 and model.fc.in_features == 512
    # any input of at least 32 pixels works: the paper's 150 too
    assert model.extract(torch.rand(1, 3, 150, 150)).shape == (1, 512)
    with pytest.raises(ValueError, match="at least 32"):
        build_model("resnet10", 7, input_size=16)


def test_c3d_has_8_convolutions_5_poolings_2_fc_and_averages_long_clips():
    model = build_model("c3d", 7, crop=112, width_multiplier=1 / 32, fc_width=16).eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool3d)]
    assert len(convs) == 8 and all(c.kernel_size == (3, 3, 3) for c in convs)
    assert len(pools) == 5 and pools[0].kernel_size == (1, 2, 2)
    assert model.fc6.in_features == 16 * 4 * 4  # 512 / 32 channels, 112 -> 4 x 4 after pool5 (padded)
    assert (model.fc6.out_features, model.fc7.out_features, model.fc8.out_features) == (16, 16, 7)
    # 32 frames leave two time steps after pool5; their mean enters fc6, which keeps its size
    seen = {}
    model.blocks["conv5b"].register_forward_hook(lambda _m, _i, out: seen.__setitem__("pool5", out))
    model.fc6.register_forward_pre_hook(lambda _m, args: seen.__setitem__("fc6_in", args[0]))
    with torch.no_grad():
        assert model.extract(torch.rand(2, 32, 3, 112, 112)).shape == (2, 16)
    assert seen["pool5"].shape == (2, 16, 2, 4, 4)
    torch.testing.assert_close(seen["fc6_in"], seen["pool5"].mean(dim=2).flatten(1))
    with pytest.raises(ValueError, match="T >= 16"):
        model.extract(torch.rand(1, 8, 3, 112, 112))


def test_bilstm_predicts_from_the_last_step_of_residual_bidirectional_layers():
    torch.manual_seed(0)
    model = build_model("bilstm", 4, input_dim=12, hidden=28, layers=2).eval()
    assert all(lstm.bidirectional and lstm.hidden_size == 28 for lstm in model.lstms)
    x = torch.randn(2, 10, 12)
    with torch.no_grad():
        out = model({"features": x})
        changed_first = x.clone()
        changed_first[:, 0] = torch.randn(2, 12)
        # the forward direction carries the first frame to the last step
        assert not torch.allclose(out, model({"features": changed_first}))
        # the residual path: with the LSTMs silenced, the output is the projection of the last frame alone
        for lstm in model.lstms:
            for p in lstm.parameters():
                p.zero_()
        h_last = model.inp(model.norm(x[:, -1])).relu()
        torch.testing.assert_close(model({"features": x}), model.out(h_last))
        # each direction's last step: the backward LSTM ends on frame 1, so frame 1 alone can change the output
        reverse = model.lstms[-1]
        reverse.bias_ih_l0_reverse.fill_(1.0)
        reverse.weight_ih_l0_reverse.normal_()
        changed_first = x.clone()
        changed_first[:, 0] = torch.randn(2, 12)
        assert not torch.allclose(model({"features": x}), model({"features": changed_first}))


# -- pretrained weights -------------------------------------------------------------------------------------

def test_pretrained_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    source = build_model("vgg_face", 7, **TINY["vgg_face"])
    torch.save(source.state_dict(), tmp_path / "vgg.pt")
    torch.manual_seed(1)
    target = build_model("vgg_face", 7, **TINY["vgg_face"])
    assert load_pretrained(target, tmp_path / "vgg.pt", "studies.fusion.weights.vgg_face") == []
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), name


def test_pretrained_head_of_other_classes_is_replaced_and_wrapped_files_load(tmp_path):
    torch.manual_seed(0)
    source = build_model("c3d", 487, **TINY["c3d"])  # Sports-1M has 487 classes
    torch.save({"model": source.state_dict(), "epoch": 3}, tmp_path / "best.pt")  # as fer_pipeline.train saves
    target = build_model("c3d", 7, **TINY["c3d"])
    head_before = target.fc8.weight.clone()
    skipped = load_pretrained(target, tmp_path / "best.pt", "studies.fusion.weights.c3d")
    assert skipped == ["fc8.bias", "fc8.weight"]
    assert torch.equal(target.fc8.weight, head_before)
    assert torch.equal(target.fc7.weight, source.fc7.weight)


def test_pretrained_weights_that_do_not_fit_name_the_key_and_the_file(tmp_path):
    wide = build_model("resnet10", 7, **{**TINY["resnet10"], "width_multiplier": 0.25})
    torch.save(wide.state_dict(), tmp_path / "wide.pt")
    narrow = build_model("resnet10", 7, **TINY["resnet10"])
    with pytest.raises(ConfigError, match=r"studies\.fusion\.weights\.resnet10 = '.*wide\.pt'.*other shapes: .*"
                                         r"conv1\.weight: file \(16, 3, 7, 7\), network \(8, 3, 7, 7\)"):
        load_pretrained(narrow, tmp_path / "wide.pt", "studies.fusion.weights.resnet10")
    torch.save(build_model("vgg_face", 7, **TINY["vgg_face"]).state_dict(), tmp_path / "vgg.pt")
    with pytest.raises(ConfigError, match="missing: bn1.bias.*not in the network: fc6.bias"):
        load_pretrained(narrow, tmp_path / "vgg.pt", "studies.fusion.weights.resnet10")
    with pytest.raises(ConfigError, match="no such file"):
        load_pretrained(narrow, tmp_path / "absent.pt", "studies.fusion.weights.resnet10")
    (tmp_path / "text.pt").write_text("not weights")
    with pytest.raises(ConfigError, match="not a PyTorch state dict"):
        load_pretrained(narrow, tmp_path / "text.pt", "studies.fusion.weights.resnet10")
