"""Binary restricted Boltzmann machine: log phi and its derivatives, block Gibbs chains, CD-k, exact log Z (4.30-4.34).

Energy E(x, h) = -b_v.x - b_h.h - x.W.h over x in {0,1}^D, h in {0,1}^H. Summing
out h gives the unnormalised log-probability (4.31-4.32)

    a       = b_h + x W                                  shape (N, H)
    log phi = b_v . x + sum_j softplus(a_j)              (4.32), p(x) = phi(x) / Z

and the two conditionals used by block Gibbs sampling

    p(h_j = 1 | x) = sigma(b_h + x W)_j                  (4.33)
    p(x_i = 1 | h) = sigma(b_v + h W^T)_i                (4.34)

The thesis gives no formulas for the derivatives of log phi; the ones below are
derived here by differentiating (4.32). For E = sum_n w_n log phi(x_n), with
s = sigma(a) (x treated as continuous):

    dE/dx   = w (b_v + s W^T);   dE/dW = x^T (w s);   dE/db_v = sum w x;   dE/db_h = sum w s

and their R-forms for a direction v = (v_W, v_bv, v_bh, v_x) (R technique, appendix A):

    R{a} = v_x W + x v_W + v_bh;   R{s} = s (1 - s) R{a} = sigma(a) sigma(-a) R{a}
    R{dE/dx} = w (v_bv + R{s} W^T + s v_W^T);   R{dE/dW} = v_x^T (w s) + x^T (w R{s})
    R{dE/db_v} = sum w v_x;   R{dE/db_h} = sum w R{s}

Parameters live in one flat float64 vector ``params`` with views W (D, H),
b_visible (D,), b_hidden (H,), in that order; the file layout of the CD25(500)
RBM (``rbm_cd25_500.npz``) is the same.
"""
import hashlib
import json
import os
import time
from dataclasses import dataclass

import numpy as np

from . import npzfile
from ._validation import (as_batch, as_binary_batch, as_float_array, check_binary_dataset, check_bool,
                          check_finite_real, check_float_dtype, check_generator, check_in_range, check_path, check_positive_int,
                          check_training_options)
from .nonlinearities import logistic, logistic_slope, softplus
from .optim import (SGD, CheckpointError, CtrlC, Interrupted, MinibatchDrawer, check_settings, check_state_keys,
                    generator_state, load_generator_state, state_count, train)
from .params import ParamLayout
from .progress import Progress

FILE_KIND = "kd_ref.RBM"
FILE_VERSION = 1
CHAINS_KIND = "kd_ref.random_chains"
CHAINS_VERSION = 1
MAX_ENUMERATED_UNITS = 26
_ENUM_CHUNK = 1 << 14


def binary_states(start, stop, m):
    """Rows start..stop-1 of the 2^m binary states, as float64 (stop - start, m); bit j of the index is column j."""
    idx = np.arange(start, stop, dtype=np.int64)[:, None]
    return ((idx >> np.arange(m, dtype=np.int64)) & 1).astype(np.float64)


class RBM:
    """A binary RBM with D visible and H hidden units (section 4.2.1): p(x) = phi(x) / Z (4.30-4.32).

    Parameters
    ----------
    n_visible, n_hidden : int
    rng : numpy.random.Generator or None
        Draws W i.i.d. N(0, init_std^2); biases start at 0. ``None``: all zeros.
        Required, as on every model.
    init_std : float

    Attributes
    ----------
    params : ndarray of shape (P,), P = D H + D + H
    W : ndarray of shape (D, H)          view of params
    b_visible : ndarray of shape (D,)    view of params
    b_hidden : ndarray of shape (H,)     view of params
    layout : kd_ref.params.ParamLayout   the blocks W, b_visible, b_hidden of params
    n_visible, n_hidden, n_params : int

    Notes
    -----
    The model protocol (README, "Model protocol"): a density model like NADE, with
    log phi in place of log q: ``grad(x, *, weights, param_grads, input_grads,
    continuous) -> (log_phi, d_params, d_x)``, ``hvp(x, v_params, v_x, *, weights, ...)
    -> (Hv_params, Hv_x)``, ``param_views``, ``save``, ``load`` as on MLP and NADE.

    Examples
    --------
    >>> import numpy as np
    >>> rbm = RBM(3, 2, np.random.default_rng(0), init_std=1.0)
    >>> x = (np.arange(8)[:, None] >> np.arange(3)) & 1
    >>> bool(np.isclose(np.logaddexp.reduce(rbm.log_phi(x)), rbm.log_z_exact()))
    True
    """

    def __init__(self, n_visible, n_hidden, rng, *, init_std=0.01):
        self.n_visible = check_positive_int(n_visible, "n_visible")
        self.n_hidden = check_positive_int(n_hidden, "n_hidden")
        init_std = check_in_range(init_std, "init_std", 0.0, np.inf)
        if rng is not None:
            check_generator(rng)
        D, H = self.n_visible, self.n_hidden
        self.layout = ParamLayout([("W", (D, H)), ("b_visible", (D,)), ("b_hidden", (H,))])
        self.n_params = self.layout.size
        self.params = self.layout.zeros()
        self.W, self.b_visible, self.b_hidden = self.param_views(self.params)
        if rng is not None:
            self.W[...] = rng.normal(0.0, init_std, size=(D, H))

    # ----------------------------------------------------------------- parameters
    def param_views(self, flat):
        """Split a flat vector of length P into views (W (D, H), b_visible (D,), b_hidden (H,))."""
        return self.layout.views(flat)

    def set_params(self, values):
        """Copy ``values`` (shape (P,), finite) into ``params`` in place."""
        self.params[...] = as_float_array(values, "values", shape=(self.n_params,))

    @classmethod
    def from_arrays(cls, W, b_visible, b_hidden):
        """An RBM holding copies of the given arrays: W (D, H), b_visible (D,), b_hidden (H,)."""
        W = as_float_array(W, "W", ndim=2)
        D, H = W.shape
        b_visible = as_float_array(b_visible, "b_visible", shape=(D,))
        b_hidden = as_float_array(b_hidden, "b_hidden", shape=(H,))
        rbm = cls(D, H, None)
        rbm.W[...], rbm.b_visible[...], rbm.b_hidden[...] = W, b_visible, b_hidden
        return rbm

    @classmethod
    def from_file(cls, path=None):
        """The CD25(500) RBM of Salakhutdinov and Murray from ``rbm_cd25_500.npz``.

        ``path``: the file or its folder; default ``$KD_REF_DATA/rbm_cd25_500.npz``
        (see :func:`kd_ref.datasets.load_rbm`, which gives the error to expect when absent).
        """
        from .datasets import load_rbm

        arrays = load_rbm(path)
        return cls.from_arrays(arrays["W"], arrays["b_visible"], arrays["b_hidden"])

    def save(self, path):
        """Write the RBM to ``path`` (.npz, exactly this name); :meth:`load` restores it bit for bit."""
        npzfile.save(path, FILE_KIND, FILE_VERSION, W=self.W, b_visible=self.b_visible, b_hidden=self.b_hidden)

    @classmethod
    def load(cls, path):
        """Read an RBM written by :meth:`save`, or an untagged .npz with W, b_visible, b_hidden (the reference file)."""
        arrays = npzfile.read_arrays(path)                        # never unpickles; clear error when damaged
        if "kind" in arrays or "version" in arrays:
            arrays = npzfile.load(path, FILE_KIND, {FILE_VERSION})
        missing = [k for k in ("W", "b_visible", "b_hidden") if k not in arrays]
        if missing:
            raise ValueError(f"path: expected arrays W, b_visible, b_hidden, {str(path)!r} holds {sorted(arrays)}")
        for key in ("W", "b_visible", "b_hidden"):
            if arrays[key].dtype != np.float64:
                raise ValueError(f"path: expected {key} of dtype float64, received {arrays[key].dtype}")
        try:
            return cls.from_arrays(arrays["W"], arrays["b_visible"], arrays["b_hidden"])
        except ValueError as err:
            raise ValueError(f"path: {str(path)!r} holds inconsistent arrays: {err}") from None

    def __repr__(self):
        return f"RBM(n_visible={self.n_visible}, n_hidden={self.n_hidden})"

    # --------------------------------------------------------------------- checks
    def _check_x(self, x, continuous, name="x"):
        """x as a float64 (N, D) batch, binary unless ``continuous``."""
        return as_binary_batch(x, name, self.n_visible, check_bool(continuous, "continuous"))

    # ------------------------------------------------------------------ log phi
    def log_phi(self, x, *, continuous=False):
        """Unnormalised log-probability log phi(x) = b_v.x + sum_j softplus(b_h + x W)_j (4.31-4.32).

        Parameters
        ----------
        x : array_like of shape (N, D) or (D,), binary (any reals with ``continuous=True``)

        Returns
        -------
        ndarray of shape (N,)
        """
        x = self._check_x(x, continuous)
        return self._log_phi(x)

    def _log_phi(self, x):
        return x @ self.b_visible + softplus(x @ self.W + self.b_hidden).sum(axis=1)

    def log_prob_exact(self, x, log_z=None):
        """log p(x) = log phi(x) - log Z (4.30-4.32), Z by enumeration unless ``log_z`` (finite) is given.

        Enumeration is for tiny models only, see :meth:`log_z_exact`.
        """
        if log_z is not None:
            log_z = check_finite_real(log_z, "log_z")
        lp = self.log_phi(x)
        return lp - (self.log_z_exact() if log_z is None else log_z)

    def grad(self, x, *, weights=None, param_grads=True, input_grads=True, continuous=False):
        """Gradient of E = sum_n w_n log phi(x_n) w.r.t. the parameters and x: (4.32) differentiated.

        The formulas are in the module notes (derived here; the thesis gives none).
        The x-part, w_n d log phi / dx_n with x treated as continuous, is the
        teacher's score that score matching compares with (4.28).

        Parameters
        ----------
        x : array_like of shape (N, D)
        weights : array_like of shape (N,), optional, keyword only
            w_n (any real numbers; default 1).
        param_grads, input_grads : bool, keyword only
            Which parts of the gradient to compute.
        continuous : bool, keyword only
            Accept real-valued x (needed for finite differences in x).

        Returns
        -------
        log_phi : ndarray of shape (N,)
        d_params : ndarray of shape (P,) or None     (layout of ``params``)
        d_x : ndarray of shape (N, D) or None
        """
        x = self._check_x(x, continuous)
        w = np.ones(x.shape[0]) if weights is None else as_float_array(weights, "weights", shape=(x.shape[0],))
        param_grads, input_grads = check_bool(param_grads, "param_grads"), check_bool(input_grads, "input_grads")
        a = x @ self.W + self.b_hidden
        log_phi = x @ self.b_visible + softplus(a).sum(axis=1)
        s = logistic(a, a)                                       # sigma(a), p(h = 1 | x) (4.33)
        d_params = d_x = None
        if param_grads:
            ws = s * w[:, None]
            d_params = np.concatenate([(x.T @ ws).ravel(), w @ x, ws.sum(axis=0)])
        if input_grads:
            d_x = (s @ self.W.T + self.b_visible) * w[:, None]
        return log_phi, d_params, d_x

    def hvp(self, x, v_params=None, v_x=None, *, weights=None, param_grads=True, input_grads=True,
            continuous=False):
        """H v for E = sum_n w_n log phi(x_n), H the joint Hessian over (params, x), by the R technique (appendix A).

        R applied to the gradient formulas of :meth:`grad`; the R-forms are in the module notes.

        ``None`` for a part of the direction means zero and drops its terms.

        Parameters
        ----------
        x : array_like of shape (N, D)
        v_params : array_like of shape (P,) or None
        v_x : array_like of shape (N, D) or None
        weights, param_grads, input_grads, continuous : keyword only, as in :meth:`grad`

        Returns
        -------
        Hv_params : ndarray of shape (P,) or None
        Hv_x : ndarray of shape (N, D) or None
        """
        x = self._check_x(x, continuous)
        w = np.ones(x.shape[0]) if weights is None else as_float_array(weights, "weights", shape=(x.shape[0],))
        vp = None if v_params is None else as_float_array(v_params, "v_params", shape=(self.n_params,))
        vx = None if v_x is None else as_float_array(v_x, "v_x", shape=x.shape)
        param_grads, input_grads = check_bool(param_grads, "param_grads"), check_bool(input_grads, "input_grads")
        a = x @ self.W + self.b_hidden
        s = logistic(a, np.empty_like(a))
        Ra = np.zeros_like(s)
        if vp is not None:
            vW, vbv, vbh = self.param_views(vp)
            Ra += x @ vW + vbh
        if vx is not None:
            Ra += vx @ self.W
        Rs = logistic_slope(a, a) * Ra                           # sigma'(a) = sigma(a) sigma(-a): 1 - s is 0 for a > 37
        ws, wRs = s * w[:, None], Rs * w[:, None]
        Hv_params = Hv_x = None
        if param_grads:
            HW = x.T @ wRs
            Hbv = np.zeros(self.n_visible)
            if vx is not None:
                HW += vx.T @ ws
                Hbv = w @ vx
            Hv_params = np.concatenate([HW.ravel(), Hbv, wRs.sum(axis=0)])
        if input_grads:
            Hv_x = wRs @ self.W.T
            if vp is not None:
                Hv_x += ws @ vW.T + w[:, None] * vbv
        return Hv_params, Hv_x

    # ---------------------------------------------------------------- conditionals
    def hidden_probs(self, x):
        """p(h_j = 1 | x) = sigma(b_h + x W) (4.33); x of shape (N, D) -> (N, H)."""
        a = as_batch(x, "x", self.n_visible) @ self.W
        a += self.b_hidden
        return logistic(a, a)

    def visible_probs(self, h):
        """p(x_i = 1 | h) = sigma(b_v + h W^T) (4.34); h of shape (N, H) -> (N, D)."""
        b = as_batch(h, "h", self.n_hidden) @ self.W.T
        b += self.b_visible
        return logistic(b, b)

    def sample_hidden(self, x, rng):
        """h ~ p(h | x) (4.33): h_j = 1 where a uniform draw falls below sigma(b_h + x W)_j; float64 0/1, (N, H)."""
        p = self.hidden_probs(x)
        return np.less(check_generator(rng).random(p.shape), p, out=p)      # u < p as 1.0 / 0.0, over p

    def sample_visible(self, h, rng):
        """x ~ p(x | h) (4.34): x_i = 1 where a uniform draw falls below sigma(b_v + h W^T)_i; float64 0/1, (N, D)."""
        p = self.visible_probs(h)
        return np.less(check_generator(rng).random(p.shape), p, out=p)

    # --------------------------------------------------------------- exact log Z
    def log_z_exact(self, max_units=MAX_ENUMERATED_UNITS):
        """log Z by enumerating the smaller layer: 2^min(D, H) terms, summed in chunks (4.30-4.32).

        With H <= D, Z = sum_h exp(b_h.h + sum_i softplus(b_v + W h)_i): the sum over x
        of (4.30) done first, as (4.31-4.32) do for h. Otherwise Z = sum_x phi(x) (4.32).
        Refuses (ValueError) when min(D, H) > ``max_units`` (default 26: 6.7e7 states,
        already about a minute of work).
        """
        D, H = self.n_visible, self.n_hidden
        m = min(D, H)
        max_units = check_positive_int(max_units, "max_units")
        if m > max_units:
            raise ValueError(f"max_units: expected min(n_visible, n_hidden) <= max_units={max_units}, received {m} "
                             f"(D={D}, H={H}): enumerating 2^{m} states is out of reach; estimate log Z with "
                             f"kd_ref.partition instead")
        total = -np.inf
        for start in range(0, 2 ** m, _ENUM_CHUNK):
            states = binary_states(start, min(2 ** m, start + _ENUM_CHUNK), m)
            if H <= D:
                terms = states @ self.b_hidden + softplus(states @ self.W.T + self.b_visible).sum(axis=1)
            else:
                terms = self._log_phi(states)
            total = np.logaddexp(total, np.logaddexp.reduce(terms))
        return float(total)


# ------------------------------------------------------------------------ Gibbs sampling
class GibbsSampler:
    """K parallel block-Gibbs chains on an RBM, kept between calls (4.33-4.34).

    One sweep draws h ~ p(h | x) for every chain, then x ~ p(x | h); the chains are
    the rows of (K, D) and (K, H) arrays, so a sweep is two matrix products.

    Parameters
    ----------
    rbm : RBM
        Read at every sweep (changing its parameters changes the chains' target).
    rng : numpy.random.Generator
    n_chains : int, optional
        K; needed when ``init`` is not an array.
    init : array_like of shape (K, D), optional
        Binary starting states (e.g. NADE samples, section 4.2.4). Default:
        independent Bernoulli(``init_prob``) pixels.
    init_prob : float
    dtype : {numpy.float64, numpy.float32}
        Precision of the sweeps: the states, the conditionals and the uniform draws.
        float32 (the thesis's own code sampled in single precision) halves the cost of a
        sweep; its uniforms come from ``rng.random(dtype=float32)``, another stream than
        float64's, so the two chains differ draw by draw but have the same target.
        float64 (default) is exactly :meth:`RBM.sample_hidden` / :meth:`RBM.sample_visible`.

    Attributes
    ----------
    x : ndarray of shape (K, D)
        Current visible states (0/1 of ``dtype``).
    n_chains : int
        K, the rows of ``x`` (read-only).
    sweeps : int
        Sweeps made so far.

    Examples
    --------
    After burn-in, the chains' states are draws from p(x); their mean estimates E_p[x]:

    >>> import numpy as np
    >>> rbm = RBM(4, 3, np.random.default_rng(0), init_std=1.0)
    >>> chains = GibbsSampler(rbm, np.random.default_rng(2), n_chains=4000)
    >>> _ = chains.burn_in(50)
    >>> x = (np.arange(16)[:, None] >> np.arange(4)) & 1
    >>> p = np.exp(rbm.log_phi(x) - rbm.log_z_exact())
    >>> bool(np.all(np.abs(chains.x.mean(axis=0) - p @ x) < 4 * 0.5 / np.sqrt(4000)))
    True
    """

    def __init__(self, rbm, rng, n_chains=None, init=None, init_prob=0.5, dtype=np.float64):
        if not isinstance(rbm, RBM):
            raise TypeError(f"rbm: expected a kd_ref.rbm.RBM, received {type(rbm).__name__}")
        self.dtype = check_float_dtype(dtype)
        self.rbm = rbm
        self.rng = check_generator(rng)
        if init is None:
            if n_chains is None:
                raise ValueError("n_chains: expected the number of chains when init is not given, received None")
            n_chains = check_positive_int(n_chains, "n_chains")
            init_prob = check_in_range(init_prob, "init_prob", 0.0, 1.0)
            self.x = (self.rng.random((n_chains, rbm.n_visible)) < init_prob).astype(self.dtype)
        else:
            x0 = rbm._check_x(init, False, name="init")
            if n_chains is not None and check_positive_int(n_chains, "n_chains") != x0.shape[0]:
                raise ValueError(f"n_chains: expected the number of rows of init ({x0.shape[0]}), received {n_chains}")
            self.x = x0.astype(self.dtype)
        self.sweeps = 0
        self._next = 0

    @property
    def n_chains(self):
        """K, the number of chains (rows of ``x``)."""
        return self.x.shape[0]

    def sweep(self, n=1, progress=False):
        """Advance every chain by ``n`` sweeps; returns the current states, shape (K, D).

        The returned array is the sampler's new ``x``; later sweeps replace ``x``
        rather than overwrite it, so a returned array keeps its values.
        """
        n = check_positive_int(n, "n", minimum=0)
        progress = check_bool(progress, "progress")
        rng, dt = self.rng, self.dtype
        W, b_v, b_h = (a.astype(dt, copy=False) for a in (self.rbm.W, self.rbm.b_visible, self.rbm.b_hidden))
        bar = Progress(n, label="Gibbs sweeps", enabled=progress and n > 0)
        for t in range(n):
            h = _sample_layer(self.x, W, b_h, rng)              # h ~ p(h | x)   (4.33)
            self.x = _sample_layer(h, W.T, b_v, rng)            # x ~ p(x | h)   (4.34)
            self.sweeps += 1
            bar.update(t + 1)
        bar.close()
        return self.x

    def burn_in(self, n, progress=False):
        """Discard ``n`` sweeps (same as :meth:`sweep`, named for readability)."""
        return self.sweep(n, progress=progress)

    def sample(self, n_draws, thin=1, burn_in=0, progress=False):
        """Collect ``n_draws`` states of every chain, ``thin`` sweeps apart, after ``burn_in`` sweeps.

        Returns
        -------
        ndarray of shape (n_draws * K, D)
            Draw-major: rows t*K .. (t+1)*K - 1 are the K chains at draw t.
        """
        n_draws = check_positive_int(n_draws, "n_draws")
        thin = check_positive_int(thin, "thin")
        burn_in = check_positive_int(burn_in, "burn_in", minimum=0)
        progress = check_bool(progress, "progress")
        if burn_in:
            self.sweep(burn_in, progress=progress)
        out = np.empty((n_draws, self.n_chains, self.rbm.n_visible))
        bar = Progress(n_draws, label="Gibbs draws", enabled=progress)
        for t in range(n_draws):
            out[t] = self.sweep(thin)
            bar.update(t + 1)
        bar.close()
        return out.reshape(-1, self.rbm.n_visible)

    def next_batch(self, batch_size):
        """Training-stream minibatch (section 4.2.3): advance every chain one sweep, return the next chains in turn.

        With K chains and batch size B, chain j is returned every K / B calls, so
        consecutive uses of a chain are K / B sweeps apart (thesis: K = 2000,
        B = 20, 100 sweeps). Returns a copy of shape (B, D).
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        if batch_size > self.n_chains:
            raise ValueError(f"batch_size: expected at most n_chains={self.n_chains}, received {batch_size}")
        self.sweep(1)
        idx = (self._next + np.arange(batch_size)) % self.n_chains
        self._next = int((self._next + batch_size) % self.n_chains)
        return self.x[idx].copy()

    def state(self):
        """The chains' states, the generator, the sweep count and the next chain :meth:`next_batch` hands out."""
        return {"rng": generator_state(self.rng), "x": self.x.copy(), "sweeps": np.array(self.sweeps),
                "next": np.array(self._next)}

    def load_state(self, state):
        """Restore a :meth:`state` of chains on the same RBM (same number of chains and visible units)."""
        check_state_keys(state, ("rng", "x", "sweeps", "next"), "GibbsSampler")
        x = np.asarray(state["x"])
        if x.shape != self.x.shape or not np.all((x == 0) | (x == 1)):
            raise ValueError(f"x: expected binary chain states of shape {self.x.shape}, received {x.dtype} of "
                             f"shape {x.shape}")
        sweeps = state_count(state["sweeps"], "sweeps")
        nxt = state_count(state["next"], "next", 0, self.n_chains - 1)
        load_generator_state(self.rng, state["rng"])
        self.x, self.sweeps, self._next = x.astype(self.dtype), sweeps, nxt


def _sample_layer(x, W, b, rng):
    """One half-sweep in the precision of ``W``: units on where a uniform draw falls below sigma(b + x W) (4.33-4.34).

    The same operations as :meth:`RBM.sample_hidden` (and, with W^T, :meth:`RBM.sample_visible`), so in
    float64 a sweep draws exactly their numbers.
    """
    p = x @ W
    p += b
    logistic(p, p)
    return np.less(rng.random(p.shape, dtype=p.dtype), p, out=p)


def random_chain_samples(rbm, rng, n_chains, burn_in, *, init_prob=0.5, checkpoint=None, checkpoint_every=100,
                         progress=False):
    """Samples of p from independent Gibbs chains started at random states: their end states after ``burn_in`` sweeps.

    These are the RBM samples of the KL upper bound E_p[log phi - log q] (4.45-4.46): the
    thesis runs 10,000 chains from random initial states for 2,000 sweeps. They must not
    depend on the model q the bound is taken with; chains started at q's samples (as
    bridge sampling's are, 4.53-4.54) stay near q when they mix slowly and so report a
    bound that is too tight, even below log Z, exactly when q fits p poorly.

    Parameters
    ----------
    rbm : RBM
    rng : numpy.random.Generator
        Draws the starting states and drives every sweep.
    n_chains : int
        K >= 1, one sample per chain.
    burn_in : int
        Sweeps per chain (0 returns the starting states).
    init_prob : float in [0, 1]
        Starting pixels are i.i.d. Bernoulli(init_prob).
    checkpoint : str or path, optional
        File written (through :mod:`kd_ref.npzfile`) every ``checkpoint_every`` sweeps, at the
        end and on Ctrl-C, holding the chains, the generator and the CPU seconds so far. If it
        exists the call resumes from it, after checking that it was made with the same
        ``n_chains``, ``burn_in``, ``init_prob`` and RBM parameters (:class:`kd_ref.optim.CheckpointError`
        otherwise); the result is then bit for bit that of an uninterrupted call, and ``rng``
        is left in the same state too.
    checkpoint_every : int
    progress : bool

    Returns
    -------
    x : ndarray of shape (K, D), float64 0/1
        Chain j's state after ``burn_in`` sweeps, independent across chains.
    seconds : float
        CPU seconds (``time.process_time``) of drawing the starts and the sweeps, summed over
        every session of a resumed run.

    Raises
    ------
    kd_ref.optim.Interrupted
        On Ctrl-C, after the sweep under way has finished and the checkpoint (if any) is written.
    """
    began = time.process_time()
    burn_in, checkpoint, checkpoint_every, progress = check_chain_run(rbm, rng, burn_in, checkpoint, checkpoint_every,
                                                                      progress)
    n_chains = check_positive_int(n_chains, "n_chains")
    init_prob = check_in_range(init_prob, "init_prob", 0.0, 1.0)
    record = json.dumps({"n_chains": n_chains, "burn_in": burn_in, "init_prob": init_prob,
                         "rbm": hashlib.sha256(rbm.params.tobytes()).hexdigest()}, sort_keys=True)
    label = f"random chains ({n_chains} chains, {burn_in} sweeps)"
    if checkpoint is not None and os.path.exists(checkpoint):
        chains, before = _resume_chains(checkpoint, record, rbm, rng, n_chains, burn_in)
    else:
        chains, before = GibbsSampler(rbm, rng, n_chains=n_chains, init_prob=init_prob), 0.0

    def save():
        npzfile.save(checkpoint, CHAINS_KIND, CHAINS_VERSION, settings=np.array(record),
                     seconds=np.array(before + time.process_time() - began),
                     **{f"chains.{k}": v for k, v in chains.state().items()})

    checkpointed_sweeps(chains, burn_in, lambda: chains.sweep(1), save if checkpoint is not None else None, label,
                        checkpoint, checkpoint_every, progress)        # (4.33-4.34), every chain at once
    if checkpoint is not None:
        save()
    return chains.x, before + time.process_time() - began


def check_chain_run(rbm, rng, burn_in, checkpoint, checkpoint_every, progress):
    """The arguments every checkpointed run of Gibbs chains shares, checked before any state changes: returns
    (burn_in, checkpoint, checkpoint_every, progress) as the run uses them."""
    if not isinstance(rbm, RBM):
        raise TypeError(f"rbm: expected a kd_ref.rbm.RBM, received {type(rbm).__name__}")
    check_generator(rng)
    burn_in = check_positive_int(burn_in, "burn_in", minimum=0)
    checkpoint = check_path(checkpoint, "checkpoint", optional=True)
    if checkpoint is not None and os.path.isdir(checkpoint):
        raise ValueError(f"checkpoint: expected a file name, received {checkpoint!r}, an existing folder")
    return burn_in, checkpoint, check_positive_int(checkpoint_every, "checkpoint_every"), check_bool(progress, "progress")


def checkpointed_sweeps(chains, total, sweep, save, label, checkpoint, checkpoint_every, progress):
    """Call ``sweep()`` (one sweep of ``chains``, a GibbsSampler) until ``chains.sweeps`` reaches ``total``.

    ``save()`` (None: no checkpoint) runs every ``checkpoint_every`` sweeps and on Ctrl-C; the
    first Ctrl-C lets the sweep under way finish. Shared by :func:`random_chain_samples` and
    :func:`kd_ref.distill.generative.record_stream`.

    Raises
    ------
    kd_ref.optim.Interrupted
        On Ctrl-C, after the checkpoint is written (not when the interrupt came in the middle
        of a sweep: the generator is then ahead of the chains, and the last checkpoint stands).
    """
    saved_sweeps = chains.sweeps if checkpoint is not None and os.path.exists(checkpoint) else None
    in_sweep = False
    bar = Progress(total, label=label, enabled=progress, initial=chains.sweeps)
    try:
        with CtrlC() as ctrl_c:
            try:
                while chains.sweeps < total:
                    in_sweep = True
                    sweep()
                    in_sweep = False
                    bar.update(chains.sweeps)
                    if save is not None and chains.sweeps % checkpoint_every == 0:
                        save()
                        saved_sweeps = chains.sweeps
                    if ctrl_c.pressed:
                        raise KeyboardInterrupt
            except KeyboardInterrupt:
                if save is not None and not in_sweep:
                    save()
                    saved_sweeps = chains.sweeps
                raise Interrupted(chains.sweeps, total, label, checkpoint, saved_sweeps) from None
    finally:
        bar.close()
    if save is not None:
        save()


def _resume_chains(path, record, rbm, rng, n_chains, burn_in):
    """The GibbsSampler (on ``rng``) and the CPU seconds stored in a :func:`random_chain_samples` checkpoint."""
    try:
        saved = npzfile.load(path, CHAINS_KIND, {CHAINS_VERSION}, label="checkpoint",
                             required=("settings", "seconds", "chains.rng", "chains.x", "chains.sweeps",
                                       "chains.next"))
    except ValueError as err:
        raise CheckpointError(f"{err}; delete it to start the chains again") from None
    if str(saved["settings"]) != record:
        raise CheckpointError(f"checkpoint: {str(path)!r} was made with other settings ({str(saved['settings'])} "
                              f"there, {record} now); use the same settings, or delete the file to start the "
                              f"chains again")
    seconds = saved["seconds"]
    try:
        state_count(saved["chains.sweeps"], "chains.sweeps", 0, burn_in)
        if seconds.shape != () or not np.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds: expected a finite count of CPU seconds >= 0, received {seconds!r}")
        chains = GibbsSampler(rbm, rng, init=np.zeros((n_chains, rbm.n_visible)))
        chains.load_state({k.split(".", 1)[1]: v for k, v in saved.items() if k.startswith("chains.")})
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint: {str(path)!r} is damaged ({err}); delete it to start the chains "
                              f"again") from None
    return chains, float(seconds)


# --------------------------------------------------------------------------- CD-k
def cd_objective(rbm, k, rng):
    """objective(batch) -> (loss, grad) for kd_ref.optim.train: the CD-k update as a gradient.

    Negative samples x~ come from k block-Gibbs sweeps started at the batch. With
    x~ held fixed, loss = mean log phi(x~) - mean log phi(batch) has gradient
    -(E_data[d log phi] - E_neg[d log phi]), the CD-k estimate of the negative
    log-likelihood gradient (hidden units summed out exactly). The loss value is
    not the log-likelihood; it is reported because it is free.
    """
    if not isinstance(rbm, RBM):
        raise TypeError(f"rbm: expected a kd_ref.rbm.RBM, received {type(rbm).__name__}")
    k = check_positive_int(k, "k")
    check_generator(rng)

    def objective(batch):
        batch = rbm._check_x(batch, False, name="batch")
        n = batch.shape[0]
        chains = GibbsSampler(rbm, rng, init=batch)
        neg = chains.sweep(k)
        x = np.concatenate([neg, batch])
        w = np.concatenate([np.full(n, 1.0 / n), np.full(n, -1.0 / n)])
        lp, d_params, _ = rbm.grad(x, weights=w, input_grads=False)
        return float(w @ lp), d_params
    return objective


def fit_cd(rbm, data, rng, *, n_steps, k=1, batch_size=20, optimizer=None, monitor=None, monitor_every=None,
           progress=True, checkpoint=None, checkpoint_every=500, settings=None, label="RBM CD-k"):
    """Train an RBM by contrastive divergence with k Gibbs sweeps (CD-k) on a binary dataset.

    Parameters
    ----------
    rbm : RBM
        Trained in place.
    data : array_like of shape (M, D), binary
    rng : numpy.random.Generator
        Shuffles the data and drives the Gibbs sweeps.
    n_steps, k, batch_size : int
    optimizer : kd_ref.optim.SGD or Adadelta, optional
        Default SGD with constant step 0.1.
    monitor : callable () -> float, optional
        e.g. ``lambda: rbm.log_prob_exact(data).mean()`` for a tiny RBM.
    checkpoint, checkpoint_every, settings : optional
        As in :func:`kd_ref.optim.train`; the minibatch drawer and ``rng`` (which
        also drives the CD sweeps) are checkpointed, so a resumed fit is exact.

    Returns
    -------
    kd_ref.optim.TrainResult
    """
    if not isinstance(rbm, RBM):
        raise TypeError(f"rbm: expected a kd_ref.rbm.RBM, received {type(rbm).__name__}")
    data = check_binary_dataset(data, "data", rbm.n_visible)
    n_steps = check_positive_int(n_steps, "n_steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    check_training_options(optimizer=optimizer, monitor=monitor, monitor_every=monitor_every, progress=progress,
                           checkpoint=checkpoint, label=label)     # before the drawer shuffles with rng
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    check_settings(settings)
    objective = cd_objective(rbm, k, rng)                    # checks k and rng before anything is drawn
    draw = MinibatchDrawer(data, batch_size, rng)
    optimizer = SGD(0.1) if optimizer is None else optimizer
    return train(rbm.params, objective, draw, optimizer, n_steps, monitor=monitor,
                 monitor_every=monitor_every, progress=progress, checkpoint=checkpoint,
                 checkpoint_every=checkpoint_every, stateful={"draw": draw, "rng": rng}, settings=settings,
                 label=label)


# ------------------------------------------------------------------------ hill climbing
@dataclass
class HillClimbResult:
    """Outcome of :func:`hill_climb`.

    Attributes
    ----------
    x : ndarray of shape (D,)          the best state found
    log_phi : float                    its log phi (recomputed exactly)
    states : ndarray of shape (R, D)   the local maximum reached from each start
    values : ndarray of shape (R,)     their log phi
    starts : list of str               "init", "zeros" or "random" for each row
    sweeps : int                       sweeps made (over all bits)
    converged : ndarray of shape (R,), bool   no single flip improves the state
    """

    x: np.ndarray
    log_phi: float
    states: np.ndarray
    values: np.ndarray
    starts: list
    sweeps: int
    converged: np.ndarray


def hill_climb(rbm, rng, n_restarts=10, *, init=None, include_zeros=False, max_sweeps=100, progress=False):
    """Search for a large log phi(x) by single-bit-flip hill climbing from several starts (4.13, 4.50).

    Every start climbs at once (vectorised over starts): each sweep visits the bits
    in a fresh random order and flips a bit wherever that raises log phi, until a
    whole sweep flips nothing (a local maximum under single flips) or
    ``max_sweeps`` is reached. The best local maximum is a lower bound on
    max_x log phi(x) and so on log Z (4.50); the thesis used it as the constant c
    of the square-error loss (c = 436.49 for the CD25(500) RBM, the all-black image).

    Parameters
    ----------
    rbm : RBM
    rng : numpy.random.Generator
    n_restarts : int
        Number of random starts (pixels i.i.d. Bernoulli(0.5)); may be 0 when
        ``init`` or ``include_zeros`` gives starts.
    init : array_like of shape (M, D), optional
        Extra binary starting states.
    include_zeros : bool
        Also start from the all-zeros state.

    Returns
    -------
    HillClimbResult
    """
    if not isinstance(rbm, RBM):
        raise TypeError(f"rbm: expected a kd_ref.rbm.RBM, received {type(rbm).__name__}")
    check_generator(rng)
    n_restarts = check_positive_int(n_restarts, "n_restarts", minimum=0)
    max_sweeps = check_positive_int(max_sweeps, "max_sweeps")
    include_zeros = check_bool(include_zeros, "include_zeros")
    progress = check_bool(progress, "progress")
    D = rbm.n_visible
    parts, starts = [], []
    if init is not None:
        x0 = rbm._check_x(init, False, name="init")
        parts.append(x0)
        starts += ["init"] * x0.shape[0]
    if include_zeros:
        parts.append(np.zeros((1, D)))
        starts.append("zeros")
    if n_restarts:
        parts.append((rng.random((n_restarts, D)) < 0.5).astype(np.float64))
        starts += ["random"] * n_restarts
    if not parts:
        raise ValueError(f"n_restarts: expected at least one start (n_restarts >= 1, init or include_zeros), "
                         f"received n_restarts={n_restarts}, init=None, include_zeros={include_zeros!r}")
    X = np.concatenate(parts)
    W, bv = rbm.W, rbm.b_visible
    A = X @ W + rbm.b_hidden                                    # hidden inputs of every start, (R, H)
    sum_sp = softplus(A).sum(axis=1)
    converged = np.zeros(X.shape[0], dtype=bool)
    bar = Progress(max_sweeps, label="hill climbing", enabled=progress)
    sweeps = 0
    while sweeps < max_sweeps and not converged.all():
        flipped = np.zeros(X.shape[0], dtype=bool)
        for i in rng.permutation(D):
            s = 1.0 - 2.0 * X[:, i]                              # +1 turns bit i on, -1 turns it off
            A_new = A + s[:, None] * W[i]
            sp_new = softplus(A_new).sum(axis=1)
            gain = s * bv[i] + sp_new - sum_sp
            up = gain > 1e-12 * np.maximum(1.0, np.abs(sum_sp))  # strict rise, immune to rounding cycles
            if up.any():
                X[up, i] = 1.0 - X[up, i]
                A[up] = A_new[up]
                sum_sp[up] = sp_new[up]
                flipped |= up
        converged = ~flipped
        sweeps += 1
        bar.update(sweeps, best=float(np.max(X @ bv + sum_sp)))
    bar.close()
    values = rbm._log_phi(X)
    best = int(np.argmax(values))
    return HillClimbResult(X[best].copy(), float(values[best]), X, values, starts, sweeps, converged)
