"""Timing and seeding helpers shared by benchmarks, experiments and notebooks.

``kd_ref.bench`` and ``kd_ref.experiments`` both use these and never import each other.

Examples
--------
>>> rng = component_rng(7, 2, 1)
>>> bool(rng.random() == component_rng(7, 2, 1).random())
True
>>> best_time(lambda: None, repeats=2, min_seconds=0.001) >= 0.0
True
"""
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


def best_times(fns, rounds=3):
    """Smallest wall-clock time of one call of each function in the dict ``fns``, measured interleaved.

    Each round calls every function once in turn, so a ratio of two entries compares them under
    the same machine load (on a shared machine, timing one after the other can differ by 30%
    from load alone); the minimum over ``rounds`` rounds (after one warm-up round) is kept.
    """
    for fn in fns.values():
        fn()
    best = {name: np.inf for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            began = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - began)
    return best


def component_rng(base, *code):
    """A generator fixed by a run's base seed and a component code.

    Each part of a run (data, teacher, each student, ...) draws from its own stream,
    so a part read from a cache does not shift the random numbers of the others.
    """
    return np.random.default_rng([base, *code])
