"""Classifiers on frozen embeddings (``classifier/`` group): one module per family, one registry.

Every choice has the interface of ``base.Classifier`` (fit on train with its hyper-parameter
chosen on validation, predict_proba, refit, describe, warnings, amplification), so a drift run
and a mitigation never ask which family they hold. ``fitted`` is a team's own classifier, fitted
before the run: its fit only checks it, its refit fits a clone (``fitted.py``).
``conf/classifier/`` lists the same names; each YAML holds its family's settings, given to the
family's constructor by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .base import DEGENERATE_DIMS, SELECT_BY, Classifier, degenerate_dimensions
from .fitted import Fitted
from .knn import Knn
from .linear_svm import LinearSvm
from .logreg import Logreg
from .mlp import Mlp

CLASSIFIERS: dict[str, type[Classifier]] = {
    "logreg": Logreg,  # the paper's (B.3), C chosen on validation
    "paper_c1": Logreg,  # the paper's with its fixed C = 1
    "logreg_raw": Logreg,  # logreg with standardize: false
    "linear_svm": LinearSvm,
    "mlp": Mlp,
    "knn": Knn,
    "fitted": Fitted,  # a team's own, fitted before the run: loaded from classifier.path, frozen
}

__all__ = [
    "CLASSIFIERS",
    "DEGENERATE_DIMS",
    "SELECT_BY",
    "Classifier",
    "degenerate_dimensions",
    "fit_classifier",
    "make_classifier",
]


def make_classifier(settings: Mapping, seed: int) -> Classifier:
    """The ``classifier/`` group's choice, unfitted, its settings checked (cheap: before any
    model loads). ``settings``: the group's config (``name`` plus the family's keywords)."""
    settings = dict(settings)
    name = settings.pop("name")
    if name not in CLASSIFIERS:
        raise ValueError(f"classifier={name!r}; accepted: {', '.join(CLASSIFIERS)}")
    return CLASSIFIERS[name](**settings, seed=seed)


def fit_classifier(
    z_train: np.ndarray,
    y_train: np.ndarray,
    z_val: np.ndarray,
    y_val: np.ndarray,
    *,
    c_grid: Sequence[float],
    max_iter: int,
    degenerate_dims: str,
    degenerate_rel_std: float,
    select_by: str,
    seed: int,
) -> Logreg:
    """The paper's classifier (B.3): standardised logistic regression, C chosen on validation
    (the highest ROC-AUC, ``select_by='auc'``, or the lowest log-loss; ties to the smaller C).
    The settings are conf/classifier/logreg.yaml's, given by name."""
    clf = Logreg(
        c_grid=c_grid,
        select_by=select_by,
        max_iter=max_iter,
        degenerate_dims=degenerate_dims,
        degenerate_rel_std=degenerate_rel_std,
        standardize=True,
        seed=seed,
    )
    return clf.fit(z_train, y_train, z_val, y_val)
