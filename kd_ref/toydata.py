"""Small built-in datasets that need no files: bars and stripes, noisy binary prototypes, synthetic digits.

They stand in for the reference data in quick modes and tests: each is exact enough to check
against (bars and stripes can be enumerated, the prototypes' log-probability is known in closed
form) and drawn only through an explicit ``numpy.random.Generator``.
"""
import numpy as np

from ._validation import as_binary_array, check_generator, check_in_range, check_positive_int

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
    return tuple(seven_segment_digits(n, rng, side=side) for n in (n_train, n_test))


def seven_segment_digits(n, rng, *, side=28):
    """``n`` seven-segment digits with uniform labels 0-9: one set of :func:`synthetic_digits`.

    Returns
    -------
    x : ndarray of shape (n, side^2), float64 in [0, 1]
    y : ndarray of shape (n,), int64 labels 0..9
    """
    n = check_positive_int(n, "n")
    side = check_positive_int(side, "side", minimum=8)
    check_generator(rng)
    y = rng.integers(0, 10, size=n).astype(np.int64)
    x = np.empty((n, side * side))
    chunk = max(1, 200_000 // (side * side))
    for s in range(0, n, chunk):
        x[s:s + chunk] = _render_digits(y[s:s + chunk], rng, side)
    return x, y
