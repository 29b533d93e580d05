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

bfloat16: where the CPU computes it in hardware (``driftbench.backends.bf16_supported``; else
the arm is skipped with one logged line and the JSON says so), driftbench's audit also runs on
a second copy of the model loaded with ``dtype="bfloat16"``, right after its float32 audit of
each behaviour, on the same probes. The JSON adds probes/s in both dtypes, the bf16/fp32 speed
per behaviour and overall (total fp32 time over total bf16 time: the ratio of the whole audit's
probes/s), each behaviour's rho in both dtypes and their difference (listed, not checked: bf16
rounds differently, so ranks and hence rho may move), and a target of 2x (``targets``, one
printed line).

Context for the ratio: on a CPU both are bound by the model's FLOPs (fp32 GEMMs); batching
removes per-call overhead, small-GEMM inefficiency and padding, and rho-eval's per-token Python
loop for factual, but not the FLOPs. ``achieved_gflops`` (2 x params x tokens / s) shows it.
Generation is the exception: a decode step streams every weight from memory whether it serves
one prompt or thirty, and driftbench decodes all prompts of a behaviour in one batch (prompt
forwards bucketed by length, caches merged) where rho-eval decodes one prompt at a time.

On ``--device cuda`` (not yet run on a GPU) both models and rho-eval's run on the GPU (rho-eval's
``evaluate(device="cuda")``), every wall time read after ``torch.cuda.synchronize()``, the
matmul rooflines are 8192^2 on the GPU, and a rho that differs from rho-eval's is reported
(``rho_identical``) but does not fail the run: batched and one-at-a-time GPU kernels sum in
other orders, so a near-tie may swap where the CPU's agree to the bit.

    python bench/audit.py [--n-probes 40] [--behaviors all] [--threads <all cores>]
                          [--device cpu|cuda]
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

from bf16 import bf16_skip_reason, paired_speed, speed_line, target  # noqa: E402  (bench/ on path)
from device import about_gpu, add_device_arg, check_device, clock, matmul_n  # noqa: E402
from roofline import matmul_gflops  # noqa: E402

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


TARGET_BF16_OVER_FP32 = 2.0  # driftbench's bf16 audit over its fp32 audit, probes/s, same run
RHO_CHECK_ON_CUDA = (
    "reported, not enforced: batched and one-at-a-time GPU kernels sum in other orders, so a "
    "near-tie may swap"
)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-probes", type=int, default=40, help="probes per behaviour")
    ap.add_argument("--behaviors", default="all", help="'all' or a comma-separated list")
    ap.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch threads (all cores)"
    )
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--model", default="smollm2_135m_instruct")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "audit.json"))
    add_device_arg(ap)
    return ap.parse_args()


def load_arms(model: str, skipped: str | None, device: str = "cpu") -> dict:
    """The model as driftbench computes it in float32 and, unless ``skipped``, in bfloat16 (a
    second copy loaded with ``dtype="bfloat16"``, as a run with ``runtime.dtype=bfloat16``
    loads it), each warmed up once so no arm pays first-call allocation in its timings."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={model}"])
    spec = ModelSpec.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    cache_dir = Path(cfg.runtime.cache_dir).expanduser()
    dtypes = ["float32"] if skipped else ["float32", "bfloat16"]
    arms = {d: load_model(spec, cache_dir, device, head="causal_lm", dtype=d) for d in dtypes}
    for loaded in arms.values():
        warm = loaded.tokenizer("warm up the kernels once", return_tensors="pt").to(device)
        with torch.inference_mode():
            loaded.model(**warm)
    return arms


def timed_audit(loaded, name: str, args) -> tuple[dict, float]:
    """driftbench's audit of one behaviour (paired CE statistics off, as rho-eval's has none)
    and its wall time (on a GPU, once its kernels have finished)."""
    t = clock(args.device)
    result = audit(
        loaded.model,
        loaded.tokenizer,
        [name],
        args.n_probes,
        progress=False,
        paired=False,
        backend=loaded.backend,
        batch_tokens=args.batch_tokens,
    )[name]
    return result, clock(args.device) - t


def arm_stats(n_probes: int, n_texts: int, wall_s: float, rho: float | None) -> dict:
    """One side's timing of one behaviour (or of all of them, without ``rho``)."""
    out = {"wall_s": wall_s, "texts_per_s": n_texts / wall_s, "probes_per_s": n_probes / wall_s}
    return out if rho is None else {**out, "rho": rho}


def behavior_row(probes: list, theirs, ours: dict, times: dict, n_tokens: int) -> dict:
    """One behaviour: rho-eval against driftbench in float32 (rho must be equal), and
    driftbench's bf16 arm where it ran (its rho listed beside the fp32 one, not checked)."""
    n, n_texts = len(probes), ours["float32"]["n_texts"]
    fp32, ref_s = ours["float32"], times["rho_eval"]
    row = {
        "n_probes": n,
        "n_texts": n_texts,
        "input_tokens": n_tokens,
        "rho_eval": arm_stats(n, n_texts, ref_s, theirs.rho),
        "driftbench": arm_stats(n, n_texts, times["float32"], fp32["rho"]),
        "speedup": ref_s / times["float32"],
        "rho_identical": same_rho(fp32["rho"], theirs.rho),
        "max_abs_diff_metadata_and_details": max(
            max_abs_diff(fp32["metadata"], theirs.metadata),
            max_abs_diff(fp32["details"], theirs.details),
        ),
    }
    if "bfloat16" in ours:
        bf16 = ours["bfloat16"]
        row["driftbench_bf16"] = arm_stats(n, bf16["n_texts"], times["bfloat16"], bf16["rho"])
        row["bf16_over_fp32_speed"] = times["float32"] / times["bfloat16"]
        row["rho_bf16_minus_fp32"] = bf16["rho"] - fp32["rho"]
    return row


def add_gflops(row: dict, params: int) -> None:
    """Teacher-forced behaviours: achieved GFLOP/s of every side (their FLOPs are known
    exactly: 2 x params x input tokens); generation's depend on how long each decode runs."""
    for side in ("rho_eval", "driftbench", "driftbench_bf16"):
        if side in row:
            row[side]["achieved_gflops"] = (
                2 * params * row["input_tokens"] / row[side]["wall_s"] / 1e9
            )


def behavior_line(name: str, row: dict) -> str:
    ref, ours = row["rho_eval"], row["driftbench"]
    line = (
        f"{name:12s} rho-eval {ref['wall_s']:7.2f}s  driftbench {ours['wall_s']:7.2f}s  "
        f"x{row['speedup']:5.2f}  rho {ours['rho']:.4f} vs {ref['rho']:.4f}"
    )
    if "driftbench_bf16" in row:
        b = row["driftbench_bf16"]
        line += (
            f"  | bf16 {b['wall_s']:7.2f}s  x{row['bf16_over_fp32_speed']:5.2f} fp32  "
            f"rho {b['rho']:.4f} (diff {row['rho_bf16_minus_fp32']:+.4f})"
        )
    return line


def run_behaviors(names: list[str], arms: dict, params: int, args) -> dict:
    """Per behaviour, rho-eval then driftbench in float32 then in bfloat16, back to back, so
    load from other processes hits all three alike."""
    from rho_eval.behaviors import get_behavior  # the baseline; fails clearly if missing

    loaded = arms["float32"]
    rows = {}
    for name in names:
        probes = load_probes(name, args.n_probes)
        t = clock(args.device)
        theirs = get_behavior(name).evaluate(
            loaded.model, loaded.tokenizer, probes, device=args.device
        )
        times, ours = {"rho_eval": clock(args.device) - t}, {}
        for dtype, arm in arms.items():
            ours[dtype], times[dtype] = timed_audit(arm, name, args)
        n_tokens = input_tokens(loaded.tokenizer, name, probes)
        rows[name] = behavior_row(probes, theirs, ours, times, n_tokens)
        if name not in GENERATION_BEHAVIORS:
            add_gflops(rows[name], params)
        print(behavior_line(name, rows[name]), flush=True)
    return rows


def bf16_summary(rows: dict, skipped: str | None, device: str = "cpu") -> dict:
    """The bf16 arm over all behaviours: probes/s in both dtypes, their ratio (total fp32 time
    over total bf16 time, the ratio of the whole audit's probes/s; the median of the
    per-behaviour ratios beside it), each behaviour's rho in both and the difference, and the
    target. Where the CPU has no bf16, only why the arm was skipped."""
    if skipped:
        return {"bf16_arm": {"ran": False, "reason": skipped}, "targets": {}}
    n_probes = sum(r["n_probes"] for r in rows.values())
    n_texts = sum(r["n_texts"] for r in rows.values())
    fp32_s = [r["driftbench"]["wall_s"] for r in rows.values()]
    bf16_s = [r["driftbench_bf16"]["wall_s"] for r in rows.values()]
    median, _ = paired_speed(fp32_s, bf16_s)
    speed = sum(fp32_s) / sum(bf16_s)
    rho = {
        name: {
            "float32": r["driftbench"]["rho"],
            "bfloat16": r["driftbench_bf16"]["rho"],
            "bf16_minus_fp32": r["rho_bf16_minus_fp32"],
        }
        for name, r in rows.items()
    }
    diffs = [abs(v["bf16_minus_fp32"]) for v in rho.values()]
    return {
        "bf16_arm": {"ran": True, "reason": None},
        "driftbench_bf16": arm_stats(n_probes, n_texts, sum(bf16_s), None),
        "bf16_over_fp32_speed": speed,
        "bf16_over_fp32_speed_median_behavior": median,
        "rho_by_dtype": rho,
        "max_abs_rho_bf16_minus_fp32": max((d for d in diffs if not math.isnan(d)), default=0.0),
        "matmul_bf16_gflops": matmul_gflops(matmul_n(device), dtype=torch.bfloat16, device=device),
        "targets": {"bf16_over_fp32_speed": target(TARGET_BF16_OVER_FP32, speed)},
    }


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore", module="transformers")
    check_device(args.device)
    torch.set_num_threads(args.threads)
    names = resolve_behaviors("all" if args.behaviors == "all" else args.behaviors.split(","))
    skipped = bf16_skip_reason(args.device)
    arms = load_arms(args.model, skipped, args.device)
    params = sum(p.numel() for p in arms["float32"].model.parameters())

    load_before, t_all = os.getloadavg(), time.perf_counter()
    rows = run_behaviors(names, arms, params, args)

    ref_total = sum(r["rho_eval"]["wall_s"] for r in rows.values())
    ours_total = sum(r["driftbench"]["wall_s"] for r in rows.values())
    n_texts = sum(r["n_texts"] for r in rows.values())
    n_probes = sum(r["n_probes"] for r in rows.values())
    rho_diffs = [abs(r["rho_eval"]["rho"] - r["driftbench"]["rho"]) for r in rows.values()]
    result = {
        "model": args.model,
        "behaviors": names,
        "n_probes_per_behavior": args.n_probes,
        "n_texts": n_texts,
        "rho_eval": arm_stats(n_probes, n_texts, ref_total, None),
        "driftbench": arm_stats(n_probes, n_texts, ours_total, None),
        "speedup": ref_total / ours_total,
        "rho_identical": all(r["rho_identical"] for r in rows.values()),
        "max_abs_diff_rho": max((d for d in rho_diffs if not math.isnan(d)), default=0.0),
        "max_abs_diff_metadata_and_details": max(
            r["max_abs_diff_metadata_and_details"] for r in rows.values()
        ),
        **bf16_summary(rows, skipped, args.device),
        "per_behavior": rows,
        "torch_threads": torch.get_num_threads(),
        "batch_tokens": args.batch_tokens,
        "matmul_fp32_gflops": matmul_gflops(matmul_n(args.device), device=args.device),
        "model_params": params,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "bench_wall_s": time.perf_counter() - t_all,
        "torch_mps_patched": False,  # rho-eval's evaluate paths never touch torch.mps
        "probe_note": "both sides score driftbench's probe list (bias answer order by sha256)",
        "machine": platform.machine(),
        "torch": torch.__version__,
        **about_gpu(args.device, rho_check=RHO_CHECK_ON_CUDA),
    }
    atomic_write_json(args.out, result)
    print(
        f"total: rho-eval {ref_total:.1f}s, driftbench {ours_total:.1f}s, "
        f"x{result['speedup']:.2f}; rho identical: {result['rho_identical']} -> {args.out}"
    )
    entry = result["targets"].get("bf16_over_fp32_speed")
    print(speed_line("audit probes/s", entry, skipped) + bf16_rho_note(result))
    if not result["rho_identical"] and args.device == "cpu":
        raise SystemExit("rho differs between rho-eval and driftbench; see per_behavior")


def bf16_rho_note(result: dict) -> str:
    """The bf16 arm's largest rho change, appended to its target line (listed, not checked)."""
    if "max_abs_rho_bf16_minus_fp32" not in result:
        return ""
    return f" | rho bf16 - fp32: max |diff| {result['max_abs_rho_bf16_minus_fp32']:.4f}"


if __name__ == "__main__":
    main()
