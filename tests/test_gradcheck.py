"""gradcheck and gradgradcheck themselves: they pass correct gradients and catch wrong ones."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import tinygrad_cnn as tg
import tinygrad_cnn.functional as F
from tinygrad_cnn import Function, GradcheckError, gradcheck, gradgradcheck


def _x(*shape, device="cpu", dtype=tg.float64, seed=0):
    data = np.random.default_rng(seed).uniform(0.5, 2.0, shape)
    return tg.tensor(data, dtype=dtype, device=device, requires_grad=True)


class Square(Function):
    """y = x^2, with a correct backward."""

    def forward(self, x):
        return x * x

    def backward(self, grad_out):
        x, = self.inputs
        return grad_out * 2 * x


class SquareOff(Square):
    """y = x^2 whose backward is off by a factor (3x instead of 2x)."""

    def backward(self, grad_out):
        x, = self.inputs
        return grad_out * 3 * x


class SquareIgnoresUpstream(Square):
    """A backward that uses only the total of grad_out, not how it varies."""

    def backward(self, grad_out):
        x, = self.inputs
        return grad_out.sum().broadcast_to(x.shape) * 2 * x / x.size


class SquareConstantBackward(Square):
    """Correct first derivative, but built from a detached x: not differentiable again."""

    def backward(self, grad_out):
        x, = self.inputs
        return grad_out * 2 * x.detach()


def test_passes_correct_ops(device):
    x, y = _x(3, 4, device=device), _x(4, device=device, seed=1)
    assert gradcheck(lambda a, b: (a * b).tanh() + a.exp() / b, (x, y))
    assert gradcheck(lambda a: Square.apply(a), x)
    assert gradgradcheck(lambda a: Square.apply(a), x)


def test_fails_on_a_wrong_backward():
    x = _x(5)
    with pytest.raises(GradcheckError):
        gradcheck(lambda a: SquareOff.apply(a), x)
    assert gradcheck(lambda a: SquareOff.apply(a), x, raise_exception=False) is False


def test_fails_on_a_detached_factor():
    x = _x(2, 3)
    with pytest.raises(GradcheckError):
        gradcheck(lambda t: t * t.detach(), x)
    assert gradcheck(lambda t: t * t.detach(), x, raise_exception=False) is False


def test_random_upstream_gradient_catches_a_backward_that_ignores_it():
    """With an all-ones upstream gradient this wrong backward would pass."""
    x = _x(4)
    ones = tg.ones(4, dtype=tg.float64)
    assert gradcheck(lambda a: SquareIgnoresUpstream.apply(a), x, grad_outputs=ones)
    with pytest.raises(GradcheckError):
        gradcheck(lambda a: SquareIgnoresUpstream.apply(a), x)


def test_gradgradcheck_fails_on_a_non_differentiable_backward():
    x = _x(4)
    assert gradcheck(lambda a: SquareConstantBackward.apply(a), x)  # first order is right
    with pytest.raises(GradcheckError):
        gradgradcheck(lambda a: SquareConstantBackward.apply(a), x)
    assert gradgradcheck(lambda a: SquareConstantBackward.apply(a), x,
                         raise_exception=False) is False


@pytest.mark.parametrize("dtype", [tg.float32, tg.float64])
def test_inputs_are_left_unmodified(dtype):
    x = _x(3, 2, dtype=dtype)
    before = x.numpy()
    data_before = x.data
    gradcheck(lambda a: (a * a).sum(), x)
    gradgradcheck(lambda a: (a * a).sum(), x)
    assert gradcheck(lambda a: SquareOff.apply(a), x, raise_exception=False) is False
    assert x.dtype == dtype and x.data is data_before
    np.testing.assert_array_equal(x.numpy(), before)
    assert x.grad is None and x.requires_grad


def test_error_message_names_input_element_and_values():
    x = _x(3)
    y = _x(2, 2, seed=1)
    fn = lambda a, b: a.sum() + SquareOff.apply(b).sum()  # noqa: E731  (only input 1 is wrong)
    with pytest.raises(GradcheckError) as info:
        gradcheck(fn, (x, y))
    msg = str(info.value)
    assert "input 1" in msg and "(2, 2)" in msg
    m = re.search(r"at index \((\d+), (\d+)\): analytic (\S+), numerical (\S+?) ", msg)
    assert m, msg
    i, j = int(m.group(1)), int(m.group(2))
    b = y.numpy()
    # One upstream value v multiplies both: analytic 3 b v, numerical 2 b v.
    analytic, numerical = float(m.group(3)), float(m.group(4))
    assert analytic == pytest.approx(1.5 * numerical, rel=1e-4)
    assert abs(numerical) > 0 and b[i, j] > 0


def test_tuple_outputs():
    x, y = _x(3), _x(3, seed=1)
    assert gradcheck(lambda a, b: (a * b, a.exp(), b.sum()), (x, y))
    assert gradcheck(lambda a: a.split(3), _x(6))
    with pytest.raises(GradcheckError):
        gradcheck(lambda a, b: (a * b, SquareOff.apply(b)), (x, y))
    assert gradgradcheck(lambda a, b: (a * b, a.tanh()), (x, y))


def test_float32_inputs_are_checked_in_float64_then_in_their_own_dtype():
    """In float32, eps=1e-6 would be lost in rounding: the finite differences run on a
    float64 copy; the backward then runs once more in float32, against that result."""
    x = _x(4, dtype=tg.float32)
    seen = []

    def fn(a):
        seen.append(a.dtype)
        return (a * a).sin()

    assert gradcheck(fn, x)
    assert set(seen) == {np.dtype("float64"), np.dtype("float32")}
    seen.clear()
    assert gradcheck(fn, x, full_jacobian=True)   # compared as v^T J, as the float32 pass
    assert set(seen) == {np.dtype("float64"), np.dtype("float32")}
    seen.clear()
    assert gradcheck(fn, x, check_input_dtype=False)
    assert set(seen) == {np.dtype("float64")}


class SquareOffInFloat32(Square):
    """y = x^2 whose backward is right in float64 but 3x in float32."""
    off = 3

    def backward(self, grad_out):
        x, = self.inputs
        return grad_out * (self.off if x.dtype == tg.float32 else 2) * x


class SquareSlightlyOffInFloat32(SquareOffInFloat32):
    """... but 1 % off in float32: far beyond float32's rounding, within float16's."""
    off = 2.02


class SoftplusNaive(Function):
    """y = log(1 + e^x), whose backward e^x / (1 + e^x) is inf/inf in float32 for x = 100."""

    def forward(self, x):
        return self.xp.logaddexp(0, x)

    def backward(self, grad_out):
        e = self.inputs[0].exp()
        return grad_out * e / (1 + e)


@pytest.mark.filterwarnings("ignore:.*encountered:RuntimeWarning")
def test_a_backward_wrong_only_in_the_inputs_dtype_is_caught():
    x = _x(4, dtype=tg.float32)
    for op, kwargs in ((SquareOffInFloat32, {}), (SquareSlightlyOffInFloat32, {}),
                       (SquareOffInFloat32, {"full_jacobian": True})):
        with pytest.raises(GradcheckError, match=r"in float32, input 0's own dtype.*index "
                                                 r"\(\d,\)"):
            gradcheck(op.apply, x, **kwargs)
    assert gradcheck(SquareOffInFloat32.apply, x, check_input_dtype=False)
    assert gradcheck(SquareOffInFloat32.apply, _x(4))        # float64: nothing else to run
    big = tg.tensor([1.0, 50.0, 100.0], requires_grad=True)  # float32
    with pytest.raises(GradcheckError, match=r"gradient from output 0 is nan at index \(2,\)"):
        gradcheck(SoftplusNaive.apply, big)


def test_non_tensor_and_constant_inputs_pass_through():
    x = _x(3)
    c = tg.tensor(np.array([1.0, 2.0, 3.0]))  # no grad: not perturbed
    assert gradcheck(lambda a, k, s: (a * k) ** s, (x, c, 2))


def test_no_input_requires_grad_is_an_error():
    with pytest.raises(ValueError, match="requires grad"):
        gradcheck(lambda a: a * 2, tg.tensor([1.0]))


def test_unused_input_has_zero_gradient():
    x, y = _x(2), _x(2, seed=1)
    assert gradcheck(lambda a, b: a * 3, (x, y))


@pytest.mark.filterwarnings("ignore:.*encountered:RuntimeWarning")
def test_non_finite_gradients_fail():
    x = tg.tensor(np.array([0.0, 1.0]), requires_grad=True)
    with pytest.raises(GradcheckError, match="non-finite"):
        gradcheck(lambda a: a.sqrt(), x)


def test_works_inside_no_grad():
    with tg.no_grad():
        assert gradcheck(lambda a: a.exp() * a, _x(3))
        assert gradgradcheck(lambda a: a.exp() * a, _x(3))
        with pytest.raises(GradcheckError):
            gradcheck(lambda a: SquareOff.apply(a), _x(3))
        assert not tg.is_grad_enabled()


def test_gradgradcheck_refuses_to_pass_vacuously():
    with pytest.raises(ValueError, match="nothing to check"):
        tg.gradgradcheck(lambda x: x * 2, tg.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="max_elements"):
        tg.gradcheck(lambda x: x * 2, tg.tensor([1.0], requires_grad=True), max_elements=0)


def test_fn_that_ignores_its_arguments_is_an_error():
    """A closure over the caller's tensor (``lambda a: f(x)``) would compare zero with zero."""
    w = _x(4)
    with pytest.raises(ValueError, match="do not depend on any input"):
        gradcheck(lambda a: SquareOff.apply(w), w)


class SquareHalvesUpstreamInPlace(Square):
    """A backward that scales its upstream gradient in place, then returns g * 2x:
    half the true gradient, whatever it does to ``grad_out`` afterwards."""

    def backward(self, grad_out):
        x, = self.inputs
        grad_out.data *= 0.5
        return grad_out * 2 * x


def test_backward_writing_into_its_upstream_gradient_is_caught():
    with pytest.raises(GradcheckError, match="changed its upstream gradient"):
        gradcheck(lambda a: SquareHalvesUpstreamInPlace.apply(a), _x(4))


class SquareZeroBackward(Square):
    """y = x^2 whose backward returns zeros."""

    def backward(self, grad_out):
        return grad_out * 0


class SquareForgetsGradient(Square):
    """A backward that returns None: no gradient reaches x."""

    def backward(self, grad_out):
        return None


def test_each_output_is_checked_on_its_own():
    """A large correct output must not hide a wrong one (one tolerance over their sum would)."""
    x = _x(3)
    with pytest.raises(GradcheckError, match=r"output 1 \(shape \(3,\)\)"):
        gradcheck(lambda a: (a * 1e4, SquareOff.apply(a)), x)
    b = _x(2, seed=1)
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(lambda a, b: (SquareZeroBackward.apply(a), b * 1e12), (x, b))


def test_differences_are_taken_before_the_contraction():
    """Output values far larger than the change eps makes must not drown that change."""
    assert gradcheck(lambda a: (a * a).exp(), tg.tensor([0.5, 5.5], requires_grad=True))
    assert gradcheck(lambda a: a + 1e6, _x(100))


def test_full_jacobian_catches_an_error_hidden_inside_one_output():
    """One random contraction per output (the default, like PyTorch's fast mode) lets a
    large correct block of an output hide a wrong one; every Jacobian entry does not."""
    x = _x(3)
    fn = lambda a: tg.cat([a * 1e4, SquareOff.apply(a)])  # noqa: E731
    assert gradcheck(fn, x)
    with pytest.raises(GradcheckError) as info:
        gradcheck(fn, x, full_jacobian=True)
    assert re.search(r"at index \(\d,\) of the input and \([345],\) of the output", str(info.value))
    assert "Jacobian entries" in str(info.value)
    assert gradcheck(lambda a, b: (a * b).tanh(), (_x(2, 3), _x(3, seed=1)), full_jacobian=True)
    assert gradgradcheck(lambda a: Square.apply(a), x, full_jacobian=True)


def test_grad_outputs_must_match_the_outputs():
    x = _x(3)
    one = tg.ones(3, dtype=tg.float64)
    with pytest.raises(ValueError, match="2 output.* grad_outputs has 1"):
        gradcheck(lambda a: (a * 2, SquareOff.apply(a)), x, grad_outputs=(one,))
    with pytest.raises(ValueError, match="2 output.* grad_outputs has 1"):
        gradgradcheck(lambda a: (a * a, SquareConstantBackward.apply(a)), x, grad_outputs=(one,))
    with pytest.raises(ValueError, match=r"grad_outputs\[0\] is shape \(2,\).*\(3,\)"):
        gradcheck(lambda a: a * 2, x, grad_outputs=tg.ones(2, dtype=tg.float64))
    with pytest.raises(tg.DeviceError, match=r"grad_outputs\[0\] is on cpu but output 0 is on "
                                             r"strict"):
        gradcheck(lambda a: a * 2, _x(3, device="strict"), grad_outputs=one)


def test_a_backward_that_returns_none_fails_with_a_hint():
    x = _x(3)
    with pytest.raises(GradcheckError, match="no gradient reached input 0"):
        gradcheck(SquareForgetsGradient.apply, x)
    assert gradcheck(SquareForgetsGradient.apply, x, raise_exception=False) is False
    # A backward made of raw arrays: right once, but its output is outside the graph.
    assert gradgradcheck(SquareConstantBackward.apply, x, raise_exception=False) is False


class DoubleDetached(Function):
    """y = 2x whose backward is cut off the graph by .detach() (and is -0.0 for v > 0)."""

    def forward(self, x):
        return 2 * x

    def backward(self, grad_out):
        return (grad_out * -0.0).detach()


class SquareDetachedX(Square):
    """y = x^2 whose backward detaches x: right once, wrong to differentiate again."""

    def backward(self, grad_out):
        x, = self.inputs
        return grad_out * (2 * x).detach()


def test_a_detached_backward_is_named_and_a_zero_shows_as_0():
    x = _x(3)
    one = tg.ones(3, dtype=tg.float64)
    with pytest.raises(GradcheckError, match=r"analytic 0, numerical 2 "):
        gradcheck(DoubleDetached.apply, x, grad_outputs=one)     # not "analytic -0"
    with pytest.raises(GradcheckError, match=r"outside the graph \(from raw arrays, a "
                                             r"\.detach\(\)ed tensor, or under no_grad\)"):
        gradgradcheck(SquareDetachedX.apply, x)


def test_tensors_inside_a_list_argument_are_refused():
    x, w = _x(2), _x(2, seed=1)
    with pytest.raises(TypeError, match="input 1 is a list holding tensors"):
        gradcheck(lambda a, ws: a * SquareOff.apply(ws[0]), (x, [w]))
    assert gradcheck(lambda a, ws: a * ws[0], (x, [w.detach()]))  # constants may be nested


def test_max_elements_message_counts_the_checked_elements():
    x = tg.tensor(np.linspace(0.5, 2, 1000), requires_grad=True)
    with pytest.raises(GradcheckError,
                       match=r"5 of 5 element\(s\) \(5 of the input's 1000 elements checked\)"):
        gradcheck(SquareOff.apply, x, max_elements=5)


def test_gradgradcheck_max_elements_samples_the_inputs_and_still_catches():
    # A model-sized input: without max_elements every one of its 400 elements, and of
    # the upstream gradient's, would cost two calls of fn.
    x = tg.tensor(np.linspace(0.5, 2, 400), requires_grad=True)
    calls = []

    def fn(a):
        calls.append(1)
        return Square.apply(a)

    assert gradgradcheck(fn, x, max_elements=3)
    assert len(calls) < 50, len(calls)
    with pytest.raises(GradcheckError, match=r"3 of the input's 400 elements checked"):
        gradgradcheck(HalfSquare.apply, x, max_elements=3)   # a wrong double backward
    with pytest.raises(ValueError, match="gradgradcheck: max_elements"):
        gradgradcheck(fn, x, max_elements=0)


def test_inputs_without_elements_check_nothing():
    with pytest.raises(ValueError, match="nothing to check"):
        gradcheck(SquareOff.apply, tg.zeros(0, dtype=tg.float64, requires_grad=True))


class AbsCubeInPlace(Function):
    """y = |x|^3 whose forward overwrites its input with |x|: a backward evaluated at
    the overwritten values agrees with finite differences taken there."""

    def forward(self, x):
        self.xp.abs(x, out=x)
        return x ** 3

    def backward(self, grad_out):
        x, = self.inputs
        return grad_out * 3 * x * x * x.sign()


class SquareChangesInputInBackward(Square):
    """A backward 3x (wrong) that also scales its input by 1.5 in place."""

    def backward(self, grad_out):
        x, = self.inputs
        result = grad_out * 3 * x
        x.data *= 1.5
        return result


class SquareAccumulates(Square):
    """A backward that adds each call's gradient to a buffer kept between calls."""

    def forward(self, x):
        self.total = self.xp.zeros_like(x)
        return x * x

    def backward(self, grad_out):
        self.total += (grad_out * 2 * self.inputs[0]).data
        return tg.Tensor(self.total.copy(), device=grad_out.device)


def test_changes_in_place_are_caught():
    x = tg.tensor([-1.5, -0.7, 0.8, 1.2], dtype=tg.float64, requires_grad=True)
    with pytest.raises(GradcheckError, match=r"fn changed input 0 \(shape \(4,\)\) in place, "
                       r"at index \(0,\) from -1.5 to 1.5"):
        gradcheck(AbsCubeInPlace.apply, x)
    np.testing.assert_array_equal(x.numpy(), [-1.5, -0.7, 0.8, 1.2])   # the caller's
    with pytest.raises(GradcheckError, match="the backward changed input 0 .* in place"):
        gradcheck(SquareChangesInputInBackward.apply, _x(3))
    assert gradcheck(SquareChangesInputInBackward.apply, _x(3), raise_exception=False) is False


def test_a_backward_that_does_not_repeat_itself_is_caught():
    with pytest.raises(GradcheckError, match="second backward pass from output 0 gave a "
                                             "different gradient for input 0"):
        gradcheck(SquareAccumulates.apply, _x(3))


def test_a_nondeterministic_fn_is_caught():
    rng = np.random.default_rng(0)

    def noisy(a, scale):
        return a * a + tg.tensor(rng.standard_normal(a.shape) * scale)

    with pytest.raises(GradcheckError, match="fn is not deterministic"):
        gradcheck(noisy, (_x(3), 1e-3))
    assert gradcheck(noisy, (_x(3), 1e-14), nondet_tol=1e-12)
    # Noise the tolerance allows, large against eps: the failure says so (not that
    # fn has a kink there).
    with pytest.raises(GradcheckError, match=r"may differ by up to nondet_tol = 1e-06 from "
                                             r"call to call.*check with a larger eps") as e:
        gradcheck(noisy, (_x(3), 1e-9), nondet_tol=1e-6)
    assert "one-sided" not in str(e.value)


def _strided(layout, dtype):
    """A tensor whose data is laid out in memory as ``layout`` says (views keep it)."""
    data = np.random.default_rng(0).uniform(0.5, 2.0, (4, 6, 5))
    base = tg.tensor(data, dtype=dtype)
    if layout == "fortran":
        return tg.tensor(np.asfortranarray(data), dtype=dtype)
    if layout == "batch-last":   # (6, 5, 4) memory seen as (4, 6, 5)
        return tg.tensor(np.moveaxis(np.ascontiguousarray(np.moveaxis(data, 0, -1)), -1, 0),
                         dtype=dtype)
    return {"transposed": base.permute(2, 0, 1), "sliced": base[:, ::2, 1:4],
            "reversed": base[::-1, :, ::-1], "size-1 axis": base[:, :1, ::2]}[layout]


@pytest.mark.parametrize("layout", ["transposed", "sliced", "reversed", "fortran",
                                    "batch-last", "size-1 axis"])
@pytest.mark.parametrize("dtype", [tg.float32, tg.float64])
def test_inputs_keep_their_memory_layout(layout, dtype):
    x = _strided(layout, dtype).detach().requires_grad_()
    assert not x.data.flags.c_contiguous
    steps = np.array(x.data.strides) // x.data.itemsize
    big = [ax for ax in range(x.ndim) if x.shape[ax] > 1]
    seen = []

    def fn(a):
        seen.append(tuple((np.array(a.data.strides) // a.data.itemsize)[big]))
        return (a * a).sin()

    assert gradcheck(fn, x, max_elements=8)
    assert set(seen) == {tuple(steps[big])}, (steps, seen)


class RowSumSquaresAssumesCOrder(Function):
    """y = sum over rows of x^2, whose backward reads x's memory as if C-ordered."""

    def forward(self, x):
        return (x * x).sum(axis=1)

    def backward(self, grad_out):
        a = self.inputs[0].data
        flat = np.lib.stride_tricks.as_strided(a, (a.size,), (a.itemsize,))
        return grad_out.reshape(-1, 1) * 2 * tg.tensor(flat.reshape(a.shape).copy())


def test_a_backward_that_assumes_c_order_is_caught_on_a_sliced_input():
    base = tg.tensor(np.random.default_rng(0).uniform(0.5, 2.0, (4, 6)), dtype=tg.float64)
    assert gradcheck(RowSumSquaresAssumesCOrder.apply, base.detach().requires_grad_())
    with pytest.raises(GradcheckError):
        gradcheck(RowSumSquaresAssumesCOrder.apply, base[:, ::2].detach().requires_grad_())


def test_large_inputs_divide_by_the_step_actually_taken():
    """x +- eps rounds at x ~ 1e9; dividing by 2*eps would make 2x look like 1.2x."""
    x = tg.tensor([1.1e9, 1.5e9, 1.9e9], dtype=tg.float64, requires_grad=True)
    assert gradcheck(lambda a: a * 2, x)


class CubeOff(Function):
    """y = x^3 whose backward is 6x^2 instead of 3x^2."""

    def forward(self, x):
        return x ** 3

    def backward(self, grad_out):
        return grad_out * 6 * self.inputs[0] ** 2


class LogSlightlyOff(Function):
    """y = log x whose backward is 0.5 % low: 0.995 / x."""

    def forward(self, x):
        return self.xp.log(x)

    def backward(self, grad_out):
        return grad_out * 0.995 / self.inputs[0]


def test_gradients_below_atol_warn_that_they_check_nothing():
    small = tg.tensor([1e-3, 1.2e-3, 1.4e-3], dtype=tg.float64, requires_grad=True)
    with pytest.warns(tg.GradcheckWarning, match="below atol=1e-05"):
        assert gradcheck(CubeOff.apply, small)
    with pytest.raises(GradcheckError):
        gradcheck(CubeOff.apply, small, atol=1e-9)


class SquareToFloat32(Square):
    def forward(self, x):
        return (x * x).astype(np.float32)


def test_outputs_that_cannot_be_checked_are_refused():
    x = _x(3)
    with pytest.raises(ValueError, match="output 0 has dtype float32.*need float64 outputs"):
        gradcheck(SquareToFloat32.apply, x)
    with pytest.raises(ValueError, match=r"no float output \(dtypes bool\)"):
        gradcheck(lambda a: a > 1, x)
    with pytest.raises(ValueError, match="nothing to check"):
        gradcheck(lambda a: a[:0] * 3, x)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"eps": 0.0}, ValueError, "gradcheck: eps must be > 0 and < inf, got 0.0"),
    ({"eps": "a"}, TypeError, "gradcheck: eps must be a number"),
    ({"atol": -1.0}, ValueError, "atol must be >= 0"),
    ({"rtol": float("nan")}, ValueError, "rtol must be a number, got nan"),
    ({"nondet_tol": -1.0}, ValueError, "nondet_tol must be"),
    ({"max_elements": 1.5}, TypeError, "max_elements must be an int"),
    ({"seed": "a"}, TypeError, "seed must be an int"),
    ({"seed": -1}, ValueError, "seed must be an int >= 0"),
    ({"grad_outputs": tg.ones(3, dtype=tg.float64), "full_jacobian": True}, ValueError,
     "grad_outputs has no use with full_jacobian"),
    # Flags are True or False: "no" would have meant yes.
    ({"raise_exception": "no"}, TypeError, "gradcheck: raise_exception must be True or False"),
    ({"full_jacobian": 1}, TypeError, "gradcheck: full_jacobian must be True or False, got 1"),
    ({"check_input_dtype": None}, TypeError, "check_input_dtype must be True or False"),
    # A number is no upstream gradient: a wrong type, not a wrong value.
    ({"grad_outputs": 1.0}, TypeError, r"grad_outputs\[0\] is a float; expected a tensor"),
])
def test_bad_arguments_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        gradcheck(Square.apply, _x(3), **kwargs)


@pytest.mark.parametrize("check", [gradcheck, gradgradcheck])
def test_fn_that_is_no_function_is_named(check):
    with pytest.raises(TypeError, match=f"{check.__name__}: fn must be a function of the "
                                        f"inputs, got NoneType"):
        check(None, _x(3))


@pytest.mark.filterwarnings("ignore:.*encountered:RuntimeWarning")
def test_non_finite_message_names_the_element():
    data = np.linspace(1.0, 2.0, 30)
    data[20] = 0.0
    with pytest.raises(GradcheckError, match=r"non-finite gradient at index \(20,\): "
                                             r"analytic -?inf"):
        gradcheck(lambda a: a.sqrt(), tg.tensor(data, requires_grad=True))


def test_messages_say_what_the_compared_values_are():
    with pytest.raises(GradcheckError, match="v\\^T J.*random upstream gradient"):
        gradcheck(SquareOff.apply, _x(3))
    with pytest.raises(GradcheckError, match="for the given grad_outputs v"):
        gradcheck(SquareOff.apply, _x(3), grad_outputs=tg.ones(3, dtype=tg.float64))
    with pytest.raises(GradcheckError) as info:
        gradcheck(SquareOff.apply, _x(3), full_jacobian=True)
    assert "v^T J" not in str(info.value)


class MulOffInG(Function):
    """z = g * x whose gradient for g is 1.5 times too large."""

    def forward(self, g, x):
        return g * x

    def backward(self, grad_out):
        g, x = self.inputs
        return grad_out * x * 1.5, grad_out * g


class HalfSquare(Function):
    """y = x^2 / 2, whose backward (g * x) goes through MulOffInG."""

    def forward(self, x):
        return x * x / 2

    def backward(self, grad_out):
        return MulOffInG.apply(grad_out, self.inputs[0])


def test_gradgradcheck_names_the_callers_inputs_and_gradients():
    with pytest.raises(GradcheckError, match=r"for grad_outputs\[0\] \(shape \(3,\)\) and "
                                             r"the gradient w.r.t. input 0 \(shape \(3,\)\)"):
        gradgradcheck(HalfSquare.apply, _x(3))


class CubeOfAbsUnderNoGrad(Function):
    """y = |x|^3 whose forward overwrites its input with |x| only when no graph is
    recorded (as in the numerical side's calls), with a backward that drops the sign."""

    def forward(self, x):
        if not tg.is_grad_enabled():
            self.xp.abs(x, out=x)
        return self.xp.abs(x) ** 3

    def backward(self, grad_out):
        x, = self.inputs
        return grad_out * 3 * x * x


class SquareScratchesInputOnSecondCall(Square):
    """A right backward that, from its second call on, uses its input as scratch space."""

    def backward(self, grad_out):
        x, = self.inputs
        result = grad_out * 2 * x
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls > 1:
            self.xp.abs(x.data, out=x.data)
        return result


def test_changes_in_place_are_caught_at_every_step():
    x = tg.tensor([-1.5, -0.7, 0.8, 1.2], dtype=tg.float64, requires_grad=True)
    with pytest.raises(GradcheckError, match="a second call of fn changed input 0"):
        gradcheck(CubeOfAbsUnderNoGrad.apply, x)
    with pytest.raises(GradcheckError, match="a second backward pass changed input 0"):
        gradcheck(SquareScratchesInputOnSecondCall.apply, x)


def test_inputs_that_need_no_gradient_may_change():
    """A running statistic passed in and updated by fn: not an input being checked."""
    def fn(a, running):
        running.data[...] = 0.9 * running.data + 0.1 * a.data.mean()
        return a * a

    assert gradcheck(fn, (_x(3), tg.zeros(1, dtype=tg.float64)))


def test_rounding_level_differences_between_calls_are_allowed():
    """A GPU's atomic adds sum in any order: differences of 1e-12 of the largest value
    pass without nondet_tol, larger ones do not."""
    rng = np.random.default_rng(0)

    def noisy(a, scale):
        return a * a * (1 + tg.tensor(rng.standard_normal(a.shape) * scale))

    assert gradcheck(noisy, (_x(3), 1e-14))
    with pytest.raises(GradcheckError, match="not deterministic"):
        gradcheck(noisy, (_x(3), 1e-10))


def test_the_warning_points_at_the_caller():
    small = tg.tensor([1e-3, 1.2e-3, 1.4e-3], dtype=tg.float64, requires_grad=True)
    with pytest.warns(tg.GradcheckWarning) as record:
        gradcheck(CubeOff.apply, small)
    assert record[0].filename == __file__


def test_zero_gradients_with_rounding_noise_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", tg.GradcheckWarning)
        assert gradcheck(lambda a: a.softmax(-1).sum(-1), _x(2, 4))


def test_a_small_view_of_a_large_array_is_not_copied_with_it():
    big = tg.tensor(np.random.default_rng(0).uniform(0.5, 2.0, (2000, 500)))[:, :1]
    held = []

    def fn(a):
        base = a.data if a.data.base is None else a.data.base
        held.append(base.nbytes)
        return a * a

    assert gradcheck(fn, big.detach().requires_grad_(), max_elements=4)
    assert max(held) < 2**20


def test_single_channel_batch_last_input_keeps_every_stride():
    """(N, 1, H, W) stored (1, H, W, N): the size-1 axis keeps its stride too (a
    stride of 0 would read as a broadcast to the library's layout rules)."""
    data = np.random.default_rng(0).uniform(0.5, 2.0, (1, 3, 5, 4))    # (C, H, W, N)
    x = tg.tensor(np.moveaxis(data, -1, 0)).detach().requires_grad_()  # (N, C, H, W) view
    strides = []
    assert gradcheck(lambda a: strides.append(a.data.strides) or a * a, x, max_elements=4)
    assert set(strides) == {x.data.strides}


def test_what_the_check_still_accepts():
    x = _x(3)
    assert gradcheck(lambda a: a * a, x, eps=1e-9)                  # float64 outputs
    assert gradcheck(lambda a: (a * a, (a > 1).astype(tg.float32).mean()), x)  # side output
    assert gradcheck(lambda a: a, x) and gradcheck(lambda a: a.reshape(3, 1).T, x)


def test_inputs_too_large_for_eps_are_refused():
    with pytest.raises(ValueError, match="eps=1e-06 is below the rounding step of input 0"):
        gradcheck(lambda a: a * 2, tg.tensor([1e12], dtype=tg.float64, requires_grad=True))


def test_float32_rounding_is_not_a_wrong_gradient():
    """A gradient that is zero in float64 comes out as float32 rounding noise: that is
    within the precision the own-dtype run is held to."""
    tg.manual_seed(0)
    x = tg.randn(2, 3, 5, 5, requires_grad=True)
    w = tg.randn(4, 3, 3, 3, requires_grad=True)
    b = tg.randn(4, requires_grad=True)
    bn = tg.nn.BatchNorm2d(4).train()
    assert gradcheck(lambda x, w, b: bn(F.conv2d(x, w, b, padding=1)), (x, w, b),
                     max_elements=6)
    assert gradcheck(lambda a: (a * 0.1 + a * 0.2) - a * 0.3, _x(4, dtype=tg.float32))
    # Rounding scales with the largest gradient (1000 here), not with each element: the
    # second one is 0 in float64 and -2.4e-4 in float32 (1000.1 + 2000.2 - 3000.3 rounded).
    assert gradcheck(lambda a: tg.cat([a[:1] * 1000, a[1:] * 1000.1 + a[1:] * 2000.2
                                       - a[1:] * 3000.3]),
                     _x(2, dtype=tg.float32), grad_outputs=tg.ones(2, dtype=tg.float64))


@pytest.mark.parametrize("check", [gradcheck, gradgradcheck])
def test_fn_changing_its_input_in_place_is_caught_by_both_checks(check):
    """gradgradcheck calls fn once more than gradcheck, to learn its outputs: that
    call must not change the values the check starts from (|x| here: the signs)."""
    x = tg.tensor([-1.5, -0.7, 0.8, 1.2], dtype=tg.float64, requires_grad=True)
    with pytest.raises(GradcheckError, match=r"fn changed input 0 \(shape \(4,\)\) in place, "
                                             r"at index \(0,\) from -1.5 to 1.5"):
        check(AbsCubeInPlace.apply, x)
    assert check(AbsCubeInPlace.apply, x, raise_exception=False) is False
    np.testing.assert_array_equal(x.numpy(), [-1.5, -0.7, 0.8, 1.2])


_REFUSED_INPUTS_AND_OUTPUTS = [
    # Finite differences at inf or nan measure nothing, whatever eps.
    (Square.apply, tg.tensor([1.0, np.nan, 2.0], dtype=tg.float64, requires_grad=True),
     ValueError, r"input 0 \(shape \(3,\)\) is nan at index \(1,\) \(1 of 3 values not "
                 r"finite\); a gradient can only be checked at finite values"),
    (Square.apply, tg.tensor([np.inf, 1.0, -np.inf], dtype=tg.float64, requires_grad=True),
     ValueError, r"input 0 \(shape \(3,\)\) is inf at index \(0,\) \(2 of 3 values"),
    (lambda a, b: a * b, (tg.tensor([1.0, 2.0], dtype=tg.float64, requires_grad=True),
                          tg.tensor(np.nan, dtype=tg.float64, requires_grad=True)),
     ValueError, r"input 1 \(shape \(\)\) is nan at index \(\)"),
    # Nothing requires grad: say what was given.
    (Square.apply, tg.tensor([1.0, 2.0]), ValueError,
     r"no input requires grad, so there is nothing to check \(input 0: float32 tensor of "
     r"shape \(2,\), requires_grad=False\); give the tensors to check requires_grad=True"),
    (lambda a, k: a * k, (np.array([1.0, 2.0]), 3), ValueError,
     r"\(input 0: ndarray; input 1: int\); the inputs to check must be tensors with "
     r"requires_grad=True, such as tg\.tensor\(x, dtype=tg\.float64, requires_grad=True\)"),
    (lambda: tg.ones(1), (), ValueError, r"nothing to check \(no inputs\); the inputs to check"),
    # Which output is not a tensor.
    (lambda a: (a * a, 3), tg.tensor([1.0, 2.0], dtype=tg.float64, requires_grad=True),
     TypeError, r"fn must return a tensor or a tuple or list of tensors; its output 1 has "
                r"type int"),
    (lambda a: {"y": a * a}, tg.tensor([1.0, 2.0], dtype=tg.float64, requires_grad=True),
     TypeError, r"its output 0 has type dict"),
]


@pytest.mark.parametrize("check", [gradcheck, gradgradcheck])
@pytest.mark.parametrize("fn, inputs, error, match", _REFUSED_INPUTS_AND_OUTPUTS)
def test_inputs_and_outputs_that_cannot_be_checked_are_named(check, fn, inputs, error, match):
    with pytest.raises(error, match=f"{check.__name__}: .*{match}"):
        check(fn, inputs)


@pytest.mark.parametrize("check, fn", [(gradcheck, SquareOff.apply),
                                       (gradgradcheck, HalfSquare.apply)])
def test_a_seed_drawn_for_the_call_is_named_so_a_failure_can_be_repeated(check, fn):
    x = _x(3)
    with pytest.raises(GradcheckError) as drawn:
        check(fn, x, seed=None)
    m = re.search(r"\[the random values of this check came from seed=(\d+), drawn because "
                  r"seed=None; pass seed=\1 to repeat it\]$", str(drawn.value))
    assert m, str(drawn.value)
    with pytest.raises(GradcheckError) as repeated:
        check(fn, x, seed=int(m.group(1)))
    assert str(drawn.value) == str(repeated.value) + " " + m.group(0)   # the same values
    with pytest.raises(GradcheckError) as given:
        check(fn, x)          # seed=0: the caller knows it
    assert "seed=" not in str(given.value)


_ONES = tg.ones(3, dtype=tg.float64)


@pytest.mark.parametrize("check, fn, kwargs, named", [
    (gradcheck, SquareOff.apply, {}, True),
    (gradcheck, SquareOff.apply, {"max_elements": 2, "full_jacobian": True}, True),  # sampled
    # No random value in the check: any seed repeats it, naming one would mislead.
    (gradcheck, SquareOff.apply, {"full_jacobian": True}, False),
    (gradcheck, SquareOff.apply, {"grad_outputs": _ONES}, False),
    (gradcheck, SquareOff.apply, {"max_elements": 3, "full_jacobian": True}, False),  # all
    # gradgradcheck draws fn's upstream gradients too, unless given.
    (gradgradcheck, HalfSquare.apply, {"full_jacobian": True}, True),
    (gradgradcheck, HalfSquare.apply, {"grad_outputs": _ONES}, True),
    (gradgradcheck, HalfSquare.apply, {"grad_outputs": _ONES, "full_jacobian": True}, False),
])
def test_a_drawn_seed_is_named_only_where_the_check_used_random_values(check, fn, kwargs,
                                                                       named):
    with pytest.raises(GradcheckError) as info:
        check(fn, _x(3), seed=None, **kwargs)
    assert ("drawn because seed=None" in str(info.value)) == named, str(info.value)


class SquareNoisyBackward(Square):
    """A right backward times a random factor within about 1e-4 of 1."""
    rng = np.random.default_rng(0)

    def backward(self, grad_out):
        x, = self.inputs
        return grad_out * 2 * x * float(1 + 1e-4 * self.rng.standard_normal())


def test_nondeterminism_messages_name_the_likely_causes():
    with pytest.raises(GradcheckError, match="draws random numbers, so a graph differentiated "
                                             r"twice gets other gradients \(nondet_tol"):
        gradcheck(SquareNoisyBackward.apply, _x(3))
    assert gradcheck(SquareNoisyBackward.apply, _x(3), nondet_tol=1e-2)

    def fn(a):   # a forward that does something else when no graph is recorded
        return a * a * (2.0 if tg.is_grad_enabled() else 1.0)

    with pytest.raises(GradcheckError, match=r"not deterministic: called twice with the same "
                                             r"inputs \(the second time under no_grad, as the "
                                             r"finite differences call it\)"):
        gradcheck(fn, _x(3))


_KINK_HINT = (r"; the one-sided differences there disagree as well \(\S+ below the point, "
              r"\S+ above it\): where fn has a kink or a tie")


@pytest.mark.parametrize("fn, x, kwargs, kink", [
    (lambda a: a.relu(), [-1.0, 0.0, 2.0], {}, True),
    (lambda a: a.relu(), [-1.0, 0.0, 2.0], {"full_jacobian": True}, True),
    (lambda a: a.clip(0.0, 1.0), [0.5, 1.0], {}, True),                  # at a bound
    (lambda a: F.max_pool2d(a, 2), [[[[1.0, 3.0], [3.0, 0.0]]]], {}, True),  # one gets all
    (lambda a: a.max(), [3.0, 1.0, 3.0, 3.0], {}, True),                 # 1/3 each, not 1/2
    (lambda a: a.relu(), [-1.0, 3e-7, 2.0], {}, True),                   # 0.3 eps from 0
    # x +- eps / 10 rounds to x at 1.5e9: the hint goes by the differences over eps.
    (lambda a: (a - 1.5e9).relu(), [1.5e9 - 5, 1.5e9, 1.5e9 + 5], {}, True),
    # Smooth where the check fails: the hint would mislead.
    (SquareOff.apply, [0.5, 1.0, 1.5], {}, False),
    (SquareOff.apply, [0.5, 1.0, 1.5], {"full_jacobian": True}, False),
    (CubeOff.apply, [-1e-2, 0.0, 1e-2], {"atol": 1e-9}, False),          # flat at 0
    (lambda a: (a * 30).exp(), [0.3, 0.4], {"atol": 0.0, "rtol": 0.0}, False),  # rounding
    (lambda a: SquareOff.apply(a).relu(), [-1.0, 0.0, 2.0], {}, False),  # wrong off the kink
    # At the kink, but the analytic value lies beyond both one-sided slopes: wrong.
    (lambda a: a.relu() + SquareOff.apply(a - 1), [0.0], {}, False),
    # Smooth, but curved so much against the slope that the one-sided differences
    # over eps disagree too (and the analytic value lies between them); over a tenth
    # of eps they disagree a tenth as much, as a curve's do, where a kink's do not.
    (SquareOff.apply, [1e-7], {"atol": 1e-9}, False),                 # near a minimum
    (SquareOff.apply, [1e-7], {"atol": 1e-9, "full_jacobian": True}, False),
    (LogSlightlyOff.apply, [1e-4, 1.0], {}, False),                   # log, steep at 1e-4
    # Smooth, but the outputs (~1e16) round by more than eps changes them: the
    # one-sided differences disagree by rounding noise, not by a jump of the slope.
    (lambda a: a * a, [1.1 * 1e8], {}, False),
])
def test_a_failure_at_a_kink_or_a_tie_says_so(fn, x, kwargs, kink, device):
    """The central difference there is the mean of the two one-sided slopes, which the
    op's rule need not be: the message tells that apart from a wrong backward."""
    x = tg.tensor(x, dtype=tg.float64, device=device, requires_grad=True)
    with pytest.raises(GradcheckError) as info:
        gradcheck(fn, x, **kwargs)
    assert bool(re.search(_KINK_HINT, str(info.value))) == kink, str(info.value)


_ROUNDING_HINT = (r"; the finite difference there is only good to about \S+: fn's outputs "
                  r"reach \S+ and round")


@pytest.mark.parametrize("fn, x, rounding", [
    (lambda a: a + 1e10, [0.5, 1.0, 1.5], True),           # outputs round by ~1e-6
    (lambda a: a * a, [1.1 * 1e8], True),                   # ... by ~2 at 1.2e16
    (lambda a: a * a, [1.1 * 1e8, 0.9 * 1e8], True),
    # Wrong by far more than rounding: the hint would excuse a wrong backward.
    (SquareOff.apply, [1.1 * 1e8], False),
    (SquareOff.apply, [0.5, 1.0, 1.5], False),
    (lambda a: a.relu(), [-1.0, 0.0, 2.0], False),          # a kink, not rounding
])
def test_a_failure_from_rounding_of_large_outputs_says_so(fn, x, rounding):
    """Where fn's outputs are so large that float64 rounds them by as much as eps
    changes them, the numerical side is noise (in PyTorch's check too); the message
    says so, rather than leave a correct backward looking wrong, or call it a kink."""
    x = tg.tensor(x, dtype=tg.float64, requires_grad=True)
    with pytest.raises(GradcheckError) as info:
        gradcheck(fn, x)
    assert bool(re.search(_ROUNDING_HINT, str(info.value))) == rounding, str(info.value)
    if rounding:
        assert not re.search(_KINK_HINT, str(info.value)), str(info.value)
