"""The kd-ref command: check, bench, run dispatch and error messages."""
import importlib
import json

import numpy as np
import pytest

from kd_ref import cli
from kd_ref.mlp import MLP


def test_check_runs_appendices_a_and_b_and_the_tour(capsys):
    assert cli.main(["check", "--appendix", "a", "b"]) == 0
    out = capsys.readouterr().out
    assert "Appendix A" in out and "Appendix B" in out and "FAIL" not in out
    assert "A short tour of kd_ref" in out and "all appendix checks passed" in out


def test_check_fails_when_a_derivative_is_wrong(monkeypatch, capsys):
    """Control: break the logistic's f'' and the Appendix B table must report it and exit 1."""
    from kd_ref.nonlinearities import Logistic

    monkeypatch.setattr(Logistic, "d2", lambda self, a, x: 1.01 * (-self.d1(a, x) * np.tanh(a / 2.0)))
    assert cli.main(["check", "--appendix", "b", "--no-tour"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "SOME APPENDIX CHECKS FAILED" in out


def test_bench_mlp_prints_ratios(capsys):
    assert cli.main(["bench", "mlp", "--batch", "5"]) == 0
    out = capsys.readouterr().out
    assert "R/bp" in out and "bp/fwd" in out and "GEMM" in out


def test_bench_curvature_prints_ratios_beside_counts(capsys):
    assert cli.main(["bench", "curvature", "--batch", "4", "--brute-net", "6", "3", "2"]) == 0
    out = capsys.readouterr().out
    assert "784-500-300-10" in out and "brute force run in full on 6-3-2 (29 parameters" in out
    assert "target (within 2x of the count)" in out


def test_bench_kd_prints_each_step_as_a_ratio_to_cross_entropy(capsys):
    assert cli.main(["bench", "kd", "--batch", "3", "--t", "2"]) == 0
    out = capsys.readouterr().out
    assert "784-50-30-10" in out and "t = 2;" in out and "soft+hard" in out and "DSE@t" in out
    (row,) = [line.split() for line in out.splitlines() if line.lstrip().startswith("3 ")]
    ratios = [float(v) for v in row[2:6]]          # soft+hard, logit, DSE@t, DSE@1 over one CE step
    assert all(r > 0 for r in ratios)               # printed, not compared: timings on a shared machine are no test


def test_bench_sgld_prints_the_step_ratio_to_one_gradient(capsys):
    assert cli.main(["bench", "sgld", "--batch", "2", "--gped-steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "784-400-400-10" in out and "478,410 parameters" in out and "SGLD/grad" in out
    (row,) = [line.split() for line in out.splitlines() if line.lstrip().startswith("2 ")]
    # the ratios are printed, not asserted (timings on a shared machine are no test): each a positive number
    assert float(row[6]) > 0.0 and float(row[7]) > 0.0                  # SGLD/grad, SGLD/SGD
    (gped,) = [line for line in out.splitlines() if "GPED step without the chain" in line]
    assert float(gped.split("ratio ")[1]) > 0.0


def test_bench_logz_on_a_tiny_run_prints_the_diagnostic_and_the_ratios(tmp_path, capsys):
    """A tiny finished rbm-nade run (exact log Z): the burn-in diagnostic, the AIS tuning, the three timed
    estimators, the distillation's CPU time (estimated: the run does not record it) and the ratios."""
    from test_resume import _tiny_rbm_nade

    from kd_ref.experiments import rbm_nade

    rbm_nade.run(_tiny_rbm_nade(), tmp_path, np.random.default_rng(0))
    capsys.readouterr()
    argv = ["bench", "logz", "--run", str(tmp_path), "--target", "1.0", "--ais-runs", "8", "--ais-temperatures", "20",
            "--pilot-chains", "30", "--pilot-sweeps", "12", "--max-n", "4096"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "best NADE 6/" in out and "exact log Z = " in out and "burn-in diagnostic: 30 chains" in out
    assert "AIS K=20     piecewise float32" in out and "bridge S=16 " in out
    assert "batch-means SE" in out and "estimated: not recorded by the run" in out
    ratios = {line.split(":")[0]: float(line.split(":")[1].split()[0]) for line in out.splitlines()
              if line.startswith("AIS / ")}
    # printed, not compared: timings on a shared machine are no test
    assert set(ratios) == {"AIS / importance sampling", "AIS / bridge sampling",
                           "AIS / (bridge sampling + distillation)"} and all(r > 0 for r in ratios.values())


def test_bench_curvature_counts_match_the_spec_and_the_net():
    from kd_ref.bench.curvature import counts

    small, large = counts([784, 50, 30, 10]), counts([784, 500, 300, 10])
    # SPEC_seeds §0.2: exact about 1.2 gradients on the small net and 30 on the large one
    assert small["exact"] / small["gradient"] == pytest.approx(1.2, abs=0.05)
    assert large["exact"] / large["gradient"] == pytest.approx(30, abs=1.5)
    assert 1.1 <= small["probe"] / small["gradient"] <= 1.5
    assert large["n_params"] == MLP([784, 500, 300, 10], ["relu", "relu", "log_softmax"], np.random.default_rng(0)).n_params


def test_unknown_names_are_reported(capsys):
    assert cli.main(["bench", "nosuch"]) == 2
    assert "unknown name 'nosuch'" in capsys.readouterr().err
    assert cli.main(["frobnicate"]) == 2
    assert cli.main([]) == 0


@pytest.mark.parametrize("table,package", [(cli.EXPERIMENTS, "experiments"), (cli.BENCHMARKS, "bench")])
def test_every_registered_command_has_a_main(table, package):
    for module in table.values():
        assert callable(importlib.import_module(f"kd_ref.{package}.{module}").main)


def test_every_appendix_check_has_a_main():
    for name in cli.APPENDICES:
        assert callable(cli.appendix_module(name).main)


# ------------------------------------------------------------------ a user's mistakes: one line, status 2
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402


def _one_line_error(capsys, argv, *parts):
    """``kd-ref ARGV`` exits with status 2 and writes exactly one line to stderr, holding every part."""
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert status == 2, (argv, err)
    assert err.count("\n") == 1 and err.endswith("\n") and "Traceback" not in err, err
    for part in parts:
        assert part in err, (part, err)
    return err


@pytest.fixture
def no_data(monkeypatch):
    monkeypatch.delenv("KD_REF_DATA", raising=False)


@pytest.fixture
def damaged_data(tmp_path, monkeypatch):
    """A KD_REF_DATA folder whose three reference files are truncated archives."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("mnist.npz", "binarized_mnist.npz", "rbm_cd25_500.npz"):
        np.savez(folder / name, x=np.zeros(100))
        (folder / name).write_bytes((folder / name).read_bytes()[:150])
    monkeypatch.setenv("KD_REF_DATA", str(folder))
    return folder


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("not a folder")
    return str(path)


RUN_OPTIONS = [
    (["compress", "--members", "0"], ["--members: expected an integer >= 1, received 0"]),
    (["compress", "--member-passes", "0"], ["--member-passes: expected a number of passes > 0, received 0.0"]),
    (["compress", "--student-passes", "nan"], ["--student-passes: expected a number of passes > 0, received nan"]),
    (["compress", "--nade-hidden", "0"], ["--nade-hidden: expected an integer >= 1, received 0"]),
    (["compress", "--n-train", "-1"], ["--n-train: expected an integer >= 0, received -1"]),
    (["compress", "--n-test", "1"], ["--n-test: expected 0 (all test images) or an integer >= 2, received 1"]),
    (["compress", "--seed", "-1"], ["--seed: expected an integer >= 0, received -1"]),
    (["compress", "--members", "two"], ["--members: invalid int value: 'two'"]),
    (["compress", "--fraction", "half"], ["--fraction: invalid choice: 'half'"]),
    (["compress", "--jobs", "0"], ["--jobs: expected an integer >= 1, received 0"]),
    (["compress", "--jobs", "two"], ["--jobs: expected an integer >= 1, received 'two'"]),
    (["rbm-nade", "--steps", "0"], ["--steps: expected an integer >= 1, received 0"]),
    (["rbm-nade", "--samples", "1"], ["--samples: expected an integer >= 2, received 1"]),
    (["rbm-nade", "--nade-hidden", "100", "0"], ["--nade-hidden[1]: expected an integer >= 1, received 0"]),
    (["rbm-nade", "--medium", "--data", "synthetic"], ["data: the CD25(500) RBM models binarised MNIST"]),
    (["rbm-nade", "--nades", "500:ml"], ["--nades: expected H:LOSS with H a positive integer and LOSS one of"]),
    (["rbm-nade", "--nades", "500:kl", "--losses", "se"], ["--nades: expected either --nades or the grid"]),
    (["rbm-nade", "--nades", "5:kl", "5:kl"], ["nades: expected distinct pairs"]),
    (["compress", "--student-seeds", "0"], ["--student-seeds: expected an integer >= 1, received 0"]),
    (["bayes-mog", "--seed", "-3"], ["--seed: expected an integer >= 0, received -3"]),
    (["bayes-logreg", "--sweep", "0"], ["--sweep: expected an integer >= 1, received 0"]),
    (["bayes-logreg", "--dse-eta0", "0"], ["--dse-eta0: expected a finite number > 0, received 0.0"]),
    (["bayes-logreg", "--sweep", "2", "--jobs", "0"], ["--jobs: expected an integer >= 1, received 0"]),
    (["bayes-logreg", "--jobs", "2"], ["--jobs: expected 1 without --sweep (only the seeds of a sweep run in "
                                       "parallel), received 2"]),
    (["ldl", "--trials", "1"], ["--trials: expected an integer >= 2, received 1"]),
    (["ldl", "--shots", "5", "0"], ["--shots: expected an integer >= 1, received 0"]),
    (["ldl", "--quick", "--paper"], ["argument --paper: not allowed with argument --quick"]),
    (["kd-temperature", "--t", "4", "0"], ["--t[1]: expected a value in (0, inf), received 0.0"]),
    (["kd-temperature", "--t", "nan"], ["--t[0]: expected a value in (0, inf), received nan"]),
    (["kd-temperature", "--t", "-2"], ["--t[0]: expected a value in (0, inf), received -2.0"]),
    (["kd-temperature", "--passes", "0"], ["--passes: expected an integer >= 1, received 0"]),
    (["kd-temperature", "--n-train", "-1"], ["--n-train: expected an integer >= 0, received -1"]),
    (["kd-temperature", "--quick", "--paper"], ["argument --paper: not allowed with argument --quick"]),
    (["kd-limits", "--draws", "0"], ["--draws: expected an integer >= 1, received 0"]),
    (["kd-limits", "--classes", "1"], ["--classes: expected an integer >= 2, received 1"]),
    (["kd-limits", "--seed", "-1"], ["--seed: expected an integer >= 0, received -1"]),
    (["kd-limits", "--draws", "many"], ["--draws: expected an integer >= 1, received 'many'"]),
]


@pytest.mark.parametrize("argv, parts", RUN_OPTIONS, ids=[" ".join(a) for a, _ in RUN_OPTIONS])
def test_run_refuses_out_of_range_options_with_one_line(tmp_path, capsys, argv, parts):
    out = tmp_path / "out"
    _one_line_error(capsys, ["run", *argv, "--out", str(out)], f"kd-ref run {argv[0]}: ", *parts)
    assert not out.exists()                                        # refused before anything was written


@pytest.mark.parametrize("name", sorted(cli.EXPERIMENTS))
def test_run_refuses_an_out_that_is_a_file(capsys, a_file, name):
    _one_line_error(capsys, ["run", name, "--out", a_file], "--out", "expected a folder", a_file, "existing file")


@pytest.mark.parametrize("argv, file", [
    (["compress", "--data", "mnist"], "mnist.npz"),
    (["compress", "--thesis"], "mnist.npz"),
    (["rbm-nade", "--medium"], "rbm_cd25_500.npz"),
    (["rbm-nade", "--data", "mnist"], "binarized_mnist.npz"),
    (["ldl", "--paper"], "mnist.npz"),
    (["kd-temperature", "--paper"], "mnist.npz"),
])
def test_run_names_missing_reference_data(tmp_path, capsys, no_data, argv, file):
    _one_line_error(capsys, ["run", *argv, "--out", str(tmp_path / "out")], f"{file}: not found", "KD_REF_DATA")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, file", [
    (["compress", "--thesis"], "mnist.npz"),
    (["compress"], "mnist.npz"),                           # auto: a damaged file is not silently replaced
    (["rbm-nade", "--thesis"], "rbm_cd25_500.npz"),
    (["rbm-nade"], "binarized_mnist.npz"),
    (["ldl"], "mnist.npz"),
    (["kd-temperature"], "mnist.npz"),
])
def test_run_names_damaged_reference_data(tmp_path, capsys, damaged_data, argv, file):
    _one_line_error(capsys, ["run", *argv, "--out", str(tmp_path / "out")], f"{file}: could not read",
                    str(damaged_data / file), "damaged")
    assert not (tmp_path / "out").exists()


def test_run_refuses_an_out_folder_made_with_other_settings(tmp_path, capsys, no_data):
    out = tmp_path / "out"
    (out / "cache").mkdir(parents=True)
    (out / "cache" / "settings.json").write_text('{"members": 99}')
    _one_line_error(capsys, ["run", "compress", "--out", str(out), "--no-progress"],
                    "kd-ref run compress: out: the cache in", "members: 99 there, 3 now")


def test_run_refuses_a_damaged_checkpoint_naming_it(tmp_path, capsys, monkeypatch):
    """An interrupted run leaves a checkpoint; damaged afterwards, the next run names it instead of resuming."""
    from kd_ref.progress import Progress
    from test_resume import _raising_progress, _tiny_rbm_nade

    from kd_ref.experiments import rbm_nade

    monkeypatch.setattr(rbm_nade.Settings, "quick", classmethod(lambda cls, **o: _tiny_rbm_nade(**o)))
    plain = Progress.update
    _raising_progress(monkeypatch, 60)           # the CD fit's progress line after step 10: a checkpoint is written
    argv = ["run", "rbm-nade", "--no-progress", "--out", str(tmp_path)]
    assert cli.main(argv) == 130
    monkeypatch.setattr(Progress, "update", plain)
    (ckpt,) = (tmp_path / "ckpt").iterdir()
    ckpt.write_bytes(ckpt.read_bytes()[:300])
    capsys.readouterr()
    _one_line_error(capsys, argv, "kd-ref run rbm-nade: checkpoint: could not read", str(ckpt), "delete it")


BENCH_OPTIONS = [
    (["mlp", "--batch", "0"], "--batch: expected an integer >= 1, received 0"),
    (["mlp", "--seed", "-1"], "--seed: expected an integer >= 0, received -1"),
    (["dse", "--members", "0"], "--members: expected an integer >= 1, received 0"),
    (["dse", "--teacher-batch", "x"], "--teacher-batch: expected an integer >= 1, received 'x'"),
    (["nade", "--samples", "0"], "--samples: expected an integer >= 1, received 0"),
    (["gibbs", "--chains", "0"], "--chains: expected an integer >= 1, received 0"),
    (["logz", "--target", "0"], "--target: expected a half-width > 0 nats, received 0.0"),
    (["logz", "--max-n", "0"], "--max-n: expected an integer >= 2, received 0"),
    (["ldl", "--k", "784", "0"], "--k: expected an integer >= 1, received 0"),
    (["kd", "--batch", "0"], "--batch: expected an integer >= 1, received 0"),
    (["kd", "--t", "0"], "--t: expected a finite number > 0, received 0.0"),
    (["kd", "--t", "nan"], "--t: expected a finite number > 0, received nan"),
    (["curvature", "--batch", "0"], "--batch: expected an integer >= 1, received 0"),
    (["curvature", "--brute-net", "784", "50", "10"], "--brute-net: expected a net of at most 20,000 parameters"),
    (["curvature", "--brute-net", "784"], "--brute-net: expected at least 2 widths"),
    (["logz", "--run", "/nonexistent"], "--run: expected a finished `kd-ref run rbm-nade` folder with results.json"),
]


@pytest.mark.parametrize("argv, part", BENCH_OPTIONS, ids=[" ".join(a) for a, _ in BENCH_OPTIONS])
def test_bench_refuses_bad_options_with_one_line(capsys, argv, part):
    _one_line_error(capsys, ["bench", *argv], f"kd-ref bench {argv[0]}: ", part)


@pytest.mark.parametrize("name, file", [("nade", "binarized_mnist.npz"), ("gibbs", "rbm_cd25_500.npz"),
                                        ("ldl", "mnist.npz")])
def test_bench_names_damaged_reference_data(capsys, damaged_data, name, file):
    _one_line_error(capsys, ["bench", name], f"kd-ref bench {name}: {file}: could not read", "damaged")


def test_bench_logz_names_a_run_folder_it_cannot_read(tmp_path, capsys):
    (tmp_path / "results.json").write_text("{not json")
    _one_line_error(capsys, ["bench", "logz", "--run", str(tmp_path)], "--run: expected the results.json",
                    "JSONDecodeError")
    (tmp_path / "results.json").write_text('{"settings": {"bogus": 1}}')
    _one_line_error(capsys, ["bench", "logz", "--run", str(tmp_path)], "--run: expected the results.json",
                    "KeyError: 'mode'")
    settings = {"mode": "quick", "rbm": "train", "sample_burn_in": 1, "n_steps": 2, "dtype": "float64"}
    (tmp_path / "results.json").write_text(json.dumps({"settings": settings, "models": {}, "references": {}}))
    _one_line_error(capsys, ["bench", "logz", "--run", str(tmp_path)], "cache/marginals.npz", "FileNotFoundError")


def test_data_refuses_bad_commands_and_files_with_one_line(tmp_path, capsys, a_file):
    _one_line_error(capsys, ["data"], "kd-ref data: expected a command (download, import-rbm, verify or info)")
    _one_line_error(capsys, ["data", "frob"], "kd-ref data: argument command: invalid choice: 'frob'")
    _one_line_error(capsys, ["data", "import-rbm", str(tmp_path / "absent.mat"), "--dest", str(tmp_path / "d")],
                    "kd-ref data import-rbm: mat_path: no file at", "absent.mat")
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(b"not a MATLAB file at all")
    _one_line_error(capsys, ["data", "import-rbm", str(garbage), "--dest", str(tmp_path / "d")],
                    "kd-ref data import-rbm: ", "garbage.mat")
    _one_line_error(capsys, ["data", "import-rbm", str(garbage), "--dest", a_file],
                    "kd-ref data import-rbm: --dest: expected a folder", "existing file")
    _one_line_error(capsys, ["data", "download", "--dest", a_file], "kd-ref data download: --dest: expected a folder")
    _one_line_error(capsys, ["data", "download", "--timeout", "0"],
                    "kd-ref data download: argument --timeout: expected a finite number > 0, received 0.0")
    _one_line_error(capsys, ["data", "verify", "--path", str(tmp_path / "nowhere")],
                    "kd-ref data verify: --path: expected a folder holding the reference data", "no such folder")
    _one_line_error(capsys, ["data", "info", "--path", a_file], "kd-ref data info: --path", "a file")
    assert not (tmp_path / "d").exists()


def test_missing_or_unknown_names_get_one_line(capsys):
    _one_line_error(capsys, ["frobnicate"], "kd-ref: unknown command 'frobnicate'; expected one of check, run")
    # the lists come from the registries, so a new experiment or benchmark needs no edit here
    _one_line_error(capsys, ["run"], "kd-ref run: expected a name, one of " + ", ".join(sorted(cli.EXPERIMENTS)))
    _one_line_error(capsys, ["bench"], "kd-ref bench: expected a name, one of " + ", ".join(sorted(cli.BENCHMARKS)))
    assert {"bayes-logreg", "compress", "kd-temperature", "ldl", "obd", "rbm-nade"} <= set(cli.EXPERIMENTS)
    _one_line_error(capsys, ["run", "nosuch"], "kd-ref run: unknown name 'nosuch'")
    assert cli.main(["--help"]) == 0 and cli.main(["run", "--help"]) == 0 and "available" in capsys.readouterr().out


def test_check_refuses_bad_options_with_one_line(capsys):
    _one_line_error(capsys, ["check", "--appendix", "z"], "kd-ref check: argument --appendix: invalid choice: 'z'")
    _one_line_error(capsys, ["check", "--seed", "-1"], "kd-ref check: argument --seed: expected an integer >= 0")


def test_programming_errors_still_show_their_traceback(monkeypatch):
    """Only a user's mistakes become one-line errors: a bug inside an experiment still raises."""
    from kd_ref.experiments import bayes_mog

    def broken(settings, out_dir, rng):
        raise ValueError("a bug, not a usage error")
    monkeypatch.setattr(bayes_mog, "run", broken)
    with pytest.raises(ValueError, match="a bug, not a usage error"):
        cli.main(["run", "bayes-mog", "--out", "/tmp/kd_ref_never_written"])


def test_a_real_process_gets_one_line_and_status_2(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "kd_ref.cli", "run", "rbm-nade", "--steps", "0", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr == "kd-ref run rbm-nade: --steps: expected an integer >= 1, received 0\n"
    assert done.stdout == "" and not (tmp_path / "out").exists()


def test_setup_cfg_lists_every_subpackage():
    """setup.cfg names its packages one by one (appendix_checks is mapped into kd_ref), so a new
    subpackage left off the list would be missing from an installed kd_ref."""
    import configparser
    root = os.path.join(os.path.dirname(__file__), "..")
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(root, "setup.cfg"))
    listed = set(cfg["options"]["packages"].split())
    on_disk = {"kd_ref.appendix_checks"}
    for folder, _, files in os.walk(os.path.join(root, "kd_ref")):
        if "__init__.py" in files:
            on_disk.add(os.path.relpath(folder, root).replace(os.sep, "."))
    assert listed == on_disk
