"""``kd-ref run kd-limits`` end to end (about two seconds): the printed slopes are the derived rates, the
uncentred controls do not converge, and sabotaged limits make the printed slope and the check row fail."""
import re

import numpy as np
import pytest

from kd_ref import cli
from kd_ref.distill import temperature
from kd_ref.experiments import kd_limits


def _printed_slopes(text):
    """{line before the colon: value} for every printed line 'S1.x ... slope ...: value'."""
    return {name: float(value) for name, value in re.findall(r"^(S1\.[69][^:\n]*slope[^:\n]*): (-?\d+\.\d+)",
                                                              text, flags=re.M)}


def test_run_prints_slopes_near_minus_one_and_minus_two_and_controls_that_do_not_converge(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["run", "kd-limits", "--out", str(out), "--draws", "50"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^S1\.6 slope of error vs t: -[01]\.\d\d$", text, flags=re.M), text
    assert re.search(r"^S1\.9 slope of error vs t: -[12]\.\d\d$", text, flags=re.M), text
    slopes = _printed_slopes(text)
    assert slopes["S1.6 slope of error vs t"] == pytest.approx(-1.0, abs=0.1)
    assert slopes["S1.6 slope of gradient error vs t"] == pytest.approx(-1.0, abs=0.1)
    assert slopes["S1.9 slope of error vs t"] == pytest.approx(-2.0, abs=0.1)
    assert abs(slopes["S1.6 uncentred control slope"]) < 0.1 and abs(slopes["S1.9 uncentred control slope"]) < 0.1
    for name in ("s1_6.md", "s1_6.csv", "s1_9.md", "convex.md", "tables.md", "limits.png", "results.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    results = kd_limits.run(kd_limits.Settings.quick(draws=50), str(out), np.random.default_rng(0))
    assert results["s1_6"][-1]["uncentred_control"] > 1.0            # stays away: the logit means differ
    assert results["s1_9"][-1]["uncentred_control"] > 1e-3
    assert results["convex"][-1]["t"] == 1e3 and results["convex"][-1]["centred_logits"] < 1e-2
    assert results["slopes"]["convex centred logits"] == pytest.approx(-1.0, abs=0.1)


def test_a_wrong_limit_breaks_the_slope_and_the_check_row(monkeypatch, capsys):
    """Control: measured against the uncentred form (Hinton's zero-mean assumption dropped silently), the S1.6
    error no longer falls, and the seeds check reports FAIL with exit status 1."""
    def uncentred(z, v, t):
        e = temperature.limit_errors(z, v, t)
        return temperature.LimitErrors(e.t, e.control, e.grad, e.control)
    monkeypatch.setattr(kd_limits, "limit_errors", uncentred)
    assert cli.main(["check", "--appendix", "seeds", "--no-tour"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "SOME APPENDIX CHECKS FAILED" in out


def test_the_seeds_check_passes(capsys):
    assert cli.main(["check", "--appendix", "seeds", "--no-tour"]) == 0
    assert "S1.9" in capsys.readouterr().out
