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
no elements unchanged and warn, as PyTorch does, since its fan may be 0;
the others leave it unchanged without a word, as PyTorch's.

PyTorch's random initialisers also take ``generator=``; here every draw
comes from the one generator that :func:`tinygrad_cnn.manual_seed` seeds.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .._checks import (check_fill_value, check_finite, check_int, check_number,
                       check_value_fits)
from ..autograd import no_grad
from ..tensor import Tensor, get_rng

__all__ = ["calculate_gain", "calculate_fan_in_and_fan_out", "uniform_", "normal_",
           "constant_", "zeros_", "ones_", "kaiming_uniform_", "kaiming_normal_",
           "xavier_uniform_", "xavier_normal_", "trunc_normal_", "orthogonal_", "eye_",
           "dirac_"]


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


def _skip_empty(tensor, name, warn=True):
    """Whether ``tensor`` has no elements (its fan may be 0): then warn, as PyTorch, if
    ``warn`` (PyTorch's fan-based inits warn; ``orthogonal_`` says nothing)."""
    _check_tensor(tensor, name)
    if tensor.size == 0:
        if warn:
            warnings.warn("Initializing zero-element tensors is a no-op", UserWarning,
                          stacklevel=3)
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


# ---- truncated normal -----------------------------------------------------------------
def _normal_cdf(z):
    """Phi(z) of N(0, 1), from math.erfc (accurate in the lower tail too)."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def _truncated_normal(rng, n, mean, std, a, b):
    """``n`` float64 samples of N(mean, std^2) conditioned on [a, b], by exact rejection.

    A proposal's accepted draws follow the truncated law exactly; the rejected
    ones are drawn again until none is left.  The proposal is the one that
    rejects few (C. P. Robert, "Simulation of truncated normal variables",
    1995), in standard units ``alpha = (a - mean) / std``, ``beta = (b - mean) / std``:

    - N(mean, std^2), kept in [a, b]: when [a, b] holds over 0.3 of its mass
      (PyTorch's threshold);
    - a short interval around the mean: U(a, b), kept with probability
      exp(-((x - mean) / std)^2 / 2) (the density over its peak);
    - an interval in a tail: measured from its end ``edge`` nearest the mean,
      ``dist`` standard units away, a value e >= 0 standard units inward has a
      density proportional to exp(-(dist + e)^2 / 2).  If short (``width =
      (b - a) / std`` at most exp(1/2) / lam * exp((dist^2 - dist * sqrt(dist^2 + 4)) / 4),
      Robert's rule): e ~ U(0, width), kept with probability
      exp(-e * dist - e^2 / 2) (the density over its peak at the edge); if
      long: e ~ Exp(lam), lam = (dist + sqrt(dist^2 + 4)) / 2, kept if
      e <= width and with probability exp(-(e - (lam - dist))^2 / 2).

    Each proposal keeps 0.3 of its draws or more, however far [a, b] lies
    from the mean, so the loop ends after a few dozen rounds.

    The values are clipped to [a, b]: that moves only a value that the
    rounding of ``edge + step`` put just outside.
    """
    alpha, beta = (a - mean) / std, (b - mean) / std
    if _normal_cdf(beta) - _normal_cdf(alpha) > 0.3:
        def propose(k):
            x = rng.normal(mean, std, size=k)
            return x, (x >= a) & (x <= b)
    elif alpha < 0 < beta:   # short, or it would hold over 0.3 of the mass
        def propose(k):
            x = rng.uniform(a, b, size=k)
            z = (x - mean) / std
            return x, rng.random(k) < np.exp(-z * z / 2)
    else:
        # The tail [a, b] lies in: e measured from a upwards, or from b downwards.
        edge, direction, dist = (a, 1.0, alpha) if alpha >= 0 else (b, -1.0, -beta)
        width = (b - a) / std
        if math.isinf(dist):
            # Farther from the mean than float64 counts in standard deviations: the
            # law is a point at the edge, to within the edge's own rounding.
            return np.full(n, float(edge))
        root = math.hypot(dist, 2.0)                    # sqrt(dist^2 + 4), without overflow
        lam = dist / 2 + root / 2
        shift = 2.0 / (dist + root)                     # lam - dist, without cancellation
        # (dist^2 - dist*root) / 4 = -dist / (dist + root), written without overflow
        if width <= math.exp(0.5 - dist / (dist + root)) / lam:
            def propose(k):
                # Drawn in x's units: a width that underflows in std's still has its values.
                step = rng.uniform(0.0, b - a, size=k)
                e = step / std
                return edge + direction * step, rng.random(k) < np.exp(-e * (dist + e / 2))
        else:
            def propose(k):
                e = rng.exponential(1.0 / lam, size=k)
                keep = (e <= width) & (rng.random(k) < np.exp(-(e - shift) ** 2 / 2))
                return edge + direction * std * e, keep
    out = np.empty(n)
    pending = np.arange(n)
    while pending.size:
        x, keep = propose(pending.size)
        out[pending[keep]] = x[keep]
        pending = pending[~keep]
    return np.clip(out, a, b, out=out)


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    """Fill with N(mean, std^2) conditioned on [a, b]: pdf ~ exp(-(x - mean)^2 / (2 std^2)).

    Exact at any distance of [a, b] from the mean (rejection sampling, see
    ``_truncated_normal``; PyTorch's method, also rejection, "works best
    when a <= mean <= b" and warns otherwise).  ``a < b`` may be infinite
    (``a=0, b=math.inf``: the half-normal); ``std > 0``.  Values lie in
    [a, b] as drawn in float64, so in float32 in [float32(a), float32(b)]
    (rounding keeps the order), as PyTorch's do.
    """
    _check_tensor(tensor, "trunc_normal_")
    mean = check_finite("trunc_normal_: mean", check_number("trunc_normal_: mean", mean,
                                                            low=None))
    std = check_finite("trunc_normal_: std", check_number("trunc_normal_: std", std, low=0,
                                                          open_low=True))
    a = check_number("trunc_normal_: a", a, low=None)
    b = check_number("trunc_normal_: b", b, low=None)
    if not a < b:
        raise ValueError(f"trunc_normal_: the bounds must satisfy a < b, got a={a}, b={b}")
    values = _truncated_normal(get_rng(), tensor.size, float(mean), float(std), float(a),
                               float(b))
    return _fill_(tensor, values.reshape(tensor.shape), "trunc_normal_")


# ---- structured matrices ---------------------------------------------------------------
def orthogonal_(tensor, gain=1):
    """Fill with gain * Q; Q (size(0), -1): Q Q^T = I if size(0) <= cols, else Q^T Q = I.

    Q has orthonormal rows or columns, whichever are fewer.  It is the QR
    factor of a matrix of N(0, 1) draws, taken the tall way round, each
    column times the sign of its R's diagonal element: then Q is uniformly
    (Haar) distributed (Mezzadri 2007), as in PyTorch.  A tensor of more
    than 2 dimensions (a conv weight (out, in, *kernel)) is that matrix
    reshaped, as PyTorch flattens it.  ``gain >= 0``.
    """
    _check_tensor(tensor, "orthogonal_")
    if tensor.ndim < 2:
        raise ValueError(f"orthogonal_: expected a tensor with at least 2 dimensions (it is "
                         f"filled as a matrix (size(0), -1)), got shape {tensor.shape}")
    gain = check_finite("orthogonal_: gain", check_number("orthogonal_: gain", gain))
    if _skip_empty(tensor, "orthogonal_", warn=False):
        return tensor
    rows = tensor.shape[0]
    cols = tensor.size // rows
    w = get_rng().normal(size=(rows, cols))     # (rows, cols)
    if rows < cols:
        w = w.T                                 # (cols, rows): tall, as QR needs
    q, r = np.linalg.qr(w)                      # q (max, min), r (min, min)
    # The sign correction; a zero diagonal element (probability 0) keeps its
    # column, where PyTorch's sign() would zero it.
    q *= np.where(np.diag(r) < 0, -1.0, 1.0)
    if rows < cols:
        q = q.T                                 # (rows, cols)
    return _fill_(tensor, (gain * q).reshape(tensor.shape), "orthogonal_")


def eye_(tensor):
    """Fill a 2-D tensor with the identity: w[i, j] = 1 if i == j else 0 (rectangular too).

    A Linear weight (out, in) so filled passes its first min(out, in) inputs
    through unchanged.
    """
    _check_tensor(tensor, "eye_")
    if tensor.ndim != 2:
        raise ValueError(f"eye_: expected a 2-D tensor (a Linear weight (out, in)), got shape "
                         f"{tensor.shape}"
                         + ("; dirac_ fills a conv weight with the identity"
                            if tensor.ndim in (3, 4, 5) else ""))
    return _fill_(tensor, np.eye(*tensor.shape), "eye_")


def dirac_(tensor, groups=1):
    """Conv identity (out, in, *k): w[g*m + d, d, *(k // 2)] = 1 for d < min(m, in), m = out/groups.

    Every other element is 0; g runs over the groups, k over the kernel's
    sizes.  A convolution with this weight passes the first min(m, in) input
    channels of each group through unchanged (with padding k // 2, at the
    same positions for an odd kernel size).
    """
    _check_tensor(tensor, "dirac_")
    shape = tensor.shape
    if tensor.ndim not in (3, 4, 5):
        raise ValueError(f"dirac_: expected a 3-, 4- or 5-D conv weight (out, in, *kernel), "
                         f"got shape {shape}"
                         + ("; eye_ fills a 2-D one with the identity"
                            if tensor.ndim == 2 else ""))
    groups = check_int("dirac_: groups", groups, low=1)
    if shape[0] % groups:
        raise ValueError(f"dirac_: groups={groups} must divide size(0)={shape[0]}, the output "
                         f"channels of the weight of shape {shape}")
    per_group = shape[0] // groups
    host = np.zeros(shape)
    if host.size:   # a kernel axis of size 0 has no centre
        d = np.arange(min(per_group, shape[1]))
        out = (np.arange(groups)[:, None] * per_group + d).ravel()     # (groups * len(d),)
        centre = tuple(k // 2 for k in shape[2:])
        host[(out, np.tile(d, groups)) + centre] = 1.0
    return _fill_(tensor, host, "dirac_")
