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
        net, x, lambda xx: out.value(net.predict(xx)), lambda xx: net.grad(xx, out)[1:],
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


# ------------------------------------------------------------------ validation gaps (issue 11)
@pytest.mark.parametrize("step", [0.0, -1e-4, np.inf, np.nan])
def test_step_sizes_must_be_finite_and_positive(step, rng):
    x, v = rng.normal(size=(2, 3))
    match = r"step: expected a value in \(0.0, inf\)"
    with pytest.raises(ValueError, match=match):
        gradcheck.check_gradient(f, grad, x, step=step)
    with pytest.raises(ValueError, match=match):
        gradcheck.check_hvp(grad, hvp, x, v, step=step)
    with pytest.raises(ValueError, match=match):
        gradcheck.numerical_gradient(f, x, step=step)
    with pytest.raises(ValueError, match=match):
        gradcheck.directional_difference(f, x, v, step=step)
    with pytest.raises(TypeError, match="step: expected a real number, received True"):
        gradcheck.check_gradient(f, grad, x, step=True)


def test_complex_points_and_results_are_refused(rng):
    """A complex-step user function would otherwise be compared on its real part only, silently."""
    x, v, u = rng.normal(size=(3, 4))
    with pytest.raises(TypeError, match="x: expected real numbers, received a complex array"):
        gradcheck.check_gradient(f, grad, x + 1j)
    with pytest.raises(TypeError, match="v: expected real numbers, received a complex array"):
        gradcheck.check_hvp(grad, hvp, x, v * 1j)
    with pytest.raises(TypeError, match=r"f\(x\): expected real numbers, received a complex array"):
        gradcheck.check_gradient(lambda z: np.complex128(f(z)), grad, x)
    with pytest.raises(TypeError, match=r"grad\(x\): expected real numbers"):
        gradcheck.check_gradient(f, lambda z: grad(z) + 0j, x)
    with pytest.raises(TypeError, match=r"hvp\(x, v\): expected real numbers"):
        gradcheck.check_hvp(grad, lambda z, w: hvp(z, w) + 0j, x, v)
    with pytest.raises(TypeError, match=r"hvp\(x, v\): expected real numbers"):
        gradcheck.check_symmetry(lambda z, w: hvp(z, w) + 0j, x, u, v)
    with pytest.raises(TypeError, match="analytic: expected real numbers"):
        gradcheck.relative_error(np.ones(2) * 1j, np.ones(2))


def test_callables_shapes_and_empty_checks_are_refused(rng):
    x, v, u = rng.normal(size=(3, 4))
    with pytest.raises(TypeError, match="grad: expected a callable x -> gradient of the shape of x, received 3"):
        gradcheck.check_gradient(f, 3, x)
    with pytest.raises(TypeError, match="f: expected a callable"):
        gradcheck.check_gradient(None, grad, x)
    with pytest.raises(TypeError, match="hvp: expected a callable"):
        gradcheck.check_hvp(grad, "hvp", x, v)
    with pytest.raises(ValueError, match=r"hvp\(x, u\): expected shape \(4,\), received shape \(3,\)"):
        gradcheck.check_symmetry(lambda z, w: w if w is v else w[:3], x, u, v)
    # no directions and an empty point would make checks that always pass
    with pytest.raises(ValueError, match=r"directions: expected shape \(K,\) \+ \(4,\) with K >= 1, received shape \(0, 4\)"):
        gradcheck.check_gradient(f, grad, x, directions=np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"x: expected at least one entry to check, received shape \(0,\)"):
        gradcheck.check_gradient(f, grad, np.zeros(0))
    with pytest.raises(ValueError, match="scale: expected a value in"):
        gradcheck.relative_error(np.ones(2), np.ones(2), scale=0.0)
    with pytest.raises(TypeError, match="model: expected a model with a flat params vector and set_params"):
        gradcheck.over_params_and_input(object(), x, f, grad)
    with pytest.raises(ValueError, match=r"hvp\(x, v\): expected finite values, received 4 NaN"):
        gradcheck.check_hvp(grad, lambda z, w: np.full(4, np.nan), x, v)
    with pytest.raises(ValueError, match=r"hvp\(x, v\): expected finite values, received 4 NaN"):
        gradcheck.check_symmetry(lambda z, w: np.full(4, np.nan), x, u, v)
