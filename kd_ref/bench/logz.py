"""``kd-ref bench logz``: CPU seconds AIS, and importance and bridge sampling with a NADE, need for log Z to +-0.1 nats.

Every estimator runs on the same RBM, read from a finished ``kd-ref run rbm-nade`` folder
(default ``./kd_ref_runs/rbm_nade_quick``; pass ``--run`` for the ``--medium`` or
``--thesis`` run on CD25(500)), with the run's best NADE (highest average test log q):

* AIS (the baseline) at its best: a pilot of ``--ais-runs`` runs (128) for every number of
  temperatures in ``--ais-temperatures``, both schedules (uniform, piecewise) and both
  precisions (float64, float32); the configuration with the least predicted CPU time for the
  target is the one timed;
* importance sampling with the NADE (4.52);
* bridge sampling (4.53-4.54) with Gibbs chains seeded at the NADE samples
  (:func:`kd_ref.distill.generative.seeded_chain_bridge`): the burn-in is chosen by
  :func:`kd_ref.partition.burn_in_diagnostic` on a pilot of ``--pilot-chains`` chains (printed;
  run again twice as long, up to ``PILOT_DOUBLINGS`` times, while it finds no convergence): the
  first half of a converged pilot,
  each chain gives S samples (S in :data:`SAMPLES_PER_CHAIN`, the best by a pilot, ``THIN``
  sweeps apart) and the standard error is by batch means over chains, so the interval keeps
  its coverage (tests/test_partition_chains.py checks exactly this configuration). Sampling is
  in ``--dtype`` (float32 by default, as AIS may be).

Each estimator's pilot predicts the n it needs (CPU time and n scale as (half-width /
target)^2); n then starts at ``MARGIN`` (1.25) times that prediction, the same for every
estimator, and doubles until the +-3 standard-error interval is at most ``--target`` nats
from the estimate on either side. The CPU seconds (process time, sampling included) of that
last attempt are what the estimator needs; as one doubling can overshoot the target up to
twice, on whichever estimator chance puts it, they are also scaled to exactly the target
(times (half-width / target)^2), and the ratios of the scaled seconds are the headline (those
as timed are printed beside them), with the total that includes the NADE's distillation CPU
time (the recorded training stream's seconds plus the training steps, timed here on a sample
of steps when the run did not record them). Tuning pilots are not charged to anyone. With an
exact log Z (small RBMs) the errors are printed too.
"""
import json
import math
import time
from pathlib import Path

import numpy as np

from .. import npzfile
from ..cli import ArgumentParser, int_at_least
from ..distill.generative import (RecordedStream, distill_nade, loss_by_name, sample_in_chunks, seeded_chain_bridge,
                                  seeded_chain_trace)
from ..nade import NADE
from ..partition import ais_rbm, burn_in_diagnostic, importance_sampling
from ..rbm import RBM

#: Samples per seeded chain that bridge sampling may use (the pilot picks one), and the sweeps between them.
SAMPLES_PER_CHAIN = (1, 4, 16)
THIN = 1
#: The burn-in pilot: chains, sweeps and recording interval (sweeps), and the diagnostic's |z| threshold.
PILOT_CHAINS, PILOT_SWEEPS, PILOT_EVERY = 1000, 200, 2
PILOT_DOUBLINGS = 3        # an unconverged pilot is run again twice as long (recording half as often), at most 3 times
DEFAULT_AIS_TEMPERATURES = (100, 300, 1000, 3000, 10000)
MARGIN = 1.25             # the timed runs start at this multiple of the n a pilot predicts (pilots are noisy)
TIMED_STEPS = 200          # training steps timed to estimate the distillation's CPU time


def _load_run(folder):
    """Settings, RBM, best NADE (and its key, loss), pixel marginals, exact log Z (or None), results of a finished run.

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
        settings = {k: saved[k] for k in ("mode", "rbm", "sample_burn_in", "n_steps", "dtype")}
        models, exact = results["models"], results["references"].get("exact")
        marginals = npzfile.load(cache / "marginals.npz", "kd_ref.rbm_nade.marginals", {1}, label="--run")["p"]
        best = max(models, key=lambda key: models[key]["log_q_test"]) if models else None
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as err:  # not what rbm-nade writes
        raise ValueError(f"--run: expected the results.json and cache/marginals.npz of `kd-ref run rbm-nade` in "
                         f"{str(folder)!r}, could not read them ({type(err).__name__}: {err})") from None
    if best is None or "/" not in best:
        raise ValueError(f"--run: expected at least one distilled NADE in {str(folder)!r}, found {sorted(models)}")
    rbm = RBM.from_file() if settings["rbm"] == "cd25" else RBM.load(cache / "rbm.npz")
    hidden, loss = best.split("/")
    nade = NADE.load(cache / f"nade_H{hidden}_{loss}.npz").astype(np.float64)
    return settings, rbm, nade, best, marginals, exact, results


def _distillation_seconds(folder, rbm, nade_key, results, settings, rng):
    """CPU seconds the NADE's distillation took, and how they were found (a sentence).

    A run that recorded them (``models[key]["train_cpu_seconds"]``) is believed; otherwise the
    recorded stream's own seconds plus ``TIMED_STEPS`` training steps timed here (a fresh NADE of
    the same size, loss and precision on the same stream, monitor left out), scaled to the run's
    ``n_steps``.
    """
    recorded = results["models"][nade_key].get("train_cpu_seconds")
    if recorded is not None:
        return float(recorded), "recorded by the run"
    hidden, loss = nade_key.split("/")
    stream = RecordedStream(Path(folder) / "cache" / "stream.npz", dtype=settings["dtype"])
    steps = min(TIMED_STEPS, settings["n_steps"], stream.n_batches)
    trained = NADE.load(Path(folder) / "cache" / f"nade_H{hidden}_{loss}.npz")
    student = NADE(trained.n_inputs, trained.n_hidden, rng, order=trained.order, nonlinearity=trained.nonlinearity,
                   dtype=settings["dtype"])
    began = time.process_time()
    distill_nade(student, loss_by_name(loss, results["references"]), stream, rbm, steps, progress=False)
    per_step = (time.process_time() - began) / steps
    total = stream.seconds + per_step * settings["n_steps"]
    return total, (f"estimated: not recorded by the run; the stream's {stream.seconds:.1f} s (recorded) + "
                   f"{settings['n_steps']} steps x {per_step * 1e3:.2f} ms (timed here on {steps} steps)")


def _until_target(name, run_once, n0, target, max_n, exact):
    """Double n from n0 until the half-width is at most ``target``; print each attempt, return the last.

    ``run_once(n)`` returns (estimate, CPU seconds it needed).
    """
    n = n0
    while True:
        est, cpu = run_once(n)
        error = f" error {est.log_z - exact:+.4f}" if exact is not None else ""
        print(f"  {name:>10} n={n:<7} log Z {est.log_z:10.4f} [{est.lower:.4f}, {est.upper:.4f}] "
              f"half-width {est.half_width:7.4f}  CPU {cpu:8.2f} s{error}", flush=True)
        if est.half_width <= target or 2 * n > max_n:
            return n, est, cpu, est.half_width <= target
        n *= 2


def _predicted(est, cpu, n, target, heavy_tailed=False):
    """(n, CPU seconds) a pilot of n samples predicts for the target, from 3 SE ~ half-width scaling as 1/sqrt(n).

    The n is the one the pilot's standard error predicts (the timed run starts at ``MARGIN`` times
    it). For ranking AIS configurations (``heavy_tailed``) the CPU seconds take the relative
    variance per run as at least that of log-normal weights with the pilot's variance of
    log w, exp(Var log w) - 1: with few
    temperatures the AIS weights are heavy-tailed and a pilot's sample variance, missing the
    rare huge weights, understates the cost many times over (a first version of this bench
    picked 100 temperatures from a pilot predicting 3.8 s; they needed 138 s).
    """
    factor = 9.0 * est.std_error ** 2 / target ** 2
    rank = factor
    if heavy_tailed:
        rank = max(factor, 9.0 * float(np.expm1(np.var(est.log_weights, ddof=1))) / (n * target ** 2))
    return max(2, math.ceil(n * factor)), cpu * rank


def main(argv=None):
    parser = ArgumentParser(prog="kd-ref bench logz", description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="./kd_ref_runs/rbm_nade_quick", help="a finished rbm-nade output folder")
    parser.add_argument("--target", type=float, default=0.1, help="half-width of the +-3 SE interval, nats")
    parser.add_argument("--max-n", type=int, default=1 << 18, help="largest number of samples, chains or runs tried")
    parser.add_argument("--ais-runs", type=int_at_least(2), default=128, help="runs of each AIS tuning pilot")
    parser.add_argument("--ais-temperatures", type=int_at_least(3), nargs="+", default=list(DEFAULT_AIS_TEMPERATURES),
                        help="numbers of temperatures AIS is tuned over")
    parser.add_argument("--pilot-chains", type=int_at_least(2), default=PILOT_CHAINS,
                        help="chains of the burn-in pilot and of the bridge-sampling pilots")
    parser.add_argument("--pilot-sweeps", type=int_at_least(3 * PILOT_EVERY), default=PILOT_SWEEPS,
                        help="sweeps of the burn-in pilot")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="precision of the NADE sampling and Gibbs sweeps of importance and bridge sampling")
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    args = parser.parse_args(argv)
    if not 0 < args.target < float("inf"):
        parser.error(f"--target: expected a half-width > 0 nats, received {args.target}")
    if args.max_n < 2:
        parser.error(f"--max-n: expected an integer >= 2, received {args.max_n}")
    try:
        settings, rbm, nade, key, marginals, exact, results = _load_run(args.run)
    except (FileNotFoundError, ValueError) as err:      # a missing or damaged run folder, or its data
        parser.error(str(err))
    rng = np.random.default_rng(args.seed)
    try:
        distill_cpu, how = _distillation_seconds(args.run, rbm, key, results, settings, rng)
    except (FileNotFoundError, ValueError) as err:      # the run's training stream missing or damaged
        parser.error(f"--run: expected the run's training stream cache/stream.npz to time the distillation: {err}")
    dtype = np.dtype(args.dtype)
    target, max_n = args.target, args.max_n
    print(f"RBM {rbm.n_visible} x {rbm.n_hidden} from {args.run} ({settings['mode']} mode); best NADE {key} "
          f"({nade!r}, test log q {results['models'][key]['log_q_test']:.2f})")
    print(f"target: +-3 SE interval within {target} nats of the estimate"
          + (f"; exact log Z = {exact:.4f}" if exact is not None else "") + "\n", flush=True)

    # --- burn-in of the chains seeded at the NADE samples, by the diagnostic
    n_sweeps, every, pilot_cpu = args.pilot_sweeps, PILOT_EVERY, 0.0
    while True:             # a longer pilot (fresh chains) until the diagnostic is satisfied, or PILOT_DOUBLINGS
        sweeps, values, cpu = seeded_chain_trace(rbm, nade, rng, n_chains=args.pilot_chains, n_sweeps=n_sweeps,
                                                 every=every, dtype=dtype)
        pilot_cpu += cpu
        diag = burn_in_diagnostic(values, sweeps)
        print(f"burn-in diagnostic: {args.pilot_chains} chains seeded at NADE samples, log phi - log q every "
              f"{every} sweeps up to {n_sweeps} ({cpu:.1f} CPU s)")
        marks = [0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, diag.detected, diag.burn_in, sweeps[-1]]
        for i in sorted(set(np.searchsorted(sweeps, marks).tolist())):
            if i < sweeps.size:
                print(f"  sweep {sweeps[i]:5d}: mean {diag.means[i]:10.4f} +- {diag.std_errors[i]:.4f}   "
                      f"z {diag.z[i]:+7.2f}   running-mean z {diag.segment_z[i]:+7.2f}")
        print(f"  {diag}\n", flush=True)
        if diag.converged or n_sweeps >= args.pilot_sweeps * 2 ** PILOT_DOUBLINGS:
            break
        n_sweeps, every = 2 * n_sweeps, 2 * every
    burn_in = diag.burn_in

    # --- tuning pilots (not charged)
    print("tuning pilots (predicted CPU s for the target):")
    ais_configs = [(k, schedule, dt) for k in args.ais_temperatures for schedule in ("uniform", "piecewise")
                   for dt in (np.float64, np.float32)]

    def ais(n, config):
        k, schedule, dt = config
        est = ais_rbm(rbm.W, rbm.b_visible, rbm.b_hidden, rng, n_runs=n, n_temperatures=k, schedule=schedule,
                      base_marginals=marginals, dtype=dt)
        return est, est.seconds

    best_ais, tuning_ais, tuning_bridge = None, 0.0, pilot_cpu
    for config in ais_configs:
        est, cpu = ais(args.ais_runs, config)
        tuning_ais += cpu
        n_pred, cpu_pred = _predicted(est, cpu, args.ais_runs, target, heavy_tailed=True)
        error = f" error {est.log_z - exact:+.4f}" if exact is not None else ""
        print(f"  AIS K={config[0]:<6} {config[1]:<9} {np.dtype(config[2]).name}: {cpu_pred:9.2f} s "
              f"(n = {n_pred}){error}", flush=True)
        if best_ais is None or cpu_pred < best_ais[2]:
            best_ais = (config, n_pred, cpu_pred)

    def bridge(n, per_chain):
        return seeded_chain_bridge(rbm, nade, rng, n_samples=n, burn_in=burn_in, samples_per_chain=per_chain,
                                   thin=THIN, dtype=dtype)

    best_bridge = None
    for per_chain in SAMPLES_PER_CHAIN:
        est, cpu = bridge(args.pilot_chains, per_chain)
        tuning_bridge += cpu
        n_pred, cpu_pred = _predicted(est, cpu, args.pilot_chains, target)
        print(f"  bridge S={per_chain:<3}: {cpu_pred:9.2f} s (n = {n_pred} chains; p-side effective sample size "
              f"{est.p_effective_size:.0f} of {est.n_p}; naive SE / batch-means SE "
              f"{est.naive_std_error / est.std_error:.2f})", flush=True)
        if best_bridge is None or cpu_pred < best_bridge[2]:
            best_bridge = (per_chain, n_pred, cpu_pred)

    def importance(n):
        began = time.process_time()
        sampler = nade if dtype == nade.dtype else nade.astype(dtype)
        x = sample_in_chunks(sampler, n, rng, False)
        est = importance_sampling(rbm.log_phi(x), nade.log_prob(x))
        return est, time.process_time() - began

    est, cpu = importance(args.pilot_chains)
    is_n = _predicted(est, cpu, args.pilot_chains, target)[0]
    print(f"  importance: {_predicted(est, cpu, args.pilot_chains, target)[1]:9.2f} s (n = {is_n})\n", flush=True)

    # --- the timed runs
    print(f"timed runs (n from {MARGIN} x the pilot's prediction, doubled until the target):")
    config = best_ais[0]
    na, ea, ta, oka = _until_target("AIS", lambda n: ais(n, config),
                                    min(max_n, max(2, math.ceil(MARGIN * best_ais[1]))), target, max_n, exact)
    ni, ei, ti, oki = _until_target("importance", importance, min(max_n, max(2, math.ceil(MARGIN * is_n))), target,
                                    max_n, exact)
    per_chain = best_bridge[0]
    nb, eb, tb, okb = _until_target("bridge", lambda n: bridge(n, per_chain),
                                    min(max_n, max(2, math.ceil(MARGIN * best_bridge[1]))), target, max_n, exact)

    def reached(ok):
        return "" if ok else " (target not reached: --max-n)"

    def scaled(est, cpu):       # CPU seconds for exactly the target: cost ~ n ~ half-width^-2
        return cpu * min(1.0, (est.half_width / target) ** 2) if np.isfinite(est.half_width) else cpu

    sa, si, sb = scaled(ea, ta), scaled(ei, ti), scaled(eb, tb)
    print()
    print(f"CPU seconds for a +-3 SE half-width of {target} nats (as timed; scaled to exactly the target):")
    print(f"  AIS ({config[0]} temperatures, {config[1]}, {np.dtype(config[2]).name}): {na} runs, {ta:.2f} s; "
          f"{sa:.2f} s" + reached(oka))
    print(f"  importance sampling ({dtype.name}): {ni} NADE samples, {ti:.2f} s; {si:.2f} s" + reached(oki))
    print(f"  bridge sampling ({nb} chains seeded at NADE samples, burn-in {burn_in} sweeps by the diagnostic, "
          f"{per_chain} samples per chain {THIN} sweep(s) apart, batch-means SE, {dtype.name}): {tb:.2f} s; "
          f"{sb:.2f} s" + reached(okb))
    print(f"  NADE distillation ({key}): {distill_cpu:.1f} s ({how})")
    print(f"  tuning pilots, charged to no one: AIS {tuning_ais:.1f} s; bridge sampling {tuning_bridge:.1f} s "
          f"(of which the burn-in diagnostic {pilot_cpu:.1f} s)")
    print(f"AIS / importance sampling: {sa / si:.3g}   (as timed {ta / ti:.3g})")
    print(f"AIS / bridge sampling: {sa / sb:.3g}   (as timed {ta / tb:.3g})")
    print(f"AIS / (bridge sampling + distillation): {sa / (sb + distill_cpu):.3g}   "
          f"(as timed {ta / (tb + distill_cpu):.3g})")
    return 0
