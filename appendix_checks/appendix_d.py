"""Appendix D: batch and online EM for mixtures of Gaussians, checked against direct formulas.

Each row compares ``kd_ref.mog`` with a slow, explicit version written from the
equations with Python loops over points and components (scipy's Gaussian density,
centred covariances), on random mixtures and data:

  (D.1)         log-density of a mixture
  (D.3)         responsibilities r_nk
  (D.4)-(D.6)   statistics sum_n r_nk, sum_n r_nk x_n, sum_n r_nk x_n x_n^T (kd_ref keeps them / N)
  (D.7)-(D.9)   weights, means and (centred) covariances from the responsibilities
  (D.2)         batch EM never lowers the average log-likelihood (largest relative decrease)
  (D.10)-(D.14) online EM with step 1 on the full data = one batch EM step
  (D.14)        running average (1 - eta) s + eta s_hat for eta in (0, 1)

Run with ``python -m appendix_checks.appendix_d``.
"""
import sys

import numpy as np
from scipy.stats import multivariate_normal

from ._table import Row, print_table
from kd_ref.mog import MoG, OnlineEM, Statistics, em_step, m_step, statistics

N_CASES = 10
TOL = 1e-10


def _random_case(rng):
    # every component gets many points (no collapse onto a few points with reg = 0)
    K, D = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    n = int(rng.integers(30, 41)) * K * D
    weights = rng.dirichlet(4.0 * np.ones(K))
    means = 3.0 * rng.normal(size=(K, D))
    A = rng.normal(size=(K, D, D))
    covs = A @ A.transpose(0, 2, 1) + 0.5 * np.eye(D)
    model = MoG(weights, means, covs)
    return model, model.sample(n, rng)


def _direct_log_density(model, x):
    out = np.zeros(len(x))
    for n, xn in enumerate(x):
        total = 0.0
        for k in range(model.n_components):
            total += model.weights[k] * multivariate_normal(model.means[k], model.covs[k]).pdf(xn)
        out[n] = np.log(total)
    return out


def _direct_responsibilities(model, x):
    r = np.zeros((len(x), model.n_components))
    for n, xn in enumerate(x):
        for k in range(model.n_components):
            r[n, k] = model.weights[k] * multivariate_normal(model.means[k], model.covs[k]).pdf(xn)
        r[n] /= r[n].sum()
    return r


def _direct_statistics(x, r):
    N, D = x.shape
    K = r.shape[1]
    s0, s1, s2 = np.zeros(K), np.zeros((K, D)), np.zeros((K, D, D))
    for k in range(K):
        for n in range(N):
            s0[k] += r[n, k]
            s1[k] += r[n, k] * x[n]
            s2[k] += r[n, k] * np.outer(x[n], x[n])
    return s0, s1, s2


def _direct_update(x, r):
    N, D = x.shape
    K = r.shape[1]
    w, mu, cov = np.zeros(K), np.zeros((K, D)), np.zeros((K, D, D))
    for k in range(K):
        nk = sum(r[n, k] for n in range(N))
        w[k] = nk / N
        mu[k] = sum(r[n, k] * x[n] for n in range(N)) / nk
        cov[k] = sum(r[n, k] * np.outer(x[n] - mu[k], x[n] - mu[k]) for n in range(N)) / nk
    return w, mu, cov


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300))


def run(seed=0):
    """Evaluate every check on ``N_CASES`` random mixtures; return the table rows."""
    rng = np.random.default_rng(seed)
    err = {key: [] for key in ("D.1", "D.3", "D.4-6", "D.7-9", "D.2", "D.10-14", "D.14")}
    for _ in range(N_CASES):
        model, x = _random_case(rng)
        N = len(x)
        err["D.1"].append(_rel(model.log_density(x), _direct_log_density(model, x)))
        r, _ = model.responsibilities(x)
        err["D.3"].append(_rel(r, _direct_responsibilities(model, x)))
        stats = statistics(x, r)
        s0, s1, s2 = _direct_statistics(x, r)
        err["D.4-6"].append(max(_rel(stats.s0 * N, s0), _rel(stats.s1 * N, s1), _rel(stats.s2 * N, s2)))
        new = m_step(stats)
        w, mu, cov = _direct_update(x, r)
        err["D.7-9"].append(max(_rel(new.weights, w), _rel(new.means, mu), _rel(new.covs, cov)))

        current, lls = model, []
        for _ in range(40):
            current, ll = em_step(current, x)
            lls.append(ll)
        decrease = max(0.0, float(np.max(-np.diff(lls))))
        err["D.2"].append(decrease / abs(lls[0]))

        batch, _ = em_step(model, x)
        online = OnlineEM(model, 1.0, reg=0.0)
        online.step(x)
        err["D.10-14"].append(_rel(online.model.params, batch.params))

        eta = float(rng.uniform(0.1, 0.9))
        online = OnlineEM(model, eta, reg=0.0)
        old = Statistics.of_model(model)
        online.step(x)
        mixed = [(1 - eta) * a + eta * b / N for a, b in zip((old.s0, old.s1, old.s2), (s0, s1, s2))]
        expected = m_step(Statistics(*mixed))
        err["D.14"].append(max(_rel(online.stats.s0, mixed[0]), _rel(online.stats.s1, mixed[1]),
                               _rel(online.stats.s2, mixed[2]), _rel(online.model.params, expected.params)))
    labels = {"D.1": "mixture log-density", "D.3": "responsibilities r_nk",
              "D.4-6": "statistics sum r, sum r x, sum r x x^T",
              "D.7-9": "weights, means, covariances (centred form)",
              "D.2": "largest relative decrease of avg log-lik (40 EM steps)",
              "D.10-14": "online step with eta = 1 on all data = batch step",
              "D.14": "running average of statistics, eta in (0.1, 0.9)"}
    return [Row(f"({key})", labels[key], max(values), TOL) for key, values in err.items()]


def main(seed=0):
    """Print the Appendix D table; True when every row passes."""
    return print_table(f"Appendix D: batch and online EM for mixtures of Gaussians ({N_CASES} random mixtures)",
                       run(seed))


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
