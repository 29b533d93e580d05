"""Real model updates in a drift_eval run (``drift=quantize|adapter|interpolate|swap``):
checkpoint c's test texts (and the anchor texts of the training split) embedded by the updated
model M_c, cached text by text under the update's identity; the map into M_0's space where one
is asked for; the last checkpoint's embeddings of the rows a run asks for (the upgrade
playbook's training and validation texts, in M_c's own space); and each checkpoint's synthetic
twin (``driftbench.twin``). The updates themselves are ``driftbench.updates``."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from driftbench import drift as drift_ops
from driftbench import metrics as M
from driftbench.adapters import Adapter, make_adapter
from driftbench.backends import BACKENDS, get_backend, load_model, resolve_dtype
from driftbench.checkpoints import Checkpoint, CheckpointSource, Reembedding, SyntheticSource
from driftbench.digests import cache_key
from driftbench.embed import chunk_tokens, embedding_parts, extract_embeddings
from driftbench.models import ModelSpec, model_identity, model_shape
from driftbench.tasks.drift_eval.summary_updates import update_figure
from driftbench.twin import synthetic_twin, twin_draws, twin_drifts
from driftbench.updates import Update, is_update, make_update
from driftbench.updates.store import UpdateStore
from driftbench.updates.weights import relative_error, squared_norm

log = logging.getLogger(__name__)
UPDATE_CACHE_VERSION = 1
TWIN_METRICS = ("roc_auc", "silent_failure_rate_pct", "mean_confidence", "ece")
TWIN_KEYS = ("sigma", "roc_auc", "silent_failure_rate_pct", "mean_confidence", *M.CHANGE_METRICS)


def update_of(cfg: DictConfig) -> Update | None:
    if not is_update(cfg.drift.name):
        return None
    spec = ModelSpec.from_dict(cfg.model)
    settings = OmegaConf.to_container(cfg.drift, resolve=True)
    return make_update(settings, spec, Path(cfg.runtime.cache_dir).expanduser())


def check_update(cfg: DictConfig, n_train: int, mitigation_anchors: int) -> None:
    """An update's settings, its files and what the backend can do: before any embedding.
    ``mitigation_anchors``: the training texts the run's mitigation maps with."""
    update = update_of(cfg)
    if update is None:
        return
    update.check_map()
    update.check()
    for dtype in set(update.other_dtypes()) - {cfg.runtime.dtype}:  # the run's: the launcher's
        resolve_dtype(dtype, cfg.runtime.device, cfg.backend.name, key="drift.dtypes")
    if not (update.in_place or update.run_embedding) and mitigation_anchors:
        raise ValueError(
            f"mitigation={cfg.mitigation.name} with drift={update.name}: the swap's own map "
            "(drift.map) already realigns its embeddings; accepted: drift=quantize, adapter, "
            "interpolate or a synthetic drift"
        )
    anchors = cfg.drift.anchors
    if anchors > n_train:
        raise ValueError(
            f"drift.anchors={anchors} is more than the {n_train} training texts; accepted: "
            f"0..{n_train}"
        )
    if update.in_place and not get_backend(cfg.backend.name).edits_weights:
        able = [n for n in BACKENDS if get_backend(n).edits_weights]
        raise ValueError(
            f"drift={update.name} edits the model's weights, which backend={cfg.backend.name} "
            f"cannot; accepted: backend={' or '.join(able)}"
        )
    if not update.in_place:
        cache_dir = Path(cfg.runtime.cache_dir).expanduser()
        old, new = model_shape(update.spec, cache_dir), model_shape(update.target(), cache_dir)
        if update.map == "none" and old and new and old["hidden_size"] != new["hidden_size"]:
            raise ValueError(
                f"drift.map=none but {update.spec.name} has width {old['hidden_size']} and "
                f"{update.target().name} {new['hidden_size']}; accepted: drift.map=procrustes "
                "or lstsq"
            )


@dataclass
class Embedded:
    """One checkpoint of an update as embedded by M_c."""

    label: str
    knob: float
    z: np.ndarray  # test embeddings of M_c, unit norm, mapped into M_0's space
    unmapped: np.ndarray | None  # the same without the map, where the widths match
    anchors: np.ndarray  # anchor embeddings of M_c, unit norm, mapped like ``z``
    info: dict = field(default_factory=dict)
    reembedded: Reembedding | None = None  # the rows a run asked for (last checkpoint only)
    about: dict = field(default_factory=dict)  # the update's own columns (``Step.about``)


@dataclass
class UpdateModels:
    """The models an update's checkpoints are embedded by, each loaded once, on first use: M_0
    (``base``) and, for an update that is another model, the target; for an update that edits
    M_0's weights, those weights (``base_weights``), their squared norm (``relative_error``'s
    denominator) and the seconds the update took to prepare."""

    cfg: DictConfig
    update: Update
    cache_dir: Path
    loaded: dict = field(default_factory=dict)
    weights: dict | None = None
    norm2: float | None = None
    prepare_s: float = 0.0

    def model(self, spec: ModelSpec, dtype: str | None = None):
        """``spec`` loaded once per dtype (the run's unless ``dtype`` says otherwise)."""
        dtype = dtype or self.cfg.runtime.dtype
        name = ("target" if spec is not self.update.spec else "base", dtype)
        if name not in self.loaded:
            self.loaded[name] = load_model(
                spec,
                self.cache_dir,
                device=self.cfg.runtime.device,
                head="base",
                backend=self.cfg.backend.name,
                dtype=dtype,
            )
        return self.loaded[name]

    def base_weights(self) -> dict:
        if self.weights is None:
            m = self.model(self.update.spec)
            self.weights = m.backend.weights(m.model)
            t0 = time.perf_counter()
            self.norm2 = squared_norm(self.weights)
            load = partial(
                cpu_weights,
                cache_dir=self.cache_dir,
                backend=self.cfg.backend.name,
                dtype=self.cfg.runtime.dtype,
            )
            self.update.prepare(self.weights, load)
            self.prepare_s = time.perf_counter() - t0
        return self.weights


def cpu_weights(spec: ModelSpec, cache_dir: Path, backend: str, dtype: str) -> dict:
    """Another model's weights, loaded on the CPU in the run's dtype, as M_0's are (what an
    update may prepare from; float32 arrays of the values the model holds)."""
    other = load_model(spec, cache_dir, device="cpu", head="base", backend=backend, dtype=dtype)
    return other.backend.weights(other.model)


def embed_rows(cfg: DictConfig, m, rows: list[str], pooling: str, layer: int) -> np.ndarray:
    e = cfg.embed
    out, _ = extract_embeddings(
        m.model,
        m.tokenizer,
        rows,
        pooling,
        e.max_length,
        layer,
        batch_tokens=chunk_tokens(
            e.batch_tokens, cfg.runtime.cuda_batch_tokens, cfg.runtime.device
        ),
        progress=cfg.runtime.progress,
        packed=e.packed,
    )
    return out


def embed_step(
    models: UpdateModels, step, spec: ModelSpec, pooling: str, layer: int, missing: list[str]
) -> tuple[np.ndarray, dict]:
    """The texts ``missing`` from the cache embedded by checkpoint ``step``'s model: the target,
    or M_0 with the step's weights set (and restored after), with the seconds each part took."""
    update, cfg = models.update, models.cfg
    if not update.in_place:
        m = models.model(spec, update.dtype_at(step, cfg.runtime.dtype))  # loaded once, untimed
        t0 = time.perf_counter()
        z_new = embed_rows(cfg, m, missing, pooling, layer)
        return z_new, {"embed_s": time.perf_counter() - t0, "embed_s_texts": len(missing)}
    base = models.base_weights()
    m = models.model(update.spec)
    t0 = time.perf_counter()
    new = update.weights_at(step, base)
    error = relative_error(base, new, models.norm2)
    try:
        m.backend.set_weights(m.model, new)
        t1 = time.perf_counter()
        z_new = embed_rows(cfg, m, missing, pooling, layer)
    finally:
        t2 = time.perf_counter()
        m.backend.set_weights(m.model, {n: base[n] for n in new})
    return z_new, {
        "relative_weight_error": error,
        "update_s": (t1 - t0) + (time.perf_counter() - t2),  # edit + restore
        "embed_s": t2 - t1,
        "embed_s_texts": len(missing),  # embed_s is these texts' (the cache keeps the last)
    }


def embedded_step(
    models: UpdateModels, store: UpdateStore, step, wanted: list[str]
) -> tuple[np.ndarray, dict, int]:
    """(unit-norm embeddings of ``wanted``, their info, how many were embedded now) for one
    checkpoint of the update, from the cache keyed on what decides them."""
    update, cfg, cache_dir = models.update, models.cfg, models.cache_dir
    e, backend = cfg.embed, cfg.backend.name
    spec = update.spec if update.in_place else update.target()
    as_run = update.in_place or update.run_embedding
    pooling = e.pooling if as_run else spec.pooling
    layer = e.layer if as_run else -1
    parts = {
        **embedding_parts(
            spec,
            cache_dir,
            pooling,
            e.max_length,
            layer,
            e.packed,
            backend,
            update.dtype_at(step, cfg.runtime.dtype),
        ),
        "update": step.identity,
        "update_code": UPDATE_CACHE_VERSION,  # bumped with any change to what M_c is
        "gguf": package_version("gguf"),
    }
    if not update.in_place:
        parts["base"] = model_identity(update.spec, cache_dir)  # embedding_parts' "model"
    compute = partial(embed_step, models, step, spec, pooling, layer)
    rows, info, fresh = store.get(cache_key(parts), wanted, compute, parts)
    rows = drift_ops.normalize(rows.astype(np.float64))
    log.info(
        "update %s %s: %d of %d texts embedded now (the rest cached)%s",
        update.name,
        step.label,
        fresh,
        len(wanted),
        ""
        if info.get("relative_weight_error") is None
        else f", relative weight error {info['relative_weight_error']:.4g}",
    )
    return rows, info, fresh


def fit_map(kind: str, z_new: np.ndarray, z_old: np.ndarray, seed: int) -> Adapter | None:
    """``drift.map`` fitted on the anchors (rows: the same texts, embedded by M_c and M_0), or
    None for ``none``, where the widths must then match."""
    if kind != "none":
        return make_adapter(kind, rank=None, seed=seed).fit(z_new, z_old)
    if z_new.shape[1] != z_old.shape[1]:
        raise ValueError(
            f"map=none with widths {z_new.shape[1]} -> {z_old.shape[1]}; accepted: procrustes "
            "or lstsq when the widths differ"
        )
    return None


def mapped(z: np.ndarray, adapter: Adapter | None) -> np.ndarray:
    """Rows of M_c mapped into M_0's space, back on the unit sphere (eq. 4)."""
    return drift_ops.normalize(z) if adapter is None else adapter.apply(z)


def reembedded_at(
    models: UpdateModels,
    store: UpdateStore,
    step,
    texts: list[str],
    z: np.ndarray,
    rows,
    z_c,
    adapter,
) -> Reembedding:
    """Checkpoint ``step``'s embeddings of ``rows`` (of ``texts``) in M_c's own space and as the
    frozen classifier reads them (through ``adapter``, the checkpoint's map), beside its own
    test embeddings ``z_c``, with the seconds per text M_c embedded at when last measured (the
    cache keeps that measurement with its rows, so a run served from it reports the same cost)."""
    if step.identity is None:  # M_0 itself: its embeddings are the run's
        return Reembedding(z_c, z[rows], z[rows], 0.0, 0)
    own, info, fresh = embedded_step(models, store, step, [texts[i] for i in rows])
    measured = info.get("embed_s_texts")
    per_text = info["embed_s"] / measured if measured else math.nan
    return Reembedding(z_c, own, mapped(own, adapter), per_text, fresh)


def update_checkpoints(
    cfg: DictConfig,
    texts: list[str],
    z: np.ndarray,
    test: np.ndarray,
    anchors: np.ndarray,
    reembed: np.ndarray | None = None,
) -> list[Embedded]:
    """Every checkpoint's embeddings of the test texts then the anchor texts (rows of ``texts``;
    ``z``: M_0's unit-norm embeddings of all texts), and the last one's of the rows ``reembed``
    where given. Only texts the cache lacks are embedded."""
    update = update_of(cfg)
    cache_dir = Path(cfg.runtime.cache_dir).expanduser()
    store = UpdateStore(cache_dir)
    wanted = [texts[i] for i in test] + [texts[i] for i in anchors]
    models = UpdateModels(cfg, update, cache_dir)
    if getattr(update, "trains", False):
        from driftbench.tasks.drift_eval.adapter import trained_adapter

        update.settings["adapter"] = str(trained_adapter(cfg, update.training()))
    out, steps = [], update.steps()
    for i, step in enumerate(steps):
        if step.identity is None:
            rows, info = np.concatenate([z[test], z[anchors]]), {"relative_weight_error": 0.0}
            fresh = 0
        else:
            rows, info, fresh = embedded_step(models, store, step, wanted)
        z_c, z_anchor = rows[: len(test)], rows[len(test) :]
        adapter = fit_map(update.map, z_anchor, z[anchors], cfg.seed) if step.identity else None
        same = z_c.shape[1] == z.shape[1]
        last = i == len(steps) - 1 and reembed is not None
        out.append(
            Embedded(
                step.label,
                step.knob,
                mapped(z_c, adapter),
                z_c if (same and adapter is not None) else None,
                mapped(z_anchor, adapter),
                {**info, "embedded_now": fresh, "prepare_s": models.prepare_s},
                reembedded_at(models, store, step, texts, z, reembed, z_c, adapter)
                if last
                else None,
                step.about,
            )
        )
    return out


def twins(cfg: DictConfig, z0, y, clf, target_deg: float, drawn: dict) -> dict:
    """The synthetic twin of one checkpoint, for every synthetic drift (``driftbench.twin``);
    ``drawn`` keeps each drift's draws for the run's next checkpoints."""
    n, seed = cfg.drift.twin_draws, cfg.seed
    kinds = twin_drifts()
    for kind in kinds:
        if kind not in drawn:
            drawn[kind] = twin_draws(kind, z0, n, seed)
    return {
        kind: synthetic_twin(
            z0,
            y,
            clf.predict_proba,
            target_deg,
            kind,
            draws=n,
            seed=seed,
            tau=cfg.task.tau,
            n_bins=cfg.task.ece_bins,
            drifted=drawn[kind],
        )
        for kind in kinds
    }


def twin_columns(twin: dict) -> dict:
    return {f"twin_{k}_{key}": twin[k].get(key) for k in twin for key in TWIN_KEYS}


def anchor_rows(train: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k texts of the training split that M_0 and M_c both embed (a map's anchors): a prefix of
    one permutation, so a smaller k takes the first of the same texts."""
    return np.random.default_rng([seed, 5]).permutation(train)[:k]


class UpdateSource:
    """A real model update's checkpoints (the ``driftbench.checkpoints`` interface), each with
    its synthetic twins. Every checkpoint is embedded when the source is made, before the
    monitors fork their worker processes (re-quantization forks workers of its own)."""

    noun = "update"

    def __init__(self, cfg: DictConfig, data, z: np.ndarray, anchors: np.ndarray, reembed=None):
        self.cfg, self.update = cfg, update_of(cfg)
        self.knob = self.update.knob
        te = data.split["test"]
        self.z_test, self.z0_anchor, self.y_anchor = z[te], z[anchors], data.labels[anchors]
        self.embedded = update_checkpoints(cfg, data.texts, z, te, anchors, reembed)
        self.drawn: dict = {}  # each twin drift's draws, shared by the checkpoints
        self.records: list[dict] = []

    def checkpoints(self):
        for e in self.embedded:
            info = {**e.info, "unmapped": e.unmapped, "about": e.about}
            anchors = (self.z0_anchor, e.anchors)
            yield Checkpoint(e.label, e.knob, e.z, anchors, info, e.reembedded)

    def describe(self, ckpt, angle_deg, clf, y_test, p_frozen) -> tuple[dict, float]:
        """The update's columns (its twins'), its record, and its Gaussian twin's sigma."""
        cfg = self.cfg
        twin = twins(cfg, self.z_test, y_test, clf, angle_deg, self.drawn)
        frozen = M.checkpoint_metrics(y_test, p_frozen, cfg.task.tau, cfg.task.ece_bins)
        change = {
            **M.flip_rates(y_test, clf.predict_proba(self.z_test), p_frozen),
            "coherent_share": M.coherent_share(self.z_test, ckpt.z),
        }
        info = {k: v for k, v in ckpt.info.items() if k not in ("unmapped", "about")}
        own = {**ckpt.info["about"], **self.training_separability(ckpt.anchors[1])}
        extra = {
            "update": ckpt.label,
            "relative_weight_error": info.get("relative_weight_error"),
            **own,
            **twin_columns(twin),
        }
        if ckpt.info["unmapped"] is not None:
            extra["roc_auc_unmapped"] = M.roc_auc(y_test, clf.predict_proba(ckpt.info["unmapped"]))
        self.records.append(
            {
                "checkpoint": ckpt.label,
                "knob": ckpt.knob,
                "realized_angle_deg": angle_deg,
                **info,
                **own,
                # the frozen classifier on every test text: what the twins are (a mitigation's
                # numbers, in the row, are on the texts it did not read)
                "frozen": {**{k: frozen[k] for k in TWIN_METRICS}, **change},
                "twins": twin,
            }
        )
        sigma = twin["gaussian"]["sigma"]  # None: noise never turns them that far
        return extra, np.nan if sigma is None else sigma

    def training_separability(self, z_anchor: np.ndarray) -> dict:
        """The checkpoint's separability of the classes on its embeddings of the anchor texts
        (training texts; the same measures as the run's ``separability`` of M_0), for an update
        that asks for it, as ``separability_<measure>`` columns."""
        if not self.update.training_separability:
            return {}
        measures = {**M.separability(z_anchor, self.y_anchor), "n_texts": len(self.y_anchor)}
        return {f"separability_{k}": v for k, v in measures.items()}

    def finish(self, run_dir: Path, title: str) -> dict:
        update_figure(run_dir, self.records, title)
        return {"update": {"name": self.update.name, "checkpoints": self.records}}


def make_source(
    cfg: DictConfig, data, z: np.ndarray, sigmas, n_anchors: int = 0, reembed=None
) -> CheckpointSource:
    """The run's checkpoint source, chosen once: a real update (``driftbench.updates``) or a
    synthetic drift (``driftbench.drift``) on the schedule's sigmas. ``n_anchors`` training
    texts (a mitigation's) come with each checkpoint, or the update's own ``drift.anchors``
    where it asks for more, or every training text for an update that measures each
    checkpoint's training separability; the rows ``reembed`` (of ``data``'s texts) with the
    last one."""
    seed, update = cfg.seed, is_update(cfg.drift.name)
    wanted = max(n_anchors, cfg.drift.anchors if update else 0)
    if update and update_of(cfg).training_separability:  # as M_0's: on the whole split
        wanted = len(data.split["train"])
    rows = anchor_rows(data.split["train"], wanted, seed)
    if update:
        return UpdateSource(cfg, data, z, rows, reembed)
    z0_rows = None if reembed is None else z[reembed]
    return SyntheticSource(cfg.drift.name, sigmas, z[data.split["test"]], z[rows], seed, z0_rows)
