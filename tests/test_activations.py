"""PyTorch's activations beyond relu, sigmoid and tanh, and the erf that GELU stands on.

The concerns every op gets run in the shared tables: ``test_functional.CASES``
(gradcheck and gradgradcheck in float64, torch in float64 and float32, every
device, upstream gradients in any layout) and ``test_ops`` (erf's cases, and
the documented gradient at each kink, on every device).  Here:

* erf against ``math.erf`` on a dense grid with both tails, tiny and huge |x|,
  in float64; float32 within its stated ulp bound of that on a dense grid, float16
  the nearest value for every float16; its symmetry and special values, and its
  array code on any memory layout;
* GELU's own array code (one pass forward, one backward) against its formula in
  float64 and float32, float16 computed in float32 and rounded once;
* inputs of +-1e4 and +-inf against torch, and the gradients at the kinks
  against torch's;
* the ``nn`` modules: reprs, no parameters, torch parity, ``nn.summary``;
* bad arguments.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import tinygrad_cnn as tg
import tinygrad_cnn.functional as F
from tinygrad_cnn import nn
from tinygrad_cnn.backend import get_backend
from tinygrad_cnn.conv_arrays import (
    cache_chunks, erf_array, gelu_array, gelu_grad_array, is_batch_last)


# ---- erf ----------------------------------------------------------------------------------
def _erf_grid():
    """Both tails of a dense grid (erf is 1 to float64 from |x| ~ 6), tiny |x| down to the
    smallest subnormal, huge |x| up to 1e300, each with its negative."""
    dense = np.linspace(0.0, 8.0, 80001)
    tiny = np.geomspace(5e-324, 1e-2, 4000)
    huge = np.geomspace(1.0, 1e300, 1000)
    x = np.concatenate([dense, tiny, huge, [2.2250738585072014e-308, 0.46875, 6.0]])
    return np.concatenate([x, -x])


def _math_erf(x):
    return np.array([math.erf(float(v)) for v in x.ravel()]).reshape(x.shape)


def test_erf_matches_math_erf_in_float64():
    x = _erf_grid()
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no overflow on the way to erf(1e300) = 1
        got = tg.tensor(x).erf().numpy()
    want = _math_erf(x)
    # Relative to |erf(x)|, or to the smallest normal number for a subnormal one, whose
    # spacing (5e-324) is all either can resolve there.
    rel = np.abs(got - want) / np.maximum(np.abs(want), np.finfo(np.float64).tiny)
    assert rel.max() <= 1e-14, f"relative error {rel.max():.3g} at x = {x[rel.argmax()]}"


def _float32_grid():
    """_erf_grid in float32 (huge values become inf), plus runs of consecutive float32
    values where erf's float32 error is largest (near 0.44, the worst over all float32)
    and where it saturates (erf rounds to 1 from 3.92; the clamp at 4.3), the smallest
    normal number and its neighbours, the largest float32, and NaN."""
    with np.errstate(over="ignore"):
        grid = _erf_grid().astype(np.float32)
    runs = [np.arange(v, v + 20000, dtype=np.int32).view(np.float32) for v in
            np.float32([0.4388, 0.5, 1.0, 2.0, 3.9, 4.29]).view(np.int32)]
    tiny = np.arange(0x007FF000, 0x00801000, dtype=np.int32).view(np.float32)
    x = np.concatenate([grid, *runs, tiny, np.float32([1e-30, 3.4028235e38, np.nan])])
    return np.concatenate([x, -x])


def _ulps(got, want, dtype):
    """|got - want| in units in the last place of ``dtype`` at ``want`` (float64 arrays;
    below the smallest normal number, in its subnormal spacing), 0 where both are NaN."""
    info = np.finfo(dtype)
    exponent = np.floor(np.log2(np.maximum(np.abs(want), info.smallest_normal)))
    err = np.abs(got - want) / np.exp2(exponent - info.nmant)
    return np.where(np.isnan(got) & np.isnan(want), 0.0, err)


# erf_array's stated bound for float32 (2.41 measured over every float32 with NumPy's tanh)
ERF32_ULPS = 2.5


def test_erf_in_float32_is_within_its_ulp_bound():
    """Against the float64 path (itself checked against math.erf above), in float32 ulps:
    relative error for tiny |x| (erf(x) ~ 2x/sqrt(pi)), subnormals in their spacing."""
    x = _float32_grid()
    got = tg.tensor(x).erf()
    assert got.dtype == np.float32
    want = erf_array(get_backend("cpu"), x.astype(np.float64))
    err = _ulps(got.numpy().astype(np.float64), want, np.float32)
    assert err.max() <= ERF32_ULPS, f"{err.max():.3g} ulp at x = {x[err.argmax()]!r}"
    assert np.isnan(got.numpy()).sum() == 2   # NaN and -NaN only


def test_erf_in_float16_is_the_exact_value_rounded_for_every_float16():
    """Every float16 (computed in float32, rounded once): within 1 ulp of erf(x), and
    the float16 nearest it but for a few (none with NumPy's tanh on x86-64; another
    tanh may tip a float32 value lying within ~3 float32 ulps of a float16 tie)."""
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    x = np.append(x[~np.isnan(x)], np.float16(np.nan))   # one NaN (not the signalling ones)
    got = tg.tensor(x).erf()
    assert got.dtype == np.float16
    want = erf_array(get_backend("cpu"), x.astype(np.float64))
    assert _ulps(got.numpy().astype(np.float64), want, np.float16).max() <= 1
    assert np.sum(got.numpy() != want.astype(np.float16)) <= 1 + 16   # (the NaN, and a few)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_erf_is_odd_and_keeps_its_special_values(dtype):
    with np.errstate(over="ignore"):
        x = _erf_grid().astype(dtype)
    np.testing.assert_array_equal(tg.tensor(-x).erf().numpy(), -tg.tensor(x).erf().numpy())
    tiny = np.finfo(dtype).smallest_subnormal
    special = tg.tensor(np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, tiny, -tiny],
                                 dtype)).erf().numpy()
    assert special.dtype == dtype
    np.testing.assert_array_equal(special[:2], [1.0, -1.0])
    assert np.isnan(special[2])
    assert special[3] == 0 and not np.signbit(special[3]) and np.signbit(special[4])
    # 2/sqrt(pi) times the smallest subnormal rounds to itself (1.13 of its spacing)
    np.testing.assert_array_equal(special[5:], [tiny, -tiny])


def test_erf_of_integers_is_float32_as_in_pytorch():
    y = tg.tensor([0, 1, -2]).erf()
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), [0.0, math.erf(1), math.erf(-2)], rtol=3e-7, atol=0)


def test_erf_is_the_same_on_every_device(device):
    x = np.concatenate([_erf_grid()[::7], [np.inf, -np.inf, np.nan]])
    got = tg.tensor(x, device=device).erf().numpy()
    want = tg.tensor(x).erf().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)   # NaN where NaN
    # float32: within the bound of the exact value on any backend (CUDA's tanhf differs
    # from NumPy's by up to ~3 ulp, so the two may not agree to the bit)
    x32 = _float32_grid()[::5]
    got = tg.tensor(x32, device=device).erf().numpy().astype(np.float64)
    err = _ulps(got, erf_array(get_backend("cpu"), x32.astype(np.float64)), np.float32)
    assert err.max() <= ERF32_ULPS + (1 if device.startswith("cuda") else 0)


def test_erf_gradient_is_the_gaussian():
    x = tg.tensor(np.linspace(-6, 6, 101), requires_grad=True)
    x.erf().sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 / np.sqrt(np.pi) * np.exp(-x.numpy() ** 2),
                               rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_erf_array_takes_any_layout_and_keeps_it(dtype):
    """Large arrays go through cache_chunks (slices of the batch, or of the channels of
    a batch-last array); the values are those of one pass over a contiguous copy, and
    the result is stored like x."""
    backend = get_backend("cpu")
    x = (np.random.default_rng(0).standard_normal((64, 16, 24, 24)) * 3).astype(dtype)
    assert len(cache_chunks(backend, x)) > 1
    want = erf_array(backend, x)
    batch_last = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 0, -1)), -1, 0)
    got = erf_array(backend, batch_last)
    assert is_batch_last(got)
    np.testing.assert_array_equal(got, want)
    for view in (x.transpose(0, 1, 3, 2), x[:, ::2], x[::-1]):
        np.testing.assert_array_equal(erf_array(backend, view),
                                      erf_array(backend, np.ascontiguousarray(view)))
    np.testing.assert_array_equal(erf_array(backend, x[::-1]), want[::-1])
    half = np.asarray(0.5, dtype)
    assert erf_array(backend, half).shape == () and erf_array(backend, half).dtype == dtype
    assert erf_array(backend, half) == dtype(math.erf(0.5))
    assert erf_array(backend, np.zeros((0, 3), dtype)).shape == (0, 3)


def test_the_fitting_script_describes_the_coefficients_in_use():
    """docs/fit_erf.py (which fits the float32 coefficients; too slow to run here)
    fits for the clamp and degrees the code uses."""
    import importlib.util
    import pathlib
    from tinygrad_cnn import conv_arrays
    path = pathlib.Path(__file__).resolve().parents[1] / "docs" / "fit_erf.py"
    spec = importlib.util.spec_from_file_location("docs_fit_erf", path)
    fit_erf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit_erf)
    assert fit_erf.CLAMP == conv_arrays._ERF32_CLAMP
    assert (fit_erf.DEG_P, fit_erf.DEG_Q) == (len(conv_arrays._ERF32_P) - 1,
                                              len(conv_arrays._ERF32_Q) - 1)
    assert conv_arrays._ERF32_Q[0] == 1
    assert all(np.float32(c) == c for c in conv_arrays._ERF32_P + conv_arrays._ERF32_Q)


# ---- GELU's array code ------------------------------------------------------------------
def _gelu_points(dtype):
    """Both tails, the dense middle, tiny and huge |x| (within float32's range)."""
    x = np.concatenate([np.linspace(-9, 9, 4001), np.geomspace(1e-30, 1e30, 601)])
    return np.concatenate([x, -x]).astype(dtype)


def _gelu64(x):
    """GELU(x), Phi(x) and x phi(x), in float64 from the float64 erf (of x * sqrt(1/2),
    as PyTorch's formula: x / sqrt(2) rounds otherwise, which 1 + erf would magnify)."""
    x = np.asarray(x, np.float64)
    cdf = 0.5 * (1 + erf_array(get_backend("cpu"), x * np.sqrt(0.5)))
    return x * cdf, cdf, x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gelu_and_its_gradient_are_the_formula(dtype):
    """gelu_array and gelu_grad_array against x Phi(x) and g (Phi(x) + x phi(x)) in
    float64.  Bounds: float64, rounding differences only (x phi(x) also carries the
    rounding of x^2/2 in its exponent, relative ~x^2 eps); float32, a few ulps of x (the
    error of erf near -1 shows in 1 + erf for x < 0, as in PyTorch's same formula)."""
    backend = get_backend("cpu")
    x = _gelu_points(dtype)
    g = np.random.default_rng(0).standard_normal(x.shape).astype(dtype)
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    y, cdf, x_pdf = _gelu64(x)
    got_y, got_dx = gelu_array(backend, x), gelu_grad_array(backend, x, g)
    assert got_y.dtype == dtype and got_dx.dtype == dtype
    if dtype == np.float64:
        np.testing.assert_allclose(got_y, y, rtol=1e-15, atol=0)
        bound = 4e-16 * np.abs(g64) * (cdf + (1 + x64 * x64) * np.abs(x_pdf))
    else:
        eps = float(np.finfo(np.float32).eps)
        assert np.all(np.abs(got_y - y) <= 4 * eps * np.abs(x64) + 1e-45)
        bound = 4 * eps * np.abs(g64)
    assert np.all(np.abs(got_dx - g64 * (cdf + x_pdf)) <= bound)
    # Phi from the forward, as the backward gets it: the same values, erf not recomputed
    again_y, kept_cdf = gelu_array(backend, x, with_cdf=True)
    assert kept_cdf.dtype == dtype
    np.testing.assert_array_equal(again_y, got_y)
    np.testing.assert_array_equal(gelu_grad_array(backend, x, g, kept_cdf), got_dx)


def test_gelu_in_float16_is_the_float32_value_rounded_once():
    """Forward and backward of every finite float16, against float32 rounded."""
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    x = x[np.isfinite(x)]
    g = np.random.default_rng(0).standard_normal(x.shape).astype(np.float16)
    results = []
    for dtype in (np.float16, np.float32):
        xt = tg.tensor(x.astype(dtype), requires_grad=True)
        y = F.gelu(xt)
        y.backward(tg.tensor(g.astype(dtype)))
        assert y.dtype == dtype and xt.grad.dtype == dtype
        results.append((y.numpy(), xt.grad.numpy()))
    (y16, dx16), (y32, dx32) = results
    np.testing.assert_array_equal(y16, y32.astype(np.float16))
    np.testing.assert_array_equal(dx16, dx32.astype(np.float16))


def test_gelu_of_negative_zero_is_negative_zero_as_in_pytorch():
    for dtype in (np.float64, np.float32, np.float16):
        y = F.gelu(tg.tensor(np.array([-0.0, 0.0], dtype))).numpy()
        assert y[0] == 0 and np.signbit(y[0]) and not np.signbit(y[1])


def test_gelu_arrays_take_any_layout_and_keep_x_s():
    """Sliced by cache_chunks like erf; grad_out stored otherwise than x (or broadcast)
    gives the same values, and results are stored like x."""
    backend = get_backend("cpu")
    x = (np.random.default_rng(0).standard_normal((64, 16, 24, 24)) * 3).astype(np.float32)
    g = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    assert len(cache_chunks(backend, x)) > 1
    batch_last = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 0, -1)), -1, 0)
    want_y, want_dx = gelu_array(backend, x), gelu_grad_array(backend, x, g)
    got = gelu_array(backend, batch_last)
    assert is_batch_last(got)
    np.testing.assert_array_equal(got, want_y)
    got = gelu_grad_array(backend, batch_last, g)
    assert is_batch_last(got)
    np.testing.assert_array_equal(got, want_dx)
    np.testing.assert_array_equal(gelu_grad_array(backend, x[:, ::2], g[:, ::2]),
                                  want_dx[:, ::2])
    ones = np.broadcast_to(np.float32(1), x.shape)
    np.testing.assert_array_equal(gelu_grad_array(backend, x, ones),
                                  gelu_grad_array(backend, x, np.ones_like(x)))
    assert gelu_array(backend, np.asarray(1.5)) == _gelu64(1.5)[0]
    y, cdf = gelu_array(backend, batch_last, with_cdf=True)
    assert is_batch_last(y) and is_batch_last(cdf)
    np.testing.assert_array_equal(gelu_grad_array(backend, batch_last, g, cdf), want_dx)
    y, cdf = gelu_array(backend, np.asarray(1.5, np.float16), with_cdf=True)
    assert y.shape == cdf.shape == () and (y.dtype, cdf.dtype) == (np.float16, np.float32)
    with pytest.raises(ValueError, match=r"grad_out has shape \(3,\); expected x's shape "
                                         r"\(2, 3\)"):
        gelu_grad_array(backend, np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(ValueError, match=r"cdf has shape \(2, 1\); expected"):
        gelu_grad_array(backend, np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 1)))


# ---- the activations against torch ------------------------------------------------------
# name: fn(F, x), on tinygrad_cnn.functional and on torch.nn.functional alike
ACTIVATIONS = {
    "gelu": lambda F, x: F.gelu(x),
    "gelu_tanh": lambda F, x: F.gelu(x, approximate="tanh"),
    "silu": lambda F, x: F.silu(x),
    "mish": lambda F, x: F.mish(x),
    "elu": lambda F, x: F.elu(x),
    "elu_alpha": lambda F, x: F.elu(x, alpha=0.5),
    "selu": lambda F, x: F.selu(x),
    "celu": lambda F, x: F.celu(x, alpha=2.0),
    "softplus": lambda F, x: F.softplus(x),
    "softplus_beta": lambda F, x: F.softplus(x, beta=-2.0, threshold=5.0),
    "hardtanh": lambda F, x: F.hardtanh(x, -2.0, 3.0),
    "relu6": lambda F, x: F.relu6(x),
    "hardsigmoid": lambda F, x: F.hardsigmoid(x),
    "hardswish": lambda F, x: F.hardswish(x),
    "erf": lambda F, x: x.erf(),
}
# PyTorch's hardsigmoid backward multiplies float64 gradients by 1/6 rounded to float32.
GRAD_RTOL = {"hardsigmoid": 1e-7}


def _ours(name, values, dtype):
    x = tg.tensor(np.asarray(values, dtype=dtype), requires_grad=True)
    y = ACTIVATIONS[name](F, x)
    y.backward(tg.ones_like(y))
    return y.numpy(), x.grad.numpy()


def _torch(name, values, dtype):
    torch = pytest.importorskip("torch")
    x = torch.tensor(np.asarray(values, dtype=dtype), requires_grad=True)
    y = ACTIVATIONS[name](torch.nn.functional, x)
    y.backward(torch.ones_like(y))
    return y.detach().numpy(), x.grad.numpy()


EXTREMES = [-1e4, -1e3, -100.0, -30.0, -5.0, 5.0, 30.0, 100.0, 1e3, 1e4]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_large_inputs_match_torch_without_overflow(name, dtype):
    """+-1e4 reach every tail: no overflow or NaN on the way (softplus, elu and celu
    compute no unused e^x; mish's softplus is stable), and torch's values."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, g = _ours(name, EXTREMES, dtype)
    t_y, t_g = _torch(name, EXTREMES, dtype)
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(y, t_y, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(g, t_g, rtol=max(rtol, GRAD_RTOL.get(name, 0)), atol=rtol)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_infinite_inputs_match_torch_where_it_defines_them(name):
    """At +-inf torch gives NaN where x * 0 arises (gelu, silu, mish: a value or a
    gradient); elsewhere the same limits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # inf * 0 on the way to NaN, as in torch
        y, g = _ours(name, [np.inf, -np.inf], np.float64)
    t_y, t_g = _torch(name, [np.inf, -np.inf], np.float64)
    defined = ~np.isnan(t_y)
    np.testing.assert_array_equal(y[defined], t_y[defined])
    defined = ~np.isnan(t_g)
    np.testing.assert_array_equal(g[defined], t_g[defined])


# name: the points where the gradient has a kink (or, for softplus, the switch to its
# linear region: x = threshold / beta)
KINKS = {
    "hardtanh": (lambda F, x: F.hardtanh(x, -0.5, 0.8), [-0.5, 0.8]),
    "relu6": (lambda F, x: F.relu6(x), [0.0, 6.0]),
    "hardsigmoid": (lambda F, x: F.hardsigmoid(x), [-3.0, 3.0]),
    "hardswish": (lambda F, x: F.hardswish(x), [-3.0, 3.0]),
    "elu_alpha2": (lambda F, x: F.elu(x, alpha=2.0), [0.0]),
    "elu_alpha_half": (lambda F, x: F.elu(x, alpha=0.5), [0.0]),
    "selu": (lambda F, x: F.selu(x), [0.0]),
    "celu": (lambda F, x: F.celu(x, alpha=2.0), [0.0]),   # (continuous slope: 1)
    "softplus": (lambda F, x: F.softplus(x, beta=2.0, threshold=3.0), [1.5]),
}


@pytest.mark.parametrize("name", sorted(KINKS))
def test_gradients_at_kinks_are_torchs(name):
    """Finite differences cannot tell which side an op takes at a kink; torch can."""
    torch = pytest.importorskip("torch")
    fn, points = KINKS[name]
    values = sorted(points + [p + d for p in points for d in (-0.25, 0.25)])
    x = tg.tensor(values, dtype=tg.float64, requires_grad=True)
    fn(F, x).sum().backward()
    tx = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    fn(torch.nn.functional, tx).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-7, atol=0)


def test_softplus_stays_finite_where_torchs_overflows():
    """Above the threshold both are x; with a threshold too large to be reached, torch's
    log1p(exp(x)) overflows to inf (and its gradient to NaN), this one gives x and 1."""
    x = tg.tensor([800.0, 1e4], dtype=tg.float64, requires_grad=True)
    y = F.softplus(x, threshold=float("inf"))
    y.sum().backward()
    np.testing.assert_array_equal(y.numpy(), [800.0, 1e4])
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])


def test_mish_uses_the_stable_softplus():
    x = tg.tensor([-800.0, 800.0], dtype=tg.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(F.mish(x).numpy(), [-0.0, 800.0])


# ---- nn modules -------------------------------------------------------------------------
# name: (ours, torch's on torch.nn, PyTorch's repr)
MODULES = {
    "GELU": (lambda: nn.GELU(), lambda T: T.GELU(), "GELU(approximate='none')"),
    "GELU-tanh": (lambda: nn.GELU(approximate="tanh"), lambda T: T.GELU(approximate="tanh"),
                  "GELU(approximate='tanh')"),
    "SiLU": (lambda: nn.SiLU(), lambda T: T.SiLU(), "SiLU()"),
    "Mish": (lambda: nn.Mish(), lambda T: T.Mish(), "Mish()"),
    "ELU": (lambda: nn.ELU(), lambda T: T.ELU(), "ELU(alpha=1.0)"),
    "ELU-alpha": (lambda: nn.ELU(0.5), lambda T: T.ELU(0.5), "ELU(alpha=0.5)"),
    "SELU": (lambda: nn.SELU(), lambda T: T.SELU(), "SELU()"),
    "CELU": (lambda: nn.CELU(alpha=2), lambda T: T.CELU(alpha=2), "CELU(alpha=2)"),
    "Softplus": (lambda: nn.Softplus(), lambda T: T.Softplus(),
                 "Softplus(beta=1.0, threshold=20.0)"),
    "Softplus-args": (lambda: nn.Softplus(2.0, 3), lambda T: T.Softplus(2.0, 3),
                      "Softplus(beta=2.0, threshold=3)"),
    "Hardtanh": (lambda: nn.Hardtanh(), lambda T: T.Hardtanh(),
                 "Hardtanh(min_val=-1.0, max_val=1.0)"),
    "Hardtanh-args": (lambda: nn.Hardtanh(-2, 3.5), lambda T: T.Hardtanh(-2, 3.5),
                      "Hardtanh(min_val=-2, max_val=3.5)"),
    "ReLU6": (lambda: nn.ReLU6(), lambda T: T.ReLU6(), "ReLU6()"),
    "Hardsigmoid": (lambda: nn.Hardsigmoid(), lambda T: T.Hardsigmoid(), "Hardsigmoid()"),
    "Hardswish": (lambda: nn.Hardswish(), lambda T: T.Hardswish(), "Hardswish()"),
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_repr_and_no_parameters(name):
    ours, _, text = MODULES[name]
    m = ours()
    assert repr(m) == text
    assert list(m.parameters()) == [] and list(m.buffers()) == [] and m.state_dict() == {}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_repr_is_torchs(name):
    torch = pytest.importorskip("torch")
    ours, theirs, _ = MODULES[name]
    assert repr(ours()) == repr(theirs(torch.nn))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_matches_torch(name, dtype):
    torch = pytest.importorskip("torch")
    ours, theirs, _ = MODULES[name]
    rng = np.random.default_rng(0)
    a = (4 * rng.standard_normal((2, 3, 4, 5))).astype(dtype)
    g = rng.standard_normal(a.shape).astype(dtype)
    x, tx = tg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    y, ty = ours()(x), theirs(torch.nn)(tx)
    y.backward(tg.tensor(g))
    ty.backward(torch.tensor(g))
    assert y.dtype == dtype
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=rtol, atol=rtol)
    grad_rtol = max(rtol, GRAD_RTOL.get(name.lower(), 0))
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=grad_rtol, atol=rtol)


def test_relu6_is_a_hardtanh_as_in_pytorch():
    m = nn.ReLU6()
    assert isinstance(m, nn.Hardtanh) and (m.min_val, m.max_val) == (0.0, 6.0)


def test_modules_run_on_every_device(device):
    model = nn.Sequential(*(make() for make, _, _ in MODULES.values()))
    x = np.random.default_rng(1).standard_normal((2, 3, 4))
    want = model(tg.tensor(x)).numpy()
    np.testing.assert_allclose(model(tg.tensor(x, device=device)).numpy(), want,
                               rtol=1e-12, atol=1e-12)


def test_summary_passes_the_receptive_field_through_the_activations():
    layers = [make() for make, _, _ in MODULES.values()]
    model = nn.Sequential(nn.Conv2d(1, 2, 3), *layers, nn.Conv2d(2, 1, 3))
    s = nn.summary(model, (1, 1, 9, 9))
    assert [r["type"] for r in s.rows[1:-1]] == [type(m).__name__ for m in layers]
    assert all(r["receptive_field"] == (3, 3) for r in s.rows[:-1])
    assert s.receptive_field == (5, 5)


def test_exported_where_pytorch_has_them():
    for name in ["gelu", "silu", "mish", "elu", "selu", "celu", "softplus", "hardtanh", "relu6",
                 "hardsigmoid", "hardswish"]:
        assert name in F.__all__ and callable(getattr(F, name))
    for name in ["GELU", "SiLU", "Mish", "ELU", "SELU", "CELU", "Softplus", "Hardtanh", "ReLU6",
                 "Hardsigmoid", "Hardswish"]:
        assert name in nn.__all__ and issubclass(getattr(nn, name), nn.Module)
    with pytest.raises(AttributeError, match=r"use x\.erf\(\.\.\.\)"):
        tg.erf   # as for torch.exp: a Tensor method here


def test_the_readme_lists_every_activation_and_layer():
    import pathlib
    import re
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")
    said = re.search(r"^The activations are PyTorch's.*?(?=^\n)", readme, re.S | re.M)
    assert said, "the README should list the activations"
    names = re.findall(r"`(\w+)`", said.group(0).split("as `nn` layers")[0])
    layers = re.findall(r"`nn\.(\w+)`", said.group(0))
    assert set(names) - {"functional", "none", "beta", "threshold"} == {
        "relu", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax", "gelu", "silu",
        "mish", "elu", "selu", "celu", "softplus", "hardtanh", "relu6", "hardsigmoid",
        "hardswish"}
    assert set(names) - {"functional", "none", "beta", "threshold"} <= set(F.__all__)
    assert all(issubclass(getattr(nn, name), nn.Module) for name in layers)
    assert {name for name in MODULES if "-" not in name} <= set(layers)


# ---- bad arguments ----------------------------------------------------------------------
_X = tg.tensor([-1.0, 0.5])


@pytest.mark.parametrize("name", sorted(set(ACTIVATIONS) - {"erf"}))
@pytest.mark.parametrize("dtype", ["int64", "bool"])
def test_integer_and_bool_inputs_are_refused(name, dtype):
    """As PyTorch's kernels refuse them (its hardtanh and relu6 take integers: not here)."""
    op = name.split("_")[0]
    with pytest.raises(TypeError, match=rf"^{op}: x has dtype {dtype}; expected a float dtype "
                                        r"\(float32 or float64: convert with x\.float\(\)\)"):
        ACTIVATIONS[name](F, tg.tensor(np.ones(3, dtype=dtype)))


@pytest.mark.parametrize("call, error, match", [
    (lambda: F.gelu(_X, approximate="erf"), ValueError,
     r"^gelu: approximate must be 'none' or 'tanh', got 'erf'"),
    (lambda: F.gelu(_X, approximate=None), ValueError, r"approximate must be .* got None"),
    (lambda: nn.GELU("Tanh"), ValueError, r"^GELU: approximate must be 'none' or 'tanh'"),
    (lambda: F.elu(_X, alpha="1"), TypeError, r"^elu: alpha must be a number, got '1' \(str\)"),
    (lambda: F.elu(_X, True), TypeError, r"^elu: alpha must be a number, got True"),
    (lambda: nn.ELU(float("nan")), ValueError, r"^ELU: alpha must be a number, got nan"),
    (lambda: F.celu(_X, alpha=0), ValueError, r"^celu: alpha must not be 0 \(it divides\)"),
    (lambda: nn.CELU(0.0), ValueError, r"^CELU: alpha must not be 0"),
    (lambda: F.softplus(_X, beta=0), ValueError, r"^softplus: beta must not be 0"),
    (lambda: F.softplus(_X, beta="2"), TypeError, r"^softplus: beta must be a number, got '2'"),
    (lambda: F.softplus(_X, threshold=None), TypeError,
     r"^softplus: threshold must be a number, got None"),
    (lambda: nn.Softplus(threshold=[20]), TypeError, r"^Softplus: threshold must be a number"),
    (lambda: F.hardtanh(_X, 1.0, -1.0), ValueError,
     r"^hardtanh: min_val \(1\.0\) must not be greater than max_val \(-1\.0\)"),
    (lambda: nn.Hardtanh(2, 1), ValueError, r"^Hardtanh: min_val \(2\) must not be greater"),
    (lambda: nn.Hardtanh(min_val="a"), TypeError, r"^Hardtanh: min_val must be a number"),
    (lambda: F.elu(_X, alpha=tg.tensor(2.0, requires_grad=True)), TypeError,
     r"^elu: alpha must be a number, got a tensor that requires grad"),
    (lambda: F.relu6(_X, inplace=True), ValueError,
     r"^relu6: inplace=True is not supported .*; drop the argument"),
    (lambda: nn.Hardswish(inplace=True), ValueError, r"^Hardswish: inplace=True is not supported"),
    (lambda: nn.ReLU6(True), ValueError, r"^ReLU6: inplace=True is not supported"),
    (lambda: nn.SiLU(inplace="yes"), TypeError, r"^SiLU: inplace must be True or False"),
    (lambda: nn.ReLU(inplace=True), ValueError, r"^ReLU: inplace=True is not supported"),
    (lambda: nn.LeakyReLU(0.1, True), ValueError, r"^LeakyReLU: inplace=True is not supported"),
    (lambda: nn.Dropout(0.2, inplace=True), ValueError, r"^Dropout: inplace=True is not"),
    (lambda: F.relu(_X, inplace=True), ValueError, r"^relu: inplace=True is not supported"),
    (lambda: F.leaky_relu(_X, inplace=True), ValueError, r"^leaky_relu: inplace=True is not"),
    (lambda: F.dropout(_X, 0.2, True, True), ValueError, r"^dropout: inplace=True is not"),
    (lambda: F.silu(np.ones(3)), TypeError, r"^silu: x must be a Tensor, got ndarray"),
    (lambda: nn.Mish()([1.0]), TypeError, r"^Mish expects a Tensor, got list"),
], ids=lambda v: None)
def test_bad_arguments_say_what_was_expected(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_numbers_may_be_0d_tensors_and_inplace_false_is_accepted():
    want = F.elu(_X, 2.0).numpy()
    np.testing.assert_array_equal(F.elu(_X, tg.tensor(2.0)).numpy(), want)
    np.testing.assert_array_equal(F.elu(_X, np.float64(2.0), inplace=np.False_).numpy(), want)
    assert repr(nn.ELU(np.float64(2.0))) == "ELU(alpha=2.0)"
    np.testing.assert_array_equal(nn.ReLU6(inplace=False)(_X).numpy(), F.relu6(_X).numpy())
    relu = F.relu(_X).numpy()
    np.testing.assert_array_equal(nn.ReLU(inplace=False)(_X).numpy(), relu)
    np.testing.assert_array_equal(F.relu(_X, inplace=False).numpy(), relu)
    np.testing.assert_array_equal(nn.LeakyReLU(0.1, False)(_X).numpy(),
                                  F.leaky_relu(_X, 0.1).numpy())
    np.testing.assert_array_equal(nn.Dropout(0.5, inplace=False).eval()(_X).numpy(), _X.numpy())
