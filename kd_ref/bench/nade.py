"""``kd-ref bench nade``: cost of NADE log q, backprop, R{backprop} and sampling at D = 784, H = 500.

Inputs are the first N binarised MNIST test images (``binarized_mnist.npz`` from
KD_REF_DATA) or, when that file is absent, random binary images with the same
pixel density (0.13); the benchmark says which. The NADE uses the thesis's
raster column-wise order and logistic hidden units.

Printed for each batch size: the time of each pass, R{backprop}/backprop
(target <= 2.0), backprop/forward, and each time divided by its GEMM-bound
estimate: the time this machine's float64 matrix product (measured in the same
run) needs for the pass's multiply-adds. Counting each (N x D x H) product as one
unit (2 N D H flops): forward 2 (running sum C.3, logits C.5), log q and the
parameter gradient (what maximum-likelihood training calls) 5 (+ dh C.9, dV C.11,
dW C.12), backprop to the parameters and x 6 (+ dx C.14), full R{backprop} 15,
reduced (0, v_x) with only the parameter part 10, sampling 2. A NADE also evaluates one exponential per
(example, position, hidden unit), which no matrix product does, so the ratios
stay well above 1 in NumPy; they let runs on different machines be compared.

The exponential is the real floor, so each pass is also divided by the time of one
``np.exp`` over the same number of (N x D x H) elements, measured in the same run on a
cache-resident block of the size the pass works on (one block of positions x rows x
hidden units, repeated): target <= 8 for log q + parameter gradient at N = 20, the
training minibatch, in float64. ``--dtype float32`` also times that pass and the forward
pass with a float32 copy of the NADE and prints the float64 / float32 time ratio at each
batch size (target >= 1.8 for log q + gradient at N = 20 and 100).
"""
import os

import numpy as np

from ..cli import ArgumentParser
from .. import nade as nade_module
from ..nade import NADE, raster_column_order
from ..timing import best_time, best_times
from ._timing import add_common_args, positive_int, start, try_torch

D, H = 784, 500
UNITS = {"forward": 2, "grad (params)": 5, "backprop": 6, "R{bp} full": 15, "R{bp} (0,v_x)": 10, "sample": 2}


def _inputs(n_max, rng):
    """(x of shape (n_max, 784), description): binarised MNIST test images, else random binary images."""
    from .. import datasets

    try:
        _, x_test = datasets.load_binarized_mnist(dtype=np.uint8)
        return x_test[:n_max].astype(np.float64), f"the first {n_max} binarised MNIST test images"
    except FileNotFoundError:
        why = "KD_REF_DATA is not set" if not os.environ.get(datasets.ENV_VAR) else "binarized_mnist.npz is absent"
        return ((rng.random((n_max, D)) < 0.13).astype(np.float64),
                f"random binary images with pixel density 0.13 ({why}, so no MNIST)")


def _torch_ratio(torch, nade, x, ours):
    """Our log q + parameter-gradient time / a PyTorch autograd NADE's (cumulative sum over an (N, D, H) tensor)."""
    torch.set_default_dtype(torch.float64)
    Wo, Vo, bo, c = (torch.tensor(np.array(a), requires_grad=True) for a in nade._ordered())
    X = torch.tensor(x[:, nade.order])

    def grad():
        A = torch.cumsum(X[:, :, None] * Wo[None], dim=1)
        A = torch.cat([torch.zeros_like(A[:, :1]), A[:, :-1]], dim=1) + c
        Z = (torch.sigmoid(A) * Vo[None]).sum(-1) + bo
        log_q = (X * Z - torch.nn.functional.softplus(Z)).sum()
        return torch.autograd.grad(log_q, [Wo, Vo, bo, c])

    return ours / best_time(grad, repeats=2)


def exp_call(n, h, total):
    """(fn, scale): ``fn`` runs np.exp over about ``total`` elements as the NADE pass meets them, a cache-resident
    block of (positions x rows x hidden units) as :func:`kd_ref.nade._plan` sizes it, repeated; its time times
    ``scale`` is that of exactly ``total`` elements."""
    rows, k = nade_module._plan(n, h)
    block = np.random.default_rng(0).normal(size=(k, rows, h))
    out = np.empty_like(block)
    count = max(1, int(round(total / block.size)))

    def run():
        for _ in range(count):
            np.exp(block, out=out)
    return run, total / (count * block.size)


def main(argv=None):
    parser = ArgumentParser(prog="kd-ref bench nade", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=positive_int, nargs="+", default=[20, 100, 1000], help="batch sizes N")
    parser.add_argument("--samples", type=positive_int, default=100, help="number of images to sample")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                        help="float32: also time a float32 copy and print the float64 / float32 ratios")
    args = add_common_args(parser).parse_args(argv)
    try:                                         # a damaged data file is the user's to fix: one line, status 2
        x_all, source = _inputs(max(args.batch), np.random.default_rng([args.seed, 1]))
    except ValueError as err:
        parser.error(str(err))
    rng, rate = start(args)
    nade = NADE(D, H, rng, order=raster_column_order(28, 28), init_std=0.05)
    single = nade.astype(np.float32) if args.dtype == "float32" else None
    print(f"NADE D={D}, H={H}, logistic hidden units, raster column-wise order, float64")
    print(f"inputs: {source}\n")
    header = (f"{'N':>5} {'pass':<16} {'time':>10} {'/GEMM-bound':>12} {'ns per N*D*H':>13} {'/np.exp':>8}")
    print(header)
    torch = try_torch()
    for n in args.batch:
        x = x_all[:n]
        v_p, v_x = rng.normal(size=nade.n_params), rng.normal(size=x.shape)
        run_exp, scale = exp_call(n, H, n * D * H)
        calls = {                           # timed interleaved, so that every ratio below is under one load
            "forward": lambda: nade.log_prob(x),
            "grad (params)": lambda: nade.grad(x, input_grads=False),
            "backprop": lambda: nade.grad(x),
            "R{bp} full": lambda: nade.hvp(x, v_p, v_x),
            "R{bp} (0,v_x)": lambda: nade.hvp(x, None, v_x, input_grads=False),
            "exp": run_exp}
        if single is not None:
            calls["forward f32"] = lambda: single.log_prob(x)
            calls["grad (params) f32"] = lambda: single.grad(x, input_grads=False)
        times = best_times(calls, rounds=5 if n <= 200 else 3)
        t_exp = times.pop("exp") * scale
        t32 = {name: times.pop(f"{name} f32") for name in ("forward", "grad (params)")} if single is not None else None
        for name, t in times.items():
            bound = UNITS[name] * 2.0 * n * D * H / rate
            print(f"{n:>5} {name:<16} {t * 1e3:>8.1f}ms {t / bound:>12.1f} {t / (n * D * H) * 1e9:>13.2f} "
                  f"{t / t_exp:>8.1f}")
        print(f"{n:>5} one np.exp per N*D*H element: {t_exp / (n * D * H) * 1e9:.2f} ns; log q + parameter gradient / "
              f"np.exp: {times['grad (params)'] / t_exp:.1f}" + (" (target <= 8 at N = 20)" if n == 20 else ""))
        if single is not None:
            print(f"{n:>5} float64 / float32: log q + parameter gradient {times['grad (params)'] / t32['grad (params)']:.2f}"
                  f" (target >= 1.8), log q {times['forward'] / t32['forward']:.2f}; float32 log q + gradient "
                  f"{t32['grad (params)'] / (n * D * H) * 1e9:.2f} ns per N*D*H")
        print(f"{n:>5} ratios: R{{bp}} full / backprop {times['R{bp} full'] / times['backprop']:.2f} (target <= 2.0), "
              f"R{{bp}} (0,v_x) / backprop {times['R{bp} (0,v_x)'] / times['backprop']:.2f}, "
              f"backprop / forward {times['backprop'] / times['forward']:.2f}")
        if torch is not None and n <= 200:
            ratio = _torch_ratio(torch, nade, x, times["grad (params)"])
            print(f"{n:>5} ours / torch autograd NADE (log q + parameter gradient): {ratio:.2f}")
    m = args.samples
    sampling = {"float64": lambda: nade.sample(m, np.random.default_rng(1))}
    if single is not None:
        sampling["float32"] = lambda: single.sample(m, np.random.default_rng(1))
    t_sampling = best_times(sampling)
    t_s = t_sampling["float64"]
    bound = UNITS["sample"] * 2.0 * m * D * H / rate
    print(f"\nsampling {m} images (ancestral, returns samples and conditionals): {t_s * 1e3:.1f}ms, "
          f"{t_s / bound:.1f} x GEMM-bound, {t_s / (m * D * H) * 1e9:.2f} ns per N*D*H")
    if single is not None:
        print(f"sampling, float64 / float32: {t_s / t_sampling['float32']:.2f}")
    if torch is None:
        print("\n(PyTorch is not installed: the optional autograd comparison was skipped)")
    print("\ngrad (params) = log q and its parameter gradient (training); backprop = log q and gradients w.r.t.")
    print("parameters and x (C.8-C.15); R{bp} full = H v for a direction")
    print("over (params, x) (C.16-C.27); R{bp} (0,v_x) = the reduced form (C.28) with only the parameter part,")
    print("as score matching uses it.")
    return 0
