"""The teacher's labels of every image of a dataset, computed once and read from disk (chapter 2's dataset generator).

The dataset generator (2.21) shows a student the same n training images again in
every pass, so an on-the-fly teacher (:func:`kd_ref.distill.compression.teacher_targets`)
labels each image once per pass: 40 passes, 40 times. For the thesis's ensemble of
30 networks 784-500-300-10 and derivative matching, labelling (one forward and C
input-only backprops per member, 2.18) costs far more than the student's step. A
:class:`LabelCache` holds, for every image x_j,

    probs[j]        t(x_j), the ensemble's probabilities (2.15), shape (C,)
    d_log_probs[j]  d log t_i(x_j) / dx for every class i (2.18), shape (C, D)

in float32 ``.npy`` files opened as memory maps (60,000 x 10 x 784 x 4 bytes
= 1.9 GB for MNIST's derivatives), so a pass reads rows from the page cache and
memory holds only what the OS keeps there. :class:`LabelledDatasetGenerator`
draws the same minibatches as :class:`~kd_ref.distill.compression.DatasetGenerator`
(same generator, same stream) and returns them with their cached labels.

What float32 changes. A stored label is the teacher's float64 value rounded to
the nearest float32, a relative change of at most 2^-24 (6e-8) per entry; the
students trained on them differ from the students of the on-the-fly path in
their last bits at first, and after thousands of steps by as much as two SGD
runs with different rounding do. A second, smaller difference is BLAS's: a
network's output for one image may differ in its last float64 bits (1e-14
relative here) with the number and position of the rows it is computed with, and
the cache labels the images in chunks of ``chunk`` rows while the on-the-fly path
labels minibatches. The tests compare the cached path with an uncached one that
labels every image in the cache's chunks at every step and rounds to float32 the
same way: those students are identical, bit for bit.

Writing is atomic and resumable: the files are filled in a folder ``PATH.partial``,
one chunk of rows at a time, each finished chunk marked by an empty file; an
interrupted build continues with the chunks not yet marked, and the folder is
renamed to ``PATH`` when every chunk is done. Chunks can be labelled by several
processes at once (:mod:`kd_ref.jobs`); each writes its own rows.
"""
import os
import shutil
from pathlib import Path

import numpy as np

from .._validation import as_float_array, check_generator, check_positive_int
from ..jobs import run_tasks
from ..progress import Progress
from .compression import DatasetGenerator, Labels, check_batch, check_student, check_teacher

DTYPE = np.float32
CHUNK = 500           # rows labelled at once (a 784-500-300-10 member's class-stacked cache: 5,000 rows)


class LabelCache:
    """The labels of every row of a dataset, as read-only float32 memory maps.

    Parameters
    ----------
    probs : ndarray of shape (n, C)
    d_log_probs : ndarray of shape (n, C, D) or None

    Indexing with an array of row indices gives their :class:`Labels` in float64.
    """

    def __init__(self, probs, d_log_probs=None):
        self.probs, self.d_log_probs = probs, d_log_probs
        self.n, self.n_outputs = probs.shape

    @classmethod
    def open(cls, path):
        """The cache written by :func:`build_label_cache` at ``path`` (a folder)."""
        path = Path(path)
        probs = _open(path / "probs.npy", 2)
        d = _open(path / "d_log_probs.npy", 3) if (path / "d_log_probs.npy").exists() else None
        if d is not None and d.shape[:2] != probs.shape:
            raise ValueError(f"cache: expected {path / 'd_log_probs.npy'} of shape ({probs.shape[0]}, "
                             f"{probs.shape[1]}, D) like probs.npy, received shape {d.shape}")
        return cls(probs, d)

    def __getitem__(self, rows):
        probs = self.probs[rows].astype(np.float64)
        with np.errstate(divide="ignore"):
            log_probs = np.log(probs)
        d = None if self.d_log_probs is None else self.d_log_probs[rows].astype(np.float64)
        return Labels(probs, log_probs, d)


def _open(path, ndim):
    try:
        array = np.lib.format.open_memmap(path, mode="r")
    except (OSError, ValueError) as err:
        raise ValueError(f"cache: expected a label file at {path}, which cannot be read ({err})") from None
    if array.dtype != DTYPE or array.ndim != ndim:
        raise ValueError(f"cache: expected {ndim}-d {np.dtype(DTYPE).name} labels in {path}, received "
                         f"{array.ndim}-d {array.dtype}")
    return array


def label_chunk(teacher, x, derivatives):
    """The teacher's labels of the rows ``x`` (one chunk), rounded to the cache's float32."""
    labels = teacher.label(x, derivatives=derivatives)
    return labels.probs.astype(DTYPE), None if labels.d_log_probs is None else labels.d_log_probs.astype(DTYPE)


def chunk_bounds(n, chunk=CHUNK):
    """[(start, stop)] of the chunks of ``n`` rows: ``chunk`` rows each, the last one the rest."""
    return [(start, min(start + chunk, n)) for start in range(0, n, chunk)]


def build_label_cache(path, teacher, x, derivatives, jobs=1, chunk=CHUNK, progress=True, label="labels"):
    """Label every row of ``x`` with ``teacher`` into the cache folder ``path``; return the :class:`LabelCache`.

    An existing ``path`` is opened as it is; an interrupted build (``path.partial``)
    resumes with its unfinished chunks.

    Parameters
    ----------
    path : str or Path
    teacher : a teacher (``label``, ``n_inputs``, ``n_outputs``), e.g. an EnsembleTeacher
    x : ndarray of shape (n, D)
    derivatives : bool
        Also store the input derivatives of the log-probabilities (for 2.18).
    jobs : int
        Processes labelling chunks at once.
    chunk : int
    progress : bool
    label : str
        Name on the progress line.
    """
    path = Path(path)
    if path.exists():
        return LabelCache.open(path)
    teacher = check_teacher(teacher)
    x = check_batch(x, teacher.n_inputs)
    chunk = check_positive_int(chunk, "chunk")
    n, c, d = x.shape[0], teacher.n_outputs, x.shape[1]
    partial = path.with_name(path.name + ".partial")
    shapes = {"probs": (n, c), **({"d_log_probs": (n, c, d)} if derivatives else {})}
    if partial.exists() and not _matches(partial, shapes):
        shutil.rmtree(partial)                            # another teacher's or data's: start again
    if not partial.exists():
        tmp = path.with_name(path.name + f".new-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, shape in shapes.items():
            np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=DTYPE, shape=shape).flush()
        os.replace(tmp, partial)
    bounds = chunk_bounds(n, chunk)
    todo = [k for k in range(len(bounds)) if not (partial / f"done_{k}").exists()]
    bar = Progress(len(bounds), label=label, enabled=bool(progress), initial=len(bounds) - len(todo))
    finished = [len(bounds) - len(todo)]

    def done(_index, _result):
        finished[0] += 1
        bar.update(finished[0])

    try:
        run_tasks(_label_task, [bounds[k] + (k,) for k in todo], jobs, (teacher, x, str(partial), derivatives),
                  done=done)
    finally:
        bar.close()
    os.replace(partial, path)
    return LabelCache.open(path)


def _matches(folder, shapes):
    for name, shape in shapes.items():
        try:
            if np.lib.format.open_memmap(folder / f"{name}.npy", mode="r").shape != shape:
                return False
        except (OSError, ValueError):
            return False
    return set(shapes) == {p.stem for p in folder.glob("*.npy")}


def _label_task(shared, task):
    """Label rows start:stop into the partial cache folder and mark chunk k done (a :func:`run_tasks` task)."""
    teacher, x, folder, derivatives = shared
    start, stop, k = task
    folder = Path(folder)
    probs, d = label_chunk(teacher, x[start:stop], derivatives)
    for name, value in (("probs", probs), ("d_log_probs", d)):
        if value is not None:
            out = np.lib.format.open_memmap(folder / f"{name}.npy", mode="r+")
            out[start:stop] = value
            out.flush()
            del out
    (folder / f"done_{k}").touch()                         # after the rows are on disk


class LabelledDatasetGenerator:
    """The dataset generator (2.21) with each minibatch's labels read from a :class:`LabelCache`.

    Draws exactly the minibatches ``DatasetGenerator(data, batch_size, rng)`` draws
    and returns ``(x, labels)`` for :func:`labelled_objective`.

    Parameters
    ----------
    data : ndarray of shape (n, D)
    labels : LabelCache with n rows
    batch_size : int
    rng : numpy.random.Generator
    """

    def __init__(self, data, labels, batch_size, rng):
        data = as_float_array(data, "data", ndim=2)
        if not isinstance(labels, LabelCache):
            raise TypeError(f"labels: expected a LabelCache, received {type(labels).__name__}")
        if labels.n != data.shape[0]:
            raise ValueError(f"labels: expected a cache of {data.shape[0]} rows like data, received {labels.n}")
        self._inputs = DatasetGenerator(data, batch_size, check_generator(rng))
        self.labels = labels
        self.dim = data.shape[1]

    @property
    def batch_size(self):
        return self._inputs.batch_size

    @property
    def examples_drawn(self):
        return self._inputs.examples_drawn

    def __call__(self):
        rows = self._inputs.next_indices()
        return self._inputs.data[rows], self.labels[rows]

    def state(self):
        return self._inputs.state()

    def load_state(self, state):
        self._inputs.load_state(state)


def labelled_objective(student, loss):
    """Objective for minibatches that come with their labels: (x, Labels) -> loss(student, x, labels).

    The counterpart of ``objective(student, loss, teacher_targets(student, teacher, loss))``
    for a :class:`LabelledDatasetGenerator`.
    """
    check_student(student)
    if not callable(loss) or not hasattr(loss, "needs_derivatives"):
        raise TypeError(f"loss: expected a loss object (e.g. CrossEntropyLoss()), received {loss!r}")

    def objective(batch):
        x, labels = batch
        if loss.needs_derivatives and labels.d_log_probs is None:
            raise ValueError(f"labels: expected a label cache with input derivatives for {loss.name}, "
                             f"received one without")
        return loss(student, check_batch(x, student.sizes[0]), labels)

    return objective
