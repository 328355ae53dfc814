"""``kd-ref run obd`` end to end on tiny settings: estimator table, curves, summary, files, cache."""
import os
from dataclasses import replace

import numpy as np

from kd_ref.experiments import obd

TINY = obd.Settings.quick(n_train=300, n_test=100, hidden=3, train_passes=3, rounds=3, retrain_passes=1,
            n_probes=5, curve_points=6, brute=True)


def test_tiny_run_writes_tables_figures_and_reuses_its_net(tmp_path):
    out = obd.run(TINY, str(tmp_path), np.random.default_rng(0))
    rows = {r["method"].split(" ")[0]: r for r in out["estimators"]}
    assert rows["exact"]["rel_error_vs_brute"] < 1e-9
    assert rows["lecun"]["rel_error_vs_exact"] < 1e-12          # one hidden layer, square error: S1.13 is exact
    assert rows["gauss_newton"]["negative_entries"] == 0
    assert all(os.path.exists(f) for f in out["files"].values())
    assert len(out["curves"]["random"]) == TINY.curve_points
    assert {len(t) for t in out["loops"].values()} == {TINY.rounds}
    summary = {r["quantity"]: r["measured"] for r in out["summary"]}
    agree = next(v for q, v in summary.items() if q.startswith("largest % deleted with predicted L"))
    assert 0 <= agree <= 100
    increase = next(v for q, v in summary.items() if q.startswith("increase / L0 at"))
    assert len(increase.split(", ")) == 2                           # actual and predicted side by side
    again = obd.run(TINY, str(tmp_path), np.random.default_rng(0))   # net.npz reused: same trained net
    np.testing.assert_array_equal(again["net"].params, out["net"].params)


TINY_STUDENT = obd.StudentSettings(n_train=120, n_test=60, members=2, member_hidden=(6, 5), member_passes=2.0,
                    hidden=(5, 4), student_passes=2.0, fraction=0.2, rounds=2, retrain_passes=1)


def test_tiny_student_stage_prunes_the_distilled_student_under_both_targets(tmp_path):
    settings = replace(TINY, n_train=100, n_test=50, rounds=1, brute=False, student=TINY_STUDENT)
    out = obd.run(settings, str(tmp_path), np.random.default_rng(1))
    stage = out["student"]
    assert stage["sizes"] == [784, 5, 4, 10] and stage["n_params"] == 784 * 5 + 5 + 5 * 4 + 4 + 4 * 10 + 10
    assert set(stage["loops"]) == set(obd.STUDENT_TARGETS)
    P = stage["n_params"]
    for table in stage["loops"].values():
        assert [r.remaining for r in table] == [P - round(0.2 * P), P - round(0.2 * P) - round(0.2 * (P - round(0.2 * P)))]
        for r in table:
            assert 0 <= r.after["test_error"] <= 100 and r.after["test_log_prob"] < 0
            assert r.after["train_loss_distillation"] > 0 and r.after["train_loss_true"] > 0
    assert len(stage["rows"]) == 1 + 2 * TINY_STUDENT.rounds
    assert all(os.path.exists(f) for f in out["files"].values())
    assert out["files"]["fig3"].endswith("fig3_student.png") and "distilled student" in out["tables"]
    # each loop prunes under its own loss: the first deletion's actual increase is that loss's, not the other's
    a, b = (stage["loops"][t][0] for t in obd.STUDENT_TARGETS)
    start = stage["start"]
    assert np.isclose(a.actual, a.before["train_loss_distillation"] - start["train_loss_distillation"], rtol=1e-12)
    assert np.isclose(b.actual, b.before["train_loss_true"] - start["train_loss_true"], rtol=1e-12)
    assert not np.isclose(a.actual, a.before["train_loss_true"] - start["train_loss_true"], rtol=1e-6)
    # the main part's numbers do not depend on whether the stage runs (it draws from its own stream)
    plain = obd.run(replace(settings, student=None), str(tmp_path / "plain"), np.random.default_rng(1))
    np.testing.assert_array_equal(plain["net"].params, out["net"].params)
    again = obd.run(settings, str(tmp_path), np.random.default_rng(1))    # every model cached: the same student
    np.testing.assert_array_equal(again["student"]["student"], stage["student"])
