"""``classifier=linear_svm``: a linear SVM on standardised features, its margins turned into
probabilities by scikit-learn's CalibratedClassifierCV (Platt's sigmoid per fold, averaged)."""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

from .base import Classifier

CALIBRATION_FOLDS = 5  # CalibratedClassifierCV's default


class LinearSvm(Classifier):
    """LinearSVC (balanced class weights, C chosen on validation) inside CalibratedClassifierCV
    with scikit-learn's 5 stratified folds (fewer where a class has fewer texts, as in a retrain
    on a few labelled texts)."""

    PARAM, LABEL = "c", "C"

    def __init__(
        self,
        *,
        c_grid: Sequence[float],
        select_by: str,
        max_iter: int,
        degenerate_dims: str,
        degenerate_rel_std: float,
        standardize: bool,
        seed: int,
    ):
        scaling = {"enabled": standardize, "mode": degenerate_dims, "rel_std": degenerate_rel_std}
        super().__init__(grid=c_grid, select_by=select_by, seed=seed, scaling=scaling)
        self.max_iter = max_iter

    def _settings(self) -> dict:
        return {
            "select_by": self.select_by,
            "max_iter": self.max_iter,
            "degenerate_dims": self.scaling["mode"],
            "degenerate_rel_std": self.scaling["rel_std"],
            "standardize": self.scaling["enabled"],
        }

    def _estimator(self, c: float, n_train: int):
        svm = LinearSVC(
            C=c, class_weight="balanced", max_iter=self.max_iter, random_state=self.seed
        )
        return _Calibrated(svm, CALIBRATION_FOLDS)


class _Calibrated:
    """CalibratedClassifierCV with as many folds as the smaller class allows (at least 2)."""

    def __init__(self, svm: LinearSVC, folds: int):
        self.svm, self.folds = svm, folds

    def fit(self, x, y):
        folds = max(2, min(self.folds, int(min((y == 0).sum(), (y == 1).sum()))))
        self.model = CalibratedClassifierCV(
            self.svm, method="sigmoid", cv=StratifiedKFold(folds)
        ).fit(x, y)
        return self

    def predict_proba(self, x):
        return self.model.predict_proba(x)
