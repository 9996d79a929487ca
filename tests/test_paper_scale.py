"""Paper-scale readiness (slow): every study's networks built at the paper's sizes, from config.yaml's study
blocks (benchmarks/paper_check.py's specs, the same `make paper-check` measures), and two training steps each
on this CPU: the loss is finite and the weights move.

The batch is the config's (the paper's where it gives one: 32 for VGG-Face, ResNet-10 and the LSTM; this
project's 8 for the ablation and 16 for STC) except where one CPU step takes over a minute: C3D on 128 frames
(batch 1; at batch 8 a step takes minutes and ~20 GB) and the four ConvLSTM variants at 112 x 112 x 16 frames
(batch 1; at batch 8 ~75-90 s a step and 5.5-7.5 GB: `make paper-check` measures them at their batch,
docs/paper-scale.md). VGG-16 at 224 runs at its batch 32."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

from fer_pipeline import config as config_mod

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import paper_check  # noqa: E402

# Networks whose CPU step at the config's batch takes over a minute here: run at batch 1 (see above).
CPU_BATCH = {"c3d": 1, "ablation_b": 1, "ablation_c": 1, "ablation_d": 1, "ablation_e": 1}
SPECS = paper_check.network_specs(config_mod.load(), c3d_batch=None)


def test_every_study_network_is_covered():
    cfg = config_mod.load()
    expected = set(cfg["studies"]["ablation"]["variants"]) | {"vgg_face", "resnet10", "c3d", "bilstm"} | \
        set(cfg["studies"]["nlstm"]["variants"])
    assert set(SPECS) == expected


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SPECS))
def test_two_training_steps_at_the_papers_size(name):
    spec = dict(SPECS[name])
    spec["batch"] = CPU_BATCH.get(name, spec["batch"])
    torch.manual_seed(0)
    model = spec["build"]()
    before = [p.detach().clone() for p in model.parameters()]
    spec["build"] = lambda: model
    started = time.perf_counter()
    result = paper_check.two_steps(spec)
    moved = sum(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
    assert moved > 0.5 * len(before), f"{name}: only {moved} of {len(before)} parameter tensors changed"
    assert result["params"] > 0
    print(f"{name}: batch {spec['batch']}, {result['params']:,} parameters, {result['seconds']} s a step, "
          f"{time.perf_counter() - started:.0f} s in all")
