"""Appendix C: NADE forward propagation, backprop, R{backprop} and the reduced forms.

Every row evaluates one equation group of ``kd_ref.nade`` on random NADEs
(sizes, orderings, parameters, inputs, directions; both hidden nonlinearities)
and reports the worst relative error against an independent reference:

  (C.1)-(C.7)    log q(x) against an explicit loop over examples and positions that
                 multiplies the conditionals q(x_{o_d} | x_{o_<d}) one at a time
  (C.1)          normalisation: the sum of q(x) over all 2^D binary x is 1
  (C.8)-(C.15)   gradients w.r.t. the parameters and x against central differences of log q
  (C.16)-(C.19)  the R-forward R{z} against differences of the logits z along v
  (C.16)-(C.27)  H v for a full direction against differences of the gradient; symmetry
  (C.28)         reduced forms v = (v_theta, 0) and (0, v_x) against differences, and the
                 reduced call (None for the zero part) against the full call
  (4.35)-(4.42)  ancestral sampling (section 4.2.2, described after 4.42, no number of its own):
                 the returned conditionals equal those the forward pass gives for the samples

For ReLU a case is redrawn when an activation lies so close to the kink at 0 that
the difference steps would cross it. Run with ``python -m appendix_checks.appendix_c``.
"""
import sys

import numpy as np

from ._table import Row, print_table
from kd_ref import gradcheck
from kd_ref.nade import NADE

N_CASES = 12
NONLINEARITIES = ("logistic", "relu")


def _loop_conditionals(nade, x):
    """(C.2)-(C.6) one example and one position at a time; returns y (N, D) and every a (N, D, H) in data order."""
    f = (lambda a: 1.0 / (1.0 + np.exp(-a))) if nade.nonlinearity == "logistic" else (lambda a: np.maximum(a, 0.0))
    N, D = x.shape
    y = np.empty((N, D))
    acts = np.empty((N, D, nade.n_hidden))
    for n in range(N):
        a = nade.c.copy()
        for i in nade.order:
            acts[n, i] = a
            z = nade.b[i] + sum(nade.V[i, j] * f(a[j]) for j in range(nade.n_hidden))
            y[n, i] = 1.0 / (1.0 + np.exp(-z))
            a = a + nade.W[:, i] * x[n, i]
    return y, acts


def _random_case(rng, nonlinearity):
    """A NADE, a real-valued input batch, row weights and a direction, away from ReLU kinks."""
    step = gradcheck.DEFAULT_STEP
    while True:
        D, H, N = int(rng.integers(1, 8)), int(rng.integers(1, 6)), int(rng.integers(1, 4))
        nade = NADE(D, H, rng, order=rng.permutation(D), nonlinearity=nonlinearity, init_std=1.0)
        nade.b[...] = rng.normal(size=D)
        nade.c[...] = rng.normal(size=H)
        x = rng.normal(size=(N, D))
        w = rng.normal(size=N)
        v_p, v_x = rng.normal(size=nade.n_params), rng.normal(size=(N, D))
        if nonlinearity != "relu":
            return nade, x, w, v_p, v_x
        # how far one difference step can move an activation: along v, or along one coordinate
        _, acts = _loop_conditionals(nade, x)
        vW = nade.param_views(v_p)[0]
        reach = 2 * step * (np.abs(vW).sum() + np.abs(v_x).sum() + np.abs(v_p).max() * D + 1.0
                            + np.abs(x).max() + np.abs(nade.W).max())
        if np.abs(acts).min() > 2 * reach:
            return nade, x, w, v_p, v_x


def _joint(nade, x, w):
    """Value, gradient and HVP of E = sum_n w_n log q(x_n) over z = (params, x), restoring the parameters."""
    return gradcheck.over_params_and_input(nade, x, lambda xx: float(w @ nade.log_prob(xx, continuous=True)),
                                           lambda xx: nade.grad(xx, weights=w, continuous=True)[1:],
                                           lambda xx, vp, vx: nade.hvp(xx, vp, vx, weights=w, continuous=True))


def run(seed=0):
    """Evaluate every equation group on ``N_CASES`` random cases per nonlinearity; return the table rows."""
    rng = np.random.default_rng(seed)
    err = {}

    def record(key, e):
        err.setdefault(key, []).append(float(e))

    for nonlinearity in NONLINEARITIES:
        for _ in range(N_CASES):
            nade, x, w, v_p, v_x = _random_case(rng, nonlinearity)
            P, (N, D) = nade.n_params, x.shape
            xb = (rng.random((N, D)) < 0.5).astype(float)
            y_loop, _ = _loop_conditionals(nade, xb)
            log_q_loop = np.sum(np.where(xb == 1, np.log(y_loop), np.log1p(-y_loop)), axis=1)
            record("fwd", gradcheck.relative_error(nade.log_prob(xb), log_q_loop))
            all_x = ((np.arange(2 ** D)[:, None] >> np.arange(D)) & 1).astype(float)
            record("norm", abs(np.exp(nade.log_prob(all_x)).sum() - 1.0))

            value, grad, hvp, z = _joint(nade, x, w)
            g, num = grad(z), gradcheck.numerical_gradient(value, z)
            record("bp_params", gradcheck.relative_error(g[:P], num[:P]))
            record("bp_input", gradcheck.relative_error(g[P:], num[P:]))

            v = np.concatenate([v_p, v_x.ravel()])
            logits, _, _, _ = gradcheck.over_params_and_input(        # the logits as a function of (params, x)
                nade, x, lambda xx: nade.r_forward(xx, continuous=True)[0], None)
            R_z = nade.r_forward(x, v_p, v_x, continuous=True)[1]
            record("r_fwd", gradcheck.relative_error(R_z, gradcheck.directional_difference(logits, z, v)))

            record("hvp", gradcheck.check_hvp(grad, hvp, z, v).rel_error)
            record("sym", gradcheck.check_symmetry(hvp, z, rng.normal(size=z.shape), v).rel_error)
            v_theta = np.concatenate([v_p, np.zeros(N * D)])
            v_input = np.concatenate([np.zeros(P), v_x.ravel()])
            record("reduced", gradcheck.check_hvp(grad, hvp, z, v_theta).rel_error)
            record("reduced", gradcheck.check_hvp(grad, hvp, z, v_input).rel_error)
            for (red_p, red_x), full in ((nade.hvp(x, None, v_x, weights=w, continuous=True), hvp(z, v_input)),
                                         (nade.hvp(x, v_p, None, weights=w, continuous=True), hvp(z, v_theta))):
                record("reduced_call", gradcheck.relative_error(np.concatenate([red_p, red_x.ravel()]), full))

            xs, ys = nade.sample(5, rng)
            record("sample", gradcheck.relative_error(ys, nade.conditionals(xs)))

    return [
        Row("C.1-C.7", "log q vs loop over conditionals", max(err["fwd"]), 1e-12),
        Row("C.1", "|sum_x q(x) - 1| over all 2^D x", max(err["norm"]), 1e-12),
        Row("C.8-C.15", "backprop dE/dtheta vs differences", max(err["bp_params"]), 1e-6),
        Row("C.8-C.15", "backprop dE/dx vs differences", max(err["bp_input"]), 1e-6),
        Row("C.16-C.19", "R-forward R{z} vs differences of z", max(err["r_fwd"]), 1e-6),
        Row("C.16-C.27", "H v (full v) vs differences of grad", max(err["hvp"]), 1e-5),
        Row("C.16-C.27", "symmetry u'Hv = v'Hu", max(err["sym"]), 1e-9),
        Row("C.28", "reduced v=(v_theta,0), (0,v_x) vs diffs", max(err["reduced"]), 1e-5),
        Row("C.28", "reduced call (None part) vs full call", max(err["reduced_call"]), 1e-12),
        Row("4.35-4.42", "sampled conditionals vs conditionals(x)", max(err["sample"]), 1e-12),
    ]


def main(seed=0):
    """Print the Appendix C table; True when every row passes."""
    title = f"Appendix C: NADE ({N_CASES} random cases per nonlinearity: {', '.join(NONLINEARITIES)}; seed {seed})"
    return print_table(title, run(seed))


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
