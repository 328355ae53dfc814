"""Group l1/l2 pruning of hidden units (SPEC_seeds S3.19): the regulariser's gradient, the prox as group
soft-thresholding with exact zeros, both solvers against the exact minimiser of a quadratic, exact unit
removal with bias folding, resumable proximal training, and named errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from _tolerance import passes
from kd_ref.gradcheck import DEFAULT_STEP, check_gradient
from kd_ref.mlp import MLP
from kd_ref.optim import SGD, Adadelta, Adam, MinibatchDrawer, PowerDecay
from kd_ref.outputs import SquareError
from kd_ref.prune import (GroupProx, UnitGroups, group_lasso_prune, group_lasso_train, prune_units, unit_keep,
                          unit_mask)
from kd_ref.width import n_params

HIDDEN = ["linear", "relu", "logistic", "probit"]
OUTPUT = ["linear", "logistic", "softmax", "log_softmax"]


@st.composite
def networks(draw, min_hidden=1):
    sizes = draw(st.lists(st.integers(1, 6), min_size=min_hidden + 2, max_size=min_hidden + 3))
    names = [draw(st.sampled_from(HIDDEN)) for _ in sizes[2:]] + [draw(st.sampled_from(OUTPUT))]
    net = MLP(sizes, names, np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1))))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    for b in net.b:
        b[...] = rng.normal(size=b.shape)                     # non-zero biases: folding matters
    return net, rng


def soft_threshold(v, t):
    """The prox of t ||.||_2 on one group, by its definition: argmin_z 1/2 ||z - v||^2 + t ||z||."""
    norm = np.linalg.norm(v)
    return np.zeros_like(v) if norm <= t else (1 - t / norm) * v


def test_groups_are_one_per_hidden_unit_incoming_weights_and_bias():
    net = MLP([3, 2, 4, 1], ["relu", "relu", "linear"], np.random.default_rng(0))
    groups = UnitGroups(net)
    assert [g.shape for g in groups.index] == [(2, 4), (4, 3)]          # D_l units, D_{l-1} + 1 entries
    covered = np.concatenate([g.ravel() for g in groups.index])
    assert np.unique(covered).size == covered.size == 2 * 4 + 4 * 3    # disjoint, the output layer left out
    W1, b1, W2, b2, W3, b3 = net.param_views(np.arange(net.n_params))
    np.testing.assert_array_equal(groups.index[1][2], np.r_[W2[2], b2[2]])
    assert groups.value(net.params) == pytest.approx(
        sum(np.linalg.norm(np.r_[net.W[l][i], net.b[l][i]]) for l in (0, 1) for i in range(net.sizes[l + 1])),
        rel=1e-14)


@given(networks(), st.data())
def test_regulariser_gradient_matches_differences_away_from_zero(net_rng, data):
    net, rng = net_rng
    groups = UnitGroups(net)
    params = net.params.copy()
    # ||w|| has derivatives of order k growing like ||w||^(1-k): the five-point difference is exact to h^4 only
    # for h well inside the smallest group's norm, so the step is kept at 1% of it (the tolerance is unchanged)
    smallest = min(np.linalg.norm(params[row]) for idx in groups.index for row in idx)
    step = min(DEFAULT_STEP, 1e-2 * smallest)
    result = check_gradient(groups.value, groups.subgradient, params, directions=rng.normal(size=(3, params.size)),
                            step=step)
    assert passes(result, 1e-7, groups.value(params), step), result
    zeroed = params.copy()
    zeroed[groups.index[0][0]] = 0.0
    assert np.all(groups.subgradient(zeroed)[groups.index[0][0]] == 0.0)   # GPED's subgradient at 0


@given(networks(), st.floats(0.0, 3.0))
def test_prox_is_group_soft_thresholding_with_exact_zeros(net_rng, step):
    net, rng = net_rng
    groups = UnitGroups(net)
    v = net.params.copy()
    z = groups.prox(v.copy(), step)
    expected = v.copy()
    for idx in groups.index:
        for row in idx:
            expected[row] = soft_threshold(v[row], step)
            if np.linalg.norm(v[row]) <= step:
                assert np.all(z[row] == 0.0)                                # exact zeros, no threshold
            else:                                                           # optimality: z - v + step z/|z| = 0
                np.testing.assert_allclose(z[row] - v[row] + step * z[row] / np.linalg.norm(z[row]), 0.0,
                                           atol=1e-13)
    np.testing.assert_allclose(z, expected, rtol=1e-14, atol=1e-15)
    last = net.layout.slice(f"W{net.n_layers}").start                       # the output layer is not grouped
    np.testing.assert_array_equal(z[last:], v[last:])


def quadratic(c):
    """L = 1/2 ||phi - c||^2 whatever the batch: the minimiser of L + lam R is prox_{lam R}(c) exactly."""
    def objective(params):
        return lambda batch: (0.5 * float(np.sum((params - c) ** 2)), params - c)
    return objective


def test_both_solvers_reach_the_exact_group_lasso_minimiser_of_a_quadratic():
    net = MLP([4, 6, 3], ["relu", "linear"], np.random.default_rng(1))
    groups = UnitGroups(net)
    rng = np.random.default_rng(2)
    c = rng.normal(size=net.n_params)
    lam = 2.0
    norms = groups.norms(c)[0]
    assert 0 < np.sum(norms <= lam) < net.sizes[1]                          # some groups die, some live
    exact = groups.prox(c.copy(), lam)
    start = rng.normal(size=net.n_params)
    net.params[...] = start
    group_lasso_train(net, quadratic(c)(net.params), lambda: None, SGD(0.5), 100, lam, progress=False)
    np.testing.assert_allclose(net.params, exact, atol=1e-12)
    dead = norms <= lam
    assert np.all(net.params[groups.index[0][dead]] == 0.0)                # exactly 0
    np.testing.assert_array_equal(unit_keep(net, eps=0.0)[0], ~dead)
    # the subgradient solver only hovers near 0: small, not zero, hence GPED's threshold eps = 1e-3
    net.params[...] = start
    group_lasso_train(net, quadratic(c)(net.params), lambda: None, SGD(PowerDecay(t0=10.0, kappa=1.0, scale=5.0)),
                      20_000, lam, solver="subgradient", progress=False)
    dead_weights = net.params[groups.index[0][dead]]
    assert np.max(np.abs(dead_weights)) < 1e-3 and np.any(dead_weights != 0.0)
    np.testing.assert_array_equal(unit_keep(net, eps=1e-3)[0], ~dead)
    alive = groups.index[0][~dead]
    np.testing.assert_allclose(net.params[alive], exact[alive], atol=1e-3)


@given(networks(), st.data())
def test_prune_units_computes_what_the_masked_network_did(net_rng, data):
    net, rng = net_rng
    keep = [np.array(data.draw(st.lists(st.booleans(), min_size=d, max_size=d).filter(any))) for d in net.sizes[1:-1]]
    unit_mask(net, keep).apply(net.params)                                  # the masked network
    x = rng.normal(size=(7, net.sizes[0]))
    pruned = prune_units(net, keep)
    assert pruned.sizes == [net.sizes[0]] + [int(k.sum()) for k in keep] + [net.sizes[-1]]
    assert pruned.nonlinearities == net.nonlinearities and pruned.n_params == n_params(pruned.sizes)
    np.testing.assert_allclose(pruned.predict(x), net.predict(x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(pruned.forward(x).a[-1], net.forward(x).a[-1], rtol=0, atol=1e-12)
    # control: without the folded biases, the first layer that receives a non-zero constant misses it exactly
    rows = keep + [np.ones(net.sizes[-1], dtype=bool)]
    unfolded = MLP(pruned.sizes, pruned.nonlinearities, None)
    for l in range(net.n_layers):
        cols = np.ones(net.sizes[0], dtype=bool) if l == 0 else rows[l - 1]
        unfolded.W[l][...] = net.W[l][np.ix_(rows[l], cols)]
        unfolded.b[l][...] = net.b[l][rows[l]]
    for l, k in enumerate(keep):
        missed = net.W[l + 1][np.ix_(rows[l + 1], ~k)] @ net.f[l].forward(net.b[l][~k][None, :])[0]
        if np.any(missed != 0):
            gap = net.forward(x).a[l + 1][:, rows[l + 1]] - unfolded.forward(x).a[l + 1]
            np.testing.assert_allclose(gap, np.broadcast_to(missed, gap.shape), rtol=1e-12, atol=1e-12)
            break


def regression_problem(seed=0):
    """A 5-8-2 ReLU student of a teacher that uses only 3 hidden units; the data loss is the mean square error."""
    rng = np.random.default_rng(seed)
    teacher = MLP([5, 3, 2], ["relu", "linear"], rng)
    x = rng.normal(size=(200, 5))
    t = teacher.predict(x)
    net = MLP([5, 8, 2], ["relu", "linear"], rng)

    def objective(batch):
        value, grad, _ = net.grad(x[batch], SquareError(t[batch]), input_grads=False)
        return value / batch.size, grad / batch.size
    draw_rng = np.random.default_rng(seed + 1)
    return net, x, objective, lambda: draw_rng.choice(200, size=20, replace=False)


@pytest.mark.parametrize("solver, lam", [("proximal", 0.1), ("subgradient", 0.05)])
def test_group_lasso_prune_removes_units_and_keeps_the_function(solver, lam):
    net, x, objective, draw = regression_problem()
    result = group_lasso_prune(net, objective, draw, Adam(0.01), 1500, lam, solver=solver,
                               fine_tune_optimizer=Adam(0.001), fine_tune_steps=200, progress=False)
    removed = int(np.sum(~result.keep[0]))
    assert 0 < removed < 8 and result.pruned.sizes == [5, 8 - removed, 2]
    np.testing.assert_allclose(result.pruned.predict(x), net.predict(x), rtol=0, atol=1e-12)
    assert np.all(net.W[0][~result.keep[0]] == 0.0)                         # the mask held through fine-tuning
    assert result.fine_tune.losses[-50:].mean() < result.fine_tune.losses[:50].mean()


def test_proximal_training_resumes_from_a_checkpoint_bit_for_bit(tmp_path):
    """The prox is part of the optimiser step, so a checkpoint written after step 20 holds the thresholded
    parameters: a run that fails at step 25 and resumes from it ends where an uninterrupted run does."""
    net, _, objective, _ = regression_problem(3)
    start = net.params.copy()

    def fail_at_25(step, loss):
        if step == 25:
            raise RuntimeError("stop")

    def run(path, callback=None):
        net.params[...] = start
        drawer = MinibatchDrawer(np.arange(200)[:, None], 20, np.random.default_rng(9))
        return group_lasso_train(net, objective, lambda: drawer().ravel().astype(int), Adam(0.01), 100, 1.0,
                                 progress=False, checkpoint=path, checkpoint_every=10, stateful={"drawer": drawer},
                                 callback=callback)
    run(tmp_path / "a.npz")
    whole = net.params.copy()
    assert 0 < np.sum(~unit_keep(net, eps=0.0)[0]) < 8                    # exact zeros, some units left
    with pytest.raises(RuntimeError, match="stop"):
        run(tmp_path / "b.npz", fail_at_25)
    assert run(tmp_path / "b.npz").steps == 100                            # resumed from step 20
    np.testing.assert_array_equal(net.params, whole)


def test_bad_pruning_input_is_named_before_anything_changes():
    net = MLP([3, 4, 2, 1], ["relu", "logistic", "linear"], np.random.default_rng(0))
    before = net.params.copy()
    keep = [np.array([True, False, True, True]), np.array([True, True])]
    with pytest.raises(ValueError, match=r"keep: expected 2 boolean arrays \(one per hidden layer, widths \[4, 2\]\), "
                                         r"received list of length 1"):
        prune_units(net, keep[:1])
    with pytest.raises(ValueError, match=r"keep\[1\]: expected a boolean array of shape \(2,\), one entry per unit of "
                                         r"hidden layer 2, received bool of shape \(3,\)"):
        unit_mask(net, [keep[0], np.ones(3, dtype=bool)])
    with pytest.raises(ValueError, match=r"keep\[0\]: expected a boolean array of shape \(4,\).*received int64"):
        prune_units(net, [np.array([1, 0, 1, 1]), keep[1]])
    with pytest.raises(ValueError, match=r"keep\[1\]: expected at least one unit of hidden layer 2 kept"):
        prune_units(net, [keep[0], np.zeros(2, dtype=bool)])
    with pytest.raises(ValueError, match=r"keep\[0\]: expected removed units with zero incoming weights .*unit 1 of "
                                         r"hidden layer 1"):
        prune_units(net, keep)
    other = MLP([3, 5, 2, 1], ["relu", "logistic", "linear"], np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"groups: expected one group per hidden unit of a network \[3, 4, 2, 1\], "
                                         r"received groups built for \[3, 5, 2, 1\]"):
        group_lasso_train(net, lambda b: (0.0, np.zeros(net.n_params)), lambda: None, SGD(0.1), 3, 1.0,
                          groups=UnitGroups(other))
    with pytest.raises(ValueError, match=r"lam: expected a value in \[0.0, inf\], received -1.0"):
        group_lasso_train(net, lambda b: (0.0, np.zeros(net.n_params)), lambda: None, SGD(0.1), 3, -1.0)
    with pytest.raises(ValueError, match=r"solver: expected one of \['subgradient', 'proximal'\], received 'prox'"):
        group_lasso_prune(net, lambda b: (0.0, np.zeros(net.n_params)), lambda: None, SGD(0.1), 3, 1.0, solver="prox")
    with pytest.raises(TypeError, match=r"optimizer: expected an optimiser with a step-size schedule .*Adadelta"):
        GroupProx(Adadelta(), UnitGroups(net), 1.0)
    soft = MLP([3, 4, 1], ["softmax", "linear"], np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"net: expected elementwise hidden .*'softmax' in hidden layer 1"):
        prune_units(soft, [np.ones(4, dtype=bool)])
    with pytest.raises(ValueError, match=r"net: expected at least one hidden layer \(units to group\)"):
        UnitGroups(MLP([3, 2], ["linear"], np.random.default_rng(0)))
    np.testing.assert_array_equal(net.params, before)
