"""Embedding and training throughput of the torch and mlx backends on the same model and texts.

Measured in one run: each backend's fp32 matmul GFLOP/s (2048 x 2048, best of 5), embedding
texts/s and real tokens/s (driftbench.embed.extract_embeddings, same batches), and rho-guided
LoRA training real tokens/s (driftbench.backends.torch_train.train vs
driftbench.backends.mlx_train.train, same SFT texts, pairs and hyper-parameters). On Linux mlx
runs on the CPU (``mlx[cpu]``), which makes the comparison informative only; on Apple silicon
mlx runs on the GPU.

    python bench/backends.py [--n-texts 32] [--train-steps 2] [--model smollm2_135m_instruct]

Defaults are small because mlx on a Linux CPU is slow (a few GFLOP/s, see matmul_fp32_gflops).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from composed import compose_config  # noqa: E402  (bench/ is on sys.path when run as a script)
from roofline import matmul_gflops  # noqa: E402

import driftbench  # noqa: E402,F401
from driftbench.backends import load_model  # noqa: E402
from driftbench.backends.mlx_model import MLX_INSTALL, mlx_available  # noqa: E402
from driftbench.data import load_alpaca, load_toxicity, resolve_data_path  # noqa: E402
from driftbench.embed import extract_embeddings  # noqa: E402
from driftbench.fileio import atomic_write_json  # noqa: E402
from driftbench.models import ModelSpec  # noqa: E402
from driftbench.rho.pairs import contrast_pairs  # noqa: E402
from driftbench.rho.probes import load_probes  # noqa: E402
from driftbench.schema import Sft  # noqa: E402


def mlx_matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    import mlx.core as mx

    a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
    mx.eval(a @ b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        mx.eval(a @ b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def embed_throughput(loaded, texts: list[str], pooling: str, batch_tokens: int) -> dict:
    kw = {"batch_tokens": batch_tokens, "progress": False}
    extract_embeddings(loaded.model, loaded.tokenizer, texts[:8], pooling, **kw)
    _, stats = extract_embeddings(loaded.model, loaded.tokenizer, texts, pooling, **kw)
    return {
        "wall_s": stats.wall_s,
        "texts_per_s": len(texts) / stats.wall_s,
        "real_tokens_per_s": stats.real_tokens / stats.wall_s,
    }


def train_throughput(trainer, loaded, sft: list[str], pairs: dict, cfg: Sft) -> dict:
    _, history = trainer(loaded.model, loaded.tokenizer, sft, pairs, cfg, seed=0, progress=False)
    tokens = sum(h["real_tokens"] for h in history)
    wall = history[-1]["wall_s"]
    return {
        "steps": len(history),
        "wall_s": wall,
        "real_tokens": tokens,
        "real_tokens_per_s": tokens / wall,
        "losses": [(h["sft_loss"], h["contrastive_loss"]) for h in history],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-texts", type=int, default=32)
    ap.add_argument("--train-steps", type=int, default=2)
    ap.add_argument("--model", default="smollm2_135m_instruct")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "backends.json"))
    args = ap.parse_args()
    if not mlx_available():
        sys.exit(f"bench/backends.py needs mlx: {MLX_INSTALL}")
    cfg = compose_config(
        f"model={args.model}",
        f"sft.optim.max_steps={args.train_steps}",
        "sft.optim.grad_accum=1",
        "sft.lora.dropout=0",
        "sft.max_length=128",
    )
    spec = ModelSpec.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    cache_dir = Path(cfg.runtime.cache_dir).expanduser()
    texts = load_toxicity(resolve_data_path(cfg.data.path), n_samples=args.n_texts, sample_seed=0)
    tcfg: Sft = OmegaConf.to_object(cfg.sft)
    n_sft = args.train_steps * tcfg.optim.grad_accum * tcfg.optim.batch_size
    sft = load_alpaca(resolve_data_path("alpaca_sample.jsonl"), n_sft, 0)
    pairs = {b: contrast_pairs(b, load_probes(b, 20, 42)) for b in ("factual", "toxicity")}

    result = {
        "model": spec.name,
        "machine": platform.processor() or platform.machine(),
        "platform": platform.system(),
        "torch_threads": torch.get_num_threads(),
        "note": "mlx on Linux runs on the CPU (mlx[cpu]): informative only",
        "matmul_fp32_gflops": {"torch": matmul_gflops(), "mlx": mlx_matmul_gflops()},
        "embed": {},
        "train": {},
    }
    for backend in ("torch", "mlx"):
        base = load_model(spec, cache_dir, head="base", backend=backend)
        result["embed"][backend] = embed_throughput(
            base, texts.texts, spec.pooling, int(cfg.embed.batch_tokens)
        )
        lm = load_model(spec, cache_dir, head="causal_lm", backend=backend)
        result["train"][backend] = train_throughput(lm.backend.train, lm, sft, pairs, tcfg)
    for part in ("embed", "train"):
        t, m = result[part]["torch"], result[part]["mlx"]
        result[part]["mlx_over_torch_tokens_per_s"] = (
            m["real_tokens_per_s"] / t["real_tokens_per_s"]
        )
    atomic_write_json(args.out, result)
    e, tr = result["embed"], result["train"]
    print(
        f"matmul torch {result['matmul_fp32_gflops']['torch']:.0f} / mlx "
        f"{result['matmul_fp32_gflops']['mlx']:.0f} GFLOP/s | embed tokens/s torch "
        f"{e['torch']['real_tokens_per_s']:.0f}, mlx {e['mlx']['real_tokens_per_s']:.0f} | "
        f"train tokens/s torch {tr['torch']['real_tokens_per_s']:.0f}, mlx "
        f"{tr['mlx']['real_tokens_per_s']:.0f} -> {args.out}"
    )


if __name__ == "__main__":
    main()
