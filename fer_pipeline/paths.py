"""The results layout: every path the workflow writes, in one place for the rules, the stages and the studies.

Each function takes the results root (``config["results"]``) and the names that pick one output; a rule
passes wildcards as ``"{dataset}"`` and gets the pattern back. Nothing else in the package builds a results
path by hand, so the layout below is the whole truth::

    <results>/
      .config/config-<sha>.json            the exact config of a run, handed to every job
      logs/..., benchmarks/...             one file per job
      <dataset>/
        videos/                            a generated dataset's media (the demo), when its root is unset
        manifest.csv, manifest.json, manifest_skipped.csv, manifest_<name>.csv (an adapter's companion tables)
        detections/<shard>.zarr, <shard>.json          face tracks (one store per shard) and the job summary
        features/<preset>/<shard>.zarr, <shard>.json   aligned faces, flow, dynamic images (a stills dataset's
                                           shard store holds arrays of many images: fer_pipeline.stills)
        features/<preset>/inspect.txt, skipped.csv, contact_sheet.png
        <study>/...                        one folder per run of a study (fold, variant, network)
        fusion/pretrain/seed<s>/           the fusion study's FER2013 stage (VGG-Face fine-tuned first)
        <study>.csv, <study>_folds.csv, <study>.md, <study>/*.png   the study's table and figures
        report.html
"""

from __future__ import annotations

from pathlib import Path

PathLike = str | Path


def dataset_dir(results: PathLike, dataset: str) -> Path:
    return Path(results) / dataset


def config_file(results: PathLike, sha256: str) -> Path:
    """Where a run's exact config is written (named by its hash, so two configs never share a file)."""
    return Path(results) / ".config" / f"config-{sha256[:12]}.json"


def log_file(results: PathLike, dataset: str | None, job: str, name: str | None = None) -> Path:
    """A job's log: ``logs/<dataset>/<job>/<name>.log`` (``logs/<job>/<name>.log`` without a dataset);
    ``logs/<dataset>/<job>.log`` for a job that runs once per dataset (no name)."""
    base = Path(results) / "logs"
    base = base / dataset if dataset else base
    return base / job / f"{name}.log" if name is not None else base / f"{job}.log"


def benchmark_file(results: PathLike, dataset: str | None, job: str, name: str | None = None) -> Path:
    """A job's benchmark, laid out as its log (:func:`log_file`) under ``benchmarks/`` as ``.tsv``."""
    base = Path(results) / "benchmarks"
    base = base / dataset if dataset else base
    return base / job / f"{name}.tsv" if name is not None else base / f"{job}.tsv"


def generated_root(results: PathLike, dataset: str) -> Path:
    """The media of a dataset the package generates (the demo) when ``datasets.<name>.root`` is unset."""
    return dataset_dir(results, dataset) / "videos"


def manifest_csv(results: PathLike, dataset: str) -> Path:
    return dataset_dir(results, dataset) / "manifest.csv"


def manifest_skipped_csv(results: PathLike, dataset: str) -> Path:
    return dataset_dir(results, dataset) / "manifest_skipped.csv"


def manifest_companion_csv(results: PathLike, dataset: str, name: str) -> Path:
    """A table the manifest's adapter writes beside it: ``manifest_<name>.csv`` (AffectNet's ``landmarks``,
    BP4D's ``frame_labels``)."""
    return dataset_dir(results, dataset) / f"manifest_{name}.csv"


def detections_dir(results: PathLike, dataset: str) -> Path:
    return dataset_dir(results, dataset) / "detections"


def detections_store(results: PathLike, dataset: str, shard: str) -> Path:
    return detections_dir(results, dataset) / f"{shard}.zarr"


def detections_summary(results: PathLike, dataset: str, shard: str) -> Path:
    return detections_dir(results, dataset) / f"{shard}.json"


def features_dir(results: PathLike, dataset: str, preset: str) -> Path:
    return dataset_dir(results, dataset) / "features" / preset


def features_store(results: PathLike, dataset: str, preset: str, shard: str) -> Path:
    return features_dir(results, dataset, preset) / f"{shard}.zarr"


def features_summary(results: PathLike, dataset: str, preset: str, shard: str) -> Path:
    return features_dir(results, dataset, preset) / f"{shard}.json"


def features_inspection(results: PathLike, dataset: str, preset: str) -> Path:
    return features_dir(results, dataset, preset) / "inspect.txt"


def features_skipped(results: PathLike, dataset: str, preset: str) -> Path:
    return features_dir(results, dataset, preset) / "skipped.csv"


def features_hdf5(results: PathLike, dataset: str, preset: str) -> Path:
    """A preset's whole feature store as one HDF5 file (``fer-pipeline export --format hdf5``), beside its folder."""
    return features_dir(results, dataset, preset).with_suffix(".h5")


def contact_sheet(results: PathLike, dataset: str, preset: str) -> Path:
    return features_dir(results, dataset, preset) / "contact_sheet.png"


def study_dir(results: PathLike, dataset: str, study: str) -> Path:
    return dataset_dir(results, dataset) / study


def ablation_run(results: PathLike, dataset: str, variant: str, fold: str | int, seed: str | int) -> Path:
    """One (variant, fold, training seed) run of the ablation study."""
    return study_dir(results, dataset, "ablation") / variant / f"fold{fold}" / f"seed{seed}"


def ablation_selection_run(results: PathLike, dataset: str, candidate: str, fold: str | int, seed: str | int) -> Path:
    """One (candidate, fold, training seed) run of the ablation's selection (scored on validation subjects)."""
    return study_dir(results, dataset, "ablation_selection") / candidate / f"fold{fold}" / f"seed{seed}"


def nlstm_run(results: PathLike, dataset: str, variant: str, repeat: str | int, fold: str | int,
              seed: str | int) -> Path:
    """One (network, repeat, fold, training seed) trial of the nlstm study."""
    return study_dir(results, dataset, "nlstm") / variant / f"repeat{repeat}" / f"fold{fold}" / f"seed{seed}"


def fusion_round(results: PathLike, dataset: str, fold: str | int, seed: str | int) -> Path:
    """One round of the fusion study with one training seed; its networks, LSTM and SVMs have a folder each
    below it."""
    return study_dir(results, dataset, "fusion") / f"fold{fold}" / f"seed{seed}"


def fusion_job(results: PathLike, dataset: str, fold: str | int, seed: str | int, job: str) -> Path:
    """A fusion job's folder in round ``fold``: a network's, ``lstm`` or ``svm``."""
    return fusion_round(results, dataset, fold, seed) / job


def fusion_pretrain(results: PathLike, dataset: str, seed: str | int) -> Path:
    """The fusion study's first stage for ``dataset`` with one training seed: VGG-Face fine-tuned on the
    FER2013-layout dataset ``studies.fusion.pretrain.dataset``, which every round's vgg_face job starts from."""
    return study_dir(results, dataset, "fusion") / "pretrain" / f"seed{seed}"


def pretrain_summary(run: PathLike) -> Path:
    """The summary of the fusion study's FER2013 stage (its kept weights, ``best.pt``, beside it)."""
    return Path(run) / "pretrain.json"


def run_predictions(run: PathLike) -> Path:
    """The predictions a study run writes in its folder: an ablation run, a fusion job (lstm, svm) or round."""
    return Path(run) / "predictions.csv"


def run_summary(run: PathLike) -> Path:
    """The summary of an ablation run or a fusion round (what the study's table gathers)."""
    return Path(run) / "fold.json"


def network_features_summary(job: PathLike) -> Path:
    """A fusion network job's summary of the features it wrote (into ``features.zarr`` beside it)."""
    return Path(job) / "features.json"


def study_table(results: PathLike, dataset: str, study: str) -> Path:
    return dataset_dir(results, dataset) / f"{study}.csv"


def study_folds_table(results: PathLike, dataset: str, study: str) -> Path:
    return dataset_dir(results, dataset) / f"{study}_folds.csv"


def study_notes(results: PathLike, dataset: str, study: str) -> Path:
    return dataset_dir(results, dataset) / f"{study}.md"


def report_html(results: PathLike, dataset: str) -> Path:
    return dataset_dir(results, dataset) / "report.html"
