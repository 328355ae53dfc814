"""Timing helpers shared by the ``kd-ref bench`` commands."""
import time

import numpy as np


def best_time(fn, repeats=5, min_seconds=0.2):
    """Smallest wall-clock time of one call of ``fn`` over ``repeats`` rounds.

    Each round calls ``fn`` as often as fits in ``min_seconds / repeats`` (at least
    once) and keeps the mean; the minimum over rounds is the least disturbed figure.
    """
    fn()  # warm up caches and BLAS threads
    best = np.inf
    for _ in range(repeats):
        calls, began = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - began
            if elapsed >= min_seconds / repeats:
                break
        best = min(best, elapsed / calls)
    return best


def gemm_rate(n=1000, k=784, m=500, rng=None):
    """Measured float64 matrix-product rate of this machine, in flop/s (2 n k m per product)."""
    rng = np.random.default_rng(0) if rng is None else rng
    a, b = rng.normal(size=(n, k)), rng.normal(size=(k, m))
    return 2.0 * n * k * m / best_time(lambda: a @ b)


def try_torch():
    """The ``torch`` module when it is installed, else None (every torch comparison is optional)."""
    try:
        import torch
    except ImportError:
        return None
    return torch
