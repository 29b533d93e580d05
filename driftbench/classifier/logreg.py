"""The safety classifier of the drift paper, B.3: standardise, then L2 logistic regression
(``classifier=logreg``), and the same without standardisation (``logreg_raw``): the amplification
of drift by 1/std that standardising brings is then gone."""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from driftbench import metrics as M

from .base import ScaledCGrid


class Logreg(ScaledCGrid):
    """Standardiser (``standardize``) + logistic regression with balanced class weights, C chosen
    on validation. Its linear form gives the drift terms of eq. 26-29 (``amplification``)."""

    def _estimator(self, c: float, n_train: int) -> LogisticRegression:
        return LogisticRegression(
            C=c,
            class_weight="balanced",
            max_iter=self.max_iter,
            solver="lbfgs",
            random_state=self.seed,
        )

    def _scores(self, model, x):
        s = model.decision_function(x)
        return s, expit(s)

    def standardize(self, z: np.ndarray) -> np.ndarray:
        """eq. (11) with the training mean and std (the identity under ``standardize=false``)."""
        return self.scaler(z)

    def logits(self, z: np.ndarray) -> np.ndarray:
        """``f(z) = w . z~ + b`` (eq. 26) on standardised features."""
        return self.standardize(z) @ self.w + self.b

    def predict_proba(self, z: np.ndarray) -> np.ndarray:
        return expit(self.logits(z))

    @property
    def w(self) -> np.ndarray:
        return self.model.coef_[0]

    @property
    def b(self) -> float:
        return float(self.model.intercept_[0])

    @property
    def w_raw_norm(self) -> float:
        """Norm of the weights seen by an unstandardised perturbation, ``||w / scale||``: the
        noise std of w . (eps / scale) for eps ~ N(0, sigma^2 I) is this times sigma."""
        return float(np.linalg.norm(self.w / self.scaler.scale))

    def describe(self) -> dict:
        return {
            **super().describe(),
            "w_norm": float(np.linalg.norm(self.w)),
            "w_raw_norm": self.w_raw_norm,
        }

    def amplification(self, z0: np.ndarray, zc: np.ndarray, sigma: float) -> dict:
        """Realized |change| of the standardised features and of the logit, the drifted |logit|,
        and eq. (29)'s SNR with ``||w||`` (the paper's) and with ``||w / scale||``."""
        logits0, logits = self.logits(z0), self.logits(zc)
        return {
            "mean_abs_delta_std_feature": float(
                np.abs(self.standardize(zc) - self.standardize(z0)).mean()
            ),
            "mean_abs_delta_logit": float(np.abs(logits - logits0).mean()),
            "mean_abs_logit": float(np.abs(logits).mean()),
            "snr_eq29": M.snr_eq29(logits0, float(np.linalg.norm(self.w)), sigma),
            "snr_effective": M.snr_eq29(logits0, self.w_raw_norm, sigma),
        }
