"""Mixtures of Gaussians: density, sampling, batch EM and online EM (Appendix D).

A mixture of K full-covariance Gaussians in D dimensions (D.1),

    p(x) = sum_k w_k N(x; mu_k, Sigma_k),

is fitted by maximum likelihood (D.2) with

* batch EM (D.3-D.9): responsibilities r_nk (D.3), statistics (D.4-D.6), then
  weights, means and covariances from the statistics (D.7-D.9); each iteration
  never lowers the average log-likelihood;
* online EM (Cappe and Moulines, 2009; D.10-D.14): the same statistics on a
  minibatch, mixed into a running average s <- (1 - eta_t) s + eta_t s_hat (D.14),
  and the parameters recomputed from the running average as in D.7-D.9.

Statistics are kept as *averages* over the points they were computed from (the
sums of D.4-D.6 divided by the number of points). D.7-D.9 depend only on their
ratios, so a batch step is unchanged, and averages from minibatches of any size
can be mixed by D.14. An online step with eta = 1 on the full data set is
therefore exactly one batch EM step.
"""
import numbers
from dataclasses import dataclass, field

import numpy as np

from . import npzfile
from ._validation import as_float_array, check_bool, check_generator, check_in_range, check_positive_int
from .progress import Progress

FILE_KIND = "kd_ref.MoG"
FILE_VERSION = 1

_LOG_2PI = np.log(2.0 * np.pi)
# a component whose total responsibility is below this (as a fraction of the data) is "starved":
# D.8-D.9 would divide by ~0, so it keeps its previous mean and covariance (its weight is ~0 anyway)
_STARVED = 1e-12
# EM sums products x_i x_j over the points (D.6): beyond this magnitude they could overflow float64
_MAX_EM_VALUE = 1e150


def _cholesky(covs, name="covs"):
    """Lower Cholesky factors of a stack of covariances, with a clear error when one is not SPD."""
    K, D, _ = covs.shape
    for k in range(K):  # K is the number of components, not examples
        c = covs[k]
        scale = max(float(np.max(np.abs(c))), 1e-300)
        if not np.all(np.abs(c - c.T) <= 1e-10 * scale):
            raise ValueError(f"{name}[{k}]: expected a symmetric matrix, received one with "
                             f"max |C - C^T| = {np.max(np.abs(c - c.T)):.3g}")
    try:
        chol = np.linalg.cholesky(covs)
    except np.linalg.LinAlgError:
        eig = [float(np.min(np.linalg.eigvalsh(c))) for c in covs]
        k = int(np.argmin(eig))
        raise ValueError(f"{name}[{k}]: expected a positive definite matrix, received one with smallest "
                         f"eigenvalue {eig[k]:.3g} (a singular or negative covariance; a regulariser reg > 0 "
                         f"adds reg * I)") from None
    diag = np.diagonal(chol, axis1=1, axis2=2)
    if np.any(diag <= 0):
        k = int(np.argmin(np.min(diag, axis=1)))
        raise ValueError(f"{name}[{k}]: expected a positive definite matrix, received a singular one (Cholesky "
                         f"diagonal entry {float(np.min(diag[k])):.3g})")
    return chol


def _softmax_rows(terms):
    """Softmax over each row of finite-or--inf log terms (N, K) and the row's log-sum-exp (N,).

    Shifted by the row's largest term, so exp never overflows and the largest weight is
    exactly 1: the softmax rows sum to one and the log-sum-exp is top + log(sum) (D.1, D.3).
    """
    top = np.max(terms, axis=1, keepdims=True)          # finite: every row has a component of weight > 0
    scaled = np.exp(terms - top)
    total = scaled.sum(axis=1, keepdims=True)
    return scaled / total, (top + np.log(total))[:, 0]


class MoG:
    """A mixture of Gaussians with full covariances (D.1).

    All parameters live in one flat vector ``params`` = [weights, means, covs];
    ``weights`` (K,), ``means`` (K, D) and ``covs`` (K, D, D) are views into it.

    Parameters
    ----------
    weights : ndarray of shape (K,)
        Non-negative, summing to one.
    means : ndarray of shape (K, D)
    covs : ndarray of shape (K, D, D)
        Symmetric positive definite.

    Examples
    --------
    >>> import numpy as np
    >>> m = MoG([0.5, 0.5], [[-1.0], [1.0]], [[[1.0]], [[1.0]]])
    >>> float(np.round(m.log_density(np.zeros((1, 1)))[0], 4))
    -1.4189
    """

    def __init__(self, weights, means, covs):
        means = as_float_array(means, "means", ndim=2)
        K, D = means.shape
        weights = as_float_array(weights, "weights", shape=(K,))
        covs = as_float_array(covs, "covs", shape=(K, D, D))
        if np.any(weights < 0) or abs(float(weights.sum()) - 1.0) > 1e-8:
            raise ValueError(f"weights: expected non-negative values summing to 1, received {weights} "
                             f"(sum {weights.sum():.10g})")
        _cholesky(covs)
        self.n_components, self.dim = K, D
        self.params = np.concatenate([weights, means.ravel(), covs.ravel()])
        self.weights = self.params[:K]
        self.means = self.params[K:K + K * D].reshape(K, D)
        self.covs = self.params[K + K * D:].reshape(K, D, D)

    @classmethod
    def from_1d(cls, weights, means, variances):
        """A one-dimensional mixture from (K,) weights, means and variances."""
        means = as_float_array(means, "means", ndim=1)
        variances = as_float_array(variances, "variances", shape=means.shape)
        return cls(weights, means[:, None], variances[:, None, None])

    def copy(self):
        return MoG(self.weights.copy(), self.means.copy(), self.covs.copy())

    # ----------------------------------------------------------------- density
    def _x(self, x):
        return as_float_array(x, "x", shape=(None, self.dim))

    def component_log_densities(self, x):
        """log w_k + log N(x_n; mu_k, Sigma_k) for every point and component: the terms of (D.1).

        Computed in log space, so points far from every component keep finite log
        densities (about -d^2 / 2 at Mahalanobis distance d); a point so far away that
        d^2 overflows float64 (|x| beyond ~1e154 for unit covariances), whose log density
        is then below the float64 range, raises ValueError.

        Parameters
        ----------
        x : ndarray of shape (N, D)

        Returns
        -------
        ndarray of shape (N, K)
        """
        x = self._x(x)
        chol = _cholesky(self.covs)
        with np.errstate(over="ignore", invalid="ignore"):                      # overflow is refused below
            diff = x[None, :, :] - self.means[:, None, :]                      # (K, N, D)
            z = np.linalg.solve(chol, diff.transpose(0, 2, 1))                # (K, D, N) = L^-1 (x - mu)
            maha = np.sum(z * z, axis=1)                                      # (K, N)
        if not np.all(np.isfinite(maha)):
            k, n = (int(i[0]) for i in np.nonzero(~np.isfinite(maha)))
            raise ValueError(f"x: expected points whose squared Mahalanobis distance to every component fits in "
                             f"float64, received row {n} at distance beyond 1e308 from component {k} (its log "
                             f"density would be below -1e307, outside the float64 range)")
        log_det = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=1, axis2=2)), axis=1)
        with np.errstate(divide="ignore"):
            log_w = np.log(self.weights)
        return (log_w[:, None] - 0.5 * (self.dim * _LOG_2PI + log_det[:, None] + maha)).T

    def log_density(self, x):
        """log p(x) by log-sum-exp over components (D.1); x (N, D) -> (N,)."""
        return _softmax_rows(self.component_log_densities(x))[1]

    def responsibilities(self, x):
        """Posterior component probabilities r_nk (D.3, D.10) and log p(x_n).

        r_nk = w_k N(x_n; mu_k, Sigma_k) / p(x_n) as a softmax over k of the log terms: shifted
        by their largest, exponentiated and divided by their sum, so every row sums to one
        also far from every component. (exp(joint - log p) would not: at |x| = 1e16 the
        log terms are ~1e32, whose spacing of ~1e16 swallows log 2 in log p, and two equal
        components would get r = 1 each.)

        Returns
        -------
        r : ndarray of shape (N, K)
        log_p : ndarray of shape (N,)
        """
        return _softmax_rows(self.component_log_densities(x))

    def sample(self, n, rng):
        """n independent draws, shape (n, D): a component by its weight, then its Gaussian."""
        n = check_positive_int(n, "n")
        check_generator(rng)
        chol = _cholesky(self.covs)
        k = rng.choice(self.n_components, size=n, p=self.weights / self.weights.sum())
        z = rng.standard_normal(size=(n, self.dim))
        return self.means[k] + np.einsum("nij,nj->ni", chol[k], z)

    # --------------------------------------------------------------- save/load
    def save(self, path):
        """Write the mixture to ``path`` (.npz at exactly that name, no pickle)."""
        npzfile.save(path, FILE_KIND, FILE_VERSION, weights=self.weights, means=self.means, covs=self.covs)

    @classmethod
    def load(cls, path):
        """A mixture from a file written by ``save``; parameters round-trip exactly."""
        saved = npzfile.load(path, FILE_KIND, {FILE_VERSION}, required=("weights", "means", "covs"))
        return cls(saved["weights"], saved["means"], saved["covs"])

    def __repr__(self):
        return f"MoG(n_components={self.n_components}, dim={self.dim})"


# ------------------------------------------------------------------------ EM
@dataclass
class Statistics:
    """Averaged sufficient statistics of a mixture (D.4-D.6 / D.11-D.13 divided by the number of points).

    s0 : ndarray of shape (K,)        mean of r_nk
    s1 : ndarray of shape (K, D)      mean of r_nk x_n
    s2 : ndarray of shape (K, D, D)   mean of r_nk x_n x_n^T
    """

    s0: np.ndarray
    s1: np.ndarray
    s2: np.ndarray

    def mix(self, other, eta):
        """(1 - eta) self + eta other, the running average of D.14."""
        a = _check_stats(self, "self")
        b = _check_stats(other, "other", like=a)
        eta = check_in_range(eta, "eta", 0.0, 1.0)
        return Statistics((1 - eta) * a.s0 + eta * b.s0, (1 - eta) * a.s1 + eta * b.s1, (1 - eta) * a.s2 + eta * b.s2)

    @classmethod
    def of_model(cls, model):
        """The statistics a mixture would reproduce through D.7-D.9 (used to start online EM)."""
        _check_model(model)
        w, mu = model.weights, model.means
        return cls(w.copy(), w[:, None] * mu, w[:, None, None] * (model.covs + mu[:, :, None] * mu[:, None, :]))


def _check_stats(stats, name="stats", like=None):
    """``stats`` as finite float64 arrays of shapes (K,), (K, D), (K, D, D) with s0 >= 0 (K, D those of ``like``)."""
    if not isinstance(stats, Statistics):
        raise TypeError(f"{name}: expected a kd_ref.mog.Statistics, received {type(stats).__name__}")
    s1 = as_float_array(stats.s1, f"{name}.s1", ndim=2)
    K, D = s1.shape
    if like is not None and like.s1.shape != (K, D):
        raise ValueError(f"{name}: expected statistics of {like.s1.shape[0]} components in {like.s1.shape[1]} "
                         f"dimensions, received {K} in {D}")
    s0 = as_float_array(stats.s0, f"{name}.s0", shape=(K,))
    s2 = as_float_array(stats.s2, f"{name}.s2", shape=(K, D, D))
    if np.any(s0 < 0):
        raise ValueError(f"{name}.s0: expected non-negative responsibility totals, received minimum {s0.min()}")
    return Statistics(s0, s1, s2)


def _check_model(model, name="model"):
    if not isinstance(model, MoG):
        raise TypeError(f"{name}: expected a kd_ref.mog.MoG, received {type(model).__name__}")
    return model


def _data(x, name="x"):
    """A non-empty (N, D) batch for EM, whose second moments x x^T (D.6) fit in float64."""
    x = as_float_array(x, name)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty batch of shape (N, D) with N >= 1, received shape {x.shape}")
    big = float(np.max(np.abs(x)))
    if big > _MAX_EM_VALUE:
        raise ValueError(f"{name}: expected values of magnitude at most {_MAX_EM_VALUE:.0e} (EM's statistics hold "
                         f"x x^T and sums of it, D.6), received {big:.3g}")
    return x


def statistics(x, r):
    """Averaged statistics (D.4-D.6, or D.11-D.13 on a minibatch) from points and responsibilities.

    Parameters
    ----------
    x : ndarray of shape (N, D)
    r : ndarray of shape (N, K)

    Returns
    -------
    Statistics
    """
    x = _data(x)
    r = as_float_array(r, "r", shape=(x.shape[0], None))
    if np.any(r < 0):
        raise ValueError(f"r: expected non-negative responsibilities, received minimum {r.min()}")
    n = x.shape[0]
    return Statistics(r.sum(axis=0) / n, r.T @ x / n, np.einsum("nk,ni,nj->kij", r, x, x, optimize=True) / n)


def m_step(stats, reg=0.0, previous=None):
    """Weights, means and covariances from (averaged) statistics (D.7-D.9).

    w_k = s0_k / sum_j s0_j,  mu_k = s1_k / s0_k,  Sigma_k = s2_k / s0_k - mu_k mu_k^T + reg I.

    A component with (almost) no responsibility keeps its mean and covariance from
    ``previous`` (required then); its weight is ~0 either way.

    Returns
    -------
    MoG
    """
    reg = check_in_range(reg, "reg", 0.0, np.inf)
    stats = _check_stats(stats)
    s0, s1, s2 = stats.s0, stats.s1, stats.s2
    if previous is not None and (not isinstance(previous, MoG) or previous.means.shape != s1.shape):
        raise ValueError(f"previous: expected None or a MoG of {s1.shape[0]} components in {s1.shape[1]} "
                         f"dimensions, received {previous!r}")
    total = float(s0.sum())
    if not total > 0:
        raise ValueError(f"stats: expected a positive total responsibility, received {total}")
    weights = s0 / total
    starved = s0 <= _STARVED * total
    safe = np.where(starved, 1.0, s0)
    means = s1 / safe[:, None]
    covs = s2 / safe[:, None, None] - means[:, :, None] * means[:, None, :]
    covs = 0.5 * (covs + covs.transpose(0, 2, 1)) + reg * np.eye(s1.shape[1])
    if np.any(starved):
        if previous is None:
            raise ValueError(f"previous: expected a MoG to keep components {np.flatnonzero(starved).tolist()}, "
                             "which have no responsibility in stats, received None")
        means[starved], covs[starved] = previous.means[starved], previous.covs[starved]
    return MoG(weights, means, covs)


def em_step(model, x, reg=0.0):
    """One batch EM iteration (D.3-D.9).

    Returns
    -------
    new_model : MoG
    avg_log_likelihood : float
        Average log-likelihood of ``x`` under the *input* model (D.2).
    """
    _check_model(model)
    x = _data(x)
    reg = check_in_range(reg, "reg", 0.0, np.inf)
    r, log_p = model.responsibilities(x)
    return m_step(statistics(x, r), reg, previous=model), float(np.mean(log_p))


@dataclass
class EMResult:
    """Outcome of :func:`fit_em`.

    model : MoG                  best mixture over the restarts
    log_likelihood : float       its average log-likelihood on the data
    history : ndarray            average log-likelihood before every iteration of the best restart
    n_iter : int                 iterations of the best restart
    converged : bool             whether the best restart met the tolerance within max_iter
    restarts : ndarray           final average log-likelihood of every restart (-inf: failed)
    """

    model: MoG
    log_likelihood: float
    history: np.ndarray
    n_iter: int
    converged: bool
    restarts: np.ndarray = field(default_factory=lambda: np.empty(0))


def initial_model(x, n_components, rng, reg=0.0):
    """A starting mixture: means at distinct random data points, every covariance the data's, equal weights."""
    x = _data(x)
    n_components = check_positive_int(n_components, "n_components")
    if n_components > x.shape[0]:
        raise ValueError(f"n_components: expected at most the number of points {x.shape[0]}, received {n_components}")
    check_generator(rng)
    reg = check_in_range(reg, "reg", 0.0, np.inf)
    D = x.shape[1]
    cov = np.atleast_2d(np.cov(x, rowvar=False, bias=True)) + max(reg, 1e-9) * np.eye(D)
    idx = rng.choice(x.shape[0], size=n_components, replace=False)
    return MoG(np.full(n_components, 1.0 / n_components), x[idx], np.repeat(cov[None], n_components, axis=0))


def fit_em(x, n_components, rng, *, n_restarts=5, max_iter=1000, tol=1e-9, reg=1e-6, init=None, progress=False):
    """Maximum-likelihood mixture by batch EM (D.3-D.9), best of several restarts.

    Each restart runs until the average log-likelihood rises by less than ``tol``
    in one iteration (or ``max_iter`` iterations).

    Parameters
    ----------
    x : ndarray of shape (N, D)
    n_components : int
    rng : numpy.random.Generator
        Chooses the starting means.
    n_restarts : int
    tol : float
        Convergence threshold on the change of the average log-likelihood (nats).
    reg : float
        Added to every covariance's diagonal in D.9 (keeps components from
        collapsing onto single points; 0 gives plain maximum likelihood).
    init : MoG, optional
        Starting mixture of the first restart.

    Returns
    -------
    EMResult

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(-3, 1, size=(500, 1)), rng.normal(3, 1, size=(500, 1))])
    >>> result = fit_em(x, 2, np.random.default_rng(1))
    >>> result.converged, np.sort(result.model.means.ravel()).round(1).tolist()
    (True, [-3.0, 2.9])
    """
    x = _data(x)
    check_generator(rng)
    n_restarts = check_positive_int(n_restarts, "n_restarts")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_in_range(tol, "tol", 0.0, np.inf)
    reg = check_in_range(reg, "reg", 0.0, np.inf)
    progress = check_bool(progress, "progress")
    if init is not None:
        _check_model(init, "init")
    n_components = check_positive_int(n_components, "n_components")
    if init is not None and (init.dim != x.shape[1] or init.n_components != n_components):
        raise ValueError(f"init: expected a mixture of {n_components} components in {x.shape[1]} dimensions, "
                         f"received {init}")
    best, finals = None, np.full(n_restarts, -np.inf)
    bar = Progress(n_restarts, label="EM restarts", enabled=progress)
    for restart in range(n_restarts):
        model = init.copy() if (restart == 0 and init is not None) else initial_model(x, n_components, rng, reg)
        history, converged = [], False
        try:
            for _ in range(max_iter):
                model_new, ll = em_step(model, x, reg)
                history.append(ll)
                model = model_new
                if len(history) > 1 and history[-1] - history[-2] < tol:
                    converged = True
                    break
            final = float(np.mean(model.log_density(x)))
        except ValueError:  # a component collapsed (only possible with reg = 0): this restart failed
            bar.update(restart + 1)
            continue
        finals[restart] = final
        if best is None or final > best.log_likelihood:
            best = EMResult(model, final, np.array(history), len(history), converged)
        bar.update(restart + 1)
    bar.close()
    if best is None:
        raise ValueError(f"reg: every one of the {n_restarts} EM restarts met a singular covariance; expected "
                         f"reg > 0 for this data, received reg={reg}")
    best.restarts = finals
    return best


class OnlineEM:
    """Online EM for a mixture of Gaussians (Cappe and Moulines, 2009; D.10-D.14).

    Parameters
    ----------
    model : MoG
        Starting mixture (copied). The running statistics start as the ones it
        implies, so the first step with eta_0 = 1 uses the first minibatch alone.
    schedule : callable t -> eta_t, or float
        Step sizes, each in [0, 1]: e.g. ``kd_ref.optim.LinearDecay(1.0, n_steps)``
        or ``kd_ref.optim.PowerDecay(t0, kappa)`` (D.15-D.16).
    reg : float
        Added to every covariance's diagonal in D.9.

    Examples
    --------
    >>> import numpy as np
    >>> from kd_ref.optim import LinearDecay
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(-3, 1, size=(500, 1)), rng.normal(3, 1, size=(500, 1))])
    >>> em = OnlineEM(MoG([0.5, 0.5], [[-1.0], [1.0]], [[[1.0]], [[1.0]]]), LinearDecay(1.0, 200))
    >>> for _ in range(200):
    ...     _ = em.step(x[rng.integers(0, 1000, size=20)])   # returns the minibatch log-likelihood
    >>> np.sort(em.model.means.ravel()).round(1).tolist()
    [-3.0, 2.9]
    """

    def __init__(self, model, schedule, reg=1e-6):
        _check_model(model)
        if isinstance(schedule, numbers.Real) and not isinstance(schedule, (bool, np.bool_)):
            value = check_in_range(schedule, "schedule", 0.0, 1.0)
            schedule = lambda t: value  # noqa: E731  (a constant step size)
        if not callable(schedule):
            raise TypeError(f"schedule: expected a callable t -> step size in [0, 1] or a number, received {schedule!r}")
        self.schedule = schedule
        self.reg = check_in_range(reg, "reg", 0.0, np.inf)
        self.model = model.copy()
        self.stats = Statistics.of_model(self.model)
        self.t = 0

    def step(self, x):
        """One online EM update from a minibatch (D.10-D.14).

        Parameters
        ----------
        x : ndarray of shape (B, D), B >= 1

        Returns
        -------
        float
            Average log-likelihood of the minibatch under the mixture *before* the update.
        """
        x = _data(x)
        if x.shape[1] != self.model.dim:
            raise ValueError(f"x: expected points of dimension {self.model.dim}, received shape {x.shape}")
        eta = check_in_range(self.schedule(self.t), f"step size schedule({self.t})", 0.0, 1.0)
        r, log_p = self.model.responsibilities(x)                      # D.10
        stats = self.stats.mix(statistics(x, r), eta)                  # D.11-D.14
        self.model = m_step(stats, self.reg, previous=self.model)     # D.7-D.9
        self.stats = stats
        self.t += 1
        return float(np.mean(log_p))
