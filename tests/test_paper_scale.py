"""Paper-scale readiness (slow): every study's networks built at the paper's sizes, from config.yaml's study
blocks (benchmarks/paper_check.py's specs, the same `make paper-check` measures), and two training steps each
on this CPU: the loss is finite and the weights move.

The batch is the config's: the paper's where it gives one (32 for VGG-Face, ResNet-10 and the LSTM), this
project's 8 for the ablation and 16 for STC (the papers give none), except for C3D on 128 frames: batch 1, as
`make paper-check` (at the config's 8 a CPU step needs ~18 GB and about a minute; docs/paper-scale.md)."""

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

# C3D at 128 frames: batch 1 on this CPU (see above).
CPU_BATCH = {"c3d": 1}
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
