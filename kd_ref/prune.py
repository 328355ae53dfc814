"""Pruning by second-order saliency: Optimal Brain Damage and Optimal Brain Surgeon (SPEC_seeds S1.10-S1.16).

Around a trained minimum u of the minimised loss L, deleting parameters (setting
δu_k = -u_k for the deleted k) changes L by (S1.10, LeCun, Denker & Solla 1989, eq. 1)

    δL = sum_i g_i δu_i + 1/2 sum_i h_ii δu_i^2 + 1/2 sum_{i != j} h_ij δu_i δu_j + O(|δu|^3).

OBD keeps only the diagonal term, so each parameter gets the saliency (S1.11)

    s_k = 1/2 h_kk u_k^2,

which assumes the loss is *extremal* (g = 0), *diagonal* (cross terms dropped) and
*quadratic* (cubic terms dropped); the experiment measures how far each holds.
The OBD recipe (S1.16): train, compute h_kk (``kd_ref.curvature``), delete the
lowest-saliency parameters (set them to 0 and freeze them with a
:class:`ParameterMask`), retrain, repeat. Magnitude (|u_k|) and random deletion
are the controls. OBS (Hassibi & Stork 1993) uses the whole Hessian instead:
deleting q costs L_q = u_q^2 / (2 [H^-1]_qq) once the other weights move by
δu = -(u_q / [H^-1]_qq) H^-1 e_q, exactly so for a quadratic loss.

The loss is always L = scale * E for an output function E of ``kd_ref.outputs``
(``kd_ref.curvature.loss_scale``: the mean minimised loss), e.g. the square error
on one-hot targets of LeCun's experiment or a student's distillation cross entropy
against a teacher's probabilities (those targets are constants of the student's loss).
"""
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from ._validation import as_float_array, check_generator, check_in_range, check_indices, check_positive_int
from .curvature import hessian_diagonal, loss_scale
from .optim import train

SELECTIONS = ("saliency", "magnitude", "random")


def saliency(diag, params):
    """OBD saliencies s_k = 1/2 h_kk u_k^2 (S1.11), shape (P,)."""
    diag = as_float_array(diag, "diag", ndim=1)
    params = as_float_array(params, "params", shape=diag.shape)
    return 0.5 * diag * params * params


def mean_loss(net, x, output, scale=None, gradient=True):
    """L = scale * E and, when ``gradient``, dL/dtheta (S1.10); scale defaults to ``loss_scale``."""
    scale = loss_scale(output, x.shape[0]) if scale is None else scale
    value, grad, _ = net.grad(x, output, param_grads=gradient, input_grads=False)
    return (scale * value, scale * grad) if gradient else scale * value


class ParameterMask:
    """Which parameters are still alive; deleted ones are held at exactly 0 (S1.16).

    ``keep`` is a boolean array of shape (n_params,). :meth:`apply` zeroes the deleted
    entries of params (and of a gradient); :func:`retrain` calls it on the gradient
    before and on the parameters after every optimiser step, so they stay exactly 0
    under any optimiser (with a zero gradient SGD and ADADELTA would not move them,
    but an optimiser with momentum would).
    """

    def __init__(self, n_params):
        self.keep = np.ones(check_positive_int(n_params, "n_params"), dtype=bool)

    @property
    def n_params(self):
        return self.keep.size

    @property
    def n_remaining(self):
        return int(self.keep.sum())

    def remaining(self):
        """Indices of the parameters still alive, ascending."""
        return np.flatnonzero(self.keep)

    def delete(self, indices):
        """Mark parameters as deleted (checked whole before anything changes)."""
        indices = np.asarray(check_indices(indices, "indices", self.n_params), dtype=np.intp)
        self.keep[indices] = False

    def _check(self, flat, name):
        if not (isinstance(flat, np.ndarray) and flat.shape == self.keep.shape):
            raise ValueError(f"{name}: expected an array of shape {self.keep.shape} (one entry per parameter), "
                             f"received {type(flat).__name__} of shape {getattr(flat, 'shape', None)}")
        return flat

    def apply(self, params, grad=None):
        """Set the deleted entries of ``params`` (and of ``grad``, when given) to 0, in place."""
        self._check(params, "params")
        if grad is not None:
            self._check(grad, "grad")[~self.keep] = 0.0
        params[~self.keep] = 0.0


# ------------------------------------------------------------- selection
def _lowest(scores, mask, n):
    """The n remaining parameters with the lowest scores (ties in index order)."""
    alive = mask.remaining()
    n = check_positive_int(n, "n")
    if n > alive.size:
        raise ValueError(f"n: expected at most the {alive.size} remaining parameters, received {n}")
    return alive[np.argsort(scores[alive], kind="stable")[:n]]


def saliency_select(saliencies, mask, n):
    """OBD: the n remaining parameters of lowest saliency s_k (S1.11, S1.16)."""
    return _lowest(as_float_array(saliencies, "saliencies", shape=(mask.n_params,)), mask, n)


def magnitude_select(params, mask, n):
    """Control: the n remaining parameters of smallest |u_k|."""
    return _lowest(np.abs(as_float_array(params, "params", shape=(mask.n_params,))), mask, n)


def random_select(mask, n, rng):
    """Control: n remaining parameters drawn uniformly without replacement."""
    check_generator(rng)
    alive = mask.remaining()
    n = check_positive_int(n, "n")
    if n > alive.size:
        raise ValueError(f"n: expected at most the {alive.size} remaining parameters, received {n}")
    return np.sort(rng.choice(alive, size=n, replace=False))


# ------------------------------------------------------------- retraining
def retrain(params, mask, objective, draw, optimizer, n_steps, **train_kwargs):
    """``kd_ref.optim.train`` with the deleted parameters frozen at exactly 0.

    The gradient's deleted entries are zeroed before every step and the parameters'
    after it (a ``callback`` given in ``train_kwargs`` still runs after that).
    """
    if mask.n_params != getattr(params, "size", None):
        raise ValueError(f"mask: expected one entry per parameter ({getattr(params, 'size', None)}), received a "
                         f"mask of length {mask.n_params}")
    user_callback = train_kwargs.pop("callback", None)
    mask.apply(params)

    def masked(batch):
        loss, grad = objective(batch)
        grad = np.array(grad, dtype=np.float64)
        mask.apply(np.zeros_like(params), grad)
        return loss, grad

    def callback(step, loss):
        params[~mask.keep] = 0.0
        return user_callback(step, loss) if user_callback is not None else None

    return train(params, masked, draw, optimizer, n_steps, callback=callback, **train_kwargs)


# ------------------------------------------------------------------- OBD
@dataclass
class OBDRound:
    """One deletion round of :func:`obd` (S1.16).

    remaining : parameters alive after this round's deletion
    deleted : indices deleted this round
    predicted : sum of the deleted parameters' saliencies (S1.11), the predicted increase of L
    actual : L after deletion minus L before it, before retraining
    before, after : ``evaluate(net)`` after deletion, before and after retraining
    """

    remaining: int
    deleted: np.ndarray
    predicted: float
    actual: float
    before: dict
    after: dict


def obd(net, x, output, *, rounds, fraction=0.05, select="saliency", method="exact", retrain_fn=None,
        evaluate=None, rng=None, n_probes=None, scale=None, mask=None):
    """The OBD loop (S1.16): curvature, saliencies, delete the lowest, retrain, repeat.

    Parameters
    ----------
    net : MLP, trained; its ``params`` are pruned in place.
    x : ndarray of shape (N, D_0)
        The training rows; L = scale * E(output) on them is the loss whose curvature is used.
    output : OutputFunction with targets of shape (N, D_L)
    rounds : int
        Maximum number of rounds (fewer when the net runs out of parameters).
    fraction : float in (0, 1]
        Share of the *remaining* parameters deleted per round (at least one).
    select : {"saliency", "magnitude", "random"}
        Which parameters go: OBD, or a control. The saliencies (hence ``predicted``)
        are computed every round whatever the choice.
    method : curvature method of ``kd_ref.curvature.hessian_diagonal``
    retrain_fn : callable (net, mask) -> None, optional
        Retrains in place (e.g. with :func:`retrain`); None skips retraining.
    evaluate : callable net -> dict of str -> float, optional
        Train and test loss and accuracy, say; recorded before and after retraining.
    rng : numpy.random.Generator
        Needed for ``select="random"`` and ``method="hutchinson"`` (probes).
    n_probes : int, hutchinson only
    mask : ParameterMask, optional
        Continue from an existing mask (default: every parameter alive).

    Returns
    -------
    list of OBDRound, and the final ParameterMask
    """
    rounds = check_positive_int(rounds, "rounds")
    fraction = check_in_range(fraction, "fraction", 0.0, 1.0, low_open=True)
    if select not in SELECTIONS:
        raise ValueError(f"select: expected one of {list(SELECTIONS)}, received {select!r}")
    if select == "random" or method == "hutchinson":
        check_generator(rng)
    mask = ParameterMask(net.n_params) if mask is None else mask
    if mask.n_params != net.n_params:
        raise ValueError(f"mask: expected one entry per parameter ({net.n_params}), received a mask of length "
                         f"{mask.n_params}")
    scale = loss_scale(output, x.shape[0]) if scale is None else scale
    evaluate = (lambda _: {}) if evaluate is None else evaluate
    options = {"n_probes": n_probes, "rng": rng} if method == "hutchinson" else {}
    mask.apply(net.params)
    table = []
    for _ in range(rounds):
        n = max(1, int(round(fraction * mask.n_remaining)))
        if n >= mask.n_remaining:
            break
        diag = hessian_diagonal(net, x, output, scale, method=method, **options).diag
        s = saliency(diag, net.params)
        if select == "saliency":
            idx = saliency_select(s, mask, n)
        elif select == "magnitude":
            idx = magnitude_select(net.params, mask, n)
        else:
            idx = random_select(mask, n, rng)
        loss_before = mean_loss(net, x, output, scale, gradient=False)
        mask.delete(idx)
        mask.apply(net.params)
        actual = mean_loss(net, x, output, scale, gradient=False) - loss_before
        before = evaluate(net)
        if retrain_fn is not None:
            retrain_fn(net, mask)
            mask.apply(net.params)
        table.append(OBDRound(mask.n_remaining, idx, float(np.sum(s[idx])), float(actual), before, evaluate(net)))
    return table, mask


def deletion_curve(net, x, output, order, counts, scale=None):
    """L after deleting the first k parameters of ``order`` from the current net, for each k in ``counts``.

    No retraining: this is LeCun et al.'s Fig. 1 (predicted against actual when
    ``order`` is by saliency). ``net.params`` is left as it was.

    Returns
    -------
    ndarray of shape (len(counts),)
    """
    order = np.asarray(check_indices(order, "order", net.n_params), dtype=np.intp)
    counts = [check_positive_int(k, "counts", minimum=0) for k in counts]
    if counts and max(counts) > order.size:
        raise ValueError(f"counts: expected at most len(order) = {order.size}, received {max(counts)}")
    scale = loss_scale(output, x.shape[0]) if scale is None else scale
    saved = net.params.copy()
    out = []
    try:
        for k in counts:
            net.params[...] = saved
            net.params[order[:k]] = 0.0
            out.append(mean_loss(net, x, output, scale, gradient=False))
    finally:
        net.params[...] = saved
    return np.array(out)


# ------------------------------------------------------------------- OBS
@dataclass
class OBSStep:
    """One Optimal Brain Surgeon deletion (S1.16; Hassibi & Stork 1993).

    index : the parameter q deleted
    predicted : L_q = u_q^2 / (2 [H^-1]_qq), the predicted increase of L
    delta : ndarray of shape (P,), the adjustment δu (δu_q = -u_q; zero on already deleted entries)
    saliencies : ndarray of shape (P,), L_k for every remaining k (inf for deleted ones)
    """

    index: int
    predicted: float
    delta: np.ndarray
    saliencies: np.ndarray


def obs_step(hessian, params, mask=None):
    """The OBS deletion among the remaining parameters, on a full Hessian (``kd_ref.curvature.full_hessian``).

    The Hessian is restricted to the remaining parameters (deleted ones are constrained
    to stay 0) and must be positive definite there; its inverse comes from a Cholesky
    factorisation.
    """
    params = as_float_array(params, "params", ndim=1)
    P = params.size
    hessian = as_float_array(hessian, "hessian", shape=(P, P))
    mask = ParameterMask(P) if mask is None else mask
    if mask.n_params != P:
        raise ValueError(f"mask: expected one entry per parameter ({P}), received a mask of length {mask.n_params}")
    alive = mask.remaining()
    H = hessian[np.ix_(alive, alive)]
    try:
        factor = linalg.cho_factor(0.5 * (H + H.T))
    except linalg.LinAlgError:
        raise ValueError("hessian: expected a positive definite Hessian on the remaining parameters (OBS needs "
                         "H^-1), received one that is not") from None
    H_inv = linalg.cho_solve(factor, np.eye(alive.size))
    u = params[alive]
    L = u * u / (2.0 * np.diag(H_inv))
    q = int(np.argmin(L))
    delta = np.zeros(P)
    delta[alive] = -(u[q] / H_inv[q, q]) * H_inv[:, q]
    delta[alive[q]] = -u[q]                                   # exactly 0 afterwards, not 0 up to rounding
    saliencies = np.full(P, np.inf)
    saliencies[alive] = L
    return OBSStep(int(alive[q]), float(L[q]), delta, saliencies)
