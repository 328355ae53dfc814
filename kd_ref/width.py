"""Student width search (SPEC_seeds S3.18; GPED section 3.3): widths scaled by a multiplier grid, the
cost of each student in parameters and multiply-adds, and the Pareto fronts of NLL against cost.

The student is the teacher with hidden layer l widened by K_l: for the FCNN, 784-400-400-10
becomes 784-(400 K_1)-(400 K_2)-10. GPED's grid was in its lost Appendix A.2; kd_ref's is
``MULTIPLIERS["paper"]`` = {0.25, 0.5, 1, 2, 4} per layer (25 students for two hidden layers) or
``MULTIPLIERS["quick"]`` = {0.5, 1, 2}. Costs count the dense layers only: a layer of D_{l-1}
inputs and D_l units has D_l (D_{l-1} + 1) parameters and D_l D_{l-1} multiply-adds per example
(bias additions and nonlinearities are not counted). GPED reports "FLOPs" of CNNs under a
convention it does not state, so tables print these counts, not its.

>>> n_params([784, 400, 400, 10]), n_macs([784, 400, 400, 10])
(478410, 477600)
>>> scaled_widths([784, 400, 400, 10], (0.25, 2))
[784, 100, 800, 10]
"""
import itertools
import math
import numbers

import numpy as np

from ._validation import as_float_array, check_positive_int

MULTIPLIERS = {"paper": (0.25, 0.5, 1.0, 2.0, 4.0), "quick": (0.5, 1.0, 2.0)}


def _sizes(sizes):
    """Layer widths [D_0, ..., D_L] from a list of ints or from anything with ``.sizes`` (an MLP)."""
    sizes = getattr(sizes, "sizes", sizes)
    try:
        sizes = list(sizes)
    except TypeError:
        raise TypeError(f"sizes: expected layer widths [D_0, ..., D_L] or an MLP, received {sizes!r}") from None
    if len(sizes) < 2:
        raise ValueError(f"sizes: expected at least 2 widths (input and output), received {sizes}")
    return [check_positive_int(s, f"sizes[{i}]") for i, s in enumerate(sizes)]


def _multiplier(k, name):
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Real):
        raise TypeError(f"{name}: expected a positive width multiplier, received {k!r}")
    if not (math.isfinite(k) and k > 0):
        raise ValueError(f"{name}: expected a positive finite width multiplier, received {k}")
    return float(k)


def n_params(sizes):
    """Parameters of a dense network, sum_l D_l (D_{l-1} + 1) (S3.18); ``sizes`` may be an MLP."""
    sizes = _sizes(sizes)
    return sum(d_out * (d_in + 1) for d_in, d_out in zip(sizes[:-1], sizes[1:]))


def n_macs(sizes):
    """Multiply-adds per example of a dense network's forward pass, sum_l D_l D_{l-1} (S3.18)."""
    sizes = _sizes(sizes)
    return sum(d_out * d_in for d_in, d_out in zip(sizes[:-1], sizes[1:]))


def scaled_widths(sizes, multipliers):
    """The widths with hidden layer l multiplied by K_l, rounded half up, at least 1 (S3.18).

    Parameters
    ----------
    sizes : list of int [D_0, ..., D_L] (or an MLP)
    multipliers : sequence of L - 1 positive reals, one per hidden layer

    Returns
    -------
    list of int: input and output widths unchanged.
    """
    sizes = _sizes(sizes)
    multipliers = list(multipliers) if not isinstance(multipliers, numbers.Real) else [multipliers]
    if len(multipliers) != len(sizes) - 2:
        raise ValueError(f"multipliers: expected {len(sizes) - 2} (one per hidden layer of {sizes}), received "
                         f"{len(multipliers)}")
    ks = [_multiplier(k, f"multipliers[{i}]") for i, k in enumerate(multipliers)]
    return [sizes[0]] + [max(1, math.floor(k * d + 0.5)) for k, d in zip(ks, sizes[1:-1])] + [sizes[-1]]


def multiplier_grid(values, n_hidden=2):
    """Every combination (K_1, ..., K_{n_hidden}) of the given multipliers, in lexicographic order (S3.18).

    >>> multiplier_grid((0.5, 1))
    [(0.5, 0.5), (0.5, 1.0), (1.0, 0.5), (1.0, 1.0)]
    """
    values = [_multiplier(k, f"values[{i}]") for i, k in enumerate(values)]
    if not values:
        raise ValueError("values: expected at least one width multiplier, received none")
    if len(set(values)) != len(values):
        raise ValueError(f"values: expected distinct multipliers, received {values}")
    n_hidden = check_positive_int(n_hidden, "n_hidden")
    return list(itertools.product(values, repeat=n_hidden))


def pareto_front(cost, loss):
    """Indices of the points no other point dominates when both cost and loss are minimised (S3.18).

    Point i is dominated when some j has cost_j <= cost_i and loss_j <= loss_i with one of
    them strict; equal points do not dominate each other, so both stay. Found by one sort
    by (cost, loss) and a sweep that keeps a point when its loss is below every loss of a
    cheaper point, O(n log n).

    Parameters
    ----------
    cost, loss : array_like of shape (n,), finite
        E.g. MACs (or parameters) and test NLL of each student.

    Returns
    -------
    ndarray of int, the front's indices in increasing cost (decreasing loss).

    >>> pareto_front([1, 2, 3, 4], [5.0, 3.0, 4.0, 1.0])
    array([0, 1, 3])
    """
    cost = as_float_array(cost, "cost", ndim=1)
    loss = as_float_array(loss, "loss", shape=cost.shape)
    if cost.size == 0:
        raise ValueError("cost: expected at least one point, received none")
    order = np.lexsort((loss, cost))                          # by cost, then loss
    front, best, last = [], np.inf, None
    for i in order:
        if loss[i] < best or (last is not None and cost[i] == cost[last] and loss[i] == loss[last]):
            front.append(i)
            best, last = loss[i], i
    return np.array(front, dtype=np.intp)
