"""``kd-ref bench logz``: CPU seconds that bridge sampling with a distilled NADE, and AIS, need for log Z to +-0.1 nats.

Both estimators run on the same RBM, read from a finished ``kd-ref run rbm-nade`` folder
(default ``./kd_ref_runs/rbm_nade_quick``; pass ``--run`` for the ``--medium`` run on
CD25(500)), together with that run's KL-distilled NADE and its settings:

* bridge sampling (4.53-4.54): n NADE samples, n Gibbs chains started at them and run for
  the run's ``sample_burn_in`` sweeps, 10 fixed-point iterations;
* AIS: n runs on the run's temperature schedule, base model from the training pixels.

Each starts small and doubles n until the +-3 standard-error interval is at most
``--target`` nats from the estimate on either side; the CPU seconds (process time,
sampling included) of that last attempt are what the estimator needs, and the benchmark
prints their ratio. With an exact log Z (small RBMs) the errors are printed too.
"""
import json
from pathlib import Path

import numpy as np

from .. import npzfile
from ..cli import ArgumentParser, int_at_least
from ..distill.generative import estimate_log_z
from ..nade import NADE
from ..partition import ais_rbm
from ..rbm import RBM


def _load_run(folder):
    """Settings, RBM, KL-distilled NADE, pixel marginals and exact log Z (or None) of a finished rbm-nade run.

    Raises FileNotFoundError or ValueError, naming ``--run`` and the file, for a
    folder that is not a finished run.
    """
    folder = Path(folder)
    results_file, cache = folder / "results.json", folder / "cache"
    if not results_file.exists():
        raise FileNotFoundError(f"--run: expected a finished `kd-ref run rbm-nade` folder with results.json, "
                                f"{str(folder)!r} has none; run `kd-ref run rbm-nade --out {folder}` first")
    try:
        results = json.loads(results_file.read_text())
        saved = results["settings"]
        settings = {k: saved[k] for k in ("mode", "rbm", "sample_burn_in", "ais_temperatures", "ais_schedule")}
        models, exact = results["models"], results["references"].get("exact")
        marginals = npzfile.load(cache / "marginals.npz", "kd_ref.rbm_nade.marginals", {1}, label="--run")["p"]
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as err:  # not what rbm-nade writes
        raise ValueError(f"--run: expected the results.json and cache/marginals.npz of `kd-ref run rbm-nade` in "
                         f"{str(folder)!r}, could not read them ({type(err).__name__}: {err})") from None
    kl = [key for key in models if key.endswith("/kl")]
    if not kl:
        raise ValueError(f"--run: expected a NADE distilled with the KL loss in {str(folder)!r}, "
                         f"found only {sorted(models)}")
    rbm = RBM.from_file() if settings["rbm"] == "cd25" else RBM.load(cache / "rbm.npz")
    hidden = kl[-1].split("/")[0]
    nade = NADE.load(cache / f"nade_H{hidden}_kl.npz")
    return settings, rbm, nade, marginals, exact


def _until_target(name, run_once, n0, target, max_n, exact):
    """Double n from n0 until the half-width is at most ``target``; print each attempt, return the last.

    ``run_once(n)`` returns (estimate, CPU seconds it needed).
    """
    n = n0
    while True:
        est, cpu = run_once(n)
        error = f"{est.log_z - exact:+9.4f}" if exact is not None else ""
        print(f"{name:>8} n={n:<7} log Z {est.log_z:10.4f} [{est.lower:.4f}, {est.upper:.4f}] "
              f"half-width {est.half_width:8.4f}  CPU {cpu:8.1f} s {error}", flush=True)
        if est.half_width <= target or 2 * n > max_n:
            return n, est, cpu, est.half_width <= target
        n *= 2


def main(argv=None):
    parser = ArgumentParser(prog="kd-ref bench logz", description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="./kd_ref_runs/rbm_nade_quick", help="a finished rbm-nade output folder")
    parser.add_argument("--target", type=float, default=0.1, help="half-width of the +-3 SE interval, nats")
    parser.add_argument("--max-n", type=int, default=1 << 16, help="largest number of samples or runs tried")
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    args = parser.parse_args(argv)
    if not 0 < args.target < float("inf"):
        parser.error(f"--target: expected a half-width > 0 nats, received {args.target}")
    if args.max_n < 1:
        parser.error(f"--max-n: expected an integer >= 1, received {args.max_n}")
    try:
        settings, rbm, nade, marginals, exact = _load_run(args.run)
    except (FileNotFoundError, ValueError) as err:      # a missing or damaged run folder, or its data
        parser.error(str(err))
    rng = np.random.default_rng(args.seed)
    print(f"RBM {rbm.n_visible} x {rbm.n_hidden} from {args.run} ({settings['mode']} mode); {nade!r} distilled by KL")
    print(f"target: +-3 SE interval within {args.target} nats of the estimate"
          + (f"; exact log Z = {exact:.4f}" if exact is not None else "") + "\n")

    no_upper = {"upper_samples": np.zeros((2, rbm.n_visible)), "upper_seconds": 0.0}  # only bridge is timed here

    def bridge(n):
        out = estimate_log_z(rbm, nade, rng, n_samples=n, burn_in=settings["sample_burn_in"], **no_upper)
        return out["bridge"], out["cpu_seconds"]["bridge"]

    def ais(n):
        est = ais_rbm(rbm.W, rbm.b_visible, rbm.b_hidden, rng, n_runs=n, n_temperatures=settings["ais_temperatures"],
                      schedule=settings["ais_schedule"], base_marginals=marginals)
        return est, est.seconds

    nb, eb, tb, okb = _until_target("bridge", bridge, 250, args.target, args.max_n, exact)
    na, ea, ta, oka = _until_target("AIS", ais, 16, args.target, args.max_n, exact)
    print()
    print(f"bridge sampling ({settings['sample_burn_in']} burn-in sweeps per chain): {nb} samples, {tb:.1f} CPU s"
          + ("" if okb else " (target not reached)"))
    print(f"AIS ({settings['ais_temperatures']} temperatures, {settings['ais_schedule']}): {na} runs, {ta:.1f} CPU s"
          + ("" if oka else " (target not reached)"))
    print(f"CPU seconds to a half-width of {args.target} nats, AIS / bridge sampling: {ta / tb:.2f}")
    return 0
