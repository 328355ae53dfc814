"""Fetch, convert and check the reference data files; the ``kd-ref data`` command.

``kd-ref data download`` writes ``mnist.npz`` from the four original MNIST IDX
files (public mirrors) and ``binarized_mnist.npz`` from the MATLAB file
``randomly_binarized_mnist.mat`` of the thesis's public code repository
(G. Papamakarios, BSD-style licence), moving its pixels from MATLAB's
column-major to row-major order; each converted array is checked against the
README's sha256. ``rbm_cd25_500.npz`` cannot be downloaded the same way: the
repository stores the RBM as a MATLAB object, which only MATLAB can open. Export
its three arrays there, then ``kd-ref data import-rbm FILE`` converts them (see
:func:`import_rbm`). ``--make-binarized`` writes ``binarized_mnist_resampled.npz``,
a fresh stochastic binarisation of the downloaded grey levels (same recipe and
format, in MNIST order, but a different random draw: not the reference sample,
so reference figures such as the mean test log phi of 364.93 will differ
slightly).
"""
import gzip
import hashlib
import io
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from ._validation import as_float_array, check_binary_dataset, check_bool, check_generator, check_in_range, check_path
from .datasets import (ARRAY_SHA256, BINARIZED_FILE, ENV_VAR, HOW_TO_GET, LAYOUTS, MNIST_FILE, RBM_FILE,
                       RESAMPLED_FILE, array_sha256, binarize_stochastic, find_file, load_mnist, read_reference,
                       verify_checksums)

# the four original MNIST files: array name -> (file name, md5 of the uncompressed bytes)
MNIST_IDX = {
    "x_train": ("train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb"),
    "y_train": ("train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624"),
    "x_test": ("t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea"),
    "y_test": ("t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637"),
}
# Public mirrors of the IDX files (the original yann.lecun.com site often refuses downloads).
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/")

# The thesis's public code repository holds the originals of the other two files as MATLAB files.
THESIS_DATA_URL = "https://raw.githubusercontent.com/gpapamak/distilling_model_knowledge/HEAD/data/"
BINARIZED_MAT = "mnist/randomly_binarized_mnist.mat"      # x_trn (784, 60000), x_tst (784, 10000)
RBM_MAT = "rbm/rbm_CD25_500.mat"                          # a MATLAB Rbm object with W, a (visible), b (hidden)
# A MATLAB 784-vector is column-major (index col * 28 + row): row-major pixel r * 28 + c is its entry
# COLUMN_TO_ROW_MAJOR[r * 28 + c] = c * 28 + r (the data README's permutation P; P is its own inverse).
COLUMN_TO_ROW_MAJOR = np.arange(784).reshape(28, 28).T.ravel()
RBM_EXPORT_STEPS = (
    f"In MATLAB, with the thesis code on the path (its install.m): load('{Path(RBM_MAT).name}'); "
    f"W = rbm.W; a = rbm.a; b = rbm.b; save('rbm_arrays.mat', 'W', 'a', 'b', '-v7'); then run "
    f"`kd-ref data import-rbm rbm_arrays.mat --dest DIR`.")


def read_idx(raw, name="idx"):
    """Parse an (uncompressed) IDX file of unsigned bytes: 4-byte magic 0 0 8 ndim, ndim big-endian sizes, data."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise TypeError(f"raw: expected the file's bytes, received {type(raw).__name__}")
    raw = bytes(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{name}: expected an IDX file (magic 0x0000), received bytes {raw[:4]!r}")
    if raw[2] != 0x08:
        raise ValueError(f"{name}: expected IDX data type 0x08 (unsigned byte), received 0x{raw[2]:02x}")
    ndim = raw[3]
    if ndim < 1:
        raise ValueError(f"{name}: expected at least 1 dimension in the IDX header, received {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{name}: expected an IDX header of {header} bytes ({ndim} sizes), received {len(raw)} bytes")
    shape = tuple(int(s) for s in np.frombuffer(raw[4:header], dtype=">u4"))
    size = int(np.prod(shape))
    if len(raw) != header + size:
        raise ValueError(f"{name}: expected {header + size} bytes for shape {shape}, received {len(raw)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _fetch(url, timeout):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise OSError(f"download: could not fetch {url} ({err})") from None


def _new_file(dest, filename, force):
    """``dest / filename``, refused when it exists unless ``force`` (checked before anything is fetched)."""
    force = check_bool(force, "force")
    target = Path(check_path(dest, "dest")) / filename
    if target.exists() and not force:
        raise FileExistsError(f"dest: {str(target)!r} already exists; pass force=True (--force) to overwrite it")
    return target


def _check_options(verify=True, timeout=60, log=print):
    """The options shared by the download and import functions, checked before anything is fetched or read."""
    check_bool(verify, "verify")
    check_in_range(timeout, "timeout", 0.0, np.inf, low_open=True, high_open=True)
    if not callable(log):
        raise TypeError(f"log: expected a callable taking one message (e.g. print), received {log!r}")


def _write_npz_atomic(target, arrays):
    """Write ``arrays`` to ``target`` through a temporary file in the same folder, so no half-written file remains."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(target.parent), suffix=".npz.part")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def download_mnist(dest, source_url=None, *, verify=True, force=False, timeout=60, log=print):
    """Fetch the four MNIST IDX files and write ``dest/mnist.npz`` in the reference layout.

    Parameters
    ----------
    dest : str or Path
        Folder (created if needed).
    source_url : str, optional
        Base URL holding ``train-images-idx3-ubyte.gz`` etc. (http, https or file://);
        default: the mirrors in ``MNIST_MIRRORS``, tried in turn.
    verify : bool
        Check the md5 of each uncompressed file against the canonical MNIST sums
        (turn off only for test files) and the reference shapes.
    force : bool
        Overwrite an existing ``mnist.npz``.

    Returns
    -------
    Path of the written file.
    """
    target = _new_file(dest, MNIST_FILE, force)
    _check_options(verify, timeout, log)
    bases = [source_url] if source_url else list(MNIST_MIRRORS)
    arrays = {}
    for name, (fname, md5) in MNIST_IDX.items():
        errors = []
        for base in bases:
            url = base.rstrip("/") + "/" + fname
            try:
                packed = _fetch(url, timeout)
            except OSError as err:
                errors.append(str(err))
                continue
            log(f"fetched {url} ({len(packed)} bytes)")
            break
        else:
            raise OSError(f"download: no source gave {fname}: " + "; ".join(errors))
        try:
            raw = gzip.decompress(packed)
        except (OSError, EOFError) as err:
            raise ValueError(f"{fname}: expected a gzip file, could not decompress it ({err})") from None
        if verify and hashlib.md5(raw).hexdigest() != md5:
            raise ValueError(f"{fname}: expected the canonical MNIST file (md5 {md5} of the uncompressed bytes), "
                             f"received md5 {hashlib.md5(raw).hexdigest()}; pass --no-verify only for test files")
        arrays[name] = read_idx(raw, fname)
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"download: expected {split} images (n, rows, cols) and n labels, received shapes "
                             f"{x.shape} and {y.shape}")
    _check_reference_arrays(MNIST_FILE, arrays, verify, "the IDX files")
    _write_npz_atomic(target, arrays)
    log(f"wrote {target}")
    return target


def _read_mat(raw, names, label):
    """The variables ``names`` of a MATLAB .mat file (formats v4 to v7) given as bytes, as ndarrays."""
    from scipy import io as sio     # scipy is only needed for the two MATLAB originals

    try:
        mat = sio.loadmat(io.BytesIO(raw), variable_names=list(names))
    except NotImplementedError as err:   # scipy reads up to v7; v7.3 files are HDF5
        raise ValueError(f"{label}: expected a MATLAB file of format v7 or older, received one scipy cannot read "
                         f"({err}); save it again in MATLAB with the '-v7' option") from None
    except Exception as err:
        raise ValueError(f"{label}: could not read it as a MATLAB .mat file ({type(err).__name__}: {err})") from None
    missing = [name for name in names if name not in mat]
    if missing:
        try:
            held = sorted(f"{n} ({c})" for n, _, c in sio.whosmat(io.BytesIO(raw)))
        except Exception:
            held = "unknown"
        raise ValueError(f"{label}: expected MATLAB variables {list(names)}, missing {missing}; the file holds "
                         f"{held}")
    return {name: mat[name].toarray() if hasattr(mat[name], "toarray") else np.asarray(mat[name])
            for name in names}


def _check_reference_arrays(filename, arrays, verify, source):
    """Shapes, dtypes and (with ``verify``) the README's sha256 of arrays converted from an original file."""
    if not verify:
        return
    for name, (shape, dtype) in LAYOUTS[filename].items():
        a = arrays[name]
        if a.shape != shape or a.dtype != dtype:
            raise ValueError(f"{filename}: expected {name} of shape {shape} and dtype {np.dtype(dtype).name} "
                             f"from {source}, received shape {a.shape} and dtype {a.dtype}")
        if array_sha256(a) != ARRAY_SHA256[filename][name]:
            raise ValueError(f"{filename}: expected {name} with the reference sha256 {ARRAY_SHA256[filename][name]} "
                             f"(data README), received {array_sha256(a)}: {source} is not the original file; "
                             f"pass --no-verify only for test files")


def download_binarized_mnist(dest, source_url=None, *, verify=True, force=False, timeout=60, log=print):
    """Fetch the thesis's ``randomly_binarized_mnist.mat`` and write ``dest/binarized_mnist.npz``.

    The MATLAB file holds one image per column (x_trn (784, 60000), x_tst
    (784, 10000)) in column-major pixel order; the written arrays hold one image
    per row in row-major order (``COLUMN_TO_ROW_MAJOR``), as uint8 0/1, in the
    same image order.

    Parameters
    ----------
    dest : str or Path
        Folder (created if needed).
    source_url : str, optional
        Base URL of the repository's ``data`` folder (http, https or file://),
        under which the file is ``BINARIZED_MAT``; default ``THESIS_DATA_URL``.
    verify : bool
        Check each converted array against the data README's sha256 (turn off
        only for test files).
    force : bool
        Overwrite an existing ``binarized_mnist.npz``.

    Returns
    -------
    Path of the written file.
    """
    target = _new_file(dest, BINARIZED_FILE, force)
    _check_options(verify, timeout, log)
    url = (source_url or THESIS_DATA_URL).rstrip("/") + "/" + BINARIZED_MAT
    raw = _fetch(url, timeout)
    log(f"fetched {url} ({len(raw)} bytes)")
    mat = _read_mat(raw, ("x_trn", "x_tst"), BINARIZED_MAT)
    arrays = {}
    for name, key in (("x_train", "x_trn"), ("x_test", "x_tst")):
        a = mat[key]
        if a.ndim != 2 or a.shape[0] != 784:
            raise ValueError(f"{BINARIZED_MAT}: expected {key} of shape (784, n), one image per column, received "
                             f"shape {a.shape}")
        check_binary_dataset(a.T, f"{BINARIZED_MAT}: {key} (transposed)", 784)
        arrays[name] = np.ascontiguousarray(a.astype(np.uint8).T[:, COLUMN_TO_ROW_MAJOR])
    _check_reference_arrays(BINARIZED_FILE, arrays, verify, url)
    _write_npz_atomic(target, arrays)
    log(f"wrote {target}")
    return target


def import_rbm(mat_path, dest, *, verify=True, force=False, log=print):
    """Write ``dest/rbm_cd25_500.npz`` from a MATLAB file holding the CD25(500) RBM's plain arrays.

    The thesis repository stores the RBM (``RBM_MAT``) as a MATLAB object, which
    only MATLAB can open; ``RBM_EXPORT_STEPS`` says how to save its arrays W
    (784, 500), a (784, 1, visible biases) and b (500, 1, hidden biases) to a plain
    .mat file. Rows of W and a are moved from column-major to row-major pixel
    order, as in the data README.

    Parameters
    ----------
    mat_path : str or Path
    dest : str or Path
        Folder (created if needed).
    verify : bool
        Check each converted array against the data README's sha256.
    force : bool
        Overwrite an existing ``rbm_cd25_500.npz``.

    Returns
    -------
    Path of the written file.
    """
    mat_path = Path(check_path(mat_path, "mat_path"))
    target = _new_file(dest, RBM_FILE, force)
    _check_options(verify, log=log)
    if not mat_path.is_file():
        raise FileNotFoundError(f"mat_path: no file at {str(mat_path)!r}. {RBM_EXPORT_STEPS}")
    try:
        mat = _read_mat(mat_path.read_bytes(), ("W", "a", "b"), mat_path.name)
    except ValueError as err:
        raise ValueError(f"{err}. {RBM_EXPORT_STEPS}") from None
    W, a, b = mat["W"], mat["a"], mat["b"]
    if W.shape != (784, 500) or a.size != 784 or b.size != 500:
        raise ValueError(f"{mat_path.name}: expected W (784, 500), a (784, 1), b (500, 1), received W {W.shape}, "
                         f"a {a.shape}, b {b.shape}")
    arrays = {"W": np.ascontiguousarray(W[COLUMN_TO_ROW_MAJOR], dtype=np.float64),
              "b_visible": np.ascontiguousarray(a.ravel()[COLUMN_TO_ROW_MAJOR], dtype=np.float64),
              "b_hidden": np.ascontiguousarray(b.ravel(), dtype=np.float64)}
    for name, arr in arrays.items():
        as_float_array(arr, f"{mat_path.name}: {name}")
    _check_reference_arrays(RBM_FILE, arrays, verify, str(mat_path))
    _write_npz_atomic(target, arrays)
    log(f"wrote {target}")
    return target


def make_resampled_binarized(mnist_path, dest, rng, *, force=False, log=print):
    """Write ``dest/binarized_mnist_resampled.npz``: a fresh stochastic binarisation of MNIST's grey levels.

    Same arrays, shapes and dtypes as ``binarized_mnist.npz`` but MNIST's image
    order and a new random draw: NOT the Salakhutdinov-Murray sample the
    CD25(500) RBM was trained on.
    """
    target = _new_file(dest, RESAMPLED_FILE, force)
    _check_options(log=log)
    check_generator(rng)
    (x_train, _), (x_test, _) = load_mnist(mnist_path)
    arrays = {"x_train": binarize_stochastic(x_train, rng).astype(np.uint8),
              "x_test": binarize_stochastic(x_test, rng).astype(np.uint8)}
    _write_npz_atomic(target, arrays)
    log(f"wrote {target} (a new stochastic binarisation, not the reference binarized_mnist.npz)")
    return target


def _download(args):
    """``kd-ref data download``: each requested file in turn; an existing file is kept unless --force."""
    dest = Path(args.dest or os.environ.get(ENV_VAR) or "kd_ref_data")
    failed = []
    for what in args.files:
        target = dest / (MNIST_FILE if what == "mnist" else BINARIZED_FILE)
        if target.exists() and not args.force:
            print(f"kept {target}: it already exists (--force replaces it)")
            continue
        try:
            if what == "mnist":
                download_mnist(dest, args.source_url, verify=not args.no_verify, force=args.force,
                               timeout=args.timeout)
            else:
                download_binarized_mnist(dest, args.thesis_url, verify=not args.no_verify, force=args.force,
                                         timeout=args.timeout)
        except (OSError, ValueError) as err:
            print(f"kd-ref data download: {err}", file=sys.stderr)
            failed.append(target.name)
    if args.make_binarized:
        try:
            make_resampled_binarized(dest / MNIST_FILE, dest, np.random.default_rng(args.seed), force=args.force)
        except (OSError, ValueError) as err:
            print(f"kd-ref data download: {err}", file=sys.stderr)
            failed.append(RESAMPLED_FILE)
    present = [f for f in (MNIST_FILE, BINARIZED_FILE, RBM_FILE) if (dest / f).is_file()]
    print(f"\nIn {dest}: {', '.join(present) or 'none of the reference files'}.")
    if RBM_FILE not in present:
        print(f"{RBM_FILE} has no direct download (the thesis repository stores the RBM as a MATLAB object). "
              f"{RBM_EXPORT_STEPS}")
    if failed:
        print(f"Failed: {', '.join(failed)} (see the messages above).", file=sys.stderr)
        return 1
    print(f"Then: export {ENV_VAR}={dest}")
    return 0


def main(argv=None):
    """``kd-ref data {download | import-rbm | verify | info}``; returns the exit status."""
    from .cli import ArgumentParser, int_at_least, positive_float

    parser = ArgumentParser(prog="kd-ref data", description="Reference data: download, import-rbm, verify, info.")
    sub = parser.add_subparsers(dest="command")
    dl = sub.add_parser("download", help="fetch the public originals, write mnist.npz and binarized_mnist.npz",
                        description="Write DEST/mnist.npz from the four MNIST IDX files and DEST/binarized_mnist.npz "
                                    "from the thesis code repository's randomly_binarized_mnist.mat (pixels moved "
                                    "to row-major order, arrays checked against the data README's sha256). "
                                    "rbm_cd25_500.npz needs MATLAB: see `kd-ref data import-rbm --help`.")
    dl.add_argument("--dest", help=f"folder to write into (default: ${ENV_VAR}, else ./kd_ref_data)")
    dl.add_argument("--files", nargs="+", choices=["mnist", "binarized"], default=["mnist", "binarized"],
                    help="which files to fetch (default: both)")
    dl.add_argument("--source-url", help="base URL of the MNIST .gz IDX files (http, https or file://); "
                                         f"default: {', '.join(MNIST_MIRRORS)}")
    dl.add_argument("--thesis-url", help=f"base URL of the thesis repository's data folder, holding {BINARIZED_MAT} "
                                         f"(http, https or file://); default: {THESIS_DATA_URL}")
    dl.add_argument("--no-verify", action="store_true",
                    help="skip the md5, shape and sha256 checks (test files only)")
    dl.add_argument("--force", action="store_true", help="overwrite existing files")
    dl.add_argument("--make-binarized", action="store_true",
                    help=f"also write {RESAMPLED_FILE}, a new stochastic binarisation (not the reference sample)")
    dl.add_argument("--seed", type=int_at_least(0), default=0, help="seed of --make-binarized")
    dl.add_argument("--timeout", type=positive_float, default=60.0, help="seconds per request")
    imp = sub.add_parser("import-rbm", help=f"write {RBM_FILE} from the CD25(500) RBM's arrays exported by MATLAB",
                         description=f"Convert a MATLAB file with the thesis RBM's arrays W, a, b into {RBM_FILE}. "
                                     + RBM_EXPORT_STEPS)
    imp.add_argument("file", help="the .mat file with W (784, 500), a (784, 1), b (500, 1)")
    imp.add_argument("--dest", help=f"folder to write into (default: ${ENV_VAR}, else ./kd_ref_data)")
    imp.add_argument("--no-verify", action="store_true", help="skip the sha256 checks (test files only)")
    imp.add_argument("--force", action="store_true", help=f"overwrite an existing {RBM_FILE}")
    for name, text in (("verify", "compare every array with the README's sha256"),
                       ("info", "say which reference files are present and well formed")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--path", help=f"data folder (default: ${ENV_VAR})")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("expected a command (download, import-rbm, verify or info), received none; see --help")
    if args.command in ("download", "import-rbm"):
        dest = args.dest or os.environ.get(ENV_VAR) or "kd_ref_data"
        if os.path.exists(dest) and not os.path.isdir(dest):
            sub.choices[args.command].error(f"--dest: expected a folder, received {dest!r}, which is an existing file")
    if args.command == "download":
        return _download(args)
    if args.command == "import-rbm":
        try:
            target = import_rbm(args.file, dest, verify=not args.no_verify, force=args.force)
        except (FileNotFoundError, FileExistsError, ValueError) as err:    # the user's file or folder
            sub.choices[args.command].error(str(err))
        except OSError as err:
            print(f"kd-ref data import-rbm: {err}", file=sys.stderr)
            return 1
        print(f"Then: export {ENV_VAR}={target.parent}")
        return 0
    folder = args.path
    if folder is not None and not os.path.isdir(folder):
        sub.choices[args.command].error(f"--path: expected a folder holding the reference data, received "
                                        f"{folder!r}, {'a file' if os.path.exists(folder) else 'no such folder'}")
    ok = True
    for fname in (MNIST_FILE, BINARIZED_FILE, RBM_FILE):
        try:
            p = find_file(fname, folder)
            read_reference(p, LAYOUTS[fname])
            if args.command == "info":
                print(f"{fname:<22} ok       {p}")
                continue
            result = verify_checksums(fname, folder)
            bad = [k for k, v in result.items() if not v]
            print(f"{fname:<22} {'ok' if not bad else 'MISMATCH ' + ', '.join(bad):<8} {p}")
            ok &= not bad
        except FileNotFoundError:
            print(f"{fname:<22} missing")
            ok = False
        except ValueError as err:
            print(f"{fname:<22} BROKEN   {err}")
            ok = False
    if not ok:
        print(f"\n{HOW_TO_GET}", file=sys.stderr)
    return 0 if ok else 1
