"""A short tour of kd_ref, printed by ``kd-ref check`` after the appendix checks.

Each stop runs a small, data-free demonstration of one part of the library in a
second or two and prints what it found.
"""
import time

import numpy as np


def _stop(title):
    print(f"\n-- {title}")


def mlp_stop(rng):
    """Backprop and R{backprop} on a small classifier (Appendix B)."""
    from . import gradcheck
    from .mlp import MLP
    from .optim import Adadelta, train
    from .outputs import DotProduct

    _stop("MLP (Appendix B): train a 2-16-3 ReLU/log-softmax net on three Gaussian blobs")
    centres = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    labels = rng.integers(0, 3, size=600)
    x = centres[labels] + rng.normal(scale=0.7, size=(600, 2))
    onehot = np.eye(3)[labels]
    net = MLP([2, 16, 3], ["relu", "log_softmax"], rng)

    def objective(idx):
        value, d_p, _ = net.grad(x[idx], DotProduct(onehot[idx]), input_grads=False)
        return -value / len(idx), -d_p / len(idx)  # minimise the average negative log-likelihood

    result = train(net.params, objective, lambda: rng.integers(0, 600, size=20), Adadelta(), 1500, progress=False)
    accuracy = np.mean(net.predict(x).argmax(axis=1) == labels)
    print(f"   loss {result.losses[:50].mean():.3f} -> {result.losses[-50:].mean():.3f}, "
          f"training accuracy {accuracy:.1%}")
    out = DotProduct(onehot[:5])
    v = rng.normal(size=net.n_params)
    Hv, _ = net.hvp(x[:5], out, v_params=v, input_grads=False)

    def grad(p):  # the parameter gradient at parameters p, the net left as it was
        saved = net.params.copy()
        net.set_params(p)
        try:
            return net.grad(x[:5], out, input_grads=False)[1]
        finally:
            net.set_params(saved)

    check = gradcheck.check_hvp(grad, lambda p, w: Hv, net.params.copy(), v)
    print(f"   Hessian-vector product by R{{backprop}} vs differences of the gradient: "
          f"relative error {check.rel_error:.1e}")


def rbm_nade_stop(rng):
    """Distil a tiny RBM into a NADE, then weigh the RBM with the NADE (chapter 4, Appendix C)."""
    from .distill.generative import ChainStream, KLLoss, distill_nade, estimate_log_z, exact_kl
    from .nade import NADE
    from .rbm import RBM

    _stop("NADE and RBM (chapter 4, Appendix C): distil a 10-pixel RBM into a NADE, estimate its log Z")
    rbm = RBM(10, 5, rng, init_std=1.2)
    rbm.b_visible[...] = rng.normal(scale=1.2, size=10)
    log_z = rbm.log_z_exact()
    nade = NADE(10, 20, rng, init_std=0.1)
    before = exact_kl(rbm, nade, log_z)
    distill_nade(nade, KLLoss(), ChainStream(rbm, 20, rng, burn_in=200), rbm, 1500, progress=False)
    print(f"   exact KL(p || q) by enumerating 1,024 states: {before:.3f} -> {exact_kl(rbm, nade, log_z):.4f} nats")
    out = estimate_log_z(rbm, nade, rng, n_samples=1000, burn_in=20)
    print(f"   log Z: exact {log_z:.4f}; bridge sampling {out['bridge'].log_z:.4f} "
          f"[{out['bridge'].lower:.4f}, {out['bridge'].upper:.4f}]; "
          f"KL bounds [{out['lower'].log_z:.3f}, {out['upper'].log_z:.3f}]")


def compression_stop(rng):
    """Derivative matching alone recovers a teacher (chapter 2, Proposition 2.1)."""
    from .distill import distill
    from .distill.compression import DerivativeSquareErrorLoss, MLPTeacher, NoiseGenerator, teacher_targets
    from .mlp import MLP
    from .optim import Adadelta

    _stop("Model compression (chapter 2): a student learns a teacher from input derivatives alone")
    teacher = MLP([4, 8, 3], ["logistic", "log_softmax"], rng)
    student = MLP([4, 8, 3], ["logistic", "log_softmax"], rng)
    x_test = rng.normal(size=(500, 4))
    gap = lambda: np.max(np.abs(np.exp(student.predict(x_test)) - np.exp(teacher.predict(x_test))))  # noqa: E731
    before = gap()
    loss = DerivativeSquareErrorLoss()
    distill(student, loss, NoiseGenerator(4, 20, rng), teacher_targets(student, MLPTeacher(teacher), loss), Adadelta(),
            3000, progress=False)
    print(f"   largest probability difference on held-out inputs: {before:.3f} -> {gap():.4f} "
          "(the loss never saw a probability)")


def predictive_stop(rng):
    """Slice sampling, then a compact mixture fitted online (chapter 3, Appendix D)."""
    from .mcmc import SliceSampler
    from .mog import MoG, OnlineEM, fit_em
    from .optim import LinearDecay

    _stop("Compact predictive distributions (chapter 3, App. D): slice-sample a bimodal density, fit a mixture")
    target = MoG.from_1d([0.3, 0.7], [-2.0, 3.0], [0.5, 1.0])
    sampler = SliceSampler(lambda z: float(target.log_density(z[None])[0]), np.zeros(1), rng)
    sampler.burn_in(200)
    draws = sampler.sample(3000)
    batch = fit_em(draws, 2, rng, n_restarts=3).model
    online = OnlineEM(MoG.from_1d([0.5, 0.5], [-1.0, 1.0], [4.0, 4.0]), LinearDecay(1.0, 100))
    for chunk in np.array_split(draws, 100):
        online.step(chunk)
    for name, model in (("batch EM", batch), ("online EM", online.model)):
        order = np.argsort(model.means[:, 0])
        print(f"   {name:9s} weights {model.weights[order].round(2)}, means {model.means[order, 0].round(2)} "
              f"(true 0.3/0.7 at -2/3)")


STOPS = [mlp_stop, compression_stop, predictive_stop, rbm_nade_stop]


def main(seed=0):
    """Run every stop of the tour with one seeded generator."""
    rng = np.random.default_rng(seed)
    print("\nA short tour of kd_ref")
    for stop in STOPS:
        began = time.perf_counter()
        stop(rng)
        print(f"   ({time.perf_counter() - began:.1f} s)")
