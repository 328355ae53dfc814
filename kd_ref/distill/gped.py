"""Generalized posterior expectation distillation (GPED; Vadera, Jalaian & Marlin 2020): students, losses, the algorithm.

A Bayesian teacher p(y | x, theta), theta ~ p(theta | D) sampled by a Markov chain (SGLD in
GPED, any sampler with ``next_batch(k)`` here), defines posterior expectations
E_theta[g(y, x, theta)] (SPEC_seeds §S3.B): the predictive distribution, the expected entropy, ... A
student f(x; phi) is trained online to output them: after every kept teacher state theta_t, a
minibatch of inputs x~_i of an unlabelled set D' gets targets g_hat_i from an estimator U
(U_s: the current g; U_o: the running average over visits; §S3.B), and phi takes one
optimiser step on a loss l(g_hat, f) (S3.8, S3.10). Bayesian Dark Knowledge is the case
(predictive, cross entropy, U_s) (S3.12), which is the thesis's online distillation (3.36-3.39);
EnD^2 fits a Dirichlet over the teacher's predictive distributions instead (S3.13).

Students (S3.9)
---------------
One :class:`kd_ref.mlp.MLP` with the teacher's hidden layers and a *linear* last layer:

* ``C`` outputs: class logits (predictive losses) or EnD^2's log-concentrations z, alpha = exp(z);
* ``C + 1`` outputs: the logits and one log-entropy, the GPED entropy head h(x) = exp(y_C) >= 0,
  a one-unit linear head on the last hidden layer (:class:`kd_ref.outputs.PredictiveEntropyOutput`).

Losses (S3.10, S3.13), minimised and averaged over the minibatch (the protocol of
:mod:`kd_ref.distill`): ``loss(student, x, targets) -> (value, grad)`` and
``loss.hvp(student, x, targets, v)``, all through the student's backprop and R{backprop}
(B.8-B.18) seeded by an output function of the last layer (:class:`ProbabilityLoss`,
:class:`~kd_ref.outputs.PredictiveEntropyOutput`, :class:`~kd_ref.outputs.DirichletLogLikelihood`).

Departures from the released GPED code (meetvadera/GPED), each deliberate (S3.9): the entropy head
is a head of its own (the code's computes the class logits ``fc3(x)`` again instead of ``fc4``);
the entropy term is trained (the code's is commented out); no dropout at test time; the
regulariser multiplies only itself (the code's multiplies the whole accumulated loss); the
student step uses the minibatch mean (S3.8), so a total-loss lambda becomes lambda / N'.
"""
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import special

from .._validation import as_float_array, check_bool, check_generator, check_in_range, check_positive_int
from ..metrics import entropy
from ..mlp import MLP
from ..nonlinearities import LogSoftmax, softmax_parts
from ..optim import Adam, StepDecay, train
from ..posterior import OnlineAverage, StochasticEstimate, Uncertainty, expected_entropy, g_values, predictive
from ..outputs import (DirichletLogLikelihood, OutputFunction, PredictiveEntropyOutput, SoftmaxCrossEntropy,
                       hess_from_r_grad)

#: Central smoothing of EnD^2's observed probabilities (S3.13; KaosEngineer/PriorNetworks' default).
DIRICHLET_SMOOTHING = 1e-7
#: Tolerance on the row sums of predictive targets (averages of probability vectors round).
_ROW_SUM_TOL = 1e-8

#: log-softmax of logits by the max-shifted parts of B.36-B.39 (exact where a probability rounds to 1)
_LOG_SOFTMAX = LogSoftmax()


# ------------------------------------------------------------------ predictive losses at the logits
def _shifted_jt(p, top, u):
    """J^T u = p * (u - p . u) for the softmax Jacobian J = diag p - p p^T, without rounding 1 - p_m.

    u is measured from its top entry first (u' = u - u_m): p . u' has no p_m term, so the top
    entry -sum_{j != m} p_j u'_j is a sum of small terms, not a difference of two near-equal ones.
    """
    u_shift = u - u[top][:, None]
    return p * (u_shift - np.sum(p * u_shift, axis=1, keepdims=True))


class ProbabilityLoss(OutputFunction):
    """A predictive loss of S3.10 at the student's logits y (N, C), f = softmax(y), target g_hat = ``t`` (N, C); minimised.

    ``kind`` (per example, summed over classes and over the rows of the batch):

    ========  ==========================================================  ===============================
    ``ce``    -sum_y g log f                           (BDK)             u = -g / f (not formed: fused)
    ``kl``    KL(g || f) = ce + sum g log g                               as ce
    ``rkl``   KL(f || g) = sum f (log f - log g)       (needs g > 0)      u = log f - log g (+ 1)
    ``sym``   (kl + rkl) / 2
    ``l1``    sum |f - g|                              (a kink at f = g)  u = sign(f - g)
    ``se``    sum (f - g)^2                            (2.4, no 1/2)      u = 2 (f - g)
    ========  ==========================================================  ===============================

    ce and kl go through the exact fused softmax cross entropy of :mod:`kd_ref.outputs`
    (dl/dy = T f - g, T = sum g). The others are functions phi(f) of the probabilities with
    u = dphi/df; their gradient is J^T u = f * (u - f . u) and their R-form (B.15 seeded at y)

        R{dl/dy} = R{f} * (u - f . u) + f * (R{u} - R{f} . u - f . R{u}),   R{f} = f * (R_y - f . R_y)

    with R{u} = R{log f} = R_y - f . R_y (rkl), 0 (l1), 2 R{f} (se); every product with u is
    taken from the top entry (:func:`_shifted_jt`), so logit gaps of 1e3 stay exact.
    """

    KINDS = ("ce", "kl", "rkl", "sym", "l1", "se")

    def __init__(self, t, kind="ce"):
        super().__init__(t)
        if kind not in self.KINDS:
            raise ValueError(f"kind: expected one of {list(self.KINDS)}, received {kind!r}")
        self.kind = kind
        self._ce = SoftmaxCrossEntropy(self.t)
        if kind in ("rkl", "sym"):
            if np.any(self.t <= 0):
                raise ValueError(f"t: expected targets > 0 for the reverse KL (it takes log g), received a minimum "
                                 f"of {float(self.t.min())!r}")
            self.log_t = np.log(self.t)

    def _parts(self, y):
        top, s, rest = softmax_parts(self._check(y))
        return top, s - np.log1p(rest), np.exp(s) / (1.0 + rest)     # top, log f, f (B.36-B.39)

    def _u(self, log_f, f):
        """u = dphi/df of the probability-space part (for rkl without its +1, which J^T removes)."""
        if self.kind in ("rkl", "sym"):
            return log_f - self.log_t
        if self.kind == "l1":
            return np.sign(f - self.t)
        return 2.0 * (f - self.t)

    def value(self, y):
        top, log_f, f = self._parts(y)
        if self.kind == "l1":
            return float(np.sum(np.abs(f - self.t)))
        if self.kind == "se":
            return float(np.sum((f - self.t) ** 2))
        kl = -self._ce.value(y)
        if self.kind != "ce":
            kl += float(np.sum(np.multiply(self.t, np.log(self.t, where=self.t > 0, out=np.zeros_like(self.t)),
                                           out=np.zeros_like(self.t), where=self.t > 0)))
        if self.kind in ("ce", "kl"):
            return kl
        rkl = float(np.sum(f * (log_f - self.log_t)))
        return rkl if self.kind == "rkl" else 0.5 * (kl + rkl)

    def grad(self, y):
        if self.kind in ("ce", "kl"):
            return -self._ce.grad(self._check(y))
        top, log_f, f = self._parts(y)
        d = _shifted_jt(f, top, self._u(log_f, f))
        return 0.5 * (d - self._ce.grad(y)) if self.kind == "sym" else d

    def r_grad(self, y, R_y):
        if self.kind in ("ce", "kl"):
            return -self._ce.r_grad(self._check(y), R_y)
        top, log_f, f = self._parts(y)
        u = self._u(log_f, f)
        R_f = _shifted_jt(f, top, R_y)                                  # R{f} = f * (R_y - f . R_y) (B.34)
        if self.kind in ("rkl", "sym"):
            R_u = R_y - R_y[top][:, None]
            R_u = R_u - np.sum(f * R_u, axis=1, keepdims=True)          # R{log f} = R_y - f . R_y
        else:
            R_u = np.zeros_like(R_y) if self.kind == "l1" else 2.0 * R_f
        u_shift = u - u[top][:, None]
        w = u_shift - np.sum(f * u_shift, axis=1, keepdims=True)        # u - f . u
        out = R_f * w + _shifted_jt(f, top, R_u) - f * np.sum(R_f * u_shift, axis=1, keepdims=True)
        return 0.5 * (out - self._ce.r_grad(y, R_y)) if self.kind == "sym" else out

    def rows(self, rows):
        """The same loss restricted to the batch rows ``rows`` (for the chunks of kd_ref.curvature)."""
        return ProbabilityLoss(self.t[rows], self.kind)

    def hess(self, y):
        """d^2l/dy dy^T per row, shape (N, C, C) (S1.12), from the R-form along each unit vector."""
        return hess_from_r_grad(self.r_grad, self._check(y))


# --------------------------------------------------------------------- the loss protocol
def _check_student(student, n_out, what):
    """A student MLP whose last layer is linear with one of the widths ``n_out`` (None: any width >= 3)."""
    if not isinstance(student, MLP):
        raise TypeError(f"student: expected a kd_ref.mlp.MLP (see gped_student), received {type(student).__name__}")
    fits = student.sizes[-1] >= 3 if n_out is None else student.sizes[-1] in n_out
    if student.nonlinearities[-1] != "linear" or not fits:
        widths = "C + 1 >= 3" if n_out is None else " or ".join(map(str, n_out))
        raise ValueError(f"student: expected a linear last layer of {widths} outputs ({what}), received {student!r}")


def check_predictive_targets(g, name="targets"):
    """Predictive targets (N, C): finite entries in [0, 1], each row summing to 1 (to C 1e-8)."""
    g = as_float_array(g, name, ndim=2)
    sums = g.sum(axis=1)
    if np.any(g < 0) or np.any(g > 1) or np.any(np.abs(sums - 1.0) > _ROW_SUM_TOL * g.shape[1]):
        raise ValueError(f"{name}: expected class probabilities (entries in [0, 1], rows summing to 1), received "
                         f"entries in [{float(g.min())!r}, {float(g.max())!r}] and row sums in "
                         f"[{float(sums.min())!r}, {float(sums.max())!r}]")
    return g


def _check_entropy_targets(h, name, n):
    h = as_float_array(h, name, ndim=1)
    if h.shape[0] != n or np.any(h < 0):
        raise ValueError(f"{name}: expected {n} entropies >= 0, received shape {h.shape} with minimum "
                         f"{float(h.min()) if h.size else None!r}")
    return h


class _HeadLoss:
    """Shared driver: ``_output(targets, n_out) -> (output function of the student's y, sign)`` given by each loss.

    value = sign E / N, its theta-gradient by backprop (B.8-B.11) and its Hessian-vector product by
    R{backprop} (B.12-B.18), both seeded at the linear last layer (y = a_L).
    """

    what = ""
    needs_members = False

    def _prepare(self, student, x, targets):
        _check_student(student, self._widths(targets), self.what)
        x = as_float_array(x, "x", shape=(None, student.sizes[0]))
        if x.shape[0] == 0:
            raise ValueError(f"x: expected a non-empty minibatch of shape (N, {student.sizes[0]}), received {x.shape}")
        targets = as_float_array(targets, "targets", ndim=2)
        if targets.shape[0] != x.shape[0]:
            raise ValueError(f"targets: expected {x.shape[0]} rows (one per input), received shape {targets.shape}")
        out, sign = self._output(targets, student.sizes[-1])
        return x, out, sign

    def __call__(self, student, x, targets):
        """Minibatch loss and theta-gradient.

        Parameters
        ----------
        student : kd_ref.mlp.MLP with a linear last layer (:func:`gped_student`)
        x : ndarray of shape (N, D)
        targets : ndarray of shape (N, G)
            The estimator's g_hat at x (G as the loss's docstring says).

        Returns
        -------
        value : float
        grad : ndarray of shape (student.n_params,)
        """
        x, out, sign = self._prepare(student, x, targets)
        n = x.shape[0]
        value, d_params, _ = student.grad(x, out, input_grads=False)
        return sign * value / n, sign * d_params / n

    def hvp(self, student, x, targets, v):
        """H v for the theta-Hessian of the loss at fixed targets, v of shape (n_params,), by R{backprop}."""
        x, out, sign = self._prepare(student, x, targets)
        Hv, _ = student.hvp(x, out, v_params=v, input_grads=False)
        return sign * Hv / x.shape[0]


class PredictiveLoss(_HeadLoss):
    """A predictive loss of S3.10 (``kind`` of :class:`ProbabilityLoss`), targets g_hat (N, C).

    The student has C outputs (logits) or C + 1 (an entropy head, which this loss leaves untrained).
    """

    what = "C logits, or C logits and a log-entropy"

    def __init__(self, kind="ce"):
        if kind not in ProbabilityLoss.KINDS:
            raise ValueError(f"kind: expected one of {list(ProbabilityLoss.KINDS)}, received {kind!r}")
        self.kind = kind
        self.name = f"GPED predictive {kind}"

    def _widths(self, targets):
        return targets.shape[1], targets.shape[1] + 1

    def _output(self, targets, n_out):
        pred = ProbabilityLoss(check_predictive_targets(targets), self.kind)
        return (pred, 1.0) if n_out == targets.shape[1] else (PredictiveEntropyOutput(pred, None), 1.0)


class EntropyLoss(_HeadLoss):
    """The entropy MAE |h(x) - g_hat_H| of S3.10 alone, targets (N, 1); the student has C + 1 outputs."""

    what = "C logits and a log-entropy"
    name = "GPED entropy MAE"

    def _widths(self, targets):
        return None                                    # C + 1 for any C >= 2

    def _output(self, targets, n_out):
        if targets.shape[1] != 1:
            raise ValueError(f"targets: expected one entropy per row, shape (N, 1), received {targets.shape}")
        h = _check_entropy_targets(targets[:, 0], "targets", targets.shape[0])
        return PredictiveEntropyOutput(None, h, n_classes=n_out - 1), 1.0


class JointLoss(_HeadLoss):
    """l_pred + weight * l_H (S3.10, GPED Experiment 4): targets (N, C + 1) = [g_hat predictive, g_hat entropy]."""

    what = "C logits and a log-entropy"

    def __init__(self, kind="ce", weight=1.0):
        if kind not in ProbabilityLoss.KINDS:
            raise ValueError(f"kind: expected one of {list(ProbabilityLoss.KINDS)}, received {kind!r}")
        self.kind, self.weight = kind, check_in_range(weight, "weight", 0.0, np.inf, high_open=True)
        self.name = f"GPED {kind} + entropy MAE"

    def _widths(self, targets):
        return (targets.shape[1],)

    def _output(self, targets, n_out):
        if targets.shape[1] < 3:
            raise ValueError(f"targets: expected C >= 2 class probabilities and one entropy, shape (N, C + 1), "
                             f"received {targets.shape}")
        pred = ProbabilityLoss(check_predictive_targets(targets[:, :-1]), self.kind)
        h = _check_entropy_targets(targets[:, -1], "targets[:, -1]", targets.shape[0])
        return PredictiveEntropyOutput(pred, h, self.weight), 1.0


def smooth_probabilities(p, eps=DIRICHLET_SMOOTHING):
    """Central smoothing p <- (1 - eps)(p - 1/C) + 1/C (S3.13): every entry >= eps / C > 0, rows still sum to 1."""
    c = p.shape[1]
    return (1.0 - eps) * (p - 1.0 / c) + 1.0 / c


class DirichletLoss(_HeadLoss):
    """EnD^2's Dirichlet negative log-likelihood (S3.13) of the teacher's current predictive distribution.

    Targets pi (N, C), one teacher state's probabilities p(. | x, theta_t), centrally smoothed by
    ``smoothing`` (:func:`smooth_probabilities`); the student's C outputs are log-concentrations.
    Value -log Dir(pi; exp(z)) averaged over the minibatch, derivatives those of
    :class:`kd_ref.outputs.DirichletLogLikelihood` negated. Each step must see individual teacher
    members, so an averaging estimator (U_o) is refused by :func:`gped_distill` (``needs_members``).
    """

    what = "C log-concentrations"
    needs_members = True
    name = "EnD^2 Dirichlet NLL"

    def __init__(self, smoothing=DIRICHLET_SMOOTHING):
        self.smoothing = check_in_range(smoothing, "smoothing", 0.0, 1.0, low_open=True)

    def _widths(self, targets):
        return (targets.shape[1],)

    def _output(self, targets, n_out):
        return DirichletLogLikelihood(smooth_probabilities(check_predictive_targets(targets), self.smoothing)), -1.0


#: The GPED losses by the target they distil (the registry shape of every chapter, see kd_ref.distill).
LOSSES = {"predictive": PredictiveLoss, "entropy": EntropyLoss, "both": JointLoss, "dirichlet": DirichletLoss}


# ------------------------------------------------------------------------------ students
def gped_student(teacher, rng, *, head="entropy", hidden=None):
    """A GPED student (S3.9): the teacher's hidden layers (fresh weights) and a linear last layer.

    Parameters
    ----------
    teacher : kd_ref.mlp.MLP
        A classifier [D, H_1, ..., H_k, C]; its hidden widths and nonlinearities are copied.
    rng : numpy.random.Generator
    head : "predictive", "entropy" or "dirichlet"
        C logits; C logits and a log-entropy (C + 1 outputs); C log-concentrations (EnD^2).
    hidden : sequence of int, optional
        Other hidden widths (same number of layers; GPED's width search).

    Returns
    -------
    kd_ref.mlp.MLP
    """
    if not isinstance(teacher, MLP) or teacher.n_layers < 2:
        raise TypeError(f"teacher: expected a kd_ref.mlp.MLP with at least one hidden layer, received {teacher!r}")
    heads = {"predictive": 0, "entropy": 1, "dirichlet": 0}
    if head not in heads:
        raise ValueError(f"head: expected one of {list(heads)}, received {head!r}")
    widths = teacher.sizes[1:-1] if hidden is None else [check_positive_int(h, "hidden") for h in hidden]
    if len(widths) != teacher.n_layers - 1:
        raise ValueError(f"hidden: expected {teacher.n_layers - 1} widths (the teacher's hidden layers), received "
                         f"{list(widths)}")
    sizes = [teacher.sizes[0], *widths, teacher.sizes[-1] + heads[head]]
    return MLP(sizes, teacher.nonlinearities[:-1] + ["linear"], check_generator(rng))


def student_log_probs(student, x, head="entropy"):
    """The student's class log-probabilities (N, C): log-softmax of the logits, or of EnD^2's z (the mean alpha / alpha_0)."""
    y = as_float_array(student.predict(x), "y")
    logits = y[:, :-1] if head == "entropy" else y
    return _LOG_SOFTMAX.forward(logits)


# --------------------------------------------------------------------------- uncertainty
def gped_uncertainty(student, x):
    """TU = H[f(. | x)], EU = h(x) = exp(y_C), KU = TU - EU of a student with an entropy head (S3.14); KU never clipped."""
    _check_student(student, None, "C logits and a log-entropy")
    y = student.predict(x)
    logits = y[:, :-1]
    total = entropy(_LOG_SOFTMAX.forward(logits))
    data = np.exp(y[:, -1])
    return Uncertainty(total, data, total - data)


def dirichlet_uncertainty(z):
    """TU, EU, KU of Dir(alpha = exp(z)) for log-concentrations z (N, C) (S3.14).

    TU = H[alpha / alpha_0] (from log(alpha / alpha_0) = z - logsumexp z), EU = E_{pi ~ Dir(alpha)} H[pi]
    = psi(alpha_0 + 1) - sum_k (alpha_k / alpha_0) psi(alpha_k + 1), KU = TU - EU.
    """
    z = as_float_array(z, "z", ndim=2)
    log_mean = _LOG_SOFTMAX.forward(z)
    alpha = np.exp(z)
    alpha_0 = alpha.sum(axis=1)
    total = entropy(log_mean)
    data = special.digamma(alpha_0 + 1.0) - np.sum(np.exp(log_mean) * special.digamma(alpha + 1.0), axis=1)
    return Uncertainty(total, data, total - data)


def end2_uncertainty(student, x):
    """:func:`dirichlet_uncertainty` of an EnD^2 student's log-concentrations at x (S3.14)."""
    _check_student(student, (student.sizes[-1],), "C log-concentrations")
    return dirichlet_uncertainty(student.predict(x))


# ------------------------------------------------------------------------------- settings
ESTIMATORS = ("stochastic", "online")


@dataclass(frozen=True)
class GPEDSettings:
    """The numbers of Algorithm 1 (S3.11) that are not objects; JSON-able, stored in checkpoints.

    Attributes
    ----------
    n_steps : int
        Distillation steps: one per kept teacher state (the sampler's burn-in B and thinning H
        decide which states are kept, so T = B + n_steps H SGLD updates in all).
    batch_size : int
        M', inputs of D' drawn with replacement at every step (as the GPED code).
    input_noise : float
        sigma_p: x~ = x + N(0, sigma_p^2 I), fresh at every step (GPED code: 0.001).
    clip : (float, float) or None
        Clip x~ to this range (the CNN script's [0, 1]); None leaves it.
    lr, lr_step, lr_gamma, weight_decay
        The student's Adam: step size lr, times lr_gamma every lr_step distillation steps
        (:class:`kd_ref.optim.StepDecay`; None keeps it constant), L2 weight decay lambda on the
        *mean* loss (S3.8: lambda_mean = lambda_total / N').
    target, loss, estimator
        What the presets distil, with which loss and estimator: target "predictive" | "entropy" |
        "both" | "dirichlet" (a key of :data:`LOSSES`), loss a ``ProbabilityLoss`` kind (for the
        predictive part), estimator "stochastic" (U_s) or "online" (U_o), §S3.B.
    entropy_weight : float
        Weight of the entropy MAE in the joint loss.
    smoothing : float
        EnD^2's central smoothing epsilon (S3.13).
    burn_in, thin : int
        B and H for the teacher's sampler (``SGLD(..., burn_in=B, thin=H)``); recorded here so a
        preset states the whole configuration, and checked against the sampler when it has them.
    """

    n_steps: int = 1000
    batch_size: int = 100
    input_noise: float = 1e-3
    clip: tuple = None
    lr: float = 1e-3
    lr_step: int = None
    lr_gamma: float = 0.5
    weight_decay: float = 0.0
    target: str = "predictive"
    loss: str = "ce"
    estimator: str = "online"
    entropy_weight: float = 1.0
    smoothing: float = DIRICHLET_SMOOTHING
    burn_in: int = 1000
    thin: int = 100

    def __post_init__(self):
        check_positive_int(self.n_steps, "n_steps")
        check_positive_int(self.batch_size, "batch_size")
        check_in_range(self.input_noise, "input_noise", 0.0, np.inf, high_open=True)
        if self.clip is not None:
            clip = tuple(self.clip) if isinstance(self.clip, (tuple, list)) else None
            if clip is None or len(clip) != 2 or not all(np.isfinite(c) for c in clip) or not clip[0] < clip[1]:
                raise ValueError(f"clip: expected None or (low, high) with low < high, received {self.clip!r}")
            object.__setattr__(self, "clip", (float(clip[0]), float(clip[1])))
        check_in_range(self.lr, "lr", 0.0, np.inf, high_open=True)      # 0 allowed: the frozen-student control
        if self.lr_step is not None:
            check_positive_int(self.lr_step, "lr_step")
        check_in_range(self.lr_gamma, "lr_gamma", 0.0, 1.0, low_open=True)
        check_in_range(self.weight_decay, "weight_decay", 0.0, np.inf, high_open=True)
        if self.target not in LOSSES:
            raise ValueError(f"target: expected one of {list(LOSSES)}, received {self.target!r}")
        if self.loss not in ProbabilityLoss.KINDS + ("mae", "dirichlet"):
            raise ValueError(f"loss: expected one of {list(ProbabilityLoss.KINDS) + ['mae', 'dirichlet']}, "
                             f"received {self.loss!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator: expected one of {list(ESTIMATORS)}, received {self.estimator!r}")
        if (self.target == "dirichlet") != (self.loss == "dirichlet") or (self.target == "entropy") != \
                (self.loss == "mae"):
            raise ValueError(f"loss: expected 'dirichlet' exactly for target 'dirichlet' and 'mae' exactly for target "
                             f"'entropy', received loss {self.loss!r} for target {self.target!r}")
        if self.target == "dirichlet" and self.estimator == "online":
            raise ValueError(_DIRICHLET_NEEDS_MEMBERS)
        check_in_range(self.entropy_weight, "entropy_weight", 0.0, np.inf, high_open=True)
        check_in_range(self.smoothing, "smoothing", 0.0, 1.0, low_open=True)
        check_positive_int(self.burn_in, "burn_in", minimum=0)
        check_positive_int(self.thin, "thin")

    def as_dict(self):
        """The settings as a JSON-able dict (the clip as a list, as it comes back from a checkpoint)."""
        out = asdict(self)
        out["clip"] = None if self.clip is None else list(self.clip)
        return out

    def make_loss(self):
        """The loss of this configuration (:data:`LOSSES`)."""
        if self.target == "predictive":
            return PredictiveLoss(self.loss)
        if self.target == "entropy":
            return EntropyLoss()
        if self.target == "both":
            return JointLoss(self.loss, self.entropy_weight)
        return DirichletLoss(self.smoothing)

    def make_g(self):
        """g of this configuration (S3.4): the predictive (N, C), the expected entropy (N, 1), both (N, C + 1);
        EnD^2 fits the members' probabilities themselves (the predictive g under U_s)."""
        return {"entropy": expected_entropy, "both": predictive_and_entropy}.get(self.target, predictive)

    def make_estimator(self, n_rows, n_classes):
        """U_s (S3.5) or U_o (S3.6) over the ``n_rows`` rows of D', as wide as :meth:`make_g`'s values."""
        width = {"entropy": 1, "both": n_classes + 1}.get(self.target, n_classes)
        return (StochasticEstimate if self.estimator == "stochastic" else OnlineAverage)(n_rows, width)

    def make_optimizer(self):
        """The student's Adam with a constant or step-decayed step size (SPEC_seeds 0.2)."""
        if self.lr == 0:
            return Adam(no_step, weight_decay=self.weight_decay)
        schedule = self.lr if self.lr_step is None else StepDecay(self.lr, self.lr_step, self.lr_gamma)
        return Adam(schedule, weight_decay=self.weight_decay)


def predictive_and_entropy(log_p):
    """g = (p(. | x, theta), H[p(. | x, theta)]): (N, C) -> (N, C + 1), the target of the joint head (S3.4, S3.10)."""
    return np.hstack([predictive(log_p), expected_entropy(log_p)])


def no_step(t):
    """The step size 0 at every step: a student that never moves (the control of the end-to-end tests)."""
    return 0.0


_DIRICHLET_NEEDS_MEMBERS = (
    "estimator: expected the stochastic estimator U_s for the EnD^2 Dirichlet loss, received the online average "
    "U_o; the Dirichlet likelihood is fitted to individual teacher members p(. | x, theta_t) (S3.13), and U_o "
    "replaces them by their running mean, whose Dirichlet fit has no knowledge uncertainty to learn")


def _preset(base, overrides):
    try:
        return replace(base, **overrides)
    except TypeError as err:
        raise TypeError(f"overrides: expected fields of GPEDSettings ({', '.join(GPEDSettings.__dataclass_fields__)})"
                        f", received {sorted(overrides)}: {err}") from None


def bdk_settings(**overrides):
    """Bayesian Dark Knowledge (S3.12): g = predictive, cross entropy, U_s, D' = D with fresh Gaussian noise.

    Numbers of the MXNet BDK example (apache/mxnet ``example/bayesian-methods``): student Adam 1e-4,
    input perturbation sigma = 0.1 (>= 10,000 training images), M' = 100, burn-in 1,000,
    thinning 100. ``overrides`` replace any field.
    """
    return _preset(GPEDSettings(target="predictive", loss="ce", estimator="stochastic", input_noise=0.1, lr=1e-4,
                                batch_size=100, burn_in=1000, thin=100), overrides)


def gped_settings(target="predictive", **overrides):
    """GPED's configuration (S3.11, the GPED code and the reproduction scripts of S3.A): U_o, Adam 1e-3,
    sigma_p = 0.001, M' = 100, H = 100, B = 1,000; target "predictive" (cross entropy), "entropy"
    (MAE) or "both" (their sum, GPED Experiment 4)."""
    losses = {"predictive": "ce", "entropy": "mae", "both": "ce"}
    if target not in losses:
        raise ValueError(f"target: expected one of {list(losses)}, received {target!r}")
    return _preset(GPEDSettings(target=target, loss=losses[target], estimator="online", input_noise=1e-3, lr=1e-3,
                                batch_size=100, burn_in=1000, thin=100), overrides)


def end2_settings(**overrides):
    """EnD^2 adapted to a chain (S3.13): the Dirichlet NLL of each step's teacher member (U_s only), smoothing 1e-7,
    no temperature annealing; the other numbers as :func:`gped_settings`."""
    return _preset(GPEDSettings(target="dirichlet", loss="dirichlet", estimator="stochastic", input_noise=1e-3,
                                lr=1e-3, batch_size=100, burn_in=1000, thin=100), overrides)


# ------------------------------------------------------------------------------ the algorithm
@dataclass
class GPEDResult:
    """What :func:`gped_distill` returns.

    Attributes
    ----------
    student : kd_ref.mlp.MLP             trained in place (the same object that was passed)
    history : kd_ref.optim.TrainResult   per-step losses, monitor values, steps, time
    estimator : object                   the estimator, holding its final targets (and visit counts for U_o)
    teacher_accumulator : object or None the ``accumulator`` given, holding every kept teacher state's
                                         log-probabilities at the test inputs (S3.14)
    """

    student: MLP
    history: object
    estimator: object
    teacher_accumulator: object = None


def _teacher_log_probs(teacher):
    """theta, x -> log p(. | x, theta) (N, C) from a classifier MLP (its params set to theta) or a callable."""
    if isinstance(teacher, MLP):
        last = teacher.nonlinearities[-1]
        if last not in ("log_softmax", "softmax"):
            raise ValueError(f"teacher: expected a classifier whose last nonlinearity is log_softmax or softmax, "
                             f"received {last!r}")

        def log_probs(theta, x):
            teacher.set_params(theta)
            a_L = teacher.forward(x).a[-1]
            return _LOG_SOFTMAX.forward(a_L)

        return log_probs, teacher.n_params
    if callable(teacher):
        return teacher, None
    raise TypeError(f"teacher: expected a kd_ref.mlp.MLP classifier or a callable (theta, x) -> log-probabilities, "
                    f"received {type(teacher).__name__}")


def _averages(estimator):
    """True for an estimator that averages over visits (U_o keeps visit counts), False for U_s."""
    return getattr(estimator, "counts", None) is not None or getattr(estimator, "visits", None) is not None


def gped_distill(teacher, sampler, student, g, estimator, loss, d_prime, settings, rng, *, accumulator=None,
                 test_inputs=None, monitor=None, monitor_every=None, callback=None, checkpoint=None,
                 checkpoint_every=500, progress=False, label="gped"):
    """Algorithm 1 of GPED (S3.11): distil a posterior expectation E_theta[g] from a chain into ``student``.

    Every step k = 1 .. ``settings.n_steps``:

    1. theta_k = ``sampler.next_batch(1)[0]``, the next kept teacher state (SGLD after B + k H updates,
       or any sampler with the slice sampler's interface);
    2. i_1..i_M' uniform on D' with replacement; x~ = D'[i] + N(0, sigma_p^2 I) (clipped if asked);
    3. g_hat_i = ``estimator.update(i, g(log p(. | x~_i, theta_k)))`` (U_s or U_o, §S3.B);
    4. one Adam step on ``loss(student, x~, g_hat)`` (S3.8: the minibatch mean, + lambda ||phi||^2 / 2);
    5. with an ``accumulator``, the teacher's log-probabilities at ``test_inputs`` are added to it (the
       ensemble's running TU / EU / KU of S3.14, no sample stored).

    The run goes through :func:`kd_ref.optim.train`: with a ``checkpoint`` the student, Adam, the
    sampler (theta and its generator), the estimator and ``rng`` are saved, and a stopped run resumes
    to exactly the numbers of an uninterrupted one.

    Parameters
    ----------
    teacher : kd_ref.mlp.MLP or callable (theta, x) -> ndarray of shape (N, C)
        A classifier whose params are theta (SGLD on ``teacher.params``; its params hold the last
        sample afterwards), or the teacher's log-probabilities as a function.
    sampler : object with ``next_batch(k)`` -> (k, P)
        ``kd_ref.mcmc.SGLD`` or ``SliceSampler``; resumable when it has ``state()``/``load_state()``.
    student : kd_ref.mlp.MLP
        From :func:`gped_student`; trained in place.
    g : callable, log-probabilities (N, C) -> (N, G)
        The posterior expectation's integrand (§S3.B).
    estimator : object with ``update(indices, values) -> targets``
        U_s or U_o over the rows of D' (§S3.B), with ``state()``/``load_state()`` for checkpoints.
    loss : a loss of :data:`LOSSES` (or any loss of the protocol of :mod:`kd_ref.distill`)
    d_prime : ndarray of shape (N', D)
        The distillation inputs D'.
    settings : GPEDSettings
    rng : numpy.random.Generator
        Draws the indices and the input noise.
    accumulator : object with ``add(log_p)``, optional
        E.g. ``kd_ref.posterior.EnsembleAccumulator(len(test_inputs), C)``; checkpointed when it has
        ``state()`` / ``load_state()``. Needs ``test_inputs``, ndarray of shape (N_test, D).
    monitor, monitor_every, callback, checkpoint, checkpoint_every, progress, label
        As :func:`kd_ref.optim.train`.

    Returns
    -------
    GPEDResult

    Examples
    --------
    A two-class teacher sampled by SGLD, its predictive and expected entropy distilled by U_o:

    >>> import numpy as np
    >>> from kd_ref.mcmc import SGLD, mlp_log_posterior_gradient
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(50, 2)); labels = (x[:, 0] > 0).astype(int)
    >>> teacher = MLP([2, 8, 2], ["relu", "log_softmax"], rng)
    >>> s = gped_settings("both", n_steps=20, batch_size=10, burn_in=50, thin=2)
    >>> grad = mlp_log_posterior_gradient(teacher, x, labels, 1.0, batch_size=10, rng=rng)
    >>> chain = SGLD(grad, teacher.params.copy(), rng, 1e-3, burn_in=s.burn_in, thin=s.thin)
    >>> student = gped_student(teacher, rng, head="entropy")
    >>> result = gped_distill(teacher, chain, student, s.make_g(), s.make_estimator(50, 2), s.make_loss(), x, s, rng)
    >>> gped_uncertainty(result.student, x[:3]).total.shape
    (3,)

    Raises
    ------
    ValueError
        Before any state changes: an averaging estimator (U_o) with the Dirichlet loss (S3.13), a sampler
        whose burn-in or thinning differ from ``settings``, D' of the wrong width, a checkpoint with a
        sampler or estimator that cannot save its state.
    """
    if not isinstance(settings, GPEDSettings):
        raise TypeError(f"settings: expected a GPEDSettings (bdk_settings(), gped_settings(), end2_settings()), "
                        f"received {type(settings).__name__}")
    log_probs, n_theta = _teacher_log_probs(teacher)
    if not callable(getattr(sampler, "next_batch", None)):
        raise TypeError(f"sampler: expected a sampler with next_batch(k) (kd_ref.mcmc.SGLD or SliceSampler), "
                        f"received {type(sampler).__name__}")
    if n_theta is not None and getattr(sampler, "n_dim", n_theta) != n_theta:
        raise ValueError(f"sampler: expected states of the teacher's {n_theta} parameters, received a sampler of "
                         f"dimension {sampler.n_dim}")
    if isinstance(getattr(sampler, "burn_in", None), int):          # SGLD (a slice sampler burns in by a call)
        for name in ("burn_in", "thin"):
            if getattr(sampler, name) != getattr(settings, name):
                raise ValueError(f"sampler: expected {name} = {getattr(settings, name)} as in the settings, received "
                                 f"a sampler with {name} = {getattr(sampler, name)}")
    if not isinstance(student, MLP):
        raise TypeError(f"student: expected a kd_ref.mlp.MLP (see gped_student), received {type(student).__name__}")
    if not callable(g):
        raise TypeError(f"g: expected a callable log-probabilities (N, C) -> (N, G), received {g!r}")
    if not callable(getattr(estimator, "update", None)):
        raise TypeError(f"estimator: expected an estimator with update(indices, values) (U_s or U_o), received "
                        f"{type(estimator).__name__}")
    if not callable(loss):
        raise TypeError(f"loss: expected a loss(student, x, targets) -> (value, grad), received {loss!r}")
    if getattr(loss, "needs_members", False) and _averages(estimator):
        raise ValueError(_DIRICHLET_NEEDS_MEMBERS)
    d_prime = as_float_array(d_prime, "d_prime", shape=(None, student.sizes[0]))
    if d_prime.shape[0] == 0:
        raise ValueError(f"d_prime: expected at least one input row, received shape {d_prime.shape}")
    check_generator(rng)
    stateful = {"estimator": estimator, "rng": rng}
    if callable(getattr(sampler, "state", None)) and callable(getattr(sampler, "load_state", None)):
        stateful["sampler"] = sampler
    elif checkpoint is not None:
        raise ValueError(f"checkpoint: expected a sampler with state() and load_state() to checkpoint (SGLD), "
                         f"received a {type(sampler).__name__} without them; run without a checkpoint")
    if checkpoint is not None and not (callable(getattr(estimator, "state", None)) and
                                       callable(getattr(estimator, "load_state", None))):
        raise ValueError(f"checkpoint: expected an estimator with state() and load_state(), received a "
                         f"{type(estimator).__name__} without them")
    if (accumulator is None) != (test_inputs is None):
        raise ValueError(f"accumulator, test_inputs: expected both or neither, received "
                         f"{'only the accumulator' if test_inputs is None else 'only test_inputs'}")
    if accumulator is not None:
        if not callable(getattr(accumulator, "add", None)):
            raise TypeError(f"accumulator: expected an object with add(log_p) (kd_ref.posterior.EnsembleAccumulator), "
                            f"received {type(accumulator).__name__}")
        test_inputs = as_float_array(test_inputs, "test_inputs", shape=(None, student.sizes[0]))
        if callable(getattr(accumulator, "state", None)) and callable(getattr(accumulator, "load_state", None)):
            stateful["accumulator"] = accumulator
        elif checkpoint is not None:
            raise ValueError(f"checkpoint: expected an accumulator with state() and load_state(), received a "
                             f"{type(accumulator).__name__} without them")
    n_rows, sigma, clip, m = d_prime.shape[0], settings.input_noise, settings.clip, settings.batch_size

    def draw():
        theta = sampler.next_batch(1)[0]
        idx = rng.integers(0, n_rows, size=m)
        x = d_prime[idx] + sigma * rng.standard_normal((m, d_prime.shape[1])) if sigma > 0 else d_prime[idx]
        if clip is not None:
            x = np.clip(x, *clip)
        targets = estimator.update(idx, g_values(g, log_probs(theta, x)))     # (m, G), finite, checked
        if accumulator is not None:
            accumulator.add(log_probs(theta, test_inputs))
        return x, targets

    def objective(batch):
        return loss(student, *batch)

    history = train(student.params, objective, draw, settings.make_optimizer(), settings.n_steps, monitor=monitor,
                    monitor_every=monitor_every, callback=callback, progress=progress, checkpoint=checkpoint,
                    checkpoint_every=checkpoint_every, stateful=stateful, settings=settings.as_dict(), label=label)
    return GPEDResult(student, history, estimator, accumulator)
