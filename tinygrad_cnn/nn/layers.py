"""Layers: ``Module`` wrappers around :mod:`tinygrad_cnn.functional`.

Each layer owns its parameters and settings and checks its input's shape
(naming what it expected), then calls the functional op.  Shapes follow
PyTorch: images are ``(N, C, H, W)``, sequences ``(N, C, L)``; the
convolution, locally-connected and pooling layers, ``Unfold``, ``Fold`` and
InstanceNorm2d also take one unbatched image ``(C, H, W)`` or sequence
``(C, L)`` (``Fold`` the columns of one) and then return no batch axis either
(BatchNorm and GroupNorm, as PyTorch's, need the batch; LayerNorm takes any
leading axes; ``Upsample`` reads a 3-D input as ``(N, C, L)``).

Default initialisation is PyTorch's.  A ``Linear``/``Conv`` weight is drawn
from ``kaiming_uniform_(w, a=sqrt(5))``, i.e. U(-1/sqrt(fan_in),
1/sqrt(fan_in)) with fan_in the number of inputs of one output unit, and
its bias from the same U(-1/sqrt(fan_in), 1/sqrt(fan_in)); a normalisation
layer's weight is 1 and its bias 0.  All random
numbers come from :func:`tinygrad_cnn.tensor.get_rng` on the host, so
``manual_seed`` makes a model reproducible on every device.  Layers with
parameters take ``dtype`` (default float32) and ``device`` keyword
arguments.
"""
from __future__ import annotations

import functools
import math

from .. import functional as F
from .._checks import (
    check_flag, check_int, check_ints, check_number, check_probability, int_list, no_stride,
    shown_value)
from ..backend import DeviceError
from ..conv_arrays import same_padding
from ..tensor import Tensor, _as_dtype, _filled, float32, int64
from . import init
from .module import Module, Parameter

__all__ = ["Linear", "Conv1d", "Conv2d", "ConvTranspose2d", "LocallyConnected2d",
           "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "AdaptiveAvgPool2d",
           "AdaptiveMaxPool2d", "Upsample", "PixelShuffle", "PixelUnshuffle", "Unfold", "Fold",
           "Flatten", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Softmax", "LogSoftmax", "GELU",
           "SiLU", "Mish", "ELU", "SELU", "CELU", "Softplus", "Hardtanh", "ReLU6", "Hardsigmoid",
           "Hardswish", "Dropout", "Dropout2d", "BatchNorm1d", "BatchNorm2d", "InstanceNorm1d",
           "InstanceNorm2d", "GroupNorm", "LayerNorm"]


# ---- helpers ----------------------------------------------------------------------
def _tuple(value, n, name, minimum=0):
    """An int or a sequence of ``n`` ints -> a tuple of ``n`` ints, each >= minimum."""
    return check_ints(name, value, n, low=minimum)


def _param(shape, dtype, device):
    """A zero-filled parameter on ``device``, to be initialised in place."""
    dtype = float32 if dtype is None else _as_dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"layer parameters need a floating-point dtype, got {dtype}")
    # Made on the device: initialisation overwrites the zeros there.
    return _filled(shape, 0, dtype, device, requires_grad=True, cls=Parameter)


def _register_affine(module, shape, affine, bias, dtype, device):
    """A normalisation layer's ``weight`` and (with ``bias``) ``bias`` of ``shape`` if
    ``affine``, else None; :func:`_reset_affine` initialises them."""
    module.register_parameter("weight", _param(shape, dtype, device) if affine else None)
    module.register_parameter("bias", _param(shape, dtype, device) if affine and bias else None)


def _reset_affine(module):
    """A normalisation layer's scale to 1 and shift to 0 (those it has)."""
    if module.weight is not None:
        init.ones_(module.weight)
    if module.bias is not None:
        init.zeros_(module.bias)


def _check_input(layer, x, ndims, channels=None, channel_axis=1, shape_hint=""):
    """Raise a clear error unless ``x`` is a Tensor with ``ndims`` dims (an int, a
    sequence of them, or None: any but 0) and ``channels`` along ``channel_axis``, on
    the device of the layer's parameters and buffers."""
    if not isinstance(x, Tensor):
        raise _not_a_tensor(layer, x)
    ndims = (ndims,) if isinstance(ndims, int) else ndims
    if (x.ndim == 0 if ndims is None else x.ndim not in ndims) \
            or (channels is not None and x.shape[channel_axis] != channels):
        raise _shape_error(layer, x, shape_hint)
    _check_device(layer, x)


def _shape_error(layer, x, shape_hint):
    """The error of a layer given an input of the wrong shape (expected: ``shape_hint``)."""
    return ValueError(f"{type(layer).__name__}({layer.extra_repr()}) expects input of "
                      f"shape {shape_hint}, got {x.shape}")


def _check_float_input(layer, x):
    """The normalisation layers take float inputs only: an integer input's statistics
    would make the output float64."""
    if x.dtype.kind != "f":
        raise TypeError(f"{type(layer).__name__}: the input of shape {x.shape} has dtype "
                        f"{x.dtype}; expected a float dtype (convert with x.float())")


def _check_device(layer, x):
    """The input must be on the device of the layer's parameters and buffers.

    Checked here, before any op: the op's own error would name an inner op
    (``MatMul`` for a Linear) and two devices without saying which side is the
    input, and BatchNorm's running-statistics update works on raw arrays, where
    a mismatch would surface as a low-level array error after
    ``num_batches_tracked`` had already counted the batch.
    """
    # Runs on every layer call: plain loops, and the message built only on a mismatch.
    backend = x._backend
    for registry in (layer._parameters, layer._buffers):
        for t in registry.values():
            if t is not None and t._backend is not backend:
                raise _device_mismatch(layer, x)


def _device_mismatch(layer, x):
    """The error for the first parameter or buffer of ``layer`` not on ``x``'s device."""
    for kind, registry in (("parameter", layer._parameters), ("buffer", layer._buffers)):
        for name, t in registry.items():
            if t is not None and t._backend is not x._backend:
                return DeviceError(f"{type(layer).__name__}: the input is on {x.device} but "
                                   f"the layer's {kind} {name!r} is on {t.device}; move the "
                                   f"input with x.to({t.device!r}) (or the model with "
                                   f".to({x.device!r}))")


def _not_a_tensor(layer, x):
    """The one error of every layer for an input that is not a Tensor (raised by
    :func:`_check_input` and :func:`_tensor_input`)."""
    return TypeError(f"{type(layer).__name__} expects a Tensor, got {type(x).__name__} "
                     f"(make one with tg.tensor(x))")


def _tensor_input(forward):
    """For the layers whose forward only calls a Tensor method (and checks nothing
    else): an input that is not a Tensor gets that error, not an AttributeError."""
    @functools.wraps(forward)
    def checked(self, x):
        if not isinstance(x, Tensor):
            raise _not_a_tensor(self, x)
        return forward(self, x)
    return checked


def _uniform_bias(bias, fan_in):
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    init.uniform_(bias, -bound, bound)


# ---- fully-connected ----------------------------------------------------------------
class Linear(Module):
    """y = x W^T + b, with W of shape (out_features, in_features).

    Input ``(..., in_features)``, output ``(..., out_features)``.
    Initialisation: W ~ kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)),
    b ~ U(-1/sqrt(in), 1/sqrt(in)).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=None, device=None):
        super().__init__()
        self.in_features = check_int(f"{type(self).__name__}: in_features", in_features, low=1)
        self.out_features = check_int(f"{type(self).__name__}: out_features", out_features, low=1)
        self.weight = _param((self.out_features, self.in_features), dtype, device)
        # Registered even when absent (None), as in PyTorch, so that a bias can be
        # registered later: a plain attribute would hold the name.
        bias = _param((self.out_features,), dtype, device) \
            if check_flag("Linear: bias", bias) else None
        self.register_parameter("bias", bias)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            _uniform_bias(self.bias, self.in_features)

    def forward(self, x):
        _check_input(self, x, None, self.in_features, channel_axis=-1,
                     shape_hint=f"(..., {self.in_features})")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


# ---- convolutions -----------------------------------------------------------------
# The convolutions' padding modes (PyTorch's names) and the F.pad mode of each.
_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
             "circular": "circular"}
_PADDING_MODES = tuple(_PAD_MODE)


class _ConvNd(Module):
    """Settings, parameters and initialisation shared by the convolutions."""

    _n = 2
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                 groups, bias, dtype, device, output_padding=0, padding_mode="zeros"):
        super().__init__()
        n = self._n
        name = type(self).__name__
        if self._transposed and padding_mode != "zeros":
            raise ValueError(f"{name}: only padding_mode='zeros' is supported, got "
                             f"{padding_mode!r}")
        if not isinstance(padding_mode, str) or padding_mode not in _PADDING_MODES:
            raise ValueError(f"{name}: padding_mode must be one of "
                             f"{', '.join(map(repr, _PADDING_MODES))}, got {padding_mode!r}")
        self.padding_mode = padding_mode
        self.in_channels = check_int(f"{type(self).__name__}: in_channels", in_channels, low=1)
        self.out_channels = check_int(f"{type(self).__name__}: out_channels", out_channels, low=1)
        self.groups = check_int(f"{type(self).__name__}: groups", groups, low=1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"in_channels ({self.in_channels}) and out_channels "
                             f"({self.out_channels}) must both be divisible by groups "
                             f"({self.groups})")
        self.kernel_size = _tuple(kernel_size, n, "kernel_size", 1)
        self.stride = _tuple(stride, n, "stride", 1)
        self.dilation = _tuple(dilation, n, "dilation", 1)
        if isinstance(padding, str):
            if self._transposed or padding not in ("same", "valid"):
                raise ValueError("padding must be an int"
                                 + ("" if n == 1 else f", a sequence of {n} ints")
                                 + ("" if self._transposed else ", 'same' or 'valid'")
                                 + f", got {padding!r}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError("padding='same' needs stride 1 (the output of a strided "
                                 "convolution cannot keep the input's size)")
            self.padding = (0,) * n if padding == "valid" else padding
        else:
            self.padding = _tuple(padding, n, "padding", 0)
        self.output_padding = _tuple(output_padding, n, "output_padding", 0)
        if any(op >= max(s, d) for op, s, d in zip(self.output_padding, self.stride,
                                                   self.dilation)):
            raise ValueError(f"output_padding {self.output_padding} must be smaller than "
                             f"stride {self.stride} or dilation {self.dilation}")
        if self._transposed:   # (C, OC/groups, *kernel)
            shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        else:                  # (OC, C/groups, *kernel)
            shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.weight = _param(shape, dtype, device)
        bias = _param((self.out_channels,), dtype, device) \
            if check_flag(f"{type(self).__name__}: bias", bias) else None
        self.register_parameter("bias", bias)
        self.reset_parameters()

    def reset_parameters(self):
        """kaiming_uniform_(a=sqrt(5)) for the weight, U(+-1/sqrt(fan_in)) for the bias.

        fan_in is PyTorch's ``weight.shape[1] * prod(kernel_size)``: C/groups*KH*KW
        for a convolution; for a transposed one this gives OC/groups*KH*KW.
        """
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init.calculate_fan_in_and_fan_out(self.weight)
            _uniform_bias(self.bias, fan_in)

    def _padded(self, x):
        """(x, padding for the convolution): x itself and the layer's padding for
        ``padding_mode="zeros"``; else x padded by :func:`F.pad` in that mode and 0, as
        PyTorch does."""
        if self.padding_mode == "zeros":
            return x, self.padding
        if self.padding == "same":   # the odd element of an even kernel after, as F.conv2d
            widths = same_padding(self.kernel_size, self.dilation)
        else:
            widths = [(p, p) for p in self.padding]
        # F.pad lists (before, after) pairs from the last dimension.
        pad = tuple(amount for pair in reversed(widths) for amount in pair)
        try:
            return F.pad(x, pad, mode=_PAD_MODE[self.padding_mode]), (0,) * self._n
        except ValueError as e:   # an input too small for the mode: say which layer
            raise ValueError(f"{type(self).__name__}({self.extra_repr()}) cannot pad its "
                             f"input of shape {x.shape}: {e}") from None

    def _spatial_hint(self):
        return "({0}, L) or (N, {0}, L)".format(self.in_channels) if self._n == 1 else \
            "({0}, H, W) or (N, {0}, H, W)".format(self.in_channels)

    def extra_repr(self):
        n = self._n
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,) * n:
            s += f", padding={self.padding!r}" if isinstance(self.padding, str) else \
                f", padding={self.padding}"
        if self.dilation != (1,) * n:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * n:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class Conv2d(_ConvNd):
    """2-D convolution (cross-correlation, as in every deep-learning library).

    ``Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0,
    dilation=1, groups=1, bias=True)``; input ``(N, C, H, W)``, output
    ``(N, OC, OH, OW)`` with ``OH = (H + 2 padding - dilation (KH - 1) - 1) //
    stride + 1``.  ``padding`` may also be ``"same"`` (stride 1) or
    ``"valid"``.  Weight ``(OC, C/groups, KH, KW)``, bias ``(OC,)``;
    initialised U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C/groups*KH*KW.

    ``padding_mode`` says what the padding holds: ``"zeros"`` (default),
    or x's own elements, ``"reflect"``ed about the edge, ``"replicate"``d
    or wrapped around (``"circular"``); see :func:`F.pad`, which pads x
    before a convolution with padding 0, as in PyTorch (reflect needs each
    padding below the input's size, circular at most its size).  The mode
    is a setting, not a parameter: the state dict is the same for every
    mode.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", dtype=None,
                 device=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, dtype, device, padding_mode=padding_mode)

    def forward(self, x):
        _check_input(self, x, (3, 4), self.in_channels, -3, self._spatial_hint())
        x, padding = self._padded(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation,
                        self.groups)


class Conv1d(_ConvNd):
    """1-D convolution over ``(N, C, L)`` or ``(C, L)``: as :class:`Conv2d` with one
    spatial axis (``padding_mode`` too).

    Weight ``(OC, C/groups, K)``, bias ``(OC,)``.
    """

    _n = 1

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", dtype=None,
                 device=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, dtype, device, padding_mode=padding_mode)

    def forward(self, x):
        _check_input(self, x, (2, 3), self.in_channels, -2, self._spatial_hint())
        x, padding = self._padded(x)
        padding = padding if isinstance(padding, str) else padding[0]
        return F.conv1d(x, self.weight, self.bias, self.stride[0], padding, self.dilation[0],
                        self.groups)


class ConvTranspose2d(_ConvNd):
    """2-D transposed convolution (the gradient of a convolution wrt its input).

    ``ConvTranspose2d(in_channels, out_channels, kernel_size, stride=1,
    padding=0, output_padding=0, groups=1, bias=True, dilation=1)``;
    ``OH = (H - 1) stride - 2 padding + dilation (KH - 1) + output_padding + 1``.
    Weight ``(C, OC/groups, KH, KW)``, bias ``(OC,)``; initialised as
    PyTorch does, with fan_in = OC/groups*KH*KW (PyTorch reads the fan from
    the weight's second axis).  ``padding_mode`` may only be ``"zeros"``, as
    in PyTorch.
    """

    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 dtype=None, device=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, dtype, device, output_padding=output_padding,
                         padding_mode=padding_mode)

    def forward(self, x, output_size=None):
        """The transposed convolution of x; ``output_size``, as in PyTorch, picks the
        output padding that gives that size: (OH, OW), or a whole output shape
        ((N, OC, OH, OW), or (OC, OH, OW) for an unbatched x) whose last two
        entries count.  Each size must lie between the size without output padding
        and that plus ``stride - 1`` (the sizes a strided convolution maps to x's);
        the layer's own ``output_padding`` is then not used."""
        _check_input(self, x, (3, 4), self.in_channels, -3, self._spatial_hint())
        output_padding = self.output_padding if output_size is None else \
            self._output_padding(x, output_size)
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                  output_padding, self.groups, self.dilation)

    def _output_padding(self, x, output_size):
        """The output padding that makes the output of x ``output_size`` (PyTorch's
        ``_output_padding``, with its error for a size out of reach)."""
        name = type(self).__name__
        sizes = int_list(output_size)
        if sizes is None:
            raise TypeError(f"{name}: output_size must be a sequence of ints, got "
                            f"{shown_value(output_size)}")
        leading = x.ndim - 2                 # (N, OC) of a batch, (OC,) of one image
        if len(sizes) == leading + 2:
            sizes = sizes[leading:]
        if len(sizes) != 2:
            raise ValueError(f"{name}: for an input of shape {tuple(x.shape)}, output_size "
                             f"must have 2 or {leading + 2} elements, got "
                             f"{len(sizes)}: {tuple(output_size)}")
        smallest = [(n - 1) * s - 2 * p + d * (k - 1) + 1 for n, s, p, d, k in zip(
            x.shape[-2:], self.stride, self.padding, self.dilation, self.kernel_size)]
        largest = [m + s - 1 for m, s in zip(smallest, self.stride)]
        if any(not lo <= n <= hi for n, lo, hi in zip(sizes, smallest, largest)):
            raise ValueError(f"{name}: requested an output size of {tuple(sizes)}, but "
                             f"valid sizes range from {tuple(smallest)} to {tuple(largest)} "
                             f"(for an input of shape {tuple(x.shape)}; the largest adds "
                             f"stride - 1)")
        return tuple(n - lo for n, lo in zip(sizes, smallest))


def conv_output_size(size, kernel_size, stride=1, padding=0, dilation=1):
    """Output length of a convolution/pooling along one axis (PyTorch's formula)."""
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


class LocallyConnected2d(Module):
    """A convolution without weight sharing: every output position has its own filter.

    ``LocallyConnected2d(in_channels, out_channels, input_size, kernel_size,
    stride=1, padding=0, dilation=1, bias=True)``.  The windows are a
    convolution's, so ``input_size`` (H, W) fixes the output size (OH, OW)
    and the weight ``(OC, OH, OW, C, KH, KW)`` and bias ``(OC, OH, OW)``.
    It has OH*OW times the parameters of the matching :class:`Conv2d`.
    Initialised like a convolution: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
    weight and bias, fan_in = C*KH*KW (the inputs of one output unit).
    """

    def __init__(self, in_channels, out_channels, input_size, kernel_size, stride=1,
                 padding=0, dilation=1, bias=True, dtype=None, device=None):
        super().__init__()
        self.in_channels = check_int(f"{type(self).__name__}: in_channels", in_channels, low=1)
        self.out_channels = check_int(f"{type(self).__name__}: out_channels", out_channels, low=1)
        self.input_size = _tuple(input_size, 2, "input_size", 1)
        self.kernel_size = _tuple(kernel_size, 2, "kernel_size", 1)
        self.stride = _tuple(stride, 2, "stride", 1)
        self.padding = _tuple(padding, 2, "padding", 0)
        self.dilation = _tuple(dilation, 2, "dilation", 1)
        self.output_size = tuple(
            conv_output_size(*args) for args in zip(self.input_size, self.kernel_size,
                                                    self.stride, self.padding, self.dilation))
        if min(self.output_size) < 1:
            raise ValueError(f"LocallyConnected2d: a {self.kernel_size} kernel (dilation "
                             f"{self.dilation}, padding {self.padding}) does not fit an input "
                             f"of size {self.input_size}")
        OH, OW = self.output_size
        KH, KW = self.kernel_size
        self.weight = _param((self.out_channels, OH, OW, self.in_channels, KH, KW), dtype, device)
        bias = _param((self.out_channels, OH, OW), dtype, device) if bias else None
        self.register_parameter("bias", bias)
        self.reset_parameters()

    def reset_parameters(self):
        # PyTorch has no such layer.  Its fan rule, read off the weight's dims
        # (OC, OH, OW, C, KH, KW), would give fan_in = OH*OW*C*KH*KW; but one
        # output unit sums C*KH*KW inputs, as in a Conv2d, whose init this keeps.
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), fan=fan_in)
        if self.bias is not None:
            _uniform_bias(self.bias, fan_in)

    def forward(self, x):
        H, W = self.input_size
        C = self.in_channels
        if not isinstance(x, Tensor) or x.ndim not in (3, 4) or x.shape[-3:] != (C, H, W):
            got = x.shape if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"LocallyConnected2d({self.extra_repr()}) expects input of shape "
                             f"({C}, {H}, {W}) or (N, {C}, {H}, {W}) (its input_size is fixed "
                             f"at construction), got {got}")
        _check_device(self, x)
        return F.local2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, "
             f"kernel_size={self.kernel_size}, stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.bias is None:
            s += ", bias=False"
        return s


# ---- pooling ----------------------------------------------------------------------
def _check_pool_sizes(layer, kernel_size, stride, padding, dilation=1):
    """Refuse at construction the sizes that the pooling op would refuse at the first
    forward (the layer keeps them as given); ``layer._n`` spatial dimensions."""
    name, n = type(layer).__name__, layer._n
    check_ints(f"{name}: kernel_size", kernel_size, n, low=1)
    if not no_stride(stride):   # None, () or []: the kernel size
        check_ints(f"{name}: stride", stride, n, low=1)
    check_ints(f"{name}: padding", padding, n, low=0)
    check_ints(f"{name}: dilation", dilation, n, low=1)


class MaxPool2d(Module):
    """Maximum over each ``kernel_size`` window; ``stride`` defaults to ``kernel_size``.

    Input ``(N, C, H, W)`` or ``(C, H, W)``; ``padding`` pads with -inf.  With
    ``return_indices=True`` also returns the flat (H*W) index of each maximum.
    """

    _n = 2

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        _check_pool_sizes(self, kernel_size, stride, padding, dilation)
        check_flag(f"{type(self).__name__}: return_indices", return_indices)
        check_flag(f"{type(self).__name__}: ceil_mode", ceil_mode)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def forward(self, x):
        _check_input(self, x, (3, 4), shape_hint="(C, H, W) or (N, C, H, W)")
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """Mean over each ``kernel_size`` window; ``stride`` defaults to ``kernel_size``.

    With ``count_include_pad`` (default) zero padding counts in the mean;
    ``divisor_override``, a number > 0, divides every window's sum instead.
    """

    _n = 2

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        name = type(self).__name__
        _check_pool_sizes(self, kernel_size, stride, padding)
        check_flag(f"{name}: ceil_mode", ceil_mode)
        check_flag(f"{name}: count_include_pad", count_include_pad)
        if divisor_override is not None:   # as F.avg_pool2d would refuse it at the first call
            check_number(f"{name}: divisor_override", divisor_override, low=0, open_low=True)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, x):
        _check_input(self, x, (3, 4), shape_hint="(C, H, W) or (N, C, H, W)")
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding,
                            ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad,
                            divisor_override=self.divisor_override)

    def extra_repr(self):
        # PyTorch's three, then the settings that differ from their defaults (PyTorch
        # shows none of them, though each changes the result).
        s = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        if self.ceil_mode:
            s += ", ceil_mode=True"
        if not self.count_include_pad:
            s += ", count_include_pad=False"
        if self.divisor_override is not None:
            s += f", divisor_override={self.divisor_override}"
        return s


class MaxPool1d(MaxPool2d):
    """Max pooling over the last axis of ``(N, C, L)``; settings as :class:`MaxPool2d`."""

    _n = 1

    def forward(self, x):
        _check_input(self, x, (2, 3), shape_hint="(C, L) or (N, C, L)")
        return F.max_pool1d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool1d(AvgPool2d):
    """Average pooling over the last axis of ``(N, C, L)``; settings as :class:`AvgPool2d`
    but for ``divisor_override``, which PyTorch's AvgPool1d (and ``F.avg_pool1d``) lacks."""

    _n = 1

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)

    def forward(self, x):
        _check_input(self, x, (2, 3), shape_hint="(C, L) or (N, C, L)")
        return F.avg_pool1d(x, self.kernel_size, self.stride, self.padding,
                            ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)


def _check_output_size(layer, output_size):
    """An adaptive pooling's output size: an int or a pair, None in a pair keeping that
    axis's input size (checked at construction, as the op would at the first forward)."""
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        output_size = [1 if s is None else s for s in output_size]
    check_ints(f"{type(layer).__name__}: output_size", output_size, 2, low=1)


class AdaptiveAvgPool2d(Module):
    """Average-pool to a fixed ``output_size`` (int or (OH, OW)) whatever the input size."""

    def __init__(self, output_size):
        super().__init__()
        _check_output_size(self, output_size)
        self.output_size = output_size

    def forward(self, x):
        _check_input(self, x, (3, 4), shape_hint="(C, H, W) or (N, C, H, W)")
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(Module):
    """Max-pool to a fixed ``output_size`` (int or (OH, OW)) whatever the input size."""

    def __init__(self, output_size, return_indices=False):
        super().__init__()
        _check_output_size(self, output_size)
        check_flag("AdaptiveMaxPool2d: return_indices", return_indices)
        self.output_size = output_size
        self.return_indices = return_indices

    def forward(self, x):
        _check_input(self, x, (3, 4), shape_hint="(C, H, W) or (N, C, H, W)")
        return F.adaptive_max_pool2d(x, self.output_size, return_indices=self.return_indices)

    def extra_repr(self):
        return f"output_size={self.output_size}"


# ---- shape and elementwise ----------------------------------------------------------
class Flatten(Module):
    """Flatten dimensions ``start_dim`` .. ``end_dim``: (N, C, H, W) -> (N, C*H*W) by default."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = check_int("Flatten: start_dim", start_dim)
        self.end_dim = check_int("Flatten: end_dim", end_dim)

    @_tensor_input
    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class _InplaceFlagged(Module):
    """A layer without settings but PyTorch's ``inplace`` flag, which ported code passes:
    False, or a ValueError (see ``functional._check_inplace``)."""

    def __init__(self, inplace=False):
        super().__init__()
        F._check_inplace(type(self).__name__, inplace)


class ReLU(_InplaceFlagged):
    """y = max(x, 0)"""

    @_tensor_input
    def forward(self, x):
        return x.relu()


class LeakyReLU(Module):
    """y = x if x > 0 else negative_slope * x"""

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = check_number("LeakyReLU: negative_slope", negative_slope, low=None)
        F._check_inplace("LeakyReLU", inplace)

    @_tensor_input
    def forward(self, x):
        return x.leaky_relu(self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Tanh(Module):
    """y = tanh x"""

    @_tensor_input
    def forward(self, x):
        return x.tanh()


class Sigmoid(Module):
    """y = 1 / (1 + e^-x)"""

    @_tensor_input
    def forward(self, x):
        return x.sigmoid()


class Softmax(Module):
    """y = softmax(x) along ``dim``.

    Without ``dim`` (``dim=None``) an input of up to 2 dimensions is
    normalised along its last axis, which is what PyTorch's implicit choice
    gives there.  An input of more dimensions raises a ``ValueError``: pass
    ``dim`` explicitly.  PyTorch's deprecated implicit choice for such inputs
    is dim 1 for 4-D (the channels) but dim 0 for 3-D, and the last axis
    would be a third answer, so code ported from PyTorch that relies on it
    would silently normalise along another axis.
    """

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def _axis(self, x):
        if self.dim is not None:
            return self.dim
        if x.ndim > 2:
            raise ValueError(f"{type(self).__name__}() without dim got an input of shape "
                             f"{x.shape}; for inputs of more than 2 dimensions pass dim "
                             f"explicitly, e.g. {type(self).__name__}(dim=1) for the channels "
                             f"(PyTorch's implicit choice differs with the number of "
                             f"dimensions)")
        return -1

    @_tensor_input
    def forward(self, x):
        return x.softmax(axis=self._axis(x))

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """y = log_softmax(x) along ``dim`` (stable: x - logsumexp x).

    ``dim`` as for :class:`Softmax`: without it, up to 2 dimensions use the
    last axis and more dimensions raise a ``ValueError``.
    """

    @_tensor_input
    def forward(self, x):
        return x.log_softmax(axis=self._axis(x))


# ---- more activations: GELU, SiLU, Mish, the ELU family, Softplus, the hard ones -------------
# PyTorch's, with its arguments and reprs; each calls its op in tinygrad_cnn.functional
# (whose notes give the gradients at the kinks).  ``inplace`` is there for ported code:
# False, or a ValueError (see functional._check_inplace).


class GELU(Module):
    """y = x * Phi(x), Phi the standard normal CDF (``approximate='tanh'``: its tanh
    approximation, see :func:`tinygrad_cnn.functional.gelu`)"""

    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = F._check_gelu_approximate("GELU", approximate)

    @_tensor_input
    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class SiLU(_InplaceFlagged):
    """y = x * sigmoid(x)"""

    @_tensor_input
    def forward(self, x):
        return F.silu(x)


class Mish(_InplaceFlagged):
    """y = x * tanh(softplus(x))"""

    @_tensor_input
    def forward(self, x):
        return F.mish(x)


class ELU(Module):
    """y = x if x > 0 else alpha * (exp(x) - 1)"""

    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha = check_number("ELU: alpha", alpha, low=None)
        F._check_inplace("ELU", inplace)

    @_tensor_input
    def forward(self, x):
        return F.elu(x, self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class SELU(_InplaceFlagged):
    """y = scale * (x if x > 0 else alpha * (exp(x) - 1)), with alpha = 1.6732632... and
    scale = 1.0507009..."""

    @_tensor_input
    def forward(self, x):
        return F.selu(x)


class CELU(Module):
    """y = x if x > 0 else alpha * (exp(x / alpha) - 1)"""

    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha = F._check_nonzero("CELU: alpha", alpha)
        F._check_inplace("CELU", inplace)

    @_tensor_input
    def forward(self, x):
        return F.celu(x, self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class Softplus(Module):
    """y = log(1 + exp(beta * x)) / beta, or x where beta * x > threshold"""

    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta = F._check_nonzero("Softplus: beta", beta)
        self.threshold = check_number("Softplus: threshold", threshold, low=None)

    @_tensor_input
    def forward(self, x):
        return F.softplus(x, self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class Hardtanh(Module):
    """y = min(max(x, min_val), max_val)"""

    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False):
        super().__init__()
        name = type(self).__name__
        self.min_val = check_number(f"{name}: min_val", min_val, low=None)
        self.max_val = check_number(f"{name}: max_val", max_val, low=None)
        if self.min_val > self.max_val:
            raise ValueError(f"{name}: min_val ({self.min_val}) must not be greater than "
                             f"max_val ({self.max_val})")
        F._check_inplace(name, inplace)

    @_tensor_input
    def forward(self, x):
        return F.hardtanh(x, self.min_val, self.max_val)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}"


class ReLU6(Hardtanh):
    """y = min(max(x, 0), 6), a Hardtanh(0, 6) (as in PyTorch)"""

    def __init__(self, inplace=False):
        super().__init__(0.0, 6.0, inplace)

    def extra_repr(self):
        return ""


class Hardsigmoid(_InplaceFlagged):
    """y = min(max(x + 3, 0), 6) / 6"""

    @_tensor_input
    def forward(self, x):
        return F.hardsigmoid(x)


class Hardswish(_InplaceFlagged):
    """y = x * min(max(x + 3, 0), 6) / 6"""

    @_tensor_input
    def forward(self, x):
        return F.hardswish(x)


# Elementwise: nn.summary passes the receptive field through them.
_ACTIVATIONS = (GELU, SiLU, Mish, ELU, SELU, CELU, Softplus, Hardtanh, Hardsigmoid, Hardswish)


class Dropout(Module):
    """Zero each element with probability ``p`` in training, scaling the rest by 1/(1-p).

    In evaluation mode (``model.eval()``) it is the identity.  The mask is
    drawn on the host from the seeded generator.
    """

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        self.p = check_probability("Dropout: p", p)
        F._check_inplace("Dropout", inplace)

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


# ---- resampling, rearranging, patches and channel dropout -----------------------------
class Upsample(Module):
    """Resample ``(N, C, L)`` or ``(N, C, H, W)`` inputs to ``size`` or by
    ``scale_factor``: :func:`tinygrad_cnn.functional.interpolate` with these settings
    (``mode`` 'nearest', 'nearest-exact', 'linear', 'bilinear', 'bicubic' or 'area'), as
    PyTorch's ``nn.Upsample``.  The settings are checked here, the number of
    values in ``size`` or ``scale_factor`` at the first input.  The repr is
    PyTorch's, plus ``align_corners=True`` and ``recompute_scale_factor=True``
    where set (each changes the result; PyTorch shows neither)."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        F._interpolate_settings("Upsample", size, scale_factor, mode, align_corners,
                                recompute_scale_factor)
        self.size = size
        if isinstance(scale_factor, (tuple, list)):   # kept as floats, as PyTorch keeps them
            scale_factor = tuple(float(f) for f in scale_factor)
        self.scale_factor = None if scale_factor is None else (
            scale_factor if isinstance(scale_factor, tuple) else float(scale_factor))
        self.mode = mode
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, x):
        _check_input(self, x, (3, 4), shape_hint="(N, C, L) or (N, C, H, W)")
        return F.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners,
                             recompute_scale_factor=self.recompute_scale_factor)

    def extra_repr(self):
        s = (f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None
             else f"size={self.size!r}")
        s += f", mode={self.mode!r}"
        if self.align_corners:
            s += ", align_corners=True"
        if self.recompute_scale_factor:
            s += ", recompute_scale_factor=True"
        return s


class PixelShuffle(Module):
    """Channels into space, ``(*, C*r*r, H, W) -> (*, C, H*r, W*r)`` with r =
    ``upscale_factor`` (:func:`tinygrad_cnn.functional.pixel_shuffle`): after a
    convolution to C*r*r channels, the sub-pixel convolution's upsampling."""

    def __init__(self, upscale_factor):
        super().__init__()
        self.upscale_factor = check_int("PixelShuffle: upscale_factor", upscale_factor, low=1)

    @_tensor_input
    def forward(self, x):
        return F.pixel_shuffle(x, self.upscale_factor)

    def extra_repr(self):
        return f"upscale_factor={self.upscale_factor}"


class PixelUnshuffle(Module):
    """Space into channels, ``(*, C, H*r, W*r) -> (*, C*r*r, H, W)`` with r =
    ``downscale_factor``: the inverse of :class:`PixelShuffle`."""

    def __init__(self, downscale_factor):
        super().__init__()
        self.downscale_factor = check_int("PixelUnshuffle: downscale_factor", downscale_factor,
                                          low=1)

    @_tensor_input
    def forward(self, x):
        return F.pixel_unshuffle(x, self.downscale_factor)

    def extra_repr(self):
        return f"downscale_factor={self.downscale_factor}"


class Unfold(Module):
    """Every sliding window of ``(N, C, H, W)`` (or one ``(C, H, W)`` image) as a
    column, ``(N, C*KH*KW, L)``: :func:`tinygrad_cnn.functional.unfold` as a layer,
    with PyTorch's arguments and repr."""

    def __init__(self, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        _tuple(kernel_size, 2, "Unfold: kernel_size", 1)
        _tuple(dilation, 2, "Unfold: dilation", 1)
        _tuple(padding, 2, "Unfold: padding", 0)
        _tuple(stride, 2, "Unfold: stride", 1)
        self.kernel_size, self.dilation = kernel_size, dilation
        self.padding, self.stride = padding, stride

    def forward(self, x):
        _check_input(self, x, (3, 4), shape_hint="(C, H, W) or (N, C, H, W)")
        return F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, dilation={self.dilation}, "
                f"padding={self.padding}, stride={self.stride}")


class Fold(Module):
    """Columns ``(N, C*KH*KW, L)`` (or ``(C*KH*KW, L)``) added back into images of
    ``output_size``, overlaps summed: :func:`tinygrad_cnn.functional.fold` as a
    layer, with PyTorch's arguments and repr."""

    def __init__(self, output_size, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        _tuple(output_size, 2, "Fold: output_size", 1)
        _tuple(kernel_size, 2, "Fold: kernel_size", 1)
        _tuple(dilation, 2, "Fold: dilation", 1)
        _tuple(padding, 2, "Fold: padding", 0)
        _tuple(stride, 2, "Fold: stride", 1)
        self.output_size, self.kernel_size = output_size, kernel_size
        self.dilation, self.padding, self.stride = dilation, padding, stride

    def forward(self, x):
        _check_input(self, x, (2, 3), shape_hint="(C*KH*KW, L) or (N, C*KH*KW, L)")
        return F.fold(x, self.output_size, self.kernel_size, self.dilation, self.padding,
                      self.stride)

    def extra_repr(self):
        return (f"output_size={self.output_size}, kernel_size={self.kernel_size}, "
                f"dilation={self.dilation}, padding={self.padding}, stride={self.stride}")


class Dropout2d(Module):
    """Zero whole channels of ``(N, C, H, W)`` with probability ``p`` in training,
    scaling the rest by 1/(1-p) (:func:`tinygrad_cnn.functional.dropout2d`; a 3-D
    input is refused, see there); the identity in evaluation mode.  ``inplace=True``
    is refused, as for :class:`Dropout`."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        self.p = check_probability("Dropout2d: p", p)
        F._check_inplace("Dropout2d", inplace)

    def forward(self, x):
        return F.dropout2d(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


# ---- normalisation ------------------------------------------------------------------
class _BatchNorm(Module):
    """Batch normalisation over every axis but the channel axis 1.

    Training: normalise with the batch mean and biased variance, and update
    ``running = (1 - momentum) * running + momentum * batch`` (the running
    variance from the *unbiased* batch variance); ``momentum=None`` gives a
    cumulative average, 1/num_batches_tracked.  Evaluation: normalise with
    the running statistics.  With ``track_running_stats=False`` the batch
    statistics are used in both modes.  ``eps`` must be > 0.  ``affine``
    adds a learned scale ``weight`` (init 1) and shift ``bias`` (init 0) per
    channel.  An input on another device than the layer raises
    ``DeviceError`` and changes no state.  An empty batch gives an empty output
    and leaves the running statistics as they are, but training counts it in
    ``num_batches_tracked``, as PyTorch does.  The layer computes with the function
    behind :func:`tinygrad_cnn.functional.batch_norm` and adds its checks, the batch
    count and the cumulative average (whose momentum, 1/num_batches_tracked, stays on
    the device: the public op takes a number).
    """

    _ndims = (4,)
    _hint = "(N, {C}, H, W)"
    # PyTorch loads a state dict without the batch count (saved before it had one,
    # or by code that drops it) and keeps the layer's own.
    _optional_state = ("num_batches_tracked",)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=None, device=None):
        super().__init__()
        self.num_features = check_int(f"{type(self).__name__}: num_features", num_features, low=1)
        name = type(self).__name__
        if momentum is not None:   # None: a cumulative average
            momentum = check_number(f"{name}: momentum", momentum, high=1)
        # eps <= 0 gives NaN for a constant channel (0 / 0), or for a near-constant one
        # (a negative variance); PyTorch refuses it too, though only at a training step.
        self.eps = check_number(f"{name}: eps", eps, low=0, open_low=True)
        self.momentum = momentum
        self.affine = check_flag(f"{name}: affine", affine)
        self.track_running_stats = check_flag(f"{name}: track_running_stats",
                                              track_running_stats)
        C = self.num_features
        _register_affine(self, (C,), self.affine, True, dtype, device)
        if self.track_running_stats:
            dt = float32 if dtype is None else _as_dtype(dtype)
            self.register_buffer("running_mean", _filled((C,), 0, dt, device))
            self.register_buffer("running_var", _filled((C,), 1, dt, device))
            self.register_buffer("num_batches_tracked", _filled((), 0, int64, device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self):
        if self.track_running_stats:
            with self.running_mean._backend.context():
                self.running_mean.data[...] = 0
                self.running_var.data[...] = 1
                self.num_batches_tracked.data[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        _reset_affine(self)

    def forward(self, x):
        C = self.num_features
        _check_input(self, x, self._ndims, C, shape_hint=self._hint.format(C=C))  # and device
        _check_float_input(self, x)
        use_batch = self.training or not self.track_running_stats
        n = x.size // C                                 # values per channel
        # One value per channel has zero variance and normalises to 0: a silent
        # wrong answer, so refuse it whenever batch statistics are used (training,
        # or evaluation without running statistics), not only in training.
        if use_batch and n == 1:
            when = "when training" if self.training else "with track_running_stats=False"
            raise ValueError(f"{type(self).__name__}: expected more than 1 value per "
                             f"channel {when} (batch statistics are used), got input "
                             f"of shape {x.shape}")
        # An empty batch has no statistics: its (empty) output, with the running
        # statistics left as they are but the batch counted, as in PyTorch (so
        # momentum=None weighs the later batches as PyTorch's does).
        count, momentum = None, self.momentum
        if self.training and self.track_running_stats:
            with self.num_batches_tracked._backend.context():
                count = self.num_batches_tracked.data + 1
                if momentum is None:  # cumulative average; a device array, so no synchronisation
                    momentum = 1.0 / count.astype(self.running_mean.dtype)
        y = F._channel_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            use_batch, momentum, self.eps, per_sample=False)
        if count is not None:   # counted once the statistics are updated
            with self.num_batches_tracked._backend.context():
                self.num_batches_tracked.data[...] = count
        return y

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of images ``(N, C, H, W)``, per channel (see ``_BatchNorm``)."""


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of ``(N, C)`` features or ``(N, C, L)`` sequences, per channel."""

    _ndims = (2, 3)
    _hint = "(N, {C}) or (N, {C}, L)"


class _InstanceNorm(_BatchNorm):
    """Instance normalisation: each channel of each sample by the mean and biased
    variance of its own values along the ``_spatial`` trailing axes (see
    :func:`tinygrad_cnn.functional.instance_norm`), of a batch or of one unbatched
    sample; settings, parameters and buffers as ``_BatchNorm``'s, with PyTorch's
    defaults for these layers (see :class:`InstanceNorm2d`)."""

    _spatial = 2        # spatial axes of a sample
    _sample = "an image"   # what one sample is, for the errors

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, dtype=None, device=None, *, bias=True):
        name = type(self).__name__
        bias = check_flag(f"{name}: bias", bias)
        if momentum is None and track_running_stats is True:
            raise ValueError(f"{name}: momentum=None is not supported with "
                             f"track_running_stats=True (PyTorch's {name} never updates its "
                             f"running statistics with it); pass a number in [0, 1]")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype,
                         device)
        if self.affine and not bias:
            self.register_parameter("bias", None)

    def forward(self, x):
        C, k = self.num_features, self._spatial
        _check_input(self, x, self._ndims, C, channel_axis=-k - 1,
                     shape_hint=self._hint.format(C=C))                # and device
        _check_float_input(self, x)
        use_input_stats = self.training or not self.track_running_stats
        if use_input_stats and math.prod(x.shape[-k:]) == 1:
            raise ValueError(f"{type(self).__name__}: expected more than 1 value per channel "
                             f"of {self._sample} (its own statistics are used), got input of "
                             f"shape {x.shape}")
        unbatched = x.ndim == k + 1
        x = x.unsqueeze(0) if unbatched else x
        # momentum is None only without running statistics, where it is not used.
        y = F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            use_input_stats, 0.0 if self.momentum is None else self.momentum,
                            self.eps)
        return y.squeeze(0) if unbatched else y

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class InstanceNorm2d(_InstanceNorm):
    """Instance normalisation of images ``(N, C, H, W)``, or one image ``(C, H, W)``: each
    channel of each image by the mean and biased variance of its own H*W values (see
    :func:`tinygrad_cnn.functional.instance_norm`); settings, parameters and buffers
    as ``_BatchNorm``'s, with PyTorch's defaults for this layer.

    ``affine=False`` (default): no parameters; ``affine=True`` adds ``weight`` (init 1)
    and, unless ``bias=False`` (keyword only), ``bias`` (init 0) per channel.
    ``track_running_stats=False`` (default): no buffers, and each image's own
    statistics in training and evaluation alike.  With ``track_running_stats=True``,
    training updates ``running_mean`` and ``running_var`` with the batch's average of
    the per-image means and unbiased variances (``momentum`` as BatchNorm's) and
    evaluation normalises with them; ``num_batches_tracked`` stays 0, as in PyTorch,
    and ``momentum=None`` is refused (PyTorch's InstanceNorm never updates its
    statistics then).  Unlike PyTorch, which only warns without ``affine``, an input
    whose channel count is not ``num_features`` is refused.
    """

    _ndims = (3, 4)
    _hint = "({C}, H, W) or (N, {C}, H, W)"


class InstanceNorm1d(_InstanceNorm):
    """Instance normalisation of sequences ``(N, C, L)``, or one sequence ``(C, L)``: each
    channel of each sequence by the mean and biased variance of its own L values, as
    PyTorch's ``InstanceNorm1d``; settings, parameters, buffers and rules as
    :class:`InstanceNorm2d`'s (``affine``, ``bias``, ``track_running_stats``,
    ``momentum``), on one spatial axis.  A 2-D input is one unbatched sequence, as in
    PyTorch: ``(N, C)`` features have one value per channel and sample, which
    :class:`BatchNorm1d` normalises over the batch instead.
    """

    _ndims = (2, 3)
    _hint = "({C}, L) or (N, {C}, L)"
    _spatial = 1
    _sample = "a sequence"


class GroupNorm(Module):
    """Group normalisation of ``(N, C, ...)`` inputs: the ``num_channels`` channels split
    into ``num_groups`` groups of consecutive channels, each group of each sample
    normalised by the mean and biased variance of its values (see
    :func:`tinygrad_cnn.functional.group_norm`), in training and evaluation alike: no
    running statistics, so the result does not depend on the batch.

    ``num_groups`` must divide ``num_channels``.  ``affine`` adds a learned ``weight``
    (init 1) and, unless ``bias=False`` (keyword only, as in PyTorch), ``bias`` (init 0)
    per channel.  ``eps`` must be > 0.
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, dtype=None,
                 device=None, *, bias=True):
        super().__init__()
        name = type(self).__name__
        self.num_groups = check_int(f"{name}: num_groups", num_groups, low=1)
        self.num_channels = check_int(f"{name}: num_channels", num_channels, low=1)
        if self.num_channels % self.num_groups:
            raise ValueError(f"{name}: num_channels ({self.num_channels}) must be divisible "
                             f"by num_groups ({self.num_groups})")
        self.eps = check_number(f"{name}: eps", eps, low=0, open_low=True)
        self.affine = check_flag(f"{name}: affine", affine)
        bias = check_flag(f"{name}: bias", bias)
        _register_affine(self, (self.num_channels,), self.affine, bias, dtype, device)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, x):
        C = self.num_channels
        if not isinstance(x, Tensor):
            raise _not_a_tensor(self, x)
        if x.ndim < 2 or x.shape[1] != C:
            raise _shape_error(self, x, f"(N, {C}, *)")
        _check_device(self, x)
        _check_float_input(self, x)
        if C // self.num_groups * math.prod(x.shape[2:]) == 1:
            raise ValueError(f"{type(self).__name__}: expected more than 1 value per group, "
                             f"got input of shape {x.shape} (groups of one channel and no "
                             f"spatial extent: each value would normalise to 0)")
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine}, bias={self.bias is not None}")


class LayerNorm(Module):
    """Layer normalisation over the trailing ``normalized_shape`` axes of the input (see
    :func:`tinygrad_cnn.functional.layer_norm`), in training and evaluation alike: no
    running statistics.

    ``normalized_shape`` is an int or a sequence of ints, the last dimensions of the
    input: ``(C, H, W)`` normalises each image of ``(N, C, H, W)`` as a whole, ``W``
    each row of it.  ``elementwise_affine`` adds a learned ``weight`` (init 1) and,
    with ``bias``, a ``bias`` (init 0), each of shape ``normalized_shape``: one per
    element, not per channel.  ``eps`` must be > 0.  A ``normalized_shape`` of one
    element is refused (each input would normalise to 0).
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 dtype=None, device=None):
        super().__init__()
        name = type(self).__name__
        self.normalized_shape = shape = F._normalized_shape(name, normalized_shape)
        if math.prod(shape) == 1:
            raise ValueError(f"{name}: normalized_shape {shape} holds one value, which would "
                             f"normalise to 0 whatever it is; expected more than 1")
        self.eps = check_number(f"{name}: eps", eps, low=0, open_low=True)
        self.elementwise_affine = check_flag(f"{name}: elementwise_affine", elementwise_affine)
        bias = check_flag(f"{name}: bias", bias)
        _register_affine(self, shape, self.elementwise_affine, bias, dtype, device)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, x):
        shape = self.normalized_shape
        if not isinstance(x, Tensor):
            raise _not_a_tensor(self, x)
        if tuple(x.shape[x.ndim - len(shape):]) != shape:
            raise _shape_error(self, x, f"(*, {', '.join(map(str, shape))})")
        _check_device(self, x)
        _check_float_input(self, x)
        return F.layer_norm(x, shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")
