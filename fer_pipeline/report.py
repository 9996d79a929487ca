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

from .files import save_figure, write_text_atomic
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
    return save_figure(fig, out_png)


def plot_curves(metrics: Mapping[int, pd.DataFrame], title: str, out_png: Path, label: str = "fold") -> Path:
    """Training and validation loss and accuracy per epoch, one line per fold (named in a legend up to 10
    folds: the 40 trials of a repeated 10-fold protocol would hide the curves). ``label``: the word before each
    key in the legend ("": the key alone, e.g. a network's name)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.2))
    for fold, frame in sorted(metrics.items()):
        name = f"{label} {fold}".strip()
        line, = loss_ax.plot(frame["epoch"], frame["train_loss"], label=f"{name} train")
        loss_ax.plot(frame["epoch"], frame["val_loss"], "--", color=line.get_color(), label=f"{name} val")
        acc_ax.plot(frame["epoch"], 100 * frame["train_accuracy"], color=line.get_color())
        acc_ax.plot(frame["epoch"], 100 * frame["val_accuracy"], "--", color=line.get_color())
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("accuracy (%)")
    if len(metrics) <= 10:
        loss_ax.legend(fontsize=6, ncol=2)
    fig.suptitle(title + " (solid: training, dashed: validation)", fontsize=9)
    return save_figure(fig, out_png)


def plot_per_class(table: pd.DataFrame, classes: Sequence[str], title: str, out_png: Path, prefix: str = "accuracy_",
                   ylabel: str = "accuracy (%)", top: float = 100) -> Path:
    """Grouped bars: each class's score (``<prefix><class>`` columns of ``table``) for every row (``variant``),
    as the STC-NLSTM paper's Figs. 7-9 compare its four networks per class (or per action unit)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(classes), 3.2))
    width = 0.8 / max(1, len(table))
    for i, (_, row) in enumerate(table.iterrows()):
        ax.bar(np.arange(len(classes)) + i * width, [row.get(f"{prefix}{c}", np.nan) for c in classes], width,
               label=row["variant"])
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, top)
    ax.legend(fontsize=7, ncol=len(table))
    ax.set_title(title, fontsize=9)
    return save_figure(fig, out_png)


def plot_layers(table: pd.DataFrame, default_layers: int, metric: str, title: str, out_png: Path) -> Path:
    """``metric`` (mean and std over trials) of STC-NLSTM against its number of conv layers: the rows
    ``stc_nlstm`` (``default_layers``) and ``stc_nlstm_l<k>`` of ``table``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table[table["variant"].str.fullmatch(r"stc_nlstm(_l[0-9]+)?")].copy()
    rows["layers"] = [int(v.rsplit("_l", 1)[1]) if "_l" in v else default_layers for v in rows["variant"]]
    rows = rows.sort_values("layers")
    std = metric.replace("_mean", "_std")
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.errorbar(rows["layers"], rows[metric], yerr=rows[std] if std in rows else None, marker="o", capsize=3)
    ax.set_xlabel("conv layers")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, out_png)


def write_html(dataset: str, results_dir: Path, out_html: Path) -> Path:
    """``report.html``: every study table of the dataset (CSV rendered), its notes, and its PNGs."""
    parts = [f"<h1>fer-pipeline: {html.escape(dataset)}</h1>",
             f"<p>code: {html.escape(json.dumps(code_version()))}</p>"]
    side_by_side = results_dir / STUDIES_CSV
    if side_by_side.is_file():  # first: which method wins on this data
        parts.append("<h2>every study side by side</h2><p>The row that stands for each study (its best row, "
                     "the fusion study's fused row) under this dataset's protocol: mean and std over its runs, "
                     "the folds and seeds they come from.</p>")
        parts.append(pd.read_csv(side_by_side).to_html(index=False, na_rep="", float_format=lambda v: f"{v:.2f}"))
    for table in sorted(results_dir.glob("*.csv")):
        if table.name.startswith("manifest") or table.name == STUDIES_CSV:
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


# -- every study of a dataset side by side ---------------------------------------------------------------------

STUDIES_CSV = "studies.csv"
STUDY_PAPERS = {"ablation": "Miyoshi, Nagata, Hashimoto (Enhanced ConvLSTM)", "fusion": "Xu, Ma, Dong, Bai",
                "frafer": "Shahabinejad et al. (FRA-FER)", "nlstm": "Yu, Liu, Liu, Deng (STC-NLSTM)"}
# Which row of a study's table stands for it: the fusion study's fused row (the paper's method); otherwise the
# best row by accuracy (the ablation's at the video level, which averages a video's windows).
STUDY_ROW = {"fusion": "fusion"}
METRICS = ("accuracy", "macro_recall", "macro_f1")
STUDIES_COLUMNS = ["study", "paper", "row", "description", "chosen", "protocol",
                   *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")), "f1_mean", "f1_std",
                   "runs", "folds", "seeds", "paper_accuracy", "table"]


def studies_csv(results: str | Path, dataset: str) -> Path:
    """``results/{dataset}/studies.csv``."""
    from .paths import dataset_dir

    return dataset_dir(results, dataset) / STUDIES_CSV


def _protocol(config: Mapping, dataset: str, study: str) -> str:
    from .config import study_config

    protocol = dict(config["datasets"][dataset].get("protocol", {}))
    text = protocol.get("name", "?") + (f", {protocol['groups']} groups" if protocol.get("groups") else "")
    repeats = study_config(dict(config), dataset, study).get("repeats", 1) if study == "nlstm" else 1
    return text + (f", repeated {repeats} times" if repeats > 1 else "")


def best_row(study: str, table: pd.DataFrame) -> tuple[pd.Series, str, str]:
    """The row of a study's table that stands for it in ``studies.csv``, the metric prefix of its columns
    (``video_`` for the ablation's video level, else none) and how it was chosen."""
    key = "method" if "method" in table.columns else "variant"
    prefix = "video_" if "video_accuracy_mean" in table.columns else ""
    if study in STUDY_ROW:
        wanted = STUDY_ROW[study]
        rows = table[table[key] == wanted]
        if rows.empty:
            raise ValueError(f"{study}.csv has no '{wanted}' row")
        return rows.iloc[0], prefix, f"the {wanted} row (the paper's method)"
    metric = f"{prefix}accuracy_mean" if f"{prefix}accuracy_mean" in table.columns else "f1_mean"
    best = table.loc[table[metric].idxmax()]  # ties: the first in the table's order
    return best, prefix, f"best {metric.replace('_mean', '').replace('_', ' ')} of {len(table)} {key}s"


def studies_table(config: Mapping, dataset: str, tables: Sequence[str | Path], out_csv: str | Path) -> pd.DataFrame:
    """``results/{dataset}/studies.csv``: every study that ran on the dataset, side by side under the
    dataset's protocol, one row each (:func:`best_row`): accuracy, macro recall and macro F1 with their std
    over runs (for action units, BP4D: the mean F1 over units), the runs, folds (trials) and training
    seeds they come from (the study's ``*_folds.csv``), and the paper's own number for that row."""
    rows = []
    for table_path in map(Path, tables):
        study = table_path.stem
        table = pd.read_csv(table_path)
        best, prefix, chosen = best_row(study, table)
        key = "method" if "method" in table.columns else "variant"
        row: dict[str, object] = {"study": study, "paper": STUDY_PAPERS.get(study, ""), "row": best[key],
                                  "description": best.get("description", best.get("row", "")), "chosen": chosen,
                                  "protocol": _protocol(config, dataset, study), "table": table_path.name}
        for metric in METRICS:
            for stat in ("mean", "std"):
                row[f"{metric}_{stat}"] = best.get(f"{prefix}{metric}_{stat}", np.nan)
        row["f1_mean"], row["f1_std"] = best.get("f1_mean", np.nan), best.get("f1_std", np.nan)
        folds_csv = table_path.with_name(f"{study}_folds.csv")
        runs = best.get("runs", best.get("trials", np.nan))
        folds, seeds = np.nan, ""
        if folds_csv.is_file():
            per_run = pd.read_csv(folds_csv)
            per_run = per_run[per_run[key if key in per_run.columns else "variant"] == best[key]]
            if "classes" in per_run.columns and "classes" in best.index:  # frafer: a row is (variant, class set)
                per_run = per_run[per_run["classes"] == best["classes"]]
            if "level" in per_run.columns:
                per_run = per_run[per_run["level"] == (prefix.rstrip("_") or per_run["level"].iloc[0])]
            rounds = per_run[[c for c in ("repeat", "fold") if c in per_run.columns]].drop_duplicates()
            folds = len(rounds)
            seeds = " ".join(str(int(s)) for s in sorted(per_run["seed"].unique())) if "seed" in per_run.columns else ""
            runs = len(per_run)
        row.update(runs=runs, folds=folds, seeds=seeds,
                   paper_accuracy=best.get("paper_accuracy", best.get("paper_f1", np.nan)))
        rows.append(row)
    frame = pd.DataFrame(rows, columns=STUDIES_COLUMNS)
    if frame["f1_mean"].isna().all():
        frame = frame.drop(columns=["f1_mean", "f1_std"])
    write_text_atomic(Path(out_csv), frame.to_csv(index=False))
    return frame
