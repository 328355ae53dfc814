"""Chapter 2 model compression: losses, teachers, generators, Proposition 2.1 and the quick experiment."""
import os

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kd_ref import gradcheck
from kd_ref.distill import distill, objective
from kd_ref.distill.compression import (CrossEntropyLoss, DatasetGenerator, DerivativeSquareErrorLoss,
                                        EnsembleTeacher, Labels, MLPTeacher, NADEGenerator, NoiseGenerator,
                                        SquareErrorLoss, WeightedLoss, log_mean_exp, log_probs_of,
                                        supervised_objective, teacher_targets)
from kd_ref.metrics import paired_difference, score
from kd_ref.mlp import MLP
from kd_ref.nade import NADE, raster_column_order
from kd_ref.optim import Adadelta

HIDDEN = ["logistic", "relu", "probit", "linear"]
KINK_MARGIN = 5e-3  # ReLU pre-activations nearer 0 than this spoil central differences


def _away_from_kinks(net, x):
    cache = net.forward(x)
    return all(np.min(np.abs(a)) > KINK_MARGIN for a, f in zip(cache.a, net.f) if f.name == "relu")


@st.composite
def problems(draw):
    """Random student, teacher (single net or ensemble), minibatch and loss, all small and float64."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    d, c, n = draw(st.integers(1, 4)), draw(st.integers(2, 4)), draw(st.integers(1, 4))
    hidden = [draw(st.integers(1, 5)) for _ in range(draw(st.integers(0, 2)))]
    names = [draw(st.sampled_from(HIDDEN)) for _ in hidden] + [draw(st.sampled_from(["log_softmax", "softmax"]))]
    student = MLP([d] + hidden + [c], names, rng)
    student.params[...] = rng.normal(0.0, draw(st.floats(0.3, 1.5)), size=student.n_params)
    loss_name = draw(st.sampled_from(["ce", "se", "dse", "dse_loop", "weighted"]))
    needs_d = loss_name in ("dse", "dse_loop", "weighted")
    kind = draw(st.sampled_from(["single", "log_mean_exp"] if needs_d else ["single", "mean", "log_mean_exp"]))
    m = 1 if kind == "single" else draw(st.integers(1, 3))
    members = []
    for _ in range(m):
        th = [draw(st.integers(1, 5))]
        last = "log_softmax" if kind == "log_mean_exp" else draw(st.sampled_from(["log_softmax", "softmax"]))
        members.append(MLP([d] + th + [c], [draw(st.sampled_from(["logistic", "relu"])), last], rng))
    teacher = MLPTeacher(members[0]) if kind == "single" else EnsembleTeacher(members, combine=kind)
    loss = {"ce": CrossEntropyLoss(), "se": SquareErrorLoss(), "dse": DerivativeSquareErrorLoss(),
            "dse_loop": DerivativeSquareErrorLoss(stacked=False),
            "weighted": WeightedLoss([(draw(st.floats(0.1, 2.0)), CrossEntropyLoss()),
                                      (draw(st.floats(0.1, 2.0)), DerivativeSquareErrorLoss())])}[loss_name]
    x = rng.normal(size=(n, d))
    assume(_away_from_kinks(student, x))
    if names[-1] == "softmax":  # log y of a tiny softmax output is rounded, so its differences are noisy
        assume(np.all(student.forward(x).y > 1e-4))
    return student, teacher, loss, x


@given(problems())
def test_loss_gradients_match_finite_differences(problem):
    """CE (2.17), SE (2.4), DSE (2.18, gradient 2.9-2.13) and their weighted sum, against differences."""
    student, teacher, loss, x = problem
    labels = teacher.label(x, derivatives=loss.needs_derivatives)
    p0 = student.params.copy()

    def value(p):
        student.params[...] = p
        return loss(student, x, labels)[0]

    def grad(p):
        student.params[...] = p
        return loss(student, x, labels)[1]

    result = gradcheck.check_gradient(value, grad, p0)
    student.params[...] = p0
    assume(np.linalg.norm(result.numeric) > 1e-6 * (1 + abs(value(p0))))  # unresolvable flat spots
    assert result.passed(1e-6), str(result)


def _student_log_probs(student, x):
    """log y(x) of a softmax or log-softmax student, straight from its forward pass."""
    y = student.forward(x).y
    return y if student.nonlinearities[-1] == "log_softmax" else np.log(y)


def _independent_loss_value(loss, student, x, labels):
    """The loss value from its defining formula, sharing no code with the loss classes.

    Cross entropy (2.17): -(1/N) sum_n sum_i t_ni log y_ni. Square error (2.4), no 1/2:
    (1/N) sum_n sum_i (y_ni - t_ni)^2. Derivative square error (2.18):
    (1/N) sum_n sum_i ||J_ni - G_ni||^2 with J_ni = d log y_i(x_n) / dx_n by central differences.
    """
    n, d = x.shape
    if isinstance(loss, WeightedLoss):
        return sum(w * _independent_loss_value(term, student, x, labels) for w, term in loss.terms)
    if isinstance(loss, CrossEntropyLoss):
        return -np.sum(labels.probs * _student_log_probs(student, x)) / n
    if isinstance(loss, SquareErrorLoss):
        return np.sum((np.exp(_student_log_probs(student, x)) - labels.probs) ** 2) / n
    assert isinstance(loss, DerivativeSquareErrorLoss)
    total = 0.0
    for k in range(n):
        for i in range(labels.probs.shape[1]):
            J = gradcheck.numerical_gradient(lambda v: _student_log_probs(student, v[None, :])[0, i], x[k])
            total += np.sum((J - labels.d_log_probs[k, i]) ** 2)
    return total / n


@given(problems())
def test_loss_values_match_their_defining_formulas(problem):
    """The finite-difference test above only checks gradients against the value each loss
    returns; this one pins the value itself, for softmax and log-softmax students alike."""
    student, teacher, loss, x = problem
    labels = teacher.label(x, derivatives=loss.needs_derivatives)
    value, _ = loss(student, x, labels)
    expected = _independent_loss_value(loss, student, x, labels)
    numeric = loss.needs_derivatives  # J by differences: agreement to about the difference error
    assert value == pytest.approx(expected, rel=1e-6 if numeric else 1e-12, abs=1e-7 if numeric else 1e-14)


@given(problems())
def test_a_student_distilled_from_itself_has_zero_loss_and_gradient(problem):
    """Self-distillation: with the student's own copy as teacher, derivative square error is 0 and
    so are its gradient and the gradients of cross entropy and square error (each is at its minimum)."""
    student, _, _, x = problem
    clone = MLP(student.sizes, student.nonlinearities, np.random.default_rng(0))
    clone.set_params(student.params)
    labels = MLPTeacher(clone).label(x, derivatives=True)
    value, grad = DerivativeSquareErrorLoss()(student, x, labels)
    assert value <= 1e-24
    assert np.max(np.abs(grad)) <= 1e-10
    for loss in (DerivativeSquareErrorLoss(stacked=False), CrossEntropyLoss(), SquareErrorLoss()):
        _, grad = loss(student, x, labels)
        assert np.max(np.abs(grad)) <= 1e-10, loss.name
    assert SquareErrorLoss()(student, x, labels)[0] <= 1e-24
    # control: teacher derivatives shifted by 0.5 in every entry cost 0.25 per class and input dimension
    shifted = Labels(labels.probs, labels.log_probs, labels.d_log_probs + 0.5)
    n, c, d = labels.d_log_probs.shape
    assert DerivativeSquareErrorLoss()(student, x, shifted)[0] == pytest.approx(0.25 * c * d, rel=1e-12)


def _check_teacher_input_derivatives(teacher, x, c):
    """Every class's d log p_i/dx (summed over the rows) against central differences of log p_i."""
    n, d = x.shape
    assert teacher.label(x, derivatives=True).d_log_probs.shape == (n, c, d)
    checked = 0
    for i in range(c):
        def f(v):
            return teacher.label(v.reshape(n, d)).log_probs[:, i].sum()

        result = gradcheck.check_gradient(f, lambda v: teacher.label(v.reshape(n, d), True).d_log_probs[:, i].ravel(),
                                          x.ravel())
        if np.linalg.norm(result.numeric) < 1e-5 * (1 + abs(f(x.ravel()))):
            continue  # a saturated class: rounding noise of log p swamps its tiny gradient
        assert result.passed(1e-6), str(result)
        checked += 1
    assume(checked > 0)


@given(st.integers(0, 2**32 - 1), st.lists(st.sampled_from(["logistic", "relu", "probit"]), max_size=3),
       st.sampled_from(["log_softmax", "softmax"]))
def test_mlp_teacher_input_derivatives_match_finite_differences(seed, hidden, last):
    """MLPTeacher.label(derivatives=True), d log y_i/dx by input-only backprop, vs differences of log_probs[:, i]."""
    rng = np.random.default_rng(seed)
    d, c, n = 3, 4, 2
    sizes = [d] + [int(k) for k in rng.integers(1, 6, size=len(hidden))] + [c]
    net = MLP(sizes, hidden + [last], rng)
    net.params[...] = rng.normal(0.0, 1.5, size=net.n_params)
    teacher = MLPTeacher(net)
    x = rng.normal(size=(n, d))
    assume(_away_from_kinks(net, x))
    if last == "softmax":  # log y of a tiny softmax output is rounded, so its differences are noisy
        assume(np.all(net.forward(x).y > 1e-4))
    _check_teacher_input_derivatives(teacher, x, c)


@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.sampled_from(["logistic", "relu"]))
def test_ensemble_input_derivatives_match_finite_differences(seed, m, hidden):
    """d log p_i/dx of the log-mean-exp ensemble (probability-weighted member derivatives) vs differences."""
    rng = np.random.default_rng(seed)
    d, c, n = 3, 4, 2
    members = [MLP([d, 5, c], [hidden, "log_softmax"], rng) for _ in range(m)]
    for net in members:
        net.params[...] = rng.normal(0.0, 1.5, size=net.n_params)
    teacher = EnsembleTeacher(members, combine="log_mean_exp")
    x = rng.normal(size=(n, d))
    assume(all(_away_from_kinks(net, x) for net in members))
    _check_teacher_input_derivatives(teacher, x, c)


def test_ensemble_rules_agree_and_average_probabilities(rng):
    members = [MLP([3, 6, 4], ["relu", "log_softmax"], rng) for _ in range(3)]
    x = rng.normal(size=(7, 3))
    mean = EnsembleTeacher(members, combine="mean").label(x)
    lme = EnsembleTeacher(members, combine="log_mean_exp").label(x)
    direct = np.mean([np.exp(m.forward(x).y) for m in members], axis=0)
    np.testing.assert_allclose(mean.probs, direct, rtol=1e-13)
    np.testing.assert_allclose(lme.probs, direct, rtol=1e-13)
    np.testing.assert_allclose(lme.log_probs, np.log(direct), rtol=1e-12)
    # an ensemble of one is its member, derivatives included
    one = EnsembleTeacher(members[:1], combine="log_mean_exp").label(x, derivatives=True)
    np.testing.assert_allclose(one.d_log_probs, members[0].jacobian(x), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("last", ["log_softmax", "softmax"])
def test_stacked_and_looped_derivative_losses_agree(rng, last):
    """The class-stacked computation is a re-arrangement of the per-class loop, not another formula."""
    student = MLP([5, 6, 4], ["logistic", last], rng)
    teacher = EnsembleTeacher([MLP([5, 7, 4], ["relu", "log_softmax"], rng) for _ in range(2)], "log_mean_exp")
    x = rng.normal(size=(3, 5))
    labels = teacher.label(x, derivatives=True)
    v_loop, g_loop = DerivativeSquareErrorLoss(stacked=False)(student, x, labels)
    v_stack, g_stack = DerivativeSquareErrorLoss()(student, x, labels)
    assert v_stack == pytest.approx(v_loop, rel=1e-13)
    np.testing.assert_allclose(g_stack, g_loop, rtol=1e-12, atol=1e-14 * np.max(np.abs(g_loop)))


@pytest.mark.parametrize("last,log", [("log_softmax", False), ("softmax", True)])
def test_mlp_teacher_derivatives_equal_mlp_jacobian(rng, last, log):
    net = MLP([5, 7, 3], ["logistic", last], rng)
    x = rng.normal(size=(4, 5))
    labels = MLPTeacher(net).label(x, derivatives=True)
    np.testing.assert_allclose(labels.d_log_probs, net.jacobian(x, log=log), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(labels.probs.sum(axis=1), 1.0, rtol=1e-14)


def test_log_mean_exp_is_stable_for_extreme_log_probabilities():
    log_probs = np.array([[[0.0, -1e4]], [[-1e4, 0.0]]])  # two confident members that disagree
    np.testing.assert_allclose(log_mean_exp(log_probs), [[np.log(0.5), np.log(0.5)]], rtol=1e-14)


def test_extremely_confident_networks_give_finite_labels_and_losses(rng):
    """Logits of order 1e3-1e4: probabilities underflow to 0, yet every log-probability,
    derivative, loss and gradient stays finite (log-softmax outputs, log-sum-exp ensemble)."""
    members = [MLP([3, 4, 2], ["logistic", "log_softmax"], rng) for _ in range(2)]
    for net, bias in zip(members, (3e3, 2e3)):
        net.b[-1][...] = [bias, -bias]  # both certain of class 0, by e^6000 and e^4000 to 1
    student = MLP([3, 5, 2], ["relu", "log_softmax"], rng)
    student.params[...] *= 1e3
    x = rng.normal(size=(6, 3))
    labels = EnsembleTeacher(members, combine="log_mean_exp").label(x, derivatives=True)
    assert np.all(np.isfinite(labels.log_probs)) and np.all(np.isfinite(labels.d_log_probs))
    np.testing.assert_allclose(labels.probs.sum(axis=1), 1.0, rtol=1e-12)
    # log p_1 = log((e^-6000 + e^-4000) / 2) up to the hidden layer's share; exp of it is 0 in float64
    assert np.all(np.abs(labels.log_probs[:, 1] + 4000 + np.log(2)) < 20)
    # class 1's derivative is the second member's alone (its weight e^-4000 / (e^-6000 + e^-4000) = 1)
    np.testing.assert_allclose(labels.d_log_probs[:, 1], MLPTeacher(members[1]).label(x, True).d_log_probs[:, 1],
                               rtol=1e-12, atol=1e-15)
    for loss in (CrossEntropyLoss(), SquareErrorLoss(), DerivativeSquareErrorLoss()):
        value, grad = loss(student, x, labels)
        assert np.isfinite(value) and np.all(np.isfinite(grad)), loss.name


def test_softmax_teacher_derivatives_survive_underflow(rng):
    """A softmax output clipped at the smallest normal float still gives the exact d log y_i/dx
    (the seed e_i / y_i is finite and the softmax Jacobian maps it to e_i - y): it equals the
    log-softmax network's with the same weights."""
    soft = MLP([3, 4, 2], ["relu", "softmax"], rng)
    soft.b[-1][...] = [1e3, -1e3]  # p_1 = e^-2000 underflows
    log = MLP([3, 4, 2], ["relu", "log_softmax"], rng)
    log.set_params(soft.params)
    x = rng.normal(size=(5, 3))
    d_soft = MLPTeacher(soft).label(x, derivatives=True).d_log_probs
    assert np.all(soft.forward(x).y[:, 1] == np.finfo(float).tiny)
    np.testing.assert_allclose(d_soft, MLPTeacher(log).label(x, derivatives=True).d_log_probs, rtol=1e-12, atol=1e-15)


def _teacher_for_proposition(rng):
    """A 2-8-3 logistic teacher in which every class is the most probable one somewhere.

    That makes the vectors p(x) span R^3 at points of the support, the condition of
    Proposition 2.1; teachers are redrawn (deterministically, fixed seed) until it holds.
    """
    x = rng.normal(0.0, 2.0, size=(4000, 2))
    while True:
        net = MLP([2, 8, 3], ["logistic", "log_softmax"], rng)
        net.params[...] = rng.normal(0.0, 1.5, size=net.n_params)
        if np.all(np.exp(net.forward(x).y).max(axis=0) > 0.6):
            return net


def test_matching_derivatives_alone_recovers_the_teacher():
    """Proposition 2.1: derivative square error alone makes the student's probabilities equal the teacher's.

    Matching d log p_i/dx everywhere leaves log p_i determined up to a constant c_i
    per class. Normalisation then requires sum_i p_i(x) exp(c_i) = 1 for every x of
    the support; with three linearly independent vectors p(x) (the teacher below
    makes each class dominant somewhere) the only solution is c = 0, so no offset
    can remain at the global minimum. Training only reaches that minimum
    approximately, so probabilities are compared, on held-out inputs, within 0.02.
    The untrained student is the control: it is far off.
    """
    rng = np.random.default_rng(2)
    teacher = MLPTeacher(_teacher_for_proposition(rng))
    student = MLP([2, 8, 3], ["logistic", "log_softmax"], rng)
    held_out = rng.normal(0.0, 2.0, size=(2000, 2))
    target = teacher.label(held_out).probs
    before = np.max(np.abs(np.exp(student.forward(held_out).y) - target))
    loss = DerivativeSquareErrorLoss()
    distill(student, loss, NoiseGenerator(2, 20, rng, std=2.0), teacher_targets(student, teacher, loss), Adadelta(),
            20000, progress=False)
    after = np.max(np.abs(np.exp(student.forward(held_out).y) - target))
    assert before > 0.2
    assert after < 0.02, f"max |p_student - p_teacher| = {after:.4f} after derivative matching"


def test_dataset_generator_visits_every_example_once_per_pass():
    n, batch = 23, 5  # batches straddle passes
    data = np.arange(n, dtype=float)[:, None] * np.ones((1, 3))
    gen = DatasetGenerator(data, batch, np.random.default_rng(0), targets=np.eye(n))
    stream, paired = [], True
    for _ in range(n * 4 // batch + 1):
        x, t = gen()
        assert x.shape == (batch, 3)
        paired &= np.array_equal(x[:, 0], np.argmax(t, axis=1))
        stream.extend(x[:, 0].astype(int))
    assert paired
    for p in range(4):
        assert sorted(stream[p * n:(p + 1) * n]) == list(range(n)), f"pass {p} is not a permutation"
    assert stream[:n] != stream[n:2 * n]  # reshuffled between passes
    assert gen.examples_drawn == len(stream)


def test_dataset_generator_on_a_resample_equals_the_copied_resample():
    rng = np.random.default_rng(3)
    data, targets = rng.standard_normal((11, 4)), np.eye(11)
    boot = rng.integers(0, 11, size=11)
    copied = DatasetGenerator(data[boot], 4, np.random.default_rng(5), targets=targets[boot])
    indexed = DatasetGenerator(data, 4, np.random.default_rng(5), targets=targets, rows=boot)
    assert indexed.n == 11
    for _ in range(9):  # a few passes, batches straddling them
        (xa, ta), (xb, tb) = copied(), indexed()
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ta, tb)
    assert indexed.passes == copied.passes


def test_nade_generator_yields_conditional_probability_images_in_data_order():
    """A small random NADE with a non-identity order: values in [0, 1], not binary, and pixel order[0]
    (the first one drawn, conditioned on nothing) has the same probability in every image."""
    rng = np.random.default_rng(3)
    order = raster_column_order(3, 4)
    nade = NADE(12, 5, rng, order=order, init_std=1.0)
    nade.b[...] = rng.normal(size=12)
    gen = NADEGenerator(nade, 50, np.random.default_rng(7))
    assert gen.dim == 12
    y = gen()
    assert y.shape == (50, 12) and np.all((y >= 0) & (y <= 1))
    assert not np.all((y == 0) | (y == 1))  # grey levels, not the binary samples
    np.testing.assert_allclose(y[:, order[0]], y[0, order[0]], rtol=1e-14)
    assert np.ptp(y[:, order[-1]]) > 0  # the last pixel depends on the others
    _, y_direct = nade.sample(50, np.random.default_rng(7))  # same stream as the generator's rng
    np.testing.assert_array_equal(y, y_direct)


def test_noise_generator_has_standard_normal_moments():
    gen = NoiseGenerator(8, 500, np.random.default_rng(0))
    x = np.concatenate([gen() for _ in range(20)])
    n = x.size  # 80,000 i.i.d. draws: se(mean) = 1/sqrt(n), se(var) = sqrt(2/n)
    assert x.shape == (10000, 8)
    assert abs(x.mean()) < 4 / np.sqrt(n)
    assert abs(x.var() - 1) < 4 * np.sqrt(2 / n)
    assert abs(np.mean(x**3)) < 4 * np.sqrt(15 / n)          # skewness 0, var(x^3) = 15
    assert abs(np.mean(x**4) - 3) < 4 * np.sqrt(96 / n)     # kurtosis 3, var(x^4) = 105 - 9
    shifted = NoiseGenerator(8, 500, np.random.default_rng(0), mean=0.1)()  # control: a shift is seen
    assert abs(shifted.mean() - 0.1) < 4 / np.sqrt(shifted.size) < 0.1


def test_score_and_paired_difference_on_a_worked_example():
    log_probs = np.log(np.array([[0.7, 0.3], [0.4, 0.6], [0.9, 0.1]]))
    s = score(log_probs, np.array([0, 0, 1]))
    np.testing.assert_allclose(s.correct, [1, 0, 0])
    assert s.accuracy == pytest.approx(100 / 3)
    assert s.log_prob == pytest.approx(np.mean(np.log([0.7, 0.4, 0.1])))
    # sample std of (100, 0, 0) is 100/sqrt(3); 2 SE = 2 * 100/sqrt(3)/sqrt(3)
    assert s.accuracy_2se == pytest.approx(200 / 3)
    other = score(np.log(np.array([[0.6, 0.4], [0.5, 0.5], [0.2, 0.8]])), np.array([0, 0, 1]))
    diff = paired_difference(other, s)
    assert diff["accuracy"] == pytest.approx(200 / 3)  # paired differences (0, 100, 100)
    assert diff["log_prob"] == pytest.approx(np.mean(np.log([0.6 / 0.7, 0.5 / 0.4, 0.8 / 0.1])))


def test_supervised_objective_is_cross_entropy_on_true_labels(rng):
    student = MLP([3, 4, 2], ["relu", "log_softmax"], rng)
    x, t = rng.normal(size=(5, 3)), np.eye(2)[[0, 1, 1, 0, 1]]
    value, grad = supervised_objective(student)((x, t))
    assert value == pytest.approx(-np.mean(np.sum(t * student.forward(x).y, axis=1)))
    assert grad.shape == (student.n_params,)
    with pytest.raises(ValueError, match="value loss"):
        supervised_objective(student, DerivativeSquareErrorLoss())


# --------------------------------------------------------------------- bad input
def test_teacher_with_wrong_output_size_is_refused(rng):
    student = MLP([4, 5, 3], ["relu", "log_softmax"], rng)
    teacher = MLPTeacher(MLP([4, 5, 2], ["relu", "log_softmax"], rng))
    with pytest.raises(ValueError, match=r"teacher: expected 3 outputs .* received a teacher with 2 outputs"):
        teacher_targets(student, teacher, CrossEntropyLoss())


def test_generator_of_wrong_dimension_is_refused(rng):
    student = MLP([4, 5, 3], ["relu", "log_softmax"], rng)
    teacher = MLPTeacher(MLP([4, 5, 3], ["relu", "log_softmax"], rng))
    loss = CrossEntropyLoss()
    labels = teacher_targets(student, teacher, loss)
    p0 = student.params.copy()
    with pytest.raises(ValueError, match=r"generator: expected minibatches of shape \(N, 4\), received shape \(6, 5\)"):
        objective(student, loss, labels)(rng.normal(size=(6, 5)))
    gen = NoiseGenerator(5, 6, rng)
    drawn = gen.state()
    with pytest.raises(ValueError, match=r"generator: expected minibatches of shape \(N, 4\), received shape \(6, 5\)"):
        distill(student, loss, gen, labels, Adadelta(), 3, progress=False)
    np.testing.assert_array_equal(student.params, p0)
    assert str(gen.state()["rng"]) == str(drawn["rng"]) and gen.examples_drawn == 0   # the draw was put back


def test_log_mean_exp_of_probabilities_is_refused_even_for_one_member(rng):
    """The misuse: probabilities where log-probabilities are expected. For M = 1 the
    log-mean-exp would return its input unchanged, so only the domain check catches it."""
    probs = np.array([[[0.2, 0.8], [0.5, 0.5]]])  # M = 1, N = 2, C = 2
    with pytest.raises(ValueError, match="log_probs: expected log-probabilities.*look like probabilities"):
        log_mean_exp(probs)
    np.testing.assert_allclose(log_mean_exp(np.log(probs)), np.log(probs[0]))  # control
    softmax_net = MLP([3, 4, 2], ["relu", "softmax"], rng)
    with pytest.raises(ValueError, match=r"members\[0\]: combine='log_mean_exp' expected .*'log_softmax'.*'softmax'"):
        EnsembleTeacher([softmax_net], combine="log_mean_exp")
    with pytest.raises(ValueError, match="derivatives: expected combine='log_mean_exp'"):
        EnsembleTeacher([softmax_net], combine="mean").label(rng.normal(size=(2, 3)), derivatives=True)
    with pytest.raises(ValueError, match="combine: expected one of"):
        EnsembleTeacher([softmax_net], combine="median")


def test_bad_generator_and_teacher_arguments_are_named(rng):
    with pytest.raises(TypeError, match="nade: expected a kd_ref.nade.NADE, received MLP"):
        NADEGenerator(MLP([3, 2], ["softmax"], rng), 5, rng)
    with pytest.raises(ValueError, match="targets: expected 4 rows like data, received 3"):
        DatasetGenerator(np.zeros((4, 2)), 2, rng, targets=np.eye(3))
    with pytest.raises(ValueError, match="batch_size"):
        DatasetGenerator(np.zeros((4, 2)), 0, rng)
    with pytest.raises(ValueError, match=r"rows: expected .*\[0, 4\).*range \[0, 4\]"):
        DatasetGenerator(np.zeros((4, 2)), 2, rng, rows=np.array([0, 4]))
    with pytest.raises(ValueError, match="rows: expected .*received dtype float64"):
        DatasetGenerator(np.zeros((4, 2)), 2, rng, rows=np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"std: expected a value in \(0, inf\), received -1\.0"):
        NoiseGenerator(3, 2, rng, std=-1.0)
    with pytest.raises(ValueError, match=r"mean: expected a value in \(-inf, inf\), received nan"):
        NoiseGenerator(3, 2, rng, mean=float("nan"))
    with pytest.raises(TypeError, match="members: expected a sequence of MLP, received MLP"):
        EnsembleTeacher(MLP([3, 2], ["log_softmax"], rng))
    with pytest.raises(ValueError, match=r"members\[1\]: expected 3 inputs and 2 outputs like members\[0\]"):
        EnsembleTeacher([MLP([3, 2], ["log_softmax"], rng), MLP([3, 4], ["log_softmax"], rng)])


def test_other_bad_inputs_are_named(rng):
    with pytest.raises(ValueError, match="student: expected a network whose last nonlinearity"):
        teacher_targets(MLP([2, 3], ["linear"], rng), MLPTeacher(MLP([2, 3], ["softmax"], rng)), CrossEntropyLoss())
    with pytest.raises(ValueError, match=r"labels: expected teacher derivatives|labels: expected teacher input"):
        DerivativeSquareErrorLoss()(MLP([2, 3], ["log_softmax"], rng), np.zeros((1, 2)),
                                    Labels.from_probs(np.full((1, 3), 1 / 3)))
    with pytest.raises(ValueError, match="terms"):
        WeightedLoss([(-1.0, CrossEntropyLoss())])
    with pytest.raises(ValueError, match=r"terms\[1\] weight: expected a value in \[0, inf\), received inf"):
        WeightedLoss([(1.0, CrossEntropyLoss()), (np.inf, SquareErrorLoss())])
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, received 0"):
        log_probs_of(MLP([2, 3], ["log_softmax"], rng), np.zeros((4, 2)), batch_size=0)
    with pytest.raises(TypeError, match="rng"):
        NoiseGenerator(3, 2, rng=0)


def test_supervised_batch_without_targets_is_refused(rng):
    """A bare minibatch of two rows would unpack as (x, t) = (row 0, row 1); it must be refused by name."""
    student = MLP([3, 4, 2], ["relu", "log_softmax"], rng)
    objective = supervised_objective(student)
    pair = r"batch: expected an \(x, targets\) pair \(DatasetGenerator\(\.\.\., targets=\.\.\.\)\), received "
    with pytest.raises(ValueError, match=pair + r"ndarray of shape \(2, 3\)"):
        objective(rng.normal(size=(2, 3)))
    with pytest.raises(ValueError, match=pair + "tuple of length 3"):
        objective((rng.normal(size=(2, 3)), np.eye(2), None))
    value, _ = objective((rng.normal(size=(2, 3)), np.eye(2)))  # control
    assert np.isfinite(value)


def test_bad_settings_are_named():
    from kd_ref.experiments.compress import Settings

    with pytest.raises(TypeError, match=r"members: expected an integer >= 1, received 2\.5"):
        Settings.quick(members=2.5).validate()
    with pytest.raises(TypeError, match="batch_size: expected an integer >= 1, received None"):
        Settings.quick(batch_size=None).validate()
    with pytest.raises(ValueError, match="n_test: expected an integer >= 0, received -1"):
        Settings.quick(n_test=-1).validate()
    with pytest.raises(ValueError, match=r"small_fraction: expected a value in \(0, 1\], received 0\.0"):
        Settings.quick(small_fraction=0).validate()
    with pytest.raises(ValueError, match="student_passes: expected a number of passes > 0, received None"):
        Settings.quick(student_passes=None).validate()
    with pytest.raises(ValueError, match="losses: expected a non-empty subset of .*received None"):
        Settings.quick(losses=None).validate()
    assert Settings.quick().validate() == Settings.quick() and Settings.thesis().validate() == Settings.thesis()


def test_a_crash_while_caching_a_net_leaves_no_net_without_its_curve(tmp_path, rng):
    """The curve is written before the net, so a cached net always comes with its curve."""
    from kd_ref.experiments import compress

    from kd_ref.experiments._report import Run

    settings = compress.Settings.quick(curve_points=2, progress=False)
    x, y = rng.uniform(size=(10, 3)), rng.integers(0, 2, size=10)
    ctx = compress.Context(settings, Run(tmp_path, rng, {}), compress.Data("test", x, y, x, y, (1, 3), 2))
    path = tmp_path / "cache" / "net.npz"

    def fit(net):
        gen = DatasetGenerator(x, 5, np.random.default_rng(0), targets=np.eye(2)[y])
        return compress._fit(ctx, "net", "test", net, supervised_objective(net), gen, 4)

    crashing = MLP([3, 4, 2], ["relu", "log_softmax"], np.random.default_rng(1))

    def crash(_):
        raise RuntimeError("disk full")

    crashing.save = crash
    with pytest.raises(RuntimeError, match="disk full"):
        fit(crashing)
    assert not path.exists()
    first = fit(MLP([3, 4, 2], ["relu", "log_softmax"], np.random.default_rng(1)))  # retrains
    assert path.exists() and first.shape[1] == 3
    again = MLP([3, 4, 2], ["relu", "log_softmax"], np.random.default_rng(2))
    np.testing.assert_array_equal(fit(again), first)  # now read from the cache, curve included
    np.testing.assert_array_equal(again.params, MLP.load(path).params)


# ------------------------------------------------------------- quick end to end
def _toy_images(rng, n_train, n_test, side=16, classes=10, label_noise=0.3):
    """Ten classes of sparse side x side images near a few stroke patterns per class, grey levels in [0, 1].

    Each class has three random patterns; an image keeps each pattern pixel with
    probability 0.85, switches on stray pixels with probability 0.04, and gets a
    little grey-level jitter. Images thus lie near a low-dimensional set that a
    small NADE learns in seconds (Gaussian noise lies far from it). A fraction
    ``label_noise`` of the *training* labels is replaced by random classes, so the
    members, each fitting its own bootstrap resample of those labels, make different
    mistakes on the clean test set: the situation in which an ensemble helps.
    """
    from kd_ref.experiments.compress import Data

    protos = (rng.uniform(size=(classes, 3, side * side)) < 0.15).astype(float)

    def draw(n):
        y = rng.integers(0, classes, size=n)
        on = protos[y, rng.integers(0, 3, size=n)] * (rng.uniform(size=(n, side * side)) < 0.85)
        on = np.maximum(on, rng.uniform(size=(n, side * side)) < 0.04)
        return np.clip(on * rng.uniform(0.7, 1.0, size=on.shape) + rng.uniform(0, 0.1, size=on.shape), 0, 1), y

    (xtr, ytr), (xte, yte) = draw(n_train), draw(n_test)
    ytr = np.where(rng.uniform(size=n_train) < label_noise, rng.integers(0, classes, size=n_train), ytr)
    return Data("toy images", xtr, ytr, xte, yte, (side, side), classes)


def test_quick_experiment_end_to_end(tmp_path):
    """The whole chapter 2 pipeline (ensemble, NADEs, baselines, students, tables) on small toy images.

    Checks findings of the thesis that hold at this size: the ensemble beats each of
    its members, a student trained by cross entropy on the dataset generator is about
    as accurate as the same network trained on the true labels, and Gaussian noise is
    clearly the worst generator. Run again in the same folder, the experiment loads
    every model from its cache and reproduces the results; with other settings it refuses.
    """
    from dataclasses import replace

    from kd_ref.experiments import compress

    data = _toy_images(np.random.default_rng(5), 1000, 1000)
    settings = compress.Settings.quick(n_train=0, n_test=0, members=3, member_hidden=(32, 16),
                                       student_hidden=(16, 8), member_passes=5, student_passes=10, nade_hidden=32,
                                       nade_passes=20, curve_points=3, curve_test=300, figures=False, progress=False)
    results = compress.run(settings, tmp_path, np.random.default_rng(0), data=data)
    ens, members = results["ensemble"], results["members"]
    for metric in ("accuracy", "log_prob"):
        assert ens[metric] > max(m[metric] for m in members), (metric, ens, members)
    students = {key.split("/", 1)[1]: s for key, s in results["students"].items() if key.startswith("full/")}
    assert students["dataset/ce"]["accuracy"] >= results["baselines"]["full"]["accuracy"] - 1.0
    for loss in ("ce", "dse"):  # noise has the lowest test log-probability with either loss, by a margin
        others = max(students[f"{gen}/{loss}"]["log_prob"] for gen in ("dataset", "nade"))
        assert students[f"noise/{loss}"]["log_prob"] < others - 0.1, (loss, students)
    others = min(students[f"{gen}/ce"]["accuracy"] for gen in ("dataset", "nade"))
    assert students["noise/ce"]["accuracy"] < others - 5.0, students
    assert set(results["paired"]) == set(results["students"]) and len(results["students"]) == 12
    for key, d in results["paired"].items():
        frac = key.split("/")[0]
        assert d["accuracy"] == pytest.approx(results["students"][key]["accuracy"]
                                              - results["baselines"][frac]["accuracy"])
    assert (tmp_path / "tables.md").read_text().count("± ") > 30 and (tmp_path / "tables.csv").exists()

    again = compress.run(replace(settings, figures=True), tmp_path, np.random.default_rng(0), data=data)
    assert again["students"] == results["students"] and again["ensemble"] == results["ensemble"]
    for name in ("curves_full.png", "curves_small.png", "samples.png"):
        assert (tmp_path / name).stat().st_size > 0
    stale = r"out: the cache in .* was written with other settings \(members: 3 there, 2 now\)"
    with pytest.raises(ValueError, match=stale):
        compress.run(replace(settings, members=2), tmp_path, np.random.default_rng(0), data=data)


def test_munge_is_a_fourth_generator_whose_neighbours_are_cached(tmp_path):
    """``generators=("munge",)`` trains MUNGE students (S1.8) only; the neighbour search runs once per training set."""
    from dataclasses import replace

    from kd_ref.distill import munge
    from kd_ref.experiments import compress

    data = _toy_images(np.random.default_rng(5), 200, 100)
    settings = compress.Settings.quick(n_train=0, n_test=0, members=2, member_hidden=(8, 8), student_hidden=(4, 4),
                                       member_passes=1, student_passes=1, generators=("munge",), curve_points=2,
                                       curve_test=50, figures=False, progress=False)
    assert compress.Settings.quick().generators == ("dataset", "nade", "noise")    # the thesis's three by default
    results = compress.run(settings, tmp_path, np.random.default_rng(0), data=data)
    assert set(results["students"]) == {f"{frac}/munge/{loss}" for frac in ("full", "small") for loss in ("ce", "dse")}
    cached = np.load(tmp_path / "cache" / "munge_neighbours_full.npz")["neighbours"]
    assert np.array_equal(cached, munge.reference_nearest_neighbours(data.x_train))
    assert "| MUNGE |" in (tmp_path / "tables.md").read_text()
    with pytest.raises(ValueError, match="munge_p"):
        replace(settings, munge_p=1.5).validate()


def test_thesis_settings_are_those_of_the_spec():
    """The --thesis preset pins SPEC.md chapter 2 (a changed number here changes what the thesis run means)."""
    from kd_ref.experiments import compress

    s = compress.Settings.thesis()
    assert (s.data, s.n_train, s.n_test, s.small_fraction, s.fractions) == ("mnist", 0, 0, 0.1, ("full", "small"))
    assert (s.members, s.member_hidden, s.member_passes, s.batch_size) == (30, (500, 300), 20.0, 20)
    assert (s.student_hidden, s.student_passes, s.baseline_passes) == ((50, 30), 40.0, None)  # baselines = members
    assert (s.nade_hidden, s.nade_passes) == (500, 10.0)
    assert set(s.generators) == {"dataset", "nade", "noise"} and set(s.losses) == {"ce", "dse"}
    assert s.checkpoints
    with pytest.raises(ValueError, match="baseline_passes: expected None or a number of passes > 0, received 0"):
        compress.Settings.quick(baseline_passes=0).validate()
    with pytest.raises(ValueError, match=r"generators: expected a non-empty subset of .*received \('gan',\)"):
        compress.Settings.quick(generators=("gan",)).validate()


def test_student_seeds_add_replicates_beside_the_single_seed_run(tmp_path):
    """``student_seeds`` = 2 in the folder of a single-seed run trains only the second replicates: replicate 0
    is the cached student itself, replicate 1 has its own stream, and the table over the seeds appears."""
    from dataclasses import replace

    from kd_ref.experiments import compress

    data = _toy_images(np.random.default_rng(5), 300, 200)
    settings = compress.Settings.quick(n_train=0, n_test=0, members=2, member_hidden=(8, 8), student_hidden=(6, 4),
                                       member_passes=2, student_passes=2, generators=("dataset", "noise"),
                                       fractions=("small",), small_fraction=0.5, curve_points=2, curve_test=50,
                                       figures=False, progress=False)
    one = compress.run(settings, tmp_path, np.random.default_rng(0), data=data)
    assert "replicates" not in one and "student seeds" not in one["tables"]
    before = set(os.listdir(tmp_path / "cache"))
    two = compress.run(replace(settings, student_seeds=2), tmp_path, np.random.default_rng(0), data=data)
    new = set(os.listdir(tmp_path / "cache")) - before
    assert {n for n in new if not n.endswith(".curve.npz")} == \
        {"baseline_small_seed1.npz"} | {f"student_small_{g}_{l}_seed1.npz" for g in ("dataset", "noise")
                                        for l in ("ce", "dse")}
    for key in ("ensemble", "baselines", "students", "paired"):
        assert two[key] == one[key], key
    reps = two["replicates"]
    assert set(reps) == {"small/baseline"} | {f"small/{g}/{l}" for g in ("dataset", "noise") for l in ("ce", "dse")}
    for key, scores in reps.items():
        first = two["baselines"]["small"] if key == "small/baseline" else two["students"][key]
        assert len(scores) == 2 and scores[0] == first and scores[1] != first, key
    ce, dse = (reps[f"small/noise/{l}"] for l in ("ce", "dse"))
    diff = np.mean([s["accuracy"] for s in dse]) - np.mean([s["accuracy"] for s in ce])
    assert "Across 2 student seeds" in two["tables"] and f"| {diff:.2f} ± " in two["tables"]
    with pytest.raises(ValueError, match="student_seeds"):
        replace(settings, student_seeds=0).validate()
