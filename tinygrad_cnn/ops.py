"""The elementwise, reduction and shape ops, one ``Function`` each.

``forward`` computes on raw arrays with ``self.xp``; ``backward`` returns
the input gradients built from tensor ops, so gradients are differentiable
again (``create_graph=True``).  Gradients of broadcast operands are summed
back to the operand's shape with ``sum_to``.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .autograd import Function, is_grad_enabled
from .backend import one_axis_gather
from .conv_arrays import contiguous, erf_array, in_order_of, is_batch_last, tiled_copy_pays
from .tensor import Tensor


def check_broadcast(a, b, op):
    """Raise a clear error when shapes ``a`` and ``b`` do not broadcast."""
    if a == b:   # the common case, without NumPy's general (and slower) rule
        return a
    try:
        return np.broadcast_shapes(a, b)
    except ValueError:
        raise ValueError(f"{op}: shapes {a} and {b} cannot be broadcast together "
                         f"(trailing dimensions must be equal or 1)") from None


def check_broadcast_to(shape, target):
    if any(t < 0 for t in target):
        raise ValueError(f"cannot broadcast a tensor of shape {shape} to {target}: "
                         f"sizes must be >= 0")
    if len(target) < len(shape) or any(
            s != t and s != 1 for s, t in zip(shape[::-1], target[::-1])):
        raise ValueError(f"cannot broadcast a tensor of shape {shape} to {target}")


def _const(array, like):
    """An array as a tensor that carries no gradient (masks, signs)."""
    return Tensor._make(array.astype(like.dtype, copy=False), like._backend)


def _mask(mask, like):
    """A bool mask as a tensor that carries no gradient, kept bool: ``grad_out *
    mask`` then reads one byte per element and skips a cast pass over the mask."""
    return Tensor._make(mask, like._backend)


class _Binary(Function):
    """Shared forward check for broadcasting binary ops."""

    def check(self, x, y):
        """(x, y) after checking their shapes broadcast; y of x's shape is stored
        like x (NumPy reads arrays of two orders in one pass across the cache)."""
        check_broadcast(x.shape, y.shape, self.name)
        if x.shape == y.shape and x.strides != y.strides:
            y = in_order_of(self.backend, y, x)
        return x, y


# ---- arithmetic -------------------------------------------------------------------
class Add(_Binary):
    """z = x + y"""

    def forward(self, x, y):
        x, y = self.check(x, y)
        return x + y

    def backward(self, grad_out):
        x, y = self.inputs
        return grad_out.sum_to(x.shape), grad_out.sum_to(y.shape)


class Sub(_Binary):
    """z = x - y"""

    def forward(self, x, y):
        x, y = self.check(x, y)
        return x - y

    def backward(self, grad_out):
        x, y = self.inputs
        return grad_out.sum_to(x.shape), (-grad_out).sum_to(y.shape)


class Mul(_Binary):
    """z = x * y"""

    def forward(self, x, y):
        x, y = self.check(x, y)
        return x * y

    def backward(self, grad_out):
        x, y = self.inputs
        grad_x = (grad_out * y).sum_to(x.shape) if x.requires_grad else None
        grad_y = (grad_out * x).sum_to(y.shape) if y.requires_grad else None
        return grad_x, grad_y


class Div(_Binary):
    """z = x / y"""

    def forward(self, x, y):
        x, y = self.check(x, y)
        return x / y

    def backward(self, grad_out):
        x, y = self.inputs
        grad_x = (grad_out / y).sum_to(x.shape) if x.requires_grad else None
        grad_y = (-grad_out * x / (y * y)).sum_to(y.shape) if y.requires_grad else None
        return grad_x, grad_y


class Neg(Function):
    """y = -x"""

    def forward(self, x):
        return -x

    def backward(self, grad_out):
        return -grad_out


class PowConst(Function):
    """y = x ** c for a constant number c"""

    def forward(self, x, exponent):
        self.exponent = exponent
        if x.dtype.kind == "f":
            return x ** self.backend.constant(exponent, x.dtype)
        if isinstance(exponent, numbers.Integral) and exponent < 0:
            raise ValueError(integer_power_message(x.dtype))
        return x ** exponent

    def backward(self, grad_out):
        (x,), c = self.inputs, self.exponent
        if c == 0:
            return grad_out * 0.0
        return grad_out * c * x ** (c - 1) if c != 1 else grad_out


class Pow(_Binary):
    """z = x ** y, both tensors: dz/dx = y x^(y-1), dz/dy = z log x"""

    def forward(self, x, y):
        x, y = self.check(x, y)
        # A bool base counts: NumPy computes bool ** int in the int's dtype.
        if x.dtype.kind in "biu" and y.dtype.kind in "iu":   # checked on the device
            self.backend.check(y < 0, ValueError, integer_power_message(x.dtype))
        return x ** y

    def backward(self, grad_out):
        x, y = self.inputs
        grad_x = None
        if x.requires_grad:
            # Where y == 0, x^y is constant in x; a base of 1 there keeps the
            # formula finite at x == 0 (0 * 0^-1 would be nan).
            keep = _const(y.data != 0, y)
            base = x * keep + (1 - keep)
            grad_x = (grad_out * y * base ** (y - 1)).sum_to(x.shape)
        grad_y = None
        if y.requires_grad:
            # log x is taken only where x > 0; elsewhere z log x is 0 (x == 0) or
            # undefined (x < 0: NaN, as PyTorch's, rather than a plausible 0).
            positive = _const(x.data > 0, x)
            safe_x = where_positive(x)
            undefined = _const(self.xp.where(x.data < 0, np.nan, 0.0), grad_out)
            grad_y = (grad_out * self.output * safe_x.log() * positive + undefined).sum_to(y.shape)
        return grad_x, grad_y


def integer_power_message(dtype):
    return (f"power: an integer tensor (dtype {dtype}) to a negative integer power has no "
            f"integer result; use a float tensor (x.astype('float32')) or a float exponent")


def where_positive(x):
    """x where x > 0, else 1 (so log of it is finite and differentiable)."""
    mask = _const(x.data > 0, x)
    return x * mask + (1 - mask)


class MatMul(Function):
    """z = x @ y (1-D, 2-D and batched, as numpy.matmul)"""

    def forward(self, x, y):
        _check_matmul(x.shape, y.shape)
        if x.shape[-1] == 1 and x.ndim > 1 and y.ndim > 1:
            # An outer product (a linear layer's weight gradient at batch 1):
            # NumPy's matmul takes ~3x longer for it than the broadcast product.
            return self.xp.multiply(x, y)
        # Matrices that BLAS cannot read in place get copied by matmul; where
        # that copy would read across the cache, ours is several times faster.
        x, y = (contiguous(self.backend, a)
                if not _blas_ready(a) and tiled_copy_pays(self.backend, a) else a
                for a in (x, y))
        return self.xp.matmul(x, y)

    def backward(self, grad_out):
        x, y = self.inputs
        if x.ndim == 1 and y.ndim == 1:         # dot product: grad_out is 0-d
            return grad_out * y, grad_out * x
        if x.ndim == 1:                         # (K) @ (..., K, N) -> (..., N)
            g = grad_out.unsqueeze(-2)                          # (..., 1, N)
            grad_x = (g @ y.swapaxes(-1, -2)).sum_to((1, x.shape[0]))  # (1, K)
            grad_y = x.unsqueeze(-1) @ g                        # (..., K, N)
            return grad_x.reshape(x.shape), grad_y.sum_to(y.shape)
        if y.ndim == 1:                         # (..., M, K) @ (K) -> (..., M)
            g = grad_out.unsqueeze(-1)                          # (..., M, 1)
            grad_x = g @ y.unsqueeze(-2)                        # (..., M, K)
            grad_y = (x.swapaxes(-1, -2) @ g).sum_to((y.shape[0], 1))  # (K, 1)
            return grad_x.sum_to(x.shape), grad_y.reshape(y.shape)
        grad_x = (grad_out @ y.swapaxes(-1, -2)).sum_to(x.shape)  # (..., M, K)
        grad_y = (x.swapaxes(-1, -2) @ grad_out).sum_to(y.shape)  # (..., K, N)
        return grad_x, grad_y


def _check_matmul(x_shape, y_shape):
    """Raise a clear error unless arrays of these shapes can be multiplied (numpy.matmul)."""
    if not x_shape or not y_shape:
        raise ValueError(f"matmul: operands must have at least one dimension, got "
                         f"shapes {x_shape} and {y_shape}")
    k_x = x_shape[-1]
    k_y = y_shape[-2] if len(y_shape) > 1 else y_shape[0]
    if k_x != k_y:
        raise ValueError(f"matmul: inner dimensions differ: x {x_shape} @ y {y_shape} "
                         f"({k_x} != {k_y})")
    if len(x_shape) > 2 and len(y_shape) > 2:
        check_broadcast(x_shape[:-2], y_shape[:-2], "matmul batch dimensions")


def _blas_ready(a):
    """Can BLAS read the matrices of ``a`` (its last two axes) in place: rows or
    columns contiguous?"""
    if a.ndim < 2:
        return True
    (s0, s1), (d0, d1), item = a.strides[-2:], a.shape[-2:], a.itemsize
    return (s1 == item and s0 >= d1 * item) or (s0 == item and s1 >= d0 * item)


# ---- elementwise functions --------------------------------------------------------
class Exp(Function):
    """y = e^x; dy/dx = y"""

    def forward(self, x):
        return self.xp.exp(x)

    def backward(self, grad_out):
        return grad_out * self.output


class Log(Function):
    """y = ln x; dy/dx = 1/x"""

    def forward(self, x):
        return self.xp.log(x)

    def backward(self, grad_out):
        return grad_out / self.inputs[0]


class Sqrt(Function):
    """y = sqrt x; dy/dx = 1/(2y)"""

    def forward(self, x):
        return self.xp.sqrt(x)

    def backward(self, grad_out):
        return grad_out / (2 * self.output)


class Abs(Function):
    """y = |x|; dy/dx = sign x (0 at 0)"""

    def forward(self, x):
        return self.xp.abs(x)

    def backward(self, grad_out):
        x = self.inputs[0]
        return grad_out * _const(self.xp.sign(x.data), x)


class Sin(Function):
    """y = sin x; dy/dx = cos x"""

    def forward(self, x):
        return self.xp.sin(x)

    def backward(self, grad_out):
        return grad_out * self.inputs[0].cos()


class Cos(Function):
    """y = cos x; dy/dx = -sin x"""

    def forward(self, x):
        return self.xp.cos(x)

    def backward(self, grad_out):
        return -grad_out * self.inputs[0].sin()


class Log1p(Function):
    """y = ln(1 + x), accurate for small x; dy/dx = 1/(1 + x)"""

    def forward(self, x):
        return self.xp.log1p(x)

    def backward(self, grad_out):
        return grad_out / (1 + self.inputs[0])


class Expm1(Function):
    """y = e^x - 1, accurate for small x; dy/dx = y + 1"""

    def forward(self, x):
        return self.xp.expm1(x)

    def backward(self, grad_out):
        return grad_out * (self.output + 1)


_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)


class Erf(Function):
    """y = erf x; dy/dx = 2/sqrt(pi) e^(-x^2)"""

    def forward(self, x):
        return erf_array(self.backend, x)   # NumPy has no erf: conv_arrays has one

    def backward(self, grad_out):
        x = self.inputs[0]
        return grad_out * (-(x * x)).exp() * _TWO_OVER_SQRT_PI


class Tanh(Function):
    """y = tanh x; dy/dx = 1 - y^2"""

    def forward(self, x):
        return self.xp.tanh(x)

    def backward(self, grad_out):
        y = self.output
        return grad_out * (1 - y * y)


class Sigmoid(Function):
    """y = 1 / (1 + e^-x); dy/dx = y (1 - y)"""

    def forward(self, x):
        xp = self.xp
        # Two branches so that exp never overflows.
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)

    def backward(self, grad_out):
        y = self.output
        return grad_out * y * (1 - y)


class ReLU(Function):
    """y = max(x, 0); dy/dx = [x > 0]"""

    def forward(self, x):
        self.mask = x > 0
        return self.xp.maximum(x, 0)  # not x * mask, which gives -0.0 for x < 0

    def backward(self, grad_out):
        return grad_out * _mask(self.mask, grad_out)


class LeakyReLU(Function):
    """y = x if x > 0 else slope * x"""

    def forward(self, x, slope):
        self.scale = self.xp.where(x > 0, 1, slope).astype(x.dtype)
        return x * self.scale

    def backward(self, grad_out):
        return grad_out * _const(self.scale, grad_out)


class Maximum(_Binary):
    """z = max(x, y); ties send half the gradient to each side, a NaN all of it to itself"""

    def forward(self, x, y):
        x, y = self.check(x, y)
        return self.xp.maximum(x, y)

    def backward(self, grad_out):
        x, y = self.inputs
        return _split_grad(grad_out, x.data > y.data, x, y)


class Minimum(_Binary):
    """z = min(x, y); ties send half the gradient to each side, a NaN all of it to itself"""

    def forward(self, x, y):
        x, y = self.check(x, y)
        return self.xp.minimum(x, y)

    def backward(self, grad_out):
        x, y = self.inputs
        return _split_grad(grad_out, x.data < y.data, x, y)


def _split_grad(grad_out, x_wins, x, y):
    """x's share of the gradient: 1 where it wins, 1/2 at ties; where either side
    is NaN (which z then is), the side holding it (x if both), where PyTorch gives
    both sides all of it."""
    if x.dtype.kind == "f":   # (a NaN y is never equal to x, nor below it)
        x_wins |= grad_out.xp.isnan(x.data)
    share_x = _const(x_wins + 0.5 * (x.data == y.data), grad_out)
    return ((grad_out * share_x).sum_to(x.shape),
            (grad_out * (1 - share_x)).sum_to(y.shape))


class Clip(Function):
    """y = min(max(x, lo), hi); the gradient passes where lo <= x <= hi"""

    def forward(self, x, lo, hi):
        xp = self.xp
        self.mask = xp.ones_like(x, dtype=bool)   # stored like x (order "K")
        if lo is not None:
            self.mask &= x >= lo
        if hi is not None:
            self.mask &= x <= hi
        return xp.clip(x, lo, hi).astype(x.dtype, copy=False)

    def backward(self, grad_out):
        return grad_out * _mask(self.mask, grad_out)


class Where(Function):
    """z = x where cond else y (cond is not differentiable)"""

    def forward(self, cond, x, y):
        check_broadcast(check_broadcast(cond.shape, x.shape, "where"), y.shape, "where")
        return self.xp.where(cond, x, y)

    def backward(self, grad_out):
        cond, x, y = self.inputs
        take_x = _const(self.xp.broadcast_to(cond.data, grad_out.shape), grad_out)
        grad_x = (grad_out * take_x).sum_to(x.shape) if x.requires_grad else None
        grad_y = (grad_out * (1 - take_x)).sum_to(y.shape) if y.requires_grad else None
        return None, grad_x, grad_y


class Cast(Function):
    """y = x converted to another float dtype"""

    def forward(self, x, dtype):
        return x.astype(dtype)

    def backward(self, grad_out):
        return grad_out.astype(self.inputs[0].dtype)


class Relayout(Function):
    """y = x, stored batch-last or in C order as ``like`` is (conv_arrays.in_order_of)"""

    def forward(self, x, like):
        return in_order_of(self.backend, x, like)

    def backward(self, grad_out):
        return grad_out


class ToDevice(Function):
    """y = x copied to another device; the gradient is copied back"""

    @classmethod
    def apply(cls, x, device):
        # The output lives on the target backend, not on the input's.
        fn = cls()
        fn.backend, fn.xp = x._backend, x.xp
        data = device.asarray(x._backend.to_numpy(x.data))
        return fn.link((x,), Tensor._make(data, device))

    def backward(self, grad_out):
        return grad_out.to(self.inputs[0].device)


# ---- reductions ------------------------------------------------------------------
def reduces_empty(shape, axis):
    """Does reducing ``shape`` over ``axis`` (a tuple, or None for all) take an empty set?"""
    axes = range(len(shape)) if axis is None else (axis,) if isinstance(axis, int) else axis
    return any(shape[a] == 0 for a in axes) or (axis is None and 0 in shape)


def _keepdims_shape(shape, axis):
    axis = range(len(shape)) if axis is None else axis
    return tuple(1 if i in axis else s for i, s in enumerate(shape))


class Sum(Function):
    """y = sum of x over axis"""

    def forward(self, x, axis, keepdims):
        # In essence x.sum(axis, keepdims=keepdims), the last line; the branches
        # before it are faster routes to the same sum, and float16's guard.
        self.axis = axis
        wide = x.dtype.kind == "f" and x.itemsize >= 4   # not float16 (see below)
        if (wide and axis == (0,) + tuple(range(2, x.ndim)) and x.ndim > 2
                and is_batch_last(x)):
            # All but the channels of a batch-last array (a bias gradient):
            # each channel is one contiguous row, and a matrix-vector product
            # with ones sums those 4-6x faster than NumPy's reduction does.
            rows = self.xp.moveaxis(x, 0, -1).reshape(x.shape[1], -1)   # (C, H*W*N)
            total = rows @ self.xp.ones(rows.shape[1], dtype=x.dtype)   # (C,)
            return total.reshape(_keepdims_shape(x.shape, axis)) if keepdims else total
        if axis and len(axis) > 1 and axis[0] == 0 and x.ndim > 2 and wide:
            # Sum the leading (batch) axis first: adding whole slabs runs
            # vectorised, 1.5-4x faster than one reduction over, say, the
            # (0, 2, 3) of a bias gradient.  (Not in float16, whose partial
            # sums could overflow where the whole sum does not.)
            x = x.sum(axis=0, keepdims=True)
        if x.dtype == np.float16:   # accumulate in float32, as PyTorch does
            return self.xp.asarray(x.sum(axis=axis, keepdims=keepdims, dtype=np.float32)
                                   .astype(x.dtype))
        return self.xp.asarray(x.sum(axis=axis, keepdims=keepdims))

    def backward(self, grad_out):
        # Every summed element gets the gradient of its sum: the summed axes
        # back as size 1, then repeated to x's shape.
        x = self.inputs[0]
        return grad_out.reshape(_keepdims_shape(x.shape, self.axis)).broadcast_to(x.shape)


class Prod(Function):
    """y = product of x over axis; dy/dx_i = the product of the other elements.

    The gradient never divides by x (y / x_i is 0 / 0 at a zero): each element
    gets the product of the elements before it times that of the elements
    after it (:func:`_products_of_others`), exact with one zero, two or more.
    Those running products are the array library's ``cumprod`` (linear, with
    the range and rounding of plain prefix products, as PyTorch's), or, with
    ``create_graph``, a scan of tensor ops, so differentiable again (log2(n)
    times the memory, and a product of two large elements can overflow where
    the prefix products do not).
    """

    def forward(self, x, axis, keepdims):
        self.axis = axis
        return self.xp.asarray(x.prod(axis=axis, keepdims=keepdims))

    def backward(self, grad_out):
        x = self.inputs[0]
        grad = grad_out.reshape(_keepdims_shape(x.shape, self.axis)).broadcast_to(x.shape)
        if x.size == 0 or self.axis == ():   # no element, or nothing multiplied
            return grad
        running = _running_products if is_grad_enabled() else _cumprod
        return grad * _products_of_others(x, self.axis, running)


def _products_of_others(x, axis, running):
    """For each element of x, the product of the other elements of its slice over
    ``axis`` (None: all), as a tensor of x's shape; ``running(rows)`` gives the
    inclusive running products along the last axis of ``rows`` (M, n)."""
    reduced = tuple(range(x.ndim)) if axis is None else axis
    kept = tuple(a for a in range(x.ndim) if a not in reduced)
    order = kept + reduced
    xt = x.permute(order) if order != tuple(range(x.ndim)) else x
    n = math.prod(x.shape[a] for a in reduced)
    rows = xt.reshape(-1, n)                                  # (slices, n)
    # Exclusive running products from the left and from the right: element i
    # gets x_0 .. x_(i-1) times x_(i+1) .. x_(n-1).
    left = running(rows)[:, :n - 1].pad(((0, 0), (1, 0)), value=1)
    right = running(rows[:, ::-1])[:, :n - 1].pad(((0, 0), (1, 0)), value=1)
    others = (left * right[:, ::-1]).reshape(xt.shape)
    return others.permute(tuple(np.argsort(order))) if xt is not x else others


def _cumprod(rows):
    """The inclusive running product along the last axis of ``rows`` (M, n), by the
    array library's ``cumprod``: linear, but not differentiable (a backward without
    ``create_graph``)."""
    # A product beyond the dtype's range is inf, as the forward's would be.
    with rows._backend.context(), np.errstate(over="ignore"):
        return Tensor._make(rows.xp.cumprod(rows.data, axis=-1), rows._backend)


def _running_products(rows):
    """The inclusive running product along the last axis of ``rows`` (M, n), in
    log2(n) passes that each multiply by the result shifted along (Hillis and
    Steele's scan), of tensor ops: the gradient of a product is a product again."""
    n = rows.shape[-1]
    shift = 1
    while shift < n:
        rows = rows * rows[:, :n - shift].pad(((0, 0), (shift, 0)), value=1)
        shift *= 2
    return rows


class LogSumExp(Function):
    """y = log(sum(exp(x))) over ``axis`` (kept as size-1 axes); dy/dx = exp(x - y),
    the softmax.

    Computed as m + log(sum(exp(x - m))) with m the maximum, or 0 where the
    maximum is not finite, as PyTorch does: an all -inf slice gives -inf, one
    holding +inf gives inf, and their gradients NaN.  Those are the answers,
    so NumPy's warnings on the way to them (log(0), exp overflow, inf - inf)
    are silenced here, for these arrays only.
    """

    def forward(self, x, axis):
        xp = self.xp
        m = xp.max(x, axis=axis, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0).astype(x.dtype)
        with np.errstate(over="ignore", divide="ignore"):
            return xp.asarray(xp.log(xp.exp(x - m).sum(axis=axis, keepdims=True)) + m)

    def backward(self, grad_out):
        with np.errstate(invalid="ignore"):
            return grad_out * (self.inputs[0] - self.output).exp()


class Max(Function):
    """y = max of x over axis; tied maxima share the gradient equally (NaNs, if any, do)"""
    reduce = "max"

    def forward(self, x, axis, keepdims):
        if reduces_empty(x.shape, axis):
            # No identity element; elsewhere an empty tensor reduces to an empty result.
            raise ValueError(f"{self.reduce} over an empty axis of a tensor of shape {x.shape}")
        self.axis = axis
        return self.xp.asarray(getattr(x, self.reduce)(axis=axis, keepdims=keepdims))

    def backward(self, grad_out):
        x = self.inputs[0]
        kshape = _keepdims_shape(x.shape, self.axis)
        y = self.output.data.reshape(kshape)
        is_max = x.data == y
        if x.dtype.kind == "f":   # a NaN is the result: it takes the gradient, as in PyTorch
            is_max |= self.xp.isnan(x.data) & self.xp.isnan(y)
        share = is_max / is_max.sum(axis=self.axis, keepdims=True)
        return grad_out.reshape(kshape).broadcast_to(x.shape) * _const(share, grad_out)


class Min(Max):
    """y = min of x over axis; tied minima share the gradient equally"""
    # Not -max(-x): negation wraps around for unsigned ints and for int8's -128.
    reduce = "min"


class CumSum(Function):
    """y = running sum of x along ``axis``; backward is the running sum from the end
    (each x_i feeds y_i .. y_n), a CumSum itself, so differentiable again"""

    def forward(self, x, axis):
        self.axis = axis
        return self.xp.cumsum(x, axis=axis)

    def backward(self, grad_out):
        reverse = (slice(None),) * self.axis + (slice(None, None, -1),)
        return CumSum.apply(grad_out[reverse], axis=self.axis)[reverse]


# ---- shapes ----------------------------------------------------------------------
class Reshape(Function):
    """y = x viewed with another shape"""

    view_of_input = True

    def forward(self, x, shape):
        return x.reshape(shape)

    def backward(self, grad_out):
        return grad_out.reshape(self.inputs[0].shape)


class Permute(Function):
    """y = x with its axes reordered"""

    view_of_input = True

    def forward(self, x, axes):
        self.axes = axes
        return x.transpose(axes)

    def backward(self, grad_out):
        return grad_out.permute(tuple(np.argsort(self.axes)))   # the inverse permutation


class BroadcastTo(Function):
    """y = x repeated along broadcast dimensions; backward sums them"""

    view_of_input = True
    read_only_view = True   # several elements of y are one element of x

    def forward(self, x, shape):
        return self.xp.broadcast_to(x, shape)

    def backward(self, grad_out):
        return grad_out.sum_to(self.inputs[0].shape)


class SumTo(Function):
    """y = x summed over the dimensions that broadcasting added; backward broadcasts"""

    def forward(self, x, shape):
        lead = x.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(
            lead + i for i, s in enumerate(shape) if s == 1 and x.shape[lead + i] != 1)
        y = x.sum(axis=axes, keepdims=True) if axes else x
        return self.xp.asarray(y.reshape(shape))

    def backward(self, grad_out):
        return grad_out.broadcast_to(self.inputs[0].shape)


def _has_array(index):
    parts = index if isinstance(index, tuple) else (index,)
    return any(hasattr(i, "dtype") and getattr(i, "ndim", 0) > 0 for i in parts)


def _is_array(i):
    """An array inside an index (not a slice, int, None or a NumPy scalar)."""
    return hasattr(i, "dtype") and not isinstance(i, np.generic)


class GetItem(Function):
    """y = x[index]; backward scatters (and accumulates) into zeros"""

    view_of_input = True

    def forward(self, x, index):
        gather = None
        if any(map(_is_array, index if isinstance(index, tuple) else (index,))):
            _check_index(self.backend, x.shape, index)
            gather = one_axis_gather(index, x.ndim)
        try:
            # NumPy lays x[:, :, idx] out with the indexed axis outermost, which
            # every later pass over y (and over its gradient) reads across the
            # cache; take gives C order.
            y = x[index] if gather is None else self.xp.take(x, gather[1], axis=gather[0])
        except (IndexError, ValueError, TypeError) as e:   # x[::0], x[0.5:], x["a"]
            raise type(e)(f"{e} (indexing a tensor of shape {x.shape} with "
                          f"{index!r})") from None
        self.index = index
        return self.xp.asarray(y)

    def backward(self, grad_out):
        return IndexAdd.apply(grad_out, shape=self.inputs[0].shape, index=self.index)


class IndexAdd(Function):
    """y = zeros(shape) with g added at index (repeats accumulate); backward is g[index]"""

    def forward(self, g, shape, index):
        self.index = index
        y = self.xp.zeros(shape, dtype=g.dtype)
        if _has_array(index):
            self.backend.scatter_add(y, index, g)
        else:
            y[index] = g  # basic indexing never repeats an element
        return y

    def backward(self, grad_out):
        return GetItem.apply(grad_out, index=self.index)


class Concatenate(Function):
    """y = the inputs joined along axis; backward slices the gradient apart"""

    def forward(self, *xs, axis):
        self.axis = axis
        if all(is_batch_last(x) for x in xs):
            # Joined in their own order (the batch axis last), so that the
            # result is batch-last too: a C-order result would read each
            # input across the cache.
            xp = self.xp
            joined = xp.concatenate([xp.moveaxis(x, 0, -1) for x in xs],   # (C, ..., N)
                                    axis=axis - 1 if axis else -1)
            return xp.moveaxis(joined, -1, 0)                  # (N, C, ...), batch-last
        return self.xp.concatenate(xs, axis=axis)

    def backward(self, grad_out):
        sizes = [x.shape[self.axis] for x in self.inputs]
        cuts = np.cumsum([0] + sizes)
        lead = (slice(None),) * self.axis
        return tuple(grad_out[lead + (slice(a, b),)] for a, b in zip(cuts[:-1], cuts[1:]))


class Pad(Function):
    """y = x surrounded by a constant; backward crops"""

    def forward(self, x, widths, value):
        self.widths = widths
        return self.xp.pad(x, widths, mode="constant", constant_values=value)

    def backward(self, grad_out):
        crop = tuple(slice(a, s - b) for (a, b), s in zip(self.widths, grad_out.shape))
        return grad_out[crop]


# ---- index checks (GetItem and item assignment) -----------------------------------
def _check_index(backend, x_shape, index):
    """Validate the array parts of an index.

    Dtypes and mask shapes are checked here; integer bounds go through
    ``backend.check_index``, which raises at once on NumPy and, on a GPU,
    without waiting for the device (CuPy itself would silently wrap them).
    """
    parts = index if isinstance(index, tuple) else (index,)
    is_mask = [_is_array(i) and i.dtype == bool for i in parts]
    if any(is_mask) and sum(map(_is_array, parts)) > 1 and not backend.mask_with_arrays:
        raise IndexError(f"an index of a tensor of shape {tuple(x_shape)} on {backend.device} "
                         f"holds a boolean mask beside other array indices, which CuPy "
                         f"cannot do; index in two steps (e.g. x[mask][:, idx])")
    # None and a scalar True/False add an axis of the result and use none of x's.
    new_axis = [i is None or isinstance(i, (bool, np.bool_)) for i in parts]
    used = sum(i.ndim if mask else 1 for i, mask, new in zip(parts, is_mask, new_axis)
               if not new and i is not Ellipsis)
    dim = 0
    for i, mask, new in zip(parts, is_mask, new_axis):
        if new:
            continue
        if i is Ellipsis:
            dim += len(x_shape) - used
            continue
        if mask:
            if tuple(i.shape) != tuple(x_shape[dim:dim + i.ndim]):
                raise IndexError(f"boolean index of shape {tuple(i.shape)} does not match "
                                 f"dimensions {tuple(x_shape[dim:dim + i.ndim])} of a "
                                 f"tensor of shape {tuple(x_shape)}")
            dim += i.ndim
            continue
        if _is_array(i):
            if i.dtype.kind not in "iu":
                raise IndexError(f"array indices must be integers or booleans, got {i.dtype}")
            if dim < len(x_shape):  # else x[index] reports too many indices
                n = x_shape[dim]
                backend.check_index(i, n, f"for axis {dim} of size {n} in a tensor of "
                                          f"shape {tuple(x_shape)}")
        dim += 1
