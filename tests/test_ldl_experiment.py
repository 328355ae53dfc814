"""``kd-ref run ldl`` and ``kd-ref bench ldl`` end to end on tiny settings: files, tables, cache, pairing."""
import numpy as np
import pytest

from kd_ref import cli
from kd_ref.bench import ldl as bench_ldl
from kd_ref.experiments import ldl


def _tiny(**overrides):
    tiny = dict(data="synthetic", n_train=300, shots=(1, 2), trials=2, iterative_trials=1, n_test=60, curve_test=30,
                ks=(16,), adam_epochs=2, bd_epochs=2, lr_sweep=(1e-2, 1e-3), sgd_sweep=(0.05, 1e-3), sweep_shots=2, baseline_epochs=1,
                progress=False)
    return ldl.Settings.quick(**(tiny | overrides))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ldl")
    settings = _tiny()
    return settings, out, ldl.run(settings.validate(), str(out), np.random.default_rng(0))


def test_run_writes_tables_figure_and_cache(tiny_run):
    settings, out, res = tiny_run
    for name in ("accuracy.md", "accuracy.csv", "paired.md", "paired.csv", "adam_lr.md", "tables.md", "curves.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert sorted(p.name for p in (out / "cache").glob("*.npz")) == ["k16_trial000.npz", "k16_trial001.npz"]
    text = (out / "tables.md").read_text()
    assert "| K | method | shots | trials | accuracy | accuracy_2se | paper |" in text
    assert "o2md_adam: 1 0.426, 10 0.801" in text                     # the paper's figures quoted beside ours


def test_iterative_methods_run_on_the_first_trials_only_and_rows_pair_them(tiny_run):
    settings, out, res = tiny_run
    first, second = res["results"][(16, 0)], res["results"][(16, 1)]
    assert np.all(np.isfinite(first["acc.o2md_adam"])) and np.all(np.isnan(second["acc.o2md_adam"]))
    assert first["curve.bd"].shape == (2, 2) and np.all(np.isfinite(first["curve.bd"]))
    rows = {(r["method"], r["shots"]): r for r in ldl.summary_rows(res["results"], settings)}
    assert rows[("o2md_cf", 2)]["trials"] == 2 and rows[("bd", 2)]["trials"] == 1
    mean = np.mean([r["acc.o2md_cf"][1] for r in (first, second)])
    assert rows[("o2md_cf", 2)]["accuracy"] == pytest.approx(mean)
    paired = {(r["comparison"], r["shots"]): r for r in ldl.paired_rows(res["results"], settings)}
    want = np.mean([r["acc.nearest_subspace"][0] - r["acc.o2md_cf"][0] for r in (first, second)])
    assert paired[("nearest_subspace - o2md_cf", 1)]["difference"] == f"{want:+.3f}"
    for r in (first, second):
        assert np.all((r["acc.o2md_cf"] >= 0) & (r["acc.o2md_cf"] <= 1))


def test_the_sweep_puts_sgd_and_adam_next_to_the_closed_form(tiny_run):
    settings, out, res = tiny_run
    first = res["results"][(16, 0)]
    assert first["sweep"].shape == (2,) and first["sweep_sgd"].shape == (2,) and first["sweep_gap"].shape == (4,)
    gap = first["sweep_gap"]
    assert np.all((gap > 0) & np.isfinite(gap))
    # S2.3: SGD only removes the span component, so at a stable step it is the nearer; the smaller step moves less
    assert gap[2] < gap[3] <= 1.0
    rows = ldl.sweep_rows(res["results"], settings)
    assert [(r["method"], r["lr"]) for r in rows] == [("o2md_cf (closed form)", "-"), ("o2md_adam", "0.01"),
                                                      ("o2md_adam", "0.001"), ("o2md_sgd", "0.05"),
                                                      ("o2md_sgd", "0.001")]
    assert rows[3]["gap_to_closed_form"] == f"{gap[2]:.2g}"
    assert "o2md_sgd" in (out / "adam_lr.md").read_text()
    with pytest.raises(ValueError, match=r"sgd_sweep\[0\]"):
        _tiny(sgd_sweep=(0.0,)).validate()


def test_a_second_run_reuses_the_cache_and_other_settings_are_refused(tiny_run):
    settings, out, res = tiny_run
    again = ldl.run(settings, str(out), np.random.default_rng(0))
    for key, arrays in res["results"].items():
        for name, value in arrays.items():
            np.testing.assert_array_equal(again["results"][key][name], value)
    with pytest.raises(ValueError, match="out: the cache in .* was written with other settings"):
        ldl.run(_tiny(adam_epochs=3), str(out), np.random.default_rng(0))


def test_settings_validate_names_the_field():
    with pytest.raises(ValueError, match=r"shots\[1\]: expected an integer >= 1, received 0"):
        _tiny(shots=(1, 0)).validate()
    with pytest.raises(ValueError, match="trials: expected an integer >= 2"):
        _tiny(trials=1).validate()
    with pytest.raises(ValueError, match="bd_target_lr"):
        _tiny(bd_target_lr=-1.0).validate()
    assert ldl.Settings.paper().validate().ks == (784, 2000)


def test_bench_compares_the_closed_form_with_adam_epochs():
    rng = np.random.default_rng(0)
    name, *data = bench_ldl.load(40, rng)
    cf_s, cf_acc, secs, accs = bench_ldl.compare(16, 2, 3, 1e-3, data, rng)
    assert cf_s > 0 and np.all(np.diff(secs) > 0) and secs.shape == accs.shape == (3,)
    assert 0 <= cf_acc <= 1 and np.all((accs >= 0) & (accs <= 1))


def test_cli_bench_ldl_prints_the_ratio(capsys, monkeypatch):
    monkeypatch.delenv("KD_REF_DATA", raising=False)          # the synthetic digits: no file needed
    assert cli.main(["bench", "ldl", "--k", "16", "--shots", "1", "--epochs", "2", "--n-test", "30"]) == 0
    out = capsys.readouterr().out
    assert "K = 16: closed form" in out and "2 Adam epochs / closed form = " in out
