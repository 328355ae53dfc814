"""Output functions E(y) of a network's output y, with dE/dy and R{dE/dy} (B.40-B.47).

Each is built with its target ``t`` (same shape as the batch of outputs, (N, C))
and gives

    value(y)         E, summed over the rows of the batch
    grad(y)          dE/dy, shape (N, C)                        (seed of backprop, B.8)
    r_grad(y, R_y)   R{dE/dy} = (d^2E/dy^2) R_y, shape (N, C)   (seed of R{backprop}, B.15)
    hess(y)          d^2E/dy dy^T per row, shape (N, C, C)       (seed of the curvature backprop, S1.12)

Signs follow the thesis: the two cross entropies are log-likelihoods (larger is
better; an optimiser minimises their negative), the square error carries a 1/2.

Fused forms. A log of a logistic, probit or softmax output loses everything once
the output rounds to 0 or 1 (sigma(40) is 1.0 in float64), so the route through
y above is exact only away from saturation. ``fused(f)`` therefore offers, for a
last nonlinearity f, the same E as a function of the pre-activation a = a_L,

    value(a)         E(f(a))
    grad(a)          dE/da = J_f^T dE/dy                         (B.8 seeded at a_L)
    r_grad(a, R_a)   R{dE/da} = (d^2E/da^2) R_a                  (B.15 seeded at a_L)
    hess(a)          d^2E/da da^T per row                        (S1.12 seeded at a_L)

written from log-space forms (log-softmax, log sigma(a) = -softplus(-a),
log Phi(a) with the Mills ratio). For every finite a they are exact to float64
precision: within a few roundings of the true values at the given a, except that
the softmax's max-shift a_j - a_m (B.36) is itself rounded once, which exp
amplifies to |a_j - a_m| eps relative (the same sensitivity any float64 a_L,
itself the rounded result of W x + b, brings in). The one exception is a value
outside the float64 range: log Phi(a) ~ -a^2 / 2 is -inf for a < -1.9e154.
``fused`` is None when the pair has no log to protect. ``MLP.grad``, ``MLP.hvp`` and
``MLP.jacobian`` use it whenever it exists; the route through y stays as the
textbook reference, and the tests hold the two together at moderate a.
"""
import numpy as np
from scipy import special

from ._validation import as_float_array
from .nonlinearities import EPS_HALF, SymmetricCDF, softmax_parts


class OutputFunction:
    """Common target handling; subclasses define value, grad and r_grad (and may override fused)."""

    def __init__(self, t):
        self.t = as_float_array(t, "t", ndim=2)

    def _check(self, y):
        if y.shape != self.t.shape:
            raise ValueError(f"y: expected the target's shape {self.t.shape}, received shape {y.shape}")
        return y

    def fused(self, f):
        """This E as a function of the last pre-activation for the last nonlinearity ``f``,
        or None when no fused form exists (see the module notes)."""
        return None


class SquareError(OutputFunction):
    """E = 1/2 sum_n sum_i (y_ni - t_ni)^2; dE/dy = y - t; R{dE/dy} = R_y (B.40-B.41).

    No fused form: there is no log, and f'(a) (y - t) is as exact as f' and y are.
    """

    def value(self, y):
        return 0.5 * float(np.sum((self._check(y) - self.t) ** 2))

    def grad(self, y):
        return self._check(y) - self.t

    def r_grad(self, y, R_y):
        return R_y.copy()

    def hess(self, y):
        """d^2E/dy dy^T per row: the identity, shape (N, C, C) (S1.12)."""
        return np.broadcast_to(np.eye(self.t.shape[1]), self._check(y).shape + y.shape[-1:]).copy()


class CrossEntropy(OutputFunction):
    """E = sum_n sum_i t_ni log y_ni; dE/dy = t / y; R{dE/dy} = -t R_y / y^2 (B.42-B.43).

    y must be positive. On a softmax output ``fused`` gives E = sum t log softmax(a)
    (:class:`SoftmaxCrossEntropy`); on a logistic or probit output, where each y_i
    is a separate probability, E = sum t log f(a) (:class:`CDFCrossEntropy`).
    """

    def value(self, y):
        y = self._check(y)
        # 0 log 0 = 0: targets that are exactly zero contribute nothing
        return float(np.sum(np.where(self.t == 0, 0.0, self.t * np.log(y))))

    def grad(self, y):
        return self.t / self._check(y)

    def r_grad(self, y, R_y):
        # divide twice rather than by y^2: finite even when y is tiny
        return -self.t * (R_y / y) / y

    def hess(self, y):
        """d^2E/dy dy^T per row: -diag(t / y^2), shape (N, C, C) (S1.12)."""
        y = self._check(y)
        return _diagonal_rows(-self.t / y / y)

    def fused(self, f):
        if f.name == "softmax":
            return SoftmaxCrossEntropy(self.t)
        if isinstance(f, SymmetricCDF):
            return CDFCrossEntropy(self.t, np.zeros_like(self.t), f)
        return None


class BinaryCrossEntropy(OutputFunction):
    """E = sum t log y + (1 - t) log(1 - y) over all entries (B.44-B.45).

    dE/dy = t / y - (1 - t) / (1 - y);  R{dE/dy} = -(t / y^2 + (1 - t) / (1 - y)^2) R_y.
    y must lie in (0, 1]; it is clipped at 1 - eps/2 here so that log(1 - y) stays
    finite, which makes this route through y inexact once 1 - y rounds (y > 1 - 1e-8,
    say). On a logistic or probit output ``fused`` (:class:`CDFCrossEntropy`) takes
    E and its derivatives from the pre-activation instead, exact at any saturation;
    on a softmax or log-softmax output it raises ValueError (use CrossEntropy).
    """

    def value(self, y):
        y = np.minimum(self._check(y), 1.0 - EPS_HALF)
        t = self.t
        return float(np.sum(np.where(t == 0, 0.0, t * np.log(y)) + np.where(t == 1, 0.0, (1 - t) * np.log1p(-y))))

    def grad(self, y):
        y = np.minimum(self._check(y), 1.0 - EPS_HALF)
        return self.t / y - (1 - self.t) / (1 - y)

    def r_grad(self, y, R_y):
        y = np.minimum(y, 1.0 - EPS_HALF)
        return -(self.t * (R_y / y) / y + (1 - self.t) * (R_y / (1 - y)) / (1 - y))

    def hess(self, y):
        """d^2E/dy dy^T per row: -diag(t / y^2 + (1 - t) / (1 - y)^2), shape (N, C, C) (S1.12)."""
        y = np.minimum(self._check(y), 1.0 - EPS_HALF)
        return _diagonal_rows(-(self.t / y / y + (1 - self.t) / (1 - y) / (1 - y)))

    def fused(self, f):
        if isinstance(f, SymmetricCDF):
            return CDFCrossEntropy(self.t, 1.0 - self.t, f)
        if f.name in ("softmax", "log_softmax"):
            # The outputs of a softmax are one distribution, not separate Bernoulli
            # probabilities, and log(1 - p_i) there has no exact seed at y (its R-seed
            # overflows once p_i < 1e-154): refused rather than computed wrongly.
            raise ValueError(f"output: binary cross entropy expected separate probabilities per output (a logistic "
                             f"or probit output layer), received a {f.name} output layer; use CrossEntropy for a softmax")
        return None


class DotProduct(OutputFunction):
    """E = sum_n t_n . y_n; dE/dy = t; R{dE/dy} = 0 (B.46-B.47).

    With a log-softmax output layer this is the cross entropy sum t log softmax(a),
    and ``fused`` returns that (:class:`SoftmaxCrossEntropy`): the textbook
    log-softmax products take 1 - p_m from a p_m rounded to 1.
    """

    def value(self, y):
        return float(np.sum(self.t * self._check(y)))

    def grad(self, y):
        self._check(y)
        return self.t.copy()

    def r_grad(self, y, R_y):
        return np.zeros_like(R_y)

    def hess(self, y):
        """d^2E/dy dy^T per row: zero, shape (N, C, C) (S1.12)."""
        return np.zeros(self._check(y).shape + y.shape[-1:])

    def fused(self, f):
        return SoftmaxCrossEntropy(self.t) if f.name == "log_softmax" else None


# ------------------------------------------------------------------ fused forms
def _weighted_sum(w, log_terms):
    """sum w * log_terms with 0 * log 0 = 0 (a log term overflows to -inf only for |a| > 1e154)."""
    return float(np.sum(np.multiply(w, log_terms, out=np.zeros_like(log_terms), where=w != 0)))


class SoftmaxCrossEntropy:
    """E = sum_n sum_i t_ni log p_ni with p = softmax(a), from the pre-activation a (N, C).

    B.42-B.43 on B.33-B.36, equal to B.46-B.47 on B.37-B.39. With T_n = sum_i t_ni,

        dE/da    = t - T p                                   (B.43 through B.35)
        R{dE/da} = -T R{p},   R{p} = p * (R_a - p . R_a)      (B.34)

    Exact for every finite a (logit gaps of 1e4 included; see the module notes for
    the rounding of the max-shift s = a - a_m): log p = s - log1p(rest)
    and 1 - p_m = rest / (1 + rest) come from :func:`softmax_parts`, the top entry
    of dE/da is T (1 - p_m) - sum_{j != m} t_j rather than t_m - T p_m, and R_a is
    measured from its top entry, R_a - R_a[m], before the product with p, so no
    rounded p_m is ever subtracted from 1.
    """

    def __init__(self, t):
        self.t = t

    def _parts(self, a):
        if a.shape != self.t.shape:
            raise ValueError(f"a: expected the target's shape {self.t.shape}, received shape {a.shape}")
        top, s, rest = softmax_parts(a)
        return top, s, rest, np.exp(s) / (1.0 + rest)                 # p (B.33, B.36)

    def value(self, a):
        _, s, rest, _ = self._parts(a)
        log_p = s - np.log1p(rest)                                    # B.37, B.39
        return _weighted_sum(self.t, log_p)

    def grad(self, a):
        top, _, rest, p = self._parts(a)
        return self._grad(top, rest, p)

    def _grad(self, top, rest, p):
        T = np.sum(self.t, axis=1, keepdims=True)
        t_rest = np.sum(self.t, axis=1, keepdims=True, where=~top)
        return np.where(top, T * (rest / (1.0 + rest)) - t_rest, self.t - T * p)

    def value_and_grad(self, a):
        """``(value(a), grad(a))`` from one max-shifted softmax of a: the same numbers, half the work."""
        top, s, rest, p = self._parts(a)
        return _weighted_sum(self.t, s - np.log1p(rest)), self._grad(top, rest, p)

    def r_grad(self, a, R_a):
        top, _, _, p = self._parts(a)
        T = np.sum(self.t, axis=1, keepdims=True)
        d = R_a - R_a[top][:, None]                                   # R_a - R_a[m]: p . d skips p_m
        R_p = p * (d - np.sum(p * d, axis=1, keepdims=True))          # B.34
        return -T * R_p

    def hess(self, a):
        """d^2E/da da^T per row: -T (diag p - p p^T), shape (N, C, C) (S1.12)."""
        top, _, rest, p = self._parts(a)
        T = np.sum(self.t, axis=1)[:, None, None]
        out = p[:, :, None] * p[:, None, :]
        idx = np.arange(p.shape[1])
        # diagonal p_i (1 - p_i), with 1 - p_m = rest / (1 + rest) at the top entry (no rounded p_m subtracted)
        one_minus = np.where(top, rest / (1.0 + rest), 1.0 - p)
        out[:, idx, idx] = -p * one_minus
        return T * out


class CDFCrossEntropy:
    """E = sum t log f(a) + u log f(-a) for a logistic or probit f, from the pre-activation a (N, C).

    Since 1 - f(a) = f(-a), u = 1 - t is the binary cross entropy (B.44-B.45) and
    u = 0 the cross entropy (B.42-B.43) on this output. With l(a) = log f(a):

        dE/da    = t l'(a) - u l'(-a)
        R{dE/da} = (t l''(a) + u l''(-a)) R_a

    l, l' and l'' are the nonlinearity's ``log_f``, ``d_log_f`` and ``d2_log_f``
    (B.27-B.32 in log space), exact for every finite a (pre-activations of +-1e3
    included).
    """

    def __init__(self, t, u, f):
        self.t, self.u, self.f = t, u, f

    def _check(self, a):
        if a.shape != self.t.shape:
            raise ValueError(f"a: expected the target's shape {self.t.shape}, received shape {a.shape}")
        return a

    def value(self, a):
        a = self._check(a)
        return _weighted_sum(self.t, self.f.log_f(a)) + _weighted_sum(self.u, self.f.log_f(-a))

    def grad(self, a):
        a = self._check(a)
        return self.t * self.f.d_log_f(a) - self.u * self.f.d_log_f(-a)

    def r_grad(self, a, R_a):
        a = self._check(a)
        return (self.t * self.f.d2_log_f(a) + self.u * self.f.d2_log_f(-a)) * R_a

    def hess(self, a):
        """d^2E/da da^T per row: diag(t l''(a) + u l''(-a)), shape (N, C, C) (S1.12)."""
        a = self._check(a)
        return _diagonal_rows(self.t * self.f.d2_log_f(a) + self.u * self.f.d2_log_f(-a))


def _diagonal_rows(d):
    """The (N, C, C) stack of diag(d_n) for the rows d_n of d (N, C)."""
    out = np.zeros(d.shape + d.shape[-1:])
    idx = np.arange(d.shape[1])
    out[:, idx, idx] = d
    return out


# ------------------------------------------------------- output functions of GPED (S3)
def hess_from_r_grad(r_grad, y):
    """d^2E/dy dy^T per row from R{dE/dy} along each unit vector e_j: shape (N, C, C) (S1.12).

    C R-products of cost O(N C) each; the GPED heads have C <= 11 outputs, so this is cheap and
    keeps the Hessian identical to the R-form the HVPs use.
    """
    cols = []
    for j in range(y.shape[1]):
        e_j = np.zeros_like(y)
        e_j[:, j] = 1.0
        cols.append(r_grad(y, e_j))
    return np.stack(cols, axis=2)


class AbsoluteError(OutputFunction):
    """E = sum_n sum_i |y_ni - t_ni|, a *minimised* loss like SquareError (SPEC_seeds 0.2; the L1 / MAE of S3.10).

    dE/dy = sign(y - t), 0 at a tie (a subgradient); R{dE/dy} = 0 and the Hessian is 0 away
    from the kinks y = t, where E is not differentiable (check derivatives away from them).
    """

    def value(self, y):
        return float(np.sum(np.abs(self._check(y) - self.t)))

    def grad(self, y):
        return np.sign(self._check(y) - self.t)

    def r_grad(self, y, R_y):
        return np.zeros_like(R_y)

    def hess(self, y):
        """Zero, shape (N, C, C) (S1.12), away from the kinks."""
        return np.zeros(self._check(y).shape + y.shape[-1:])


class DirichletLogLikelihood(OutputFunction):
    """E = sum_n log Dir(pi_n; alpha_n) with alpha = exp(y): a *log-likelihood* (maximised; EnD^2's loss is -E) (S3.13).

    y (N, C) are log-concentrations z (the student's last layer is linear), t = pi (N, C) the
    observed probability vectors, each entry > 0 (EnD^2 smooths them first, see
    :class:`kd_ref.distill.gped.DirichletLoss`). With alpha_0 = sum_k alpha_k, psi the digamma and
    psi' the trigamma function,

        E                = ln Gamma(alpha_0) - sum_k ln Gamma(alpha_k) + sum_k (alpha_k - 1) ln pi_k
        dE/dz_k          = -alpha_k (psi(alpha_k) - psi(alpha_0) - ln pi_k)
        d^2E/dz_k dz_j   = -delta_kj [alpha_k (psi(alpha_k) - psi(alpha_0) - ln pi_k) + alpha_k^2 psi'(alpha_k)]
                           + alpha_k alpha_j psi'(alpha_0)

    (S3.13 with the sign of a log-likelihood). scipy's gammaln, digamma and polygamma keep every
    term finite from alpha ~ 1e-300 to alpha ~ 1e300.
    """

    def __init__(self, t):
        super().__init__(t)
        if np.any(self.t <= 0):
            raise ValueError(f"t: expected probabilities > 0 (smooth them first, S3.13), received a minimum of "
                             f"{float(self.t.min())!r}")
        self.log_t = np.log(self.t)

    def _parts(self, y):
        alpha = np.exp(self._check(y))
        alpha_0 = np.sum(alpha, axis=1, keepdims=True)
        return alpha, alpha_0

    def value(self, y):
        alpha, alpha_0 = self._parts(y)
        return float(np.sum(special.gammaln(alpha_0)) - np.sum(special.gammaln(alpha))
                     + np.sum((alpha - 1.0) * self.log_t))

    def grad(self, y):
        alpha, alpha_0 = self._parts(y)
        return -alpha * (special.digamma(alpha) - special.digamma(alpha_0) - self.log_t)

    def r_grad(self, y, R_y):
        alpha, alpha_0 = self._parts(y)
        diag = alpha * (special.digamma(alpha) - special.digamma(alpha_0) - self.log_t) \
            + alpha**2 * special.polygamma(1, alpha)
        return -diag * R_y + alpha * special.polygamma(1, alpha_0) * np.sum(alpha * R_y, axis=1, keepdims=True)

    def hess(self, y):
        """d^2E/dz dz^T per row, shape (N, C, C) (S1.12)."""
        return hess_from_r_grad(self.r_grad, self._check(y))


class PredictiveEntropyOutput:
    """The split output of the GPED student (S3.9): C class logits and one log-entropy, E *minimised*.

    y (N, C + 1): the student's last layer is linear; y[:, :C] are logits of f(. | x) = softmax, and
    y[:, C] = log h(x), so the predicted entropy h = exp(y[:, C]) is >= 0. With ``predictive`` an
    output function of the C logits that is minimised (a loss of S3.10 built with its targets, e.g.
    :class:`kd_ref.distill.gped.ProbabilityLoss`) and ``h`` the entropy targets,

        E = predictive(y[:, :C]) + weight sum_n |exp(y_nC) - h_n|                      (S3.10: l_pred + l_H)
        dE/dy_nC = weight sign(exp(y_nC) - h_n) exp(y_nC),   R{.} = (dE/dy_nC) R{y_nC} (away from the kink)

    Either part may be None: predictive only (the entropy column gets no gradient) or entropy only
    (then ``n_classes`` = C must be given); both parts together are GPED Experiment 4's joint loss.
    ``t`` is the (N, C + 1) array [predictive targets, h] and ``rows(r)`` the output restricted to
    batch rows r, which is all :mod:`kd_ref.curvature` needs. Not a subclass of OutputFunction: it
    has two targets.
    """

    def __init__(self, predictive, h, weight=1.0, n_classes=None):
        if predictive is None and h is None:
            raise ValueError("predictive, h: expected at least one of the two parts, received None for both")
        if predictive is not None and not all(callable(getattr(predictive, m, None)) for m in ("value", "grad", "r_grad")):
            raise TypeError(f"predictive: expected an output function of the logits (value, grad, r_grad), received "
                            f"{type(predictive).__name__}")
        self.predictive = predictive
        self.h = None if h is None else as_float_array(h, "h", ndim=1)
        self.weight = float(weight)
        if not (np.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"weight: expected a finite value >= 0, received {weight!r}")
        n_pred = None if predictive is None else predictive.t.shape
        if n_pred is not None and self.h is not None and self.h.shape[0] != n_pred[0]:
            raise ValueError(f"h: expected {n_pred[0]} entropy targets (one per row of the predictive targets), "
                             f"received shape {self.h.shape}")
        if predictive is None and (isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1):
            raise ValueError(f"n_classes: expected the number of logits C >= 1 for an entropy-only output, received "
                             f"{n_classes!r}")
        self.n_classes = n_pred[1] if n_pred is not None else n_classes

    @property
    def t(self):
        """The targets as one (N, C + 1) array [predictive targets, h] (zeros for a part that is None)."""
        n = self.h.shape[0] if self.predictive is None else self.predictive.t.shape[0]
        out = np.zeros((n, self.n_classes + 1))
        if self.predictive is not None:
            out[:, :-1] = self.predictive.t
        if self.h is not None:
            out[:, -1] = self.h
        return out

    def rows(self, rows):
        """The same output restricted to the batch rows ``rows`` (a slice or index array)."""
        p = self.predictive
        pred = None if p is None else p.rows(rows) if callable(getattr(p, "rows", None)) else type(p)(p.t[rows])
        return PredictiveEntropyOutput(pred, None if self.h is None else self.h[rows], self.weight, self.n_classes)

    def _split(self, y):
        y = as_float_array(y, "y", ndim=2)
        n = self.h.shape[0] if self.predictive is None else self.predictive.t.shape[0]
        if y.shape != (n, self.n_classes + 1):
            raise ValueError(f"y: expected shape ({n}, {self.n_classes} + 1) (C logits and one log-entropy), received "
                             f"{y.shape}")
        return y[:, :-1], y[:, -1]

    def value(self, y):
        logits, log_h = self._split(y)
        out = 0.0 if self.predictive is None else self.predictive.value(logits)
        if self.h is not None:
            out += self.weight * float(np.sum(np.abs(np.exp(log_h) - self.h)))
        return out

    def _d_log_h(self, log_h):
        h_hat = np.exp(log_h)
        return self.weight * np.sign(h_hat - self.h) * h_hat

    def grad(self, y):
        logits, log_h = self._split(y)
        out = np.zeros_like(y)
        if self.predictive is not None:
            out[:, :-1] = self.predictive.grad(logits)
        if self.h is not None:
            out[:, -1] = self._d_log_h(log_h)
        return out

    def r_grad(self, y, R_y):
        logits, log_h = self._split(y)
        R_y = as_float_array(R_y, "R_y", shape=y.shape)
        out = np.zeros_like(y)
        if self.predictive is not None:
            out[:, :-1] = self.predictive.r_grad(logits, R_y[:, :-1])
        if self.h is not None:
            out[:, -1] = self._d_log_h(log_h) * R_y[:, -1]
        return out

    def hess(self, y):
        """d^2E/dy dy^T per row, shape (N, C + 1, C + 1) (S1.12), away from the kink exp(y_C) = h."""
        return hess_from_r_grad(self.r_grad, as_float_array(y, "y", ndim=2))

    def fused(self, f):
        """No fused form: the student's last layer is linear, so y already is the pre-activation."""
        return None
