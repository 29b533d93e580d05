"""The machine's fp32 matmul roofline, measured by every benchmark in the same run."""

import time

import torch


def matmul_gflops(n: int = 2048, repeats: int = 5, workers: int = 1) -> float:
    """Best of ``repeats`` n x n fp32 matmuls, in GFLOP/s (2 n^3 FLOPs each).

    ``workers`` > 1: each repeat is ``workers`` matmuls at once, one per single-threaded worker
    (``driftbench.workers``), timed from the first start to the last end: the roofline of work
    laid out as the packed forward's workers are, which on some machines beats one matmul
    using every thread."""
    from driftbench.workers import map_on_workers

    a, b = torch.randn(n, n), torch.randn(n, n)
    outs = [torch.empty(n, n) for _ in range(workers)]

    def one(i: int):
        torch.mm(a, b, out=outs[i])

    list(map_on_workers(one, range(workers), workers))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        list(map_on_workers(one, range(workers), workers))
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 * workers / best / 1e9


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
