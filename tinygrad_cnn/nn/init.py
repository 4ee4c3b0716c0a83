"""Weight initialisation, in place, with PyTorch's formulas.

Every function fills an existing tensor in place and returns it.  The
numbers are drawn in float64 on the host from
:func:`tinygrad_cnn.tensor.get_rng`, cast to the tensor's dtype and copied
to its device, so ``manual_seed(s)`` gives the same weights on every device.

Fans (:func:`calculate_fan_in_and_fan_out`), as PyTorch computes them from
a weight of shape ``(out, in, *kernel)``::

    receptive = prod(kernel)          # 1 for a Linear weight (out, in)
    fan_in  = in  * receptive         # inputs that feed one output unit
    fan_out = out * receptive         # outputs that one input unit feeds

A weight whose layout does not follow ``(out, in, *kernel)`` (a
locally-connected weight (OC, OH, OW, C, KH, KW), or a transposed-conv
weight, for which PyTorch's rule is known to give the "wrong" fan) can pass
its fan explicitly with ``fan=``.

Only floating-point tensors can be initialised (a ``TypeError`` otherwise:
random values cast to integers would be silently truncated).  The
fan-based initialisers (``kaiming_*``, ``xavier_*``) leave a tensor with
no elements unchanged and warn, as PyTorch does, since its fan may be 0.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .._checks import check_fill_value, check_finite, check_number, check_value_fits
from ..autograd import no_grad
from ..tensor import Tensor, get_rng

__all__ = ["calculate_gain", "calculate_fan_in_and_fan_out", "uniform_", "normal_",
           "constant_", "zeros_", "ones_", "kaiming_uniform_", "kaiming_normal_",
           "xavier_uniform_", "xavier_normal_"]


_LINEAR = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
           "conv_transpose3d", "sigmoid")


def calculate_gain(nonlinearity, param=None):
    """The gain that keeps activations' variance stable through ``nonlinearity``.

    ============================  ==========================================
    linear, conv*, sigmoid        1
    tanh                          5/3
    relu                          sqrt(2)
    leaky_relu                    sqrt(2 / (1 + negative_slope^2)), slope
                                  ``param`` (default 0.01)
    selu                          3/4
    ============================  ==========================================

    ``param`` is leaky_relu's negative slope; the other nonlinearities take
    none, and one given to them is a ``ValueError`` (PyTorch ignores it,
    which hides a slope meant for leaky_relu).
    """
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else \
            float(check_number("calculate_gain: negative_slope", param, low=None))
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity in _LINEAR:
        gain = 1.0
    elif nonlinearity == "tanh":
        gain = 5.0 / 3
    elif nonlinearity == "relu":
        gain = math.sqrt(2.0)
    elif nonlinearity == "selu":
        gain = 3.0 / 4
    else:
        raise ValueError(f"unsupported nonlinearity {nonlinearity!r}; expected one of "
                         f"{', '.join(_LINEAR)}, tanh, relu, leaky_relu, selu")
    if param is not None:
        raise ValueError(f"calculate_gain: {nonlinearity!r} takes no parameter, got "
                         f"param={param!r} (a negative slope is leaky_relu's)")
    return gain


def calculate_fan_in_and_fan_out(tensor):
    """``(fan_in, fan_out)`` of a weight laid out ``(out, in, *kernel)`` (see module doc)."""
    shape = tensor.shape
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need a tensor with at least 2 dimensions, "
                         f"got shape {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _check_tensor(tensor, name):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name}: init functions fill a Tensor in place, got "
                        f"{type(tensor).__name__}")
    if tensor.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {tensor.dtype} "
                        f"(shape {tensor.shape}); initial values cast to it would be "
                        f"truncated")


def _skip_empty(tensor, name):
    """Whether ``tensor`` has no elements (its fan may be 0): then warn, as PyTorch."""
    _check_tensor(tensor, name)
    if tensor.size == 0:
        warnings.warn("Initializing zero-element tensors is a no-op", UserWarning, stacklevel=3)
        return True
    return False


def _fan(tensor, mode, fan, name):
    """The fan of a kaiming init: ``fan`` if given, else fan_in or fan_out by ``mode``."""
    # Any case, as PyTorch ("FAN_OUT"); checked even when fan is given, where it
    # is not used, so that a misspelt mode is never silently accepted.
    if not isinstance(mode, str) or mode.lower() not in ("fan_in", "fan_out"):
        raise ValueError(f"{name}: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    if fan is not None:
        # Any positive number: the formulas need no count (cutting 2.5 to 2, or 0.5
        # to a division by zero, would not be what was asked for).
        return check_number(f"{name}: fan", fan, low=0, open_low=True)
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode.lower() == "fan_in" else fan_out


def _kaiming_gain(nonlinearity, a, name):
    """calculate_gain(nonlinearity, a), with ``a`` (default 0) leaky_relu's slope alone."""
    if nonlinearity == "leaky_relu":
        return calculate_gain(nonlinearity, a)
    gain = calculate_gain(nonlinearity)
    # PyTorch ignores a for the other nonlinearities: a nonzero one is refused, as
    # the slope it stands for would not be in the gain.
    if check_number(f"{name}: a", a, low=None) != 0:
        raise ValueError(f"{name}: a={a!r} is the negative slope of leaky_relu, but "
                         f"nonlinearity={nonlinearity!r} takes none; pass a=0 or "
                         f"nonlinearity='leaky_relu'")
    return gain


def _fill_(tensor, host, name):
    """Write host values into ``tensor`` in place, in its dtype, on its device."""
    _check_tensor(tensor, name)
    with no_grad(), tensor._backend.context():
        values = tensor._backend.asarray(np.asarray(host).astype(tensor.dtype))
        tensor._own_writeable_data()
        tensor.data[...] = values
    tensor._bump_version()
    return tensor


def uniform_(tensor, a=0.0, b=1.0):
    """Fill with samples of U(a, b), ``a <= b``."""
    # Checked before drawing: the generator stays where it was.
    _check_tensor(tensor, "uniform_")
    a = check_number("uniform_: a", a, low=None)
    b = check_number("uniform_: b", b, low=a)
    check_finite("uniform_: a", a)   # NumPy cannot draw from an infinite range
    check_finite("uniform_: b", b)
    return _fill_(tensor, get_rng().uniform(a, b, size=tensor.shape), "uniform_")


def normal_(tensor, mean=0.0, std=1.0):
    """Fill with samples of N(mean, std^2), ``std >= 0``."""
    _check_tensor(tensor, "normal_")
    mean = check_number("normal_: mean", mean, low=None)
    std = check_number("normal_: std", std)
    return _fill_(tensor, get_rng().normal(mean, std, size=tensor.shape), "normal_")


def constant_(tensor, val):
    """Fill with ``val`` (PyTorch's name for it, so ``constant_(w, val=0.1)`` ports)."""
    _check_tensor(tensor, "constant_")
    # float(): a float tensor takes any real number (an int beyond 64 bits too, up
    # to float64's range: check_value_fits names a larger one).
    value = float(check_value_fits("constant_: val", check_fill_value("constant_: val", val),
                                   tensor.dtype))
    # Written on the tensor's device: no host array to copy there.
    with no_grad(), tensor._backend.context():
        tensor._own_writeable_data()
        tensor.data[...] = value
    tensor._bump_version()
    return tensor


def zeros_(tensor):
    """Fill with 0."""
    return constant_(tensor, 0.0)


def ones_(tensor):
    """Fill with 1."""
    return constant_(tensor, 1.0)


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", fan=None):
    """He initialisation: U(-bound, bound), bound = gain * sqrt(3 / fan).

    ``gain = calculate_gain(nonlinearity, a)``, ``a`` the negative slope of
    leaky_relu (any other nonlinearity needs ``a=0``); ``fan`` is fan_in or
    fan_out by ``mode`` (in any case, as PyTorch) unless given.  PyTorch's
    Linear/Conv default is ``kaiming_uniform_(w, a=sqrt(5))``, i.e.
    gain = sqrt(2 / (1 + 5)) and bound = 1 / sqrt(fan_in).
    """
    if _skip_empty(tensor, "kaiming_uniform_"):
        return tensor
    gain = _kaiming_gain(nonlinearity, a, "kaiming_uniform_")
    bound = gain * math.sqrt(3.0 / _fan(tensor, mode, fan, "kaiming_uniform_"))
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", fan=None):
    """He initialisation: N(0, std^2), std = gain / sqrt(fan).

    ``gain``, ``a``, ``mode`` and ``fan`` as for :func:`kaiming_uniform_`.
    """
    if _skip_empty(tensor, "kaiming_normal_"):
        return tensor
    gain = _kaiming_gain(nonlinearity, a, "kaiming_normal_")
    return normal_(tensor, 0.0,
                   gain / math.sqrt(_fan(tensor, mode, fan, "kaiming_normal_")))


def xavier_uniform_(tensor, gain=1.0):
    """Glorot initialisation: U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""
    gain = check_number("xavier_uniform_: gain", gain)   # not a bound or std of the draw below
    if _skip_empty(tensor, "xavier_uniform_"):
        return tensor
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor, gain=1.0):
    """Glorot initialisation: N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    gain = check_number("xavier_normal_: gain", gain)   # not a bound or std of the draw below
    if _skip_empty(tensor, "xavier_normal_"):
        return tensor
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))
