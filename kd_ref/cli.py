"""The ``kd-ref`` command: ``check``, ``run NAME``, ``bench NAME``, ``where EQ`` and ``data ...`` (download, import-rbm, verify, info).

Each experiment and benchmark is a module with ``main(argv) -> int``; the
tables below name them, so adding one is one line here.

Exit statuses: 0 success, 1 a check or download that failed, 2 a user's mistake
(a bad option value, missing or damaged reference data, an ``--out`` that is a
file, a cache or checkpoint made with other settings: one line on stderr naming
it, as argparse does for usage errors), 130 interrupted by Ctrl-C (one line; a
checkpointing run saves its checkpoint first). Programming errors still show
their traceback.
"""
import argparse
import importlib
import os
import sys

EXPERIMENTS = {
    # name: module under kd_ref.experiments
    "compress": "compress",
    "bayes-mog": "bayes_mog",
    "bayes-logreg": "bayes_logreg",
    "rbm-nade": "rbm_nade",
    "ldl": "ldl",
    "obd": "obd",
    "kd-temperature": "kd_temperature",
    "kd-limits": "kd_limits",
    "gped-toy": "gped_toy",
    "gped-mnist": "gped_mnist",
}

BENCHMARKS = {
    # name: module under kd_ref.bench
    "mlp": "mlp",
    "dse": "dse",
    "nade": "nade",
    "gibbs": "gibbs",
    "logz": "logz",
    "ldl": "ldl",
    "curvature": "curvature",
    "kd": "kd",
    "jobs": "jobs",
    "sgld": "sgld",
}

APPENDICES = ["a", "b", "c", "d", "seeds"]


# ------------------------------------------------------- shared by every command's parser
class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with one-line usage errors: ``prog: message`` on stderr and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message}\n")


def int_at_least(minimum):
    """argparse type: an integer >= ``minimum`` (the message says what was expected and received)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, received {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, received {value}")
        return value
    return parse


def positive_float(text):
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, received {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, received {value}")
    return value


def out_folder(text):
    """argparse type for ``--out``: a folder, new or from an earlier run, but not an existing file."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"expected a folder (new, or from an earlier run), received {text!r}, "
                                         f"which is an existing file")
    return text


def settings_error(parser, err, options):
    """Exit through ``parser.error`` with a settings check's message, its field renamed to the option that set it.

    ``err`` is the ValueError or TypeError of a ``Settings.validate()``, whose message
    starts with the field name (``n_steps: expected ...``); ``options`` maps field
    names to option names (``{"n_steps": "--steps"}``).
    """
    text = str(err)
    field = text.split(":", 1)[0]
    base = field.split("[", 1)[0]
    if base in options:
        text = options[base] + text[len(base):]
    parser.error(text)


def appendix_module(name):
    """The check of appendix ``name``: ``kd_ref.appendix_checks.appendix_<name>`` in an installed kd_ref,
    ``appendix_checks.appendix_<name>`` when kd_ref is imported from a checkout (the folder sits beside it);
    ``seeds`` (the other seeds' limits, SPEC_seeds) is ``appendix_checks.seeds``."""
    module = name if name == "seeds" else f"appendix_{name}"
    try:
        return importlib.import_module(f"kd_ref.appendix_checks.{module}")
    except ModuleNotFoundError as err:
        if err.name != "kd_ref.appendix_checks":
            raise
        return importlib.import_module(f"appendix_checks.{module}")


# ----------------------------------------------------------------------------- commands
def _check(argv):
    parser = ArgumentParser(prog="kd-ref check", description="Run every appendix check, then a short tour.")
    parser.add_argument("--appendix", nargs="*", choices=APPENDICES, default=APPENDICES,
                        help="appendices to check (default: all)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the random test cases")
    parser.add_argument("--no-tour", action="store_true", help="skip the tour after the checks")
    args = parser.parse_args(argv)
    ok = True
    for name in args.appendix:
        ok &= appendix_module(name).main(seed=args.seed)
    if not args.no_tour:
        from . import tour

        tour.main(seed=args.seed)
    print("\nall appendix checks passed" if ok else "\nSOME APPENDIX CHECKS FAILED")
    return 0 if ok else 1


def _dispatch(kind, table, package, argv):
    if not argv:
        print(f"kd-ref {kind}: expected a name, one of {', '.join(sorted(table))}, received none", file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(f"usage: kd-ref {kind} NAME [options]\n\navailable: {', '.join(sorted(table))}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in table:
        print(f"kd-ref {kind}: unknown name {name!r}; expected one of {', '.join(sorted(table))}", file=sys.stderr)
        return 2
    if kind == "run":
        import matplotlib

        matplotlib.use("Agg")  # experiments save their figures as files; no window ever opens
    module = importlib.import_module(f"kd_ref.{package}.{table[name]}")
    return module.main(rest) or 0


def _data(argv):
    from . import download

    return download.main(argv)


def _where(argv):
    from . import where

    return where.main(argv)


def interrupted_message(err):
    """The one line printed when Ctrl-C stops a command: where it stopped and whether the same command resumes."""
    from .optim import Interrupted

    if not isinstance(err, Interrupted):
        return "interrupted; the same command starts the interrupted stage again (and reuses the finished " \
               "stages it caches)"
    where = f"interrupted at step {err.step} of {err.n_steps} ({err.label})"
    if err.checkpoint is None or err.saved_step is None:
        return f"{where}; that stage keeps no checkpoint, so the same command starts it again"
    if err.saved_step == err.step:
        return f"{where}; run the same command to resume"
    return f"{where}; run the same command to resume from step {err.saved_step}"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {
        "check": _check,
        "run": lambda a: _dispatch("run", EXPERIMENTS, "experiments", a),
        "bench": lambda a: _dispatch("bench", BENCHMARKS, "bench", a),
        "data": _data,
        "where": _where,
    }
    if argv and argv[0] not in commands and argv[0] not in ("-h", "--help"):
        print(f"kd-ref: unknown command {argv[0]!r}; expected one of {', '.join(commands)} (see kd-ref --help)",
              file=sys.stderr)
        return 2
    if not argv or argv[0] not in commands:
        print("usage: kd-ref {check | run NAME | bench NAME | where EQ | data COMMAND} [options]\n\n"
              "  check        every appendix check (A-D, seeds) and a short tour of kd_ref\n"
              f"  run NAME     an experiment: {', '.join(sorted(EXPERIMENTS)) or '(none yet)'}\n"
              f"  bench NAME   a benchmark: {', '.join(sorted(BENCHMARKS))}\n"
              "  where EQ     the lines of kd_ref that cite an equation (C.21, S3.6, ...) and its SPEC line\n"
              "  data COMMAND download, import-rbm, verify or info: the reference data")
        return 0
    try:
        return commands[argv[0]](argv[1:])
    except SystemExit as err:                 # argparse (usage errors, --help) and parser.error
        if err.code is None or isinstance(err.code, int):
            return err.code or 0
        print(err.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        start = "\n" if sys.stderr.isatty() else ""        # after a progress line redrawn in place
        what = " ".join(argv[:2]) if argv[0] in ("run", "bench") else argv[0]
        if argv[0] == "bench" and not hasattr(err, "checkpoint"):
            print(f"{start}kd-ref {what}: interrupted; a benchmark keeps nothing to resume", file=sys.stderr)
        else:
            print(f"{start}kd-ref {what}: {interrupted_message(err)}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
