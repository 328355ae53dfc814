"""Appendix B: forward propagation, backprop, R{backprop}, nonlinearities and output functions.

Every row evaluates one numbered equation group on random networks, inputs and
directions and reports the worst relative error against an independent
reference: an explicit per-example loop for the forward pass, central
differences of the value for first derivatives, and central differences of the
gradient for Hessian-vector products.

Run with ``python -m appendix_checks.appendix_b``.
"""
import sys

import numpy as np

from ._table import Row, print_table
from kd_ref import gradcheck
from kd_ref.mlp import MLP
from kd_ref.nonlinearities import NONLINEARITIES
from kd_ref.outputs import BinaryCrossEntropy, CrossEntropy, DotProduct, SquareError

N_CASES = 20
SMOOTH = ["linear", "logistic", "probit", "softmax", "log_softmax"]
NONLINEARITY_EQUATIONS = {
    "linear": "B.23-B.24", "relu": "B.25-B.26", "logistic": "B.27-B.29",
    "probit": "B.30-B.32", "softmax": "B.33-B.36", "log_softmax": "B.37-B.39",
}


def _random_problem(rng):
    n_layers = int(rng.integers(1, 4))
    sizes = [int(s) for s in rng.integers(2, 7, size=n_layers + 1)]
    names = [str(rng.choice(SMOOTH)) for _ in range(n_layers)]
    net = MLP(sizes, names, rng)
    x = rng.normal(size=(int(rng.integers(1, 5)), sizes[0]))
    return net, x, SquareError(rng.normal(size=(x.shape[0], sizes[-1])))


def _joint(net, x, out):
    """Value, gradient and HVP over z = (params, x), restoring the parameters afterwards."""
    return gradcheck.over_params_and_input(net, x, lambda xx: out.value(net.predict(xx)),
                                           lambda xx: net.grad(xx, out)[1:],
                                           lambda xx, vp, vx: net.hvp(xx, out, vp, vx))


def _loop_forward(net, x):
    """(B.2)-(B.7) one example and one unit at a time, the way the equations are written."""
    out = []
    for row in x:
        h = row
        for W, b, f in zip(net.W, net.b, net.f):
            a = np.array([sum(W[j, i] * h[i] for i in range(len(h))) + b[j] for j in range(len(b))])
            h = f.forward(a[None, :])[0]
        out.append(h)
    return np.array(out)


def run(seed=0):
    """Evaluate every equation group on ``N_CASES`` random cases; return the table rows."""
    rng = np.random.default_rng(seed)
    err = {}

    def record(key, e):
        err.setdefault(key, []).append(e)

    for _ in range(N_CASES):
        net, x, out = _random_problem(rng)
        value, grad, hvp, z = _joint(net, x, out)
        P = net.n_params
        record("fwd", gradcheck.relative_error(net.predict(x), _loop_forward(net, x)))

        g = grad(z)
        num = gradcheck.numerical_gradient(value, z)
        record("bp_params", gradcheck.relative_error(g[:P], num[:P]))
        record("bp_input", gradcheck.relative_error(g[P:], num[P:]))
        _, none, d_x = net.grad(x, out, param_grads=False)
        record("bp_skip", gradcheck.relative_error(d_x.ravel(), num[P:]))

        v_p, v_x = rng.normal(size=P), rng.normal(size=x.shape)
        cache = net.forward(x)
        R_y = net.r_forward(cache, v_p, v_x).R_y
        theta = net.params.copy()

        def y_along(r):
            net.set_params(theta + r * v_p)
            y = net.predict(x + r * v_x)
            net.set_params(theta)
            return y

        record("r_fwd", gradcheck.relative_error(R_y, gradcheck.directional_difference(y_along, 0.0, 1.0)))
        v = np.concatenate([v_p, v_x.ravel()])
        record("r_bwd", gradcheck.check_hvp(grad, hvp, z, v).rel_error)
        record("sym", gradcheck.check_symmetry(hvp, z, rng.normal(size=z.shape), v).rel_error)
        v_theta_only = np.concatenate([v_p, np.zeros(x.size)])
        v_x_only = np.concatenate([np.zeros(P), v_x.ravel()])
        record("reduced", gradcheck.check_hvp(grad, hvp, z, v_theta_only).rel_error)
        record("reduced", gradcheck.check_hvp(grad, hvp, z, v_x_only).rel_error)
        # the reduced call (None for the zero part) must equal the full call
        red_p, red_x = net.hvp(x, out, v_x=v_x)
        full = hvp(z, v_x_only)
        record("reduced", gradcheck.relative_error(np.concatenate([red_p, red_x.ravel()]), full))

        # nonlinearities: J^T d against differences of f, and R_d_a against differences of J^T d
        a = rng.normal(scale=2.0, size=(3, 4))
        d, R_a, R_d = rng.normal(size=(3, 3, 4))
        for name, cls in NONLINEARITIES.items():
            f = cls()
            a_ok = np.where(np.abs(a) < 1e-2, 0.5, a) if name == "relu" else a
            analytic = np.sum(f.backward(a_ok, f.forward(a_ok), d) * R_a)
            numeric = gradcheck.directional_difference(lambda r: np.sum(f.forward(a_ok + r * R_a) * d), 0.0, 1.0)
            e1 = gradcheck.relative_error(analytic, numeric)
            analytic = f.r_backward(a_ok, f.forward(a_ok), d, R_a, R_d)
            numeric = gradcheck.directional_difference(
                lambda r: f.backward(a_ok + r * R_a, f.forward(a_ok + r * R_a), d + r * R_d), 0.0, 1.0)
            record(name, max(e1, gradcheck.relative_error(analytic, numeric)))

        # output functions: dE/dy against differences of E, R{dE/dy} against differences of dE/dy
        y = rng.uniform(0.05, 0.95, size=(3, 4))
        t = rng.uniform(size=(3, 4))
        R_y = rng.normal(size=(3, 4))
        for key, fn in (("se", SquareError(t)), ("ce", CrossEntropy(t)),
                        ("bce", BinaryCrossEntropy(t)), ("dot", DotProduct(t))):
            e1 = gradcheck.check_gradient(lambda yy: fn.value(yy.reshape(3, 4)),
                                          lambda yy: fn.grad(yy.reshape(3, 4)).ravel(), y.ravel()).rel_error
            e2 = gradcheck.relative_error(fn.r_grad(y, R_y),
                                          gradcheck.directional_difference(fn.grad, y, R_y))
            record(key, max(e1, e2))

    rows = [
        Row("B.2-B.7", "forward pass vs per-example loop", max(err["fwd"]), 1e-12),
        Row("B.8-B.11", "backprop dE/dtheta vs differences", max(err["bp_params"]), 1e-6),
        Row("B.8-B.11", "backprop dE/dx vs differences", max(err["bp_input"]), 1e-6),
        Row("B.9 skipped", "input-only backprop dE/dx", max(err["bp_skip"]), 1e-6),
        Row("B.12-B.14", "R-forward R{y} vs differences of y", max(err["r_fwd"]), 1e-6),
        Row("B.15-B.18", "H v (full v) vs differences of grad", max(err["r_bwd"]), 1e-5),
        Row("B.15-B.18", "symmetry u'Hv = v'Hu", max(err["sym"]), 1e-9),
        Row("B.19-B.21", "reduced forms (v_theta or v_x zero)", max(err["reduced"]), 1e-5),
    ]
    for name, eq in NONLINEARITY_EQUATIONS.items():
        rows.append(Row(eq, f"{name}: J^T d and R-backward", max(err[name]), 1e-6))
    for key, eq, label in (("se", "B.40-B.41", "square error"), ("ce", "B.42-B.43", "cross entropy"),
                           ("bce", "B.44-B.45", "binary cross entropy"), ("dot", "B.46-B.47", "dot product")):
        rows.append(Row(eq, f"{label}: dE/dy and R{{dE/dy}}", max(err[key]), 1e-6))
    return rows


def main(seed=0):
    """Print the Appendix B table; True when every row passes."""
    return print_table(f"Appendix B: feed-forward networks ({N_CASES} random cases, seed {seed})", run(seed))


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
