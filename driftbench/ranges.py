"""The ranges a config value must lie in, declared beside each field of ``driftbench.schema``
(``metadata=at_least(1)``): a test of the value and the sentence that says what is accepted,
and ``check_node``, which applies them to a composed config."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import field
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf


def rule(accepted: str, ok: Callable[[Any], bool]) -> dict:
    return {"accepted": accepted, "ok": ok}


def one_of(*names: str) -> dict:
    return rule(", ".join(names), lambda v: v in names)


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


def keys_of(schema: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(schema))


def check_node(node: DictConfig, schema: type, prefix: str) -> None:
    """Every key of ``node`` known to ``schema`` (a dataclass) and every declared range held,
    recursing into nested schemas; the first failure is one sentence."""
    names = {f.name for f in dataclasses.fields(schema)}
    for key in node:
        if key not in names:  # only a "+key=value" append gets past Hydra
            raise ValueError(f"{prefix}{key}: no such key; accepted: {keys_of(schema)}")
    for f in dataclasses.fields(schema):
        if f.name not in node:
            continue
        value = node[f.name]
        key = f"{prefix}{f.name}"
        if isinstance(value, DictConfig):
            sub = OmegaConf.get_type(value)
            if dataclasses.is_dataclass(sub):
                check_node(value, sub, f"{key}.")
            continue
        ok = f.metadata.get("ok")
        if ok is None or value is None:
            continue
        plain = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
        if not ok(plain):
            raise ValueError(f"{key}={plain}; accepted: {f.metadata['accepted']}")
