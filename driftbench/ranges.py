"""The ranges a config value must lie in, declared beside each field of ``driftbench.schema``
(``metadata=at_least(1)``): a test of the value and the sentence that says what is accepted."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import field
from typing import Any

from omegaconf import MISSING


def rule(accepted: str, ok: Callable[[Any], bool]) -> dict:
    return {"accepted": accepted, "ok": ok}


def at_least(lo: float, what: str = "an integer") -> dict:
    return rule(f"{what} >= {lo}", lambda v: v >= lo)


def positive(what: str = "a number") -> dict:
    return rule(f"{what} > 0", lambda v: math.isfinite(v) and v > 0)


def within(lo: float, hi: float, closed_hi: bool = True) -> dict:
    bracket = "]" if closed_hi else ")"
    return rule(
        f"a number in [{lo}, {hi}{bracket}",
        lambda v: lo <= v <= hi if closed_hi else lo <= v < hi,
    )


def score() -> dict:
    return rule("a score in (0, 1] (toxic: >= it)", lambda v: 0 < v <= 1)


def positive_list() -> dict:
    return rule(
        "a non-empty list of positive numbers",
        lambda v: len(v) > 0 and all(math.isfinite(x) and x > 0 for x in v),
    )


def req(**metadata) -> Any:
    """A field whose value comes from the YAML (no second default here)."""
    return field(default=MISSING, metadata=metadata)


def opt(**metadata) -> Any:
    """An optional field: null is allowed (and means what the YAML's comment says)."""
    return field(default=None, metadata=metadata)
