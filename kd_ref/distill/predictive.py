"""Compact predictive distributions (Chapter 3): distil a Markov chain into a small closed-form model.

The Bayesian predictive distribution p(y | D) = E_{p(theta | D)}[p(y | theta)]
(3.1-3.3) is approximated by MCMC samples theta_s; a compact model q(y; phi) is
then fitted to it, either

* in **batch** (3.6): store S samples, draw data from their Monte Carlo average,
  fit q to those data; or
* **online** (3.7-3.10, 3.36-3.39): each step advances the chain for a minibatch of
  fresh samples, uses them once for a stochastic update of q and throws them away,
  so memory is O(minibatch) however long the chain runs.

Two case studies:

Bayesian mixture of Gaussians (section 3.2.3, 3.11-3.14)
    :class:`BayesianMoG` gives the likelihood of a 1-D mixture with known weights
    and variances and unknown means, the Gaussian prior on the means, the
    unnormalised posterior for the slice sampler, the Monte Carlo predictive
    density and sampling from it. :func:`batch_distill_mog` and
    :func:`online_distill_mog` fit the compact mixture by batch EM and online EM
    (Appendix D).

Bayesian logistic regression (section 3.3.4, 3.15-3.48)
    :class:`BayesianLogisticRegression` gives the posterior over w (no bias). The
    Monte Carlo predictor (3.43) is a one-hidden-layer network (:func:`mc_predictor`):
    one logistic unit per posterior sample, a linear output with weights 1/S. The
    compact model (3.44, :func:`compact_predictor`) has the same form with K units
    whose first-layer weights are the only trained parameters. Losses on the
    log-probabilities of both classes: cross entropy (3.18-3.22) and derivative
    square error (3.23-3.26), with theta-gradients from backprop and R{backprop}.

The two classes of a zero-bias network
--------------------------------------
With no biases, q(t = 1 | x) = sum_k sigma(w_k^T x) / K and, because
1 - sigma(a) = sigma(-a), q(t = 0 | x) = q(t = 1 | -x). The class-0 quantities are
therefore the network's own output at -x: log q(t=0 | x) = log y(-x) and
d log q(t=0 | x)/dx = -[d log y / du](u = -x). Computing them this way, instead of from
1 - y(x), keeps log-probabilities and their input derivatives accurate where the
sigmoids saturate (1 - y would round to 0 there). The same identity holds for the
Monte Carlo predictor and for a single-sample teacher sigma(w^T x), so every
quantity below is evaluated on the stacked rows U = [-x; x] (class 0, class 1).
"""
from dataclasses import dataclass

import numpy as np
from scipy import special

from .._validation import as_batch, as_binary_array, as_float_array, check_generator, check_in_range, check_positive_int
from ..mlp import MLP
from ..mog import MoG, OnlineEM, fit_em, initial_model
from ..optim import SGD, LinearDecay
from ..outputs import CrossEntropy
from . import distill

# ------------------------------------------------------------------- thesis settings
#: True model of section 3.2.3 (3.11-3.12): weights, means and variances of the 1-D mixture.
TRUE_WEIGHTS = (1 / 3, 1 / 3, 1 / 3)
TRUE_MEANS = (-3.0, 0.0, 2.0)
TRUE_VARIANCES = (2.0, 5.0, 1.0)
#: Prior variance of each unknown mean (3.13) and of each logistic-regression weight (3.42).
PRIOR_VAR = 100.0
#: Input distribution of the logistic-regression distillation, x ~ N(0, 10 I) (3.45).
INPUT_VAR = 10.0

_LOG_2PI = np.log(2.0 * np.pi)


def _logsumexp(a, axis):
    """log sum exp over ``axis`` with the max shift, overwriting ``a`` (a scratch array).

    scipy's version costs several times more on these small arrays, and the slice
    sampler calls this tens of thousands of times.
    """
    m = np.max(a, axis=axis, keepdims=True)
    m[~np.isfinite(m)] = 0.0
    a -= m
    np.exp(a, out=a)
    out = np.sum(a, axis=axis)
    np.log(out, out=out)
    out += np.squeeze(m, axis=axis)
    return out


# =================================================================== Bayesian MoG
class BayesianMoG:
    """Posterior over the K means of a 1-D mixture with known weights and variances (3.11-3.13).

    Parameters
    ----------
    y : ndarray of shape (N,)
        Observations.
    weights, variances : sequence of K floats
        The known mixing weights (summing to one) and component variances.
    prior_var : float
        Each mean has the prior N(0, prior_var), independently (3.13).
    """

    def __init__(self, y, weights=TRUE_WEIGHTS, variances=TRUE_VARIANCES, prior_var=PRIOR_VAR):
        self.y = as_float_array(y, "y", ndim=1)
        self.weights = as_float_array(weights, "weights", ndim=1)
        K = self.weights.size
        self.variances = as_float_array(variances, "variances", shape=(K,))
        if np.any(self.weights < 0) or abs(float(self.weights.sum()) - 1.0) > 1e-8:
            raise ValueError(f"weights: expected non-negative values summing to 1, received {self.weights}")
        if np.any(self.variances <= 0):
            raise ValueError(f"variances: expected positive values, received {self.variances}")
        self.prior_var = check_in_range(prior_var, "prior_var", 0.0, np.inf, low_open=True)
        self.n_components = K

    def _component_terms(self, y, means):
        """log w_k + log N(y_n; mu_mk, var_k) for rows of means (M, K) and points y (N,) -> (K, M, N).

        Components lead the shape so that the log-sum-exp over them runs on whole
        (M, N) slices, which is much faster than reducing a short trailing axis.
        """
        diff = y[None, None, :] - means.T[:, :, None]
        diff *= diff
        diff *= (-0.5 / self.variances)[:, None, None]
        diff += (np.log(self.weights) - 0.5 * (_LOG_2PI + np.log(self.variances)))[:, None, None]
        return diff

    def log_likelihood(self, means):
        """sum_n log p(y_n | mu) (3.11-3.12) for each row of ``means`` (M, K) -> (M,)."""
        means = as_batch(means, "means", self.n_components)
        return _logsumexp(self._component_terms(self.y, means), axis=0).sum(axis=1)

    def log_prior(self, means):
        """log N(mu; 0, prior_var I) (3.13), (M, K) -> (M,)."""
        means = as_batch(means, "means", self.n_components)
        return -0.5 * (self.n_components * (_LOG_2PI + np.log(self.prior_var)) + np.sum(means**2, axis=1) / self.prior_var)

    def log_posterior(self, means):
        """Unnormalised log p(mu | y) = log-likelihood + log prior (3.2); vectorised, (M, K) -> (M,)."""
        return self.log_likelihood(means) + self.log_prior(means)

    def model(self, means):
        """The mixture p(y | mu) for one vector of means (K,)."""
        means = as_float_array(means, "means", shape=(self.n_components,))
        return MoG.from_1d(self.weights, means, self.variances)

    def sample_y(self, mean_samples, rng):
        """One y ~ p(y | mu_s) for every row mu_s of ``mean_samples`` (S, K) -> (S,) (3.7)."""
        mean_samples = as_batch(mean_samples, "mean_samples", self.n_components)
        check_generator(rng)
        k = rng.choice(self.n_components, size=mean_samples.shape[0], p=self.weights)
        mu = mean_samples[np.arange(mean_samples.shape[0]), k]
        return mu + np.sqrt(self.variances[k]) * rng.standard_normal(mu.shape)

    def sample_predictive(self, mean_samples, n, rng):
        """n draws from the Monte Carlo predictive (1/S) sum_s p(y | mu_s) (3.6): a random sample, then y."""
        mean_samples = as_batch(mean_samples, "mean_samples", self.n_components)
        n = check_positive_int(n, "n")
        check_generator(rng)
        idx = rng.integers(0, mean_samples.shape[0], size=n)
        return self.sample_y(mean_samples[idx], rng)

    def predictive_log_density(self, y, mean_samples, chunk=500):
        """log of the Monte Carlo predictive (1/S) sum_s p(y | mu_s) (3.6) at points y (G,) -> (G,).

        Evaluated over chunks of ``chunk`` samples, so memory is O(G * chunk * K).
        """
        y = as_float_array(y, "y", ndim=1)
        mean_samples = as_batch(mean_samples, "mean_samples", self.n_components)
        chunk = check_positive_int(chunk, "chunk")
        total = np.full(y.shape, -np.inf)
        for start in range(0, mean_samples.shape[0], chunk):  # chunks of samples, vectorised within
            terms = self._component_terms(y, mean_samples[start:start + chunk])      # (K, m, G)
            total = np.logaddexp(total, _logsumexp(_logsumexp(terms, axis=0), axis=0))
        return total - np.log(mean_samples.shape[0])


def batch_distill_mog(bayes, mean_samples, n_y, rng, *, n_components=3, **em_kwargs):
    """Batch distillation (3.6): n_y draws from the Monte Carlo predictive, then batch EM.

    Parameters
    ----------
    bayes : BayesianMoG
    mean_samples : ndarray of shape (S, K)
        Stored posterior samples.
    n_y : int
        Number of y samples M fitted by EM.
    em_kwargs
        Passed to :func:`kd_ref.mog.fit_em` (n_restarts, tol, reg, ...).

    Returns
    -------
    result : kd_ref.mog.EMResult
        ``result.model`` is the compact mixture q(y; phi) (3.14).
    y : ndarray of shape (n_y,)
        The fitted samples.
    """
    y = bayes.sample_predictive(mean_samples, n_y, rng)
    return fit_em(y[:, None], n_components, rng, **em_kwargs), y


@dataclass
class OnlineMoGResult:
    """Outcome of :func:`online_distill_mog`.

    model : MoG                      the compact mixture after the last step
    batch_log_likelihoods : ndarray  average log q of each minibatch before its update
    """

    model: MoG
    batch_log_likelihoods: np.ndarray


def online_distill_mog(bayes, sampler, n_steps, batch_size, rng, *, schedule=None, n_components=3, reg=1e-6):
    """Online distillation (3.7-3.10) by online EM (D.10-D.14).

    Each step takes ``batch_size`` fresh samples mu from the advancing chain,
    draws one y ~ p(y | mu) for each, and makes one online EM update; the pairs are
    then discarded.

    Parameters
    ----------
    bayes : BayesianMoG
    sampler : kd_ref.mcmc.SliceSampler
        Burnt-in chain(s) over the means; ``next_batch`` is called once per step.
    n_steps, batch_size : int
    rng : numpy.random.Generator
        Draws the y's and the starting mixture (means at random points of the
        first minibatch).
    schedule : callable t -> eta_t in [0, 1], optional
        Default: linear decay from 1 to 0 over ``n_steps`` (section 3.2.3).

    Returns
    -------
    OnlineMoGResult
    """
    n_steps = check_positive_int(n_steps, "n_steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    check_generator(rng)
    if batch_size < n_components:
        raise ValueError(f"batch_size: expected at least n_components={n_components} points, received {batch_size}")
    schedule = LinearDecay(1.0, n_steps) if schedule is None else schedule
    online, lls = None, np.empty(n_steps)
    for step in range(n_steps):
        y = bayes.sample_y(sampler.next_batch(batch_size), rng)[:, None]
        if online is None:
            online = OnlineEM(initial_model(y, n_components, rng, reg), schedule, reg)
        lls[step] = online.step(y)
    return OnlineMoGResult(online.model, lls)


# ======================================================= Bayesian logistic regression
def toy_logistic_data(rng, n_per_class=10, offset=2.0, spread=(0.8, 1.5)):
    """A small separable 2-D data set: class 1 to the right of the origin, class 0 to the left.

    Points are N((+-offset, 0), diag(spread)^2) with the sign of the first
    coordinate forced to the class's side, so w = (1, 0) separates them.

    Returns
    -------
    x : ndarray of shape (2 n_per_class, 2)
    t : ndarray of shape (2 n_per_class,)
    """
    check_generator(rng)
    n = check_positive_int(n_per_class, "n_per_class")
    pts = rng.normal(size=(2 * n, 2)) * np.asarray(spread, dtype=float)
    t = np.repeat([1.0, 0.0], n)
    sign = 2.0 * t - 1.0
    pts[:, 0] = sign * np.abs(offset + pts[:, 0])
    return pts, t


class BayesianLogisticRegression:
    """Posterior over the weights of logistic regression without bias (3.41-3.42).

    p(t = 1 | x, w) = sigma(w^T x),  w ~ N(0, prior_var I).

    Parameters
    ----------
    x : ndarray of shape (N, D)
    t : ndarray of shape (N,), entries 0 or 1
    prior_var : float
    """

    def __init__(self, x, t, prior_var=PRIOR_VAR):
        self.x = as_float_array(x, "x", ndim=2)
        self.t = as_binary_array(t, "t", shape=(self.x.shape[0],))
        self.prior_var = check_in_range(prior_var, "prior_var", 0.0, np.inf, low_open=True)
        self.z = (2.0 * self.t - 1.0)[:, None] * self.x     # sigma(w^T z_n) is the likelihood of point n
        self.dim = self.x.shape[1]

    def log_posterior(self, w):
        """Unnormalised log p(w | D) = sum_n log sigma(w^T z_n) - |w|^2 / (2 prior_var) (3.41-3.42); (M, D) -> (M,)."""
        w = as_batch(w, "w", self.dim)
        return special.log_expit(w @ self.z.T).sum(axis=1) - 0.5 * np.sum(w**2, axis=1) / self.prior_var


def _zero_bias_net(weights, output_weight, rng):
    """A [D, S, 1] logistic/linear MLP with first-layer weights ``weights`` (S, D), output weights all
    ``output_weight`` and zero biases."""
    S, D = weights.shape
    net = MLP([D, S, 1], ["logistic", "linear"], rng)
    net.W[0][...] = weights
    net.W[1][...] = output_weight
    net.b[0][...] = 0.0
    net.b[1][...] = 0.0
    return net


def mc_predictor(samples):
    """The Monte Carlo predictor (3.43) as a network: one logistic unit per sample, output weights 1/S.

    Parameters
    ----------
    samples : ndarray of shape (S, D)
        Posterior samples w_s; they become the rows of W1.

    Returns
    -------
    kd_ref.mlp.MLP
        Sizes [D, S, 1]; ``predict(x)`` gives p(t = 1 | x) = (1/S) sum_s sigma(w_s^T x).
    """
    samples = as_float_array(samples, "samples", ndim=2)
    # every weight is overwritten, so the generator only satisfies the constructor
    return _zero_bias_net(samples, 1.0 / samples.shape[0], np.random.default_rng(0))


def compact_predictor(n_units, dim, rng, init_scale=None):
    """The compact model (3.44): K logistic units with trainable weights, output weights 1/K, no biases.

    Only ``net.params[net.layout.slice("W1")]`` is trained; W2 stays 1/K and the
    biases stay 0 (the class-0 identity of the module docstring relies on it).

    Parameters
    ----------
    n_units : int
        K (the thesis uses 10).
    dim : int
        Input dimension D.
    rng : numpy.random.Generator
        Draws the initial weights, N(0, init_scale^2) each.
    init_scale : float, optional
        Standard deviation of the initial weights; default 1 / sqrt(D + 1), small
        and random as in the thesis's code (N(0, 1/3) for D = 2 inputs).
    """
    n_units = check_positive_int(n_units, "n_units")
    dim = check_positive_int(dim, "dim")
    check_generator(rng)
    if init_scale is None:
        init_scale = 1.0 / np.sqrt(dim + 1.0)
    init_scale = check_in_range(init_scale, "init_scale", 0.0, np.inf, low_open=True)
    return _zero_bias_net(init_scale * rng.standard_normal((n_units, dim)), 1.0 / n_units, rng)


def _check_zero_bias(net, name="net"):
    if not isinstance(net, MLP):
        raise TypeError(f"{name}: expected a kd_ref.mlp.MLP, received {type(net).__name__}")
    if len(net.sizes) != 3 or net.sizes[2] != 1 or net.nonlinearities != ["logistic", "linear"]:
        raise ValueError(f"{name}: expected a [D, K, 1] network with logistic then linear layers, received {net!r}")
    if np.any(net.b[0] != 0) or np.any(net.b[1] != 0) or np.any(net.W[1] <= 0):
        raise ValueError(f"{name}: expected zero biases and positive output weights (3.43-3.44), received "
                         f"|b| max {max(np.abs(net.b[0]).max(), np.abs(net.b[1]).max()):.3g}, "
                         f"min output weight {net.W[1].min():.3g}")


@dataclass
class ClassTargets:
    """Teacher targets at a minibatch of N inputs: the class log-probabilities that cross entropy (3.22)
    matches and their input derivatives that derivative square error (3.24) matches.

    log_p : ndarray of shape (N, 2)       log p(t = c | x_n), c = 0, 1
    d_log_p : ndarray of shape (N, 2, D)  d log p(t = c | x_n) / dx_n
    """

    log_p: np.ndarray
    d_log_p: np.ndarray

    @property
    def p(self):
        return np.exp(self.log_p)


def _stack(x):
    """Rows U = [-x; x]: evaluating class 1 at U gives class 0 then class 1 at x (module docstring)."""
    return np.concatenate([-x, x], axis=0)


def _unstack(values_u, n, flip_sign):
    """(2N, ...) values at U -> (N, 2, ...) per class; derivatives at -x change sign (chain rule)."""
    neg, pos = values_u[:n], values_u[n:]
    return np.stack([-neg if flip_sign else neg, pos], axis=1)


def _forward_log(net, u):
    """Forward pass at rows u, log y and d log y / du (one backprop without parameter gradients)."""
    cache = net.forward(u)
    y = cache.y
    _, d_u = net.backprop(cache, 1.0 / y, param_grads=False)
    return cache, np.log(y[:, 0]), d_u


def network_targets(net, x, chunk=None):
    """Class log-probabilities and their input derivatives from a zero-bias network (3.32).

    Used for the batch teacher (the Monte Carlo predictor) and to read a compact model.

    Parameters
    ----------
    net : kd_ref.mlp.MLP
        From :func:`mc_predictor` or :func:`compact_predictor`.
    x : ndarray of shape (N, D)
    chunk : int, optional
        Evaluate at most this many inputs at once (bounds memory for a large S).

    Returns
    -------
    ClassTargets
    """
    _check_zero_bias(net)
    x = as_float_array(x, "x", shape=(None, net.sizes[0]))
    n = x.shape[0]
    chunk = max(n, 1) if chunk is None else check_positive_int(chunk, "chunk")
    log_parts, d_parts = [], []
    for start in range(0, max(n, 1), chunk):  # chunks of inputs, vectorised within
        xs = x[start:start + chunk]
        _, log_y, d_u = _forward_log(net, _stack(xs))
        log_parts.append(_unstack(log_y, xs.shape[0], False))
        d_parts.append(_unstack(d_u, xs.shape[0], True))
    return ClassTargets(np.concatenate(log_parts, axis=0), np.concatenate(d_parts, axis=0))


def sample_targets(w, x):
    """Single-sample teacher of online distillation (3.36): p~(t = 1 | x_n) = sigma(w_n^T x_n).

    Each input row gets its own posterior sample: log sigma(+-w^T x) and
    d log sigma(+-w^T x) / dx = +-sigma(-+w^T x) w.

    Parameters
    ----------
    w : ndarray of shape (N, D)
        One chain sample per input.
    x : ndarray of shape (N, D)

    Returns
    -------
    ClassTargets
    """
    x = as_float_array(x, "x", ndim=2)
    w = as_float_array(w, "w", shape=x.shape)
    a = np.sum(w * x, axis=1)
    log_p = np.stack([special.log_expit(-a), special.log_expit(a)], axis=1)
    d_log_p = np.stack([-special.expit(a)[:, None] * w, special.expit(-a)[:, None] * w], axis=1)
    return ClassTargets(log_p, d_log_p)


def _minibatch(net, x):
    """x as a non-empty (N, D) minibatch for ``net`` (an empty one would make the averages 0 / 0)."""
    x = as_float_array(x, "x", shape=(None, net.sizes[0]))
    if x.shape[0] == 0:
        raise ValueError(f"x: expected a non-empty minibatch of shape (N, {net.sizes[0]}) with N >= 1, "
                         f"received shape {x.shape}")
    return x


def _check_targets(targets, n, d):
    if not isinstance(targets, ClassTargets):
        raise TypeError(f"targets: expected a ClassTargets, received {type(targets).__name__}")
    if targets.log_p.shape != (n, 2) or targets.d_log_p.shape != (n, 2, d):
        raise ValueError(f"targets: expected log_p of shape ({n}, 2) and d_log_p of shape ({n}, 2, {d}), received "
                         f"{targets.log_p.shape} and {targets.d_log_p.shape}")


class CrossEntropyLoss:
    """Cross entropy between teacher and compact model, averaged over the minibatch (3.22, 3.35).

    L = -(1/N) sum_n sum_c p(t = c | x_n) log q(t = c | x_n).
    """

    name = "cross entropy"

    def __call__(self, net, x, targets, grad=True):
        """Loss and its gradient with respect to the first-layer weights (the protocol of :mod:`kd_ref.distill`).

        Parameters
        ----------
        net : kd_ref.mlp.MLP
            Compact model (:func:`compact_predictor`).
        x : ndarray of shape (N, D)
        targets : ClassTargets
            The teacher at x.
        grad : bool
            Also return dL/dW1 (one backprop with parameter gradients).

        Returns
        -------
        value : float
        d_W1 : ndarray of shape (K * D,) or None
            Gradient with respect to ``net.params[net.layout.slice("W1")]``.
        """
        _check_zero_bias(net)
        x = _minibatch(net, x)
        n = x.shape[0]
        _check_targets(targets, n, x.shape[1])
        p_u = np.concatenate([targets.p[:, 0], targets.p[:, 1]])[:, None]    # teacher at U = [-x; x]
        cache = net.forward(_stack(x))
        out = CrossEntropy(p_u)                                              # E = sum p log y (a log-likelihood)
        value = -out.value(cache.y) / n
        if not grad:
            return value, None
        d_params, _ = net.backprop(cache, -out.grad(cache.y) / n, input_grads=False)
        return value, d_params[net.layout.slice("W1")]


class DerivativeSquareErrorLoss:
    """Derivative square error (3.23-3.26): the teacher's expected squared error of the input derivatives
    of the log-probability of its label, averaged over the minibatch.

    L = (1/N) sum_n sum_c p(t=c | x_n) 1/2 || d log q(t=c | x_n)/dx - d log p(t=c | x_n)/dx ||^2     (3.24)

    Each class term is weighted by the teacher's probability of that class: the
    expectation over the teacher's label t ~ p(t | x, D) of 3.23, taken in closed
    form. Without the weights the improbable class, whose log-probability is steep
    wherever the other one saturates, would dominate the loss. Online (3.38) the
    targets come from one chain sample, and so do the weights: pass the
    :func:`sample_targets` of that sample.

    The theta-gradient of p_c ||g_c - G_c||^2 / 2 with g_c = d log q_c / dx is
    (dg_c/dtheta)^T d_c with d_c = p_c (g_c - G_c): the parameter part of the joint
    (theta, x) Hessian of E = log q along v = (0, d). One backprop gives g; one
    reduced R{backprop} (B.19-B.21) along v = (0, d) gives the product; no Hessian
    is formed. At U = [-x; x] the class-0 rows use -d_0 (their input is -x).
    """

    name = "derivative square error"

    def __call__(self, net, x, targets, grad=True):
        """Loss and dL/dW1; arguments and returns as :meth:`CrossEntropyLoss.__call__`."""
        _check_zero_bias(net)
        x = _minibatch(net, x)
        n = x.shape[0]
        _check_targets(targets, n, x.shape[1])
        cache, _, d_u = _forward_log(net, _stack(x))                         # d log y / du at U
        g = _unstack(d_u, n, True)                                           # (N, 2, D): d log q_c / dx
        err = g - targets.d_log_p
        p = targets.p[:, :, None]                                            # (N, 2, 1): the teacher's class weights
        value = 0.5 * float(np.sum(p * err**2)) / n
        if not grad:
            return value, None
        d = p * err / n                                                      # d_c = p_c (g_c - G_c) / N
        v_u = np.concatenate([-d[:, 0], d[:, 1]], axis=0)                    # direction (0, v_u) over U
        out = CrossEntropy(np.ones_like(cache.y))                            # E = sum log y
        rcache = net.r_forward(cache, v_params=None, v_x=v_u)
        R_d_params, _ = net.r_backprop(cache, rcache, out.grad(cache.y), out.r_grad(cache.y, rcache.R_y),
                                        input_grads=False)
        return value, R_d_params[net.layout.slice("W1")]


#: The losses of section 3.3.4 by short name (the registry of every chapter has this shape; see kd_ref.distill).
LOSSES = {"ce": CrossEntropyLoss, "dse": DerivativeSquareErrorLoss}


class InputGenerator:
    """Minibatches of inputs x ~ N(0, input_var I) (3.45)."""

    def __init__(self, dim, rng, batch_size=10, input_var=INPUT_VAR):
        self.dim = check_positive_int(dim, "dim")
        self.rng = check_generator(rng)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.scale = np.sqrt(check_in_range(input_var, "input_var", 0.0, np.inf, low_open=True))

    def __call__(self):
        return self.scale * self.rng.standard_normal((self.batch_size, self.dim))


def teacher_targets(student, teacher, loss):
    """The teacher as x -> ClassTargets for :func:`kd_ref.distill.distill`.

    Parameters
    ----------
    student : kd_ref.mlp.MLP
        The compact model (:func:`compact_predictor`).
    teacher : kd_ref.mlp.MLP or a sampler with ``next_batch(n)``
        Batch distillation (3.32-3.35): the stored-sample predictor (:func:`mc_predictor`)
        labels x (:func:`network_targets`). Online distillation (3.36-3.39): a chain over
        w (e.g. :class:`kd_ref.mcmc.SliceSampler`) gives one fresh sample per input
        (:func:`sample_targets`).
    loss : a loss of :data:`LOSSES` or a function like them
        Both need the same targets (log-probabilities and their input derivatives).

    Returns
    -------
    callable, ndarray of shape (N, D) -> ClassTargets
    """
    _check_zero_bias(student, "student")
    if not callable(loss):
        raise TypeError(f"loss: expected a loss such as CrossEntropyLoss(), received {loss!r}")
    if isinstance(teacher, MLP):
        _check_zero_bias(teacher, "teacher")
        return lambda x: network_targets(teacher, x)
    if not callable(getattr(teacher, "next_batch", None)):
        raise TypeError(f"teacher: expected the Monte Carlo predictor (a kd_ref.mlp.MLP) or a sampler with "
                        f"next_batch(n), received {type(teacher).__name__}")
    return lambda x: sample_targets(teacher.next_batch(x.shape[0]), x)


def train_compact(net, loss, inputs, teacher, n_steps, *, eta0=1.0, progress=False, label="distil"):
    """SGD on the first-layer weights of a compact model (batch 3.32-3.35, online 3.36-3.39), step size
    decaying linearly eta0 -> 0 (3.45): :func:`kd_ref.distill.distill` with this chapter's optimiser.

    Parameters
    ----------
    net : kd_ref.mlp.MLP
        From :func:`compact_predictor`; only W1 changes.
    loss : str or loss
        A key of :data:`LOSSES` ("ce", "dse") or a loss like them.
    inputs : callable () -> ndarray of shape (N, D)
        E.g. :class:`InputGenerator`.
    teacher : kd_ref.mlp.MLP or a sampler with ``next_batch(n)``
        As :func:`teacher_targets`.
    n_steps : int

    Returns
    -------
    kd_ref.optim.TrainResult
    """
    _check_zero_bias(net)
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"loss: expected one of {sorted(LOSSES)}, received {loss!r}")
        loss = LOSSES[loss]()
    n_steps = check_positive_int(n_steps, "n_steps")
    eta0 = check_in_range(eta0, "eta0", 0.0, np.inf, low_open=True)
    w1 = net.params[net.layout.slice("W1")]       # a view: the optimiser updates the network in place
    return distill(net, loss, inputs, teacher_targets(net, teacher, loss), SGD(LinearDecay(eta0, n_steps)), n_steps,
                   params=w1, progress=progress, label=label)


def bernoulli_kl(log_p, log_q):
    """KL(p || q) between two-class distributions given as log-probabilities (N, 2) -> (N,).

    Averaged over x ~ p(x) it is the cross entropy of (3.18-3.22) less the teacher's entropy.
    """
    log_p = as_float_array(log_p, "log_p", shape=(None, 2))
    log_q = as_float_array(log_q, "log_q", shape=log_p.shape)
    return np.sum(np.exp(log_p) * (log_p - log_q), axis=1)
