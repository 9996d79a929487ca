"""The training loop (learning, checkpoints, resume after a kill, early stopping) and the study's bookkeeping."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

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


class Augmented(Blobs):
    """Blobs mirrored at random with torch's generator (as WindowDataset does), scaled with numpy's and shifted
    with Python's (as augmentations of other libraries do): a resumed run draws the same only if the checkpoint
    restored all three."""

    def __getitem__(self, i):
        x = torch.from_numpy(self.x[i])
        if torch.rand(()) < 0.5:
            x = x.flip(0)
        x = x * float(np.random.uniform(0.8, 1.2)) + random.gauss(0.0, 0.1)
        return {"x": x, "label": torch.tensor(int(self.y[i]))}


class CountingDropoutNet(nn.Module):
    """A hidden layer with dropout (random on every training batch) that counts the training batches it sees
    and, like a job killed by the scheduler, is SIGKILLed at the training batch ``killed_at_batch``."""

    def __init__(self, killed_at_batch: int | None = None):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2))
        self.training_batches, self.killed_at_batch = 0, killed_at_batch

    def forward(self, batch):
        if self.training:
            self.training_batches += 1
            if self.training_batches == self.killed_at_batch:
                os.kill(os.getpid(), signal.SIGKILL)
        return self.layers(batch["x"])


BATCHES_PER_EPOCH = 64 // TRAINING["batch_size"]  # Augmented()'s 64 items


def train_counting_net(out_dir, run_id="r", seed=0, epochs=TRAINING["epochs"], killed_at_batch=None):
    """Train a CountingDropoutNet on Augmented data (RandomSampler: windows_per_clip null); return the net."""
    torch.manual_seed(0)  # the initial weights: the caller's
    model = CountingDropoutNet(killed_at_batch)
    train.train(model, Augmented(), Blobs(seed=1), {**TRAINING, "epochs": epochs}, out_dir, device="cpu",
                seed=seed, run_id=run_id)
    return model


def assert_same_run(out_dir, other_dir):
    """Every epoch's metrics (but its duration), the last epoch's weights and the kept ones, bit for bit."""
    metrics = [pd.read_csv(Path(d) / "metrics.csv").drop(columns="seconds") for d in (out_dir, other_dir)]
    pd.testing.assert_frame_equal(*metrics, check_exact=True)
    for name in ("checkpoint.pt", "best.pt"):
        weights, other_weights = (torch.load(Path(d) / name, weights_only=True)["model"] for d in (out_dir, other_dir))
        assert weights.keys() == other_weights.keys()
        assert all(torch.equal(weights[k], other_weights[k]) for k in weights), f"{name}: other weights"


@pytest.fixture(autouse=True)
def determinism_flags_restored():
    """train() and predict() set process-wide determinism flags: put them back for the tests that follow."""
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
    torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
    if saved[4] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[4]


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


def test_a_killed_run_resumes_after_its_last_epoch_as_if_never_killed(tmp_path):
    """A real process is SIGKILLed during epoch 4 of 6; the rerun trains epochs 4 to 6 only and ends with the
    metrics and weights of a run that was never killed (dropout, mirroring and a shuffling sampler: this holds
    only if the checkpoint restores every random state)."""
    killed_epochs = 3
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(Path(train.__file__).parents[1])!r}, {str(Path(__file__).parent)!r}]
        from test_train import train_counting_net
        train_counting_net({str(tmp_path / "killed")!r}, killed_at_batch={killed_epochs * BATCHES_PER_EPOCH + 3})
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert len(pd.read_csv(tmp_path / "killed" / "metrics.csv")) == killed_epochs
    checkpoint = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)  # no entry needs unpickling
    assert checkpoint["epoch"] == killed_epochs

    rerun = train_counting_net(tmp_path / "killed")
    assert rerun.training_batches == (TRAINING["epochs"] - killed_epochs) * BATCHES_PER_EPOCH  # not from epoch 1
    never_killed = train_counting_net(tmp_path / "never_killed")
    assert never_killed.training_batches == TRAINING["epochs"] * BATCHES_PER_EPOCH
    assert_same_run(tmp_path / "killed", tmp_path / "never_killed")


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path):
    """A 3-epoch run of another seed left its checkpoint; run "new" trains from epoch 1 and ends as in an
    empty folder."""
    train_counting_net(tmp_path / "shared", run_id="old", seed=1, epochs=3)
    new = train_counting_net(tmp_path / "shared", run_id="new")
    assert new.training_batches == TRAINING["epochs"] * BATCHES_PER_EPOCH
    train_counting_net(tmp_path / "empty", run_id="new")
    assert_same_run(tmp_path / "shared", tmp_path / "empty")


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
    monkeypatch.setattr(train, "evaluate", lambda model, loader, device, amp, desc="eval", **kwargs: (
        *next(scores), *real_evaluate(model, loader, device, amp, desc)[2:]))
    model = Linear()
    result = train.train(model, Blobs(), Blobs(seed=1), {**TRAINING, "epochs": 4, "monitor": monitor},
                         tmp_path, device="cpu")
    kept = torch.load(tmp_path / "best.pt", weights_only=True)
    assert result.best_epoch == expected_epoch and kept["epoch"] == expected_epoch
    assert result.best_val_accuracy == {2: 0.9, 3: 0.6}[expected_epoch]
    for name, tensor in model.state_dict().items():  # the returned model holds that epoch's weights
        torch.testing.assert_close(tensor, kept["model"][name])
    last_epoch = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    assert not torch.equal(model.fc.weight, last_epoch["fc.weight"])


def test_an_unknown_monitor_is_refused(tmp_path):
    with pytest.raises(ValueError, match="monitor 'val_f1' is unknown"):
        train.train(Linear(), Blobs(), Blobs(seed=1), {**TRAINING, "monitor": "val_f1"}, tmp_path, device="cpu")


@pytest.mark.parametrize("deterministic", [True, False])
def test_determinism_is_configured_both_ways(monkeypatch, deterministic):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    train.configure_determinism(deterministic)
    assert torch.backends.cudnn.deterministic is deterministic
    assert torch.backends.cudnn.benchmark is not deterministic
    assert torch.are_deterministic_algorithms_enabled() is deterministic
    cublas_workspace = train.DETERMINISTIC_CUBLAS_WORKSPACE if deterministic else None
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == cublas_workspace


@pytest.mark.parametrize("deterministic", [True, False])
def test_train_and_predict_configure_determinism_as_asked(tmp_path, deterministic):
    train.configure_determinism(not deterministic)
    model = Linear()
    train.train(model, Blobs(), Blobs(seed=1), {**TRAINING, "epochs": 1}, tmp_path, device="cpu",
                deterministic=deterministic)
    assert torch.are_deterministic_algorithms_enabled() is deterministic
    train.configure_determinism(not deterministic)
    train.predict(model, Blobs(), 16, device="cpu", deterministic=deterministic)
    assert torch.are_deterministic_algorithms_enabled() is deterministic


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
