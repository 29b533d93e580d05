"""The machine's matmul rooflines, measured by every benchmark in the same run: square n x n
matmuls and a model's own block GEMMs, in float32 or bfloat16."""

import time

import torch


def best_seconds(one, workers: int, repeats: int, device: str = "cpu") -> float:
    """Best of ``repeats`` of ``one(i)`` for every i < ``workers`` at once (one single-threaded
    worker each, ``driftbench.workers``; a plain call when ``workers`` is 1), timed from the first
    start to the last end, after one untimed warm-up; on ``device="cuda"`` each end waits for
    the GPU (``device.clock``)."""
    from device import clock

    from driftbench.workers import map_on_workers

    list(map_on_workers(one, range(workers), workers))
    best = float("inf")
    for _ in range(repeats):
        t = clock(device)
        list(map_on_workers(one, range(workers), workers))
        best = min(best, clock(device) - t)
    return best


def matmul_gflops(
    n: int = 2048,
    repeats: int = 5,
    workers: int = 1,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
) -> float:
    """Best of ``repeats`` n x n matmuls in ``dtype`` on ``device``, in GFLOP/s (2 n^3 FLOPs
    each).

    ``workers`` > 1: each repeat is ``workers`` matmuls at once, one per single-threaded worker
    (``driftbench.workers``), timed from the first start to the last end: the roofline of work
    laid out as the packed forward's workers are, which on some machines beats one matmul
    using every thread. On a GPU (one worker: ``workers.cpu_workers``) torch's default
    float32 matmul is true float32 (no TF32), as the models compute."""
    a, b = (torch.randn(n, n, dtype=dtype).to(device) for _ in range(2))
    outs = [torch.empty(n, n, dtype=dtype, device=device) for _ in range(workers)]

    def one(i: int):
        torch.mm(a, b, out=outs[i])

    return 2 * n**3 * workers / best_seconds(one, workers, repeats, device) / 1e9


def block_gemm_shapes(config) -> list[tuple[int, int]]:
    """(d_in, d_out) of each GEMM of one block of a Llama-architecture model (a transformers
    config), as the packed forward (``driftbench.packed``) runs them: q, k and v as one stacked
    weight, the output projection, gate, up, down. SmolLM2: 576 -> 960, 576 -> 576, 576 -> 1536
    twice, 1536 -> 576."""
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    d, ff = config.hidden_size, config.intermediate_size
    return [
        (d, (heads + 2 * kv_heads) * head_dim),
        (heads * head_dim, d),
        (d, ff),
        (d, ff),
        (ff, d),
    ]


def layer_gemm_gflops(
    tokens: int,
    shapes: list[tuple[int, int]],
    repeats: int = 5,
    workers: int = 1,
    dtype: torch.dtype = torch.float32,
) -> dict:
    """The roofline of a model's own layer shapes: each GEMM of ``shapes`` as the packed forward
    runs it (a (tokens, d_in) activation times the transposed (d_out, d_in) weight, into a reused
    buffer), best of ``repeats`` each; ``gflops`` is their FLOPs over the sum of their best times,
    the rate of a forward made of these GEMMs alone, in their proportions. ``workers`` as in
    :func:`matmul_gflops` (the workers share the weight, each has its own activation). Why next
    to the square matmul: a forward's GEMMs are as narrow as its model (d = 576 for SmolLM2) and
    need not reach a 2048^2 matmul's rate; this is the ceiling for the forward's own shapes."""
    best: dict[tuple[int, int], float] = {}
    for d_in, d_out in dict.fromkeys(shapes):
        w = torch.randn(d_out, d_in, dtype=dtype)
        xs = [torch.randn(tokens, d_in, dtype=dtype) for _ in range(workers)]
        outs = [torch.empty(tokens, d_out, dtype=dtype) for _ in range(workers)]

        def one(i: int, w=w, xs=xs, outs=outs):
            torch.mm(xs[i], w.t(), out=outs[i])

        best[d_in, d_out] = best_seconds(one, workers, repeats)
    flops = {s: 2 * tokens * s[0] * s[1] * workers for s in best}
    return {
        "gflops": sum(flops[s] for s in shapes) / sum(best[s] for s in shapes) / 1e9,
        "per_gemm": {f"{s[0]}x{s[1]}": flops[s] / best[s] / 1e9 for s in best},
        "tokens": tokens,
    }


def sustained_matmul_gflops(seconds: float, n: int = 2048) -> float:
    """n x n fp32 matmuls back to back for ``seconds``: their total FLOPs over their total time.

    Why next to the best of 5: on a shared machine a few short matmuls catch its fast moments,
    while a workload that runs for tens of seconds sees its average rate; this is the rate a
    pure-matmul workload of the same length would have had."""
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=c)
    calls, start = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - start < seconds:
        torch.mm(a, b, out=c)
        calls += 1
    return 2 * n**3 * calls / (time.perf_counter() - start) / 1e9
