"""Paper-scale readiness: every study's networks at the paper's sizes, two training steps each on this machine
with the paper's batch, and what a GPU job of the paper's dataset needs. `make paper-check` runs it.

Sizes, batches and optimisers come from config.yaml's study blocks (the dataset the paper used: ablation on
enterface, fusion on afew, nlstm on ckplus, so their study_overrides apply), never from copies here. Each
network runs in a fresh Python process (``--child NAME``), so its memory is its own:

* params: trainable parameters;
* rss_start: the process's resident memory (/proc/self/statm) after building the network, its optimiser and
  one batch of random inputs, before the first step;
* peak: the process's peak resident memory after two steps (``resource.getrusage(RUSAGE_SELF).ru_maxrss``),
  and step = peak - rss_start, what a training step adds (activations, gradients, optimiser state);
* seconds: wall time of the second step (the first pays one-off allocation), on the CPU with
  ``torch.get_num_threads()`` threads.

C3D at 128 frames runs with batch 1 by default (``--c3d-batch``): at the config's batch 8 one CPU step takes
minutes and ~20 GB; its per-sample step memory times 8 is in the table's notes.

Per study, the GPU job: the memory of its cached data at the paper dataset's size (frames x bytes per frame as
the study's dataset class caches them, fer_pipeline.resources) and its steps (epochs x steps per epoch).
Dataset sizes are the papers' clip counts (eNTERFACE'05: 1,290 videos of 1-4 s, ~97k frames estimated; CK+: 593
sequences of ~18 frames; AFEW 7.0: 773 + 383 clips, ~60 frames a clip estimated: no paper gives it).

    .venv/bin/python benchmarks/paper_check.py            # the table (markdown) on stdout
    .venv/bin/python benchmarks/paper_check.py --only vgg_face c3d --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fer_pipeline import config as config_mod  # noqa: E402
from fer_pipeline import resources  # noqa: E402

# The dataset each study's paper used: its study_overrides (e.g. Oulu's 22 steps) would apply.
PAPER_DATASET = {"ablation": "enterface", "fusion": "afew", "nlstm": "ckplus"}
NUM_CLASSES = {"ablation": 6, "fusion": 7, "nlstm": 6}
MB = 2 ** 20


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


# -- the networks at the paper's sizes ------------------------------------------------------------------------

def network_specs(config: dict[str, Any], c3d_batch: int | None = 1) -> dict[str, dict[str, Any]]:
    """Every network of every study: its study, how to build it and one batch of random inputs (shapes from
    the config), its training block and batch size. Building is deferred (``build``)."""
    import torch

    from fer_pipeline.models import build_model
    from fer_pipeline.studies import fusion as fusion_study

    specs: dict[str, dict[str, Any]] = {}
    ablation = config_mod.study_config(config, PAPER_DATASET["ablation"], "ablation")
    window = config_mod.preset_config(config, ablation["preset"])["window"]["length"]
    size = ablation["sizes"]["input_size"]
    shapes = {"rgb": (window, 3, size, size), "flow": (window - 1, 2, size, size), "dyn_rgb": (3, size, size),
              "dyn_flow": (2, size, size)}
    for variant in ablation["variants"]:
        specs[variant] = {
            "study": "ablation", "training": ablation["training"], "batch": ablation["training"]["batch_size"],
            "build": (lambda v=variant: build_model(v, NUM_CLASSES["ablation"], **ablation["sizes"])),
            "inputs": (lambda model, b: {f: torch.rand(b, *shapes[f]) for f in model.fields}),
            "shape": f"{window} x {size} x {size}",
        }
    fusion = config_mod.study_config(config, PAPER_DATASET["fusion"], "fusion")
    for network in fusion_study.FRAME_NETWORKS:
        block = fusion[network]
        s = block["input_size"]
        specs[network] = {
            "study": "fusion", "training": block["training"], "batch": block["training"]["batch_size"],
            "build": (lambda n=network, blk=block: fusion_study.build_network(n, blk, NUM_CLASSES["fusion"])),
            "inputs": (lambda model, b, s=s: {"rgb": torch.rand(b, 3, s, s)}), "shape": f"{s} x {s}",
        }
    c3d = fusion["c3d"]
    specs["c3d"] = {
        "study": "fusion", "training": c3d["training"], "config_batch": c3d["training"]["batch_size"],
        "batch": c3d_batch or c3d["training"]["batch_size"],
        "build": (lambda: fusion_study.build_network("c3d", c3d, NUM_CLASSES["fusion"])),
        "inputs": (lambda model, b: {"rgb": torch.rand(b, c3d["frames"], 3, c3d["crop"], c3d["crop"])}),
        "shape": f"{c3d['frames']} x {c3d['crop']} x {c3d['crop']}",
    }
    lstm, dims = fusion["lstm"], fusion["vgg_face"]["sizes"]["fc_width"]
    specs["bilstm"] = {
        "study": "fusion", "training": lstm["training"], "batch": lstm["training"]["batch_size"],
        "build": (lambda: build_model("bilstm", NUM_CLASSES["fusion"], input_dim=dims, **lstm["sizes"])),
        "inputs": (lambda model, b: {"features": torch.rand(b, lstm["frames"], dims)}),
        "shape": f"{lstm['frames']} x {dims}",
    }
    nlstm = config_mod.study_config(config, PAPER_DATASET["nlstm"], "nlstm")
    length, s = nlstm["sizes"]["sequence_length"], nlstm["sizes"]["input_size"]
    for variant in nlstm["variants"]:
        specs[variant] = {
            "study": "nlstm", "training": nlstm["training"], "batch": nlstm["training"]["batch_size"],
            "build": (lambda v=variant: build_model(v, NUM_CLASSES["nlstm"], **nlstm["sizes"])),
            "inputs": (lambda model, b: {"rgb": torch.rand(b, length, 3, s, s)}), "shape": f"{length} x {s} x {s}",
        }
    return specs


def two_steps(spec: dict[str, Any], steps: int = 2) -> dict[str, Any]:
    """Build the network, run ``steps`` training steps (forward, cross-entropy, backward, optimiser step) on
    random inputs of the paper's shapes; parameters, memory and the last step's seconds."""
    import torch
    import torch.nn.functional as F

    from fer_pipeline.train import make_optimizer

    torch.manual_seed(0)
    model = spec["build"]()
    model.train()
    optimizer = make_optimizer(model, spec["training"])
    batch = spec["inputs"](model, spec["batch"])
    labels = torch.randint(0, NUM_CLASSES[spec["study"]], (spec["batch"],))
    start_rss = rss_mb()
    seconds = []
    for _ in range(steps):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(batch), labels)
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - started)
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"loss is {loss.item()}")
    peak = peak_mb()
    return {"params": sum(p.numel() for p in model.parameters() if p.requires_grad), "batch": spec["batch"],
            "shape": spec["shape"], "rss_start_mb": round(start_rss), "peak_mb": round(peak),
            "step_mb": round(peak - start_rss), "seconds": round(seconds[-1], 2),
            "first_seconds": round(seconds[0], 2), "threads": torch.get_num_threads()}


# -- what a GPU job of the paper's dataset needs ---------------------------------------------------------------

def study_jobs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Per study, the paper dataset's cached data and steps of one training job (one fold / round / trial)."""
    out = []
    # eNTERFACE'05 (002, sec. 4): 1,290 videos of 1-4 s at 25 fps: ~97k frames, ~75 a video (an estimate, 3 s on
    # average; the manifest gives the real count); 5 groups, 4 train; val_fraction of those for validation.
    ablation = config_mod.study_config(config, "enterface", "ablation")
    preset = config_mod.preset_config(config, ablation["preset"])
    videos, frames = 1290, 75
    train_clips = videos * 4 / 5 * (1 - ablation["val_fraction"])
    windows = resources.window_count(frames, preset["window"]["length"], preset["window"]["stride"])
    per_epoch = math.ceil(train_clips * windows / ablation["training"]["batch_size"])
    cache = videos * resources.ablation_bytes_per_clip(frames, preset, resources.ALL_FIELDS,
                                                        ablation["sizes"]["input_size"]) / MB
    out.append({"study": "ablation", "dataset": f"eNTERFACE'05: {videos} videos x ~{frames} frames "
                f"({videos * frames / 1000:.0f}k) at {preset['size']}, 4 fields",
                "cache_mb": round(cache), "mem_mb": resources.PROCESS_MB + resources.step_mb(config, "enterface", "ablation")
                + math.ceil(cache * resources.CACHE_HEADROOM),
                "steps": f"{ablation['training']['epochs']} epochs x {per_epoch} steps "
                         f"({windows} windows a video, batch {ablation['training']['batch_size']}) = "
                         f"{ablation['training']['epochs'] * per_epoch} per (variant, fold); x 5 variants x 5 folds"})
    # AFEW 7.0 (001, sec. III-A): Train 773, Val 383 clips; frames per clip not given: ~60 assumed (2.4 s at 25
    # fps), an estimate; the manifest gives the real count. xu128 faces cached (cache_frames): 128 x 128 x 3.
    fusion = config_mod.study_config(config, "afew", "fusion")
    fpreset = config_mod.preset_config(config, fusion["preset"])
    clips, frames = 773 + 383, 60
    train = 773 * (1 - fusion["val_fraction"])
    cache = clips * frames * fpreset["size"] ** 2 * 3 / MB
    steps = []
    for network in ("vgg_face", "resnet10"):
        t = fusion[network]["training"]
        steps.append(f"{network} {t['epochs']} x {math.ceil(train * frames / t['batch_size'])}")
    for network in ("c3d", "lstm"):
        t = fusion[network]["training"]
        steps.append(f"{network} {t['epochs']} x {math.ceil(train / t['batch_size'])}")
    out.append({"study": "fusion", "dataset": f"AFEW 7.0: {clips} clips x ~{frames} frames (estimate) at "
                f"{fpreset['size']}", "cache_mb": round(cache),
                "mem_mb": None, "steps": "epochs x steps per epoch: " + ", ".join(steps) + " (one round)"})
    # CK+ (004, sec. 4.1): 593 sequences of ~18 frames; stc64 faces cached (cache_sequences).
    nlstm = config_mod.study_config(config, "ckplus", "nlstm")
    npreset = config_mod.preset_config(config, nlstm["preset"])
    cache = 593 * resources.nlstm_bytes_per_clip(18, npreset) / MB
    copies = 2 * (1 + 2 * len(nlstm["augmentation"]["angles"])) if nlstm["augmentation"]["flip"] else 1
    out.append({"study": "nlstm", "dataset": f"CK+: 593 sequences x ~18 frames at {npreset['size']}",
                "cache_mb": round(cache), "mem_mb": resources.PROCESS_MB + resources.step_mb(config, "ckplus", "nlstm")
                + math.ceil(cache * resources.CACHE_HEADROOM),
                "steps": f"{nlstm['training']['iterations']} iterations of batch {nlstm['training']['batch_size']} "
                         f"per trial (~{math.ceil(309 * 0.9 * (1 - nlstm['val_fraction']) * copies / nlstm['training']['batch_size'])}"
                         f" steps an epoch: 309 six-class sequences x {copies} copies); x 4 networks x "
                         f"{nlstm['repeats'] * 10} trials"})
    return out


def markdown(rows: list[dict[str, Any]], jobs: list[dict[str, Any]], specs: dict[str, dict[str, Any]]) -> str:
    lines = ["| network | study | input | batch | parameters | RSS before (MB) | peak RSS (MB) | step adds (MB) "
             "| seconds (2nd step) |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in rows:
        batch = str(r["batch"]) + (f" (config {specs[name]['config_batch']})" if "config_batch" in specs[name]
                                   and specs[name]["config_batch"] != r["batch"] else "")
        lines.append(f"| {name} | {specs[name]['study']} | {r['shape']} | {batch} | {r['params']:,} | "
                     f"{r['rss_start_mb']:,} | {r['peak_mb']:,} | {r['step_mb']:,} | {r['seconds']:.2f} |")
    lines += ["", "| study | paper dataset | cached data (MB) | rule mem_mb | steps of a job |",
              "| --- | --- | ---: | ---: | --- |"]
    for j in jobs:
        mem = f"{j['mem_mb']:,}" if j["mem_mb"] else "fusion.smk: 12,000 (vgg_face, c3d), 6,000 (resnet10)"
        lines.append(f"| {j['study']} | {j['dataset']} | {j['cache_mb']:,} | {mem} | {j['steps']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "config.yaml"))
    parser.add_argument("--only", nargs="*", help="networks to run (default: all)")
    parser.add_argument("--c3d-batch", type=int, default=1, help="C3D's batch (0: the config's)")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = config_mod.load(args.config)
    specs = network_specs(config, args.c3d_batch or None)
    if args.child:
        print(json.dumps(two_steps(specs[args.child])))
        return 0
    names = args.only or list(specs)
    rows = []
    for name in names:
        started = time.perf_counter()
        child = subprocess.run([sys.executable, __file__, "--config", args.config, "--c3d-batch",
                                str(args.c3d_batch), "--child", name], capture_output=True, text=True)
        if child.returncode:
            sys.stderr.write(child.stderr)
            raise SystemExit(f"{name}: failed (exit {child.returncode})")
        rows.append((name, json.loads(child.stdout.strip().splitlines()[-1])))
        print(f"{name}: {rows[-1][1]} ({time.perf_counter() - started:.0f} s in all)", file=sys.stderr)
    jobs = study_jobs(config)
    print(markdown(rows, jobs, specs))
    if args.json:
        Path(args.json).write_text(json.dumps({"networks": dict(rows), "jobs": jobs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
