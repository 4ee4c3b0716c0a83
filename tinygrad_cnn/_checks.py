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

import math
import numbers

import numpy as np

_PLAIN = (int, float, bool, str, type(None))


def as_scalar(value):
    """A 0-d array or tensor -> the Python scalar it holds; anything else unchanged."""
    if type(value) in _PLAIN:   # the common case, without the attribute lookups
        return value
    if getattr(value, "ndim", None) == 0:
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


def _kind(value):
    return f"{value!r} ({type(value).__name__})"


def check_number(name, value, low=0.0, high=None, open_high=False, open_low=False):
    """``value`` is a real number (not a bool, not NaN) in ``[low, high]``.

    ``open_low`` / ``open_high`` exclude the bound; ``low=None`` means no
    lower bound.  Returns the number, as a Python scalar if it came as a
    NumPy scalar or a 0-d array or tensor.
    """
    value = as_scalar(value)
    if not is_real(value):
        raise TypeError(f"{name} must be a number, got {_kind(value)}")
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
    value = as_scalar(value)
    if not is_real(value):
        raise TypeError(f"{name} must be a finite number, got {_kind(value)}")
    if not is_int(value) and not math.isfinite(value):   # an int is finite, however large
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def check_int(name, value, low=None):
    """``value`` is an int (not a bool), at least ``low`` if given; returns it as an int."""
    value = as_scalar(value)
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {_kind(value)}")
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


def check_flag(name, value):
    """``value`` is a bool (Python or NumPy); returns it as a Python bool."""
    value = as_scalar(value)
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {_kind(value)}")
    return bool(value)


def check_fill_value(name, value):
    """``value`` is a number to fill a tensor with (a bool is fine here: a fill of a
    bool tensor); strings, None and the like are refused.  Returns the number."""
    value = as_scalar(value)
    if not isinstance(value, (numbers.Real, np.bool_)):
        raise TypeError(f"{name} must be a number, got {_kind(value)}")
    return value


def check_probability(name, p):
    """``p`` is a real number in [0, 1] (not a bool, not NaN); returns it."""
    p = as_scalar(p)
    if not is_real(p):
        raise TypeError(f"{name} must be a probability in [0, 1], got {_kind(p)}")
    if not 0 <= p <= 1:   # NaN fails this too
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return p
