"""backend=mlx gives the torch backend's numbers on the same weights and texts: embeddings
(cosine >= 0.9999), per-token CE (within 1e-3), one rho-guided training step (loss within
1e-3), greedy generations; and the tasks run on it end to end."""

import copy
import json
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import EMBED_BATCH_TOKENS, RHO_BATCH_TOKENS, sft_config
from test_launch import TINY, only_run_dir
from test_rho_task import TINY_RHO

from driftbench.backends import load_model
from driftbench.backends.mlx_model import MLX_INSTALL, mlx_available
from driftbench.backends.torch_train import apply_lora as torch_apply_lora
from driftbench.backends.torch_train import train as torch_train
from driftbench.launcher import ConfigError, run
from driftbench.models import ModelSpec
from driftbench.rho.probes import load_probes
from driftbench.rho.scoring import greedy_generate, score_texts

pytestmark = pytest.mark.skipif(
    not mlx_available(), reason=f"mlx / mlx-lm not installed: {MLX_INSTALL}"
)
MODELS = ["tiny_random", pytest.param("smollm2_135m_instruct", marks=pytest.mark.slow)]
TEXTS = [
    "The capital of France is Paris.",
    "Water boils at 100 degrees Celsius at sea level, and at a lower temperature on a mountain.",
    "Hi",
    "Is this statement true? The moon is made of cheese. Answer: no",
]


def spec_of(name: str) -> ModelSpec:
    from conftest import ROOT

    return ModelSpec.from_dict(yaml.safe_load((ROOT / "conf/model" / f"{name}.yaml").read_text()))


@pytest.fixture(scope="module", params=MODELS)
def both(request, shared_cache):
    """(torch causal LM, torch base model, mlx model, model name) on the same weights."""
    spec = spec_of(request.param)
    lm = load_model(spec, shared_cache, head="causal_lm")
    base = load_model(spec, shared_cache, head="base")
    mlx = load_model(spec, shared_cache, backend="mlx")
    return lm, base, mlx, request.param


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("pooling", ["last_token", "mean"])
def test_mlx_embeddings_equal_torch_embeddings(both, pooling):
    from driftbench.embed import extract_embeddings

    _, base, mlx, _ = both
    texts = TEXTS + [p["text"] for p in load_probes("toxicity", 4, 42)]
    kw = {"batch_tokens": EMBED_BATCH_TOKENS, "progress": False}
    z_torch, _ = extract_embeddings(base.model, base.tokenizer, texts, pooling, **kw)
    z_mlx, stats = extract_embeddings(mlx.model, mlx.tokenizer, texts, pooling, **kw)
    assert z_mlx.shape == z_torch.shape and stats.n_forward_batches >= 1
    assert cosine(z_torch, z_mlx).min() >= 0.9999


def test_mlx_per_token_ce_equals_torch(both):
    lm, _, mlx, _ = both
    texts = TEXTS + [p["text"] for p in load_probes("factual", 4, 42)]
    kw = {"batch_tokens": RHO_BATCH_TOKENS}
    ref = score_texts(lm.model, lm.tokenizer, texts, backend=lm.backend, **kw)
    got = score_texts(mlx.model, mlx.tokenizer, texts, backend=mlx.backend, **kw)
    assert [c.shape for c in got.token_ce] == [c.shape for c in ref.token_ce]
    for a, b in zip(ref.token_ce, got.token_ce, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-3, rtol=0)
    assert got.token_ce[2].size == ref.token_ce[2].size  # "Hi": one token or two, same as torch


def test_mlx_greedy_generation_equals_torch(both):
    lm, _, mlx, _ = both
    prompts = ["The capital of France is", "Question: what is two plus two?\nAnswer:"]
    assert greedy_generate(
        mlx.model, mlx.tokenizer, prompts, 12, RHO_BATCH_TOKENS, backend=mlx.backend
    ) == greedy_generate(lm.model, lm.tokenizer, prompts, 12, RHO_BATCH_TOKENS, backend=lm.backend)


def test_mlx_generation_applies_the_repetition_penalty_as_torch_does(both):
    lm, _, mlx, _ = both
    prompts = ["The capital of France is", "List the colours: red, green, blue, red, green,"]
    on_mlx = {"backend": mlx.backend}
    plain = greedy_generate(mlx.model, mlx.tokenizer, prompts, 16, RHO_BATCH_TOKENS, **on_mlx)
    try:
        for m in (lm.model, mlx.model):
            m.generation_config.repetition_penalty = 1.5
        got = greedy_generate(mlx.model, mlx.tokenizer, prompts, 16, RHO_BATCH_TOKENS, **on_mlx)
        want = greedy_generate(
            lm.model, lm.tokenizer, prompts, 16, RHO_BATCH_TOKENS, backend=lm.backend
        )
    finally:
        for m in (lm.model, mlx.model):
            m.generation_config.repetition_penalty = 1.0
    assert got == want
    assert got != plain  # the penalty changed what both backends generate


def tiny_folder(folder, shared_cache, **generation):
    """tiny_random saved as a local Hugging Face folder, its generation config set to
    ``generation``: a model as a user would bring it with model=hf."""
    lm = load_model(spec_of("tiny_random"), shared_cache, head="causal_lm")
    for key, value in generation.items():
        setattr(lm.model.generation_config, key, value)
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    return folder


def test_mlx_refuses_generation_settings_it_lacks_before_any_model_loads(
    make_cfg, tmp_path, shared_cache
):
    folder = tiny_folder(tmp_path / "model", shared_cache, no_repeat_ngram_size=3)
    hf = ["model=hf", f"model.name_or_path={folder}", "backend=mlx"]
    rho = [o for o in TINY_RHO if not o.startswith("model=")]
    with pytest.raises(ConfigError) as e:
        run(make_cfg(*rho, *hf))
    assert "\n" not in str(e.value)
    assert str(e.value) == (
        "model 'hf': its generation config sets no_repeat_ngram_size=3, which greedy decoding "
        "on backend=mlx does not implement (of such settings it honours repetition_penalty "
        "only); use backend=torch"
    )
    assert not list(tmp_path.rglob("meta.json"))  # refused before any run dir
    spec = ModelSpec(name="hf", source="hf", name_or_path=str(folder))
    with pytest.raises(ValueError, match="sets no_repeat_ngram_size=3"):  # refused at load too
        load_model(spec, shared_cache, head="causal_lm", backend="mlx")
    # embeddings do not generate: the model loads for them
    base = load_model(spec, shared_cache, head="base", backend="mlx")
    assert base.model.generation_config.no_repeat_ngram_size == 3


def copy_lora_a(peft_model, mlx_model) -> int:
    """peft's initial LoRA A (r, in) into mlx-lm's lora_a (in, r); both B start at zero."""
    import mlx.core as mx

    from driftbench.backends.mlx_train import linear_paths

    mlx_layers = linear_paths(mlx_model)
    n = 0
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            path = name.split("base_model.model.", 1)[1]
            target = mlx_layers.get(path + ".linear") or mlx_layers[path]
            parent = mlx_model.model
            for part in path.split("."):
                parent = parent[int(part)] if part.isdigit() else getattr(parent, part)
            a = module.lora_A["default"].weight.detach().numpy().T
            parent.lora_a = mx.array(np.ascontiguousarray(a))
            assert target is parent.linear
            n += 1
    return n


def test_one_rho_guided_training_step_gives_the_same_loss_on_both_backends(both, shared_cache):
    from driftbench.backends.mlx_train import apply_lora
    from driftbench.backends.mlx_train import train as mlx_train

    lm, _, mlx, name = both
    torch_model = copy.deepcopy(lm.model)
    mlx_model = load_model(spec_of(name), shared_cache, backend="mlx").model  # a fresh copy
    cfg = sft_config(
        "sft.lambda_rho=0.5",
        "sft.margin=0.1",
        "sft.optim.grad_accum=1",
        "sft.optim.batch_size=2",
        "sft.optim.max_steps=2",
        "sft.lora.dropout=0",
    )
    sft = [t + " It is so." for t in TEXTS]
    pairs = {
        b: [{"positive": t, "negative": t.replace("true", "false")} for t in TEXTS]
        for b in ("factual", "bias")
    }
    torch.manual_seed(0)
    peft = torch_apply_lora(torch_model, cfg.lora)
    apply_lora(mlx_model, cfg.lora, seed=0)
    assert copy_lora_a(peft, mlx_model) == len(mlx_model.lora["paths"]) > 0
    _, h_torch = torch_train(peft, lm.tokenizer, sft, pairs, cfg, seed=3, progress=False)
    _, h_mlx = mlx_train(mlx_model, mlx.tokenizer, sft, pairs, cfg, seed=3, progress=False)
    assert len(h_torch) == len(h_mlx) == 2
    for a, b in zip(h_torch, h_mlx, strict=True):  # step 2's loss is after one update
        assert b["sft_loss"] == pytest.approx(a["sft_loss"], abs=1e-3)
        assert b["contrastive_loss"] == pytest.approx(a["contrastive_loss"], abs=1e-3)
        assert b["real_tokens"] == a["real_tokens"] and b["lr"] == pytest.approx(a["lr"])
    kw = {"batch_tokens": RHO_BATCH_TOKENS}
    after_torch = score_texts(peft, lm.tokenizer, TEXTS, backend=lm.backend, **kw).mean_ce
    after_mlx = score_texts(mlx_model, mlx.tokenizer, TEXTS, backend=mlx.backend, **kw).mean_ce
    np.testing.assert_allclose(after_mlx, after_torch, atol=1e-3)
    before = score_texts(lm.model, lm.tokenizer, TEXTS, backend=lm.backend, **kw).mean_ce
    assert np.nanmax(np.abs(after_torch - before)) > 1e-4  # the steps changed the model


def test_drift_run_on_mlx_matches_the_torch_run(make_cfg, tmp_path):
    m_torch = run(make_cfg(*TINY))
    m_mlx = run(make_cfg(*TINY, "backend=mlx"))
    a = [c["roc_auc"] for c in m_torch["checkpoints"]]
    b = [c["roc_auc"] for c in m_mlx["checkpoints"]]
    np.testing.assert_allclose(b, a, atol=2e-3)


def test_rho_sft_run_on_mlx_saves_an_mlx_lm_adapter(make_cfg, tmp_path):
    # mlx on a Linux CPU is slow (~3 GFLOP/s): one scored and one generated behaviour, short texts
    small = ["task.audit_behaviors=[factual,bias]", "sft.max_length=64"]
    metrics = run(make_cfg(*TINY_RHO, *small, "backend=mlx"))
    d = only_run_dir(tmp_path / "outputs")
    cfg = json.loads((d / "adapter" / "adapter_config.json").read_text())
    assert cfg["lora_parameters"]["rank"] == 8 and cfg["lora_parameters"]["scale"] == 2.0
    assert sorted(cfg["lora_parameters"]["keys"]) == [
        "self_attn.k_proj",
        "self_attn.o_proj",
        "self_attn.q_proj",
    ]
    assert (d / "adapter" / "adapters.safetensors").stat().st_size > 0
    assert metrics["training"]["steps"] == 1
    assert set(metrics["behaviors"]) == {"factual", "bias"}
    assert json.loads((d / "stress_after.json").read_text())["harmful"]["n"] == 2


def test_mlx_refuses_an_architecture_mlx_lm_lacks_by_name(make_cfg):
    with pytest.raises(ConfigError, match=r"BertModel \(model_type 'bert'\) is not supported"):
        run(make_cfg("model=minilm_l6", "backend=mlx"))


def test_mlx_missing_gives_the_install_command(make_cfg, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlx", None)  # as on a machine without mlx
    with pytest.raises(ConfigError, match=r"backend=mlx needs mlx and mlx-lm.*pip install"):
        run(make_cfg("model=tiny_random", "backend=mlx"))
