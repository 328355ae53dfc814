"""Posterior expectations (S3.4), the U_s / U_o estimators (S3.5, S3.6), the S3.7 analysis of when U_s
is enough, the uncertainty decomposition (S3.14) and the entropy from log-probabilities (SPEC_seeds 0.2)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

from kd_ref import npzfile
from kd_ref.metrics import entropy
from kd_ref.mlp import MLP
from kd_ref.outputs import DotProduct
from kd_ref.posterior import (EnsembleAccumulator, OnlineAverage, StochasticEstimate, ensemble_uncertainty,
                              expected_entropy, g_values, marginal_variance, predictive)


def _random_log_probs(rng, shape, sharp=3.0):
    return special.log_softmax(sharp * rng.normal(size=shape), axis=-1)


# ------------------------------------------------------------------ entropy and the g-functions
def test_entropy_from_log_probabilities_is_exact_at_one_hot_rows_and_near_the_padded_form():
    rng = np.random.default_rng(0)
    eps, c = 1e-7, 10
    log_p = _random_log_probs(rng, (200, c), sharp=8.0)
    p = np.exp(log_p)
    padded = -np.sum(p * np.log(p + eps), axis=1)                    # the GPED code's form
    assert np.max(np.abs(entropy(log_p) - padded)) <= c * eps * (1 + np.log(1 / eps))      # 1.7e-5
    one_hot = np.full((3, c), -np.inf)
    one_hot[np.arange(3), [0, 4, 9]] = 0.0
    assert np.array_equal(entropy(one_hot), np.zeros(3)) and not np.any(np.signbit(entropy(one_hot)))
    assert np.all(-np.sum(np.exp(one_hot) * np.log(np.exp(one_hot) + eps), axis=1) < 0)   # the padded form is not 0
    np.testing.assert_allclose(entropy(np.log(np.full((1, c), 1 / c))), [np.log(c)], rtol=1e-15)
    with pytest.raises(ValueError, match="log_p"):
        entropy(np.array([[np.nan, 0.0]]))


def test_g_functions_and_their_shapes():
    rng = np.random.default_rng(1)
    log_p = _random_log_probs(rng, (7, 4))
    p = np.exp(log_p)
    np.testing.assert_array_equal(predictive(log_p), p)
    np.testing.assert_allclose(expected_entropy(log_p), -np.sum(p * np.log(p), axis=1, keepdims=True), rtol=1e-14)
    assert np.all(expected_entropy(log_p) >= 0)                       # H >= 0, not the seed's sum p log p
    np.testing.assert_allclose(marginal_variance(log_p), p * (1 - p), rtol=1e-14, atol=1e-300)
    np.testing.assert_array_equal(g_values("predictive", log_p, 4), p)
    np.testing.assert_array_equal(g_values(lambda l: l[:, :2], log_p), log_p[:, :2])       # any callable
    for bad, match in [(lambda l: l[:, 0], "g: expected values of shape"), (lambda l: l[:3], "g: expected values"),
                       (lambda l: np.full((7, 4), np.nan), "finite"), ("median", "g: expected one of")]:
        with pytest.raises(ValueError, match=match):
            g_values(bad, log_p)
    with pytest.raises(ValueError, match=r"g: expected values of shape \(7, 1\)"):
        g_values("predictive", log_p, 1)


# ------------------------------------------------------------------ U_s and U_o
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_rows=st.integers(1, 6), width=st.integers(1, 3),
       n_batches=st.integers(1, 12), batch=st.integers(1, 9))
def test_online_average_is_the_monte_carlo_average_over_visits_with_repeats(seed, n_rows, width, n_batches, batch):
    rng = np.random.default_rng(seed)
    u_o, u_s = OnlineAverage(n_rows, width), StochasticEstimate(n_rows, width)
    visits = [[] for _ in range(n_rows)]
    for _ in range(n_batches):
        idx = rng.integers(0, n_rows, size=batch)                     # with replacement: repeats inside a batch
        values = rng.normal(size=(batch, width)) * 10.0 ** rng.integers(-3, 4)
        targets = u_o.update(idx, values)
        for i, v in zip(idx, values):
            visits[i].append(v)
        expected = np.array([np.mean(visits[i], axis=0) for i in idx])
        np.testing.assert_allclose(targets, expected, rtol=1e-12, atol=1e-12 * np.abs(values).max())
        assert np.array_equal(u_s.update(idx, values), values)        # U_s: the current g, exactly
    assert u_o.counts.tolist() == [len(v) for v in visits]
    for i in range(n_rows):
        if visits[i]:
            np.testing.assert_allclose(u_o.mean[i], np.mean(visits[i], axis=0), rtol=1e-12,
                                       atol=1e-12 * np.abs(visits[i]).max())
        else:
            assert np.all(u_o.mean[i] == 0)


def test_estimator_states_round_trip_and_continue_identically(tmp_path):
    rng = np.random.default_rng(2)
    batches = [(rng.integers(0, 5, size=4), rng.normal(size=(4, 2))) for _ in range(10)]
    for cls in (OnlineAverage, StochasticEstimate):
        straight = cls(5, 2)
        outs = [straight.update(i, v) for i, v in batches]
        first = cls(5, 2)
        for i, v in batches[:6]:
            first.update(i, v)
        npzfile.save(tmp_path / "est.npz", "test", 1, **first.state())
        resumed = cls(5, 2)
        resumed.load_state(npzfile.load(tmp_path / "est.npz", "test", (1,)))
        for (i, v), out in zip(batches[6:], outs[6:]):
            assert np.array_equal(resumed.update(i, v), out)
    with pytest.raises(ValueError, match="counts"):
        OnlineAverage(5, 2).load_state({"mean": np.zeros((5, 2)), "counts": -np.ones(5, dtype=int)})


def test_estimators_refuse_bad_values_before_changing_anything():
    u_o = OnlineAverage(4, 3)
    u_o.update(np.array([0, 1]), np.ones((2, 3)))
    before = u_o.state()
    for idx, values, match in [(np.array([0, 1]), np.ones((2, 2)), "values"),      # g of the wrong width
                               (np.array([0, 1]), np.ones((3, 3)), "values"),
                               (np.array([0, 4]), np.ones((2, 3)), "indices"),
                               (np.array([0.0, 1.0]), np.ones((2, 3)), "indices"),
                               (np.array([0, 1]), np.full((2, 3), np.inf), "values")]:
        with pytest.raises(ValueError, match=match):
            u_o.update(idx, values)
        after = u_o.state()
        assert all(np.array_equal(after[k], before[k]) for k in before)
    with pytest.raises(ValueError, match="values"):
        StochasticEstimate(4, 3).update(np.array([0]), np.ones((1, 2)))


# ------------------------------------------------------------------ S3.7: when U_s is enough
def test_cross_entropy_gradient_is_affine_in_the_targets_so_u_s_is_unbiased():
    """mean_s grad_phi CE(g(theta_s), f) = grad_phi CE(mean_s g(theta_s), f), to 1e-12."""
    rng = np.random.default_rng(3)
    student = MLP([2, 5, 3], ["relu", "log_softmax"], rng)
    x = rng.normal(size=(6, 2))
    samples = [predictive(_random_log_probs(rng, (6, 3))) for _ in range(25)]      # g at 25 teacher samples

    def ce_grad(targets):            # CE = -sum g_hat log f: minus the dot product with the log-softmax output
        return -student.grad(x, DotProduct(targets), input_grads=False)[1]

    mean_of_grads = np.mean([ce_grad(g) for g in samples], axis=0)
    np.testing.assert_allclose(mean_of_grads, ce_grad(np.mean(samples, axis=0)), rtol=1e-12, atol=1e-13)


def _fit_scalar(targets, loss_grad, n_steps):
    """SGD on one number f with steps 0.5 (1 + t)^-0.6, the target at step t from ``targets(t)``."""
    f = 0.5
    for t in range(n_steps):
        f -= 0.5 * (1 + t) ** -0.6 * loss_grad(f, targets(t))
    return f, 0.5 * (1 + n_steps) ** -0.6


def test_mae_with_u_s_converges_to_the_median_and_with_u_o_to_the_mean():
    """g in {0, 1} with P(1) = 0.3: MAE + U_s -> median 0 (the control), MAE + U_o -> 0.3; square error + U_s -> 0.3."""
    n_steps, p1 = 20_000, 0.3
    g = (np.random.default_rng(4).uniform(size=n_steps) < p1).astype(float)         # g(theta_t) at one input
    u_o = OnlineAverage(1, 1)
    u_o_targets = np.array([u_o.update(np.array([0]), g[t:t + 1, None])[0, 0] for t in range(n_steps)])
    u_s = StochasticEstimate(1, 1)
    u_s_targets = np.array([u_s.update(np.array([0]), g[t:t + 1, None])[0, 0] for t in range(n_steps)])
    mae = lambda f, target: np.sign(f - target)                                      # d|f - target| / df
    square = lambda f, target: 2.0 * (f - target)
    mc_error = 4 * np.sqrt(p1 * (1 - p1) / n_steps)                                  # U_o's own Monte Carlo error
    f_s, last_step = _fit_scalar(lambda t: u_s_targets[t], mae, n_steps)
    f_o, _ = _fit_scalar(lambda t: u_o_targets[t], mae, n_steps)
    f_sq, _ = _fit_scalar(lambda t: u_s_targets[t], square, n_steps)
    assert abs(f_s - 0.0) <= 2 * last_step                            # the posterior median of g
    assert abs(f_o - p1) <= mc_error + 2 * last_step                  # the posterior mean of g
    assert abs(f_s - p1) > mc_error + 2 * last_step                   # so U_s + MAE misses the mean
    assert abs(f_sq - p1) <= 0.05                                     # square error: U_s's noise averages out
    assert abs(u_o_targets[-1] - g.mean()) <= 1e-12


# ------------------------------------------------------------------ S3.14
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), members=st.integers(1, 8), n=st.integers(1, 5), c=st.integers(2, 6),
       sharp=st.floats(0.1, 30.0))
def test_tu_is_eu_plus_ku_and_ku_is_the_mean_kl_to_the_ensemble(seed, members, n, c, sharp):
    rng = np.random.default_rng(seed)
    log_p = _random_log_probs(rng, (members, n, c), sharp)
    u = ensemble_uncertainty(log_p)
    p = np.exp(log_p)
    p_bar = p.mean(axis=0)
    np.testing.assert_allclose(u.total, -np.sum(p_bar * np.log(p_bar), axis=1), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(u.data, np.mean(entropy(log_p), axis=0), rtol=1e-12, atol=1e-14)
    assert np.all(np.abs(u.total - (u.data + u.knowledge)) <= 4 * np.finfo(float).eps * np.maximum(u.total, 1e-300))
    mutual_information = np.mean(np.sum(p * (log_p - np.log(p_bar)), axis=2), axis=0)    # mean_s KL(p_s || p_bar)
    np.testing.assert_allclose(u.knowledge, mutual_information, rtol=1e-8, atol=1e-12)
    assert np.all(u.knowledge >= -1e-14)
    agree = ensemble_uncertainty(np.repeat(log_p[:1], members, axis=0))
    assert np.all(np.abs(agree.knowledge) <= 1e-14)


def test_ensemble_accumulator_state_and_bad_input(tmp_path):
    rng = np.random.default_rng(5)
    log_p = _random_log_probs(rng, (6, 4, 3))
    acc = EnsembleAccumulator(4, 3)
    with pytest.raises(ValueError, match="at least one"):
        acc.uncertainty()
    for m in log_p[:3]:
        acc.add(m)
    npzfile.save(tmp_path / "acc.npz", "test", 1, **acc.state())
    resumed = EnsembleAccumulator(4, 3)
    resumed.load_state(npzfile.load(tmp_path / "acc.npz", "test", (1,)))
    for m in log_p[3:]:
        resumed.add(m)
    whole = ensemble_uncertainty(log_p)
    np.testing.assert_allclose(resumed.uncertainty().knowledge, whole.knowledge, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(resumed.predictive(), np.exp(log_p).mean(axis=0), rtol=1e-14)
    before = resumed.state()
    with pytest.raises(ValueError, match="log_p"):
        resumed.add(log_p[0, :3])
    assert all(np.array_equal(resumed.state()[k], before[k]) for k in before)
