"""fer-pipeline digest: one hash per stage, over values not storage, current clips only, compared across runs."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fer_pipeline import cli, lineage, paths
from fer_pipeline import config as config_mod
from fer_pipeline import digest
from fer_pipeline.store import ArraySpec, ShardStore

DATASET = "demo"
PRESET = "ec112"
CLIPS = {"s1_an_1": "1", "s1_fe_1": "1", "s2_an_1": "2", "s2_fe_1": "2"}  # clip_id -> subject (its shard)
NAMES = ["videos", "tracks", f"features/{PRESET}", "ablation/ablation_e/fold1/seed0", "fusion/fold0/seed0",
         "fusion/fold0/seed0/lstm", "fusion/fold0/seed0/vgg_face/features.zarr", "tables/ablation.csv", "tables/ablation_folds.csv",
         "tables/fusion.csv"]


def _rng(clip_id: str, stage: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{clip_id}/{stage}".encode()))


def _tracks(clip_id: str) -> dict[str, ArraySpec]:
    rng = _rng(clip_id, "tracks")
    return {"boxes": ArraySpec(rng.uniform(0, 64, (6, 4)).astype(np.float32), ("frame", "box")),
            "scores": ArraySpec(rng.uniform(0.9, 1, 6).astype(np.float32), ("frame",)),
            "valid": ArraySpec(np.ones(6, bool), ("frame",))}


def _features(clip_id: str) -> dict[str, ArraySpec]:
    rng = _rng(clip_id, "features")
    return {"rgb": ArraySpec(rng.integers(0, 255, (6, 8, 8, 3), dtype=np.uint8), ("frame", "y", "x", "channel"), 4),
            "flow": ArraySpec(rng.normal(size=(5, 8, 8, 2)).astype(np.float16), ("pair", "y", "x", "uv"), 4)}


def _network(clip_id: str) -> dict[str, ArraySpec]:
    rng = _rng(clip_id, "network")
    return {"features": ArraySpec(rng.normal(size=(6, 16)).astype(np.float32), ("frame", "feature")),
            "frame": ArraySpec(np.arange(6), ("frame",))}


def _changed(arrays: dict[str, ArraySpec]) -> dict[str, ArraySpec]:
    """The same arrays with one value of the first changed."""
    name = next(iter(arrays))
    data = arrays[name].data.copy()
    data.flat[0] += 1
    return {**arrays, name: ArraySpec(data, arrays[name].dims, arrays[name].frames_per_chunk)}


def _config(results: Path) -> dict:
    return config_mod.load(overrides={"results": str(results)})


def build(results: Path, compressor: str = "zstd", notes: str = "code 1234abcd, /home/a/results",
          change: str | None = None, stale: frozenset = frozenset(), absent: frozenset = frozenset()) -> Path:
    """A results folder of dataset ``demo`` in the layout of fer_pipeline.paths: manifest, detections, one
    preset's features, an ablation run, a fusion round (its predictions, the LSTM's, VGG-Face's feature store)
    and the tables. ``change`` alters one value of one item (a name of :data:`NAMES`); clips in ``stale`` are
    stored with a wrong fingerprint, those in ``absent`` not at all. Returns the results root."""
    config = _config(results)
    manifest = pd.DataFrame({"clip_id": list(CLIPS), "shard": list(CLIPS.values()),
                             "sha256": [f"{i:064x}" for i in range(len(CLIPS))], "label": ["anger", "fear"] * 2,
                             "subject": list(CLIPS.values()), "path": [f"/data/{c}.avi" for c in CLIPS]})
    paths.manifest_csv(results, DATASET).parent.mkdir(parents=True)
    manifest.to_csv(paths.manifest_csv(results, DATASET), index=False)
    wanted = lineage.expected(config, manifest, PRESET)
    store_config = {"compressor": compressor, "level": 5}
    for shard, rows in wanted.groupby("shard"):
        for stage, store_path, key, arrays in (
                ("tracks", paths.detections_store(results, DATASET, shard), "track_sha256", _tracks),
                (f"features/{PRESET}", paths.features_store(results, DATASET, PRESET, shard), "features_sha256",
                 _features)):
            with ShardStore(store_path, attrs={"stage": stage, "shard": shard}, store_config=store_config) as store:
                for row in rows.itertuples():
                    if row.clip_id in absent:
                        continue
                    clip_arrays = arrays(row.clip_id)
                    if change == stage and row.clip_id == "s1_fe_1":
                        clip_arrays = _changed(clip_arrays)
                    fingerprint = "0" * 64 if row.clip_id in stale else getattr(row, key)
                    store.write_clip(row.clip_id, clip_arrays, {key: fingerprint, "source": {"path": str(results)}})
    fold = paths.fusion_round(results, DATASET, 0, 0)
    with ShardStore(fold / "vgg_face" / "features.zarr", attrs={"stage": "fusion[vgg_face]"},
                    store_config=store_config) as store:
        for clip_id in CLIPS:
            arrays = _network(clip_id)
            if change == "fusion/fold0/seed0/vgg_face/features.zarr" and clip_id == "s2_an_1":
                arrays = _changed(arrays)
            store.write_clip(clip_id, arrays, {"run_sha256": "r", "source": {"store": str(results)}})
    runs = (paths.ablation_run(results, DATASET, "ablation_e", 1, 0), fold,
            paths.fusion_job(results, DATASET, 0, 0, "lstm"))
    for run in runs:
        changed = change == run.relative_to(results / DATASET).as_posix()
        run.mkdir(parents=True, exist_ok=True)
        paths.run_predictions(run).write_text("method,fold,part,clip_id,unit,label,prediction\n" + "".join(
            f"lstm,0,test,{c},{s},anger,{'fear' if changed and c == 's2_an_1' else 'anger'}\n"
            for c, s in CLIPS.items()))
    accuracy = "91.7" if change == "tables/fusion.csv" else "83.3"
    paths.study_table(results, DATASET, "fusion").write_text(
        f"method,video_accuracy_mean,notes\nfusion,{accuracy},\"{notes}\"\nlstm,50.0,\"{notes}, 60 epochs\"\n")
    paths.study_table(results, DATASET, "ablation").write_text("variant,video_accuracy_mean\nablation_e,91.7\n")
    paths.study_folds_table(results, DATASET, "ablation").write_text("variant,fold,accuracy\nablation_e,1,91.7\n")
    paths.study_notes(results, DATASET, "ablation").write_text(f"{notes}\n")
    return results


def _digest(results: Path) -> dict[str, digest.Item]:
    return {item.name: item for item in digest.digest(_config(results), DATASET)}


def test_the_same_content_gives_the_same_digest_when_rewritten(tmp_path):
    results = tmp_path / "results"
    build(results)
    first = _digest(results)
    assert list(first) == NAMES
    assert first["tracks"].count == 4 and first[f"features/{PRESET}"].count == 4
    assert first["fusion/fold0/seed0"].count == 4 and first["tables/fusion.csv"].count == 2
    # Rewritten elsewhere: new creation times and paths in the attributes, another compressor, other notes.
    again = tmp_path / "elsewhere"
    build(again, compressor="lz4", notes="code 9876fedc, /scratch/b/results")
    assert _digest(again) == first
    chunk = Path("detections/1.zarr/clips/s1_an_1/boxes/c/0/0")
    assert (results / DATASET / chunk).read_bytes() != (again / DATASET / chunk).read_bytes()


@pytest.mark.parametrize("item", ["tracks", f"features/{PRESET}", "fusion/fold0/seed0/vgg_face/features.zarr",
                                  "fusion/fold0/seed0/lstm", "tables/fusion.csv"])
def test_one_changed_value_changes_that_line_and_only_it(tmp_path, item):
    before = _digest(build(tmp_path / "a"))
    after = _digest(build(tmp_path / "b", change=item))
    assert [name for name in NAMES if before[name] != after[name]] == [item]


def test_a_stale_clip_does_not_enter_the_digest(tmp_path):
    """A clip made from other inputs (a wrong fingerprint) counts as if it were not there; so does the folder of
    a preset the config does not define."""
    without = _digest(build(tmp_path / "a", absent=frozenset({"s2_fe_1"})))
    results = build(tmp_path / "b", stale=frozenset({"s2_fe_1"}))
    with ShardStore(paths.features_store(results, DATASET, "old_preset", "1")) as store:
        store.write_clip("s1_an_1", _features("s1_an_1"), {"features_sha256": "0" * 64})
    stale = _digest(results)
    assert stale["tracks"].count == 3 and stale[f"features/{PRESET}"].count == 3
    assert stale == without
    assert _digest(build(tmp_path / "c")) != without


def _lines(out: str) -> dict[str, tuple[str, str]]:
    """name -> (short hash, count) of the digest lines of the command's output."""
    found = (re.fullmatch(r"(\S+) +([0-9a-f]{16})  \((\d+ (?:clips|rows))\)", line) for line in out.splitlines())
    return {m[1]: (m[2], m[3]) for m in found if m}


def test_compare_names_the_first_item_that_differs_and_exits_1(tmp_path, capsys):
    reference = tmp_path / "reference.json"
    assert cli.main(["digest", str(build(tmp_path / "a") / DATASET), "--json", str(reference)]) == 0
    lines = _lines(capsys.readouterr().out)
    assert list(lines) == NAMES and lines["videos"][1] == "4 clips" and lines["tables/ablation.csv"][1] == "1 rows"
    full = json.loads(reference.read_text())["items"]
    assert all(full[name]["sha256"][:16] == short and len(full[name]["sha256"]) == 64
               for name, (short, _) in lines.items())

    assert cli.main(["digest", str(tmp_path / "a" / DATASET), "--compare", str(reference)]) == 0
    assert "all 10 items agree" in capsys.readouterr().out

    other = build(tmp_path / "b", change=f"features/{PRESET}")
    with pytest.raises(SystemExit) as stopped:
        cli.main(["digest", str(other / DATASET), "--compare", str(reference)])
    assert stopped.value.code == 1
    out = capsys.readouterr().out
    assert f"1 of 10 items differ from {reference}:\n  features/{PRESET}: here " in out
    assert f"the results part at features/{PRESET}" in out


def test_a_missing_manifest_is_named(tmp_path, caplog):
    folder = build(tmp_path / "results") / DATASET
    paths.manifest_csv(tmp_path / "results", DATASET).unlink()
    assert cli.main(["digest", str(folder)]) == 1
    assert f"{folder / 'manifest.csv'}: no manifest" in caplog.text
