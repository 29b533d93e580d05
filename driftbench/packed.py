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

A model whose weights are bfloat16 computes as Hugging Face's LlamaModel does in bfloat16, with
the same roundings: the GEMMs and attention in bfloat16; each RMSNorm's scale in float32 (the
input upcast for the variance, the product rounded once to bfloat16, then times the bfloat16
weight); the rotary embedding as ``q * cos + rotate_half(q) * sin`` with bfloat16 cos/sin, each
product and the sum rounded (complex64 has no bfloat16 twin); and each residual add after its
GEMM's output is rounded (``addmm_`` would round once: one rounding fewer than Hugging Face,
which alone moved tokens 0.2 degrees from its forward after one block of the tiny test model).
So on the test models the bfloat16 forward gives Hugging Face's bfloat16 numbers bit for bit. On
SmolLM2 a GEMM over a chunk's rows sums in another order than over one text's and flips a few
roundings, which 30 blocks amplify: bfloat16 embeddings depend on how texts are batched, in
Hugging Face's forward as in this one (~0.7 degrees mean, docs/configuration.md).
Hidden states come back in the weights' dtype, as Hugging Face's do; pooled embeddings in float32.

Only the plain Llama block is covered (SiLU MLP, no biases, rotary positions from the model's
own ``rotary_emb``, so rope scaling is honoured); :func:`unsupported` names why any other model
takes the Hugging Face path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DTYPES = (torch.float32, torch.bfloat16)  # what the weights may be in, all of them in one


def unsupported(model) -> str | None:
    """None if ``model`` (a base decoder, no LM head) can take the packed forward, else why."""
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind != "llama" or type(model).__name__ != "LlamaModel":
        return f"{type(model).__name__} ({kind}) is not a plain LlamaModel"
    if model.training:
        return "the model is in training mode (dropout)"
    dtypes = {p.dtype for p in model.parameters()}
    if len(dtypes) != 1 or not dtypes <= set(DTYPES):
        named = ", ".join(sorted(str(d).removeprefix("torch.") for d in dtypes))
        return f"weights in {named}; the packed forward takes float32 or bfloat16, one for all"
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
    """RMSNorm into ``out``: one vectorised norm per row, then two passes over the rows. The
    scale is float32's whatever ``x`` is in, and ``x`` times it is rounded once to ``out``'s
    dtype before the weight multiplies it, as Hugging Face's LlamaRMSNorm does in bfloat16."""
    scale = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32).square_()
    scale.div_(x.shape[-1]).add_(eps).rsqrt_()
    return torch.mul(x, scale, out=out).mul_(weight)


def _rotate(qk, rotation, n_heads: int) -> None:
    """The rotary embedding of q and k in place, ``qk`` (T, n_heads x hd). float32: in the
    interleaved layout (see :class:`PackedLlama`), ``rotation`` (T, 1, hd/2) complex64, one
    complex multiply. Otherwise in Hugging Face's half-split layout, ``rotation`` (cos, sin) in
    ``qk``'s dtype, and Hugging Face's ``q * cos + rotate_half(q) * sin`` op for op: each
    product and the sum rounded."""
    if qk.dtype == torch.float32:
        torch.view_as_complex(qk.view(qk.shape[0], n_heads, -1, 2)).mul_(rotation)
        return
    cos, sin = rotation
    x1, x2 = qk.view(qk.shape[0], n_heads, 2, -1).unbind(2)
    first = x1 * cos - x2 * sin
    x2.copy_(x2 * cos + x1 * sin)
    x1.copy_(first)


def _add_product(x, a, weight, scratch) -> None:
    """``x += a @ weight.T``, the residual add of a block: one ``addmm_`` in float32. In other
    dtypes the product is rounded before the add, as Hugging Face's ``residual + out`` rounds
    it (``addmm_`` rounds once); ``scratch`` (x's shape) holds the product."""
    if x.dtype == torch.float32:
        x.addmm_(a, weight.t())
    else:
        x.add_(torch.mm(a, weight.t(), out=scratch))


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
    layout the rotary embedding is one complex multiply in place. Weights in bfloat16 keep
    Hugging Face's layout (their rotation is Hugging Face's op for op, 2x faster on contiguous
    halves than on interleaved pairs). Everything else uses the model's own tensors, so later
    changes to the model's weights are not seen by q, k, v here: build a new one after training."""

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
        if model.embed_tokens.weight.dtype != torch.float32:  # no complex multiply: HF's layout
            perm = torch.arange(len(perm))
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
        first), packed: a (sum of lengths, d) tensor in the weights' dtype, text i's tokens
        following text i-1's. ``last_only``: the (len(rows), d) states of each text's last
        token alone.

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
        cos, sin = model.rotary_emb(x[None], positions[None])  # in x's dtype, as HF's
        # HF's cos/sin repeat the half-size frequencies twice; one copy (float32: as complex)
        cos, sin = cos[0, :, None, : hd // 2], sin[0, :, None, : hd // 2]
        rotation = torch.complex(cos, sin) if x.dtype == torch.float32 else (cos, sin)
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
            _rotate(qkv[:, :n_qk], rotation, heads + kv_heads)
            q = qkv[:, : heads * hd].view(n_tokens, heads, hd)
            k = qkv[:, heads * hd : n_qk].view(n_tokens, kv_heads, hd)
            v = qkv[:, n_qk:].view(n_tokens, kv_heads, hd)
            if last_only and i == n_run - 1:
                m = len(rows)  # from here on only the last token of each text
                x, att, h, gate, up = x[ends], att[:m], h[:m], gate[:m], up[:m]
                _last_query_attention(q, k, v, groups, att)
            else:
                _attention(q, k, v, groups, att)
            _add_product(x, att.view(x.shape[0], heads * hd), a.o_proj.weight, h)
            _rms_norm(x, block.post_attention_layernorm.weight, eps, out=h)
            F.silu(torch.mm(h, mlp.gate_proj.weight.t(), out=gate), inplace=True)
            gate.mul_(torch.mm(h, mlp.up_proj.weight.t(), out=up))
            _add_product(x, gate, mlp.down_proj.weight, h)
        if last_only and n_run == 0:
            x = x[ends]
        if n_run == n_layers:
            return _rms_norm(x, model.norm.weight, eps, out=h[: x.shape[0]])
        return x

    def pooled(self, rows: list[list[int]], pooling: str, layer: int = -1):
        """Pooled (len(rows), d) float32 hidden states: the last token of each text (eq. 2) or
        the mean over its tokens (eq. 3), pooled in float32 whatever the weights' dtype."""
        if pooling == "last_token":
            return self.hidden(rows, layer, last_only=True).float()
        if pooling == "mean":
            hidden = self.hidden(rows, layer).float()
            device = hidden.device
            lengths = torch.tensor([len(r) for r in rows], device=device)
            text_of_token = torch.repeat_interleave(torch.arange(len(rows), device=device), lengths)
            sums = torch.zeros(len(rows), hidden.shape[1], dtype=hidden.dtype, device=device)
            return sums.index_add_(0, text_of_token, hidden) / lengths[:, None].to(hidden.dtype)
        raise ValueError(f"pooling={pooling!r}; accepted: last_token, mean")
