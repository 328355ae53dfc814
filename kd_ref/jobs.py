"""Independent parts of a run in parallel processes: the ``--jobs N`` of ``kd-ref run``.

:func:`run_tasks` calls ``fn(shared, task)`` for every task and returns the results
in task order. With ``jobs = 1`` it does so in this process, one task after another;
with ``jobs > 1`` in a pool of ``jobs`` worker processes, each started fresh
("spawn") with OpenBLAS, MKL and OpenMP limited to one thread, so that N workers
use N cores and not N x (cores) threads. The numbers cannot depend on ``jobs``
as long as every task draws only from a generator of its own (an experiment's
``Run.rng(*code)``), never from one shared with other tasks, and BLAS runs
single-threaded in both cases (``OMP_NUM_THREADS=1``, as every run on a shared
machine should).

``shared`` is sent to each worker once, when it starts; ``fn``, ``shared`` and the
tasks must be picklable (``fn`` a module-level function). Tasks must not rely on
changing ``shared``: with ``jobs > 1`` each worker changes its own copy.

Errors and Ctrl-C:

* a task's exception stops the run: no new task starts, the tasks still running
  are interrupted (a checkpointing :func:`kd_ref.optim.train` saves its checkpoint
  and stops), and the exception is raised here, its type and message unchanged
  (the worker's traceback is attached as its cause);
* Ctrl-C reaches every process of the terminal's foreground group, so each worker
  stops its own task (saving its checkpoint). Workers not stopped after
  ``GRACE_SECONDS`` (the signal was sent to this process only) are sent SIGINT;
  workers still running ``KILL_SECONDS`` later are terminated. Then the first
  task's :class:`kd_ref.optim.Interrupted` (it names the checkpoint) is raised, or
  a plain KeyboardInterrupt. A second Ctrl-C while waiting terminates the workers
  at once. Idle workers ignore SIGINT, so a Ctrl-C between two tasks prints no
  worker tracebacks.
* Progress lines of the workers are printed as whole lines (not redrawn in place),
  so those of several workers do not overwrite one another.
"""
import multiprocessing
import os
import signal
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager

from ._validation import check_positive_int
from .optim import Interrupted

#: The variables that fix the thread count of OpenBLAS, MKL and OpenMP (read when BLAS loads).
BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
GRACE_SECONDS = 5.0        # workers that heard the Ctrl-C themselves stop within this
KILL_SECONDS = 60.0        # after SIGINT: a step, a monitor evaluation and a checkpoint write

_shared = None             # the worker's copy of ``shared`` (set once per worker by _start_worker)
_stop = None               # the worker's view of the pool's stop event: set once a task has failed or Ctrl-C came


def run_tasks(fn, tasks, jobs=1, shared=None, done=None):
    """``[fn(shared, task) for task in tasks]``, computed by ``jobs`` processes (see the module notes).

    Parameters
    ----------
    fn : module-level function (shared, task) -> result
    tasks : iterable of picklable objects
    jobs : int >= 1
    shared : picklable object, optional
        What every task reads (settings, data, trained models); sent once per worker.
    done : callable (index, result) -> None, optional
        Called in this process as each task finishes (in task order when ``jobs = 1``,
        else in the order they finish), e.g. to update a progress line.

    Returns
    -------
    list
        The results in the order of ``tasks``.
    """
    jobs = check_positive_int(jobs, "jobs")
    tasks = list(tasks)
    if jobs == 1 or len(tasks) <= 1:
        results = []
        for index, task in enumerate(tasks):
            results.append(fn(shared, task))
            if done is not None:
                done(index, results[-1])
        return results
    results = [None] * len(tasks)
    with one_blas_thread():
        context = _context()
        stop = context.Event()
        pool = ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=context,
                                   initializer=_start_worker, initargs=(shared, stop))
        running, todo = {}, list(enumerate(tasks))[::-1]
        try:
            # at most one task per worker: nothing waits in the pool's queue, so after an error or a
            # Ctrl-C no further task can start
            while todo or running:
                while todo and len(running) < jobs:
                    index, task = todo.pop()
                    running[pool.submit(_run_task, fn, task)] = index
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=running.get):
                    results[running[future]] = future.result()   # a task that failed stays in running for _stopped
                    index = running.pop(future)
                    if done is not None:
                        done(index, results[index])
        except BaseException as err:
            raise _stopped(err, running, stop)        # a task's own error keeps the worker's traceback as its cause
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return results


def _context():
    """Workers forked from a server process started (once, inside :func:`one_blas_thread`) with NumPy loaded on
    one BLAS thread: cheaper to start than fresh interpreters, and never forked from a process whose BLAS
    threads are running ("forkserver"; "spawn" where there is no forkserver)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["numpy", "kd_ref.optim"])
    return context


def _stopped(err, running, stop):
    """Stop the tasks still ``running`` after ``err``; return the exception to raise."""
    stop.set()              # before the signal: a task whose worker has not yet listened for it sees this instead
    try:
        if isinstance(err, KeyboardInterrupt):
            wait(running, timeout=GRACE_SECONDS)                 # each worker heard the Ctrl-C itself
        _signal_workers(signal.SIGINT)
        if wait(running, timeout=KILL_SECONDS).not_done:
            _terminate_workers()
    except KeyboardInterrupt:                                    # a second Ctrl-C: stop now
        _terminate_workers()
        return KeyboardInterrupt()
    if not isinstance(err, KeyboardInterrupt):                   # a task's own error, unchanged
        return err
    # a Ctrl-C, heard here or first by a worker (then err is that task's Interrupted, whichever finished first):
    # the first task's Interrupted is raised, as it names the checkpoint
    for future in sorted(running, key=running.get):
        if future.done() and not future.cancelled() and isinstance(future.exception(), Interrupted):
            return future.exception()
    return err


def _signal_workers(signum):
    for process in multiprocessing.active_children():
        try:
            os.kill(process.pid, signum)
        except ProcessLookupError:
            pass


def _terminate_workers():
    for process in multiprocessing.active_children():
        process.terminate()


@contextmanager
def one_blas_thread():
    """Set every BLAS thread variable to 1 while the pool starts its workers (they read them when BLAS loads)."""
    saved = {name: os.environ.get(name) for name in BLAS_THREAD_VARIABLES}
    os.environ.update({name: "1" for name in BLAS_THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _WholeLines:
    """stderr as seen by a worker's progress lines: not a terminal, so :class:`kd_ref.progress.Progress`
    prints whole lines instead of redrawing one line in place."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return False


def _start_worker(shared, stop):
    global _shared, _stop
    _shared, _stop = shared, stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)                 # idle: a Ctrl-C concerns the task, if any
    sys.stderr = _WholeLines(sys.stderr)
    try:
        from threadpoolctl import threadpool_limits              # optional: a second guard on the thread count
    except ImportError:
        return
    threadpool_limits(1)


def _run_task(fn, task):
    signal.signal(signal.SIGINT, signal.default_int_handler)     # so that train's Ctrl-C handling takes over
    try:
        # the parent sets the event, then signals: a SIGINT sent before the line above was ignored, but then
        # the event is already set here (a task handed to a worker just as another one failed)
        if _stop.is_set():
            raise KeyboardInterrupt
        return fn(_shared, task)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
