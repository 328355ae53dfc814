"""What every experiment writes: tables as Markdown and CSV (figures are saved by each experiment)."""
import csv

import numpy as np


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
