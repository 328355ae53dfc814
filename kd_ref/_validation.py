"""Argument checks shared by every module.

Each check raises ``ValueError`` (or ``TypeError``) whose message names the
argument, what was expected and what was received, *before* any state is
touched. Library code calls these at the top of public methods.
"""
import numbers

import numpy as np


def as_float_array(x, name, ndim=None, shape=None, finite=True):
    """Return ``x`` as a float64 ndarray after checking its rank, shape and values.

    Parameters
    ----------
    x : array_like
    name : str
        Argument name used in error messages.
    ndim : int, optional
        Required number of dimensions.
    shape : tuple, optional
        Required shape; ``None`` entries match any length.
    finite : bool
        Refuse NaN and infinite entries.
    """
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected an array of real numbers, received {type(x).__name__} ({err})") from None
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, received shape {arr.shape}")
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
            raise ValueError(f"{name}: expected shape {want}, received shape {arr.shape}")
    if finite and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name}: expected finite values, received {bad} NaN or infinite entries")
    return arr


def as_binary_array(x, name, ndim=None, shape=None):
    """Return ``x`` as float64 after checking that every entry is exactly 0 or 1."""
    arr = as_float_array(x, name, ndim=ndim, shape=shape)
    if not np.all((arr == 0) | (arr == 1)):
        bad = arr[(arr != 0) & (arr != 1)]
        raise ValueError(f"{name}: expected binary values (0 or 1), received {bad.size} other entries, "
                         f"e.g. {bad.flat[0].item()!r}")
    return arr


def as_batch(x, name, dim):
    """Return ``x`` as a float64 batch of shape (N, dim); a single vector becomes (1, dim)."""
    arr = as_float_array(x, name)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{name}: expected shape (N, {dim}), received shape {np.shape(x)}")
    return arr


def as_binary_batch(x, name, dim, continuous=False):
    """:func:`as_batch` whose entries must be exactly 0 or 1, unless ``continuous`` (any finite reals).

    For models of binary data whose formulas also make sense for real inputs (the
    relaxation differentiated w.r.t. x); the message says how to ask for it.
    """
    arr = as_batch(x, name, dim)
    if not continuous and not np.all((arr == 0) | (arr == 1)):
        bad = arr[(arr != 0) & (arr != 1)]
        raise ValueError(f"{name}: expected binary values (0 or 1), received {bad.size} other entries, "
                         f"e.g. {bad.flat[0].item()!r} (pass continuous=True to treat x as real-valued)")
    return arr


def check_positive_int(value, name, minimum=1):
    """Check that ``value`` is an integer >= ``minimum`` and return it as ``int``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer >= {minimum}, received {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, received {value}")
    return int(value)


def check_in_range(value, name, low, high, low_open=False, high_open=False):
    """Check ``low <= value <= high`` (with optional open ends) and return ``float(value)``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, received {value!r}")
    value = float(value)
    lo_ok = value > low if low_open else value >= low
    hi_ok = value < high if high_open else value <= high
    if not (np.isfinite(value) and lo_ok and hi_ok):
        interval = ("(" if low_open else "[") + f"{low}, {high}" + (")" if high_open else "]")
        raise ValueError(f"{name}: expected a value in {interval}, received {value}")
    return value


def check_finite_real(value, name):
    """Check that ``value`` is a finite real number (not NaN, not +-inf) and return ``float(value)``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a finite real number, received {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{name}: expected a finite real number, received {float(value)}")
    return float(value)


def check_generator(rng, name="rng"):
    """Require an explicit ``numpy.random.Generator`` (no hidden global randomness)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{name}: expected a numpy.random.Generator (e.g. numpy.random.default_rng(0)), "
            f"received {type(rng).__name__}"
        )
    return rng


def check_permutation(order, name, n):
    """Check that ``order`` is a permutation of ``range(n)`` and return it as an int array."""
    arr = np.asarray(order)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected an integer array of shape ({n},), received {arr.dtype} of shape {arr.shape}")
    if not np.array_equal(np.sort(arr), np.arange(n)):
        raise ValueError(f"{name}: expected a permutation of 0..{n - 1}, received repeated or out-of-range entries")
    return arr.astype(np.intp)


def check_binary_dataset(data, name, dim):
    """Check a (M, dim) array of zeros and ones without converting it (a uint8 dataset stays uint8)."""
    arr = np.asarray(data)
    if arr.ndim != 2 or arr.shape[1] != dim or arr.shape[0] < 1:
        raise ValueError(f"{name}: expected shape (M, {dim}) with M >= 1, received shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{name}: expected a numeric array, received dtype {arr.dtype}")
    ok = (arr == 0) | (arr == 1)
    if not np.all(ok):
        raise ValueError(f"{name}: expected binary values (0 or 1), received {int(ok.size - ok.sum())} other "
                         f"entries, e.g. {arr[~ok].flat[0].item()!r}")
    return arr
