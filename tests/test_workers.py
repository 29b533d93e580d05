"""Forwards side by side: the same results in the same order as one loop, each worker with its
own share of torch's threads, errors raised to the caller, chunks balanced across workers."""

import threading

import pytest
import torch

from driftbench.workers import balanced_limit, cpu_workers, map_on_workers


def test_workers_run_at_once_in_order_with_their_share_of_the_threads():
    caller_threads = torch.get_num_threads()
    both_started = threading.Barrier(2, timeout=30)  # broken unless two calls overlap
    seen = []

    def fn(i):
        if i < 2:
            both_started.wait()
        seen.append((torch.get_num_threads(), torch.is_inference_mode_enabled()))
        return i * i

    assert list(map_on_workers(fn, range(7), workers=2)) == [i * i for i in range(7)]
    assert set(seen) == {(max(1, caller_threads // 2), True)}
    assert torch.get_num_threads() == caller_threads  # the caller's setting is untouched


def test_one_worker_is_a_plain_loop_in_the_callers_thread():
    caller = threading.get_ident()
    got = list(map_on_workers(lambda i: (i, threading.get_ident()), range(3), workers=1))
    assert got == [(0, caller), (1, caller), (2, caller)]


def test_an_error_in_a_worker_reaches_the_caller():
    def fn(i):
        if i == 3:
            raise ValueError("chunk 3 failed")
        return i

    with pytest.raises(ValueError, match="chunk 3 failed"):
        list(map_on_workers(fn, range(6), workers=2))


def test_balanced_limit_gives_every_worker_equal_chunks():
    assert balanced_limit(3000, 2048, workers=2) == 1500  # not 2048 + 952
    assert balanced_limit(12589, 2048, workers=2) == 1574  # 8 chunks, 4 per worker
    assert balanced_limit(12589, 2048, workers=1) == 1799  # 7 chunks
    assert balanced_limit(100, 2048, workers=2) == 50
    assert balanced_limit(1, 2048, workers=4) == 1
    for total, batch, workers in [(12589, 2048, 2), (5000, 700, 3), (10, 3, 4)]:
        limit = balanced_limit(total, batch, workers)
        assert limit <= batch
        n_chunks = -(-total // limit)
        assert n_chunks <= workers * -(-total // (workers * batch))


def test_a_cpu_takes_one_worker_per_thread():
    assert cpu_workers("cpu") == torch.get_num_threads()
    assert cpu_workers(torch.device("cuda", 0)) == 1
