"""Contrast pairs (positive = desired text, negative = undesired) and SFT "trap" texts built from
behavioural probes, with the same construction as rho-eval's ``build_contrast_pairs`` and
``_build_trap_texts``."""

from __future__ import annotations

import random

from driftbench.data import format_instruction

PAIR_BEHAVIORS = ("factual", "toxicity", "sycophancy", "bias", "refusal", "deception")
# behaviours whose pair is two fields of one probe: (positive field, negative field)
FIELD_PAIRS = {
    "factual": ("text", "false"),
    "refusal": ("text", "harmful_version"),
    "deception": ("honest", "deceptive"),
}
TRAP_INSTRUCTION = "Complete the following text accurately and truthfully."


def pair_texts(probe: dict) -> tuple[str, str]:
    """Sycophancy continuation pair (probe_set='pairs') -> its two scored texts."""
    prompt = probe.get("prompt", "")
    if not prompt:
        return probe["positive"], probe["negative"]
    return f"{prompt}\n{probe['positive']}", f"{prompt}\n{probe['negative']}"


def contrast_pairs(behavior: str, probes: list[dict]) -> list[dict]:
    """Pairs for one behaviour, each ``{positive, negative, id, behavior}``, built as rho-eval's
    ``build_contrast_pairs``; toxicity pairs the i-th benign with the i-th toxic probe."""
    ids = [p.get("id", "") for p in probes]
    if behavior in FIELD_PAIRS:
        pos, neg = FIELD_PAIRS[behavior]
        raw = [
            (p[pos], p[neg], i) for p, i in zip(probes, ids, strict=True) if pos in p and neg in p
        ]
    elif behavior == "toxicity":
        benign = [p["text"] for p in probes if not p.get("is_toxic", False)]
        toxic = [p["text"] for p in probes if p.get("is_toxic", False)]
        raw = [(b, t, f"tox_pair_{k}") for k, (b, t) in enumerate(zip(benign, toxic, strict=False))]
    elif behavior == "bias":
        raw = [
            (f"{p['text']} {p['correct_answer']}", f"{p['text']} {p['biased_answer']}", i)
            for p, i in zip(probes, ids, strict=True)
        ]
    elif behavior == "sycophancy":
        if probes and "positive" in probes[0]:  # probe_set='pairs': its scored texts
            raw = [(*pair_texts(p), i) for p, i in zip(probes, ids, strict=True)]
        else:
            raw = [
                (
                    f"{p['text']}\n{p['truthful_answer']}",
                    f"{p['text']}\n{p['sycophantic_answer']}",
                    i,
                )
                for p, i in zip(probes, ids, strict=True)
            ]
    else:
        raise ValueError(
            f"no contrast pairs for behaviour {behavior!r}; accepted: {', '.join(PAIR_BEHAVIORS)}"
        )
    return [{"positive": a, "negative": b, "id": i, "behavior": behavior} for a, b, i in raw]


def trap_texts(pairs: list[dict]) -> list[str]:
    """The positive side of each pair as an instruction/response example."""
    return [format_instruction(TRAP_INSTRUCTION, p["positive"]) for p in pairs]


def split_holdout(probes: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train probes, held-out probes): a seeded share of one behaviour's probes kept out of
    training, so rho can also be reported on probes the model never trained on."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"sft.holdout_fraction={fraction}: must be in [0, 1)")
    if fraction == 0.0:
        return probes, []
    order = list(range(len(probes)))
    random.Random(seed).shuffle(order)
    k = int(round(fraction * len(probes)))
    held = set(order[:k])
    return [p for i, p in enumerate(probes) if i not in held], [
        p for i, p in enumerate(probes) if i in held
    ]
