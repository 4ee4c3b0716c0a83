"""Textbook loop references for the CNN primitives, for the tests only.

Every function here follows the definition of its op as literally as
possible: one explicit Python loop over the output neurons, and inside it
a loop over the neuron's receptive field.  They are slow on purpose; what
matters is that they share no code, and no cleverness (strided views,
im2col, scatter tricks), with ``tinygrad_cnn.functional``, so agreement
between the two is evidence that both are right.

Arrays are NumPy, layouts and argument conventions are PyTorch's (NCHW;
conv weight (OC, C/groups, KH, KW); transposed-conv weight
(C, OC/groups, KH, KW); local2d weight (OC, OH, OW, C, KH, KW)).

Gradients are given as vector-Jacobian products: ``*_vjp(..., g)``
returns d<op(inputs), g>/d(input) for every input, computed with the same
loops as the forward (each tap ``y += w * x`` contributes ``g * x`` to
``grad_w`` and ``g * w`` to ``grad_x``).
"""
from __future__ import annotations

import math

import numpy as np


# ---- hyper-parameters -----------------------------------------------------------
def pair(v):
    """An int or a pair -> a pair of ints."""
    if isinstance(v, (tuple, list)):
        a, b = v
        return int(a), int(b)
    return int(v), int(v)


def conv_padding(padding, kernel, dilation):
    """PyTorch conv padding -> ((top, bottom), (left, right)).

    ``"same"`` pads ``dilation * (k - 1)`` in total, the odd one on the
    bottom/right side, as PyTorch does.
    """
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        out = []
        for k, d in zip(kernel, dilation):
            total = d * (k - 1)
            out.append((total // 2, total - total // 2))
        return tuple(out)
    ph, pw = pair(padding)
    return (ph, ph), (pw, pw)


def window_count(size, kernel, stride, pad_before, pad_after, dilation=1, ceil_mode=False):
    """Number of window positions along one axis, with PyTorch's ceil_mode rule."""
    span = size + pad_before + pad_after - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1
        # The last window must start inside the input or the left padding.
        if (out - 1) * stride >= size + pad_before:
            out -= 1
    else:
        out = span // stride + 1
    return out


# ---- convolution -----------------------------------------------------------------
def _conv_taps(x_shape, w_shape, stride, padding, dilation, groups):
    """Yield (n, o, i, j, c, ci, ki, kj, xi, xj) for every conv tap inside the input.

    Output neuron (n, o, i, j) sees input pixel (c, xi, xj) through weight
    w[o, ci, ki, kj], where c = group * C/groups + ci.  Taps landing in the
    zero padding contribute nothing and are skipped.
    """
    N, C, H, W = x_shape
    OC, CG, KH, KW = w_shape
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    (pt, pb), (pl, pr) = conv_padding(padding, (KH, KW), (dh, dw))
    OH = window_count(H, KH, sh, pt, pb, dh)
    OW = window_count(W, KW, sw, pl, pr, dw)
    ocg = OC // groups
    for n in range(N):
        for o in range(OC):
            group = o // ocg
            for i in range(OH):
                for j in range(OW):
                    for ci in range(CG):
                        c = group * CG + ci
                        for ki in range(KH):
                            for kj in range(KW):
                                xi = i * sh - pt + ki * dh
                                xj = j * sw - pl + kj * dw
                                if 0 <= xi < H and 0 <= xj < W:
                                    yield n, o, i, j, c, ci, ki, kj, xi, xj


def conv2d_out_shape(x_shape, w_shape, stride=1, padding=0, dilation=1):
    N, _, H, W = x_shape
    OC, _, KH, KW = w_shape
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    (pt, pb), (pl, pr) = conv_padding(padding, (KH, KW), (dh, dw))
    return N, OC, window_count(H, KH, sh, pt, pb, dh), window_count(W, KW, sw, pl, pr, dw)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """y[n, o, i, j] = b[o] + sum over the receptive field of w * x."""
    y = np.zeros(conv2d_out_shape(x.shape, w.shape, stride, padding, dilation))
    for n, o, i, j, c, ci, ki, kj, xi, xj in _conv_taps(
            x.shape, w.shape, stride, padding, dilation, groups):
        y[n, o, i, j] += w[o, ci, ki, kj] * x[n, c, xi, xj]
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv2d_vjp(x, w, g, stride=1, padding=0, dilation=1, groups=1):
    """(grad_x, grad_w, grad_b) of <conv2d(x, w, b), g>."""
    grad_x, grad_w = np.zeros_like(x), np.zeros_like(w)
    for n, o, i, j, c, ci, ki, kj, xi, xj in _conv_taps(
            x.shape, w.shape, stride, padding, dilation, groups):
        grad_x[n, c, xi, xj] += g[n, o, i, j] * w[o, ci, ki, kj]
        grad_w[o, ci, ki, kj] += g[n, o, i, j] * x[n, c, xi, xj]
    return grad_x, grad_w, g.sum(axis=(0, 2, 3))


# ---- transposed convolution --------------------------------------------------------
def _conv_transpose_taps(x_shape, w_shape, stride, padding, output_padding, dilation, groups):
    """Yield (n, c, i, j, oc, co, ki, kj, yi, yj): input pixel (c, i, j) adds
    x * w[c, co, ki, kj] to output pixel (oc, yi, yj), oc = group * OC/groups + co."""
    N, C, H, W = x_shape
    _, OCG, KH, KW = w_shape
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    OH, OW = conv_transpose2d_out_shape(x_shape, w_shape, stride, padding, output_padding,
                                        groups, dilation)[2:]
    cg = C // groups
    for n in range(N):
        for c in range(C):
            group = c // cg
            for i in range(H):
                for j in range(W):
                    for co in range(OCG):
                        for ki in range(KH):
                            for kj in range(KW):
                                yi = i * sh - ph + ki * dh
                                yj = j * sw - pw + kj * dw
                                if 0 <= yi < OH and 0 <= yj < OW:
                                    yield n, c, i, j, group * OCG + co, co, ki, kj, yi, yj


def conv_transpose2d_out_shape(x_shape, w_shape, stride=1, padding=0, output_padding=0,
                               groups=1, dilation=1):
    N, _, H, W = x_shape
    _, OCG, KH, KW = w_shape
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    oph, opw = pair(output_padding)
    OH = (H - 1) * sh - 2 * ph + dh * (KH - 1) + oph + 1
    OW = (W - 1) * sw - 2 * pw + dw * (KW - 1) + opw + 1
    return N, OCG * groups, OH, OW


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Each input pixel scatters x * kernel into the output (the adjoint of conv2d)."""
    y = np.zeros(conv_transpose2d_out_shape(x.shape, w.shape, stride, padding,
                                            output_padding, groups, dilation))
    for n, c, i, j, oc, co, ki, kj, yi, yj in _conv_transpose_taps(
            x.shape, w.shape, stride, padding, output_padding, dilation, groups):
        y[n, oc, yi, yj] += x[n, c, i, j] * w[c, co, ki, kj]
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv_transpose2d_vjp(x, w, g, stride=1, padding=0, output_padding=0, groups=1,
                         dilation=1):
    grad_x, grad_w = np.zeros_like(x), np.zeros_like(w)
    for n, c, i, j, oc, co, ki, kj, yi, yj in _conv_transpose_taps(
            x.shape, w.shape, stride, padding, output_padding, dilation, groups):
        grad_x[n, c, i, j] += g[n, oc, yi, yj] * w[c, co, ki, kj]
        grad_w[c, co, ki, kj] += g[n, oc, yi, yj] * x[n, c, i, j]
    return grad_x, grad_w, g.sum(axis=(0, 2, 3))


# ---- locally connected ---------------------------------------------------------------
def _local_taps(x_shape, w_shape, stride, padding, dilation):
    N, C, H, W = x_shape
    OC, OH, OW, _, KH, KW = w_shape
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    for n in range(N):
        for o in range(OC):
            for i in range(OH):
                for j in range(OW):
                    for c in range(C):
                        for ki in range(KH):
                            for kj in range(KW):
                                xi = i * sh - ph + ki * dh
                                xj = j * sw - pw + kj * dw
                                if 0 <= xi < H and 0 <= xj < W:
                                    yield n, o, i, j, c, ki, kj, xi, xj


def local2d_out_hw(x_shape, kernel, stride=1, padding=0, dilation=1):
    (KH, KW), (sh, sw), (ph, pw), (dh, dw) = map(pair, (kernel, stride, padding, dilation))
    return (window_count(x_shape[2], KH, sh, ph, ph, dh),
            window_count(x_shape[3], KW, sw, pw, pw, dw))


def local2d(x, w, b=None, stride=1, padding=0, dilation=1):
    """y[n,o,i,j] = b[o,i,j] + sum_{c,ki,kj} w[o,i,j,c,ki,kj] * xpad[n,c,i*sh+ki*dh,j*sw+kj*dw]."""
    OC, OH, OW = w.shape[:3]
    y = np.zeros((x.shape[0], OC, OH, OW))
    for n, o, i, j, c, ki, kj, xi, xj in _local_taps(x.shape, w.shape, stride, padding,
                                                     dilation):
        y[n, o, i, j] += w[o, i, j, c, ki, kj] * x[n, c, xi, xj]
    if b is not None:
        y += b[None]
    return y


def local2d_vjp(x, w, g, stride=1, padding=0, dilation=1):
    grad_x, grad_w = np.zeros_like(x), np.zeros_like(w)
    for n, o, i, j, c, ki, kj, xi, xj in _local_taps(x.shape, w.shape, stride, padding,
                                                     dilation):
        grad_x[n, c, xi, xj] += g[n, o, i, j] * w[o, i, j, c, ki, kj]
        grad_w[o, i, j, c, ki, kj] += g[n, o, i, j] * x[n, c, xi, xj]
    return grad_x, grad_w, g.sum(axis=0)


# ---- unfold / fold ------------------------------------------------------------------
def _unfold_taps(x_shape, kernel, dilation, padding, stride):
    """Yield (n, row, col, c, xi, xj): cols[n, row, col] = x[n, c, xi, xj]."""
    N, C, H, W = x_shape
    (KH, KW), (dh, dw), (ph, pw), (sh, sw) = map(pair, (kernel, dilation, padding, stride))
    OH = window_count(H, KH, sh, ph, ph, dh)
    OW = window_count(W, KW, sw, pw, pw, dw)
    for n in range(N):
        for c in range(C):
            for ki in range(KH):
                for kj in range(KW):
                    row = (c * KH + ki) * KW + kj
                    for i in range(OH):
                        for j in range(OW):
                            xi, xj = i * sh - ph + ki * dh, j * sw - pw + kj * dw
                            if 0 <= xi < H and 0 <= xj < W:
                                yield n, row, i * OW + j, c, xi, xj


def unfold(x, kernel_size, dilation=1, padding=0, stride=1):
    """cols[n, (c, ki, kj), (i, j)] = xpad[n, c, i*sh + ki*dh, j*sw + kj*dw]."""
    N, C, H, W = x.shape
    (KH, KW), (dh, dw), (ph, pw), (sh, sw) = map(pair, (kernel_size, dilation, padding, stride))
    L = window_count(H, KH, sh, ph, ph, dh) * window_count(W, KW, sw, pw, pw, dw)
    cols = np.zeros((N, C * KH * KW, L))
    for n, row, col, c, xi, xj in _unfold_taps(x.shape, kernel_size, dilation, padding, stride):
        cols[n, row, col] = x[n, c, xi, xj]
    return cols


def fold(cols, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """The adjoint of unfold: every column entry is added back to its pixel."""
    KH, KW = pair(kernel_size)
    N, CKK, _ = cols.shape
    H, W = pair(output_size)
    x_shape = (N, CKK // (KH * KW), H, W)
    x = np.zeros(x_shape)
    for n, row, col, c, xi, xj in _unfold_taps(x_shape, kernel_size, dilation, padding, stride):
        x[n, c, xi, xj] += cols[n, row, col]
    return x


# ---- pooling ------------------------------------------------------------------------
def _max_windows(x_shape, kernel_size, stride, padding, dilation, ceil_mode):
    """Yield (n, c, i, j, taps) with taps the in-bounds (xi, xj) of each window, row-major."""
    N, C, H, W = x_shape
    KH, KW = pair(kernel_size)
    sh, sw = pair(kernel_size if stride is None else stride)
    (ph, pw), (dh, dw) = pair(padding), pair(dilation)
    OH = window_count(H, KH, sh, ph, ph, dh, ceil_mode)
    OW = window_count(W, KW, sw, pw, pw, dw, ceil_mode)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    taps = [(i * sh - ph + ki * dh, j * sw - pw + kj * dw)
                            for ki in range(KH) for kj in range(KW)]
                    taps = [(a, b) for a, b in taps if 0 <= a < H and 0 <= b < W]
                    yield n, c, i, j, OH, OW, taps


def has_empty_window(x_shape, kernel_size, stride=None, padding=0, dilation=1,
                     ceil_mode=False):
    """True if some dilated window sees only padding (its maximum would be -inf)."""
    windows = _max_windows(x_shape, kernel_size, stride, padding, dilation, ceil_mode)
    return any(not taps for *_, taps in windows)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """(y, indices): the maximum of each window and the flat H*W index of the
    first (row-major) element attaining it; padding counts as -inf."""
    y = idx = None
    for n, c, i, j, OH, OW, taps in _max_windows(x.shape, kernel_size, stride, padding,
                                                 dilation, ceil_mode):
        if y is None:
            y = np.zeros(x.shape[:2] + (OH, OW))
            idx = np.zeros(x.shape[:2] + (OH, OW), dtype=np.int64)
        best = _first_max(x, n, c, taps)
        y[n, c, i, j] = x[n, c, best[0], best[1]]
        idx[n, c, i, j] = best[0] * x.shape[3] + best[1]
    return y, idx


def max_pool2d_vjp(x, g, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Each window's upstream gradient goes to its first maximal element."""
    _, idx = max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
    grad_x = np.zeros_like(x)
    W = x.shape[3]
    for n, c, i, j in np.ndindex(*g.shape):
        k = idx[n, c, i, j]
        grad_x[n, c, k // W, k % W] += g[n, c, i, j]
    return grad_x


def _avg_windows(x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                 divisor_override):
    """Yield (n, c, i, j, OH, OW, taps, divisor) with PyTorch's divisor rules."""
    N, C, H, W = x_shape
    KH, KW = pair(kernel_size)
    sh, sw = pair(kernel_size if stride is None else stride)
    ph, pw = pair(padding)
    OH = window_count(H, KH, sh, ph, ph, 1, ceil_mode)
    OW = window_count(W, KW, sw, pw, pw, 1, ceil_mode)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    top, left = i * sh - ph, j * sw - pw
                    # The window clipped to the padded input (ceil_mode windows may
                    # hang past it): its area is the count_include_pad divisor.
                    bottom, right = min(top + KH, H + ph), min(left + KW, W + pw)
                    padded_area = (bottom - top) * (right - left)
                    taps = [(a, b) for a in range(max(top, 0), min(bottom, H))
                            for b in range(max(left, 0), min(right, W))]
                    if divisor_override:
                        divisor = divisor_override
                    elif count_include_pad:
                        divisor = padded_area
                    else:
                        divisor = len(taps)
                    yield n, c, i, j, OH, OW, taps, divisor


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    y = None
    for n, c, i, j, OH, OW, taps, divisor in _avg_windows(
            x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
            divisor_override):
        if y is None:
            y = np.zeros(x.shape[:2] + (OH, OW))
        y[n, c, i, j] = sum(x[n, c, a, b] for a, b in taps) / divisor
    return y


def avg_pool2d_vjp(x, g, kernel_size, stride=None, padding=0, ceil_mode=False,
                   count_include_pad=True, divisor_override=None):
    grad_x = np.zeros_like(x)
    for n, c, i, j, _, _, taps, divisor in _avg_windows(
            x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
            divisor_override):
        for a, b in taps:
            grad_x[n, c, a, b] += g[n, c, i, j] / divisor
    return grad_x


def _adaptive_windows(x_shape, output_size):
    """Yield (n, c, i, j, OH, OW, taps): bin i spans [floor(i*H/OH), ceil((i+1)*H/OH))."""
    N, C, H, W = x_shape
    OH, OW = pair(output_size)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    rows = range(math.floor(i * H / OH), math.ceil((i + 1) * H / OH))
                    cols = range(math.floor(j * W / OW), math.ceil((j + 1) * W / OW))
                    yield n, c, i, j, OH, OW, [(a, b) for a in rows for b in cols]


def adaptive_avg_pool2d(x, output_size):
    OH, OW = pair(output_size)
    y = np.zeros(x.shape[:2] + (OH, OW))
    for n, c, i, j, _, _, taps in _adaptive_windows(x.shape, output_size):
        y[n, c, i, j] = sum(x[n, c, a, b] for a, b in taps) / len(taps)
    return y


def adaptive_avg_pool2d_vjp(x, g, output_size):
    grad_x = np.zeros_like(x)
    for n, c, i, j, _, _, taps in _adaptive_windows(x.shape, output_size):
        for a, b in taps:
            grad_x[n, c, a, b] += g[n, c, i, j] / len(taps)
    return grad_x


def _first_max(x, n, c, taps):
    best = taps[0]
    for a, b in taps[1:]:
        if x[n, c, a, b] > x[n, c, best[0], best[1]]:
            best = (a, b)  # strictly greater: ties keep the first
    return best


def adaptive_max_pool2d(x, output_size):
    OH, OW = pair(output_size)
    y = np.zeros(x.shape[:2] + (OH, OW))
    for n, c, i, j, _, _, taps in _adaptive_windows(x.shape, output_size):
        a, b = _first_max(x, n, c, taps)
        y[n, c, i, j] = x[n, c, a, b]
    return y


def adaptive_max_pool2d_vjp(x, g, output_size):
    """Each bin's upstream gradient goes to its first (row-major) maximal element."""
    grad_x = np.zeros_like(x)
    for n, c, i, j, _, _, taps in _adaptive_windows(x.shape, output_size):
        a, b = _first_max(x, n, c, taps)
        grad_x[n, c, a, b] += g[n, c, i, j]
    return grad_x
