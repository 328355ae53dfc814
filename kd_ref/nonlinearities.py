"""Layer nonlinearities with the four products backprop and R{backprop} need (B.22-B.39).

For a layer x = f(a) (rows are examples) every nonlinearity provides

    forward(a)                          x = f(a)
    backward(a, x, d_x)                 d_a   = J^T d_x                   (B.8, B.11)
    r_forward(a, x, R_a)                R_x   = J R_a                    (B.13, B.14)
    r_backward(a, x, d_x, R_a, R_d_x)   R_d_a = J^T R_d_x + R{J}^T d_x   (B.15, B.18)

where J = dx/da. For the elementwise ones J = diag(f'(a)) and R{J} = diag(f''(a) R_a),
so only f' and f'' are written out; softmax and log-softmax mix the units of a
row and get their own products. Nothing here forms a Jacobian matrix.
"""
import numpy as np
from scipy import special

# Logistic and probit outputs are kept inside [TINY, 1 - EPS_HALF] so that a log
# (or a log of 1 - x) taken by an output function stays finite; both bounds are
# far below the precision any derivative check can see.
TINY = np.finfo(np.float64).tiny
EPS_HALF = np.finfo(np.float64).epsneg


class Elementwise:
    """x = f(a) applied to every unit; subclasses give f, f' and f''."""

    elementwise = True

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

    # multiplying by the boolean mask directly skips building a float copy of f'
    def backward(self, a, x, d_x):
        return d_x * (a > 0)

    def r_forward(self, a, x, R_a):
        return R_a * (a > 0)

    def r_backward(self, a, x, d_x, R_a, R_d_x):
        return R_d_x * (a > 0)  # f'' = 0 away from the kink


class Logistic(Elementwise):
    """f(a) = 1 / (1 + exp(-a)); f' = x(1 - x), f'' = x(1 - x)(1 - 2x) (B.27-B.29).

    The output is clipped to [tiny, 1 - eps/2] so that log x and log(1 - x) stay finite.
    """

    name = "logistic"

    def forward(self, a):
        return np.clip(special.expit(a), TINY, 1.0 - EPS_HALF)

    def d1(self, a, x):
        # exp(-|a|) / (1 + exp(-|a|))^2 avoids the cancellation of x (1 - x) when x is near 1
        e = np.exp(-np.abs(a))
        return e / (1.0 + e) ** 2

    def d2(self, a, x):
        # f'' = f' (1 - 2 x) and 1 - 2 sigma(a) = -tanh(a / 2), accurate in both tails
        return -self.d1(a, x) * np.tanh(a / 2.0)


class Probit(Elementwise):
    """f(a) = Phi(a), the standard normal CDF; f' = N(a; 0, 1), f'' = -a N(a; 0, 1) (B.30-B.32).

    The output is clipped to [tiny, 1 - eps/2] like the logistic.
    """

    name = "probit"

    def forward(self, a):
        return np.clip(special.ndtr(a), TINY, 1.0 - EPS_HALF)

    def d1(self, a, x):
        return np.exp(-0.5 * a * a) / np.sqrt(2.0 * np.pi)

    def d2(self, a, x):
        return -a * self.d1(a, x)


class Softmax:
    """x_i = exp(a_i) / sum_j exp(a_j) over each row; J = diag(x) - x x^T (B.33-B.35).

    Computed with the max-shift of (B.36); entries are clipped below at tiny so a
    following log is finite (prefer log_softmax when logs are wanted).
    """

    name = "softmax"
    elementwise = False

    def forward(self, a):
        return np.maximum(special.softmax(a, axis=1), TINY)

    @staticmethod
    def _jvp(x, v):
        # J v = x * v - x (x . v); J is symmetric, so this is also J^T v
        return x * (v - np.sum(x * v, axis=1, keepdims=True))

    def backward(self, a, x, d_x):
        return self._jvp(x, d_x)

    def r_forward(self, a, x, R_a):
        return self._jvp(x, R_a)

    def r_backward(self, a, x, d_x, R_a, R_d_x):
        R_x = self._jvp(x, R_a)
        # R{J} = diag(R_x) - R_x x^T - x R_x^T (symmetric), applied to d_x
        R_J_d = (R_x * d_x - R_x * np.sum(x * d_x, axis=1, keepdims=True)
                 - x * np.sum(R_x * d_x, axis=1, keepdims=True))
        return self._jvp(x, R_d_x) + R_J_d


class LogSoftmax:
    """z_i = a_i - logsumexp(a) over each row; J = I - 1 y^T with y = softmax(a) (B.37-B.39).

    The log-sum-exp is max-shifted (B.39), so logits of +-1e4 give finite z.
    """

    name = "log_softmax"
    elementwise = False

    def forward(self, a):
        return special.log_softmax(a, axis=1)

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


NONLINEARITIES = {cls.name: cls for cls in (Linear, ReLU, Logistic, Probit, Softmax, LogSoftmax)}


def get(name):
    """The nonlinearity object called ``name`` (one of ``NONLINEARITIES``)."""
    if name not in NONLINEARITIES:
        raise ValueError(f"nonlinearity: expected one of {sorted(NONLINEARITIES)}, received {name!r}")
    return NONLINEARITIES[name]()
