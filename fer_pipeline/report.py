"""Tables, confusion matrices, training curves and the HTML report of a dataset's studies.

Every table reports the paper's metric (accuracy) and beside it what the field expects on unbalanced
classes: unweighted average recall (macro recall) and macro F1; per fold and as mean and standard deviation
over folds, next to the paper's own number.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

from .files import write_text_atomic
from .provenance import code_version


def scores(labels: Sequence[str], predictions: Sequence[str], classes: Sequence[str]) -> dict[str, float]:
    """Accuracy, macro recall (UAR) and macro F1 in percent, over the classes present in ``labels``."""
    present = [c for c in classes if c in set(labels)]
    return {
        "accuracy": 100 * accuracy_score(labels, predictions),
        "macro_recall": 100 * recall_score(labels, predictions, labels=present, average="macro", zero_division=0),
        "macro_f1": 100 * f1_score(labels, predictions, labels=present, average="macro", zero_division=0),
    }


def fold_table(rows: pd.DataFrame, level: str, classes: Sequence[str]) -> pd.DataFrame:
    """Scores of each (variant, fold) from prediction rows (columns variant, fold, label, prediction), and of
    each training seed of it where the rows have a ``seed`` column (a study trained with several seeds)."""
    keys = ["variant", "fold"] + (["seed"] if "seed" in rows.columns else [])
    out = []
    for values, group in rows.groupby(keys, sort=True):
        out.append({**dict(zip(keys, values)), "fold": int(values[1]), "level": level,
                    **scores(group["label"], group["prediction"], classes)})
    return pd.DataFrame(out)


def summary_table(folds: pd.DataFrame, descriptions: Mapping[str, str], paper: Mapping[str, float],
                  order: Sequence[str], levels: Sequence[str] = ("window", "video")) -> pd.DataFrame:
    """One row per variant: mean and std of each metric at each of ``levels`` over every run (each fold, and
    each training seed where there are several: the spread a rerun with another seed would show), the
    number of runs, the video accuracy of each fold (its mean over seeds) and of each seed (its mean over
    folds), and the paper's number."""
    rows = []
    for variant in order:
        row: dict[str, object] = {"variant": variant, "description": descriptions.get(variant, "")}
        for level in levels:
            part = folds[(folds["variant"] == variant) & (folds["level"] == level)].sort_values("fold")
            for metric in ("accuracy", "macro_recall", "macro_f1"):
                row[f"{level}_{metric}_mean"] = round(float(part[metric].mean()), 2)
                row[f"{level}_{metric}_std"] = round(float(part[metric].std(ddof=0)), 2)
            if level == "video":
                row["runs"] = len(part)
                for fold, value in part.groupby("fold")["accuracy"].mean().items():
                    row[f"video_accuracy_fold{fold}"] = round(float(value), 2)
                if "seed" in part.columns and part["seed"].nunique() > 1:
                    for seed, value in part.groupby("seed")["accuracy"].mean().items():
                        row[f"video_accuracy_seed{seed}"] = round(float(value), 2)
        row["paper_accuracy"] = paper.get(variant, np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def plot_confusion(labels: Sequence[str], predictions: Sequence[str], classes: Sequence[str], title: str,
                   out_png: Path) -> Path:
    """Row-normalised confusion matrix (true class per row), counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = confusion_matrix(labels, predictions, labels=list(classes))
    normalised = matrix / np.maximum(1, matrix.sum(1, keepdims=True))
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(classes), 0.8 + 0.7 * len(classes)))
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if normalised[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def plot_curves(metrics: Mapping[int, pd.DataFrame], title: str, out_png: Path) -> Path:
    """Training and validation loss and accuracy per epoch, one line per fold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.2))
    for fold, frame in sorted(metrics.items()):
        line, = loss_ax.plot(frame["epoch"], frame["train_loss"], label=f"fold {fold} train")
        loss_ax.plot(frame["epoch"], frame["val_loss"], "--", color=line.get_color(), label=f"fold {fold} val")
        acc_ax.plot(frame["epoch"], 100 * frame["train_accuracy"], color=line.get_color())
        acc_ax.plot(frame["epoch"], 100 * frame["val_accuracy"], "--", color=line.get_color())
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("window accuracy (%)")
    loss_ax.legend(fontsize=6, ncol=2)
    fig.suptitle(title + " (solid: training, dashed: validation)", fontsize=9)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def write_html(dataset: str, results_dir: Path, out_html: Path) -> Path:
    """``report.html``: every study table of the dataset (CSV rendered), its notes, and its PNGs."""
    parts = [f"<h1>fer-pipeline: {html.escape(dataset)}</h1>",
             f"<p>code: {html.escape(json.dumps(code_version()))}</p>"]
    for table in sorted(results_dir.glob("*.csv")):
        if table.name.startswith("manifest"):
            continue
        frame = pd.read_csv(table)
        parts.append(f"<h2>{html.escape(table.stem)}</h2>")
        notes = table.with_suffix(".md")
        if notes.is_file():
            parts.append(f"<pre>{html.escape(notes.read_text())}</pre>")
        parts.append(frame.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.2f}"))
        for png in sorted((results_dir / table.stem).glob("*.png")):
            parts.append(f'<figure><img src="{png.relative_to(out_html.parent)}" style="max-width:720px">'
                         f"<figcaption>{html.escape(png.stem)}</figcaption></figure>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>fer-pipeline report</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:3px 6px}</style></head><body>" + "\n".join(parts) + "</body></html>")
    return write_text_atomic(out_html, page)
