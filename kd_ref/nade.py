"""NADE, the neural autoregressive distribution estimator, with backprop and R{backprop} (Appendix C, 4.35-4.43).

A binary NADE with one hidden layer factorises q(x) over an ordering o of the D
inputs (C.1, 4.36): position d = 1..D models input o_d given the inputs placed
before it. With rows of a batch as examples:

    a_1     = c                                               (C.2)   shape (N, H)
    a_{d+1} = a_d + x_{o_d} W[:, o_d]                         (C.3)   cumulative sum (C.15)
    h_d     = f(a_d)          f logistic (thesis) or ReLU     (C.4)
    z_d     = b_{o_d} + h_d . V[o_d]                          (C.5)   shape (N,)
    y_d     = sigma(z_d) = q(x_{o_d} = 1 | x_{o_<d})          (C.6)
    log q   = sum_d x_{o_d} log y_d + (1 - x_{o_d}) log(1 - y_d)
            = sum_d x_{o_d} z_d - softplus(z_d)               (C.7)   (no log of 0, no overflow)

Parameters (one flat float64 vector ``params``; the named arrays are views, in
this order): W of shape (H, D), V of shape (D, H), b of shape (D,), c of shape (H,).
They are indexed by *input* (pixel) number, not by position, so ``W[:, i]``,
``V[i]`` and ``b[i]`` belong to input i whatever the ordering, and ``W[j]`` of an
image model reshapes to a picture of hidden unit j's receptive field. Every array
given to or returned by this class (x, conditionals, gradients) is in the data's
own order; the ordering is applied inside.

Backprop (C.8-C.15), for E = sum_n w_n log q(x_n) with row weights w (default 1):

    dz_d  = w (x_{o_d} - y_d)                  (C.8)    = dE/db_{o_d}
    dh_d  = dz_d V[o_d]                        (C.9)
    da_d  = f'(a_d) * dh_d                     (C.10)
    dE/dV[o_d]    = sum_n dz_d h_d             (C.11)   (skipped for input-only gradients)
    dE/dW[:, o_d] = sum_n x_{o_d} S_d          (C.12)   (skipped for input-only gradients)
    dE/dc         = sum_n sum_d da_d           (C.13)
    dE/dx_{o_d}   = w z_d + S_d . W[:, o_d]    (C.14)   x treated as continuous
    S_d = sum_{d' > d} da_{d'}                 (C.15)   a reverse cumulative sum

R{backprop} (C.16-C.27) applies R_v to every line above for a direction
v = (v_W, v_V, v_b, v_c, v_x) over parameters and input (appendix A); the result
(R{dE/dtheta}, R{dE/dx}) is H v for the joint Hessian of E over (theta, x):

    R{a_1} = v_c;  R{a_{d+1}} = R{a_d} + x_{o_d} v_W[:, o_d] + v_x,{o_d} W[:, o_d]     (C.16-C.17)
    R{h_d} = f'(a_d) R{a_d}                                                          (C.18)
    R{z_d} = v_b,{o_d} + h_d . v_V[o_d] + R{h_d} . V[o_d]                              (C.19)
    R{y_d} = y_d (1 - y_d) R{z_d}                                                    (C.20)
    R{dz_d} = w (v_x,{o_d} - R{y_d})                                                 (C.21)
    R{dh_d} = R{dz_d} V[o_d] + dz_d v_V[o_d]                                         (C.22)
    R{da_d} = f'(a_d) R{dh_d} + f''(a_d) R{a_d} dh_d                                 (C.23)
    R{dE/dV[o_d]} = sum_n R{dz_d} h_d + dz_d R{h_d};  R{dE/db} = sum_n R{dz}         (C.24)
    R{dE/dW[:, o_d]} = sum_n v_x,{o_d} S_d + x_{o_d} R{S_d}                          (C.25)
    R{dE/dc} = sum_n sum_d R{da_d}                                                   (C.26)
    R{dE/dx_{o_d}} = w R{z_d} + S_d . v_W[:, o_d] + R{S_d} . W[:, o_d]               (C.27)

(The plain-text thesis has lost its formulas. The group boundaries above are the
thesis's, C.2-C.7 forward, C.8-C.15 backprop, C.16-C.20 R-forward, C.21-C.27
R-backward, C.28 reduced forms; the number on each single line is our
reconstruction of its place in that order.)

When one part of v is zero the terms that multiply it vanish (C.28): with
v = (0, v_x) (score matching, derivative matching) there is no v_W, v_V, v_b,
v_c term; with v = (v_theta, 0) there is no v_x term. :meth:`NADE.hvp` takes
``None`` for a zero part and then skips those terms.

How it is computed. Nothing of size N x D x H is ever stored. Rows (examples) are
processed in chunks and positions in blocks sized to stay in cache; within a
block, BLAS does the products over the batch and the hidden units. Instead of a
second, reverse pass for S_d, the forward pass keeps the running prefix sum
P_d = sum_{d' <= d} da_{d'}, so that S_d = S - P_d with S = P_D the total: every
term with S_d splits into a per-position product with P_d, made inside the pass,
and one matrix product with S at the end of the chunk. Backprop therefore costs a
single pass over the positions, like the forward pass, and R{backprop} a single
pass as well. :func:`reference_backprop` and :func:`reference_r_backprop` are the
plain twins of that pass (a loop over positions, one line per equation, S_d summed
as written); the tests hold the pass to them.

Examples
--------
>>> import numpy as np
>>> nade = NADE(4, 3, np.random.default_rng(0))
>>> x = np.array([[0, 1, 1, 0], [1, 1, 1, 1]])
>>> nade.log_prob(x).shape
(2,)
>>> all_x = ((np.arange(16)[:, None] >> np.arange(4)) & 1)
>>> round(float(np.exp(nade.log_prob(all_x)).sum()), 12)
1.0
"""
import numpy as np
from scipy import special

from . import nonlinearities, npzfile
from ._validation import (as_binary_batch, as_float_array, check_binary_dataset, check_bool, check_callable,
                          check_float_dtype, check_generator, check_in_range, check_permutation, check_positive_int,
                          check_training_options)
from .optim import Adadelta, MinibatchDrawer, check_settings, train
from .params import ParamLayout

FILE_KIND = "kd_ref.NADE"
FILE_VERSION = 1

# One (positions x rows x hidden) block array holds about this many float64 numbers
# (1 MiB), so the dozen block arrays of a pass stay in the L2/L3 cache. Measured with
# ``kd-ref bench nade`` on a 2-core EPYC: 2^14-2^18 are within 10% of each other.
_BLOCK_NUMBERS = 1 << 17
# Row chunks never exceed this many examples, and a block never spans more than
# _MAX_BLOCK positions (the masked running-sum product costs 2k flops per entry).
_MAX_ROWS = 64
_MAX_BLOCK = 8
# Largest -a_d fed to exp in a backward pass, per dtype: below exp's overflow (709.8 in float64,
# 88.7 in float32) with room to spare, so that f'(a) = exp(-a) h^2 stays a normal number.
_EXP_CAP = {np.dtype(np.float64): 700.0, np.dtype(np.float32): 80.0}


# -------------------------------------------------------------------- nonlinearities
def _relu(a, out):
    return np.maximum(a, 0.0, out=out)


def _logistic_slope(a, h, out):
    """f'(a) = sigma(a) sigma(-a) = h sigma(-a) for the logistic: not h (1 - h), whose 1 - h is 0 for a > 37."""
    np.negative(a, out=out)
    nonlinearities.logistic(out, out)
    out *= h
    return out


def _relu_slope(a, h, out):
    """f'(a) = 1[a > 0] (the derivative at exactly 0 is taken as 0)."""
    np.greater(a, 0.0, out=out, casting="unsafe")
    return out


# name -> (f, f' from (a, h)); f'' is handled in _r_da (logistic: f'(1 - 2h); ReLU: 0)
NONLINEARITIES = {
    "logistic": (nonlinearities.logistic, _logistic_slope),
    "relu": (_relu, _relu_slope),
}


def raster_column_order(n_rows, n_cols):
    """Column-wise raster order of a row-major ``n_rows x n_cols`` image.

    Pixel ``row * n_cols + col`` of the flattened image is visited column by
    column, top to bottom within a column: the ordering the thesis used for MNIST
    (sections 2.2.3 and 4.2.3).

    Returns
    -------
    ndarray of shape (n_rows * n_cols,), int

    Examples
    --------
    >>> raster_column_order(2, 3).tolist()
    [0, 3, 1, 4, 2, 5]
    """
    n_rows = check_positive_int(n_rows, "n_rows")
    n_cols = check_positive_int(n_cols, "n_cols")
    return np.arange(n_rows * n_cols).reshape(n_rows, n_cols).T.ravel()


def _plan(n, h):
    """(rows per chunk, positions per block) so that one block array has about _BLOCK_NUMBERS entries."""
    rows = max(1, min(n, _MAX_ROWS))
    return rows, int(np.clip(_BLOCK_NUMBERS // (rows * h), 2, _MAX_BLOCK))


def _dot_rows(X, v):
    """X[j] @ v[j] for a block: X (k, n, H), v (k, H) -> (k, n). One batched matmul (a BLAS gemv per position)."""
    return np.matmul(X, v[:, :, None])[:, :, 0]


def _logistic_from_negated(neg_a, h, slope, clamp):
    """h = sigma(a) (C.4) into ``h`` from a block holding -a; with ``slope``, f'(a) replaces -a in that block.

    One exponential serves both: e = exp(-a), h = 1 / (1 + e), f'(a) = sigma(a) sigma(-a) = e h^2,
    accurate where a >> 0 (unlike h (1 - h), whose 1 - h is 0 for a > 37). Where exp(-a)
    overflows (a < -709 in float64, a < -88 in float32), e = inf and h = 0 correctly, but
    e h^2 would be inf * 0: ``clamp`` (the cap of :data:`_EXP_CAP` for the block's dtype, or
    None when the activations cannot be that large) first caps -a there, where e h^2 is still
    a normal number (about 1e-304 in float64, 2e-35 in float32). Returns the slope block
    (``neg_a`` itself) or None.
    """
    if clamp is not None and slope:
        np.minimum(neg_a, clamp, out=neg_a)
    with np.errstate(over="ignore"):
        e = np.exp(neg_a, out=neg_a)
    np.add(e, 1.0, out=h)
    np.divide(1.0, h, out=h)
    if not slope:
        return None
    e *= h
    e *= h
    return e


def _weighted_rows(s, X):
    """s[j] @ X[j] for a block: s (k, n), X (k, n, H) -> (k, H), sums over the batch."""
    return np.matmul(s[:, None, :], X)[:, 0, :]


def _outer_pair(s1, s2, R2, out):
    """out[j] = s1[j] (x) R2[j, 0] + s2[j] (x) R2[j, 1] as one batched matmul with inner dimension 2.

    s1, s2 : (k, n) (s2 None means zero); R2 : (k, 2, H); out : (k, n, H). NumPy has
    no BLAS path for a matmul with inner dimension 1, so even a single outer product
    goes through this pair form (with a zero second coefficient): 3-4 times faster
    than broadcasting on the machine we measured.
    """
    coef = np.zeros(s1.shape + (2,), dtype=R2.dtype)
    coef[..., 0] = s1
    if s2 is not None:
        coef[..., 1] = s2
    return np.matmul(coef, R2, out=out)


def _running_sum(first, sources, out):
    """Block of activations by the cumulative sum (C.3, C.15) done as one matmul.

    out[j] = first + sum_{j' < j} sum_s coef_s[j'] (x) rows_s[j'] for j = 0..k-1, with
    ``sources`` a list of (coef (k, n), rows (k, H)) pairs; also adds the whole
    block's sum to ``first`` in place (the activation after the block).
    The strictly lower-triangular coefficient array (k, n, k * len(sources)) turns
    the running sum into a single product with the stacked rows.
    """
    k = out.shape[0]
    if k == 1:
        out[0] = first
    else:
        mask = np.tri(k, k, -1, dtype=out.dtype)[:, None, :]
        coef = np.concatenate([mask * s.T[None, :, :] for s, _ in sources], axis=2)
        rows = np.concatenate([r for _, r in sources], axis=0) if len(sources) > 1 else sources[0][1]
        n, m = coef.shape[1:]
        np.matmul(coef.reshape(k * n, m), rows, out=out.reshape(k * n, -1))   # one GEMM for the whole block
        out += first
    for s, r in sources:
        first += s.T @ r
    return out


def _accumulate(first, X):
    """Prefix sums over positions, in place: X[0] += first, X[j] += X[j-1]; then first = X[-1]."""
    X[0] += first
    for j in range(1, X.shape[0]):
        X[j] += X[j - 1]
    first[...] = X[-1]
    return X


# ------------------------------------------------------------------------------ NADE
class NADE:
    """A binary NADE with one hidden layer (Appendix C, section 4.2.2).

    Parameters
    ----------
    n_inputs : int
        D, the number of binary inputs.
    n_hidden : int
        H, the number of hidden units.
    rng : numpy.random.Generator or None
        Draws the initial W and V, i.i.d. N(0, init_std^2); b and c start at 0. With
        ``None`` every parameter starts at 0 (set them yourself; a NADE with W = V = 0
        cannot break the symmetry between hidden units by training). Required, as on
        every model.
    order : array_like of shape (D,), optional
        A permutation of 0..D-1: position d models input ``order[d]``. Default:
        the identity. :func:`raster_column_order` gives the thesis's MNIST order.
    nonlinearity : {"logistic", "relu"}
        Hidden-unit function f (C.4).
    init_std : float
    dtype : {numpy.float64, numpy.float32}
        Precision of the parameters and of every pass (log q, backprop, R{backprop},
        sampling). float32 is the released code's choice for training and sampling, about
        twice as fast; float64 (default) is what every derivative test uses. A float32
        NADE drawn from ``rng`` holds the float64 draws rounded, so the two agree to
        float32 precision (tests/test_nade.py).

    Attributes
    ----------
    params : ndarray of shape (P,), P = 2 D H + D + H, of ``dtype``
    W : ndarray of shape (H, D)      view of params
    V : ndarray of shape (D, H)      view of params
    b : ndarray of shape (D,)        view of params
    c : ndarray of shape (H,)        view of params
    layout : kd_ref.params.ParamLayout   the blocks W, V, b, c of params
    order : ndarray of shape (D,), int
    n_inputs, n_hidden, n_params : int

    Notes
    -----
    The model protocol (README, "Model protocol"): a density model, so :meth:`grad` and
    :meth:`hvp` take no output function, per-example weights are the keyword ``weights``
    and the value returned is log q per row; ``grad(x, *, weights, param_grads,
    input_grads, continuous) -> (log_q, d_params, d_x)``, ``hvp(x, v_params, v_x, *,
    weights, ...) -> (Hv_params, Hv_x)``, ``param_views``, ``save``, ``load`` as on MLP and RBM.
    """

    def __init__(self, n_inputs, n_hidden, rng, *, order=None, nonlinearity="logistic", init_std=0.01,
                 dtype=np.float64):
        self.n_inputs = check_positive_int(n_inputs, "n_inputs")
        self.n_hidden = check_positive_int(n_hidden, "n_hidden")
        D, H = self.n_inputs, self.n_hidden
        self.order = np.arange(D) if order is None else check_permutation(order, "order", D)
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity: expected one of {sorted(NONLINEARITIES)}, received {nonlinearity!r}")
        init_std = check_in_range(init_std, "init_std", 0.0, np.inf)
        if rng is not None:
            check_generator(rng)
        self.dtype = check_float_dtype(dtype)
        self.nonlinearity = nonlinearity
        self.layout = ParamLayout([("W", (H, D)), ("V", (D, H)), ("b", (D,)), ("c", (H,))])
        self.n_params = self.layout.size
        self.params = np.zeros(self.n_params, dtype=self.dtype)
        self.W, self.V, self.b, self.c = self.param_views(self.params)
        if rng is not None:
            self.W[...] = rng.normal(0.0, init_std, size=(H, D))
            self.V[...] = rng.normal(0.0, init_std, size=(D, H))

    # ----------------------------------------------------------------- parameters
    def param_views(self, flat):
        """Split any flat vector of length P into views (W (H, D), V (D, H), b (D,), c (H,)).

        Use it on gradients and directions: ``dW, dV, db, dc = nade.param_views(d_params)``.
        """
        return self.layout.views(flat)

    def astype(self, dtype):
        """A copy of this NADE computing in ``dtype`` (its parameters rounded to it when narrower)."""
        copy = NADE(self.n_inputs, self.n_hidden, None, order=self.order, nonlinearity=self.nonlinearity, dtype=dtype)
        copy.params[...] = self.params
        return copy

    def set_params(self, values):
        """Copy ``values`` (shape (P,), finite) into ``params`` in place (the views stay valid)."""
        values = as_float_array(values, "values", shape=(self.n_params,))
        self.params[...] = values

    def set_biases_from_data(self, data, smoothing=1.0):
        """Set b to the logits of the inputs' smoothed on-frequencies in ``data``.

        b_i = log((n1_i + s) / (n0_i + s)) with n1_i / n0_i the counts of ones / zeros
        of input i and s = ``smoothing``. With W = V = 0 this is the best model with
        independent inputs; from a small random start it saves the many early
        ADADELTA steps that would otherwise be spent moving b (quick runs).

        Parameters
        ----------
        data : array_like of shape (M, D), binary
        smoothing : float > 0
        """
        data = check_binary_dataset(data, "data", self.n_inputs)
        smoothing = check_in_range(smoothing, "smoothing", 0.0, np.inf, low_open=True)
        ones = data.sum(axis=0, dtype=np.float64)
        self.b[...] = np.log((ones + smoothing) / (data.shape[0] - ones + smoothing))

    def _ordered(self, flat=None):
        """(W, V, b, c) of ``flat`` (default: params) with inputs in position order: Wo (D, H), Vo (D, H)."""
        W, V, b, c = self.param_views(self.params if flat is None else flat)
        o, dt = self.order, self.dtype
        return (np.ascontiguousarray(W[:, o].T, dtype=dt), np.ascontiguousarray(V[o], dtype=dt), b[o].astype(dt),
                c.astype(dt, copy=False))

    def _scatter(self, dWo, dVo, dbo, dc):
        """Flat gradient from position-ordered pieces (inverse of :meth:`_ordered`)."""
        out = np.empty(self.n_params, dtype=self.dtype)
        dW, dV, db, dc_view = self.param_views(out)
        dW[:, self.order] = dWo.T
        dV[self.order] = dVo
        db[self.order] = dbo
        dc_view[...] = dc
        return out

    # --------------------------------------------------------------------- checks
    def _check_x(self, x, continuous, name="x"):
        """x as a float64 (N, D) batch, binary unless ``continuous``."""
        return as_binary_batch(x, name, self.n_inputs, check_bool(continuous, "continuous"))

    def _check_weights(self, weights, n):
        if weights is None:
            return np.ones(n)
        return as_float_array(weights, "weights", shape=(n,))

    # --------------------------------------------------------------------- forward
    def log_prob(self, x, *, continuous=False):
        """log q(x) for each row (C.1-C.7).

        Parameters
        ----------
        x : array_like of shape (N, D) or (D,)
            Binary inputs in the data's order. With ``continuous=True`` any real
            values are accepted and the same formula (C.7) is evaluated; that is
            the relaxation whose input derivatives :meth:`grad` returns.

        Returns
        -------
        ndarray of shape (N,)
        """
        x = self._check_x(x, continuous)
        return self._pass(x, None, "log_prob")["log_q"]

    def conditionals(self, x, *, continuous=False):
        """y with y[n, i] = q(x_i = 1 | inputs placed before i), shape (N, D), data order (C.6)."""
        x = self._check_x(x, continuous)
        out = self._pass(x, None, "log_prob", keep_z=True)
        return nonlinearities.logistic(out["z"], out["z"])

    def r_forward(self, x, v_params=None, v_x=None, *, continuous=False):
        """The logits z (C.5) and their directional derivative R{z} (C.16-C.19), data order.

        Returns
        -------
        z, R_z : ndarrays of shape (N, D)
        """
        x = self._check_x(x, continuous)
        v = self._check_direction(x, v_params, v_x)
        if v["v_params"] is None and v["v_x"] is None:
            return self._pass(x, None, "log_prob", keep_z=True)["z"], np.zeros(x.shape, dtype=self.dtype)
        out = self._pass(x, None, "r_forward", v=v)
        return out["z"], out["R_z"]

    # -------------------------------------------------------------------- backprop
    def grad(self, x, *, weights=None, param_grads=True, input_grads=True, continuous=False):
        """Backprop (C.8-C.15): gradient of E = sum_n w_n log q(x_n) w.r.t. the parameters and x.

        Parameters
        ----------
        x : array_like of shape (N, D)
        weights : array_like of shape (N,), optional, keyword only
            w_n (any real numbers; default 1). ``weights = 1 / N`` gives the mean.
        param_grads, input_grads : bool
            Skip the parameter part (C.11-C.13) or the input part (C.14) when not wanted.
        continuous : bool
            Accept real-valued x (needed for finite differences in x).

        Returns
        -------
        log_q : ndarray of shape (N,)
            Unweighted log q(x_n).
        d_params : ndarray of shape (P,) or None
            dE/dtheta, laid out like ``params`` (split with :meth:`param_views`).
        d_x : ndarray of shape (N, D) or None
            dE/dx; row n is w_n * d log q(x_n) / dx_n.

        Cost: about 1.8 times :meth:`log_prob` (one pass over the positions, see the module notes).
        """
        x = self._check_x(x, continuous)
        w = self._check_weights(weights, x.shape[0])
        param_grads, input_grads = check_bool(param_grads, "param_grads"), check_bool(input_grads, "input_grads")
        out = self._pass(x, w, "grad", param_grads=param_grads, input_grads=input_grads)
        return out["log_q"], out.get("d_params"), out.get("d_x")

    def hvp(self, x, v_params=None, v_x=None, *, weights=None, param_grads=True, input_grads=True,
            continuous=False):
        """R{backprop} (C.16-C.28): H v for E = sum_n w_n log q(x_n), H the Hessian over (theta, x).

        Parameters
        ----------
        x : array_like of shape (N, D)
        v_params : array_like of shape (P,) or None
            Parameter part of the direction; None means zero (reduced form C.28).
        v_x : array_like of shape (N, D) or None
            Input part of the direction; None means zero (reduced form C.28).
        weights : array_like of shape (N,), optional, keyword only
        param_grads, input_grads : bool
            Which parts of H v to return (e.g. score matching needs only the
            parameter part of H (0, v_x)).

        Returns
        -------
        Hv_params : ndarray of shape (P,) or None
        Hv_x : ndarray of shape (N, D) or None

        Both parts None-direction gives zeros. Cost: about twice :meth:`grad` for a
        full direction, less for a reduced one (``kd-ref bench nade`` prints both).
        """
        x = self._check_x(x, continuous)
        v = self._check_direction(x, v_params, v_x)
        w = self._check_weights(weights, x.shape[0])
        param_grads, input_grads = check_bool(param_grads, "param_grads"), check_bool(input_grads, "input_grads")
        if v["v_params"] is None and v["v_x"] is None:
            return (np.zeros(self.n_params, dtype=self.dtype) if param_grads else None,
                    np.zeros(x.shape, dtype=self.dtype) if input_grads else None)
        out = self._pass(x, w, "hvp", v=v, param_grads=param_grads, input_grads=input_grads)
        return out.get("d_params"), out.get("d_x")

    def _check_direction(self, x, v_params, v_x):
        vp = None if v_params is None else as_float_array(v_params, "v_params", shape=(self.n_params,))
        vx = None if v_x is None else as_float_array(v_x, "v_x", shape=x.shape)
        return {"v_params": vp, "v_x": vx}

    # ------------------------------------------------------------------ the engine
    def _pass(self, x, w, mode, v=None, param_grads=True, input_grads=True, keep_z=False):
        """One pass over the positions for every row chunk; see the module notes.

        mode: "log_prob" (C.2-C.7), "r_forward" (C.2-C.7, C.16-C.19), "grad" (C.2-C.15)
        or "hvp" (C.2-C.28). Returns a dict of results in data order. Block arrays
        have shape (k, n, H): k positions of the block, n rows of the chunk; block
        array ``h[j]`` is h_d for position d = d0 + j. :func:`reference_backprop` and
        :func:`reference_r_backprop` compute the same results one equation at a time.

        The prefix-sum rewrite. Backprop needs S_d = sum_{d' > d} da_{d'} (C.15), the
        da of the positions *after* d, in C.12 and C.14 (and R{S_d} in C.25, C.27); a
        second, reverse pass would make them. Instead this pass keeps the prefix sums
        P_d = sum_{d' <= d} da_{d'} of the positions done so far, and uses
        S_d = S - P_d with S = P_D: each term linear in S_d splits into a product with
        -P_d, made inside the pass block by block, and one product with the total S,
        made once at the end of the row chunk. The same holds for R{S_d} = R{S} - R{P_d}.
        """
        f, f_slope = NONLINEARITIES[self.nonlinearity]
        logistic = self.nonlinearity == "logistic"
        D, H = self.n_inputs, self.n_hidden
        N, dt = x.shape[0], self.dtype
        Wo, Vo, bo, c = self._ordered()
        xo = x[:, self.order].astype(dt, copy=False)
        w = None if w is None else w.astype(dt, copy=False)
        # With logistic units the running sum is made of -W and -c, so that the block holds -a_d and
        # exp(-a_d) needs no negation pass (see _logistic_from_negated); ReLU units take a_d itself.
        sign = -1.0 if logistic else 1.0
        W_run = -Wo if logistic else Wo
        # can |a_d| exceed the cap (so that exp(-a_d) may overflow)? |a_d| <= |c| + max|x| sum_i |W[:, i]|
        cap = _EXP_CAP[np.dtype(dt)]
        bound = np.max(np.abs(c) + np.max(np.abs(xo), initial=0.0) * np.abs(Wo).sum(axis=0))
        clamp = cap if logistic and bound > cap else None
        backprop = mode in ("grad", "hvp")
        r_mode = mode in ("r_forward", "hvp")
        has_vp = r_mode and v["v_params"] is not None
        has_vx = r_mode and v["v_x"] is not None
        if has_vp:
            v_Wo, v_Vo, v_bo, v_c = self._ordered(v["v_params"])
        want_p = backprop and param_grads
        want_x = backprop and input_grads
        if backprop:
            V_and_v_V = np.zeros((D, 2, H), dtype=dt)                             # rows V[o_d] and v_V[o_d]
            V_and_v_V[:, 0] = Vo
            if has_vp:
                V_and_v_V[:, 1] = v_Vo

        out = {"log_q": np.zeros(N, dtype=dt)}
        z_all = np.empty((N, D), dtype=dt) if (keep_z or mode == "r_forward") else None
        R_z_all = np.empty((N, D), dtype=dt) if mode == "r_forward" else None
        # dE/dW[:, o_d] (as rows), dE/dV[o_d], dE/db_{o_d}, dE/dc, dE/dx_{o_d}, in position order;
        # in "hvp" mode they hold the R{...} of the same quantities
        if want_p:
            d_Wo, d_Vo, d_bo, d_c = (np.zeros(shape, dtype=dt) for shape in ((D, H), (D, H), D, H))
        if want_x:
            d_xo = np.empty((N, D), dtype=dt)

        rows, K = _plan(N, H)
        K = min(K, D)
        # block arrays; with logistic units f'(a_d) takes the place of -a_d in "a", and in "grad" mode
        # dh_d and then da_d take the place of h_d's partner buffers (no separate d_a)
        names = ["a", "h"] + (["f_prime"] if (backprop or r_mode) and not logistic else []) \
            + (["d_h"] if backprop else []) + (["d_a"] if mode == "hvp" else []) \
            + (["R_a", "R_h"] if r_mode else []) + (["R_d_h", "R_d_a"] if mode == "hvp" else [])
        for r0 in range(0, N, rows):
            r1 = min(N, r0 + rows)
            n = r1 - r0
            bufs = {name: np.empty((K, n, H), dtype=dt) for name in names}
            xT = np.ascontiguousarray(xo[r0:r1].T)                      # (D, n), positions first
            a_next = np.empty((n, H), dtype=dt)                                 # a_d of the block's first position
            np.multiply(c, sign, out=a_next)                            # (C.2), negated for logistic units
            if backprop:
                w_r = w[r0:r1]
                P_done = np.zeros((n, H), dtype=dt)                             # P_{d0-1}: sum of da over the positions done
            if r_mode:
                R_a_next = np.zeros((n, H), dtype=dt)
                if has_vp:
                    R_a_next += v_c                                     # (C.16)
                v_xT = np.ascontiguousarray(v["v_x"][r0:r1][:, self.order].T, dtype=dt) if has_vx else None
            if mode == "hvp":
                R_P_done = np.zeros((n, H), dtype=dt)                           # R{P_{d0-1}}
            zT = np.empty((D, n), dtype=dt)                             # z_d of the chunk, positions first

            for d0 in range(0, D, K):
                d1 = min(D, d0 + K)
                k = d1 - d0
                a, h = bufs["a"][:k], bufs["h"][:k]
                x_blk, W_blk, V_blk = xT[d0:d1], Wo[d0:d1], Vo[d0:d1]
                # ---- forward (C.2-C.7)
                _running_sum(a_next, [(x_blk, W_run[d0:d1])], a)        # a[j] = +-a_{d0+j}    (C.3, C.15)
                slope = backprop or r_mode
                if logistic:                                            # h_d (C.4), f'(a_d) in place of -a_d
                    f_prime = _logistic_from_negated(a, h, slope, clamp)
                else:
                    f(a, h)                                             # h_d                  (C.4)
                    f_prime = f_slope(a, h, bufs["f_prime"][:k]) if slope else None
                z = zT[d0:d1]
                np.matmul(h, V_blk[:, :, None], out=z[:, :, None])      # h_d . V[o_d]         (C.5)
                z += bo[d0:d1, None]
                if mode == "log_prob":
                    continue
                if r_mode:
                    # ---- R-forward (C.16-C.19)
                    R_a, R_h = bufs["R_a"][:k], bufs["R_h"][:k]
                    sources = ([(x_blk, v_Wo[d0:d1])] if has_vp else []) + ([(v_xT[d0:d1], W_blk)] if has_vx else [])
                    _running_sum(R_a_next, sources, R_a)                # R{a_d}               (C.17)
                    np.multiply(f_prime, R_a, out=R_h)                  # R{h_d}               (C.18)
                    R_z = _dot_rows(R_h, V_blk)                         # R{z_d}               (C.19)
                    if has_vp:
                        R_z += _dot_rows(h, v_Vo[d0:d1])
                        R_z += v_bo[d0:d1, None]
                    if mode == "r_forward":
                        R_z_all[r0:r1, d0:d1] = R_z.T
                        continue
                # ---- backprop (C.8-C.15)
                d_h = bufs["d_h"][:k]
                d_a = bufs["d_a"][:k] if mode == "hvp" else d_h         # "grad": da_d overwrites dh_d
                # sigma(-z_d) = 1 - y_d
                one_minus_y = nonlinearities.logistic(-z, np.empty_like(z)) if mode == "hvp" else None
                y = nonlinearities.logistic(z, np.empty_like(z))        # y_d                  (C.6)
                d_z = x_blk - y                                         # (C.8)
                d_z *= w_r
                _outer_pair(d_z, None, V_and_v_V[d0:d1], d_h)           # dh_d = dz_d V[o_d]   (C.9)
                np.multiply(d_h, f_prime, out=d_a)                      # da_d                 (C.10)
                if mode == "grad":
                    P = _accumulate(P_done, d_a)                        # in place: P[j] = P_{d0+j}, da is gone
                    if want_p:
                        d_bo[d0:d1] += d_z.sum(axis=1)
                        d_Vo[d0:d1] += _weighted_rows(d_z, h)           # (C.11)
                        # (C.12) sum_n x_{o_d} S_d = sum_n x_{o_d} S - sum_n x_{o_d} P_d: the P_d part here,
                        # the S part (xT @ S) at the end of the chunk
                        d_Wo[d0:d1] -= _weighted_rows(x_blk, P)
                    if want_x:
                        # (C.14) w z_d + S_d . W[:, o_d] = w z_d - P_d . W[:, o_d] + S . W[:, o_d]: the first
                        # two terms here, the S part (S @ Wo.T) at the end of the chunk
                        d_x_blk = _dot_rows(P, W_blk)
                        np.subtract(z * w_r, d_x_blk, out=d_x_blk)
                        d_xo[r0:r1, d0:d1] = d_x_blk.T
                    continue
                # ---- R{backprop} (C.20-C.27)
                R_d_h, R_d_a = bufs["R_d_h"][:k], bufs["R_d_a"][:k]
                R_d_z = -y * one_minus_y * R_z                          # -R{y_d}, y(1-y) = sigma(z) sigma(-z) (C.20)
                if has_vx:
                    R_d_z += v_xT[d0:d1]
                R_d_z *= w_r                                            # R{dz_d}              (C.21)
                _outer_pair(R_d_z, d_z if has_vp else None, V_and_v_V[d0:d1], R_d_h)   # R{dh_d} (C.22)
                np.multiply(R_d_h, f_prime, out=R_d_a)                  # f'(a_d) R{dh_d}      (C.23)
                if logistic:                                            # + f''(a) R{a} dh, f'' = f' (1 - 2h)
                    scratch = R_d_h                                     # R{dh_d} is not needed any more
                    np.multiply(h, -2.0, out=scratch)
                    scratch += 1.0
                    scratch *= R_h                                      # R{h} = f' R{a}
                    scratch *= d_h
                    R_d_a += scratch
                P = _accumulate(P_done, d_a)                            # in place: P_d and R{P_d} replace
                R_P = _accumulate(R_P_done, R_d_a)                      # da_d and R{da_d}
                if want_p:
                    d_bo[d0:d1] += R_d_z.sum(axis=1)                    # (C.24)
                    d_Vo[d0:d1] += _weighted_rows(R_d_z, h)
                    d_Vo[d0:d1] += _weighted_rows(d_z, R_h)
                    # (C.25) sum_n v_x S_d + x R{S_d} with S_d = S - P_d, R{S_d} = R{S} - R{P_d}: the
                    # P parts here, the S parts (xT @ R{S}, v_xT @ S) at the end of the chunk
                    d_Wo[d0:d1] -= _weighted_rows(x_blk, R_P)
                    if has_vx:
                        d_Wo[d0:d1] -= _weighted_rows(v_xT[d0:d1], P)
                if want_x:
                    # (C.27) w R{z_d} + S_d . v_W[:, o_d] + R{S_d} . W[:, o_d], split the same way: the
                    # P parts here, the S parts (R{S} @ Wo.T, S @ v_Wo.T) at the end of the chunk
                    d_x_blk = _dot_rows(R_P, W_blk)
                    if has_vp:
                        d_x_blk += _dot_rows(P, v_Wo[d0:d1])
                    np.subtract(R_z * w_r, d_x_blk, out=d_x_blk)
                    d_xo[r0:r1, d0:d1] = d_x_blk.T

            out["log_q"][r0:r1] = np.sum(xT * zT - nonlinearities.softplus(zT), axis=0)   # (C.7), all positions
            if z_all is not None:
                z_all[r0:r1] = zT.T
            # ---- end of the chunk: P_done is now the total S = P_D (and R_P_done is R{S}), so the
            # S parts of the split sums above are added once, as matrix products over all positions
            if mode == "grad":
                S = P_done
                if want_p:
                    d_Wo += xT @ S                                       # (C.12)
                    d_c += S.sum(axis=0)                                 # (C.13)
                if want_x:
                    d_xo[r0:r1] += S @ Wo.T                              # (C.14)
            elif mode == "hvp":
                S, R_S = P_done, R_P_done
                if want_p:
                    d_Wo += xT @ R_S                                     # (C.25)
                    if has_vx:
                        d_Wo += v_xT @ S
                    d_c += R_S.sum(axis=0)                               # (C.26)
                if want_x:
                    d_xo[r0:r1] += R_S @ Wo.T                            # (C.27)
                    if has_vp:
                        d_xo[r0:r1] += S @ v_Wo.T

        inverse = np.argsort(self.order)
        if z_all is not None:
            out["z"] = z_all[:, inverse]
        if R_z_all is not None:
            out["R_z"] = R_z_all[:, inverse]
        if want_p:
            out["d_params"] = self._scatter(d_Wo, d_Vo, d_bo, d_c)
        if want_x:
            out["d_x"] = d_xo[:, inverse]
        return out

    # -------------------------------------------------------------------- sampling
    def sample(self, n, rng):
        """Ancestral sampling (section 4.2.2): n exact, independent samples.

        Position by position, y_d = q(x_{o_d} = 1 | x_{o_<d}) is computed (C.4-C.6)
        and x_{o_d} is drawn from Bernoulli(y_d), then fed forward (C.3).

        Parameters
        ----------
        n : int
        rng : numpy.random.Generator

        Returns
        -------
        x : ndarray of shape (n, D), float64 in {0, 1}
            The samples, data order.
        y : ndarray of shape (n, D), float64 in [0, 1]
            The conditional probabilities each sample was drawn with, data order:
            y[:, i] is the probability that input i was on given the inputs
            drawn before it (a grey-level "smoothed" image of the sample).
        """
        n = check_positive_int(n, "n")
        check_generator(rng)
        D, H = self.n_inputs, self.n_hidden
        f = NONLINEARITIES[self.nonlinearity][0]
        Wo, Vo, bo, c = self._ordered()
        u = rng.random((n, D))                                           # one uniform per (sample, position)
        dt = self.dtype
        xs, ys = np.empty((n, D), dtype=dt), np.empty((n, D), dtype=dt)
        rows = max(1, min(n, 4 * _MAX_ROWS))
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            a = np.empty((r1 - r0, H), dtype=dt)
            a[...] = c                                                   # (C.2)
            h = np.empty_like(a)
            for d in range(D):
                f(a, h)                                                  # (C.4)
                zd = h @ Vo[d] + bo[d]                                   # (C.5)
                yd = nonlinearities.logistic(zd, zd)                     # (C.6)
                xd = (u[r0:r1, d] < yd).astype(dt)
                xs[r0:r1, d], ys[r0:r1, d] = xd, yd
                a += xd[:, None] * Wo[d]                                 # (C.3)
        inverse = np.argsort(self.order)
        return xs[:, inverse], ys[:, inverse]

    # -------------------------------------------------------------------- training
    def fit(self, data, rng, *, n_steps=None, passes=None, batch_size=20, optimizer=None, test=None,
            monitor_every=None, progress=True, checkpoint=None, checkpoint_every=500, settings=None,
            label="NADE", callback=None, init_biases=False):
        """Maximum-likelihood training on a binary dataset (minibatches drawn without replacement).

        Maximises the mean log q (4.36) of the data: the KL loss (4.6-4.7) with the
        data in place of samples of p, following the gradient (4.26).

        Thin wrapper: ``fit_nade(self, MinibatchDrawer(data, batch_size, rng), n_steps, ...)``.

        Parameters
        ----------
        data : array_like of shape (M, D), binary
        rng : numpy.random.Generator
            Shuffles the data.
        n_steps : int, optional
            Number of minibatch updates; give this or ``passes``
            (n_steps = ceil(passes * M / batch_size)).
        batch_size : int
        optimizer, test, monitor_every, progress, checkpoint, checkpoint_every, settings, label, callback
            As in :func:`fit_nade` (the minibatch drawer, hence ``rng``, is checkpointed).
        init_biases : bool
            First call :meth:`set_biases_from_data` on ``data`` (off by default, so
            the thesis set-up, training from the random start, is unchanged).

        Returns
        -------
        kd_ref.optim.TrainResult
        """
        data = check_binary_dataset(data, "data", self.n_inputs)
        batch_size = check_positive_int(batch_size, "batch_size")
        if (n_steps is None) == (passes is None):
            raise ValueError(f"n_steps, passes: expected exactly one of them, received n_steps={n_steps!r}, "
                             f"passes={passes!r}")
        if n_steps is None:
            passes = check_in_range(passes, "passes", 0.0, np.inf, low_open=True)
            n_steps = max(1, int(np.ceil(passes * data.shape[0] / batch_size)))
        n_steps = check_positive_int(n_steps, "n_steps")
        if test is not None:                       # checked here too, so a bad test set fails before b is set
            test = check_binary_dataset(test, "test", self.n_inputs)
        check_training_options(optimizer=optimizer, monitor_every=monitor_every, callback=callback, progress=progress,
                               checkpoint=checkpoint, label=label)
        checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
        check_settings(settings)
        init_biases = check_bool(init_biases, "init_biases")
        check_generator(rng)
        draw = MinibatchDrawer(data, batch_size, rng)
        saved = self.params.copy()
        try:
            if init_biases:
                self.set_biases_from_data(data)
            return fit_nade(self, draw, n_steps, optimizer=optimizer, test=test, monitor_every=monitor_every,
                            progress=progress, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                            settings=settings, label=label, callback=callback)
        except Exception:
            # the biases set above are part of this fit: a fit that fails leaves no trace of them
            # (kd_ref.optim.train answers for its own steps)
            self.params[...] = saved
            raise

    # ------------------------------------------------------------------ save / load
    def save(self, path):
        """Write the NADE to ``path`` (.npz, exactly this name); :meth:`load` restores it bit for bit, dtype included."""
        W, V, b, c = self.param_views(self.params)
        npzfile.save(path, FILE_KIND, FILE_VERSION, W=W, V=V, b=b, c=c, order=self.order.astype(np.int64),
                     nonlinearity=np.array(self.nonlinearity))

    @classmethod
    def load(cls, path):
        """Read a NADE written by :meth:`save`; a damaged or foreign file raises ValueError naming the problem."""
        arrays = npzfile.load(path, FILE_KIND, {FILE_VERSION}, required=("W", "V", "b", "c", "order", "nonlinearity"))
        W = arrays["W"]
        if W.ndim != 2:
            raise ValueError(f"path: expected W of shape (H, D), received shape {W.shape}")
        H, D = W.shape
        for key, shape in (("V", (D, H)), ("b", (D,)), ("c", (H,)), ("order", (D,))):
            if arrays[key].shape != shape:
                raise ValueError(f"path: expected {key} of shape {shape} (W is {W.shape}), "
                                 f"received shape {arrays[key].shape}")
        dtype = W.dtype
        for key in ("W", "V", "b", "c"):
            if arrays[key].dtype != dtype or dtype not in (np.float64, np.float32):
                raise ValueError(f"path: expected {key} of dtype float64 or float32, the dtype of W ({dtype}), "
                                 f"received {arrays[key].dtype}")
        nade = cls(D, H, None, order=arrays["order"], nonlinearity=str(arrays["nonlinearity"]), dtype=dtype)
        for key, view in zip(("W", "V", "b", "c"), (nade.W, nade.V, nade.b, nade.c)):
            view[...] = arrays[key]
        if not np.all(np.isfinite(nade.params)):
            raise ValueError(f"path: expected finite parameters, {str(path)!r} holds NaN or infinite values")
        return nade

    def __repr__(self):
        return (f"NADE(n_inputs={self.n_inputs}, n_hidden={self.n_hidden}, nonlinearity={self.nonlinearity!r}, "
                f"order={'identity' if np.array_equal(self.order, np.arange(self.n_inputs)) else 'custom'}"
                + (")" if self.dtype == np.float64 else f", dtype={self.dtype.name})"))


# ---------------------------------------------------------------- reference twins
# The engine above fuses forward, backprop and R{backprop} into one blocked pass with
# prefix sums. The functions below compute the same results the slow, plain way: a
# loop over positions d with one line per equation of Appendix C, named as there
# (S_d is summed literally, so they cost O(D^2 N H)). They exist to be read against
# the appendix and to test the engine (tests/test_nade.py); use NADE.grad / NADE.hvp.
# Arrays indexed [d] hold position d's quantity for every row: a[d] is a_d, (N, H).

def _reference_forward(nade, x):
    """Forward pass (C.2-C.7): a, h (D, N, H), z, y (D, N) in position order, and log q (N,)."""
    f = nonlinearities.get(nade.nonlinearity)
    W, V, b, c = nade.W, nade.V, nade.b, nade.c
    (N, D), H = x.shape, nade.n_hidden
    a, h, z, y = np.empty((D, N, H)), np.empty((D, N, H)), np.empty((D, N)), np.empty((D, N))
    log_q = np.zeros(N)
    a_next = np.tile(c, (N, 1))                                           # a_1 = c                       (C.2)
    for d, i in enumerate(nade.order):                                   # position d models input i = o_d
        a[d] = a_next
        h[d] = f.forward(a[d])                                           # h_d = f(a_d)                  (C.4)
        z[d] = b[i] + h[d] @ V[i]                                        # z_d = b_{o_d} + h_d . V[o_d]  (C.5)
        y[d] = special.expit(z[d])                                       # y_d = sigma(z_d)              (C.6)
        log_q += x[:, i] * special.log_expit(z[d]) + (1 - x[:, i]) * special.log_expit(-z[d])   # (C.7)
        a_next = a[d] + np.outer(x[:, i], W[:, i])                       # a_{d+1} = a_d + x_{o_d} W[:, o_d] (C.3)
    return a, h, z, y, log_q


def _reference_deltas(nade, x, w, a, h, y):
    """Backward quantities (C.8-C.10, C.15): d_z (D, N), d_h, d_a and S (D, N, H), position order."""
    f = nonlinearities.get(nade.nonlinearity)
    D = x.shape[1]
    d_z, d_h, d_a, S = np.empty_like(y), np.empty_like(h), np.empty_like(h), np.empty_like(h)
    for d, i in enumerate(nade.order):
        d_z[d] = w * (x[:, i] - y[d])                                    # dz_d = w (x_{o_d} - y_d)      (C.8)
        d_h[d] = np.outer(d_z[d], nade.V[i])                             # dh_d = dz_d V[o_d]            (C.9)
        d_a[d] = f.backward(a[d], h[d], d_h[d])                          # da_d = f'(a_d) * dh_d         (C.10)
    for d in range(D):
        S[d] = d_a[d + 1:].sum(axis=0)                                   # S_d = sum_{d' > d} da_{d'}    (C.15)
    return d_z, d_h, d_a, S


def reference_backprop(nade, x, weights=None):
    """Backprop (C.2-C.15) as a plain loop over positions: the readable twin of :meth:`NADE.grad`.

    Parameters
    ----------
    nade : NADE
    x : array_like of shape (N, D) or (D,)
        Any real values (x is treated as continuous, as in C.14), data order.
    weights : array_like of shape (N,), optional
        w_n in E = sum_n w_n log q(x_n); default 1.

    Returns
    -------
    log_q : ndarray of shape (N,)
    d_params : ndarray of shape (P,)
        dE/dtheta, laid out like ``nade.params``.
    d_x : ndarray of shape (N, D)
        dE/dx, data order.

    Examples
    --------
    >>> nade = NADE(3, 2, np.random.default_rng(0), init_std=1.0)
    >>> x = np.array([[1.0, 0.0, 1.0]])
    >>> log_q, d_params, d_x = reference_backprop(nade, x)
    >>> bool(np.allclose(d_params, nade.grad(x)[1], rtol=1e-12, atol=1e-15))
    True
    """
    if not isinstance(nade, NADE):
        raise TypeError(f"nade: expected a kd_ref.nade.NADE, received {type(nade).__name__}")
    x = nade._check_x(x, True)
    w = nade._check_weights(weights, x.shape[0])
    a, h, z, y, log_q = _reference_forward(nade, x)
    d_z, d_h, d_a, S = _reference_deltas(nade, x, w, a, h, y)
    d_params = np.zeros(nade.n_params)
    d_W, d_V, d_b, d_c = nade.param_views(d_params)
    d_x = np.empty(x.shape)
    for d, i in enumerate(nade.order):
        d_b[i] = d_z[d].sum()                                            # dE/db_{o_d} = sum_n dz_d      (C.8)
        d_V[i] = d_z[d] @ h[d]                                           # dE/dV[o_d] = sum_n dz_d h_d   (C.11)
        d_W[:, i] = x[:, i] @ S[d]                                       # dE/dW[:, o_d] = sum_n x S_d   (C.12)
        d_x[:, i] = w * z[d] + S[d] @ nade.W[:, i]                       # dE/dx_{o_d} = w z_d + S_d . W[:, o_d] (C.14)
    d_c[...] = d_a.sum(axis=(0, 1))                                      # dE/dc = sum_n sum_d da_d      (C.13)
    return log_q, d_params, d_x


def reference_r_backprop(nade, x, v_params=None, v_x=None, weights=None):
    """R{backprop} (C.16-C.27) as a plain loop over positions: the readable twin of :meth:`NADE.hvp`.

    Applies R_v to every line of :func:`reference_backprop` for the direction
    v = (v_params, v_x); a part given as None is zero. Nothing is skipped for a
    zero part (the reduced forms C.28 are the engine's business).

    Parameters
    ----------
    nade : NADE
    x : array_like of shape (N, D) or (D,)
        Any real values, data order.
    v_params : array_like of shape (P,), optional
    v_x : array_like of shape (N, D), optional
    weights : array_like of shape (N,), optional

    Returns
    -------
    Hv_params : ndarray of shape (P,)
        R{dE/dtheta}, laid out like ``nade.params``.
    Hv_x : ndarray of shape (N, D)
        R{dE/dx}, data order.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> nade = NADE(3, 2, rng, init_std=1.0)
    >>> x, v_x = np.array([[1.0, 0.0, 1.0]]), rng.normal(size=(1, 3))
    >>> Hv_params, Hv_x = reference_r_backprop(nade, x, None, v_x)
    >>> bool(np.allclose(Hv_x, nade.hvp(x, None, v_x)[1], rtol=1e-12, atol=1e-15))
    True
    """
    if not isinstance(nade, NADE):
        raise TypeError(f"nade: expected a kd_ref.nade.NADE, received {type(nade).__name__}")
    x = nade._check_x(x, True)
    v = nade._check_direction(x, v_params, v_x)
    w = nade._check_weights(weights, x.shape[0])
    v_params = np.zeros(nade.n_params) if v["v_params"] is None else v["v_params"]
    v_x = np.zeros(x.shape) if v["v_x"] is None else v["v_x"]
    f = nonlinearities.get(nade.nonlinearity)
    W, V = nade.W, nade.V
    v_W, v_V, v_b, v_c = nade.param_views(v_params)
    a, h, z, y, _ = _reference_forward(nade, x)
    d_z, d_h, d_a, S = _reference_deltas(nade, x, w, a, h, y)
    (N, D), H = x.shape, nade.n_hidden
    R_a, R_h, R_z, R_y = np.empty((D, N, H)), np.empty((D, N, H)), np.empty((D, N)), np.empty((D, N))
    R_d_z, R_d_h, R_d_a, R_S = np.empty((D, N)), np.empty((D, N, H)), np.empty((D, N, H)), np.empty((D, N, H))
    R_a_next = np.tile(v_c, (N, 1))                                      # R{a_1} = v_c                  (C.16)
    for d, i in enumerate(nade.order):
        R_a[d] = R_a_next
        R_h[d] = f.r_forward(a[d], h[d], R_a[d])                         # R{h_d} = f'(a_d) R{a_d}       (C.18)
        R_z[d] = v_b[i] + h[d] @ v_V[i] + R_h[d] @ V[i]                  # (C.19)
        R_y[d] = special.expit(z[d]) * special.expit(-z[d]) * R_z[d]    # y_d (1 - y_d) R{z_d}          (C.20)
        R_a_next = R_a[d] + np.outer(x[:, i], v_W[:, i]) + np.outer(v_x[:, i], W[:, i])   # (C.17)
        R_d_z[d] = w * (v_x[:, i] - R_y[d])                              # R{dz_d}                       (C.21)
        R_d_h[d] = np.outer(R_d_z[d], V[i]) + np.outer(d_z[d], v_V[i])   # R{dh_d}                       (C.22)
        R_d_a[d] = f.r_backward(a[d], h[d], d_h[d], R_a[d], R_d_h[d])    # f' R{dh_d} + f'' R{a_d} dh_d  (C.23)
    for d in range(D):
        R_S[d] = R_d_a[d + 1:].sum(axis=0)                               # R{S_d} = sum_{d' > d} R{da_d'}
    Hv_params = np.zeros(nade.n_params)
    R_d_W, R_d_V, R_d_b, R_d_c = nade.param_views(Hv_params)
    Hv_x = np.empty(x.shape)
    for d, i in enumerate(nade.order):
        R_d_b[i] = R_d_z[d].sum()                                        # R{dE/db_{o_d}}                (C.24)
        R_d_V[i] = R_d_z[d] @ h[d] + d_z[d] @ R_h[d]                     # R{dE/dV[o_d]}                 (C.24)
        R_d_W[:, i] = v_x[:, i] @ S[d] + x[:, i] @ R_S[d]                # R{dE/dW[:, o_d]}              (C.25)
        Hv_x[:, i] = w * R_z[d] + S[d] @ v_W[:, i] + R_S[d] @ W[:, i]    # R{dE/dx_{o_d}}                (C.27)
    R_d_c[...] = R_d_a.sum(axis=(0, 1))                                  # R{dE/dc}                      (C.26)
    return Hv_params, Hv_x


# -------------------------------------------------------------------------- training
def log_likelihood_objective(nade):
    """objective(batch) -> (-mean log q, its gradient) for :func:`kd_ref.optim.train` (KL loss 4.6-4.7, 4.26)."""
    if not isinstance(nade, NADE):
        raise TypeError(f"nade: expected a kd_ref.nade.NADE, received {type(nade).__name__}")

    def objective(batch):
        n = batch.shape[0]
        log_q, d_params, _ = nade.grad(batch, weights=np.full(n, 1.0 / n), input_grads=False)
        return -float(np.mean(log_q)), -d_params
    return objective


def fit_nade(nade, draw, n_steps, optimizer=None, test=None, monitor_every=None, progress=True, checkpoint=None,
             checkpoint_every=500, settings=None, label="NADE", callback=None):
    """Maximum-likelihood training of a NADE on any stream of binary minibatches (KL loss, gradient 4.26).

    With minibatches drawn from p (e.g. RBM samples) this is KL distillation
    (4.6-4.7); with a dataset, ordinary maximum likelihood. Minimises -mean log q
    (4.36) over each minibatch with :func:`kd_ref.optim.train`
    (ADADELTA by default, rho = 0.95, eps = 1e-6 as in the thesis).

    Parameters
    ----------
    nade : NADE
        Trained in place.
    draw : callable () -> ndarray of shape (B, D)
        Minibatch source: a :class:`kd_ref.optim.MinibatchDrawer` over a dataset, or any sampler
        (e.g. Gibbs chains of an RBM, section 4.2.3).
    n_steps : int
    optimizer : kd_ref.optim.SGD or Adadelta, optional
    test : array_like of shape (M, D), optional
        Binary test set; its average log-probability is monitored every
        ``monitor_every`` steps and at the end (``TrainResult.monitor``).
    monitor_every : int, optional
        Default: about 20 evaluations per run when ``test`` is given.
    progress : bool
    checkpoint : str, optional
        Resumable checkpoint file (see :func:`kd_ref.optim.train`). A ``draw`` with
        ``state()`` (a MinibatchDrawer, a ChainStream) is checkpointed with it, so the
        resumed run sees the same stream. Rewritten every ``checkpoint_every`` steps.
    settings : dict, optional
        Values a checkpoint must have been made with (:func:`kd_ref.optim.train`).
    label : str
    callback : callable (step, loss) -> bool, optional

    Returns
    -------
    kd_ref.optim.TrainResult
    """
    if not isinstance(nade, NADE):
        raise TypeError(f"nade: expected a kd_ref.nade.NADE, received {type(nade).__name__}")
    if not callable(draw):
        raise TypeError(f"draw: expected a callable returning a minibatch, received {type(draw).__name__}")
    n_steps = check_positive_int(n_steps, "n_steps")
    options = check_training_options(optimizer=optimizer, monitor_every=monitor_every, callback=callback,
                                     progress=progress, checkpoint=checkpoint, label=label)
    monitor_every = options["monitor_every"]
    optimizer = Adadelta() if optimizer is None else optimizer
    monitor = None
    if test is not None:
        test = check_binary_dataset(test, "test", nade.n_inputs)
        if monitor_every is None:
            monitor_every = max(1, n_steps // 20)

        def average_test_log_prob():
            return float(np.mean(nade.log_prob(test)))
        monitor = average_test_log_prob
    objective = log_likelihood_objective(nade)

    def checked(batch):
        return objective(nade._check_x(batch, False, name="draw()"))
    stateful = {"draw": draw} if callable(getattr(draw, "state", None)) else None
    return train(nade.params, checked, draw, optimizer, n_steps, monitor=monitor, monitor_every=monitor_every,
                 callback=callback, progress=progress, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                 stateful=stateful, settings=settings, label=label)
