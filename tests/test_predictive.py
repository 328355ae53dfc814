"""Compact predictive distributions (kd_ref.distill.predictive, chapter 3)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import special
from scipy.stats import norm

from kd_ref import gradcheck
from kd_ref.distill.predictive import (LOSSES, TRUE_MEANS, BayesianLogisticRegression, BayesianMoG, ClassTargets,
                                       CrossEntropyLoss, DerivativeSquareErrorLoss, InputGenerator, bernoulli_kl,
                                       compact_predictor, mc_predictor, network_targets, sample_targets,
                                       teacher_targets, toy_logistic_data, train_compact)
from kd_ref.experiments import bayes_mog
from kd_ref.mcmc import SliceSampler

from _tolerance import passes

cross_entropy_loss, derivative_square_error_loss = CrossEntropyLoss(), DerivativeSquareErrorLoss()


# ------------------------------------------------------------------ Bayesian MoG
def test_mog_posterior_pieces_match_direct_formulas(rng):
    y = rng.normal(size=12) * 3
    b = BayesianMoG(y)
    means = rng.normal(size=(4, 3)) * 2
    direct = np.array([np.sum(np.log(sum(w * norm.pdf(y, m, np.sqrt(v))
                                         for w, m, v in zip(b.weights, mu, b.variances)))) for mu in means])
    assert np.allclose(b.log_likelihood(means), direct, rtol=1e-12)
    assert np.allclose(b.log_prior(means), norm.logpdf(means, 0, 10).sum(axis=1), rtol=1e-12)
    grid = np.linspace(-8, 8, 9)
    mc = np.log(np.mean([np.exp(b.model(mu).log_density(grid[:, None])) for mu in means], axis=0))
    assert np.allclose(b.predictive_log_density(grid, means, chunk=3), mc, rtol=1e-12)
    ys = b.sample_predictive(np.array([[-50.0, 0.0, 50.0]]), 30_000, rng)
    assert np.isclose(np.mean(ys < -25), 1 / 3, atol=0.02) and np.isclose(np.mean(ys > 25), 1 / 3, atol=0.02)


def test_bayesian_mog_with_1000_observations():
    """Posterior means within 0.3 of the truth; batch and online compact models within KL 0.05 nats of the
    MC predictive (a short chain: 1,000 samples and 50 online steps; the thesis run uses 10,000)."""
    settings = bayes_mog.Settings.quick(n_samples=1_000, burn_in=100, online_steps=50, em_restarts=2)
    res = bayes_mog.run_one(1000, settings, np.random.default_rng(0))
    assert np.all(np.abs(res["posterior_mean"] - TRUE_MEANS) < 0.3), res["posterior_mean"]
    assert 0 <= res["kl_batch"] < 0.05 and 0 <= res["kl_online"] < 0.05, (res["kl_batch"], res["kl_online"])
    assert 5 * res["online_stored_bytes"] < res["batch_stored_bytes"]
    assert res["online_peak_bytes"] < res["batch_peak_bytes"]


def test_mog_bad_input():
    with pytest.raises(ValueError, match="variances"):
        BayesianMoG([0.0], variances=(1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match=r"means: expected shape \(N, 3\)"):
        BayesianMoG([0.0]).log_posterior(np.zeros((2, 2)))


# -------------------------------------------------------- Bayesian logistic regression
def test_logistic_posterior_and_mc_predictor(rng):
    x, t = toy_logistic_data(rng, 5)
    assert np.all(x[t == 1, 0] > 0) and np.all(x[t == 0, 0] < 0)
    post = BayesianLogisticRegression(x, t, 100.0)
    w = rng.normal(size=(3, 2))
    direct = [sum(np.log(special.expit(wi @ xn)) if tn else np.log(1 - special.expit(wi @ xn))
                  for xn, tn in zip(x, t)) - wi @ wi / 200 for wi in w]
    assert np.allclose(post.log_posterior(w), direct, rtol=1e-12)
    samples = rng.normal(size=(7, 2)) * 3
    net = mc_predictor(samples)
    q = rng.normal(size=(5, 2))
    assert np.allclose(net.predict(q)[:, 0], special.expit(q @ samples.T).mean(axis=1), rtol=1e-13)


def test_class_probabilities_stay_accurate_where_the_sigmoids_saturate(rng):
    """log q(t=0|x) comes from the network at -x: exact where 1 - y(x) rounds to 0."""
    w = np.array([[40.0, 0.0]])
    x = np.array([[3.0, 1.0], [0.01, 0.0]])
    targets = network_targets(mc_predictor(w), x)
    a = x @ w[0]
    assert np.allclose(targets.log_p[:, 0], special.log_expit(-a), rtol=1e-12)      # -120 and -0.6
    assert np.allclose(targets.d_log_p[:, 0], -special.expit(a)[:, None] * w, rtol=1e-12)
    sample = sample_targets(np.repeat(w, 2, axis=0), x)
    assert np.allclose(sample.log_p, targets.log_p, rtol=1e-12)
    assert np.allclose(sample.d_log_p, targets.d_log_p, rtol=1e-12)
    # moderate regime: both classes agree with the direct 1 - y
    moderate = network_targets(mc_predictor(rng.normal(size=(5, 2))), rng.normal(size=(4, 2)))
    assert np.allclose(np.exp(moderate.log_p).sum(axis=1), 1.0, rtol=1e-13)


def _case(seed, K, N, S, teacher_kind, scale):
    rng = np.random.default_rng(seed)
    net = compact_predictor(K, 2, rng, init_scale=scale)
    x = rng.normal(size=(N, 2)) * 2
    if teacher_kind == "network":
        targets = network_targets(mc_predictor(rng.normal(size=(S, 2)) * scale), x)
    else:
        targets = sample_targets(rng.normal(size=(N, 2)) * scale, x)
    return net, x, targets


@given(seed=st.integers(0, 2**32 - 1), K=st.integers(1, 6), N=st.integers(1, 5), S=st.integers(1, 20),
       teacher_kind=st.sampled_from(["network", "sample"]), scale=st.floats(0.3, 3.0),
       loss=st.sampled_from([cross_entropy_loss, derivative_square_error_loss]))
def test_theta_gradients_match_finite_differences(seed, K, N, S, teacher_kind, scale, loss):
    """Cross entropy (backprop) and derivative square error (R{backprop} along v = (0, d)) W1-gradients."""
    net, x, targets = _case(seed, K, N, S, teacher_kind, scale)
    sl = net.layout.slice("W1")
    w0 = net.params[sl].copy()

    def f(w):
        net.params[sl] = w
        return loss(net, x, targets, grad=False)[0]

    def g(w):
        net.params[sl] = w
        return loss(net, x, targets)[1]

    result = gradcheck.check_gradient(f, g, w0)
    value = f(w0)
    net.params[sl] = w0
    assert passes(result, 1e-6, value), str(result)


@given(seed=st.integers(0, 2**32 - 1), S=st.integers(1, 12), N=st.integers(1, 4), scale=st.floats(0.3, 3.0),
       teacher_kind=st.sampled_from(["network", "sample"]))
def test_teacher_input_derivatives_match_finite_differences(seed, S, N, scale, teacher_kind):
    """d log p(t=c|x)/dx of both classes (the targets of 3.24) against central differences of log p."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, 2)) * 2
    if teacher_kind == "network":
        net = mc_predictor(rng.normal(size=(S, 2)) * scale)
        targets_at = lambda z, n: network_targets(net, z[None])  # noqa: E731
    else:
        w = rng.normal(size=(N, 2)) * scale                      # one posterior sample per input row
        targets_at = lambda z, n: sample_targets(w[n:n + 1], z[None])  # noqa: E731
    targets = network_targets(net, x) if teacher_kind == "network" else sample_targets(w, x)
    for n in range(N):
        for c in (0, 1):
            result = gradcheck.check_gradient(lambda z: targets_at(z, n).log_p[0, c],
                                              lambda z: targets.d_log_p[n, c], x[n])
            # where the sigmoids saturate log p ~ -1e-9 and its differences lose relative precision
            assert result.passed(1e-6) or result.abs_error < 1e-11, str(result)


def test_losses_match_explicit_two_class_formulas(rng):
    """Single-unit student and teacher: all quantities in closed form (sigma' = sigma(1 - sigma))."""
    w_s, w_t = np.array([1.3, -0.4]), np.array([0.7, 0.9])
    net = compact_predictor(1, 2, rng)
    net.W[0][...] = w_s
    x = rng.normal(size=(6, 2))
    targets = network_targets(mc_predictor(w_t[None]), x)
    q1, p1 = special.expit(x @ w_s), special.expit(x @ w_t)
    ce = -np.mean(p1 * np.log(q1) + (1 - p1) * np.log(1 - q1))
    assert np.isclose(cross_entropy_loss(net, x, targets)[0], ce, rtol=1e-12)
    g1, g0 = (1 - q1)[:, None] * w_s, -q1[:, None] * w_s          # d log q_c / dx
    G1, G0 = (1 - p1)[:, None] * w_t, -p1[:, None] * w_t
    # 3.24: each class weighted by the teacher's probability of it, with the 1/2
    dse = np.mean(0.5 * p1 * np.sum((g1 - G1) ** 2, axis=1) + 0.5 * (1 - p1) * np.sum((g0 - G0) ** 2, axis=1))
    assert np.isclose(derivative_square_error_loss(net, x, targets)[0], dse, rtol=1e-12)
    assert np.isclose(np.mean(bernoulli_kl(targets.log_p, network_targets(net, x).log_p)),
                      ce + np.mean(p1 * np.log(p1) + (1 - p1) * np.log(1 - p1)), rtol=1e-10)


def test_weighted_derivative_square_error_against_a_loop_over_examples_and_classes(rng):
    """3.24 for a K-unit student and an S-sample teacher, and 3.38 for a single-sample teacher, written out
    one example and one class at a time: q = mean_k sigma(w_k . x), dq/dx = mean_k sigma'(w_k . x) w_k,
    d log q_1/dx = (dq/dx) / q and d log q_0/dx = -(dq/dx) / (1 - q)."""
    def prob_and_slope(W, xn):
        s = special.expit(W @ xn)
        return s.mean(), (s * (1 - s)) @ W / W.shape[0]

    W_s, W_t = rng.normal(size=(4, 2)), rng.normal(size=(7, 2))
    net = compact_predictor(4, 2, rng)
    net.W[0][...] = W_s
    x = rng.normal(size=(5, 2))
    w_online = rng.normal(size=(5, 2))                                   # one chain sample per input (3.36)
    for targets, teacher_of in ((network_targets(mc_predictor(W_t), x), lambda n: W_t),
                                (sample_targets(w_online, x), lambda n: w_online[n:n + 1])):
        total = 0.0
        for n in range(x.shape[0]):
            q, dq = prob_and_slope(W_s, x[n])
            p, dp = prob_and_slope(teacher_of(n), x[n])
            for weight, g, G in ((p, dq / q, dp / p), (1 - p, -dq / (1 - q), -dp / (1 - p))):
                total += weight * 0.5 * np.sum((g - G) ** 2)
        assert np.isclose(derivative_square_error_loss(net, x, targets, grad=False)[0], total / x.shape[0],
                          rtol=1e-11)
    # the control: the unweighted sum of the two class terms is a different number
    unweighted = ClassTargets(np.zeros((5, 2)), targets.d_log_p)        # log p = 0: both weights 1
    assert not np.isclose(derivative_square_error_loss(net, x, unweighted, grad=False)[0],
                          derivative_square_error_loss(net, x, targets, grad=False)[0], rtol=1e-3)


def test_compact_weights_start_small_and_random():
    """N(0, 1/(D + 1)) as in the thesis's code: for D = 2 the sample variance of many weights is near 1/3."""
    net = compact_predictor(20_000, 2, np.random.default_rng(0))
    var = net.W[0].var()
    assert abs(var - 1 / 3) < 5 * (1 / 3) * np.sqrt(2 / net.W[0].size)   # 5 standard errors of a variance


def test_training_moves_only_the_first_layer_and_lowers_the_loss():
    rng = np.random.default_rng(3)
    x, t = toy_logistic_data(rng, 5)
    post = BayesianLogisticRegression(x, t)
    sampler = SliceSampler(post.log_posterior, np.zeros((5, 2)), rng, vectorized=True)
    sampler.burn_in(50)
    teacher = mc_predictor(sampler.sample(100).reshape(-1, 2))
    probe = np.sqrt(10) * rng.normal(size=(500, 2))
    for loss, labeller in (("ce", teacher), ("dse", sampler)):
        net = compact_predictor(4, 2, rng)
        fixed = np.concatenate([net.b[0], net.W[1].ravel(), net.b[1]])
        before = cross_entropy_loss(net, probe, network_targets(teacher, probe), grad=False)[0]
        result = train_compact(net, loss, InputGenerator(2, rng), labeller, 300, eta0=1.0 if loss == "ce" else 0.05)
        assert np.array_equal(fixed, np.concatenate([net.b[0], net.W[1].ravel(), net.b[1]]))
        assert result.steps == 300
        if loss == "ce":
            assert cross_entropy_loss(net, probe, network_targets(teacher, probe), grad=False)[0] < before


def test_predictive_bad_input(rng):
    net = compact_predictor(3, 2, rng)
    x = rng.normal(size=(4, 2))
    with pytest.raises(ValueError, match="targets: expected log_p of shape"):
        cross_entropy_loss(net, x, ClassTargets(np.zeros((3, 2)), np.zeros((3, 2, 2))))
    for loss in LOSSES.values():
        with pytest.raises(ValueError, match=r"x: expected a non-empty minibatch of shape \(N, 2\)"):
            loss()(net, np.zeros((0, 2)), ClassTargets(np.zeros((0, 2)), np.zeros((0, 2, 2))))
    with pytest.raises(TypeError, match=r"teacher: expected the Monte Carlo predictor .* received ndarray"):
        teacher_targets(net, np.zeros((3, 2)), cross_entropy_loss)
    net.b[0][0] = 0.1
    with pytest.raises(ValueError, match="net: expected zero biases"):
        network_targets(net, x)
    with pytest.raises(ValueError, match="loss: expected one of"):
        train_compact(compact_predictor(3, 2, rng), "hinge", InputGenerator(2, rng), mc_predictor(x), 10)
    with pytest.raises(ValueError, match="t: expected binary values"):
        BayesianLogisticRegression(x, [0, 1, 2, 1])
