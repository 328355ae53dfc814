"""Chapter 4: distilling an RBM into a NADE (losses 4.20-4.28, the chain stream) and log Z from the NADE (4.44-4.54)."""
import os
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kd_ref import gradcheck
from kd_ref.distill import objective
from kd_ref.distill.generative import (ChainStream, KLLoss, ScoreMatchingLoss, SquareErrorLoss, sample_in_chunks,
                                       distill_nade, estimate_log_z, exact_kl, teacher_targets)
from kd_ref.nade import NADE
from kd_ref.partition import (bridge_sampling, importance_sampling, kl_lower_bound, kl_upper_bound,
                              trivial_lower_bound)
from kd_ref.rbm import RBM, GibbsSampler, random_chain_samples
from _tolerance import passes

STEP = gradcheck.DEFAULT_STEP


def all_states(d):
    return ((np.arange(2**d)[:, None] >> np.arange(d)) & 1).astype(np.float64)


def random_rbm(rng, d, h, scale=1.0):
    rbm = RBM(d, h, rng, init_std=scale)
    rbm.b_visible[...] = rng.normal(scale=scale, size=d)
    rbm.b_hidden[...] = rng.normal(scale=scale, size=h)
    return rbm


def away_from_kinks(nade, x):
    """True when no coordinate difference step on theta can move a ReLU activation across 0 (as in test_nade).

    With binary x, a step h on one parameter changes each a_d = c + sum_{k<d} W[:, o_k] x_{o_k} by at most h.
    """
    if nade.nonlinearity != "relu":
        return True
    terms = x[:, nade.order, None] * nade.W[:, nade.order].T                 # (N, D, H), position order
    acts = nade.c + np.cumsum(terms, axis=1) - terms                          # a_d before input o_d is added
    return bool(np.all(np.abs(acts) > 4 * STEP))


@st.composite
def loss_cases(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    d, h_q, h_p, n = draw(st.integers(1, 7)), draw(st.integers(1, 5)), draw(st.integers(1, 4)), draw(st.integers(1, 5))
    nade = NADE(d, h_q, rng, order=rng.permutation(d), init_std=draw(st.sampled_from([0.1, 1.0, 3.0])),
                nonlinearity=draw(st.sampled_from(["logistic", "relu"])))
    nade.b[...] = rng.normal(size=d)
    nade.c[...] = rng.normal(size=h_q)
    rbm = random_rbm(rng, d, h_p, scale=draw(st.sampled_from([0.5, 2.0])))
    x = (rng.random((n, d)) < 0.5).astype(np.float64)
    assume(away_from_kinks(nade, x))
    return nade, rbm, x, rng


def _check_loss_gradient(loss, case, directions=None):
    nade, rbm, x, rng = case
    theta = nade.params.copy()

    def value(p):
        nade.set_params(p)
        return loss(nade, x, loss.targets(rbm, x))[0]

    def grad(p):
        nade.set_params(p)
        return loss(nade, x, loss.targets(rbm, x))[1]

    result = gradcheck.check_gradient(value, grad, theta, directions=directions)
    magnitude = value(theta)     # a large loss (square error with c = 13: ~170) rounds its differences
    nade.set_params(theta)
    assert passes(result, 1e-6, magnitude), str(result)


@given(loss_cases())
def test_kl_loss_gradient_matches_differences(case):
    _check_loss_gradient(KLLoss(), case)


@given(loss_cases(), st.floats(-20.0, 20.0))
def test_square_error_loss_gradient_matches_differences(case, c):
    _check_loss_gradient(SquareErrorLoss(c), case)


@given(loss_cases())
def test_score_matching_loss_gradient_matches_differences(case):
    _check_loss_gradient(ScoreMatchingLoss(), case)


def test_score_matching_loss_gradient_at_a_larger_size(rng):
    """D = 60 inputs, 30 samples, H = 25 (P = 3,085 parameters): 8 directional derivatives against differences."""
    d, h, n = 60, 25, 30
    nade = NADE(d, h, rng, order=rng.permutation(d), init_std=0.3)
    nade.b[...], nade.c[...] = rng.normal(size=d), rng.normal(size=h)
    rbm = random_rbm(rng, d, 20, scale=0.3)
    x = (rng.random((n, d)) < 0.5).astype(np.float64)
    _check_loss_gradient(ScoreMatchingLoss(), (nade, rbm, x, rng), directions=rng.normal(size=(8, nade.n_params)))


def test_loss_values_follow_their_definitions(rng):
    """Each value from its formula: -mean log q; mean (log q - log phi + c)^2; mean ||score difference||^2."""
    rbm, nade = random_rbm(rng, 5, 3), NADE(5, 4, rng, init_std=1.0)
    x = all_states(5)[rng.permutation(32)[:7]]
    log_q, log_phi = nade.log_prob(x), rbm.log_phi(x)
    assert KLLoss()(nade, x)[0] == pytest.approx(-np.mean(log_q), rel=1e-13)
    assert SquareErrorLoss(2.5)(nade, x, log_phi)[0] == pytest.approx(np.mean((log_q - log_phi + 2.5) ** 2), rel=1e-13)
    g_phi = rbm.b_visible + (1 / (1 + np.exp(-(x @ rbm.W + rbm.b_hidden)))) @ rbm.W.T   # d log phi/dx by hand
    g_q = gradcheck.numerical_gradient(lambda z: nade.log_prob(z.reshape(x.shape), continuous=True).sum(), x)
    assert ScoreMatchingLoss()(nade, x, g_phi)[0] == pytest.approx(np.sum((g_q - g_phi) ** 2) / 7, rel=1e-8)
    np.testing.assert_allclose(ScoreMatchingLoss().targets(rbm, x), g_phi, rtol=1e-12)      # the teacher's score
    np.testing.assert_array_equal(SquareErrorLoss(2.5).targets(rbm, x), log_phi)


def test_square_error_is_log_error_plus_kl_term(rng):
    """Proposition 4.1 by enumeration: with e = log q - log p and a = log Z - c,
    E_p[(log q - log phi + c)^2] = E_p[(e - a)^2] = E_p[e^2] + 2 a KL(p || q) + a^2, as E_p[e] = -KL(p || q)."""
    rbm, nade = random_rbm(rng, 6, 3), NADE(6, 5, rng, init_std=1.0)
    x = all_states(6)
    log_z = rbm.log_z_exact()
    p = np.exp(rbm.log_phi(x) - log_z)
    a = 1.7
    value = np.sum(p * (nade.log_prob(x) - rbm.log_phi(x) + log_z - a) ** 2)
    e = nade.log_prob(x) - (rbm.log_phi(x) - log_z)
    kl = exact_kl(rbm, nade, log_z)
    assert np.sum(p * e) == pytest.approx(-kl, rel=1e-12)
    assert value == pytest.approx(np.sum(p * e**2) + 2 * a * kl + a**2, rel=1e-12)


# ------------------------------------------------------------------------------------------ the stream
def test_chain_stream_hands_out_chains_in_turn_and_advances_all_of_them(rng):
    rbm = random_rbm(rng, 5, 3)
    stream = ChainStream(rbm, 2, rng, n_chains=6, burn_in=3)
    assert stream.sampler.sweeps == 3 and stream.sampler.x.shape == (6, 5) and stream.dim == 5
    for call in range(7):
        batch = stream()
        assert stream.sampler.sweeps == 4 + call                      # every chain moved once per call
        rows = (2 * call + np.arange(2)) % 6
        np.testing.assert_array_equal(batch, stream.sampler.x[rows])  # the next chains, in turn
    assert stream.examples_drawn == 14
    assert ChainStream(rbm, 3, rng, burn_in=0).sampler.n_chains == 300  # K = 100 B by default


def test_chain_stream_samples_follow_the_rbm(rng):
    """20,000 samples (1,000 minibatches of 20 from 2,000 chains) on a 4-visible RBM: total variation
    from the exact distribution below 0.03 (about 2.5 times its expected size for independent samples)."""
    rbm = random_rbm(rng, 4, 3, scale=1.5)
    x = all_states(4)
    p = np.exp(rbm.log_prob_exact(x))
    stream = ChainStream(rbm, 20, rng, burn_in=100)
    draws = np.concatenate([stream() for _ in range(1000)])
    freq = np.bincount((draws @ (1 << np.arange(4))).astype(int), minlength=16) / len(draws)
    tv = 0.5 * np.abs(freq - p).sum()
    assert tv < 0.03
    assert 0.5 * np.abs(np.full(16, 1 / 16) - p).sum() > 0.15  # the control: uniform samples would fail


# -------------------------------------------------------------------------- distillation on a tiny RBM
@pytest.fixture(scope="module")
def tiny():
    """A 10-visible, 5-hidden RBM with strong couplings and a NADE distilled from it by the KL loss."""
    rng = np.random.default_rng(2015)
    rbm = random_rbm(rng, 10, 5, scale=1.2)
    nade = NADE(10, 20, rng, init_std=0.1)
    before = exact_kl(rbm, nade)
    distill_nade(nade, KLLoss(), ChainStream(rbm, 20, rng, burn_in=200), rbm, 2500, progress=False)
    return rbm, nade, rbm.log_z_exact(), before


def test_kl_distilled_nade_matches_the_rbm(tiny):
    rbm, nade, log_z, before = tiny
    kl = exact_kl(rbm, nade, log_z)
    assert before > 0.5          # far from the RBM at the start
    assert kl < 0.05


def test_square_error_and_score_matching_training_reduce_their_losses(rng):
    rbm = random_rbm(rng, 6, 3)
    for loss in (SquareErrorLoss.from_hill_climbing(rbm, rng, log_z=rbm.log_z_exact()), ScoreMatchingLoss()):
        nade = NADE(6, 8, rng, init_std=0.1)
        result = distill_nade(nade, loss, ChainStream(rbm, 20, rng, burn_in=50), rbm, 600, progress=False)
        assert np.mean(result.losses[-100:]) < 0.5 * np.mean(result.losses[:20]), loss.name


def test_distill_monitors_test_log_q_and_both_bounds(tiny, rng):
    rbm, _, log_z, _ = tiny
    nade = NADE(10, 8, rng, init_std=0.1)
    test = all_states(10)[:50]
    result = distill_nade(nade, KLLoss(), ChainStream(rbm, 10, rng, n_chains=200, burn_in=20), rbm, 200,
                          test=test, rng=rng, monitor_every=100, bound_samples=150, progress=False)
    assert [s for s, _ in result.monitor] == [100, 200]
    last = result.monitor[-1][1]
    assert set(last) == {"log_q_test", "upper", "lower"}
    assert last["log_q_test"] == pytest.approx(np.mean(nade.log_prob(test)))
    assert last["lower"] < log_z + 0.5 and last["upper"] > log_z - 0.5


def test_estimators_with_a_distilled_nade_cover_the_exact_log_z(tiny):
    """100 seeded repetitions of 500 NADE samples and 500 chains started at them: importance and bridge
    sampling contain the exact log Z in their +-3 SE intervals at least 95 times; the bounds bracket it."""
    rbm, nade, log_z, _ = tiny
    hits = {"importance": 0, "bridge": 0}
    upper_ok = lower_ok = 0
    for seed in range(100):
        out = estimate_log_z(rbm, nade, np.random.default_rng(seed), n_samples=500, burn_in=20)
        for name in hits:
            hits[name] += out[name].contains(log_z)
        upper_ok += out["upper"].upper >= log_z
        lower_ok += out["lower"].lower <= log_z
        assert out["trivial"].log_z <= log_z
    assert hits["importance"] >= 95 and hits["bridge"] >= 95, hits
    assert upper_ok >= 95 and lower_ok >= 95


def test_estimate_log_z_feeds_the_array_estimators_with_its_samples(tiny):
    """Every estimate equals the kd_ref.partition function applied to log phi and log q at the returned samples
    (bridge options passed through), the upper bound uses random chains of its own and the NADE-seeded average
    the bridge's chains, the trivial bound includes the candidates, and lower < importance < upper."""
    rbm, nade, _, _ = tiny
    states = all_states(10)
    out = estimate_log_z(rbm, nade, np.random.default_rng(6), n_samples=500, burn_in=5, candidates=states,
                         log_z_init="importance")
    assert set(out) == {"upper", "upper_seeded", "lower", "trivial", "importance", "bridge", "cpu_seconds",
                        "x_q", "x_p", "x_u"}
    x_q, x_p, x_u = out["x_q"], out["x_p"], out["x_u"]
    assert x_q.shape == x_p.shape == x_u.shape == (500, 10) and not np.array_equal(x_q, x_p)   # the chains moved
    phi_q, q_q, phi_p, q_p = rbm.log_phi(x_q), nade.log_prob(x_q), rbm.log_phi(x_p), nade.log_prob(x_p)
    assert abs(out["bridge"].log_z - bridge_sampling(phi_q, q_q, phi_p, q_p, log_z_init="importance").log_z) < 1e-12
    assert out["upper"].log_z == kl_upper_bound(rbm.log_phi(x_u), nade.log_prob(x_u)).log_z
    assert out["upper_seeded"].log_z == kl_upper_bound(phi_p, q_p).log_z
    assert out["lower"].log_z == kl_lower_bound(phi_q, q_q).log_z
    assert out["importance"].log_z == importance_sampling(phi_q, q_q).log_z
    assert out["trivial"].log_z == trivial_lower_bound(rbm.log_phi(states)).log_z == rbm.log_phi(states).max()
    assert out["lower"].log_z < out["importance"].log_z < out["upper"].log_z
    assert set(out["cpu_seconds"]) == {"upper", "upper_seeded", "lower", "trivial", "importance", "bridge"}
    assert all(out["cpu_seconds"][k] >= out[k].seconds for k in out["cpu_seconds"])
    # x_u are the chains random_chain_samples draws from the generator once x_q and x_p are drawn
    rng = np.random.default_rng(6)
    sample_in_chunks(nade, 500, rng, False)
    GibbsSampler(rbm, rng, init=x_q).burn_in(5)
    np.testing.assert_array_equal(x_u, random_chain_samples(rbm, rng, 500, 5)[0])
    # given samples are used as they are, and their CPU seconds are charged to the upper bound alone
    given_x = x_u[:300]
    shared = estimate_log_z(rbm, nade, np.random.default_rng(6), n_samples=500, burn_in=5, upper_samples=given_x,
                            upper_seconds=1234.5)
    np.testing.assert_array_equal(shared["x_u"], given_x)
    assert shared["upper"].log_z == kl_upper_bound(rbm.log_phi(given_x), nade.log_prob(given_x)).log_z
    assert shared["cpu_seconds"]["upper"] >= 1234.5 > max(v for k, v in shared["cpu_seconds"].items() if k != "upper")
    np.testing.assert_array_equal(shared["x_p"], x_p)             # the other estimates do not change


def two_mode_rbm(d=12, c=4.0):
    """One hidden unit joining two equally heavy modes, x_i ~ Bernoulli(sigma(-c)) (h = 0) or sigma(c) (h = 1).

    log phi(x) = -c s + softplus(2 c s - d c) with s = sum_i x_i; Z = 2 (1 + e^-c)^d. A Gibbs chain crosses
    between the modes with probability sigma(2 c s - d c) per sweep, on average 1.5e-8 (d = 12, c = 4) from
    either mode at equilibrium, and the model is symmetric under (x, h) -> (1 - x, 1 - h), so chains from
    uniform random starts end in each mode with probability exactly 1/2.
    """
    rbm = RBM(d, 1, None)
    rbm.b_visible[...], rbm.W[...], rbm.b_hidden[...] = -c, 2.0 * c, -d * c
    return rbm


def one_mode_nade(d=12, c=4.0):
    """q = the h = 0 mode of :func:`two_mode_rbm` exactly: independent pixels on with probability sigma(-c)."""
    nade = NADE(d, 1, None)
    nade.b[...] = -c
    return nade


def exact_upper_bound(rbm, nade):
    """E_p[log phi - log q] and Var_p[log phi - log q] by enumeration (the target of 4.46), with log Z."""
    x = all_states(rbm.n_visible)
    ratio = rbm.log_phi(x) - nade.log_prob(x)
    log_z = rbm.log_z_exact()
    p = np.exp(rbm.log_phi(x) - log_z)
    mean = float(p @ ratio)
    return mean, float(p @ (ratio - mean) ** 2), log_z


def test_upper_bound_from_random_chains_brackets_the_exact_log_z():
    """On enumerable RBMs, 2,000 random chains of 100 sweeps estimate E_p[log phi - log q] = log Z + KL(p || q)
    within 4 exact standard errors sqrt(Var_p / n) (an independent sample misses by more with probability 6e-5),
    and the +-3 SE interval's upper end lies above log Z: the distilled tiny-RBM NADE (tight bound), an undistilled
    NADE, and the one-mode NADE of the two-mode RBM. Control that must fail, with the same tolerance: the chains'
    random starts themselves (burn-in 0) are no samples of the two-mode p."""
    rng = np.random.default_rng(2015)
    tiny_rbm = random_rbm(rng, 10, 5, scale=1.2)
    cases = {"two modes, one-mode q": (two_mode_rbm(), one_mode_nade()),
             "tiny RBM, undistilled q": (tiny_rbm, NADE(10, 20, np.random.default_rng(1), init_std=0.1))}
    n = 2000
    for name, (rbm, nade) in cases.items():
        mean, var, log_z = exact_upper_bound(rbm, nade)
        assert mean > log_z + 0.1, name                            # KL(p || q) > 0.1: a bound with room to fail
        x_u, seconds = random_chain_samples(rbm, np.random.default_rng(7), n, 100)
        est = kl_upper_bound(rbm.log_phi(x_u), nade.log_prob(x_u))
        assert abs(est.log_z - mean) <= 4.0 * np.sqrt(var / n), (name, est.log_z, mean)
        assert est.upper >= log_z and seconds >= 0.0, name
    rbm, nade = cases["two modes, one-mode q"]
    mean, var, _ = exact_upper_bound(rbm, nade)
    starts, _ = random_chain_samples(rbm, np.random.default_rng(7), n, 0)
    wrong = kl_upper_bound(rbm.log_phi(starts), nade.log_prob(starts))
    assert abs(wrong.log_z - mean) > 4.0 * np.sqrt(var / n)


def test_nade_seeded_chains_fall_below_log_z_where_the_random_chains_bound_it():
    """The case of section 4.2.4: q holds one of p's two modes and the Gibbs chains cannot cross. Started at q's
    samples, the chains never see the other mode and their average of log phi - log q is log Z - log 2, below log Z
    by 0.69 nats with a tiny standard error: a "bound" the +-3 SE interval violates (the control). The upper bound
    of estimate_log_z, from chains of its own, stays above log Z, as does the thesis's set-up of shared samples."""
    rbm, nade = two_mode_rbm(), one_mode_nade()
    _, _, log_z = exact_upper_bound(rbm, nade)
    out = estimate_log_z(rbm, nade, np.random.default_rng(3), n_samples=2000, burn_in=200)
    seeded = out["upper_seeded"]
    assert seeded.upper < log_z and abs(seeded.log_z - (log_z - np.log(2.0))) < 0.001
    assert out["upper"].lower > log_z                      # q misses half of p: KL(p || q) is large
    shared, seconds = random_chain_samples(rbm, np.random.default_rng(4), 2000, 200)
    again = estimate_log_z(rbm, nade, np.random.default_rng(3), n_samples=2000, burn_in=200, upper_samples=shared,
                           upper_seconds=seconds)
    assert again["upper"].lower > log_z and again["upper_seeded"].log_z == seeded.log_z


def test_exact_bounds_bracket_log_z(tiny):
    """The expectations themselves, by enumeration: E_p[log phi - log q] >= log Z >= E_q[log phi - log q]."""
    rbm, nade, log_z, _ = tiny
    x = all_states(10)
    log_phi, log_q = rbm.log_phi(x), nade.log_prob(x)
    p, q = np.exp(log_phi - log_z), np.exp(log_q)
    upper, lower = np.sum(p * (log_phi - log_q)), np.sum(q * (log_phi - log_q))
    assert upper - log_z == pytest.approx(exact_kl(rbm, nade, log_z), rel=1e-10)
    assert lower < log_z < upper


# ------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_refused_with_clear_messages(rng):
    rbm, nade = random_rbm(rng, 5, 3), NADE(5, 4, rng)
    other = random_rbm(rng, 6, 3)
    with pytest.raises(ValueError, match="teacher: expected 5 visible units to match the NADE's inputs, "
                                         "received a teacher with 6"):
        teacher_targets(nade, other, KLLoss())
    with pytest.raises(ValueError, match="teacher: expected 5 visible units"):
        estimate_log_z(other, nade, rng, n_samples=10)
    with pytest.raises(ValueError, match=r"c: expected a value <= log Z = .*, received 50"):
        SquareErrorLoss(50.0, log_z=rbm.log_z_exact())
    with pytest.raises(ValueError, match="n_samples: expected an integer >= 2, received 1"):
        estimate_log_z(rbm, nade, rng, n_samples=1)
    state = rng.bit_generator.state
    for kwargs, error, match in [
        (dict(upper_seconds=1.0), ValueError, r"upper_seconds: expected None when upper_samples is not given"),
        (dict(upper_samples=np.zeros((3, 5))), ValueError, r"upper_seconds: expected the CPU seconds .*received None"),
        (dict(upper_samples=np.zeros((1, 5)), upper_seconds=0.0), ValueError,
         r"upper_samples: expected at least 2 samples .*received 1"),
        (dict(upper_samples=np.zeros((3, 6)), upper_seconds=0.0), ValueError, r"upper_samples"),
        (dict(upper_samples=np.full((3, 5), 0.5), upper_seconds=0.0), ValueError, r"upper_samples"),
        (dict(upper_samples=np.zeros((3, 5)), upper_seconds=-1.0), ValueError,
         r"upper_seconds: expected a value in \[0.0, inf\), received -1.0"),
        (dict(upper_samples=np.zeros((3, 5)), upper_seconds="1"), TypeError, r"upper_seconds: expected a real"),
    ]:
        with pytest.raises(error, match=match):
            estimate_log_z(rbm, nade, rng, n_samples=10, **kwargs)
    assert rng.bit_generator.state == state                       # refused before anything was drawn
    with pytest.raises(ValueError, match=r"stream: expected samples of dimension 5 .* received a stream of dimension 6"):
        distill_nade(nade, KLLoss(), ChainStream(other, 2, rng, n_chains=4, burn_in=0), rbm, 3, progress=False)
    with pytest.raises(ValueError, match="n_chains: expected at least batch_size=20 chains, received 10"):
        ChainStream(rbm, 20, rng, n_chains=10)
    with pytest.raises(TypeError, match="loss: expected KLLoss"):
        teacher_targets(nade, rbm, "kl")
    stream = ChainStream(rbm, 2, rng, n_chains=4, burn_in=0)
    chains_before, params_before = stream.sampler.x.copy(), nade.params.copy()
    with pytest.raises(ValueError, match="bound_samples: expected at most n_chains=4 .*received 5"):
        distill_nade(nade, KLLoss(), stream, rbm, 3, bound_samples=5, rng=rng, progress=False)
    np.testing.assert_array_equal(stream.sampler.x, chains_before)
    np.testing.assert_array_equal(nade.params, params_before)
    before = nade.params.copy()
    minibatch_objective = objective(nade, KLLoss(), teacher_targets(nade, rbm, KLLoss()))
    with pytest.raises(ValueError, match="teacher samples: expected binary values"):
        minibatch_objective(np.full((2, 5), 0.5))
    with pytest.raises(ValueError, match=r"teacher samples: expected shape \(N, 5\)"):
        minibatch_objective(np.zeros((2, 6)))
    np.testing.assert_array_equal(nade.params, before)


@pytest.mark.data
def test_square_error_constant_for_cd25_500_is_the_thesis_value(data_dir):
    """Hill climbing from the all-black image and two random starts finds log phi >= 436.49 (4.13, 4.50)."""
    rbm = RBM.from_file(data_dir)
    loss = SquareErrorLoss.from_hill_climbing(rbm, np.random.default_rng(0), n_restarts=2)
    assert loss.c >= 436.49


# ------------------------------------------------------------------------------------------ experiment
def test_rbm_nade_experiment_end_to_end_without_download(tmp_path, monkeypatch):
    """Tiny settings on the built-in synthetic digits (no KD_REF_DATA): every output is written, the exact
    log Z is the reference, bridge sampling lands near it, and a second run resumes from the cache."""
    from kd_ref.experiments import rbm_nade

    monkeypatch.delenv("KD_REF_DATA", raising=False)
    settings = rbm_nade.Settings.quick(data="auto", rbm_hidden=6, cd_steps=200, n_train=500, n_test=100,
                                       curve_test=50, nade_hidden=(20,), n_steps=150, n_chains=100, burn_in=30,
                                       n_samples=400, sample_burn_in=10, upper_chains=400, upper_burn_in=30,
                                       ais_runs=20, ais_temperatures=100,
                                       bound_samples=20, curve_points=3, hill_restarts=2, progress=False)
    first = rbm_nade.run(settings, tmp_path, np.random.default_rng(0))
    assert first["data"].startswith("synthetic digits")
    assert first["reference"][0] == "exact"
    log_z = first["reference"][1]
    assert set(first["models"]) == {"20/kl", "20/se"}
    for m in first["models"].values():
        assert abs(m["bridge"]["log_z"] - log_z) < 1.0
        assert m["lower"]["log_z"] < log_z < m["upper"]["log_z"] + 0.5
    for name in ("tables", "curves", "agreement", "samples", "features"):
        assert (tmp_path / first["files"][name].split("/")[-1]).exists()
    assert "bridge sampling (4.54)" in first["tables"] and (tmp_path / "log_z.csv").exists()
    assert (tmp_path / "cache" / "upper_samples.npz").exists() and not os.listdir(tmp_path / "ckpt")
    for m in first["models"].values():        # one set of 400 random chains for every NADE, charged to each
        assert m["upper"]["n"] == 400 and m["upper"]["cpu_seconds"] >= m["upper"]["seconds"]
        assert m["upper_seeded"]["n"] == 400 and m["upper"]["log_z"] != m["upper_seeded"]["log_z"]
    assert "KL upper bound (4.46), random chains" in first["tables"] and "chains started at the NADE" in first["tables"]
    assert np.asarray(first["curves"]["20/kl"]).shape == (3, 4)
    second = rbm_nade.run(settings, tmp_path, np.random.default_rng(0))          # everything from the cache
    assert second["models"] == first["models"] and second["seconds"] < first["seconds"]
    chosen = rbm_nade.run(replace(settings, nades=((20, "se"),)), tmp_path, np.random.default_rng(0))
    assert chosen["models"] == {"20/se": first["models"]["20/se"]}               # a pair picked from the cache
    with pytest.raises(ValueError, match="out: the cache in .* was written with other settings .*n_steps"):
        rbm_nade.run(replace(settings, n_steps=151), tmp_path, np.random.default_rng(0))


def test_rbm_nade_presets_follow_the_spec():
    """--thesis is section 4.2.3-4.2.4's set-up; --medium is CD25(500) with fewer steps; bad settings are named."""
    from kd_ref.experiments import rbm_nade

    t = rbm_nade.Settings.thesis().validate()
    assert (t.rbm, t.nade_hidden, t.losses, t.n_steps, t.batch_size, t.n_chains, t.burn_in) == \
        ("cd25", (250, 500, 750, 1000), ("kl", "se"), 30000, 20, 2000, 2000)
    assert (t.n_samples, t.sample_burn_in, t.n_test) == (10000, 2000, 10000)
    assert (t.upper_chains, t.upper_burn_in) == (10000, 2000)     # the upper bound's own random chains (4.46)
    m = rbm_nade.Settings.medium().validate()
    assert (m.rbm, m.nade_hidden, m.n_steps, m.sample_burn_in) == ("cd25", (500,), 3000, 2000)
    q = rbm_nade.Settings.quick().validate()
    assert q.rbm == "train" and q.rbm_hidden <= rbm_nade.MAX_EXACT_UNITS
    with pytest.raises(ValueError, match=r"losses: expected a non-empty subset of \['kl', 'se', 'sm'\], received \('x',\)"):
        rbm_nade.Settings.quick(losses=("x",)).validate()
    with pytest.raises(ValueError, match="data: the CD25\\(500\\) RBM models binarised MNIST"):
        rbm_nade.Settings.medium(data="synthetic").validate()


@pytest.mark.parametrize("override, error, match", [
    (dict(cd_k=0), ValueError, r"cd_k: expected an integer >= 1, received 0"),
    (dict(n_steps=2.5), TypeError, r"n_steps: expected an integer >= 1, received 2.5"),
    (dict(burn_in=-1), ValueError, r"burn_in: expected an integer >= 0, received -1"),
    (dict(sample_burn_in=-3), ValueError, r"sample_burn_in: expected an integer >= 0, received -3"),
    (dict(hill_restarts=-1), ValueError, r"hill_restarts: expected an integer >= 0, received -1"),
    (dict(n_samples=1), ValueError, r"n_samples: expected an integer >= 2, received 1"),
    (dict(bound_samples=1), ValueError, r"bound_samples: expected an integer >= 2, received 1"),
    (dict(upper_chains=1), ValueError, r"upper_chains: expected an integer >= 2, received 1"),
    (dict(upper_burn_in=-1), ValueError, r"upper_burn_in: expected an integer >= 0, received -1"),
    (dict(nade_hidden=()), ValueError, r"nade_hidden: expected at least one hidden-unit count, received \(\)"),
    (dict(nade_hidden=(10, 0)), ValueError, r"nade_hidden\[1\]: expected an integer >= 1, received 0"),
    (dict(ais_schedule="linear"), ValueError, r"ais_schedule: expected 'uniform' or 'piecewise', received 'linear'"),
    (dict(cd_rate=0.0), ValueError, r"cd_rate: expected a value in \(0.0, inf\), received 0.0"),
    (dict(nades=()), ValueError, r"nades: expected a non-empty sequence of \(hidden units, loss\) pairs"),
    (dict(nades=((500, "ml"),)), ValueError, r"nades: expected .* with a loss in \['kl', 'se', 'sm'\], received"),
    (dict(nades=((0, "kl"),)), ValueError, r"nades\[0\]\[0\]: expected an integer >= 1, received 0"),
    (dict(nades=((5, "kl"), (5, "kl"))), ValueError, r"nades: expected distinct pairs"),
])
def test_rbm_nade_settings_name_the_bad_field(override, error, match):
    from kd_ref.experiments import rbm_nade

    with pytest.raises(error, match=match):
        rbm_nade.Settings.quick(**override).validate()
    rbm_nade.Settings.quick(burn_in=0, sample_burn_in=0, upper_burn_in=0, hill_restarts=0).validate()   # no sweeps


@pytest.mark.parametrize("argv, message", [
    (["--target", "0"], "--target: expected a half-width > 0 nats, received 0.0"),
    (["--max-n", "0"], "--max-n: expected an integer >= 2, received 0"),
])
def test_bench_logz_refuses_bad_options_before_loading_the_run(argv, message, capsys):
    from kd_ref.bench import logz

    with pytest.raises(SystemExit) as exit_info:
        logz.main(argv + ["--run", "/nonexistent"])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
