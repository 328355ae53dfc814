"""Pruning by second-order saliency: Optimal Brain Damage and Optimal Brain Surgeon (SPEC_seeds S1.10-S1.16);
and whole hidden units by group l1/l2 regularisation (S3.19, at the end of the module).

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

from ._validation import (as_float_array, check_generator, check_in_range, check_indices, check_optimizer,
                          check_positive_int)
from .curvature import hessian_diagonal, loss_scale
from .mlp import MLP
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


# --------------------------------------------- group l1/l2 over hidden units (S3.19)
class UnitGroups:
    """One group per hidden unit: its incoming weights W_l[i, :] and its bias b_l[i] (S3.19).

    The regulariser is R(phi) = sum_k ||phi_{G_k}||_2 over these groups (GPED section 3.3; Wen
    et al. 2016). Output units are not grouped: removing one would change what the network
    predicts. GPED's released ``GroupLassoRegularizer`` groups differently (the weight rows of
    every layer, output layer included, and each layer's whole bias vector as one group); kd_ref
    follows the paper's wording, one group per unit.

    Parameters
    ----------
    net : MLP with at least one hidden layer

    Attributes
    ----------
    sizes : list of int, the architecture the groups were built for
    index : list of L - 1 int arrays, ``index[l]`` of shape (D_{l+1}, D_l + 1)
        Row i holds the flat-parameter positions of unit i of hidden layer l + 1: its
        D_l incoming weights, then its bias.
    """

    def __init__(self, net):
        if net.n_layers < 2:
            raise ValueError(f"net: expected at least one hidden layer (units to group), received sizes {net.sizes}")
        self.sizes = list(net.sizes)
        self.index = []
        for l in range(1, net.n_layers):
            w, b = net.layout.slice(f"W{l}"), net.layout.slice(f"b{l}")
            weights = np.arange(w.start, w.stop).reshape(net.sizes[l], net.sizes[l - 1])
            self.index.append(np.hstack([weights, np.arange(b.start, b.stop)[:, None]]))
        self.n_params = net.n_params

    def check(self, net):
        """Refuse groups built for another architecture: they would not cover ``net``'s hidden units."""
        if list(net.sizes) != self.sizes:
            raise ValueError(f"groups: expected one group per hidden unit of a network {list(net.sizes)}, received "
                             f"groups built for {self.sizes}")
        return self

    def _params(self, params, name="params"):
        if not (isinstance(params, np.ndarray) and params.shape == (self.n_params,)):
            raise ValueError(f"{name}: expected an ndarray of shape ({self.n_params},), received "
                             f"{type(params).__name__} of shape {getattr(params, 'shape', None)}")
        return params

    def norms(self, params):
        """||phi_G||_2 of every group: a list of (D_l,) arrays, one per hidden layer."""
        params = self._params(params)
        return [np.sqrt(np.sum(params[idx] ** 2, axis=1)) for idx in self.index]

    def value(self, params):
        """R(phi) = sum over the groups of ||phi_G||_2 (S3.19)."""
        return float(sum(n.sum() for n in self.norms(params)))

    def subgradient(self, params):
        """dR/dphi = phi_G / ||phi_G|| in every group, 0 where ||phi_G|| = 0 (GPED's choice of subgradient)
        and on the parameters outside the groups (output layer). Shape (P,)."""
        grad = np.zeros(self.n_params)
        for idx, norm in zip(self.index, self.norms(params)):
            alive = norm > 0
            grad[idx[alive]] = params[idx[alive]] / norm[alive, None]
        return grad

    def prox(self, params, step):
        """The proximal map of step * R, in place: group soft-thresholding (S3.19).

        phi_G <- max(0, 1 - step / ||phi_G||) phi_G: groups of norm <= step become exactly 0,
        the others shrink towards 0 by ``step`` in norm; ungrouped parameters are unchanged.
        """
        step = check_in_range(step, "step", 0.0, np.inf)
        params = self._params(params)
        for idx, norm in zip(self.index, self.norms(params)):
            shrink = np.zeros_like(norm)
            big = norm > step
            shrink[big] = 1.0 - step / norm[big]
            params[idx] *= shrink[:, None]         # exactly 0 where shrink is 0
        return params


class GroupProx:
    """An optimiser step followed by the group-lasso proximal step, phi_G <- max(0, 1 - alpha_t lam / ||phi_G||) phi_G
    (S3.19), alpha_t the step size the optimiser just used.

    With ``SGD`` this is proximal gradient descent on loss + lam R. With ``Adam`` (GPED's
    optimiser) it is the spec's rule with Adam's learning rate as alpha_s, a heuristic: Adam's
    per-coordinate steps are not alpha_s. So one lam means different strengths for the two
    solvers: under Adam the subgradient's penalty term is normalised like the data gradient
    (a step of about alpha per coordinate where it dominates), while the prox shrinks a group's
    norm by only alpha lam per step. On MNIST (5,000 images, 784-100-100-10 ReLU, Adam 1e-3,
    3,000 steps) the subgradient solver kept 54 and 86 hidden units at lam = 3e-3 and the
    prox 41 and 17 at lam = 3, none removed up to lam = 0.3: tune lam per solver.
    The prox is part of the step, so checkpoints of ``kd_ref.optim.train`` hold the
    thresholded parameters and a resumed run matches.

    Parameters
    ----------
    optimizer : an optimiser with a step-size ``schedule`` and a step counter ``t`` (SGD, Adam)
    groups : UnitGroups
    lam : float >= 0
        The weight of R in the minimised minibatch-mean loss (GPED's student step: lam = lam_total / N').
    """

    def __init__(self, optimizer, groups, lam):
        check_optimizer(optimizer)
        if not callable(getattr(optimizer, "schedule", None)) or not isinstance(getattr(optimizer, "t", None), int):
            raise TypeError(f"optimizer: expected an optimiser with a step-size schedule and a step counter t (SGD or "
                            f"Adam), received {type(optimizer).__name__}")
        if not isinstance(groups, UnitGroups):
            raise TypeError(f"groups: expected UnitGroups(net), received {type(groups).__name__}")
        self.optimizer, self.groups = optimizer, groups
        self.lam = check_in_range(lam, "lam", 0.0, np.inf)

    def step(self, params, grad):
        alpha = self.optimizer.schedule(self.optimizer.t)          # the step size of this step
        self.optimizer.step(params, grad)
        self.groups.prox(params, alpha * self.lam)

    def settings(self):
        inner = getattr(self.optimizer, "settings", lambda: {"optimizer": type(self.optimizer).__name__})()
        return {**inner, "group_prox_lam": self.lam}

    def state(self):
        return self.optimizer.state()

    def load_state(self, state):
        self.optimizer.load_state(state)


GROUP_SOLVERS = ("subgradient", "proximal")


def group_lasso_train(net, objective, draw, optimizer, n_steps, lam, *, solver="proximal", groups=None,
                      **train_kwargs):
    """Minimise loss + lam R(phi) over ``net.params`` in place (S3.19) with ``kd_ref.optim.train``.

    Parameters
    ----------
    net : MLP
    objective : callable batch -> (loss, grad)
        The data loss (the minibatch mean, as GPED's student step) and its gradient over ``net.params``.
    draw, optimizer, n_steps, **train_kwargs
        As for ``kd_ref.optim.train``.
    lam : float >= 0
    solver : "subgradient" or "proximal"
        ``"subgradient"``: GPED's rule, the gradient of the loss plus lam times
        :meth:`UnitGroups.subgradient` (groups hover near 0 but rarely reach it, hence
        the threshold of :func:`unit_keep`). ``"proximal"``: the loss gradient, then
        the group prox of :class:`GroupProx` (exact zeros, no threshold).
    groups : UnitGroups, optional (default ``UnitGroups(net)``)

    Returns
    -------
    kd_ref.optim.TrainResult; its losses are loss + lam R at the parameters before each step.
    """
    if solver not in GROUP_SOLVERS:
        raise ValueError(f"solver: expected one of {list(GROUP_SOLVERS)}, received {solver!r}")
    groups = UnitGroups(net) if groups is None else groups
    if not isinstance(groups, UnitGroups):
        raise TypeError(f"groups: expected UnitGroups(net), received {type(groups).__name__}")
    groups.check(net)
    lam = check_in_range(lam, "lam", 0.0, np.inf)
    params = net.params
    if solver == "proximal":
        optimizer = GroupProx(optimizer, groups, lam)

    def penalised(batch):
        loss, grad = objective(batch)
        grad = np.array(grad, dtype=np.float64)
        if solver == "subgradient":
            grad += lam * groups.subgradient(params)
        return loss + lam * groups.value(params), grad

    return train(params, penalised, draw, optimizer, n_steps, **train_kwargs)


def _check_keep(net, keep):
    """``keep`` as a list of one boolean array per hidden layer, of that layer's width, each keeping a unit."""
    widths = net.sizes[1:-1]
    if isinstance(keep, np.ndarray) or not hasattr(keep, "__len__") or len(keep) != len(widths):
        length = f" of length {len(keep)}" if hasattr(keep, "__len__") else ""
        raise ValueError(f"keep: expected {len(widths)} boolean arrays (one per hidden layer, widths {widths}), "
                         f"received {type(keep).__name__}{length}")
    out = []
    for l, (k, width) in enumerate(zip(keep, widths)):
        k = np.asarray(k)
        if k.dtype != bool or k.shape != (width,):
            raise ValueError(f"keep[{l}]: expected a boolean array of shape ({width},), one entry per unit of hidden "
                             f"layer {l + 1}, received {k.dtype} of shape {k.shape}")
        if not k.any():
            raise ValueError(f"keep[{l}]: expected at least one unit of hidden layer {l + 1} kept, received none")
        out.append(k)
    return out


def _check_elementwise(net):
    """Removing a unit leaves the others unchanged only when the hidden nonlinearities act unit by unit."""
    for l, f in enumerate(net.f[:-1]):
        if not f.elementwise:
            raise ValueError(f"net: expected elementwise hidden nonlinearities to remove units, received "
                             f"{f.name!r} in hidden layer {l + 1}")


def unit_keep(net, eps=1e-3):
    """Which hidden units survive: unit i of hidden layer l is removed when all its incoming weights are
    below ``eps`` in magnitude (GPED's threshold, eps = 1e-3, S3.19), or, with eps = 0, exactly 0
    (the proximal solver's zeros). The bias does not count. Returns a list of (D_l,) bool arrays.
    """
    eps = check_in_range(eps, "eps", 0.0, np.inf)
    if net.n_layers < 2:
        raise ValueError(f"net: expected at least one hidden layer, received sizes {net.sizes}")
    biggest = [np.max(np.abs(W), axis=1) for W in net.W[:-1]]
    return [m >= eps if eps > 0 else m > 0 for m in biggest]


def unit_mask(net, keep):
    """A :class:`ParameterMask` deleting the incoming weights of the removed hidden units (S3.19).

    ``mask.apply(net.params)`` makes the *masked* network (biases stay: a removed unit then
    outputs the constant f(b_i)); :func:`retrain` fine-tunes with the mask kept.
    """
    keep = _check_keep(net, keep)
    mask = ParameterMask(net.n_params)
    for l, k in enumerate(keep, start=1):
        w = net.layout.slice(f"W{l}")
        rows = np.arange(w.start, w.stop).reshape(net.sizes[l], net.sizes[l - 1])
        mask.keep[rows[~k].ravel()] = False
    return mask


def prune_units(net, keep):
    """The smaller network without the removed hidden units; it computes exactly what the masked one did (S3.19).

    A removed unit i of hidden layer l has zero incoming weights, so its pre-activation is
    its bias b_i and its output the constant f_l(b_i) for every input. The next layer's
    pre-activation therefore gains W_{l+1}[:, i] f_l(b_i) for every input: that is folded
    into the next bias, b_{l+1} <- b_{l+1} + W_{l+1}[:, removed] f_l(b_removed), and the
    unit's row and column are dropped. Needs elementwise hidden nonlinearities (a softmax
    layer couples its units).

    Parameters
    ----------
    net : MLP; every removed unit must have all incoming weights exactly 0
        (``unit_mask(net, keep).apply(net.params)`` makes them so). Not modified.
    keep : list of L - 1 boolean arrays, ``keep[l]`` of shape (D_{l+1},), at least one True each

    Returns
    -------
    MLP of sizes [D_0, sum keep[0], ..., D_L], same nonlinearities, new parameters.

    Examples
    --------
    >>> import numpy as np
    >>> net = MLP([2, 3, 1], ["logistic", "linear"], np.random.default_rng(0))
    >>> net.b[0][...] = [0.5, -1.0, 2.0]
    >>> keep = [np.array([True, False, True])]
    >>> unit_mask(net, keep).apply(net.params)             # the masked net: unit 1 outputs logistic(-1.0)
    >>> small = prune_units(net, keep)
    >>> small.sizes
    [2, 2, 1]
    >>> x = np.random.default_rng(1).normal(size=(4, 2))
    >>> bool(np.max(np.abs(small.predict(x) - net.predict(x))) < 1e-12)
    True
    """
    keep = _check_keep(net, keep)
    _check_elementwise(net)
    for l, k in enumerate(keep):
        live = np.flatnonzero(np.any(net.W[l][~k] != 0, axis=1))
        if live.size:
            unit = int(np.flatnonzero(~k)[live[0]])
            raise ValueError(f"keep[{l}]: expected removed units with zero incoming weights (mask them first with "
                             f"unit_mask(net, keep).apply(net.params)), received unit {unit} of hidden layer "
                             f"{l + 1} with non-zero weights")
    rows = keep + [np.ones(net.sizes[-1], dtype=bool)]              # units kept in each layer's output
    pruned = MLP([net.sizes[0]] + [int(k.sum()) for k in keep] + [net.sizes[-1]], net.nonlinearities, None)
    for l in range(net.n_layers):
        cols = np.ones(net.sizes[0], dtype=bool) if l == 0 else rows[l - 1]
        pruned.W[l][...] = net.W[l][np.ix_(rows[l], cols)]
        bias = net.b[l][rows[l]].copy()
        if l > 0 and not cols.all():
            constant = net.f[l - 1].forward(net.b[l - 1][~cols][None, :])[0]    # f_l(b_i) of the removed units
            bias += net.W[l][np.ix_(rows[l], ~cols)] @ constant
        pruned.b[l][...] = bias
    return pruned


@dataclass
class GroupPruneResult:
    """Group l1/l2 pruning (S3.19): the pruned network and how it was reached.

    pruned : MLP without the removed units (:func:`prune_units`)
    keep : list of (D_l,) bool arrays, the surviving units of each hidden layer
    train : TrainResult of the penalised training
    fine_tune : TrainResult of the masked fine-tuning, or None
    """

    pruned: object
    keep: list
    train: object
    fine_tune: object


def group_lasso_prune(net, objective, draw, optimizer, n_steps, lam, *, solver="proximal", eps=None,
                      fine_tune_optimizer=None, fine_tune_steps=0, **train_kwargs):
    """Train with the group penalty, remove the dead units, fine-tune with the mask kept, prune (S3.19).

    ``solver="subgradient"``: GPED's recipe, units whose incoming weights are all below
    ``eps`` = 1e-3 are removed. ``solver="proximal"``: units whose weights the prox set to
    exactly 0 are removed (``eps`` = 0). Then the removed units' incoming weights are zeroed,
    optionally fine-tuned for ``fine_tune_steps`` with ``fine_tune_optimizer`` (GPED: the
    learning rate / 10) on the data loss alone with the mask kept (:func:`retrain`), and the
    network is pruned. ``net`` ends as the masked network; ``train_kwargs`` go to the
    penalised training only.

    Returns
    -------
    GroupPruneResult
    """
    if solver not in GROUP_SOLVERS:
        raise ValueError(f"solver: expected one of {list(GROUP_SOLVERS)}, received {solver!r}")
    eps = (1e-3 if solver == "subgradient" else 0.0) if eps is None else check_in_range(eps, "eps", 0.0, np.inf)
    fine_tune_steps = check_positive_int(fine_tune_steps, "fine_tune_steps", minimum=0)
    if fine_tune_steps:
        check_optimizer(fine_tune_optimizer, "fine_tune_optimizer")
    _check_elementwise(net)
    trained = group_lasso_train(net, objective, draw, optimizer, n_steps, lam, solver=solver, **train_kwargs)
    keep = unit_keep(net, eps)
    for l, k in enumerate(keep):
        if not k.any():
            raise ValueError(f"lam: expected a penalty that leaves hidden units alive, received lam = {lam}, which "
                             f"removed every unit of hidden layer {l + 1} (net is left as trained)")
    mask = unit_mask(net, keep)
    mask.apply(net.params)
    tuned = None
    if fine_tune_steps:
        tuned = retrain(net.params, mask, objective, draw, fine_tune_optimizer, fine_tune_steps,
                        progress=train_kwargs.get("progress", True), label="fine-tune")
    return GroupPruneResult(prune_units(net, keep), keep, trained, tuned)
