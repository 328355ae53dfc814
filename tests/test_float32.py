"""float32 NADEs and Gibbs chains agree with float64 to float32 precision; a float32 model saves, trains and resumes
in float32. (Every derivative check stays in float64, in test_nade.py and test_rbm.py.)"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kd_ref.nade import NADE
from kd_ref.optim import Adadelta, Interrupted, MinibatchDrawer
from kd_ref.rbm import RBM, GibbsSampler

EPS32 = float(np.finfo(np.float32).eps)


def _pair(seed, D, H, nonlinearity):
    rng = np.random.default_rng(seed)
    n64 = NADE(D, H, rng, order=rng.permutation(D), nonlinearity=nonlinearity, init_std=1.0)
    n64.b[...] = rng.normal(size=D)
    n64.c[...] = rng.normal(size=H)
    n32 = n64.astype(np.float32)
    n64.params[...] = n32.params          # both hold the same (float32-representable) parameters
    return rng, n64, n32


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), D=st.integers(1, 12), H=st.integers(1, 9), N=st.integers(1, 6),
       nonlinearity=st.sampled_from(["logistic", "relu"]))
def test_float32_log_q_and_gradients_agree_with_float64(seed, D, H, N, nonlinearity):
    """Each float32 result within c * eps32 * (the size of the terms summed into it) of float64's.

    A result summed from m terms of magnitude <= s, each computed with a few roundings, is off by at most about
    m * s * eps32 in float32; s is bounded here by the sum of absolute values the float64 pass would add.
    """
    rng, n64, n32 = _pair(seed, D, H, nonlinearity)
    x = (rng.random((N, D)) < 0.5).astype(np.float64)
    log_q64, d_p64, d_x64 = n64.grad(x)
    log_q32, d_p32, d_x32 = n32.grad(x)
    assert log_q32.dtype == d_p32.dtype == d_x32.dtype == np.float32
    # scale: the largest logit, hidden unit and weight that enter the sums
    W, V = np.abs(n64.W).max(), np.abs(n64.V).max()
    z = np.abs(n64.r_forward(x, continuous=True)[0]).max()
    scale = (1 + z + W + V) * (1 + W) * (1 + V) * max(D, H) * D
    tol = 64 * EPS32 * scale
    np.testing.assert_allclose(log_q32, log_q64, rtol=0, atol=tol)
    np.testing.assert_allclose(d_p32, d_p64, rtol=0, atol=tol * N)
    np.testing.assert_allclose(d_x32, d_x64, rtol=0, atol=tol)
    # the control: biases moved by 100 against the first row's bits lower its log q by far more than tol
    n32.b[...] -= 100.0 * (2.0 * x[0] - 1.0)
    assert n32.log_prob(x)[0] < log_q64[0] - 10 * tol


def test_float32_samples_are_float64_samples_from_the_same_uniforms():
    """Same generator, same uniforms: a sample differs only where a uniform fell within float32 rounding of its
    conditional (the first position where the two differ); the conditionals agree to float32 precision."""
    rng, n64, n32 = _pair(5, 30, 20, "logistic")
    x64, y64 = n64.sample(2000, np.random.default_rng(9))
    x32, y32 = n32.sample(2000, np.random.default_rng(9))
    assert x32.dtype == y32.dtype == np.float32
    u = np.random.default_rng(9).random((2000, 30))[:, np.argsort(n64.order)]    # the uniforms, data order
    same = np.all(x64 == x32, axis=1)
    assert same.mean() > 0.99
    for n in np.flatnonzero(~same):
        first = n64.order[np.argmax(x64[n, n64.order] != x32[n, n64.order])]  # first position (in order) that differs
        assert abs(u[n, first] - y64[n, first]) < 1e-5
    np.testing.assert_allclose(y32[same], y64[same], rtol=0, atol=1e-5)
    # the control: other uniforms give other samples
    assert np.mean(np.all(n32.sample(2000, np.random.default_rng(10))[0] == x64, axis=1)) < 0.5


def test_float32_nade_saves_loads_and_copies_its_dtype_exactly(tmp_path):
    _, n64, n32 = _pair(1, 7, 4, "logistic")
    n32.save(tmp_path / "q.npz")
    back = NADE.load(tmp_path / "q.npz")
    assert back.dtype == np.float32 and back.params.dtype == np.float32
    np.testing.assert_array_equal(back.params, n32.params)
    n64.save(tmp_path / "p.npz")
    assert NADE.load(tmp_path / "p.npz").params.dtype == np.float64
    assert n32.astype(np.float64).params.dtype == np.float64
    assert "float32" in repr(n32) and "float32" not in repr(n64)
    with pytest.raises(TypeError, match="dtype: expected numpy.float64 or numpy.float32, received"):
        NADE(3, 2, None, dtype=np.float16)


def _fit(nade, data, steps, **kwargs):
    return nade.fit(data, np.random.default_rng(4), n_steps=steps, batch_size=5, optimizer=Adadelta(),
                    progress=False, **kwargs)


def test_float32_training_computes_in_float32_and_resumes_exactly(tmp_path):
    """ADADELTA on a float32 NADE keeps float32 state, and an interrupted float32 fit resumes to the same bits."""
    rng = np.random.default_rng(2)
    data = (rng.random((60, 9)) < 0.3).astype(np.float64)
    whole = NADE(9, 5, np.random.default_rng(3), dtype=np.float32)
    _fit(whole, data, 30)
    assert whole.params.dtype == np.float32

    def stop(step, loss):
        if step == 13:
            raise KeyboardInterrupt
    cut = NADE(9, 5, np.random.default_rng(3), dtype=np.float32)
    ckpt = tmp_path / "fit.ckpt"
    with pytest.raises(Interrupted):
        _fit(cut, data, 30, checkpoint=str(ckpt), checkpoint_every=4, callback=stop)
    resumed = NADE(9, 5, np.random.default_rng(3), dtype=np.float32)
    _fit(resumed, data, 30, checkpoint=str(ckpt), checkpoint_every=4)
    np.testing.assert_array_equal(resumed.params, whole.params)
    # float64 from the same start is a different (but close) trajectory: the float32 run really ran in float32
    wide = NADE(9, 5, np.random.default_rng(3))
    wide.params[...] = NADE(9, 5, np.random.default_rng(3), dtype=np.float32).params
    _fit(wide, data, 30)
    assert not np.array_equal(wide.params.astype(np.float32), whole.params)
    np.testing.assert_allclose(wide.params, whole.params, rtol=0, atol=1e-3)


def test_float32_gibbs_chains_sample_the_rbm():
    """4000 float32 chains on a 4-visible RBM after 50 sweeps: pixel means within 4 SE of the exact E_p[x];
    the control (the exact means of another RBM) is far outside."""
    rbm = RBM(4, 3, np.random.default_rng(0), init_std=1.0)
    chains = GibbsSampler(rbm, np.random.default_rng(2), n_chains=4000, dtype=np.float32)
    x = chains.burn_in(50)
    assert x.dtype == np.float32 and set(np.unique(x)) <= {0.0, 1.0}
    states = ((np.arange(16)[:, None] >> np.arange(4)) & 1).astype(np.float64)
    exact = np.exp(rbm.log_phi(states) - rbm.log_z_exact()) @ states
    se = 0.5 / np.sqrt(4000)
    assert np.all(np.abs(x.mean(axis=0) - exact) < 4 * se)
    other = RBM(4, 3, np.random.default_rng(7), init_std=1.0)
    other_exact = np.exp(other.log_phi(states) - other.log_z_exact()) @ states
    assert np.any(np.abs(x.mean(axis=0) - other_exact) > 10 * se)
    # float64 chains are exactly the RBM's own conditional samplers, step for step
    c64, rng = GibbsSampler(rbm, np.random.default_rng(5), n_chains=30), np.random.default_rng(5)
    x0 = (rng.random((30, 4)) < 0.5).astype(np.float64)
    c64.sweep(3)
    for _ in range(3):
        x0 = rbm.sample_visible(rbm.sample_hidden(x0, rng), rng)
    np.testing.assert_array_equal(c64.x, x0)
    with pytest.raises(TypeError, match="dtype: expected numpy.float64 or numpy.float32, received None"):
        GibbsSampler(rbm, rng, n_chains=3, dtype=None)


def test_float32_minibatches_of_a_drawer_train_a_float32_nade():
    """A MinibatchDrawer's float64 batches feed a float32 NADE (the batch is cast inside the pass)."""
    data = (np.random.default_rng(0).random((20, 5)) < 0.5).astype(np.float64)
    nade = NADE(5, 3, np.random.default_rng(1), dtype=np.float32)
    batch = MinibatchDrawer(data, 4, np.random.default_rng(2))()
    assert nade.grad(batch, input_grads=False)[1].dtype == np.float32


def test_float32_units_beyond_float32_exp_range_keep_finite_exact_gradients():
    """Hidden units with -a beyond float32's exp range (88.7; not float64's 709, where the old cap sat): the float32
    gradients and H v are finite and match float64's, and f'(a) there is the tiny number it should be, not
    inf * 0 = nan. (The thesis-scale float32 KL run met exactly this at step 8,814.)"""
    rng, n64, n32 = _pair(3, 6, 4, "logistic")
    for nade in (n64, n32):
        nade.c[...] = [-120.0, 95.0, 0.5, -90.0]      # sigma(a) = 0 or 1 to float32 precision, exp(-a) overflows
    x = (rng.random((5, 6)) < 0.5).astype(np.float64)
    (q64, p64, x64), (q32, p32, x32) = n64.grad(x), n32.grad(x)
    assert np.all(np.isfinite(p32)) and np.all(np.isfinite(x32))
    scale = 64 * EPS32 * (1 + np.abs(n64.params).max()) ** 2 * 6 * 5
    for got, want in zip((q32, p32, x32), (q64, p64, x64)):
        np.testing.assert_allclose(got, want, rtol=0, atol=scale)
    v_p, v_x = rng.normal(size=n64.n_params), rng.normal(size=x.shape)
    hv64, hv32 = n64.hvp(x, v_p, v_x), n32.hvp(x, v_p.astype(np.float32), v_x.astype(np.float32))
    for got, want in zip(hv32, hv64):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=0, atol=scale * (1 + np.abs(v_p).max()) * 10)
