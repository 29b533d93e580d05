"""Pooling under padding, batching and the embedding cache, on a real (tiny, random) model."""

from pathlib import Path

import numpy as np
import pytest
import torch

from driftbench.backends.torch_backend import hidden_at, layer_stack, mean_pool
from driftbench.batching import bucket_batches, pad_batch
from driftbench.embed import EmbeddingCache, cached_embeddings, check_finite, extract_embeddings
from driftbench.models import ModelSpec

CONF = Path(__file__).resolve().parents[1] / "conf"

TEXTS = [
    "short",
    "a somewhat longer sentence with several more tokens in it",
    "medium length text here",
    "x",
    "the quick brown fox jumps over the lazy dog " * 3,
]


def single_forward(model, tok, text, pooling):
    ids = tok(text, return_tensors="pt", truncation=True, max_length=256)
    with torch.inference_mode():
        h = model(**ids).last_hidden_state
    if pooling == "last_token":
        return h[0, -1].numpy()
    return mean_pool(h, ids["attention_mask"])[0].numpy()


@pytest.mark.parametrize("pooling", ["last_token", "mean"])
def test_padded_batch_pooling_equals_unpadded_single_forward(tiny_model, pooling):
    base = tiny_model.model.get_decoder()
    z, stats = extract_embeddings(
        base,
        tiny_model.tokenizer,
        TEXTS,
        pooling=pooling,
        batch_tokens=10_000,
        progress=False,
        max_pad_fraction=0.99,  # one batch, so most rows are padded
        packed=False,  # the model's own forward (the packed one pads nothing: test_packed.py)
    )
    assert stats.n_forward_batches == 1 and stats.padded_tokens > stats.real_tokens  # padding used
    for i, t in enumerate(TEXTS):
        np.testing.assert_allclose(
            z[i], single_forward(base, tiny_model.tokenizer, t, pooling), atol=1e-5
        )


def minilm_base(shared_cache):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from driftbench.backends import load_model

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["model=minilm_l6"])
    spec = ModelSpec.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    return load_model(spec, shared_cache, head="base")


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_an_intermediate_layer_equals_hidden_states_and_skips_the_blocks_after_it(
    tiny_model, shared_cache, arch
):
    if arch == "llama":
        model, tok = tiny_model.model.get_decoder(), tiny_model.tokenizer
    else:
        loaded = minilm_base(shared_cache)
        model, tok = loaded.model, loaded.tokenizer
    input_ids, mask = map(torch.from_numpy, pad_batch(tok(TEXTS)["input_ids"], tok.pad_token_id))
    n = model.config.num_hidden_layers
    ran = []
    hooks = [
        b.register_forward_hook(lambda m, a, o, k=k: ran.append(k))
        for k, b in enumerate(layer_stack(model))
    ]
    try:
        with torch.inference_mode():
            full = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
            for layer in range(-(n + 1), n + 1):
                ran.clear()
                got = hidden_at(model, input_ids, mask, layer)
                torch.testing.assert_close(got, full.hidden_states[layer], rtol=0, atol=1e-6)
                index = layer % (n + 1)
                assert ran == (list(range(n)) if index == n else list(range(index)))
            # the model is left as it was: a full forward still gives the same states
            again = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
    finally:
        for h in hooks:
            h.remove()
    for a, b in zip(full.hidden_states, again.hidden_states, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match=f"embed.layer={n + 1}; accepted for this {n}-layer"):
        hidden_at(model, input_ids, mask, n + 1)


def test_length_buckets_respect_the_token_budget_and_cover_every_text():
    lengths = [5, 50, 7, 30, 30, 1, 64]
    batches = bucket_batches(lengths, 64)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 64 or len(b) == 1
    assert batches[0] == [6]  # longest first


def test_nan_embeddings_get_one_clear_message():
    z = np.ones((3, 4))
    z[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"1 of 3 embeddings contain NaN or inf \(first: row 1\)"):
        check_finite(z, "model 'x'")


def test_second_run_is_served_from_the_cache_without_a_forward(tmp_path, shared_cache):
    (tmp_path / "tokenizers").symlink_to(shared_cache / "tokenizers", target_is_directory=True)
    spec = ModelSpec.from_dict(
        {
            "name": "tiny_random",
            "source": "tiny_random",
            "pooling": "last_token",
            "init_seed": 0,
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
        }
    )
    forwards = []  # every forward, packed or not, starts by embedding its batch's tokens
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: forwards.append(1) if isinstance(m, torch.nn.Embedding) else None
    )
    try:
        kw = dict(
            pooling="last_token",
            max_length=64,
            layer=-1,
            batch_tokens=4096,
            cache_dir=tmp_path,
            progress=False,
        )
        z1, info1 = cached_embeddings(spec, TEXTS, **kw)
        n_first = len(forwards)
        z2, info2 = cached_embeddings(spec, TEXTS, **kw)
        n_second = len(forwards) - n_first
        _, info3 = cached_embeddings(spec, TEXTS, **{**kw, "pooling": "mean"})
    finally:
        hook.remove()
    assert n_first == info1["stats"]["n_forward_batches"] >= 1 and not info1["stats"]["cache_hit"]
    assert n_second == 0 and info2["stats"]["cache_hit"]
    np.testing.assert_array_equal(z1, z2)
    assert info3["cache_key"] != info1["cache_key"] and not info3["stats"]["cache_hit"]
    assert not list(EmbeddingCache(tmp_path).root.glob("*.tmp"))


@pytest.mark.parametrize("pooling", ["last_token", "mean"])
def test_embed_max_length_embeds_a_long_text_as_its_first_tokens(
    make_cfg, tiny_model, tmp_path, shared_cache, pooling
):
    """``embed.max_length`` as a run reads it (``embed_data``, the task's one embedding call):
    a text longer than max_length embeds as the Hugging Face forward of its first max_length
    tokens, and not as the whole text."""
    from driftbench.tasks.drift_eval.task import embed_data, load_data

    cache = tmp_path / "cache"  # its own: no embedding cached before; the tokenizer shared
    cache.mkdir()
    (cache / "tokenizers").symlink_to(shared_cache / "tokenizers", target_is_directory=True)
    cfg = make_cfg(
        "model=tiny_random",
        "data.n_samples=200",
        "embed.max_length=8",
        f"embed.pooling={pooling}",
        cache_dir=cache,
    )
    data = load_data(cfg)
    z, info = embed_data(cfg, data)
    assert not info["stats"]["cache_hit"]
    tok, base = tiny_model.tokenizer, tiny_model.model.get_decoder()
    ids = [tok(t)["input_ids"] for t in data.texts]
    long = [i for i, x in enumerate(ids) if len(x) > 12][:4]
    assert len(long) == 4
    with torch.inference_mode():
        for i in long:
            cut, whole = (
                base(input_ids=torch.tensor([x])).last_hidden_state[0] for x in (ids[i][:8], ids[i])
            )
            want, other = (h[-1] if pooling == "last_token" else h.mean(0) for h in (cut, whole))
            scale = float(want.abs().max())
            np.testing.assert_allclose(z[i], want.numpy(), rtol=0, atol=1e-5 * scale)
            assert np.abs(z[i] - other.numpy()).max() > 1e-2 * scale
