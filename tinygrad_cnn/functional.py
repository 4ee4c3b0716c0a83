"""The functional API of the CNN primitives: ``import tinygrad_cnn.functional as F``.

Arguments, shapes and output sizes follow PyTorch's ``torch.nn.functional``
(NCHW images, or one unbatched CHW image, which gives a result without the
batch axis; conv weights (OC, C/groups, KH, KW)).

Three ways for a neuron to see its input
----------------------------------------
* A **fully-connected** neuron sees the whole input: ``linear(x, w)`` is
  ``x @ w.T``, one weight per input element and output neuron.
* A **convolutional** neuron sees a small window of the image (its local
  receptive field), and all neurons of one feature map *share* one set of
  weights: the same filter slides over every position.
* A **locally-connected** neuron keeps the small window but drops the
  sharing: every output position has its own filter (``local2d``).

All three are matrix products once the windows are cut out.  ``unfold``
copies every window into a column: ``cols = unfold(x)`` has shape
``(N, C*KH*KW, L)``, one column per output position ``l``.  Then

* ``conv2d``:  ``y[n, :, l] = w.reshape(OC, -1) @ cols[n, :, l]`` - one
  matrix for every ``l`` (shared weights);
* ``local2d``: ``y[n, :, l] = w[:, l].reshape(OC, -1) @ cols[n, :, l]`` -
  one matrix per ``l``;
* ``linear`` is the case where the window is the whole input (``L = 1``).

``local2d`` below is written exactly like that.  ``conv2d`` computes the same
product (``test_conv2d_equals_unfold_matmul`` checks it), but as one large
GEMM (BLAS's name for a general matrix-matrix product) over all images,
with the columns in a layout that is cheaper to build (see
:mod:`tinygrad_cnn.conv_arrays`), so it can keep pace with PyTorch.

Where to read: skip the argument checks that open the file; start at
``Unfold`` and ``Fold``, then ``linear`` and ``local2d`` (the idea in a few
lines each), then ``Conv2d`` with ``_correlate`` (its forward on arrays) and
the two ops its backward is made of, ``ConvTranspose2d`` and
``Conv2dWeight``; pooling follows, then the normalisation ops (``batch_norm``,
``layer_norm``, ...), compositions of tensor ops, except batch_norm in training:
one Function, ``BatchNorm``, for speed.

Gradients
---------
Every backward here is made of differentiable ops, so gradients of
gradients work (``create_graph=True``):

* conv2d's input gradient is ``conv_transpose2d`` (its adjoint), its weight
  gradient a correlation of the input with the output gradient
  (:class:`Conv2dWeight`); the backward of each of the three is made of the
  other two;
* ``unfold`` and ``fold`` are each other's adjoint, so each is the other's
  backward;
* max pooling's backward scatters the gradient to the first maximum of each
  window; the backward of that scatter is the matching gather;
* average pooling's backward spreads the gradient over each window, and the
  backward of that is average pooling again;
* batch_norm's (training) input gradient is :class:`BatchNormGrad`, whose
  gradient for the upstream gradient is itself (the Jacobian of the
  normalisation is symmetric), and for x a closed form in tensor ops.
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np

from ._checks import (
    as_scalar, check_finite, check_flag, check_int, check_ints, check_number, check_probability,
    int_list, is_int, no_stride, shown_value)
from .autograd import Function, is_grad_enabled
from .conv_arrays import (
    ConvGeometry, adaptive_avg_adjoint_array, adaptive_avg_array, adaptive_max_array, as_blocks,
    as_nchw, avg_pool_divisor, backend_kernel, batch_chunks, batch_norm_array,
    batch_norm_grad_array, batch_norm_sums_array, choose_layout, contiguous,
    conv_geometry, depthwise_conv_array, depthwise_pays, depthwise_transpose_array,
    depthwise_weight_array, fold_array, from_rows, gelu_array, gelu_grad_array, get_im2col_limit,
    im2col_bytes, in_order_of, index_gather_array, index_scatter_array, is_batch_last,
    is_depthwise, max_pool_array, max_pool_gather_array, max_pool_indices, max_pool_scatter_array,
    pair, pool_geometry, resample_axis_array, resample_map, same_padding, set_im2col_limit,
    shape_str, sum_pool_adjoint_array, sum_pool_array, to_rows, unfold_array)
from .tensor import Tensor, _norm_axis, check_devices, get_rng, where, zeros_like

__all__ = [
    "unfold", "fold", "linear", "local2d", "conv2d", "conv_transpose2d", "conv1d",
    "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "max_pool1d",
    "avg_pool1d", "batch_norm", "instance_norm", "layer_norm", "group_norm", "interpolate",
    "pixel_shuffle", "pixel_unshuffle", "relu", "leaky_relu", "sigmoid", "tanh", "softmax",
    "log_softmax", "gelu", "silu", "mish", "elu", "selu", "celu", "softplus", "hardtanh",
    "relu6", "hardsigmoid", "hardswish", "dropout", "dropout2d", "pad", "flatten", "normalize",
    "cosine_similarity", "one_hot", "set_im2col_limit", "get_im2col_limit",
]
# The losses, where torch.nn.functional has them (see __getattr__).
_LOSSES = ("cross_entropy", "nll_loss", "mse_loss", "l1_loss", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "smooth_l1_loss", "huber_loss", "kl_div")
__all__ += _LOSSES


def __getattr__(name):
    """``F.cross_entropy`` and the other losses, where PyTorch users look for them; they
    live in :mod:`tinygrad_cnn.nn.losses` (imported here on first use: nn's layers are
    built on this module)."""
    if name in _LOSSES:
        from .nn import losses
        return getattr(losses, name)
    if name in _UPSAMPLE_ALIASES:   # resampling
        raise _upsample_alias_error(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---- argument checks ----------------------------------------------------------------
def _check_inplace(op, inplace):
    """PyTorch's ``inplace`` flag, which ported code often sets: False, or an error.

    Every op here returns a new tensor and leaves its input as it is (autograd
    may need it for the backward), so ``inplace=True`` cannot be honoured;
    ignoring it would leave code that relies on the input being overwritten
    silently wrong."""
    if check_flag("inplace", inplace, op):
        raise ValueError(f"{op}: inplace=True is not supported (every op here returns a new "
                         f"tensor and leaves its input unchanged); drop the argument: the "
                         f"result is the same")


def _check_tensor(op, name, t, ndim, layout, sized=0):
    """t is a float Tensor of ``ndim`` dimensions (an int, or a pair for the ops that
    also take one unbatched sample), the last ``sized`` of them non-empty (the
    spatial ones of an input, a weight's kernel)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if t.ndim not in ndims:
        raise ValueError(f"{op}: expected {name} of shape {layout} "
                         f"({' or '.join(map(str, ndims))} dimensions), "
                         f"got shape {shape_str(t.shape)}")
    if t.dtype.kind != "f":
        raise TypeError(f"{op}: {name} has dtype {t.dtype}; expected a float dtype "
                        f"(float32 or float64: convert with {name}.float())")
    if sized and min(t.shape[-sized:]) < 1:
        dims = layout.strip("()").split(", ")[-sized:]
        raise ValueError(f"{op}: {name} of shape {shape_str(t.shape)} is empty along "
                         f"{', '.join(d for d, n in zip(dims, t.shape[-sized:]) if n < 1)}; "
                         f"expected {name} of shape {layout} with {', '.join(dims)} >= 1")
    return t.shape


# PyTorch's conv and pooling ops also take one sample without the batch axis,
# (C, H, W) for the 2-d ones and (C, L) for the 1-d ones.  Such an x runs as a
# batch of one, and the result loses the batch axis again: the Functions
# below only ever see batches.
_IMAGES = "(C, H, W) or (N, C, H, W)"
_SEQUENCES = "(C, L) or (N, C, L)"


def _batch_of_one(x, ndim):
    """(x, False) if x has ``ndim`` dimensions (a batch), else (x with a batch axis of
    one in front, True)."""
    if x.ndim == ndim:
        return x, False
    return x.unsqueeze(0), True


def _unbatch(out, added):
    """``out`` (a Tensor, or a tuple such as (y, indices)) without the batch axis that
    :func:`_batch_of_one` ``added``."""
    if not added:
        return out
    if isinstance(out, tuple):
        return tuple(t.squeeze(0) for t in out)
    return out.squeeze(0)


def _check_bias(op, b, shape, float_only=True):
    """b is None or a Tensor of ``shape``; of a float dtype if ``float_only`` (the ops
    whose x and w must be float: an integer bias would only make a float32 result
    float64).  linear, which also computes in integers, checks its dtypes itself."""
    if b is None:
        return
    if not isinstance(b, Tensor):
        raise TypeError(f"{op}: b must be a Tensor or None, got {type(b).__name__}")
    if float_only and b.dtype.kind != "f":
        raise TypeError(f"{op}: b of shape {shape_str(b.shape)} has dtype {b.dtype}; expected "
                        f"a float dtype (float32 or float64)")
    if tuple(b.shape) != tuple(shape):
        raise ValueError(f"{op}: b has shape {shape_str(b.shape)} but the output has "
                         f"{shape[0]} channels; expected b of shape {shape_str(shape)}")


def _check_groups(op, groups):
    if type(groups) is int and groups >= 1:   # the common case, without the call
        return groups
    return check_int(f"{op}: groups", groups, low=1)


def _takes_tensor(alias):
    """For the thin aliases of Tensor methods: an ``x`` that is not a Tensor (an array,
    a list) gets a TypeError naming the op, not an AttributeError from inside."""
    @functools.wraps(alias)
    def checked(x, *args, **kwargs):
        if not isinstance(x, Tensor):
            raise TypeError(f"{alias.__name__}: x must be a Tensor, got {type(x).__name__}")
        return alias(x, *args, **kwargs)
    return checked


def _conv_padding(op, padding, kernel, dilation, stride):
    """PyTorch conv padding (int, pair, "valid", "same") -> ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            if stride != (1, 1):
                shown = stride[1] if op.endswith("1d") else stride   # a 1-D op's own stride
                raise ValueError(f"{op}: padding='same' needs stride 1 (the output size "
                                 f"would not equal the input size otherwise), got "
                                 f"stride {shown}")
            return same_padding(kernel, dilation)
        raise ValueError(f"{op}: padding must be an int, a pair of ints, 'valid' or "
                         f"'same', got {padding!r}")
    ph, pw = pair(op, "padding", padding, 0)
    return (ph, ph), (pw, pw)


def _operands(*arrays):
    """The arrays in their common float dtype (float32 with float64 -> float64)."""
    dtype = np.result_type(*(a.dtype for a in arrays if a is not None))
    return [a if a is None or a.dtype == dtype else a.astype(dtype) for a in arrays]


def _promoted(*tensors):
    """Float tensors (or None) in their common dtype, cast differentiably: one float64
    operand makes the whole op float64, with no products rounded to float32 on the way
    (as conv2d computes); each gradient comes back in its input's dtype."""
    dtypes = {t.dtype for t in tensors if t is not None}
    if len(dtypes) < 2 or any(d.kind != "f" for d in dtypes):
        return tensors
    dtype = np.result_type(*dtypes)
    return tuple(t if t is None else t.astype(dtype) for t in tensors)


def _check_linear(x, w, b):
    """linear's operands: Tensors x (..., in) and w (out, in), b None or (out,)."""
    if not isinstance(x, Tensor) or not isinstance(w, Tensor):
        raise TypeError("linear: x and w must be Tensors")
    if w.ndim != 2 or x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"linear: x of shape {shape_str(x.shape)} and w of shape "
                         f"{shape_str(w.shape)} do not fit; expected x (..., in) and w "
                         f"(out, in) with the same 'in'")
    _check_bias("linear", b, (w.shape[0],), float_only=False)
    check_devices("linear", x, ("w", w), ("b", b))
    _check_linear_dtypes(x, w, b)


def _check_linear_dtypes(x, w, b):
    """x, w and b (if given) all float or all integer (bools count as integers).  Mixed,
    the result's dtype would depend on NumPy's promotion of the pair (int64 with float32:
    float64; an int8 x with float32 w: float32), not on the float operands' dtype;
    PyTorch refuses such a mix too."""
    operands = [("x", x), ("w", w)] + ([] if b is None else [("b", b)])
    if len({t.dtype.kind == "f" for _, t in operands}) > 1:
        shown = ", ".join(f"{name} of shape {shape_str(t.shape)}, dtype {t.dtype}"
                          for name, t in operands)
        raise TypeError(f"linear: mixed float and integer operands: {shown}; expected all "
                        f"float or all integer (convert the integer ones with .float())")


def _local2d_geometry(x, w, b, stride, padding, dilation):
    """local2d's windows, once x ((N,) C, H, W), w (OC, OH, OW, C, KH, KW) and b (None
    or (OC, OH, OW)) are checked to fit them."""
    C = _check_tensor("local2d", "x", x, (3, 4), _IMAGES, sized=2)[-3]
    OC, WH, WW, WC, KH, KW = _check_tensor("local2d", "w", w, 6, "(OC, OH, OW, C, KH, KW)",
                                           sized=2)
    if WC != C:
        raise ValueError(f"local2d: x of shape {shape_str(x.shape)} has {C} channels but w "
                         f"of shape {shape_str(w.shape)} expects {WC} (w is (OC, OH, OW, C, "
                         f"KH, KW))")
    geom = _unfold_geometry("local2d", x.shape, (KH, KW), dilation, padding, stride)
    OH, OW = geom.OH, geom.OW
    if (WH, WW) != (OH, OW):
        raise ValueError(f"local2d: w of shape {shape_str(w.shape)} has filters for a "
                         f"{WH}x{WW} output, but x of shape {shape_str(x.shape)} with kernel "
                         f"{KH}x{KW}, stride {stride}, padding {padding} and dilation "
                         f"{dilation} gives a {OH}x{OW} output")
    _check_bias("local2d", b, (OC, OH, OW))
    check_devices("local2d", x, ("w", w), ("b", b))
    return geom


# ---- patches: unfold and fold ----------------------------------------------------------
class Unfold(Function):
    """cols[n, c*KH*KW + i*KW + j, oh*OW + ow] = x_padded[n, c, oh*sh + i*dh, ow*sw + j*dw]"""

    def forward(self, x, geom):
        self.geom = geom
        cols = unfold_array(self.backend, x, geom, "nkl")       # (N, C*KH*KW, L)
        # A 1x1 kernel (or one window covering the unpadded input) gives a view
        # of x; the result is a tensor of its own, as torch.nn.functional.unfold's.
        return cols.copy() if self.xp.may_share_memory(cols, x) else cols

    def backward(self, grad_out):
        return Fold.apply(grad_out, geom=self.geom, channels=self.inputs[0].shape[1])


class Fold(Function):
    """y = the adjoint of unfold: every column entry added back to its input position"""

    def forward(self, cols, geom, channels):
        self.geom = geom
        N, K, L = cols.shape
        if not self.backend.cache_blocking or choose_layout(N, geom, K, host=False) != "kln":
            return fold_array(self.backend, cols, geom, N, channels, "nkl")
        # Short output rows, in NumPy: fold_array's adds run along rows of OW
        # elements per image, or of OW*N with the batch innermost; a copy
        # into that layout (chunk by chunk, within the im2col limit) costs
        # less than the difference.
        y = self.xp.empty((N, channels, geom.H, geom.W), dtype=cols.dtype)
        for lo, hi in batch_chunks(self.backend, N, K * L * cols.itemsize):
            part = contiguous(self.backend, cols[lo:hi].transpose(1, 2, 0))  # (K, L, n)
            fold_array(self.backend, part.reshape(K, L * (hi - lo)), geom, hi - lo, channels,
                       "kln", out=y[lo:hi])                  # kln columns (K, L*n)
        return y

    def backward(self, grad_out):
        return Unfold.apply(grad_out, geom=self.geom)


def _unfold_geometry(op, x_shape, kernel_size, dilation, padding, stride, over=None):
    kernel = pair(op, "kernel_size", kernel_size, 1)
    ph, pw = pair(op, "padding", padding, 0)
    return conv_geometry(op, x_shape, kernel, pair(op, "stride", stride, 1),
                         ((ph, ph), (pw, pw)), pair(op, "dilation", dilation, 1), over=over)


def unfold(x, kernel_size, dilation=1, padding=0, stride=1):
    """Cut every sliding window of x into a column: (N, C, H, W) -> (N, C*KH*KW, L).

    Row ``c*KH*KW + i*KW + j`` of the result holds channel c at kernel offset
    (i, j); column ``l = oh*OW + ow`` is the window of output position
    (oh, ow).  One image (C, H, W) gives (C*KH*KW, L).  As
    ``torch.nn.functional.unfold`` (im2col).
    """
    shape = _check_tensor("unfold", "x", x, (3, 4), _IMAGES, sized=2)
    geom = _unfold_geometry("unfold", shape, kernel_size, dilation, padding, stride)
    x, unbatched = _batch_of_one(x, 4)
    return _unbatch(Unfold.apply(x, geom=geom), unbatched)


def fold(cols, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """The adjoint of :func:`unfold` (col2im): (N, C*KH*KW, L) -> (N, C, H, W),
    where ``(H, W) = output_size`` and entries of overlapping windows are summed.
    The columns of one image (C*KH*KW, L) give (C, H, W), as in PyTorch."""
    shape = _check_tensor("fold", "cols", cols, (2, 3), "(C*KH*KW, L) or (N, C*KH*KW, L)")
    rows, windows = shape[-2:]
    H, W = pair("fold", "output_size", output_size, 1)
    KH, KW = pair("fold", "kernel_size", kernel_size, 1)
    if rows % (KH * KW):
        raise ValueError(f"fold: cols of shape {shape_str(shape)} have {rows} rows, "
                         f"not a multiple of the kernel size {KH}*{KW} = {KH * KW} "
                         f"(expected C*KH*KW rows)")
    C = rows // (KH * KW)
    # The windows lie in the output: errors name output_size, not an input x.
    geom = _unfold_geometry("fold", shape[:-2] + (C, H, W), (KH, KW), dilation, padding, stride,
                            over=f"output_size {(H, W)}")
    if windows != geom.OH * geom.OW:
        raise ValueError(f"fold: cols of shape {shape_str(shape)} hold {windows} windows, "
                         f"but output_size {(H, W)} with kernel {(KH, KW)}, dilation "
                         f"{dilation}, padding {padding} and stride {stride} has "
                         f"{geom.OH}x{geom.OW} = {geom.OH * geom.OW}")
    cols, unbatched = _batch_of_one(cols, 3)
    return _unbatch(Fold.apply(cols, geom=geom, channels=C), unbatched)


# ---- three layers on one unfold -------------------------------------------------------
def linear(x, w, b=None):
    """y = x @ w.T + b: every output neuron sees the whole input.

    x (..., in), w (out, in), b (out,) -> (..., out); any number of leading
    batch dimensions (none for a single vector).
    """
    _check_linear(x, w, b)
    x, w, b = _promoted(x, w, b)
    lead = x.shape[:-1]
    # One GEMM over all leading dimensions: (batch, in) @ (in, out).
    y = x.reshape(-1, x.shape[-1]) @ w.T if x.ndim != 2 else x @ w.T
    if b is not None:
        y = y + b
    return y.reshape(lead + (w.shape[0],))                       # (..., out)


def local2d(x, w, b=None, stride=1, padding=0, dilation=1):
    """Locally-connected layer: a convolution whose filters are NOT shared.

    x (N, C, H, W), w (OC, OH, OW, C, KH, KW), b (OC, OH, OW) -> (N, OC, OH, OW):
    output position (oh, ow) applies its own filter ``w[:, oh, ow]`` to its
    window.  Built as ``unfold`` and one batched matrix product over the L =
    OH*OW positions (no loop over positions), so it differentiates to any order.
    One image x (C, H, W) gives (OC, OH, OW), as :func:`conv2d` and
    :func:`unfold` do (PyTorch has no local2d).
    """
    geom = _local2d_geometry(x, w, b, stride, padding, dilation)   # checks x, w and b
    x, unbatched = _batch_of_one(x, 4)
    (N, C), OC = x.shape[:2], w.shape[0]
    KH, KW, OH, OW = geom.KH, geom.KW, geom.OH, geom.OW
    x, w, b = _promoted(x, w, b)
    L = OH * OW
    cols = Unfold.apply(x, geom=geom)                        # (N, C*KH*KW, L)
    patches = cols.permute(2, 0, 1)                          # (L, N, C*KH*KW)
    filters = w.reshape(OC, L, C * KH * KW).permute(1, 2, 0)  # (L, C*KH*KW, OC): one per l
    y = patches @ filters                                    # (L, N, OC)
    y = y.permute(1, 2, 0).reshape(N, OC, OH, OW)            # (N, OC, L) -> (N, OC, OH, OW)
    return _unbatch(y if b is None else y + b, unbatched)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation, as in every deep-learning library).

    x (N, C, H, W), w (OC, C/groups, KH, KW), b (OC,) -> (N, OC, OH, OW) with
    ``OH = (H + 2*ph - dh*(KH-1) - 1) // sh + 1`` (likewise OW).  ``stride``,
    ``padding`` and ``dilation`` are ints or (h, w) pairs; ``padding`` may also be
    ``"valid"`` (0) or ``"same"`` (stride 1 only; output size = input size, the
    odd padding of an even kernel goes bottom/right, as PyTorch).  With
    ``groups`` > 1 the channels split into groups convolved separately
    (``groups == C``: depthwise).  One image x (C, H, W) gives (OC, OH, OW),
    as in PyTorch.

    It is ``w.reshape(OC, -1) @ unfold(x)``, computed per group as one GEMM per
    image or one GEMM over all images, whichever column layout is cheaper
    (:func:`tinygrad_cnn.conv_arrays.choose_layout`).  Memory: with
    ``P = N*OH*OW`` and ``K = C*KH*KW``, forward and backward allocate two
    im2col-sized buffers of about ``K*P`` elements beyond inputs, outputs and
    gradients - the columns, kept for the weight gradient, and the columns of
    the input gradient (before ``fold``, or of the output gradient for a
    stride-1 "same" convolution) - plus a few arrays the size of x or y.
    When one buffer would exceed :func:`get_im2col_limit` bytes, the batch is
    processed in chunks of ``max(1, limit // (K * OH*OW * itemsize))`` images
    (the columns are then rebuilt for the weight gradient rather than kept).
    On the CPU a chunk holds at most 16 MiB of columns (64 MiB if x is a
    batch-last convolution output; one image's, if more), so that its GEMM
    reads them from cache (:func:`tinygrad_cnn.conv_arrays.batch_chunks`);
    with the per-image column layout the chunks then write into slices of
    one buffer for the batch, kept for the weight gradient, when that buffer
    stays within the limit (not for a 1x1 kernel at stride 1 without padding,
    whose columns are views of x).

    Depthwise convolutions (``groups == C``, one output per channel) with
    kernels of 5x5 or more at stride 1, or 7x7 or more with a stride, skip
    im2col: forward, input gradient and weight gradient are loops of
    multiply-adds over the kernel offsets, on strided slices of the padded
    input (no columns, no memory beyond a padded copy of x and y), mostly
    0.25-0.9x im2col's time for those kernels, where im2col's KH*KW copies of
    x outgrow the caches.  3x3 kernels, and several outputs per channel, are
    as fast or faster through im2col and stay there
    (:func:`tinygrad_cnn.conv_arrays.depthwise_pays`; "Depthwise
    convolutions" in :mod:`tinygrad_cnn.conv_arrays`).
    """
    _check_tensor("conv2d", "x", x, (3, 4), _IMAGES, sized=2)
    _check_tensor("conv2d", "w", w, 4, "(OC, C/groups, KH, KW)", sized=2)
    x_shown, (x, unbatched) = x.shape, _batch_of_one(x, 4)
    return _unbatch(_conv2d("conv2d", x, w, b, stride, padding, dilation, groups, x_shown,
                            w.shape), unbatched)


def _conv2d(op, x, w, b, stride, padding, dilation, groups, x_shown, w_shown):
    """conv2d on 4-D x and w; error messages show the caller's shapes (1-D ops: 3-D,
    unbatched ones one dimension less)."""
    N, C, H, W = x.shape
    OC, CG, KH, KW = w.shape
    groups = _check_groups(op, groups)
    if C != CG * groups:
        raise ValueError(f"{op}: x of shape {shape_str(x_shown)} has {C} channels but w "
                         f"of shape {shape_str(w_shown)} with groups={groups} expects "
                         f"{CG}*{groups} = {CG * groups}")
    if OC % groups:
        raise ValueError(f"{op}: w of shape {shape_str(w_shown)} has {OC} output channels, "
                         f"which groups={groups} does not divide")
    stride = pair(op, "stride", stride, 1)
    dilation = pair(op, "dilation", dilation, 1)
    pads = _conv_padding(op, padding, (KH, KW), dilation, stride)
    geom = conv_geometry(op, x.shape, (KH, KW), stride, pads, dilation, shown=x_shown)
    _check_bias(op, b, (OC,))
    check_devices(op, x, ("w", w), ("b", b))
    return Conv2d.apply(x, w, *([] if b is None else [b]), geom=geom, groups=groups)


def _layout(backend, chunks, geom, K, a):
    """The column layout for a convolution over ``chunks`` of the batch that reads
    ``a`` (x, or the output gradient) in columns' order: one for all chunks.
    A batch-last ``a`` asks for ``kln`` only when it is one chunk: gathering a
    chunk of the batch out of it takes a slow strided copy per chunk."""
    if not chunks:
        return None
    lo, hi = chunks[0]
    return choose_layout(hi - lo, geom, K, len(chunks) == 1 and is_batch_last(a),
                         backend.cache_blocking)


def _correlate(backend, x, w, b, geom, groups, keep=False):
    """conv2d on arrays: (y, cols, layout), one GEMM per group and chunk.

    ``cols`` are the columns of all of x when the batch was not chunked, or
    when ``keep`` asks for them (for the weight gradient) and the per-image
    layout lets the chunks write into slices of one buffer within the
    im2col limit (except columns that are views of x); else None.  With the
    ``kln`` layout on the host, in one chunk, y is batch-last, as the GEMM
    wrote it (see "Batch-last arrays" in :mod:`tinygrad_cnn.conv_arrays`).
    """
    xp = backend.xp
    N, C = x.shape[:2]
    OC, K, L = w.shape[0], C * geom.KH * geom.KW, geom.OH * geom.OW
    if is_depthwise(C, groups) and depthwise_pays(backend, N, C, OC // C, geom):
        return depthwise_conv_array(backend, x, w, geom, b), None, None
    w_groups = w.reshape(groups, OC // groups, K // groups)              # (G, OC/G, K/G)
    chunks = batch_chunks(backend, N, im2col_bytes(C, geom, x.itemsize), is_batch_last(x))
    # One layout for all chunks, so that y has one memory order.
    layout = _layout(backend, chunks, geom, K, x)
    if layout != "kln":
        x = as_nchw(backend, x)   # once, not chunk by chunk
    y_shape = (N, OC, geom.OH, geom.OW)
    # On the host a kln GEMM's output stays as it is (batch-last); a GPU
    # backend's own kernels read NCHW, and get y copied into it once.
    if layout == "kln" and backend.cache_blocking and len(chunks) == 1:
        y = None              # the GEMM's output itself, below
    else:
        y = xp.empty(y_shape, dtype=x.dtype)
    bias_in_gemm = ((layout == "nkl" or (layout == "kln" and K < 64)) and b is not None
                    and groups == 1 and backend_kernel(backend, "im2col", x.dtype) is None)
    # Chunks of the per-image layout can write their columns into slices of one
    # buffer for the whole batch: each chunk's GEMM still reads its columns
    # while they are in cache, and the weight gradient needs no second im2col.
    # Not for a 1x1 kernel at stride 1 without padding: its columns are views
    # of x, which the weight gradient takes again for free, where the buffer
    # would hold a copy of x until the backward.
    whole = None
    pointwise = (geom.KH, geom.KW, geom.sh, geom.sw) == (1, 1, 1, 1) and not geom.padded
    if (keep and layout == "nkl" and len(chunks) > 1 and not pointwise
            and N * im2col_bytes(C, geom, x.itemsize) <= get_im2col_limit()):
        whole = xp.empty((N, K + bias_in_gemm, L), dtype=x.dtype)      # (N, K[+1], L)
    if bias_in_gemm:
        w_b = xp.concatenate([w.reshape(OC, K), b.reshape(OC, 1)], axis=1)  # (OC, K+1)
    cols = None               # stays None for an empty batch
    # Per chunk: columns, then one GEMM per group (the else branch below).  The
    # first branch is the same GEMM with the bias moved into it.
    for lo, hi in chunks:
        cols = blocks = None  # drop the previous chunk's columns before making the next
        if bias_in_gemm:
            # The bias in the GEMM (w gets b as a last column, the columns a
            # row of ones): adding it to y afterwards is one more pass over
            # y, and for nkl one over rows of only OH*OW.  (A backend's own
            # im2col makes its own buffer, which would then be copied: those
            # take the general path.)
            if layout == "nkl":   # one product per image, written straight into NCHW y
                ones = (xp.empty((hi - lo, K + 1, L), dtype=x.dtype) if whole is None
                        else whole[lo:hi])                              # (N, K+1, L)
                ones[:, K] = 1
                cols = unfold_array(backend, x[lo:hi], geom, layout, out=ones[:, :K])
                xp.matmul(w_b, ones, out=y[lo:hi].reshape(hi - lo, OC, L))  # (N, OC, L)
                continue
            ones = xp.empty((K + 1, L * (hi - lo)), dtype=x.dtype)      # (K+1, P)
            ones[K] = 1
            cols = unfold_array(backend, x[lo:hi], geom, layout, out=ones[:K])
            rows = (w_b @ ones).reshape(1, OC, L * (hi - lo))           # (1, OC, P)
        else:
            cols = unfold_array(backend, x[lo:hi], geom, layout,
                                out=None if whole is None else whole[lo:hi])
            blocks = as_blocks(cols, layout)                            # (B, K, P)
            B, _, P = blocks.shape
            blocks = blocks.reshape(B, groups, K // groups, P)          # (B, G, K/G, P)
            if layout == "nkl":   # one product per image, written straight into NCHW y
                xp.matmul(w_groups, blocks,
                          out=y[lo:hi].reshape(B, groups, -1, P))      # (B, G, OC/G, P)
                if b is not None:
                    y[lo:hi] += b.reshape(1, OC, 1, 1)
                continue
            rows = (w_groups @ blocks).reshape(B, OC, P)                # (1, OC, P)
            if b is not None:   # long rows here, short ones in y
                rows += b.reshape(1, OC, 1)
        if y is None:   # y is the GEMM's output itself: (OC, OH, OW, N) memory
            y = xp.moveaxis(rows.reshape(OC, geom.OH, geom.OW, N), -1, 0)  # (N, OC, OH, OW)
        else:
            from_rows(backend, rows, hi - lo, geom.OH, geom.OW, layout,
                      out=y[lo:hi])                                     # (N, OC, OH, OW)
    if whole is not None:
        return y, whole[:, :K], layout                                  # (N, K, L)
    return y, cols if len(chunks) == 1 else None, layout


class Conv2d(Function):
    """y[n, o] = sum_c w[o, c] * x[n, c] (cross-correlation) + b[o]: per group, the GEMM
    w (OC, C*KH*KW) @ unfold(x) (C*KH*KW, columns)"""

    @classmethod
    def apply(cls, x, w, *b, geom, groups):
        # The weight gradient needs the very columns the forward builds;
        # keeping them when it will be asked for saves one im2col in backward.
        keep_cols = is_grad_enabled() and w.requires_grad
        return super().apply(x, w, *b, geom=geom, groups=groups, keep_cols=keep_cols)

    def forward(self, x, w, b=None, *, geom, groups, keep_cols):
        x, w, b = _operands(x, w, b)
        self.geom, self.groups, self.cols, self.layout = geom, groups, None, None
        y, cols, layout = _correlate(self.backend, x, w, b, geom, groups, keep=keep_cols)
        if keep_cols and cols is not None:
            self.cols, self.layout = cols, layout
        return y

    def backward(self, grad_out):
        x, w = self.inputs[:2]
        grad_x = grad_w = grad_b = None
        rows = None   # both products read grad_out in the columns' layout: lay it out once
        if (x.requires_grad and w.requires_grad and self.layout in ("knl", "kln")
                and _flipped_geometry(self.geom, x.shape[1], w.shape[0]) is None):
            rows = to_rows(self.backend, grad_out.data, self.layout)    # (1, OC, P)
        if x.requires_grad:
            grad_x = ConvTranspose2d.apply(grad_out, w, geom=self.geom, groups=self.groups,
                                           rows=rows, layout=self.layout)
        if w.requires_grad:
            grad_w = Conv2dWeight.apply(x, grad_out, geom=self.geom, groups=self.groups,
                                        cols=self.cols, layout=self.layout, rows=rows)
        if len(self.inputs) == 3 and self.inputs[2].requires_grad:
            grad_b = grad_out.sum(axis=(0, 2, 3))
        return grad_x, grad_w, grad_b


def _flipped_geometry(geom, C, OC):
    """For stride 1, the transposed conv of a conv2d from C to OC channels is a
    correlation with the flipped kernel over its input padded by dilation*(k-1) -
    padding.  That does the GEMM work of the fold route without fold's
    scatter-adds, but its columns hold OC*H*W per kernel offset and image where
    the fold route's hold C*OH*OW.  Where they are no larger (a "same"
    convolution that does not widen the channels, or a narrowing one): its
    geometry, else None.  Measured, it is then also the faster route; at twice
    the columns the two take about the same time, and fold wins beyond."""
    if (geom.sh, geom.sw) != (1, 1) or OC * geom.H * geom.W > C * geom.OH * geom.OW:
        return None
    pt, pl = geom.dh * (geom.KH - 1) - geom.pt, geom.dw * (geom.KW - 1) - geom.pl
    pb, pr = geom.H - geom.OH + geom.pt, geom.W - geom.OW + geom.pl
    if min(pt, pb, pl, pr) < 0:
        return None
    return ConvGeometry(geom.OH, geom.OW, geom.KH, geom.KW, geom.H, geom.W, 1, 1,
                        pt, pb, pl, pr, geom.dh, geom.dw)


def _fold_transposed(backend, x, w, geom, groups, rows, layout):
    """conv_transpose2d on arrays, without bias, the fold route: per group and chunk
    cols = w^T @ x (the columns of y), then y = fold(cols).

    ``rows``: x already laid out by to_rows in ``layout``, or None.  On the host,
    kln columns of one chunk fold into a batch-last y, as in :func:`_correlate`.
    """
    N, C = x.shape[:2]            # C: channels of x (the small side, conv2d's output)
    OC = w.shape[1] * groups      # channels of y (the big side, conv2d's input)
    K = OC * geom.KH * geom.KW
    chunks = batch_chunks(backend, N, im2col_bytes(OC, geom, x.itemsize), is_batch_last(x))
    if rows is None or len(chunks) != 1:
        rows, layout = None, _layout(backend, chunks, geom, K, x)
    if layout != "kln":
        x = as_nchw(backend, x)
    y_shape = (N, OC, geom.H, geom.W)
    keep = layout == "kln" and backend.cache_blocking and len(chunks) == 1
    y = None if keep else backend.xp.empty(y_shape, dtype=x.dtype)
    w_t = w.reshape(groups, C // groups, K // groups).transpose(0, 2, 1)  # (G, K/G, C/G)
    given = rows              # for the one chunk, if given
    for lo, hi in chunks:
        cols = blocks = rows = None  # drop the previous chunk's arrays first
        rows = given if given is not None else to_rows(
            backend, x[lo:hi], layout)                                  # (B, C, P)
        B, _, P = rows.shape
        blocks = w_t @ rows.reshape(B, groups, C // groups, P)          # (B, G, K/G, P)
        # nkl: (B, K, P), a block per image; knl, kln: (K, P), all images side by side
        cols = blocks.reshape(B, K, P) if layout == "nkl" else blocks.reshape(K, P)
        if keep:
            y = fold_array(backend, cols, geom, N, OC, layout)
        else:
            fold_array(backend, cols, geom, hi - lo, OC, layout, out=y[lo:hi])
    return y


class ConvTranspose2d(Function):
    """y = conv2d's adjoint applied to x: per group cols = w^T @ x, then y = fold(cols) + b"""

    def forward(self, x, w, b=None, *, geom, groups, rows=None, layout=None):
        # rows: x already laid out by to_rows in ``layout`` (from
        # Conv2d.backward, which needs the same for the weight gradient).
        x, w, b = _operands(x, w, b)
        self.geom, self.groups = geom, groups
        C = x.shape[1]                # channels of x (the small side, conv2d's output)
        OC = w.shape[1] * groups      # channels of y (the big side, conv2d's input)
        flipped = _flipped_geometry(geom, OC, C)   # conv2d's channels: OC -> C
        depthwise = is_depthwise(OC, groups) and depthwise_pays(self.backend, x.shape[0], OC,
                                                                C // OC, geom)
        if depthwise and (flipped is None or C != OC):
            # (With one output per channel, C == OC, the flipped correlation below
            # is depthwise too, and its loop of multiply-adds into y is faster than
            # this one's adds into strided slices.)
            y = depthwise_transpose_array(self.backend, x, w, geom, OC)
        elif flipped is not None:
            # A correlation with the kernel flipped and its channel axes swapped:
            # (C, OC/G, KH, KW) -> (G, C/G, OC/G, KH, KW) -> (G, OC/G, C/G, KH, KW),
            # flipped -> (OC, C/G, KH, KW), a conv2d weight from OC to C channels.
            w_flip = (w.reshape(groups, C // groups, OC // groups, geom.KH, geom.KW)
                      .transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1]
                      .reshape(OC, C // groups, geom.KH, geom.KW))
            y = _correlate(self.backend, x, w_flip, None, flipped, groups)[0]
        else:
            y = _fold_transposed(self.backend, x, w, geom, groups, rows, layout)
        if b is not None:
            y += b.reshape(1, OC, 1, 1)
        return y

    def backward(self, grad_out):
        x, w = self.inputs[:2]
        grad_x = grad_w = grad_b = None
        if x.requires_grad:
            grad_x = Conv2d.apply(grad_out, w, geom=self.geom, groups=self.groups)
        if w.requires_grad:
            # y = conv2d^T(x; w), so <y, g> = <x, conv2d(g; w)>: w's gradient is
            # conv2d's weight gradient with the roles of input and output swapped.
            grad_w = Conv2dWeight.apply(grad_out, x, geom=self.geom, groups=self.groups)
        if len(self.inputs) == 3 and self.inputs[2].requires_grad:
            grad_b = grad_out.sum(axis=(0, 2, 3))
        return grad_x, grad_w, grad_b


WEIGHT_GRAD_COLUMNS = 1024


def _weight_product(cols, rows):
    """cols (B, G, K, P) and rows (B, G, OC, P) -> the sum over B of cols @ rows.T
    (G, K, OC).

    cols @ rows.T rather than rows @ cols.T: the same product, transposed, and
    20-40 % faster in OpenBLAS for these tall-skinny shapes.  A single long
    product with few rows (K < 64, P >= 4096: the first convolution of a
    network, in the ``kln`` layout) goes as a batch of products over
    ``WEIGHT_GRAD_COLUMNS`` columns each, summed: OpenBLAS runs the one long
    product 1.4-2x slower (measured on 2-vCPU x86 machines, see
    docs/benchmarks.md).
    """
    B, G, K, P = cols.shape
    step = WEIGHT_GRAD_COLUMNS
    if B > 1 or K >= 64 or P < 4 * step:
        products = cols @ rows.swapaxes(-1, -2)                         # (B, G, K, OC)
        return products.sum(axis=0) if B > 1 else products[0]
    OC, main = rows.shape[2], P - P % step
    # views, no copies: each block is a (K, step) slice of rows P elements apart
    col_blocks = cols[0, ..., :main].reshape(G, K, main // step, step)  # (G, K, nb, step)
    row_blocks = rows[0, ..., :main].reshape(G, OC, main // step, step)  # (G, OC, nb, step)
    products = (col_blocks.transpose(2, 0, 1, 3)                        # (nb, G, K, step)
                @ row_blocks.transpose(2, 0, 3, 1))                     # @ (nb, G, step, OC)
    # products: (nb, G, K, OC), one per block of columns
    total = products.sum(axis=0)                                        # (G, K, OC)
    if main < P:
        total += cols[0, ..., main:] @ rows[0, ..., main:].swapaxes(-1, -2)
    return total


class Conv2dWeight(Function):
    """grad_w[o, c, i, j] = sum_{n,oh,ow} g[n, o, oh, ow] x_pad[n, c, oh*sh + i*dh, ow*sw + j*dw]:
    per group the GEMM (unfold(x) (C*KH*KW, columns) @ g.T (columns, OC)).T"""

    def forward(self, x, g, *, geom, groups, cols=None, layout=None, rows=None):
        # cols (and rows): x's columns (and g laid out to match) in ``layout``,
        # kept by Conv2d's forward (made by its backward).
        x, g = _operands(x, g)
        self.geom, self.groups = geom, groups
        N, C = x.shape[:2]
        OC, K = g.shape[1], C * geom.KH * geom.KW
        if is_depthwise(C, groups) and depthwise_pays(self.backend, N, C, OC // C, geom):
            return depthwise_weight_array(self.backend, x, g, geom)
        if cols is not None:   # the columns Conv2d kept from its forward
            parts = [(0, N, cols, layout, rows)]
        else:
            chunks = batch_chunks(self.backend, N, im2col_bytes(C, geom, x.itemsize),
                                  is_batch_last(g))
            layout = _layout(self.backend, chunks, geom, K, g)
            if layout != "kln":
                x, g = as_nchw(self.backend, x), as_nchw(self.backend, g)
            parts = [(lo, hi, None, layout, None) for lo, hi in chunks]
        grad_w_t = self.xp.zeros((groups, K // groups, OC // groups), dtype=x.dtype)
        for lo, hi, cols, layout, rows in parts:
            blocks = None  # drop the previous chunk's columns first
            if cols is None:
                cols = unfold_array(self.backend, x[lo:hi], geom, layout)
            blocks = as_blocks(cols, layout)                            # (B, K, P)
            B, _, P = blocks.shape
            if rows is None:
                rows = to_rows(self.backend, g[lo:hi], layout)          # (B, OC, P)
            grad_w_t += _weight_product(blocks.reshape(B, groups, K // groups, P),
                                        rows.reshape(B, groups, OC // groups, P))
        # (G, K/G, OC/G) -> (G, OC/G, K/G) -> (OC, C/G, KH, KW): w's shape
        return grad_w_t.swapaxes(-1, -2).reshape(OC, C // groups, geom.KH, geom.KW)

    def backward(self, grad_out):
        # grad_w is bilinear in (x, g): <grad_w, v> = <conv2d(x; v), g> = <x, conv2d^T(g; v)>.
        x, g = self.inputs
        grad_x = grad_g = None
        if x.requires_grad:
            grad_x = ConvTranspose2d.apply(g, grad_out, geom=self.geom, groups=self.groups)
        if g.requires_grad:
            grad_g = Conv2d.apply(x, grad_out, geom=self.geom, groups=self.groups)
        return grad_x, grad_g


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Transposed convolution: the adjoint of :func:`conv2d` (and its input gradient).

    x (N, C, H, W), w (C, OC/groups, KH, KW), b (OC,) -> (N, OC, OH, OW) with
    ``OH = (H-1)*sh - 2*ph + dh*(KH-1) + 1 + oph``.  ``output_padding``
    (each < max(stride, dilation)) picks among the input sizes that a strided
    conv2d maps to the same output size.  One image x (C, H, W) gives
    (OC, OH, OW), as in PyTorch.
    """
    C, H, W = _check_tensor("conv_transpose2d", "x", x, (3, 4), _IMAGES, sized=2)[-3:]
    WC, OCG, KH, KW = _check_tensor("conv_transpose2d", "w", w, 4, "(C, OC/groups, KH, KW)",
                                    sized=2)
    groups = _check_groups("conv_transpose2d", groups)
    if WC != C:
        raise ValueError(f"conv_transpose2d: x of shape {shape_str(x.shape)} has {C} "
                         f"channels but w of shape {shape_str(w.shape)} expects {WC} "
                         f"(w is (C, OC/groups, KH, KW))")
    if C % groups:
        raise ValueError(f"conv_transpose2d: x has {C} channels, which groups={groups} "
                         f"does not divide")
    (sh, sw) = pair("conv_transpose2d", "stride", stride, 1)
    (dh, dw) = pair("conv_transpose2d", "dilation", dilation, 1)
    (ph, pw) = pair("conv_transpose2d", "padding", padding, 0)
    (oph, opw) = pair("conv_transpose2d", "output_padding", output_padding, 0)
    if oph >= max(sh, dh) or opw >= max(sw, dw):
        raise ValueError(f"conv_transpose2d: output_padding {output_padding} must be smaller "
                         f"than max(stride, dilation) = {(max(sh, dh), max(sw, dw))} in each "
                         f"dimension")
    OH = (H - 1) * sh - 2 * ph + dh * (KH - 1) + 1 + oph
    OW = (W - 1) * sw - 2 * pw + dw * (KW - 1) + 1 + opw
    if OH < 1 or OW < 1:
        raise ValueError(f"conv_transpose2d: x of shape {shape_str(x.shape)} with kernel "
                         f"{KH}x{KW} and padding {padding} gives an empty output "
                         f"{OH}x{OW}; use less padding")
    # The conv2d this is the adjoint of maps (OH, OW) to x's (H, W).
    geom = ConvGeometry(OH, OW, KH, KW, H, W, sh, sw, ph, ph, pw, pw, dh, dw)
    _check_bias("conv_transpose2d", b, (OCG * groups,))
    check_devices("conv_transpose2d", x, ("w", w), ("b", b))
    x, unbatched = _batch_of_one(x, 4)
    return _unbatch(ConvTranspose2d.apply(x, w, *([] if b is None else [b]), geom=geom,
                                          groups=groups), unbatched)


def conv1d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution: x (N, C, L), w (OC, C/groups, K), b (OC,) -> (N, OC, L_out).

    ``conv2d`` on images of height 1; arguments as :func:`conv2d` with ints.
    One sequence x (C, L) gives (OC, L_out), as in PyTorch.
    """
    _check_tensor("conv1d", "x", x, (2, 3), _SEQUENCES, sized=1)
    _check_tensor("conv1d", "w", w, 3, "(OC, C/groups, K)", sized=1)
    if not isinstance(padding, str):
        padding = (0, _single("conv1d", "padding", padding, 0))
    x_shown, (x, unbatched) = x.shape, _batch_of_one(x, 3)
    y = _conv2d("conv1d", x.unsqueeze(2), w.unsqueeze(2), b,
                (1, _single("conv1d", "stride", stride, 1)), padding,
                (1, _single("conv1d", "dilation", dilation, 1)), groups, x_shown, w.shape)
    return _unbatch(y.squeeze(2), unbatched)


def _single(op, name, value, minimum):
    """An int (or a sequence of one int) for a 1-D op."""
    return check_ints(f"{op}: {name}", value, 1, low=minimum)[0]


# ---- max pooling ------------------------------------------------------------------------
class MaxPool2d(Function):
    """y = the maximum of each window; its gradient goes to the window's first maximal
    element (row-major order within the window)"""

    def forward(self, x, geom):
        self.geom = geom
        self.y = max_pool_array(self.backend, x, geom)
        return self.y

    def backward(self, grad_out):
        return MaxPoolScatter.apply(grad_out, x=self.inputs[0].data, y=self.y, geom=self.geom)


class MaxPoolScatter(Function):
    """grad_x = zeros, plus g[window] added at the window's first maximal element"""

    def forward(self, g, x, y, geom):
        self.x, self.y, self.geom = x, y, geom
        return max_pool_scatter_array(self.backend, g, x, y, geom)

    def backward(self, grad_out):
        return MaxPoolGather.apply(grad_out, x=self.x, y=self.y, geom=self.geom)


class MaxPoolGather(Function):
    """y[window] = gx at the window's first maximal element (the adjoint of the scatter)"""

    def forward(self, gx, x, y, geom):
        self.x, self.y, self.geom = x, y, geom
        return max_pool_gather_array(self.backend, gx, x, y, geom)

    def backward(self, grad_out):
        return MaxPoolScatter.apply(grad_out, x=self.x, y=self.y, geom=self.geom)


def _pool_args(op, x, kernel_size, stride, padding, dilation):
    kernel = pair(op, "kernel_size", kernel_size, 1)
    stride = kernel if no_stride(stride) else pair(op, "stride", stride, 1)
    return kernel, stride, pair(op, "padding", padding, 0), pair(op, "dilation", dilation, 1)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """The maximum over each (dilated) window; x (N, C, H, W) -> (N, C, OH, OW).

    ``stride`` defaults to ``kernel_size``; padding (at most half the kernel)
    counts as -inf.  Tie rule: the gradient of each window goes to its
    *first* maximal element in row-major order, and so does the index.  With
    ``return_indices`` also returns those flat indices into H*W (int64, as
    PyTorch's; not differentiable).  A window containing NaN outputs NaN (its
    gradient goes to its first real element).  One image x (C, H, W) gives
    (C, OH, OW) (and indices of that shape), as in PyTorch.
    """
    _check_tensor("max_pool2d", "x", x, (3, 4), _IMAGES, sized=2)
    x_shown, (x, unbatched) = x.shape, _batch_of_one(x, 4)
    return _unbatch(_max_pool2d("max_pool2d", x, kernel_size, stride, padding, dilation,
                                ceil_mode, return_indices, x_shown), unbatched)


def _max_pool2d(op, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                x_shown):
    kernel, stride, padding, dilation = _pool_args(op, x, kernel_size, stride, padding,
                                                   dilation)
    return_indices = check_flag("return_indices", return_indices, op)
    geom = pool_geometry(op, x.shape, kernel, stride, padding, dilation,
                         check_flag("ceil_mode", ceil_mode, op), x_shown)
    y = MaxPool2d.apply(x, geom=geom)
    if not return_indices:
        return y
    with x._backend.context():
        indices = max_pool_indices(x._backend, x.data, y.data, geom)
    return y, Tensor._make(indices, x._backend)


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max pooling over the last axis of x (N, C, L) (``max_pool2d`` with height 1);
    one sequence x (C, L) gives (C, L_out), as in PyTorch."""
    _check_tensor("max_pool1d", "x", x, (2, 3), _SEQUENCES, sized=1)
    op = "max_pool1d"
    k = _single(op, "kernel_size", kernel_size, 1)
    s = k if no_stride(stride) else _single(op, "stride", stride, 1)
    x_shown, (x, unbatched) = x.shape, _batch_of_one(x, 3)
    out = _max_pool2d(op, x.unsqueeze(2), (1, k), (1, s), (0, _single(op, "padding", padding, 0)),
                      (1, _single(op, "dilation", dilation, 1)), ceil_mode, return_indices,
                      x_shown)
    if return_indices:
        out = out[0].squeeze(2), Tensor._make(out[1].data[:, :, 0], x._backend)
    else:
        out = out.squeeze(2)
    return _unbatch(out, unbatched)


# ---- average pooling ----------------------------------------------------------------------
class AvgPool2d(Function):
    """y = (sum of each window) / divisor"""

    def forward(self, x, geom, divisor):
        self.geom, self.divisor = geom, divisor
        y = sum_pool_array(self.backend, x, geom)
        y /= divisor.astype(y.dtype, copy=False)
        return y

    def backward(self, grad_out):
        return AvgPoolAdjoint.apply(grad_out, geom=self.geom, divisor=self.divisor)


class AvgPoolAdjoint(Function):
    """grad_x = g / divisor spread over every element of its window (the adjoint of AvgPool2d)"""

    def forward(self, g, geom, divisor):
        self.geom, self.divisor = geom, divisor
        return sum_pool_adjoint_array(self.backend, g / divisor.astype(g.dtype, copy=False),
                                      geom)

    def backward(self, grad_out):
        return AvgPool2d.apply(grad_out, geom=self.geom, divisor=self.divisor)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """The mean over each window; x (N, C, H, W) -> (N, C, OH, OW).

    ``stride`` defaults to ``kernel_size``; padding is zeros.  The divisor is
    the window size including padding (``count_include_pad``) or the number
    of real elements in the window, or ``divisor_override``; as PyTorch.  One
    image x (C, H, W) gives (C, OH, OW).
    """
    _check_tensor("avg_pool2d", "x", x, (3, 4), _IMAGES, sized=2)
    x_shown, (x, unbatched) = x.shape, _batch_of_one(x, 4)
    return _unbatch(_avg_pool2d("avg_pool2d", x, kernel_size, stride, padding, ceil_mode,
                                count_include_pad, divisor_override, x_shown), unbatched)


def _avg_pool2d(op, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                divisor_override, x_shown):
    kernel, stride, padding, _ = _pool_args(op, x, kernel_size, stride, padding, 1)
    if divisor_override is not None:
        divisor_override = check_number(f"{op}: divisor_override", divisor_override, low=0,
                                        open_low=True)
    geom = pool_geometry(op, x.shape, kernel, stride, padding, (1, 1),
                         check_flag("ceil_mode", ceil_mode, op), x_shown)
    divisor = avg_pool_divisor(geom, padding[0], padding[1],
                               check_flag("count_include_pad", count_include_pad, op),
                               divisor_override)
    # In x's dtype and kept on the device: a training step copies no divisor to it.
    return AvgPool2d.apply(x, geom=geom, divisor=x._backend.constant(divisor, x.dtype))


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """Average pooling over the last axis of x (N, C, L) (``avg_pool2d`` with height 1);
    one sequence x (C, L) gives (C, L_out), as in PyTorch."""
    _check_tensor("avg_pool1d", "x", x, (2, 3), _SEQUENCES, sized=1)
    op = "avg_pool1d"
    k = _single(op, "kernel_size", kernel_size, 1)
    s = k if no_stride(stride) else _single(op, "stride", stride, 1)
    x_shown, (x, unbatched) = x.shape, _batch_of_one(x, 3)
    return _unbatch(_avg_pool2d(op, x.unsqueeze(2), (1, k), (1, s),
                                (0, _single(op, "padding", padding, 0)), ceil_mode,
                                count_include_pad, None, x_shown).squeeze(2), unbatched)


# ---- adaptive pooling ----------------------------------------------------------------------
def _adaptive_args(op, x, output_size):
    H, W = _check_tensor(op, "x", x, (3, 4), _IMAGES, sized=2)[-2:]
    if (isinstance(output_size, (tuple, list)) and len(output_size) == 2
            and any(s is None for s in output_size)):
        # None keeps that axis's input size (PyTorch's rule).  The other entry is
        # checked on its own, so that an error shows it, not the input size put in.
        for s in output_size:
            if s is not None:
                check_ints(f"{op}: output_size", s, 1, low=1)
        output_size = tuple(size if s is None else s for s, size in zip(output_size, (H, W)))
    return (H, W), pair(op, "output_size", output_size, 1)


class AdaptiveAvgPool2d(Function):
    """y = the mean of each adaptive bin"""

    def forward(self, x, output_size):
        self.size = x.shape[2:]
        return adaptive_avg_array(self.backend, x, *output_size)    # (N, C, OH, OW)

    def backward(self, grad_out):
        return AdaptiveAvgPoolAdjoint.apply(grad_out, size=self.size)


class AdaptiveAvgPoolAdjoint(Function):
    """grad_x = each bin's gradient spread evenly over the bin"""

    def forward(self, g, size):
        self.output_size = g.shape[2:]
        return adaptive_avg_adjoint_array(self.backend, g, *size)   # (N, C, H, W)

    def backward(self, grad_out):
        return AdaptiveAvgPool2d.apply(grad_out, output_size=self.output_size)


def adaptive_avg_pool2d(x, output_size):
    """Mean over the (OH, OW) bins that split H and W as evenly as possible.

    Bin i of an axis of size H covers [floor(i*H/OH), ceil((i+1)*H/OH)), so
    bins may overlap or differ in size (PyTorch's rule).  The mean over bins
    is separable: the means over bins of rows, then over bins of columns.
    x (N, C, H, W) -> (N, C, OH, OW); one image (C, H, W) -> (C, OH, OW).
    """
    (H, W), (OH, OW) = _adaptive_args("adaptive_avg_pool2d", x, output_size)
    if H % OH == 0 and W % OW == 0:    # equal, disjoint bins: plain average pooling
        return avg_pool2d(x, (H // OH, W // OW))
    x, unbatched = _batch_of_one(x, 4)
    return _unbatch(AdaptiveAvgPool2d.apply(x, output_size=(OH, OW)), unbatched)


class AdaptiveMaxPool2d(Function):
    """y = the maximum of each adaptive bin; the gradient goes to its first maximal element"""

    def forward(self, x, output_size, indices=None):
        y, self.idx = adaptive_max_array(self.backend, x, *output_size)
        if indices is not None:
            indices.append(self.idx)
        return y

    def backward(self, grad_out):
        H, W = self.inputs[0].shape[2:]
        return IndexScatter.apply(grad_out, idx=self.idx, size=(H, W))


class IndexScatter(Function):
    """grad_x = zeros (N, C, H, W) with g added at the flat H*W indices idx"""

    def forward(self, g, idx, size):
        self.idx = idx
        return index_scatter_array(self.backend, g, idx, *size)

    def backward(self, grad_out):
        return IndexGather.apply(grad_out, idx=self.idx)


class IndexGather(Function):
    """y = gx read at the flat H*W indices idx (the adjoint of IndexScatter)"""

    def forward(self, gx, idx):
        self.idx, self.size = idx, gx.shape[2:]
        return index_gather_array(self.backend, gx, idx)

    def backward(self, grad_out):
        return IndexScatter.apply(grad_out, idx=self.idx, size=self.size)


def adaptive_max_pool2d(x, output_size, return_indices=False):
    """Maximum over the (OH, OW) bins of :func:`adaptive_avg_pool2d`'s rule.

    Ties and indices as :func:`max_pool2d`: the first maximal element of
    each bin (row-major), flat indices into H*W.  x (N, C, H, W) ->
    (N, C, OH, OW); one image (C, H, W) -> (C, OH, OW).
    """
    (H, W), (OH, OW) = _adaptive_args("adaptive_max_pool2d", x, output_size)
    return_indices = check_flag("return_indices", return_indices, "adaptive_max_pool2d")
    if H % OH == 0 and W % OW == 0:    # equal, disjoint bins: plain max pooling
        return max_pool2d(x, (H // OH, W // OW), return_indices=return_indices)
    x, unbatched = _batch_of_one(x, 4)
    if not return_indices:
        return _unbatch(AdaptiveMaxPool2d.apply(x, output_size=(OH, OW)), unbatched)
    idx = []
    y = AdaptiveMaxPool2d.apply(x, output_size=(OH, OW), indices=idx)
    return _unbatch((y, Tensor._make(idx[0], x._backend)), unbatched)


# ---- normalization ------------------------------------------------------------------------
# Each op normalises x by the mean and variance of some set of its values, then
# scales and shifts the result by an optional weight and bias:
#
#   batch_norm     per channel: over the batch and the spatial axes (or by the running
#                  statistics of earlier batches, in evaluation);
#   instance_norm  per sample and channel: over the spatial axes;
#   group_norm     per sample and group of channels: over those channels and the spatial
#                  axes (one group: over a whole sample; one channel per group: instance_norm
#                  without running statistics);
#   layer_norm     per sample: over the trailing ``normalized_shape`` axes.
#
# instance_norm, group_norm and layer_norm (and batch_norm in evaluation) are compositions
# of differentiable tensor ops (a mean, a subtraction, a product, a power), so they
# differentiate to any order and run on every backend with no Function of their own.
# batch_norm in training, the common case, is one Function for speed, BatchNorm, whose
# forward and backward each make a few passes of array code (batch_norm_array,
# batch_norm_grad_array) where the composition makes a dozen with a new array each;
# its backward is again made of Functions whose own backward is tensor ops, so it
# differentiates to any order too.  The running statistics are handled on raw arrays
# (updated in training, made constants in evaluation): they are state that no gradient
# flows through (as in PyTorch, which refuses running statistics that require grad).

def _normalize(x, axes, eps):
    """((x - mean) / sqrt(var + eps), mean, var) with the mean and biased variance of x over
    ``axes`` (kept as axes of size 1).

    The variance is the mean of the squared deviations from the mean, computed after the
    mean (two passes), not E[x^2] - E[x]^2: where the values lie far from 0 compared with
    their spread (an offset of 1e4 over a unit spread, say), that formula subtracts two
    nearly equal numbers and loses every digit of the difference (float32 gives a variance
    of 0 there, or a negative one, and NaN after the square root).

    A float16 x is normalised in float32 (mean and variance float32, the result rounded
    back once), as PyTorch does: deviations beyond 256 square past float16's largest
    value, and an infinite variance would normalise every value of the group to 0.
    """
    if x.dtype == np.float16:
        y, mean, var = _normalize(x.astype(np.float32), axes, eps)
        return y.astype(np.float16), mean, var
    mean = x.mean(axes, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axes, keepdims=True)
    return centred * (var + eps) ** -0.5, mean, var


def _affine(y, weight, bias, shape):
    """y * weight + bias, each (if given) reshaped to ``shape`` to broadcast along y."""
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


# BatchNorm and its backward.  Per channel, with M values each, xhat = (x - mean) * invstd
# and y = xhat w + b.  The Jacobian of xhat (the same per channel) is
#   d xhat_i / d x_j = invstd (delta_ij - 1/M - xhat_i xhat_j / M),
# symmetric, so applying it to a vector is its own transpose: B(x, h) = invstd (h - mean(h)
# - xhat mean(h xhat)) is both the gradient of sum(h xhat) for x and the derivative of xhat
# along h.  Each Function keeps x's mean and invstd from the forward pass as arrays for
# its array code, so that no backward computes them again; no derivative treats them as
# constants: where one depends on them (_batch_norm_grad_x), they are recomputed from x as
# differentiable ops.
class BatchNorm(Function):
    """y = xhat w + b per channel, xhat = (x - mean) / sqrt(var + eps) by the mean and
    biased variance of each channel of x (N, C, ...) over all other axes; gradients: x
    BatchNormGrad(x, g, w) = w B(x, g), w sum(g xhat), b sum(g)"""

    def forward(self, x, *affine, eps, has_weight, stats=None):
        # affine: (w, b), (w,), (b,) or (); ``stats``, a list, receives (mean, var)
        weight = affine[0] if has_weight else None
        bias = affine[-1] if len(affine) > has_weight else None
        y, self.mean, var, self.invstd = batch_norm_array(self.backend, x, weight, bias, eps)
        self.eps, self.has_weight = eps, has_weight
        if stats is not None:
            stats.append((self.mean, var))
        return y

    def backward(self, grad_out):
        x, *affine = self.inputs
        weight = affine[:1] if self.has_weight else []
        saved = dict(eps=self.eps, mean=self.mean, invstd=self.invstd)
        grad_x, sums = None, []
        if x.requires_grad:   # computes the sums for weight and bias on the way
            grad_x = BatchNormGrad.apply(x, grad_out, *weight, sums_out=sums, **saved)
        if not any(t.requires_grad for t in affine):
            return (grad_x,) + (None,) * len(affine)
        both = BatchNormSums.apply(x, grad_out, sums=sums[0] if sums else None,
                                   **saved)                      # (2, C): sum g, sum g xhat
        grad_w = [both[1]] if self.has_weight else []
        grad_b = [both[0]] if len(affine) > self.has_weight else []
        return (grad_x, *grad_w, *grad_b)


class BatchNormGrad(Function):
    """z = w B(x, g) = w invstd (g - mean(g) - xhat mean(g xhat)) per channel (w = 1 if
    not given), BatchNorm's gradient for x; gradients: g BatchNormGrad(x, u, w) (B is
    symmetric), w sum(u B(x, g)), x see _batch_norm_grad_x"""

    def forward(self, x, g, *weight, eps, mean, invstd, sums_out=None):
        # ``sums_out``, a list, receives the (2, C) sums computed on the way (BatchNormSums)
        self.eps, self.mean, self.invstd = eps, mean, invstd
        return batch_norm_grad_array(self.backend, x, g, weight[0] if weight else None, mean,
                                     invstd, sums_out)

    def backward(self, grad_out):
        x, g, *weight = self.inputs
        saved = dict(eps=self.eps, mean=self.mean, invstd=self.invstd)
        grad_x = grad_g = grad_w = None
        if g.requires_grad:
            grad_g = BatchNormGrad.apply(x, grad_out, *weight, **saved)
        if weight and weight[0].requires_grad:
            axes = (0,) + tuple(range(2, x.ndim))
            grad_w = (grad_out * BatchNormGrad.apply(x, g, **saved)).sum(axes)
        if x.requires_grad:
            h = g if not weight else g * weight[0].reshape((1, -1) + (1,) * (x.ndim - 2))
            grad_x = _batch_norm_grad_x(x, h, grad_out, self.eps)
        return grad_x, grad_g, grad_w


class BatchNormSums(Function):
    """z = (sum(g), sum(g xhat)) per channel, (2, C): BatchNorm's gradients for b and w;
    gradients for upstream u (2, C): g u0 + u1 xhat = BatchNorm(x; w=u1, b=u0), x
    BatchNormGrad(x, g, u1)"""

    def forward(self, x, g, *, eps, mean, invstd, sums=None):
        # ``sums``: the (2, C) array if BatchNormGrad has already computed it, else computed
        self.eps, self.mean, self.invstd = eps, mean, invstd
        if sums is None:
            sums = batch_norm_sums_array(self.backend, x, g, mean, invstd)
        return sums.astype(x.dtype, copy=False)

    def backward(self, grad_out):
        x, g = self.inputs
        grad_x = grad_g = None
        if x.requires_grad:
            grad_x = BatchNormGrad.apply(x, g, grad_out[1], eps=self.eps, mean=self.mean,
                                         invstd=self.invstd)
        if g.requires_grad:
            grad_g = BatchNorm.apply(x, grad_out[1], grad_out[0], eps=self.eps, has_weight=True)
        return grad_x, grad_g


def _batch_norm_grad_x(x, h, u, eps):
    """The gradient for x of sum(u B(x, h)), as differentiable tensor ops (the backward
    of a backward: rare, so written for clarity, not speed).  With averages per channel,
    -invstd^2 (xhat (mean(u h) - mean(u) mean(h) - 3 mean(u xhat) mean(h xhat))
    + mean(h xhat) (u - mean(u)) + mean(u xhat) (h - mean(h)))."""
    if x.dtype == np.float16:   # in float32, as the forward (the gradient is cast back)
        x, h, u = (t.astype(np.float32) for t in (x, h, u))
    axes = (0,) + tuple(range(2, x.ndim))
    xhat, _, var = _normalize(x, axes, eps)

    def avg(t):
        return t.mean(axes, keepdims=True)                      # (1, C, 1, ...)
    u_xhat, h_xhat, u_mean, h_mean = avg(u * xhat), avg(h * xhat), avg(u), avg(h)
    inner = xhat * (avg(u * h) - u_mean * h_mean - 3 * u_xhat * h_xhat)
    inner = inner + h_xhat * (u - u_mean) + u_xhat * (h - h_mean)
    return inner * (-1 / (var + eps))


def _check_norm_input(op, x, min_ndim, layout):
    """x is a float Tensor of at least ``min_ndim`` dimensions, laid out as ``layout``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: x must be a Tensor, got {type(x).__name__}")
    if x.ndim < min_ndim:
        raise ValueError(f"{op}: expected x of shape {layout} (at least {min_ndim} "
                         f"dimension{'s' if min_ndim > 1 else ''}), got shape "
                         f"{shape_str(x.shape)}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: x of shape {shape_str(x.shape)} has dtype {x.dtype}; expected "
                        f"a float dtype (float32 or float64: convert with x.float())")


def _check_norm_params(op, x, shape, what, **params):
    """Each of ``params`` (weight, bias, running statistics) is None or a float Tensor of
    ``shape`` on x's device; ``what`` says where ``shape`` comes from in x."""
    for name, t in params.items():
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor or None, got {type(t).__name__}")
        if t.dtype.kind != "f":
            raise TypeError(f"{op}: {name} of shape {shape_str(t.shape)} has dtype {t.dtype}; "
                            f"expected a float dtype (float32 or float64)")
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{op}: {name} has shape {shape_str(t.shape)}, but x of shape "
                             f"{shape_str(x.shape)} has {what}; expected {name} of shape "
                             f"{shape_str(shape)}")
    check_devices(op, x, *params.items())


def _check_eps(op, eps):
    # eps <= 0 divides by 0 for a constant group (0 / 0: NaN) and takes the square
    # root of a negative number for a near-constant one.
    return check_number(f"{op}: eps", eps, low=0, open_low=True)


def _check_group_size(op, x, n, what):
    """Refuse groups of one value: each would normalise to 0 whatever its value (its
    variance is 0), a silent wrong answer."""
    if n == 1:
        raise ValueError(f"{op}: expected more than 1 value per {what}, got x of shape "
                         f"{shape_str(x.shape)} (a single value normalises to 0 whatever it "
                         f"is)")


def _check_running_stats(op, x, running_mean, running_var, use_input_stats, momentum):
    """The running statistics of batch_norm and instance_norm: both or neither, shape
    (C,), float, on x's device, not requiring grad; writeable if they are to be updated;
    needed when the input's own statistics are not used.  Returns the checked momentum."""
    if momentum is None:
        raise TypeError(f"{op}: momentum must be a number in [0, 1], got None (BatchNorm's "
                        f"momentum=None, a cumulative average, is momentum=1/k at the k-th "
                        f"batch: pass that number)")
    momentum = check_number(f"{op}: momentum", momentum, high=1)
    if (running_mean is None) != (running_var is None):
        given = "running_mean" if running_var is None else "running_var"
        raise ValueError(f"{op}: {given} was given without "
                         f"{'running_var' if running_var is None else 'running_mean'}; "
                         f"pass both running statistics or neither")
    C = x.shape[1]
    _check_norm_params(op, x, (C,), f"{C} channels", running_mean=running_mean,
                       running_var=running_var)
    if running_mean is None:
        if not use_input_stats:
            flag = "training=False" if op == "batch_norm" else "use_input_stats=False"
            raise ValueError(f"{op}: with {flag} x is normalised by the running statistics, "
                             f"but running_mean and running_var are None")
        return momentum
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t.requires_grad:
            raise RuntimeError(f"{op}: {name} requires grad, but running statistics are "
                               f"state updated in place, through which no gradient flows; "
                               f"pass {name}.detach() (or a tensor without requires_grad)")
        if use_input_stats and (t._read_only or not t._backend.is_writeable(t.data)):
            raise ValueError(f"{op}: {name} of shape {shape_str(t.shape)} is a read-only view "
                             f"(a broadcast, say) and cannot be updated in place; pass a "
                             f"tensor of its own (tg.tensor({name}.numpy()), say)")
    return momentum


def _update_running_stats(running_mean, running_var, mean, var, n, momentum):
    """running = (1 - momentum) running + momentum batch, in place on the arrays.

    ``mean`` and ``var`` are the batch's per-channel statistics, of shape (k, C) for
    k statistics per channel (1 for batch_norm, the batch size for instance_norm,
    averaged as PyTorch does), over ``n`` values each; the variance is made unbiased
    (n / (n - 1)), as in PyTorch.  ``momentum`` is a number or a 0-d array of the
    statistics' device (BatchNorm's cumulative average, kept there so that no step waits
    for the device).
    """
    with running_mean._backend.context():
        # Everything is computed before the first write, so a failure leaves both
        # statistics as they were; in the wider dtype of the two, rounded once by the
        # write (float16 statistics are updated from float32 batch ones: an unbiased
        # variance beyond float16's range can still give a running one within it).
        batch_mean = mean.mean(axis=0)
        unbiased = var.mean(axis=0) * (n / (n - 1))
        rm, rv = running_mean.data, running_var.data
        new_mean = (1 - momentum) * rm + momentum * batch_mean
        new_var = (1 - momentum) * rv + momentum * unbiased
        rm[...] = new_mean
        rv[...] = new_var
    # An in-place change, as an optimiser step is: a graph that read the old values
    # refuses to backpropagate with the new ones.
    running_mean._bump_version()
    running_var._bump_version()


def _channel_norm(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps,
                  per_sample):
    """batch_norm (``per_sample`` False) or instance_norm (True) on checked arguments.

    With ``use_input_stats``, x is normalised by its own per-channel statistics, over
    the batch and the spatial axes or, per sample, over the spatial axes only, and
    the running statistics, if given, are updated; otherwise by the running
    statistics.  An empty x (no values per statistic) gives an empty result and leaves
    the running statistics as they are.
    """
    C = x.shape[1]
    shape = (1, C) + (1,) * (x.ndim - 2)                  # per channel, broadcastable
    if not use_input_stats:
        # The statistics as constants made from their arrays (no gradient flows to
        # them): no graph nodes and no scalars sent to the device in evaluation.
        # Copies (their values now), not views: a later update in place must not
        # make this result's backward refuse to run (PyTorch's runs).
        x, weight, bias = _promoted(x, weight, bias)
        with x._backend.context():
            dtype = np.result_type(x.dtype, running_mean.dtype, running_var.dtype)
            mean = running_mean.data.reshape(shape).astype(dtype)          # (1, C, 1, ...)
            var = running_var.data.reshape(shape).astype(dtype)
            invstd = 1 / x._backend.xp.sqrt(var + eps)                     # (1, C, 1, ...)
        mean, invstd = Tensor._make(mean, x._backend), Tensor._make(invstd, x._backend)
        return _affine((x - mean) * invstd, weight, bias, shape)
    x, weight, bias = _promoted(x, weight, bias)
    axes = tuple(range(2, x.ndim)) if per_sample else (0,) + tuple(range(2, x.ndim))
    n = math.prod(x.shape[a] for a in axes)               # values per statistic
    if n == 0 or x.size == 0:
        return _affine(x * 1, weight, bias, shape)        # x's empty shape, a new tensor
    if not per_sample:   # batch_norm: one Function, the affine map included
        stats = []
        affine = [t for t in (weight, bias) if t is not None]
        y = BatchNorm.apply(x, *affine, eps=eps, has_weight=weight is not None, stats=stats)
        if running_mean is not None:
            mean, var = stats[0]
            _update_running_stats(running_mean, running_var, mean.reshape(1, C),
                                  var.reshape(1, C), n, momentum)        # (1, C)
        return y
    y, mean, var = _normalize(x, axes, eps)
    if running_mean is not None:
        k = x.shape[0] if per_sample else 1               # statistics per channel
        _update_running_stats(running_mean, running_var, mean.data.reshape(k, C),
                              var.data.reshape(k, C), n, momentum)        # (k, C)
    return _affine(y, weight, bias, shape)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation of x (N, C, ...) per channel, as ``torch.nn.functional.batch_norm``.

    ``training=True``: y = (x - mean) / sqrt(var + eps) with the mean and biased
    variance of each channel over the batch and the spatial axes (at least 2 values
    per channel), and, if ``running_mean`` and ``running_var`` (each (C,)) are given,
    they are updated in place: ``running = (1 - momentum) * running + momentum *
    batch``, the running variance from the *unbiased* batch variance.  ``training=False``:
    y = (x - running_mean) / sqrt(running_var + eps), so both are needed.  Then y is
    scaled by ``weight`` and shifted by ``bias`` (each (C,), optional).  ``momentum``
    is a number in [0, 1]; ``eps`` must be > 0.  No gradient flows to the running
    statistics, which must not require grad.  One float64 operand among x, weight and
    bias (and, in evaluation, the running statistics) makes the computation float64, as
    in :func:`conv2d`.  ``nn.BatchNorm1d`` and ``BatchNorm2d`` compute with the same
    function (:func:`_channel_norm`).
    """
    op = "batch_norm"
    _check_norm_input(op, x, 2, "(N, C, ...)")
    training = check_flag("training", training, op)
    eps = _check_eps(op, eps)
    momentum = _check_running_stats(op, x, running_mean, running_var, training, momentum)
    C = x.shape[1]
    _check_norm_params(op, x, (C,), f"{C} channels", weight=weight, bias=bias)
    if training:
        _check_group_size(op, x, math.prod(x.shape[:1] + x.shape[2:]),
                          "channel when training")
    return _channel_norm(x, running_mean, running_var, weight, bias, training, momentum, eps,
                         per_sample=False)


def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    """Instance normalisation of x (N, C, ...) per sample and channel, as
    ``torch.nn.functional.instance_norm``.

    ``use_input_stats=True``: each (sample, channel) is normalised by the mean and
    biased variance of its own spatial values (at least 2), and the running
    statistics, if given (each (C,)), are updated in place as in :func:`batch_norm`
    with the batch's average of the per-sample means and unbiased variances (as
    PyTorch does).  ``use_input_stats=False``: normalised by the running statistics,
    which are then needed.  ``weight`` and ``bias`` (each (C,)), ``momentum`` and
    ``eps`` as in :func:`batch_norm`.  Without running statistics it equals
    ``group_norm(x, C, weight, bias, eps)``.
    """
    op = "instance_norm"
    _check_norm_input(op, x, 2, "(N, C, ...)")
    use_input_stats = check_flag("use_input_stats", use_input_stats, op)
    eps = _check_eps(op, eps)
    momentum = _check_running_stats(op, x, running_mean, running_var, use_input_stats,
                                    momentum)
    C = x.shape[1]
    _check_norm_params(op, x, (C,), f"{C} channels", weight=weight, bias=bias)
    if use_input_stats:
        _check_group_size(op, x, math.prod(x.shape[2:]), "channel of a sample (the spatial "
                          "axes hold one value)")
    return _channel_norm(x, running_mean, running_var, weight, bias, use_input_stats,
                         momentum, eps, per_sample=True)


def _normalized_shape(op, normalized_shape):
    """An int or a sequence of ints (each >= 0, at least one) -> a tuple of ints."""
    value = as_scalar(normalized_shape)       # a 0-d array or tensor: its int
    shape = [value] if is_int(value) else None if isinstance(value, numbers.Number) \
        else int_list(value)
    if shape is None:
        raise TypeError(f"{op}: normalized_shape must be an int or a sequence of ints, got "
                        f"{shown_value(normalized_shape)}")
    if not shape or min(shape) < 0:
        raise ValueError(f"{op}: normalized_shape must hold at least one size, each >= 0, "
                         f"got {tuple(shape)}")
    return tuple(shape)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer normalisation over the trailing axes, as ``torch.nn.functional.layer_norm``.

    ``normalized_shape`` (an int or a sequence of ints) must equal the last
    dimensions of x; each slice of that shape (one per sample, for (N, C, H, W) x and
    normalized_shape (C, H, W)) is normalised by its own mean and biased variance (at
    least 2 values), then scaled elementwise by ``weight`` and shifted by ``bias``
    (each of ``normalized_shape``, optional).  ``eps`` must be > 0.
    """
    op = "layer_norm"
    shape = _normalized_shape(op, normalized_shape)
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: x must be a Tensor, got {type(x).__name__}")
    k = len(shape)
    if tuple(x.shape[x.ndim - k:]) != shape:
        raise ValueError(f"{op}: normalized_shape {shape_str(shape)} must equal the last {k} "
                         f"dimension{'s' if k > 1 else ''} of x, got x of shape "
                         f"{shape_str(x.shape)}; expected x of shape (*, "
                         f"{', '.join(map(str, shape))})")
    _check_norm_input(op, x, k, f"(*, {', '.join(map(str, shape))})")
    eps = _check_eps(op, eps)
    _check_norm_params(op, x, shape, f"normalized_shape {shape_str(shape)}", weight=weight,
                       bias=bias)
    n = math.prod(shape)
    _check_group_size(op, x, n, f"normalized slice (normalized_shape {shape_str(shape)})")
    x, weight, bias = _promoted(x, weight, bias)
    y = x * 1 if n == 0 else _normalize(x, tuple(range(x.ndim - k, x.ndim)), eps)[0]
    return _affine(y, weight, bias, shape)     # weight and bias broadcast as they are


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalisation of x (N, C, ...), as ``torch.nn.functional.group_norm``.

    The C channels are split into ``num_groups`` groups of consecutive channels
    (``num_groups`` must divide C), and each group of each sample is normalised by
    the mean and biased variance of all its values (its channels and their spatial
    axes; at least 2 values), then each channel is scaled by ``weight`` and shifted by
    ``bias`` (each (C,), optional).  ``num_groups=1`` normalises each sample as a
    whole; ``num_groups=C`` is :func:`instance_norm` without running statistics.
    ``eps`` must be > 0.
    """
    op = "group_norm"
    _check_norm_input(op, x, 2, "(N, C, ...)")
    G = check_int(f"{op}: num_groups", num_groups, low=1)
    N, C = x.shape[:2]
    if C % G:
        raise ValueError(f"{op}: num_groups={G} does not divide the {C} channels of x of "
                         f"shape {shape_str(x.shape)}; expected a number of channels "
                         f"divisible by {G}")
    eps = _check_eps(op, eps)
    _check_norm_params(op, x, (C,), f"{C} channels", weight=weight, bias=bias)
    n = C // G * math.prod(x.shape[2:])                  # values per group
    _check_group_size(op, x, n, f"group (num_groups={G})")
    x, weight, bias = _promoted(x, weight, bias)
    if n == 0 or x.size == 0:
        y = x * 1                                        # x's empty shape, a new tensor
    else:
        y = _normalize(x.reshape(N, G, n), (2,), eps)[0]  # (N, G, C/G * spatial)
        y = y.reshape(x.shape)                            # (N, C, ...)
    return _affine(y, weight, bias, (1, C) + (1,) * (x.ndim - 2))


# ---- activations and helpers (thin aliases of Tensor ops) --------------------------------
@_takes_tensor
def relu(x, inplace=False):
    """max(x, 0)"""
    _check_inplace("relu", inplace)
    return x.relu()


@_takes_tensor
def leaky_relu(x, negative_slope=0.01, inplace=False):
    """x if x > 0 else negative_slope * x"""
    _check_inplace("leaky_relu", inplace)
    return x.leaky_relu(negative_slope)


@_takes_tensor
def sigmoid(x):
    """1 / (1 + exp(-x))"""
    return x.sigmoid()


@_takes_tensor
def tanh(x):
    """(exp(x) - exp(-x)) / (exp(x) + exp(-x))"""
    return x.tanh()


@_takes_tensor
def softmax(x, dim):
    """exp(x) / sum(exp(x)) along ``dim``."""
    return x.softmax(dim=dim)


@_takes_tensor
def log_softmax(x, dim):
    """x - logsumexp(x) along ``dim``."""
    return x.log_softmax(dim=dim)


@_takes_tensor
def flatten(x, start_dim=1, end_dim=-1):
    """Merge dimensions start_dim..end_dim into one (by default all but the batch)."""
    return x.flatten(start_dim, end_dim)


# ---- vectors: norms, similarity, one-hot -------------------------------------------------

def _float_tensor(op, name, x):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be floating-point, got dtype {x.dtype}")
    return x


def _vector_norm(x, p, dim):
    """The p-norm of x along ``dim`` (kept as size 1), with a zero gradient where it is 0
    (PyTorch's subgradient) rather than the NaN of the root's infinite slope there.
    float16 sums its powers in float32, as PyTorch does: 300**2 already overflows float16."""
    if x.dtype == np.float16:
        return _vector_norm(x.astype(np.float32), p, dim).astype(np.float16)
    if p == math.inf:
        return x.abs().max(dim, keepdims=True)
    total = (x * x if p == 2 else x.abs() ** p).sum(dim, keepdims=True)
    zero = total == 0
    root = where(zero, 1.0, total)
    return where(zero, 0.0, root.sqrt() if p == 2 else root ** (1 / p))


def _norm_args(op, p, dim, eps, x):
    p = check_number(f"{op}: p", p, low=None)
    if not p > 0:
        raise ValueError(f"{op}: p must be > 0 (inf: the largest |x|), got {p}")
    eps = check_number(f"{op}: eps", eps, low=0)
    if x.ndim == 0:
        raise ValueError(f"{op}: the input is 0-d; it needs a dimension {dim} to normalise "
                         f"along")
    return p, _norm_axis(dim, x.ndim, op), eps


def normalize(x, p=2.0, dim=1, eps=1e-12):
    """x / max(||x||_p, eps) along ``dim``, as PyTorch's ``F.normalize`` (``p=inf``: the
    largest |x|).  At x = 0 the result is 0 with the gradient 1/eps, as in PyTorch."""
    x = _float_tensor("normalize", "x", x)
    p, dim, eps = _norm_args("normalize", p, dim, eps, x)
    return x / _vector_norm(x, p, dim).clip(min=eps)


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """The cosine of the angle between x1 and x2 (broadcast) along ``dim``: the sum of
    x1 / max(||x1||, eps) times x2 / max(||x2||, eps), as PyTorch computes it (so that
    neither product of norms overflows nor a tiny one divides by ~0)."""
    x1, x2 = (_float_tensor("cosine_similarity", n, t) for n, t in (("x1", x1), ("x2", x2)))
    check_devices("cosine_similarity", x1, ("x2", x2))
    try:
        shape = np.broadcast_shapes(x1.shape, x2.shape)
    except ValueError:
        raise ValueError(f"cosine_similarity: x1 of shape {x1.shape} and x2 of shape "
                         f"{x2.shape} cannot be broadcast together") from None
    x1, x2 = x1.broadcast_to(shape), x2.broadcast_to(shape)
    _, dim, eps = _norm_args("cosine_similarity", 2.0, dim, eps, x1)
    unit1 = x1 / _vector_norm(x1, 2, dim).clip(min=eps)
    unit2 = x2 / _vector_norm(x2, 2, dim).clip(min=eps)
    return (unit1 * unit2).sum(dim)


def one_hot(tensor, num_classes=-1):
    """int64 tensor of shape ``tensor.shape + (num_classes,)``, 1 at each class index of
    the integer ``tensor`` and 0 elsewhere, as PyTorch's ``F.one_hot``; ``num_classes=-1``
    takes the largest index + 1.  No gradient (integer results have none)."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"one_hot: the class indices must be a Tensor, got "
                        f"{type(tensor).__name__}")
    if tensor.dtype.kind not in "iu":
        raise TypeError(f"one_hot: the class indices must be an integer tensor, got dtype "
                        f"{tensor.dtype} (convert with .astype(tg.int64))")
    num_classes = check_int("one_hot: num_classes", num_classes, low=-1)
    backend, data = tensor._backend, tensor.data
    with backend.context():
        xp = tensor.xp
        if data.size:   # the checks need the values on the host: one small copy each
            lo, hi = (int(backend.to_numpy(f(data))) for f in (xp.min, xp.max))
            if lo < 0:
                raise ValueError(f"one_hot: class indices must be >= 0, got {lo} in a "
                                 f"tensor of shape {tensor.shape}")
            if num_classes == -1:
                num_classes = hi + 1
            elif hi >= num_classes:
                raise ValueError(f"one_hot: class index {hi} is out of range for "
                                 f"num_classes={num_classes} (valid 0..{num_classes - 1}) "
                                 f"in a tensor of shape {tensor.shape}")
        elif num_classes == -1:
            raise ValueError(f"one_hot: no class index to count classes from (shape "
                             f"{tensor.shape}); pass num_classes")
        out = data[..., None] == xp.arange(num_classes)   # (..., num_classes)
        return Tensor._make(out.astype(np.int64), backend)


# ---- more activations: GELU, SiLU, Mish, the ELU family, Softplus, the hard ones -------------
# PyTorch's, with its arguments and defaults.  GELU's tanh form, SiLU and Mish are
# compositions of differentiable ops; the others are small Functions.  Exact GELU is one
# for speed: its forward and its backward are each one slice-by-slice run of array code
# (gelu_array, gelu_grad_array), where x/2 * (1 + erf(x / sqrt 2)) as tensor ops would make
# a dozen passes over whole arrays.  The others keep PyTorch's gradient at each kink
# (hardtanh and relu6: 0 at both bounds; hardsigmoid: 0 at +-3; hardswish: 0 at -3, 1 at
# 3; elu and selu: at 0 the slope of the x <= 0 side) and stay finite where an unused
# branch would overflow (softplus, elu for large x).  All take float tensors only, as
# PyTorch's kernels (whose hardtanh and relu6 also take integers).
_GELU_APPROXIMATIONS = ("none", "tanh")
_SQRT_2_OVER_PI = float(np.sqrt(2 / np.pi))
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _activation_input(op, x):
    """x, checked to be a float Tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: x must be a Tensor, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: x has dtype {x.dtype}; expected a float dtype (float32 or "
                        f"float64: convert with x.float())")
    return x


def _check_gelu_approximate(op, approximate):
    if not isinstance(approximate, str) or approximate not in _GELU_APPROXIMATIONS:
        raise ValueError(f"{op}: approximate must be 'none' or 'tanh', got {approximate!r}")
    return approximate


def _check_nonzero(name, value):
    """A real number (not a bool, NaN) other than 0, for the arguments ops divide by."""
    value = check_number(name, value, low=None)
    if value == 0:
        raise ValueError(f"{name} must not be 0 (it divides), got {value}")
    return value


def _bool_tensor(mask, like):
    """A bool array as a tensor on ``like``'s backend, outside the graph."""
    return Tensor._make(mask, like._backend)


class Gelu(Function):
    """y = x Phi(x), Phi the standard normal CDF; dy/dx = Phi(x) + x phi(x), phi its
    density (Phi is kept from the forward when a gradient will be needed, so that the
    backward computes no erf)"""

    def forward(self, x, keep_cdf):
        if not keep_cdf:
            self.cdf = None
            return gelu_array(self.backend, x)
        y, self.cdf = gelu_array(self.backend, x, with_cdf=True)
        return y

    def backward(self, grad_out):
        return GeluGrad.apply(self.inputs[0], grad_out, cdf=self.cdf)


class GeluGrad(Function):
    """z = g (Phi(x) + x phi(x)), GELU's backward, with Phi(x) given (``cdf``);
    dz/dx = g phi(x) (2 - x^2), dz/dg = Phi(x) + x phi(x)"""

    def forward(self, x, g, cdf):
        self.cdf = cdf
        return gelu_grad_array(self.backend, x, g, cdf)

    def backward(self, grad_out):
        x, g = self.inputs
        grad_x = grad_g = None
        if x.requires_grad:
            square = x * x
            pdf = (square * -0.5).exp() * _INV_SQRT_2PI
            grad_x = grad_out * g * pdf * (2 - square)
        if g.requires_grad:
            grad_g = GeluGrad.apply(x, grad_out, cdf=self.cdf)
        return grad_x, grad_g


@_takes_tensor
def gelu(x, approximate="none"):
    """x * Phi(x), Phi the standard normal CDF: x/2 * (1 + erf(x / sqrt(2))), with erf
    as ``Tensor.erf`` computes it (float16 in float32, rounded once at the end).

    ``approximate='tanh'``: x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))).
    """
    _check_gelu_approximate("gelu", approximate)
    x = _activation_input("gelu", x)
    if approximate == "tanh":
        inner = (x + 0.044715 * x * x * x) * _SQRT_2_OVER_PI
        return 0.5 * x * (1 + inner.tanh())
    return Gelu.apply(x, keep_cdf=is_grad_enabled() and x.requires_grad)


@_takes_tensor
def silu(x, inplace=False):
    """x * sigmoid(x) (also called swish)."""
    _check_inplace("silu", inplace)
    return _activation_input("silu", x) * x.sigmoid()


@_takes_tensor
def mish(x, inplace=False):
    """x * tanh(softplus(x))."""
    _check_inplace("mish", inplace)
    return _activation_input("mish", x) * softplus(x).tanh()


class ELU(Function):
    """y = scale * x for x > 0, scale * alpha * (e^(input_scale * x) - 1) for x <= 0;
    dy/dx = scale, and scale * alpha * input_scale * e^(input_scale * x) for x <= 0

    ELU (scale = input_scale = 1), SELU (fixed alpha and scale) and CELU
    (input_scale = 1/alpha) are this op, as in PyTorch.  Its gradient at the
    kink x = 0 is the x <= 0 side's, and a NaN takes the x > 0 side: PyTorch's.
    """

    def forward(self, x, alpha, scale, input_scale):
        xp = self.xp
        self.alpha, self.scale, self.input_scale = alpha, scale, input_scale
        self.negative = x <= 0
        # e^(...) - 1 as expm1 (exact for small |x|), of min(x, 0): no overflow for large x
        curve = xp.expm1(xp.minimum(x, 0) * input_scale) * (alpha * scale)
        return xp.where(self.negative, curve, x * scale).astype(x.dtype, copy=False)

    def backward(self, grad_out):
        x = self.inputs[0]
        # Clipped at 0, as in the forward: e^(...) of a large x would be inf, and its
        # gradient (in a second derivative) inf * 0 = NaN, though where never picks it.
        curve = (x.clip(max=0) * self.input_scale).exp() * (
            self.alpha * self.scale * self.input_scale)
        return grad_out * where(_bool_tensor(self.negative, x), curve, self.scale)


@_takes_tensor
def elu(x, alpha=1.0, inplace=False):
    """x if x > 0 else alpha * (exp(x) - 1)."""
    alpha = check_number("elu: alpha", alpha, low=None)
    _check_inplace("elu", inplace)
    return ELU.apply(_activation_input("elu", x), alpha=alpha, scale=1.0, input_scale=1.0)


@_takes_tensor
def selu(x, inplace=False):
    """scale * (x if x > 0 else alpha * (exp(x) - 1)), with alpha = 1.6732632... and
    scale = 1.0507009... (self-normalising: keeps zero mean and unit variance through
    layers initialised for it)."""
    _check_inplace("selu", inplace)
    return ELU.apply(_activation_input("selu", x), alpha=_SELU_ALPHA, scale=_SELU_SCALE,
                     input_scale=1.0)


@_takes_tensor
def celu(x, alpha=1.0, inplace=False):
    """x if x > 0 else alpha * (exp(x / alpha) - 1) (alpha != 0)."""
    alpha = _check_nonzero("celu: alpha", alpha)
    _check_inplace("celu", inplace)
    return ELU.apply(_activation_input("celu", x), alpha=alpha, scale=1.0,
                     input_scale=1.0 / alpha)


class Softplus(Function):
    """y = log(1 + e^(beta x)) / beta, and y = x where beta x > threshold (PyTorch's linear
    region); dy/dx = sigmoid(beta x), and 1 there"""

    def forward(self, x, beta, threshold):
        xp = self.xp
        self.beta = beta
        z = x * beta
        self.linear = z > threshold
        # log(1 + e^z) = max(z, 0) + log(1 + e^-|z|): never overflows, exact in both tails
        curve = (xp.maximum(z, 0) + xp.log1p(xp.exp(-xp.abs(z)))) / beta
        return xp.where(self.linear, x, curve).astype(x.dtype, copy=False)

    def backward(self, grad_out):
        x = self.inputs[0]
        slope = (x * self.beta).sigmoid()
        return grad_out * where(_bool_tensor(self.linear, x), 1.0, slope)


@_takes_tensor
def softplus(x, beta=1.0, threshold=20.0):
    """log(1 + exp(beta * x)) / beta, or x where beta * x > threshold (beta != 0).

    Computed stably for any ``threshold``: where PyTorch's exp overflows (a
    threshold above ~88 in float32, ~709 in float64) this gives x, not inf.
    """
    beta = _check_nonzero("softplus: beta", beta)
    threshold = check_number("softplus: threshold", threshold, low=None)
    return Softplus.apply(_activation_input("softplus", x), beta=beta, threshold=threshold)


class Hardtanh(Function):
    """y = min(max(x, lo), hi); dy/dx = 1 for lo < x < hi, else 0 (0 at both bounds, as in
    PyTorch)"""

    def forward(self, x, lo, hi):
        self.inside = (x > lo) & (x < hi)
        return self.xp.clip(x, lo, hi).astype(x.dtype, copy=False)

    def backward(self, grad_out):
        return grad_out * _bool_tensor(self.inside, grad_out)


@_takes_tensor
def hardtanh(x, min_val=-1.0, max_val=1.0, inplace=False):
    """min(max(x, min_val), max_val)."""
    min_val = check_number("hardtanh: min_val", min_val, low=None)
    max_val = check_number("hardtanh: max_val", max_val, low=None)
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val ({min_val}) must not be greater than max_val "
                         f"({max_val})")
    _check_inplace("hardtanh", inplace)
    return Hardtanh.apply(_activation_input("hardtanh", x), lo=min_val, hi=max_val)


@_takes_tensor
def relu6(x, inplace=False):
    """min(max(x, 0), 6): hardtanh(x, 0, 6)."""
    _check_inplace("relu6", inplace)
    return Hardtanh.apply(_activation_input("relu6", x), lo=0.0, hi=6.0)


class Hardsigmoid(Function):
    """y = min(max(x + 3, 0), 6) / 6; dy/dx = 1/6 for -3 < x < 3, else 0 (0 at +-3, as in
    PyTorch)"""

    def forward(self, x):
        self.inside = (x > -3) & (x < 3)
        return (self.xp.clip(x + 3, 0, 6) / 6).astype(x.dtype, copy=False)

    def backward(self, grad_out):
        return grad_out * _bool_tensor(self.inside, grad_out) / 6


@_takes_tensor
def hardsigmoid(x, inplace=False):
    """min(max(x + 3, 0), 6) / 6: relu6(x + 3) / 6."""
    _check_inplace("hardsigmoid", inplace)
    return Hardsigmoid.apply(_activation_input("hardsigmoid", x))


class Hardswish(Function):
    """y = x * min(max(x + 3, 0), 6) / 6; dy/dx = 0 for x <= -3, x/3 + 1/2 for -3 < x < 3, and
    1 for x >= 3 (PyTorch's values at +-3; 1 at NaN, as in PyTorch)"""

    def forward(self, x):
        self.middle = (x > -3) & (x < 3)
        self.above = ~(x <= -3) & ~self.middle        # x >= 3, or NaN
        return (x * self.xp.clip(x + 3, 0, 6) / 6).astype(x.dtype, copy=False)

    def backward(self, grad_out):
        x = self.inputs[0]
        above = Tensor._make(self.above.astype(x.dtype), x._backend)   # 1 above, 0 below
        return grad_out * where(_bool_tensor(self.middle, x), x / 3 + 0.5, above)


@_takes_tensor
def hardswish(x, inplace=False):
    """x * relu6(x + 3) / 6."""
    _check_inplace("hardswish", inplace)
    return Hardswish.apply(_activation_input("hardswish", x))


_PAD_MODES = ("constant", "reflect", "replicate", "circular")


def _pad_index(mode, size, before, after):
    """Host index array: the element of an axis of ``size`` elements that each position of
    that axis, padded by (before, after) in ``mode``, reads.

    The patterns for size 4, padded by 2 on each side::

        reflect     2 1 | 0 1 2 3 | 2 1    mirrored about the edge element, not repeating it
        replicate   0 0 | 0 1 2 3 | 3 3    the edge element repeated
        circular    2 3 | 0 1 2 3 | 0 1    wrapped around from the other end

    A negative amount crops.  Reflect and replicate index the whole axis, as if
    padding first and cropping after (reflect by (-1, 2): ``1 2 3 | 2 1``);
    circular wraps around what is left after the crop (``1 2 3 | 1 2``), as
    PyTorch does.  The amounts must be within the mode's limits (see
    :func:`pad`).
    """
    if mode == "circular":
        start = max(-before, 0)
        kept = size - start - max(-after, 0)
        if kept <= 0:   # everything cropped (and nothing added: pad checks that)
            return np.zeros(0, dtype=np.int64)
        return start + np.arange(-max(before, 0), kept + max(after, 0)) % kept
    p = np.arange(-before, size + after)                  # positions in x's coordinates
    if mode == "reflect":
        p = np.abs(p)                                     # -1 -> 1, -2 -> 2, ...
        return (size - 1) - np.abs((size - 1) - p)        # size -> size - 2, ...
    return np.clip(p, 0, size - 1)                        # replicate


def pad(x, pad, mode="constant", value=0.0):
    """Pad, PyTorch-style: ``pad = (left, right, top, bottom, ...)`` lists
    (before, after) pairs starting from the LAST dimension.  Negative amounts
    crop.  The result is a new tensor, even when nothing is padded.

    ``mode``:

    * ``"constant"`` (default): pads with ``value`` (``None`` means 0, as in
      PyTorch); any number of dimensions.
    * ``"reflect"``: mirrors x about its edge element (``2 1 | 0 1 2 3 | 2 1``);
      each amount must be smaller than the size of its dimension.
    * ``"replicate"``: repeats the edge element (``0 0 | 0 1 2 3 | 3 3``).
    * ``"circular"``: wraps around (``2 3 | 0 1 2 3 | 0 1``), at most once: each
      amount at most the size of its dimension left after any crop.

    The last three take no ``value`` (0 or None only) and, as in PyTorch, pad
    the last 1, 2 or 3 dimensions of a batched ``(N, C, ...)`` or unbatched
    ``(C, ...)`` input: k (before, after) pairs need a (k+1)- or (k+2)-d x.
    Reflect and replicate must leave at least one element in each padded
    dimension (and cannot pad an empty one).  The three gather x along each padded
    axis with an index array (see _pad_index), so the gradient adds each
    output position's gradient back onto the element it copies.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"pad: x must be a Tensor, got {type(x).__name__}")
    amounts = int_list(pad) if isinstance(pad, (tuple, list)) else None
    if amounts is None:
        raise TypeError(f"pad: pad must be a tuple or list of ints of even length, (left, "
                        f"right, top, bottom, ...), got {pad!r}")
    if not isinstance(mode, str) or mode not in _PAD_MODES:
        raise ValueError(f"pad: mode must be one of {', '.join(map(repr, _PAD_MODES))}, "
                         f"got {mode!r}")
    pad = tuple(amounts)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: expected an even number of ints, at most 2 per dimension of "
                         f"the {x.ndim}-d input of shape {shape_str(x.shape)}, got {pad}")
    widths = [(0, 0)] * x.ndim
    for k in range(len(pad) // 2):
        widths[x.ndim - 1 - k] = (int(pad[2 * k]), int(pad[2 * k + 1]))
    if mode != "constant":
        return _pad_by_index(x, pad, widths, mode, value)
    if value is None:
        value = 0.0
    if any(a < 0 or b < 0 for a, b in widths):
        for axis, ((a, b), size) in enumerate(zip(widths, x.shape)):
            if max(-a, 0) + max(-b, 0) > size:
                raise ValueError(f"pad: {pad} crops {max(-a, 0) + max(-b, 0)} elements from "
                                 f"dimension {axis} of the input of shape "
                                 f"{shape_str(x.shape)}, which has only {size}")
        crop = tuple(slice(max(-a, 0), s - max(-b, 0)) for (a, b), s in zip(widths, x.shape))
        x = x[crop]
        widths = [(max(a, 0), max(b, 0)) for a, b in widths]
    # Always through Pad, which copies: with nothing to add, x (or the cropped view
    # of it) would come back, and an in-place write to the result would change x.
    return x.pad(widths, value=value)


def _pad_by_index(x, pad, widths, mode, value):
    """:func:`pad` in the reflect, replicate and circular modes: checks, then one gather
    per padded axis (an indexing op, whose backward scatter-adds the gradient)."""
    try:
        takes_value = value is not None and float(value) != 0
    except (TypeError, ValueError):
        takes_value = True
    if takes_value:
        raise ValueError(f"pad: mode={mode!r} copies x's own elements and takes no value "
                         f"(0 or None), got value={value!r}")
    k = len(pad) // 2
    if not 1 <= k <= 3 or x.ndim not in (k + 1, k + 2):
        raise ValueError(f"pad: mode={mode!r} pads the last 1, 2 or 3 dimensions of a batched "
                         f"(N, C, ...) or unbatched (C, ...) input, so {k} (before, after) "
                         f"pair(s) need a {k + 1}-d or {k + 2}-d input; got pad {pad} for the "
                         f"{x.ndim}-d input of shape {shape_str(x.shape)}")
    where = "dimension {} (size {}) of the input of shape " + shape_str(x.shape)
    for axis, ((a, b), size) in enumerate(zip(widths, x.shape)):
        if axis < x.ndim - k:
            continue
        at = where.format(axis, size)
        if mode == "circular":
            kept = size - max(-a, 0) - max(-b, 0)
            if kept < 0:
                raise ValueError(f"pad: {pad} crops {size - kept} elements from {at}, "
                                 f"which has only {size}")
            if max(a, b) > kept:
                raise ValueError(f"pad: mode='circular' wraps around at most once, so each "
                                 f"amount must be <= the {kept} element(s) left of {at} after "
                                 f"any crop; got ({a}, {b})")
            continue
        if size == 0:
            raise ValueError(f"pad: mode={mode!r} cannot pad {at}: it has no element to "
                             f"{'reflect' if mode == 'reflect' else 'repeat'}")
        if mode == "reflect" and max(a, b) >= size:
            raise ValueError(f"pad: mode='reflect' needs each amount < the size of its "
                             f"dimension; got ({a}, {b}) for {at}, so at most {size - 1}")
        if size + a + b < 1:
            raise ValueError(f"pad: mode={mode!r} must leave at least 1 element; ({a}, {b}) "
                             f"leaves {size + a + b} of {at}")
    y = x
    for axis, (a, b) in enumerate(widths):
        if (a, b) != (0, 0):
            # The index depends on the sizes alone: copied to x's device once.
            index = Tensor._constant(_pad_index(mode, x.shape[axis], a, b), None, x._backend)
            y = y[(slice(None),) * axis + (index,)]
    # With nothing to pad, still a copy (see the constant mode).
    return x.pad([(0, 0)] * x.ndim) if y is x else y


def dropout(x, p=0.5, training=True, inplace=False):
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p).

    The mask is drawn on the host from :func:`tinygrad_cnn.get_rng` and moved
    to x's device, so a seed gives the same mask everywhere.  Identity when
    ``training`` is False or p == 0; zeros of x's dtype when p == 1.  As in
    PyTorch, an integer or bool tensor passes through the identity cases and
    is zeroed by p == 1, but any other p needs a floating-point tensor.
    """
    p = check_probability("dropout: p", p)
    _check_inplace("dropout", inplace)
    if not isinstance(x, Tensor):
        raise TypeError(f"dropout: x must be a Tensor, got {type(x).__name__}")
    training = check_flag("training", training, "dropout")
    if not training or p == 0:
        return x
    if p == 1:
        # x * 0 keeps the graph (a zero gradient) and, for an integer tensor, the dtype.
        return x * 0.0 if x.dtype.kind == "f" else zeros_like(x)
    if x.dtype.kind != "f":   # the scale 1/(1-p) would be cut to an integer
        raise TypeError(f"dropout: x has dtype {x.dtype}; dropout scales the kept elements by "
                        f"1/(1-p) and needs a floating-point tensor (convert with x.float())")
    keep = get_rng().random(x.shape) >= p
    scale = (keep / (1.0 - p)).astype(x.dtype)
    if x._backend.cache_blocking:   # stored like x, so the product reads one order
        scale = in_order_of(x._backend, scale, x.data)
    return x * Tensor._make(x._backend.asarray(scale), x._backend)


# ---- resampling, rearranging and channel dropout -----------------------------------------
# interpolate, pixel_shuffle, pixel_unshuffle and dropout2d: PyTorch's ops of those names.
_INTERPOLATE_MODES = {   # mode -> the input dimensions it takes
    "nearest": (3, 4), "nearest-exact": (3, 4), "area": (3, 4), "linear": (3,), "bilinear": (4,),
    "bicubic": (4,)}
_INTERPOLATING = ("linear", "bilinear", "bicubic")   # the modes that take align_corners
_INTERPOLATE_LAYOUTS = {(3,): "(N, C, L)", (4,): "(N, C, H, W)",
                        (3, 4): "(N, C, L) or (N, C, H, W)"}
# PyTorch's deprecated aliases of interpolate, and the call that does the same here.
_UPSAMPLE_ALIASES = {
    "upsample": "F.interpolate(x, size, scale_factor, mode, align_corners)",
    "upsample_nearest": "F.interpolate(x, size, scale_factor)",
    "upsample_bilinear": "F.interpolate(x, size, scale_factor, mode='bilinear', "
                         "align_corners=True)",
}


def _upsample_alias_error(name):
    from ._porting import hint_error
    return hint_error(f"module '{__name__}'", name, f"(a PyTorch name, deprecated there in "
                      f"favour of interpolate): use {_UPSAMPLE_ALIASES[name]}")


class Resample(Function):
    """y = x with one axis resampled by a linear map m (out, in) of that axis:
    y[..., o, :] = sum_i m[o, i] x[..., i, :] (a gather where m copies, for nearest);
    the gradient is the same map transposed, so each is the other's backward"""

    def forward(self, x, axis_map, axis):
        self.axis_map, self.axis = axis_map, axis
        return resample_axis_array(self.backend, x, axis_map, axis)

    def backward(self, grad_out):
        return Resample.apply(grad_out, axis_map=self.axis_map.T, axis=self.axis)


def _interpolate_settings(op, size, scale_factor, mode, align_corners, recompute_scale_factor,
                          antialias=False):
    """The settings of :func:`interpolate` that need no input, checked: returns
    (align_corners, recompute) with align_corners False for the linear modes if None."""
    if not isinstance(mode, str) or mode not in _INTERPOLATE_MODES:
        raise ValueError(f"{op}: mode must be one of {', '.join(map(repr, _INTERPOLATE_MODES))}, "
                         f"got {mode!r} (PyTorch's 'trilinear', for volumes, is not provided)")
    if mode in _INTERPOLATING:
        align_corners = False if align_corners is None else check_flag(
            "align_corners", align_corners, op)
    elif align_corners is not None:
        raise ValueError(f"{op}: align_corners can only be set with the interpolating modes "
                         f"'linear', 'bilinear' and 'bicubic'; mode={mode!r} copies or averages "
                         f"pixels and takes align_corners=None, got {align_corners!r}")
    if (size is None) == (scale_factor is None):
        given = ("neither" if size is None
                 else f"both (size={size!r}, scale_factor={scale_factor!r})")
        raise ValueError(f"{op}: give exactly one of size and scale_factor, got {given}")
    recompute = (False if recompute_scale_factor is None
                 else check_flag("recompute_scale_factor", recompute_scale_factor, op))
    if recompute and size is not None:
        raise ValueError(f"{op}: recompute_scale_factor=True is not meaningful with an explicit "
                         f"size (it recomputes the scale from the output size that scale_factor "
                         f"gives); pass scale_factor, or recompute_scale_factor=None")
    if check_flag("antialias", antialias, op):
        raise ValueError(f"{op}: antialias=True is not provided (PyTorch's antialiased "
                         f"downsampling); resample with antialias=False, or smooth first")
    _per_axis(op, "size" if size is not None else "scale_factor",
              size if size is not None else scale_factor)
    return align_corners, recompute


def _per_axis(op, name, value, x_shape=None):
    """``size`` (ints >= 1) or ``scale_factor`` (finite numbers > 0), one per spatial
    axis of an input of ``x_shape`` (one value stands for all); without ``x_shape``,
    only the values are checked (a layer's settings, before any input)."""
    n = None if x_shape is None else len(x_shape) - 2
    sequence = isinstance(value, (tuple, list)) or getattr(value, "ndim", 0) == 1
    entries = list(value) if sequence else [value] * (n or 1)
    if n is not None and len(entries) != n:
        raise ValueError(f"{op}: {name}={value!r} gives {len(entries)} values but x of shape "
                         f"{shape_str(x_shape)} has {n} spatial dimension(s); expected one "
                         f"value, or {n}")
    if name == "size":
        return tuple(check_int(f"{op}: size", v, low=1) for v in entries)
    return tuple(check_finite(f"{op}: scale_factor",
                              check_number(f"{op}: scale_factor", v, low=0, open_low=True))
                 for v in entries)


def _interpolate_axes(op, x_shape, size, scale_factor, recompute):
    """[(input size, output size, scale factor or None)] per spatial axis.  A scale
    factor gives the output size floor(size * scale_factor), as in PyTorch, and is
    the scale the interpolation uses, unless recomputed (then it is size / output size)."""
    spatial = x_shape[2:]
    if size is not None:
        return [(s, o, None) for s, o in zip(spatial, _per_axis(op, "size", size, x_shape))]
    scales = _per_axis(op, "scale_factor", scale_factor, x_shape)
    out = [int(s * f) for s, f in zip(spatial, scales)]   # floor, in float64, as PyTorch
    if min(out) < 1:
        raise ValueError(f"{op}: scale_factor={scale_factor!r} gives x of shape "
                         f"{shape_str(x_shape)} an empty output, spatial size {tuple(out)} "
                         f"(floor(size * scale_factor)); expected at least 1 per dimension")
    return [(s, o, None if recompute else float(f)) for s, o, f in zip(spatial, out, scales)]


def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resample x (N, C, L) or (N, C, H, W) to ``size`` or by ``scale_factor``, as
    ``torch.nn.functional.interpolate``.

    Give exactly one of ``size`` (an int, or one per spatial axis) and
    ``scale_factor`` (a number > 0, or one per axis; the output size is
    ``floor(size * scale_factor)``).  Modes:

    * ``"nearest"``: output o copies input ``floor(o * s)`` (OpenCV's rule, PyTorch's
      default), ``s = 1 / scale_factor`` where given (unless
      ``recompute_scale_factor=True``), else input size / output size;
    * ``"nearest-exact"``: input ``floor((o + 0.5) * s)`` (Pillow's and
      scikit-image's rule; pixel centres line up);
    * ``"linear"`` (3-D x) and ``"bilinear"`` (4-D x): linear in each axis between
      the two inputs around the source position ``(o + 0.5) * s - 0.5`` (clipped at
      0), or with ``align_corners=True`` around ``o * (size - 1) / (output size - 1)``,
      which keeps the corner pixels' values;
    * ``"bicubic"`` (4-D x): Keys' cubic convolution (a = -0.75, as PyTorch's and
      OpenCV's) in each axis over the four inputs around the source position, which
      is the linear modes' without the clipping at 0; taps beyond the border read
      the border pixel.  It can overshoot the input's range, as PyTorch's does (no
      clamping);
    * ``"area"``: the mean over each output pixel's share of the input
      (:func:`adaptive_avg_pool2d`).

    The source positions are computed as PyTorch's CPU kernels compute them, in
    float32 for a float32 input and float64 for float64, so the two may pick
    different pixels where a position is a whole number (as PyTorch's do).  Each
    axis follows the rule of PyTorch's 1-D kernels; its 2-D "nearest" kernel
    leaves that rule on some sizes (it copies an axis kept at its size under a
    fractional scale factor: a 2x2 image by 1.1, where this repeats pixel 0).  The
    gradient is the exact adjoint of this forward; PyTorch's 1-D nearest backward
    finds its pixels by a rule of its own (in float32, copying an axis kept at its
    size) and can disagree with its forward: 2 pixels by ``scale_factor=1.1``
    copy pixel 0 twice, but its gradient sends the second output's to pixel 1;
    likewise PyTorch's bicubic backward copies the gradient of an image kept at its
    size under a fractional scale factor (4x5 by 1.1), which its forward does not
    copy.  ``align_corners`` is for the interpolating modes only, the linear ones
    and bicubic (None there means False).
    Downsampling is plain resampling, without antialiasing.  The modes but
    "area" are separable: each spatial axis is resampled by a small linear map built on the
    host from the sizes (:func:`tinygrad_cnn.conv_arrays.resample_map`) and
    applied as a gather (nearest) or as matrix products over stretches of the
    axis (a banded matrix of 2 taps per output for the linear modes, 4 for
    bicubic), whose gradient is the transposed map, so gradients of any order come
    free.  (In the linear and bicubic modes an inf or NaN in x then reaches every
    output of the block of the map that reads it, along a whole axis of up to 32
    pixels; PyTorch's stays with the neighbouring outputs.)  PyTorch's deprecated
    ``upsample`` aliases are not provided; ``nn.Upsample`` is the layer.
    """
    op = "interpolate"
    align_corners, recompute = _interpolate_settings(op, size, scale_factor, mode, align_corners,
                                                     recompute_scale_factor, antialias)
    ndims = _INTERPOLATE_MODES[mode]
    if isinstance(x, Tensor) and x.ndim not in ndims:
        image = "; for (N, C, L) sequences use mode='linear', for one image (C, H, W) " \
                "x.unsqueeze(0)"
        other = {"linear": "; for (N, C, H, W) images use mode='bilinear'",
                 "bilinear": image, "bicubic": image}.get(mode, "")
        raise ValueError(f"{op}: mode={mode!r} expects x of shape {_INTERPOLATE_LAYOUTS[ndims]} "
                         f"({' or '.join(map(str, ndims))} dimensions), got shape "
                         f"{shape_str(x.shape)}{other}")
    _check_tensor(op, "x", x, ndims, _INTERPOLATE_LAYOUTS[ndims], sized=x.ndim - 2)
    axes = _interpolate_axes(op, x.shape, size, scale_factor, recompute)
    if mode == "area":   # PyTorch's area mode is adaptive average pooling
        if x.ndim == 4:
            return adaptive_avg_pool2d(x, tuple(o for _, o, _ in axes))
        return adaptive_avg_pool2d(x.unsqueeze(2), (1, axes[0][1])).squeeze(2)
    kind = {"linear": "linear", "bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    # The source positions in PyTorch's precision for x's dtype (see conv_arrays)
    precision = "float64" if x.dtype == np.float64 else "float32"
    maps = [(axis, resample_map(kind, s, o, scale, align_corners, precision))
            for axis, (s, o, scale) in zip(range(-len(axes), 0), axes)]
    # An axis kept as it is needs no pass; but the result is a new tensor, as
    # PyTorch's is, so at least one axis is copied.  The axis that shrinks most
    # goes first: the second pass then has less to read.
    maps = [(axis, m) for axis, m in maps if not m.is_identity] or maps[-1:]
    maps.sort(key=lambda am: am[1].n_out / am[1].size)
    y = x
    for axis, axis_map in maps:
        y = Resample.apply(y, axis_map=axis_map, axis=axis)
    return y


def _own_copy(y, x):
    """y, or a copy of it where it is a view of x: a rearrangement that moves nothing
    (a factor of 1, or 1x1 images) is a reshape, but its result is a new tensor, as
    PyTorch's is."""
    with x._backend.context():
        shared = x._backend.xp.may_share_memory(y.data, x.data)
    return y.pad([(0, 0)] * y.ndim) if shared else y


def _check_shuffle(op, x, factor_name, factor):
    r = check_int(f"{op}: {factor_name}", factor, low=1)
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: x must be a Tensor, got {type(x).__name__}")
    if x.ndim < 3:
        layout = "(*, C*r*r, H, W)" if op == "pixel_shuffle" else "(*, C, H*r, W*r)"
        raise ValueError(f"{op}: expected x of shape {layout} (at least 3 dimensions), got "
                         f"shape {shape_str(x.shape)}")
    return r


def pixel_shuffle(x, upscale_factor):
    """Rearrange channels into space: x (*, C*r*r, H, W) -> (*, C, H*r, W*r), r =
    ``upscale_factor``, as ``torch.nn.functional.pixel_shuffle`` (the sub-pixel
    convolution of Shi et al., 2016): output pixel (h*r + i, w*r + j) of channel c is
    input channel c*r*r + i*r + j at (h, w).  Any number of leading dimensions.
    A reshape and a permute, so its gradient is :func:`pixel_unshuffle`'s."""
    op = "pixel_shuffle"
    r = _check_shuffle(op, x, "upscale_factor", upscale_factor)
    *lead, C, H, W = x.shape
    if C % (r * r):
        raise ValueError(f"{op}: x of shape {shape_str(x.shape)} has {C} channels, not "
                         f"divisible by upscale_factor**2 = {r * r}; expected x of shape "
                         f"(*, C*{r * r}, H, W)")
    k, OC = len(lead), C // (r * r)
    y = x.reshape(*lead, OC, r, r, H, W)                          # (*, OC, r, r, H, W)
    y = y.permute(*range(k), k, k + 3, k + 1, k + 4, k + 2)       # (*, OC, H, r, W, r)
    return _own_copy(y.reshape(*lead, OC, H * r, W * r), x)       # (*, OC, H*r, W*r)


def pixel_unshuffle(x, downscale_factor):
    """Rearrange space into channels, the inverse of :func:`pixel_shuffle`: x
    (*, C, H*r, W*r) -> (*, C*r*r, H, W), r = ``downscale_factor``, as
    ``torch.nn.functional.pixel_unshuffle``; each r x r block of a channel becomes
    r*r channels at one position.  Any number of leading dimensions."""
    op = "pixel_unshuffle"
    r = _check_shuffle(op, x, "downscale_factor", downscale_factor)
    *lead, C, H, W = x.shape
    for name, n in (("height", H), ("width", W)):
        if n % r:
            raise ValueError(f"{op}: x of shape {shape_str(x.shape)} has {name} {n}, not "
                             f"divisible by downscale_factor {r}; expected x of shape "
                             f"(*, C, H*{r}, W*{r})")
    k, OH, OW = len(lead), H // r, W // r
    y = x.reshape(*lead, C, OH, r, OW, r)                         # (*, C, OH, r, OW, r)
    y = y.permute(*range(k), k, k + 2, k + 4, k + 1, k + 3)       # (*, C, r, r, OH, OW)
    return _own_copy(y.reshape(*lead, C * r * r, OH, OW), x)      # (*, C*r*r, OH, OW)


def dropout2d(x, p=0.5, training=True, inplace=False):
    """Channel dropout: zero each whole channel x[n, c] of x (N, C, H, W) with
    probability p and scale the rest by 1/(1-p), as ``torch.nn.functional.dropout2d``
    (neighbouring pixels of a feature map are correlated, so dropping single ones
    regularises little).

    One draw per (sample, channel) from :func:`tinygrad_cnn.get_rng`, as
    :func:`dropout` draws, so a seed gives the same mask everywhere.  Identity
    when ``training`` is False or p == 0, zeros when p == 1.  Only 4-D inputs: a
    3-D x is ambiguous (PyTorch 2.x reads it as (N, C, L) and warns that it will
    read it as one image (C, H, W)), so it is refused; unsqueeze it to say which.
    ``inplace=True`` is refused, as for :func:`dropout`.
    """
    p = check_probability("dropout2d: p", p)
    _check_inplace("dropout2d", inplace)
    if not isinstance(x, Tensor):
        raise TypeError(f"dropout2d: x must be a Tensor, got {type(x).__name__}")
    training = check_flag("training", training, "dropout2d")
    if x.ndim != 4:
        hint = (" (3-D is ambiguous: PyTorch 2.x reads it as (N, C, L), warning that it will "
                "read it as one image (C, H, W); pass x.unsqueeze(0) for one image, or "
                "x.unsqueeze(-1) to drop channels of (N, C, L))" if x.ndim == 3 else
                "; use dropout for other shapes")
        raise ValueError(f"dropout2d: expected x of shape (N, C, H, W) (4 dimensions), got "
                         f"shape {shape_str(x.shape)}{hint}")
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0.0 if x.dtype.kind == "f" else zeros_like(x)
    if x.dtype.kind != "f":
        raise TypeError(f"dropout2d: x has dtype {x.dtype}; dropout scales the kept channels by "
                        f"1/(1-p) and needs a floating-point tensor (convert with x.float())")
    N, C = x.shape[:2]
    keep = get_rng().random((N, C)) >= p
    scale = (keep / (1.0 - p)).astype(x.dtype).reshape(N, C, 1, 1)   # broadcast over H, W
    return x * Tensor._make(x._backend.asarray(scale), x._backend)
