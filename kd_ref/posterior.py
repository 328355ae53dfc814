"""Posterior expectations of a classifier's outputs, their online estimates, and the uncertainty decomposition.

Generalized posterior expectation distillation (GPED; Vadera, Jalaian & Marlin 2020) distils
E_{p(theta | D)}[g(y, x, theta)] for a function g of the teacher's predictive distribution
(S3.4; GPED (6)). Each g here maps the teacher's log-probabilities l(x, theta), shape (N, C),
to values of shape (N, G):

* :func:`predictive`          g = p(y | x, theta), G = C (Bayesian dark knowledge);
* :func:`expected_entropy`    g = H[p(. | x, theta)] = -sum_y p log p >= 0, G = 1 (the seed writes
  sum p log p, the *negative* entropy; kd_ref uses H >= 0, as the GPED code does);
* :func:`marginal_variance`   g = p (1 - p), G = C;
* any callable with the same signature (:func:`g_values` checks what it returns).

While the teacher's chain runs, the distillation inputs x_i of D' get targets g_hat_i from one
of two estimators (S3.5, S3.6; GPED (9), (10)), both with ``update(indices, values) -> targets``:

* :class:`StochasticEstimate` (U_s): g_hat_i = g(x_i, theta_t), the current sample's value;
  memoryless.
* :class:`OnlineAverage` (U_o): g_hat_i <- (m_i g_hat_i + g(x_i, theta_t)) / (m_i + 1), m_i the
  visits to x_i so far, so g_hat_i is exactly the Monte Carlo average of g over the samples at
  which x_i was drawn. Memory O(N' G).

When U_s is enough (S3.7, derived): for a loss whose minimiser over noisy targets is their mean
-- the Bregman divergences with the target first (square error, cross entropy -sum g_hat log f,
KL(g_hat || f)) -- U_s gives an unbiased stochastic gradient of the U_o objective, since the loss
is affine in g_hat (or differs by Var g). An L1 / MAE loss, which GPED uses for the entropy, is
minimised by the targets' *median*: U_s + MAE converges to the posterior median of g, not its
mean (tests/test_posterior.py shows it on g in {0, 1}).

Uncertainty (S3.14; GPED (3)): for an ensemble of teacher samples, total uncertainty
TU(x) = H[E_theta p(. | x, theta)], expected data uncertainty EU(x) = E_theta H[p(. | x, theta)]
and knowledge uncertainty KU = TU - EU, the mutual information between y and theta (>= 0 by the
concavity of H). :class:`EnsembleAccumulator` keeps the running sums of p and H per test input,
so the chain's samples need not be stored.
"""
from dataclasses import dataclass

import numpy as np

from ._validation import as_float_array, check_callable, check_positive_int
from .metrics import entropy
from .optim import check_state_keys, state_count


# ------------------------------------------------------------------ g-functions (S3.4)
def _log_probs(log_p):
    log_p = as_float_array(log_p, "log_p", ndim=2, finite=False)
    if np.any(np.isnan(log_p)) or np.any(log_p == np.inf):
        raise ValueError("log_p: expected log-probabilities (finite or -inf), received NaN or +inf entries")
    return log_p


def predictive(log_p):
    """g = p(y | x, theta): (N, C) log-probabilities -> (N, C) probabilities (S3.4, BDK's target)."""
    return np.exp(_log_probs(log_p))


def expected_entropy(log_p):
    """g = H[p(. | x, theta)] >= 0 (natural logs): (N, C) -> (N, 1); its posterior mean is EU (S3.4, S3.14)."""
    return entropy(_log_probs(log_p))[:, None]


def marginal_variance(log_p):
    """g = p (1 - p) per class: (N, C) -> (N, C) (S3.4); p(1 - p) = p * (1 - p) with 1 - p = -expm1(log p)."""
    log_p = _log_probs(log_p)
    return np.exp(log_p) * -np.expm1(log_p)


#: The g-functions by name (S3.4).
G_FUNCTIONS = {"predictive": predictive, "expected_entropy": expected_entropy, "marginal_variance": marginal_variance}


def g_function(g):
    """A g-function from its name in :data:`G_FUNCTIONS` or a callable (N, C) log-probabilities -> (N, G)."""
    if isinstance(g, str):
        if g not in G_FUNCTIONS:
            raise ValueError(f"g: expected one of {sorted(G_FUNCTIONS)} or a callable, received {g!r}")
        return G_FUNCTIONS[g]
    return check_callable(g, "g", "a name of G_FUNCTIONS or a callable log_p (N, C) -> (N, G)")


def g_values(g, log_p, width=None):
    """g(log_p), checked: a finite float array of shape (N, G) (G = ``width`` when given).

    Raises ValueError naming ``g`` for any other shape or for NaN / infinite values,
    so an estimator is never updated with them.
    """
    log_p = _log_probs(log_p)
    out = np.asarray(g_function(g)(log_p))
    n = log_p.shape[0]
    if out.ndim != 2 or out.shape[0] != n or (width is not None and out.shape[1] != width):
        want = f"({n}, {width})" if width is not None else f"({n}, G)"
        raise ValueError(f"g: expected values of shape {want} for {n} inputs, received shape {out.shape}")
    if not np.issubdtype(out.dtype, np.floating) and not np.issubdtype(out.dtype, np.integer):
        raise TypeError(f"g: expected real values, received dtype {out.dtype}")
    out = out.astype(np.float64, copy=False)
    if not np.all(np.isfinite(out)):
        raise ValueError("g: expected finite values, received NaN or infinite entries")
    return out


# ------------------------------------------------------------------ estimators (S3.5, S3.6)
def _rows(indices, values, n_rows, width):
    """Check indices (k,) into 0..n_rows-1 and values (k, width) before an estimator changes anything."""
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"indices: expected a non-empty 1-d integer array, received {idx.dtype} of shape {idx.shape}")
    if idx.min() < 0 or idx.max() >= n_rows:
        raise ValueError(f"indices: expected indices in 0..{n_rows - 1}, received {idx.min()}..{idx.max()}")
    vals = as_float_array(values, "values")
    if vals.shape != (idx.size, width):
        raise ValueError(f"values: expected shape ({idx.size}, {width}) (one row of g per index), received "
                         f"shape {vals.shape}")
    return idx.astype(np.intp), vals


class StochasticEstimate:
    """U_s (S3.5; GPED (9)): the target of input i is g(x_i, theta_t) at the current sample, nothing kept.

    Parameters
    ----------
    n_rows : int
        N', the size of the distillation set (the indices are checked against it).
    width : int
        G, the number of values of g per input.
    """

    name = "U_s"

    def __init__(self, n_rows, width):
        self.n_rows = check_positive_int(n_rows, "n_rows")
        self.width = check_positive_int(width, "width")
        self.n_updates = 0

    def update(self, indices, values):
        """Targets for the rows ``indices`` (k,): a copy of ``values`` (k, G)."""
        _, vals = _rows(indices, values, self.n_rows, self.width)
        self.n_updates += 1
        return vals.copy()

    def state(self):
        return {"n_updates": np.array(self.n_updates)}

    def load_state(self, state):
        check_state_keys(state, ("n_updates",), "StochasticEstimate")
        self.n_updates = state_count(state["n_updates"], "n_updates")


class OnlineAverage:
    """U_o (S3.6; GPED (10)): the running Monte Carlo average of g over the visits to each input.

        g_hat_i <- (m_i g_hat_i + g(x_i, theta_t)) / (m_i + 1),   m_i <- m_i + 1

    Repeated indices within one minibatch (GPED draws D' with replacement) are
    processed in order, each counting as a visit, so g_hat_i is exactly the average of
    every value given for i. This departs from the released GPED code, whose
    ``acc[idx] += ...`` with a duplicated index keeps one of the writes and counts the
    index once. The targets returned are the averages after the whole minibatch.

    Parameters
    ----------
    n_rows : int
        N'.
    width : int
        G.

    Attributes
    ----------
    mean : ndarray of shape (n_rows, width)
        g_hat (0 for rows never visited).
    counts : ndarray of shape (n_rows,)
        m_i.

    Examples
    --------
    >>> import numpy as np
    >>> u = OnlineAverage(3, 1)
    >>> u.update(np.array([0, 2, 0]), np.array([[1.0], [5.0], [2.0]])).ravel().tolist()   # row 0 visited twice
    [1.5, 5.0, 1.5]
    >>> u.counts.tolist()
    [2, 0, 1]
    """

    name = "U_o"

    def __init__(self, n_rows, width):
        self.n_rows = check_positive_int(n_rows, "n_rows")
        self.width = check_positive_int(width, "width")
        self.mean = np.zeros((self.n_rows, self.width))
        self.counts = np.zeros(self.n_rows, dtype=np.int64)

    def update(self, indices, values):
        """Fold ``values`` (k, G) into the rows ``indices`` (k,); return the updated g_hat of those rows (k, G)."""
        idx, vals = _rows(indices, values, self.n_rows, self.width)
        # the r-th occurrence of an index within the batch is folded in round r, so every round has distinct rows
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        first = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
        rank = np.empty(idx.size, dtype=np.intp)
        rank[order] = np.arange(idx.size) - np.repeat(first, np.diff(np.r_[first, idx.size]))
        for r in range(int(rank.max()) + 1):
            rows = np.flatnonzero(rank == r)
            i = idx[rows]
            m = self.counts[i][:, None].astype(np.float64)
            self.mean[i] = (m * self.mean[i] + vals[rows]) / (m + 1.0)        # (S3.6)
            self.counts[i] += 1
        return self.mean[idx].copy()

    def state(self):
        return {"mean": self.mean.copy(), "counts": self.counts.copy()}

    def load_state(self, state):
        check_state_keys(state, ("mean", "counts"), "OnlineAverage")
        mean, counts = np.asarray(state["mean"]), np.asarray(state["counts"])
        if mean.shape != self.mean.shape or not np.issubdtype(mean.dtype, np.floating) or \
                not np.all(np.isfinite(mean)):
            raise ValueError(f"mean: expected finite floats of shape {self.mean.shape}, received {mean.dtype} of "
                             f"shape {mean.shape}")
        if counts.shape != self.counts.shape or not np.issubdtype(counts.dtype, np.integer) or np.any(counts < 0):
            raise ValueError(f"counts: expected non-negative integers of shape {self.counts.shape}, received "
                             f"{counts.dtype} of shape {counts.shape}")
        self.mean, self.counts = mean.astype(np.float64), counts.astype(np.int64)



# ------------------------------------------------------------------ uncertainty (S3.14)
@dataclass
class Uncertainty:
    """The decomposition TU = EU + KU per input (S3.14; GPED (3)), in nats.

    Attributes
    ----------
    total : ndarray of shape (N,)
        TU = H[E_theta p(. | x, theta)].
    data : ndarray of shape (N,)
        EU = E_theta H[p(. | x, theta)] (expected data, or aleatoric, uncertainty).
    knowledge : ndarray of shape (N,)
        KU = TU - EU (the mutual information of y and theta; for an ensemble >= 0 up to
        rounding of a few ulps of TU, and 0 when the members agree).
    """

    total: np.ndarray
    data: np.ndarray
    knowledge: np.ndarray


class EnsembleAccumulator:
    """Running averages of p(. | x, theta_s) and of H[p(. | x, theta_s)] over teacher samples (S3.14).

    Memory O(N_test C) however many samples are added.

    Parameters
    ----------
    n_inputs : int
        N_test.
    n_classes : int
        C.

    Examples
    --------
    >>> import numpy as np
    >>> acc = EnsembleAccumulator(1, 2)
    >>> acc.add(np.log([[0.9, 0.1]])); acc.add(np.log([[0.1, 0.9]]))   # two confident members that disagree
    >>> u = acc.uncertainty()
    >>> round(float(u.total[0]), 4), round(float(u.data[0]), 4), round(float(u.knowledge[0]), 4)
    (0.6931, 0.3251, 0.3681)
    """

    def __init__(self, n_inputs, n_classes):
        self.n_inputs = check_positive_int(n_inputs, "n_inputs")
        self.n_classes = check_positive_int(n_classes, "n_classes")
        self.p_sum = np.zeros((self.n_inputs, self.n_classes))
        self.h_sum = np.zeros(self.n_inputs)
        self.n_members = 0

    def add(self, log_p):
        """Fold in one sample's log-probabilities at every input, shape (N_test, C)."""
        log_p = _log_probs(log_p)
        if log_p.shape != self.p_sum.shape:
            raise ValueError(f"log_p: expected shape {self.p_sum.shape} (every test input), received {log_p.shape}")
        h = entropy(log_p)
        self.p_sum += np.exp(log_p)
        self.h_sum += h
        self.n_members += 1

    def _check_members(self):
        if self.n_members == 0:
            raise ValueError("EnsembleAccumulator: expected at least one added sample, received none")

    def predictive(self):
        """The ensemble's predictive p_bar = mean_s p(. | x, theta_s), shape (N_test, C)."""
        self._check_members()
        return self.p_sum / self.n_members

    def log_predictive(self):
        """log p_bar, shape (N_test, C) (-inf where every member gives 0)."""
        with np.errstate(divide="ignore"):
            return np.log(self.predictive())

    def uncertainty(self):
        """:class:`Uncertainty` of the samples added so far."""
        total = entropy(self.log_predictive())
        data = self.h_sum / self.n_members
        return Uncertainty(total, data, total - data)

    def state(self):
        return {"p_sum": self.p_sum.copy(), "h_sum": self.h_sum.copy(), "n_members": np.array(self.n_members)}

    def load_state(self, state):
        check_state_keys(state, ("p_sum", "h_sum", "n_members"), "EnsembleAccumulator")
        p_sum, h_sum = np.asarray(state["p_sum"]), np.asarray(state["h_sum"])
        if p_sum.shape != self.p_sum.shape or h_sum.shape != self.h_sum.shape or \
                not (np.all(np.isfinite(p_sum)) and np.all(np.isfinite(h_sum))):
            raise ValueError(f"EnsembleAccumulator: expected finite sums of shapes {self.p_sum.shape} and "
                             f"{self.h_sum.shape}, received {p_sum.shape} and {h_sum.shape}")
        n = state_count(state["n_members"], "n_members")
        self.p_sum, self.h_sum, self.n_members = p_sum.astype(np.float64), h_sum.astype(np.float64), n


def ensemble_uncertainty(log_p):
    """TU, EU, KU (S3.14) of stored members' log-probabilities, shape (S, N, C) -> :class:`Uncertainty`."""
    log_p = as_float_array(log_p, "log_p", ndim=3, finite=False)
    if log_p.shape[0] == 0:
        raise ValueError("log_p: expected at least one member, received none")
    acc = EnsembleAccumulator(log_p.shape[1], log_p.shape[2])
    for member in log_p:
        acc.add(member)
    return acc.uncertainty()
