"""Training seeds: each fold trained once per seed, the table's mean and std over folds and seeds."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from fer_pipeline import config as config_mod
from fer_pipeline.report import summary_table
from fer_pipeline.studies import ablation
from test_lineage import make_config, make_manifest, save_manifest, write_features


def test_the_table_spreads_over_folds_and_seeds():
    accuracies = {(0, 0): 40.0, (1, 0): 60.0, (0, 1): 50.0, (1, 1): 90.0}  # (fold, seed) -> accuracy
    folds = pd.DataFrame([{"variant": "v", "fold": f, "seed": s, "level": "video", "accuracy": a,
                           "macro_recall": a, "macro_f1": a} for (f, s), a in accuracies.items()])
    row = summary_table(folds, {"v": ""}, {}, ["v"], levels=("video",)).iloc[0]
    assert row["runs"] == 4 and row["video_accuracy_mean"] == 60.0
    assert row["video_accuracy_std"] == pytest.approx(pd.Series(list(accuracies.values())).std(ddof=0), abs=0.01)
    assert row["video_accuracy_fold0"] == 45.0 and row["video_accuracy_fold1"] == 75.0  # mean over seeds
    assert row["video_accuracy_seed0"] == 50.0 and row["video_accuracy_seed1"] == 70.0  # mean over folds


def test_another_seed_is_another_run_and_adding_a_seed_keeps_the_others(tmp_path):
    config, manifest = make_config(tmp_path), make_manifest(tmp_path)
    manifest_csv = save_manifest(config, manifest)
    write_features(config, manifest)
    zero = ablation.run_fold(config, "tiny", "ablation_e", 0, manifest_csv, tmp_path / "s0", seed=0)
    one = ablation.run_fold(config, "tiny", "ablation_e", 0, manifest_csv, tmp_path / "s1", seed=1)
    assert zero["run_sha256"] != one["run_sha256"] and (zero["run_seed"], one["run_seed"]) == (0, 1000)
    weights = [torch.load(tmp_path / d / "best.pt", weights_only=True)["model"] for d in ("s0", "s1")]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    more = config_mod.deep_update(config, {"datasets": {"tiny": {"study_overrides": {"ablation": {"seeds": [0, 1, 2]}}}}})
    again = ablation.run_fold(more, "tiny", "ablation_e", 0, manifest_csv, tmp_path / "s0", seed=0)
    assert again["run_sha256"] == zero["run_sha256"]  # the seed-0 run is not trained again
    predictions = pd.read_csv(tmp_path / "s1" / "predictions.csv")
    assert set(predictions["seed"]) == {1}
