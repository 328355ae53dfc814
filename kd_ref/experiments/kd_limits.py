"""``kd-ref run kd-limits``: the t -> infinity limits of temperature distillation, measured (SPEC_seeds S1.D).

Three measurements, each a few seconds, all from :mod:`kd_ref.distill.temperature`:

* (S1.6) random logits z (student) and v (teacher), C classes, scale 3, means +1 and -2: medians over
  ``draws`` rows of |t^2 KL(p || q) - ||P(z - v)||^2/(2C)| and max|t(q - p) - P(z - v)/C|
  (:func:`~kd_ref.distill.temperature.limit_errors`), both O(1/t), and the uncentred control
  |t^2 KL - ||z - v||^2/(2C)|, which tends to a constant because the means differ;
* (S1.9) a random MLP student and teacher: |t^2 l_dse(t) - ||P(J_z - J_v)||_F^2| (centred logit
  Jacobians), O(1/t^2), and the uncentred control |t^2 l_dse - ||J_z - J_v||_F^2|, which does not converge;
* (S1.7 via S1.6) a convex student: a linear softmax classifier fitted to a fixed transfer set by t^2 KL at
  t = 10, 10^2, 10^3 and by centred logit matching (Newton-CG with the losses' exact Hessian-vector
  products). Its parameters are not unique (adding c 1^T to the last layer changes nothing), so the
  fits are compared through their centred logits and probabilities, which agree to O(1/t).

Each fitted slope of log(error) against log(t) (over t >= 10) is printed on its own line. Outputs
(``--out``): ``s1_6.md/.csv``, ``s1_9.md/.csv``, ``convex.md/.csv``, ``limits.png`` (log-log plot with
reference slopes -1 and -2), ``tables.md`` and ``results.json``. Run it with ``kd-ref run kd-limits
[--out DIR] [--seed N] [--draws N] [--classes C]``; README's Results give a run's figures.
"""
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from ..cli import ArgumentParser, int_at_least, out_folder
from ..distill.compression import MLPTeacher, class_seeds, tile_cache
from ..distill.temperature import (LogitMatchingLoss, SoftCrossEntropyLoss, TemperedDerivativeSquareErrorLoss,
                                   TemperedTeacher, centre, fitted_slope, limit_errors, tempered_softmax)
from ..mlp import MLP
from .._validation import check_positive_int
from ._report import run_from_cli, write_table, write_text_atomic


@dataclass
class Settings:
    """What a run measures (S1.D). ``fit_from``: the smallest t of the fitted slopes."""

    mode: str = "quick"
    draws: int = 200
    classes: int = 10
    scale: float = 3.0
    ts: tuple = (1.0, 10.0, 1e2, 1e3, 1e4)
    fit_from: float = 10.0
    dse_sizes: tuple = (3, 5, 4)            # the S1.9 student; the teacher has one more hidden unit
    dse_rows: int = 5
    convex_ts: tuple = (10.0, 1e2, 1e3)
    convex_rows: int = 40
    convex_inputs: int = 4

    @classmethod
    def quick(cls, **overrides):
        return replace(cls(), **overrides)

    def validate(self):
        """Check every field (errors name it); return ``self``."""
        check_positive_int(self.draws, "draws")
        check_positive_int(self.classes, "classes", minimum=2)
        return self


def _slope(ts, errors, fit_from):
    keep = [i for i, t in enumerate(ts) if t >= fit_from]
    return fitted_slope([ts[i] for i in keep], [errors[i] for i in keep])


# ------------------------------------------------------------------------------- S1.6
def s1_6_rows(settings, rng):
    """Medians over ``draws`` single-row draws of the three :class:`LimitErrors` fields at every t (S1.6)."""
    c, s = settings.classes, settings.scale
    z = rng.normal(0, s, size=(settings.draws, c)) + 1.0
    v = rng.normal(0, s, size=(settings.draws, c)) - 2.0
    rows = []
    for t in settings.ts:
        errs = [limit_errors(z[i:i + 1], v[i:i + 1], t) for i in range(settings.draws)]
        rows.append(dict(t=t, value=float(np.median([e.value for e in errs])),
                         grad=float(np.median([e.grad for e in errs])),
                         uncentred_control=float(np.median([e.control for e in errs]))))
    return rows


# ------------------------------------------------------------------------------- S1.9
def logit_jacobian(net, x):
    """d a_L,i / dx for every class i, shape (N, C, D): raw logit Jacobians (one stacked input backprop)."""
    cache = net.forward(x)
    n, c = cache.y.shape
    _, d_x = net.backprop(tile_cache(cache, c), param_grads=False, d_a=class_seeds(n, c))
    return d_x.reshape(c, n, -1).transpose(1, 0, 2)


def s1_9_rows(settings, rng):
    """|t^2 l_dse(t) - ||P(J_z - J_v)||_F^2| and the uncentred control at every t (S1.9); per-row means."""
    d, h, c = settings.dse_sizes
    student = MLP([d, h, c], ["logistic", "log_softmax"], rng)
    teacher = MLP([d, h + 1, c], ["probit", "log_softmax"], rng)
    x = rng.normal(size=(settings.dse_rows, d))
    diff = logit_jacobian(student, x) - logit_jacobian(teacher, x)
    centred = float(np.sum((diff - diff.mean(axis=1, keepdims=True)) ** 2)) / x.shape[0]
    plain = float(np.sum(diff**2)) / x.shape[0]
    rows = []
    for t in settings.ts:
        labels = TemperedTeacher(MLPTeacher(teacher), t).label(x, derivatives=True)
        scaled = t**2 * TemperedDerivativeSquareErrorLoss(t)(student, x, labels)[0]
        rows.append(dict(t=t, error=abs(scaled - centred), uncentred_control=abs(scaled - plain)))
    return rows, centred


# ------------------------------------------------------------------------------- convex student
def fit(student, loss, x, labels, scale=1.0):
    """Minimise ``scale * loss`` over the student's parameters from its current ones (Newton-CG, exact H v)."""
    start = student.params.copy()

    def f(theta):
        student.params[...] = theta
        value, grad = loss(student, x, labels)
        return scale * value, scale * grad

    def hessp(theta, v):
        student.params[...] = theta
        return scale * loss.hvp(student, x, labels, v)

    result = minimize(f, start, jac=True, hessp=hessp, method="Newton-CG", options=dict(xtol=1e-14, maxiter=200))
    student.params[...] = result.x
    return student


def convex_rows(settings, rng):
    """A linear softmax student fitted by t^2 KL at each t and by centred logit matching: max differences of
    their centred logits and of their probabilities on the transfer set (O(1/t))."""
    d, c = settings.convex_inputs, settings.classes
    teacher = MLP([d, 6, c], ["logistic", "log_softmax"], rng)
    teacher.params[...] *= 2.0
    x = rng.normal(size=(settings.convex_rows, d))
    init = MLP([d, c], ["log_softmax"], rng).params.copy()

    def student():
        net = MLP([d, c], ["log_softmax"], rng)
        net.params[...] = init
        return net

    lm = fit(student(), LogitMatchingLoss(centred=True), x, MLPTeacher(teacher).label(x))
    z_lm = lm.forward(x).a[-1]
    rows = []
    for t in settings.convex_ts:
        kd = fit(student(), SoftCrossEntropyLoss(t, kl=True), x, TemperedTeacher(MLPTeacher(teacher), t).label(x),
                 scale=t**2)
        z_kd = kd.forward(x).a[-1]
        rows.append(dict(t=t, centred_logits=float(np.max(np.abs(centre(z_kd) - centre(z_lm)))),
                         probabilities=float(np.max(np.abs(tempered_softmax(z_kd, 1.0) - tempered_softmax(z_lm, 1.0)))),
                         t_times_centred_logits=t * float(np.max(np.abs(centre(z_kd) - centre(z_lm))))))
    return rows


# ------------------------------------------------------------------------------- report
def slopes(s16, s19, convex, settings):
    """The fitted slopes of log(error) against log(t) over t >= fit_from, by name."""
    ts = [r["t"] for r in s16]
    out = {"S1.6 value": _slope(ts, [r["value"] for r in s16], settings.fit_from),
           "S1.6 gradient": _slope(ts, [r["grad"] for r in s16], settings.fit_from),
           "S1.6 uncentred control": _slope(ts, [r["uncentred_control"] for r in s16], settings.fit_from),
           "S1.9": _slope(ts, [r["error"] for r in s19], settings.fit_from),
           "S1.9 uncentred control": _slope(ts, [r["uncentred_control"] for r in s19], settings.fit_from)}
    out["convex centred logits"] = fitted_slope([r["t"] for r in convex], [r["centred_logits"] for r in convex])
    return out


def plot(s16, s19, convex, out_dir):
    """limits.png: every error against t on log-log axes, with slope -1 and -2 guides."""
    import matplotlib.pyplot as plt

    ts = np.array([r["t"] for r in s16])
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    for rows, key, label, style in ((s16, "value", "S1.6 |t²KL − ‖P(z−v)‖²/2C|", "o-"),
                                    (s16, "grad", "S1.6 max|t(q−p) − P(z−v)/C|", "s-"),
                                    (s16, "uncentred_control", "S1.6 control: uncentred ‖z−v‖²/2C", "o:"),
                                    (s19, "error", "S1.9 |t²ℓ_dse − ‖P(J_z−J_v)‖²|", "^-"),
                                    (s19, "uncentred_control", "S1.9 control: uncentred ‖J_z−J_v‖²", "^:"),
                                    (convex, "centred_logits", "convex student: centred logits", "d-")):
        ax.loglog([r["t"] for r in rows], [r[key] for r in rows], style, ms=4, label=label)
    for slope, anchor in ((-1, s16[1]["value"]), (-2, s19[1]["error"])):
        ax.loglog(ts, anchor * (ts / ts[1]) ** slope, color="grey", lw=0.8, ls="--")
        ax.annotate(f"slope {slope}", (ts[-1], anchor * (ts[-1] / ts[1]) ** slope), fontsize=7, color="grey")
    ax.set(xlabel="temperature t", ylabel="error", title="t → ∞ limits of temperature distillation (S1.6, S1.9)")
    ax.legend(fontsize=7)
    path = Path(out_dir) / "limits.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return str(path)


def run(settings, out_dir, rng):
    """Measure everything, write tables, plot and results.json into ``out_dir``; return the results."""
    began = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s16 = s1_6_rows(settings, rng)
    s19, s19_limit = s1_9_rows(settings, rng)
    convex = convex_rows(settings, rng)
    fitted = slopes(s16, s19, convex, settings)
    c = settings.classes
    parts = [f"# kd-ref run kd-limits: C = {c}, {settings.draws} draws, slopes fitted over t >= {settings.fit_from:g}",
             "",
             write_table(s16, str(out / "s1_6"), f"S1.6: medians over {settings.draws} draws (logit scale "
                         f"{settings.scale:g}, means +1 and -2): value, gradient and the uncentred control",
                         floatfmt="{:.3g}"),
             write_table(s19, str(out / "s1_9"), f"S1.9: t² l_dse against ||P(J_z - J_v)||² = {s19_limit:.4g} "
                         f"(student {'-'.join(map(str, settings.dse_sizes))}, {settings.dse_rows} inputs)",
                         floatfmt="{:.3g}"),
             write_table(convex, str(out / "convex"), f"convex student (linear {settings.convex_inputs}-{c}, "
                         f"{settings.convex_rows} transfer inputs): t² KL fit against centred logit matching, max "
                         f"differences", floatfmt="{:.3g}")]
    lines = [f"S1.6 slope of error vs t: {fitted['S1.6 value']:.2f}",
             f"S1.6 slope of gradient error vs t: {fitted['S1.6 gradient']:.2f}",
             f"S1.6 uncentred control slope: {fitted['S1.6 uncentred control']:.2f} (does not converge: "
             f"{s16[-1]['uncentred_control']:.3g} at t = {s16[-1]['t']:g})",
             f"S1.9 slope of error vs t: {fitted['S1.9']:.2f}",
             f"S1.9 uncentred control slope: {fitted['S1.9 uncentred control']:.2f} (does not converge: "
             f"{s19[-1]['uncentred_control']:.3g} at t = {s19[-1]['t']:g})",
             f"convex student slope of centred-logit difference vs t: {fitted['convex centred logits']:.2f} "
             f"(at t = {convex[-1]['t']:g}: {convex[-1]['centred_logits']:.2g})"]
    text = "\n".join(parts) + "\n" + "\n".join(lines) + "\n"
    write_text_atomic(out / "tables.md", text)
    files = {name: str(out / f"{name}.md") for name in ("s1_6", "s1_9", "convex", "tables")}
    files["plot"] = plot(s16, s19, convex, out)
    results = dict(settings=asdict(settings), s1_6=s16, s1_9=s19, s1_9_limit=s19_limit, convex=convex,
                   slopes=fitted, tables=text, files=files, seconds=time.perf_counter() - began)
    write_text_atomic(out / "results.json", json.dumps(results, indent=1))
    return results


OPTIONS = {"draws": "--draws", "classes": "--classes"}


def main(argv=None):
    parser = ArgumentParser(prog="kd-ref run kd-limits", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the only mode (seconds; accepted for symmetry)")
    parser.add_argument("--out", type=out_folder, default=os.path.join(".", "kd_ref_runs", "kd-limits"))
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--draws", type=int_at_least(1), help="random logit rows of the S1.6 medians (200)")
    parser.add_argument("--classes", type=int_at_least(2), help="number of classes C (10)")
    args = parser.parse_args(argv)
    overrides = {k: getattr(args, k) for k in ("draws", "classes") if getattr(args, k) is not None}
    return run_from_cli(parser, Settings.quick(**overrides), OPTIONS, lambda s: None, run, args.out, args.seed)
