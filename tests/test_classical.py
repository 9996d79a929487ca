"""Feature aggregation, linear SVMs and score fusion (fer_pipeline.classical) against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from fer_pipeline import classical


def test_ssr_l2_by_hand():
    # sign(x) sqrt|x| = (2, -3, 0), whose norm is sqrt(13)
    np.testing.assert_allclose(classical.ssr_l2(np.array([4.0, -9.0, 0.0])),
                               [2 / np.sqrt(13), -3 / np.sqrt(13), 0.0])
    # row by row; an all-zero frame stays zero instead of dividing by zero
    np.testing.assert_allclose(classical.ssr_l2(np.array([[0.25, 0.0], [0.0, 0.0], [-1.0, 1.0]])),
                               [[1.0, 0.0], [0.0, 0.0], [-np.sqrt(0.5), np.sqrt(0.5)]])


def test_l2_normalise_by_hand():
    np.testing.assert_allclose(classical.l2_normalise(np.array([3.0, -4.0])), [0.6, -0.8])


def test_mean_var_pool_by_hand():
    frames = np.array([[1.0, 2.0], [3.0, 6.0]])
    # mean (2, 4); population variance ((1-2)^2 + (3-2)^2) / 2 = 1 and ((2-4)^2 + (6-4)^2) / 2 = 4
    np.testing.assert_allclose(classical.mean_var_pool(frames), [2.0, 4.0, 1.0, 4.0])
    np.testing.assert_allclose(classical.mean_var_pool(np.array([[5.0, -1.0]])), [5.0, -1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="at least one frame"):
        classical.mean_var_pool(np.zeros((0, 3)))


def test_aggregate_is_ssr_l2_then_mean_and_variance():
    frames = np.array([[4.0, 0.0], [0.0, 9.0]])  # SSR+L2: (1, 0) and (0, 1)
    np.testing.assert_allclose(classical.aggregate(frames), [0.5, 0.5, 0.25, 0.25])
    # Xu et al.'s sizes: VGG-Face fc6 (4096) and ResNet-10 fc1 (512) give 2 x 4608 = 9216 values
    rng = np.random.default_rng(0)
    video = np.concatenate([classical.aggregate(rng.normal(size=(7, 4096))),
                            classical.aggregate(rng.normal(size=(7, 512)))])
    assert video.shape == (9216,)


def test_fuse_is_the_weighted_sum_of_probabilities():
    probabilities = {"a": np.array([[0.6, 0.4]]), "b": np.array([[0.2, 0.8]]), "c": np.array([[1.0, 0.0]])}
    np.testing.assert_allclose(classical.fuse(probabilities, {"a": 0.5, "b": 0.25, "c": 0.25}),
                               [[0.6 * 0.5 + 0.2 * 0.25 + 0.25, 0.4 * 0.5 + 0.8 * 0.25]])
    with pytest.raises(KeyError, match="'d'"):
        classical.fuse(probabilities, {"d": 1.0})


def test_weight_grid_lists_every_weighting_that_sums_to_one():
    grid = classical.weight_grid(["a", "b", "c"], 0.5)
    assert sorted(tuple(w.values()) for w in grid) == [(0, 0, 1), (0, 0.5, 0.5), (0, 1, 0), (0.5, 0, 0.5),
                                                        (0.5, 0.5, 0), (1, 0, 0)]
    assert len(classical.weight_grid(["a", "b", "c"], 0.05)) == 231  # C(20 + 2, 2)
    with pytest.raises(ValueError, match="divide 1"):
        classical.weight_grid(["a", "b"], 0.3)


def test_search_weights_finds_the_accurate_weighting_and_prefers_the_prior_on_ties():
    labels = np.array([0, 1, 0, 1])
    good = np.eye(2)[labels] * 0.6 + 0.2        # right on every clip
    bad = np.eye(2)[1 - labels] * 0.6 + 0.2     # wrong on every clip
    prior = {"a": 0.5, "b": 0.25, "c": 0.25}
    weights, accuracy = classical.search_weights({"a": bad, "b": good, "c": bad}, labels, 0.25, prior)
    assert accuracy == 1.0 and weights["b"] > weights["a"] + weights["c"]
    # of the perfect weightings, the nearest to the prior: b must outweigh a + c, so b = 0.75
    assert weights == {"a": 0.25, "b": 0.75, "c": 0.0} or weights == {"a": 0.0, "b": 0.75, "c": 0.25}
    # when every weighting scores the same, the prior itself is kept
    same = {"a": good, "b": good, "c": good}
    assert classical.search_weights(same, labels, 0.25, prior) == (prior, 1.0)


def blobs(n_groups=6, per_group=12, classes=3, dims=5, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(classes), n_groups * per_group // classes)
    centres = rng.normal(size=(classes, dims)) * 3
    features = centres[labels] + rng.normal(size=(len(labels), dims))
    groups = np.repeat([f"s{g}" for g in range(n_groups)], per_group)
    return features, labels, groups


def test_linear_svm_picks_c_by_group_cross_validation_and_calibrates():
    features, labels, groups = blobs()
    svm = classical.fit_linear_svm(features, labels, groups, 4, [0.01, 1.0, 100.0], cv_folds=3, seed=0)
    assert svm.C in (0.01, 1.0, 100.0) and set(svm.cv_accuracy) == {0.01, 1.0, 100.0}
    assert svm.cv_accuracy[svm.C] == max(svm.cv_accuracy.values()) and svm.n_splits == 3
    test, test_labels, _ = blobs(seed=0)
    probabilities = svm.predict_proba(test)
    assert probabilities.shape == (len(test), 4)  # a fourth class absent from training gets probability 0
    np.testing.assert_allclose(probabilities.sum(1), 1.0)
    assert (probabilities[:, 3] == 0).all()
    assert (probabilities.argmax(1) == test_labels).mean() > 0.9


def test_group_splits_keep_every_group_on_one_side():
    _, labels, groups = blobs(n_groups=4)
    splits = classical.group_splits(labels, groups, n_splits=10)
    assert len(splits) == 4  # no more folds than groups
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
    with pytest.raises(ValueError, match="two groups"):
        classical.group_splits(labels, ["one"] * len(labels), 5)
