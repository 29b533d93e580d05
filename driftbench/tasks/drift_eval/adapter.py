"""``drift=adapter`` with no adapter given: the run trains one, as a rho_sft run would (the
``sft`` group's settings, copied into ``drift.train``), and caches it under
``<cache_dir>/adapters/<key>`` keyed by the model, those settings, the probes and
``drift.train_seed`` (not the run's seed, which draws the split), so a sweep over seeds,
classifiers or mitigations trains it once. ``drift=tune`` trains the same way and also keeps
the adapter at chosen optimizer steps and the held-out Alpaca loss there (``Snapshots``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from driftbench.backends import load_model
from driftbench.data import content_sha256, heldout_alpaca, resolve_data_path
from driftbench.digests import cache_key, dtype_key
from driftbench.fileio import atomic_write_text
from driftbench.models import ModelSpec, build_folder_once, model_identity
from driftbench.runs import SFT_ADDED, without_defaults
from driftbench.updates.tune import MANIFEST, snapshot_folder, snapshot_step

log = logging.getLogger(__name__)


def training_cfg(cfg: DictConfig) -> DictConfig:
    """The slice of a rho_sft config its training set and loop read (``rho.training_set``)."""
    return OmegaConf.create(
        {
            "sft": OmegaConf.to_container(cfg.drift.train, resolve=True),
            "seed": cfg.drift.train_seed,
            "runtime": {"data_dir": cfg.runtime.data_dir},
        }
    )


class Snapshots:
    """A tune's record along the way (``drift=tune``): the adapter saved after the optimizer
    steps nearest each share of ``fractions`` (``after_step``), and the mean token
    cross-entropy of ``heldout`` Alpaca texts training never saw at step 0, at each snapshot
    and at the end, written beside the finished adapter (``updates.tune.MANIFEST``)."""

    def __init__(self, fractions, total: int, heldout: list[str], loaded, max_length: int):
        self.total, self.heldout, self.loaded, self.max_length = total, heldout, loaded, max_length
        self.at = {snapshot_step(f, total) for f in fractions} - {0, total}
        self.loss: dict[str, float] = {}
        self.folder: Path | None = None

    def heldout_loss(self, model) -> float:
        """Mean CE over every next-token prediction of the held-out texts (token-weighted, as
        the SFT loss), truncated as training truncates them."""
        from driftbench.rho.scoring import score_texts

        scores = score_texts(
            model,
            self.loaded.tokenizer,
            self.heldout,
            self.max_length,
            backend=self.loaded.backend,
            batch_tokens=4096,
            packed=False,  # every checkpoint's through one forward (the tune's is peft's)
        )
        return float(np.concatenate(scores.token_ce).astype(np.float64).mean())

    def after_step(self, step: int, model) -> None:
        if step in self.at:
            model.save_pretrained(
                snapshot_folder(self.folder, step, self.total), safe_serialization=True
            )
            self.loss[str(step)] = self.heldout_loss(model)

    def write(self, history: list[dict]) -> None:
        manifest = {
            "total_steps": self.total,
            "snapshot_steps": sorted(self.at),
            "heldout_texts": self.heldout,  # what the loss is on: checkable against training
            "heldout_loss": self.loss,
            "train_loss": [h["sft_loss"] for h in history],
        }
        atomic_write_text(self.folder / MANIFEST, json.dumps(manifest, indent=1))


def snapshots_of(tcfg, texts: list[str], loaded, training: dict) -> Snapshots | None:
    """``drift=tune``'s ``Snapshots`` (None for a plain trained adapter), its held-out texts
    drawn from the Alpaca rows training does not use, its loss at step 0 measured now."""
    from driftbench.rho.plan import planned_steps
    from driftbench.schema import sft_settings

    if not training:
        return None
    path = resolve_data_path(tcfg.sft.data.alpaca_path, tcfg.runtime.data_dir)
    seed = [int(tcfg.sft.data.seed), 7]  # not the training draw's stream
    heldout = heldout_alpaca(path, int(training["heldout"]), texts, seed)
    total = planned_steps(len(texts), sft_settings(tcfg.sft).optim)
    snaps = Snapshots(training["fractions"], total, heldout, loaded, int(tcfg.sft.max_length))
    snaps.loss["0"] = snaps.heldout_loss(loaded.model)
    return snaps


def trained_adapter(cfg: DictConfig, training: dict | None = None) -> Path:
    """The adapter of ``drift.train``, trained once per key; ``training``: what its folder
    also holds (``Update.training``: ``drift=tune``'s fractions and held-out texts)."""
    from driftbench.rho.probes import load_probes
    from driftbench.rho.training_set import build_training_set, pair_and_trap_behaviors
    from driftbench.schema import sft_settings

    spec = ModelSpec.from_dict(cfg.model)
    cache_dir = Path(cfg.runtime.cache_dir).expanduser()
    tcfg = training_cfg(cfg)
    n_probes, probe_seed = cfg.drift.train_probes, cfg.drift.train_probe_seed
    parts = {
        "model": model_identity(spec, cache_dir),
        "train": without_defaults(  # the sft keys added later, at their defaults: the old key
            OmegaConf.to_container(tcfg, resolve=True)["sft"],
            {(name,): default for name, default in SFT_ADDED.items()},
        ),
        "seed": cfg.drift.train_seed,
        "probes": [n_probes, probe_seed],
        "alpaca": content_sha256(
            resolve_data_path(tcfg.sft.data.alpaca_path, tcfg.runtime.data_dir)
        ),
        "backend": cfg.backend.name,
        **dtype_key(cfg.runtime.dtype),  # bfloat16 trains under autocast: another adapter
        **({"snapshots": training} if training else {}),  # a plain adapter's key as it was
    }
    out = cache_dir / "adapters" / cache_key(parts)

    def build(tmp: Path) -> None:
        n = None if n_probes is None else int(n_probes)
        probes = {b: load_probes(b, n, probe_seed) for b in pair_and_trap_behaviors(tcfg.sft)}
        texts, pairs, _ = build_training_set(tcfg.sft, probes, tcfg.seed, tcfg.runtime.data_dir)
        loaded = load_model(
            spec,
            cache_dir,
            device=cfg.runtime.device,
            head="causal_lm",
            backend=cfg.backend.name,
            dtype=cfg.runtime.dtype,
        )
        sft = sft_settings(tcfg.sft)
        snaps = snapshots_of(tcfg, texts, loaded, training or {})
        if snaps is not None:
            snaps.folder = tmp
        log.info(
            "training the adapter the update applies: %s, %d SFT texts (cached once trained)",
            tcfg.sft.condition.name,
            len(texts),
        )
        model, history = loaded.backend.train(
            loaded.model,
            loaded.tokenizer,
            texts,
            pairs,
            sft,
            cfg.drift.train_seed,
            cfg.runtime.progress,
            after_step=None if snaps is None else snaps.after_step,
        )
        model.save_pretrained(tmp, safe_serialization=True)
        if snaps is not None:
            snaps.loss[str(snaps.total)] = snaps.heldout_loss(model)
            snaps.write(history)
        log.info(
            "adapter trained: %d steps, final SFT loss %.3f", len(history), history[-1]["sft_loss"]
        )

    return build_folder_once(out, build)
