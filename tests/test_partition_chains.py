"""Bridge sampling with several samples per NADE-seeded Gibbs chain: coverage, the control that must fail, bad input.

The test RBM (D = 10 visibles, 3 hiddens) is made to mix slowly: hidden unit 0 has weight
W_MODE to every visible and bias -W_MODE D / 2, and the visible biases are -W_MODE / 2, so p
has two modes of about equal mass (most pixels on, most pixels off) between which block Gibbs
crosses rarely. The NADE is fitted to p with the "on" mode weighted 3 : 1, so q misweights the
modes: chains seeded at q must cross to reach p (a burn-in is needed), and log phi - log q
differs between the modes, so successive samples of a chain are strongly correlated. log Z is
exact by enumeration. Everything is seeded, so every count is deterministic; the required
coverage (>= 95 of 100 for intervals of nominal 99.7%) is the one of tests/test_partition.py.
"""
import numpy as np
import pytest

from kd_ref.bench.logz import PILOT_CHAINS, PILOT_EVERY, PILOT_SWEEPS, SAMPLES_PER_CHAIN, THIN
from kd_ref.distill.generative import seeded_chain_bridge, seeded_chain_trace
from kd_ref.nade import NADE
from kd_ref.partition import (BurnInDiagnostic, ChainBridgeEstimate, ais_rbm, bridge_sampling, bridge_sampling_chains,
                              burn_in_diagnostic)
from kd_ref.rbm import RBM, binary_states

D, W_MODE, MODE_WEIGHT = 10, 2.0, 3.0
N_CHAINS, N_REPEATS = 200, 100
DTYPE = np.float32          # the bench's default sampling precision


@pytest.fixture(scope="module")
def sticky():
    """(rbm, nade, exact log Z, the bench's burn-in diagnostic on it)."""
    r = np.random.default_rng(1)
    rbm = RBM(D, 3, r, init_std=0.5)
    rbm.W[:, 0] = W_MODE
    rbm.b_hidden[0] = -W_MODE * D / 2
    rbm.b_visible[...] = -W_MODE / 2 + r.normal(0.0, 0.1, D)
    log_z = rbm.log_z_exact()
    x = binary_states(0, 2**D, D)
    p = np.exp(rbm.log_phi(x) - log_z)
    target = p * np.where(x.sum(axis=1) > D / 2, MODE_WEIGHT, 1.0)
    nade = NADE(D, 8, r, init_std=0.1)
    nade.fit(x[r.choice(2**D, size=5000, p=target / target.sum())], r, n_steps=500, progress=False, init_biases=True)
    sweeps, values, _ = seeded_chain_trace(rbm, nade, np.random.default_rng(5), n_chains=PILOT_CHAINS,
                                           n_sweeps=PILOT_SWEEPS, every=PILOT_EVERY, dtype=DTYPE)
    return rbm, nade, log_z, burn_in_diagnostic(values, sweeps)


@pytest.fixture(scope="module")
def repeats(sticky):
    """For each S of the bench: N_REPEATS seeded estimates in the bench's configuration (diagnostic burn-in)."""
    rbm, nade, _, diag = sticky
    return {s: [seeded_chain_bridge(rbm, nade, np.random.default_rng(100 + i), n_samples=N_CHAINS,
                                    burn_in=diag.burn_in, samples_per_chain=s, thin=THIN, dtype=DTYPE)[0]
                for i in range(N_REPEATS)]
            for s in SAMPLES_PER_CHAIN}


def test_the_test_rbm_needs_a_burn_in_and_the_diagnostic_finds_one(sticky):
    rbm, nade, log_z, diag = sticky
    assert isinstance(diag, BurnInDiagnostic) and diag.converged
    assert diag.z[0] < -10                           # at sweep 0 the chains are q's samples, far from p's level
    assert 0 < diag.detected < diag.burn_in == diag.window_start == PILOT_SWEEPS // 2
    assert np.all(np.abs(diag.z[np.searchsorted(diag.sweeps, diag.detected):]) <= diag.threshold)
    assert "burn-in" in str(diag) and "R-hat" in str(diag)


@pytest.mark.parametrize("per_chain", SAMPLES_PER_CHAIN)
def test_batch_means_intervals_of_the_bench_configuration_cover_the_exact_log_z(sticky, repeats, per_chain):
    log_z = sticky[2]
    estimates = repeats[per_chain]
    assert all(isinstance(e, ChainBridgeEstimate) and e.n_p == N_CHAINS * per_chain for e in estimates)
    assert sum(e.contains(log_z) for e in estimates) >= 95
    if per_chain > 1:      # the samples of a chain are correlated here: fewer effective samples than samples
        assert np.mean([e.p_effective_size for e in estimates]) < 0.5 * N_CHAINS * per_chain


def test_control_the_naive_standard_error_of_correlated_samples_loses_coverage(sticky, repeats):
    """The same samples, the standard error of bridge_sampling (every p sample independent): must fail."""
    log_z = sticky[2]
    estimates = repeats[max(SAMPLES_PER_CHAIN)]
    naive = [bridge_sampling(e.log_weights, np.zeros(e.n), e.log_weights_p, np.zeros(e.n_p)) for e in estimates]
    assert all(np.isclose(a.log_z, b.log_z, rtol=0, atol=1e-9) for a, b in zip(naive, estimates))
    assert sum(e.contains(log_z) for e in naive) < 90
    assert np.median([e.naive_std_error / e.std_error for e in estimates]) < 0.7


def test_one_sample_per_chain_agrees_with_bridge_sampling():
    rng = np.random.default_rng(0)
    phi_q, q_q = rng.normal(size=60), rng.normal(size=60)
    phi_p, q_p = rng.normal(size=(40, 1)), rng.normal(size=(40, 1))
    a = bridge_sampling_chains(phi_q, q_q, phi_p, q_p)
    b = bridge_sampling(phi_q, q_q, phi_p.ravel(), q_p.ravel())
    for name in ("log_z", "std_error", "lower", "upper"):
        assert np.isclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=0), name
    assert np.array_equal(a.trace, b.trace) and a.converged == b.converged
    assert np.isclose(a.naive_std_error, b.std_error, rtol=1e-12) and a.p_effective_size == pytest.approx(40)
    c = bridge_sampling_chains(phi_q[:40], q_q[:40], phi_p, q_p, paired=True)   # same fixed point, covariance in SE
    assert np.isclose(c.log_z, bridge_sampling(phi_q[:40], q_q[:40], phi_p.ravel(), q_p.ravel()).log_z, rtol=1e-12)


def test_paired_standard_error_counts_the_seed_covariance():
    """p samples that are their seeds (no burn-in): a_c and b_c are negatively correlated, and the paired
    standard error, which includes Cov(a_c, b_c), is the larger one."""
    rng = np.random.default_rng(3)
    log_q = rng.normal(size=500)
    log_phi = log_q + 0.8 * rng.normal(size=500)
    paired = bridge_sampling_chains(log_phi, log_q, log_phi[:, None], log_q[:, None], paired=True)
    unpaired = bridge_sampling_chains(log_phi, log_q, log_phi[:, None], log_q[:, None])
    assert paired.log_z == unpaired.log_z and paired.std_error > 1.2 * unpaired.std_error


def test_burn_in_diagnostic_on_stationary_and_drifting_values():
    rng = np.random.default_rng(0)
    still = burn_in_diagnostic(rng.normal(size=(50, 400)))
    assert still.converged and still.detected == 0 and still.burn_in == still.window_start == 25
    assert abs(still.r_hat - 1) < 0.02
    transient = burn_in_diagnostic(rng.normal(size=(50, 400)) - 5.0 * 0.5 ** np.arange(50)[:, None])
    assert transient.converged and 0 < transient.detected < transient.burn_in == 25
    drift = burn_in_diagnostic(rng.normal(size=(50, 400)) + 0.05 * np.arange(50)[:, None])
    assert not drift.converged and drift.burn_in == 49
    slow = rng.normal(size=(200, 400))
    slow[:80] -= 0.035                 # 0.7 pointwise standard errors: the running mean over sweeps sees it
    small = burn_in_diagnostic(slow)
    assert np.mean(np.abs(small.z[:80]) > 3) < 0.05 and small.segment_z[0] < -3 and small.detected >= 40
    at = burn_in_diagnostic(rng.normal(size=(5, 10)), sweeps=np.array([0, 3, 6, 9, 12]))
    assert at.sweeps.tolist() == [0, 3, 6, 9, 12]


@pytest.mark.parametrize("call, error, match", [
    (lambda: bridge_sampling_chains(np.zeros(4), np.zeros(4), np.zeros(6), np.zeros(6)), ValueError,
     r"log_phi_p: expected an array of shape \(n_chains, samples_per_chain\), received shape \(6,\)"),
    (lambda: bridge_sampling_chains(np.zeros(4), np.zeros(4), np.zeros((3, 2)), np.zeros((2, 3))), ValueError,
     r"log_q_p: expected shape \(3, 2\) \(like log_phi_p\), received \(2, 3\)"),
    (lambda: bridge_sampling_chains(np.zeros(4), np.zeros(4), np.zeros((1, 5)), np.zeros((1, 5))), ValueError,
     "log_phi_p: expected at least 2 independent chains for a batch-means standard error, received 1"),
    (lambda: bridge_sampling_chains(np.zeros(4), np.zeros(4), np.zeros((3, 0)), np.zeros((3, 0))), ValueError,
     "log_phi_p: expected at least 1 sample per chain, received 0"),
    (lambda: bridge_sampling_chains(np.zeros(4), np.zeros(4), np.zeros((3, 2)), np.zeros((3, 2)), paired=True),
     ValueError, r"log_phi_q: expected one q sample per chain \(3\) with paired=True, received 4"),
    (lambda: bridge_sampling_chains(np.zeros(4), np.zeros(4), np.zeros((3, 2)), np.zeros((3, 2)), paired=1),
     TypeError, "paired"),
    (lambda: burn_in_diagnostic(np.zeros((3, 5))), ValueError,
     r"values: expected at least 4 recorded sweeps of at least 2 chains, shape \(T, K\), received shape \(3, 5\)"),
    (lambda: burn_in_diagnostic(np.zeros((4, 5)), sweeps=np.array([0, 2, 1, 3])), ValueError,
     "sweeps: expected 4 increasing integer sweep counts >= 0"),
    (lambda: burn_in_diagnostic(np.zeros((4, 5)), threshold=0), ValueError, "threshold"),
])
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_seeded_chain_functions_refuse_bad_options(sticky):
    rbm, nade = sticky[:2]
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="samples_per_chain: expected an integer >= 1, received 0"):
        seeded_chain_bridge(rbm, nade, rng, n_samples=10, burn_in=1, samples_per_chain=0)
    with pytest.raises(ValueError, match="n_samples: expected an integer >= 2, received 1"):
        seeded_chain_bridge(rbm, nade, rng, n_samples=1, burn_in=1)
    with pytest.raises(ValueError, match="n_sweeps: expected an integer >= 6, received 5"):
        seeded_chain_trace(rbm, nade, rng, n_chains=10, n_sweeps=5, every=2)
    with pytest.raises(TypeError, match="dtype"):
        seeded_chain_bridge(rbm, nade, rng, n_samples=10, burn_in=1, dtype=np.int64)


def test_seeded_chain_bridge_with_one_sample_is_estimate_log_z_bridge(sticky):
    """S = 1 in float64: the same draws, chains and estimate as estimate_log_z's bridge sampling."""
    from kd_ref.distill.generative import estimate_log_z

    rbm, nade = sticky[:2]
    est, seconds = seeded_chain_bridge(rbm, nade, np.random.default_rng(7), n_samples=300, burn_in=5)
    ref = estimate_log_z(rbm, nade, np.random.default_rng(7), n_samples=300, burn_in=5,
                         upper_samples=np.zeros((2, D)), upper_seconds=0.0)["bridge"]
    assert np.isclose(est.log_z, ref.log_z, rtol=0, atol=1e-12) and est.n_p == ref.n_p == 300
    assert seconds >= est.seconds


def test_ais_in_float32_covers_the_exact_log_z(sticky):
    rbm, _, log_z, _ = sticky
    runs = [ais_rbm(rbm.W, rbm.b_visible, rbm.b_hidden, np.random.default_rng(i), n_runs=100, n_temperatures=300,
                    dtype=dtype) for i in range(3) for dtype in (np.float64, np.float32)]
    assert all(r.contains(log_z) for r in runs)
    assert runs[0].log_z != runs[1].log_z                    # float32 draws another stream
