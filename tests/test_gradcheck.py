"""gradcheck and gradgradcheck themselves: they pass correct gradients and catch wrong ones."""
from __future__ import annotations

import re

import numpy as np
import pytest

import tinygrad_cnn as tg
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


def test_float32_inputs_are_checked_in_float64():
    """In float32, eps=1e-6 would be lost in rounding; the check upcasts first."""
    x = _x(4, dtype=tg.float32)
    seen = []

    def fn(a):
        seen.append(a.dtype)
        return (a * a).sin()

    assert gradcheck(fn, x)
    assert set(seen) == {np.dtype("float64")}


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
    with pytest.raises(GradcheckError):
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


def test_a_backward_that_returns_none_fails_with_a_hint():
    x = _x(3)
    with pytest.raises(GradcheckError, match="no gradient reached input 0"):
        gradcheck(SquareForgetsGradient.apply, x)
    assert gradcheck(SquareForgetsGradient.apply, x, raise_exception=False) is False
    # A backward made of raw arrays: right once, but its output is outside the graph.
    assert gradgradcheck(SquareConstantBackward.apply, x, raise_exception=False) is False


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


def test_inputs_without_elements_check_nothing():
    with pytest.raises(ValueError, match="nothing to check"):
        gradcheck(SquareOff.apply, tg.zeros(0, dtype=tg.float64, requires_grad=True))
