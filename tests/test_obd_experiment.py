"""``kd-ref run obd`` end to end on tiny settings: estimator table, curves, summary, files, cache."""
import os

import numpy as np

from kd_ref.experiments import obd

TINY = dict(obd.QUICK, n_train=300, n_test=100, hidden=3, train_passes=3, rounds=3, retrain_passes=1,
            n_probes=5, curve_points=6, brute=True)


def test_tiny_run_writes_tables_figures_and_reuses_its_net(tmp_path):
    out = obd.run(TINY, str(tmp_path), np.random.default_rng(0))
    rows = {r["method"].split(" ")[0]: r for r in out["estimators"]}
    assert rows["exact"]["rel_error_vs_brute"] < 1e-9
    assert rows["lecun"]["rel_error_vs_exact"] < 1e-12          # one hidden layer, square error: S1.13 is exact
    assert rows["gauss_newton"]["negative_entries"] == 0
    assert all(os.path.exists(f) for f in out["files"])
    assert len(out["curves"]["random"]) == TINY["curve_points"]
    assert {len(t) for t in out["loops"].values()} == {TINY["rounds"]}
    summary = {r["quantity"]: r["measured"] for r in out["summary"]}
    agree = next(v for q, v in summary.items() if q.startswith("largest % deleted with predicted L"))
    assert 0 <= agree <= 100
    increase = next(v for q, v in summary.items() if q.startswith("increase / L0 at"))
    assert len(increase.split(", ")) == 2                           # actual and predicted side by side
    again = obd.run(TINY, str(tmp_path), np.random.default_rng(0))   # net.npz reused: same trained net
    np.testing.assert_array_equal(again["net"].params, out["net"].params)
