"""The model protocol of README ("Model protocol"): MLP, NADE and RBM answer the same verbs the same way."""
import inspect

import numpy as np
import pytest

from kd_ref.mlp import MLP
from kd_ref.nade import NADE
from kd_ref.outputs import DotProduct
from kd_ref.rbm import RBM

KEYWORD_ONLY = {"param_grads", "input_grads"}
DENSITY_KEYWORD_ONLY = KEYWORD_ONLY | {"weights", "continuous"}


def _parts(method):
    params = list(inspect.signature(method).parameters.values())[1:]          # without self
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    keyword_only = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
    return positional, keyword_only


def _models(rng):
    return [MLP([3, 4, 2], ["logistic", "log_softmax"], rng), NADE(3, 4, rng, init_std=1.0),
            RBM(3, 4, rng, init_std=1.0)]


def test_signatures_follow_the_protocol():
    assert _parts(MLP.grad) == (["x", "output"], KEYWORD_ONLY)
    assert _parts(MLP.hvp) == (["x", "output", "v_params", "v_x"], KEYWORD_ONLY)
    for cls in (NADE, RBM):
        assert _parts(cls.grad) == (["x"], DENSITY_KEYWORD_ONLY), cls
        assert _parts(cls.hvp) == (["x", "v_params", "v_x"], DENSITY_KEYWORD_ONLY), cls
        assert _parts(cls.__init__)[0][-1] == "rng" and "rng" in inspect.signature(cls).parameters
    for cls in (MLP, NADE, RBM):
        assert inspect.signature(cls).parameters["rng"].default is inspect.Parameter.empty, cls  # explicit everywhere
        for verb in ("param_views", "set_params", "save"):
            assert callable(getattr(cls, verb)), (cls, verb)
        assert inspect.ismethod(cls.load), cls                                 # a class method


def test_weights_and_options_are_refused_positionally():
    rng = np.random.default_rng(0)
    x = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    net, nade, rbm = _models(rng)
    with pytest.raises(TypeError):
        net.grad(x, DotProduct(np.ones((2, 2))), False)
    for model in (nade, rbm):
        with pytest.raises(TypeError):
            model.grad(x, np.ones(2))
        with pytest.raises(TypeError):
            model.hvp(x, None, np.ones_like(x), np.ones(2))


def test_none_rng_gives_zero_parameters_and_load_needs_no_generator(tmp_path):
    for model in (MLP([3, 4, 2], ["relu", "linear"], None), NADE(3, 4, None), RBM(3, 4, None)):
        assert model.params.shape == (model.n_params,) and not np.any(model.params)
    net = _models(np.random.default_rng(1))[0]
    net.save(tmp_path / "net.npz")
    np.testing.assert_array_equal(MLP.load(tmp_path / "net.npz").params, net.params)


def test_same_returns_on_every_model():
    """(value, d_params, d_x) and (Hv_params, Hv_x); a part not asked for is None; a zero direction gives zeros."""
    rng = np.random.default_rng(2)
    x = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    net, nade, rbm = _models(rng)
    out = DotProduct(rng.normal(size=(2, 2)))
    calls = [(net, lambda **kw: net.grad(x, out, **kw), lambda *v, **kw: net.hvp(x, out, *v, **kw)),
             (nade, lambda **kw: nade.grad(x, **kw), lambda *v, **kw: nade.hvp(x, *v, **kw)),
             (rbm, lambda **kw: rbm.grad(x, **kw), lambda *v, **kw: rbm.hvp(x, *v, **kw))]
    for model, grad, hvp in calls:
        _, d_params, d_x = grad()
        assert d_params.shape == (model.n_params,) and d_x.shape == x.shape, model
        assert grad(param_grads=False)[1] is None and grad(input_grads=False)[2] is None, model
        v_params = rng.normal(size=model.n_params)
        Hv_params, Hv_x = hvp(v_params, None)
        assert Hv_params.shape == (model.n_params,) and Hv_x.shape == x.shape and np.any(Hv_params), model
        assert hvp(v_params, None, param_grads=False)[0] is None and hvp(v_params, None, input_grads=False)[1] is None
        zero_params, zero_x = hvp(None, None)
        np.testing.assert_array_equal(zero_params, np.zeros(model.n_params))
        np.testing.assert_array_equal(zero_x, np.zeros(x.shape))
        assert [view.shape for view in model.param_views(d_params)] == [view.shape for view in
                                                                         model.param_views(model.params)]
