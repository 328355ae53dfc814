"""Binary RBM (4.30-4.34): log phi derivatives, exact log Z, block Gibbs, CD-k, hill climbing, reference RBM."""
import itertools

import numpy as np
import pytest
from hypothesis import given, strategies as st

from kd_ref import gradcheck
from kd_ref.datasets import load_binarized_mnist
from kd_ref.toydata import bars_and_stripes
from kd_ref.optim import SGD
from kd_ref.rbm import RBM, GibbsSampler, cd_objective, fit_cd, hill_climb, random_chain_samples


def make_rbm(seed, D, H, scale=1.0):
    rng = np.random.default_rng(seed)
    rbm = RBM(D, H, rng, init_std=scale)
    rbm.b_visible[...] = rng.normal(size=D)
    rbm.b_hidden[...] = rng.normal(size=H)
    return rbm, rng


def all_binary(D):
    return np.array(list(itertools.product([0.0, 1.0], repeat=D)))


def brute_force_log_z(rbm):
    """log sum over (x, h) of exp(-E(x, h)), both layers enumerated."""
    X, Hs = all_binary(rbm.n_visible), all_binary(rbm.n_hidden)
    neg_energy = (X @ rbm.b_visible)[:, None] + (Hs @ rbm.b_hidden)[None, :] + X @ rbm.W @ Hs.T
    return np.logaddexp.reduce(neg_energy.ravel())


def joint(rbm, x, w):
    """Value, gradient, HVP of E = sum_n w_n log phi(x_n) over z = (params, x); None for a zero part of v."""
    return gradcheck.over_params_and_input(
        rbm, x, lambda xx: float(w @ rbm.log_phi(xx, continuous=True)),
        lambda xx: rbm.grad(xx, weights=w, continuous=True)[1:],
        lambda xx, vp, vx: rbm.hvp(xx, vp if np.any(vp) else None, vx if np.any(vx) else None, weights=w, continuous=True))


sizes = dict(D=st.integers(1, 9), H=st.integers(1, 7), N=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))


# ------------------------------------------------------------------- derivatives
@given(**sizes)
def test_log_phi_gradient_matches_differences(D, H, N, seed):
    rbm, rng = make_rbm(seed, D, H)
    x, w = rng.normal(size=(N, D)), rng.normal(size=N)
    value, grad, _, z = joint(rbm, x, w)
    g, num = grad(z), gradcheck.numerical_gradient(value, z)
    P = rbm.n_params
    parts = dict(zip(("W", "b_visible", "b_hidden"), rbm.param_views(np.arange(P))), x=np.arange(P, z.size))
    for name, idx in parts.items():                 # each block on its own, so none hides behind a larger one
        res = gradcheck._result(f"d/d{name}", g[idx.ravel()], num[idx.ravel()])
        assert res.passed(1e-6), str(res)


@given(**sizes, part=st.sampled_from(["full", "params", "x"]))
def test_log_phi_hvp_matches_differences_and_is_symmetric(D, H, N, seed, part):
    rbm, rng = make_rbm(seed, D, H)
    x, w = rng.normal(size=(N, D)), rng.normal(size=N)
    _, grad, hvp, z = joint(rbm, x, w)
    P = rbm.n_params
    v, u = rng.normal(size=z.shape), rng.normal(size=z.shape)
    if part == "params":
        v[P:] = 0.0
    elif part == "x":
        v[:P] = 0.0
    res = gradcheck.check_hvp(grad, hvp, z, v)
    assert res.passed(1e-5), str(res)
    sym = gradcheck.check_symmetry(hvp, z, u, v)
    assert sym.passed(1e-9), str(sym)


def test_log_phi_matches_energy_and_extremes_stay_finite():
    rbm, rng = make_rbm(0, 5, 3)
    X, Hs = all_binary(5), all_binary(3)
    neg_energy = (X @ rbm.b_visible)[:, None] + (Hs @ rbm.b_hidden)[None, :] + X @ rbm.W @ Hs.T
    np.testing.assert_allclose(rbm.log_phi(X), np.logaddexp.reduce(neg_energy, axis=1), rtol=1e-12)
    rbm.set_params(1e3 * rng.choice([-1.0, 1.0], size=rbm.n_params))
    lp, d_p, d_x = rbm.grad(X)
    assert np.all(np.isfinite(lp)) and np.all(np.isfinite(d_p)) and np.all(np.isfinite(d_x))
    assert np.isfinite(rbm.log_z_exact())


def test_conditionals_match_the_joint():
    """p(h_j = 1 | x) and p(x_i = 1 | h) (4.33-4.34) against sums over the enumerated joint."""
    rbm, _ = make_rbm(1, 3, 2)
    X, Hs = all_binary(3), all_binary(2)
    joint_p = np.exp((X @ rbm.b_visible)[:, None] + (Hs @ rbm.b_hidden)[None, :] + X @ rbm.W @ Hs.T)
    p_h_given_x = joint_p / joint_p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(rbm.hidden_probs(X), p_h_given_x @ Hs, rtol=1e-12)
    p_x_given_h = joint_p / joint_p.sum(axis=0, keepdims=True)
    np.testing.assert_allclose(rbm.visible_probs(Hs), p_x_given_h.T @ X, rtol=1e-12)


def test_sampling_the_conditionals_and_a_sweep_made_of_them():
    """sample_hidden / sample_visible draw from (4.33) / (4.34); one Gibbs sweep is the one followed by the other."""
    rbm, _ = make_rbm(6, 4, 3)
    x = np.array([[1.0, 0.0, 1.0, 1.0]])
    rng = np.random.default_rng(0)
    h = rbm.sample_hidden(np.repeat(x, 40_000, axis=0), rng)
    assert h.shape == (40_000, 3) and set(np.unique(h)) <= {0.0, 1.0}
    # each frequency within 5 standard errors (sd <= 0.5 / sqrt(40000) = 0.0025) of p(h_j = 1 | x)
    assert np.all(np.abs(h.mean(axis=0) - rbm.hidden_probs(x)[0]) < 5 * 0.0025)
    hs = np.array([[0.0, 1.0, 1.0]])
    xs = rbm.sample_visible(np.repeat(hs, 40_000, axis=0), rng)
    assert xs.shape == (40_000, 4) and set(np.unique(xs)) <= {0.0, 1.0}
    assert np.all(np.abs(xs.mean(axis=0) - rbm.visible_probs(hs)[0]) < 5 * 0.0025)
    # control: a different hidden state gives visibly different frequencies
    assert np.max(np.abs(xs.mean(axis=0) - rbm.visible_probs([[1.0, 0.0, 0.0]])[0])) > 0.05
    init = (np.random.default_rng(1).random((6, 4)) < 0.5).astype(float)
    sampler = GibbsSampler(rbm, np.random.default_rng(2), init=init)
    same = np.random.default_rng(2)
    np.testing.assert_array_equal(sampler.sweep(1), rbm.sample_visible(rbm.sample_hidden(init, same), same))
    assert sampler.n_chains == 6
    with pytest.raises(AttributeError):
        sampler.n_chains = 3                                # derived from x, not settable
    with pytest.raises(TypeError, match="rng"):
        rbm.sample_hidden(x, 0)
    with pytest.raises(ValueError, match=r"h: expected shape \(N, 3\), received shape \(1, 4\)"):
        rbm.sample_visible(x, rng)


# -------------------------------------------------------------------------- log Z
@pytest.mark.parametrize("D,H", [(1, 1), (3, 5), (6, 2), (4, 4), (2, 7)])
def test_exact_log_z_matches_brute_force_over_both_layers(D, H):
    rbm, _ = make_rbm(D * 10 + H, D, H, scale=1.5)
    assert rbm.log_z_exact() == pytest.approx(brute_force_log_z(rbm), rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(np.logaddexp.reduce(rbm.log_prob_exact(all_binary(D))), 0.0, atol=1e-12)


def test_exact_log_z_with_many_enumerated_states():
    """18 hidden units: 2^18 states in several chunks, against the visible-side sum (2^5 states)."""
    rbm, _ = make_rbm(5, 5, 18, scale=0.5)
    assert rbm.log_z_exact() == pytest.approx(np.logaddexp.reduce(rbm.log_phi(all_binary(5))), rel=1e-12)


def test_exact_log_z_refuses_large_models():
    with pytest.raises(ValueError, match=r"^max_units: expected min\(n_visible, n_hidden\) <= max_units=26, "
                                         r"received 27 \(D=30, H=27\)"):
        RBM(30, 27, None).log_z_exact()
    with pytest.raises(ValueError, match="^max_units: expected .*max_units=3, received 4"):
        RBM(4, 5, None).log_z_exact(max_units=3)


# ---------------------------------------------------------------------- Gibbs chains
def test_block_gibbs_samples_match_the_exact_distribution():
    """1,000 chains x 200 draws (thinned by 2 after 100 sweeps of burn-in) on a 4 x 3 RBM.

    The issue asks for TV < 0.02; we ask for 0.01. With n effectively independent
    draws the expected TV is 1/2 sum_x sqrt(2 p(x) (1 - p(x)) / (pi n)), 0.0047 here
    for n = 50,000, a quarter of the 2e5 draws (the draws of one chain are
    correlated, but two sweeps apart nearly independent on this RBM; we measured
    TV = 0.0018). A different RBM's distribution (the control) must be far away.
    """
    rbm, _ = make_rbm(11, 4, 3, scale=1.5)
    sampler = GibbsSampler(rbm, np.random.default_rng(0), n_chains=1000)
    x = sampler.sample(200, thin=2, burn_in=100)
    assert x.shape == (200_000, 4) and sampler.sweeps == 500
    freq = np.bincount((x @ (1 << np.arange(4)[::-1])).astype(int), minlength=16) / x.shape[0]
    p = np.exp(rbm.log_prob_exact(all_binary(4)))
    assert 0.5 * np.sum(np.sqrt(2 * p * (1 - p) / (np.pi * 50_000))) < 0.005
    assert 0.5 * np.abs(freq - p).sum() < 0.01
    other, _ = make_rbm(12, 4, 3, scale=1.5)
    assert 0.5 * np.abs(freq - np.exp(other.log_prob_exact(all_binary(4)))).sum() > 0.05


def test_chains_keep_state_can_be_seeded_and_stream_in_turn():
    rbm, _ = make_rbm(2, 6, 4)
    seeds = (np.random.default_rng(1).random((5, 6)) < 0.5).astype(float)
    sampler = GibbsSampler(rbm, np.random.default_rng(2), init=seeds)
    np.testing.assert_array_equal(sampler.x, seeds)
    seeds[0, 0] = 1 - seeds[0, 0]                       # the sampler holds its own copy
    assert sampler.x[0, 0] != seeds[0, 0]
    first = sampler.sweep(3)
    kept = first.copy()
    sampler.sweep(2)
    np.testing.assert_array_equal(first, kept)          # later sweeps never overwrite a returned state
    assert sampler.sweeps == 5
    b1, b2, b3 = (sampler.next_batch(2) for _ in range(3))
    assert sampler.sweeps == 8 and b1.shape == (2, 6)
    np.testing.assert_array_equal(b3[1], sampler.x[0])  # chains 4, 0 on the third call: in turn, wrapping
    a = GibbsSampler(rbm, np.random.default_rng(7), n_chains=4).sample(3)
    b = GibbsSampler(rbm, np.random.default_rng(7), n_chains=4).sample(3)
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- CD-k
def test_cd_training_increases_the_exact_log_likelihood():
    data = bars_and_stripes(3)                          # 14 images, 9 pixels
    rbm = RBM(9, 6, np.random.default_rng(0), init_std=0.1)
    before = rbm.log_prob_exact(data).mean()
    result = fit_cd(rbm, data, np.random.default_rng(1), n_steps=1500, k=1, batch_size=14, optimizer=SGD(0.2),
                    progress=False, monitor=lambda: rbm.log_prob_exact(data).mean(), monitor_every=500)
    after = rbm.log_prob_exact(data).mean()
    # before: about -6.26 nats (near 9 log 2 = -6.24); the best possible is log(1/14) = -2.64; we measured -3.67
    assert after > before + 2.0, (before, after)
    assert [s for s, _ in result.monitor] == [500, 1000, 1500]


def test_cd_objective_gradient_is_the_cd_update():
    """With the negative samples fixed, the surrogate's gradient is E_neg[d log phi] - E_data[d log phi]."""
    rbm, _ = make_rbm(3, 5, 3)
    batch = (np.random.default_rng(0).random((6, 5)) < 0.5).astype(float)
    loss, grad = cd_objective(rbm, 2, np.random.default_rng(9))(batch)
    neg = GibbsSampler(rbm, np.random.default_rng(9), init=batch).sweep(2)
    expected = rbm.grad(neg)[1] / 6 - rbm.grad(batch)[1] / 6
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-14)
    assert loss == pytest.approx(rbm.log_phi(neg).mean() - rbm.log_phi(batch).mean())


# -------------------------------------------------------------------- hill climbing
def test_hill_climbing_finds_the_maximum_of_a_small_rbm():
    rbm, _ = make_rbm(8, 10, 4, scale=2.0)
    best = rbm.log_phi(all_binary(10)).max()
    result = hill_climb(rbm, np.random.default_rng(0), n_restarts=20)
    assert result.log_phi == pytest.approx(best, rel=1e-12)
    assert result.converged.all() and result.states.shape == (20, 10) and result.starts == ["random"] * 20
    # every end point is a local maximum under single-bit flips
    for state, value in zip(result.states, result.values):
        flips = np.abs(state[None, :] - np.eye(10))
        assert np.all(rbm.log_phi(flips) <= value + 1e-9)
    # a nearly flat RBM (single flips change log phi by about 0.1): only strict rises may be taken, or the
    # climb wanders between neighbours and never settles
    flat, _ = make_rbm(9, 10, 4, scale=0.1)
    flat.b_visible[...] *= 0.1
    flat.b_hidden[...] *= 0.1
    result = hill_climb(flat, np.random.default_rng(1), n_restarts=5, include_zeros=True)
    assert result.converged.all() and result.starts == ["zeros"] + ["random"] * 5
    assert result.log_phi == pytest.approx(flat.log_phi(all_binary(10)).max(), rel=1e-12)
    for state, value in zip(result.states, result.values):
        assert np.all(flat.log_phi(np.abs(state[None, :] - np.eye(10))) < value)


# ------------------------------------------------------------------------ save/load
def test_rbm_save_load_round_trip_and_bad_files(tmp_path):
    rbm, _ = make_rbm(4, 6, 3)
    rbm.save(tmp_path / "rbm.npz")
    back = RBM.load(tmp_path / "rbm.npz")
    assert back.params.tobytes() == rbm.params.tobytes()
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="could not read"):
        RBM.load(tmp_path / "junk.npz")
    (tmp_path / "garbage.npz").write_bytes(b"neither a zip archive nor a .npy file" * 10)
    with pytest.raises(ValueError, match="path: could not read .*garbage.npz.* as a .npz archive"):
        RBM.load(tmp_path / "garbage.npz")                # numpy alone would offer to unpickle it
    np.savez(tmp_path / "odd.npz", W=np.zeros((6, 3)), b_visible=np.zeros(5), b_hidden=np.zeros(3))
    with pytest.raises(ValueError, match=r"b_visible: expected shape \(6,\), received shape \(5,\)"):
        RBM.load(tmp_path / "odd.npz")
    with np.load(tmp_path / "rbm.npz") as f:
        arrays = {k: f[k] for k in f.files}
    np.savez(tmp_path / "future.npz", **dict(arrays, version=np.array(99)))
    with pytest.raises(ValueError, match=r"expected kd_ref.RBM format version \[1\].*has version 99"):
        RBM.load(tmp_path / "future.npz")
    del arrays["version"]
    np.savez(tmp_path / "unversioned.npz", **arrays)
    with pytest.raises(ValueError, match=r"format version \[1\], .*unversioned.npz' holds no version tag"):
        RBM.load(tmp_path / "unversioned.npz")
    with pytest.raises(FileNotFoundError, match="path: no file at"):
        RBM.load(tmp_path / "absent.npz")
    # the reference layout (W, b_visible, b_hidden without format/version) loads as well
    np.savez(tmp_path / "plain.npz", W=rbm.W, b_visible=rbm.b_visible, b_hidden=rbm.b_hidden)
    assert RBM.load(tmp_path / "plain.npz").params.tobytes() == rbm.params.tobytes()


# ------------------------------------------------------------------------ bad input
def test_bad_inputs_raise_clear_errors_and_change_nothing():
    rbm, rng = make_rbm(0, 4, 3)
    before = rbm.params.copy()
    with pytest.raises(ValueError, match=r"x: expected binary values"):
        rbm.log_phi([[0, 1, 2, 1]])
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 4\), received shape \(1, 3\)"):
        rbm.log_phi([[0, 1, 1]])
    with pytest.raises(ValueError, match="init: expected binary values"):
        GibbsSampler(rbm, rng, init=np.full((2, 4), 0.5))
    with pytest.raises(ValueError, match=r"n_chains: expected the number of rows of init \(2\), received 3"):
        GibbsSampler(rbm, rng, n_chains=3, init=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="n_chains: expected the number of chains"):
        GibbsSampler(rbm, rng)
    with pytest.raises(TypeError, match="rng"):
        GibbsSampler(rbm, 0, n_chains=2)
    with pytest.raises(ValueError, match="data: expected binary values"):
        fit_cd(rbm, np.full((5, 4), 0.5), rng, n_steps=2, progress=False)
    with pytest.raises(ValueError, match="k: expected an integer >= 1, received 0"):
        fit_cd(rbm, np.zeros((5, 4)), rng, n_steps=2, k=0, progress=False)
    with pytest.raises(ValueError, match="n_steps: expected an integer >= 1, received 0"):
        fit_cd(rbm, np.zeros((5, 4)), rng, n_steps=0, progress=False)
    with pytest.raises(ValueError, match="max_units: expected .*max_units=26, received 27"):
        RBM(27, 30, None).log_prob_exact(np.zeros((1, 27)))
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match=f"log_z: expected a finite real number, received {bad}"):
            rbm.log_prob_exact(np.zeros((1, 4)), log_z=bad)
    with pytest.raises(TypeError, match="log_z: expected a finite real number, received 'big'"):
        rbm.log_prob_exact(np.zeros((1, 4)), log_z="big")
    np.testing.assert_allclose(rbm.log_prob_exact(np.zeros((1, 4)), log_z=2.5), rbm.log_phi(np.zeros(4)) - 2.5)
    with pytest.raises(ValueError, match="init: expected binary values"):
        hill_climb(rbm, rng, init=[[0, 1, 0.5, 1]])
    with pytest.raises(ValueError, match=r"n_restarts: expected at least one start .*, "
                                         r"received n_restarts=0, init=None, include_zeros=False"):
        hill_climb(rbm, rng, n_restarts=0)
    with pytest.raises(ValueError, match="batch_size: expected at most n_chains=2"):
        GibbsSampler(rbm, rng, n_chains=2).next_batch(3)
    np.testing.assert_array_equal(rbm.params, before)


# ---------------------------------------------------------------- the CD25(500) RBM
@pytest.mark.data
def test_reference_rbm_log_phi_on_the_binarised_test_set(data_dir):
    rbm = RBM.from_file(data_dir)
    assert (rbm.n_visible, rbm.n_hidden) == (784, 500)
    _, x_test = load_binarized_mnist(data_dir, dtype=np.uint8)
    lp = rbm.log_phi(x_test)
    assert np.all(np.isfinite(lp))
    assert lp.mean() == pytest.approx(364.9259, abs=1e-3)          # the data README's value
    # control: transposed images (wrong pixel order) score much lower (README: 342.59)
    transposed = x_test.reshape(-1, 28, 28).transpose(0, 2, 1).reshape(-1, 784)
    assert rbm.log_phi(transposed).mean() == pytest.approx(342.59, abs=0.01)
    assert rbm.log_phi(np.zeros(784))[0] == pytest.approx(436.4938, abs=1e-4)


@pytest.mark.data
def test_hill_climbing_on_the_reference_rbm_reaches_436(data_dir):
    """Random restarts alone (no all-zeros start) reach the thesis's 436.49 (the all-black image)."""
    rbm = RBM.from_file(data_dir)
    result = hill_climb(rbm, np.random.default_rng(0), n_restarts=4)
    assert result.starts == ["random"] * 4
    assert result.log_phi >= 436.0
    assert result.log_phi == pytest.approx(436.4938, abs=1e-3)


# ------------------------------------------------------------------------- random chains (4.46)
def test_random_chains_are_gibbs_chains_from_bernoulli_starts():
    """random_chain_samples is K independent GibbsSampler chains from Bernoulli(init_prob) starts: the same draws
    from the same generator, which it leaves where the sampler leaves it; burn-in 0 returns the starts."""
    rbm, _ = make_rbm(3, 6, 4)
    for burn_in, init_prob in ((0, 0.5), (7, 0.5), (5, 0.2), (0, 1.0)):
        a, b = np.random.default_rng(11), np.random.default_rng(11)
        x, seconds = random_chain_samples(rbm, a, 50, burn_in, init_prob=init_prob)
        chains = GibbsSampler(rbm, b, n_chains=50, init_prob=init_prob)
        np.testing.assert_array_equal(x, chains.sweep(burn_in) if burn_in else chains.x)
        assert a.bit_generator.state == b.bit_generator.state and seconds >= 0.0
    np.testing.assert_array_equal(random_chain_samples(rbm, np.random.default_rng(0), 4, 0, init_prob=1.0)[0],
                                  np.ones((4, 6)))


def test_random_chains_resume_exactly_from_their_checkpoint(tmp_path, monkeypatch):
    """Ctrl-C during the sweeps (a real SIGINT from the progress line) ends with Interrupted after the sweep under
    way, the checkpoint holding it; the same call resumes to the uninterrupted chains bit for bit, the generator
    in the same state. A checkpoint of other settings or a damaged one is refused, naming the file."""
    from test_resume import _interrupting_progress

    from kd_ref.optim import CheckpointError, Interrupted
    from kd_ref.progress import Progress

    rbm, _ = make_rbm(4, 8, 3)
    expected_rng = np.random.default_rng(5)
    expected, _ = random_chain_samples(rbm, expected_rng, 30, 23)
    path = tmp_path / "chains.npz"
    rng = np.random.default_rng(5)
    plain = Progress.update
    for at in (9, 6):                                # stopped twice, the second time after resuming
        _interrupting_progress(monkeypatch, at)
        with pytest.raises(Interrupted) as err:
            random_chain_samples(rbm, rng, 30, 23, checkpoint=path, checkpoint_every=4, progress=True)
        monkeypatch.setattr(Progress, "update", plain)
        assert err.value.saved_step == err.value.step and err.value.checkpoint == str(path)
        rng = np.random.default_rng(999)             # a fresh process: the generator comes from the checkpoint
    x, seconds = random_chain_samples(rbm, rng, 30, 23, checkpoint=path, checkpoint_every=4)
    np.testing.assert_array_equal(x, expected)
    assert rng.bit_generator.state == expected_rng.bit_generator.state and seconds > 0.0
    again, _ = random_chain_samples(rbm, np.random.default_rng(1), 30, 23, checkpoint=path)   # finished: no sweeps
    np.testing.assert_array_equal(again, expected)
    with pytest.raises(CheckpointError, match=r"checkpoint: .*chains.npz' was made with other settings .*burn_in"):
        random_chain_samples(rbm, rng, 30, 24, checkpoint=path)
    other, _ = make_rbm(5, 8, 3)
    with pytest.raises(CheckpointError, match="was made with other settings"):
        random_chain_samples(other, rng, 30, 23, checkpoint=path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"chains.npz.*delete it to start the chains again"):
        random_chain_samples(rbm, rng, 30, 23, checkpoint=path)


@pytest.mark.parametrize("args, kwargs, error, match", [
    (("rbm", 10, 5), {}, TypeError, r"rbm: expected a kd_ref.rbm.RBM, received str"),
    ((None, 0, 5), {}, ValueError, r"n_chains: expected an integer >= 1, received 0"),
    ((None, 10, -1), {}, ValueError, r"burn_in: expected an integer >= 0, received -1"),
    ((None, 10, 2.5), {}, TypeError, r"burn_in: expected an integer >= 0, received 2.5"),
    ((None, 10, 5), {"init_prob": 1.5}, ValueError, r"init_prob: expected a value in \[0.0, 1.0\], received 1.5"),
    ((None, 10, 5), {"checkpoint_every": 0}, ValueError, r"checkpoint_every: expected an integer >= 1, received 0"),
    ((None, 10, 5), {"progress": "yes"}, TypeError, r"progress: expected"),
    ((None, 10, 5), {"checkpoint": 3}, TypeError, r"checkpoint: expected a file path"),
])
def test_random_chains_refuse_bad_arguments_before_drawing(tmp_path, args, kwargs, error, match):
    rbm, _ = make_rbm(6, 4, 2)
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    with pytest.raises(error, match=match):
        random_chain_samples(rbm if args[0] is None else args[0], rng, *args[1:], **kwargs)
    with pytest.raises(ValueError, match="checkpoint: expected a file name, received .*, an existing folder"):
        random_chain_samples(rbm, rng, 10, 5, checkpoint=tmp_path)
    with pytest.raises(TypeError, match="rng"):
        random_chain_samples(rbm, np.random.RandomState(0), 10, 5)
    assert rng.bit_generator.state == state
