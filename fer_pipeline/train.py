"""One training loop for every network of the project.

Momentum SGD (the Enhanced ConvLSTM paper's optimiser) or Adam (``training.optimizer``, e.g. Xu et al.'s
LSTM), the device from
availability (CUDA when there is one) with mixed precision on GPU, deterministic kernels unless config says
otherwise (:func:`configure_determinism`), a checkpoint after every epoch that a killed job resumes from
exactly as if it had not been killed, early stopping on a validation split, per-epoch metrics in CSV,
progress bars.
Data comes from the feature store only (fer_pipeline.windows): no video is decoded during training.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, Subset
from tqdm import tqdm

from .device import resolve_device
from .files import write_text_atomic
from .windows import evenly_spaced

log = logging.getLogger(__name__)

METRICS_COLUMNS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"]
MONITORS = ("val_accuracy", "val_loss")  # what the kept weights and early stopping go by
SCHEDULES = ("constant", "cosine", "step")  # training.schedule's names (see make_scheduler)
DETERMINISTIC_CUBLAS_WORKSPACE = ":4096:8"  # one of the two workspace settings under which cuBLAS is deterministic


def configure_determinism(deterministic: bool) -> None:
    """Make CUDA training and inference reproducible (``deterministic``, config key ``deterministic``) or fast.

    True: cuDNN picks deterministic kernels and stops benchmarking for the fastest one,
    ``torch.use_deterministic_algorithms(True)`` makes every other operation use a deterministic implementation
    (one without any raises a RuntimeError that names it: set ``deterministic: false`` for such a network), and
    ``CUBLAS_WORKSPACE_CONFIG`` is set to ``:4096:8``, which cuBLAS needs for deterministic matrix products. It
    is read once, when CUDA initialises: this runs first in :func:`train` and :func:`predict`, and warns when
    CUDA came first. A value already in the environment is kept (``:16:8`` is deterministic as well).
    False: ``cudnn.benchmark`` times the kernels for each input shape and keeps the fastest, which is faster and
    not reproducible from run to run. On CPU, results are bit-identical from run to run on one machine either
    way.
    """
    if deterministic:
        if "CUBLAS_WORKSPACE_CONFIG" not in os.environ and torch.cuda.is_initialized():
            log.warning("CUDA is initialised before CUBLAS_WORKSPACE_CONFIG is set: cuBLAS may not be deterministic")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", DETERMINISTIC_CUBLAS_WORKSPACE)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.use_deterministic_algorithms(deterministic)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a generator for the data loader's shuffling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


@dataclass
class TrainResult:
    best_epoch: int
    best_val_accuracy: float | None
    epochs_run: int
    metrics: pd.DataFrame


def random_states(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """Every random state the next epoch draws from, in a form ``torch.load(weights_only=True)`` reads (tensors,
    lists, numbers): the sampler's ``generator`` (the order of the items), torch's on the CPU and on CUDA
    (dropout, the mirroring of WindowDataset, the data loader's worker seeds), numpy's and Python's
    (augmentations of other libraries draw from them)."""
    numpy_name, numpy_keys, numpy_position, numpy_has_gauss, numpy_gauss = np.random.get_state()
    python_version, python_state, python_gauss = random.getstate()
    return {"sampler": generator.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
            "numpy": [numpy_name, numpy_keys.tolist(), int(numpy_position), int(numpy_has_gauss), float(numpy_gauss)],
            "python": [python_version, list(python_state), python_gauss]}


def restore_random_states(states: Mapping[str, Any], generator: torch.Generator, device: torch.device) -> None:
    """Set the random states that :func:`random_states` returned: what follows draws what it drew then."""
    generator.set_state(states["sampler"])
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])
    numpy_name, numpy_keys, *numpy_rest = states["numpy"]
    np.random.set_state((numpy_name, np.array(numpy_keys, dtype=np.uint32), *numpy_rest))
    python_version, python_state, python_gauss = states["python"]
    random.setstate((python_version, tuple(python_state), python_gauss))


def _to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class WindowsPerClipSampler(Sampler[int]):
    """Each epoch, ``per_clip`` windows of every clip drawn at random (all of a clip's windows if it has
    fewer), in random order. Consecutive windows of a clip overlap by half and look alike; drawing a few per
    clip per epoch gives every clip equal weight and lets a small CPU budget see more epochs."""

    def __init__(self, items: np.ndarray, per_clip: int, generator: torch.Generator):
        self.by_clip = [np.flatnonzero(items[:, 0] == clip) for clip in np.unique(items[:, 0])]
        self.per_clip, self.generator = per_clip, generator

    def __len__(self) -> int:
        return sum(min(self.per_clip, len(idx)) for idx in self.by_clip)

    def __iter__(self):
        chosen = [idx[torch.randperm(len(idx), generator=self.generator)[: self.per_clip].numpy()]
                  for idx in self.by_clip]
        order = np.concatenate(chosen)[torch.randperm(len(self), generator=self.generator).numpy()]
        return iter(order.tolist())


def make_optimizer(model: nn.Module, training: Mapping[str, Any]) -> torch.optim.Optimizer:
    """``training.optimizer``: ``sgd`` (the default; lr, momentum, weight_decay) or ``adam`` (lr,
    weight_decay; momentum unused)."""
    name = training.get("optimizer", "sgd")
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=training["lr"], weight_decay=training["weight_decay"])
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=training["lr"], momentum=training["momentum"],
                               weight_decay=training["weight_decay"])
    raise ValueError(f"training.optimizer {name!r} is unknown (sgd, adam)")


def make_scheduler(optimizer: torch.optim.Optimizer, training: Mapping[str, Any],
                   epochs: int) -> tuple[torch.optim.lr_scheduler.LRScheduler, str]:
    """The learning-rate schedule ``training.schedule`` and what it steps per: ``"epoch"`` or ``"iteration"``.

    ``{name: cosine}`` (when the key is absent: the schedule the ablation and fusion studies were built with,
    this project's choice): cosine annealing from ``lr`` to 0 over ``epochs``, stepped per epoch.
    ``{name: constant}``: ``lr`` throughout (FRA-FER's flat rate). ``{name: step, milestones: [m, ...], gamma:
    g, unit: iteration | epoch}``: ``lr`` multiplied by ``g`` at each milestone, counted in optimiser steps or
    epochs (STC-NLSTM: 0.0025 for 300 iterations, then 0.000025: milestones [300], gamma 0.01, unit
    iteration)."""
    schedule = dict(training.get("schedule") or {"name": "cosine"})
    name = schedule.get("name")
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs)), "epoch"
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0), "epoch"
    if name == "step":
        unit = schedule.get("unit", "epoch")
        if unit not in ("epoch", "iteration"):
            raise ValueError(f"training.schedule.unit {unit!r} is unknown (epoch, iteration)")
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(schedule["milestones"]),
                                                    gamma=schedule["gamma"]), unit
    raise ValueError(f"training.schedule name {name!r} is unknown ({', '.join(SCHEDULES)})")


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy of a multi-label head (one sigmoid per action unit) over the known labels only:
    ``targets`` (B, K) holds 1, 0 or NaN for unknown (BP4D codes 9, frames outside the coded segment), and
    an unknown label adds neither to the loss nor to the count it is averaged over. Never scoring an
    unknown as absent keeps the head from learning that uncoded means "no action unit"."""
    known = ~torch.isnan(targets)
    loss = F.binary_cross_entropy_with_logits(logits[known], targets[known], reduction="sum")
    return loss if reduction == "sum" else loss / known.sum().clamp(min=1)


def _loss(logits: torch.Tensor, labels: torch.Tensor, multi_label: bool, reduction: str = "mean",
          weight: torch.Tensor | None = None) -> torch.Tensor:
    if multi_label:
        return masked_bce(logits, labels, reduction)
    return F.cross_entropy(logits, labels, weight=weight, reduction=reduction)


def _correct(logits: torch.Tensor, labels: torch.Tensor, multi_label: bool) -> tuple[int, int]:
    """Right answers and answers: items (single label) or known action units (multi-label, 0.5 threshold)."""
    if multi_label:
        known = ~torch.isnan(labels)
        return int(((logits > 0)[known] == (labels[known] > 0.5)).sum()), int(known.sum())
    return int((logits.argmax(1) == labels).sum()), len(labels)


def spread_windows(items: np.ndarray, per_clip: int) -> np.ndarray:
    """Indices of up to ``per_clip`` windows of every clip of ``items`` ((clip, window) rows), evenly spread
    over the clip from its first to its last window: a fixed validation subset that still sees each
    clip's neutral start, its apex and its end, at a fraction of the cost of every window every epoch."""
    by_clip = [np.flatnonzero(items[:, 0] == clip) for clip in np.unique(items[:, 0])]
    if not by_clip:  # no validation subjects (val_fraction 0)
        return np.zeros(0, np.int64)
    return np.concatenate([rows[evenly_spaced(len(rows), per_clip)] for rows in by_clip])


def _loader(data: Dataset, batch_size: int, workers: int, sampler: Sampler | None = None) -> DataLoader:
    return DataLoader(data, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def _save_atomic(state: dict, path: Path) -> None:
    """torch.save through a temporary file and a rename: a kill never leaves half a checkpoint."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool,
             desc: str = "eval", multi_label: bool = False) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Mean loss, accuracy, probabilities and labels of every item, in loader order: class probabilities
    (N, C) (softmax), or with ``multi_label`` each action unit's (N, K) (sigmoid) and the (N, K) labels with
    NaN where unknown; accuracy and loss then count the known labels only."""
    model.eval()
    loss, probabilities, labels, correct, answers = 0.0, [], [], 0, 0
    with torch.inference_mode():
        for batch in tqdm(loader, desc=desc, leave=False, unit="batch"):
            batch = _to_device(batch, device)
            with torch.autocast(device.type, enabled=amp):
                logits = model(batch)
            logits = logits.float()
            loss += float(_loss(logits, batch["label"], multi_label, "sum"))
            right, count = _correct(logits, batch["label"], multi_label)
            correct, answers = correct + right, answers + count
            probabilities.append((torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)).cpu().numpy())
            labels.append(batch["label"].cpu().numpy())
    probabilities, labels = np.concatenate(probabilities), np.concatenate(labels)
    accuracy = correct / answers if answers else float("nan")
    return loss / max(1, answers), accuracy, probabilities, labels


def train(model: nn.Module, train_data: Dataset, val_data: Dataset | None, training: Mapping[str, Any],
          out_dir: str | Path, device: str = "auto", seed: int = 0, run_id: str = "",
          deterministic: bool = True, multi_label: bool = False,
          class_weights: list[float] | None = None) -> TrainResult:
    """Train ``model`` on ``train_data``; keep the weights of the best validation epoch.

    ``training`` keys: epochs, batch_size, lr, momentum, weight_decay, optimizer (optional: sgd or adam, see
    :func:`make_optimizer`), monitor (optional: ``val_accuracy``, the default, or ``val_loss``: what "better"
    means for the kept weights and for early stopping), patience (epochs without a better validation score
    before stopping), workers,
    windows_per_clip (optional: windows drawn per clip per epoch; ``train_data`` must then have ``items``
    (clip, window) rows, as WindowDataset has), val_windows_per_clip (optional: validate on that many evenly
    spread windows per clip, see :func:`spread_windows`). ``out_dir`` receives ``checkpoint.pt`` (after every
    epoch: weights, optimiser, epoch, best so far, metrics, every random state, see :func:`random_states`),
    ``best.pt`` and ``metrics.csv``. If a checkpoint of the same ``run_id`` (a fingerprint of everything that
    defines the run) is there, training resumes after its epoch and ends with the weights and metrics of a run
    that was never interrupted; one of another run (or of an older format) is discarded. Without validation
    data the last epoch is kept. ``deterministic``: see :func:`configure_determinism`.
    ``schedule`` (optional): the learning-rate schedule, see :func:`make_scheduler`. ``iterations``
    (optional): train for this many optimiser steps instead of ``epochs`` (the last epoch stops part way;
    STC-NLSTM counts 300 + 200 iterations). ``multi_label``: labels are (K,) vectors with NaN for unknown,
    the loss :func:`masked_bce` (a sigmoid per action unit) instead of cross-entropy. ``class_weights``
    (optional, one per class): the training cross-entropy weighted per class (``F.cross_entropy(weight=...)``,
    a weighted mean; HSEmotion's 1 / class count for FRA-FER's baseline); validation loss stays unweighted.
    """
    configure_determinism(deterministic)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device_ = resolve_device(device)
    amp = device_.type == "cuda"
    generator = seed_everything(seed)
    if class_weights is not None and multi_label:
        raise ValueError("class_weights weigh a cross-entropy over classes; a multi-label head has none")
    weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32, device=device_)
    model.to(device_)
    optimizer = make_optimizer(model, training)
    scaler = torch.amp.GradScaler(device_.type, enabled=amp)
    workers = training.get("workers", 0)
    per_clip = training.get("windows_per_clip")
    sampler = (WindowsPerClipSampler(train_data.items, per_clip, generator) if per_clip
               else RandomSampler(train_data, generator=generator))
    train_loader = _loader(train_data, training["batch_size"], workers, sampler)
    iterations = training.get("iterations")
    epochs = math.ceil(iterations / len(train_loader)) if iterations else training["epochs"]
    scheduler, schedule_unit = make_scheduler(optimizer, training, epochs)
    val_per_clip = training.get("val_windows_per_clip")
    if val_data is not None and val_per_clip:
        val_data = Subset(val_data, spread_windows(val_data.items, val_per_clip))
    val_loader = (_loader(val_data, training["batch_size"], workers)
                  if val_data is not None and len(val_data) else None)

    checkpoint_path, best_path, metrics_path = out_dir / "checkpoint.pt", out_dir / "best.pt", out_dir / "metrics.csv"
    rows: list[dict[str, Any]] = []
    monitor = training.get("monitor", "val_accuracy")
    if monitor not in MONITORS:
        raise ValueError(f"training.monitor {monitor!r} is unknown ({', '.join(MONITORS)})")
    start_epoch, best_score, best_epoch, stale = 1, -np.inf, 0, 0
    # To the CPU: random states must be CPU tensors; load_state_dict copies the rest to where the model is.
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True) if checkpoint_path.is_file() else None
    if state is not None and (state.get("run_id") != run_id or "random_states" not in state):
        log.warning("%s holds a checkpoint of another configuration or format: starting afresh", checkpoint_path)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        restore_random_states(state["random_states"], generator, device_)
        start_epoch, best_score, best_epoch, stale = (state["epoch"] + 1, state["best_score"],
                                                      state["best_epoch"], state["stale"])
        rows = state["metrics"]
        log.info("resuming %s after epoch %d (best %s at epoch %d)", out_dir, state["epoch"], monitor, best_epoch)

    for epoch in range(start_epoch, epochs + 1):
        if stale >= training["patience"]:
            break
        started = time.perf_counter()
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        for step, batch in enumerate(tqdm(train_loader, desc=f"epoch {epoch}/{epochs}", leave=False, unit="batch")):
            if iterations and (epoch - 1) * len(train_loader) + step >= iterations:
                break  # every epoch has len(train_loader) steps: this counts the run's steps, resumed or not
            batch = _to_device(batch, device_)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_.type, enabled=amp):
                logits = model(batch)
                loss = _loss(logits.float(), batch["label"], multi_label, weight=weight)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if schedule_unit == "iteration":
                scheduler.step()
            right, count = _correct(logits.detach().float(), batch["label"], multi_label)
            total_loss += float(loss.detach()) * count
            correct, seen = correct + right, seen + count
        if schedule_unit == "epoch":
            scheduler.step()
        row = {"epoch": epoch, "train_loss": total_loss / max(1, seen), "train_accuracy": correct / max(1, seen),
               "val_loss": np.nan, "val_accuracy": np.nan, "learning_rate": scheduler.get_last_lr()[0]}
        if val_loader is not None:
            row["val_loss"], row["val_accuracy"], _, _ = evaluate(model, val_loader, device_, amp, "validation",
                                                                  multi_label=multi_label)
        if val_loader is None:
            score = epoch  # no validation: the last epoch
        else:
            score = row["val_accuracy"] if monitor == "val_accuracy" else -row["val_loss"]
        if score > best_score:
            best_score, best_epoch, stale = score, epoch, 0
            _save_atomic({"model": model.state_dict(), "epoch": epoch}, best_path)
        else:
            stale += 1
        row["seconds"] = round(time.perf_counter() - started, 2)
        rows.append(row)
        write_text_atomic(metrics_path, pd.DataFrame(rows, columns=METRICS_COLUMNS).to_csv(index=False))
        _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                      "random_states": random_states(generator, device_), "epoch": epoch,
                      "best_score": best_score, "best_epoch": best_epoch, "stale": stale, "metrics": rows,
                      "run_id": run_id},
                     checkpoint_path)
        log.info("epoch %d: train loss %.3f acc %.3f, val loss %.3f acc %.3f (%.1f s)", epoch, row["train_loss"],
                 row["train_accuracy"], row["val_loss"], row["val_accuracy"], row["seconds"])

    model.load_state_dict(torch.load(best_path, map_location=device_, weights_only=True)["model"])
    best_row = rows[best_epoch - 1]  # rows hold every epoch from 1, resumed or not
    return TrainResult(best_epoch=best_epoch,
                       best_val_accuracy=best_row["val_accuracy"] if val_loader is not None else None,
                       epochs_run=len(rows), metrics=pd.DataFrame(rows, columns=METRICS_COLUMNS))


def predict(model: nn.Module, data: Dataset, batch_size: int, device: str = "auto",
            deterministic: bool = True, multi_label: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels of every item of ``data``, in order (see :func:`evaluate`). ``deterministic``:
    see :func:`configure_determinism`."""
    configure_determinism(deterministic)
    device_ = resolve_device(device)
    model.to(device_)
    _, _, probabilities, labels = evaluate(model, _loader(data, batch_size, 0), device_,
                                           device_.type == "cuda", "test", multi_label)
    return probabilities, labels
