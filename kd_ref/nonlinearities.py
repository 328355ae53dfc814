"""Layer nonlinearities with the four products backprop and R{backprop} need (B.22-B.39).

For a layer x = f(a) (rows are examples) every nonlinearity provides

    forward(a)                          x = f(a)
    backward(a, x, d_x)                 d_a   = J^T d_x                   (B.8, B.11)
    r_forward(a, x, R_a)                R_x   = J R_a                    (B.13, B.14)
    r_backward(a, x, d_x, R_a, R_d_x)   R_d_a = J^T R_d_x + R{J}^T d_x   (B.15, B.18)
    curvature(a, x, d_x)                sum_k (d_x)_k d^2x_k/da da^T, (N, D, D)   (S1.12)

where J = dx/da. For the elementwise ones J = diag(f'(a)) and R{J} = diag(f''(a) R_a),
so only f' and f'' are written out; softmax and log-softmax mix the units of a
row and get their own products. Nothing here forms a Jacobian matrix; ``curvature``
forms the (N, D, D) second-derivative term the exact Hessian diagonal needs.

The logistic and the probit are CDFs of symmetric densities, so 1 - f(a) = f(-a),
and they also give log f(a) with its first two derivatives in forms exact in both
tails (:class:`SymmetricCDF`); :func:`softmax_parts` does the same for a softmax
row. ``kd_ref.outputs`` builds the cross entropies on these outputs from them,
straight from the pre-activation a (B.42-B.45 composed with B.27-B.36).
"""
import numpy as np
from scipy import special

# Where to clip. Output-layer logs no longer go through x: kd_ref.outputs takes
# every cross entropy on a logistic, probit or softmax output from the
# pre-activation (the fused forms), so nothing here rounds x towards a log any
# more. Two bounds were used before; one stays:
# * no upper bound: a saturated unit returns exactly 1.0, the correctly rounded
#   value, rather than 1 - eps/2, which a hidden layer would pass on as a change
#   of one rounding in the next pre-activation;
# * a lower bound at the smallest normal float: entries below it (a < -708 for
#   the logistic, a < -37.5 for the probit, a logit gap > 708 for the softmax)
#   are raised to 2.2e-308, which moves no pre-activation of a following layer
#   by anything float64 resolves, while a log or a reciprocal taken of x by code
#   outside the fused forms (the textbook route of kd_ref.outputs, a mean of
#   logistic units in a linear output layer) stays finite. The one log that
#   needs 1 - x < 1 (binary cross entropy on the textbook route) clips at its use.
TINY = np.finfo(np.float64).tiny
EPS_HALF = np.finfo(np.float64).epsneg

SQRT_2 = np.sqrt(2.0)
INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
SQRT_PI_OVER_2 = np.sqrt(np.pi / 2.0)


# ------------------------------------------------------- primitives (NADE, RBM, log Z estimators)
def logistic(a, out=None):
    """sigma(a) = 1 / (1 + exp(-a)), into ``out`` (which may be ``a`` itself) (B.27).

    For a < -709 exp(-a) overflows to inf and sigma(a) correctly comes out 0.
    """
    out = np.empty(np.shape(a)) if out is None else out
    with np.errstate(over="ignore"):
        np.negative(a, out=out)
        np.exp(out, out=out)
    out += 1.0
    np.divide(1.0, out, out=out)
    return out


def softplus(a):
    """log(1 + exp(a)) = max(a, 0) + log1p(exp(-|a|)), finite for every finite a (= -log sigma(-a))."""
    out = np.abs(a)
    np.negative(out, out=out)
    np.exp(out, out=out)
    np.log1p(out, out=out)
    out += np.maximum(a, 0.0)
    return out


def logistic_slope(a, out=None):
    """sigma'(a) = sigma(a) sigma(-a) = -d^2/da^2 log sigma(a) (B.28), into ``out`` (may be ``a``).

    Computed as exp(-|a|) / (1 + exp(-|a|))^2: not as sigma(a) (1 - sigma(a)), whose
    1 - sigma(a) is 0 for a > 37, and tiny rather than 0 wherever sigma'(a) is.
    """
    out = np.empty(np.shape(a)) if out is None else out
    np.abs(a, out=out)
    np.negative(out, out=out)
    np.exp(out, out=out)
    out /= (1.0 + out) ** 2
    return out


class Elementwise:
    """x = f(a) applied to every unit; subclasses give f, f' and f''."""

    elementwise = True

    def curvature(self, a, x, d_x):
        """sum_k (d_x)_k d^2 x_k / da da^T = diag(f''(a) d_x) per row, shape (N, D, D) (S1.12).

        The curvature recursion of ``kd_ref.curvature`` uses ``d2`` directly for
        elementwise layers; this full form is the one shared with the vector layers.
        """
        out = np.zeros(a.shape + a.shape[-1:])
        idx = np.arange(a.shape[1])
        out[:, idx, idx] = self.d2(a, x) * d_x
        return out

    def backward(self, a, x, d_x):
        return self.d1(a, x) * d_x

    def r_forward(self, a, x, R_a):
        return self.d1(a, x) * R_a

    def r_backward(self, a, x, d_x, R_a, R_d_x):
        return self.d1(a, x) * R_d_x + self.d2(a, x) * R_a * d_x


class Linear(Elementwise):
    """f(a) = a; f' = 1, f'' = 0 (B.23-B.24)."""

    name = "linear"

    def forward(self, a):
        return a.copy()

    def d1(self, a, x):
        return np.ones_like(a)

    def d2(self, a, x):
        return np.zeros_like(a)

    def backward(self, a, x, d_x):
        return d_x

    def r_forward(self, a, x, R_a):
        return R_a

    def r_backward(self, a, x, d_x, R_a, R_d_x):
        return R_d_x


class ReLU(Elementwise):
    """f(a) = max(a, 0); f' = 1[a > 0], f'' = 0 (B.25-B.26)."""

    name = "relu"

    def forward(self, a):
        return np.maximum(a, 0.0)

    def d1(self, a, x):
        return (a > 0).astype(np.float64)

    def d2(self, a, x):
        return np.zeros_like(a)  # f'' = 0 away from the kink

    # multiplying by the boolean mask directly skips building a float copy of f'
    def backward(self, a, x, d_x):
        return d_x * (a > 0)

    def r_forward(self, a, x, R_a):
        return R_a * (a > 0)

    def r_backward(self, a, x, d_x, R_a, R_d_x):
        return R_d_x * (a > 0)  # f'' = 0 away from the kink


def gaussian_pdf(a):
    """N(a; 0, 1) = exp(-a^2 / 2) / sqrt(2 pi), to a few ulps for every a.

    a^2 is not rounded: a = hi + lo with hi holding 26 significant bits, so
    hi^2 / 2 is exact and exp(-a^2/2) = exp(-hi^2/2) exp(-(hi lo + lo^2/2)) leaves
    only a small argument to round. Plain exp(-0.5 * a * a) is off by about
    a^2/2 ulps (300 ulps at a = 25).
    """
    a = np.minimum(np.abs(a), 40.0)  # exp(-800) is 0 in float64 already; keeps a * SPLIT finite
    scaled = a * 134217729.0  # Veltkamp split, 2^27 + 1
    hi = scaled - (scaled - a)
    lo = a - hi
    return np.exp(-0.5 * hi * hi) * np.exp(-(hi * lo + 0.5 * lo * lo)) * INV_SQRT_2PI


def mills_ratio(x):
    """R(x) = (1 - Phi(x)) / N(x; 0, 1) = sqrt(pi/2) erfcx(x / sqrt 2), for x >= -37.

    Accurate in the upper tail, where it behaves like 1/x; it overflows for x < -37.7.
    """
    return SQRT_PI_OVER_2 * special.erfcx(x / SQRT_2)


class SymmetricCDF(Elementwise):
    """An elementwise f that is the CDF of a symmetric density, so 1 - f(a) = f(-a).

    Subclasses give log f(a) and its first two derivatives, written to stay exact
    for every finite a (in particular where f(a) rounds to 0 or 1); the binary
    cross entropy on such an output is t log f(a) + (1 - t) log f(-a).
    """


class Logistic(SymmetricCDF):
    """f(a) = sigma(a) = 1 / (1 + exp(-a)); f' = x(1 - x), f'' = x(1 - x)(1 - 2x) (B.27-B.29).

    In log space (every form exact in both tails):
    log sigma(a) = -softplus(-a), d/da log sigma(a) = sigma(-a),
    d^2/da^2 log sigma(a) = -sigma(a) sigma(-a).
    """

    name = "logistic"

    def forward(self, a):
        return np.maximum(special.expit(a), TINY)  # lower bound only: see TINY above

    def d1(self, a, x):
        return logistic_slope(a)    # not x (1 - x), which cancels when x is near 1

    def d2(self, a, x):
        # f'' = f' (1 - 2 x) and 1 - 2 sigma(a) = -tanh(a / 2), accurate in both tails
        return -self.d1(a, x) * np.tanh(a / 2.0)

    def log_f(self, a):
        return special.log_expit(a)                     # -softplus(-a)

    def d_log_f(self, a):
        return special.expit(-a)                        # sigma(-a), no 1 - sigma(a)

    def d2_log_f(self, a):
        return -logistic_slope(a)                       # -sigma(a) sigma(-a), never flushed to 0 by 1 - sigma


# The continued fraction a + lambda(a) = 1 / (x + 2 / (x + 3 / (x + ...))), x = -a,
# truncated after PROBIT_CF_TERMS levels, is used for x > PROBIT_CF_FROM (1 ulp there);
# below, the difference lambda - x loses at most about 20 ulps. Both figures were
# measured against a 50-digit reference (tests/test_outputs_extreme.py pins the result).
PROBIT_CF_FROM = 2.0
PROBIT_CF_TERMS = 120


class Probit(SymmetricCDF):
    """f(a) = Phi(a), the standard normal CDF; f' = N(a; 0, 1), f'' = -a N(a; 0, 1) (B.30-B.32).

    In log space, with lambda(a) = N(a; 0, 1) / Phi(a) (the reciprocal of the Mills
    ratio at -a): d/da log Phi(a) = lambda(a) and
    d^2/da^2 log Phi(a) = -lambda(a) (a + lambda(a)). Each is computed in a form
    exact in both tails (see the methods), e.g. at a = +-40 and at +-1e3.
    """

    name = "probit"

    def forward(self, a):
        return np.maximum(special.ndtr(a), TINY)  # lower bound only: see TINY above

    def d1(self, a, x):
        return gaussian_pdf(a)

    def d2(self, a, x):
        return -a * gaussian_pdf(a)

    def log_f(self, a):
        # a <= 0: scipy's log_ndtr. a > 0: log Phi(a) = log1p(-N(a) R(a)); log_ndtr goes
        # through erfc(a / sqrt 2), whose rounded argument costs up to a^2 ulps there.
        pos = np.maximum(a, 0.0)
        return np.where(a > 0, np.log1p(-gaussian_pdf(pos) * mills_ratio(pos)),
                        special.log_ndtr(np.minimum(a, 0.0)))

    def d_log_f(self, a):
        # lambda(a) = 1 / R(-a) for a <= 0 (erfcx, no underflow of Phi), N(a) / Phi(a) above
        pos, neg = np.maximum(a, 0.0), np.maximum(-a, 0.0)
        return np.where(a > 0, gaussian_pdf(pos) / special.ndtr(pos), 1.0 / mills_ratio(neg))

    def d2_log_f(self, a):
        lam = self.d_log_f(a)
        return -lam * self._a_plus_lambda(a, lam)

    @staticmethod
    def _a_plus_lambda(a, lam):
        """a + lambda(a) > 0. For a < -2 it is a small difference of two large numbers
        (about -1/a), so it comes from the continued fraction instead."""
        gap = a + lam
        far = -a > PROBIT_CF_FROM
        x = -a[far]                               # the fraction only where the difference cancels
        tail = np.zeros_like(x)
        for k in range(PROBIT_CF_TERMS, 1, -1):
            tail = k / (x + tail)
        gap[far] = 1.0 / (x + tail)
        return gap


def softmax_parts(a):
    """Max-shifted pieces of a softmax over each row (B.36), exact where p rounds to 0 or 1.

    With m the first largest entry of a row, s = a - a_m and rest = sum_{j != m} exp(s_j):

        p = exp(s) / (1 + rest),   1 - p_m = rest / (1 + rest),   log p = s - log1p(rest),

    so neither 1 - p_m nor log p_m is taken from a rounded p_m.

    Parameters
    ----------
    a : ndarray of shape (N, C)

    Returns
    -------
    top : bool ndarray of shape (N, C), True at m
    s : ndarray of shape (N, C)
    rest : ndarray of shape (N, 1)
    """
    top = np.zeros(a.shape, dtype=bool)
    top[np.arange(a.shape[0]), np.argmax(a, axis=1)] = True
    s = a - np.max(a, axis=1, keepdims=True)                              # B.36
    rest = np.sum(np.exp(s), axis=1, keepdims=True, where=~top)
    return top, s, rest


class Softmax:
    """x_i = exp(a_i) / sum_j exp(a_j) over each row; J = diag(x) - x x^T (B.33-B.35).

    Computed with the max-shift of (B.36); entries are raised to at least tiny (see
    TINY above). A cross entropy on this output is taken from a, not from x
    (``kd_ref.outputs.CrossEntropy.fused``); for log-probabilities use log_softmax.
    """

    name = "softmax"
    elementwise = False

    def forward(self, a):
        return np.maximum(special.softmax(a, axis=1), TINY)

    @staticmethod
    def _from_top(x, v):
        """v - v_m per row, m the row's largest x.

        Every formula below is unchanged when a constant is added to a row of v (the
        x sum to one, so J 1 = 0 and sum_k d^2 x_k = 0). Measured from the top entry,
        v_i - x . v loses no digits where x_m rounds to 1: the x_m term drops out
        instead of cancelling against v_i (a saturated hidden softmax otherwise made
        R{backprop} asymmetric by 1e-4 relative to the Hessian's entries).
        """
        m = np.argmax(x, axis=1)
        return v - v[np.arange(v.shape[0]), m][:, None]

    @classmethod
    def _jvp(cls, x, v):
        # J v = x * v - x (x . v); J is symmetric, so this is also J^T v
        v = cls._from_top(x, v)
        return x * (v - np.sum(x * v, axis=1, keepdims=True))

    def backward(self, a, x, d_x):
        return self._jvp(x, d_x)

    def r_forward(self, a, x, R_a):
        return self._jvp(x, R_a)

    def r_backward(self, a, x, d_x, R_a, R_d_x):
        R_x = self._jvp(x, R_a)
        # R{J} = diag(R_x) - R_x x^T - x R_x^T (symmetric), applied to d_x (from the top entry, as in _jvp)
        d = self._from_top(x, d_x)
        R_J_d = (R_x * (d - np.sum(x * d, axis=1, keepdims=True))
                 - x * np.sum(R_x * d, axis=1, keepdims=True))
        return self._jvp(x, R_d_x) + R_J_d

    def curvature(self, a, x, d_x):
        """sum_k (d_x)_k d^2 x_k / da da^T per row, shape (N, D, D) (S1.12):

            diag(x * (d - s)) - (x x^T) * (d 1^T + 1 d^T) + 2 s x x^T,   s = x . d

        with d measured from its top entry (see :meth:`_from_top`).
        """
        d_x = self._from_top(x, d_x)
        s = np.sum(x * d_x, axis=1)[:, None, None]
        xx = x[:, :, None] * x[:, None, :]
        out = 2.0 * s * xx - xx * (d_x[:, :, None] + d_x[:, None, :])
        idx = np.arange(a.shape[1])
        out[:, idx, idx] += x * (d_x - s[:, :, 0])
        return out


class LogSoftmax:
    """z_i = a_i - logsumexp(a) over each row; J = I - 1 y^T with y = softmax(a) (B.37-B.39).

    The log-sum-exp is max-shifted (B.39) and its top term split off
    (:func:`softmax_parts`), so logits of +-1e4 give finite z and z_m = -log1p(rest)
    keeps its digits when p_m rounds to 1. The products below are the textbook
    ones; the dot product on this output takes its derivatives from a instead
    (``kd_ref.outputs.DotProduct.fused``), exact where p_m rounds to 1.
    """

    name = "log_softmax"
    elementwise = False

    def forward(self, a):
        _, s, rest = softmax_parts(a)
        return s - np.log1p(rest)                                         # B.37, B.39

    def backward(self, a, z, d_z):
        # J^T d = d - y (1^T d)
        return d_z - np.exp(z) * np.sum(d_z, axis=1, keepdims=True)

    def r_forward(self, a, z, R_a):
        # J R_a = R_a - 1 (y . R_a)
        return R_a - np.sum(np.exp(z) * R_a, axis=1, keepdims=True)

    def r_backward(self, a, z, d_z, R_a, R_d_z):
        y = np.exp(z)
        R_y = Softmax._jvp(y, R_a)
        # R{J} = -1 R_y^T, so R{J}^T d = -R_y (1^T d)
        return self.backward(a, z, R_d_z) - R_y * np.sum(d_z, axis=1, keepdims=True)

    def curvature(self, a, z, d_z):
        """sum_k (d_z)_k d^2 z_k / da da^T = -(1^T d)(diag y - y y^T) per row, shape (N, D, D) (S1.12).

        Every z_k = a_k - logsumexp(a) has the same Hessian, minus the softmax's Jacobian.
        """
        y = np.exp(z)
        out = y[:, :, None] * y[:, None, :]
        idx = np.arange(a.shape[1])
        out[:, idx, idx] -= y
        return np.sum(d_z, axis=1)[:, None, None] * out


NONLINEARITIES = {cls.name: cls for cls in (Linear, ReLU, Logistic, Probit, Softmax, LogSoftmax)}


def get(name):
    """The nonlinearity object called ``name`` (one of ``NONLINEARITIES``)."""
    if name not in NONLINEARITIES:
        raise ValueError(f"nonlinearity: expected one of {sorted(NONLINEARITIES)}, received {name!r}")
    return NONLINEARITIES[name]()
