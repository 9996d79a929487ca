"""Every target of the preprocessing-and-store work, measured in one run: `make bench`.

    .venv/bin/python benchmarks/targets.py [--repeats 3] [--windows 480] [--keep FOLDER]

One table, each target's row beside the baseline it is a ratio of, all measured in this run on this machine:

  one job, video to Zarr     benchmarks/preprocess.py's rows (a 4 s 720x576 demo clip, 1 thread): the whole
                             path decoded once against the same work decoded in each stage, and against the
                             full MTCNN cascade on every frame; the landmark error against that cascade
  workflow, videos to store  `snakemake --cores 2` on the demo (the default demo config: 120 videos of 720x576,
                             ~7,500 frames), from the generated videos to the ec112 store and its inspection,
                             every job's start-up included; aggregate frames/s. The videos are generated first
                             (`--until demo_videos`), not timed
  store footprint            bytes per frame and files per clip of that ec112 store (fer-pipeline inspect's
                             footprint line)
  reading                    benchmarks/reading.py on that store and its videos: training windows per second
                             per DataLoader worker (all four fields at 112) against computing them again

Rates vary with the machine's load: compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import preprocess as preprocess_bench  # noqa: E402

from fer_pipeline import config as config_mod  # noqa: E402
from fer_pipeline import paths  # noqa: E402
from fer_pipeline.store import clip_footprint, shard_stores  # noqa: E402

PRESET = "ec112"
TARGETS = {  # issue 16's targets
    "one_job_fps": 120, "landmark_px": 1.0, "workflow_fps": 160, "kb_per_frame": 30, "files_per_clip": 8,
    "windows_per_worker": 150, "vs_recompute": 20,
}


def snakemake(config: dict, folder: Path, target: Path, *extra: str) -> float:
    """Seconds ``snakemake --cores 2 target`` takes with ``config``; stops with its log on failure."""
    folder.mkdir(parents=True, exist_ok=True)
    configfile = folder / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "snakemake", str(target), *extra, "--cores", "2",
                             "--configfile", str(configfile)], cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"snakemake {target} failed:\n{result.stderr[-3000:]}")
    return seconds


def workflow_run(folder: Path) -> dict:
    """The demo's videos to its inspected ec112 store through the workflow; frames/s and the store's footprint."""
    results = folder / "results"
    config = config_mod.deep_update(config_mod.load(), {
        "results": str(results),
        "datasets": {"demo": {"presets": [PRESET], "studies": []}},
    })
    target = paths.features_inspection(results, "demo", PRESET)
    snakemake(config, folder, target, "--until", "demo_videos")
    seconds = snakemake(config, folder, target)
    stores = shard_stores(results / "demo" / "features" / PRESET)
    frames = size = files = clips = 0
    for store in stores:
        for clip_id in store.clip_ids():
            frames += int(store.clip_attrs(clip_id)["n_frames"])
            clip_bytes, clip_files = clip_footprint(store.path, clip_id)
            size, files, clips = size + clip_bytes, files + clip_files, clips + 1
    return {"seconds": seconds, "frames": frames, "clips": clips, "kb_per_frame": size / frames / 1024,
            "files_per_clip": files / clips, "store": results / "demo" / "features" / PRESET,
            "videos": results / "demo" / "videos"}


def reading_run(store: Path, videos: Path, windows: int) -> list[dict]:
    """benchmarks/reading.py's rows on ``store`` (its --json output)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "reading.py"), "--store", str(store),
                        "--videos", str(videos), "--windows", str(windows), "--no-relayout", "--json", out.name],
                       check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        return json.loads(Path(out.name).read_text())["rows"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--windows", type=int, default=480, help="random windows per reading row")
    parser.add_argument("--keep", help="run the workflow in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()

    line, rows, n = preprocess_bench.measure(preprocess_bench.arguments(["--repeats", str(args.repeats)]))
    by_name = {name: (n / seconds, err) for name, seconds, err in rows}
    full = n / rows[1][1]
    twice = next(v for k, v in by_name.items() if "decoded in each stage" in k)
    once = next(v for k, v in by_name.items() if k.endswith("decoded once"))
    floor = next(v for k, v in by_name.items() if k.startswith("MTCNN every frame, smoothed"))[1]

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fer-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    flow = workflow_run(folder)
    reading = reading_run(flow["store"], flow["videos"], args.windows)
    recompute = next(r for r in reading if r["path"].startswith("recompute"))
    zarr_rows = {r["workers"]: r for r in reading if "direct reader (default)" in r["path"]}
    workflow_fps = flow["frames"] / flow["seconds"]

    def met(value, target, higher=True):
        return "yes" if (value >= target if higher else value <= target) else "no"

    table = [
        ("one job, video to Zarr (frames/s)", f"{once[0]:.1f}", f"decoded in each stage {twice[0]:.1f}",
         f"{once[0] / twice[0]:.2f}x", f">= {TARGETS['one_job_fps']}", met(once[0], TARGETS["one_job_fps"])),
        ("... against MTCNN on every frame (frames/s)", f"{once[0]:.1f}", f"{full:.1f}", f"{once[0] / full:.1f}x",
         "", ""),
        ("landmark error against MTCNN on every frame (px)", f"{once[1]:.2f}", f"MTCNN smoothed {floor:.2f}", "",
         f"<= {TARGETS['landmark_px']}",
         met(once[1], TARGETS["landmark_px"], higher=False)),
        (f"workflow, {flow['clips']} videos to the inspected store, --cores 2 (frames/s)", f"{workflow_fps:.1f}",
         f"one job {once[0]:.1f}", f"{workflow_fps / once[0]:.2f}x", f">= {TARGETS['workflow_fps']}",
         met(workflow_fps, TARGETS["workflow_fps"])),
        ("store: KB per frame (ec112, 112 px)", f"{flow['kb_per_frame']:.1f}", "", "", f"<= {TARGETS['kb_per_frame']}",
         met(flow["kb_per_frame"], TARGETS["kb_per_frame"], higher=False)),
        ("store: files per clip", f"{flow['files_per_clip']:.1f}", "", "", f"<= {TARGETS['files_per_clip']}",
         met(flow["files_per_clip"], TARGETS["files_per_clip"], higher=False)),
    ]
    for workers, row in sorted(zarr_rows.items()):
        per_worker = row["windows_per_s"] / workers
        table.append((f"reading: windows/s per worker, {workers} worker(s), all four fields", f"{per_worker:.1f}",
                      f"recompute {recompute['windows_per_s']:.1f}",
                      f"{row['windows_per_s'] / recompute['windows_per_s']:.1f}x",
                      f">= {TARGETS['windows_per_worker']} and >= {TARGETS['vs_recompute']}x",
                      met(min(per_worker / TARGETS["windows_per_worker"],
                              row["windows_per_s"] / recompute["windows_per_s"] / TARGETS["vs_recompute"]), 1.0)))
    print(line)
    print(f"workflow: {flow['frames']} frames in {flow['seconds']:.1f} s ({folder}); "
          f"load average {os.getloadavg()[0]:.2f} at the end")
    print("| target | measured | baseline | ratio | target value | met |")
    print("| --- | ---: | ---: | ---: | ---: | :---: |")
    for row in table:
        print("| " + " | ".join(row) + " |")
    print()
    print("preprocessing rows (benchmarks/preprocess.py):")
    print("| path | frames/s | vs full-res MTCNN | mean landmark error (px) |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds, err in rows:
        print(f"| {name} | {n / seconds:.1f} | {rows[1][1] / seconds:.1f}x | {'-' if err is None else f'{err:.2f}'} |")


if __name__ == "__main__":
    main()
