"""``kd-ref run ldl``: linear distillation learning on few-shot MNIST (SPEC_seeds S2.C; Asadulaev et al.).

Every trial draws ``shots`` training images per class (:func:`kd_ref.datasets.few_shot_indices`)
and scores, on the same test images, the methods of :mod:`kd_ref.distill.linear` and two
baselines:

* ``naive`` (S2.4) and ``nearest_subspace``: closed forms. ``nearest_subspace`` is also the
  randomized-prior row of S2.C: the exact limit of the RPF ensemble (S2.7) scores class c by
  K lambda ||(I - Pi_c) x||^2, lambda the same for every class, so its argmin is this one;
* ``o2md_cf``: one-to-many distillation by its closed form (S2.3), Xavier-normal target and
  predictors (the authors' ``mnist.conf``);
* ``o2md_adam``: the same model from the same start, trained by the authors' protocol (batch 1,
  Adam);
* ``bd``: bidirectional distillation (S2.5) with the authors' settings (orthogonal target,
  PyTorch-default predictors, Adam, weight decay 5e-7, target lr 5e-6, predictor lr 1e-4);
* ``logreg`` (784-10) and ``mlp`` (784-256-256-10 ReLU): :class:`kd_ref.mlp.MLP` trained on
  the true labels by Adam (lr 1e-3, batch 32, cross entropy), the authors' baseline script.

Outputs (``--out``): ``accuracy.md/.csv`` (mean test accuracy +- 2 SE over trials, per K,
method and shot count), ``paired.md/.csv`` (paired differences over the same trials against
O2MD's closed form), ``adam_lr.md/.csv`` (the optimiser sensitivity next to the closed form:
Adam and batch-1 SGD at several learning rates from the closed form's start, with each fit's
distance to the closed form),
``curves.png`` (test accuracy against epochs for the iterative methods, the seed's figure),
``tables.md`` (all tables and the paper's figures). Per-trial results are cached under
``OUT/cache``, so an interrupted run started again with the same arguments continues.

Modes: ``--quick`` (default; shots 1, 5, 10, 10 trials, the first 2,000 test images,
K = 784; the per-example methods, which take most of the time, on the first
``iterative_trials`` trials only) and ``--paper`` (shots 1, 5, 10, 50, 100, 200,
100 trials, all 10,000 test images, K = 784 and 2000, 10 Adam epochs; hours, the closed forms
on all trials, the per-example methods on ``iterative_trials`` = 10 of them, since Adam on
all 100 trials at 200 shots would take days). Without MNIST it runs on the built-in synthetic
digits.
"""
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .. import datasets, npzfile
from ..cli import ArgumentParser, int_at_least, out_folder
from ..distill.compression import DatasetGenerator, log_probs_of, supervised_objective
from ..distill.linear import O2MD, BidirectionalDistillation, NaiveLDL, RandomLinearMap, nearest_subspace
from ..metrics import mean_2se
from ..mlp import MLP
from ..optim import Adam, train
from .._validation import check_in_range, check_positive_int
from ._report import Presets, Run, run_from_cli, write_table, write_text_atomic
from .compress import load_data

CACHE_KIND = "kd_ref.ldl.trial"
CLOSED = ("naive", "nearest_subspace", "o2md_cf", "logreg", "mlp")     # methods that do not depend on K: first K
ITERATIVE = ("o2md_adam", "bd")
METHODS = ("naive", "nearest_subspace", "o2md_cf", "o2md_adam", "bd", "logreg", "mlp")

#: arXiv:1906.05431v2, MNIST, test accuracy by training examples per class (SPEC_seeds S2.C).
PAPER = {"naive": {1: 0.127, 10: 0.777, 50: 0.903, 100: 0.898, 200: 0.942},
         "logreg": {1: 0.316, 10: 0.679, 50: 0.839, 100: 0.870, 200: 0.892},
         "mlp": {1: 0.448, 10: 0.749, 50: 0.881, 100: 0.926, 200: 0.929},
         "o2md_adam": {1: 0.426, 10: 0.801, 50: 0.912, 100: 0.934, 200: 0.953},
         "bd": {1: 0.436, 10: 0.800, 50: 0.917, 100: 0.871, 200: 0.953}}


@dataclass
class Settings(Presets):
    """Everything that defines a run; ``quick()`` and ``paper()`` give the presets (S2.C). ``n_test`` 0 = all."""

    mode: str = "quick"
    data: str = "auto"
    n_train: int = 0                   # 0 = all training images (the synthetic digits: 6,000); shots are drawn from them
    shots: tuple = (1, 5, 10)
    trials: int = 10
    iterative_trials: int = 2          # trials on which o2md_adam and bd run (0 = all)
    n_test: int = 2000
    curve_test: int = 500              # test images of the per-epoch curves (0 = all of n_test)
    ks: tuple = (784,)
    init: str = "xavier_normal"
    adam_epochs: int = 5
    adam_lr: float = 1e-3
    bd_epochs: int = 10
    bd_lr: float = 1e-4
    bd_target_lr: float = 5e-6
    bd_weight_decay: float = 5e-7
    lr_sweep: tuple = (1e-2, 1e-3, 1e-4)
    sgd_sweep: tuple = (2.0, 0.5, 0.1)    # batch-1 SGD steps on the mean-over-K loss (stable below K / max ||x||^2)
    sweep_shots: int = 5
    baseline_epochs: int = 5
    baseline_lr: float = 1e-3
    baseline_batch: int = 32
    progress: bool = True

    @classmethod
    def paper(cls, **overrides):
        return cls.preset(dict(mode="paper", data="mnist", shots=(1, 5, 10, 50, 100, 200), trials=100,
                               iterative_trials=10, n_test=0, curve_test=2000, ks=(784, 2000), adam_epochs=10,
                               sweep_shots=10), **overrides)

    def validate(self):
        """Check every field (errors name it); return ``self``."""
        if self.data not in ("auto", "mnist", "synthetic"):
            raise ValueError(f"data: expected 'auto', 'mnist' or 'synthetic', received {self.data!r}")
        for name in ("shots", "ks", "lr_sweep", "sgd_sweep"):
            value = getattr(self, name)
            if not (isinstance(value, (tuple, list)) and value):
                raise ValueError(f"{name}: expected a non-empty list, received {value!r}")
        for i, s in enumerate(self.shots):
            check_positive_int(s, f"shots[{i}]")
        for i, k in enumerate(self.ks):
            check_positive_int(k, f"ks[{i}]")
        for name in ("lr_sweep", "sgd_sweep"):
            for i, lr in enumerate(getattr(self, name)):
                check_in_range(lr, f"{name}[{i}]", 0, np.inf, low_open=True, high_open=True)
        for name in ("trials", "adam_epochs", "bd_epochs", "sweep_shots", "baseline_epochs", "baseline_batch"):
            check_positive_int(getattr(self, name), name)
        if self.trials < 2:
            raise ValueError(f"trials: expected an integer >= 2 (standard errors need two), received {self.trials}")
        for name in ("n_train", "iterative_trials", "n_test", "curve_test"):
            check_positive_int(getattr(self, name), name, minimum=0)
        for name in ("adam_lr", "bd_lr", "baseline_lr"):
            check_in_range(getattr(self, name), name, 0, np.inf, low_open=True, high_open=True)
        for name in ("bd_target_lr", "bd_weight_decay"):
            check_in_range(getattr(self, name), name, 0, np.inf, high_open=True)
        return self

    def n_iterative(self):
        return self.trials if self.iterative_trials == 0 else min(self.iterative_trials, self.trials)


# ------------------------------------------------------------------------- one trial
def _accuracy(predicted, labels):
    return float(np.mean(predicted == labels))


def baseline(hidden, x, y, data, settings, rng):
    """Test accuracy of an MLP 784-hidden-10 (log-softmax) trained by Adam on the true labels of (x, y)."""
    sizes = [x.shape[1], *hidden, data.n_classes]
    net = MLP(sizes, ["relu"] * len(hidden) + ["log_softmax"], rng)
    batch = min(settings.baseline_batch, x.shape[0])
    gen = DatasetGenerator(x, batch, rng, targets=np.eye(data.n_classes)[y])
    steps = settings.baseline_epochs * int(np.ceil(x.shape[0] / batch))
    train(net.params, supervised_objective(net), gen, Adam(settings.baseline_lr), steps, progress=False)
    return _accuracy(np.argmax(log_probs_of(net, data.x_test), axis=1), data.y_test)


def run_trial(data, settings, k, trial, run, iterative):
    """Accuracies of every method at each shot count (and Adam's lr sweep, per-epoch curves) for one trial.

    Random streams of ``run`` (a :class:`._report.Run`): (1, k, trial, m) draws the m-shot training
    set, the maps and every initialisation and minibatch of that shot count; (2, k, trial, j) and
    (3, k, trial, j) the minibatches of the j-th Adam and SGD run of the learning-rate sweep.

    Returns a dict of arrays: ``acc.<method>`` (len(shots),) — NaN where a method was not run —,
    ``curve.o2md_adam`` (len(shots), adam_epochs), ``curve.bd`` (len(shots), bd_epochs),
    ``sweep`` (len(lr_sweep),) accuracies of Adam-trained O2MD at ``sweep_shots``, ``sweep_sgd``
    (len(sgd_sweep),) the same for batch-1 SGD, and ``sweep_gap`` (len(lr_sweep) + len(sgd_sweep),)
    each fit's distance to the closed form, ||Theta - Theta^inf|| / ||Theta^0 - Theta^inf|| (Frobenius
    over all classes): S2.3 says SGD's goes to 0 as the epochs grow and Adam's does not.
    """
    out = {f"acc.{m}": np.full(len(settings.shots), np.nan) for m in METHODS}
    out["curve.o2md_adam"] = np.full((len(settings.shots), settings.adam_epochs), np.nan)
    out["curve.bd"] = np.full((len(settings.shots), settings.bd_epochs), np.nan)
    out["sweep"] = np.full(len(settings.lr_sweep), np.nan)
    out["sweep_sgd"] = np.full(len(settings.sgd_sweep), np.nan)
    out["sweep_gap"] = np.full(len(settings.lr_sweep) + len(settings.sgd_sweep), np.nan)
    x_curve = data.x_test[:settings.curve_test or None]
    y_curve = data.y_test[:settings.curve_test or None]
    first_k = k == settings.ks[0]
    d = data.x_train.shape[1]
    c = data.n_classes

    def curve(model):
        return _accuracy(model.predict(x_curve), y_curve)

    for i, m in enumerate(settings.shots):
        rng = run.rng(1, k, trial, m)
        idx = datasets.few_shot_indices(data.y_train, m, rng, n_classes=c)
        x, y = data.x_train[idx], data.y_train[idx]
        o2md = O2MD(c, RandomLinearMap(d, k, rng, init=settings.init), rng, init=settings.init)
        start = o2md.params.copy()
        o2md.fit(x, y, method="closed_form")
        closed = o2md.params.copy()
        out["acc.o2md_cf"][i] = _accuracy(o2md.predict(data.x_test), data.y_test)
        if first_k:
            naive = NaiveLDL(c, d, rng, init=settings.init)
            naive.fit(x, y)
            out["acc.naive"][i] = _accuracy(naive.predict(data.x_test), data.y_test)
            out["acc.nearest_subspace"][i] = _accuracy(nearest_subspace(x, y, c).predict(data.x_test), data.y_test)
            out["acc.logreg"][i] = baseline((), x, y, data, settings, rng)
            out["acc.mlp"][i] = baseline((256, 256), x, y, data, settings, rng)
        if not iterative:
            continue
        o2md.params[...] = start                              # Adam from the closed form's own start
        out["curve.o2md_adam"][i] = o2md.fit(x, y, method="adam", epochs=settings.adam_epochs, lr=settings.adam_lr,
                                             rng=rng, monitor=curve)
        out["acc.o2md_adam"][i] = _accuracy(o2md.predict(data.x_test), data.y_test)
        if m == settings.sweep_shots and first_k:
            runs = [("adam", lr, out["sweep"], j) for j, lr in enumerate(settings.lr_sweep)]
            runs += [("sgd", lr, out["sweep_sgd"], j) for j, lr in enumerate(settings.sgd_sweep)]
            for n, (method, lr, accs, j) in enumerate(runs):
                o2md.params[...] = start
                o2md.fit(x, y, method=method, epochs=settings.adam_epochs, lr=lr,
                         rng=run.rng(2 if method == "adam" else 3, k, trial, j))
                accs[j] = _accuracy(o2md.predict(data.x_test), data.y_test)
                out["sweep_gap"][n] = np.linalg.norm(o2md.params - closed) / np.linalg.norm(start - closed)
        bd = BidirectionalDistillation(c, RandomLinearMap(d, k, rng, init="orthogonal"), rng, init="torch_default")
        out["curve.bd"][i] = bd.fit(x, y, epochs=settings.bd_epochs, lr=settings.bd_lr,
                                    target_lr=settings.bd_target_lr, weight_decay=settings.bd_weight_decay, rng=rng,
                                    monitor=curve)
        out["acc.bd"][i] = _accuracy(bd.predict(data.x_test), data.y_test)
    return out


# ------------------------------------------------------------------------- the run
def run(settings, out_dir, rng):
    """Run every trial (cached per trial under ``out_dir/cache``), then write the tables and the figure."""
    wanted = {k: v for k, v in vars(settings).items() if k != "progress"}
    run = Run(out_dir, rng, wanted)
    data = load_data(SimpleNamespace(data=settings.data, n_train=settings.n_train, n_test=settings.n_test), run.rng(0))
    results = {}
    n_iter = settings.n_iterative()
    for k in settings.ks:
        for t in range(settings.trials):
            path = run.cache / f"k{k}_trial{t:03d}.npz"
            if path.exists():
                results[(k, t)] = npzfile.load(path, CACHE_KIND, {2})
                continue
            tic = time.perf_counter()
            res = run_trial(data, settings, k, t, run, iterative=t < n_iter)
            npzfile.save(path, CACHE_KIND, 2, **res)
            results[(k, t)] = res
            if settings.progress:
                print(f"K = {k}, trial {t + 1}/{settings.trials}: {time.perf_counter() - tic:.1f} s; o2md_cf "
                      + ", ".join(f"{m}-shot {a:.3f}" for m, a in zip(settings.shots, res["acc.o2md_cf"])),
                      flush=True)
    tables, files = write_tables(results, settings, data, run.out)
    run.files.update(files, curves=str(plot_curves(results, settings, run.out)))
    summary = run.finish({"settings": wanted, "data": data.name, "accuracy": summary_rows(results, settings)})
    return {**summary, "results": results, "tables": tables}


def _stack(results, k, key, trials):
    return np.stack([results[(k, t)][key] for t in trials])


def summary_rows(results, settings):
    """Rows (K, method, shots, trials, accuracy, accuracy_2se, paper) of the accuracy table."""
    rows = []
    for k in settings.ks:
        for method in METHODS:
            if method in CLOSED and method != "o2md_cf" and k != settings.ks[0]:
                continue
            trials = range(settings.n_iterative() if method in ITERATIVE else settings.trials)
            if not trials:
                continue
            acc = _stack(results, k, f"acc.{method}", trials)
            for i, m in enumerate(settings.shots):
                mean, two_se = mean_2se(acc[:, i])
                rows.append(dict(K=k, method=method, shots=m, trials=len(trials), accuracy=mean,
                                 accuracy_2se=two_se, paper=PAPER.get(method, {}).get(m, "")))
    return rows


def paired_rows(results, settings):
    """Paired differences (method - o2md_cf) over the trials both ran, per K and shot count."""
    rows = []
    for k in settings.ks:
        for method in METHODS:
            if method == "o2md_cf" or (method in CLOSED and k != settings.ks[0]):
                continue
            trials = range(settings.n_iterative() if method in ITERATIVE else settings.trials)
            if len(trials) < 1:
                continue
            diff = _stack(results, k, f"acc.{method}", trials) - _stack(results, k, "acc.o2md_cf", trials)
            for i, m in enumerate(settings.shots):
                mean, two_se = mean_2se(diff[:, i])
                rows.append(dict(K=k, comparison=f"{method} - o2md_cf", shots=m, trials=len(trials),
                                 difference=f"{mean:+.3f}", difference_2se=f"{two_se:.3f}"))
    return rows


def sweep_rows(results, settings):
    """Adam- and SGD-trained O2MD at each learning rate next to the closed form (same trials, same starts).

    ``gap_to_closed_form``: mean over trials of ||Theta - Theta^inf|| / ||Theta^0 - Theta^inf|| (S2.3).
    """
    k, trials = settings.ks[0], range(settings.n_iterative())
    if not trials or settings.sweep_shots not in settings.shots:
        return []
    i = settings.shots.index(settings.sweep_shots)
    cf = _stack(results, k, "acc.o2md_cf", trials)[:, i]
    gaps = _stack(results, k, "sweep_gap", trials)
    rows = [dict(method="o2md_cf (closed form)", lr="-", epochs="-", accuracy=mean_2se(cf)[0],
                 accuracy_2se=mean_2se(cf)[1], minus_closed_form="", gap_to_closed_form="0")]
    runs = [("o2md_adam", lr, "sweep", j) for j, lr in enumerate(settings.lr_sweep)]
    runs += [("o2md_sgd", lr, "sweep_sgd", j) for j, lr in enumerate(settings.sgd_sweep)]
    for n, (method, lr, key, j) in enumerate(runs):
        acc = _stack(results, k, key, trials)[:, j]
        (mean, two_se), (diff, diff_2se) = mean_2se(acc), mean_2se(acc - cf)
        rows.append(dict(method=method, lr=f"{lr:g}", epochs=settings.adam_epochs, accuracy=mean,
                         accuracy_2se=two_se, minus_closed_form=f"{diff:+.3f} ± {diff_2se:.3f}",
                         gap_to_closed_form=f"{gaps[:, n].mean():.2g}"))
    return rows


def write_tables(results, settings, data, out_dir):
    out_dir = Path(out_dir)
    n_test = data.x_test.shape[0]
    parts = [f"# kd-ref run ldl ({settings.mode}): {data.name}, {n_test} test images, shots {list(settings.shots)}, "
             f"{settings.trials} trials (per-example methods on {settings.n_iterative()})", ""]
    parts.append(write_table(summary_rows(results, settings), str(out_dir / "accuracy"),
                             "test accuracy, mean ± 2 SE over trials (paper: arXiv:1906.05431v2 MNIST table)",
                             floatfmt="{:.3f}"))
    parts.append(write_table(paired_rows(results, settings), str(out_dir / "paired"),
                             "paired differences against O2MD's closed form on the same trials (accuracy)"))
    files = {"accuracy": str(out_dir / "accuracy.md"), "paired": str(out_dir / "paired.md")}
    sweep = sweep_rows(results, settings)
    if sweep:
        parts.append(write_table(sweep, str(out_dir / "adam_lr"),
                                 f"optimiser sensitivity at {settings.sweep_shots} shots, K = {settings.ks[0]}: Adam "
                                 f"and SGD ({settings.adam_epochs} epochs, batch 1) against the closed form from the "
                                 f"same start; gap = ||Theta - closed form|| / ||start - closed form|| (S2.3: SGD's "
                                 f"goes to 0 with the epochs, Adam's does not)", floatfmt="{:.3f}"))
        files["adam_lr"] = str(out_dir / "adam_lr.md")
    parts.append("The paper's figures (arXiv:1906.05431v2, MNIST, examples per class; the BD 100-example and Naive "
                 "100-example cells look suspicious): " + "; ".join(
                     f"{m}: " + ", ".join(f"{s} {a:.3f}" for s, a in v.items()) for m, v in PAPER.items()) + ".\n")
    text = "\n".join(parts)
    write_text_atomic(out_dir / "tables.md", text)
    files["tables"] = str(out_dir / "tables.md")
    return text, files


def plot_curves(results, settings, out_dir):
    """Test accuracy (on ``curve_test`` images) against epochs for O2MD-Adam and BD, one line per shot count."""
    import matplotlib.pyplot as plt

    k, trials = settings.ks[0], range(settings.n_iterative())
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained", sharey=True)
    for ax, (method, label) in zip(axes, (("o2md_adam", "O2MD, Adam"), ("bd", "bidirectional, Adam"))):
        if trials:
            curves = _stack(results, k, f"curve.{method}", trials)
            cf = _stack(results, k, "acc.o2md_cf", trials)
            for i, m in enumerate(settings.shots):
                line, = ax.plot(np.arange(1, curves.shape[2] + 1), curves[:, i].mean(axis=0), marker="o", ms=3,
                                label=f"{m}-shot")
                ax.axhline(cf[:, i].mean(), color=line.get_color(), ls=":", lw=1)
        ax.set(title=f"{label} (dotted: closed form), K = {k}", xlabel="epoch", ylabel="test accuracy")
        ax.legend(fontsize=8)
    path = Path(out_dir) / "curves.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------- command line
def check_data(settings):
    if settings.data == "mnist" or (settings.data == "auto" and datasets.mnist_available()):
        datasets.load_mnist(scale=False)


OPTIONS = {"data": "--data", "shots": "--shots", "trials": "--trials", "iterative_trials": "--iterative-trials",
           "n_test": "--n-test", "ks": "--k", "adam_epochs": "--adam-epochs", "bd_epochs": "--bd-epochs"}


def main(argv=None):
    parser = ArgumentParser(prog="kd-ref run ldl", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="10 trials, shots 1 5 10, 2,000 test images (default)")
    mode.add_argument("--paper", action="store_true", help="the source's settings (hours; resumable)")
    parser.add_argument("--out", type=out_folder, default=os.path.join(".", "kd_ref_runs", "ldl"))
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--data", choices=["auto", "mnist", "synthetic"])
    parser.add_argument("--shots", type=int_at_least(1), nargs="+")
    parser.add_argument("--trials", type=int_at_least(2))
    parser.add_argument("--iterative-trials", type=int_at_least(0), help="trials with Adam and BD (0 = all)")
    parser.add_argument("--n-test", type=int_at_least(0), help="test images (0 = all)")
    parser.add_argument("--k", type=int_at_least(1), nargs="+", help="output sizes K of the target")
    parser.add_argument("--adam-epochs", type=int_at_least(1))
    parser.add_argument("--bd-epochs", type=int_at_least(1))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    overrides = {"progress": not args.no_progress}
    for name, field in (("data", "data"), ("trials", "trials"), ("iterative_trials", "iterative_trials"),
                        ("n_test", "n_test"), ("adam_epochs", "adam_epochs"), ("bd_epochs", "bd_epochs")):
        if getattr(args, name) is not None:
            overrides[field] = getattr(args, name)
    if args.shots:
        overrides["shots"] = tuple(args.shots)
    if args.k:
        overrides["ks"] = tuple(args.k)
    settings = (Settings.paper if args.paper else Settings.quick)(**overrides)
    return run_from_cli(parser, settings, OPTIONS, check_data, run, args.out, args.seed)
