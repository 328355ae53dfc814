"""GPED's algorithm (SPEC_seeds S3.11-S3.14): BDK is the thesis's online cross-entropy distillation, a tiny end-to-end
run beats the plug-in baseline (and a frozen student does not), resume is bit-identical, the presets and the refusals,
and the students' uncertainty decomposition (EnD^2's expected entropy against Dirichlet Monte Carlo)."""
import os
from dataclasses import replace

import numpy as np
import pytest
from scipy import optimize, special

from kd_ref.distill import distill
from kd_ref.distill.compression import CrossEntropyLoss, Labels
from kd_ref.distill.gped import (GPEDSettings, DirichletLoss, EntropyLoss, JointLoss, PredictiveLoss, bdk_settings,
                                 dirichlet_uncertainty, end2_settings, end2_uncertainty, gped_distill,
                                 gped_settings, gped_student, gped_uncertainty, student_log_probs)
from kd_ref.distill.predictive import BayesianLogisticRegression, bernoulli_kl, sample_targets, toy_logistic_data
from kd_ref.mcmc import SliceSampler
from kd_ref.metrics import entropy
from kd_ref.posterior import EnsembleAccumulator, OnlineAverage, StochasticEstimate, expected_entropy, predictive
from kd_ref.mlp import MLP
from kd_ref.optim import Adam, CheckpointError, Interrupted, generator_state, load_generator_state


# ---------------------------------------------------------------- a resumable chain of the sampler interface
class Langevin:
    """A resumable unadjusted Langevin chain with the sampler interface (next_batch, state, load_state)."""

    def __init__(self, grad, theta, rng, eta):
        self.grad, self.theta, self.rng, self.eta = grad, theta, rng, eta

    def next_batch(self, k):
        out = np.empty((k, self.theta.size))
        for i in range(k):
            self.theta += 0.5 * self.eta * self.grad(self.theta) + np.sqrt(self.eta) * \
                self.rng.standard_normal(self.theta.size)
            out[i] = self.theta
        return out

    def state(self):
        return {"theta": self.theta.copy(), "rng": generator_state(self.rng)}

    def load_state(self, state):
        self.theta[...] = state["theta"]
        load_generator_state(self.rng, state["rng"])


# ------------------------------------------------------------------------------- the toy problem
def _toy():
    """Chapter 3's logistic regression (3.41-3.42) on 2 x 10 points: posterior, teacher and slice sampler."""
    x, t = toy_logistic_data(np.random.default_rng(0))
    blr = BayesianLogisticRegression(x, t)
    return blr


def _teacher(w, x):
    """log p(. | x, w) = [log sigma(-w.x), log sigma(w.x)] (sample_targets with one w for every row)."""
    return sample_targets(np.tile(w, (x.shape[0], 1)), x).log_p


def _slice(blr, seed):
    s = SliceSampler(blr.log_posterior, np.zeros(2), np.random.default_rng(seed), vectorized=True)
    s.burn_in(100)
    return s


def test_bdk_step_is_the_thesis_online_cross_entropy_step():
    """S3.12: with (predictive, cross entropy, U_s), the GPED student gradient on one step's teacher state equals the
    thesis's cross-entropy distillation loss (2.5; 3.36-3.39) on chapter 3's single-sample targets
    (``sample_targets``) at the same inputs, to 1e-12 -- and a whole run of gped_distill equals kd_ref.distill.distill
    driven by the same chain and the same input stream, bit for bit. (Chapter 3's own ``predictive.CrossEntropyLoss``
    is tied to its zero-bias compact predictor trained in the first layer only, which is not a GPED student; its
    teacher, ``sample_targets``, and the thesis's cross entropy are what is compared.)"""
    blr = _toy()
    rng = np.random.default_rng(1)
    shape = MLP([2, 6, 2], ["logistic", "log_softmax"], rng)
    gped = gped_student(shape, rng, head="predictive")               # linear logits
    thesis = MLP([2, 6, 2], ["logistic", "log_softmax"], rng)         # the same network with its log-softmax
    thesis.set_params(gped.params)
    w = _slice(blr, 2).next_batch(1)[0]
    x = rng.uniform(-6, 6, size=(7, 2))
    targets = StochasticEstimate(7, 2).update(np.arange(7), predictive(_teacher(w, x)))
    value, grad = PredictiveLoss("ce")(gped, x, targets)
    labels = Labels.from_probs(sample_targets(np.tile(w, (7, 1)), x).p)
    want_value, want_grad = CrossEntropyLoss()(thesis, x, labels)
    assert value == pytest.approx(want_value, rel=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-15)

    # the whole online run: the same chain stream, the same inputs (indices then noise from one generator)
    d_prime = np.random.default_rng(3).uniform(-6, 6, size=(200, 2))
    settings = bdk_settings(n_steps=60, batch_size=9, input_noise=0.1, lr=1e-2, burn_in=0, thin=1)
    x_test = rng.uniform(-6, 6, size=(5, 2))
    result = gped_distill(_teacher, _slice(blr, 4), gped, predictive, StochasticEstimate(200, 2), PredictiveLoss("ce"),
                          d_prime, settings, np.random.default_rng(5), accumulator=EnsembleAccumulator(5, 2), test_inputs=x_test)
    chain_states = _slice(blr, 4).next_batch(60)                      # the teacher states the run used, in order
    np.testing.assert_allclose(result.teacher_accumulator.p_sum,
                               sum(np.exp(_teacher(w, x_test)) for w in chain_states), rtol=1e-13)
    chain, inputs_rng = _slice(blr, 4), np.random.default_rng(5)
    held = {}

    def inputs():
        held["w"] = chain.next_batch(1)[0]                            # the chain steps before the inputs are drawn
        idx = inputs_rng.integers(0, 200, size=9)
        return d_prime[idx] + 0.1 * inputs_rng.standard_normal((9, 2))

    def teacher(xs):
        return Labels.from_probs(sample_targets(np.tile(held["w"], (xs.shape[0], 1)), xs).p)

    distill(thesis, CrossEntropyLoss(), inputs, teacher, Adam(1e-2), 60, progress=False)
    np.testing.assert_array_equal(gped.params, thesis.params)          # the same arithmetic: bit for bit


@pytest.fixture(scope="module")
def toy_truth():
    """Ground truth on a 30 x 30 grid of [-6, 6]^2 by quadrature of the 2-D posterior over w (a 200 x 200 grid on
    [-60, 60]^2, six prior standard deviations), and the plug-in (MAP) predictive's grid-averaged KL to it."""
    blr = _toy()
    axis_w = np.linspace(-60, 60, 200)
    w = np.array(np.meshgrid(axis_w, axis_w)).reshape(2, -1).T
    log_weight = blr.log_posterior(w)
    keep = log_weight > log_weight.max() - 25                        # weights below e^-25 of the top: negligible
    w, log_weight = w[keep], log_weight[keep] - special.logsumexp(log_weight[keep])
    axis = np.linspace(-6, 6, 30)
    grid = np.array(np.meshgrid(axis, axis)).reshape(2, -1).T
    a = grid @ w.T
    log_truth = np.stack([special.logsumexp(special.log_expit(-a) + log_weight, axis=1),
                          special.logsumexp(special.log_expit(a) + log_weight, axis=1)], axis=1)
    w_map = optimize.minimize(lambda v: -blr.log_posterior(v[None])[0], np.ones(2)).x
    return blr, grid, log_truth, float(np.mean(bernoulli_kl(log_truth, _teacher(w_map, grid))))


def _toy_run(blr, lr, n_steps=400):
    student = gped_student(MLP([2, 10, 2], ["relu", "log_softmax"], np.random.default_rng(0)),
                           np.random.default_rng(3), head="predictive")
    d_prime = np.random.default_rng(4).uniform(-6, 6, size=(1000, 2))
    settings = bdk_settings(n_steps=n_steps, batch_size=50, lr=lr, burn_in=0, thin=1)
    gped_distill(_teacher, _slice(blr, 5), student, predictive, StochasticEstimate(1000, 2), PredictiveLoss("ce"), d_prime,
                 settings, np.random.default_rng(6))
    return student


def test_end_to_end_bdk_student_beats_the_plug_in_and_a_frozen_student_does_not(toy_truth):
    """S3.G end to end: a 2-10-2 student distilled online (BDK preset, 400 steps) has a grid-averaged KL to the
    slice-sampled predictive below the SGD/MAP plug-in's (BDK Table 2's ordering); the sabotaged run (student step
    size 0) must fail the same comparison."""
    blr, grid, log_truth, kl_plug_in = toy_truth
    kls = {}
    for lr in (3e-2, 0.0):
        student = _toy_run(blr, lr)
        kls[lr] = float(np.mean(bernoulli_kl(log_truth, student_log_probs(student, grid, head="predictive"))))
    assert kls[3e-2] < 0.5 * kl_plug_in, (kls, kl_plug_in)
    assert not kls[0.0] < kl_plug_in, (kls, kl_plug_in)


def _grad_log_posterior(blr, w):
    """d/dw of (3.41-3.42): sum_n z_n sigma(-w.z_n) - w / prior_var."""
    return blr.z.T @ special.expit(-(blr.z @ w)) - w / blr.prior_var


def test_a_run_interrupted_and_resumed_equals_the_uninterrupted_run_bit_for_bit(tmp_path):
    """S3.11: theta (the chain and its generator), phi, Adam and the U_o estimator are checkpointed; Ctrl-C at step
    13 of 30 and the same call again give exactly the final student, estimator and chain of one uninterrupted run."""
    blr = _toy()
    d_prime = np.random.default_rng(4).uniform(-6, 6, size=(40, 2))
    settings = gped_settings("both", n_steps=30, batch_size=8, lr=1e-2, lr_step=10, burn_in=0, thin=1)

    g = settings.make_g()                                   # the predictive and the expected entropy, (N, 3)

    def run(settings=settings, **kwargs):
        rng = np.random.default_rng(0)
        student = gped_student(MLP([2, 5, 2], ["logistic", "log_softmax"], rng), rng, head="entropy")
        chain = Langevin(lambda w: _grad_log_posterior(blr, w), np.zeros(2), np.random.default_rng(1), 0.05)
        est = settings.make_estimator(40, 2)
        result = gped_distill(_teacher, chain, student, g, est, JointLoss("ce"), d_prime, settings,
                              np.random.default_rng(3), accumulator=EnsembleAccumulator(6, 2), test_inputs=d_prime[:6], **kwargs)
        return student, chain, est, result

    whole_student, whole_chain, whole_est, whole = run()
    path = tmp_path / "gped.ckpt"

    def ctrl_c(step, loss):
        if step == 13:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as info:
        run(checkpoint=path, checkpoint_every=4, callback=ctrl_c)
    assert info.value.saved_step == 13 and os.path.exists(path)
    student, chain, est, resumed = run(checkpoint=path, checkpoint_every=4)   # a new process: fresh objects
    np.testing.assert_array_equal(student.params, whole_student.params)
    np.testing.assert_array_equal(chain.theta, whole_chain.theta)
    np.testing.assert_array_equal(est.mean, whole_est.mean)
    np.testing.assert_array_equal(est.counts, whole_est.counts)
    np.testing.assert_array_equal(resumed.history.losses, whole.history.losses)
    np.testing.assert_array_equal(resumed.teacher_accumulator.p_sum, whole.teacher_accumulator.p_sum)
    assert resumed.teacher_accumulator.n_members == 30
    assert np.any(est.counts > 1)                   # rows revisited: the estimator's saved state mattered
    with pytest.raises(CheckpointError, match="settings.lr"):                  # other settings: refused, not mixed
        run(checkpoint=path, settings=replace(settings, lr=2e-2))


# ------------------------------------------------------------------------ presets and refusals
def test_presets_state_the_special_cases_of_s3_12():
    bdk, gp, end2 = bdk_settings(), gped_settings("entropy"), end2_settings()
    assert (bdk.target, bdk.loss, bdk.estimator) == ("predictive", "ce", "stochastic")
    assert (gp.target, gp.loss, gp.estimator, gp.input_noise) == ("entropy", "mae", "online", 1e-3)
    assert (end2.target, end2.loss, end2.estimator, end2.smoothing) == ("dirichlet", "dirichlet", "stochastic", 1e-7)
    assert isinstance(gped_settings("both").make_loss(), JointLoss)
    assert isinstance(end2.make_loss(), DirichletLoss)
    assert bdk_settings(n_steps=5).n_steps == 5 and GPEDSettings(**bdk.as_dict()) == bdk
    opt = gped_settings(lr_step=3).make_optimizer()
    assert [opt.schedule(t) for t in (0, 2, 3, 6)] == [1e-3, 1e-3, 5e-4, 2.5e-4]


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match=r"batch_size: expected an integer >= 1, received 0"):
        gped_settings(batch_size=0)
    with pytest.raises(ValueError, match=r"clip: expected None or \(low, high\) with low < high, received \(1, 0\)"):
        bdk_settings(clip=(1, 0))
    with pytest.raises(ValueError, match=r"target: expected one of \['predictive', 'entropy', 'both'\], received 'x'"):
        gped_settings("x")
    with pytest.raises(ValueError, match=r"loss: expected 'dirichlet' exactly for target 'dirichlet'"):
        end2_settings(loss="ce")
    with pytest.raises(ValueError, match=r"estimator: expected the stochastic estimator U_s for the EnD\^2 Dirichlet "
                                         r"loss, received the online average U_o"):
        end2_settings(estimator="online")
    with pytest.raises(ValueError, match=r"lr: expected a value in \[0.0, inf\), received -0.1"):
        bdk_settings(lr=-0.1)
    with pytest.raises(TypeError, match=r"overrides: expected fields of GPEDSettings .*received \['steps'\]"):
        bdk_settings(steps=3)


def test_u_o_with_the_dirichlet_loss_and_other_bad_input_are_refused_before_any_state_changes():
    """S3.13: an averaging estimator (visit counts) with EnD^2's loss is refused with the reason; g returning the
    wrong shape or no probabilities, D' of the wrong width and a checkpoint with an unsaveable sampler are named; the
    student, the chain, the estimator and the generator are unchanged afterwards."""
    blr = _toy()
    teacher = MLP([2, 4, 2], ["relu", "log_softmax"], np.random.default_rng(0))
    student = gped_student(teacher, np.random.default_rng(0), head="dirichlet")
    chain = Langevin(lambda w: _grad_log_posterior(blr, w), np.zeros(2), np.random.default_rng(1), 0.05)
    d_prime = np.random.default_rng(2).uniform(-1, 1, (10, 2))
    est, rng = OnlineAverage(10, 2), np.random.default_rng(5)
    before = (student.params.copy(), chain.state(), est.state(), str(generator_state(rng)))

    def unchanged():
        np.testing.assert_array_equal(student.params, before[0])
        np.testing.assert_array_equal(chain.theta, before[1]["theta"])
        assert str(chain.state()["rng"]) == str(before[1]["rng"]) and str(generator_state(rng)) == before[3]
        np.testing.assert_array_equal(est.mean, before[2]["mean"])
        np.testing.assert_array_equal(est.counts, before[2]["counts"])

    settings = end2_settings(n_steps=3, batch_size=4, burn_in=0, thin=1)
    cases = [
        (ValueError, r"estimator: expected the stochastic estimator U_s .* individual teacher members",
         dict(estimator=est)),
        (ValueError, r"d_prime: expected shape \(any, 2\), received shape \(10, 1\)", dict(d_prime=d_prime[:, :1])),
        (ValueError, r"g: expected values of shape \(4, G\) for 4 inputs, received shape \(1, 2\)",
         dict(g=lambda lp: predictive(lp)[:1])),
        (ValueError, r"targets: expected class probabilities", dict(g=lambda lp: 2 * predictive(lp))),
        (TypeError, r"settings: expected a GPEDSettings", dict(settings={"n_steps": 3})),
        (ValueError, r"checkpoint: expected a sampler with state\(\) and load_state\(\)",
         dict(sampler=_slice(blr, 0), checkpoint="unused.ckpt")),
    ]
    for error, message, change in cases:
        args = dict(teacher=_teacher, sampler=chain, student=student, g=predictive, estimator=StochasticEstimate(10, 2),
                    loss=DirichletLoss(), d_prime=d_prime, settings=settings, rng=rng)
        args.update(change)
        with pytest.raises(error, match=message):
            gped_distill(**args)
        unchanged()
    assert not os.path.exists("unused.ckpt")


# ------------------------------------------------------------------------------------ uncertainty
def test_end2_expected_entropy_matches_dirichlet_monte_carlo_within_4_se():
    """S3.14: EU = psi(alpha_0 + 1) - sum_k (alpha_k / alpha_0) psi(alpha_k + 1) = E_{pi ~ Dir(alpha)} H[pi], against
    10^5 draws (4 standard errors); TU = H[alpha / alpha_0]; KU = TU - EU > 0 (a Dirichlet's mutual information).
    Control: the same form without the + 1 (the digammas of E[ln pi]) is rejected by the same test."""
    rng = np.random.default_rng(0)
    z = np.log(np.array([[0.3, 1.2, 2.0], [5.0, 0.05, 0.5], [40.0, 40.0, 40.0]]))
    u = dirichlet_uncertainty(z)
    a = np.exp(z)
    wrong = special.digamma(a.sum(axis=1)) - np.sum(a / a.sum(axis=1, keepdims=True) * special.digamma(a), axis=1)
    for n in range(3):
        pi = rng.dirichlet(a[n], size=100_000)
        with np.errstate(divide="ignore"):
            h = entropy(np.log(pi))
        se = h.std(ddof=1) / np.sqrt(h.size)
        assert abs(u.data[n] - h.mean()) < 4 * se, (n, u.data[n], h.mean(), se)
        assert abs(wrong[n] - h.mean()) > 4 * se, (n, wrong[n], h.mean(), se)
    np.testing.assert_allclose(u.total, entropy(np.log(a / a.sum(axis=1, keepdims=True))), rtol=1e-14)
    np.testing.assert_allclose(u.total, u.data + u.knowledge, rtol=1e-14)
    assert np.all(u.knowledge > 0) and u.knowledge[2] < u.knowledge[0]     # more concentration, less knowledge unc.


def test_student_uncertainties_read_their_heads():
    """GPED student: TU = H[softmax(logits)], EU = exp(y_C), KU = TU - EU (any sign, never clipped); EnD^2 student:
    the Dirichlet forms of its outputs (S3.14)."""
    rng = np.random.default_rng(1)
    teacher = MLP([2, 4, 3], ["relu", "log_softmax"], rng)
    x = rng.normal(size=(5, 2))
    student = gped_student(teacher, rng, head="entropy")
    student.b[-1][-1] = 3.0                                  # a predicted entropy e^3 > log 3: KU < 0 everywhere
    student.W[-1][-1] = 0.0
    u = gped_uncertainty(student, x)
    y = student.predict(x)
    np.testing.assert_allclose(u.data, np.exp(y[:, -1]), rtol=1e-15)
    np.testing.assert_allclose(u.total, entropy(student_log_probs(student, x)), rtol=1e-15)
    np.testing.assert_allclose(u.total, u.data + u.knowledge, rtol=1e-14)
    assert np.all(u.knowledge < 0) and np.all(u.total <= np.log(3) + 1e-12)
    end2 = gped_student(teacher, rng, head="dirichlet")
    v, w = end2_uncertainty(end2, x), dirichlet_uncertainty(end2.predict(x))
    np.testing.assert_array_equal(v.total, w.total)
    np.testing.assert_array_equal(v.data, w.data)
    with pytest.raises(ValueError, match=r"student: expected a linear last layer of C \+ 1 >= 3 outputs"):
        gped_uncertainty(teacher, x)




def test_settings_make_the_g_estimator_and_loss_of_their_configuration():
    log_p = np.log(np.random.default_rng(0).dirichlet(np.ones(3), size=4))
    for settings, width, estimator, loss in [(bdk_settings(), 3, StochasticEstimate, PredictiveLoss),
                                             (gped_settings("entropy"), 1, OnlineAverage, EntropyLoss),
                                             (gped_settings("both"), 4, OnlineAverage, JointLoss),
                                             (end2_settings(), 3, StochasticEstimate, DirichletLoss)]:
        values = settings.make_g()(log_p)
        est = settings.make_estimator(4, 3)
        assert values.shape == (4, width) and isinstance(est, estimator) and est.width == width
        assert isinstance(settings.make_loss(), loss)
        np.testing.assert_array_equal(est.update(np.arange(4), values), values)     # first visit: the values
    np.testing.assert_array_equal(gped_settings("both").make_g()(log_p)[:, -1:], expected_entropy(log_p))
