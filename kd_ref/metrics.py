"""Scoring a classifier on a test set: accuracy and log-probability of the true class, each with
twice its standard error, and paired differences between two classifiers on the same examples.

Used by every experiment that reports a table (chapters 2-4 and the other sources' studies).
"""
from dataclasses import dataclass

import numpy as np

from ._validation import as_float_array, check_labels


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
    log_probs = as_float_array(log_probs, "log_probs", ndim=2, finite=False)
    if log_probs.shape[0] == 0 or log_probs.shape[1] == 0:
        raise ValueError(f"log_probs: expected at least one example and one class, received shape "
                         f"{log_probs.shape}")
    if np.any(np.isnan(log_probs)) or np.any(log_probs == np.inf):
        raise ValueError("log_probs: expected log-probabilities (finite or -inf), received NaN or +inf entries")
    labels = check_labels(labels, "labels", log_probs.shape[1], n=log_probs.shape[0])
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
