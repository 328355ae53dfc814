"""Model compression (Chapter 2): train a small student network to mimic a large teacher.

The framework of section 2.1 has four parts, each a small object here:

* a **teacher** f(x) that, for a minibatch, returns class probabilities and, when
  asked, the input derivatives of its log-probabilities, d log f_i(x) / dx for
  every class i (:class:`MLPTeacher`, :class:`EnsembleTeacher`, or anything with
  the same ``label`` method);
* a **student** f(x; theta), a :class:`kd_ref.mlp.MLP` whose last layer is
  ``log_softmax`` or ``softmax``; either way its log-probabilities and their
  derivatives are taken from the last pre-activation a_L (the fused forms of
  ``kd_ref.outputs``), so they stay exact however confident the network gets;
* a **loss** l(x, theta) comparing the two at x (:class:`CrossEntropyLoss`,
  :class:`SquareErrorLoss`, :class:`DerivativeSquareErrorLoss`, :class:`WeightedLoss`);
* a **data generator** p(x) drawing minibatches of inputs (:class:`DatasetGenerator`,
  :class:`NADEGenerator`, :class:`NoiseGenerator`).

Training minimises the average loss E_p(x)[l(x, theta)] (2.3) by stochastic
gradient steps on minibatches (2.6-2.7), with the loop of :mod:`kd_ref.distill`
(which states the loss protocol): the generator draws a minibatch x, the teacher
labels it on the fly (:func:`teacher_targets`), and the loss returns its value
and theta-gradient, so that ``distill(student, loss, generator,
teacher_targets(student, teacher, loss), optimizer, n_steps)`` runs the whole
procedure while holding only one minibatch in memory. The losses are listed in
:data:`LOSSES`.

Cross entropy is the negative of the log-likelihood-style output function
``kd_ref.outputs.CrossEntropy``, since losses are minimised.

Why derivative matching costs about 2C backprops (2.9-2.13)
-----------------------------------------------------------
Write g_i(x; theta) = d log y_i / dx for the student's class i. The derivative
square error is l = sum_i ||g_i - G_i||^2 with G_i the teacher's. Its theta-gradient
is sum_i (d g_i / d theta)^T d_i with d_i = 2 (g_i - G_i). Since g_i is the input
gradient of E_i = log y_i, the product (d g_i / d theta)^T d_i is the parameter
part of the joint (theta, x) Hessian of E_i applied to the direction v = (0, d_i),
which R{backprop} gives in the reduced form (B.19-B.21) without ever forming a
Hessian. Per class this is one backprop (to get g_i, hence d_i) and one reduced
R{backprop}; for C classes, about 2C backprops, against one for cross entropy.
"""
from dataclasses import dataclass

import numpy as np

from .._validation import as_float_array, check_generator, check_in_range, check_labels, check_positive_int
from ..mlp import MLP, Cache
from ..nade import NADE
from ..nonlinearities import LogSoftmax
from ..metrics import Score, mean_2se, paired_difference, score  # noqa: F401 (the scoring helpers live in metrics)
from ..optim import MinibatchDrawer, check_state_keys, generator_state, load_generator_state, state_count
from ..outputs import CrossEntropy, DotProduct

PROBABILITY_OUTPUTS = ("softmax", "log_softmax")
NORMALISATION_TOL = 1e-6


# ----------------------------------------------------------------------- labels
@dataclass
class Labels:
    """What a teacher returns for a minibatch of N inputs with D features and C classes.

    Attributes
    ----------
    probs : ndarray of shape (N, C)
        Class probabilities (rows sum to 1).
    log_probs : ndarray of shape (N, C)
        Their logarithms (may hold -inf where a probability is exactly 0, e.g. one-hot labels).
    d_log_probs : ndarray of shape (N, C, D) or None
        d log probs[n, i] / d x[n] for every example and class; None when not requested.
    """

    probs: np.ndarray
    log_probs: np.ndarray
    d_log_probs: np.ndarray = None

    @classmethod
    def from_probs(cls, probs):
        """Labels holding given probabilities only (e.g. one-hot true labels for a baseline)."""
        probs = as_float_array(probs, "probs", ndim=2)
        with np.errstate(divide="ignore"):
            return cls(probs, np.log(probs))


def log_mean_exp(log_probs):
    """Log of the mean probability of an ensemble, from its members' log-probabilities (2.15).

    log p(x)_i = log (1/M) sum_m exp(log p_m(x)_i), computed with the max-shift of
    ``np.logaddexp.reduce`` so that no member's probability has to be formed.

    Parameters
    ----------
    log_probs : ndarray of shape (M, N, C)
        Log-probabilities of M members for N inputs and C classes; each row
        ``log_probs[m, n]`` must be normalised (logsumexp 0 within 1e-6).

    Returns
    -------
    ndarray of shape (N, C)

    Raises
    ------
    ValueError
        When the rows are not normalised log-probabilities. In particular
        *probabilities* passed by mistake are refused, also for an ensemble of one
        (M = 1), where the mean would otherwise return them unchanged and the
        mistake would go unnoticed: for C >= 1 classes, sum_i exp(p_i) > 1 for any
        probability vector p, so their logsumexp is never 0.
    """
    log_probs = as_float_array(log_probs, "log_probs", ndim=3, finite=False)
    _check_log_normalised(log_probs, "log_probs")
    return np.logaddexp.reduce(log_probs, axis=0) - np.log(log_probs.shape[0])


def _check_log_normalised(log_probs, name):
    if np.any(np.isnan(log_probs)) or np.any(log_probs == np.inf):
        raise ValueError(f"{name}: expected log-probabilities (finite or -inf), received NaN or +inf entries")
    lse = np.logaddexp.reduce(log_probs, axis=-1)
    worst = float(np.max(np.abs(lse))) if lse.size else 0.0
    if worst > NORMALISATION_TOL:
        looks_like_probs = bool(np.all((log_probs >= 0) & (log_probs <= 1))
                                and np.allclose(log_probs.sum(axis=-1), 1.0, atol=1e-6))
        hint = (" - these look like probabilities (entries in [0, 1], rows summing to 1); pass their logs,"
                " or combine probabilities with the 'mean' rule" if looks_like_probs else "")
        raise ValueError(f"{name}: expected log-probabilities whose exponentials sum to 1 in every row "
                         f"(logsumexp 0 within {NORMALISATION_TOL:g}), received rows with |logsumexp| up to "
                         f"{worst:.3g}{hint}")


# --------------------------------------------------------------------- teachers
def check_classifier(net, name):
    if not isinstance(net, MLP):
        raise TypeError(f"{name}: expected a kd_ref.mlp.MLP, received {type(net).__name__}")
    last = net.nonlinearities[-1]
    if last not in PROBABILITY_OUTPUTS:
        raise ValueError(f"{name}: expected a network whose last nonlinearity is one of {PROBABILITY_OUTPUTS} "
                         f"(its outputs must be class probabilities or log-probabilities), received {last!r}")
    return net


def tile_cache(cache, copies):
    """The forward cache of ``copies`` stacked copies of the minibatch (rows block k = copy k).

    Backprop through the stacked cache handles all C classes in one pass of larger
    matrix products (BLAS over C N rows) instead of C passes over N rows.
    """
    return Cache([np.tile(v, (copies, 1)) for v in cache.x], [np.tile(a, (copies, 1)) for a in cache.a])


def class_seeds(n, c):
    """Stacked one-hot seeds: rows block i (N rows each) are e_i; shape (C N, C)."""
    return np.repeat(np.eye(c), n, axis=0)


def mlp_log_probs(net, cache):
    """Probabilities and log-probabilities from a classifier's forward cache, shapes (N, C).

    A softmax output's logs are the log-softmax of a_L (B.37-B.39), not log y of a y
    rounded to 0 or 1.
    """
    if net.nonlinearities[-1] == "log_softmax":
        return np.exp(cache.y), cache.y
    return cache.y, LogSoftmax().forward(cache.a[-1])


def mlp_log_prob_jacobian(net, cache):
    """d log y_i / dx for every class i, shape (N, C, D): one input-only backprop per class.

    The C backprops run as one pass over the class-stacked cache (:func:`tile_cache`).
    Each is seeded at a_L with d log p_i / da_L = e_i - p from the fused form of
    E_i = log p_i (:func:`_log_prob_output`), for softmax and log-softmax outputs
    alike, so the top class keeps 1 - p_m where p_m rounds to 1. The parameter
    gradients (B.9) are skipped, so each backprop costs about one forward pass.
    """
    n, c = cache.y.shape
    tcache = tile_cache(cache, c)
    out = _log_prob_output(net, class_seeds(n, c))
    _, d_x = net.backprop(tcache, param_grads=False, d_a=out.grad(tcache.a[-1]))
    return d_x.reshape(c, n, -1).transpose(1, 0, 2)


class MLPTeacher:
    """A single trained network as teacher: its probabilities for (2.5, 2.17) and the
    input derivatives of its log-probabilities for (2.18).

    Parameters
    ----------
    net : MLP
        Last nonlinearity ``log_softmax`` (preferred) or ``softmax``.

    Notes
    -----
    Input derivatives are the rows of the log-probability Jacobian, the same
    numbers as ``net.jacobian(x, log=...)`` (``log=True`` for softmax outputs),
    but computed from one shared forward pass.
    """

    def __init__(self, net):
        self.net = check_classifier(net, "net")
        self.n_inputs, self.n_outputs = net.sizes[0], net.sizes[-1]

    def label(self, x, derivatives=False):
        """Probabilities, log-probabilities and (optionally) their input derivatives.

        The derivatives are the teacher's terms d log t_i(x) / dx of (2.18): for each
        class i, a backprop of E_i = log y_i that keeps only the input-side recursion
        (B.8, B.10) and skips the parameter products (B.9).

        Parameters
        ----------
        x : ndarray of shape (N, D)
        derivatives : bool

        Returns
        -------
        Labels
        """
        cache = self.net.forward(x)
        probs, log_probs = mlp_log_probs(self.net, cache)
        d = mlp_log_prob_jacobian(self.net, cache) if derivatives else None
        return Labels(probs, log_probs, d)


COMBINE_RULES = ("mean", "log_mean_exp")


class EnsembleTeacher:
    """An ensemble of networks whose prediction is the mean of the members' probabilities (2.15).

    Parameters
    ----------
    members : sequence of MLP
        Same input and output sizes; last nonlinearity softmax or log_softmax.
    combine : {'mean', 'log_mean_exp'}
        How the average is computed.

        ``'mean'``: average the members' probabilities, p = (1/M) sum_m p_m. This is
        what cross entropy (2.16-2.17) needs; log-probabilities are logs of that
        mean. This rule gives no input derivatives.

        ``'log_mean_exp'``: the same average computed in the log domain,
        log p = logmeanexp_m(log p_m), which stays finite when single probabilities
        underflow; it is the form derivative matching (2.18) needs. Its input
        derivatives follow from the chain rule:

            d log p_i / dx = sum_m p_m,i (d log p_m,i / dx) / sum_m' p_m',i
                           = sum_m w_m,i  d log p_m,i / dx,

        with weights w_m,i = softmax over members of log p_m,i: each member's
        derivative counts in proportion to the probability it gives class i.
        This rule needs members whose outputs *are* log-probabilities
        (``log_softmax``): a log-mean-exp over softmax outputs would average
        exp(probability), and, for a single member, would silently treat its
        probabilities as log-probabilities. Building such an ensemble raises
        ValueError, whatever the number of members.
    """

    def __init__(self, members, combine="mean"):
        if isinstance(members, MLP) or not hasattr(members, "__len__"):
            raise TypeError(f"members: expected a sequence of MLP, received {type(members).__name__}")
        if len(members) == 0:
            raise ValueError("members: expected at least one network, received an empty sequence")
        if combine not in COMBINE_RULES:
            raise ValueError(f"combine: expected one of {COMBINE_RULES}, received {combine!r}")
        for k, m in enumerate(members):
            check_classifier(m, f"members[{k}]")
            if (m.sizes[0], m.sizes[-1]) != (members[0].sizes[0], members[0].sizes[-1]):
                raise ValueError(f"members[{k}]: expected {members[0].sizes[0]} inputs and {members[0].sizes[-1]} "
                                 f"outputs like members[0], received {m.sizes[0]} inputs and {m.sizes[-1]} outputs")
            if combine == "log_mean_exp" and m.nonlinearities[-1] != "log_softmax":
                raise ValueError(f"members[{k}]: combine='log_mean_exp' expected a network whose outputs are "
                                 f"log-probabilities (last nonlinearity 'log_softmax'), received one whose outputs are "
                                 f"probabilities ('{m.nonlinearities[-1]}'); use combine='mean' for probabilities")
        self.members = list(members)
        self.combine = combine
        self.n_inputs, self.n_outputs = members[0].sizes[0], members[0].sizes[-1]

    def label(self, x, derivatives=False):
        """Ensemble probabilities, log-probabilities and (log_mean_exp only) their input derivatives.

        Members are evaluated one after another, so memory holds one member's
        activations and the members' (N, C) outputs (or, for derivatives, the running sums).

        Parameters
        ----------
        x : ndarray of shape (N, D)
        derivatives : bool

        Returns
        -------
        Labels
        """
        if derivatives and self.combine != "log_mean_exp":
            raise ValueError("derivatives: expected combine='log_mean_exp' for input derivatives (derivative "
                             f"matching works on log-probabilities), received an ensemble with combine={self.combine!r}")
        if self.combine == "mean":
            probs = 0.0
            for m in self.members:
                probs = probs + mlp_log_probs(m, m.forward(x))[0]
            probs = probs / len(self.members)
            with np.errstate(divide="ignore"):
                return Labels(probs, np.log(probs))
        if not derivatives:
            log_probs = log_mean_exp(np.stack([m.forward(x).y for m in self.members]))
            return Labels(np.exp(log_probs), log_probs)
        # running log-sum-exp over members, with the derivative sum rescaled as the maximum moves
        lse, acc = None, None
        for m in self.members:
            cache = m.forward(x)
            log_p, g = cache.y, mlp_log_prob_jacobian(m, cache)
            if lse is None:
                lse, acc = log_p.copy(), g
                continue
            new = np.logaddexp(lse, log_p)
            acc = acc * np.exp(lse - new)[..., None] + np.exp(log_p - new)[..., None] * g
            lse = new
        log_probs = lse - np.log(len(self.members))
        return Labels(np.exp(log_probs), log_probs, acc)


def check_teacher(teacher):
    for attr in ("label", "n_inputs", "n_outputs"):
        if not hasattr(teacher, attr):
            raise TypeError(f"teacher: expected an object with label(x, derivatives), n_inputs and n_outputs "
                            f"(e.g. MLPTeacher, EnsembleTeacher), received {type(teacher).__name__} without {attr!r}")
    return teacher


# ----------------------------------------------------------------------- losses
def check_student(student):
    return check_classifier(student, "student")


def _log_prob_output(student, targets):
    """E = sum_n sum_i t_ni log p_ni as a function of the classifier's last pre-activation a_L.

    The dot product on a log-softmax output and the cross entropy on a softmax output
    (B.46-B.47, B.42-B.43) share one exact fused form (``kd_ref.outputs``), with
    value(a_L), grad(a_L) = dE/da_L and r_grad(a_L, R_a_L) = R{dE/da_L}.
    """
    out = DotProduct(targets) if student.nonlinearities[-1] == "log_softmax" else CrossEntropy(targets)
    return out.fused(student.f[-1])


def check_teacher_labels(labels, n, c, need_derivatives=False, d=None):
    if labels.probs.shape != (n, c):
        raise ValueError(f"labels: expected teacher probabilities of shape ({n}, {c}), received shape "
                         f"{labels.probs.shape}")
    if need_derivatives:
        if labels.d_log_probs is None:
            raise ValueError("labels: expected teacher input derivatives (label with derivatives=True), received None")
        if labels.d_log_probs.shape != (n, c, d):
            raise ValueError(f"labels: expected teacher derivatives of shape ({n}, {c}, {d}), received shape "
                             f"{labels.d_log_probs.shape}")


class CrossEntropyLoss:
    """Cross entropy with the teacher's probabilities as soft targets (2.5, 2.16-2.17).

    l(x, theta) = - sum_i t_i(x) log y_i(x; theta), averaged over the minibatch. It
    differs from KL(t || y) (2.16) by the teacher's entropy, which does not depend on
    theta. One forward pass and one backprop per minibatch.
    """

    needs_derivatives = False
    name = "cross entropy"

    def __call__(self, student, x, labels):
        """Loss and theta-gradient.

        Parameters
        ----------
        student : MLP
        x : ndarray of shape (N, D)
        labels : Labels

        Returns
        -------
        value : float
        grad : ndarray of shape (student.n_params,)
        """
        cache = student.forward(x)
        n = cache.y.shape[0]
        check_teacher_labels(labels, *cache.y.shape)
        out, a_L = _log_prob_output(student, labels.probs), cache.a[-1]
        d_params, _ = student.backprop(cache, input_grads=False, d_a=out.grad(a_L))
        return -out.value(a_L) / n, -d_params / n


class SquareErrorLoss:
    """Square error between the student's and the teacher's probabilities (2.4).

    l(x, theta) = ||y(x; theta) - t(x)||^2 summed over classes (no 1/2), averaged
    over the minibatch; y are probabilities also for a log-softmax student
    (y = exp(z), so dl/dz = 2 (y - t) * y).
    """

    needs_derivatives = False
    name = "square error"

    def __call__(self, student, x, labels):
        """Loss and theta-gradient; arguments as :meth:`CrossEntropyLoss.__call__`."""
        cache = student.forward(x)
        n = cache.y.shape[0]
        check_teacher_labels(labels, *cache.y.shape)
        probs = np.exp(cache.y) if student.nonlinearities[-1] == "log_softmax" else cache.y
        diff = probs - labels.probs
        seed = 2.0 * diff / n
        if student.nonlinearities[-1] == "log_softmax":
            seed *= probs
        d_params, _ = student.backprop(cache, seed, input_grads=False)
        return float(np.sum(diff**2)) / n, d_params


class DerivativeSquareErrorLoss:
    """Derivative square error on log-probabilities (2.8, 2.18) and its theta-gradient (2.9-2.13).

    l(x, theta) = sum_i ||d log y_i(x; theta)/dx - d log t_i(x)/dx||^2, averaged over
    the minibatch.

    Gradient, for every class i:

    1. backprop of E_i = log y_i (summed over rows), seeded at a_L with
       seed_i = dE_i/da_L = e_i - p (:func:`_log_prob_output`, exact at any
       confidence), without parameter products, gives g_i = d log y_i / dx per row;
    2. d_i = 2 (g_i - G_i), with G_i the teacher's derivative (2.13);
    3. a reduced R{backprop} (B.19-B.21) along v = (0, d_i) — ``r_forward(cache,
       v_x=d_i)`` then ``r_backprop(cache, R, d_a=seed_i, R_d_a=R{seed_i})`` with
       R{seed_i} = -R{p} — whose parameter part is sum_n (d g_ni / d theta)^T d_ni (2.11-2.12).

    The gradient is the sum over classes of step 3's parameter parts, divided by N.

    Parameters
    ----------
    stacked : bool
        True (default) runs the C classes together on a class-stacked copy of the
        minibatch (C N rows; the parameter parts sum over rows, which is the sum
        over classes), so the matrix products are C times taller and the Python
        overhead is paid once. False loops over the classes on the N-row cache,
        step by step as above: the reference form, and the one to read. Both give
        the same numbers up to rounding; ``kd-ref bench dse`` times both.
    """

    needs_derivatives = True
    name = "derivative square error"

    def __init__(self, stacked=True):
        if not isinstance(stacked, (bool, np.bool_)):
            raise TypeError(f"stacked: expected a bool, received {stacked!r}")
        self.stacked = bool(stacked)

    def __call__(self, student, x, labels):
        """Loss and theta-gradient; arguments as :meth:`CrossEntropyLoss.__call__`
        (``labels.d_log_probs`` required)."""
        cache = student.forward(x)
        n, c = cache.y.shape
        check_teacher_labels(labels, n, c, True, cache.x[0].shape[1])
        G = labels.d_log_probs
        if not self.stacked:
            grad, value = np.zeros(student.n_params), 0.0
            for i in range(c):
                e_i = np.zeros((n, c))
                e_i[:, i] = 1.0
                out = _log_prob_output(student, e_i)                                      # E_i = log y_i
                seed = out.grad(cache.a[-1])                                              # dE_i/da_L
                _, g_i = student.backprop(cache, param_grads=False, d_a=seed)             # 1. g_i
                diff = g_i - G[:, i, :]
                R = student.r_forward(cache, v_x=2.0 * diff)                              # 2-3. v = (0, d_i)
                R_d_params, _ = student.r_backprop(cache, R, input_grads=False, d_a=seed,
                                                   R_d_a=out.r_grad(cache.a[-1], R.R_a[-1]))
                grad += R_d_params
                value += float(np.sum(diff**2))
        else:
            tcache = tile_cache(cache, c)
            out = _log_prob_output(student, class_seeds(n, c))
            seed = out.grad(tcache.a[-1])
            _, g = student.backprop(tcache, param_grads=False, d_a=seed)                 # g_i, all i
            diff = g - G.transpose(1, 0, 2).reshape(c * n, -1)
            R = student.r_forward(tcache, v_x=2.0 * diff)                                 # v = (0, d_i)
            grad, _ = student.r_backprop(tcache, R, input_grads=False, d_a=seed,
                                         R_d_a=out.r_grad(tcache.a[-1], R.R_a[-1]))
            value = float(np.sum(diff**2))
        return value / n, grad / n


class WeightedLoss:
    """A weighted sum of losses, e.g. a * cross entropy (2.5) + b * derivative square error (2.18).

    The thesis trains with one loss at a time; combining value and derivative
    matching in one objective is an option of this project. Value and gradient are
    the same weighted sums of the terms' values and gradients.

    Parameters
    ----------
    terms : sequence of (weight, loss)
        Non-negative weights; the teacher is asked for derivatives when any term needs them.
    """

    name = "weighted sum"

    def __init__(self, terms):
        terms = list(terms)
        if not terms:
            raise ValueError("terms: expected at least one (weight, loss) pair, received none")
        for k, term in enumerate(terms):
            if not (isinstance(term, (tuple, list)) and len(term) == 2):
                raise TypeError(f"terms[{k}]: expected a (weight, loss) pair, received {term!r}")
            w, loss = term
            check_in_range(w, f"terms[{k}] weight", 0, np.inf, high_open=True)
            if not callable(loss) or not hasattr(loss, "needs_derivatives"):
                raise TypeError(f"terms[{k}]: expected a loss object (e.g. CrossEntropyLoss()), received {loss!r}")
        self.terms = [(float(w), loss) for w, loss in terms]
        self.needs_derivatives = any(loss.needs_derivatives for _, loss in self.terms)
        self.name = " + ".join(f"{w:g} {loss.name}" for w, loss in self.terms)

    def __call__(self, student, x, labels):
        """Loss and theta-gradient; arguments as :meth:`CrossEntropyLoss.__call__`."""
        value, grad = 0.0, np.zeros(student.n_params)
        for w, loss in self.terms:
            v, g = loss(student, x, labels)
            value += w * v
            grad += w * g
        return value, grad


#: The thesis's losses by short name (the registry of every chapter has this shape; see kd_ref.distill).
LOSSES = {"ce": CrossEntropyLoss, "se": SquareErrorLoss, "dse": DerivativeSquareErrorLoss}


# ------------------------------------------------------------------- objectives
def check_batch(x, dim):
    """A minibatch from a generator as float64 (N, dim); errors name the generator that produced it."""
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"generator: expected minibatches of shape (N, {dim}), received shape {arr.shape}")
    return as_float_array(arr, "generator")


def teacher_targets(student, teacher, loss):
    """The teacher as x -> Labels for :func:`kd_ref.distill.distill` (2.6-2.7, steps i-iv).

    The teacher labels each minibatch when it arrives, with input derivatives only
    if the loss needs them, so nothing but the current minibatch is stored.

    Parameters
    ----------
    student : MLP
        Last nonlinearity softmax or log_softmax.
    teacher : MLPTeacher, EnsembleTeacher or similar
        Must have as many inputs and outputs as the student.
    loss : a loss of :data:`LOSSES` or a WeightedLoss

    Returns
    -------
    callable, ndarray of shape (N, D) -> Labels
        Raises ValueError for a minibatch whose second dimension is not D (naming the generator).
    """
    check_student(student)
    check_teacher(teacher)
    if teacher.n_outputs != student.sizes[-1]:
        raise ValueError(f"teacher: expected {student.sizes[-1]} outputs to match the student's output layer, "
                         f"received a teacher with {teacher.n_outputs} outputs")
    if teacher.n_inputs != student.sizes[0]:
        raise ValueError(f"teacher: expected {student.sizes[0]} inputs to match the student's input layer, "
                         f"received a teacher with {teacher.n_inputs} inputs")
    if not hasattr(loss, "needs_derivatives") or not callable(loss):
        raise TypeError(f"loss: expected a loss object (e.g. CrossEntropyLoss()), received {loss!r}")

    def labels(x):
        return teacher.label(check_batch(x, student.sizes[0]), derivatives=loss.needs_derivatives)

    return labels


def supervised_objective(student, loss=None):
    """Objective for a baseline trained on true labels: batch (x, one-hot t) -> (loss, gradient).

    With the default loss this is cross entropy (2.5, 2.17) whose targets t are the
    one-hot true labels in place of a teacher's probabilities, -(1/N) sum_n log y_{n, label_n}.

    Parameters
    ----------
    student : MLP
    loss : value loss, default CrossEntropyLoss()
        Derivative losses need a teacher and are refused.

    Returns
    -------
    callable, (x of shape (N, D), t of shape (N, C)) -> (float, ndarray of shape (P,))
        As yielded by ``DatasetGenerator(..., targets=...)``.
    """
    check_student(student)
    loss = CrossEntropyLoss() if loss is None else loss
    if getattr(loss, "needs_derivatives", True):
        raise ValueError(f"loss: expected a value loss (true labels have no input derivatives), received {loss!r}")

    def objective(batch):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            got = (f"{type(batch).__name__} of shape {np.shape(batch)}" if isinstance(batch, np.ndarray)
                   else f"{type(batch).__name__} of length {len(batch)}" if isinstance(batch, (tuple, list))
                   else type(batch).__name__)
            raise ValueError(f"batch: expected an (x, targets) pair (DatasetGenerator(..., targets=...)), "
                             f"received {got}")
        x, t = batch
        x = check_batch(x, student.sizes[0])
        t = as_float_array(t, "targets", shape=(x.shape[0], student.sizes[-1]))
        return loss(student, x, Labels.from_probs(t))

    return objective


# ------------------------------------------------------------------- generators
class DatasetGenerator:
    """Minibatches resampled from a dataset without replacement (2.21; reshuffled after each pass).

    The stream of examples is a concatenation of independent random permutations of
    the dataset, cut into consecutive minibatches: every block of ``n`` consecutive
    examples in the stream (one pass) holds each example exactly once. A minibatch
    may straddle two passes. The indices come from :class:`kd_ref.optim.MinibatchDrawer`,
    the package's one implementation of this scheme.

    Parameters
    ----------
    data : ndarray of shape (n, D)
    batch_size : int
    rng : numpy.random.Generator
    targets : ndarray of shape (n, C), optional
        When given, each call returns ``(x, t)`` (for baselines on true labels).
    rows : ndarray of shape (m,) of int, optional
        Draw from the resample ``data[rows]`` (e.g. a bootstrap, 2.14) without
        copying it: a pass then visits each entry of ``rows`` once.

    Attributes
    ----------
    dim : int
    n : int
        Examples per pass.
    batch_size : int
    examples_drawn : int
    """

    def __init__(self, data, batch_size, rng, targets=None, rows=None):
        self.data = as_float_array(data, "data", ndim=2)
        if self.data.shape[0] == 0:
            raise ValueError("data: expected at least one example, received an empty array")
        if targets is not None:
            targets = as_float_array(targets, "targets", ndim=2)
            if targets.shape[0] != self.data.shape[0]:
                raise ValueError(f"targets: expected {self.data.shape[0]} rows like data, received {targets.shape[0]}")
        if rows is not None:
            rows = np.asarray(rows)
            if (rows.ndim != 1 or rows.size == 0 or not np.issubdtype(rows.dtype, np.integer)
                    or rows.min() < 0 or rows.max() >= self.data.shape[0]):
                raise ValueError(f"rows: expected a non-empty 1-d array of integers in [0, {self.data.shape[0]}), "
                                 f"received dtype {rows.dtype}, shape {rows.shape}"
                                 + (f", range [{rows.min()}, {rows.max()}]" if rows.size and rows.ndim == 1 else ""))
        self.rows = rows
        # the drawer shuffles positions 0..n-1 of the resample; only its length is read from what it is given
        self._drawer = MinibatchDrawer(self.data if rows is None else rows[:, None], batch_size, rng)
        self.targets = targets
        self.dim = self.data.shape[1]

    @property
    def batch_size(self):
        return self._drawer.batch_size

    @property
    def n(self):
        """Examples per pass: rows of ``data``, or entries of ``rows`` when given."""
        return self._drawer.data.shape[0]

    @property
    def examples_drawn(self):
        return self._drawer.examples_drawn

    @property
    def passes(self):
        """Number of passes over the dataset started so far (fractional)."""
        return self.examples_drawn / self.n

    def next_indices(self):
        """Indices into ``data`` of the next minibatch, shape (batch_size,)."""
        idx = self._drawer.next_indices()
        return idx if self.rows is None else self.rows[idx]

    def __call__(self):
        idx = self.next_indices()
        if self.targets is None:
            return self.data[idx]
        return self.data[idx], self.targets[idx]

    def state(self):
        """Generator state and position in the stream (:class:`kd_ref.optim.MinibatchDrawer`'s)."""
        return self._drawer.state()

    def load_state(self, state):
        self._drawer.load_state(state)


class NADEGenerator:
    """Minibatches of a trained NADE's conditional-probability images (section 2.2.3).

    A NADE models binary images, so its ancestral samples are binary too, and
    inputs restricted to {0, 1}^D would probe the teacher on a very thin set.
    Sampling pixel d, however, first computes the Bernoulli mean of that pixel
    conditioned on the values already drawn for pixels earlier in the order. This
    generator returns those D real-valued means (each in [0, 1]) as the input
    vector and discards the binary draws themselves.

    ``nade.sample(n, rng)`` returns ``(x, y)`` with both in the *data's* pixel order
    (kd_ref.nade applies its ordering internally), so the images come back in the
    same raster row-major order as the dataset the NADE was trained on.

    Parameters
    ----------
    nade : kd_ref.nade.NADE
    batch_size : int
    rng : numpy.random.Generator

    Attributes
    ----------
    dim : int
        The NADE's number of inputs.
    examples_drawn : int
    """

    def __init__(self, nade, batch_size, rng):
        if not isinstance(nade, NADE):
            raise TypeError(f"nade: expected a kd_ref.nade.NADE, received {type(nade).__name__}")
        self.nade = nade
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.rng = check_generator(rng)
        self.dim = nade.n_inputs
        self.examples_drawn = 0

    def __call__(self):
        _, y = self.nade.sample(self.batch_size, self.rng)
        self.examples_drawn += self.batch_size
        return y

    def state(self):
        return _stream_state(self)

    def load_state(self, state):
        _load_stream_state(self, state, type(self).__name__)


class NoiseGenerator:
    """Minibatches of i.i.d. Gaussian pixels, N(mean, std^2) (section 2.2.3; thesis: N(0, 1)).

    Parameters
    ----------
    dim : int
    batch_size : int
    rng : numpy.random.Generator
    mean, std : float
    """

    def __init__(self, dim, batch_size, rng, mean=0.0, std=1.0):
        self.dim = check_positive_int(dim, "dim")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.rng = check_generator(rng)
        self.mean = check_in_range(mean, "mean", -np.inf, np.inf, low_open=True, high_open=True)
        self.std = check_in_range(std, "std", 0, np.inf, low_open=True, high_open=True)
        self.examples_drawn = 0

    def __call__(self):
        self.examples_drawn += self.batch_size
        return self.rng.normal(self.mean, self.std, size=(self.batch_size, self.dim))

    def state(self):
        return _stream_state(self)

    def load_state(self, state):
        _load_stream_state(self, state, type(self).__name__)


def _stream_state(generator):
    """State of a generator whose draws depend only on its numpy Generator: that, and the examples drawn."""
    return {"rng": generator_state(generator.rng), "examples_drawn": np.array(generator.examples_drawn)}


def _load_stream_state(generator, state, owner):
    check_state_keys(state, ("rng", "examples_drawn"), owner)
    drawn = state_count(state["examples_drawn"], "examples_drawn")
    load_generator_state(generator.rng, state["rng"])
    generator.examples_drawn = drawn


# ------------------------------------------------------------------- evaluation
def log_probs_of(model, x, batch_size=1000):
    """Log-probabilities of a student network or a teacher for many inputs, in chunks; shape (N, C).

    Parameters
    ----------
    model : MLP (last nonlinearity softmax or log_softmax) or a teacher (``label``, ``n_inputs``, ``n_outputs``)
    x : ndarray of shape (N, D), N >= 1
    batch_size : int
    """
    if isinstance(model, MLP):
        check_student(model)
        n_inputs = model.sizes[0]
    else:
        n_inputs = check_teacher(model).n_inputs
    x = as_float_array(x, "x", ndim=2)
    if x.shape[0] == 0 or x.shape[1] != n_inputs:
        raise ValueError(f"x: expected shape (N, {n_inputs}) with N >= 1, received shape {x.shape}")
    batch_size = check_positive_int(batch_size, "batch_size")
    rows = []
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start:start + batch_size]
        if isinstance(model, MLP):
            rows.append(mlp_log_probs(model, model.forward(chunk))[1])
        else:
            rows.append(model.label(chunk).log_probs)
    return np.concatenate(rows, axis=0)
