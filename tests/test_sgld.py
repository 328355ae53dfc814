"""SGLD (S3.1-S3.3): its finite-step stationary law on Gaussian targets, the minibatch-noise formula,
decreasing steps, the N/M-scaled MLP gradient, resuming, chapter 3's online distillation on SGLD,
and bad input.

Statistical checks use fixed seeds and tolerances of 4 standard errors from batch means of the
chain itself; each comes with a control that must fail the same check (S3.G).
"""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

from kd_ref.distill import predictive
from kd_ref.gradcheck import check_gradient
from kd_ref.mcmc import (SGLD, SliceSampler, batch_means_se, mlp_log_posterior_gradient,
                         ula_stationary_covariance)
from kd_ref.mlp import MLP
from kd_ref.optim import LinearDecay, PowerDecay


#: independent copies of each Gaussian chain, run as one SGLD over their concatenation: the standard errors of
#: the time averages are then exact (spread over copies), with no assumption on the autocorrelation
COPIES = 400


def _moments_match(samples, mu, cov, copies=COPIES):
    """Every mean and (co)variance entry within 4 standard errors of N(mu, cov).

    ``samples`` (n, copies * d) holds ``copies`` independent chains of dimension d side by side; each
    statistic is averaged over time per copy, and the copies give its mean and standard error.
    """
    x = samples.reshape(samples.shape[0], copies, -1)
    d = x.shape[2]
    c = x - mu
    stats = [(x[..., i], mu[i]) for i in range(d)] + [(c[..., i] * c[..., j], cov[i, j])
                                                      for i in range(d) for j in range(i, d)]
    per_copy = [(s.mean(axis=0), expected) for s, expected in stats]
    return all(abs(v.mean() - e) <= 4 * v.std(ddof=1) / np.sqrt(copies) for v, e in per_copy)


def _gaussian_gradient(mu, precision, factor=1.0, copies=COPIES):
    """theta -> factor * grad log N(theta; mu, precision^-1) for each of the copies side by side; factor 2 is the
    update without the 1/2."""
    d = mu.size
    return lambda theta: -factor * ((theta.reshape(copies, d) - mu) @ precision.T).ravel()


# ----------------------------------------------------------------- S3.3 closed forms
def test_ula_covariance_scalar_closed_form_and_lyapunov_fixed_point():
    for lam, eta in [(1.0, 0.5), (3.0, 0.1), (0.2, 10.0)]:
        assert ula_stationary_covariance(lam, eta)[0, 0] == pytest.approx(1 / (lam * (1 - eta * lam / 4)), rel=1e-13)
    assert ula_stationary_covariance(1.0, 0.5)[0, 0] == pytest.approx(1.142857142857, rel=1e-12)
    rng = np.random.default_rng(0)
    b = rng.normal(size=(3, 3))
    lam, v = b @ b.T + np.eye(3), np.diag([0.5, 1.0, 2.0])
    eta = 1.0 / np.linalg.eigvalsh(lam)[-1]
    c = ula_stationary_covariance(lam, eta, v)
    a = np.eye(3) - eta / 2 * lam
    iterate = np.zeros((3, 3))
    for _ in range(2000):                                 # the recursion C <- A C A^T + Q, run to its fixed point
        iterate = a @ iterate @ a.T + eta * np.eye(3) + eta**2 / 4 * v
    np.testing.assert_allclose(c, iterate, rtol=1e-10)


def test_ula_covariance_refuses_unstable_or_invalid_settings():
    with pytest.raises(ValueError, match="eta"):
        ula_stationary_covariance(2.0, 2.0)               # eta * lambda = 4: no stationary law
    with pytest.raises(ValueError, match="precision"):
        ula_stationary_covariance(np.array([[1.0, 2.0], [2.0, 1.0]]), 0.1)
    with pytest.raises(ValueError, match="noise_covariance"):
        ula_stationary_covariance(1.0, 0.1, -1.0)


# ----------------------------------------------------------------- S3.G (a): finite-step law
def test_stationary_law_on_a_1d_gaussian_and_the_update_without_the_half_fails():
    mu, lam, eta = np.array([0.3]), np.array([[1.0]]), 0.5
    cov = ula_stationary_covariance(lam, eta)                              # 1.1429, not the target's 1
    runs = {}
    for factor in (1.0, 2.0):
        sgld = SGLD(_gaussian_gradient(mu, lam, factor), np.tile(mu, COPIES), np.random.default_rng(1), eta,
                    burn_in=100)
        runs[factor] = sgld.next_batch(2000)
    assert _moments_match(runs[1.0], mu, cov)
    assert not _moments_match(runs[1.0], mu, np.linalg.inv(lam))           # the O(eta) bias is resolved
    assert not _moments_match(runs[2.0], mu, cov)                          # control: theta += eta grad + N(0, eta)


def test_stationary_law_on_a_correlated_2d_gaussian_and_the_control_fails():
    mu = np.array([1.0, -2.0])
    sigma = np.array([[1.0, 0.8], [0.8, 1.0]])
    lam, eta = np.linalg.inv(sigma), 0.3
    cov = ula_stationary_covariance(lam, eta)
    runs = {}
    for factor in (1.0, 2.0):
        sgld = SGLD(_gaussian_gradient(mu, lam, factor), np.tile(mu, COPIES), np.random.default_rng(2), eta,
                    burn_in=200)
        runs[factor] = sgld.next_batch(2000)
    assert _moments_match(runs[1.0], mu, cov)
    assert not _moments_match(runs[2.0], mu, cov)


# ----------------------------------------------------------------- S3.G (b), (c): minibatch noise, decreasing steps
class _GaussianMean:
    """x_i ~ N(theta, 1), theta ~ N(0, 1/tau): the model whose per-example gradient noise does not depend on theta."""

    def __init__(self, n=20, tau=1.0, seed=0):
        self.x = np.random.default_rng(seed).normal(1.0, 1.0, n)
        self.n, self.tau = n, tau
        self.precision = tau + n                                # posterior N(sum x / (tau + N), 1 / (tau + N))
        self.mean = self.x.sum() / self.precision

    def minibatch_gradient(self, draw):
        """theta (copies,) -> -tau theta + (N/M) sum_{i in S_c} (x_i - theta_c), S = draw() of shape (copies, M)."""
        def grad(theta):
            idx = draw()
            return -self.tau * theta + self.n / idx.shape[1] * np.sum(self.x[idx] - theta[:, None], axis=1)
        return grad

    def with_replacement(self, m, rng, copies=COPIES):
        """M independent uniform indices per copy and step (the sampling S3.3's formula assumes)."""
        return self.minibatch_gradient(lambda: rng.integers(0, self.n, size=(copies, m)))

    def per_pass_shuffle(self, m, rng, copies=COPIES):
        """Passes without replacement, reshuffled after each pass, per copy (as MinibatchDrawer; M divides N)."""
        state = {"perm": None, "pos": self.n}

        def draw():
            if state["pos"] == self.n:
                state["perm"], state["pos"] = rng.permuted(np.tile(np.arange(self.n), (copies, 1)), axis=1), 0
            state["pos"] += m
            return state["perm"][:, state["pos"] - m:state["pos"]]
        return self.minibatch_gradient(draw)

    def noise_variance(self, m):
        """V of S3.3 for M indices drawn independently with replacement: N^2 / M * Var_i(x_i)."""
        return self.n**2 / m * self.x.var()


def test_minibatch_noise_formula_with_independent_draws_and_its_two_controls():
    model, m, eta = _GaussianMean(), 5, 0.02
    mu, start = np.array([model.mean]), np.full(COPIES, model.mean)
    chain = SGLD(model.with_replacement(m, np.random.default_rng(3)), start.copy(), np.random.default_rng(4), eta,
                 burn_in=200).next_batch(2000)
    predicted = ula_stationary_covariance(model.precision, eta, model.noise_variance(m))    # 0.0686
    assert _moments_match(chain, mu, predicted)
    assert not _moments_match(chain, mu, ula_stationary_covariance(model.precision, eta))   # control: V left out
    shuffled = SGLD(model.per_pass_shuffle(m, np.random.default_rng(3)), start.copy(), np.random.default_rng(4), eta,
                    burn_in=200).next_batch(2000)
    assert not _moments_match(shuffled, mu, predicted)                                     # control: per-pass shuffle


def test_decreasing_steps_recover_the_conjugate_posterior_and_a_constant_step_does_not():
    model, m, n_steps = _GaussianMean(), 5, 6000
    mu, exact = np.array([model.mean]), np.array([[1 / model.precision]])
    b = n_steps / (20 ** (1 / 0.55) - 1)                  # eta from 0.02 down to 0.001 (S3.2, gamma = 0.55)
    schedules = {"decay": PowerDecay(t0=b, kappa=0.55, scale=0.02 * b**0.55), "constant": 0.02}
    runs = {}
    for name, schedule in schedules.items():
        runs[name] = SGLD(model.with_replacement(m, np.random.default_rng(5)), np.full(COPIES, model.mean),
                          np.random.default_rng(6), schedule, burn_in=n_steps // 2).next_batch(n_steps // 2)
    assert schedules["decay"](n_steps) == pytest.approx(0.001)
    assert _moments_match(runs["decay"], mu, exact)
    assert not _moments_match(runs["constant"], mu, exact)


# ----------------------------------------------------------------- S3.G (d): the N/M-scaled gradient
def _tiny_classifier(seed, sizes=(2, 3, 3), n=6):
    rng = np.random.default_rng(seed)
    net = MLP(list(sizes), ["relu"] * (len(sizes) - 2) + ["log_softmax"], rng)
    net.params[...] = rng.normal(size=net.n_params)
    return net, rng.normal(size=(n, sizes[0])), rng.integers(0, sizes[-1], size=n)


def test_minibatch_gradient_averaged_over_all_minibatches_is_the_full_gradient():
    net, x, y = _tiny_classifier(0)
    post = mlp_log_posterior_gradient(net, x, y, 0.7)
    theta = net.params.copy()
    full = post.full_gradient(theta)
    subsets = list(itertools.combinations(range(x.shape[0]), 2))
    average = sum(post.gradient(theta, np.array(s)) for s in subsets) / len(subsets)
    np.testing.assert_allclose(average, full, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(post(theta), full)                  # M = N (batch_size None) is the full gradient
    minibatch = mlp_log_posterior_gradient(net, x, y, 0.7, batch_size=2, rng=np.random.default_rng(1))
    assert not np.allclose(minibatch(theta), full)                    # a single minibatch is not


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), width=st.integers(1, 4), n_classes=st.integers(2, 4), n=st.integers(1, 7),
       tau=st.floats(0.01, 10.0))
def test_full_log_posterior_gradient_against_finite_differences(seed, width, n_classes, n, tau):
    net, x, y = _tiny_classifier(seed, (3, width, n_classes), n)
    post = mlp_log_posterior_gradient(net, x, y, tau)
    result = check_gradient(post.log_posterior, post.full_gradient, net.params.copy())
    assert result.rel_error <= 1e-6 or result.abs_error <= 1e-8, result


# ----------------------------------------------------------------- S3.G (g): resuming
@pytest.mark.parametrize("replace", [False, True])
def test_resume_from_state_is_bit_identical(replace, tmp_path):
    from kd_ref import npzfile

    def chain():
        net, x, y = _tiny_classifier(3, n=7)
        post = mlp_log_posterior_gradient(net, x, y, 2.0, batch_size=3, rng=np.random.default_rng(8), replace=replace)
        return net, SGLD(post, net.params, np.random.default_rng(9), PowerDecay(10.0, 0.55, 0.05), burn_in=5, thin=3)

    net, sgld = chain()
    straight = sgld.next_batch(40)
    net, first = chain()
    head = first.next_batch(17)
    first.step()                                              # a step between kept states
    assert all(k.isidentifier() for k in first.state())          # optim.train's checkpoints take it as it is
    npzfile.save(tmp_path / "sgld.npz", "test", 1, **first.state())
    net2, resumed = chain()
    resumed.load_state(npzfile.load(tmp_path / "sgld.npz", "test", (1,)))
    assert resumed.summary.steps == first.summary.steps and resumed.summary.kept == 17
    tail = resumed.next_batch(23)
    np.testing.assert_array_equal(np.concatenate([head, tail]), straight)
    np.testing.assert_array_equal(net2.params, straight[-1])    # theta0 = net.params moved in place


# ----------------------------------------------------------------- chapter 3 online distillation on SGLD
def test_online_distillation_of_chapter_3_runs_on_sgld_unchanged():
    """train_compact (3.36-3.39) driven by SGLD over the Bayesian logistic regression fits the slice-sampled
    Monte Carlo predictor about as well as when it is driven by the slice sampler itself."""
    rng = np.random.default_rng(0)
    x, t = predictive.toy_logistic_data(rng)
    bayes = predictive.BayesianLogisticRegression(x, t, prior_var=1.0)     # a compact posterior SGLD mixes over

    def grad_log_posterior(w):       # d/dw [sum_n log sigma(w^T z_n) - |w|^2 / (2 prior_var)]
        return bayes.z.T @ special.expit(-(bayes.z @ w)) - w / bayes.prior_var

    reference = SliceSampler(bayes.log_posterior, np.zeros((1, 2)), np.random.default_rng(1), vectorized=True)
    reference.burn_in(100)
    mc = predictive.mc_predictor(reference.sample(1000)[:, 0])
    x_test = rng.normal(size=(500, 2)) * np.sqrt(predictive.INPUT_VAR)
    targets = predictive.network_targets(mc, x_test).log_p

    def kl_after(teacher):
        net = predictive.compact_predictor(4, 2, np.random.default_rng(2))
        inputs = predictive.InputGenerator(2, np.random.default_rng(3))
        predictive.train_compact(net, "ce", inputs, teacher, 300, eta0=1.0)
        return predictive.bernoulli_kl(targets, predictive.network_targets(net, x_test).log_p).mean()

    sgld = SGLD(grad_log_posterior, np.zeros(2), np.random.default_rng(4), 0.05, burn_in=500, thin=2)
    slice_teacher = SliceSampler(bayes.log_posterior, np.zeros(2), np.random.default_rng(4), vectorized=True)
    slice_teacher.burn_in(100)
    untrained = predictive.compact_predictor(4, 2, np.random.default_rng(2))
    kl_untrained = predictive.bernoulli_kl(targets, predictive.network_targets(untrained, x_test).log_p).mean()
    kl_sgld, kl_slice = kl_after(sgld), kl_after(slice_teacher)
    assert sgld.summary.kept == 300 * 10                             # one chain state per input, as the slice sampler
    assert kl_sgld < kl_untrained / 30
    assert kl_sgld < 2 * kl_slice


# ----------------------------------------------------------------- bad input
def test_bad_input_is_refused_before_any_state_changes():
    net, x, y = _tiny_classifier(4)
    with pytest.raises(ValueError, match="prior_precision"):
        mlp_log_posterior_gradient(net, x, y, 0.0)
    with pytest.raises(ValueError, match="prior_precision"):
        mlp_log_posterior_gradient(net, x, y, -1.0)
    with pytest.raises(ValueError, match="labels"):
        mlp_log_posterior_gradient(net, x, np.full(x.shape[0], 3), 1.0)
    with pytest.raises(ValueError, match="log_softmax"):
        mlp_log_posterior_gradient(MLP([2, 3], ["softmax"], np.random.default_rng(0)), x, y, 1.0)
    with pytest.raises(ValueError, match="schedule"):
        SGLD(lambda th: -th, np.zeros(2), np.random.default_rng(0), 0.0)
    with pytest.raises(ValueError, match="schedule"):
        SGLD(lambda th: -th, np.zeros(2), np.random.default_rng(0), lambda t: -0.1)
    with pytest.raises(TypeError, match="theta0"):
        SGLD(lambda th: -th, [0.0, 0.0], np.random.default_rng(0), 0.1)
    with pytest.raises(TypeError, match="theta0"):
        SGLD(lambda th: -th, np.zeros(2, dtype=np.float32), np.random.default_rng(0), 0.1)

    # a schedule that reaches 0 midway, a gradient of the wrong shape or NaN: refused, chain unchanged
    for grad, schedule, match in [(lambda th: -th, LinearDecay(0.1, 5), "schedule"),
                                  (lambda th: -th[:1], 0.1, "grad_log_posterior"),
                                  (lambda th: np.full(2, np.nan) if th[0] > 10 else -th + 20.0, 0.1, "grad_log_posterior")]:
        sgld = SGLD(grad, np.zeros(2), np.random.default_rng(0), schedule)
        before = sgld.state()
        with pytest.raises(ValueError, match=match):
            sgld.next_batch(200)
        after = sgld.state()
        assert after.keys() == before.keys()
        for k in before:
            np.testing.assert_array_equal(after[k], before[k])

    post = mlp_log_posterior_gradient(net, x, y, 1.0, batch_size=2, rng=np.random.default_rng(0))
    sgld = SGLD(post, net.params, np.random.default_rng(0), 1e-3)
    sgld.step()
    saved = sgld.state()
    with pytest.raises(ValueError, match="theta"):
        sgld.load_state({**saved, "theta": np.zeros(3)})
    with pytest.raises(ValueError, match="perm"):
        sgld.load_state({**saved, "gradient__perm": np.zeros(6, dtype=int)})
    np.testing.assert_array_equal(sgld.state()["theta"], saved["theta"])
