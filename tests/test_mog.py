"""Mixtures of Gaussians and EM (kd_ref.mog, Appendix D)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import multivariate_normal

from kd_ref.mog import MoG, OnlineEM, Statistics, em_step, fit_em, initial_model, m_step
from kd_ref.optim import LinearDecay, PowerDecay


def _random_mog(rng, K, D, spread=3.0):
    A = rng.normal(size=(K, D, D))
    return MoG(rng.dirichlet(4.0 * np.ones(K)), spread * rng.normal(size=(K, D)),
               A @ A.transpose(0, 2, 1) + 0.5 * np.eye(D))


def test_log_density_matches_scipy_and_stays_finite_far_away(rng):
    m = _random_mog(rng, 3, 2)
    x = rng.normal(size=(7, 2)) * 3
    direct = np.log(sum(w * multivariate_normal(mu, c).pdf(x) for w, mu, c in zip(m.weights, m.means, m.covs)))
    assert np.allclose(m.log_density(x), direct, rtol=1e-12)
    far = m.log_density(np.array([[1e6, -1e6]]))
    assert np.isfinite(far[0]) and far[0] < -1e9
    r, log_p = m.responsibilities(np.array([[1e6, -1e6]]))
    assert np.all(np.isfinite(r)) and np.isclose(r.sum(), 1.0)


def test_sampling_moments(rng):
    m = MoG([0.25, 0.75], [[-2.0, 0.0], [1.0, 1.0]], [np.eye(2), [[1.0, 0.5], [0.5, 2.0]]])
    x = m.sample(40_000, rng)
    mean = m.weights @ m.means
    assert np.allclose(x.mean(axis=0), mean, atol=5 * 1.6 / np.sqrt(40_000))
    second = sum(w * (c + np.outer(mu, mu)) for w, mu, c in zip(m.weights, m.means, m.covs))
    assert np.allclose(np.cov(x, rowvar=False), second - np.outer(mean, mean), atol=0.06)


def test_views_and_save_load_round_trip(tmp_path, rng):
    m = _random_mog(rng, 2, 3)
    assert np.shares_memory(m.means, m.params) and np.shares_memory(m.covs, m.params)
    m.save(tmp_path / "m.npz")
    back = MoG.load(tmp_path / "m.npz")
    assert np.array_equal(back.params, m.params)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="could not read"):
        MoG.load(tmp_path / "bad.npz")


@given(seed=st.integers(0, 2**32 - 1), K=st.integers(1, 3), D=st.integers(1, 2), fit_k=st.integers(1, 3))
def test_batch_em_never_lowers_the_log_likelihood(seed, K, D, fit_k):
    """D.2: with reg = 0 every EM iteration keeps or raises the average log-likelihood.

    A component may legitimately collapse onto a single point (the likelihood then
    grows without bound and the next covariance is singular, which raises); the
    property is checked on the iterations made before that.
    """
    rng = np.random.default_rng(seed)
    x = _random_mog(rng, K, D).sample(40 * fit_k * D, rng)
    model = initial_model(x, fit_k, rng)
    lls = []
    for _ in range(25):
        try:
            model, ll = em_step(model, x, reg=0.0)
        except ValueError as err:
            assert "positive definite" in str(err)
            break
        lls.append(ll)
    assert len(lls) >= 2
    assert np.all(np.diff(lls) >= -1e-10 * abs(lls[0])), np.diff(lls).min()


def _match(model, true):
    """Order the fitted components like the true ones (by nearest mean)."""
    order = [int(np.argmin(np.linalg.norm(model.means - mu, axis=1))) for mu in true.means]
    assert sorted(order) == list(range(true.n_components))
    return model.weights[order], model.means[order], model.covs[order]


def test_batch_em_recovers_known_parameters_on_large_data():
    rng = np.random.default_rng(1)
    true = MoG([0.2, 0.3, 0.5], [[-4.0, 0.0], [0.0, 4.0], [4.0, -1.0]],
               [0.5 * np.eye(2), [[1.0, 0.5], [0.5, 1.0]], [[2.0, -0.3], [-0.3, 0.4]]])
    n = 10_000
    x = true.sample(n, rng)
    res = fit_em(x, 3, rng, n_restarts=2, max_iter=300, tol=1e-8)
    w, mu, cov = _match(res.model, true)
    # standard errors: weights sqrt(w(1-w)/n) <= 0.005; means ~ sd / sqrt(n w) <= 0.025
    assert np.allclose(w, true.weights, atol=0.02)
    assert np.allclose(mu, true.means, atol=0.1)
    assert np.allclose(cov, true.covs, atol=0.15)
    assert res.log_likelihood >= np.mean(true.log_density(x)) - 1e-9   # ML fit beats the truth on its data
    assert res.history.shape == (res.n_iter,) and np.all(np.diff(res.history) > -1e-10)


def test_fit_em_keeps_the_best_restart_and_runs_to_convergence():
    """Three separated clusters: each restart runs until the log-likelihood gain is below tol, and the
    result is the restart with the highest final average log-likelihood."""
    rng = np.random.default_rng(3)
    x = MoG.from_1d([0.3, 0.3, 0.4], [-6.0, 0.0, 5.0], [1.0, 0.5, 2.0]).sample(600, rng)
    res = fit_em(x, 3, rng, n_restarts=4, tol=1e-10)
    assert res.restarts.shape == (4,) and np.all(np.isfinite(res.restarts))
    assert res.log_likelihood == res.restarts.max()
    assert np.isclose(res.log_likelihood, np.mean(res.model.log_density(x)), rtol=1e-14)
    assert res.converged and 0 <= res.history[-1] - res.history[-2] < 1e-10
    # a poor start on its own (two components on one cluster) ends lower than the best restart
    poor = MoG.from_1d([0.4, 0.3, 0.3], [-6.2, -5.8, 2.0], [1.0, 1.0, 10.0])
    alone = fit_em(x, 3, rng, n_restarts=1, init=poor, max_iter=3)
    assert alone.log_likelihood < res.log_likelihood - 0.05
    # init is the first restart's start: one iteration from it is one EM step
    one = fit_em(x, 3, rng, n_restarts=1, init=poor, max_iter=1)
    assert np.allclose(one.model.params, em_step(poor, x, reg=1e-6)[0].params, rtol=1e-13)


def test_a_starved_component_without_previous_parameters_is_a_clear_error():
    stats = Statistics(np.array([1.0, 0.0]), np.array([[0.5], [0.0]]), np.array([[[1.0]], [[0.0]]]))
    with pytest.raises(ValueError, match=r"previous: expected a MoG to keep components \[1\].*received None"):
        m_step(stats)


def test_every_restart_failing_is_a_clear_error(rng):
    """reg = 0 on data that are all the same point: every covariance becomes exactly 0."""
    x = np.zeros((10, 1))
    with pytest.raises(ValueError, match=r"reg: every one of the 2 EM restarts met a singular covariance; "
                                         r"expected reg > 0 .*received reg=0.0"):
        fit_em(x, 3, rng, n_restarts=2, reg=0.0)


@pytest.mark.parametrize("schedule", [PowerDecay(t0=2.0, kappa=0.6), LinearDecay(1.0, 800)])
def test_online_em_converges_to_the_batch_solution_on_a_stationary_stream(schedule):
    rng = np.random.default_rng(2)
    true = MoG.from_1d([0.4, 0.6], [-2.0, 2.5], [1.0, 0.5])
    batch = fit_em(true.sample(40_000, rng), 2, rng, n_restarts=1, tol=1e-9)
    online = OnlineEM(initial_model(true.sample(100, rng), 2, rng), schedule)
    for _ in range(800):
        online.step(true.sample(100, rng))
    ow, om, oc = _match(online.model, batch.model)
    assert np.allclose(ow, batch.model.weights, atol=0.03)
    assert np.allclose(om, batch.model.means, atol=0.08)
    assert np.allclose(oc, batch.model.covs, atol=0.1)
    assert online.t == 800


def test_online_em_with_step_one_on_all_data_is_one_batch_step(rng):
    x = _random_mog(rng, 2, 2).sample(300, rng)
    start = initial_model(x, 2, rng)
    batch, _ = em_step(start, x, reg=1e-6)
    online = OnlineEM(start, 1.0, reg=1e-6)
    online.step(x)
    assert np.allclose(online.model.params, batch.params, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("covs,match", [
    ([[[-1.0]]], "positive definite"),
    ([[[1.0, 1.0], [1.0, 1.0]]], "positive definite"),
    ([[[1.0, 0.5], [0.0, 1.0]]], "symmetric"),
])
def test_bad_covariances(covs, match):
    D = np.shape(covs)[1]
    with pytest.raises(ValueError, match=match):
        MoG([1.0], np.zeros((1, D)), covs)


def test_bad_weights_and_shapes():
    with pytest.raises(ValueError, match="weights: expected non-negative values summing to 1"):
        MoG([0.6, 0.6], [[0.0], [1.0]], [[[1.0]], [[1.0]]])
    with pytest.raises(ValueError, match="weights"):
        MoG([1.5, -0.5], [[0.0], [1.0]], [[[1.0]], [[1.0]]])
    with pytest.raises(ValueError, match="covs: expected shape"):
        MoG([1.0], [[0.0, 0.0]], [[[1.0]]])
    with pytest.raises(ValueError, match="x: expected shape"):
        MoG.from_1d([1.0], [0.0], [1.0]).log_density(np.zeros((3, 2)))


def test_step_size_outside_unit_interval_and_empty_minibatch(rng):
    model = MoG.from_1d([0.5, 0.5], [-1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"schedule: expected a value in \[0.0, 1.0\], received 1.5"):
        OnlineEM(model, 1.5)
    online = OnlineEM(model, lambda t: 1.2)
    before = online.model.params.copy()
    with pytest.raises(ValueError, match=r"step size schedule\(0\): expected a value in \[0.0, 1.0\], received 1.2"):
        online.step(rng.normal(size=(10, 1)))
    assert np.array_equal(online.model.params, before) and online.t == 0
    with pytest.raises(ValueError, match="non-empty"):
        OnlineEM(model, 0.5).step(np.zeros((0, 1)))
    with pytest.raises(ValueError, match="non-empty"):
        fit_em(np.zeros((0, 1)), 2, rng)
    with pytest.raises(ValueError, match="n_components"):
        fit_em(np.zeros((1, 1)), 2, rng)
    with pytest.raises(ValueError, match="reg"):
        fit_em(rng.normal(size=(10, 1)), 2, rng, reg=-1.0)


# ------------------------------------------------------------------ validation gaps (issue 11)
def _exact_1d(weights, means, variances, x, err=0.0):
    """log p(x) and r_k(x) of a 1-d mixture in 60-digit arithmetic (the inputs' float64 values taken exactly),
    and the range of r_k(x) when every log term may be off by up to ``err`` (r_low, r_high)."""
    import mpmath

    with mpmath.workdps(60):
        terms = [mpmath.log(mpmath.mpf(w)) - (mpmath.mpf(x) - mpmath.mpf(m)) ** 2 / (2 * mpmath.mpf(v))
                 - mpmath.log(2 * mpmath.pi * mpmath.mpf(v)) / 2 for w, m, v in zip(weights, means, variances)]
        top = max(terms)
        log_p = top + mpmath.log(sum(mpmath.exp(t - top) for t in terms))
        r = [float(mpmath.exp(t - log_p)) for t in terms]
        e = mpmath.mpf(err)

        def r_k(k, sign):             # term k moved by sign * err, every other term the opposite way
            moved = [t + (sign if j == k else -sign) * e for j, t in enumerate(terms)]
            top_m = max(moved)
            return float(mpmath.exp(moved[k] - top_m) / sum(mpmath.exp(t - top_m) for t in moved))
        return float(log_p), r, [r_k(k, -1) for k in range(len(terms))], [r_k(k, 1) for k in range(len(terms))]


@given(weights=st.lists(st.integers(1, 9), min_size=1, max_size=4),
       grid=st.lists(st.integers(-20, 20), min_size=4, max_size=4, unique=True),
       variances=st.lists(st.floats(0.5, 10.0), min_size=4, max_size=4),
       sign=st.sampled_from([-1.0, 1.0]), exponent=st.floats(0.0, 150.0))
def test_density_and_responsibilities_far_from_every_component_match_an_exact_reference(weights, grid, variances,
                                                                                        sign, exponent):
    """Log space and log-sum-exp keep log p(x) exact from the components out to |x| = 1e150, and r(x) a
    probability vector everywhere, equal to the exact one within what float64 can resolve: the log terms carry
    rounding errors of about ulp(x) |x| / sigma^2, so where two components are that close to a tie r is decided
    by rounding in any float64 computation (at x = -1e16, x - 0 and x - 0.5 are the same float)."""
    K = len(weights)
    w = np.array(weights, float) / sum(weights)
    means, var = 0.5 * np.array(grid[:K], float), np.array(variances[:K])
    model = MoG.from_1d(w, means, var)
    x = sign * 10.0 ** exponent
    log_p = model.log_density([[x]])[0]
    r, log_p_r = model.responsibilities([[x]])
    # float64 computes each log term to within err (the rounding of (x - mu)^2 / 2 sigma^2): r must lie in the
    # exact range that such errors allow, tight for one-hot responsibilities however far x is, wide only near
    # a tie that float64 cannot resolve
    err = 4.0 * np.spacing(abs(x)) * (abs(x) + np.ptp(means)) / var[:K].min() + 4e-16 * (x * x / var[:K].min() + 10)
    want_log_p, want_r, r_low, r_high = _exact_1d(w, means, var, x, err)
    assert np.isfinite(log_p) and log_p_r[0] == log_p
    assert log_p == pytest.approx(want_log_p, rel=1e-12, abs=1e-12)
    assert np.all(np.isfinite(r)) and np.all(r >= 0) and r.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(r[0] >= np.array(r_low) - 1e-12) and np.all(r[0] <= np.array(r_high) + 1e-12), (r[0], r_low, r_high)
    if err < 1e-10:
        np.testing.assert_allclose(r[0], want_r, rtol=0, atol=1e-9)


def test_responsibilities_of_a_tie_far_away_still_sum_to_one():
    """At x = -1e16 the two log terms are equal floats near -5e31, and log p = term + log 2 rounds to the term:
    exp(term - log p) gave r = (1, 1). The softmax form gives (1/2, 1/2), the answer for the equal floats."""
    model = MoG.from_1d([0.5, 0.5], [0.0, 0.5], [1.0, 1.0])
    r, log_p = model.responsibilities([[-1e16], [3e7]])
    np.testing.assert_array_equal(r[0], [0.5, 0.5])
    assert r[1].sum() == pytest.approx(1.0, abs=1e-15) and np.all(np.isfinite(log_p))


def test_a_point_beyond_the_float64_range_of_log_densities_is_a_clear_error():
    model = _random_mog(np.random.default_rng(3), 2, 2)
    far = np.array([[0.0, 0.0], [1e200, 0.0]])
    for method in (model.log_density, model.responsibilities, model.component_log_densities):
        with pytest.raises(ValueError, match=r"x: expected points whose squared Mahalanobis distance .* row 1"):
            method(far)
    with pytest.raises(ValueError, match=r"x: expected values of magnitude at most 1e\+150 .* received 1e\+200"):
        fit_em(far, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"x: expected values of magnitude at most"):
        OnlineEM(model, 0.5).step(far)


def test_complex_arrays_are_refused_everywhere():
    rng = np.random.default_rng(0)
    model = MoG.from_1d([0.5, 0.5], [-1.0, 1.0], [1.0, 1.0])
    x = rng.normal(size=(6, 1)) + 0j
    with pytest.raises(TypeError, match="weights: expected real numbers, received a complex array"):
        MoG([0.5 + 0j, 0.5], [[0.0], [1.0]], [[[1.0]], [[1.0]]])
    with pytest.raises(TypeError, match="means: expected real numbers, received a complex array"):
        MoG.from_1d([1.0], [1j], [1.0])
    for call in (model.log_density, model.responsibilities, lambda a: fit_em(a, 2, rng),
                 lambda a: em_step(model, a), lambda a: OnlineEM(model, 0.5).step(a)):
        with pytest.raises(TypeError, match="x: expected real numbers, received a complex array"):
            call(x)
    with pytest.raises(TypeError, match="r: expected real numbers"):
        from kd_ref.mog import statistics
        statistics(x.real, np.full((6, 2), 0.5) + 0j)


def _online_state(online):
    return (online.model.params.copy(), online.stats.s0.copy(), online.stats.s1.copy(), online.stats.s2.copy(),
            online.t)


def _assert_same_state(a, b):
    for u, v in zip(a[:4], b[:4]):
        assert np.array_equal(u, v)
    assert a[4] == b[4]


def test_a_failed_online_step_leaves_the_model_statistics_and_step_count_as_they_were():
    rng = np.random.default_rng(1)
    data = np.concatenate([rng.normal(-2, 1, size=(50, 1)), rng.normal(2, 1, size=(50, 1))])

    def schedule(t):
        if t == 3:
            raise RuntimeError("schedule failed")
        return 0.5 if t < 4 else 2.0

    online = OnlineEM(MoG.from_1d([0.5, 0.5], [-1.0, 1.0], [1.0, 1.0]), schedule, reg=0.0)
    for _ in range(3):
        online.step(data[rng.choice(100, 10)])
    before = _online_state(online)
    with pytest.raises(RuntimeError, match="schedule failed"):
        online.step(data[:10])
    _assert_same_state(_online_state(online), before)
    for bad, error, match in ((np.full((4, 1), np.nan), ValueError, "x: expected finite values"),
                              (data[:4] + 1j, TypeError, "x: expected real numbers"),
                              (np.zeros((4, 2)), ValueError, "x: expected points of dimension 1")):
        with pytest.raises(error, match=match):
            online.step(bad)
        _assert_same_state(_online_state(online), before)
    # a minibatch at a single point with eta = 1 would collapse both components (reg = 0): singular, refused
    collapse = OnlineEM(MoG.from_1d([0.5, 0.5], [-1.0, 1.0], [1.0, 1.0]), 1.0, reg=0.0)
    start = _online_state(collapse)
    with pytest.raises(ValueError, match="positive definite"):
        collapse.step(np.zeros((5, 1)))
    _assert_same_state(_online_state(collapse), start)


def test_options_and_statistics_are_checked_before_anything_is_drawn():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 1))
    state = rng.bit_generator.state
    for kwargs, error, match in ((dict(progress="yes"), TypeError, "progress: expected True or False"),
                                 (dict(init="model"), TypeError, "init: expected a kd_ref.mog.MoG, received str"),
                                 (dict(n_restarts=0), ValueError, "n_restarts"),
                                 (dict(tol=np.nan), ValueError, "tol")):
        with pytest.raises(error, match=match):
            fit_em(x, 2, rng, **kwargs)
    with pytest.raises(TypeError, match="n_components: expected an integer >= 1, received 2.0"):
        fit_em(x, 2.0, rng)
    assert rng.bit_generator.state == state
    with pytest.raises(TypeError, match="schedule: expected a callable"):
        OnlineEM(MoG.from_1d([1.0], [0.0], [1.0]), True)
    with pytest.raises(TypeError, match="model: expected a kd_ref.mog.MoG, received dict"):
        em_step({}, x)
    with pytest.raises(TypeError, match="reg: expected a real number"):
        initial_model(x, 2, rng, reg="0")
    from kd_ref.mog import statistics
    with pytest.raises(ValueError, match="r: expected non-negative responsibilities"):
        statistics(x, np.full((20, 2), -0.5))
    good = statistics(x, np.full((20, 2), 0.5))
    with pytest.raises(TypeError, match="stats: expected a kd_ref.mog.Statistics, received tuple"):
        m_step((good.s0, good.s1, good.s2))
    with pytest.raises(ValueError, match=r"stats.s2: expected shape \(2, 1, 1\)"):
        m_step(Statistics(good.s0, good.s1, np.ones((2, 2, 2))))
    with pytest.raises(ValueError, match="stats.s1: expected finite values"):
        m_step(Statistics(good.s0, np.full((2, 1), np.inf), good.s2))
    with pytest.raises(ValueError, match="previous: expected None or a MoG of 2 components in 1 dimensions"):
        m_step(good, previous=MoG.from_1d([1.0], [0.0], [1.0]))
    with pytest.raises(ValueError, match=r"eta: expected a value in \[0.0, 1.0\], received -0.1"):
        good.mix(good, -0.1)
    with pytest.raises(ValueError, match="other: expected statistics of 2 components in 1 dimensions, received 1"):
        good.mix(statistics(x, np.ones((20, 1))), 0.5)
