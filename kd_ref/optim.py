"""Step schedules, SGD, ADADELTA, minibatches drawn from a dataset and the training loop used by every chapter.

Every model in kd_ref keeps its parameters in one flat float64 vector
(``model.params``) whose named arrays are views into it; the optimisers here
update that vector in place. Losses are *minimised*: an objective that should be
maximised (a log-likelihood, say) is passed with its sign flipped.
"""
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ._validation import as_float_array, check_dataset, check_generator, check_in_range, check_positive_int
from .progress import Progress


# --------------------------------------------------------------------- schedules
class ConstantSchedule:
    """eta_t = eta for every step t."""

    def __init__(self, eta):
        self.eta = check_in_range(eta, "eta", 0.0, np.inf, low_open=True)

    def __call__(self, t):
        return self.eta


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


class PowerDecay:
    """eta_t = scale * (t0 + t)^(-kappa)  (D.16); kappa in (0.5, 1] gives the Robbins-Monro conditions."""

    def __init__(self, t0=1.0, kappa=0.6, scale=1.0):
        self.t0 = check_in_range(t0, "t0", 0.0, np.inf, low_open=True)
        self.kappa = check_in_range(kappa, "kappa", 0.0, 1.0, low_open=True)
        self.scale = check_in_range(scale, "scale", 0.0, np.inf, low_open=True)

    def __call__(self, t):
        return self.scale * (self.t0 + t) ** (-self.kappa)


# -------------------------------------------------------------------- optimisers
class SGD:
    """Plain stochastic gradient descent: theta <- theta - eta_t g."""

    def __init__(self, schedule):
        if isinstance(schedule, (int, float)):
            schedule = ConstantSchedule(schedule)
        if not callable(schedule):
            raise TypeError(f"schedule: expected a number or a callable t -> step size, received {schedule!r}")
        self.schedule = schedule
        self.t = 0

    def step(self, params, grad):
        """Update ``params`` in place with the gradient ``grad`` of the loss to minimise."""
        params -= self.schedule(self.t) * grad
        self.t += 1

    def state(self):
        return {"t": np.array(self.t)}

    def load_state(self, state):
        self.t = int(state["t"])


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

    def step(self, params, grad):
        """Update ``params`` in place with the gradient ``grad`` of the loss to minimise."""
        if self.mean_sq_grad is None:
            self.mean_sq_grad = np.zeros_like(params)
            self.mean_sq_delta = np.zeros_like(params)
        rho, eps = self.rho, self.eps
        self.mean_sq_grad *= rho
        self.mean_sq_grad += (1 - rho) * grad**2
        delta = -np.sqrt(self.mean_sq_delta + eps) / np.sqrt(self.mean_sq_grad + eps) * grad
        self.mean_sq_delta *= rho
        self.mean_sq_delta += (1 - rho) * delta**2
        params += delta
        self.t += 1

    def state(self):
        state = {"t": np.array(self.t)}
        if self.mean_sq_grad is not None:
            state.update(mean_sq_grad=self.mean_sq_grad.copy(), mean_sq_delta=self.mean_sq_delta.copy())
        return state

    def load_state(self, state):
        self.t = int(state["t"])
        if "mean_sq_grad" in state:
            self.mean_sq_grad = np.array(state["mean_sq_grad"], dtype=np.float64)
            self.mean_sq_delta = np.array(state["mean_sq_delta"], dtype=np.float64)


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


def train(params, objective, draw, optimizer, n_steps, *, monitor=None, monitor_every=None,
          callback=None, progress=True, checkpoint=None, checkpoint_every=500, label="train"):
    """Minimise a stochastic objective by minibatch updates of ``params`` (2.6-2.7, 3.36-3.39).

    Parameters
    ----------
    params : ndarray of shape (P,), float64
        Flat parameter vector, updated in place (a model's ``params``).
    objective : callable, batch -> (loss, grad)
        Minibatch loss to minimise and its gradient, an ndarray of shape (P,).
    draw : callable, () -> batch
        Data generator; called once per step. It carries its own
        ``numpy.random.Generator``.
    optimizer : SGD or Adadelta
    n_steps : int
        Total number of steps (a resumed run continues up to this number).
    monitor : callable, () -> float or dict of str -> float, optional
        Evaluated every ``monitor_every`` steps and at the end (e.g. average
        test log-probability, or several named quantities); values are kept in
        ``TrainResult.monitor`` and shown on the progress line.
    callback : callable, (step, loss) -> bool, optional
        Called after every step; returning True stops training early.
    progress : bool
        Print a progress line (loss, steps per second, ETA) to stderr.
    checkpoint : str or path, optional
        ``.npz`` file. If it exists, training resumes from it (parameters,
        optimiser state, step count and loss history); it is rewritten every
        ``checkpoint_every`` steps and at the end. The data generator is not
        saved, so a resumed run sees a different (equally valid) stream.

    Returns
    -------
    TrainResult
    """
    if not (isinstance(params, np.ndarray) and params.ndim == 1 and params.dtype == np.float64):
        raise TypeError(f"params: expected a 1-d float64 ndarray updated in place, received {type(params).__name__}"
                        f" {getattr(params, 'shape', '')} {getattr(params, 'dtype', '')}")
    n_steps = check_positive_int(n_steps, "n_steps")
    if monitor_every is not None:
        monitor_every = check_positive_int(monitor_every, "monitor_every")
    losses = np.empty(n_steps)
    history = []
    start = 0
    if checkpoint is not None and os.path.exists(checkpoint):
        start, history = _load_checkpoint(checkpoint, params, optimizer, losses)
    bar = Progress(n_steps, label=label, enabled=progress, initial=start)
    began = time.perf_counter()
    stopped = False
    step = start
    while step < n_steps:
        batch = draw()
        loss, grad = objective(batch)
        grad = np.asarray(grad)
        if grad.shape != params.shape:
            raise ValueError(f"objective: expected a gradient of shape {params.shape}, received shape {grad.shape}")
        if not np.isfinite(loss) or not np.all(np.isfinite(grad)):
            raise FloatingPointError(f"objective: non-finite loss or gradient at step {step} (loss {loss})")
        optimizer.step(params, grad)
        losses[step] = loss
        step += 1
        extra = {}
        if monitor is not None and monitor_every is not None and step % monitor_every == 0:
            history.append((step, _monitored(monitor, history)))
            extra = history[-1][1] if isinstance(history[-1][1], dict) else {"monitor": history[-1][1]}
        bar.update(step, loss=float(loss), **extra)
        if checkpoint is not None and step % checkpoint_every == 0:
            _save_checkpoint(checkpoint, params, optimizer, losses[:step], history)
        if callback is not None and callback(step, float(loss)):
            stopped = True
            break
    if monitor is not None and (not history or history[-1][0] != step):
        history.append((step, _monitored(monitor, history)))
    bar.close()
    if checkpoint is not None:
        _save_checkpoint(checkpoint, params, optimizer, losses[:step], history)
    return TrainResult(step, losses[:step].copy(), history, stopped, time.perf_counter() - began)


def _monitored(monitor, history):
    """The monitor's value as a float, or a dict of floats (the names kept in order, the same at every call)."""
    value = monitor()
    first = history[0][1] if history else None
    if not isinstance(value, dict):
        if isinstance(first, dict):
            raise ValueError(f"monitor: expected a dict with names {list(first)} as at its first call, "
                             f"received {type(value).__name__}")
        return float(value)
    value = {str(k): float(v) for k, v in value.items()}
    if "loss" in value:
        raise ValueError(f"monitor: expected names other than 'loss' (the training loss has it), "
                         f"received {list(value)}")
    if history and (not isinstance(first, dict) or list(first) != list(value)):
        raise ValueError(f"monitor: expected {list(first) if isinstance(first, dict) else 'a number'} as at its "
                         f"first call, received names {list(value)}")
    return value


def _save_checkpoint(path, params, optimizer, losses, history):
    arrays = {f"opt_{k}": v for k, v in optimizer.state().items()}
    # history as rows (step, value, ...); a dict monitor also stores its names
    names = list(history[0][1]) if history and isinstance(history[0][1], dict) else []
    rows = [(s, *(v.values() if names else (v,))) for s, v in history]
    hist = np.array(rows, dtype=np.float64).reshape(-1, 1 + max(1, len(names)))
    tmp = str(path) + ".tmp.npz"
    np.savez(tmp, params=params, losses=losses, history=hist, history_names=np.array(names, dtype=str), **arrays)
    os.replace(tmp, path)


def _load_checkpoint(path, params, optimizer, losses):
    try:
        with np.load(path, allow_pickle=False) as f:
            saved = {k: f[k] for k in f.files}
    except Exception as err:  # zip or format errors from a damaged file
        raise ValueError(f"checkpoint: could not read {path!r} as a kd_ref checkpoint ({err})") from None
    for key in ("params", "losses", "history"):
        if key not in saved:
            raise ValueError(f"checkpoint: {path!r} has no array {key!r}; expected a file written by kd_ref.optim.train")
    if saved["params"].shape != params.shape:
        raise ValueError(f"checkpoint: expected params of shape {params.shape}, {path!r} holds shape {saved['params'].shape}")
    done = len(saved["losses"])
    if done > len(losses):
        raise ValueError(f"checkpoint: {path!r} has {done} steps, more than n_steps={len(losses)}")
    optimizer.load_state({k[4:]: v for k, v in saved.items() if k.startswith("opt_")})
    params[...] = as_float_array(saved["params"], "checkpoint params")
    losses[:done] = saved["losses"]
    names = saved["history_names"].tolist() if "history_names" in saved else []
    if names:
        history = [(int(row[0]), dict(zip(names, map(float, row[1:])))) for row in saved["history"]]
    else:
        history = [(int(s), float(v)) for s, v in saved["history"]]
    return done, history
