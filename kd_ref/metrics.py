"""Scoring a classifier on a test set: accuracy and log-probability of the true class, each with
twice its standard error, and paired differences between two classifiers on the same examples;
GPED's NLL, NLL gap, entropy MAE, OOD AUROC and ranking nDCG (SPEC_seeds S3.16-S3.17); the entropy of
predictive distributions given as log-probabilities (SPEC_seeds 0.2; S3.4, S3.14).

Used by every experiment that reports a table (chapters 2-4 and the other sources' studies).
"""
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ._validation import as_float_array, check_generator, check_labels, check_positive_int


@dataclass
class Score:
    """Test-set accuracy and average log-probability of the true class, each with 2 standard errors.

    Attributes
    ----------
    accuracy, accuracy_2se : float
        In percent.
    log_prob, log_prob_2se : float
        Average log p(true class | x) in nats.
    correct : ndarray of shape (N,)
        1.0 where the most probable class is the true one (per example, for paired comparisons).
    log_p : ndarray of shape (N,)
        log p(true class | x) per example.
    """

    accuracy: float
    accuracy_2se: float
    log_prob: float
    log_prob_2se: float
    correct: np.ndarray
    log_p: np.ndarray

    def summary(self):
        return (f"accuracy {self.accuracy:.2f} ± {self.accuracy_2se:.2f} %, "
                f"log prob {self.log_prob:.4f} ± {self.log_prob_2se:.4f}")


def mean_2se(values):
    """Mean of per-example values and twice its standard error (sample std / sqrt(n)).

    Parameters
    ----------
    values : array_like of shape (n,), n >= 1
        Real numbers; -inf or +inf entries (a log-probability of 0) are allowed, NaN is not.

    Returns
    -------
    mean, two_se : float
        ``two_se`` is inf when n = 1 (one value says nothing about the spread) or when
        an entry is infinite.
    """
    values = as_float_array(values, "values", ndim=1, finite=False)
    n = values.size
    if n == 0:
        raise ValueError("values: expected at least one value to average, received none")
    if np.any(np.isnan(values)):
        raise ValueError(f"values: expected real numbers without NaN, received {int(np.isnan(values).sum())} NaN "
                         f"entries")
    if np.any(values == np.inf) and np.any(values == -np.inf):
        raise ValueError("values: expected infinite entries of one sign only (their mean is undefined), "
                         "received both +inf and -inf")
    if n == 1 or not np.all(np.isfinite(values)):
        return float(np.mean(values)), float("inf")
    return float(np.mean(values)), 2.0 * float(np.std(values, ddof=1) / np.sqrt(n))


def _checked_log_probs(log_probs, labels):
    """(N, C) log-probabilities (finite or -inf, N, C >= 1) and (N,) integer labels in 0..C-1, checked."""
    log_probs = as_float_array(log_probs, "log_probs", ndim=2, finite=False)
    if log_probs.shape[0] == 0 or log_probs.shape[1] == 0:
        raise ValueError(f"log_probs: expected at least one example and one class, received shape "
                         f"{log_probs.shape}")
    if np.any(np.isnan(log_probs)) or np.any(log_probs == np.inf):
        raise ValueError("log_probs: expected log-probabilities (finite or -inf), received NaN or +inf entries")
    return log_probs, check_labels(labels, "labels", log_probs.shape[1], n=log_probs.shape[0])


def score(log_probs, labels):
    """Score a model's test log-probabilities against integer labels.

    Parameters
    ----------
    log_probs : ndarray of shape (N, C), N >= 1
        Log-probabilities (finite or -inf; NaN and +inf are refused).
    labels : ndarray of shape (N,), integers in 0..C-1

    Returns
    -------
    Score

    Examples
    --------
    >>> import numpy as np
    >>> s = score(np.log([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]]), np.array([0, 1, 1]))
    >>> round(s.accuracy, 4), round(s.log_prob, 4)     # two of three right; mean log p of the true class
    (66.6667, -0.4594)
    """
    log_probs, labels = _checked_log_probs(log_probs, labels)
    correct = (np.argmax(log_probs, axis=1) == labels).astype(np.float64)
    log_p = log_probs[np.arange(labels.size), labels]
    acc, acc_se = mean_2se(100.0 * correct)
    lp, lp_se = mean_2se(log_p)
    return Score(acc, acc_se, lp, lp_se, correct, log_p)


def paired_difference(a, b):
    """Paired comparison of two scores on the same test examples: mean of a - b and 2 standard errors.

    Returns
    -------
    dict with keys accuracy, accuracy_2se (percentage points), log_prob, log_prob_2se (nats)
    """
    for name, s in (("a", a), ("b", b)):
        if not isinstance(s, Score):
            raise TypeError(f"{name}: expected a Score (from score(...)), received {type(s).__name__}")
    if a.correct.shape != b.correct.shape:
        raise ValueError(f"b: expected a score on the same {a.correct.size} test examples, received {b.correct.size}")
    with np.errstate(invalid="ignore"):         # -inf - -inf: refused by mean_2se with a message
        diff_lp = a.log_p - b.log_p
    if np.any(np.isnan(diff_lp)):
        raise ValueError("a, b: expected log-probabilities whose differences are defined, received -inf in both "
                         "scores for the same example")
    acc, acc_se = mean_2se(100.0 * (a.correct - b.correct))
    lp, lp_se = mean_2se(diff_lp)
    return {"accuracy": acc, "accuracy_2se": acc_se, "log_prob": lp, "log_prob_2se": lp_se}


# ---------------------------------------------------- GPED's metrics (SPEC_seeds S3.16-S3.17)
def _true_class_log_probs(log_probs, labels):
    """log p(y_n | x_n) per example, shape (N,), after the checks of :func:`score`."""
    log_probs, labels = _checked_log_probs(log_probs, labels)
    return log_probs[np.arange(labels.size), labels]


def nll(log_probs, labels):
    """Test negative log-likelihood -mean_n log p(y_n | x_n) in nats (S3.16); inf when a true class has p = 0.

    log_probs : ndarray of shape (N, C); labels : ndarray of shape (N,), integers in 0..C-1.
    """
    return -float(np.mean(_true_class_log_probs(log_probs, labels)))


def nll_gap(student_log_probs, teacher_log_probs, labels):
    """NLL gap student - teacher (S3.16) on the same test examples, with twice its paired standard error.

    Returns
    -------
    gap, gap_2se : float
        mean_n [log p_teacher(y_n|x_n) - log p_student(y_n|x_n)] and 2 SE of that mean
        (``mean_2se`` of the per-example differences).
    """
    student_log_probs = as_float_array(student_log_probs, "student_log_probs", ndim=2, finite=False)
    teacher_log_probs = as_float_array(teacher_log_probs, "teacher_log_probs", shape=student_log_probs.shape,
                                       finite=False)
    student = _true_class_log_probs(student_log_probs, labels)
    teacher = _true_class_log_probs(teacher_log_probs, labels)
    with np.errstate(invalid="ignore"):          # -inf - -inf is refused by mean_2se, with a message
        return mean_2se(teacher - student)


def entropy_mae(teacher_entropy, student_entropy):
    """Mean absolute error of the distilled expected entropy, mean_n |EU_teacher(x_n) - h(x_n)| (S3.16).

    Both arrays have shape (N,), N >= 1, finite.
    """
    teacher = as_float_array(teacher_entropy, "teacher_entropy", ndim=1)
    student = as_float_array(student_entropy, "student_entropy", shape=teacher.shape)
    if teacher.size == 0:
        raise ValueError("teacher_entropy: expected at least one value, received none")
    return float(np.mean(np.abs(teacher - student)))


def _scores(values, name):
    values = as_float_array(values, name, ndim=1, finite=False)
    if values.size == 0:
        raise ValueError(f"{name}: expected at least one score, received none")
    if np.any(np.isnan(values)):
        raise ValueError(f"{name}: expected real scores without NaN, received {int(np.isnan(values).sum())} NaN")
    return values


def auroc(scores_in, scores_out):
    """Area under the ROC curve with the out-of-distribution examples as the positive class (S3.16).

    The Mann-Whitney statistic: the probability that an OOD example scores higher than an
    in-distribution one, ties counted 1/2,

        AUROC = (1 / (n_in n_out)) sum_{i, j} ([s_out_j > s_in_i] + 1/2 [s_out_j = s_in_i]),

    computed in O(n log n) from the mid-ranks of the pooled scores:
    U = (sum of the OOD examples' ranks) - n_out (n_out + 1) / 2, AUROC = U / (n_in n_out).

    Parameters
    ----------
    scores_in, scores_out : array_like of shape (n_in,), (n_out,)
        Uncertainty scores (total or knowledge uncertainty) of the test and the OOD examples; +-inf allowed,
        NaN refused.

    Returns
    -------
    float in [0, 1]: 1 when every OOD score exceeds every test score, 0.5 when all are equal.

    >>> round(auroc([0.1, 0.4, 0.4], [0.4, 0.9]), 4)    # pairs won: 1 + 1/2 + 1/2 by 0.4, 3 by 0.9; of 6
    0.8333
    """
    s_in, s_out = _scores(scores_in, "scores_in"), _scores(scores_out, "scores_out")
    ranks = stats.rankdata(np.concatenate([s_in, s_out]), method="average")    # ties share their mean rank
    n_in, n_out = s_in.size, s_out.size
    u = ranks[n_in:].sum() - n_out * (n_out + 1) / 2.0
    return float(u / (n_in * n_out))


def ndcg_at_k(relevance, scores, k):
    """nDCG@k of a ranking by ``scores`` (descending) against graded ``relevance`` (S3.17, our reconstruction).

    DCG@k = sum_{j <= k} r_{pi(j)} / log2(j + 1) with pi the order of decreasing score, and
    nDCG = DCG@k / IDCG@k, IDCG the DCG of the order of decreasing relevance. In GPED's
    ranking task r is the teacher ensemble's uncertainty and the scores are the student's.
    Tied scores carry no order: each tied example contributes its group's mean relevance at
    every position the group occupies, the expectation of DCG over random tie-breaks (the
    ranking analogue of AUROC's 1/2 for ties).

    Parameters
    ----------
    relevance : array_like of shape (n,), finite and >= 0, not all 0
    scores : array_like of shape (n,), NaN refused
    k : int in 1..n

    Returns
    -------
    float in [0, 1]; 1 for the ideal order.
    """
    relevance = as_float_array(relevance, "relevance", ndim=1)
    scores = as_float_array(scores, "scores", shape=relevance.shape, finite=False)
    if np.any(np.isnan(scores)):
        raise ValueError(f"scores: expected real scores without NaN, received {int(np.isnan(scores).sum())} NaN")
    if relevance.size == 0:
        raise ValueError("relevance: expected at least one example, received none")
    if relevance.min() < 0 or relevance.max() == 0:
        raise ValueError(f"relevance: expected non-negative gains, not all 0 (IDCG would be 0), received values in "
                         f"[{relevance.min()}, {relevance.max()}]")
    k = check_positive_int(k, "k")
    if k > relevance.size:
        raise ValueError(f"k: expected at most the {relevance.size} ranked examples, received {k}")
    discount = 1.0 / np.log2(np.arange(2, k + 2))                               # 1 / log2(j + 1), j = 1..k
    order = np.argsort(-scores, kind="stable")
    s, r = scores[order], relevance[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])                       # tie groups of equal score
    group_mean = np.add.reduceat(r, starts) / np.diff(np.r_[starts, s.size])
    gains = np.repeat(group_mean, np.diff(np.r_[starts, s.size]))
    ideal = -np.sort(-relevance)
    return float(np.sum(gains[:k] * discount) / np.sum(ideal[:k] * discount))   # the ideal order: exactly 1


def ndcg_trials(relevance, scores, rng, *, k=20, subset=100, trials=500):
    """nDCG@k on ``trials`` random subsets of ``subset`` examples (GPED Table 4's protocol, S3.17).

    Each trial draws ``subset`` distinct examples uniformly, then scores the student's
    ranking of them with :func:`ndcg_at_k`. Returns the (trials,) values: GPED reports their
    mean and *standard deviation*; a table printing 2 SE of the mean should say so.
    """
    relevance = as_float_array(relevance, "relevance", ndim=1)
    scores = as_float_array(scores, "scores", shape=relevance.shape, finite=False)
    subset = check_positive_int(subset, "subset")
    if subset > relevance.size:
        raise ValueError(f"subset: expected at most the {relevance.size} examples, received {subset}")
    k = check_positive_int(k, "k")
    if k > subset:
        raise ValueError(f"k: expected at most subset = {subset}, received {k}")
    trials = check_positive_int(trials, "trials")
    check_generator(rng)
    out = np.empty(trials)
    for t in range(trials):
        idx = rng.choice(relevance.size, size=subset, replace=False)
        out[t] = ndcg_at_k(relevance[idx], scores[idx], k)
    return out
def _log_probability_rows(log_p, name):
    log_p = as_float_array(log_p, name, finite=False)
    if log_p.ndim < 1 or log_p.shape[-1] == 0:
        raise ValueError(f"{name}: expected log-probabilities with classes on the last axis, received shape "
                         f"{log_p.shape}")
    if np.any(np.isnan(log_p)) or np.any(log_p == np.inf):
        raise ValueError(f"{name}: expected log-probabilities (finite or -inf), received NaN or +inf entries")
    return log_p


def entropy(log_p):
    """H[p] = -sum_c p_c log p_c from log-probabilities, over the last axis, with 0 log 0 = 0.

    Computed from l = log p directly (-sum exp(l) l): no epsilon is added inside the
    log (the GPED code's log(p + 1e-7) is off by up to C eps (1 + ln(1/eps)) and is
    not 0 at a one-hot row; this is exactly 0 there). Rows need not be normalised
    exactly; the caller's log-softmax output is used as it is.

    Parameters
    ----------
    log_p : ndarray of shape (..., C)
        Finite or -inf (a zero probability).

    Returns
    -------
    ndarray of shape (...,), >= 0 for normalised rows

    Examples
    --------
    >>> import numpy as np
    >>> float(entropy(np.log([0.5, 0.5])) - np.log(2)), float(entropy(np.array([0.0, -np.inf])))
    (0.0, 0.0)
    """
    log_p = _log_probability_rows(log_p, "log_p")
    finite = np.isfinite(log_p)
    safe = np.where(finite, log_p, 0.0)
    return 0.0 - np.sum(np.where(finite, np.exp(safe) * safe, 0.0), axis=-1)      # 0.0 - 0.0: +0 at one-hot rows
