"""The bfloat16 arm the benchmarks share: whether this machine can run it, the bf16/fp32 speed
of rounds run in pairs, and the targets they are held to. One definition, so that
``bench/embed.py``, ``bench/audit.py`` and ``bench/sft.py`` report the same measure."""

from __future__ import annotations

import sys

MET = {True: "met", False: "NOT met"}


def bf16_skip_reason(device: str = "cpu") -> str | None:
    """None where ``device`` computes bfloat16 in hardware (``driftbench.backends.
    bf16_supported``), else why the bf16 arm is skipped, logged as one line. Why skip rather
    than run: torch emulates bf16 without the hardware, slower than fp32, and a run refuses it
    there (``resolve_dtype``), so a ratio measured on such a CPU says nothing about a run."""
    from driftbench.backends import bf16_supported

    if bf16_supported(device):
        return None
    lacks = "a GPU before Ampere" if device.startswith("cuda") else "no AMX/AVX512-BF16"
    reason = f"{device} has no bfloat16 hardware ({lacks}): bf16 arm skipped"
    print(reason, file=sys.stderr, flush=True)
    return reason


def paired_speed(fp32_s: list[float], bf16_s: list[float]) -> tuple[float, list[float]]:
    """The bf16/fp32 speed of rounds run in pairs (each bf16 round right after its fp32 round,
    so a drift of a shared machine's rate hits both alike): the median over pairs of each pair's
    fp32/bf16 wall-time ratio (the upper one of an even count), and the ratios."""
    ratios = [a / b for a, b in zip(fp32_s, bf16_s, strict=True)]
    return sorted(ratios)[len(ratios) // 2], ratios


def target(goal: float, measured: float) -> dict:
    """One entry of a result's ``targets``: the bar, the measurement and whether it clears it."""
    return {"target": goal, "measured": measured, "met": measured >= goal}


def speed_line(what: str, entry: dict | None, skipped: str | None) -> str:
    """The one printed line of a bf16/fp32 speed target, or why the bf16 arm did not run."""
    if entry is None:
        return f"bf16: {skipped}"
    return (
        f"bf16 {what}: x{entry['measured']:.2f} float32's, same run "
        f"(target {entry['target']:g}x: {MET[entry['met']]})"
    )
