"""``kd-ref run gped-toy``: Bayesian Dark Knowledge's 2-D toy study with GPED's targets (SPEC_seeds S3.E).

Data: ``toy_logistic_data`` (2 classes x 10 points, as BDK §3.1). Teacher: a 2-10-2
ReLU/log-softmax net (52 parameters), prior N(0, tau^-1 I) with tau = 1. Ground truth:
the teacher's posterior sampled by slice sampling (kd_ref has no HMC): many short chains, 100 x 40
samples (``--quick``) or 200 x 100 (``--paper``), each chain 1,000 burn-in sweeps and then thinned by
10. S3.E names 4 long chains; many short ones cost a tenth of the time, since the vectorised sampler
advances 100 chains for about 3x the price of 4, and independent starts cover the posterior's
modes better than a few long chains do. The
teacher chain: SGLD (S3.1), full batch, eta = 1e-3 constant (``--quick``) or Welling-Teh
decay (``--paper``), burn-in B, thinning H; its kept states are cached and replayed to
every student, so all students see the same chain (S3.11, one step per kept state).

Distillation inputs D': points uniform on [-6, 6]^2 (BDK samples the input domain; a
finite D' so that U_o can revisit rows, S3.6), M' = 50 per step, Adam 1e-3, no input
noise. Students 2-10-2, 2-100-2, 2-10-10-2 (BDK's three), each with the targets

* ``predictive U_s``: the predictive, U_s, cross entropy (BDK, S3.12);
* ``predictive U_o``: the same with U_o (batch distillation on D', S3.12), so that U_s and U_o are
  compared on the predictive too;
* ``entropy U_s`` / ``entropy U_o``: the expected entropy, MAE (S3.10), U_s vs U_o;
* ``both``: predictive and expected entropy (U_o, GPED Experiment 4);
* ``EnD2``: EnD^2's Dirichlet (S3.13, U_s);

and the plug-in baseline: the MAP net (Adam on the log posterior), p(y | x, theta_MAP).

On a 100 x 100 grid on [-6, 6]^2: maps of p(y = 1 | x), TU, EU and KU (S3.14) for the
truth, the SGLD ensemble, the plug-in net and every student (blank where a student does
not output the quantity); the table of grid-averaged KL(truth || model)
(``bernoulli_kl``) and the MAE of EU and TU against the truth, beside BDK Table 2's
reference KLs (different toy data and HMC truth: the ordering is the target).
``--paper`` runs 5 seeds and reports mean +- 2 SE. Outputs (``--out``): ``table.md/.csv``,
``results.json``, ``maps_*.png``, ``summary.md``; truth samples, the SGLD chain, the MAP
net and the students are cached in ``OUT/cache``, so a stopped run resumes.
"""
import os
from dataclasses import dataclass

import numpy as np
from .. import npzfile
from ..cli import ArgumentParser, int_at_least, out_folder
from ..distill.gped import (end2_settings, end2_uncertainty, gped_distill, gped_settings, gped_student,
                            gped_uncertainty, bdk_settings, student_log_probs)
from ..distill.predictive import bernoulli_kl, toy_logistic_data
from ..mcmc import SGLD, SliceSampler, mlp_log_posterior_gradient
from ..metrics import entropy, mean_2se
from ..mlp import MLP
from ..nonlinearities import LogSoftmax
from ..optim import Adam, PowerDecay, train
from ..posterior import EnsembleAccumulator, Uncertainty
from .._validation import check_positive_int
from ._report import Presets, Run, run_from_cli, write_table, write_text_atomic

NAME = "gped-toy"
KIND = "kd_ref.gped_toy"
TARGETS = ("predictive U_s", "predictive U_o", "entropy U_s", "entropy U_o", "both", "EnD2")
STUDENTS = ((10,), (100,), (10, 10))
#: BDK Table 2 (KL of the predictive on their toy problem, HMC truth).
BDK_KL = {"plug-in (SGD/MAP)": 0.246, "SGLD ensemble": 0.007, "2-10-2": 0.031, "2-100-2": 0.014, "2-10-10-2": 0.009}
BOX = 6.0
#: numbers of last kept SGLD states whose ensemble KL the summary prints (``window_kls``)
WINDOWS = (1, 10, 100, 1000)


@dataclass
class Settings(Presets):
    """Everything that defines a run; ``quick()`` and ``paper()`` give S3.E's presets."""

    mode: str = "quick"
    n_per_class: int = 10
    prior_precision: float = 1.0
    hidden: int = 10
    truth_chains: int = 100
    truth_burn_in: int = 1000
    truth_samples: int = 40             # per chain
    truth_thin: int = 10
    sgld_steps: int = 20000
    sgld_burn_in: int = 1000
    sgld_eta: float = 1e-3
    sgld_decay: bool = False
    thin: int = 10
    batch_size: int = 50
    n_inputs: int = 1000
    lr: float = 1e-3
    map_steps: int = 5000
    grid: int = 100
    students: tuple = STUDENTS
    seeds: int = 1
    progress: bool = True

    @classmethod
    def paper(cls, **overrides):
        return cls.preset(dict(mode="paper", truth_chains=200, truth_samples=100, sgld_steps=100000, sgld_decay=True,
                               seeds=5), **overrides)

    def validate(self):
        """Check every field (errors name it); return ``self``."""
        for name in ("n_per_class", "hidden", "truth_chains", "truth_burn_in", "truth_samples", "truth_thin",
                     "sgld_steps", "thin", "batch_size", "n_inputs", "map_steps", "grid", "seeds"):
            check_positive_int(getattr(self, name), name)
        check_positive_int(self.sgld_burn_in, "sgld_burn_in", minimum=0)
        if self.sgld_steps <= self.sgld_burn_in + self.thin:
            raise ValueError(f"sgld_steps: expected more than sgld_burn_in + thin = {self.sgld_burn_in + self.thin}, "
                             f"received {self.sgld_steps}")
        for name in ("prior_precision", "sgld_eta", "lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a positive number, received {getattr(self, name)!r}")
        return self

    def record(self):
        """The settings the cache depends on (``progress`` does not)."""
        return {k: v for k, v in vars(self).items() if k != "progress"}


# ------------------------------------------------------------------- the teacher's posterior
def teacher_net(settings, rng):
    """The 2-H-2 ReLU/log-softmax teacher (its params are theta)."""
    return MLP([2, settings.hidden, 2], ["relu", "log_softmax"], rng)


def batched_log_posterior(net, x, labels, prior_precision):
    """thetas (M, P) -> log p(theta | D) (M,) for a one-hidden-layer ``net``, every theta in one pass.

    The vectorised twin of ``mlp_log_posterior_gradient(...).log_posterior`` (tested against it):
    a_1 = x W_1^T + b_1, z = relu(a_1), a_2 = z W_2^T + b_2, log p = log-softmax(a_2) (B.2-B.6).
    """
    lay = net.layout
    (h, d), (c, _) = lay.shapes[0], lay.shapes[2]
    n = x.shape[0]
    rows = np.arange(n)
    log_softmax = LogSoftmax()

    def log_posterior(thetas):
        m = thetas.shape[0]
        W1, b1 = thetas[:, lay.slice("W1")].reshape(m, h, d), thetas[:, lay.slice("b1")]
        W2, b2 = thetas[:, lay.slice("W2")].reshape(m, c, h), thetas[:, lay.slice("b2")]
        # one batched matrix product per layer over the M thetas (BLAS; np.einsum here was ~3.5x slower)
        z = np.maximum(np.matmul(x, W1.transpose(0, 2, 1)) + b1[:, None, :], 0.0)        # (M, N, H)
        a = np.matmul(z, W2.transpose(0, 2, 1)) + b2[:, None, :]                          # (M, N, C)
        log_p = log_softmax.forward(a.reshape(m * n, c)).reshape(m, n, c)            # B.37-B.39
        return log_p[:, rows, labels].sum(axis=1) - 0.5 * prior_precision * np.sum(thetas ** 2, axis=1)

    return log_posterior


def _cached(run, name, make, *keys):
    """The arrays of ``cache/name.npz``, made by ``make()`` (a dict of arrays) and saved atomically the first time."""
    path = run.cache / f"{name}.npz"
    if path.exists():
        return npzfile.load(path, KIND, {1}, label="cache", required=keys)
    arrays = make()
    npzfile.save(path, KIND, 1, **arrays)
    return arrays


def truth_samples(settings, net, x, labels, rng):
    """Slice-sampling draws of theta (S, P): ``truth_chains`` chains, burn-in then thinned samples."""
    start = 0.1 * rng.standard_normal((settings.truth_chains, net.n_params))
    sampler = SliceSampler(batched_log_posterior(net, x, labels, settings.prior_precision), start, rng,
                           thin=settings.truth_thin, vectorized=True)
    sampler.burn_in(settings.truth_burn_in, progress=settings.progress)
    return sampler.sample(settings.truth_samples, progress=settings.progress).reshape(-1, net.n_params)


def sgld_chain(settings, net, x, labels, rng):
    """The kept SGLD states (K, P), K = (T - B) / H: full batch, constant eta or Welling-Teh decay (S3.1-S3.2)."""
    grad = mlp_log_posterior_gradient(net, x, labels, settings.prior_precision)
    theta = 0.1 * rng.standard_normal(net.n_params)
    # Welling & Teh: eta_t = a (b + t)^-0.55, here with eta_0 = sgld_eta and b = sgld_burn_in + 1
    b = settings.sgld_burn_in + 1.0
    schedule = PowerDecay(t0=b, kappa=0.55, scale=settings.sgld_eta * b ** 0.55) if settings.sgld_decay \
        else settings.sgld_eta
    chain = SGLD(grad, theta, rng, schedule, burn_in=settings.sgld_burn_in, thin=settings.thin)
    return chain.next_batch(n_kept(settings))


def n_kept(settings):
    return (settings.sgld_steps - settings.sgld_burn_in) // settings.thin


def map_params(settings, net, x, labels, rng):
    """The plug-in baseline: theta_MAP by full-batch Adam (lr 1e-2) on -log p(theta | D)."""
    grad = mlp_log_posterior_gradient(net, x, labels, settings.prior_precision)
    theta = 0.1 * rng.standard_normal(net.n_params)
    train(theta, lambda _: (-grad.log_posterior(theta), -grad.full_gradient(theta)), lambda: None, Adam(1e-2),
          settings.map_steps, progress=False)
    return theta


class Replay:
    """A recorded chain handed out again: ``next_batch(k)`` gives its next k rows (every student sees one chain)."""

    def __init__(self, states):
        self.states, self.position = states, 0
        self.n_dim = states.shape[1]

    def next_batch(self, k):
        if self.position + k > len(self.states):
            raise ValueError(f"k: expected at most {len(self.states) - self.position} more states, received {k}")
        out = self.states[self.position:self.position + k]
        self.position += k
        return out


def ensemble(net, thetas, grid):
    """The ensemble's log-predictive (G, 2) and TU / EU / KU on ``grid`` (S3.14), one member at a time."""
    acc = EnsembleAccumulator(grid.shape[0], 2)
    for theta in thetas:
        net.set_params(theta)
        acc.add(net.predict(grid))
    return acc.log_predictive(), acc.uncertainty()


# ------------------------------------------------------------------------ the students
def target_settings(target, settings):
    """The GPEDSettings of a target (S3.11-S3.13) with S3.E's numbers."""
    common = dict(n_steps=n_kept(settings), batch_size=settings.batch_size, input_noise=0.0, lr=settings.lr,
                  burn_in=settings.sgld_burn_in, thin=settings.thin)
    if target == "predictive U_s":
        return bdk_settings(**common)
    if target == "predictive U_o":
        return gped_settings("predictive", **common)
    if target == "entropy U_s":
        return gped_settings("entropy", estimator="stochastic", **common)
    if target == "entropy U_o":
        return gped_settings("entropy", **common)
    if target == "both":
        return gped_settings("both", **common)
    return end2_settings(**common)


HEADS = {"predictive U_s": "predictive", "predictive U_o": "predictive", "entropy U_s": "entropy",
         "entropy U_o": "entropy", "both": "entropy", "EnD2": "dirichlet"}


def student_outputs(student, target, grid):
    """log-predictive (G, 2) or None, and the Uncertainty with NaN where the target gives no such output."""
    nan = np.full(grid.shape[0], np.nan)
    if HEADS[target] == "predictive":
        log_p = student_log_probs(student, grid, head="predictive")
        return log_p, Uncertainty(entropy(log_p), nan, nan)
    if target == "EnD2":
        return student_log_probs(student, grid, head="dirichlet"), end2_uncertainty(student, grid)
    u = gped_uncertainty(student, grid)
    if target == "both":
        return student_log_probs(student, grid), u
    return None, Uncertainty(nan, u.data, nan)


def distil(settings, teacher, chain, hidden, target, d_prime, rng):
    """One student distilled from the replayed chain; returns its params."""
    s = target_settings(target, settings)
    shape = MLP([2, *hidden, 2], ["relu"] * len(hidden) + ["log_softmax"], rng)   # gives the student its layers
    student = gped_student(shape, rng, head=HEADS[target])
    gped_distill(teacher, Replay(chain), student, s.make_g(), s.make_estimator(len(d_prime), 2), s.make_loss(),
                 d_prime, s, rng, progress=False)
    return student


def name_of(hidden):
    return "-".join(map(str, (2, *hidden, 2)))


# ------------------------------------------------------------------------------- scoring
def scores(truth_log_p, truth_u, log_p, u):
    """Grid averages: KL(truth || model), MAE of EU and of TU against the truth (NaN where not output)."""
    kl = float(np.mean(bernoulli_kl(truth_log_p, log_p))) if log_p is not None else float("nan")
    return dict(kl=kl, eu_mae=float(np.mean(np.abs(u.data - truth_u.data))),
                tu_mae=float(np.mean(np.abs(u.total - truth_u.total))))


def one_seed(settings, run, seed, grid):
    """Every model of one seed: {model name: (log-predictive or None, Uncertainty)}, cached per component;
    the data; and the chain's :func:`window_kls`."""
    x, t = toy_logistic_data(run.rng(0, seed), n_per_class=settings.n_per_class)
    labels = t.astype(int)
    net = teacher_net(settings, run.rng(1, seed))
    say = (lambda m: print(f"seed {seed}: {m}", flush=True)) if settings.progress else (lambda m: None)
    say("slice sampling the ground truth")
    truth = _cached(run, f"truth_{seed}", lambda: dict(thetas=truth_samples(settings, net, x, labels,
                                                                              run.rng(2, seed))), "thetas")["thetas"]
    say("SGLD chain")
    chain = _cached(run, f"sgld_{seed}", lambda: dict(thetas=sgld_chain(settings, net, x, labels, run.rng(3, seed))),
                    "thetas")["thetas"]
    theta_map = _cached(run, f"map_{seed}", lambda: dict(theta=map_params(settings, net, x, labels,
                                                                          run.rng(4, seed))), "theta")["theta"]
    models = {"ground truth (slice)": ensemble(net, truth, grid), "SGLD ensemble": ensemble(net, chain, grid),
              "plug-in (SGD/MAP)": ensemble(net, theta_map[None], grid)}
    d_prime = run.rng(5, seed).uniform(-BOX, BOX, size=(settings.n_inputs, 2))
    for i, hidden in enumerate(settings.students):
        for j, target in enumerate(TARGETS):
            label = f"{name_of(hidden)} {target}"
            say(f"student {label}")
            student = gped_student(MLP([2, *hidden, 2], ["relu"] * len(hidden) + ["log_softmax"], run.rng(9)),
                                   run.rng(9), head=HEADS[target])
            params = _cached(run, f"student_{seed}_{i}_{j}", lambda: dict(
                params=distil(settings, net, chain, hidden, target, d_prime, run.rng(6, seed, i, j)).params),
                "params")["params"]
            student.set_params(params)
            models[label] = student_outputs(student, target, grid)
    return models, (x, labels), window_kls(net, chain, grid, models["ground truth (slice)"][0])


def conclusions(table):
    """BDK's and GPED's conclusions checked on the mean KLs and EU MAEs: list of (statement, holds, numbers)."""
    kl = {r["model"]: r["kl"] for r in table}
    sgld, plug = kl["SGLD ensemble"], kl["plug-in (SGD/MAP)"]
    out = [("SGLD much better than the plug-in (KL at least 5x smaller)", sgld * 5 < plug,
            f"SGLD {sgld:.4g}, plug-in {plug:.4g}")]
    for estimator in ("U_s", "U_o"):
        pred = {name_of(h): kl[f"{name_of(h)} predictive {estimator}"] for h in STUDENTS
                if f"{name_of(h)} predictive {estimator}" in kl}
        if not pred:
            continue
        out.append((f"distilled predictive students ({estimator}) between SGLD and the plug-in",
                    all(sgld <= v <= plug for v in pred.values()), ", ".join(f"{k} {v:.4g}" for k, v in pred.items())))
        if "2-10-2" in pred:
            for big in ("2-100-2", "2-10-10-2"):
                if big in pred:
                    out.append((f"{big} better than 2-10-2 ({estimator})", pred[big] < pred["2-10-2"],
                                f"{pred[big]:.4g} vs {pred['2-10-2']:.4g}"))
    eu = {r["model"]: r["eu_mae"] for r in table}
    for h in STUDENTS:
        name = name_of(h)
        s, o = kl.get(f"{name} predictive U_s"), kl.get(f"{name} predictive U_o")
        if s is not None and o is not None:
            out.append((f"{name}: U_o's predictive closer than U_s's (GPED)", o < s, f"KL U_o {o:.4g}, U_s {s:.4g}"))
        s, o = eu.get(f"{name} entropy U_s"), eu.get(f"{name} entropy U_o")
        if s is not None and o is not None:
            out.append((f"{name}: U_o's expected entropy closer than U_s's (GPED)", o < s,
                        f"EU MAE U_o {o:.4g}, U_s {s:.4g}"))
    return out


def window_kls(net, chain, grid, truth_log_p, windows=WINDOWS):
    """{k: grid-averaged KL(truth || ensemble of the chain's last k kept states)}: how slowly the chain mixes.

    U_s (S3.5) hands a student one state per step, and a student with a constant step size forgets
    old targets, so it can do no better than an average over a recent stretch of the chain; U_o
    (S3.6) averages every state itself.
    """
    return {k: float(np.mean(bernoulli_kl(truth_log_p, ensemble(net, chain[-k:], grid)[0])))
            for k in windows if k <= len(chain)}


def plot_maps(out_dir, models, grid_side, data, prefix, names):
    """Rows p(y=1|x), TU, EU, KU; one column per model in ``names``."""
    import matplotlib.pyplot as plt

    x, labels = data
    fig, axes = plt.subplots(4, len(names), figsize=(2.2 * len(names), 8.4), layout="constrained", squeeze=False)
    ext = (-BOX, BOX, -BOX, BOX)
    for c, name in enumerate(names):
        log_p, u = models[name]
        rows = (np.exp(log_p[:, 1]) if log_p is not None else np.full(grid_side ** 2, np.nan), u.total, u.data,
                u.knowledge)
        for r, (values, what) in enumerate(zip(rows, ("p(y=1|x)", "TU", "EU", "KU"))):
            ax = axes[r, c]
            im = ax.imshow(values.reshape(grid_side, grid_side), origin="lower", extent=ext, cmap="viridis",
                           vmin=0, vmax=1 if r == 0 else np.log(2))
            ax.scatter(x[:, 0], x[:, 1], c=labels, cmap="bwr", s=6, edgecolors="k", linewidths=0.3)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=7)
            if c == 0:
                ax.set_ylabel(what)
        fig.colorbar(im, ax=axes[:, -1], shrink=0.5)
    path = os.path.join(out_dir, f"maps_{prefix}.png")
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return path


def run(settings, out_dir, rng):
    """Run the experiment; write tables, maps and the summary into ``out_dir``; return everything measured.

    Streams (:class:`._report.Run`), per seed s: (0, s) the data, (1, s) the teacher's layout, (2, s) slice
    sampling, (3, s) SGLD, (4, s) the MAP net, (5, s) D', (6, s, i, j) student i on target j.
    """
    settings = settings.validate()
    run = Run(out_dir, rng, settings.record())
    side = np.linspace(-BOX, BOX, settings.grid)
    grid = np.stack(np.meshgrid(side, side), axis=-1).reshape(-1, 2)      # row-major: y varies slowest
    per_seed, windows = [], []
    for seed in range(settings.seeds):
        models, data, window = one_seed(settings, run, seed, grid)
        windows.append(window)
        truth_log_p, truth_u = models["ground truth (slice)"]
        per_seed.append({name: scores(truth_log_p, truth_u, lp, u) for name, (lp, u) in models.items()})
        if seed == 0:
            first, first_data = models, data
    table = []
    for name in per_seed[0]:
        row = dict(model=name)
        for key in ("kl", "eu_mae", "tu_mae"):
            values = np.array([s[name][key] for s in per_seed])
            row[key] = float(values.mean())
            if settings.seeds > 1:
                row[f"{key}_2se"] = float(mean_2se(values)[1]) if np.all(np.isfinite(values)) else float("nan")
        size = name.split(" ")[0]
        ref = BDK_KL.get(name, BDK_KL.get(size) if name.endswith(" predictive U_s") else None)
        row["BDK_kl"] = "-" if ref is None else ref
        table.append(row)
    files = [plot_maps(out_dir, first, settings.grid, first_data, "teachers",
                       ["ground truth (slice)", "SGLD ensemble", "plug-in (SGD/MAP)"])]
    for hidden in settings.students:
        files.append(plot_maps(out_dir, first, settings.grid, first_data, name_of(hidden),
                               [f"{name_of(hidden)} {t}" for t in TARGETS]))
    checks = conclusions(table)
    window = {k: float(np.mean([w[k] for w in windows])) for k in windows[0]}
    summary = "\n".join(["### BDK's and GPED's conclusions (grid-averaged KL against the slice-sampled truth)", ""] +
                         [f"- {'reproduces' if ok else 'does NOT reproduce'}: {s} ({n})" for s, ok, n in checks] +
                         ["", "### How slowly the SGLD chain mixes", "",
                          "KL(truth || ensemble of the chain's last k kept states), mean over seeds: " +
                          ", ".join(f"k = {k}: {v:.4g}" for k, v in window.items()) +
                          f" (all {n_kept(settings)}: the SGLD ensemble's row). A U_s student with a constant step "
                          "size averages its targets over a recent stretch of the chain only."]) + "\n"
    stem = os.path.join(out_dir, "table")
    title = (f"gped-toy ({settings.mode}, {settings.seeds} seed(s){', mean and 2 SE' if settings.seeds > 1 else ''})"
             f": grid-averaged KL(truth || model), MAE of EU and TU on a {settings.grid}x{settings.grid} grid on "
             f"[-6, 6]^2; BDK Table 2's KL beside (other toy data, HMC truth)")
    tables = write_table(table, stem, title) + "\n" + summary
    write_text_atomic(os.path.join(out_dir, "summary.md"), tables)
    run.files.update({os.path.basename(f)[:-4]: f for f in files})
    run.files.update(table=stem + ".csv", summary=os.path.join(out_dir, "summary.md"))
    results = run.finish(dict(table=table, window_kls=window, conclusions=[dict(statement=s, holds=bool(ok), numbers=n)
                                                        for s, ok, n in checks]))
    return {**results, "models": first, "tables": tables}


def main(argv=None):
    parser = ArgumentParser(prog="kd-ref run gped-toy", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="SGLD T = 20,000 at constant eta, 100 x 40 slice samples, one seed (default; 7 min on "
                           "a loaded 2-core machine)")
    mode.add_argument("--paper", action="store_true",
                      help="SGLD T = 1e5 with Welling-Teh decay, 200 x 100 slice samples, 5 seeds (mean +- 2 SE; "
                           "about 1.5 h on 2 cores)")
    parser.add_argument("--out", type=out_folder, default=os.path.join(".", "kd_ref_runs", NAME), help="output folder")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the numpy Generator")
    args = parser.parse_args(argv)
    settings = Settings.paper() if args.paper else Settings.quick()
    return run_from_cli(parser, settings, {}, lambda s: None, run, args.out, args.seed)
