"""``kd-ref where EQ``: the lines of kd_ref that cite an equation, and the SPEC sentence defining it.

Equation numbers are the thesis's (2.9, B.12, C.21, D.14, ...) and the other sources'
(S1.5, S2.3, S3.6, ...), as ``SPEC.md`` and ``SPEC_seeds.md`` number them. A range
such as "B.19-B.21" or "(S3.4)-(S3.6)" cites every number inside it. Only comments
and string literals (docstrings included) are read, so a numeric literal such as
``2.5`` in code never counts as a citation.
"""
import io
import os
import re
import tokenize
from pathlib import Path

# one equation number: a chapter (2-5) or appendix (A-D) and an index, or S1-S3 and an index
# (not a longer section number such as 3.2.3, nor a float such as 2.2e-308)
_ONE = r"(?<![\w.§])(S[1-3]|[2-5]|[A-D])\.([1-9]\d?)(?!\d|\.\d|e[-+]?\d)"
_RANGE = re.compile(_ONE + r"\)?\s*[-–]\s*\(?" + _ONE.replace("(?<![\\w.§])", ""))
_NUMBER = re.compile(_ONE)
# words after which "2.1" is a section, figure or plain value rather than an equation
_NOT_AN_EQUATION = re.compile(r"(sections?|proposition|table|figure|fig\.|chapter|appendix|=)\s*$", re.IGNORECASE)
SPEC_FILES = ("SPEC.md", "SPEC_seeds.md")


def numbers_in(text):
    """Every equation number ``text`` cites, ranges expanded: a set of strings like 'B.20'."""
    found = set()
    for m in _RANGE.finditer(text):
        p, a, q, b = m.groups()
        if p == q and int(a) < int(b) and not _NOT_AN_EQUATION.search(text[:m.start()]):
            found.update(f"{p}.{i}" for i in range(int(a), int(b) + 1))
    for m in _NUMBER.finditer(text):
        if not _NOT_AN_EQUATION.search(text[:m.start()]):
            found.add(f"{m.group(1)}.{m.group(2)}")
    return found


def normalise(eq):
    """'c.21', '(C.21)' -> 'C.21'; None when ``eq`` is not shaped like an equation number."""
    text = eq.strip().strip("()").upper()
    match = re.fullmatch(r"(S[1-3]|[2-5]|[A-D])\.([1-9]\d?)", text)
    return None if match is None else f"{match.group(1)}.{match.group(2)}"


def spec_folder():
    """The folder holding SPEC.md: $KD_REF_SPEC, else $KD_REF_DATA/.., else ../shared beside a checkout; or None."""
    here = Path(__file__).resolve().parents[1]
    candidates = [os.environ.get("KD_REF_SPEC"),
                  os.path.join(os.environ["KD_REF_DATA"], "..") if os.environ.get("KD_REF_DATA") else None,
                  here.parent / "shared"]
    for folder in candidates:
        if folder and all((Path(folder) / name).is_file() for name in SPEC_FILES):
            return Path(folder).resolve()
    return None


def spec_lines(folder):
    """(file name, line number, line) for every line of the two SPEC files."""
    for name in SPEC_FILES:
        for k, line in enumerate((folder / name).read_text(encoding="utf-8").splitlines(), start=1):
            yield name, k, line


def spec_numbers(folder):
    """Every equation number the SPEC files name, range interiors included: the thesis's from
    SPEC.md, the S-numbers from SPEC_seeds.md (whose other numbers are the source papers' own)."""
    out = set()
    for name, _, line in spec_lines(folder):
        numbers = numbers_in(line)
        out |= {n for n in numbers if n.startswith("S") == (name == "SPEC_seeds.md")}
    return out


def defining_line(folder, eq):
    """The SPEC line that defines ``eq``: its bold bullet, else its first mention by itself,
    else its first mention inside a range (the preamble before the first heading skipped); or None."""
    alone = in_range = None
    for name, k, line in spec_lines(folder):
        if k == 1 or eq.startswith("S") != (name == "SPEC_seeds.md"):
            preamble = True
        if line.startswith("## "):
            preamble = False
        if preamble or eq not in numbers_in(line):
            continue
        if line.lstrip().startswith(f"- **{eq}"):
            return name, k, line
        if alone is None and any(f"{m.group(1)}.{m.group(2)}" == eq for m in _NUMBER.finditer(line)):
            alone = (name, k, line)
        in_range = in_range or (name, k, line)
    return alone or in_range


def package_files():
    """The .py files of the installed kd_ref (its appendix checks included)."""
    root = Path(__file__).resolve().parent
    # not the command's own help texts, whose examples cite nothing
    files = sorted(f for f in root.rglob("*.py") if f.relative_to(root).as_posix() not in ("where.py", "cli.py"))
    checks = root / "appendix_checks"
    if not checks.is_dir():                          # a checkout: the folder sits beside kd_ref
        files += sorted((root.parent / "appendix_checks").glob("*.py"))
    return files


def citations(files=None):
    """{equation number: [(path, line number, source line), ...]} over comments and strings."""
    out = {}
    for path in files or package_files():
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type not in (tokenize.COMMENT, tokenize.STRING):
                continue
            for offset, piece in enumerate(tok.string.splitlines()):
                row = tok.start[0] + offset
                for eq in numbers_in(piece):
                    out.setdefault(eq, []).append((path, row, lines[row - 1].strip()))
    return out


def main(argv):
    """``kd-ref where EQ``: 0 when kd_ref cites EQ, 1 when nothing does, 2 for a usage error."""
    import sys

    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        if argv and argv[0] in ("-h", "--help"):
            print("usage: kd-ref where EQ   (e.g. kd-ref where C.21, kd-ref where S3.6)")
            return 0
        print(f"kd-ref where: expected one equation number such as C.21 or S3.6, received {len(argv)} arguments",
              file=sys.stderr)
        return 2
    eq = normalise(argv[0])
    if eq is None:
        print(f"kd-ref where: expected an equation number such as C.21 or S3.6, received {argv[0]!r}",
              file=sys.stderr)
        return 1
    folder = spec_folder()
    known = spec_numbers(folder) if folder is not None else set()
    sites = citations().get(eq, [])
    cwd = Path.cwd()
    for path, row, line in sites:
        shown = os.path.relpath(path, cwd) if path.is_relative_to(cwd) else str(path)
        print(f"{shown}:{row}: {line}")
    if folder is not None and eq in known:
        name, k, line = defining_line(folder, eq)
        print(f"{name}:{k}: {line.strip()}")
    if sites:
        return 0
    if folder is None:
        print(f"kd-ref where: no line of kd_ref cites {eq}, and SPEC.md was not found to say whether it exists "
              "(set KD_REF_SPEC to the folder holding it)", file=sys.stderr)
    elif eq in known:
        print(f"kd-ref where: {eq} is in the SPEC but no line of kd_ref cites it yet", file=sys.stderr)
    else:
        print(f"kd-ref where: unknown equation number {eq}; SPEC.md and SPEC_seeds.md do not name it", file=sys.stderr)
    return 1
