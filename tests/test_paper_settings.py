"""Every value a paper states, pinned from the loaded config.yaml: changing one of them fails here.

The values this project chose (config.yaml says which, beside each) are not pinned: they may change with a
reason. The papers (config.yaml's header above ``studies:``): 002 the Japanese version of Miyoshi, Nagata,
Hashimoto (Enhanced ConvLSTM, study ``ablation``), 001 Xu, Ma, Dong, Bai (``fusion``), 003 FRA-FER
(``frafer``), 004 Yu, Liu, Liu, Deng (STC-NLSTM, ``nlstm``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fer_pipeline import config as config_mod
from fer_pipeline.models import build_model
from fer_pipeline.models.fusion import SumFusionHead
from fer_pipeline.models.resnet_streams import TABLE1_BLOCKS, TABLE1_STEM, TABLE1_WIDTHS, Bottleneck, ResNetStream
from fer_pipeline.studies import fusion as fusion_study


@pytest.fixture(scope="module")
def cfg():
    return config_mod.load()


@pytest.fixture(scope="module")
def ablation(cfg):
    return cfg["studies"]["ablation"]


@pytest.fixture(scope="module")
def fusion(cfg):
    return cfg["studies"]["fusion"]


@pytest.fixture(scope="module")
def nlstm(cfg):
    return cfg["studies"]["nlstm"]


# -- 002: Enhanced ConvLSTM (study ablation) -----------------------------------------------------------------

def test_ablation_convlstm_kernels_are_the_papers(ablation):
    # 002, sec. 3.1: 5x5 in layers 1-2, 3x3 in layers 3-4
    assert ablation["sizes"]["convlstm_kernels"] == [5, 5, 3, 3]


def test_ablation_resnet_streams_are_table_1(ablation):
    # 002, Table 1: conv1 3x3,16; conv2_x [16,16,32] x3; conv3_x [32,32,64] x4; conv4_x [64,32,128] x6;
    # conv5_x [128,64,128] x3
    assert TABLE1_STEM == 16
    assert TABLE1_WIDTHS == ((16, 16, 32), (32, 32, 64), (64, 32, 128), (128, 64, 128))
    assert TABLE1_BLOCKS == (3, 4, 6, 3)
    sizes = ablation["sizes"]
    assert sizes["resnet_blocks"] == list(TABLE1_BLOCKS) and sizes["resnet_width_multiplier"] == 1.0
    assert "resnet_widths" not in sizes and "resnet_stem" not in sizes  # the Table 1 defaults apply
    # ... and the network built from the config has them (on the meta device: shapes only, no memory)
    with torch.device("meta"):
        model = build_model("ablation_a", 6, **sizes)
    stream = model.streams["dyn_rgb"]
    assert isinstance(stream, ResNetStream)
    assert stream.stem[0][0].out_channels == 16 and stream.stem[0][0].kernel_size == (3, 3)
    for stage, widths, blocks in zip(stream.stages, TABLE1_WIDTHS, TABLE1_BLOCKS):
        assert len(stage) == blocks
        for block in stage:
            assert isinstance(block, Bottleneck)
            assert (block.conv1[0].out_channels, block.conv2[0].out_channels, block.conv3[0].out_channels) == widths
            assert (block.conv1[0].kernel_size, block.conv2[0].kernel_size, block.conv3[0].kernel_size) == \
                ((1, 1), (3, 3), (1, 1))


def test_ablation_convlstm_kernels_reach_the_built_network(ablation):
    with torch.device("meta"):
        model = build_model("ablation_e", 6, **ablation["sizes"])
    for field in ("rgb", "flow"):
        kernels = [{m.kernel_size for m in cell.modules() if isinstance(m, torch.nn.Conv2d)}
                   for cell in model.streams[field].cells]
        assert kernels == [{(5, 5)}, {(5, 5)}, {(3, 3)}, {(3, 3)}]


def test_ablation_windows_are_16_overlapping_by_8(cfg, ablation):
    # 002, sec. 4: 16-frame clips, consecutive clips overlapping by 8 frames
    preset = cfg["presets"][ablation["preset"]]
    assert ablation["preset"] == "ec112"
    assert preset["window"] == {"length": 16, "stride": 8}


def test_enterface_is_five_subject_groups_left_out_in_turn(cfg):
    # 002, sec. 4: subjects split into 5 groups, leave-one-subject-group-out, the mean of the 5 accuracies
    assert cfg["datasets"]["enterface"]["protocol"] == {"name": "losgo", "groups": 5}
    assert "ablation" in cfg["datasets"]["enterface"]["studies"]


def test_ablation_fusion_is_a_plain_sum_into_three_fc_layers(ablation):
    # 002, sec. 3 and Fig. 2: the four streams' features summed (no stream dropout), then 3 FC layers
    assert ablation["sizes"]["stream_dropout"] == 0.0
    assert len(ablation["sizes"]["fc_hidden"]) == 2  # two hidden layers and the output: three FC layers
    with torch.device("meta"):
        model = build_model("ablation_e", 6, **ablation["sizes"])
    assert isinstance(model.fusion, SumFusionHead) and model.fusion.stream_dropout == 0.0
    assert sum(isinstance(m, torch.nn.Linear) for m in model.fusion.mlp) == 3
    assert set(model.fields) == {"rgb", "flow", "dyn_rgb", "dyn_flow"}


def test_ablation_optimiser_is_momentum_sgd(ablation):
    # 002, sec. 4: momentum SGD (no rate given: lr is this project's and not pinned)
    assert ablation["training"].get("optimizer", "sgd") == "sgd" and ablation["training"]["momentum"] > 0


def test_ablation_paper_numbers(ablation):
    # 002, Table 2 (000, Table I)
    assert ablation["paper_accuracy"] == {"ablation_a": 33.70, "ablation_b": 39.84, "ablation_c": 44.28,
                                          "ablation_d": 41.48, "ablation_e": 45.29}
    assert ablation["variants"] == ["ablation_a", "ablation_b", "ablation_c", "ablation_d", "ablation_e"]


# -- 001: Xu et al. (study fusion) ---------------------------------------------------------------------------

def test_fusion_preprocessing_is_two_eye_alignment_at_128(cfg, fusion):
    # 001, sec. II-A and III-B
    preset = cfg["presets"][fusion["preset"]]
    assert preset["alignment"] == "two_eye" and preset["size"] == 128
    assert fusion["augmentation"]["flip"] is True and fusion["augmentation"]["rotate_deg"] > 0


def test_fusion_frame_networks_at_paper_sizes(fusion):
    # 001, sec. III-B: VGG-FACE at 224, ResNet-10 at 150; SGD, lr 0.0001, batch 32
    assert fusion["vgg_face"]["input_size"] == 224 and fusion["resnet10"]["input_size"] == 150
    for network in ("vgg_face", "resnet10"):
        training = fusion[network]["training"]
        assert (training["optimizer"], training["lr"], training["batch_size"]) == ("sgd", 0.0001, 32)
    assert fusion["vgg_face"]["sizes"]["width_multiplier"] == 1.0 and fusion["resnet10"]["sizes"]["width_multiplier"] == 1.0


def test_fusion_aggregation_is_9216_values_at_paper_sizes(fusion):
    # 001, Fig. 1 and sec. II-C: fc6 (4096) and fc1 (512), each SSR+L2, mean and variance: 9216 values
    dims = {}
    for network in fusion_study.FRAME_NETWORKS:
        block = fusion[network]
        with torch.device("meta"):
            model = fusion_study.build_network(network, block, 7)
            size = block["input_size"]
            dims[network] = model.extract(torch.empty(2, 3, size, size)).shape[1]
    assert dims == {"vgg_face": 4096, "resnet10": 512}
    rng = np.random.default_rng(0)
    frames = {network: {"clip": rng.normal(size=(5, d)).astype(np.float32)} for network, d in dims.items()}
    vectors = {network: fusion_study.video_vectors(network, frames[network]) for network in dims}
    aggregated = np.concatenate([vectors[n]["clip"] for n in fusion_study.SVM_INPUTS["aggregation"]])
    assert aggregated.shape == (9216,)


def test_fusion_c3d_and_lstm_read_128_frames(fusion):
    # 001, sec. III-B: 128 sequent faces at 128 x 171 for C3D (SGD, lr 0.0001); the LSTM on 128 VGG-FACE fc6
    # vectors, 28 hidden, Adam, lr 0.001, batch 32; C3D's last fc: 4096 (sec. II-B)
    c3d, lstm = fusion["c3d"], fusion["lstm"]
    assert (c3d["frames"], c3d["stride"], c3d["resize"]) == (128, 1, [128, 171])
    assert c3d["sizes"]["fc_width"] == 4096 and c3d["sizes"]["width_multiplier"] == 1.0
    assert (c3d["training"]["optimizer"], c3d["training"]["lr"]) == ("sgd", 0.0001)
    assert (lstm["frames"], lstm["stride"], lstm["sizes"]["hidden"]) == (128, 1, 28)
    assert (lstm["training"]["optimizer"], lstm["training"]["lr"], lstm["training"]["batch_size"]) == ("adam", 0.001, 32)
    with torch.device("meta"):
        model = fusion_study.build_network("c3d", c3d, 7)
        assert model.extract(torch.empty(1, 128, 3, c3d["crop"], c3d["crop"])).shape == (1, 4096)


def test_fusion_weights_are_the_papers(fusion):
    # 001, sec. IV-B: weight1-3 = 0.5, 0.25, 0.25 (which model gets which is this project's assumption)
    assert fusion["fusion_weights"]["mode"] == "fixed"
    assert list(fusion["fusion_weights"]["weights"].values()) == [0.5, 0.25, 0.25]


def test_fusion_paper_numbers(cfg, fusion):
    # 001, Tables II and III (AFEW 7.0 Val); AFEW's own Train/Val partition
    assert fusion["paper_accuracy"] == {"vgg_face": 38.86, "resnet10": 37.14, "aggregation": 40.15, "c3d": 41.53,
                                        "lstm": 39.84, "fusion": 48.01}
    assert fusion["paper_class_accuracy"] == {"anger": 48.21, "disgust": 26.67, "fear": 14.28, "happiness": 77.97,
                                              "neutral": 17.95, "sadness": 45.90, "surprise": 80.32}
    assert cfg["datasets"]["afew"]["protocol"] == {"name": "fixed"}


def test_fusion_fine_tunes_vgg_face_on_fer2013_first(cfg, fusion):
    # 001, sec. III-B and IV-A: VGG-Face fine-tuned on FER2013 (SGD, lr 0.0001, batch 32; Table I: 71.01 % test)
    pretrain = fusion["pretrain"]
    assert pretrain["dataset"] == "fer2013" and cfg["datasets"]["fer2013"]["adapter"] == "fer2013"
    training = pretrain["training"]
    assert (training["optimizer"], training["lr"], training["batch_size"]) == ("sgd", 0.0001, 32)
    assert pretrain["paper_accuracy"] == 71.01
    assert config_mod.study_config(cfg, "afew", "fusion")["pretrain"]["dataset"] == "fer2013"


def test_fusion_stops_without_weights_on_real_data_and_the_demo_chooses_scratch(cfg):
    # Not a paper value, but what keeps a paper table from quietly coming from networks trained from scratch.
    assert cfg["studies"]["fusion"]["weights"]["if_missing"] == "stop"
    assert config_mod.study_config(cfg, "afew", "fusion")["weights"]["if_missing"] == "stop"
    assert cfg["datasets"]["demo"]["study_overrides"]["fusion"]["weights"]["if_missing"] == "scratch"


# -- 004: STC-NLSTM (study nlstm) ----------------------------------------------------------------------------

def test_nlstm_training_is_the_papers(nlstm):
    # 004, sec. 4.2: lr 0.0025 for 300 iterations, then 0.000025 for 200; weight decay 0.0015
    training = nlstm["training"]
    assert training["lr"] == 0.0025 and training["iterations"] == 500 and training["weight_decay"] == 0.0015
    assert training["schedule"] == {"name": "step", "milestones": [300], "gamma": 0.01, "unit": "iteration"}
    from fer_pipeline.train import make_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=training["lr"])
    scheduler, unit = make_scheduler(optimizer, training, epochs=1)
    rates = []
    for _ in range(training["iterations"]):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert unit == "iteration"
    assert rates[0] == rates[299] == 0.0025 and rates[300] == rates[499] == pytest.approx(0.000025)


def test_nlstm_network_is_the_papers(cfg, nlstm):
    # 004, sec. 4.1: 64 x 64 faces, CK+'s mean length 18 (Oulu-CASIA and MMI: 22); sec. 4.2 and Table 2: five
    # 3x3x3 conv layers of 64, MSPP over 8x8, 4x4, 2x2
    sizes = nlstm["sizes"]
    assert (sizes["input_size"], sizes["sequence_length"]) == (64, 18)
    assert (sizes["conv_layers"], sizes["channels"], sizes["kernel"]) == (5, 64, 3)
    assert sizes["mspp_grids"] == [8, 4, 2]
    assert sizes["batch_norm_after"] == [1, 2] and sizes["pool_after"] == [1, 2, 4]
    assert cfg["presets"][nlstm["preset"]]["size"] == 64
    for dataset in ("oulu", "mmi"):
        assert config_mod.study_config(cfg, dataset, "nlstm")["sizes"]["sequence_length"] == 22
    assert cfg["datasets"]["mmi"]["sample_fps"] == 10


def test_nlstm_protocol_and_augmentation_are_the_papers(cfg, nlstm):
    # 004, sec. 4.3.1: 10-fold cross-validation repeated 4 times (40 trials); sec. 4.1: flip and rotations of
    # +-2.5, +-5, +-7.5 degrees (14 x the data)
    assert nlstm["repeats"] == 4
    for dataset in ("ckplus", "oulu", "mmi"):
        assert cfg["datasets"][dataset]["protocol"] == {"name": "kfold", "groups": 10}
    assert nlstm["augmentation"] == {"flip": True, "angles": [2.5, 5.0, 7.5]}
    assert nlstm["variants"] == ["stc", "stc_lstm", "stc_slstm", "stc_nlstm"]


def test_nlstm_paper_numbers(nlstm):
    # 004, Tables 3, 5, 7
    assert nlstm["paper_accuracy"]["ckplus"] == {"stc": 98.9, "stc_lstm": 99.3, "stc_slstm": 99.4, "stc_nlstm": 99.8}
    assert nlstm["paper_accuracy"]["oulu"]["stc_nlstm"] == 93.45
    assert nlstm["paper_accuracy"]["mmi"]["stc_nlstm"] == 84.53


# -- 003: FRA-FER (study frafer) -----------------------------------------------------------------------------

def test_frafer_training_is_the_papers(cfg):
    # 003, sec. IV: 6 epochs, batch 8, a flat learning rate of 3e-5.
    training = cfg["studies"]["frafer"]["training"]
    assert (training["epochs"], training["batch_size"], training["lr"]) == (6, 8, 3e-5)
    assert training.get("schedule", {}).get("name") == "constant"


def test_frafer_networks_and_numbers_are_the_papers(cfg):
    # 003, sec. III-B: p = q = 1; Tables I-III's rows and numbers; [14]'s C = 1.1 and class-weighted loss.
    frafer = cfg["studies"]["frafer"]
    assert (frafer["sizes"]["p"], frafer["sizes"]["q"], frafer["input_size"]) == (1, 1, 224)
    assert frafer["variants"] == ["frafer_b0", "frafer_concat", "frafer_cscsse", "frafer_csse", "frafer_ssce", "frafer"]
    assert frafer["class_sets"] == [8, 7] and frafer["class_weights"] is True
    assert frafer["paper_accuracy"]["classes8"] == {"frafer_b0": 61.32, "frafer_concat": 34.18, "frafer_cscsse": 58.8,
                                                    "frafer_csse": 59.83, "frafer_ssce": 61.10, "frafer": 63.28}
    assert frafer["paper_accuracy"]["classes7"] == {"frafer_b0": 65.74, "frafer": 66.4}
    assert frafer["paper_accuracy"]["video"] == {"frafer_b0": 59.27, "frafer": 60.83}
    assert frafer["video"]["svm_C"] == 1.1 and frafer["video"]["variants"] == ["frafer_b0", "frafer"]
