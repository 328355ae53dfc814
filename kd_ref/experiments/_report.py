"""Pieces every experiment shares: the :class:`Run` scaffold, tables as Markdown and CSV, image grids, the guard
on cached models, and the checked start of a long run from the command line."""
import csv
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..cli import settings_error
from ..optim import CheckpointError
from ..timing import component_rng


def write_table(rows, path_stem, title=None, floatfmt="{:.4g}"):
    """Write a list of dicts as ``<path_stem>.csv`` and ``<path_stem>.md``; return the Markdown text."""
    columns = list(rows[0])
    with open(path_stem + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

    def fmt(v):
        return floatfmt.format(v) if isinstance(v, (float, np.floating)) else str(v)

    lines = ([f"### {title}", ""] if title else []) + ["| " + " | ".join(columns) + " |",
                                                        "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(fmt(r[c]) for c in columns) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    with open(path_stem + ".md", "w") as f:
        f.write(text)
    return text


def image_grid(images, shape, cols=10):
    """Tile (n, D) images of the given (height, width) into one array for ``imshow``, with 1-pixel white gaps."""
    images = np.asarray(images)
    rows = int(np.ceil(images.shape[0] / cols))
    h, w = shape
    grid = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1))
    for k, img in enumerate(images):
        r, c = divmod(k, cols)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = img.reshape(shape)
    return grid


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file and a rename: an interrupted write leaves no torn file."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class StaleCache(ValueError):
    """An output folder whose cache was written with other settings (a user's mistake: the CLI names it, exit 2)."""


def check_cache(cache_dir, wanted):
    """Refuse to mix cached models made with other settings: compare ``wanted`` with ``cache_dir/settings.json``.

    The first run writes the file; later runs (resumes) must match it key by key.
    """
    path = Path(cache_dir) / "settings.json"
    wanted = json.loads(json.dumps(wanted))  # tuples become lists, as they come back from the file
    if path.exists():
        saved = json.loads(path.read_text())
        diff = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v}
        if diff:
            raise StaleCache(f"out: the cache in {cache_dir} was written with other settings "
                             f"({', '.join(f'{k}: {a} there, {b} now' for k, (a, b) in diff.items())}); "
                             "use another --out folder, or the same settings and --seed")
    else:
        write_text_atomic(path, json.dumps(wanted, indent=1))


class Presets:
    """Base of an experiment's settings dataclass: its presets are class methods.

    ``quick(**overrides)`` is the dataclass's defaults; a longer preset (``paper()``,
    ``thesis()``, ``medium()``) returns ``cls.preset(fields, **overrides)``: the defaults
    with ``fields``, then with ``overrides``, replaced.
    """

    @classmethod
    def quick(cls, **overrides):
        return replace(cls(), **overrides)

    @classmethod
    def preset(cls, fields, **overrides):
        return replace(cls(**fields), **overrides)


class Run:
    """One run of a long experiment: its folders, its random streams and the files it writes.

    ``out`` holds the tables, figures and ``results.json``; ``cache`` the finished
    components (models, curves, estimates), reused when the run is resumed; ``ckpt``
    the checkpoint of the component in progress. One base seed is drawn from ``rng``
    and each component draws from its own stream ``run.rng(*code)``, so a component
    found in the cache does not shift the random numbers of the others. The cache
    belongs to the settings it was made with: ``cache_settings`` (those the cached
    components depend on) is checked against the cache's ``settings.json``
    (:class:`StaleCache` when they differ).

    Parameters
    ----------
    out_dir : str or Path
        Created when absent; an earlier run's folder resumes it.
    rng : numpy.random.Generator
    cache_settings : dict
        JSON-able settings the cached components depend on.
    """

    def __init__(self, out_dir, rng, cache_settings):
        self.began = time.perf_counter()
        self.out = Path(out_dir)
        self.cache, self.ckpt = self.out / "cache", self.out / "ckpt"
        for p in (self.out, self.cache, self.ckpt):
            p.mkdir(parents=True, exist_ok=True)
        self.base = int(rng.integers(0, 2**62))
        check_cache(self.cache, {**cache_settings, "base_seed": self.base})
        self.files = {}

    def rng(self, *code):
        """The generator of the component named by the integers ``code`` (the same on every resume)."""
        return component_rng(self.base, *code)

    def cached_json(self, name, make):
        """``cache/name`` if an earlier run wrote it, else ``make()`` (a JSON-able dict), written there atomically."""
        path = self.cache / name
        if path.exists():
            return json.loads(path.read_text())
        value = make()
        write_text_atomic(path, json.dumps(value, indent=1))
        return value

    def finish(self, results):
        """Add ``files`` and ``seconds`` to ``results``, write them to ``out/results.json`` atomically; return them."""
        results["files"] = self.files
        results["seconds"] = time.perf_counter() - self.began
        write_text_atomic(self.out / "results.json", json.dumps(results, indent=1, default=_json_default))
        return results


def _json_default(o):
    """JSON for the values results hold besides dicts, lists, strings and numbers: arrays and numpy scalars."""
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def run_from_cli(parser, settings, options, check_data, run, out, seed):
    """The body of a long experiment's ``main``: check everything a user chose, run, print the tables; returns 0.

    Bad settings (errors renamed to the ``options`` that set them), missing or
    damaged reference data (``check_data(settings)``), an ``out`` that is a file and,
    from ``run``, a cache or checkpoint made with other settings all end through
    ``parser.error``: one line and exit status 2. Settings and data are checked
    before anything is written.
    """
    try:
        settings.validate()
    except (TypeError, ValueError) as err:
        settings_error(parser, err, options)
    try:
        check_data(settings)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    if os.path.exists(out) and not os.path.isdir(out):
        parser.error(f"--out: expected a folder (new, or from an earlier run), received {str(out)!r}, which is an "
                     f"existing file")
    print(f"{parser.prog}: {settings.mode} mode, output in {out}", flush=True)
    try:
        results = run(settings, out, np.random.default_rng(seed))
    except (StaleCache, CheckpointError) as err:
        parser.error(str(err))
    print()
    print(results["tables"])
    print(f"files: {json.dumps(results['files'], indent=1)}")
    print(f"total time {results['seconds']:.0f} s")
    return 0
