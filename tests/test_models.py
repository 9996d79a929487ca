"""The Enhanced ConvLSTM paper's networks: the registry's variants, eq. 1 and eq. 2 against hand
computations, the skip paths of eq. 2, Table 1's widths, and the stream's kernels and pooling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fer_pipeline.models import (MODELS, ConvLSTMCell, ConvLSTMStream, EnhancedConvLSTMCell, ResNetStream,
                                 SumFusionHead, build_model)

# Tiny sizes, as a YAML config would give them (lists), so every variant runs in well under a second.
TINY = dict(input_size=32, feature_dim=6, convlstm_hidden=[4, 4, 8, 8], fc_hidden=[8, 8], dropout=0.2,
            resnet_width_multiplier=0.25, resnet_blocks=[1, 1, 1, 1], norm_groups=2)
FIELDS = {"ablation_a": {"dyn_rgb", "dyn_flow"}, "ablation_b": {"rgb", "flow"}, "ablation_c": {"rgb", "flow"},
          "ablation_d": {"rgb", "flow", "dyn_rgb", "dyn_flow"}, "ablation_e": {"rgb", "flow", "dyn_rgb", "dyn_flow"}}


def make_batch(fields, batch=3, length=6, size=32, seed=0) -> dict[str, torch.Tensor]:
    """A batch shaped like fer_pipeline.windows' items, holding only ``fields`` and the label."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"rgb": (batch, length, 3, size, size), "flow": (batch, length - 1, 2, size, size),
              "dyn_rgb": (batch, 3, size, size), "dyn_flow": (batch, 2, size, size)}
    out = {f: torch.randn(shapes[f], generator=g) for f in fields}
    if "rgb" in out:
        out["rgb"] = out["rgb"].sigmoid()  # rgb frames are in [0, 1]
    out["label"] = torch.randint(0, 6, (batch,), generator=g)
    return out


# --- the registry ---------------------------------------------------------------------------------------

def test_the_five_variants_of_table_1_are_registered():
    for letter in "abcde":
        entry = MODELS[f"ablation_{letter}"]
        assert entry.description.startswith(f"({letter}) ")
    assert "proposed" in MODELS["ablation_e"].description


@pytest.mark.parametrize("name", sorted(FIELDS))  # the fusion study's networks: test_fusion_models.py
def test_variant_forward_and_backward(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=6, **TINY)
    batch = make_batch(model.fields)
    logits = model(batch)
    assert logits.shape == (3, 6)
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, batch["label"]).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: {pname}'s gradient is zero everywhere"


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_variant_reads_only_its_fields(name):
    model = build_model(name, num_classes=6, **TINY).eval()
    assert set(model.fields) == FIELDS[name]
    # make_batch holds only the model's own fields: it needs no other
    assert model(make_batch(model.fields)).shape == (3, 6)
    incomplete = make_batch(set(model.fields) - {sorted(model.fields)[0]})
    with pytest.raises(KeyError, match=sorted(model.fields)[0]):
        model(incomplete)


def test_build_model_names_what_is_wrong():
    with pytest.raises(KeyError, match="ablation_e"):
        build_model("ablation_z", num_classes=6)
    with pytest.raises(TypeError, match="hidden_widths"):
        build_model("ablation_e", num_classes=6, hidden_widths=[4])


# --- eq. 1 and eq. 2 by hand ----------------------------------------------------------------------------

def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def conv_same(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Zero-padded cross-correlation of one 2-D map with one k x k kernel, as nn.Conv2d computes it."""
    k = w.shape[0]
    padded = np.pad(x, k // 2)
    return np.array([[np.sum(padded[r:r + k, c:c + k] * w) for c in range(x.shape[1])]
                     for r in range(x.shape[0])])


def set_by_hand(cell: ConvLSTMCell, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Give a 1-channel, 3x3-kernel cell random weights; return them by the paper's names."""
    w = {name: rng.normal(size=(3, 3)) for name in ("xi", "xf", "xc", "xo", "hi", "hf", "hc", "ho", "xs")}
    w.update({name: rng.normal(size=(3, 3)) for name in ("ci", "cf", "co")})  # peepholes: one per pixel
    w.update({name: rng.normal() for name in ("bi", "bf", "bc", "bo", "gamma", "beta")})
    with torch.no_grad():
        cell.conv_x.weight.copy_(torch.tensor(np.stack([w[n] for n in ("xi", "xf", "xo", "xc")])[:, None]))
        cell.conv_x.bias.copy_(torch.tensor([w[n] for n in ("bi", "bf", "bo", "bc")], dtype=torch.float64))
        cell.conv_h.weight.copy_(torch.tensor(np.stack([w[n] for n in ("hi", "hf", "ho", "hc")])[:, None]))
        cell.peephole.copy_(torch.tensor(np.stack([w[n] for n in ("ci", "cf", "co")])[:, None]))
        if isinstance(cell, EnhancedConvLSTMCell):
            cell.conv_skip.weight.copy_(torch.tensor(w["xs"])[None, None])
            cell.norm.weight.fill_(w["gamma"])
            cell.norm.bias.fill_(w["beta"])
    return w


def eq1_memory(w, x, h, c):
    """Eq. 1 written out: returns (o_t ∘ tanh(c_t), c_t)."""
    i = sigmoid(conv_same(x, w["xi"]) + conv_same(h, w["hi"]) + w["ci"] * c + w["bi"])
    f = sigmoid(conv_same(x, w["xf"]) + conv_same(h, w["hf"]) + w["cf"] * c + w["bf"])
    c_new = f * c + i * np.tanh(conv_same(x, w["xc"]) + conv_same(h, w["hc"]) + w["bc"])
    o = sigmoid(conv_same(x, w["xo"]) + conv_same(h, w["ho"]) + w["co"] * c + w["bo"])
    return o * np.tanh(c_new), c_new


def test_conventional_cell_matches_eq_1_by_hand():
    rng = np.random.default_rng(1)
    cell = ConvLSTMCell(1, 1, kernel_size=3, spatial_size=3).double()
    w = set_by_hand(cell, rng)
    xs = rng.normal(size=(3, 3, 3))
    h, c = np.zeros((3, 3)), np.zeros((3, 3))
    state = None
    for x in xs:  # three steps, so the peepholes and W_h act on non-zero states
        h, c = eq1_memory(w, x, h, c)
        with torch.no_grad():
            h_torch, state = cell(torch.tensor(x)[None, None], state)
        np.testing.assert_allclose(h_torch[0, 0].numpy(), h, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(state.c[0, 0].numpy(), c, rtol=1e-10, atol=1e-12)


def test_enhanced_cell_matches_eq_2_by_hand():
    rng = np.random.default_rng(2)
    cell = EnhancedConvLSTMCell(1, 1, kernel_size=3, spatial_size=3, norm_groups=1).double()
    w = set_by_hand(cell, rng)

    def group_norm(v):
        return (v - v.mean()) / np.sqrt(v.var() + cell.norm.eps) * w["gamma"] + w["beta"]

    xs = rng.normal(size=(4, 3, 3))
    h_prev, h, c = np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((3, 3))  # h_{t-2} = h_{t-1} = 0 for t = 0
    state = None
    for x in xs:  # four steps: from t = 2 on, h_{t-2} is a real earlier output
        gated, c = eq1_memory(w, x, h, c)
        h_prev, h = h, group_norm(gated + h_prev + conv_same(x, w["xs"]))
        with torch.no_grad():
            h_torch, state = cell(torch.tensor(x)[None, None], state)
        np.testing.assert_allclose(h_torch[0, 0].numpy(), h, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(state.c[0, 0].numpy(), c, rtol=1e-10, atol=1e-12)


# --- the skip paths of eq. 2 ----------------------------------------------------------------------------

def run_cell(cell, xs):
    """h_0 .. h_{T-1} of a cell over xs (T, B, C, H, W), one forward call per step."""
    state, hs = None, []
    for x in xs:
        h, state = cell(x, state)
        hs.append(h)
    return hs, state


def test_enhanced_output_reads_the_hidden_state_two_steps_back():
    torch.manual_seed(0)
    cell = EnhancedConvLSTMCell(2, 4, kernel_size=3, spatial_size=8, norm_groups=2)
    xs = torch.randn(3, 1, 2, 8, 8)
    _, state = run_cell(cell, xs[:2])  # state after t = 1: (h_1, c_1, h_prev = h_0)
    h2, _ = cell(xs[2], state)
    # Change only h_{t-2}, the h_0 that step 2 sees: h_1, c_1 and x_2 stay as they were.
    h2_perturbed, _ = cell(xs[2], state._replace(h_prev=state.h_prev + torch.randn_like(state.h_prev)))
    assert not torch.allclose(h2, h2_perturbed)
    # The conventional cell carries no h_{t-2} at all.
    _, conventional_state = run_cell(ConvLSTMCell(2, 4, kernel_size=3, spatial_size=8), xs[:2])
    assert conventional_state.h_prev is None


@pytest.mark.parametrize("cell_type", ["enhanced", "conventional"])
def test_skip_paths_carry_the_gradient_when_the_gates_are_cut(cell_type):
    """With every gate weight at zero, x_t reaches h_t only through W_xs * x_t and h_{t-2} only through
    the temporal skip: h_2 depends on x_0 (via h_0, two steps back) but not on x_1, and only in the
    Enhanced cell."""
    torch.manual_seed(0)
    cell = (EnhancedConvLSTMCell(2, 4, kernel_size=3, spatial_size=8, norm_groups=2) if cell_type == "enhanced"
            else ConvLSTMCell(2, 4, kernel_size=3, spatial_size=8))
    with torch.no_grad():
        cell.conv_x.weight.zero_()
        cell.conv_h.weight.zero_()
        cell.peephole.zero_()
    xs = torch.randn(3, 1, 2, 8, 8, requires_grad=True)
    hs, _ = run_cell(cell, xs)
    (grad,) = torch.autograd.grad((hs[2] * torch.randn_like(hs[2])).sum(), xs)
    assert grad[1].abs().max() == 0  # h_1 feeds step 2 only through the (cut) gates
    if cell_type == "enhanced":
        assert grad[0].abs().max() > 1e-3  # temporal skip h_0 -> h_2, and spatial skip x_0 -> h_0
        assert grad[2].abs().max() > 1e-3  # spatial skip x_2 -> h_2
    else:
        assert grad.abs().max() == 0


# --- Table 1 and the streams' shapes --------------------------------------------------------------------

def stage_outputs(resnet: ResNetStream, x: torch.Tensor) -> list[torch.Size]:
    shapes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: shapes.append(out.shape))
             for m in [resnet.stem, *resnet.stages]]
    resnet(x)
    for hook in hooks:
        hook.remove()
    return shapes


def test_resnet_defaults_have_the_widths_of_table_1():
    resnet = ResNetStream(3).eval()
    shapes = stage_outputs(resnet, torch.randn(1, 3, 32, 32))
    # conv1 16; conv2_x .. conv5_x end at 32, 64, 128, 128; the resolution halves from conv3_x on
    assert [s[1] for s in shapes] == [16, 32, 64, 128, 128]
    assert [s[-1] for s in shapes] == [32, 32, 16, 8, 4]
    assert [len(stage) for stage in resnet.stages] == [3, 4, 6, 3]
    table1 = [(16, 16, 32), (32, 32, 64), (64, 32, 128), (128, 64, 128)]  # conv4_x's 3x3 is 32, as printed
    for stage, widths in zip(resnet.stages, table1):
        for block in stage:
            assert (block.conv1[0].out_channels, block.conv2[0].out_channels,
                    block.conv3[0].out_channels) == widths
            assert (block.conv1[0].kernel_size, block.conv2[0].kernel_size,
                    block.conv3[0].kernel_size) == ((1, 1), (3, 3), (1, 1))
    assert resnet.stem[0][0].kernel_size == (3, 3)
    out = resnet(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 128) and out.abs().max() < 1  # tanh


def test_resnet_width_multiplier_and_blocks_shrink_it():
    resnet = ResNetStream(2, feature_dim=6, width_multiplier=0.25, blocks=(1, 1, 1, 1)).eval()
    shapes = stage_outputs(resnet, torch.randn(1, 2, 32, 32))
    assert [s[1] for s in shapes] == [4, 8, 16, 32, 32]
    assert resnet(torch.randn(2, 2, 32, 32)).shape == (2, 6)


def test_convlstm_stream_kernels_and_pooling():
    stream = ConvLSTMStream(3, hidden=(4, 4, 8, 8), input_size=32, feature_dim=6, cell="conventional")
    assert [cell.kernel_size for cell in stream.cells] == [5, 5, 3, 3]
    assert [cell.conv_h.kernel_size for cell in stream.cells] == [(5, 5), (5, 5), (3, 3), (3, 3)]
    assert [tuple(cell.peephole.shape[-2:]) for cell in stream.cells] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    pooled = []
    stream.pool.register_forward_hook(lambda _m, _i, out: pooled.append(tuple(out.shape[-3:])))
    assert stream(torch.rand(2, 6, 3, 32, 32)).shape == (2, 6)
    # a max pooling after each of the 4 layers: 32 -> 16 -> 8 -> 4 -> 2
    assert pooled == [(4, 16, 16), (4, 8, 8), (8, 4, 4), (8, 2, 2)]


def test_convlstm_stream_feature_dim_and_input_size():
    stream = ConvLSTMStream(2, hidden=(4, 4, 8, 8), input_size=32, feature_dim=8, cell="enhanced")
    assert isinstance(stream.proj, torch.nn.Identity)  # the last width already is feature_dim
    assert all(isinstance(cell, EnhancedConvLSTMCell) for cell in stream.cells)
    with pytest.raises(ValueError, match="input_size"):
        stream(torch.rand(1, 4, 2, 48, 48))
    with pytest.raises(ValueError, match="cell"):
        ConvLSTMStream(2, cell="peephole-free")


# --- the fusion head --------------------------------------------------------------------------------------

def test_stream_dropout_drops_whole_streams_in_training_only():
    """ModDrop: in training each sample loses each stream's whole feature with probability p, the kept ones
    scaled by 1/(1-p); in evaluation the head is the plain sum."""
    torch.manual_seed(0)
    head = SumFusionHead(feature_dim=5, num_classes=5, hidden=[], dropout=0.0, stream_dropout=0.5)
    with torch.no_grad():                        # an identity head: the logits are the fused vector z
        head.mlp[0].weight.copy_(torch.eye(5))
        head.mlp[0].bias.zero_()
    features = [torch.randn(4000, 5) for _ in range(3)]
    head.eval()
    torch.testing.assert_close(head(features), sum(features))
    head.train()
    fused = head(features)
    masks = torch.cartesian_prod(*[torch.tensor([0.0, 1.0])] * 3)                          # (8, 3)
    candidates = torch.stack([sum(m * f for m, f in zip(mask, features)) / 0.5 for mask in masks])
    best = (candidates - fused).abs().amax(dim=2).argmin(dim=0)
    assert (candidates[best, torch.arange(4000)] - fused).abs().max() < 1e-5   # each sample: one subset, scaled
    kept = masks[best]                                                          # (B, 3)
    assert abs(kept.mean().item() - 0.5) < 0.03                                 # each stream kept half the time
    assert abs(kept.sum(1).eq(0).float().mean().item() - 0.125) < 0.03          # independently per stream
    with pytest.raises(ValueError, match="stream_dropout"):
        SumFusionHead(5, 3, stream_dropout=1.0)


def test_stream_dropout_reaches_the_variants_from_the_sizes():
    model = build_model("ablation_e", 6, **{**TINY, "stream_dropout": 0.25})
    assert model.fusion.stream_dropout == 0.25
    assert build_model("ablation_e", 6, **TINY).fusion.stream_dropout == 0.0   # the paper's plain sum

