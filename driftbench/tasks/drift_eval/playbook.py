"""The upgrade playbook of a drift run (``task.playbook.enabled``; docs/playbook.md): once a
model update has moved the embeddings under a frozen classifier, what each option a team has
recovers of what re-embedding the training set and retraining achieves, and what each costs.
Computed at the run's last checkpoint (the run's largest update: a preset names one update a
run), whose model the source asks to embed the training and validation texts too
(``checkpoints.Reembedding``): any source, so the task never asks which kind it has.

The options, each scored on every test text of that checkpoint:

- ``frozen``: the classifier fitted on M_0, kept as it is (the run's own numbers: a swap reads
  the target through its own ``drift.map``);
- ``original``: that classifier on M_0's embeddings, before the update (a second reference:
  an update that loses information can leave re-embedding below it);
- ``reembed_retrain``: the classifier refitted, its hyper-parameter chosen on validation as at
  checkpoint 0, on M_c's embeddings of the whole training split (the reference; a team's own
  classifier, ``classifier=fitted``: a clone of its estimator);
- ``adapter``: each adapter kind of ``driftbench.adapters`` fitted on N paired training texts
  (M_c's own embeddings, any width, onto M_0's), read by the frozen classifier;
- ``recalibrate`` and ``retrain`` on m labelled texts (the mitigations of those names),
  drawn from the training split as embedded by M_c, so that every option is scored on the
  same test texts.

Cost: the texts M_c embeds besides the test texts (re-embedding: the training and validation
texts, one pass; an adapter: its N pairs; a label option: its m texts), as a share of that pass
and in seconds at the rate M_c was measured at, each fit's seconds and the labels read.
Recovery is ``driftbench.metrics.recovery``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from driftbench import metrics as M
from driftbench import mitigations as MIT
from driftbench.adapters import ADAPTERS, make_adapter
from driftbench.checkpoints import Checkpoint
from driftbench.fileio import atomic_write_csv
from driftbench.fit_cache import fitted_classifier
from driftbench.tasks.drift_eval.summary_playbook import METRICS, playbook_figure

log = logging.getLogger(__name__)
REFERENCES = ("frozen", "original", "reembed_retrain")


@dataclass
class Plan:
    """One run's playbook, its settings resolved against the run's split: N and m capped at
    the training split (``all``: every training text), each once, in increasing order."""

    adapters: list[str]
    rank: int
    pairs: list[int]
    m: list[int]
    train: np.ndarray
    val: np.ndarray
    seed: int

    @property
    def rows(self) -> np.ndarray:
        """The texts the last checkpoint's model embeds for the playbook: train, then val."""
        return np.concatenate([self.train, self.val])


def capped(values, n: int) -> list[int]:
    return sorted({n if v == "all" else min(int(v), n) for v in values})


def plan_of(cfg: DictConfig, split: dict) -> Plan | None:
    """The run's playbook, None when ``task.playbook.enabled`` is false."""
    pb = cfg.task.playbook
    if not pb.enabled:
        return None
    n = len(split["train"])
    return Plan(
        list(pb.adapters),
        pb.rank,
        capped(pb.pairs, n),
        capped(pb.m, n),
        split["train"],
        split["val"],
        cfg.seed,
    )


def check_playbook(cfg: DictConfig, n_train: int) -> None:
    """The settings the schema cannot check alone (driftbench/schema.py ``Playbook`` checks
    each list's shape): adapter kinds, and N against the fewest pairs each kind fits on."""
    pb = cfg.task.playbook
    adapters = list(pb.adapters)
    for kind in adapters:
        if kind not in ADAPTERS:
            raise ValueError(
                f"task.playbook.adapters={adapters}: {kind!r}; accepted: {', '.join(ADAPTERS)}"
            )
    pairs = OmegaConf.to_container(pb.pairs)
    fewest = min(capped(pairs, n_train))
    for kind in adapters:
        least = ADAPTERS[kind].min_pairs
        if fewest < least:
            raise ValueError(
                f"task.playbook.pairs={pairs}: {fewest} pairs (of {n_train} training texts) for "
                f"{kind}; accepted: at least {least}"
            )


@dataclass
class Option:
    """One option's probabilities on every test text and what it cost: ``n`` is its N pairs or
    m labels, ``new_texts`` the texts M_c embeds besides the test texts (None for
    ``original``, which is no option after the update), ``labels`` the fresh labels read."""

    option: str
    p: np.ndarray
    kind: str = ""
    n: int | None = None
    new_texts: int | None = 0
    labels: int = 0
    fit_s: float = 0.0
    about: dict = field(default_factory=dict)


def references(plan: Plan, cfg: DictConfig, ckpt: Checkpoint, clf, z0_test, y) -> list[Option]:
    """The frozen classifier, the original, and re-embedding with retraining (the frozen
    classifier refitted, cached like its fit: the same C selection, on M_c's training and
    validation embeddings; for ``classifier=fitted`` a clone of the team's estimator)."""
    r, n = ckpt.reembedded, len(plan.train)
    retrained, fit = fitted_classifier(
        OmegaConf.to_container(cfg.classifier, resolve=True),
        plan.seed,
        r.rows[:n],
        y[plan.train],
        r.rows[n:],
        y[plan.val],
        cache_dir=cfg.runtime.cache_dir,
        refit_of=clf,
    )
    about = {"selected": retrained.describe()["selected"]}
    return [
        Option("frozen", clf.predict_proba(ckpt.z)),
        Option("original", clf.predict_proba(z0_test), new_texts=None),
        Option(
            "reembed_retrain",
            retrained.predict_proba(r.test),
            new_texts=len(plan.rows),
            fit_s=fit.fit_s,
            about=about,
        ),
    ]


def adapter_options(plan: Plan, ckpt: Checkpoint, clf, z0_train) -> Iterator[Option]:
    """Each adapter at each N: fitted on the first N of one permutation of the training texts
    (a smaller N takes the first of the same texts), M_c's own embeddings onto M_0's."""
    r = ckpt.reembedded
    order = np.random.default_rng([plan.seed, 12]).permutation(len(plan.train))
    rank = min(plan.rank, r.rows.shape[1], z0_train.shape[1])
    for kind in plan.adapters:
        for n in plan.pairs:
            pairs = order[:n]
            t0 = time.perf_counter()
            adapter = make_adapter(kind, rank=rank if kind == "low_rank" else None, seed=plan.seed)
            adapter.fit(r.rows[pairs], z0_train[pairs])
            fit_s = time.perf_counter() - t0
            p = clf.predict_proba(adapter.apply(r.test))
            yield Option("adapter", p, kind, n, n, fit_s=fit_s, about=adapter.describe())


def label_options(plan: Plan, ckpt: Checkpoint, clf, z, y) -> Iterator[Option]:
    """``recalibrate`` (on what the frozen classifier reads) and ``retrain`` (on M_c's own
    embeddings) at each m, both on the same m labelled training texts (both classes in
    proportion)."""
    r, n = ckpt.reembedded, len(plan.train)
    y_train = y[plan.train]
    rng = np.random.default_rng([plan.seed, 11])
    labelled = {m: MIT.labelled_rows(y_train, m, rng) for m in plan.m}
    for name, fix_type, rows, test in (
        ("recalibrate", MIT.Recalibrate, r.rows_read, ckpt.z),
        ("retrain", MIT.Retrain, r.rows, r.test),
    ):
        for m, chosen in labelled.items():
            t0 = time.perf_counter()
            fix = fix_type(m=m, seed=plan.seed)
            fix.fit(clf, z[plan.train], y_train, z[plan.val], y[plan.val])
            predict = fix.at_checkpoint(test, rows[:n][chosen], y_train[chosen])
            fit_s = time.perf_counter() - t0
            yield Option(name, predict(test), n=m, new_texts=m, labels=m, fit_s=fit_s)


def option_rows(options: list[Option], y, tau: float, n_bins: int, plan: Plan, ckpt) -> list:
    """One row per option: its cost, its metrics, their recovery of re-embedding's change
    against the frozen classifier (``metrics.recovery``) and their gap to the original."""
    per_text, one_pass = ckpt.reembedded.seconds_per_text, len(plan.rows)
    rows = []
    for o in options:
        scores = M.checkpoint_metrics(y, o.p, tau, n_bins)
        texts = o.new_texts
        rows.append(
            {
                "option": o.option,
                "kind": o.kind,
                "n": o.n,
                "new_texts": texts,
                "passes": None if texts is None else texts / one_pass,
                "embed_s": None if texts is None else texts * per_text,
                "fit_s": o.fit_s,
                "labels": o.labels,
                **{k: scores[k] for k in (*METRICS, "mean_confidence")},
            }
        )
    ref = {r["option"]: r for r in rows if r["option"] in REFERENCES}
    for r in rows:
        for k in METRICS:
            r[f"recovery_{k}"] = float(
                M.recovery(r[k], ref["frozen"][k], ref["reembed_retrain"][k])
            )
            r[f"gap_{k}"] = r[k] - ref["original"][k]
    return rows


def run_playbook(
    plan: Plan, cfg: DictConfig, ckpt: Checkpoint, clf, z, y, split, run_dir: Path, title: str
) -> dict:
    """The playbook at ``ckpt`` (the run's last checkpoint): ``playbook.csv``, its figure and
    the run's ``playbook`` metrics."""
    te = split["test"]
    options = [
        *references(plan, cfg, ckpt, clf, z[te], y),
        *adapter_options(plan, ckpt, clf, z[plan.train]),
        *label_options(plan, ckpt, clf, z, y),
    ]
    tau, n_bins = cfg.task.tau, cfg.task.ece_bins
    rows = option_rows(options, y[te], tau, n_bins, plan, ckpt)
    atomic_write_csv(run_dir / "playbook.csv", rows)
    update = f"{cfg.drift.name} {ckpt.label}"
    playbook_figure(run_dir / "playbook.png", [rows], f"{title}: upgrade playbook at {ckpt.label}")
    r = ckpt.reembedded
    out = {
        "update": update,
        "checkpoint": ckpt.label,
        "n_train": len(plan.train),
        "n_val": len(plan.val),
        "n_test": len(te),
        "pairs": plan.pairs,
        "m": plan.m,
        "rank": min(plan.rank, r.rows.shape[1], z.shape[1]),
        "widths": [int(r.rows.shape[1]), int(z.shape[1])],
        "seconds_per_text": r.seconds_per_text,
        "embedded_now": r.embedded_now,
        "options": rows,
        "fitted": [{"option": o.option, "kind": o.kind, "n": o.n, **o.about} for o in options],
    }
    log.info("playbook: %s", digest(rows, update))
    return out


def digest(rows: list[dict], update: str) -> str:
    """One log line: the references' AUC, the best adapter at the most pairs and its recovery,
    and what re-embedding costs."""
    ref = {r["option"]: r for r in rows if r["option"] in REFERENCES}
    adapters = [r for r in rows if r["option"] == "adapter"]
    most = max(r["n"] for r in adapters)
    best = max((r for r in adapters if r["n"] == most), key=lambda r: r["roc_auc"])
    re = ref["reembed_retrain"]
    return (
        f"{update}: AUC frozen {ref['frozen']['roc_auc']:.3f}, re-embedded "
        f"{re['roc_auc']:.3f}, original {ref['original']['roc_auc']:.3f}; {best['kind']} on "
        f"{most} pairs {best['roc_auc']:.3f} (recovery {best['recovery_roc_auc']:.2f}); "
        f"re-embedding {re['new_texts']} texts, {re['embed_s']:.1f} s"
    )
