"""GPED students and losses (SPEC_seeds S3.9, S3.10, S3.13): value, gradient and R-form of every loss and head
against central differences on hypothesis-drawn cases, huge logits against mpmath, and bad input named."""
import mpmath
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import special

from kd_ref import gradcheck
from kd_ref.distill.gped import (DirichletLoss, EntropyLoss, JointLoss, PredictiveLoss, ProbabilityLoss,
                                 gped_student, smooth_probabilities)
from kd_ref.mlp import MLP
from kd_ref.outputs import AbsoluteError, DirichletLogLikelihood, PredictiveEntropyOutput

from _tolerance import passes

KINDS = list(ProbabilityLoss.KINDS)
KINK = 1e-2          # l1 and MAE: stay this far from f = g (a step of 2e-4 in y moves f by less)


def _random_probs(rng, n, c, concentration):
    return rng.dirichlet(np.full(c, concentration), size=n)


@st.composite
def logit_cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n, c = draw(st.integers(1, 4)), draw(st.integers(2, 6))
    y = rng.normal(0.0, draw(st.floats(0.3, 4.0)), size=(n, c))
    g = _random_probs(rng, n, c, draw(st.sampled_from([0.3, 1.0, 5.0])))
    g = smooth_probabilities(g, 1e-3)          # rkl takes log g: keep g away from 0
    return rng, y, g


def _output_functions(kind, y, g, rng):
    """An output function of y and the margin to its kink (inf where it has none)."""
    if kind in KINDS:
        out = ProbabilityLoss(g, kind)
        p = special.softmax(y, axis=1)
        return out, (np.min(np.abs(p - g)) if kind == "l1" else np.inf)
    if kind == "dirichlet":
        return DirichletLogLikelihood(g), np.inf
    if kind == "abs":
        t = y + rng.choice([-1, 1], size=y.shape) * rng.uniform(0.1, 1.0, size=y.shape)
        return AbsoluteError(t), np.min(np.abs(y - t))
    # the split head: C - 1 logits and a log-entropy (C >= 3 columns), predictive part of any kind
    pred_kind = kind.split(":")[1]
    if y.shape[1] < 3:
        return None, 0.0
    h = np.exp(y[:, -1]) * rng.uniform(0.2, 3.0, size=y.shape[0])
    g_pred = smooth_probabilities(_random_probs(rng, y.shape[0], y.shape[1] - 1, 1.0), 1e-3)
    out = PredictiveEntropyOutput(ProbabilityLoss(g_pred, pred_kind), h, weight=rng.uniform(0.2, 2.0))
    p = special.softmax(y[:, :-1], axis=1)
    margin = min(np.min(np.abs(np.exp(y[:, -1]) - h) / np.exp(y[:, -1])),
                 np.min(np.abs(p - g_pred)) if pred_kind == "l1" else np.inf)
    return out, margin


def _check_all_three(value, grad, hvp, z0, rng, rtols):
    """check_gradient, check_hvp (random direction v) and check_symmetry at z0; returns v."""
    result = gradcheck.check_gradient(value, grad, z0)
    assert passes(result, rtols[0], value(z0)), str(result)
    u, v = rng.normal(size=(2, z0.size))
    result = gradcheck.check_hvp(grad, hvp, z0, v)
    assert passes(result, rtols[1], grad(z0)), str(result)
    sym = gradcheck.check_symmetry(hvp, z0, u, v)
    assert sym.passed(1e-12), str(sym)
    return v


HEADS = KINDS + ["dirichlet", "abs"] + [f"split:{k}" for k in KINDS]


@pytest.mark.parametrize("kind", HEADS)
@settings(max_examples=25, deadline=None)
@given(case=logit_cases())
def test_output_function_gradient_r_form_and_hessian_match_differences(kind, case):
    """At the output y: dE/dy against differences of E, R{dE/dy} against differences of dE/dy along a random
    direction, u^T H v = v^T H u, and hess(y) equal to the R-form column by column (S3.10, S3.13, S3.9)."""
    rng, y, g = case
    out, margin = _output_functions(kind, y, g, rng)
    assume(out is not None and margin > KINK)
    shape = y.shape
    value = lambda z: out.value(z.reshape(shape))                          # noqa: E731
    grad = lambda z: out.grad(z.reshape(shape)).ravel()                     # noqa: E731
    hvp = lambda z, v: out.r_grad(z.reshape(shape), v.reshape(shape)).ravel()   # noqa: E731
    z0 = y.ravel()
    v = _check_all_three(value, grad, hvp, z0, rng, (1e-8, 1e-7))
    H = out.hess(y)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", H, v.reshape(shape)), hvp(z0, v).reshape(shape),
                               rtol=1e-12, atol=1e-14 * (1 + np.abs(H).max()))


def test_dirichlet_hessian_is_the_formula_of_s3_13_with_trigamma():
    """d^2E/dz_k dz_j = -delta_kj [alpha_k (psi(alpha_k) - psi(alpha_0) - ln pi_k) + alpha_k^2 psi'(alpha_k)]
    + alpha_k alpha_j psi'(alpha_0), psi' = scipy.special.polygamma(1, .), written out entry by entry."""
    rng = np.random.default_rng(7)
    z = rng.normal(size=(3, 4))
    pi = _random_probs(rng, 3, 4, 2.0)
    H = DirichletLogLikelihood(pi).hess(z)
    for n in range(3):
        a = np.exp(z[n])
        a0 = a.sum()
        for k in range(4):
            for j in range(4):
                want = a[k] * a[j] * special.polygamma(1, a0)
                if k == j:
                    want -= a[k] * (special.digamma(a[k]) - special.digamma(a0) - np.log(pi[n, k])) + \
                        a[k] ** 2 * special.polygamma(1, a[k])
                assert H[n, k, j] == pytest.approx(want, rel=1e-12, abs=1e-14)


def test_dirichlet_log_likelihood_is_scipys_dirichlet_logpdf():
    rng = np.random.default_rng(3)
    from scipy import stats
    z = rng.normal(size=(5, 3))
    pi = _random_probs(rng, 5, 3, 1.5)
    want = sum(stats.dirichlet.logpdf(p, np.exp(r)) for p, r in zip(pi, z))
    assert DirichletLogLikelihood(pi).value(z) == pytest.approx(want, rel=1e-12)


# ----------------------------------------------------------------------- huge logits against mpmath
def _mp_loss(kind, y_row, g_row):
    """The per-example loss and its y-gradient in 60 digits (mpmath's diff on the exact formula)."""
    with mpmath.workdps(60):
        g = [mpmath.mpf(float(v)) for v in g_row]

        def loss(*y):
            m = max(y)
            lse = m + mpmath.log(mpmath.fsum(mpmath.exp(v - m) for v in y))
            lf = [v - lse for v in y]
            f = [mpmath.exp(v) for v in lf]
            ce = -mpmath.fsum(gi * li for gi, li in zip(g, lf))
            kl = ce + mpmath.fsum(gi * mpmath.log(gi) for gi in g)
            rkl = mpmath.fsum(fi * (li - mpmath.log(gi)) for fi, li, gi in zip(f, lf, g))
            return {"ce": ce, "kl": kl, "rkl": rkl, "sym": (kl + rkl) / 2,
                    "l1": mpmath.fsum(abs(fi - gi) for fi, gi in zip(f, g)),
                    "se": mpmath.fsum((fi - gi) ** 2 for fi, gi in zip(f, g))}[kind]

        y = [mpmath.mpf(float(v)) for v in y_row]
        grad = [mpmath.diff(lambda t, i=i: loss(*(y[:i] + [t] + y[i + 1:])), y[i]) for i in range(len(y))]
        return float(loss(*y)), np.array([float(v) for v in grad])


@pytest.mark.parametrize("kind", KINDS)
def test_huge_logit_gaps_are_exact_against_mpmath(kind):
    """Logit gaps of 1e3 (f rounds to one-hot in float64): every loss's value and gradient within a few ulps
    of a 60-digit reference of its own size (the top entry's 1 - f_m is never formed from a rounded f_m)."""
    y = np.array([[1000.0, 0.0, -3.0], [-700.0, 5.0, 5.5], [2.0, 1.0, 0.5]])
    g = np.array([[0.2, 0.5, 0.3], [1e-12, 0.4, 0.6 - 1e-12], [0.7, 0.2, 0.1]])
    out = ProbabilityLoss(g, kind)
    grads = out.grad(y)
    values = [ProbabilityLoss(g[i:i + 1], kind).value(y[i:i + 1]) for i in range(3)]
    for i in range(3):
        want_value, want_grad = _mp_loss(kind, y[i], g[i])
        assert values[i] == pytest.approx(want_value, rel=1e-13, abs=1e-300)
        np.testing.assert_allclose(grads[i], want_grad, rtol=1e-12, atol=1e-15 * np.abs(want_grad).max())


def test_dirichlet_with_huge_and_tiny_concentrations_stays_finite_and_matches_mpmath():
    """alpha from e^-40 to e^40: E and dE/dz against mpmath's loggamma/digamma in 50 digits."""
    z = np.array([[40.0, -40.0, 0.0]])
    pi = smooth_probabilities(np.array([[0.9, 0.0, 0.1]]))
    out = DirichletLogLikelihood(pi)
    with mpmath.workdps(50):
        a = [mpmath.exp(mpmath.mpf(v)) for v in z[0]]
        a0 = mpmath.fsum(a)
        lp = [mpmath.log(mpmath.mpf(float(p))) for p in pi[0]]
        value = mpmath.loggamma(a0) - mpmath.fsum(mpmath.loggamma(v) for v in a) + \
            mpmath.fsum((v - 1) * l for v, l in zip(a, lp))
        grad = [-v * (mpmath.digamma(v) - mpmath.digamma(a0) - l) for v, l in zip(a, lp)]
    assert out.value(z) == pytest.approx(float(value), rel=1e-12)
    np.testing.assert_allclose(out.grad(z)[0], [float(v) for v in grad], rtol=1e-9)


# ------------------------------------------------------------------------ the loss protocol on students
@st.composite
def students(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    d, c, n = draw(st.integers(1, 3)), draw(st.integers(2, 4)), draw(st.integers(1, 4))
    hidden = [draw(st.integers(1, 4)) for _ in range(draw(st.integers(1, 2)))]
    teacher = MLP([d, *hidden, c], [draw(st.sampled_from(["logistic", "probit", "linear"])) for _ in hidden] +
                  ["log_softmax"], rng)
    kind = draw(st.sampled_from(KINDS))
    return rng, teacher, kind, rng.normal(size=(n, d))


def _loss_case(which, rng, teacher, kind, x):
    n, c = x.shape[0], teacher.sizes[-1]
    g = smooth_probabilities(_random_probs(rng, n, c, 1.0), 1e-3)
    if which == "predictive":
        return PredictiveLoss(kind), gped_student(teacher, rng, head="predictive"), g
    if which == "predictive_on_entropy_head":
        return PredictiveLoss(kind), gped_student(teacher, rng, head="entropy"), g
    if which == "entropy":
        return EntropyLoss(), gped_student(teacher, rng, head="entropy"), rng.uniform(0.0, 1.5, size=(n, 1))
    if which == "both":
        h = rng.uniform(0.0, 1.5, size=(n, 1))
        return JointLoss(kind, weight=0.7), gped_student(teacher, rng, head="entropy"), np.hstack([g, h])
    return DirichletLoss(), gped_student(teacher, rng, head="dirichlet"), _random_probs(rng, n, c, 0.5)


def _margin(loss, student, x, targets):
    """Distance of the student's outputs from the kinks of l1 and MAE (inf when the loss has none)."""
    y = student.predict(x)
    margins = [np.inf]
    if isinstance(loss, (EntropyLoss, JointLoss)):
        margins.append(np.min(np.abs(np.exp(y[:, -1]) - targets[:, -1]) / np.exp(y[:, -1])))
    if getattr(loss, "kind", None) == "l1":
        c = targets.shape[1] - isinstance(loss, JointLoss)
        margins.append(np.min(np.abs(special.softmax(y[:, :c], axis=1) - targets[:, :c])))
    return min(margins)


WHICH = ["predictive", "predictive_on_entropy_head", "entropy", "both", "dirichlet"]


@pytest.mark.parametrize("which", WHICH)
@settings(max_examples=20, deadline=None)
@given(case=students())
def test_loss_protocol_gradient_and_hvp_match_differences(which, case):
    """loss(student, x, targets) -> (mean loss, theta-gradient) and loss.hvp: central differences in theta,
    u^T H v = v^T H u, for every GPED loss on a random student (smooth hidden units, away from kinks)."""
    rng, teacher, kind, x = case
    loss, student, targets = _loss_case(which, rng, teacher, kind, x)
    student.params[...] = rng.normal(0.0, 0.8, size=student.n_params)
    assume(_margin(loss, student, x, targets) > KINK)
    p0 = student.params.copy()

    def at(p, fn, *args):
        student.params[...] = p
        return fn(*args)

    value = lambda p: at(p, loss, student, x, targets)[0]                  # noqa: E731
    grad = lambda p: at(p, loss, student, x, targets)[1]                   # noqa: E731
    hvp = lambda p, v: at(p, loss.hvp, student, x, targets, v)             # noqa: E731
    _check_all_three(value, grad, hvp, p0, rng, (1e-7, 1e-6))
    student.params[...] = p0
    # the minibatch mean: the loss of N rows is the average of the N one-row losses
    singles = [loss(student, x[i:i + 1], targets[i:i + 1])[0] for i in range(x.shape[0])]
    assert loss(student, x, targets)[0] == pytest.approx(np.mean(singles), rel=1e-12, abs=1e-300)


def test_entropy_head_is_exp_of_the_last_linear_unit_and_predictive_loss_leaves_it_alone():
    """S3.9: h(x) = exp(y_C) >= 0; a predictive loss gives the entropy unit's weights no gradient."""
    rng = np.random.default_rng(0)
    teacher = MLP([2, 5, 3], ["relu", "log_softmax"], rng)
    student = gped_student(teacher, rng, head="entropy")
    assert student.sizes == [2, 5, 4] and student.nonlinearities == ["relu", "linear"]
    x = rng.normal(size=(6, 2))
    g = _random_probs(rng, 6, 3, 1.0)
    _, grad = PredictiveLoss("ce")(student, x, g)
    W2, b2 = student.param_views(grad)[2:]
    assert np.all(W2[-1] == 0) and b2[-1] == 0 and np.any(W2[:-1] != 0)
    _, grad = EntropyLoss()(student, x, rng.uniform(0, 1, size=(6, 1)))
    W2, b2 = student.param_views(grad)[2:]
    assert np.all(W2[:-1] == 0) and np.all(b2[:-1] == 0) and np.any(W2[-1] != 0)


def test_smoothing_keeps_rows_normalised_and_every_entry_positive():
    p = np.array([[1.0, 0.0, 0.0], [0.25, 0.25, 0.5]])
    s = smooth_probabilities(p, 1e-7)
    np.testing.assert_allclose(s.sum(axis=1), 1.0, rtol=1e-15)
    assert s.min() == pytest.approx(1e-7 / 3, rel=1e-9) and s[0, 0] == pytest.approx(1 - 2e-7 / 3, rel=1e-15)


# ------------------------------------------------------------------------------------ bad input
def test_bad_targets_students_and_kinds_are_named():
    rng = np.random.default_rng(1)
    teacher = MLP([2, 4, 3], ["relu", "log_softmax"], rng)
    student = gped_student(teacher, rng, head="predictive")
    x = rng.normal(size=(2, 2))
    good = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"targets: expected class probabilities \(entries in \[0, 1\], rows summing "
                                         r"to 1\), received entries in \[-0.1, 1.0\]"):
        PredictiveLoss()(student, x, np.array([[0.5, 0.6, -0.1], [1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"row sums in \[0.9, 1.0\]"):
        PredictiveLoss()(student, x, np.array([[0.2, 0.2, 0.5], [1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"targets: expected 2 rows \(one per input\), received shape \(1, 3\)"):
        PredictiveLoss()(student, x, good[:1])
    with pytest.raises(ValueError, match=r"t: expected targets > 0 for the reverse KL"):
        PredictiveLoss("rkl")(student, x, good)
    with pytest.raises(ValueError, match=r"kind: expected one of \['ce', 'kl', 'rkl', 'sym', 'l1', 'se'\], "
                                         r"received 'hinge'"):
        PredictiveLoss("hinge")
    with pytest.raises(ValueError, match=r"student: expected a linear last layer of 3 outputs \(C log-concentrations\)"):
        DirichletLoss()(gped_student(teacher, rng, head="entropy"), x, good)
    with pytest.raises(ValueError, match=r"student: expected a linear last layer of 3 or 4 outputs"):
        PredictiveLoss()(teacher, x, good)
    with pytest.raises(ValueError, match=r"targets: expected 2 entropies >= 0"):
        EntropyLoss()(gped_student(teacher, rng), x, np.array([[0.1], [-0.2]]))
    with pytest.raises(ValueError, match=r"head: expected one of \['predictive', 'entropy', 'dirichlet'\]"):
        gped_student(teacher, rng, head="mean")
    with pytest.raises(ValueError, match=r"t: expected probabilities > 0 \(smooth them first"):
        DirichletLogLikelihood(good)
    with pytest.raises(ValueError, match=r"smoothing: expected a value in \(0.0, 1.0\], received 0.0"):
        DirichletLoss(0.0)
    with pytest.raises(TypeError, match="student: expected a kd_ref.mlp.MLP"):
        PredictiveLoss()("net", x, good)


@pytest.mark.parametrize("head", ["rkl", "split:sym", "entropy_only", "dirichlet"])
def test_curvature_of_s1_c_works_on_the_gped_heads(head):
    """The exact Hessian diagonal of kd_ref.curvature (S1.12, per-example output Hessians from ``hess``, chunked by
    ``rows``) on a GPED student equals the brute force e_k^T H e_k by R{backprop}, for every head (S3.9, S3.13)."""
    from kd_ref import curvature
    rng = np.random.default_rng(4)
    n, c = 6, 3
    g = smooth_probabilities(_random_probs(rng, n, c, 1.0), 1e-3)
    h = rng.uniform(0.1, 1.0, size=n)
    if head == "rkl":
        student, out = MLP([2, 4, c], ["logistic", "linear"], rng), ProbabilityLoss(g, "rkl")
    elif head == "split:sym":
        student, out = MLP([2, 4, c + 1], ["logistic", "linear"], rng), PredictiveEntropyOutput(
            ProbabilityLoss(g, "sym"), h, 0.5)
    elif head == "entropy_only":
        student, out = MLP([2, 4, c + 1], ["logistic", "linear"], rng), PredictiveEntropyOutput(None, h, n_classes=c)
    else:
        student, out = MLP([2, 4, c], ["logistic", "linear"], rng), DirichletLogLikelihood(g)
    x = rng.normal(size=(n, 2))
    exact = curvature.hessian_diagonal(student, x, out, scale=1.0 / n, method="exact", chunk=4)   # two chunks
    brute = curvature.hessian_diagonal(student, x, out, scale=1.0 / n, method="brute")
    np.testing.assert_allclose(exact.diag, brute.diag, rtol=1e-10, atol=1e-13 * np.abs(brute.diag).max())
