"""Linear distillation learning (SPEC_seeds S2): closed form = gradient limit, the subspace picture, bidirectional
passes, and the randomized-prior reading against the exact Gaussian posterior."""
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from hypothesis import given, settings, strategies as st

from kd_ref.distill.linear import (INITS, O2MD, BidirectionalDistillation, NaiveLDL, RandomLinearMap,
                                   bayes_linear_posterior, init_weight, nearest_subspace, row_space,
                                   rpf_posterior_samples)
from kd_ref.gradcheck import check_gradient


def _problem(seed, c=3, m=3, d=7, k=5, bias=False, init="xavier_normal"):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(c * m, d))
    y = np.repeat(np.arange(c), m)
    target = RandomLinearMap(d, k, rng, init="xavier_normal", bias=bias)
    return rng, x, y, O2MD(c, target, rng, init=init)


# ---------------------------------------------------------------------------- initialisations
@pytest.mark.parametrize("k, d", [(3, 8), (8, 3), (5, 5)])
def test_orthogonal_init_has_orthonormal_rows_or_columns(k, d):
    w = init_weight((k, d), np.random.default_rng(0), "orthogonal")
    gram = w @ w.T if k <= d else w.T @ w
    np.testing.assert_allclose(gram, np.eye(min(k, d)), atol=1e-14)


def test_random_inits_have_their_variances_and_bad_names_are_refused():
    rng = np.random.default_rng(1)
    k, d = 200, 300
    n = k * d      # sample variance within 5 standard errors (sd of s^2 = var sqrt(2/n))
    for init, var in (("xavier_normal", 2 / (k + d)), ("gaussian", 1 / d), ("torch_default", 1 / (3 * d))):
        w = init_weight((k, d), rng, init)
        assert abs(w.var() - var) < 5 * var * np.sqrt(2 / n), init
    assert np.abs(init_weight((k, d), rng, "torch_default")).max() <= 1 / np.sqrt(d)
    with pytest.raises(ValueError, match="init: expected one of orthogonal"):
        RandomLinearMap(3, 2, rng, init="he")
    with pytest.raises(ValueError, match="init: expected one of"):
        O2MD(2, RandomLinearMap(3, 2, rng), rng, init="zeros")
    assert set(INITS) == {"orthogonal", "xavier_normal", "gaussian", "torch_default"}


# ---------------------------------------------------------------------------- S2.3 closed form
@pytest.mark.parametrize("bias", [False, True])
def test_batch1_sgd_converges_to_the_closed_form(bias):
    rng, x, y, model = _problem(2, bias=bias)
    start = model.params.copy()
    model.fit(x, y, method="closed_form")
    closed = model.params.copy()
    model.params[...] = start
    norm2 = np.max(np.sum(x**2, axis=1) + bias)
    # each step is a relaxed Kaczmarz projection: stable for lr (2/K) ||x||^2 < 2
    model.fit(x, y, method="sgd", epochs=3000, lr=0.5 * model.target.d_out / norm2, rng=rng)
    np.testing.assert_allclose(model.params, closed, rtol=0, atol=1e-8)


@pytest.mark.parametrize("bias", [False, True])
def test_closed_form_distance_vanishes_on_the_class_span(bias):
    rng, x, y, model = _problem(3, bias=bias)
    model.fit(x, y)
    for c in range(3):
        coef = rng.normal(size=(4, 3))
        if bias:                       # with a bias the zero set is the affine hull: weights summing to 1
            coef /= coef.sum(axis=1, keepdims=True)
        d = model.distances(coef @ x[y == c])
        assert np.all(d[:, c] < 1e-24 * (1 + d.max()))
    far = rng.normal(size=(5, x.shape[1]))
    assert np.all(model.distances(far) > 1e-3)          # control: off the spans the scores are not 0


def test_closed_form_with_a_bias_is_the_plain_form_on_augmented_inputs():
    rng, x, y, model = _problem(4, bias=True)
    c, k, d = model.theta.shape
    plain = O2MD(c, RandomLinearMap.from_weight(model.target.augmented()), rng)
    for cls in range(c):
        plain.theta[cls] = np.hstack([model.theta[cls], model.beta[cls][:, None]])
    aug = np.hstack([x, np.ones((x.shape[0], 1))])
    model.fit(x, y)
    plain.fit(aug, y)
    test = rng.normal(size=(6, d))
    np.testing.assert_allclose(model.distances(test), plain.distances(np.hstack([test, np.ones((6, 1))])),
                               rtol=1e-12, atol=1e-14)


def test_closed_form_distance_is_the_projected_random_map():
    rng, x, y, model = _problem(5)
    g0 = model.theta - model.target.weight
    model.fit(x, y)
    test = rng.normal(size=(4, x.shape[1]))
    for c in range(3):
        q = scipy.linalg.orth(x[y == c].T)               # an independent basis of span(X_c)
        r = (test - test @ q @ q.T) @ g0[c].T
        np.testing.assert_allclose(model.distances(test)[:, c], 0.5 * np.sum(r**2, axis=1), rtol=1e-11)


def test_adam_does_not_converge_to_the_closed_form():
    # documented control (S2.3): Adam fits the training examples but also moves the complement of the span
    rng, x, y, model = _problem(6)
    start = model.params.copy()
    model.fit(x, y)
    closed = model.params.copy()
    model.params[...] = start
    before = model.distances(x)[np.arange(y.size), y]
    model.fit(x, y, method="adam", epochs=2000, lr=1e-2, rng=rng)
    train_d = model.distances(x)[np.arange(y.size), y]
    assert np.max(train_d) < 1e-2 * np.min(before)     # it has (nearly: constant steps jitter) fitted the examples ...
    assert np.max(np.abs(model.params - closed)) > 1e-2  # ... but away from the closed form


# ---------------------------------------------------------------------------- S2.4 naive, nearest subspace
def test_naive_from_zero_is_half_the_squared_distance_to_the_class_subspace():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(8, 6))
    y = np.repeat(np.arange(2), 4)
    naive = NaiveLDL(2, 6, rng, zero_init=True)
    naive.fit(x, y)
    subspace = nearest_subspace(x, y)
    test = rng.normal(size=(10, 6))
    want = np.stack([0.5 * np.sum((test - test @ q @ q.T) ** 2, axis=1)
                     for q in (scipy.linalg.orth(x[y == c].T) for c in range(2))], axis=1)
    np.testing.assert_allclose(naive.distances(test), want, rtol=1e-11)
    np.testing.assert_allclose(subspace.distances(test), want, rtol=1e-11)
    started = NaiveLDL(2, 6, np.random.default_rng(7))     # control: the default random start changes the scores
    started.fit(x, y)
    assert np.max(np.abs(started.distances(test) - want)) > 1e-2


def test_nearest_subspace_classifies_points_of_each_span_and_breaks_ties_low():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(6, 5))
    y = np.array([0, 0, 1, 1, 2, 2])
    model = nearest_subspace(x, y)
    assert [v.shape for v in model.bases] == [(5, 2)] * 3
    np.testing.assert_array_equal(model.predict(x), y)
    tie = nearest_subspace(np.vstack([x[:2], x[:2]]), np.array([0, 0, 1, 1]))
    assert np.all(tie.predict(rng.normal(size=(4, 5))) == 0)
    assert row_space(np.zeros((2, 5))).shape == (5, 0)
    with pytest.raises(ValueError, match="none of class 1"):
        nearest_subspace(x[:2], np.array([0, 0]), n_classes=2)


# ---------------------------------------------------------------------------- gradients of every loss
shapes = st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 5), st.booleans(), st.integers(0, 2**32 - 1))


@settings(max_examples=30, deadline=None)
@given(case=shapes)
def test_predictor_step_gradient_matches_differences(case):
    c, d, k, bias, seed = case
    rng = np.random.default_rng(seed)
    model = O2MD(c, RandomLinearMap(d, k, rng, bias=bias), rng)
    xb = rng.normal(size=(c, d))
    p0 = model.params.copy()

    def at(p, part):
        model.params[...] = p
        return model.step_loss(xb)[part]

    result = check_gradient(lambda p: at(p, 0), lambda p: at(p, 1).copy(), p0,
                            directions=rng.normal(size=(3, p0.size)))
    assert result.passed(1e-8) or result.abs_error < 1e-9, str(result)


@settings(max_examples=30, deadline=None)
@given(case=shapes, n=st.integers(1, 4))
def test_target_pass_gradient_matches_differences(case, n):
    c, d, k, bias, seed = case
    rng = np.random.default_rng(seed)
    model = BidirectionalDistillation(c, RandomLinearMap(d, k, rng, bias=bias), rng)
    x, y = rng.normal(size=(n, d)), rng.integers(0, c, size=n)
    p0 = model.target.params.copy()

    def at(p, part):
        model.target.params[...] = p
        return model.target_loss(x, y)[part]

    result = check_gradient(lambda p: at(p, 0), lambda p: at(p, 1).copy(), p0)
    assert result.passed(1e-8) or result.abs_error < 1e-9, str(result)


def test_each_pass_step_lowers_its_own_loss():
    rng, x, y, _ = _problem(9)
    model = BidirectionalDistillation(3, RandomLinearMap(7, 5, rng, bias=True), rng, init="torch_default")
    loss, grad = model.target_loss(x[:1], y[:1])
    model.target.params -= 1e-3 * grad
    assert model.target_loss(x[:1], y[:1])[0] < loss
    xb = x[::3]
    loss, grad = model.step_loss(xb)
    model.params -= 1e-3 * grad
    assert model.step_loss(xb)[0] < loss


# ---------------------------------------------------------------------------- S2.5 bidirectional
def test_bidirectional_with_a_frozen_target_is_o2md_trained_by_adam():
    _, x, y, _ = _problem(10)

    def make():
        rng = np.random.default_rng(11)
        target = RandomLinearMap(7, 5, rng, init="orthogonal")
        return rng, target

    rng, target = make()
    bd = BidirectionalDistillation(3, target, rng, init="torch_default")
    phi = target.params.copy()
    bd.fit(x, y, epochs=4, lr=1e-3, target_lr=0.0, weight_decay=5e-7, rng=np.random.default_rng(1),
           target_rng=np.random.default_rng(2))
    rng, target = make()
    o2md = O2MD(3, target, rng, init="torch_default")
    o2md.fit(x, y, method="adam", epochs=4, lr=1e-3, weight_decay=5e-7, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(bd.target.params, phi)
    np.testing.assert_array_equal(bd.params, o2md.params)
    moved = BidirectionalDistillation(3, make()[1], np.random.default_rng(11), init="torch_default")
    moved.fit(x, y, epochs=4, target_lr=1e-3, rng=np.random.default_rng(1))
    assert not np.array_equal(moved.target.params, phi)   # control: a positive target lr trains the target


def test_fit_refuses_bad_arguments_before_changing_anything():
    rng, x, y, model = _problem(12)
    before = model.params.copy()
    with pytest.raises(ValueError, match="method: expected one of closed_form, sgd, adam"):
        model.fit(x, y, method="lbfgs")
    with pytest.raises(ValueError, match=r"y: expected the same number of examples in every class.*\[4, 3, 2\]"):
        model.fit(x, np.array([0, 0, 0, 0, 1, 1, 1, 2, 2]), method="adam", rng=rng)
    with pytest.raises(ValueError, match="x: expected shape"):
        model.fit(x[:, :3], y)
    with pytest.raises(TypeError, match="rng"):
        model.fit(x, y, method="sgd", rng=None)
    with pytest.raises(ValueError, match="y: expected labels in 0..2"):
        model.fit(x, y + 1)
    np.testing.assert_array_equal(model.params, before)


def test_monitor_is_called_after_every_epoch():
    rng, x, y, model = _problem(13)
    values = model.fit(x, y, method="adam", epochs=3, rng=rng, monitor=lambda m: float(m.distances(x).sum()))
    assert len(values) == 3 and values[0] > values[-1]


# ---------------------------------------------------------------------------- S2.6 randomized prior functions
def _regression(seed, n=5, d=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = x @ rng.normal(size=d) + 0.5 * rng.normal(size=n)
    return rng, x, y


def test_bayes_linear_posterior_matches_the_textbook_formula():
    _, x, y = _regression(20)
    mean, cov = bayes_linear_posterior(x, y, 0.5, np.array([0.3, -1.0, 2.0]), 2.0)
    precision = x.T @ x / 0.5 + np.eye(3) / 2.0
    want_cov = np.linalg.inv(precision)                          # the reference may invert; the code does not
    np.testing.assert_allclose(cov, want_cov, rtol=1e-12)
    np.testing.assert_allclose(mean, want_cov @ (x.T @ y / 0.5 + np.array([0.3, -1.0, 2.0]) / 2.0), rtol=1e-12)


def _moment_errors(draws, mean, cov):
    """Largest |error| / SE of the sample mean and covariance entries (Gaussian sampling variances)."""
    n = draws.shape[0]
    mean_z = np.abs(draws.mean(axis=0) - mean) / np.sqrt(np.diag(cov) / n)
    var_entries = (np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n
    cov_z = np.abs(np.cov(draws.T) - cov) / np.sqrt(var_entries)
    return mean_z.max(), cov_z.max()


def test_rpf_draws_are_exact_posterior_draws_and_the_no_noise_control_fails():
    rng, x, y = _regression(21)
    prior_mean, noise_var, prior_var, n = np.array([0.3, -1.0, 2.0]), 0.5, 2.0, 20_000
    mean, cov = bayes_linear_posterior(x, y, noise_var, prior_mean, prior_var)
    draws = rpf_posterior_samples(x, y, noise_var, prior_mean, prior_var, n, rng)
    mean_z, cov_z = _moment_errors(draws, mean, cov)
    assert mean_z < 4.5 and cov_z < 4.5, (mean_z, cov_z)       # 3 + 6 statistics, fixed seed
    for a in rng.normal(size=(2, 3)):
        proj = draws @ a
        assert scipy.stats.kstest(proj, "norm", args=(a @ mean, np.sqrt(a @ cov @ a))).pvalue > 1e-3
    control = rpf_posterior_samples(x, y, noise_var, prior_mean, prior_var, n, np.random.default_rng(22),
                                    target_noise=False)
    assert _moment_errors(control, mean, cov)[1] > 10           # too concentrated without the target noise


def test_rpf_refuses_bad_arguments():
    rng, x, y = _regression(23)
    for kwargs, match in ((dict(noise_var=0.0), "noise_var"), (dict(prior_var=-1.0), "prior_var"),
                          (dict(prior_mean=np.zeros(2)), "prior_mean"), (dict(n=0), "n:")):
        args = dict(X=x, y=y, noise_var=1.0, prior_mean=0.0, prior_var=1.0, n=5, rng=rng) | kwargs
        with pytest.raises(ValueError, match=match):
            rpf_posterior_samples(**args)
    with pytest.raises(ValueError, match="y: expected shape"):
        bayes_linear_posterior(x, y[:2], 1.0, 0.0, 1.0)


# ---------------------------------------------------------------------------- S2.7 LDL as a prior ensemble
def test_o2md_score_estimates_k_times_the_zero_target_posterior_variance():
    rng = np.random.default_rng(30)
    d, k, m = 5, 3, 2
    xc = rng.normal(size=(m, d))
    x = rng.normal(size=(4, d))
    y = np.zeros(m, dtype=int)
    lam = 2.0 / d          # Theta^0 and Phi both N(0, 1/D) entries: rows of Theta^0 - Phi are N(0, (2/D) I)
    scores = []
    for _ in range(2000):
        model = O2MD(1, RandomLinearMap(d, k, rng, init="gaussian"), rng, init="gaussian")
        model.fit(xc, y)
        scores.append(2.0 * model.distances(x)[:, 0])                # ||G_c(x)||^2
    scores = np.array(scores)
    residual = 2.0 * nearest_subspace(xc, y).distances(x)[:, 0]     # ||(I - Pi_c) x||^2
    want = k * lam * residual
    se = scores.std(axis=0, ddof=1) / np.sqrt(scores.shape[0])
    assert np.all(np.abs(scores.mean(axis=0) - want) < 4 * se), (scores.mean(axis=0), want, se)
    assert np.all(np.abs(scores.mean(axis=0) - 1.5 * want) > 4 * se)  # control: a wrong scale is detected
    # and lambda ||(I - Pi) x||^2 is the sigma -> 0 limit of the zero-target posterior predictive variance (S2.6)
    _, cov = bayes_linear_posterior(xc, np.zeros(m), 1e-9, 0.0, lam)
    np.testing.assert_allclose(np.einsum("nd,de,ne->n", x, cov, x), lam * residual, rtol=1e-6)
