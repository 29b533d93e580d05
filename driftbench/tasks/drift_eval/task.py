"""Task ``drift_eval``: the study of the drift paper, wired end to end.

data -> embeddings (cached) -> classifier on checkpoint 0 (``classifier/``, frozen) -> drifted
test sets on the sigma schedule -> B.4 metrics, flips and the coherent share of the move against
the undrifted texts, realized drift and (for a linear classifier) amplification per checkpoint
-> figures; a mitigation (``mitigation/``) scored against the frozen classifier on the same
texts; label-free monitors on windows of every checkpoint, scored against the collapse
(monitors.py); with ``task.playbook.enabled``, the upgrade playbook at the last checkpoint
(playbook.py).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from driftbench import drift as drift_ops
from driftbench import metrics as M
from driftbench import mitigations as MIT
from driftbench import plots
from driftbench.backends import get_backend
from driftbench.classifier import make_classifier
from driftbench.data import (
    LabelRule,
    ToxicityData,
    check_data_file,
    check_sample_size,
    content_sha256,
    load_toxicity,
    resolve_data_path,
)
from driftbench.embed import POOLINGS, cached_embeddings, chunk_tokens
from driftbench.fileio import atomic_write_csv
from driftbench.fit_cache import fitted_classifier
from driftbench.intervals import bootstrap_intervals, interval_columns
from driftbench.models import (
    ModelSpec,
    check_spec,
    model_identity,
    model_shape,
    num_hidden_layers,
)
from driftbench.tasks.drift_eval.monitoring import (
    Monitoring,
    check_monitoring,
    monitor_digest,
    monitor_names,
)
from driftbench.tasks.drift_eval.playbook import check_playbook, plan_of, run_playbook
from driftbench.tasks.drift_eval.updates import check_update, make_source, update_of
from driftbench.updates import UPDATES, is_update

log = logging.getLogger(__name__)
AUC_CHANCE_BAND = 0.55  # the failure-cliff sigma is the first sigma with AUC below this

# What decides a result (driftbench.runs.result_key): the config groups this task reads (it is
# handed these alone), the input files of ``inputs``, and this version, bumped with any change
# to the code that alters a number the task writes.
CONFIG_GROUPS = (
    "task",
    "model",
    "data",
    "embed",
    "drift",
    "schedule",
    "classifier",
    "mitigation",
    "monitor",
    "backend",
)
# 2: monitors; 3: classifiers, mitigations; 4: noise_augment re-chooses; 5: monitors on all
# windows at once (C2ST fitted by Newton, one MMD permutation draw per checkpoint, 50 windows);
# 6: real-update twins searched to a relative 1e-3 of the angle, the frozen numbers recorded;
# 7: monitors draw one random stream per pool (run on workers), an undrifted checkpoint reuses
# the undrifted windows' outcomes; 8: every checkpoint metric with its bootstrap interval
# 9: flips against checkpoint 0 and the coherent share (twins' too); monitor thresholds from a
# calibration pool disjoint from the evaluation pool (windows of 100), the collapse by named
# criteria (ROC-AUC, balanced accuracy, ECE, SFR)
RESULTS_VERSION = 9
# ~60% of a cached job (bench/sweep.py); the sweep report draws the sweep's own figures
FIGURES_IN_SWEEPS = False
# separability of a run's training split by its fit key (which covers the training bytes), for
# the other runs of a sweep in this process: every drift type of a seed reads the same
_SEPARABILITY: dict[str, dict] = {}


def inputs(cfg: DictConfig) -> dict:
    """Digests of what the run reads besides its config: the data file, the model's weights, an
    update's files and the classifier's (``classifier=fitted``: the team's estimator)."""
    spec = ModelSpec.from_dict(cfg.model)
    update = update_of(cfg)
    return {
        "data": content_sha256(resolve_data_path(cfg.data.path, cfg.runtime.data_dir)),
        "model": model_identity(spec, Path(cfg.runtime.cache_dir).expanduser()),
        **({} if update is None else update.inputs()),
        **classifier_of(cfg).inputs(),
    }


def schedule_of(cfg: DictConfig) -> np.ndarray:
    s = cfg.schedule
    sigmas = OmegaConf.to_container(s.sigmas) if s.get("sigmas") is not None else None
    return drift_ops.sigma_schedule(s.get("sigma_min"), s.get("sigma_max"), s.get("k"), sigmas)


def checked_data(cfg: DictConfig) -> ToxicityData:
    """The run's sample, every data check passed: the sample size against the split (before
    the file is read), the file's suffix and bytes, its columns, labels and splits."""
    if cfg.data.split_column is None:
        check_sample_size(cfg.data.n_samples, tuple(cfg.data.split), cfg.data.balance)
    check_data_file(resolve_data_path(cfg.data.path, cfg.runtime.data_dir))
    return load_data(cfg)  # parsed once; the run reuses it


def classifier_of(cfg: DictConfig):
    return make_classifier(OmegaConf.to_container(cfg.classifier, resolve=True), cfg.seed)


def mitigation_of(cfg: DictConfig) -> MIT.Mitigation:
    settings = OmegaConf.to_container(cfg.mitigation, resolve=True)
    return MIT.make_mitigation(settings, cfg.seed)


def validate(cfg: DictConfig) -> None:
    """The checks that need more than one field (driftbench/schema.py checks each field's type
    and range before this): registry names, the schedule, the sample size, the classifier's and
    the mitigation's settings against the splits, the model's files and layer count, the data
    file and the sample it gives, whose split sizes the classifier, mitigation, update,
    playbook and monitors are checked against. Runs before any heavy work."""
    if cfg.drift.name not in drift_ops.DRIFTS and not is_update(cfg.drift.name):
        accepted = [*drift_ops.DRIFTS, *UPDATES]
        raise ValueError(f"drift={cfg.drift.name!r}; accepted: {', '.join(accepted)}")
    schedule_of(cfg)
    if cfg.embed.pooling not in POOLINGS:
        raise ValueError(f"embed.pooling={cfg.embed.pooling!r}; accepted: {', '.join(POOLINGS)}")
    get_backend(cfg.backend.name).check_embed_layer(cfg.embed.layer)
    classifier, mitigation = classifier_of(cfg), mitigation_of(cfg)
    sizes = {name: len(idx) for name, idx in checked_data(cfg).split.items()}
    classifier.check_train_size(sizes["train"])
    mitigation.check(sizes["test"], sizes["train"])
    check_update(cfg, sizes["train"], mitigation.anchors)
    check_playbook(cfg, sizes["train"])
    check_monitoring(cfg, sizes["test"])
    spec = ModelSpec.from_dict(cfg.model)
    check_spec(spec)
    check_classifier_width(cfg, classifier, spec)
    layer = cfg.embed.layer
    if layer != -1:
        n = num_hidden_layers(spec, Path(cfg.runtime.cache_dir).expanduser())
        if n is not None and not -(n + 1) <= layer <= n:
            raise ValueError(
                f"embed.layer={layer}; accepted for {spec.name} ({n} blocks): -{n + 1}..{n}"
            )


def check_classifier_width(cfg: DictConfig, classifier, spec: ModelSpec) -> None:
    """A classifier fitted before the run (``n_features_in``) against the model's width, known
    before anything is embedded (its config; ``embed.layer`` and the pooling keep it); checked
    again on the embeddings (``Classifier.fit``), where the config does not say it."""
    if classifier.n_features_in is None:
        return
    shape = model_shape(spec, Path(cfg.runtime.cache_dir).expanduser())
    if shape is not None and shape.get("hidden_size"):
        classifier.check_width(shape["hidden_size"], f"the embeddings of {spec.name}")


def calibration_checkpoints(cfg: DictConfig, k: int) -> list[int]:
    chosen = cfg.task.get("calibration_checkpoints")
    if chosen is None:  # the start, a quarter, half and the end: the paper's 0, 2, 4, 7 at K = 8
        return sorted({int(np.floor(f * (k - 1) + 0.5)) for f in (0, 0.25, 0.5, 1)})
    bad = [c for c in chosen if not 0 <= int(c) < k]
    if bad:
        raise ValueError(
            f"task.calibration_checkpoints={list(chosen)}: indices must be in 0..{k - 1}"
        )
    return [int(c) for c in chosen]


def load_data(cfg: DictConfig) -> ToxicityData:
    """The run's sample of the ``data/`` group, drawn and split with ``data.seed``: a
    data seed is one draw of texts and split, the run ``seed`` one draw of drift and fits, so a
    sweep can vary either and the report averages over both (``report.REPLICATES``)."""
    return load_toxicity(
        resolve_data_path(cfg.data.path, cfg.runtime.data_dir),
        text_column=cfg.data.text_column,
        label_column=cfg.data.label_column,
        threshold=cfg.data.threshold,
        n_samples=cfg.data.n_samples,
        split=tuple(cfg.data.split),
        sample_seed=cfg.data.seed,
        split_seed=cfg.data.seed,
        rule=LabelRule(
            tuple(cfg.data.get("positive_labels") or ()),
            tuple(cfg.data.get("negative_labels") or ()),
        ),
        bad_labels=cfg.data.bad_labels,
        balance=cfg.data.balance,
        split_column=cfg.data.split_column,
    )


def embed_data(cfg: DictConfig, data, cache_dir: str | Path | None = None):
    """(embeddings as the model gives them, about them) of every text of ``data``, from the
    embedding cache (``cache_dir``, default the run's) or computed now and cached. The one call
    the task and the benchmarks share, so they embed the same way."""
    spec = ModelSpec.from_dict(cfg.model)
    return cached_embeddings(
        spec,
        data.texts,
        pooling=cfg.embed.pooling,
        max_length=cfg.embed.max_length,
        layer=cfg.embed.layer,
        batch_tokens=chunk_tokens(
            cfg.embed.batch_tokens, cfg.runtime.cuda_batch_tokens, cfg.runtime.device
        ),
        cache_dir=cfg.runtime.cache_dir if cache_dir is None else cache_dir,
        device=cfg.runtime.device,
        progress=cfg.runtime.progress,
        extra_key={"data_file_sha256": data.file_sha256},
        backend=cfg.backend.name,
        packed=cfg.embed.packed,
        dtype=cfg.runtime.dtype,
    )


@dataclass
class Fitted:
    """The frozen classifier on M_0's training embeddings, with its cache entry (``fit.key``,
    ``fit.fit_s``: on a cache hit, the time the fit took when it was made) and its numbers."""

    clf: Any
    fit: Any
    about: dict
    train_auc: float
    val_auc: float


def fit_classifier(cfg: DictConfig, z: np.ndarray, y: np.ndarray, split: dict) -> Fitted:
    """C chosen on validation; cached, so runs that differ in drift, sigmas or monitors share
    one fit."""
    tr, va = split["train"], split["val"]
    clf, fit = fitted_classifier(
        OmegaConf.to_container(cfg.classifier, resolve=True),
        cfg.seed,
        z[tr],
        y[tr],
        z[va],
        y[va],
        cache_dir=cfg.runtime.cache_dir,
    )
    train_auc = M.roc_auc(y[tr], clf.predict_proba(z[tr]))
    val_auc = M.roc_auc(y[va], clf.predict_proba(z[va]))
    about = {"name": cfg.classifier.name, **clf.describe()}
    log.info(
        "classifier %s: %s, train AUC %.3f, val AUC %.3f (%.1f s%s)",
        about["name"],
        about["selected"],
        train_auc,
        val_auc,
        fit.fit_s,
        ", from the cache" if fit.cache_hit else "",
    )
    for warning in clf.warnings():
        log.warning(warning)
    return Fitted(clf, fit, about, train_auc, val_auc)


@dataclass
class Scoring:
    """What every checkpoint is scored with: the frozen classifier, the mitigation fitted beside
    it (``fit_s``), the test texts whose labels it may read (``labelled``) and those every
    number is computed on (``scored``); the frozen classifier's probabilities on the undrifted
    test texts (``p_start``: what every checkpoint's flips compare against, as its realized
    angle compares with ``z_test``; checkpoint 0 of every update and of a schedule from 0)."""

    clf: Any
    mitigation: MIT.Mitigation
    z_test: np.ndarray
    y_test: np.ndarray
    p_start: np.ndarray
    labelled: np.ndarray
    scored: np.ndarray
    tau: float
    n_bins: int
    fit_s: float
    resamples: int  # bootstrap resamples behind each metric's interval (0: none)
    level: float
    seed: int


def prepare_scoring(cfg: DictConfig, clf, z: np.ndarray, y: np.ndarray, split: dict) -> Scoring:
    tr, va, te = (split[s] for s in ("train", "val", "test"))
    mitigation = mitigation_of(cfg)
    t_fit = time.perf_counter()
    mitigation.fit(clf, z[tr], y[tr], z[va], y[va])
    fit_s = time.perf_counter() - t_fit
    for warning in mitigation.warnings:
        log.warning(warning)
    rng = np.random.default_rng([cfg.seed, 4])
    labelled = MIT.labelled_rows(y[te], mitigation.labels, rng)
    scored = np.setdiff1d(np.arange(len(te)), labelled)  # every mitigation is scored on these
    tau, n_bins = cfg.task.tau, cfg.task.ece_bins
    boot = cfg.task.bootstrap_resamples, cfg.task.interval_level
    p_start = clf.predict_proba(z[te])
    return Scoring(
        clf,
        mitigation,
        z[te],
        y[te],
        p_start,
        labelled,
        scored,
        tau,
        n_bins,
        fit_s,
        *boot,
        cfg.seed,
    )


@dataclass
class Trace:
    """Every checkpoint's numbers, in order: its row, reliability table, the frozen classifier's
    numbers on the scored texts (``unmitigated``), the mitigation's time and the knob."""

    rows: list[dict] = field(default_factory=list)
    reliability: list[list[dict]] = field(default_factory=list)
    unmitigated: list[dict] = field(default_factory=list)
    apply_s: list[float] = field(default_factory=list)
    knobs: list[float] = field(default_factory=list)


def score_checkpoint(c: int, ckpt, s: Scoring, source, trace: Trace) -> np.ndarray:
    """Checkpoint ``c`` scored into ``trace``; returns the frozen classifier's probabilities on
    every test text (what the monitors watch)."""
    zc, y, k = ckpt.z, s.y_test, s.mitigation.anchors
    p_frozen = s.clf.predict_proba(zc)
    t_apply = time.perf_counter()
    if s.mitigation.identity:  # none: the frozen classifier's own numbers, computed once
        p = p_frozen[s.scored]
    else:
        anchors = (ckpt.anchors[0][:k], ckpt.anchors[1][:k]) if k else None
        at = s.mitigation.at_checkpoint(zc, zc[s.labelled], y[s.labelled], anchors)
        p = at(zc[s.scored])
    trace.apply_s.append(time.perf_counter() - t_apply)
    scores = M.checkpoint_metrics(y[s.scored], p, s.tau, s.n_bins)
    p_start = s.p_start[s.scored]  # the undrifted texts' predictions: the flips' reference
    row = {"checkpoint": c, source.knob.name: float(ckpt.knob), **scores}
    row.update(M.flip_rates(y[s.scored], p_start, p))
    angle = drift_ops.realized_angle_deg(s.z_test, zc)
    row.update(realized_angle_deg=float(angle.mean()), realized_angle_deg_max=float(angle.max()))
    # on every test text, in the space the classifier reads (a swap's: after its map)
    row["coherent_share"] = M.coherent_share(s.z_test, zc)
    # the source's own columns (an update: its twins at the same mean angle), and the sigma the
    # amplification diagnostic reads
    extra, sigma_eq = source.describe(ckpt, row["realized_angle_deg"], s.clf, y, p_frozen)
    row.update(extra)
    row.update(s.clf.amplification(s.z_test, zc, float(sigma_eq)))
    if s.resamples:  # each metric's interval over resamples of the scored texts
        rng = np.random.default_rng([s.seed, 8, c])
        kw = {"tau": s.tau, "n_bins": s.n_bins, "n_resamples": s.resamples, "level": s.level}
        intervals = bootstrap_intervals(y[s.scored], p, p_before=p_start, rng=rng, **kw)
        row.update(interval_columns(intervals))
    trace.rows.append(row)
    trace.knobs.append(ckpt.knob)
    trace.reliability.append(M.reliability_table(y[s.scored], p, s.n_bins))
    trace.unmitigated.append(
        scores
        if s.mitigation.identity
        else M.checkpoint_metrics(y[s.scored], p_frozen[s.scored], s.tau, s.n_bins)
    )
    log.info(
        "checkpoint %d %s angle=%.1f deg  AUC=%.3f  conf=%.3f  SFR=%.1f%%  ECE=%.3f",
        c,
        ckpt.label,
        row["realized_angle_deg"],
        row["roc_auc"],
        row["mean_confidence"],
        row["silent_failure_rate_pct"],
        row["ece"],
    )
    return p_frozen


def mitigation_report(cfg, s: Scoring, trace: Trace, run_dir: Path, title: str, knob) -> dict:
    out = {
        "name": cfg.mitigation.name,
        **s.mitigation.describe(),
        "labels_per_checkpoint": s.mitigation.labels,
        "n_scored": int(s.scored.size),
        **MIT.compare(trace.rows, trace.unmitigated),
        "timing": {"fit_s": s.fit_s, "per_checkpoint_s": trace.apply_s},
    }
    if not s.mitigation.identity:
        plots.mitigation_figure(
            run_dir, trace.rows, trace.unmitigated, cfg.mitigation.name, title, knob
        )
        log.info("mitigation: %s", MIT.digest(out))
    return out


def monitor_report(
    monitoring: Monitoring, trace: Trace, fit_s: float, run_dir: Path, title, knob
) -> dict:
    """The monitors' scorecard (monitors.csv, its figure, one log line)."""
    scores, monitor_rows = monitoring.score(trace.knobs, fit_s, knob.name)
    timing = scores["timing"]
    log.info(
        "%d monitors on %d windows a checkpoint: %.2f s a checkpoint on %d workers "
        "(the classifier's fit: %.2f s)",
        len(monitoring.names),
        len(monitoring.windows),
        float(np.mean(timing["monitors_per_checkpoint_s"])),
        timing["monitor_workers"],
        fit_s,
    )
    atomic_write_csv(run_dir / "monitors.csv", monitor_rows)
    plots.monitor_figure(run_dir, trace.rows, scores, title, knob)
    log.info("monitors: %s", monitor_digest(scores, knob))
    return scores


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """One drift run: M_0's embeddings, the classifier fitted on them and frozen, then every
    checkpoint of the run's source scored, with the monitors watching."""
    data = load_data(cfg)
    log.info(
        "data %s: %d texts (%d/%d/%d), positive rate %s, usable rows %s",
        data.path.name,
        len(data.texts),
        *(len(data.split[s]) for s in ("train", "val", "test")),
        {s: round(r, 3) for s, r in data.positive_rate().items()},
        data.n_available,
    )
    z, emb = embed_data(cfg, data)
    z = drift_ops.normalize(z.astype(np.float64))  # eq. (4)
    y, split = data.labels, data.split
    fitted = fit_classifier(cfg, z, y, split)
    scoring = prepare_scoring(cfg, fitted.clf, z, y, split)
    plan = plan_of(cfg, split)  # the upgrade playbook's, None when it is off
    reembed = None if plan is None else plan.rows  # what the last checkpoint's model embeds too
    source = make_source(cfg, data, z, schedule_of(cfg), scoring.mitigation.anchors, reembed)
    knob = source.knob  # sigma, or an update's own axis: rows and summaries name it
    # after the source is made (an update's re-quantization forks workers of its own): the
    # monitors start their work once nothing else forks
    monitoring = None
    if monitor_names(cfg):
        monitoring = Monitoring(
            cfg, fitted.clf, z, y, split, cfg.seed, progress=cfg.runtime.progress
        )
    trace = Trace()
    for c, ckpt in enumerate(source.checkpoints()):
        p_frozen = score_checkpoint(c, ckpt, scoring, source, trace)
        if monitoring is not None:  # the monitors watch the frozen classifier (on workers)
            monitoring.checkpoint(ckpt.z, p_frozen)
    atomic_write_csv(run_dir / "checkpoints.csv", trace.rows)
    spec = ModelSpec.from_dict(cfg.model)
    title = f"{spec.name} ({spec.variant}), {cfg.drift.name} {source.noun}, {data.path.name}"
    from_source = source.finish(run_dir, title)
    cal = calibration_checkpoints(cfg, len(trace.knobs))
    plots.drift_figures(run_dir, trace.rows, trace.reliability, cal, title, knob)
    extra = {"mitigation": mitigation_report(cfg, scoring, trace, run_dir, title, knob)}
    if plan is not None:  # at the last checkpoint, which carries its model's training embeddings
        extra["playbook"] = run_playbook(plan, cfg, ckpt, fitted.clf, z, y, split, run_dir, title)
    if monitoring is not None:
        extra["monitors"] = monitor_report(
            monitoring, trace, fitted.fit.fit_s, run_dir, title, knob
        )
    return {
        "task": "drift_eval",
        "model": {
            "name": spec.name,
            "variant": spec.variant,
            "pooling": cfg.embed.pooling,
            "dim": int(z.shape[1]),
            "identity": emb["identity"],
        },
        "data": data_record(cfg, data),
        "drift": cfg.drift.name,
        **from_source,
        "knob": {"name": knob.name, "label": knob.label, "symbol": knob.symbol},
        f"{knob.name}s": [float(v) for v in trace.knobs],  # sigmas; rungs, alphas, ...
        "classifier": {
            **fitted.about,
            "train_auc": fitted.train_auc,
            "val_auc": fitted.val_auc,
            "fit_s": fitted.fit.fit_s,
        },
        "separability": separability(fitted.fit.key, z[split["train"]], y[split["train"]]),
        "embedding": emb["stats"],
        "checkpoints": trace.rows,
        "reliability": [{"checkpoint": c, "bins": r} for c, r in enumerate(trace.reliability)],
        "summary": summarize(trace.rows, knob.name),
        **extra,
    }


def data_record(cfg: DictConfig, data) -> dict:
    return {
        "name": cfg.data.name,
        "path": str(data.path),
        "sha256": data.file_sha256,
        "n_samples": len(data.texts),
        **{f"n_{s}": len(data.split[s]) for s in ("train", "val", "test")},
        "available": data.n_available,
        "balance": cfg.data.balance,
        "split_column": cfg.data.split_column,
        # the share of positive texts per split: 0.5 balanced, the file's own rate otherwise
        "positive_rate": data.positive_rate(),
        "n_positive": {s: int(data.labels[idx].sum()) for s, idx in data.split.items()},
    }


def separability(fit_key: str, z_train: np.ndarray, y_train: np.ndarray) -> dict:
    """The training split's separability: computed once per fit in a sweep's process."""
    if fit_key not in _SEPARABILITY:
        _SEPARABILITY[fit_key] = M.separability(z_train, y_train)
    return copy.deepcopy(_SEPARABILITY[fit_key])


def summarize(rows: list[dict], knob: str) -> dict:
    """The run's headline numbers; ``knob`` names the checkpoints' axis (``sigma_max`` and
    ``failure_cliff_sigma`` for synthetic drift, ``rung_max`` on a quantization ladder)."""
    first, last = rows[0], rows[-1]
    cliff = next((r[knob] for r in rows if r["roc_auc"] < AUC_CHANCE_BAND), None)
    return {
        "roc_auc_at_0": first["roc_auc"],
        "roc_auc_at_max": last["roc_auc"],
        "roc_auc_drop": first["roc_auc"] - last["roc_auc"],
        f"{knob}_max": last[knob],
        "realized_angle_deg_at_max": last["realized_angle_deg"],
        "mean_confidence_at_0": first["mean_confidence"],
        "mean_confidence_at_max": last["mean_confidence"],
        "silent_failure_rate_pct_at_max": last["silent_failure_rate_pct"],
        "ece_at_0": first["ece"],
        "ece_at_max": last["ece"],
        f"failure_cliff_{knob}": cliff,
    }
