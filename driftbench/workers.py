"""Independent forwards of a frozen model run side by side on CPU workers of one thread each.

Why: torch splits every op of a forward over its intra-op threads, and the small ops of the packed
forward (attention of short texts, norms, SiLU) and the GEMMs' own thread handoffs do not split
well. On the 2-core machines here two workers of one thread each, taking chunks of texts in turn,
embed the same texts 1.06-1.21x as fast as one forward with two threads (bench/embed.py measures
both in one run), mostly because each GEMM runs on one core with no thread handoffs. torch
releases the GIL inside its ops, so Python threads are enough: the workers share the model's
weights and nothing is copied.

Only for work that reads the model and writes nothing shared (the padding-free forward of
``driftbench.packed``): the Hugging Face forward with hooks, training and GPUs keep one loop.

Numpy work that holds the GIL (re-quantization, the monitors) runs in forked worker processes
instead: ``can_fork`` and ``process_workers`` say where and how many.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def can_fork() -> bool:
    """Worker processes that inherit this one's memory without a copy: fork, on Linux only
    (macOS's system libraries are not safe across a fork; Windows has none)."""
    return sys.platform.startswith("linux")


def process_workers(cap: int = 2) -> int:
    """Worker processes worth starting: the cores this process may use (its CPU affinity where
    the OS has one), at most ``cap``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cap, cores or 1))


def cpu_workers(device) -> int:
    """How many workers ``device`` takes: torch's intra-op thread count on a CPU, 1 elsewhere."""
    import torch

    return torch.get_num_threads() if torch.device(device).type == "cpu" else 1


def balanced_limit(total_tokens: int, batch_tokens: int, workers: int) -> int:
    """A chunk size of at most ``batch_tokens`` that cuts ``total_tokens`` into a multiple of
    ``workers`` chunks of about equal size, so no worker idles at the end while another runs a
    full chunk (3,000 tokens on two workers: two chunks of 1,500, not 2,048 + 952)."""
    n_chunks = workers * math.ceil(total_tokens / (workers * batch_tokens))
    return max(1, min(batch_tokens, math.ceil(total_tokens / max(n_chunks, 1))))


def map_on_workers(
    fn: Callable[[Item], Result], items: Iterable[Item], workers: int
) -> Iterator[Result]:
    """``fn(item)`` for every item, yielded in order, under ``torch.inference_mode``.

    ``workers`` <= 1: a plain loop in the caller's thread with its thread settings. Otherwise
    ``workers`` threads, each with ``torch.get_num_threads() // workers`` intra-op threads of its
    own (torch's thread count is per thread, so the caller's is left as it was). An exception in
    ``fn`` is raised here, and chunks not yet started are dropped."""
    import torch

    if workers <= 1:
        with torch.inference_mode():
            for item in items:
                yield fn(item)
        return
    threads = max(1, torch.get_num_threads() // workers)

    def run(item):
        with torch.inference_mode():  # grad mode is per thread, as is the thread count
            return fn(item)

    pool = ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(threads,))
    try:
        yield from pool.map(run, items)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
