"""Benchmark the embedding extractor against a naive loop and the machine's matmul roofline.

All are measured in one run on the same machine and texts:
  * fp32 matmul GFLOP/s (best of 5, 2048 x 2048): the roofline, the higher of one matmul on
    all of torch's threads and one matmul per single-threaded worker at once (the layout the
    packed forward runs in, see driftbench.workers);
  * a sustained fp32 matmul: 2048 x 2048 matmuls back to back for as long as one extraction
    takes, next to each round: the average rate a pure-matmul job of that length gets here;
  * naive: one text at a time through the causal-LM head (what a first script does);
  * driftbench: driftbench.embed as a run uses it (Llama models: the padding-free forward of
    driftbench.packed on one single-threaded worker per CPU thread), in ``--rounds`` rounds.
    This shared machine's matmul rate drifts by tens of percent within a minute, so each
    round's roofline is measured right before and right after it and the higher of the two is
    used (the harder bar: the highest of four best-of-5 readings); the median round is the
    result. ``fraction_of_best_of_5_before`` is the issue's measure as written (one best of 5,
    one matmul, taken right before the round), reported beside it;
  * driftbench_one_worker: the same packed forward as one loop whose ops use all of torch's
    threads (``workers=1``), one round: what the workers gain;
  * driftbench_hf: the same extractor through the model's own Hugging Face forward
    (length-bucketed padded batches), what every other architecture takes, one round;
  * gemm_share: one more call of each under torch.profiler (all threads): the share of the op
    time spent in the linear layers' GEMMs, and their GFLOP/s (GEMM seconds summed over the
    workers, divided by the number of workers), which the machine's drift barely moves;
  * cache: the same call again, served from the embedding cache.
Achieved GFLOP/s = 2 x non-embedding params x real tokens / s (the issue's definition). With
last-token pooling the packed forward runs its last block's query, output projection and MLP for
each text's last token only (nothing else reads the other rows), so it executes fewer FLOPs than
that count; ``executed_gflops`` is the rate of the FLOPs it does run, reported beside it.

    python bench/embed.py [--n-texts 400] [--model smollm2_135m_instruct] [--rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from roofline import matmul_gflops, sustained_matmul_gflops  # noqa: E402  (bench/ is on sys.path when run as a script)

import driftbench  # noqa: E402,F401
from driftbench.backends import load_model  # noqa: E402
from driftbench.data import load_toxicity, resolve_data_path  # noqa: E402
from driftbench.embed import cached_embeddings, extract_embeddings  # noqa: E402
from driftbench.fileio import atomic_write_json  # noqa: E402
from driftbench.models import ModelSpec  # noqa: E402
from driftbench.workers import cpu_workers  # noqa: E402


def non_embedding_params(model) -> int:
    emb = sum(p.numel() for p in model.get_input_embeddings().parameters())
    return sum(p.numel() for p in model.parameters()) - emb


def naive(causal_lm, tokenizer, texts: list[str], max_length: int) -> float:
    """One text per forward through the full causal LM, last hidden state's last token."""
    t = time.perf_counter()
    with torch.inference_mode():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)
            out = causal_lm(**ids, output_hidden_states=True)
            out.hidden_states[-1][0, -1].numpy()
    return time.perf_counter() - t


def skipped_params_per_token(model) -> int:
    """Weights of the last block that the packed forward's last-token pooling applies to each
    text's last token alone: all but the key and value projections."""
    block = model.layers[-1]
    kv = block.self_attn.k_proj.weight.numel() + block.self_attn.v_proj.weight.numel()
    return sum(p.numel() for p in block.parameters() if p.dim() == 2) - kv


GEMMS = ("aten::mm", "aten::addmm", "aten::addmm_")


def gemm_profile(fn) -> dict:
    """Share of self CPU time in the linear layers' GEMMs during ``fn()``, and their seconds."""
    from torch._C._profiler import _ExperimentalConfig
    from torch.profiler import ProfilerActivity, profile

    # the workers' threads too (torch.profiler records the calling thread's ops by default)
    every_thread = _ExperimentalConfig(profile_all_threads=True)
    with profile(activities=[ProfilerActivity.CPU], experimental_config=every_thread) as prof:
        fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMMS)
    return {"gemm_share": gemm / total, "gemm_s": gemm / 1e6, "profiled_s": total / 1e6}


def roofline() -> tuple[float, dict]:
    """The higher of the two matmul layouts (see the module docstring), and both readings."""
    layouts = {"one_matmul": matmul_gflops()}
    workers = cpu_workers("cpu")
    if workers > 1:
        layouts[f"{workers}_workers"] = matmul_gflops(workers=workers)
    return max(layouts.values()), layouts


def timed_round(extract, sustained_s: float, sustained_first: bool) -> dict:
    """One extraction between two roofline measurements (the higher one is its roofline), and
    ``sustained_s`` of back-to-back matmuls right before or after it (alternated across rounds,
    so a drift of the machine's rate during a round favours neither)."""
    sustained = sustained_matmul_gflops(sustained_s) if sustained_first else None
    before, before_layouts = roofline()
    stats = extract()
    after, after_layouts = roofline()
    if sustained is None:
        sustained = sustained_matmul_gflops(sustained_s)
    return {
        "stats": stats,
        "roofline": max(before, after),
        "roofline_before_after": [before, after],
        "roofline_layouts": [before_layouts, after_layouts],
        "sustained": sustained,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-texts", type=int, default=400)
    ap.add_argument("--model", default="smollm2_135m_instruct")
    ap.add_argument("--batch-tokens", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "embed.json"))
    args = ap.parse_args()

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={args.model}"])
    spec = ModelSpec.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    cache_dir = Path(cfg.runtime.cache_dir).expanduser()
    data = load_toxicity(resolve_data_path(cfg.data.path), n_samples=args.n_texts, sample_seed=0)
    texts, max_length = data.texts, int(cfg.embed.max_length)

    base = load_model(spec, cache_dir, head="base")
    causal = load_model(spec, cache_dir, head="causal_lm")
    params = non_embedding_params(base.model)
    real_tokens = sum(
        len(x) for x in base.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    )

    def gflops(seconds: float) -> float:
        return 2 * params * real_tokens / seconds / 1e9

    # FLOPs the packed forward runs under last-token pooling (see the module docstring)
    trims = spec.pooling == "last_token"
    skipped = skipped_params_per_token(base.model) * (real_tokens - len(texts)) if trims else 0
    executed = (params * real_tokens - skipped) / (params * real_tokens)

    def extract(packed: bool = True, workers: int | None = None):
        return extract_embeddings(
            base.model,
            base.tokenizer,
            texts,
            pooling=spec.pooling,
            max_length=max_length,
            batch_tokens=args.batch_tokens,
            progress=False,
            packed=packed,
            workers=workers,
        )[1]

    def summary(r: dict) -> dict:
        st = r["stats"]
        return {
            "forward": st.forward,
            "workers": st.workers,
            "wall_s": st.wall_s,
            "texts_per_s": len(texts) / st.wall_s,
            "gflops": gflops(st.wall_s),
            "matmul_fp32_gflops": r["roofline"],
            "roofline_before_after": r["roofline_before_after"],
            "roofline_layouts": r["roofline_layouts"],
            "fraction_of_matmul_roofline": gflops(st.wall_s) / r["roofline"],
            # the measure as written: one best of 5 (one matmul, all threads) beforehand
            "fraction_of_best_of_5_before": gflops(st.wall_s)
            / r["roofline_layouts"][0]["one_matmul"],
            "executed_gflops": gflops(st.wall_s) * (executed if st.forward == "packed" else 1),
            "sustained_matmul_gflops": r["sustained"],
            "fraction_of_sustained_matmul": gflops(st.wall_s) / r["sustained"],
            "n_forward_batches": st.n_forward_batches,
            "padded_tokens": st.padded_tokens,
        }

    naive_s = naive(causal.model, causal.tokenizer, texts, max_length)
    t = time.perf_counter()
    extract()  # warm-up; its time sets the length of the sustained matmul readings
    warm_s = time.perf_counter() - t
    extract(False)
    rounds = [
        summary(timed_round(extract, warm_s, sustained_first=i % 2 == 1))
        for i in range(args.rounds)
    ]
    median = sorted(rounds, key=lambda r: r["fraction_of_matmul_roofline"])[len(rounds) // 2]
    of_sustained = sorted(r["fraction_of_sustained_matmul"] for r in rounds)
    of_first = sorted(r["fraction_of_best_of_5_before"] for r in rounds)
    one_worker = summary(timed_round(lambda: extract(workers=1), warm_s, sustained_first=True))
    hf = summary(timed_round(lambda: extract(False), warm_s, sustained_first=False))
    for r in (median, one_worker, hf):
        prof = gemm_profile(lambda r=r: extract(r["forward"] == "packed", r["workers"]))
        ran = executed if r["forward"] == "packed" else 1  # the FLOPs the GEMMs did run
        gemm_wall_s = prof["gemm_s"] / r["workers"]
        r["gemm_share"], r["gemm_gflops"] = prof["gemm_share"], gflops(gemm_wall_s) * ran

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "models").symlink_to(cache_dir / "models", target_is_directory=True)
        kw = dict(
            pooling=spec.pooling,
            max_length=max_length,
            layer=-1,
            batch_tokens=args.batch_tokens,
            cache_dir=tmp,
            progress=False,
        )
        t = time.perf_counter()
        cached_embeddings(spec, texts, **kw)
        first_s = time.perf_counter() - t
        t = time.perf_counter()
        _, info = cached_embeddings(spec, texts, **kw)
        cached_s = time.perf_counter() - t
        assert info["stats"]["cache_hit"]

    result = {
        "model": spec.name,
        "n_texts": len(texts),
        "real_tokens": real_tokens,
        "non_embedding_params": params,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "matmul_fp32_gflops": median["matmul_fp32_gflops"],
        "executed_over_counted_flops": executed,
        "naive": {
            "wall_s": naive_s,
            "texts_per_s": len(texts) / naive_s,
            "gflops": gflops(naive_s),
        },
        "driftbench": {
            **median,
            "median_fraction_of_sustained_matmul": of_sustained[len(of_sustained) // 2],
            "median_fraction_of_best_of_5_before": of_first[len(of_first) // 2],
            "rounds": rounds,
        },
        "driftbench_one_worker": one_worker,
        "driftbench_hf": hf,
        "speedup_vs_naive": naive_s / median["wall_s"],
        "speedup_vs_one_worker": one_worker["wall_s"] / median["wall_s"],
        "speedup_vs_hf_forward": hf["wall_s"] / median["wall_s"],
        "cache": {
            "first_call_s": first_s,
            "cached_call_s": cached_s,
            "cached_over_first": cached_s / first_s,
        },
    }
    atomic_write_json(args.out, result)
    d = result["driftbench"]
    print(
        f"matmul {d['matmul_fp32_gflops']:.0f} GFLOP/s | "
        f"naive {result['naive']['texts_per_s']:.1f} texts/s | "
        f"driftbench ({d['workers']} workers) {d['texts_per_s']:.1f} texts/s = "
        f"{d['gflops']:.0f} GFLOP/s "
        f"({100 * d['fraction_of_matmul_roofline']:.0f}% of matmul, median of {len(rounds)}; "
        f"{100 * d['median_fraction_of_best_of_5_before']:.0f}% of the best of 5 before each "
        f"round alone; executed {d['executed_gflops']:.0f} GFLOP/s; "
        f"{100 * d['median_fraction_of_sustained_matmul']:.0f}% of a sustained matmul; "
        f"GEMMs {100 * d['gemm_share']:.0f}% of the time at {d['gemm_gflops']:.0f} GFLOP/s) | "
        f"HF forward {100 * hf['fraction_of_matmul_roofline']:.0f}% of matmul, GEMMs "
        f"{100 * hf['gemm_share']:.0f}% | x{result['speedup_vs_naive']:.1f} vs naive | "
        f"x{result['speedup_vs_one_worker']:.2f} vs one worker of {torch.get_num_threads()} "
        f"threads | "
        f"x{result['speedup_vs_hf_forward']:.2f} vs the HF forward | "
        f"cache {100 * cached_s / first_s:.2f}% of first"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
