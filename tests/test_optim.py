"""Schedules, SGD, ADADELTA and the training loop."""
import numpy as np
import pytest

from kd_ref.optim import SGD, Adadelta, ConstantSchedule, LinearDecay, MinibatchDrawer, PowerDecay, train


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


def test_sgd_follows_its_schedule():
    p = np.zeros(2)
    opt = SGD(LinearDecay(1.0, 4))
    for _ in range(4):
        opt.step(p, np.array([1.0, -1.0]))
    # steps 1, 0.75, 0.5, 0.25
    np.testing.assert_allclose(p, [-2.5, 2.5])


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
