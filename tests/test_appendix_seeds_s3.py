"""appendix_checks/seeds.py's SGLD, U_o and Dirichlet rows (S3.3, S3.6, S3.13, S3.14): all pass, and each fails
under its own break."""
import numpy as np
import pytest
from scipy import special

from appendix_checks import seeds
from kd_ref import mcmc, outputs, posterior
from kd_ref.distill import gped
from kd_ref.metrics import entropy


def _rows(group):
    return {row.quantity: row for row in group(np.random.default_rng(0))}


@pytest.mark.parametrize("group, n_rows", [(seeds.posterior_rows, 3), (seeds.dirichlet_rows, 5)])
def test_every_row_passes(group, n_rows):
    rows = _rows(group)
    assert len(rows) == n_rows and all(r.passed for r in rows.values()), [r for r in rows.values() if not r.passed]


def _sgld_without_the_half(m):
    """theta += eta grad + N(0, eta): the update without the 1/2 (stationary variance 2/3, not 1.1429)."""
    gradient = mcmc.SGLD._gradient
    m.setattr(mcmc.SGLD, "_gradient", lambda self: 2.0 * gradient(self))


def _lyapunov_off_by_one_percent(m):
    """The Lyapunov solve by vec(C) = (I - A kron A)^-1 vec(Q), then scaled by 1.01: a solution 1% off."""
    m.setattr(mcmc.linalg, "solve_discrete_lyapunov", lambda a, q: np.linalg.solve(np.eye(a.size) - np.kron(a, a),
                                                                                 q.ravel()).reshape(q.shape).T * 1.01)


def _duplicates_written_once(m):
    """The released GPED code's acc[idx] += g with a repeated index: one write and one count per distinct index."""
    def update(self, indices, values):
        idx = np.asarray(indices)
        m_ = self.counts[idx][:, None].astype(float)
        self.mean[idx] = (m_ * self.mean[idx] + values) / (m_ + 1.0)
        self.counts[idx] += 1
        return self.mean[idx].copy()
    m.setattr(posterior.OnlineAverage, "update", update)


# ------------------------------------------------ breaks of EnD^2's Dirichlet rows (S3.13, S3.14)
def _gradient_without_the_total(m):
    """dl/dz with psi(alpha_0) dropped: the Dirichlet normaliser's share of the gradient lost."""
    def grad(self, y):
        alpha = np.exp(y)
        return -alpha * (special.digamma(alpha) - self.log_t)
    m.setattr(outputs.DirichletLogLikelihood, "grad", grad)


def _curvature_one_percent_off(m):
    r_grad = outputs.DirichletLogLikelihood.r_grad
    m.setattr(outputs.DirichletLogLikelihood, "r_grad", lambda self, y, r: 1.01 * r_grad(self, y, r))


def _data_uncertainty_without_the_plus_ones(m):
    """EU = psi(alpha_0) - sum (alpha_k / alpha_0) psi(alpha_k): E[ln pi_k] where E[pi_k ln pi_k] belongs."""
    def dirichlet_uncertainty(z):
        alpha = np.exp(z)
        mean = alpha / alpha.sum(axis=1, keepdims=True)
        total = entropy(np.log(mean))
        data = special.digamma(alpha.sum(axis=1)) - np.sum(mean * special.digamma(alpha), axis=1)
        return posterior.Uncertainty(total, data, total - data)
    m.setattr(gped, "dirichlet_uncertainty", dirichlet_uncertainty)


@pytest.mark.parametrize("group, break_it, prefix", [
    (seeds.posterior_rows, _sgld_without_the_half, "SGLD eta = 0.5"),
    (seeds.posterior_rows, _lyapunov_off_by_one_percent, "Lyapunov"),
    (seeds.posterior_rows, _duplicates_written_once, "U_o vs"),
    (seeds.dirichlet_rows, _gradient_without_the_total, "Dirichlet NLL dl/dz"),
    (seeds.dirichlet_rows, _curvature_one_percent_off, "Dirichlet NLL Hessian"),
    (seeds.dirichlet_rows, _data_uncertainty_without_the_plus_ones, "EnD^2 EU")])
def test_each_row_fails_under_its_break(monkeypatch, group, break_it, prefix):
    with monkeypatch.context() as m:
        break_it(m)
        rows = _rows(group)
    (row,) = [r for q, r in rows.items() if q.startswith(prefix)]
    assert not row.passed, row
