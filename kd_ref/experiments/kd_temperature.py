"""``kd-ref run kd-temperature``: Hinton, Vinyals & Dean's temperature distillation on MNIST (SPEC_seeds S1.D).

A ReLU teacher is trained on the true labels; then students of each size are trained (i) on the true
labels alone (the baseline), (ii) by Hinton's objective (S1.3) with only the soft term, t^2 times the
soft cross entropy at t (S1.2), (iii) with the soft term plus ``w_hard`` times the hard-label cross
entropy of the student at t = 1, (iv) by the full weighted objective, soft + hard + ``w_dse`` t^2 times
the derivative square error at temperature t (S1.9, :class:`~kd_ref.distill.temperature.HintonDSELoss`:
the teacher labels every minibatch with its tempered input derivatives), and (v) at t = infinity, by
centred logit matching (S1.7), the limit the soft term reaches (S1.6). The transfer set is the training images. Finally the omitted-3s
experiment of Hinton §3: a student distilled at t = 20 on a transfer set with every 3 removed, then
the bias of its class-3 logit raised by b over a grid (the paper tuned b on the test set, as here).

Outputs (``--out``): ``errors.md/.csv`` (test errors, their count and ± 2 SE per student),
``paired.md/.csv`` (paired differences in accuracy against the same-size hard-label baseline),
``omit3.md/.csv`` (the bias sweep: errors and errors on 3s), ``error_vs_t.png`` (test error against t
per student size and loss), ``tables.md`` (all tables beside Hinton et al.'s figures). Every trained
network is cached under ``OUT/cache`` (npz) and the one in training checkpointed under ``OUT/ckpt``
(its minibatch generator too), so an interrupted run started again with the same arguments and seed
resumes mid-network and ends with the numbers of an uninterrupted run; ``results.json`` holds them.

Modes: ``--quick`` (default; the first 5,000 training / 2,000 test images, teacher 784-500-300-10,
students 784-30-30-10 at every t with w_hard 0 and 0.1 and with w_hard 0.1 + w_dse 0.01 (finite t), and
784-300-300-10 at t = 4, 20 and infinity the same way, ADADELTA, batch 100, 10 passes; about 10 minutes
on one core; the built-in synthetic digits when MNIST is absent) and ``--paper`` (60,000 / 10,000, teacher 784-1200-1200-10, students 784-800-800-10 and
784-30-30-10, soft term only (no DSE students: the teacher's input derivatives at every step would
multiply the hours by ten), t in {1, 2, 2.5, 3, 4, 8, 20}; hours). Departures from the paper: the
teacher has no dropout, max-norm constraint or jittered inputs (kd_ref's quick settings do without, and
the paper does not give their values), so the teacher is weaker than the paper's 67 errors; the
optimiser (not stated in the paper) is ADADELTA, as in the thesis. The DSE weight w_dse = 0.01 makes the
DSE term's gradient about as large as the soft term's at a hard-label-trained 784-30-30-10 student
(measured on a minibatch of the quick run: |grad t^2 l_dse| is 20-80 times |grad t^2 l_soft| for
t = 1 ... 20), so neither term drowns the other; it was not tuned on test errors.
"""
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .. import npzfile
from ..cli import ArgumentParser, int_at_least, out_folder
from ..distill import distill
from ..distill.compression import DatasetGenerator, MLPTeacher, log_probs_of, supervised_objective, teacher_targets
from ..distill.temperature import HintonDSELoss, HintonLoss, LogitMatchingLoss, hinton_objective, one_hot
from ..metrics import paired_difference, score
from ..mlp import MLP
from ..optim import Adadelta, train
from .._validation import check_in_range, check_positive_int
from ._report import Presets, Run, run_from_cli, write_table, write_text_atomic
from .compress import check_data, load_data

CACHE_KIND = "kd_ref.kd_temperature.net"
INF = math.inf

#: Hinton et al. 2015 §3 (MNIST; test errors out of 10,000), quoted in SPEC_seeds S1.D.
PAPER = ("Hinton et al. 2015 §3 (MNIST, 10,000 test images): teacher 784-1200-1200-10 with dropout 67 errors; "
         "784-800-800-10 on hard labels 146, distilled at t = 20: 74; with >= 300 units per layer all t > 8 are "
         "similar, with 30 units t in [2.5, 4] is clearly best; omitting all 3s: 206 errors, 133 of the 1,010 "
         "test 3s, and with the 3-bias raised by 3.5: 109 errors, 14 on 3s.")


@dataclass
class Settings(Presets):
    """Everything that defines a run; ``quick()`` and ``paper()`` give the presets (S1.D). ``n_*`` 0 = all."""

    mode: str = "quick"
    data: str = "auto"
    n_train: int = 5000
    n_test: int = 2000
    teacher: tuple = (500, 300)
    small: tuple = (30, 30)              # the student of the temperature sweep
    large: tuple = (300, 300)
    temperatures: tuple = (1.0, 2.0, 2.5, 4.0, 8.0, 20.0, INF)
    large_temperatures: tuple = (4.0, 20.0, INF)
    hard_weights: tuple = (0.0, 0.1)     # w_hard of the soft + hard students (0: soft only)
    dse_weight: float = 0.01             # w_dse of the soft + hard + DSE students (S1.9; 0: none)
    dse_hard_weight: float = 0.1         # their w_hard
    omit_t: float = 20.0
    bias_grid: tuple = (0.0, 1.0, 2.0, 3.0, 3.5, 4.0, 5.0, 6.0)
    passes: int = 10
    batch_size: int = 100
    progress: bool = True

    @classmethod
    def paper(cls, **overrides):
        return cls.preset(dict(mode="paper", data="mnist", n_train=0, n_test=0, teacher=(1200, 1200), small=(30, 30),
                               large=(800, 800), temperatures=(1.0, 2.0, 2.5, 3.0, 4.0, 8.0, 20.0),
                               large_temperatures=(20.0,), hard_weights=(0.0,), dse_weight=0.0, passes=50),
                          **overrides)

    def validate(self):
        """Check every field (errors name it); return ``self``."""
        if self.data not in ("auto", "mnist", "synthetic"):
            raise ValueError(f"data: expected 'auto', 'mnist' or 'synthetic', received {self.data!r}")
        for name in ("teacher", "small", "large", "temperatures", "hard_weights", "bias_grid"):
            value = getattr(self, name)
            if not (isinstance(value, (tuple, list)) and value):
                raise ValueError(f"{name}: expected a non-empty list, received {value!r}")
        if not isinstance(self.large_temperatures, (tuple, list)):
            raise ValueError(f"large_temperatures: expected a list, received {self.large_temperatures!r}")
        for name in ("teacher", "small", "large"):
            for i, h in enumerate(getattr(self, name)):
                check_positive_int(h, f"{name}[{i}]")
        for name in ("temperatures", "large_temperatures"):
            for i, t in enumerate(getattr(self, name)):
                if not (isinstance(t, (int, float)) and math.isinf(t) and t > 0):   # inf: centred logit matching
                    check_in_range(t, f"{name}[{i}]", 0, INF, low_open=True, high_open=True)
        for i, w in enumerate(self.hard_weights):
            check_in_range(w, f"hard_weights[{i}]", 0, INF, high_open=True)
        for name in ("dse_weight", "dse_hard_weight"):
            check_in_range(getattr(self, name), name, 0, INF, high_open=True)
        for i, b in enumerate(self.bias_grid):
            check_in_range(b, f"bias_grid[{i}]", -INF, INF, low_open=True, high_open=True)
        check_in_range(self.omit_t, "omit_t", 0, INF, low_open=True, high_open=True)
        for name in ("n_train", "n_test"):
            check_positive_int(getattr(self, name), name, minimum=0)
        for name in ("passes", "batch_size"):
            check_positive_int(getattr(self, name), name)
        return self


# ------------------------------------------------------------------------- training
def _net(hidden, d, c, rng):
    return MLP([d, *hidden, c], ["relu"] * len(hidden) + ["log_softmax"], rng)


def _steps(settings, n):
    return max(1, int(round(settings.passes * n / settings.batch_size)))


def train_student(kind, hidden, teacher, x, y, settings, rng, t=1.0, w_hard=0.0, checkpoint=None, record=None):
    """One network 784-hidden-10 trained on (x, y) by ``kind``: "hard" (true labels; also the teacher),
    "kd" (Hinton's objective S1.3 at t with weights (1, w_hard)), "kd_dse" (the full objective S1.3 + S1.9 with
    weights (1, w_hard, settings.dse_weight)) or "logits" (centred logit matching S1.7).

    ``checkpoint`` (a path) and ``record`` (the settings it must match) go to :func:`kd_ref.optim.train`:
    an interrupted training resumes there, generator included."""
    c = int(y.max()) + 1 if teacher is None else teacher.n_outputs
    net = _net(hidden, x.shape[1], c, rng)
    steps, batch = _steps(settings, x.shape[0]), min(settings.batch_size, x.shape[0])
    resume = dict(progress=settings.progress, checkpoint=checkpoint, settings=record)
    if kind == "logits":
        loss = LogitMatchingLoss(centred=True)
        distill(net, loss, DatasetGenerator(x, batch, rng), teacher_targets(net, teacher, loss), Adadelta(), steps,
                label="t = inf (logits)", **resume)
        return net
    gen = DatasetGenerator(x, batch, rng, targets=one_hot(y, c))
    if kind == "hard":
        objective, label = supervised_objective(net), "hard labels"
    else:
        loss = HintonLoss(t, 1.0, w_hard) if kind == "kd" else HintonDSELoss(t, 1.0, w_hard, settings.dse_weight)
        objective, label = hinton_objective(net, teacher, loss), loss.name
    train(net.params, objective, gen, Adadelta(), steps, stateful={"generator": gen}, label=label, **resume)
    return net


def _cached(path, make, like):
    """A trained net from ``path`` (npz) or made by ``make()`` and saved atomically (npzfile)."""
    if path.exists():
        like.params[...] = npzfile.load(path, CACHE_KIND, {1}, label="cache", required=("params",))["params"]
        return like
    net = make()
    npzfile.save(path, CACHE_KIND, 1, params=net.params)
    return net


def _t_name(t):
    return "inf" if math.isinf(t) else f"{t:g}"


def _key(size, t, w_hard, w_dse=0.0):
    if math.isinf(t):
        return f"{size}/t=inf"
    return f"{size}/t={_t_name(t)}/w_hard={w_hard:g}" + (f"/w_dse={w_dse:g}" if w_dse else "")


def student_plan(settings):
    """(key, hidden, kind, t, w_hard, stream) of every student, baselines first, each size's students by t.

    ``stream`` numbers the student's random stream: the soft and soft + hard students and the logit matchers
    count from 10 in plan order, the DSE students from 1000, so adding or removing the DSE family leaves the
    others' numbers unchanged."""
    plan, count = [], {"other": 10, "kd_dse": 1000}

    def add(key, hidden, kind, t, w):
        group = "kd_dse" if kind == "kd_dse" else "other"
        plan.append((key, hidden, kind, t, w, count[group]))
        count[group] += 1

    for size, hidden, temps in (("small", settings.small, settings.temperatures),
                                ("large", settings.large, settings.large_temperatures)):
        add(f"{size}/hard", hidden, "hard", 1.0, 0.0)
        for t in temps:
            if math.isinf(t):
                add(_key(size, t, 0.0), hidden, "logits", t, 0.0)
                continue
            for w in settings.hard_weights:
                add(_key(size, t, w), hidden, "kd", t, w)
            if settings.dse_weight > 0:
                w = settings.dse_hard_weight
                add(_key(size, t, w, settings.dse_weight), hidden, "kd_dse", t, w)
    return plan


# ------------------------------------------------------------------------- the run
def run(settings, out_dir, rng):
    """Train (or load from ``out_dir/cache``) the teacher and every student, then write tables and figure.

    Each network draws from its own stream of the run (:class:`._report.Run`), is checkpointed while it
    trains (``out_dir/ckpt``) and cached when done, so a resumed run ends with the same numbers."""
    settings = settings.validate()
    record = {k: (list(map(str, v)) if isinstance(v, tuple) else v) for k, v in vars(settings).items()
              if k != "progress"}
    run = Run(out_dir, rng, record)
    data = load_data(SimpleNamespace(data=settings.data, n_train=settings.n_train, n_test=settings.n_test), run.rng(0))
    x, y, c, d = data.x_train, data.y_train, data.n_classes, data.x_train.shape[1]

    def fit(key, i, hidden, kind, teacher, xs, ys, t=1.0, w_hard=0.0):
        tic = time.perf_counter()
        name = key.replace("/", "_").replace("=", "") + ".npz"
        ckpt = run.ckpt / name
        net = _cached(run.cache / name, lambda: train_student(kind, hidden, teacher, xs, ys, settings, run.rng(i), t=t,
                                                             w_hard=w_hard, checkpoint=str(ckpt), record=record),
                      _net(hidden, d, c, np.random.default_rng(0)))
        ckpt.unlink(missing_ok=True)
        s = score(log_probs_of(net, data.x_test), data.y_test)
        if settings.progress:
            print(f"{key}: {100 - s.accuracy:.2f} % test error ({time.perf_counter() - tic:.1f} s)", flush=True)
        return net, s

    teacher_net, teacher_score = fit("teacher", 1, settings.teacher, "hard", None, x, y)
    teacher = MLPTeacher(teacher_net)
    scores = {"teacher": teacher_score}
    plan = student_plan(settings)
    for key, hidden, kind, t, w, stream in plan:
        scores[key] = fit(key, stream, hidden, kind, teacher, x, y, t, w)[1]
    keep = y != 3
    omit_net, _ = fit("omit3", 2, settings.large, "kd", teacher, x[keep], y[keep], settings.omit_t, 0.0)
    omit = bias_sweep(omit_net, data, settings.bias_grid)
    tables, files = write_tables(scores, plan, omit, settings, data, run.out)
    run.files.update(files, error_vs_t=str(plot_error_vs_t(scores, settings, run.out)))
    errors = {k: _error_row(k, s, data.x_test.shape[0]) for k, s in scores.items()}
    results = run.finish({"settings": record, "data": data.name, "errors": errors, "omit3": omit})
    return {**results, "scores": scores, "tables": tables}


def bias_sweep(net, data, grid, cls=3):
    """Test errors of ``net`` with b added to the bias of class ``cls``'s logit, for each b of ``grid``."""
    rows = []
    view = net.b[-1]                     # a view into net.params
    original = view.copy()
    is_cls = data.y_test == cls
    try:
        for b in grid:
            view[...] = original
            view[cls] += b
            wrong = np.argmax(log_probs_of(net, data.x_test), axis=1) != data.y_test
            rows.append(dict(bias=float(b), errors=int(wrong.sum()), error_pct=100 * float(wrong.mean()),
                             errors_on_3s=int(wrong[is_cls].sum()), test_3s=int(is_cls.sum())))
    finally:
        view[...] = original
    return rows


# ------------------------------------------------------------------------- report
def _error_row(key, s, n):
    err = 100 - s.accuracy
    return dict(student=key, test_errors=int(round(err * n / 100)), error_pct=err, error_2se=s.accuracy_2se)


def by_t_rows(scores, settings, n):
    """One row per (size, t), one column per loss family: "errors (accuracy difference ± 2 SE)"."""
    families = [(f"soft + {w:g} hard" if w else "soft only", lambda size, t, w=w: _key(size, t, w))
                for w in settings.hard_weights]
    if settings.dse_weight > 0:
        w, b = settings.dse_hard_weight, settings.dse_weight
        families.append((f"soft + {w:g} hard + {b:g} DSE", lambda size, t: _key(size, t, w, b)))
    rows = []
    for size, temps in (("small", settings.temperatures), ("large", settings.large_temperatures)):
        base = scores[f"{size}/hard"]
        rows.append({"student": size, "t": "hard labels", **{name: "" for name, _ in families}})
        rows[-1][families[0][0]] = f"{_error_row('', base, n)['test_errors']}"
        for t in temps:
            row = {"student": size, "t": _t_name(t)}
            for j, (name, key) in enumerate(families):
                k = _key(size, t, 0.0) if math.isinf(t) else key(size, t)
                if k not in scores or (math.isinf(t) and j):     # one logit-matching student at t = inf
                    row[name] = ""
                    continue
                p = paired_difference(scores[k], base)
                row[name] = (f"{_error_row(k, scores[k], n)['test_errors']} ({p['accuracy']:+.2f} ± "
                             f"{p['accuracy_2se']:.2f})")
            rows.append(row)
    return rows


def write_tables(scores, plan, omit, settings, data, out_dir):
    out_dir = Path(out_dir)
    n = data.x_test.shape[0]
    parts = [f"# kd-ref run kd-temperature ({settings.mode}): {data.name}, {data.x_train.shape[0]} training / {n} "
             f"test images; teacher 784-{'-'.join(map(str, settings.teacher))}-10, students "
             f"small 784-{'-'.join(map(str, settings.small))}-10 and large 784-{'-'.join(map(str, settings.large))}-10; "
             f"ADADELTA, batch {settings.batch_size}, {settings.passes} passes", ""]
    rows = [_error_row(k, s, n) for k, s in scores.items()]
    parts.append(write_table(rows, str(out_dir / "errors"), f"test error [%] ± 2 SE ({n} test images)",
                             floatfmt="{:.2f}"))
    paired = []
    for key, _, kind, t, w, _ in plan:
        size = key.split("/")[0]
        # against the same-size baseline; a DSE student also against the soft + hard student it extends
        for base in [f"{size}/hard"] + ([_key(size, t, w)] if kind == "kd_dse" and _key(size, t, w) in scores else []):
            if key != base:
                p = paired_difference(scores[key], scores[base])
                paired.append(dict(student=key, minus=base, accuracy_diff=f"{p['accuracy']:+.2f}",
                                   accuracy_diff_2se=f"{p['accuracy_2se']:.2f}"))
    parts.append(write_table(paired, str(out_dir / "paired"),
                             "paired differences in test accuracy [points] against the same-size hard-label "
                             "baseline, and of each DSE student against its soft + hard twin (positive: the first "
                             "is better)"))
    parts.append(write_table(by_t_rows(scores, settings, n), str(out_dir / "by_t"),
                             f"test errors (of {n}) by t and loss, with the paired difference in accuracy against "
                             "the same-size hard-label baseline [points ± 2 SE]; t = inf: centred logit matching"))
    parts.append(write_table(omit, str(out_dir / "omit3"),
                             f"omitted 3s: large student distilled at t = {settings.omit_t:g} without any 3 in the "
                             f"transfer set, class-3 bias raised by b (tuned on the test set, as the paper did)",
                             floatfmt="{:.2f}"))
    parts.append(PAPER + "\n")
    text = "\n".join(parts)
    write_text_atomic(out_dir / "tables.md", text)
    files = {name: str(out_dir / f"{name}.md") for name in ("errors", "paired", "by_t", "omit3", "tables")}
    return text, files


def plot_error_vs_t(scores, settings, out_dir):
    """Test error against t (log axis; t = infinity drawn at the right edge) per student size and loss."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 4), layout="constrained")
    finite = [t for t in (*settings.temperatures, *settings.large_temperatures) if not math.isinf(t)]
    t_inf = 2.5 * max(finite) if finite else 100.0
    for size, temps, colour in (("small", settings.temperatures, "C0"), ("large", settings.large_temperatures, "C3")):
        for j, w in enumerate(settings.hard_weights):
            style = ("o-", "s--", "^-.", "v:")[j % 4]
            pts = [(t_inf if math.isinf(t) else t, 100 - scores[_key(size, t, w)].accuracy) for t in temps]
            if pts:
                ax.plot(*zip(*pts), style, color=colour, ms=4, label=f"{size}, w_hard = {w:g}")
        if settings.dse_weight > 0:      # finite t only: the DSE term has no t = infinity student here
            w, b = settings.dse_hard_weight, settings.dse_weight
            pts = [(t, 100 - scores[_key(size, t, w, b)].accuracy) for t in temps if not math.isinf(t)]
            if pts:
                ax.plot(*zip(*pts), "D-", color=colour, ms=4, mfc="none", lw=2, alpha=0.6,
                        label=f"{size}, w_hard = {w:g} + w_dse = {b:g} (DSE)")
        ax.axhline(100 - scores[f"{size}/hard"].accuracy, color=colour, ls=":", lw=1)
    ax.axhline(100 - scores["teacher"].accuracy, color="k", ls="--", lw=1, label="teacher")
    ax.set_xscale("log")
    ax.set(xlabel=f"temperature t (rightmost point: t = ∞, centred logit matching, drawn at {t_inf:g})",
           ylabel="test error [%]", title="distilled students (dotted: same size on hard labels)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))   # outside: the curves fill the axes
    path = Path(out_dir) / "error_vs_t.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------- command line
OPTIONS = {"data": "--data", "n_train": "--n-train", "n_test": "--n-test", "passes": "--passes",
           "temperatures": "--t", "batch_size": "--batch-size", "dse_weight": "--w-dse"}


def main(argv=None):
    parser = ArgumentParser(prog="kd-ref run kd-temperature", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="5,000 / 2,000 images, small networks (default)")
    mode.add_argument("--paper", action="store_true", help="the paper's sizes (hours; resumable)")
    parser.add_argument("--out", type=out_folder, default=os.path.join(".", "kd_ref_runs", "kd_temperature"))
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--data", choices=["auto", "mnist", "synthetic"])
    parser.add_argument("--n-train", type=int_at_least(0), help="training images (0 = all)")
    parser.add_argument("--n-test", type=int_at_least(0), help="test images (0 = all)")
    parser.add_argument("--passes", type=int_at_least(1))
    parser.add_argument("--batch-size", type=int_at_least(1))
    parser.add_argument("--t", type=float, nargs="+", help="temperatures of the small student (inf allowed)")
    parser.add_argument("--w-dse", type=float, help="w_dse of the soft + hard + DSE students (0: none)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    overrides = {"progress": not args.no_progress}
    for name in ("data", "n_train", "n_test", "passes", "batch_size"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.t:
        overrides["temperatures"] = tuple(args.t)
    if args.w_dse is not None:
        overrides["dse_weight"] = args.w_dse
    settings = (Settings.paper if args.paper else Settings.quick)(**overrides)
    return run_from_cli(parser, settings, OPTIONS, check_data, run, args.out, args.seed)
