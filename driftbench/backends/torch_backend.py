"""``backend=torch`` (default): PyTorch + transformers, on CUDA when present, else the CPU.

Loading and the batch forwards are here: pooled hidden states (eq. 1-3 of the drift paper) and
per-token CE, each through the padding-free forward of ``driftbench.packed`` where the model is
a plain Llama (no padded token at all) and through the model's own forward on right-padded rows
otherwise; padding is on the right and pooling and CE read the attention mask, so a padded text
gives the numbers of its unpadded forward. Greedy generation (``torch_generate``), the training
loop (``torch_train``) and its cross-entropy (``torch_loss``) have modules of their own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from driftbench.backends.base import Backend, Forward, LoadedModel
from driftbench.batching import pad_batch
from driftbench.models import (
    ModelSpec,
    build_tiny_random,
    check_device,
    converted_gguf_dir,
    device_kind,
    model_identity,
    resolve_local_path,
    tiny_tokenizer,
)


def resolve_device(device: str = "auto") -> str:
    """``runtime.device`` as torch names it: ``auto`` as ``models.device_kind`` resolves it."""
    import torch

    check_device(device)
    return device_kind(device, torch.cuda.is_available()) if device == "auto" else device


def model_device(model):
    return next(model.parameters()).device


def torch_dtype(dtype: str):
    """The torch dtype of a resolved ``runtime.dtype`` (``backends.resolve_dtype``)."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


def cast_parameters(model, dtype):
    """``model`` with its parameters in ``dtype`` and its buffers as they are, as
    ``from_pretrained(dtype=...)`` loads a model: the rotary frequencies stay float32
    (``model.to(dtype)`` would round them too)."""
    for p in model.parameters():
        p.data = p.data.to(dtype)
    return model


def tensors(rows: list[list[int]], pad_id: int, device):
    """``batching.pad_batch`` as long tensors on ``device``."""
    import torch

    return tuple(torch.from_numpy(a).to(device) for a in pad_batch(rows, pad_id))


# ── embeddings ───────────────────────────────────────────────────────────────────────────────


def last_token_pool(hidden, mask):
    """eq. (2) under right padding: the hidden state of the last non-pad token of each row."""
    import torch

    last = mask.sum(dim=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def mean_pool(hidden, mask):
    """eq. (3): mean of hidden states over the attention mask."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


POOLERS = {"last_token": last_token_pool, "mean": mean_pool}


class _EarlyExit(Exception):
    def __init__(self, hidden):
        self.hidden = hidden


def layer_stack(model):
    """The model's list of transformer blocks (decoders: ``layers``; BERT: ``encoder.layer``),
    or None where it has neither."""
    import torch

    for path in ("layers", "encoder.layer"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, torch.nn.ModuleList) and len(obj) == model.config.num_hidden_layers:
            return obj
    return None


def hidden_at(model, input_ids, mask, layer: int):
    """``hidden_states[layer]`` of the model's forward (``-1``: ``last_hidden_state``), without
    running the blocks after that layer: entry k > 0 is block k-1's output (entry 0 the block
    stack's input), so a forward hook there ends the forward. Probing layer 15 of 30 costs half
    a forward. The final entry (after the final norm) needs the whole forward."""
    if layer == -1:
        return model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    n = model.config.num_hidden_layers
    if not -(n + 1) <= layer <= n:
        raise ValueError(f"embed.layer={layer}; accepted for this {n}-layer model: -{n + 1}..{n}")
    index, blocks = layer % (n + 1), layer_stack(model)
    if blocks is None or index == n:
        res = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
        return res.hidden_states[layer]

    def before_first(module, args, kwargs):
        raise _EarlyExit(args[0] if args else kwargs["hidden_states"])

    def after(module, args, output):
        raise _EarlyExit(output[0] if isinstance(output, tuple) else output)

    hook = (
        blocks[0].register_forward_pre_hook(before_first, with_kwargs=True)
        if index == 0
        else blocks[index - 1].register_forward_hook(after)
    )
    try:
        model(input_ids=input_ids, attention_mask=mask)
    except _EarlyExit as stop:
        return stop.hidden
    finally:
        hook.remove()
    raise RuntimeError(f"embed.layer={layer}: the forward never reached block {index}")


def pooled_batch(model, rows: list[list[int]], pad_id: int, pooling: str, layer: int):
    """One right-padded forward of token id lists -> pooled (len(rows), d) float32 array."""
    input_ids, mask = tensors(rows, pad_id, model_device(model))
    hidden = hidden_at(model, input_ids, mask, layer).float()  # a bf16 model pools in fp32
    return POOLERS[pooling](hidden, mask).cpu().numpy()


# ── per-token CE ─────────────────────────────────────────────────────────────────────────────


def batch_token_ce(model, rows: list[list[int]], pad_id: int) -> np.ndarray:
    """One right-padded forward of token id lists -> (len(rows), T) next-token CE array."""
    import torch

    from driftbench.backends.torch_loss import token_ce

    input_ids, mask = tensors(rows, pad_id, model_device(model))
    with torch.inference_mode():
        logits = model(input_ids=input_ids, attention_mask=mask).logits
        return token_ce(logits, input_ids, mask).cpu().numpy()


def packed_scorer(model):
    """:func:`batch_token_ce` through the padding-free forward, for a plain Llama causal LM
    (None for any other model: it keeps its own forward)."""
    import torch
    import torch.nn.functional as F

    from driftbench.packed import PackedLlama, unsupported

    base, head = getattr(model, "model", None), getattr(model, "lm_head", None)
    if type(model).__name__ != "LlamaForCausalLM" or type(head) is not torch.nn.Linear:
        return None
    if base is None or unsupported(base) is not None:
        return None
    packed = PackedLlama(base)

    @torch.inference_mode()
    def score(rows: list[list[int]], _pad_id: int) -> np.ndarray:
        logits = head(packed.hidden(rows)).float()
        device = logits.device
        targets = torch.tensor([t for r in rows for t in r[1:] + [-100]], device=device)
        ce = F.cross_entropy(logits, targets, ignore_index=-100, reduction="none").cpu().numpy()
        out = np.zeros((len(rows), len(rows[0])), dtype=np.float32)
        start = 0
        for r, row in enumerate(rows):  # position t scores token t+1, as token_ce
            out[r, : len(row)] = ce[start : start + len(row)]
            start += len(row)
        return out

    return score


# ── the backend ──────────────────────────────────────────────────────────────────────────────


class TorchBackend(Backend):
    name = "torch"
    edits_weights = True
    dtypes = ("float32", "bfloat16")
    cache_key: dict = {}  # embeddings cached before there were backends keep their keys

    def check(self, spec: ModelSpec | None, cache_dir) -> None:
        """Nothing beyond ``models.check_spec``: torch and transformers are core dependencies
        and run every architecture transformers has."""

    def check_generation(self, spec: ModelSpec | None, cache_dir) -> None:
        """Nothing: every generation setting is honoured (``torch_generate``)."""

    def check_embed_layer(self, layer: int) -> None:
        """Nothing yet: the layer is checked against the model's depth when it is known."""

    def load(
        self, spec: ModelSpec, cache_dir: Path, device: str, head: str, dtype: str
    ) -> LoadedModel:
        """The weights in ``dtype``: a bfloat16 model is cast once at load, from the float32
        weights (a converted GGUF folder stays float32 on disk, one folder for every dtype);
        the training loop keeps its LoRA weights in float32 (``torch_train``)."""
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

        identity = model_identity(spec, cache_dir)
        weights = torch_dtype(dtype)
        folder = None
        try:
            if spec.source == "tiny_random":
                tokenizer = tiny_tokenizer(cache_dir)
                model = cast_parameters(build_tiny_random(spec, tokenizer), weights)
                is_encoder = False
                if head == "base":
                    model = model.get_decoder()
            else:
                if spec.source == "gguf":
                    folder = converted_gguf_dir(spec, cache_dir)
                    where = str(folder)
                else:
                    folder = resolve_local_path(spec.name_or_path)
                    where = str(folder) if folder else spec.name_or_path
                config = AutoConfig.from_pretrained(where)
                archs = config.architectures or []
                is_encoder = not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
                tokenizer = AutoTokenizer.from_pretrained(where)
                if head == "causal_lm":
                    if is_encoder:
                        raise ValueError(
                            f"model {spec.name!r} is an encoder ({', '.join(archs)}); this task "
                            "needs a causal language model"
                        )
                    model = AutoModelForCausalLM.from_pretrained(where, dtype=weights)
                else:
                    model = AutoModel.from_pretrained(where, dtype=weights)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise RuntimeError(f"model {spec.name!r} failed to load: {e}") from e
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.to(resolve_device(device)).eval()
        return LoadedModel(model, tokenizer, identity, is_encoder, folder, self)

    def embed_forward(self, model, pooling: str, layer: int, packed: bool, workers: int | None):
        from driftbench.packed import PackedLlama, unsupported
        from driftbench.workers import cpu_workers

        if packed and unsupported(model) is None:
            packed_model = PackedLlama(model)
            if workers is None:
                workers = cpu_workers(model.embed_tokens.weight.device)
            if workers < 1:
                raise ValueError(f"workers={workers}; accepted: an integer >= 1")

            def run(rows: list[list[int]], _pad_id: int) -> np.ndarray:
                return packed_model.pooled(rows, pooling, layer).float().cpu().numpy()

            return Forward("packed", run, padding_free=True, workers=workers)
        return Forward("hf", lambda rows, pad_id: pooled_batch(model, rows, pad_id, pooling, layer))

    def ce_forward(self, model, packed: bool) -> Forward:
        scorer = packed_scorer(model) if packed else None
        if scorer is not None:
            return Forward("packed", scorer, padding_free=True)
        return Forward("hf", lambda rows, pad_id: batch_token_ce(model, rows, pad_id))

    def generate(
        self, model, tokenizer, prompts, max_new_tokens, batch_tokens, max_batch, progress, desc
    ) -> list[str]:
        from driftbench.backends.torch_generate import generate

        return generate(
            model, tokenizer, prompts, max_new_tokens, batch_tokens, max_batch, progress, desc
        )

    def weights(self, model) -> dict[str, np.ndarray]:
        import torch

        return {
            n: p.detach().to("cpu", dtype=torch.float32).numpy().copy()
            for n, p in model.named_parameters()
        }

    def set_weights(self, model, new: dict[str, np.ndarray]) -> None:
        import torch

        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, w in new.items():
                p = params[n]
                if tuple(w.shape) != tuple(p.shape):  # both copies would broadcast it silently
                    raise ValueError(
                        f"weight {n}: shape {w.shape}, the model's is {tuple(p.shape)}"
                    )
                if p.device.type == "cpu" and p.dtype == torch.float32 and p.is_contiguous():
                    # numpy's copy, on this thread: torch's copy_ waits on its intra-op pool
                    # once per tensor (1.7 s for SmolLM2's 272 when another process holds a core)
                    np.copyto(p.detach().numpy(), w, casting="same_kind")
                else:
                    p.copy_(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)))

    def check_lora_targets(self, model, targets: list[str]) -> None:
        from driftbench.backends.torch_train import check_lora_targets

        check_lora_targets(model, targets)

    def train(self, model, tokenizer, sft_texts, pairs, sft, seed, progress, after_step=None):
        from driftbench.backends.torch_train import train

        return train(model, tokenizer, sft_texts, pairs, sft, seed, progress, after_step=after_step)
