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

Then one GPED distillation step (S3.11, ``gped_distill`` with GPED's settings: predictive and
expected entropy by U_o over D' of N rows, M' = 100, Adam) for the student of the same widths
with its entropy head, against one student gradient (the joint loss's value and gradient at
M' = 100 inputs): the step adds the teacher's forward pass at the M' inputs, the g-function,
the estimator update and the Adam step. The chain is left out of this ratio (the step reads a
fixed teacher state); its cost per distillation step is H SGLD steps (GPED thins by H = 100),
printed beside it.

Whether the target is met depends on the machine's ratio of normal-draw speed to matrix-product
speed: the noise is P = 478,410 draws per step whatever M is, the gradient about 6 M P flops, so
the ratio falls towards 1 as M grows; the last column prints the nanoseconds per normal draw so a
miss can be read against it.
"""
import numpy as np

from ..cli import ArgumentParser
from ..distill.gped import gped_distill, gped_settings, gped_student
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


class _FixedState:
    """A sampler that gives the same teacher state at every step: a distillation step's cost without the chain's."""

    def __init__(self, theta):
        self.theta = theta

    def next_batch(self, k):
        return np.broadcast_to(self.theta, (k, self.theta.size))


def gped_step_times(rng, n_data=10_000, steps=20, thin=100):
    """{gradient, gped, chain} seconds: one student gradient, one GPED step (S3.11) without the chain, ``thin``
    SGLD steps (the chain's share of one GPED step)."""
    teacher = MLP(SIZES, NAMES, rng)
    d_prime = rng.uniform(size=(n_data, SIZES[0]))
    settings = gped_settings("both", n_steps=steps, thin=thin)
    student = gped_student(teacher, rng, head="entropy")
    loss, g = settings.make_loss(), settings.make_g()
    x = d_prime[:settings.batch_size]
    targets = g(teacher.forward(x).y)

    def distil():
        gped_distill(teacher, _FixedState(teacher.params.copy()), student, g,
                     settings.make_estimator(n_data, SIZES[-1]), loss, d_prime, settings, np.random.default_rng(3))

    post = mlp_log_posterior_gradient(teacher, d_prime, rng.integers(0, SIZES[-1], size=n_data), 10.0,
                                      batch_size=100, rng=np.random.default_rng(1))
    sgld = SGLD(post, teacher.params.copy(), np.random.default_rng(2), 4e-6)
    best = interleaved_best_times({"gradient": lambda: loss(student, x, targets), "gped": distil,
                                   "sgld": sgld.step})
    return {"gradient": best["gradient"], "gped": best["gped"] / steps, "chain": thin * best["sgld"],
            "steps": steps, "thin": thin}


def main(argv=None):
    parser = ArgumentParser(prog="kd-ref bench sgld", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=positive_int, nargs="+", default=[100, 1000], help="minibatch sizes M")
    parser.add_argument("--gped-steps", type=positive_int, default=20,
                        help="steps of gped_distill per timing of the distillation step (default 20)")
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

    r = gped_step_times(rng, steps=args.gped_steps)
    print(f"\nGPED distillation step (S3.11; predictive + entropy by U_o, M' = 100, Adam; the student "
          f"{'-'.join(map(str, SIZES[:-1]))}-({SIZES[-1]}+1), {r['steps']} steps of gped_distill per timing):")
    print(f"  student gradient {r['gradient'] * 1e3:.2f}ms, GPED step without the chain {r['gped'] * 1e3:.2f}ms: "
          f"ratio {r['gped'] / r['gradient']:.2f}")
    print(f"  the chain's share at H = {r['thin']} SGLD steps per kept state (M = 100): {r['chain'] * 1e3:.1f}ms, "
          f"{r['chain'] / r['gped']:.1f} x the rest of the step")
    return 0
