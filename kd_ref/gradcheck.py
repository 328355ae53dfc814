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

from ._validation import as_float_array

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
        """True when ``rel_error <= rtol``."""
        return bool(self.rel_error <= rtol)

    def __str__(self):
        return (
            f"{self.name}: relative error {self.rel_error:.2e}, absolute error {self.abs_error:.2e}\n"
            f"  analytic {np.array2string(np.ravel(self.analytic)[:6], precision=8)}\n"
            f"  numeric  {np.array2string(np.ravel(self.numeric)[:6], precision=8)}"
        )


def relative_error(analytic, numeric, scale=1e-10):
    """Norm-wise relative error between two arrays, see :class:`CheckResult`."""
    a = np.asarray(analytic, dtype=np.float64)
    b = np.asarray(numeric, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"analytic: expected the shape of numeric {b.shape}, received shape {a.shape}")
    diff = float(np.linalg.norm((a - b).ravel()))
    denom = max(float(np.linalg.norm(a.ravel())), float(np.linalg.norm(b.ravel())), scale)
    return diff / denom


def _result(name, analytic, numeric, scale=None):
    a = np.asarray(analytic, dtype=np.float64)
    b = np.asarray(numeric, dtype=np.float64)
    abs_err = float(np.max(np.abs(a - b))) if a.size else 0.0
    rel = relative_error(a, b) if scale is None else abs_err / max(scale, 1e-300)
    return CheckResult(name, a, b, abs_err, rel)


def directional_difference(f, x, v, step=DEFAULT_STEP):
    """Five-point central difference of ``f`` at ``x`` along ``v``.

    ``f`` may return a scalar or an array (then every entry is differenced).
    """
    f0p, f0m = np.asarray(f(x + step * v), float), np.asarray(f(x - step * v), float)
    f1p, f1m = np.asarray(f(x + 2 * step * v), float), np.asarray(f(x - 2 * step * v), float)
    return (8.0 * (f0p - f0m) - (f1p - f1m)) / (12.0 * step)


def numerical_gradient(f, x, step=DEFAULT_STEP):
    """Gradient of the scalar function ``f`` at ``x`` by central differences, one coordinate at a time.

    Costs 4 * x.size evaluations of ``f``; for large ``x`` use :func:`check_gradient`
    with ``directions=`` instead.
    """
    x = as_float_array(x, "x")
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
    """
    x = as_float_array(x, "x")
    g = as_float_array(grad(x), "grad(x)", shape=x.shape)
    if directions is None:
        return _result(name, g, numerical_gradient(f, x, step))
    dirs = as_float_array(directions, "directions")
    if dirs.shape[1:] != x.shape:
        raise ValueError(f"directions: expected shape (K,) + {x.shape}, received shape {dirs.shape}")
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
    x = as_float_array(x, "x")
    v = as_float_array(v, "v", shape=x.shape)
    analytic = as_float_array(hvp(x, v), "hvp(x, v)", shape=x.shape)
    return _result(name, analytic, directional_difference(grad, x, v, step))


def check_symmetry(hvp, x, u, v, name="symmetry u'Hv = v'Hu"):
    """Compare u^T H v with v^T H u (both from ``hvp``); a symmetric Hessian makes them equal.

    The two scalars can be tiny through cancellation, so the relative error is
    measured against ||u|| ||Hv|| + ||v|| ||Hu||, the size of the terms summed.
    """
    x = as_float_array(x, "x")
    u = as_float_array(u, "u", shape=x.shape)
    v = as_float_array(v, "v", shape=x.shape)
    Hv, Hu = np.asarray(hvp(x, v), float), np.asarray(hvp(x, u), float)
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
    grad : callable, x -> (dE/dparams, dE/dx)
    hvp : callable, (x, v_params, v_x) -> (Hv_params, Hv_x), optional

    Returns
    -------
    value_z, grad_z, hvp_z : callables of z (and of (z, v) for hvp_z); hvp_z is None without ``hvp``
        Each sets the parameters from z, evaluates and restores them, so the model is unchanged.
    z : ndarray of shape (P + x.size,)
        The current point (params, x).
    """
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

    return value_z, grad_z, (hvp_z if hvp is not None else None), np.concatenate([theta, np.ravel(x)])
