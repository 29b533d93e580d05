"""``runtime.dtype``: what the models compute in. float32 by default, bfloat16 where asked (or
``auto`` on bf16 hardware); the resolved dtype reaches every model a run loads, keys the run
and its caches (float32 keys unchanged), and a bad or unsupported choice is one line, exit 2."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import sft_config
from omegaconf import OmegaConf
from test_launch import TINY, launch, one_error_line
from test_rho_task import TINY_RHO

import driftbench.backends as backends
from driftbench.backends import load_model, resolve_dtype
from driftbench.backends.torch_train import apply_lora, train
from driftbench.embed import embedding_parts, extract_embeddings
from driftbench.launcher import ConfigError, prepare, run
from driftbench.models import ModelSpec
from driftbench.runs import result_key
from driftbench.tasks.drift_eval import task as drift_task
from driftbench.tasks.rho_sft import task as rho_task

ROOT = Path(__file__).resolve().parents[1]
# bf16 keeps 8 significant bits (a relative 2^-9 per rounding, ~0.1 degrees); on the tiny
# model over the 200 tweets of TINY it moved an embedding by at most 0.369 degrees (last token;
# mean 0.262; 0.367 through the HF forward) and 0.389 (mean pooling; mean 0.235), while two
# distinct tweets lie >= 15 degrees apart: the bound leaves a 2.5x margin over the worst text
# and is 15x tighter than the texts
MAX_BF16_ANGLE_DEG = 1.0


def tiny_spec(make_cfg) -> ModelSpec:
    return ModelSpec.from_dict(make_cfg("model=tiny_random").model)


def dtypes_of(module: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in module.parameters()}


# ── the dtype reaches the model ──────────────────────────────────────────────────────────────


@pytest.mark.parametrize("head", ["base", "causal_lm"])
def test_the_model_computes_in_float32_by_default_and_in_bfloat16_when_asked(
    make_cfg, shared_cache, head
):
    spec = tiny_spec(make_cfg)
    assert dtypes_of(load_model(spec, shared_cache, head=head).model) == {torch.float32}
    loaded = load_model(spec, shared_cache, head=head, dtype="bfloat16")
    assert dtypes_of(loaded.model) == {torch.bfloat16}
    # buffers stay as from_pretrained keeps them: the rotary frequencies in float32
    assert {b.dtype for b in loaded.model.buffers()} == {torch.float32}
    assert loaded.identity["dtype"] == "bfloat16"  # what keys its cached audits


def test_a_run_hands_its_task_the_resolved_dtype_and_the_task_loads_in_it(make_cfg):
    job = prepare(make_cfg(*TINY_RHO, "runtime.dtype=bfloat16"))
    assert job.cfg.runtime.dtype == "bfloat16" and job.key["dtype"] == "bfloat16"
    spec, sft = ModelSpec.from_dict(job.cfg.model), OmegaConf.to_object(job.cfg.sft)
    loaded = rho_task.load_checked_model(job.cfg, spec, sft)  # the audit's and training's model
    assert dtypes_of(loaded.model) == {torch.bfloat16}
    job = prepare(make_cfg(*TINY_RHO))
    assert job.cfg.runtime.dtype == "float32" and job.key["dtype"] == "float32"


def test_bfloat16_training_keeps_float32_lora_weights_and_runs_the_forward_in_bfloat16(
    make_cfg, shared_cache, tiny_model
):
    """The frozen base in bfloat16, the LoRA weights (AdamW's master weights) in float32, the
    forward under autocast: a LoRA matmul gives bfloat16 (in float32 without autocast). The
    first loss is float32's within bf16 rounding, and training lowers it as in float32."""
    knobs = sft_config(
        "sft.lambda_rho=0",
        "sft.optim.lr=5e-3",
        "sft.optim.grad_accum=1",
        "sft.optim.batch_size=2",
        "sft.optim.epochs=5",
        "sft.optim.warmup_ratio=0",
        "sft.lora.dropout=0",
    )
    texts = ["The capital of France is Paris.", "Water boils at 100 degrees.", "a b c d e f"]
    losses = {}
    for dtype in ("float32", "bfloat16"):
        model = load_model(tiny_spec(make_cfg), shared_cache, head="causal_lm", dtype=dtype).model
        torch.manual_seed(0)
        model = apply_lora(model, knobs.lora)  # train() keeps a peft model's adapters
        seen = []
        lora_a = next(m for n, m in model.named_modules() if n.endswith("lora_A.default"))
        hook = lora_a.register_forward_hook(lambda m, i, o, seen=seen: seen.append(o.dtype))
        trained, history = train(model, tiny_model.tokenizer, texts, {}, knobs, progress=False)
        hook.remove()
        trainable = [p for p in trained.parameters() if p.requires_grad]
        frozen = [p for p in trained.parameters() if not p.requires_grad]
        assert trainable and {p.dtype for p in trainable} == {torch.float32}
        assert {p.dtype for p in frozen} == {getattr(torch, dtype)}
        assert set(seen) == {getattr(torch, dtype)}
        losses[dtype] = [h["sft_loss"] for h in history]
    f32, bf16 = losses["float32"], losses["bfloat16"]
    assert abs(bf16[0] - f32[0]) < 0.02 * f32[0]
    assert bf16[-1] < bf16[0] - 0.2 and f32[-1] < f32[0] - 0.2


# ── the result key and the caches ────────────────────────────────────────────────────────────


def test_the_result_key_changes_with_the_dtype_and_float32_keeps_the_key_it_had(
    make_cfg, monkeypatch
):
    cfg = make_cfg(*TINY)
    full = OmegaConf.to_container(cfg, resolve=True)
    read = {k: full[k] for k in ("seed", *drift_task.CONFIG_GROUPS)}
    # the key as it was computed before runtime.dtype existed: no dtype anywhere
    before = result_key(read, drift_task.inputs(cfg), drift_task.RESULTS_VERSION)
    f32 = prepare(cfg).result_key
    bf16 = prepare(make_cfg(*TINY, "runtime.dtype=bfloat16")).result_key
    assert f32 == before and bf16 != f32
    monkeypatch.setattr(backends, "bf16_supported", lambda device: True)
    assert prepare(make_cfg(*TINY, "runtime.dtype=auto")).result_key == bf16
    monkeypatch.setattr(backends, "bf16_supported", lambda device: False)
    assert prepare(make_cfg(*TINY, "runtime.dtype=auto")).result_key == f32


def test_the_embedding_cache_separates_bfloat16_and_keeps_float32_keys(make_cfg, shared_cache):
    spec = tiny_spec(make_cfg)
    args = (spec, shared_cache, "last_token", 256, -1, True, "torch")
    f32, bf16 = embedding_parts(*args), embedding_parts(*args, "bfloat16")
    assert "dtype" not in f32 and embedding_parts(*args, "float32") == f32
    assert bf16 == {**f32, "dtype": "bfloat16", "bf16_packed": 1}  # not the old HF fallback's
    hf = (spec, shared_cache, "last_token", 256, -1, False, "torch")
    assert embedding_parts(*hf, "bfloat16") == {**embedding_parts(*hf), "dtype": "bfloat16"}


# ── the numbers ──────────────────────────────────────────────────────────────────────────────


def angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


@pytest.mark.parametrize("pooling", ["last_token", "mean"])
def test_bfloat16_embeddings_are_within_a_degree_of_float32s(make_cfg, shared_cache, pooling):
    texts = drift_task.load_data(make_cfg(*TINY)).texts
    spec = tiny_spec(make_cfg)
    z = {}
    for dtype in ("float32", "bfloat16"):
        m = load_model(spec, shared_cache, head="base", dtype=dtype)
        z[dtype], _ = extract_embeddings(
            m.model, m.tokenizer, texts, pooling, batch_tokens=2048, progress=False
        )
    assert z["bfloat16"].dtype == np.float32 and z["bfloat16"].shape == z["float32"].shape
    moved = angles_deg(z["float32"], z["bfloat16"])
    assert moved.max() < MAX_BF16_ANGLE_DEG
    assert moved.mean() > 0.01  # the bf16 model did compute in bf16
    unit = z["float32"] / np.linalg.norm(z["float32"], axis=1, keepdims=True)
    apart = np.degrees(np.arccos(np.clip(unit @ unit.T, -1, 1)))[np.triu_indices(len(texts), 1)]
    distinct = apart[apart > 1e-3]  # duplicate tweets embed to one vector
    assert distinct.min() > 10 * MAX_BF16_ANGLE_DEG  # tight against how far texts lie apart


# ── refusals ─────────────────────────────────────────────────────────────────────────────────


def test_a_dtype_that_is_no_dtype_is_one_line(tmp_path):
    out = launch(tmp_path, *TINY, "runtime.dtype=float16x", check=False)
    said = one_error_line(out)
    assert "runtime.dtype=float16x; accepted: float32, bfloat16, auto" in said
    assert not list(tmp_path.glob("outputs/**/meta.json"))


def test_bfloat16_on_hardware_without_it_is_one_line_exit_2(tmp_path):
    """launch.py as a user runs it, with the one function that asks the hardware saying no."""
    script = (
        "import runpy, sys, driftbench.backends as b\n"
        "b.bf16_supported = lambda device: False\n"
        f"sys.argv = [{str(ROOT / 'launch.py')!r}, *sys.argv[1:]]\n"
        f"runpy.run_path({str(ROOT / 'launch.py')!r}, run_name='__main__')\n"
    )
    args = [f"runtime.output_root={tmp_path / 'outputs'}", "runtime.progress=false", *TINY]
    out = subprocess.run(
        [sys.executable, "-c", script, *args, "runtime.dtype=bfloat16"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    said = one_error_line(out)
    assert "runtime.dtype=bfloat16 on runtime.device=auto, which has no bfloat16 hardware" in said
    assert "accepted: float32 or auto" in said
    assert not list(tmp_path.glob("outputs/**/meta.json"))


def test_auto_is_float32_without_bf16_hardware_and_in_run_configs(make_cfg, monkeypatch):
    monkeypatch.setattr(backends, "bf16_supported", lambda device: False)
    assert resolve_dtype("auto", "cpu") == "float32"
    with pytest.raises(ConfigError) as err:
        run(make_cfg(*TINY, "runtime.dtype=bfloat16"))
    assert "\n" not in str(err.value) and "no bfloat16 hardware" in str(err.value)


def test_the_mlx_backend_computes_in_float32_only():
    with pytest.raises(ValueError) as err:
        resolve_dtype("bfloat16", "cpu", "mlx")
    assert str(err.value) == "runtime.dtype=bfloat16 with backend=mlx; accepted: float32 or auto"
    assert resolve_dtype("auto", "cpu", "mlx") == "float32"
    assert backends.get_backend("mlx").dtypes == ("float32",)


# ── a change of precision, measured as an update ─────────────────────────────────────────────


def test_a_change_of_precision_is_an_update_whose_angle_is_the_bf16_models_own(
    make_cfg, tmp_path, shared_cache
):
    """drift=precision: checkpoint 1's test texts are embedded by the run's model computing in
    bfloat16, with the run's pooling and layer; its realized angle is the mean angle between
    the test texts as the float32 and the bfloat16 model embed them, computed here directly."""
    cfg = make_cfg(*TINY, "drift=precision", "embed.pooling=mean")
    metrics = run(cfg)
    rows = metrics["checkpoints"]
    assert [r["update"] for r in rows] == ["original", "bfloat16"]
    assert [r["dtype"] for r in rows] == [0.0, 1.0]  # the knob, named for what it is
    data = drift_task.load_data(cfg)
    test = [data.texts[i] for i in data.split["test"]]
    z = {}
    for dtype in ("float32", "bfloat16"):
        m = load_model(tiny_spec(make_cfg), shared_cache, head="base", dtype=dtype)
        z[dtype], _ = extract_embeddings(
            m.model, m.tokenizer, test, "mean", batch_tokens=2048, progress=False
        )
    unit = {k: v / np.linalg.norm(v, axis=1, keepdims=True) for k, v in z.items()}
    moved = np.degrees(
        2
        * np.arctan2(
            np.linalg.norm(unit["float32"] - unit["bfloat16"], axis=1),
            np.linalg.norm(unit["float32"] + unit["bfloat16"], axis=1),
        )
    )
    assert rows[1]["realized_angle_deg"] == pytest.approx(moved.mean(), rel=1e-3)
    assert 0.01 < rows[1]["realized_angle_deg"] < MAX_BF16_ANGLE_DEG


def test_a_precision_update_to_a_dtype_the_machine_lacks_is_one_line(make_cfg, monkeypatch):
    monkeypatch.setattr(backends, "bf16_supported", lambda device: False)
    with pytest.raises(ConfigError) as err:
        run(make_cfg(*TINY, "drift=precision"))
    assert "\n" not in str(err.value)
    assert "drift.dtypes=bfloat16 on runtime.device=auto, which has no bfloat16" in str(err.value)
    with pytest.raises(ConfigError) as err:
        run(make_cfg(*TINY, "drift=precision", "drift.dtypes=[float16]"))
    assert "drift.dtypes=['float16']; accepted: a non-empty list of float32, bfloat16" in str(
        err.value
    )
