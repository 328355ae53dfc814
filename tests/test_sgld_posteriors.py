"""SGLD against exact posteriors (S3.G (e), (f)): Welling & Teh's two-mode example against grid
quadrature, and a 2-2-2 Bayesian neural network's predictive against slice sampling.

Tolerances come from the chains themselves (batch-means standard errors); fixed seeds.
"""
import numpy as np
from scipy import special

from kd_ref.distill.predictive import toy_logistic_data
from kd_ref.mcmc import SGLD, SliceSampler, batch_means_se, mlp_log_posterior_gradient
from kd_ref.mlp import MLP
from kd_ref.optim import PowerDecay


# ------------------------------------------------------------------ (e) Welling & Teh (2011), section 5.1
class _TwoModes:
    """theta_1 ~ N(0, 10), theta_2 ~ N(0, 1), x ~ 1/2 N(theta_1, 2) + 1/2 N(theta_1 + theta_2, 2), 100 points drawn
    at theta = (0, 1): the posterior has modes near (0, 1) and (1, -1)."""

    edges = (np.linspace(-1.5, 2.5, 5), np.linspace(-3.0, 3.0, 7))    # 4 x 6 bins holding the posterior

    def __init__(self, seed=0, n=100):
        rng = np.random.default_rng(seed)
        self.x = rng.normal(rng.integers(0, 2, n) * 1.0, np.sqrt(2.0))
        self.n = n

    def log_posterior(self, t1, t2):
        a = -(self.x - t1[..., None]) ** 2 / 4
        b = -(self.x - t1[..., None] - t2[..., None]) ** 2 / 4
        return -t1**2 / 20 - t2**2 / 2 + np.logaddexp(a, b).sum(-1)

    def bin_masses(self, per_bin=20):
        """Posterior mass of each bin by the midpoint rule on per_bin x per_bin points per bin, shape (4, 6)."""
        fine = [np.linspace(e[0], e[-1], (e.size - 1) * per_bin + 1) for e in self.edges]
        mids = [(f[1:] + f[:-1]) / 2 for f in fine]
        lp = self.log_posterior(*np.meshgrid(*mids, indexing="ij"))
        p = np.exp(lp - lp.max())
        return (p / p.sum()).reshape(4, per_bin, 6, per_bin).sum(axis=(1, 3))

    def minibatch_gradient(self, rng):
        """M = 1: theta -> grad log prior + N grad log p(x_i | theta), i uniform."""
        def grad(theta):
            x = self.x[rng.integers(0, self.n)]
            d0 = x - theta[0]
            d1 = d0 - theta[1]
            w = special.expit((d0**2 - d1**2) / 4)                     # responsibility of the second component
            return np.array([-theta[0] / 10 + self.n * ((1 - w) * d0 + w * d1) / 2,
                             -theta[1] + self.n * w * d1 / 2])
        return grad

    def histogram_check(self, samples, masses):
        """(TV to the bin masses, its bound 1/2 sum_k 4 SE_k from batch means of the bin indicators)."""
        i1 = np.digitize(samples[:, 0], self.edges[0]) - 1
        i2 = np.digitize(samples[:, 1], self.edges[1]) - 1
        inside = (i1 >= 0) & (i1 < 4) & (i2 >= 0) & (i2 < 6)
        k = np.where(inside, i1 * 6 + i2, 24)                           # bin 24: outside the grid
        indicators = np.zeros((samples.shape[0], 25))
        indicators[np.arange(samples.shape[0]), k] = 1.0
        se = np.array([batch_means_se(indicators[:, j])[1] for j in range(25)])
        freq = indicators.mean(axis=0)
        tv = 0.5 * (np.abs(freq[:24] - masses.ravel()).sum() + freq[24])
        return tv, 0.5 * 4 * se.sum()


def _modes_visited(samples):
    upper = samples[:, 1] > 0                                          # the two modes lie on either side of theta_2 = 0
    return 0.1 < upper.mean() < 0.9 and np.count_nonzero(upper[1:] != upper[:-1]) >= 20


def test_welling_teh_two_modes_against_grid_quadrature_and_noise_free_ascent_fails():
    model, n_steps = _TwoModes(), 150_000
    masses = model.bin_masses()
    b = n_steps / (100 ** (1 / 0.55) - 1)                            # 0.01 (b + t)^-0.55 / b^-0.55: 0.01 -> 1e-4
    schedule = PowerDecay(t0=b, kappa=0.55, scale=0.01 * b**0.55)
    sgld = SGLD(model.minibatch_gradient(np.random.default_rng(1)), np.zeros(2), np.random.default_rng(2), schedule,
                burn_in=n_steps // 10)
    samples = sgld.next_batch(n_steps - n_steps // 10)
    assert abs(schedule(n_steps) - 1e-4) < 1e-12
    tv, bound = model.histogram_check(samples, masses)
    assert tv < bound and _modes_visited(samples), (tv, bound)
    # control: the same stochastic gradients and steps without the injected N(0, eta) noise
    grad, theta, ascent = model.minibatch_gradient(np.random.default_rng(1)), np.zeros(2), []
    for t in range(n_steps):
        theta = theta + 0.5 * schedule(t) * grad(theta)
        if t >= n_steps // 10:
            ascent.append(theta)
    tv_c, bound_c = model.histogram_check(np.array(ascent), masses)
    assert not (tv_c < bound_c and _modes_visited(np.array(ascent))), (tv_c, bound_c)


# ------------------------------------------------------------------ (f) a 2-2-2 BNN against slice sampling
def _margins(theta, x):
    """a_1 - a_0 of a 2-2-2 ReLU / log-softmax MLP for parameter rows theta (K, 12) in MLP.params order, (K, N)."""
    h0 = np.maximum(theta[:, 0:1] * x[:, 0] + theta[:, 1:2] * x[:, 1] + theta[:, 4:5], 0)
    h1 = np.maximum(theta[:, 2:3] * x[:, 0] + theta[:, 3:4] * x[:, 1] + theta[:, 5:6], 0)
    a0 = theta[:, 6:7] * h0 + theta[:, 7:8] * h1 + theta[:, 10:11]
    a1 = theta[:, 8:9] * h0 + theta[:, 9:10] * h1 + theta[:, 11:12]
    return a1 - a0


def test_tiny_bnn_predictive_matches_slice_sampling():
    x, t = toy_logistic_data(np.random.default_rng(0), n_per_class=5)
    y, tau = t.astype(int), 1.0
    net = MLP([2, 2, 2], ["relu", "log_softmax"], np.random.default_rng(1))
    post = mlp_log_posterior_gradient(net, x, y, tau)                  # M = N: exact gradients
    sign = np.where(y == 1, 1.0, -1.0)

    def log_posterior_rows(theta):                                     # the same posterior, vectorised over rows
        return special.log_expit(_margins(theta, x) * sign).sum(axis=1) - 0.5 * tau * np.sum(theta**2, axis=1)

    assert np.isclose(log_posterior_rows(net.params[None])[0], post.log_posterior(net.params), rtol=1e-13)
    x_query = np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0], [3.0, -1.0], [0.5, -2.5]])
    reference = SliceSampler(log_posterior_rows, np.random.default_rng(2).normal(size=(4, 12)),
                             np.random.default_rng(3), vectorized=True)
    reference.burn_in(60)
    truth = special.expit(_margins(reference.sample(250).reshape(-1, 12), x_query))   # sweep-major rows
    start = net.params.copy()

    def agrees(factor):
        """SGLD's predictive at every query input within 4 combined SE of the slice sampler's."""
        net.params[...] = start
        sgld = SGLD(lambda theta: factor * post(theta), net.params, np.random.default_rng(4), 0.01, burn_in=1000,
                    thin=2)
        ours = special.expit(_margins(sgld.next_batch(5000), x_query))
        z = []
        for j in range(x_query.shape[0]):
            m_ref, se_ref = batch_means_se(truth[:, j], 20)
            m_sgld, se_sgld = batch_means_se(ours[:, j], 20)
            z.append(abs(m_sgld - m_ref) / np.hypot(se_ref, se_sgld))
        return max(z) <= 4, z

    ok, z = agrees(1.0)
    assert ok, z
    assert not agrees(2.0)[0]              # control: the update without the 1/2 samples about p(theta | D)^2
