"""Timing helpers shared by the ``kd-ref bench`` commands."""
import ctypes

import numpy as np

from ..cli import int_at_least
from ..timing import best_time

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def keep_freed_memory():
    """Ask glibc to keep freed large blocks instead of returning them to the OS.

    By default every array over 128 KiB is mmap-ed and unmapped again, so a pass
    that allocates its outputs afresh pays a page fault per 4 KiB each time; for
    a 784-500-300-10 backprop at batch 1000 that is about a third of the run time.
    The benchmarks measure the arithmetic, so they switch this off (pass
    ``--default-malloc`` to see the other figure). Returns False where the C
    library has no ``mallopt`` (not glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False


def gemm_rate(n=1000, k=784, m=500, rng=None):
    """Measured float64 matrix-product rate of this machine, in flop/s (2 n k m per product)."""
    rng = np.random.default_rng(0) if rng is None else rng
    a, b = rng.normal(size=(n, k)), rng.normal(size=(k, m))
    return 2.0 * n * k * m / best_time(lambda: a @ b)


def interleaved_best_times(steps, rounds=3):
    """{name: seconds} for a dict of callables: each timed in turn, ``rounds`` times, keeping its best.

    Load on a shared machine drifts over seconds; interleaving lets every ratio of the
    figures see the same conditions.
    """
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(rounds):
        for name, step in steps.items():
            best[name] = min(best[name], best_time(step, repeats=3))
    return best


def try_torch():
    """The ``torch`` module when it is installed, else None (every torch comparison is optional)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


# ----------------------------------------------------------------- command line
#: argparse type for a size (batch, samples, chains): an integer >= 1.
positive_int = int_at_least(1)


def add_common_args(parser):
    """The options every benchmark takes: --seed and --default-malloc."""
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc returning large blocks to the OS (page faults counted in the times, "
                             "as in an ordinary training run)")
    return parser


def start(args):
    """Set the allocator, measure the GEMM rate and print both; returns (rng from --seed, GEMM rate in flop/s)."""
    kept = False if args.default_malloc else keep_freed_memory()
    rate = gemm_rate()
    print(f"float64 GEMM rate of this machine (1000x784 @ 784x500): {rate / 1e9:.2f} Gflop/s")
    print("allocator: " + ("freed blocks kept (no page-fault cost for fresh arrays)" if kept
                           else "default (each fresh large array pays page faults)")
          + "; times are the best of several runs, on a shared machine expect noise of 10-30%")
    return np.random.default_rng(args.seed), rate
