"""``kd-ref bench mlp``: cost of forward, backprop and R{backprop} on a 784-500-300-10 network.

Prints, for each batch size, the time of each pass, the ratios R{backprop} /
backprop and backprop / forward, and the fraction of this machine's float64
matrix-product rate (measured in the same run) that backprop achieves.
Targets: R{backprop}/backprop <= 2.0, backprop/forward <= 3.0, >= 50% of the GEMM
rate at batch 1000. Last, the time of one optimiser step on the net's parameters
and its share of a training step (backprop + optimiser step) at each batch size.
"""

import numpy as np

from ..cli import ArgumentParser
from ..mlp import MLP
from ..optim import SGD, Adadelta
from ..outputs import DotProduct
from ..timing import best_time
from ._timing import add_common_args, positive_int, start, try_torch

SIZES = [784, 500, 300, 10]


def _layer_flops(n):
    """Flops of one matrix product per layer for a batch of n (2 n D_in D_out summed)."""
    return sum(2.0 * n * i * o for i, o in zip(SIZES[:-1], SIZES[1:]))


def _torch_ratio(torch, net, x, t, v_p, ours_grad, ours_hvp):
    """Our time / PyTorch autograd time for the gradient and for a double-backward HVP."""
    torch.set_default_dtype(torch.float64)
    Ws = [torch.tensor(W, requires_grad=True) for W in net.W]
    bs = [torch.tensor(b, requires_grad=True) for b in net.b]
    vs = [torch.tensor(a) for a in net.param_views(v_p)]
    X, T = torch.tensor(x), torch.tensor(t)
    params = [p for pair in zip(Ws, bs) for p in pair]

    def loss():
        h = X
        for i, (W, b) in enumerate(zip(Ws, bs)):
            a = h @ W.T + b
            h = torch.log_softmax(a, dim=1) if i == len(Ws) - 1 else torch.relu(a)
        return (T * h).sum()

    def grad():
        return torch.autograd.grad(loss(), params)

    def hvp():
        g = torch.autograd.grad(loss(), params, create_graph=True)
        return torch.autograd.grad(sum((gi * vi).sum() for gi, vi in zip(g, vs)), params)

    return ours_grad / best_time(grad), ours_hvp / best_time(hvp)


def main(argv=None):
    parser = ArgumentParser(prog="kd-ref bench mlp", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=positive_int, nargs="+", default=[20, 100, 1000], help="batch sizes")
    args = add_common_args(parser).parse_args(argv)
    rng, rate = start(args)
    net = MLP(SIZES, ["relu", "relu", "log_softmax"], rng)
    print(f"network {'-'.join(map(str, SIZES))} (relu, relu, log_softmax), dot-product loss, float64\n")
    print(f"{'batch':>6} {'forward':>10} {'backprop':>10} {'input-only':>10} {'R{bp} full':>10} "
          f"{'R{bp} v_x':>10} {'R/bp':>6} {'bp/fwd':>6} {'bp GEMM%':>8}")
    torch = try_torch()
    backprop = {}
    for n in args.batch:
        x = rng.normal(size=(n, SIZES[0]))
        t = np.eye(SIZES[-1])[rng.integers(0, SIZES[-1], size=n)]
        out = DotProduct(t)
        v_p, v_x = rng.normal(size=net.n_params), rng.normal(size=x.shape)
        t_fwd = best_time(lambda: net.forward(x))
        t_bp = backprop[n] = best_time(lambda: net.grad(x, out))
        t_in = best_time(lambda: net.grad(x, out, param_grads=False))
        t_r = best_time(lambda: net.hvp(x, out, v_p, v_x))
        t_rx = best_time(lambda: net.hvp(x, out, v_x=v_x))
        frac = 3 * _layer_flops(n) / t_bp / rate  # backprop = forward + two products per layer
        print(f"{n:>6} {t_fwd * 1e3:>8.2f}ms {t_bp * 1e3:>8.2f}ms {t_in * 1e3:>8.2f}ms {t_r * 1e3:>8.2f}ms "
              f"{t_rx * 1e3:>8.2f}ms {t_r / t_bp:>6.2f} {t_bp / t_fwd:>6.2f} {100 * frac:>7.0f}%")
        if torch is not None:
            g_ratio, h_ratio = _torch_ratio(torch, net, x, t, v_p, t_bp, best_time(lambda: net.hvp(x, out, v_p)))
            print(f"{'':>6} ours / torch autograd: gradient {g_ratio:.2f}, HVP (double backward) {h_ratio:.2f}")
    grad = rng.normal(size=net.n_params)
    for opt in (Adadelta(), SGD(1e-9)):
        params = net.params.copy()
        t_opt = best_time(lambda: opt.step(params, grad))
        shares = ", ".join(f"{100 * t_opt / (t_opt + t):.0f}% at batch {n}" for n, t in backprop.items())
        print(f"\n{type(opt).__name__} step on the {net.n_params} parameters: {t_opt * 1e3:.2f}ms, "
              f"of a training step (backprop + step): {shares}", end="")
    print()
    if torch is None:
        print("\n(PyTorch is not installed: the optional autograd comparison was skipped)")
    print("\nbackprop = forward + backward with parameter gradients; input-only skips (B.9);")
    print("R{bp} full = forward + R-forward + R-backward for v over (params, input); R{bp} v_x = reduced form (B.19-B.21).")
    print("Flop count: forward 1, backprop 3, R{backprop} with a full direction 8 layer products,")
    print("so R/bp cannot fall below 8/3 = 2.67 for the full direction; the reduced v_x form needs 6 (ratio 2.0).")
    return 0
