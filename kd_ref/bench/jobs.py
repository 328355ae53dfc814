"""``kd-ref bench jobs``: throughput of ``--jobs 2`` against ``--jobs 1`` on two NADE trainings (kd_ref.jobs).

Trains two NADEs (784 inputs, ``--hidden`` units, minibatch 20, ADADELTA) on
binarised MNIST when ``KD_REF_DATA`` has it (else random binary images), each on a
stream of its own, first one after the other in this process, then at once in
two worker processes, and prints the wall times, the throughput ratio
t(jobs 1) / t(jobs 2) (target >= 1.6 on two free cores; 2 is the ceiling) and
whether both ways gave the same parameters, bit for bit. The pool's start-up is
counted. The CPU seconds the trainings got per wall second ("cores busy") show
how much of the machine the run had. On a machine shared with other work the ratio says how many of the two
cores were free as much as how well the pool scales: the load average is printed
beside it.
"""
import os
import time

import numpy as np

from .. import datasets
from ..cli import ArgumentParser
from ..jobs import run_tasks
from ..nade import NADE
from ..optim import Adadelta
from ..timing import component_rng
from ._timing import add_common_args, positive_int, start


def train_nade(shared, k):
    """NADE ``k`` trained on ``x`` for ``steps`` minibatches of 20, from stream (seed, k): (parameters, CPU seconds)."""
    x, hidden, steps, seed = shared
    began = time.process_time()
    rng = component_rng(seed, k)
    nade = NADE(x.shape[1], hidden, rng)
    nade.fit(x, rng, n_steps=steps, batch_size=20, optimizer=Adadelta(), progress=False)
    return nade.params.copy(), time.process_time() - began


def images(n, rng):
    """``n`` binary 784-pixel images: binarised MNIST if available, else independent fair coins."""
    if datasets.mnist_available():
        (x, _), _ = datasets.load_mnist()
        return datasets.binarize(x[:n])
    return (rng.uniform(size=(n, 784)) < 0.5).astype(float)


def main(argv=None):
    parser = ArgumentParser(prog="kd-ref bench jobs", description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=positive_int, default=100, help="NADE hidden units (default 100)")
    parser.add_argument("--steps", type=positive_int, default=400, help="minibatches per NADE (default 400)")
    args = add_common_args(parser).parse_args(argv)
    rng, _ = start(args)
    shared = (images(2000, rng), args.hidden, args.steps, args.seed)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"two NADEs 784-{args.hidden}, {args.steps} minibatches of 20 each; {cores} cores available")
    times, params = {}, {}
    for jobs in (1, 2):
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        began = time.perf_counter()
        out = run_tasks(train_nade, [0, 1], jobs, shared=shared)
        times[jobs] = time.perf_counter() - began
        params[jobs] = [p for p, _ in out]
        cpu = sum(c for _, c in out)
        print(f"  --jobs {jobs}: {times[jobs]:7.2f} s wall, {cpu:6.2f} s CPU in the trainings = {cpu / times[jobs]:.2f} "
              f"cores busy   (load average before: {load:.1f})")
    same = all(np.array_equal(a, b) for a, b in zip(params[1], params[2]))
    print(f"throughput --jobs 2 / --jobs 1: {times[1] / times[2]:.2f}  (target >= 1.6 on 2 free cores; on a loaded "
          f"machine at most the ratio of the cores busy)")
    print(f"same parameters both ways, bit for bit: {same}")
    return 0
