"""Argument checks shared by the whole package: one wording for one kind of mistake.

Each check names the argument, shows the value it got and says what was
expected.  A wrong type raises ``TypeError``, a value of the right type
outside its range ``ValueError``, as PyTorch does.  ``True``/``False`` are
refused where a number is expected: Python reads them as 1 and 0, so a flag
passed in the wrong position would otherwise be taken silently.
"""
from __future__ import annotations

import math
import numbers

import numpy as np


def is_real(value):
    """A real number, bools excluded."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_int(value):
    """An integer (Python or NumPy), bools excluded."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_number(name, value, low=0.0, high=None, open_high=False, open_low=False):
    """``value`` is a real number (not a bool, not NaN) in ``[low, high]``.

    ``open_low`` / ``open_high`` exclude the bound; ``low=None`` means no
    lower bound.  Returns ``value`` unchanged.
    """
    if not is_real(value) or math.isnan(value):
        raise TypeError(f"{name} must be a number, got {value!r}")
    too_low = low is not None and (value <= low if open_low else value < low)
    too_high = high is not None and (value >= high if open_high else value > high)
    if too_low or too_high:
        bounds = [] if low is None else [f"{'>' if open_low else '>='} {low}"]
        if high is not None:
            bounds.append(f"{'<' if open_high else '<='} {high}")
        raise ValueError(f"{name} must be {' and '.join(bounds)}, got {value}")
    return value


def check_int(name, value, low=None):
    """``value`` is an int (not a bool), at least ``low`` if given; returns it as an int."""
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if low is not None and value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value}")
    return int(value)


def check_flag(name, value):
    """``value`` is a bool (Python or NumPy); returns it as a Python bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} "
                        f"({type(value).__name__})")
    return bool(value)


def check_fill_value(name, value):
    """``value`` is a number to fill a tensor with (a bool is fine here: a fill of a
    bool tensor); strings, None and the like are refused."""
    if not isinstance(value, (numbers.Real, np.bool_)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    return value


def check_probability(name, p):
    """``p`` is a real number in [0, 1] (not a bool); returns it."""
    if not is_real(p):
        raise TypeError(f"{name} must be a probability in [0, 1], got {p!r} "
                        f"({type(p).__name__})")
    if not 0 <= p <= 1:   # NaN fails this too
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return p
