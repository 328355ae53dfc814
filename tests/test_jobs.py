"""kd_ref.jobs: the same results with one process or several, errors and Ctrl-C stop the pool cleanly."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from kd_ref.jobs import BLAS_THREAD_VARIABLES, KILL_SECONDS, run_tasks
from kd_ref.mlp import MLP
from kd_ref.optim import Adadelta, Interrupted, train
from kd_ref.timing import component_rng


def _fit(shared, k):
    """Train a small network on its own stream ``component_rng(base, k)``: a task whose result is all rounding."""
    base, steps = shared
    rng = component_rng(base, k)
    net = MLP([6, 8, 3], ["relu", "log_softmax"], rng)
    x, t = rng.normal(size=(40, 6)), np.eye(3)[rng.integers(0, 3, size=40)]

    def objective(batch):
        cache = net.forward(batch)
        grads, _ = net.backprop(cache, -t[:batch.shape[0]] / batch.shape[0], input_grads=False)
        return float(-np.sum(t[:batch.shape[0]] * cache.y)) / batch.shape[0], grads

    train(net.params, objective, lambda: x[rng.permutation(40)[:10]], Adadelta(), steps, progress=False)
    return net.params.copy(), {name: os.environ.get(name) for name in BLAS_THREAD_VARIABLES}


def _fail_or_sleep(folder, k):
    open(os.path.join(folder, f"began_{k}"), "w").close()
    if k == 1:
        raise ValueError("task 1: expected good input, received bad")
    time.sleep(600)                     # interrupted by the pool, long before the sleep is over
    return k


def test_two_processes_give_bit_identical_results_in_task_order_with_blas_on_one_thread(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    one = run_tasks(_fit, range(5), 1, shared=(7, 60))
    finished = []
    two = run_tasks(_fit, range(5), 2, shared=(7, 60), done=lambda i, r: finished.append(i))
    assert len(two) == 5 and sorted(finished) == list(range(5))
    for (a, _), (b, env) in zip(one, two):
        np.testing.assert_array_equal(a, b)
        assert env == {name: "1" for name in BLAS_THREAD_VARIABLES}       # in the workers
    assert not np.array_equal(one[0][0], one[1][0])          # control: each task has a stream of its own
    assert one[0][1]["OPENBLAS_NUM_THREADS"] == os.environ["OPENBLAS_NUM_THREADS"] == "4"    # the parent's kept


def test_a_failing_task_stops_the_others_and_its_error_arrives_unchanged(tmp_path):
    began = time.perf_counter()
    with pytest.raises(ValueError, match="task 1: expected good input, received bad"):
        run_tasks(_fail_or_sleep, range(4), 2, shared=str(tmp_path))
    # stopped by the pool's signal or stop event, not by the terminate that follows KILL_SECONDS without them
    assert time.perf_counter() - began < KILL_SECONDS
    assert not any((tmp_path / f"began_{k}").exists() for k in (2, 3))      # tasks 2 and 3 never began


def test_a_ctrl_c_raises_the_first_tasks_interrupt_whichever_worker_reported_first(monkeypatch):
    """Control of the race the Ctrl-C tests can only sample: task 1's Interrupted arrived before task 0's."""
    from concurrent.futures import Future
    from kd_ref import jobs

    monkeypatch.setattr(jobs, "_signal_workers", lambda signum: None)     # no pool here: signal no process
    _stopped = jobs._stopped

    futures = [Future() for _ in range(3)]
    for k in (0, 1):
        futures[k].set_exception(Interrupted(k + 5, 10, f"task {k}", f"ckpt_{k}.npz", k + 5))
    futures[2].set_exception(ValueError("not an interrupt"))
    running = {f: k for k, f in enumerate(futures)}
    got = _stopped(futures[1].exception(), running, threading.Event())
    assert got is futures[0].exception()
    bug = ValueError("a task's own error")
    assert _stopped(bug, running, threading.Event()) is bug           # a task's error is raised unchanged


def test_bad_jobs_are_named():
    with pytest.raises(ValueError, match="jobs: expected an integer >= 1, received 0"):
        run_tasks(_fit, range(2), 0)
    with pytest.raises(TypeError, match="jobs: expected an integer >= 1, received 1.5"):
        run_tasks(_fit, range(2), 1.5)


def test_an_interrupt_keeps_its_attributes_through_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(Interrupted(3, 10, "member 1/2", "ck.npz", 3)))
    assert (err.step, err.n_steps, err.label, err.checkpoint, err.saved_step) == (3, 10, "member 1/2", "ck.npz", 3)


_CTRL_C_SCRIPT = textwrap.dedent("""
    import signal, sys, numpy as np
    # as started from a terminal: a runner that ignores SIGINT (a shell's background job, say) passes SIG_IGN
    # on to its children, and Python then installs no KeyboardInterrupt handler at all
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, {tests!r})
    from kd_ref.jobs import run_tasks
    from kd_ref.optim import Interrupted
    from test_jobs import _checkpointed
    try:
        run_tasks(_checkpointed, range(3), 2, shared={folder!r})
    except Interrupted as err:
        print("interrupted", err.label, err.saved_step, flush=True)
        sys.exit(130)
""")


def _checkpointed(folder, k):
    """A long training run with a checkpoint; prints 'started k' when it begins."""
    net = MLP([20, 30, 3], ["relu", "log_softmax"], component_rng(0, k))
    x = component_rng(1, k).normal(size=(10, 20))

    def objective(batch):
        cache = net.forward(batch)
        grads, _ = net.backprop(cache, -np.ones((10, 3)) / 30, input_grads=False)
        return float(-np.sum(cache.y)) / 30, grads

    def started(step, loss):
        if step == 1:
            print(f"started {k}", flush=True)

    train(net.params, objective, lambda: x, Adadelta(), 10**8, progress=False, callback=started,
          checkpoint=os.path.join(folder, f"ckpt_{k}.npz"), checkpoint_every=10**6, label=f"task {k}")


@pytest.mark.parametrize("whole_group", [True, False], ids=["terminal Ctrl-C", "SIGINT to the parent only"])
def test_ctrl_c_stops_every_worker_with_its_checkpoint_and_no_hang(tmp_path, whole_group):
    code = _CTRL_C_SCRIPT.format(tests=os.path.dirname(__file__), folder=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    try:
        seen = set()
        while len(seen) < 2:                                  # both workers are inside train
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            seen.add(line.strip())
        if whole_group:
            os.killpg(proc.pid, signal.SIGINT)                # as a terminal does: every process of the group
        else:
            os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "interrupted task 0" in out and "Traceback" not in err, (out, err)
    assert sorted(os.listdir(tmp_path)) == ["ckpt_0.npz", "ckpt_1.npz"]     # task 2 never began


# ------------------------------------------------------------------ experiments with --jobs
def test_compress_gives_the_same_results_with_two_jobs(tmp_path):
    from kd_ref.experiments import compress
    from test_resume import _toy_data

    settings = compress.Settings.quick(n_train=0, n_test=0, members=3, member_hidden=(6, 5), student_hidden=(4, 4),
                                       member_passes=3, student_passes=3, nade_hidden=4, nade_passes=3,
                                       curve_points=3, batch_size=5, student_seeds=2, figures=False, progress=False)
    one, two = (compress.run(settings, tmp_path / str(jobs), np.random.default_rng(0), data=_toy_data(), jobs=jobs)
                for jobs in (1, 2))
    for key in ("ensemble", "members", "baselines", "students", "paired", "replicates", "tables"):
        assert two[key] == one[key], key
    for key, curve in one["curves"].items():
        np.testing.assert_array_equal(two["curves"][key], curve)
    assert len(two["students"]) == 12 and sorted(os.listdir(tmp_path / "2" / "cache")) == \
        sorted(os.listdir(tmp_path / "1" / "cache"))


def test_bayes_logreg_sweep_gives_the_same_rows_with_two_jobs(tmp_path):
    from kd_ref.experiments import bayes_logreg

    settings = bayes_logreg.Settings.quick(n_samples=300, burn_in=30, n_steps=40, n_eval=200)
    one = bayes_logreg.slope_sweep(settings, [4, 5], str(tmp_path / "1"))
    two = bayes_logreg.slope_sweep(settings, [4, 5], str(tmp_path / "2"), jobs=2)
    assert one == two and [r["seed"] for r in two] == [4, 5]
    assert (tmp_path / "2" / "sweep.md").read_text() == (tmp_path / "1" / "sweep.md").read_text()


def _bug(_shared, _task):
    return {}["missing"]


def test_a_programming_error_in_a_worker_keeps_the_workers_traceback():
    with pytest.raises(KeyError) as info:
        run_tasks(_bug, range(2), 2)
    assert "in _bug" in str(info.value.__cause__)          # concurrent.futures' _RemoteTraceback


def test_rbm_nade_gives_the_same_results_with_two_jobs(tmp_path):
    from kd_ref.experiments import rbm_nade
    from test_resume import _tiny_rbm_nade, _without_timings

    settings = _tiny_rbm_nade()
    one, two = (rbm_nade.run(settings, tmp_path / str(jobs), np.random.default_rng(0), jobs=jobs) for jobs in (1, 2))
    for key in ("models", "curves", "agreement", "references"):
        assert _without_timings(two[key]) == _without_timings(one[key]), key
