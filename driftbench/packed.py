"""A padding-free forward for Llama-architecture decoders (SmolLM2, TinyLlama, Llama 2/3).

The torch backend's forward for embeddings and for the audit's teacher-forced scoring
(``driftbench.backends.torch_backend``). Why: the Hugging Face forward pads a batch to its
longest text, builds a 4-D mask and runs many small ops around each GEMM; on a CPU 16-20% of its
time is spent outside the matmuls, and bucketed batches still pad ~8% of their rows. Here the
texts of a chunk are concatenated into one (tokens, d) matrix, so every linear layer is one GEMM
over real tokens only (no padding, no mask), attention runs once per group of equal-length texts
(contiguous, because texts are sorted by length) with a plain causal mask, the rotary embedding
is one in-place complex multiply, and the residual adds are folded into the GEMMs (``addmm_``):
10% of the time is left outside the matmuls. The result equals the Hugging Face forward up to
float rounding; tests check this for every layer and both poolings.

Only the plain Llama block is covered (SiLU MLP, no biases, rotary positions from the model's
own ``rotary_emb``, so rope scaling is honoured); :func:`unsupported` names why any other model
takes the Hugging Face path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def unsupported(model) -> str | None:
    """None if ``model`` (a base decoder, no LM head) can take the packed forward, else why."""
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind != "llama" or type(model).__name__ != "LlamaModel":
        return f"{type(model).__name__} ({kind}) is not a plain LlamaModel"
    if model.training:
        return "the model is in training mode (dropout)"
    if model.embed_tokens.weight.dtype != torch.float32:  # its rotation is a complex64 multiply
        return f"weights in {model.embed_tokens.weight.dtype}; the packed forward is float32's"
    if config.hidden_act != "silu":
        return f"hidden_act={config.hidden_act}"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "attention or MLP biases"
    if getattr(config, "pretraining_tp", 1) not in (None, 1):
        return f"pretraining_tp={config.pretraining_tp}"
    for name, module in model.named_modules():
        # the forward reads .weight directly: an adapter (LoRA) or quantised layer would be
        # skipped silently, so anything but a plain Linear takes the model's own forward
        if name.endswith("_proj") and type(module) is not torch.nn.Linear:
            return f"{name} is a {type(module).__module__}.{type(module).__name__}, not nn.Linear"
    return None


def equal_length_groups(lengths: list[int]) -> list[tuple[int, int, int]]:
    """(first token, number of texts, length) per run of equal lengths in packed order."""
    groups, start, i = [], 0, 0
    while i < len(lengths):
        j = i
        while j < len(lengths) and lengths[j] == lengths[i]:
            j += 1
        groups.append((start, j - i, lengths[i]))
        start += (j - i) * lengths[i]
        i = j
    return groups


def _rms_norm(x, weight, eps: float, out):
    """RMSNorm into ``out``: one vectorised norm per row, then two passes over the rows."""
    scale = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_()
    scale.div_(x.shape[-1]).add_(eps).rsqrt_()
    return torch.mul(x, scale, out=out).mul_(weight)


def _attention(q, k, v, groups, out) -> None:
    """Causal self-attention of each text with itself; q (T, H, hd), k and v (T, KV, hd).
    One call per group of equal-length texts: no padding, so ``is_causal`` is the whole mask."""
    heads, kv_heads, hd = q.shape[1], k.shape[1], q.shape[2]
    for start, n, length in groups:
        end = start + n * length
        o = F.scaled_dot_product_attention(
            q[start:end].view(n, length, heads, hd).transpose(1, 2),
            k[start:end].view(n, length, kv_heads, hd).transpose(1, 2),
            v[start:end].view(n, length, kv_heads, hd).transpose(1, 2),
            is_causal=True,
            enable_gqa=kv_heads != heads,
        )
        out[start:end].view(n, length, heads, hd).copy_(o.transpose(1, 2))


def _last_query_attention(q, k, v, groups, out) -> None:
    """Attention of each text's last token alone, to all of that text's keys: ``out`` (texts,
    H, hd). A single query at the last position sees every key, so no mask is needed (SDPA's
    ``is_causal`` would align a one-row mask to the first key instead)."""
    heads, kv_heads, hd = q.shape[1], k.shape[1], q.shape[2]
    text = 0
    for start, n, length in groups:
        end = start + n * length
        o = F.scaled_dot_product_attention(
            q[start:end].view(n, length, heads, hd)[:, -1:].transpose(1, 2),
            k[start:end].view(n, length, kv_heads, hd).transpose(1, 2),
            v[start:end].view(n, length, kv_heads, hd).transpose(1, 2),
            enable_gqa=kv_heads != heads,
        )
        out[text : text + n].copy_(o[:, :, 0])
        text += n


class PackedLlama:
    """The packed forward of one frozen Llama-architecture base model (see the module docstring).

    Built once per extraction: it keeps one extra tensor per block, the q, k and v projections
    stacked into one (q+k+v rows, d) weight (about a fifth of the block's weights), with the
    rows of q and k permuted within each head from Hugging Face's half-split rotary layout
    (x1 | x2) to interleaved pairs (x1_0, x2_0, x1_1, ...). Attention scores are dot products
    of q and k, which a permutation applied to both leaves unchanged, and in the interleaved
    layout the rotary embedding is one complex multiply in place. Everything else uses the
    model's own tensors, so later changes to the model's weights are not seen by q, k, v here:
    build a new one after training."""

    def __init__(self, model):
        why = unsupported(model)
        if why:
            raise ValueError(f"the packed forward does not cover this model: {why}")
        config = model.config
        self.model = model
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps
        half = self.head_dim // 2
        within = torch.stack([torch.arange(half), torch.arange(half) + half], 1).reshape(-1)
        perm = torch.cat([within + j * self.head_dim for j in range(self.heads + self.kv_heads)])
        self.qkv = [
            torch.cat(
                [
                    torch.cat([b.self_attn.q_proj.weight, b.self_attn.k_proj.weight])[
                        perm.to(b.self_attn.q_proj.weight.device)
                    ],
                    b.self_attn.v_proj.weight,
                ]
            ).detach()
            for b in model.layers
        ]

    def hidden(self, rows: list[list[int]], layer: int = -1, last_only: bool = False):
        """``hidden_states[layer]`` of every token of ``rows`` (token id lists, sorted longest
        first), packed: a (sum of lengths, d) tensor, text i's tokens following text i-1's.
        ``last_only``: the (len(rows), d) states of each text's last token alone.

        Entry k of hidden_states is the residual stream after k blocks (only k blocks run); the
        last entry (``-1``) has the final norm applied, as in Hugging Face's forward. With
        ``last_only`` the last block that runs needs the keys and values of every token but the
        query, output projection and MLP of the last tokens only: at 2048-token chunks of tweets
        that skips ~95% of that block's work (~3% of a 30-block forward) for the same vectors."""
        model, n_layers = self.model, self.model.config.num_hidden_layers
        if not -(n_layers + 1) <= layer <= n_layers:
            raise ValueError(
                f"embed.layer={layer}; accepted for this {n_layers}-layer model: "
                f"-{n_layers + 1}..{n_layers}"
            )
        lengths = [len(r) for r in rows]
        if any(a < b for a, b in zip(lengths, lengths[1:], strict=False)):
            raise ValueError("the packed forward needs rows sorted longest first")
        heads, kv_heads, hd, eps = self.heads, self.kv_heads, self.head_dim, self.eps
        device = model.embed_tokens.weight.device
        tokens = torch.tensor([t for r in rows for t in r], device=device)
        positions = torch.cat([torch.arange(n, device=device) for n in lengths])
        x = model.embed_tokens(tokens)
        cos, sin = model.rotary_emb(x[None], positions[None])
        # HF's cos/sin repeat the half-size frequencies twice; one copy, as complex rotations
        rotation = torch.complex(cos[0, :, None, : hd // 2], sin[0, :, None, : hd // 2])
        groups = equal_length_groups(lengths)
        n_tokens, n_qk = x.shape[0], (heads + kv_heads) * hd
        # buffers reused by every block: fresh multi-MB tensors per op cost page faults
        new = dict(dtype=x.dtype, device=device)
        att = torch.empty(n_tokens, heads, hd, **new)
        h = torch.empty_like(x)
        qkv = torch.empty(n_tokens, self.qkv[0].shape[0], **new)
        gate = torch.empty(n_tokens, model.config.intermediate_size, **new)
        up = torch.empty_like(gate)
        n_run = layer % (n_layers + 1)
        ends = torch.tensor(lengths, device=device).cumsum(0) - 1
        for i, (block, w_qkv) in enumerate(zip(model.layers[:n_run], self.qkv, strict=False)):
            a, mlp = block.self_attn, block.mlp
            _rms_norm(x, block.input_layernorm.weight, eps, out=h)
            torch.mm(h, w_qkv.t(), out=qkv)
            qk_pairs = qkv[:, :n_qk].view(n_tokens, heads + kv_heads, hd // 2, 2)
            torch.view_as_complex(qk_pairs).mul_(rotation)
            q = qkv[:, : heads * hd].view(n_tokens, heads, hd)
            k = qkv[:, heads * hd : n_qk].view(n_tokens, kv_heads, hd)
            v = qkv[:, n_qk:].view(n_tokens, kv_heads, hd)
            if last_only and i == n_run - 1:
                m = len(rows)  # from here on only the last token of each text
                x, att, h, gate, up = x[ends], att[:m], h[:m], gate[:m], up[:m]
                _last_query_attention(q, k, v, groups, att)
            else:
                _attention(q, k, v, groups, att)
            x.addmm_(att.view(x.shape[0], heads * hd), a.o_proj.weight.t())
            _rms_norm(x, block.post_attention_layernorm.weight, eps, out=h)
            F.silu(torch.mm(h, mlp.gate_proj.weight.t(), out=gate), inplace=True)
            gate.mul_(torch.mm(h, mlp.up_proj.weight.t(), out=up))
            x.addmm_(gate, mlp.down_proj.weight.t())
        if last_only and n_run == 0:
            x = x[ends]
        if n_run == n_layers:
            return _rms_norm(x, model.norm.weight, eps, out=h[: x.shape[0]])
        return x

    def pooled(self, rows: list[list[int]], pooling: str, layer: int = -1):
        """Pooled (len(rows), d) hidden states: the last token of each text (eq. 2) or the mean
        over its tokens (eq. 3)."""
        if pooling == "last_token":
            return self.hidden(rows, layer, last_only=True)
        if pooling == "mean":
            hidden = self.hidden(rows, layer)
            device = hidden.device
            lengths = torch.tensor([len(r) for r in rows], device=device)
            text_of_token = torch.repeat_interleave(torch.arange(len(rows), device=device), lengths)
            sums = torch.zeros(len(rows), hidden.shape[1], dtype=hidden.dtype, device=device)
            return sums.index_add_(0, text_of_token, hidden) / lengths[:, None].to(hidden.dtype)
        raise ValueError(f"pooling={pooling!r}; accepted: last_token, mean")
