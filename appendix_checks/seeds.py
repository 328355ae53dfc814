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

Run with ``python -m appendix_checks.seeds``.
"""
import sys

import numpy as np

from ._table import Row, print_table
from kd_ref.experiments.kd_limits import Settings, convex_rows, s1_6_rows, s1_9_rows, slopes

SLOPE_TOL = 0.1


def run(seed=0):
    """The rows of the table (seeded draws, the kd-limits run's settings)."""
    rng = np.random.default_rng(seed)
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


def main(seed=0):
    """Print the table; True when every row passes."""
    return print_table("Seeds (SPEC_seeds): t -> infinity limits of temperature distillation (S1.6, S1.7, S1.9)",
                       run(seed))


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
