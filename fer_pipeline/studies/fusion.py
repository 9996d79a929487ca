"""Study ``fusion``: Tables II and III of Xu, Ma, Dong, Bai, "Video-based Emotion Recognition using
Aggregated Features and Spatio-temporal Information" (EmotiW 2017, AFEW 7.0).

The paper trains on AFEW's Train and reports on Val. Here every round of the dataset's protocol (a subject
fold of the demo or eNTERFACE'05, AFEW's single fixed round) runs the same jobs, each with its own outputs
under ``results/{dataset}/fusion/fold{k}/``:

0. :func:`run_pretrain`, once per training seed before the rounds (``studies.fusion.pretrain.dataset`` set):
   the paper's first stage, VGG-Face fine-tuned on FER2013 (sec. III-B and IV-A), which every round's
   vgg_face job then starts from instead of ``weights.vgg_face``;
1. :func:`run_network` for ``vgg_face`` and ``resnet10``: fine-tune on the training clips' frames, each
   labelled with its video's label, early stopping on the validation units' frames; then fc6 / fc1 of
   every frame with a face of every clip into ``{network}/features.zarr`` (one group per clip, as the
   feature store; the preset's store is another rule's output and is only read);
2. :func:`run_network` for ``c3d``: fine-tune on 128-frame face sequences, then fc7 of every clip;
3. :func:`run_lstm`: the residual BiLSTM on 128 VGG-Face fc6 vectors; its last-step softmax scores the
   validation and test clips;
4. :func:`run_svm`: SSR+L2, mean and variance of the frame features (VGG-FACE, ResNet-10, and both
   concatenated: "feature aggregation"), and C3D's fc7, each into a one-vs-rest linear SVM fitted on the
   training units only, C chosen by cross-validation over them (fer_pipeline.classical);
5. :func:`run_scores`: the weighted sum of the class probabilities of (aggregation SVM, C3D SVM, BiLSTM),
   0.5 / 0.25 / 0.25 as the paper, or weights searched on the validation units;
6. :func:`write_table`: ``fusion.csv`` with the six rows of Table II, per-class accuracy as Table III, the
   paper's numbers beside them, confusion matrices and training curves.

Three disjoint sets of units (subjects; clips for AFEW, which has no subject ids) per round: ``train`` fits
every network and SVM, ``val`` (carved from the training units) early-stops the networks and, in search
mode, sets the fusion weights; ``test`` is only ever predicted.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from .. import classical, paths, protocols
from ..config import ConfigError, dataset_root, run_seed, study_config, training_seeds
from ..datasets import present_classes, read_manifest
from ..files import write_text_atomic
from ..provenance import code_version, fingerprint
from ..store import ArraySpec, ShardStore

log = logging.getLogger(__name__)

STUDY = "fusion"
PRETRAIN_ADAPTER = "fer2013"  # the adapter of the dataset VGG-Face is fine-tuned on first (the paper: FER2013)
FRAME_NETWORKS = ("vgg_face", "resnet10")
NETWORKS = FRAME_NETWORKS + ("c3d",)
FEATURE_LAYERS = {"vgg_face": "fc6", "resnet10": "fc1", "c3d": "fc7"}
# Table II's rows, in its order: key -> name in the table.
METHODS = {"vgg_face": "VGG-FACE", "resnet10": "ResNet-10", "aggregation": "feature aggregation", "c3d": "C3D",
           "lstm": "LSTM", "fusion": "fusion"}
# The networks whose features each SVM reads (the aggregation concatenates two).
SVM_INPUTS = {"vgg_face": ("vgg_face",), "resnet10": ("resnet10",), "aggregation": ("vgg_face", "resnet10"),
              "c3d": ("c3d",)}
SCORED_PARTS = ("val", "test")
PREDICTION_COLUMNS = ["method", "fold", "part", "clip_id", "unit", "label", "prediction"]


# -- what each job depends on ---------------------------------------------------------------------------------

def job_parameters(study: Mapping[str, Any], job: str) -> dict[str, Any]:
    """The part of the study's config a job's output depends on: the workflow reruns a job when it changes
    (its rule's params) and the job fingerprints its run with it. ``job`` is a network, ``pretrain`` (the
    FER2013 stage), ``lstm``, ``svm`` or ``scores``."""
    split = {"preset": study["preset"], "val_fraction": study["val_fraction"]}
    if job in NETWORKS:
        parameters = {**split, "augmentation": study["augmentation"], job: study[job],
                      "weights": {job: study["weights"].get(job), "if_missing": study["weights"]["if_missing"]}}
        if job == "vgg_face" and study["pretrain"]["dataset"]:
            parameters["pretrain"] = job_parameters(study, "pretrain")
        return parameters
    if job == "pretrain":  # VGG-Face's shape and first weights, the FER2013 data and training, the augmentation
        return {"pretrain": study["pretrain"], "augmentation": study["augmentation"],
                "vgg_face": {key: study["vgg_face"][key] for key in ("input_size", "sizes")},
                "weights": {"vgg_face": study["weights"].get("vgg_face"),
                            "if_missing": study["weights"]["if_missing"]}}
    if job in ("lstm", "svm"):
        return {**split, job: study[job]}
    if job == "scores":
        return {**split, "fusion_weights": study["fusion_weights"]}
    raise ValueError(f"unknown fusion job '{job}' (networks {NETWORKS}, pretrain, lstm, svm, scores)")


# -- one round's data -----------------------------------------------------------------------------------------

@dataclass
class Round:
    """One round of a dataset's protocol: the study's config, the classes, the units of each part, and every
    clip of the preset's store with its ``unit`` and ``part`` (train, val, test)."""

    study: dict[str, Any]
    fold: int
    training_seed: int  # one of the study's seeds
    seed: int  # this run's: fer_pipeline.config.run_seed(training_seed, fold)
    classes: list[str]
    split: dict[str, list[str]]
    clips: pd.DataFrame
    deterministic: bool  # CUDA kernels (fer_pipeline.train.configure_determinism): part of each job's run

    def part(self, name: str) -> pd.DataFrame:
        return self.clips[self.clips["part"] == name]


def assign_parts(clips: pd.DataFrame, manifest: pd.DataFrame, split: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """``clips`` (manifest clips with current features, fer_pipeline.windows.index_clips) with their
    ``unit`` (fer_pipeline.protocols.units) and ``part``."""
    unit_of = dict(zip(manifest["clip_id"], protocols.units(manifest)))
    clips = clips.copy()
    clips["unit"] = clips["clip_id"].map(unit_of)
    part_of = {unit: part for part, units in split.items() for unit in units}
    clips["part"] = clips["unit"].map(part_of)
    return clips.dropna(subset=["part"]).reset_index(drop=True)


def prepare_round(config: Mapping[str, Any], dataset: str, fold: int, manifest_csv: str | Path,
                  seed: int | None = None) -> Round:
    """The round ``fold`` of ``dataset`` with training seed ``seed`` (the study's first when None): split,
    classes and clips (with their inputs' fingerprints)."""
    from ..windows import index_clips

    study = study_config(config, dataset, STUDY)
    manifest = read_manifest(Path(manifest_csv))
    classes = present_classes(config, dataset, manifest)
    split = protocols.fold_split(manifest, fold, study["val_fraction"], config["seed"])
    clips = assign_parts(index_clips(config, dataset, study["preset"], manifest), manifest, split)
    # What a job reads of each clip: its features and the label and unit it is trained or scored with.
    clips["inputs_sha256"] = [fingerprint(list(values)) for values in
                              clips[["features_sha256", "label", "unit"]].itertuples(index=False)]
    missing = [part for part in ("train", "test") if not (clips["part"] == part).any()]
    if missing:
        raise ValueError(f"fold {fold}: no {' or '.join(missing)} clip in the feature store (were they skipped?)")
    log.info("%s fold %d: %s clips (train/val/test), test units %s", dataset, fold,
             "/".join(str(int((clips["part"] == p).sum())) for p in ("train", "val", "test")), split["test"][:10])
    training_seed = training_seeds(config, study)[0] if seed is None else seed
    return Round(study, fold, training_seed, run_seed(training_seed, fold), classes, split, clips,
                 config["deterministic"])


def _run_id(r: Round, job: str, **extra) -> str:
    """Everything that defines a job's result: its config slice, the round, the clips and their inputs."""
    return fingerprint({"job": job, "parameters": job_parameters(r.study, job), "fold": r.fold, "seed": r.seed,
                        "deterministic": r.deterministic,
                        "classes": r.classes, "split": r.split,
                        "clips": r.clips[["clip_id", "inputs_sha256"]].values.tolist(), **extra})


# -- the networks ---------------------------------------------------------------------------------------------

def build_network(network: str, block: Mapping[str, Any], num_classes: int):
    """A fusion network from its config block: its sizes, and the input size its layers depend on."""
    from ..models import build_model

    if network == "c3d":
        return build_model(network, num_classes, crop=block["crop"], **block["sizes"])
    return build_model(network, num_classes, input_size=block["input_size"], **block["sizes"])


PURPOSES = ("train", "val", "extract")


def network_data(network: str, r: Round, clips: pd.DataFrame, purpose: str):
    """A network's dataset of ``clips`` for ``purpose``: ``train`` (every frame, or random sequences, with
    augmentation), ``val`` (``val_frames_per_clip`` evenly spaced frames of each clip, or centred sequences)
    or ``extract`` (every frame of each clip, or its centred sequence)."""
    from ..frames import FrameDataset, SequenceDataset

    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    block, cache = r.study[network], r.study["cache_frames"]
    augmentation = r.study["augmentation"] if purpose == "train" else None
    if network in FRAME_NETWORKS:
        frames_per_clip = block["val_frames_per_clip"] if purpose == "val" else None
        return FrameDataset(clips, r.classes, block["input_size"], frames_per_clip, augmentation, cache)
    return SequenceDataset(clips, r.classes, block["frames"], block["stride"], "rgb", block["resize"],
                           block["crop"], purpose == "train", augmentation, cache)


def weights_file(study: Mapping[str, Any], network: str) -> str | None:
    """The file ``network`` starts from (``weights.<network>``), or None: trained from scratch, as
    ``weights.if_missing: scratch`` chooses. Unset with ``if_missing: stop``, a ConfigError with
    :func:`missing_weights_message` (the workflow raises it while it builds the DAG, before any job runs)."""
    path = study["weights"].get(network)
    if path:
        return path
    if study["weights"]["if_missing"] == "stop":
        raise ConfigError(missing_weights_message(network))
    return None


def initialise(model, study: Mapping[str, Any], network: str, pretrained: Mapping[str, Any] | None = None,
               classes: Sequence[str] = ()) -> str:
    """Load the network's first weights; say what was done, for the notes. ``pretrained``: the summary of
    the FER2013 stage (:func:`run_pretrain`), whose kept weights are loaded, its head too when it was trained
    for the same ``classes`` in the same order (else the head is re-initialised). Otherwise the file config
    names (:func:`weights_file`), or none: trained from scratch on the training split."""
    from ..models.pretrained import load_pretrained

    if pretrained is not None:
        load_pretrained(model, pretrained["checkpoint"], f"studies.{STUDY}.pretrain")
        if list(pretrained["classes"]) != list(classes):
            getattr(model, model.head).reset_parameters()
        return f"fine-tuned from VGG-Face fine-tuned on FER2013 first ({pretrained['note']})"
    key = f"studies.{STUDY}.weights.{network}"
    path = weights_file(study, network)
    if path:
        load_pretrained(model, path, key)
        return f"fine-tuned from {path}"
    log.warning("%s is not set: %s trains from scratch on the training split (weights.if_missing: scratch)",
                key, network)
    return (f"trained from scratch on the training split, not the paper's pretrained {PRETRAINED[network]} "
            f"({key} unset; weights.if_missing: scratch chosen in config)")


# What each network starts from in the paper (001, sec. II-B and III-B), and the files people have of it.
PRETRAINED = {
    "vgg_face": "VGG-Face (Parkhi et al. 2015)",
    "resnet10": "ResNet-10 (Simon et al. 2016, ImageNet)",
    "c3d": "C3D on Sports-1M (Tran et al. 2015)",
}
RELEASE_FILES = {
    "vgg_face": "the PyTorch port's vgg_face_dag.pth (conv1_1 ... fc8), or a state dict in VGGFace's names",
    "resnet10": "a torchvision ResNet state dict with one basic block per stage (conv1, bn1, layer1.0 ... layer4.0)",
    "c3d": "the PyTorch port's c3d.pickle (conv1, conv2, conv3a ... fc8), or a state dict in C3D's names",
}


def missing_weights_message(network: str) -> str:
    """Why a fusion job stops when ``studies.fusion.weights.<network>`` is unset and ``if_missing`` is ``stop``:
    which weights to give, and how to choose training from scratch instead."""
    key = f"studies.{STUDY}.weights.{network}"
    return (f"{key} is not set and studies.{STUDY}.weights.if_missing is 'stop': the paper fine-tunes "
            f"{PRETRAINED[network]}. Point {key} at those weights ({RELEASE_FILES[network]}; "
            f"fer_pipeline/models/converters.py maps the public releases' names), or set "
            f"studies.{STUDY}.weights.if_missing: scratch (for the dataset: datasets.<name>.study_overrides."
            f"{STUDY}.weights.if_missing) to train it from scratch on the training split, which the table's notes "
            f"then say")


def pretrain_source(config: Mapping[str, Any], dataset: str, check_root: bool = False) -> str | None:
    """The dataset VGG-Face is fine-tuned on before ``dataset``'s rounds (``studies.fusion.pretrain.dataset``,
    the paper's FER2013 stage), or None: the vgg_face jobs start from ``weights.vgg_face`` directly. A
    ConfigError naming the key when it is not a configured dataset of the fer2013 adapter (``check_root``: or
    when its root is not given or missing)."""
    source = study_config(dict(config), dataset, STUDY)["pretrain"]["dataset"]
    if source is None:
        return None
    adapter = config["datasets"].get(source, {}).get("adapter")
    if adapter != PRETRAIN_ADAPTER:
        what = "is not configured under 'datasets'" if adapter is None else f"is read by the {adapter} adapter"
        raise ConfigError(f"studies.{STUDY}.pretrain.dataset of {dataset} is '{source}', which {what}: name a "
                          f"dataset of the {PRETRAIN_ADAPTER} adapter (FER2013's fer2013.csv), or null to start the "
                          f"vgg_face jobs from studies.{STUDY}.weights.vgg_face directly")
    if check_root:
        try:
            dataset_root(config, source)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (studies.{STUDY}.pretrain.dataset of {dataset}: VGG-Face is fine-tuned on it "
                              f"first, as the paper does; null skips that stage)") from None
    return source


def no_pretrain_message(dataset: str) -> str:
    """Why the FER2013 stage of ``dataset`` cannot be made: its ``pretrain.dataset`` is null."""
    return f"studies.{STUDY}.pretrain.dataset of {dataset} is null: no FER2013 stage to make"


def run_pretrain(config: Mapping[str, Any], dataset: str, manifest_csv: str | Path, out_dir: str | Path,
                 seed: int | None = None) -> dict[str, Any]:
    """The paper's first stage (001, sec. III-B and IV-A): VGG-Face fine-tuned on FER2013 before AFEW.

    The network is the study's ``vgg_face`` as every round builds it (input size and sizes), started from
    ``weights.vgg_face`` (:func:`initialise`), and trained with ``pretrain.training`` and the study's
    augmentation on the ``train`` partition (FER2013's Training) of ``studies.fusion.pretrain.dataset``
    (``manifest_csv`` is its manifest), the kept epoch chosen on ``val`` (PublicTest); ``test``
    (PrivateTest) is then scored, Table I's accuracy. The faces are that dataset's stills crops of preset
    ``pretrain.preset`` (fer_pipeline.stills), resized to the network's input. Writes the training's
    ``best.pt`` (the kept weights), ``checkpoint.pt`` and ``metrics.csv`` into ``out_dir``, and
    ``pretrain.json``: what the weights were made from (each picture's features fingerprint, the weights
    file's SHA-256, the parameters, the code), fingerprinted as ``run_sha256``, which keys the checkpoint
    (a resumed run must match it) and every vgg_face run made from it."""
    from .. import video
    from ..stills import StillDataset, index_images
    from ..train import predict, seed_everything, train

    config = dict(config)
    source = pretrain_source(config, dataset)
    if source is None:
        raise ConfigError(f"studies.{STUDY}.pretrain.dataset of {dataset} is null: there is no FER2013 stage to run")
    study = study_config(config, dataset, STUDY)
    pretrain, block = study["pretrain"], study["vgg_face"]
    out_dir = Path(out_dir)
    manifest = read_manifest(Path(manifest_csv))
    classes = present_classes(config, source, manifest)
    index = index_images(config, source, pretrain["preset"], manifest)
    parts = {part: index[index["split"] == part].reset_index(drop=True) for part in ("train", "val", "test")}
    if parts["train"].empty:
        raise ValueError(f"{source}: no training picture in the stills store of preset {pretrain['preset']}")
    data = {part: StillDataset(rows, classes, block["input_size"], study["cache_frames"],
                               study["augmentation"] if part == "train" else None) for part, rows in parts.items()}
    training_seed = training_seeds(config, study)[0] if seed is None else seed
    seed_everything(training_seed)  # the initial weights
    model = build_network("vgg_face", block, len(classes))
    initialised = initialise(model, study, "vgg_face")
    weights = weights_file(study, "vgg_face")
    made_from = {"parameters": job_parameters(study, "pretrain"), "source": source, "classes": classes,
                 "seed": training_seed, "deterministic": config["deterministic"],
                 "weights_sha256": video.sha256(weights) if weights else None, "code": code_version(),
                 "images": {part: rows[["clip_id", "label", "features_sha256"]].values.tolist()
                            for part, rows in parts.items()}}
    run_id = fingerprint(made_from)
    result = train(model, data["train"], data["val"] if len(data["val"]) else None, pretrain["training"], out_dir,
                   config["device"], training_seed, run_id, deterministic=config["deterministic"])
    test_accuracy = None
    if len(data["test"]):
        probabilities, labels = predict(model, data["test"], pretrain["training"]["batch_size"], config["device"],
                                        deterministic=config["deterministic"])
        test_accuracy = round(100 * float((probabilities.argmax(1) == labels).mean()), 2)
    counts = "/".join(str(len(d)) for d in data.values())
    note = (f"{source}, {counts} train/val/test pictures of preset {pretrain['preset']}: kept epoch "
            f"{result.best_epoch} of {result.epochs_run}, test accuracy "
            + (f"{test_accuracy} %" if test_accuracy is not None else "not scored (no test pictures)")
            + f" (the paper's {pretrain['paper_accuracy']} %); {initialised}; run {run_id[:12]}")
    summary = {"dataset": dataset, "checkpoint": str(out_dir / "best.pt"), "run_sha256": run_id,
               "initialised": initialised, "note": note, "images": {part: len(d) for part, d in data.items()},
               "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
               "epochs_run": result.epochs_run, "test_accuracy": test_accuracy,
               "paper_accuracy": pretrain["paper_accuracy"],
               **{k: v for k, v in made_from.items() if k != "images"},  # source, classes, seed, weights, code ...
               "features_sha256": fingerprint(made_from["images"])}  # ... and the pictures' fingerprints, in one
    write_text_atomic(paths.pretrain_summary(out_dir), json.dumps(summary, indent=2, default=str))
    log.info("%s: VGG-Face fine-tuned on %s: %s", dataset, source, note)
    return summary


def _extract(model, network: str, data, device: str) -> list[np.ndarray]:
    """The feature layer of each clip of ``data`` (frames: (n_valid, D); C3D: (1, D)), in clip order."""
    import torch

    from ..device import resolve_device

    device_ = resolve_device(device)
    model.to(device_).eval()
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for clip in tqdm(range(len(data.clips)), desc=f"{network} features", unit="clip"):
            if network in FRAME_NETWORKS:
                frames = data.clip_frames(clip)
                parts = [model.extract(batch.to(device_)).float().cpu() for batch in frames.split(256)]
                out.append(torch.cat(parts).numpy())
            else:
                out.append(model.extract(data[clip]["rgb"][None].to(device_)).float().cpu().numpy())
    return out


def write_features(r: Round, network: str, features: list[np.ndarray], rows: list[np.ndarray], run_id: str,
                   store_path: Path, store_config: Mapping[str, Any]) -> dict[str, int]:
    """One group per clip in the network's store: ``features`` and the ``frame`` each row came from."""
    layer = FEATURE_LAYERS[network]
    store = ShardStore(store_path, attrs={"stage": f"{STUDY}[{network}]", "fold": r.fold, "layer": layer,
                                          "run_sha256": run_id, "classes": r.classes},
                       store_config=store_config)
    counts = {"written": 0, "cached": 0}
    with store:
        for clip, vectors, frame_rows in zip(r.clips.itertuples(), features, rows):
            stamp = {"run_sha256": run_id, "inputs_sha256": clip.inputs_sha256}
            if store.is_complete(clip.clip_id, stamp):
                counts["cached"] += 1
                continue
            dims = ("frame", "feature") if network in FRAME_NETWORKS else ("sequence", "feature")
            store.write_clip(clip.clip_id, {
                "features": ArraySpec(vectors.astype(np.float32), dims, attrs={"layer": layer, "network": network}),
                "frame": ArraySpec(frame_rows.astype(np.int64), (dims[0],),
                                   attrs={"meaning": "the aligned-face frame (rgb row) of each feature row; a C3D "
                                                     "sequence starts at its first"}),
            }, {**stamp, "label": clip.label, "subject": str(clip.subject), "unit": clip.unit, "part": clip.part,
                "source": {"store": clip.store, "clip_id": clip.clip_id}})
            counts["written"] += 1
        # Clips of an earlier run that this round no longer has are stale.
        for clip_id in sorted(set(store.stored_clip_ids()) - set(r.clips["clip_id"])):
            store.remove_clip(clip_id)
    return counts


def run_network(config: Mapping[str, Any], dataset: str, network: str, fold: int, manifest_csv: str | Path,
                out_dir: str | Path, seed: int | None = None) -> dict[str, Any]:
    """Fine-tune ``network`` (vgg_face, resnet10, c3d) on round ``fold`` and write its features of every clip
    into ``out_dir/features.zarr``; ``out_dir/features.json`` summarises the run (checkpoints and
    ``metrics.csv`` beside it, from fer_pipeline.train)."""
    from ..train import seed_everything, train

    if network not in NETWORKS:
        raise ValueError(f"'{network}' is not one of the fusion study's networks {NETWORKS}")
    out_dir = Path(out_dir)
    r = prepare_round(config, dataset, fold, manifest_csv, seed)
    block = r.study[network]
    pretrained = None
    if network == "vgg_face" and pretrain_source(config, dataset):  # the FER2013 stage's kept weights
        summary_json = paths.pretrain_summary(paths.fusion_pretrain(config["results"], dataset, r.training_seed))
        if not summary_json.is_file():
            raise FileNotFoundError(f"{summary_json}: the FER2013 stage (studies.{STUDY}.pretrain) has not run: "
                                    f"run fusion-pretrain first")
        pretrained = json.loads(summary_json.read_text())
    seed_everything(r.seed)  # the initial weights
    model = build_network(network, block, len(r.classes))
    initialised = initialise(model, r.study, network, pretrained, r.classes)
    run_id = _run_id(r, network, **({"pretrained": pretrained["run_sha256"]} if pretrained else {}))
    result = train(model, network_data(network, r, r.part("train"), "train"),
                   network_data(network, r, r.part("val"), "val"), block["training"], out_dir,
                   config["device"], r.seed, run_id, deterministic=config["deterministic"])
    data = network_data(network, r, r.clips, "extract")
    features = _extract(model, network, data, config["device"])
    if network in FRAME_NETWORKS:
        rows = data.reader.rows
    else:  # the first frame of each clip's centred sequence
        rows = [data.reader.rows[c][[data.start(c)]] for c in range(len(data.clips))]
    counts = write_features(r, network, features, rows, run_id, out_dir / "features.zarr", config["store"])
    summary = {"dataset": dataset, "network": network, "fold": fold, "seed": r.training_seed, "classes": r.classes,
               "split": r.split,
               "run_sha256": run_id, "initialised": initialised,
               "pretrained": ({"summary": str(summary_json), "run_sha256": pretrained["run_sha256"]}
                              if pretrained else None),
               "best_epoch": result.best_epoch,
               "best_val_accuracy": result.best_val_accuracy, "epochs_run": result.epochs_run,
               "features": {"store": str(out_dir / "features.zarr"), "layer": FEATURE_LAYERS[network],
                            "dims": int(features[0].shape[1]), "clips": counts},
               "parameters": job_parameters(r.study, network), "code": code_version()}
    write_text_atomic(out_dir / "features.json", json.dumps(summary, indent=2, default=str))
    log.info("%s fold %d: best epoch %d (val %.3f), features %s", network, fold, result.best_epoch,
             result.best_val_accuracy or float("nan"), counts)
    return summary


# -- reading the networks' features ---------------------------------------------------------------------------

def read_features(summary_json: str | Path, clip_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Each clip's feature rows from the store a network job wrote (its ``features.json`` names it).
    Raises ValueError naming the store and the clips it lacks."""
    summary = json.loads(Path(summary_json).read_text())
    store = ShardStore(summary["features"]["store"], mode="r")
    # Only what this summary's run wrote: a clip left from an earlier run of the job is not its feature.
    missing = sorted(c for c in clip_ids if not store.is_complete(c, {"run_sha256": summary["run_sha256"]}))
    if missing:
        raise ValueError(f"{store.path}: no features of clips {', '.join(missing[:10])}: rerun its job")
    return {clip_id: store.clip(clip_id)["features"][...] for clip_id in clip_ids}


def video_vectors(network: str, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One vector per clip: frame features aggregated as the paper (SSR+L2, mean and variance); C3D's
    fc7, L2-normalised as Tran et al. do before their linear SVMs."""
    if network in FRAME_NETWORKS:
        return {clip: classical.aggregate(rows) for clip, rows in features.items()}
    return {clip: classical.l2_normalise(rows[0]) for clip, rows in features.items()}


# -- the classifiers ------------------------------------------------------------------------------------------

def prediction_rows(method: str, fold: int, clips: pd.DataFrame, classes: Sequence[str],
                    probabilities: np.ndarray) -> pd.DataFrame:
    """Prediction rows of ``clips`` (columns clip_id, unit, part, label): arg-max and class probabilities."""
    return pd.DataFrame({"method": method, "fold": fold, "part": clips["part"].to_numpy(),
                         "clip_id": clips["clip_id"].to_numpy(), "unit": clips["unit"].to_numpy(),
                         "label": clips["label"].to_numpy(),
                         "prediction": [classes[i] for i in probabilities.argmax(1)],
                         **{f"p_{c}": probabilities[:, i] for i, c in enumerate(classes)}})


def svm_predictions(vectors: Mapping[str, Mapping[str, np.ndarray]], clips: pd.DataFrame, classes: Sequence[str],
                    svm: Mapping[str, Any], fold: int, seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fit each SVM of :data:`SVM_INPUTS` on the ``train`` clips (grouped by unit) and score the ``val`` and
    ``test`` clips. ``vectors[network][clip_id]`` is a clip's video vector. Returns the prediction rows and,
    per method, the C chosen and the units it was fitted on."""
    train = clips[clips["part"] == "train"]
    scored = clips[clips["part"].isin(SCORED_PARTS)]
    labels = np.array([list(classes).index(label) for label in train["label"]])
    frames, info = [], {}
    for method, networks in SVM_INPUTS.items():
        def matrix(rows: pd.DataFrame) -> np.ndarray:
            return np.stack([np.concatenate([vectors[n][c] for n in networks]) for c in rows["clip_id"]])

        model = classical.fit_linear_svm(matrix(train), labels, train["unit"].tolist(), len(classes), svm["C"],
                                         svm["cv_folds"], svm["calibration"], svm["standardise"], seed)
        frames.append(prediction_rows(method, fold, scored, classes, model.predict_proba(matrix(scored))))
        info[method] = {"C": model.C, "cv_accuracy": model.cv_accuracy, "cv_splits": model.n_splits,
                        "dims": int(matrix(train.iloc[:1]).shape[1]), "fitted_units": sorted(set(train["unit"]))}
    return pd.concat(frames, ignore_index=True), info


def run_svm(config: Mapping[str, Any], dataset: str, fold: int, manifest_csv: str | Path,
            feature_summaries: Mapping[str, str | Path], out_dir: str | Path, seed: int | None = None) -> pd.DataFrame:
    """The SVM rows of round ``fold`` (VGG-FACE, ResNet-10, feature aggregation, C3D) from the networks'
    feature stores: ``out_dir/predictions.csv`` (validation and test clips) and ``out_dir/svm.json``."""
    out_dir = Path(out_dir)
    r = prepare_round(config, dataset, fold, manifest_csv, seed)
    clip_ids = r.clips["clip_id"].tolist()
    vectors = {network: video_vectors(network, read_features(feature_summaries[network], clip_ids))
               for network in NETWORKS}
    predictions, info = svm_predictions(vectors, r.clips, r.classes, r.study["svm"], fold, r.seed)
    write_text_atomic(out_dir / "predictions.csv", predictions.to_csv(index=False))
    write_text_atomic(out_dir / "svm.json", json.dumps({"fold": fold, "split": r.split, "methods": info,
                                                        "parameters": job_parameters(r.study, "svm"),
                                                        "code": code_version()}, indent=2))
    return predictions


def run_lstm(config: Mapping[str, Any], dataset: str, fold: int, manifest_csv: str | Path,
             vgg_summary: str | Path, out_dir: str | Path, seed: int | None = None) -> pd.DataFrame:
    """Train the residual BiLSTM of round ``fold`` on sequences of the fold's VGG-Face fc6 features (a job
    of their own); ``out_dir/predictions.csv`` holds its last-step softmax of the validation and test clips."""
    from ..frames import SequenceDataset
    from ..models import build_model
    from ..train import predict, seed_everything, train

    out_dir = Path(out_dir)
    r = prepare_round(config, dataset, fold, manifest_csv, seed)
    block = r.study["lstm"]
    vgg = json.loads(Path(vgg_summary).read_text())
    read_features(vgg_summary, r.clips["clip_id"].tolist())  # every clip is there, or a clear error
    clips = r.clips.assign(store=vgg["features"]["store"])

    def data(part: str, training: bool) -> SequenceDataset:
        return SequenceDataset(clips[clips["part"] == part], r.classes, block["frames"], block["stride"],
                               "features", train=training)

    seed_everything(r.seed)
    model = build_model("bilstm", len(r.classes), input_dim=vgg["features"]["dims"], **block["sizes"])
    result = train(model, data("train", True), data("val", False), block["training"], out_dir, config["device"],
                   r.seed, _run_id(r, "lstm", vgg=vgg["run_sha256"]), deterministic=config["deterministic"])
    frames = []
    for part in SCORED_PARTS:
        scored = data(part, False)
        if len(scored):
            probabilities, _ = predict(model, scored, block["training"]["batch_size"], config["device"],
                                       deterministic=config["deterministic"])
            frames.append(prediction_rows("lstm", fold, scored.clips, r.classes, probabilities))
    predictions = pd.concat(frames, ignore_index=True)
    write_text_atomic(out_dir / "predictions.csv", predictions.to_csv(index=False))
    write_text_atomic(out_dir / "lstm.json", json.dumps({
        "fold": fold, "split": r.split, "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
        "epochs_run": result.epochs_run, "vgg_run_sha256": vgg["run_sha256"],
        "parameters": job_parameters(r.study, "lstm"), "code": code_version()}, indent=2))
    return predictions


# -- score fusion ---------------------------------------------------------------------------------------------

def fuse_predictions(predictions: pd.DataFrame, classes: Sequence[str], fusion: Mapping[str, Any],
                     fold: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The ``fusion`` rows: the weighted sum of the class probabilities of the methods ``fusion.weights``
    names. ``fusion.mode``: ``fixed`` takes those weights (the paper's 0.5 / 0.25 / 0.25); ``search`` takes the
    most accurate weights of a grid of step ``fusion.step`` on the ``val`` rows alone (ties: nearest the
    paper's). Test rows are fused with the weights, never looked at to choose them."""
    prob_cols = [f"p_{c}" for c in classes]
    prior = {method: float(w) for method, w in fusion["weights"].items()}

    def probabilities(part: str) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
        rows = predictions[predictions["part"] == part]
        reference = rows[rows["method"] == next(iter(prior))].sort_values("clip_id")
        by_method = {}
        for method in prior:
            own = rows[rows["method"] == method].set_index("clip_id")
            if set(own.index) != set(reference["clip_id"]):
                raise ValueError(f"fold {fold}: {method} scored other {part} clips than {next(iter(prior))}")
            by_method[method] = own.loc[reference["clip_id"], prob_cols].to_numpy()
        return by_method, reference

    info: dict[str, Any] = {"mode": fusion["mode"], "prior": prior}
    if fusion["mode"] == "search":
        val, val_rows = probabilities("val")
        if val_rows.empty:
            raise ConfigError(f"studies.{STUDY}.fusion_weights.mode 'search' chooses weights on validation units, "
                              f"but fold {fold} has none: set studies.{STUDY}.val_fraction above 0")
        labels = np.array([list(classes).index(label) for label in val_rows["label"]])
        weights, accuracy = classical.search_weights(val, labels, fusion["step"], prior)
        info.update(weights=weights, val_accuracy=accuracy, searched_on_units=sorted(set(val_rows["unit"])))
    else:
        weights = prior
        info["weights"] = weights
    frames = []
    for part in SCORED_PARTS:
        by_method, reference = probabilities(part)
        if len(reference):
            frames.append(prediction_rows("fusion", fold, reference, classes, classical.fuse(by_method, weights)))
    return pd.concat(frames, ignore_index=True), info


def run_scores(config: Mapping[str, Any], dataset: str, fold: int, prediction_csvs: Sequence[str | Path],
               out_dir: str | Path, seed: int | None = None) -> pd.DataFrame:
    """Round ``fold``'s ``predictions.csv`` (every method of Table II, validation and test clips) from the
    SVM and LSTM jobs' predictions, with the fusion rows; ``fold.json`` records the weights."""
    out_dir = Path(out_dir)
    study = study_config(config, dataset, STUDY)
    predictions = pd.concat([pd.read_csv(p, dtype={"unit": str, "clip_id": str}) for p in prediction_csvs],
                            ignore_index=True)
    classes = [c[2:] for c in predictions.columns if c.startswith("p_")]
    fused, info = fuse_predictions(predictions, classes, study["fusion_weights"], fold)
    predictions = pd.concat([predictions, fused], ignore_index=True)
    training_seed = training_seeds(config, study)[0] if seed is None else seed
    predictions.insert(2, "seed", training_seed)
    write_text_atomic(out_dir / "predictions.csv", predictions.to_csv(index=False))
    test = predictions[predictions["part"] == "test"]
    accuracy = {m: round(100 * float((g["label"] == g["prediction"]).mean()), 2) for m, g in test.groupby("method")}
    write_text_atomic(out_dir / "fold.json", json.dumps({
        "dataset": dataset, "fold": fold, "seed": training_seed, "classes": classes, "fusion": info,
        "test_accuracy": accuracy,
        "test_units": sorted(set(test["unit"])), "parameters": job_parameters(study, "scores"),
        "code": code_version()}, indent=2))
    log.info("%s fold %d test accuracy: %s; fusion weights %s", dataset, fold, accuracy, info["weights"])
    return predictions


# -- the table ------------------------------------------------------------------------------------------------

def class_accuracy(rows: pd.DataFrame, classes: Sequence[str]) -> dict[str, float]:
    """Per-class accuracy (the recall of each class, Table III) over ``rows``, in percent."""
    return {c: round(100 * float((rows.loc[rows["label"] == c, "prediction"] == c).mean()), 2)
            if (rows["label"] == c).any() else np.nan for c in classes}


def _notes(study: Mapping[str, Any], fold_dirs: Sequence[Path], summaries: Sequence[dict]) -> dict[str, str]:
    """What each row is, and how it was trained (the notes column)."""
    init = {n: "; ".join(sorted({json.loads((d / n / "features.json").read_text())["initialised"] for d in fold_dirs}))
            for n in NETWORKS}
    svms = [json.loads((d / "svm" / "svm.json").read_text())["methods"] for d in fold_dirs]

    scaled = "standardised (not in the paper), " if study["svm"]["standardise"] else ""

    def svm(method: str) -> str:
        chosen = "/".join(f"{s[method]['C']:g}" for s in svms)
        return f"{svms[0][method]['dims']} values, {scaled}one-vs-rest linear SVM (C per fold {chosen})"

    weights = [s["fusion"]["weights"] for s in summaries]
    if study["fusion_weights"]["mode"] == "search":
        chosen = "; ".join("/".join(f"{w[m]:.2f}" for m in w) for w in weights)
        how = f"searched on validation units per fold (step {study['fusion_weights']['step']}): {chosen}"
    else:
        how = "the paper's fixed weights"
    names = "/".join(weights[0])
    c3d, lstm = study["c3d"], study["lstm"]
    # Whether the paper's FER2013 stage ran: its summary is in the vgg_face jobs' "initialised".
    fer2013 = "" if study["pretrain"]["dataset"] else (f"; not fine-tuned on FER2013 first (studies.{STUDY}.pretrain."
                                                       f"dataset null; the paper is, 001 sec. IV-A)")
    return {
        "vgg_face": f"VGG-16 fc6, SSR+L2, mean+var over frames, {svm('vgg_face')}; {init['vgg_face']}{fer2013}",
        "resnet10": f"ResNet-10 fc1, SSR+L2, mean+var over frames, {svm('resnet10')}; {init['resnet10']}",
        "aggregation": f"VGG-16 fc6 and ResNet-10 fc1 aggregated and concatenated, {svm('aggregation')}",
        "c3d": f"C3D fc7 of {c3d['frames']} frames (shorter clips looped), L2, {svm('c3d')}; {init['c3d']}",
        "lstm": f"residual BiLSTM ({lstm['sizes']['layers']} layers of {lstm['sizes']['hidden']}) over "
                f"{lstm['frames']} VGG-16 fc6 vectors, last-step softmax; trained from scratch, as in the paper",
        "fusion": f"weighted sum of the {names} probabilities, {how}",
    }


def write_table(config: Mapping[str, Any], dataset: str, fold_dirs: Sequence[str | Path],
                out_csv: str | Path) -> pd.DataFrame:
    """``results/{dataset}/fusion.csv`` from every round's ``predictions.csv``: the six rows of Table II with
    accuracy, macro recall and macro F1 (mean and std over rounds), per-round accuracies, per-class accuracy
    over the test clips of all rounds (Table III), the paper's numbers and notes. Beside it:
    ``fusion_folds.csv`` (every round), ``fusion.md`` (how the numbers were made), ``fusion/*.png``
    (a confusion matrix per row, training curves per network)."""
    from ..report import fold_table, plot_confusion, plot_curves, summary_table

    study = study_config(config, dataset, STUDY)
    out_csv, fold_dirs = Path(out_csv), [Path(d) for d in fold_dirs]
    figures = out_csv.with_suffix("")
    summaries = [json.loads((d / "fold.json").read_text()) for d in fold_dirs]
    classes = summaries[0]["classes"]
    predictions = pd.concat([pd.read_csv(d / "predictions.csv", dtype={"unit": str, "clip_id": str})
                             for d in fold_dirs], ignore_index=True)
    test = predictions[predictions["part"] == "test"].rename(columns={"method": "variant"})
    folds = fold_table(test, "video", classes)
    order = [m for m in METHODS if m in set(test["variant"])]
    table = summary_table(folds, METHODS, study["paper_accuracy"], order, levels=("video",))
    table = table.rename(columns={"variant": "method", "description": "row"})
    per_class = pd.DataFrame([class_accuracy(test[test["variant"] == m], classes) for m in order])
    table = pd.concat([table, per_class.add_prefix("class_accuracy_")], axis=1)
    paper_classes = study["paper_class_accuracy"]
    for c in classes:
        table[f"paper_class_accuracy_{c}"] = [paper_classes.get(c, np.nan) if m == "fusion" else np.nan
                                              for m in order]
    notes = _notes(study, fold_dirs, summaries)
    table["notes"] = [notes[m] for m in order]
    write_text_atomic(out_csv, table.to_csv(index=False))
    write_text_atomic(out_csv.with_name(out_csv.stem + "_folds.csv"),
                      folds.rename(columns={"variant": "method"}).to_csv(index=False))
    for method in order:
        rows = test[test["variant"] == method]
        plot_confusion(rows["label"], rows["prediction"], classes,
                       f"{dataset} {METHODS[method]}: test clips of all folds", figures / f"{method}_confusion.png")
    for network in (*NETWORKS, "lstm"):
        several_seeds = len({s["seed"] for s in summaries}) > 1
        curves = {f"{s['fold']} seed {s['seed']}" if several_seeds else s["fold"]: pd.read_csv(d / network / "metrics.csv")
                  for s, d in zip(summaries, fold_dirs)}
        plot_curves(curves, f"{dataset} {network}", figures / f"{network}_curves.png")
    best_single = table[table["method"] != "fusion"]["video_accuracy_mean"].max()
    fused = table.loc[table["method"] == "fusion", "video_accuracy_mean"].iloc[0]
    lines = [
        f"Xu et al. (EmotiW 2017), Tables II and III, on {dataset}: {len(fold_dirs)} round(s) of the dataset's "
        f"protocol; accuracy, macro recall and macro F1 in percent over each round's test clips, mean and std "
        f"over rounds; class_accuracy_*: the recall of each class over the test clips of all rounds.",
        f"fusion {fused:.2f} vs best single row {best_single:.2f}: "
        f"{'at least as accurate' if fused >= best_single else 'below the best single row'}.",
        f"preset {study['preset']}; validation units carved from each round's training units: {study['val_fraction']}",
        *(f"{METHODS[m]}: {notes[m]}" for m in order),
        *(f"{n}: {json.dumps(study[n])}" for n in (*NETWORKS, "pretrain", "lstm", "svm", "fusion_weights")),
        "paper_accuracy: AFEW 7.0 Val, Table II; paper_class_accuracy_*: Table III, Val (the paper's sizes and "
        "pretrained weights; not comparable on other data).",
        f"code: {json.dumps(code_version())}",
    ]
    write_text_atomic(out_csv.with_suffix(".md"), "\n".join(lines) + "\n")
    return table
