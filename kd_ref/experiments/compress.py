"""``kd-ref run compress``: compress a neural ensemble into a small network (thesis section 2.2).

Steps, all through :mod:`kd_ref.distill.compression`:

1. train an ensemble of networks (ReLU, ReLU, log-softmax), each on a bootstrap
   resample of the training images, by cross entropy with ADADELTA (2.14-2.15);
2. for each amount of training data (``full``: all training images; ``small``: the
   first 10%), train a NADE on the 0.5-thresholded images with a raster
   column-wise pixel order, as the second data generator;
3. train one student per {dataset, NADE, Gaussian noise} x {cross entropy,
   derivative square error}, the ensemble labelling every minibatch on the fly
   (mean probability for cross entropy, log-mean-exp for derivatives);
   ``--generators ... munge`` adds MUNGE's pseudo-data (S1.8, not in the thesis)
   as a fourth generator, its nearest neighbours searched once and cached;
4. train the baseline, the student architecture on the true labels of the same
   images, with the ensemble members' settings;
5. write tables (Markdown and CSV) of test accuracy and average test
   log-probability with 2 standard errors, paired student-vs-baseline
   differences, progress curves and sample grids (PNG) and ``results.json``;
   with ``--student-seeds K`` every student and baseline is trained K times (its
   own streams; not in the thesis) and a table gives means and 2 SE over the seeds.

Modes: ``--quick`` (default; a subset of MNIST, or the built-in synthetic digits
when MNIST is not available, few members and passes; minutes) and ``--thesis``
(the thesis settings of SPEC.md; many hours on a CPU). Every trained model is
cached under ``OUT/cache`` (members, NADEs and students as ``.npz``), and in
thesis mode every training run also writes a checkpoint under ``OUT/ckpt`` (every 500
steps and on Ctrl-C), so an interrupted run started again with the same arguments
resumes where it stopped and ends with exactly the numbers of an uninterrupted run. Use ``--members``, ``--member-passes``, ``--student-passes`` etc. to
run a documented fraction of the thesis settings.
"""
import csv
import functools
import os
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from .. import datasets, npzfile, toydata
from ..cli import ArgumentParser, int_at_least, out_folder
from ..distill import objective
from ..distill.munge import MungeGenerator, nearest_neighbours
from ..distill.compression import (LOSSES as LOSS_CLASSES, DatasetGenerator, EnsembleTeacher, NADEGenerator,
                                   NoiseGenerator, log_probs_of, supervised_objective, teacher_targets)
from ..distill.label_cache import (LabelCache, LabelledDatasetGenerator, build_label_cache, label_chunk,
                                   labelled_objective)
from ..jobs import run_tasks
from ..metrics import mean_2se, paired_difference, score
from ..mlp import MLP
from ..nade import NADE, raster_column_order
from .._validation import check_in_range, check_positive_int
from ..optim import Adadelta, check_state_keys, train
from ._report import Presets, Run, image_grid, run_from_cli

GENERATORS = ("dataset", "nade", "noise", "munge")      # munge: S1.8, beside the thesis's three (2.21)
LOSSES = ("ce", "dse")
FRACTIONS = ("full", "small")
LOSS_NAMES = {"ce": "cross entropy", "dse": "deriv. sq. error"}
GENERATOR_NAMES = {"dataset": "dataset", "nade": "NADE", "noise": "Gaussian noise", "munge": "MUNGE"}
CURVE_KIND = "kd_ref.compress.curve"
NEIGHBOURS_KIND = "kd_ref.compress.munge_neighbours"


@dataclass
class Settings(Presets):
    """Everything that defines a run. ``quick()`` and ``thesis()`` give the two presets.

    ``n_train``/``n_test`` = 0 means all images; the ``small`` fraction is the first
    ``small_fraction`` of the ``n_train`` training images. Passes count examples:
    a student of the ``small`` fraction with ``student_passes`` = 40 sees
    40 x (number of small-fraction images) generated inputs, whatever the generator;
    its NADE and baseline likewise train for ``nade_passes`` and ``baseline_passes``
    passes over the small-fraction images.

    ``student_seeds`` = K > 1 trains every student and baseline K times, each replicate
    from its own random stream (initial weights and minibatches; the members, NADEs and
    label caches are shared), so the spread due to the student's own randomness can be
    told from the test-set noise of one student. Replicate 0 is the student of a
    single-seed run, so raising K in the folder of an earlier run trains only the new ones.

    The class defaults are the quick preset. It departs from the thesis's proportions
    where a few hundred steps would leave a model useless: the NADE gets 20 passes
    (thesis 10), since after 3 passes over 200 images its conditional-probability
    images are still grey blobs, and members and baselines get as many passes as
    the students (thesis: half as many).
    """

    mode: str = "quick"
    data: str = "auto"                 # auto (MNIST when KD_REF_DATA has it, else synthetic) | mnist | synthetic
    n_train: int = 2000
    n_test: int = 1000
    small_fraction: float = 0.1
    fractions: tuple = FRACTIONS
    members: int = 3
    member_hidden: tuple = (500, 300)
    member_passes: float = 10.0
    student_hidden: tuple = (50, 30)
    student_passes: float = 10.0
    baseline_passes: float = None      # None: member_passes (the thesis trained baselines like the members)
    batch_size: int = 20
    nade_hidden: int = 100
    nade_passes: float = 20.0
    generators: tuple = GENERATORS[:3]     # the thesis's; add "munge" to compare MUNGE's pseudo-data (S1.8)
    munge_p: float = 0.5               # MUNGE swap probability and local-variance divisor (kd_ref's choice:
    munge_s: float = 10.0              # the thesis does not run MUNGE)
    losses: tuple = LOSSES
    student_seeds: int = 1             # replicates of every student and baseline (not in the thesis)
    curve_points: int = 10
    curve_test: int = 1000             # test images used for the progress curves (0 = all)
    label_cache: bool = True           # the dataset generator's labels computed once (kd_ref.distill.label_cache)
    checkpoints: bool = False
    figures: bool = True
    progress: bool = True

    @classmethod
    def thesis(cls, **overrides):
        return cls.preset(dict(mode="thesis", data="mnist", n_train=0, n_test=0, members=30, member_passes=20.0,
                               student_passes=40.0, nade_hidden=500, nade_passes=10.0, curve_points=40,
                               curve_test=0, checkpoints=True), **overrides)

    def validate(self):
        """Check every field (errors name the field); return ``self`` unchanged."""
        for name, allowed in (("fractions", FRACTIONS), ("generators", GENERATORS), ("losses", LOSSES)):
            value = getattr(self, name)
            if not (isinstance(value, (tuple, list)) and value and all(v in allowed for v in value)):
                raise ValueError(f"{name}: expected a non-empty subset of {allowed}, received {value!r}")
        if self.data not in ("auto", "mnist", "synthetic"):
            raise ValueError(f"data: expected 'auto', 'mnist' or 'synthetic', received {self.data!r}")
        check_in_range(self.small_fraction, "small_fraction", 0, 1, low_open=True)
        if not isinstance(self.label_cache, (bool, np.bool_)):
            raise TypeError(f"label_cache: expected True or False, received {self.label_cache!r}")
        check_in_range(self.munge_p, "munge_p", 0.0, 1.0)
        check_in_range(self.munge_s, "munge_s", 0.0, np.inf, low_open=True, high_open=True)
        for name in ("members", "batch_size", "nade_hidden", "curve_points", "student_seeds"):
            check_positive_int(getattr(self, name), name)
        check_positive_int(self.n_train, "n_train", minimum=0)   # 0 = all
        for name in ("n_test", "curve_test"):                     # 0 = all; standard errors need two images
            if check_positive_int(getattr(self, name), name, minimum=0) == 1:
                raise ValueError(f"{name}: expected 0 (all test images) or an integer >= 2, received 1")
        for name in ("member_passes", "student_passes", "nade_passes", "baseline_passes"):
            value = getattr(self, name)
            if value is None and name == "baseline_passes":
                continue  # as the members
            try:
                check_in_range(value, name, 0, np.inf, low_open=True, high_open=True)
            except (TypeError, ValueError):
                alt = "None or " if name == "baseline_passes" else ""
                raise ValueError(f"{name}: expected {alt}a number of passes > 0, received {value!r}") from None
        return self


# ------------------------------------------------------------------------ data
@dataclass
class Data:
    name: str
    x_train: np.ndarray      # (n, D) grey levels in [0, 1], raster row-major
    y_train: np.ndarray      # (n,) int
    x_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple = (28, 28)
    n_classes: int = 10


def load_data(settings, rng):
    """Training and test images for the run (MNIST from KD_REF_DATA, or the built-in synthetic set)."""
    kind = settings.data
    if kind == "auto":
        kind = "mnist" if datasets.mnist_available() else "synthetic"
    if kind == "mnist":
        (x_train, y_train), (x_test, y_test) = datasets.load_mnist()
        name = "MNIST"
    else:
        n_train = settings.n_train or 6000
        n_test = settings.n_test or 1000
        (x_train, y_train), (x_test, y_test) = toydata.synthetic_digits(n_train, n_test, rng)
        name = "synthetic digits (kd_ref.toydata)"
    if settings.n_train:
        x_train, y_train = x_train[:settings.n_train], y_train[:settings.n_train]
    if settings.n_test:
        x_test, y_test = x_test[:settings.n_test], y_test[:settings.n_test]
    side = int(round(np.sqrt(x_train.shape[1])))
    shape = (side, side) if side * side == x_train.shape[1] else (1, x_train.shape[1])
    return Data(name, np.asarray(x_train, float), np.asarray(y_train, int), np.asarray(x_test, float),
                np.asarray(y_test, int), shape, int(max(y_train.max(), y_test.max())) + 1)


# --------------------------------------------------------------------- helpers
def _score_dict(s):
    return {"accuracy": s.accuracy, "accuracy_2se": s.accuracy_2se, "log_prob": s.log_prob,
            "log_prob_2se": s.log_prob_2se}


def _steps(passes, n, batch):
    return max(1, int(round(passes * n / batch)))


class _Curve:
    """Progress curve: test accuracy and log-probability against examples seen (checkpointed with the run)."""

    def __init__(self, net, x, y):
        self.net, self.x, self.y = net, x, y
        self.points = []

    def __call__(self, examples):
        s = score(log_probs_of(self.net, self.x), self.y)
        self.points.append((examples, s.accuracy, s.log_prob))
        return s.log_prob

    def array(self):
        return np.array(self.points, float).reshape(-1, 3)

    def state(self):
        return {"points": self.array()}

    def load_state(self, state):
        check_state_keys(state, ("points",), "curve")
        points = np.asarray(state["points"])
        if points.ndim != 2 or points.shape[1] != 3 or not np.all(np.isfinite(points)):
            raise ValueError(f"points: expected finite rows (examples, accuracy, log prob), received shape "
                             f"{points.shape}")
        self.points = [tuple(row) for row in points.astype(float).tolist()]


def _model_settings(settings):
    """The settings that change what a trained model is (a checkpoint must have been made with them)."""
    keys = _MODEL_KEYS + (("munge_p", "munge_s") if "munge" in settings.generators else ())
    return {k: _settings_dict(settings)[k] for k in keys}


@dataclass
class Context:
    """What every stage of a run reads, passed whole: the settings, the :class:`Run` (folders, random
    streams), the images, the processes the stages may use (``jobs``) and, once the members are trained,
    the ensemble ``teachers`` ({"ce": mean probability (2.15), "dse": log-mean-exp (2.18)})."""

    settings: Settings
    run: Run
    data: Data
    jobs: int = 1
    teachers: dict = None

    @property
    def sizes(self):
        """Training images per fraction: ``full`` all, ``small`` the first ``small_fraction`` of them."""
        n = self.data.x_train.shape[0]
        return {"full": n, "small": max(1, int(round(self.settings.small_fraction * n)))}

    def train_images(self, fraction):
        """(x, y): the first ``sizes[fraction]`` training images and their labels."""
        n = self.sizes[fraction]
        return self.data.x_train[:n], self.data.y_train[:n]

    def curve_data(self):
        """The test images (and labels) of the progress curves."""
        m = self.settings.curve_test or self.data.x_test.shape[0]
        return self.data.x_test[:m], self.data.y_test[:m]


def _fit(ctx, name, label, net, minibatch_objective, gen, n_steps):
    """Train ``net`` (or load it from ``cache/<name>.npz``), returning its progress curve as (K, 3).

    With ``settings.checkpoints`` the run is checkpointed at ``ckpt/<name>.npz``,
    generator and progress curve included, so an interrupted run resumes to the same numbers.
    """
    settings = ctx.settings
    cache_path = ctx.run.cache / f"{name}.npz"
    curve_file = str(cache_path) + ".curve.npz"
    if os.path.exists(cache_path):
        net.restore(cache_path)
        return npzfile.load(curve_file, CURVE_KIND, {1}, label="cache", required=("points",))["points"]
    ckpt = str(ctx.run.ckpt / f"{name}.npz") if settings.checkpoints else None
    curve = _Curve(net, *ctx.curve_data())
    curve(0)                                   # replaced by the saved curve when the run resumes
    train(net.params, minibatch_objective, gen, Adadelta(), n_steps, monitor=lambda: curve(gen.examples_drawn),
          monitor_every=max(1, n_steps // settings.curve_points), progress=settings.progress, checkpoint=ckpt,
          stateful={"generator": gen, "curve": curve}, settings=_model_settings(settings), label=label)
    points = curve.array()
    # the curve first, then the net (each written atomically): a cached net always has its curve
    npzfile.save(curve_file, CURVE_KIND, 1, points=points)
    net.save(cache_path)
    if ckpt is not None and os.path.exists(ckpt):
        os.remove(ckpt)
    return points


def _one_hot(y, c):
    return np.eye(c)[y]


def _replicate(name, code, seed):
    """Cache name and stream code of replicate ``seed`` of a student or baseline. Replicate 0 keeps the
    single-seed run's own, so that adding seeds reuses what is cached; replicate j > 0 is ``name_seed{j}``
    drawing from the stream ``code + (j,)``."""
    return (name, code) if seed == 0 else (f"{name}_seed{seed}", code + (seed,))


def _classifier(ctx, hidden, rng):
    """A network of the members' form (ReLU, ReLU, log-softmax) with the given hidden sizes (2.22)."""
    return MLP([ctx.data.x_train.shape[1], *hidden, ctx.data.n_classes], ["relu", "relu", "log_softmax"], rng)


# --------------------------------------------------------------------- stages
def train_member(ctx, k):
    """Member ``k``, trained on a bootstrap resample of all training images (2.14); returns (net, curve)."""
    s, data = ctx.settings, ctx.data
    n = data.x_train.shape[0]
    rng = ctx.run.rng(1, k)
    net = _classifier(ctx, s.member_hidden, rng)
    boot = rng.integers(0, n, size=n)
    gen = DatasetGenerator(data.x_train, s.batch_size, rng, targets=_one_hot(data.y_train, data.n_classes), rows=boot)
    curve = _fit(ctx, f"member_{k}", f"member {k + 1}/{s.members}", net, supervised_objective(net), gen,
                 _steps(s.member_passes, n, s.batch_size))
    return net, curve


def train_members(ctx):
    """The ensemble members (in ``ctx.jobs`` processes) and their progress curves: (list of MLP, list of (K, 3))."""
    ks = range(ctx.settings.members)
    in_workers(ctx, [("member", k) for k in ks])
    trained = [train_member(ctx, k) for k in ks]
    return [net for net, _ in trained], [curve for _, curve in trained]


def train_nade(ctx, fraction):
    """NADE on the binarised images of ``fraction``, raster column-wise pixel order (section 2.2.3)."""
    path = ctx.run.cache / f"nade_{fraction}.npz"
    if os.path.exists(path):
        return NADE.load(path)
    s = ctx.settings
    x_binary = datasets.binarize(ctx.train_images(fraction)[0])
    rng = ctx.run.rng(2, FRACTIONS.index(fraction))
    order = raster_column_order(*_image_shape(x_binary.shape[1]))
    nade = NADE(x_binary.shape[1], s.nade_hidden, rng, order=order)
    n_steps = _steps(s.nade_passes, x_binary.shape[0], s.batch_size)
    ckpt = str(ctx.run.ckpt / f"nade_{fraction}.npz") if s.checkpoints else None
    nade.fit(x_binary, rng, n_steps=n_steps, batch_size=s.batch_size, optimizer=Adadelta(),
             progress=s.progress, checkpoint=ckpt, settings=_model_settings(s), label=f"NADE ({fraction})")
    nade.save(path)
    if ckpt is not None and os.path.exists(ckpt):
        os.remove(ckpt)
    return nade


def _image_shape(d):
    side = int(round(np.sqrt(d)))
    return (side, side) if side * side == d else (1, d)


def train_student(ctx, fraction, kind, loss_name, seed=0):
    """One student (2.22: the members' architecture with the student's hidden sizes) and its progress curve.

    It minimises the average loss (2.3) over inputs from generator ``kind`` by the
    minibatch steps (2.7), the ensemble labelling each minibatch: mean probability
    (2.15) with cross entropy (2.17), log-mean-exp with derivative square error (2.18).
    On the dataset generator with ``settings.label_cache`` the labels of the
    training images are computed once and read from the cache (:func:`label_cache`).
    Passes count the fraction's images, whatever the generator; ``seed`` picks the replicate
    (:func:`_replicate`).
    """
    s = ctx.settings
    x_frac = ctx.train_images(fraction)[0]
    name, code = _replicate(f"{fraction}_{kind}_{loss_name}",
                            (4, FRACTIONS.index(fraction), GENERATORS.index(kind), LOSSES.index(loss_name)), seed)
    rng = ctx.run.rng(*code)
    net = _classifier(ctx, s.student_hidden, rng)
    loss = LOSS_CLASSES[loss_name]()
    objective_ = objective(net, loss, teacher_targets(net, ctx.teachers[loss_name], loss))
    if kind == "dataset" and s.label_cache:
        gen = LabelledDatasetGenerator(x_frac, label_cache(ctx, fraction, loss_name), s.batch_size, rng)
        objective_ = labelled_objective(net, loss)
    elif kind == "dataset":
        gen = DatasetGenerator(x_frac, s.batch_size, rng)
    elif kind == "nade":
        gen = NADEGenerator(train_nade(ctx, fraction), s.batch_size, rng)
    elif kind == "munge":
        gen = MungeGenerator(x_frac, s.munge_p, s.munge_s, s.batch_size, rng,
                             neighbours=munge_neighbours(ctx, fraction))
    else:
        gen = NoiseGenerator(x_frac.shape[1], s.batch_size, rng)
    curve = _fit(ctx, f"student_{name}", f"student {name}", net, objective_, gen,
                 _steps(s.student_passes, x_frac.shape[0], s.batch_size))
    return net, curve


def label_cache(ctx, fraction, loss_name):
    """The ensemble's labels of the fraction's training images for ``loss_name``, computed once (cached).

    Cross entropy reads the mean probabilities (2.15); derivative square error the
    log-mean-exp teacher's input derivatives of the log-probabilities (2.18) too
    (:mod:`kd_ref.distill.label_cache`: float32, memory-mapped, resumable).
    """
    needs = LOSS_CLASSES[loss_name].needs_derivatives
    return build_label_cache(ctx.run.cache / f"labels_{fraction}_{loss_name}", ctx.teachers[loss_name],
                             ctx.train_images(fraction)[0], needs, jobs=ctx.jobs, progress=ctx.settings.progress,
                             label=f"labels {fraction} ({LOSS_NAMES[loss_name]})")


def munge_neighbours(ctx, fraction):
    """Each row's nearest neighbour among the fraction's training images (S1.8), searched once and cached."""
    path = ctx.run.cache / f"munge_neighbours_{fraction}.npz"
    if path.exists():
        return npzfile.load(path, NEIGHBOURS_KIND, {1}, label="cache", required=("neighbours",))["neighbours"]
    neighbours = nearest_neighbours(ctx.train_images(fraction)[0])
    npzfile.save(path, NEIGHBOURS_KIND, 1, neighbours=neighbours)
    return neighbours


def train_baseline(ctx, fraction, seed=0):
    """The student architecture (2.22) trained on the fraction's true labels, and its progress curve.

    Cross entropy with one-hot targets (2.5, 2.17) on the dataset generator (2.21), for
    ``baseline_passes`` (default: ``member_passes``) passes: the yardstick each student is compared with.
    ``seed`` picks the replicate (:func:`_replicate`).
    """
    s, data = ctx.settings, ctx.data
    x_frac, y_frac = ctx.train_images(fraction)
    name, code = _replicate(f"baseline_{fraction}", (3, FRACTIONS.index(fraction)), seed)
    rng = ctx.run.rng(*code)
    net = _classifier(ctx, s.student_hidden, rng)
    gen = DatasetGenerator(x_frac, s.batch_size, rng, targets=_one_hot(y_frac, data.n_classes))
    passes = s.baseline_passes if s.baseline_passes is not None else s.member_passes
    curve = _fit(ctx, name, name.replace("_", " "), net, supervised_objective(net), gen,
                 _steps(passes, x_frac.shape[0], s.batch_size))
    return net, curve


#: The stages a worker process runs, by the first entry of a task: ("member", k), ("nade", fraction),
#: ("baseline", fraction, seed), ("student", fraction, generator, loss, seed).
STAGES = {"member": train_member, "nade": train_nade, "baseline": train_baseline, "student": train_student}


def in_workers(ctx, tasks):
    """With ``ctx.jobs`` > 1, run the stages ``tasks`` in that many processes, each stage caching what it trains
    (the caller then reads every result from the cache); with one job, nothing (the caller trains in order)."""
    if ctx.jobs > 1:
        run_tasks(_stage_task, tasks, ctx.jobs, shared=replace(ctx, jobs=1))


def _stage_task(ctx, task):
    STAGES[task[0]](ctx, *task[1:])


# -------------------------------------------------------------------- wall time
PROBE_STEPS = 3


def _seconds_per_step(draw, step, n=PROBE_STEPS):
    """Wall seconds of one training step (a draw and a ``step(batch)``): the median of ``n`` after one warm-up."""
    step(draw())
    times = []
    for _ in range(n):
        began = time.perf_counter()
        step(draw())
        times.append(time.perf_counter() - began)
    return float(np.median(times))


def estimate_seconds(ctx, students):
    """Wall seconds each component still to train will take on one process, from a short timed probe.

    ``students``: (fraction, generator, loss, seed) of every student replicate of the run.

    Times a few steps of each kind of training with networks of the run's sizes
    (random weights: a step costs the same) and one progress-curve evaluation, and
    multiplies by the steps the settings ask for; components already in the cache
    count 0, those with a checkpoint count whole. Returns {component name: seconds}.
    """
    s, data, cache = ctx.settings, ctx.data, ctx.run.cache
    rng = np.random.default_rng(0)                   # the probe's own: no stream of the run is touched
    x, c, batch = data.x_train, data.n_classes, s.batch_size
    probe = x[:max(2 * batch, 100)]
    t_one_hot = _one_hot(data.y_train[:probe.shape[0]], c)

    out = {}
    members = [_classifier(ctx, s.member_hidden, rng) for _ in range(s.members)]
    n_member = _steps(s.member_passes, x.shape[0], batch)
    todo = [k for k in range(s.members) if not (cache / f"member_{k}.npz").exists()]
    if todo:
        per, curve = _network_step(ctx, members[0], DatasetGenerator(probe, batch, rng, targets=t_one_hot),
                                  supervised_objective(members[0]))
        out.update({f"member_{k}": per * n_member + curve for k in todo})
    teachers = {"ce": EnsembleTeacher(members, combine="mean"), "dse": EnsembleTeacher(members, combine="log_mean_exp")}
    labels, labelling, per_step = {}, {}, {}
    if "dataset" in s.generators and s.label_cache:
        for loss_name in s.losses:                     # seconds per image of a label cache
            began = time.perf_counter()
            labels[loss_name] = label_chunk(teachers[loss_name], probe, LOSS_CLASSES[loss_name].needs_derivatives)
            labelling[loss_name] = (time.perf_counter() - began) / probe.shape[0]
    for fraction in [f for f in FRACTIONS if f in s.fractions]:
        n = ctx.sizes[fraction]
        if "nade" in s.generators and not (cache / f"nade_{fraction}.npz").exists():
            nade = NADE(x.shape[1], s.nade_hidden, rng)
            binary = DatasetGenerator(datasets.binarize(probe), batch, rng)
            out[f"nade_{fraction}"] = _seconds_per_step(
                binary, lambda b: nade.grad(b, weights=np.full(len(b), 1.0 / len(b)), input_grads=False)) \
                * _steps(s.nade_passes, n, batch)
        baselines = [_replicate(f"baseline_{fraction}", (), seed)[0] for seed in range(s.student_seeds)]
        baselines = [name for name in baselines if not (cache / f"{name}.npz").exists()]
        if baselines:
            net = _classifier(ctx, s.student_hidden, rng)
            per, curve = _network_step(ctx, net, DatasetGenerator(probe, batch, rng, targets=t_one_hot),
                                      supervised_objective(net))
            passes = s.baseline_passes if s.baseline_passes is not None else s.member_passes
            out.update({name: per * _steps(passes, n, batch) + curve for name in baselines})
        for f, kind, loss_name, seed in students:
            name = _replicate(f"{f}_{kind}_{loss_name}", (), seed)[0]
            if f != fraction or (cache / f"student_{name}.npz").exists():
                continue
            cached = kind == "dataset" and s.label_cache
            if cached and not (cache / f"labels_{fraction}_{loss_name}").exists():
                out[f"labels_{fraction}_{loss_name}"] = labelling[loss_name] * n
            if (kind, loss_name) not in per_step:     # the same for both fractions: probed once
                per_step[kind, loss_name] = _student_step(ctx, kind, loss_name, teachers, probe, labels, rng)
            per, curve = per_step[kind, loss_name]
            out[f"student_{name}"] = per * _steps(s.student_passes, n, batch) + curve
    return out


def _network_step(ctx, net, gen, objective_):
    """(seconds per ADADELTA step of ``net`` on ``gen``'s minibatches, seconds of its progress curve)."""
    opt = Adadelta()

    def step(batch):
        opt.step(net.params, objective_(batch)[1])

    began = time.perf_counter()
    log_probs_of(net, ctx.curve_data()[0])
    curve = (time.perf_counter() - began) * (ctx.settings.curve_points + 1)
    return _seconds_per_step(gen, step), curve


def _student_step(ctx, kind, loss_name, teachers, probe, labels, rng):
    """:func:`_network_step` of a student of generator ``kind``, labelled as :func:`train_student` labels it."""
    s = ctx.settings
    net, loss = _classifier(ctx, s.student_hidden, rng), LOSS_CLASSES[loss_name]()
    objective_ = objective(net, loss, teacher_targets(net, teachers[loss_name], loss))
    if kind == "dataset" and s.label_cache:
        gen = LabelledDatasetGenerator(probe, LabelCache(*labels[loss_name]), s.batch_size, rng)
        objective_ = labelled_objective(net, loss)
    elif kind == "nade":
        gen = NADEGenerator(NADE(probe.shape[1], s.nade_hidden, rng), s.batch_size, rng)
    elif kind == "noise":
        gen = NoiseGenerator(probe.shape[1], s.batch_size, rng)
    else:                                            # dataset without the label cache; MUNGE's draws cost alike
        gen = DatasetGenerator(probe, s.batch_size, rng)
    return _network_step(ctx, net, gen, objective_)


def print_estimate(ctx, students):
    """Probe (:func:`estimate_seconds`) and print the wall time the run still needs; returns the estimate."""
    began = time.perf_counter()
    parts = estimate_seconds(ctx, students)
    total = sum(parts.values())
    groups = {}
    for name, seconds in parts.items():
        group = _GROUPS[name.split("_")[0]]
        groups[group] = groups.get(group, 0.0) + seconds
    print(f"estimated wall time still needed on one process (a {time.perf_counter() - began:.0f} s probe; "
          f"other work on the machine slows it): {_hours(total)}"
          + (" = " + ", ".join(f"{g} {_hours(t)}" for g, t in groups.items()) if parts else ""), flush=True)
    if parts:
        longest = sorted(parts.items(), key=lambda kv: -kv[1])[:4]
        print("  longest: " + ", ".join(f"{n} {_hours(t)}" for n, t in longest)
              + (f"; with --jobs {ctx.jobs} at best about {_hours(total / ctx.jobs)}" if ctx.jobs > 1 else ""),
              flush=True)
    return parts


_GROUPS = {"member": "members", "nade": "NADEs", "baseline": "baselines", "labels": "label caches",
           "student": "students"}


def _hours(seconds):
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


# --------------------------------------------------------------------- outputs
def _pm(value, se, digits):
    return f"{value:.{digits}f} ± {se:.{digits}f}"


def write_tables(results, out_dir):
    """Markdown and CSV tables from a results dict; returns the Markdown text."""
    lines = [f"# Model compression ({results['data']}, {results['settings']['mode']} mode)", ""]
    ens, mm = results["ensemble"], results["members_mean"]
    lines += ["## Teacher and baselines", "", "| model | train data | accuracy [%] | av. log probability |",
              "| --- | --- | --- | --- |",
              f"| ensemble of {results['settings']['members']} | all | {_pm(ens['accuracy'], ens['accuracy_2se'], 2)} | "
              f"{_pm(ens['log_prob'], ens['log_prob_2se'], 4)} |",
              f"| members' mean (± 2 SE over members) | bootstrap | {_pm(mm['accuracy'], mm['accuracy_2se'], 2)} | "
              f"{_pm(mm['log_prob'], mm['log_prob_2se'], 4)} |"]
    for frac, b in results["baselines"].items():
        lines.append(f"| baseline (student net, true labels) | {results['train_sizes'][frac]} | "
                     f"{_pm(b['accuracy'], b['accuracy_2se'], 2)} | {_pm(b['log_prob'], b['log_prob_2se'], 4)} |")
    rows = []
    for metric, title, digits in (("accuracy", "Test accuracy [%]", 2), ("log_prob", "Average test log probability", 4)):
        lines += ["", f"## Students: {title}", "", "| data generator | train data | cross entropy | deriv. sq. error |",
                  "| --- | --- | --- | --- |"]
        for gen in results["settings"]["generators"]:
            for frac in results["settings"]["fractions"]:
                cells = []
                for loss in ("ce", "dse"):
                    s = results["students"].get(f"{frac}/{gen}/{loss}")
                    cells.append(_pm(s[metric], s[metric + "_2se"], digits) if s else "—")
                lines.append(f"| {GENERATOR_NAMES[gen]} | {results['train_sizes'][frac]} | {cells[0]} | {cells[1]} |")
    lines += ["", "## Paired comparison: student − baseline (same test images, ± 2 SE of the paired differences)", "",
              "| data generator | train data | loss | Δ accuracy [points] | Δ av. log probability |",
              "| --- | --- | --- | --- | --- |"]
    for key, d in results["paired"].items():
        frac, gen, loss = key.split("/")
        lines.append(f"| {GENERATOR_NAMES[gen]} | {results['train_sizes'][frac]} | {LOSS_NAMES[loss]} | "
                     f"{_pm(d['accuracy'], d['accuracy_2se'], 2)} | {_pm(d['log_prob'], d['log_prob_2se'], 4)} |")
    lines += _replicate_lines(results, rows)
    for key, s in results["students"].items():
        frac, gen, loss = key.split("/")
        p = results["paired"][key]
        rows.append({"kind": "student", "fraction": frac, "train_images": results["train_sizes"][frac],
                     "generator": gen, "loss": loss, **s,
                     **{f"paired_{k}": v for k, v in p.items()}})
    for frac, b in results["baselines"].items():
        rows.append({"kind": "baseline", "fraction": frac, "train_images": results["train_sizes"][frac], **b})
    rows.append({"kind": "ensemble", "fraction": "full", "train_images": results["train_sizes"]["full"], **ens})
    rows.append({"kind": "members_mean", "fraction": "full", "train_images": results["train_sizes"]["full"], **mm})
    text = "\n".join(lines) + "\n"
    (out_dir / "tables.md").write_text(text)
    keys = ["kind", "fraction", "train_images", "generator", "loss", "accuracy", "accuracy_2se", "log_prob",
            "log_prob_2se", "paired_accuracy", "paired_accuracy_2se", "paired_log_prob", "paired_log_prob_2se"]
    with open(out_dir / "tables.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in keys})
    return text


def _seed_mean(scores):
    """{accuracy, accuracy_2se, log_prob, log_prob_2se} over replicates: means and 2 SE between them."""
    out = {}
    for metric in ("accuracy", "log_prob"):
        out[metric], out[metric + "_2se"] = mean_2se([r[metric] for r in scores])
    return out


def _replicate_lines(results, rows):
    """The table over student seeds (Markdown lines; a CSV row per group appended to ``rows``), if any."""
    reps = results.get("replicates")
    if not reps:
        return []
    k = results["settings"]["student_seeds"]
    lines = ["", f"## Across {k} student seeds: test accuracy [%] (mean ± 2 SE over the seeds)", "",
             "| data generator | train data | cross entropy | deriv. sq. error | deriv. sq. error − cross entropy |",
             "| --- | --- | --- | --- | --- |"]
    means = {key: _seed_mean(scores) for key, scores in reps.items()}
    for key, m in means.items():
        parts = key.split("/")
        rows.append({"kind": "seeds_mean", "fraction": parts[0], "train_images": results["train_sizes"][parts[0]],
                     "generator": parts[1] if len(parts) == 3 else "", "loss": parts[2] if len(parts) == 3 else "",
                     **m})
    for frac in results["settings"]["fractions"]:
        if f"{frac}/baseline" not in means:
            continue
        n, b = results["train_sizes"][frac], means[f"{frac}/baseline"]
        lines.append(f"| baseline (true labels) | {n} | {_pm(b['accuracy'], b['accuracy_2se'], 2)} | | |")
        for gen in results["settings"]["generators"]:
            ce, dse = means.get(f"{frac}/{gen}/ce"), means.get(f"{frac}/{gen}/dse")
            cells = [_pm(m["accuracy"], m["accuracy_2se"], 2) if m else "—" for m in (ce, dse)]
            # independent replicates: the 2 SE of a difference of means adds in quadrature
            diff = _pm(dse["accuracy"] - ce["accuracy"], np.hypot(dse["accuracy_2se"], ce["accuracy_2se"]), 2) \
                if ce and dse else "—"
            lines.append(f"| {GENERATOR_NAMES[gen]} | {n} | {cells[0]} | {cells[1]} | {diff} |")
    return lines


def plot_curves(results, out_dir):
    """One PNG per fraction: test accuracy and log-probability against examples seen."""
    import matplotlib.pyplot as plt

    paths = []
    ens = results["ensemble"]
    for frac in results["settings"]["fractions"]:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for key, pts in results["curves"].items():
            parts = key.split("/")
            if parts[0] != frac:
                continue
            pts = np.asarray(pts)
            lab = "baseline (true labels)" if parts[1] == "baseline" else \
                f"{GENERATOR_NAMES[parts[1]]}, {LOSS_NAMES[parts[2]]}"
            style = dict(color="k", ls="--") if parts[1] == "baseline" else {}
            axes[0].plot(pts[:, 0], pts[:, 1], label=lab, **style)
            axes[1].plot(pts[:, 0], pts[:, 2], label=lab, **style)
        for ax, metric, name in ((axes[0], "accuracy", "test accuracy [%]"), (axes[1], "log_prob", "av. test log prob")):
            ax.axhline(ens[metric], color="grey", lw=0.8, label="ensemble")
            ax.set_xlabel("examples seen")
            ax.set_ylabel(name)
            ax.set_xscale("symlog", linthresh=max(1, results["settings"]["batch_size"]))
            ax.set_xlim(left=0)
        axes[0].set_ylim(0, 100)
        lo = min(np.min(np.asarray(p)[:, 2]) for k, p in results["curves"].items() if k.startswith(frac + "/"))
        axes[1].set_ylim(max(lo, -3.0), 0.05)
        axes[1].legend(fontsize=7, loc="lower right")
        fig.suptitle(f"Progress, {frac} training data ({results['train_sizes'][frac]} images)")
        fig.tight_layout()
        path = out_dir / f"curves_{frac}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(str(path))
    return paths


def plot_samples(panels, shape, path):
    """One figure with a titled grid per panel: list of (title, images (n, D))."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, images) in zip(axes[0], panels):
        ax.imshow(image_grid(images, shape, cols=6), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


# ------------------------------------------------------------------------- run
def run(settings, out_dir, rng, data=None, jobs=1):
    """Run the experiment; returns a results dict (also written to ``OUT/results.json``).

    Parameters
    ----------
    settings : Settings
    out_dir : str or Path
    rng : numpy.random.Generator
        Fixes every random choice (one base seed drawn from it; each component
        then has its own stream, so cached components do not shift the others).
    data : Data, optional
        Images to use instead of :func:`load_data` (grey levels in [0, 1], rows
        raster row-major); ``n_train``/``n_test`` still cut them.
    jobs : int
        Processes for the parts that do not depend on one another (the members; the
        NADEs and baselines; the students; the chunks of the label caches); the
        results do not depend on it (:mod:`kd_ref.jobs`).

    Returns
    -------
    dict
        ``ensemble``, ``members`` (list), ``members_mean``, ``baselines`` {fraction},
        ``students`` {"fraction/generator/loss"}, ``paired`` (same keys, student −
        baseline), ``curves`` {"fraction/generator/loss" or "fraction/baseline":
        (K, 3) array of examples seen, accuracy, log prob}, ``train_sizes``,
        ``files``, ``seconds``, ``settings``, ``data``; score entries are dicts with
        accuracy, accuracy_2se, log_prob, log_prob_2se.
    """
    settings = settings.validate()
    jobs = check_positive_int(jobs, "jobs")
    run = Run(out_dir, rng, _model_settings(settings))
    if data is None:
        data = load_data(settings, run.rng(0))
    elif settings.n_train or settings.n_test:
        n_tr, n_te = settings.n_train or len(data.y_train), settings.n_test or len(data.y_test)
        data = replace(data, x_train=data.x_train[:n_tr], y_train=data.y_train[:n_tr], x_test=data.x_test[:n_te],
                       y_test=data.y_test[:n_te])
    ctx = Context(settings, run, data, jobs)
    sizes = ctx.sizes
    fractions = [f for f in FRACTIONS if f in settings.fractions]
    students = [(f, g, l) for f in fractions for g in GENERATORS if g in settings.generators
                for l in LOSSES if l in settings.losses]

    seeds = range(settings.student_seeds)
    if settings.mode == "thesis":
        print_estimate(ctx, [key + (seed,) for key in students for seed in seeds])
    members, member_curves = train_members(ctx)
    member_scores = [score(log_probs_of(m, data.x_test), data.y_test) for m in members]
    # mean probability (2.15) for cross entropy, log-mean-exp (2.18) for derivative square error: the same mean
    # probability, but its log formed by log-sum-exp, with no log 0 = -inf when every member gives the true class a
    # probability that underflows
    ctx.teachers = {"ce": EnsembleTeacher(members, combine="mean"),
                    "dse": EnsembleTeacher(members, combine="log_mean_exp")}
    ens = score(log_probs_of(ctx.teachers["dse"], data.x_test), data.y_test)
    acc_m, acc_se = mean_2se([s.accuracy for s in member_scores])
    lp_m, lp_se = mean_2se([s.log_prob for s in member_scores])
    results = {"settings": _settings_dict(settings), "data": data.name, "ensemble": _score_dict(ens),
               "members": [_score_dict(s) for s in member_scores],
               "members_mean": {"accuracy": acc_m, "accuracy_2se": acc_se, "log_prob": lp_m, "log_prob_2se": lp_se},
               "baselines": {}, "students": {}, "paired": {}, "curves": {}, "train_sizes": sizes}
    print(f"ensemble of {len(members)}: {ens.summary()}  (members' mean accuracy {acc_m:.2f} %)", flush=True)

    # what the students share, made once here; then the parts in ctx.jobs processes (nothing with one job)
    for fraction, kind, loss in students:
        if kind == "dataset" and settings.label_cache:
            label_cache(ctx, fraction, loss)
        elif kind == "munge":
            munge_neighbours(ctx, fraction)
    in_workers(ctx, [("nade", f) for f in fractions if "nade" in settings.generators]
               + [("baseline", f, seed) for f in fractions for seed in seeds])
    in_workers(ctx, [("student", *key, seed) for key in sorted(students, key=_student_cost, reverse=True)
                     for seed in seeds])

    panels = [("training images", data.x_train[:36]),
              ("binarised (> 0.5)", datasets.binarize(data.x_train[:36]))]
    for fraction in fractions:
        fi = FRACTIONS.index(fraction)
        if "nade" in settings.generators:
            xs, ys = train_nade(ctx, fraction).sample(36, run.rng(5, fi))
            panels += [(f"NADE ({fraction}) samples", xs), (f"NADE ({fraction}) conditional probs", ys)]
        base_net, base_curve = train_baseline(ctx, fraction)
        base_score = score(log_probs_of(base_net, data.x_test), data.y_test)
        results["baselines"][fraction] = _score_dict(base_score)
        results["curves"][f"{fraction}/baseline"] = base_curve
        print(f"baseline ({fraction}, {sizes[fraction]} images): {base_score.summary()}", flush=True)
        for key in students:
            if key[0] != fraction:
                continue
            net, curve = train_student(ctx, *key)
            s = score(log_probs_of(net, data.x_test), data.y_test)
            name = "/".join(key)
            results["students"][name] = _score_dict(s)
            results["paired"][name] = paired_difference(s, base_score)
            results["curves"][name] = curve
            print(f"student {name}: {s.summary()}", flush=True)
        if settings.student_seeds > 1:
            _score_replicates(ctx, fraction, students, results)

    run.files["tables_md"] = str(run.out / "tables.md")
    run.files["tables_csv"] = str(run.out / "tables.csv")
    results["tables"] = write_tables(results, run.out)
    if settings.figures:
        run.files["curves"] = plot_curves(results, run.out)
        run.files["samples"] = plot_samples(panels, data.image_shape, run.out / "samples.png")
    results["member_curves"] = member_curves
    return run.finish(results)


def _score_replicates(ctx, fraction, students, results):
    """Test scores of every replicate (seed 0 included) of the fraction's baseline and students, into
    ``results["replicates"]`` {"fraction/baseline" or "fraction/generator/loss": [score dict per seed]}."""
    data, reps = ctx.data, results.setdefault("replicates", {})
    parts = [(f"{fraction}/baseline", functools.partial(train_baseline, ctx, fraction))]
    parts += [("/".join(key), functools.partial(train_student, ctx, *key)) for key in students if key[0] == fraction]
    for name, train_one in parts:
        reps[name] = [_score_dict(score(log_probs_of(train_one(seed=seed)[0], data.x_test), data.y_test))
                      for seed in range(ctx.settings.student_seeds)]
        accuracy = mean_2se([r["accuracy"] for r in reps[name]])
        print(f"{name}, {len(reps[name])} seeds: accuracy {_pm(*accuracy, 2)} % (± 2 SE over seeds)", flush=True)


def _student_cost(key):
    """Rough order of a student's training time, for starting the longest first: derivative matching costs
    about 2C backprops a step, the teacher's labels (not cached but for the dataset generator) more still."""
    fraction, kind, loss = key
    return (fraction == "full", loss == "dse", kind != "dataset")


def _settings_dict(settings):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()}


# settings that change what a cached model is; the others (which parts to run, figures) may differ between runs
_MODEL_KEYS = ("data", "n_train", "n_test", "small_fraction", "members", "member_hidden", "member_passes",
               "student_hidden", "student_passes", "baseline_passes", "batch_size", "nade_hidden", "nade_passes",
               "label_cache")


# ------------------------------------------------------------------------- CLI
def check_data(settings):
    """Raise FileNotFoundError or ValueError (naming the file) unless the data ``settings`` ask for can be read.

    ``data='mnist'`` needs a well-formed ``mnist.npz``; ``'auto'`` uses it when present,
    so a present but damaged file is refused too rather than silently replaced.
    """
    if settings.data == "mnist" or (settings.data == "auto" and datasets.mnist_available()):
        datasets.load_mnist(scale=False)


#: Settings fields and the options that set them, for error messages.
OPTIONS = {"data": "--data", "members": "--members", "member_passes": "--member-passes",
           "student_passes": "--student-passes", "baseline_passes": "--baseline-passes",
           "nade_hidden": "--nade-hidden", "nade_passes": "--nade-passes", "n_train": "--n-train",
           "n_test": "--n-test", "generators": "--generators", "losses": "--losses", "fractions": "--fraction",
           "student_seeds": "--student-seeds"}


def main(argv=None):
    parser = ArgumentParser(prog="kd-ref run compress", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small settings, minutes (default)")
    mode.add_argument("--thesis", action="store_true", help="the thesis settings (hours; resumable)")
    parser.add_argument("--fraction", choices=["small", "full", "both"], default="both",
                        help="train students on the first 10%% of the images, on all, or both (default)")
    parser.add_argument("--out", type=out_folder, default="./kd_ref_runs/compress",
                        help="output folder (default %(default)s)")
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--data", choices=["auto", "mnist", "synthetic"], help="data source (default: mode's)")
    parser.add_argument("--members", type=int, help="ensemble size")
    parser.add_argument("--member-passes", type=float, help="passes over the data per member")
    parser.add_argument("--student-passes", type=float, help="passes' worth of generated examples per student")
    parser.add_argument("--baseline-passes", type=float, help="passes for the baselines (default: member passes)")
    parser.add_argument("--nade-hidden", type=int, help="NADE hidden units")
    parser.add_argument("--nade-passes", type=float, help="passes over the binarised data for the NADE")
    parser.add_argument("--n-train", type=int, help="training images (0 = all)")
    parser.add_argument("--n-test", type=int, help="test images (0 = all, else at least 2)")
    parser.add_argument("--generators", nargs="+", choices=GENERATORS)
    parser.add_argument("--losses", nargs="+", choices=LOSSES)
    parser.add_argument("--student-seeds", type=int,
                        help="replicates of every student and baseline, each from its own random stream (default 1; "
                             "seed 0 is the single-seed run's, so a larger value in the same folder adds the others)")
    parser.add_argument("--no-label-cache", action="store_true",
                        help="let the ensemble label every minibatch of the dataset generator afresh (slower; the "
                             "labels are then float64, not float32)")
    parser.add_argument("--jobs", type=int_at_least(1), default=1,
                        help="processes for the independent parts: members, NADEs and baselines, students "
                             "(default 1; results do not depend on it)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    overrides = {"fractions": FRACTIONS if args.fraction == "both" else (args.fraction,)}
    for name in ("data", "members", "member_passes", "student_passes", "baseline_passes", "nade_hidden",
                 "nade_passes", "n_train", "n_test", "student_seeds"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.generators:
        overrides["generators"] = tuple(args.generators)
    if args.losses:
        overrides["losses"] = tuple(args.losses)
    overrides["progress"] = not args.no_progress
    overrides["label_cache"] = not args.no_label_cache
    settings = (Settings.thesis if args.thesis else Settings.quick)(**overrides)
    return run_from_cli(parser, settings, OPTIONS, check_data, functools.partial(run, jobs=args.jobs), args.out,
                        args.seed)
