"""Resampling, rearranging and channel dropout beyond ``test_functional``'s table.

``tests/test_functional.py``'s ``CASES`` run ``interpolate``, ``pixel_shuffle`` and
``pixel_unshuffle`` through gradcheck, gradgradcheck, torch and every device.  Here:
PyTorch's index rules where they are subtle (the precision of the source position,
its shortcuts), the blocked matrix products against one product, inf in nearest
resampling, bad input, ``dropout2d``'s statistics and seeding, the layers against
PyTorch's (repr and behaviour), ``nn.summary`` of models holding them, and the
errors for PyTorch's deprecated upsampling names.
"""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import tinygrad_cnn as tg
import tinygrad_cnn.functional as F
from tinygrad_cnn import Tensor, conv_arrays, gradcheck, gradgradcheck
from tinygrad_cnn.conv_arrays import (cubic_source_weights, linear_source_weights,
                                      nearest_source_index)

nn = tg.nn


def _x(*shape, seed=0, requires_grad=False, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return Tensor(rng.standard_normal(shape).astype(dtype), requires_grad=requires_grad)


# ---- PyTorch's index rules ---------------------------------------------------------------
@pytest.mark.parametrize("size, n_out, scale, exact, precision, o, expected", [
    # o * 2/82 is 1 at o = 41: float64 gets there, float32's 2/82 rounds below it
    (2, 82, None, False, "float64", 41, 1),
    (2, 82, None, False, "float32", 41, 0),
    # 3 * (1 / 3.00000005) is 0.99999998 in float64, which floorf reads as float32: 1.0
    (4, 12, 3.00000005, False, "float64", 3, 1),
    (4, 12, 3.00000005, False, "float32", 3, 0),
    # nearest-exact: (20 + 0.5) * 2/41 - 0.5 + 0.5, one rounding in float32 (a fused
    # multiply-add, as PyTorch's compiled kernel) lands on 1
    (2, 41, None, True, "float32", 20, 1),
    # a scale factor is the scale used, not size / n_out: 1 / 1.1 for an axis kept at 2
    (2, 2, 1.1, False, "float64", 1, 0),
])
def test_nearest_source_index_follows_pytorch_precision(size, n_out, scale, exact, precision,
                                                        o, expected):
    assert nearest_source_index(size, n_out, scale, exact, precision)[o] == expected


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_source_positions_match_pytorch_on_a_grid(dtype):
    """Every size to every output size (and a few scale factors), nearest pixels and
    linear results, as PyTorch's kernels compute them in that dtype."""
    torch = pytest.importorskip("torch")
    tdtype, ndtype = getattr(torch, dtype), np.dtype(dtype)
    for size in range(1, 25):
        x = torch.arange(size, dtype=tdtype).reshape(1, 1, size)
        settings = [(n, None) for n in range(1, 60)] + [
            (int(size * f), f) for f in (0.3, 2 / 3, 1.1, 1.7, 2.01, 3.00000005)
            if int(size * f) >= 1]
        for n_out, scale in settings:
            kw = dict(size=n_out) if scale is None else dict(scale_factor=scale)
            for mode in ("nearest", "nearest-exact"):
                theirs = torch.nn.functional.interpolate(x, mode=mode, **kw)[0, 0].numpy()
                ours = nearest_source_index(size, n_out, scale, mode == "nearest-exact", dtype)
                np.testing.assert_array_equal(ours, theirs.astype(int),
                                              err_msg=f"{mode} {size} -> {n_out} ({scale})")
            for align_corners in (False, True):
                theirs = torch.nn.functional.interpolate(x, mode="linear",
                                                         align_corners=align_corners,
                                                         **kw)[0, 0].numpy()
                i0, i1, w0, w1 = linear_source_weights(size, n_out, scale, align_corners, dtype)
                ours = w0.astype(ndtype) * i0.astype(ndtype) + w1.astype(ndtype) * i1
                np.testing.assert_allclose(ours, theirs, rtol=0, atol=size * 1e-14, err_msg=(
                    f"linear {size} -> {n_out} ({scale}, align_corners={align_corners})"))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bicubic_matches_pytorch_on_a_grid(dtype):
    """Every height 1..12 to every output height 1..30 (and a few scale factors), the
    corners aligned or not: PyTorch's bicubic forward and gradient, in that dtype.  (An
    axis kept at its size under a fractional scale is left to the next test.)"""
    torch = pytest.importorskip("torch")
    tdtype = getattr(torch, dtype)
    tol = {"float64": 1e-12, "float32": 1e-5}[dtype]
    rng = np.random.default_rng(0)
    for size in range(1, 13):
        a = rng.standard_normal((1, 1, size, 2)).astype(dtype)
        settings = [(dict(size=(n, 2)), n) for n in range(1, 31)] + [
            (dict(scale_factor=(f, 1.0)), int(size * f)) for f in (0.3, 2 / 3, 1.7, 2.01, 3.5)
            if int(size * f) not in (0, size)]
        for kw, n_out in settings:
            for align_corners in (False, True):
                g = rng.standard_normal((1, 1, n_out, 2)).astype(dtype)
                x, t = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
                y = F.interpolate(x, mode="bicubic", align_corners=align_corners, **kw)
                ty = torch.nn.functional.interpolate(t, mode="bicubic",
                                                     align_corners=align_corners, **kw)
                y.backward(Tensor(g))
                ty.backward(torch.tensor(g, dtype=tdtype))
                what = f"bicubic {size} -> {n_out} ({kw}, align_corners={align_corners})"
                np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=tol, atol=tol,
                                           err_msg=what)
                np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=tol,
                                           atol=tol * size, err_msg=what)


def test_bicubic_weights_are_keys_kernel_clamped_at_the_borders():
    # Output 0 of 4 -> 8 sits at -0.25: taps -2..1 (t = 0.75), the first two at pixel 0.
    index, weights = cubic_source_weights(4, 8)
    a = conv_arrays.CUBIC_A
    t = 0.75
    want = [((a * d - 5 * a) * d + 8 * a) * d - 4 * a if d > 1 else ((a + 2) * d - (a + 3))
            * d * d + 1 for d in (1 + t, t, 1 - t, 2 - t)]
    np.testing.assert_array_equal(index[0], [0, 0, 0, 1])
    np.testing.assert_allclose(weights[0], want, rtol=1e-15)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-14)
    m = conv_arrays.resample_map("cubic", 4, 8)
    dense = np.zeros((8, 4))
    np.add.at(dense, (m.rows, m.cols), m.weights)
    np.testing.assert_allclose(dense[0], [want[0] + want[1] + want[2], want[3], 0, 0],
                               rtol=1e-15)
    # a kept size without a scale factor copies, exactly
    assert conv_arrays.resample_map("cubic", 5, 5).is_identity


def test_the_bicubic_gradient_is_the_adjoint_where_pytorchs_is_not():
    # 4x5 by scale_factor 1.1 keeps the size but not the pixels (the source positions
    # move by 1/1.1): PyTorch's forward resamples, its backward copies the gradient.
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(0).standard_normal((1, 2, 4, 5))
    x, t = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    y = F.interpolate(x, scale_factor=1.1, mode="bicubic")
    ty = torch.nn.functional.interpolate(t, scale_factor=1.1, mode="bicubic")
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-13)
    assert not np.allclose(y.numpy(), a)
    g = np.random.default_rng(1).standard_normal(a.shape)
    y.backward(Tensor(g))
    ty.backward(torch.tensor(g))
    np.testing.assert_array_equal(t.grad.numpy(), g)   # PyTorch's: a copy
    # ours: the adjoint, <y, g> = <x, grad_x>, as gradcheck's full Jacobian confirms
    np.testing.assert_allclose((y.numpy() * g).sum(), (a * x.grad.numpy()).sum(), rtol=1e-12)
    assert gradcheck(lambda v: F.interpolate(v, scale_factor=1.1, mode="bicubic"),
                     _x(1, 1, 4, 5, requires_grad=True), full_jacobian=True)


def test_the_map_of_a_dtype_is_the_one_its_gradient_transposes():
    # The float32 and float64 maps of 2 -> 82 differ at output 41, and each dtype's
    # gradient is the adjoint of its own forward: <y, g> = <x, grad_x>.
    for dtype in (np.float64, np.float32):
        x = Tensor(np.array([[[1.0, 10.0]]], dtype=dtype), requires_grad=True)
        y = F.interpolate(x, size=82)
        assert y.numpy()[0, 0, 41] == (10.0 if dtype == np.float64 else 1.0)
        g = np.arange(82, dtype=dtype)
        y.backward(Tensor(g.reshape(1, 1, 82)))
        np.testing.assert_allclose((y.numpy() * g).sum(), (x.numpy() * x.grad.numpy()).sum(),
                                   rtol=1e-6)


def test_the_nearest_gradient_is_the_adjoint_where_pytorchs_is_not():
    # Size 2 by scale_factor 1.1: the forward copies pixel 0 twice (1 / 1.1 < 1); the
    # gradient gathers both outputs' there.  (PyTorch's backward copies an axis kept at
    # its size and sends the second output's gradient to pixel 1.)
    x = Tensor(np.array([[[1.0, 2.0]]]), requires_grad=True)
    y = F.interpolate(x, scale_factor=1.1)
    np.testing.assert_array_equal(y.numpy(), [[[1.0, 1.0]]])
    y.backward(Tensor(np.array([[[1.0, 10.0]]])))
    np.testing.assert_array_equal(x.grad.numpy(), [[[11.0, 0.0]]])
    assert gradcheck(lambda t: F.interpolate(t, scale_factor=1.1), _x(2, 3, 2, requires_grad=True))


# ---- the blocked products ------------------------------------------------------------------
@pytest.mark.parametrize("kw, shape", [
    (dict(size=(30, 19), mode="bilinear"), (2, 2, 9, 40)),
    (dict(scale_factor=(0.4, 2.7), mode="bilinear", align_corners=True), (1, 2, 40, 9)),
    (dict(size=37, mode="linear"), (2, 3, 90)),
    (dict(size=(25, 90), mode="nearest-exact"), (1, 2, 90, 25)),
    (dict(size=(70, 9), mode="bicubic", align_corners=True), (2, 1, 40, 33)),
])
def test_blocked_products_equal_one_product(kw, shape, monkeypatch):
    """Rows of the map cut into blocks of 8 (each reading its own stretch of the
    axis, as long axes are) give the result and the gradients of one product."""
    x = _x(*shape, requires_grad=True)
    y = F.interpolate(x, **kw)
    g = _x(*y.shape, seed=1)
    (whole,) = tg.grad(y, [x], g)
    conv_arrays.resample_map.cache_clear()
    monkeypatch.setattr(conv_arrays.AxisMap, "ONE_BLOCK_UP_TO", 1)
    monkeypatch.setattr(conv_arrays.AxisMap, "ROWS_PER_BLOCK_STRETCH", 1)
    try:
        assert len(conv_arrays.resample_map("linear", 40, 19).blocks()) > 1
        y2 = F.interpolate(x, **kw)
        (blocked,) = tg.grad(y2, [x], g)
        assert gradcheck(lambda t: F.interpolate(t, **kw), _x(*shape, requires_grad=True))
    finally:
        conv_arrays.resample_map.cache_clear()
    np.testing.assert_allclose(y2.numpy(), y.numpy(), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(blocked.numpy(), whole.numpy(), rtol=1e-13, atol=1e-14)


def test_nearest_copies_inf_to_its_copies_only():
    """Nearest resampling copies (a gather): an inf reaches only the outputs that
    copy it, as in PyTorch (a product with a 0/1 matrix would put NaN beside it)."""
    x = np.zeros((1, 1, 3, 4))
    x[0, 0, 1, 2] = -np.inf
    y = F.interpolate(Tensor(x), scale_factor=(2, 1.5)).numpy()
    expected = np.zeros((1, 1, 6, 6))
    expected[0, 0, 2:4, 3:5] = -np.inf
    np.testing.assert_array_equal(y, expected)


def test_resampling_one_pixel_spreads_it_and_keeps_float32():
    x = _x(3, 2, 1, 1, dtype=np.float32)
    for mode in ("nearest", "bilinear", "bicubic"):
        y = F.interpolate(x, size=(4, 5), mode=mode)
        assert y.dtype == np.float32 and y.shape == (3, 2, 4, 5)
        # bicubic's four weights, float32 as PyTorch's, add up to 1 within its rounding
        np.testing.assert_allclose(y.numpy(), np.broadcast_to(x.numpy(), (3, 2, 4, 5)),
                                   rtol=1e-6 if mode == "bicubic" else 0)


# ---- bad input ---------------------------------------------------------------------------
def _t(*shape, dtype=np.float64):
    return Tensor(np.zeros(shape, dtype=dtype))


BAD_INPUT = [
    (lambda: F.interpolate(_t(1, 2, 4, 4), size=3, scale_factor=2), ValueError,
     [r"interpolate: give exactly one of size and scale_factor", r"both \(size=3, "]),
    (lambda: F.interpolate(_t(1, 2, 4, 4)), ValueError, [r"exactly one", r"got neither"]),
    (lambda: F.interpolate(_t(1, 2, 4, 4), size=3, mode="linear"), ValueError,
     [r"mode='linear' expects x of shape \(N, C, L\) \(3 dimensions\), got shape "
      r"\(1, 2, 4, 4\); for \(N, C, H, W\) images use mode='bilinear'"]),
    (lambda: F.interpolate(_t(2, 4, 4), size=3, mode="bilinear"), ValueError,
     [r"mode='bilinear' expects x of shape \(N, C, H, W\)", r"got shape \(2, 4, 4\)",
      r"x\.unsqueeze\(0\)"]),
    (lambda: F.interpolate(_t(4, 4), size=3), ValueError,
     [r"expects x of shape \(N, C, L\) or \(N, C, H, W\) \(3 or 4 dimensions\), got shape "
      r"\(4, 4\)"]),
    (lambda: F.interpolate(_t(1, 1, 2, 4, 4), size=3), ValueError, [r"\(1, 1, 2, 4, 4\)"]),
    (lambda: F.interpolate(_t(2, 4, 4), size=3, mode="bicubic"), ValueError,
     [r"mode='bicubic' expects x of shape \(N, C, H, W\)", r"got shape \(2, 4, 4\)",
      r"x\.unsqueeze\(0\)"]),
    (lambda: F.interpolate(_t(1, 2, 4, 4), size=3, align_corners=False), ValueError,
     [r"align_corners can only be set with the interpolating modes 'linear', 'bilinear' and "
      r"'bicubic'", r"mode='nearest'", r"got False"]),
    (lambda: F.interpolate(_t(1, 2, 4, 4), size=3, mode="nearest-exact", align_corners=True),
     ValueError, [r"mode='nearest-exact'"]),
    (lambda: F.interpolate(_t(1, 2, 4, 4), size=0), ValueError,
     [r"interpolate: size must be an int >= 1, got 0"]),
    (lambda: F.interpolate(_t(1, 2, 4, 4), size=(3, -1)), ValueError, [r"size must be an int"]),
    (lambda: F.interpolate(_t(1, 2, 4, 4), scale_factor=0), ValueError,
     [r"interpolate: scale_factor must be > 0, got 0"]),
    (lambda: F.interpolate(_t(1, 2, 4, 4), scale_factor=(2, -0.5)), ValueError,
     [r"scale_factor must be > 0, got -0\.5"]),
    (lambda: F.interpolate(_t(1, 2, 4, 4), scale_factor=float("inf")), ValueError,
     [r"scale_factor must be a finite number, got inf"]),
    (lambda: F.interpolate(_t(1, 2, 4, 4), scale_factor=float("nan")), ValueError,
     [r"scale_factor must be a number, got nan"]),
    (lambda: F.interpolate(_t(1, 2, 4, 4), scale_factor=0.2), ValueError,
     [r"scale_factor=0\.2 gives x of shape \(1, 2, 4, 4\) an empty output, spatial size "
      r"\(0, 0\)"]),
    (lambda: F.interpolate(_t(1, 2, 4, 4), size=(2, 3, 4)), ValueError,
     [r"size=\(2, 3, 4\) gives 3 values but x of shape \(1, 2, 4, 4\) has 2 spatial "
      r"dimension\(s\); expected one value, or 2"]),
    (lambda: F.interpolate(_t(1, 2, 4), scale_factor=[2.0, 2.0]), ValueError,
     [r"scale_factor=\[2\.0, 2\.0\] gives 2 values but x of shape \(1, 2, 4\) has 1"]),
    (lambda: F.interpolate(_t(1, 2, 4, 4), size=3, recompute_scale_factor=True), ValueError,
     [r"recompute_scale_factor=True is not meaningful with an explicit size"]),
    (lambda: F.interpolate(_t(1, 2, 2, 4, 4), size=3, mode="trilinear"), ValueError,
     [r"mode must be one of 'nearest', 'nearest-exact', 'area', 'linear', 'bilinear', "
      r"'bicubic', got 'trilinear' \(PyTorch's 'trilinear', for volumes, is not provided\)"]),
    (lambda: F.interpolate(_t(1, 2, 4, 4), size=3, mode="bilinear", antialias=True),
     ValueError, [r"antialias=True is not provided"]),
    (lambda: F.interpolate(_t(1, 2, 0, 4), size=3), ValueError,
     [r"x of shape \(1, 2, 0, 4\) is empty along H"]),
    (lambda: F.pixel_shuffle(_t(2, 8, 3, 4), 3), ValueError,
     [r"pixel_shuffle: x of shape \(2, 8, 3, 4\) has 8 channels, not divisible by "
      r"upscale_factor\*\*2 = 9; expected x of shape \(\*, C\*9, H, W\)"]),
    (lambda: F.pixel_shuffle(_t(8, 3), 2), ValueError,
     [r"pixel_shuffle: expected x of shape \(\*, C\*r\*r, H, W\) \(at least 3 dimensions\), "
      r"got shape \(8, 3\)"]),
    (lambda: F.pixel_shuffle(_t(1, 4, 2, 2), 0), ValueError,
     [r"pixel_shuffle: upscale_factor must be an int >= 1, got 0"]),
    (lambda: F.pixel_unshuffle(_t(2, 2, 3, 4), 2), ValueError,
     [r"pixel_unshuffle: x of shape \(2, 2, 3, 4\) has height 3, not divisible by "
      r"downscale_factor 2; expected x of shape \(\*, C, H\*2, W\*2\)"]),
    (lambda: F.pixel_unshuffle(_t(2, 2, 8, 6), 4), ValueError, [r"has width 6, not divisible"]),
    (lambda: F.pixel_unshuffle(_t(4, 4), 2), ValueError, [r"\(\*, C, H\*r, W\*r\)", r"\(4, 4\)"]),
    (lambda: F.dropout2d(_t(2, 3, 4)), ValueError,
     [r"dropout2d: expected x of shape \(N, C, H, W\) \(4 dimensions\), got shape \(2, 3, 4\)",
      r"3-D is ambiguous", r"x\.unsqueeze\(0\) for one image", r"x\.unsqueeze\(-1\)"]),
    (lambda: F.dropout2d(_t(2, 3), training=False), ValueError,
     [r"got shape \(2, 3\); use dropout for other shapes"]),
    (lambda: F.dropout2d(_t(1, 2, 2, 2), 1.5), ValueError,
     [r"dropout2d: p must be a probability in \[0, 1\], got 1\.5"]),
    (lambda: F.dropout2d(_t(1, 2, 2, 2), 0.5, True, True), ValueError,
     [r"^dropout2d: inplace=True is not supported"]),
]


BAD_INPUT_IDS = [
    "both", "neither", "linear-4d", "bilinear-3d", "2d", "5d", "bicubic-3d",
    "align-corners-nearest",
    "align-corners-nearest-exact", "size-0", "size-negative", "scale-0", "scale-negative",
    "scale-inf", "scale-nan", "scale-empty-output", "size-3-values", "scale-2-values-1d",
    "recompute-with-size", "mode-trilinear", "antialias", "empty-input", "shuffle-channels",
    "shuffle-2d", "shuffle-factor-0", "unshuffle-height", "unshuffle-width", "unshuffle-2d",
    "dropout2d-3d", "dropout2d-2d-eval", "dropout2d-p", "dropout2d-inplace"]


@pytest.mark.parametrize("call, error, patterns", BAD_INPUT, ids=BAD_INPUT_IDS)
def test_bad_input_raises_clear_error(call, error, patterns):
    with pytest.raises(error) as info:
        call()
    for pattern in patterns:
        assert re.search(pattern, str(info.value)), \
            f"error message {str(info.value)!r} does not mention {pattern!r}"


@pytest.mark.parametrize("call, match", [
    (lambda: F.interpolate(_t(1, 2, 4, 4), size=2.5), r"interpolate: size must be an int, "
                                                      r"got 2\.5 \(float\)"),
    (lambda: F.interpolate(_t(1, 2, 4, 4), scale_factor="2"), r"scale_factor must be a number, "
                                                              r"got '2' \(str\)"),
    (lambda: F.interpolate(_t(1, 2, 4, 4), scale_factor=True), r"scale_factor must be a number"),
    (lambda: F.interpolate(_t(1, 2, 4, 4), size=3, mode="bilinear", align_corners=1),
     r"interpolate: align_corners must be True or False, got 1 \(int\)"),
    (lambda: F.interpolate(_t(1, 2, 4, 4, dtype=np.int64), size=3),
     r"interpolate: x has dtype int64; expected a float dtype"),
    (lambda: F.interpolate(np.zeros((1, 2, 4, 4)), size=3), r"x must be a Tensor"),
    (lambda: F.pixel_shuffle(_t(1, 4, 2, 2), 2.0), r"upscale_factor must be an int, got 2\.0"),
    (lambda: F.pixel_unshuffle([[[1.0]]], 1), r"pixel_unshuffle: x must be a Tensor"),
    (lambda: F.dropout2d(_t(2, 2, 2, 2, dtype=np.int64)), r"dropout2d: x has dtype int64"),
    (lambda: F.dropout2d(np.zeros((2, 2, 2, 2))), r"dropout2d: x must be a Tensor"),
])
def test_bad_type_raises_type_error(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_integer_tensors_pass_the_rearrangements_and_dropout2d_identity():
    x = Tensor(np.arange(16).reshape(1, 4, 2, 2))
    y = F.pixel_shuffle(x, 2)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(F.pixel_unshuffle(y, 2).numpy(), x.numpy())
    assert F.dropout2d(x, 0.5, training=False) is x
    np.testing.assert_array_equal(F.dropout2d(x, 1.0).numpy(), np.zeros((1, 4, 2, 2)))


def test_pixel_shuffle_matches_pytorch_on_integers_and_is_inverted_by_unshuffle():
    torch = pytest.importorskip("torch")
    x = np.arange(2 * 18 * 2 * 3).reshape(2, 18, 2, 3)
    y = F.pixel_shuffle(Tensor(x), 3).numpy()
    np.testing.assert_array_equal(y, torch.nn.functional.pixel_shuffle(torch.tensor(x), 3))
    np.testing.assert_array_equal(F.pixel_unshuffle(Tensor(y), 3).numpy(), x)


# ---- dropout2d -------------------------------------------------------------------------------
def test_dropout2d_zeros_whole_channels_and_scales_the_rest():
    tg.manual_seed(0)
    x = Tensor(np.random.default_rng(3).uniform(1.0, 2.0, (200, 50, 3, 4)), requires_grad=True)
    y = F.dropout2d(x, 0.3)
    kept = y.numpy() != 0
    channel_kept = kept[:, :, 0, 0]
    # a channel is kept or dropped as a whole
    np.testing.assert_array_equal(kept, np.broadcast_to(channel_kept[:, :, None, None], kept.shape))
    assert 0.68 < channel_kept.mean() < 0.72, channel_kept.mean()   # 10,000 channels: sd 0.005
    np.testing.assert_allclose(y.numpy()[kept], x.numpy()[kept] / 0.7, rtol=1e-12)
    v = np.random.default_rng(4).standard_normal(x.shape)
    y.backward(Tensor(v))
    np.testing.assert_allclose(x.grad.numpy(), v * kept / 0.7, rtol=1e-12)


def test_dropout2d_draws_one_number_per_channel_from_the_seeded_generator():
    # As dropout draws one per element: channel (n, c) is kept where the generator's
    # next N*C numbers in order are >= p; the same seed, the same mask.
    x = Tensor(np.ones((3, 5, 2, 2)))
    tg.manual_seed(7)
    a = F.dropout2d(x, 0.5).numpy()
    expected = (np.random.default_rng(7).random((3, 5)) >= 0.5) / 0.5
    np.testing.assert_array_equal(a, np.broadcast_to(expected[:, :, None, None], a.shape))
    tg.manual_seed(7)
    np.testing.assert_array_equal(F.dropout2d(x, 0.5).numpy(), a)
    assert not np.array_equal(F.dropout2d(x, 0.5).numpy(), a)   # the next draw differs


def test_dropout2d_on_device_draws_the_cpu_mask(device):
    x = np.random.default_rng(5).standard_normal((4, 6, 2, 3))
    tg.manual_seed(11)
    on_cpu = F.dropout2d(Tensor(x), 0.4).numpy()
    tg.manual_seed(11)
    y = F.dropout2d(tg.tensor(x, device=device), 0.4)
    assert y.device == tg.tensor(x, device=device).device
    np.testing.assert_array_equal(y.numpy(), on_cpu)


def test_dropout2d_identity_and_extremes():
    x = _x(2, 3, 2, 2, requires_grad=True)
    assert F.dropout2d(x, 0.5, training=False) is x
    assert F.dropout2d(x, 0.0) is x
    y = F.dropout2d(x, 1.0)
    np.testing.assert_array_equal(y.numpy(), np.zeros(x.shape))
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros(x.shape))


def test_dropout2d_gradcheck():
    def fn(x):
        tg.manual_seed(0)   # the same mask on every evaluation
        return F.dropout2d(x, 0.4)
    x = _x(3, 4, 2, 2, requires_grad=True)
    assert gradcheck(fn, x) and gradgradcheck(fn, x)


# ---- the layers --------------------------------------------------------------------------
LAYERS = {   # the layer of nn (ours or PyTorch's), the input shape[, what our repr adds]
    "upsample-nearest": (lambda m: m.Upsample(scale_factor=2), (2, 3, 4, 5)),
    "upsample-size-bilinear": (lambda m: m.Upsample(size=(7, 3), mode="bilinear"),
                               (1, 2, 4, 5)),
    "upsample-linear-fraction": (lambda m: m.Upsample(scale_factor=1.5, mode="linear"),
                                 (2, 3, 5)),
    "upsample-pair-nearest-exact": (
        lambda m: m.Upsample(scale_factor=(1.5, 0.5), mode="nearest-exact"), (1, 2, 4, 6)),
    # the repr adds the setting PyTorch's leaves out (see the next test)
    "upsample-recompute": (lambda m: m.Upsample(scale_factor=1.7, mode="bilinear",
                                                recompute_scale_factor=True), (1, 2, 3, 5),
                           ", recompute_scale_factor=True"),
    "upsample-align-corners": (lambda m: m.Upsample(size=(5, 4), mode="bilinear",
                                                    align_corners=True), (2, 1, 3, 7),
                               ", align_corners=True"),
    "upsample-bicubic": (lambda m: m.Upsample(scale_factor=(2.5, 0.5), mode="bicubic"),
                         (2, 2, 3, 8)),
    "upsample-bicubic-align-corners": (
        lambda m: m.Upsample(size=(4, 9), mode="bicubic", align_corners=True), (1, 2, 5, 3),
        ", align_corners=True"),
    "pixel-shuffle": (lambda m: m.PixelShuffle(2), (2, 8, 3, 2)),
    "pixel-unshuffle": (lambda m: m.PixelUnshuffle(2), (2, 2, 4, 6)),
    "unfold": (lambda m: m.Unfold((2, 3), dilation=(1, 2), padding=1, stride=(2, 1)),
               (2, 3, 5, 6)),
    "unfold-unbatched": (lambda m: m.Unfold(2), (3, 4, 4)),
    "fold": (lambda m: m.Fold((4, 5), 2, padding=1, stride=2), (2, 3 * 4, 3 * 3)),
    "dropout2d": (lambda m: m.Dropout2d(0.0, inplace=False), (2, 3, 2, 2)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_matches_torch(name):
    torch = pytest.importorskip("torch")
    make, shape, *extra = LAYERS[name]
    ours, theirs = make(nn), make(torch.nn)
    theirs_repr = repr(theirs).replace(", inplace=False", "")   # no inplace here (see Dropout)
    assert repr(ours) == theirs_repr[:-1] + "".join(extra) + ")"
    x_np = np.random.default_rng(0).standard_normal(shape)
    for mode in ("train", "eval"):
        getattr(ours, mode)(), getattr(theirs, mode)()
        x, tx = tg.tensor(x_np, requires_grad=True), torch.tensor(x_np, requires_grad=True)
        y, ty = ours(x), theirs(tx)
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-13)
        g = np.random.default_rng(1).standard_normal(ty.shape)
        y.backward(tg.tensor(g))
        ty.backward(torch.tensor(g))
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-13)
    assert ours.state_dict() == {} and not list(ours.parameters())


def test_upsample_repr_shows_the_settings_that_change_the_result():
    # PyTorch shows neither align_corners nor recompute_scale_factor; here where set.
    assert repr(nn.Upsample(size=(3, 4), mode="bilinear", align_corners=True)) == \
        "Upsample(size=(3, 4), mode='bilinear', align_corners=True)"
    assert repr(nn.Upsample(scale_factor=[2, 3], recompute_scale_factor=True)) == \
        "Upsample(scale_factor=(2.0, 3.0), mode='nearest', recompute_scale_factor=True)"
    assert repr(nn.Upsample(size=5, mode="linear", align_corners=False)) == \
        "Upsample(size=5, mode='linear')"


def test_dropout2d_layer_drops_in_training_only():
    layer = nn.Dropout2d(0.5)
    x = Tensor(np.ones((8, 16, 2, 2)))
    tg.manual_seed(1)
    y = layer(x).numpy()
    assert set(np.unique(y)) == {0.0, 2.0}
    layer.eval()
    assert layer(x) is x


@pytest.mark.parametrize("make, error, match", [
    (lambda: nn.Upsample(), ValueError, r"Upsample: give exactly one of size and scale_factor"),
    (lambda: nn.Upsample(size=2, scale_factor=2), ValueError, r"Upsample: give exactly one"),
    (lambda: nn.Upsample(size=0), ValueError, r"Upsample: size must be an int >= 1, got 0"),
    (lambda: nn.Upsample(scale_factor=(2, 0)), ValueError, r"Upsample: scale_factor must be > 0"),
    (lambda: nn.Upsample(scale_factor=2, mode="cubic"), ValueError, r"Upsample: mode must be"),
    (lambda: nn.Upsample(scale_factor=2, align_corners=True), ValueError,
     r"Upsample: align_corners can only be set"),
    (lambda: nn.Upsample(size=3, recompute_scale_factor=True), ValueError,
     r"Upsample: recompute_scale_factor=True is not meaningful"),
    (lambda: nn.Upsample(size=3, mode="bilinear", align_corners="yes"), TypeError,
     r"Upsample: align_corners must be True or False"),
    (lambda: nn.PixelShuffle(0), ValueError, r"PixelShuffle: upscale_factor must be an int >= 1"),
    (lambda: nn.PixelUnshuffle(1.5), TypeError, r"PixelUnshuffle: downscale_factor must be an "
                                                r"int"),
    (lambda: nn.Unfold(0), ValueError, r"Unfold: kernel_size must be"),
    (lambda: nn.Unfold(2, padding=-1), ValueError, r"Unfold: padding must be"),
    (lambda: nn.Fold((4, 0), 2), ValueError, r"Fold: output_size must be"),
    (lambda: nn.Fold(4, 2, stride=0), ValueError, r"Fold: stride must be"),
    (lambda: nn.Dropout2d(-0.1), ValueError, r"Dropout2d: p must be a probability"),
    (lambda: nn.Dropout2d(0.1, inplace=True), ValueError, r"^Dropout2d: inplace=True is not "
                                                          r"supported"),
])
def test_layer_settings_are_checked_at_construction(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("layer, shape, match", [
    (lambda: nn.Upsample(scale_factor=2), (2, 4), r"Upsample\(scale_factor=2\.0, "
                                                  r"mode='nearest'\) expects input of shape "
                                                  r"\(N, C, L\) or \(N, C, H, W\), got \(2, 4\)"),
    (lambda: nn.Upsample(size=(3, 4)), (1, 2, 5), r"size=\(3, 4\) gives 2 values but x of "
                                                  r"shape \(1, 2, 5\) has 1"),
    (lambda: nn.Unfold(2), (2, 4), r"Unfold\(kernel_size=2, .*\) expects input of shape "
                                   r"\(C, H, W\) or \(N, C, H, W\), got \(2, 4\)"),
    (lambda: nn.Fold((3, 3), 2), (2, 4, 4, 4), r"Fold\(output_size=\(3, 3\), .*\) expects input "
                                               r"of shape \(C\*KH\*KW, L\) or"),
    (lambda: nn.Dropout2d(), (2, 3, 4), r"dropout2d: expected x of shape \(N, C, H, W\)"),
    (lambda: nn.PixelShuffle(2), (2, 6, 2, 2), r"6 channels, not divisible"),
])
def test_layer_input_errors_name_the_layer_or_op(layer, shape, match):
    with pytest.raises(ValueError, match=match):
        layer()(_t(*shape))


# ---- nn.summary ----------------------------------------------------------------------------
def test_summary_of_a_model_with_the_resampling_layers():
    """No parameters and nothing to compare (as pooling), and receptive fields: the
    pixel-unshuffle is a 2x2 window of stride 2, the bilinear upsampling a window of
    2 at stride 1/2, the pixel shuffle and the nearest upsampling a window of 1 at a
    stride of input / output size (neighbouring units a fraction of a pixel apart, the
    field rounded up), Unfold the convolution of its windows, and Fold ends it (as a
    transposed convolution does)."""
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.Dropout2d(0.2), nn.PixelUnshuffle(2),
        nn.Conv2d(64, 8, 3, padding=1), nn.Upsample(scale_factor=2, mode="bilinear"),
        nn.Conv2d(8, 12, 3, padding=1), nn.PixelShuffle(2), nn.Conv2d(3, 4, 3, padding=1),
        nn.Upsample(size=(20, 20)), nn.Unfold(2, stride=2), nn.Fold((20, 20), 2, stride=2),
        nn.Flatten(), nn.Linear(4 * 400, 10))
    model.train()
    s = nn.summary(model, (2, 3, 16, 16))
    assert model.training   # restored
    rows = {r["type"] + r["name"]: r for r in s.rows}
    fields = [r["receptive_field"] for r in s.rows]
    assert fields == [(3, 3), (3, 3), (4, 4), (8, 8), (10, 10), (12, 12), (12, 12), (13, 13),
                      (13, 13), (14, 14), None, None, None]
    for name in ("Dropout2d1", "PixelUnshuffle2", "Upsample4", "PixelShuffle6", "Upsample8",
                 "Unfold9", "Fold10"):
        assert rows[name]["params"] == 0
        assert rows[name]["fc_params"] is None and rows[name]["lc_params"] is None
    assert [r["output_shape"] for r in s.rows][2:11] == [
        (2, 64, 8, 8), (2, 8, 8, 8), (2, 8, 16, 16), (2, 12, 16, 16), (2, 3, 32, 32),
        (2, 4, 32, 32), (2, 4, 20, 20), (2, 16, 100), (2, 4, 20, 20)]
    assert s.total_params == model.num_parameters()
    text = str(s)
    assert "2 (PixelUnshuffle)" in text and "9 (Unfold)" in text


def test_summary_receptive_field_of_bicubic_upsampling():
    model = nn.Sequential(nn.Upsample(scale_factor=2, mode="bicubic"), nn.Conv2d(1, 1, 3))
    fields = [r["receptive_field"] for r in nn.summary(model, (1, 1, 5, 5)).rows]
    # 4 taps at stride 1/2; 3x3: 4 + 2 * 1/2 = 5
    assert fields == [(4, 4), (5, 5)]


def test_summary_receptive_field_after_area_and_align_corners_resampling():
    model = nn.Sequential(nn.Upsample(size=(9, 9), mode="bilinear", align_corners=True),
                          nn.Conv2d(1, 1, 3), nn.Upsample(size=(4, 4), mode="area"),
                          nn.Conv2d(1, 1, 2))
    fields = [r["receptive_field"] for r in nn.summary(model, (1, 1, 5, 5)).rows]
    # 5 -> 9 with the corners aligned: stride 4/8; 3x3: 2 + 2 * 1/2 = 3; area 7 -> 4:
    # bins of 2 or 3 at stride 1: 3 + 2 * 1/2 = 4; 2x2: 4 + 1/2 -> 5
    assert fields == [(2, 2), (3, 3), (4, 4), (5, 5)]


def test_summary_refuses_an_unbatched_input_to_the_new_layers():
    for layer, shape in ((nn.PixelShuffle(2), (4, 2, 2)), (nn.Unfold(2), (1, 3, 3)),
                         (nn.Fold((3, 3), 2), (4, 4))):
        with pytest.raises(ValueError, match=r"as one unbatched sample"):
            nn.summary(nn.Sequential(layer), shape)


# ---- PyTorch's deprecated names -------------------------------------------------------------
@pytest.mark.parametrize("name, kw", [
    ("upsample", dict(scale_factor=2, mode="bilinear", align_corners=False)),
    ("upsample_nearest", dict(size=(5, 3))),
    ("upsample_bilinear", dict(scale_factor=1.5)),
])
def test_deprecated_upsample_aliases_name_the_interpolate_call(name, kw):
    with pytest.raises(AttributeError) as info:
        getattr(F, name)
    message = str(info.value)
    assert message.startswith(f"module 'tinygrad_cnn.functional' has no attribute '{name}' "
                              f"(a PyTorch name, deprecated there in favour of interpolate): "
                              f"use F.interpolate(x, size, scale_factor")
    assert not hasattr(F, name)
    torch = pytest.importorskip("torch")
    # The hinted call, with the alias's arguments, gives the alias's result.
    call = message.split("): use ", 1)[1]
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 4))
    settings = dict(kw)
    ours = eval(call, {"F": F, "x": Tensor(x), "size": settings.pop("size", None),
                       "scale_factor": settings.pop("scale_factor", None),
                       "mode": settings.pop("mode", None),
                       "align_corners": settings.pop("align_corners", None)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = getattr(torch.nn.functional, name)(torch.tensor(x), **kw)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)


@pytest.mark.parametrize("name, ours", [
    ("UpsamplingNearest2d", lambda: nn.Upsample(scale_factor=2, mode="nearest")),
    ("UpsamplingBilinear2d", lambda: nn.Upsample(scale_factor=2, mode="bilinear",
                                                 align_corners=True)),
])
def test_deprecated_upsampling_layers_are_what_their_hint_says(name, ours):
    with pytest.raises(AttributeError, match=r"not provided \(PyTorch deprecates it\); "
                                             r"nn\.Upsample\(size, scale_factor, mode="):
        getattr(nn, name)
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 4))
    theirs = getattr(torch.nn, name)(scale_factor=2)(torch.tensor(x)).numpy()
    np.testing.assert_allclose(ours()(Tensor(x)).numpy(), theirs, rtol=1e-12)
