"""Feed-forward networks with hand-written backprop and R{backprop} (Appendix B).

Notation (rows of a batch are examples, so the thesis's W x becomes x W^T):

    x_0 = input                                                  shape (N, D_0)
    a_l = x_{l-1} W_l^T + b_l                      (B.2, B.6)    shape (N, D_l)
    x_l = f_l(a_l)                                 (B.3, B.7)
    y   = x_L,  E = E(y) summed over rows          (B.5)

W_l has shape (D_l, D_{l-1}) and b_l shape (D_l,). All weights and biases live in
one flat vector ``params`` in the order W_1, b_1, W_2, b_2, ... (``layout``, a
:class:`kd_ref.params.ParamLayout` with blocks "W1", "b1", ...); the per-layer
arrays ``W[l]`` and ``b[l]`` (0-based lists) are views into it.

Costs, in units of one layer's matrix product over the batch: forward 1,
backprop 2 (B.9 and B.10; 1 when only the input gradient is wanted),
R{backprop} 4 to 7 depending on which parts of the direction are non-zero.
"""
from dataclasses import dataclass

import numpy as np

from . import nonlinearities as nl
from . import npzfile
from ._validation import as_float_array, check_bool, check_generator, check_indices, check_positive_int
from .outputs import CrossEntropy, DotProduct
from .params import ParamLayout


FILE_KIND = "kd_ref.MLP"
FILE_VERSION = 1


@dataclass
class Cache:
    """Forward quantities kept for backprop: ``x[l]`` (l = 0..L) and ``a[l-1]`` = a_l (l = 1..L)."""

    x: list
    a: list

    @property
    def y(self):
        """The network output x_L, shape (N, D_L)."""
        return self.x[-1]


@dataclass
class RCache:
    """R-forward quantities (B.12-B.14): ``R_x[l]`` (None when zero) and ``R_a[l-1]`` = R{a_l}.

    ``has_v_params`` records whether the direction had a parameter part.
    """

    R_x: list
    R_a: list
    V: list
    v_b: list
    has_v_params: bool

    @property
    def R_y(self):
        return self.R_x[-1]


class MLP:
    """A feed-forward network: ``sizes = [D_0, ..., D_L]`` and one nonlinearity per layer.

    Parameters
    ----------
    sizes : sequence of int, length L + 1
        Widths of the input, hidden and output layers.
    nonlinearities : sequence of str, length L
        Names from ``kd_ref.nonlinearities.NONLINEARITIES``: linear, relu, logistic,
        probit, softmax, log_softmax.
    rng : numpy.random.Generator or None
        Draws the initial weights, N(0, s^2 / D_{l-1}) with s = sqrt(2) before a ReLU
        and 1 otherwise; biases start at zero. ``None``: every parameter starts at 0
        (for :meth:`load`, or to set them yourself). Required, as on every model.

    Attributes
    ----------
    params : ndarray of shape (P,)
    layout : kd_ref.params.ParamLayout     the blocks W1, b1, ..., WL, bL of params
    W, b : lists of L views of params      W[l] of shape (D_{l+1}, D_l), b[l] of shape (D_{l+1},)

    Notes
    -----
    The model protocol (README, "Model protocol"): a conditional model, so the second
    argument of :meth:`grad` and :meth:`hvp` is the output function E, which carries the
    targets; ``grad(x, output, *, param_grads, input_grads) -> (E, d_params, d_x)`` and
    ``hvp(x, output, v_params, v_x, *, param_grads, input_grads) -> (Hv_params, Hv_x)``
    as on NADE and RBM, ``param_views``, ``save``, ``load``.

    Examples
    --------
    >>> import numpy as np
    >>> net = MLP([3, 4, 2], ["relu", "log_softmax"], np.random.default_rng(0))
    >>> net.forward(np.ones((5, 3))).y.shape
    (5, 2)
    """

    def __init__(self, sizes, nonlinearities, rng):
        sizes = [check_positive_int(s, f"sizes[{i}]") for i, s in enumerate(sizes)]
        if len(sizes) < 2:
            raise ValueError(f"sizes: expected at least 2 widths (input and output), received {sizes}")
        nonlinearities = list(nonlinearities)
        if len(nonlinearities) != len(sizes) - 1:
            raise ValueError(f"nonlinearities: expected {len(sizes) - 1} names (one per layer), "
                             f"received {len(nonlinearities)}")
        self.f = [nl.get(name) for name in nonlinearities]
        if rng is not None:
            check_generator(rng)
        self.sizes = sizes
        self.layout = ParamLayout([block for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1)
                                   for block in ((f"W{l}", (n_out, n_in)), (f"b{l}", (n_out,)))])
        self.params = self.layout.zeros()
        self.W, self.b = self._layers(self.params)
        for W, f in zip(self.W if rng is not None else (), self.f):
            gain = np.sqrt(2.0) if f.name == "relu" else 1.0
            W[...] = rng.normal(0.0, gain / np.sqrt(W.shape[1]), size=W.shape)

    # ------------------------------------------------------------ parameters
    @property
    def nonlinearities(self):
        return [f.name for f in self.f]

    @property
    def n_layers(self):
        return len(self.sizes) - 1

    @property
    def n_params(self):
        return self.layout.size

    def param_views(self, flat):
        """Views (W_1, b_1, ..., W_L, b_L) into any flat vector laid out like ``params``
        (a gradient or a direction, say); ``layout.slice("W1")`` gives one block's slice."""
        return self.layout.views(flat)

    def _layers(self, flat):
        """The views of :meth:`param_views` as per-layer lists (Ws, bs)."""
        views = self.param_views(flat)
        return list(views[0::2]), list(views[1::2])

    def set_params(self, flat):
        """Copy a flat vector of length ``n_params`` into ``params`` (views stay valid)."""
        flat = as_float_array(flat, "params", shape=(self.n_params,))
        self.params[...] = flat

    def _direction(self, v, name):
        if v is None:
            return None
        return as_float_array(v, name, shape=(self.n_params,))

    def _input(self, x, name="x"):
        return as_float_array(x, name, shape=(None, self.sizes[0]))

    # --------------------------------------------------------------- forward
    def forward(self, x):
        """Forward pass (B.2-B.7) keeping every a_l and x_l.

        Parameters
        ----------
        x : ndarray of shape (N, D_0)

        Returns
        -------
        Cache
            ``cache.y`` is the output, shape (N, D_L).
        """
        xs, As = [self._input(x)], []
        for W, b, f in zip(self.W, self.b, self.f):
            a = xs[-1] @ W.T
            a += b
            As.append(a)
            xs.append(f.forward(a))
        return Cache(xs, As)

    def predict(self, x):
        """The output y for a batch x of shape (N, D_0)."""
        return self.forward(x).y

    # -------------------------------------------------------------- backprop
    def _seed(self, cache, d_y, d_a, names):
        """Check that exactly one of the seeds at y (B.8) and at a_L was given."""
        if (d_y is None) == (d_a is None):
            raise ValueError(f"{names[0]}, {names[1]}: expected exactly one seed (at the output y or at the "
                             f"last pre-activation a_L), received {'both' if d_a is not None else 'neither'}")
        if d_a is not None:
            return None, as_float_array(d_a, names[1], shape=cache.a[-1].shape)
        return as_float_array(d_y, names[0], shape=cache.y.shape), None

    def backprop(self, cache, d_y=None, *, param_grads=True, input_grads=True, d_a=None):
        """Backward pass (B.8-B.11) for an output-function seed d_y = dE/dy, or d_a = dE/da_L.

        Parameters
        ----------
        cache : Cache
            From ``forward``.
        d_y : ndarray of shape (N, D_L)
            dE/dy; the recursion starts at y (B.8 through the last nonlinearity).
        param_grads : bool, keyword only
            When False the weight gradients (B.9, the costly products) are skipped
            and ``d_params`` is None.
        input_grads : bool, keyword only
            When False the last B.10 product, dE/dx_0 = dE/da_1 W_1, is skipped and
            ``d_x`` is None (training needs only the parameter part).
        d_a : ndarray of shape (N, D_L), keyword only
            dE/da_L instead of d_y: the recursion starts below the last
            nonlinearity. This is how a fused output form (``output.fused(f)``,
            exact where y saturates) enters. Give exactly one of d_y and d_a.

        Returns
        -------
        d_params : ndarray of shape (n_params,) or None
            dE/dtheta for E summed over the batch, laid out like ``params``.
        d_x : ndarray of shape (N, D_0) or None
            dE/dx for every row.
        """
        d_x, d_a = self._seed(cache, d_y, d_a, ("d_y", "d_a"))
        d_params = np.zeros(self.n_params) if param_grads else None
        dW, db = self._layers(d_params) if param_grads else (None, None)
        for l in reversed(range(self.n_layers)):
            if d_a is None:
                d_a = self.f[l].backward(cache.a[l], cache.x[l + 1], d_x)  # B.8 (B.11)
            if param_grads:
                np.matmul(d_a.T, cache.x[l], out=dW[l])                     # B.9
                db[l][...] = d_a.sum(axis=0)
            d_x = d_a @ self.W[l] if l > 0 or input_grads else None        # B.10
            d_a = None
        return d_params, d_x

    def grad(self, x, output, *, param_grads=True, input_grads=True):
        """Value and gradient of an output function at x.

        When the output function has a fused form for the last nonlinearity
        (``output.fused(self.f[-1])``: a cross entropy on a softmax, logistic or
        probit output, a dot product on a log-softmax output), E and the seed
        dE/da_L come from the pre-activation a_L, exact however saturated the
        output; otherwise backprop starts from dE/dy (B.8).

        Parameters
        ----------
        x : ndarray of shape (N, D_0)
        output : OutputFunction
            E.g. ``kd_ref.outputs.DotProduct(t)``.
        param_grads, input_grads : bool, keyword only
            Which parts of the gradient to compute (see :meth:`backprop`).

        Returns
        -------
        value : float
            E summed over the batch.
        d_params : ndarray of shape (n_params,) or None
        d_x : ndarray of shape (N, D_0) or None
        """
        parts = {"param_grads": check_bool(param_grads, "param_grads"),
                 "input_grads": check_bool(input_grads, "input_grads")}
        cache = self.forward(x)
        fused = output.fused(self.f[-1])
        if fused is None:
            d_params, d_x = self.backprop(cache, output.grad(cache.y), **parts)
            return output.value(cache.y), d_params, d_x
        a_L = cache.a[-1]
        d_params, d_x = self.backprop(cache, d_a=fused.grad(a_L), **parts)
        return fused.value(a_L), d_params, d_x

    def jacobian(self, x, outputs=None, log=False):
        """Rows of the input Jacobian, dy_i/dx (or d log y_i/dx), by one backprop per output i.

        Row i is the input gradient of E_i = sum_n y_ni (a dot product with e_i), or
        of E_i = sum_n log y_ni (a cross entropy with e_i) when ``log``; both go
        through the fused form when one exists, so d log y_i/dx of a softmax,
        logistic or probit output and dy_i/dx of a log-softmax output are taken
        from a_L and stay exact where y saturates.

        Parameters
        ----------
        x : ndarray of shape (N, D_0)
        outputs : sequence of int, optional
            Output indices i (default: all D_L of them).
        log : bool
            Differentiate log y_i instead of y_i. For a log-softmax output layer, y
            already is a log-probability: use log=False. Other outputs need y > 0,
            and the seed is e_i / y_i.

        Returns
        -------
        ndarray of shape (N, len(outputs), D_0)
        """
        cache = self.forward(x)
        outputs = range(self.sizes[-1]) if outputs is None else check_indices(outputs, "outputs", self.sizes[-1])
        kind = CrossEntropy if log else DotProduct
        rows = []
        for i in outputs:
            e_i = np.zeros_like(cache.y)
            e_i[:, i] = 1.0
            out = kind(e_i)                                  # E_i = sum_n log y_ni, or sum_n y_ni
            fused = out.fused(self.f[-1])
            if fused is not None:
                rows.append(self.backprop(cache, None, param_grads=False, d_a=fused.grad(cache.a[-1]))[1])
                continue
            if log and np.any(cache.y <= 0):
                raise ValueError("log: expected positive outputs to take d log y/dx, received outputs <= 0 "
                                 f"(last nonlinearity is {self.f[-1].name})")
            rows.append(self.backprop(cache, out.grad(cache.y), param_grads=False)[1])
        return np.stack(rows, axis=1)

    # ------------------------------------------------------------ R{backprop}
    def r_forward(self, cache, v_params=None, v_x=None):
        """Forward phase of R{backprop} (B.12-B.14) along v = (v_params, v_x).

        A zero part may be passed as None; then the reduced form (B.19-B.21) runs and
        the products with it are skipped.

        Parameters
        ----------
        cache : Cache
        v_params : ndarray of shape (n_params,), optional
        v_x : ndarray of shape (N, D_0), optional

        Returns
        -------
        RCache
        """
        v_params = self._direction(v_params, "v_params")
        R_x = None if v_x is None else as_float_array(v_x, "v_x", shape=cache.x[0].shape)
        V, v_b = self._layers(v_params) if v_params is not None else (None, None)
        R_xs, R_as = [R_x], []
        for l in range(self.n_layers):
            R_a = np.zeros_like(cache.a[l]) if R_x is None else R_x @ self.W[l].T  # B.12: W R{x}
            if v_params is not None:
                R_a += cache.x[l] @ V[l].T + v_b[l]                                # B.12: V x + v_b
            R_as.append(R_a)
            R_x = self.f[l].r_forward(cache.a[l], cache.x[l + 1], R_a)            # B.13 (B.14)
            R_xs.append(R_x)
        return RCache(R_xs, R_as, V, v_b, v_params is not None)

    def r_backprop(self, cache, rcache, d_y=None, R_d_y=None, *, param_grads=True, input_grads=True, d_a=None,
                   R_d_a=None):
        """Backward phase of R{backprop} (B.15-B.18).

        Parameters
        ----------
        cache : Cache
        rcache : RCache
            From ``r_forward``.
        d_y : ndarray of shape (N, D_L)
            dE/dy.
        R_d_y : ndarray of shape (N, D_L)
            R{dE/dy} = (d^2E/dy^2) R{y}; zero for an output function linear in y.
        param_grads : bool, keyword only
            When False only the input part is returned (``R_d_params`` is None).
        input_grads : bool, keyword only
            When False the input part (the last B.17 products) is skipped and
            ``R_d_x`` is None: derivative matching (2.9-2.13) reads only the parameter part.
        d_a, R_d_a : ndarray of shape (N, D_L), keyword only
            dE/da_L and R{dE/da_L} instead of d_y and R_d_y: the recursion starts
            below the last nonlinearity (a fused output form, ``output.fused(f)``).
            Give either the pair at y or the pair at a_L.

        Returns
        -------
        R_d_params : ndarray of shape (n_params,) or None
            Parameter part of H v.
        R_d_x : ndarray of shape (N, D_0) or None
            Input part of H v, per row.
        """
        d_x, d_a = self._seed(cache, d_y, d_a, ("d_y", "d_a"))
        R_d_x, R_d_a = self._seed(cache, R_d_y, R_d_a, ("R_d_y", "R_d_a"))
        if (d_a is None) != (R_d_a is None):
            raise ValueError("d_a, R_d_a: expected both seeds at the same place (d_y with R_d_y, or d_a with R_d_a), "
                             f"received {'d_a with R_d_y' if R_d_a is None else 'd_y with R_d_a'}")
        R_d_params = np.zeros(self.n_params) if param_grads else None
        R_dW, R_db = self._layers(R_d_params) if param_grads else (None, None)
        for l in reversed(range(self.n_layers)):
            a, x_out, x_in = cache.a[l], cache.x[l + 1], cache.x[l]
            if d_a is None:
                d_a = self.f[l].backward(a, x_out, d_x)                              # B.8 (B.11)
                R_d_a = self.f[l].r_backward(a, x_out, d_x, rcache.R_a[l], R_d_x)    # B.15 (B.18)
            if param_grads:
                np.matmul(R_d_a.T, x_in, out=R_dW[l])                                # B.16
                if rcache.R_x[l] is not None:
                    R_dW[l] += d_a.T @ rcache.R_x[l]
                R_db[l][...] = R_d_a.sum(axis=0)
            if l == 0 and not input_grads:
                return R_d_params, None
            R_d_x = R_d_a @ self.W[l]                                                # B.17
            if rcache.has_v_params:
                R_d_x += d_a @ rcache.V[l]
            if l > 0:
                d_x = d_a @ self.W[l]                                                # B.10
            d_a = R_d_a = None
        return R_d_params, R_d_x

    def hvp(self, x, output, v_params=None, v_x=None, *, param_grads=True, input_grads=True):
        """Hessian-vector product of E over (params, x) along v = (v_params, v_x).

        H is the joint Hessian of E (summed over the batch) with respect to the
        parameters and every input row; None stands for a zero part of v, and the
        reduced forms (B.19-B.21) are used then (both None: zeros). As in
        :meth:`grad`, a fused output form seeds the backward phase at a_L with
        dE/da_L and R{dE/da_L}. Costs about two to three times one ``grad`` call.

        Parameters
        ----------
        x : ndarray of shape (N, D_0)
        output : OutputFunction
        v_params : ndarray of shape (n_params,) or None
        v_x : ndarray of shape (N, D_0) or None
        param_grads, input_grads : bool, keyword only
            Which parts of H v to return.

        Returns
        -------
        Hv_params : ndarray of shape (n_params,) or None
        Hv_x : ndarray of shape (N, D_0) or None
            None when ``param_grads`` / ``input_grads`` is False.
        """
        parts = {"param_grads": check_bool(param_grads, "param_grads"),
                 "input_grads": check_bool(input_grads, "input_grads")}
        cache = self.forward(x)
        if v_params is None and v_x is None:                                  # H 0 = 0, as on NADE and RBM
            return (np.zeros(self.n_params) if parts["param_grads"] else None,
                    np.zeros(cache.x[0].shape) if parts["input_grads"] else None)
        rcache = self.r_forward(cache, v_params, v_x)
        fused = output.fused(self.f[-1])
        if fused is None:
            return self.r_backprop(cache, rcache, output.grad(cache.y), output.r_grad(cache.y, rcache.R_y), **parts)
        a_L, R_a_L = cache.a[-1], rcache.R_a[-1]
        return self.r_backprop(cache, rcache, d_a=fused.grad(a_L), R_d_a=fused.r_grad(a_L, R_a_L), **parts)

    # ------------------------------------------------------------ save/load
    def __reduce__(self):
        # pickled as sizes, names and parameters (for kd_ref.jobs' worker processes): pickle's default would
        # copy W and b apart from params, so that training params would no longer change the layers
        return _mlp_from_params, (self.sizes, self.nonlinearities, self.params.copy())

    def save(self, path):
        """Write sizes, nonlinearity names and parameters to ``path`` (.npz at exactly that name, no pickle)."""
        npzfile.save(path, FILE_KIND, FILE_VERSION, sizes=np.array(self.sizes),
                      nonlinearities=np.array(self.nonlinearities), params=self.params)

    @staticmethod
    def _read(path):
        saved = npzfile.load(path, FILE_KIND, {FILE_VERSION}, required=("sizes", "nonlinearities", "params"))
        if saved["params"].dtype != np.float64 or saved["params"].ndim != 1:
            raise ValueError(f"path: expected params as a 1-d float64 array in {str(path)!r}, received "
                             f"{saved['params'].dtype} of shape {saved['params'].shape}")
        return saved

    @classmethod
    def load(cls, path):
        """A new network from a file written by ``save``; parameters round-trip bit for bit."""
        saved = cls._read(path)
        net = cls(saved["sizes"].tolist(), saved["nonlinearities"].tolist(), None)
        net.set_params(saved["params"])
        return net

    def restore(self, path):
        """Load parameters saved from a network of the same architecture into this one.

        Raises ValueError, leaving this network unchanged, when the file is unreadable
        or its architecture differs.
        """
        saved = self._read(path)
        sizes, names = saved["sizes"].tolist(), saved["nonlinearities"].tolist()
        if sizes != self.sizes or names != self.nonlinearities:
            raise ValueError(f"path: expected a network {self.sizes} {self.nonlinearities}, "
                             f"{str(path)!r} holds {sizes} {names}")
        self.set_params(saved["params"])

    def __repr__(self):
        return f"MLP(sizes={self.sizes}, nonlinearities={self.nonlinearities})"


def _mlp_from_params(sizes, nonlinearities, params):
    net = MLP(sizes, nonlinearities, None)
    net.set_params(params)
    return net
