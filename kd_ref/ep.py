"""Expectation propagation for Bayesian logistic regression (the baseline of section 3.3.4).

Model (3.41-3.42): p(t = 1 | x, w) = sigma(w^T x), no bias, prior w ~ N(0, prior_var I).
Writing z_n = (2 t_n - 1) x_n, every likelihood factor is sigma(z_n^T w), a
function of the scalar s_n = z_n^T w only. EP (3.46; Minka, 2001) replaces each
factor by a Gaussian "site" in s_n,

    t~_n(w) = exp(-tau_n s_n^2 / 2 + nu_n s_n),

so the approximate posterior q(w) = N(mu, Sigma) has

    Sigma^-1 = I / prior_var + sum_n tau_n z_n z_n^T,   mu = Sigma sum_n nu_n z_n.

A site is refitted by moment matching: remove it from q (the "cavity", a 1-D
Gaussian N(s; m, v) along z_n), multiply by the true factor, and match the mean
and variance of that tilted 1-D distribution. The logistic-Gaussian integrals
this needs have no closed form; as in the thesis, MacKay's approximation (3.48)
is used inside EP, in its probit form sigma(s) ~ Phi(lambda s), lambda^2 = pi / 8,
under which the tilted normaliser and its derivatives are exact:

    Z = Phi(u),  u = lambda m / sqrt(1 + lambda^2 v)       (Phi(u) ~ sigma(kappa(v) m), 3.48)
    mean = m + v lambda r / sqrt(1 + lambda^2 v),          r = N(u) / Phi(u)
    var  = v - v^2 lambda^2 r (u + r) / (1 + lambda^2 v).

All sites are refitted together from the current q (parallel EP, one batch of
vectorised operations instead of a loop over examples), with damping.

Predictions (3.47) need the 1-D integral of sigma(a) against N(a; x^T mu, x^T Sigma x);
``predict_proba`` evaluates it by quadrature: Gauss-Hermite with the exactly
integrable Phi(lambda a) as a control variate for narrow Gaussians, and the
trapezoid rule against the logistic density (after integrating by parts) for broad
ones, against which sigma looks like a step.
"""
from dataclasses import dataclass

import numpy as np
from scipy import special

from ._validation import as_binary_array, as_float_array, check_in_range, check_positive_int

LAMBDA = np.sqrt(np.pi / 8.0)


def _mean_and_var(mean, var, var_name="var", positive=False):
    """Finite real arrays ``mean`` and ``var`` of one shape (a scalar broadcasts), var >= 0 (or > 0)."""
    mean = as_float_array(mean, "mean")
    var = as_float_array(var, var_name)
    try:
        shape = np.broadcast_shapes(mean.shape, var.shape)
    except ValueError:
        raise ValueError(f"{var_name}: expected the shape of mean {mean.shape} (or a scalar), received shape "
                         f"{var.shape}") from None
    if np.any(var <= 0) if positive else np.any(var < 0):
        raise ValueError(f"{var_name}: expected {'positive' if positive else 'non-negative'} variances, received "
                         f"minimum {var.min()}")
    return np.broadcast_to(mean, shape), np.broadcast_to(var, shape)


def mackay_integral(mean, var):
    """MacKay's approximation (3.48): int sigma(a) N(a; m, v) da ~ sigma(m / sqrt(1 + pi v / 8)).

    ``mean`` and ``var`` (>= 0) are finite real arrays of one shape, or scalars.
    """
    mean, var = _mean_and_var(mean, var)
    return special.expit(mean / np.sqrt(1.0 + LAMBDA**2 * var))


# trapezoid grid over the logistic density for broad Gaussians (see logistic_gaussian_integral)
_B_STEP = 0.25
_B_GRID = np.arange(-40.0, 40.0 + _B_STEP / 2, _B_STEP)
_B_WEIGHTS = _B_STEP * special.expit(_B_GRID) * special.expit(-_B_GRID)
_NARROW_VAR = 4.0


def logistic_gaussian_integral(mean, var, n_nodes=64):
    """int sigma(a) N(a; m, v) da by 1-D quadrature (3.47), accurate to ~1e-10 for any m and v >= 0.

    Two exact rewritings of the integral, each with the rule that suits it:

    * v <= 4 (sigma smooth on the Gaussian's scale): sigma(a) = Phi(lambda a) +
      [sigma(a) - Phi(lambda a)]; the probit part integrates to
      Phi(lambda m / sqrt(1 + lambda^2 v)) exactly and the small remainder by
      ``n_nodes``-point Gauss-Hermite quadrature;
    * v > 4 (sigma a near-step on that scale): integrating by parts,
      int sigma(a) N(a; m, v) da = int sigma'(b) Phi((m - b) / sqrt(v)) db, a smooth
      integrand against the logistic density, summed by the trapezoid rule with
      step 1/4 on [-40, 40] (geometric convergence for such analytic integrands;
      the tails beyond hold < 1e-17).

    Parameters
    ----------
    mean, var : ndarray of shape (M,)
        Mean and variance (>= 0) of the Gaussian over the activation a.

    Returns
    -------
    ndarray of shape (M,)
    """
    mean = np.atleast_1d(as_float_array(mean, "mean"))
    var = np.atleast_1d(as_float_array(var, "var", shape=mean.shape))
    if np.any(var < 0):
        raise ValueError(f"var: expected non-negative variances, received minimum {var.min()}")
    n_nodes = check_positive_int(n_nodes, "n_nodes")
    out = np.empty_like(mean)
    narrow = var <= _NARROW_VAR
    m, v = mean[narrow], var[narrow]
    nodes, weights = np.polynomial.hermite.hermgauss(n_nodes)
    a = m[:, None] + np.sqrt(2.0 * v)[:, None] * nodes[None, :]                # (M1, n_nodes)
    remainder = special.expit(a) - special.ndtr(LAMBDA * a)
    out[narrow] = special.ndtr(LAMBDA * m / np.sqrt(1.0 + LAMBDA**2 * v)) + remainder @ weights / np.sqrt(np.pi)
    m, v = mean[~narrow], var[~narrow]
    out[~narrow] = special.ndtr((m[:, None] - _B_GRID[None, :]) / np.sqrt(v)[:, None]) @ _B_WEIGHTS
    return np.clip(out, 0.0, 1.0)


# below u = -_TAIL the tilted moments come from the continued fraction of the Mills ratio
_TAIL = 4.0
_CF_TERMS = 60


def _mills_tail(s):
    """D_1, D_2, D_3 of Laplace's continued fraction for s >= 4: D_j = s + (j + 1) / D_{j+1}.

    With u = -s, r = N(u) / Phi(u) = s + 1 / D_1, so u + r = 1 / D_1 and
    1 - r (u + r) = (s + 4 / D_2 - 3 / D_3) / (D_1^2 D_2), all without cancellation
    (60 terms reach float64 precision for s >= 4).
    """
    d = s.copy()
    out = {}
    for j in range(_CF_TERMS - 1, 0, -1):
        d = s + (j + 1) / d
        if j <= 3:
            out[j] = d
    return out[1], out[2], out[3]


def tilted_moments(m, v):
    """Mean and variance of Phi(lambda s) N(s; m, v) / Z, and log Z (probit form of 3.48).

    With u, r and the scale of the module notes, mean = m + v lambda r / scale and
    var = v [1 / scale^2 + c (1 - r (u + r))], c = lambda^2 v / scale^2 (the notes' formula
    regrouped so that both terms are positive). r = sqrt(2 / pi) / erfcx(-u / sqrt 2) never
    divides by an underflowed Phi(u); for u < -4, where m and v lambda r / scale nearly
    cancel, u + r and 1 - r (u + r) come from the continued fraction of the Mills ratio
    (:func:`_mills_tail`) and the mean from m / scale^2 + v lambda (u + r) / scale. All
    three are accurate to a few ulps for every finite input whose log Z is representable.

    Parameters
    ----------
    m, v : ndarray of shape (N,)
        Cavity means and positive variances (finite; a scalar broadcasts).

    Returns
    -------
    mean, var, log_Z : ndarray of shape (N,)
    """
    m, v = _mean_and_var(m, v, "v", positive=True)
    mean, var, log_Z = _tilted_moments(np.atleast_1d(m), np.atleast_1d(v))
    if not np.all(np.isfinite(log_Z)):
        i = int(np.flatnonzero(~np.isfinite(log_Z))[0])
        raise ValueError(f"m: expected cavity means whose log Z fits in float64, received m = "
                         f"{np.atleast_1d(m)[i]:.3g} with v = {np.atleast_1d(v)[i]:.3g} (log Phi(u) below -1e308)")
    return mean, var, log_Z


def _tilted_moments(m, v):
    """:func:`tilted_moments` without the argument checks (EP calls it on its own cavities)."""
    scale = np.sqrt(1.0 + LAMBDA**2 * v)
    u = LAMBDA * m / scale
    log_Z = special.log_ndtr(u)
    with np.errstate(over="ignore"):                                 # erfcx(-u / sqrt 2) = inf for u > 26: r = 0
        r = np.sqrt(2.0 / np.pi) / special.erfcx(-u / np.sqrt(2.0))   # N(u) / Phi(u)
    u_plus_r = u + r
    one_minus_w = 1.0 - r * u_plus_r                                  # 1 - r (u + r), the variance ratio
    tail = u < -_TAIL
    if np.any(tail):
        s = -u[tail]
        d1, d2, d3 = _mills_tail(s)
        u_plus_r[tail] = 1.0 / d1
        one_minus_w[tail] = (s + 4.0 / d2 - 3.0 / d3) / d1 / d1 / d2
    c = LAMBDA**2 * v / scale**2
    mean = m / scale**2 + v * LAMBDA * u_plus_r / scale              # = m + v lambda r / scale
    var = v * (1.0 / scale**2 + c * one_minus_w)                     # = v - v^2 lambda^2 r (u + r) / scale^2
    return mean, var, log_Z


@dataclass
class EPPosterior:
    """Gaussian approximation N(mean, cov) of the posterior over w, with the EP sites.

    mean : ndarray of shape (D,)
    cov : ndarray of shape (D, D)
    tau, nu : ndarray of shape (N,)      site precisions and shifts along z_n
    n_iter : int                         parallel EP iterations run
    converged : bool
    """

    mean: np.ndarray
    cov: np.ndarray
    tau: np.ndarray
    nu: np.ndarray
    n_iter: int
    converged: bool

    def activation_moments(self, x):
        """Mean and variance of a = w^T x under q(w) (the Gaussian inside 3.47-3.48), rows x (M, D) -> two (M,)."""
        x = as_float_array(x, "x", shape=(None, self.mean.size))
        return x @ self.mean, np.einsum("md,de,me->m", x, self.cov, x)

    def predict_proba(self, x, n_nodes=64):
        """p(t = 1 | x) = int sigma(a) N(a; x^T mu, x^T Sigma x) da by quadrature (3.47); (M, D) -> (M,)."""
        m, v = self.activation_moments(x)
        return logistic_gaussian_integral(m, np.maximum(v, 0.0), n_nodes)

    def predict_proba_mackay(self, x):
        """The same prediction with MacKay's closed form (3.48) instead of quadrature."""
        m, v = self.activation_moments(x)
        return mackay_integral(m, np.maximum(v, 0.0))


def _posterior(z, tau, nu, prior_var):
    """Sigma and mu from the sites: Sigma^-1 = I / prior_var + Z^T diag(tau) Z, mu = Sigma Z^T nu."""
    precision = np.eye(z.shape[1]) / prior_var + z.T @ (tau[:, None] * z)
    chol = np.linalg.cholesky(precision)
    inv_chol = np.linalg.solve(chol, np.eye(z.shape[1]))
    cov = inv_chol.T @ inv_chol
    return cov @ (z.T @ nu), cov


def ep_logistic_regression(x, t, prior_var=100.0, *, damping=0.5, max_iter=500, tol=1e-10):
    """Gaussian posterior for Bayesian logistic regression by parallel EP (3.46).

    Parameters
    ----------
    x : ndarray of shape (N, D)
        Inputs.
    t : ndarray of shape (N,)
        Labels, 0 or 1.
    prior_var : float
        Variance of the isotropic Gaussian prior on w (3.42).
    damping : float in (0, 1]
        Fraction of the moment-matched site update applied each iteration
        (1: undamped).
    max_iter : int
    tol : float
        Stop when no site parameter changes by more than ``tol``.

    Returns
    -------
    EPPosterior

    Examples
    --------
    Without a bias, q(w) is symmetric about its mean's sign, so p(t=1|x) + p(t=1|-x) = 1:

    >>> import numpy as np
    >>> x = np.array([[-2.0, 1.0], [-1.0, -0.5], [1.5, 0.5], [2.0, -1.0]])
    >>> q = ep_logistic_regression(x, np.array([0, 0, 1, 1]))
    >>> q.converged
    True
    >>> p = q.predict_proba(np.array([[3.0, 0.0], [-3.0, 0.0]]))
    >>> bool(p[0] > 0.95), round(float(p.sum()), 10)
    (True, 1.0)
    """
    x = as_float_array(x, "x", ndim=2)
    if x.shape[0] == 0:
        raise ValueError(f"x: expected at least one data point, received shape {x.shape}")
    t = as_binary_array(t, "t", shape=(x.shape[0],))
    prior_var = check_in_range(prior_var, "prior_var", 0.0, np.inf, low_open=True)
    damping = check_in_range(damping, "damping", 0.0, 1.0, low_open=True)
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_in_range(tol, "tol", 0.0, np.inf)
    # an all-zero input contributes the constant factor sigma(0) = 1/2: its site stays flat (tau = nu = 0)
    informative = np.any(x != 0.0, axis=1)
    z = ((2.0 * t - 1.0)[:, None] * x)[informative]
    tau, nu = np.zeros(z.shape[0]), np.zeros(z.shape[0])
    mu, cov = _posterior(z, tau, nu, prior_var)
    converged = z.shape[0] == 0
    it = 0
    while not converged and it < max_iter:
        it += 1
        m = z @ mu                                             # marginal of s_n = z_n^T w under q
        v = np.einsum("nd,de,ne->n", z, cov, z)
        cav_prec = 1.0 / v - tau                               # remove site n: the cavity
        cav_v = 1.0 / cav_prec
        cav_m = cav_v * (m / v - nu)
        new_mean, new_var, _ = _tilted_moments(cav_m, cav_v)   # moment matching
        tau_new = 1.0 / new_var - cav_prec
        nu_new = new_mean / new_var - cav_m / cav_v
        tau_next = (1.0 - damping) * tau + damping * tau_new
        nu_next = (1.0 - damping) * nu + damping * nu_new
        change = max(float(np.max(np.abs(tau_next - tau))), float(np.max(np.abs(nu_next - nu))))
        tau, nu = tau_next, nu_next
        mu, cov = _posterior(z, tau, nu, prior_var)
        converged = change < tol
    tau_all, nu_all = np.zeros(x.shape[0]), np.zeros(x.shape[0])
    tau_all[informative], nu_all[informative] = tau, nu
    return EPPosterior(mu, cov, tau_all, nu_all, it, converged)
