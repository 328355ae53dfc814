"""MLP derivatives (Appendix B) against finite differences, on hypothesis-drawn networks."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kd_ref import gradcheck
from kd_ref.mlp import MLP
from kd_ref.nonlinearities import NONLINEARITIES, LogSoftmax
from kd_ref.outputs import BinaryCrossEntropy, CrossEntropy, DotProduct, SquareError

NAMES = sorted(NONLINEARITIES)
KINK_MARGIN = 5e-3  # ReLU pre-activations closer to 0 than this would spoil the differences


@st.composite
def problems(draw):
    """A random network, batch, output function and directions, all float64."""
    n_layers = draw(st.integers(1, 4))
    sizes = [draw(st.integers(1, 7)) for _ in range(n_layers + 1)]
    names = [draw(st.sampled_from(NAMES)) for _ in range(n_layers)]
    last = names[-1]
    outputs = ["square", "dot"]
    if last in ("softmax", "logistic", "probit"):
        outputs.append("cross_entropy")
    if last in ("logistic", "probit"):
        outputs.append("binary_cross_entropy")
    output = draw(st.sampled_from(outputs))
    n = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.floats(0.2, 2.0))
    rng = np.random.default_rng(seed)
    net = MLP(sizes, names, rng)
    net.params[...] = rng.normal(0.0, scale, size=net.n_params)
    x = rng.normal(size=(n, sizes[0]))
    shape = (n, sizes[-1])
    if output == "square":
        out = SquareError(rng.normal(size=shape))
    elif output == "dot":
        out = DotProduct(rng.normal(size=shape))
    elif output == "cross_entropy":
        out = CrossEntropy(rng.uniform(size=shape))
    else:
        out = BinaryCrossEntropy(rng.uniform(size=shape))
    cache = net.forward(x)
    for a, f in zip(cache.a, net.f):
        if f.name == "relu":
            assume(np.min(np.abs(a)) > KINK_MARGIN)
    if output in ("cross_entropy", "binary_cross_entropy"):
        # log y and log(1 - y) of a saturated unit are computed from a rounded y, so
        # the *value* is noisy there (the derivatives are not); keep y resolvable.
        assume(np.all((cache.y > 1e-4) & (cache.y < 1 - 1e-4)))
    # Differences of E carry rounding noise ~1e-12 |E|; a gradient far below that
    # (a saturated unit) cannot be resolved by any finite difference, so skip it.
    _, d_p, d_x = net.grad(x, out)
    assume(np.linalg.norm(np.concatenate([d_p, d_x.ravel()])) > 1e-5 * (1.0 + abs(out.value(cache.y))))
    return net, x, out, rng


def joint(net, x, out):
    """Value, gradient and HVP as functions of z = (params, x) flattened, for gradcheck."""
    return gradcheck.over_params_and_input(net, x, lambda xx: out.value(net.forward(xx).y),
                                           lambda xx: net.grad(xx, out)[1:],
                                           lambda xx, v_p, v_x: net.hvp(xx, out, v_p, v_x))


@given(problems())
def test_gradient_matches_central_differences(problem):
    net, x, out, _ = problem
    value, grad, _, z = joint(net, x, out)
    result = gradcheck.check_gradient(value, grad, z)
    assert result.passed(1e-6), str(result)


@given(problems(), st.sampled_from(["full", "params", "input"]))
def test_hvp_matches_differences_of_the_gradient(problem, part):
    net, x, out, rng = problem
    _, grad, hvp, z = joint(net, x, out)
    v = rng.normal(size=z.shape)
    if part == "params":
        v[net.n_params:] = 0.0
    elif part == "input":
        v[:net.n_params] = 0.0
    # differences of the gradient carry rounding noise ~1e-12 |grad|: skip H v below it
    assume(np.linalg.norm(hvp(z, v)) > 1e-5 * (1.0 + np.linalg.norm(grad(z))))
    result = gradcheck.check_hvp(grad, hvp, z, v)
    assert result.passed(1e-5), str(result)
    # the parameter part alone (input_grads=False, the path derivative matching takes) against the
    # parameter part of the same differences; None marks a zero part (B.19-B.21)
    P = net.n_params
    v_p = None if part == "input" else v[:P]
    v_x = None if part == "params" else v[P:].reshape(x.shape)
    Hv_p, none = net.hvp(x, out, v_p, v_x, input_grads=False)
    assert none is None
    # the same norm-wise tolerance as the whole vector's check, now on the parameter block alone
    gap = np.linalg.norm(Hv_p - result.numeric[:P])
    scale = max(np.linalg.norm(result.analytic), np.linalg.norm(result.numeric))
    assert gap <= 1e-5 * scale, (Hv_p, result.numeric[:P])


@given(problems())
def test_hessian_is_symmetric(problem):
    net, x, out, rng = problem
    _, _, hvp, z = joint(net, x, out)
    u, v = rng.normal(size=(2,) + z.shape)
    result = gradcheck.check_symmetry(hvp, z, u, v)
    assert result.passed(1e-9), str(result)


@given(problems())
def test_reduced_forms_equal_the_full_form_with_zeros(problem):
    """B.19-B.21: passing None for a zero part gives the same H v as passing zeros."""
    net, x, out, rng = problem
    v_p, v_x = rng.normal(size=net.n_params), rng.normal(size=x.shape)
    full_p, full_x = net.hvp(x, out, v_p, np.zeros_like(x))
    red_p, red_x = net.hvp(x, out, v_params=v_p)
    np.testing.assert_allclose(red_p, full_p, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(red_x, full_x, rtol=1e-12, atol=1e-12)
    full_p, full_x = net.hvp(x, out, np.zeros(net.n_params), v_x)
    red_p, red_x = net.hvp(x, out, v_x=v_x)
    np.testing.assert_allclose(red_p, full_p, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(red_x, full_x, rtol=1e-12, atol=1e-12)
    # the input part alone, without the parameter products
    none_p, only_x = net.hvp(x, out, v_x=v_x, param_grads=False)
    assert none_p is None
    np.testing.assert_allclose(only_x, full_x, rtol=1e-12, atol=1e-12)
    # the parameter part alone, without the last input products (derivative matching, 2.9-2.13)
    only_p, none_x = net.hvp(x, out, v_x=v_x, input_grads=False)
    assert none_x is None
    np.testing.assert_array_equal(only_p, full_p)


@given(problems())
def test_input_only_backprop_matches_full_backprop(problem):
    net, x, out, _ = problem
    _, d_p, d_x = net.grad(x, out)
    _, none, d_x_only = net.grad(x, out, param_grads=False)
    assert none is None and d_p.shape == (net.n_params,)
    np.testing.assert_array_equal(d_x_only, d_x)
    _, d_p_only, none = net.grad(x, out, input_grads=False)
    assert none is None
    np.testing.assert_array_equal(d_p_only, d_p)


@given(problems(), st.booleans())
def test_jacobian_rows_match_differences(problem, log):
    net, x, _, rng = problem
    if log:
        assume(net.f[-1].name in ("softmax", "logistic", "probit"))
    J = net.jacobian(x, log=log)
    assert J.shape == (x.shape[0], net.sizes[-1], x.shape[1])
    v = rng.normal(size=x.shape)

    def outputs(xx):
        if not log:
            return net.predict(xx)
        # the reference log y is taken from a_L too: log(predict) rounds to 0 or -745 where y
        # saturates, and its difference would then miss an exact nonzero Jacobian entry
        a_L = net.forward(xx).a[-1]
        f = net.f[-1]
        return LogSoftmax().forward(a_L) if f.name == "softmax" else f.log_f(a_L)

    numeric = gradcheck.directional_difference(outputs, x, v)
    analytic = np.einsum("nid,nd->ni", J, v)
    assume(np.linalg.norm(analytic) > 1e-5 * (1.0 + np.linalg.norm(outputs(x))))  # resolvable, as above
    assert gradcheck.relative_error(analytic, numeric) < 1e-6


@pytest.mark.parametrize("last", ["logistic", "probit", "softmax"])
def test_saturated_log_jacobian_needs_a_log_space_reference(rng, last):
    """Where y rounds to 1 or to tiny, d log y/dx is still exact and nonzero; a difference of
    log(predict) sees a constant there (the CI failure of a saturated probit row), one of
    the log-space output does not."""
    net = MLP([1, 3], [last], rng)
    net.params[...] = [800.0, -800.0, 0.5, 0.0, 0.0, 0.0]     # W (3 x 1), then b
    x, v = np.array([[1.0]]), np.array([[1.0]])
    a_L = net.forward(x).a[-1]
    f = net.f[-1]
    log_y = (lambda xx: LogSoftmax().forward(net.forward(xx).a[-1])) if last == "softmax" else \
        (lambda xx: f.log_f(net.forward(xx).a[-1]))
    analytic = np.einsum("nid,nd->ni", net.jacobian(x, log=True), v)
    assert np.all(np.abs(a_L) > 0) and np.any(analytic != 0)
    numeric = gradcheck.directional_difference(log_y, x, v)
    assert gradcheck.relative_error(analytic, numeric) < 1e-6
    naive = gradcheck.directional_difference(lambda xx: np.log(net.predict(xx)), x, v)
    assert gradcheck.relative_error(analytic, naive) > 1e-2      # the control: rounding hides the slope


def test_log_jacobian_of_softmax_equals_log_softmax_jacobian(rng):
    """d log softmax_i / dx by seeding 1/y_i equals the plain Jacobian of a log-softmax net."""
    soft = MLP([4, 5, 3], ["logistic", "softmax"], rng)
    logsoft = MLP([4, 5, 3], ["logistic", "log_softmax"], rng)
    logsoft.set_params(soft.params)
    x = rng.normal(size=(6, 4))
    np.testing.assert_allclose(soft.jacobian(x, log=True), logsoft.jacobian(x), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ extreme inputs
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_at_huge_logits(name, rng):
    net = MLP([3, 3], [name], rng)
    net.set_params(np.concatenate([np.eye(3).ravel(), np.zeros(3)]))
    x = np.array([[1e4, -1e4, 0.0], [1e4, 1e4, -1e4], [0.0, 0.0, 0.0], [-1e4, -1e4, -1e4]])
    cache = net.forward(x)
    y = cache.y
    assert np.all(np.isfinite(y))
    probs = y if name == "softmax" else np.exp(y)
    expected = np.array([[1, 0, 0], [0.5, 0.5, 0], [1 / 3] * 3, [1 / 3] * 3])
    np.testing.assert_allclose(probs, expected, atol=1e-300, rtol=1e-12)
    if name == "log_softmax":
        np.testing.assert_allclose(y[0], [0.0, -2e4, -1e4], rtol=1e-12)
        np.testing.assert_allclose(y[1], [-np.log(2), -np.log(2), -2e4 - np.log(2)], rtol=1e-12)
    t = np.tile([0.2, 0.3, 0.5], (4, 1))
    out = DotProduct(t)
    _, d_p, d_x = net.grad(x, out)
    Hv_p, Hv_x = net.hvp(x, out, rng.normal(size=net.n_params), rng.normal(size=x.shape))
    for arr in (d_p, d_x, Hv_p, Hv_x):
        assert np.all(np.isfinite(arr))
    # ties: equal logits share the mass exactly, and the gradient of t.y has the closed form
    if name == "log_softmax":
        np.testing.assert_allclose(d_x[2], t[2] - probs[2] * t[2].sum(), rtol=1e-12)


@pytest.mark.parametrize("name", ["logistic", "probit"])
def test_logistic_and_probit_tails_keep_logs_finite(name, rng):
    net = MLP([1, 1], [name], rng)
    net.set_params([1.0, 0.0])
    x = np.array([[-1e4], [-800.0], [-40.0], [40.0], [800.0], [1e4]])
    y = net.predict(x)
    # y is f(a) correctly rounded (1.0 where it saturates: no upper clip distorts a hidden layer),
    # raised to tiny below; the textbook route through y still takes finite logs of it
    assert np.all((y > 0) & (y <= 1)) and np.any(y == 1.0)
    assert np.isfinite(BinaryCrossEntropy(np.full_like(y, 0.3)).value(y))
    assert np.isfinite(CrossEntropy(np.full_like(y, 0.3)).value(y))
    for t in (np.zeros_like(y), np.ones_like(y), np.full_like(y, 0.3)):
        out = BinaryCrossEntropy(t)
        value, d_p, d_x = net.grad(x, out)
        Hv_p, Hv_x = net.hvp(x, out, np.array([1.0, -1.0]), np.ones_like(x))
        for arr in (value, d_p, d_x, Hv_p, Hv_x):
            assert np.all(np.isfinite(arr))
    # away from the clip the derivatives are the true ones: sigma'(0) = 1/4, Phi'(0) = 1/sqrt(2 pi)
    d0 = net.f[0].d1(np.zeros(1), None)[0]
    assert d0 == pytest.approx(0.25 if name == "logistic" else 1 / np.sqrt(2 * np.pi), rel=1e-15)


def test_logistic_second_derivative_in_the_tails(rng):
    """f'' = f'(1 - 2 sigma) must not lose all precision when sigma rounds to 1."""
    from kd_ref.nonlinearities import Logistic

    a = np.array([-30.0, 30.0])
    e = np.exp(-30.0)
    np.testing.assert_allclose(Logistic().d2(a, None), [e, -e], rtol=1e-12)


# --------------------------------------------------------------- output functions
def test_output_function_conventions():
    """Pin the sign and 1/2 of each output function on a worked example."""
    y = np.array([[0.2, 0.8]])
    t = np.array([[0.0, 1.0]])
    # square error: 1/2 ((0.2)^2 + (0.2)^2) = 0.04
    assert SquareError(t).value(y) == pytest.approx(0.04)
    np.testing.assert_allclose(SquareError(t).grad(y), [[0.2, -0.2]])
    # cross entropy: log 0.8 (a log-likelihood, negative)
    assert CrossEntropy(t).value(y) == pytest.approx(np.log(0.8))
    np.testing.assert_allclose(CrossEntropy(t).grad(y), [[0.0, 1.25]])
    # binary cross entropy per entry: log(1 - 0.2) + log(0.8) = 2 log 0.8
    assert BinaryCrossEntropy(t).value(y) == pytest.approx(2 * np.log(0.8))
    # dot product: t . y = 0.8
    assert DotProduct(t).value(y) == pytest.approx(0.8)
    with pytest.raises(ValueError, match=r"y: expected the target's shape \(1, 2\), received shape \(2, 1\)"):
        DotProduct(t).value(y.T)


# --------------------------------------------------------------------- save/load
def test_save_load_round_trip_is_exact(tmp_path, rng):
    net = MLP([4, 6, 5, 3], ["relu", "probit", "log_softmax"], rng)
    path = tmp_path / "net.npz"
    net.save(path)
    loaded = MLP.load(path)
    assert loaded.sizes == net.sizes and loaded.nonlinearities == net.nonlinearities
    np.testing.assert_array_equal(loaded.params, net.params)
    x = rng.normal(size=(3, 4))
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
    other = MLP([4, 6, 5, 3], ["relu", "probit", "log_softmax"], np.random.default_rng(99))
    other.restore(path)
    np.testing.assert_array_equal(other.params, net.params)


def test_restore_refuses_mismatched_and_corrupt_files(tmp_path, rng):
    net = MLP([4, 6, 3], ["relu", "softmax"], rng)
    before = net.params.copy()
    MLP([4, 7, 3], ["relu", "softmax"], rng).save(tmp_path / "wide.npz")
    with pytest.raises(ValueError, match=r"expected a network \[4, 6, 3\].*holds \[4, 7, 3\]"):
        net.restore(tmp_path / "wide.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="could not read"):
        net.restore(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", weights=np.ones(3))
    with pytest.raises(ValueError, match="expected a kd_ref.MLP file.*no kind tag"):
        MLP.load(tmp_path / "other.npz")
    np.testing.assert_array_equal(net.params, before)


def test_saved_file_needs_no_pickle(tmp_path, rng):
    net = MLP([2, 2], ["linear"], rng)
    net.save(tmp_path / "n.npz")
    with np.load(tmp_path / "n.npz", allow_pickle=False) as f:
        assert all(f[k].dtype != object for k in f.files)


# --------------------------------------------------------------------- bad input
def test_bad_input_gives_clear_errors_and_changes_nothing(rng):
    net = MLP([3, 4, 2], ["relu", "softmax"], rng)
    before = net.params.copy()
    with pytest.raises(ValueError, match=r"x: expected shape \(any, 3\), received shape \(5, 4\)"):
        net.forward(np.zeros((5, 4)))
    with pytest.raises(ValueError, match="x: expected finite values, received 1 NaN"):
        net.forward(np.array([[0.0, np.nan, 1.0]]))
    with pytest.raises(ValueError, match=r"nonlinearity: expected one of .*received 'tanh'"):
        MLP([3, 2], ["tanh"], rng)
    with pytest.raises(ValueError, match=r"v_params: expected shape \(26,\), received shape \(25,\)"):
        net.hvp(np.zeros((1, 3)), DotProduct(np.ones((1, 2))), v_params=np.zeros(25))
    with pytest.raises(ValueError, match=r"params: expected shape \(26,\), received shape \(3,\)"):
        net.set_params(np.zeros(3))
    with pytest.raises(ValueError, match="params: expected finite values"):
        net.set_params(np.full(26, np.inf))
    with pytest.raises(ValueError, match="nonlinearities: expected 2 names"):
        MLP([3, 4, 2], ["relu"], rng)
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        MLP([3, 2], ["linear"], 0)
    with pytest.raises(ValueError, match="outputs: expected indices in 0..1, received 2"):
        net.jacobian(np.zeros((1, 3)), outputs=[2])
    np.testing.assert_array_equal(net.params, before)
