"""The kd-ref command: check, bench, run dispatch and error messages."""
import importlib

import numpy as np
import pytest

from kd_ref import cli


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
        assert callable(importlib.import_module(f"appendix_checks.appendix_{name}").main)
