"""The SLURM profile without a scheduler: `--profile slurm` resolves from the repo root and plans a run, and
every rule declares what its cluster job is sized by. The real cluster run is tests/test_slurm.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from fer_pipeline import config as config_mod

REPO = Path(__file__).resolve().parent.parent
PROFILE = REPO / "workflow" / "profiles" / "slurm"


def test_profile_slurm_resolves_from_the_repo_root_and_plans_a_run(tmp_path):
    # snakemake looks for a profile named slurm in ./slurm first: the repo's link to workflow/profiles/slurm.
    assert (REPO / "slurm").resolve() == PROFILE
    config = config_mod.deep_update(config_mod.load(), {"results": str(tmp_path / "results")})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    target = f"{tmp_path}/results/demo/manifest.csv"
    result = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "slurm", "-n", target,
                             "--configfile", str(path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "Using profile slurm" in out
    assert re.search(r"^demo_videos\s+1$", out, re.M) and re.search(r"^manifest\s+1$", out, re.M)
    # printshellcmds comes from the profile: the plan shows the job's command.
    assert "Shell command: fer-pipeline manifest --dataset demo" in out


def test_every_rule_declares_the_resources_its_cluster_job_asks_for(workflow_rules):
    for rule, (smk, body) in workflow_rules.items():
        assert re.search(r"^\s+threads: \d+$", body, re.M), f"{rule} ({smk.name}) declares no threads"
        resources = body.split("resources:", 1)[-1]
        for key in ("mem_mb=", "runtime="):
            assert key in resources, f"{rule} ({smk.name}) declares no {key[:-1]}"
    for rule in ("train_ablation", "detect_faces"):
        assert "gpu=fer_config.requested_gpus(" in workflow_rules[rule][1], rule


def test_the_profiles_groups_are_the_workflows(workflow_rules):
    profile = yaml.safe_load((PROFILE / "profile.yaml").read_text())
    assert profile["executor"] == "slurm"
    groups = {}
    for rule, (_, body) in workflow_rules.items():
        group = re.search(r'^\s+group:\s*\n\s*"(\w+)"', body, re.M)
        if group:
            groups.setdefault(group.group(1), set()).add(rule)
    # A group the profile names but no rule has would silently group nothing.
    assert set(profile["group-components"]) <= set(groups)
    assert groups["preprocess"] == {"detect_faces", "extract_features"}
