"""The summary ``bench/gpu.sh`` prints: one line per figure, read from the benchmarks' JSON and
the smoke runs' ``meta.json``, and exit status 1 where any step failed (its line says so and
names its log). A Python file of its own so it is checked on a CPU with made-up results.

    python bench/gpu_summary.py <work dir of bench/gpu.sh> <results dir>
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHES = ("embed", "audit", "sft")
SMOKES = ("smoke", "smoke_rho_sft")


def step_status(work: Path, name: str) -> tuple[int, int]:
    """(exit status, seconds) of one step as ``gpu.sh`` recorded it; (-1, 0) where it never
    recorded one."""
    try:
        rc, seconds = (work / f"{name}.rc").read_text().split()
    except (OSError, ValueError):
        return -1, 0
    return int(rc), int(seconds)


def failed(work: Path, name: str, rc: int, seconds: int) -> str:
    why = "timed out" if rc in (124, 137) else f"exit status {rc}"
    return f"{name}: FAILED ({why} after {seconds} s; log {work / f'{name}.log'})"


def ratio(result: dict) -> str:
    """The bf16/fp32 speed, or why the bf16 arm did not run."""
    speed = result.get("bf16_over_fp32_speed")
    if speed is None:
        return f"bf16 not run ({(result.get('bf16_arm') or {}).get('reason')})"
    return f"bf16/fp32 x{speed:.2f}"


def bench_line(name: str, r: dict) -> str:
    """texts/s (embed), probes/s (audit) or real tokens/s (sft), fp32 and bf16, and the ratio."""
    unit, key = {
        "embed": ("texts/s", "texts_per_s"),
        "audit": ("probes/s", "probes_per_s"),
        "sft": ("tokens/s", "real_tokens_per_s"),
    }[name]
    rates = [f"fp32 {r['driftbench'][key]:.1f} {unit}"]
    if "driftbench_bf16" in r:
        rates.append(f"bf16 {r['driftbench_bf16'][key]:.1f} {unit}")
    extra = ""
    if name == "audit":
        extra = f", rho identical to rho-eval: {r['rho_identical']}"
    elif name == "sft":
        extra = f", x{r['speedup_real_tokens_per_s']:.2f} rho-eval"
    return f"{name} on {r.get('gpu')}: {', '.join(rates)}, {ratio(r)}{extra}"


def smoke_line(work: Path, name: str) -> tuple[str, bool]:
    """The smoke run's status and wall time from its run dir's meta.json."""
    metas = sorted((work / name).glob("runs/*/meta.json"))
    if not metas:
        return f"debug={name}: no run dir under {work / name}", False
    meta = json.loads(metas[-1].read_text())
    ok = meta.get("status") == "completed"
    return f"debug={name} on cuda: {meta.get('status')} in {meta.get('wall_s')} s", ok


def summary(work: Path, results: Path) -> tuple[list[str], bool]:
    """The lines, and whether every step succeeded."""
    lines, ok = [], True
    for name in BENCHES + SMOKES:
        rc, seconds = step_status(work, name)
        if rc != 0:
            lines.append(failed(work, name, rc, seconds))
            ok = False
        elif name in BENCHES:
            try:
                lines.append(
                    bench_line(name, json.loads((results / f"gpu_{name}.json").read_text()))
                )
            except (OSError, ValueError, KeyError) as e:
                lines.append(f"{name}: FAILED (its JSON in {results} unreadable: {e!r})")
                ok = False
        else:
            line, done = smoke_line(work, name)
            lines.append(line)
            ok = ok and done
    return lines, ok


def main() -> int:
    work, results = Path(sys.argv[1]), Path(sys.argv[2])
    lines, ok = summary(work, results)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
