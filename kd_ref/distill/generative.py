"""Distilling an intractable generative model into a NADE, and estimating its log Z with it (chapter 4).

The teacher p(x) = phi(x) / Z is known only up to Z (4.1-4.5): we can evaluate log phi, its
input gradient, and draw (MCMC) samples. The student is a NADE q(x; theta) (4.35-4.43).
Every loss of section 4.1.1 is an expectation over p of a tractable quantity
l(x, theta) (4.23), so its gradient is estimated on a minibatch x_1..x_N of teacher
samples (4.24-4.25), and the only NADE derivatives needed are those of 4.29:

    KL (4.6-4.7, 4.20)        l = -log q(x)
        grad (4.26)           -(1/N) sum_n d log q(x_n)/d theta                      one backprop
    square error (4.8-4.15, 4.21)
                              l = (log q(x) - log phi(x) + c)^2,  c <= log Z
        grad (4.27)           (2/N) sum_n r_n d log q(x_n)/d theta,  r_n the residual  one backprop
    score matching (4.16-4.19, 4.22)
                              l = ||d log q/dx - d log phi/dx||^2
        grad (4.28)           (2/N) sum_n (d/d theta d log q(x_n)/dx) . e_n,  e_n the score difference:
                              the parameter part of H v with v = (0, 2 e / N), one R{backprop}
                              in its reduced form (C.28); no Hessian is ever formed.

For the square error, any c <= log Z makes the loss a valid one (Proposition 4.1: with
a = log Z - c >= 0 it equals E_p[(log q - log p)^2] + 2 a KL(p || q) + a^2, the squared
log-error plus a non-negative multiple of the KL plus a constant); for binary x,
max_x log phi(x) <= log Z (4.13), so the best value found by hill climbing on the teacher
is a safe and tight choice.
Score matching is valid for continuous x with full support only (Proposition 4.2); on
binary data it is implemented for completeness and, as the thesis found, fails.

Teacher samples come from :class:`ChainStream`, the thesis's scheme (section 4.2.3): K
parallel block-Gibbs chains, burned in from random states; every training step advances
every chain once and hands out the next B chains in turn, so the samples in a minibatch are
independent and each chain is thinned K / B sweeps between uses. Memory is O(K D).

:func:`estimate_log_z` then uses the trained NADE as the tractable partner of the RBM in
every estimator of :mod:`kd_ref.partition` (section 4.2.4).

A teacher is anything with ``n_visible`` (D), ``log_phi(x)`` -> (N,) and, for score
matching, ``grad(x, param_grads=False, continuous=True)`` returning ``(log_phi, None,
d log phi/dx)``; :class:`kd_ref.rbm.RBM` is one. Each loss says what it needs of the
teacher at a minibatch (its ``targets(teacher, x)``: nothing for KL, log phi for the
square error, d log phi/dx for score matching), and training is the loop of
:mod:`kd_ref.distill` (which states the loss protocol) through :func:`distill_nade`.
"""
import hashlib
import json
import os
import time
from dataclasses import replace

import numpy as np
from scipy.special import logsumexp

from .. import npzfile
from .._validation import (check_binary_dataset, check_float_dtype, check_generator, check_in_range,
                           check_path, check_positive_int)
from ..nade import NADE, log_likelihood_objective
from ..optim import Adadelta, CheckpointError, check_state_keys, state_count
from ..partition import (bridge_sampling, bridge_sampling_chains, importance_sampling, kl_lower_bound, kl_upper_bound,
                         trivial_lower_bound)
from ..progress import Progress
from ..rbm import (RBM, GibbsSampler, binary_states, check_chain_run, checkpointed_sweeps, hill_climb,
                   random_chain_samples)
from . import distill


STREAM_KIND, STREAM_VERSION = "kd_ref.recorded_stream", 1
STREAM_CKPT_KIND = "kd_ref.recorded_stream.checkpoint"


# ------------------------------------------------------------------------------------ losses (4.20-4.28)
class KLLoss:
    """KL(p || q) up to a constant: l(x, theta) = -log q(x), averaged over teacher samples (4.20, 4.26).

    Minimising it is maximum likelihood on an endless stream of teacher samples (4.7).
    The teacher's log phi is not needed, so none is computed.
    """

    name = "KL"

    def targets(self, teacher, x):
        """What the loss needs of the teacher at x: nothing (None)."""
        return None

    def __call__(self, nade, x, targets=None):
        """Loss and theta-gradient on a minibatch (the protocol of :mod:`kd_ref.distill`).

        Parameters
        ----------
        nade : NADE
        x : ndarray of shape (N, D), binary teacher samples
        targets : None
            :meth:`targets` (unused).

        Returns
        -------
        value : float
            -mean log q(x_n).
        grad : ndarray of shape (nade.n_params,)
        """
        return log_likelihood_objective(nade)(x)   # the NADE's maximum-likelihood objective is this loss (4.26)


class SquareErrorLoss:
    """Square error of log-probabilities with a constant c: (log q(x) - log phi(x) + c)^2 (4.9, 4.21, 4.27).

    Parameters
    ----------
    c : float
        Any c <= log Z gives a valid loss (Proposition 4.1); the closer to log Z, the
        closer the loss is to the squared log-error of 4.8. Use
        :meth:`from_hill_climbing` for the thesis's choice, the largest log phi found.
    log_z : float, optional
        The teacher's log Z when it is known (a tiny RBM): then c > log Z is refused.
    """

    name = "square error"

    def __init__(self, c, log_z=None):
        self.c = check_in_range(c, "c", -np.inf, np.inf, low_open=True, high_open=True)
        if log_z is not None:
            log_z = check_in_range(log_z, "log_z", -np.inf, np.inf, low_open=True, high_open=True)
            if self.c > log_z:
                raise ValueError(f"c: expected a value <= log Z = {log_z:.6g} (Proposition 4.1), received {self.c:.6g}")

    @classmethod
    def from_hill_climbing(cls, rbm, rng, n_restarts=10, log_z=None):
        """The loss with c = the largest log phi(x) found by hill climbing on ``rbm`` (4.13, section 4.2.3).

        Starts from the all-zeros state and ``n_restarts`` random states (single-bit
        flips, :func:`kd_ref.rbm.hill_climb`). For the CD25(500) RBM this finds the
        all-black image, log phi = 436.49.
        """
        return cls(hill_climb(rbm, rng, n_restarts, include_zeros=True).log_phi, log_z=log_z)

    def targets(self, teacher, x):
        """What the loss needs of the teacher at x: log phi(x_n), shape (N,)."""
        return np.asarray(teacher.log_phi(x), dtype=np.float64)

    def __call__(self, nade, x, log_phi):
        """Loss and theta-gradient on a minibatch; ``log_phi`` (N,) from :meth:`targets`, the rest as
        :meth:`KLLoss.__call__`.

        value = mean_n r_n^2 with r_n = log q(x_n) - log phi(x_n) + c; the gradient is one
        backprop of sum_n (2 r_n / N) log q(x_n) (4.27).
        """
        n = x.shape[0]
        log_q = nade.log_prob(x)
        r = log_q - log_phi + self.c
        _, d_params, _ = nade.grad(x, weights=2.0 * r / n, input_grads=False)
        return float(np.mean(r**2)), d_params


class ScoreMatchingLoss:
    """Score matching: ||d log q/dx - d log phi/dx||^2 averaged over teacher samples (4.17, 4.22, 4.28).

    The theta-gradient is the parameter part of the NADE's Hessian-vector product along
    v = (0, 2 e / N), e_n = d log q(x_n)/dx - d log phi(x_n)/dx (4.28): one backprop for
    d log q/dx and one reduced R{backprop} (C.28). Valid for continuous x with full
    support only (Proposition 4.2); on binary data it does not identify p.
    """

    name = "score matching"

    def targets(self, teacher, x):
        """What the loss needs of the teacher at x: its score d log phi(x_n)/dx, shape (N, D)."""
        return np.asarray(teacher.grad(x, param_grads=False, continuous=True)[2], dtype=np.float64)

    def __call__(self, nade, x, d_log_phi):
        """Loss and theta-gradient on a minibatch; ``d_log_phi`` (N, D) from :meth:`targets`, the rest as
        :meth:`KLLoss.__call__`."""
        n = x.shape[0]
        _, _, g_q = nade.grad(x, param_grads=False, continuous=True)
        e = g_q - d_log_phi
        Hv, _ = nade.hvp(x, v_x=2.0 * e / n, input_grads=False, continuous=True)
        return float(np.sum(e**2)) / n, Hv


#: The losses of section 4.1.1 by short name (the registry of every chapter has this shape; see kd_ref.distill).
LOSSES = {"kl": KLLoss, "se": SquareErrorLoss, "sm": ScoreMatchingLoss}


def loss_by_name(name, refs):
    """The loss ``name`` of :data:`LOSSES`; the square error takes its c from ``refs`` (a run's references).

    ``refs["hill"]["log_phi"]`` is the hill-climbed log phi of the RBM's mode (4.13), checked
    against ``refs["exact"]`` (the exact log Z) when there is one.
    """
    if name == "se":
        return SquareErrorLoss(refs["hill"]["log_phi"], log_z=refs.get("exact"))
    return LOSSES[name]()


# ----------------------------------------------------------------------------------- teacher samples
class ChainStream:
    """Minibatches of teacher samples from K parallel block-Gibbs chains (section 4.2.3).

    The chains start at independent uniform random states and are burned in when the
    stream is made. Each call then advances *every* chain by one sweep and returns the
    next ``batch_size`` chains in turn: a minibatch holds independent samples, and a
    chain is used every K / batch_size calls (the thesis: K = 2,000, B = 20, so 100
    sweeps apart, after 2,000 burn-in sweeps). Only the K current states are stored.

    Parameters
    ----------
    rbm : RBM
    batch_size : int
        B.
    rng : numpy.random.Generator
    n_chains : int, optional
        K >= B; default 100 B. Chains are handed out cyclically, so K need not be a
        multiple of B.
    burn_in : int
        Sweeps made before the first minibatch.
    progress : bool
        Show a progress line during burn-in.
    dtype : {numpy.float64, numpy.float32}
        Precision of the Gibbs sweeps (:class:`kd_ref.rbm.GibbsSampler`) and of the minibatches.

    Attributes
    ----------
    sampler : kd_ref.rbm.GibbsSampler
        The chains (``sampler.x`` holds their states, shape (K, D)).
    dim : int
        D, for dimension checks against the student.
    n_chains : int
        K.
    examples_drawn : int
    """

    def __init__(self, rbm, batch_size, rng, *, n_chains=None, burn_in=2000, progress=False, dtype=np.float64):
        if not isinstance(rbm, RBM):
            raise TypeError(f"rbm: expected a kd_ref.rbm.RBM, received {type(rbm).__name__}")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        n_chains = 100 * self.batch_size if n_chains is None else check_positive_int(n_chains, "n_chains")
        if n_chains < self.batch_size:
            raise ValueError(f"n_chains: expected at least batch_size={self.batch_size} chains, received {n_chains}")
        burn_in = check_positive_int(burn_in, "burn_in", minimum=0)
        self.sampler = GibbsSampler(rbm, check_generator(rng), n_chains=n_chains, dtype=dtype)
        if burn_in:
            self.sampler.burn_in(burn_in, progress=progress)
        self.dim, self.n_chains = rbm.n_visible, n_chains
        self.examples_drawn = 0

    def __call__(self):
        """The next minibatch, shape (batch_size, D), 0/1 of ``dtype``."""
        batch = self.sampler.next_batch(self.batch_size)
        self.examples_drawn += self.batch_size
        return batch

    def p_samples(self, n):
        """n <= K current chain states (the first n chains), samples of p for the training monitor's bound (4.46)."""
        return self.sampler.x[:n]

    def state(self):
        """The chains (:meth:`kd_ref.rbm.GibbsSampler.state`) and the examples drawn."""
        return {**self.sampler.state(), "examples_drawn": np.array(self.examples_drawn)}

    def load_state(self, state):
        check_state_keys(state, ("examples_drawn",), "ChainStream")
        drawn = state_count(state["examples_drawn"], "examples_drawn")
        self.sampler.load_state({k: v for k, v in state.items() if k != "examples_drawn"})
        self.examples_drawn = drawn


class RecordedStream:
    """A :class:`ChainStream` played back from a file written by :func:`record_stream`: the same minibatches.

    The chains of the thesis's training stream do not depend on the student, so a run
    that distils several NADEs draws the stream once (bits packed, 1 bit per pixel:
    30,000 steps x 20 images x 784 pixels is 59 MB) and every NADE reads it; a NADE
    trained on the playback is bit for bit the NADE trained on the live stream.

    Parameters
    ----------
    path : str or path
        A file of :func:`record_stream`.
    dtype : {numpy.float64, numpy.float32}
        Precision of the minibatches handed out.

    Attributes
    ----------
    batch_size, n_batches, dim, n_chains : int
        B, the recorded minibatches, D, and K of the recorded chains.
    position : int
        Minibatches handed out so far (checkpointed through :meth:`state`).
    seconds : float
        CPU seconds the recording took (the chains' cost, shared by every reader).
    """

    def __init__(self, path, dtype=np.float64):
        saved = npzfile.load(path, STREAM_KIND, {STREAM_VERSION}, required=("bits", "batch_size", "dim", "n_chains",
                                                                           "seconds"))
        self.dtype = check_float_dtype(dtype)
        self.batch_size, self.dim = int(saved["batch_size"]), int(saved["dim"])
        self.n_chains, self.seconds = int(saved["n_chains"]), float(saved["seconds"])
        self.bits = saved["bits"]
        if self.bits.dtype != np.uint8 or self.bits.ndim != 2 or self.bits.shape[0] % self.batch_size \
                or self.bits.shape[1] != (self.dim + 7) // 8:
            raise ValueError(f"path: expected packed bits of shape (n_batches * {self.batch_size}, "
                             f"{(self.dim + 7) // 8}) as uint8 in {str(path)!r}, received {self.bits.dtype} of "
                             f"shape {self.bits.shape}")
        self.n_batches = self.bits.shape[0] // self.batch_size
        self.position = 0

    def _rows(self, start, stop):
        return np.unpackbits(self.bits[start:stop], axis=1, count=self.dim).astype(self.dtype)

    def __call__(self):
        """The next recorded minibatch, shape (batch_size, D), 0/1 of ``dtype``."""
        if self.position >= self.n_batches:
            raise ValueError(f"stream: expected at most the {self.n_batches} recorded minibatches, received a "
                             f"request for minibatch {self.position + 1}")
        B = self.batch_size
        self.position += 1
        return self._rows((self.position - 1) * B, self.position * B)

    def p_samples(self, n):
        """n <= K recorded samples of p for the training monitor's bound (4.46): those handed out next (distinct
        chains), or the last n recorded at the end of the stream."""
        start = min(self.position * self.batch_size, self.bits.shape[0] - n)
        return self._rows(start, start + n)

    def state(self):
        return {"position": np.array(self.position)}

    def load_state(self, state):
        check_state_keys(state, ("position",), "RecordedStream")
        self.position = state_count(state["position"], "position", 0, self.n_batches)


def record_stream(rbm, batch_size, n_batches, rng, path, *, n_chains=None, burn_in=2000, dtype=np.float64,
                  checkpoint=None, checkpoint_every=1000, progress=False):
    """Write the first ``n_batches`` minibatches of ``ChainStream(rbm, batch_size, rng, ...)`` to ``path``, bits packed.

    The file (:mod:`kd_ref.npzfile`, written atomically) is read by :class:`RecordedStream`,
    whose minibatches are exactly those of the live stream with the same arguments.
    Resumable: the burn-in and the recording are checkpointed to ``checkpoint`` every
    ``checkpoint_every`` sweeps, at the end and on Ctrl-C (the chains, their generator, the
    bits so far and the CPU seconds); a call that finds the checkpoint resumes it, after
    checking it was made with the same arguments and RBM (:class:`kd_ref.optim.CheckpointError`
    otherwise), and writes the same bytes as an uninterrupted call.

    Parameters
    ----------
    rbm : RBM
    batch_size, n_batches : int
    rng : numpy.random.Generator
    path : str or path
    n_chains, burn_in, dtype
        As in :class:`ChainStream`.
    checkpoint : str or path, optional
    checkpoint_every : int
    progress : bool

    Returns
    -------
    float
        CPU seconds of the recording, summed over every session of a resumed run.

    Raises
    ------
    kd_ref.optim.Interrupted
        On Ctrl-C, after the sweep under way has finished and the checkpoint (if any) is written.
    """
    began = time.process_time()
    burn_in, checkpoint, checkpoint_every, progress = check_chain_run(rbm, rng, burn_in, checkpoint, checkpoint_every,
                                                                      progress)
    n_batches = check_positive_int(n_batches, "n_batches")
    path = check_path(path, "path")
    stream = ChainStream(rbm, batch_size, rng, n_chains=n_chains, burn_in=0, dtype=dtype)
    B, D = stream.batch_size, rbm.n_visible
    record = json.dumps({"batch_size": B, "n_batches": n_batches, "n_chains": stream.n_chains, "burn_in": burn_in,
                         "dtype": stream.sampler.dtype.name,
                         "rbm": hashlib.sha256(rbm.params.tobytes()).hexdigest()}, sort_keys=True)
    bits = np.zeros((n_batches * B, (D + 7) // 8), dtype=np.uint8)
    before = 0.0
    if checkpoint is not None and os.path.exists(checkpoint):
        before = _resume_recording(checkpoint, record, stream, bits)
    done = stream.examples_drawn // B

    def save():
        npzfile.save(checkpoint, STREAM_CKPT_KIND, 1, settings=np.array(record), bits=bits[:done * B],
                     seconds=np.array(before + time.process_time() - began),
                     **{f"stream.{k}": v for k, v in stream.state().items()})

    total = burn_in + n_batches
    label = f"training stream ({stream.n_chains} chains, {burn_in} sweeps of burn-in, {n_batches} x {B} images)"

    def sweep():
        nonlocal done
        if stream.sampler.sweeps < burn_in:
            stream.sampler.sweep(1)                                  # burn-in (4.33-4.34)
        else:                                                        # one sweep, the next B chains in turn
            bits[done * B:(done + 1) * B] = np.packbits(stream().astype(np.uint8), axis=1)
            done += 1
    checkpointed_sweeps(stream.sampler, total, sweep, save if checkpoint is not None else None, label, checkpoint,
                        checkpoint_every, progress)
    seconds = before + time.process_time() - began
    npzfile.save(path, STREAM_KIND, STREAM_VERSION, bits=bits, batch_size=np.array(B), dim=np.array(D),
                 n_chains=np.array(stream.n_chains), seconds=np.array(seconds))
    return seconds


def _resume_recording(path, record, stream, bits):
    """Load a :func:`record_stream` checkpoint into ``stream`` and ``bits``; returns its CPU seconds."""
    try:
        saved = npzfile.load(path, STREAM_CKPT_KIND, {1}, label="checkpoint", required=("settings", "bits", "seconds"))
    except ValueError as err:
        raise CheckpointError(f"{err}; delete it to start the stream again") from None
    if str(saved["settings"]) != record:
        raise CheckpointError(f"checkpoint: {str(path)!r} was made with other settings ({str(saved['settings'])} "
                              f"there, {record} now); use the same settings, or delete the file to start the "
                              f"stream again")
    try:
        stream.load_state({k.split(".", 1)[1]: v for k, v in saved.items() if k.startswith("stream.")})
        n = saved["bits"].shape[0]
        if saved["bits"].shape[1:] != bits.shape[1:] or n != stream.examples_drawn or n > bits.shape[0]:
            raise ValueError(f"bits: expected {stream.examples_drawn} rows of {bits.shape[1]} bytes, received "
                             f"shape {saved['bits'].shape}")
        bits[:n] = saved["bits"]
        seconds = float(saved["seconds"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint: {str(path)!r} is damaged ({err}); delete it to start the stream "
                              f"again") from None
    return seconds


# ------------------------------------------------------------------------------------------ training
def _check_pair(nade, teacher):
    if not isinstance(nade, NADE):
        raise TypeError(f"nade: expected a kd_ref.nade.NADE student, received {type(nade).__name__}")
    dim = getattr(teacher, "n_visible", None)
    if dim is None or not callable(getattr(teacher, "log_phi", None)):
        raise TypeError(f"teacher: expected a model with n_visible and log_phi (e.g. a kd_ref.rbm.RBM), "
                        f"received {type(teacher).__name__}")
    if dim != nade.n_inputs:
        raise ValueError(f"teacher: expected {nade.n_inputs} visible units to match the NADE's inputs, "
                         f"received a teacher with {dim}")


def teacher_targets(student, teacher, loss):
    """The teacher as x -> targets for :func:`kd_ref.distill.distill` (4.23-4.25): what ``loss`` needs of it at
    each minibatch of teacher samples (``loss.targets(teacher, x)``), after checking the samples.

    Parameters
    ----------
    student : NADE
    teacher : RBM or a model with the same methods (see the module notes)
    loss : a loss of :data:`LOSSES`

    Returns
    -------
    callable, ndarray of shape (N, D), binary -> None, ndarray of shape (N,) or (N, D)
    """
    _check_pair(student, teacher)
    if not isinstance(loss, tuple(LOSSES.values())):
        raise TypeError(f"loss: expected KLLoss(), SquareErrorLoss(c) or ScoreMatchingLoss(), received {loss!r}")

    def targets(x):
        return loss.targets(teacher, student._check_x(x, False, name="teacher samples"))

    return targets


def distill_nade(nade, loss, stream, teacher, n_steps, *, optimizer=None, test=None, monitor_every=None,
                 bound_samples=200, rng=None, checkpoint=None, checkpoint_every=500, settings=None, progress=True,
                 label=None):
    """Train ``nade`` to mimic ``teacher`` on samples from ``stream`` (section 4.1.2, steps i-iv):
    :func:`kd_ref.distill.distill` with ADADELTA and this chapter's monitor.

    Parameters
    ----------
    nade : NADE
        Trained in place.
    loss : KLLoss, SquareErrorLoss or ScoreMatchingLoss
    stream : callable () -> ndarray of shape (B, D)
        Teacher samples, e.g. a :class:`ChainStream`.
    teacher : RBM
    n_steps : int
    optimizer : default Adadelta() (rho = 0.95, eps = 1e-6)
    test : array_like of shape (M, D), binary, optional
        Held-out images whose average log q is monitored.
    monitor_every : int, optional
        Default: 20 evaluations per run.
    bound_samples : int
        When the stream is a :class:`ChainStream` or a :class:`RecordedStream` and ``rng``
        is given, every evaluation also estimates the KL upper bound on log Z from
        ``bound_samples`` samples of p (its ``p_samples``, 4.46) and the lower bound from as many NADE samples (4.49); the
        gap between the two tells how close q is to p in both directions. At most K,
        the stream's number of chains.
    rng : numpy.random.Generator, optional
        Draws the NADE samples of the lower bound.
    checkpoint : str, optional
        Resumable checkpoint (:func:`kd_ref.optim.train`). It holds the stream (when
        it has ``state()``, as a :class:`ChainStream` does: the chains and their
        generator) and ``rng``, besides the parameters, optimiser state and monitor
        history, so a resumed run gives exactly the numbers of an uninterrupted one.
    settings : dict, optional
        Values a checkpoint must have been made with (:func:`kd_ref.optim.train`).

    Returns
    -------
    kd_ref.optim.TrainResult
        ``monitor`` holds (step, {"log_q_test", "upper", "lower"}) entries (those available).
    """
    targets = teacher_targets(nade, teacher, loss)
    stream_dim = getattr(stream, "dim", None)
    if stream_dim is not None and stream_dim != nade.n_inputs:
        raise ValueError(f"stream: expected samples of dimension {nade.n_inputs} (the NADE's inputs), "
                         f"received a stream of dimension {stream_dim}")
    n_steps = check_positive_int(n_steps, "n_steps")
    bound_samples = check_positive_int(bound_samples, "bound_samples", minimum=2)
    if test is not None:
        test = check_binary_dataset(test, "test", nade.n_inputs)
    if rng is not None:
        check_generator(rng)
    chains = stream if callable(getattr(stream, "p_samples", None)) else None
    if chains is not None and rng is not None and bound_samples > chains.n_chains:
        raise ValueError(f"bound_samples: expected at most n_chains={chains.n_chains} (one sample per chain), "
                         f"received {bound_samples}")

    def monitor():
        values = {}
        if test is not None:
            values["log_q_test"] = float(np.mean(nade.log_prob(test)))
        if chains is not None and rng is not None:
            x_p = chains.p_samples(bound_samples)
            values["upper"] = kl_upper_bound(teacher.log_phi(x_p), nade.log_prob(x_p)).log_z
            x_q, _ = nade.sample(bound_samples, rng)
            values["lower"] = kl_lower_bound(teacher.log_phi(x_q), nade.log_prob(x_q)).log_z
        return values

    watched = test is not None or (chains is not None and rng is not None)
    if watched and monitor_every is None:
        monitor_every = max(1, n_steps // 20)
    stateful = {"stream": stream} if callable(getattr(stream, "state", None)) else {}   # the name of older checkpoints
    if rng is not None:
        stateful["rng"] = rng                       # the lower bound's NADE samples
    return distill(nade, loss, stream, targets, Adadelta() if optimizer is None else optimizer, n_steps,
                   monitor=monitor if watched else None, monitor_every=monitor_every, checkpoint=checkpoint,
                   checkpoint_every=checkpoint_every, stateful=stateful, settings=settings, progress=progress,
                   label=label or f"NADE by {loss.name}")


# -------------------------------------------------------------------------------------- log Z (4.2.4)
def estimate_log_z(rbm, nade, rng, *, n_samples=10000, burn_in=2000, upper_samples=None, upper_seconds=None,
                   candidates=None, progress=False, **bridge):
    """Every estimate of the RBM's log Z that a trained NADE makes possible (section 4.2.4).

    1. Draw ``n_samples`` exact NADE samples x_q (ancestral sampling).
    2. Start one Gibbs chain at each and run ``burn_in`` sweeps; the end states are the RBM
       samples x_p of bridge sampling (independent chains, started close to equilibrium when
       q fits p).
    3. The RBM samples x_u of the upper bound: ``upper_samples`` when given, else the end
       states of ``n_samples`` chains started at random states and run ``burn_in`` sweeps
       (:func:`kd_ref.rbm.random_chain_samples`, drawn after x_q and x_p).
    4. From log phi and log q at the three sets: the KL upper bound (4.46, x_u), the KL lower
       bound (4.49, x_q), the trivial bound max log phi (4.50, over x_q, x_p and ``candidates``),
       importance sampling (4.52, x_q) and bridge sampling (4.53-4.54, x_q and x_p).

    Why the upper bound has chains of its own (section 4.2.4): E_p[log phi - log q] =
    log Z + KL(p || q) needs samples of p, and x_p are samples of p only once their chains
    have forgotten their start at q. When q misses part of p (a mode, say) and the Gibbs
    chains cross between the parts slowly, the chains started at q stay where q is and the
    average over them leaves out exactly the states where log phi - log q is largest: the
    "bound" moves towards q's own estimate and can fall below log Z. The chains from random
    states know nothing of q. For comparison ``"upper_seeded"`` is the same average over
    x_p; the gap between the two is a symptom of q fitting p poorly or of too short a
    burn-in (see the README for the figures of ``kd-ref run rbm-nade``).

    Parameters
    ----------
    rbm : RBM
    nade : NADE
    rng : numpy.random.Generator
    n_samples : int
        Samples of each kind (the thesis: 10,000).
    burn_in : int
        Gibbs sweeps of the chains started at the NADE samples, and of the random chains
        when this call draws them (the thesis: 2,000 for both).
    upper_samples : array_like of shape (M, D), binary, M >= 2, optional
        RBM samples for the upper bound drawn beforehand, typically
        :func:`kd_ref.rbm.random_chain_samples` shared by every NADE of an experiment.
    upper_seconds : float >= 0, optional
        The CPU seconds ``upper_samples`` took to draw (required with them, refused without
        them); they are part of the upper bound's cost.
    candidates : ndarray of shape (M, D), optional
        Extra states for the trivial bound, e.g. a hill-climbing optimum.
    **bridge
        Options of :func:`kd_ref.partition.bridge_sampling` (max_iter, tol, log_z_init).

    Returns
    -------
    dict
        ``"upper"``, ``"upper_seeded"``, ``"lower"``, ``"trivial"``, ``"importance"``,
        ``"bridge"``: result objects of :mod:`kd_ref.partition`; ``"cpu_seconds"``: for each
        of them the CPU (process) time of everything it needed: for the upper bound the
        random chains (drawn here, or ``upper_seconds``), log phi and log q at x_u and the
        estimator; for the others the NADE samples (they also start the Gibbs chains), log
        phi and log q at the samples each uses, the Gibbs sweeps when it uses x_p
        (``upper_seeded``, bridge sampling, trivial bound), log phi at ``candidates`` for the
        trivial bound, and the estimator itself; ``"x_q"``, ``"x_p"``, ``"x_u"``: the samples.
    """
    _check_pair(nade, rbm)
    check_generator(rng)
    n_samples = check_positive_int(n_samples, "n_samples", minimum=2)
    burn_in = check_positive_int(burn_in, "burn_in", minimum=0)
    if upper_samples is None:
        if upper_seconds is not None:
            raise ValueError(f"upper_seconds: expected None when upper_samples is not given (the chains drawn "
                             f"here are timed here), received {upper_seconds!r}")
    else:
        upper_samples = rbm._check_x(upper_samples, False, name="upper_samples")
        if upper_samples.shape[0] < 2:
            raise ValueError(f"upper_samples: expected at least 2 samples for a +-3 standard-error interval, "
                             f"received {upper_samples.shape[0]}")
        if upper_seconds is None:
            raise ValueError("upper_seconds: expected the CPU seconds the upper_samples took to draw (a float "
                             ">= 0), received None")
        upper_seconds = check_in_range(upper_seconds, "upper_seconds", 0.0, np.inf, high_open=True)
    if candidates is not None:
        candidates = rbm._check_x(candidates, False, name="candidates")
    clock = time.process_time
    t0 = clock()
    x_q = sample_in_chunks(nade, n_samples, rng, progress)
    t1 = clock()
    log_q_q, log_phi_q = nade.log_prob(x_q), rbm.log_phi(x_q)
    t2 = clock()
    chains = GibbsSampler(rbm, rng, init=x_q)
    x_p = chains.burn_in(burn_in, progress=progress) if burn_in else chains.x
    log_q_p, log_phi_p = nade.log_prob(x_p), rbm.log_phi(x_p)
    t3 = clock()
    phis = [log_phi_q, log_phi_p] + ([rbm.log_phi(candidates)] if candidates is not None else [])
    t4 = clock()
    if upper_samples is None:
        upper_samples, upper_seconds = random_chain_samples(rbm, rng, n_samples, burn_in, progress=progress)
    t5 = clock()
    log_q_u, log_phi_u = nade.log_prob(upper_samples), rbm.log_phi(upper_samples)
    t6 = clock()
    sample_q, at_q, at_p, at_candidates, at_u = t1 - t0, t2 - t1, t3 - t2, t4 - t3, t6 - t5  # at_p: the sweeps too
    out = {"upper": kl_upper_bound(log_phi_u, log_q_u),
           "upper_seeded": replace(kl_upper_bound(log_phi_p, log_q_p), method="KL upper bound E_p[log phi - log q], "
                                   "chains started at the NADE samples"),
           "lower": kl_lower_bound(log_phi_q, log_q_q),
           "importance": importance_sampling(log_phi_q, log_q_q),
           "bridge": bridge_sampling(log_phi_q, log_q_q, log_phi_p, log_q_p, **bridge),
           "trivial": trivial_lower_bound(np.concatenate(phis))}
    needs = {"upper": upper_seconds + at_u, "upper_seeded": sample_q + at_p, "lower": sample_q + at_q,
             "importance": sample_q + at_q, "bridge": sample_q + at_q + at_p,
             "trivial": sample_q + at_q + at_p + at_candidates}
    out["cpu_seconds"] = {name: cost + out[name].seconds for name, cost in needs.items()}
    out["x_q"], out["x_p"], out["x_u"] = x_q, x_p, upper_samples
    return out


def _seeded_chains(rbm, nade, rng, n_chains, dtype, progress):
    """NADE samples x_q (K, D), log q and log phi at them (float64) and Gibbs chains started at copies of them.

    The samples are drawn in ``dtype`` (a float32 NADE samples about twice as fast); the
    log-values are computed by ``nade`` and ``rbm`` as given (float64 models: float64 values).
    """
    sampler = nade if np.dtype(dtype) == nade.dtype else nade.astype(dtype)
    x_q = sample_in_chunks(sampler, n_chains, rng, progress)
    log_q_q, log_phi_q = nade.log_prob(x_q), rbm.log_phi(x_q)
    return x_q, log_q_q, log_phi_q, GibbsSampler(rbm, rng, init=x_q, dtype=dtype)


def seeded_chain_trace(rbm, nade, rng, *, n_chains, n_sweeps, every=1, dtype=np.float64, progress=False):
    """log phi - log q along Gibbs chains started at NADE samples: the input of the burn-in diagnostic.

    The pilot of :func:`seeded_chain_bridge`: K chains started at K NADE samples, the
    statistic f = log phi - log q recorded at sweep 0 (the samples themselves) and every
    ``every`` sweeps up to ``n_sweeps``; :func:`kd_ref.partition.burn_in_diagnostic` reads it.

    Parameters
    ----------
    rbm : RBM
    nade : NADE
    rng : numpy.random.Generator
    n_chains : int >= 2
    n_sweeps : int >= 3 * every
        Sweeps of the pilot (at least 4 recorded points).
    every : int >= 1
    dtype : {numpy.float64, numpy.float32}
        Precision of the NADE samples and of the sweeps.

    Returns
    -------
    sweeps : ndarray of shape (T,), int    0, every, 2 every, ... <= n_sweeps
    values : ndarray of shape (T, K)       f at those sweeps
    seconds : float                        CPU seconds of the pilot
    """
    _check_pair(nade, rbm)
    check_generator(rng)
    n_chains = check_positive_int(n_chains, "n_chains", minimum=2)
    every = check_positive_int(every, "every")
    n_sweeps = check_positive_int(n_sweeps, "n_sweeps", minimum=3 * every)
    check_float_dtype(dtype)
    began = time.process_time()
    _, log_q_q, log_phi_q, chains = _seeded_chains(rbm, nade, rng, n_chains, dtype, progress)
    sweeps = np.arange(0, n_sweeps + 1, every)
    values = np.empty((sweeps.size, n_chains))
    values[0] = log_phi_q - log_q_q
    bar = Progress(sweeps.size - 1, label="burn-in pilot", enabled=progress)
    for i in range(1, sweeps.size):
        x = chains.sweep(every)
        values[i] = rbm.log_phi(x) - nade.log_prob(x)
        bar.update(i)
    bar.close()
    return sweeps, values, time.process_time() - began


def seeded_chain_bridge(rbm, nade, rng, *, n_samples, burn_in, samples_per_chain=1, thin=1, dtype=np.float64,
                        progress=False, **bridge):
    """Bridge sampling of the RBM's log Z (4.53-4.54) with several samples per NADE-seeded Gibbs chain.

    1. Draw ``n_samples`` = K exact NADE samples x_q, with log q and log phi at them.
    2. Start one Gibbs chain at (a copy of) each and run ``burn_in`` sweeps, typically the
       burn-in that :func:`kd_ref.partition.burn_in_diagnostic` finds on a pilot
       (:func:`seeded_chain_trace`).
    3. Keep S = ``samples_per_chain`` states of each chain, ``thin`` sweeps apart (the first
       after the burn-in), with log q and log phi at each.
    4. :func:`kd_ref.partition.bridge_sampling_chains` with the chains paired to their seeds:
       the standard error by batch means over chains, seed covariance included, so the
       interval keeps its coverage although the S samples of a chain are correlated.

    With S = 1 and ``burn_in`` the thesis's 2,000 this is the bridge sampling of
    :func:`estimate_log_z`. The saving is on the RBM side: a chain started at q is near p when
    q fits p, so a short burn-in suffices, and every further sample of a chain costs ``thin``
    sweeps instead of a whole burn-in.

    Parameters
    ----------
    rbm : RBM
    nade : NADE
    rng : numpy.random.Generator
    n_samples : int >= 2
        K, the NADE samples and chains.
    burn_in : int >= 0
    samples_per_chain : int >= 1
    thin : int >= 1
    dtype : {numpy.float64, numpy.float32}
        Precision of the NADE sampling and of the Gibbs sweeps (log q and log phi are computed
        by the models as given: in float64 for a float64 NADE).
    **bridge
        max_iter, tol, log_z_init of :func:`kd_ref.partition.bridge_sampling_chains`.

    Returns
    -------
    estimate : kd_ref.partition.ChainBridgeEstimate
    seconds : float
        CPU seconds of everything: the NADE samples, the sweeps, every log q and log phi and
        the estimator.
    """
    _check_pair(nade, rbm)
    check_generator(rng)
    n_samples = check_positive_int(n_samples, "n_samples", minimum=2)
    burn_in = check_positive_int(burn_in, "burn_in", minimum=0)
    per_chain = check_positive_int(samples_per_chain, "samples_per_chain")
    thin = check_positive_int(thin, "thin")
    check_float_dtype(dtype)
    began = time.process_time()
    _, log_q_q, log_phi_q, chains = _seeded_chains(rbm, nade, rng, n_samples, dtype, progress)
    log_q_p, log_phi_p = np.empty((n_samples, per_chain)), np.empty((n_samples, per_chain))
    x = chains.burn_in(burn_in, progress=progress) if burn_in else chains.x
    for s in range(per_chain):
        if s:
            x = chains.sweep(thin)
        log_q_p[:, s], log_phi_p[:, s] = nade.log_prob(x), rbm.log_phi(x)
    est = bridge_sampling_chains(log_phi_q, log_q_q, log_phi_p, log_q_p, paired=True, **bridge)
    return est, time.process_time() - began


def sample_in_chunks(nade, n, rng, progress, chunk=1000):
    """n NADE samples, shape (n, D), drawn in chunks of ``chunk`` (memory and a progress line)."""
    xs = []
    bar = Progress(n, label="NADE samples", enabled=progress)
    for start in range(0, n, chunk):
        xs.append(nade.sample(min(chunk, n - start), rng)[0])
        bar.update(start + xs[-1].shape[0])
    bar.close()
    return np.concatenate(xs)


def exact_kl(rbm, nade, log_z=None):
    """KL(p || q) = sum_x p(x) (log p(x) - log q(x)) in nats (4.6), by enumerating all 2^D states (D <= 20).

    Parameters
    ----------
    rbm : RBM
    nade : NADE
    log_z : float, optional
        The RBM's log Z (computed exactly from the same enumeration when omitted).
    """
    _check_pair(nade, rbm)
    D = rbm.n_visible
    if D > 20:
        raise ValueError(f"rbm: expected at most 20 visible units to enumerate 2^D states, received {D}")
    x = binary_states(0, 2**D, D)
    log_phi = rbm.log_phi(x)
    log_z = logsumexp(log_phi) if log_z is None else check_in_range(log_z, "log_z", -np.inf, np.inf)
    log_p = log_phi - log_z
    return float(np.sum(np.exp(log_p) * (log_p - nade.log_prob(x))))
