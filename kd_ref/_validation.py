"""Argument checks shared by every module.

Each check raises ``ValueError`` (or ``TypeError``) whose message names the
argument, what was expected and what was received, *before* any state is
touched. Library code calls these at the top of public methods.

Arrays of numbers must be real: a complex array is refused (NumPy's own
conversion to float64 would keep the real part and drop the imaginary one with
only a warning), and so are strings, dates and ``None`` entries, which NumPy
would otherwise parse or turn into NaN.
"""
import numbers
import os

import numpy as np

_REAL_KINDS = "biuf"      # bool, signed and unsigned integers, floats


def _complex_error(name, dtype):
    return TypeError(f"{name}: expected real numbers, received a complex array (dtype {dtype}); pass the .real "
                     f"part explicitly if the imaginary part is meant to be dropped")


def _real_array(x, name):
    """``x`` as an ndarray of real numbers (not converted, not copied when already one)."""
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as err:   # ragged nested sequences
        raise TypeError(f"{name}: expected an array of real numbers, received {type(x).__name__} ({err})") from None
    kind = arr.dtype.kind
    if kind == "c":
        raise _complex_error(name, arr.dtype)
    if kind == "O":
        for v in arr.flat:
            if v is None or isinstance(v, (complex, np.complexfloating)) or not isinstance(v, numbers.Real) \
                    and not hasattr(v, "__float__"):
                raise TypeError(f"{name}: expected an array of real numbers, received an entry {v!r} "
                                f"({type(v).__name__})")
    elif kind not in _REAL_KINDS:
        raise TypeError(f"{name}: expected an array of real numbers, received dtype {arr.dtype}")
    return arr


def as_float_array(x, name, ndim=None, shape=None, finite=True):
    """Return ``x`` as a float64 ndarray after checking its rank, shape and values.

    Parameters
    ----------
    x : array_like
        Real numbers (bool, integer or float); complex values are refused.
    name : str
        Argument name used in error messages.
    ndim : int, optional
        Required number of dimensions.
    shape : tuple, optional
        Required shape; ``None`` entries match any length.
    finite : bool
        Refuse NaN and infinite entries.
    """
    arr = _real_array(x, name)
    try:
        arr = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError) as err:   # an object entry whose __float__ fails
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
    try:
        arr = np.asarray(order)
    except (TypeError, ValueError) as err:   # ragged nested sequences
        raise ValueError(f"{name}: expected an integer array of shape ({n},), received {type(order).__name__} "
                         f"({err})") from None
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected an integer array of shape ({n},), received {arr.dtype} of shape {arr.shape}")
    if not np.array_equal(np.sort(arr), np.arange(n)):
        raise ValueError(f"{name}: expected a permutation of 0..{n - 1}, received repeated or out-of-range entries")
    return arr.astype(np.intp)


def check_dataset(data, name, dim=None):
    """Check a (M, D) array of real numbers with M >= 1 without converting it (a uint8 dataset stays uint8).

    ``dim``, when given, is the required number of columns D.
    """
    arr = np.asarray(data)
    if arr.dtype.kind == "c":
        raise _complex_error(name, arr.dtype)
    if arr.dtype.kind not in _REAL_KINDS:
        raise TypeError(f"{name}: expected a numeric array, received dtype {arr.dtype}")
    if dim is None and (arr.ndim != 2 or arr.shape[0] < 1):
        raise ValueError(f"{name}: expected a 2-d array with at least one row, received shape {arr.shape}")
    if dim is not None and (arr.ndim != 2 or arr.shape[1] != dim or arr.shape[0] < 1):
        raise ValueError(f"{name}: expected shape (M, {dim}) with M >= 1, received shape {arr.shape}")
    return arr


def check_binary_dataset(data, name, dim):
    """Check a (M, dim) array of zeros and ones without converting it (a uint8 dataset stays uint8)."""
    arr = check_dataset(data, name, dim)
    ok = (arr == 0) | (arr == 1)
    if not np.all(ok):
        raise ValueError(f"{name}: expected binary values (0 or 1), received {int(ok.size - ok.sum())} other "
                         f"entries, e.g. {arr[~ok].flat[0].item()!r}")
    return arr


def check_index(value, name, n):
    """Check that ``value`` is an integer in 0..n-1 (not a bool, not a float such as 1.0) and return it as ``int``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer index in 0..{n - 1}, received {value!r}")
    if not 0 <= value < n:
        raise ValueError(f"{name}: expected an integer index in 0..{n - 1}, received {value}")
    return int(value)


def check_indices(values, name, n):
    """Check a non-empty sequence of integer indices into 0..n-1 (no bools, no floats) and return a list of ``int``."""
    try:
        flat = not isinstance(values, (str, bytes)) and np.ndim(values) == 1
    except ValueError:                        # ragged nested sequences
        flat = False
    if not flat:
        raise TypeError(f"{name}: expected a sequence of integer indices in 0..{n - 1}, received {values!r}")
    out = []
    for k, v in enumerate(values):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name}: expected indices in 0..{n - 1}, received {v!r} at position {k} "
                            f"({type(v).__name__}, not an integer)")
        if not 0 <= v < n:
            raise ValueError(f"{name}: expected indices in 0..{n - 1}, received {v} at position {k}")
        out.append(int(v))
    if not out:
        raise ValueError(f"{name}: expected at least one index in 0..{n - 1}, received an empty sequence")
    return out


def check_labels(labels, name, n_classes, n=None):
    """Check integer class labels in 0..n_classes-1 (shape (n,) when ``n`` is given); return them as an int array."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n) or not np.issubdtype(arr.dtype, np.integer):
        want = f"({n},)" if n is not None else "(N,)"
        raise ValueError(f"{name}: expected an integer array of shape {want}, received {arr.dtype} of shape "
                         f"{arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(f"{name}: expected labels in 0..{n_classes - 1}, received labels in "
                         f"{arr.min()}..{arr.max()}")
    return arr.astype(np.intp)


def check_bool(value, name):
    """Check that ``value`` is a bool (numpy's included) and return it as ``bool``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, received {value!r}")
    return bool(value)


def check_float_dtype(dtype, name="dtype"):
    """``dtype`` as numpy.float64 or numpy.float32 (the two precisions models compute in); anything else is refused."""
    try:
        dt = None if dtype is None else np.dtype(dtype)      # np.dtype(None) would be float64
    except TypeError:
        dt = None
    if dt is None or dt.name not in ("float64", "float32"):
        raise TypeError(f"{name}: expected numpy.float64 or numpy.float32, received {dtype!r}")
    return dt


def check_callable(value, name, what="a callable", optional=False):
    """Check that ``value`` is callable (or None when ``optional``); ``what`` describes the expected signature."""
    if value is None and optional:
        return None
    if not callable(value):
        raise TypeError(f"{name}: expected {what}{' or None' if optional else ''}, received {value!r}")
    return value


def check_optimizer(optimizer, name="optimizer"):
    """Check for an optimiser with the methods of ``kd_ref.optim.SGD`` and ``Adadelta`` (step, state, load_state)."""
    missing = [m for m in ("step", "state", "load_state") if not callable(getattr(optimizer, m, None))]
    if missing:
        raise TypeError(f"{name}: expected an optimiser such as kd_ref.optim.SGD(0.1) or Adadelta() (methods step, "
                        f"state, load_state), received {type(optimizer).__name__} without {', '.join(missing)}")
    return optimizer


def check_path(value, name, optional=False):
    """Check for a file path (str or os.PathLike; None when ``optional``) and return it as ``str``."""
    if value is None and optional:
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise TypeError(f"{name}: expected a file path (str or os.PathLike){' or None' if optional else ''}, "
                        f"received {value!r}")
    return os.fspath(value)


def check_training_options(*, optimizer=None, monitor=None, monitor_every=None, callback=None, progress=True,
                           checkpoint=None, label="train"):
    """Check the options a model's ``fit`` passes on to ``kd_ref.optim.train``, before the fit changes anything.

    A fit that draws a data permutation or sets biases before calling ``train`` calls
    this first, so a wrong option fails with nothing drawn and the model untouched.
    ``optimizer``, ``monitor``, ``monitor_every``, ``callback`` and ``checkpoint`` may be
    None. Returns the checked values as a dict (``monitor_every`` as int, ``progress`` as
    bool, ``checkpoint`` as str).
    """
    if optimizer is not None:
        check_optimizer(optimizer)
    if not isinstance(label, str):
        raise TypeError(f"label: expected a str, received {label!r}")
    return {"optimizer": optimizer,
            "monitor": check_callable(monitor, "monitor", "a callable () -> float or dict of floats", optional=True),
            "monitor_every": None if monitor_every is None else check_positive_int(monitor_every, "monitor_every"),
            "callback": check_callable(callback, "callback", "a callable (step, loss) -> bool", optional=True),
            "progress": check_bool(progress, "progress"),
            "checkpoint": check_path(checkpoint, "checkpoint", optional=True),
            "label": label}
