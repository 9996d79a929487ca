"""The training loop (learning, checkpoints, resume after a kill, early stopping) and the study's bookkeeping."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from fer_pipeline import protocols, train
from fer_pipeline.report import scores, summary_table
from fer_pipeline.protocols import fold_split
from fer_pipeline.studies.ablation import video_predictions
from fer_pipeline.windows import mirrored

TRAINING = {"epochs": 6, "batch_size": 8, "lr": 0.2, "momentum": 0.9, "weight_decay": 0.0, "patience": 10,
            "workers": 0, "windows_per_clip": None}


class Blobs(Dataset):
    """Two separable classes in 4-d, as dict items like WindowDataset's (one 'window' per clip)."""

    def __init__(self, n=64, seed=0):
        rng = np.random.default_rng(seed)
        self.y = rng.integers(0, 2, n)
        self.x = (rng.normal(size=(n, 4)) + 3 * self.y[:, None]).astype(np.float32)
        self.items = np.stack([np.arange(n) // 2, np.arange(n) % 2], axis=1)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": torch.from_numpy(self.x[i]), "label": torch.tensor(int(self.y[i]))}


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, batch):
        return self.fc(batch["x"])


def test_training_learns_and_writes_metrics_and_checkpoints(tmp_path):
    torch.manual_seed(0)
    model = Linear()
    result = train.train(model, Blobs(), Blobs(seed=1), TRAINING, tmp_path, device="cpu", seed=0, run_id="r")
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics.columns) == train.METRICS_COLUMNS and len(metrics) == 6
    assert metrics["val_accuracy"].max() > 0.9
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "best.pt").is_file()
    probabilities, labels = train.predict(model, Blobs(seed=2), 16, device="cpu")
    assert probabilities.shape == (64, 2) and (probabilities.argmax(1) == labels).mean() > 0.9
    assert result.best_epoch == int(metrics.loc[metrics["val_accuracy"].idxmax(), "epoch"])


def test_same_seed_same_run(tmp_path):
    runs = []
    for name in ("a", "b"):
        torch.manual_seed(123)  # the model's initialisation is the caller's; train() seeds the rest
        model = Linear()
        train.train(model, Blobs(), Blobs(seed=1), TRAINING, tmp_path / name, device="cpu", seed=7)
        runs.append(pd.read_csv(tmp_path / name / "metrics.csv").drop(columns="seconds"))
    pd.testing.assert_frame_equal(*runs)


def test_a_killed_run_resumes_after_its_last_epoch(tmp_path):
    """A real process is killed (SIGKILL) during epoch 4; the rerun starts at epoch 4, not 1."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
        import torch
        from test_train import Blobs, Linear, TRAINING
        from fer_pipeline import train
        real, metrics = train.evaluate, {str(tmp_path / 'metrics.csv')!r}
        def dying(model, loader, device, amp, desc="eval"):
            if os.path.exists(metrics) and len(train.pd.read_csv(metrics)) == 3:  # validating epoch 4
                os.kill(os.getpid(), signal.SIGKILL)
            return real(model, loader, device, amp, desc)
        train.evaluate = dying
        torch.manual_seed(0)
        train.train(Linear(), Blobs(), Blobs(seed=1), TRAINING, {str(tmp_path)!r}, device="cpu", seed=0, run_id="r")
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert len(pd.read_csv(tmp_path / "metrics.csv")) == 3
    torch.manual_seed(0)
    result = train.train(Linear(), Blobs(), Blobs(seed=1), TRAINING, tmp_path, device="cpu", seed=0, run_id="r")
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2, 3, 4, 5, 6] and result.epochs_run == 6


def test_a_checkpoint_of_another_configuration_is_not_resumed(tmp_path):
    train.train(Linear(), Blobs(), Blobs(seed=1), {**TRAINING, "epochs": 2}, tmp_path, device="cpu", run_id="old")
    result = train.train(Linear(), Blobs(), Blobs(seed=1), {**TRAINING, "epochs": 3}, tmp_path, device="cpu",
                         run_id="new")
    assert pd.read_csv(tmp_path / "metrics.csv")["epoch"].tolist() == [1, 2, 3] and result.epochs_run == 3


def test_early_stopping_stops_when_validation_stops_improving(tmp_path):
    constant = Blobs()
    constant.y[:] = 0  # nothing to improve on after the first epoch
    result = train.train(Linear(), constant, constant, {**TRAINING, "epochs": 20, "patience": 2}, tmp_path,
                         device="cpu")
    assert result.epochs_run < 20


def test_without_validation_subjects_the_last_epoch_is_kept(tmp_path):
    # val_fraction 0 gives an empty validation set; a validation subset per clip must not choke on it
    empty = Blobs()
    empty.y, empty.x, empty.items = empty.y[:0], empty.x[:0], empty.items[:0]
    result = train.train(Linear(), Blobs(), empty, {**TRAINING, "epochs": 3, "patience": 1,
                                                    "val_windows_per_clip": 2}, tmp_path, device="cpu")
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert result.epochs_run == 3 and result.best_epoch == 3 and result.best_val_accuracy is None
    assert metrics["val_accuracy"].isna().all()
    assert train.spread_windows(empty.items, 2).tolist() == []


@pytest.mark.parametrize("monitor, expected_epoch", [("val_accuracy", 2), ("val_loss", 3)])
def test_the_kept_weights_are_those_of_the_best_epoch_by_the_monitor(tmp_path, monkeypatch, monitor,
                                                                     expected_epoch):
    # scripted validation scores: accuracy peaks at epoch 2, the loss bottoms at epoch 3
    scores = iter([(1.0, 0.5), (0.8, 0.9), (0.3, 0.6), (0.9, 0.7)])
    real_evaluate = train.evaluate
    monkeypatch.setattr(train, "evaluate", lambda model, loader, device, amp, desc="eval": (
        *next(scores), *real_evaluate(model, loader, device, amp, desc)[2:]))
    model = Linear()
    result = train.train(model, Blobs(), Blobs(seed=1), {**TRAINING, "epochs": 4, "monitor": monitor},
                         tmp_path, device="cpu")
    kept = torch.load(tmp_path / "best.pt", weights_only=False)
    assert result.best_epoch == expected_epoch and kept["epoch"] == expected_epoch
    assert result.best_val_accuracy == {2: 0.9, 3: 0.6}[expected_epoch]
    for name, tensor in model.state_dict().items():  # the returned model holds that epoch's weights
        torch.testing.assert_close(tensor, kept["model"][name])
    assert not torch.equal(model.fc.weight, torch.load(tmp_path / "checkpoint.pt", weights_only=False)["model"]["fc.weight"])


def test_an_unknown_monitor_is_refused(tmp_path):
    with pytest.raises(ValueError, match="monitor 'val_f1' is unknown"):
        train.train(Linear(), Blobs(), Blobs(seed=1), {**TRAINING, "monitor": "val_f1"}, tmp_path, device="cpu")


def test_windows_per_clip_sampler_draws_k_per_clip():
    items = np.array([(c, w) for c in range(5) for w in range(4)])
    sampler = train.WindowsPerClipSampler(items, 2, torch.Generator().manual_seed(0))
    drawn = list(sampler)
    assert len(drawn) == len(sampler) == 10
    assert sorted(np.bincount(items[drawn, 0]).tolist()) == [2] * 5


def test_no_subject_is_in_training_and_test_of_a_fold():
    subjects = [str(s) for s in range(1, 44)]
    manifest = pd.DataFrame({"subject": subjects, "label": "anger"})
    manifest["fold"] = protocols.assign_folds(manifest, {"name": "losgo", "groups": 5}, 0)
    tested = []
    for fold in range(5):
        split = fold_split(manifest, fold, 0.2, seed=0)
        assert not set(split["test"]) & (set(split["train"]) | set(split["val"]))
        assert not set(split["train"]) & set(split["val"]) and split["val"]
        assert sorted(split["train"] + split["val"] + split["test"], key=int) == subjects
        tested += split["test"]
    assert sorted(tested, key=int) == subjects  # each subject tested exactly once


def test_video_prediction_is_the_mean_of_window_softmax():
    rows = pd.DataFrame({"variant": "v", "fold": 0, "clip_id": ["c", "c", "c"], "subject": "1",
                         "label": "anger", "p_anger": [0.6, 0.6, 0.1], "p_fear": [0.4, 0.4, 0.9]})
    videos = video_predictions(rows)
    assert len(videos) == 1 and videos["p_anger"].iloc[0] == pytest.approx(1.3 / 3)
    assert videos["prediction"].iloc[0] == "fear"  # the mean, not the majority of window votes


def test_scores_report_accuracy_macro_recall_and_f1():
    labels = ["a"] * 8 + ["b"] * 2
    predictions = ["a"] * 10  # the majority class: high accuracy, chance-level macro recall
    result = scores(labels, predictions, ["a", "b"])
    assert result["accuracy"] == pytest.approx(80)
    assert result["macro_recall"] == pytest.approx(50)
    assert result["macro_f1"] == pytest.approx(100 * (2 * 0.8 / 1.8) / 2)


def test_summary_table_has_mean_std_folds_and_paper_number():
    folds = pd.DataFrame([{"variant": "v", "fold": f, "level": level, "accuracy": acc, "macro_recall": acc,
                           "macro_f1": acc} for f, acc in enumerate([40.0, 60.0]) for level in ("window", "video")])
    table = summary_table(folds, {"v": "desc"}, {"v": 45.29}, ["v"])
    row = table.iloc[0]
    assert row["video_accuracy_mean"] == 50 and row["video_accuracy_std"] == 10
    assert row["video_accuracy_fold0"] == 40 and row["video_accuracy_fold1"] == 60
    assert row["paper_accuracy"] == 45.29 and row["description"] == "desc"


def test_validation_windows_are_spread_over_each_clip():
    # clip 0 has 7 windows, clip 1 has 2, clip 2 has 1
    items = np.array([(0, w) for w in range(7)] + [(1, 0), (1, 1), (2, 0)])
    chosen = items[train.spread_windows(items, 3)]
    assert chosen.tolist() == [[0, 0], [0, 3], [0, 6], [1, 0], [1, 1], [2, 0]]


def test_a_mirrored_window_flips_images_and_negates_horizontal_flow():
    rgb, flow = torch.rand(4, 3, 5, 6), torch.rand(3, 2, 5, 6)
    dyn_rgb, dyn_flow = torch.rand(3, 5, 6), torch.rand(2, 5, 6)
    item = mirrored({"rgb": rgb, "flow": flow, "dyn_rgb": dyn_rgb, "dyn_flow": dyn_flow})
    torch.testing.assert_close(item["rgb"][..., 0], rgb[..., -1])
    torch.testing.assert_close(item["dyn_rgb"], dyn_rgb.flip(-1))
    # a rightward motion at the left edge becomes a leftward motion at the right edge; vertical is kept
    torch.testing.assert_close(item["flow"][:, 0, :, -1], -flow[:, 0, :, 0])
    torch.testing.assert_close(item["flow"][:, 1, :, -1], flow[:, 1, :, 0])
    torch.testing.assert_close(item["dyn_flow"][0], -dyn_flow[0].flip(-1))
    # mirroring twice is the identity
    twice = mirrored(item)
    for name, tensor in {"rgb": rgb, "flow": flow, "dyn_rgb": dyn_rgb, "dyn_flow": dyn_flow}.items():
        torch.testing.assert_close(twice[name], tensor)
