"""``backend=mlx``: load a model with mlx-lm and compute what the tasks need from it.

The model comes from the same local safetensors folder the torch backend reads (GGUF packages
are converted once to that folder; ``tiny_random`` is saved to one), and texts are tokenised by
the same Hugging Face tokenizer, so both backends see identical token ids. Each function here
is the mlx twin of a torch one, called by the shared code when the model is an :class:`MlxModel`:
:func:`pooled_batch` (``driftbench.embed``), :func:`batch_token_ce` and :func:`greedy_generate`
(``driftbench.rho.scoring``); batching, tokenising and decoding stay in the shared code. The
tests check that the numbers agree (embeddings cosine >= 0.9999, per-token CE within 1e-3).

mlx-lm models take no attention mask: under right padding and a causal mask a real token never
sees the pads that follow it, so pooling and CE read only real positions, as with torch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from driftbench.models import LoadedModel, ModelSpec, model_identity

log = logging.getLogger(__name__)


def mlx_config_overrides(config: dict) -> dict:
    """Config keys mlx-lm reads under their pre-5.0 transformers names.

    transformers 5 writes RoPE settings as ``rope_parameters`` (one dict, or one per layer
    type); mlx-lm's llama/gemma3 read ``rope_theta`` / ``rope_local_base_freq`` /
    ``rope_scaling`` and silently fall back to defaults (SmolLM2: 10000 instead of 100000)."""
    rp = config.get("rope_parameters")
    if not isinstance(rp, dict) or "rope_theta" in config:
        return {}
    out: dict = {}
    if "rope_theta" in rp:  # one setting for every layer
        full, local = rp, None
    else:  # per layer type (gemma3: full_attention / sliding_attention)
        full, local = rp.get("full_attention"), rp.get("sliding_attention")
    if full and "rope_theta" in full:
        out["rope_theta"] = full["rope_theta"]
        if full.get("rope_type", "default") != "default":
            out["rope_scaling"] = {**full, "type": full["rope_type"]}
    if local and "rope_theta" in local:
        out["rope_local_base_freq"] = local["rope_theta"]
    return out


def read_config(folder: Path) -> dict:
    with open(folder / "config.json") as f:
        return json.load(f)


def check_architecture(config: dict, model_name: str) -> None:
    """A clear error naming the architecture when mlx-lm has no implementation of it."""
    import mlx_lm
    from mlx_lm.utils import _get_classes  # mlx-lm's own lookup, remappings included

    try:
        _get_classes(config)
    except (ValueError, KeyError) as e:
        archs = ", ".join(config.get("architectures") or []) or "unknown"
        raise ValueError(
            f"model {model_name!r}: architecture {archs} (model_type "
            f"{config.get('model_type')!r}) is not supported by mlx-lm {mlx_lm.__version__}; "
            "use backend=torch"
        ) from e


def check_model(spec: ModelSpec, cache_dir) -> None:
    """Before heavy work: the architecture, where the model's config is already on disk (a
    local folder, or a GGUF already converted); otherwise :func:`load` checks it."""
    from driftbench.models import resolve_local_path

    folder = None
    if spec.source == "hf" and spec.name_or_path:
        folder = resolve_local_path(spec.name_or_path)
    if folder is not None and (folder / "config.json").exists():
        check_architecture(read_config(folder), spec.name)


def tiny_random_dir(spec: ModelSpec, cache_dir: Path) -> Path:
    """``tiny_random`` saved once as a safetensors folder (mlx-lm loads from folders)."""
    from driftbench.models import build_folder_once, build_tiny_random, identity_key, tiny_tokenizer

    def build(tmp: Path) -> None:
        tok = tiny_tokenizer(cache_dir)
        build_tiny_random(spec, tok).save_pretrained(tmp)
        tok.save_pretrained(tmp)

    key = identity_key(model_identity(spec, cache_dir))[:12]
    return build_folder_once(cache_dir / "models" / f"tiny_random-{key}", build)


def model_folder(spec: ModelSpec, cache_dir: Path) -> Path:
    """The local safetensors folder both backends load."""
    from driftbench.models import converted_gguf_dir, resolve_local_path

    if spec.source == "tiny_random":
        return tiny_random_dir(spec, cache_dir)
    if spec.source == "gguf":
        return converted_gguf_dir(spec, cache_dir)
    folder = resolve_local_path(spec.name_or_path)
    if folder is None:  # a hub id: its cached snapshot (no download: machines may be offline)
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(spec.name_or_path, local_files_only=True))
    return folder


@dataclass
class MlxModel:
    """An mlx-lm model behind the few methods the tasks call on a torch model (``eval``,
    ``train``, ``training``, ``save_pretrained``), so audit and stress test code is shared."""

    model: object
    config: dict
    folder: Path
    backend: str = "mlx"
    lora: dict | None = None  # set by mlx_train.apply_lora: rank, scale, dropout, module paths

    def eval(self) -> MlxModel:
        self.model.eval()
        return self

    def train(self, mode: bool = True) -> MlxModel:
        self.model.train(mode)
        return self

    @property
    def training(self) -> bool:
        return bool(self.model.training)

    def eos_ids(self) -> set[int]:
        """Stop tokens: generation_config.json's eos_token_id (mlx-lm's ``load_config`` rule)."""
        eos = self.config.get("eos_token_id")
        gen = self.folder / "generation_config.json"
        if gen.exists():
            eos = json.loads(gen.read_text()).get("eos_token_id", eos)
        if eos is None:
            return set()
        return {int(eos)} if isinstance(eos, int) else {int(e) for e in eos}

    def save_pretrained(self, path, safe_serialization: bool = True) -> None:
        """The LoRA adapter in mlx-lm's format (``adapters.safetensors`` +
        ``adapter_config.json``), loadable with ``mlx_lm.generate --adapter-path``."""
        from driftbench.backends.mlx_train import save_adapter

        save_adapter(self, Path(path))


def load(spec: ModelSpec, cache_dir) -> LoadedModel:
    """mlx-lm model + the Hugging Face tokenizer of the same folder, float32 weights. One
    model serves both heads: embeddings read its backbone (``hidden_states``)."""
    import os

    from transformers import AutoTokenizer

    from driftbench.backends import require_mlx

    require_mlx()
    import mlx.core as mx
    from mlx.utils import tree_map
    from mlx_lm.utils import load_model as mlx_load_model

    cache_dir = Path(os.path.expanduser(str(cache_dir)))
    identity = model_identity(spec, cache_dir)
    folder = model_folder(spec, cache_dir)
    config = read_config(folder)
    check_architecture(config, spec.name)
    try:
        model, config = mlx_load_model(folder, model_config=mlx_config_overrides(config))
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise RuntimeError(f"model {spec.name!r} failed to load with mlx-lm: {e}") from e
    model.update(  # fp32 like the torch backend (a bf16 folder would otherwise stay bf16)
        tree_map(
            lambda p: p.astype(mx.float32) if mx.issubdtype(p.dtype, mx.floating) else p,
            model.parameters(),
        )
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    wrapped = MlxModel(model, config, folder)
    wrapped.eval()
    return LoadedModel(wrapped, tokenizer, identity, is_encoder=False, folder=folder)


def _batch(ids: list[list[int]], pad_id: int):
    """``driftbench.embed.pad_batch`` as (mlx input_ids, numpy float mask)."""
    import mlx.core as mx

    from driftbench.embed import pad_batch

    input_ids, mask = pad_batch(ids, pad_id)
    return mx.array(input_ids.numpy().astype(np.int32)), mask.numpy().astype(np.float32)


def hidden_states(model: MlxModel, input_ids):
    """Final hidden states (after the final norm), the torch base model's last_hidden_state."""
    inner = getattr(model.model, "model", None)
    if inner is None:
        raise ValueError(
            f"mlx-lm model {type(model.model).__name__} exposes no .model backbone; "
            "embeddings need backend=torch"
        )
    return inner(input_ids)


def pooled_batch(model: MlxModel, rows: list[list[int]], pad_id: int, pooling: str, layer: int):
    """``driftbench.embed.pooled_batch`` on mlx: one right-padded forward -> (n, d) float32."""
    import mlx.core as mx

    if layer != -1:
        raise ValueError(f"embed.layer={layer} with backend=mlx; accepted: -1 (the final layer)")
    input_ids, mask = _batch(rows, pad_id)
    hidden = hidden_states(model, input_ids).astype(mx.float32)
    if pooling == "last_token":
        last = mx.array(mask.sum(1).astype(np.int32) - 1)
        pooled = hidden[mx.arange(hidden.shape[0]), last]
    else:
        m = mx.array(mask)[..., None]
        pooled = (hidden * m).sum(axis=1) / mx.maximum(m.sum(axis=1), 1.0)
    return np.array(pooled, dtype=np.float32)


def token_ce(logits, input_ids, mask):
    """(B, T) CE of each next token (position t scores token t+1; 0 where the target is a pad
    or past the end): ``driftbench.rho.scoring.token_ce`` in mlx. Differentiable."""
    import mlx.core as mx

    logits = logits[:, :-1].astype(mx.float32)
    targets = input_ids[:, 1:]
    picked = mx.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    ce = mx.logsumexp(logits, axis=-1) - picked
    ce = ce * mx.array(mask[:, 1:] if isinstance(mask, np.ndarray) else mask[:, 1:])
    return mx.concatenate([ce, mx.zeros((ce.shape[0], 1), dtype=ce.dtype)], axis=1)


def batch_token_ce(model: MlxModel, rows: list[list[int]], pad_id: int) -> np.ndarray:
    """``driftbench.rho.scoring.batch_token_ce`` on mlx: (n, T) next-token CE."""
    input_ids, mask = _batch(rows, pad_id)
    return np.array(token_ce(model.model(input_ids), input_ids, mask))


def greedy_generate(
    model: MlxModel,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    progress: bool = False,
    desc: str = "generating",
) -> list[str]:
    """Greedy completions (argmax, stop at eos, KV cache), one prompt at a time, decoded as
    :func:`driftbench.rho.scoring.greedy_generate` decodes them."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache
    from tqdm.auto import tqdm

    from driftbench.rho.scoring import GENERATE_MAX_PROMPT, completion_text, encode

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}; accepted: an integer >= 1")
    stop = model.eos_ids()
    out = []
    for prompt_ids in tqdm(
        encode(tokenizer, prompts, GENERATE_MAX_PROMPT), desc=f"{desc} (mlx)", disable=not progress
    ):
        if not prompt_ids:
            raise ValueError("a prompt tokenises to nothing; generation needs a prompt")
        cache = make_prompt_cache(model.model)
        logits = model.model(mx.array([prompt_ids]), cache=cache)
        new: list[int] = []
        for _ in range(max_new_tokens):
            nxt = int(mx.argmax(logits[0, -1].astype(mx.float32)).item())
            new.append(nxt)
            if nxt in stop:
                break
            logits = model.model(mx.array([[nxt]]), cache=cache)
        out.append(completion_text(tokenizer, prompt_ids, new, stop))
    return out
