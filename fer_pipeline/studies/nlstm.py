"""Study ``nlstm``: Tables 3, 5 and 7 of Yu, Liu, Liu, Deng, "Spatio-temporal convolutional features with
nested LSTM for facial expression recognition" (Neurocomputing 2018) on CK+, Oulu-CASIA and MMI.

Protocol, as the paper (Sec. 4.1-4.3): every sequence normalised to the dataset's length (CK+ 18, Oulu-CASIA
and MMI 22; MMI read at 10 fps: ``datasets.mmi.sample_fps``) from the ``stc64`` faces, the six basic classes
(CK+'s contempt sequences are not among them), 10-fold subject-independent cross-validation repeated
``repeats`` times (4: "40 trials"), the mean and standard deviation of the trials' accuracies. Four
networks (fer_pipeline.models.stc_nlstm): STC, STC-LSTM, STC-SLSTM and STC-NLSTM. Training as the paper:
Xavier initialisation, lr 0.0025 for 300 iterations then 0.000025 for 200, weight decay 0.0015, and the x14
augmentation (mirror, rotations of +-2.5, 5, 7.5 degrees) on the fly in training only.

BP4D (Table 9, ``task: action_units``): the same networks with a sigmoid per action unit (the ``action_units``
of config: FERA 2015's 11), trained with the masked loss (an unknown code is neither present nor absent),
on sequences that end on each coded frame (fer_pipeline.frames.ActionUnitSequenceDataset), on the dataset's
fixed subject split; the table gives each unit's F1 on the test subjects' frames and their mean (the paper's
0.58).

Each (variant, repeat, fold, training seed) is one job, :func:`run_trial`; :func:`write_table` gathers them.
Validation subjects (early stopping and the kept epoch) are carved from each trial's training subjects:
the paper names no validation set, and choosing anything on the tested fold is what this project never
does.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..config import ConfigError, run_seed, study_config, training_seeds
from ..datasets import present_classes, read_manifest
from .. import paths
from ..files import write_text_atomic
from ..protocols import NO_FOLD, fold_split, repeat_folds
from ..provenance import code_version, fingerprint

log = logging.getLogger(__name__)

STUDY = "nlstm"


def run_parameters(study: Mapping[str, Any]) -> dict[str, Any]:
    """The study config one trial depends on: all of it but the list of training seeds and the number of
    repeats (adding a seed or a repeat must not retrain the trials that exist)."""
    return {k: v for k, v in study.items() if k not in ("seeds", "repeats")}


def variants(study: Mapping[str, Any]) -> list[str]:
    """The networks a study trains: its ``variants``, then STC-NLSTM with each other number of conv layers of
    ``layer_sweep`` (the paper's Fig. 10 sweeps 1-7), named ``stc_nlstm_l<k>``."""
    swept = [f"stc_nlstm_l{k}" for k in study["layer_sweep"] if k != study["sizes"].get("conv_layers", 5)]
    return list(study["variants"]) + swept


def variant_model(study: Mapping[str, Any], variant: str) -> tuple[str, dict[str, Any]]:
    """The registered network and sizes of ``variant`` (``stc_nlstm_l3``: stc_nlstm with 3 conv layers)."""
    from ..models import MODELS

    sweep = re.fullmatch(r"stc_nlstm_l([0-9]+)", variant)
    name = "stc_nlstm" if sweep else variant
    if variant not in variants(study) or name not in MODELS:
        raise ConfigError(f"studies.{STUDY}: '{variant}' is not a configured STC network ({variants(study)})")
    sizes = dict(study["sizes"])
    if sweep:
        sizes["conv_layers"] = int(sweep.group(1))
    return name, sizes


def describe(variant: str) -> str:
    """A table row's description: the registered network's, with the sweep's layer count."""
    from ..models import MODELS

    if variant.startswith("stc_nlstm_l"):
        return f"STC-NLSTM with {variant.rsplit('_l', 1)[1]} conv layers (the paper's Fig. 10)"
    return MODELS[variant].description


def study_manifest(config: Mapping[str, Any], dataset: str, manifest: pd.DataFrame) -> tuple[list[str], pd.DataFrame]:
    """The study's classes (``studies.nlstm.classes``: the paper's six) that the manifest holds, in canonical
    order, and the manifest's clips of those classes (CK+'s contempt sequences are left out: the paper's
    protocol has six classes). A manifest without two of them cannot be classified."""
    study = study_config(config, dataset, STUDY)
    if study["task"] == "action_units":
        return [f"AU{k}" for k in study["action_units"]], manifest
    wanted = set(study["classes"])
    classes = [c for c in present_classes(config, dataset, manifest) if c in wanted]
    if len(classes) < 2:
        raise ValueError(f"{dataset}: the manifest holds {sorted(set(manifest['label']))}, fewer than two of "
                         f"studies.{STUDY}.classes {sorted(wanted)}")
    return classes, manifest[manifest["label"].isin(classes)].reset_index(drop=True)


def trials(config: Mapping[str, Any], dataset: str, manifest: pd.DataFrame) -> list[tuple[int, int]]:
    """Every (repeat, fold) of the study on this manifest: ``repeats`` x the protocol's subject folds of the
    study's clips (a fixed split has one round, 0, and no repeats)."""
    study = study_config(config, dataset, STUDY)
    _, manifest = study_manifest(config, dataset, manifest)
    if not (manifest["fold"] != NO_FOLD).any():
        return [(0, 0)]
    return [(repeat, int(fold)) for repeat in range(study["repeats"])
            for fold in sorted(set(repeat_folds(manifest, repeat, config["seed"])))]


def run_trial(config: Mapping[str, Any], dataset: str, variant: str, repeat: int, fold: int,
              manifest_csv: str | Path, out_dir: str | Path, seed: int | None = None) -> dict[str, Any]:
    """Train one network on one trial (``repeat``, ``fold``) with one training seed (the study's first when
    None); write ``predictions.csv`` (one row per test sequence), ``fold.json`` and the training's
    ``metrics.csv``/checkpoints into ``out_dir``."""
    from ..frames import ActionUnitSequenceDataset, NormalisedSequenceDataset
    from ..models import build_model
    from ..train import predict, seed_everything, train
    from ..windows import index_clips

    study = study_config(config, dataset, STUDY)
    network, sizes = variant_model(study, variant)
    out_dir = Path(out_dir)
    manifest = read_manifest(Path(manifest_csv))
    classes, manifest = study_manifest(config, dataset, manifest)
    split = fold_split(manifest, fold, study["val_fraction"], config["seed"], repeat)
    clips = index_clips(config, dataset, study["preset"], manifest)
    training_seed = training_seeds(config, study)[0] if seed is None else seed
    seed = run_seed(training_seed, 100 * repeat + fold)  # a trial's own seed, as each ablation fold has
    seed_everything(seed)  # before building: the initial weights are part of the run
    model = build_model(network, len(classes), **sizes)
    action_units = study["task"] == "action_units"
    if action_units:
        frame_labels = pd.read_csv(paths.manifest_companion_csv(config["results"], dataset, "frame_labels"))
        strides = {"train": study["au_stride"], "val": study["au_stride"], "test": 1}  # every coded test frame
    data = {}
    for part, subjects in split.items():
        part_clips = clips[clips["subject"].isin(subjects)]
        augmentation = study["augmentation"] if part == "train" else None
        if action_units:
            data[part] = ActionUnitSequenceDataset(part_clips, frame_labels, classes, sizes["sequence_length"],
                                                   sizes["input_size"], strides[part], augmentation,
                                                   study["cache_sequences"])
        else:
            data[part] = NormalisedSequenceDataset(part_clips, classes, sizes["sequence_length"], sizes["input_size"],
                                                   augmentation, study["cache_sequences"])
    log.info("%s %s repeat %d fold %d: %d/%d/%d sequences (train x%d copies/val/test), test subjects %s", dataset,
             variant, repeat, fold, len(data["train"].clips), len(data["val"].clips), len(data["test"].clips),
             len(data["train"].copies), split["test"])
    if len(data["test"]) == 0:
        raise ValueError(f"repeat {repeat} fold {fold}: no test sequence in the feature store "
                         f"(were the clips skipped?)")

    # Every clip it reads, with its label and the fingerprint of its features: a changed preset, track,
    # frame folder or label is another run, which trains from the start (fer_pipeline.lineage).
    run_id = fingerprint({"study": run_parameters(study), "variant": variant, "repeat": repeat, "fold": fold,
                          "seed": seed, "classes": classes, "split": split, "deterministic": config["deterministic"],
                          "clips": clips[["clip_id", "subject", "label", "features_sha256"]].values.tolist()})
    result = train(model, data["train"], data["val"] if len(data["val"]) else None, study["training"], out_dir,
                   config["device"], seed, run_id, deterministic=config["deterministic"], multi_label=action_units)
    probabilities, labels = predict(model, data["test"], study["training"]["batch_size"], config["device"],
                                    deterministic=config["deterministic"], multi_label=action_units)
    test_clips = data["test"].clips
    test_items = data["test"].items[:, 0]
    predictions = pd.DataFrame({"clip_id": test_clips["clip_id"].to_numpy()[test_items],
                                "subject": test_clips["subject"].to_numpy()[test_items]})
    if action_units:
        predictions["frame"] = [data["test"].frame_number(i) for i in range(len(data["test"]))]
        for i, unit in enumerate(classes):
            predictions[f"label_{unit}"] = labels[:, i]
            predictions[f"p_{unit}"] = probabilities[:, i]
    else:
        predictions["label"] = [classes[i] for i in labels]
        predictions["prediction"] = [classes[i] for i in probabilities.argmax(1)]
        for i, c in enumerate(classes):
            predictions[f"p_{c}"] = probabilities[:, i]
    for column, value in (("seed", training_seed), ("fold", fold), ("repeat", repeat), ("variant", variant)):
        predictions.insert(0, column, value)
    write_text_atomic(out_dir / "predictions.csv", predictions.to_csv(index=False))
    summary = {"dataset": dataset, "variant": variant, "repeat": repeat, "fold": fold, "seed": training_seed,
               "run_seed": seed, "classes": classes, "split": split, "best_epoch": result.best_epoch,
               "best_val_accuracy": result.best_val_accuracy, "epochs_run": result.epochs_run,
               "accuracy": None if action_units else float((predictions["label"] == predictions["prediction"]).mean()),
               "study": study, "run_sha256": run_id, "code": code_version()}
    write_text_atomic(out_dir / "fold.json", json.dumps(summary, indent=2, default=str))
    return summary


def action_unit_scores(predictions: pd.DataFrame, units: list[str]) -> pd.DataFrame:
    """Each action unit's F1 (0-1, the paper's scale) over the known labels of every (variant, repeat, fold,
    seed), the sigmoid at 0.5, and their mean (``f1_mean``: Table 9's number)."""
    from sklearn.metrics import f1_score

    rows = []
    for (variant, repeat, fold, seed), group in predictions.groupby(["variant", "repeat", "fold", "seed"]):
        row = {"variant": variant, "repeat": int(repeat), "fold": int(fold), "seed": int(seed), "frames": len(group)}
        for unit in units:
            known = group[f"label_{unit}"].notna()
            row[f"f1_{unit}"] = (float(f1_score(group.loc[known, f"label_{unit}"] > 0.5, group.loc[known, f"p_{unit}"] > 0.5,
                                                zero_division=0)) if known.any() else np.nan)
        row["f1_mean"] = float(np.nanmean([row[f"f1_{unit}"] for unit in units]))
        rows.append(row)
    return pd.DataFrame(rows)


def trial_scores(predictions: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Accuracy, macro recall, macro F1 and each class's accuracy (its recall: the paper's Figs. 7-9), in
    percent, of every (variant, repeat, fold, seed)."""
    from ..report import scores

    rows = []
    for (variant, repeat, fold, seed), group in predictions.groupby(["variant", "repeat", "fold", "seed"]):
        per_class = {f"accuracy_{c}": 100 * float((group.loc[group["label"] == c, "prediction"] == c).mean())
                     for c in classes if (group["label"] == c).any()}
        rows.append({"variant": variant, "repeat": int(repeat), "fold": int(fold), "seed": int(seed),
                     "sequences": len(group), **scores(group["label"], group["prediction"], classes), **per_class})
    return pd.DataFrame(rows)


def summary(trials_: pd.DataFrame, predictions: pd.DataFrame, order: list[str], classes: list[str],
            descriptions: Mapping[str, str], paper: Mapping[str, float]) -> pd.DataFrame:
    """One row per network: accuracy, macro recall and macro F1 as mean and std over the trials (the paper's
    "averaged from 40 trails" and its +-), each class's accuracy over all trials' test sequences pooled,
    the number of trials and the paper's number."""
    rows = []
    for variant in order:
        part = trials_[trials_["variant"] == variant]
        pooled = predictions[predictions["variant"] == variant]
        row: dict[str, Any] = {"variant": variant, "description": descriptions.get(variant, "")}
        for metric in ("accuracy", "macro_recall", "macro_f1"):
            row[f"{metric}_mean"] = round(float(part[metric].mean()), 2)
            row[f"{metric}_std"] = round(float(part[metric].std(ddof=0)), 2)
        for c in classes:
            of_class = pooled[pooled["label"] == c]
            row[f"accuracy_{c}"] = round(100 * float((of_class["prediction"] == c).mean()), 2) if len(of_class) else np.nan
        row["trials"] = len(part)
        row["paper_accuracy"] = paper.get(variant, np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def action_unit_summary(trials_: pd.DataFrame, order: list[str], units: list[str], descriptions: Mapping[str, str],
                        paper: Mapping[str, float]) -> pd.DataFrame:
    """One row per network: the mean F1 over action units (mean and std over runs) and each unit's F1."""
    rows = []
    for variant in order:
        part = trials_[trials_["variant"] == variant]
        row: dict[str, Any] = {"variant": variant, "description": descriptions.get(variant, ""),
                               "f1_mean": round(float(part["f1_mean"].mean()), 3),
                               "f1_std": round(float(part["f1_mean"].std(ddof=0)), 3)}
        row.update({f"f1_{unit}": round(float(part[f"f1_{unit}"].mean()), 3) for unit in units})
        row["trials"] = len(part)
        row["paper_f1"] = paper.get(variant, np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def write_table(config: Mapping[str, Any], dataset: str, trial_dirs: list[str | Path], out_csv: str | Path) -> pd.DataFrame:
    """``results/{dataset}/nlstm.csv`` from every trial, with its notes and PNGs beside it.

    Writes ``nlstm.csv`` (one row per network), ``nlstm_folds.csv`` (every trial), ``nlstm.md`` (how the
    numbers were made) and ``nlstm/``: each network's training curves and, for expressions, its confusion
    matrix (STC-NLSTM's is the paper's Tables 4, 6, 8) as PNG and CSV in percent of each true class and the
    per-class accuracy of the four networks side by side (Figs. 7-9); for action units the F1 per unit.
    """
    from ..report import plot_confusion, plot_curves, plot_layers, plot_per_class

    study = study_config(config, dataset, STUDY)
    out_csv = Path(out_csv)
    figures = out_csv.with_suffix("")
    predictions = pd.concat([pd.read_csv(Path(d) / "predictions.csv", dtype={"subject": str}) for d in trial_dirs],
                            ignore_index=True)
    summaries = [json.loads((Path(d) / "fold.json").read_text()) for d in trial_dirs]
    classes = summaries[0]["classes"]
    order = [v for v in variants(study) if v in set(predictions["variant"])]
    descriptions = {v: describe(v) for v in order}
    paper_dataset = study.get("paper_dataset") or dataset
    action_units = study["task"] == "action_units"
    if action_units:
        per_trial = action_unit_scores(predictions, classes)
        table = action_unit_summary(per_trial, order, classes, descriptions, study["paper_f1"].get(paper_dataset, {}))
    else:
        per_trial = trial_scores(predictions, classes)
        table = summary(per_trial, predictions, order, classes, descriptions,
                        study["paper_accuracy"].get(paper_dataset, {}))
    write_text_atomic(out_csv, table.to_csv(index=False))
    write_text_atomic(out_csv.with_name(out_csv.stem + "_folds.csv"), per_trial.to_csv(index=False))
    for variant in order:
        runs = [(s, d) for s, d in zip(summaries, trial_dirs) if s["variant"] == variant]
        curves = {f"r{s['repeat']} f{s['fold']} s{s['seed']}": pd.read_csv(Path(d) / "metrics.csv") for s, d in runs}
        plot_curves(curves, f"{dataset} {variant}", figures / f"{variant}_curves.png")
        if action_units:
            continue
        rows = predictions[predictions["variant"] == variant]
        confusion = pd.crosstab(pd.Categorical(rows["label"], classes), pd.Categorical(rows["prediction"], classes),
                                normalize="index", dropna=False) * 100
        confusion.index.name, confusion.columns.name = "label", "prediction"
        write_text_atomic(figures / f"{variant}_confusion.csv", confusion.round(2).to_csv())
        plot_confusion(rows["label"], rows["prediction"], classes,
                       f"{dataset} {variant}: test sequences of all trials", figures / f"{variant}_confusion.png")
    if study["layer_sweep"]:
        plot_layers(table, study["sizes"].get("conv_layers", 5), "f1_mean" if action_units else "accuracy_mean",
                    f"{dataset}: STC-NLSTM by number of conv layers (the paper's Fig. 10)", figures / "layers.png")
    if action_units:
        plot_per_class(table, classes, f"{dataset}: F1 per action unit (test frames)", figures / "au_f1.png",
                       prefix="f1_", ylabel="F1", top=1.0)
        scored = (f"F1 of each action unit over the test subjects' coded frames (sigmoid > 0.5; unknown codes left "
                  f"out), f1_mean their mean (Table 9's number); {len(per_trial)} runs")
    else:
        plot_per_class(table, classes, f"{dataset}: accuracy per class (the paper's Figs. 7-9)",
                       figures / "class_accuracy.png")
        scored = (f"{per_trial.groupby('variant').size().max()} trials per network ({study['repeats']} repeats of the "
                  f"protocol's subject folds); accuracy, macro recall and macro F1 in percent, mean and std over "
                  f"trials; accuracy_<class>: that class's test sequences of all trials pooled")
    notes = [
        f"STC-NLSTM and its baselines on {dataset}, training seeds {training_seeds(config, study)}: {scored}.",
        f"classes {classes}; sequences of {study['sizes']['sequence_length']} steps at "
        f"{study['sizes']['input_size']} px from preset {study['preset']}",
        f"sizes {json.dumps(study['sizes'])}",
        f"training {json.dumps(study['training'])}, augmentation {json.dumps(study['augmentation'])}, validation "
        f"subjects carved from each trial's training subjects: {study['val_fraction']}",
        f"paper_accuracy / paper_f1: the paper's Tables 3, 5, 7, 9 for {paper_dataset} (its sizes and data; on any "
        f"other data not comparable).",
        f"code: {json.dumps(code_version())}",
    ]
    write_text_atomic(out_csv.with_suffix(".md"), "\n".join(notes) + "\n")
    return table
