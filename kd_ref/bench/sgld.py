"""``kd-ref bench sgld``: cost of one SGLD step (S3.1) against one minibatch gradient on 784-400-400-10.

Prints, for the MNIST teacher of Bayesian dark knowledge and GPED (784-400-400-10, ReLU,
ReLU, log-softmax; 478,410 parameters) at each minibatch size M (default 100), the time of

- one minibatch log-posterior gradient (``mlp_log_posterior_gradient``: a minibatch drawn,
  one forward and one backprop, the N/M scaling and the prior term -tau theta);
- one SGD step with it (the gradient and theta += eta g);
- one SGLD step (``SGLD.step``: the gradient, one standard normal draw per parameter and the
  update),

and the ratios SGLD / gradient (target <= 1.15: the only extra work is the noise draw and
two vector operations) and SGLD / SGD step, all measured in the same run and interleaved
so that every ratio sees the same load. The inputs are random (timing does not depend on them).

Whether the target is met depends on the machine's ratio of normal-draw speed to matrix-product
speed: the noise is P = 478,410 draws per step whatever M is, the gradient about 6 M P flops, so
the ratio falls towards 1 as M grows; the last column prints the nanoseconds per normal draw so a
miss can be read against it.
"""
import numpy as np

from ..cli import ArgumentParser
from ..mcmc import SGLD, mlp_log_posterior_gradient
from ..mlp import MLP
from ._timing import add_common_args, interleaved_best_times, positive_int, start

SIZES = [784, 400, 400, 10]
NAMES = ["relu", "relu", "log_softmax"]
#: SGLD step / minibatch gradient, at most
TARGET = 1.15


def step_times(batch_sizes, rng, n_data=10_000, rounds=3):
    """Rows {M, gradient, sgd, sgld, noise} of seconds per call for the teacher at each minibatch size."""
    net = MLP(SIZES, NAMES, rng)
    x = rng.uniform(size=(n_data, SIZES[0]))
    y = rng.integers(0, SIZES[-1], size=n_data)
    rows = []
    for m in batch_sizes:
        post = mlp_log_posterior_gradient(net, x, y, 10.0, batch_size=m, rng=np.random.default_rng(1))
        sgld = SGLD(post, net.params, np.random.default_rng(2), 4e-6)
        noise = np.empty(net.n_params)

        def sgd_step():
            net.params += 4e-6 * post(net.params)

        steps = {"gradient": lambda: post(net.params), "sgd": sgd_step, "sgld": sgld.step,
                 "noise": lambda: sgld.rng.standard_normal(out=noise)}
        rows.append({"M": m, **interleaved_best_times(steps, rounds)})
    return rows


def main(argv=None):
    parser = ArgumentParser(prog="kd-ref bench sgld", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=positive_int, nargs="+", default=[100, 1000], help="minibatch sizes M")
    args = add_common_args(parser).parse_args(argv)
    rng, _ = start(args)
    net_size = MLP(SIZES, NAMES, np.random.default_rng(0)).n_params
    print(f"teacher {'-'.join(map(str, SIZES))} ({', '.join(NAMES)}), {net_size:,} parameters, "
          f"N = 10,000 random inputs, prior precision 10, eta = 4e-6\n")
    print(f"{'M':>6} {'gradient':>10} {'SGD step':>10} {'SGLD step':>10} {'steps/s':>8} {'noise':>9} "
          f"{'SGLD/grad':>9} {'SGLD/SGD':>9}   target{'':24} ns/draw")
    for r in step_times(args.batch, rng):
        ratio = r["sgld"] / r["gradient"]
        verdict = f"{'ok' if ratio <= TARGET else 'OVER'} (SGLD/grad <= {TARGET})"
        print(f"{r['M']:>6} {r['gradient'] * 1e3:>8.2f}ms {r['sgd'] * 1e3:>8.2f}ms {r['sgld'] * 1e3:>8.2f}ms "
              f"{1 / r['sgld']:>8.1f} {r['noise'] * 1e3:>7.2f}ms {ratio:>9.3f} {r['sgld'] / r['sgd']:>9.3f}   {verdict}"
              f"   {r['noise'] / net_size * 1e9:.1f}")
    print("\ngradient = one minibatch drawn + forward + backprop with parameter gradients + N/M scaling + prior;")
    print("noise = one standard normal draw per parameter (the part of an SGLD step a gradient step does not have).")
    print("The GPED distillation step's ratio is not measured here yet (gped_distill is not in kd_ref).")
    return 0
