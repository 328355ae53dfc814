"""Step schedules, SGD, ADADELTA, Adam, minibatches drawn from a dataset and the training loop used by every chapter.

Every model in kd_ref keeps its parameters in one flat float64 vector
(``model.params``) whose named arrays are views into it; the optimisers here
update that vector in place. Losses are *minimised*: an objective that should be
maximised (a log-likelihood, say) is passed with its sign flipped.

Run state and checkpoints
-------------------------
Whatever else a training run depends on (the data generator's random stream and
position, Gibbs chains, an experiment's progress curve) lives in objects that
follow one small protocol:

    state() -> dict of str -> ndarray        a copy of everything the rest of the run depends on
    load_state(dict)                         restore it; checks the whole dict before changing anything

The optimisers, :class:`MinibatchDrawer`, the generators of
:mod:`kd_ref.distill.compression`, :class:`kd_ref.rbm.GibbsSampler` and
:class:`kd_ref.distill.generative.ChainStream` follow it. :func:`train` is told
explicitly which of them to checkpoint (its ``stateful`` mapping; a bare
``numpy.random.Generator`` may be listed too), so that a run stopped partway and
started again resumes to exactly the numbers an uninterrupted run gives. Generator
states are stored as JSON text (:func:`generator_state`), which keeps PCG64's
128-bit integers exact.
"""
import json
import math
import numbers
import os
import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from . import npzfile
from ._validation import (check_callable, check_dataset, check_generator, check_in_range, check_positive_int,
                          check_training_options)
from .progress import Progress

CHECKPOINT_KIND = "kd_ref.checkpoint"
CHECKPOINT_VERSION = 1


# ---------------------------------------------------------------- run state
def generator_state(rng):
    """``rng.bit_generator.state`` as a 0-d string array (JSON text): exact, and storable in a .npz without pickle."""
    state = check_generator(rng).bit_generator.state
    return np.array(json.dumps(state, default=lambda a: a.tolist()))   # MT19937 and Philox hold small arrays


def load_generator_state(rng, saved, name="rng"):
    """Set ``rng`` to a state from :func:`generator_state`, after checking it on a scratch bit generator.

    Raises ValueError naming ``name`` (and leaves ``rng`` unchanged) for text that
    is not a state of ``rng``'s kind of bit generator.
    """
    check_generator(rng, name)
    saved = np.asarray(saved)
    if saved.ndim != 0 or saved.dtype.kind != "U":
        raise ValueError(f"{name}: expected a generator state as a 0-d string array, received {saved.dtype} of "
                         f"shape {saved.shape}")
    kind = type(rng.bit_generator)
    try:
        state = json.loads(str(saved))
    except ValueError:
        raise ValueError(f"{name}: expected a generator state as JSON text, received text that does not parse") from None
    found = state.get("bit_generator") if isinstance(state, dict) else type(state).__name__
    if found != kind.__name__:
        raise ValueError(f"{name}: expected a {kind.__name__} state, received a {found} state")
    try:
        kind().state = state
    except (TypeError, ValueError, KeyError, OverflowError) as err:
        raise ValueError(f"{name}: expected a valid {kind.__name__} state, received one numpy refuses ({err})") from None
    rng.bit_generator.state = state


def check_state_keys(state, keys, owner):
    """Raise ValueError unless the dict ``state`` holds every name in ``keys`` (the error names ``owner``)."""
    if not isinstance(state, dict):
        raise ValueError(f"{owner}: expected a state dict, received {type(state).__name__}")
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{owner}: expected state entries {list(keys)}, missing {missing}")


def state_count(value, name, minimum=0, maximum=None):
    """An integer from a 0-d integer array of a saved state, checked against [minimum, maximum]."""
    value = np.asarray(value)
    if value.ndim != 0 or not np.issubdtype(value.dtype, np.integer):
        raise ValueError(f"{name}: expected a 0-d integer array, received {value.dtype} of shape {value.shape}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name}: expected an integer {bound}, received {value}")
    return value


def _state_array(value, name, shape):
    """A finite copy of a saved array of the given shape: float32 stays float32 (a float32 model's optimiser state),
    anything else becomes float64."""
    value = np.asarray(value)
    if value.shape != shape or not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
        raise ValueError(f"{name}: expected a real array of shape {shape}, received {value.dtype} of shape {value.shape}")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{name}: expected finite values, received NaN or infinite entries")
    return np.array(value, dtype=np.float32 if value.dtype == np.float32 else np.float64)


class _GeneratorState:
    """The state protocol for a bare ``numpy.random.Generator`` listed in ``train(stateful=...)``."""

    def __init__(self, rng):
        self.rng = rng

    def state(self):
        return {"bit_generator": generator_state(self.rng)}

    def load_state(self, state):
        check_state_keys(state, ("bit_generator",), "rng")
        load_generator_state(self.rng, state["bit_generator"])


# --------------------------------------------------------------------- schedules
class ConstantSchedule:
    """eta_t = eta for every step t."""

    def __init__(self, eta):
        self.eta = check_in_range(eta, "eta", 0.0, np.inf, low_open=True)

    def __call__(self, t):
        return self.eta

    def __repr__(self):
        return f"ConstantSchedule({self.eta!r})"


class LinearDecay:
    """eta_t = eta0 (1 - t / n_steps) for t = 0, 1, ..., n_steps; 0 from t = n_steps on.

    The first step uses eta0 (so online EM with eta0 = 1 starts from the first
    minibatch's statistics alone, D.14) and the schedule reaches exactly 0 at
    t = n_steps.
    """

    def __init__(self, eta0, n_steps):
        self.eta0 = check_in_range(eta0, "eta0", 0.0, np.inf, low_open=True)
        self.n_steps = check_positive_int(n_steps, "n_steps")

    def __call__(self, t):
        return self.eta0 * max(0.0, 1.0 - t / self.n_steps)

    def __repr__(self):
        return f"LinearDecay(eta0={self.eta0!r}, n_steps={self.n_steps})"


class PowerDecay:
    """eta_t = scale * (t0 + t)^(-kappa)  (D.16); kappa in (0.5, 1] gives the Robbins-Monro conditions."""

    def __init__(self, t0=1.0, kappa=0.6, scale=1.0):
        self.t0 = check_in_range(t0, "t0", 0.0, np.inf, low_open=True)
        self.kappa = check_in_range(kappa, "kappa", 0.0, 1.0, low_open=True)
        self.scale = check_in_range(scale, "scale", 0.0, np.inf, low_open=True)

    def __call__(self, t):
        return self.scale * (self.t0 + t) ** (-self.kappa)

    def __repr__(self):
        return f"PowerDecay(t0={self.t0!r}, kappa={self.kappa!r}, scale={self.scale!r})"


class StepDecay:
    """eta_t = eta0 * gamma^floor(t / step): the step size is multiplied by gamma every ``step`` steps.

    The ``StepLR`` schedule the GPED code uses for its student (SPEC_seeds 0.2). Like the other
    schedules it is a pure function of t (no state of its own: the optimiser's step count is what
    a checkpoint keeps), so a resumed run continues on the same steps.
    """

    def __init__(self, eta0, step, gamma=0.5):
        self.eta0 = check_in_range(eta0, "eta0", 0.0, np.inf, low_open=True, high_open=True)
        self.step = check_positive_int(step, "step")
        self.gamma = check_in_range(gamma, "gamma", 0.0, 1.0, low_open=True)

    def __call__(self, t):
        return self.eta0 * self.gamma ** (t // self.step)

    def __repr__(self):
        return f"StepDecay(eta0={self.eta0!r}, step={self.step}, gamma={self.gamma!r})"


SCHEDULES = (ConstantSchedule, LinearDecay, PowerDecay, StepDecay)


# -------------------------------------------------------------------- optimisers
def _scratch(buffers, params, n=None):
    """Work buffers shaped like ``params`` (one, or a tuple of ``n``), reused when they already fit."""
    first = buffers if n is None or buffers is None else buffers[0]
    if first is not None and first.shape == params.shape:
        return buffers
    if n is None:
        return np.empty(params.shape, dtype=params.dtype)
    return tuple(np.empty(params.shape, dtype=params.dtype) for _ in range(n))


class SGD:
    """Plain stochastic gradient descent: theta <- theta - eta_t g."""

    def __init__(self, schedule):
        if isinstance(schedule, numbers.Real) and not isinstance(schedule, (bool, np.bool_)):
            schedule = ConstantSchedule(schedule)
        if not callable(schedule):
            raise TypeError(f"schedule: expected a number or a callable t -> step size, received {schedule!r}")
        self.schedule = schedule
        self.t = 0
        self._scratch = None

    def step(self, params, grad):
        """Update ``params`` in place with the gradient ``grad`` of the loss to minimise.

        Computes ``params -= eta_t * grad`` into a buffer kept between steps, so a
        step allocates nothing (same operations, same bits).
        """
        grad = np.asarray(grad, dtype=params.dtype)       # no copy for a gradient of the parameters' dtype
        self._scratch = _scratch(self._scratch, params)
        np.multiply(self.schedule(self.t), grad, out=self._scratch)
        params -= self._scratch
        self.t += 1

    def settings(self):
        """What defines the updates (a checkpoint made with other settings is refused)."""
        s = self.schedule
        return {"optimizer": "SGD",
                "schedule": repr(s) if isinstance(s, SCHEDULES) else getattr(s, "__qualname__", type(s).__name__)}

    def state(self):
        return {"t": np.array(self.t)}

    def load_state(self, state):
        check_state_keys(state, ("t",), "optimizer")
        self.t = state_count(state["t"], "optimizer t")


class Adadelta:
    """ADADELTA (Zeiler, 2012): per-coordinate steps from running RMS of gradients and updates.

        E[g^2]  <- rho E[g^2] + (1 - rho) g^2
        delta   =  -sqrt(E[d^2] + eps) / sqrt(E[g^2] + eps) * g
        E[d^2]  <- rho E[d^2] + (1 - rho) delta^2
    """

    def __init__(self, rho=0.95, eps=1e-6):
        self.rho = check_in_range(rho, "rho", 0.0, 1.0, high_open=True)
        self.eps = check_in_range(eps, "eps", 0.0, np.inf, low_open=True)
        self.mean_sq_grad = None
        self.mean_sq_delta = None
        self.t = 0
        self._scratch = None                 # two work vectors of the parameters' size, kept between steps

    def step(self, params, grad):
        """Update ``params`` in place with the gradient ``grad`` of the loss to minimise.

        The three lines of the class docstring, computed in place in two buffers
        kept between steps (a step allocates nothing; on a 545k-parameter net the
        temporaries of the plain formula were about half of a training step). The
        operations and their order are those of the plain formula, so the bits are
        the same (tests/test_optim.py keeps the plain formula as the reference).
        """
        if self.mean_sq_grad is None:
            self.mean_sq_grad = np.zeros_like(params)
            self.mean_sq_delta = np.zeros_like(params)
        grad = np.asarray(grad, dtype=params.dtype)       # no copy for a gradient of the parameters' dtype
        rho, eps = self.rho, self.eps
        self._scratch = _scratch(self._scratch, params, 2)
        a, b = self._scratch
        # E[g^2] <- rho E[g^2] + (1 - rho) g^2
        np.square(grad, out=a)
        a *= 1 - rho
        self.mean_sq_grad *= rho
        self.mean_sq_grad += a
        # a = -delta = sqrt(E[d^2] + eps) / sqrt(E[g^2] + eps) * g (negating is exact, so theta - a = theta + delta)
        np.add(self.mean_sq_delta, eps, out=a)
        np.sqrt(a, out=a)
        np.add(self.mean_sq_grad, eps, out=b)
        np.sqrt(b, out=b)
        a /= b
        a *= grad
        # E[d^2] <- rho E[d^2] + (1 - rho) delta^2
        np.square(a, out=b)
        b *= 1 - rho
        self.mean_sq_delta *= rho
        self.mean_sq_delta += b
        params -= a
        self.t += 1

    def settings(self):
        """What defines the updates (a checkpoint made with other settings is refused)."""
        return {"optimizer": "Adadelta", "rho": self.rho, "eps": self.eps}

    def state(self):
        state = {"t": np.array(self.t)}
        if self.mean_sq_grad is not None:
            state.update(mean_sq_grad=self.mean_sq_grad.copy(), mean_sq_delta=self.mean_sq_delta.copy())
        return state

    def load_state(self, state):
        """Restore a :meth:`state`; without the running means (no step taken yet) they are cleared."""
        check_state_keys(state, ("t",), "optimizer")
        t = state_count(state["t"], "optimizer t")
        has = [k in state for k in ("mean_sq_grad", "mean_sq_delta")]
        if has[0] != has[1]:
            raise ValueError("optimizer: expected both mean_sq_grad and mean_sq_delta or neither, received one")
        means = None
        if has[0]:
            shape = np.shape(state["mean_sq_grad"])
            means = [_state_array(state[k], f"optimizer {k}", shape) for k in ("mean_sq_grad", "mean_sq_delta")]
            if len(shape) != 1 or any(np.any(m < 0) for m in means):
                raise ValueError(f"optimizer: expected 1-d running means of squares (>= 0), received shape {shape}")
        self.t = t
        self.mean_sq_grad, self.mean_sq_delta = means if means is not None else (None, None)


class Adam:
    """Adam (Kingma & Ba, 2015) with an L2 term added to the gradient, the convention of ``torch.optim.Adam``.

        g      <- g + weight_decay theta
        m      <- beta1 m + (1 - beta1) g
        v      <- beta2 v + (1 - beta2) g^2
        theta  <- theta - eta_t / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    t counts steps from 1. The last line is the bias-corrected m_hat / (sqrt(v_hat) + eps)
    written as PyTorch evaluates it (SPEC_seeds 0.2: the LDL and GPED sources tune against it).
    ``schedule`` is a number (constant step) or a callable t -> step size, as for :class:`SGD`.
    """

    def __init__(self, schedule=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        if isinstance(schedule, numbers.Real) and not isinstance(schedule, (bool, np.bool_)):
            schedule = ConstantSchedule(schedule)
        if not callable(schedule):
            raise TypeError(f"schedule: expected a number or a callable t -> step size, received {schedule!r}")
        self.schedule = schedule
        self.beta1 = check_in_range(beta1, "beta1", 0.0, 1.0, high_open=True)
        self.beta2 = check_in_range(beta2, "beta2", 0.0, 1.0, high_open=True)
        self.eps = check_in_range(eps, "eps", 0.0, np.inf, low_open=True)
        self.weight_decay = check_in_range(weight_decay, "weight_decay", 0.0, np.inf)
        self.m = None
        self.v = None
        self.t = 0
        self._scratch = None                 # two work vectors of the parameters' size, kept between steps

    def step(self, params, grad):
        """Update ``params`` in place with the gradient ``grad`` of the loss to minimise.

        The lines of the class docstring computed in two buffers kept between steps
        (a step allocates nothing); tests/test_optim.py keeps the plain formula as
        the bit-identical reference.
        """
        if self.m is None:
            self.m = np.zeros_like(params)
            self.v = np.zeros_like(params)
        grad = np.asarray(grad, dtype=params.dtype)
        b1, b2 = self.beta1, self.beta2
        self._scratch = _scratch(self._scratch, params, 2)
        g, a = self._scratch
        # g = grad + weight_decay theta (the L2 term)
        if self.weight_decay:
            np.multiply(self.weight_decay, params, out=g)
            g += grad
        else:
            g[...] = grad
        # m <- b1 m + (1 - b1) g ; v <- b2 v + (1 - b2) g^2
        self.m *= b1
        np.multiply(1 - b1, g, out=a)
        self.m += a
        self.v *= b2
        np.square(g, out=a)
        a *= 1 - b2
        self.v += a
        t = self.t + 1
        step_size = self.schedule(self.t) / (1 - b1 ** t)
        # a = sqrt(v) / sqrt(1 - b2^t) + eps ; theta -= step_size m / a
        np.sqrt(self.v, out=a)
        a /= math.sqrt(1 - b2 ** t)
        a += self.eps
        np.divide(self.m, a, out=g)
        g *= step_size
        params -= g
        self.t = t

    def settings(self):
        """What defines the updates (a checkpoint made with other settings is refused)."""
        s = self.schedule
        return {"optimizer": "Adam", "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay,
                "schedule": repr(s) if isinstance(s, SCHEDULES) else getattr(s, "__qualname__", type(s).__name__)}

    def state(self):
        state = {"t": np.array(self.t)}
        if self.m is not None:
            state.update(m=self.m.copy(), v=self.v.copy())
        return state

    def load_state(self, state):
        """Restore a :meth:`state`; without the moments (no step taken yet) they are cleared."""
        check_state_keys(state, ("t",), "optimizer")
        t = state_count(state["t"], "optimizer t")
        has = [k in state for k in ("m", "v")]
        if has[0] != has[1]:
            raise ValueError("optimizer: expected both m and v or neither, received one")
        moments = None
        if has[0]:
            shape = np.shape(state["m"])
            moments = [_state_array(state[k], f"optimizer {k}", shape) for k in ("m", "v")]
            if len(shape) != 1 or np.any(moments[1] < 0):
                raise ValueError(f"optimizer: expected 1-d moments with v >= 0, received shape {shape}")
        self.t = t
        self.m, self.v = moments if moments is not None else (None, None)


# ------------------------------------------------------------------- minibatches
class MinibatchDrawer:
    """Minibatches of a dataset, drawn without replacement and reshuffled after every pass (2.21).

    Each call returns the next ``batch_size`` rows of the current shuffled pass; a
    batch that would run past the end is completed from the next pass (with a fresh
    permutation), so every batch has exactly ``batch_size`` rows and every row is
    used once per pass.

    Parameters
    ----------
    data : array_like of shape (M, D)
        Kept as given (its dtype is preserved; batches are float64 copies).
    batch_size : int
    rng : numpy.random.Generator

    Attributes
    ----------
    passes : int
        Completed passes over the data.
    examples_drawn : int
    """

    def __init__(self, data, batch_size, rng):
        data = check_dataset(data, "data")              # real (complex refused), 2-d, >= 1 row, not copied
        self.data = data
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.rng = check_generator(rng)
        self.perm = self.rng.permutation(data.shape[0])
        self.pos = 0
        self.passes = 0
        self.examples_drawn = 0

    def next_indices(self):
        """Row indices of the next minibatch, shape (batch_size,)."""
        out = []
        need = self.batch_size
        while need > 0:
            take = self.perm[self.pos:self.pos + need]
            out.append(take)
            need -= take.size
            self.pos += take.size
            if self.pos == self.perm.size:
                self.perm = self.rng.permutation(self.data.shape[0])
                self.pos = 0
                self.passes += 1
        self.examples_drawn += self.batch_size
        return np.concatenate(out)

    def __call__(self):
        return np.asarray(self.data[self.next_indices()], dtype=np.float64)

    def state(self):
        """The generator, the current pass's permutation and the position in it (the data are not copied)."""
        return {"rng": generator_state(self.rng), "perm": self.perm.copy(), "pos": np.array(self.pos),
                "passes": np.array(self.passes), "examples_drawn": np.array(self.examples_drawn)}

    def load_state(self, state):
        check_state_keys(state, ("rng", "perm", "pos", "passes", "examples_drawn"), "MinibatchDrawer")
        n = self.data.shape[0]
        perm = np.asarray(state["perm"])
        if perm.shape != (n,) or not np.issubdtype(perm.dtype, np.integer) or \
                not np.array_equal(np.sort(perm), np.arange(n)):
            raise ValueError(f"perm: expected a permutation of 0..{n - 1} (the data have {n} rows), received "
                             f"{perm.dtype} of shape {perm.shape}")
        pos = state_count(state["pos"], "pos", 0, n - 1)
        passes = state_count(state["passes"], "passes")
        drawn = state_count(state["examples_drawn"], "examples_drawn")
        load_generator_state(self.rng, state["rng"])        # checks before it changes anything
        self.perm, self.pos, self.passes, self.examples_drawn = perm.astype(np.intp), pos, passes, drawn


# ------------------------------------------------------------------ training loop
@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    steps : int
        Number of optimiser steps taken in total (including resumed ones).
    losses : ndarray of shape (steps,)
        Minibatch loss at every step.
    monitor : list of (step, value)
        Values returned by the ``monitor`` callable (floats, or dicts of floats).
    stopped_early : bool
        True when ``callback`` asked to stop.
    seconds : float
        Wall-clock time of this call.
    """

    steps: int
    losses: np.ndarray
    monitor: list = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: unreadable, damaged, or made with other settings."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or another KeyboardInterrupt) stopped :func:`train`; raised after the checkpoint is written.

    Attributes
    ----------
    step, n_steps : int
        Steps completed when it stopped, and the run's total.
    label : str
    checkpoint : str or None
        The checkpoint file (None when the run keeps none).
    saved_step : int or None
        The step the checkpoint file holds (what the same call resumes from), None
        when no checkpoint was written. Equal to ``step`` unless the interrupt came in
        the middle of a step (a second Ctrl-C).
    """

    def __init__(self, step, n_steps, label, checkpoint, saved_step):
        super().__init__(f"interrupted at step {step} of {n_steps} ({label})")
        self.step, self.n_steps, self.label = step, n_steps, label
        self.checkpoint, self.saved_step = checkpoint, saved_step

    def __reduce__(self):
        # pickled whole, so that an interrupt in a worker process (kd_ref.jobs) arrives with its attributes
        return type(self), (self.step, self.n_steps, self.label, self.checkpoint, self.saved_step)


class CtrlC:
    """While active, the first SIGINT only sets ``pressed`` (train stops at the end of the step); a second raises.

    Installed only in the main thread and only over Python's default handler, so a
    program (or notebook kernel) with its own SIGINT handler keeps it.
    """

    def __init__(self):
        self.pressed = False
        self.previous = None

    def _handle(self, signum, frame):
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def train(params, objective, draw, optimizer, n_steps, *, monitor=None, monitor_every=None, callback=None,
          progress=True, checkpoint=None, checkpoint_every=500, stateful=None, settings=None, label="train"):
    """Minimise a stochastic objective by minibatch updates of ``params`` (2.6-2.7, 3.36-3.39).

    Parameters
    ----------
    params : ndarray of shape (P,), float64 or float32
        Flat parameter vector, updated in place (a model's ``params``); the optimiser
        computes in its dtype.
    objective : callable, batch -> (loss, grad)
        Minibatch loss to minimise and its gradient, an ndarray of shape (P,).
    draw : callable, () -> batch
        Data generator; called once per step. It carries its own
        ``numpy.random.Generator``.
    optimizer : SGD, Adadelta or Adam
        Or any object with ``step(params, grad)``, ``state()`` and ``load_state(dict)``.
    n_steps : int
        Total number of steps (a resumed run continues up to this number).
    monitor : callable, () -> float or dict of str -> float, optional
        Evaluated every ``monitor_every`` steps and at the end (e.g. average
        test log-probability, or several named quantities); values are kept in
        ``TrainResult.monitor`` and shown on the progress line.
    callback : callable, (step, loss) -> bool or None, optional
        Called after every step; returning True stops training early.
    progress : bool
        Print a progress line (loss, steps per second, ETA) to stderr.
    checkpoint : str or path, optional
        File (written at exactly this name). If it exists, training resumes from it;
        it is rewritten every ``checkpoint_every`` steps, at the end and when the run
        is interrupted. It holds the parameters, the optimiser state, the loss and
        monitor history and the state of every object in ``stateful``, and is
        checked whole (shapes, finite values, ``settings``, the names in
        ``stateful``) before anything is loaded: :class:`CheckpointError` otherwise.
    stateful : mapping of str -> object, optional
        Everything else the rest of the run depends on, each with ``state()`` and
        ``load_state(dict)`` (see the module notes) or a bare
        ``numpy.random.Generator``: the data generator, a generator the objective
        or monitor draws from, an experiment's progress curve. With a checkpoint, a
        ``draw`` that has ``state()`` must be among them; then a resumed run gives
        exactly the numbers of an uninterrupted one.
    settings : dict, optional
        JSON-able values the run was made with (e.g. an experiment's settings),
        stored in the checkpoint; they, ``n_steps``, ``monitor_every``, the number of
        parameters and the optimiser's ``settings()`` must match on resume (a
        mismatch names the setting: ``n_steps``, ``settings.<name>``, ...).

    Returns
    -------
    TrainResult

    Raises
    ------
    Interrupted
        On Ctrl-C. The first Ctrl-C lets the current step finish, so ``params``,
        the optimiser and the ``stateful`` objects are left at the last completed
        step, which the checkpoint (when there is one) then holds; a
        KeyboardInterrupt raised by ``callback`` does the same. A second Ctrl-C
        within the same step (or a KeyboardInterrupt from ``draw``, ``objective`` or
        ``monitor``) stops at once and is treated as a failure.

    Notes
    -----
    Every argument is checked before anything changes. A failure during the run
    (an exception from any callable, a non-finite loss or gradient, a bad monitor
    value) puts ``params``, the optimiser and the ``stateful`` objects back to
    exactly what they were when ``train`` was called, and leaves the checkpoint file
    as last written, before the exception propagates.

    Examples
    --------
    Minimise ||p - 1||^2 with step size 1/4: each step halves the distance to 1.

    >>> import numpy as np
    >>> p = np.zeros(3)
    >>> result = train(p, lambda batch: (float(np.sum((p - batch) ** 2)), 2.0 * (p - batch)),
    ...                lambda: np.ones(3), SGD(0.25), 20, progress=False)
    >>> float(np.max(np.abs(p - 1.0))) == 0.5 ** 20
    True
    """
    if not (isinstance(params, np.ndarray) and params.ndim == 1 and params.dtype in (np.float64, np.float32)):
        raise TypeError(f"params: expected a 1-d float64 ndarray (or a float32 one) updated in place, received "
                        f"{type(params).__name__}"
                        f" {getattr(params, 'shape', '')} {getattr(params, 'dtype', '')}")
    if not np.all(np.isfinite(params)):
        raise ValueError(f"params: expected finite values, received {int(np.sum(~np.isfinite(params)))} NaN or "
                         f"infinite entries")
    check_callable(objective, "objective", "a callable batch -> (loss, gradient)")
    check_callable(draw, "draw", "a callable () -> batch")
    if optimizer is None:
        raise TypeError("optimizer: expected an optimiser such as kd_ref.optim.SGD(0.1) or Adadelta(), received None")
    options = check_training_options(optimizer=optimizer, monitor=monitor, monitor_every=monitor_every,
                                     callback=callback, progress=progress, checkpoint=checkpoint, label=label)
    monitor_every, progress = options["monitor_every"], options["progress"]
    n_steps = check_positive_int(n_steps, "n_steps")
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    objects = _check_stateful(stateful)
    record = _record(settings, n_steps, monitor_every, params, optimizer)
    if options["checkpoint"] is not None:
        checkpoint = _check_checkpoint_path(options["checkpoint"])
        if callable(getattr(draw, "state", None)) and not any(obj is draw for obj in (stateful or {}).values()):
            raise ValueError(f"stateful: expected the draw object ({type(draw).__name__}, which has state()) among "
                             f"the checkpointed objects, received names {sorted(objects)}; without it a resumed "
                             f"run would draw another stream")
    entry = _snapshot(params, optimizer, objects)       # also checks that every state() gives plain arrays

    losses = np.empty(n_steps)
    history = []
    start, saved_step = 0, None
    began = time.perf_counter()
    bar = Progress(n_steps, label=label, enabled=bool(progress), initial=0)
    step, in_step, stopped = 0, False, False
    try:
        with CtrlC() as ctrl_c:
            if checkpoint is not None and os.path.exists(checkpoint):
                start, history = _resume(checkpoint, record, params, optimizer, objects, losses)
                saved_step = start
                bar = Progress(n_steps, label=label, enabled=bool(progress), initial=start)
            step = start
            try:
                while step < n_steps:
                    in_step = True
                    batch = draw()
                    loss, grad = _checked_output(objective(batch), params.shape, step)
                    optimizer.step(params, grad)
                    losses[step] = loss
                    step += 1
                    extra = {}
                    if monitor is not None and monitor_every is not None and step % monitor_every == 0:
                        history.append((step, _monitored(monitor, history)))
                        extra = history[-1][1] if isinstance(history[-1][1], dict) else {"monitor": history[-1][1]}
                    in_step = False                              # the step is complete from here on
                    bar.update(step, loss=loss, **extra)
                    if checkpoint is not None and step % checkpoint_every == 0:
                        _save_checkpoint(checkpoint, record, params, optimizer, objects, losses[:step], history)
                        saved_step = step
                    if callback is not None and _stop(callback(step, loss)):
                        stopped = True
                        break
                    if ctrl_c.pressed:
                        raise KeyboardInterrupt
                if monitor is not None and (not history or history[-1][0] != step):
                    in_step = True
                    history.append((step, _monitored(monitor, history)))
                    in_step = False
                if checkpoint is not None:
                    _save_checkpoint(checkpoint, record, params, optimizer, objects, losses[:step], history)
                    saved_step = step
                if ctrl_c.pressed:                     # pressed during the last step's monitor or save: still heard
                    raise KeyboardInterrupt
            except KeyboardInterrupt:
                if in_step:
                    raise
                if checkpoint is not None and saved_step != step:
                    _save_checkpoint(checkpoint, record, params, optimizer, objects, losses[:step], history)
                    saved_step = step
                raise Interrupted(step, n_steps, label, checkpoint, saved_step) from None
    except Interrupted:
        raise
    except KeyboardInterrupt:
        _restore(entry, params, optimizer, objects)
        raise Interrupted(step, n_steps, label, checkpoint, saved_step) from None
    except BaseException:
        _restore(entry, params, optimizer, objects)
        raise
    finally:
        bar.close()
    return TrainResult(step, losses[:step].copy(), history, stopped, time.perf_counter() - began)


def _stop(value):
    if value is None or isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"callback: expected True, False or None (True stops training), received {value!r}")


def _checked_output(out, shape, step):
    """(loss as float, gradient of ``shape``) from an objective's return value, refusing anything else."""
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(f"objective: expected a (loss, gradient) pair, received {type(out).__name__}")
    loss, grad = out
    if np.ndim(loss) != 0 or not isinstance(np.asarray(loss).item(), numbers.Real) or isinstance(loss, bool):
        raise TypeError(f"objective: expected a real scalar loss, received {loss!r}")
    loss = float(loss)
    grad = np.asarray(grad)
    if grad.shape != shape:
        raise ValueError(f"objective: expected a gradient of shape {shape}, received shape {grad.shape}")
    if not (np.issubdtype(grad.dtype, np.floating) or np.issubdtype(grad.dtype, np.integer)):
        raise TypeError(f"objective: expected a real gradient, received dtype {grad.dtype}")
    if not math.isfinite(loss) or not np.all(np.isfinite(grad)):
        raise FloatingPointError(f"objective: non-finite loss or gradient at step {step} (loss {loss})")
    return loss, grad


def _monitored(monitor, history):
    """The monitor's value as a finite float, or a dict of them (the names kept in order, the same at every call)."""
    value = monitor()
    first = history[0][1] if history else None
    if not isinstance(value, dict):
        if isinstance(first, dict):
            raise ValueError(f"monitor: expected a dict with names {list(first)} as at its first call, "
                             f"received {type(value).__name__}")
        return _monitor_number(value, "monitor")
    value = {str(k): _monitor_number(v, f"monitor[{k!r}]") for k, v in value.items()}
    if "loss" in value:
        raise ValueError(f"monitor: expected names other than 'loss' (the training loss has it), "
                         f"received {list(value)}")
    if history and (not isinstance(first, dict) or list(first) != list(value)):
        raise ValueError(f"monitor: expected {list(first) if isinstance(first, dict) else 'a number'} as at its "
                         f"first call, received names {list(value)}")
    return value


def _monitor_number(value, name):
    if isinstance(value, (bool, np.bool_)) or np.ndim(value) != 0 or \
            not isinstance(np.asarray(value).item(), numbers.Real):
        raise TypeError(f"{name}: expected a real number, received {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite value, received {value}")
    return value


def _check_stateful(stateful):
    """{name: object with state()/load_state()} from the ``stateful`` argument (Generators wrapped)."""
    if stateful is None:
        return {}
    if not isinstance(stateful, dict):
        raise TypeError(f"stateful: expected a dict of name -> object with state() and load_state(), received "
                        f"{type(stateful).__name__}")
    objects = {}
    for name, obj in stateful.items():
        if not (isinstance(name, str) and name.isidentifier()):
            raise ValueError(f"stateful: expected names that are identifiers (letters, digits, _), received {name!r}")
        if isinstance(obj, np.random.Generator):
            obj = _GeneratorState(obj)
        if not (callable(getattr(obj, "state", None)) and callable(getattr(obj, "load_state", None))):
            raise TypeError(f"stateful[{name!r}]: expected an object with state() and load_state() or a "
                            f"numpy.random.Generator, received {type(obj).__name__}")
        objects[name] = obj
    return objects


def check_settings(settings):
    """The ``settings`` argument of :func:`train` as it comes back from a checkpoint (tuples as lists), or None.

    Raises TypeError unless it is None or a dict with string keys and JSON-able
    values; the fits that draw from their generator before calling ``train`` call it first.
    """
    if settings is None:
        return None
    if not isinstance(settings, dict) or not all(isinstance(k, str) for k in settings):
        raise TypeError(f"settings: expected a dict of str -> JSON-able values, received {type(settings).__name__}")
    try:
        return json.loads(json.dumps(settings))
    except (TypeError, ValueError) as err:
        raise TypeError(f"settings: expected JSON-able values, received {err}") from None


def _record(settings, n_steps, monitor_every, params, optimizer):
    """The settings a checkpoint must have been made with: the run's own, and the caller's under "settings."."""
    own = {"n_steps": n_steps, "monitor_every": monitor_every, "n_params": int(params.size),
           "optimizer": (optimizer.settings() if callable(getattr(optimizer, "settings", None))
                         else type(optimizer).__name__)}
    own = json.loads(json.dumps(own))
    settings = check_settings(settings)
    return own if settings is None else {**own, **{f"settings.{k}": v for k, v in settings.items()}}


def _check_checkpoint_path(path):
    """A checkpoint path (a str, from check_training_options) that names a file in an existing folder."""
    folder = os.path.dirname(path) or "."
    if os.path.isdir(path):
        raise ValueError(f"checkpoint: expected a file name, received {path!r}, an existing folder")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"checkpoint: expected a file in an existing folder, received {path!r} "
                                f"(no folder {folder!r})")
    return path


def _snapshot(params, optimizer, objects):
    """Copies of everything ``train`` may change, to put back after a failure."""
    states = {"optimizer": optimizer.state()}
    for name, obj in objects.items():
        states[name] = obj.state()
    for name, state in states.items():
        if not isinstance(state, dict) or not all(isinstance(k, str) and k.isidentifier() for k in state):
            raise TypeError(f"{'optimizer' if name == 'optimizer' else f'stateful[{name!r}]'}: expected state() to "
                            f"return a dict of identifier -> array, received {type(state).__name__}")
        for key, value in state.items():
            if np.asarray(value).dtype.hasobject:
                raise TypeError(f"{name}: expected state() arrays of numbers or text, received an object "
                                f"array for {key!r}")
    return params.copy(), states


def _restore(entry, params, optimizer, objects):
    saved_params, states = entry
    params[...] = saved_params
    optimizer.load_state(states["optimizer"])
    for name, obj in objects.items():
        obj.load_state(states[name])


def _save_checkpoint(path, record, params, optimizer, objects, losses, history):
    arrays = {f"optimizer.{k}": v for k, v in optimizer.state().items()}
    for name, obj in objects.items():
        arrays.update({f"state.{name}.{k}": v for k, v in obj.state().items()})
    # history as rows (step, value, ...); a dict monitor also stores its names
    names = list(history[0][1]) if history and isinstance(history[0][1], dict) else []
    rows = [(s, *(v.values() if names else (v,))) for s, v in history]
    hist = np.array(rows, dtype=np.float64).reshape(-1, 1 + max(1, len(names)))
    npzfile.save(path, CHECKPOINT_KIND, CHECKPOINT_VERSION, settings=np.array(json.dumps(record)), params=params,
                 losses=losses, history=hist, history_names=np.array(names, dtype=str), **arrays)


def _resume(path, record, params, optimizer, objects, losses):
    """Check the checkpoint at ``path`` whole, then load it; returns (steps done, monitor history)."""
    try:
        saved = npzfile.load(path, CHECKPOINT_KIND, {CHECKPOINT_VERSION}, label="checkpoint",
                             required=("settings", "params", "losses", "history", "history_names"))
    except ValueError as err:
        raise CheckpointError(f"{err}; delete it to start this stage again") from None
    where = f"checkpoint: {path!r}"
    try:
        made_with = json.loads(str(saved["settings"]))
    except ValueError:
        raise CheckpointError(f"{where} holds settings that are not JSON text") from None
    if not isinstance(made_with, dict):
        raise CheckpointError(f"{where} holds settings that are not a dict")
    diff = [f"{k}: {made_with.get(k)!r} there, {v!r} now" for k, v in record.items() if made_with.get(k) != v]
    diff += [f"{k}: {made_with[k]!r} there, not set now" for k in made_with if k not in record]
    if diff:
        raise CheckpointError(f"{where} was made with other settings ({'; '.join(diff)}); use the same settings, "
                              f"or delete the file to start this stage again")
    p, done_losses, hist, names = saved["params"], saved["losses"], saved["history"], saved["history_names"]
    problems = []
    if p.shape != params.shape or p.dtype != params.dtype or not np.all(np.isfinite(p)):
        problems.append(f"params: expected finite {params.dtype} of shape {params.shape}, received {p.dtype} of shape "
                        f"{p.shape}")
    if done_losses.ndim != 1 or done_losses.size > losses.size or not np.all(np.isfinite(done_losses)):
        problems.append(f"losses: expected at most {losses.size} finite values, received {done_losses.dtype} of "
                        f"shape {done_losses.shape}")
    if names.ndim != 1 or (names.size and names.dtype.kind != "U"):
        problems.append(f"history_names: expected a 1-d string array, received {names.dtype} of shape {names.shape}")
    elif hist.ndim != 2 or hist.shape[1] != 1 + max(1, names.size) or not np.all(np.isfinite(hist)) or \
            np.any(np.diff(hist[:, 0]) <= 0) or (hist.size and not 0 <= hist[-1, 0] <= done_losses.size):
        problems.append(f"history: expected rows (step, value{', ...' if names.size > 1 else ''}) of finite "
                        f"values with increasing steps, received shape {hist.shape}")
    opt_state = {k.split(".", 1)[1]: v for k, v in saved.items() if k.startswith("optimizer.")}
    for key, value in opt_state.items():
        if value.ndim and (value.shape != params.shape or not np.all(np.isfinite(value))):
            problems.append(f"optimizer.{key}: expected finite values of shape {params.shape}, received shape "
                            f"{value.shape}")
    states = {name: {} for name in objects}
    extra = set()
    for key, value in saved.items():
        if key.startswith("state."):
            name, _, entry = key[len("state."):].partition(".")
            (states[name].__setitem__(entry, value) if name in states else extra.add(name))
    missing = [name for name, s in states.items() if not s]
    if missing or extra:
        problems.append(f"stateful: expected the objects {sorted(objects)}, the file has "
                        f"{sorted((set(objects) - set(missing)) | extra)}")
    if problems:
        raise CheckpointError(f"{where} cannot be resumed from: {'; '.join(problems)}; delete it to start this "
                              f"stage again")
    entry = _snapshot(params, optimizer, objects)
    try:
        optimizer.load_state(opt_state)
        for name, obj in objects.items():
            obj.load_state(states[name])
    except (ValueError, TypeError, KeyError) as err:
        _restore(entry, params, optimizer, objects)
        raise CheckpointError(f"{where} cannot be resumed from: {err}; delete it to start this stage again") from None
    done = done_losses.size
    params[...] = p
    losses[:done] = done_losses
    names = names.tolist()
    if names:
        history = [(int(row[0]), dict(zip(names, map(float, row[1:])))) for row in hist]
    else:
        history = [(int(s), float(v)) for s, v in hist]
    return done, history
