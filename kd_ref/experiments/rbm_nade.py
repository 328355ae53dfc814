"""``kd-ref run rbm-nade``: distil an RBM into a NADE, then estimate the RBM's log Z with the NADE (chapter 4).

Steps, all through :mod:`kd_ref.distill.generative` and :mod:`kd_ref.partition`:

1. the teacher: in ``--quick`` mode a small RBM (20 hidden units) trained by CD-k on
   binarised MNIST (or, without ``KD_REF_DATA``, on stochastically binarised synthetic
   digits), small enough for its exact log Z by enumeration; in ``--medium`` and
   ``--thesis`` mode Salakhutdinov and Murray's CD25(500) RBM from ``KD_REF_DATA``;
2. the baselines: annealed importance sampling (base model from the training pixels'
   marginals) and the trivial bound max log phi found by hill climbing, which is also the
   constant c of the square-error loss (4.13);
3. for every NADE size and loss (KL, square error; score matching on request), a NADE
   trained on the thesis's stream of Gibbs samples (section 4.2.3), monitoring the
   average log q of held-out images and the two KL bounds. The stream does not depend on
   the student, so it is drawn once per run (``cache/stream.npz``, bits packed: 59 MB at
   ``--thesis``, resumable while it is drawn) and every NADE reads the same minibatches;
   ``--dtype float32`` draws it and trains the NADEs in single precision, as the released
   code did (the NADEs are evaluated in float64);
4. for every NADE: average test log-probability, the KL upper and lower bounds,
   importance sampling and bridge sampling with +-3 standard-error intervals and the CPU
   time of each (section 4.2.4). The upper bound's RBM samples come from chains of their
   own, started at random states (``upper_chains`` x ``upper_burn_in`` sweeps; the thesis
   10,000 x 2,000), drawn once and shared by every NADE; bridge sampling's chains start at
   the NADE's samples. The same average over those NADE-seeded chains is reported next to
   the bound for comparison (README, Experiments, says why it is no bound);
5. tables (Markdown, CSV), figures (PNG): progress curves, per-image agreement of log q
   with the RBM's log p, samples of the RBM and of every NADE, and features.

Everything is cached under ``OUT/cache`` and training checkpoints under ``OUT/ckpt`` (every
500 steps and on Ctrl-C), so an interrupted run (``--thesis`` takes hours) started again
with the same arguments resumes and ends with exactly the numbers of an uninterrupted
run (timings aside).
"""
import functools
import os
import time
from argparse import ArgumentTypeError
from dataclasses import asdict, dataclass

import numpy as np

from .. import datasets, npzfile, toydata
from ..cli import ArgumentParser, int_at_least, out_folder
from .._validation import check_in_range, check_positive_int
from ..metrics import mean_2se
from ..distill.generative import (LOSSES, ChainStream, RecordedStream, distill_nade, estimate_log_z,
                                  loss_by_name, record_stream)
from ..nade import NADE, raster_column_order
from ..optim import SGD
from ..partition import ais_rbm
from ..rbm import RBM, fit_cd, hill_climb, random_chain_samples
from ..jobs import run_tasks
from ._report import Presets, Run, image_grid, run_from_cli, write_table

CURVE_KIND = "kd_ref.rbm_nade.curve"
PUBLISHED_LOG_Z = 451.28   # Salakhutdinov and Murray (2008), AIS, CD25(500)
LOSS_NAMES = {"kl": "KL", "se": "square error", "sm": "score matching"}
UPPER_KIND = "kd_ref.rbm_nade.upper_samples"
MARGINALS_KIND = "kd_ref.rbm_nade.marginals"   # cache/marginals.npz, read by `kd-ref bench logz`
ESTIMATORS = ("upper", "upper_seeded", "lower", "importance", "bridge")
ESTIMATOR_NAMES = {"upper": "KL upper bound (4.46), random chains",
                   "upper_seeded": "same average, chains started at the NADE samples (not a bound; comparison)",
                   "lower": "KL lower bound (4.49)",
                   "importance": "importance sampling (4.52)", "bridge": "bridge sampling (4.54)"}
MAX_EXACT_UNITS = 22       # enumerate 2^22 states at most for the exact log Z


@dataclass
class Settings(Presets):
    """Everything that defines a run; ``quick()``, ``medium()`` and ``thesis()`` are the presets."""

    mode: str = "quick"
    data: str = "auto"                 # auto (binarised MNIST when KD_REF_DATA has it, else synthetic) | mnist | synthetic
    rbm: str = "train"                 # train: a small RBM by CD-k | cd25: the reference CD25(500)
    rbm_hidden: int = 20
    cd_k: int = 5
    cd_steps: int = 3000
    cd_rate: float = 0.05
    n_train: int = 20000               # training images for the small RBM and for AIS's base model
    n_test: int = 1000                 # test images of the tables and the agreement plot
    curve_test: int = 500              # test images monitored during training
    nade_hidden: tuple = (100,)
    losses: tuple = ("kl", "se")
    nades: tuple = None                # explicit ((H, loss), ...) pairs instead of the grid nade_hidden x losses
    n_steps: int = 3000
    batch_size: int = 20
    n_chains: int = 2000
    burn_in: int = 500                 # sweeps before the training stream starts
    n_samples: int = 5000              # NADE samples (and RBM chains) per log Z estimate
    sample_burn_in: int = 100          # sweeps of the chains started at the NADE samples
    upper_chains: int = 5000           # chains from random states for the KL upper bound (4.46), shared by all NADEs
    upper_burn_in: int = 500           # their sweeps
    ais_runs: int = 100
    ais_temperatures: int = 1000
    ais_schedule: str = "uniform"
    hill_restarts: int = 10
    bound_samples: int = 200
    curve_points: int = 20
    dtype: str = "float64"             # precision of the training stream's sweeps and of NADE training
    progress: bool = True
    figures: bool = True

    @classmethod
    def medium(cls, **overrides):
        return cls.preset(dict(mode="medium", data="mnist", rbm="cd25", n_test=10000, curve_test=1000,
                               nade_hidden=(500,), n_steps=3000, burn_in=2000, n_samples=5000, sample_burn_in=2000,
                               upper_chains=2000, upper_burn_in=2000, ais_temperatures=14500,
                               ais_schedule="piecewise"), **overrides)

    @classmethod
    def thesis(cls, **overrides):
        return cls.preset(dict(mode="thesis", data="mnist", rbm="cd25", n_test=10000, curve_test=1000,
                               nade_hidden=(250, 500, 750, 1000), n_steps=30000, burn_in=2000, n_samples=10000,
                               sample_burn_in=2000, upper_chains=10000, upper_burn_in=2000, ais_runs=1000,
                               ais_temperatures=14500, ais_schedule="piecewise", curve_points=60), **overrides)

    def validate(self):
        if self.data not in ("auto", "mnist", "synthetic"):
            raise ValueError(f"data: expected 'auto', 'mnist' or 'synthetic', received {self.data!r}")
        if self.rbm not in ("train", "cd25"):
            raise ValueError(f"rbm: expected 'train' or 'cd25', received {self.rbm!r}")
        if self.rbm == "cd25" and self.data == "synthetic":
            raise ValueError("data: the CD25(500) RBM models binarised MNIST; expected 'auto' or 'mnist', "
                             "received 'synthetic'")
        if not self.losses or any(loss not in LOSSES for loss in self.losses):
            raise ValueError(f"losses: expected a non-empty subset of {sorted(LOSSES)}, received {self.losses}")
        if self.dtype not in ("float64", "float32"):
            raise ValueError(f"dtype: expected 'float64' or 'float32', received {self.dtype!r}")
        if self.ais_schedule not in ("uniform", "piecewise"):
            raise ValueError(f"ais_schedule: expected 'uniform' or 'piecewise', received {self.ais_schedule!r}")
        minimum = {"burn_in": 0, "sample_burn_in": 0, "upper_burn_in": 0, "hill_restarts": 0,  # none is allowed
                   "n_samples": 2, "upper_chains": 2, "bound_samples": 2, "n_test": 2}  # an interval needs two
        for name in ("rbm_hidden", "cd_k", "cd_steps", "n_train", "n_test", "curve_test", "n_steps", "batch_size",
                     "n_chains", "burn_in", "n_samples", "sample_burn_in", "upper_chains", "upper_burn_in",
                     "ais_runs", "ais_temperatures",
                     "hill_restarts", "bound_samples", "curve_points"):
            check_positive_int(getattr(self, name), name, minimum=minimum.get(name, 1))
        if not self.nade_hidden:
            raise ValueError(f"nade_hidden: expected at least one hidden-unit count, received {self.nade_hidden}")
        for i, h in enumerate(self.nade_hidden):
            check_positive_int(h, f"nade_hidden[{i}]")
        if self.nades is not None:
            pairs = [tuple(p) if isinstance(p, (tuple, list)) else p for p in self.nades]
            if not pairs or any(not (isinstance(p, tuple) and len(p) == 2 and p[1] in LOSSES) for p in pairs):
                raise ValueError(f"nades: expected a non-empty sequence of (hidden units, loss) pairs with a loss "
                                 f"in {sorted(LOSSES)}, received {self.nades!r}")
            for i, (h, _) in enumerate(pairs):
                check_positive_int(h, f"nades[{i}][0]")
            if len(set(pairs)) < len(pairs):
                raise ValueError(f"nades: expected distinct pairs, received {self.nades!r}")
            self.nades = tuple(pairs)
        check_in_range(self.cd_rate, "cd_rate", 0.0, np.inf, low_open=True, high_open=True)
        return self

    def nade_list(self):
        """The (H, loss) of every NADE of the run, in order: ``nades``, else the grid ``nade_hidden`` x ``losses``."""
        if self.nades is not None:
            return list(self.nades)
        return [(h, loss) for h in self.nade_hidden for loss in self.losses]


# ---------------------------------------------------------------------------------------------- data
def load_data(settings, rng):
    """Binary training and test images, (n, 784) float64, and a name for the tables."""
    use_mnist = settings.data == "mnist" or (settings.data == "auto" and _binarized_available())
    if use_mnist:
        x_train, x_test = datasets.load_binarized_mnist()
        name = "binarised MNIST (Salakhutdinov and Murray)"
    else:
        (g_train, _), (g_test, _) = toydata.synthetic_digits(settings.n_train, settings.n_test, rng)
        x_train, x_test = datasets.binarize_stochastic(g_train, rng), datasets.binarize_stochastic(g_test, rng)
        name = "synthetic digits, stochastically binarised (kd_ref.toydata)"
    return x_train[:settings.n_train], x_test[:settings.n_test], name


def _binarized_available():
    try:
        datasets.find_file(datasets.BINARIZED_FILE)
        return True
    except FileNotFoundError:
        return False


def _estimate_dict(r):
    return {"method": r.method, "log_z": r.log_z, "lower": r.lower, "upper": r.upper, "std_error": r.std_error,
            "n": r.n, "seconds": r.seconds}


# ------------------------------------------------------------------------------------------- pieces
def teacher(settings, x_train, run):
    """The RBM: CD25(500) from KD_REF_DATA, or a small one trained by CD-k (cached)."""
    if settings.rbm == "cd25":
        return RBM.from_file()
    path = run.cache / "rbm.npz"
    if path.exists():
        return RBM.load(path)
    rng = run.rng(1)
    rbm = RBM(x_train.shape[1], settings.rbm_hidden, rng, init_std=0.01)
    mean = x_train.mean(axis=0)
    rbm.b_visible[...] = np.log((mean + 0.01) / (1.01 - mean))   # start from the pixels' smoothed marginals
    ckpt = run.ckpt / "rbm.npz"
    fit_cd(rbm, x_train, rng, n_steps=settings.cd_steps, k=settings.cd_k, batch_size=settings.batch_size,
           optimizer=SGD(settings.cd_rate), progress=settings.progress, checkpoint=ckpt,
           settings=_model_settings(settings), label=f"RBM CD-{settings.cd_k}")
    rbm.save(path)
    ckpt.unlink(missing_ok=True)
    return rbm


def _model_settings(settings):
    """The settings a training checkpoint must have been made with (what defines the models)."""
    return {k: v for k, v in asdict(settings).items() if k not in ("progress", "figures", "nade_hidden", "losses",
                                                                          "nades")}


def references(rbm, marginals, settings, run):
    """Exact log Z (small RBMs), AIS from the pixel ``marginals`` and the hill-climbing bound; cached as JSON."""
    def make():
        out = {}
        if min(rbm.n_visible, rbm.n_hidden) <= MAX_EXACT_UNITS:
            began = time.process_time()
            out["exact"] = rbm.log_z_exact(max_units=MAX_EXACT_UNITS)
            out["exact_seconds"] = time.process_time() - began
        ais = ais_rbm(rbm.W, rbm.b_visible, rbm.b_hidden, run.rng(2), n_runs=settings.ais_runs,
                      n_temperatures=settings.ais_temperatures, schedule=settings.ais_schedule,
                      base_marginals=marginals, progress=settings.progress)
        out["ais"] = _estimate_dict(ais)
        out["ais"]["n_temperatures"] = ais.n_temperatures
        out["ais"]["wall_seconds"] = ais.wall_seconds
        began = time.process_time()
        hill = hill_climb(rbm, run.rng(3), settings.hill_restarts, include_zeros=True)
        out["hill"] = {"log_phi": hill.log_phi, "x": hill.x.tolist(), "seconds": time.process_time() - began}
        return out
    return run.cached_json("references.json", make)


def training_stream(rbm, settings, run):
    """The path of the run's training stream (section 4.2.3), drawn once for every NADE and cached.

    ``n_chains`` chains from random states, ``burn_in`` sweeps, then ``n_steps`` minibatches
    of ``batch_size`` (:func:`kd_ref.distill.generative.record_stream`, in ``settings.dtype``);
    the drawing is checkpointed under ``OUT/ckpt``, so an interrupted run resumes it and writes
    the same bytes.
    """
    path = run.cache / "stream.npz"
    if not path.exists():
        ckpt = run.ckpt / "stream.npz"
        record_stream(rbm, settings.batch_size, settings.n_steps, run.rng(11), path, n_chains=settings.n_chains,
                      burn_in=settings.burn_in, dtype=settings.dtype, checkpoint=ckpt, progress=settings.progress)
        ckpt.unlink(missing_ok=True)
    return path


def train_nade(rbm, loss_name, hidden, refs, x_test, settings, run, code, stream_path):
    """A NADE distilled from ``rbm`` on the recorded stream (cached), in float64, and its progress curve: rows
    (examples, log q test, upper, lower). It is trained in ``settings.dtype`` (and cached so).

    ``stream_path``: () -> the stream's file, e.g. :func:`training_stream` with its arguments bound
    (called only when the NADE is not cached)."""
    key = f"nade_H{hidden}_{loss_name}"
    path, curve_path = run.cache / f"{key}.npz", run.cache / f"{key}.curve.npz"
    if path.exists():
        curve = npzfile.load(curve_path, CURVE_KIND, {1}, label="cache", required=("points",))["points"]
        return NADE.load(path).astype(np.float64), curve
    rng = run.rng(10, *code)
    ckpt = run.ckpt / f"{key}.npz"
    side = int(round(np.sqrt(rbm.n_visible)))
    order = raster_column_order(side, side) if side * side == rbm.n_visible else None
    nade = NADE(rbm.n_visible, hidden, rng, order=order, dtype=settings.dtype)
    stream = RecordedStream(stream_path(), dtype=settings.dtype)
    result = distill_nade(nade, loss_by_name(loss_name, refs), stream, rbm, settings.n_steps,
                          test=x_test[:settings.curve_test],
                          monitor_every=max(1, settings.n_steps // settings.curve_points),
                          bound_samples=settings.bound_samples, rng=rng, checkpoint=str(ckpt),
                          settings=_model_settings(settings), progress=settings.progress,
                          label=f"NADE H={hidden} by {LOSS_NAMES[loss_name]}")
    curve = np.array([[step * settings.batch_size, v["log_q_test"], v["upper"], v["lower"]]
                      for step, v in result.monitor], dtype=np.float64).reshape(-1, 4)
    npzfile.save(curve_path, CURVE_KIND, 1, points=curve)      # the curve first: a cached NADE always has its curve
    nade.save(path)
    ckpt.unlink(missing_ok=True)
    return nade.astype(np.float64), curve


def upper_samples(rbm, settings, run):
    """The RBM samples of every NADE's KL upper bound (4.46) and their CPU seconds, cached.

    ``upper_chains`` chains from random states, ``upper_burn_in`` sweeps each
    (:func:`kd_ref.rbm.random_chain_samples`; the thesis: 10,000 chains, 2,000 sweeps). One
    set serves every NADE, as the chains do not depend on q; each NADE's upper bound is
    charged their full CPU seconds. The burn-in is checkpointed under ``OUT/ckpt``, so an
    interrupted run resumes it exactly.
    """
    path = run.cache / "upper_samples.npz"
    if path.exists():
        saved = npzfile.load(path, UPPER_KIND, {1}, label="cache", required=("x", "seconds"))
        return saved["x"].astype(np.float64), float(saved["seconds"])
    ckpt = run.ckpt / "upper_chains.npz"
    x, seconds = random_chain_samples(rbm, run.rng(5), settings.upper_chains, settings.upper_burn_in,
                                      checkpoint=ckpt, progress=settings.progress)
    npzfile.save(path, UPPER_KIND, 1, x=x.astype(np.uint8), seconds=np.array(seconds))
    ckpt.unlink(missing_ok=True)
    return x, seconds


def evaluate(rbm, nade, refs, x_test, settings, run, code, key, upper):
    """Average test log q (+-2 SE) and every log Z estimate of section 4.2.4 for one NADE (cached).

    ``upper``: () -> (samples, CPU seconds), e.g. :func:`upper_samples` with its arguments bound
    (called only when the estimates are not cached).
    """
    def make():
        log_q_test, log_q_test_2se = mean_2se(nade.log_prob(x_test))
        out = {"log_q_test": log_q_test, "log_q_test_2se": log_q_test_2se}
        x_u, seconds_u = upper()
        est = estimate_log_z(rbm, nade, run.rng(20, *code), n_samples=settings.n_samples,
                             burn_in=settings.sample_burn_in, upper_samples=x_u, upper_seconds=seconds_u,
                             candidates=np.array([refs["hill"]["x"]]), progress=settings.progress)
        for name in ESTIMATORS + ("trivial",):
            out[name] = _estimate_dict(est[name])
            out[name]["cpu_seconds"] = est["cpu_seconds"][name]
        out["bridge"]["iterations"] = int(est["bridge"].iterations)
        out["bridge"]["converged"] = bool(est["bridge"].converged)
        return out
    return run.cached_json(f"{key}.estimates.json", make)


# ------------------------------------------------------------------------------------------ reports
def _interval(e):
    return f"[{e['lower']:.2f}, {e['upper']:.2f}]"


def write_tables(results, out_dir):
    """Markdown and CSV tables; returns the Markdown text."""
    ref_name, ref = results["reference"]
    rbm_lp = results["rbm_log_p_test"]
    lp_rows = [{"model": f"RBM, log phi - log Z ({ref_name})", "hidden units": results["rbm_hidden"], "loss": "—",
                "av. test log prob [nats]": f"{rbm_lp[0]:.2f} ± {rbm_lp[1]:.2f}"}]
    z_rows = []
    if "exact" in results["references"]:
        z_rows.append({"model": "RBM", "estimator": "exact (enumeration)", "log Z": f"{results['references']['exact']:.4f}",
                       "±3 SE interval": "—", "error vs reference": "0", "CPU s": f"{results['references']['exact_seconds']:.1f}"})
    ais = results["references"]["ais"]
    z_rows.append({"model": "RBM", "estimator": f"AIS ({ais['n']} runs, {ais['n_temperatures']} temperatures)",
                   "log Z": f"{ais['log_z']:.4f}", "±3 SE interval": _interval(ais),
                   "error vs reference": f"{ais['log_z'] - ref:+.4f}", "CPU s": f"{ais['seconds']:.1f}"})
    if results["settings"]["rbm"] == "cd25":
        z_rows.append({"model": "RBM", "estimator": "published AIS (Salakhutdinov and Murray 2008)",
                       "log Z": f"{PUBLISHED_LOG_Z:.2f}", "±3 SE interval": "—",
                       "error vs reference": f"{PUBLISHED_LOG_Z - ref:+.4f}", "CPU s": "—"})
    hill = results["references"]["hill"]
    z_rows.append({"model": "RBM", "estimator": "trivial bound max log phi (hill climbing, 4.50)",
                   "log Z": f"{hill['log_phi']:.4f}", "±3 SE interval": "—",
                   "error vs reference": f"{hill['log_phi'] - ref:+.4f}", "CPU s": f"{hill['seconds']:.1f}"})
    for key, m in results["models"].items():
        hidden, loss = key.split("/")
        lp_rows.append({"model": "NADE", "hidden units": hidden, "loss": LOSS_NAMES[loss],
                        "av. test log prob [nats]": f"{m['log_q_test']:.2f} ± {m['log_q_test_2se']:.2f}"})
        for name in ESTIMATORS:
            e = m[name]
            z_rows.append({"model": f"NADE H={hidden}, {LOSS_NAMES[loss]}", "estimator": ESTIMATOR_NAMES[name],
                           "log Z": f"{e['log_z']:.4f}", "±3 SE interval": _interval(e),
                           "error vs reference": f"{e['log_z'] - ref:+.4f}", "CPU s": f"{e['cpu_seconds']:.1f}"})
    text = (f"# Distilling an RBM into NADE ({results['data']}, {results['settings']['mode']} mode)\n\n"
            f"Reference log Z: {ref_name} = {ref:.4f}. Test images: {results['n_test']}; "
            f"samples per estimate: {results['settings']['n_samples']}.\n\n")
    text += write_table(lp_rows, str(out_dir / "log_prob"), "Average test log-probability (± 2 SE)") + "\n"
    text += write_table(z_rows, str(out_dir / "log_z"), "Estimates of log Z (CPU s include sampling)")
    text += (f"\nThe KL upper bound (4.46) averages over {results['settings']['upper_chains']} chains from random "
             f"states after {results['settings']['upper_burn_in']} sweeps (one set for every NADE; each row is "
             f"charged all of its CPU s). The row below it averages the same quantity over the chains started at "
             f"the NADE samples ({results['settings']['sample_burn_in']} sweeps, bridge sampling's): those chains "
             f"lean towards q, so that figure is no bound.\n")
    (out_dir / "tables.md").write_text(text)
    return text


def plot_curves(results, path):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ref_name, ref = results["reference"]
    for key, curve in results["curves"].items():
        hidden, loss = key.split("/")
        c = np.asarray(curve)
        axes[0].plot(c[:, 0], c[:, 1], label=f"H={hidden}, {LOSS_NAMES[loss]}")
        line, = axes[1].plot(c[:, 0], c[:, 2], label=f"upper, H={hidden}, {LOSS_NAMES[loss]}")
        axes[1].plot(c[:, 0], c[:, 3], "--", color=line.get_color(), label=f"lower, H={hidden}, {LOSS_NAMES[loss]}")
    axes[0].axhline(results["rbm_log_p_test"][0], color="k", ls=":", label=f"RBM (log Z {ref_name})")
    axes[0].set(xlabel="teacher samples seen", ylabel="average log q, held-out images [nats]",
                title="progress of the distilled NADEs")
    axes[1].axhline(ref, color="k", ls=":", label=f"log Z ({ref_name})")
    lo = min(np.min(np.asarray(c)[:, 3]) for c in results["curves"].values())
    axes[1].set(xlabel="teacher samples seen", ylabel="log Z bound [nats]", title="KL bounds during training",
                ylim=(max(lo, ref - 30), None))
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def plot_agreement(results, path):
    """Per-image log-probabilities of the first test images, sorted by the RBM's (the thesis's figure 4.6)."""
    import matplotlib.pyplot as plt
    keys = list(results["agreement"]["nade"])
    cols = min(4, len(keys))
    rows = int(np.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    rbm = np.asarray(results["agreement"]["rbm"])
    order = np.argsort(-rbm)
    for ax, key in zip(axes.ravel(), keys):
        hidden, loss = key.split("/")
        ax.plot(rbm[order], "k", lw=2, label="RBM")
        ax.plot(np.asarray(results["agreement"]["nade"][key])[order], ".", ms=3, label="NADE")
        ax.set(title=f"H={hidden}, {LOSS_NAMES[loss]}", xlabel="test image (sorted by RBM)", ylabel="log prob [nats]")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def plot_images(panels, path, shape=(28, 28), cols=8):
    """One titled grid per panel: list of (title, images (n, D))."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, images) in zip(axes[0], panels):
        ax.imshow(image_grid(images, shape, cols=cols), cmap="gray", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def _features(weights):
    """Weight vectors scaled to [0, 1] each, for display."""
    w = np.asarray(weights, dtype=np.float64)
    lo, hi = w.min(axis=1, keepdims=True), w.max(axis=1, keepdims=True)
    return (w - lo) / np.maximum(hi - lo, 1e-12)


# --------------------------------------------------------------------------------------------- run
def _train_nade_task(shared, task):
    """:func:`train_nade` in a worker process (:mod:`kd_ref.jobs`): it caches the NADE, which the run then reads.

    The RBM is read as the run made it before starting the workers (the cached small one,
    or CD25(500) from its file), so no training images are needed here."""
    settings, run, refs, x_test = shared
    hidden, loss = task
    rbm = teacher(settings, None, run)
    train_nade(rbm, loss, hidden, refs, x_test, settings, run, (hidden, sorted(LOSSES).index(loss)),
               lambda: training_stream(rbm, settings, run))


def run(settings, out_dir, rng, jobs=1):
    """Run the experiment; returns a results dict (also written to ``OUT/results.json``).

    ``jobs`` processes train the NADEs (:mod:`kd_ref.jobs`; the results do not depend on it).

    Returns
    -------
    dict
        ``reference`` (name, log Z), ``references`` (exact, ais, hill), ``models``
        {"H/loss": log-probability and estimates}, ``curves`` {"H/loss": rows (examples
        seen, log q test, upper, lower)}, ``agreement``, ``rbm_log_p_test`` (mean, 2 SE),
        ``tables`` (Markdown), ``files``, ``seconds``.
    """
    settings = settings.validate()
    jobs = check_positive_int(jobs, "jobs")
    run = Run(out_dir, rng, _model_settings(settings))
    x_train, x_test, data_name = load_data(settings, run.rng(0))
    marginals = (x_train.sum(axis=0) + 1.0) / (x_train.shape[0] + 2.0)   # AIS base model: pixel on-frequencies
    npzfile.save(run.cache / "marginals.npz", MARGINALS_KIND, 1, p=marginals)
    if settings.rbm == "cd25" and x_train.shape[1] != 784:
        raise ValueError(f"data: expected 784-pixel images for CD25(500), received {x_train.shape[1]}")
    rbm = teacher(settings, x_train, run)
    refs = references(rbm, marginals, settings, run)
    ref = ("exact", refs["exact"]) if "exact" in refs else ("our AIS", refs["ais"]["log_z"])
    print(f"teacher: {rbm!r} on {data_name}; log Z {ref[0]} = {ref[1]:.4f}, AIS = {refs['ais']['log_z']:.4f}, "
          f"max log phi found = {refs['hill']['log_phi']:.4f}", flush=True)

    log_p_rbm = rbm.log_phi(x_test) - ref[1]
    results = {"settings": asdict(settings), "data": data_name, "n_test": len(x_test), "rbm_hidden": rbm.n_hidden,
               "reference": ref, "references": refs, "models": {}, "curves": {},
               "rbm_log_p_test": mean_2se(log_p_rbm),
               "agreement": {"rbm": log_p_rbm[:100].tolist(), "nade": {}}}
    sample_rng = run.rng(4)
    panels = [("test images", x_test[:32]),
              ("RBM samples", ChainStream(rbm, 32, sample_rng, n_chains=32, burn_in=1000)())]
    features = [("RBM features", _features(rbm.W.T[:32]))]
    upper = functools.cache(lambda: upper_samples(rbm, settings, run))   # drawn once, when first needed
    stream = functools.cache(lambda: training_stream(rbm, settings, run))
    untrained = [(h, loss) for h, loss in settings.nade_list() if not (run.cache / f"nade_H{h}_{loss}.npz").exists()]
    if jobs > 1 and len(untrained) > 1:
        stream()                                    # drawn once here, read by every worker
        run_tasks(_train_nade_task, untrained, jobs, shared=(settings, run, refs, x_test))
    for hidden, loss in settings.nade_list():
        key, code = f"{hidden}/{loss}", (hidden, sorted(LOSSES).index(loss))
        nade, curve = train_nade(rbm, loss, hidden, refs, x_test, settings, run, code, stream)
        m = evaluate(rbm, nade, refs, x_test, settings, run, code, key.replace("/", "_"), upper)
        results["models"][key], results["curves"][key] = m, curve.tolist()
        results["agreement"]["nade"][key] = nade.log_prob(x_test[:100]).tolist()
        print(f"NADE H={hidden}, {LOSS_NAMES[loss]}: test log q {m['log_q_test']:.2f}; "
              + ", ".join(f"{n} {m[n]['log_z']:.3f} {_interval(m[n])}" for n in ESTIMATORS), flush=True)
        panels.append((f"NADE H={hidden}, {LOSS_NAMES[loss]}", nade.sample(32, sample_rng)[0]))
        features.append((f"NADE H={hidden}, {LOSS_NAMES[loss]}", _features(nade.W[:32])))

    results["tables"] = write_tables(results, run.out)
    run.files["tables"] = str(run.out / "tables.md")
    if settings.figures:
        side = int(round(np.sqrt(rbm.n_visible)))
        run.files["curves"] = plot_curves(results, run.out / "curves.png")
        run.files["agreement"] = plot_agreement(results, run.out / "agreement.png")
        run.files["samples"] = plot_images(panels, run.out / "samples.png", (side, side))
        run.files["features"] = plot_images(features, run.out / "features.png", (side, side))
    return run.finish(results)


def check_data(settings):
    """Raise FileNotFoundError or ValueError (naming the file) unless the reference data ``settings`` need can be read.

    CD25(500) needs ``rbm_cd25_500.npz`` and ``binarized_mnist.npz``; ``data='mnist'``
    the latter; ``'auto'`` uses it when present, so a present but damaged file is
    refused rather than silently replaced by the synthetic digits.
    """
    if settings.rbm == "cd25":
        datasets.load_rbm()
    if settings.rbm == "cd25" or settings.data == "mnist" or (settings.data == "auto" and _binarized_available()):
        datasets.load_binarized_mnist(dtype=np.uint8)


#: Settings fields and the options that set them, for error messages.
OPTIONS = {"data": "--data", "nade_hidden": "--nade-hidden", "losses": "--losses", "nades": "--nades",
           "n_steps": "--steps", "n_samples": "--samples", "dtype": "--dtype"}


def _nade_pair(text):
    """``H:loss`` on the command line -> (H, loss)."""
    h, sep, loss = text.partition(":")
    if not (sep and h.isdigit() and int(h) > 0 and loss in LOSSES):
        raise ArgumentTypeError(f"expected H:LOSS with H a positive integer and LOSS one of {sorted(LOSSES)}, "
                                f"received {text!r}")
    return int(h), loss


def main(argv=None):
    parser = ArgumentParser(prog="kd-ref run rbm-nade", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a small RBM with exact log Z, minutes (default)")
    mode.add_argument("--medium", action="store_true", help="CD25(500) (needs KD_REF_DATA), 30-45 minutes")
    mode.add_argument("--thesis", action="store_true", help="the thesis settings (hours; resumable)")
    parser.add_argument("--out", type=out_folder, default=None,
                        help="output folder (default ./kd_ref_runs/rbm_nade_MODE)")
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--data", choices=["auto", "mnist", "synthetic"], help="data source (default: mode's)")
    parser.add_argument("--nade-hidden", type=int, nargs="+", help="NADE hidden units (one NADE per value)")
    parser.add_argument("--losses", nargs="+", choices=sorted(LOSSES), help="kl, se (square error), sm (score matching)")
    parser.add_argument("--nades", type=_nade_pair, nargs="+", metavar="H:LOSS",
                        help="these NADEs (e.g. 500:kl 500:se 1000:kl) instead of the grid --nade-hidden x --losses")
    parser.add_argument("--steps", type=int, dest="n_steps", help="training steps per NADE")
    parser.add_argument("--samples", type=int, dest="n_samples", help="samples per log Z estimate (at least 2)")
    parser.add_argument("--dtype", choices=["float64", "float32"],
                        help="precision of the training stream and of NADE training (default float64)")
    parser.add_argument("--jobs", type=int_at_least(1), default=1,
                        help="processes training the NADEs (default 1; results do not depend on it)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    preset = Settings.thesis if args.thesis else Settings.medium if args.medium else Settings.quick
    overrides = {k: getattr(args, k) for k in ("data", "n_steps", "n_samples", "dtype") if getattr(args, k) is not None}
    if args.nade_hidden:
        overrides["nade_hidden"] = tuple(args.nade_hidden)
    if args.losses:
        overrides["losses"] = tuple(args.losses)
    if args.nades:
        if args.nade_hidden or args.losses:
            parser.error("--nades: expected either --nades or the grid --nade-hidden / --losses, received both")
        overrides["nades"] = tuple(args.nades)
    settings = preset(progress=not args.no_progress, **overrides)
    out = args.out or os.path.join(".", "kd_ref_runs", f"rbm_nade_{settings.mode}")
    return run_from_cli(parser, settings, OPTIONS, check_data, functools.partial(run, jobs=args.jobs), out, args.seed)
