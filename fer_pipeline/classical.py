"""Feature aggregation, linear SVMs and score fusion: the classical half of Xu et al.'s pipeline.

Xu, Ma, Dong, Bai, "Video-based Emotion Recognition using Aggregated Features and Spatio-temporal
Information" (EmotiW 2017), sections II-C and II-D:

- every frame feature is normalised by the signed square root and the L2 norm (:func:`ssr_l2`);
- a video is the mean and the variance of its frames' normalised features, concatenated
  (:func:`mean_var_pool`; with VGG-Face fc6 (4096) and ResNet-10 fc1 (512): 2 x 4608 = 9216 values);
- a one-vs-rest linear SVM classifies the video (:func:`fit_linear_svm`); its calibrated class
  probabilities are what the fusion weighs. Optionally (``standardise``; not in the paper) every dimension
  is first standardised with the training rows' mean and deviation: after SSR+L2 the variance half of a
  video vector is orders of magnitude smaller than the mean half, and a linear SVM with one C would all
  but ignore it;
- the final score is a weighted sum of the class probabilities of three classifiers, 0.5 / 0.25 / 0.25 in
  the paper (:func:`fuse`), or weights chosen on held-out training data (:func:`search_weights`).

The paper picks neither the SVM's C nor how its weights were found ("we assign a proper weight to each of
them", and later "the random search may assign high weights to the over-fitted models"). Here C is chosen by
cross-validation over groups of the training data only (whole subjects, so a subject never scores a C it
was fitted with), and the fusion weights are either the paper's or a grid search on validation subjects
that no classifier was fitted on. Test data reach neither: the callers (fer_pipeline.studies.fusion) pass
training rows to the SVM and validation rows to the search, and the tests check it.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

log = logging.getLogger(__name__)


def l2_normalise(features: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Each row divided by its L2 norm (at least ``eps``, so an all-zero row stays zero); float64."""
    x = np.asarray(features, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def ssr_l2(features: np.ndarray) -> np.ndarray:
    """Signed square root, then L2 normalisation, of each row (one frame's feature)::

        s = sign(x) * sqrt(|x|),   ssr_l2(x) = s / ||s||_2

    An all-zero row stays zero. Works on (D,) or (N, D) arrays; computed in float64.
    """
    x = np.asarray(features, np.float64)
    return l2_normalise(np.sign(x) * np.sqrt(np.abs(x)))


def mean_var_pool(frames: np.ndarray) -> np.ndarray:
    """A video's frame features (T, D) as one vector (2D,): the mean over frames, then the (population,
    ddof 0) variance over frames, per dimension. A one-frame video has zero variance."""
    frames = np.asarray(frames, np.float64)
    if frames.ndim != 2 or len(frames) == 0:
        raise ValueError(f"mean/var pooling needs a (frames, dims) array with at least one frame, got {frames.shape}")
    return np.concatenate([frames.mean(axis=0), frames.var(axis=0)])


def aggregate(frames: np.ndarray) -> np.ndarray:
    """The paper's video descriptor of one network's frame features: mean and variance of SSR+L2 frames."""
    return mean_var_pool(ssr_l2(frames))


@dataclass
class LinearSVM:
    """A fitted one-vs-rest linear SVM with calibrated probabilities, and how its C was chosen."""

    model: CalibratedClassifierCV
    n_classes: int
    C: float
    cv_accuracy: dict[float, float] = field(default_factory=dict)  # mean accuracy over the group folds, per C
    n_splits: int = 0

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """(N, n_classes) probabilities, columns in class-index order (0 for a class absent from training)."""
        out = np.zeros((len(features), self.n_classes))
        out[:, self.model.classes_] = self.model.predict_proba(features)
        return out


def _svm(C: float, standardise: bool, seed: int) -> Pipeline:
    """liblinear's multi-class linear SVM, which is one-vs-rest: one binary SVM per class."""
    svm = LinearSVC(C=C, dual="auto", max_iter=20000, random_state=seed)
    return make_pipeline(StandardScaler(), svm) if standardise else make_pipeline(svm)


def group_splits(labels: np.ndarray, groups: Sequence[str], n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """GroupKFold splits of the training rows: every group (subject) wholly on one side, at most
    ``n_splits`` folds (fewer when there are fewer groups). Raises ValueError for fewer than two groups."""
    n_groups = len(set(groups))
    if n_groups < 2:
        raise ValueError(f"choosing C by cross-validation over groups needs two groups, got {n_groups}")
    folds = GroupKFold(n_splits=min(n_splits, n_groups))
    return list(folds.split(np.zeros(len(labels)), labels, groups))


def fit_linear_svm(features: np.ndarray, labels: np.ndarray, groups: Sequence[str], n_classes: int,
                   C_grid: Sequence[float], cv_folds: int, calibration: str = "sigmoid", standardise: bool = True,
                   seed: int = 0) -> LinearSVM:
    """Fit the paper's one-vs-rest linear SVM on training rows only.

    ``labels`` are class indices in ``range(n_classes)``; ``groups`` the unit of each row (its subject).
    C is the value of ``C_grid`` with the best mean accuracy over GroupKFold folds of these rows (ties: the
    smaller C, the stronger regularisation); then the SVM with that C is refitted on all rows, and its
    one-vs-rest decision values are calibrated (``sigmoid``: Platt; ``isotonic``) on out-of-fold decisions
    of the same group folds, so the probabilities of a row never come from an SVM that saw it.
    ``standardise``: scale every dimension with the statistics of the rows each SVM is fitted on.
    """
    features, labels = np.asarray(features, np.float64), np.asarray(labels)
    splits = group_splits(labels, groups, cv_folds)
    accuracy: dict[float, float] = {}
    for C in sorted(C_grid):
        correct = 0
        for train_idx, test_idx in splits:
            model = _svm(C, standardise, seed).fit(features[train_idx], labels[train_idx])
            correct += int((model.predict(features[test_idx]) == labels[test_idx]).sum())
        accuracy[float(C)] = correct / len(labels)
    best = max(accuracy, key=lambda c: (accuracy[c], -c))
    calibrated = CalibratedClassifierCV(_svm(best, standardise, seed), method=calibration, cv=splits,
                                        ensemble=False)
    calibrated.fit(features, labels)
    log.info("linear SVM on %d rows x %d dims, %d groups: C=%g (cv accuracy %s)", *features.shape,
             len(set(groups)), best, {c: round(a, 3) for c, a in accuracy.items()})
    return LinearSVM(calibrated, n_classes, best, accuracy, len(splits))


def fuse(probabilities: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """The weighted sum of the classifiers' class probabilities: sum_m w_m * P_m, (N, C)."""
    missing = sorted(set(weights) - set(probabilities))
    if missing:
        raise KeyError(f"no probabilities for {missing}: the fusion weighs {sorted(weights)}")
    return sum(float(w) * np.asarray(probabilities[name], np.float64) for name, w in weights.items())


def weight_grid(names: Sequence[str], step: float) -> list[dict[str, float]]:
    """Every weighting of ``names`` with weights in {0, step, 2 step, ..., 1} that sum to 1."""
    n = round(1 / step)
    if not np.isclose(n * step, 1.0):
        raise ValueError(f"the weight step must divide 1 (0.05, 0.1, 0.25, ...), got {step}")
    return [{name: k / n for name, k in zip(names, combo)}
            for combo in itertools.product(range(n + 1), repeat=len(names)) if sum(combo) == n]


def search_weights(probabilities: Mapping[str, np.ndarray], labels: np.ndarray, step: float,
                   prior: Mapping[str, float]) -> tuple[dict[str, float], float]:
    """The weights on :func:`weight_grid` whose fused prediction is most accurate on ``labels``, and that
    accuracy. Many weightings tie on small data: the one nearest (L1) to ``prior`` (the paper's weights)
    wins, so the search moves away from the paper only for a gain. Call it with validation rows only."""
    names = list(prior)
    labels = np.asarray(labels)
    best: tuple[float, float, dict[str, float]] | None = None
    for weights in weight_grid(names, step):
        accuracy = float((fuse(probabilities, weights).argmax(1) == labels).mean())
        distance = sum(abs(weights[n] - prior[n]) for n in names)
        if best is None or (accuracy, -distance) > (best[0], -best[1]):
            best = (accuracy, distance, weights)
    assert best is not None
    return best[2], best[0]
