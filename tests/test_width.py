"""Width search (SPEC_seeds S3.18): costs of dense networks, the multiplier grid and Pareto fronts."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kd_ref.mlp import MLP
from kd_ref.width import MULTIPLIERS, multiplier_grid, n_macs, n_params, pareto_front, scaled_widths


def test_costs_of_the_gped_fcnn_teacher():
    assert n_params([784, 400, 400, 10]) == 478_410
    assert n_macs([784, 400, 400, 10]) == 477_600
    net = MLP([784, 100, 100, 10], ["relu", "relu", "log_softmax"], np.random.default_rng(0))
    assert n_params(net) == net.n_params == 89_610 and n_macs(net) == 89_400      # 78,400 + 10,000 + 1,000


@given(st.lists(st.integers(1, 30), min_size=2, max_size=5))
def test_costs_count_the_network_arrays(sizes):
    net = MLP(sizes, ["logistic"] * (len(sizes) - 1), np.random.default_rng(0))
    assert n_params(sizes) == net.n_params
    assert n_macs(sizes) == sum(W.size for W in net.W)
    x = np.ones((1, sizes[0]))
    # multiply-adds by a count of the forward pass's products: one per weight per example
    assert n_macs(sizes) == sum(W.shape[0] * a.shape[1] for W, a in zip(net.W, net.forward(x).x[:-1]))


def test_scaled_widths_and_the_grid():
    assert scaled_widths([784, 400, 400, 10], (0.25, 4)) == [784, 100, 1600, 10]
    assert scaled_widths([784, 10, 3, 10], (0.25, 0.1)) == [784, 3, 1, 10]      # 2.5 rounds up; at least 1
    assert scaled_widths([5, 4, 2], [1.5]) == [5, 6, 2]
    grid = multiplier_grid(MULTIPLIERS["paper"])
    assert len(grid) == 25 and grid[0] == (0.25, 0.25) and grid[-1] == (4.0, 4.0) and (1.0, 1.0) in grid
    assert multiplier_grid(MULTIPLIERS["quick"], n_hidden=1) == [(0.5,), (1.0,), (2.0,)]


def test_bad_width_input_is_named():
    for bad in (0, -0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"multipliers\[1\]: expected a positive finite width multiplier"):
            scaled_widths([784, 400, 400, 10], (1.0, bad))
        with pytest.raises(ValueError, match=r"values\[0\]: expected a positive finite width multiplier"):
            multiplier_grid([bad, 1.0])
    with pytest.raises(TypeError, match=r"multipliers\[0\]: expected a positive width multiplier, received True"):
        scaled_widths([784, 400, 10], [True])
    with pytest.raises(ValueError, match=r"multipliers: expected 2 \(one per hidden layer of \[784, 400, 400, 10\]\), "
                                         r"received 1"):
        scaled_widths([784, 400, 400, 10], (2.0,))
    with pytest.raises(ValueError, match=r"values: expected distinct multipliers, received \[1.0, 1.0\]"):
        multiplier_grid([1, 1.0])
    with pytest.raises(ValueError, match="values: expected at least one width multiplier, received none"):
        multiplier_grid([])
    with pytest.raises(ValueError, match=r"sizes\[1\]: expected an integer >= 1, received 0"):
        n_params([3, 0, 2])
    with pytest.raises(ValueError, match=r"loss: expected shape \(2,\), received shape \(3,\)"):
        pareto_front([1, 2], [1, 2, 3])


def dominated(i, cost, loss):
    return any(cost[j] <= cost[i] and loss[j] <= loss[i] and (cost[j] < cost[i] or loss[j] < loss[i])
               for j in range(len(cost)))


@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=25))
def test_pareto_front_is_the_set_of_non_dominated_points(points):
    cost = np.array([p[0] for p in points], dtype=float)
    loss = np.array([p[1] for p in points], dtype=float)
    front = pareto_front(cost, loss)
    assert sorted(front.tolist()) == [i for i in range(len(points)) if not dominated(i, cost, loss)]
    assert np.all(np.diff(cost[front]) >= 0) and np.all(np.diff(loss[front]) <= 0)
