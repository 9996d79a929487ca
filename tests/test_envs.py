"""The conda environments (for `--sdm conda`) pin what requirements.txt and the Makefile pin, within the ranges
of pyproject.toml."""

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent


def _pins(lines):
    return dict(re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip()).groups()
                for line in lines if line.strip() and not line.strip().startswith("#"))


def _project_pins():
    """What the Makefile installs: requirements.txt, and torch, torchvision, facenet-pytorch by name."""
    project = _pins((REPO / "requirements.txt").read_text().splitlines())
    makefile = (REPO / "Makefile").read_text()
    project.update(_pins(re.findall(r"\b(torch(?:vision)?==\S+)", makefile)))
    project.update(_pins(re.findall(r"(facenet-pytorch==\S+)", makefile)))
    return project


def _env_pins(env: Path):
    return _pins(next(d["pip"] for d in yaml.safe_load(env.read_text())["dependencies"] if isinstance(d, dict)))


def test_every_env_pin_matches_the_project_pins():
    project = _project_pins()
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert {e.stem for e in envs} == {"torch", "report"}
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        assert "python=3.11" in spec["dependencies"]
        for name, version in _env_pins(env).items():
            assert project.get(name) == version, f"{env.name}: {name}=={version}, the project pins {project.get(name)}"
        script = env.with_suffix(".post-deploy.sh").read_text()
        assert "pip install --no-deps -e" in script
    assert {"torch", "torchvision"} <= set(_env_pins(REPO / "envs/torch.yaml"))
    assert f"facenet-pytorch=={project['facenet-pytorch']}" in (REPO / "envs/torch.post-deploy.sh").read_text()


def test_every_pin_is_within_the_range_pyproject_declares():
    """pyproject.toml's ranges are what the package promises; the Makefile's and the envs' exact pins must
    lie inside them, and every declared dependency must be pinned."""
    declared = {canonicalize_name(r.name): r.specifier for r in
                map(Requirement, tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])}
    project = {canonicalize_name(name): version for name, version in _project_pins().items()}
    assert set(declared) <= set(project), f"declared but not pinned: {set(declared) - set(project)}"
    sources = {"requirements.txt / Makefile": project} | \
              {env.name: _env_pins(env) for env in sorted((REPO / "envs").glob("*.yaml"))}
    for source, pins in sources.items():
        for name, version in pins.items():
            allowed = declared.get(canonicalize_name(name))
            assert allowed is None or allowed.contains(version), f"{source}: {name}=={version} outside {allowed}"


def test_every_rule_names_an_existing_env(workflow_rules):
    assert {"manifest", "detect_faces", "extract_features", "train_ablation", "report"} <= set(workflow_rules)
    for rule, (smk, body) in workflow_rules.items():
        env = re.search(r'conda:\s*\n\s*"([^"]+)"', body)
        assert env, f"rule {rule} in {smk.name} has no conda env"
        assert (smk.parent / env.group(1)).resolve().is_file(), env.group(1)
