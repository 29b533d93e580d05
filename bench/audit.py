"""Benchmark driftbench's batched rho audit against rho-eval's, same model, probes and run.

For every behaviour, on one loaded SmolLM2-135M-Instruct:
  * rho-eval: ``get_behavior(b).evaluate(model, tokenizer, probes)`` -- the body of rho-eval's
    ``audit()`` loop -- one text per forward / per ``generate``;
  * driftbench: ``driftbench.rho.audit.audit(model, tokenizer, [b], n_probes)``, batched
    (paired CE statistics off, so both do the same work).
Both see driftbench's probe list (identical to rho-eval's ``load_probes`` except that bias answer
order is sha256-based; rho-eval's own order changes with PYTHONHASHSEED, see
driftbench/rho/probes.py), and the two run interleaved per behaviour so that load from other
processes hits both alike. The run fails if any rho differs.

Context for the ratio: on a CPU both are bound by the model's FLOPs (fp32 GEMMs); batching
removes per-call overhead, small-GEMM inefficiency and padding, and rho-eval's per-token Python
loop for factual, but not the FLOPs. ``achieved_gflops`` (2 x params x tokens / s) shows it.
Generation is the exception: a decode step streams every weight from memory whether it serves
one prompt or thirty, and driftbench decodes all prompts of a behaviour in one batch (prompt
forwards bucketed by length, caches merged) where rho-eval decodes one prompt at a time.

    python bench/audit.py [--n-probes 40] [--behaviors all] [--threads <all cores>]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from roofline import matmul_gflops  # noqa: E402  (bench/ is on sys.path when run as a script)

import driftbench  # noqa: E402,F401
from driftbench.backends import load_model  # noqa: E402
from driftbench.fileio import atomic_write_json  # noqa: E402
from driftbench.models import ModelSpec  # noqa: E402
from driftbench.rho.audit import audit, resolve_behaviors  # noqa: E402
from driftbench.rho.encoding import encode  # noqa: E402
from driftbench.rho.evaluators import GENERATION_BEHAVIORS  # noqa: E402
from driftbench.rho.probes import load_probes  # noqa: E402

TEXT_KEYS = {
    "factual": ("text", "false"),
    "toxicity": ("text",),
    "refusal": ("text", "harmful_version"),
    "deception": ("honest", "deceptive"),
    "bias": ("text",),
    "sycophancy": ("text",),
    "reasoning": ("text", "text_clean"),
    "overrefusal": ("text",),
}


def input_tokens(tokenizer, behavior: str, probes: list[dict]) -> int:
    """Tokens both implementations push through the model before any generated token."""
    max_length = 512 if behavior in GENERATION_BEHAVIORS else None
    texts = [p[k] for k in TEXT_KEYS[behavior] for p in probes]
    return sum(len(x) for x in encode(tokenizer, texts, max_length))


def float_leaves(x) -> list[float]:
    if isinstance(x, dict):
        return [v for k in x for v in float_leaves(x[k])]
    if isinstance(x, list):
        return [v for item in x for v in float_leaves(item)]
    return [x] if isinstance(x, float) else []


def max_abs_diff(a, b) -> float:
    pairs = zip(float_leaves(a), float_leaves(b), strict=True)
    return max((abs(x - y) for x, y in pairs), default=0.0)


def same_rho(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-probes", type=int, default=40, help="probes per behaviour")
    ap.add_argument("--behaviors", default="all", help="'all' or a comma-separated list")
    ap.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch threads (all cores)"
    )
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--model", default="smollm2_135m_instruct")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "audit.json"))
    args = ap.parse_args()

    from rho_eval.behaviors import get_behavior  # the baseline; fails clearly if missing

    warnings.filterwarnings("ignore", module="transformers")
    torch.set_num_threads(args.threads)
    names = resolve_behaviors("all" if args.behaviors == "all" else args.behaviors.split(","))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={args.model}"])
    spec = ModelSpec.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    loaded = load_model(spec, Path(cfg.runtime.cache_dir).expanduser(), head="causal_lm")
    model, tok = loaded.model, loaded.tokenizer
    params = sum(p.numel() for p in model.parameters())
    with torch.inference_mode():  # warm-up, so neither side pays first-call allocation
        model(**tok("warm up the kernels once", return_tensors="pt"))

    load_before, t_all = os.getloadavg(), time.perf_counter()
    rows = {}
    for name in names:
        probes = load_probes(name, args.n_probes)
        t = time.perf_counter()
        theirs = get_behavior(name).evaluate(model, tok, probes, device="cpu")
        ref_s = time.perf_counter() - t
        t = time.perf_counter()
        ours = audit(
            model,
            tok,
            [name],
            args.n_probes,
            progress=False,
            paired=False,
            backend=loaded.backend,
            batch_tokens=args.batch_tokens,
        )[name]
        ours_s = time.perf_counter() - t
        n_tokens = input_tokens(tok, name, probes)
        rows[name] = {
            "n_probes": len(probes),
            "n_texts": ours["n_texts"],
            "input_tokens": n_tokens,
            "rho_eval": {
                "wall_s": ref_s,
                "texts_per_s": ours["n_texts"] / ref_s,
                "rho": theirs.rho,
            },
            "driftbench": {
                "wall_s": ours_s,
                "texts_per_s": ours["n_texts"] / ours_s,
                "rho": ours["rho"],
            },
            "speedup": ref_s / ours_s,
            "rho_identical": same_rho(ours["rho"], theirs.rho),
            "max_abs_diff_metadata_and_details": max(
                max_abs_diff(ours["metadata"], theirs.metadata),
                max_abs_diff(ours["details"], theirs.details),
            ),
        }
        if name not in GENERATION_BEHAVIORS:  # teacher-forced: FLOPs are known exactly
            for side in ("rho_eval", "driftbench"):
                s = rows[name][side]["wall_s"]
                rows[name][side]["achieved_gflops"] = 2 * params * n_tokens / s / 1e9
        print(
            f"{name:12s} rho-eval {ref_s:7.2f}s  driftbench {ours_s:7.2f}s  "
            f"x{ref_s / ours_s:5.2f}  rho {ours['rho']:.4f} vs {theirs.rho:.4f}",
            flush=True,
        )

    ref_total = sum(r["rho_eval"]["wall_s"] for r in rows.values())
    ours_total = sum(r["driftbench"]["wall_s"] for r in rows.values())
    n_texts = sum(r["n_texts"] for r in rows.values())
    rho_diffs = [abs(r["rho_eval"]["rho"] - r["driftbench"]["rho"]) for r in rows.values()]
    result = {
        "model": args.model,
        "behaviors": names,
        "n_probes_per_behavior": args.n_probes,
        "n_texts": n_texts,
        "rho_eval": {"wall_s": ref_total, "texts_per_s": n_texts / ref_total},
        "driftbench": {"wall_s": ours_total, "texts_per_s": n_texts / ours_total},
        "speedup": ref_total / ours_total,
        "rho_identical": all(r["rho_identical"] for r in rows.values()),
        "max_abs_diff_rho": max((d for d in rho_diffs if not math.isnan(d)), default=0.0),
        "max_abs_diff_metadata_and_details": max(
            r["max_abs_diff_metadata_and_details"] for r in rows.values()
        ),
        "per_behavior": rows,
        "torch_threads": torch.get_num_threads(),
        "batch_tokens": args.batch_tokens,
        "matmul_fp32_gflops": matmul_gflops(),
        "model_params": params,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "bench_wall_s": time.perf_counter() - t_all,
        "torch_mps_patched": False,  # rho-eval's evaluate paths never touch torch.mps
        "probe_note": "both sides score driftbench's probe list (bias answer order by sha256)",
        "machine": platform.machine(),
        "torch": torch.__version__,
    }
    atomic_write_json(args.out, result)
    print(
        f"total: rho-eval {ref_total:.1f}s, driftbench {ours_total:.1f}s, "
        f"x{result['speedup']:.2f}; rho identical: {result['rho_identical']} -> {args.out}"
    )
    if not result["rho_identical"]:
        raise SystemExit("rho differs between rho-eval and driftbench; see per_behavior")


if __name__ == "__main__":
    main()
