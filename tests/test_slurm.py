"""Cluster execution on a real scheduler: a one-node SLURM (tests/slurm/cluster.sh) runs a small demo target
through `snakemake --profile slurm`, and its outputs equal those of a local run of the same target."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fer_pipeline import config as config_mod
from fer_pipeline.store import ShardStore

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
GROUP_CORES = 2  # the CPUs one grouped cluster job may use: the CI machine's node has 2
pytestmark = pytest.mark.slurm


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def slurm_cluster():
    """The harness's one-node cluster: started here and stopped afterwards, unless it was already running
    (then it is left as it was found). Where it cannot start, the test is skipped with the reason; in CI
    (CI=true) it fails instead, because there the cluster test must run."""
    if subprocess.run([CLUSTER, "status"], capture_output=True).returncode == 0:
        yield
        return
    started = subprocess.run([CLUSTER, "start"], capture_output=True, text=True, timeout=900)
    try:
        if started.returncode != 0:
            reason = f"SLURM could not be started by {CLUSTER.relative_to(REPO)}: {started.stderr.strip()[-2000:]}"
            if _in_ci():
                pytest.fail(reason)
            pytest.skip(reason)
        yield
    finally:
        # Stops only what the harness started (its pid files), whether or not the start went all the way.
        stopped = subprocess.run([CLUSTER, "stop"], capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 0, stopped.stderr


def _snakemake(config: dict, folder: Path, name: str, *args: str) -> str:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    # The cluster jobs run `fer-pipeline` and this interpreter found on PATH, which sbatch hands to each job
    # (--export=ALL): the venv's bin folder goes first, as on a login node with the venv activated.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, "-m", "snakemake", *args, "--configfile", str(path)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    log = result.stdout + result.stderr
    (folder / f"{name}.log").write_text(log)
    assert result.returncode == 0, f"{name} run failed:\n{log[-4000:]}"
    return log


def _slurm_job(job_id: str) -> dict[str, str]:
    """A finished job as slurmctld still holds it (MinJobAge=300 s): state, CPUs, memory, time limit."""
    out = subprocess.run(["squeue", "--states=all", "--noheader", "--jobs", job_id, "--format=%T|%C|%m|%l"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return dict(zip(("state", "cpus", "memory", "limit"), out.split("|")))


@pytest.fixture(scope="module")
def local_and_slurm_runs(slurm_cluster, tmp_path_factory, face_assets):
    """A 3-subject, 2-class demo at 360x288 up to the inspected feature store, once with `--cores 2` and once
    with `--profile slurm`, into two results folders. Both read the same generated videos (made by the local
    run), so any difference in the outputs comes from where the jobs ran."""
    folder = tmp_path_factory.mktemp("slurm")
    videos = folder / "videos"
    runs = {}
    for name in ("local", "slurm"):
        runs[name] = config_mod.deep_update(config_mod.load(), {
            "results": str(folder / name),
            # A shard per subject: three shards' jobs, grouped into sbatch jobs by the profile.
            "datasets": {"demo": {"root": str(videos), "presets": ["ec112"], "protocol": {"name": "losgo", "groups": 3},
                                  "subjects_per_shard": 1}},
            "demo": {"subjects": 3, "clips_per_class": 1, "classes": ["happiness", "surprise"],
                     "duration_s": [1.0, 1.4], "width": 360, "height": 288, "assets": str(face_assets)},
            "detection": {"min_face_size": 20},
        })
    target = "{}/demo/features/ec112/inspect.txt"
    local_log = _snakemake(runs["local"], folder, "local", target.format(folder / "local"), "--cores", "2")
    slurm_logs = folder / "slurm_logs"
    # --profile slurm as a user runs it from the repo root (./slurm -> workflow/profiles/slurm), plus what is
    # particular to this test cluster: a grouped job may use 2 of its node's CPUs (the site value `cores`),
    # logs are kept to be read here, and the first status check comes after 2 s instead of 40 (MinJobAge=300 s
    # stays above 3x that).
    slurm_log = _snakemake(
        runs["slurm"], folder, "slurm", target.format(folder / "slurm"), "--profile", "slurm",
        "--cores", str(GROUP_CORES), "--slurm-logdir", str(slurm_logs), "--slurm-keep-successful-logs",
        "--slurm-init-seconds-before-status-checks", "2")
    return {"folder": folder, "local_log": local_log, "slurm_log": slurm_log, "slurm_logs": slurm_logs}


def test_every_job_went_through_sbatch_with_its_declared_resources(local_and_slurm_runs):
    log = local_and_slurm_runs["slurm_log"]
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.", log)
    logs_by_kind = {Path(path).parent.relative_to(local_and_slurm_runs["slurm_logs"]).parts[0]: (job_id, Path(path))
                    for job_id, path in submitted}
    # The manifest on its own; the 3 shards' detect_faces + extract_features (6 jobs) as one grouped job
    # (group-components preprocess: 4); inspect_features as its own group. The videos were there already.
    assert sorted(logs_by_kind) == ["group_features_summary_inspect_features",
                                    "group_preprocess_detect_faces_extract_features", "rule_manifest"], submitted
    assert len(submitted) == 3
    # Nothing ran on the submitting machine, and the local run submitted nothing.
    assert "localrule" not in log and "SLURM jobid" not in local_and_slurm_runs["local_log"]
    for kind, (job_id, slurm_log) in logs_by_kind.items():
        job = _slurm_job(job_id)
        assert job["state"] == "COMPLETED", (kind, job)
        # Inside the job, snakemake ran the rules (the job's log is SLURM's --output file).
        assert slurm_log.name == f"{job_id}.log" and "Finished jobid" in slurm_log.read_text(), kind
    # The manifest rule declares mem_mb=1000 and runtime=30 (minutes): SLURM was asked for exactly that.
    manifest = _slurm_job(logs_by_kind["rule_manifest"][0])
    assert (manifest["cpus"], manifest["memory"], manifest["limit"]) == ("1", "1000M", "30:00")
    # The grouped job runs GROUP_CORES shards side by side, each with its rules' 3000 MB, and the rest after
    # them: its time limit is (detect 120 + extract 120 min) per layer of shards.
    group = _slurm_job(logs_by_kind["group_preprocess_detect_faces_extract_features"][0])
    assert (group["cpus"], group["memory"]) == (str(GROUP_CORES), f"{3000 * GROUP_CORES}M")
    layers = -(-3 // GROUP_CORES)
    assert group["limit"] == f"{layers * 4}:00:00"


def test_the_cluster_run_writes_what_the_local_run_writes(local_and_slurm_runs):
    folder = local_and_slurm_runs["folder"]
    local, slurm = folder / "local" / "demo", folder / "slurm" / "demo"
    assert (local / "manifest.csv").read_bytes() == (slurm / "manifest.csv").read_bytes()
    manifest = pd.read_csv(local / "manifest.csv", dtype={"shard": str})
    assert len(manifest) == 6
    for stage in ("detections", "features/ec112"):
        for shard in sorted(manifest["shard"].unique()):
            summaries = [json.loads((run / stage / f"{shard}.json").read_text()) for run in (local, slurm)]
            assert summaries[0]["clips"] == summaries[1]["clips"]
            # The detections job writes ec112's features while the frames are decoded: the features job finds them.
            assert summaries[0]["counts"][{"detections": "written", "features/ec112": "cached"}[stage]] == 2
            stores = [ShardStore(run / stage / f"{shard}.zarr", mode="r") for run in (local, slurm)]
            assert stores[0].clip_ids() == stores[1].clip_ids()
            for clip_id in stores[0].clip_ids():
                # Provenance is the same but for when the clip was written.
                attrs = [{k: v for k, v in store.clip_attrs(clip_id).items() if k != "created"} for store in stores]
                assert attrs[0] == attrs[1], (stage, clip_id)
                groups = [store.clip(clip_id) for store in stores]
                names = sorted(name for name, _ in groups[0].arrays())
                assert names == sorted(name for name, _ in groups[1].arrays())
                for name in names:
                    a, b = groups[0][name][...], groups[1][name][...]
                    assert a.dtype == b.dtype and np.array_equal(a, b), (stage, clip_id, name)
    inspected = [(run / "features" / "ec112" / "inspect.txt").read_text().replace(str(run.parent), "RESULTS")
                 for run in (local, slurm)]
    assert inspected[0] == inspected[1] and "total: 2 clips" in inspected[0]
