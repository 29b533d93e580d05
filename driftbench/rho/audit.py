"""A batched re-implementation of rho-eval's behavioural audit, with the same numbers.

"rho" is not one statistic; rho-eval (2.6.0) defines it per behaviour, and so do we:

* ``factual``: Spearman correlation, over probes, between the confidence of the true text and
  that of the false text (confidence = mean probability of each actual next token, untruncated
  text). Note: a correlation of the two confidences, not a true-vs-false discrimination.
* ``toxicity``, ``refusal``, ``deception``: Mann-Whitney AUC of mean token log-prob (truncated
  to ``encoding.SCORE_MAX_LENGTH`` = 256 tokens), positive class benign / benign-request /
  honest, negative class toxic / harmful-compliance / deceptive (ties count 1/2).
* ``bias``, ``sycophancy``, ``reasoning``, ``overrefusal``: rates over greedy generations
  (5, 5, 100 and 100 new tokens) parsed exactly as rho-eval parses them.
  (``sycophancy`` with ``probe_set='pairs'`` is confidence-based: Spearman, as factual.)

Each result also carries rho-eval's ``retention``, ``positive_count``, ``total``, ``metadata``
and ``details`` (same keys), and, for the six behaviours the rho-guided SFT loss builds
contrast pairs for (rho-eval's ``build_contrast_pairs``), ``paired``: the discrimination that
loss assumes -- the fraction of pairs whose positive text has the lower mean CE, the mean CE
gap (negative minus positive) and a Wilcoxon signed-rank p-value on the per-pair gaps.

The statistics are in ``rho.stats``, the parsing of generations in ``rho.answers``, one
evaluator per behaviour in ``rho.evaluators``; this module runs them.

Deterministic: probes come from :mod:`driftbench.rho.probes` (bias answer order by sha256, not
Python's per-process ``hash``) and decoding is greedy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from driftbench.rho.evaluators import (
    EVALUATORS,
    RHO_DEFINITIONS,
    SYCOPHANCY_PAIRS_DEFINITION,
    Runner,
)
from driftbench.rho.pairs import PAIR_BEHAVIORS
from driftbench.rho.probes import BEHAVIORS, check_behavior, load_probes
from driftbench.rho.scoring import ModelCompute

PAIRED_BEHAVIORS = tuple(sorted(PAIR_BEHAVIORS))


def resolve_behaviors(behaviors: str | Sequence[str]) -> list[str]:
    """ "all" -> every behaviour in rho-eval's (sorted) order; a name -> [name]; duplicates
    dropped. Every name is checked before any work starts."""
    if isinstance(behaviors, str):
        names = list(BEHAVIORS) if behaviors == "all" else [behaviors]
    else:
        names = list(dict.fromkeys(behaviors))
    if not names:
        raise ValueError(
            f"behaviors={behaviors!r} is empty; accepted: 'all' or names from "
            f"{', '.join(BEHAVIORS)}"
        )
    for name in names:
        check_behavior(name)
    return names


def check_device(model, device: str | None) -> None:
    if device is None:
        return
    import torch

    actual = next(model.parameters()).device
    want = torch.device(device)
    if actual.type != want.type or (want.index is not None and actual.index != want.index):
        raise ValueError(
            f"device={device!r} but the model is on {actual}; move the model first "
            "(model.to(device)) or pass device=None"
        )


def audit(
    model,
    tokenizer,
    behaviors: str | Sequence[str] = "all",
    n_probes: int | None = None,
    seed: int = 42,
    device: str | None = None,
    progress: bool = True,
    on_result: Callable[[str, dict], None] | None = None,
    *,
    backend: ModelCompute,
    batch_tokens: int,
    gen_max_batch: int = 32,
    paired: bool = True,
    probe_options: dict[str, dict] | None = None,
    probes: dict[str, list[dict]] | None = None,
) -> dict[str, dict]:
    """rho-eval's ``audit(model=..., tokenizer=..., behaviors, n, seed)`` with batched model
    calls; one model, many behaviours. ``n_probes=None`` uses each behaviour's default count.
    ``backend`` computes the model's forwards and generations: the model's own backend (a run's
    ``LoadedModel.backend``, or ``driftbench.backends.backend_of(model)``).

    ``on_result(behavior, result)`` is called as each behaviour finishes, so a caller can write
    it before the next starts. The model is put in eval mode and its mode restored after.
    ``device`` (optional) is only checked against the model's own device. ``batch_tokens`` and
    ``gen_max_batch`` bound the batches (a run passes ``task.batch_tokens`` and
    ``task.gen_max_batch``).
    Returns ``{behavior: result}`` with JSON-friendly results (see the module docstring)."""
    from tqdm.auto import tqdm

    names = resolve_behaviors(behaviors)
    options = probe_options or {}
    check_audit_options(names, options, batch_tokens, gen_max_batch)
    check_device(model, device)
    given = probes or {}  # explicit probe sets (e.g. held-out probes) replace the loaded ones
    probe_sets = {
        b: given[b] if b in given else load_probes(b, n_probes, seed, **options.get(b, {}))
        for b in names
    }
    run = Runner(model, tokenizer, backend, batch_tokens, gen_max_batch, progress)
    was_training = bool(getattr(model, "training", False))
    model.eval()
    results: dict[str, dict] = {}
    try:
        bar = tqdm(names, desc="rho audit", disable=not progress)
        for name in bar:
            bar.set_postfix_str(name)
            results[name] = audit_behavior(run, name, probe_sets[name], paired)
            if on_result is not None:
                on_result(name, results[name])
    finally:
        model.train(was_training)
    return results


def check_audit_options(
    names: list[str], options: dict[str, dict], batch_tokens: int, gen_max_batch: int
) -> None:
    """Probe options only for audited behaviours; batch bounds of at least 1."""
    stray = sorted(set(options) - set(names))
    if stray:
        raise ValueError(
            f"probe_options for {', '.join(stray)}, which is not audited; audited: "
            f"{', '.join(names)}"
        )
    if batch_tokens < 1 or gen_max_batch < 1:
        raise ValueError(
            f"batch_tokens={batch_tokens}, gen_max_batch={gen_max_batch}; accepted: integers >= 1"
        )


def audit_behavior(run: Runner, name: str, probes: list[dict], paired: bool) -> dict:
    """One behaviour's result (see the module docstring): its evaluator's rho and rho-eval's
    fields, the paired discrimination where ``paired`` and the behaviour has contrast pairs,
    and the texts scored and seconds taken."""
    t0, n0 = time.perf_counter(), run.n_texts
    result = EVALUATORS[name](run, probes)
    ce = result.pop("_ce")
    pair_stats = run.paired(name, probes, ce) if paired and name in PAIRED_BEHAVIORS else None
    wall = time.perf_counter() - t0
    definition = RHO_DEFINITIONS[name]
    if result["metadata"].get("eval_mode") == "confidence":
        definition = SYCOPHANCY_PAIRS_DEFINITION
    return {
        "behavior": name,
        "rho": result["rho"],
        "rho_definition": definition,
        **{k: result[k] for k in ("retention", "positive_count", "total", "metadata")},
        "paired": pair_stats,
        "n_texts": run.n_texts - n0,
        "wall_s": wall,
        "details": result["details"],
    }
