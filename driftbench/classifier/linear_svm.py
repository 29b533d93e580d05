"""``classifier=linear_svm``: a linear SVM on standardised features, its margins turned into
probabilities by scikit-learn's CalibratedClassifierCV (Platt's sigmoid per fold, averaged)."""

from __future__ import annotations

from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

from .base import ScaledCGrid

CALIBRATION_FOLDS = 5  # CalibratedClassifierCV's default


class LinearSvm(ScaledCGrid):
    """LinearSVC (balanced class weights, C chosen on validation) inside CalibratedClassifierCV
    with scikit-learn's 5 stratified folds (fewer where a class has fewer texts, as in a retrain
    on a few labelled texts)."""

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
