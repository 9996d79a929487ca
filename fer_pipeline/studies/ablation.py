"""Study ``ablation``: Table I of Miyoshi, Nagata, Hashimoto, "Facial-Expression Recognition from Video Using
Enhanced Convolutional LSTM" (eNTERFACE'05).

Protocol (the Japanese version): every video cut into 16-frame windows overlapping by 8; subjects split
into 5 groups, leave-one-subject-group-out, the mean of the 5 accuracies; momentum SGD. Five variants
(fer_pipeline.models: ablation_a ... ablation_e). Each (variant, fold) is one job, :func:`run_fold`; the
table, :func:`write_table`, gathers their predictions.

Window accuracy scores each window; video accuracy averages the softmax of a video's windows and takes the
arg-max. The paper reports one accuracy per variant, without saying which; the table shows both, and the
paper's number beside them.

Settings the paper does not give are chosen on validation subjects, never on test folds: ``selection`` names
candidate settings (overrides of the study's config), one variant and an order of preference; each candidate
is trained on every round's training subjects and scored on that round's validation subjects only
(:func:`run_fold` with ``candidate``: the round's test subjects are not even read), and
:func:`write_selection` tables them and chooses by the one-standard-error rule (:func:`one_se_choice`),
beside the candidate the config holds (``results/{dataset}/ablation_selection.csv``).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..config import ConfigError, dataset_config, deep_update, run_seed, study_config, training_seeds, validate
from ..datasets import present_classes, read_manifest
from ..files import write_text_atomic
from ..protocols import fold_split
from ..provenance import code_version, fingerprint

log = logging.getLogger(__name__)

STUDY = "ablation"


def run_parameters(study: Mapping[str, Any]) -> dict[str, Any]:
    """The study config one run depends on: all of it but the list of training seeds (adding a seed must
    not retrain the runs of the others) and the selection's candidates (a run is made by the settings it
    has, not by those it was chosen among)."""
    return {k: v for k, v in study.items() if k not in ("seeds", "selection")}


def candidates(config: Mapping[str, Any], dataset: str) -> list[str]:
    """The names of the study's selection candidates for ``dataset``, by name (none without a ``selection``
    block)."""
    return sorted(study_config(config, dataset, STUDY).get("selection", {}).get("candidates", {}))


def candidate_config(config: Mapping[str, Any], dataset: str, candidate: str) -> dict[str, Any]:
    """The whole config with ``candidate``'s overrides merged into the dataset's study overrides, validated
    (a wrong key of a candidate is named like any other key) and without the selection block."""
    selection = study_config(config, dataset, STUDY).get("selection")
    if not selection or candidate not in selection["candidates"]:
        raise ConfigError(f"studies.{STUDY}.selection.candidates has no candidate {candidate!r} for dataset {dataset} "
                          f"(configured: {', '.join(candidates(config, dataset)) or 'none'})")
    merged = copy.deepcopy(dict(config))
    overrides = dataset_config(merged, dataset).setdefault("study_overrides", {})
    overrides[STUDY] = deep_update(overrides.get(STUDY, {}), selection["candidates"][candidate])
    overrides[STUDY].pop("selection", None)
    merged["studies"][STUDY].pop("selection", None)
    return validate(merged, source=f"studies.{STUDY}.selection.candidates.{candidate} (dataset {dataset})")


def candidate_parameters(config: Mapping[str, Any], dataset: str, candidate: str) -> dict[str, Any]:
    """What one selection run depends on: the candidate's study config (as :func:`run_parameters`) and the
    variant it trains."""
    selection = study_config(config, dataset, STUDY)["selection"]
    return {"variant": selection["variant"],
            "study": run_parameters(study_config(candidate_config(config, dataset, candidate), dataset, STUDY))}


def run_fold(config: Mapping[str, Any], dataset: str, variant: str, fold: int, manifest_csv: str | Path,
             out_dir: str | Path, seed: int | None = None, candidate: str | None = None) -> dict[str, Any]:
    """Train one variant on one round with one training seed (the study's first when None) and write
    ``predictions.csv`` (one row per test window) and the training's ``metrics.csv``/checkpoints into
    ``out_dir``.

    With ``candidate`` (a name under the study's ``selection.candidates``) the run trains with that
    candidate's settings and scores the round's validation subjects instead: ``predictions.csv`` holds their
    windows, and the test subjects' windows are never built, so no choice made from it can have seen them.
    """
    from ..models import MODELS, build_model
    from ..train import predict, seed_everything, train
    from ..windows import WindowDataset, index_clips

    if candidate is not None:
        config = candidate_config(config, dataset, candidate)
    scored = "test" if candidate is None else "val"
    study = study_config(config, dataset, STUDY)
    if variant not in MODELS:
        raise ConfigError(f"studies.{STUDY}.variants: unknown model '{variant}' (registered: {sorted(MODELS)})")
    out_dir = Path(out_dir)
    manifest = read_manifest(Path(manifest_csv))
    classes = present_classes(config, dataset, manifest)
    split = fold_split(manifest, fold, study["val_fraction"], config["seed"])
    clips = index_clips(config, dataset, study["preset"], manifest)
    sizes = dict(study["sizes"])
    training_seed = training_seeds(config, study)[0] if seed is None else seed
    seed = run_seed(training_seed, fold)
    seed_everything(seed)  # before building: the initial weights are part of the run
    model = build_model(variant, len(classes), **sizes)
    parts = ("train", "val") if scored == "val" else ("train", "val", "test")
    data = {part: WindowDataset(clips, classes, model.fields, subjects=split[part], size=sizes["input_size"],
                                cache=study["cache_windows"],
                                mirror=part == "train" and study["training"].get("mirror", False))
            for part in parts}
    log.info("%s %s fold %d%s: %s windows (%s), subjects %s=%s", dataset, variant, fold,
             f" candidate {candidate}" if candidate else "", "/".join(str(len(data[p])) for p in parts),
             "/".join(parts), scored, split[scored])
    if len(data[scored]) == 0:
        raise ValueError(f"fold {fold}: no {scored} window in the feature store (were the clips skipped?)")

    # Every clip it reads, with the label it is trained on and the fingerprint of its features: a changed
    # preset, track, video or label is another run, which trains from epoch 1 (fer_pipeline.lineage).
    run_id = fingerprint({"study": run_parameters(study), "variant": variant, "fold": fold, "seed": seed, "classes": classes,
                          "split": split, "deterministic": config["deterministic"],
                          "clips": clips[["clip_id", "subject", "label", "features_sha256"]].values.tolist()})
    result = train(model, data["train"], data["val"], study["training"], out_dir, config["device"], seed, run_id,
                   deterministic=config["deterministic"])
    probabilities, labels = predict(model, data[scored], study["training"]["batch_size"], config["device"],
                                    deterministic=config["deterministic"])
    scored_clips = data[scored].clips
    items = data[scored].items
    predictions = pd.DataFrame({
        "clip_id": scored_clips["clip_id"].to_numpy()[items[:, 0]],
        "subject": scored_clips["subject"].to_numpy()[items[:, 0]],
        "window": items[:, 1],
        "label": [classes[i] for i in labels],
        "prediction": [classes[i] for i in probabilities.argmax(1)],
        **{f"p_{c}": probabilities[:, i] for i, c in enumerate(classes)},
    })
    predictions.insert(0, "seed", training_seed)
    predictions.insert(0, "fold", fold)
    predictions.insert(0, "variant", variant)
    if candidate is not None:
        predictions.insert(0, "candidate", candidate)
    write_text_atomic(out_dir / "predictions.csv", predictions.to_csv(index=False))
    summary = {"dataset": dataset, "variant": variant, "fold": fold, "seed": training_seed, "run_seed": seed,
               "candidate": candidate, "scored": scored, "classes": classes, "split": split,
               "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
               "epochs_run": result.epochs_run, "window_accuracy": float((predictions["label"] == predictions["prediction"]).mean()),
               "study": study, "run_sha256": run_id, "code": code_version()}
    write_text_atomic(out_dir / "fold.json", json.dumps(summary, indent=2, default=str))
    return summary


def video_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per video: the mean of its windows' class probabilities, and that mean's arg-max."""
    prob_cols = [c for c in predictions.columns if c.startswith("p_")]
    keys = ["variant", "fold"] + (["seed"] if "seed" in predictions.columns else []) + ["clip_id", "subject", "label"]
    videos = predictions.groupby(keys, as_index=False)[prob_cols].mean()
    videos["prediction"] = [prob_cols[i][2:] for i in videos[prob_cols].to_numpy().argmax(1)]
    return videos


def write_table(config: Mapping[str, Any], dataset: str, fold_dirs: list[str | Path], out_csv: str | Path) -> pd.DataFrame:
    """``results/{dataset}/ablation.csv`` from every (variant, fold) job, with its PNGs and notes beside it.

    Writes ``ablation.csv`` (one row per variant), ``ablation_folds.csv`` (every fold, both levels),
    ``ablation.md`` (how the numbers were made) and ``ablation/`` (a confusion matrix and training curves
    per variant).
    """
    from ..models import MODELS
    from ..report import fold_table, plot_confusion, plot_curves, summary_table

    study = study_config(config, dataset, STUDY)
    out_csv = Path(out_csv)
    figures = out_csv.with_suffix("")
    windows = pd.concat([pd.read_csv(Path(d) / "predictions.csv", dtype={"subject": str}) for d in fold_dirs],
                        ignore_index=True)
    summaries = [json.loads((Path(d) / "fold.json").read_text()) for d in fold_dirs]
    classes = summaries[0]["classes"]
    videos = video_predictions(windows)
    folds = pd.concat([fold_table(windows, "window", classes), fold_table(videos, "video", classes)],
                      ignore_index=True)
    order = [v for v in study["variants"] if v in set(windows["variant"])]
    table = summary_table(folds, {v: MODELS[v].description for v in order}, study["paper_accuracy"], order)
    write_text_atomic(out_csv, table.to_csv(index=False))
    write_text_atomic(out_csv.with_name(out_csv.stem + "_folds.csv"), folds.to_csv(index=False))
    for variant in order:
        rows = videos[videos["variant"] == variant]
        plot_confusion(rows["label"], rows["prediction"], classes,
                       f"{dataset} {variant}: videos of all folds", figures / f"{variant}_confusion.png")
        runs = [(s, d) for s, d in zip(summaries, fold_dirs) if s["variant"] == variant]
        several_seeds = len({s["seed"] for s, _ in runs}) > 1
        curves = {f"{s['fold']} seed {s['seed']}" if several_seeds else s["fold"]: pd.read_csv(Path(d) / "metrics.csv")
                  for s, d in runs}
        plot_curves(curves, f"{dataset} {variant}", figures / f"{variant}_curves.png")
    ranking = table.sort_values("video_accuracy_mean", ascending=False)["variant"].tolist()
    notes = [
        f"Enhanced ConvLSTM ablation (Table I) on {dataset}: leave-one-subject-group-out over "
        f"{folds['fold'].nunique()} groups, training seeds {training_seeds(config, study)}; accuracy, macro recall and "
        f"macro F1 in percent, mean and std over every (fold, seed) run.",
        "window_*: each 16-frame window scored alone; video_*: the mean softmax of a video's windows.",
        f"preset {study['preset']}, input {study['sizes']['input_size']} px, sizes {json.dumps(study['sizes'])}",
        f"training {json.dumps(study['training'])}, validation subjects carved from training: {study['val_fraction']}",
        f"ranking by video accuracy: {' > '.join(ranking)}",
        "paper_accuracy: eNTERFACE'05, Table I of the paper (the paper's sizes; not comparable on other data).",
        f"code: {json.dumps(code_version())}",
    ]
    write_text_atomic(out_csv.with_suffix(".md"), "\n".join(notes) + "\n")
    return table


def preference(selection: Mapping[str, Any]) -> list[str]:
    """The candidates in the selection's order of preference: ``prefer`` (every candidate, once), or by name."""
    names = sorted(selection["candidates"])
    prefer = list(selection.get("prefer") or names)
    if sorted(prefer) != names:
        raise ConfigError(f"studies.{STUDY}.selection.prefer must list every candidate once: it has "
                          f"{sorted(prefer)}, the candidates are {names}")
    return prefer


def one_se_choice(folds: pd.DataFrame, prefer: list[str]) -> tuple[str, float, list[str]]:
    """The one-standard-error rule on the rounds' video accuracies (Breiman et al.; Hastie et al., sec. 7.10):
    the best mean minus its standard error (sample std over rounds / sqrt(rounds)) is the bar, and the first
    of ``prefer`` whose mean reaches it is chosen: a preferred setting is given up only for one that validates
    clearly better, not for a difference within the rounds' noise. Returns (chosen, bar, candidates that
    reach it, in ``prefer``'s order)."""
    videos = folds[folds["level"] == "video"]
    by_candidate = videos.groupby("variant")["accuracy"]
    means = by_candidate.mean()
    best = max((c for c in prefer if c in means.index), key=lambda c: means[c])  # ties: the preferred one
    rounds = by_candidate.count()[best]
    error = float(by_candidate.std(ddof=1)[best]) / np.sqrt(rounds) if rounds > 1 else 0.0
    bar = float(means[best]) - error
    reach = [c for c in prefer if c in means.index and means[c] >= bar - 1e-9]
    return reach[0], bar, reach


def _round_choice(folds: pd.DataFrame, prefer: list[str]) -> pd.DataFrame:
    """Per round, the candidate its own validation subjects score best: video accuracy, then macro F1, then
    window accuracy; a tie left after that goes to the preferred one."""
    videos = folds[folds["level"] == "video"].set_index(["fold", "variant"])
    windows = folds[folds["level"] == "window"].set_index(["fold", "variant"])
    rows = []
    for fold in sorted(videos.index.get_level_values("fold").unique()):
        keys = {c: (videos.loc[(fold, c), "accuracy"], videos.loc[(fold, c), "macro_f1"],
                    windows.loc[(fold, c), "accuracy"], -prefer.index(c))
                for c in prefer if (fold, c) in videos.index}
        rows.append({"fold": fold, "chosen": max(keys, key=keys.get)})
    return pd.DataFrame(rows)


def write_selection(config: Mapping[str, Any], dataset: str, run_dirs: list[str | Path],
                    out_csv: str | Path) -> pd.DataFrame:
    """``results/{dataset}/ablation_selection.csv`` from every (candidate, fold) run: one row per candidate (in
    the order of preference) with its validation subjects' scores (mean and std over rounds, each round's video
    accuracy), whether it reaches the one-standard-error bar (:func:`one_se_choice`), whether the rule chooses
    it, and the number of rounds whose own validation subjects score it best; ``ablation_selection_folds.csv``
    and ``ablation_selection.md`` (the rule's choice against ``selection.chosen``, the setting the config
    holds; each round's choice; the candidates' settings) beside it. Test subjects appear nowhere."""
    from ..report import fold_table, summary_table

    study = study_config(config, dataset, STUDY)
    selection = study["selection"]
    out_csv = Path(out_csv)
    windows = pd.concat([pd.read_csv(Path(d) / "predictions.csv", dtype={"subject": str}) for d in run_dirs],
                        ignore_index=True)
    summaries = [json.loads((Path(d) / "fold.json").read_text()) for d in run_dirs]
    if any(s["scored"] != "val" for s in summaries):
        raise ValueError("write_selection: every run must score its round's validation subjects (run_fold candidate=)")
    classes = summaries[0]["classes"]
    # The tables group by "variant": here each candidate is one.
    windows = windows.drop(columns="variant").rename(columns={"candidate": "variant"})
    folds = pd.concat([fold_table(windows, "window", classes), fold_table(video_predictions(windows), "video", classes)],
                      ignore_index=True)
    prefer = [c for c in preference(selection) if c in set(windows["variant"])]
    settings = {c: json.dumps(selection["candidates"][c], sort_keys=True) for c in prefer}
    table = summary_table(folds, settings, {}, prefer).drop(columns="paper_accuracy")
    table = table.rename(columns={"variant": "candidate", "description": "overrides"})
    chosen, bar, reach = one_se_choice(folds, prefer)
    by_round = _round_choice(folds, prefer)
    table.insert(2, "reaches_one_se_bar", [c in reach for c in prefer])
    table.insert(2, "chosen", [c == chosen for c in prefer])
    table.insert(4, "rounds_scored_best", [int((by_round["chosen"] == c).sum()) for c in prefer])
    write_text_atomic(out_csv, table.to_csv(index=False))
    write_text_atomic(out_csv.with_name(out_csv.stem + "_folds.csv"),
                      folds.rename(columns={"variant": "candidate"}).to_csv(index=False))
    held = selection.get("chosen")
    notes = [
        f"Selection of the ablation's settings on {dataset} by validation subjects (variant {selection['variant']}): "
        f"each candidate trained on every round's training subjects and scored on that round's validation subjects "
        f"({study['val_fraction']} of its training subjects); the test subjects are never read. Scores in percent, "
        f"mean and std over rounds.",
        f"Chosen by the one-standard-error rule: {chosen} (the first in the order of preference whose mean video "
        f"accuracy reaches the best mean minus its standard error, {bar:.2f}; reaching it: {', '.join(reach)}).",
        f"The config holds (selection.chosen): {held}" + ("." if held == chosen else
                                                          f", not the rule's choice {chosen}: update it."),
        "Each round's own best (video accuracy, then macro F1, then window accuracy, then preference): "
        + ", ".join(f"round {r.fold}: {r.chosen}" for r in by_round.itertuples()),
        "Candidates in the order of preference (overrides of the study's config for this dataset):",
        *[f"- {c}: {settings[c]}" for c in prefer],
        f"code: {json.dumps(code_version())}",
    ]
    write_text_atomic(out_csv.with_suffix(".md"), "\n".join(notes) + "\n")
    if held != chosen:
        log.warning("%s: the rule chooses %s, the config holds %s", out_csv, chosen, held)
    return table
