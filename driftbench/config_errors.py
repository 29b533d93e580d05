"""Hydra's composition errors (an unknown option or key, a value of the wrong type) in one line:
what was asked and what is accepted, the accepted keys read from ``driftbench.schema``."""

from __future__ import annotations

import dataclasses
import re

from driftbench import schema
from driftbench.ranges import keys_of

_TYPES = {
    "Integer": "an integer",
    "Float": "a number",
    "Boolean": "true or false",
    "String": "a string",
}


def composition_error(e: Exception) -> str:
    """What was asked and what is accepted, in one line, for an error Hydra raises while
    composing (an unknown option or key, a value of the wrong type), without the config search
    path and the hints that follow."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    cause = str(e.__cause__ or "").strip()
    text = " ".join([*lines, cause])
    if m := re.search(r"Could not find '(.+)/([^/']+)'", text):
        options = []
        if "Available options" in text:
            i = next(i for i, ln in enumerate(lines) if ln.startswith("Available options"))
            options = [  # the schemas a choice's YAML names (schema.register) are no choice
                ln
                for ln in lines[i + 1 :]
                if not ln.startswith(("Config search", "provider=", "schema_"))
            ]
        return f"{m[1]}={m[2]}: no such option; accepted: {', '.join(options) or '(none)'}"
    if m := re.search(r"Could not override '([^']+)'.*Key '[^']+' not in '(\w+)'", text):
        node = getattr(schema, m[2], None)
        accepted = keys_of(node) if dataclasses.is_dataclass(node) else "see conf/"
        return f"{m[1]}: no such key; accepted: {accepted}"
    if m := re.search(r"Error merging override (\S+)", text):
        kind = re.search(r"could not be converted to (\w+)", text)
        kind = kind[1] if kind else ("Boolean" if "not a valid bool" in text else None)
        if "is not Optional" in text:
            return f"{m[1]}; accepted: a value (this key cannot be null)"
        return f"{m[1]}; accepted: {_TYPES.get(kind, kind or 'another value')}"
    return lines[0] if lines else type(e).__name__
