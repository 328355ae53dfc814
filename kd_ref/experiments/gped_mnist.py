"""``kd-ref run gped-mnist``: GPED's FCNN experiments 1-4 on MNIST (SPEC_seeds S3.E, S3.15-S3.19).

Teacher: a 784-H-H-10 ReLU/log-softmax net, prior N(0, tau^-1 I), sampled by SGLD (S3.1) on N
training images (a uniform subsample, nested across N: ``datasets.subsample``), every image of
the teacher set, of D' and of the test set occluded independently by one square of side s
(``datasets.occlude``, S3.15). One chain per cell (N, s); its kept states (burn-in B, thinning
H) are handed, in lockstep, to every student of that cell (:class:`ChainTee`), so all students
of a cell see the same chain without storing it. The teacher's ensemble on the test (and OOD)
inputs is accumulated every ``accumulate_every`` SGLD steps (``posterior.EnsembleAccumulator``).

Students (``distill.gped``; S3.9-S3.13): the teacher's layers plus an entropy head, distilling
the predictive (cross entropy) and the expected entropy (MAE) together (target "both"), with
U_s or U_o (S3.5-S3.6); EnD^2 (S3.13, U_s) with C log-concentrations. Adam 1e-3, halved every
200 teacher epochs (an epoch = N / M SGLD steps), D' = the N (occluded) images + N(0, 0.001^2).

* Experiment 1 (cell ``exp1``, s = 0): teacher and student test NLL, entropy MAE (GPED Table 1).
* Experiment 2 (the cells ``grid``, a documented subset of GPED's N x s grid): NLL gap and
  entropy MAE of U_s and U_o students against N and the masking rate.
* Experiment 3 (cell ``exp3``, GPED's 29% masking): students of widths H x (K_1, K_2)
  (``width.multiplier_grid``), their parameters and multiply-adds (``width.n_params``,
  ``width.n_macs``; whole student, entropy head included) and the Pareto fronts of test NLL
  against each (``width.pareto_front``); group l1/l2 pruning (S3.19, ``prune.group_lasso_prune``)
  from the largest U_o student; Table 2 (largest width, U_s: ensemble vs GPED vs EnD^2).
* Experiment 4 (cell ``exp4``, s = 0): OOD AUROC (``metrics.auroc``, OOD positive) with the
  total and knowledge uncertainty (S3.14) of the ensemble, the GPED students and EnD^2, on the
  offline OOD sets of SPEC_seeds 0.4 (``datasets.ood_set``), and nDCG@k ranking of the test
  inputs by uncertainty against the ensemble's (``metrics.ndcg_trials``, S3.17).
* Experiment 4, held-out classes (setting ``heldout``, default ``heldout:5-9``; None skips it):
  the class split of SPEC_seeds 0.4 needs a teacher that never saw classes 5-9, so one more
  chain (``Settings.heldout_cell``; exp4's settings, s = 0) runs on the images of exp4's N
  whose label is in 0-4 (quick, MNIST, seed 0: 2,508 of the 5,000; about 51% at any seed,
  MNIST's share of 0-4), with a GPED U_o and an EnD^2 student distilled on those images as in
  exp4 (D' = them + noise; the step decay counts epochs of this smaller set). The network is
  unchanged, so the teacher and its students still give 10-way outputs: classes 5-9 are never
  the label of a training image and only lose probability, they are not removed. AUROC with TU
  and KU: the test images of classes 0-4 (1,052 of the quick 2,000) against those of 5-9 (948,
  ``datasets.ood_set("heldout:5-9", ..., labels=...)``); its rows are in Table 3 with
  ``teacher = own``, and count in the GPED vs EnD^2 conclusion (not in U_o vs U_s: no U_s student).

Departures (documented in the tables): the quick preset runs T = 10^4 SGLD steps (S3.E: 2 10^4;
``--sgld-steps 20000`` restores it). Measured on the shared 2-core machine: 6.6 ms per SGLD step
alone, and the whole quick run (four chains, 19 students, pruning) 477 s wall, 257 s CPU, at a
load of 5-10, so S3.E's T would not fit in 15 minutes under such load. The held-out part's fifth
chain, with two students, costs about one exp4 chain (0.8 of its wall and CPU time at T = 2000,
measured side by side: it accumulates on 2,000 rows, exp4 on 9,000); the quick run with it took
446 s wall, 264 s CPU at a load of 3-4, the fifth chain 101 s of it. Also: 1,000 OOD images per set
(the held-out classes: all of theirs among the n_test test images); the pruning penalty is
trained against the fixed U_o targets the largest student ended with (its teacher expectations
on D', ``OnlineAverage.mean``) instead of during a second chain; no dropout (kd_ref's MLP has
none; GPED paper: 0.5 on the first hidden layer); one seed (GPED: 3); ``synthetic_digits`` is
in-distribution for a teacher trained on synthetic digits and is left out then. AUROCs on these
sets are new measurements, not comparable with GPED's KMNIST / notMNIST figures (nor the
held-out rows with the other rows: another teacher, other test images).

Outputs (``--out``): ``table1``, ``table_exp2``, ``table2``, ``table_exp3``, ``table3_auroc``,
``table4_ndcg`` (each ``.md`` and ``.csv``), ``summary.md`` (tables and the conclusions checked),
``results.json`` (``heldout``: the 5-class teacher's set sizes, test NLL and accuracy). Each chain
with its students (the held-out part's: ``chain_N_0_heldout_5-9``), and each pruning run, is cached in
``OUT/cache``, so a stopped run resumes at the next component (a chain is one component: a
``--paper`` chain stopped midway starts again).
"""
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .. import datasets, npzfile, toydata
from ..cli import ArgumentParser, int_at_least, out_folder
from ..distill.gped import (JointLoss, end2_settings, end2_uncertainty, gped_distill, gped_settings, gped_student,
                            gped_uncertainty, student_log_probs)
from ..jobs import run_tasks
from ..mcmc import SGLD, mlp_log_posterior_gradient
from ..metrics import auroc, entropy_mae, ndcg_trials, nll
from ..mlp import MLP
from ..optim import Adam
from ..posterior import EnsembleAccumulator
from ..prune import group_lasso_prune
from ..width import MULTIPLIERS, multiplier_grid, n_macs, n_params, pareto_front, scaled_widths
from .._validation import check_positive_int
from ._report import Presets, Run, run_from_cli, write_table, write_text_atomic

NAME = "gped-mnist"
KIND = "kd_ref.gped_mnist"
N_CLASSES = 10
#: GPED's FCNN reference figures (S3.E; the seed's tables).
GPED_TABLE1 = {"teacher NLL": 0.052, "student NLL": 0.082, "entropy MAE": 0.016}
GPED_TABLE2 = {"NLL ensemble": 0.362, "NLL GPED": 0.408, "NLL EnD2": 0.415, "entropy MAE GPED": 0.069,
               "entropy MAE EnD2": 0.105}
GPED_TABLE3 = ("GPED Table 3 (FCNN, ensemble / GPED / EnD2; MNIST vs KMNIST: TU 0.929 / 0.867 / 0.816, KU 0.976 / "
               "0.928 / 0.899; vs notMNIST: TU 0.944 / 0.670 / 0.652, KU 0.990 / 0.762 / 0.681)")
GPED_TABLE4 = {"TU": ("0.954 +- 0.02", "0.946 +- 0.021"), "KU": ("0.924 +- 0.03", "0.941 +- 0.028")}
#: Student kinds (GPED's target "both" with U_s or U_o; EnD^2), each with a stream code of its own.
KINDS = {"GPED U_s": 0, "GPED U_o": 1, "EnD2": 2}


def _cells(pairs, name):
    """A tuple of (N, s) cells, checked: N >= 1 images, s a mask side in 0..27 (S3.15)."""
    try:
        cells = tuple((int(n), int(s)) for n, s in pairs)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected (N, s) pairs, received {pairs!r}") from None
    if not cells:
        raise ValueError(f"{name}: expected at least one (N, s) cell, received none")
    for n, s in cells:
        if n < 1 or not 0 <= s <= datasets.MNIST_SIDE - 1:
            raise ValueError(f"{name}: expected cells N:s with N >= 1 and s in 0..{datasets.MNIST_SIDE - 1}, "
                             f"received {n}:{s}")
    if len(set(cells)) != len(cells):
        raise ValueError(f"{name}: expected distinct cells, received {list(cells)}")
    return cells


@dataclass
class Settings(Presets):
    """Everything that defines a run; ``quick()`` and ``paper()`` give S3.E's presets (with the departures above)."""

    mode: str = "quick"
    data: str = "auto"                          # auto (MNIST when KD_REF_DATA has it) | mnist | synthetic
    grid: tuple = ((2000, 0), (2000, 15), (5000, 0), (5000, 15))   # Experiment 2's cells (N, s)
    exp1: tuple = (5000, 0)
    exp3: tuple = (5000, 15)
    exp4: tuple = (5000, 0)
    n_test: int = 2000
    hidden: tuple = (100, 100)
    prior_precision: float = 10.0
    sgld_eta: float = 2e-5
    sgld_batch: int = 100
    sgld_steps: int = 10000
    burn_in: int = 1000
    thin: int = 10
    accumulate_every: int = 50
    batch_size: int = 100
    input_noise: float = 1e-3
    lr: float = 1e-3
    lr_decay_epochs: int = 200
    multipliers: tuple = MULTIPLIERS["quick"]
    ood_sets: tuple = tuple(n for n in datasets.OOD_SETS if not n.startswith("heldout:"))
    heldout: str | None = "heldout:5-9"         # the held-out-class part of Experiment 4 (its own teacher); None: skip
    n_ood: int = 1000
    ndcg_k: int = 20
    ndcg_subset: int = 100
    ndcg_trials: int = 500
    prune_solver: str = "subgradient"
    prune_lams: tuple = (1e-3, 3e-3, 1e-2)
    prune_steps: int = 1000
    fine_tune_steps: int = 300
    jobs: int = 1
    progress: bool = True

    @classmethod
    def paper(cls, **overrides):
        sizes = (10000, 20000, 30000, 60000)
        return cls.preset(dict(mode="paper", grid=tuple((n, s) for n in sizes for s in datasets.OCCLUSION_SIDES),
                               exp1=(60000, 0), exp3=(60000, 15), exp4=(60000, 0), n_test=10000, hidden=(400, 400),
                               sgld_eta=4e-6, sgld_steps=1000000, thin=100, accumulate_every=100,
                               multipliers=MULTIPLIERS["paper"], n_ood=10000, prune_steps=20000,
                               fine_tune_steps=5000), **overrides)

    def validate(self):
        """Check every field (errors name it); return ``self``."""
        if self.data not in ("auto", "mnist", "synthetic"):
            raise ValueError(f"data: expected 'auto', 'mnist' or 'synthetic', received {self.data!r}")
        self.grid = _cells(self.grid, "grid")
        for name in ("exp1", "exp3", "exp4"):
            setattr(self, name, _cells([getattr(self, name)], name)[0])
        if self.exp1[1] != 0 or self.exp4[1] != 0:
            raise ValueError(f"exp1, exp4: expected cells without occlusion (s = 0, GPED Experiments 1 and 4), "
                             f"received {self.exp1} and {self.exp4}")
        for name in ("n_test", "sgld_batch", "sgld_steps", "thin", "accumulate_every", "batch_size",
                     "lr_decay_epochs", "n_ood", "ndcg_k", "ndcg_subset", "ndcg_trials", "prune_steps", "jobs"):
            check_positive_int(getattr(self, name), name)
        check_positive_int(self.burn_in, "burn_in", minimum=0)
        check_positive_int(self.fine_tune_steps, "fine_tune_steps", minimum=0)
        if not (isinstance(self.hidden, (tuple, list)) and len(self.hidden) == 2):
            raise ValueError(f"hidden: expected two hidden widths (the FCNN 784-H1-H2-10), received {self.hidden!r}")
        self.hidden = tuple(check_positive_int(h, f"hidden[{i}]") for i, h in enumerate(self.hidden))
        if self.sgld_steps <= self.burn_in + self.thin:
            raise ValueError(f"sgld_steps: expected more than burn_in + thin = {self.burn_in + self.thin}, received "
                             f"{self.sgld_steps}")
        if self.accumulate_every % self.thin:
            raise ValueError(f"accumulate_every: expected a multiple of thin = {self.thin} (the ensemble is "
                             f"accumulated at kept states), received {self.accumulate_every}")
        for name in ("prior_precision", "sgld_eta", "lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < np.inf:
                raise ValueError(f"{name}: expected a finite positive number, received {value!r}")
        if not 0 <= self.input_noise < np.inf:
            raise ValueError(f"input_noise: expected a finite number >= 0, received {self.input_noise!r}")
        try:
            multiplier_grid(self.multipliers)
        except (TypeError, ValueError) as err:                  # its messages name "values[i]": rename the field
            raise type(err)("multipliers" + str(err)[len("values"):]) from None
        self.multipliers = tuple(float(k) for k in self.multipliers)
        if 1.0 not in self.multipliers:
            raise ValueError(f"multipliers: expected the teacher's width 1 among them (the base student), received "
                             f"{list(self.multipliers)}")
        for name in self.ood_sets:
            if name not in datasets.OOD_SETS or name.startswith("heldout:"):
                raise ValueError(f"ood_sets: expected names among {[n for n in datasets.OOD_SETS if ':' not in n]} "
                                 f"(held-out classes need a teacher of their own: the setting heldout), received "
                                 f"{name!r}")
        self.ood_sets = tuple(self.ood_sets)
        if not self.ood_sets:
            raise ValueError("ood_sets: expected at least one OOD set (Experiment 4), received none")
        if self.heldout is not None:
            try:
                held = datasets.heldout_classes(self.heldout)
            except ValueError:
                held = None
            if held is None or held[-1] >= N_CLASSES or held.size == N_CLASSES:
                raise ValueError(f"heldout: expected None or a class split 'heldout:a-b' with 0 <= a <= b <= "
                                 f"{N_CLASSES - 1} that keeps some classes for the teacher, such as 'heldout:5-9', "
                                 f"received {self.heldout!r}")
        if self.n_ood > self.n_test:
            raise ValueError(f"n_ood: expected at most n_test = {self.n_test} (OOD sets are made from test images), "
                             f"received {self.n_ood}")
        if self.ndcg_subset > self.n_test or self.ndcg_k > self.ndcg_subset:
            raise ValueError(f"ndcg_subset: expected ndcg_k = {self.ndcg_k} <= ndcg_subset <= n_test = "
                             f"{self.n_test}, received {self.ndcg_subset}")
        if self.prune_solver not in ("subgradient", "proximal"):
            raise ValueError(f"prune_solver: expected 'subgradient' or 'proximal', received {self.prune_solver!r}")
        if not self.prune_lams or any(not (isinstance(v, (int, float)) and 0 < v < np.inf) for v in self.prune_lams):
            raise ValueError(f"prune_lams: expected positive penalty weights, received {self.prune_lams!r}")
        self.prune_lams = tuple(float(v) for v in self.prune_lams)
        return self

    def record(self):
        """The settings the cache depends on (``progress`` and ``jobs`` do not)."""
        return {k: v for k, v in vars(self).items() if k not in ("progress", "jobs")}

    @property
    def cells(self):
        """Every cell a chain is run for, in a fixed order: Experiment 2's grid, then exp1, exp3, exp4."""
        out = list(self.grid)
        for cell in (self.exp1, self.exp3, self.exp4):
            if cell not in out:
                out.append(cell)
        return out

    @property
    def heldout_cell(self):
        """The held-out part's chain ``(N, s, heldout)`` (exp4's N and s), or None when ``heldout`` is None."""
        return None if self.heldout is None else (*self.exp4, self.heldout)

    @property
    def chains(self):
        """Every chain run, in a fixed order: :attr:`cells`, then the held-out part's."""
        return self.cells + ([self.heldout_cell] if self.heldout is not None else [])

    @property
    def n_kept(self):
        return (self.sgld_steps - self.burn_in) // self.thin


# ------------------------------------------------------------------------------ data
@dataclass
class Data:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_data(settings, rng):
    """MNIST from KD_REF_DATA (the first ``n_test`` test images), or kd_ref's synthetic digits (``toydata``)."""
    kind = settings.data
    if kind == "auto":
        kind = "mnist" if datasets.mnist_available() else "synthetic"
    n_train = max(n for n, _ in settings.cells)
    if kind == "mnist":
        (x_train, y_train), (x_test, y_test) = datasets.load_mnist()
        name = "MNIST"
    else:
        (x_train, y_train), (x_test, y_test) = toydata.synthetic_digits(n_train, settings.n_test, rng)
        name = "synthetic digits (kd_ref.toydata)"
    if n_train > x_train.shape[0] or settings.n_test > x_test.shape[0]:
        raise ValueError(f"grid: expected at most {x_train.shape[0]} training and {x_test.shape[0]} test images of "
                         f"{name}, received cells up to N = {n_train} and n_test = {settings.n_test}")
    return Data(name, np.asarray(x_train, float), np.asarray(y_train, int), np.asarray(x_test[:settings.n_test], float),
                np.asarray(y_test[:settings.n_test], int))


def check_data(settings):
    """Raise FileNotFoundError or ValueError (naming the file) unless the data the settings ask for can be read."""
    if settings.data == "mnist" or (settings.data == "auto" and datasets.mnist_available()):
        (x_train, _), (x_test, _) = datasets.load_mnist(scale=False)
        n = max(n for n, _ in settings.cells)
        if n > x_train.shape[0] or settings.n_test > x_test.shape[0]:
            raise ValueError(f"--configs: expected cells with N at most the {x_train.shape[0]} MNIST training images "
                             f"(and n_test at most {x_test.shape[0]}), received N = {n}, n_test = {settings.n_test}")


def _stream_key(cell):
    """The (N, s) of a cell's streams; (N, s, 100 + a, 100 + b) for the held-out part's chain (``heldout:a-b``).

    The offsets keep the last entry non-zero: numpy's seed sequences ignore trailing zeros, so
    (N, 0, 0, 9) would share streams with (N, 0).
    """
    if len(cell) == 2:
        return cell
    held = datasets.heldout_classes(cell[2])
    return (*cell[:2], 100 + int(held[0]), 100 + int(held[-1]))


def _cache_name(cell):
    """``chain_N_s``, or ``chain_N_s_heldout_a-b`` for the held-out part's chain."""
    return "_".join(["chain", str(cell[0]), str(cell[1])] + ([cell[2].replace(":", "_")] if len(cell) == 3 else []))


def _kept(labels, cell):
    """Boolean mask of the labels a cell's teacher is trained and tested on: all, or those ``cell[2]`` keeps."""
    labels = np.asarray(labels)
    if len(cell) == 2:
        return np.ones(labels.shape, bool)
    return ~np.isin(labels, datasets.heldout_classes(cell[2]))


def cell_data(settings, data, run, cell):
    """The cell's teacher set (x, y), D', test images and labels, each occluded by its own stream (S3.15).

    For the held-out part's chain ``(N, s, "heldout:a-b")``: the N images of the cell (N, s)
    restricted to the labels outside a..b (teacher set and D'), and the test images of those
    labels (the in-distribution side of its AUROC).
    """
    n, s = cell[:2]
    key = _stream_key(cell)
    x, y = datasets.subsample(data.x_train, data.y_train, n, run.rng(0))      # nested across N (one stream)
    keep, keep_test = _kept(y, cell), _kept(data.y_test, cell)
    if not keep.any() or not keep_test.any():                    # only a held-out split can keep nothing
        raise ValueError(f"heldout: expected images outside the classes {cell[2]!r} holds out among exp4's N = {n} "
                         f"training and the {data.y_test.size} test images, received {keep.sum()} and "
                         f"{keep_test.sum()}")
    x, y = x[keep], y[keep]
    x_teacher = datasets.occlude(x, s, run.rng(2, *key, 0))
    d_prime = datasets.occlude(x, s, run.rng(2, *key, 1))
    x_test = datasets.occlude(data.x_test[keep_test], s, run.rng(2, *key, 2))
    return x_teacher, y, d_prime, x_test, data.y_test[keep_test]


def ood_inputs(settings, data, run):
    """{name: (n_ood, 784) images} of the OOD sets (SPEC_seeds 0.4), from the first ``n_ood`` clean test images."""
    names = [m for m in settings.ood_sets if not (m == "synthetic_digits" and data.name.startswith("synthetic"))]
    return {m: datasets.ood_set(m, data.x_test[:settings.n_ood], run.rng(5, i)) for i, m in enumerate(names)}


def cell_ood(settings, data, run, cell, ood):
    """{name: images} a cell's ensemble and students are evaluated on besides its test images.

    Cell exp4: ``ood`` (:func:`ood_inputs`); the held-out part's chain: its held-out classes, the
    test images of the labels a..b (all ``n_test``, about as many as the kept side has); others: none.
    """
    if len(cell) == 3:
        return {cell[2]: datasets.ood_set(cell[2], data.x_test, run.rng(5, *_stream_key(cell)), labels=data.y_test)}
    return ood if cell == settings.exp4 else {}


def eval_inputs(settings, data, run, cell, ood):
    """The rows a cell's ensemble is accumulated on: its test images, then those of :func:`cell_ood`."""
    return np.vstack([cell_data(settings, data, run, cell)[3], *cell_ood(settings, data, run, cell, ood).values()])


# ----------------------------------------------------------------- one chain, many students
class ChainTee:
    """One sampler's kept states handed to ``n_consumers`` threads in lockstep: consumer i's k-th call gets state k.

    A state is drawn (``sampler.next_batch(1)``) by the first consumer that needs it, one draw at
    a time and in order, so the chain is the same whatever the thread timing; the draw runs
    outside the lock, so the other consumers go on with the states they hold meanwhile. A state
    is dropped once every consumer has taken it, and no state is drawn while the newest is
    ``lag`` states ahead of the slowest consumer, so at most ``lag`` states are held.
    :meth:`consumer` gives each thread an object with the sampler interface (``next_batch``,
    ``n_dim``) that :func:`gped_distill` drives unchanged. A consumer that fails calls
    :meth:`fail`; the others then raise at their next call.
    """

    def __init__(self, sampler, n_consumers, lag=8):
        self.sampler, self.lag = sampler, check_positive_int(lag, "lag")
        self.cond = threading.Condition(threading.Lock())
        self.buffer, self.taken, self.produced, self.failed = {}, [0] * n_consumers, 0, None
        self.drawing = False

    def consumer(self, i):
        return _Consumer(self, i)

    def fail(self, err):
        with self.cond:
            self.failed = err
            self.cond.notify_all()

    def _check(self):
        if self.failed is not None:
            raise RuntimeError(f"another student of this chain failed: {self.failed!r}")

    def take(self, i):
        with self.cond:
            k = self.taken[i]
            while k >= self.produced:
                self._check()
                if self.drawing or self.produced - min(self.taken) >= self.lag:
                    self.cond.wait()
                    continue
                self.drawing = True
                self.cond.release()             # draw without the lock: the others keep taking held states
                try:
                    theta = self.sampler.next_batch(1)[0]
                finally:
                    self.cond.acquire()
                    self.drawing = False
                    self.cond.notify_all()
                self.buffer[self.produced] = theta
                self.produced += 1
            self._check()
            theta = self.buffer[k]
            self.taken[i] = k + 1
            for j in [j for j in self.buffer if j < min(self.taken)]:
                del self.buffer[j]
            self.cond.notify_all()
            return theta


class _Consumer:
    """Consumer ``i`` of a :class:`ChainTee`, seen by :func:`gped_distill` as its sampler (S3.11)."""

    def __init__(self, tee, i):
        self.tee, self.i, self.n_dim = tee, i, tee.sampler.n_dim

    def next_batch(self, k):
        return np.stack([self.tee.take(self.i) for _ in range(k)])


def teacher_net(settings, rng=None):
    return MLP([784, *settings.hidden, N_CLASSES], ["relu", "relu", "log_softmax"], rng)


def student_specs(settings, cell):
    """The students of a cell: (label, kind, (K_1, K_2)); kind a key of :data:`KINDS`.

    The held-out part's chain has exp4's GPED U_o and EnD^2 students (GPED compares these two on OOD sets).
    """
    if len(cell) == 3:
        return [("GPED U_o", "GPED U_o", (1.0, 1.0)), ("EnD2", "EnD2", (1.0, 1.0))]
    specs = [("GPED U_s", "GPED U_s", (1.0, 1.0)), ("GPED U_o", "GPED U_o", (1.0, 1.0))]
    if cell == settings.exp4:
        specs.append(("EnD2", "EnD2", (1.0, 1.0)))
    if cell == settings.exp3:
        big = (max(settings.multipliers),) * 2
        specs += [(f"GPED U_o x{k[0]:g},{k[1]:g}", "GPED U_o", k) for k in multiplier_grid(settings.multipliers)
                  if k != (1.0, 1.0)]
        if big != (1.0, 1.0):
            specs += [(f"GPED U_s x{big[0]:g},{big[1]:g}", "GPED U_s", big), (f"EnD2 x{big[0]:g},{big[1]:g}", "EnD2",
                                                                                big)]
        elif cell != settings.exp4:
            specs.append(("EnD2", "EnD2", big))
    return specs


def distil_settings(settings, kind, n):
    """GPEDSettings of a student kind with S3.E's numbers; the step decay every 200 teacher epochs of N / M steps."""
    lr_step = max(1, round(settings.lr_decay_epochs * n / settings.sgld_batch / settings.thin))
    common = dict(n_steps=settings.n_kept, batch_size=settings.batch_size, input_noise=settings.input_noise,
                  lr=settings.lr, lr_step=lr_step, burn_in=settings.burn_in, thin=settings.thin)
    if kind == "EnD2":
        return end2_settings(**common)
    return gped_settings("both", estimator="stochastic" if kind == "GPED U_s" else "online", **common)


def run_chain(settings, data, run, cell, eval_x):
    """One cell (or the held-out part's chain): the SGLD chain, the ensemble on ``eval_x``, the students.

    The students are those of :func:`student_specs`; the step decay counts teacher epochs of the
    cell's own teacher set (for the held-out part: its images of the kept classes).

    Returns a dict of arrays (the cache of the cell): the ensemble's ``p_sum``, ``h_sum``,
    ``n_members``, the test NLL of single chain states ``state_nll`` (the divergence check),
    ``params_<j>`` of student j, the wall time ``seconds``, and the U_o targets of the largest U_o
    student (``targets``, ``counts``) for the pruning of Experiment 3.
    """
    began = time.perf_counter()
    key = _stream_key(cell)
    x_teacher, y, d_prime, x_test, y_test = cell_data(settings, data, run, cell)
    net = teacher_net(settings, run.rng(1, *key))
    grad = mlp_log_posterior_gradient(net, x_teacher, y, settings.prior_precision, batch_size=settings.sgld_batch,
                                      rng=run.rng(4, *key))
    chain = SGLD(grad, net.params, run.rng(1, *key, 1), settings.sgld_eta, burn_in=settings.burn_in,
                 thin=settings.thin)
    specs = student_specs(settings, cell)
    tee = ChainTee(chain, len(specs) + 1)
    every = settings.accumulate_every // settings.thin
    n_test = x_test.shape[0]

    def accumulate():
        """Consumer 0: the ensemble's running sums on eval_x every ``accumulate_every`` SGLD steps (S3.14)."""
        evaluator = teacher_net(settings)
        acc, state_nll = EnsembleAccumulator(eval_x.shape[0], N_CLASSES), []
        for k in range(1, settings.n_kept + 1):
            theta = tee.take(0)
            if k % every == 0:
                evaluator.set_params(theta)
                log_p = evaluator.predict(eval_x)
                acc.add(log_p)
                state_nll.append(nll(log_p[:n_test], y_test))
        return acc, np.array(state_nll)

    def student(j):
        label, kind, k = specs[j]
        gen = run.rng(3, *key, KINDS[kind], int(round(1000 * k[0])), int(round(1000 * k[1])))
        head = "dirichlet" if kind == "EnD2" else "entropy"
        st = gped_student(net, gen, head=head, hidden=scaled_widths(net.sizes, k)[1:-1])
        g = distil_settings(settings, kind, x_teacher.shape[0])
        result = gped_distill(teacher_net(settings), tee.consumer(j + 1), st, g.make_g(),
                              g.make_estimator(d_prime.shape[0], N_CLASSES), g.make_loss(), d_prime, g, gen,
                              progress=settings.progress and j == 0, label=f"{_cache_name(cell)[6:]} {label}")
        return st.params.copy(), result.estimator

    def guarded(fn, *args):
        try:
            return fn(*args)
        except BaseException as err:
            tee.fail(err)
            raise

    with ThreadPoolExecutor(max_workers=len(specs) + 1) as pool:
        futures = [pool.submit(guarded, accumulate)] + [pool.submit(guarded, student, j) for j in range(len(specs))]
        try:
            results = [f.result() for f in futures]
        except BaseException as err:
            tee.fail(err)
            raise
    (acc, state_nll), students = results[0], results[1:]
    out = dict(p_sum=acc.p_sum, h_sum=acc.h_sum, n_members=np.array(acc.n_members), state_nll=state_nll,
               seconds=np.array(time.perf_counter() - began))
    for j, (params, _) in enumerate(students):
        out[f"params_{j}"] = params
    if cell == settings.exp3:
        big = max((j for j, sp in enumerate(specs) if sp[1] == "GPED U_o"), key=lambda j: specs[j][2])
        est = students[big][1]
        out.update(targets=est.mean, counts=est.counts, big=np.array(big))
    return out


def _cached(run, name, make):
    path = run.cache / f"{name}.npz"
    if path.exists():
        return npzfile.load(path, KIND, {1}, label="cache")
    arrays = make()
    npzfile.save(path, KIND, 1, **arrays)
    return arrays


def _chain_task(shared, cell):
    """One cell's chain (or the held-out part's), cached (a module-level function, for ``jobs.run_tasks``)."""
    settings, data, run, ood = shared
    eval_x = eval_inputs(settings, data, run, cell, ood)
    name = _cache_name(cell)
    if settings.progress:
        part = f", classes outside {cell[2][len('heldout:'):]} only" if len(cell) == 3 else ""
        print(f"{NAME}: cell N = {cell[0]}, s = {cell[1]}{part}: SGLD chain and {len(student_specs(settings, cell))} "
              f"students", flush=True)
    _cached(run, name, lambda: run_chain(settings, data, run, cell, eval_x))
    return name


# --------------------------------------------------------------------------- evaluation
def student_net(settings, spec, params):
    """The student of ``spec`` holding the cached ``params`` (its fixed-generator initial weights replaced)."""
    label, kind, k = spec
    st = gped_student(teacher_net(settings), np.random.default_rng(0), head="dirichlet" if kind == "EnD2" else
                      "entropy", hidden=scaled_widths([784, *settings.hidden, N_CLASSES], k)[1:-1])
    st.set_params(params)
    return st


def evaluate_cell(settings, data, run, cell, arrays, ood):
    """Teacher and student numbers of one cell from its cache: NLL, accuracy, entropy MAE, uncertainties.

    ``n_in`` is the number of test images (the first rows of every ``u``), ``n_teacher`` that of
    the teacher's training images.
    """
    x_teacher, _, _, x_test, y = cell_data(settings, data, run, cell)
    n_test = x_test.shape[0]
    acc = EnsembleAccumulator(arrays["p_sum"].shape[0], N_CLASSES)
    acc.load_state(dict(p_sum=arrays["p_sum"], h_sum=arrays["h_sum"], n_members=arrays["n_members"]))
    teacher_log_p = acc.log_predictive()
    teacher_u = acc.uncertainty()
    out = dict(n_in=n_test, n_teacher=x_teacher.shape[0], teacher=dict(nll=nll(teacher_log_p[:n_test], y),
                            accuracy=float(np.mean(np.argmax(teacher_log_p[:n_test], 1) == y)),
                            u=teacher_u, state_nll=arrays["state_nll"]), students={})
    eval_x = np.vstack([x_test, *cell_ood(settings, data, run, cell, ood).values()])
    for j, spec in enumerate(student_specs(settings, cell)):
        st = student_net(settings, spec, arrays[f"params_{j}"])
        head = "dirichlet" if spec[1] == "EnD2" else "entropy"
        log_p = student_log_probs(st, x_test, head=head)
        u = end2_uncertainty(st, eval_x) if head == "dirichlet" else gped_uncertainty(st, eval_x)
        out["students"][spec[0]] = dict(
            spec=spec, net=st, nll=nll(log_p, y), accuracy=float(np.mean(np.argmax(log_p, 1) == y)),
            entropy_mae=entropy_mae(teacher_u.data[:n_test], u.data[:n_test]), u=u,
            params=n_params(st.sizes), macs=n_macs(st.sizes))
    return out


def prune_runs(settings, data, run, arrays):
    """Group l1/l2 pruning (S3.19) of the largest U_o student of cell exp3, one cached run per lam."""
    n, s = settings.exp3
    specs = student_specs(settings, settings.exp3)
    big = int(arrays["big"])
    _, _, d_prime, x_test, _ = cell_data(settings, data, run, settings.exp3)
    rows_seen = np.flatnonzero(arrays["counts"] > 0)               # rows with a U_o target (all, in practice)
    targets, x_rows = arrays["targets"][rows_seen], d_prime[rows_seen]
    loss = JointLoss()
    out = []
    for i, lam in enumerate(settings.prune_lams):
        def make():
            gen = run.rng(6, i)
            net = student_net(settings, specs[big], arrays[f"params_{big}"])

            def draw():
                idx = gen.integers(0, x_rows.shape[0], size=settings.batch_size)
                return x_rows[idx] + settings.input_noise * gen.standard_normal((idx.size, 784)), targets[idx]

            try:
                res = group_lasso_prune(net, lambda b: loss(net, *b), draw, Adam(settings.lr), settings.prune_steps,
                                        lam, solver=settings.prune_solver, fine_tune_optimizer=Adam(settings.lr / 10),
                                        fine_tune_steps=settings.fine_tune_steps, progress=False)
            except ValueError as err:
                if not str(err).startswith("lam:"):
                    raise
                return dict(sizes=np.zeros(0, dtype=np.int64), params=np.zeros(0))    # every unit of a layer removed
            return dict(sizes=np.array(res.pruned.sizes), params=res.pruned.params.copy())

        arrays_i = _cached(run, f"prune_{i}", make)
        if arrays_i["sizes"].size == 0:
            out.append(dict(lam=lam, sizes=None))
            continue
        sizes = [int(v) for v in arrays_i["sizes"]]
        pruned = MLP(sizes, ["relu", "relu", "linear"], None)
        pruned.set_params(arrays_i["params"])
        log_p = student_log_probs(pruned, x_test)
        out.append(dict(lam=lam, sizes=sizes, nll=nll(log_p, data.y_test), params=n_params(sizes),
                        macs=n_macs(sizes)))
    return out


# ------------------------------------------------------------------------------ tables
def _ref(value):
    return "-" if value is None else value


def table1(settings, ev):
    t, st = ev["teacher"], ev["students"]
    rows = [dict(quantity="teacher NLL", kd_ref=t["nll"], GPED=GPED_TABLE1["teacher NLL"]),
            dict(quantity="student NLL (U_o)", kd_ref=st["GPED U_o"]["nll"], GPED=GPED_TABLE1["student NLL"]),
            dict(quantity="student NLL (U_s)", kd_ref=st["GPED U_s"]["nll"], GPED="-"),
            dict(quantity="entropy MAE (U_o)", kd_ref=st["GPED U_o"]["entropy_mae"], GPED=GPED_TABLE1["entropy MAE"]),
            dict(quantity="entropy MAE (U_s)", kd_ref=st["GPED U_s"]["entropy_mae"], GPED="-"),
            dict(quantity="teacher accuracy", kd_ref=t["accuracy"], GPED="-"),
            dict(quantity="student accuracy (U_o)", kd_ref=st["GPED U_o"]["accuracy"], GPED="-")]
    return rows


def table_exp2(settings, evals):
    rows = []
    for cell in settings.grid:
        ev = evals[cell]
        t, st = ev["teacher"], ev["students"]
        rows.append(dict(N=cell[0], s=cell[1], masking=datasets.masking_rate(cell[1]), teacher_nll=t["nll"],
                         nll_U_s=st["GPED U_s"]["nll"], nll_U_o=st["GPED U_o"]["nll"],
                         gap_U_s=st["GPED U_s"]["nll"] - t["nll"], gap_U_o=st["GPED U_o"]["nll"] - t["nll"],
                         ent_mae_U_s=st["GPED U_s"]["entropy_mae"], ent_mae_U_o=st["GPED U_o"]["entropy_mae"],
                         state_nll_first=float(t["state_nll"][0]), state_nll_last=float(t["state_nll"][-1])))
    return rows


def _largest(settings, ev, kind):
    big = (max(settings.multipliers),) * 2
    return next(v for v in ev["students"].values() if v["spec"][1] == kind and v["spec"][2] == big)


def table2(settings, ev):
    gped, end2 = _largest(settings, ev, "GPED U_s"), _largest(settings, ev, "EnD2")
    vals = {"NLL ensemble": ev["teacher"]["nll"], "NLL GPED": gped["nll"], "NLL EnD2": end2["nll"],
            "entropy MAE GPED": gped["entropy_mae"], "entropy MAE EnD2": end2["entropy_mae"]}
    return [dict(quantity=k, kd_ref=v, GPED=GPED_TABLE2[k]) for k, v in vals.items()]


def table_exp3(settings, ev, pruned):
    rows = [dict(student=label, sizes="-".join(map(str, v["net"].sizes)), params=v["params"], macs=v["macs"],
                 nll=v["nll"]) for label, v in ev["students"].items() if v["spec"][1] == "GPED U_o"]
    for p in pruned:
        rows.append(dict(student=f"group l1/l2 lam={p['lam']:g} ({settings.prune_solver})",
                         sizes="-".join(map(str, p["sizes"])) if p["sizes"] else "every unit of a layer removed",
                         params=p.get("params", 0), macs=p.get("macs", 0), nll=p.get("nll", float("nan"))))
    ok = [i for i, r in enumerate(rows) if np.isfinite(r["nll"])]
    for key in ("macs", "params"):
        front = set(np.array(ok)[pareto_front([rows[i][key] for i in ok], [rows[i]["nll"] for i in ok])])
        for i, r in enumerate(rows):
            r[f"front_{key}"] = "yes" if i in front else ""
    return rows


def table3(settings, parts):
    """AUROC rows (OOD positive, S3.16) of every (teacher label, evaluation, OOD sets) in ``parts``.

    The columns are the models of the first part (exp4: ensemble, U_s, U_o, EnD^2); a model a
    part lacks (the held-out part has no U_s student) is "-".
    """
    rows, columns = [], None
    for teacher, ev, ood in parts:
        n_in = ev["n_in"]
        models = {"ensemble": ev["teacher"]["u"]}
        models.update({k: v["u"] for k, v in ev["students"].items()})
        columns = columns or list(models)
        start = n_in
        for name, x in ood.items():
            sl = slice(start, start + x.shape[0])
            start += x.shape[0]
            for what, attr in (("TU", "total"), ("KU", "knowledge")):
                row = dict(ood_set=name, teacher=teacher, uncertainty=what)
                for m in columns:
                    v = getattr(models[m], attr) if m in models else None
                    row[m] = "-" if v is None else auroc(v[:n_in], v[sl])
                rows.append(row)
    return rows


def table4(settings, ev, run):
    t = ev["teacher"]["u"]
    n = settings.n_test
    rows = []
    for what, attr in (("TU", "total"), ("KU", "knowledge")):
        # the ensemble's KU is >= 0 up to a few ulps of rounding (S3.14): as a gain it is clipped at 0
        relevance = np.maximum(getattr(t, attr)[:n], 0.0)
        row = dict(uncertainty=what)
        for i, (m, v) in enumerate(ev["students"].items()):
            vals = ndcg_trials(relevance, getattr(v["u"], attr)[:n], run.rng(7, i, int(attr == "knowledge")),
                               k=settings.ndcg_k, subset=settings.ndcg_subset, trials=settings.ndcg_trials)
            row[f"{m} mean"], row[f"{m} sd"] = float(vals.mean()), float(vals.std(ddof=1))
        row["GPED (GPED / EnD2)"] = " / ".join(GPED_TABLE4[what])
        rows.append(row)
    return rows


# ------------------------------------------------------------------------- conclusions
def _verdict(ok):
    return "reproduces" if ok else "does NOT reproduce"


def conclusions(settings, exp2, t3, t4, evals):
    """The issue's conclusions checked on the numbers: list of (statement, holds, numbers)."""
    out = []
    by = {(r["N"], r["s"]): r for r in exp2}
    sides = sorted({s for _, s in settings.grid})
    sizes = sorted({n for n, _ in settings.grid})
    rises = [(n, by[(n, sides[0])]["teacher_nll"], by[(n, sides[-1])]["teacher_nll"]) for n in sizes
             if (n, sides[0]) in by and (n, sides[-1]) in by and sides[0] != sides[-1]]
    falls = [(s, by[(sizes[0], s)]["teacher_nll"], by[(sizes[-1], s)]["teacher_nll"]) for s in sides
             if (sizes[0], s) in by and (sizes[-1], s) in by and sizes[0] != sizes[-1]]
    if rises and falls:
        out.append((f"the teacher's test NLL rises with masking (s = {sides[0]} -> {sides[-1]}) and falls with N "
                    f"(N = {sizes[0]} -> {sizes[-1]})", all(b > a for _, a, b in rises) and
                    all(b < a for _, a, b in falls),
                    "; ".join([f"N = {n}: {a:.4f} -> {b:.4f}" for n, a, b in rises] +
                              [f"s = {s}: {a:.4f} -> {b:.4f}" for s, a, b in falls])))
    pairs = [(s, by[(sizes[0], s)]["gap_U_o"], by[(sizes[-1], s)]["gap_U_o"]) for s in sides
             if (sizes[0], s) in by and (sizes[-1], s) in by and sizes[0] != sizes[-1]]
    if pairs:
        # the gap is student - teacher as S3.16 defines it, signed: a negative gap (a student below the ensemble's
        # NLL) that moves towards 0 does not count as shrinking
        out.append((f"the student-teacher NLL gap (U_o) shrinks from N = {sizes[0]} to N = {sizes[-1]} at every s",
                    all(b < a for _, a, b in pairs), "; ".join(f"s = {s}: {a:.4f} -> {b:.4f}" for s, a, b in pairs)))
    peaks = []
    for n in sizes:
        gaps = [(s, by[(n, s)]["gap_U_o"]) for s in sides if (n, s) in by]
        if len(gaps) >= 2:
            best = max(gaps, key=lambda g: g[1])[0]
            ok = (best not in (gaps[0][0], gaps[-1][0])) if len(gaps) >= 3 else best != gaps[0][0]
            peaks.append((n, ok, ", ".join(f"s = {s}: {g:.4f}" for s, g in gaps)))
    if peaks:
        what = ("peaks at moderate masking (the largest gap at an interior side)" if len(sides) >= 3 else
                f"is larger at moderate masking s = {sides[-1]} than at s = 0 (two sides only: a peak needs the larger "
                f"masks of --paper)")
        out.append((f"the NLL gap {what}, at every N", all(ok for _, ok, _ in peaks),
                    "; ".join(f"N = {n}: {t}" for n, _, t in peaks)))
    wins, text = {"nll": 0, "entropy_mae": 0}, []
    for cell, ev in evals.items():
        st = ev["students"]
        for key in wins:
            o, s_ = st["GPED U_o"][key], st["GPED U_s"][key]
            wins[key] += bool(o < s_)
            text.append(f"{cell[0]}:{cell[1]} {key} U_o {o:.4f} vs U_s {s_:.4f}")
    total = 2 * len(evals)
    out.append((f"U_o beats U_s (lower student NLL / entropy MAE) in most settings: {sum(wins.values())} of {total} "
                f"(NLL {wins['nll']} of {len(evals)} cells, entropy MAE {wins['entropy_mae']} of {len(evals)})",
                sum(wins.values()) * 2 > total, "; ".join(text)))
    if t3 is not None and "EnD2" in t3[0]:
        a = [(r["GPED U_o"], r["EnD2"]) for r in t3]                 # the held-out part's rows count too
        b = [(r["GPED U_o mean"], r["EnD2 mean"]) for r in t4]
        w = sum(g > e for g, e in a + b)
        out.append((f"GPED (U_o) beats EnD2 on most OOD (AUROC) and ranking (nDCG) settings: {w} of {len(a) + len(b)} "
                    f"(GPED: 75% of its OOD, 91% of its ranking settings)", w * 2 > len(a) + len(b),
                    f"AUROC {sum(g > e for g, e in a)} of {len(a)}, nDCG {sum(g > e for g, e in b)} of {len(b)}"))
    return out


# ------------------------------------------------------------------------------- run
def run(settings, out_dir, rng):
    """Run the experiment; write the tables and the summary into ``out_dir``; return everything measured.

    Streams (:class:`._report.Run`): (0) the nested subsample, (1, N, s) the teacher's initial
    weights and (1, N, s, 1) its SGLD noise, (4, N, s) its minibatches, (2, N, s, j) the occlusion
    of the teacher set (j = 0), D' (1) and the test set (2), (3, N, s, kind, K_1, K_2) a student,
    (5, i) OOD set i, (6, i) pruning run i, (7, ...) nDCG subsets; the synthetic digits draw from ``rng``.
    The held-out part's chain ``heldout:a-b`` has the streams of cell (N, s) = exp4 with (N, s)
    replaced by (N, s, 100 + a, 100 + b) (:func:`_stream_key`); its subsample is stream (0), exp4's.
    """
    settings = settings.validate()
    run = Run(out_dir, rng, settings.record())
    data = load_data(settings, run.rng(8))
    if settings.heldout is not None:
        cell_data(settings, data, run, settings.heldout_cell)   # its classes are there: checked before any chain
    ood = ood_inputs(settings, data, run)
    cells = settings.cells
    run_tasks(_chain_task, settings.chains, settings.jobs, shared=(settings, data, run, ood))
    evals, phases = {}, {}
    for cell in settings.chains:
        arrays = _cached(run, _cache_name(cell), None)
        phases[f"chain {':'.join(map(str, cell))}"] = float(arrays["seconds"])
        evals[cell] = evaluate_cell(settings, data, run, cell, arrays, ood)
    held = evals.pop(settings.heldout_cell, None)         # not a cell of Experiments 1-3 (and it has no U_s)
    began = time.perf_counter()
    pruned = prune_runs(settings, data, run, _cached(run, f"chain_{settings.exp3[0]}_{settings.exp3[1]}", None))
    phases["pruning (when not cached)"] = time.perf_counter() - began

    t1, t2e = table1(settings, evals[settings.exp1]), table_exp2(settings, {c: evals[c] for c in settings.grid})
    t2, t3e = table2(settings, evals[settings.exp3]), table_exp3(settings, evals[settings.exp3], pruned)
    n4, s4 = settings.exp4
    t3_parts, heldout = [(f"exp4, N = {n4}", evals[settings.exp4], ood)], None
    if held is not None:
        kept = np.setdiff1d(np.arange(N_CLASSES), datasets.heldout_classes(settings.heldout))
        held_ood = cell_ood(settings, data, run, settings.heldout_cell, ood)
        classes = (f"{kept[0]}-{kept[-1]}" if kept[-1] - kept[0] == kept.size - 1 else ",".join(map(str, kept)))
        t3_parts.append((f"own, {held['n_teacher']} images of classes {classes}", held, held_ood))
        heldout = dict(name=settings.heldout, kept_classes=kept.tolist(), n_teacher=held["n_teacher"],
                       n_test_in=held["n_in"], n_test_ood=held_ood[settings.heldout].shape[0],
                       teacher_nll=held["teacher"]["nll"], teacher_accuracy=held["teacher"]["accuracy"])
    t3, t4 = table3(settings, t3_parts), table4(settings, evals[settings.exp4], run)
    checks = conclusions(settings, t2e, t3, t4, evals)
    head = (f"{data.name}, {settings.mode} mode: teacher 784-{settings.hidden[0]}-{settings.hidden[1]}-10, SGLD "
            f"eta = {settings.sgld_eta:g}, tau = {settings.prior_precision:g}, M = {settings.sgld_batch}, "
            f"T = {settings.sgld_steps}, B = {settings.burn_in}, H = {settings.thin}, ensemble every "
            f"{settings.accumulate_every} steps on {settings.n_test} test images; one seed")
    times = ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())
    parts = [f"# {NAME}: GPED's FCNN experiments (SPEC_seeds S3.E)", "", head, "",
             f"Wall time of the phases (as first computed; cached ones are not rerun): {times}", ""]
    n1, s1 = settings.exp1
    parts.append(write_table(t1, os.path.join(out_dir, "table1"),
                             f"Table 1 / Experiment 1 (N = {n1}, s = {s1}): test NLL (nats) and entropy MAE; GPED's "
                             f"FCNN figures (60,000 images, 784-400-400-10, T = 1e6) beside"))
    parts.append(write_table(t2e, os.path.join(out_dir, "table_exp2"),
                             "Experiment 2: subsampling x occlusion (a subset of GPED's grid): teacher and student "
                             "test NLL, gap = student - teacher, entropy MAE; state_nll_* = test NLL of one chain "
                             "state at the first and last accumulation (no divergence). GPED gave figures only: "
                             "the gap shrinks with N and peaks at moderate masking; U_o beats U_s"))
    n3, s3 = settings.exp3
    parts.append(write_table(t2, os.path.join(out_dir, "table2"),
                             f"Table 2 (N = {n3}, s = {s3}, masking {datasets.masking_rate(s3):.1%}; largest width "
                             f"x{max(settings.multipliers):g}, U_s): ensemble vs GPED vs EnD2; GPED's FCNN figures "
                             f"(60,000 images) beside"))
    parts.append(write_table(t3e, os.path.join(out_dir, "table_exp3"),
                             f"Experiment 3 (N = {n3}, s = {s3}): width search (U_o students, widths x{{"
                             f"{', '.join(f'{k:g}' for k in settings.multipliers)}}}^2) and group l1/l2 pruning of "
                             f"the largest ({settings.prune_steps} steps on its final U_o targets, fine-tuned "
                             f"{settings.fine_tune_steps} at lr/10); params and MACs of the whole student (entropy "
                             f"head included); front_* = on the Pareto front of NLL against that cost. GPED's FCNN "
                             f"fronts were in its lost Appendix B (its CNN figures are not comparable)"))
    own = ""
    if heldout is not None:
        own = (f"; {settings.heldout} has its own teacher (teacher = own): a chain of the exp4 settings on the "
               f"{heldout['n_teacher']} of exp4's {n4} images outside the held-out classes, its U_o and EnD2 "
               f"students, {heldout['n_test_in']} test images of those classes vs the {heldout['n_test_ood']} of the "
               f"held-out ones (its test NLL {heldout['teacher_nll']:.4f}, accuracy "
               f"{heldout['teacher_accuracy']:.4f} on its classes)")
    parts.append(write_table(t3, os.path.join(out_dir, "table3_auroc"),
                             f"Table 3 / Experiment 4 (N = {n4}, s = {s4}): OOD AUROC (OOD positive) by total (TU) "
                             f"and knowledge (KU) uncertainty, {settings.n_test} test vs {settings.n_ood} OOD images "
                             f"per set{own}. These offline sets (SPEC_seeds 0.4) are NOT comparable with "
                             f"{GPED_TABLE3}"))
    parts.append(write_table(t4, os.path.join(out_dir, "table4_ndcg"),
                             f"Table 4 / Experiment 4: nDCG@{settings.ndcg_k} of {settings.ndcg_subset} random test "
                             f"inputs ranked by the student's uncertainty against the ensemble's, "
                             f"{settings.ndcg_trials} trials: mean and standard deviation over trials (as GPED's "
                             f"+-); GPED's FCNN figures beside"))
    negative = [f"{r['N']}:{r['s']}" for r in t2e if r["gap_U_o"] < 0 or r["gap_U_s"] < 0]
    note = (f"\nNegative gaps (a student's test NLL below the ensemble's) at the cells {', '.join(negative)}; GPED's "
            f"gaps are all positive.\n" if negative else "")
    parts.append("### The issue's conclusions\n\n" + "\n".join(f"- {_verdict(ok)}: {s} ({n})" for s, ok, n in checks)
                 + "\n" + note)
    tables = "\n".join(parts)
    write_text_atomic(os.path.join(out_dir, "summary.md"), tables)
    for name in ("table1", "table_exp2", "table2", "table_exp3", "table3_auroc", "table4_ndcg"):
        run.files[name] = os.path.join(out_dir, name + ".csv")
    run.files["summary"] = os.path.join(out_dir, "summary.md")
    results = run.finish(dict(data=data.name, phase_seconds=phases, table1=t1, table_exp2=t2e, table2=t2,
                              table_exp3=t3e, table3=t3, table4=t4, heldout=heldout,
                              conclusions=[dict(statement=s, holds=bool(ok), numbers=n) for s, ok, n in checks]))
    return {**results, "tables": tables}


def parse_cells(text):
    """``N:s,N:s,...`` -> ((N, s), ...) for ``--configs`` (checked by ``Settings.validate``).

    >>> parse_cells("10000:0,60000:15")
    ((10000, 0), (60000, 15))
    """
    try:
        return tuple(tuple(int(v) for v in part.split(":")) for part in text.split(","))
    except ValueError:
        import argparse
        raise argparse.ArgumentTypeError(f"expected cells N:s separated by commas, e.g. 5000:0,5000:15, received "
                                         f"{text!r}") from None


OPTIONS = {"grid": "--configs", "data": "--data", "jobs": "--jobs", "sgld_steps": "--sgld-steps"}


def main(argv=None):
    parser = ArgumentParser(prog="kd-ref run gped-mnist", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="784-100-100-10 teacher, 5,000 images, SGLD T = 1e4, cells N in {2000, 5000} x s in "
                           "{0, 15} (default; about 10-15 minutes on 2 cores)")
    mode.add_argument("--paper", action="store_true",
                      help="784-400-400-10, N in {10k, 20k, 30k, 60k} x s in {0, 7, 10, 15, 20, 26}, T = 1e6 "
                           "(about 3-4 h per cell; resumable per cell; pick cells with --configs)")
    parser.add_argument("--configs", type=parse_cells,
                        help="Experiment 2's cells N:s, comma separated (default: the mode's grid); Experiments 1, 3 "
                             "and 4 always run their own cells")
    parser.add_argument("--data", choices=["auto", "mnist", "synthetic"], help="data source (default auto)")
    parser.add_argument("--sgld-steps", type=int_at_least(2),
                        help="SGLD steps T per chain (default: quick 1e4, S3.E's 2e4 halved to fit 15 minutes; "
                             "paper 1e6)")
    parser.add_argument("--out", type=out_folder, default=os.path.join(".", "kd_ref_runs", NAME), help="output folder")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the numpy Generator")
    parser.add_argument("--jobs", type=int_at_least(1), default=1,
                        help="processes for the independent chains (default 1; results do not depend on it)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    overrides = {"jobs": args.jobs, "progress": not args.no_progress}
    if args.configs is not None:
        overrides["grid"] = args.configs
    for name in ("data", "sgld_steps"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    settings = Settings.paper(**overrides) if args.paper else Settings.quick(**overrides)
    return run_from_cli(parser, settings, OPTIONS, check_data, run, args.out, args.seed)
