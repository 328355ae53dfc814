"""`kd-ref run kd-temperature` end to end on tiny synthetic settings: files, tables, the resume from cached
networks, and the bias sweep against exact answers."""
import math

import numpy as np

from kd_ref.experiments import kd_temperature as kt


def _tiny(**overrides):
    tiny = dict(data="synthetic", n_train=120, n_test=60, teacher=(8,), small=(4,), large=(5,),
                temperatures=(2.0, math.inf), large_temperatures=(math.inf,), hard_weights=(0.0, 0.5),
                bias_grid=(0.0, 1e6), passes=1, batch_size=30, progress=False)
    return kt.Settings.quick(**{**tiny, **overrides})


def test_tiny_run_writes_every_table_and_resumes_from_its_cache(tmp_path):
    settings = _tiny().validate()
    first = kt.run(settings, tmp_path, np.random.default_rng(0))
    for name in ("errors", "paired", "by_t", "omit3", "tables", "error_vs_t"):
        assert (tmp_path / first["files"][name].split("/")[-1]).exists()
    keys = {key for key, *_ in kt.student_plan(settings)}
    assert keys == {"small/hard", "small/t=2/w_hard=0", "small/t=2/w_hard=0.5", "small/t=2/w_hard=0.1/w_dse=0.01",
                    "small/t=inf", "large/hard", "large/t=inf"}
    assert set(first["scores"]) == keys | {"teacher"}
    for key in ("small/t=2/w_hard=0.5", "small/t=2/w_hard=0.1/w_dse=0.01"):
        assert f"{key} | small/hard" in first["tables"]                 # paired against the baseline
    assert "small/t=2/w_hard=0.1/w_dse=0.01 | small/t=2/w_hard=0.1 |" not in first["tables"]   # no such twin here
    assert "| soft only | soft + 0.5 hard | soft + 0.1 hard + 0.01 DSE |" in first["tables"]
    stamps = {f: f.stat().st_mtime_ns for f in (tmp_path / "cache").glob("*.npz")}
    assert len(stamps) == len(keys) + 2                                  # the students, the teacher, omit3
    again = kt.run(settings, tmp_path, np.random.default_rng(0))        # every network from the cache
    assert stamps == {f: f.stat().st_mtime_ns for f in (tmp_path / "cache").glob("*.npz")}
    for key, s in first["scores"].items():
        assert np.array_equal(s.log_p, again["scores"][key].log_p), key


def test_bias_sweep_exact_at_the_ends_and_leaves_the_network_unchanged(rng):
    data = kt.load_data(_tiny(), rng)
    net = kt._net((4,), data.x_train.shape[1], data.n_classes, rng)
    before = net.params.copy()
    rows = kt.bias_sweep(net, data, (0.0, 1e6))
    assert np.array_equal(net.params, before)
    plain = np.argmax(kt.log_probs_of(net, data.x_test), axis=1) != data.y_test
    assert rows[0]["errors"] == plain.sum()
    threes = int(np.sum(data.y_test == 3))
    assert rows[1] == dict(bias=1e6, errors=data.y_test.size - threes, error_pct=100 * (1 - threes / data.y_test.size),
                           errors_on_3s=0, test_3s=threes)                    # every image called a 3


def test_ctrl_c_anywhere_then_the_same_run_ends_with_the_numbers_of_an_uninterrupted_one(tmp_path, monkeypatch):
    from test_resume import _count_progress_updates, _run_with_interrupts

    settings = _tiny(passes=3).validate()
    whole, total = _count_progress_updates(monkeypatch, lambda: kt.run(settings, tmp_path / "whole",
                                                                       np.random.default_rng(0)))
    cut = _run_with_interrupts(monkeypatch, lambda: kt.run(settings, tmp_path / "cut", np.random.default_rng(0)),
                               total, np.random.default_rng(1))
    assert cut["errors"] == whole["errors"] and cut["omit3"] == whole["omit3"]
    for key, s in whole["scores"].items():
        assert np.array_equal(s.log_p, cut["scores"][key].log_p), key


def test_the_dse_family_draws_its_own_streams_and_leaves_the_other_students_unchanged(tmp_path):
    with_dse = kt.run(_tiny(), tmp_path / "with", np.random.default_rng(0))
    without = kt.run(_tiny(dse_weight=0.0), tmp_path / "without", np.random.default_rng(0))
    dse_keys = {k for k in with_dse["scores"] if "w_dse" in k}
    assert dse_keys == {"small/t=2/w_hard=0.1/w_dse=0.01"} and set(without["scores"]) == set(with_dse["scores"]) - dse_keys
    for key, s in without["scores"].items():
        assert np.array_equal(s.log_p, with_dse["scores"][key].log_p), key
    assert "DSE" not in without["tables"].split("### test errors (of")[1].split("###")[0]
    twin = kt.run(_tiny(hard_weights=(0.0, 0.1)), tmp_path / "twin", np.random.default_rng(0))
    assert "small/t=2/w_hard=0.1/w_dse=0.01 | small/t=2/w_hard=0.1 |" in twin["tables"]   # DSE vs its soft + hard
