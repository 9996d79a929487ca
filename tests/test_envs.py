"""The conda environments (for `--sdm conda`) pin what requirements.txt and the Makefile pin."""

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def _pins(lines):
    return dict(re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip()).groups()
                for line in lines if line.strip() and not line.strip().startswith("#"))


def test_every_env_pin_matches_the_project_pins():
    project = _pins((REPO / "requirements.txt").read_text().splitlines())
    makefile = (REPO / "Makefile").read_text()
    project.update(_pins(re.findall(r"\b(torch(?:vision)?==\S+)", makefile)))
    project.update(_pins(re.findall(r"(facenet-pytorch==\S+)", makefile)))
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert {e.stem for e in envs} == {"torch", "report"}
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        assert "python=3.11" in spec["dependencies"]
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        for name, version in _pins(pip).items():
            assert project.get(name) == version, f"{env.name}: {name}=={version}, the project pins {project.get(name)}"
        script = env.with_suffix(".post-deploy.sh").read_text()
        assert "pip install --no-deps -e" in script
    torch_env = _pins(next(d["pip"] for d in yaml.safe_load((REPO / "envs/torch.yaml").read_text())["dependencies"]
                           if isinstance(d, dict)))
    assert {"torch", "torchvision"} <= set(torch_env)
    assert f"facenet-pytorch=={project['facenet-pytorch']}" in (REPO / "envs/torch.post-deploy.sh").read_text()


def test_every_rule_names_an_existing_env(workflow_rules):
    assert {"manifest", "detect_faces", "extract_features", "train_ablation", "report"} <= set(workflow_rules)
    for rule, (smk, body) in workflow_rules.items():
        env = re.search(r'conda:\s*\n\s*"([^"]+)"', body)
        assert env, f"rule {rule} in {smk.name} has no conda env"
        assert (smk.parent / env.group(1)).resolve().is_file(), env.group(1)
