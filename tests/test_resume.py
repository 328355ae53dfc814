"""Runs stopped partway resume to exactly the uninterrupted result: the state of every generator and chain,
the model-fitting wrappers, and the experiments that checkpoint (compress, rbm-nade), through the CLI too."""
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kd_ref import cli
from kd_ref.distill import distill
from kd_ref.distill.compression import (CrossEntropyLoss, DatasetGenerator, MLPTeacher, NADEGenerator, NoiseGenerator,
                                        teacher_targets)
from kd_ref.distill.generative import ChainStream, KLLoss, distill_nade
from kd_ref.mlp import MLP
from kd_ref.nade import NADE
from kd_ref.optim import Adadelta, Interrupted, generator_state
from kd_ref.progress import Progress
from kd_ref.rbm import RBM, GibbsSampler, fit_cd


def _random_rbm(rng, d, h):
    rbm = RBM(d, h, rng)
    rbm.params[...] = rng.normal(scale=0.8, size=rbm.n_params)
    return rbm


def _binary(rng, n, d):
    return (rng.random((n, d)) < 0.4).astype(np.float64)


def _ctrl_c_at(step):
    """A callback that presses Ctrl-C (raises KeyboardInterrupt) after step ``step``."""
    def callback(s, loss):
        if s == step:
            raise KeyboardInterrupt
    return callback


def _send_sigint_on_call(n):
    """A function that sends this process SIGINT on its n-th call (a real Ctrl-C, delivered mid-step).

    ``signal.raise_signal`` delivers it to the calling (main) thread at once; ``os.kill(os.getpid(), ...)``
    lets the kernel pick any thread, a BLAS worker among them, whose C-level handler may then run late on a
    loaded machine (the likely cause of two CI runs in which test_cli's damaged-checkpoint run was never
    interrupted).
    """
    calls = {"n": 0}

    def maybe():
        calls["n"] += 1
        if calls["n"] == n:
            signal.raise_signal(signal.SIGINT)
    return maybe


# ------------------------------------------------------------------------- state of streams and chains
def _make_streams(seed):
    rng = np.random.default_rng(seed)
    data = np.random.default_rng(0).normal(size=(13, 3))
    rbm = _random_rbm(np.random.default_rng(1), 5, 3)
    nade = NADE(5, 4, np.random.default_rng(2), init_std=0.5)
    return {
        "dataset": DatasetGenerator(data, 4, rng, targets=np.eye(13)[:, :2], rows=np.arange(13)[::-1][:11]),
        "nade": NADEGenerator(nade, 3, np.random.default_rng([seed, 1])),
        "noise": NoiseGenerator(3, 4, np.random.default_rng([seed, 2]), mean=1.0, std=2.0),
        "gibbs": GibbsSampler(rbm, np.random.default_rng([seed, 3]), n_chains=7),
        "chains": ChainStream(rbm, 3, np.random.default_rng([seed, 4]), n_chains=7, burn_in=2),
    }


def _next(stream):
    out = stream.next_batch(3) if isinstance(stream, GibbsSampler) else stream()
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("kind", ["dataset", "nade", "noise", "gibbs", "chains"])
def test_every_stream_continues_exactly_from_its_state(kind):
    stream = _make_streams(0)[kind]
    for _ in range(5):
        _next(stream)
    saved = stream.state()
    expected = [_next(stream) for _ in range(6)]
    other = _make_streams(77)[kind]                  # same shapes, other seeds
    other.load_state(saved)
    for want in expected:
        for a, b in zip(_next(other), want):
            np.testing.assert_array_equal(a, b)
    control = _make_streams(77)[kind]                # without the state: another stream
    assert not all(np.array_equal(a, b) for a, b in zip(_next(control), expected[0]))


@pytest.mark.parametrize("kind, key, value, match", [
    ("gibbs", "x", np.full((7, 5), 0.5), r"x: expected binary chain states of shape \(7, 5\)"),
    ("gibbs", "x", np.zeros((6, 5)), r"x: expected binary chain states of shape \(7, 5\)"),
    ("gibbs", "next", np.array(7), r"next: expected an integer in \[0, 6\], received 7"),
    ("chains", "examples_drawn", np.array(-1), "examples_drawn: expected an integer >= 0, received -1"),
    ("noise", "rng", np.array("[]"), "rng: expected a PCG64 state, received a list state"),
    ("dataset", "perm", np.arange(13), r"perm: expected a permutation of 0..10"),
])
def test_a_bad_state_is_refused_and_changes_nothing(kind, key, value, match):
    stream = _make_streams(0)[kind]
    _next(stream)
    before = stream.state()
    with pytest.raises(ValueError, match=match):
        stream.load_state({**before, key: value})
    after = stream.state()
    assert all(np.array_equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------------------- the fitting wrappers
def test_nade_fit_interrupted_at_a_random_step_resumes_exactly(tmp_path):
    data = _binary(np.random.default_rng(0), 40, 6)
    test = _binary(np.random.default_rng(1), 10, 6)
    stop = int(np.random.default_rng(2).integers(1, 60))

    def fit(**kwargs):
        nade = NADE(6, 5, np.random.default_rng(3), init_std=0.1)
        result = nade.fit(data, np.random.default_rng(4), n_steps=60, batch_size=7, test=test, monitor_every=9,
                          progress=False, **kwargs)
        return nade, result

    whole, expected = fit()
    with pytest.raises(Interrupted) as info:
        fit(checkpoint=tmp_path / "nade.ckpt", checkpoint_every=11, callback=_ctrl_c_at(stop))
    assert info.value.step == stop
    nade, result = fit(checkpoint=tmp_path / "nade.ckpt", checkpoint_every=11)
    np.testing.assert_array_equal(nade.params, whole.params)
    np.testing.assert_array_equal(result.losses, expected.losses)
    assert result.monitor == expected.monitor


def test_nade_fit_refuses_a_bad_option_before_setting_the_biases(tmp_path):
    data = _binary(np.random.default_rng(0), 40, 6)
    nade = NADE(6, 5, np.random.default_rng(3), init_std=0.1)
    before = nade.params.copy()
    with pytest.raises(TypeError, match=r"callback: expected a callable .*or None, received 3"):
        nade.fit(data, np.random.default_rng(4), n_steps=5, init_biases=True, callback=3, progress=False)
    np.testing.assert_array_equal(nade.params, before)



@pytest.mark.parametrize("option, match", [(dict(checkpoint_every=0), "checkpoint_every: expected an integer >= 1"),
                                           (dict(settings={"n": object()}), "settings: expected JSON-able values")])
@pytest.mark.parametrize("fit", ["nade", "cd"])
def test_fits_refuse_checkpoint_options_before_drawing_from_their_generator(tmp_path, fit, option, match):
    data = _binary(np.random.default_rng(0), 40, 6)
    model = NADE(6, 5, np.random.default_rng(3), init_std=0.1) if fit == "nade" else \
        RBM(6, 4, np.random.default_rng(3), init_std=0.1)
    before, rng = model.params.copy(), np.random.default_rng(4)
    entry = generator_state(rng)
    with pytest.raises((TypeError, ValueError), match=match):
        if fit == "nade":
            model.fit(data, rng, n_steps=5, init_biases=True, progress=False, checkpoint=tmp_path / "c", **option)
        else:
            fit_cd(model, data, rng, n_steps=5, progress=False, checkpoint=tmp_path / "c", **option)
    assert generator_state(rng) == entry                    # no permutation drawn
    np.testing.assert_array_equal(model.params, before)
    assert not (tmp_path / "c").exists()

def test_cd_fit_stopped_by_a_real_ctrl_c_resumes_exactly(tmp_path):
    """SIGINT from inside the monitor (in the middle of a step): the step finishes, the checkpoint holds it."""
    data = _binary(np.random.default_rng(0), 30, 5)

    def fit(monitor_hook=lambda: None, **kwargs):
        rbm = RBM(5, 3, np.random.default_rng(1), init_std=0.1)
        rng = np.random.default_rng(2)

        def monitor():
            monitor_hook()
            return float(np.mean(rbm.log_prob_exact(data)))
        result = fit_cd(rbm, data, rng, n_steps=50, k=2, batch_size=4, monitor=monitor, monitor_every=5,
                        progress=False, **kwargs)
        return rbm, rng, result

    whole, whole_rng, expected = fit()
    with pytest.raises(Interrupted) as info:
        fit(_send_sigint_on_call(4), checkpoint=tmp_path / "rbm.ckpt")
    assert (info.value.step, info.value.saved_step) == (20, 20)
    rbm, rng, result = fit(checkpoint=tmp_path / "rbm.ckpt")
    np.testing.assert_array_equal(rbm.params, whole.params)
    assert str(generator_state(rng)) == str(generator_state(whole_rng))
    np.testing.assert_array_equal(result.losses, expected.losses)
    assert result.monitor == expected.monitor


class _KLWithCtrlC(KLLoss):
    def __init__(self, hook):
        self.hook = hook

    def __call__(self, nade, x, targets=None):
        self.hook()
        return super().__call__(nade, x, targets)


def test_rbm_to_nade_distillation_resumes_exactly_with_its_chains_and_bound_samples(tmp_path):
    """The Gibbs chains of the stream and the generator of the lower bound's NADE samples are checkpointed."""
    rbm = _random_rbm(np.random.default_rng(0), 6, 3)
    test = _binary(np.random.default_rng(1), 8, 6)
    stop = int(np.random.default_rng(5).integers(1, 40))

    def run(loss, **kwargs):
        rng = np.random.default_rng(3)
        nade = NADE(6, 5, rng, init_std=0.1)
        stream = ChainStream(rbm, 4, rng, n_chains=12, burn_in=3)
        bound_rng = np.random.default_rng(9)        # its own generator, so the checkpoint must hold it too
        result = distill_nade(nade, loss, stream, rbm, 40, test=test, monitor_every=6, bound_samples=5,
                              rng=bound_rng, progress=False, **kwargs)
        return nade, stream, result

    whole, whole_stream, expected = run(KLLoss())
    with pytest.raises(Interrupted):
        run(_KLWithCtrlC(_send_sigint_on_call(stop)), checkpoint=str(tmp_path / "d.ckpt"), checkpoint_every=7)
    nade, stream, result = run(KLLoss(), checkpoint=str(tmp_path / "d.ckpt"), checkpoint_every=7)
    np.testing.assert_array_equal(nade.params, whole.params)
    np.testing.assert_array_equal(stream.sampler.x, whole_stream.sampler.x)
    np.testing.assert_array_equal(result.losses, expected.losses)
    assert result.monitor == expected.monitor and set(result.monitor[0][1]) == {"log_q_test", "upper", "lower"}


@pytest.mark.parametrize("kind", ["noise", "nade", "dataset"])
def test_compression_distillation_resumes_exactly_on_each_generator(tmp_path, kind):
    teacher = MLPTeacher(MLP([5, 6, 3], ["logistic", "log_softmax"], np.random.default_rng(0)))
    nade = NADE(5, 4, np.random.default_rng(1), init_std=0.5)
    stop = int(np.random.default_rng(len(kind)).integers(1, 30))

    def run(**kwargs):
        rng = np.random.default_rng(2)
        student = MLP([5, 4, 3], ["relu", "log_softmax"], rng)
        gen = {"noise": lambda: NoiseGenerator(5, 6, rng), "nade": lambda: NADEGenerator(nade, 6, rng),
               "dataset": lambda: DatasetGenerator(np.random.default_rng(3).random((17, 5)), 6, rng)}[kind]()
        loss = CrossEntropyLoss()
        result = distill(student, loss, gen, teacher_targets(student, teacher, loss), Adadelta(), 30, progress=False,
                         **kwargs)
        return student, result

    whole, expected = run()
    with pytest.raises(Interrupted):
        run(checkpoint=tmp_path / "s.ckpt", checkpoint_every=4, callback=_ctrl_c_at(stop))
    student, result = run(checkpoint=tmp_path / "s.ckpt", checkpoint_every=4)
    np.testing.assert_array_equal(student.params, whole.params)
    np.testing.assert_array_equal(result.losses, expected.losses)


# ------------------------------------------------------------------------------------- experiments
def _without_timings(obj):
    """The results with every wall-clock or CPU time removed (they are the only numbers that may differ)."""
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if "seconds" not in k}
    if isinstance(obj, (list, tuple)):
        return [_without_timings(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _without_timings(obj.tolist())
    return obj


def _interrupting_progress(monkeypatch, at):
    """Make the n-th Progress.update of this process (any loop: training steps, Gibbs sweeps, AIS) send SIGINT."""
    hook = _send_sigint_on_call(at)
    plain = Progress.update

    def update(self, done, **values):
        hook()
        return plain(self, done, **values)
    monkeypatch.setattr(Progress, "update", update)


def _raising_progress(monkeypatch, at):
    """Make the n-th Progress.update raise KeyboardInterrupt, as an interrupt the loop did not defer would.

    The experiment-level resume tests use this rather than a real SIGINT: twice in CI a real one
    sent from a progress line was never heard by the run (not reproduced on demand; see the closing
    note of issue 11), and these tests are about what a resumed run computes, not about signal
    delivery, which test_optim, test_rbm and the real-process test below check with real signals.
    """
    calls = {"n": 0}
    plain = Progress.update

    def update(self, done, **values):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt
        return plain(self, done, **values)
    monkeypatch.setattr(Progress, "update", update)


def _count_progress_updates(monkeypatch, run):
    calls = {"n": 0}
    plain = Progress.update

    def update(self, done, **values):
        calls["n"] += 1
        return plain(self, done, **values)
    monkeypatch.setattr(Progress, "update", update)
    out = run()
    monkeypatch.setattr(Progress, "update", plain)
    return out, calls["n"]


def _run_with_interrupts(monkeypatch, run, total, rng, times=2):
    """Run, interrupting it at random points, and start again after each; returns the final results."""
    plain = Progress.update
    for _ in range(times):
        _raising_progress(monkeypatch, int(rng.integers(1, total)))
        with pytest.raises(KeyboardInterrupt):       # Interrupted inside train, a plain one elsewhere
            run()
        monkeypatch.setattr(Progress, "update", plain)
    return run()


def _toy_data():
    from kd_ref.experiments.compress import Data

    rng = np.random.default_rng(0)
    protos = (rng.uniform(size=(3, 36)) < 0.3).astype(float)

    def draw(n):
        y = rng.integers(0, 3, size=n)
        return np.clip(protos[y] + rng.uniform(0, 0.3, size=(n, 36)), 0, 1), y

    (x_train, y_train), (x_test, y_test) = draw(60), draw(30)
    return Data("toy", x_train, y_train, x_test, y_test, (6, 6), 3)


def test_compress_interrupted_twice_ends_with_the_uninterrupted_results(tmp_path, monkeypatch):
    from kd_ref.experiments import compress

    data = _toy_data()
    settings = compress.Settings.thesis(data="synthetic", n_train=0, n_test=0, members=2, member_hidden=(6, 5),
                                        student_hidden=(4, 4), member_passes=3, student_passes=3, nade_hidden=4,
                                        nade_passes=3, curve_points=3, batch_size=5, figures=False, progress=False)
    assert settings.checkpoints

    def run(folder):
        return lambda: compress.run(settings, tmp_path / folder, np.random.default_rng(0), data=data)

    expected, total = _count_progress_updates(monkeypatch, run("whole"))
    results = _run_with_interrupts(monkeypatch, run("cut"), total, np.random.default_rng(1))
    assert _without_timings({**results, "files": None}) == _without_timings({**expected, "files": None})
    for key, curve in expected["curves"].items():
        np.testing.assert_array_equal(results["curves"][key], curve)
    assert results["tables"] == expected["tables"]
    assert not os.listdir(tmp_path / "cut" / "ckpt")          # finished models leave no checkpoint behind


def _tiny_rbm_nade(**overrides):
    from kd_ref.experiments import rbm_nade

    base = dict(data="synthetic", rbm_hidden=4, cd_steps=60, n_train=100, n_test=20, curve_test=10,
                nade_hidden=(6,), losses=("kl", "se"), n_steps=40, n_chains=20, burn_in=5, n_samples=20,
                sample_burn_in=3, upper_chains=20, upper_burn_in=7, ais_runs=4, ais_temperatures=20, bound_samples=4,
                curve_points=4, hill_restarts=1, progress=False, figures=False)
    return replace(rbm_nade.Settings(), **{**base, **overrides})      # the class defaults are the quick preset


def test_rbm_nade_interrupted_twice_ends_with_the_uninterrupted_results(tmp_path, monkeypatch):
    from kd_ref.experiments import rbm_nade

    settings = _tiny_rbm_nade()

    def run(folder):
        return lambda: rbm_nade.run(settings, tmp_path / folder, np.random.default_rng(0))

    expected, total = _count_progress_updates(monkeypatch, run("whole"))
    results = _run_with_interrupts(monkeypatch, run("cut"), total, np.random.default_rng(2))
    for key in ("models", "curves", "references", "agreement", "rbm_log_p_test", "reference"):
        assert _without_timings(results[key]) == _without_timings(expected[key]), key


# ----------------------------------------------------------------------------------------- the CLI
def _results_file(folder):
    return _without_timings(json.loads((Path(folder) / "results.json").read_text()))


def test_ctrl_c_in_a_run_prints_one_line_exits_130_and_the_same_command_resumes(tmp_path, monkeypatch, capsys):
    from kd_ref.experiments import rbm_nade

    monkeypatch.setattr(rbm_nade.Settings, "quick", classmethod(lambda cls, **o: _tiny_rbm_nade(**o)))
    argv = ["run", "rbm-nade", "--no-progress"]
    assert cli.main(argv + ["--out", str(tmp_path / "whole")]) == 0
    capsys.readouterr()
    plain = Progress.update
    _interrupting_progress(monkeypatch, 70)          # inside a training loop (here the RBM's CD fit)
    assert cli.main(argv + ["--out", str(tmp_path / "cut")]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.fullmatch(r"kd-ref run rbm-nade: interrupted at step (\d+) of 60 \(RBM CD-5\); run the same command "
                        r"to resume\n", err), err
    monkeypatch.setattr(Progress, "update", plain)
    assert cli.main(argv + ["--out", str(tmp_path / "cut")]) == 0
    cut, whole = _results_file(tmp_path / "cut"), _results_file(tmp_path / "whole")
    for key in ("files", "tables"):                  # paths, and tables with a CPU-seconds column
        del cut[key], whole[key]
    assert cut == whole


def test_ctrl_c_in_a_benchmark_and_outside_training_is_one_line_and_status_130(monkeypatch, capsys):
    from kd_ref.bench import mlp

    def interrupted(argv):
        raise KeyboardInterrupt
    monkeypatch.setattr(mlp, "main", interrupted)
    assert cli.main(["bench", "mlp"]) == 130
    assert capsys.readouterr().err == "kd-ref bench mlp: interrupted; a benchmark keeps nothing to resume\n"
    from kd_ref.experiments import bayes_mog
    monkeypatch.setattr(bayes_mog, "main", interrupted)
    assert cli.main(["run", "bayes-mog"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("kd-ref run bayes-mog: interrupted; the same command starts the interrupted stage again")
    assert err.count("\n") == 1


_SUBPROCESS_RUN = """
import sys, os, signal
from kd_ref import cli, progress
from kd_ref.experiments import rbm_nade
sys.path.insert(0, {tests!r})
from test_resume import _tiny_rbm_nade
rbm_nade.Settings.quick = classmethod(lambda cls, **o: _tiny_rbm_nade(**o))
if {interrupt}:
    plain, calls = progress.Progress.update, [0]
    def update(self, done, **values):
        calls[0] += 1
        if calls[0] == 70:
            signal.raise_signal(signal.SIGINT)
        return plain(self, done, **values)
    progress.Progress.update = update
sys.exit(cli.main(["run", "rbm-nade", "--no-progress", "--out", {out!r}]))
"""


def test_a_real_process_stopped_by_sigint_exits_130_with_one_line_and_resumes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}

    def run(interrupt):
        code = _SUBPROCESS_RUN.format(tests=str(Path(__file__).parent), interrupt=interrupt, out=str(tmp_path / "o"))
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)

    first = run(True)
    assert first.returncode == 130, first.stderr
    assert first.stderr.count("\n") == 1 and "Traceback" not in first.stderr
    assert "run the same command to resume" in first.stderr
    second = run(False)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "o" / "results.json").exists()
