"""Schedules, SGD, ADADELTA, Adam and the training loop."""
import json
import os
import signal
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kd_ref import npzfile
from kd_ref.optim import (CHECKPOINT_KIND, SGD, Adadelta, Adam, CheckpointError, ConstantSchedule, Interrupted,
                          LinearDecay, MinibatchDrawer, PowerDecay, StepDecay, generator_state, load_generator_state, train)


def test_adadelta_matches_a_hand_computed_sequence():
    # rho = 0.95, eps = 1e-6, one parameter starting at 1, gradients 1, -2, 0.5.
    # step 1: E[g2] = 0.05 * 1 = 0.05;  delta = -sqrt(0 + 1e-6) / sqrt(0.05 + 1e-6) * 1 = -0.00447209...
    #         E[d2] = 0.05 * delta^2 = 9.9998e-7
    # step 2: E[g2] = 0.95 * 0.05 + 0.05 * 4 = 0.2475;  delta = +sqrt(E[d2] + 1e-6) / sqrt(0.247501) * 2
    # step 3: E[g2] = 0.95 * 0.2475 + 0.05 * 0.25 = 0.247625
    opt = Adadelta()
    p = np.array([1.0])
    expected_p = [0.9955279087656892, 1.001213221290106, 0.9993157734108539]
    expected_g2 = [0.05, 0.2475, 0.247625]
    for g, want_p, want_g2 in zip([1.0, -2.0, 0.5], expected_p, expected_g2):
        opt.step(p, np.array([g]))
        assert p[0] == pytest.approx(want_p, rel=1e-14)
        assert opt.mean_sq_grad[0] == pytest.approx(want_g2, rel=1e-14)
    assert opt.mean_sq_delta[0] == pytest.approx(2.6178293518486156e-06, rel=1e-12)


def test_schedules_hit_their_end_values():
    lin = LinearDecay(1.0, 100)
    assert lin(0) == 1.0 and lin(50) == 0.5 and lin(100) == 0.0 and lin(150) == 0.0
    power = PowerDecay(t0=2.0, kappa=0.75, scale=3.0)
    assert power(0) == pytest.approx(3.0 * 2.0**-0.75)
    assert power(14) == pytest.approx(3.0 * 16.0**-0.75)
    assert power(10**12) < 1e-8
    assert ConstantSchedule(0.1)(12345) == 0.1


def test_step_decay_halves_every_step_steps():
    """eta_t = eta0 gamma^floor(t / step) (SPEC_seeds 0.2, torch's StepLR): constant within a block of
    ``step`` steps, exactly gamma times smaller in the next one."""
    sched = StepDecay(1e-3, 200, 0.5)
    assert [sched(t) for t in (0, 199, 200, 399, 400, 1000)] == [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 1e-3 * 0.5**5]
    assert StepDecay(0.1, 1, 1.0)(10**9) == 0.1                         # gamma = 1: a constant schedule
    assert repr(StepDecay(0.1, 3, 0.25)) == "StepDecay(eta0=0.1, step=3, gamma=0.25)"
    with pytest.raises(ValueError, match=r"gamma: expected a value in \(0.0, 1.0\], received 0.0"):
        StepDecay(0.1, 3, 0.0)
    with pytest.raises(ValueError, match=r"step: expected an integer >= 1, received 0"):
        StepDecay(0.1, 0)
    with pytest.raises(ValueError, match=r"eta0: expected a value in \(0.0, inf\), received inf"):
        StepDecay(np.inf, 3)


def test_sgd_follows_its_schedule():
    p = np.zeros(2)
    opt = SGD(LinearDecay(1.0, 4))
    for _ in range(4):
        opt.step(p, np.array([1.0, -1.0]))
    # steps 1, 0.75, 0.5, 0.25
    np.testing.assert_allclose(p, [-2.5, 2.5])



def _plain_adadelta_step(opt, params, grad):
    """The ADADELTA update as the class docstring writes it, with fresh temporaries (the reference twin)."""
    if opt.mean_sq_grad is None:
        opt.mean_sq_grad, opt.mean_sq_delta = np.zeros_like(params), np.zeros_like(params)
    rho, eps = opt.rho, opt.eps
    opt.mean_sq_grad *= rho
    opt.mean_sq_grad += (1 - rho) * grad**2
    delta = -np.sqrt(opt.mean_sq_delta + eps) / np.sqrt(opt.mean_sq_grad + eps) * grad
    opt.mean_sq_delta *= rho
    opt.mean_sq_delta += (1 - rho) * delta**2
    params += delta
    opt.t += 1


_gradients = st.tuples(st.integers(1, 40), st.integers(1, 6), st.integers(0, 2**32 - 1), st.floats(-30, 30))


@given(case=_gradients, rho=st.floats(0.0, 0.999), eps=st.floats(1e-12, 1.0))
def test_adadelta_in_place_step_is_bit_identical_to_the_plain_formula(case, rho, eps):
    size, n_steps, seed, log_scale = case
    r = np.random.default_rng(seed)
    # gradients over many orders of magnitude, with exact zeros, on a random start
    grads = r.normal(size=(n_steps, size)) * np.exp(r.uniform(-abs(log_scale), abs(log_scale), size=(n_steps, size)))
    grads[r.random(grads.shape) < 0.2] = 0.0
    ours, ref = Adadelta(rho, eps), Adadelta(rho, eps)
    p_ours = r.normal(size=size)
    p_ref = p_ours.copy()
    for g in grads:
        ours.step(p_ours, g)
        _plain_adadelta_step(ref, p_ref, g)
        assert np.array_equal(p_ours, p_ref)
        assert np.array_equal(ours.mean_sq_grad, ref.mean_sq_grad)
        assert np.array_equal(ours.mean_sq_delta, ref.mean_sq_delta)
    # after a load_state (a resumed run) the buffers are reused and the bits still agree
    ours.load_state(ref.state())
    ours.step(p_ours, grads[0])
    _plain_adadelta_step(ref, p_ref, grads[0])
    assert np.array_equal(p_ours, p_ref) and np.array_equal(ours.mean_sq_delta, ref.mean_sq_delta)


@given(case=_gradients)
def test_sgd_in_place_step_is_bit_identical_to_the_plain_formula(case):
    size, n_steps, seed, log_scale = case
    r = np.random.default_rng(seed)
    grads = r.normal(size=(n_steps, size)) * np.exp(abs(log_scale) * r.uniform(-1, 1, size=(n_steps, size)))
    schedule = PowerDecay(t0=1.5, kappa=0.7, scale=0.3)
    opt = SGD(schedule)
    p = r.normal(size=size)
    ref = p.copy()
    for t, g in enumerate(grads):
        opt.step(p, g)
        ref -= schedule(t) * g
        assert np.array_equal(p, ref)


def test_adam_matches_a_hand_computed_sequence():
    # lr 0.1, betas (0.9, 0.999), eps 1e-8, no decay; one parameter at 1, gradients 2, -1.
    # step 1: m = 0.2, v = 0.004; m_hat = 2, v_hat = 4: theta = 1 - 0.1 * 2 / (2 + 1e-8)
    # step 2: m = 0.18 - 0.1 = 0.08, v = 0.003996 + 0.001 = 0.004996;
    #         m_hat = 0.08 / 0.19, v_hat = 0.004996 / 0.001999
    opt = Adam(0.1)
    p = np.array([1.0])
    opt.step(p, np.array([2.0]))
    assert p[0] == pytest.approx(1 - 0.1 * 2 / (2 + 1e-8), rel=1e-15)
    opt.step(p, np.array([-1.0]))
    want = 1 - 0.1 * 2 / (2 + 1e-8) - 0.1 * (0.08 / 0.19) / (np.sqrt(0.004996 / 0.001999) + 1e-8)
    assert p[0] == pytest.approx(want, rel=1e-14)
    assert (opt.m[0], opt.v[0], opt.t) == (pytest.approx(0.08, rel=1e-14), pytest.approx(0.004996, rel=1e-14), 2)


def _plain_adam_step(opt, params, grad):
    """The Adam update as the class docstring writes it, with fresh temporaries (the reference twin)."""
    if opt.m is None:
        opt.m, opt.v = np.zeros_like(params), np.zeros_like(params)
    g = opt.weight_decay * params + grad if opt.weight_decay else grad.copy()
    opt.m *= opt.beta1
    opt.m += (1 - opt.beta1) * g
    opt.v *= opt.beta2
    opt.v += (1 - opt.beta2) * g**2
    t = opt.t + 1
    step_size = opt.schedule(opt.t) / (1 - opt.beta1 ** t)
    params -= step_size * (opt.m / (np.sqrt(opt.v) / np.sqrt(1 - opt.beta2 ** t) + opt.eps))
    opt.t = t


@given(case=_gradients, beta1=st.floats(0.0, 0.99), beta2=st.floats(0.0, 0.9999), eps=st.floats(1e-12, 1.0),
       decay=st.sampled_from([0.0, 5e-7, 0.1]))
def test_adam_in_place_step_is_bit_identical_to_the_plain_formula(case, beta1, beta2, eps, decay):
    size, n_steps, seed, log_scale = case
    r = np.random.default_rng(seed)
    grads = r.normal(size=(n_steps, size)) * np.exp(r.uniform(-abs(log_scale), abs(log_scale), size=(n_steps, size)))
    grads[r.random(grads.shape) < 0.2] = 0.0
    schedule = PowerDecay(t0=1.5, kappa=0.7, scale=0.3)
    ours, ref = Adam(schedule, beta1, beta2, eps, decay), Adam(schedule, beta1, beta2, eps, decay)
    p_ours = r.normal(size=size)
    p_ref = p_ours.copy()
    for g in grads:
        ours.step(p_ours, g)
        _plain_adam_step(ref, p_ref, g)
        assert np.array_equal(p_ours, p_ref)
        assert np.array_equal(ours.m, ref.m) and np.array_equal(ours.v, ref.v)
    ours.load_state(ref.state())
    ours.step(p_ours, grads[0])
    _plain_adam_step(ref, p_ref, grads[0])
    assert np.array_equal(p_ours, p_ref) and np.array_equal(ours.v, ref.v)


def test_adam_refuses_bad_settings_and_states():
    for kwargs, match in ((dict(beta1=1.0), "beta1"), (dict(beta2=-0.1), "beta2"), (dict(eps=0.0), "eps"),
                          (dict(weight_decay=-1.0), "weight_decay"), (dict(schedule="fast"), "schedule")):
        with pytest.raises((TypeError, ValueError), match=match):
            Adam(**kwargs)
    opt = Adam()
    opt.step(np.zeros(3), np.ones(3))
    saved = opt.state()
    with pytest.raises(ValueError, match="both m and v"):
        opt.load_state({"t": np.array(1), "m": np.zeros(3)})
    with pytest.raises(ValueError, match="v >= 0"):
        opt.load_state({"t": np.array(1), "m": np.zeros(3), "v": -np.ones(3)})
    assert all(np.array_equal(opt.state()[k], saved[k]) for k in saved)     # unchanged by the refused loads


@pytest.mark.parametrize("make_opt", [lambda: Adadelta(), lambda: SGD(0.1), lambda: Adam(1e-3, weight_decay=1e-4)],
                         ids=["adadelta", "sgd", "adam"])
def test_optimiser_steps_allocate_no_parameter_sized_temporaries(make_opt):
    p, g = np.zeros(100_000), np.full(100_000, 0.5)
    opt = make_opt()
    opt.step(p, g)                       # the first step allocates the running means and the buffers
    tracemalloc.start()
    try:
        for _ in range(3):
            opt.step(p, g)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < p.nbytes // 10, f"a step allocated {peak} bytes (parameters: {p.nbytes})"

def _quadratic(rng, dim=5):
    A = rng.normal(size=(dim, dim))
    H = A @ A.T + dim * np.eye(dim)
    centre = rng.normal(size=dim)

    def objective(noise):
        def f(p):
            d = p - centre
            return 0.5 * d @ H @ d, H @ d + noise
        return f

    return H, centre, objective


@pytest.mark.parametrize("make_opt", [lambda: Adadelta(), lambda: SGD(PowerDecay(t0=10, kappa=1.0, scale=1.0))])
def test_training_loop_reduces_a_convex_loss(make_opt, rng):
    H, centre, objective = _quadratic(rng)
    p = np.zeros(5)
    draw = lambda: rng.normal(scale=0.1, size=5)  # noisy gradients: a stochastic problem
    result = train(p, lambda noise: objective(noise)(p), draw, make_opt(), 3000, progress=False,
                   monitor=lambda: float(np.linalg.norm(p - centre)), monitor_every=1000)
    assert result.steps == 3000 and result.losses.shape == (3000,)
    assert np.mean(result.losses[-100:]) < 0.01 * result.losses[0]
    assert result.monitor[-1][1] < 0.1 * np.linalg.norm(centre)
    assert [s for s, _ in result.monitor] == [1000, 2000, 3000]


def test_callback_stops_early(rng):
    _, _, objective = _quadratic(rng)
    p = np.zeros(5)
    result = train(p, lambda b: objective(0.0)(p), lambda: None, Adadelta(), 1000, progress=False,
                   callback=lambda step, loss: step >= 7)
    assert result.stopped_early and result.steps == 7 and len(result.losses) == 7


def test_checkpoint_resumes_where_it_stopped(tmp_path, rng):
    _, _, objective = _quadratic(rng)
    path = tmp_path / "ckpt.npz"
    p = np.zeros(5)
    first = train(p, lambda b: objective(0.0)(p), lambda: None, Adadelta(), 50, progress=False,
                  checkpoint=path, callback=lambda step, loss: step >= 20)
    assert first.steps == 20
    q = np.zeros(5)
    opt = Adadelta()
    second = train(q, lambda b: objective(0.0)(q), lambda: None, opt, 50, progress=False, checkpoint=path)
    np.testing.assert_array_equal(second.losses[:20], first.losses)
    assert second.steps == 50 and opt.t == 50
    # an uninterrupted run with the same deterministic objective gives the same parameters
    r = np.zeros(5)
    train(r, lambda b: objective(0.0)(r), lambda: None, Adadelta(), 50, progress=False)
    np.testing.assert_allclose(q, r, rtol=1e-12)


def test_named_monitor_values_survive_a_checkpoint(tmp_path, rng):
    _, centre, objective = _quadratic(rng)
    path = tmp_path / "ckpt.npz"
    p = np.zeros(5)
    def monitor():
        return {"distance": float(np.linalg.norm(p - centre)), "norm": float(np.linalg.norm(p))}
    train(p, lambda b: objective(0.0)(p), lambda: None, Adadelta(), 30, progress=False, checkpoint=path,
          monitor=monitor, monitor_every=10, callback=lambda step, loss: step >= 20)
    resumed = train(p, lambda b: objective(0.0)(p), lambda: None, Adadelta(), 30, progress=False,
                    checkpoint=path, monitor=monitor, monitor_every=10)
    assert [s for s, _ in resumed.monitor] == [10, 20, 30]
    assert all(list(v) == ["distance", "norm"] for _, v in resumed.monitor)
    assert resumed.monitor[-1][1] == monitor()


def test_monitors_that_clash_with_the_loss_or_change_their_names_are_named_errors():
    p = np.zeros(1)
    step = lambda b: (float(p[0] ** 2), 2 * p)  # noqa: E731
    with pytest.raises(ValueError, match=r"monitor: expected names other than 'loss'.*received \['loss'\]"):
        train(p, step, lambda: None, SGD(0.1), 4, progress=True, monitor=lambda: {"loss": 1.0}, monitor_every=2)
    calls = iter([{"a": 1.0}, {"b": 2.0}])
    with pytest.raises(ValueError, match=r"monitor: expected \['a'\] as at its first call, received names \['b'\]"):
        train(p, step, lambda: None, SGD(0.1), 4, progress=False, monitor=lambda: next(calls), monitor_every=2)
    calls = iter([{"a": 1.0}, 3.0])
    with pytest.raises(ValueError, match=r"monitor: expected a dict with names \['a'\].*received float"):
        train(p, step, lambda: None, SGD(0.1), 4, progress=False, monitor=lambda: next(calls), monitor_every=2)


def test_progress_line_shows_rate_and_eta(capsys, rng):
    p = np.zeros(1)
    train(p, lambda b: (float(p[0] ** 2), 2 * p), lambda: None, SGD(0.1), 5, progress=True, label="demo")
    err = capsys.readouterr().err
    assert "demo 5/5" in err and "it/s" in err and "ETA" in err


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="data: expected a numeric array, received dtype <U1"):
        MinibatchDrawer(np.array([["a", "b"]]), 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"data: expected a 2-d array with at least one row, received shape \(0, 3\)"):
        MinibatchDrawer(np.zeros((0, 3)), 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"eta: expected a value in \(0.0, inf\], received -1.0"):
        ConstantSchedule(-1.0)
    with pytest.raises(ValueError, match=r"kappa: expected a value in \(0.0, 1.0\], received 1.5"):
        PowerDecay(kappa=1.5)
    with pytest.raises(ValueError, match=r"rho: expected a value in \[0.0, 1.0\), received 1.0"):
        Adadelta(rho=1.0)
    with pytest.raises(TypeError, match="params: expected a 1-d float64 ndarray"):
        train([0.0], lambda b: (0.0, np.zeros(1)), lambda: None, SGD(0.1), 3)
    p = np.zeros(2)
    with pytest.raises(ValueError, match=r"objective: expected a gradient of shape \(2,\), received shape \(3,\)"):
        train(p, lambda b: (0.0, np.zeros(3)), lambda: None, SGD(0.1), 3, progress=False)
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        train(p, lambda b: (np.nan, np.zeros(2)), lambda: None, SGD(0.1), 3, progress=False)
    np.testing.assert_array_equal(p, 0.0)


# ------------------------------------------------------------ resuming, interrupts, failures
class _Regression:
    """A stochastic problem whose every step depends on run state: minibatches from a MinibatchDrawer,
    gradient noise from a second generator, a monitor on held-out rows."""

    def __init__(self, seed, make_opt, n_rows=37, dim=4, batch=5):
        data_rng = np.random.default_rng([seed, 0])
        w_true = data_rng.normal(size=dim)
        x = data_rng.normal(size=(n_rows, dim))
        self.data = np.hstack([x, (x @ w_true + 0.1 * data_rng.normal(size=n_rows))[:, None]])
        self.params = np.zeros(dim)
        self.opt = make_opt()
        self.draw = MinibatchDrawer(self.data, batch, np.random.default_rng([seed, 1]))
        self.noise = np.random.default_rng([seed, 2])
        self.test = self.data[:10]

    def objective(self, batch):
        x, y = batch[:, :-1], batch[:, -1]
        r = x @ self.params - y
        return 0.5 * float(r @ r) / len(y), x.T @ r / len(y) + 0.01 * self.noise.normal(size=self.params.size)

    def monitor(self):
        x, y = self.test[:, :-1], self.test[:, -1]
        return {"test_mse": float(np.mean((x @ self.params - y) ** 2)), "norm": float(np.linalg.norm(self.params))}

    def train(self, n_steps, **kwargs):
        kwargs.setdefault("stateful", {"draw": self.draw, "noise": self.noise})
        return train(self.params, self.objective, self.draw, self.opt, n_steps, monitor=self.monitor,
                     monitor_every=7, progress=False, **kwargs)

    def snapshot(self):
        """Everything the run consists of, as plain values to compare exactly."""
        return (self.params.copy(), self.opt.state(), self.draw.state(), generator_state(self.noise))


def _assert_same(a, b):
    pa, oa, da, ga = a
    pb, ob, db, gb = b
    np.testing.assert_array_equal(pa, pb)
    assert sorted(oa) == sorted(ob) and all(np.array_equal(oa[k], ob[k]) for k in oa)
    assert sorted(da) == sorted(db) and all(np.array_equal(da[k], db[k]) for k in da)
    assert str(ga) == str(gb)


OPTIMISERS = {"adadelta": lambda: Adadelta(), "sgd": lambda: SGD(LinearDecay(0.1, 40)),
              "adam": lambda: Adam(LinearDecay(0.05, 40), weight_decay=1e-3),
              "adam_step": lambda: Adam(StepDecay(0.05, 7, 0.5))}


@settings(max_examples=15)
@given(seed=st.integers(0, 2**32 - 1), stop=st.integers(1, 39), every=st.integers(1, 12),
       opt=st.sampled_from(sorted(OPTIMISERS)))
def test_a_run_interrupted_at_any_step_resumes_to_the_uninterrupted_result(tmp_path_factory, seed, stop, every, opt):
    """Ctrl-C (a KeyboardInterrupt from the callback) at step ``stop``, then the same call again: the final
    parameters, losses, monitor history, optimiser, drawer and noise generator equal an uninterrupted run's."""
    path = tmp_path_factory.mktemp("ckpt") / "run.ckpt"
    whole = _Regression(seed, OPTIMISERS[opt])
    expected = whole.train(40)

    def ctrl_c(step, loss):
        if step == stop:
            raise KeyboardInterrupt

    cut = _Regression(seed, OPTIMISERS[opt])
    with pytest.raises(Interrupted) as info:
        cut.train(40, checkpoint=path, checkpoint_every=every, callback=ctrl_c)
    assert (info.value.step, info.value.saved_step, info.value.n_steps) == (stop, stop, 40)
    assert os.path.exists(path) and os.listdir(path.parent) == ["run.ckpt"]
    resumed = _Regression(seed, OPTIMISERS[opt])      # a new process: fresh objects, same seed
    result = resumed.train(40, checkpoint=path, checkpoint_every=every)
    _assert_same(resumed.snapshot(), whole.snapshot())
    np.testing.assert_array_equal(result.losses, expected.losses)
    assert result.monitor == expected.monitor and result.steps == 40


def test_without_the_drawer_in_the_checkpoint_the_resumed_run_differs(tmp_path):
    """Control for the test above: a drawer left out of ``stateful`` resumes on another stream."""
    path = tmp_path / "run.ckpt"
    whole = _Regression(3, OPTIMISERS["adadelta"])
    whole.train(30)
    cut = _Regression(3, OPTIMISERS["adadelta"])
    with pytest.raises(ValueError, match=r"stateful: expected the draw object \(MinibatchDrawer"):
        cut.train(30, checkpoint=path, stateful={"noise": cut.noise})        # refused, not silently inexact
    cut.train(30, checkpoint=path, stateful={"noise": cut.noise, "draw": cut.draw},
              callback=lambda step, loss: step >= 11)
    resumed = _Regression(3, OPTIMISERS["adadelta"])
    resumed.draw = MinibatchDrawer(resumed.data, 5, np.random.default_rng(99))  # what a lost stream amounts to
    resumed.train(30, checkpoint=path.with_name("other.ckpt"), stateful={"noise": resumed.noise,
                                                                        "draw": resumed.draw})
    assert not np.array_equal(resumed.params, whole.params)


def test_a_real_ctrl_c_finishes_the_step_then_saves_and_stops(tmp_path):
    """SIGINT in the middle of step k: the step completes, the checkpoint holds step k, and resuming is exact."""
    path = tmp_path / "run.ckpt"
    whole = _Regression(5, OPTIMISERS["adadelta"])
    whole.train(30)
    cut = _Regression(5, OPTIMISERS["adadelta"])
    calls = {"n": 0}
    plain = cut.objective

    def objective_with_ctrl_c(batch):
        calls["n"] += 1
        if calls["n"] == 13:
            signal.raise_signal(signal.SIGINT)     # arrives inside step 13
        return plain(batch)

    cut.objective = objective_with_ctrl_c
    with pytest.raises(Interrupted) as info:
        cut.train(30, checkpoint=path, checkpoint_every=100)
    assert (info.value.step, info.value.saved_step) == (13, 13)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler     # the handler is put back
    assert npzfile.load(path, CHECKPOINT_KIND, {1})["losses"].size == 13
    resumed = _Regression(5, OPTIMISERS["adadelta"])
    resumed.train(30, checkpoint=path)
    _assert_same(resumed.snapshot(), whole.snapshot())


def test_an_interrupt_in_the_middle_of_a_step_rolls_back_and_keeps_the_last_checkpoint(tmp_path):
    """A KeyboardInterrupt raised inside the objective (a second Ctrl-C) at step 18: the state goes back to
    the entry state, the checkpoint keeps step 10 (the last periodic one), and resuming from it is exact."""
    path = tmp_path / "run.ckpt"
    whole = _Regression(8, OPTIMISERS["sgd"])
    whole.train(40)
    cut = _Regression(8, OPTIMISERS["sgd"])
    entry = cut.snapshot()
    plain, calls = cut.objective, {"n": 0}

    def objective(batch):
        calls["n"] += 1
        if calls["n"] == 18:
            raise KeyboardInterrupt
        return plain(batch)

    cut.objective = objective
    with pytest.raises(Interrupted) as info:
        cut.train(40, checkpoint=path, checkpoint_every=10)
    assert (info.value.step, info.value.saved_step) == (17, 10)
    _assert_same(cut.snapshot(), entry)
    resumed = _Regression(8, OPTIMISERS["sgd"])
    resumed.train(40, checkpoint=path, checkpoint_every=10)
    _assert_same(resumed.snapshot(), whole.snapshot())


def _failing(kind, at):
    """An (objective wrapper, monitor wrapper) pair for a _Regression that fails in the given way at step ``at``."""
    def wrap_objective(problem):
        plain, calls = problem.objective, {"n": 0}

        def objective(batch):
            calls["n"] += 1
            loss, grad = plain(batch)
            if calls["n"] == at:
                if kind == "raises":
                    raise RuntimeError("objective failed")
                if kind == "nan gradient":
                    grad = grad.copy()
                    grad[0] = np.nan
                if kind == "complex gradient":
                    grad = grad + 1j
                if kind == "no pair":
                    return loss
            return loss, grad
        return objective
    return wrap_objective


@pytest.mark.parametrize("kind, error, match", [
    ("raises", RuntimeError, "objective failed"),
    ("nan gradient", FloatingPointError, "objective: non-finite loss or gradient at step 11"),
    ("complex gradient", TypeError, "objective: expected a real gradient, received dtype complex128"),
    ("no pair", TypeError, r"objective: expected a \(loss, gradient\) pair, received float"),
])
def test_a_failure_midway_leaves_params_optimiser_and_stream_as_at_entry(tmp_path, kind, error, match):
    problem = _Regression(2, OPTIMISERS["adadelta"])
    problem.train(9)                                   # the optimiser and stream have state before the call
    entry = problem.snapshot()
    problem.objective = _failing(kind, 12)(problem)
    with pytest.raises(error, match=match):
        problem.train(30, checkpoint=tmp_path / "c", checkpoint_every=5)
    _assert_same(problem.snapshot(), entry)
    assert npzfile.load(tmp_path / "c", CHECKPOINT_KIND, {1})["losses"].size == 10   # the last periodic one


@pytest.mark.parametrize("value, error, match", [
    ({"test_mse": np.nan, "norm": 1.0}, ValueError, r"monitor\['test_mse'\]: expected a finite value, received nan"),
    ({"test_mse": "high", "norm": 1.0}, TypeError, r"monitor\['test_mse'\]: expected a real number, received 'high'"),
    ({"other": 1.0}, ValueError, r"monitor: expected \['test_mse', 'norm'\] as at its first call"),
    (2.0, ValueError, r"monitor: expected a dict with names \['test_mse', 'norm'\]"),
])
def test_a_bad_monitor_value_leaves_the_model_as_at_entry(value, error, match):
    problem = _Regression(4, OPTIMISERS["sgd"])
    entry = problem.snapshot()
    plain, calls = problem.monitor, {"n": 0}

    def monitor():
        calls["n"] += 1
        return value if calls["n"] == 2 else plain()

    problem.monitor = monitor
    with pytest.raises(error, match=match):
        problem.train(30)
    _assert_same(problem.snapshot(), entry)


def test_every_argument_is_checked_before_anything_changes(tmp_path):
    problem = _Regression(1, OPTIMISERS["adadelta"])
    problem.train(5)
    entry = problem.snapshot()
    p, obj, draw, opt = problem.params, problem.objective, problem.draw, problem.opt

    class NoState:
        def __call__(self):
            return None

    cases = [
        (dict(objective=None), TypeError, r"objective: expected a callable batch -> \(loss, gradient\), received None"),
        (dict(draw=3), TypeError, r"draw: expected a callable \(\) -> batch, received 3"),
        (dict(monitor="loss"), TypeError, r"monitor: expected a callable .* or None, received 'loss'"),
        (dict(callback=1), TypeError, r"callback: expected a callable .* or None, received 1"),
        (dict(optimizer=object()), TypeError,
         r"optimizer: expected an optimiser .*\(methods step, state, load_state\), received object without step"),
        (dict(optimizer=None), TypeError, "optimizer: expected an optimiser .*, received None"),
        (dict(checkpoint=""), TypeError, "checkpoint: expected a file path"),
        (dict(n_steps=0), ValueError, "n_steps: expected an integer >= 1, received 0"),
        (dict(monitor_every=0), ValueError, "monitor_every: expected an integer >= 1, received 0"),
        (dict(checkpoint_every=0), ValueError, "checkpoint_every: expected an integer >= 1, received 0"),
        (dict(progress="yes"), TypeError, "progress: expected True or False, received 'yes'"),
        (dict(label=3), TypeError, "label: expected a str, received 3"),
        (dict(stateful={"x": NoState()}), TypeError, r"stateful\['x'\]: expected an object with state\(\)"),
        (dict(stateful={"a.b": draw}), ValueError, "stateful: expected names that are identifiers"),
        (dict(stateful=[draw]), TypeError, "stateful: expected a dict"),
        (dict(settings={"f": object()}), TypeError, "settings: expected JSON-able values"),
        (dict(checkpoint=tmp_path / "no" / "c"), FileNotFoundError, "checkpoint: expected a file in an existing folder"),
        (dict(checkpoint=tmp_path), ValueError, "checkpoint: expected a file name, received .*an existing folder"),
        (dict(checkpoint=tmp_path / "c", stateful={}), ValueError, "stateful: expected the draw object"),
    ]
    for change, error, match in cases:
        args = dict(objective=obj, draw=draw, optimizer=opt, n_steps=20, monitor=problem.monitor,
                    stateful={"draw": draw, "noise": problem.noise})
        args.update(change)
        with pytest.raises(error, match=match):
            train(p, args.pop("objective"), args.pop("draw"), args.pop("optimizer"), args.pop("n_steps"),
                  progress=args.pop("progress", False), **args)
        _assert_same(problem.snapshot(), entry)
    assert not os.listdir(tmp_path)
    with pytest.raises(ValueError, match="params: expected finite values, received 1 NaN or infinite entries"):
        train(np.array([np.nan, 0.0]), lambda b: (0.0, np.zeros(2)), lambda: None, SGD(0.1), 3)
    with pytest.raises(TypeError, match=r"callback: expected True, False or None \(True stops training\), received 3"):
        train(p, obj, draw, opt, 20, progress=False, callback=lambda s, l: 3,
              stateful={"draw": draw, "noise": problem.noise})
    _assert_same(problem.snapshot(), entry)


def test_a_checkpoint_from_other_settings_is_refused_naming_the_setting(tmp_path):
    path = tmp_path / "run.ckpt"
    first = _Regression(6, OPTIMISERS["adadelta"])
    first.train(20, checkpoint=path, settings={"hidden": 5}, callback=lambda s, l: s >= 8)
    refusals = [
        (dict(n=21), r"n_steps: 20 there, 21 now"),
        (dict(settings={"hidden": 6}), r"settings.hidden: 5 there, 6 now"),
        (dict(settings={}), r"settings.hidden: 5 there, not set now"),
        (dict(opt=lambda: Adadelta(rho=0.9)), r"optimizer: \{.*'rho': 0.95.*\} there, \{.*'rho': 0.9.*\} now"),
        (dict(opt=lambda: SGD(0.1)), r"optimizer: .*Adadelta.* there, .*SGD.* now"),
    ]
    for change, match in refusals:
        again = _Regression(6, change.get("opt", OPTIMISERS["adadelta"]))
        entry = again.snapshot()
        with pytest.raises(CheckpointError, match=match):
            again.train(change.get("n", 20), checkpoint=path, settings=change.get("settings", {"hidden": 5}))
        _assert_same(again.snapshot(), entry)
    again = _Regression(6, OPTIMISERS["adadelta"])
    again.train(20, checkpoint=path, settings={"hidden": 5})                      # control: same settings resume
    assert again.opt.t == 20


def _tampered(path, **changes):
    arrays = npzfile.load(path, CHECKPOINT_KIND, {1})
    arrays.update(changes)
    for name in [k for k, v in changes.items() if v is None]:
        del arrays[name]
    npzfile.save(path, CHECKPOINT_KIND, 1, **arrays)


@pytest.mark.parametrize("changes, match", [
    (dict(params=np.zeros(5)), r"params: expected finite float64 of shape \(4,\), received float64 of shape \(5,\)"),
    (dict(params=np.array([0.0, np.nan, 0.0, 0.0])), "params: expected finite float64"),
    (dict(losses=np.full(3, np.inf)), "losses: expected at most 20 finite values"),
    (dict(history=np.zeros((1, 2))), r"history: expected rows \(step, value, ...\)"),
    ({"optimizer.mean_sq_grad": np.ones(3)}, r"optimizer.mean_sq_grad: expected finite values of shape \(4,\)"),
    ({"state.noise.bit_generator": None}, r"stateful: expected the objects \['draw', 'noise'\], the file has \['draw'\]"),
    ({"state.draw.perm": np.zeros(37, dtype=np.int64)}, "perm: expected a permutation of 0..36"),
    ({"state.noise.bit_generator": np.array(json.dumps({"bit_generator": "MT19937"}))},
     "rng: expected a PCG64 state, received a MT19937 state"),
])
def test_a_damaged_checkpoint_is_refused_whole_before_anything_is_loaded(tmp_path, changes, match):
    path = tmp_path / "run.ckpt"
    _Regression(7, OPTIMISERS["adadelta"]).train(20, checkpoint=path, callback=lambda s, l: s >= 9)
    _tampered(path, **changes)
    again = _Regression(7, OPTIMISERS["adadelta"])
    again.train(3)                       # some state to keep
    entry = again.snapshot()
    with pytest.raises(CheckpointError, match=match):
        again.train(20, checkpoint=path)
    _assert_same(again.snapshot(), entry)


def test_a_truncated_checkpoint_is_refused_with_its_name(tmp_path):
    path = tmp_path / "run.ckpt"
    _Regression(7, OPTIMISERS["adadelta"]).train(20, checkpoint=path, callback=lambda s, l: s >= 9)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"checkpoint: could not read .*run.ckpt.*delete it"):
        _Regression(7, OPTIMISERS["adadelta"]).train(20, checkpoint=path)


def test_generator_states_round_trip_exactly_including_128_bit_integers():
    rng = np.random.default_rng(2**127 + 12345)
    rng.random(7)
    saved = generator_state(rng)
    assert saved.shape == () and rng.bit_generator.state["state"]["state"] > 2**64
    expected = rng.random(5)
    other = np.random.default_rng(0)
    load_generator_state(other, saved)
    np.testing.assert_array_equal(other.random(5), expected)
    for bad, match in ((np.array("{"), "does not parse"), (np.array(json.dumps({"bit_generator": "PCG64"})),
                                                          "expected a valid PCG64 state"), (np.zeros(2), "0-d string")):
        before = other.bit_generator.state
        with pytest.raises(ValueError, match=match):
            load_generator_state(other, bad)
        assert other.bit_generator.state == before
    mt = np.random.Generator(np.random.MT19937(3))
    twin = np.random.Generator(np.random.MT19937(4))
    load_generator_state(twin, generator_state(mt))
    assert twin.random() == mt.random()


def test_minibatch_drawer_state_continues_the_stream_mid_pass():
    drawer = MinibatchDrawer(np.arange(22.0)[:, None], 4, np.random.default_rng(1))
    for _ in range(7):
        drawer()
    saved = drawer.state()
    expected = [drawer() for _ in range(9)]
    other = MinibatchDrawer(np.arange(22.0)[:, None], 4, np.random.default_rng(50))
    other.load_state(saved)
    for want in expected:
        np.testing.assert_array_equal(other(), want)
    assert (other.passes, other.examples_drawn) == (drawer.passes, drawer.examples_drawn)
    with pytest.raises(ValueError, match=r"pos: expected an integer in \[0, 21\], received 22"):
        other.load_state({**saved, "pos": np.array(22)})
    with pytest.raises(ValueError, match="MinibatchDrawer: expected state entries .*missing \\['perm'\\]"):
        other.load_state({k: v for k, v in saved.items() if k != "perm"})


def test_a_ctrl_c_during_the_last_monitor_is_not_lost(tmp_path):
    """SIGINT while the final monitor value is computed: the run is complete, saved, and still reports the
    interrupt (so a caller with more stages after it stops too)."""
    problem = _Regression(9, OPTIMISERS["adadelta"])
    plain, calls = problem.monitor, {"n": 0}

    def monitor():
        calls["n"] += 1
        if calls["n"] == 3:                          # steps 7, 14, then the end (step 20)
            signal.raise_signal(signal.SIGINT)
        return plain()

    problem.monitor = monitor
    with pytest.raises(Interrupted) as info:
        problem.train(20, checkpoint=tmp_path / "c")
    assert (info.value.step, info.value.saved_step, info.value.n_steps) == (20, 20, 20)
    again = _Regression(9, OPTIMISERS["adadelta"])
    result = again.train(20, checkpoint=tmp_path / "c")       # nothing left to do: the saved result
    assert [s for s, _ in result.monitor] == [7, 14, 20] and again.opt.t == 20
    np.testing.assert_array_equal(again.params, problem.params)
