"""Appendix A: the R operator, checked numerically on kd_ref's building blocks.

R_v{g(theta)} = d/dr g(theta + r v) at r = 0 (A.1). Each row compares the value
that R{backprop}'s rules give with a central difference of g along v:

  (A.1)   definition: the network output's R_y from ``MLP.r_forward``
  (i)     R{c} = 0 for a constant (an input row when v has no input part)
  (ii)    R{theta} = v for the parameters themselves
  (iii)   linearity: R{alpha g + beta h} = alpha R{g} + beta R{h}, and linear in v
  (iv)    product rule: R{W x} = V x + W R{x} for one layer's linear phase
  (v)     chain rule: R{f(a)} = f'(a) R{a} (J R{a} for softmax) for every nonlinearity
  H v     H v = R_v{grad E}: ``MLP.hvp`` against differences of the gradient

Run with ``python -m appendix_checks.appendix_a``.
"""
import sys

import numpy as np

from ._table import Row, print_table
from kd_ref import gradcheck
from kd_ref.mlp import MLP
from kd_ref.nonlinearities import NONLINEARITIES
from kd_ref.outputs import SquareError

N_CASES = 20
TOL = 1e-7


def _random_net(rng):
    n_layers = int(rng.integers(1, 4))
    sizes = [int(s) for s in rng.integers(2, 7, size=n_layers + 1)]
    smooth = ["linear", "logistic", "probit", "softmax", "log_softmax"]
    names = [str(rng.choice(smooth)) for _ in range(n_layers)]
    net = MLP(sizes, names, rng)
    x = rng.normal(size=(int(rng.integers(1, 5)), sizes[0]))
    return net, x


def _output_along(net, x, v_params, v_x):
    """g(r) = network output at (theta + r v_params, x + r v_x), flattened."""
    theta = net.params.copy()

    def g(r):
        net.set_params(theta + r * v_params)
        y = net.predict(x + r * v_x).ravel()
        net.set_params(theta)
        return y

    return g


def run(seed=0):
    """Evaluate every property on ``N_CASES`` random networks; return the table rows."""
    rng = np.random.default_rng(seed)
    errors = {key: [] for key in ("A.1", "i", "ii", "iii", "iv", "v", "Hv")}
    for _ in range(N_CASES):
        net, x = _random_net(rng)
        v_p, v_x = rng.normal(size=net.n_params), rng.normal(size=x.shape)
        cache = net.forward(x)

        # (A.1) the definition, on the whole network output
        R_y = net.r_forward(cache, v_p, v_x).R_y
        numeric = gradcheck.directional_difference(_output_along(net, x, v_p, v_x), 0.0, 1.0)
        errors["A.1"].append(gradcheck.relative_error(R_y.ravel(), numeric))

        # (i) an input that does not move is a constant, R{x} = 0: layer 1's R{a} is then
        # the derivative of a_1 along the parameter direction alone
        R = net.r_forward(cache, v_p, None)
        v_views = net.param_views(v_p)
        Vs, v_bs = v_views[0::2], v_views[1::2]
        W, b = net.W[0].copy(), net.b[0].copy()
        numeric = gradcheck.directional_difference(lambda r: x @ (W + r * Vs[0]).T + b + r * v_bs[0], 0.0, 1.0)
        errors["i"].append(gradcheck.relative_error(R.R_a[0], numeric))

        # (ii) R{theta} = v: differentiate theta + r v itself
        numeric = gradcheck.directional_difference(lambda r: net.params + r * v_p, 0.0, 1.0)
        errors["ii"].append(gradcheck.relative_error(v_p, numeric))

        # (iii) linearity in the function and in the direction
        alpha, beta = rng.normal(size=2)
        u_p = rng.normal(size=net.n_params)
        R_u = net.r_forward(cache, u_p, None).R_y
        R_v = net.r_forward(cache, v_p, None).R_y
        R_mix = net.r_forward(cache, alpha * u_p + beta * v_p, None).R_y
        errors["iii"].append(gradcheck.relative_error(R_mix, alpha * R_u + beta * R_v))
        h = lambda r: (alpha * _output_along(net, x, v_p, 0 * v_x)(r)
                       + beta * np.tanh(_output_along(net, x, v_p, 0 * v_x)(r)))
        analytic = alpha * R_v.ravel() + beta * (1 - np.tanh(cache.y.ravel()) ** 2) * R_v.ravel()
        errors["iii"].append(gradcheck.relative_error(analytic, gradcheck.directional_difference(h, 0.0, 1.0)))

        # (iv) product rule on layer 1: a = x W^T + b
        V, vb = Vs[0], v_bs[0]
        analytic = x @ V.T + v_x @ W.T + vb
        numeric = gradcheck.directional_difference(lambda r: (x + r * v_x) @ (W + r * V).T + (b + r * vb), 0.0, 1.0)
        errors["iv"].append(gradcheck.relative_error(analytic, numeric))

        # (v) chain rule for every nonlinearity
        a, R_a = rng.normal(size=(2, 3, 4)) * 2
        for name, cls in NONLINEARITIES.items():
            f = cls()
            if name == "relu":
                a = np.where(np.abs(a) < 1e-2, 0.5, a)  # away from the kink
            analytic = f.r_forward(a, f.forward(a), R_a)
            numeric = gradcheck.directional_difference(lambda r: f.forward(a + r * R_a), 0.0, 1.0)
            errors["v"].append(gradcheck.relative_error(analytic, numeric))

        # H v = R_v{grad E}
        out = SquareError(rng.normal(size=cache.y.shape))
        P = net.n_params
        theta = net.params.copy()

        def grad(z):
            net.set_params(z[:P])
            _, d_p, d_x = net.grad(z[P:].reshape(x.shape), out)
            net.set_params(theta)
            return np.concatenate([d_p, d_x.ravel()])

        Hv_p, Hv_x = net.hvp(x, out, v_p, v_x)
        z, v = np.concatenate([theta, x.ravel()]), np.concatenate([v_p, v_x.ravel()])
        numeric = gradcheck.directional_difference(grad, z, v)
        errors["Hv"].append(gradcheck.relative_error(np.concatenate([Hv_p, Hv_x.ravel()]), numeric))

    labels = {
        "A.1": ("(A.1)", "R_v{y} = d/dr y(theta + r v), network output"),
        "i": ("(i)", "R{c} = 0 for a constant input"),
        "ii": ("(ii)", "R{theta} = v"),
        "iii": ("(iii)", "linearity in g and in v"),
        "iv": ("(iv)", "product rule R{W x} = V x + W R{x}"),
        "v": ("(v)", "chain rule R{f(a)} = J_f R{a}, all nonlinearities"),
        "Hv": ("H v", "H v = R_v{grad E} over (theta, x)"),
    }
    return [Row(labels[k][0], labels[k][1], max(errs), TOL) for k, errs in errors.items()]


def main(seed=0):
    """Print the Appendix A table; True when every row passes."""
    return print_table(f"Appendix A: the R operator ({N_CASES} random networks, seed {seed})", run(seed))


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
