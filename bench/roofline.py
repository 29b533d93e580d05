"""The machine's fp32 matmul roofline, measured by every benchmark in the same run."""

import time

import torch


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best of ``repeats`` n x n fp32 matmuls, in GFLOP/s (2 n^3 FLOPs each)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9
