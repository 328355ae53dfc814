"""Temperature distillation (SPEC_seeds S1.A): tempered softmax, soft/hard/logit losses, tempered teachers and
derivative matching, and the t -> infinity limits with their measured rates and controls that must fail."""
import mpmath
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kd_ref import gradcheck
from kd_ref.distill import objective
from kd_ref.distill.compression import (CrossEntropyLoss, DerivativeSquareErrorLoss, EnsembleTeacher, Labels,
                                        MLPTeacher, WeightedLoss, supervised_objective, teacher_targets)
from kd_ref.distill.temperature import (HintonDSELoss, HintonLoss, KDTargets, LogitMatchingLoss, SoftCrossEntropyLoss,
                                        TemperedDerivativeSquareErrorLoss, TemperedEnsembleTeacher, TemperedLabels,
                                        TemperedTeacher, centre, fitted_slope, hinton_objective, hinton_weights,
                                        limit_errors, one_hot, tempered_log_softmax, tempered_softmax)
from kd_ref.mlp import MLP
from kd_ref.nonlinearities import LogSoftmax
from kd_ref.outputs import SoftmaxCrossEntropy

from _tolerance import passes

HIDDEN = ["logistic", "probit", "linear"]   # smooth: central differences need no kink margin
TS = [1.0, 10.0, 1e2, 1e3, 1e4]


def _mp_log_softmax(row, t):
    """log softmax(row/t) in 60 digits, the top term split off (log1p(rest)): a top entry of -1e-300 keeps its digits."""
    with mpmath.workdps(60):
        s = [mpmath.mpf(float(v)) / mpmath.mpf(float(t)) for v in row]
        m = max(range(len(s)), key=lambda i: s[i])
        log1p_rest = mpmath.log1p(mpmath.fsum(mpmath.exp(v - s[m]) for i, v in enumerate(s) if i != m))
        return np.array([float((v - s[m]) - log1p_rest) for v in s])


@given(st.integers(0, 2**32 - 1), st.floats(0.05, 100.0), st.floats(1.0, 1e4), st.integers(2, 6))
def test_tempered_log_softmax_is_exact_at_huge_gaps(seed, t, scale, c):
    """log q(z; t) (S1.1) against a 60-digit mpmath reference, logits up to +-1e4: within a few ulps of each entry."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(-scale, scale, size=(3, c))
    got = tempered_log_softmax(z, t)
    ref = np.array([_mp_log_softmax(r, t) for r in z])
    assert np.all(np.isfinite(got))
    # the rounding the inputs force: z/t and its max-shift s = z/t - max are rounded (absolute eps |z/t| on each
    # entry, hence relative eps max|z/t| on the sum of exp(s) the top entry -log1p(rest) is made of); nothing more
    eps, zt = np.finfo(float).eps, np.abs(z / t)
    top = z / t == np.max(z / t, axis=1, keepdims=True)
    tol = 4 * eps * (np.abs(ref) + 2 * np.where(top, np.max(zt, axis=1, keepdims=True) * np.abs(ref), zt))
    assert np.all(np.abs(got - ref) <= tol), np.max(np.abs(got - ref) / tol)
    # shift invariance (S1.1): tempering log-probabilities is tempering logits
    np.testing.assert_allclose(tempered_log_softmax(LogSoftmax().forward(z), t), got, rtol=1e-12,
                               atol=1e-12 * scale / t)
    q = tempered_softmax(z, t)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-14)


def test_tempered_log_softmax_at_t_1_is_the_log_softmax_and_keeps_minus_inf():
    z = np.random.default_rng(0).normal(size=(4, 5)) * 30
    assert np.array_equal(tempered_log_softmax(z, 1.0), LogSoftmax().forward(z))
    lp = np.array([[0.0, -np.inf, -np.inf]])
    out = tempered_log_softmax(lp, 3.0)
    assert out[0, 0] == 0.0 and np.all(out[0, 1:] == -np.inf)


@st.composite
def problems(draw):
    """A random small student and teacher (MLPs), a minibatch and a temperature; float64."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    d, c, n = draw(st.integers(1, 4)), draw(st.integers(2, 4)), draw(st.integers(1, 4))
    hidden = [draw(st.integers(1, 4)) for _ in range(draw(st.integers(0, 2)))]
    last = draw(st.sampled_from(["log_softmax", "softmax"]))
    student = MLP([d] + hidden + [c], [draw(st.sampled_from(HIDDEN)) for _ in hidden] + [last], rng)
    student.params[...] = rng.normal(0.0, draw(st.floats(0.3, 1.5)), size=student.n_params)
    teacher = MLP([d, 3, c], [draw(st.sampled_from(["logistic", "probit"])), "log_softmax"], rng)
    t = draw(st.sampled_from([0.5, 1.0, 2.5, 20.0]))
    x = rng.normal(size=(n, d))
    y = rng.integers(0, c, size=n)
    return student, teacher, t, x, y, rng


def _loss_and_targets(kind, student, teacher, t, x, y):
    if kind == "soft":
        return SoftCrossEntropyLoss(t), TemperedTeacher(MLPTeacher(teacher), t).label(x)
    if kind == "kl":
        return SoftCrossEntropyLoss(t, kl=True), TemperedTeacher(MLPTeacher(teacher), t).label(x)
    if kind == "hinton":
        soft = TemperedTeacher(MLPTeacher(teacher), t).label(x)
        return HintonLoss(t, 0.7, 0.4), KDTargets(soft, one_hot(y, student.sizes[-1]))
    if kind == "hinton_smoothed":   # hard rows may be any distribution (label smoothing)
        soft = TemperedTeacher(MLPTeacher(teacher), t).label(x)
        hard = 0.9 * one_hot(y, student.sizes[-1]) + 0.1 / student.sizes[-1]
        return HintonLoss(t, 1.3, 0.2), KDTargets(soft, hard)
    if kind == "logit_centred":
        return LogitMatchingLoss(), MLPTeacher(teacher).label(x)
    if kind == "logit":
        return LogitMatchingLoss(centred=False), TemperedTeacher(MLPTeacher(teacher), 1.0).label(x)
    if kind == "hinton_dse":
        soft = TemperedTeacher(MLPTeacher(teacher), t).label(x, derivatives=True)
        return HintonDSELoss(t, 0.7, 0.4, 0.3), KDTargets(soft, one_hot(y, student.sizes[-1]))
    assert kind == "dse"
    return TemperedDerivativeSquareErrorLoss(t), TemperedTeacher(MLPTeacher(teacher), t).label(x, derivatives=True)


LOSSES = ["soft", "kl", "hinton", "hinton_smoothed", "logit_centred", "logit", "dse", "hinton_dse"]
NO_HVP = ("dse", "hinton_dse")   # the derivative losses give value and gradient only


def _functions(loss, student, x, targets):
    def value(p):
        student.params[...] = p
        return loss(student, x, targets)[0]

    def grad(p):
        student.params[...] = p
        return loss(student, x, targets)[1]

    def hvp(p, v):
        student.params[...] = p
        return loss.hvp(student, x, targets, v)

    return value, grad, hvp


@pytest.mark.parametrize("kind", LOSSES)
@given(problem=problems())
def test_loss_gradients_match_finite_differences(kind, problem):
    """theta-gradients of S1.2/S1.5 (soft CE and KL), S1.3 (Hinton), S1.7 (logit matching), S1.9 (tempered DSE)."""
    student, teacher, t, x, y, rng = problem
    loss, targets = _loss_and_targets(kind, student, teacher, t, x, y)
    value, grad, _ = _functions(loss, student, x, targets)
    p0 = student.params.copy()
    directions = np.concatenate([rng.normal(size=(4, p0.size)), np.eye(p0.size)[rng.permutation(p0.size)[:4]]])
    result = gradcheck.check_gradient(value, grad, p0, directions=directions)   # 4 random, up to 4 coordinates
    student.params[...] = p0
    assume(np.linalg.norm(result.numeric) > 1e-6 * (1 + abs(value(p0))))   # unresolvable flat spots
    assert result.passed(1e-6), str(result)


@pytest.mark.parametrize("kind", [k for k in LOSSES if k not in NO_HVP])
@given(problem=problems())
def test_loss_hvps_match_differences_of_the_gradient_and_are_symmetric(kind, problem):
    student, teacher, t, x, y, rng = problem
    loss, targets = _loss_and_targets(kind, student, teacher, t, x, y)
    _, grad, hvp = _functions(loss, student, x, targets)
    p0 = student.params.copy()
    u, v = rng.normal(size=(2, student.n_params))
    result = gradcheck.check_hvp(grad, hvp, p0, v)
    sym = gradcheck.check_symmetry(hvp, p0, u, v)
    student.params[...] = p0
    assume(np.linalg.norm(result.numeric) > 1e-6)
    assert result.passed(1e-6), str(result)
    assert sym.passed(1e-12), str(sym)


@given(problem=problems())
def test_soft_gradient_at_the_logits_is_q_minus_p_over_t(problem):
    """S1.5 directly at the logits: dl/dz = (q - p)/t per row (times 1/N), against differences in z."""
    student, teacher, t, x, _, _ = problem
    labels = TemperedTeacher(MLPTeacher(teacher), t).label(x)
    loss = SoftCrossEntropyLoss(t)
    z0 = student.forward(x).a[-1]
    value, d_a = loss._seed(z0, labels)
    f = lambda z: loss._seed(z.reshape(z0.shape), labels)[0]                      # noqa: E731
    result = gradcheck.check_gradient(f, lambda z: loss._seed(z.reshape(z0.shape), labels)[1].ravel(), z0.ravel())
    # a derivative near the differences' rounding floor (1.5 eps |l| / h; here 1e-6 against l of order 1) is
    # checked absolutely against that floor
    assert passes(result, 1e-7, value), str(result)
    np.testing.assert_allclose(d_a, (tempered_softmax(z0, t) - labels.probs) / t, rtol=1e-12, atol=1e-15)


@given(st.integers(0, 2**32 - 1), st.floats(1.0, 1e4), st.integers(2, 6))
def test_value_and_grad_from_one_softmax_equal_value_and_grad_bit_for_bit(seed, scale, c):
    """The fused path of HintonLoss (one softmax_parts per temperature) against the two separate calls."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(-scale, scale, size=(4, c))
    out = SoftmaxCrossEntropy(rng.dirichlet(np.ones(c), size=4) * rng.uniform(0.5, 2.0))
    value, grad = out.value_and_grad(a)
    assert value == out.value(a) and np.array_equal(grad, out.grad(a))


def test_soft_loss_at_t_1_is_the_thesis_cross_entropy_and_hinton_reduces_at_the_ends(rng):
    student = MLP([4, 5, 3], ["logistic", "log_softmax"], rng)
    teacher = MLPTeacher(MLP([4, 6, 3], ["relu", "log_softmax"], rng))
    x, y = rng.normal(size=(7, 4)), rng.integers(0, 3, size=7)
    ce = CrossEntropyLoss()(student, x, teacher.label(x))
    soft = SoftCrossEntropyLoss(1.0)(student, x, teacher.label(x))
    assert soft[0] == pytest.approx(ce[0], rel=1e-13) and np.allclose(soft[1], ce[1], rtol=1e-12, atol=1e-15)
    hard = one_hot(y, 3)
    sup = supervised_objective(student)((x, hard))
    only_hard = hinton_objective(student, teacher, HintonLoss(7.0, w_soft=0.0, w_hard=1.0))((x, y))
    assert only_hard[0] == pytest.approx(sup[0], rel=1e-13)
    assert np.allclose(only_hard[1], sup[1], rtol=1e-12, atol=1e-15)
    plain = objective(student, CrossEntropyLoss(), teacher_targets(student, teacher, CrossEntropyLoss()))(x)
    only_soft = hinton_objective(student, teacher, HintonLoss(1.0, w_soft=1.0, w_hard=0.0))((x, hard))
    assert only_soft[0] == pytest.approx(plain[0], rel=1e-13) and np.allclose(only_soft[1], plain[1], rtol=1e-12,
                                                                              atol=1e-15)


@given(problem=problems())
def test_fused_hinton_loss_equals_its_weighted_reference_twin(problem):
    """One backprop on the summed logit seed = the weighted sum of the two separate losses (S1.3)."""
    student, teacher, t, x, y, _ = problem
    loss = HintonLoss(t, 0.6, 0.3)
    targets = KDTargets(TemperedTeacher(MLPTeacher(teacher), t).label(x), one_hot(y, student.sizes[-1]))
    fused = loss(student, x, targets)
    (w_s, soft), (w_h, hard) = loss.terms()
    vs, gs = soft(student, x, targets.soft)
    vh, gh = hard(student, x, Labels.from_probs(targets.hard))
    assert fused[0] == pytest.approx(w_s * vs + w_h * vh, rel=1e-12, abs=1e-14)
    np.testing.assert_allclose(fused[1], w_s * gs + w_h * gh, rtol=1e-10, atol=1e-13)


@given(problem=problems())
def test_full_weighted_objective_is_hinton_plus_t2_tempered_dse(problem):
    """HintonDSELoss (S1.3 + S1.9) = its three plain terms, each on its own targets; hinton_objective feeds it
    the tempered teacher's derivatives."""
    student, teacher, t, x, y, _ = problem
    loss = HintonDSELoss(t, 0.6, 0.3, 0.2)
    soft = TemperedTeacher(MLPTeacher(teacher), t).label(x, derivatives=True)
    targets = KDTargets(soft, one_hot(y, student.sizes[-1]))
    value, grad = loss(student, x, targets)
    (w_s, soft_loss), (w_h, hard_loss), (w_d, dse_loss) = loss.terms()
    assert w_d == pytest.approx(0.2 * t**2, rel=1e-15)
    parts = [(w_s, soft_loss(student, x, soft)), (w_h, hard_loss(student, x, Labels.from_probs(targets.hard))),
             (w_d, dse_loss(student, x, soft))]
    assert value == pytest.approx(sum(w * v for w, (v, _) in parts), rel=1e-12, abs=1e-14)
    np.testing.assert_allclose(grad, sum(w * g for w, (_, g) in parts), rtol=1e-10, atol=1e-13)
    via = hinton_objective(student, MLPTeacher(teacher), loss)((x, y))
    assert via[0] == value and np.array_equal(via[1], grad)
    # w_dse = 0 is Hinton's objective
    zero = HintonDSELoss(t, 0.6, 0.3, 0.0)(student, x, targets)
    plain = HintonLoss(t, 0.6, 0.3)(student, x, targets)
    assert zero[0] == plain[0] and np.array_equal(zero[1], plain[1])


def test_hinton_weights_map_the_conventions():
    assert hinton_weights(0.3, "hinton") == (1.0, 0.3)
    assert hinton_weights(0.25, "pytorch_tutorial") == (0.25, 0.75)
    assert hinton_weights(0.1, "keras") == pytest.approx((0.9, 0.1))
    assert hinton_weights(0.5, "torchdistill") == (0.5, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        hinton_weights(1.5, "keras")
    with pytest.raises(ValueError, match="form"):
        hinton_weights(0.5, "mmdet")


def test_centred_logit_matching_is_invariant_to_a_row_constant_and_uncentred_is_not(rng):
    student = MLP([3, 4, 5], ["logistic", "log_softmax"], rng)
    net = MLP([3, 4, 5], ["probit", "log_softmax"], rng)
    x = rng.normal(size=(6, 3))
    labels = TemperedTeacher(MLPTeacher(net), 1.0).label(x)
    shifted = TemperedLabels(labels.probs, labels.log_probs, None, 1.0, labels.logits + rng.normal(size=(6, 1)) * 5)
    for loss, same in ((LogitMatchingLoss(), True), (LogitMatchingLoss(centred=False), False)):
        a, b = loss(student, x, labels), loss(student, x, shifted)
        assert (abs(a[0] - b[0]) < 1e-12 * (1 + a[0])) == same
    # centred from log-probabilities = centred from logits
    lp, lg = LogitMatchingLoss()(student, x, MLPTeacher(net).label(x)), LogitMatchingLoss()(student, x, labels)
    assert lp[0] == pytest.approx(lg[0], rel=1e-12) and np.allclose(lp[1], lg[1], rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------- teachers
def test_tempered_teacher_derivatives_match_differences_of_tempered_log_probs(rng):
    net = MLP([3, 5, 4], ["logistic", "log_softmax"], rng)
    net.params[...] *= 3
    x = rng.normal(size=(2, 3))
    for t in (0.3, 1.0, 6.0):
        teacher = TemperedTeacher(MLPTeacher(net), t)
        d = teacher.label(x, derivatives=True).d_log_probs
        for n in range(2):
            for i in range(4):
                num = gradcheck.numerical_gradient(lambda v: tempered_log_softmax(net.forward(v[None]).a[-1], t)[0, i],
                                                   x[n])
                np.testing.assert_allclose(d[n, i], num, rtol=1e-7, atol=1e-9)
        # the same through an ensemble teacher's (log_mean_exp) labels: the generic route
        ens = TemperedTeacher(EnsembleTeacher([net], combine="log_mean_exp"), t).label(x, derivatives=True)
        np.testing.assert_allclose(ens.d_log_probs, d, rtol=1e-12, atol=1e-14)


def test_ensemble_rules(rng):
    members = [MLP([3, 4, 5], ["logistic", "log_softmax"], rng), MLP([3, 6, 5], ["relu", "softmax"], rng),
               MLP([3, 2, 5], ["probit", "log_softmax"], rng)]
    for m in members:
        m.params[...] *= 2
    x = rng.normal(size=(8, 3))
    # mean at t = 1 is the thesis's ensemble, bit for bit
    old, new = EnsembleTeacher(members, "mean").label(x), TemperedEnsembleTeacher(members, 1.0, "mean").label(x)
    assert np.array_equal(old.probs, new.probs) and np.array_equal(old.log_probs, new.log_probs)
    # geometric is softmax(mean logit / t) exactly
    t = 3.7
    logits = np.mean([m.forward(x).a[-1] for m in members], axis=0)
    geo = TemperedEnsembleTeacher(members, t, "geometric").label(x)
    assert np.array_equal(geo.log_probs, LogSoftmax().forward(logits / t))
    # tempered_mean = TemperedTeacher around the t = 1 ensemble, and differs from mean
    tm = TemperedEnsembleTeacher(members, t, "tempered_mean").label(x)
    np.testing.assert_allclose(tm.probs, TemperedTeacher(EnsembleTeacher(members, "mean"), t).label(x).probs,
                               rtol=1e-12)
    assert np.max(np.abs(tm.probs - TemperedEnsembleTeacher(members, t, "mean").label(x).probs)) > 1e-4


def test_every_ensemble_rule_reaches_logit_matching_with_its_own_v(rng):
    """S1.6 for the three S1.4 rules: t (q - p) -> P(z - v)/C, v the mean member logit (mean, geometric)
    or log p-bar (tempered_mean); the error falls like 1/t, and tempered_mean misses the mean-logit limit."""
    members = [MLP([3, 4, 5], ["logistic", "log_softmax"], rng) for _ in range(3)]
    for m in members:
        m.params[...] *= 3
    x = rng.normal(size=(6, 3))
    z = rng.normal(0, 2, size=(6, 5))
    mean_logit = np.mean([m.forward(x).a[-1] for m in members], axis=0)
    log_bar = EnsembleTeacher(members, "mean").label(x).log_probs
    ts = [1e2, 1e3, 1e4]
    for rule, v in (("mean", mean_logit), ("geometric", mean_logit), ("tempered_mean", log_bar)):
        errs = []
        for t in ts:
            p = TemperedEnsembleTeacher(members, t, rule).label(x).probs
            errs.append(np.max(np.abs(t * (tempered_softmax(z, t) - p) - centre(z - v) / 5)))
        assert fitted_slope(ts, errs) == pytest.approx(-1.0, abs=0.1), (rule, errs)
    p = TemperedEnsembleTeacher(members, 1e4, "tempered_mean").label(x).probs
    assert np.max(np.abs(1e4 * (tempered_softmax(z, 1e4) - p) - centre(z - mean_logit) / 5)) > 1e-2


# ------------------------------------------------------------------ limits
def _draws(rng, n=200, c=10):
    return rng.normal(0, 3, size=(n, c)) + 1.0, rng.normal(0, 3, size=(n, c)) - 2.0


def test_high_temperature_limit_has_slope_minus_one_and_the_uncentred_control_fails(rng):
    """S1.6: |t^2 KL - ||P(z - v)||^2/(2C)| and max|t(q - p) - P(z - v)/C| fall like 1/t over t in [1e2, 1e4]
    (medians over 200 draws); the uncentred 1/2||z - v||^2/C stays away when the means differ."""
    z, v = _draws(rng)
    med = {k: [] for k in ("value", "grad", "control")}
    for t in TS:
        errs = [limit_errors(z[i:i + 1], v[i:i + 1], t) for i in range(z.shape[0])]
        for k in med:
            med[k].append(np.median([getattr(e, k) for e in errs]))
    for k in ("value", "grad"):
        assert fitted_slope(TS[2:], med[k][2:]) == pytest.approx(-1.0, abs=0.1), (k, med[k])
    assert 1e-4 < med["value"][-1] < 1e-3          # the documented size, ~3.6e-4 at t = 1e4 (S1.D)
    assert abs(fitted_slope(TS[2:], med["control"][2:])) < 0.1 and med["control"][-1] > 1.0
    # with zero-mean logits (Hinton's assumption) the uncentred form converges too
    zc, vc = centre(z), centre(v)
    ctrl = [np.median([limit_errors(zc[i:i + 1], vc[i:i + 1], t).control for i in range(200)]) for t in TS[2:]]
    assert fitted_slope(TS[2:], ctrl) == pytest.approx(-1.0, abs=0.1)


def test_tempered_dse_limit_is_centred_jacobian_matching_with_slope_minus_two(rng):
    """S1.9: t^2 l_dse(t) -> ||P(J_z - J_v)||_F^2 with an O(1/t^2) error; the uncentred Jacobian control does not."""
    student = MLP([3, 5, 4], ["logistic", "log_softmax"], rng)
    teacher = MLP([3, 6, 4], ["probit", "log_softmax"], rng)
    x = rng.normal(size=(5, 3))
    # P J_z = P d(log softmax z)/dx: the subtracted row is the same for every class (S1.9)
    Jz = MLPTeacher(student).label(x, derivatives=True).d_log_probs
    Jv = MLPTeacher(teacher).label(x, derivatives=True).d_log_probs
    cen = lambda J: J - J.mean(axis=1, keepdims=True)                             # noqa: E731
    limit = np.sum((cen(Jz) - cen(Jv)) ** 2) / x.shape[0]
    ts = [10.0, 1e2, 1e3]
    errs = []
    for t in ts:
        labels = TemperedTeacher(MLPTeacher(teacher), t).label(x, derivatives=True)
        errs.append(abs(t**2 * TemperedDerivativeSquareErrorLoss(t)(student, x, labels)[0] - limit))
    assert fitted_slope(ts, errs) == pytest.approx(-2.0, abs=0.15), errs
    uncentred = np.sum((Jz - Jv) ** 2) / x.shape[0]
    assert abs(t**2 * TemperedDerivativeSquareErrorLoss(t)(student, x, labels)[0] - uncentred) > 1e-3


def test_tempered_dse_at_t_1_is_the_thesis_dse(rng):
    student = MLP([3, 5, 4], ["logistic", "softmax"], rng)
    teacher = MLPTeacher(MLP([3, 6, 4], ["probit", "log_softmax"], rng))
    x = rng.normal(size=(5, 3))
    a = DerivativeSquareErrorLoss()(student, x, teacher.label(x, derivatives=True))
    b = TemperedDerivativeSquareErrorLoss(1.0)(student, x, teacher.label(x, derivatives=True))
    assert a[0] == pytest.approx(b[0], rel=1e-12) and np.allclose(a[1], b[1], rtol=1e-10, atol=1e-14)


def test_hinton_objective_trains_with_weighted_loss_and_the_distill_objective(rng):
    """The tempered losses compose with compression's WeightedLoss and kd_ref.distill.objective."""
    student = MLP([3, 4, 3], ["logistic", "log_softmax"], rng)
    teacher = TemperedTeacher(MLPTeacher(MLP([3, 4, 3], ["relu", "log_softmax"], rng)), 4.0)
    loss = WeightedLoss([(16.0, SoftCrossEntropyLoss(4.0)), (0.5, TemperedDerivativeSquareErrorLoss(4.0))])
    x = rng.normal(size=(5, 3))
    value, grad = objective(student, loss, teacher_targets(student, teacher, loss))(x)
    assert np.isfinite(value) and grad.shape == (student.n_params,)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("t", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperatures_are_refused_by_name(t, rng):
    for make in (SoftCrossEntropyLoss, TemperedDerivativeSquareErrorLoss, lambda t: HintonLoss(t),
                 lambda t: TemperedTeacher(MLPTeacher(MLP([2, 2], ["log_softmax"], rng)), t)):
        with pytest.raises(ValueError, match="^t: expected a value in"):
            make(t)
    with pytest.raises(ValueError, match="^t: "):
        tempered_log_softmax(np.zeros((1, 2)), t)


def test_bad_weights_labels_temperatures_and_missing_derivatives(rng):
    student = MLP([2, 3], ["log_softmax"], rng)
    p0 = student.params.copy()
    teacher = MLPTeacher(MLP([2, 3], ["log_softmax"], rng))
    x = rng.normal(size=(4, 2))
    with pytest.raises(ValueError, match="^w_soft: "):
        HintonLoss(2.0, w_soft=-1.0)
    with pytest.raises(ValueError, match="^w_hard: "):
        HintonLoss(2.0, w_hard=-0.1)
    with pytest.raises(ValueError, match=r"^labels: expected labels in 0\.\.2, received labels in 0\.\.3"):
        hinton_objective(student, teacher, HintonLoss(2.0))((x, np.array([0, 1, 2, 3])))
    with pytest.raises(ValueError, match=r"^labels: expected soft targets at temperature 2 .*received labels at "
                                         r"temperature 1"):
        SoftCrossEntropyLoss(2.0)(student, x, teacher.label(x))
    with pytest.raises(ValueError, match="teacher input derivatives"):
        TemperedDerivativeSquareErrorLoss(2.0)(student, x, TemperedTeacher(teacher, 2.0).label(x))
    with pytest.raises(ValueError, match="^labels: expected teacher logits"):
        LogitMatchingLoss(centred=False)(student, x, teacher.label(x))
    with pytest.raises(ValueError, match="^teacher: expected a teacher at the loss's temperature 2"):
        hinton_objective(student, TemperedTeacher(teacher, 3.0), HintonLoss(2.0))
    with pytest.raises(TypeError, match="^targets: expected KDTargets"):
        HintonLoss(2.0)(student, x, teacher.label(x))
    with pytest.raises(ValueError, match="^w_dse: "):
        HintonDSELoss(2.0, w_dse=-1.0)
    no_derivatives = KDTargets(TemperedTeacher(teacher, 2.0).label(x), one_hot(np.array([0, 1, 2, 0]), 3))
    with pytest.raises(ValueError, match="^targets.soft: expected teacher input derivatives"):
        HintonDSELoss(2.0)(student, x, no_derivatives)
    with pytest.raises(ValueError, match="^teacher: expected a teacher with input derivatives"):
        hinton_objective(student, TemperedEnsembleTeacher([teacher.net], 2.0), HintonDSELoss(2.0))
    with pytest.raises(ValueError, match="^derivatives: "):
        TemperedEnsembleTeacher([teacher.net], 2.0).label(x, derivatives=True)
    with pytest.raises(ValueError, match="^combine: "):
        TemperedEnsembleTeacher([teacher.net], 2.0, "median")
    assert np.array_equal(student.params, p0)
