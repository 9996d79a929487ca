"""Settings chosen on validation subjects: a selection run trains a candidate's settings, scores the round's
validation subjects and never reads its test subjects; candidates are validated as study config; adding them
retrains no ablation run; the table's choice per round follows the validation scores."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fer_pipeline import config as config_mod
from fer_pipeline import windows
from fer_pipeline.config import ConfigError
from fer_pipeline.protocols import fold_split
from fer_pipeline.studies import ablation
from test_lineage import CLASSES, DATASET, make_config, make_manifest, save_manifest, write_features

SELECTION = {"variant": "ablation_e",
             "candidates": {"as_configured": {}, "wider": {"sizes": {"feature_dim": 8}, "training": {"epochs": 1}}}}


def selection_config(tmp_path, selection=SELECTION) -> dict:
    return make_config(tmp_path, datasets={DATASET: {"study_overrides": {"ablation": {
        "val_fraction": 0.5, "selection": selection}}}})


def test_a_candidate_is_merged_into_the_study_and_validated_as_the_study_config(tmp_path):
    config = selection_config(tmp_path)
    wider = config_mod.study_config(ablation.candidate_config(config, DATASET, "wider"), DATASET, "ablation")
    assert wider["sizes"]["feature_dim"] == 8 and wider["training"]["epochs"] == 1
    assert wider["sizes"]["input_size"] == 16 and "selection" not in wider  # the rest as configured
    assert ablation.candidates(config, DATASET) == ["as_configured", "wider"]
    typo = selection_config(tmp_path, {"variant": "ablation_e", "candidates": {"bad": {"sizes": {"input_sise": 32}}}})
    with pytest.raises(ConfigError, match=r"candidates\.bad.*input_sise"):
        ablation.candidate_config(typo, DATASET, "bad")
    with pytest.raises(ConfigError, match="no candidate 'missing'.*as_configured, wider"):
        ablation.candidate_config(config, DATASET, "missing")


def test_adding_candidates_retrains_no_ablation_run(tmp_path):
    plain, selecting = make_config(tmp_path), selection_config(tmp_path)
    plain = config_mod.deep_update(plain, {"datasets": {DATASET: {"study_overrides": {"ablation": {"val_fraction": 0.5}}}}})
    study = config_mod.study_config
    assert ablation.run_parameters(study(plain, DATASET, "ablation")) == \
        ablation.run_parameters(study(selecting, DATASET, "ablation"))


def test_a_selection_run_scores_validation_subjects_and_never_reads_test_subjects(tmp_path, monkeypatch):
    config, manifest = selection_config(tmp_path), make_manifest(tmp_path)
    manifest_csv = save_manifest(config, manifest)
    write_features(config, manifest)
    split = fold_split(manifest, 0, 0.5, config["seed"])
    assert split["val"] and split["test"]
    built = []

    class Recording(windows.WindowDataset):
        def __init__(self, clips, *args, subjects=None, **kwargs):
            built.append(set(subjects))
            super().__init__(clips, *args, subjects=subjects, **kwargs)

    monkeypatch.setattr(windows, "WindowDataset", Recording)
    summary = ablation.run_fold(config, DATASET, "ablation_e", 0, manifest_csv, tmp_path / "wider", candidate="wider")
    read = set().union(*built)
    assert read == set(split["train"]) | set(split["val"]) and not read & set(split["test"])
    predictions = pd.read_csv(tmp_path / "wider" / "predictions.csv", dtype={"subject": str})
    assert set(predictions["subject"]) == set(split["val"]) and set(predictions["candidate"]) == {"wider"}
    assert summary["scored"] == "val" and summary["study"]["sizes"]["feature_dim"] == 8
    # The plain run reads the test subjects and scores them.
    built.clear()
    ablation.run_fold(config, DATASET, "ablation_e", 0, manifest_csv, tmp_path / "plain")
    assert set(split["test"]) <= set().union(*built)
    scored = pd.read_csv(tmp_path / "plain" / "predictions.csv", dtype={"subject": str})
    assert set(scored["subject"]) == set(split["test"])


def write_run(folder, candidate, fold, correct):
    """A selection run's outputs: two videos of one window each, ``correct`` of them right."""
    folder.mkdir(parents=True)
    rows = []
    for i in range(2):
        predicted = i if i < correct else 1 - i
        rows.append({"candidate": candidate, "variant": "ablation_e", "fold": fold, "seed": 0, "clip_id": f"c{i}",
                     "subject": "1", "window": 0, "label": CLASSES[i], "prediction": CLASSES[predicted],
                     **{f"p_{c}": 0.9 if k == predicted else 0.1 for k, c in enumerate(CLASSES)}})
    pd.DataFrame(rows).to_csv(folder / "predictions.csv", index=False)
    (folder / "fold.json").write_text(json.dumps({"classes": CLASSES, "scored": "val", "fold": fold}))


def video_folds(accuracies: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"variant": c, "fold": f, "level": "video", "accuracy": a, "macro_f1": a}
                         for c, values in accuracies.items() for f, a in enumerate(values)])


def test_the_one_standard_error_rule_gives_up_the_preferred_setting_only_for_a_clearly_better_one():
    # best: mean 80, sample std 14.1 over 2 rounds, standard error 10: the bar is 70.
    chosen, bar, reach = ablation.one_se_choice(video_folds({"best": [70, 90], "paper_like": [70, 72]}),
                                                ["paper_like", "best"])
    assert (chosen, round(bar, 6), reach) == ("paper_like", 70.0, ["paper_like", "best"])
    chosen, _, reach = ablation.one_se_choice(video_folds({"best": [70, 90], "paper_like": [60, 62]}),
                                              ["paper_like", "best"])
    assert (chosen, reach) == ("best", ["best"])
    # Equal rounds: no spread, the bar is the best mean itself; a tie goes to the preferred one.
    chosen, bar, _ = ablation.one_se_choice(video_folds({"a": [50, 50], "b": [50, 50]}), ["b", "a"])
    assert (chosen, bar) == ("b", 50.0)
    with pytest.raises(ConfigError, match="every candidate once"):
        ablation.preference({"candidates": {"a": {}, "b": {}}, "prefer": ["a"]})


def test_the_table_names_the_rules_choice_and_warns_when_the_config_holds_another(tmp_path):
    config = selection_config(tmp_path, {**SELECTION, "prefer": ["wider", "as_configured"], "chosen": "as_configured"})
    # Round 0: wider gets both videos right, as_configured one; round 1: both one. Means 75 and 50, wider's
    # standard error 25: the bar is 50, both reach it, wider is preferred.
    correct = {("as_configured", 0): 1, ("wider", 0): 2, ("as_configured", 1): 1, ("wider", 1): 1}
    dirs = []
    for (candidate, fold), n in correct.items():
        dirs.append(tmp_path / candidate / str(fold))
        write_run(dirs[-1], candidate, fold, n)
    table = ablation.write_selection(config, DATASET, dirs, tmp_path / "ablation_selection.csv").set_index("candidate")
    assert list(table.index) == ["wider", "as_configured"]  # the order of preference
    assert table.loc["wider", "video_accuracy_mean"] == 75.0 and table.loc["as_configured", "video_accuracy_mean"] == 50.0
    assert table["chosen"].to_dict() == {"wider": True, "as_configured": False}
    assert table["reaches_one_se_bar"].all()
    # Each round's own best: round 0 wider; round 1 a tie, to the preferred one.
    assert table["rounds_scored_best"].to_dict() == {"wider": 2, "as_configured": 0}
    notes = (tmp_path / "ablation_selection.md").read_text()
    assert "one-standard-error rule: wider" in notes and "holds (selection.chosen): as_configured, not" in notes
    # A run that scored its test subjects cannot enter a selection.
    summary = json.loads((dirs[0] / "fold.json").read_text())
    (dirs[0] / "fold.json").write_text(json.dumps({**summary, "scored": "test"}))
    with pytest.raises(ValueError, match="validation subjects"):
        ablation.write_selection(config, DATASET, dirs, tmp_path / "again.csv")


def test_the_demo_runs_the_candidate_its_selection_chose():
    """The demo's ablation settings are those of the candidate ``selection.chosen`` names (docs/studies.md)."""
    config = config_mod.load()
    study = config_mod.study_config(config, "demo", "ablation")
    chosen = config_mod.study_config(ablation.candidate_config(config, "demo", study["selection"]["chosen"]),
                                     "demo", "ablation")
    assert ablation.run_parameters(study) == ablation.run_parameters(chosen)
