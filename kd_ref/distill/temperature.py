"""Temperature distillation (Hinton, Vinyals & Dean 2015), logit matching and their t -> infinity limit.

SPEC_seeds S1.A. A classifier's last pre-activation a_L = z holds its logits (kd_ref's students and teachers
end in ``log_softmax`` or ``softmax``); at temperature t > 0 its class probabilities are

    q(z; t) = softmax(z / t),   log q(z; t) = z/t - lse(z/t)                                   (S1.1)

and since q(z + c 1; t) = q(z; t), q(log softmax(z); t) = q(z; t): a teacher is tempered from its
log-probabilities alone (:class:`TemperedTeacher`), and a student from a_L, so nothing here changes the
networks. Every loss below takes a_L from the student's forward cache and seeds backprop there
(``MLP.backprop(..., d_a=...)``), so one forward and one backprop give value and gradient, and one
R-forward and R-backprop give a Hessian-vector product (``hvp``).

Losses follow ``kd_ref.distill.compression``: ``loss(student, x, labels) -> (value, gradient)``, minimised,
averaged over the minibatch, with ``needs_derivatives`` and ``name``; they work with
``kd_ref.distill.objective``/``distill`` and ``WeightedLoss``. The teacher's side is tempered by the
teacher (:class:`TemperedTeacher`, :class:`TemperedEnsembleTeacher` return :class:`TemperedLabels` carrying their t),
the student's by the loss, and a loss at temperature t refuses labels made at another temperature.

Why t^2 (S1.5): d l_soft / dz = (q - p)/t, so the soft term's gradient shrinks like 1/t^2 as t grows
(q - p = O(1/t)); the weight t^2 in Hinton's objective (S1.3, :class:`HintonLoss`) keeps it O(1) and
comparable with the hard-label term. In the limit (S1.6, :func:`limit_errors`)

    t (q - p) = P(z - v)/C + O(1/t),   t^2 KL(p || q) = ||P(z - v)||^2 / (2C) + O(1/t),

P = I - 1 1^T / C the centring: the soft loss becomes centred logit matching (S1.7, :class:`LogitMatchingLoss`),
and plain logit matching 1/2 ||z - v||^2 only when both sides have zero-mean logits.
"""
from dataclasses import dataclass

import numpy as np

from .._validation import as_float_array, check_in_range, check_labels
from ..mlp import MLP
from ..nonlinearities import LogSoftmax, Softmax
from ..outputs import SoftmaxCrossEntropy
from .compression import (Labels, MLPTeacher, check_batch, check_classifier, check_teacher_labels, check_student,
                          check_teacher, class_seeds, mlp_log_prob_jacobian, mlp_log_probs, tile_cache,
                          log_mean_exp)

_LOG_SOFTMAX = LogSoftmax()


def check_temperature(t, name="t"):
    """A temperature: a finite real number > 0 (NaN and +-inf refused), returned as float."""
    return check_in_range(t, name, 0.0, np.inf, low_open=True, high_open=True)


# ------------------------------------------------------------ tempered softmax
def tempered_log_softmax(z, t):
    """log q(z; t) = z/t - lse(z/t) over each row (S1.1), shape (N, C).

    The log-sum-exp is max-shifted with its top term split off (``kd_ref.nonlinearities.softmax_parts``),
    so logit gaps of 1e4 at t = 0.05 give finite, correctly rounded log-probabilities. Entries of -inf
    (log-probabilities of exactly 0) stay -inf. By shift invariance z may be logits or log-probabilities.
    """
    z = as_float_array(z, "z", ndim=2, finite=False)
    t = check_temperature(t)
    if np.any(np.isnan(z)) or np.any(z == np.inf) or np.any(np.all(z == -np.inf, axis=1)):
        raise ValueError("z: expected logits or log-probabilities (finite or -inf, at least one finite per row), "
                         "received NaN, +inf or an all -inf row")
    return _LOG_SOFTMAX.forward(z / t)


def tempered_softmax(z, t):
    """q(z; t) = softmax(z/t) (S1.1), from :func:`tempered_log_softmax`; shape (N, C)."""
    return np.exp(tempered_log_softmax(z, t))


def centre(z):
    """P z = z - mean(z) per row (S1.6): the part of the logits a softmax can see; shape (N, C)."""
    return z - np.mean(z, axis=1, keepdims=True)


# ------------------------------------------------------------------ teachers
@dataclass
class TemperedLabels(Labels):
    """:class:`~kd_ref.distill.compression.Labels` at temperature t: probs = q(v; t), and the logits v.

    Attributes (besides those of Labels)
    ----------
    temperature : float
    logits : ndarray of shape (N, C) or None
        The teacher's raw logits (an ``MLPTeacher``'s a_L; the mean member logit of a geometric
        ensemble), which uncentred logit matching needs; None where a teacher has none.
    """

    temperature: float = 1.0
    logits: np.ndarray = None


def _temper(log_probs, d_log_probs, t):
    """Tempered log-probabilities and their input derivatives (S1.4), from the t = 1 ones.

    d log q_i/dx = (1/t)(d l_i/dx - sum_j q_j d l_j/dx): the mean term of d l_j = dz_j - sum_k p_k dz_k cancels,
    so log-probabilities serve as well as logits.
    """
    log_q = tempered_log_softmax(log_probs, t)
    if d_log_probs is None:
        return log_q, None
    q = np.exp(log_q)
    mean = np.einsum("nj,njd->nd", q, d_log_probs)
    return log_q, (d_log_probs - mean[:, None, :]) / t


class TemperedTeacher:
    """Any teacher tempered at t (S1.4): log q(l; t) from its log-probabilities l, and their input derivatives.

    Parameters
    ----------
    teacher : MLPTeacher, EnsembleTeacher or anything with ``label``, ``n_inputs``, ``n_outputs``
        An ``EnsembleTeacher`` tempered this way is the ``tempered_mean`` rule (the thesis's ensemble
        p-bar at t = 1, then tempered), not the ``mean`` rule of :class:`TemperedEnsembleTeacher`.
    t : float > 0

    Notes
    -----
    For an ``MLPTeacher`` the labels also carry its logits a_L (for uncentred logit matching, S1.7).
    The t^2 weight belongs to the loss (S1.3), never to the teacher.
    """

    def __init__(self, teacher, t):
        self.teacher = check_teacher(teacher)
        self.t = check_temperature(t)
        self.n_inputs, self.n_outputs = teacher.n_inputs, teacher.n_outputs

    def label(self, x, derivatives=False):
        """TemperedLabels for a minibatch x of shape (N, D); derivatives of shape (N, C, D) when asked."""
        logits = None
        if isinstance(self.teacher, MLPTeacher):
            net = self.teacher.net
            cache = net.forward(x)
            log_probs, logits = mlp_log_probs(net, cache)[1], cache.a[-1]
            d = mlp_log_prob_jacobian(net, cache) if derivatives else None
        else:
            labels = self.teacher.label(x, derivatives=derivatives)
            log_probs, d = labels.log_probs, labels.d_log_probs
        log_q, d_q = _temper(log_probs, d, self.t)
        return TemperedLabels(np.exp(log_q), log_q, d_q, self.t, logits)


ENSEMBLE_RULES = ("mean", "geometric", "tempered_mean")


class TemperedEnsembleTeacher:
    """Ensemble soft targets at temperature t by one of three rules (S1.4), members' logits v_m:

    * ``'mean'``: p = (1/M) sum_m q(v_m; t), each member tempered *before* averaging; at t = 1 it is the
      thesis's ensemble (2.15), bit for bit ``EnsembleTeacher(members, combine='mean')``;
    * ``'geometric'``: p = q((1/M) sum_m v_m; t), the normalised geometric mean of the tempered members
      (v_m may be log-probabilities, S1.1); its labels carry the mean member logit as ``logits``;
    * ``'tempered_mean'``: p = q(log p-bar; t) with p-bar the members' mean probability at t = 1.

    As t -> infinity all three reach logit matching (S1.6), ``mean`` and ``geometric`` with v = the mean
    member logit, ``tempered_mean`` with v = log p-bar. No input derivatives (use
    ``TemperedTeacher(EnsembleTeacher(members, 'log_mean_exp'), t)`` for tempered_mean with derivatives).

    Parameters
    ----------
    members : sequence of MLP (softmax or log_softmax outputs, equal sizes)
    t : float > 0
    combine : {'mean', 'geometric', 'tempered_mean'}
    """

    def __init__(self, members, t, combine="mean"):
        if isinstance(members, MLP) or not hasattr(members, "__len__"):
            raise TypeError(f"members: expected a sequence of MLP, received {type(members).__name__}")
        if len(members) == 0:
            raise ValueError("members: expected at least one network, received an empty sequence")
        if combine not in ENSEMBLE_RULES:
            raise ValueError(f"combine: expected one of {ENSEMBLE_RULES}, received {combine!r}")
        t = check_temperature(t)
        for k, m in enumerate(members):
            check_classifier(m, f"members[{k}]")
            if (m.sizes[0], m.sizes[-1]) != (members[0].sizes[0], members[0].sizes[-1]):
                raise ValueError(f"members[{k}]: expected {members[0].sizes[0]} inputs and {members[0].sizes[-1]} "
                                 f"outputs like members[0], received {m.sizes[0]} inputs and {m.sizes[-1]} outputs")
        self.members, self.t, self.combine = list(members), t, combine
        self.n_inputs, self.n_outputs = members[0].sizes[0], members[0].sizes[-1]

    def label(self, x, derivatives=False):
        """TemperedLabels for a minibatch x of shape (N, D)."""
        if derivatives:
            raise ValueError("derivatives: expected False (a tempered ensemble gives no input derivatives; wrap "
                             "EnsembleTeacher(members, combine='log_mean_exp') in TemperedTeacher), received True")
        caches = [m.forward(x) for m in self.members]
        logits = None
        if self.combine == "mean":
            probs = 0.0
            for m, cache in zip(self.members, caches):
                p_m = mlp_log_probs(m, cache)[0] if self.t == 1.0 else tempered_softmax(cache.a[-1], self.t)
                probs = probs + p_m
            probs = probs / len(self.members)
            with np.errstate(divide="ignore"):
                return TemperedLabels(probs, np.log(probs), None, self.t)
        if self.combine == "geometric":
            logits = np.mean([cache.a[-1] for cache in caches], axis=0)
            log_q = tempered_log_softmax(logits, self.t)
        else:
            log_bar = log_mean_exp(np.stack([mlp_log_probs(m, c)[1] for m, c in zip(self.members, caches)]))
            log_q = tempered_log_softmax(log_bar, self.t)
        return TemperedLabels(np.exp(log_q), log_q, None, self.t, logits)


# -------------------------------------------------------------------- losses
def _labels_temperature(labels):
    return float(getattr(labels, "temperature", 1.0))


def _check_temperature_of(labels, t, what):
    got = _labels_temperature(labels)
    if got != t:
        raise ValueError(f"labels: expected {what} at temperature {t:g} (label with TemperedTeacher(teacher, {t:g})), "
                         f"received labels at temperature {got:g}")


class _LogitLoss:
    """Shared driver: a loss l(a_L) of the student's logits, with value/gradient and Hessian-vector product.

    Subclasses give ``_seed(a_L, labels) -> (sum over rows of l, dl/da_L)`` and
    ``_r_seed(a_L, labels, R_a_L) -> R{dl/da_L}`` (both un-normalised; the mean over N is taken here).
    """

    needs_derivatives = False

    def _prepare(self, student, x, labels):
        cache = student.forward(x)
        check_teacher_labels(labels, *cache.y.shape)
        self._check(labels)
        return cache

    def _check(self, labels):
        pass

    def __call__(self, student, x, labels):
        """Loss and theta-gradient.

        Parameters
        ----------
        student : MLP (last nonlinearity softmax or log_softmax)
        x : ndarray of shape (N, D)
        labels : Labels (TemperedLabels at the loss's temperature for the tempered losses)

        Returns
        -------
        value : float
        grad : ndarray of shape (student.n_params,)
        """
        cache = self._prepare(student, x, labels)
        n = cache.y.shape[0]
        value, d_a = self._seed(cache.a[-1], labels)
        d_params, _ = student.backprop(cache, input_grads=False, d_a=d_a)
        return value / n, d_params / n

    def hvp(self, student, x, labels, v):
        """H v, the theta-Hessian of the loss (fixed labels) along v of shape (n_params,), by R{backprop}."""
        cache = self._prepare(student, x, labels)
        n = cache.y.shape[0]
        rcache = student.r_forward(cache, v_params=v)
        a_L = cache.a[-1]
        Hv, _ = student.r_backprop(cache, rcache, input_grads=False, d_a=self._seed(a_L, labels)[1],
                                   R_d_a=self._r_seed(a_L, labels, rcache.R_a[-1]))
        return Hv / n


def _soft_parts(a_L, p, t):
    """Soft cross entropy -sum p log q(a_L; t) summed over rows and its a_L-derivative (q - p) T_n / t (S1.2, S1.5).

    Through the fused exact form of ``kd_ref.outputs.SoftmaxCrossEntropy`` on a = a_L/t (T_n = sum_i p_ni = 1),
    value and derivative from one max-shifted softmax of a (``value_and_grad``).
    """
    value, grad = SoftmaxCrossEntropy(p).value_and_grad(a_L / t)
    return -value, -grad / t


class SoftCrossEntropyLoss(_LogitLoss):
    """Soft-target cross entropy at temperature t (S1.2): l = -sum_i p_i log q_i(z; t), p the teacher at t.

    Gradient at the logits (S1.5): dl/dz = (q - p)/t; Hessian (diag q - q q^T)/t^2. With ``kl=True`` the
    value is KL(p || q) = l - H(p) (same gradient; it tends to 0 like 1/t^2, the form the limit tests use).
    The t^2 weight of Hinton's objective is not included (:class:`HintonLoss`, ``WeightedLoss``).

    Parameters
    ----------
    t : float > 0
        Must equal the temperature of the labels (:class:`TemperedTeacher`); plain Labels count as t = 1.
    kl : bool
    """

    def __init__(self, t=1.0, kl=False):
        self.t = check_temperature(t)
        if not isinstance(kl, (bool, np.bool_)):
            raise TypeError(f"kl: expected True or False, received {kl!r}")
        self.kl = bool(kl)
        self.name = f"soft {'KL' if self.kl else 'cross entropy'} at t={self.t:g}"

    def _check(self, labels):
        _check_temperature_of(labels, self.t, "soft targets")

    def _seed(self, a_L, labels):
        value, d_a = _soft_parts(a_L, labels.probs, self.t)
        if self.kl:   # + sum p log p, with 0 log 0 = 0
            p, lp = labels.probs, labels.log_probs
            value += float(np.sum(np.multiply(p, lp, out=np.zeros_like(p), where=p > 0)))
        return value, d_a

    def _r_seed(self, a_L, labels, R_a):
        out = SoftmaxCrossEntropy(labels.probs)
        return -out.r_grad(a_L / self.t, R_a / self.t) / self.t


def one_hot(labels, n_classes):
    """Integer labels (N,) in 0..n_classes-1 as one-hot rows (N, n_classes)."""
    labels = check_labels(labels, "labels", n_classes)
    out = np.zeros((labels.size, n_classes))
    out[np.arange(labels.size), labels] = 1.0
    return out


@dataclass
class KDTargets:
    """What Hinton's objective compares the student with: the teacher's soft targets and the true labels.

    Attributes
    ----------
    soft : Labels
        The teacher at the loss's temperature (TemperedLabels).
    hard : ndarray of shape (N, C)
        One-hot true labels (``one_hot``).
    """

    soft: Labels
    hard: np.ndarray


# (w_soft, w_hard) of the conventions a user meets (S1.3); alpha is the source's mixing weight
HINTON_CONVENTIONS = {
    "hinton": "w_soft = 1, w_hard = alpha (Wikipedia/Hinton: soft + hard; Hinton: a considerably lower hard weight)",
    "torchdistill": "w_soft = 1 - alpha, w_hard = alpha (KDLoss; its soft term is KL, same gradient)",
    "pytorch_tutorial": "w_soft = alpha, w_hard = 1 - alpha (tutorial: alpha = 0.25 soft, 0.75 hard, t = 2)",
    "keras": "w_soft = 1 - alpha, w_hard = alpha (Distiller example: alpha = 0.1, t = 10; KL x t^2)",
}


def hinton_weights(alpha, form):
    """(w_soft, w_hard) of Hinton's objective for a source's mixing weight alpha in [0, 1] (S1.3 table).

    ``form`` is one of ``HINTON_CONVENTIONS``; all of them apply t^2 to the soft term, as kd_ref does.
    """
    alpha = check_in_range(alpha, "alpha", 0.0, 1.0)
    if form not in HINTON_CONVENTIONS:
        raise ValueError(f"form: expected one of {sorted(HINTON_CONVENTIONS)}, received {form!r}")
    return {"hinton": (1.0, alpha), "torchdistill": (1.0 - alpha, alpha), "pytorch_tutorial": (alpha, 1.0 - alpha),
            "keras": (1.0 - alpha, alpha)}[form]


class HintonLoss(_LogitLoss):
    """Hinton's objective (S1.3): l = w_soft t^2 l_soft(x; t) + w_hard (-log q_y(x; 1)).

    The hard term is the *student's* cross entropy with the true label at t = 1. Both terms are
    functions of the student's logits, so one backprop is seeded with their summed a_L-derivative
    w_soft t (q(t) - p) + w_hard (q(1) - y) (S1.5); ``WeightedLoss`` over the two terms is the
    plain reference twin (:meth:`terms`). Called with :class:`KDTargets`.

    Parameters
    ----------
    t : float > 0
    w_soft, w_hard : float >= 0
    """

    def __init__(self, t, w_soft=1.0, w_hard=1.0):
        self.t = check_temperature(t)
        self.w_soft = check_in_range(w_soft, "w_soft", 0.0, np.inf, high_open=True)
        self.w_hard = check_in_range(w_hard, "w_hard", 0.0, np.inf, high_open=True)
        self.name = f"{self.w_soft:g} t^2 soft (t={self.t:g}) + {self.w_hard:g} hard"

    def _prepare(self, student, x, targets):
        if not isinstance(targets, KDTargets):
            raise TypeError(f"targets: expected KDTargets(soft=teacher labels, hard=one-hot labels), received "
                            f"{type(targets).__name__}")
        cache = student.forward(x)
        n, c = cache.y.shape
        check_teacher_labels(targets.soft, n, c)
        _check_temperature_of(targets.soft, self.t, "soft targets")
        hard = as_float_array(targets.hard, "targets.hard", shape=(n, c))
        sums = hard.sum(axis=1)
        if hard.min() < 0 or np.max(np.abs(sums - 1.0)) > 1e-12:
            raise ValueError("targets.hard: expected one-hot (or probability) rows: entries >= 0 summing to 1, "
                             f"received entries down to {hard.min():.3g} and row sums in [{sums.min():.6g}, "
                             f"{sums.max():.6g}]")
        return cache

    def _seed(self, a_L, targets):
        w = self.w_soft * self.t**2
        if self.t == 1.0:   # one temperature: the cross entropy is linear in its targets, one softmax serves both
            return _soft_parts(a_L, w * targets.soft.probs + self.w_hard * targets.hard, 1.0)
        soft_value, soft_d = _soft_parts(a_L, targets.soft.probs, self.t)     # softmax(a_L / t)
        hard_value, hard_d = _soft_parts(a_L, targets.hard, 1.0)              # softmax(a_L)
        return w * soft_value + self.w_hard * hard_value, w * soft_d + self.w_hard * hard_d

    def _r_seed(self, a_L, targets, R_a):
        soft = SoftmaxCrossEntropy(targets.soft.probs).r_grad(a_L / self.t, R_a / self.t)
        hard = SoftmaxCrossEntropy(targets.hard).r_grad(a_L, R_a)
        return -(self.w_soft * self.t * soft + self.w_hard * hard)

    def terms(self):
        """The two terms as plain losses with their weights, for ``WeightedLoss``-style reference evaluation:
        [(w_soft t^2, SoftCrossEntropyLoss(t)) on targets.soft, (w_hard, SoftCrossEntropyLoss(1)) on targets.hard]."""
        return [(self.w_soft * self.t**2, SoftCrossEntropyLoss(self.t)), (self.w_hard, SoftCrossEntropyLoss(1.0))]


def hinton_objective(student, teacher, loss):
    """Minibatch objective (x, true labels) -> (value, theta-gradient) for ``kd_ref.optim.train`` (S1.3).

    The teacher is tempered at ``loss.t`` (:class:`TemperedTeacher`, unless it already is a tempered
    teacher at that t) and labels each minibatch when it arrives; the true labels come with the batch,
    as one-hot rows (``DatasetGenerator(..., targets=...)``) or integer labels.

    Parameters
    ----------
    student : MLP
    teacher : MLPTeacher, EnsembleTeacher, TemperedTeacher, TemperedEnsembleTeacher or similar
    loss : HintonLoss or HintonDSELoss
        For a HintonDSELoss the teacher labels each minibatch with its tempered input derivatives, so it must
        give them (an ``MLPTeacher``, an ``EnsembleTeacher``, a ``TemperedTeacher`` around one of them).
    """
    check_student(student)
    if not isinstance(loss, (HintonLoss, HintonDSELoss)):
        raise TypeError(f"loss: expected a HintonLoss or HintonDSELoss, received {type(loss).__name__}")
    check_teacher(teacher)
    if (teacher.n_inputs, teacher.n_outputs) != (student.sizes[0], student.sizes[-1]):
        raise ValueError(f"teacher: expected {student.sizes[0]} inputs and {student.sizes[-1]} outputs like the "
                         f"student, received {teacher.n_inputs} inputs and {teacher.n_outputs} outputs")
    if not isinstance(teacher, (TemperedTeacher, TemperedEnsembleTeacher)):
        teacher = TemperedTeacher(teacher, loss.t)
    elif teacher.t != loss.t:
        raise ValueError(f"teacher: expected a teacher at the loss's temperature {loss.t:g} (or an untempered one), "
                         f"received a tempered teacher at t = {teacher.t:g}")
    derivatives = loss.needs_derivatives
    if derivatives and isinstance(teacher, TemperedEnsembleTeacher):
        raise ValueError("teacher: expected a teacher with input derivatives for the DSE term (e.g. TemperedTeacher("
                         "EnsembleTeacher(members, combine='log_mean_exp'), t)), received a TemperedEnsembleTeacher")
    c = student.sizes[-1]

    def objective(batch):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise ValueError(f"batch: expected an (x, labels) pair (DatasetGenerator(..., targets=...)), received "
                             f"{type(batch).__name__}")
        x, y = batch
        x = check_batch(x, student.sizes[0])
        y = np.asarray(y)
        hard = one_hot(y, c) if y.ndim == 1 else as_float_array(y, "targets", shape=(x.shape[0], c))
        return loss(student, x, KDTargets(teacher.label(x, derivatives=derivatives), hard))

    return objective


class LogitMatchingLoss(_LogitLoss):
    """Logit matching (S1.7; Bucila et al. 2006, Ba & Caruana 2014): l = 1/2 ||z - v||^2, or centred 1/2 ||P(z - v)||^2.

    z = a_L are the student's logits, v the teacher's. The centred form is what a softmax sees (logits
    are defined up to a constant per row) and is computed from the teacher's log-probabilities at t = 1
    (P log p = P v); it is the t -> infinity limit of t^2 KL up to the factor 1/C (S1.6). The uncentred
    form needs raw teacher logits (``TemperedLabels.logits``: ``TemperedTeacher(MLPTeacher(net), 1)``)
    and also pins their mean. Gradient at the logits P(z - v) (or z - v); Hessian P (or I).

    Parameters
    ----------
    centred : bool
    """

    def __init__(self, centred=True):
        if not isinstance(centred, (bool, np.bool_)):
            raise TypeError(f"centred: expected True or False, received {centred!r}")
        self.centred = bool(centred)
        self.name = "centred logit matching" if self.centred else "logit matching"

    def _teacher_logits(self, labels):
        logits = getattr(labels, "logits", None)
        if logits is not None:
            return logits
        if not self.centred:
            raise ValueError("labels: expected teacher logits for uncentred logit matching (label with "
                             "TemperedTeacher(MLPTeacher(net), 1)), received labels without logits")
        if not np.all(np.isfinite(labels.log_probs)):
            raise ValueError("labels: expected finite teacher log-probabilities for centred logit matching, "
                             "received -inf entries (probabilities of exactly 0)")
        return labels.log_probs

    def _check(self, labels):
        if getattr(labels, "logits", None) is None:
            _check_temperature_of(labels, 1.0, "teacher log-probabilities")
        self._teacher_logits(labels)

    def _seed(self, a_L, labels):
        diff = a_L - self._teacher_logits(labels)
        if self.centred:
            diff = centre(diff)
        return 0.5 * float(np.sum(diff**2)), diff

    def _r_seed(self, a_L, labels, R_a):
        return centre(R_a) if self.centred else R_a


class TemperedDerivativeSquareErrorLoss:
    """Derivative square error at temperature t (S1.9): l = sum_i ||d log q_i/dx - d log p_i/dx||^2, q, p at t.

    The thesis's derivative matching (2.18) with ``compression.DerivativeSquareErrorLoss``'s stacked
    algorithm (2.9-2.13), tempered at the logits: d log q_i/dx is the input backprop of the seed
    d log q_i/da_L = (e_i - q)/t, and its R-form along (0, d_i) is R{(e_i - q)/t} = -(diag q - q q^T) R_a/t^2.
    At t = 1 it is ``DerivativeSquareErrorLoss``. As t -> infinity, t^2 l -> ||P(J_z - J_v)||_F^2
    (centred logit Jacobians) with an O(1/t^2) error (S1.9). The teacher's derivatives come from
    ``TemperedTeacher(teacher, t).label(x, derivatives=True)``.

    Parameters
    ----------
    t : float > 0
    """

    needs_derivatives = True

    def __init__(self, t=1.0):
        self.t = check_temperature(t)
        self.name = f"derivative square error at t={self.t:g}"

    def __call__(self, student, x, labels):
        """Loss and theta-gradient; arguments as :class:`SoftCrossEntropyLoss` (``labels.d_log_probs`` required)."""
        cache = student.forward(x)
        n, c = cache.y.shape
        check_teacher_labels(labels, n, c, True, cache.x[0].shape[1])
        _check_temperature_of(labels, self.t, "teacher derivatives")
        t = self.t
        tcache = tile_cache(cache, c)
        a = tcache.a[-1]
        q = np.exp(_LOG_SOFTMAX.forward(a / t))
        seed = (class_seeds(n, c) - q) / t                                         # d log q_i / da_L, all i
        _, g = student.backprop(tcache, param_grads=False, d_a=seed)                # g_i = d log q_i / dx
        diff = g - labels.d_log_probs.transpose(1, 0, 2).reshape(c * n, -1)
        R = student.r_forward(tcache, v_x=2.0 * diff)                               # v = (0, d_i)
        R_seed = -Softmax._jvp(q, R.R_a[-1]) / t**2
        grad, _ = student.r_backprop(tcache, R, input_grads=False, d_a=seed, R_d_a=R_seed)
        return float(np.sum(diff**2)) / n, grad / n


class HintonDSELoss:
    """The full weighted objective (S1.3 + S1.9): l = w_soft t^2 l_soft(t) + w_hard l_hard + w_dse t^2 l_dse(t).

    Hinton's soft + hard objective (:class:`HintonLoss`) plus the thesis's derivative matching at the same
    temperature (:class:`TemperedDerivativeSquareErrorLoss`), ``WeightedLoss([(w_soft t^2, CE@t),
    (w_hard, CE-hard@1), (w_dse t^2, DSE@t)])`` of SPEC_seeds S1.9 with each term on its own targets: the
    first two on :class:`KDTargets`, the third on ``targets.soft``, which must carry the tempered teacher's
    input derivatives (``TemperedTeacher(teacher, t).label(x, derivatives=True)``; :func:`hinton_objective`
    asks for them). The t^2 on the DSE term keeps it O(1) as t grows, like the soft term's (S1.9: t^2 l_dse
    tends to centred logit-Jacobian matching). Value and gradient are the sums of the two losses'.

    Parameters
    ----------
    t : float > 0
    w_soft, w_hard, w_dse : float >= 0
    """

    needs_derivatives = True

    def __init__(self, t, w_soft=1.0, w_hard=1.0, w_dse=1.0):
        self.hinton = HintonLoss(t, w_soft, w_hard)
        self.dse = TemperedDerivativeSquareErrorLoss(t)
        self.w_dse = check_in_range(w_dse, "w_dse", 0.0, np.inf, high_open=True)
        self.t = self.hinton.t
        self.name = f"{self.hinton.name} + {self.w_dse:g} t^2 DSE"

    def __call__(self, student, x, targets):
        """Loss and theta-gradient for :class:`KDTargets` whose ``soft`` labels have ``d_log_probs``."""
        if isinstance(targets, KDTargets) and getattr(targets.soft, "d_log_probs", None) is None:
            raise ValueError("targets.soft: expected teacher input derivatives for the DSE term (label with "
                             "TemperedTeacher(teacher, t).label(x, derivatives=True)), received None")
        value, grad = self.hinton(student, x, targets)
        dse_value, dse_grad = self.dse(student, x, targets.soft)
        w = self.w_dse * self.t**2
        return value + w * dse_value, grad + w * dse_grad

    def terms(self):
        """The three terms as plain losses with their weights (reference twin): :meth:`HintonLoss.terms` on
        targets.soft and targets.hard, then (w_dse t^2, TemperedDerivativeSquareErrorLoss(t)) on targets.soft."""
        return [*self.hinton.terms(), (self.w_dse * self.t**2, TemperedDerivativeSquareErrorLoss(self.t))]


# --------------------------------------------------------------- the t -> infinity limit
@dataclass
class LimitErrors:
    """Distances from the high-temperature limits (S1.6) at one t, for logits z (student) and v (teacher).

    Attributes
    ----------
    t : float
    value : float
        |t^2 KL(p || q) - ||P(z - v)||^2 / (2C)| summed over rows (O(1/t)).
    grad : float
        max |t (q - p) - P(z - v)/C| (O(1/t)).
    control : float
        |t^2 KL - ||z - v||^2 / (2C)|, the uncentred form: tends to a non-zero constant when the
        logit means differ (it must not converge).
    """

    t: float
    value: float
    grad: float
    control: float


def limit_errors(z, v, t):
    """How far temperature distillation at t is from (centred) logit matching (S1.6); returns LimitErrors.

    Parameters
    ----------
    z, v : ndarray of shape (N, C)
        Student and teacher logits.
    t : float > 0
    """
    z = as_float_array(z, "z", ndim=2)
    v = as_float_array(v, "v", shape=z.shape)
    t = check_temperature(t)
    c = z.shape[1]
    labels = TemperedLabels(tempered_softmax(v, t), tempered_log_softmax(v, t), None, t)
    kl, d_a = SoftCrossEntropyLoss(t, kl=True)._seed(z, labels)
    centred = 0.5 * float(np.sum(centre(z - v) ** 2)) / c
    plain = 0.5 * float(np.sum((z - v) ** 2)) / c
    return LimitErrors(t, abs(t**2 * kl - centred), float(np.max(np.abs(t**2 * d_a - centre(z - v) / c))),
                       abs(t**2 * kl - plain))


def fitted_slope(ts, errors):
    """Least-squares slope of log(error) against log(t): -1 for an O(1/t) approach, -2 for O(1/t^2)."""
    ts, errors = np.asarray(ts, float), np.asarray(errors, float)
    return float(np.polyfit(np.log(ts), np.log(errors), 1)[0])
