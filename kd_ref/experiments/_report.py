"""Pieces every experiment shares: tables as Markdown and CSV, image grids, the guard on cached models, and the
checked start of a long run from the command line."""
import csv
import json
import os
from pathlib import Path

import numpy as np

from ..cli import settings_error
from ..optim import CheckpointError


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
