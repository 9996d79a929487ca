"""The AffectNet-layout demo: stills of every demo class, neutral and contempt, with AffectNet's lists (boxes, 68
synthetic landmarks, codes), read by the affectnet adapter; deterministic; in make demo's default target."""

from __future__ import annotations

import re

import numpy as np
import pytest

from fer_pipeline import config as config_mod
from fer_pipeline import demo, paths, video
from fer_pipeline.datasets import affectnet

from fixtures_stills import run_snakemake


def tiny(face_assets) -> dict:
    return {"subjects": 3, "clips_per_class": 1, "classes": ["happiness", "surprise"], "duration_s": [1.0, 1.1],
            "fps": 25, "width": 360, "height": 288, "stills_per_class": 1, "assets": str(face_assets)}


def test_the_affectnet_layout_is_read_by_its_adapter_and_is_deterministic(face_assets, tmp_path):
    table = demo.generate(tmp_path / "a", tiny(face_assets), seed=0, layout="affectnet", progress=False)
    records, skipped = affectnet.scan(tmp_path / "a")
    assert {r["label"] for r in records} == {"neutral", "happiness", "surprise", "contempt"}
    assert len(records) == 3 * 4
    # The last subject (a fifth of 3, at least one) is the validation list's.
    assert {r["split"] for r in records if "/103/" in r["path"]} == {"val"}
    assert {r["split"] for r in records if "/103/" not in r["path"]} == {"train"}
    reasons = " ".join(s["reason"] for s in skipped)
    for fragment in ("expression 9 (Uncertain)", "expression 8 (None)", "the listed image is absent"):
        assert fragment in reasons
    for row in table[table["written"]].itertuples():
        picture = video.read_still(row.path)
        assert picture.shape[:2] == (row.height, row.width)
        x1, y1 = row.face_x + row.face_width, row.face_y + row.face_height
        assert 0 <= row.face_x < x1 <= row.width and 0 <= row.face_y < y1 <= row.height
        points = np.array(row.facial_landmarks.split(";"), float).reshape(68, 2)
        assert (points[:, 0] > row.face_x - 2).all() and (points[:, 0] < x1 + 2).all()
    again = demo.generate(tmp_path / "b", tiny(face_assets), seed=0, layout="affectnet", progress=False)
    for first, second in zip(table["path"], again["path"]):
        if (tmp_path / "a" / first).exists():
            assert video.sha256(first) == video.sha256(second)
    # Contempt raises one mouth corner (image right, landmark 54) against the other (48); neutral does not.
    def corner_rise(label):
        text = table[(table["label"] == label) & (table["subject"] == 1)]["facial_landmarks"].iloc[0]
        points = np.array(text.split(";"), float).reshape(68, 2)
        return points[48, 1] - points[54, 1]
    assert corner_rise("contempt") > corner_rise("neutral") + 1.0


def test_the_default_target_makes_the_affectnet_demo_features(tmp_path):
    config = config_mod.deep_update(config_mod.load(), {"results": str(tmp_path / "results")})
    result = run_snakemake(config, tmp_path, "-n", "-p")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert re.search(r"^demo_stills\s+1$", out, re.M)
    (inputs,) = re.findall(r"^rule all:\n\s+input: (.*)$", out, re.M)
    results = tmp_path / "results"
    for path in (paths.features_inspection(results, "demo_affectnet", "affect224"),
                 paths.contact_sheet(results, "demo_affectnet", "affect224")):
        assert str(path) in inputs.split(", ")
    assert "fer-pipeline demo --dataset demo_affectnet" in out


@pytest.mark.slow
def test_a_tiny_affectnet_demo_through_the_workflow(face_assets, tmp_path):
    results = tmp_path / "results"
    config = config_mod.deep_update(config_mod.load(), {"results": str(results), "demo": tiny(face_assets)})
    target = paths.features_inspection(results, "demo_affectnet", "affect224")
    result = run_snakemake(config, tmp_path, str(target), str(paths.contact_sheet(results, "demo_affectnet", "affect224")))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    text = target.read_text()
    assert "images=12" in text and "neutral 3" in text and "contempt 3" in text
