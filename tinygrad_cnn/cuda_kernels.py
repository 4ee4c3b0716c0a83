"""CUDA kernels for the CNN hot spots: im2col, col2im and max pooling.

The array code of :mod:`tinygrad_cnn.conv_arrays` runs on CuPy as it is: a
loop over the ``KH * KW`` kernel offsets, one strided copy or add per
offset.  On a GPU each of those is a kernel launch, and col2im's adds read
and write the whole output once per offset.  The kernels here do each job
in one launch, with one thread per output element that *gathers* what it
needs:

* ``tg_im2col``: a column entry reads its input pixel (or a zero of the
  padding);
* ``tg_col2im``: an input pixel sums the column entries of the windows
  that cover it.  Each thread writes only its own pixel, so there are no
  atomic adds, and the sum runs in a fixed order (kernel offsets row-major,
  as the array code adds them): the result is deterministic, bit for bit;
* ``tg_max_pool``: the maximum of a window;
* ``tg_max_pool_scatter`` (max pooling's backward): an input pixel sums the
  gradients of the windows whose first maximum it is (found again from x
  and y, as the array code does, so nothing but y is kept from the
  forward); again a gather, deterministic;
* ``tg_max_pool_gather`` (the backward of that backward): a window reads
  the gradient at its first maximum.

Their contracts (shapes, column layouts, tie and NaN rules) are those of
the array functions in :mod:`tinygrad_cnn.conv_arrays`, which stay the
reference the kernels are tested against (``tests/test_cuda_kernels.py``).

This module does not import CuPy: :class:`ConvKernels` is handed the
``cupy`` module by :class:`tinygrad_cnn.backend.CupyBackend`, and uses only
``cupy.RawModule``, ``cupy.empty`` and ``cupy.ascontiguousarray``.  The
sources are complete CUDA C (no generated code), so the test suite can
compile exactly what runs, with NVRTC or ``nvcc``, on a machine without a
GPU.  They are "templated" on the element type ``T`` by a ``typedef`` line
put in front: :func:`kernel_source`.
"""
from __future__ import annotations

import numpy as np

# ---- the CUDA sources --------------------------------------------------------------

# Shared by both sources: the grid-stride loop (any grid size covers any
# number of elements) and the column layouts of conv_arrays.unfold_array.
COMMON_SOURCE = r"""
#define GRID_STRIDE_LOOP(idx, total)                                            \
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;      \
         idx < (total); idx += (long long)blockDim.x * gridDim.x)

// Column layouts (see conv_arrays): the row of a column entry is
// k = (c*KH + i)*KW + j (channel c, kernel offset (i, j)), its column
// l = oh*OW + ow (output position) of image n.
#define LAYOUT_NKL 0  // (N, C*KH*KW, OH*OW)
#define LAYOUT_KNL 1  // (C*KH*KW, N*OH*OW)
#define LAYOUT_KLN 2  // (C*KH*KW, OH*OW*N)
"""

CONV_SOURCE = COMMON_SOURCE + r"""
// Flat position of column entry (n, c, i, j, oh, ow) in the given layout.
__device__ long long col_index(int layout, int N, int C, int KH, int KW, int OH, int OW,
                               int n, int c, int i, int j, int oh, int ow)
{
    long long k = ((long long)c * KH + i) * KW + j;
    long long l = (long long)oh * OW + ow;
    long long K = (long long)C * KH * KW, L = (long long)OH * OW;
    if (layout == LAYOUT_NKL) return (n * K + k) * L + l;
    if (layout == LAYOUT_KNL) return (k * N + n) * L + l;
    return (k * L + l) * N + n;
}

// im2col: cols[...(n, c, i, j, oh, ow)] = x[n, c, oh*sh - pt + i*dh, ow*sw - pl + j*dw],
// zero where that falls in the padding.  One thread per column entry, in
// the order of the layout, so the writes are coalesced.
extern "C" __global__ void tg_im2col(
    const T* __restrict__ x, T* __restrict__ cols, long long total, int layout,
    int N, int C, int H, int W, int KH, int KW, int OH, int OW,
    int sh, int sw, int pt, int pl, int dh, int dw)
{
    GRID_STRIDE_LOOP(idx, total) {
        // Undo col_index: peel the axes off, fastest first.
        long long r = idx;
        int n = 0, oh, ow;
        if (layout == LAYOUT_KLN) { n = (int)(r % N); r /= N; }
        ow = (int)(r % OW); r /= OW;
        oh = (int)(r % OH); r /= OH;
        if (layout == LAYOUT_KNL) { n = (int)(r % N); r /= N; }
        int j = (int)(r % KW); r /= KW;
        int i = (int)(r % KH); r /= KH;
        int c = (int)(r % C);
        if (layout == LAYOUT_NKL) n = (int)(r / C);
        int h = oh * sh - pt + i * dh;
        int w = ow * sw - pl + j * dw;
        cols[idx] = (h >= 0 && h < H && w >= 0 && w < W)
            ? x[(((long long)n * C + c) * H + h) * W + w] : (T)0;
    }
}

// col2im, the adjoint of im2col: x[n, c, h, w] = the sum of the column
// entries that im2col copies from (h, w).  Row h is offset i of window oh
// when h + pt - i*dh = oh*sh, so the thread of pixel (h, w) visits the
// kernel offsets and keeps those that land on a window: a gather, summed
// in the same order as the array code (offsets row-major).
extern "C" __global__ void tg_col2im(
    const T* __restrict__ cols, T* __restrict__ x, long long total, int layout,
    int N, int C, int H, int W, int KH, int KW, int OH, int OW,
    int sh, int sw, int pt, int pl, int dh, int dw)
{
    GRID_STRIDE_LOOP(idx, total) {
        long long r = idx;
        int w = (int)(r % W); r /= W;
        int h = (int)(r % H); r /= H;
        int c = (int)(r % C);
        int n = (int)(r / C);
        T sum = 0;
        for (int i = 0; i < KH; ++i) {
            int hs = h + pt - i * dh;  // oh * sh, if (h, w) is offset i of a window
            if (hs < 0) break;         // and it only decreases with i
            if (hs % sh != 0 || hs / sh >= OH) continue;
            int oh = hs / sh;
            for (int j = 0; j < KW; ++j) {
                int ws = w + pl - j * dw;
                if (ws < 0) break;
                if (ws % sw != 0 || ws / sw >= OW) continue;
                sum += cols[col_index(layout, N, C, KH, KW, OH, OW, n, c, i, j, oh, ws / sw)];
            }
        }
        x[idx] = sum;
    }
}
"""

POOL_SOURCE = COMMON_SOURCE + r"""
// Max pooling works on N*C planes: x (H x W), y (OH x OW).  Window (oh, ow)
// covers rows oh*sh - pt + i*dh and columns ow*sw - pl + j*dw; offsets that
// fall in the padding are skipped (padding is -inf: never the maximum).

// y = the maximum of each window; NaN if the window holds a NaN.
extern "C" __global__ void tg_max_pool(
    const T* __restrict__ x, T* __restrict__ y, long long total,
    int H, int W, int KH, int KW, int OH, int OW,
    int sh, int sw, int pt, int pl, int dh, int dw)
{
    GRID_STRIDE_LOOP(idx, total) {
        int ow = (int)(idx % OW);
        int oh = (int)(idx / OW % OH);
        const T* plane = x + idx / ((long long)OH * OW) * H * W;
        T m = 0;
        bool found = false;
        for (int i = 0; i < KH; ++i) {
            int h = oh * sh - pt + i * dh;
            if (h < 0 || h >= H) continue;
            for (int j = 0; j < KW; ++j) {
                int w = ow * sw - pl + j * dw;
                if (w < 0 || w >= W) continue;
                T v = plane[h * W + w];
                if (!found || v > m || v != v) m = v;  // v != v: NaN, which then stays
                found = true;
            }
        }
        y[idx] = m;
    }
}

// The offset k = i*KW + j of the first (row-major) real element of window
// (oh, ow) that is not less than the window's maximum m: the first maximum,
// or, in a window holding NaN (m is NaN), the window's first real element.
// This is the element that receives the window's gradient.
__device__ int first_max(const T* plane, T m, int oh, int ow, int H, int W, int KH, int KW,
                         int sh, int sw, int pt, int pl, int dh, int dw)
{
    for (int i = 0; i < KH; ++i) {
        int h = oh * sh - pt + i * dh;
        if (h < 0 || h >= H) continue;
        for (int j = 0; j < KW; ++j) {
            int w = ow * sw - pl + j * dw;
            if (w < 0 || w >= W) continue;
            if (!(plane[h * W + w] < m)) return i * KW + j;
        }
    }
    return -1;  // only if x changed after y was computed (callers check)
}

// Max pooling's backward: gx[p, h, w] = the sum of g over the windows whose
// first maximum is (h, w).  A gather over the kernel offsets, as in
// tg_col2im: each thread writes its own pixel, no atomics, a fixed order.
extern "C" __global__ void tg_max_pool_scatter(
    const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ y,
    T* __restrict__ gx, long long total,
    int H, int W, int KH, int KW, int OH, int OW,
    int sh, int sw, int pt, int pl, int dh, int dw)
{
    GRID_STRIDE_LOOP(idx, total) {
        int w = (int)(idx % W);
        int h = (int)(idx / W % H);
        long long p = idx / ((long long)H * W);       // the plane (n, c)
        const T* plane = x + p * H * W;
        T sum = 0;
        for (int i = 0; i < KH; ++i) {
            int hs = h + pt - i * dh;  // oh * sh, if (h, w) is offset i of a window
            if (hs < 0) break;         // and it only decreases with i
            if (hs % sh != 0 || hs / sh >= OH) continue;
            int oh = hs / sh;
            for (int j = 0; j < KW; ++j) {
                int ws = w + pl - j * dw;
                if (ws < 0) break;
                if (ws % sw != 0 || ws / sw >= OW) continue;
                int ow = ws / sw;
                long long o = (p * OH + oh) * OW + ow;
                if (first_max(plane, y[o], oh, ow, H, W, KH, KW, sh, sw, pt, pl, dh, dw)
                        == i * KW + j)
                    sum += g[o];
            }
        }
        gx[idx] = sum;
    }
}

// The adjoint of the scatter: out[p, oh, ow] = gx at the window's first maximum.
extern "C" __global__ void tg_max_pool_gather(
    const T* __restrict__ gx, const T* __restrict__ x, const T* __restrict__ y,
    T* __restrict__ out, long long total,
    int H, int W, int KH, int KW, int OH, int OW,
    int sh, int sw, int pt, int pl, int dh, int dw)
{
    GRID_STRIDE_LOOP(idx, total) {
        int ow = (int)(idx % OW);
        int oh = (int)(idx / OW % OH);
        long long plane = idx / ((long long)OH * OW) * H * W;
        int k = first_max(x + plane, y[idx], oh, ow, H, W, KH, KW, sh, sw, pt, pl, dh, dw);
        if (k < 0) {  // no element reaches y (x changed since y was computed): as the
            out[idx] = 0;  // array code, nothing; never a read outside the window
            continue;
        }
        int h = oh * sh - pt + k / KW * dh;
        int w = ow * sw - pl + k % KW * dw;
        out[idx] = gx[plane + h * W + w];
    }
}
"""

SOURCES = {"conv": CONV_SOURCE, "pool": POOL_SOURCE}

# The C type the sources are compiled for, by dtype.
ELEMENT_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

# Options for CuPy's RawModule, which compiles with NVRTC and adds the
# device's -arch (the compile test passes the same).
OPTIONS = ()

LAYOUTS = {"nkl": 0, "knl": 1, "kln": 2}


def kernel_source(name, dtype):
    """The complete CUDA source ``name`` ("conv" or "pool") for element type ``dtype``."""
    return f"typedef {ELEMENT_TYPES[np.dtype(dtype)]} T;\n" + SOURCES[name]


def all_sources():
    """Every variant that can be compiled at run time: ``{label: source}``."""
    return {f"{name}-{dtype.name}": kernel_source(name, dtype)
            for name in SOURCES for dtype in ELEMENT_TYPES}


class ConvKernels:
    """The kernels above, compiled on first use per dtype, with the contracts of
    the matching :mod:`tinygrad_cnn.conv_arrays` functions.

    ``cupy`` is the CuPy module (or, in tests, a stand-in with the same
    three names).  Calls must run with the arrays' device current.
    """

    BLOCK = 256            # threads per block
    MAX_BLOCKS = 2**16     # more elements than BLOCK * MAX_BLOCKS: threads loop (grid stride)

    def __init__(self, cupy):
        self._cupy = cupy
        self._modules = {}     # (source name, dtype) -> RawModule
        self._functions = {}   # (kernel name, dtype) -> its function in that module

    def _function(self, source, kernel, dtype):
        dtype = np.dtype(dtype)
        fn = self._functions.get((kernel, dtype))
        if fn is None:
            if dtype not in ELEMENT_TYPES:
                raise TypeError(f"the CUDA kernel {kernel} handles float32 and float64 "
                                f"arrays, got {dtype}")
            module = self._modules.get((source, dtype))
            if module is None:
                # Compiled by NVRTC at the first get_function (CuPy caches it on disk).
                module = self._modules[(source, dtype)] = self._cupy.RawModule(
                    code=kernel_source(source, dtype), options=OPTIONS)
            fn = self._functions[(kernel, dtype)] = module.get_function(kernel)
        return fn

    def _launch(self, fn, total, *args):
        if total == 0:   # a grid of zero blocks is an error in CUDA
            return
        blocks = min(-(-total // self.BLOCK), self.MAX_BLOCKS)
        fn((blocks,), (self.BLOCK,), (*args,))

    @staticmethod
    def _ints(*values):
        # Kernel parameters are C ints: pass explicit int32 (a Python int
        # would be passed as a 64-bit long long).
        return tuple(np.int32(v) for v in values)

    def _windows(self, geom):
        """The window parameters every kernel ends with."""
        return self._ints(geom.KH, geom.KW, geom.OH, geom.OW, geom.sh, geom.sw, geom.pt,
                          geom.pl, geom.dh, geom.dw)

    # ---- im2col / col2im ----------------------------------------------------------
    def im2col(self, x, geom, layout="nkl"):
        """As :func:`conv_arrays.unfold_array`: x (N, C, H, W) -> columns in ``layout``."""
        cupy = self._cupy
        if layout not in LAYOUTS:
            raise ValueError(f"unknown column layout {layout!r}; expected 'nkl', 'knl' "
                             f"or 'kln'")
        x = cupy.ascontiguousarray(x)
        N, C = x.shape[:2]
        K, L = C * geom.KH * geom.KW, geom.OH * geom.OW
        shape = (N, K, L) if layout == "nkl" else (K, N * L)
        cols = cupy.empty(shape, dtype=x.dtype)
        fn = self._function("conv", "tg_im2col", x.dtype)
        self._launch(fn, cols.size, x, cols, np.int64(cols.size), np.int32(LAYOUTS[layout]),
                     *self._ints(N, C, geom.H, geom.W), *self._windows(geom))
        return cols

    def col2im(self, cols, geom, N, C, layout="nkl"):
        """As :func:`conv_arrays.fold_array`: columns -> (N, C, H, W), overlaps summed."""
        cupy = self._cupy
        if layout not in LAYOUTS:
            raise ValueError(f"unknown column layout {layout!r}; expected 'nkl', 'knl' "
                             f"or 'kln'")
        cols = cupy.ascontiguousarray(cols)
        x = cupy.empty((N, C, geom.H, geom.W), dtype=cols.dtype)
        fn = self._function("conv", "tg_col2im", cols.dtype)
        self._launch(fn, x.size, cols, x, np.int64(x.size), np.int32(LAYOUTS[layout]),
                     *self._ints(N, C, geom.H, geom.W), *self._windows(geom))
        return x

    # ---- max pooling -----------------------------------------------------------------
    def max_pool(self, x, geom):
        """As :func:`conv_arrays.max_pool_array`: the maximum of each window of x."""
        cupy = self._cupy
        x = cupy.ascontiguousarray(x)
        N, C = x.shape[:2]
        y = cupy.empty((N, C, geom.OH, geom.OW), dtype=x.dtype)
        fn = self._function("pool", "tg_max_pool", x.dtype)
        self._launch(fn, y.size, x, y, np.int64(y.size),
                     *self._ints(geom.H, geom.W), *self._windows(geom))
        return y

    def max_pool_scatter(self, g, x, y, geom):
        """As :func:`conv_arrays.max_pool_scatter_array`: g (N, C, OH, OW) to each
        window's first maximum in x -> (N, C, H, W)."""
        return self._pool_backward("tg_max_pool_scatter", g, x, y, x.shape, geom)

    def max_pool_gather(self, gx, x, y, geom):
        """As :func:`conv_arrays.max_pool_gather_array`: gx (N, C, H, W) read at each
        window's first maximum in x -> (N, C, OH, OW)."""
        return self._pool_backward("tg_max_pool_gather", gx, x, y, y.shape, geom)

    def _pool_backward(self, kernel, g, x, y, out_shape, geom):
        """Launch ``kernel`` (scatter or gather at the first maxima) on ``g``."""
        dtype = g.dtype
        g, x, y = self._same_dtype(g, x, y)
        out = self._cupy.empty(out_shape, dtype=g.dtype)
        fn = self._function("pool", kernel, g.dtype)
        self._launch(fn, out.size, g, x, y, out, np.int64(out.size),
                     *self._ints(geom.H, geom.W), *self._windows(geom))
        return out.astype(dtype, copy=False)

    def _same_dtype(self, *arrays):
        """Contiguous arrays of one dtype, the widest: a gradient may come in another
        precision than x and y (widening keeps every comparison of x with y exact)."""
        dtype = np.result_type(*(a.dtype for a in arrays))
        return [self._cupy.ascontiguousarray(a.astype(dtype, copy=False)) for a in arrays]
