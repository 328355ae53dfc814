"""``kd-ref run obd``: Optimal Brain Damage on LeCun et al.'s (1989) protocol, with five Hessian diagonals.

Data: MNIST downsampled to 16 x 16 (LeCun's input size, ``kd_ref.datasets.downsample``),
LeCun's set sizes of 9,300 training and 3,350 test images (the first ones of
MNIST's two sets; synthetic seven-segment digits when MNIST is absent). Net:
256-10-10 logistic/logistic, square error on one-hot targets, L = mean of
1/2 |y - t|^2 (S1.10): 2,680 parameters (LeCun's shared-weight net, 2,578 free
parameters, cannot be built in kd_ref). Trained by ADADELTA.

At the trained net (S1.11-S1.16):

* every curvature method of ``kd_ref.curvature`` against the exact diagonal
  (relative error, time per one full-batch gradient), brute force as the reference;
* Fig. 1a: L after deleting the k lowest-saliency parameters (one curve per
  curvature method), the k smallest |u| and k random ones, without retraining;
* Fig. 1b: that curve for the exact diagonal against its prediction L_0 + sum of
  the deleted saliencies;
* Fig. 2: the OBD loop (delete ``fraction`` of the remaining parameters, retrain
  ``retrain_passes`` passes, repeat), and magnitude and random deletion in the
  same loop as controls; train and test MSE before and after retraining.

The closing summary (``summary.md``) sets the measured figures beside LeCun et
al.'s reference points; README's Results discuss them. Outputs (``--out``):
``estimators``, ``deletion``, ``summary`` and ``rounds`` (.md and .csv), the figures
``fig1a_deletion.png``, ``fig1b_predicted.png``, ``fig2_retraining.png``, ``tables.md``
and ``results.json``; the trained net is cached in ``OUT/cache``.

Run it with ``kd-ref run obd [--quick | --paper] [--out DIR] [--seed N]``.

``--paper`` deletes 2% per round and retrains 20 passes, with 1,000 Hutchinson
probes, and adds the chapter-2 student (:func:`student_stage`, settings ``student``;
``None`` in ``--quick``, which does not run it): on the 28 x 28 images of the same
set sizes, an ensemble of 784-500-300-10 ReLU members (``kd-ref run compress``'s
``train_members``, bootstrap resamples, 2.14-2.15) and the 784-50-30-10 student
(41,090 parameters) distilled from it by cross entropy on the training images
(``compress.train_student``, 2.17), which is then pruned by OBD (exact diagonal)
twice from the same start: (a) saliencies and retraining under its distillation
loss, the cross entropy against the ensemble's probabilities (``DotProduct`` of the
teacher's probabilities on the log-softmax student, ``kd_ref.curvature``), and
(b) under the true labels (one-hot targets). Both report test error and test
log-probability against the share of parameters deleted (``student.md``,
``student.csv``, ``fig3_student.png``). (The paper's ten seeds are not run.)
"""
import os
import time
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .. import datasets, toydata
from ..timing import best_time
from ..curvature import hessian_diagonal
from ..distill.compression import DatasetGenerator, EnsembleTeacher, log_probs_of, supervised_objective
from ..metrics import score
from . import compress
from ..mlp import MLP
from ..optim import Adadelta
from ..outputs import DotProduct, SquareError
from ..prune import ParameterMask, deletion_curve, mean_loss, obd, retrain, saliency
from ..cli import ArgumentParser, int_at_least, out_folder
from .._validation import check_in_range, check_positive_int
from ._report import Presets, Run, run_from_cli, write_table, write_text_atomic

NAME = "obd"
CURVATURE_METHODS = ("exact", "lecun", "gauss_newton", "hutchinson")
SELECTIONS = ("saliency", "magnitude", "random")

STUDENT_TARGETS = ("distillation", "true labels")


@dataclass
class StudentSettings:
    """The chapter-2 student stage of ``--paper`` (:func:`student_stage`); our choices where the sources give
    none: LeCun's set sizes at 28 x 28, ten members with ``kd-ref run compress --thesis``'s member and student
    training."""

    n_train: int = 9300
    n_test: int = 3350
    members: int = 10
    member_hidden: tuple = (500, 300)
    member_passes: float = 20.0
    hidden: tuple = (50, 30)
    student_passes: float = 40.0
    batch_size: int = 20
    fraction: float = 0.02
    rounds: int = 140
    retrain_passes: int = 20


@dataclass
class Settings(Presets):
    """Everything that defines a run; ``quick()`` (LeCun et al. 1989 §2.3 as far as it goes with the data we
    have) and ``paper()`` give the presets; ``student`` (a :class:`StudentSettings`) only in ``paper()``."""

    mode: str = "quick"
    side: int = 16
    n_train: int = 9300
    n_test: int = 3350
    hidden: int = 10
    batch_size: int = 100
    train_passes: int = 60
    fraction: float = 0.05
    rounds: int = 45
    retrain_passes: int = 3
    n_probes: int = 100
    curve_points: int = 27
    brute: bool = False
    progress: bool = False
    student: StudentSettings = None

    @classmethod
    def paper(cls, **overrides):
        return cls.preset(dict(mode="paper", fraction=0.02, rounds=140, retrain_passes=20, n_probes=1000, brute=True,
                               progress=True, student=StudentSettings()), **overrides)

    def validate(self):
        """Check every field (errors name it); return ``self``."""
        for name in ("side", "n_train", "n_test", "hidden", "batch_size", "train_passes", "rounds", "retrain_passes",
                     "n_probes"):
            check_positive_int(getattr(self, name), name)
        check_positive_int(self.curve_points, "curve_points", minimum=2)
        check_in_range(self.fraction, "fraction", 0, 1, low_open=True, high_open=True)
        if self.student is not None and not isinstance(self.student, StudentSettings):
            raise TypeError(f"student: expected a StudentSettings or None, received {type(self.student).__name__}")
        return self

    def record(self):
        """The settings the cached net depends on (``progress`` does not; the student stage checks its own)."""
        return {k: v for k, v in vars(self).items() if k not in ("progress", "student")}


def load_data(settings, rng):
    """(x_train, t_train, y_train), (x_test, t_test, y_test), name: 16 x 16 images, one-hot t, labels y."""
    n_train, n_test = settings.n_train, settings.n_test
    if datasets.mnist_available():
        (x_tr, y_tr), (x_te, y_te) = datasets.load_mnist()
        name = "MNIST"
    else:
        (x_tr, y_tr), (x_te, y_te) = toydata.synthetic_digits(n_train, n_test, rng)
        name = "synthetic digits (kd_ref.toydata)"
    out = []
    for x, y, n in ((x_tr, y_tr, n_train), (x_te, y_te, n_test)):
        x, y = datasets.downsample(x[:n], settings.side), y[:n]
        out.append((x, np.eye(10)[y], y))
    return out[0], out[1], f"{name}, downsampled to {settings.side}x{settings.side}"


def evaluator(train, test):
    """net -> train/test MSE (the minimised L) and error rate (%)."""
    def evaluate(net):
        row = {}
        for tag, (x, t, y) in (("train", train), ("test", test)):
            row[f"{tag}_mse"] = mean_loss(net, x, SquareError(t), gradient=False)
            row[f"{tag}_error"] = 100.0 * float(np.mean(np.argmax(net.predict(x), axis=1) != y))
        return row
    return evaluate


def _objective(net):
    return lambda batch: mean_loss(net, batch[0], SquareError(batch[1]))


def train_net(settings, train, rng, cache_dir):
    """The 256-10-10 net trained by ADADELTA (cached as ``cache_dir/net.npz``)."""
    x, t, _ = train
    net = MLP([x.shape[1], settings.hidden, 10], ["logistic", "logistic"], rng)
    path = os.path.join(cache_dir, "net.npz")
    if os.path.exists(path):
        net.restore(path)
        return net
    steps = settings.train_passes * x.shape[0] // settings.batch_size
    draw = DatasetGenerator(x, settings.batch_size, rng, targets=t)
    retrain(net.params, ParameterMask(net.n_params), _objective(net), draw, Adadelta(), steps,
            progress=settings.progress, label="train 256-10-10")
    net.save(path)
    return net


def estimator_table(net, x, output, settings, rng):
    """Each curvature method's relative error against the exact diagonal and its time per one gradient."""
    grad_time = best_time(lambda: net.grad(x, output, input_grads=False), repeats=3, min_seconds=0.3)
    results = {m: hessian_diagonal(net, x, output, method=m,
                                   **({"n_probes": settings.n_probes, "rng": rng} if m == "hutchinson" else {}))
               for m in CURVATURE_METHODS + (("brute",) if settings.brute else ())}
    # brute force costs one HVP per parameter (5,000 gradients here, 5 minutes): --paper only
    brute = results.get("brute", results["exact"])
    exact = results["exact"].diag
    rows = []
    for m, r in results.items():
        err = np.linalg.norm(r.diag - exact) / np.linalg.norm(exact)
        rows.append(dict(method=m + (f" (S = {r.n_probes})" if r.n_probes else ""), rel_error_vs_exact=float(err),
                         rel_error_vs_brute=float(np.linalg.norm(r.diag - brute.diag) / np.linalg.norm(brute.diag))
                         if "brute" in results else float("nan"),
                         negative_entries=int(np.sum(r.diag < 0)), seconds=r.seconds,
                         gradients=r.seconds / grad_time))
    return rows, {m: r.diag for m, r in results.items()}


def one_shot_curves(net, x, output, diags, counts, rng):
    """L after deleting the first k of each ordering, no retraining (Fig. 1a, 1b)."""
    curves, orders = {}, {}
    for m in CURVATURE_METHODS:
        orders[f"OBD ({m})"] = np.argsort(saliency(diags[m], net.params), kind="stable")
    orders["magnitude"] = np.argsort(np.abs(net.params), kind="stable")
    orders["random"] = rng.permutation(net.n_params)
    for name, order in orders.items():
        curves[name] = deletion_curve(net, x, output, order, counts)
    s = saliency(diags["exact"], net.params)
    predicted = curves["OBD (exact)"][0] + np.concatenate([[0.0], np.cumsum(s[orders["OBD (exact)"]])])[counts]
    return curves, predicted


def pruning_loops(net, train, settings, evaluate, rngs):
    """The OBD loop (exact diagonal) and the magnitude and random controls, each from the trained net;
    ``rngs[select]`` draws that loop's minibatches (and random deletions)."""
    x, t, _ = train
    saved = net.params.copy()
    loops = {}
    steps = settings.retrain_passes * x.shape[0] // settings.batch_size
    for select in SELECTIONS:
        net.params[...] = saved
        rng = rngs[select]
        draw = DatasetGenerator(x, settings.batch_size, rng, targets=t)

        def retrain_fn(n, mask, draw=draw):
            retrain(n.params, mask, _objective(n), draw, Adadelta(), steps, progress=False)

        began = time.perf_counter()
        table, _ = obd(net, x, SquareError(t), rounds=settings.rounds, fraction=settings.fraction,
                       select=select, retrain_fn=retrain_fn, evaluate=evaluate, rng=rng)
        loops[select] = table
        if settings.progress:
            print(f"{select}: {len(table)} rounds in {time.perf_counter() - began:.0f} s", flush=True)
    net.params[...] = saved
    return loops


def summary_rows(counts, curves, predicted, loops, start, P):
    """The measured counterparts of LeCun et al.'s reference points.

    The lowest saliencies include negative ones (h_kk < 0 where the trained net is not
    at an exact minimum), so the first predicted increases are about 0 or below and a
    ratio of increases means little there: the increases are given side by side, as
    fractions of the unpruned L0, at 10%, 20% and 30% deleted, and the agreement of
    LeCun's Fig. 1b (a log-MSE plot) as the largest share deleted with the predicted
    L within 10% (0.4 dB) of the actual one.
    """
    counts = np.asarray(counts)
    L0 = curves["OBD (exact)"][0]
    actual, pred = curves["OBD (exact)"] - L0, predicted - L0
    upto = (counts > 0) & (counts <= 0.3 * P)
    rho = stats.spearmanr(pred[upto], actual[upto]).statistic
    rows = []
    for share in (0.1, 0.2, 0.3):
        i = int(np.flatnonzero(counts <= share * P)[-1])
        rows.append(dict(quantity=f"increase / L0 at {100 * counts[i] / P:.0f}% deleted (one shot): actual, "
                                  "predicted", measured=f"{actual[i] / L0:.3g}, {pred[i] / L0:.3g}",
                         LeCun="about equal (agree up to ~30%)"))
    close = np.abs(predicted - curves["OBD (exact)"]) <= 0.1 * curves["OBD (exact)"]
    agree = counts[:int(np.argmin(close))] if not close.all() else counts
    rows += [dict(quantity="largest % deleted with predicted L within 10% of the actual L (one shot, Fig. 1b)",
                  measured=float(100 * agree[-1] / P), LeCun="about 30% (800 of 2,578)"),
             dict(quantity="rank correlation of predicted and actual increase, up to 30% deleted",
                  measured=float(rho), LeCun="-")]
    for select, table in loops.items():
        ok = [100.0 * (1 - r.remaining / P) for r in table if r.after["train_mse"] <= 1.25 * start["train_mse"]]
        rows.append(dict(quantity=f"{select}: largest % deleted with train MSE after retraining within 25% of the "
                                  "unpruned net", measured=max(ok) if ok else 0.0,
                         LeCun="about 60% for OBD; magnitude worse, random far worse"))
    half = {s: next((r for r in t if r.remaining <= 0.5 * P), t[-1]) for s, t in loops.items()}
    for select, r in half.items():
        rows.append(dict(quantity=f"{select}: test error (%) after retraining at {r.remaining} parameters",
                         measured=r.after["test_error"], LeCun="-"))
    return rows


def plot_figures(out_dir, counts, curves, predicted, loops, start, P):
    import matplotlib.pyplot as plt

    files = []
    remaining = P - np.asarray(counts)
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    for name, c in curves.items():
        ax.semilogy(remaining, c, label=name, lw=1.5 if "OBD" in name else 2.2)
    ax.set(xlabel="parameters remaining", ylabel="training MSE (no retraining)",
           title="Fig. 1a: deletion by saliency, magnitude, random")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    files.append(_save(fig, out_dir, "fig1a_deletion.png"))
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    ax.semilogy(remaining, curves["OBD (exact)"], label="actual")
    ax.semilogy(remaining, predicted, "--", label="predicted: L0 + sum of deleted saliencies")
    ax.set(xlabel="parameters remaining", ylabel="training MSE (no retraining)",
           title="Fig. 1b: OBD predicted vs actual (exact diagonal)")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    files.append(_save(fig, out_dir, "fig1b_predicted.png"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained", sharey=True)
    for ax, tag in zip(axes, ("train", "test")):
        for (select, table), color in zip(loops.items(), ("tab:blue", "tab:orange", "tab:red")):
            rem = [r.remaining for r in table]
            ax.semilogy(rem, [r.before[f"{tag}_mse"] for r in table], ":", color=color,
                        label=f"{select}, before retraining")
            ax.semilogy(rem, [r.after[f"{tag}_mse"] for r in table], "-", color=color,
                        label=f"{select}, after retraining")
        ax.axhline(start[f"{tag}_mse"], color="k", lw=0.8)
        ax.set(xlabel="parameters remaining", ylabel=f"{tag} MSE", title=f"Fig. 2: {tag} set")
        ax.invert_xaxis()
    axes[0].legend(fontsize=7)
    files.append(_save(fig, out_dir, "fig2_retraining.png"))
    return files


# ------------------------------------------------------------- the chapter-2 student (--paper)
def distil_student(st, out_dir, rng, progress):
    """Ensemble and distilled student through ``kd-ref run compress``'s stages, cached under ``out_dir/student``
    (``st``: a :class:`StudentSettings`).

    Returns the student, the ensemble (mean probability, 2.15), the 28 x 28 data and the
    :class:`~._report.Run` (its random streams). Each member and the student are cached
    once trained, so an interrupted ``--paper`` run resumes after the last finished model.
    """
    cs = compress.Settings.quick(n_train=st.n_train, n_test=st.n_test, members=st.members,
                                 member_hidden=tuple(st.member_hidden), member_passes=st.member_passes,
                                 student_hidden=tuple(st.hidden), student_passes=st.student_passes,
                                 batch_size=st.batch_size, fractions=("full",), generators=("dataset",),
                                 losses=("ce",), label_cache=False, figures=False, progress=progress).validate()
    run = Run(os.path.join(out_dir, "student"), rng, compress._model_settings(cs))
    ctx = compress.Context(cs, run, compress.load_data(cs, run.rng(0)))
    members, _ = compress.train_members(ctx)
    ctx.teachers = {"ce": EnsembleTeacher(members, combine="mean")}
    student, _ = compress.train_student(ctx, "full", "dataset", "ce")
    return student, ctx.teachers["ce"], ctx.data, run


def student_stage(settings, out_dir, rng):
    """OBD on the distilled student under (a) its distillation loss and (b) the true labels.

    Both loops start from the same distilled student and use the exact diagonal. The
    loss of (a) is L = -(1/N) sum_n sum_i p_ni log y_ni with p the ensemble's
    probabilities on the N training images (the transfer set), held fixed: computed
    once, it is the same cross entropy (2.17) the student was distilled by, and
    ``supervised_objective`` on (x, p) retrains by it without asking the ensemble
    again every minibatch. (b) has one-hot p. Each round records the test error (%)
    and the mean test log-probability of the true class, and the train loss.

    Returns
    -------
    dict with ``student`` (its parameters before pruning), ``start`` (its evaluation),
    ``ensemble`` (the teacher's test scores), ``loops`` {target: list of OBDRound},
    ``rows`` (one per round and target), ``n_params``, ``data`` (its name).
    """
    st = settings.student
    student, teacher, data, run = distil_student(st, out_dir, rng, settings.progress)
    x, y = data.x_train, data.y_train
    targets = {"distillation": teacher.label(x).probs, "true labels": np.eye(data.n_classes)[y]}
    steps = compress._steps(st.retrain_passes, x.shape[0], st.batch_size)

    def evaluate(net):
        s = score(log_probs_of(net, data.x_test), data.y_test)
        return dict(test_error=100.0 - s.accuracy, test_log_prob=s.log_prob,
                    **{f"train_loss_{k.split()[0]}": mean_loss(net, x, DotProduct(p), gradient=False)
                       for k, p in targets.items()})

    saved = student.params.copy()
    start = evaluate(student)
    loops = {}
    for k, (name, p) in enumerate(targets.items()):
        student.params[...] = saved
        draw = DatasetGenerator(x, st.batch_size, run.rng(6, k), targets=p)

        def retrain_fn(n, mask, draw=draw):
            retrain(n.params, mask, supervised_objective(n), draw, Adadelta(), steps, progress=False)

        began = time.perf_counter()
        loops[name], _ = obd(student, x, DotProduct(p), rounds=st.rounds, fraction=st.fraction,
                             retrain_fn=retrain_fn, evaluate=evaluate, rng=run.rng(7, k))
        if settings.progress:
            print(f"student, OBD under {name}: {len(loops[name])} rounds in {time.perf_counter() - began:.0f} s",
                  flush=True)
    student.params[...] = saved
    P = student.n_params
    rows = [dict(targets="(unpruned)", deleted_pct=0.0, remaining=P, predicted=0.0, actual=0.0, **start)]
    rows += [dict(targets=name, deleted_pct=100.0 * (1 - r.remaining / P), remaining=r.remaining,
                  predicted=r.predicted, actual=r.actual, **r.after) for name, table in loops.items() for r in table]
    ens = score(log_probs_of(teacher, data.x_test), data.y_test)
    return dict(student=saved, start=start, ensemble=dict(test_error=100.0 - ens.accuracy, test_log_prob=ens.log_prob),
                loops=loops, rows=rows, n_params=P, data=data.name, sizes=student.sizes)


def plot_student(out_dir, stage):
    """Test error and test log-probability against the share deleted, (a) and (b) (after retraining)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    P = stage["n_params"]
    for ax, key, label in zip(axes, ("test_error", "test_log_prob"), ("test error (%)", "test log-probability")):
        for name, table in stage["loops"].items():
            ax.plot([0.0] + [100.0 * (1 - r.remaining / P) for r in table],
                    [stage["start"][key]] + [r.after[key] for r in table], "o-", ms=3,
                    label=f"OBD under {name}")
        ax.axhline(stage["ensemble"][key], color="k", lw=0.8, ls=":", label="ensemble (teacher)")
        ax.set(xlabel="% of parameters deleted", ylabel=label,
               title=f"distilled student {'-'.join(map(str, stage['sizes']))}, after retraining")
    axes[0].legend(fontsize=8)
    return _save(fig, out_dir, "fig3_student.png")


def _save(fig, out_dir, name):
    import matplotlib.pyplot as plt

    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(settings, out_dir, rng):
    """Run the experiment; write tables and figures into ``out_dir``; return everything measured.

    The components draw from their own streams of the run (:class:`._report.Run`): 0 the synthetic
    digits (when MNIST is absent), 1 the net and its training, 2 Hutchinson's probes, 3 the random
    order of the one-shot curves, (4, j) the j-th pruning loop, 5 the student stage (its own
    :class:`~._report.Run` under ``out_dir/student``). The trained net is cached in ``out_dir/cache``.
    """
    settings = settings.validate()
    run = Run(out_dir, rng, settings.record())
    train, test, data_name = load_data(settings, run.rng(0))
    net = train_net(settings, train, run.rng(1), run.cache)
    evaluate = evaluator(train, test)
    start = evaluate(net)
    x, t, _ = train
    output = SquareError(t)
    P = net.n_params
    estimators, diags = estimator_table(net, x, output, settings, run.rng(2))
    counts = [int(k) for k in np.linspace(0, P - 1, settings.curve_points).round()]
    curves, predicted = one_shot_curves(net, x, output, diags, counts, run.rng(3))
    loops = pruning_loops(net, train, settings, evaluate, {s: run.rng(4, j) for j, s in enumerate(SELECTIONS)})
    summary = summary_rows(counts, curves, predicted, loops, start, P)
    figures = plot_figures(out_dir, counts, curves, predicted, loops, start, P)
    rounds = [dict(select=s, remaining=r.remaining, predicted=r.predicted, actual=r.actual,
                   **{f"before_{k}": v for k, v in r.before.items()}, **{f"after_{k}": v for k, v in r.after.items()})
              for s, table in loops.items() for r in table]
    stem = os.path.join(out_dir, "")
    tables = "\n".join([
        f"data: {data_name}, {x.shape[0]} train / {test[0].shape[0]} test; net 256-{settings.hidden}-10 "
        f"logistic/logistic, square error, {P} parameters; trained: train MSE {start['train_mse']:.4g}, test error "
        f"{start['test_error']:.2f}%\n",
        write_table(estimators, stem + "estimators", "curvature estimators at the trained net (time in full-batch "
                    "gradients)"),
        write_table([dict(remaining=P - k, **{n: float(c[i]) for n, c in curves.items()},
                          predicted_exact=float(predicted[i])) for i, k in enumerate(counts)],
                    stem + "deletion", "training MSE after one-shot deletion (Fig. 1a, 1b)"),
        write_table(summary, stem + "summary", "against LeCun et al. 1989")])
    write_table(rounds, stem + "rounds", "pruning loops: every round")
    run.files.update(zip(("fig1a", "fig1b", "fig2"), figures))
    run.files.update({name: os.path.join(out_dir, f"{name}.csv") for name in ("estimators", "deletion", "summary",
                                                                                "rounds")})
    student = None
    if settings.student is not None:
        student = student_stage(settings, out_dir, run.rng(5))
        ens = student["ensemble"]
        tables += "\n" + write_table(
            student["rows"], stem + "student",
            f"distilled student {'-'.join(map(str, student['sizes']))} ({student['n_params']} parameters, "
            f"{student['data']}), OBD (exact diagonal) under its distillation loss and under the true labels, "
            f"after retraining; ensemble: test error {ens['test_error']:.2f}%, test log-prob "
            f"{ens['test_log_prob']:.4g}")
        run.files.update(fig3=plot_student(out_dir, student), student=os.path.join(out_dir, "student.csv"))
    write_text_atomic(os.path.join(out_dir, "tables.md"), tables)
    run.files["tables"] = os.path.join(out_dir, "tables.md")
    results = run.finish(dict(data=data_name, start=start, estimators=estimators, counts=counts, summary=summary,
                              student=None if student is None else student["rows"]))
    return {**results, "net": net, "diags": diags, "curves": curves, "predicted": predicted, "loops": loops,
            "tables": tables, "student": student}


def check_data(settings):
    """Read MNIST once when it is there (a damaged file ends the run before anything is written)."""
    if datasets.mnist_available():
        datasets.load_mnist()


def main(argv=None):
    parser = ArgumentParser(prog="kd-ref run obd", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="5%% per round, 3 passes of retraining, 100 probes: a few minutes (default)")
    mode.add_argument("--paper", action="store_true",
                      help="LeCun et al.'s schedule: 2%% per round, 20 passes of retraining, 1,000 probes; and the "
                           "distilled 784-50-30-10 student pruned under its distillation loss and true labels (hours)")
    parser.add_argument("--out", type=out_folder, default=os.path.join(".", "kd_ref_runs", NAME), help="output folder")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the numpy Generator")
    args = parser.parse_args(argv)
    settings = Settings.paper() if args.paper else Settings.quick()
    return run_from_cli(parser, settings, {}, check_data, run, args.out, args.seed)
