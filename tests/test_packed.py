"""The padding-free Llama forward equals the Hugging Face forward, text by text and layer by
layer, and every model it does not cover takes the Hugging Face path."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import EMBED_BATCH_TOKENS
from test_dtype import MAX_BF16_ANGLE_DEG, angles_deg, tiny_spec
from transformers import LlamaConfig, LlamaModel

from driftbench.backends import load_model
from driftbench.backends.torch_backend import cast_parameters, mean_pool, packed_scorer
from driftbench.batching import token_chunks
from driftbench.embed import extract_embeddings
from driftbench.packed import PackedLlama, equal_length_groups, unsupported

TEXTS = [
    "short",
    "a somewhat longer sentence with several more tokens in it",
    "medium length text here",
    "medium length text, too",
    "x",
    "y",
    "the quick brown fox jumps over the lazy dog " * 3,
]


def llama(**overrides) -> LlamaModel:
    """A small random Llama decoder; grouped-query attention unless told otherwise."""
    kw = dict(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    return LlamaModel(LlamaConfig(**{**kw, **overrides})).eval()


def hf_states(model, ids: list[int]) -> tuple:
    """hidden_states of one text's own unpadded forward."""
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"num_key_value_heads": 4},  # plain multi-head attention
        {"head_dim": 32},  # head_dim != hidden_size / heads
        {  # Llama 3 rope scaling: the packed forward takes cos/sin from the model's rotary_emb
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            }
        },
    ],
)
def test_every_layer_equals_the_hf_forward_of_each_text_alone(tiny_model, overrides):
    model = llama(**overrides)
    ids = sorted(tiny_model.tokenizer(TEXTS)["input_ids"], key=len, reverse=True)
    n = model.config.num_hidden_layers
    packed = PackedLlama(model)
    starts = np.cumsum([0] + [len(r) for r in ids])
    with torch.inference_mode():
        for layer in range(-(n + 1), n + 1):
            got = packed.hidden(ids, layer)
            assert got.shape == (starts[-1], model.config.hidden_size)
            # last_only runs the last block for each text's last token alone: the same rows
            last = packed.hidden(ids, layer, last_only=True)
            torch.testing.assert_close(last, got[starts[1:] - 1], rtol=0, atol=2e-5)
            for i, row in enumerate(ids):
                want = hf_states(model, row)[layer][0]
                torch.testing.assert_close(got[starts[i] : starts[i + 1]], want, rtol=0, atol=2e-5)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("pooling", ["last_token", "mean"])
def test_pooled_embeddings_equal_the_hf_forward_and_use_no_padding(tiny_model, pooling, workers):
    model = llama()
    tok = tiny_model.tokenizer
    z, stats = extract_embeddings(
        model, tok, TEXTS, pooling=pooling, batch_tokens=20, progress=False, workers=workers
    )
    assert stats.forward == "packed" and stats.workers == workers
    assert stats.padded_tokens == stats.real_tokens  # not one padded token
    assert stats.n_forward_batches > 1  # batch_tokens=20 cuts the texts into several chunks
    for i, text in enumerate(TEXTS):
        ids = tok(text)["input_ids"]
        h = hf_states(model, ids)[-1]
        want = h[0, -1] if pooling == "last_token" else mean_pool(h, torch.ones(1, len(ids)))[0]
        np.testing.assert_allclose(z[i], want.numpy(), rtol=0, atol=2e-5)
    z_hf, hf = extract_embeddings(
        model, tok, TEXTS, pooling=pooling, batch_tokens=20, progress=False, packed=False
    )
    assert hf.forward == "hf" and hf.workers == 1  # hooks on shared modules: one at a time
    np.testing.assert_allclose(z, z_hf, rtol=0, atol=2e-5)


def test_only_the_blocks_up_to_the_layer_run(tiny_model):
    model = llama(num_hidden_layers=4)
    ids = [tiny_model.tokenizer("one text")["input_ids"]]
    with torch.inference_mode():
        want = PackedLlama(model).hidden(ids, layer=2)
        for block in model.layers[2:]:  # poison blocks 2 and 3: hidden_states[2] must not see them
            block.mlp.down_proj.weight.fill_(float("nan"))
        got = PackedLlama(model).hidden(ids, layer=2)
        assert torch.isnan(PackedLlama(model).hidden(ids, layer=-1)).all()  # the poison works
    assert torch.equal(got, want)


def test_unsupported_models_say_why_and_take_the_hf_path(tiny_model):
    assert unsupported(llama()) is None
    assert "biases" in unsupported(llama(attention_bias=True))
    assert "hidden_act=gelu" in unsupported(llama(hidden_act="gelu"))
    assert "training mode" in unsupported(llama().train())
    from peft import LoraConfig, get_peft_model

    with_lora = llama()
    get_peft_model(with_lora, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert "layers.0.self_attn.q_proj is a peft.tuners.lora" in unsupported(with_lora.eval())
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2)).eval()
    assert "is not a plain LlamaModel" in unsupported(bert)
    with pytest.raises(ValueError, match="does not cover this model: .*biases"):
        PackedLlama(llama(attention_bias=True))
    _, stats = extract_embeddings(
        llama(attention_bias=True),
        tiny_model.tokenizer,
        TEXTS,
        batch_tokens=EMBED_BATCH_TOKENS,
        progress=False,
    )
    assert stats.forward == "hf" and stats.padded_tokens >= stats.real_tokens


def test_rows_must_come_longest_first_and_the_layer_in_range():
    packed = PackedLlama(llama())
    with pytest.raises(ValueError, match="sorted longest first"):
        packed.hidden([[1, 2], [1, 2, 3]])
    with pytest.raises(ValueError, match="embed.layer=4; accepted for this 3-layer model: -4..3"):
        packed.hidden([[1, 2]], layer=4)


def test_equal_length_groups_and_token_chunks():
    assert equal_length_groups([5, 5, 3, 1, 1, 1]) == [(0, 2, 5), (10, 1, 3), (13, 3, 1)]
    lengths = [3, 9, 1, 4, 4, 12]
    chunks = token_chunks(lengths, batch_tokens=10)
    assert sorted(i for c in chunks for i in c) == list(range(len(lengths)))
    flat = [lengths[i] for c in chunks for i in c]
    assert flat == sorted(lengths, reverse=True)  # longest first, chunk after chunk
    for c in chunks:  # at most 10 real tokens, unless one text alone is longer
        assert sum(lengths[i] for i in c) <= 10 or len(c) == 1
    assert chunks[0] == [5]  # 12 tokens: a chunk of its own
    with pytest.raises(ValueError, match="batch_tokens=0; accepted: an integer >= 1"):
        token_chunks(lengths, 0)


# ── bfloat16 ─────────────────────────────────────────────────────────────────────────────────

# bfloat16 keeps 8 significant bits: rounding every element of a vector moves it by at most its
# unit roundoff, 2^-9 of its norm (0.11 degrees); rounding the float32 embeddings to bfloat16
# alone moves the tiny models' tokens by up to 0.113 degrees. The packed forward rounds where
# Hugging Face's does (measured: bit for bit, every layer, every model below); one rounding fewer
# per op (a residual add fused into its GEMM, a float32 rotary rotation) already differed by
# 0.23 degrees, 2x this bound, after one block (each of the two alone, or RMSNorm's scale in
# bfloat16, fails the test below). So the bound tells a faithful forward from one that rounds
# elsewhere, with room for a GEMM that sums in another order for another number of rows. At
# SmolLM2's widths they do: 0.12% of the elements differ after one block, and over 30 blocks
# bfloat16 amplifies that to ~0.7 degrees, as far as Hugging Face's own padded batches lie from
# its one-text forward (docs/configuration.md, "Compute dtype"); a test on a real model could
# only bound that noise, these tiny ones check where the forward rounds.
BF16_ROUNDOFF = 2.0**-9


def bf16_llama(**overrides) -> LlamaModel:
    """:func:`llama`'s model with its parameters in bfloat16, as ``load_model`` casts them."""
    return cast_parameters(llama(**overrides), torch.bfloat16)


def relative_error(got, want) -> np.ndarray:
    """|got - want| / |want| of each row (a vector's error against its norm), in float64."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return np.linalg.norm(got - want, axis=-1) / np.linalg.norm(want, axis=-1)


def as_array(t: torch.Tensor) -> np.ndarray:
    return t.float().numpy()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"num_key_value_heads": 4},
        {"head_dim": 32},
        {"rope_scaling": {"rope_type": "linear", "factor": 4.0}},
    ],
)
def test_bfloat16_every_layer_equals_the_hf_bfloat16_forward(tiny_model, overrides):
    model, model_f32 = bf16_llama(**overrides), llama(**overrides)
    ids = sorted(tiny_model.tokenizer(TEXTS)["input_ids"], key=len, reverse=True)
    n = model.config.num_hidden_layers
    packed, packed_f32 = PackedLlama(model), PackedLlama(model_f32)
    starts = np.cumsum([0] + [len(r) for r in ids])
    with torch.inference_mode():
        for layer in range(-(n + 1), n + 1):
            got = packed.hidden(ids, layer)
            assert got.dtype == torch.bfloat16  # hidden states in the weights' dtype, as HF's
            last = packed.hidden(ids, layer, last_only=True)
            ends = as_array(got[starts[1:] - 1])
            assert relative_error(as_array(last), ends).max() <= BF16_ROUNDOFF
            for i, row in enumerate(ids):
                want = hf_states(model, row)[layer][0]
                rows = slice(starts[i], starts[i + 1])
                assert relative_error(as_array(got[rows]), as_array(want)).max() <= BF16_ROUNDOFF
            moved = angles_deg(as_array(got), as_array(packed_f32.hidden(ids, layer)))
            assert moved.max() < MAX_BF16_ANGLE_DEG


@pytest.mark.parametrize("layer", [-1, 1])
@pytest.mark.parametrize("pooling", ["last_token", "mean"])
def test_bfloat16_pooled_embeddings_equal_the_hf_forward_in_float32_arrays(
    make_cfg, shared_cache, pooling, layer
):
    """The tiny model loaded as a run loads it in bfloat16: the packed forward, float32
    embeddings equal to its Hugging Face forward's (unpadded, text by text, and the extractor's
    padded batches), within a degree of the float32 model's."""
    spec = tiny_spec(make_cfg)
    loaded = load_model(spec, shared_cache, head="base", dtype="bfloat16")
    model, tok = loaded.model, loaded.tokenizer
    kw = dict(pooling=pooling, layer=layer, batch_tokens=20, progress=False)
    z, stats = extract_embeddings(model, tok, TEXTS, **kw)
    assert stats.forward == "packed" and stats.padded_tokens == stats.real_tokens
    assert z.dtype == np.float32
    for i, text in enumerate(TEXTS):
        ids = tok(text)["input_ids"]
        h = hf_states(model, ids)[layer].float()
        want = h[0, -1] if pooling == "last_token" else mean_pool(h, torch.ones(1, len(ids)))[0]
        assert relative_error(z[i], want.numpy()) <= BF16_ROUNDOFF
    z_hf, hf = extract_embeddings(model, tok, TEXTS, packed=False, **kw)
    assert hf.forward == "hf"
    assert relative_error(z, z_hf).max() <= BF16_ROUNDOFF
    # one padded batch: Hugging Face's masked attention rounds otherwise than its unpadded
    # forward, up to 0.0028 of the norm (0.16 degrees) from it here, so this looser bound (four
    # roundings) only checks that path; the unpadded comparison above is the tight one
    one_padded_batch = dict(batch_tokens=10_000, max_pad_fraction=0.99)
    z_pad, pad = extract_embeddings(model, tok, TEXTS, packed=False, **{**kw, **one_padded_batch})
    assert pad.padded_tokens > pad.real_tokens
    assert relative_error(z, z_pad).max() <= 4 * BF16_ROUNDOFF
    f32 = load_model(spec, shared_cache, head="base")
    z_f32, _ = extract_embeddings(f32.model, f32.tokenizer, TEXTS, **kw)
    moved = angles_deg(z_f32, z)
    assert moved.max() < MAX_BF16_ANGLE_DEG and moved.mean() > 0.01  # bf16 did compute in bf16


def test_bfloat16_causal_lm_scores_through_the_packed_forward_as_hf_does(tiny_model):
    """The audit's per-token CE of a bfloat16 causal LM: packed, equal to its own HF forward's."""
    from transformers import LlamaForCausalLM

    model = cast_parameters(LlamaForCausalLM(tiny_model.model.config).eval(), torch.bfloat16)
    rows = sorted(tiny_model.tokenizer(TEXTS)["input_ids"], key=len, reverse=True)
    score = packed_scorer(model)
    assert score is not None
    with torch.inference_mode():
        got = score(rows, 0)
        for i, row in enumerate(rows):
            if len(row) < 2:  # nothing to score
                continue
            logits = model(input_ids=torch.tensor([row])).logits[0].float()
            want = F.cross_entropy(logits[:-1], torch.tensor(row[1:]), reduction="none")
            np.testing.assert_allclose(got[i, : len(row) - 1], want.numpy(), rtol=BF16_ROUNDOFF)


def test_only_float32_or_bfloat16_weights_take_the_packed_forward():
    assert unsupported(bf16_llama()) is None
    half = llama().to(torch.float16)
    assert unsupported(half) == (
        "weights in float16; the packed forward takes float32 or bfloat16, one for all"
    )
    mixed = llama()
    mixed.norm.weight.data = mixed.norm.weight.data.to(torch.bfloat16)
    assert "weights in bfloat16, float32;" in unsupported(mixed)
