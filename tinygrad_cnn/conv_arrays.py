"""Array-level kernels behind the CNN ops: im2col, col2im, pooling, sizes.

Everything here works on raw arrays of one backend (no autograd): the
differentiable ops in :mod:`tinygrad_cnn.functional` call these from their
``forward``.  Arrays are reached only through ``backend.xp``,
``backend.as_strided`` and ``backend.scatter_add``, so the same code runs on
NumPy and CuPy.

For a first reading, :func:`unfold_array` and :func:`fold_array` (section
"im2col / col2im") carry the idea, with :class:`ConvGeometry` for where the
windows lie and :func:`max_pool_array` for pooling.  Most of the rest is
there for speed only (column layouts, batch-last arrays, cache-sized
chunks and tiled copies) and is described below.

Windows
-------
A :class:`ConvGeometry` says where the windows of a convolution or pooling
lie.  Output position ``(oh, ow)`` reads the input rows
``oh * sh - pt + i * dh`` for ``i < KH`` and the columns
``ow * sw - pl + j * dw`` for ``j < KW``: stride ``(sh, sw)``, dilation
``(dh, dw)``, padding ``pt`` on top, ``pb`` at the bottom, ``pl`` left,
``pr`` right (asymmetric padding serves ``padding="same"`` with even kernels
and pooling's ``ceil_mode``).  Kernel offset ``(i, j)`` of every window
together forms one strided slice of the padded input, so im2col, col2im and
pooling are loops over the ``KH * KW`` offsets, never over output pixels.

Column layouts
--------------
``unfold_array`` lays the patches out as a matrix, ``C*KH*KW`` rows (one per
channel and kernel offset) by one column per (image, output position).  The
order of those columns is the *layout*:

========  ====================  ==========================================
layout    shape                 use
========  ====================  ==========================================
``nkl``   (N, C*KH*KW, OH*OW)   per image (PyTorch's ``unfold`` order)
``knl``   (C*KH*KW, N*OH*OW)    all images side by side, long output rows
``kln``   (C*KH*KW, OH*OW*N)    all images side by side, short output rows
========  ====================  ==========================================

With ``nkl`` a convolution is one GEMM per image, ``w (OC, C*KH*KW) @
cols[n]``, and its output is already NCHW.  ``knl`` and ``kln`` put all
images side by side, so a convolution is *one* large GEMM, and the weight
gradient ``grad_rows @ cols.T`` is one GEMM too, with no copy of ``cols``;
the price is transposing x, y and the output gradient between NCHW and
channel-major (on the host, ``kln`` avoids most of that: see "Batch-last
arrays").  Copying patches is a loop over contiguous runs: ``knl`` and
``nkl`` run along an output row (``OW`` elements), ``kln`` along the batch
(``OW * N`` elements for stride 1), several times cheaper for short rows (a
8x8 LeNet feature map).  :func:`choose_layout` picks one per convolution.

Batch-last arrays
-----------------
A ``kln`` GEMM writes its output as (C, OH, OW, N): the batch innermost.
On backends with ``cache_blocking`` (host memory), when the batch is one
chunk, the convolution returns that memory as it is, as an (N, C, OH, OW)
*view* (:func:`is_batch_last`), instead of copying it to NCHW; the next
ops read it as it is: ReLU, max and average pooling, dropout, clip and
concatenation keep the order of their input, a following ``kln``
convolution takes its columns straight from it, and ``flatten`` stays a
view.  Reading two arrays of one shape stored in different orders in one
NumPy pass, though, reads one of them across the cache (up to 20x slower
than either order alone), so a binary op first copies its second operand
into the first's order (:func:`in_order_of`, a tiled copy), and the
autograd engine gives every gradient the order of its tensor (broadcasts
excepted).  Array code that needs NCHW (the ``nkl`` and ``knl`` columns)
converts with :func:`as_nchw`; ops that build new arrays in C order (pad,
index-add, adaptive pooling) pay one mixed-order copy.  Values never depend
on the order, only speed does.  GPU backends, whose kernels read NCHW, get
a kln convolution's output copied to NCHW once, as before.

Backend kernels
---------------
A backend may bring its own kernels (the CUDA ones of
:mod:`tinygrad_cnn.cuda_kernels`): if it has a method ``im2col(x, geom,
layout)``, ``col2im(cols, geom, N, C, layout)``, ``max_pool(x, geom)``,
``max_pool_scatter(g, x, y, geom)`` or ``max_pool_gather(gx, x, y, geom)``,
with the contract of :func:`unfold_array`, :func:`fold_array`,
:func:`max_pool_array`, :func:`max_pool_scatter_array` or
:func:`max_pool_gather_array`, it is called instead of the array code here
for the dtypes in its ``kernel_dtypes`` (others, such as float16, take the
array code), which stays the reference the kernels are tested against.

Depthwise convolutions
----------------------
A convolution with one input channel per group (``groups == C``, w of shape
(C*m, 1, KH, KW), as in MobileNet and ConvNeXt blocks) is, through im2col,
C GEMMs of only m rows each.  :func:`depthwise_conv_array` computes it
without columns: a loop over the KH*KW kernel offsets, each multiplying one
strided window slice of the padded input by a weight per channel and adding
it into y; :func:`depthwise_transpose_array` (the input gradient, and a
depthwise ``conv_transpose2d``) adds ``w * g`` into the windows' slices of
the padded result, as fold does; :func:`depthwise_weight_array` sums ``g *
window`` over batch and positions for each offset.  On the host the loops
run batch-last (longer contiguous runs for NumPy's inner loops than OW-long
output rows), slice by slice of :func:`cache_chunks`.  Conv2d's forward and
its two backward ops (ConvTranspose2d, Conv2dWeight) call these at the array
level, so the autograd graph, and higher-order gradients, are those of every
convolution.  The loop costs two NumPy passes per offset (no fused
multiply-add) where im2col costs one copy and a GEMM, so it is used where it
measured faster, :func:`depthwise_pays`: one output per channel and kernels
of 5x5 or more at stride 1, 7x7 or more with a stride (mostly 0.25-0.9x the
time of im2col, whose KH*KW copies of x outgrow the caches); 3x3 depthwise
convolutions (0.6-1.4x) and several outputs per channel keep im2col.

Memory
------
The im2col buffer of a convolution holds ``C*KH*KW * OH*OW`` elements per
image.  Conv ops process the batch in chunks of :func:`batch_chunks` so that
one buffer stays under :func:`get_im2col_limit` bytes (default 512 MiB, or
the environment variable ``TINYGRAD_CNN_IM2COL_LIMIT``, or
:func:`set_im2col_limit`) and, on the CPU, under 16 MiB (64 MiB for a
batch-last operand) where one image's columns allow it, which is faster.
Chunks of that cache size in the per-image (``nkl``) layout write their
columns into slices of one buffer for the whole batch when it stays within
the limit, so that training keeps them for the weight gradient
(``_correlate`` in :mod:`tinygrad_cnn.functional`; not for a 1x1 kernel at
stride 1 without padding, whose columns are views of x).

The error function and GELU
---------------------------
NumPy has no ``erf``; :func:`erf_array` (near the end of the file, used by
``Tensor.erf``) computes it with array arithmetic: W. J. Cody's rational
approximations in float64, to float64's rounding, for float64; for float32
(and float16, through float32) a rational function fitted for this project
inside a tanh, in float32, within 2.5 ulp and ~9x faster.  Exact GELU runs
its forward (:func:`gelu_array`) and backward (:func:`gelu_grad_array`) as
one slice-by-slice pass each over the same code.

Batch normalisation
-------------------
Batch normalisation in training (:func:`batch_norm_array`, its gradients
:func:`batch_norm_grad_array` and :func:`batch_norm_sums_array`) reads x as
:func:`channel_rows`, (P, C, R) views with each row of R values contiguous
in memory, whichever order x is stored in, so that the per-channel sums are
one matrix-vector product (with a vector of ones) and the sums of products one
dot product per row, both through BLAS, and the elementwise passes broadcast
one value per channel.  The passes run over whole arrays: unlike erf's two
dozen, these few (five forward, seven backward) measured no faster in slices
of :func:`cache_chunks`, and they make no temporary as large as x.
"""
from __future__ import annotations

import functools
import math
import numbers
import os
import re
from dataclasses import dataclass

import numpy as np

from ._checks import check_ints


# ---- argument checks -----------------------------------------------------------------
def pair(op, name, value, minimum):
    """An int or a pair of ints, each >= ``minimum`` -> a pair of Python ints.

    The package's one rule (see :func:`tinygrad_cnn._checks.check_ints`): a
    float or a bool is a ``TypeError``, a value below ``minimum`` or a
    sequence of another length a ``ValueError``; a 0-d integer array or
    tensor stands for its int.
    """
    return check_ints(f"{op}: {name}", value, 2, low=minimum)


def shape_str(shape):
    return str(tuple(int(s) for s in shape))


# ---- geometry ------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvGeometry:
    """Where the windows lie: input (H, W), kernel (KH, KW), output (OH, OW),
    stride (sh, sw), padding (pt, pb, pl, pr), dilation (dh, dw)."""

    H: int
    W: int
    KH: int
    KW: int
    OH: int
    OW: int
    sh: int = 1
    sw: int = 1
    pt: int = 0
    pb: int = 0
    pl: int = 0
    pr: int = 0
    dh: int = 1
    dw: int = 1

    @property
    def Hp(self):
        """Height of the padded input."""
        return self.H + self.pt + self.pb

    @property
    def Wp(self):
        return self.W + self.pl + self.pr

    @property
    def padded(self):
        return bool(self.pt or self.pb or self.pl or self.pr)

    @property
    def overlapping(self):
        """Do neighbouring windows share input elements?"""
        return self.sh < self.dh * (self.KH - 1) + 1 or self.sw < self.dw * (self.KW - 1) + 1

    def offsets(self):
        """The kernel offsets (k, i, j) in row-major order, k = i * KW + j."""
        return [(i * self.KW + j, i, j) for i in range(self.KH) for j in range(self.KW)]

    def window(self, i, j):
        """Slices of the padded input holding offset (i, j) of every window: (OH, OW) elements."""
        return (slice(i * self.dh, i * self.dh + self.sh * (self.OH - 1) + 1, self.sh),
                slice(j * self.dw, j * self.dw + self.sw * (self.OW - 1) + 1, self.sw))

    def interior(self):
        """Slices of the padded input that hold the real input."""
        return slice(self.pt, self.pt + self.H), slice(self.pl, self.pl + self.W)


def out_size(size, kernel, stride, pad_total, dilation, ceil_mode=False, pad_before=0):
    """Number of window positions along one axis (PyTorch's rule, incl. ceil_mode)."""
    span = size + pad_total - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1 if span >= 0 else 0
    # Windows may hang over the end (even where one window is larger than the
    # input), but the last must start inside the input or the leading padding.
    n = -(-span // stride) + 1
    if n > 0 and (n - 1) * stride >= size + pad_before:
        n -= 1
    return max(n, 0)


def same_padding(kernel, dilation):
    """``padding="same"``: ((top, bottom), (left, right)), the odd one bottom/right."""
    return tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
                 for k, d in zip(kernel, dilation))


def conv_geometry(op, x_shape, kernel, stride=(1, 1), padding=((0, 0), (0, 0)),
                  dilation=(1, 1), what="kernel", shown=None, over=None):
    """The geometry of a convolution of an (N, C, H, W) input.

    ``kernel``, ``stride`` and ``dilation`` are pairs, ``padding`` is
    ((top, bottom), (left, right)).  Errors name the input shape ``shown``
    (default ``x_shape``; 1-D ops show their (N, C, L) shape), or ``over``, what
    the windows lie in where that is not an input of the caller's (fold's
    ``output_size``).
    """
    H, W = x_shape[-2:]
    (KH, KW), (sh, sw), (dh, dw) = kernel, stride, dilation
    (pt, pb), (pl, pr) = padding
    ext_h, ext_w = dh * (KH - 1) + 1, dw * (KW - 1) + 1
    if ext_h > H + pt + pb or ext_w > W + pl + pr:
        if over is None:
            over = f"the input x of shape {shape_str(x_shape if shown is None else shown)}"
        if op.endswith("1d"):   # a 1-D op: images of height 1, which its caller never saw
            dil = f" ({ext_w} with dilation {dw})" if dw != 1 else ""
            size, pads = f"{KW}{dil} is larger than {over} padded to {W + pl + pr}", \
                f"padding left/right {pl}/{pr}"
        else:
            dil = f" ({ext_h}x{ext_w} with dilation {dh, dw})" if (dh, dw) != (1, 1) else ""
            size = f"{KH}x{KW}{dil} is larger than {over} padded to {H + pt + pb}x{W + pl + pr}"
            pads = f"padding top/bottom {pt}/{pb}, left/right {pl}/{pr}"
        raise ValueError(f"{op}: the {what} {size} ({pads}); use a smaller {what} or more "
                         f"padding")
    return ConvGeometry(H, W, KH, KW, out_size(H, KH, sh, pt + pb, dh),
                        out_size(W, KW, sw, pl + pr, dw), sh, sw, pt, pb, pl, pr, dh, dw)


@functools.lru_cache(maxsize=256)
def pool_geometry(op, x_shape, kernel, stride, padding, dilation=(1, 1), ceil_mode=False,
                  shown=None):
    """The geometry of a pooling; ``ceil_mode`` windows hang over the bottom/right edge,
    which becomes extra padding there.  (Cached: a training loop asks for the same
    few, and the empty-window check costs more than a small pooling.)"""
    (KH, KW), (ph, pw) = kernel, padding
    if ph > KH // 2 or pw > KW // 2:
        raise ValueError(f"{op}: padding {padding} must be at most half the kernel size "
                         f"{kernel} (so that every window holds a real element)")
    if not ceil_mode:
        g = conv_geometry(op, x_shape, kernel, stride, ((ph, ph), (pw, pw)), dilation,
                          what="window", shown=shown)
    else:
        # Windows may be larger than the input, as long as one starts inside it.
        H, W = x_shape[-2:]
        (sh, sw), (dh, dw) = stride, dilation
        OH = out_size(H, KH, sh, 2 * ph, dh, True, ph)
        OW = out_size(W, KW, sw, 2 * pw, dw, True, pw)
        if OH < 1 or OW < 1:
            raise ValueError(
                f"{op}: for an input of shape {shape_str(x_shape if shown is None else shown)}, "
                f"kernel {kernel}, stride {stride}, padding {padding} and dilation {dilation} "
                f"with ceil_mode, no window starts inside the input (output size {OH}x{OW}); "
                f"use a smaller window or more padding")
        # Bottom/right padding so that the last (overhanging) window fits.
        pb = max(ph, (OH - 1) * sh + dh * (KH - 1) + 1 - H - ph)
        pr = max(pw, (OW - 1) * sw + dw * (KW - 1) + 1 - W - pw)
        g = ConvGeometry(H, W, KH, KW, OH, OW, sh, sw, ph, pb, pw, pr, dh, dw)
    # With dilation, padding of at most half the kernel no longer guarantees
    # that each window holds a real element; a window of padding alone has
    # no maximum and no average.
    for axis, n_out, step, dil, k, before, size in (("height", g.OH, g.sh, g.dh, KH, g.pt, g.H),
                                                    ("width", g.OW, g.sw, g.dw, KW, g.pl, g.W)):
        taps = np.arange(n_out)[:, None] * step + np.arange(k)[None, :] * dil - before
        empty = ~((taps >= 0) & (taps < size)).any(axis=1)
        if empty.any():
            raise ValueError(
                f"{op}: for an input of shape {shape_str(x_shape if shown is None else shown)}, "
                f"kernel {kernel}, stride {stride}, padding {padding} and dilation {dilation}"
                f"{' with ceil_mode' if ceil_mode else ''}, the window at output {axis} "
                f"{int(np.argmax(empty))} lies wholly in the padding; use less padding or "
                f"dilation")
    return g


# ---- memory: the im2col limit and batch chunks ---------------------------------------
DEFAULT_IM2COL_LIMIT = 512 * 2**20
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20,
          "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30}


def parse_bytes(text):
    """'512M', '2 GiB', '1048576' -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read {text!r} as a number of bytes; expected e.g. "
                         f"'536870912', '512M' or '2G'")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _limit_from_env():
    text = os.environ.get("TINYGRAD_CNN_IM2COL_LIMIT")
    if not text:
        return DEFAULT_IM2COL_LIMIT
    try:
        return max(1, parse_bytes(text))
    except ValueError as e:
        raise ValueError(f"TINYGRAD_CNN_IM2COL_LIMIT={text!r} (environment variable): "
                         f"{e}") from None


# Read from the environment at the first convolution, not at import: a bad
# value must not stop `import tinygrad_cnn` (nor `tinygrad-cnn info`).
_im2col_limit = None


def set_im2col_limit(nbytes):
    """Cap one im2col buffer at ``nbytes`` (an int, or a string like '256M').

    Convolutions then process the batch in chunks of images whose columns
    fit, trading speed (smaller GEMMs, columns recomputed for the weight
    gradient) for memory.  At least one image is processed at a time.
    Returns the previous limit.
    """
    global _im2col_limit
    value = parse_bytes(nbytes) if isinstance(nbytes, str) else nbytes
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"set_im2col_limit: expected a positive number of bytes, got "
                         f"{nbytes!r}")
    try:
        previous = get_im2col_limit()
    except ValueError:   # an unreadable environment value, which this one replaces
        previous = DEFAULT_IM2COL_LIMIT
    _im2col_limit = int(value)
    return previous


def get_im2col_limit():
    """The current cap on one im2col buffer, in bytes (``TINYGRAD_CNN_IM2COL_LIMIT``
    is read at the first call; an unreadable value is a ValueError naming it)."""
    global _im2col_limit
    if _im2col_limit is None:
        _im2col_limit = _limit_from_env()
    return _im2col_limit


def im2col_bytes(C, geom, itemsize):
    """Bytes of the columns of one image: C*KH*KW * OH*OW elements."""
    return C * geom.KH * geom.KW * geom.OH * geom.OW * itemsize


COLUMN_BLOCK_BYTES = 16 * 2**20
BATCH_LAST_BLOCK_BYTES = 64 * 2**20


def batch_chunks(backend, N, bytes_per_image, batch_last=False):
    """[(lo, hi), ...] splitting N images so one chunk's columns fit the limit.

    On backends with ``cache_blocking`` (host memory) chunks also stay under
    ``COLUMN_BLOCK_BYTES`` (16 MiB; one image per chunk if one image's columns
    are larger), so that a chunk's GEMM reads the columns im2col has just
    written from cache: faster than one pass over a batch's worth of
    columns in main memory (measured on 2-vCPU x86 machines, see
    docs/benchmarks.md).  Conv2d's per-image layout writes the chunks into
    one buffer it keeps for the weight gradient; the other layouts make each
    chunk's columns again there.  For a ``batch_last`` operand the
    bound is ``BATCH_LAST_BLOCK_BYTES`` (64 MiB): read as one chunk, it gives
    its columns in place and keeps its output batch-last, where a chunk of
    it would take a strided copy (LeNet's second convolution at batch 256,
    33 MB of columns: the whole step 10 % faster).
    """
    limit = get_im2col_limit()
    if backend.cache_blocking:
        limit = min(limit, BATCH_LAST_BLOCK_BYTES if batch_last else COLUMN_BLOCK_BYTES)
    step = max(1, min(N, limit // max(1, bytes_per_image)))
    return [(lo, min(N, lo + step)) for lo in range(0, N, step)]


CACHE_BLOCK_BYTES = 1 << 18   # 256 KiB: several arrays of one slice fit a 1-2 MiB L2
# Arrays up to 1 MiB stay one slice: their passes hit L2 anyway, and slicing
# only adds NumPy calls (the 64x50x8x8 max-pool: 1.03-1.13 -> 0.96-0.99 ms).
CACHE_BLOCK_MIN_BYTES = 1 << 20


def cache_chunks(backend, x, nbytes=None):
    """[index, ...]: x (N, C, ...) in slices of about ``CACHE_BLOCK_BYTES`` - of the
    batch (at least one image each), or of the channels if x is batch-last.

    Array code that makes several passes over the same data (the per-offset
    masks of the max-pool backward, say) runs them slice by slice on backends
    with ``cache_blocking`` (host memory), so the later passes read from the
    CPU's L2 cache instead of main memory; elsewhere x is one slice.  Each
    index is a tuple of slices, to apply to x and to arrays stored like it.
    ``nbytes`` (default ``x.nbytes``): the size to slice, where a larger array
    of the same N and C is sliced alongside x.
    """
    lead = (slice(None),) if is_batch_last(x) else ()   # slice the outermost axis in memory
    n = x.shape[len(lead)]
    nbytes = x.nbytes if nbytes is None else nbytes
    if not backend.cache_blocking or nbytes <= CACHE_BLOCK_MIN_BYTES:
        return [lead + (slice(0, n),)]
    step = max(1, CACHE_BLOCK_BYTES * n // nbytes)
    return [lead + (slice(lo, min(n, lo + step)),) for lo in range(0, n, step)]


# ---- layouts ---------------------------------------------------------------------------
def choose_layout(N, geom, K, batch_last=False, host=True):
    """The column layout for a conv GEMM over N images with K = C*KH*KW rows.

    On the ``host`` (NumPy: outputs stay batch-last, see "Batch-last
    arrays"): ``kln`` (all images side by side in one GEMM, the batch
    innermost) when the operand it reads is already ``batch_last`` (the
    pooled output of a ``kln`` convolution, say), whose columns then come
    straight from it, or when K is small (few input channels: laying x out
    batch-last is cheap) and images are narrow; the output then stays
    batch-last for the next ops.  Otherwise ``nkl`` (one GEMM per image,
    output NCHW) when each image's product is big enough on its own
    (L = OH*OW >= 256 columns) or K is small, and for the rest all images
    side by side: ``kln`` when output rows are short (copying OW-element
    runs is slow), else ``knl``.  (Measured on the LeNet and 3x3 benchmark
    convolutions and small CNNs, see docs/benchmarks.md.)
    """
    if host and N >= 4 and (batch_last or (K < 64 and geom.OW < 32)):
        return "kln"
    if K < 64 or geom.OH * geom.OW >= 256 or N < 2:
        return "nkl"
    return "kln" if geom.OW < 16 and N >= 4 else "knl"


def is_batch_last(a):
    """Is ``a`` (N, C, ...) stored batch-last: a view of a C-contiguous (C, ..., N)
    array, and not also C-contiguous itself (as with N = 1)?  (3 or more axes.)"""
    return (a.ndim > 2 and a.strides[0] == a.itemsize and not a.flags.c_contiguous
            and a.transpose(tuple(range(1, a.ndim)) + (0,)).flags.c_contiguous)


def empty_as(backend, ref, shape=None, dtype=None, fill=None):
    """An array of ``shape`` (default ref's) stored like ``ref``: batch-last if
    ``ref`` is, else C order; uninitialised, or filled with ``fill``."""
    xp = backend.xp
    shape = ref.shape if shape is None else tuple(shape)
    dtype = ref.dtype if dtype is None else dtype
    if is_batch_last(ref):   # (C, ..., N) memory seen as (N, C, ...)
        out = xp.moveaxis(xp.empty(shape[1:] + shape[:1], dtype=dtype), -1, 0)
    else:
        out = xp.empty(shape, dtype=dtype)
    if fill is not None:
        out[...] = fill
    return out


def reorders(a, ref):
    """Would :func:`in_order_of` copy ``a`` (of ``ref``'s shape)?  Only where one of
    the two is batch-last and the other not, and neither is a broadcast (a zero
    stride: no order to match, or a copy would multiply its memory)."""
    return (a.strides != ref.strides and 0 not in a.strides and 0 not in ref.strides
            and is_batch_last(a) != is_batch_last(ref))


def assign(backend, out, a):
    """``out[...] = a``, as a tiled copy (:func:`batch_first`, :func:`batch_last`)
    where one of the two is batch-last and the other C-contiguous."""
    xp = backend.xp
    if is_batch_last(a) and out.flags.c_contiguous:
        batch_first(backend, xp.moveaxis(a, 0, -1), out)
    elif is_batch_last(out) and a.flags.c_contiguous:
        batch_last(backend, a, xp.moveaxis(out, 0, -1))
    else:
        out[...] = a
    return out


def in_order_of(backend, a, ref):
    """``a`` (of ``ref``'s shape) stored like ``ref`` (see the module notes): a copy
    where :func:`reorders` says so, else ``a`` itself."""
    if not reorders(a, ref):
        return a
    return assign(backend, empty_as(backend, ref, a.shape, a.dtype), a)


def as_nchw(backend, a):
    """``a`` in C order if it is batch-last (a tiled copy), else ``a`` itself."""
    return batch_first(backend, backend.xp.moveaxis(a, 0, -1)) if is_batch_last(a) else a


def as_blocks(cols, layout):
    """Columns of any layout -> (B, K, P): B blocks of P columns each (B = N for ``nkl``,
    else 1), so one batched matmul serves all layouts."""
    return cols if layout == "nkl" else cols.reshape((1,) + cols.shape)


def to_rows(backend, a, layout):
    """(N, C, OH, OW) -> (B, C, P): one row per channel, columns in ``layout`` order
    (a copy, except for ``nkl`` of C-order ``a`` and ``kln`` of batch-last ``a``,
    which are views)."""
    N, C, OH, OW = a.shape
    if layout == "nkl":
        return as_nchw(backend, a).reshape(N, C, OH * OW)            # (N, C, OH*OW)
    if layout == "knl":
        return a.transpose(1, 0, 2, 3).copy().reshape(1, C, N * OH * OW)  # (1, C, P)
    if is_batch_last(a):
        return backend.xp.moveaxis(a, 0, -1).reshape(1, C, OH * OW * N)  # (1, C, P), a view
    return batch_last(backend, a).reshape(1, C, OH * OW * N)        # (1, C, P)


def from_rows(backend, rows, N, OH, OW, layout, out):
    """(B, C, P) with columns in ``layout`` order -> copied into ``out`` (N, C, OH, OW)."""
    C = rows.shape[1]
    if layout == "nkl":
        assign(backend, out, rows.reshape(N, C, OH, OW))
    elif layout == "knl":   # (C, N, OH, OW) -> (N, C, OH, OW)
        out[...] = rows.reshape(C, N, OH, OW).transpose(1, 0, 2, 3)
    else:   # (C, OH, OW, N) -> (N, C, OH, OW)
        assign(backend, out, backend.xp.moveaxis(rows.reshape(C, OH, OW, N), -1, 0))
    return out


def batch_first(backend, a, out=None):
    """Copy a (C, ..., N) into (N, C, ...): the batch axis moved from last to first."""
    return _move_batch(backend, a, -1, 0, out)


def batch_last(backend, a, out=None):
    """Copy a (N, C, ...) into (C, ..., N): the batch axis moved from first to last."""
    return _move_batch(backend, a, 0, -1, out)


def _move_batch(backend, a, source, destination, out):
    """The batch axis of ``a`` moved from ``source`` to ``destination`` (0 or -1), copied.

    One side of such a copy steps through memory by a whole image (or
    ``N * itemsize`` bytes) per element; when that step is a multiple of 256
    bytes every access maps to the same few CPU cache sets, and a copy of a
    few MB runs several times slower than its size suggests (~10x for
    (C, OH, OW, 256) -> NCHW).  On backends with ``cache_blocking`` (host
    memory) large copies go in tiles that stay in cache: to batch-first
    from a contiguous array, as a 2-D transpose in tiles of the whole batch
    by 64-128 of the rest; otherwise one cache line of the batch axis by
    ~1024 elements of the rest.
    """
    xp = backend.xp
    moved = xp.moveaxis(a, source, destination)
    if out is None:
        out = xp.empty(moved.shape, dtype=a.dtype)
    N = a.shape[source]
    # The step of the copy's inner loop: across the batch, or up to it.
    step = a.strides[0] if source == 0 else a.strides[-2]
    if not (backend.cache_blocking and a.ndim > 2 and a.nbytes >= 1 << 20
            and step % 256 == 0):
        out[...] = moved
        return out
    if destination == 0 and a.flags.c_contiguous and out.flags.c_contiguous:
        # (rest, N) -> (N, rest), a 2-D transpose: in tiles of all N by 128
        # (N <= 64) or 64 of the rest, 32-64 KiB, 1.5-2x faster than the
        # tiles below for images of 24x24 and more (same for 8x8).
        src, dst = a.reshape(-1, N), out.reshape(N, -1)
        width = 128 if N <= 64 else 64
        for i in range(0, src.shape[0], width):
            dst[:, i:i + width] = src[i:i + width].T
        return out
    # Tiles along the channel axis (first after the batch in NCHW, first of the
    # batch-last layout) and along the batch axis.
    channel_axis = 1 if destination == 0 else 0
    per_channel = a.size // (N * moved.shape[channel_axis])
    channel_step = max(1, 1024 // per_channel)
    batch_step = max(1, 64 // a.itemsize)                            # one cache line
    for c in range(0, moved.shape[channel_axis], channel_step):
        cs = slice(c, c + channel_step)
        src, dst = (moved[:, cs], out[:, cs]) if destination == 0 else (moved[cs], out[cs])
        for n in range(0, N, batch_step):
            ns = slice(n, n + batch_step)
            if destination == 0:
                dst[ns] = src[ns]
            else:
                dst[..., ns] = src[..., ns]
    return out


def contiguous(backend, a):
    """``a`` as a C-contiguous array (``a`` itself if it is one).

    A plain copy of a permuted array reads one element per cache line along
    the last axis.  When the axis that is contiguous in memory comes before
    the last two (the patches of local2d, ``unfold(x).permute(2, 0, 1)``),
    or the last row is long, those lines are evicted before the copy comes
    back for their other elements: 70 ms for a 33 MB copy.  Where
    :func:`tiled_copy_pays`, the copy goes in tiles of 64 along the
    contiguous axis by a few along one other, which stay in cache (12 ms).
    """
    if a.flags.c_contiguous:
        return a
    axes = _tile_axes(backend, a)
    if axes is None:
        return backend.xp.ascontiguousarray(a)
    fastest, other = axes
    other_step = 256 if other == a.ndim - 1 else 4
    out = backend.xp.empty(a.shape, dtype=a.dtype)
    tile = [slice(None)] * a.ndim
    for i in range(0, a.shape[fastest], 64):
        tile[fastest] = slice(i, i + 64)
        for j in range(0, a.shape[other], other_step):
            tile[other] = slice(j, j + other_step)
            out[tuple(tile)] = a[tuple(tile)]
    return out


def tiled_copy_pays(backend, a):
    """Would :func:`contiguous` copy ``a`` in tiles (rather than plainly, or not at all)?"""
    return not a.flags.c_contiguous and _tile_axes(backend, a) is not None


def _tile_axes(backend, a):
    """(contiguous axis, other axis) to tile a copy of ``a`` by, or None where a plain
    copy reuses the cache lines it reads, or the backend has no CPU caches to mind."""
    if not backend.cache_blocking or a.nbytes < 1 << 20:
        return None
    axes = [ax for ax in range(a.ndim) if a.shape[ax] > 1]    # size-1 axes have any stride
    if len(axes) < 2:
        return None
    fastest = min(axes, key=lambda ax: abs(a.strides[ax]))
    if (fastest == axes[-1] or a.shape[fastest] < 64
            or (fastest == axes[-2] and a.shape[axes[-1]] <= 64)):
        return None
    return fastest, next(ax for ax in axes if ax != fastest)


def _padded(backend, x, geom, value=0.0, channels_first=False):
    """x (N, C, H, W) padded per ``geom``, stored like x; with ``channels_first`` laid
    out (C, Hp, Wp, N) (a view of a batch-last x, if there is no padding)."""
    xp = backend.xp
    if channels_first:
        if not geom.padded and is_batch_last(x):
            return xp.moveaxis(x, 0, -1)                             # (C, H, W, N)
        N, C = x.shape[:2]
        out = xp.empty((C, geom.Hp, geom.Wp, N), dtype=x.dtype)
        if geom.padded:
            out[...] = value
        batch_last(backend, x, out[(slice(None),) + geom.interior()])
        return out
    if not geom.padded:
        return x
    N, C = x.shape[:2]
    out = empty_as(backend, x, (N, C, geom.Hp, geom.Wp), fill=value)
    out[(Ellipsis,) + geom.interior()] = x
    return out


# ---- im2col / col2im ---------------------------------------------------------------------
def backend_kernel(backend, name, dtype):
    """The backend's own kernel ``name`` for arrays of ``dtype``, or None (array code)."""
    kernel = getattr(backend, name, None)
    dtypes = getattr(backend, "kernel_dtypes", None)
    return kernel if dtypes is None or dtype in dtypes else None


def unfold_array(backend, x, geom, layout="nkl", out=None):
    """im2col: x (N, C, H, W) -> the patches of every window, as columns.

    ``layout`` "nkl" gives (N, C*KH*KW, OH*OW) (as ``torch.nn.functional.unfold``),
    "knl" (C*KH*KW, N*OH*OW) and "kln" (C*KH*KW, OH*OW*N).  Row index
    ``c*KH*KW + i*KW + j`` holds input channel c at kernel offset (i, j).
    Padding is zeros.  Returns a contiguous array: a new one, except where the
    windows are x itself (a 1x1 kernel, stride 1, no padding), when it may be
    a read-only view of x.  With ``out`` (an array or view of the result's
    shape whose last axis is contiguous; ``nkl`` or ``kln`` only) the columns
    are written there and ``out`` returned.
    """
    if out is not None:
        _check_unfold_out(x, geom, layout, out)
    kernel = backend_kernel(backend, "im2col", x.dtype)
    if kernel is not None:
        cols = kernel(x, geom, layout)
        if out is None:
            return cols
        out[...] = cols
        return out
    xp = backend.xp
    N, C = x.shape[:2]
    K, L = C * geom.KH * geom.KW, geom.OH * geom.OW
    # Every layout: one strided view holding every window, copied once.  kln
    # views x laid out (C, Hp, Wp, N); the others (below) the padded NCHW x.
    if layout == "kln":
        xt = _padded(backend, x, geom, channels_first=True)  # (C, Hp, Wp, N)
        sC, sH, sW, sN = xt.strides
        windows = backend.as_strided(                        # (C, KH, KW, OH, OW, N)
            xt, (C, geom.KH, geom.KW, geom.OH, geom.OW, N),
            (sC, sH * geom.dh, sW * geom.dw, sH * geom.sh, sW * geom.sw, sN))
        if out is not None:
            out.reshape(windows.shape)[...] = windows
            return out
        return xp.ascontiguousarray(windows).reshape(K, L * N)   # (C*KH*KW, OH*OW*N)
    xpad = _padded(backend, as_nchw(backend, x), geom)       # (N, C, Hp, Wp)
    sN, sC, sH, sW = xpad.strides
    windows = backend.as_strided(                            # (N, C, KH, KW, OH, OW)
        xpad, (N, C, geom.KH, geom.KW, geom.OH, geom.OW),
        (sN, sC, sH * geom.dh, sW * geom.dw, sH * geom.sh, sW * geom.sw))
    if layout == "nkl" and out is not None:
        out.reshape(windows.shape)[...] = windows
        return out
    if layout == "nkl":   # (N, C, KH, KW, OH, OW) -> (N, C*KH*KW, OH*OW)
        return xp.ascontiguousarray(windows).reshape(N, K, L)
    if layout == "knl":   # (C, KH, KW, N, OH, OW) -> (C*KH*KW, N*OH*OW)
        return xp.ascontiguousarray(windows.transpose(1, 2, 3, 0, 4, 5)).reshape(K, N * L)
    raise ValueError(f"unknown column layout {layout!r}; expected 'nkl', 'knl' or 'kln'")


def _check_unfold_out(x, geom, layout, out):
    """``out`` of :func:`unfold_array` fits: the columns' shape, a contiguous last axis
    (any strides for empty columns, of an x without channels: NumPy gives those 0)."""
    N, K, L = x.shape[0], x.shape[1] * geom.KH * geom.KW, geom.OH * geom.OW
    expected = {"nkl": (N, K, L), "kln": (K, L * N)}.get(layout)
    if (expected is None or tuple(out.shape) != expected
            or (out.size and out.shape[-1] > 1 and out.strides[-1] != out.itemsize)):
        raise ValueError(f"unfold_array: out must be for the 'nkl' layout, of shape "
                         f"{shape_str((N, K, L))}, or the 'kln' layout, of shape "
                         f"{shape_str((K, L * N))}, with a contiguous last axis; got "
                         f"layout {layout!r}, shape {shape_str(out.shape)} and "
                         f"strides {out.strides}")


def fold_array(backend, cols, geom, N, C, layout="nkl", out=None):
    """col2im, the adjoint of :func:`unfold_array`: columns -> (N, C, H, W), overlaps summed
    (for ``kln`` without ``out``, stored batch-last, as the columns are).

    A loop over the KH*KW kernel offsets, each adding one strided slice; the
    slices of one offset never overlap, so this is the same code on CuPy.
    With ``out`` (an (N, C, H, W) array or view) the result is written there.
    """
    kernel = backend_kernel(backend, "col2im", cols.dtype)
    if kernel is not None:
        result = kernel(cols, geom, N, C, layout)
        if out is None:
            return result
        out[...] = result
        return out
    xp = backend.xp
    KH, KW, OH, OW = geom.KH, geom.KW, geom.OH, geom.OW
    # Strided adds from permuted columns (the gradient of local2d's patches)
    # would each read across the whole array: lay them out first.
    cols = contiguous(backend, cols)
    # Accumulate in the order the columns are laid out, then (for the
    # channel-major layouts) transpose once to NCHW.
    if layout == "nkl":
        cols = cols.reshape(N, C, KH, KW, OH, OW)
        acc = xp.zeros((N, C, geom.Hp, geom.Wp), dtype=cols.dtype)
        for _, i, j in geom.offsets():
            acc[(Ellipsis,) + geom.window(i, j)] += cols[:, :, i, j]
        result = acc[(Ellipsis,) + geom.interior()]                            # (N, C, H, W)
    elif layout == "knl":
        cols = cols.reshape(C, KH, KW, N, OH, OW)
        acc = xp.zeros((C, N, geom.Hp, geom.Wp), dtype=cols.dtype)
        for _, i, j in geom.offsets():
            acc[(Ellipsis,) + geom.window(i, j)] += cols[:, i, j]
        result = acc[(Ellipsis,) + geom.interior()].transpose(1, 0, 2, 3)     # (N, C, H, W)
    elif layout == "kln":
        cols = cols.reshape(C, KH, KW, OH, OW, N)
        acc = xp.zeros((C, geom.Hp, geom.Wp, N), dtype=cols.dtype)
        for _, i, j in geom.offsets():
            acc[(slice(None),) + geom.window(i, j)] += cols[:, i, j]
        interior = acc[(slice(None),) + geom.interior()]                        # (C, H, W, N)
        if out is None:   # batch-last, as the columns (a copy only to drop the padding)
            return xp.moveaxis(xp.ascontiguousarray(interior) if geom.padded else interior,
                               -1, 0)                                          # (N, C, H, W)
        if out.flags.c_contiguous:
            return batch_first(backend, interior, out)                         # (N, C, H, W)
        out[...] = xp.moveaxis(interior, -1, 0)                                # (N, C, H, W)
        return out
    else:
        raise ValueError(f"unknown column layout {layout!r}; expected 'nkl', 'knl' or 'kln'")
    if out is not None:
        out[...] = result
        return out
    return xp.ascontiguousarray(result)


# ---- depthwise convolution ---------------------------------------------------------------
def is_depthwise(C, groups):
    """Is a convolution of C input channels in ``groups`` groups depthwise: one input
    channel per group (w of shape (C*m, 1, KH, KW), m output channels per input channel)?"""
    return groups == C


DEPTHWISE_MIN_TAPS = 25          # kernel offsets from which the loops win at stride 1 (5x5)
DEPTHWISE_MIN_TAPS_STRIDED = 49  # and with a stride (7x7)


def depthwise_pays(backend, N, C, m, geom):
    """Does a depthwise convolution (see :func:`is_depthwise`) of N images of C
    channels, m outputs each, take :func:`depthwise_conv_array` and its adjoints
    rather than im2col and C GEMMs of m rows?

    The loop costs two passes over y per kernel offset (NumPy has no fused
    multiply-add), its transpose as many, the weight gradient one einsum per
    offset; im2col costs one copy per offset and a GEMM that reads the columns
    once, but its KH*KW copies of x outgrow the caches.  Measured forward +
    backward (float32, N = 32, C = 32..256, 8x8..64x64 images, on a 2-vCPU x86
    machine under load, the better of 3), the loops' time over im2col's:
    5x5 and 7x7 at stride 1 0.25-0.95 (0.3 for 7x7 on 32x32 and 64x64 images;
    1.2 once, C = 128 on 8x8), 7x7 at stride 2 0.5-0.9 (1.1-1.3 on 8x8 and
    16x16 images of few channels), 5x5 at stride 2 0.7-1.25, 3x3 0.6-1.4 at
    stride 1 and 0.95-1.4 at stride 2.  With m > 1 outputs per channel (m loops
    against one GEMM of m rows) or one input channel (a plain GEMM: LeNet's
    first convolution) 1.6-2.8x.  So: one output per channel, and a kernel of at
    least ``DEPTHWISE_MIN_TAPS`` offsets at stride 1 or
    ``DEPTHWISE_MIN_TAPS_STRIDED`` with a stride.
    """
    taps = geom.KH * geom.KW
    strided = (geom.sh, geom.sw) != (1, 1)
    return m == 1 and taps >= (DEPTHWISE_MIN_TAPS_STRIDED if strided else DEPTHWISE_MIN_TAPS)


def _split_channels(backend, a, C):
    """a (N, C*m, H, W) -> (N, C, m, H, W), stored as a is (a view where a is batch-last
    or C-contiguous)."""
    xp = backend.xp
    N, CM, H, W = a.shape
    if is_batch_last(a):   # (C*m, H, W, N) memory -> (C, m, H, W, N) -> (N, C, m, H, W)
        return xp.moveaxis(xp.moveaxis(a, 0, -1).reshape(C, CM // C, H, W, N), -1, 0)
    return xp.ascontiguousarray(a).reshape(N, C, CM // C, H, W)      # (N, C, m, H, W)


def _depthwise_batch_last(backend, a, geom):
    """Does the depthwise array code run on ``a`` (N, C, ...) laid out batch-last?

    Each multiply-add of the loop reads a strided window of the padded input
    (N, C, OH, OW), whose contiguous runs are NumPy's inner loops: OW elements
    (one output row) in NCHW, but OW*N (stride 1) or N (wider strides) with the
    batch innermost.  Rows of 8-16 make NumPy's per-run overhead dominate, so
    on the host (``cache_blocking``) the loop runs batch-last where that makes
    longer runs, or where ``a`` is batch-last already.
    """
    N = a.shape[0]
    if not backend.cache_blocking or N < 2:
        return False
    return is_batch_last(a) or N * (geom.OW if geom.sw == 1 else 1) > geom.OW


def _in_depthwise_order(backend, a, last):
    """a (N, C, H, W) stored batch-last if ``last`` (a tiled copy if it is not), else
    in C order (a copy if it is not)."""
    if not last:
        return backend.xp.ascontiguousarray(as_nchw(backend, a))
    if is_batch_last(a):
        return a
    return backend.xp.moveaxis(batch_last(backend, a), -1, 0)     # (N, C, H, W)


def _depthwise_padded(backend, x, geom, last):
    """x (N, C, H, W) zero-padded per ``geom``: (N, C, Hp, Wp), batch-last if ``last``."""
    if last:   # (C, Hp, Wp, N) memory
        return backend.xp.moveaxis(_padded(backend, x, geom, channels_first=True), -1, 0)
    return _padded(backend, backend.xp.ascontiguousarray(as_nchw(backend, x)), geom)


def _depthwise_taps(backend, w, C, geom):
    """w (C*m, 1, KH, KW) -> (KH*KW, m, C, 1, 1): ``taps[k, r]`` is the weight of kernel
    offset k for output r of every input channel, shaped to multiply (N, C, OH, OW)."""
    m = w.shape[0] // C
    taps = w.reshape(C, m, geom.KH * geom.KW).transpose(2, 1, 0)     # (KH*KW, m, C)
    return backend.xp.ascontiguousarray(taps).reshape(geom.KH * geom.KW, m, C, 1, 1)


def _channel_slice(index):
    """The channels a :func:`cache_chunks` index selects (all of them for a slice of
    the batch)."""
    return index[1] if len(index) > 1 else slice(None)


def depthwise_conv_array(backend, x, w, geom, b=None):
    """A depthwise conv2d: x (N, C, H, W), w (C*m, 1, KH, KW), b (C*m,) or None ->
    y (N, C*m, OH, OW), stored batch-last where the loop runs so (on the host, for
    more than one image: :func:`_depthwise_batch_last`), else in C order.

    ``y[:, c*m + r] = sum_(i, j) w[c*m + r, 0, i, j] * x_padded[:, c, window(i, j)] + b``:
    a loop over the KH*KW kernel offsets (and the m outputs of each channel), each
    one multiply-add of a strided slice of the padded input, slice by slice of
    :func:`cache_chunks` so that y's partial sums stay in cache.  As many
    multiply-adds as the im2col route's GEMMs, without its columns (KH*KW times
    x) or its C tiny products of m rows.
    """
    xp = backend.xp
    N, C = x.shape[:2]
    m = w.shape[0] // C
    xpad = _depthwise_padded(backend, x, geom,
                             _depthwise_batch_last(backend, x, geom))  # (N, C, Hp, Wp)
    y = empty_as(backend, xpad, (N, C * m, geom.OH, geom.OW))
    y_split = _split_channels(backend, y, C)                           # (N, C, m, OH, OW)
    taps = _depthwise_taps(backend, w, C, geom)                        # (KH*KW, m, C, 1, 1)
    bias = None if b is None else b.reshape(C, m, 1, 1)
    for c in cache_chunks(backend, xpad, max(xpad.nbytes, y.nbytes)):
        ch = _channel_slice(c)
        x_part, y_part = xpad[c], y_split[c]                           # (n, c, ...) each
        tmp = empty_as(backend, x_part, y_part.shape[:2] + y_part.shape[3:])  # (n, c, OH, OW)
        for r in range(m):
            out = y_part[:, :, r]                                      # (n, c, OH, OW)
            for k, i, j in geom.offsets():
                window = x_part[(Ellipsis,) + geom.window(i, j)]       # (n, c, OH, OW)
                if k == 0:
                    xp.multiply(window, taps[k, r][ch], out=out)
                else:
                    xp.multiply(window, taps[k, r][ch], out=tmp)
                    out += tmp
            if bias is not None:
                out += bias[ch, r]
    return y


def depthwise_transpose_array(backend, g, w, geom, C):
    """The adjoint of :func:`depthwise_conv_array` in x (its input gradient, and a
    depthwise conv_transpose2d): g (N, C*m, OH, OW), w (C*m, 1, KH, KW) -> (N, C, H, W),
    stored as :func:`depthwise_conv_array` stores y.

    The same loop over kernel offsets, each adding ``w * g`` into its strided slice
    of the padded result (as :func:`fold_array`: the slices of one offset never
    overlap), slice by slice of :func:`cache_chunks`.
    """
    xp = backend.xp
    N = g.shape[0]
    m = w.shape[0] // C
    g = _in_depthwise_order(backend, g, _depthwise_batch_last(backend, g, geom))
    g_split = _split_channels(backend, g, C)                           # (N, C, m, OH, OW)
    acc = empty_as(backend, g, (N, C, geom.Hp, geom.Wp), fill=0)
    taps = _depthwise_taps(backend, w, C, geom)                        # (KH*KW, m, C, 1, 1)
    for c in cache_chunks(backend, acc, max(acc.nbytes, g.nbytes)):
        ch = _channel_slice(c)
        acc_part, g_part = acc[c], g_split[c]                          # (n, c, ...) each
        tmp = empty_as(backend, acc_part, g_part.shape[:2] + g_part.shape[3:])  # (n, c, OH, OW)
        for k, i, j in geom.offsets():
            target = acc_part[(Ellipsis,) + geom.window(i, j)]         # (n, c, OH, OW)
            for r in range(m):
                if r == 0 and not geom.overlapping:   # each element in one window at most
                    xp.multiply(g_part[:, :, r], taps[k, r][ch], out=target)
                else:
                    xp.multiply(g_part[:, :, r], taps[k, r][ch], out=tmp)
                    target += tmp
    return _interior(backend, acc, geom)


def depthwise_weight_array(backend, x, g, geom):
    """The weight gradient of :func:`depthwise_conv_array`: x (N, C, H, W) and
    g (N, C*m, OH, OW) -> (C*m, 1, KH, KW),
    ``sum over n, oh, ow of g[:, c*m + r] * x_padded[:, c, window(i, j)]`` for each
    kernel offset (i, j): per offset one einsum (a product summed per channel),
    slice by slice of :func:`cache_chunks`."""
    xp = backend.xp
    N, C = x.shape[:2]
    m = g.shape[1] // C
    # One memory order for both, so that the products' passes read both in order.
    last = _depthwise_batch_last(backend, x, geom)
    xpad = _depthwise_padded(backend, x, geom, last)                   # (N, C, Hp, Wp)
    g = _in_depthwise_order(backend, g, last)
    g_split = _split_channels(backend, g, C)                           # (N, C, m, OH, OW)
    grad = xp.zeros((geom.KH * geom.KW, m, C), dtype=g.dtype)          # (KH*KW, m, C)
    for c in cache_chunks(backend, xpad, max(xpad.nbytes, g.nbytes)):
        ch = _channel_slice(c)
        x_part, g_part = xpad[c], g_split[c]                           # (n, c, ...) each
        for k, i, j in geom.offsets():
            window = x_part[(Ellipsis,) + geom.window(i, j)]           # (n, c, OH, OW)
            for r in range(m):
                # One pass without a temporary: 2x faster than a product and a sum.
                grad[k, r, ch] += xp.einsum("nchw,nchw->c", g_part[:, :, r], window)
    # (KH*KW, m, C) -> (C, m, KH*KW) -> (C*m, 1, KH, KW): w's shape
    return xp.ascontiguousarray(grad.transpose(2, 1, 0)).reshape(C * m, 1, geom.KH, geom.KW)


# ---- pooling -----------------------------------------------------------------------------
def _windows(backend, x, geom, value):
    """The KH*KW strided slices (each (N, C, OH, OW)) of x padded with ``value``."""
    xpad = _padded(backend, x, geom, value)
    return [xpad[(Ellipsis,) + geom.window(i, j)] for _, i, j in geom.offsets()]


def _valid_offsets(backend, geom):
    """(KH*KW, OH, OW) bool: does offset k of window (oh, ow) fall on the real input?"""
    def axis_valid(n_out, stride, dilation, k, before, size):
        pos = np.arange(n_out)[None, :] * stride + np.arange(k)[:, None] * dilation - before
        return (pos >= 0) & (pos < size)                     # (k, n_out)
    vh = axis_valid(geom.OH, geom.sh, geom.dh, geom.KH, geom.pt, geom.H)
    vw = axis_valid(geom.OW, geom.sw, geom.dw, geom.KW, geom.pl, geom.W)
    valid = vh[:, None, :, None] & vw[None, :, None, :]    # (KH, KW, OH, OW)
    # Kept on the device (Backend.constant): each backward needs it again.
    return backend.constant(valid.reshape(geom.KH * geom.KW, geom.OH, geom.OW))


def max_pool_array(backend, x, geom):
    """The maximum of each window (padding is -inf) -> (N, C, OH, OW).

    Only the maxima: which element won is worked out again from x and y by
    :func:`first_max_masks` when a gradient or the indices are asked for.
    """
    kernel = backend_kernel(backend, "max_pool", x.dtype)
    if kernel is not None:
        return kernel(x, geom)
    xp = backend.xp
    windows = _windows(backend, x, geom, -np.inf)
    y = empty_as(backend, x, windows[0].shape)
    for c in cache_chunks(backend, x):
        part = y[c]
        part[...] = windows[0][c]
        for w in windows[1:]:
            xp.maximum(part, w[c], out=part)
    return y


def first_max_masks(backend, x, y, geom):
    """Yield (k, i, j, hit) for each kernel offset k = i*KW + j in row-major order:
    ``hit`` (N, C, OH, OW) marks the windows whose first maximal element is at offset k.

    Offset k wins a window that no earlier offset won ("free") where its element
    is not less than the maximum - the maximum itself, or any element of a
    window holding NaN, so that window's first element wins.  Padding never wins.
    """
    xp = backend.xp
    windows = _windows(backend, x, geom, -np.inf)
    valid = _valid_offsets(backend, geom) if geom.padded else None
    free = None
    last = len(windows) - 1
    for k, i, j in geom.offsets():
        below = windows[k] < y
        if free is None:
            hit = ~below
            if valid is not None:
                hit &= valid[0]
            free = below if valid is None else ~hit
        else:
            hit = xp.greater(free, below)                   # free and not below
            if valid is not None:
                hit &= valid[k]
            if k < last:
                xp.logical_xor(free, hit, out=free)         # hit windows are taken
        yield k, i, j, hit


def max_pool_scatter_array(backend, g, x, y, geom):
    """The max-pool gradient: g (N, C, OH, OW) sent to the first maximal element of
    each window, summed where windows overlap -> (N, C, H, W)."""
    kernel = backend_kernel(backend, "max_pool_scatter", g.dtype)
    if kernel is not None:
        return kernel(g, x, y, geom)
    xp = backend.xp
    N, C = g.shape[:2]
    # Every element of x lies in exactly one window when the windows tile the
    # (unpadded) input; then each is written once and nothing needs zeroing.
    tiles = (not geom.padded and not geom.overlapping and geom.sh == geom.KH
             and geom.sw == geom.KW and geom.H == geom.OH * geom.sh
             and geom.W == geom.OW * geom.sw)
    acc = empty_as(backend, x, (N, C, geom.Hp, geom.Wp), g.dtype, fill=None if tiles else 0)
    g = in_order_of(backend, g, y)
    for c in cache_chunks(backend, x):
        part = acc[c]
        for k, i, j, hit in first_max_masks(backend, x[c], y[c], geom):
            target = part[(Ellipsis,) + geom.window(i, j)]
            if geom.overlapping:
                target += g[c] * hit
            else:  # each input element is in at most one window: write, don't add
                xp.multiply(g[c], hit, out=target)
    return _interior(backend, acc, geom)


def max_pool_gather_array(backend, gx, x, y, geom):
    """The adjoint of the scatter: each window reads gx at its first maximal element
    -> (N, C, OH, OW)."""
    kernel = backend_kernel(backend, "max_pool_gather", gx.dtype)
    if kernel is not None:
        return kernel(gx, x, y, geom)
    xp = backend.xp
    gx_windows = _windows(backend, in_order_of(backend, gx, x), geom, 0.0)
    out = empty_as(backend, y, dtype=gx.dtype, fill=0)
    for c in cache_chunks(backend, x):
        for k, _, _, hit in first_max_masks(backend, x[c], y[c], geom):
            xp.copyto(out[c], gx_windows[k][c], where=hit)
    return out


def max_pool_indices(backend, x, y, geom):
    """PyTorch's flat indices into H*W of the first maximal element of each window, int64."""
    xp = backend.xp
    arg = empty_as(backend, y, dtype=np.int64, fill=0)
    for k, _, _, hit in first_max_masks(backend, x, y, geom):
        xp.copyto(arg, k, where=hit)
    rows = np.arange(geom.OH) * geom.sh - geom.pt
    cols = np.arange(geom.OW) * geom.sw - geom.pl
    base = rows[:, None] * geom.W + cols[None, :]                           # (OH, OW)
    offset = np.array([i * geom.dh * geom.W + j * geom.dw for _, i, j in geom.offsets()])
    return backend.asarray(base.astype(np.int64)) + xp.take(
        backend.asarray(offset.astype(np.int64)), arg)


def sum_pool_array(backend, x, geom):
    """The sum of each window (zero padding) -> (N, C, OH, OW)."""
    windows = _windows(backend, x, geom, 0.0)
    y = empty_as(backend, x, windows[0].shape)
    y[...] = windows[0]
    for w in windows[1:]:
        y += w
    return y


def sum_pool_adjoint_array(backend, g, geom):
    """The adjoint of :func:`sum_pool_array`: g added to every element of its window."""
    N, C = g.shape[:2]
    acc = empty_as(backend, g, (N, C, geom.Hp, geom.Wp), fill=0)
    for _, i, j in geom.offsets():
        target = acc[(Ellipsis,) + geom.window(i, j)]
        if geom.overlapping:
            target += g
        else:
            target[...] = g
    return _interior(backend, acc, geom)


def _interior(backend, acc, geom):
    """The unpadded part of ``acc`` (N, C, Hp, Wp), copied (in acc's order) if padded."""
    if not geom.padded:
        return acc
    out = empty_as(backend, acc, acc.shape[:2] + (geom.H, geom.W))
    out[...] = acc[(Ellipsis,) + geom.interior()]
    return out


def avg_pool_divisor(geom, ph, pw, count_include_pad, divisor_override):
    """Host (OH, OW) array of the number each window sum is divided by (PyTorch's rule).

    With ``count_include_pad`` the window counts the ``ph``/``pw`` padding but
    not the part that ``ceil_mode`` hangs beyond it; without, only real elements.
    """
    if divisor_override is not None:
        return np.full((geom.OH, geom.OW), float(divisor_override))

    def axis_counts(n_out, stride, k, pad, size):
        start = np.arange(n_out) * stride - pad
        end = np.minimum(start + k, size + pad)
        if count_include_pad:
            return end - start
        return np.minimum(end, size) - np.maximum(start, 0)
    rows = axis_counts(geom.OH, geom.sh, geom.KH, ph, geom.H)
    cols = axis_counts(geom.OW, geom.sw, geom.KW, pw, geom.W)
    return (rows[:, None] * cols[None, :]).astype(np.float64)


# ---- adaptive pooling --------------------------------------------------------------------
def adaptive_bins(size, n_out):
    """Bin i covers [floor(i*size/n_out), ceil((i+1)*size/n_out)) (PyTorch's rule)."""
    i = np.arange(n_out)
    return (i * size) // n_out, -((-(i + 1) * size) // n_out)


def adaptive_avg_array(backend, x, OH, OW):
    """The mean of each adaptive bin: (N, C, H, W) -> (N, C, OH, OW).

    Separable: the means over each bin of rows, then over each bin of
    columns.  Every mean reads its own bin only, so an inf or NaN reaches only
    the bins that hold it, as in PyTorch (an averaging matrix would multiply it
    by the zeros of every other bin and give NaN there).
    """
    xp = backend.xp
    H, W = x.shape[2:]
    return _bin_means(xp, _bin_means(xp, x, H, OH, axis=2), W, OW, axis=3)


def adaptive_avg_adjoint_array(backend, g, H, W):
    """The adjoint of :func:`adaptive_avg_array`: each bin's ``g / bin size`` added
    over the bin, (N, C, OH, OW) -> (N, C, H, W)."""
    xp = backend.xp
    OH, OW = g.shape[2:]
    return _bin_spread(xp, _bin_spread(xp, g, W, OW, axis=3), H, OH, axis=2)


def _bin_means(xp, x, size, n_out, axis):
    """The mean of each of the ``n_out`` adaptive bins of ``x``'s ``axis`` (of ``size``)."""
    index = [slice(None)] * x.ndim
    means = []
    for s, e in zip(*(b.tolist() for b in adaptive_bins(size, n_out))):
        index[axis] = slice(s, e)
        means.append(x[tuple(index)].mean(axis=axis, keepdims=True))
    return xp.concatenate(means, axis=axis)


def _bin_spread(xp, g, size, n_out, axis):
    """The adjoint of :func:`_bin_means`: ``g``'s ``axis`` of ``n_out`` bins -> ``size``."""
    shape = list(g.shape)
    shape[axis] = size
    out = xp.zeros(shape, dtype=g.dtype)
    index, bin_index = [slice(None)] * g.ndim, [slice(None)] * g.ndim
    for i, (s, e) in enumerate(zip(*(b.tolist() for b in adaptive_bins(size, n_out)))):
        index[axis], bin_index[axis] = slice(s, e), slice(i, i + 1)
        out[tuple(index)] += g[tuple(bin_index)] / (e - s)   # bins may overlap: add
    return out


def adaptive_max_array(backend, x, OH, OW):
    """(y, idx): the maximum of each adaptive bin and the flat H*W index (int64) of
    its first (row-major) maximal element; in a bin holding NaN, of its first
    element (y NaN), as :func:`first_max_masks` does for max pooling."""
    xp = backend.xp
    N, C, H, W = x.shape

    def bin_index(size, n_out):
        start, end = adaptive_bins(size, n_out)
        width = int((end - start).max())
        # Short bins repeat their last element: a repeat comes after the
        # original, so the first maximum is still the original.
        return np.minimum(start[:, None] + np.arange(width)[None, :], end[:, None] - 1)
    rows, cols = bin_index(H, OH), bin_index(W, OW)                  # (OH, a), (OW, b)
    flat = (rows[:, None, :, None] * W + cols[None, :, None, :])      # (OH, OW, a, b)
    flat = flat.reshape(OH * OW, -1)                                  # (OH*OW, a*b)
    # The index arrays depend on the sizes alone: kept on the device (Backend.constant).
    windows = xp.take(x.reshape(N, C, H * W), backend.constant(flat), axis=2)
    arg = xp.argmax(windows, axis=3)                                  # (N, C, OH*OW)
    y = xp.take_along_axis(windows, arg[..., None], axis=3)[..., 0]  # (N, C, OH*OW)
    # argmax stops at a NaN (y is then NaN); max pooling's rule sends such a
    # bin to its first element.
    arg = xp.where(xp.isnan(y), 0, arg)
    base = np.arange(OH * OW)[:, None] * flat.shape[1]
    idx = xp.take(backend.constant(flat.reshape(-1)), arg + backend.constant(base[:, 0]))
    return y.reshape(N, C, OH, OW), idx.reshape(N, C, OH, OW)


def index_scatter_array(backend, g, idx, H, W):
    """g (N, C, OH, OW) added into zeros (N, C, H, W) at flat H*W indices ``idx``."""
    xp = backend.xp
    N, C, OH, OW = g.shape
    out = xp.zeros((N * C, H * W), dtype=g.dtype)
    rows = xp.arange(N * C, dtype=idx.dtype).reshape(N * C, 1)
    backend.scatter_add(out, (rows, idx.reshape(N * C, OH * OW)), g.reshape(N * C, OH * OW))
    return out.reshape(N, C, H, W)


def index_gather_array(backend, gx, idx):
    """The adjoint of the scatter: gx (N, C, H, W) read at flat indices ``idx``."""
    xp = backend.xp
    N, C, H, W = gx.shape
    OH, OW = idx.shape[2:]
    out = xp.take_along_axis(gx.reshape(N, C, H * W), idx.reshape(N, C, OH * OW), axis=2)
    return out.reshape(idx.shape)


# ---- the error function and GELU ---------------------------------------------------------
# float64: W. J. Cody's rational approximations of erf ("Rational Chebyshev approximations
# for the error function", Math. Comp. 23 (1969), the coefficients of his CALERF), highest
# degree first:  erf(x) = x P(x^2) / Q(x^2) for |x| <= 0.46875, and erf(x) = 1 - e^(-x^2)
# R(x) / S(x) above (R / S approximates erfc(x) e^(x^2)).  Cody fitted R / S for |x| <= 4;
# up to 6 it still gives erfc to ~1e-12 relative, which erf = 1 - erfc no longer sees
# (erfc(4) is 1.5e-8), and from 6 on erf is 1 to float64's rounding (erfc(6) ~ 2e-17): |x|
# is clamped there, so x^8 never overflows.
_ERF_SPLIT, _ERF_ONE = 0.46875, 6.0
_ERF_P = (1.85777706184603153e-1, 3.16112374387056560e0, 1.13864154151050156e2,
          3.77485237685302021e2, 3.20937758913846947e3)
_ERF_Q = (1.0, 2.36012909523441209e1, 2.44024637934444173e2, 1.28261652607737228e3,
          2.84423683343917062e3)
_ERF_R = (2.15311535474403846e-8, 5.64188496988670089e-1, 8.88314979438837594e0,
          6.61191906371416295e1, 2.98635138197400131e2, 8.81952221241769090e2,
          1.71204761263407058e3, 2.05107837782607147e3, 1.23033935479799725e3)
_ERF_S = (1.0, 1.57449261107098347e1, 1.17693950891312499e2, 5.37181101862009858e2,
          1.62138957456669019e3, 3.29079923573345963e3, 4.36261909014324716e3,
          3.43936767414372164e3, 1.23033935480374942e3)
# float32 (and float16, computed in float32): erf(x) = tanh(z), z = t + t W(t^2), t = x
# clamped to +-4.3, W = P / Q approximating atanh(erf(t)) / t - 1 (0.128 at 0).  tanh
# makes erf odd, saturates it to exactly +-1 (z(4.3) ~ 10.6; erf rounds to 1 in float32
# from 3.92) and flattens the error of z where erf approaches 1; adding t last keeps the
# rounding of the small t W out of the result for small |x|.  P and Q (Q with leading
# coefficient 1) were fitted for this project by docs/fit_erf.py (weighted minimax of W's
# relative error, Lawson's algorithm on Chebyshev nodes, in float64) and rounded to
# float32; run it to regenerate them, and `python docs/fit_erf.py --verify` for the
# error bounds stated in erf_array.
_ERF32_CLAMP = 4.3
_ERF32_P = (-1016.51465, -10021.975, -60597.023, -62418.258)
_ERF32_Q = (1.0, -206.63522, -12583.602, -82791.17, -486202.4)
_SQRT_HALF = math.sqrt(0.5)
_LOG_INV_SQRT_PI = -0.5 * math.log(math.pi)


def erf_array(backend, x):
    """erf(x) = 2/sqrt(pi) * integral from 0 to x of e^(-t^2) dt, elementwise, for a float
    array x; the result has x's dtype and is stored like x.

    NumPy has no erf (SciPy's and ``cupyx.scipy.special``'s would be one more dependency
    per backend), so this evaluates rational approximations (above) with array
    arithmetic alone, the same code on NumPy and CuPy:

    * float64 (and wider floats): Cody's, in float64, within ~2 ulp of the exact value
      (relative error < 5e-16, tiny |x| included).
    * float32: tanh(t + t W(t^2)), one rational function W of degree 3/4 on |x| <= 4.3,
      in float32: ~20 passes where Cody's two branches make ~60 in float64, about 9x
      faster.  Within 2.5 ulp of the exact value for every float32 x (2.41 measured
      over all of them), so relative error < 3e-7 down to the smallest normal number
      (and below 1 subnormal spacing under it); exactly +-1 from |x| = 4.3 on.  That
      is with NumPy's float32 tanh (x86-64 SIMD, itself up to 1.37 ulp off); with a
      correctly rounded tanh it would be 1.68, so another backend's tanh moves the
      bound by its own error (CUDA's tanhf: up to 2 ulp).
    * float16: the float32 value rounded once: the float16 nearest the exact value
      (for every float16 x; at most 1 ulp off where float32 lands next to a tie).

    erf(+-inf) = +-1, erf(-0.0) = -0.0, NaN stays NaN.

    Array code cannot branch per element: Cody's two approximations both run on every
    element and ``where`` keeps the right one.  On the host the passes run slice by slice
    (:func:`cache_chunks`), reading from the cache and reusing small temporaries: for a
    64x32x16x16 float32 array as fast as whole-array passes when the process keeps its
    freed memory (``backend.reduce_malloc_churn``), ~4.5x faster under glibc's default
    malloc thresholds, which hand each whole-array temporary back to the OS.
    """
    return elementwise_in_slices(backend, _erf_slice, x)


def gelu_array(backend, x, with_cdf=False):
    """GELU, x Phi(x) = x/2 * (1 + erf(x / sqrt(2))) (Phi the standard normal CDF),
    elementwise, as PyTorch's ``approximate='none'``; x's dtype, stored like x.  erf as
    in :func:`erf_array` (float16 computed in float32), in the same slices.

    ``with_cdf``: return (GELU, Phi(x)), Phi in the compute dtype (float32 for
    float16), for :func:`gelu_grad_array` to reuse instead of computing erf again."""
    if not with_cdf:
        return elementwise_in_slices(backend, _gelu_slice, x)
    return elementwise_in_slices(backend, _gelu_and_cdf_slice, x,
                                 dtypes=(x.dtype, _compute_dtype(x.dtype)))


def gelu_grad_array(backend, x, grad_out, cdf=None):
    """grad_out * GELU'(x), GELU'(x) = Phi(x) + x phi(x) (phi the standard normal
    density), elementwise for grad_out of x's shape; x's dtype, stored like x.  ``cdf``:
    Phi(x) as :func:`gelu_array` returned it (else computed here, with erf)."""
    for name, a in (("grad_out", grad_out), ("cdf", cdf)):
        if a is not None and a.shape != x.shape:
            raise ValueError(f"gelu_grad_array: {name} has shape {a.shape}; expected x's "
                             f"shape {x.shape}")
    others = (grad_out,) if cdf is None else (grad_out, cdf)
    return elementwise_in_slices(backend, _gelu_grad_slice, x, *others)


def elementwise_in_slices(backend, fn, x, *others, dtypes=None):
    """``fn(xp, x, *others)`` (elementwise array code) slice by slice of
    :func:`cache_chunks`, into an array of x's dtype stored like x.  ``others`` have
    x's shape; one stored otherwise is copied like x first (if not a broadcast).
    ``dtypes``: for an ``fn`` that returns a tuple of arrays, their dtypes; the
    results are then a tuple too."""
    xp = backend.xp
    others = [in_order_of(backend, a, x) for a in others]
    single = dtypes is None
    dtypes = (x.dtype,) if single else dtypes
    if x.ndim == 0:   # as a 1-element array: ufuncs return scalars for 0-d operands
        parts = fn(xp, x.reshape(1), *(a.reshape(1) for a in others))
        outs = tuple(part.reshape(()).astype(dtype, copy=False)
                     for part, dtype in zip((parts,) if single else parts, dtypes))
    else:
        outs = tuple(empty_as(backend, x, dtype=dtype) for dtype in dtypes)
        for c in cache_chunks(backend, x):
            parts = fn(xp, x[c], *(a[c] for a in others))
            for out, part in zip(outs, (parts,) if single else parts):
                out[c] = part   # (cast to the output's dtype)
    return outs[0] if single else outs


def _compute_dtype(dtype):
    """float32 for float16 and float32 arrays, float64 for the rest."""
    return np.dtype(np.float32) if dtype.itemsize <= 4 else np.dtype(np.float64)


def _erf_slice(xp, x):
    """erf of a slice, in its compute dtype (a new array)."""
    x = x.astype(_compute_dtype(x.dtype), copy=False)
    return _erf32(xp, x) if x.dtype == np.float32 else _erf64(xp, x)


def _erf32(xp, x):
    """erf of a float32 array: tanh(t + t W(t^2)), t = x clamped to +-4.3."""
    t = xp.clip(x, -_ERF32_CLAMP, _ERF32_CLAMP)   # (NaN stays NaN)
    s = t * t
    z = _horner(_ERF32_P, s)
    z /= _horner(_ERF32_Q, s)
    z *= t
    z += t
    return xp.tanh(z, out=z)


def _erf64(xp, x):
    """erf of a float64 array: Cody's two branches."""
    y = xp.abs(x)
    t = xp.minimum(y, _ERF_SPLIT)                      # the small branch: x^2 <= 0.46875^2
    t *= t
    small = _horner(_ERF_P, t)
    small /= _horner(_ERF_Q, t)
    small *= y                                         # erf(|x|) = |x| P / Q
    t = xp.minimum(y, _ERF_ONE)                        # the large branch: |x| <= 6
    large = _horner(_ERF_R, t)
    large /= _horner(_ERF_S, t)
    large *= xp.exp(-(t * t))                          # erfc(|x|)
    erf_abs = xp.where(y <= _ERF_SPLIT, small, 1 - large)   # (NaN: the large branch's NaN)
    return xp.copysign(erf_abs, x)                     # erf is odd


def _gelu_slice(xp, x):
    """GELU of a slice, in its compute dtype."""
    return _gelu_and_cdf_slice(xp, x)[0]


def _gelu_and_cdf_slice(xp, x):
    """(GELU, Phi) of a slice, in its compute dtype: Phi(x) = (1 + erf(x / sqrt(2))) / 2
    and x Phi(x), PyTorch's order of operations (so that -0.0 gives -0.0)."""
    x = x.astype(_compute_dtype(x.dtype), copy=False)
    cdf = _erf_slice(xp, x * _SQRT_HALF)
    cdf += 1
    cdf *= 0.5
    return x * cdf, cdf


def _gelu_grad_slice(xp, x, grad_out, cdf=None):
    """grad_out * (Phi(x) + x phi(x)) of a slice, in x's compute dtype.  With u = x /
    sqrt(2), x phi(x) = u e^(-u^2) / sqrt(pi)."""
    x = x.astype(_compute_dtype(x.dtype), copy=False)
    u = x * _SQRT_HALF
    if cdf is None:
        cdf = _erf_slice(xp, u)
        cdf += 1
        cdf *= 0.5
    with np.errstate(over="ignore"):   # u^2 = inf beyond |u| ~ 1e19 (float32): e^-inf = 0
        slope = u * u
    xp.subtract(_LOG_INV_SQRT_PI, slope, out=slope)
    xp.exp(slope, out=slope)
    slope *= u                                         # x phi(x)
    slope += cdf
    slope *= grad_out
    return slope


def _horner(coefs, t):
    """The polynomial with coefficients ``coefs`` (highest degree first, at least two)
    at the array t, in a new array.  A leading coefficient of 1 costs no product."""
    if coefs[0] == 1:
        p = t + coefs[1]
    else:
        p = coefs[0] * t
        p += coefs[1]
    for c in coefs[2:]:
        p *= t
        p += c
    return p


# ---- batch normalisation -----------------------------------------------------------------
def channel_rows(backend, a, batch_last):
    """a (N, C, ...) as (P, C, R): each channel's values in P rows of R, the rows contiguous
    where ``a`` is stored as ``batch_last`` says (a view then; a copy for other strides).

    C order: (N, C, L), a row per image (L the spatial size); batch-last ((C, L, N)
    memory): (L, C, N), a row per position, the batch along it.  Array code that reads
    several arrays of x's shape takes the order from x (``batch_last=is_batch_last(x)``)
    for all of them, so their rows line up.
    """
    N, C = a.shape[:2]
    if batch_last:
        return backend.xp.moveaxis(a, 0, -1).reshape(C, -1, N).transpose(1, 0, 2)  # (L, C, N)
    return a.reshape(N, C, -1)                                                      # (N, C, L)


# The per-channel sums of batch normalisation.  The sum of each row comes from BLAS (a
# matrix-vector or dot product: ~3x faster than ``a.sum((0, 2))``, and accurate, with its
# many partial sums); the P row sums are then added in float64, since added one after
# another in float32 they lost several ulp of the mean of values far from 0 (1e4 + noise:
# 3x the error of one rounding).  Rows of one value ((N, C) features, where BLAS would
# make N * C products of length 1) are summed in float64 at once.  Both give float64.
def _channel_sums(xp, a):
    """(P, C, R) -> (C,) float64: the sum of each channel's values."""
    if a.shape[2] == 1:
        return a.sum(axis=(0, 2), dtype=np.float64)
    return (a @ xp.ones(a.shape[2], dtype=a.dtype)).sum(axis=0, dtype=np.float64)  # (P, C)


def _channel_dots(xp, a, b):
    """(P, C, R) twice -> (C,) float64: the sum of each channel's products a * b, one dot
    product per row (no array of the products: ~2x faster than (a * b).sum)."""
    P, C, R = a.shape
    if R == 1:
        return (a * b).sum(axis=(0, 2), dtype=np.float64)
    return (a[..., None, :] @ b[..., None]).reshape(P, C).sum(axis=0, dtype=np.float64)


def batch_norm_array(backend, x, weight, bias, eps):
    """Training-mode batch normalisation of x (N, C, ...) by its own statistics:
    y = (x - mean) * invstd * weight + bias per channel, invstd = 1 / sqrt(var + eps),
    with the mean and biased variance of each channel over the batch and the other
    axes (``weight`` and ``bias`` (C,), or None).  Returns (y, mean, var, invstd): y of
    x's dtype, stored like x; the statistics (C,) in the compute dtype.

    The variance is the mean of the squared deviations from the mean (two passes),
    not E[x^2] - E[x]^2, which loses every digit where values lie far from 0 for their
    spread.  float16 is computed in float32 (its squared deviations overflow from 256 on)
    and y rounded once.  Whole-array passes: the mean, the deviations (written into y),
    their squares' sums, then y scaled and shifted in place; at the sizes of CNN feature
    maps (1-32 MiB) slices of :func:`cache_chunks` measured no faster (up to 1.6x slower).
    """
    xp = backend.xp
    dtype = _compute_dtype(x.dtype)
    last = is_batch_last(x)
    x3 = channel_rows(backend, x.astype(dtype, copy=False), last)            # (P, C, R)
    M = x3.shape[0] * x3.shape[2]                                           # values per channel
    mean = (_channel_sums(xp, x3) / M).astype(dtype)                        # (C,)
    y = empty_as(backend, x, dtype=dtype)
    centred = xp.subtract(x3, mean[:, None], out=channel_rows(backend, y, last))
    var = (_channel_dots(xp, centred, centred) / M).astype(dtype)
    invstd = 1 / xp.sqrt(var + eps)
    centred *= (invstd if weight is None else invstd * weight.astype(dtype))[:, None]
    if bias is not None:
        centred += bias.astype(dtype)[:, None]
    return y.astype(x.dtype, copy=False), mean, var, invstd


def batch_norm_sums_array(backend, x, grad_out, mean, invstd):
    """(2, C): sum(g) and sum(g * xhat) per channel, g = ``grad_out`` (x's shape), xhat =
    (x - mean) * invstd; the gradients of batch normalisation's bias and weight.  In the
    statistics' dtype (the compute dtype)."""
    xp = backend.xp
    x3, g3 = _grad_rows(backend, x, grad_out, mean.dtype)                  # (P, C, R)
    centred = x3 - mean[:, None]
    sums = xp.stack([_channel_sums(xp, g3), _channel_dots(xp, g3, centred) * invstd])
    return sums.astype(mean.dtype)


def batch_norm_grad_array(backend, x, grad_out, weight, mean, invstd, sums_out=None):
    """The gradient of batch normalisation for x (N, C, ...): per channel
    w * invstd * (g - mean(g) - xhat * mean(g * xhat)), g = ``grad_out``, xhat = (x -
    mean) * invstd, w = ``weight`` (C,) or 1 if None.  Of x's dtype, stored like x.

    On the way it computes (sum(g), sum(g * xhat)) per channel, the gradients of the
    bias and weight: ``sums_out``, if a list, receives them, a (2, C) array.  Two passes
    over x and g: the deviations x - mean (written into the result) and the sums, then
    the result in place, in PyTorch's order of operations.
    """
    xp = backend.xp
    dtype = mean.dtype
    last = is_batch_last(x)
    x3, g3 = _grad_rows(backend, x, grad_out, dtype)                        # (P, C, R)
    M = x3.shape[0] * x3.shape[2]
    out = empty_as(backend, x, dtype=dtype)
    centred = xp.subtract(x3, mean[:, None], out=channel_rows(backend, out, last))
    sum_g, sum_g_centred = _channel_sums(xp, g3), _channel_dots(xp, g3, centred)  # float64
    if sums_out is not None:   # as batch_norm_sums_array computes them, to the bit
        sums_out.append(xp.stack([sum_g, sum_g_centred * invstd]).astype(dtype))
    sum_g, sum_g_centred = sum_g.astype(dtype), sum_g_centred.astype(dtype)
    # xhat * mean(g xhat) = (x - mean) * invstd^2 * sum(g (x - mean)) / M
    centred *= (sum_g_centred * (invstd * invstd / M))[:, None]
    centred += (sum_g / M)[:, None]
    xp.subtract(g3, centred, out=centred)
    centred *= (invstd if weight is None else invstd * weight.astype(dtype))[:, None]
    return out.astype(x.dtype, copy=False)


def _grad_rows(backend, x, grad_out, dtype):
    """x and ``grad_out`` (stored like x first, if need be) in ``dtype`` as the (P, C, R)
    rows of :func:`channel_rows`, in x's order."""
    if grad_out.shape != x.shape:
        raise ValueError(f"batch normalisation: grad_out has shape {grad_out.shape}; "
                         f"expected x's shape {x.shape}")
    last = is_batch_last(x)
    grad_out = in_order_of(backend, grad_out, x)
    return (channel_rows(backend, x.astype(dtype, copy=False), last),
            channel_rows(backend, grad_out.astype(dtype, copy=False), last))


# ---- resampling (interpolate) ------------------------------------------------------------
# An interpolation is separable: it resamples the rows, then the columns, each
# with a small linear map of one axis, which is built here on the host from the
# sizes alone.  The source positions follow PyTorch's CPU kernels to the bit (its
# 1-D ones; its 2-D nearest kernel departs from them on some sizes, see interpolate):
# they are computed in the input's precision (float32 for float32 and float16
# inputs, float64 for float64: its "opmath" type) and floored through float32
# (``floorf``), so a position that lands on a whole number one way or the other
# picks the pixel PyTorch picks.
def _scale_value(size, n_out, scale, ft):
    """PyTorch's ``compute_scales_value``: 1 / the given scale factor, else size / n_out."""
    return ft(1.0 / scale) if scale is not None else ft(size) / ft(n_out)


def _centre_source(s, o, ft):
    """``s * (o + 0.5) - 0.5``, the source position of output o's centre (before any
    clipping).  In float32 as one fused multiply-add, with one rounding, as
    PyTorch's compiled kernels compute it (a float32 product is exact in float64);
    in float64 unfused, which picked the pixels PyTorch's kernels pick in every
    case tried."""
    t = o + ft(0.5)
    if ft is np.float32:
        return (np.float64(s) * t.astype(np.float64) - 0.5).astype(np.float32)
    return s * t - ft(0.5)


def nearest_source_index(size, n_out, scale=None, exact=False, precision="float64"):
    """The input position each of ``n_out`` outputs copies along an axis of ``size``:
    ``floor(o * s)`` (mode 'nearest', OpenCV's rule) or ``floor((o + 0.5) * s)``
    ('nearest-exact', Pillow's and scikit-image's: pixel centres line up), at
    most ``size - 1``; ``s = 1 / scale`` for a given scale factor, else ``size /
    n_out``, in ``precision`` as PyTorch computes it."""
    ft = np.dtype(precision).type
    o = np.arange(n_out).astype(ft)
    s = _scale_value(size, n_out, scale, ft)
    if exact:   # max((o + 0.5) * s - 0.5, 0), then + 0.5 in float64
        src = np.maximum(_centre_source(s, o, ft), ft(0)).astype(np.float64) + 0.5
    else:
        src = s * o
    index = np.floor(src.astype(np.float32)).astype(np.int64)
    return np.minimum(index, size - 1)


def linear_source_weights(size, n_out, scale=None, align_corners=False, precision="float64"):
    """(i0, i1, w0, w1): output o of a linear resampling of an axis of ``size`` is
    ``w0[o] * x[i0[o]] + w1[o] * x[i1[o]]``, PyTorch's rule, in ``precision``.

    The source position of o is ``o * (size - 1) / (n_out - 1)`` with
    ``align_corners`` (the corner pixels' centres meet), else ``(o + 0.5) * s -
    0.5`` clipped at 0, ``s = 1 / scale`` for a given scale factor, else
    ``size / n_out`` (the pixels' outer edges meet); i0 is its floor (at most
    ``size - 1``), i1 the next pixel (i0 again at the last one).  An axis
    resampled to its own size is copied.
    """
    o = np.arange(n_out)
    if n_out == size:
        return o, o, np.ones(n_out), np.zeros(n_out)
    ft = np.dtype(precision).type
    of = o.astype(ft)
    if align_corners:
        ratio = ft(size - 1) / ft(n_out - 1) if n_out > 1 else ft(0)
        src = ratio * of
    else:
        ratio = _scale_value(size, n_out, scale, ft)
        src = np.maximum(_centre_source(ratio, of, ft), ft(0))
    i0 = np.minimum(np.floor(src.astype(np.float32)).astype(np.int64), size - 1)
    lam = np.clip(src - i0.astype(ft), ft(0), ft(1))
    i1 = np.minimum(i0 + 1, size - 1)
    return i0, i1, (ft(1) - lam).astype(np.float64), lam.astype(np.float64)


CUBIC_A = -0.75   # the cubic convolution's free parameter in PyTorch (and OpenCV)


def cubic_source_weights(size, n_out, scale=None, align_corners=False, precision="float64"):
    """(index, weights), each (n_out, 4): output o of a cubic resampling of an axis of
    ``size`` is ``sum_k weights[o, k] * x[index[o, k]]``, PyTorch's rule (its bicubic
    mode), in ``precision``.

    The source position is that of :func:`linear_source_weights` but not clipped
    at 0; with i its floor (at most ``size - 1``) and t the distance from it
    (clipped to [0, 1]), the four taps i - 1 .. i + 2 take Keys' cubic convolution
    kernel with a = ``CUBIC_A`` at distances 1 + t, t, 1 - t and 2 - t; a tap
    beyond either end reads the end pixel (border clamping), so the weights of one
    pixel can add up.
    """
    ft = np.dtype(precision).type
    of = np.arange(n_out).astype(ft)
    if align_corners:
        ratio = ft(size - 1) / ft(n_out - 1) if n_out > 1 else ft(0)
        src = ratio * of
    else:
        src = _centre_source(_scale_value(size, n_out, scale, ft), of, ft)
    # Floored through float32 even for float64 positions: PyTorch's bicubic kernel
    # takes floorf (as the other modes do, see above), which picks its pixels.
    i = np.minimum(np.floor(src.astype(np.float32)).astype(np.int64), size - 1)
    t = np.clip(src - i.astype(ft), ft(0), ft(1))
    a = ft(CUBIC_A)

    def near(d):    # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):     # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    one = ft(1)
    weights = np.stack([far(t + one), near(t), near(one - t), far(one - t + one)], axis=1)
    index = np.clip(i[:, None] + np.arange(-1, 3), 0, size - 1)
    return index, weights.astype(np.float64)


class AxisMap:
    """A linear map of one axis from ``size`` to ``n_out`` positions, held on the host:
    ``y[o] = sum_i m[o, i] * x[i]`` with the nonzero ``m[rows[k], cols[k]] =
    weights[k]``.

    Applied as matrix products (:func:`resample_axis_array`): the matrix is
    banded (an output reads its neighbourhood), so its rows are cut into blocks
    that each read one stretch of the input, and a product costs each output
    the length of its block's stretch rather than the whole axis.  A map that
    copies one input per output (nearest) is a gather instead (``index``).
    ``T`` is the transposed map (the adjoint, for the gradient); its ``T`` is
    the map itself.
    """

    # A product costs each output the length of its block's stretch (a gather or
    # 2 multiply-adds would do): stretches of ~16 inputs keep that near the cost of
    # the copy each block adds, and shorter axes take one product.
    ROWS_PER_BLOCK_STRETCH = 16   # input positions a block reads, about
    ONE_BLOCK_UP_TO = 32          # axes of at most this many inputs: one block

    def __init__(self, size, n_out, rows, cols, weights):
        self.size, self.n_out = int(size), int(n_out)
        self.rows, self.cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        self.weights = np.asarray(weights, np.float64)
        keep = self.weights != 0
        self.rows, self.cols, self.weights = self.rows[keep], self.cols[keep], self.weights[keep]
        self.index = None
        if (len(self.rows) == self.n_out and np.array_equal(self.rows, np.arange(self.n_out))
                and np.all(self.weights == 1)):
            self.index = self.cols      # one input per output, weight 1
        self._blocks = None
        self._transposed = None
        self._on_device = {}    # (device, dtype, what) -> the array there (see on_device)

    @property
    def is_identity(self):
        """Does the map copy every position to itself?"""
        return (self.index is not None and self.size == self.n_out
                and np.array_equal(self.index, np.arange(self.size)))

    @property
    def T(self):
        """The transposed map, from ``n_out`` positions back to ``size``."""
        if self._transposed is None:
            order = np.lexsort((self.rows, self.cols))   # by row of the transpose
            self._transposed = AxisMap(self.n_out, self.size, self.cols[order],
                                       self.rows[order], self.weights[order])
            self._transposed._transposed = self
        return self._transposed

    def blocks(self):
        """[(r0, r1, c0, c1, m[r0:r1, c0:c1])]: rows r0..r1 read only inputs c0..c1
        (none, c0 == c1, for rows that read nothing: a product over an empty stretch
        gives their zeros)."""
        if self._blocks is None:
            if self.size <= self.ONE_BLOCK_UP_TO:
                step = self.n_out
            else:
                step = max(8, self.ROWS_PER_BLOCK_STRETCH * self.n_out // self.size)
            blocks = []
            for r0 in range(0, self.n_out, step):
                r1 = min(r0 + step, self.n_out)
                inside = (self.rows >= r0) & (self.rows < r1)
                rows, cols = self.rows[inside], self.cols[inside]
                c0, c1 = (int(cols.min()), int(cols.max()) + 1) if len(cols) else (0, 0)
                m = np.zeros((r1 - r0, c1 - c0))
                np.add.at(m, (rows - r0, cols - c0), self.weights[inside])
                blocks.append((r0, r1, c0, c1, m))
            self._blocks = blocks
        return self._blocks

    def on_device(self, backend, what, array, dtype):
        """``array`` (the index, or block ``what``'s matrix) as an array of ``backend``,
        copied there once per device and dtype: a map is cached for its sizes, and a
        training step must not upload it again in every forward and backward."""
        key = (backend.device, np.dtype(dtype).str, what)
        if key not in self._on_device:
            self._on_device[key] = backend.asarray(array, dtype=dtype)
        return self._on_device[key]


@functools.lru_cache(maxsize=64)
def resample_map(mode, size, n_out, scale=None, align_corners=False, precision="float64"):
    """The :class:`AxisMap` of one axis of an interpolation (``mode`` 'nearest',
    'nearest-exact', 'linear' or 'cubic'), from ``size`` to ``n_out`` positions;
    ``scale`` the scale factor given for the axis, or None to use ``size / n_out``;
    ``precision`` the float dtype PyTorch computes the positions in."""
    o = np.arange(n_out)
    if mode == "cubic":   # four taps per output: a banded matrix
        index, weights = cubic_source_weights(size, n_out, scale, align_corners, precision)
        return AxisMap(size, n_out, np.repeat(o, 4), index.ravel(), weights.ravel())
    if mode == "linear":
        i0, i1, w0, w1 = linear_source_weights(size, n_out, scale, align_corners, precision)
        return AxisMap(size, n_out, np.concatenate([o, o]), np.concatenate([i0, i1]),
                       np.concatenate([w0, w1]))
    index = nearest_source_index(size, n_out, scale, mode == "nearest-exact", precision)
    return AxisMap(size, n_out, o, index, np.ones(n_out))


def resample_axis_array(backend, x, axis_map, axis):
    """``x`` with its ``axis`` (-1 or -2) mapped by ``axis_map``: a gather for a map
    that copies (nearest), else a matrix product per block of the map's rows, each
    reading its stretch of the axis (one product for a short axis)."""
    xp = backend.xp
    if axis_map.index is not None:
        return xp.take(x, axis_map.on_device(backend, "index", axis_map.index, np.int64),
                       axis=axis)
    blocks = axis_map.blocks()
    out_shape = list(x.shape)
    out_shape[axis] = axis_map.n_out
    y = None if len(blocks) == 1 else xp.empty(tuple(out_shape), dtype=x.dtype)
    for k, (r0, r1, c0, c1, m) in enumerate(blocks):
        if axis == -1:   # (..., c1-c0) @ (c1-c0, r1-r0): each row of x mapped
            m_t = axis_map.on_device(backend, (k, "T"), np.ascontiguousarray(m.T), x.dtype)
            part = xp.matmul(x[..., c0:c1], m_t)
        else:            # (r1-r0, c1-c0) @ (..., c1-c0, W): each column of x mapped
            part = xp.matmul(axis_map.on_device(backend, k, m, x.dtype), x[..., c0:c1, :])
        if y is None:
            return part
        if axis == -1:
            y[..., r0:r1] = part
        else:
            y[..., r0:r1, :] = part
    return y


__all__ = [
    "ConvGeometry", "pair", "out_size", "same_padding", "conv_geometry", "pool_geometry",
    "set_im2col_limit", "get_im2col_limit", "im2col_bytes", "batch_chunks", "choose_layout",
    "as_blocks", "to_rows", "from_rows", "batch_first", "batch_last", "contiguous",
    "tiled_copy_pays",
    "cache_chunks", "unfold_array", "fold_array", "is_batch_last", "empty_as",
    "is_depthwise", "depthwise_pays", "depthwise_conv_array", "depthwise_transpose_array",
    "depthwise_weight_array",
    "reorders", "assign", "in_order_of", "as_nchw",
    "max_pool_array", "first_max_masks", "max_pool_scatter_array", "max_pool_gather_array",
    "max_pool_indices", "sum_pool_array", "sum_pool_adjoint_array", "avg_pool_divisor",
    "adaptive_bins", "adaptive_avg_array", "adaptive_avg_adjoint_array", "adaptive_max_array",
    "index_scatter_array", "index_gather_array",
    "erf_array", "gelu_array", "gelu_grad_array", "elementwise_in_slices",
    "channel_rows", "batch_norm_array", "batch_norm_sums_array", "batch_norm_grad_array",
    "nearest_source_index", "linear_source_weights", "cubic_source_weights", "CUBIC_A",
    "AxisMap", "resample_map",
    "resample_axis_array",
]
