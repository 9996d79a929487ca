"""Subject-independent splits: no subject on both sides, each tested once, balanced groups, seeded validation."""

from __future__ import annotations

import pandas as pd
import pytest

from fer_pipeline import protocols

# eNTERFACE'05 without subject 6: the paper's 43 subjects.
SUBJECTS = [str(s) for s in range(1, 45) if s != 6]


def _manifest(subjects, clips_per_subject=3):
    rows = [{"clip_id": f"s{s}_{k}", "subject": s} for s in subjects for k in range(clips_per_subject)]
    return pd.DataFrame(rows)


@pytest.fixture
def losgo():
    manifest = _manifest(SUBJECTS)
    manifest["fold"] = protocols.assign_folds(manifest, {"name": "losgo", "groups": 5}, seed=0)
    return manifest


def test_no_subject_is_in_train_and_test(losgo):
    rounds = protocols.folds(losgo)
    assert [fold for fold, _, _ in rounds] == [0, 1, 2, 3, 4]
    for _, train, test in rounds:
        assert not set(train) & set(test)
        assert sorted(train + test, key=protocols.subject_key) == SUBJECTS


def test_every_subject_is_tested_exactly_once(losgo):
    tested = [s for _, _, test in protocols.folds(losgo) for s in test]
    assert sorted(tested, key=protocols.subject_key) == SUBJECTS


def test_groups_are_balanced(losgo):
    sizes = [len(test) for _, _, test in protocols.folds(losgo)]
    assert sorted(sizes) == [8, 8, 9, 9, 9]  # 43 subjects in 5 groups
    assert max(sizes) - min(sizes) <= 1


def test_all_clips_of_a_subject_share_its_fold(losgo):
    assert losgo.groupby("subject")["fold"].nunique().eq(1).all()
    assert losgo["fold"].index.equals(losgo.index)


def test_subjects_are_dealt_round_robin_by_integer_id(losgo):
    fold_of = losgo.groupby("subject")["fold"].first()
    # 1, 2, 3, 4, 5 open the groups; 7 (6 is absent) closes the round; "10" is not sorted before "2".
    assert [fold_of[s] for s in ["1", "2", "3", "4", "5", "7", "8", "10"]] == [0, 1, 2, 3, 4, 0, 1, 3]


def test_folds_do_not_depend_on_row_order_or_seed(losgo):
    shuffled = _manifest(SUBJECTS).sample(frac=1.0, random_state=3)
    folds = protocols.assign_folds(shuffled, {"name": "losgo", "groups": 5}, seed=99)
    assert folds.index.equals(shuffled.index)
    merged = dict(zip(shuffled["subject"], folds))
    assert merged == dict(zip(losgo["subject"], losgo["fold"]))


def test_kfold_uses_its_groups_and_defaults_to_ten():
    manifest = _manifest(SUBJECTS, clips_per_subject=1)
    assert protocols.assign_folds(manifest, {"name": "kfold", "groups": 3}, seed=0).nunique() == 3
    assert protocols.assign_folds(manifest, {"name": "kfold"}, seed=0).nunique() == 10
    assert protocols.resolve({"name": "losgo"}) == {"name": "losgo", "groups": 5}


def test_fixed_leaves_the_split_to_the_dataset():
    manifest = _manifest(SUBJECTS[:3])
    manifest["fold"] = protocols.assign_folds(manifest, {"name": "fixed"}, seed=0)
    assert (manifest["fold"] == protocols.NO_FOLD).all()
    with pytest.raises(ValueError, match="fixed"):
        protocols.folds(manifest)


def test_bad_protocols_are_refused():
    manifest = _manifest(["1", "2", "3"])
    with pytest.raises(ValueError, match="at least 5 subjects"):
        protocols.assign_folds(manifest, {"name": "losgo", "groups": 5}, seed=0)
    with pytest.raises(ValueError, match="unknown"):
        protocols.assign_folds(manifest, {"name": "random"}, seed=0)
    with pytest.raises(ValueError, match="no subject id"):
        protocols.assign_folds(_manifest(["1", "", "3"]), {"name": "losgo", "groups": 2}, seed=0)


def test_folds_refuse_a_subject_split_across_folds(losgo):
    broken = losgo.copy()
    broken.loc[broken["subject"] == "7", "fold"] = [0, 1, 1]
    with pytest.raises(ValueError, match="7"):
        protocols.folds(broken)


def test_validation_comes_from_train_subjects_only_and_is_seeded(losgo):
    for _, train, test in protocols.folds(losgo):
        kept, val = protocols.carve_validation(train, 0.2, seed=1)
        assert val and kept
        assert set(val) <= set(train) and not set(val) & set(test)
        assert sorted(kept + val, key=protocols.subject_key) == train
        assert len(val) == round(0.2 * len(train))
        assert protocols.carve_validation(list(reversed(train)), 0.2, seed=1) == (kept, val)
    train = protocols.folds(losgo)[0][1]
    draws = {tuple(protocols.carve_validation(train, 0.2, seed=seed)[1]) for seed in range(5)}
    assert len(draws) > 1, "the seed should change which subjects validate"


def test_validation_keeps_one_subject_each_side_when_possible():
    assert protocols.carve_validation(["1", "2"], 0.01, seed=0)[1] in (["1"], ["2"])
    kept, val = protocols.carve_validation(["1", "2", "3"], 0.9, seed=0)
    assert len(kept) == 1 and len(val) == 2
    assert protocols.carve_validation(["4"], 0.5, seed=0) == (["4"], [])
    assert protocols.carve_validation(["1", "2", "3"], 0.0, seed=0) == (["1", "2", "3"], [])
    with pytest.raises(ValueError):
        protocols.carve_validation(["1", "2"], 1.0, seed=0)


def test_one_shard_per_subject():
    manifest = _manifest(["1", "2", "11", "P001"], clips_per_subject=2)
    shards = protocols.assign_shards(manifest, shard_size=50)
    assert list(shards) == ["subject01"] * 2 + ["subject02"] * 2 + ["subject11"] * 2 + ["subjectP001"] * 2
    assert shards.groupby(manifest["subject"]).nunique().eq(1).all()


def test_subjects_per_shard_groups_whole_subjects_in_their_order():
    manifest = _manifest(["11", "2", "1", "P001", "3"], clips_per_subject=2)
    shards = protocols.assign_shards(manifest, shard_size=50, subjects_per_shard=2)
    by_subject = dict(zip(manifest["subject"], shards))
    # 2 before 11 (subject_key, not string order), the last run shorter, the non-integer id named as it is.
    assert by_subject == {"1": "subjects01-02", "2": "subjects01-02", "3": "subjects03-11", "11": "subjects03-11",
                          "P001": "subjectsP001-P001"}
    assert shards.groupby(manifest["subject"]).nunique().eq(1).all()
    with pytest.raises(ValueError, match="subjects_per_shard"):
        protocols.assign_shards(manifest, shard_size=50, subjects_per_shard=0)


def test_without_subjects_shards_are_runs_of_shard_size():
    manifest = pd.DataFrame({"clip_id": [f"c{k}" for k in range(7)], "subject": [""] * 7})
    assert list(protocols.assign_shards(manifest, shard_size=3)) == ["part000"] * 3 + ["part001"] * 3 + ["part002"]
    no_column = pd.DataFrame({"clip_id": ["a", "b"]})
    assert list(protocols.assign_shards(no_column, shard_size=5)) == ["part000", "part000"]
