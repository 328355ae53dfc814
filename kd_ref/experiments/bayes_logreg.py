"""``kd-ref run bayes-logreg``: compact predictive distributions for Bayesian logistic regression (section 3.3.4).

A small separable 2-D data set (class 1 right of the origin, class 0 left), the
model p(t = 1 | x, w) = sigma(w^T x) with no bias and prior N(0, 100 I) (3.41-3.42).
The posterior is slice-sampled from w = 0; the Monte Carlo predictor (3.43) is a
network with one logistic unit per sample. Four compact models of K = 10 units
(3.44) are distilled from it by SGD on inputs x ~ N(0, 10 I) (3.45):

    {batch (3.32-3.35), online (3.36-3.39)} x {cross entropy (3.22), derivative square error (3.24)}

and EP with a Gaussian posterior (3.46-3.48) is the baseline.

Settings as in the thesis and its code: the compact weights start small and random,
N(0, 1/(D + 1)) (:func:`~kd_ref.distill.predictive.compact_predictor`), and the step
size decays linearly from eta0 = 1 to 0 for all four models. Derivative square
error is the thesis's weighted form (3.24): each class term weighted by the
teacher's probability of that class, with a 1/2; online (3.38) the weights come
from the single chain sample.

``--sweep N`` replaces the experiment by a paired comparison of the two batch
models on N seeds (same posterior samples, same starting weights, same input
stream): the slope of the predictive at the origin, the difference near it and
the KL (``sweep.md/.csv``).

Outputs (in ``--out``): ``posterior.png`` (posterior density, samples, EP's
Gaussian and each compact model's weights), ``surfaces.png`` (p(t = 1 | x) of
MCMC, EP and the four compact models), ``comparison.md/.csv`` (mean and max
absolute difference from the MCMC surface on a grid, the mean difference on the
part of the grid within 2 of the origin where the MCMC surface is steepest, KL
averaged over p(x), the slope |dp/dx| at the origin, prediction time per 10,000
inputs, numbers stored).

Run it with ``kd-ref run bayes-logreg [--quick | --thesis] [--sweep N] [--out DIR] [--seed N]``.
Like ``bayes-mog`` (see its module notes) it threads one generator through data, chain,
EP and training rather than use :class:`._report.Run`: per-component streams would
change the published E3.7 and E3.8 numbers, and there is nothing to cache or resume.
"""
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..cli import int_at_least, positive_float
from ..distill.predictive import (INPUT_VAR, PRIOR_VAR, BayesianLogisticRegression, InputGenerator, bernoulli_kl,
                                  compact_predictor, mc_predictor, network_targets, toy_logistic_data, train_compact)
from ..ep import ep_logistic_regression
from ..jobs import run_tasks
from ..mcmc import SliceSampler
from ..timing import best_time
from ._report import Presets, write_table
from .bayes_mog import make_parser

NAME = "bayes_logreg"
LOSS_NAMES = ("ce", "dse")                  # keys of kd_ref.distill.predictive.LOSSES
SHORT = {"ce": "CE", "dse": "DSE"}

@dataclass(frozen=True)
class Settings(Presets):
    """The experiment's settings; ``Settings.thesis()`` those of section 3.3.4.

    ``Settings.quick()`` (the defaults) has the same structure and runs in well under a minute:
    fewer samples and steps, ten parallel chains for the online stream. Either preset takes
    overrides as keywords.
    """
    mode: str = "quick"
    n_per_class: int = 10
    n_samples: int = 2_000
    burn_in: int = 200
    n_units: int = 10                 # hidden units of the compact models
    n_steps: int = 1_500
    batch_size: int = 10
    eta0: dict = field(default_factory=lambda: {"ce": 1.0, "dse": 1.0})   # first step size per loss
    online_chains: int = 10
    grid_half_width: float = 10.0
    grid_points: int = 61
    near_origin: float = 2.0          # half width of the square where the MCMC surface is steepest
    n_eval: int = 2_000               # inputs x ~ N(0, 10 I) of the KL
    n_timing: int = 10_000
    progress: bool = False

    @classmethod
    def thesis(cls, **overrides):
        return cls.preset(dict(mode="thesis", n_samples=10_000, burn_in=1_000, n_steps=5_000, online_chains=1,
                               grid_points=101, n_eval=10_000, progress=True), **overrides)


def _sampler(posterior, n_chains, burn_in, rng, progress=False):
    """Slice sampler over w started at 0 (one chain, or ``n_chains`` independent ones) and burnt in."""
    start = np.zeros((n_chains, posterior.dim)) if n_chains > 1 else np.zeros(posterior.dim)
    sampler = SliceSampler(posterior.log_posterior, start, rng, vectorized=True)
    sampler.burn_in(burn_in, progress=progress)
    return sampler


def slope_at_origin(net):
    """|dp(t = 1 | x)/dx| at x = 0 as p |d log p / dx|, from one backprop."""
    targets = network_targets(net, np.zeros((1, net.sizes[0])))
    return float(np.linalg.norm(targets.p[0, 1] * targets.d_log_p[0, 1]))


def distil_all(posterior, samples, settings, rng):
    """Train the four compact models; return {(mode, loss): dict(net=..., result=..., seconds=...)}."""
    teacher = mc_predictor(samples)
    progress = settings.progress
    models = {}
    for mode in ("batch", "online"):
        for loss in LOSS_NAMES:
            inputs = InputGenerator(posterior.dim, rng, settings.batch_size, INPUT_VAR)
            net = compact_predictor(settings.n_units, posterior.dim, rng)
            began = time.perf_counter()
            if mode == "batch":
                labeller = teacher                       # the stored-sample predictor (3.32)
            else:
                labeller = _sampler(posterior, settings.online_chains, settings.burn_in, rng, progress)
            result = train_compact(net, loss, inputs, labeller, settings.n_steps, eta0=settings.eta0[loss],
                                   progress=progress, label=f"{mode} {SHORT[loss]}")
            models[(mode, loss)] = dict(net=net, result=result, seconds=time.perf_counter() - began)
    return teacher, models


def run(settings, out_dir, rng):
    """Run the experiment with ``settings`` (a :class:`Settings`); write figures and the table.

    Returns
    -------
    dict
        ``data`` (x, t), ``samples``, ``ep`` (EPPosterior), ``models`` (the compact
        networks), ``grid`` and ``surfaces`` (p(t=1|x) on it per method), ``table``
        (rows of the comparison), ``files``.
    """
    os.makedirs(out_dir, exist_ok=True)
    x, t = toy_logistic_data(rng, settings.n_per_class)
    posterior = BayesianLogisticRegression(x, t, PRIOR_VAR)
    began = time.perf_counter()
    progress = settings.progress
    sampler = _sampler(posterior, 1, settings.burn_in, rng, progress)
    samples = sampler.sample(settings.n_samples, progress=progress)
    mcmc_seconds = time.perf_counter() - began
    ep = ep_logistic_regression(x, t, PRIOR_VAR)
    teacher, models = distil_all(posterior, samples, settings, rng)

    h = settings.grid_half_width
    axis = np.linspace(-h, h, settings.grid_points)
    grid = np.stack(np.meshgrid(axis, axis, indexing="xy"), axis=-1).reshape(-1, 2)
    near = np.max(np.abs(grid), axis=1) <= settings.near_origin   # where the MCMC surface is steepest
    x_eval = np.sqrt(INPUT_VAR) * rng.standard_normal((settings.n_eval, 2))
    x_time = np.sqrt(INPUT_VAR) * rng.standard_normal((settings.n_timing, 2))
    chunk = 500

    def ep_log_probs(z):
        # p(t = 0 | x) = p(t = 1 | -x) for EP too (the activation's mean flips sign)
        return np.log(np.clip(np.stack([ep.predict_proba(-z), ep.predict_proba(z)], axis=1), 1e-300, 1.0))

    predictors = {"MCMC": dict(log_probs=lambda z: network_targets(teacher, z, chunk=chunk).log_p,
                               predict=lambda z: np.concatenate([teacher.predict(z[i:i + chunk])[:, 0]
                                                                 for i in range(0, len(z), chunk)]),
                               stored=samples.size, net=teacher),
                  "EP": dict(log_probs=ep_log_probs, predict=ep.predict_proba, stored=ep.mean.size + ep.cov.size,
                             net=None)}
    for (mode, loss), m in models.items():
        net = m["net"]
        predictors[f"{mode} {SHORT[loss]}"] = dict(
            log_probs=lambda z, net=net: network_targets(net, z).log_p,
            predict=lambda z, net=net: net.predict(z)[:, 0], stored=net.W[0].size, net=net)

    surfaces = {name: p["predict"](grid) for name, p in predictors.items()}
    mc_eval = predictors["MCMC"]["log_probs"](x_eval)
    origin = np.zeros((1, 2))
    table = []
    for name, p in predictors.items():
        if p["net"] is None:
            eps = 1e-4  # EP has no network to backprop through: central difference of the quadrature
            slope = np.linalg.norm([(ep.predict_proba(origin + eps * e) - ep.predict_proba(origin - eps * e))[0]
                                    / (2 * eps) for e in np.eye(2)])
        else:
            slope = slope_at_origin(p["net"])
        diff = np.abs(surfaces[name] - surfaces["MCMC"])
        table.append(dict(method=name, mean_abs_diff=float(diff.mean()), max_abs_diff=float(diff.max()),
                          mean_abs_diff_near_origin=float(diff[near].mean()),
                          avg_KL=float(np.mean(bernoulli_kl(mc_eval, p["log_probs"](x_eval)))),
                          slope_at_origin=float(slope),
                          predict_seconds_per_10k=best_time(lambda p=p: p["predict"](x_time), repeats=3,
                                                            min_seconds=0) * 10_000 / len(x_time),
                          numbers_stored=int(p["stored"])))
    files = []
    import matplotlib.pyplot as plt

    for fig_fn, fname in ((plot_posterior, "posterior.png"), (plot_surfaces, "surfaces.png")):
        fig = fig_fn(posterior, samples, ep, models, surfaces, axis)
        path = os.path.join(out_dir, fname)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    md = write_table(table, os.path.join(out_dir, "comparison"),
                     "difference from the MCMC predictive surface on the grid (and on its part with |x_i| <= "
                     f"{settings.near_origin:g}), KL(MCMC || method) averaged over x ~ N(0, 10 I), slope "
                     "|dp(t=1|x)/dx| at x = 0, prediction time per 10,000 inputs")
    files += [os.path.join(out_dir, f) for f in ("comparison.md", "comparison.csv")]
    return dict(data=(x, t), samples=samples, ep=ep, teacher=teacher, models=models, grid=grid, axis=axis,
                surfaces=surfaces, table=table, markdown=md, mcmc_seconds=mcmc_seconds, files=files,
                posterior=posterior)


def slope_sweep(settings, seeds, out_dir, jobs=1):
    """Batch CE against batch DSE on each seed, paired: same samples, starting weights and inputs.

    Returns the rows of ``sweep.md/.csv`` (in ``out_dir``): per seed the MCMC
    slope at the origin, and per loss the slope, the mean |p_model - p_MCMC| on
    the square |x_i| <= ``near_origin`` where the MCMC surface is steepest,
    KL(MCMC || model) averaged over x ~ N(0, 10 I) and the mean loss of the last
    100 minibatches. The seeds run in ``jobs`` processes (:mod:`kd_ref.jobs`): each
    has its generators of its own, so the rows do not depend on ``jobs``.
    """
    os.makedirs(out_dir, exist_ok=True)

    def report(_index, row):
        if settings.progress:
            print(f"seed {row['seed']}: slope MCMC {row['MCMC_slope']:.3f}, CE {row['CE_slope']:.3f}, "
                  f"DSE {row['DSE_slope']:.3f}", flush=True)

    rows = run_tasks(sweep_row, seeds, jobs, shared=settings, done=report)
    write_table(rows, os.path.join(out_dir, "sweep"),
                "batch CE vs batch DSE from the same start and inputs: slope |dp/dx| at x = 0, mean |p - p_MCMC| "
                f"for |x_i| <= {settings.near_origin:g}, KL(MCMC || model) over x ~ N(0, 10 I), "
                "last 100 minibatch losses")
    return rows


def sweep_row(settings, seed):
    """One row of :func:`slope_sweep`: data, posterior samples and the two paired batch models of ``seed``."""
    axis = np.linspace(-settings.near_origin, settings.near_origin, 41)
    near = np.stack(np.meshgrid(axis, axis, indexing="xy"), axis=-1).reshape(-1, 2)
    rng = np.random.default_rng(seed)
    x, t = toy_logistic_data(rng, settings.n_per_class)
    posterior = BayesianLogisticRegression(x, t, PRIOR_VAR)
    samples = _sampler(posterior, 1, settings.burn_in, rng).sample(settings.n_samples)
    teacher = mc_predictor(samples)
    x_eval = np.sqrt(INPUT_VAR) * rng.standard_normal((settings.n_eval, posterior.dim))
    mc_eval = network_targets(teacher, x_eval, chunk=500).log_p
    start = compact_predictor(settings.n_units, posterior.dim, rng).W[0].copy()   # N(0, 1/(D + 1))
    mc_near = teacher.predict(near)[:, 0]
    row = dict(seed=seed, MCMC_slope=slope_at_origin(teacher))
    for loss in LOSS_NAMES:
        stream_rng = np.random.default_rng([seed, 1])   # the same input stream for both losses
        net = compact_predictor(settings.n_units, posterior.dim, stream_rng)
        net.W[0][...] = start
        inputs = InputGenerator(posterior.dim, stream_rng, settings.batch_size, INPUT_VAR)
        result = train_compact(net, loss, inputs, teacher, settings.n_steps,
                               eta0=settings.eta0[loss])
        row[f"{SHORT[loss]}_slope"] = slope_at_origin(net)
        row[f"{SHORT[loss]}_near_origin_diff"] = float(np.mean(np.abs(net.predict(near)[:, 0] - mc_near)))
        row[f"{SHORT[loss]}_KL"] = float(np.mean(bernoulli_kl(mc_eval, network_targets(net, x_eval).log_p)))
        row[f"{SHORT[loss]}_final_loss"] = float(np.mean(result.losses[-100:]))
    row["DSE_minus_CE_slope"] = row["DSE_slope"] - row["CE_slope"]
    return row


# ------------------------------------------------------------------------ figures
def _panels():
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 3, figsize=(13, 8.2), layout="constrained")
    return fig, axes.ravel()


def plot_posterior(posterior, samples, ep, models, surfaces=None, axis=None):
    """Posterior density over w with samples, EP's Gaussian, and each compact model's K weights."""
    fig, axes = _panels()
    lo, hi = np.percentile(samples, [0.5, 99.5], axis=0)
    pad = 0.15 * (hi - lo)
    w1 = np.linspace(min(lo[0] - pad[0], -2), hi[0] + pad[0], 160)
    w2 = np.linspace(lo[1] - pad[1], hi[1] + pad[1], 160)
    W = np.stack(np.meshgrid(w1, w2, indexing="xy"), axis=-1).reshape(-1, 2)
    log_post = posterior.log_posterior(W).reshape(w2.size, w1.size)
    dens = np.exp(log_post - log_post.max())
    titles = ["MCMC samples (1,000 shown)", "EP Gaussian (contours at 1, 2, 3 sd)"] + \
        [f"{mode} {SHORT[loss]}: compact weights" for mode, loss in models]
    show = samples[:: max(1, samples.shape[0] // 1000)]
    for i, ax in enumerate(axes):
        ax.contourf(w1, w2, dens, levels=12, cmap="Greys")
        ax.set(title=titles[i], xlabel="$w_1$", ylabel="$w_2$")
        if i == 0:
            ax.plot(show[:, 0], show[:, 1], ".", ms=2, color="tab:blue", alpha=0.5)
        elif i == 1:
            inv = np.linalg.inv(ep.cov)
            d = W - ep.mean
            maha = np.sqrt(np.einsum("nd,de,ne->n", d, inv, d)).reshape(w2.size, w1.size)
            ax.contour(w1, w2, maha, levels=[1, 2, 3], colors="tab:red")
            ax.plot(*ep.mean, "r+", ms=12)
        else:
            net = list(models.values())[i - 2]["net"]
            ax.plot(net.W[0][:, 0], net.W[0][:, 1], "o", color="tab:red", mec="k", ms=7)
        ax.set_xlim(w1[0], w1[-1])
        ax.set_ylim(w2[0], w2[-1])
    return fig


def plot_surfaces(posterior, samples, ep, models, surfaces, axis):
    """p(t = 1 | x) over the input grid for MCMC, EP and the four compact models, with the data."""
    fig, axes = _panels()
    n = axis.size
    for ax, (name, surface) in zip(axes, surfaces.items()):
        im = ax.contourf(axis, axis, surface.reshape(n, n), levels=np.linspace(0, 1, 21), cmap="RdBu_r")
        x, t = posterior.x, posterior.t
        ax.plot(x[t == 1, 0], x[t == 1, 1], "o", color="tab:red", mec="k", ms=5)
        ax.plot(x[t == 0, 0], x[t == 0, 1], "o", color="tab:blue", mec="k", ms=5)
        ax.set(title=f"{name}: p(t=1|x)", xlabel="$x_1$", ylabel="$x_2$", aspect="equal")
    fig.colorbar(im, ax=list(axes), shrink=0.6, label="p(t=1|x)")
    return fig


def main(argv=None):
    parser = make_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--dse-eta0", type=positive_float, help="first step size of derivative square error (default "
                        "1, the thesis's)")
    parser.add_argument("--sweep", type=int_at_least(1), metavar="N", help="instead of the experiment, compare batch CE and "
                        "batch DSE, paired, on seeds SEED ... SEED+N-1 and write sweep.md (about 2 min per seed "
                        "with --thesis)")
    parser.add_argument("--jobs", type=int_at_least(1), default=1, help="processes for the seeds of --sweep "
                        "(default 1; the rows do not depend on it)")
    args = parser.parse_args(argv)
    if args.jobs > 1 and args.sweep is None:
        parser.error(f"--jobs: expected 1 without --sweep (only the seeds of a sweep run in parallel), "
                     f"received {args.jobs}")
    settings = Settings.thesis() if args.mode == "thesis" else Settings.quick()
    if args.dse_eta0 is not None:
        settings = replace(settings, eta0={**settings.eta0, "dse": args.dse_eta0})
    began = time.perf_counter()
    if args.sweep is not None:
        slope_sweep(settings, range(args.seed, args.seed + args.sweep), args.out, jobs=args.jobs)
        print((Path(args.out) / "sweep.md").read_text())
        print(f"{NAME} sweep ({args.mode}) done in {time.perf_counter() - began:.1f} s; wrote "
              f"{os.path.join(args.out, 'sweep.md')} and sweep.csv")
        return 0
    out = run(settings, args.out, np.random.default_rng(args.seed))
    print(out["markdown"])
    for (mode, loss), m in out["models"].items():
        print(f"{mode} {SHORT[loss]}: trained in {m['seconds']:.1f} s, last 100 minibatch losses "
              f"{np.mean(m['result'].losses[-100:]):.4g}")
    print(f"{NAME} ({args.mode}) done in {time.perf_counter() - began:.1f} s; wrote:")
    for path in out["files"]:
        print("  " + path)
    return 0
