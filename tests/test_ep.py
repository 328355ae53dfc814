"""EP for Bayesian logistic regression (kd_ref.ep, 3.46-3.48)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate, special

from kd_ref import gradcheck

from kd_ref.ep import (LAMBDA, ep_logistic_regression, logistic_gaussian_integral, mackay_integral,
                       tilted_moments)


def _quad(f, m, v):
    s = np.sqrt(v)
    return integrate.quad(lambda a: f(a) * np.exp(-(a - m) ** 2 / (2 * v)) / np.sqrt(2 * np.pi * v),
                          m - 14 * s, m + 14 * s, points=sorted({0.0, m}), limit=1000,
                          epsabs=1e-14, epsrel=1e-13)[0]


def _tiny_data():
    x = np.array([[1.0, 0.3], [0.5, -1.2], [-0.8, 0.4], [1.5, 1.0], [-1.1, -0.6], [0.2, 0.9], [-0.4, -1.5]])
    t = np.array([1, 1, 0, 1, 0, 0, 1.0])
    return x, t


def test_ep_matches_a_numerically_integrated_posterior():
    """2-D posterior on a fine grid (true logistic likelihood) vs EP's Gaussian with MacKay's approximation inside."""
    x, t = _tiny_data()
    prior_var = 1.0
    post = ep_logistic_regression(x, t, prior_var)
    assert post.converged
    g = np.linspace(-7, 7, 561)
    W = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2)
    z = (2 * t - 1)[:, None] * x
    log_p = special.log_expit(W @ z.T).sum(axis=1) - 0.5 * np.sum(W**2, axis=1) / prior_var
    p = np.exp(log_p - log_p.max())
    p /= p.sum()
    mean = p @ W
    cov = (W - mean).T @ ((W - mean) * p[:, None])
    # EP's Gaussian differs from the true (non-Gaussian) posterior, and MacKay's approximation adds a little
    assert np.allclose(post.mean, mean, atol=0.03), (post.mean, mean)
    assert np.linalg.norm(post.cov - cov) / np.linalg.norm(cov) < 0.03, (post.cov, cov)
    # control: the prior alone is far from it
    assert np.linalg.norm(np.eye(2) - cov) / np.linalg.norm(cov) > 0.2


@pytest.mark.parametrize("m,v", [(0.3, 0.5), (-2.0, 4.0), (3.0, 30.0), (-8.0, 2.0)])
def test_tilted_moments_are_exact_for_the_probit_stand_in(m, v):
    phi = lambda s: special.ndtr(LAMBDA * s)  # noqa: E731
    Z = _quad(phi, m, v)
    mean = _quad(lambda s: s * phi(s), m, v) / Z
    var = _quad(lambda s: s * s * phi(s), m, v) / Z - mean**2
    got_mean, got_var, log_Z = tilted_moments(np.array([m]), np.array([v]))
    assert np.isclose(np.exp(log_Z[0]), Z, rtol=1e-9)
    assert np.isclose(got_mean[0], mean, rtol=1e-8, atol=1e-10)
    assert np.isclose(got_var[0], var, rtol=1e-7)


@given(m=st.floats(-12.0, 12.0), v=st.floats(0.01, 50.0))
def test_tilted_moments_are_derivatives_of_log_z(m, v):
    """For Z(m) = int Phi(lambda s) N(s; m, v) ds: mean = m + v d log Z/dm, var = v + v^2 d^2 log Z/dm^2."""
    def log_z(mm):
        return tilted_moments(np.atleast_1d(mm), np.array([v]))[2][0]

    def d_log_z(mm):
        return (tilted_moments(np.atleast_1d(mm), np.array([v]))[0] - mm) / v

    def d2_log_z(mm):
        return (tilted_moments(np.atleast_1d(mm), np.array([v]))[1] - v) / v**2

    x = np.array([m])
    first = gradcheck.check_gradient(log_z, d_log_z, x)
    second = gradcheck.check_gradient(lambda mm: d_log_z(mm)[0], d2_log_z, x)
    # for large m, log Z ~ -1e-6 and its differences lose relative precision: then the absolute error counts
    assert first.passed(1e-6) or first.abs_error < 1e-10, str(first)
    assert second.passed(1e-5) or second.abs_error < 1e-9, str(second)


def test_an_all_zero_input_leaves_the_posterior_unchanged():
    """sigma(w^T 0) = 1/2 whatever w: the point carries no information (and must not give 1/0 in EP)."""
    x, t = _tiny_data()
    post = ep_logistic_regression(x, t, 1.0)
    padded = ep_logistic_regression(np.vstack([x, np.zeros((2, 2))]), np.concatenate([t, [0, 1]]), 1.0)
    assert padded.converged
    assert np.allclose(padded.mean, post.mean, rtol=1e-12) and np.allclose(padded.cov, post.cov, rtol=1e-12)
    assert np.all(padded.tau[-2:] == 0) and np.all(padded.nu[-2:] == 0)
    prior_only = ep_logistic_regression(np.zeros((3, 2)), np.array([0, 1, 1]), 2.0)
    assert prior_only.converged and np.allclose(prior_only.cov, 2.0 * np.eye(2)) and not np.any(prior_only.mean)


def test_predictive_quadrature_is_accurate_for_narrow_and_broad_gaussians():
    m = np.array([-30, -3, -0.5, 0, 1, 4, 20, -1, 2, 0.7, 5, -10.0])
    v = np.array([0.01, 0.5, 3.9, 4.1, 10, 100, 1000, 1e5, 0.0, 1.0, 25, 400])
    ref = np.array([_quad(special.expit, a, b) if b > 0 else special.expit(a) for a, b in zip(m, v)])
    assert np.max(np.abs(logistic_gaussian_integral(m, v) - ref)) < 1e-9
    assert np.max(np.abs(mackay_integral(m, v) - ref)) < 0.02       # (3.48) is a close approximation
    assert np.max(np.abs(mackay_integral(m, v) - ref)) > 1e-5       # ... but not exact


def test_predictions_are_symmetric_and_in_the_unit_interval():
    x, t = _tiny_data()
    post = ep_logistic_regression(x, t, 100.0)
    q = np.random.default_rng(0).normal(size=(50, 2)) * 5
    p = post.predict_proba(q)
    assert np.all((p >= 0) & (p <= 1))
    assert np.allclose(p + post.predict_proba(-q), 1.0, atol=1e-9)
    assert np.allclose(p, post.predict_proba_mackay(q), atol=0.02)


def test_bad_input():
    x, t = _tiny_data()
    with pytest.raises(ValueError, match="t: expected binary values"):
        ep_logistic_regression(x, t * 2, 1.0)
    with pytest.raises(ValueError, match="prior_var"):
        ep_logistic_regression(x, t, -1.0)
    with pytest.raises(ValueError, match="damping"):
        ep_logistic_regression(x, t, 1.0, damping=0.0)
    with pytest.raises(ValueError, match="x: expected at least one data point"):
        ep_logistic_regression(np.zeros((0, 2)), np.zeros(0), 1.0)
    with pytest.raises(ValueError, match="var: expected non-negative"):
        logistic_gaussian_integral([0.0], [-1.0])


def test_one_site_ep_is_exact_moment_matching():
    """With a single data point the EP posterior is exactly the Gaussian with the mean and covariance of
    prior x Phi(lambda z^T w) (the site is refitted against the prior alone). The moments of that 2-D
    distribution follow from 1-D integrals along z, computed here by adaptive quadrature."""
    x, t, prior_var = np.array([[1.2, -0.7]]), np.array([0.0]), 2.0
    post = ep_logistic_regression(x, t, prior_var, damping=1.0, tol=1e-13)
    assert post.converged and post.n_iter <= 3
    z = -x[0]                                            # t = 0 flips the sign
    v = prior_var * z @ z                                # prior variance of s = z^T w
    phi = lambda s: special.ndtr(LAMBDA * s)  # noqa: E731
    Z = _quad(phi, 0.0, v)
    m_s = _quad(lambda s: s * phi(s), 0.0, v) / Z
    v_s = _quad(lambda s: s * s * phi(s), 0.0, v) / Z - m_s**2
    # w given s is Gaussian: E[w | s] = prior_var z s / v, Cov[w | s] = prior_var (I - prior_var z z^T / v)
    mean = prior_var * z * m_s / v
    cov = prior_var * (np.eye(2) - prior_var * np.outer(z, z) / v) + np.outer(z, z) * (prior_var / v) ** 2 * v_s
    assert np.allclose(post.mean, mean, rtol=1e-9, atol=1e-12), (post.mean, mean)
    assert np.allclose(post.cov, cov, rtol=1e-9, atol=1e-12), (post.cov, cov)


# ------------------------------------------------------------------ validation gaps (issue 11)
def _tilted_exact(m, v):
    """Mean, variance and log Z of Phi(lambda s) N(s; m, v) / Z in arbitrary precision (3.48's probit form).

    The working precision grows with |m|: exp(-u^2 / 2) needs the digits of u^2 on top of the result's, and
    u + r cancels about log10 u^2 more (80 digits alone go wrong by 1e-7 at m = -1e19).
    """
    import mpmath

    with mpmath.workdps(60 + 5 * max(0, int(np.log10(abs(m) + 1.0)))):
        m, v, lam = mpmath.mpf(m), mpmath.mpf(v), mpmath.sqrt(mpmath.pi / 8)
        scale = mpmath.sqrt(1 + lam**2 * v)
        u = lam * m / scale
        Z = mpmath.ncdf(u)
        r = mpmath.npdf(u) / Z
        log_z = mpmath.log1p(-mpmath.ncdf(-u)) if u > 0 else mpmath.log(Z)   # 1 - 1e-219 would round to 1
        return (float(m + v * lam * r / scale), float(v - v * v * lam**2 * r * (u + r) / scale**2), float(log_z))


@given(sign=st.sampled_from([-1.0, 1.0]), m_exp=st.floats(-3.0, 100.0), v_exp=st.floats(-6.0, 12.0))
def test_tilted_moments_stay_exact_for_cavities_deep_in_the_tail(sign, m_exp, v_exp):
    """Far in the tail (u = lambda m / scale << 0) m and the correction nearly cancel, and so do v and the
    variance reduction; the Mills-ratio continued fraction keeps all three to ~1e-15 (the direct formulas of
    the module notes lose every digit by m = -1e5 and return negative variances)."""
    m, v = sign * 10.0**m_exp, 10.0**v_exp
    mean, var, log_z = (a[0] for a in tilted_moments(m, v))
    want_mean, want_var, want_log_z = _tilted_exact(m, v)
    assert mean == pytest.approx(want_mean, rel=1e-13, abs=1e-13 * (abs(m) + np.sqrt(v)))
    assert var == pytest.approx(want_var, rel=1e-13) and var > 0
    # for u >> 0, log Phi(u) ~ -N(u) / u moves by a relative u^2 du / u: the rounding of u itself (a few ulps)
    # costs ~u^2 * 1e-16 relative in any float64 computation
    u = np.sqrt(np.pi / 8) * m / np.sqrt(1 + np.pi / 8 * v)
    assert log_z == pytest.approx(want_log_z, rel=1e-13 + 1e-15 * max(u, 0.0) ** 2, abs=1e-300)


def test_integrals_and_tilted_moments_check_their_inputs():
    with pytest.raises(TypeError, match="mean: expected real numbers, received a complex array"):
        mackay_integral(np.array([1j]), [1.0])
    with pytest.raises(TypeError, match="var: expected real numbers"):
        logistic_gaussian_integral([0.0], [1.0 + 0j])
    with pytest.raises(TypeError, match="v: expected real numbers"):
        tilted_moments([0.0], [1.0 + 2j])
    with pytest.raises(ValueError, match="var: expected non-negative variances, received minimum -1.0"):
        mackay_integral([0.0], [-1.0])
    with pytest.raises(ValueError, match="v: expected positive variances, received minimum 0.0"):
        tilted_moments([0.0, 1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match=r"v: expected the shape of mean \(2,\) \(or a scalar\), received shape \(3,\)"):
        tilted_moments([0.0, 1.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="mean: expected finite values"):
        mackay_integral([np.nan], [1.0])
    with pytest.raises(ValueError, match=r"m: expected cavity means whose log Z fits in float64, received m = -1e\+200"):
        tilted_moments([-1e200], [1.0])
    mean, var, log_z = tilted_moments(-3.0, 2.0)                 # scalars broadcast to shape (1,)
    assert mean.shape == var.shape == log_z.shape == (1,)
    np.testing.assert_array_equal(mackay_integral(0.0, [1.0, 4.0]), [0.5, 0.5])


def test_complex_inputs_are_refused_by_ep():
    x, t = _tiny_data()
    with pytest.raises(TypeError, match="x: expected real numbers, received a complex array"):
        ep_logistic_regression(x + 0j, t, 1.0)
    with pytest.raises(TypeError, match="t: expected real numbers, received a complex array"):
        ep_logistic_regression(x, t + 0j, 1.0)
    post = ep_logistic_regression(x, t, 1.0)
    for method in (post.activation_moments, post.predict_proba, post.predict_proba_mackay):
        with pytest.raises(TypeError, match="x: expected real numbers, received a complex array"):
            method(x[:2] * 1j)
