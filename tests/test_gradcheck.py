"""The finite-difference harness itself: it must pass true derivatives and catch wrong ones."""
import numpy as np
import pytest

from kd_ref import gradcheck


def f(x):
    return np.sum(np.sin(x) * x**2)


def grad(x):
    return np.cos(x) * x**2 + 2 * x * np.sin(x)


def hvp(x, v):
    return (-np.sin(x) * x**2 + 4 * x * np.cos(x) + 2 * np.sin(x)) * v


def test_true_derivatives_pass(rng):
    x, v, u = rng.normal(size=(3, 6))
    assert gradcheck.check_gradient(f, grad, x).rel_error < 1e-9
    assert gradcheck.check_gradient(f, grad, x, directions=rng.normal(size=(4, 6))).rel_error < 1e-9
    assert gradcheck.check_hvp(grad, hvp, x, v).rel_error < 1e-9
    assert gradcheck.check_symmetry(hvp, x, u, v).rel_error < 1e-12


def test_wrong_derivatives_fail(rng):
    """The control: a gradient off by 1e-4 in one coordinate and a non-symmetric 'Hessian' are caught."""
    x, v, u = rng.normal(size=(3, 6))
    bad = lambda z: grad(z) + 1e-4 * (np.arange(6) == 2)
    result = gradcheck.check_gradient(f, bad, x)
    assert not result.passed(1e-6)
    assert "analytic" in str(result) and "numeric" in str(result)
    assert not gradcheck.check_hvp(grad, lambda z, w: 1.001 * hvp(z, w), x, v).passed(1e-5)
    M = rng.normal(size=(6, 6))
    assert not gradcheck.check_symmetry(lambda z, w: M @ w, x, u, v).passed(1e-6)


def test_over_params_and_input_restores_the_model_and_checks_joint_derivatives(rng):
    """E = sum (x W^T)^2 / 2 over z = (W, x): the helper's functions agree with differences and leave W as it was."""
    from kd_ref.mlp import MLP
    from kd_ref.outputs import SquareError

    net = MLP([3, 2], ["linear"], rng)
    x, out = rng.normal(size=(4, 3)), SquareError(np.zeros((4, 2)))
    before = net.params.copy()
    value, grad, hvp, z = gradcheck.over_params_and_input(
        net, x, lambda xx: out.value(net.predict(xx)), lambda xx: net.gradient(xx, out)[1:],
        lambda xx, vp, vx: net.hvp(xx, out, vp, vx))
    np.testing.assert_array_equal(z, np.concatenate([before, x.ravel()]))
    assert gradcheck.check_gradient(value, grad, z).rel_error < 1e-9
    assert gradcheck.check_hvp(grad, hvp, z, rng.normal(size=z.shape)).rel_error < 1e-9
    value(z + 1.0)
    np.testing.assert_array_equal(net.params, before)

    def failing(xx):
        raise RuntimeError("inside")

    value_fail = gradcheck.over_params_and_input(net, x, failing, grad)[0]
    with pytest.raises(RuntimeError, match="inside"):
        value_fail(z + 1.0)
    np.testing.assert_array_equal(net.params, before)
    # parameters set after the helper was built are the ones restored
    net.set_params(before + 0.5)
    value(z)
    np.testing.assert_array_equal(net.params, before + 0.5)
    assert gradcheck.over_params_and_input(net, x, value, grad)[2] is None
