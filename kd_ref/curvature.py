"""The diagonal of a network's loss Hessian, five ways (SPEC_seeds S1.10-S1.15).

The loss is the *minimised* training loss L = scale * E, where E is an output
function of ``kd_ref.outputs`` summed over the rows (S1.10):

* scale = -1/N for the log-likelihood output functions (CrossEntropy,
  BinaryCrossEntropy, DotProduct), so L is the mean negative log-likelihood;
* scale = +1/N for SquareError, already a loss.

:func:`loss_scale` picks it. A student's distillation cross entropy is the
same thing with the teacher's class probabilities as the (constant) targets:
``DotProduct(teacher_probs)`` on a log-softmax student, ``CrossEntropy(teacher_probs)``
on a softmax one.

Methods of :func:`hessian_diagonal`, with notation of ``kd_ref.mlp``
(a_l = x_{l-1} W_l^T + b_l, x_l = f_l(a_l)):

``exact`` (S1.12)
    W_l[i, j] enters only a_{l,i}, so d^2L/dW_l[i,j]^2 = sum_n (A_l)_{n,ii} x_{l-1,n,j}^2
    and d^2L/db_{l,i}^2 = sum_n (A_l)_{n,ii}, with A_l = d^2 l_n / da_l da_l^T the
    per-example pre-activation curvature, carried backward as full matrices:

        A_L     = J_L^T (d^2 l / dy^2) J_L + sum_k (dl/dy_k) d^2 y_k / da_L^2
        A_{l-1} = J_{l-1}^T W_l^T A_l W_l J_{l-1} + sum_k (dx_{l-1})_k d^2 x_{l-1,k} / da^2

    (the output function's ``hess`` and the nonlinearity's ``curvature``;
    dx = dl/dx from ordinary backprop, B.8-B.11; a fused output form gives A_L
    straight from a_L). Exact for every nonlinearity and output function. For an
    elementwise first layer only diag(A_1) is formed,
    diag(W_2^T A_2 W_2)_i = sum_k W_2[k, i] (A_2 W_2)[k, i].
``lecun`` (S1.13, Becker & LeCun)
    The same recursion keeping diagonals only:
    d_{l-1} = f'(a_{l-1})^2 * (d_l (W_l * W_l)) + f''(a_{l-1}) * dx_{l-1}, d_L = diag A_L.
    Exact when every A_l it drops off-diagonal terms from is diagonal (one hidden
    layer, elementwise output, separable loss); an approximation otherwise.
``gauss_newton`` (S1.13, LeCun's "guaranteed positive" variant)
    The full-matrix recursion of ``exact`` without any f'' or sum_k (dl/dy_k) d^2y_k
    term, except that a fused output form (cross entropy on softmax, logistic or
    probit, dot product on log-softmax: losses convex in a_L) keeps its exact A_L.
    This is diag(J^T A_L J) with J = da_L/dtheta, >= 0 for a loss convex in y.
``hutchinson`` (S1.14, Bekas, Kokiopoulou & Saad 2007)
    diag H = E[v * Hv] over probes v with i.i.d. Rademacher (or Gaussian) entries,
    Hv by one ``MLP.hvp`` each; the standard error is the sample one. The exact
    per-entry variance is :func:`hutchinson_variance`.
``brute`` (S1.15)
    h_kk = e_k^T H e_k by one ``MLP.hvp`` per parameter: the reference; refused for
    more than ``MAX_BRUTE`` parameters.

Memory. ``exact`` and ``gauss_newton`` go through the rows ``chunk`` at a time and
hold, besides one forward pass over the chunk, at most about
3 * chunk * max_l (D_l^2 + D_l D_{l-1} + D_{l-1}^2) floats (the D_0^2 term dropped for
an elementwise first layer); by default ``chunk`` keeps that near ``MEMORY_FLOATS``.
``lecun`` uses chunks too and needs a few times one forward pass (about
4 sum_l D_l + D_L^2 floats a row, :func:`default_chunk`). ``hutchinson``
and ``brute`` hold one R{backprop} pass over all rows at a time.
"""
import time
from dataclasses import dataclass

import numpy as np

from ._validation import as_float_array, check_finite_real, check_generator, check_positive_int
from .outputs import BinaryCrossEntropy, CrossEntropy, DotProduct, SquareError

METHODS = ("exact", "lecun", "gauss_newton", "hutchinson", "brute")
PROBES = ("rademacher", "gaussian")
MAX_BRUTE = 20_000          # S1.15: P HVPs of a larger net is not a reference anyone waits for
MAX_FULL = 5_000            # a full P x P Hessian of 5,000 parameters is 200 MB
MEMORY_FLOATS = 2 ** 23     # 64 MB of float64 for the per-example curvature matrices of a chunk


@dataclass
class CurvatureResult:
    """A Hessian diagonal (S1.12-S1.15).

    diag : ndarray of shape (n_params,), laid out like ``net.params``
    stderr : ndarray of shape (n_params,) or None
        Standard error of each entry (Hutchinson only; None for the deterministic methods).
    method : str
    n_probes : int or None
        Number of Hutchinson probes (None otherwise).
    seconds : float
        Wall-clock time of the computation.
    """

    diag: np.ndarray
    stderr: object
    method: str
    n_probes: object
    seconds: float


def loss_scale(output, n):
    """The factor turning E (summed over n rows) into the minimised mean loss L (S1.10).

    -1/n for the log-likelihood output functions (CrossEntropy, BinaryCrossEntropy,
    DotProduct), +1/n for SquareError. Other output functions need an explicit scale.
    """
    n = check_positive_int(n, "n")
    if isinstance(output, (CrossEntropy, BinaryCrossEntropy, DotProduct)):
        return -1.0 / n
    if isinstance(output, SquareError):
        return 1.0 / n
    raise TypeError(f"output: expected an output function of kd_ref.outputs with a known sign, received "
                    f"{type(output).__name__}; pass scale explicitly")


# ------------------------------------------------------------------ checks
def _check_problem(net, x, output, scale):
    x = as_float_array(x, "x", shape=(None, net.sizes[0]))
    expected = (x.shape[0], net.sizes[-1])
    t = getattr(output, "t", None)
    if t is None or t.shape != expected:
        raise ValueError(f"output: expected an output function with targets of shape {expected}, received "
                         f"{type(output).__name__} with targets of shape {getattr(t, 'shape', None)}")
    if scale is None:
        scale = loss_scale(output, x.shape[0])
    scale = check_finite_real(scale, "scale")
    if scale == 0:
        raise ValueError("scale: expected a non-zero factor (L = scale * E), received 0")
    return x, scale


def _check_method_options(method, n_probes, rng, probe, chunk):
    if method not in METHODS:
        raise ValueError(f"method: expected one of {list(METHODS)}, received {method!r}")
    if method == "hutchinson":
        n_probes = check_positive_int(n_probes, "n_probes")
        check_generator(rng)
        if probe not in PROBES:
            raise ValueError(f"probe: expected one of {list(PROBES)}, received {probe!r}")
    elif n_probes is not None or rng is not None:
        raise ValueError(f"n_probes, rng: used only by method='hutchinson', received them with method={method!r}")
    if chunk is not None:
        chunk = check_positive_int(chunk, "chunk")
    return n_probes, chunk


def _rows_of(output, rows):
    """The output function restricted to a slice of rows (same class, targets sliced; its own ``rows`` if it has one,
    as the GPED heads, which carry more than one target or a kind)."""
    if callable(getattr(output, "rows", None)):
        return output.rows(rows)
    return type(output)(output.t[rows])


def default_chunk(net, method="exact"):
    """Rows per chunk keeping a chunk's working arrays near MEMORY_FLOATS floats.

    ``exact`` and ``gauss_newton``: the per-example curvature matrices (module notes).
    ``lecun``: a forward pass, its diagonals and A_L, about 4 sum_l D_l + D_L^2 floats
    per row, so its chunks are far larger (small chunks would repeat the per-chunk
    work, W_l * W_l among it, many times over).
    """
    if method not in ("exact", "gauss_newton", "lecun"):
        raise ValueError(f"method: expected 'exact', 'gauss_newton' or 'lecun' (the chunked methods), "
                         f"received {method!r}")
    s = net.sizes
    if method == "lecun":
        return max(1, MEMORY_FLOATS // (4 * sum(s) + s[-1] ** 2))
    per_row = max(s[-1] ** 2, 1)
    for l in range(1, net.n_layers):          # W_{l+1} has shape (s[l+1], s[l])
        square_in = 0 if (l == 1 and net.f[0].elementwise) else s[l] ** 2
        per_row = max(per_row, s[l + 1] ** 2 + s[l + 1] * s[l] + square_in)
    return max(1, MEMORY_FLOATS // (3 * per_row))


# -------------------------------------------------------- the recursions
def _diag_of(A):
    return np.diagonal(A, axis1=1, axis2=2)


def _add_to_diagonal(A, d):
    idx = np.arange(A.shape[1])
    A[:, idx, idx] += d
    return A


def layer_jacobian(f, a, x):
    """J = dx/da per row for a nonlinearity f at (a, x), shape (N, D, D), J[n, i, k] = dx_i/da_k.

    Built from the nonlinearity's own J-products (B.13) on the unit vectors, so it is
    exact for softmax and log-softmax as well.
    """
    n, d = a.shape
    cols = f.r_forward(np.repeat(a, d, axis=0), np.repeat(x, d, axis=0), np.tile(np.eye(d), (n, 1)))
    return cols.reshape(n, d, d).transpose(0, 2, 1)


def _sandwich(f, a, x, B):
    """J^T B J per row for the layer x = f(a); B of shape (N, D, D)."""
    if f.elementwise:
        d1 = f.d1(a, x)
        return d1[:, :, None] * B * d1[:, None, :]
    J = layer_jacobian(f, a, x)
    return J.transpose(0, 2, 1) @ B @ J


def output_curvature(net, cache, output, gauss_newton=False):
    """dE/da_L and A_L = d^2E/da_L da_L^T per row (S1.12), shapes (N, D_L) and (N, D_L, D_L).

    With a fused output form (``output.fused(f_L)``) both come from the pre-activation
    (exact however saturated, and kept whole by Gauss-Newton: these losses are convex
    in a_L). Otherwise A_L = J^T (d^2E/dy^2) J + sum_k (dE/dy_k) d^2 y_k/da^2, the second
    term dropped when ``gauss_newton``.
    """
    f, a, y = net.f[-1], cache.a[-1], cache.y
    fused = output.fused(f)
    if fused is not None:
        return fused.grad(a), fused.hess(a)
    d_y = output.grad(y)
    A = _sandwich(f, a, y, output.hess(y))
    if not gauss_newton:
        A = _add_to_diagonal(A, f.d2(a, y) * d_y) if f.elementwise else A + f.curvature(a, y, d_y)
    return f.backward(a, y, d_y), A


def _weight_diagonal(net, out, l, A_ii, x_in):
    """Adds sum_n (A_l)_{n,ii} x_{l-1,n,j}^2 and sum_n (A_l)_{n,ii} to layer l's part of ``out`` (S1.12)."""
    dW_l, db_l = net.param_views(out)[2 * l:2 * l + 2]              # views: the additions land in out
    dW_l += A_ii.T @ (x_in * x_in)
    db_l += A_ii.sum(axis=0)


def _exact_chunk(net, x, output, out, gauss_newton):
    """Curvature backprop (S1.12) over one chunk of rows, adding E's Hessian diagonal to ``out``."""
    cache = net.forward(x)
    d_a, A = output_curvature(net, cache, output, gauss_newton)
    n = x.shape[0]
    for l in reversed(range(net.n_layers)):
        _weight_diagonal(net, out, l, A if A.ndim == 2 else _diag_of(A), cache.x[l])
        if l == 0:
            return
        W, f, a, x_l = net.W[l], net.f[l - 1], cache.a[l - 1], cache.x[l]
        d_out, d_in = W.shape
        d_x = d_a @ W                                                           # B.10: dE/dx_{l-1}
        AW = (A.reshape(-1, d_out) @ W).reshape(n, d_out, d_in)                 # A_l W_l, one product
        if l == 1 and f.elementwise:
            # only diag(A_1) is needed: diag(W^T A W)_i = sum_k W[k, i] (A W)[k, i]
            A = f.d1(a, x_l) ** 2 * np.einsum("nki,ki->ni", AW, W)
            if not gauss_newton:
                A += f.d2(a, x_l) * d_x
        else:
            B = (AW.transpose(0, 2, 1).reshape(-1, d_out) @ W).reshape(n, d_in, d_in)   # W^T A W (A symmetric)
            A = _sandwich(f, a, x_l, B)
            if not gauss_newton:
                A = _add_to_diagonal(A, f.d2(a, x_l) * d_x) if f.elementwise else A + f.curvature(a, x_l, d_x)
        d_a = f.backward(a, x_l, d_x)                                           # B.8 (B.11)


def _lecun_chunk(net, x, output, out):
    """Becker & LeCun's diagonal recursion (S1.13) over one chunk of rows, added to ``out``."""
    cache = net.forward(x)
    d_a, A = output_curvature(net, cache, output)
    d = _diag_of(A).copy()                                                      # d_L = diag A_L
    for l in reversed(range(net.n_layers)):
        _weight_diagonal(net, out, l, d, cache.x[l])
        if l == 0:
            return
        W, f, a, x_l = net.W[l], net.f[l - 1], cache.a[l - 1], cache.x[l]
        d_x = d_a @ W
        if not f.elementwise:
            raise ValueError(f"net: method='lecun' expects elementwise hidden layers, received a hidden "
                             f"{f.name} layer (use method='exact')")
        d = f.d1(a, x_l) ** 2 * (d @ (W * W)) + f.d2(a, x_l) * d_x              # S1.13
        d_a = f.backward(a, x_l, d_x)


def _in_chunks(net, x, output, chunk, work, method):
    out = np.zeros(net.n_params)
    chunk = default_chunk(net, method) if chunk is None else chunk
    for start in range(0, x.shape[0], chunk):
        rows = slice(start, start + chunk)
        work(net, x[rows], _rows_of(output, rows), out)
    return out


def _hvp(net, x, output, v):
    return net.hvp(x, output, v_params=v, input_grads=False)[0]


def _hutchinson(net, x, output, n_probes, rng, probe):
    """S1.14: mean and standard error of v * Hv over probes (Welford's running moments)."""
    mean, m2 = np.zeros(net.n_params), np.zeros(net.n_params)
    for s in range(1, n_probes + 1):
        if probe == "rademacher":
            v = rng.integers(0, 2, size=net.n_params) * 2.0 - 1.0
        else:
            v = rng.standard_normal(net.n_params)
        sample = v * _hvp(net, x, output, v)
        delta = sample - mean
        mean += delta / s
        m2 += delta * (sample - mean)
    stderr = np.sqrt(m2 / (n_probes - 1) / n_probes) if n_probes > 1 else np.full(net.n_params, np.inf)
    return mean, stderr


def _check_size(net, limit, what):
    if net.n_params > limit:
        raise ValueError(f"net: {what} expects at most {limit:,} parameters, received a net with "
                         f"{net.n_params:,}")


def _brute(net, x, output):
    """S1.15: h_kk = e_k^T H e_k, one HVP per parameter."""
    out = np.zeros(net.n_params)
    e = np.zeros(net.n_params)
    for k in range(net.n_params):
        e[k] = 1.0
        out[k] = _hvp(net, x, output, e)[k]
        e[k] = 0.0
    return out


def hessian_diagonal(net, x, output, scale=None, method="exact", n_probes=None, rng=None, probe="rademacher",
                     chunk=None):
    """The diagonal of the Hessian of L = scale * E over the parameters (S1.10-S1.15).

    Parameters
    ----------
    net : kd_ref.mlp.MLP
    x : ndarray of shape (N, D_0)
    output : OutputFunction
        With targets of shape (N, D_L), e.g. ``SquareError(one_hot)`` or a student's
        ``DotProduct(teacher_probs)``.
    scale : float, optional
        L = scale * E; default :func:`loss_scale` (-1/N for log-likelihoods, +1/N for
        square error), i.e. the mean minimised loss.
    method : {"exact", "lecun", "gauss_newton", "hutchinson", "brute"}
        See the module notes.
    n_probes : int, hutchinson only
    rng : numpy.random.Generator, hutchinson only
    probe : {"rademacher", "gaussian"}, hutchinson only
    chunk : int, optional
        Rows per chunk for exact, lecun and gauss_newton (default :func:`default_chunk`).

    Returns
    -------
    CurvatureResult
    """
    n_probes, chunk = _check_method_options(method, n_probes, rng, probe, chunk)
    x, scale = _check_problem(net, x, output, scale)
    if method == "brute":
        _check_size(net, MAX_BRUTE, "method='brute'")
    start = time.perf_counter()
    stderr = None
    if method == "exact":
        diag = _in_chunks(net, x, output, chunk, lambda *args: _exact_chunk(*args, gauss_newton=False), method)
    elif method == "gauss_newton":
        diag = _in_chunks(net, x, output, chunk, lambda *args: _exact_chunk(*args, gauss_newton=True), method)
    elif method == "lecun":
        diag = _in_chunks(net, x, output, chunk, _lecun_chunk, method)
    elif method == "hutchinson":
        diag, stderr = _hutchinson(net, x, output, n_probes, rng, probe)
        stderr = stderr * abs(scale)
    else:
        diag = _brute(net, x, output)
    return CurvatureResult(diag * scale, stderr, method, n_probes, time.perf_counter() - start)


def full_hessian(net, x, output, scale=None):
    """The full Hessian of L = scale * E over the parameters, shape (P, P), by P HVPs (S1.15).

    For small nets (at most ``MAX_FULL`` parameters): OBS (``kd_ref.prune.obs_step``)
    and the tests. Column k is H e_k as R{backprop} gives it; the result is
    symmetric to rounding.
    """
    x, scale = _check_problem(net, x, output, scale)
    _check_size(net, MAX_FULL, "full_hessian")
    H = np.empty((net.n_params, net.n_params))
    e = np.zeros(net.n_params)
    for k in range(net.n_params):
        e[k] = 1.0
        H[:, k] = _hvp(net, x, output, e)
        e[k] = 0.0
    return H * scale


def hutchinson_variance(H, probe="rademacher"):
    """Exact variance of one probe's estimate v_i (Hv)_i of H_ii (S1.14).

    Rademacher probes: sum_{j != i} H_ij^2; Gaussian probes: that plus 2 H_ii^2.
    H : ndarray of shape (P, P), symmetric.
    """
    H = as_float_array(H, "H", ndim=2)
    if H.shape[0] != H.shape[1]:
        raise ValueError(f"H: expected a square matrix, received shape {H.shape}")
    if probe not in PROBES:
        raise ValueError(f"probe: expected one of {list(PROBES)}, received {probe!r}")
    d = np.diag(H)
    off = np.sum(H * H, axis=1) - d * d
    return off + 2.0 * d * d if probe == "gaussian" else off
