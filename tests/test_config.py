"""Config validation: a wrong key or type, or a missing dataset root, stops everything with the key's name."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fer_pipeline import config

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def test_the_shipped_config_is_valid():
    cfg = config.load()
    assert cfg["presets"]["ec112"]["size"] == 112


@pytest.mark.parametrize("overrides,key", [
    ({"detection": {"keyframe_intervall": 3}}, "detection.keyframe_intervall"),
    ({"presets": {"ec112": {"size": "large"}}}, "presets.ec112.size"),
    ({"datasets": {"demo": {"adapter": "nosuch"}}}, "datasets.demo.adapter"),
    ({"device": "gpu0"}, "device"),
    ({"colour": True}, "colour"),
])
def test_bad_keys_and_types_are_named(overrides, key):
    with pytest.raises(config.ConfigError, match=f"key '{key}'"):
        config.load(overrides=overrides)


def test_unset_and_absent_roots_name_the_key(tmp_path):
    cfg = config.load()
    with pytest.raises(config.ConfigError, match=r"datasets\.enterface\.root is not set"):
        config.dataset_root(cfg, "enterface")
    cfg = config.deep_update(cfg, {"datasets": {"enterface": {"root": str(tmp_path / "absent")}}})
    with pytest.raises(config.ConfigError, match=r"datasets\.enterface\.root = .*absent.* is not a folder"):
        config.dataset_root(cfg, "enterface")
    with pytest.raises(config.ConfigError, match=r"datasets\.afew\.root is not set"):
        config.dataset_root(cfg, "afew")
    with pytest.raises(config.ConfigError, match=r"datasets\.ckplus\.root is not set"):
        config.dataset_root(cfg, "ckplus")
    with pytest.raises(config.ConfigError, match="dataset 'jaffe' is not configured"):
        config.dataset_root(cfg, "jaffe")


def _snakemake(tmp_path, *args, config_overrides=None):
    cfg = config.deep_update(yaml.safe_load((REPO / "config.yaml").read_text()),
                             {"results": str(tmp_path / "results"), **(config_overrides or {})})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    # Targets go before --configfile, which takes every word after it.
    return subprocess.run(SNAKEMAKE + [*args, "--cores", "1", "--configfile", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_snakemake_stops_on_an_unknown_key_before_any_job(tmp_path):
    result = _snakemake(tmp_path, "-n", config_overrides={"detection": {"keyframe_intervall": 3}})
    assert result.returncode != 0
    assert "detection.keyframe_intervall" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_snakemake_stops_on_a_missing_root_naming_the_key(tmp_path):
    result = _snakemake(tmp_path, f"{tmp_path}/results/enterface/manifest.csv",
                        config_overrides={"datasets": {"enterface": {"root": str(tmp_path / "nowhere")}}})
    assert result.returncode != 0
    assert "datasets.enterface.root" in result.stdout + result.stderr
    assert not (tmp_path / "results" / "enterface").exists()  # no job ran


@pytest.mark.parametrize("device,detection_device,training_gpus,detection_gpus", [
    ("auto", "auto", 1, 0),   # training asks for a GPU; MTCNN only when configured for one
    ("cpu", "auto", 0, 0),
    ("mps", "auto", 0, 0),
    ("cuda", "auto", 1, 1),   # detection.device 'auto' follows the global device
    ("cuda:1", "cpu", 1, 0),
    ("auto", "cuda:0", 1, 1),
])
def test_jobs_ask_the_scheduler_for_gpus_as_their_devices_say(device, detection_device, training_gpus, detection_gpus):
    cfg = config.load(overrides={"device": device, "detection": {"device": detection_device}})
    # The expressions of the `gpu` resource of train_ablation and detect_faces.
    assert config.requested_gpus(cfg["device"], auto=1) == training_gpus
    assert config.requested_gpus(config.detection_device(cfg), auto=0) == detection_gpus


def test_a_generated_datasets_root_lies_under_its_results_folder():
    """A run with another results folder makes its own demo videos, never overwriting the default run's."""
    cfg = config.deep_update(config.load(), {"results": "/elsewhere/results"})
    assert cfg["datasets"]["demo"]["root"] is None
    assert config.dataset_root(cfg, "demo") == Path("/elsewhere/results/demo/videos")


def test_floats_without_a_dot_are_numbers(tmp_path):
    """`lr: 3e-5` is a number (YAML 1.1 would read a string and the schema would refuse it)."""
    import yaml

    from fer_pipeline import config as config_mod

    assert yaml.load("lr: 3e-5\nn: 7\nv: '1e3'\nx: 1.5", Loader=config_mod.ConfigLoader) == \
        {"lr": 3e-5, "n": 7, "v": "1e3", "x": 1.5}
    cfg = config_mod.load()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg).replace("lr: 3.0e-05", "lr: 3e-5"))
    assert "lr: 3e-5" in path.read_text()
    assert config_mod.load(path)["studies"]["frafer"]["training"]["lr"] == 3e-5
