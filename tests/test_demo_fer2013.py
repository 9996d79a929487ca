"""The FER2013-layout demo: fer2013.csv of 48-px grey pictures of the demo subjects (neutral and the demo classes),
subjects dealt to Training, PublicTest and PrivateTest, read by the fer2013 adapter; deterministic; in make demo's
default target (the fusion demo's FER2013 stage reads it)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from fer_pipeline import config as config_mod
from fer_pipeline import demo, paths
from fer_pipeline.datasets import fer2013

from fixtures_stills import run_snakemake


def tiny(face_assets) -> dict:
    return {"subjects": 3, "clips_per_class": 1, "classes": ["happiness", "surprise"], "duration_s": [1.0, 1.1],
            "fps": 25, "width": 360, "height": 288, "stills_per_class": 2, "assets": str(face_assets)}


def test_the_fer2013_layout_is_read_by_its_adapter_and_is_deterministic(face_assets, tmp_path):
    table = demo.generate(tmp_path / "a", tiny(face_assets), seed=0, layout="fer2013", progress=False)
    records, skipped = fer2013.scan(tmp_path / "a")
    assert len(records) == 3 * 3 * 2  # subjects x (neutral + 2 classes) x stills
    assert {r["label"] for r in records} == {"neutral", "happiness", "surprise"}
    # One subject a partition: 3 subjects, a fifth (at least one) PrivateTest, the fifth before PublicTest.
    by_row = {int(r["row"]): r for r in records}
    split_of_subject = {}
    for row in table[~table["truncated"]].itertuples():
        assert by_row[row.row]["label"] == row.label
        split_of_subject.setdefault(row.subject, set()).add(by_row[row.row]["split"])
    assert split_of_subject == {1: {"train"}, 2: {"val"}, 3: {"test"}}
    (quirk,) = table[table["truncated"]].itertuples()
    assert any(s["reason"] == f"row {quirk.row}: the pixel string has 2303 values, not 2304 (48x48)" for s in skipped)
    # A face: not flat, not saturated; and the same picture again from the same seed.
    from fer_pipeline import video

    pictures = [video.read(tmp_path / "a" / "fer2013.csv", row=r["row"]).frames[0, ..., 0] for r in records]
    assert all(p.shape == (48, 48) and 20 < p.std() and 10 < p.mean() < 245 for p in pictures)
    again = demo.generate(tmp_path / "b", tiny(face_assets), seed=0, layout="fer2013", progress=False)
    assert (tmp_path / "a" / "fer2013.csv").read_bytes() == (tmp_path / "b" / "fer2013.csv").read_bytes()
    assert len(again) == len(table)
    # Its own draws, not the AffectNet layout's pictures: a happiness still differs from a neutral one of its subject.
    first = {r["label"]: pictures[i] for i, r in enumerate(records) if r["row"] <= 6}
    assert np.abs(first["happiness"].astype(int) - first["neutral"].astype(int)).mean() > 1.0


def test_the_fer2013_layout_needs_a_subject_per_partition(face_assets, tmp_path):
    with pytest.raises(ValueError, match="Training, PublicTest and PrivateTest, so it needs at least 3"):
        demo.generate(tmp_path, {**tiny(face_assets), "subjects": 2}, seed=0, layout="fer2013", progress=False)


def test_the_layouts_keep_the_keys_they_share():
    """stills_per_class is read by the AffectNet and FER2013 layouts, and by no other."""
    cfg = config_mod.load()["demo"]
    assert demo.layout_config(cfg, "affectnet")["stills_per_class"] == 2
    assert demo.layout_config(cfg, "fer2013")["stills_per_class"] == 2
    assert "stills_per_class" not in demo.layout_config(cfg, "enterface")
    assert "duration_s" not in demo.layout_config(cfg, "fer2013")


def test_the_default_target_makes_the_fer2013_demo_and_the_fusion_demo_does_not_pretrain_on_its_test_faces(tmp_path):
    config = config_mod.deep_update(config_mod.load(), {"results": str(tmp_path / "results")})
    result = run_snakemake(config, tmp_path, "-n", "-p")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert re.search(r"^demo_pixels\s+1$", out, re.M)
    (inputs,) = re.findall(r"^rule all:\n\s+input: (.*)$", out, re.M)
    results = tmp_path / "results"
    for path in (paths.features_inspection(results, "demo_fer2013", "fer48"),
                 paths.contact_sheet(results, "demo_fer2013", "fer48")):
        assert str(path) in inputs.split(", ")
    assert "fer-pipeline demo --dataset demo_fer2013" in out
    # The FER2013 demo shows the fusion demo's own subjects, each a test subject of some round: no stage there.
    assert config_mod.study_config(config, "demo", "fusion")["pretrain"]["dataset"] is None
    assert not re.search(r"^fusion_pretrain\s", out, re.M)
