"""Finite-difference checks of gradients and Hessian-vector products.

Users call these to test their own derivations the same way kd_ref's tests do.
All differences are *central*: the five-point stencil

    f'(x; v) ~= [8 (f(x + h v) - f(x - h v)) - (f(x + 2h v) - f(x - 2h v))] / (12 h)

whose truncation error is O(h^4), so h = 1e-4 leaves both truncation and
rounding error near 1e-12 for well-scaled float64 functions. Points where the
function has a kink (ReLU at 0) closer than 2h along the direction give wrong
differences; move the point away from them before checking.

A gradient check compares the analytic gradient with differences of the value;
an HVP check compares the analytic H v with differences of the gradient along v
(appendix A: Hv = R_v{grad}). ``check_symmetry`` tests u^T H v = v^T H u.
"""
from dataclasses import dataclass

import numpy as np

from ._validation import as_float_array, check_callable, check_in_range

DEFAULT_STEP = 1e-4


@dataclass
class CheckResult:
    """Outcome of one comparison between an analytic and a numeric quantity.

    Attributes
    ----------
    analytic, numeric : ndarray
        The two values compared (same shape).
    abs_error : float
        ``max |analytic - numeric|``.
    rel_error : float
        ``||analytic - numeric|| / max(||analytic||, ||numeric||, scale)``, the
        Euclidean norms taken over all entries; ``scale`` guards exact zeros.
    """

    name: str
    analytic: np.ndarray
    numeric: np.ndarray
    abs_error: float
    rel_error: float

    def passed(self, rtol):
        """True when ``rel_error <= rtol`` (``rtol`` a finite number >= 0)."""
        rtol = check_in_range(rtol, "rtol", 0.0, np.inf, high_open=True)
        return bool(self.rel_error <= rtol)

    def __str__(self):
        return (
            f"{self.name}: relative error {self.rel_error:.2e}, absolute error {self.abs_error:.2e}\n"
            f"  analytic {np.array2string(np.ravel(self.analytic)[:6], precision=8)}\n"
            f"  numeric  {np.array2string(np.ravel(self.numeric)[:6], precision=8)}"
        )


def relative_error(analytic, numeric, scale=1e-10):
    """Norm-wise relative error between two arrays, see :class:`CheckResult`."""
    a = as_float_array(analytic, "analytic", finite=False)     # NaN in a broken derivative makes the check fail
    b = as_float_array(numeric, "numeric", finite=False)
    if a.shape != b.shape:
        raise ValueError(f"analytic: expected the shape of numeric {b.shape}, received shape {a.shape}")
    scale = check_in_range(scale, "scale", 0.0, np.inf, low_open=True)
    diff = float(np.linalg.norm((a - b).ravel()))
    denom = max(float(np.linalg.norm(a.ravel())), float(np.linalg.norm(b.ravel())), scale)
    return diff / denom


def _result(name, analytic, numeric, scale=None):
    a = as_float_array(analytic, "analytic", finite=False)
    b = as_float_array(numeric, "numeric", finite=False)
    abs_err = float(np.max(np.abs(a - b))) if a.size else 0.0
    rel = relative_error(a, b) if scale is None else abs_err / max(scale, 1e-300)
    return CheckResult(name, a, b, abs_err, rel)


def directional_difference(f, x, v, step=DEFAULT_STEP):
    """Five-point central difference of ``f`` at ``x`` along ``v``.

    ``f`` may return a scalar or an array (then every entry is differenced); its
    values must be real (a complex result is refused, not silently made real).
    ``step`` is h, a finite positive number.
    """
    check_callable(f, "f", "a callable x -> value")
    x = as_float_array(x, "x")
    v = as_float_array(v, "v", shape=x.shape)
    step = _check_step(step)
    f0p, f0m = _value(f, x + step * v, "f"), _value(f, x - step * v, "f")
    f1p, f1m = _value(f, x + 2 * step * v, "f"), _value(f, x - 2 * step * v, "f")
    return (8.0 * (f0p - f0m) - (f1p - f1m)) / (12.0 * step)


def _check_step(step):
    """The difference step h: a finite number > 0 (h = 0 would divide by zero, h < 0 only flips the stencil)."""
    return check_in_range(step, "step", 0.0, np.inf, low_open=True, high_open=True)


def _point(x):
    """The point of a check: a finite float64 array with at least one entry (an empty check would always pass)."""
    x = as_float_array(x, "x")
    if x.size == 0:
        raise ValueError(f"x: expected at least one entry to check, received shape {x.shape}")
    return x


def _value(fn, z, name):
    """``fn(z)`` as a real float64 array (NaN allowed: a broken function then fails the check)."""
    return as_float_array(fn(z), f"{name}(x)", finite=False)


def numerical_gradient(f, x, step=DEFAULT_STEP):
    """Gradient of the scalar function ``f`` at ``x`` by central differences, one coordinate at a time.

    Costs 4 * x.size evaluations of ``f``; for large ``x`` use :func:`check_gradient`
    with ``directions=`` instead.
    """
    check_callable(f, "f", "a callable x -> float")
    x = as_float_array(x, "x")
    step = _check_step(step)
    g = np.empty_like(x)
    e = np.zeros_like(x)
    for i in range(x.size):
        e.flat[i] = 1.0
        g.flat[i] = directional_difference(f, x, e, step)
        e.flat[i] = 0.0
    return g


def check_gradient(f, grad, x, directions=None, step=DEFAULT_STEP, name="gradient"):
    """Compare ``grad(x)`` with central differences of the scalar function ``f``.

    Parameters
    ----------
    f : callable, ndarray of shape x.shape -> float
    grad : callable, ndarray -> ndarray of shape x.shape
    x : ndarray
        The point; float64.
    directions : ndarray of shape (K,) + x.shape, optional
        When given, compare the K directional derivatives <grad(x), v_k> with
        differences along v_k (cheap for large x). Otherwise compare every
        coordinate of the gradient.

    Returns
    -------
    CheckResult

    Examples
    --------
    >>> import numpy as np
    >>> result = check_gradient(lambda x: np.sum(np.sin(x)), np.cos, np.array([0.1, 2.0]))
    >>> result.passed(1e-9)
    True
    >>> check_gradient(lambda x: np.sum(np.sin(x)), np.sin, np.array([0.1, 2.0])).passed(1e-9)
    False
    """
    check_callable(f, "f", "a callable x -> float")
    check_callable(grad, "grad", "a callable x -> gradient of the shape of x")
    x = _point(x)
    step = _check_step(step)
    g = as_float_array(grad(x), "grad(x)", shape=x.shape)
    if directions is None:
        return _result(name, g, numerical_gradient(f, x, step))
    dirs = as_float_array(directions, "directions")
    if dirs.ndim != x.ndim + 1 or dirs.shape[1:] != x.shape or dirs.shape[0] < 1:
        raise ValueError(f"directions: expected shape (K,) + {x.shape} with K >= 1, received shape {dirs.shape}")
    analytic = np.array([np.sum(g * v) for v in dirs])
    numeric = np.array([directional_difference(f, x, v, step) for v in dirs])
    return _result(name, analytic, numeric)


def check_hvp(grad, hvp, x, v, step=DEFAULT_STEP, name="Hessian-vector product"):
    """Compare ``hvp(x, v)`` with central differences of ``grad`` along ``v``.

    This is the defining property H v = d/dr grad(x + r v) at r = 0 (appendix A).

    Returns
    -------
    CheckResult
    """
    check_callable(grad, "grad", "a callable x -> gradient of the shape of x")
    check_callable(hvp, "hvp", "a callable (x, v) -> H v of the shape of x")
    x = _point(x)
    v = as_float_array(v, "v", shape=x.shape)
    step = _check_step(step)
    analytic = as_float_array(hvp(x, v), "hvp(x, v)", shape=x.shape)
    return _result(name, analytic, directional_difference(grad, x, v, step))


def check_symmetry(hvp, x, u, v, name="symmetry u'Hv = v'Hu"):
    """Compare u^T H v with v^T H u (both from ``hvp``); a symmetric Hessian makes them equal.

    The two scalars can be tiny through cancellation, so the relative error is
    measured against ||u|| ||Hv|| + ||v|| ||Hu||, the size of the terms summed.
    """
    check_callable(hvp, "hvp", "a callable (x, v) -> H v of the shape of x")
    x = _point(x)
    u = as_float_array(u, "u", shape=x.shape)
    v = as_float_array(v, "v", shape=x.shape)
    Hv = as_float_array(hvp(x, v), "hvp(x, v)", shape=x.shape)
    Hu = as_float_array(hvp(x, u), "hvp(x, u)", shape=x.shape)
    scale = float(np.linalg.norm(u) * np.linalg.norm(Hv) + np.linalg.norm(v) * np.linalg.norm(Hu))
    return _result(name, np.sum(u * Hv), np.sum(v * Hu), scale)


def over_params_and_input(model, x, value, grad, hvp=None):
    """A model's functions of its input x, as functions of z = (params, x) for the checks above.

    Derivatives with respect to the parameters and the input together (the joint Hessian of
    R{backprop}, B.15-B.18 and C.16-C.27) are checked by differencing along directions in z.

    Parameters
    ----------
    model : object with ``params`` (flat float64 vector) and ``set_params`` (an MLP, NADE or RBM)
    x : ndarray
        The input point.
    value : callable, x -> float
        E at the model's current parameters.
    grad : callable, x -> (dE/dparams, dE/dx), or None
    hvp : callable, (x, v_params, v_x) -> (Hv_params, Hv_x), optional

    Returns
    -------
    value_z, grad_z, hvp_z : callables of z (and of (z, v) for hvp_z); grad_z (hvp_z) is None without
        ``grad`` (``hvp``)
        Each sets the parameters from z, evaluates and restores them, so the model is unchanged.
    z : ndarray of shape (P + x.size,)
        The current point (params, x).
    """
    params = getattr(model, "params", None)
    if not (isinstance(params, np.ndarray) and params.ndim == 1) or not callable(getattr(model, "set_params", None)):
        raise TypeError(f"model: expected a model with a flat params vector and set_params (an MLP, NADE or RBM), "
                        f"received {type(model).__name__}")
    x = as_float_array(x, "x")
    check_callable(value, "value", "a callable x -> float")
    check_callable(grad, "grad", "a callable x -> (dE/dparams, dE/dx)", optional=True)
    check_callable(hvp, "hvp", "a callable (x, v_params, v_x) -> (Hv_params, Hv_x)", optional=True)
    P, theta, shape = model.params.size, model.params.copy(), np.shape(x)

    def at(z, fn, *args):
        saved = model.params.copy()          # whatever the model holds now, even if it changed since
        model.set_params(z[:P])
        try:
            return fn(z[P:].reshape(shape), *args)
        finally:
            model.set_params(saved)

    def value_z(z):
        return at(z, value)

    def grad_z(z):
        d_p, d_x = at(z, grad)
        return np.concatenate([d_p, np.ravel(d_x)])

    def hvp_z(z, v):
        Hv_p, Hv_x = at(z, hvp, v[:P], v[P:].reshape(shape))
        return np.concatenate([Hv_p, np.ravel(Hv_x)])

    return (value_z, grad_z if grad is not None else None, hvp_z if hvp is not None else None,
            np.concatenate([theta, np.ravel(x)]))
