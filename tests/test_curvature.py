"""Hessian diagonals (SPEC_seeds S1.12-S1.15) against brute force, finite differences and exact variances."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kd_ref import curvature, gradcheck
from kd_ref.curvature import full_hessian, hessian_diagonal, hutchinson_variance, loss_scale
from kd_ref.distill.compression import CrossEntropyLoss, Labels
from kd_ref.mlp import MLP
from kd_ref.nonlinearities import NONLINEARITIES
from kd_ref.outputs import BinaryCrossEntropy, CrossEntropy, DotProduct, SquareError

NAMES = sorted(NONLINEARITIES)
KINK_MARGIN = 5e-3
OUTPUTS = {"square": SquareError, "dot": DotProduct, "cross_entropy": CrossEntropy,
           "binary_cross_entropy": BinaryCrossEntropy}


def make_output(kind, shape, rng):
    if kind == "square":
        return SquareError(rng.normal(size=shape))
    if kind == "dot":
        return DotProduct(rng.normal(size=shape))
    return OUTPUTS[kind](rng.uniform(size=shape))


@st.composite
def problems(draw, max_layers=3, elementwise_hidden=False):
    """A small random network, batch and output function (every valid pairing of S1.12)."""
    n_layers = draw(st.integers(1, max_layers))
    sizes = [draw(st.integers(1, 5)) for _ in range(n_layers + 1)]
    hidden = [n for n in NAMES if NONLINEARITIES[n].elementwise] if elementwise_hidden else NAMES
    names = [draw(st.sampled_from(hidden)) for _ in range(n_layers - 1)] + [draw(st.sampled_from(NAMES))]
    kinds = ["square", "dot"]
    if names[-1] in ("softmax", "logistic", "probit"):
        kinds.append("cross_entropy")
    if names[-1] in ("logistic", "probit"):
        kinds.append("binary_cross_entropy")
    kind = draw(st.sampled_from(kinds))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    net = MLP(sizes, names, rng)
    net.params[...] = rng.normal(0.0, draw(st.floats(0.2, 2.0)), size=net.n_params)
    n = draw(st.integers(1, 6))
    x = rng.normal(size=(n, sizes[0]))
    for a, f in zip(net.forward(x).a, net.f):
        if f.name == "relu":
            assume(np.min(np.abs(a)) > KINK_MARGIN)
    return net, x, make_output(kind, (n, sizes[-1]), rng)


def close(a, b, rtol):
    """|a - b| <= rtol (|b| + max|b|): relative, with a floor at the scale of the whole diagonal."""
    floor = np.max(np.abs(b)) if b.size else 0.0
    return np.all(np.abs(a - b) <= rtol * (np.abs(b) + floor) + 1e-300)


# ------------------------------------------------------------ the pieces
@given(st.sampled_from(NAMES), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_nonlinearity_curvature_is_the_derivative_of_backward(name, d, n, seed):
    # backward(a, f(a), d) = J(a)^T d, so its Jacobian in a is sum_k d_k d^2x_k/da^2 (S1.12)
    rng = np.random.default_rng(seed)
    f = NONLINEARITIES[name]()
    a, d_x = rng.normal(size=(n, d)) * 2.0, rng.normal(size=(n, d))
    assume(name != "relu" or np.min(np.abs(a)) > KINK_MARGIN)
    got = f.curvature(a, f.forward(a), d_x)
    for k in range(d):
        e = np.zeros_like(a)
        e[:, k] = 1.0
        fd = gradcheck.directional_difference(lambda aa: f.backward(aa, f.forward(aa), d_x), a, e)
        np.testing.assert_allclose(got[:, :, k], fd, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(got, got.transpose(0, 2, 1), atol=1e-15)


@given(st.sampled_from(sorted(OUTPUTS)), st.sampled_from(["linear", "logistic", "probit", "softmax", "log_softmax"]),
       st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_output_hess_is_the_derivative_of_grad(kind, last, c, n, seed):
    # y's Hessian (hess(y)) and, for a fused pair, a_L's (fused(f).hess(a)) against differences of grad
    rng = np.random.default_rng(seed)
    f = NONLINEARITIES[last]()
    out = make_output(kind, (n, c), rng)
    a = rng.normal(size=(n, c))
    y = f.forward(a)
    if kind in ("cross_entropy", "binary_cross_entropy"):
        y = rng.uniform(0.1, 0.9, size=(n, c))
    for func, z in ((out, y), (out.fused(f) if kind != "binary_cross_entropy" or last in ("logistic", "probit")
                               else None, a)):
        if func is None:
            continue
        H = func.hess(z)
        for k in range(c):
            e = np.zeros_like(z)
            e[:, k] = 1.0
            fd = gradcheck.directional_difference(func.grad, z, e)
            np.testing.assert_allclose(H[:, :, k], fd, rtol=1e-6, atol=1e-8)


# -------------------------------------------------------- exact diagonal
@given(problems())
def test_exact_equals_brute_force(problem):
    net, x, out = problem
    exact = hessian_diagonal(net, x, out, method="exact").diag
    brute = hessian_diagonal(net, x, out, method="brute").diag
    # the two sum the same products in different orders: where they cancel to far below the diagonal's own
    # scale (saturated units), rounding is set by the size of the products, bounded by the whole Hessian's
    whole = full_hessian(net, x, out)
    rounding = 1e3 * np.finfo(float).eps * np.max(np.abs(whole))
    assert np.all(np.abs(exact - brute) <= 1e-10 * (np.abs(brute) + np.max(np.abs(brute))) + rounding), \
        np.max(np.abs(exact - brute))


@given(problems(max_layers=2))
def test_exact_equals_central_differences_of_the_gradient(problem):
    # independent of R{backprop}: d/du_k of the k-th gradient entry, L = scale * E
    net, x, out = problem
    scale = loss_scale(out, x.shape[0])
    exact = hessian_diagonal(net, x, out, method="exact").diag
    p0 = net.params.copy()

    def grad(p):
        net.params[...] = p
        return scale * net.grad(x, out, input_grads=False)[1]

    fd = np.array([gradcheck.directional_difference(grad, p0, np.eye(net.n_params)[k])[k]
                   for k in range(net.n_params)])
    net.params[...] = p0
    g = np.max(np.abs(grad(p0))) + np.max(np.abs(fd))
    assume(np.all(np.isfinite(fd)))
    np.testing.assert_allclose(exact, fd, rtol=1e-6, atol=1e-7 * (1.0 + g))


@given(problems(), st.integers(1, 4))
def test_chunks_do_not_change_the_diagonal(problem, chunk):
    net, x, out = problem
    whole = hessian_diagonal(net, x, out, method="exact", chunk=x.shape[0]).diag
    parts = hessian_diagonal(net, x, out, method="exact", chunk=chunk).diag
    assert close(parts, whole, 1e-12)


def test_exact_stays_exact_at_saturated_softmax_and_logistic_outputs(rng):
    for last, kind in (("log_softmax", "dot"), ("softmax", "cross_entropy"), ("logistic", "binary_cross_entropy")):
        net = MLP([3, 4, 3], ["logistic", last], rng)
        net.params[...] = rng.normal(0.0, 30.0, size=net.n_params)      # logit gaps of hundreds
        x = rng.normal(size=(5, 3))
        out = make_output(kind, (5, 3), rng)
        exact = hessian_diagonal(net, x, out).diag
        assert np.all(np.isfinite(exact))
        assert close(exact, hessian_diagonal(net, x, out, method="brute").diag, 1e-10)


def test_distillation_loss_diagonal_is_the_students_cross_entropy_curvature(rng):
    # a student's chapter-2 loss against a teacher's soft targets: DotProduct(probs) on its log-softmax
    student = MLP([4, 6, 3], ["relu", "log_softmax"], rng)
    x = rng.normal(size=(8, 4))
    labels = Labels.from_probs(rng.dirichlet(np.ones(3), size=8))
    exact = hessian_diagonal(student, x, DotProduct(labels.probs)).diag
    p0 = student.params.copy()

    def grad(p):
        student.params[...] = p
        return CrossEntropyLoss()(student, x, labels)[1]

    fd = np.array([gradcheck.directional_difference(grad, p0, np.eye(student.n_params)[k])[k]
                   for k in range(student.n_params)])
    student.params[...] = p0
    np.testing.assert_allclose(exact, fd, rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------- LeCun
def test_lecun_is_exact_in_its_exact_case():
    # one hidden layer, elementwise output, separable loss (S1.13): 3-4-2 logistic/linear, square error
    rng = np.random.default_rng(3)
    net = MLP([3, 4, 2], ["logistic", "linear"], rng)
    x = rng.normal(size=(10, 3))
    out = SquareError(rng.normal(size=(10, 2)))
    lecun = hessian_diagonal(net, x, out, method="lecun").diag
    exact = hessian_diagonal(net, x, out, method="exact").diag
    assert close(lecun, exact, 1e-14)


@given(problems(max_layers=2, elementwise_hidden=True))
def test_lecun_is_exact_with_one_hidden_layer_and_a_separable_loss(problem):
    net, x, out = problem
    assume(net.f[-1].elementwise)      # then every A_l the recursion meets is diagonal
    lecun = hessian_diagonal(net, x, out, method="lecun").diag
    exact = hessian_diagonal(net, x, out, method="exact").diag
    assert close(lecun, exact, 1e-10)


def test_lecun_is_not_exact_with_two_hidden_layers():
    rng = np.random.default_rng(4)
    net = MLP([3, 4, 3, 2], ["logistic", "logistic", "linear"], rng)
    x = rng.normal(size=(10, 3))
    out = SquareError(rng.normal(size=(10, 2)))
    lecun = hessian_diagonal(net, x, out, method="lecun").diag
    exact = hessian_diagonal(net, x, out, method="exact").diag
    assert np.max(np.abs(lecun - exact)) > 1e-6 * np.max(np.abs(exact))
    # the last layer sees a diagonal A_3 (linear, square error), so it agrees; A_2 = W_3^T A_3 W_3 is full
    below = net.layout.slice("b2").stop
    assert close(lecun[below:], exact[below:], 1e-12)
    assert not close(lecun[:below], exact[:below], 1e-6)


# ---------------------------------------------------------- Gauss-Newton
@given(problems())
def test_gauss_newton_is_nonnegative_and_equals_diag_of_JtAJ(problem):
    net, x, out = problem
    scale = loss_scale(out, x.shape[0])
    gn = hessian_diagonal(net, x, out, method="gauss_newton").diag
    cache = net.forward(x)
    _, A = curvature.output_curvature(net, cache, out, gauss_newton=True)
    brute = np.empty(net.n_params)
    for k in range(net.n_params):
        r = net.r_forward(cache, np.eye(net.n_params)[k]).R_a[-1]        # J e_k = d a_L / d u_k
        brute[k] = scale * np.einsum("ni,nij,nj->", r, A, r)
    assert close(gn, brute, 1e-10)
    if not isinstance(out, DotProduct) or np.all(out.t >= 0):
        # a loss convex in a_L (square error, every fused pair with targets >= 0) gives a positive diagonal
        assert np.all(gn >= -1e-14 * (1.0 + np.max(np.abs(gn))))


# ------------------------------------------------------------ Hutchinson
def hutchinson_problem():
    rng = np.random.default_rng(5)
    net = MLP([3, 3, 2], ["logistic", "log_softmax"], rng)
    x = rng.normal(size=(6, 3))
    out = DotProduct(rng.dirichlet(np.ones(2), size=6))
    return net, x, out


N_PROBES = 4_000   # SPEC_seeds S1.F suggests 20,000; 4,000 keeps this file under a minute, and the SE is checked too


@pytest.mark.parametrize("probe, seed", [("rademacher", 6), ("gaussian", 7)])
def test_hutchinson_within_4_se_of_exact_with_the_exact_se(probe, seed):
    net, x, out = hutchinson_problem()
    est = hessian_diagonal(net, x, out, method="hutchinson", n_probes=N_PROBES, rng=np.random.default_rng(seed),
                           probe=probe)
    exact = hessian_diagonal(net, x, out).diag
    H = full_hessian(net, x, out)
    se_exact = np.sqrt(hutchinson_variance(H, probe) / N_PROBES)
    assert est.n_probes == N_PROBES and est.method == "hutchinson"
    assert np.all(np.abs(est.diag - exact) <= 4 * se_exact)
    # the sample SE estimates the exact one (S1.14): a sample SD is off by about sqrt((kurtosis - 1) / 4S)
    # relative, and one probe's estimate has kurtosis <= 3 (Rademacher sum) or <= 15 (chi-square, Gaussian)
    kurtosis = 3.0 if probe == "rademacher" else 15.0
    np.testing.assert_allclose(est.stderr, se_exact, rtol=4 * np.sqrt((kurtosis - 1) / (4 * N_PROBES)))
    # control: the other probe's formula, where the two differ by more than 25%, is rejected
    other = np.sqrt(hutchinson_variance(H, "gaussian" if probe == "rademacher" else "rademacher") / N_PROBES)
    apart = np.abs(np.log(other / se_exact)) > np.log(1.25)
    assert apart.sum() >= 2
    assert np.all(np.abs(np.log(est.stderr[apart] / other[apart])) > np.log(1.1))


def test_full_hessian_is_symmetric_with_the_brute_force_diagonal():
    net, x, out = hutchinson_problem()
    H = full_hessian(net, x, out)
    np.testing.assert_allclose(H, H.T, atol=1e-14)
    np.testing.assert_array_equal(np.diag(H), hessian_diagonal(net, x, out, method="brute").diag)


# -------------------------------------------------------------- bad input
def test_bad_input_is_named_and_changes_nothing(rng):
    net = MLP([3, 4, 2], ["logistic", "linear"], rng)
    before = net.params.copy()
    x = rng.normal(size=(5, 3))
    out = SquareError(rng.normal(size=(5, 2)))
    with pytest.raises(ValueError, match="method: expected one of"):
        hessian_diagonal(net, x, out, method="diagonal")
    with pytest.raises(ValueError, match="n_probes"):
        hessian_diagonal(net, x, out, method="hutchinson", n_probes=0, rng=rng)
    with pytest.raises(TypeError, match="rng"):
        hessian_diagonal(net, x, out, method="hutchinson", n_probes=3)
    with pytest.raises(ValueError, match="n_probes, rng: used only by method='hutchinson'"):
        hessian_diagonal(net, x, out, method="exact", n_probes=3)
    with pytest.raises(ValueError, match="probe: expected one of"):
        hessian_diagonal(net, x, out, method="hutchinson", n_probes=3, rng=rng, probe="normal")
    with pytest.raises(ValueError, match=r"output: expected an output function with targets of shape \(4, 2\)"):
        hessian_diagonal(net, x[:4], out)
    with pytest.raises(ValueError, match="scale: expected a non-zero"):
        hessian_diagonal(net, x, out, scale=0.0)
    with pytest.raises(ValueError, match="chunk"):
        hessian_diagonal(net, x, out, chunk=0)
    big = MLP([200, 100, 1], ["logistic", "linear"], rng)
    with pytest.raises(ValueError, match="net: method='brute' expects at most 20,000 parameters, received a net "
                                         "with 20,201"):
        hessian_diagonal(big, rng.normal(size=(2, 200)), SquareError(np.zeros((2, 1))), method="brute")
    with pytest.raises(ValueError, match="full_hessian expects at most 5,000"):
        full_hessian(big, rng.normal(size=(2, 200)), SquareError(np.zeros((2, 1))))
    with pytest.raises(ValueError, match="net: method='lecun' expects elementwise hidden layers"):
        soft = MLP([3, 4, 2], ["softmax", "linear"], rng)
        hessian_diagonal(soft, x, out, method="lecun")
    with pytest.raises(ValueError, match="H: expected a square matrix"):
        hutchinson_variance(np.zeros((2, 3)))
    np.testing.assert_array_equal(net.params, before)
