"""``kd-ref run gped-mnist`` end to end on tiny settings (synthetic digits): resume, the shared chain, the CLI."""
import json
import os
import re
import threading

import numpy as np
import pytest

from kd_ref import cli
from kd_ref.experiments import gped_mnist
from kd_ref.mcmc import SGLD
from kd_ref.width import n_macs, n_params

TINY = gped_mnist.Settings.quick(
    data="synthetic", grid=((60, 0), (60, 7), (120, 0), (120, 7)), exp1=(120, 0), exp3=(120, 7), exp4=(120, 0),
    n_test=40, hidden=(6, 6), sgld_steps=140, burn_in=20, thin=4, accumulate_every=8, sgld_batch=20, batch_size=10,
    multipliers=(0.5, 1.0), n_ood=20, ndcg_k=3, ndcg_subset=10, ndcg_trials=5, prune_steps=20, fine_tune_steps=5,
    prune_lams=(1e-3,), progress=False)
TABLES = ("table1", "table_exp2", "table2", "table_exp3", "table3_auroc", "table4_ndcg")


def _numbers(out):
    return json.dumps({k: out[k] for k in ("table1", "table_exp2", "table2", "table_exp3", "table3", "table4",
                                           "heldout")})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gped_mnist")
    return folder, gped_mnist.run(TINY, str(folder), np.random.default_rng(0))


def test_tiny_run_writes_consistent_tables_and_checks_the_conclusions(tiny_run):
    folder, out = tiny_run
    assert all(os.path.exists(out["files"][name]) for name in TABLES + ("summary",))
    assert (folder / "results.json").exists()
    exp2 = {(r["N"], r["s"]): r for r in out["table_exp2"]}
    assert len(exp2) == len(TINY.grid)
    t1 = {r["quantity"]: r for r in out["table1"]}
    assert t1["teacher NLL"]["kd_ref"] == exp2[TINY.exp1]["teacher_nll"]          # one chain feeds both tables
    assert t1["student NLL (U_o)"]["kd_ref"] == exp2[TINY.exp1]["nll_U_o"] and t1["teacher NLL"]["GPED"] == 0.052
    for r in exp2.values():
        assert r["gap_U_o"] == pytest.approx(r["nll_U_o"] - r["teacher_nll"]) and r["ent_mae_U_s"] >= 0
    t2 = {r["quantity"]: r["kd_ref"] for r in out["table2"]}
    assert t2["NLL ensemble"] == exp2[TINY.exp3]["teacher_nll"]
    widths = [r for r in out["table_exp3"] if r["student"].startswith("GPED U_o")]
    assert len(widths) == len(TINY.multipliers) ** 2
    for r in widths:
        sizes = [int(v) for v in r["sizes"].split("-")]
        assert (r["params"], r["macs"]) == (n_params(sizes), n_macs(sizes))
    assert any(r["front_macs"] == "yes" for r in out["table_exp3"])
    assert any(r["student"].startswith("group l1/l2") for r in out["table_exp3"])
    names = {r["ood_set"] for r in out["table3"] if r["teacher"].startswith("exp4")}
    assert "synthetic_digits" not in names and len(names) == len(TINY.ood_sets) - 1   # in-distribution here
    assert all(0 <= r[m] <= 1 for r in out["table3"] for m in ("ensemble", "GPED U_o", "EnD2"))
    own = [r for r in out["table3"] if r["ood_set"] == "heldout:5-9"]
    held = out["heldout"]
    assert [r["uncertainty"] for r in own] == ["TU", "KU"] and out["table3"][-2:] == own      # beside the others
    assert all(r["teacher"] == f"own, {held['n_teacher']} images of classes 0-4" and r["GPED U_s"] == "-"
               for r in own)
    assert held["n_test_in"] + held["n_test_ood"] == TINY.n_test and 0 < held["n_teacher"] < TINY.exp4[0]
    assert all(0 <= r["GPED U_s"] <= 1 for r in out["table3"] if r not in own)
    assert all(0 < r["GPED U_o mean"] <= 1 for r in out["table4"])
    summary = (folder / "summary.md").read_text()
    assert "NOT comparable" in summary and "Table 4" in summary and "heldout:5-9 has its own teacher" in summary
    assert len(out["conclusions"]) == 5
    for c in out["conclusions"]:
        assert ("- reproduces: " if c["holds"] else "- does NOT reproduce: ") + c["statement"] in summary


@pytest.mark.parametrize("stop_at", [3, 5])                   # a cell's chain; the held-out part's (the last)
def test_a_stopped_run_resumes_to_the_same_numbers(tiny_run, tmp_path, monkeypatch, stop_at):
    _, whole = tiny_run
    plain, calls = gped_mnist.run_chain, []

    def stop(*args):
        calls.append(args[3])
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return plain(*args)

    monkeypatch.setattr(gped_mnist, "run_chain", stop)
    with pytest.raises(KeyboardInterrupt):
        gped_mnist.run(TINY, str(tmp_path), np.random.default_rng(0))
    assert len(TINY.chains) == 5 and calls[-1] == TINY.chains[stop_at - 1]
    assert len(list((tmp_path / "cache").glob("chain_*.npz"))) == stop_at - 1
    calls.clear()
    monkeypatch.setattr(gped_mnist, "run_chain", lambda *args: calls.append(args[3]) or plain(*args))
    resumed = gped_mnist.run(TINY, str(tmp_path), np.random.default_rng(0))
    assert calls == TINY.chains[stop_at - 1:]                      # the cached chains are not run again
    assert _numbers(resumed) == _numbers(whole)
    other = gped_mnist.run(TINY, str(tmp_path / "other"), np.random.default_rng(1))   # control: another seed differs
    assert _numbers(other) != _numbers(whole)


def test_the_heldout_chain_trains_and_distils_on_the_kept_classes_only(tmp_path, monkeypatch):
    settings = gped_mnist.Settings.quick(**vars(TINY)).validate()
    run = gped_mnist.Run(str(tmp_path), np.random.default_rng(0), settings.record())
    data = gped_mnist.load_data(settings, run.rng(8))
    cell = settings.heldout_cell
    assert cell == (*settings.exp4, "heldout:5-9") and settings.chains[-1] == cell
    seen, plain_grad, plain_distil = {}, gped_mnist.mlp_log_posterior_gradient, gped_mnist.gped_distill

    def grad(net, x, y, *args, **kwargs):
        seen["x"], seen["y"] = x, y
        return plain_grad(net, x, y, *args, **kwargs)

    def distil(*args, **kwargs):
        seen.setdefault("d_prime", []).append(args[6])
        return plain_distil(*args, **kwargs)

    monkeypatch.setattr(gped_mnist, "mlp_log_posterior_gradient", grad)
    monkeypatch.setattr(gped_mnist, "gped_distill", distil)
    x_exp4, y_exp4 = gped_mnist.cell_data(settings, data, run, settings.exp4)[:2]
    ood = gped_mnist.ood_inputs(settings, data, run)
    eval_x = gped_mnist.eval_inputs(settings, data, run, cell, ood)
    arrays = gped_mnist.run_chain(settings, data, run, cell, eval_x)
    low = y_exp4 <= 4                                              # exp4's N images, those of classes 0-4
    assert 0 < low.sum() < low.size and set(np.unique(y_exp4[~low])) <= set(range(5, 10))
    np.testing.assert_array_equal(seen["y"], y_exp4[low])
    np.testing.assert_array_equal(seen["x"], x_exp4[low])           # s = 0: the images themselves
    assert len(seen["d_prime"]) == 2                               # its U_o and EnD2 students
    for d in seen["d_prime"]:
        np.testing.assert_array_equal(d, x_exp4[low])
    n_in, n_out = (data.y_test <= 4).sum(), (data.y_test > 4).sum()
    np.testing.assert_array_equal(eval_x, np.vstack([data.x_test[data.y_test <= 4], data.x_test[data.y_test > 4]]))
    assert arrays["p_sum"].shape == (n_in + n_out, 10)             # the network is unchanged: 10-way outputs
    assert gped_mnist.Settings.quick(heldout=None).validate().chains == gped_mnist.Settings.quick().cells


def _gaussian_chain(seed):
    return SGLD(lambda th: -th, np.zeros(3), np.random.default_rng(seed), 0.1, burn_in=2, thin=3)


def test_chain_tee_hands_every_consumer_the_plain_chain_whatever_the_timing():
    expected = _gaussian_chain(0).next_batch(40)
    tee = gped_mnist.ChainTee(_gaussian_chain(0), 3, lag=2)
    got = [None] * 3

    def consume(i):
        got[i] = tee.consumer(i).next_batch(40)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for g in got:
        np.testing.assert_array_equal(g, expected)
    assert len(tee.buffer) == 0


def test_chain_tee_stops_the_others_when_one_consumer_fails():
    tee = gped_mnist.ChainTee(_gaussian_chain(0), 2, lag=1)
    tee.take(0)
    tee.fail(ValueError("boom"))
    with pytest.raises(RuntimeError, match="another student of this chain failed"):
        tee.take(1)


@pytest.mark.parametrize("overrides, message", [
    (dict(grid=((5000, 28),)), "grid: expected cells N:s with N >= 1 and s in 0..27, received 5000:28"),
    (dict(grid=()), "grid: expected at least one (N, s) cell"),
    (dict(exp1=(5000, 15)), "exp1, exp4: expected cells without occlusion"),
    (dict(accumulate_every=55), "accumulate_every: expected a multiple of thin = 10"),
    (dict(n_ood=3000), "n_ood: expected at most n_test = 2000"),
    (dict(multipliers=(0.5, 2.0)), "multipliers: expected the teacher's width 1"),
    (dict(multipliers=(0.0, 1.0)), "multipliers[0]: expected a positive finite width multiplier, received 0.0"),
    (dict(ood_sets=("heldout:5-9",)), "ood_sets: expected names among"),
    (dict(heldout="heldout:5-10"), "heldout: expected None or a class split 'heldout:a-b' with 0 <= a <= b <= 9"),
    (dict(heldout="heldout:0-9"), "heldout: expected None or a class split"),
    (dict(heldout="5-9"), "heldout: expected None or a class split"),
    (dict(heldout=5), "heldout: expected None or a class split"),
    (dict(sgld_steps=1000), "sgld_steps: expected more than burn_in + thin = 1010"),
    (dict(data="cifar"), "data: expected 'auto', 'mnist' or 'synthetic'"),
    (dict(prune_lams=(0.0,)), "prune_lams: expected positive penalty weights"),
])
def test_bad_settings_are_named(overrides, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        gped_mnist.Settings.quick(**overrides).validate()


def _one_line_error(capsys, argv, *parts):
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert status == 2, (argv, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in err, (part, err)


def test_cli_help_and_bad_options(tmp_path, capsys):
    assert cli.main(["run", "gped-mnist", "--help"]) == 0 and "--configs" in capsys.readouterr().out
    out = tmp_path / "out"
    _one_line_error(capsys, ["run", "gped-mnist", "--configs", "5000:30", "--out", str(out)],
                    "kd-ref run gped-mnist: --configs: expected cells N:s", "5000:30")
    _one_line_error(capsys, ["run", "gped-mnist", "--configs", "5000-0", "--out", str(out)],
                    "--configs: expected cells N:s separated by commas")
    _one_line_error(capsys, ["run", "gped-mnist", "--sgld-steps", "1000", "--out", str(out)],
                    "--sgld-steps: expected more than burn_in + thin = 1010, received 1000")
    _one_line_error(capsys, ["run", "gped-mnist", "--configs", "70000:0", "--data", "mnist", "--out", str(out)],
                    "--configs: expected cells with N at most the 60000 MNIST training images")
    _one_line_error(capsys, ["run", "gped-mnist", "--jobs", "0", "--out", str(out)],
                    "--jobs: expected an integer >= 1, received 0")
    _one_line_error(capsys, ["run", "gped-mnist", "--quick", "--paper", "--out", str(out)],
                    "not allowed with argument --quick")
    assert not out.exists()                                       # refused before anything was written


def test_two_jobs_give_the_numbers_of_one(tiny_run, tmp_path):
    _, whole = tiny_run
    parallel = gped_mnist.run(gped_mnist.Settings.quick(**{**vars(TINY), "jobs": 2}), str(tmp_path),
                              np.random.default_rng(0))
    assert _numbers(parallel) == _numbers(whole)
