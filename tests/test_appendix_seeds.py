"""appendix_checks/seeds.py's curvature (S1.11-S1.14) and linear-distillation (S2.3, S2.7) rows: all pass, and
each fails when the computation it checks is broken the way such code breaks (a dropped term, a sign, a factor)."""
import numpy as np
import pytest

from appendix_checks import seeds
from kd_ref import curvature, prune
from kd_ref.distill import linear
from kd_ref.nonlinearities import Logistic, Softmax


def _rows(group):
    return {row.quantity: row for row in group(np.random.default_rng(0))}


@pytest.mark.parametrize("group", [seeds.curvature_rows, seeds.linear_rows])
def test_every_row_passes(group):
    rows = _rows(group)
    assert rows and all(r.passed for r in rows.values()), [r for r in rows.values() if not r.passed]


def _drop_hidden_curvature(m):
    """The exact recursion without the curvature term sum_k (dx)_k d^2x_k/da^2 of its softmax hidden layer (S1.12);
    R{backprop}, the brute force, does not use it."""
    m.setattr(Softmax, "curvature", lambda self, a, x, d_x: np.zeros(a.shape + a.shape[-1:]))


def _wrong_logistic_d2(m):
    """f'' of the logistic off by 1%: R{backprop} uses it too, only the gradient differences do not."""
    d2 = Logistic.d2
    m.setattr(Logistic, "d2", lambda self, a, x: 1.01 * d2(self, a, x))


def _saliency_without_half(m):
    m.setattr(prune, "saliency", lambda diag, params: diag * params * params)


def _text_copy_sign(m):
    """LeCun's hidden recursion with the minus before the f'' term that the paper's text copy prints (S1.13)."""
    chunk, d2 = curvature._lecun_chunk, Logistic.d2

    def minus(net, x, output, out):
        Logistic.d2 = lambda self, a, xx: -d2(self, a, xx)
        try:
            chunk(net, x, output, out)
        finally:
            Logistic.d2 = d2
    m.setattr(curvature, "_lecun_chunk", minus)


def _gauss_newton_keeps_curvature(m):
    chunk = curvature._exact_chunk
    m.setattr(curvature, "_exact_chunk", lambda net, x, output, out, gauss_newton: chunk(net, x, output, out, False))


def _probes_not_centred(m):
    """Rademacher probes drawn as {0, 1} (the 2v - 1 forgotten) on the H v side."""
    hvp = curvature._hvp
    m.setattr(curvature, "_hvp", lambda net, x, output, v: hvp(net, x, output, (v + 1.0) / 2.0))


def _gaussian_variance_formula(m):
    variance = curvature.hutchinson_variance
    m.setattr(curvature, "hutchinson_variance", lambda H, probe="rademacher": variance(H, "gaussian"))


def _row_space_loses_a_direction(m):
    """The span's basis one vector short (a rank threshold too strict)."""
    row_space = linear.row_space
    m.setattr(linear, "row_space", lambda x: row_space(x)[:, :-1])


def _distance_without_half(m):
    distances = linear.O2MD.distances
    m.setattr(linear.O2MD, "distances", lambda self, x, chunk=2000: 2.0 * distances(self, x, chunk))


def _prior_mean_ignored(m):
    posterior = linear.bayes_linear_posterior
    m.setattr(linear, "bayes_linear_posterior", lambda X, y, s2, mean, lam: posterior(X, y, s2, 0.0, lam))


def _gaussian_init_too_wide(m):
    """N(0, 1.21/D) instead of N(0, 1/D): lambda off by 21%."""
    init = linear.init_weight
    m.setattr(linear, "init_weight", lambda shape, rng, kind: (1.1 if kind == "gaussian" else 1.0) * init(shape, rng,
                                                                                                           kind))


def _prior_variance_inverted(m):
    posterior = linear.bayes_linear_posterior
    m.setattr(linear, "bayes_linear_posterior", lambda X, y, s2, mean, lam: posterior(X, y, s2, mean, 1.0 / lam))


BREAKS = [
    (seeds.curvature_rows, "exact diagonal vs e_k^T H e_k", _drop_hidden_curvature),
    (seeds.curvature_rows, "exact diagonal vs differences of the gradient", _wrong_logistic_d2),
    (seeds.curvature_rows, "OBD: L rise", _saliency_without_half),
    (seeds.curvature_rows, "LeCun's recursion vs exact", _text_copy_sign),
    (seeds.curvature_rows, "Gauss-Newton vs diag", _gauss_newton_keeps_curvature),
    (seeds.curvature_rows, "Hutchinson, ", _probes_not_centred),
    (seeds.curvature_rows, "Hutchinson: max |sample SE", _gaussian_variance_formula),
    (seeds.linear_rows, "batch-1 SGD limit", _row_space_loses_a_direction),
    (seeds.linear_rows, "d_c(x) vs", _distance_without_half),
    (seeds.linear_rows, "zero-target RPF optimum", _prior_mean_ignored),
    (seeds.linear_rows, "mean ||G_c(x)||^2", _gaussian_init_too_wide),
    (seeds.linear_rows, "lambda ||(I - Pi_c) x||^2 vs posterior", _prior_variance_inverted),
]


@pytest.mark.parametrize("group, quantity, breaking", BREAKS, ids=[b[2].__name__.strip("_") for b in BREAKS])
def test_a_broken_computation_fails_its_row(group, quantity, breaking, monkeypatch):
    with monkeypatch.context() as m:
        breaking(m)
        rows = _rows(group)
    (row,) = [r for q, r in rows.items() if q.startswith(quantity)]
    assert not row.passed, row
