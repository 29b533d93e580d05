"""The padding-free Llama forward equals the Hugging Face forward, text by text and layer by
layer, and every model it does not cover takes the Hugging Face path."""

import numpy as np
import pytest
import torch
from conftest import EMBED_BATCH_TOKENS
from transformers import LlamaConfig, LlamaModel

from driftbench.backends.torch_backend import mean_pool
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
