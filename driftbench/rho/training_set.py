"""What rho-guided SFT trains on: the SFT texts (Alpaca and traps, or the pairs' positive
texts), the contrast pairs by behaviour and the probes held out of them. Shared by the rho_sft
task and the drift task's trained adapter (``drift=adapter`` with ``drift.train``), so both
train on the same data for the same settings.

``sft`` is the ``sft`` config group (any object with its fields as attributes: the group itself
or ``driftbench.schema.Sft``)."""

from __future__ import annotations

import random
from pathlib import Path

from driftbench.data import load_alpaca, resolve_data_path
from driftbench.rho.pairs import contrast_pairs, split_holdout, trap_texts


def pair_and_trap_behaviors(sft) -> list[str]:
    """Every behaviour whose probes training reads, pair behaviours first, each once."""
    return list(dict.fromkeys([*sft.pair_behaviors, *sft.data.trap_behaviors]))


def split_behaviors(sft) -> list[str]:
    """The behaviours whose probes ``sft.holdout_fraction`` splits: the pair behaviours, and
    with ``sft.audit_probes=heldout`` the trap behaviours too, so that no probe the audit scores
    reaches training, as a pair or as a trap (``audit_probes=all`` keeps the split the runs
    made before it existed: traps of every probe of a behaviour without pairs)."""
    if sft.audit_probes == "heldout":
        return pair_and_trap_behaviors(sft)
    return list(sft.pair_behaviors)


def build_training_set(
    sft, probes: dict[str, list[dict]], seed: int, data_dir: str | Path | None
) -> tuple[list[str], dict[str, list[dict]], dict[str, list[dict]]]:
    """(SFT texts, pairs by behaviour, held-out probes by behaviour).

    Everything here is drawn with ``sft.data.seed``, not the run's ``seed``: rho-eval fixes its
    SFT texts and traps at 42, so runs that differ only in seed train on the same data and
    differ in LoRA init and pair sampling, and the spread over seeds means what it means there.
    Traps are the positive side of each pair of ``sft.data.trap_behaviors`` (rho-eval: all six
    contrast behaviours, refusal and deception included); held-out probes give none
    (``split_behaviors``: which behaviours are split). ``sft.condition.sft_texts=pair_positives``
    (contrastive_only) replaces Alpaca and traps with the training pairs' positive texts, as
    rho-eval's ablation does. ``data_dir``: where a relative ``sft.data.alpaca_path`` is looked
    for (``runtime.data_dir``)."""
    data_seed = int(sft.data.seed)
    held: dict[str, list[dict]] = {}
    kept: dict[str, list[dict]] = {}
    for b in split_behaviors(sft):
        kept[b], held[b] = split_holdout(probes[b], float(sft.holdout_fraction), data_seed)
    pairs: dict[str, list[dict]] = {}
    for b in sft.pair_behaviors:
        pairs[b] = contrast_pairs(b, kept[b])
        if not pairs[b]:
            raise ValueError(f"behaviour {b!r} has no contrast pairs left for training")
    n = int(sft.data.n_examples)
    if sft.condition.sft_texts == "pair_positives":
        # rho-eval's contrastive-only: the positive texts of the training pairs, in an order
        # drawn with the run's seed (its ablation shuffles them with random.Random(seed))
        texts = [p["positive"] for b in sft.pair_behaviors for p in pairs[b]]
        random.Random(int(seed)).shuffle(texts)
        return texts[:n], pairs, held
    n_traps = int(n * float(sft.data.trap_ratio))
    traps = trap_texts(
        [
            p
            for b in sft.data.trap_behaviors
            for p in (pairs[b] if b in pairs else contrast_pairs(b, kept.get(b, probes[b])))
        ]
    )
    random.Random(data_seed).shuffle(traps)
    traps = traps[:n_traps]
    alpaca = load_alpaca(
        resolve_data_path(sft.data.alpaca_path, data_dir), n - len(traps), data_seed
    )
    texts = traps + alpaca
    random.Random(data_seed + 1).shuffle(texts)
    return texts, pairs, held
