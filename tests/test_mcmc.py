"""Slice sampler (kd_ref.mcmc): targets matched by moments and KS tests, invariance, controls, bad input.

Tolerances: thinned chains are treated as roughly independent, so moment bounds
use 5 standard errors of an i.i.d. sample of the same size, and KS tests require
p > 1e-3; the fixed seeds make every outcome deterministic.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from kd_ref.mcmc import SliceSampler, reference_slice_step, slice_sample


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


def test_vectorised_and_per_point_densities_give_the_same_chain():
    """Same seed: a vectorised log-density and a per-point one consume the generator identically."""
    scales = np.array([1.0, 3.0])
    per_point = SliceSampler(lambda x: -0.5 * float(np.sum((x / scales) ** 2)), np.zeros((3, 2)),
                             np.random.default_rng(5))
    vectorised = SliceSampler(lambda X: -0.5 * np.sum((X / scales) ** 2, axis=1), np.zeros((3, 2)),
                              np.random.default_rng(5), vectorized=True)
    for s in (per_point, vectorised):
        s.burn_in(5)
    a, b = per_point.sample(4), vectorised.sample(4)
    assert a.shape == (4, 3, 2)
    assert np.array_equal(a, b) and np.array_equal(per_point.width, vectorised.width)
    assert per_point.state.sweeps == 9 and per_point.state.n_evals == vectorised.n_evals > 0


def test_sampling_resumes_where_it_stopped():
    """sample(a) then sample(b) continues the same chain as sample(a + b)."""
    whole = SliceSampler(_std_normal, np.zeros(2), np.random.default_rng(12), thin=2)
    parts = SliceSampler(_std_normal, np.zeros(2), np.random.default_rng(12), thin=2)
    whole.burn_in(3)
    parts.burn_in(3)
    assert np.array_equal(whole.sample(7), np.concatenate([parts.sample(3), parts.sample(4)]))
    assert whole.sweeps == parts.sweeps == 3 + 14


def test_coordinates_are_updated_in_a_fresh_random_order_each_sweep():
    """Record which coordinate each evaluated point changes (relative to the chain's current state):
    every sweep visits the 3 coordinates once each, in a block, and over 1,200 sweeps the 6 orders are
    equally frequent (chi-square)."""
    visits = []
    holder = {}

    def log_density(x):
        if "s" in holder:
            changed = np.flatnonzero(x != holder["s"].x[0])
            assert changed.size == 1
            visits.append(int(changed[0]))
        return -0.5 * float(x @ x)

    s = holder["s"] = SliceSampler(log_density, np.zeros(3), np.random.default_rng(13))
    orders = []
    for _ in range(1200):
        start = len(visits)
        s.burn_in(1, adapt=False)
        sweep = visits[start:]
        blocks = [sweep[0]] + [c for p, c in zip(sweep, sweep[1:]) if c != p]
        assert sorted(blocks) == [0, 1, 2], blocks        # each coordinate once, all its evaluations together
        orders.append(tuple(blocks))
    counts = np.array([orders.count(o) for o in set(orders)])
    assert counts.size == 6
    assert stats.chisquare(counts).pvalue > 1e-3


def test_stepping_out_is_linear_and_capped_by_max_steps_out():
    """Uniform target on [-50, 50], width 1: an uncapped bracket grows one width at a time until it
    leaves the support (about 100 evaluations per update, and any point can be reached in one update);
    with max_steps_out = 3 the bracket spans at most 3 widths, so no update moves more than 3."""
    def flat(X):
        return np.where(np.all(np.abs(X) <= 50.0, axis=1), 0.0, -np.inf)

    free = SliceSampler(flat, np.zeros((200, 1)), np.random.default_rng(14), vectorized=True)
    before = free.x.copy()
    evals = free.n_evals
    free.burn_in(1, adapt=False)
    per_update = (free.n_evals - evals) / 200
    assert 100 <= per_update <= 106          # ~51 stepping-out evaluations per side + ~1 shrinkage point
    assert np.max(np.abs(free.x - before)) > 20.0

    capped = SliceSampler(flat, np.zeros((200, 1)), np.random.default_rng(14), vectorized=True, max_steps_out=3)
    moves = []
    for _ in range(30):
        before = capped.x.copy()
        capped.burn_in(1, adapt=False)
        moves.append(np.abs(capped.x - before))
    moves = np.concatenate(moves)
    assert np.max(moves) < 3.0 and np.max(moves) > 2.0
    # control: the cap binds, so the capped chain spreads out much more slowly than the free one
    assert np.std(capped.x) < 15.0 < np.std(free.sample(5)[-1])


def test_shrinkage_recovers_from_a_far_too_wide_bracket():
    """Width 1,000 on N(0, 1), no adaptation, 2,000 chains started from exact draws: nearly all the work
    is shrinkage (each update needs ~log2(1000) rejected points), and the target is kept."""
    rng = np.random.default_rng(15)
    n = 2000
    s = SliceSampler(lambda X: -0.5 * np.sum(X**2, axis=1), rng.normal(size=(n, 1)), rng, width=1000.0,
                     vectorized=True)
    evals = s.n_evals
    x = s.sample(3)[-1, :, 0]
    assert (s.n_evals - evals) / (3 * n) > 5      # many shrinkage steps per update
    assert stats.kstest(x, "norm").pvalue > 1e-3
    assert abs(x.var() - 1.0) < 5 * np.sqrt(2.0 / n)


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


# ------------------------------------------------------------------ validation gaps (issue 11)
def _sampler_state(s):
    return (s.x.copy(), s.logp.copy(), s.width.copy(), s._abs_move.copy(), s._n_moves.copy(), s._buffer.copy(),
            s.sweeps, s.n_evals, s.single_chain, s.rng.bit_generator.state)


def _assert_same_state(a, b):
    for u, v in zip(a[:6], b[:6]):
        assert np.array_equal(u, v)
    assert a[6:] == b[6:]


@pytest.mark.parametrize("call", ["burn_in", "sample", "next_batch"])
def test_a_log_density_failing_midway_leaves_the_sampler_exactly_as_it_was(call):
    """The density turns NaN after some evaluations, in the middle of a sweep of 3 chains: the chains, widths,
    counters, buffered rows and the generator's state are all restored, and the same call then succeeds
    with the same result as a sampler that never failed."""
    calls = {"n": 0, "fail_at": None}

    def log_density(X):
        calls["n"] += 1
        out = -0.5 * np.sum(X * X, axis=1)
        if calls["fail_at"] is not None and calls["n"] >= calls["fail_at"]:
            out[-1] = np.nan
        return out

    s = SliceSampler(log_density, np.zeros((3, 2)), np.random.default_rng(5), vectorized=True)
    twin = SliceSampler(lambda X: -0.5 * np.sum(X * X, axis=1), np.zeros((3, 2)), np.random.default_rng(5),
                        vectorized=True)
    for sampler in (s, twin):
        sampler.burn_in(3)
        sampler.next_batch(4)                         # leaves 2 rows buffered
    before = _sampler_state(s)
    run = {"burn_in": lambda t: t.burn_in(4), "sample": lambda t: t.sample(3),
           "next_batch": lambda t: t.next_batch(7)}[call]
    calls["fail_at"] = calls["n"] + 25                # well inside the call's first few sweeps
    with pytest.raises(ValueError, match="log_density: expected finite values or -inf, received nan"):
        run(s)
    _assert_same_state(_sampler_state(s), before)
    calls["fail_at"] = None
    got, want = run(s), run(twin)
    _assert_same_state(_sampler_state(s)[:8], _sampler_state(twin)[:8])
    if got is not None:
        np.testing.assert_array_equal(got, want)


def test_complex_inputs_and_log_densities_are_refused():
    rng = np.random.default_rng(12)
    with pytest.raises(TypeError, match="x0: expected real numbers, received a complex array"):
        SliceSampler(_std_normal, np.zeros(2) + 0j, rng)
    with pytest.raises(TypeError, match="width: expected real numbers, received a complex array"):
        SliceSampler(_std_normal, np.zeros(2), rng, width=np.ones(2) * (1 + 1j))
    with pytest.raises(TypeError, match="log_density: expected real numbers, received a complex array"):
        SliceSampler(lambda X: np.zeros(X.shape[0]) + 0j, np.zeros((2, 2)), rng, vectorized=True)
    with pytest.raises(TypeError, match="log_density: expected real numbers, received a complex array"):
        SliceSampler(lambda x: np.complex128(-0.5 * x @ x), np.zeros(2), rng)
    with pytest.raises(TypeError, match="log_density: expected real numbers, received a complex array"):
        SliceSampler(lambda x: complex(-0.5 * x @ x), np.zeros(2), rng)
    # a density real at the start and complex later: refused midway, the sampler unchanged
    s = SliceSampler(lambda x: -0.5 * float(x @ x) if abs(x[0]) < 0.5 else -0.5 + 0j, np.zeros(1), rng,
                     width=4.0)
    before = _sampler_state(s)
    with pytest.raises(TypeError, match="log_density: expected real numbers"):
        s.burn_in(20)
    _assert_same_state(_sampler_state(s), before)


def test_options_are_checked_before_the_log_density_is_evaluated():
    rng = np.random.default_rng(13)
    seen = []

    def f(x):
        seen.append(x)
        return -0.5 * float(x @ x)

    for kwargs, err, match in [({"vectorized": "no"}, TypeError, "vectorized: expected True or False, received 'no'"),
                               ({"adapt": 1}, TypeError, "adapt: expected True or False, received 1"),
                               ({"progress": None}, TypeError, "progress: expected True or False, received None"),
                               ({"burn_in": -1}, ValueError, "burn_in: expected an integer >= 0, received -1")]:
        with pytest.raises(err, match=match):
            slice_sample(f, np.zeros(2), 5, rng, **kwargs)
    with pytest.raises(ValueError, match="n_samples: expected an integer >= 1, received 0"):
        slice_sample(f, np.zeros(2), 0, rng)
    assert seen == []
    s = SliceSampler(f, np.zeros((2, 2)), rng)
    state = rng.bit_generator.state
    with pytest.raises(TypeError, match="adapt: expected True or False"):
        s.burn_in(3, adapt="yes")
    with pytest.raises(TypeError, match=r"index: expected chain indices in 0..1, received True"):
        s.keep_chains(True)
    assert rng.bit_generator.state == state and s.sweeps == 0


# --------------------------------------------------------- the plain twin
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(0, 2**32 - 1), st.floats(0.05, 5.0),
       st.one_of(st.none(), st.integers(1, 6)), st.booleans())
def test_vectorised_step_makes_the_moves_of_the_reference_step(n_dim, seed, width, max_steps_out, bimodal):
    """One chain of SliceSampler and reference_slice_step, fed the same random numbers, move alike."""
    mean = np.random.default_rng(seed).normal(size=n_dim)

    def log_density(x):
        if bimodal:   # two separated modes, so stepping out and shrinkage both have work to do
            return float(np.logaddexp(-0.5 * np.sum((x - mean) ** 2), -0.5 * np.sum((x + 3 * mean) ** 2) / 0.1))
        return float(-0.5 * np.sum((x - mean) ** 2 * np.arange(1, n_dim + 1)))

    x0 = np.zeros(n_dim)
    sampler = SliceSampler(log_density, x0, np.random.default_rng(seed), width=width, max_steps_out=max_steps_out)
    fast = sampler.sample(6).reshape(6, n_dim)
    rng, x, plain = np.random.default_rng(seed), x0.copy(), []
    for _ in range(6):
        for i in np.argsort(rng.uniform(size=(1, n_dim)), axis=1)[0]:   # the sweep's random order
            x, _ = reference_slice_step(log_density, x, int(i), width, rng, max_steps_out=max_steps_out)
        plain.append(x)
    np.testing.assert_array_equal(fast, np.array(plain))
    assert sampler.logp[0] == log_density(x)


def test_reference_step_moves_differ_under_another_seed():
    """The control: the comparison above is sensitive to the random numbers."""
    log_density = lambda x: -0.5 * float(x @ x)
    a, _ = reference_slice_step(log_density, np.zeros(2), 0, 1.0, np.random.default_rng(1))
    b, _ = reference_slice_step(log_density, np.zeros(2), 0, 1.0, np.random.default_rng(2))
    assert a[0] != b[0] and a[1] == b[1] == 0.0


def test_reference_step_refuses_bad_arguments():
    log_density = lambda x: -0.5 * float(x @ x)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="i: expected a coordinate in 0..1, received 2"):
        reference_slice_step(log_density, np.zeros(2), 2, 1.0, rng)
    with pytest.raises(ValueError, match="width: expected a finite positive number, received 0"):
        reference_slice_step(log_density, np.zeros(2), 0, 0.0, rng)
    with pytest.raises(ValueError, match="x: expected a point with a finite log-density"):
        reference_slice_step(lambda x: -np.inf, np.zeros(2), 0, 1.0, rng)
    with pytest.raises(ValueError, match="expected a normalisable density"):
        reference_slice_step(lambda x: 0.0, np.zeros(1), 0, 1.0, rng)
