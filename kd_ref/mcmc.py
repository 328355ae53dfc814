"""Slice sampling (Neal, 2003) for any log-density known up to an additive constant, and stochastic
gradient Langevin dynamics (Welling & Teh, 2011) for posteriors known through minibatch gradients.

Slice sampling is used in chapter 3 to draw posterior samples for the Bayesian
mixture of Gaussians (section 3.2.3) and Bayesian logistic regression (section
3.3.4), and as the ground truth of every posterior test. :class:`SGLD` (S3.1-S3.3)
is the teacher of generalized posterior expectation distillation; it has the slice
sampler's ``next_batch`` and the ``state()``/``load_state()`` protocol of
:mod:`kd_ref.optim`. :func:`mlp_log_posterior_gradient` gives it the N/M-scaled
minibatch gradient of an MLP classifier with a Gaussian prior, and
:func:`ula_stationary_covariance` the exact stationary law of constant-step SGLD on
a Gaussian target (the finite-step bias the tests pin).

Slice sampling
--------------

One *sweep* updates every coordinate once, in a fresh random order, by a
univariate slice-sampling step:

1. slice level:   log u = log f(x) - e,  e ~ Exponential(1)  (u uniform on (0, f(x)));
2. stepping out:  a bracket [L, R] of width w is placed at random around x_d and
   grown by w on either side while its ends are still inside the slice
   (optionally at most ``max_steps_out`` widths in total, Neal's m);
3. shrinkage:     points are drawn uniformly in [L, R]; the first inside the slice
   is the new x_d, every rejected point replaces the bracket end on its side.

The bracket width w (one per coordinate) is adapted only while burning in, to
twice the mean absolute move seen so far; afterwards it is fixed, so the kept
samples come from a chain with a fixed transition kernel that leaves the target
invariant.

Several independent chains can run together: ``x0`` of shape (C, D) starts C
chains, each with its own coordinate order and slice levels, and every step of
the procedure is applied to all chains at once. With ``vectorized=True`` the
log-density receives all the points to evaluate as rows of one array, so the
cost of a sweep over C chains is a handful of vectorised calls rather than C
separate ones. :func:`reference_slice_step` is the same step written plainly for
one point, as in Neal's paper, to read against the vectorised code.
"""
import math
import numbers

import numpy as np
from scipy import linalg

from ._validation import (as_float_array, check_bool, check_callable, check_generator, check_in_range, check_labels,
                          check_positive_int)
from .optim import (ConstantSchedule, MinibatchDrawer, check_state_keys, generator_state, load_generator_state,
                    state_count)
from .outputs import DotProduct
from .progress import Progress

# Safety limits: a bracket that keeps growing means the density does not decay
# (an improper target); a shrinkage that does not end means the bracket has
# collapsed onto the current point to machine precision.
_MAX_STEPS_UNBOUNDED = 10_000
_MAX_SHRINKS = 1_000


class SliceState:
    """Where a sampler is: current points, their log-densities and counters.

    Attributes
    ----------
    x : ndarray of shape (C, D)
        Current state of each chain.
    log_density : ndarray of shape (C,)
        Log-density at ``x``.
    sweeps : int
        Sweeps done so far (burn-in included).
    n_evals : int
        Points at which the log-density has been evaluated so far.
    """

    __slots__ = ("x", "log_density", "sweeps", "n_evals")

    def __init__(self, x, log_density, sweeps, n_evals):
        self.x, self.log_density, self.sweeps, self.n_evals = x, log_density, sweeps, n_evals

    def __repr__(self):
        return f"SliceState(chains={self.x.shape[0]}, dim={self.x.shape[1]}, sweeps={self.sweeps}, n_evals={self.n_evals})"


class SliceSampler:
    """Univariate slice sampler with linear stepping out and shrinkage, resumable.

    Parameters
    ----------
    log_density : callable
        With ``vectorized=False``: ndarray of shape (D,) -> float. With
        ``vectorized=True``: ndarray of shape (M, D) -> ndarray of shape (M,).
        Known up to an additive constant; -inf marks points outside the support.
        NaN or +inf raise ``ValueError``, complex values ``TypeError``; the sampler
        is then left exactly as it was before the call that failed.
    x0 : ndarray of shape (D,) or (C, D)
        Starting point of one chain, or of C independent chains. Every start
        needs a finite log-density.
    rng : numpy.random.Generator
    width : float or ndarray of shape (D,)
        Initial bracket width per coordinate (adapted during ``burn_in``).
    max_steps_out : int or None
        Neal's m: the bracket grows to at most ``max_steps_out`` widths. None
        lets it grow until both ends leave the slice.
    thin : int
        Keep one sweep in ``thin`` in ``sample`` and ``next_batch``.
    vectorized : bool
        Whether ``log_density`` takes rows of points.

    Examples
    --------
    >>> import numpy as np
    >>> s = SliceSampler(lambda x: -0.5 * x @ x, np.zeros(2), np.random.default_rng(0))
    >>> s.burn_in(100)
    >>> s.sample(500).shape
    (500, 2)
    """

    def __init__(self, log_density, x0, rng, *, width=1.0, max_steps_out=None, thin=1, vectorized=False):
        if not callable(log_density):
            raise TypeError(f"log_density: expected a callable, received {type(log_density).__name__}")
        x0 = as_float_array(x0, "x0")
        if x0.ndim not in (1, 2) or x0.size == 0:
            raise ValueError(f"x0: expected shape (D,) for one chain or (C, D) for C chains, received shape {x0.shape}")
        self.single_chain = x0.ndim == 1
        x = np.atleast_2d(x0).copy()
        self.rng = check_generator(rng)
        n_dim = x.shape[1]
        width = as_float_array(width, "width")
        if width.ndim == 0:
            width = np.full(n_dim, float(width))
        if width.shape != (n_dim,) or np.any(width <= 0):
            raise ValueError(f"width: expected a positive number or {n_dim} positive numbers, received {width}")
        if max_steps_out is not None:
            max_steps_out = check_positive_int(max_steps_out, "max_steps_out")
        self.thin = check_positive_int(thin, "thin")
        self.log_density_fn = log_density
        self.vectorized = check_bool(vectorized, "vectorized")
        self.max_steps_out = max_steps_out
        self.width = width.copy()
        self.n_evals = 0
        self.sweeps = 0
        logp = self._evaluate(x)
        if not np.all(np.isfinite(logp)):
            bad = int(np.flatnonzero(~np.isfinite(logp))[0])
            raise ValueError(f"x0: expected starting points with a finite log-density, received log-density "
                             f"{logp[bad]} at chain {bad}, x = {x[bad]}")
        self.x, self.logp = x, logp
        self._abs_move = np.zeros(n_dim)   # burn-in statistics for the width adaptation
        self._n_moves = np.zeros(n_dim)
        self._buffer = np.empty((0, n_dim))

    # ------------------------------------------------------------------ basics
    @property
    def n_chains(self):
        return self.x.shape[0]

    @property
    def n_dim(self):
        return self.x.shape[1]

    @property
    def state(self):
        """A copy of the current :class:`SliceState`."""
        return SliceState(self.x.copy(), self.logp.copy(), self.sweeps, self.n_evals)

    def _evaluate(self, points):
        """Log-density at the rows of ``points`` (M, D) -> (M,), with the NaN / +inf check."""
        if self.vectorized:
            out = as_float_array(self.log_density_fn(points), "log_density", finite=False)
            if out.shape != (points.shape[0],):
                raise ValueError(f"log_density: expected an array of shape ({points.shape[0]},) for "
                                 f"{points.shape[0]} points (vectorized=True), received shape {out.shape}")
        else:
            out = np.empty(points.shape[0])
            for i, p in enumerate(points):  # one call per chain: the function takes a single point
                value = self.log_density_fn(p.copy())
                if not isinstance(value, numbers.Real):     # numpy scalars and 0-d arrays: checked as arrays
                    if np.ndim(value) != 0:
                        raise ValueError(f"log_density: expected a scalar for one point (vectorized=False), "
                                         f"received shape {np.shape(value)}")
                    value = as_float_array(value, "log_density", finite=False)
                out[i] = float(value)
        self.n_evals += points.shape[0]
        bad = np.isnan(out) | (out == np.inf)
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"log_density: expected finite values or -inf, received {out[i]} at x = {points[i]}")
        return out

    def _points(self, rows, coords, values):
        """Copies of the current states of chains ``rows`` with coordinate ``coords`` set to ``values``."""
        pts = self.x[rows].copy()
        pts[np.arange(rows.size), coords] = values
        return pts

    # ------------------------------------------------------------ one update
    def _update(self, coords):
        """One univariate slice-sampling step of coordinate ``coords[c]`` of every chain c."""
        rng, n = self.rng, self.n_chains
        chains = np.arange(n)
        x0 = self.x[chains, coords]
        w = self.width[coords]
        log_level = self.logp - rng.exponential(size=n)          # step 1
        left = x0 - w * rng.uniform(size=n)                     # step 2: random placement
        right = left + w
        if self.max_steps_out is None:
            budget_left = np.full(n, _MAX_STEPS_UNBOUNDED)
            budget_right = budget_left.copy()
        else:
            budget_left = np.floor(self.max_steps_out * rng.uniform(size=n)).astype(np.int64)
            budget_right = self.max_steps_out - 1 - budget_left
        for end, budget, sign in ((left, budget_left, -1.0), (right, budget_right, 1.0)):
            active = budget > 0
            while np.any(active):
                rows = np.flatnonzero(active)
                inside = self._evaluate(self._points(rows, coords[rows], end[rows])) > log_level[rows]
                grow = rows[inside]
                end[grow] += sign * w[grow]
                budget[grow] -= 1
                active[rows[~inside]] = False
                active &= budget > 0
            if self.max_steps_out is None and np.any(budget <= 0):
                r = int(np.flatnonzero(budget <= 0)[0])
                raise ValueError(f"log_density: expected a normalisable density, received one whose slice at "
                                 f"coordinate {int(coords[r])} of chain {r} still contained "
                                 f"{float(end[r]):.6g} after {_MAX_STEPS_UNBOUNDED} stepping-out widths "
                                 "(or pass max_steps_out)")
        active = np.ones(n, dtype=bool)                          # step 3: shrinkage
        for _ in range(_MAX_SHRINKS):
            rows = np.flatnonzero(active)
            if rows.size == 0:
                break
            proposal = left[rows] + rng.uniform(size=rows.size) * (right[rows] - left[rows])
            lp = self._evaluate(self._points(rows, coords[rows], proposal))
            accept = lp > log_level[rows]
            acc = rows[accept]
            self.x[acc, coords[acc]] = proposal[accept]
            self.logp[acc] = lp[accept]
            active[acc] = False
            rej, prop_rej = rows[~accept], proposal[~accept]
            below = prop_rej < x0[rej]
            left[rej[below]] = prop_rej[below]
            right[rej[~below]] = prop_rej[~below]
        # chains whose bracket collapsed onto x0 to machine precision simply keep x0
        return np.abs(self.x[chains, coords] - x0)

    def _sweep(self, adapt):
        n, d = self.n_chains, self.n_dim
        order = np.argsort(self.rng.uniform(size=(n, d)), axis=1)  # an independent random order per chain
        for j in range(d):
            coords = order[:, j]
            moved = self._update(coords)
            if adapt:
                np.add.at(self._abs_move, coords, moved)
                np.add.at(self._n_moves, coords, 1.0)
        if adapt:
            seen = self._n_moves > 0
            new = 2.0 * self._abs_move[seen] / self._n_moves[seen]
            self.width[seen] = np.where(new > 0, new, self.width[seen])
        self.sweeps += 1

    # ------------------------------------------------------- failure safety
    def _snapshot(self):
        """Everything a sweep changes, so a failed call can be undone (the generator included)."""
        return (self.x.copy(), self.logp.copy(), self.width.copy(), self._abs_move.copy(), self._n_moves.copy(),
                self._buffer.copy(), self.sweeps, self.n_evals, self.single_chain, self.rng.bit_generator.state)

    def _restore(self, saved):
        (self.x, self.logp, self.width, self._abs_move, self._n_moves, self._buffer, self.sweeps, self.n_evals,
         self.single_chain, self.rng.bit_generator.state) = saved

    def _atomic(self, run):
        """``run()``, undone if it raises (e.g. the log-density returns NaN midway through a sweep)."""
        saved = self._snapshot()
        try:
            return run()
        except Exception:
            self._restore(saved)
            raise

    # ---------------------------------------------------------------- public
    def keep_chains(self, index):
        """Continue only some chains (adapted widths and counters kept).

        Parameters
        ----------
        index : int or sequence of int
            An int leaves one chain whose samples have shape (n, D); a sequence
            leaves that many chains.

        A use: start several pilot chains, burn them in, and keep the one with the
        highest log-density when the target has far-apart local modes that the
        univariate updates cannot cross.
        """
        if isinstance(index, (bool, np.bool_)):
            raise TypeError(f"index: expected chain indices in 0..{self.n_chains - 1}, received {index!r}")
        single = isinstance(index, numbers.Integral)
        idx = np.atleast_1d(np.asarray(index))
        if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) \
                or np.any(idx < 0) or np.any(idx >= self.n_chains):
            raise ValueError(f"index: expected chain indices in 0..{self.n_chains - 1}, received {index!r}")
        self.x, self.logp = self.x[idx].copy(), self.logp[idx].copy()
        self.single_chain = single
        self._buffer = np.empty((0, self.n_dim))

    def burn_in(self, n_sweeps, adapt=True, progress=False):
        """Run ``n_sweeps`` sweeps whose states are discarded; adapt the widths if ``adapt``."""
        n_sweeps = check_positive_int(n_sweeps, "n_sweeps", minimum=0)
        adapt = check_bool(adapt, "adapt")
        progress = check_bool(progress, "progress")

        def run():
            bar = Progress(n_sweeps, label="slice burn-in", enabled=progress)
            for i in range(n_sweeps):
                self._sweep(adapt)
                bar.update(i + 1)
            bar.close()
        self._atomic(run)

    def sample(self, n_samples, progress=False):
        """The next ``n_samples`` kept states (one every ``thin`` sweeps), widths fixed.

        Returns
        -------
        ndarray of shape (n_samples, D) for one chain, (n_samples, C, D) for C chains
        """
        n_samples = check_positive_int(n_samples, "n_samples")
        progress = check_bool(progress, "progress")

        def run():
            out = np.empty((n_samples, self.n_chains, self.n_dim))
            bar = Progress(n_samples, label="slice sampling", enabled=progress)
            for i in range(n_samples):
                for _ in range(self.thin):
                    self._sweep(adapt=False)
                out[i] = self.x
                bar.update(i + 1)
            bar.close()
            return out[:, 0, :] if self.single_chain else out
        return self._atomic(run)

    def next_batch(self, batch_size):
        """The next ``batch_size`` kept states as rows, for an online consumer (3.7, 3.36-3.39).

        With C chains each kept sweep contributes C rows (chain 0 first); rows left
        over from a sweep are kept for the next call, so memory stays O(batch_size + C).

        Returns
        -------
        ndarray of shape (batch_size, D)
        """
        batch_size = check_positive_int(batch_size, "batch_size")

        def run():
            parts, have = [self._buffer], self._buffer.shape[0]
            while have < batch_size:
                for _ in range(self.thin):
                    self._sweep(adapt=False)
                parts.append(self.x.copy())
                have += self.n_chains
            rows = np.concatenate(parts, axis=0)
            self._buffer = rows[batch_size:].copy()
            return rows[:batch_size].copy()
        return self._atomic(run)


def slice_sample(log_density, x0, n_samples, rng, *, burn_in=0, thin=1, width=1.0, max_steps_out=None,
                 vectorized=False, adapt=True, progress=False):
    """Burn in, then return ``n_samples`` kept states of a :class:`SliceSampler`.

    Returns
    -------
    ndarray of shape (n_samples, D) (one chain) or (n_samples, C, D) (C chains)
    """
    n_samples = check_positive_int(n_samples, "n_samples")      # every option checked before x0 is evaluated
    burn_in = check_positive_int(burn_in, "burn_in", minimum=0)
    adapt, progress = check_bool(adapt, "adapt"), check_bool(progress, "progress")
    sampler = SliceSampler(log_density, x0, rng, width=width, max_steps_out=max_steps_out, thin=thin,
                           vectorized=vectorized)
    sampler.burn_in(burn_in, adapt=adapt, progress=progress)
    return sampler.sample(n_samples, progress=progress)


def reference_slice_step(log_density, x, i, width, rng, *, max_steps_out=None):
    """One univariate slice-sampling step of coordinate ``i``, written as in Neal (2003).

    The plain twin of :class:`SliceSampler`'s vectorised update, for one chain and
    one point at a time: stepping out (Neal's figure 3) and shrinkage (figure 5).
    It draws its random numbers in the order the vectorised step does, so a sampler
    with one chain and this function, fed the same generator, make the same moves
    (tests/test_mcmc.py checks this).

    Parameters
    ----------
    log_density : callable, ndarray of shape (D,) -> float
        Known up to an additive constant; -inf outside the support.
    x : ndarray of shape (D,)
        Current point; its log-density must be finite.
    i : int
        The coordinate to update.
    width : float
        Bracket width w.
    rng : numpy.random.Generator
    max_steps_out : int or None
        Neal's m: at most m widths in total. None: grow until both ends leave the slice.

    Returns
    -------
    x_new : ndarray of shape (D,)
        A copy of ``x`` with coordinate ``i`` moved.
    log_f_new : float
        Log-density at ``x_new``.
    """
    rng = check_generator(rng)
    x = as_float_array(x, "x")
    if x.ndim != 1:
        raise ValueError(f"x: expected shape (D,), received shape {x.shape}")
    if isinstance(i, (bool, np.bool_)) or not isinstance(i, numbers.Integral) or not 0 <= i < x.size:
        raise ValueError(f"i: expected a coordinate in 0..{x.size - 1}, received {i!r}")
    if not (isinstance(width, numbers.Real) and np.isfinite(width) and width > 0):
        raise ValueError(f"width: expected a finite positive number, received {width!r}")
    if max_steps_out is not None:
        max_steps_out = check_positive_int(max_steps_out, "max_steps_out")

    def log_f(value):
        point = x.copy()
        point[i] = value
        return float(log_density(point))

    x0 = float(x[i])
    log_f_x0 = log_f(x0)
    if not np.isfinite(log_f_x0):
        raise ValueError(f"x: expected a point with a finite log-density, received log-density {log_f_x0}")
    # 1. the slice {z : f(z) > u}, u ~ Uniform(0, f(x0)); in logs, log u = log f(x0) - Exponential(1)
    log_u = log_f_x0 - rng.exponential()
    # 2. stepping out: place [L, R] of width w at random around x0, then widen it by w per step
    L = x0 - width * rng.uniform()
    R = L + width
    if max_steps_out is None:
        J = K = _MAX_STEPS_UNBOUNDED                      # a safety limit, not a parameter of the method
    else:
        J = int(np.floor(max_steps_out * rng.uniform()))  # steps allowed to the left ...
        K = max_steps_out - 1 - J                         # ... and to the right, m - 1 in all
    while J > 0 and log_f(L) > log_u:
        L -= width
        J -= 1
    while K > 0 and log_f(R) > log_u:
        R += width
        K -= 1
    if max_steps_out is None and (J == 0 or K == 0):
        raise ValueError(f"log_density: expected a normalisable density, received one whose slice at coordinate {i} "
                         f"still contained the bracket end after {_MAX_STEPS_UNBOUNDED} widths")
    # 3. shrinkage: draw uniformly in [L, R]; a point outside the slice becomes the end on its side
    for _ in range(_MAX_SHRINKS):
        z = L + rng.uniform() * (R - L)
        log_f_z = log_f(z)
        if log_f_z > log_u:
            x_new = x.copy()
            x_new[i] = z
            return x_new, log_f_z
        if z < x0:
            L = z
        else:
            R = z
    return x.copy(), log_f_x0                             # the bracket collapsed onto x0: stay


# ====================================================================== SGLD
_GRADIENT_KEY = "gradient__"      # prefix of the gradient's own state entries in SGLD.state()


class SGLDState:
    """Where an :class:`SGLD` chain is.

    Attributes
    ----------
    theta : ndarray of shape (D,)
        A copy of the current state.
    steps : int
        Updates done so far (burn-in included).
    kept : int
        States handed out by ``next_batch`` so far.
    eta : float
        The step size of the next update, eta_steps.
    """

    __slots__ = ("theta", "steps", "kept", "eta")

    def __init__(self, theta, steps, kept, eta):
        self.theta, self.steps, self.kept, self.eta = theta, steps, kept, eta

    def __repr__(self):
        return f"SGLDState(dim={self.theta.size}, steps={self.steps}, kept={self.kept}, eta={self.eta:.3g})"


class SGLD:
    """Stochastic gradient Langevin dynamics (Welling & Teh, 2011), resumable (S3.1-S3.3; GPED (7)).

    One update with step size eta_t:

        theta <- theta + (eta_t / 2) grad_log_posterior(theta) + z,   z ~ N(0, eta_t I)      (S3.1)

    where ``grad_log_posterior`` is an unbiased estimate of the gradient of
    log p(theta | D), usually the N/M-scaled minibatch sum of
    :func:`mlp_log_posterior_gradient`. There is no Metropolis correction: with a
    constant step the chain's stationary law is biased by O(eta)
    (:func:`ula_stationary_covariance` gives it exactly for a Gaussian target);
    a schedule with eta_t -> 0 (S3.2, e.g. ``PowerDecay``) removes the bias.

    Parameters
    ----------
    grad_log_posterior : callable, ndarray of shape (D,) -> ndarray of shape (D,)
        Receives the live state (it must not modify it). When it has ``state()`` and
        ``load_state()`` (a minibatch drawer's position, say), they are part of this
        sampler's :meth:`state`, so a resumed chain draws the same minibatches.
    theta0 : ndarray of shape (D,), float64
        The starting point, updated *in place*: pass ``net.params`` to move a network.
    rng : numpy.random.Generator
        Draws the injected noise z.
    schedule : float or callable t -> eta_t
        A positive constant or a schedule of ``kd_ref.optim`` (``ConstantSchedule``,
        ``PowerDecay(t0=b, kappa=gamma, scale=a)`` for a (b + t)^-gamma, S3.2). A step
        size that is not a finite positive number raises ValueError before the update.
    burn_in : int
        Updates whose states are never handed out.
    thin : int
        After burn-in, one state in ``thin`` is kept by ``next_batch``.

    Examples
    --------
    >>> import numpy as np
    >>> s = SGLD(lambda th: -th, np.zeros(2), np.random.default_rng(0), 0.1, burn_in=100)
    >>> s.next_batch(5).shape
    (5, 2)
    """

    def __init__(self, grad_log_posterior, theta0, rng, schedule, *, burn_in=0, thin=1):
        self.grad_fn = check_callable(grad_log_posterior, "grad_log_posterior",
                                      "a callable theta (D,) -> gradient of log p(theta | D) (D,)")
        if not (isinstance(theta0, np.ndarray) and theta0.dtype == np.float64 and theta0.ndim == 1
                and theta0.size > 0 and theta0.flags.writeable):
            raise TypeError(f"theta0: expected a writeable float64 ndarray of shape (D,), D >= 1 (it is updated in "
                            f"place, e.g. net.params), received {_describe(theta0)}")
        if not np.all(np.isfinite(theta0)):
            raise ValueError("theta0: expected finite values, received NaN or infinite entries")
        self.rng = check_generator(rng)
        if isinstance(schedule, numbers.Real) and not isinstance(schedule, (bool, np.bool_)):
            schedule = ConstantSchedule(check_in_range(schedule, "schedule", 0.0, np.inf, low_open=True))
        self.schedule = check_callable(schedule, "schedule", "a positive number or a callable t -> step size")
        self.burn_in = check_positive_int(burn_in, "burn_in", minimum=0)
        self.thin = check_positive_int(thin, "thin")
        self._stateful_gradient = callable(getattr(self.grad_fn, "state", None)) and \
            callable(getattr(self.grad_fn, "load_state", None))
        self.theta = theta0
        self.steps = 0
        self.kept = 0
        self._step_size(0)                     # a schedule that starts non-positive is refused at once
        self._noise = np.empty(theta0.shape)   # work buffers kept between steps (a step allocates no vector)
        self._move = np.empty(theta0.shape)

    @property
    def n_dim(self):
        return self.theta.size

    @property
    def summary(self):
        """A copy of the current :class:`SGLDState`."""
        return SGLDState(self.theta.copy(), self.steps, self.kept, float(self.schedule(self.steps)))

    def _step_size(self, t):
        eta = self.schedule(t)
        if type(eta) is float and 0.0 < eta < math.inf:    # the usual case, checked cheaply
            return eta
        if isinstance(eta, (bool, np.bool_)) or not isinstance(eta, numbers.Real) or not (np.isfinite(eta) and eta > 0):
            raise ValueError(f"schedule: expected a finite positive step size at step {t}, received {eta!r} "
                             f"(SGLD's noise has variance eta_t)")
        return float(eta)

    def _gradient(self):
        g = self.grad_fn(self.theta)
        if not isinstance(g, np.ndarray) or g.shape != self.theta.shape:
            raise ValueError(f"grad_log_posterior: expected an ndarray of shape {self.theta.shape}, received "
                             f"{_describe(g)}")
        if not np.isfinite(g).all():
            raise ValueError(f"grad_log_posterior: expected finite values, received NaN or infinite entries at "
                             f"step {self.steps} (a step size too large for the target diverges)")
        return g

    def step(self):
        """One update (S3.1) of ``theta`` in place.

        The step size and the gradient are checked before anything changes, so a
        refused step leaves the state, the counters and the generator as they were.
        """
        eta = self._step_size(self.steps)
        stateful = self._stateful_gradient
        before = self.grad_fn.state() if stateful else None
        try:
            g = self._gradient()
        except Exception:
            if stateful:                                    # e.g. a minibatch drawn for a gradient that was refused
                self.grad_fn.load_state(before)
            raise
        self.rng.standard_normal(out=self._noise)
        np.multiply(0.5 * eta, g, out=self._move)          # (eta/2) grad log p
        self._noise *= math.sqrt(eta)                         # z ~ N(0, eta I)
        self._move += self._noise
        self.theta += self._move
        self.steps += 1

    def _kept_now(self):
        return self.steps > self.burn_in and (self.steps - self.burn_in) % self.thin == 0

    def next_batch(self, batch_size):
        """The next ``batch_size`` kept states as rows: the :meth:`SliceSampler.next_batch` interface,
        so chapter 3's online distillation (3.36-3.39, ``predictive.train_compact``) runs on SGLD unchanged.

        Returns
        -------
        ndarray of shape (batch_size, D)
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        saved = self.state()
        out = np.empty((batch_size, self.n_dim))
        try:
            for i in range(batch_size):
                self.step()
                while not self._kept_now():
                    self.step()
                out[i] = self.theta
                self.kept += 1
        except Exception:
            self.load_state(saved)          # a step refused midway: the chain is left as it was before the call
            raise
        return out

    # ------------------------------------------------------------ run state
    def state(self):
        """Everything the rest of the chain depends on (the ``kd_ref.optim`` state protocol).

        The generator, theta, the counters and, when ``grad_log_posterior`` has a
        state, its entries prefixed ``gradient__`` (identifiers, so ``kd_ref.optim.train`` can
        checkpoint an SGLD chain directly). The schedule is a function of the
        step count, so it needs nothing saved.
        """
        state = {"rng": generator_state(self.rng), "theta": self.theta.copy(), "steps": np.array(self.steps),
                 "kept": np.array(self.kept)}
        if self._stateful_gradient:
            state.update({f"{_GRADIENT_KEY}{k}": v for k, v in self.grad_fn.state().items()})
        return state

    def load_state(self, state):
        """Restore a :meth:`state` (theta is copied into the live array); checks everything first."""
        check_state_keys(state, ("rng", "theta", "steps", "kept"), "SGLD")
        theta = np.asarray(state["theta"])
        if theta.shape != self.theta.shape or not np.issubdtype(theta.dtype, np.floating) \
                or not np.all(np.isfinite(theta)):
            raise ValueError(f"theta: expected finite floats of shape {self.theta.shape}, received {theta.dtype} of "
                             f"shape {theta.shape}")
        steps = state_count(state["steps"], "steps")
        kept = state_count(state["kept"], "kept")
        load_generator_state(np.random.Generator(type(self.rng.bit_generator)()), state["rng"])   # check only
        inner = {k[len(_GRADIENT_KEY):]: v for k, v in state.items() if k.startswith(_GRADIENT_KEY)}
        if inner and not self._stateful_gradient:
            raise ValueError(f"SGLD: expected no {_GRADIENT_KEY} entries for a {type(self.grad_fn).__name__} (it has no "
                             f"state), received {sorted(inner)}")
        if self._stateful_gradient:
            self.grad_fn.load_state(inner)          # checks its own entries before changing anything
        load_generator_state(self.rng, state["rng"])
        self.theta[...] = theta
        self.steps, self.kept = steps, kept


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


def ula_stationary_covariance(precision, eta, noise_covariance=None):
    """Stationary covariance of constant-step SGLD on a Gaussian target (S3.3, derived).

    For log p(theta) = -1/2 (theta - mu)^T Lambda (theta - mu) the update is linear,
    theta - mu <- A (theta - mu) + noise with A = I - (eta/2) Lambda, so the chain's
    stationary law is N(mu, C) with C the solution of the discrete Lyapunov equation

        C = A C A^T + Q,   Q = eta I + (eta^2 / 4) V,

    V the covariance of the stochastic gradient's error (0 for exact gradients;
    valid when minibatches are drawn independently at every step). For a scalar
    precision lambda and V = 0: C = 1 / (lambda (1 - eta lambda / 4)).

    Parameters
    ----------
    precision : float or ndarray of shape (D, D)
        Lambda, symmetric positive definite.
    eta : float
        The constant step size; the chain is stable only for eta * max eig(Lambda) < 4.
    noise_covariance : None, float or ndarray of shape (D, D)
        V.

    Returns
    -------
    ndarray of shape (D, D)
    """
    lam = np.atleast_2d(as_float_array(precision, "precision"))
    d = lam.shape[0]
    if lam.shape != (d, d) or not np.allclose(lam, lam.T, rtol=1e-12, atol=0.0):
        raise ValueError(f"precision: expected a symmetric (D, D) matrix or a number, received shape {lam.shape}")
    eig = np.linalg.eigvalsh(lam)
    if eig[0] <= 0:
        raise ValueError(f"precision: expected a positive definite matrix, received smallest eigenvalue {eig[0]:.3g}")
    eta = check_in_range(eta, "eta", 0.0, np.inf, low_open=True)
    if eta * eig[-1] >= 4.0:
        raise ValueError(f"eta: expected eta * max eig(precision) < 4 (otherwise the chain diverges), received "
                         f"eta = {eta} with max eigenvalue {eig[-1]:.6g}")
    v = np.zeros((d, d)) if noise_covariance is None else np.atleast_2d(as_float_array(noise_covariance,
                                                                                       "noise_covariance"))
    if v.shape != (d, d) or not np.allclose(v, v.T, rtol=1e-12, atol=0.0) or np.linalg.eigvalsh(v)[0] < -1e-12 * max(
            1.0, np.abs(v).max()):
        raise ValueError(f"noise_covariance: expected a symmetric positive semi-definite ({d}, {d}) matrix, "
                         f"received shape {v.shape}")
    a = np.eye(d) - 0.5 * eta * lam
    q = eta * np.eye(d) + 0.25 * eta**2 * v
    c = linalg.solve_discrete_lyapunov(a, q)           # A C A^T - C + Q = 0
    return 0.5 * (c + c.T)


def batch_means_se(values, n_batches=50):
    """Standard error of the mean of a correlated chain by non-overlapping batch means.

    The chain (n,) is cut into ``n_batches`` equal batches (a remainder at the start
    is dropped); the SE is the standard deviation of the batch means over
    sqrt(n_batches). Valid when each batch is much longer than the chain's
    autocorrelation time.

    Returns
    -------
    mean, se : float
    """
    values = as_float_array(values, "values", ndim=1)
    n_batches = check_positive_int(n_batches, "n_batches", minimum=2)
    size = values.size // n_batches
    if size < 1:
        raise ValueError(f"values: expected at least n_batches = {n_batches} values, received {values.size}")
    means = values[values.size - size * n_batches:].reshape(n_batches, size).mean(axis=1)
    return float(values.mean()), float(means.std(ddof=1) / np.sqrt(n_batches))


class MLPLogPosteriorGradient:
    """Stochastic gradient of log p(theta | D) for an MLP classifier with a Gaussian prior (S3.1).

        grad = -tau theta + (N / M) sum_{i in S} d log p(y_i | x_i, theta) / d theta

    S a minibatch of M of the N examples, the prior N(0, tau^-1 I). With :class:`SGLD` this is
    the update of the GPED code, theta -= (eta/2)(N grad mean-NLL + tau theta) plus noise of
    standard deviation sqrt(eta): its ``teacher_lr`` is eta and ``teacher_wd`` is tau. The sum is one
    ``MLP.grad`` with a ``DotProduct`` of one-hot labels on the log-softmax output
    (sum_i log p(y_i | x_i), by the fused, saturation-safe form). Minibatches come
    from a ``kd_ref.optim.MinibatchDrawer`` (without replacement within a pass, as
    GPED's DataLoader) or, with ``replace=True``, M independent uniform indices per
    step (the MXNet BDK example; the sampling under which S3.3's minibatch-noise
    formula holds). Made by :func:`mlp_log_posterior_gradient`.
    """

    def __init__(self, net, x, labels, prior_precision, batch_size, rng, replace):
        from .mlp import MLP
        if not isinstance(net, MLP):
            raise TypeError(f"net: expected a kd_ref.mlp.MLP, received {type(net).__name__}")
        if net.nonlinearities[-1] != "log_softmax":
            raise ValueError(f"net: expected a log_softmax output layer (a classifier), received "
                             f"{net.nonlinearities[-1]!r}")
        self.net = net
        self.x = as_float_array(x, "x", shape=(None, net.sizes[0]))
        n, n_classes = self.x.shape[0], net.sizes[-1]
        if n == 0:
            raise ValueError("x: expected at least one example, received none")
        self.labels = check_labels(labels, "labels", n_classes, n=n)
        self.prior_precision = check_in_range(prior_precision, "prior_precision", 0.0, np.inf, low_open=True)
        self.one_hot = np.eye(n_classes)[self.labels]
        self.replace = check_bool(replace, "replace")
        self.batch_size = n if batch_size is None else check_positive_int(batch_size, "batch_size")
        if self.batch_size > n and not self.replace:
            raise ValueError(f"batch_size: expected at most N = {n} without replacement, received {self.batch_size}")
        self.drawer = None
        self.rng = None
        if self.batch_size < n or self.replace:
            self.rng = check_generator(rng)
            if not self.replace:
                self.drawer = MinibatchDrawer(self.x, self.batch_size, self.rng)

    @property
    def n_data(self):
        return self.x.shape[0]

    def _set(self, theta):
        if theta is not self.net.params:
            self.net.set_params(theta)

    def next_indices(self):
        """The next minibatch's row indices, shape (M,) (all rows, in order, when M = N without replacement)."""
        if self.replace:
            return self.rng.integers(0, self.n_data, size=self.batch_size)
        if self.drawer is None:
            return np.arange(self.n_data)
        return self.drawer.next_indices()

    def gradient(self, theta, indices):
        """The N/M-scaled estimate on the given rows (M = len(indices)), shape (P,)."""
        self._set(theta)
        _, d_params, _ = self.net.grad(self.x[indices], DotProduct(self.one_hot[indices]), input_grads=False)
        d_params *= self.n_data / len(indices)
        d_params -= self.prior_precision * self.net.params
        return d_params

    def __call__(self, theta):
        return self.gradient(theta, self.next_indices())

    def log_posterior(self, theta):
        """Unnormalised log p(theta | D) = sum_n log p(y_n | x_n, theta) - tau |theta|^2 / 2 on all N examples."""
        self._set(theta)
        value = DotProduct(self.one_hot).fused(self.net.f[-1]).value(self.net.forward(self.x).a[-1])
        return value - 0.5 * self.prior_precision * float(self.net.params @ self.net.params)

    def full_gradient(self, theta):
        """The exact gradient of :meth:`log_posterior`, shape (P,)."""
        return self.gradient(theta, np.arange(self.n_data))

    def state(self):
        if self.drawer is not None:
            return self.drawer.state()
        return {"rng": generator_state(self.rng)} if self.rng is not None else {}

    def load_state(self, state):
        if self.drawer is not None:
            self.drawer.load_state(state)
        elif self.rng is not None:
            check_state_keys(state, ("rng",), "MLPLogPosteriorGradient")
            load_generator_state(self.rng, state["rng"])
        elif state:
            raise ValueError(f"MLPLogPosteriorGradient: expected an empty state (full-batch gradients), received "
                             f"{sorted(state)}")


def mlp_log_posterior_gradient(net, x, labels, prior_precision, *, batch_size=None, rng=None, replace=False):
    """The minibatch log-posterior gradient of an MLP classifier for :class:`SGLD` (S3.1).

    Parameters
    ----------
    net : kd_ref.mlp.MLP
        A classifier with a log_softmax output layer; its ``params`` are theta.
    x : ndarray of shape (N, D_0)
    labels : int ndarray of shape (N,)
    prior_precision : float
        tau > 0 of the prior N(0, tau^-1 I) (GPED's ``teacher_wd``).
    batch_size : int or None
        M; None uses all N examples at every step (exact gradients).
    rng : numpy.random.Generator
        Draws the minibatches (needed when M < N or ``replace``).
    replace : bool
        Draw M indices with replacement at every step instead of passes without replacement.

    Returns
    -------
    MLPLogPosteriorGradient
        Callable theta -> gradient (P,), with ``log_posterior``, ``full_gradient`` and ``state``.
    """
    return MLPLogPosteriorGradient(net, x, labels, prior_precision, batch_size, rng, replace)
