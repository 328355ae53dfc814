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
    return json.dumps({k: out[k] for k in ("table1", "table_exp2", "table2", "table_exp3", "table3", "table4")})


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
    names = {r["ood_set"] for r in out["table3"]}
    assert "synthetic_digits" not in names and len(names) == len(TINY.ood_sets) - 1   # in-distribution here
    assert all(0 <= r[m] <= 1 for r in out["table3"] for m in ("ensemble", "GPED U_s", "GPED U_o", "EnD2"))
    assert all(0 < r["GPED U_o mean"] <= 1 for r in out["table4"])
    summary = (folder / "summary.md").read_text()
    assert "NOT comparable" in summary and "Table 4" in summary
    assert len(out["conclusions"]) == 5
    for c in out["conclusions"]:
        assert ("- reproduces: " if c["holds"] else "- does NOT reproduce: ") + c["statement"] in summary


def test_a_stopped_run_resumes_to_the_same_numbers(tiny_run, tmp_path, monkeypatch):
    _, whole = tiny_run
    plain, calls = gped_mnist.run_chain, []

    def stop_at_the_third(*args):
        calls.append(args[3])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return plain(*args)

    monkeypatch.setattr(gped_mnist, "run_chain", stop_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        gped_mnist.run(TINY, str(tmp_path), np.random.default_rng(0))
    assert len(list((tmp_path / "cache").glob("chain_*.npz"))) == 2
    monkeypatch.setattr(gped_mnist, "run_chain", plain)
    resumed = gped_mnist.run(TINY, str(tmp_path), np.random.default_rng(0))
    assert _numbers(resumed) == _numbers(whole)
    other = gped_mnist.run(TINY, str(tmp_path / "other"), np.random.default_rng(1))   # control: another seed differs
    assert _numbers(other) != _numbers(whole)


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
