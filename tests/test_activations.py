"""The erf that GELU stands on.

Its op's concerns run in ``test_ops``' table (gradcheck, gradgradcheck, NumPy in
float32 and float64, every device, upstream gradients in any layout).  Here:
erf against ``math.erf`` on a dense grid with both tails, tiny and huge |x|, in
float64 and float32, its symmetry and special values, and its array code on any
memory layout.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn.backend import get_backend
from tinygrad_cnn.conv_arrays import cache_chunks, erf_array, is_batch_last


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


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_erf_in_narrow_dtypes_is_the_exact_value_rounded(dtype):
    """Computed in float64 and rounded once: the float32 (float16) nearest erf(x), but
    where erf(x) lies within ~1e-16 of a tie (not on this grid; 1 ulp off there)."""
    with np.errstate(over="ignore"):
        x = _erf_grid().astype(dtype)   # (huge values become inf: erf 1)
    got = tg.tensor(x).erf()
    assert got.dtype == dtype
    want = _math_erf(x.astype(np.float64)).astype(dtype)
    np.testing.assert_array_equal(got.numpy(), want)


def test_erf_is_odd_and_keeps_its_special_values():
    x = _erf_grid()
    np.testing.assert_array_equal(tg.tensor(-x).erf().numpy(), -tg.tensor(x).erf().numpy())
    special = tg.tensor([np.inf, -np.inf, np.nan, 0.0, -0.0]).erf().numpy()
    np.testing.assert_array_equal(special[:2], [1.0, -1.0])
    assert np.isnan(special[2])
    assert special[3] == 0 and not np.signbit(special[3]) and np.signbit(special[4])


def test_erf_of_integers_is_float32_as_in_pytorch():
    y = tg.tensor([0, 1, -2]).erf()
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.numpy(), np.float32([0.0, math.erf(1), math.erf(-2)]))


def test_erf_is_the_same_on_every_device(device):
    x = np.concatenate([_erf_grid()[::7], [np.inf, -np.inf, np.nan]])
    got = tg.tensor(x, device=device).erf().numpy()
    want = tg.tensor(x).erf().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)   # NaN where NaN


def test_erf_gradient_is_the_gaussian():
    x = tg.tensor(np.linspace(-6, 6, 101), requires_grad=True)
    x.erf().sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 / np.sqrt(np.pi) * np.exp(-x.numpy() ** 2),
                               rtol=1e-15, atol=0)


def test_erf_array_takes_any_layout_and_keeps_it():
    """Large arrays go through cache_chunks (slices of the batch, or of the channels of
    a batch-last array); the values are those of one pass over a contiguous copy, and
    the result is stored like x."""
    backend = get_backend("cpu")
    x = np.random.default_rng(0).standard_normal((64, 8, 24, 24)) * 3
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
    assert erf_array(backend, np.asarray(0.5)).shape == ()
    assert erf_array(backend, np.asarray(0.5)) == math.erf(0.5)
    assert erf_array(backend, np.zeros((0, 3))).shape == (0, 3)
