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
   differences, progress curves and sample grids (PNG) and ``results.json``.

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
import os
from dataclasses import asdict, dataclass, replace

import numpy as np

from .. import datasets, npzfile, toydata
from ..cli import ArgumentParser, int_at_least, out_folder
from ..distill import objective
from ..distill.munge import MungeGenerator, nearest_neighbours
from ..distill.compression import (LOSSES as LOSS_CLASSES, DatasetGenerator, EnsembleTeacher, NADEGenerator,
                                   NoiseGenerator, log_probs_of, supervised_objective, teacher_targets)
from ..metrics import mean_2se, paired_difference, score
from ..mlp import MLP
from ..nade import NADE, raster_column_order
from .._validation import check_in_range, check_positive_int
from ..optim import Adadelta, check_state_keys, train
from ._report import Run, image_grid, run_from_cli

GENERATORS = ("dataset", "nade", "noise", "munge")      # munge: S1.8, beside the thesis's three (2.21)
LOSSES = ("ce", "dse")
FRACTIONS = ("full", "small")
LOSS_NAMES = {"ce": "cross entropy", "dse": "deriv. sq. error"}
GENERATOR_NAMES = {"dataset": "dataset", "nade": "NADE", "noise": "Gaussian noise", "munge": "MUNGE"}
CURVE_KIND = "kd_ref.compress.curve"
NEIGHBOURS_KIND = "kd_ref.compress.munge_neighbours"


@dataclass
class Settings:
    """Everything that defines a run. ``quick()`` and ``thesis()`` give the two presets.

    ``n_train``/``n_test`` = 0 means all images; the ``small`` fraction is the first
    ``small_fraction`` of the ``n_train`` training images. Passes count examples:
    a student of the ``small`` fraction with ``student_passes`` = 40 sees
    40 x (number of small-fraction images) generated inputs, whatever the generator;
    its NADE and baseline likewise train for ``nade_passes`` and ``baseline_passes``
    passes over the small-fraction images.

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
    curve_points: int = 10
    curve_test: int = 1000             # test images used for the progress curves (0 = all)
    checkpoints: bool = False
    figures: bool = True
    progress: bool = True

    @classmethod
    def quick(cls, **overrides):
        return replace(cls(), **overrides)

    @classmethod
    def thesis(cls, **overrides):
        base = cls(mode="thesis", data="mnist", n_train=0, n_test=0, members=30, member_passes=20.0,
                   student_passes=40.0, nade_hidden=500, nade_passes=10.0, curve_points=40, curve_test=0,
                   checkpoints=True)
        return replace(base, **overrides)

    def validate(self):
        """Check every field (errors name the field); return ``self`` unchanged."""
        for name, allowed in (("fractions", FRACTIONS), ("generators", GENERATORS), ("losses", LOSSES)):
            value = getattr(self, name)
            if not (isinstance(value, (tuple, list)) and value and all(v in allowed for v in value)):
                raise ValueError(f"{name}: expected a non-empty subset of {allowed}, received {value!r}")
        if self.data not in ("auto", "mnist", "synthetic"):
            raise ValueError(f"data: expected 'auto', 'mnist' or 'synthetic', received {self.data!r}")
        check_in_range(self.small_fraction, "small_fraction", 0, 1, low_open=True)
        check_in_range(self.munge_p, "munge_p", 0.0, 1.0)
        check_in_range(self.munge_s, "munge_s", 0.0, np.inf, low_open=True, high_open=True)
        for name in ("members", "batch_size", "nade_hidden", "curve_points"):
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


def _fit(net, minibatch_objective, gen, n_steps, settings, cache_path, ckpt_path, curve_data, label):
    """Train ``net`` (or load it from ``cache_path``), returning its progress curve as (K, 3).

    With ``settings.checkpoints`` the run is checkpointed at ``ckpt_path``, generator
    and progress curve included, so an interrupted run resumes to the same numbers.
    """
    curve_file = str(cache_path) + ".curve.npz"
    if os.path.exists(cache_path):
        net.restore(cache_path)
        return npzfile.load(curve_file, CURVE_KIND, {1}, label="cache", required=("points",))["points"]
    ckpt = str(ckpt_path) if settings.checkpoints else None
    curve = _Curve(net, *curve_data)
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


# --------------------------------------------------------------------- stages
def train_members(data, settings, run):
    """Ensemble members, each trained on a bootstrap resample of all training images (2.14)."""
    sizes = [data.x_train.shape[1], *settings.member_hidden, data.n_classes]
    n = data.x_train.shape[0]
    members, curves = [], []
    t = _one_hot(data.y_train, data.n_classes)
    for k in range(settings.members):
        rng = run.rng(1, k)
        net = MLP(sizes, ["relu", "relu", "log_softmax"], rng)
        boot = rng.integers(0, n, size=n)
        gen = DatasetGenerator(data.x_train, settings.batch_size, rng, targets=t, rows=boot)
        curves.append(_fit(net, supervised_objective(net), gen, _steps(settings.member_passes, n, settings.batch_size),
                           settings, run.cache / f"member_{k}.npz", run.ckpt / f"member_{k}.npz",
                           _curve_data(data, settings), f"member {k + 1}/{settings.members}"))
        members.append(net)
    return members, curves


def _curve_data(data, settings):
    m = settings.curve_test or data.x_test.shape[0]
    return data.x_test[:m], data.y_test[:m]


def train_nade(x_binary, settings, run, fraction_index, label):
    """NADE on binarised images, raster column-wise pixel order (section 2.2.3)."""
    path = run.cache / f"nade_{label}.npz"
    if os.path.exists(path):
        return NADE.load(path)
    rng = run.rng(2, fraction_index)
    order = raster_column_order(*_image_shape(x_binary.shape[1]))
    nade = NADE(x_binary.shape[1], settings.nade_hidden, rng, order=order)
    n_steps = _steps(settings.nade_passes, x_binary.shape[0], settings.batch_size)
    ckpt = str(run.ckpt / f"nade_{label}.npz") if settings.checkpoints else None
    nade.fit(x_binary, rng, n_steps=n_steps, batch_size=settings.batch_size, optimizer=Adadelta(),
             progress=settings.progress, checkpoint=ckpt, settings=_model_settings(settings),
             label=f"NADE ({label})")
    nade.save(path)
    if ckpt is not None and os.path.exists(ckpt):
        os.remove(ckpt)
    return nade


def _image_shape(d):
    side = int(round(np.sqrt(d)))
    return (side, side) if side * side == d else (1, d)


def train_student(kind, loss_name, teachers, x_frac, nade, data, settings, run, code, label):
    """One student (2.22: the members' architecture with the student's hidden sizes) and its progress curve.

    It minimises the average loss (2.3) over inputs from generator ``kind`` by the
    minibatch steps (2.7), the ensemble labelling each minibatch: mean probability
    (2.15) with cross entropy (2.17), log-mean-exp with derivative square error (2.18).
    Passes count ``x_frac`` images, whatever the generator. ``teachers`` maps each
    loss to its ensemble teacher; ``code`` names the student's random stream.
    """
    sizes = [data.x_train.shape[1], *settings.student_hidden, data.n_classes]
    rng = run.rng(4, *code)
    net = MLP(sizes, ["relu", "relu", "log_softmax"], rng)
    if kind == "dataset":
        gen = DatasetGenerator(x_frac, settings.batch_size, rng)
    elif kind == "nade":
        gen = NADEGenerator(nade, settings.batch_size, rng)
    elif kind == "munge":
        gen = MungeGenerator(x_frac, settings.munge_p, settings.munge_s, settings.batch_size, rng,
                             neighbours=munge_neighbours(x_frac, run, label.split("_")[0]))
    else:
        gen = NoiseGenerator(sizes[0], settings.batch_size, rng)
    loss = LOSS_CLASSES[loss_name]()
    n_steps = _steps(settings.student_passes, x_frac.shape[0], settings.batch_size)
    curve = _fit(net, objective(net, loss, teacher_targets(net, teachers[loss_name], loss)), gen, n_steps, settings,
                 run.cache / f"student_{label}.npz", run.ckpt / f"student_{label}.npz", _curve_data(data, settings),
                 f"student {label}")
    return net, curve


def munge_neighbours(x_frac, run, fraction):
    """Each row's nearest neighbour in ``x_frac`` (S1.8), searched once per training set and cached."""
    path = run.cache / f"munge_neighbours_{fraction}.npz"
    if path.exists():
        return npzfile.load(path, NEIGHBOURS_KIND, {1}, label="cache", required=("neighbours",))["neighbours"]
    neighbours = nearest_neighbours(x_frac)
    npzfile.save(path, NEIGHBOURS_KIND, 1, neighbours=neighbours)
    return neighbours


def train_baseline(x_frac, y_frac, data, settings, run, fraction_index, label):
    """The student architecture (2.22) trained on the true labels of ``x_frac``, and its progress curve.

    Cross entropy with one-hot targets (2.5, 2.17) on the dataset generator (2.21), for
    ``baseline_passes`` (default: ``member_passes``) passes: the yardstick each student is compared with.
    """
    sizes = [data.x_train.shape[1], *settings.student_hidden, data.n_classes]
    rng = run.rng(3, fraction_index)
    net = MLP(sizes, ["relu", "relu", "log_softmax"], rng)
    gen = DatasetGenerator(x_frac, settings.batch_size, rng, targets=_one_hot(y_frac, data.n_classes))
    passes = settings.baseline_passes if settings.baseline_passes is not None else settings.member_passes
    curve = _fit(net, supervised_objective(net), gen, _steps(passes, x_frac.shape[0], settings.batch_size), settings,
                 run.cache / f"baseline_{label}.npz", run.ckpt / f"baseline_{label}.npz",
                 _curve_data(data, settings), f"baseline {label}")
    return net, curve


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
def run(settings, out_dir, rng, data=None):
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
    run = Run(out_dir, rng, _model_settings(settings))
    if data is None:
        data = load_data(settings, run.rng(0))
    elif settings.n_train or settings.n_test:
        n_tr, n_te = settings.n_train or len(data.y_train), settings.n_test or len(data.y_test)
        data = replace(data, x_train=data.x_train[:n_tr], y_train=data.y_train[:n_tr], x_test=data.x_test[:n_te],
                       y_test=data.y_test[:n_te])
    n_full = data.x_train.shape[0]
    n_small = max(1, int(round(settings.small_fraction * n_full)))
    sizes = {"full": n_full, "small": n_small}

    members, member_curves = train_members(data, settings, run)
    member_scores = [score(log_probs_of(m, data.x_test), data.y_test) for m in members]
    # mean probability (2.15) for cross entropy, log-mean-exp (2.18) for derivative square error: the same mean
    # probability, but its log formed by log-sum-exp, with no log 0 = -inf when every member gives the true class a
    # probability that underflows
    teachers = {"ce": EnsembleTeacher(members, combine="mean"), "dse": EnsembleTeacher(members, combine="log_mean_exp")}
    ens = score(log_probs_of(teachers["dse"], data.x_test), data.y_test)
    acc_m, acc_se = mean_2se([s.accuracy for s in member_scores])
    lp_m, lp_se = mean_2se([s.log_prob for s in member_scores])
    results = {"settings": _settings_dict(settings), "data": data.name, "ensemble": _score_dict(ens),
               "members": [_score_dict(s) for s in member_scores],
               "members_mean": {"accuracy": acc_m, "accuracy_2se": acc_se, "log_prob": lp_m, "log_prob_2se": lp_se},
               "baselines": {}, "students": {}, "paired": {}, "curves": {}, "train_sizes": sizes}
    print(f"ensemble of {len(members)}: {ens.summary()}  (members' mean accuracy {acc_m:.2f} %)", flush=True)

    panels = [("training images", data.x_train[:36]),
              ("binarised (> 0.5)", datasets.binarize(data.x_train[:36]))]
    for fi, frac in enumerate(FRACTIONS):
        if frac not in settings.fractions:
            continue
        x_frac, y_frac = data.x_train[:sizes[frac]], data.y_train[:sizes[frac]]
        nade = None
        if "nade" in settings.generators:
            nade = train_nade(datasets.binarize(x_frac), settings, run, fi, frac)
            xs, ys = nade.sample(36, run.rng(5, fi))
            panels += [(f"NADE ({frac}) samples", xs), (f"NADE ({frac}) conditional probs", ys)]
        base_net, base_curve = train_baseline(x_frac, y_frac, data, settings, run, fi, frac)
        base_score = score(log_probs_of(base_net, data.x_test), data.y_test)
        results["baselines"][frac] = _score_dict(base_score)
        results["curves"][f"{frac}/baseline"] = base_curve
        print(f"baseline ({frac}, {sizes[frac]} images): {base_score.summary()}", flush=True)
        for gi, gen in enumerate(GENERATORS):
            if gen not in settings.generators:
                continue
            for li, loss in enumerate(LOSSES):
                if loss not in settings.losses:
                    continue
                key = f"{frac}/{gen}/{loss}"
                net, curve = train_student(gen, loss, teachers, x_frac, nade, data, settings, run, (fi, gi, li),
                                           key.replace("/", "_"))
                s = score(log_probs_of(net, data.x_test), data.y_test)
                results["students"][key] = _score_dict(s)
                results["paired"][key] = paired_difference(s, base_score)
                results["curves"][key] = curve
                print(f"student {key}: {s.summary()}", flush=True)

    run.files["tables_md"] = str(run.out / "tables.md")
    run.files["tables_csv"] = str(run.out / "tables.csv")
    results["tables"] = write_tables(results, run.out)
    if settings.figures:
        run.files["curves"] = plot_curves(results, run.out)
        run.files["samples"] = plot_samples(panels, data.image_shape, run.out / "samples.png")
    results["member_curves"] = member_curves
    return run.finish(results)


def _settings_dict(settings):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()}


# settings that change what a cached model is; the others (which parts to run, figures) may differ between runs
_MODEL_KEYS = ("data", "n_train", "n_test", "small_fraction", "members", "member_hidden", "member_passes",
               "student_hidden", "student_passes", "baseline_passes", "batch_size", "nade_hidden", "nade_passes")


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
           "n_test": "--n-test", "generators": "--generators", "losses": "--losses", "fractions": "--fraction"}


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
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    overrides = {"fractions": FRACTIONS if args.fraction == "both" else (args.fraction,)}
    for name in ("data", "members", "member_passes", "student_passes", "baseline_passes", "nade_hidden",
                 "nade_passes", "n_train", "n_test"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.generators:
        overrides["generators"] = tuple(args.generators)
    if args.losses:
        overrides["losses"] = tuple(args.losses)
    overrides["progress"] = not args.no_progress
    settings = (Settings.thesis if args.thesis else Settings.quick)(**overrides)
    return run_from_cli(parser, settings, OPTIONS, check_data, run, args.out, args.seed)
