"""NADE (Appendix C): log q, backprop, R{backprop}, sampling, training, save/load and input checks."""
import contextlib

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

import kd_ref.nade as nade_module
from kd_ref import gradcheck
from kd_ref.toydata import noisy_prototypes, noisy_prototypes_log_prob
from kd_ref.nade import (NADE, fit_nade, log_likelihood_objective, raster_column_order, reference_backprop,
                         reference_r_backprop)
from kd_ref.optim import MinibatchDrawer
from kd_ref.optim import SGD

STEP = gradcheck.DEFAULT_STEP


# ------------------------------------------------------------------------ helpers
def reference(nade, x, v_params=None, v_x=None):
    """Explicit loop over examples and positions: y (N, D), every a and R{a} (N, D, H), data order."""
    f = (lambda a: 1 / (1 + np.exp(-a))) if nade.nonlinearity == "logistic" else (lambda a: np.maximum(a, 0))
    vW, _, _, vc = nade.param_views(np.zeros(nade.n_params) if v_params is None else v_params)
    v_x = np.zeros_like(x) if v_x is None else v_x
    N, D = x.shape
    y, acts, r_acts = np.empty((N, D)), np.empty((N, D, nade.n_hidden)), np.empty((N, D, nade.n_hidden))
    for n in range(N):
        a, Ra = nade.c.copy(), vc.copy()
        for i in nade.order:
            acts[n, i], r_acts[n, i] = a, Ra
            y[n, i] = 1 / (1 + np.exp(-(nade.b[i] + nade.V[i] @ f(a))))
            a = a + nade.W[:, i] * x[n, i]
            Ra = Ra + vW[:, i] * x[n, i] + nade.W[:, i] * v_x[n, i]
    return y, acts, r_acts


def make_case(seed, D, H, N, nonlinearity):
    rng = np.random.default_rng(seed)
    nade = NADE(D, H, rng, order=rng.permutation(D), nonlinearity=nonlinearity, init_std=1.0)
    nade.b[...] = rng.normal(size=D)
    nade.c[...] = rng.normal(size=H)
    x = rng.normal(size=(N, D))
    w = rng.normal(size=N)
    return nade, x, w, rng


def away_from_kinks(nade, x, v_params=None, v_x=None):
    """True when no difference step (coordinate or along v) can move a ReLU activation across 0."""
    if nade.nonlinearity != "relu":
        return True
    _, acts, r_acts = reference(nade, x, v_params, v_x)
    coord = 2 * STEP * max(np.abs(x).max(), np.abs(nade.W).max(), 1.0)
    return bool(np.all(np.abs(acts) > 2 * np.maximum(coord, 2 * STEP * np.abs(r_acts))))


def joint(nade, x, w):
    """Value, gradient, HVP of E = sum_n w_n log q(x_n) over z = (params, x); None for a zero part of v (C.28)."""
    return gradcheck.over_params_and_input(
        nade, x, lambda xx: float(w @ nade.log_prob(xx, continuous=True)),
        lambda xx: nade.grad(xx, weights=w, continuous=True)[1:],
        lambda xx, vp, vx: nade.hvp(xx, vp if np.any(vp) else None, vx if np.any(vx) else None, weights=w, continuous=True))


@contextlib.contextmanager
def block_plan(block_numbers, max_rows, max_block):
    """Temporarily change the engine's chunk/block sizes (results must not depend on them)."""
    saved = nade_module._BLOCK_NUMBERS, nade_module._MAX_ROWS, nade_module._MAX_BLOCK
    nade_module._BLOCK_NUMBERS, nade_module._MAX_ROWS, nade_module._MAX_BLOCK = block_numbers, max_rows, max_block
    try:
        yield
    finally:
        nade_module._BLOCK_NUMBERS, nade_module._MAX_ROWS, nade_module._MAX_BLOCK = saved


def maybe_block_plan(plan):
    """block_plan(*plan), or the engine's own plan for None."""
    return contextlib.nullcontext() if plan is None else block_plan(*plan)


def all_binary(D):
    return ((np.arange(2 ** D)[:, None] >> np.arange(D)) & 1).astype(float)


sizes = dict(D=st.integers(1, 9), H=st.integers(1, 7), N=st.integers(1, 3), seed=st.integers(0, 2**32 - 1),
             nonlinearity=st.sampled_from(["logistic", "relu"]))
# (block numbers, max rows, max block): the default sizes never split a batch into row chunks and
# rarely into position blocks; these do (one row per chunk, two positions per block, ...)
plans = st.sampled_from([None, (8, 2, 2), (1, 1, 2), (30, 4, 3)])


# ------------------------------------------------------------------- derivatives
@given(**sizes, plan=plans)
def test_gradient_matches_differences(D, H, N, seed, nonlinearity, plan):
    nade, x, w, _ = make_case(seed, D, H, N, nonlinearity)
    assume(away_from_kinks(nade, x))
    with maybe_block_plan(plan):
        value, grad, _, z = joint(nade, x, w)
        g, num = grad(z), gradcheck.numerical_gradient(value, z)
        _, d_p, d_x = nade.grad(x, weights=w, continuous=True)
        _, only_p, none_x = nade.grad(x, weights=w, input_grads=False, continuous=True)
        _, none_p, only_x = nade.grad(x, weights=w, param_grads=False, continuous=True)
    P = nade.n_params
    parts = dict(zip("WVbc", nade.param_views(np.arange(P))), x=np.arange(P, z.size))
    for name, idx in parts.items():                 # each block on its own, so none hides behind a larger one
        res = gradcheck._result(f"d/d{name}", g[idx.ravel()], num[idx.ravel()])
        assert res.passed(1e-6), str(res)
    assert none_x is None and none_p is None        # a skipped part is not computed ...
    np.testing.assert_allclose(only_p, d_p, rtol=1e-12, atol=0)    # ... and the other is unchanged
    np.testing.assert_allclose(only_x, d_x, rtol=1e-12, atol=0)


@given(**sizes, part=st.sampled_from(["full", "params", "x"]), plan=plans)
def test_hvp_matches_differences_and_is_symmetric(D, H, N, seed, nonlinearity, part, plan):
    nade, x, w, rng = make_case(seed, D, H, N, nonlinearity)
    _, grad, hvp, z = joint(nade, x, w)
    P = nade.n_params
    v, u = rng.normal(size=z.shape), rng.normal(size=z.shape)
    if part == "params":
        v[P:] = 0.0          # reduced form (C.28) with v_x = 0
    elif part == "x":
        v[:P] = 0.0          # reduced form (C.28) with v_theta = 0
    assume(away_from_kinks(nade, x, v[:P], v[P:].reshape(x.shape)))    # u is never differenced along
    v_p = None if part == "x" else v[:P]
    v_x = None if part == "params" else v[P:].reshape(x.shape)
    with maybe_block_plan(plan):
        res = gradcheck.check_hvp(grad, hvp, z, v)
        sym = gradcheck.check_symmetry(hvp, z, u, v)
        Hv_p, Hv_x = nade.hvp(x, v_p, v_x, weights=w, continuous=True)
        only_p, none_x = nade.hvp(x, v_p, v_x, weights=w, input_grads=False, continuous=True)
        none_p, only_x = nade.hvp(x, v_p, v_x, weights=w, param_grads=False, continuous=True)
    assert res.passed(1e-5), str(res)
    assert sym.passed(1e-9), str(sym)
    assert none_x is None and none_p is None
    np.testing.assert_allclose(only_p, Hv_p, rtol=1e-12, atol=0)
    np.testing.assert_allclose(only_x, Hv_x, rtol=1e-12, atol=0)


@given(**sizes, part=st.sampled_from(["full", "params", "x"]), plan=plans)
def test_r_forward_matches_differences_of_logits(D, H, N, seed, nonlinearity, part, plan):
    nade, x, _, rng = make_case(seed, D, H, N, nonlinearity)
    v_p, v_x = rng.normal(size=nade.n_params), rng.normal(size=x.shape)
    if part == "params":
        v_x = None           # None means a zero part
    elif part == "x":
        v_p = None
    assume(away_from_kinks(nade, x, v_p, v_x))
    logits, _, _, z = gradcheck.over_params_and_input(nade, x, lambda xx: nade.r_forward(xx, continuous=True)[0],
                                                      None)
    v = np.concatenate([np.zeros(nade.n_params) if v_p is None else v_p,
                        np.zeros(x.size) if v_x is None else v_x.ravel()])
    with maybe_block_plan(plan):
        _, R_z = nade.r_forward(x, v_p, v_x, continuous=True)
        numeric = gradcheck.directional_difference(logits, z, v)
    assert gradcheck.relative_error(R_z, numeric) < 1e-6


# ------------------------------------------------------- the engine and its twins
def assert_same_as_twin(fast, twin, name):
    """fast == twin to 1e-12 relative, part by part (W, V, b, c or x), so no part hides behind a larger one.

    A part's scale is its own largest entry, but not less than 1e-3 of the largest entry of
    the whole result (an absolute floor of 1e-15 of it, a few roundings): the engine's
    S_d = S - P_d (see _pass) cancels, so a part that is zero or tiny in exact arithmetic
    (dE/dW[:, o_D] = 0, 0 exactly in the twin) comes out at the rounding level of S.
    """
    overall = max(np.abs(t).max() for t in twin.values())
    for part in twin:
        scale = max(np.abs(twin[part]).max(), 1e-3 * overall, np.finfo(float).tiny)
        err = np.abs(fast[part] - twin[part]).max() / scale
        assert err <= 1e-12, f"{name} {part}: relative difference {err:.2e}\n fast {fast[part]}\n twin {twin[part]}"


def parts(nade, d_params, d_x):
    return dict(zip("WVbc", nade.param_views(d_params)), x=d_x)


@given(**sizes, binary=st.booleans(), plan=plans)
def test_grad_equals_reference_backprop(D, H, N, seed, nonlinearity, binary, plan):
    """The fused, blocked engine (NADE.grad) computes what the plain loop over C.2-C.15 computes."""
    nade, x, w, _ = make_case(seed, D, H, N, nonlinearity)
    if binary:
        x = (x > 0).astype(float)
    with maybe_block_plan(plan):
        log_q, d_p, d_x = nade.grad(x, weights=w, continuous=True)
    ref_log_q, ref_d_p, ref_d_x = reference_backprop(nade, x, w)
    np.testing.assert_allclose(log_q, ref_log_q, rtol=1e-12, atol=1e-12 * np.abs(ref_log_q).max())
    assert_same_as_twin(parts(nade, d_p, d_x), parts(nade, ref_d_p, ref_d_x), "grad")


@given(**sizes, binary=st.booleans(), part=st.sampled_from(["full", "params", "x"]), plan=plans)
def test_hvp_equals_reference_r_backprop(D, H, N, seed, nonlinearity, binary, part, plan):
    """NADE.hvp, with its reduced forms (C.28) for a None part, computes what the plain loop over C.16-C.27 computes."""
    nade, x, w, rng = make_case(seed, D, H, N, nonlinearity)
    if binary:
        x = (x > 0).astype(float)
    v_p = None if part == "x" else rng.normal(size=nade.n_params)
    v_x = None if part == "params" else rng.normal(size=x.shape)
    with maybe_block_plan(plan):
        Hv_p, Hv_x = nade.hvp(x, v_p, v_x, weights=w, continuous=True)
    ref_p, ref_x = reference_r_backprop(nade, x, v_p, v_x, w)
    assert_same_as_twin(parts(nade, Hv_p, Hv_x), parts(nade, ref_p, ref_x), f"hvp ({part})")
    zeros_p = np.zeros(nade.n_params) if v_p is None else v_p          # an explicit zero part = a None part
    zeros_x = np.zeros(x.shape) if v_x is None else v_x
    ref_p0, ref_x0 = reference_r_backprop(nade, x, zeros_p, zeros_x, w)
    np.testing.assert_array_equal(ref_p0, ref_p)
    np.testing.assert_array_equal(ref_x0, ref_x)


def test_twins_default_weights_are_one_and_check_their_arguments():
    nade, x, _, rng = make_case(4, 5, 3, 2, "logistic")
    ones = np.ones(x.shape[0])
    for a, b in zip(reference_backprop(nade, x), reference_backprop(nade, x, ones)):
        np.testing.assert_array_equal(a, b)
    v_p = rng.normal(size=nade.n_params)
    for a, b in zip(reference_r_backprop(nade, x, v_p), reference_r_backprop(nade, x, v_p, None, ones)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="nade: expected a kd_ref.nade.NADE"):
        reference_backprop("not a nade", x)
    with pytest.raises(ValueError, match="x: expected"):
        reference_backprop(nade, x[:, :3])
    with pytest.raises(ValueError, match="v_params: expected shape"):
        reference_r_backprop(nade, x, v_p[:-1])
    with pytest.raises(ValueError, match="weights: expected shape"):
        reference_r_backprop(nade, x, v_p, None, ones[:1])


@given(**sizes)
def test_log_likelihood_objective_gradient_matches_differences(D, H, N, seed, nonlinearity):
    """The training objective (-mean log q, its gradient) of fit / fit_nade, differenced over the parameters."""
    nade, _, _, rng = make_case(seed, D, H, N, nonlinearity)
    xb = (rng.random((N, D)) < 0.5).astype(float)
    assume(away_from_kinks(nade, xb))
    objective = log_likelihood_objective(nade)
    # a function of the parameters alone: z = (params, empty input)
    loss, _, _, theta = gradcheck.over_params_and_input(nade, np.zeros(0), lambda _: objective(xb)[0], None)
    value, grad = objective(xb)
    assert value == pytest.approx(-nade.log_prob(xb).mean(), rel=1e-12, abs=1e-12)
    res = gradcheck.check_gradient(loss, lambda _: grad, theta)
    assert res.passed(1e-6), str(res)


def test_random_direction_checks_on_a_larger_nade():
    """<u, J v> style checks where a full finite-difference gradient would be slow (D=60, H=40)."""
    nade, x, w, rng = make_case(7, 60, 40, 5, "logistic")
    value, grad, hvp, z = joint(nade, x, w)
    res = gradcheck.check_gradient(value, grad, z, directions=rng.normal(size=(4,) + z.shape))
    assert res.passed(1e-6), str(res)
    res = gradcheck.check_hvp(grad, hvp, z, rng.normal(size=z.shape))
    assert res.passed(1e-5), str(res)


def test_results_do_not_depend_on_the_block_plan():
    """Several row chunks and position blocks (tiny plan) give the same numbers as one block."""
    nade, x, w, rng = make_case(3, 11, 5, 9, "logistic")
    xb = (rng.random(x.shape) < 0.5).astype(float)
    v_p, v_x = rng.normal(size=nade.n_params), rng.normal(size=x.shape)

    def everything():
        return [nade.log_prob(xb), *nade.grad(x, weights=w, continuous=True)[1:], *nade.hvp(x, v_p, v_x, weights=w, continuous=True),
                *nade.hvp(x, None, v_x, weights=w, continuous=True), *nade.hvp(x, v_p, None, weights=w, continuous=True),
                nade.conditionals(xb)]

    base = everything()
    for plan in ((8, 2, 2), (30, 4, 3), (1, 1, 2)):
        with block_plan(*plan):
            for a, b in zip(base, everything()):
                np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)


def test_parts_can_be_skipped_and_zero_direction_gives_zero():
    nade, x, w, rng = make_case(1, 5, 3, 4, "logistic")
    xb = (x > 0).astype(float)
    log_q, d_p, d_x = nade.grad(xb, weights=w, input_grads=False)
    assert d_x is None and d_p.shape == (nade.n_params,)
    _, none_p, d_x2 = nade.grad(xb, weights=w, param_grads=False)
    assert none_p is None and d_x2.shape == xb.shape
    np.testing.assert_allclose(nade.grad(xb, weights=w)[1], d_p, rtol=1e-13)
    Hp, Hx = nade.hvp(xb, None, None)
    assert not Hp.any() and not Hx.any()
    np.testing.assert_allclose(log_q, nade.log_prob(xb), rtol=1e-13)


def test_weighted_gradient_is_the_weighted_sum_of_row_gradients():
    nade, x, w, _ = make_case(2, 6, 4, 3, "logistic")
    xb = (x > 0).astype(float)
    rows = [nade.grad(xb[n:n + 1])[1] for n in range(3)]
    np.testing.assert_allclose(nade.grad(xb, weights=w)[1], sum(wn * g for wn, g in zip(w, rows)), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------- forward
@given(**sizes)
def test_log_prob_equals_product_of_conditionals(D, H, N, seed, nonlinearity):
    nade, x, _, rng = make_case(seed, D, H, N, nonlinearity)
    xb = (rng.random((N, D)) < 0.5).astype(float)
    y, acts, _ = reference(nade, xb)
    # log y and log(1 - y) from the output pre-activation z (C.5, C.7): log1p(-y) would lose digits where y ~ 1
    f = (lambda a: 1 / (1 + np.exp(-a))) if nonlinearity == "logistic" else (lambda a: np.maximum(a, 0))
    z = nade.b + np.einsum("dh,ndh->nd", nade.V, f(acts))
    expected = -np.sum(np.logaddexp(0.0, np.where(xb == 1, -z, z)), axis=1)
    np.testing.assert_allclose(nade.log_prob(xb), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(nade.conditionals(xb), y, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("D", [1, 2, 5, 10])
@pytest.mark.parametrize("nonlinearity", ["logistic", "relu"])
def test_probabilities_sum_to_one(D, nonlinearity):
    rng = np.random.default_rng(D)
    nade = NADE(D, 4, rng, order=rng.permutation(D), nonlinearity=nonlinearity, init_std=2.0)
    nade.b[...] = rng.normal(size=D)
    total = np.exp(nade.log_prob(all_binary(D))).sum()
    assert abs(total - 1.0) < 1e-12


def test_extreme_parameters_give_finite_log_probabilities():
    rng = np.random.default_rng(0)
    nade = NADE(12, 6, rng)
    nade.set_params(1e3 * rng.choice([-1.0, 1.0], size=nade.n_params))
    x = all_binary(12)
    log_q = nade.log_prob(x)
    assert np.all(np.isfinite(log_q)) and np.all(log_q <= 0)
    assert abs(np.logaddexp.reduce(log_q)) < 1e-9            # still normalised
    _, d_p, d_x = nade.grad(x)
    assert np.all(np.isfinite(d_p)) and np.all(np.isfinite(d_x))
    y = nade.conditionals(x)
    assert np.all((y >= 0) & (y <= 1))


def test_saturated_units_beyond_exp_range_match_the_reference():
    """Hidden units with |a| > 700 (exp(-a) overflows for a < -709; the engine then caps -a, see
    nade._logistic_from_negated) give the reference twins' log q, gradients and H v."""
    rng = np.random.default_rng(0)
    nade = NADE(6, 4, rng, init_std=1.0)
    nade.c[...] = [-800.0, 30.0, 0.5, 750.0]
    x = (rng.random((5, 6)) < 0.5).astype(np.float64)
    log_q, d_p, d_x = nade.grad(x)
    ref = reference_backprop(nade, x)
    for got, want in zip((log_q, d_p, d_x), ref):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    v_p, v_x = rng.normal(size=nade.n_params), rng.normal(size=x.shape)
    for got, want in zip(nade.hvp(x, v_p, v_x), reference_r_backprop(nade, x, v_p, v_x)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_raster_column_order():
    order = raster_column_order(28, 28)
    np.testing.assert_array_equal(np.sort(order), np.arange(784))
    np.testing.assert_array_equal(order[:28], np.arange(0, 784, 28))       # first column, top to bottom
    np.testing.assert_array_equal(order[28:31], [1, 29, 57])               # then the second column
    assert raster_column_order(2, 3).tolist() == [0, 3, 1, 4, 2, 5]


# ------------------------------------------------------------------------ sampling
def test_sample_frequencies_match_q():
    """100k samples of a D = 4 NADE: total variation < 0.01.

    With n samples over 16 states the expected TV is about
    1/2 sum_x sqrt(2 q(x) / (pi n)) <= 1/2 sqrt(16) sqrt(2 / (pi n)) = 0.005 for n = 1e5.
    A different NADE's q (the control) must be far away.
    """
    rng = np.random.default_rng(2024)
    nade = NADE(4, 3, rng, order=[2, 0, 3, 1], init_std=1.5)
    nade.b[...] = rng.normal(size=4)
    x, y = nade.sample(100_000, np.random.default_rng(5))
    assert set(np.unique(x)) <= {0.0, 1.0}
    codes = (x @ (1 << np.arange(4))).astype(int)
    freq = np.bincount(codes, minlength=16) / x.shape[0]
    q = np.exp(nade.log_prob(all_binary(4)))
    assert 0.5 * np.abs(freq - q).sum() < 0.01
    other = NADE(4, 3, np.random.default_rng(99), init_std=1.5)
    assert 0.5 * np.abs(freq - np.exp(other.log_prob(all_binary(4)))).sum() > 0.05
    np.testing.assert_allclose(y[:500], nade.conditionals(x[:500]), rtol=1e-12, atol=1e-15)


def test_sampling_is_reproducible_and_needs_a_generator():
    nade = NADE(6, 3, np.random.default_rng(0), init_std=1.0)
    a = nade.sample(7, np.random.default_rng(3))
    b = nade.sample(7, np.random.default_rng(3))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(TypeError, match="rng"):
        nade.sample(3, 0)


# ------------------------------------------------------------------------ training
def test_minibatch_drawer_uses_every_row_once_per_pass():
    data = np.arange(10)[:, None] * np.ones((1, 2))
    draw = MinibatchDrawer(data, 4, np.random.default_rng(0))
    rows = np.concatenate([draw()[:, 0] for _ in range(5)])                  # 20 rows = 2 passes
    assert sorted(rows[:10]) == list(range(10)) and sorted(rows[10:]) == list(range(10))
    assert not np.array_equal(rows[:10], rows[10:])                          # reshuffled
    assert draw.passes == 2 and draw.examples_drawn == 20


def test_maximum_likelihood_training_approaches_the_true_model():
    rng = np.random.default_rng(0)
    protos = (rng.random((3, 10)) < 0.5).astype(float)
    train_x, _, _ = noisy_prototypes(2000, rng, prototypes=protos, flip_prob=0.05)
    test_x, _, _ = noisy_prototypes(1000, rng, prototypes=protos, flip_prob=0.05)
    truth = noisy_prototypes_log_prob(test_x, protos, 0.05).mean()
    nade = NADE(10, 12, rng, init_std=0.1)
    start = nade.log_prob(test_x).mean()
    result = nade.fit(train_x, rng, passes=8, batch_size=20, test=test_x, progress=False)
    end = nade.log_prob(test_x).mean()
    assert result.steps == 800 and len(result.monitor) >= 2
    assert result.monitor[-1][1] == pytest.approx(end)
    assert end > start + 2.0                       # start: about -6.9 nats (uniform); truth: about -4.2
    assert end > truth - 0.3, (start, end, truth)


def test_biases_from_data_are_smoothed_marginal_logits():
    data = np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0], [0, 0, 0]], dtype=np.uint8)   # ones per input: 3, 1, 1 of 4
    nade = NADE(3, 2, None)                                      # W = V = 0: independent inputs
    nade.set_biases_from_data(data)
    np.testing.assert_allclose(1 / (1 + np.exp(-nade.b)), [4 / 6, 2 / 6, 2 / 6], rtol=1e-12)
    np.testing.assert_allclose(nade.conditionals(data[:1]), [[4 / 6, 2 / 6, 2 / 6]], rtol=1e-12)
    other = NADE(3, 2, np.random.default_rng(0))
    other.fit(data, np.random.default_rng(1), n_steps=1, optimizer=SGD(1e-12), progress=False, init_biases=True)
    np.testing.assert_allclose(other.b, nade.b, rtol=1e-9)
    with pytest.raises(ValueError, match="data: expected binary values"):
        nade.set_biases_from_data([[0.5, 0, 1]])


def test_fit_nade_takes_any_stream_and_sgd():
    rng = np.random.default_rng(1)
    nade = NADE(5, 4, rng, init_std=0.1)
    target = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    draw = lambda: np.tile(target, (8, 1))                                   # noqa: E731
    before = nade.log_prob(target)[0]
    fit_nade(nade, draw, 100, optimizer=SGD(0.5), progress=False)
    assert nade.log_prob(target)[0] > before + 1.0


# ----------------------------------------------------------------------- save/load
def test_save_load_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(4)
    nade = NADE(7, 3, rng, order=rng.permutation(7), nonlinearity="relu", init_std=1.0)
    nade.b[...] = rng.normal(size=7)
    path = tmp_path / "model.file"                 # any name: exactly this file is written
    nade.save(path)
    back = NADE.load(path)
    assert back.params.tobytes() == nade.params.tobytes()
    np.testing.assert_array_equal(back.order, nade.order)
    assert back.nonlinearity == "relu" and (back.n_inputs, back.n_hidden) == (7, 3)
    x = all_binary(7)
    np.testing.assert_array_equal(back.log_prob(x), nade.log_prob(x))


def test_load_rejects_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="path: no file at"):
        NADE.load(tmp_path / "absent.npz")
    good = tmp_path / "good.npz"
    NADE(4, 2, np.random.default_rng(0)).save(good)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="could not read"):
        NADE.load(broken)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"neither a zip archive nor a .npy file" * 10)
    with pytest.raises(ValueError, match="path: could not read .*garbage.npz.* as a .npz archive"):
        NADE.load(garbage)                         # numpy alone would offer to unpickle it
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="path: expected a .npz archive, .* holds a single .npy array"):
        NADE.load(tmp_path / "single.npy")
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, W=np.zeros((2, 4)), b=np.zeros(4))
    with pytest.raises(ValueError, match="expected a kd_ref.NADE file"):
        NADE.load(foreign)
    with np.load(good) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["V"] = np.zeros((3, 2))
    mismatched = tmp_path / "mismatched.npz"
    np.savez(mismatched, **arrays)
    with pytest.raises(ValueError, match=r"expected V of shape \(4, 2\).*received shape \(3, 2\)"):
        NADE.load(mismatched)


# ----------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors_and_change_nothing():
    rng = np.random.default_rng(0)
    nade = NADE(4, 3, rng, init_std=1.0)
    before = nade.params.copy()
    with pytest.raises(ValueError, match=r"x: expected binary values.*0\.5"):
        nade.log_prob([[0, 1, 0.5, 1]])
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 4\), received shape \(2, 5\)"):
        nade.grad(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"weights: expected shape \(2,\)"):
        nade.grad(np.zeros((2, 4)), weights=np.ones(3))
    with pytest.raises(ValueError, match=r"v_params: expected shape \(31,\)"):
        nade.hvp(np.zeros((2, 4)), v_params=np.ones(3))
    with pytest.raises(ValueError, match=r"v_x: expected shape \(2, 4\)"):
        nade.hvp(np.zeros((2, 4)), v_x=np.ones((3, 4)))
    with pytest.raises(ValueError, match="values: expected shape"):
        nade.set_params(np.ones(5))
    with pytest.raises(ValueError, match="data: expected binary values"):
        nade.fit(np.full((10, 4), 0.3), rng, n_steps=3, progress=False)
    with pytest.raises(ValueError, match="n_steps, passes: expected exactly one"):
        nade.fit(np.zeros((10, 4)), rng, progress=False)
    # init_biases would set b: every other argument is checked first
    with pytest.raises(ValueError, match="n_steps: expected an integer >= 1, received 0"):
        nade.fit(np.ones((10, 4)), rng, n_steps=0, progress=False, init_biases=True)
    with pytest.raises(ValueError, match=r"test: expected shape \(M, 4\)"):
        nade.fit(np.ones((10, 4)), rng, n_steps=2, test=np.zeros((3, 5)), progress=False, init_biases=True)
    with pytest.raises(ValueError, match="monitor_every: expected an integer >= 1"):
        nade.fit(np.ones((10, 4)), rng, n_steps=2, test=np.zeros((3, 4)), monitor_every=0, progress=False,
                 init_biases=True)
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 4\), received shape \(3,\)"):
        nade.conditionals([0, 1, 1])
    with pytest.raises(ValueError, match="draw\\(\\): expected binary values"):
        fit_nade(nade, lambda: np.full((2, 4), 0.5), 3, progress=False)
    np.testing.assert_array_equal(nade.params, before)
    with pytest.raises(ValueError, match="order: expected a permutation of 0..3"):
        NADE(4, 3, rng, order=[0, 1, 1, 3])
    with pytest.raises(ValueError, match=r"order: expected an integer array of shape \(4,\)"):
        NADE(4, 3, rng, order=[0, 1, 2])
    with pytest.raises(ValueError, match="nonlinearity: expected one of"):
        NADE(4, 3, rng, nonlinearity="tanh")
    with pytest.raises(TypeError, match="n_hidden: expected an integer"):
        NADE(4, 2.5, rng)
