"""Estimators of the log partition function log Z of an unnormalised model (section 4.2.4).

The target is p(x) = phi(x) / Z with log phi tractable and Z = sum_x phi(x)
unknown; q(x) is a normalised, exactly sampleable model (in the thesis a NADE
distilled from the RBM). Everything here works on plain arrays of log-values, so
any pair of models can be used (:func:`kd_ref.distill.generative.estimate_log_z`
draws the samples for an RBM and a NADE and calls every estimator). All estimators
return a small result object (see :class:`LogZEstimate`).

Estimators and the equations they implement
-------------------------------------------
* :func:`kl_upper_bound`       log Z <= E_p[log phi - log q]       (4.44-4.46), samples of p
* :func:`kl_lower_bound`       log Z >= E_q[log phi - log q]       (4.47-4.49), samples of q
* :func:`trivial_lower_bound`  log Z >= max_x log phi(x)           (4.50), discrete x
* :func:`importance_sampling`  Z = E_q[phi / q]                    (4.51-4.52)
* :func:`bridge_sampling`      Z = E_q[phi*/q] / E_p[phi*/phi] with Meng and Wong's
  bridge phi* = phi q / (s_p phi + s_q Z q), solved by fixed-point iteration (4.53-4.54)
* :func:`bridge_sampling_chains` the same with several correlated p samples per Markov chain and a
  batch-means standard error; :func:`burn_in_diagnostic` judges the burn-in of chains started at q
* :func:`ais_rbm`              annealed importance sampling for a binary RBM
  (Neal 2001; the set-up of Salakhutdinov and Murray 2008 used as the baseline in 4.2.4)

Intervals
---------
Each result carries ``std_error`` and an interval ``[lower, upper]`` of +-3
standard errors, expressed in log space:

* The two KL bounds are averages of log ratios, so their standard error is the
  ordinary one of a mean of log values, ``sd(log w) / sqrt(n)`` in nats, and
  the interval is ``estimate -+ 3 std_error``.
* Importance sampling, bridge sampling and AIS estimate Z itself as a mean of
  weights. With relative standard error ``rel = SE(Z_hat) / Z_hat`` (which by
  the delta method is also the standard error of log Z_hat) the interval is
  ``log(Z_hat -+ 3 SE) = log Z_hat + log1p(-+3 rel)``, computed from weights
  rescaled by their largest value so nothing overflows. When ``3 rel >= 1``
  the lower end ``Z_hat - 3 SE`` is not positive: we then report
  ``lower = -inf`` rather than switch to a symmetric delta-method interval,
  because the samples genuinely cannot exclude a much smaller Z, and a
  symmetric interval would hide that. ``std_error`` (= rel) is always given,
  so ``log_z -+ 3 * std_error`` is available to anyone who wants it.

A standard error needs at least two samples: fewer raise ``ValueError``. The
intervals assume independent samples; for samples from correlated Markov chains
(e.g. Gibbs chains of an RBM) they are too narrow unless the chains are thinned
to near independence or many independent chains are used;
:func:`bridge_sampling_chains` takes several samples per chain and gives an interval
that keeps its coverage (batch means over the independent chains).
"""
import numbers
import time
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logsumexp

from ._validation import (as_float_array, check_bool, check_float_dtype, check_generator, check_in_range,
                          check_positive_int)
from .nonlinearities import softplus
from .progress import Progress
from .rbm import RBM

_LOG2 = np.log(2.0)
# Salakhutdinov and Murray's AIS schedule: 500 steps on [0, 0.5], 4,000 on [0.5, 0.9], 10,000 on [0.9, 1]
_PIECEWISE_EDGES = (0.0, 0.5, 0.9, 1.0)
_PIECEWISE_STEPS = (500, 4000, 10000)


# ------------------------------------------------------------------------------------------ results
@dataclass
class LogZEstimate:
    """An estimate (or bound) of log Z with its +-3 standard-error interval in log space.

    method : str                 which estimator produced it
    log_z : float                the estimate (for the bounds: the estimated bound)
    lower, upper : float         ends of the +-3 standard-error interval (see the module docstring;
                                 ``lower`` may be -inf)
    std_error : float            nats for the KL bounds; SE(Z_hat)/Z_hat (= delta-method SE of
                                 log Z_hat) for importance, bridge and AIS; 0 for the trivial bound
    log_weights : ndarray (n,)   the raw per-sample values the estimate is built from: log phi - log q
                                 (bounds, importance, bridge q-side), log phi (trivial bound), the
                                 AIS log weights including log Z_0 (so ``log_z`` = log-mean-exp of them
                                 for importance sampling and AIS)
    seconds : float              CPU seconds (``time.process_time``) spent inside the estimator
    """

    method: str
    log_z: float
    lower: float
    upper: float
    std_error: float
    log_weights: np.ndarray
    seconds: float

    @property
    def n(self):
        """Number of samples (runs for AIS, candidates for the trivial bound, q samples for bridge)."""
        return self.log_weights.size

    @property
    def interval(self):
        """(lower, upper) as a tuple."""
        return (self.lower, self.upper)

    @property
    def half_width(self):
        """Largest distance from ``log_z`` to an end of the interval (inf if ``lower`` is -inf)."""
        return max(self.log_z - self.lower, self.upper - self.log_z)

    def contains(self, value):
        """Whether ``lower <= value <= upper`` (``value`` a real number, +-inf allowed, not NaN)."""
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or np.isnan(value):
            raise TypeError(f"value: expected a real number (not NaN), received {value!r}")
        return bool(self.lower <= value <= self.upper)

    def __str__(self):
        return (f"{self.method}: log Z = {self.log_z:.4f}  [{self.lower:.4f}, {self.upper:.4f}]  "
                f"(+-3 SE, n = {self.n}, {self.seconds:.2f} s CPU)")


@dataclass
class BridgeEstimate(LogZEstimate):
    """Bridge-sampling result (4.53-4.54); ``log_weights`` are log phi - log q at the q samples.

    log_weights_p : ndarray (n_p,)   log phi - log q at the p samples
    converged : bool                 whether the last update changed log Z_hat by at most ``tol``
    trace : ndarray (iterations + 1,) log Z_hat after each update, starting with the initial value
    """

    log_weights_p: np.ndarray
    converged: bool
    trace: np.ndarray

    @property
    def n_p(self):
        """Number of p samples (``n`` counts the q samples)."""
        return self.log_weights_p.size

    @property
    def iterations(self):
        """Fixed-point updates made."""
        return self.trace.size - 1


@dataclass
class AISEstimate(LogZEstimate):
    """Annealed-importance-sampling result for an RBM.

    betas : ndarray (K + 1,)   inverse temperatures, 0 = base model, 1 = the RBM
    log_z_base : float         log Z_0 of the base model (independent visibles, hiddens summed out)
    wall_seconds : float       wall-clock seconds (``seconds`` is CPU time, all threads)
    """

    betas: np.ndarray
    log_z_base: float
    wall_seconds: float

    @property
    def n_temperatures(self):
        """K, the number of annealing steps (intermediate distributions including the RBM)."""
        return len(self.betas) - 1


# ------------------------------------------------------------------------------------------ helpers
def _log_values(values, name, min_n):
    """A 1-d float64 array of finite log values with at least ``min_n`` entries."""
    arr = as_float_array(values, name, ndim=1)
    if arr.size < min_n:
        what = "samples for a +-3 standard-error interval" if min_n >= 2 else "value to take the maximum of"
        raise ValueError(f"{name}: expected at least {min_n} {what}, received {arr.size}")
    return arr


def _log_ratios(log_phi, log_q, phi_name, q_name, min_n=2):
    """log phi - log q at the same samples, after checking both arrays."""
    log_phi = _log_values(log_phi, phi_name, min_n)
    log_q = as_float_array(log_q, q_name, ndim=1)
    if log_q.shape != log_phi.shape:
        raise ValueError(f"{q_name}: expected {log_phi.size} values (one per sample, like {phi_name}), "
                         f"received {log_q.size}")
    with np.errstate(over="ignore"):
        ratios = log_phi - log_q
    if not np.all(np.isfinite(ratios)):
        i = int(np.flatnonzero(~np.isfinite(ratios))[0])
        raise ValueError(f"{phi_name} - {q_name}: expected log ratios within the float64 range, received "
                         f"{log_phi[i]:.6g} - {log_q[i]:.6g}, which overflows, at sample {i}")
    return ratios


def _scaled_mean_se(values):
    """Mean and standard error (sample sd, ddof 1, over sqrt n) of finite values, free of overflow.

    The values are divided by a power of two near their largest magnitude before
    summing and squaring, and the results multiplied back: exact rescalings, so
    ordinary inputs give the same bits as ``np.mean`` and ``np.std``, while values of
    1e300 (whose squares and even sums overflow) give finite answers.
    """
    big = float(np.max(np.abs(values)))
    scale = float(np.ldexp(1.0, np.frexp(big)[1] - 1)) if big > 0 else 1.0   # |values / scale| < 2
    scaled = values / scale
    with np.errstate(over="ignore"):     # inf only when the standard error itself exceeds the float64 range
        return float(np.mean(scaled)) * scale, float(np.std(scaled, ddof=1) / np.sqrt(values.size)) * scale


def log_mean_weight(log_weights):
    """log of the mean weight, its relative standard error and the +-3 SE interval in log space.

    Parameters
    ----------
    log_weights : ndarray of shape (n,), n >= 2, finite

    Returns
    -------
    log_mean : float          log((1/n) sum_i exp(log_weights_i))
    rel_se : float            sd(w) / (sqrt(n) mean(w)), the delta-method standard error of log_mean
    lower, upper : float      log(mean -+ 3 SE); ``lower`` is -inf when mean - 3 SE <= 0

    Weights are rescaled by the largest one before exponentiating, so log weights of
    +-1e4, or +-1e300, are handled without overflow.
    """
    return _log_mean_weight(_log_values(log_weights, "log_weights", 2))


def _log_mean_weight(lw):
    """:func:`log_mean_weight` of checked log weights; entries of -inf (weights exactly 0) are allowed."""
    shift = float(np.max(lw))
    with np.errstate(over="ignore"):      # a difference beyond -1.8e308 is -inf: a weight that is 0 in float64
        r = np.exp(lw - shift)            # in [0, 1], at least one entry is 1
    mean = float(np.mean(r))
    rel = float(np.std(r, ddof=1) / (np.sqrt(r.size) * mean))
    return _log_interval(shift + np.log(mean), rel)


def _log_interval(log_mean, rel):
    upper = log_mean + np.log1p(3.0 * rel)
    lower = log_mean + np.log1p(-3.0 * rel) if 3.0 * rel < 1.0 else -np.inf
    return float(log_mean), float(rel), float(lower), float(upper)


def _mean_log_interval(log_values, method, began):
    """Estimate built from the plain mean of log values (the KL bounds).

    The mean and standard error stay finite for any finite log values; an end of the
    interval is +-inf only when 3 standard errors themselves exceed the float64 range.
    """
    mean, se = _scaled_mean_se(log_values)
    with np.errstate(over="ignore"):
        lower, upper = mean - 3.0 * se, mean + 3.0 * se
    return LogZEstimate(method, mean, lower, upper, se, log_values, time.process_time() - began)


# ------------------------------------------------------------------------------- bounds (4.44-4.50)
def kl_upper_bound(log_phi_p, log_q_p):
    """Upper bound log Z <= E_p[log phi(x) - log q(x)], estimated from samples of p (4.44-4.46).

    Follows from KL(p || q) = E_p[log phi - log q] - log Z >= 0; the gap is exactly
    KL(p || q), the quantity KL distillation minimises, so a well-distilled q gives a
    tight bound.

    Parameters
    ----------
    log_phi_p : ndarray of shape (n,)
        log phi at n >= 2 samples of the target p, drawn without reference to q: for an RBM
        the end states of Gibbs chains from random starts (:func:`kd_ref.rbm.random_chain_samples`;
        the thesis, 10,000 chains of 2,000 sweeps). Chains started at q's own samples (as for
        bridge sampling) stay near q when they mix slowly, and their average can then fall
        below log Z exactly when q misses part of p.
    log_q_p : ndarray of shape (n,)
        log q at the same samples.

    Returns
    -------
    LogZEstimate
        ``log_z`` is the Monte Carlo average (4.46); the interval is +-3 standard errors
        of that average, in nats. With finitely many samples the estimate can fall
        below log Z by sampling noise; the bound holds for its expectation.
    """
    began = time.process_time()
    ratios = _log_ratios(log_phi_p, log_q_p, "log_phi_p", "log_q_p")
    return _mean_log_interval(ratios, "KL upper bound E_p[log phi - log q]", began)


def kl_lower_bound(log_phi_q, log_q_q):
    """Lower bound log Z >= E_q[log phi(x) - log q(x)], estimated from samples of q (4.47-4.49).

    Follows from KL(q || p) = E_q[log q - log phi] + log Z >= 0; the gap is KL(q || p).

    Parameters
    ----------
    log_phi_q : ndarray of shape (n,)
        log phi at n >= 2 exact samples of q (e.g. NADE samples).
    log_q_q : ndarray of shape (n,)
        log q at the same samples.

    Returns
    -------
    LogZEstimate
        Average (4.49) with a +-3 standard-error interval in nats.
    """
    began = time.process_time()
    ratios = _log_ratios(log_phi_q, log_q_q, "log_phi_q", "log_q_q")
    return _mean_log_interval(ratios, "KL lower bound E_q[log phi - log q]", began)


def trivial_lower_bound(log_phi):
    """Lower bound log Z >= max_x log phi(x) over the given candidate points (4.50).

    Valid for discrete x, since Z is a sum of non-negative terms phi(x). The bound
    is only as good as the best candidate; the thesis found its candidate by random
    restarts and hill climbing (4.13).

    Parameters
    ----------
    log_phi : ndarray of shape (n,)
        log phi at n >= 1 candidate points.

    Returns
    -------
    LogZEstimate
        ``log_z`` = ``lower`` = ``upper`` = the largest value; ``std_error`` = 0
        (the bound is deterministic given the candidates); ``log_weights`` are the values.
    """
    began = time.process_time()
    values = _log_values(log_phi, "log_phi", 1)
    best = float(np.max(values))
    return LogZEstimate("trivial lower bound max log phi", best, best, best, 0.0, values, time.process_time() - began)


# ----------------------------------------------------------------------- importance sampling (4.52)
def importance_sampling(log_phi_q, log_q_q):
    """Importance-sampling estimate Z = E_q[phi / q] from exact samples of q (4.51-4.52).

    Parameters
    ----------
    log_phi_q : ndarray of shape (n,)
        log phi at n >= 2 samples of q.
    log_q_q : ndarray of shape (n,)
        log q at the same samples.

    Returns
    -------
    LogZEstimate
        ``log_z`` = log mean exp(log_phi_q - log_q_q); interval log(Z_hat -+ 3 SE) as in
        the module docstring. When q = p the weights are all equal to Z and the
        estimate is exact with zero standard error.

    Examples
    --------
    >>> import numpy as np
    >>> r = importance_sampling(np.log([2.0, 2.0, 2.0]), np.zeros(3))  # phi/q = 2 at every sample
    >>> round(r.log_z, 6), r.std_error, r.n
    (0.693147, 0.0, 3)
    """
    began = time.process_time()
    log_w = _log_ratios(log_phi_q, log_q_q, "log_phi_q", "log_q_q")
    log_z, rel, lower, upper = log_mean_weight(log_w)
    return LogZEstimate("importance sampling E_q[phi / q]", log_z, lower, upper, rel, log_w,
                        time.process_time() - began)


# --------------------------------------------------------------------------- bridge sampling (4.54)
def _bridge_terms(l_q, l_p, log_z, log_s_q, log_s_p):
    """log(phi*/q) at the q samples and log(phi*/phi) at the p samples for the bridge of 4.54.

    With l = log phi - log q and phi* = phi q / (s_p phi + s_q Z q):
    phi*/q = e^l / (s_p e^l + s_q Z) = 1 / (s_p + s_q Z e^-l) and phi*/phi = 1 / (s_p e^l + s_q Z).
    The first is taken in its second form, one difference log Z - l that may overflow to
    +-inf harmlessly (the weight is then exactly 1 / s_p or 0 in float64), instead of
    l - logaddexp(...), which gives inf - inf = NaN at log ratios of 1e308.
    """
    with np.errstate(over="ignore"):
        num = -np.logaddexp(log_s_p, log_s_q + (log_z - l_q))
        den = -np.logaddexp(log_s_p + l_p, log_s_q + log_z)
    return num, den


def bridge_sampling(log_phi_q, log_q_q, log_phi_p, log_q_p, *, max_iter=10, tol=1e-10, log_z_init=None):
    """Bridge-sampling estimate of log Z with Meng and Wong's optimal bridge (4.53-4.54).

    With samples x_q ~ q and x_p ~ p, and any bridge phi*, Z = E_q[phi*/q] / E_p[phi*/phi]
    (4.53). The asymptotically optimal bridge (Meng and Wong, 1996) is
    phi* = phi q / (s_p phi + s_q Z q) with s_p = n_p / (n_p + n_q), s_q = n_q / (n_p + n_q);
    for n_p = n_q this is proportional to phi q / (phi + Z q), the form of 4.54. As it
    contains the unknown Z, the estimate is iterated to a fixed point:

        log Z_new = logmeanexp_q[log phi*/q] - logmeanexp_p[log phi*/phi]   (bridge at Z_old)

    entirely in log space, ``log(phi + Z q)`` being formed with ``np.logaddexp``. As in
    the R package bridgesampling, the log ratios l = log phi - log q are first shifted by
    their median over the p samples, so that the iteration works on Z / exp(median),
    which is of order 1 for overlapping p and q.

    Parameters
    ----------
    log_phi_q, log_q_q : ndarray of shape (n_q,)
        log phi and log q at n_q >= 2 exact samples of q (e.g. NADE samples).
    log_phi_p, log_q_p : ndarray of shape (n_p,)
        log phi and log q at n_p >= 2 samples of p (e.g. RBM Gibbs samples started at
        the q samples and burned in).
    max_iter : int
        Most fixed-point updates (the thesis used 10).
    tol : float
        Stop once an update changes log Z_hat by at most ``tol`` (a relative change of Z_hat).
    log_z_init : None, "importance" or float
        Starting value. None (default): Z_hat = 1 on the median-shifted scale, i.e.
        log Z_hat = median of the log ratios at the p samples. "importance": the
        importance-sampling estimate from the q samples. A float: that log Z_hat
        (``0.0`` is the thesis's literal start Z_hat = 1; the first update is then the
        reciprocal-importance estimate 1 / E_p[q/phi]).

    Returns
    -------
    BridgeEstimate
        ``log_z`` is the last iterate; ``trace`` holds all iterates, ``iterations`` and
        ``converged`` say how the iteration ended. Standard error: with the bridge
        fixed at the final Z_hat, Z_hat = A / B is a ratio of two independent sample
        means, A of a_i = phi*/q over the q samples and B of b_j = phi*/phi over the p
        samples; the delta method gives the relative error
        rel^2 = Var(a) / (n_q A^2) + Var(b) / (n_p B^2), which is also the standard error of
        log Z_hat. The interval is log Z_hat + log1p(-+3 rel) (``lower`` = -inf if 3 rel >= 1).
        This ignores the (second-order) effect of Z_hat inside the bridge and any
        autocorrelation of the p samples.

    Examples
    --------
    Where phi = e^2 q exactly, every bridge ratio is e^2 and the estimate is exact:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> log_q_q, log_q_p = rng.normal(size=100), rng.normal(size=100)
    >>> est = bridge_sampling(log_q_q + 2.0, log_q_q, log_q_p + 2.0, log_q_p)
    >>> round(est.log_z, 10)
    2.0
    """
    began = time.process_time()
    l_q = _log_ratios(log_phi_q, log_q_q, "log_phi_q", "log_q_q")
    l_p = _log_ratios(log_phi_p, log_q_p, "log_phi_p", "log_q_p")
    trace, converged, num, den = _bridge_fixed_point(l_q, l_p, max_iter, tol, log_z_init)
    # delta-method standard error of log(A / B) with the bridge at the final estimate
    rel = float(np.hypot(_log_mean_weight(num)[1], _log_mean_weight(den)[1]))
    log_z_hat, rel, lower, upper = _log_interval(trace[-1], rel)
    return BridgeEstimate("bridge sampling (Meng-Wong)", log_z_hat, lower, upper, rel, l_q,
                          time.process_time() - began, l_p, converged, trace)


def _bridge_fixed_point(l_q, l_p, max_iter, tol, log_z_init):
    """Meng and Wong's fixed-point iteration of 4.54 on checked log ratios l_q (n_q,) and l_p (n_p,).

    Shared by :func:`bridge_sampling` and :func:`bridge_sampling_chains`, which differ only in
    how they estimate the standard error. Checks ``max_iter``, ``tol`` and ``log_z_init`` (see
    :func:`bridge_sampling`).

    Returns
    -------
    trace : ndarray (iterations + 1,)   log Z_hat after each update, original scale
    converged : bool
    num : ndarray (n_q,)                log(phi*/q) at the q samples, bridge at the final Z_hat (shifted scale)
    den : ndarray (n_p,)                log(phi*/phi) at the p samples, likewise
    """
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_in_range(tol, "tol", 0.0, np.inf)
    if log_z_init is None:
        start = None
    elif isinstance(log_z_init, str):
        if log_z_init != "importance":
            raise ValueError(f"log_z_init: expected None, 'importance' or a finite float, received {log_z_init!r}")
        start = log_mean_weight(l_q)[0]
    else:
        start = check_in_range(log_z_init, "log_z_init", -np.inf, np.inf, low_open=True, high_open=True)

    n_q, n_p = l_q.size, l_p.size
    log_s_q, log_s_p = np.log(n_q / (n_q + n_p)), np.log(n_p / (n_q + n_p))
    middle = np.sort(l_p)[[(n_p - 1) // 2, n_p // 2]]
    shift = float(middle[0] / 2 + middle[1] / 2)     # np.median's value, without overflow in the sum
    with np.errstate(over="ignore"):
        lq, lp = l_q - shift, l_p - shift
        log_z = 0.0 if start is None else start - shift  # on the shifted scale
    for name, shifted in (("log_phi_q - log_q_q", lq), ("log_phi_p - log_q_p", lp), ("log_z_init", log_z)):
        if not np.all(np.isfinite(shifted)):
            raise ValueError(f"{name}: expected log ratios within the float64 range of the median at the p "
                             f"samples ({shift:.6g}), received values spread beyond it (min "
                             f"{np.min(shifted) + shift:.6g}, max {np.max(shifted) + shift:.6g})")
    trace = [shift if start is None else start]  # on the original scale
    converged = False
    for _ in range(max_iter):
        num, den = _bridge_terms(lq, lp, log_z, log_s_q, log_s_p)
        new = float(logsumexp(num) - np.log(n_q) - logsumexp(den) + np.log(n_p))
        if not np.isfinite(new):
            raise ValueError(f"log_phi_q, log_q_q, log_phi_p, log_q_p: expected samples whose bridge estimate "
                             f"fits in float64, received log ratios from {min(l_q.min(), l_p.min()):.6g} to "
                             f"{max(l_q.max(), l_p.max()):.6g}, for which the fixed-point iterate left that range")
        change, log_z = abs(new - log_z), new
        trace.append(log_z + shift)
        if change <= tol:
            converged = True
            break
    num, den = _bridge_terms(lq, lp, log_z, log_s_q, log_s_p)
    return np.asarray(trace), converged, num, den


@dataclass
class ChainBridgeEstimate(BridgeEstimate):
    """Bridge sampling with several correlated p samples per chain (:func:`bridge_sampling_chains`).

    ``log_weights_p`` holds log phi - log q at the p samples, chain-major (chain c's samples are
    rows c * samples_per_chain ... of the flattened (n_chains, samples_per_chain) array).

    n_chains, samples_per_chain : int
    paired : bool               whether chain c was started at q sample c (the covariance is then included)
    naive_std_error : float     the relative standard error that treats every p sample as independent
                                (and the two sides as independent), as :func:`bridge_sampling` would
    p_effective_size : float    effective number of independent p samples: n_p times the ratio of the
                                naive to the batch-means variance of the p-side mean (n_p when uncorrelated)
    """

    n_chains: int
    samples_per_chain: int
    paired: bool
    naive_std_error: float
    p_effective_size: float


def _chain_means(log_values):
    """Rescaled weights exp(log_values - max) (K, S) and their per-chain means (K,), free of overflow."""
    with np.errstate(over="ignore"):
        r = np.exp(log_values - np.max(log_values))
    return r, r.mean(axis=1)


def bridge_sampling_chains(log_phi_q, log_q_q, log_phi_p, log_q_p, *, paired=False, max_iter=10, tol=1e-10,
                           log_z_init=None):
    """Bridge sampling (4.53-4.54) with several correlated p samples per Markov chain, batch-means standard error.

    The estimate is that of :func:`bridge_sampling` on all n_p = K S samples of p (the same
    Meng-Wong fixed point, same code); only the standard error differs. With the bridge fixed
    at the final Z_hat, Z_hat = A / B, A the mean of a_i = phi*/q over the n_q samples of q and
    B the mean of b = phi*/phi over the p samples, and the delta method gives

        rel^2 = Var(a) / (n_q A^2) + Var(B) / B^2,

    which :func:`bridge_sampling` evaluates with Var(B) = Var(b) / n_p, true only for
    independent samples. S successive states of one Gibbs chain are positively correlated, so
    Var(b) / n_p understates Var(B) by the integrated autocorrelation time of b, and the
    interval loses its coverage (tests/test_partition_chains.py, 16 samples per chain: 85 of
    100 intervals cover log Z instead of >= 95). Here each chain's mean b_c is one batch: the K
    chains are independent, so Var(B) = Var(b_c) / K exactly, estimated by the sample variance of the K chain means
    (batch means, one batch per chain; no autocorrelation model is needed, only K >= 2
    independent chains, and the more the better).

    When chain c was started at q sample c (``paired``: the seeded chains of section 4.2.4),
    a_c and b_c are not independent: a short burn-in leaves b_c correlated with the seed
    (negatively: a grows with phi/q at the seed, b falls), and ignoring that would again make
    the interval too narrow. The K pairs (a_c, b_c) are then independent of each other, and the
    delta method for log(A / B) gives rel^2 = Var(a_c / A - b_c / B) / K, the covariance
    included.

    Parameters
    ----------
    log_phi_q, log_q_q : ndarray of shape (n_q,)
        log phi and log q at n_q >= 2 exact samples of q.
    log_phi_p, log_q_p : ndarray of shape (K, S)
        log phi and log q along K >= 2 independent chains targeting p, S >= 1 samples each
        (after burn-in; successive samples may be correlated).
    paired : bool
        Chain c was started at q sample c (requires n_q = K).
    max_iter, tol, log_z_init
        As in :func:`bridge_sampling`.

    Returns
    -------
    ChainBridgeEstimate
        ``std_error`` is the batch-means relative standard error above (the delta-method
        standard error of log Z_hat), the interval log Z_hat + log1p(-+3 rel);
        ``naive_std_error`` the one of :func:`bridge_sampling` for comparison.

    Examples
    --------
    With one sample per chain and unpaired sides the estimate and interval are those of
    :func:`bridge_sampling`:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> phi_q, q_q = rng.normal(size=50), rng.normal(size=50)
    >>> phi_p, q_p = rng.normal(size=(40, 1)), rng.normal(size=(40, 1))
    >>> a = bridge_sampling_chains(phi_q, q_q, phi_p, q_p)
    >>> b = bridge_sampling(phi_q, q_q, phi_p.ravel(), q_p.ravel())
    >>> bool(np.isclose(a.log_z, b.log_z) and np.isclose(a.std_error, b.std_error))
    True
    """
    began = time.process_time()
    paired = check_bool(paired, "paired")
    phi_p = as_float_array(log_phi_p, "log_phi_p")
    q_p = as_float_array(log_q_p, "log_q_p")
    if phi_p.ndim != 2:
        raise ValueError(f"log_phi_p: expected an array of shape (n_chains, samples_per_chain), received shape "
                         f"{phi_p.shape}")
    if q_p.shape != phi_p.shape:
        raise ValueError(f"log_q_p: expected shape {phi_p.shape} (like log_phi_p), received {q_p.shape}")
    n_chains, per_chain = phi_p.shape
    if n_chains < 2:
        raise ValueError(f"log_phi_p: expected at least 2 independent chains for a batch-means standard error, "
                         f"received {n_chains}")
    if per_chain < 1:
        raise ValueError(f"log_phi_p: expected at least 1 sample per chain, received {per_chain}")
    l_q = _log_ratios(log_phi_q, log_q_q, "log_phi_q", "log_q_q")
    if paired and l_q.size != n_chains:
        raise ValueError(f"log_phi_q: expected one q sample per chain ({n_chains}) with paired=True, "
                         f"received {l_q.size}")
    l_p = _log_ratios(phi_p.ravel(), q_p.ravel(), "log_phi_p", "log_q_p", min_n=1)
    trace, converged, num, den = _bridge_fixed_point(l_q, l_p, max_iter, tol, log_z_init)

    naive = float(np.hypot(_log_mean_weight(num)[1], _log_mean_weight(den)[1]))
    r_b, b_c = _chain_means(den.reshape(n_chains, per_chain))
    mean_b = float(np.mean(b_c))
    rel_b = float(np.std(b_c, ddof=1) / (np.sqrt(n_chains) * mean_b))
    if paired:
        with np.errstate(over="ignore"):
            a = np.exp(num - np.max(num))
        rel = float(np.std(a / np.mean(a) - b_c / mean_b, ddof=1) / np.sqrt(n_chains))
    else:
        rel = float(np.hypot(_log_mean_weight(num)[1], rel_b))
    rel_b_naive = float(np.std(r_b, ddof=1) / (np.sqrt(r_b.size) * mean_b))
    ess = float(r_b.size * (rel_b_naive / rel_b) ** 2) if rel_b > 0 else float(r_b.size)
    log_z_hat, rel, lower, upper = _log_interval(trace[-1], rel)
    return ChainBridgeEstimate("bridge sampling (Meng-Wong), batch means over chains", log_z_hat, lower, upper, rel,
                               l_q, time.process_time() - began, l_p, converged, trace, n_chains, per_chain, paired,
                               naive, ess)


# --------------------------------------------------------------------- burn-in of seeded chains
@dataclass
class BurnInDiagnostic:
    """Outcome of :func:`burn_in_diagnostic` (all the numbers it used, for printing).

    burn_in : int               sweeps to discard: the window's start, half the pilot (its length when not
                                converged)
    detected : int              first recorded sweep from which every running mean is within ``threshold``
                                standard errors of the stationary level
    converged : bool            ``burn_in`` comes before the stationary window, and the window's halves agree
    sweeps : ndarray (T,)       the recorded sweep counts
    means : ndarray (T,)        mean of the statistic over the chains at each recorded sweep
    std_errors : ndarray (T,)   their standard errors (sd over chains / sqrt K)
    level : float               stationary level: mean over the chains and the window
    level_se : float            its standard error, batch means over chains
    z : ndarray (T,)            (means - level) / sqrt(std_errors^2 + level_se^2)
    segment_z : ndarray (T,)    z of the running mean from each recorded sweep to the window (0 inside it):
                                mean over chains of (chain's mean over [sweep, window) - its window mean),
                                over its standard error across chains
    threshold : float           |z| allowed
    window_start : int          first sweep of the stationary window (the second half of the pilot)
    split_z : float             (mean over the window's second half - mean over its first half) / its
                                batch-means standard error (one batch per chain)
    r_hat : float               split R-hat of the statistic over the window (reported, not tested: see
                                :func:`burn_in_diagnostic`)
    """

    burn_in: int
    detected: int
    converged: bool
    sweeps: np.ndarray
    means: np.ndarray
    std_errors: np.ndarray
    level: float
    level_se: float
    z: np.ndarray
    segment_z: np.ndarray
    threshold: float
    window_start: int
    split_z: float
    r_hat: float

    def __str__(self):
        verdict = "converged" if self.converged else "NOT converged within the pilot"
        return (f"burn-in {self.burn_in} sweeps ({verdict}): running mean within {self.threshold:g} SE of the "
                f"stationary level {self.level:.4f} +- {self.level_se:.4f} (sweeps >= {self.window_start}) from "
                f"sweep {self.detected} on; window halves differ by {self.split_z:+.2f} SE; split R-hat "
                f"{self.r_hat:.4f}")


def burn_in_diagnostic(values, sweeps=None, *, threshold=3.0):
    """Burn-in of chains started at samples of q, judged from a statistic recorded along them.

    Made for the seeded chains of bridge sampling (section 4.2.4), with the statistic
    f = log phi - log q: at sweep 0 the chains are exact samples of q, so the mean of f is
    E_q[log phi - log q] (the lower bound 4.49); once they have forgotten their start it is
    E_p[log phi - log q] (the upper bound 4.46), and the two differ by KL(q || p) + KL(p || q).
    So the running mean of f over the chains moves from one to the other exactly as far as
    the p samples are still biased towards q, and needs no burn-in when q = p.

    The second half of the pilot (sweeps >= T / 2) is taken as stationary; its level is the
    mean over chains and sweeps, with a batch-means standard error (one batch per chain).
    ``detected`` is the first recorded sweep t from which every mean over the chains at a
    sweep is within ``threshold`` standard errors of the level (the standard errors of the two
    added in quadrature), and so is, for every such t, the running mean over sweeps from t to
    the window (each chain's mean over those sweeps minus its window mean, averaged over chains,
    with the standard error of the K independent differences). The pointwise test sees a
    large transient; the running mean sees a small slow drift that each single sweep hides in
    its noise. The burn-in returned is not ``detected`` but the window's start, half the pilot
    (the rule of Gelman and Rubin: discard the first half, check the second): ``detected`` is
    only where the transient sinks below what K chains can see in log phi - log q, and a
    bridge estimate from as many chains resolves far smaller biases than that noisy statistic.
    On the quick run's RBM (``kd-ref run rbm-nade --quick``, its square-error NADE) the pilot
    found ``detected`` = 6, yet with 2,000 chains and 4 samples each a burn-in of 12 sweeps
    biased bridge sampling by -0.046 +- 0.009 nats (4 of 8 intervals covered the exact log Z),
    100 sweeps by -0.014 +- 0.004 (8 of 8), 300 by -0.008 +- 0.007 (8 of 8). The chains count
    as converged when ``detected`` comes before the window and the window is stationary by a
    split test in the
    manner of split R-hat (Gelman et al., BDA3 section 11.4, each chain's window cut in two
    halves): the mean difference between the second and the first halves must be within
    ``threshold`` standard errors of 0, the standard error from the K per-chain differences,
    which are independent however correlated each chain is in time. Split R-hat itself is
    reported but not tested: on a window of n recorded sweeps it is about
    sqrt(1 + (tau - 1) / n) for an integrated autocorrelation time tau even when the chains are
    stationary, so it measures the window's length as much as convergence. When not converged
    the burn-in is reported as the pilot's whole length and ``converged`` is False.

    What it cannot see: chains started at q that never reach part of p (a mode q misses,
    crossed by the Gibbs chains too slowly) look stationary to any diagnostic of these chains;
    only chains from elsewhere, or the coverage checks of tests/test_partition_chains.py on
    RBMs with exact log Z, speak to that.

    Parameters
    ----------
    values : ndarray of shape (T, K)
        The statistic at T >= 4 recorded sweeps of K >= 2 independent chains.
    sweeps : ndarray of shape (T,), optional
        The sweep counts of the rows, increasing integers >= 0 (default 0, 1, ..., T - 1).
    threshold : float > 0

    Returns
    -------
    BurnInDiagnostic
    """
    v = as_float_array(values, "values", ndim=2)
    n_points, n_chains = v.shape
    if n_points < 4 or n_chains < 2:
        raise ValueError(f"values: expected at least 4 recorded sweeps of at least 2 chains, shape (T, K), "
                         f"received shape {v.shape}")
    if sweeps is None:
        t = np.arange(n_points)
    else:
        t = np.asarray(sweeps)
        if t.shape != (n_points,) or not np.issubdtype(t.dtype, np.integer) or t[0] < 0 or np.any(np.diff(t) <= 0):
            raise ValueError(f"sweeps: expected {n_points} increasing integer sweep counts >= 0, received "
                             f"{np.asarray(sweeps)!r}")
    threshold = check_in_range(threshold, "threshold", 0.0, np.inf, low_open=True, high_open=True)
    in_window = t >= t[-1] / 2
    if in_window.sum() < 4:
        in_window[-4:] = True                      # two halves of at least two points
    window = v[in_window]                          # (T_w, K)
    chain_means = window.mean(axis=0)
    level = float(chain_means.mean())
    level_se = float(np.std(chain_means, ddof=1) / np.sqrt(n_chains))
    means = v.mean(axis=1)
    ses = v.std(axis=1, ddof=1) / np.sqrt(n_chains)
    scale = np.sqrt(ses**2 + level_se**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(scale > 0, (means - level) / np.where(scale > 0, scale, 1.0), 0.0)
    ws = int(np.flatnonzero(in_window)[0])
    tail = np.cumsum(v[:ws][::-1], axis=0)[::-1] / np.arange(ws, 0, -1)[:, None]   # chain means over [i, ws)
    seg = tail - chain_means                                                         # (ws, K)
    seg_se = seg.std(axis=1, ddof=1) / np.sqrt(n_chains)
    segment_z = np.zeros(n_points)
    with np.errstate(divide="ignore", invalid="ignore"):
        segment_z[:ws] = np.where(seg_se > 0, seg.mean(axis=1) / np.where(seg_se > 0, seg_se, 1.0), 0.0)
    outside = np.flatnonzero((np.abs(z) > threshold) | (np.abs(segment_z) > threshold))
    first = 0 if outside.size == 0 else int(outside[-1]) + 1
    window_start = int(t[in_window][0])
    half = window.shape[0] // 2
    seqs = np.concatenate([window[:half], window[window.shape[0] - half:]], axis=1)   # (half, 2K)
    within = float(np.mean(np.var(seqs, axis=0, ddof=1)))
    between = float(np.var(seqs.mean(axis=0), ddof=1))      # B / n of BDA3
    r_hat = float(np.sqrt(((half - 1) / half * within + between) / within)) if within > 0 else 1.0
    detected = int(t[first]) if first < n_points else int(t[-1])
    halves = seqs.mean(axis=0)                              # first halves of the K chains, then the second halves
    split = halves[n_chains:] - halves[:n_chains]           # independent over chains, however correlated in time
    split_se = float(np.std(split, ddof=1) / np.sqrt(n_chains))
    split_z = float(np.mean(split) / split_se) if split_se > 0 else 0.0
    converged = first < n_points and detected <= window_start and abs(split_z) <= threshold
    burn_in = window_start if converged else int(t[-1])
    return BurnInDiagnostic(burn_in, detected, bool(converged), t, means, ses, level, level_se, z, segment_z,
                            threshold, window_start, split_z, r_hat)


# ----------------------------------------------------------------------------- AIS for binary RBMs
def beta_schedule(n_temperatures, kind="uniform"):
    """Inverse temperatures 0 = beta_0 < beta_1 < ... < beta_K = 1 for AIS, K = ``n_temperatures``.

    Parameters
    ----------
    n_temperatures : int
        K, the number of annealing steps (K >= 1; K >= 3 for "piecewise").
    kind : {"uniform", "piecewise"}
        "uniform": equal steps. "piecewise": Salakhutdinov and Murray's (2008) schedule,
        K split over [0, 0.5], [0.5, 0.9] and [0.9, 1] in the ratio 500 : 4,000 : 10,000
        (exactly their steps 1e-3, 1e-4 and 1e-5 when K = 14,500), equal steps within
        each piece.

    Returns
    -------
    ndarray of shape (K + 1,)
    """
    k = check_positive_int(n_temperatures, "n_temperatures")
    if kind == "uniform":
        return np.linspace(0.0, 1.0, k + 1)
    if kind == "piecewise":
        if k < 3:
            raise ValueError(f"n_temperatures: expected an integer >= 3 for the piecewise schedule, received {k}")
        total = sum(_PIECEWISE_STEPS)
        counts = [max(1, round(k * s / total)) for s in _PIECEWISE_STEPS[:2]]
        counts.append(k - sum(counts))
        pieces = [np.linspace(a, b, c + 1)[:-1] for a, b, c in zip(_PIECEWISE_EDGES[:-1], _PIECEWISE_EDGES[1:], counts)]
        return np.concatenate(pieces + [np.ones(1)])
    raise ValueError(f"kind: expected 'uniform' or 'piecewise', received {kind!r}")


def _ais_log_ratio(v, a, beta_new, beta_old, d_visible):
    """log f_new(v) - log f_old(v) for the annealed RBMs, per run.

    log f_beta(v) = ((1 - beta) b_A + beta b_v)^T v + sum_j softplus(beta a_j),  a = W^T v + b_h,
    so the difference is (beta_new - beta_old) (b_v - b_A)^T v + sum_j [softplus(beta_new a_j)
    - softplus(beta_old a_j)].

    v : (M, D), a : (M, H), d_visible : (D,) = b_v - b_A  ->  (M,)
    """
    return ((beta_new - beta_old) * (v @ d_visible)
            + np.sum(softplus(beta_new * a) - softplus(beta_old * a), axis=1))


def _ais_gibbs_sweep(a, beta, visible_bias, W, u_hidden, u_visible):
    """One block Gibbs sweep of the annealed RBM at inverse temperature ``beta``.

    The joint at beta is proportional to exp(visible_bias^T v + beta (b_h + W^T v)^T h) with
    visible_bias = (1 - beta) b_A + beta b_v: h ~ sigma(beta a) with a = W^T v + b_h, then
    v ~ sigma(visible_bias + beta W h). Leaves the annealed marginal over v invariant.
    The uniforms are passed in so that one call handles all runs (rows) at once.

    a : (M, H), visible_bias : (D,), W : (D, H), u_hidden : (M, H), u_visible : (M, D)  ->  v (M, D)
    """
    h = (u_hidden < expit(beta * a)).astype(a.dtype)      # a's precision (float64 or float32) throughout
    return (u_visible < expit(visible_bias + beta * (h @ W.T))).astype(a.dtype)


def ais_rbm(W, b_visible, b_hidden, rng, *, n_runs=100, n_temperatures=None, schedule=None, betas=None,
            base_marginals=None, marginal_eps=1e-6, progress=False, dtype=np.float64):
    """Annealed importance sampling (Neal, 2001) of log Z for a binary RBM, all runs at once.

    The RBM has log phi(v) = b_v^T v + sum_j softplus(b_h,j + W_{:,j}^T v) (4.30-4.34).
    Following Salakhutdinov and Murray (2008), the base model has no couplings:
    independent Bernoulli visibles with biases b_A = logit(base_marginals) (the data's
    pixel marginals; 0.5 each by default) and H free hidden units, so that
    log Z_0 = sum_i softplus(b_A,i) + H log 2. The path between them is geometric: at
    inverse temperature beta the visible biases are (1 - beta) b_A + beta b_v and W and b_h
    are scaled by beta,

        log f_beta(v) = ((1 - beta) b_A + beta b_v)^T v + sum_j softplus(beta (b_h,j + W_{:,j}^T v)).

    Each run starts with an exact sample of the base model, then for k = 1..K adds
    log f_k(v) - log f_{k-1}(v) to its log weight and, for k < K, moves v by one block
    Gibbs sweep at beta_k. Z / Z_0 is estimated by the mean weight. The M runs are the
    rows of (M, D) and (M, H) arrays, so each temperature costs two (M x D) x (D x H)
    matrix products.

    Parameters
    ----------
    W : ndarray of shape (D, H)
    b_visible : ndarray of shape (D,)
    b_hidden : ndarray of shape (H,)
    rng : numpy.random.Generator
    n_runs : int
        M >= 2 independent runs (the interval needs two).
    n_temperatures : int, default 1000
        K, the number of annealing steps (ignored when ``betas`` is given).
    schedule : {"uniform", "piecewise"}, default "uniform"
        See :func:`beta_schedule`.
    betas : ndarray of shape (K + 1,), optional
        An explicit schedule, increasing from exactly 0 to exactly 1 (excludes
        ``n_temperatures`` and ``schedule``).
    base_marginals : ndarray of shape (D,), optional
        Probabilities in [0, 1] that each visible unit is on under the base model,
        typically the (smoothed) pixel means of the training data. Values are clipped to
        [marginal_eps, 1 - marginal_eps] so the biases stay finite.
    marginal_eps : float in (0, 0.5)
    progress : bool
        Print a progress line (current beta and running log Z_k estimate) to stderr.
    dtype : {numpy.float64, numpy.float32}
        Precision of the Gibbs sweeps and of the hidden inputs a = W^T v + b_h (the matrix
        products, the whole cost); the log weights are accumulated in float64 from them.
        float32 (the released code's sampling precision) draws its uniforms with
        ``rng.random(dtype=float32)``, another stream than float64's, with the same target.

    Returns
    -------
    AISEstimate
        ``log_z`` with +-3 SE interval in log space (module docstring), ``log_weights``
        (M,) including log Z_0, ``betas``, ``log_z_base``, CPU ``seconds`` and
        ``wall_seconds``.

    Examples
    --------
    A 4-3 RBM is small enough to enumerate, so AIS can be checked against the exact log Z:

    >>> import numpy as np
    >>> from kd_ref.rbm import RBM
    >>> rbm = RBM(4, 3, np.random.default_rng(0), init_std=1.0)
    >>> est = ais_rbm(rbm.W, rbm.b_visible, rbm.b_hidden, np.random.default_rng(1), n_runs=200,
    ...               n_temperatures=200)
    >>> est.contains(rbm.log_z_exact())
    True
    """
    rbm = RBM.from_arrays(W, b_visible, b_hidden)   # checks shapes and finiteness
    W, b_visible, b_hidden = rbm.W, rbm.b_visible, rbm.b_hidden
    n_vis, n_hid = W.shape
    rng = check_generator(rng)
    n_runs = check_positive_int(n_runs, "n_runs", minimum=2)
    progress = check_bool(progress, "progress")
    dt = check_float_dtype(dtype)
    if betas is not None:
        for name, value in (("n_temperatures", n_temperatures), ("schedule", schedule)):
            if value is not None:
                raise ValueError(f"{name}: expected None when betas is given, received {value!r}")
        betas = as_float_array(betas, "betas", ndim=1)
        if betas.size < 2 or betas[0] != 0.0 or betas[-1] != 1.0 or np.any(np.diff(betas) <= 0):
            raise ValueError(f"betas: expected a strictly increasing array from 0 to 1 with at least 2 entries, "
                             f"received {betas.size} entries from {betas[0] if betas.size else None} "
                             f"to {betas[-1] if betas.size else None}")
    else:
        betas = beta_schedule(1000 if n_temperatures is None else n_temperatures,
                              "uniform" if schedule is None else schedule)
    eps = check_in_range(marginal_eps, "marginal_eps", 0.0, 0.5, low_open=True, high_open=True)
    if base_marginals is None:
        base_bias = np.zeros(n_vis)
    else:
        m = as_float_array(base_marginals, "base_marginals", shape=(n_vis,))
        if np.any((m < 0) | (m > 1)):
            raise ValueError(f"base_marginals: expected probabilities in [0, 1], received values in "
                             f"[{m.min():.4g}, {m.max():.4g}]")
        m = np.clip(m, eps, 1.0 - eps)
        base_bias = np.log(m) - np.log1p(-m)

    began, began_wall = time.process_time(), time.perf_counter()
    log_z_base = float(np.sum(softplus(base_bias)) + n_hid * _LOG2)
    d_visible = b_visible - base_bias
    n_steps = betas.size - 1
    v = (rng.random((n_runs, n_vis)) < expit(base_bias)).astype(dt)
    W_dt, b_hidden_dt = W.astype(dt, copy=False), b_hidden.astype(dt, copy=False)
    log_w = np.zeros(n_runs)
    bar = Progress(n_steps, label="AIS", enabled=progress)
    report_every = max(1, n_steps // 100)
    for k in range(1, n_steps + 1):
        beta = betas[k]
        a = v @ W_dt + b_hidden_dt
        log_w += _ais_log_ratio(v, a.astype(np.float64, copy=False), beta, betas[k - 1], d_visible)
        if k < n_steps:
            visible_bias = ((1.0 - beta) * base_bias + beta * b_visible).astype(dt, copy=False)
            v = _ais_gibbs_sweep(a, dt.type(beta), visible_bias, W_dt, rng.random((n_runs, n_hid), dtype=dt),
                                 rng.random((n_runs, n_vis), dtype=dt))
        if progress and (k % report_every == 0 or k == n_steps):
            bar.update(k, beta=float(beta), log_z=float(log_z_base + logsumexp(log_w) - np.log(n_runs)))
    bar.close()
    log_w = log_w + log_z_base
    log_z, rel, lower, upper = log_mean_weight(log_w)
    return AISEstimate("annealed importance sampling (RBM)", log_z, lower, upper, rel, log_w,
                       time.process_time() - began, betas, log_z_base, time.perf_counter() - began_wall)
