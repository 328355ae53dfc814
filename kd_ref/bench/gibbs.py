"""``kd-ref bench gibbs``: block Gibbs sweeps per second of the CD25(500) RBM with 2,000 parallel chains.

The RBM is read from ``rbm_cd25_500.npz`` in KD_REF_DATA, or, when absent, a
random RBM of the same size (784 x 500) is used and the benchmark says so. One
sweep (4.33-4.34) is two (K x 784) x (784 x 500) matrix products, two logistic
evaluations and K x (784 + 500) uniform draws; its GEMM-bound estimate is the
time this machine's float64 matrix product (measured in the same run) needs for
the two products' 4 K D H flops.
"""
import os

import numpy as np

from ..cli import ArgumentParser
from ..rbm import RBM, GibbsSampler
from ..timing import best_time
from ._timing import add_common_args, positive_int, start, try_torch


def _rbm(rng):
    from .. import datasets

    try:
        return RBM.from_file(), "Salakhutdinov and Murray's CD25(500) RBM (rbm_cd25_500.npz)"
    except FileNotFoundError:
        why = "KD_REF_DATA is not set" if not os.environ.get(datasets.ENV_VAR) else "rbm_cd25_500.npz is absent"
        rbm = RBM(784, 500, rng, init_std=0.05)
        rbm.b_visible[...] = -2.0
        return rbm, f"a random 784 x 500 RBM ({why})"


def _torch_ratio(torch, rbm, x0, ours):
    """Our sweep time / the same sweep written with torch tensors (matmul, sigmoid, uniform comparisons)."""
    torch.set_default_dtype(torch.float64)
    W, bv, bh = (torch.tensor(np.array(a)) for a in (rbm.W, rbm.b_visible, rbm.b_hidden))
    state = {"x": torch.tensor(x0)}
    gen = torch.Generator().manual_seed(0)

    def sweep():
        h = (torch.rand(x0.shape[0], W.shape[1], generator=gen) < torch.sigmoid(state["x"] @ W + bh)).double()
        state["x"] = (torch.rand(*x0.shape, generator=gen) < torch.sigmoid(h @ W.T + bv)).double()

    return ours / best_time(sweep, repeats=3)


def main(argv=None):
    parser = ArgumentParser(prog="kd-ref bench gibbs", description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=positive_int, nargs="+", default=[2000], help="numbers of chains K")
    args = add_common_args(parser).parse_args(argv)
    try:                                         # a damaged data file is the user's to fix: one line, status 2
        rbm, source = _rbm(np.random.default_rng([args.seed, 1]))
    except ValueError as err:
        parser.error(str(err))
    _, rate = start(args)
    D, H = rbm.n_visible, rbm.n_hidden
    print(f"RBM: {source}\n")
    print(f"{'chains':>7} {'sweep':>10} {'sweeps/s':>9} {'chain-sweeps/s':>15} {'/GEMM-bound':>12}")
    torch = try_torch()
    for k in args.chains:
        sampler = GibbsSampler(rbm, np.random.default_rng(args.seed + 1), n_chains=k)
        sampler.sweep(5)                                    # leave the uniform random start
        t = best_time(lambda: sampler.sweep(1), repeats=5, min_seconds=1.0)
        bound = 4.0 * k * D * H / rate
        print(f"{k:>7} {t * 1e3:>8.1f}ms {1.0 / t:>9.2f} {k / t:>15.0f} {t / bound:>12.2f}")
        if torch is not None:
            print(f"{'':>7} ours / torch sweep: {_torch_ratio(torch, rbm, sampler.x.copy(), t):.2f}")
    if torch is None:
        print("\n(PyTorch is not installed: the optional comparison was skipped)")
    print("\nThe thesis's training stream (2,000 chains, one sweep per step, minibatch 20 taken in turn) costs one")
    print("sweep per NADE step: GibbsSampler.next_batch(20).")
    return 0
