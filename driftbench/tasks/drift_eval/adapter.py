"""``drift=adapter`` with no adapter given: the run trains one, as a rho_sft run would (the
``sft`` group's settings, copied into ``drift.train``), and caches it under
``<cache_dir>/adapters/<key>`` keyed by the model, those settings, the probes and
``drift.train_seed`` (not the run's seed, which draws the split), so a sweep over seeds,
classifiers or mitigations trains it once."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from driftbench.backends import load_model
from driftbench.data import content_sha256, resolve_data_path
from driftbench.digests import cache_key, dtype_key
from driftbench.models import ModelSpec, build_folder_once, model_identity

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


def trained_adapter(cfg: DictConfig) -> Path:
    from driftbench.rho.probes import load_probes
    from driftbench.rho.training_set import build_training_set, pair_and_trap_behaviors
    from driftbench.schema import sft_settings

    spec = ModelSpec.from_dict(cfg.model)
    cache_dir = Path(cfg.runtime.cache_dir).expanduser()
    tcfg = training_cfg(cfg)
    n_probes, probe_seed = cfg.drift.train_probes, cfg.drift.train_probe_seed
    parts = {
        "model": model_identity(spec, cache_dir),
        "train": OmegaConf.to_container(tcfg, resolve=True)["sft"],
        "seed": cfg.drift.train_seed,
        "probes": [n_probes, probe_seed],
        "alpaca": content_sha256(
            resolve_data_path(tcfg.sft.data.alpaca_path, tcfg.runtime.data_dir)
        ),
        "backend": cfg.backend.name,
        **dtype_key(cfg.runtime.dtype),  # bfloat16 trains under autocast: another adapter
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
        )
        model.save_pretrained(tmp, safe_serialization=True)
        log.info(
            "adapter trained: %d steps, final SFT loss %.3f", len(history), history[-1]["sft_loss"]
        )

    return build_folder_once(out, build)
