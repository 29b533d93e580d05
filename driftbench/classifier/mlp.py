"""``classifier=mlp``: scikit-learn's MLPClassifier on standardised features, with early stopping
on a share of the training split; its L2 strength ``alpha`` is chosen on validation."""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.neural_network import MLPClassifier

from .base import Classifier


class Mlp(Classifier):
    """ReLU MLP (adam) with ``hidden_layer_sizes``; early stopping holds out
    ``validation_fraction`` of the training texts (at least 2, so both classes are there when a
    retrain fits on a few labelled texts)."""

    PARAM, LABEL, TIES = "alpha", "alpha", -1

    def __init__(
        self,
        *,
        alpha_grid: Sequence[float],
        select_by: str,
        hidden_layer_sizes: Sequence[int],
        max_iter: int,
        validation_fraction: float,
        degenerate_dims: str,
        degenerate_rel_std: float,
        standardize: bool,
        seed: int,
    ):
        scaling = {"enabled": standardize, "mode": degenerate_dims, "rel_std": degenerate_rel_std}
        super().__init__(grid=alpha_grid, select_by=select_by, seed=seed, scaling=scaling)
        self.hidden_layer_sizes = [int(h) for h in hidden_layer_sizes]
        self.max_iter, self.validation_fraction = max_iter, validation_fraction

    def _settings(self) -> dict:
        return {
            "select_by": self.select_by,
            "hidden_layer_sizes": self.hidden_layer_sizes,
            "max_iter": self.max_iter,
            "validation_fraction": self.validation_fraction,
            "degenerate_dims": self.scaling["mode"],
            "degenerate_rel_std": self.scaling["rel_std"],
            "standardize": self.scaling["enabled"],
        }

    def _estimator(self, alpha: float, n_train: int) -> MLPClassifier:
        return MLPClassifier(
            hidden_layer_sizes=tuple(self.hidden_layer_sizes),
            alpha=alpha,
            early_stopping=True,
            validation_fraction=max(self.validation_fraction, 2.0 / n_train),
            max_iter=self.max_iter,
            random_state=self.seed,
        )
