"""The rho-guided SFT loss and training loop on a real (tiny, random) causal LM."""

import copy

import pytest
import torch

from driftbench.embed import pad_batch
from driftbench.rho.loss import contrastive_loss, hinge, per_text_ce
from driftbench.rho.train import TrainConfig, answer_mask, check_lora_targets, lr_lambda, train

TEXTS = [
    "The capital of France is Paris.",
    "Water boils at 100 degrees.",
    "Hi there",
    "a b c d e f g",
]


def test_batched_per_text_ce_equals_hugging_face_loss_of_each_unpadded_text(tiny_model):
    model, tok = tiny_model.model, tiny_model.tokenizer
    ids, mask = pad_batch(tok(TEXTS)["input_ids"], tok.pad_token_id)
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
    "kwargs, fragment",
    [
        ({"lambda_rho": -0.1}, "lambda_rho=-0.1"),
        ({"margin": -1.0}, "margin=-1.0"),
        ({"ce_on": "prompt"}, "accepted: full_text, answer"),
    ],
)
def test_bad_training_settings_are_named(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        TrainConfig(**kwargs).validate()


def pair_gap(model, tok, pair):
    ids, mask = pad_batch(tok([pair["positive"], pair["negative"]])["input_ids"], tok.pad_token_id)
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
    cfg = TrainConfig(
        use_sft=False,
        lambda_rho=1.0,
        margin=0.5,
        lr=5e-3,
        grad_accum=1,
        max_steps=30,
        warmup_ratio=0.0,
        lora_dropout=0.0,
    )
    trained, history = train(model, tok, ["unused"], {"factual": [pair]}, cfg, progress=False)
    after = pair_gap(trained, tok, pair)
    assert len(history) == 30 and history[0]["sft_loss"] is None
    assert after < before - 0.3 and after < -0.1
    assert history[-1]["active_hinge_fraction"] <= history[0]["active_hinge_fraction"]


def test_sft_only_lowers_the_sft_loss_and_trains_only_lora(tiny_model):
    model = copy.deepcopy(tiny_model.model)
    cfg = TrainConfig(
        lambda_rho=0.0,
        lr=5e-3,
        grad_accum=1,
        batch_size=2,
        epochs=10,
        warmup_ratio=0.0,
        lora_dropout=0.0,
    )
    trained, history = train(model, tiny_model.tokenizer, TEXTS, {}, cfg, progress=False)
    assert len(history) == 20 and history[0]["contrastive_loss"] is None
    assert history[-1]["sft_loss"] < history[0]["sft_loss"] - 0.2
    trainable = {n for n, p in trained.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
