"""Linear distillation learning (SPEC_seeds S2; Asadulaev et al., arXiv:1906.05431): few-shot classification by
how well a per-class linear student reproduces a fixed random linear teacher.

Everything is linear. A random *target* map Q(x) = Phi x (+ phi_0), Phi of shape (K, D),
plays the teacher; each class c has a *predictor* P_c(x) = Theta_c x (+ beta_c) of the same
shape, trained to mimic Q on that class's examples only (one-to-many distillation, S2.1).
A test input goes to the class whose predictor mimics the target best there (S2.2):
away from the training data of a class its predictor has never been corrected, so it
disagrees with the target.

What this module adds to the source:

* the closed form (S2.3). Gradient descent on a linear least-squares problem only ever
  moves Theta_c - Phi inside the span of the class's inputs, so training converges to
  Theta_c = Phi + (Theta_c^0 - Phi)(I - Pi_c) and the score is
  d_c(x) = 1/2 ||(Theta_c^0 - Phi)(I - Pi_c) x||^2: a nearest-subspace classifier seen
  through a random map. :meth:`O2MD.fit` computes it with one SVD per class
  (``method="closed_form"``), or trains one example at a time by SGD or Adam as the authors
  do (Adam does *not* converge to the closed form: its per-coordinate scaling also moves
  the complement of the span);
* the randomized-prior reading made exact (S2.6-S2.7): :func:`rpf_posterior_samples` draws
  exact Bayesian linear-regression posterior samples by optimisation, checked against
  :func:`bayes_linear_posterior`, and with a zero target and no noise its optimum is the
  closed form above, row by row.

Losses are minimised. The per-example training loss is the authors' mean squared error
||P(x) - Q(x)||^2 / K (PyTorch's ``MSELoss``, a mean over the K outputs); the score is the
spec's d_c = 1/2 ||P_c(x) - Q(x)||^2. The two differ by a constant factor, which changes
no argmin and, for Adam, no step (up to its eps).

Shapes: x (N, D) rows are examples; targets and predictors (K, D); scores (N, C).
"""
import numpy as np

from .._validation import (as_float_array, check_generator, check_in_range, check_labels, check_positive_int)
from ..optim import SGD, Adam
from ..params import ParamLayout

INITS = ("orthogonal", "xavier_normal", "gaussian", "torch_default")
METHODS = ("closed_form", "sgd", "adam")


def init_weight(shape, rng, init):
    """A (K, D) weight drawn by one of the initialisations the source uses (or the S2.7 Gaussian).

    ``orthogonal``: orthonormal rows (K <= D) or columns (K > D) from the QR factors of a
    Gaussian matrix, signs fixed by diag(R) (``torch.nn.init.orthogonal_``);
    ``xavier_normal``: N(0, 2/(K + D)) entries (the authors' ``mnist.conf``);
    ``gaussian``: N(0, 1/D) entries, i.i.d. rows N(0, I/D) (lambda = 1/D in S2.7);
    ``torch_default``: U(-1/sqrt(D), 1/sqrt(D)), what PyTorch's ``nn.Linear`` starts from. The
    authors' predictors keep it (S2.5: kept in a plain dict, they are missed by their init
    loop), so it is their *effective* predictor initialisation.
    """
    k, d = shape
    rng = check_generator(rng)
    if init == "orthogonal":
        a = rng.standard_normal((max(k, d), min(k, d)))
        q, r = np.linalg.qr(a)
        q *= np.where(np.diag(r) < 0, -1.0, 1.0)          # the unique Q with a positive diagonal in R
        return q if k >= d else q.T.copy()
    if init == "xavier_normal":
        return rng.normal(0.0, np.sqrt(2.0 / (k + d)), size=(k, d))
    if init == "gaussian":
        return rng.normal(0.0, np.sqrt(1.0 / d), size=(k, d))
    if init == "torch_default":
        return rng.uniform(-1.0 / np.sqrt(d), 1.0 / np.sqrt(d), size=(k, d))
    raise ValueError(f"init: expected one of {', '.join(INITS)}, received {init!r}")


def _init_bias(k, d, rng):
    """``nn.Linear``'s default bias U(-1/sqrt(D), 1/sqrt(D)), kept by every init (none of them touches biases)."""
    return rng.uniform(-1.0 / np.sqrt(d), 1.0 / np.sqrt(d), size=k)


def _augment(x):
    """[x, 1]: a bias is a weight on a constant input (S2.3, 'with biases, augment x with a constant 1')."""
    return np.hstack([x, np.ones((x.shape[0], 1))])


def row_space(x):
    """Orthonormal basis V (D, r) of span of the rows of x (m, D), from its SVD.

    r is the numerical rank: singular values above ``s_max * max(m, D) * eps`` (the
    threshold of ``numpy.linalg.matrix_rank`` and ``lstsq``). Pi = V V^T projects on the span.
    """
    x = as_float_array(x, "x", ndim=2)
    if x.shape[0] == 0:
        return np.zeros((x.shape[1], 0))
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    tol = s[0] * max(x.shape) * np.finfo(np.float64).eps if s.size else 0.0
    return vt[s > tol].T.copy()


# ----------------------------------------------------------------------------- target map
class RandomLinearMap:
    """The target Q(x) = Phi x (+ phi_0) of S2.1, Phi of shape (K, D) drawn by :func:`init_weight`.

    Attributes
    ----------
    params : ndarray (K D [+ K],)
        Flat parameters; ``weight`` (K, D) and ``bias`` (K,) or None are views into it.
    """

    def __init__(self, d_in, d_out, rng, init="orthogonal", bias=False):
        d_in, d_out = check_positive_int(d_in, "d_in"), check_positive_int(d_out, "d_out")
        if init not in INITS:
            raise ValueError(f"init: expected one of {', '.join(INITS)}, received {init!r}")
        rng = check_generator(rng)
        self._build(d_in, d_out, bias)
        self.weight[...] = init_weight((d_out, d_in), rng, init)
        if bias:
            self.bias[...] = _init_bias(d_out, d_in, rng)
        self.init = init

    def _build(self, d_in, d_out, bias):
        self.d_in, self.d_out = d_in, d_out
        self.layout = ParamLayout([("weight", (d_out, d_in))] + ([("bias", (d_out,))] if bias else []))
        self.params = self.layout.zeros()
        views = self.layout.views(self.params)
        self.weight = views[0]
        self.bias = views[1] if bias else None

    @classmethod
    def from_weight(cls, weight, bias=None):
        """A map with the given (K, D) weight (and (K,) bias): e.g. the identity of the naive variant (S2.4)."""
        weight = as_float_array(weight, "weight", ndim=2)
        obj = cls.__new__(cls)
        obj._build(weight.shape[1], weight.shape[0], bias is not None)
        obj.weight[...] = weight
        if bias is not None:
            obj.bias[...] = as_float_array(bias, "bias", shape=(weight.shape[0],))
        obj.init = "given"
        return obj

    def augmented(self):
        """[Phi, phi_0] (K, D + 1) with a bias, Phi otherwise (a copy)."""
        return self.weight.copy() if self.bias is None else np.hstack([self.weight, self.bias[:, None]])

    def __call__(self, x):
        """Q(x), shape (N, K)."""
        out = x @ self.weight.T
        return out if self.bias is None else out + self.bias


# ----------------------------------------------------------------------------- O2MD
class O2MD:
    """One-to-many distillation (S2.1-S2.3): one linear predictor per class mimicking a shared random target.

    Parameters
    ----------
    n_classes : int
    target : RandomLinearMap
        Q; it has a bias exactly when the predictors do.
    rng : numpy.random.Generator
        Draws the predictors' initial weights Theta_c^0.
    init : str
        One of :data:`INITS` (default ``xavier_normal``, the authors' ``mnist.conf``).

    Attributes
    ----------
    params : ndarray (C K D [+ C K],)
        Flat; ``theta`` (C, K, D) and ``beta`` (C, K) or None are views into it.
    """

    def __init__(self, n_classes, target, rng, init="xavier_normal"):
        self.n_classes = check_positive_int(n_classes, "n_classes")
        if not isinstance(target, RandomLinearMap):
            raise TypeError(f"target: expected a RandomLinearMap, received {type(target).__name__}")
        if init not in INITS:
            raise ValueError(f"init: expected one of {', '.join(INITS)}, received {init!r}")
        rng = check_generator(rng)
        self.target = target
        c, k, d = self.n_classes, target.d_out, target.d_in
        bias = target.bias is not None
        self.layout = ParamLayout([("theta", (c, k, d))] + ([("beta", (c, k))] if bias else []))
        self.params = self.layout.zeros()
        views = self.layout.views(self.params)
        self.theta = views[0]
        self.beta = views[1] if bias else None
        for cls in range(c):
            self.theta[cls] = init_weight((k, d), rng, init)
            if bias:
                self.beta[cls] = _init_bias(k, d, rng)
        self.init = init

    # ------------------------------------------------------------------ scores
    def distances(self, x, chunk=2000):
        """d_c(x) = 1/2 ||P_c(x) - Q(x)||^2 (S2.2), shape (N, C); rows in chunks of ``chunk`` to bound memory.

        With Gaussian initial rows and the closed-form fit, d_c is a K-sample estimate of
        K times the zero-target posterior predictive variance of class c at x (S2.7).
        """
        x = self._inputs(x, "x")
        out = np.empty((x.shape[0], self.n_classes))
        for cls in range(self.n_classes):
            g = (self.theta[cls] - self.target.weight).T                           # G_c^T, (D, K)
            b = None if self.beta is None else self.beta[cls] - self.target.bias
            for start in range(0, x.shape[0], chunk):
                r = x[start:start + chunk] @ g
                if b is not None:
                    r += b
                out[start:start + chunk, cls] = 0.5 * np.einsum("nk,nk->n", r, r)
        return out

    def predict(self, x):
        """argmin_c d_c(x), ties to the lowest index (S2.2); shape (N,)."""
        return np.argmin(self.distances(x), axis=1)

    # ------------------------------------------------------------------ training
    def step_loss(self, xb):
        """Loss and flat gradient of one step that shows every class one of its own examples (S2.1).

        ``xb`` (C, D): row c is an example of class c. Value
        sum_c ||Theta_c x_c + beta_c - Q(x_c)||^2 / K; gradient (2/K) r_c x_c^T for Theta_c and
        (2/K) r_c for beta_c. The classes' blocks are separate, so one optimiser step on the
        whole vector is C independent per-class steps (Adam and SGD act coordinate-wise).
        """
        k = self.target.d_out
        r = np.matmul(self.theta, xb[:, :, None])[:, :, 0] - self.target(xb)      # (C, K), C batched mat-vecs
        if self.beta is not None:
            r += self.beta
        grad = np.empty(self.layout.size)
        g = self.layout.views(grad)
        np.multiply(((2.0 / k) * r)[:, :, None], xb[:, None, :], out=g[0])     # C outer products, no temporary
        if self.beta is not None:
            g[1][...] = (2.0 / k) * r
        return float(np.sum(r * r) / k), grad

    def fit(self, x, y, method="closed_form", epochs=5, lr=1e-3, weight_decay=0.0, rng=None, monitor=None):
        """Fit every class's predictor from its current weights Theta_c^0 (the initialisation, or a previous fit).

        ``closed_form`` (S2.3): Theta_c <- Phi + (Theta_c^0 - Phi)(I - Pi_c), Pi_c the projection
        on the span of the class's (bias-augmented) inputs, one SVD per class: the limit of
        full-batch gradient descent and of batch-1 SGD with a stable step.
        ``sgd`` / ``adam``: the authors' protocol, ``epochs`` passes, one example per class per
        step, each class's order shuffled by ``rng`` every epoch; every class needs the same
        number of examples (the few-shot setting). Adam is ``kd_ref.optim.Adam(lr,
        weight_decay=...)``; SGD a constant step ``lr`` (weight decay added to its gradient).

        ``monitor``, optional callable(model) -> value, is called after every epoch; the values
        are returned (an empty list for the closed form).
        """
        x = self._inputs(x, "x")
        y = check_labels(y, "y", self.n_classes, n=x.shape[0])
        if method not in METHODS:
            raise ValueError(f"method: expected one of {', '.join(METHODS)}, received {method!r}")
        if method == "closed_form":
            self._closed_form(x, y)
            return []
        groups = _class_groups(x, y, self.n_classes)
        epochs = check_positive_int(epochs, "epochs")
        lr = check_in_range(lr, "lr", 0.0, np.inf, low_open=True)
        weight_decay = check_in_range(weight_decay, "weight_decay", 0.0, np.inf)
        rng = check_generator(rng)
        opt = Adam(lr, weight_decay=weight_decay) if method == "adam" else _DecayedSGD(lr, weight_decay)
        history = []
        for _ in range(epochs):
            self.predictor_pass(groups, rng, opt)
            if monitor is not None:
                history.append(monitor(self))
        return history

    def predictor_pass(self, groups, rng, opt):
        """One epoch of batch-1 steps (C examples, one per class, per step) in a fresh per-class order from ``rng``."""
        c, m, _ = groups.shape
        order = rng.permuted(np.tile(np.arange(m), (c, 1)), axis=1)
        rows = np.arange(c)
        for j in range(m):
            _, grad = self.step_loss(groups[rows, order[:, j]])
            opt.step(self.params, grad)

    def _closed_form(self, x, y):
        phi = self.target.augmented()
        for cls in range(self.n_classes):
            xc = x[y == cls]
            v = row_space(xc if self.beta is None else _augment(xc))       # Pi_c = V V^T
            g0 = self._augmented_predictor(cls) - phi                      # Theta_c^0 - Phi
            g = g0 - (g0 @ v) @ v.T                                        # (Theta_c^0 - Phi)(I - Pi_c)
            self.theta[cls] = phi[:, :self.target.d_in] + g[:, :self.target.d_in]
            if self.beta is not None:
                self.beta[cls] = phi[:, -1] + g[:, -1]

    def _augmented_predictor(self, cls):
        return self.theta[cls] if self.beta is None else np.hstack([self.theta[cls], self.beta[cls][:, None]])

    def _inputs(self, x, name):
        return as_float_array(x, name, ndim=2, shape=(None, self.target.d_in))


class _DecayedSGD(SGD):
    """Constant-step SGD with the same L2 convention as Adam (weight decay added to the gradient)."""

    def __init__(self, lr, weight_decay):
        super().__init__(lr)
        self.weight_decay = weight_decay

    def step(self, params, grad):
        super().step(params, grad + self.weight_decay * params if self.weight_decay else grad)


def _class_groups(x, y, n_classes):
    """x arranged as (C, m, D) by class, in the order given; every class must hold the same m >= 1 examples."""
    counts = np.bincount(y, minlength=n_classes)
    if counts.min() == 0 or np.any(counts != counts[0]):
        raise ValueError(f"y: expected the same number of examples in every class for per-example training (the "
                         f"few-shot setting), received counts {counts.tolist()}")
    return np.stack([x[y == c] for c in range(n_classes)])


class NaiveLDL(O2MD):
    """The naive variant (S2.4): each class's predictor learns to reproduce x itself (target = identity, K = D).

    By S2.3 the closed form's score is d_c = 1/2 ||(Theta_c^0 - I)(I - Pi_c) x||^2; started at
    Theta_c^0 = 0 (``zero_init=True``) it is exactly half the squared distance from x to span(X_c),
    the classical subspace method (:func:`nearest_subspace`).
    """

    def __init__(self, n_classes, d, rng, init="xavier_normal", zero_init=False):
        d = check_positive_int(d, "d")
        super().__init__(n_classes, RandomLinearMap.from_weight(np.eye(d)), rng, init)
        if zero_init:
            self.params[...] = 0.0


# ----------------------------------------------------------------------------- bidirectional
class BidirectionalDistillation(O2MD):
    """Bidirectional distillation (S2.5): the target is trained too, alternating with the predictors.

    One epoch is two passes over the training set in shuffled order, one example per step:
    (i) the target pass, one step on Phi (and phi_0) of ||Q(x) - P_y(x)||^2 / K with P_y fixed
    (from ``target_rng``, over all examples at once); (ii) the predictor pass of
    :meth:`O2MD.predictor_pass` with Q fixed. Both by Adam with the authors' settings: weight
    decay 5e-7, target lr 5e-6, predictor lr 1e-4 (their ``LDL`` experiment; ``BidirDistill``'s
    default is 5e-6), orthogonal target. With ``target_lr = 0`` this is O2MD trained by Adam.
    The spec writes the pass losses with 1/2 ||.||^2; kd_ref keeps the authors' mean over K,
    a constant factor that Adam's steps ignore (up to eps).
    """

    def target_loss(self, x, y):
        """sum_n ||Q(x_n) - P_{y_n}(x_n)||^2 / K and its flat gradient w.r.t. the target's params (pass (i))."""
        k = self.target.d_out
        r = self.target(x) - np.matmul(self.theta[y], x[:, :, None])[:, :, 0]
        if self.beta is not None:
            r -= self.beta[y]
        grad = self.target.layout.zeros()
        g = self.target.layout.views(grad)
        g[0][...] = (2.0 / k) * r.T @ x
        if self.target.bias is not None:
            g[1][...] = (2.0 / k) * r.sum(axis=0)
        return float(np.sum(r * r) / k), grad

    def fit(self, x, y, epochs=10, lr=1e-4, target_lr=5e-6, weight_decay=5e-7, rng=None, target_rng=None,
            monitor=None):
        """Train by alternating passes (S2.5); ``rng`` orders the predictor passes, ``target_rng`` (default
        ``rng``) the target passes. ``monitor(model)`` is called after every epoch; returns its values."""
        x = self._inputs(x, "x")
        y = check_labels(y, "y", self.n_classes, n=x.shape[0])
        groups = _class_groups(x, y, self.n_classes)
        epochs = check_positive_int(epochs, "epochs")
        lr = check_in_range(lr, "lr", 0.0, np.inf, low_open=True)
        target_lr = check_in_range(target_lr, "target_lr", 0.0, np.inf)
        weight_decay = check_in_range(weight_decay, "weight_decay", 0.0, np.inf)
        rng = check_generator(rng)
        target_rng = rng if target_rng is None else check_generator(target_rng, "target_rng")
        opt_p = Adam(lr, weight_decay=weight_decay)
        opt_t = Adam(target_lr, weight_decay=weight_decay) if target_lr > 0 else None    # 0: Q stays as it is
        history = []
        for _ in range(epochs):
            for i in target_rng.permutation(x.shape[0]):
                if opt_t is not None:
                    _, grad = self.target_loss(x[i:i + 1], y[i:i + 1])
                    opt_t.step(self.target.params, grad)
            self.predictor_pass(groups, rng, opt_p)
            if monitor is not None:
                history.append(monitor(self))
        return history


# ----------------------------------------------------------------------------- nearest subspace
class SubspaceClassifier:
    """Nearest-subspace classifier: d_c(x) = 1/2 ||x - Pi_c x||^2 = 1/2 (||x||^2 - ||V_c^T x||^2) (S2.4).

    ``bases[c]`` is the orthonormal basis V_c (D, r_c) of the span of class c's examples.
    """

    def __init__(self, bases):
        self.bases = bases

    def distances(self, x):
        """Shape (N, C), computed from the residual x - V V^T x (no cancellation in ||x||^2 - ||V^T x||^2)."""
        x = as_float_array(x, "x", ndim=2, shape=(None, self.bases[0].shape[0]))
        out = np.empty((x.shape[0], len(self.bases)))
        for c, v in enumerate(self.bases):
            r = x - (x @ v) @ v.T
            out[:, c] = 0.5 * np.einsum("nd,nd->n", r, r)
        return out

    def predict(self, x):
        return np.argmin(self.distances(x), axis=1)


def nearest_subspace(x_train, y_train, n_classes=None):
    """Fit a :class:`SubspaceClassifier`: one SVD basis per class (classes 0..n_classes-1, default max label + 1)."""
    x = as_float_array(x_train, "x_train", ndim=2)
    if n_classes is None:
        n_classes = int(np.max(y_train)) + 1 if np.size(y_train) else 1
    n_classes = check_positive_int(n_classes, "n_classes")
    y = check_labels(y_train, "y_train", n_classes, n=x.shape[0])
    counts = np.bincount(y, minlength=n_classes)
    if counts.min() == 0:
        raise ValueError(f"y_train: expected at least one example of every class 0..{n_classes - 1}, received none "
                         f"of class {int(np.argmin(counts))}")
    return SubspaceClassifier([row_space(x[y == c]) for c in range(n_classes)])


# ----------------------------------------------------------------------------- Bayesian reading
def _regression_inputs(x, y, noise_var, prior_mean, prior_var):
    x = as_float_array(x, "X", ndim=2)
    y = as_float_array(y, "y", shape=(x.shape[0],))
    noise_var = check_in_range(noise_var, "noise_var", 0.0, np.inf, low_open=True)
    prior_var = check_in_range(prior_var, "prior_var", 0.0, np.inf, low_open=True)
    prior_mean = as_float_array(prior_mean, "prior_mean")
    if prior_mean.ndim == 0:
        prior_mean = np.full(x.shape[1], float(prior_mean))
    elif prior_mean.shape != (x.shape[1],):
        raise ValueError(f"prior_mean: expected a number or shape ({x.shape[1]},), received shape {prior_mean.shape}")
    # the stacked design of the regularised least squares: ||(y - X theta)/sigma||^2 + ||(theta - mean)/sqrt(lam)||^2
    design = np.vstack([x / np.sqrt(noise_var), np.eye(x.shape[1]) / np.sqrt(prior_var)])
    return x, y, noise_var, prior_mean, prior_var, design


def bayes_linear_posterior(X, y, noise_var, prior_mean, prior_var):
    """Exact posterior N(mu_N, Sigma_N) of y = theta^T x + eps, eps ~ N(0, noise_var), theta ~ N(prior_mean, prior_var I).

    Sigma_N = (X^T X / sigma^2 + I / lambda)^{-1}, mu_N = Sigma_N (X^T y / sigma^2 + theta_bar / lambda) (S2.6),
    both from the SVD of the stacked design A = [X / sigma; I / sqrt(lambda)] (A^T A is the
    precision): Sigma_N = V S^-2 V^T and mu_N the least-squares solution, no explicit inverse.

    Returns
    -------
    mean (D,), cov (D, D)
    """
    x, y, noise_var, prior_mean, prior_var, design = _regression_inputs(X, y, noise_var, prior_mean, prior_var)
    _, s, vt = np.linalg.svd(design, full_matrices=False)
    cov = (vt.T / s**2) @ vt
    rhs = np.concatenate([y / np.sqrt(noise_var), prior_mean / np.sqrt(prior_var)])
    mean = np.linalg.lstsq(design, rhs, rcond=None)[0]
    return mean, cov


def rpf_posterior_samples(X, y, noise_var, prior_mean, prior_var, n, rng, target_noise=True):
    """``n`` exact posterior draws by randomized prior functions (S2.6; Osband, Aslanides & Cassirer 2018).

    Each draw perturbs the problem and solves it: theta_tilde ~ N(prior_mean, lambda I),
    y_tilde = y + eps_tilde with eps_tilde ~ N(0, sigma^2), then
    theta* = argmin sum_i (y_tilde_i - theta^T x_i)^2 / sigma^2 + ||theta - theta_tilde||^2 / lambda,
    which is distributed exactly as N(mu_N, Sigma_N). All n problems share one design, so
    they are one least-squares call with n right-hand sides. ``target_noise=False`` drops
    eps_tilde (the control of the tests: its draws are too concentrated).

    Returns
    -------
    ndarray (n, D)
    """
    x, y, noise_var, prior_mean, prior_var, design = _regression_inputs(X, y, noise_var, prior_mean, prior_var)
    n = check_positive_int(n, "n")
    rng = check_generator(rng)
    n_obs, d = x.shape
    theta_tilde = prior_mean[:, None] + np.sqrt(prior_var) * rng.standard_normal((d, n))
    y_tilde = np.repeat(y[:, None], n, axis=1)
    if target_noise:
        y_tilde = y_tilde + np.sqrt(noise_var) * rng.standard_normal((n_obs, n))
    rhs = np.vstack([y_tilde / np.sqrt(noise_var), theta_tilde / np.sqrt(prior_var)])
    return np.linalg.lstsq(design, rhs, rcond=None)[0].T
