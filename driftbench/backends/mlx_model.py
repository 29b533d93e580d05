"""``backend=mlx``: an mlx-lm model, how it is loaded, and its batch forwards.

The model comes from the same local safetensors folder the torch backend reads (GGUF packages
are converted once to that folder; ``tiny_random`` is saved to one), and texts are tokenised by
the same Hugging Face tokenizer, so both backends see identical token ids. Each forward here is
the mlx twin of a torch one (``backends/torch_backend.py``): :func:`pooled_batch`,
:func:`batch_token_ce` and :func:`greedy_generate`; batching, tokenising and decoding stay in the
shared code. The tests check that the numbers agree (embeddings cosine >= 0.9999, per-token CE
within 1e-3, the same generations).

mlx-lm models take no attention mask: under right padding and a causal mask a real token never
sees the pads that follow it, so pooling and CE read only real positions, as with torch.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from driftbench.batching import pad_batch
from driftbench.digests import json_sha256
from driftbench.models import (
    ModelSpec,
    build_folder_once,
    build_tiny_random,
    converted_gguf_dir,
    model_identity,
    resolve_local_path,
    tiny_tokenizer,
)
from driftbench.rho.encoding import (
    GENERATE_MAX_PROMPT,
    completion_text,
    encode,
    non_neutral_fields,
    repetition_penalty,
)

log = logging.getLogger(__name__)
MLX_INSTALL = (
    'pip install -e ".[mlx]"  (i.e. pip install mlx-lm plus mlx on macOS, "mlx[cpu]" on Linux: '
    "plain mlx on Linux fails with libmlx.so missing)"
)


def mlx_available() -> bool:
    """mlx and mlx-lm import (on Linux ``mlx.core`` needs the ``mlx[cpu]`` extra's library)."""
    if importlib.util.find_spec("mlx") is None or importlib.util.find_spec("mlx_lm") is None:
        return False
    try:
        import mlx.core  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def require_mlx() -> None:
    if not mlx_available():
        raise ImportError(
            f"backend=mlx needs mlx and mlx-lm, which are not installed: {MLX_INSTALL}"
        )


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


def generation_config_of(folder: Path):
    """The generation config transformers gives a model of ``folder`` (its
    ``generation_config.json``, else the one derived from ``config.json``)."""
    from transformers import AutoConfig, GenerationConfig

    if (folder / "generation_config.json").exists():
        return GenerationConfig.from_pretrained(folder)
    return GenerationConfig.from_model_config(AutoConfig.from_pretrained(folder))


def check_generation_config(generation_config, model_name: str) -> None:
    """Greedy decoding here honours a repetition penalty, as torch does; any other setting that
    changes greedy decoding (torch hands those to ``model.generate``) is refused, naming it."""
    fields = non_neutral_fields(generation_config)
    if fields:
        settings = ", ".join(f"{k}={getattr(generation_config, k)!r}" for k in fields)
        raise ValueError(
            f"model {model_name!r}: its generation config sets {settings}, which greedy decoding "
            "on backend=mlx does not implement (of such settings it honours repetition_penalty "
            "only); use backend=torch"
        )


def local_folder(spec: ModelSpec) -> Path | None:
    """The model's folder where its config is already on disk before any heavy work (a local
    Hugging Face folder), else None: :func:`load` checks it then."""
    if spec.source == "hf" and spec.name_or_path:
        folder = resolve_local_path(spec.name_or_path)
        if folder is not None and (folder / "config.json").exists():
            return folder
    return None


def tiny_random_dir(spec: ModelSpec, cache_dir: Path) -> Path:
    """``tiny_random`` saved once as a safetensors folder (mlx-lm loads from folders)."""

    def build(tmp: Path) -> None:
        tok = tiny_tokenizer(cache_dir)
        build_tiny_random(spec, tok).save_pretrained(tmp)
        tok.save_pretrained(tmp)

    key = json_sha256(model_identity(spec, cache_dir))[:12]
    return build_folder_once(cache_dir / "models" / f"tiny_random-{key}", build)


def model_folder(spec: ModelSpec, cache_dir: Path) -> Path:
    """The local safetensors folder both backends load."""
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
    """An mlx-lm model behind the few methods and attributes the shared code uses on a torch
    model (``eval``, ``train``, ``training``, ``generation_config``, ``save_pretrained``), so
    audit and stress test code is shared; ``backend_name`` tells ``backends.backend_of`` whose
    it is."""

    model: object
    config: dict
    folder: Path
    generation_config: object  # transformers.GenerationConfig, as a torch model's
    backend_name: str = "mlx"
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
        import mlx.core as mx
        from mlx.utils import tree_flatten

        if self.lora is None:
            raise ValueError("the model has no LoRA adapter to save")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        weights = dict(tree_flatten(self.model.trainable_parameters()))
        mx.save_safetensors(str(path / "adapters.safetensors"), weights)
        keys = sorted({p.split(".layers.", 1)[1].split(".", 1)[1] for p in self.lora["paths"]})
        config = {
            "fine_tune_type": "lora",
            "num_layers": len(self.model.layers),
            "lora_parameters": {
                "rank": self.lora["rank"],
                "scale": self.lora["scale"],
                "dropout": self.lora["dropout"],
                "keys": keys,
            },
        }
        (path / "adapter_config.json").write_text(json.dumps(config, indent=2))


def load(spec: ModelSpec, cache_dir: Path, head: str):
    """(mlx-lm model, the Hugging Face tokenizer of the same folder, identity, folder), float32
    weights. One model serves both heads: embeddings read its backbone (``hidden_states``).
    A model for generation (``head='causal_lm'``) whose generation config sets what greedy
    decoding here does not implement is refused before its weights load."""
    from transformers import AutoTokenizer

    require_mlx()
    import mlx.core as mx
    from mlx.utils import tree_map
    from mlx_lm.utils import load_model as mlx_load_model

    identity = model_identity(spec, cache_dir)
    folder = model_folder(spec, cache_dir)
    config = read_config(folder)
    check_architecture(config, spec.name)
    generation_config = generation_config_of(folder)
    if head == "causal_lm":
        check_generation_config(generation_config, spec.name)
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
    wrapped = MlxModel(model, config, folder, generation_config)
    wrapped.eval()
    return wrapped, tokenizer, identity, folder


def _batch(ids: list[list[int]], pad_id: int):
    """``batching.pad_batch`` as (mlx input_ids, numpy float mask)."""
    import mlx.core as mx

    input_ids, mask = pad_batch(ids, pad_id)
    return mx.array(input_ids.astype(np.int32)), mask.astype(np.float32)


def hidden_states(model: MlxModel, input_ids):
    """Final hidden states (after the final norm), the torch base model's last_hidden_state."""
    inner = getattr(model.model, "model", None)
    if inner is None:
        raise ValueError(
            f"mlx-lm model {type(model.model).__name__} exposes no .model backbone; "
            "embeddings need backend=torch"
        )
    return inner(input_ids)


def pooled_batch(model: MlxModel, rows: list[list[int]], pad_id: int, pooling: str):
    """One right-padded forward of the final hidden states -> pooled (n, d) float32 (eq. 2
    or 3, as the torch backend's ``pooled_batch``)."""
    import mlx.core as mx

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
    or past the end): ``torch_loss.token_ce`` in mlx. Differentiable."""
    import mlx.core as mx

    logits = logits[:, :-1].astype(mx.float32)
    targets = input_ids[:, 1:]
    picked = mx.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    ce = mx.logsumexp(logits, axis=-1) - picked
    ce = ce * mx.array(mask[:, 1:] if isinstance(mask, np.ndarray) else mask[:, 1:])
    return mx.concatenate([ce, mx.zeros((ce.shape[0], 1), dtype=ce.dtype)], axis=1)


def batch_token_ce(model: MlxModel, rows: list[list[int]], pad_id: int) -> np.ndarray:
    """One right-padded forward -> (n, T) next-token CE (the torch backend's
    ``batch_token_ce`` on mlx)."""
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
    the torch backend decodes them. A repetition penalty in the model's generation config is
    applied as torch's ``generate`` applies it: to every token of the prompt and of the reply
    so far, on fp32 logits (mlx-lm's processor, its context widened to the whole sequence)."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache
    from mlx_lm.sample_utils import make_logits_processors
    from tqdm.auto import tqdm

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}; accepted: an integer >= 1")
    check_generation_config(model.generation_config, model.folder.name)
    penalty = repetition_penalty(model.generation_config)
    stop = model.eos_ids()
    out = []
    for prompt_ids in tqdm(
        encode(tokenizer, prompts, GENERATE_MAX_PROMPT), desc=f"{desc} (mlx)", disable=not progress
    ):
        if not prompt_ids:
            raise ValueError("a prompt tokenises to nothing; generation needs a prompt")
        processors = make_logits_processors(
            repetition_penalty=penalty, repetition_context_size=len(prompt_ids) + max_new_tokens
        )
        cache = make_prompt_cache(model.model)
        logits = model.model(mx.array([prompt_ids]), cache=cache)
        new: list[int] = []
        for _ in range(max_new_tokens):
            scores = logits[:, -1].astype(mx.float32)
            for process in processors:
                scores = process(mx.array(prompt_ids + new), scores)
            nxt = int(mx.argmax(scores[0]).item())
            new.append(nxt)
            if nxt in stop:
                break
            logits = model.model(mx.array([[nxt]]), cache=cache)
        out.append(completion_text(tokenizer, prompt_ids, new, stop))
    return out
