"""The one ``.npz`` format every saved kd_ref object uses: plain arrays, a kind tag and a version.

A file written by :func:`save` holds the caller's arrays plus two tags,

    kind     a string naming what the file holds ("kd_ref.MLP", "kd_ref.checkpoint", ...)
    version  the format version of that kind (an integer)

and :func:`load` gives the arrays back after checking both tags. Files are written
at exactly the path given (NumPy's ``savez`` would append ``.npz`` to a bare
name), through a temporary file and a rename, so a crash never leaves a
half-written file under the real name. Reading never unpickles: object arrays
and pickles are refused with a ``ValueError`` that names the file.

Examples
--------
>>> import os, tempfile
>>> import numpy as np
>>> path = os.path.join(tempfile.mkdtemp(), "w")
>>> save(path, "example.Weights", 1, w=np.arange(3.0))
>>> load(path, "example.Weights", {1})["w"]
array([0., 1., 2.])
"""
import os

import numpy as np

from ._validation import check_path

TAGS = ("kind", "version")


def save(path, kind, version, /, **arrays):
    """Write ``arrays`` with the tags ``kind`` and ``version`` to ``path``, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Written exactly as given (no extension is added).
    kind : str
    version : int
    **arrays : array_like
        Plain (non-object) arrays; the names ``kind`` and ``version`` are reserved.
    """
    clash = sorted(set(arrays) & set(TAGS))
    if clash:
        raise ValueError(f"arrays: expected names other than {list(TAGS)} (reserved for the tags), received {clash}")
    arrays = {name: np.asarray(a) for name, a in arrays.items()}
    pickled = sorted(name for name, a in arrays.items() if a.dtype.hasobject)
    if pickled:
        raise ValueError(f"arrays: expected plain (non-object) arrays, received object arrays {pickled}")
    path = check_path(path, "path")
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, kind=np.array(str(kind)), version=np.array(int(version)), **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_arrays(path, label="path"):
    """Every array of the ``.npz`` archive at ``path`` as a dict, without unpickling.

    Raises ``FileNotFoundError`` when there is no file, and ``ValueError`` naming
    ``label`` and the file when it is not an archive of plain arrays (truncated or
    damaged bytes, a single ``.npy`` array, pickled or object data).
    """
    p = check_path(path, label)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{label}: no file at {p!r}")
    try:
        loaded = np.load(p, allow_pickle=False)
    except Exception as err:  # zip, header or "pickled data" errors: damaged or foreign bytes
        raise ValueError(f"{label}: could not read {p!r} as a .npz archive, the file is damaged or not a .npz "
                         f"file ({type(err).__name__}: {err})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"{label}: expected a .npz archive, {p!r} holds a single .npy array")
    try:
        with loaded as f:
            return {name: f[name] for name in f.files}
    except Exception as err:  # CRC errors, truncated members, object arrays (need pickle)
        raise ValueError(f"{label}: could not read the arrays of {p!r}, the file is damaged or holds object "
                         f"arrays ({type(err).__name__}: {err})") from None


def load(path, kind, versions, label="path", required=()):
    """The arrays of a file written by :func:`save`, after checking its tags (the tags are removed).

    Parameters
    ----------
    path : str or os.PathLike
    kind : str
        The expected ``kind`` tag.
    versions : collection of int
        Format versions this reader understands.
    label : str
        Argument name used in error messages.
    required : sequence of str
        Array names that must be present.

    Returns
    -------
    dict of str -> ndarray
    """
    arrays = read_arrays(path, label)
    p = os.fspath(path)
    found = str(arrays["kind"]) if "kind" in arrays and arrays["kind"].ndim == 0 else None
    if found != kind:
        raise ValueError(f"{label}: expected a {kind} file, {p!r} holds "
                         f"{'a ' + found + ' file' if found else 'no kind tag (not written by kd_ref)'}")
    version = arrays.get("version")
    if version is None:
        raise ValueError(f"{label}: expected {kind} format version {sorted(versions)}, {p!r} holds no version tag")
    if version.ndim != 0 or not np.issubdtype(version.dtype, np.integer):
        raise ValueError(f"{label}: expected an integer version tag in {p!r}, received {version.dtype} of shape "
                         f"{version.shape}")
    if int(version) not in set(versions):
        raise ValueError(f"{label}: expected {kind} format version {sorted(versions)}, {p!r} has version "
                         f"{int(version)}")
    missing = [name for name in required if name not in arrays]
    if missing:
        raise ValueError(f"{label}: expected arrays {list(required)} in {p!r}, missing {missing}")
    return {k: v for k, v in arrays.items() if k not in TAGS}
