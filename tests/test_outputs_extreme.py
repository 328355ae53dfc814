"""Output layers at extreme pre-activations: kd_ref against a 50-digit (and more) reference.

Every (output function, last nonlinearity) pair with a log in it, inside a small
MLP whose last layer is scaled until the pre-activations a_L reach logit gaps of
1e4 or +-1e3: the value, the gradient over (params, x) and the Hessian-vector
product must match an independent mpmath evaluation of the same network.

The reference does not call kd_ref. It runs the forward pass in mpmath with
forward-mode second-order numbers (:class:`Dual2`): every quantity carries its
gradient over all of z = (params, x) and its derivative along the HVP direction,
so E's gradient and H v fall out of the chain rule one primitive at a time. Where
the float64 forms avoid a cancellation (1 - p_m of a softmax), the reference
instead raises its precision until the cancellation is harmless; where that would
need 1e5 digits (1 - Phi(1e3)) it uses the identity 1 - f(a) = f(-a) of a
symmetric CDF and the closed-form derivatives of log f.
"""

import mpmath as mp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kd_ref import gradcheck
from kd_ref import nonlinearities as nl
from kd_ref.distill.compression import CrossEntropyLoss, DerivativeSquareErrorLoss, Labels, MLPTeacher, log_probs_of
from kd_ref.mlp import MLP
from kd_ref.outputs import BinaryCrossEntropy, CrossEntropy, DotProduct, SquareError

from _tolerance import difference_noise, passes

BASE_DIGITS = 50
TOL = 1e-11          # see test docstrings: the float64 rounding of a_L itself sets this scale
FLOOR = 1e-280       # blocks smaller than this are compared absolutely (float64 has no digits there)


# ------------------------------------------------------------------ the reference
class Dual2:
    """A number with its gradient over z (``g``, shape (K,)), its derivative along a
    direction w (``s``) and the gradient of that derivative (``h``, shape (K,))."""

    __slots__ = ("v", "g", "s", "h")

    def __init__(self, v, g, s, h):
        self.v, self.g, self.s, self.h = v, g, s, h

    @classmethod
    def const(cls, c, k):
        zero = np.array([mp.mpf(0)] * k, dtype=object)
        return cls(mp.mpf(c), zero, mp.mpf(0), zero)

    def __add__(self, o):
        return Dual2(self.v + o.v, self.g + o.g, self.s + o.s, self.h + o.h)

    def __sub__(self, o):
        return Dual2(self.v - o.v, self.g - o.g, self.s - o.s, self.h - o.h)

    def __neg__(self):
        return Dual2(-self.v, -self.g, -self.s, -self.h)

    def __mul__(self, o):
        if not isinstance(o, Dual2):
            o = mp.mpf(o)
            return Dual2(self.v * o, self.g * o, self.s * o, self.h * o)
        return Dual2(self.v * o.v, self.v * o.g + o.v * self.g, self.v * o.s + o.v * self.s,
                     self.v * o.h + o.v * self.h + self.g * o.s + o.g * self.s)

    def apply(self, f0, f1, f2):
        """f(self) given f, f' and f'' at self.v (the chain rule to second order)."""
        return Dual2(f0, f1 * self.g, f1 * self.s, f1 * self.h + (f2 * self.s) * self.g)


def dual_leaves(z, w):
    """The independent variables: z_i with gradient e_i and derivative w_i along the direction w.

    Call inside ``mp.workdps``: the float64 entries are taken exactly.
    """
    k = len(z)
    leaves = []
    for i, (zi, wi) in enumerate(zip(z, w)):
        g = np.array([mp.mpf(0)] * k, dtype=object)
        g[i] = mp.mpf(1)
        leaves.append(Dual2(mp.mpf(float(zi)), g, mp.mpf(float(wi)), np.array([mp.mpf(0)] * k, dtype=object)))
    return leaves


def d_exp(u):
    e = mp.exp(u.v)
    return u.apply(e, e, e)


def d_log(u):
    return u.apply(mp.log(u.v), 1 / u.v, -1 / u.v ** 2)


def d_logistic(u):
    s, sn = 1 / (1 + mp.exp(-u.v)), 1 / (1 + mp.exp(u.v))
    return u.apply(s, s * sn, s * sn * (sn - s))


def d_probit(u):
    pdf = mp.npdf(u.v)
    return u.apply(mp.ncdf(u.v), pdf, -u.v * pdf)


def d_relu(u):
    return u.apply(max(u.v, mp.mpf(0)), mp.mpf(1 if u.v > 0 else 0), mp.mpf(0))


def d_log_cdf(name, u):
    """log f(u) for f = sigma or Phi, with its closed-form first and second derivatives."""
    a = u.v
    if name == "logistic":
        s, sn = 1 / (1 + mp.exp(-a)), 1 / (1 + mp.exp(a))
        return u.apply(-mp.log1p(mp.exp(-a)), sn, -s * sn)
    log_phi = mp.log1p(-mp.ncdf(-a)) if a > 0 else mp.log(mp.ncdf(a))
    lam = mp.npdf(a) / mp.ncdf(a)
    return u.apply(log_phi, lam, -lam * (a + lam))


def d_log_softmax(row):
    shift = max(u.v for u in row)  # a constant: log-softmax does not depend on it
    k = len(row[0].g)
    total = Dual2.const(0, k)
    for u in row:
        total = total + d_exp(u - Dual2.const(shift, k))
    lse = d_log(total) + Dual2.const(shift, k)
    return [u - lse for u in row]


def d_layer(name, row):
    if name == "linear":
        return row
    if name in ("softmax", "log_softmax"):
        z = d_log_softmax(row)
        return z if name == "log_softmax" else [d_exp(u) for u in z]
    return [{"relu": d_relu, "logistic": d_logistic, "probit": d_probit}[name](u) for u in row]


def reference(net, x, pair, t, w, digits):
    """E, dE/dz and H w over z = (params, x) for the pair, in mpmath at ``digits`` digits.

    Returns mpmath numbers: value, gradient (K,) and H w (K,), K = n_params + x.size.
    """
    last, output = pair
    with mp.workdps(digits):
        leaves = dual_leaves(np.concatenate([net.params, x.ravel()]), w)
        k = len(leaves)
        params, inputs = leaves[:net.n_params], leaves[net.n_params:]
        E = Dual2.const(0, k)
        for n in range(x.shape[0]):
            h = inputs[n * x.shape[1]:(n + 1) * x.shape[1]]
            pos = 0
            for layer, (n_in, n_out) in enumerate(zip(net.sizes[:-1], net.sizes[1:])):
                W = params[pos:pos + n_in * n_out]
                b = params[pos + n_in * n_out:pos + n_in * n_out + n_out]
                pos += n_in * n_out + n_out
                a = []
                for j in range(n_out):
                    acc = b[j]
                    for i in range(n_in):
                        acc = acc + W[j * n_in + i] * h[i]
                    a.append(acc)
                if layer < net.n_layers - 1:
                    h = d_layer(net.nonlinearities[layer], a)
            for i, a_i in enumerate(a):
                ti = mp.mpf(float(t[n, i]))
                if last in ("logistic", "probit"):       # t log f(a) + u log f(-a), u = 1 - t or 0
                    u = 1 - ti if output == "bce" else mp.mpf(0)
                    E = E + d_log_cdf(last, a_i) * ti + d_log_cdf(last, -a_i) * u
            if last in ("softmax", "log_softmax"):       # t . log softmax(a), both pairs
                for i, z_i in enumerate(d_log_softmax(a)):
                    E = E + z_i * mp.mpf(float(t[n, i]))
        return E.v, E.g, E.h


# ------------------------------------------------------------------ comparison
def blocks(net, x, vec):
    """Split a (params, x) vector into W_l, b_l blocks and one block per input row."""
    out = {}
    for name in net.layout.names:
        out[name] = vec[net.layout.slice(name)]
    rest = vec[net.n_params:]
    for n in range(x.shape[0]):
        out[f"x{n}"] = rest[n * x.shape[1]:(n + 1) * x.shape[1]]
    return out


def relative_error(mine, exact):
    """||mine - exact|| / max(||exact||, FLOOR), with the norms taken in mpmath: squares of
    float64 numbers below 1e-154 would underflow and let a wrong tiny block pass."""
    with mp.workdps(30):
        diff = mp.sqrt(mp.fsum((mp.mpf(float(m)) - e) ** 2 for m, e in zip(mine, exact)))
        size = mp.sqrt(mp.fsum(e ** 2 for e in exact))
        return float(diff / max(size, mp.mpf(FLOOR)))


def block_errors(net, x, mine, exact):
    """Norm-wise relative error of every block; exact is a vector of mpmath numbers."""
    mine_blocks, exact_blocks = blocks(net, x, mine), blocks(net, x, exact)
    return {name: relative_error(mine_blocks[name], exact_blocks[name]) for name in mine_blocks}


PAIRS = [("softmax", "ce"), ("log_softmax", "dot"), ("logistic", "bce"), ("probit", "bce"),
         ("logistic", "ce"), ("probit", "ce")]
HIDDEN = ["linear", "relu", "logistic", "probit", "softmax", "log_softmax"]


def output_function(pair, t):
    return {"ce": CrossEntropy, "bce": BinaryCrossEntropy, "dot": DotProduct}[pair[1]](t)


def targets(kind, a_L, pair, rng):
    """Soft targets, or targets that agree or disagree with where the output saturates."""
    n, c = a_L.shape
    if kind == "soft":
        return rng.uniform(size=(n, c))
    if pair[0] in ("softmax", "log_softmax"):
        hot = np.argmax(a_L, axis=1) if kind == "agree" else np.argmin(a_L, axis=1)
        return np.eye(c)[hot]
    on = a_L > 0 if kind == "agree" else a_L < 0
    return on.astype(float)


@st.composite
def extreme_problems(draw):
    pair = draw(st.sampled_from(PAIRS))
    n_hidden = draw(st.integers(0, 1))
    c = draw(st.integers(2, 3)) if pair[0] in ("softmax", "log_softmax") else draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 3)) for _ in range(n_hidden + 1)] + [c]
    names = [draw(st.sampled_from(HIDDEN)) for _ in range(n_hidden)] + [pair[0]]
    seed = draw(st.integers(0, 2**32 - 1))
    # logit gaps up to 2e4 for the softmax pairs, pre-activations up to +-1e3 (and beyond) for the CDFs
    top = 1e4 if pair[0] in ("softmax", "log_softmax") else 1e3
    scale = draw(st.sampled_from([1.0, 8.0, 40.0, 300.0, top]))
    kind = draw(st.sampled_from(["soft", "agree", "disagree"]))
    rng = np.random.default_rng(seed)
    net = MLP(sizes, names, rng)
    net.params[...] = rng.normal(size=net.n_params)
    W, b = net.W[-1], net.b[-1]
    W *= scale
    b *= scale
    x = rng.normal(size=(draw(st.integers(1, 3)), sizes[0]))
    cache = net.forward(x)
    for a, f in zip(cache.a[:-1], net.f[:-1]):
        if f.name == "relu":
            assume(np.min(np.abs(a)) > 1e-8)  # the reference and kd_ref must agree on the side of the kink
    t = targets(kind, cache.a[-1], pair, rng)
    w = rng.normal(size=net.n_params + x.size)
    spread = float(np.max(np.abs(cache.a[-1])))
    digits = BASE_DIGITS + int(min(2 * spread, 1700) / 2.3)  # 1 - p_m keeps ~40 digits at gaps < 1700
    return net, x, pair, t, w, digits


def kd_ref_results(net, x, out, w):
    value, d_p, d_x = net.grad(x, out)
    P = net.n_params
    Hv_p, Hv_x = net.hvp(x, out, w[:P], w[P:].reshape(x.shape))
    return value, np.concatenate([d_p, d_x.ravel()]), np.concatenate([Hv_p, Hv_x.ravel()])


@settings(max_examples=40)
@given(extreme_problems())
def test_value_gradient_and_hvp_match_the_reference_at_extreme_pre_activations(problem):
    """Blockwise (each W_l, b_l, the input) relative error below 1e-11, one row at a time.

    kd_ref's own a_L carries one rounding per term of W x + b, about
    1e-16 (|W| |x| + |b|), which moves an exponentially small quantity such as
    sigma(-a) or 1 - p_m by that much relative to itself (1e-13 at |a| = 700);
    TOL leaves a margin above that. The y-based route misses by up to 100%.
    Rows are checked one by one because a parameter block sums over the batch,
    and a sum such as (1 - 1e-33) + (-1 + 5e-7) is ill-conditioned in itself.
    """
    net, x, pair, t, w, digits = problem
    P = net.n_params
    for n in range(x.shape[0]):
        x_n, t_n = x[n:n + 1], t[n:n + 1]
        w_n = np.concatenate([w[:P], w[P + n * x.shape[1]:P + (n + 1) * x.shape[1]]])
        value, grad, hv = kd_ref_results(net, x_n, output_function(pair, t_n), w_n)
        for arr in (grad, hv):
            assert np.all(np.isfinite(arr))
        ref_value, ref_grad, ref_hv = reference(net, x_n, pair, t_n, w_n, digits)
        value_err = abs(float(mp.mpf(value) - ref_value)) / max(abs(float(ref_value)), FLOOR)
        assert value_err < TOL, (value, ref_value)
        for what, mine, exact in (("gradient", grad, ref_grad), ("H v", hv, ref_hv)):
            errs = block_errors(net, x_n, mine, exact)
            worst = max(errs, key=errs.get)
            assert errs[worst] < TOL, f"{what} block {worst}: relative error {errs[worst]:.2e} ({pair}, {net})"


@settings(max_examples=25)
@given(extreme_problems())
def test_jacobian_of_log_outputs_matches_the_reference(problem):
    """jacobian(log=True) of softmax, logistic and probit outputs, and jacobian() of
    log_softmax, per row against the reference's d log y_i / dx."""
    net, x, pair, _, w, digits = problem
    log = pair[0] != "log_softmax"
    J = net.jacobian(x, log=log)
    c = net.sizes[-1]
    for i in range(c):
        e_i = np.zeros((x.shape[0], c))
        e_i[:, i] = 1.0
        _, ref_grad, _ = reference(net, x, (pair[0], "dot" if pair[0] == "log_softmax" else "ce"), e_i, w, digits)
        ref_x = ref_grad[net.n_params:]
        for n in range(x.shape[0]):
            exact = ref_x[n * x.shape[1]:(n + 1) * x.shape[1]]
            assert relative_error(J[n, i], exact) < TOL, (i, n, J[n, i], exact)


# ------------------------------------------------------------------ fused forms against the textbook route
@st.composite
def moderate_problems(draw):
    pair = draw(st.sampled_from(PAIRS))
    c = draw(st.integers(1, 4)) if pair[0] in ("logistic", "probit") else draw(st.integers(2, 4))
    n = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = rng.normal(scale=draw(st.floats(0.1, 4.0)), size=(n, c))
    t = rng.uniform(size=(n, c))
    return pair, a, t, rng.normal(size=(n, c))


@given(moderate_problems())
def test_fused_forms_equal_the_route_through_y_at_moderate_inputs(problem):
    """value, J^T dE/dy and the R-seed J^T R{dE/dy} + R{J}^T dE/dy (B.8, B.15) against value(a), grad(a), r_grad(a)."""
    pair, a, t, R_a = problem
    f, out = nl.get(pair[0]), output_function(pair, t)
    fused = out.fused(f)
    y = f.forward(a)
    probs = np.exp(y) if pair[0] == "log_softmax" else y
    assume(np.all((probs > 1e-4) & (probs < 1 - 1e-4)))  # the route through y keeps ~12 digits there
    d_y, R_y = out.grad(y), f.r_forward(a, y, R_a)
    assert fused.value(a) == pytest.approx(out.value(y), rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(fused.grad(a), f.backward(a, y, d_y), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fused.r_grad(a, R_a), f.r_backward(a, y, d_y, R_a, out.r_grad(y, R_y)),
                               rtol=1e-9, atol=1e-12)


@given(moderate_problems())
def test_fused_derivatives_match_central_differences(problem):
    pair, a, t, R_a = problem
    fused = output_function(pair, t).fused(nl.get(pair[0]))
    result = gradcheck.check_gradient(lambda aa: fused.value(aa.reshape(a.shape)),
                                      lambda aa: fused.grad(aa.reshape(a.shape)).ravel(), a.ravel())
    assert passes(result, 1e-8, fused.value(a)), str(result)
    analytic, numeric = fused.r_grad(a, R_a), gradcheck.directional_difference(fused.grad, a, R_a)
    floor = difference_noise(fused.grad(a)) * np.max(np.abs(R_a))
    assert gradcheck.relative_error(analytic, numeric) < 1e-8 or np.max(np.abs(analytic - numeric)) <= floor


def test_pairs_without_a_log_have_no_fused_form():
    t = np.ones((1, 2))
    for name in nl.NONLINEARITIES:
        assert SquareError(t).fused(nl.get(name)) is None
    for name in ("linear", "relu", "log_softmax"):
        assert CrossEntropy(t).fused(nl.get(name)) is None
    for name in ("linear", "relu"):
        assert BinaryCrossEntropy(t).fused(nl.get(name)) is None
    for name in ("linear", "relu", "logistic", "probit", "softmax"):
        assert DotProduct(t).fused(nl.get(name)) is None


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_binary_cross_entropy_on_a_softmax_is_refused(name, rng):
    net = MLP([2, 3], [name], rng)
    before = net.params.copy()
    with pytest.raises(ValueError, match=f"output: binary cross entropy expected separate probabilities.*{name}"):
        net.hvp(np.zeros((1, 2)), BinaryCrossEntropy(np.full((1, 3), 0.5)), v_x=np.ones((1, 2)))
    np.testing.assert_array_equal(net.params, before)


def test_mlp_gradient_and_hvp_use_the_fused_form_and_backprop_keeps_the_textbook_route(rng):
    """At moderate inputs the fused MLP results equal backprop seeded at y; seeding needs exactly one place."""
    net = MLP([3, 4, 3], ["probit", "softmax"], rng)
    x, t = rng.normal(size=(5, 3)), rng.uniform(size=(5, 3))
    out = CrossEntropy(t)
    cache = net.forward(x)
    value, d_p, d_x = net.grad(x, out)
    plain_p, plain_x = net.backprop(cache, out.grad(cache.y))
    assert value == pytest.approx(out.value(cache.y), rel=1e-13)
    np.testing.assert_allclose(d_p, plain_p, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(d_x, plain_x, rtol=1e-10, atol=1e-13)
    v_x = rng.normal(size=x.shape)
    rcache = net.r_forward(cache, v_x=v_x)
    Hv_p, Hv_x = net.hvp(x, out, v_x=v_x)
    plain_p, plain_x = net.r_backprop(cache, rcache, out.grad(cache.y), out.r_grad(cache.y, rcache.R_y))
    np.testing.assert_allclose(Hv_p, plain_p, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(Hv_x, plain_x, rtol=1e-9, atol=1e-13)
    with pytest.raises(ValueError, match="d_y, d_a: expected exactly one seed.*received both"):
        net.backprop(cache, out.grad(cache.y), d_a=np.zeros((5, 3)))
    with pytest.raises(ValueError, match="d_y, d_a: expected exactly one seed.*received neither"):
        net.backprop(cache)
    with pytest.raises(ValueError, match=r"d_a: expected shape \(5, 3\), received shape \(5, 2\)"):
        net.backprop(cache, d_a=np.zeros((5, 2)))
    with pytest.raises(ValueError, match="d_a, R_d_a: expected both seeds at the same place"):
        net.r_backprop(cache, rcache, out.grad(cache.y), R_d_a=np.zeros((5, 3)))


# ------------------------------------------------------------------ closed forms in the tails
def test_binary_cross_entropy_in_the_tails_has_the_closed_form_derivatives():
    """E, dE/da and d^2E/da^2 of BCE on a logistic output at a = +-40, +-1e3, with t = 0 and 1.

    t = 1, a > 0: E = -log1p(exp(-a)), dE/da = sigma(-a), d2E/da2 = -sigma(a) sigma(-a);
    t = 0, a > 0: E = -a - log1p(exp(-a)), dE/da = -sigma(a). The route through y
    gave dE/da = 0 or -1e-288 for these, and E clipped at log(tiny) for t = 1, a < -708.
    """
    f = nl.Logistic()
    a = np.array([[40.0, -40.0, 1e3, -1e3, 800.0]])
    ones = BinaryCrossEntropy(np.ones_like(a)).fused(f)
    zeros = BinaryCrossEntropy(np.zeros_like(a)).fused(f)
    e = np.exp(-40.0)
    np.testing.assert_allclose(ones.grad(a), [[e / (1 + e), 1 / (1 + e), 0.0, 1.0, 0.0]], rtol=1e-15)
    np.testing.assert_allclose(zeros.grad(a), [[-1 / (1 + e), -e / (1 + e), -1.0, 0.0, -1.0]], rtol=1e-15)
    np.testing.assert_allclose(ones.r_grad(a, np.ones_like(a)), [[-e / (1 + e) ** 2] * 2 + [0.0] * 3], rtol=1e-15)
    assert BinaryCrossEntropy(np.ones((1, 1))).fused(f).value(np.array([[-1e3]])) == -1e3
    assert BinaryCrossEntropy(np.zeros((1, 1))).fused(f).value(np.array([[40.0]])) == pytest.approx(-40.0 - e, rel=1e-15)
    assert BinaryCrossEntropy(np.ones((1, 1))).fused(f).value(np.array([[40.0]])) == pytest.approx(-e, rel=1e-15)


def test_probit_log_derivatives_against_mpmath_on_a_grid():
    """log Phi, lambda = N/Phi and -lambda (a + lambda) to a few ulps from -1e4 to 1e4 (the float64 a exactly).

    -2 <= a < 0 is sampled densely: there a + lambda(a) is taken as a difference, which
    loses up to about 20 ulps (nonlinearities.PROBIT_CF_FROM); everywhere else 16 ulps.
    """
    a = np.concatenate([np.linspace(-45, 45, 181), [-1e4, -1e3, -200.0, 200.0, 1e3, 1e4, -2.0, 2.0, -1.999, -2.001],
                        np.linspace(-2.0, 0.0, 401)])
    f = nl.Probit()
    got = [f.log_f(a), f.d_log_f(a), f.d2_log_f(a)]
    with mp.workdps(60):
        for k, ak in enumerate(a):
            m = mp.mpf(float(ak))
            lam = mp.npdf(m) / mp.ncdf(m)
            exact = [mp.log1p(-mp.ncdf(-m)) if m > 0 else mp.log(mp.ncdf(m)), lam, -lam * (m + lam)]
            for j in range(3):
                err = abs(float(mp.mpf(float(got[j][k])) - exact[j])) / max(abs(float(exact[j])), nl.TINY)
                ulps = 32 if j == 2 and -2 <= ak < 0 else 16
                assert err < ulps * np.finfo(float).eps, (j, ak, got[j][k], exact[j])


def test_logistic_log_derivatives_against_mpmath_on_a_grid():
    a = np.concatenate([np.linspace(-60, 60, 121), [-1e4, -1e3, -745.0, 745.0, 1e3, 1e4]])
    f = nl.Logistic()
    got = [f.log_f(a), f.d_log_f(a), f.d2_log_f(a)]
    with mp.workdps(60):
        for k, ak in enumerate(a):
            m = mp.mpf(float(ak))
            s, sn = 1 / (1 + mp.exp(-m)), 1 / (1 + mp.exp(m))
            for j, exact in enumerate([-mp.log1p(mp.exp(-m)), sn, -s * sn]):
                err = abs(float(mp.mpf(float(got[j][k])) - exact)) / max(abs(float(exact)), nl.TINY)
                assert err < 4 * np.finfo(float).eps, (j, ak, got[j][k], exact)


def test_logistic_softplus_and_slope_primitives_against_mpmath_on_a_grid():
    """The in-place primitives NADE, RBM and the log Z estimators share (nl.logistic, softplus, logistic_slope)."""
    a = np.concatenate([np.linspace(-700, 700, 141), [-0.3, 1e-9, 36.9, 37.1, -1e4, -1e3, 1e3, 1e4]])
    got = [nl.logistic(a), nl.softplus(a), nl.logistic_slope(a)]
    with mp.workdps(60):
        for k, ak in enumerate(a):
            m = mp.mpf(float(ak))
            s, sn = 1 / (1 + mp.exp(-m)), 1 / (1 + mp.exp(m))
            for j, exact in enumerate([s, mp.log1p(mp.exp(m)), s * sn]):
                err = abs(float(mp.mpf(float(got[j][k])) - exact)) / max(abs(float(exact)), nl.TINY)
                assert err < 4 * np.finfo(float).eps, (j, ak, got[j][k], exact)
    for fn in (nl.logistic, nl.logistic_slope):                 # out may be the input itself
        b = a.copy()
        assert fn(b, b) is b
        np.testing.assert_array_equal(b, fn(a))

def test_gaussian_pdf_keeps_its_digits_in_the_tails():
    a = np.array([0.3, 7.1, 25.3, -33.3, 37.9])
    with mp.workdps(60):
        for ak, got in zip(a, nl.gaussian_pdf(a)):
            exact = mp.npdf(mp.mpf(float(ak)))
            assert abs(float(mp.mpf(float(got)) - exact)) / float(exact) < 4 * np.finfo(float).eps


def test_log_softmax_keeps_the_digits_of_the_top_log_probability():
    """z_m = -log1p(sum_j exp(a_j - a_m)): at a gap of 40, z_m = -exp(-40), not 0."""
    z = nl.LogSoftmax().forward(np.array([[40.0, 0.0], [0.0, 1e4]]))
    np.testing.assert_allclose(z[0], [-np.exp(-40.0), -40.0 - np.exp(-40.0)], rtol=1e-15)
    np.testing.assert_array_equal(z[1], [-1e4, 0.0])


# ------------------------------------------------------------------ finiteness, symmetry, old failures
ALL_PAIRS = [(name, out) for name in nl.NONLINEARITIES for out in ("se", "dot", "ce", "bce")
             if not (out == "ce" and name in ("linear", "relu", "log_softmax"))
             and not (out == "bce" and name not in ("logistic", "probit"))]


@pytest.mark.parametrize("name,kind", ALL_PAIRS)
def test_no_gradient_or_hvp_raises_or_overflows_on_a_finite_input(name, kind, rng):
    """Every pair at pre-activations up to +-1e4 (and 1e100 for the CDFs): finite results, no exception."""
    net = MLP([2, 3, 3], ["logistic", name], rng)
    huge = 1e100 if name in ("logistic", "probit") else 1e4
    for scale in (1.0, 40.0, 1e3, huge):
        net.W[-1][...] = scale * rng.normal(size=(3, 3))
        net.b[-1][...] = scale * rng.normal(size=3)
        x = rng.normal(size=(4, 2)) * 30.0
        y = net.predict(x)
        t = rng.uniform(size=y.shape)
        out = {"se": SquareError, "dot": DotProduct, "ce": CrossEntropy, "bce": BinaryCrossEntropy}[kind](t)
        value, d_p, d_x = net.grad(x, out)
        Hv_p, Hv_x = net.hvp(x, out, rng.normal(size=net.n_params), rng.normal(size=x.shape))
        for arr in (value, d_p, d_x, Hv_p, Hv_x):
            assert np.all(np.isfinite(arr)), (name, kind, scale)


@settings(max_examples=30)
@given(extreme_problems())
def test_hessian_stays_symmetric_at_extreme_pre_activations(problem):
    net, x, pair, t, w, _ = problem
    out = output_function(pair, t)
    P = net.n_params
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(2, P + x.size))
    Hu = np.concatenate([part.ravel() for part in net.hvp(x, out, u[:P], u[P:].reshape(x.shape))])
    Hv = np.concatenate([part.ravel() for part in net.hvp(x, out, v[:P], v[P:].reshape(x.shape))])
    # the size of the terms summed (sums of |products|: squared norms of an H v near 1e-200 underflow)
    scale = np.sum(np.abs(v * Hu)) + np.sum(np.abs(u * Hv))
    assert abs(v @ Hu - u @ Hv) <= 1e-12 * max(scale, FLOOR), (v @ Hu, u @ Hv)


def test_logistic_output_returns_the_correctly_rounded_probability_and_a_hidden_layer_is_not_moved(rng):
    """No upper clip: sigma(40) is exactly 1.0, so a hidden layer passes 1.0 on; the lower
    bound at tiny keeps logs finite on the textbook route (B.27, see nonlinearities.TINY)."""
    a = np.array([[40.0, -800.0, 0.5]])
    np.testing.assert_array_equal(nl.Logistic().forward(a), [[1.0, nl.TINY, 1 / (1 + np.exp(-0.5))]])
    np.testing.assert_array_equal(nl.Probit().forward(a)[0, :2], [1.0, nl.TINY])
    y = nl.Logistic().forward(a)
    out = BinaryCrossEntropy(np.array([[0.0, 1.0, 0.5]]))
    assert np.isfinite(out.value(y)) and np.all(np.isfinite(out.grad(y)))
    assert np.all(np.isfinite(out.r_grad(y, nl.Logistic().r_forward(a, y, np.ones_like(y)))))
    assert np.isfinite(CrossEntropy(np.ones((1, 3))).value(nl.Softmax().forward(np.array([[1e4, 0.0, -1e4]]))))


# ------------------------------------------------------------------ chapter 2 students and teachers
@pytest.mark.parametrize("last", ["softmax", "log_softmax"])
def test_teacher_log_probabilities_and_their_derivatives_are_exact_at_huge_logit_gaps(last, rng):
    """MLPTeacher.label and log_probs_of for a softmax net take log p and d log p/dx from a_L."""
    net = MLP([3, 4, 3], ["relu", last], rng)
    net.W[-1][...] *= 60.0
    net.b[-1][...] = [0.0, 50.0, -900.0]
    x = rng.normal(size=(4, 3))
    labels = MLPTeacher(net).label(x, derivatives=True)
    a_L = net.forward(x).a[-1]
    w = np.zeros(net.n_params + x.size)
    with mp.workdps(450):  # log p_m ~ -exp(-gap) needs about gap / 2.3 digits; gaps here stay below 900
        for n in range(x.shape[0]):
            # the one rounding of a_j - a_m is amplified by |a_j - a_m| in exp(a_j - a_m)
            tol = 4 * np.finfo(float).eps * (1.0 + np.ptp(a_L[n]))
            lse = mp.log(mp.fsum(mp.exp(mp.mpf(float(v))) for v in a_L[n]))
            for i in range(3):
                exact = mp.mpf(float(a_L[n, i])) - lse
                assert relative_error([labels.log_probs[n, i]], [exact]) <= tol, (labels.log_probs[n, i], exact)
    np.testing.assert_array_equal(log_probs_of(net, x), labels.log_probs)
    for i in range(3):
        e_i = np.zeros((x.shape[0], 3))
        e_i[:, i] = 1.0
        _, ref_grad, _ = reference(net, x, (last, "dot" if last == "log_softmax" else "ce"), e_i, w, 900)
        ref_x = ref_grad[net.n_params:]
        for n in range(x.shape[0]):
            exact = ref_x[n * 3:(n + 1) * 3]
            assert relative_error(labels.d_log_probs[n, i], exact) < TOL, (i, n, labels.d_log_probs[n, i], exact)


@pytest.mark.parametrize("last", ["softmax", "log_softmax"])
def test_cross_entropy_loss_of_a_confident_student_matches_the_reference(last, rng):
    """CrossEntropyLoss (2.5, 2.16-2.17) with soft targets close to the student's own saturated
    answer: loss and theta-gradient, one example at a time, against the reference (loss = -E)."""
    student = MLP([3, 4, 3], ["relu", last], rng)
    student.W[-1][...] *= 60.0
    student.b[-1][...] = [0.0, 50.0, -900.0]
    x = rng.normal(size=(3, 3))
    a_L = student.forward(x).a[-1]
    probs = 0.999999 * np.eye(3)[np.argmax(a_L, axis=1)] + 1e-6 / 3
    w = np.zeros(student.n_params + x.size)
    pair = (last, "dot" if last == "log_softmax" else "ce")
    for n in range(3):
        labels = Labels(probs[n:n + 1], np.log(probs[n:n + 1]))
        value, grad = CrossEntropyLoss()(student, x[n:n + 1], labels)
        ref_value, ref_grad, _ = reference(student, x[n:n + 1], pair, probs[n:n + 1], w, 450)
        assert relative_error([value], [-ref_value]) < TOL, (value, ref_value)
        sizes = [(k, v.size) for k, v in student.layout.named(student.params).items()]
        exact, mine = named_blocks(sizes, -ref_grad[:student.n_params]), named_blocks(sizes, grad)
        for name in mine:
            assert relative_error(mine[name], exact[name]) < TOL, (name, mine[name], exact[name])


@pytest.mark.parametrize("last", ["softmax", "log_softmax"])
@pytest.mark.parametrize("stacked", [True, False])
def test_derivative_square_error_at_huge_logit_gaps_uses_the_exact_jacobian_and_hvp(last, stacked, rng):
    """DSE's g_i and theta-gradient (2.9-2.13) equal the MLP's exact jacobian and hvp (both pinned above)."""
    student = MLP([3, 4, 3], ["probit", last], rng)
    student.W[-1][...] *= 50.0
    teacher = MLP([3, 5, 3], ["relu", "log_softmax"], rng)
    x = rng.normal(size=(5, 3))
    labels = MLPTeacher(teacher).label(x, derivatives=True)
    value, grad = DerivativeSquareErrorLoss(stacked=stacked)(student, x, labels)
    J = student.jacobian(x, log=last == "softmax")
    diff = J - labels.d_log_probs
    assert value == pytest.approx(float(np.sum(diff**2)) / 5, rel=1e-12)
    expected = np.zeros(student.n_params)
    for i in range(3):
        e_i = np.zeros((5, 3))
        e_i[:, i] = 1.0
        out = CrossEntropy(e_i) if last == "softmax" else DotProduct(e_i)
        expected += student.hvp(x, out, v_x=2.0 * diff[:, i, :], input_grads=False)[0]
    np.testing.assert_allclose(grad, expected / 5, rtol=1e-10, atol=1e-300)


# ------------------------------------------------------------------ NADE and RBM: logistic curvature in the tails
def d_softplus(u):
    """softplus(u) = log(1 + exp(u)), with softplus' = sigma(u) and softplus'' = sigma(u) sigma(-u)."""
    s, sn = 1 / (1 + mp.exp(-u.v)), 1 / (1 + mp.exp(u.v))
    return u.apply(mp.log1p(mp.exp(u.v)), s, s * sn)


def rbm_reference(rbm, x, w):
    """sum_n log phi(x_n) = sum_n x_n . b_v + sum_j softplus(b_h + x_n W)_j, with gradient and H w."""
    D, H = rbm.n_visible, rbm.n_hidden
    with mp.workdps(BASE_DIGITS):
        z = dual_leaves(np.concatenate([rbm.params, x.ravel()]), w)
        W, b_v, b_h, xs = z[:D * H], z[D * H:D * H + D], z[D * H + D:D * H + D + H], z[rbm.n_params:]
        E = Dual2.const(0, len(z))
        for n in range(x.shape[0]):
            x_n = xs[n * D:(n + 1) * D]
            for i in range(D):
                E = E + x_n[i] * b_v[i]
            for j in range(H):
                a = b_h[j]
                for i in range(D):
                    a = a + x_n[i] * W[i * H + j]
                E = E + d_softplus(a)
        return E.h


def nade_reference(nade, x, w):
    """sum_n log q(x_n) = sum_n sum_d x_d z_d - softplus(z_d) (C.2-C.7, identity order, logistic)."""
    D, H = nade.n_inputs, nade.n_hidden
    with mp.workdps(BASE_DIGITS):
        z = dual_leaves(np.concatenate([nade.params, x.ravel()]), w)
        W, V = z[:H * D], z[H * D:2 * H * D]                     # W (H, D), V (D, H), row-major
        b, c, xs = z[2 * H * D:2 * H * D + D], z[2 * H * D + D:nade.n_params], z[nade.n_params:]
        E = Dual2.const(0, len(z))
        for n in range(x.shape[0]):
            x_n = xs[n * D:(n + 1) * D]
            a = list(c)                                           # (C.2)
            for d in range(D):
                h = [d_logistic(a_j) for a_j in a]                # (C.4)
                z_d = b[d]
                for j in range(H):
                    z_d = z_d + h[j] * V[d * H + j]               # (C.5)
                E = E + x_n[d] * z_d - d_softplus(z_d)            # (C.7)
                a = [a[j] + x_n[d] * W[j * D + d] for j in range(H)]   # (C.3)
        return E.h


def named_blocks(sizes, vec):
    """Consecutive named blocks of a vector, e.g. [("W", 6), ("b", 3)] -> {"W": vec[:6], "b": vec[6:9]}."""
    out, i = {}, 0
    for name, size in sizes:
        out[name] = vec[i:i + size]
        i += size
    return out


def test_rbm_hvp_keeps_the_curvature_of_hidden_units_saturated_at_one(rng):
    """sigma'(a) = sigma(a) sigma(-a) at a = 40 and 60 (s (1 - s) is exactly 0 there): every block
    of H v against the reference, including b_h, whose H v is made of that curvature alone."""
    from kd_ref.rbm import RBM

    rbm = RBM(3, 2, rng)
    rbm.set_params(rng.normal(size=rbm.n_params))
    rbm.b_hidden[...] = [40.0, 60.0]
    x = rng.normal(size=(2, 3))
    w = rng.normal(size=rbm.n_params + x.size)
    Hv_p, Hv_x = rbm.hvp(x, w[:rbm.n_params], w[rbm.n_params:].reshape(x.shape), continuous=True)
    sizes = [("W", 6), ("b_visible", 3), ("b_hidden", 2), ("x0", 3), ("x1", 3)]
    mine = named_blocks(sizes, np.concatenate([Hv_p, Hv_x.ravel()]))
    exact = named_blocks(sizes, rbm_reference(rbm, x, w))
    assert 0 < np.max(np.abs(mine["b_hidden"])) < 1e-15   # the saturated curvature, not flushed
    for name in mine:
        assert relative_error(mine[name], exact[name]) < TOL, (name, mine[name], exact[name])


@pytest.mark.parametrize("part", ["full", "params"])
def test_nade_hvp_keeps_the_curvature_of_units_saturated_at_one(part, rng):
    """Hidden units at a > 37 (f' = h sigma(-a), C.10, C.18, C.23) and conditionals at z > 37
    (y (1 - y) = sigma(z) sigma(-z), C.20): every block of H v against the reference. With
    v_x = 0 the b block is -sum R{y_d}, that output curvature alone."""
    from kd_ref.nade import NADE

    nade = NADE(3, 2, rng)
    nade.params[...] = rng.normal(size=nade.n_params)
    _, V, b, c = nade.param_views(nade.params)
    c[...] = [45.0, 52.0]
    V[...] = np.abs(V) + 1.0
    b[...] = [41.0, 39.0, 44.0]
    x = rng.normal(size=(2, 3))
    w = rng.normal(size=nade.n_params + x.size)
    if part == "params":
        w[nade.n_params:] = 0.0
    v_x = None if part == "params" else w[nade.n_params:].reshape(x.shape)
    Hv_p, Hv_x = nade.hvp(x, w[:nade.n_params], v_x, continuous=True)
    sizes = [("W", 6), ("V", 6), ("b", 3), ("c", 2), ("x0", 3), ("x1", 3)]
    mine = named_blocks(sizes, np.concatenate([Hv_p, Hv_x.ravel()]))
    exact = named_blocks(sizes, nade_reference(nade, x, w))
    if part == "params":
        assert 0 < np.max(np.abs(mine["b"])) < 1e-15        # -sum R{y_d}: the saturated curvature, not flushed
    for name in mine:
        assert relative_error(mine[name], exact[name]) < TOL, (name, mine[name], exact[name])


@settings(max_examples=40)
@given(st.integers(0, 2**32 - 1), st.floats(20.0, 700.0), st.integers(2, 6))
def test_saturated_hidden_softmax_products_match_mpmath(seed, gap, width):
    """A hidden softmax whose top entry rounds to 1: J^T v (B.33-B.35) and the curvature term
    sum_k v_k d^2 x_k / da^2 (S1.12) entry by entry against mpmath, every entry to 1e-10 of itself.

    The top entry of J^T v is -x_m sum_{j != m} x_j (v_j - v_m), of size e^-gap; formed as
    x_m (v_m - x . v) it would be pure rounding error (x_m = 1 makes v_m - x . v cancel)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(1, width))
    a[0, rng.integers(width)] += gap
    v = rng.normal(size=(1, width))
    f = nl.Softmax()
    x = f.forward(a)
    with mp.workdps(int(gap / 2.3) + 40):        # the top entry is a difference of size e^-gap next to 1
        e = [mp.exp(mp.mpf(float(ai))) for ai in a[0]]
        xs = [ei / mp.fsum(e) for ei in e]
        xv = mp.fsum(xi * mp.mpf(float(vi)) for xi, vi in zip(xs, v[0]))
        jtv = [xi * (mp.mpf(float(vi)) - xv) for xi, vi in zip(xs, v[0])]
        # d^2 x_k / da_i da_j summed against v: sum_k v_k x_k[(d_ki - x_i)(d_kj - x_j) - x_i (d_ij - x_j)]
        curv = [[mp.fsum(mp.mpf(float(v[0, k])) * xs[k] * (((k == i) - xs[i]) * ((k == j) - xs[j])
                                                           - xs[i] * ((i == j) - xs[j])) for k in range(width))
                 for j in range(width)] for i in range(width)]
    np.testing.assert_allclose(f.backward(a, x, v)[0], [float(t) for t in jtv], rtol=1e-10, atol=0)
    c = f.curvature(a, x, v)[0]
    for i in range(width):
        for j in range(width):
            assert abs(c[i, j] - float(curv[i][j])) <= 1e-10 * abs(float(curv[i][j])) + 1e-300, (i, j, c, curv)
