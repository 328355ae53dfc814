"""Reference data loaders, binarisation, few-shot subsets, and GPED's data manipulations (occlusion,
subsampling, offline out-of-distribution sets).

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

The small built-in datasets that need no files live in :mod:`kd_ref.toydata`;
fetching and converting the reference files (``kd-ref data``) in :mod:`kd_ref.download`.
"""
import hashlib
import os
from pathlib import Path

import numpy as np

from . import npzfile
from .toydata import seven_segment_digits
from ._validation import (as_float_array, check_bool, check_dataset, check_generator, check_in_range, check_path,
                          check_positive_int)

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
HOW_TO_GET = (
    f"Set the environment variable {ENV_VAR} to the folder that holds the reference data "
    f"(mnist.npz, binarized_mnist.npz, rbm_cd25_500.npz), or pass its path explicitly. "
    f"`kd-ref data download --dest DIR` writes DIR/mnist.npz from the MNIST originals and DIR/binarized_mnist.npz "
    f"from the thesis code repository (then set {ENV_VAR}=DIR); rbm_cd25_500.npz must be exported from that "
    f"repository's MATLAB file with MATLAB and converted by `kd-ref data import-rbm` (see its --help).")

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


def read_reference(p, layout):
    """Every array of the .npz file ``p`` (a Path), after checking names, shapes and dtypes against ``layout``
    (array name -> (shape, dtype), as in ``LAYOUTS``); the loaders and ``kd-ref data info`` use it."""
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
    arrays = read_reference(p, LAYOUTS[MNIST_FILE])
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
    arrays = read_reference(p, LAYOUTS[BINARIZED_FILE])
    for name in ("x_train", "x_test"):
        if arrays[name].max() > 1:
            raise ValueError(f"{p.name}: expected {name} with values 0 or 1, received maximum {arrays[name].max()}")
    return arrays["x_train"].astype(dtype, copy=False), arrays["x_test"].astype(dtype, copy=False)


def load_rbm(path=None):
    """Arrays of the CD25(500) RBM: dict with W (784, 500), b_visible (784,), b_hidden (500,), float64.

    ``kd_ref.rbm.RBM.from_file(path)`` builds the model from them.
    """
    p = find_file(RBM_FILE, path)
    arrays = read_reference(p, LAYOUTS[RBM_FILE])
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
    arrays = read_reference(find_file(filename, path), LAYOUTS[filename])
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


# ------------------------------------------------ uncertainty manipulation (SPEC_seeds S3.15, 0.4)
MNIST_SIDE = 28
# GPED's occlusion grid (S3.15): kd_ref's choice of the six sides lost with GPED's Appendix A.1
OCCLUSION_SIDES = (0, 7, 10, 15, 20, 26)
# MNIST's pixel mean and standard deviation, the moments of the gaussian_noise OOD set (0.4)
MNIST_MEAN, MNIST_STD = 0.13, 0.31
OOD_SETS = ("synthetic_digits", "hflip", "rot90", "invert", "pixel_permute", "gaussian_noise", "uniform_noise",
            "heldout:5-9")


def _square_images(x, name):
    """``x`` as float64 rows holding square images, and the images' side S (S^2 columns)."""
    x = as_float_array(x, name, ndim=2)
    side = int(round(np.sqrt(x.shape[1])))
    if side * side != x.shape[1] or x.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one row holding a square image (S^2 columns), received shape "
                         f"{x.shape}")
    return x, side


def _check_side(side, image_side):
    if isinstance(side, (bool, np.bool_)) or not isinstance(side, (int, np.integer)):
        raise TypeError(f"side: expected an integer mask side in 0..{image_side - 1}, received {side!r}")
    if not 0 <= side <= image_side - 1:
        raise ValueError(f"side: expected a mask side in 0..{image_side - 1} (the square's corner lies in "
                         f"0..{image_side - 1} - side, S3.15), received {side}")
    return int(side)


def masking_rate(side, image_side=MNIST_SIDE):
    """Share of the pixels one occluding square of side ``side`` covers, side^2 / image_side^2 (S3.15).

    >>> round(masking_rate(15), 4), round(masking_rate(26), 4)    # GPED's "29%" and its largest rate
    (0.287, 0.8622)
    """
    image_side = check_positive_int(image_side, "image_side")
    side = _check_side(side, image_side)
    return side * side / image_side ** 2


def occlude(x, side, rng):
    """Every image with one square of side ``side`` set to 0 at a uniformly drawn position (S3.15).

    The square's top-left corner (row, column) is drawn for each image independently and
    uniformly from {0, ..., S - 1 - side}^2, the range of GPED's ``randint(0, 28 - s)``
    (exclusive upper end): its last pixel row and column are never covered, a slip of the
    released code that kd_ref keeps for comparability. So ``side`` runs over 0..S - 1;
    ``side = 0`` changes nothing but still draws the corners (the generator advances as for
    any other side). The teacher set, D' and the test set are each occluded by their own call.

    Parameters
    ----------
    x : array_like of shape (N, S^2)
        Square S x S images in rows (row-major), e.g. MNIST's 784 columns.
    side : int in 0..S-1
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of shape (N, S^2), float64: a copy of x with side^2 pixels per image set to 0.
    """
    x, image_side = _square_images(x, "x")
    side = _check_side(side, image_side)
    check_generator(rng)
    corner = rng.integers(0, image_side - side, size=(x.shape[0], 2))          # (N, 2): row, column
    pixels = np.arange(image_side)
    rows = (pixels >= corner[:, :1]) & (pixels < corner[:, :1] + side)         # (N, S)
    cols = (pixels >= corner[:, 1:]) & (pixels < corner[:, 1:] + side)         # (N, S)
    covered = (rows[:, :, None] & cols[:, None, :]).reshape(x.shape)
    return np.where(covered, 0.0, x)


def subsample(x, y, n, rng):
    """``n`` distinct examples drawn uniformly without replacement (GPED's subsampled teacher sets, S3.15).

    The rows are the first ``n`` of one uniform permutation, so two calls from generators in
    the same state give nested subsets: the smaller ``n`` is a prefix of the larger one's.

    Parameters
    ----------
    x : array_like of shape (N, D)
    y : array_like of shape (N,)
    n : int in 1..N
    rng : numpy.random.Generator

    Returns
    -------
    x_sub : ndarray of shape (n, D), y_sub : ndarray of shape (n,)
        Copies, in the order drawn (x keeps its dtype).
    """
    x = check_dataset(x, "x")
    y = np.asarray(y)
    if y.shape != (x.shape[0],):
        raise ValueError(f"y: expected shape ({x.shape[0]},) (one label per row of x), received shape {y.shape}")
    n = check_positive_int(n, "n")
    if n > x.shape[0]:
        raise ValueError(f"n: expected at most the {x.shape[0]} examples of x, received {n}")
    check_generator(rng)
    idx = rng.permutation(x.shape[0])[:n]
    return x[idx], y[idx]


def heldout_classes(name):
    """The classes an OOD name ``heldout:a-b`` holds out, as an int64 array a..b (e.g. 5..9)."""
    if not isinstance(name, str) or not name.startswith("heldout:"):
        raise ValueError(f"name: expected a class split such as 'heldout:5-9', received {name!r}")
    lo, sep, hi = name[len("heldout:"):].partition("-")
    if not (sep and lo.isdigit() and hi.isdigit() and int(lo) <= int(hi)):
        raise ValueError(f"name: expected 'heldout:a-b' with integers a <= b, such as 'heldout:5-9', received "
                         f"{name!r}")
    return np.arange(int(lo), int(hi) + 1, dtype=np.int64)


def ood_set(name, x_test, rng, labels=None):
    """An offline out-of-distribution set of the test images' shape, values in [0, 1] (SPEC_seeds 0.4).

    They stand in for GPED's KMNIST and notMNIST, which cannot be fetched: AUROCs on them
    are new measurements, not comparable with GPED's figures.

    - ``synthetic_digits``: N seven-segment digits (``toydata.seven_segment_digits``), a shift
      of style, the nearest to KMNIST/notMNIST. In-distribution for a teacher that was itself
      trained on synthetic digits (quick runs without MNIST): such runs should not report it.
    - ``hflip``: each image mirrored left to right.
    - ``rot90``: each image rotated by 90 degrees (counter-clockwise).
    - ``invert``: 1 - x.
    - ``pixel_permute``: one permutation of the pixels, drawn from ``rng``, applied to every image.
    - ``gaussian_noise``: N images of independent N(0.13, 0.31^2) pixels (MNIST's mean and
      standard deviation) clipped to [0, 1].
    - ``uniform_noise``: N images of independent U(0, 1) pixels.
    - ``heldout:a-b``: the test images whose label is in a..b (``heldout:5-9``: the teacher is
      trained on the other classes only, see :func:`heldout_classes`); needs ``labels``.

    Parameters
    ----------
    name : str
        One of ``OOD_SETS``, or any ``heldout:a-b``.
    x_test : array_like of shape (N, S^2), values in [0, 1]
        The in-distribution test images (square, row-major).
    rng : numpy.random.Generator
        Used by the drawn sets (synthetic digits, permutation, noise); the others ignore it.
    labels : array_like of int, shape (N,), only for ``heldout:a-b``

    Returns
    -------
    ndarray of shape (N, S^2) float64 (fewer rows for ``heldout:a-b``)
    """
    if not isinstance(name, str) or (name not in OOD_SETS and not name.startswith("heldout:")):
        raise ValueError(f"name: expected one of {list(OOD_SETS)} (or another 'heldout:a-b'), received {name!r}")
    held = heldout_classes(name) if name.startswith("heldout:") else None
    x, side = _square_images(x_test, "x_test")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"x_test: expected grey levels in [0, 1], received values in [{x.min()}, {x.max()}]")
    check_generator(rng)
    if held is not None:
        if labels is None:
            raise ValueError(f"labels: expected the test labels, shape ({x.shape[0]},), for {name!r}, received None")
        labels = np.asarray(labels)
        if labels.shape != (x.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels: expected an integer array of shape ({x.shape[0]},), received {labels.dtype} "
                             f"of shape {labels.shape}")
        out = x[np.isin(labels, held)]
        if out.shape[0] == 0:
            raise ValueError(f"labels: expected test images of the classes {held[0]}..{held[-1]} held out by "
                             f"{name!r}, received none")
        return out
    if labels is not None:
        raise ValueError(f"labels: expected None for {name!r} (only 'heldout:a-b' uses labels), received an array")
    n = x.shape[0]
    images = x.reshape(n, side, side)
    if name == "synthetic_digits":
        return seven_segment_digits(n, rng, side=side)[0]
    if name == "hflip":
        return images[:, :, ::-1].reshape(n, -1).copy()
    if name == "rot90":
        return np.rot90(images, axes=(1, 2)).reshape(n, -1).copy()
    if name == "invert":
        return 1.0 - x
    if name == "pixel_permute":
        return x[:, rng.permutation(side * side)]
    if name == "gaussian_noise":
        return np.clip(rng.normal(MNIST_MEAN, MNIST_STD, size=x.shape), 0.0, 1.0)
    return rng.random(x.shape)                                              # uniform_noise
