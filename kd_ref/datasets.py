"""Reference data loaders, binarisation, small built-in datasets and ``kd-ref data`` (download / verify / info).

Reference files (see ../shared/data/README.md; kd_ref never ships them):

================================  ==========================================================
``mnist.npz``                     x_train (60000, 28, 28) uint8, y_train (60000,) uint8,
                                  x_test (10000, 28, 28) uint8, y_test (10000,) uint8
``binarized_mnist.npz``           x_train (60000, 784) uint8 0/1, x_test (10000, 784) uint8 0/1
                                  (Salakhutdinov and Murray's stochastic binarisation, no labels)
``rbm_cd25_500.npz``              W (784, 500), b_visible (784,), b_hidden (500,), float64
================================  ==========================================================

Flattened images are row-major (pixel ``row * 28 + col``). Every loader takes the
file (or its folder) as ``path``; without it the file is looked up in the folder
named by the environment variable ``KD_REF_DATA``. A missing file raises
FileNotFoundError saying how to get it; a damaged file or one with other arrays,
shapes or dtypes raises ValueError naming the array, the expected and the received
value.

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

from . import npzfile
from ._validation import (as_binary_array, as_float_array, check_binary_dataset, check_bool, check_generator,
                          check_in_range, check_path, check_positive_int)

ENV_VAR = "KD_REF_DATA"
MNIST_FILE = "mnist.npz"
BINARIZED_FILE = "binarized_mnist.npz"
RBM_FILE = "rbm_cd25_500.npz"
RESAMPLED_FILE = "binarized_mnist_resampled.npz"

# array name -> (shape, dtype) of each reference file
LAYOUTS = {
    MNIST_FILE: {"x_train": ((60000, 28, 28), np.uint8), "y_train": ((60000,), np.uint8),
                 "x_test": ((10000, 28, 28), np.uint8), "y_test": ((10000,), np.uint8)},
    BINARIZED_FILE: {"x_train": ((60000, 784), np.uint8), "x_test": ((10000, 784), np.uint8)},
    RBM_FILE: {"W": ((784, 500), np.float64), "b_visible": ((784,), np.float64), "b_hidden": ((500,), np.float64)},
}

# sha256 of each array's raw bytes, from the data README (independent of zip time stamps)
ARRAY_SHA256 = {
    BINARIZED_FILE: {
        "x_train": "9ba5be132d07fef6e91b347f2896a1eb4b1f0c2d086aca723307c591e1efa943",
        "x_test": "37b73bafad592c26d7efb96914ff372703d242db503569f16f42c6299e301f02"},
    RBM_FILE: {
        "W": "4a7fc994541d75e0bd596be39e618e4b7c8a72811e435a516b18d74e946fbef5",
        "b_visible": "f6494d791fc9d7190400c3ccb540667c3c6beddc23c5c049e44d843de638dca2",
        "b_hidden": "743f85d6b7502c69bb67008299fe951aed99a19b9dcdd81444394782af970af8"},
    MNIST_FILE: {
        "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
        "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
        "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
        "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5"},
}

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

HOW_TO_GET = (
    f"Set the environment variable {ENV_VAR} to the folder that holds the reference data "
    f"(mnist.npz, binarized_mnist.npz, rbm_cd25_500.npz), or pass its path explicitly. "
    f"`kd-ref data download --dest DIR` writes DIR/mnist.npz from the MNIST originals and DIR/binarized_mnist.npz "
    f"from the thesis code repository (then set {ENV_VAR}=DIR); rbm_cd25_500.npz must be exported from that "
    f"repository's MATLAB file with MATLAB and converted by `kd-ref data import-rbm` (see its --help).")
RBM_EXPORT_STEPS = (
    f"In MATLAB, with the thesis code on the path (its install.m): load('{Path(RBM_MAT).name}'); "
    f"W = rbm.W; a = rbm.a; b = rbm.b; save('rbm_arrays.mat', 'W', 'a', 'b', '-v7'); then run "
    f"`kd-ref data import-rbm rbm_arrays.mat --dest DIR`.")


# ----------------------------------------------------------------------------- locating
def find_file(filename, path=None):
    """Path of a reference file: ``path`` (the file or its folder), else ``$KD_REF_DATA/filename``.

    Raises FileNotFoundError, with instructions, when there is no such file.
    """
    path = check_path(path, "path", optional=True)
    if path is not None:
        p = Path(path)
        if p.is_dir():
            p = p / filename
        if not p.is_file():
            raise FileNotFoundError(f"path: expected {filename} at {str(p)!r}, no such file. {HOW_TO_GET}")
        return p
    folder = os.environ.get(ENV_VAR)
    if not folder:
        raise FileNotFoundError(f"{filename}: not found because {ENV_VAR} is not set and no path was given. "
                                f"{HOW_TO_GET}")
    p = Path(folder) / filename
    if not p.is_file():
        raise FileNotFoundError(f"{filename}: not found in {ENV_VAR}={folder!r}. {HOW_TO_GET}")
    return p


def _read_npz(p, layout):
    """All arrays of the .npz file ``p`` after checking names, shapes and dtypes against ``layout``."""
    try:
        arrays = npzfile.read_arrays(p, p.name)
    except ValueError as err:
        raise ValueError(f"{err}; download or copy the file again") from None
    missing = sorted(set(layout) - set(arrays))
    if missing:
        raise ValueError(f"{p.name}: expected arrays {sorted(layout)}, {str(p)!r} holds {sorted(arrays)} "
                         f"(missing {missing})")
    for name, (shape, dtype) in layout.items():
        a = arrays[name]
        if a.shape != shape or a.dtype != dtype:
            raise ValueError(f"{p.name}: expected {name} of shape {shape} and dtype {np.dtype(dtype).name}, "
                             f"received shape {a.shape} and dtype {a.dtype}")
    return {name: arrays[name] for name in layout}


# ------------------------------------------------------------------------------ loaders
def mnist_available(path=None):
    """True when ``mnist.npz`` can be found (at ``path`` or in ``KD_REF_DATA``); its contents are not checked."""
    try:
        find_file(MNIST_FILE, path)
    except FileNotFoundError:
        return False
    return True


def load_mnist(path=None, *, flatten=True, scale=True):
    """MNIST grey-level images with labels, in the original MNIST order.

    Parameters
    ----------
    path : str or Path, optional
        ``mnist.npz`` or its folder; default ``$KD_REF_DATA``.
    flatten : bool
        Images as rows of 784 row-major pixels (default) or as (28, 28) arrays.
    scale : bool
        Grey levels as float64 in [0, 1] (value / 255, default) or the stored uint8 0..255.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        x_train (60000, 784) float64 by default; y_* int64 labels 0..9
        (uint8 as stored when ``scale=False``).
    """
    flatten, scale = check_bool(flatten, "flatten"), check_bool(scale, "scale")
    p = find_file(MNIST_FILE, path)
    arrays = _read_npz(p, LAYOUTS[MNIST_FILE])
    for name in ("y_train", "y_test"):
        if arrays[name].max() > 9:
            raise ValueError(f"{p.name}: expected {name} labels in 0..9, received maximum {arrays[name].max()}")
    out = []
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if flatten:
            x = x.reshape(x.shape[0], -1)
        if scale:
            x = x.astype(np.float64) / 255.0
            y = y.astype(np.int64)
        out.append((x, y))
    return tuple(out)


def load_binarized_mnist(path=None, *, dtype=np.float64):
    """Salakhutdinov and Murray's stochastically binarised MNIST (no labels; image order is not MNIST's).

    Parameters
    ----------
    path : str or Path, optional
        ``binarized_mnist.npz`` (or a file of the same layout, e.g.
        ``binarized_mnist_resampled.npz``) or its folder; default ``$KD_REF_DATA``.
    dtype : numpy dtype
        float64 by default (376 MB for the training set); ``np.uint8`` keeps the stored bytes.

    Returns
    -------
    x_train : ndarray of shape (60000, 784)
    x_test : ndarray of shape (10000, 784)
        0/1 values, row-major pixels.
    """
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "biuf":
        raise TypeError(f"dtype: expected a real numeric dtype such as np.float64 or np.uint8, received {dtype!r}")
    p = find_file(BINARIZED_FILE, path)
    arrays = _read_npz(p, LAYOUTS[BINARIZED_FILE])
    for name in ("x_train", "x_test"):
        if arrays[name].max() > 1:
            raise ValueError(f"{p.name}: expected {name} with values 0 or 1, received maximum {arrays[name].max()}")
    return arrays["x_train"].astype(dtype, copy=False), arrays["x_test"].astype(dtype, copy=False)


def load_rbm(path=None):
    """Arrays of the CD25(500) RBM: dict with W (784, 500), b_visible (784,), b_hidden (500,), float64.

    ``kd_ref.rbm.RBM.from_file(path)`` builds the model from them.
    """
    p = find_file(RBM_FILE, path)
    arrays = _read_npz(p, LAYOUTS[RBM_FILE])
    for name, a in arrays.items():
        as_float_array(a, f"{p.name}: {name}")   # refuses NaN and infinities, with their count
    return arrays


def array_sha256(a):
    """sha256 of an array's raw bytes (C order), the checksum the data README lists."""
    if not isinstance(a, np.ndarray) or a.dtype.hasobject:
        raise TypeError(f"a: expected an ndarray of plain (non-object) values, received {type(a).__name__}"
                        f"{' of dtype object' if isinstance(a, np.ndarray) else ''}")
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def verify_checksums(filename, path=None):
    """Compare every array of a reference file with the README's sha256.

    Returns
    -------
    dict name -> bool
    """
    if filename not in ARRAY_SHA256:
        raise ValueError(f"filename: expected one of {sorted(ARRAY_SHA256)}, received {filename!r}")
    arrays = _read_npz(find_file(filename, path), LAYOUTS[filename])
    return {name: array_sha256(arrays[name]) == digest for name, digest in ARRAY_SHA256[filename].items()}


# ---------------------------------------------------------------------------- binarising
def binarize(x, threshold=0.5):
    """Deterministic binarisation: 1 where x > threshold, else 0 (float64, same shape).

    For MNIST grey levels in [0, 1] (k / 255, never exactly 0.5) this is rounding,
    the binarisation section 2.2.3 used to train its NADE.
    """
    x = as_float_array(x, "x")
    threshold = check_in_range(threshold, "threshold", -np.inf, np.inf)
    return (x > threshold).astype(np.float64)


def downsample(x, side):
    """Square images resized to side x side by area averaging (each output pixel is the mean of the input
    area it covers, partial pixels weighted by their overlap), e.g. MNIST's 28 x 28 to LeCun's 16 x 16.

    x : array of shape (N, S^2) with S x S images in rows (row-major); side <= S.
    Returns float64 of shape (N, side^2); a constant image stays constant and the mean grey level is kept.
    """
    x = as_float_array(x, "x", ndim=2)
    big = int(round(np.sqrt(x.shape[1])))
    if big * big != x.shape[1]:
        raise ValueError(f"x: expected rows holding square images (S^2 columns), received {x.shape[1]} columns")
    side = check_positive_int(side, "side")
    if side > big:
        raise ValueError(f"side: expected at most the images' side {big}, received {side}")
    edges = np.arange(side + 1) * (big / side)                   # output pixel i covers [edges[i], edges[i+1])
    lo, hi = np.arange(big), np.arange(big) + 1.0
    overlap = np.clip(np.minimum(edges[1:, None], hi) - np.maximum(edges[:-1, None], lo), 0.0, None)
    M = overlap / (big / side)                                   # (side, big), rows sum to 1
    imgs = x.reshape(-1, big, big)
    return np.einsum("ij,njk,lk->nil", M, imgs, M).reshape(x.shape[0], side * side)


def binarize_stochastic(x, rng):
    """Stochastic binarisation: each entry is 1 with probability x (Salakhutdinov and Murray's recipe).

    Parameters
    ----------
    x : array_like with values in [0, 1]
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of float64 0/1, same shape as x
    """
    x = as_float_array(x, "x")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"x: expected probabilities in [0, 1], received values in [{x.min()}, {x.max()}]")
    return (check_generator(rng).random(x.shape) < x).astype(np.float64)


# ------------------------------------------------------------------------ built-in data
def bars_and_stripes(side=4):
    """Every side x side bars-and-stripes image: each row constant, or each column constant.

    Returns
    -------
    ndarray of shape (2^(side+1) - 2, side^2), float64 0/1, row-major pixels
        The 2^side row patterns (horizontal bars) then the column patterns
        (vertical stripes) other than all-off and all-on, which are already listed.
    """
    side = check_positive_int(side, "side")
    if side > 12:
        raise ValueError(f"side: expected at most 12 (2^(side+1) images), received {side}")
    codes = ((np.arange(2 ** side)[:, None] >> np.arange(side)) & 1).astype(np.float64)   # (2^s, s)
    bars = np.repeat(codes[:, :, None], side, axis=2)                                      # rows constant
    stripes = np.repeat(codes[:, None, :], side, axis=1)                                   # columns constant
    keep = (codes.sum(axis=1) > 0) & (codes.sum(axis=1) < side)
    return np.concatenate([bars, stripes[keep]]).reshape(-1, side * side)


def noisy_prototypes(n, rng, *, dim=16, n_prototypes=4, flip_prob=0.05, prototypes=None):
    """A tiny binary dataset: random prototypes with independent bit flips.

    Each example picks a prototype uniformly at random and flips each of its bits
    with probability ``flip_prob``. The exact log-likelihood is
    :func:`noisy_prototypes_log_prob`, so a density model's fit can be compared
    with the truth.

    Parameters
    ----------
    n : int
    rng : numpy.random.Generator
    dim, n_prototypes : int
    flip_prob : float in [0, 0.5]
    prototypes : array_like of shape (n_prototypes, dim), optional
        Fixed 0/1 prototypes (default: drawn uniformly by ``rng``).

    Returns
    -------
    x : ndarray of shape (n, dim), float64 0/1
    labels : ndarray of shape (n,), int64 (prototype index)
    prototypes : ndarray of shape (n_prototypes, dim), float64 0/1
    """
    n = check_positive_int(n, "n")
    check_generator(rng)
    flip_prob = check_in_range(flip_prob, "flip_prob", 0.0, 0.5)
    if prototypes is None:
        dim = check_positive_int(dim, "dim")
        n_prototypes = check_positive_int(n_prototypes, "n_prototypes")
        prototypes = (rng.random((n_prototypes, dim)) < 0.5).astype(np.float64)
    else:
        prototypes = as_binary_array(prototypes, "prototypes", ndim=2)
        if prototypes.shape[0] < 1:
            raise ValueError(f"prototypes: expected at least one row, received shape {prototypes.shape}")
    labels = rng.integers(0, prototypes.shape[0], size=n)
    flips = rng.random((n, prototypes.shape[1])) < flip_prob
    return np.abs(prototypes[labels] - flips), labels.astype(np.int64), prototypes


def noisy_prototypes_log_prob(x, prototypes, flip_prob):
    """Exact log p(x) under :func:`noisy_prototypes`' model (uniform mixture of bit-flip noise), shape (N,).

    ``x`` (N, D) and ``prototypes`` (K >= 1, D) are binary; ``flip_prob`` is in (0, 0.5].
    """
    prototypes = as_binary_array(prototypes, "prototypes", ndim=2)
    if prototypes.shape[0] < 1:
        raise ValueError(f"prototypes: expected at least one row, received shape {prototypes.shape}")
    x = as_binary_array(x, "x", shape=(None, prototypes.shape[1]))
    flip_prob = check_in_range(flip_prob, "flip_prob", 0.0, 0.5, low_open=True)
    dist = np.abs(x[:, None, :] - prototypes[None]).sum(axis=2)            # Hamming distances (N, K)
    d = prototypes.shape[1]
    log_terms = dist * np.log(flip_prob) + (d - dist) * np.log1p(-flip_prob)
    return np.logaddexp.reduce(log_terms, axis=1) - np.log(prototypes.shape[0])


# seven-segment layout in unit image coordinates (x right, y down)
_L, _R, _T, _M, _B = 0.32, 0.68, 0.18, 0.5, 0.82
_SEGMENTS = np.array([
    [[_L, _T], [_R, _T]],   # a: top
    [[_R, _T], [_R, _M]],   # b: upper right
    [[_R, _M], [_R, _B]],   # c: lower right
    [[_L, _B], [_R, _B]],   # d: bottom
    [[_L, _M], [_L, _B]],   # e: lower left
    [[_L, _T], [_L, _M]],   # f: upper left
    [[_L, _M], [_R, _M]],   # g: middle
])
_DIGIT_SEGMENTS = ["abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg"]
_SEGMENT_MASK = np.array([[s in segs for s in "abcdefg"] for segs in _DIGIT_SEGMENTS])


def _render_digits(labels, rng, side):
    """Seven-segment digits with random slant, scale, shift, stroke width and segment jitter, in [0, 1]."""
    n = labels.size
    seg = np.broadcast_to(_SEGMENTS, (n,) + _SEGMENTS.shape) - 0.5                      # (n, 7, 2, 2)
    seg = seg + rng.normal(0.0, 0.025, size=seg.shape)                                   # hand-drawn wobble
    slant = rng.uniform(-0.25, 0.25, size=(n, 1, 1))
    scale = rng.uniform(0.8, 1.15, size=(n, 1, 1, 1))
    seg = seg.copy()
    seg[..., 0] += slant * seg[..., 1]
    seg = seg * scale + 0.5 + rng.uniform(-0.08, 0.08, size=(n, 1, 1, 2))
    width = rng.uniform(0.035, 0.065, size=(n, 1))
    centres = (np.arange(side) + 0.5) / side
    py, px = np.meshgrid(centres, centres, indexing="ij")
    pix = np.stack([px.ravel(), py.ravel()], axis=1)                                   # (S^2, 2) as (x, y)
    p0, p1 = seg[:, :, 0, :], seg[:, :, 1, :]                                           # (n, 7, 2)
    d = p1 - p0
    rel = pix[None, :, None, :] - p0[:, None, :, :]                                    # (n, S^2, 7, 2)
    t = np.clip(np.sum(rel * d[:, None], axis=3) / np.maximum(np.sum(d * d, axis=2), 1e-12)[:, None], 0, 1)
    dist = np.linalg.norm(rel - t[..., None] * d[:, None], axis=3)                     # (n, S^2, 7)
    dist = np.where(_SEGMENT_MASK[labels][:, None, :], dist, np.inf).min(axis=2)       # (n, S^2)
    img = np.clip((1.5 * width - dist) / width, 0.0, 1.0)
    img *= rng.uniform(0.8, 1.0, size=(n, 1))                                          # ink intensity
    return img


def synthetic_digits(n_train, n_test, rng, *, side=28):
    """A small digits-like classification set that needs no download (quick chapter-2 demos).

    Ten classes drawn as seven-segment digits 0-9 with random slant, size, position,
    stroke width and wobble, rendered as grey levels in [0, 1] on a side x side
    canvas (row-major, upright, like MNIST rows). Much easier than MNIST, but with
    the same shapes, so every MNIST pipeline runs on it unchanged.

    Parameters
    ----------
    n_train, n_test : int
    rng : numpy.random.Generator
    side : int

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        x_* float64 of shape (n, side^2) in [0, 1]; y_* int64 labels 0..9.
    """
    n_train = check_positive_int(n_train, "n_train")
    n_test = check_positive_int(n_test, "n_test")
    side = check_positive_int(side, "side", minimum=8)
    check_generator(rng)
    out = []
    for n in (n_train, n_test):
        y = rng.integers(0, 10, size=n).astype(np.int64)
        x = np.empty((n, side * side))
        chunk = max(1, 200_000 // (side * side))
        for s in range(0, n, chunk):
            x[s:s + chunk] = _render_digits(y[s:s + chunk], rng, side)
        out.append((x, y))
    return tuple(out)


def few_shot_indices(labels, shots, rng, n_classes=None):
    """Exactly ``shots`` distinct training indices of every class, drawn without replacement (SPEC_seeds S2).

    Parameters
    ----------
    labels : array_like of int, shape (N,)
        Class labels 0..n_classes-1 (default n_classes = max label + 1).
    shots : int >= 1
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of shape (n_classes * shots,)
        Class 0's indices first (in the order drawn), then class 1's, ...

    Raises ValueError naming the class when it holds fewer than ``shots`` examples.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or labels.size == 0:
        raise ValueError(f"labels: expected a non-empty 1-d integer array, received {labels.dtype} of shape "
                         f"{labels.shape}")
    if labels.min() < 0:
        raise ValueError(f"labels: expected labels >= 0, received {labels.min()}")
    n_classes = int(labels.max()) + 1 if n_classes is None else check_positive_int(n_classes, "n_classes")
    if labels.max() >= n_classes:
        raise ValueError(f"labels: expected labels in 0..{n_classes - 1}, received {labels.max()}")
    shots = check_positive_int(shots, "shots")
    check_generator(rng)
    counts = np.bincount(labels, minlength=n_classes)
    if counts.min() < shots:
        c = int(np.argmin(counts))
        raise ValueError(f"shots: expected at most {counts[c]} (the examples of class {c}), received {shots}")
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), shots, replace=False) for c in range(n_classes)])


# ----------------------------------------------------------------------------- download
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
            _read_npz(p, LAYOUTS[fname])
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
