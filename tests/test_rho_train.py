"""The rho-guided SFT loss and training loop on a real (tiny, random) causal LM."""

import copy

import pytest
import torch
from conftest import sft_config
from test_rho_task import TINY_RHO

import driftbench.backends.torch_train as torch_train
from driftbench.backends.torch_loss import (
    common_prefix_len,
    pack,
    packed_text_ce,
    packing_unsupported,
    padded_text_ce,
    per_text_ce,
)
from driftbench.backends.torch_train import apply_lora, check_lora_targets, train
from driftbench.batching import pad_batch
from driftbench.launcher import ConfigError, run
from driftbench.rho.loss import contrastive_loss, hinge
from driftbench.rho.plan import answer_mask, lr_lambda

TEXTS = [
    "The capital of France is Paris.",
    "Water boils at 100 degrees.",
    "Hi there",
    "a b c d e f g",
]


def test_batched_per_text_ce_equals_hugging_face_loss_of_each_unpadded_text(tiny_model):
    model, tok = tiny_model.model, tiny_model.tokenizer
    ids, mask = map(torch.from_numpy, pad_batch(tok(TEXTS)["input_ids"], tok.pad_token_id))
    with torch.no_grad():
        batched = per_text_ce(model(input_ids=ids, attention_mask=mask).logits, ids, mask)
        for i, t in enumerate(TEXTS):
            enc = tok(t, return_tensors="pt")
            ref = model(**enc, labels=enc["input_ids"]).loss  # rho-eval's CE(x)
            assert batched[i].item() == pytest.approx(ref.item(), abs=1e-5)


def test_hinge_is_the_seed_formula_by_hand():
    pos, neg = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.5, 1.0, 3.0])
    # max(0, 1-1.5+.1)=0, max(0, 2-1+.1)=1.1, max(0, 3-3+.1)=.1
    assert hinge(pos, neg, 0.1).tolist() == pytest.approx([0.0, 1.1, 0.1])
    loss, active = contrastive_loss(pos, neg, 0.1)
    assert loss.item() == pytest.approx(1.2 / 3) and active == pytest.approx(2 / 3)


def test_answer_mask_marks_tokens_after_the_common_prefix():
    assert answer_mask([1, 2, 3, 4], [1, 2, 5]) == ([0, 0, 1, 1], [0, 0, 1])
    assert answer_mask([1, 2], [1, 2]) == ([0, 1], [0, 1])  # identical texts keep one token


def test_schedule_warms_up_then_decays_linearly():
    f = lr_lambda(20, 0.1)
    assert [f(s) for s in (0, 1, 2, 11, 20)] == pytest.approx([0, 0.5, 1.0, 0.5, 0.0])


def test_missing_lora_target_lists_the_models_modules(tiny_model):
    with pytest.raises(
        ValueError, match=r"\['c_attn'\] not in the model; its linear modules are: .*q_proj"
    ):
        check_lora_targets(tiny_model.model, ["q_proj", "c_attn"])


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("sft.lambda_rho=-0.1", "lambda_rho=-0.1"),
        ("sft.margin=-1.0", "margin=-1.0"),
        ("sft.ce_on=prompt", "accepted: full_text, answer"),
    ],
)
def test_bad_training_settings_are_named(make_cfg, override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        run(make_cfg(*TINY_RHO, override))


def pair_gap(model, tok, pair):
    texts = [pair["positive"], pair["negative"]]
    ids, mask = map(torch.from_numpy, pad_batch(tok(texts)["input_ids"], tok.pad_token_id))
    with torch.no_grad():
        ce = per_text_ce(model(input_ids=ids, attention_mask=mask).logits, ids, mask)
    return (ce[0] - ce[1]).item()


def test_contrastive_training_moves_the_positive_text_below_the_negative(tiny_model):
    model = copy.deepcopy(tiny_model.model)
    tok = tiny_model.tokenizer
    pair = {
        "positive": "The sky is blue on a clear day.",
        "negative": "The sky is green on a clear day.",
    }
    before = pair_gap(model, tok, pair)
    cfg = sft_config(
        "sft.condition.use_sft=false",
        "sft.lambda_rho=1.0",
        "sft.margin=0.5",
        "sft.optim.lr=5e-3",
        "sft.optim.grad_accum=1",
        "sft.optim.max_steps=30",
        "sft.optim.warmup_ratio=0",
        "sft.lora.dropout=0",
    )
    trained, history = train(model, tok, ["unused"], {"factual": [pair]}, cfg, progress=False)
    after = pair_gap(trained, tok, pair)
    assert len(history) == 30 and history[0]["sft_loss"] is None
    assert after < before - 0.3 and after < -0.1
    assert history[-1]["active_hinge_fraction"] <= history[0]["active_hinge_fraction"]


def test_sft_only_lowers_the_sft_loss_and_trains_only_lora(tiny_model):
    model = copy.deepcopy(tiny_model.model)
    cfg = sft_config(
        "sft.lambda_rho=0",
        "sft.optim.lr=5e-3",
        "sft.optim.grad_accum=1",
        "sft.optim.batch_size=2",
        "sft.optim.epochs=10",
        "sft.optim.warmup_ratio=0",
        "sft.lora.dropout=0",
    )
    trained, history = train(model, tiny_model.tokenizer, TEXTS, {}, cfg, progress=False)
    assert len(history) == 20 and history[0]["contrastive_loss"] is None
    assert history[-1]["sft_loss"] < history[0]["sft_loss"] - 0.2
    trainable = {n for n, p in trained.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


# --- packed CE: the same values and gradients as padded rows ------------------------------------

PAIRS = [  # (positive, negative): a shared question with answers of several tokens, no prefix
    (
        "Question: is the sky blue? Answer: yes, it is blue",
        "Question: is the sky blue? Answer: no, it is green today",
    ),
    ("Cats purr.", "Dogs bark loudly at night."),
    ("Same text twice.", "Same text twice."),
]


@pytest.fixture(scope="module")
def sharp_model(tiny_model):
    """The tiny llama with unit-gain linear weights: its near-zero random init barely lets
    attention move the CE, so a wrong mask or wrong position ids would pass unseen (with this
    model a neg branch positioned after the pos branch moves its CE by ~0.02)."""
    model = copy.deepcopy(tiny_model.model).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
    return model


def pair_batch(tok, with_masks: bool):
    """Positives, negatives, then single texts (two of 1 token, one empty), as train() orders
    them; with ``with_masks`` the answer masks of ``ce_on=answer`` (singles: all tokens)."""
    pos = tok([p for p, _ in PAIRS])["input_ids"]
    neg = tok([n for _, n in PAIRS])["input_ids"]
    singles = tok(["A single text, longer than the others here.", "Hi"])["input_ids"] + [[42], []]
    assert len(singles[1]) == 1
    masks = None
    if with_masks:
        m = [answer_mask(p, q) for p, q in zip(pos, neg, strict=True)]
        masks = [a for a, _ in m] + [b for _, b in m] + [[1] * len(x) for x in singles]
    return pos + neg + singles, masks


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("with_masks", [False, True], ids=["full_text", "answer"])
@pytest.mark.parametrize("row_tokens", [512, 8], ids=["one_row", "padded_rows"])
def test_packed_ce_equals_padded_per_text_ce(sharp_model, tiny_model, attn, with_masks, row_tokens):
    model = copy.deepcopy(sharp_model)
    model.set_attn_implementation(attn)
    ids, masks = pair_batch(tiny_model.tokenizer, with_masks)
    layout = pack(ids, masks, pairs=len(PAIRS), max_row_tokens=row_tokens)
    k = len(PAIRS)
    shared = [common_prefix_len(ids[i], ids[k + i]) for i in range(k)]
    assert shared[0] >= 8 and shared[1] == 0 and shared[2] == len(ids[2])
    if row_tokens == 512:  # one row, no padding, each pair's common prefix once
        assert layout.input_ids.shape == (1, sum(len(x) for x in ids) - sum(shared))
    else:  # several rows, padded to the longest
        assert layout.input_ids.shape[0] > 1
    with torch.no_grad():
        packed = packed_text_ce(model, ids, masks, pairs=len(PAIRS), max_row_tokens=row_tokens)
        padded = padded_text_ce(model, ids, masks)
    assert packed.tolist() == pytest.approx(padded.tolist(), abs=1e-5)
    assert packed[-3:].tolist() == [0.0] * 3 and (packed[:-3] > 1.0).all()  # < 2 tokens: 0
    if with_masks:  # the answer mean is not the whole-text mean
        assert abs(packed[0].item() - padded_text_ce(model, ids[:1])[0].item()) > 1e-3


def test_packed_ce_is_not_blind_to_the_branch_layout(sharp_model, tiny_model, monkeypatch):
    """The reference comparison can fail: the negative branch positioned after the positive
    branch (position ids counted along the row) changes the CE beyond the tolerance."""
    import driftbench.backends.torch_loss as loss_module

    ids, _ = pair_batch(tiny_model.tokenizer, False)

    def row_positions(*args, **kwargs):
        b = pack(*args, **kwargs)
        b.position_ids = torch.arange(b.position_ids.shape[1]).expand_as(b.position_ids)
        return b

    monkeypatch.setattr(loss_module, "pack", row_positions)
    with torch.no_grad():
        wrong = packed_text_ce(sharp_model, ids, pairs=len(PAIRS))
        padded = padded_text_ce(sharp_model, ids)
    assert (wrong - padded).abs().max().item() > 1e-3


def lora_grads(model, loss_fn) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss_fn().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_packed_ce_gradients_match_the_padded_path(sharp_model, tiny_model):
    cfg = sft_config("sft.lora.dropout=0", "sft.margin=5.0")  # every hinge stays active
    torch.manual_seed(0)
    model = apply_lora(copy.deepcopy(sharp_model), cfg.lora)
    with torch.no_grad():  # LoRA's B starts at 0, which would leave A without a gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    ids, masks = pair_batch(tiny_model.tokenizer, True)
    k = len(PAIRS)

    def loss(text_ce):
        def f():
            ce = text_ce(model, ids, masks)
            return contrastive_loss(ce[:k], ce[k : 2 * k], cfg.margin)[0] + ce[2 * k :].mean()

        return f

    packed = lora_grads(model, loss(lambda m, i, w: packed_text_ce(m, i, w, pairs=k)))
    padded = lora_grads(model, loss(padded_text_ce))
    assert len(packed) == 4 * 3  # A and B of q, k, o in 2 layers
    for name, g in padded.items():
        assert g.abs().max() > 1e-4, name
        torch.testing.assert_close(packed[name], g, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("ce_on", ["full_text", "answer"])
def test_training_packed_gives_the_padded_losses_and_weights(sharp_model, tiny_model, ce_on):
    """train() end to end, packed and with packing refused (the padded fallback): the same
    losses at every step and the same adapters after 3 steps."""
    pairs = {"a": [dict(zip(("positive", "negative"), p, strict=True)) for p in PAIRS]}
    cfg = sft_config(
        "sft.lora.dropout=0",
        "sft.optim.grad_accum=2",
        "sft.optim.batch_size=3",
        "sft.optim.max_steps=3",
        "sft.optim.warmup_ratio=0",
        f"sft.ce_on={ce_on}",
    )
    runs = {}
    for mode in ("packed", "padded"):
        with pytest.MonkeyPatch.context() as mp:
            if mode == "padded":
                mp.setattr(torch_train, "packing_unsupported", lambda m: "refused by the test")
            runs[mode] = train(
                copy.deepcopy(sharp_model), tiny_model.tokenizer, TEXTS, pairs, cfg, progress=False
            )
    (packed, h_packed), (padded, h_padded) = runs["packed"], runs["padded"]
    for a, b in zip(h_packed, h_padded, strict=True):
        assert a["sft_loss"] == pytest.approx(b["sft_loss"], abs=1e-5)
        assert a["contrastive_loss"] == pytest.approx(b["contrastive_loss"], abs=1e-5)
        assert a["real_tokens"] == b["real_tokens"]
    weights = dict(padded.named_parameters())
    for name, p in packed.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p, weights[name], rtol=1e-4, atol=1e-5, msg=name)


def test_flash_attention_is_refused_with_a_reason(sharp_model, tiny_model):
    model = copy.deepcopy(sharp_model)
    model.config._attn_implementation = "flash_attention_2"
    assert "flash_attention_2" in packing_unsupported(model)
    with pytest.raises(ValueError, match="cannot take a 4D block-diagonal attention mask"):
        packed_text_ce(model, [[1, 2, 3]])


def test_sft_max_length_cuts_every_training_text_to_its_first_tokens(tiny_model):
    """``sft.max_length``: an SFT text and both texts of a pair enter training as their first
    max_length tokens. The first step's losses are Hugging Face's on the cut texts (LoRA's B
    starts at 0: the untouched model), not on the whole ones, and the step counts their tokens."""
    tok, model = tiny_model.tokenizer, tiny_model.model
    text = "the quick brown fox jumps over the lazy dog " * 3
    pair = {
        "positive": "The sky is blue on a clear day, and the sea is blue as well today.",
        "negative": "The sky is green on a clear day, and the sea is red as well today.",
    }
    cfg = sft_config(
        "sft.max_length=8",
        "sft.lambda_rho=1.0",
        "sft.optim.batch_size=1",
        "sft.optim.grad_accum=1",
        "sft.optim.max_steps=1",
    )
    _, history = train(copy.deepcopy(model), tok, [text], {"factual": [pair]}, cfg, progress=False)
    whole = [tok(t)["input_ids"] for t in (text, pair["positive"], pair["negative"])]
    assert all(len(x) > 12 for x in whole)

    def ce(ids):
        x = torch.tensor([ids])
        with torch.no_grad():
            return model(input_ids=x, labels=x).loss.item()

    sft, pos, neg = (ce(x[:8]) for x in whole)
    (step,) = history
    assert step["real_tokens"] == 3 * 8
    assert step["sft_loss"] == pytest.approx(sft, rel=1e-5)
    assert abs(ce(whole[0]) - sft) > 10 * 1e-5 * sft  # the whole text's is beyond that tolerance
    # the hinge is a difference of two CEs: its round-off is theirs
    hinge, tol = max(0.0, pos - neg + cfg.margin), 1e-5 * max(pos, neg)
    assert hinge > 0 and step["contrastive_loss"] == pytest.approx(hinge, abs=tol)
    uncut = max(0.0, ce(whole[1]) - ce(whole[2]) + cfg.margin)
    assert abs(uncut - hinge) > 10 * tol
