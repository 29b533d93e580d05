"""Task ``drift_eval``: the study of 000_b7270e02dd833497.txt, wired end to end.

data -> embeddings (cached) -> classifier on checkpoint 0 (frozen) -> drifted test sets on the
sigma schedule -> B.4 metrics, realized drift and amplification per checkpoint -> figures;
label-free monitors on windows of every checkpoint, scored against the collapse (monitors.py).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from driftbench import drift as drift_ops
from driftbench import metrics as M
from driftbench import plots
from driftbench.backends import get_backend
from driftbench.classifier import DEGENERATE_DIMS, SELECT_BY, fit_classifier
from driftbench.data import (
    check_sample_size,
    check_text_file,
    content_sha256,
    load_toxicity,
    resolve_data_path,
)
from driftbench.embed import POOLINGS, cached_embeddings
from driftbench.models import ModelSpec, check_spec, model_identity, num_hidden_layers
from driftbench.runs import atomic_write_csv
from driftbench.tasks.drift_monitoring import (
    Monitoring,
    check_monitoring,
    monitor_digest,
    monitor_names,
)

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
    "monitor",
    "backend",
)
RESULTS_VERSION = 2  # 2: the monitors (monitors.csv, metrics.json "monitors")


def inputs(cfg: DictConfig) -> dict:
    """Digests of what the run reads besides its config: the data file and the model's weights."""
    spec = ModelSpec.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    return {
        "data": content_sha256(resolve_data_path(cfg.data.path, cfg.runtime.data_dir)),
        "model": model_identity(spec, Path(cfg.runtime.cache_dir).expanduser()),
    }


def schedule_of(cfg: DictConfig) -> np.ndarray:
    s = cfg.schedule
    sigmas = OmegaConf.to_container(s.sigmas) if s.get("sigmas") is not None else None
    return drift_ops.sigma_schedule(s.get("sigma_min"), s.get("sigma_max"), s.get("k"), sigmas)


def validate(cfg: DictConfig) -> None:
    """The checks that need more than one field (driftbench/schema.py checks each field's type
    and range before this): registry names, the schedule, the sample size, the model's files
    and layer count, the data file. Runs before any heavy work."""
    if cfg.drift.name not in drift_ops.DRIFTS:
        raise ValueError(f"drift={cfg.drift.name!r}; accepted: {', '.join(drift_ops.DRIFTS)}")
    schedule_of(cfg)
    if cfg.embed.pooling not in POOLINGS:
        raise ValueError(f"embed.pooling={cfg.embed.pooling!r}; accepted: {', '.join(POOLINGS)}")
    get_backend(cfg.backend.name).check_embed_layer(int(cfg.embed.layer))
    if cfg.classifier.degenerate_dims not in DEGENERATE_DIMS:
        raise ValueError(
            f"classifier.degenerate_dims={cfg.classifier.degenerate_dims!r}; "
            f"accepted: {', '.join(DEGENERATE_DIMS)}"
        )
    if cfg.classifier.select_by not in SELECT_BY:
        raise ValueError(
            f"classifier.select_by={cfg.classifier.select_by!r}; accepted: {', '.join(SELECT_BY)}"
        )
    check_sample_size(int(cfg.data.n_samples), tuple(cfg.data.split))
    check_monitoring(cfg)
    spec = ModelSpec.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    check_spec(spec)
    layer = int(cfg.embed.layer)
    if layer != -1:
        n = num_hidden_layers(spec, Path(cfg.runtime.cache_dir).expanduser())
        if n is not None and not -(n + 1) <= layer <= n:
            raise ValueError(
                f"embed.layer={layer}; accepted for {spec.name} ({n} blocks): -{n + 1}..{n}"
            )
    check_text_file(resolve_data_path(cfg.data.path, cfg.runtime.data_dir))


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


def run(cfg: DictConfig, run_dir: Path) -> dict:
    sigmas = schedule_of(cfg)
    tau, n_bins, seed = float(cfg.task.tau), int(cfg.task.ece_bins), int(cfg.seed)
    path = resolve_data_path(cfg.data.path, cfg.runtime.data_dir)
    data = load_toxicity(
        path,
        text_column=cfg.data.text_column,
        label_column=cfg.data.label_column,
        threshold=float(cfg.data.threshold),
        n_samples=int(cfg.data.n_samples),
        split=tuple(cfg.data.split),
        sample_seed=int(cfg.data.sample_seed),
        split_seed=seed,
    )
    log.info(
        "data %s: %d texts (%d/%d/%d), balanced pool available %s",
        path.name,
        len(data.texts),
        *(len(data.split[s]) for s in ("train", "val", "test")),
        data.n_available,
    )
    spec = ModelSpec.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    z, emb = cached_embeddings(
        spec,
        data.texts,
        pooling=cfg.embed.pooling,
        max_length=int(cfg.embed.max_length),
        layer=int(cfg.embed.layer),
        batch_tokens=int(cfg.embed.batch_tokens),
        cache_dir=cfg.runtime.cache_dir,
        device=cfg.runtime.device,
        progress=bool(cfg.runtime.progress),
        extra_key={"data_file_sha256": data.file_sha256},
        backend=cfg.backend.name,
        packed=bool(cfg.embed.packed),
    )
    z = drift_ops.normalize(z.astype(np.float64))  # eq. (4)
    y = data.labels
    tr, va, te = (data.split[s] for s in ("train", "val", "test"))

    t_fit = time.perf_counter()
    clf = fit_classifier(
        z[tr],
        y[tr],
        z[va],
        y[va],
        c_grid=list(cfg.classifier.c_grid),
        max_iter=int(cfg.classifier.max_iter),
        degenerate_dims=cfg.classifier.degenerate_dims,
        degenerate_rel_std=float(cfg.classifier.degenerate_rel_std),
        seed=seed,
        select_by=cfg.classifier.select_by,
    )
    fit_s = time.perf_counter() - t_fit
    train_auc = M.roc_auc(y[tr], clf.predict_proba(z[tr]))
    val_auc = M.roc_auc(y[va], clf.predict_proba(z[va]))
    log.info("classifier: C=%g, train AUC %.3f, val AUC %.3f", clf.c, train_auc, val_auc)
    if clf.degenerate.size:
        handled = {
            "keep": "kept as the paper does, so a collapse under drift may be this artifact; "
            "classifier.degenerate_dims=drop or floor removes it",
            "drop": "dropped (classifier.degenerate_dims=drop)",
            "floor": "their std floored at the median std (classifier.degenerate_dims=floor)",
        }[clf.degenerate_dims]
        log.warning(
            "%d embedding dimension(s) are (nearly) constant on the training set: %s. "
            "Standardising divides any drift there by their tiny std. They are %s.",
            clf.degenerate.size,
            clf.degenerate[:20].tolist(),
            handled,
        )
    if clf.c_at_grid_edge:
        log.warning(
            "the selected C=%g is at the edge of classifier.c_grid %s: widen the grid",
            clf.c,
            clf.c_grid,
        )

    z_test, y_test = z[te], y[te]
    operator = drift_ops.make_drift(cfg.drift.name, z.shape[1], np.random.default_rng([seed, 1]))
    logits0 = clf.logits(z_test)
    std0 = clf.standardize(z_test)
    monitoring = Monitoring(cfg, clf, z, y, data.split, seed) if monitor_names(cfg) else None
    rows, reliability = [], []
    for c, sigma in enumerate(sigmas):
        zc = operator(z_test, float(sigma))
        p = clf.predict_proba(zc)
        row = {
            "checkpoint": c,
            "sigma": float(sigma),
            **M.checkpoint_metrics(y_test, p, tau, n_bins),
        }
        angle = drift_ops.realized_angle_deg(z_test, zc)
        row.update(
            realized_angle_deg=float(angle.mean()),
            realized_angle_deg_max=float(angle.max()),
            mean_abs_delta_std_feature=float(np.abs(clf.standardize(zc) - std0).mean()),
            mean_abs_delta_logit=float(np.abs(clf.logits(zc) - logits0).mean()),
            mean_abs_logit=float(np.abs(clf.logits(zc)).mean()),
            snr_eq29=M.snr_eq29(logits0, float(np.linalg.norm(clf.w)), float(sigma)),
            snr_effective=M.snr_eq29(logits0, clf.w_raw_norm, float(sigma)),
        )
        rows.append(row)
        reliability.append(M.reliability_table(y_test, p, n_bins))
        log.info(
            "checkpoint %d sigma=%.3f angle=%.1f deg  AUC=%.3f  conf=%.3f  SFR=%.1f%%  ECE=%.3f",
            c,
            sigma,
            row["realized_angle_deg"],
            row["roc_auc"],
            row["mean_confidence"],
            row["silent_failure_rate_pct"],
            row["ece"],
        )
        if monitoring is not None:
            log.info(
                "checkpoint %d: %d monitors on %d windows in %.2f s (the classifier's fit: %.2f s)",
                c,
                len(monitoring.names),
                len(monitoring.windows),
                monitoring.checkpoint(zc, p),
                fit_s,
            )
    atomic_write_csv(run_dir / "checkpoints.csv", rows)
    sep = M.separability(z[tr], y[tr])
    cal = calibration_checkpoints(cfg, len(sigmas))
    title = f"{spec.name} ({spec.variant}), {cfg.drift.name} drift, {data.path.name}"
    plots.drift_figures(run_dir, rows, reliability, cal, title)
    extra = {}
    if monitoring is not None:
        auc0 = M.roc_auc(y_test, clf.predict_proba(z_test))
        extra["monitors"], monitor_rows = monitoring.score(sigmas, rows, auc0, fit_s)
        atomic_write_csv(run_dir / "monitors.csv", monitor_rows)
        plots.monitor_figure(run_dir, rows, extra["monitors"], title)
        log.info("monitors: %s", monitor_digest(extra["monitors"]))

    return {
        "task": "drift_eval",
        "model": {
            "name": spec.name,
            "variant": spec.variant,
            "pooling": cfg.embed.pooling,
            "dim": int(z.shape[1]),
            "identity": emb["identity"],
        },
        "data": {
            "name": cfg.data.name,
            "path": str(data.path),
            "sha256": data.file_sha256,
            "n_samples": len(data.texts),
            "n_train": len(tr),
            "n_val": len(va),
            "n_test": len(te),
            "available": data.n_available,
        },
        "drift": cfg.drift.name,
        "sigmas": sigmas.tolist(),
        "classifier": {
            "c": clf.c,
            "c_grid": clf.c_grid,
            "c_at_grid_edge": clf.c_at_grid_edge,
            "select_by": clf.select_by,
            "val_auc_by_c": {str(k): v for k, v in clf.val_auc_by_c.items()},
            "val_log_loss_by_c": {str(k): v for k, v in clf.val_log_loss_by_c.items()},
            "train_auc": train_auc,
            "val_auc": val_auc,
            "w_norm": float(np.linalg.norm(clf.w)),
            "w_raw_norm": clf.w_raw_norm,
            "degenerate_dims": {
                "mode": clf.degenerate_dims,
                "count": int(clf.degenerate.size),
                "indices": clf.degenerate.tolist(),
                "rel_std": float(cfg.classifier.degenerate_rel_std),
            },
        },
        "separability": sep,
        "embedding": emb["stats"],
        "checkpoints": rows,
        "reliability": [{"checkpoint": c, "bins": r} for c, r in enumerate(reliability)],
        "summary": summarize(rows),
        **extra,
    }


def summarize(rows: list[dict]) -> dict:
    first, last = rows[0], rows[-1]
    cliff = next((r["sigma"] for r in rows if r["roc_auc"] < AUC_CHANCE_BAND), None)
    return {
        "roc_auc_at_0": first["roc_auc"],
        "roc_auc_at_max": last["roc_auc"],
        "roc_auc_drop": first["roc_auc"] - last["roc_auc"],
        "sigma_max": last["sigma"],
        "realized_angle_deg_at_max": last["realized_angle_deg"],
        "mean_confidence_at_0": first["mean_confidence"],
        "mean_confidence_at_max": last["mean_confidence"],
        "silent_failure_rate_pct_at_max": last["silent_failure_rate_pct"],
        "ece_at_0": first["ece"],
        "ece_at_max": last["ece"],
        "failure_cliff_sigma": cliff,
    }
