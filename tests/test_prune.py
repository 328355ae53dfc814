"""OBD and OBS (SPEC_seeds S1.11, S1.16): exact at a quadratic minimum, masks that hold, and controls."""
import numpy as np
import pytest

from kd_ref.curvature import full_hessian, hessian_diagonal
from kd_ref.distill.compression import DatasetGenerator
from kd_ref.mlp import MLP
from kd_ref.optim import SGD, Adadelta, ConstantSchedule
from kd_ref.outputs import SquareError
from kd_ref.prune import (ParameterMask, deletion_curve, magnitude_select, mean_loss, obd, obs_step, random_select,
                          retrain, saliency, saliency_select)


def least_squares_net(seed=0, n=40, d=4, c=3):
    """A linear net at the exact least-squares minimum: L is quadratic in the parameters."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    t = x @ rng.normal(size=(d, c)) + rng.normal(size=(n, c))
    net = MLP([d, c], ["linear"], rng)
    coef, *_ = np.linalg.lstsq(np.hstack([x, np.ones((n, 1))]), t, rcond=None)
    net.W[0][...] = coef[:d].T
    net.b[0][...] = coef[d]
    return net, x, SquareError(t)


def test_obd_is_exact_at_a_quadratic_minimum():
    net, x, out = least_squares_net()
    L0, g = mean_loss(net, x, out)
    assert np.max(np.abs(g)) < 1e-12                                  # extremal
    s = saliency(hessian_diagonal(net, x, out).diag, net.params)
    H = full_hessian(net, x, out)
    u = net.params.copy()
    for k in range(net.n_params):                                     # one weight: exactly s_k
        net.params[k] = 0.0
        assert abs(mean_loss(net, x, out, gradient=False) - L0 - s[k]) <= 1e-10 * max(s[k], L0)
        net.params[k] = u[k]
    # two weights into the same output unit (W1[0, 0] and W1[0, 1], W1[1, 0] and W1[1, 2], W1[0, 0] and b1[0])
    for i, j in [(0, 1), (4, 6), (0, 12)]:                            # add the cross term h_ij u_i u_j
        net.params[[i, j]] = 0.0
        actual = mean_loss(net, x, out, gradient=False) - L0
        assert abs(actual - (s[i] + s[j] + H[i, j] * u[i] * u[j])) <= 1e-10 * L0
        assert abs(actual - (s[i] + s[j])) > 1e-6 * L0                # ... which OBD's sum leaves out
        net.params[...] = u


def test_obs_predicted_increase_equals_the_actual_one_after_the_adjustment():
    net, x, out = least_squares_net(1)
    L0 = mean_loss(net, x, out, gradient=False)
    H = full_hessian(net, x, out)
    mask = ParameterMask(net.n_params)
    for _ in range(3):                                                # repeated, on the remaining parameters
        L_before = mean_loss(net, x, out, gradient=False)
        step = obs_step(H, net.params, mask)
        net.params[...] += step.delta
        mask.delete([step.index])
        assert net.params[step.index] == 0.0
        assert abs(mean_loss(net, x, out, gradient=False) - L_before - step.predicted) <= 1e-10 * L0
        assert np.all(net.params[~mask.keep] == 0.0)
        # OBS never does worse than OBD's plain deletion of the same weight
        assert step.predicted <= 0.5 * H[step.index, step.index] * (net.params - step.delta)[step.index] ** 2 + 1e-15


def test_obs_on_a_general_quadratic():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(6, 6))
    H = A @ A.T + 0.1 * np.eye(6)
    u = rng.normal(size=6)

    def L(v):                                                         # minimum at u, value 0
        return 0.5 * (v - u) @ H @ (v - u)

    step = obs_step(H, u)
    assert abs(L(u + step.delta) - step.predicted) <= 1e-12 * (1 + step.predicted)
    assert (u + step.delta)[step.index] == 0.0
    # independent check: for every q, minimise L subject to v_q = 0 by solving on the free coordinates
    for q in range(6):
        free = np.delete(np.arange(6), q)
        w = np.zeros(6)
        w[q] = -u[q]
        w[free] = np.linalg.solve(H[np.ix_(free, free)], H[free, q] * u[q])
        assert abs(0.5 * w @ H @ w - step.saliencies[q]) <= 1e-12 * (1 + step.saliencies[q])
    assert step.index == int(np.argmin(step.saliencies))
    with pytest.raises(ValueError, match="hessian: expected a positive definite"):
        obs_step(-H, u)


def test_masks_keep_zeros_under_sgd_and_adadelta():
    rng = np.random.default_rng(3)
    net = MLP([5, 6, 3], ["logistic", "logistic"], rng)
    x, t = rng.normal(size=(50, 5)), rng.uniform(size=(50, 3))
    mask = ParameterMask(net.n_params)
    mask.delete(random_select(mask, 20, rng))

    def objective(batch):
        return mean_loss(net, batch[0], SquareError(batch[1]))

    for optimizer in (SGD(ConstantSchedule(0.5)), Adadelta()):
        draw = DatasetGenerator(x, 10, np.random.default_rng(4), targets=t)
        before = net.params.copy()
        retrain(net.params, mask, objective, draw, optimizer, 30, progress=False)
        assert np.all(net.params[~mask.keep] == 0.0)                  # exactly
        assert np.all(net.params[mask.keep] != before[mask.keep])     # the rest trained
    with pytest.raises(ValueError, match="mask: expected one entry per parameter"):
        retrain(net.params, ParameterMask(3), objective, draw, SGD(ConstantSchedule(0.1)), 1, progress=False)


def trained_problem(seed=5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 6))
    teacher = MLP([6, 5, 3], ["logistic", "logistic"], rng)
    t = teacher.predict(x)
    net = MLP([6, 8, 3], ["logistic", "logistic"], rng)
    draw = DatasetGenerator(x, 20, rng, targets=t)
    retrain(net.params, ParameterMask(net.n_params), lambda b: mean_loss(net, b[0], SquareError(b[1])), draw,
            Adadelta(), 3000, progress=False)
    return net, x, SquareError(t), rng


def test_saliency_deletion_beats_random_and_magnitude_control():
    net, x, out, rng = trained_problem()
    s = saliency(hessian_diagonal(net, x, out).diag, net.params)
    k = net.n_params // 3
    by_saliency = deletion_curve(net, x, out, np.argsort(s), [k])[0]
    by_magnitude = deletion_curve(net, x, out, np.argsort(np.abs(net.params)), [k])[0]
    by_random = [deletion_curve(net, x, out, rng.permutation(net.n_params), [k])[0] for _ in range(20)]
    assert by_saliency < by_magnitude
    assert by_saliency < np.min(by_random)


def test_obd_loop_table():
    net, x, out, rng = trained_problem(6)
    draw = DatasetGenerator(x, 20, np.random.default_rng(7), targets=out.t)

    def retrain_fn(n, mask):
        retrain(n.params, mask, lambda b: mean_loss(n, b[0], SquareError(b[1])), draw, Adadelta(), 50,
                progress=False)

    def evaluate(n):
        return {"train_loss": mean_loss(n, x, out, gradient=False)}

    P = net.n_params
    table, mask = obd(net, x, out, rounds=4, fraction=0.1, retrain_fn=retrain_fn, evaluate=evaluate)
    assert P == 83 and [r.remaining for r in table] == [75, 67, 60, 54]   # 10% of the remaining, rounded
    assert mask.n_remaining == table[-1].remaining
    assert np.all(net.params[~mask.keep] == 0.0)
    for r in table:
        assert r.predicted >= 0 and r.after["train_loss"] <= r.before["train_loss"] + 1e-12
    # the first round deleted the lowest saliencies of the trained net, and its predicted ΔL is their sum
    assert len(np.intersect1d(table[0].deleted, np.concatenate([r.deleted for r in table[1:]]))) == 0


def test_selection_and_bad_input():
    mask = ParameterMask(5)
    mask.delete([1])
    assert list(saliency_select(np.array([5.0, 0.0, 1.0, 3.0, 2.0]), mask, 2)) == [2, 4]
    assert list(magnitude_select(np.array([-0.5, 0.0, 2.0, 0.1, -3.0]), mask, 2)) == [3, 0]
    assert 1 not in random_select(mask, 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="n: expected at most the 4 remaining parameters"):
        saliency_select(np.zeros(5), mask, 5)
    with pytest.raises(ValueError, match=r"params: expected an array of shape \(5,\)"):
        mask.apply(np.zeros(4))
    with pytest.raises(ValueError, match="indices: expected indices in 0..4"):
        mask.delete([0, 7])
    assert mask.n_remaining == 4                                      # nothing changed by the bad call
    net, x, out = least_squares_net()
    with pytest.raises(ValueError, match="select: expected one of"):
        obd(net, x, out, rounds=1, select="smallest")
    with pytest.raises(ValueError, match="mask: expected one entry per parameter"):
        obd(net, x, out, rounds=1, mask=ParameterMask(3))
    with pytest.raises(TypeError, match="rng"):
        obd(net, x, out, rounds=1, select="random")
