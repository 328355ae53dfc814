"""log Z estimators (kd_ref.partition): exact answers on enumerable RBMs, coverage, AIS, bad input.

The tiny RBMs (D = 10 visibles, H = 5 hiddens, weights N(0, 1.5^2) unless stated,
biases N(0, 1)) are small enough to enumerate, so
log Z, p(x) and every expectation are known exactly, and p can be sampled exactly
with ``rng.choice``. The proposals q are exactly sampleable but differ from p:

* "product": independent Bernoullis with p's exact marginals (no correlations);
* "mixture": (1 - 0.3) p + 0.3 uniform.

Statistical checks use fixed seeds, so every outcome is deterministic; their
tolerances are stated next to them and follow from the +-3 SE intervals
(nominal coverage 99.7%, required >= 95% over 100 repetitions).
"""
import doctest
import time

import numpy as np
import pytest
from scipy.special import logsumexp
from hypothesis import given
from hypothesis import strategies as st

from kd_ref import partition as pf
from kd_ref.partition import (AISEstimate, BridgeEstimate, LogZEstimate, ais_rbm, beta_schedule, bridge_sampling,
                              importance_sampling, kl_lower_bound, kl_upper_bound, log_mean_weight, trivial_lower_bound)

D, H = 10, 5
N_SAMPLES = 1000
N_REPEATS = 100


# ------------------------------------------------------------------------------ exact tiny RBMs
def rbm_log_phi(v, W, b_visible, b_hidden):
    """log phi(v) = b_v.v + sum_j softplus(b_h,j + v.W[:, j]) for rows v (N, D)."""
    return v @ b_visible + np.logaddexp(0.0, v @ W + b_hidden).sum(axis=1)


def binary_states(n):
    """All 2^n binary vectors as rows, float64 (2^n, n)."""
    return ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(np.float64)


def exact_log_z(W, b_visible, b_hidden):
    """log Z of a binary RBM by enumerating the smaller layer (test helper; rbm.py has the library one)."""
    n_vis, n_hid = W.shape
    if n_vis <= n_hid:
        return float(logsumexp(rbm_log_phi(binary_states(n_vis), W, b_visible, b_hidden)))
    h = binary_states(n_hid)  # sum over v in closed form: log phi(h) = b_h.h + sum_i softplus(b_v,i + W[i].h)
    return float(logsumexp(h @ b_hidden + np.logaddexp(0.0, h @ W.T + b_visible).sum(axis=1)))


def random_rbm(seed, scale=1.0, n_vis=D, n_hid=H):
    r = np.random.default_rng(seed)
    return r.normal(0.0, scale, (n_vis, n_hid)), r.normal(0.0, 1.0, n_vis), r.normal(0.0, 1.0, n_hid)


class Problem:
    """A tiny RBM p with every state enumerated, and a proposal q over the same states."""

    def __init__(self, seed, proposal, scale=1.5):
        self.name = proposal
        self.W, self.bv, self.bh = random_rbm(seed, scale)
        self.states = binary_states(D)
        self.log_phi = rbm_log_phi(self.states, self.W, self.bv, self.bh)
        self.log_z = exact_log_z(self.W, self.bv, self.bh)
        self.p = np.exp(self.log_phi - self.log_z)
        marginals = self.p @ self.states
        if proposal == "product":
            log_q = self.states @ np.log(marginals) + (1.0 - self.states) @ np.log1p(-marginals)
        elif proposal == "mixture":
            log_q = np.log(0.7 * self.p + 0.3 / 2 ** D)
        elif proposal == "exact":
            log_q = self.log_phi - self.log_z
        else:
            raise ValueError(proposal)
        self.log_q = log_q
        self.q = np.exp(log_q)
        self.q /= self.q.sum()  # sampling weights (the log q values above are already normalised)

    def draw(self, rng, n=N_SAMPLES):
        """(log phi, log q) at n exact samples of q, then at n exact samples of p."""
        iq = rng.choice(self.states.shape[0], size=n, p=self.q)
        ip = rng.choice(self.states.shape[0], size=n, p=self.p)
        return self.log_phi[iq], self.log_q[iq], self.log_phi[ip], self.log_q[ip]


@pytest.fixture(scope="module", params=["product", "mixture"])
def problem(request):
    return Problem(3, request.param)


def test_exact_log_z_helper_agrees_with_full_enumeration():
    for seed, (n_vis, n_hid) in enumerate([(10, 5), (4, 7), (6, 6)]):
        W, bv, bh = random_rbm(seed, 1.5, n_vis, n_hid)
        full = logsumexp(rbm_log_phi(binary_states(n_vis), W, bv, bh))
        assert abs(exact_log_z(W, bv, bh) - full) < 1e-10


def test_proposals_differ_from_the_target(problem):
    """Otherwise the coverage tests below would be trivial."""
    tv = 0.5 * np.abs(problem.p - problem.q).sum()
    assert tv > 0.1


# --------------------------------------------------------------------- importance and bridge
def exact_relative_errors(problem, n):
    """Asymptotic relative standard errors of the importance and bridge estimates of Z, by enumeration.

    IS: Var_q(w) / n with w = phi / (Z q). Bridge at the true Z (equal sample sizes, so
    s_p = s_q = 1/2): a = phi*/q over q, b = phi*/phi over p, rel^2 = Var(a)/(n A^2) + Var(b)/(n B^2).
    """
    w = np.exp(problem.log_phi - problem.log_z - problem.log_q)
    q, p = np.exp(problem.log_q), problem.p
    rel_is = np.sqrt((q @ w ** 2 - 1.0) / n)
    a, b = w / (0.5 * w + 0.5), 1.0 / (0.5 * w + 0.5)  # Z scaled out: both are ratios of A and B
    A, B = q @ a, p @ b
    rel_br = np.sqrt((q @ a ** 2 - A ** 2) / (n * A ** 2) + (p @ b ** 2 - B ** 2) / (n * B ** 2))
    return rel_is, rel_br


def test_importance_and_bridge_cover_the_exact_value(problem):
    """Both +-3 SE intervals contain the exact log Z in >= 95 of 100 seeded repetitions.

    Also: bridge sampling converges within the thesis's 10 updates; its reported
    standard error averages to within 10% of the exact asymptotic one; so does the
    importance-sampling one for the mixture proposal (weights bounded by 1/0.7). For the
    product proposal the weights are heavy-tailed (largest w = phi/(Zq) is about 3e4), and
    the sample SE of importance sampling then underestimates the true one (by about half
    here) -- a known weakness of importance sampling, and the reason bridge sampling is
    preferred in 4.2.4, so it is not asserted. Bridge sampling is at least as accurate.
    """
    rng = np.random.default_rng(2024)
    hits = {"is": 0, "bridge": 0}
    est = {"is": [], "bridge": []}
    se = {"is": [], "bridge": []}
    for _ in range(N_REPEATS):
        phi_q, q_q, phi_p, q_p = problem.draw(rng)
        r_is = importance_sampling(phi_q, q_q)
        r_br = bridge_sampling(phi_q, q_q, phi_p, q_p)
        for key, r in (("is", r_is), ("bridge", r_br)):
            hits[key] += r.contains(problem.log_z)
            est[key].append(r.log_z)
            se[key].append(r.std_error)
        assert r_br.converged and r_br.iterations <= 10
    assert hits["is"] >= 95 and hits["bridge"] >= 95, hits
    rel_is, rel_br = exact_relative_errors(problem, N_SAMPLES)
    assert abs(np.mean(se["bridge"]) / rel_br - 1.0) < 0.1, (np.mean(se["bridge"]), rel_br)
    if problem.name == "mixture":
        assert abs(np.mean(se["is"]) / rel_is - 1.0) < 0.1, (np.mean(se["is"]), rel_is)
    assert np.std(est["bridge"]) <= 1.05 * np.std(est["is"])


def test_bounds_bracket_the_exact_value_and_match_their_expectations(problem):
    """Upper bound: mean over p samples of log phi - log q; its exact value is log Z + KL(p||q).

    Checks (one seed, n = 1000 exact samples): each estimate lies within 4 SE of its
    exact expectation (computed by enumeration), and the bounds bracket log Z up to
    3 SE: upper + 3 SE >= log Z >= lower - 3 SE. The trivial bound over the sampled
    points never exceeds log Z, and over all states equals max log phi.
    """
    phi_q, q_q, phi_p, q_p = problem.draw(np.random.default_rng(7))
    up, lo = kl_upper_bound(phi_p, q_p), kl_lower_bound(phi_q, q_q)
    exact_up = problem.p @ (problem.log_phi - problem.log_q)
    exact_lo = problem.q @ (problem.log_phi - problem.log_q)
    assert exact_lo < problem.log_z < exact_up  # KL > 0 both ways: q is not p
    assert abs(up.log_z - exact_up) < 4 * up.std_error
    assert abs(lo.log_z - exact_lo) < 4 * lo.std_error
    assert up.upper >= problem.log_z >= lo.lower
    assert np.isclose(up.upper - up.log_z, 3 * up.std_error) and np.isclose(up.log_z - up.lower, 3 * up.std_error)
    triv = trivial_lower_bound(np.concatenate([phi_q, phi_p]))
    assert triv.log_z <= problem.log_z and triv.std_error == 0.0 and triv.n == 2 * N_SAMPLES
    assert trivial_lower_bound(problem.log_phi).log_z == problem.log_phi.max()


def test_bound_estimates_bracket_in_repetitions(problem):
    """Over 100 repetitions the estimated upper bound minus 3 SE stays above log Z in >= 95
    (it sits KL(p||q) above log Z in expectation) and likewise the lower bound below."""
    rng = np.random.default_rng(11)
    ok = 0
    for _ in range(N_REPEATS):
        phi_q, q_q, phi_p, q_p = problem.draw(rng, n=300)
        ok += kl_upper_bound(phi_p, q_p).upper >= problem.log_z >= kl_lower_bound(phi_q, q_q).lower
    assert ok >= 95


def test_importance_sampling_is_exact_with_zero_variance_when_q_is_p():
    prob = Problem(5, "exact")
    phi_q, q_q, phi_p, q_p = prob.draw(np.random.default_rng(0), n=200)
    r = importance_sampling(phi_q, q_q)
    assert abs(r.log_z - prob.log_z) < 1e-12
    assert r.std_error < 1e-12 and r.upper - r.lower < 1e-10
    b = bridge_sampling(phi_q, q_q, phi_p, q_p)
    assert abs(b.log_z - prob.log_z) < 1e-12 and b.converged and b.std_error < 1e-12


def test_bridge_fixed_point_matches_a_plain_linear_space_solution(problem):
    """An independent solution of Z = mean_q[phi/(s_p phi + s_q Z q)] / mean_p[q/(s_p phi + s_q Z q)]
    by plain iteration in linear space (fine here: log Z is about 10), with unequal sample sizes."""
    rng = np.random.default_rng(3)
    phi_q, q_q, _, _ = problem.draw(rng, n=400)
    _, _, phi_p, q_p = problem.draw(rng, n=700)
    s_q, s_p = 400 / 1100, 700 / 1100
    z = 1.0
    for _ in range(500):
        fq, qq, fp, qp = np.exp(phi_q), np.exp(q_q), np.exp(phi_p), np.exp(q_p)
        z = np.mean(fq / (s_p * fq + s_q * z * qq)) / np.mean(qp / (s_p * fp + s_q * z * qp))
    r = bridge_sampling(phi_q, q_q, phi_p, q_p, max_iter=200, tol=1e-13)
    assert r.converged and abs(r.log_z - np.log(z)) < 1e-10
    assert r.n == 400 and r.n_p == 700 and r.trace.shape == (r.iterations + 1,)
    assert r.log_z == r.trace[-1]


def test_bridge_starting_values_reach_the_same_fixed_point(problem):
    phi_q, q_q, phi_p, q_p = problem.draw(np.random.default_rng(4))
    results = [bridge_sampling(phi_q, q_q, phi_p, q_p, max_iter=100, log_z_init=s)
               for s in (None, "importance", 0.0, 50.0)]
    for r in results:
        assert r.converged
        assert abs(r.log_z - results[0].log_z) < 1e-9
    assert results[1].trace[0] == importance_sampling(phi_q, q_q).log_z
    assert results[2].trace[0] == 0.0 and results[3].trace[0] == 50.0
    # the thesis's literal start Z = 1: when phi / q >> 1 (here phi is scaled by e^100) the
    # first update is the reciprocal importance estimate 1 / E_p[q / phi]
    far = bridge_sampling(phi_q + 100, q_q, phi_p + 100, q_p, max_iter=1, log_z_init=0.0)
    assert abs(far.trace[1] - (-(logsumexp(q_p - phi_p - 100) - np.log(q_p.size)))) < 1e-10
    # with a cap of 2 updates from far away the iteration is reported as not converged
    short = bridge_sampling(phi_q, q_q, phi_p, q_p, max_iter=2, log_z_init=0.0)
    assert not short.converged and short.iterations == 2 and short.log_z == short.trace[-1]
    assert short.trace.shape == (3,) and abs(short.log_z - results[2].log_z) > 1e-6


def test_estimators_are_shift_equivariant_and_do_not_overflow(problem):
    """Adding c to log phi adds c to log Z; c = +-1e4 (weights e^(+-1e4)) must stay finite."""
    phi_q, q_q, phi_p, q_p = problem.draw(np.random.default_rng(5))
    base_is = importance_sampling(phi_q, q_q)
    base_br = bridge_sampling(phi_q, q_q, phi_p, q_p)
    for c in (1e4, -1e4):
        r = importance_sampling(phi_q + c, q_q)
        assert abs(r.log_z - base_is.log_z - c) < 1e-8 and abs(r.std_error - base_is.std_error) < 1e-10
        b = bridge_sampling(phi_q + c, q_q, phi_p + c, q_p)
        assert abs(b.log_z - base_br.log_z - c) < 1e-8 and np.isfinite(b.upper) and np.isfinite(b.lower)
        for f in (kl_upper_bound(phi_p + c, q_p), kl_lower_bound(phi_q + c, q_q)):
            assert np.isfinite(f.log_z)


def test_log_mean_weight_interval_and_minus_inf_lower_end():
    lw = np.log([1.0, 2.0, 3.0, 6.0])
    log_mean, rel, lower, upper = log_mean_weight(lw)
    w = np.exp(lw)
    se = w.std(ddof=1) / 2.0
    assert abs(log_mean - np.log(3.0)) < 1e-14
    assert abs(rel - se / 3.0) < 1e-14
    assert abs(upper - np.log(3.0 + 3 * se)) < 1e-14
    assert lower == -np.inf  # 3 - 3 * 2.16 < 0: the data cannot exclude a much smaller Z
    log_mean, rel, lower, upper = log_mean_weight(np.log([1.0, 1.1, 0.9, 1.05, 0.95]))
    assert abs(lower - np.log(1.0 - 3 * np.std([1.0, 1.1, 0.9, 1.05, 0.95], ddof=1) / np.sqrt(5))) < 1e-14


# ------------------------------------------------------------------------------------------ AIS
def test_ais_is_exact_without_couplings():
    """W = 0 and a base equal to the RBM's visible factor: every log weight equals log Z exactly."""
    r = np.random.default_rng(0)
    bv, bh = r.normal(size=D), r.normal(size=H)
    res = ais_rbm(np.zeros((D, H)), bv, bh, np.random.default_rng(1), n_runs=20, n_temperatures=7,
                  base_marginals=1.0 / (1.0 + np.exp(-bv)))
    exact = np.logaddexp(0, bv).sum() + np.logaddexp(0, bh).sum()
    assert abs(res.log_z - exact) < 1e-12 and np.ptp(res.log_weights) < 1e-12
    assert abs(res.log_z_base - (np.logaddexp(0, bv).sum() + H * np.log(2))) < 1e-12


def test_ais_converges_to_the_exact_value_as_temperatures_grow():
    """Strongly coupled tiny RBM, uniform base, 100 runs, 5 seeds: the mean absolute error with
    10,000 temperatures is < 1/5 of that with 10, and each 10,000-temperature interval holds log Z."""
    W, bv, bh = random_rbm(1, scale=2.0)
    log_z = exact_log_z(W, bv, bh)
    errors = {10: [], 10_000: []}
    for k in errors:
        for seed in range(5):
            res = ais_rbm(W, bv, bh, np.random.default_rng(seed), n_runs=100, n_temperatures=k)
            assert isinstance(res, AISEstimate) and res.log_weights.shape == (100,) and res.n_temperatures == k
            errors[k].append(abs(res.log_z - log_z))
            if k == 10_000:
                assert res.contains(log_z), (res.log_z, log_z, res.interval)
    assert np.mean(errors[10_000]) < np.mean(errors[10]) / 5, errors


def test_ais_with_data_marginals_and_piecewise_schedule_covers_exact_value():
    W, bv, bh = random_rbm(2, scale=1.5)
    states = binary_states(D)
    lp = rbm_log_phi(states, W, bv, bh)
    log_z = logsumexp(lp)
    marginals = np.exp(lp - log_z) @ states
    hits = 0
    for seed in range(20):
        res = ais_rbm(W, bv, bh, np.random.default_rng(seed), n_runs=50, n_temperatures=300,
                      schedule="piecewise", base_marginals=marginals)
        hits += res.contains(log_z)
    assert hits >= 19


def test_ais_sweep_and_weights_are_vectorised_over_runs():
    """One call on M runs (rows) equals M calls on single rows with the same uniforms, and a
    whole AIS pass over 2,000 runs costs about as much as a few dozen single-run passes."""
    W, bv, bh = random_rbm(4, scale=1.0)
    r = np.random.default_rng(0)
    v = (r.random((64, D)) < 0.5).astype(float)
    a = v @ W + bh
    u_h, u_v = r.random((64, H)), r.random((64, D))
    vis = 0.3 * r.normal(size=D) + 0.7 * bv
    batch = pf._ais_gibbs_sweep(a, 0.7, vis, W, u_h, u_v)
    rows = np.vstack([pf._ais_gibbs_sweep(a[i:i + 1], 0.7, vis, W, u_h[i:i + 1], u_v[i:i + 1]) for i in range(64)])
    assert np.array_equal(batch, rows)
    d = bv - 0.1
    lr = pf._ais_log_ratio(v, a, 0.7, 0.6, d)
    assert lr.shape == (64,)
    assert np.allclose(lr, [pf._ais_log_ratio(v[i:i + 1], a[i:i + 1], 0.7, 0.6, d)[0] for i in range(64)],
                       rtol=0, atol=1e-13)
    t0 = time.perf_counter()
    ais_rbm(W, bv, bh, np.random.default_rng(0), n_runs=2, n_temperatures=200)
    single = time.perf_counter() - t0
    t0 = time.perf_counter()
    ais_rbm(W, bv, bh, np.random.default_rng(0), n_runs=2000, n_temperatures=200)
    many = time.perf_counter() - t0
    assert many < 100 * single, (single, many)  # a loop over runs would cost ~1000x


def test_ais_gibbs_sweep_leaves_the_annealed_distribution_invariant():
    """Exact samples of p_beta pushed through one sweep still follow p_beta: total-variation
    distance below 0.05 with 40,000 draws over 1,024 states (sampling noise ~0.03), while the
    same check against the beta = 1 RBM fails (control)."""
    W, bv, bh = random_rbm(6, scale=1.5)
    base = np.random.default_rng(9).normal(size=D)
    beta = 0.6
    states = binary_states(D)
    vis = (1 - beta) * base + beta * bv
    log_f = states @ vis + np.logaddexp(0, beta * (states @ W + bh)).sum(axis=1)
    p_beta = np.exp(log_f - logsumexp(log_f))
    rng = np.random.default_rng(10)
    n = 40_000
    v = states[rng.choice(states.shape[0], size=n, p=p_beta)]
    v = pf._ais_gibbs_sweep(v @ W + bh, beta, vis, W, rng.random((n, H)), rng.random((n, D)))
    counts = np.bincount((v @ (1 << np.arange(D))).astype(int), minlength=2 ** D) / n
    assert 0.5 * np.abs(counts - p_beta).sum() < 0.05
    lp = rbm_log_phi(states, W, bv, bh)
    assert 0.5 * np.abs(counts - np.exp(lp - logsumexp(lp))).sum() > 0.1


def test_beta_schedules():
    u = beta_schedule(4)
    assert np.allclose(u, [0, 0.25, 0.5, 0.75, 1.0])
    b = beta_schedule(14_500, "piecewise")
    assert b.shape == (14_501,) and b[0] == 0.0 and b[-1] == 1.0 and np.all(np.diff(b) > 0)
    steps = np.diff(b)
    assert np.allclose(steps[:500], 1e-3) and np.allclose(steps[500:4500], 1e-4) and np.allclose(steps[4500:], 1e-5)
    small = beta_schedule(29, "piecewise")
    assert small.shape == (30,) and np.all(np.diff(small) > 0)


@pytest.mark.data
def test_ais_on_cd25_500(data_dir):
    """CD25(500) with 100 runs x 2,000 uniform temperatures (about 15 s on one core): finite and
    within 3 nats of Salakhutdinov and Murray's 451.3 (their run used 14,500 temperatures), and
    above the all-black image's log phi of 436.49 (the trivial bound 4.50)."""
    rbm = np.load(data_dir / "rbm_cd25_500.npz", allow_pickle=False)
    x = np.load(data_dir / "binarized_mnist.npz", allow_pickle=False)["x_train"]
    n = x.shape[0]
    marginals = (x.sum(axis=0, dtype=np.float64) + 0.05 * n) / (1.05 * n)  # S&M-style smoothing
    W, bv, bh = rbm["W"], rbm["b_visible"], rbm["b_hidden"]
    res = ais_rbm(W, bv, bh, np.random.default_rng(0), n_runs=100, n_temperatures=2000, base_marginals=marginals)
    assert np.isfinite(res.log_z) and np.isfinite(res.upper)
    assert abs(res.log_z - 451.3) < 3.0, str(res)
    black = trivial_lower_bound(rbm_log_phi(np.zeros((1, 784)), W, bv, bh))
    assert abs(black.log_z - 436.4938) < 1e-3 and black.log_z < res.log_z


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("call, match", [
    (lambda: importance_sampling(np.zeros(5), np.zeros(4)), r"log_q_q: expected 5 values.*received 4"),
    (lambda: kl_upper_bound(np.zeros(3), np.zeros(2)), r"log_q_p: expected 3 values.*received 2"),
    (lambda: kl_lower_bound(np.zeros((3, 1)), np.zeros(3)), r"log_phi_q: expected a 1-d array, received shape"),
    (lambda: bridge_sampling(np.zeros(3), np.zeros(3), np.zeros(4), np.zeros(5)),
     r"log_q_p: expected 4 values.*received 5"),
    (lambda: importance_sampling([0.0, np.nan], [0.0, 0.0]), r"log_phi_q: expected finite values, received 1"),
    (lambda: kl_lower_bound([0.0, 1.0], [0.0, np.inf]), r"log_q_q: expected finite values"),
    (lambda: bridge_sampling(np.zeros(3), np.zeros(3), [0.0, -np.inf], np.zeros(2)), r"log_phi_p: expected finite"),
    (lambda: importance_sampling([1.0], [0.0]), r"log_phi_q: expected at least 2 samples .*interval, received 1"),
    (lambda: kl_upper_bound([], []), r"log_phi_p: expected at least 2 samples.*received 0"),
    (lambda: bridge_sampling(np.zeros(3), np.zeros(3), [1.0], [0.0]), r"log_phi_p: expected at least 2.*received 1"),
    (lambda: log_mean_weight([3.0]), r"log_weights: expected at least 2 samples.*received 1"),
    (lambda: trivial_lower_bound([]), r"log_phi: expected at least 1 value.*received 0"),
    (lambda: bridge_sampling(np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3), log_z_init="ais"),
     r"log_z_init: expected None, 'importance' or a finite float, received 'ais'"),
    (lambda: bridge_sampling(np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3), max_iter=0),
     r"max_iter: expected an integer >= 1, received 0"),
])
def test_bad_array_input_names_argument_expected_and_received(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_ais_input():
    W, bv, bh = random_rbm(0)
    g = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"b_visible: expected shape \(10,\), received shape \(9,\)"):
        ais_rbm(W, bv[:9], bh, g)
    with pytest.raises(ValueError, match=r"b_hidden: expected shape \(5,\), received shape \(6,\)"):
        ais_rbm(W, bv, np.zeros(6), g)
    with pytest.raises(ValueError, match=r"W: expected finite values"):
        ais_rbm(np.full((D, H), np.nan), bv, bh, g)
    with pytest.raises(ValueError, match=r"n_runs: expected an integer >= 2, received 1"):
        ais_rbm(W, bv, bh, g, n_runs=1)
    with pytest.raises(TypeError, match=r"rng: expected a numpy.random.Generator.*received int"):
        ais_rbm(W, bv, bh, 0)
    with pytest.raises(ValueError, match=r"betas: expected a strictly increasing array from 0 to 1.*from 0.1"):
        ais_rbm(W, bv, bh, g, betas=[0.1, 0.5, 1.0])
    with pytest.raises(ValueError, match=r"n_temperatures: expected None when betas is given, received 10"):
        ais_rbm(W, bv, bh, g, betas=[0.0, 1.0], n_temperatures=10)
    with pytest.raises(ValueError, match=r"kind: expected 'uniform' or 'piecewise', received 'geometric'"):
        ais_rbm(W, bv, bh, g, schedule="geometric")
    with pytest.raises(ValueError, match=r"n_temperatures: expected an integer >= 3 for the piecewise"):
        beta_schedule(2, "piecewise")
    with pytest.raises(ValueError, match=r"base_marginals: expected probabilities in \[0, 1\], received values in"):
        ais_rbm(W, bv, bh, g, base_marginals=np.full(D, 1.5))
    with pytest.raises(ValueError, match=r"base_marginals: expected shape \(10,\)"):
        ais_rbm(W, bv, bh, g, base_marginals=np.full(3, 0.5))


def test_result_objects_are_readable():
    r = importance_sampling([0.0, 0.1, -0.1], [0.0, 0.0, 0.0])
    assert isinstance(r, LogZEstimate) and r.interval == (r.lower, r.upper)
    assert "importance sampling" in str(r) and "+-3 SE" in str(r)
    b = bridge_sampling([0.0, 0.1, -0.1], [0.0, 0.0, 0.0], [0.2, 0.1], [0.0, 0.0])
    assert isinstance(b, BridgeEstimate) and b.half_width >= b.upper - b.log_z


def test_docstring_examples_run():
    assert doctest.testmod(pf).failed == 0


def test_ais_progress_line(capsys):
    W, bv, bh = random_rbm(0)
    res = ais_rbm(W, bv, bh, np.random.default_rng(0), n_runs=4, n_temperatures=50, progress=True)
    err = capsys.readouterr().err
    assert "AIS 50/50" in err and "beta 1" in err and f"log_z {res.log_z:.4g}" in err


# ------------------------------------------------------------------ validation gaps (issue 11)
def _mp_mean_se(values):
    import mpmath

    with mpmath.workdps(60):
        v = [mpmath.mpf(float(x)) for x in values]
        mean = mpmath.fsum(v) / len(v)
        sd = mpmath.sqrt(mpmath.fsum((x - mean) ** 2 for x in v) / (len(v) - 1))
        return float(mean), float(sd / mpmath.sqrt(len(v)))


def _mp_log_mean_weight(log_w):
    """log mean exp(log_w) and the relative standard error sd(w) / (sqrt(n) mean(w)), in 60 digits."""
    import mpmath

    with mpmath.workdps(60):
        w = [mpmath.exp(mpmath.mpf(float(x))) for x in log_w]
        n = len(w)
        mean = mpmath.fsum(w) / n
        sd = mpmath.sqrt(mpmath.fsum((x - mean) ** 2 for x in w) / (n - 1))
        return float(mpmath.log(mean)), float(sd / (mpmath.sqrt(n) * mean))


def _mp_bridge_trace(l_q, l_p, start, n_iter):
    """The fixed-point iterates of bridge_sampling (4.54) from log Z = ``start``, in 60 digits."""
    import mpmath

    with mpmath.workdps(60):
        n_q, n_p = len(l_q), len(l_p)
        s_q, s_p = mpmath.mpf(n_q) / (n_q + n_p), mpmath.mpf(n_p) / (n_q + n_p)
        eq = [mpmath.exp(mpmath.mpf(float(x))) for x in l_q]
        ep = [mpmath.exp(mpmath.mpf(float(x))) for x in l_p]
        z, trace = mpmath.exp(mpmath.mpf(start)), []
        for _ in range(n_iter):
            a = mpmath.fsum(e / (s_p * e + s_q * z) for e in eq) / n_q
            b = mpmath.fsum(1 / (s_p * e + s_q * z) for e in ep) / n_p
            z = a / b
            trace.append(float(mpmath.log(z)))
        return trace


_spread = st.floats(0.0, 300.0)        # log10 of the spread of the log weights


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 12), spread=_spread, centre=st.floats(-300.0, 300.0))
def test_kl_bounds_and_importance_sampling_at_huge_log_weight_spreads_match_an_exact_reference(seed, n, spread,
                                                                                               centre):
    """Log ratios up to +-1e300 apart (whose squares, and even sums, overflow float64): the KL bounds' mean
    and standard error and the importance-sampling estimate stay finite and match 60-digit arithmetic."""
    r = np.random.default_rng(seed)
    lw = np.sign(centre) * 10.0 ** abs(centre) * 0.5 + r.uniform(-1.0, 1.0, n) * 10.0**spread
    lw = lw.clip(-1e300, 1e300)
    for bound in (kl_upper_bound(lw, np.zeros(n)), kl_lower_bound(lw, np.zeros(n))):
        mean, se = _mp_mean_se(lw)
        assert bound.log_z == pytest.approx(mean, rel=1e-13, abs=1e-13 * np.max(np.abs(lw)))
        # sd to 1e-12, or to a few ulps of the largest value when it is tiny next to the values (conditioning)
        assert bound.std_error == pytest.approx(se, rel=1e-12, abs=4e-16 * np.max(np.abs(lw)))
        assert np.isfinite(bound.log_z) and np.isfinite(bound.std_error)
        assert not np.isnan(bound.lower) and not np.isnan(bound.upper)
    est = importance_sampling(lw, np.zeros(n))
    log_mean, rel = _mp_log_mean_weight(lw)
    assert est.log_z == pytest.approx(log_mean, rel=1e-14, abs=1e-12)
    assert est.std_error == pytest.approx(rel, rel=1e-10, abs=1e-15)
    assert np.isfinite(est.upper) and not np.isnan(est.lower)


@given(seed=st.integers(0, 2**32 - 1), n_q=st.integers(2, 6), n_p=st.integers(2, 6), spread=_spread)
def test_bridge_sampling_at_huge_log_weight_spreads_matches_an_exact_fixed_point_iteration(seed, n_q, n_p, spread):
    """Every iterate of 4.54 against the same iteration in 60 digits, for log ratios mixing O(1) values with
    values of up to +-1e300 (the form l - logaddexp(log s_p + l, ...) used before rounded log s_p away next to
    l = 1e300, a weight off by 1 / s_p). Accuracy is absolute, to a few ulps of the values the result is
    formed from (the median shift and the estimate itself)."""
    r = np.random.default_rng(seed)

    def draw(n):
        huge = r.uniform(-1.0, 1.0, n) * 10.0**spread
        return np.where(r.random(n) < 0.5, huge, r.normal(0.0, 2.0, n))

    l_q, l_p = draw(n_q), draw(n_p)
    est = bridge_sampling(l_q, np.zeros(n_q), l_p, np.zeros(n_p), max_iter=5, tol=0.0)
    want = np.array(_mp_bridge_trace(l_q, l_p, np.median(l_p), 5))
    assert est.iterations >= 1                      # tol = 0 stops only at an exact fixed point
    got, want = est.trace[1:], want[:est.iterations]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13 * (1.0 + abs(np.median(l_p)) + np.max(np.abs(want))))
    assert np.all(np.isfinite(est.trace)) and np.isfinite(est.std_error) and not np.isnan(est.lower)


def test_log_ratios_beyond_the_float64_range_are_a_clear_error():
    with pytest.raises(ValueError, match=r"log_phi_q - log_q_q: expected log ratios within the float64 range, "
                                         r"received 1.7e\+308 - -1.7e\+308, which overflows, at sample 1"):
        importance_sampling([0.0, 1.7e308], [0.0, -1.7e308])
    with pytest.raises(ValueError, match=r"log_phi_p - log_q_p: expected log ratios within the float64 range"):
        kl_upper_bound([0.0, -1.7e308], [0.0, 1.7e308])
    with pytest.raises(ValueError, match=r"log_phi_q - log_q_q: expected log ratios within the float64 range of "
                                         r"the median at the p samples"):
        bridge_sampling([1.7e308, 0.0], [0.0, 0.0], [-1.7e308, -1.7e308], [0.0, 0.0])
    # still representable: log ratios of 1e308 give 1e308, and a standard error too large for float64 gives
    # an infinite interval, never NaN
    est = kl_upper_bound([1.7e308, -1.7e308], [0.0, 0.0])
    assert est.log_z == 0.0 and est.std_error == pytest.approx(1.7e308) and est.interval == (-np.inf, np.inf)
    assert importance_sampling([1e308, 1e308], [0.0, 0.0]).log_z == 1e308


def test_complex_log_values_are_refused_by_every_estimator():
    z, c = np.zeros(3), np.zeros(3) + 0j
    calls = [lambda: kl_upper_bound(c, z), lambda: kl_lower_bound(z, c), lambda: trivial_lower_bound(c),
             lambda: importance_sampling(c, z), lambda: log_mean_weight(c),
             lambda: bridge_sampling(z, z, z, c)]
    for call in calls:
        with pytest.raises(TypeError, match=r"expected real numbers, received a complex array"):
            call()
    W, bv, bh = random_rbm(0)
    g = np.random.default_rng(0)
    with pytest.raises(TypeError, match=r"W: expected real numbers, received a complex array"):
        ais_rbm(W + 0j, bv, bh, g)
    with pytest.raises(TypeError, match=r"base_marginals: expected real numbers, received a complex array"):
        ais_rbm(W, bv, bh, g, base_marginals=np.full(D, 0.5 + 0j))
    with pytest.raises(TypeError, match=r"progress: expected True or False, received 'yes'"):
        ais_rbm(W, bv, bh, g, progress="yes")
    est = importance_sampling(z, z)
    with pytest.raises(TypeError, match=r"value: expected a real number \(not NaN\), received 1j"):
        est.contains(1j)
    with pytest.raises(TypeError, match=r"value: expected a real number \(not NaN\), received nan"):
        est.contains(np.nan)
    assert est.contains(0.0) and not est.contains(np.inf)
