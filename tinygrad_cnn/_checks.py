"""Argument checks shared by the whole package: one wording for one kind of mistake.

Each check names the argument, shows the value it got and says what was
expected.  One rule for the kind of error, as PyTorch's: a value of the wrong
type raises ``TypeError``; a value of the right type that is NaN or outside
its range raises ``ValueError`` (``OverflowError`` for a number an integer
dtype cannot hold).  ``True``/``False`` are refused where a number is
expected: Python reads them as 1 and 0, so a flag passed in the wrong
position would otherwise be taken silently.

A 0-d array or tensor (anything with ``ndim == 0`` and ``.item()``, NumPy
scalars included) stands for the number it holds, as in PyTorch: the checks
read its ``.item()`` and return that Python scalar, so callers go on with the
returned value, not the argument.
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np

_PLAIN = (int, float, bool, str, type(None))


def as_scalar(value, name=None):
    """A 0-d array or tensor -> the Python scalar it holds; anything else unchanged.

    For a number argument ``name``, a tensor that requires grad is refused: as a
    number its gradient would be lost without a word (a learnable slope passed
    to leaky_relu, say).  (Sizes and counts, asked for without a name, are ints,
    which no tensor that requires grad holds.)"""
    if type(value) in _PLAIN:   # the common case, without the attribute lookups
        return value
    if getattr(value, "ndim", None) == 0:
        if name is not None and getattr(value, "requires_grad", False):
            raise TypeError(f"{name} must be a number, got a tensor that requires grad: "
                            f"as a number here it would get no gradient (pass a number, "
                            f"or t.detach() to say so)")
        item = getattr(value, "item", None)
        if callable(item):
            return item()
    return value


def is_real(value):
    """A real number, bools excluded."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_int(value):
    """An integer (Python or NumPy), bools excluded."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def one_line(text, limit=100):
    """``text`` for an error message: on one line (each run of white space, line
    breaks included, becomes one space) and cut to ``limit`` characters, then
    "...", if longer.  For values and messages of any size that a file holds."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def shown_value(value):
    """A value as error messages show it: its repr and its type, ``2.5 (float)``."""
    return f"{value!r} ({type(value).__name__})"


def check_number(name, value, low=0.0, high=None, open_high=False, open_low=False):
    """``value`` is a real number (not a bool, not NaN) in ``[low, high]``.

    ``open_low`` / ``open_high`` exclude the bound; ``low=None`` means no
    lower bound.  Returns the number, as a Python scalar if it came as a
    NumPy scalar or a 0-d array or tensor.
    """
    kind = type(value)
    if kind is float or kind is int:   # the common case: the range test alone
        if (low is None or (value > low if open_low else value >= low)) \
                and (high is None or (value < high if open_high else value <= high)) \
                and value == value:
            return value
        # else the full path below says what is wrong
    value = as_scalar(value, name)
    if not is_real(value):
        raise TypeError(f"{name} must be a number, got {shown_value(value)}")
    if value != value:   # NaN
        raise ValueError(f"{name} must be a number, got nan")
    too_low = low is not None and (value <= low if open_low else value < low)
    too_high = high is not None and (value >= high if open_high else value > high)
    if too_low or too_high:
        bounds = [] if low is None else [f"{'>' if open_low else '>='} {low}"]
        if high is not None:
            bounds.append(f"{'<' if open_high else '<='} {high}")
        raise ValueError(f"{name} must be {' and '.join(bounds)}, got {value}")
    return value


def check_finite(name, value):
    """``value`` is a finite real number (not a bool); returns it."""
    value = as_scalar(value, name)
    if not is_real(value):
        raise TypeError(f"{name} must be a finite number, got {shown_value(value)}")
    if not is_int(value) and not math.isfinite(value):   # an int is finite, however large
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def check_int(name, value, low=None, whole_floats=False):
    """``value`` is an int (not a bool), at least ``low`` if given; returns it as an int.

    ``whole_floats=True`` also takes a float with a whole value (a count that
    was saved as a float, as PyTorch's Adam saves its step).
    """
    value = as_scalar(value, name)
    if whole_floats and is_real(value) and not is_int(value) \
            and math.isfinite(value) and float(value).is_integer():
        value = int(value)
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {shown_value(value)}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value}")
    return int(value)


def int_list(values):
    """A sequence of ints as a list of Python ints, or None if it is not one.

    A 1-d integer array or tensor is such a sequence, and each element may be
    a 0-d one.
    """
    if isinstance(values, (str, bytes)):
        return None
    if getattr(values, "ndim", None) == 1 and callable(getattr(values, "tolist", None)):
        items = values.tolist()
    else:
        try:
            items = [as_scalar(v) for v in values]
        except TypeError:
            return None
    return [int(v) for v in items] if all(is_int(v) for v in items) else None


def check_ints(name, value, n, low=None):
    """``value`` is an int or a sequence of ``n`` ints, each at least ``low`` if
    given; returns a tuple of ``n`` Python ints (an int is repeated ``n`` times).

    As everywhere here, a 0-d array or tensor stands for its int and a 1-d
    integer one is a sequence (see :func:`int_list`).  Anything else, floats
    and bools included, is a ``TypeError``; a sequence of another length or a
    value below ``low`` a ``ValueError``.
    """
    if type(value) is int and (low is None or value >= low):   # the common case, fast
        return (value,) * n
    what = "an int" if n == 1 else "an int or a pair of ints" if n == 2 else \
        f"an int or a sequence of {n} ints"
    value = as_scalar(value, name)
    if is_int(value):
        values = (int(value),) * n
    else:
        items = int_list(value)
        if items is None:
            raise TypeError(f"{name} must be {what}, got {shown_value(value)}")
        if len(items) != n:
            raise ValueError(f"{name} must be {what}, got {len(items)} ints: {value!r}")
        values = tuple(items)
    if low is not None and min(values) < low:
        raise ValueError(f"{name} must be {what} >= {low}, got {value!r}")
    return values


def check_flag(name, value, of=None):
    """``value`` is a bool (Python or NumPy); returns it as a Python bool.  ``of``: the
    op or layer the flag belongs to, named in the error as ``"{of}: {name}"`` (joined
    only on failure, so the per-call flags of hot ops cost no string formatting)."""
    if value is True or value is False:   # the common case, without a call
        return value
    if of is not None:
        name = f"{of}: {name}"
    value = as_scalar(value, name)
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {shown_value(value)}")
    return bool(value)


def check_fill_value(name, value):
    """``value`` is a number to fill a tensor with (a bool is fine here: a fill of a
    bool tensor); strings, None and the like are refused.  Returns the number."""
    value = as_scalar(value, name)
    if not isinstance(value, (numbers.Real, np.bool_)):
        raise TypeError(f"{name} must be a number, got {shown_value(value)}")
    return value


def check_probability(name, p):
    """``p`` is a real number in [0, 1] (not a bool, not NaN); returns it."""
    kind = type(p)
    if (kind is float or kind is int) and 0 <= p <= 1:   # the common case (NaN fails it)
        return p
    p = as_scalar(p, name)
    if not is_real(p):
        raise TypeError(f"{name} must be a probability in [0, 1], got {shown_value(p)}")
    if not 0 <= p <= 1:   # NaN fails this too
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return p


# ---- values and integer dtypes ------------------------------------------------------
# One rule wherever values meet an integer dtype they were not made in (creation
# from Python numbers, fills, item assignment, in-place operands, loaded states):
# NaN is a ValueError, an infinity or a value outside the dtype's range an
# OverflowError, never a silent wrap-around; fractions are cut towards zero, as
# PyTorch does.

_BOUNDS = {}


def int_bounds(dtype):
    """``(min, max)`` of the integer ``dtype`` as Python ints (cached: np.iinfo is slow)."""
    try:
        return _BOUNDS[dtype]
    except KeyError:
        info = np.iinfo(dtype)
        bounds = _BOUNDS[dtype] = (int(info.min), int(info.max))
        return bounds


def fits(value, dtype):
    """Whether the integer ``value`` lies in the range of the integer ``dtype``."""
    lo, hi = int_bounds(dtype)
    return lo <= value <= hi


def shown_int(value):
    """A Python int for a message: its digits, or their start and count if there are many."""
    magnitude = abs(value)
    if magnitude.bit_length() > 13000:   # str() refuses ints of more than 4300 digits
        count = int(magnitude.bit_length() * math.log10(2))      # the digits, or one less
        count += magnitude >= 10 ** count
        lead = magnitude // 10 ** (count - 20)
        return f"{'-' if value < 0 else ''}{lead}... ({count} digits)"
    digits = str(value)
    return digits if len(digits) <= 40 else f"{digits[:20]}... ({len(digits)} digits)"


def range_error(what, value, dtype, hint="use a wider integer dtype or a float dtype"):
    """The error for ``value`` (None: not known on the host) that the integer ``dtype``
    cannot hold.  ``what`` names the operation: a string, or a function giving one
    (so that callers build the text only when something is wrong)."""
    what = what() if callable(what) else what
    lo, hi = int_bounds(dtype)
    if value is not None and value != value:   # NaN
        return ValueError(f"{what}: NaN has no value in the integer dtype {dtype}; replace "
                          f"the NaNs first or use a float dtype")
    shown = ("a value" if value is None else
             f"the value {shown_int(value) if isinstance(value, int) else value}")
    return OverflowError(f"{what}: {shown} does not fit the dtype {dtype} (range "
                         f"{lo}..{hi}); {hint}")


def misfit(value, dtype):
    """Whether the Python (or NumPy) number ``value`` would not keep its value, cut
    towards zero, in the integer ``dtype``: NaN, an infinity or out of range."""
    value = as_scalar(value)   # exact comparisons: Python numbers, not NumPy scalars
    if isinstance(value, bool):
        return False
    lo, hi = int_bounds(dtype)
    # Python compares a float with an int exactly: trunc(v) >= lo means v > lo - 1 (for
    # an int, v >= lo); NaN fails both comparisons.
    return not lo - 1 < value < hi + 1


def check_value_fits(what, value, dtype):
    """Refuse a number that the integer ``dtype`` cannot hold (see :func:`misfit`);
    returns ``value``.  A float ``dtype`` takes any number that is a float, as NumPy
    converts it (a Python int beyond float64 gets an ``OverflowError`` here)."""
    if dtype.kind in "iu":
        if misfit(value, dtype):
            raise range_error(what, value, dtype)
    elif dtype.kind == "f" and is_int(value):
        try:
            float(value)
        except OverflowError:
            what = what() if callable(what) else what
            raise OverflowError(f"{what}: the Python int {shown_int(value)} is too large for "
                                f"any float dtype (float64 ends near 1.8e308)") from None
    return value


@functools.lru_cache(maxsize=None)
def _open_bounds(src, dtype):
    """``(min - 1, max + 1)`` of the integer ``dtype`` if a cast from ``src`` to it can
    change values, else None (one cached lookup for the common cases)."""
    if dtype.kind not in "iu" or src == dtype or src.kind == "b" \
            or np.can_cast(src, dtype, casting="safe"):
        return None
    lo, hi = int_bounds(dtype)
    return lo - 1, hi + 1


def check_cast_fits(array, dtype, what, backend=None, hint=None):
    """Refuse casting ``array`` to the integer ``dtype`` where the cast would not keep
    its values (see :func:`misfit`), which NumPy (and CuPy) would wrap around silently.

    One reduction to the minimum and the maximum decides it.  ``backend`` None
    means a host array; on a deferring backend the check runs on the device
    (see ``Backend.check``).  ``what`` and ``hint`` are as in :func:`range_error`.
    """
    src = array.dtype
    bounds = _open_bounds(src, dtype)
    if bounds is None or array.size == 0:
        return
    hint = {} if hint is None else {"hint": hint}   # range_error's default otherwise
    if backend is None or not backend.defer_checks:
        # The values that decide it, as Python numbers: all of a few (Python is faster
        # than two reductions), else the extremes (NaN anywhere makes both NaN).
        few = array.size <= 16
        if backend is None:
            values = array.ravel().tolist() if few else (array.min().item(), array.max().item())
        else:
            with backend.context():
                values = array.ravel().tolist() if few else \
                    (array.min().item(), array.max().item())
        low, high = bounds   # the test of misfit(), inlined
        for v in values:
            if not low < v < high:
                raise range_error(what, v, dtype, **hint)
        return
    lo_bound, hi_bound = int_bounds(dtype)
    xp = backend.xp
    with backend.context():
        lo, hi = array.min(), array.max()
        if src.kind == "f":
            if src == np.float16:   # float16 cannot hold the bounds compared with below
                lo, hi = lo.astype(np.float32), hi.astype(np.float32)
            backend.check(xp.isnan(lo), ValueError, str(range_error(what, math.nan, dtype)))
            # trunc(v) >= min and v < max + 1: the bounds are powers of two or zero,
            # exact in float32 and float64.
            bad = (xp.trunc(lo) < float(lo_bound)) | (hi >= float(hi_bound) + 1)
        else:
            # Compare only with bounds the source dtype can hold (CuPy may refuse a
            # Python int outside it).
            src_lo, src_hi = int_bounds(src)
            bad = xp.zeros((), dtype=bool)
            if lo_bound > src_lo:
                bad = bad | (lo < lo_bound)
            if hi_bound < src_hi:
                bad = bad | (hi > hi_bound)
        backend.check(bad, OverflowError, str(range_error(what, None, dtype, **hint)))


def check_seed(name, seed, none=False, also=()):
    """``seed`` is a seed for ``numpy.random.default_rng``: an int >= 0 (a NumPy int or
    a 0-d integer array or tensor too; returned as a Python int), None if ``none``, or
    an instance of one of the ``numpy.random`` types in ``also`` (``Generator``,
    ``SeedSequence``; None and those are returned as they are).

    A negative int is a ``ValueError`` (NumPy refuses it too, in its own words);
    anything else, bools and floats included, a ``TypeError``.
    """
    if type(seed) is int and seed >= 0:   # the common case
        return seed
    if (seed is None and none) or isinstance(seed, also):
        return seed
    seed = as_scalar(seed, name)
    if is_int(seed):
        if seed < 0:
            raise ValueError(f"{name} must be an int >= 0, got {seed}")
        return int(seed)
    kinds = ["an int >= 0"] + [f"a numpy.random.{t.__name__}" for t in also] + \
        (["None"] if none else [])
    shown = kinds[0] if len(kinds) == 1 else f"{', '.join(kinds[:-1])} or {kinds[-1]}"
    raise TypeError(f"{name} must be {shown}, got {shown_value(seed)}")


def no_stride(stride):
    """Whether a pooling's ``stride`` is left out (None, ``()`` or ``[]``, as in PyTorch):
    the kernel size then.  Not ``stride == ()``, which a tensor answers elementwise.  (Here
    for the functional pooling ops and the pooling layers, which check at construction.)"""
    return stride is None or (type(stride) in (tuple, list) and not stride)
