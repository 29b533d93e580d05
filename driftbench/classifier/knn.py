"""``classifier=knn``: k nearest training embeddings by cosine distance; the probability of the
toxic class is the share of toxic neighbours. No standardisation: cosine reads the raw
embedding's direction, which is what the drift operators turn."""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.neighbors import KNeighborsClassifier

from .base import Classifier


class Knn(Classifier):
    """k chosen on validation (ties to the larger, smoother k). A refit on fewer texts than k
    (a retrain on a few labelled texts) takes all of them as neighbours."""

    PARAM, LABEL, TIES, SCALED = "k", "k", -1, False

    def __init__(self, *, k_grid: Sequence[int], select_by: str, seed: int):
        super().__init__(grid=[int(k) for k in k_grid], select_by=select_by, seed=seed, scaling={})

    def _settings(self) -> dict:
        return {"select_by": self.select_by}

    def check_train_size(self, n_train: int) -> None:
        if max(self.grid) > n_train:
            raise ValueError(
                f"classifier.k_grid={self.grid}; accepted: k of at most the {n_train} "
                "training texts"
            )

    def _estimator(self, k: int, n_train: int) -> KNeighborsClassifier:
        return KNeighborsClassifier(n_neighbors=min(k, n_train), metric="cosine", algorithm="brute")
