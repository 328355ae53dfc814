"""The ``kd-ref`` command: ``check``, ``run NAME``, ``bench NAME`` and ``data ...`` (download, import-rbm, verify, info).

Each experiment and benchmark is a module with ``main(argv) -> int``; the
tables below name them, so adding one is one line here.
"""
import argparse
import importlib
import sys

EXPERIMENTS = {
    # name: module under kd_ref.experiments
    "compress": "compress",
    "bayes-mog": "bayes_mog",
    "bayes-logreg": "bayes_logreg",
    "rbm-nade": "rbm_nade",
}

BENCHMARKS = {
    # name: module under kd_ref.bench
    "mlp": "mlp",
    "dse": "dse",
    "nade": "nade",
    "gibbs": "gibbs",
    "logz": "logz",
}

APPENDICES = ["a", "b", "c", "d"]


def _check(argv):
    parser = argparse.ArgumentParser(prog="kd-ref check", description="Run every appendix check, then a short tour.")
    parser.add_argument("--appendix", nargs="*", choices=APPENDICES, default=APPENDICES,
                        help="appendices to check (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random test cases")
    parser.add_argument("--no-tour", action="store_true", help="skip the tour after the checks")
    args = parser.parse_args(argv)
    ok = True
    for name in args.appendix:
        module = importlib.import_module(f"appendix_checks.appendix_{name}")
        ok &= module.main(seed=args.seed)
    if not args.no_tour:
        from . import tour

        tour.main(seed=args.seed)
    print("\nall appendix checks passed" if ok else "\nSOME APPENDIX CHECKS FAILED")
    return 0 if ok else 1


def _dispatch(kind, table, package, argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: kd-ref {kind} NAME [options]\n\navailable: {', '.join(sorted(table)) or '(none)'}")
        return 0 if argv else 2
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
    from . import datasets

    return datasets.main(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {
        "check": _check,
        "run": lambda a: _dispatch("run", EXPERIMENTS, "experiments", a),
        "bench": lambda a: _dispatch("bench", BENCHMARKS, "bench", a),
        "data": _data,
    }
    if not argv or argv[0] not in commands:
        print("usage: kd-ref {check | run NAME | bench NAME | data COMMAND} [options]\n\n"
              "  check        every appendix check (A-D) and a short tour of kd_ref\n"
              f"  run NAME     an experiment: {', '.join(sorted(EXPERIMENTS)) or '(none yet)'}\n"
              f"  bench NAME   a benchmark: {', '.join(sorted(BENCHMARKS))}\n"
              "  data COMMAND download, import-rbm, verify or info: the reference data",
              file=sys.stderr if argv else sys.stdout)
        return 2 if argv and argv[0] not in ("-h", "--help") else 0
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
