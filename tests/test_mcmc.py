"""Slice sampler (kd_ref.mcmc): targets matched by moments and KS tests, invariance, controls, bad input.

Tolerances: thinned chains are treated as roughly independent, so moment bounds
use 5 standard errors of an i.i.d. sample of the same size, and KS tests require
p > 1e-3; the fixed seeds make every outcome deterministic.
"""
import numpy as np
import pytest
from scipy import stats

from kd_ref.mcmc import SliceSampler, slice_sample


def _std_normal(x):
    return -0.5 * float(x @ x)


@pytest.fixture(scope="module")
def normal_samples():
    return slice_sample(_std_normal, np.zeros(1), 2500, np.random.default_rng(0), burn_in=200, thin=2)[:, 0]


def test_standard_normal_moments_and_ks(normal_samples):
    x = normal_samples
    n = len(x)
    assert x.shape == (2500,)
    assert abs(x.mean()) < 5 / np.sqrt(n)
    assert abs(x.var() - 1.0) < 5 * np.sqrt(2.0 / n)
    assert stats.kstest(x, "norm").pvalue > 1e-3


def test_control_ks_against_the_wrong_target_rejects(normal_samples):
    """The same samples must fail a KS test against a shifted normal: the test has power."""
    x = normal_samples
    assert stats.kstest(x, stats.norm(loc=0.2).cdf).pvalue < 1e-6
    assert stats.kstest(x, stats.norm(scale=1.3).cdf).pvalue < 1e-6


def test_gamma_with_minus_infinity_outside_the_support():
    rng = np.random.default_rng(1)
    shape, scale = 3.0, 2.0

    def log_gamma(x):
        return -np.inf if x[0] <= 0 else (shape - 1) * np.log(x[0]) - x[0] / scale

    n = 2500
    x = slice_sample(log_gamma, np.ones(1), n, rng, burn_in=200, thin=2)[:, 0]
    assert np.all(x > 0)
    target = stats.gamma(shape, scale=scale)
    assert abs(x.mean() - target.mean()) < 5 * target.std() / np.sqrt(n)
    assert stats.kstest(x, target.cdf).pvalue > 1e-3


def test_well_separated_bimodal_mixture_with_bounded_stepping_out():
    """0.3 N(-5, 1) + 0.7 N(5, 1): a wide fixed bracket lets single updates jump between the modes."""
    rng = np.random.default_rng(2)
    w, m = np.array([0.3, 0.7]), np.array([-5.0, 5.0])

    def log_mix(x):
        return np.logaddexp.reduce(np.log(w) - 0.5 * (x[:, :1] - m) ** 2, axis=1)

    n = 4000
    x = slice_sample(log_mix, np.zeros((20, 1)), n // 20, rng, burn_in=100, thin=5, width=25.0,
                     max_steps_out=4, vectorized=True, adapt=False).reshape(-1)
    frac = np.mean(x > 0)
    assert abs(frac - 0.7) < 5 * np.sqrt(0.21 / n)
    cdf = lambda v: w[0] * stats.norm.cdf(v, m[0]) + w[1] * stats.norm.cdf(v, m[1])  # noqa: E731
    assert stats.kstest(x, cdf).pvalue > 1e-3


def test_correlated_gaussian_with_vectorised_chains():
    rng = np.random.default_rng(3)
    cov = np.array([[1.0, 0.9], [0.9, 1.0]])
    prec = np.linalg.inv(cov)

    def log_gauss(X):
        return -0.5 * np.einsum("nd,de,ne->n", X, prec, X)

    sampler = SliceSampler(log_gauss, rng.normal(size=(40, 2)), rng, vectorized=True, thin=4)
    sampler.burn_in(100)
    x = sampler.sample(100)
    assert x.shape == (100, 40, 2)
    x = x.reshape(-1, 2)
    n = len(x)
    assert np.all(np.abs(x.mean(axis=0)) < 5 / np.sqrt(n) * 3)   # factor 3: residual autocorrelation
    assert np.allclose(np.cov(x, rowvar=False), cov, atol=0.1)
    # the projection on the long axis is N(0, 1.9)
    assert stats.kstest(x @ np.array([1.0, 1.0]) / np.sqrt(2), stats.norm(scale=np.sqrt(1.9)).cdf).pvalue > 1e-3


def test_target_left_invariant_when_started_from_it():
    """Exact draws from N(0, diag(1, 4)) stay exactly distributed after two sweeps (2,000 independent chains)."""
    rng = np.random.default_rng(4)
    scales = np.array([1.0, 2.0])
    x0 = rng.normal(size=(2000, 2)) * scales
    sampler = SliceSampler(lambda X: -0.5 * np.sum((X / scales) ** 2, axis=1), x0, rng, vectorized=True)
    after = sampler.sample(2)[-1]
    assert not np.allclose(after, x0)
    for d in range(2):
        assert stats.kstest(after[:, d], stats.norm(scale=scales[d]).cdf).pvalue > 1e-3
    # control: the same test rejects a wrong scale
    assert stats.kstest(after[:, 1], stats.norm(scale=1.0).cdf).pvalue < 1e-6


def test_vectorised_and_per_point_densities_agree_in_distribution_and_count():
    rng = np.random.default_rng(5)
    s = SliceSampler(_std_normal, np.zeros((3, 2)), rng)
    s.burn_in(5)
    assert s.sample(4).shape == (4, 3, 2)
    assert s.state.sweeps == 9 and s.state.n_evals == s.n_evals > 0


def test_width_adapts_only_during_burn_in():
    rng = np.random.default_rng(6)
    s = SliceSampler(lambda x: -0.5 * float(x @ x) / 100.0, np.zeros(1), rng, width=0.1)
    s.burn_in(200)
    adapted = s.width.copy()
    assert 5.0 < adapted[0] < 60.0     # a few standard deviations (sd 10)
    s.sample(50)
    assert np.array_equal(s.width, adapted)
    s.burn_in(10, adapt=False)
    assert np.array_equal(s.width, adapted)


def test_same_seed_same_chain_and_thinning_counts_sweeps():
    a = slice_sample(_std_normal, np.zeros(2), 20, np.random.default_rng(7), burn_in=5, thin=3)
    b = slice_sample(_std_normal, np.zeros(2), 20, np.random.default_rng(7), burn_in=5, thin=3)
    assert np.array_equal(a, b)
    s = SliceSampler(_std_normal, np.zeros(2), np.random.default_rng(7), thin=3)
    s.burn_in(5)
    s.sample(20)
    assert s.sweeps == 5 + 60


def test_next_batch_streams_minibatches_across_chains():
    rng = np.random.default_rng(8)
    s = SliceSampler(lambda X: -0.5 * np.sum(X**2, axis=1), np.zeros((3, 2)), rng, vectorized=True)
    first, second = s.next_batch(5), s.next_batch(5)
    assert first.shape == second.shape == (5, 2)
    assert s.sweeps == 4                      # 10 rows from 3 chains: 4 sweeps, 2 rows kept for later
    assert s.next_batch(2).shape == (2, 2) and s.sweeps == 4
    assert not np.allclose(first, second)


def test_keep_chains_continues_the_chosen_chain():
    rng = np.random.default_rng(9)
    s = SliceSampler(lambda X: -0.5 * np.sum(X**2, axis=1), np.zeros((4, 2)), rng, vectorized=True)
    s.burn_in(10)
    x_best = s.x[2].copy()
    s.keep_chains(2)
    assert s.n_chains == 1 and np.array_equal(s.x[0], x_best)
    assert s.sample(3).shape == (3, 2)
    with pytest.raises(ValueError, match="index"):
        s.keep_chains(5)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_log_density_is_a_clear_error(bad):
    rng = np.random.default_rng(10)

    def f(x):
        return bad if abs(x[0]) > 1.5 else -0.5 * x[0] ** 2

    s = SliceSampler(f, np.zeros(1), rng, width=5.0)
    with pytest.raises(ValueError, match=r"log_density: expected finite values or -inf, received (nan|inf)"):
        s.burn_in(50)


def test_bad_arguments():
    rng = np.random.default_rng(11)
    with pytest.raises(ValueError, match="x0: expected starting points with a finite log-density"):
        SliceSampler(lambda x: -np.inf, np.zeros(1), rng)
    with pytest.raises(ValueError, match=r"log_density: expected an array of shape \(2,\)"):
        SliceSampler(lambda X: np.zeros(5), np.zeros((2, 3)), rng, vectorized=True)
    with pytest.raises(ValueError, match="x0: expected shape"):
        SliceSampler(_std_normal, np.zeros((2, 2, 2)), rng)
    with pytest.raises(ValueError, match="width"):
        SliceSampler(_std_normal, np.zeros(2), rng, width=[1.0, -1.0])
    with pytest.raises(TypeError, match="rng"):
        SliceSampler(_std_normal, np.zeros(2), 0)
    with pytest.raises(ValueError, match="max_steps_out"):
        SliceSampler(_std_normal, np.zeros(2), rng, max_steps_out=0)
    with pytest.raises(ValueError, match="normalisable"):
        SliceSampler(lambda x: 0.0, np.zeros(1), rng).burn_in(1)
