"""Study ``frafer``: Tables I-III of Shahabinejad, Wang, Yu, Tang, Li, "Toward Personalized Emotion Recognition: A
Face Recognition Based Attention Method for Facial Emotion Recognition" (FG 2021; paper 003).

Stills datasets (AffectNet, Tables I and III; the networks: fer_pipeline.models.frafer). One job per
(variant, class set, training seed), :func:`run_stills`: train on the ``train`` partition, with validation
images carved from it (``val_fraction``: the kept epoch; the paper names no validation set and nothing is
ever chosen on the scored set), and score AffectNet's validation partition (``val``: 500 images per class in
the distributed lists). The 8-class set is AffectNet's eight; the 7-class set drops contempt's images and has
no contempt logit (the paper's footnote 1; HSEmotion [14] the same). Training as the paper: 6 epochs, batch 8,
a flat lr of 3e-5 (Adam, HSEmotion's optimiser); the baseline's loss weighted by 1 / class count with the
smallest weight 1 (``class_weights``, HSEmotion's), passed to fer_pipeline.train's ``class_weights``.

Video datasets (AFEW, Table II), :func:`run_video`: the procedure of the paper's reference [14] (HSEmotion,
sec. 3.3; the paper: "we follow the same steps"). No training on the videos: per face frame the FER network's
pooled 1280-d feature (the network as trained on the stills dataset ``video.features_from``: the stills job's
kept weights of that variant, class set ``video.features_classes``, same training seed; or a B0 state dict
from ``video.weights``), per video the mean, standard deviation, minimum and maximum over its face frames
(5120-d; a video without any face frame, or skipped by preprocessing, gets zeros), L2 normalisation, and a
LinearSVC (C = 1.1) trained on the round's training videos, scored on all of its test videos (AFEW: all of
Val). Every round of the dataset's protocol is scored from the same features (the network does not depend on
the round; AFEW has one round).

:func:`write_table` gathers the jobs into ``results/{dataset}/frafer.csv`` (per variant and class set:
accuracy, macro recall, macro F1, per-class accuracy, runs, the paper's number), ``frafer_folds.csv``,
``frafer.md`` (the weights each network started from) and ``frafer/`` (confusion matrices, curves, Fig. 4's
attention maps of a few scored faces).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import paths
from ..config import ConfigError, run_seed, study_config, training_seeds
from ..datasets import present_classes, read_manifest
from ..files import save_figure, write_text_atomic
from ..lineage import is_stills
from ..protocols import fold_split, rounds, units
from ..provenance import code_version, fingerprint

log = logging.getLogger(__name__)

STUDY = "frafer"
CLASS_SETS = (8, 7)
DROPPED_FOR_7 = "contempt"  # the paper's footnote 1: the seven classes are the eight without contempt
VIDEO_STATISTICS = ("mean", "std", "min", "max")
FEATURE_DIM = 1280  # EfficientNet-B0's pooled feature
PAPER_TABLES = {"classes8": "Table I / III", "classes7": "Table I", "video": "Table II"}


# -- config -----------------------------------------------------------------------------------------------------

def run_parameters(study: Mapping[str, Any]) -> dict[str, Any]:
    """The study config a stills job depends on: all of it but the seeds, the paper's numbers, the video block
    and the figure's face count (none changes a trained network)."""
    return {k: v for k, v in study.items()
            if k not in ("seeds", "paper_accuracy", "video", "attention_faces", "class_sets", "variants")}


def video_parameters(study: Mapping[str, Any]) -> dict[str, Any]:
    """What a video job depends on besides the network it reads: the video block."""
    return {"video": study["video"]}


def stills_dataset(config: Mapping[str, Any], dataset: str) -> bool:
    return is_stills(config, dataset)


def preset(config: Mapping[str, Any], dataset: str) -> str:
    """The preset a dataset's frafer jobs read: the stills preset, or the video block's for a video dataset."""
    study = study_config(dict(config), dataset, STUDY)
    return study["preset"] if stills_dataset(config, dataset) else study["video"]["preset"]


def run_dir(results: str | Path, dataset: str, variant: str, classes: int | str, seed: int | str) -> Path:
    """A stills job's folder: results/{dataset}/frafer/{variant}/classes{8|7}/seed{seed}."""
    return paths.study_dir(results, dataset, STUDY) / variant / f"classes{classes}" / f"seed{seed}"


def video_dir(results: str | Path, dataset: str, variant: str, seed: int | str) -> Path:
    """A video job's folder: results/{dataset}/frafer/video/{variant}/seed{seed}."""
    return paths.study_dir(results, dataset, STUDY) / "video" / variant / f"seed{seed}"


def jobs(config: Mapping[str, Any], dataset: str) -> list[Path]:
    """Every job's folder of the study on ``dataset``: (variant, class set, seed) for stills, (variant, seed) for
    videos."""
    study = study_config(dict(config), dataset, STUDY)
    seeds = training_seeds(dict(config), study)
    if stills_dataset(config, dataset):
        return [run_dir(config["results"], dataset, v, c, s) for v in study["variants"] for c in study["class_sets"]
                for s in seeds]
    return [video_dir(config["results"], dataset, v, s) for v in study["video"]["variants"] for s in seeds]


def video_network_run(config: Mapping[str, Any], dataset: str, variant: str, seed: int | str) -> Path | None:
    """The stills job whose kept weights a video job of ``dataset`` reads (None: ``video.weights`` instead)."""
    video = study_config(dict(config), dataset, STUDY)["video"]
    source = video.get("features_from")
    if not source:
        return None
    if source not in config["datasets"] or not stills_dataset(config, source):
        raise ConfigError(f"studies.{STUDY}.video.features_from of {dataset}: '{source}' is not a stills dataset "
                          f"of datasets")
    return run_dir(config["results"], source, variant, video["features_classes"], seed)


def study_classes(config: Mapping[str, Any], dataset: str, manifest: pd.DataFrame, n_classes: int) -> list[str]:
    """The classes of a class set: the adapter's classes the manifest holds (AffectNet's eight), and for 7 the
    same without contempt."""
    classes = present_classes(dict(config), dataset, manifest)
    if n_classes == 7:
        classes = [c for c in classes if c != DROPPED_FOR_7]
    elif n_classes != 8:
        raise ConfigError(f"studies.{STUDY}.class_sets: {n_classes} is not a class set (8, 7)")
    if len(classes) != n_classes:
        log.warning("%s: %d classes in the manifest for the %d-class set: %s", dataset, len(classes), n_classes,
                    classes)
    return classes


def class_weights(labels: Sequence[str], classes: Sequence[str]) -> list[float]:
    """HSEmotion's loss weights: 1 / the class's count of training images, scaled so the smallest weight is 1
    (the largest class gets 1); a class without training images gets 1."""
    counts = pd.Series(list(labels)).value_counts()
    n = np.array([counts.get(c, 0) for c in classes], np.float64)
    largest = n.max() if n.max() > 0 else 1.0
    return [float(largest / k) if k > 0 else 1.0 for k in n]


def stills_split(config: Mapping[str, Any], dataset: str, manifest: pd.DataFrame, n_classes: int,
                 val_fraction: float) -> tuple[list[str], pd.DataFrame, dict[str, list[str]]]:
    """The class set's classes, its images of the manifest and their parts: ``train`` and ``val`` (carved from
    the ``train`` partition) and ``test`` (the ``val`` partition, the scored one): clip ids."""
    classes = study_classes(config, dataset, manifest, n_classes)
    manifest = manifest[manifest["label"].isin(classes)].reset_index(drop=True)
    split = fold_split(manifest, 0, val_fraction, config["seed"])  # AffectNet has no subjects: a unit is an image
    unit_of = units(manifest)
    by_part = {part: manifest.loc[unit_of.isin(set(chosen)), "clip_id"].tolist() for part, chosen in split.items()}
    return classes, manifest, by_part


def avoid_single_batch(train: pd.DataFrame, val: pd.DataFrame, batch_size: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training images with a last batch of one would stop B0 (batch norm of a 1 x 1 map in train mode needs two
    values): the last training image then moves to validation (never to the scored set)."""
    if batch_size > 1 and len(train) > 1 and len(train) % batch_size == 1:
        return train.iloc[:-1].reset_index(drop=True), pd.concat([val, train.iloc[-1:]], ignore_index=True)
    return train, val


def _weights_note(study: Mapping[str, Any], model) -> str:
    note = model.weights_note
    if not study["weights"].get("fer"):
        note += " (weights.if_missing: scratch chosen in config: not the paper's ImageNet-initialised B0)"
    return note


def _model_sizes(config: Mapping[str, Any], study: Mapping[str, Any], fer_weights: str | None) -> dict[str, Any]:
    """The network's sizes with its files: the FER weights given, the FR net's (dlib: models.dlib_face_resnet)."""
    sizes = dict(study["sizes"])
    fr = study["weights"].get("fr")
    if fr is None and sizes.get("fr_network", "dlib_resnet") == "dlib_resnet":
        fr = config.get("models", {}).get("dlib_face_resnet")
    return {**sizes, "fer_weights": fer_weights, "fr_weights": fr}


def missing_weights_message(dataset: str) -> str:
    """Why a frafer job on ``dataset`` stops when ``studies.frafer.weights.fer`` is unset and ``if_missing`` is
    ``stop``: which weights to give, and how to choose training from scratch instead."""
    return (f"studies.{STUDY}.weights.fer is not set and studies.{STUDY}.weights.if_missing is 'stop': the paper's "
            f"EfficientNet-B0 ([14]) starts from ImageNet weights. Set studies.{STUDY}.weights.fer to an "
            f"efficientnet_b0 state dict, ImageNet- or AffectNet-trained, in torchvision's names or timm's (e.g. "
            f"HSEmotion's; fer_pipeline/models/converters.py maps them), or set "
            f"datasets.{dataset}.study_overrides.{STUDY}.weights.if_missing: scratch to train B0 from scratch "
            f"(the table's notes say so)")


def check_weights(study: Mapping[str, Any], dataset: str) -> None:
    """``weights.fer`` unset and ``weights.if_missing: stop``: a ConfigError with :func:`missing_weights_message`
    (the workflow raises it while it builds the DAG, before any job runs; the job before training)."""
    if not study["weights"].get("fer") and study["weights"]["if_missing"] == "stop":
        raise ConfigError(missing_weights_message(dataset))


# -- stills: one (variant, class set, seed) -------------------------------------------------------------------

def run_stills(config: Mapping[str, Any], dataset: str, variant: str, n_classes: int, manifest_csv: str | Path,
               out_dir: str | Path, seed: int | None = None) -> dict[str, Any]:
    """Train ``variant`` on the class set's training images, keep the best validation epoch, score the ``val``
    partition; write ``predictions.csv``, ``fold.json``, the training's ``metrics.csv`` / ``best.pt`` and, for
    the networks with a spatial map, ``attention.npz`` (Fig. 4's columns of a few scored faces)."""
    from ..models import build_model
    from ..stills import StillDataset, index_images
    from ..train import predict, seed_everything, train

    config = dict(config)
    study = study_config(config, dataset, STUDY)
    if variant not in study["variants"]:
        raise ConfigError(f"studies.{STUDY}.variants of {dataset} has no '{variant}' ({study['variants']})")
    check_weights(study, dataset)
    out_dir = Path(out_dir)
    manifest = read_manifest(Path(manifest_csv))
    classes, manifest, parts = stills_split(config, dataset, manifest, n_classes, study["val_fraction"])
    index = index_images(config, dataset, study["preset"], manifest).set_index("clip_id", drop=False)
    part_index = {part: index.loc[[c for c in clip_ids if c in index.index]].reset_index(drop=True)
                  for part, clip_ids in parts.items()}
    part_index["train"], part_index["val"] = avoid_single_batch(part_index["train"], part_index["val"],
                                                                study["training"]["batch_size"])
    data = {part: StillDataset(frame, classes, study["input_size"], study["cache_images"])
            for part, frame in part_index.items()}
    if len(data["train"]) == 0 or len(data["test"]) == 0:
        raise ValueError(f"{dataset}: {len(data['train'])} training and {len(data['test'])} scored images in the "
                         f"stills store: nothing to train or score")
    training_seed = training_seeds(config, study)[0] if seed is None else seed
    seed_ = run_seed(training_seed, n_classes)
    seed_everything(seed_)
    model = build_model(variant, len(classes), **_model_sizes(config, study, study["weights"].get("fer")))
    weights = class_weights(part_index["train"]["label"], classes) if study["class_weights"] else None
    log.info("%s %s %d classes: %d/%d/%d images (train/val/scored), class weights %s; %s", dataset, variant,
             n_classes, len(data["train"]), len(data["val"]), len(data["test"]), weights, model.weights_note)
    run_id = fingerprint({"study": run_parameters(study), "variant": variant, "classes": classes, "seed": seed_,
                          "deterministic": config["deterministic"], "weights": model.provenance,
                          "images": {part: frame[["clip_id", "label", "features_sha256"]].values.tolist()
                                     for part, frame in part_index.items()}})
    result = train(model, data["train"], data["val"] if len(data["val"]) else None, study["training"], out_dir,
                   config["device"], seed_, run_id, deterministic=config["deterministic"], class_weights=weights)
    probabilities, labels = predict(model, data["test"], study["training"]["batch_size"], config["device"],
                                    deterministic=config["deterministic"])
    predictions = pd.DataFrame({"variant": variant, "classes": n_classes, "fold": 0, "seed": training_seed,
                                "clip_id": part_index["test"]["clip_id"],
                                "label": [classes[i] for i in labels],
                                "prediction": [classes[i] for i in probabilities.argmax(1)]})
    for i, c in enumerate(classes):
        predictions[f"p_{c}"] = probabilities[:, i]
    write_text_atomic(out_dir / "predictions.csv", predictions.to_csv(index=False))
    if study["attention_faces"] and getattr(model, "q_index", None) is not None and variant != "frafer_ssce":
        write_attention(model, data["test"], study["attention_faces"], config["device"], out_dir / "attention.npz")
    summary = {"dataset": dataset, "kind": "stills", "variant": variant, "classes_set": n_classes, "fold": 0,
               "seed": training_seed, "run_seed": seed_, "classes": classes, "class_weights": weights,
               "images": {part: len(d) for part, d in data.items()},
               "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
               "epochs_run": result.epochs_run,
               "accuracy": float((predictions["label"] == predictions["prediction"]).mean()),
               "weights_note": _weights_note(study, model), "provenance": model.provenance,
               "study": run_parameters(study), "run_sha256": run_id, "code": code_version()}
    write_text_atomic(out_dir / "fold.json", json.dumps(summary, indent=2, default=str))
    return summary


def attention_rows(labels: Sequence[int], count: int) -> list[int]:
    """Which scored faces Fig. 4 shows: the first of each class in turn, ``count`` in all (nothing is chosen by
    a score)."""
    labels = np.asarray(labels)
    by_class = [list(np.flatnonzero(labels == c)) for c in sorted(set(labels.tolist()))]
    chosen: list[int] = []
    while len(chosen) < min(count, len(labels)):
        for rows in by_class:
            if rows and len(chosen) < count:
                chosen.append(int(rows.pop(0)))
    return chosen


def write_attention(model, data, count: int, device: str, out_npz: Path) -> Path:
    """Fig. 4's columns for ``count`` scored faces: the input, S (eq. 3; the sSE map of the self-attention rows),
    the channel mean of the FER map q before and after the attention."""
    import torch

    from ..device import resolve_device

    rows = attention_rows([data[i]["label"] for i in range(len(data))], count)
    batch = {"rgb": torch.from_numpy(np.stack([data[i]["rgb"] for i in rows]))}
    device_ = resolve_device(device)
    model.to(device_).eval()
    with torch.inference_mode():
        maps = model.attention_maps({"rgb": batch["rgb"].to(device_)})
    arrays = {"input": maps["input"].cpu().numpy().transpose(0, 2, 3, 1).astype(np.float16),
              "before": maps["before"].mean(1).cpu().numpy().astype(np.float32),
              "after": maps["after"].mean(1).cpu().numpy().astype(np.float32),
              "labels": np.array([data.classes[data[i]["label"]] for i in rows])}
    if maps["attention"] is not None:
        arrays["attention"] = maps["attention"][:, 0].cpu().numpy().astype(np.float32)
    out_npz.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_npz.with_name(f".{out_npz.stem}.partial.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(out_npz)
    return out_npz


# -- videos: [14]'s statistics and a linear SVM ---------------------------------------------------------------

def video_statistics(frames: np.ndarray | None, dim: int = FEATURE_DIM) -> np.ndarray:
    """A video's descriptor from its face frames' features (T, D): mean, std (population), min and max over the
    frames, concatenated (4D); zeros for a video without a face frame (None or T = 0). Not normalised."""
    if frames is None or len(frames) == 0:
        return np.zeros(4 * dim, np.float64)
    frames = np.asarray(frames, np.float64)
    return np.concatenate([frames.mean(0), frames.std(0), frames.min(0), frames.max(0)])


def video_descriptors(per_video: Mapping[str, np.ndarray | None], clip_ids: Sequence[str],
                      dim: int = FEATURE_DIM) -> np.ndarray:
    """The L2-normalised statistics (:func:`video_statistics`) of every clip of ``clip_ids`` (a clip absent
    from ``per_video`` has no face frame: zeros, which stay zeros)."""
    from ..classical import l2_normalise

    return l2_normalise(np.stack([video_statistics(per_video.get(c), dim) for c in clip_ids]))


def frame_features(model, clips: pd.DataFrame, size: int, frames_per_clip: int | None, batch_size: int,
                   device: str) -> dict[str, np.ndarray | None]:
    """Each clip's (T, 1280) pooled FER features of its valid face frames (``frames_per_clip`` evenly spaced
    ones, None: all); None for a clip with no face frame."""
    import torch

    from ..device import resolve_device
    from ..frames import FrameDataset

    device_ = resolve_device(device)
    model.to(device_).eval()
    out: dict[str, np.ndarray | None] = {}
    for _, row in clips.iterrows():
        try:
            frames = FrameDataset(pd.DataFrame([row]), [row["label"]], size, frames_per_clip, None, False).clip_frames(0)
        except ValueError as exc:  # ClipRows: no frame with a face
            log.info("%s: %s: zeros", row["clip_id"], exc)
            out[row["clip_id"]] = None
            continue
        parts = []
        with torch.inference_mode():
            for start in range(0, len(frames), batch_size):
                parts.append(model.pooled_features({"rgb": frames[start:start + batch_size].to(device_)}).cpu().numpy())
        out[row["clip_id"]] = np.concatenate(parts) if parts else None
    return out


def run_video(config: Mapping[str, Any], dataset: str, variant: str, manifest_csv: str | Path,
              network_summary: str | Path | None, out_dir: str | Path, seed: int | None = None) -> dict[str, Any]:
    """[14]'s video procedure for one network: its pooled features of every face frame of every clip, per video
    statistics, L2, and for every round of the protocol a LinearSVC on the training videos scored on all test
    videos. ``network_summary``: the stills job's ``fold.json`` whose ``best.pt`` gives the FER network (None:
    ``video.weights``). Writes ``predictions.csv`` and ``fold.json``."""
    import torch

    from ..models import build_model
    from ..train import seed_everything
    from ..store import StoreError
    from ..windows import index_clips
    from sklearn.svm import LinearSVC

    config = dict(config)
    study = study_config(config, dataset, STUDY)
    video = study["video"]
    if variant not in video["variants"]:
        raise ConfigError(f"studies.{STUDY}.video.variants of {dataset} has no '{variant}' ({video['variants']})")
    out_dir = Path(out_dir)
    training_seed = training_seeds(config, study)[0] if seed is None else seed
    seed_everything(training_seed)
    if network_summary is not None:
        source = json.loads(Path(network_summary).read_text())
        stills_study = study_config(config, video["features_from"], STUDY)
        model = build_model(variant, len(source["classes"]), **_model_sizes(config, stills_study, None))
        state = torch.load(Path(network_summary).with_name("best.pt"), map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        size = stills_study["input_size"]
        note = (f"FER network: {variant} as trained by this study on {video['features_from']} "
                f"({source['classes_set']} classes, seed {source['seed']}, epoch {state['epoch']}): "
                f"{source['weights_note']}")
        network_id = source["run_sha256"]
    else:
        if not video.get("weights"):
            raise ConfigError(f"studies.{STUDY}.video of {dataset}: set features_from (a stills dataset this study "
                              f"trains on) or weights (an EfficientNet-B0 state dict)")
        # The classifier is unused (the pooled feature is read); the class set's size fits an AffectNet head.
        model = build_model(variant, video["features_classes"], **_model_sizes(config, study, video["weights"]))
        size = study["input_size"]
        note = f"FER network: {variant} with {model.weights_note} (video.weights; no training here)"
        network_id = fingerprint(model.provenance)
    manifest = read_manifest(Path(manifest_csv))
    classes = present_classes(config, dataset, manifest)
    try:
        clips = index_clips(config, dataset, video["preset"], manifest)
    except StoreError as exc:  # no clip has faces: every video gets zeros ([14]), and is still scored
        log.warning("%s: every video gets zeros", exc)
        clips = pd.DataFrame(columns=["clip_id", "store", "label"])
    features = frame_features(model, clips, size, video["frames_per_clip"], study["training"]["batch_size"],
                              config["device"])
    faceless = [c for c in manifest["clip_id"] if features.get(c) is None]
    unit_of = dict(zip(manifest["clip_id"], units(manifest)))
    label_of = dict(zip(manifest["clip_id"], manifest["label"]))
    chosen = video.get("rounds")
    frames = []
    for fold in (rounds(manifest) if chosen is None else list(chosen)):
        split = fold_split(manifest, fold, 0.0, config["seed"])  # no validation: C is fixed (1.1, [14]'s)
        train_units = set(split["train"]) | set(split["val"])
        test_units = set(split["test"])
        train_ids = [c for c in manifest["clip_id"] if unit_of[c] in train_units]
        test_ids = [c for c in manifest["clip_id"] if unit_of[c] in test_units]
        svm = LinearSVC(C=video["svm_C"], dual="auto", max_iter=20000, random_state=training_seed)
        svm.fit(video_descriptors(features, train_ids), [label_of[c] for c in train_ids])
        predicted = svm.predict(video_descriptors(features, test_ids))
        frames.append(pd.DataFrame({"variant": variant, "classes": len(classes), "fold": fold, "seed": training_seed,
                                    "clip_id": test_ids, "label": [label_of[c] for c in test_ids],
                                    "prediction": predicted,
                                    "faceless": [features.get(c) is None for c in test_ids]}))
    predictions = pd.concat(frames, ignore_index=True)
    write_text_atomic(out_dir / "predictions.csv", predictions.to_csv(index=False))
    summary = {"dataset": dataset, "kind": "video", "variant": variant, "classes_set": len(classes),
               "seed": training_seed, "classes": classes, "folds": sorted(set(predictions["fold"].tolist())),
               "videos": len(manifest), "faceless_videos": len(faceless),
               "frames": int(sum(len(v) for v in features.values() if v is not None)),
               "accuracy": float((predictions["label"] == predictions["prediction"]).mean()),
               "weights_note": note, "network_sha256": network_id, "video": video, "code": code_version()}
    write_text_atomic(out_dir / "fold.json", json.dumps(summary, indent=2, default=str))
    return summary


# -- the table ------------------------------------------------------------------------------------------------

def paper_number(study: Mapping[str, Any], kind: str, n_classes: int, variant: str) -> float:
    table = study["paper_accuracy"].get("video" if kind == "video" else f"classes{n_classes}", {})
    return float(table.get(variant, np.nan))


def run_scores(predictions: pd.DataFrame, classes_of: Mapping[int, list[str]]) -> pd.DataFrame:
    """Accuracy, macro recall and macro F1 (percent) of every (variant, class set, fold, seed), and how many
    items (images, videos) it scored."""
    from ..report import scores

    rows = []
    for (variant, n, fold, seed), group in predictions.groupby(["variant", "classes", "fold", "seed"]):
        rows.append({"variant": variant, "classes": int(n), "fold": int(fold), "seed": int(seed),
                     "scored": len(group), **scores(group["label"], group["prediction"], classes_of[int(n)])})
    return pd.DataFrame(rows)


def plot_attention(npz_paths: Mapping[str, Path], out_png: Path, title: str) -> Path:
    """Fig. 4: one row per face, columns input, S, the FER map's channel mean before and after the attention
    (one block of rows per network given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = {name: np.load(path) for name, path in npz_paths.items()}
    n_rows = sum(len(b["input"]) for b in blocks.values())
    fig, axes = plt.subplots(n_rows, 4, figsize=(6.4, 1.6 * n_rows), squeeze=False)
    r = 0
    for name, b in blocks.items():
        for i in range(len(b["input"])):
            columns = [("input", b["input"][i].astype(np.float32), None),
                       ("S", b["attention"][i] if "attention" in b else None, "viridis"),
                       ("FER map before", b["before"][i], "magma"), ("FER map after", b["after"][i], "magma")]
            for j, (label, image, cmap) in enumerate(columns):
                ax = axes[r, j]
                ax.axis("off")
                if image is not None:
                    ax.imshow(np.clip(image, 0, 1) if cmap is None else image, cmap=cmap)
                if r == 0:
                    ax.set_title(label, fontsize=8)
            axes[r, 0].text(-0.05, 0.5, f"{name}\n{b['labels'][i]}", fontsize=6, ha="right", va="center",
                            transform=axes[r, 0].transAxes)
            r += 1
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, out_png)


def write_table(config: Mapping[str, Any], dataset: str, run_dirs: Sequence[str | Path],
                out_csv: str | Path) -> pd.DataFrame:
    """``results/{dataset}/frafer.csv`` (one row per variant and class set), ``frafer_folds.csv`` (every run),
    ``frafer.md`` (notes) and ``frafer/`` (confusion matrices, curves, Fig. 4's attention maps)."""
    from ..models import MODELS
    from ..report import plot_confusion, plot_curves

    config = dict(config)
    study = study_config(config, dataset, STUDY)
    out_csv = Path(out_csv)
    figures = out_csv.with_suffix("")
    run_dirs = [Path(d) for d in run_dirs]
    summaries = [json.loads((d / "fold.json").read_text()) for d in run_dirs]
    predictions = pd.concat([pd.read_csv(d / "predictions.csv") for d in run_dirs], ignore_index=True)
    kind = summaries[0]["kind"]
    classes_of = {int(s["classes_set"]): s["classes"] for s in summaries}
    per_run = run_scores(predictions, classes_of)
    order = study["variants"] if kind == "stills" else study["video"]["variants"]
    rows = []
    for n in sorted(classes_of, reverse=True):
        for variant in order:
            part = per_run[(per_run["variant"] == variant) & (per_run["classes"] == n)]
            if part.empty:
                continue
            pooled = predictions[(predictions["variant"] == variant) & (predictions["classes"] == n)]
            row: dict[str, Any] = {"variant": variant, "description": MODELS[variant].description, "classes": n}
            for metric in ("accuracy", "macro_recall", "macro_f1"):
                row[f"{metric}_mean"] = round(float(part[metric].mean()), 2)
                row[f"{metric}_std"] = round(float(part[metric].std(ddof=0)), 2)
            for c in classes_of[n]:
                of_class = pooled[pooled["label"] == c]
                row[f"accuracy_{c}"] = (round(100 * float((of_class["prediction"] == c).mean()), 2)
                                        if len(of_class) else np.nan)
            row["runs"] = len(part)
            row["paper_accuracy"] = paper_number(study, kind, n, variant)
            row["paper_table"] = PAPER_TABLES["video" if kind == "video" else f"classes{n}"]
            rows.append(row)
    table = pd.DataFrame(rows)
    write_text_atomic(out_csv, table.to_csv(index=False))
    write_text_atomic(out_csv.with_name(out_csv.stem + "_folds.csv"), per_run.to_csv(index=False))

    for n in sorted(classes_of, reverse=True):
        for variant in order:
            rows_ = predictions[(predictions["variant"] == variant) & (predictions["classes"] == n)]
            if len(rows_):
                plot_confusion(rows_["label"], rows_["prediction"], classes_of[n],
                               f"{dataset} {variant}, {n} classes: scored images of all runs" if kind == "stills"
                               else f"{dataset} {variant}: test videos of all rounds",
                               figures / (f"{variant}_classes{n}_confusion.png" if kind == "stills"
                                          else f"video_{variant}_confusion.png"))
        if kind == "stills":
            curves = {f"{s['variant']} s{s['seed']}": pd.read_csv(d / "metrics.csv") for s, d in zip(summaries, run_dirs)
                      if int(s["classes_set"]) == n and (d / "metrics.csv").is_file()}
            if curves:
                plot_curves(curves, f"{dataset}, {n} classes", figures / f"curves_classes{n}.png", label="")
    # Fig. 4: FRA-FER's maps (else the first network with some), the largest class set, the first seed.
    with_maps = [(s["variant"] != "frafer", -int(s["classes_set"]), s["seed"], s["variant"], d)
                 for s, d in zip(summaries, run_dirs) if (d / "attention.npz").is_file()]
    if with_maps:
        *_, name, folder = min(with_maps)
        plot_attention({name: folder / "attention.npz"}, figures / "attention_maps.png",
                       f"{dataset}: {name}, scored faces (Fig. 4: input, S, FER map q before / after)")

    notes = [f"FRA-FER study on {dataset} ({'stills: Tables I and III' if kind == 'stills' else 'videos: Table II, [14] procedure'}), "
             f"training seeds {training_seeds(config, study)}; accuracy, macro recall and macro F1 in percent, mean "
             f"and std over runs; accuracy_<class>: that class's scored items of all runs pooled."]
    if kind == "stills":
        images = summaries[0]["images"]
        notes += [f"trained on the 'train' partition ({images['train']} images of the {summaries[0]['classes_set']}-class "
                  f"set, {images['val']} more carved from it for validation: val_fraction {study['val_fraction']}), "
                  f"scored on the 'val' partition ({images['test']} images); 7 classes: contempt's images and "
                  f"logit dropped",
                  f"input {study['input_size']} px from preset {study['preset']}; class-weighted loss: "
                  f"{study['class_weights']} (1 / class count, smallest weight 1)",
                  f"sizes {json.dumps(study['sizes'])}", f"training {json.dumps(study['training'])}"]
    else:
        v = study["video"]
        frames = "every face frame" if v["frames_per_clip"] is None else f"{v['frames_per_clip']} evenly spaced face frames"
        notes += [f"faces of preset {v['preset']} resized to the network's input; {frames} per video; mean, std, min, max over face frames, L2, "
                  f"LinearSVC(C={v['svm_C']}) trained on each round's training videos, scored on all its test "
                  f"videos (rounds {sorted(set(predictions['fold'].tolist()))}); videos without a face frame: "
                  f"{summaries[0]['faceless_videos']} of {summaries[0]['videos']} (zeros)"]
    notes += ["weights:"] + sorted({f"  {s['variant']}: {s['weights_note']}" for s in summaries})
    generated = config["datasets"][dataset].get("generated", False)
    notes.append("paper_accuracy: paper 003's Tables I-III (AffectNet's 287k training images, AFEW 7.0) beside; "
                 + ("this is a generated smoke dataset (a few synthetic subjects, small inputs, few epochs): its "
                    "numbers test the plumbing, they are not comparable with the paper's."
                    if generated else "comparable only at the paper's sizes, data and pretrained weights."))
    notes.append(f"code: {json.dumps(code_version())}")
    write_text_atomic(out_csv.with_suffix(".md"), "\n".join(notes) + "\n")
    return table
