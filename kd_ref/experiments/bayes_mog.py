"""``kd-ref run bayes-mog``: compact predictive distributions for a Bayesian mixture of Gaussians (section 3.2.3).

For each number of observations N: draw N points from the true 1-D mixture
(3.11-3.12), sample the posterior over the three means by slice sampling from 0
(3.13), and distil the Monte Carlo predictive (3.6) into a 3-component mixture
(3.14) twice:

* batch: store S samples, draw M values y from their average, fit by batch EM
  (Appendix D, section D.1) to convergence, best of several restarts;
* online: a second chain, burnt in the same way, feeds minibatches of (mu, y)
  pairs to online EM (Appendix D, section D.2) with a step size decaying linearly 1 -> 0.

Outputs (in ``--out``): per N a figure with the posterior marginals of the three
means (true values marked) and the true, Monte Carlo, batch and online densities;
``kl.md/.csv`` with KL(MC predictive || compact) by numerical integration on a grid
(and the batch EM iterations, run until the average log-likelihood rises by less
than 1e-9 nats per iteration);
``memory.md/.csv`` with the bytes of samples each method holds and the
tracemalloc peak of each method's distillation (see :func:`run_one`).

Run it with ``kd-ref run bayes-mog [--quick | --thesis] [--out DIR] [--seed N]``.

Why this experiment does not use :class:`._report.Run`: Run gives each component its own
random stream and locks a cache of finished components to the settings and base seed.
Here one generator is threaded through data, chains, EM and online EM in order, which is
what makes chapter 3's published numbers reproducible from ``--seed``; per-component streams
would change every one of them. And there is nothing to cache or resume (the quick run takes
seconds, the thesis run minutes), so Run's folders and settings lock would guard nothing,
while refusing a rerun with another ``--seed`` into the same folder.
"""
import os
import time
import tracemalloc
from dataclasses import dataclass, replace

import numpy as np
from scipy import integrate

from ..cli import ArgumentParser, int_at_least, out_folder
from ..distill.predictive import (PRIOR_VAR, TRUE_MEANS, TRUE_VARIANCES, TRUE_WEIGHTS, BayesianMoG,
                                  batch_distill_mog, online_distill_mog)
from ..mcmc import SliceSampler
from ..mog import MoG
from ..progress import Progress
from ._report import Presets, write_table

NAME = "bayes_mog"

@dataclass(frozen=True)
class Settings(Presets):
    """The experiment's settings; ``Settings.thesis()`` those of section 3.2.3.

    ``Settings.quick()`` (the defaults) runs in well under a minute on one core with the same
    structure; its online minibatches come from ten parallel chains (one sample each per
    sweep), which is cheaper per sample. Either preset takes overrides as keywords.
    """
    mode: str = "quick"
    ns: tuple = (10, 1000)            # numbers of observations, one data set each
    n_samples: int = 2_000            # posterior samples of the batch chain
    burn_in: int = 200
    n_y: int = 1_000                  # batch distillation: points y drawn per posterior sample
    online_steps: int = 100
    online_batch: int = 100
    em_restarts: int = 3
    em_max_iter: int = 20_000
    grid_points: int = 2001           # integration grid of the KL
    pilot_chains: int = 8
    online_chains: int = 10
    progress: bool = False

    @classmethod
    def thesis(cls, **overrides):
        return cls.preset(dict(mode="thesis", ns=(2, 5, 10, 20, 50, 100, 200, 500, 1000), n_samples=10_000,
                               burn_in=1_000, em_restarts=5, grid_points=4001, online_chains=1,
                               progress=True), **overrides)


# ------------------------------------------------------------------ shared helpers
def make_parser(name, description):
    """The options every chapter-3 experiment takes: --quick / --thesis, --out, --seed."""
    parser = ArgumentParser(prog=f"kd-ref run {name.replace('_', '-')}", description=description)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="small settings, under a minute (default)")
    mode.add_argument("--thesis", dest="mode", action="store_const", const="thesis",
                      help="the thesis's settings (SPEC, chapter 3)")
    parser.set_defaults(mode="quick")
    parser.add_argument("--out", type=out_folder, default=os.path.join(".", "kd_ref_runs", name),
                        help="output folder")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the numpy Generator")
    return parser


# ------------------------------------------------------------------------- pieces
def true_model():
    """The mixture that generates the observations (3.11-3.12)."""
    return MoG.from_1d(TRUE_WEIGHTS, TRUE_MEANS, TRUE_VARIANCES)


def kl_on_grid(log_p, log_q, grid):
    """KL(p || q) = int p (log p - log q) dy, the divergence batch distillation (3.6) makes small,
    by the trapezoid rule on ``grid``."""
    return float(integrate.trapezoid(np.exp(log_p) * (log_p - log_q), grid))


def burnt_in_chain(bayes, settings, rng, n_chains=1):
    """A slice sampler over the means started at 0 and burnt in (section 3.2.3).

    The burn-in runs ``settings.pilot_chains`` chains from 0 together and keeps
    the one with the highest posterior density: for large N the posterior has
    label-swapped local modes (e.g. mu_1 and mu_3 exchanged, ~30 nats lower at
    N = 1000) that univariate updates cannot leave once they fall in. With
    ``n_chains`` > 1 that chain is copied into independent chains, which then run
    a quarter of the burn-in again to decorrelate.
    """
    start = np.zeros((settings.pilot_chains, bayes.n_components))
    sampler = SliceSampler(bayes.log_posterior, start, rng, vectorized=True)
    sampler.burn_in(settings.burn_in)
    best = int(np.argmax(sampler.logp))
    if n_chains == 1:
        sampler.keep_chains(best)
    else:
        sampler.keep_chains([best] * n_chains)
        sampler.burn_in(max(1, settings.burn_in // 4), adapt=False)
    return sampler


class _Replay:
    """A stand-in chain that hands out copies of rows of an existing array, minibatch by minibatch."""

    def __init__(self, rows):
        self.rows, self.at = rows, 0

    def next_batch(self, batch_size):
        out = self.rows[self.at:self.at + batch_size].copy()
        self.at += batch_size
        return out


def online_peak_bytes(bayes, source_rows, settings, rng):
    """tracemalloc peak of online distillation fed by a replayed chain (see :func:`run_one`)."""
    tracemalloc.start()
    online_distill_mog(bayes, _Replay(source_rows), settings.online_steps, settings.online_batch, rng)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def run_one(n_obs, settings, rng):
    """Posterior, batch and online distillation for one data set of ``n_obs`` points.

    Memory is measured with tracemalloc around what each method *holds*: for batch,
    the stored samples (copied in while tracing) and the EM fit on the y's drawn
    from them; for online, the distillation loop fed by a replay of stored rows
    allocated before tracing starts, so only the minibatches it copies out count.
    The Markov chain's own state is O(chains x dimensions) for both and is left
    out (tracing the Python-heavy chain would also slow it about tenfold).
    """
    data = true_model().sample(n_obs, rng)[:, 0]
    bayes = BayesianMoG(data, TRUE_WEIGHTS, TRUE_VARIANCES, PRIOR_VAR)

    began = time.perf_counter()
    chain_samples = burnt_in_chain(bayes, settings, rng).sample(settings.n_samples)
    tracemalloc.start()
    samples = chain_samples.copy()
    em, y = batch_distill_mog(bayes, samples, settings.n_y, rng, n_restarts=settings.em_restarts,
                              max_iter=settings.em_max_iter)
    batch_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    batch_seconds = time.perf_counter() - began

    began = time.perf_counter()
    online = online_distill_mog(bayes, burnt_in_chain(bayes, settings, rng, settings.online_chains),
                                settings.online_steps,
                                settings.online_batch, rng)
    online_seconds = time.perf_counter() - began
    n_replay = settings.online_steps * settings.online_batch
    replay_rows = np.resize(chain_samples, (n_replay, bayes.n_components))  # allocated before tracing
    online_peak = online_peak_bytes(bayes, replay_rows, settings, rng)

    spread = 8.0 * np.sqrt(max(TRUE_VARIANCES))
    grid = np.linspace(samples.min() - spread, samples.max() + spread, settings.grid_points)
    log_mc = bayes.predictive_log_density(grid, samples)
    log_batch = em.model.log_density(grid[:, None])
    log_online = online.model.log_density(grid[:, None])
    return dict(
        n=n_obs, data=data, samples=samples, grid=grid,
        log_true=true_model().log_density(grid[:, None]), log_mc=log_mc, log_batch=log_batch, log_online=log_online,
        batch_model=em.model, online_model=online.model, em_iterations=em.n_iter, em_converged=em.converged,
        kl_batch=kl_on_grid(log_mc, log_batch, grid), kl_online=kl_on_grid(log_mc, log_online, grid),
        posterior_mean=samples.mean(axis=0), posterior_std=samples.std(axis=0),
        batch_seconds=batch_seconds, online_seconds=online_seconds,
        batch_stored_bytes=samples.nbytes + y.nbytes,
        online_stored_bytes=settings.online_batch * (bayes.n_components + 1) * 8,
        batch_peak_bytes=batch_peak, online_peak_bytes=online_peak,
    )


# ------------------------------------------------------------------------ figures
def plot_one(result):
    """Posterior marginals of the means (left) and the four densities (right) for one N."""
    import matplotlib.pyplot as plt
    fig, (ax_h, ax_d) = plt.subplots(1, 2, figsize=(11, 3.8))
    colours = ["tab:blue", "tab:orange", "tab:green"]
    lo, hi = np.percentile(result["samples"], [0.2, 99.8])
    lo, hi = min(lo, min(TRUE_MEANS)) - 0.5, max(hi, max(TRUE_MEANS)) + 0.5
    for k, c in enumerate(colours):
        ax_h.hist(result["samples"][:, k], bins=np.linspace(lo, hi, 80), density=True, alpha=0.5, color=c,
                  label=f"$\\mu_{k + 1}$")
        ax_h.axvline(TRUE_MEANS[k], color=c, lw=2, ls="--")
    ax_h.set(title=f"posterior marginals, N = {result['n']} (dashed: true)", xlabel="mean", xlim=(lo, hi))
    ax_h.legend(fontsize=8)
    g = result["grid"]
    ax_d.plot(g, np.exp(result["log_true"]), "k:", lw=2, label="true model")
    ax_d.plot(g, np.exp(result["log_mc"]), color="tab:gray", lw=3, alpha=0.6, label="MC predictive")
    ax_d.plot(g, np.exp(result["log_batch"]), color="tab:red", label=f"batch compact (KL {result['kl_batch']:.3g})")
    ax_d.plot(g, np.exp(result["log_online"]), "--", color="tab:blue",
              label=f"online compact (KL {result['kl_online']:.3g})")
    ax_d.set(title="predictive densities", xlabel="y", xlim=(-15, 15))
    ax_d.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_kl(results):
    """KL(MC predictive || compact) against N for batch and online distillation."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ns = [r["n"] for r in results]
    ax.loglog(ns, [max(r["kl_batch"], 1e-6) for r in results], "o-", label="batch")
    ax.loglog(ns, [max(r["kl_online"], 1e-6) for r in results], "s--", label="online")
    ax.set(xlabel="observations N", ylabel="KL (nats)", title="KL(MC predictive || compact)")
    ax.legend()
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- run
def run(settings, out_dir, rng):
    """Run the experiment with ``settings`` (a :class:`Settings`); write figures and tables.

    Returns
    -------
    dict
        ``results`` (one dict per N, see :func:`run_one`), ``kl_table`` and
        ``memory_table`` (lists of row dicts), ``files`` (paths written).
    """
    os.makedirs(out_dir, exist_ok=True)
    import matplotlib.pyplot as plt

    results, files = [], []
    bar = Progress(len(settings.ns), label="bayes-mog data sets", enabled=settings.progress)
    for i, n_obs in enumerate(settings.ns):
        res = run_one(n_obs, settings, rng)
        results.append(res)
        bar.update(i + 1, N=n_obs, KL_batch=res["kl_batch"], KL_online=res["kl_online"])
        fig = plot_one(res)
        path = os.path.join(out_dir, f"mog_N{n_obs}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    bar.close()
    fig = plot_kl(results)
    path = os.path.join(out_dir, "kl_vs_N.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)
    kl_rows = [dict(N=r["n"], max_abs_mean_error=float(np.max(np.abs(r["posterior_mean"] - TRUE_MEANS))),
                    KL_batch=r["kl_batch"], KL_online=r["kl_online"], em_iterations=r["em_iterations"],
                    em_converged=r["em_converged"],
                    batch_seconds=r["batch_seconds"], online_seconds=r["online_seconds"]) for r in results]
    kl_md = write_table(kl_rows, os.path.join(out_dir, "kl"), "KL(MC predictive || compact), nats, by numerical "
                        "integration; posterior-mean error of the batch chain")
    last = results[-1]
    memory_rows = [
        dict(method="batch", stored_samples_bytes=last["batch_stored_bytes"], tracemalloc_peak_bytes=last["batch_peak_bytes"]),
        dict(method="online", stored_samples_bytes=last["online_stored_bytes"], tracemalloc_peak_bytes=last["online_peak_bytes"]),
        dict(method="ratio batch/online",
             stored_samples_bytes=round(last["batch_stored_bytes"] / last["online_stored_bytes"], 1),
             tracemalloc_peak_bytes=round(last["batch_peak_bytes"] / last["online_peak_bytes"], 1)),
    ]
    mem_md = write_table(memory_rows, os.path.join(out_dir, "memory"),
                         f"memory of each method for N = {last['n']}: bytes of samples held at once, and the "
                         "tracemalloc peak of the distillation (stored samples + EM working memory)")
    files += [os.path.join(out_dir, f) for f in ("kl.md", "kl.csv", "memory.md", "memory.csv")]
    return dict(results=results, kl_table=kl_rows, memory_table=memory_rows, kl_markdown=kl_md,
                memory_markdown=mem_md, files=files)


def main(argv=None):
    args = make_parser(NAME, __doc__.splitlines()[0]).parse_args(argv)
    settings = Settings.thesis() if args.mode == "thesis" else Settings.quick()
    began = time.perf_counter()
    out = run(settings, args.out, np.random.default_rng(args.seed))
    print(out["kl_markdown"])
    print(out["memory_markdown"])
    print(f"{NAME} ({args.mode}) done in {time.perf_counter() - began:.1f} s; wrote:")
    for path in out["files"]:
        print("  " + path)
    return 0
