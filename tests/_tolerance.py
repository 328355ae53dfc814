"""The rounding floor of a five-point central difference, for derivative checks of tiny derivatives.

The stencil (8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / (12 h) adds 18 rounded values of f with
weights summing to 18/12 in magnitude, so where each value is rounded by about eps |f| the
difference is uncertain by 1.5 eps |f| / h per entry, however small the true derivative. Where
the analytic derivative is near that size, a relative check measures rounding, not the
derivative: such a check passes when its largest error is within ten times the floor (the ten
covers values that are sums of several rounded terms).
"""
import numpy as np

from kd_ref.gradcheck import DEFAULT_STEP


def difference_noise(magnitude, step=DEFAULT_STEP):
    """Ten times the rounding floor 1.5 eps |f| / h of a five-point difference of values of size ``magnitude``."""
    return 10 * 1.5 * np.finfo(float).eps * float(np.max(np.abs(magnitude))) / step


def passes(result, rtol, magnitude, step=DEFAULT_STEP):
    """A :class:`kd_ref.gradcheck.CheckResult` within ``rtol``, or absolutely within the rounding floor."""
    return result.rel_error <= rtol or result.abs_error <= difference_noise(magnitude, step)
