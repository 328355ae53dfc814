"""appendix_checks/seeds.py's SGLD, U_o and Dirichlet rows (S3.3, S3.6, S3.13, S3.14): all pass, and each fails
under its own break."""
import numpy as np
import pytest
from scipy import special

from appendix_checks import seeds
from kd_ref import mcmc, outputs, posterior
from kd_ref.distill import gped
from kd_ref.metrics import entropy


def _rows():
    return {row.quantity: row for row in seeds.posterior_rows(np.random.default_rng(0))}


def test_every_row_passes():
    rows = _rows()
    assert len(rows) == 3 and all(r.passed for r in rows.values()), [r for r in rows.values() if not r.passed]


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


@pytest.mark.parametrize("break_it, prefix", [(_sgld_without_the_half, "SGLD eta = 0.5"),
                                              (_lyapunov_off_by_one_percent, "Lyapunov"),
                                              (_duplicates_written_once, "U_o vs")])
def test_each_row_fails_under_its_break(monkeypatch, break_it, prefix):
    with monkeypatch.context() as m:
        break_it(m)
        rows = _rows()
    (row,) = [r for q, r in rows.items() if q.startswith(prefix)]
    assert not row.passed, row


# ------------------------------------------------ EnD^2's Dirichlet rows (S3.13, S3.14)
def _dirichlet_rows():
    return {row.quantity: row for row in seeds.dirichlet_rows(np.random.default_rng(0))}


def test_every_dirichlet_row_passes():
    rows = _dirichlet_rows()
    assert len(rows) == 5 and all(r.passed for r in rows.values()), [r for r in rows.values() if not r.passed]


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


@pytest.mark.parametrize("break_it, prefix", [(_gradient_without_the_total, "Dirichlet NLL dl/dz"),
                                              (_curvature_one_percent_off, "Dirichlet NLL Hessian"),
                                              (_data_uncertainty_without_the_plus_ones, "EnD^2 EU")])
def test_each_dirichlet_row_fails_under_its_break(monkeypatch, break_it, prefix):
    with monkeypatch.context() as m:
        break_it(m)
        rows = _dirichlet_rows()
    (row,) = [r for q, r in rows.items() if q.startswith(prefix)]
    assert not row.passed, row
