"""GPED's metrics (SPEC_seeds S3.16-S3.17): AUROC against the brute-force pair count, nDCG against hand
computation and the brute-force average over tie-breaks, NLL, NLL gap and entropy MAE."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kd_ref.metrics import auroc, entropy_mae, mean_2se, ndcg_at_k, ndcg_trials, nll, nll_gap, score

# scores on a coarse grid, so that ties within and across the two groups are frequent
few_levels = st.lists(st.integers(0, 5).map(float), min_size=1, max_size=30)


def brute_force_auroc(s_in, s_out):
    """Every (in, out) pair: 1 when the OOD score is higher, 1/2 for a tie."""
    wins = sum((o > i) + 0.5 * (o == i) for i in s_in for o in s_out)
    return wins / (len(s_in) * len(s_out))


@given(few_levels, few_levels)
def test_auroc_equals_the_pair_count_with_ties_counted_half(s_in, s_out):
    assert auroc(s_in, s_out) == pytest.approx(brute_force_auroc(s_in, s_out), abs=1e-12)


def test_auroc_of_separated_identical_and_reversed_scores():
    rng = np.random.default_rng(0)
    s_in, s_out = rng.uniform(0, 1, 500), rng.uniform(2, 3, 300)
    assert auroc(s_in, s_out) == 1.0 and auroc(s_out, s_in) == 0.0
    assert auroc(np.full(7, 0.3), np.full(4, 0.3)) == 0.5
    assert auroc([-np.inf, 0.0], [np.inf]) == 1.0
    # large and continuous: the rank form against the pair count on 10^6 pairs
    a, b = rng.normal(size=1000), rng.normal(0.5, 1.0, size=1000)
    assert auroc(a, b) == pytest.approx(np.mean(b[None, :] > a[:, None]), abs=1e-12)
    with pytest.raises(ValueError, match="scores_out: expected at least one score, received none"):
        auroc([1.0], [])
    with pytest.raises(ValueError, match="scores_in: expected real scores without NaN, received 1 NaN"):
        auroc([np.nan, 1.0], [2.0])


def dcg(gains, k):
    return sum(g / math.log2(j + 1) for j, g in enumerate(gains[:k], start=1))


def test_ndcg_is_one_for_the_ideal_order_and_hand_computed_for_the_reversed_order():
    r = np.array([3.0, 2.0, 1.0])
    assert ndcg_at_k(r, r, 3) == 1.0 and ndcg_at_k(r, 10 * r + 5, 2) == 1.0   # any increasing map of r
    # reversed: DCG = 1/1 + 2/log2(3) + 3/2, IDCG = 3/1 + 2/log2(3) + 1/2
    by_hand = (1 + 2 / math.log2(3) + 1.5) / (3 + 2 / math.log2(3) + 0.5)
    assert ndcg_at_k(r, -r, 3) == pytest.approx(by_hand, rel=1e-15)
    assert round(by_hand, 4) == 0.79
    assert ndcg_at_k(r, -r, 1) == pytest.approx(1 / 3, rel=1e-15)                 # top-1: gain 1 of 3


@given(st.lists(st.integers(0, 3).map(float), min_size=1, max_size=6).filter(lambda r: max(r) > 0),
       st.data())
def test_ndcg_with_tied_scores_is_the_mean_over_every_tie_break(relevance, data):
    n = len(relevance)
    scores = data.draw(st.lists(st.integers(0, 2).map(float), min_size=n, max_size=n))
    k = data.draw(st.integers(1, n))
    r, s = np.array(relevance), np.array(scores)
    ideal = dcg(sorted(relevance, reverse=True), k)
    # every order of the examples that sorts the scores decreasingly, each equally likely
    orders = [p for p in itertools.permutations(range(n)) if all(s[p[j]] >= s[p[j + 1]] for j in range(n - 1))]
    expected = np.mean([dcg(r[list(p)], k) for p in orders]) / ideal
    assert ndcg_at_k(r, s, k) == pytest.approx(expected, rel=1e-12)
    assert 0.0 <= ndcg_at_k(r, s, k) <= 1.0 + 1e-15


def test_ndcg_trials_follow_gpeds_protocol():
    rng = np.random.default_rng(1)
    r = rng.gamma(2.0, size=1000)
    values = ndcg_trials(r, r + rng.normal(0, 0.3, size=1000), rng, k=20, subset=100, trials=50)
    assert values.shape == (50,) and np.all((values > 0.5) & (values <= 1.0))
    assert np.all(ndcg_trials(r, r, rng, trials=5) == 1.0)
    noisy = ndcg_trials(r, rng.normal(size=1000), rng, trials=50)            # control: an unrelated ranking
    assert noisy.mean() < values.mean() - 0.1
    again = ndcg_trials(r, r ** 2, np.random.default_rng(3), trials=4)
    np.testing.assert_array_equal(again, ndcg_trials(r, r ** 2, np.random.default_rng(3), trials=4))
    with pytest.raises(ValueError, match=r"k: expected at most subset = 10, received 11"):
        ndcg_trials(r, r, rng, k=11, subset=10)
    with pytest.raises(ValueError, match=r"subset: expected at most the 1000 examples, received 1001"):
        ndcg_trials(r, r, rng, subset=1001)


def test_bad_ndcg_input_is_named():
    with pytest.raises(ValueError, match=r"k: expected at most the 3 ranked examples, received 4"):
        ndcg_at_k([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 4)
    with pytest.raises(ValueError, match=r"k: expected an integer >= 1, received 0"):
        ndcg_at_k([1.0, 2.0], [1.0, 2.0], 0)
    with pytest.raises(ValueError, match=r"relevance: expected non-negative gains, not all 0 .*\[0.0, 0.0\]"):
        ndcg_at_k([0.0, 0.0], [1.0, 2.0], 1)
    with pytest.raises(ValueError, match=r"relevance: expected non-negative gains.*\[-1.0, 2.0\]"):
        ndcg_at_k([-1.0, 2.0], [1.0, 2.0], 1)
    with pytest.raises(ValueError, match=r"scores: expected shape \(2,\), received shape \(3,\)"):
        ndcg_at_k([1.0, 2.0], [1.0, 2.0, 3.0], 1)


def test_nll_gap_and_entropy_mae():
    rng = np.random.default_rng(2)
    logits_s, logits_t = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    log_s = logits_s - np.logaddexp.reduce(logits_s, axis=1, keepdims=True)
    log_t = logits_t - np.logaddexp.reduce(logits_t, axis=1, keepdims=True)
    y = rng.integers(0, 4, size=50)
    assert nll(log_t, y) == pytest.approx(-np.mean(log_t[np.arange(50), y]), rel=1e-15)
    assert nll(log_t, y) == -score(log_t, y).log_prob
    gap, gap_2se = nll_gap(log_s, log_t, y)
    assert gap == pytest.approx(nll(log_s, y) - nll(log_t, y), abs=1e-14)
    assert gap_2se == mean_2se(log_t[np.arange(50), y] - log_s[np.arange(50), y])[1]
    assert nll([[0.0, -np.inf]], [1]) == np.inf                              # p(true class) = 0
    assert nll_gap(log_t, log_t, y) == (0.0, 0.0)
    assert entropy_mae([0.1, 0.5, 2.0], [0.2, 0.5, 1.0]) == pytest.approx((0.1 + 0 + 1.0) / 3, rel=1e-15)
    with pytest.raises(ValueError, match=r"student_entropy: expected shape \(3,\), received shape \(2,\)"):
        entropy_mae([0.1, 0.5, 2.0], [0.2, 0.5])
    with pytest.raises(ValueError, match=r"labels: expected labels in 0..3, received labels in 0..4"):
        nll(log_t, np.r_[y[:-1], 4])
    with pytest.raises(ValueError, match=r"teacher_log_probs: expected shape \(50, 4\), received shape \(49, 4\)"):
        nll_gap(log_s, log_t[:-1], y)
