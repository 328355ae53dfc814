"""Output functions E(y) of a network's output y, with dE/dy and R{dE/dy} (B.40-B.47).

Each is built with its target ``t`` (same shape as the batch of outputs, (N, C))
and gives

    value(y)         E, summed over the rows of the batch
    grad(y)          dE/dy, shape (N, C)                        (seed of backprop, B.8)
    r_grad(y, R_y)   R{dE/dy} = (d^2E/dy^2) R_y, shape (N, C)   (seed of R{backprop}, B.15)

Signs follow the thesis: the two cross entropies are log-likelihoods (larger is
better; an optimiser minimises their negative), the square error carries a 1/2.
"""
import numpy as np

from ._validation import as_float_array


class OutputFunction:
    """Common target handling; subclasses define value, grad and r_grad."""

    def __init__(self, t):
        self.t = as_float_array(t, "t", ndim=2)

    def _check(self, y):
        if y.shape != self.t.shape:
            raise ValueError(f"y: expected the target's shape {self.t.shape}, received shape {y.shape}")
        return y


class SquareError(OutputFunction):
    """E = 1/2 sum_n sum_i (y_ni - t_ni)^2; dE/dy = y - t; R{dE/dy} = R_y (B.40-B.41)."""

    def value(self, y):
        return 0.5 * float(np.sum((self._check(y) - self.t) ** 2))

    def grad(self, y):
        return self._check(y) - self.t

    def r_grad(self, y, R_y):
        return R_y.copy()


class CrossEntropy(OutputFunction):
    """E = sum_n sum_i t_ni log y_ni; dE/dy = t / y; R{dE/dy} = -t R_y / y^2 (B.42-B.43).

    y must be positive (a softmax output). For log-probabilities use
    ``DotProduct`` on a log-softmax output, which is the same E computed stably.
    """

    def value(self, y):
        y = self._check(y)
        # 0 log 0 = 0: targets that are exactly zero contribute nothing
        return float(np.sum(np.where(self.t == 0, 0.0, self.t * np.log(y))))

    def grad(self, y):
        return self.t / self._check(y)

    def r_grad(self, y, R_y):
        # divide twice rather than by y^2: finite even when y is clipped at tiny
        return -self.t * (R_y / y) / y


class BinaryCrossEntropy(OutputFunction):
    """E = sum t log y + (1 - t) log(1 - y) over all entries (B.44-B.45).

    dE/dy = t / y - (1 - t) / (1 - y);  R{dE/dy} = -(t / y^2 + (1 - t) / (1 - y)^2) R_y.
    y must lie strictly inside (0, 1) (a logistic or probit output). Near
    saturation 1 - y is rounded, so E loses relative precision (about eps / (1 - y))
    while the derivatives, which come from the pre-activation, stay accurate.
    """

    def value(self, y):
        y = self._check(y)
        t = self.t
        return float(np.sum(np.where(t == 0, 0.0, t * np.log(y)) + np.where(t == 1, 0.0, (1 - t) * np.log1p(-y))))

    def grad(self, y):
        y = self._check(y)
        return self.t / y - (1 - self.t) / (1 - y)

    def r_grad(self, y, R_y):
        return -(self.t * (R_y / y) / y + (1 - self.t) * (R_y / (1 - y)) / (1 - y))


class DotProduct(OutputFunction):
    """E = sum_n t_n . y_n; dE/dy = t; R{dE/dy} = 0 (B.46-B.47).

    With a log-softmax output layer this is the cross entropy sum t log softmax(a).
    """

    def value(self, y):
        return float(np.sum(self.t * self._check(y)))

    def grad(self, y):
        self._check(y)
        return self.t.copy()

    def r_grad(self, y, R_y):
        return np.zeros_like(R_y)
