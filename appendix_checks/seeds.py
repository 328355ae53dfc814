"""The other seeds (SPEC_seeds): the t -> infinity limits of temperature distillation, checked as rows.

Each row is one measured limit from ``kd_ref.experiments.kd_limits`` (the same functions as
``kd-ref run kd-limits``, at the run's settings, in about two seconds); its "error" is the
distance of a fitted log-log slope from the derived rate, or for the controls the distance of the
slope from 0 (a limit that must *not* be reached):

  (S1.6)  t^2 KL - ||P(z - v)||^2/(2C) and t(q - p) - P(z - v)/C fall like 1/t (slope -1)
  (S1.6)  control: the uncentred ||z - v||^2/(2C) is not the limit when the logit means differ (slope 0)
  (S1.9)  t^2 l_dse - ||P(J_z - J_v)||_F^2 falls like 1/t^2 (slope -2)
  (S1.9)  control: the uncentred ||J_z - J_v||_F^2 is not the limit (slope 0)
  (S1.7)  a convex student fitted by t^2 KL and by centred logit matching: centred logits agree to O(1/t)

then diagonal curvature and OBD (``kd_ref.curvature``, ``kd_ref.prune``) on small fixed nets, with
relative errors against references computed another way:

  (S1.12) the exact diagonal by curvature backprop against e_k^T H e_k by R{backprop} (S1.15), on nets
          with a softmax hidden layer, log-softmax, softmax and linear outputs; and against central
          differences of the gradient along e_k (independent of R{backprop})
  (S1.11) at an exact least-squares minimum, deleting one weight raises L by exactly s_k = h_kk u_k^2 / 2
  (S1.13) LeCun's diagonal recursion = the exact diagonal where it is exact (one hidden layer, square
          error); Gauss-Newton = diag(J^T A_L J) built from J e_k by R-forward
  (S1.14) Hutchinson's mean within a few exact standard errors (from sum_{j != i} H_ij^2) of the exact
          diagonal, and its sample standard error close to the exact one

and linear distillation (``kd_ref.distill.linear``, SPEC_seeds S2.A) on a tiny few-shot problem:

  (S2.3)  batch-1 SGD at a stable step converges to the closed form Phi + (Theta^0 - Phi)(I - Pi_c), and
          d_c(x) = 1/2 ||(Theta^0 - Phi)(I - Pi_c) x||^2 with Pi_c from an independent basis (scipy)
  (S2.7)  the zero-target randomized-prior optimum as sigma -> 0 is the closed form row by row; the mean
          of ||G_c(x)||^2 over Gaussian initialisations is K lambda ||(I - Pi_c) x||^2 (in standard
          errors); and lambda ||(I - Pi_c) x||^2 is the sigma -> 0 posterior predictive variance

and SGLD and the online average of GPED (``kd_ref.mcmc``, ``kd_ref.posterior``, SPEC_seeds S3.A-S3.B):

  (S3.3)  constant-step SGLD at eta = 0.5 on N(0.3, 1) has stationary variance 1 / (1 - eta/4) = 1.1429, not
          1 (in exact standard errors over independent copies); the Lyapunov solution for a correlated 2-D
          Gaussian equals the fixed point of its recursion
  (S3.6)  U_o's targets after random visit patterns (repeats inside a minibatch) equal the plain Monte
          Carlo average of every value given for each row

and EnD^2's Dirichlet student (``kd_ref.distill.gped``, SPEC_seeds S3.C):

  (S3.13) the Dirichlet NLL's gradient and Hessian-vector product against central differences
  (S3.14) the Dirichlet expected data uncertainty (digammas of alpha + 1) against Monte Carlo draws in
          standard errors, with the formula without the + 1s as a control that must be far off; KU >= 0

Every row takes well under a second. Run with ``python -m appendix_checks.seeds``.
"""
import sys

import numpy as np
import scipy.linalg

import scipy.special

from ._table import Row, print_table, worst
from kd_ref import curvature, gradcheck, mcmc, posterior, prune
from kd_ref.distill import gped, linear
from kd_ref.metrics import entropy
from kd_ref.experiments.kd_limits import Settings, convex_rows, s1_6_rows, s1_9_rows, slopes
from kd_ref.mlp import MLP
from kd_ref.outputs import CrossEntropy, DirichletLogLikelihood, DotProduct, SquareError

SLOPE_TOL = 0.1


def run(seed=0):
    """The rows of the table (seeded draws, the kd-limits run's settings, small curvature and LDL cases)."""
    rng = np.random.default_rng(seed)
    return limit_rows(rng) + curvature_rows(rng) + linear_rows(rng) + posterior_rows(rng) + dirichlet_rows(rng)


def limit_rows(rng):
    """S1.6, S1.7, S1.9: fitted slopes of the t -> infinity limits (``kd-ref run kd-limits``)."""
    settings = Settings.quick()
    s16 = s1_6_rows(settings, rng)
    s19, _ = s1_9_rows(settings, rng)
    convex = convex_rows(settings, rng)
    fitted = slopes(s16, s19, convex, settings)
    last = convex[-1]
    return [Row("(S1.6)", "|slope + 1|, t^2 KL vs centred logit matching", abs(fitted["S1.6 value"] + 1), SLOPE_TOL),
            Row("(S1.6)", "|slope + 1|, t(q - p) vs P(z - v)/C", abs(fitted["S1.6 gradient"] + 1), SLOPE_TOL),
            Row("(S1.6)", "control: |slope| of the uncentred form (no limit)",
                abs(fitted["S1.6 uncentred control"]), SLOPE_TOL),
            Row("(S1.9)", "|slope + 2|, t^2 DSE vs centred Jacobian matching", abs(fitted["S1.9"] + 2), SLOPE_TOL),
            Row("(S1.9)", "control: |slope| of the uncentred Jacobians (no limit)",
                abs(fitted["S1.9 uncentred control"]), SLOPE_TOL),
            Row("(S1.7)", "|slope + 1|, convex student's centred logits", abs(fitted["convex centred logits"] + 1),
                SLOPE_TOL),
            Row("(S1.7)", f"convex student at t = {last['t']:g}: max centred-logit difference",
                last["centred_logits"], 10.0 / last["t"])]


# ------------------------------------------------------------------ diagonal curvature and OBD (S1.C)
HUTCHINSON_PROBES = 2_000


def _rel(a, b):
    """max |a - b| / (|b| + max |b|): relative, floored at the scale of the whole reference."""
    b = np.asarray(b, float)
    return float(np.max(np.abs(a - b) / (np.abs(b) + np.max(np.abs(b)) + 1e-300)))


def _curvature_nets(rng):
    """Small fixed nets with every kind of layer the exact recursion treats: (net, x, output)."""
    cases = []
    for sizes, names, kind in (([3, 4, 3], ["logistic", "log_softmax"], "dot"),
                               ([3, 4, 3, 2], ["logistic", "softmax", "linear"], "square"),
                               ([2, 3, 3], ["probit", "softmax"], "cross_entropy")):
        net = MLP(sizes, names, rng)
        net.params[...] = rng.normal(0.0, 1.0, size=net.n_params)
        n, c = 5, sizes[-1]
        x = rng.normal(size=(n, sizes[0]))
        out = {"dot": lambda: DotProduct(rng.dirichlet(np.ones(c), size=n)),
               "square": lambda: SquareError(rng.normal(size=(n, c))),
               "cross_entropy": lambda: CrossEntropy(rng.dirichlet(np.ones(c), size=n))}[kind]()
        cases.append((net, x, out))
    return cases


def _gradient_differences(net, x, out):
    """d/du_k of the k-th entry of dL/du by central differences (no R{backprop}), L the mean loss."""
    p0 = net.params.copy()
    scale = curvature.loss_scale(out, x.shape[0])

    def grad(p):
        net.params[...] = p
        return scale * net.grad(x, out, input_grads=False)[1]

    try:
        return np.array([gradcheck.directional_difference(grad, p0, np.eye(net.n_params)[k])[k]
                         for k in range(net.n_params)])
    finally:
        net.params[...] = p0


def _least_squares_net(rng, n=30, d=3, c=2):
    """A linear net at the exact least-squares minimum of its square error: L is quadratic in the parameters."""
    x = rng.normal(size=(n, d))
    t = x @ rng.normal(size=(d, c)) + rng.normal(size=(n, c))
    net = MLP([d, c], ["linear"], rng)
    coef = np.linalg.lstsq(np.hstack([x, np.ones((n, 1))]), t, rcond=None)[0]
    net.W[0][...], net.b[0][...] = coef[:d].T, coef[d]
    return net, x, SquareError(t)


def curvature_rows(rng):
    """S1.11-S1.14 on small fixed nets."""
    nets = _curvature_nets(rng)
    diag = {m: [curvature.hessian_diagonal(*case, method=m).diag for case in nets] for m in ("exact", "brute")}
    exact_vs_brute = max(_rel(e, b) for e, b in zip(diag["exact"], diag["brute"]))
    exact_vs_fd = max(_rel(e, _gradient_differences(*case)) for e, case in zip(diag["exact"], nets))

    net, x, out = _least_squares_net(rng)                                    # OBD at a quadratic minimum
    L0 = prune.mean_loss(net, x, out, gradient=False)
    s = prune.saliency(curvature.hessian_diagonal(net, x, out).diag, net.params)
    u, rises = net.params.copy(), []
    for k in range(net.n_params):
        net.params[k] = 0.0
        rises.append(prune.mean_loss(net, x, out, gradient=False) - L0)
        net.params[k] = u[k]
    obd = _rel(np.array(rises), s)

    lecun_net = MLP([3, 4, 2], ["logistic", "linear"], rng)                  # S1.13's exact case
    lx = rng.normal(size=(10, 3))
    lout = SquareError(rng.normal(size=(10, 2)))
    lecun = _rel(curvature.hessian_diagonal(lecun_net, lx, lout, method="lecun").diag,
                 curvature.hessian_diagonal(lecun_net, lx, lout, method="exact").diag)

    gn = 0.0
    for net, x, out in nets:
        cache = net.forward(x)
        _, A = curvature.output_curvature(net, cache, out, gauss_newton=True)
        J = [net.r_forward(cache, np.eye(net.n_params)[k]).R_a[-1] for k in range(net.n_params)]   # J e_k
        brute = curvature.loss_scale(out, x.shape[0]) * np.array([np.einsum("ni,nij,nj->", r, A, r) for r in J])
        gn = max(gn, _rel(curvature.hessian_diagonal(net, x, out, method="gauss_newton").diag, brute))

    net, x, out = nets[0]
    est = curvature.hessian_diagonal(net, x, out, method="hutchinson", n_probes=HUTCHINSON_PROBES, rng=rng)
    H = curvature.full_hessian(net, x, out)
    se = np.sqrt(curvature.hutchinson_variance(H) / HUTCHINSON_PROBES)
    z = float(np.max(np.abs(est.diag - np.diag(H)) / np.maximum(se, 1e-12 * np.max(np.abs(H)))))
    se_ratio = float(np.max(np.abs(est.stderr / se - 1.0)))
    # a sample SD is off by about sqrt((kurtosis - 1) / 4S) relative; one Rademacher probe's kurtosis is <= 3
    se_tol = 4 * np.sqrt(2.0 / (4 * HUTCHINSON_PROBES))
    return [Row("(S1.12)", "exact diagonal vs e_k^T H e_k by R{backprop} (S1.15)", exact_vs_brute, 1e-10),
            Row("(S1.12)", "exact diagonal vs differences of the gradient along e_k", exact_vs_fd, 1e-6),
            Row("(S1.11)", "OBD: L rise on deleting one weight vs s_k (quadratic L)", obd, 1e-10),
            Row("(S1.13)", "LeCun's recursion vs exact, one hidden layer, square error", lecun, 1e-12),
            Row("(S1.13)", "Gauss-Newton vs diag(J^T A_L J) from J e_k by R-forward", gn, 1e-10),
            Row("(S1.14)", f"Hutchinson, {HUTCHINSON_PROBES} probes: max |mean - h_ii| / exact SE", z, 4.0),
            Row("(S1.14)", "Hutchinson: max |sample SE / exact SE - 1|", se_ratio, se_tol)]


# ------------------------------------------------------------------ linear distillation (S2.A)
RPF_DRAWS = 400


def _few_shot(rng, c=2, m=2, d=6, k=6):
    x = rng.normal(size=(c * m, d))
    y = np.repeat(np.arange(c), m)
    return x, y, linear.RandomLinearMap(d, k, rng, init="gaussian")


def linear_rows(rng):
    """S2.3 and S2.7 on a tiny few-shot problem (2 classes, 2 examples each, D = K = 6)."""
    x, y, target = _few_shot(rng)
    model = linear.O2MD(2, target, rng, init="gaussian")
    theta0 = model.params.copy()
    model.fit(x, y)                                                           # closed form
    closed = model.params.copy()
    model.params[...] = theta0
    # a relaxed Kaczmarz step per example: stable for lr (2/K) ||x||^2 < 2
    lr = 0.5 * target.d_out / np.max(np.sum(x**2, axis=1))
    model.fit(x, y, method="sgd", epochs=300, lr=lr, rng=rng)
    sgd = float(np.max(np.abs(model.params - closed)) / np.max(np.abs(closed)))
    model.params[...] = closed

    test = rng.normal(size=(4, x.shape[1]))
    g0 = theta0.reshape(model.theta.shape) - target.weight                    # Theta_c^0 - Phi
    want = np.empty((4, 2))
    for c in range(2):
        q = scipy.linalg.orth(x[y == c].T)                                    # an independent basis of span(X_c)
        want[:, c] = 0.5 * np.sum(((test - test @ q @ q.T) @ g0[c].T) ** 2, axis=1)
    distances = _rel(model.distances(test), want)

    # S2.7: each row of G_c = Theta_c - Phi is the sigma -> 0 zero-target regression started at its prior row
    lam, noise = 2.0 / x.shape[1], 1e-12            # rows of Theta^0 - Phi: N(0, (2/D) I) for Gaussian inits
    xc = x[y == 0]
    rpf = max(_rel(linear.bayes_linear_posterior(xc, np.zeros(len(xc)), noise, g0[0][k], lam)[0],
                   model.theta[0][k] - target.weight[k]) for k in range(target.d_out))

    residual = np.sum((test - test @ linear.row_space(xc) @ linear.row_space(xc).T) ** 2, axis=1)
    scores = np.empty((RPF_DRAWS, 4))
    for r in range(RPF_DRAWS):
        draw = linear.O2MD(1, linear.RandomLinearMap(x.shape[1], target.d_out, rng, init="gaussian"), rng,
                           init="gaussian")
        draw.fit(xc, np.zeros(len(xc), dtype=int))
        scores[r] = 2.0 * draw.distances(test)[:, 0]                          # ||G_c(x)||^2
    se = scores.std(axis=0, ddof=1) / np.sqrt(RPF_DRAWS)
    mc = float(np.max(np.abs(scores.mean(axis=0) - target.d_out * lam * residual) / se))
    _, cov = linear.bayes_linear_posterior(xc, np.zeros(len(xc)), noise, 0.0, lam)
    variance = _rel(np.einsum("nd,de,ne->n", test, cov, test), lam * residual)
    return [Row("(S2.3)", "batch-1 SGD limit vs closed form Phi + (Theta0 - Phi)(I - Pi_c)", sgd, 1e-8),
            Row("(S2.3)", "d_c(x) vs 1/2 ||(Theta0 - Phi)(I - Pi_c) x||^2, scipy basis", distances, 1e-11),
            Row("(S2.7)", "zero-target RPF optimum (sigma -> 0) vs the closed-form rows", rpf, 1e-6),
            Row("(S2.7)", f"mean ||G_c(x)||^2 over {RPF_DRAWS} inits vs K lambda ||(I - Pi_c)x||^2 [SE]", mc, 4.0),
            Row("(S2.7)", "lambda ||(I - Pi_c) x||^2 vs posterior variance at sigma -> 0", variance, 1e-6)]


SGLD_COPIES, SGLD_STEPS = 1000, 2000


def posterior_rows(rng):
    """S3.3: constant-step SGLD's stationary law on Gaussians; S3.6: U_o is the Monte Carlo average over visits."""
    # (S3.3) eta = 0.5 on N(0.3, 1), whose stationary variance is 1 / (1 - eta / 4) = 1.1429: SGLD_COPIES independent
    # chains run as one SGLD, so the standard error of the time-averaged variance comes from the spread over copies
    mu, eta = 0.3, 0.5
    chains = mcmc.SGLD(lambda th: -(th - mu), np.full(SGLD_COPIES, mu), rng, eta, burn_in=100).next_batch(SGLD_STEPS)
    per_copy = ((chains - mu) ** 2).mean(axis=0)
    sgld_z = abs(per_copy.mean() - mcmc.ula_stationary_covariance(1.0, eta)[0, 0]) / (
        per_copy.std(ddof=1) / np.sqrt(SGLD_COPIES))
    # (S3.3) correlated 2-D: the Lyapunov solution against the recursion C <- A C A^T + eta I run to its fixed point
    lam = np.linalg.inv(np.array([[1.0, 0.8], [0.8, 1.0]]))
    a = np.eye(2) - 0.15 * lam
    iterate = np.zeros((2, 2))
    for _ in range(3000):
        iterate = a @ iterate @ a.T + 0.3 * np.eye(2)
    lyapunov = _rel(mcmc.ula_stationary_covariance(lam, 0.3), iterate)
    # (S3.6) U_o after random visits with repeats inside minibatches vs the plain average of every value given
    errors = []
    for _ in range(20):
        n_rows, width = int(rng.integers(1, 6)), int(rng.integers(1, 4))
        u_o, visits = posterior.OnlineAverage(n_rows, width), [[] for _ in range(n_rows)]
        for _ in range(int(rng.integers(1, 10))):
            idx = rng.integers(0, n_rows, size=int(rng.integers(1, 8)))
            values = rng.normal(size=(idx.size, width))
            targets = u_o.update(idx, values)
            for i, v in zip(idx, values):
                visits[i].append(v)
            errors.append(_rel(targets, np.array([np.mean(visits[i], axis=0) for i in idx])))
    return [Row("(S3.3)", f"SGLD eta = 0.5 on N(0.3, 1): variance vs 1/(1 - eta/4) = 1.1429 [SE]", sgld_z, 4.0),
            Row("(S3.3)", "Lyapunov C = A C A^T + eta I vs the recursion's fixed point, 2-D", lyapunov, 1e-10),
            Row("(S3.6)", "U_o vs the Monte Carlo average over visits (repeats in a batch)", max(errors), 1e-12)]


DIRICHLET_DRAWS = 20_000


def dirichlet_rows(rng):
    """S3.13: EnD^2's Dirichlet NLL and its curvature; S3.14: the Dirichlet decomposition TU = EU + KU."""
    grad_err, hess_err = [], []
    for _ in range(5):
        c = int(rng.integers(2, 6))
        z = rng.normal(0.0, 1.5, size=(3, c))
        out = DirichletLogLikelihood(gped.smooth_probabilities(rng.dirichlet(np.ones(c), size=3)))

        def grad(v, out=out, shape=z.shape):
            return out.grad(v.reshape(shape)).ravel()

        def r_grad(v, d, out=out, shape=z.shape):
            return out.r_grad(v.reshape(shape), d.reshape(shape)).ravel()

        grad_err.append(gradcheck.check_gradient(lambda v, out=out: out.value(v.reshape(z.shape)), grad, z.ravel()))
        hess_err.append(gradcheck.check_hvp(grad, r_grad, z.ravel(), rng.normal(size=z.size)))
    # (S3.14) EU = psi(alpha_0 + 1) - sum_k (alpha_k / alpha_0) psi(alpha_k + 1) = E H[pi] for pi ~ Dir(alpha), in
    # standard errors of DIRICHLET_DRAWS draws; the control is the same formula without the + 1s, which must be
    # many standard errors away (else the row could not tell them apart)
    z = np.log(np.array([[0.3, 1.2, 2.0], [5.0, 0.05, 0.5], [4.0, 4.0, 4.0]]))
    u = gped.dirichlet_uncertainty(z)
    alpha = np.exp(z)
    mean = alpha / alpha.sum(axis=1, keepdims=True)
    no_plus_one = scipy.special.digamma(alpha.sum(axis=1)) - np.sum(mean * scipy.special.digamma(alpha), axis=1)
    in_se, control = [], []
    for n in range(z.shape[0]):
        h = entropy(np.log(rng.dirichlet(alpha[n], size=DIRICHLET_DRAWS)))
        se = h.std(ddof=1) / np.sqrt(h.size)
        in_se.append(abs(u.data[n] - h.mean()) / se)
        control.append(se / abs(no_plus_one[n] - h.mean()))
    many = gped.dirichlet_uncertainty(rng.normal(0.0, 3.0, size=(2000, 4)))
    return [Row("(S3.13)", "Dirichlet NLL dl/dz vs central differences", worst(grad_err), 1e-8),
            Row("(S3.13)", "Dirichlet NLL Hessian (trigamma) vs differences of dl/dz", worst(hess_err), 1e-7),
            Row("(S3.14)", f"EnD^2 EU (digammas) vs {DIRICHLET_DRAWS} Dirichlet draws [SE]", max(in_se), 4.0),
            Row("(S3.14)", "control: SE / |EU without the + 1s - draws| (small: the row can tell)", max(control),
                0.25),
            Row("(S3.14)", "Dirichlet KU >= 0: max(0, -min KU) / max TU over 2000 alphas",
                max(0.0, -float(many.knowledge.min())) / float(many.total.max()), 1e-12)]


def main(seed=0):
    """Print the table; True when every row passes."""
    return print_table("Seeds (SPEC_seeds): t -> infinity limits (S1.6, S1.7, S1.9), diagonal curvature and OBD "
                       "(S1.11-S1.14), linear distillation (S2.3, S2.7), SGLD and U_o (S3.3, S3.6), EnD^2's Dirichlet (S3.13, S3.14)", run(seed))


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
