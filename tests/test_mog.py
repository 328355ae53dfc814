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
