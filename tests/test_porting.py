"""Code ported from PyTorch: its argument names and its Tensor and function names.

The Tensor follows NumPy (README, "Conventions"); PyTorch's ``dim`` and ``keepdim``
are accepted as aliases of ``axis`` and ``keepdims``, and a PyTorch name that does not
exist here fails with an AttributeError naming what does the same here.  Every hint
that says "use CODE" is run here and compared with what PyTorch gives.
"""
from __future__ import annotations

import copy
import inspect
import pydoc
import re
import types

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn._porting import (
    MODULE_HINTS, NN_HINTS, NN_MODULE_HINTS, TENSOR_HINTS, _Missing)


def R(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---- keepdim, PyTorch's name for keepdims ----------------------------------------------
KEEPDIM_CASES = [
    ("sum", 1), ("sum", (0, 2)), ("sum", None), ("mean", -1), ("mean", (0, 1)),
    ("var", 1), ("var", None), ("std", (0, 2)), ("std", 2), ("max", 1), ("max", (0, 2)),
    ("min", 0), ("min", None), ("argmax", 1), ("argmax", None), ("argmin", -1),
    ("logsumexp", 1), ("logsumexp", (0, 2)), ("logsumexp", None),
]
TORCH_NAME = {"max": "amax", "min": "amin"}   # over several axes: torch's amax


def _pair(method, dim):
    """Does PyTorch's spelling give PyTorch's (values, indices) pair here?"""
    return method in ("max", "min") and isinstance(dim, int)


def _case_id(case):
    method, dim = case
    return f"{method}-{dim}".replace(" ", "")


@pytest.mark.parametrize("keepdim", [True, False])
@pytest.mark.parametrize("method, dim", KEEPDIM_CASES, ids=map(_case_id, KEEPDIM_CASES))
def test_keepdim_gives_what_keepdims_gives(method, dim, keepdim, device):
    x = tg.tensor(R(2, 3, 4), device=device)
    ours = getattr(x, method)(dim=dim, keepdim=keepdim)
    mixed = getattr(x, method)(dim, keepdim=keepdim)   # axis with keepdim: any mix of names
    want = getattr(x, method)(axis=dim, keepdims=keepdim)
    if _pair(method, dim):   # max(dim=...) is PyTorch's (values, indices)
        indices = getattr(x, "arg" + method)(axis=dim, keepdims=keepdim)
        for pair in (ours, mixed):
            assert isinstance(pair, tuple) and pair.indices.dtype == np.int64
            np.testing.assert_array_equal(pair.indices.numpy(), indices.numpy())
        ours, mixed = ours.values, mixed[0]
    assert (ours.shape, ours.dtype) == (want.shape, want.dtype)
    np.testing.assert_array_equal(ours.numpy(), want.numpy())
    np.testing.assert_array_equal(mixed.numpy(), want.numpy())


@pytest.mark.parametrize("keepdim", [True, False])
@pytest.mark.parametrize("method, dim", KEEPDIM_CASES, ids=map(_case_id, KEEPDIM_CASES))
def test_keepdim_matches_torch(method, dim, keepdim):
    torch = pytest.importorskip("torch")
    if method == "logsumexp" and dim is None:
        pytest.skip("torch's logsumexp needs a dim")
    a = R(2, 3, 4).astype(np.float64)
    ours = getattr(tg.tensor(a), method)(dim=dim, keepdim=keepdim)
    if _pair(method, dim):
        theirs = getattr(torch.tensor(a), method)(dim=dim, keepdim=keepdim)
        np.testing.assert_array_equal(ours.indices.numpy(), theirs.indices.numpy())
        ours, theirs = ours.values, theirs.values
    else:
        theirs = getattr(torch.tensor(a), TORCH_NAME.get(method, method))(dim=dim,
                                                                          keepdim=keepdim)
    assert ours.shape == tuple(theirs.shape)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)


# ---- var and std: PyTorch's unbiased=, and no ambiguous second positional -------------
@pytest.mark.parametrize("method", ["var", "std"])
def test_unbiased_is_pytorchs_name_for_correction(method, device):
    x = tg.tensor(R(3, 4).astype(np.float64), device=device)
    f = getattr(x, method)
    np.testing.assert_array_equal(f(1, unbiased=False).numpy(), f(1, correction=0).numpy())
    np.testing.assert_array_equal(f(unbiased=True).numpy(), f().numpy())
    np.testing.assert_array_equal(f(dim=0, unbiased=np.False_, keepdim=True).numpy(),
                                  f(axis=0, correction=0, keepdims=True).numpy())
    with pytest.raises(TypeError, match=rf"{method}: give either correction or unbiased"):
        f(1, correction=0, unbiased=False)
    with pytest.raises(TypeError, match=rf"{method}: unbiased must be True or False"):
        f(1, unbiased=0)
    # x.var(1, False) is unbiased=False in PyTorch: refused rather than read as keepdims
    with pytest.raises(TypeError, match=rf"^{method}: only the axis may be positional, got "
                                        r"\(False,\) after it"):
        f(1, False)


@pytest.mark.parametrize("method", ["var", "std"])
def test_unbiased_matches_torch(method):
    torch = pytest.importorskip("torch")
    a = R(3, 4).astype(np.float64)
    for unbiased in (True, False):
        ours = getattr(tg.tensor(a), method)(dim=1, unbiased=unbiased)
        theirs = getattr(torch.tensor(a), method)(dim=1, unbiased=unbiased)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-14)


# ---- orderings and rounding, PyTorch's names --------------------------------------------
TIES = np.array([[3.0, 1.0, 2.0, 1.0, 3.0], [0.0, np.nan, 5.0, 5.0, -1.0],
                 [2.0, 2.0, 2.0, 2.0, 2.0]])


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("dim", [0, 1])
def test_sort_and_argsort_match_torchs_stable_sort_with_ties_and_nan(dim, descending, device):
    torch = pytest.importorskip("torch")
    x = tg.tensor(TIES, device=device)
    theirs = torch.tensor(TIES).sort(dim=dim, descending=descending, stable=True)
    ours = x.sort(dim=dim, descending=descending)
    assert isinstance(ours, tuple) and ours._fields == ("values", "indices")
    assert ours.indices.dtype == np.int64
    np.testing.assert_array_equal(ours.indices.numpy(), theirs.indices.numpy())
    np.testing.assert_array_equal(ours.values.numpy(), theirs.values.numpy())
    np.testing.assert_array_equal(x.argsort(dim, descending=descending).numpy(),
                                  theirs.indices.numpy())
    if not descending:   # NumPy's stable argsort
        np.testing.assert_array_equal(x.argsort(axis=dim).numpy(),
                                      np.argsort(TIES, axis=dim, kind="stable"))


@pytest.mark.parametrize("largest", [True, False])
def test_topk_matches_torch_and_takes_ties_first_to_last(largest, device):
    torch = pytest.importorskip("torch")
    a = np.nan_to_num(TIES)
    ours = tg.tensor(a, device=device).topk(3, largest=largest)
    theirs = torch.tensor(a).topk(3, largest=largest)
    np.testing.assert_array_equal(ours.values.numpy(), theirs.values.numpy())
    stable = torch.tensor(a).sort(descending=largest, stable=True).indices[:, :3]
    np.testing.assert_array_equal(ours.indices.numpy(), stable.numpy())
    values, indices = tg.tensor(a).topk(2, dim=0)
    np.testing.assert_array_equal(values.numpy(), torch.tensor(a).topk(2, dim=0).values.numpy())


def test_sorted_values_send_the_gradient_where_they_came_from(device):
    x = tg.tensor([[3.0, 1.0, 2.0]], requires_grad=True, device=device)
    (x.sort().values * tg.tensor([[10.0, 20.0, 30.0]], device=device)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[30.0, 10.0, 20.0]])
    x.grad = None
    x.topk(1).values.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1.0, 0.0, 0.0]])


def test_flip_roll_cumsum_round_match_torch():
    torch = pytest.importorskip("torch")
    a = np.array([[-2.5, -1.5, -0.5, 0.5], [1.5, 2.5, 0.49, -3.7]])
    x, t = tg.tensor(a), torch.tensor(a)
    pairs = [(x.flip(dims=(0, 1)), t.flip(dims=(0, 1))), (x.flip(1), t.flip(1)),
             (x.roll(3, dims=1), t.roll(3, dims=1)), (x.roll((1, -1), (0, 1)),
                                                      t.roll((1, -1), (0, 1))),
             (x.roll(5), t.roll(5)), (x.cumsum(dim=1), t.cumsum(dim=1)),
             (x.round(), t.round()), (x.round(1), t.round(decimals=1)),
             (x.floor(), t.floor()), (x.ceil(), t.ceil()), (x.abs().log1p(), t.abs().log1p()),
             (x.expm1(), t.expm1()),
             # PyTorch's varargs and keyword forms
             (x.flip(0, 1), t.flip(0, 1)), (x.roll(shifts=1, dims=0), t.roll(shifts=1, dims=0)),
             (x.roll(shifts=(1, 2), dims=(0, 1)), t.roll(shifts=(1, 2), dims=(0, 1)))]
    for ours, theirs in pairs:
        assert ours.shape == tuple(theirs.shape)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-15)
    ints = np.array([[1, 2], [3, 4]], np.int32)
    assert tg.tensor(ints).cumsum(1).dtype == np.int64 == np.cumsum(ints, 1).dtype
    assert str(torch.tensor(ints).cumsum(1).dtype) == "torch.int64"
    assert tg.tensor(ints).floor().dtype == np.int32   # whole already: a copy, as in NumPy


def test_prod_and_its_first_and_second_gradients_match_torch_at_zeros(device):
    """x.prod(dim) as torch.prod: values, gradients and a Hessian-vector product, in
    rows holding no zero, one, two and only zeros (the gradient at a lone zero is the
    product of the others, which y / x would make NaN)."""
    torch = pytest.importorskip("torch")
    a = np.array([[0.5, -2.0, 1.5, 3.0], [0.5, 0.0, 1.5, 3.0], [0.0, -2.0, 0.0, 3.0],
                  [0.0, 0.0, 0.0, 0.0]])
    u, v = np.array([1.0, -2.0, 0.5, 3.0]), np.linspace(-1.0, 1.0, 16).reshape(4, 4)
    x = tg.tensor(a, requires_grad=True, device=device)
    (g,) = tg.grad(x.prod(dim=1), [x], tg.tensor(u, device=device), create_graph=True)
    (h,) = tg.grad((g * tg.tensor(v, device=device)).sum(), [x])
    t = torch.tensor(a, requires_grad=True)
    (tgrad,) = torch.autograd.grad(t.prod(dim=1), [t], torch.tensor(u), create_graph=True)
    (th,) = torch.autograd.grad((tgrad * torch.tensor(v)).sum(), [t])
    np.testing.assert_array_equal(x.prod(1).numpy(), t.prod(1).detach().numpy())
    np.testing.assert_allclose(g.numpy(), tgrad.detach().numpy(), rtol=1e-15)
    np.testing.assert_allclose(h.numpy(), th.numpy(), rtol=1e-15)
    assert g.numpy()[1, 1] == 1.5 * 0.5 * 3.0 * -2.0 and np.isfinite(h.numpy()).all()


def test_a_prod_gradient_is_finite_where_its_prefix_products_are(device):
    """float32 elements whose pairwise products overflow (1e20 * 1e20) or underflow
    while every running product from either end stays in range: the gradient is the
    exact product of the others, as PyTorch's (a scan that multiplies elements in
    pairs gave inf and 0)."""
    a = np.array([[1e-30, 1e20, 1e20, 2.0], [1e30, 1e-25, 1e-25, 2.0]], np.float32)
    x = tg.tensor(a, requires_grad=True, device=device)
    x.prod(1).sum().backward()
    want = np.array([[np.inf, 2e-10, 2e-10, 1e10], [5e-50, 2e5, 2e5, 1e-20]])
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(x.grad.numpy(), want.astype(np.float32), rtol=1e-5)


@pytest.mark.parametrize("dtype", ["bool", "int8", "uint8", "int16", "int32", "int64"])
def test_integer_sums_products_and_running_sums_take_numpys_dtype(dtype, device):
    """NumPy's accumulators, as the README says: int64 for bool and signed integers,
    uint64 for unsigned ones (PyTorch: int64 for all, so a uint8 tensor's differ)."""
    torch = pytest.importorskip("torch")
    a = (np.arange(12).reshape(3, 4) % 3 + 1).astype(dtype)
    x = tg.tensor(a, device=device)
    for ours, want, theirs in [
            (x.sum(), a.sum(), torch.tensor(a).sum()),
            (x.prod(1), a.prod(1), torch.tensor(a).prod(1)),
            (x.cumsum(), np.cumsum(a), torch.tensor(a).flatten().cumsum(0)),
            (x.cumsum(dim=1), np.cumsum(a, 1), torch.tensor(a).cumsum(1)),
            (x[0, 0].cumsum(0), np.cumsum(a[0, 0], 0).reshape(()), None)]:
        assert ours.dtype == want.dtype == (np.uint64 if dtype == "uint8" else np.int64)
        np.testing.assert_array_equal(ours.numpy(), want)
        if theirs is not None:
            assert str(theirs.dtype) == "torch.int64"
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_round_to_tens_rounds_an_integer_tensor_as_numpy_does(device):
    """decimals < 0 rounds integers (NumPy; PyTorch rounds no integer tensor), halves to
    the even multiple, in the tensor's dtype (an integer tensor was returned as it was)."""
    a = np.array([1234, 1250, 1350, -1250, -1251, 49, 50, 150, 0, 9_223_372_036_854_775_000])
    ours = tg.tensor(a, device=device).round(decimals=-2)
    assert ours.dtype == np.int64
    # exact where NumPy's, through float64, is not (it gives 9223372036854774784 there)
    np.testing.assert_array_equal(ours.numpy()[:-1], np.round(a, -2)[:-1])
    assert ours.numpy()[-1] == 9_223_372_036_854_775_000
    u8 = np.array([245, 250, 15, 25, 104], np.uint8)
    np.testing.assert_array_equal(tg.tensor(u8, device=device).round(-1).numpy(),
                                  np.round(u8, -1))
    i8 = tg.tensor(np.array([-125, 115, 49], np.int8), device=device)
    assert i8.round(-1).tolist() == [-120, 120, 50] and i8.round(-3).tolist() == [0, 0, 0]
    assert i8.round(-1).dtype == np.int8 and i8.round(2).tolist() == [-125, 115, 49]
    # Far beyond any int64: zeros, at once (10 ** 10**7 is not built).
    assert tg.tensor([5, -7], device=device).round(-10**7).tolist() == [0, 0]


@pytest.mark.parametrize("a, decimals", [
    (np.array([127], np.int8), -1), (np.array([-128, 0], np.int8), -1),
    (np.array([0, 255], np.uint8), -1), (np.array([2**63 - 1]), -1), (np.array([6 * 10**18]), -19),
])
def test_round_to_tens_refuses_a_result_beyond_the_dtype(a, decimals):
    # NumPy wraps these around: an int8 127 to tens gives -126
    with pytest.raises(OverflowError, match=rf"round: a value of the {a.dtype} tensor of "
                                            rf"shape \({a.size},\) rounds \(to decimals="
                                            rf"{decimals}\) beyond the dtype's range"):
        tg.tensor(a).round(decimals)
    with pytest.raises(TypeError, match=r"round: a bool tensor of shape \(2,\) cannot be "
                                        r"rounded to decimals=-1"):
        tg.tensor([True, False]).round(-1)


def test_a_sort_asked_to_be_unstable_is_stable():
    x = tg.tensor(TIES)
    for descending in (False, True):
        want = x.sort(1, descending)
        got = x.sort(1, descending, stable=False)
        np.testing.assert_array_equal(got.indices.numpy(), want.indices.numpy())
        np.testing.assert_array_equal(x.argsort(1, descending, stable=False).numpy(),
                                      want.indices.numpy())


def test_max_of_a_0d_tensor_with_dim_is_pytorchs_pair():
    torch = pytest.importorskip("torch")
    for method in ("max", "min"):
        ours = getattr(tg.tensor(2.5), method)(dim=0)
        theirs = getattr(torch.tensor(2.5), method)(dim=0)
        assert isinstance(ours, tuple) and ours.values.item() == theirs.values.item()
        assert ours.indices.item() == theirs.indices.item() == 0
        assert ours.indices.dtype == np.int64 and ours.values.shape == ()


def test_roll_takes_its_shift_once():
    x = tg.ones(3)
    with pytest.raises(TypeError, match=r"roll: give the shift once, as shift \(NumPy's name\) "
                                        r"or shifts \(PyTorch's\), got shift=1, shifts=2"):
        x.roll(1, shifts=2)
    with pytest.raises(TypeError, match="got shift=None, shifts=None"):
        x.roll(dims=0)


@pytest.mark.parametrize("call", ["x.argsort()", "x.sort().indices", "x.topk(1).indices"])
def test_orderings_of_a_0d_tensor_allocate_on_its_device(call, device):
    # On "strict2" (a second GPU, not the current one) an allocation outside the
    # tensor's device context fails, as CuPy's would land on the wrong device.
    out = eval(call, {"x": tg.tensor(2.5, device=device)})
    assert out.shape == () and out.dtype == np.int64 and out.device == device
    assert out.item() == 0


@pytest.mark.parametrize("call", ["x.roll(0, 0)", "x.roll(3, 0)", "x.flip(())",
                                  "x[0].sort().values", "x[1:].sort(descending=True).values"])
def test_orderings_keep_a_bool_tensors_dtype(call, device):
    torch = pytest.importorskip("torch")
    a = np.array([True, False, True])
    ours = eval(call, {"x": tg.tensor(a, device=device)})
    theirs = eval(call, {"x": torch.tensor(a)})
    assert ours.dtype == np.bool_, call   # x * 1 had made these int64
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_cumsum_of_float16_accumulates_in_float32_as_torch(device):
    torch = pytest.importorskip("torch")
    a = np.full((2, 3000), 1.0, np.float16)
    a[1] = 0.1
    x = tg.tensor(a, requires_grad=True, device=device)
    ours, theirs = x.cumsum(dim=1), torch.tensor(a).cumsum(dim=1)
    assert ours.dtype == np.float16
    # float16's own running sum of ones stops at 2048, of 0.1 at 256
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    ours.backward(tg.ones(ours.shape, dtype=tg.float16, device=device))   # (ours.sum() is inf)
    np.testing.assert_array_equal(x.grad.numpy()[:, [0, -1]], [[3000, 1], [3000, 1]])


def test_rounding_has_no_gradient_like_sign():
    x = tg.tensor([0.3, 1.7], requires_grad=True)
    for name in ("floor", "ceil", "round", "sign"):
        assert not getattr(x, name)().requires_grad


def test_log1p_and_expm1_keep_small_arguments():
    x = tg.tensor([1e-10, -1e-12], dtype=tg.float64)
    np.testing.assert_allclose(x.log1p().numpy(), np.log1p(x.numpy()), rtol=1e-15)
    np.testing.assert_allclose(x.expm1().numpy(), np.expm1(x.numpy()), rtol=1e-15)
    assert x.log1p().numpy()[0] != (x + 1).log().numpy()[0]


@pytest.mark.parametrize("call, error, message", [
    ("x.topk(4)", ValueError, r"topk: k=4 exceeds the 3 elements along axis 1 of a tensor "
                              r"of shape \(2, 3\)"),
    ("x.topk(1, dim=2)", ValueError, "topk: axis 2 is out of range"),
    ("x.topk(1.5)", TypeError, "topk: k"),
    ("x.sort(1, True, stable='no')", TypeError, "argsort: stable must be True or False"),
    ("x.argsort(descending=1)", TypeError, "descending"),
    ("x.roll((1, 2), axis=(0,))", ValueError, r"roll: shift \(1, 2\) and axis \(0,\) must "
                                              r"have the same length"),
    ("x.roll((1, 2))", ValueError, "roll: without an axis, shift must be one int"),
    ("x.roll(0.5, 1)", TypeError, "roll: shift"),
    ("x.flip(0, dims=1)", TypeError, "flip: give either axis or dim"),
    ("x.cumsum(2)", ValueError, "cumsum: axis 2 is out of range"),
    ("x.round(0.5)", TypeError, "round: decimals"),
])
def test_ordering_ops_refuse_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        eval(call, {"x": tg.ones(2, 3)})


# ---- the hints, as the user sees them -------------------------------------------------
HINT_MESSAGES = [
    ("x.numel()", "'Tensor' object has no attribute 'numel' (a PyTorch name; this Tensor "
                  "follows NumPy): use x.size"),
    ("x.dim()", "has no attribute 'dim' (a PyTorch name; this Tensor follows NumPy): use x.ndim"),
    ("x.t()", ": use x.T"),
    ("x.long()", ": use x.astype(tg.int64)"),
    ("x.masked_fill(x > 0, 0.0)", ": use tg.where(mask, value, x)"),
    ("x.clone()", ": use x * 1 (a new tensor in the graph"),
    ("x.eq(x)", ": use x == other"),
    ("x.amax(1)", ": use x.max(axis)"),
    ("x.new_zeros(2, 3)", ": use tg.zeros(shape, dtype=x.dtype, device=x.device)"),
    ("x.norm()", "(a PyTorch name; this Tensor follows NumPy): not provided; "
                 "(x * x).sum().sqrt() is the 2-norm"),
    ("x.clamp_(0, 1)", ": use x[...] = x.clip(min, max)"),
    ("x.rsqrt()", ": use x ** -0.5"),
    ("x.clamp_min(0.0)", ": use x.clip(min=min)"),
    ("x.register_post_accumulate_grad_hook(print)",
     "has no attribute 'register_post_accumulate_grad_hook' (a PyTorch name; this Tensor "
     "follows NumPy): not provided; x.register_hook(fn) on a leaf calls fn with each gradient"),
    ("x.type(tg.float64)", ": not provided; x.dtype is the dtype"),
    ("x.bernoulli_(0.5)", ": not provided; x[...] = tg.rand(x.shape"),
    ("tg.nn.Linear(2, 2).register_backward_hook(print)",
     "'Linear' object has no attribute 'register_backward_hook' (a PyTorch name): not "
     "provided (PyTorch deprecates it); register_full_backward_hook(hook) calls hook(module, "
     "grad_input, grad_output)"),
    ("tg.nn.Linear(2, 2).register_full_backward_pre_hook(print)",
     "'Linear' object has no attribute 'register_full_backward_pre_hook' (a PyTorch name): not "
     "provided; register_forward_hook a hook that calls out.register_hook(fn) on the output"),
    # a subclass is named as itself
    ("tg.nn.Parameter(x).numel()", "'Parameter' object has no attribute 'numel' (a PyTorch"),
    ("tg.randint(0, 5, (2,))", "module 'tinygrad_cnn' has no attribute 'randint' (a PyTorch "
                               "name): use tg.tensor(tg.get_rng().integers(low, high, size))"),
    ("tg.linspace(0, 1, 5)", ": use tg.tensor(np.linspace(start, end, steps), dtype=tg.float32)"),
    ("tg.long", "module 'tinygrad_cnn' has no attribute 'long' (a PyTorch name): use tg.int64"),
    ("tg.einsum", "(a PyTorch name): not provided;"),
    ("tg.device('cuda')", ": not provided: a device is a string here"),
    # torch.<function>(x) of a Tensor method: the method
    ("tg.exp(x)", "module 'tinygrad_cnn' has no attribute 'exp' (a Tensor method here, as in "
                  "NumPy's arrays): use x.exp(...)"),
    ("tg.clamp(x, 0)", "has no attribute 'clamp' (a Tensor method here, as in NumPy's "
                       "arrays): use x.clamp(...)"),
    ("tg.maximum(x, x)", ": use x.maximum(...)"),
    ("tg.prod(x, 1)", "module 'tinygrad_cnn' has no attribute 'prod' (a Tensor method here, "
                      "as in NumPy's arrays): use x.prod(...)"),
    # torch.nn's names: F beside nn; the upsampling layers PyTorch deprecates left out
    ("tg.nn.functional.relu(x)", "module 'tinygrad_cnn.nn' has no attribute 'functional' (a "
                                 "PyTorch name): use tg.functional (torch.nn.functional's"),
    ("tg.nn.UpsamplingNearest2d(scale_factor=2)",
     "has no attribute 'UpsamplingNearest2d' (a PyTorch name): not provided (PyTorch "
     "deprecates it); nn.Upsample(size, scale_factor, mode='nearest') does the same"),
    ("tg.nn.UpsamplingBilinear2d(scale_factor=2)",
     ": not provided (PyTorch deprecates it); nn.Upsample(size, scale_factor, mode='bilinear', "
     "align_corners=True) does the same"),
]


@pytest.mark.parametrize("expression, fragment", HINT_MESSAGES,
                         ids=[e for e, _ in HINT_MESSAGES])
def test_a_pytorch_name_gets_the_equivalent_here(expression, fragment):
    with pytest.raises(AttributeError) as info:
        eval(expression, {"tg": tg, "x": tg.ones(2, 3)})
    assert fragment in str(info.value)
    # No "Did you mean" guess from Python besides the hint (x.long: 'log'?).
    assert info.value.name is None


# ---- every "use" hint does what PyTorch's name does ----------------------------------
def _code(hint):
    """The CODE of a hint "use CODE" or "use CODE (note)"; None for a note alone."""
    match = re.fullmatch(r"use (.*?)(?: \(.*\))?", hint)
    return match and match.group(1)


def _shown_code(owner, name):
    """The CODE that the error for ``owner.name`` tells the user to write."""
    with pytest.raises(AttributeError) as info:
        getattr(owner, name)
    message = str(info.value)
    assert "): use " in message, message
    return _code(message.split("): ", 1)[1])


B = np.array([[True, False, True], [False, False, True]])
INPUTS = dict(x=R(2, 3), other=R(2, 3, seed=1), mask=B, condition=B, value=0.5, exponent=2.0,
              shape=(2, 2), data=[[1.0, 2.0]], axis=1, n=3, min=-0.5, max=0.5,
              tensors=[R(2, 3), R(2, 3, seed=1)], array=R(2, 3), low=0, high=5, size=(2, 3),
              start=0.0, end=1.0, steps=5)
BOOLS = dict(x=B, other=~B)

# name -> (what torch's name gives, inputs other than INPUTS'); t holds torch's inputs
TENSOR_CHECKS = {
    "numel": (lambda t: t.x.numel(), {}),
    "nelement": (lambda t: t.x.nelement(), {}),
    "dim": (lambda t: t.x.dim(), {}),
    "ndimension": (lambda t: t.x.ndimension(), {}),
    "is_cuda": (lambda t: t.x.is_cuda, {}),
    "t": (lambda t: t.x.t(), {}),
    "contiguous": (lambda t: t.x.contiguous(), {}),
    "clone": (lambda t: t.x.clone(), {}),
    "long": (lambda t: t.x.long(), {}),
    "int": (lambda t: t.x.int(), {}),
    "bool": (lambda t: t.x.bool(), {}),
    "half": (lambda t: t.x.half(), {}),
    "type_as": (lambda t: t.x.type_as(t.other), dict(other=R(2, 3).astype(np.float64))),
    "view_as": (lambda t: t.x.view_as(t.other), dict(other=R(3, 2))),
    "reshape_as": (lambda t: t.x.reshape_as(t.other), dict(other=R(3, 2))),
    "expand_as": (lambda t: t.x.expand_as(t.other), dict(x=R(1, 3))),
    "unbind": (lambda t: t.x.unbind(), {}),
    "repeat": (lambda t: t.x.repeat(1, t.n), {}),
    "new_zeros": (lambda t: t.x.new_zeros(t.shape), {}),
    "new_ones": (lambda t: t.x.new_ones(t.shape), {}),
    "new_full": (lambda t: t.x.new_full(t.shape, t.value), {}),
    "new_tensor": (lambda t: t.x.new_tensor(t.data), {}),
    "new_empty": (lambda t: t.x.new_empty(t.shape).zero_(), {}),   # (ours: zeros)
    "rsqrt": (lambda t: t.x.rsqrt(), dict(x=R(2, 3) ** 2 + 0.5)),
    "clamp_min": (lambda t: t.x.clamp_min(t.min), {}),
    "clamp_max": (lambda t: t.x.clamp_max(t.max), {}),
    "add": (lambda t: t.x.add(t.other), {}),
    "sub": (lambda t: t.x.sub(t.other), {}),
    "mul": (lambda t: t.x.mul(t.other), {}),
    "div": (lambda t: t.x.div(t.other), {}),
    "neg": (lambda t: t.x.neg(), {}),
    "pow": (lambda t: t.x.pow(t.exponent), {}),
    "square": (lambda t: t.x.square(), {}),
    "mm": (lambda t: t.x.mm(t.other), dict(other=R(3, 4))),
    "bmm": (lambda t: t.x.bmm(t.other), dict(x=R(2, 2, 3), other=R(2, 3, 4))),
    "eq": (lambda t: t.x.eq(t.other), dict(other=np.where(B, R(2, 3), 0).astype(np.float32))),
    "ne": (lambda t: t.x.ne(t.other), dict(other=np.where(B, R(2, 3), 0).astype(np.float32))),
    "lt": (lambda t: t.x.lt(t.other), {}),
    "le": (lambda t: t.x.le(t.other), {}),
    "gt": (lambda t: t.x.gt(t.other), {}),
    "ge": (lambda t: t.x.ge(t.other), {}),
    "logical_not": (lambda t: t.x.logical_not(), BOOLS),
    "logical_and": (lambda t: t.x.logical_and(t.other), BOOLS),
    "logical_or": (lambda t: t.x.logical_or(t.other), BOOLS),
    "where": (lambda t: t.x.where(t.condition, t.other), {}),
    "masked_fill": (lambda t: t.x.masked_fill(t.mask, t.value), {}),
    "amax": (lambda t: t.x.amax(t.axis), {}),
    "amin": (lambda t: t.x.amin(t.axis), {}),
    # in place: the tensor afterwards
    "add_": (lambda t: t.x.add_(t.other), {}),
    "sub_": (lambda t: t.x.sub_(t.other), {}),
    "mul_": (lambda t: t.x.mul_(t.other), {}),
    "div_": (lambda t: t.x.div_(t.other), {}),
    "pow_": (lambda t: t.x.pow_(t.exponent), {}),
    "zero_": (lambda t: t.x.zero_(), {}),
    "fill_": (lambda t: t.x.fill_(t.value), {}),
    "copy_": (lambda t: t.x.copy_(t.other), {}),
    "clamp_": (lambda t: t.x.clamp_(t.min, t.max), {}),
    "clip_": (lambda t: t.x.clip_(t.min, t.max), {}),
    "masked_fill_": (lambda t: t.x.masked_fill_(t.mask, t.value), {}),
}

_LIKE = "shape and dtype only"   # random draws: the same kind of result
MODULE_CHECKS = {
    "from_numpy": (lambda t, torch: torch.from_numpy(t.array), {}, None),
    "as_tensor": (lambda t, torch: torch.as_tensor(t.data), {}, None),
    "is_tensor": (lambda t, torch: torch.is_tensor(t.x), {}, None),
    "numel": (lambda t, torch: torch.numel(t.x), {}, None),
    "empty": (lambda t, torch: torch.empty(t.shape), {}, _LIKE),
    "empty_like": (lambda t, torch: torch.empty_like(t.x), {}, _LIKE),
    "full_like": (lambda t, torch: torch.full_like(t.x, t.value), {}, None),
    "randn_like": (lambda t, torch: torch.randn_like(t.x), {}, _LIKE),
    "rand_like": (lambda t, torch: torch.rand_like(t.x), {}, _LIKE),
    "randint": (lambda t, torch: torch.randint(t.low, t.high, t.size), {}, _LIKE),
    "randperm": (lambda t, torch: torch.randperm(t.n), {}, np.sort),
    "linspace": (lambda t, torch: torch.linspace(t.start, t.end, t.steps), {}, None),
    "concat": (lambda t, torch: torch.concat(t.tensors, t.axis), {}, None),
    "matmul": (lambda t, torch: torch.matmul(t.x, t.other), dict(other=R(3, 4)), None),
    "mm": (lambda t, torch: torch.mm(t.x, t.other), dict(other=R(3, 4)), None),
    "bmm": (lambda t, torch: torch.bmm(t.x, t.other), dict(x=R(2, 2, 3), other=R(2, 3, 4)),
            None),
    "cuda": (lambda t, torch: torch.cuda.is_available(), {}, None),
}
DTYPE_NAMES = ["long", "int", "float", "double", "half", "bool", "int8", "int16", "uint8"]


def _namespaces(overrides, torch):
    inputs = {**INPUTS, **overrides}
    ours = {k: tg.tensor(v) if isinstance(v, np.ndarray) else v for k, v in inputs.items()}
    ours["tensors"] = [tg.tensor(a) for a in inputs["tensors"]]
    theirs = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v
              for k, v in inputs.items()}
    theirs["tensors"] = [torch.tensor(a) for a in inputs["tensors"]]
    theirs["array"] = inputs["array"].copy()
    return ours, types.SimpleNamespace(**theirs)


def _run(code, namespace):
    """The value of CODE, or, for a statement (x[...] = 0, x += other), x afterwards."""
    namespace = {"tg": tg, "np": np, **namespace}
    try:
        return eval(compile(code, "<hint>", "eval"), namespace)
    except SyntaxError:
        exec(compile(code, "<hint>", "exec"), namespace)
        return namespace["x"]


def _as_array(value):
    if isinstance(value, (list, tuple)):
        return np.stack([_as_array(v) for v in value])
    if isinstance(value, tg.Tensor):
        return value.numpy()
    if hasattr(value, "detach"):   # a torch tensor
        return value.detach().numpy()
    return np.asarray(value)


def _compare(ours, theirs, compare=None):
    ours, theirs = _as_array(ours), _as_array(theirs)
    if compare == _LIKE:
        assert (ours.shape, ours.dtype) == (theirs.shape, theirs.dtype)
        return
    if compare is not None:
        ours, theirs = compare(ours), compare(theirs)
    assert (ours.shape, ours.dtype) == (theirs.shape, theirs.dtype)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(TENSOR_CHECKS))
def test_tensor_hint_does_what_the_pytorch_name_does(name):
    torch = pytest.importorskip("torch")
    torch_call, overrides = TENSOR_CHECKS[name]
    ours, theirs = _namespaces(overrides, torch)
    _compare(_run(_shown_code(ours["x"], name), ours), torch_call(theirs))


@pytest.mark.parametrize("name", sorted(MODULE_CHECKS))
def test_module_hint_does_what_the_pytorch_function_does(name):
    torch = pytest.importorskip("torch")
    torch_call, overrides, compare = MODULE_CHECKS[name]
    ours, theirs = _namespaces(overrides, torch)
    _compare(_run(_shown_code(tg, name), ours), torch_call(theirs, torch), compare)


@pytest.mark.parametrize("name", DTYPE_NAMES)
def test_dtype_hint_is_the_pytorch_dtype(name):
    torch = pytest.importorskip("torch")
    ours = np.dtype(_run(_shown_code(tg, name), {}))
    assert ours.name == str(getattr(torch, name)).removeprefix("torch.")


def test_inference_mode_hint_records_no_graph():
    x = tg.ones(2, requires_grad=True)
    with _run(_shown_code(tg, "inference_mode"), {}):
        assert not (x * 2).requires_grad


def test_utils_hint_holds_torch_utils_data_names():
    torch = pytest.importorskip("torch")
    data = _run(_shown_code(tg, "utils"), {})
    for name in re.findall(r"[A-Z]\w+", MODULE_HINTS["utils"]):
        assert hasattr(torch.utils.data, name) and hasattr(data, name), name


def test_nn_functional_hint_names_the_module_of_the_functional_ops():
    F = _run(_shown_code(tg.nn, "functional"), {})
    assert F is tg.functional
    assert callable(F.conv2d) and callable(F.cross_entropy) and callable(F.unfold)


def test_save_and_load_hints_round_trip_a_state_dict(tmp_path):
    from tinygrad_cnn import checkpoint
    model, twin = tg.nn.Linear(3, 2), tg.nn.Linear(3, 2)
    namespace = {"checkpoint": checkpoint, "path": tmp_path / "model.npz", "model": model}
    _run(_shown_code(tg, "save"), namespace)
    twin.load_state_dict(_run(_shown_code(tg, "load"), namespace))
    np.testing.assert_array_equal(twin.weight.numpy(), model.weight.numpy())


def test_every_use_hint_is_checked_and_every_hinted_name_is_missing():
    checked = set(TENSOR_CHECKS) | {f"tg.{n}" for n in MODULE_CHECKS} | {
        f"tg.{n}" for n in DTYPE_NAMES + ["inference_mode", "utils", "save", "load"]}
    hinted = {n for n, h in TENSOR_HINTS.items() if _code(h)} | {
        f"tg.{n}" for n, h in MODULE_HINTS.items() if _code(h)}
    assert hinted == checked
    for table in (TENSOR_HINTS, MODULE_HINTS, NN_HINTS, NN_MODULE_HINTS):
        assert all(_code(h) or h.startswith("not provided") for h in table.values())
    assert [n for n, h in NN_HINTS.items() if _code(h)] == ["functional"]   # checked above
    # A name that exists would never reach the hint: on the Tensor each is the
    # placeholder that raises it (read without running it), nothing real.
    assert not [n for n in TENSOR_HINTS
                if not isinstance(inspect.getattr_static(tg.Tensor, n), _Missing)]
    assert not [n for n in MODULE_HINTS if n in vars(tg)]
    assert not [n for n in NN_HINTS if n in vars(tg.nn)]
    assert not [n for n in NN_MODULE_HINTS if hasattr(tg.nn.Module, n)]
    assert all(h.startswith("not provided") for h in NN_MODULE_HINTS.values())


# ---- other failed lookups stay as they were --------------------------------------------
PLAIN_LOOKUPS = [
    ("x.foo", "'Tensor' object has no attribute 'foo'"),
    ("x._foo", "'Tensor' object has no attribute '_foo'"),
    ("x.__array_interface__", "'Tensor' object has no attribute '__array_interface__'"),
    ("tg.nn.Parameter(x).foo", "'Parameter' object has no attribute 'foo'"),
    ("tg.foo", "module 'tinygrad_cnn' has no attribute 'foo'"),
    ("tg.__wrapped__", "module 'tinygrad_cnn' has no attribute '__wrapped__'"),
    ("tg.size", "module 'tinygrad_cnn' has no attribute 'size'"),   # a property, no function
    ("tg.nn.foo", "module 'tinygrad_cnn.nn' has no attribute 'foo'"),
    ("tg.nn.__wrapped__", "module 'tinygrad_cnn.nn' has no attribute '__wrapped__'"),
    # a property whose getter fails shows its own error (here: no data, __init__ not run)
    ("tg.Tensor.__new__(tg.Tensor).shape", "'Tensor' object has no attribute 'data'"),
]


@pytest.mark.parametrize("expression, message", PLAIN_LOOKUPS,
                         ids=[e for e, _ in PLAIN_LOOKUPS])
def test_other_failed_lookups_stay_plain(expression, message):
    with pytest.raises(AttributeError) as info:
        eval(expression, {"tg": tg, "x": tg.ones(2, 3)})
    assert str(info.value) == message


def test_lookups_the_library_and_python_rely_on_still_work():
    x = tg.ones(2, 3, requires_grad=True)
    assert hasattr(x, "__array__") and hasattr(x, "_ctx") and not hasattr(x, "__array_struct__")
    assert not hasattr(x, "numel") and getattr(x, "dim", None) is None
    np.testing.assert_array_equal(np.asarray(x), np.ones((2, 3)))
    for twin in (copy.copy(x), copy.deepcopy(x)):
        assert twin.shape == (2, 3) and twin.requires_grad
    # dir(x), what IPython completes from, lists what exists, never the names that only
    # hint.  (The plain REPL's completer also reads the class's own dir, which lists them.)
    assert "ndim" in dir(x) and not {n for n in dir(x) if n in TENSOR_HINTS}
    assert "randint" not in dir(tg)
    from tinygrad_cnn import checkpoint   # a submodule still imports through the package
    assert checkpoint.save


# ---- the hinted names in help() and dir() ----------------------------------------------
@pytest.mark.parametrize("name", ["numel", "long", "masked_fill", "norm"])
def test_help_says_a_hinted_name_is_not_defined(name):
    """help(tg.Tensor) lists the hinted names among the methods (each is a class
    attribute); its text must say the name does not exist here, and what does."""
    text = pydoc.render_doc(tg.Tensor, renderer=pydoc.plaintext)
    hint = TENSOR_HINTS[name]
    entry = re.search(rf"\n \|  {name}\n \|      (.*)\n", text)
    assert entry is not None, f"{name} is not listed"
    assert entry.group(1).startswith("Not defined here (a PyTorch name; this Tensor follows "
                                     "NumPy): ")
    assert hint[:40] in entry.group(1)


class _OwnNumel(tg.Tensor):
    """A Tensor subclass that defines one of the hinted names itself."""

    def numel(self):
        return self.size


@pytest.mark.parametrize("make, listed, hidden", [
    (lambda: _OwnNumel([1.0, 2.0]), {"numel", "ndim"}, {"long", "dim"}),
    (lambda: tg.nn.Parameter(np.ones(2, np.float32)), {"ndim"}, {"numel", "long"}),
    (lambda: tg.ones(2), {"ndim", "size"}, {"numel", "long"}),
], ids=["subclass-with-numel", "parameter", "tensor"])
def test_dir_lists_what_exists(make, listed, hidden):
    x = make()
    assert listed <= set(dir(x)) and not hidden & set(dir(x))
    if isinstance(x, _OwnNumel):
        assert x.numel() == 2


@pytest.mark.parametrize("call", ["x.size()", "x.size(0)", "x.size(dim=1)"])
def test_calling_size_says_to_use_shape(call):
    with pytest.raises(TypeError, match=r"x.size is the number of elements \(6\), an int as "
                                        r"in NumPy.*use x.shape for x.size\(\) and "
                                        r"x.shape\[dim\] for x.size\(dim\)"):
        eval(call, {"x": tg.ones((2, 3))})


def test_size_is_an_int_otherwise():
    x = tg.ones((2, 3))
    assert x.size == 6 and isinstance(x.size, int) and hash(x.size) == hash(6)
    assert repr(x.size) == "6" and f"{x.size:>3}" == "  6"
    assert type(x.size + 1) is int and type(x.size * 2) is int
    assert np.zeros(x.size).shape == (6,) and list(range(x.size)) == list(range(6))


# ---- nn.Module: PyTorch's dotted-path lookups and half() --------------------------------
def _pair_of_models():
    torch = pytest.importorskip("torch")
    ours = tg.nn.Sequential(tg.nn.Conv2d(1, 2, 3), tg.nn.Sequential(tg.nn.BatchNorm2d(2)))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3),
                                 torch.nn.Sequential(torch.nn.BatchNorm2d(2)))
    return ours, theirs


@pytest.mark.parametrize("target", ["", "0", "1", "1.0"])
def test_get_submodule_finds_what_torchs_finds(target):
    ours, theirs = _pair_of_models()
    found, wanted = ours.get_submodule(target), theirs.get_submodule(target)
    assert found.__class__.__name__ == wanted.__class__.__name__
    assert ours.get_submodule("1.0") is ours[1][0] and ours.get_submodule("") is ours


@pytest.mark.parametrize("target", ["0.weight", "0.bias", "1.0.weight", "1.0.bias"])
def test_get_parameter_finds_what_torchs_finds(target):
    ours, theirs = _pair_of_models()
    p = ours.get_parameter(target)
    assert isinstance(p, tg.nn.Parameter) and p is dict(ours.named_parameters())[target]
    assert p.shape == tuple(theirs.get_parameter(target).shape)


@pytest.mark.parametrize("call, message", [
    ("m.get_submodule('2')", r"get_submodule\('2'\): Sequential \(the root module\) has no "
                             r"attribute `2`"),
    ("m.get_submodule('1.0.foo')", r"BatchNorm2d \(1.0\) has no attribute `foo`"),
    ("m.get_submodule('0.weight')", r"`weight` of 0 is a Parameter, not an nn.Module"),
    ("m.get_submodule('0..1')", r"has no attribute ``"),
    ("m.get_parameter('1.0.running_mean')", r"get_parameter\('1.0.running_mean'\): "
                                            r"`running_mean` of 1.0 is a Tensor, not an "
                                            r"nn.Parameter"),
    ("m.get_parameter('1.0')", r"`0` of 1 is a BatchNorm2d, not an nn.Parameter"),
    ("m.get_parameter('0.foo')", r"Conv2d \(0\) has no attribute `foo`"),
    ("m.get_parameter('3.weight')", r"get_submodule\('3'\)"),
])
def test_get_submodule_and_get_parameter_name_what_is_missing(call, message):
    torch = pytest.importorskip("torch")
    m = tg.nn.Sequential(tg.nn.Conv2d(1, 2, 3), tg.nn.Sequential(tg.nn.BatchNorm2d(2)))
    with pytest.raises(AttributeError, match=message):
        eval(call, {"m": m})
    twin = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3),
                               torch.nn.Sequential(torch.nn.BatchNorm2d(2)))
    with pytest.raises(AttributeError):   # PyTorch refuses it too
        eval(call, {"m": twin})


def test_get_submodule_refuses_a_non_string():
    with pytest.raises(TypeError, match="get_submodule: target must be a dotted-path string, "
                                        "got int"):
        tg.nn.Linear(2, 2).get_submodule(0)


def test_half_casts_float_parameters_and_buffers_in_place(device):
    m = tg.nn.Sequential(tg.nn.Linear(3, 2), tg.nn.BatchNorm1d(2)).to(device)
    weight = m[0].weight
    assert m.half() is m and m[0].weight is weight
    assert {p.dtype for p in m.parameters()} == {tg.float16}
    assert m[1].running_mean.dtype == np.float16
    assert m[1].num_batches_tracked.dtype == np.int64
    assert m(tg.ones(4, 3, dtype=tg.float16, device=device)).dtype == np.float16
