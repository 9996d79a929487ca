"""Subject-independent evaluation splits: which clips each fold tests, and how clips are sharded.

The Enhanced ConvLSTM paper (Miyoshi, Nagata, Hashimoto; eNTERFACE'05, 43 subjects) says only: "The subjects
... were divided into five groups and evaluated the method using leave-one-subject-group-out. The accuracies
... were determined from the average value of five times." It does not say how subjects were assigned to
groups, and no public definition of the five groups exists (see the project notes, DATASETS.md §1). This module
fixes one: subjects sorted by integer id, dealt round-robin into the groups, no shuffle. It is reproducible
from the manifest alone, and on eNTERFACE'05 it spreads the long-recorded subjects 1-30 (146 clips per
emotion overall) and the short-recorded subjects 31-44 (70) evenly over the groups.

The same dealing gives ``kfold`` (the CK+ convention: "fold k takes subjects k, k+10, k+20, ..."); ``fixed``
leaves the split to the dataset's own partition (AFEW, BP4D), which its adapter records in the manifest's
``split`` column, and marks every clip fold -1: such a dataset has one round, numbered 0, that trains on the
``train`` partition and tests the ``val`` one (AFEW's Val: its Test labels are withheld).

A dataset without subject ids (AFEW) cannot promise subject independence inside a partition; there the clip
is the unit that is never on both sides of a split (:func:`units`), and the partition itself is used as the
distributor ships it.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

# losgo: the paper's five subject groups; kfold: the 10-fold convention of CK+ and Oulu-CASIA.
DEFAULT_GROUPS = {"losgo": 5, "kfold": 10}
PROTOCOLS = ("fixed", "kfold", "losgo")
NO_FOLD = -1
# The partitions a fixed split trains on and tests (the manifest's ``split`` column).
FIXED_TRAIN, FIXED_TEST = "train", "val"
# A third partition, where a dataset has one (FER2013's PrivateTest): then it is tested and ``val`` validates.
FIXED_HELD_OUT = "test"

_INTEGER = re.compile(r"[0-9]+")


def subject_key(subject: Any) -> tuple[int, int, str]:
    """Sort key for subject ids: integers by value ("2" before "11"), other ids after them, as strings.

    Comparing ids as strings puts "11" before "2" (one public eNTERFACE loader splits on ``> '40'``);
    this key never does.
    """
    text = str(subject)
    if _INTEGER.fullmatch(text):
        return (0, int(text), "")
    return (1, 0, text)


def resolve(protocol: dict[str, Any]) -> dict[str, Any]:
    """The protocol with its defaults filled in: ``{"name": ..., "groups": ...}`` (no groups for ``fixed``).

    Raises ValueError for an unknown name or fewer than two groups.
    """
    name = protocol.get("name")
    if name not in PROTOCOLS:
        raise ValueError(f"protocol name {name!r} is unknown (known: {', '.join(PROTOCOLS)})")
    if name == "fixed":
        return {"name": name}
    groups = protocol.get("groups", DEFAULT_GROUPS[name])
    if not isinstance(groups, int) or groups < 2:
        raise ValueError(f"protocol {name}: groups must be an integer >= 2, got {groups!r}")
    return {"name": name, "groups": groups}


def _subjects(manifest_df: pd.DataFrame) -> list[str]:
    """The manifest's subject ids, sorted by :func:`subject_key`; empty when any clip lacks one."""
    if "subject" not in manifest_df.columns:
        return []
    values = manifest_df["subject"]
    if values.isna().any() or (values.astype(str).str.strip() == "").any():
        return []
    return sorted(set(values.astype(str)), key=subject_key)


def assign_folds(manifest_df: pd.DataFrame, protocol: dict[str, Any], seed: int) -> pd.Series:
    """The fold index of every clip (a Series aligned with ``manifest_df``); fold k's clips are tested in round k.

    ``losgo`` (leave-one-subject-group-out) and ``kfold``: subjects sorted by :func:`subject_key` are dealt
    round-robin into ``groups`` groups, so subject i (0-based in that order) is in group ``i % groups`` and
    group sizes differ by at most one. There is no shuffle, so ``seed`` does not change these folds; it is
    accepted so every protocol is called the same way. ``fixed``: every clip gets fold -1, the dataset's own
    split decides. Raises ValueError when a subject protocol meets a manifest without subject ids, or with
    fewer subjects than groups (a fold would test nobody).
    """
    spec = resolve(protocol)
    if spec["name"] == "fixed":
        return pd.Series(NO_FOLD, index=manifest_df.index, name="fold", dtype="int64")
    subjects = _subjects(manifest_df)
    if not subjects:
        raise ValueError(f"protocol {spec['name']} splits by subject, but some clips have no subject id; "
                         f"use protocol 'fixed' for a dataset without subjects")
    groups = spec["groups"]
    if len(subjects) < groups:
        raise ValueError(f"protocol {spec['name']} with {groups} groups needs at least {groups} subjects; "
                         f"the manifest has {len(subjects)} ({', '.join(subjects)})")
    group_of = {subject: index % groups for index, subject in enumerate(subjects)}
    return manifest_df["subject"].astype(str).map(group_of).astype("int64").rename("fold")


def assign_shards(manifest_df: pd.DataFrame, shard_size: int, subjects_per_shard: int = 1) -> pd.Series:
    """The feature-store shard of every clip, so that parallel jobs never write the same store.

    With subject ids, one shard per subject: ``subject01``, ``subject11`` (non-integer ids are used as
    they are, ``subjectP001``); with ``subjects_per_shard`` > 1, runs of that many subjects in
    :func:`subject_key` order, named by their first and last: ``subjects01-05`` (fewer, longer jobs: each
    detections job starts torch and MTCNN once). A subject never spans two shards. Without subject ids,
    consecutive runs of ``shard_size`` clips in manifest order: ``part000``, ``part001``, ...
    """
    if shard_size < 1 or subjects_per_shard < 1:
        raise ValueError(f"shard_size and subjects_per_shard must be >= 1, got {shard_size} and {subjects_per_shard}")
    subjects = _subjects(manifest_df)
    if subjects:
        def name(subject: str) -> str:
            return f"{int(subject):02d}" if _INTEGER.fullmatch(subject) else subject
        if subjects_per_shard == 1:
            shard_of = {s: f"subject{name(s)}" for s in subjects}
        else:
            runs = [subjects[i:i + subjects_per_shard] for i in range(0, len(subjects), subjects_per_shard)]
            shard_of = {s: f"subjects{name(run[0])}-{name(run[-1])}" for run in runs for s in run}
        return manifest_df["subject"].astype(str).map(shard_of).rename("shard")
    parts = [f"part{position // shard_size:03d}" for position in range(len(manifest_df))]
    return pd.Series(parts, index=manifest_df.index, name="shard", dtype="str")


def folds(manifest_df: pd.DataFrame) -> list[tuple[int, list[str], list[str]]]:
    """The rounds of a subject protocol: ``(fold, train_subjects, test_subjects)`` for each fold, in order.

    Round k tests the subjects of fold k and trains on every other subject; over all rounds each subject is
    tested exactly once (the paper averages the five rounds' accuracies). Raises ValueError when the manifest
    has no fold >= 0 (protocol ``fixed``) or when one subject's clips sit in two folds.
    """
    assigned = manifest_df[manifest_df["fold"] != NO_FOLD]
    if assigned.empty:
        raise ValueError("the manifest has no subject folds (protocol 'fixed'?): its split comes from the dataset")
    fold_count = assigned.groupby(assigned["subject"].astype(str))["fold"].nunique()
    split = sorted(fold_count[fold_count > 1].index, key=subject_key)
    if split:
        raise ValueError(f"subjects {', '.join(split)} have clips in more than one fold; "
                         f"a subject-independent split keeps each subject in one fold")
    fold_of = assigned.groupby(assigned["subject"].astype(str))["fold"].first()
    subjects = sorted(fold_of.index, key=subject_key)
    rounds = []
    for fold in sorted(int(f) for f in fold_of.unique()):
        test = [s for s in subjects if fold_of[s] == fold]
        train = [s for s in subjects if fold_of[s] != fold]
        rounds.append((fold, train, test))
    return rounds


def carve_validation(train_subjects: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split a round's training subjects into ``(train, val)``, whole subjects on each side.

    The paper names no validation set. Taking it from the training subjects only keeps model selection and
    early stopping away from the tested group, and taking whole subjects keeps it subject-independent.
    ``round(fraction * n)`` subjects are drawn with ``numpy.random.default_rng(seed)`` from the sorted
    subjects (so the input order does not matter), at least one on each side when there are two or more
    subjects and ``fraction > 0``; ``fraction == 0`` gives no validation subjects. Both lists come back sorted.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    subjects = sorted({str(s) for s in train_subjects}, key=subject_key)
    n_val = math.floor(fraction * len(subjects) + 0.5)
    if fraction > 0 and len(subjects) >= 2:
        n_val = min(max(n_val, 1), len(subjects) - 1)
    elif len(subjects) < 2:
        n_val = 0
    drawn = set(np.random.default_rng(seed).permutation(len(subjects))[:n_val].tolist())
    val = [s for i, s in enumerate(subjects) if i in drawn]
    train = [s for i, s in enumerate(subjects) if i not in drawn]
    return train, val


def units(manifest_df: pd.DataFrame) -> pd.Series:
    """The unit of independence of every clip: its subject, or the clip id where the dataset has no subject
    ids (AFEW). Splits keep each unit on one side."""
    subject = manifest_df["subject"].astype(str).str.strip()
    return subject.where(subject != "", manifest_df["clip_id"].astype(str)).rename("unit")


def rounds(manifest_df: pd.DataFrame) -> list[int]:
    """The rounds a study runs: one per subject fold, or the single round 0 of a dataset's fixed split."""
    assigned = sorted(int(f) for f in manifest_df["fold"].unique() if int(f) != NO_FOLD)
    return assigned or [0]


def _fixed_round(manifest_df: pd.DataFrame) -> tuple[list[str], list[str] | None, list[str]]:
    """Training, validation and test units of a fixed split, from the manifest's ``split`` column.

    A dataset of three partitions (FER2013's Training / PublicTest / PrivateTest) tests ``test`` and
    validates on ``val``; one of two (AFEW's Train / Val, whose Test labels are withheld) tests ``val`` and
    leaves validation to be carved from ``train`` (None)."""
    partition = manifest_df["split"].astype(str) if "split" in manifest_df.columns else pd.Series(dtype=str)
    if not {FIXED_TRAIN, FIXED_TEST} <= set(partition):
        raise ValueError(f"protocol 'fixed' trains on the '{FIXED_TRAIN}' partition and tests the '{FIXED_TEST}' "
                         f"one, but the manifest's split column holds {sorted(set(partition))}: this dataset's "
                         f"adapter records no partition; use a subject protocol (losgo, kfold)")
    unit = units(manifest_df)

    def of(name: str) -> list[str]:
        return sorted(set(unit[partition == name]), key=subject_key)

    if FIXED_HELD_OUT in set(partition):
        return of(FIXED_TRAIN), of(FIXED_TEST), of(FIXED_HELD_OUT)
    return of(FIXED_TRAIN), None, of(FIXED_TEST)


def repeat_folds(manifest_df: pd.DataFrame, repeat: int, seed: int) -> pd.Series:
    """The fold of every clip in repeat ``repeat`` of a subject protocol (a Series aligned with
    ``manifest_df``).

    Repeat 0 is the manifest's own ``fold`` column (:func:`assign_folds`: sorted subjects dealt
    round-robin). Repeat r > 0 deals the same subjects into the same number of groups after shuffling them
    with ``numpy.random.default_rng([seed, r])``: another partition, as the STC-NLSTM paper repeats CK+'s
    10-fold cross-validation 4 times (40 trials) and Oulu-CASIA's and MMI's as well. Each repeat is still
    subject-independent: a subject's clips share one fold."""
    if repeat == 0:
        return manifest_df["fold"]
    if repeat < 0:
        raise ValueError(f"repeat must be >= 0, got {repeat}")
    assigned = manifest_df["fold"] != NO_FOLD
    if not assigned.any():
        raise ValueError("a fixed split has no repeats: its partition comes from the dataset")
    groups = int(manifest_df.loc[assigned, "fold"].nunique())
    subjects = _subjects(manifest_df[assigned])
    order = np.random.default_rng([seed, repeat]).permutation(len(subjects))
    group_of = {subjects[i]: position % groups for position, i in enumerate(order)}
    folds_ = manifest_df["subject"].astype(str).map(group_of)
    return folds_.where(assigned, NO_FOLD).astype("int64").rename("fold")


def fold_split(manifest_df: pd.DataFrame, fold: int, val_fraction: float, seed: int,
               repeat: int = 0) -> dict[str, list[str]]:
    """Units (:func:`units`) of one round: ``train``, ``val`` (carved from the training units with
    :func:`carve_validation`, seed ``seed + fold``, plus ``1000 * repeat``) and ``test``.

    Subject protocols: round ``fold`` of repeat ``repeat`` (:func:`repeat_folds`) tests that fold's subjects.
    ``fixed``: round 0 trains on the ``train`` partition; with a ``test`` partition it tests that and
    validates on ``val``, otherwise it tests ``val`` and carves validation from ``train``. Raises ValueError
    for a round the manifest does not have, and AssertionError if a unit would be on both sides (the
    promise, checked where it is used).
    """
    val = None
    if (manifest_df["fold"] == NO_FOLD).all():
        if fold != 0 or repeat != 0:
            raise ValueError(f"fold {fold}, repeat {repeat}: a fixed split has the single round 0")
        train, val, test = _fixed_round(manifest_df)
    else:
        by_fold = {f: (train, test)
                   for f, train, test in folds(manifest_df.assign(fold=repeat_folds(manifest_df, repeat, seed)))}
        if fold not in by_fold:
            raise ValueError(f"fold {fold} is not among the manifest's folds {sorted(by_fold)}")
        train, test = by_fold[fold]
    if val is None:
        train, val = carve_validation(train, val_fraction, seed + fold + 1000 * repeat)
    overlap = (set(test) & (set(train) | set(val))) | (set(train) & set(val))
    if overlap:
        raise AssertionError(f"fold {fold}: units {sorted(overlap, key=subject_key)[:10]} in two of train, val and test")
    return {"train": train, "val": val, "test": test}
