"""The one distillation protocol of chapters 2-4 (kd_ref.distill): loss registries, minibatch averages, the loop."""
import numpy as np
import pytest

from kd_ref.distill import distill, objective
from kd_ref.distill import compression, generative, predictive
from kd_ref.mlp import MLP
from kd_ref.nade import NADE
from kd_ref.optim import SGD, Adadelta, train
from kd_ref.rbm import RBM


def _chapter_cases(rng):
    """(chapter, registry name, loss, student, x, teacher as x -> targets, number of trained parameters)."""
    n = 5
    student2 = MLP([3, 4, 3], ["logistic", "log_softmax"], rng)
    teacher2 = compression.MLPTeacher(MLP([3, 5, 3], ["logistic", "log_softmax"], rng))
    x2 = rng.normal(size=(n, 3))
    student3 = predictive.compact_predictor(3, 2, rng, init_scale=1.0)
    teacher3 = predictive.mc_predictor(2.0 * rng.normal(size=(7, 2)))
    x3 = 2.0 * rng.normal(size=(n, 2))
    student4 = NADE(4, 3, rng, init_std=1.0)
    rbm = RBM(4, 2, rng, init_std=1.0)
    x4 = (rng.random((n, 4)) < 0.5).astype(np.float64)
    made = {"se": dict(c=-1.0)}                                          # chapter 4's square error takes c
    for chapter, module, student, teacher, x, p in (
            (2, compression, student2, teacher2, x2, student2.n_params),
            (3, predictive, student3, teacher3, x3, student3.layout.slice("W1").stop - student3.layout.slice("W1").start),
            (4, generative, student4, rbm, x4, student4.n_params)):
        for name, cls in module.LOSSES.items():
            loss = cls(**(made.get(name, {}) if chapter == 4 else {}))
            yield chapter, name, loss, student, x, module.teacher_targets(student, teacher, loss), p


def test_every_registry_has_one_shape_and_every_loss_averages_over_the_minibatch():
    """LOSSES maps short names to classes; each loss(student, x, targets) returns (float, (P,) gradient) whose
    value and gradient are the means over the minibatch of the one-example values and gradients."""
    cases = list(_chapter_cases(np.random.default_rng(0)))
    assert sorted({c[0] for c in cases}) == [2, 3, 4] and len(cases) == 3 + 2 + 3
    for chapter, name, loss, student, x, teacher, p in cases:
        where = f"chapter {chapter} loss {name!r}"
        assert isinstance(loss.name, str) and loss.name, where
        value, grad = loss(student, x, teacher(x))
        assert isinstance(value, float) and grad.shape == (p,), where
        singles = [loss(student, x[i:i + 1], teacher(x[i:i + 1])) for i in range(x.shape[0])]
        mean_value = np.mean([v for v, _ in singles])
        mean_grad = np.mean([g for _, g in singles], axis=0)
        assert value == pytest.approx(mean_value, rel=1e-12, abs=1e-14), where
        np.testing.assert_allclose(grad, mean_grad, rtol=1e-10, atol=1e-13 * np.max(np.abs(mean_grad)), err_msg=where)
        assert not np.isclose(value, x.shape[0] * mean_value, rtol=1e-6), where      # the control: not a sum


def _chapter2_run(loop, seed=2):
    """A student, its teacher's labeller, a noise stream and a cross-entropy loss, trained by ``loop``."""
    teacher = compression.MLPTeacher(MLP([3, 5, 3], ["logistic", "log_softmax"], np.random.default_rng(1)))
    student = MLP([3, 4, 3], ["logistic", "log_softmax"], np.random.default_rng(seed))
    loss = compression.CrossEntropyLoss()
    inputs = compression.NoiseGenerator(3, 4, np.random.default_rng(3))
    return student, loop(student, loss, inputs, compression.teacher_targets(student, teacher, loss))


def test_distill_is_train_on_the_objective_bit_for_bit():
    a, ra = _chapter2_run(lambda s, loss, inputs, teacher: distill(s, loss, inputs, teacher, Adadelta(), 20,
                                                                   progress=False))
    b, rb = _chapter2_run(lambda s, loss, inputs, teacher: train(s.params, objective(s, loss, teacher), inputs,
                                                                 Adadelta(), 20, progress=False))
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(ra.losses, rb.losses)


def test_distill_with_a_params_view_changes_only_that_view():
    """Chapter 3's use: the loss returns the gradient of part of the parameters and only that part moves."""
    def first_layer(s, loss, inputs, teacher):
        w1 = s.layout.slice("W1")

        def loss_w1(student, x, targets):
            value, grad = loss(student, x, targets)
            return value, grad[w1]

        return distill(s, loss_w1, inputs, teacher, SGD(0.5), 20, params=s.params[w1], progress=False)

    start = MLP([3, 4, 3], ["logistic", "log_softmax"], np.random.default_rng(2))
    student, result = _chapter2_run(first_layer)
    w1 = student.layout.slice("W1")
    rest = np.ones(student.n_params, dtype=bool)
    rest[w1] = False
    assert result.steps == 20
    np.testing.assert_array_equal(student.params[rest], start.params[rest])
    assert not np.allclose(student.params[w1], start.params[w1])


def test_distill_checkpoints_a_stateful_stream_as_inputs(tmp_path, rng):
    student = MLP([3, 4, 3], ["logistic", "log_softmax"], rng)
    teacher = compression.MLPTeacher(MLP([3, 5, 3], ["logistic", "log_softmax"], rng))
    loss = compression.CrossEntropyLoss()
    inputs = compression.NoiseGenerator(3, 4, rng)
    distill(student, loss, inputs, compression.teacher_targets(student, teacher, loss), Adadelta(), 3,
            checkpoint=str(tmp_path / "c.npz"), progress=False)
    with np.load(tmp_path / "c.npz") as saved:
        assert {k for k in saved.files if k.startswith("state.")} == {"state.inputs.rng", "state.inputs.examples_drawn"}


def test_bad_losses_and_teachers_are_named(rng):
    student = MLP([3, 4, 3], ["logistic", "log_softmax"], rng)
    with pytest.raises(TypeError, match="loss: expected a callable"):
        objective(student, "ce", lambda x: None)
    with pytest.raises(TypeError, match="teacher: expected a callable"):
        objective(student, compression.CrossEntropyLoss(), None)
