"""Bad input gets a clear error that names what was wrong (shapes, dtypes, devices)."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import functional as F
from tinygrad_cnn import backend as backend_module
from tinygrad_cnn.backend import DeviceError, NumpyBackend
from tinygrad_cnn._checks import check_cast_fits


@pytest.mark.parametrize("op", [
    lambda x, y: x + y, lambda x, y: x - y, lambda x, y: x * y, lambda x, y: x / y,
    lambda x, y: x ** y, lambda x, y: x.maximum(y), lambda x, y: x.minimum(y),
    lambda x, y: tg.where(x > 0, x, y), lambda x, y: x < y,
], ids=["add", "sub", "mul", "div", "pow", "maximum", "minimum", "where", "less"])
def test_incompatible_shapes_name_both(op):
    x, y = tg.ones(2, 3), tg.ones(4)
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4,\)"):
        op(x, y)


@pytest.mark.parametrize("xs, ys", [((2, 3), (4, 5)), ((3,), (4,)), ((2, 3), (2,)),
                                    ((3,), (2, 4)), ((5, 2, 3), (5, 4, 1))])
def test_matmul_inner_dimension_mismatch(xs, ys):
    with pytest.raises(ValueError, match=r"matmul: inner dimensions") as info:
        tg.ones(*xs) @ tg.ones(*ys)
    assert str(xs) in str(info.value) and str(ys) in str(info.value)


def test_matmul_batch_and_0d_errors():
    with pytest.raises(ValueError, match=r"\(2,\) and \(3,\)"):
        tg.ones(2, 2, 3) @ tg.ones(3, 3, 4)
    with pytest.raises(ValueError, match="at least one dimension"):
        tg.tensor(2.0) @ tg.ones(2)


def test_backward_on_a_non_scalar_needs_a_grad():
    y = tg.ones(2, 3, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match=r"\(2, 3\).*pass grad"):
        y.backward()
    with pytest.raises(RuntimeError, match="grad"):
        tg.grad(y, [y])


def test_backward_with_a_grad_of_the_wrong_shape():
    x = tg.ones(2, 3, requires_grad=True)
    y = x * 2
    with pytest.raises(ValueError, match=r"grad has shape \(3, 2\).*\(2, 3\)"):
        y.backward(tg.ones(3, 2))
    with pytest.raises(ValueError, match=r"\(6,\).*\(2, 3\)"):
        tg.grad(y, [x], grad_outputs=tg.ones(6))


def test_backward_on_a_tensor_without_grad():
    with pytest.raises(RuntimeError, match="does not require grad"):
        tg.ones(2).sum().backward()
    with pytest.raises(RuntimeError, match=r"input of shape \(2,\) does not require grad"):
        tg.grad(tg.ones(2, requires_grad=True).sum(), [tg.ones(2)])
    # An input that requires grad, behind an op without a gradient: the message
    # names that cause too.
    with pytest.raises(RuntimeError, match=r"graph was cut: by an op without a gradient "
                                           r"\(floor, ceil, round, sign"):
        tg.tensor([1.5], requires_grad=True).floor().sum().backward()


@pytest.mark.parametrize("make", [
    lambda: tg.tensor([1, 2], requires_grad=True),
    lambda: tg.tensor(np.array([1, 2], dtype=np.int32), requires_grad=True),
    lambda: tg.tensor([True], requires_grad=True),
    lambda: tg.arange(3, requires_grad=True),
], ids=["int64", "int32", "bool", "arange"])
def test_requires_grad_on_an_integer_tensor(make):
    with pytest.raises(TypeError, match=r"only floating-point tensors can require gradients.*"
                                        r"(int|bool)"):
        make()


def test_unknown_device_and_dtype():
    with pytest.raises(DeviceError, match=r"unknown device 'gpu'"):
        tg.tensor([1.0], device="gpu")
    with pytest.raises(DeviceError, match=r"unknown device"):
        tg.ones(1).to("npu")
    with pytest.raises(TypeError, match="dtype"):
        tg.tensor([1.0], dtype="complex64")
    with pytest.raises(TypeError, match="dtype"):
        tg.tensor(["a", "b"])
    with pytest.raises(TypeError, match="unknown dtype"):
        tg.zeros(2, dtype="float33")


@pytest.mark.parametrize("call", [
    lambda other: tg.zeros(2, dtype=other),
    lambda other: tg.tensor([1.0], dtype=other),
    lambda other: tg.ones(2).to(dtype=other),
    lambda other: tg.ones(2).to("cpu", other),
    lambda other: tg.nn.Linear(2, 2).to(dtype=other),
    lambda other: tg.zeros_like(tg.ones(2), dtype=other),
    lambda other: tg.ones_like(tg.ones(2), dtype=other),
])
def test_a_tensor_given_as_dtype_is_refused(call):
    # NumPy reads any object with a .dtype as that dtype: the tensor's device was lost.
    with pytest.raises(TypeError, match=r"dtype must be a dtype .* got a tensor of shape "
                                        r"\(3,\); pass its \.dtype"):
        call(tg.zeros(3, dtype=tg.float64))


class _SecondHost(NumpyBackend):
    """Another NumPy backend, registered under its own device name."""


@pytest.fixture
def second_device():
    name = "hostb"
    tg.register_backend(name, _SecondHost())
    yield name
    backend_module._BACKENDS.pop(name, None)


@pytest.mark.parametrize("op", [
    lambda x, y: x + y, lambda x, y: x @ y, lambda x, y: tg.stack([x, y]),
    lambda x, y: tg.where(x > 0, x, y), lambda x, y: x < y, lambda x, y: x[y.astype("int64")],
], ids=["add", "matmul", "stack", "where", "less", "index"])
def test_mixing_devices_names_both(op, second_device):
    x = tg.ones(3, requires_grad=True)
    y = tg.ones(3, device=second_device)
    with pytest.raises(DeviceError, match=rf"different devices: (cpu and {second_device}|"
                                          rf"{second_device} and cpu).*\.to\(device\)"):
        op(x, y)


@pytest.mark.parametrize("join", ["stack", "concatenate", "cat"])
def test_joining_tensors_of_two_devices_names_the_function(join, second_device):
    x, y = tg.ones(3), tg.ones(3, device=second_device)
    name = "concatenate" if join == "cat" else join
    with pytest.raises(DeviceError, match=rf"^{name}: tensors are on different devices: "
                                          rf"cpu and {second_device}"):
        getattr(tg, join)([x, y])


# An argument on another device than x: the error names the function, which argument is
# where, and what to do (the op's own error named an inner op: MatMul for linear).
ARGUMENT_ON_ANOTHER_DEVICE = [
    (lambda d, o: F.linear(tg.ones(2, 3, device=d), tg.ones(4, 3, device=o)),
     "linear: x is on {d} but w is on {o}; move them to one device with .to(device)"),
    (lambda d, o: F.linear(tg.ones(2, 3, device=d), tg.ones(4, 3, device=d), tg.ones(4, device=o)),
     "linear: x is on {d} but b is on {o}; move them to one device with .to(device)"),
    (lambda d, o: F.conv2d(tg.ones(1, 1, 5, 5, device=d), tg.ones(2, 1, 3, 3, device=o)),
     "conv2d: x is on {d} but w is on {o}; move them to one device with .to(device)"),
    (lambda d, o: F.conv1d(tg.ones(1, 1, 5, device=d), tg.ones(2, 1, 3, device=d),
                           tg.ones(2, device=o)),
     "conv1d: x is on {d} but b is on {o}; move them to one device with .to(device)"),
    (lambda d, o: F.conv_transpose2d(tg.ones(1, 1, 5, 5, device=d), tg.ones(1, 2, 3, 3, device=o)),
     "conv_transpose2d: x is on {d} but w is on {o}; move them to one device with .to(device)"),
    (lambda d, o: F.local2d(tg.ones(1, 1, 5, 5, device=d), tg.ones(2, 3, 3, 1, 3, 3, device=o)),
     "local2d: x is on {d} but w is on {o}; move them to one device with .to(device)"),
    (lambda d, o: tg.ones(3, device=d).clip(min=tg.zeros(3, device=o)),
     "clip: x is on {d} but min is on {o}; move them to one device with .to(device)"),
    (lambda d, o: tg.ones(3, device=d).clip(max=tg.zeros(3, device=o)),
     "clip: x is on {d} but max is on {o}; move them to one device with .to(device)"),
]


@pytest.mark.parametrize("call, message", ARGUMENT_ON_ANOTHER_DEVICE,
                         ids=["linear-w", "linear-b", "conv2d-w", "conv1d-b",
                              "conv_transpose2d-w", "local2d-w", "clip-min", "clip-max"])
def test_an_argument_on_another_device_is_named(call, message, device):
    other = "strict" if device == "cpu" else "cpu"
    with pytest.raises(DeviceError) as info:
        call(device, other)
    assert str(info.value) == message.format(d=device, o=other)


def test_backward_grad_on_another_device(second_device):
    x = tg.ones(2, requires_grad=True)
    with pytest.raises(DeviceError, match=second_device):
        (x * 2).backward(tg.ones(2, device=second_device))


@pytest.mark.parametrize("index", [5, -6, (0, 7), [0, 5], ([1], [9]), np.array([[4, 1]])],
                         ids=["int", "neg-int", "second-axis", "array", "arrays", "array-2d"])
def test_out_of_range_integer_index(index):
    x = tg.ones(4, 5)
    if isinstance(index, int):
        x = tg.ones(5)
    with pytest.raises(IndexError, match=r"(out of|out of bounds|range).*") as info:
        x[index]
    assert str(x.shape) in str(info.value)


def test_bad_boolean_mask_shape():
    with pytest.raises(IndexError, match=r"boolean index of shape \(3,\)"):
        tg.ones(4, 5)[np.array([True, False, True])]


@pytest.mark.parametrize("call", [
    lambda x: x.sum(axis=3), lambda x: x.mean(axis=-4), lambda x: x.max(dim=5),
    lambda x: x.var(axis=(0, 3)), lambda x: x.softmax(axis=3), lambda x: x.logsumexp(axis=-4),
    lambda x: x.squeeze(7), lambda x: x.unsqueeze(5), lambda x: x.swapaxes(0, 3),
    lambda x: x.permute(0, 1, 3), lambda x: x.transpose(0, 3), lambda x: x.argmax(axis=3),
    lambda x: tg.concatenate([x, x], axis=3), lambda x: tg.stack([x, x], axis=5),
    lambda x: x.split(2, axis=3), lambda x: x.flatten(0, 3),
], ids=["sum", "mean", "max", "var", "softmax", "logsumexp", "squeeze", "unsqueeze",
        "swapaxes", "permute", "transpose", "argmax", "concatenate", "stack", "split",
        "flatten"])
def test_bad_axis(call):
    with pytest.raises(ValueError, match=r"axis .* out of range|not a permutation"):
        call(tg.ones(2, 3, 4))


def test_bad_axis_on_a_0d_tensor():
    s = tg.tensor(1.0)
    assert s.sum(axis=0).item() == 1.0 and s.sum(axis=-1).item() == 1.0   # as PyTorch
    with pytest.raises(ValueError, match="out of range"):
        s.sum(axis=1)


def test_other_axis_errors():
    x = tg.ones(2, 3)
    with pytest.raises(ValueError, match="repeated axis"):
        x.sum(axis=(1, -1))
    with pytest.raises(TypeError, match="axis must be an int"):
        x.sum(axis=1.5)
    with pytest.raises(TypeError, match="either axis or dim"):
        x.sum(axis=0, dim=1)
    with pytest.raises(ValueError, match=r"axis 0 of shape \(2, 3\) has size 2"):
        x.squeeze(0)


def test_shape_op_errors():
    x = tg.ones(2, 3)
    with pytest.raises(ValueError, match=r"cannot reshape a tensor of shape \(2, 3\)"):
        x.reshape(4, 2)
    with pytest.raises(ValueError, match="only one dimension can be -1"):
        x.reshape(-1, -1)
    # With no elements, -1 beside a 0 could be any size (it was a ZeroDivisionError).
    with pytest.raises(ValueError, match=r"cannot reshape a tensor of shape \(0, 3\) into "
                                         r"\(0, -1\)"):
        tg.ones(0, 3).reshape(0, -1)
    with pytest.raises(ValueError, match=r"cannot broadcast a tensor of shape \(2, 3\) to"):
        x.broadcast_to(3, 3)
    with pytest.raises(ValueError, match=r"shapes \(2, 3\) and \(2, 4\)"):
        tg.concatenate([x, tg.ones(2, 4)], axis=0)
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(3, 2\)"):
        tg.stack([x, tg.ones(3, 2)])
    with pytest.raises(ValueError, match="equal sections"):
        x.split(2, axis=1)
    with pytest.raises(ValueError, match="widths must be >= 0"):
        x.pad(-1)
    with pytest.raises(ValueError, match="at least one tensor"):
        tg.concatenate([])
    with pytest.raises(ValueError, match="empty"):
        tg.ones(0).max()


def test_function_with_a_wrong_gradient_shape_is_reported():
    class Bad(tg.Function):
        """y = x, with a backward of the wrong shape."""

        def forward(self, x):
            return x.copy()

        def backward(self, grad_out):
            return grad_out.sum()

    x = tg.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"Bad.backward returned a gradient of shape \(\) "
                                           r"for input 0 \(shape \(3,\)\)"):
        Bad.apply(x).sum().backward()


def test_a_wrong_gradient_names_the_input_it_was_for():
    """Inputs of one shape are told apart by their position, as in ``apply``."""
    class RowSums(tg.Function):
        """z = sum(x * y, axis=1), whose backward returns grad_out itself for y."""

        def forward(self, x, y):
            return (x * y).sum(axis=1)

        def backward(self, grad_out):
            x, y = self.inputs
            g = grad_out.unsqueeze(1)                       # (N, 1)
            return g * y, grad_out

    class RawForY(RowSums):
        def backward(self, grad_out):
            x, y = self.inputs
            return grad_out.unsqueeze(1) * y, (grad_out.unsqueeze(1) * x).data

    x, y = tg.ones(2, 3, requires_grad=True), tg.ones(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"RowSums.backward returned a gradient of shape "
                                           r"\(2,\) for input 1 \(shape \(2, 3\)\)"):
        RowSums.apply(x, y).sum().backward()
    with pytest.raises(TypeError, match=r"RawForY.backward must return Tensors \(or None\), "
                                        r"got ndarray for input 1 \(shape \(2, 3\)\)"):
        RawForY.apply(x, y).sum().backward()
    z = tg.ones(2, 3)
    out = x * z
    with tg.no_grad():
        z += 1
    with pytest.raises(RuntimeError, match=r"input 1 \(shape \(2, 3\)\) of Mul was modified "
                                           r"in place"):
        out.sum().backward()


def test_a_tensor_that_requires_grad_given_to_apply_as_a_keyword_is_refused():
    """A keyword is a parameter, outside the graph: its gradient would be lost."""
    class Scale(tg.Function):
        """y = x * w, w read as a parameter."""

        def forward(self, x, w):
            return x * w.data

        def backward(self, grad_out):
            return grad_out * 2.0

    x, w = tg.ones(2, requires_grad=True), tg.full((2,), 2.0, requires_grad=True)
    with pytest.raises(TypeError, match=r"Scale.apply: the keyword argument w is a tensor "
                                        r"that requires grad \(shape \(2,\)\); pass it "
                                        r"positionally"):
        Scale.apply(x, w=w)
    assert Scale.apply(x, w=w.detach()).tolist() == [2.0, 2.0]   # a constant is a parameter


def test_pad_and_sum_to_shape_errors():
    with pytest.raises(ValueError, match=r"pad_width .* shape \(2,\)"):
        tg.ones(2).pad(((1, 1), (1, 1)))
    with pytest.raises(ValueError, match=r"shape \(2, 3\) cannot be summed to \(2,\)"):
        tg.ones(2, 3).sum_to((2,))
    assert tg.ones(2, 3).sum_to((1, 3)).tolist() == [[2.0, 2.0, 2.0]]


def test_function_backward_must_return_one_tensor_per_input():
    class TooFew(tg.Function):
        """z = x + y, whose backward forgets y."""

        def forward(self, x, y):
            return x + y

        def backward(self, grad_out):
            return grad_out

    class RawArray(tg.Function):
        """y = x, whose backward returns a raw array."""

        def forward(self, x):
            return x.copy()

        def backward(self, grad_out):
            return grad_out.data

    class TooMany(RawArray):
        """y = x, whose backward returns two gradients for one input."""

        def backward(self, grad_out):
            return grad_out, grad_out

    class OnTheHost(RawArray):
        """y = x, whose backward returns its gradient on the default device."""

        def backward(self, grad_out):
            return tg.tensor(grad_out.numpy())

    class OptionalNone(RawArray):
        """y = x; a trailing None for an optional input that was not given is fine."""

        def backward(self, grad_out):
            return grad_out, None

    x, y = tg.ones(2, requires_grad=True), tg.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"TooFew.backward returned 1 gradient\(s\) for 2"):
        TooFew.apply(x, y).sum().backward()
    with pytest.raises(RuntimeError, match=r"TooMany.backward returned 2 gradient\(s\) for 1"):
        TooMany.apply(x).sum().backward()
    OptionalNone.apply(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0]
    with pytest.raises(TypeError, match=r"RawArray.backward must return Tensors.*ndarray"):
        RawArray.apply(x).sum().backward()
    with pytest.raises(RuntimeError, match=r"OnTheHost.backward returned a gradient on cpu for "
                                           r"input 0, which is on strict"):
        OnTheHost.apply(tg.ones(2, requires_grad=True, device="strict")).sum().backward()


def test_flatten_start_after_end_names_both():
    with pytest.raises(ValueError, match=r"start_dim 2 .* end_dim 0"):
        tg.ones(2, 3, 4).flatten(2, 0)


def test_shapes_must_be_ints():
    with pytest.raises(TypeError, match=r"2\.9.*\(2\.9, 3\)"):
        tg.arange(6.0).reshape(2.9, 3)
    with pytest.raises(TypeError, match=r"2\.5"):
        tg.zeros(2.5)
    with pytest.raises(TypeError, match=r"True"):
        tg.zeros(True, 2)
    # integer-like sizes are fine: NumPy integers, 0-d integer arrays and tensors
    x = tg.arange(6.0)
    assert x.reshape(np.int64(2), np.array(3)).shape == (2, 3)
    assert x.reshape(tg.tensor(3), 2).shape == (3, 2)


def test_ragged_nested_lists_are_named():
    with pytest.raises(ValueError, match="rectangular"):
        tg.tensor([[1, 2], [3]])


def test_integer_tensor_to_a_negative_integer_power():
    with pytest.raises(ValueError, match=r"int64.*negative integer power"):
        tg.tensor([1, 2]) ** -1
    with pytest.raises(ValueError, match=r"int64.*negative integer power"):
        tg.tensor([1, 2]) ** tg.tensor([1, -1])
    assert (tg.tensor([1, 2]) ** -1.0).tolist() == [1.0, 0.5]


def test_python_int_out_of_an_integer_dtype_range():
    with pytest.raises(OverflowError, match=r"-1.*uint8.*0\.\.255"):
        tg.tensor(np.array([0], np.uint8)) + (-1)
    with pytest.raises(OverflowError, match=r"300.*int8"):
        tg.tensor(np.array([0], np.int8)) + 300


def _assign(target, index, value):
    target[index] = value


def _iadd(target, value):
    target += value


@pytest.mark.parametrize("make, error, match", [
    (lambda: tg.tensor([300], dtype="uint8"), OverflowError, r"tensor: the value 300 .*uint8 "
                                                             r"\(range 0\.\.255\)"),
    (lambda: tg.tensor([2**40], dtype="int32"), OverflowError, r"1099511627776 .*int32"),
    (lambda: tg.tensor(np.int64(300), dtype="uint8"), OverflowError, r"300 .*uint8"),
    (lambda: tg.tensor([np.int64(-1), 2], dtype="uint64"), OverflowError, r"-1 .*uint64"),
    (lambda: tg.tensor([float("nan")], dtype="int64"), ValueError, r"NaN .*int64"),
    (lambda: tg.tensor(np.arange(40.0).tolist() + [-129.0], dtype="int8"), OverflowError,
     r"-129\.0 .*int8"),
    (lambda: tg.tensor([1.0, float("inf")], dtype="int64"), OverflowError, r"inf .*int64"),
    (lambda: tg.tensor([2.0**31], dtype="int32"), OverflowError, r"2147483648\.0 .*int32"),
    (lambda: tg.tensor(2**70), OverflowError, r"1180591620717411303424.*64 bits"),
    (lambda: tg.tensor([2**64], dtype="uint64"), OverflowError, r"18446744073709551616.*64 bits"),
    (lambda: tg.tensor([2**1100], dtype="float64"), OverflowError,
     r"Python int 13582985290493858492\.\.\. \(332 digits\): it is too large for any float"),
    (lambda: tg.full((2,), 1e10, dtype="int32"), OverflowError,
     r"fill_value.*10000000000.0 .*int32"),
    (lambda: tg.full((2,), 300, dtype="uint8"), OverflowError, r"fill_value.*300.*uint8"),
    (lambda: tg.full((2,), float("nan"), dtype="int16"), ValueError, r"fill_value.*NaN.*int16"),
    # Python ints beyond 64 bits are named too, not "Invalid integer data type 'O'"
    (lambda: tg.full((2,), 2**64, dtype="int64"), OverflowError,
     r"full: fill_value: the value 18446744073709551616 does not fit the dtype int64"),
    (lambda: tg.full((2,), -2**70, dtype="uint8"), OverflowError,
     r"-1180591620717411303424 .*uint8"),
    (lambda: tg.full((2,), 2**1100), OverflowError, r"full: fill_value: the Python int .*float"),
    (lambda: tg.tensor([[1]]).pad(((1, 1), (0, 0)), value=2**64), OverflowError,
     r"pad: value: the value 18446744073709551616 does not fit the dtype int64"),
    (lambda: _assign(tg.zeros(3, dtype="int32"), 0, tg.tensor(2**40)), OverflowError,
     r"item assignment.*1099511627776 .*int32"),
    # a NumPy int is named by what it is used for (it was "a Python int operand")
    (lambda: _assign(tg.zeros(3, dtype="int32"), 0, np.int64(2**40)), OverflowError,
     r"^item assignment into a tensor of dtype int32: the value 1099511627776 does not fit"),
    (lambda: tg.zeros(3, dtype="int32") + np.int64(2**40), OverflowError,
     r"^an int operand: the value 1099511627776 does not fit the dtype int32"),
    (lambda: _iadd(tg.zeros(3, dtype="int8"), 300), OverflowError,
     r"^in-place add into a tensor of dtype int8: the value 300"),
    (lambda: _assign(tg.zeros(3, dtype="int8"), slice(None), tg.tensor([1, 200, 1])),
     OverflowError, r"item assignment.*200 .*int8 \(range -128\.\.127\)"),
    (lambda: _iadd(tg.zeros(3, dtype="int8"), tg.tensor([1, 200, 1])), OverflowError,
     r"in-place add.*200 .*int8"),
    (lambda: _iadd(tg.zeros(40, dtype="int8"), tg.arange(40) * -10), OverflowError,
     r"in-place add.*-390 .*int8"),
], ids=["uint8", "int32", "numpy-int", "list-of-numpy-ints", "nan", "many-values", "inf",
        "float-edge", "python-int", "beyond-64-bits", "beyond-float64", "full", "full-uint8",
        "full-nan", "full-int64-big", "full-uint8-big", "full-float-big", "pad-big", "setitem",
        "setitem-numpy-int", "operand-numpy-int", "iadd-python-int", "setitem-slice", "iadd",
        "iadd-many-values"])
def test_values_an_integer_dtype_cannot_hold_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


def _refuse(name):
    def refused(*args, **kwargs):
        raise AssertionError(f"{name} was called")
    return refused


def test_the_checks_on_hot_paths_do_no_needless_work(monkeypatch):
    """Indexing, item assignment, in-place ops and tensor() of Python numbers run in
    tight loops: their checks must not ask np.iinfo for bounds on each call, run the
    ufunc to learn an in-place result's dtype again, or test a float array in
    several passes (isnan, trunc, comparisons); they were 2-5 times slower so."""
    x, y = tg.zeros(4, 4), tg.ones(4, 4)
    xi = tg.zeros(100, dtype="int8")
    # The first use of a dtype, or of a pair of them, may learn what it needs.
    x *= y
    xi[:] = tg.arange(100)
    tg.tensor([1.5], dtype="int32")
    for name in ("iinfo", "result_type", "isnan", "trunc"):
        monkeypatch.setattr(np, name, _refuse(f"np.{name}"))
    x[0] = 1.0
    x *= y
    assert x[0, 1].item() == 1.0 and x[-1].tolist() == [0.0] * 4
    assert tg.tensor([1.5, 2.0] * 20, dtype="int32").tolist()[:2] == [1, 2]
    xi[:] = tg.arange(100)
    with pytest.raises(OverflowError, match=r"the value 128\.5 does not fit the dtype int8"):
        tg.tensor([0.5] * 30 + [128.5], dtype="int8")


def test_arrays_and_tensors_given_a_dtype_are_cast_as_astype_casts_them():
    # As torch.tensor: only Python numbers must fit; an array or a tensor is cast as
    # .to() casts it (tg.tensor(t, dtype="uint8") raised while t.astype("uint8") wrapped).
    t = tg.tensor([300, -1])
    assert tg.tensor(t, dtype="uint8").tolist() == t.astype("uint8").tolist() == [44, 255]
    assert tg.tensor(np.array([300, -1]), dtype="uint8").tolist() == [44, 255]
    assert tg.tensor(np.array([2.7, -2.7]), dtype="int32").tolist() == [2, -2]


def test_python_ints_beyond_64_bits_make_float_tensors_as_in_torch():
    # A float dtype was asked for, so "use a float dtype" was no answer.
    assert tg.tensor([2**64], dtype="float32").tolist() == [2.0**64]
    assert tg.tensor([2**64, 0.5], dtype="float64").tolist() == [2.0**64, 0.5]
    assert tg.tensor([2**64, 0], dtype="bool").tolist() == [True, False]
    assert tg.full((1,), 2**64).tolist() == [2.0**64]
    assert tg.full((1,), 2**64, dtype="bool").tolist() == [True]


def test_values_an_integer_dtype_can_hold_are_converted():
    # Fractions are cut towards zero, as in PyTorch; the range ends are kept exactly.
    assert tg.tensor([1.5, -0.5, 255.9], dtype="uint8").tolist() == [1, 0, 255]
    assert tg.tensor([-2.0**63], dtype="int64").tolist() == [-2**63]
    assert tg.full((2,), 2.5, dtype="int32").tolist() == [2, 2]
    # Beyond a range end by less than 1 fits too, on each path that checks values.
    # 32 values: more than 16 take the min/max path (up to 16, as in the rows above, are
    # compared one by one).
    assert tg.tensor([0.0] * 30 + [127.9, -128.9], dtype="int8").tolist()[30:] == [127, -128]
    assert [tg.full((1,), v, dtype="uint8").item() for v in (255.9, -0.9)] == [255, 0]
    assert tg.tensor([[1]], dtype="int8").pad(1, value=-128.9).tolist()[0] == [-128] * 3
    # No public call casts fractional floats to an integer dtype on a deferring device
    # (where the check is a reduction run there): in-place ops and item assignment refuse
    # float into int first, and a tensor made from a tensor is cast as astype casts,
    # unchecked.  So that path is tested by calling the private check itself.
    for device in ("cpu", "strict"):   # deferred on "strict": synchronize() would raise
        backend = tg.get_backend(device)
        for values, dtype in (([127.9, -128.9], "int8"), ([255.9, -0.9], "uint8")):
            check_cast_fits(backend.asarray(np.array(values)), np.dtype(dtype), "a test", backend)
        backend.synchronize()
    x = tg.zeros(3, dtype="int8")
    x[:] = tg.tensor([-128, 0, 127])
    x += tg.tensor([1, 2, -3])
    assert x.tolist() == [-127, 2, 124]


@pytest.mark.parametrize("call, error, match", [
    (lambda x: x.pad(1.5), TypeError, r"pad: widths must be ints, got 1\.5"),
    (lambda x: x.pad(((1, 1), (0, 2.0))), TypeError, r"widths must be ints"),
    (lambda x: x.pad(True), TypeError, r"widths must be ints, got True"),
    (lambda x: x.pad(1, value="a"), TypeError, r"pad: value must be a number, got 'a'"),
    (lambda x: x.pad(1, value=None), TypeError, r"pad: value must be a number, got None"),
    (lambda x: x.astype("uint8").pad(1, value=300), OverflowError, r"pad: value.*300.*uint8"),
    (lambda x: F.pad(x, 1), TypeError, r"pad must be a tuple or list of ints of even length"),
    (lambda x: F.pad(x, (1, 1), value="a"), TypeError, r"pad: value must be a number"),
    # a wrong type is a TypeError (it was a ValueError), a wrong count a ValueError
    (lambda x: F.pad(x, (1, 1.5)), TypeError, r"pad must be a tuple or list of ints.*1\.5"),
    (lambda x: F.pad(x, (1, True)), TypeError, r"pad must be a tuple or list of ints"),
    (lambda x: F.pad(x, (1, 1, 1)), ValueError, r"pad: expected an even number of ints"),
], ids=["fraction", "fraction-pair", "bool", "str-value", "none-value", "value-range",
        "F-int", "F-str-value", "F-fraction", "F-bool", "F-odd"])
def test_pad_argument_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(tg.ones(2, 3))


@pytest.mark.parametrize("shape, pad, mode, kwargs, match", [
    # reflect: each amount below the size of its dimension
    ((1, 2, 4), (4, 0), "reflect", {},
     r"mode='reflect' needs each amount < the size of its dimension; got \(4, 0\) for "
     r"dimension 2 \(size 4\) of the input of shape \(1, 2, 4\), so at most 3"),
    ((1, 3, 4), (1, 1, 0, 3), "reflect", {},
     r"got \(0, 3\) for dimension 1 \(size 3\) of the input of shape \(1, 3, 4\), so at most 2"),
    ((1, 2, 4), (-2, 4), "reflect", {}, r"got \(-2, 4\) for dimension 2 \(size 4\).*at most 3"),
    # circular: each amount at most what is left of the dimension after any crop
    ((1, 2, 4), (5, 0), "circular", {},
     r"mode='circular' wraps around at most once, so each amount must be <= the 4 element\(s\) "
     r"left of dimension 2 \(size 4\) of the input of shape \(1, 2, 4\) after any crop; "
     r"got \(5, 0\)"),
    ((2, 4), (-2, 3), "circular", {}, r"<= the 2 element\(s\) left of dimension 1 \(size 4\) "
                                      r"of the input of shape \(2, 4\).*got \(-2, 3\)"),
    ((2, 4), (-5, 1), "circular", {},
     r"pad: \(-5, 1\) crops 5 elements from dimension 1 \(size 4\) of the input of shape "
     r"\(2, 4\), which has only 4"),
    # reflect and replicate keep at least one element, and need one to copy
    ((1, 2, 4), (-4, 0), "replicate", {},
     r"mode='replicate' must leave at least 1 element; \(-4, 0\) leaves 0 of dimension 2 "
     r"\(size 4\) of the input of shape \(1, 2, 4\)"),
    ((1, 2, 0), (1, 1), "replicate", {},
     r"cannot pad dimension 2 \(size 0\) of the input of shape \(1, 2, 0\): it has no "
     r"element to repeat"),
    ((2, 0, 3), (0, 0, 1, 1), "reflect", {}, r"dimension 1 \(size 0\).*no element to reflect"),
    # the mode names PyTorch knows, and no other
    ((1, 2, 4), (1, 1), "zeros", {},
     r"pad: mode must be one of 'constant', 'reflect', 'replicate', 'circular', got 'zeros'"),
    ((1, 2, 4), (1, 1), "Reflect", {}, r"mode must be one of .*, got 'Reflect'"),
    ((1, 2, 4), (1, 1), None, {}, r"mode must be one of .*, got None"),
    # 1, 2 or 3 padded dimensions, with one or two more in front
    ((5,), (1, 1), "reflect", {},
     r"mode='reflect' pads the last 1, 2 or 3 dimensions of a batched \(N, C, \.\.\.\) or "
     r"unbatched \(C, \.\.\.\) input, so 1 \(before, after\) pair\(s\) need a 2-d or 3-d "
     r"input; got pad \(1, 1\) for the 1-d input of shape \(5,\)"),
    ((1, 2, 3, 4), (1, 1), "replicate", {},
     r"1 \(before, after\) pair\(s\) need a 2-d or 3-d input; got pad \(1, 1\) for the "
     r"4-d input of shape \(1, 2, 3, 4\)"),
    ((1, 1, 2, 3, 4), (1, 1, 1, 1), "circular", {},
     r"2 \(before, after\) pair\(s\) need a 3-d or 4-d input; got pad \(1, 1, 1, 1\) for "
     r"the 5-d input of shape \(1, 1, 2, 3, 4\)"),
    ((1, 1, 2, 2, 3, 4), (1,) * 8, "circular", {},
     r"4 \(before, after\) pair\(s\) need a 5-d or 6-d input; got pad \(1, 1, 1, 1, 1, 1, 1, "
     r"1\) for the 6-d input"),
    ((2, 3), (), "reflect", {}, r"0 \(before, after\) pair\(s\).*got pad \(\) for the 2-d"),
    # the modes that copy x's elements take no value
    ((1, 2, 4), (1, 1), "reflect", {"value": 1.5},
     r"mode='reflect' copies x's own elements and takes no value \(0 or None\), got "
     r"value=1\.5"),
], ids=["reflect-size", "reflect-size-dim1", "reflect-size-after-crop", "circular-twice",
        "circular-after-crop", "circular-crop-too-much", "replicate-leaves-none",
        "replicate-empty", "reflect-empty", "mode-zeros", "mode-case", "mode-none",
        "reflect-1d-input", "replicate-1-pair-4d", "circular-2-pairs-5d", "circular-4-pairs",
        "reflect-no-pairs", "reflect-value"])
def test_pad_mode_errors(shape, pad, mode, kwargs, match):
    with pytest.raises(ValueError, match=match):
        F.pad(tg.ones(*shape), pad, mode=mode, **kwargs)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_pad_modes_accept_a_zero_value(mode):
    # As torch.nn.functional.pad: value 0 or None is the default, not a fill value.
    x = tg.tensor([[1.0, 2.0, 3.0]])
    for value in (0, 0.0, None):
        assert F.pad(x, (1, 1), mode=mode, value=value).shape == (1, 5)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("pad", [(0, 0), (-1, 0)], ids=["nothing", "crop"])
def test_pad_modes_return_a_tensor_of_their_own(mode, pad):
    # A write to the result must not reach x, even when nothing is padded.
    x = tg.tensor([[1.0, 2.0, 3.0]])
    y = F.pad(x, pad, mode=mode)
    y[...] = 7.0
    assert x.tolist() == [[1.0, 2.0, 3.0]]


def test_functional_pad_takes_0d_tensors_and_numpy_ints_as_amounts():
    x = tg.ones(1, 2)
    assert F.pad(x, (np.int64(1), tg.tensor(0))).shape == (1, 3)
    assert F.pad(x, [1, 1, 0, 1]).shape == (2, 4)


def test_functional_pad_may_crop_a_dimension_to_nothing():
    # As torch.nn.functional.pad: cropping every element is allowed (one more is refused).
    x = tg.ones(2, 5, requires_grad=True)
    y = F.pad(x, (-3, -2))
    assert y.shape == (2, 0)
    y.sum().backward()
    assert x.grad.tolist() == [[0.0] * 5] * 2


def test_functional_pad_with_value_none_pads_zeros():
    # torch.nn.functional.pad reads value=None as 0 (it gave NaN here).
    assert F.pad(tg.ones(2), (1, 1), value=None).tolist() == [0.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("call, error, match", [
    (lambda: F.dropout(tg.arange(4), 0.5), TypeError, r"dropout: x has dtype int64.*floating"),
    (lambda: F.dropout(tg.ones(4, dtype="bool"), 0.3), TypeError, r"dtype bool"),
    (lambda: F.dropout(tg.ones(4), True), TypeError, r"dropout: p must be a probability.*True"),
    (lambda: F.dropout(tg.ones(4), "0.5"), TypeError, r"probability.*'0\.5'"),
    (lambda: F.dropout(tg.ones(4), float("nan")), ValueError, r"probability.*nan"),
    (lambda: F.dropout(np.ones(4), 0.5), TypeError, r"x must be a Tensor, got ndarray"),
    (lambda: tg.nn.Dropout(False), TypeError, r"Dropout: p must be a probability.*False"),
    (lambda: tg.nn.Dropout(1.5), ValueError, r"Dropout: p must be a probability.*1\.5"),
], ids=["int", "bool", "bool-p", "str-p", "nan-p", "ndarray", "module-bool-p", "module-range"])
def test_dropout_argument_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("dtype", ["int64", "bool"])
def test_dropout_keeps_the_dtype_of_an_integer_tensor_where_it_can_as_torch(dtype):
    # Identity for p=0 and in evaluation, zeros of its dtype for p=1 (it gave float
    # zeros), a TypeError for any other p: the dtype never depends on p.
    x = tg.tensor([1, 0, 1], dtype=dtype)
    assert F.dropout(x, 0.0) is x and F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 1.0, training=False) is x
    zeros = F.dropout(x, 1.0)
    assert zeros.dtype == x.dtype and not zeros.numpy().any()
    with pytest.raises(TypeError, match=f"dtype {dtype}"):
        F.dropout(x, 0.5)


@pytest.mark.parametrize("call, error, match", [
    (lambda: tg.cat([tg.ones(2, 3)], axis=(1, 0)), TypeError,
     r"concatenate: axis must be an int, got \(1, 0\)"),
    (lambda: tg.cat([tg.ones(2), tg.ones(2)], axis=None), TypeError,
     r"axis must be an int, got None"),
    (lambda: tg.cat([tg.ones(2), [1, 2]]), TypeError, r"concatenate: element 1 is not a Tensor"),
    (lambda: tg.stack([1, 2]), TypeError, r"stack: element 0 is not a Tensor \(got int\)"),
    (lambda: tg.stack([tg.ones(2), np.ones(2)]), TypeError, r"element 1 .*got ndarray"),
    (lambda: tg.stack([tg.ones(2), tg.ones(2)], axis=(0,)), TypeError, r"stack: axis must be"),
    (lambda: tg.split(tg.tensor(1.0), 1), ValueError, r"split: a 0-d tensor"),
    (lambda: tg.split(np.ones(4), 2), TypeError, r"split: x must be a Tensor, got ndarray"),
    (lambda: tg.ones(4).split(1.5), TypeError, r"split: indices_or_sections must be an int.*1\.5"),
    (lambda: tg.ones(4).split([1.5]), TypeError, r"indices_or_sections"),
    # PyTorch's split(2, dim=1) means sections of size 2; NumPy's split(2) two sections.
    (lambda: tg.ones(2, 4).split(2, dim=1), TypeError,
     r"split: follows numpy\.split, with axis= \(got dim=1\): an int is a number of equal "
     r"sections, not PyTorch's section size; for sections of size 2, as torch's split\(2, "
     r"dim=1\) gives, pass the indices to cut at: split\(\[2\], axis=1\); for 2 equal "
     r"sections: split\(2, axis=1\)$"),
    # The call that gives PyTorch's sections, as they fall (no equal sections of 5 by 3).
    (lambda: tg.ones(5).split(3, dim=-1), TypeError,
     r"gives, pass the indices to cut at: split\(\[3\], axis=0\)$"),
    (lambda: tg.ones(2, 40).split(4, dim=1), TypeError,
     r"split\(list\(range\(4, 40, 4\)\), axis=1\); for 4 equal sections"),
    (lambda: tg.ones(2, 6).split([2, 4], dim=1), TypeError,
     r"a list holds the indices to cut at, not PyTorch's section sizes; for sections of "
     r"sizes \[2, 4\], as torch's split gives, pass split\(\[2\], axis=1\)$"),
    (lambda: tg.ones(2, 6).split(2, dim=2), TypeError,
     r"an int is a number of equal sections and a list the indices to cut at, not "
     r"PyTorch's section sizes; for sections of size s of an axis of length n, pass the "
     r"indices list\(range\(s, n, s\)\) and axis=$"),
    (lambda: tg.ones(2, 4).chunk(2, axis=1, dim=0), TypeError, r"chunk: give either axis or dim"),
    (lambda: tg.ones(3).sum(axis=True), TypeError, r"axis must be an int, got True"),
    (lambda: tg.ones(3, 4).sum(axis=(True,)), TypeError, r"axis must be an int, got True"),
    (lambda: tg.ones(3).unsqueeze(True), TypeError, r"axis must be an int, got True"),
    (lambda: tg.ones(3, 1).squeeze(True), TypeError, r"axis must be an int, got True"),
    (lambda: tg.ones(3).softmax(True), TypeError, r"axis must be an int, got True"),
    # A new axis is counted in the result's dimensions, not the inputs'.
    (lambda: tg.stack([tg.ones(2, 3), tg.ones(2, 3)], axis=3), ValueError,
     r"stack: axis 3 is out of range for the stacked result with 3 dimension\(s\) \(valid "
     r"axes -3\.\.2\)"),
    (lambda: tg.ones(2, 3).unsqueeze(-4), ValueError,
     r"unsqueeze: axis -4 is out of range for the result with 3 dimension\(s\)"),
    (lambda: tg.cat([tg.ones(2, 3)], axis=2), ValueError,
     r"concatenate: axis 2 is out of range for a tensor with 2 dimension\(s\) \(valid axes "
     r"-2\.\.1\)"),
    # One tensor is no sequence of them (as torch.cat); its rows were joined silently.
    (lambda: tg.cat(tg.ones(2, 3)), TypeError,
     r"concatenate: tensors must be a sequence of Tensors \(a list or a tuple\), got a "
     r"Tensor of shape \(2, 3\)"),
    (lambda: tg.stack(tg.ones(2, 3)), TypeError, r"stack: tensors must be a sequence"),
    (lambda: tg.cat(None), TypeError, r"concatenate: tensors must be .*got None \(NoneType\)"),
    # A 0-d tensor's dims are -1 and 0, as for every other axis argument.
    (lambda: tg.tensor(1.0).flatten(3), ValueError,
     r"flatten: axis 3 is out of range for a tensor with 0 dimension\(s\)"),
    # both given, differently (dim wins only over the default axis=0)
    (lambda: tg.cat([tg.ones(2, 3)], axis=1, dim=0), TypeError,
     r"concatenate: give either axis or dim, not both \(got axis=1, dim=0\)"),
    (lambda: tg.stack([tg.ones(2)], axis=1, dim=0), TypeError,
     r"stack: give either axis or dim, not both"),
    # (dim won over any axis here, and lost to any axis in unsqueeze)
    (lambda: tg.ones(2, 3).softmax(0, dim=1), TypeError,
     r"softmax: give either axis or dim, not both \(got axis=0, dim=1\)"),
    (lambda: tg.ones(2, 3).log_softmax(axis=0, dim=1), TypeError,
     r"log_softmax: give either axis or dim, not both"),
    (lambda: tg.ones(2, 3).unsqueeze(0, dim=1), TypeError,
     r"unsqueeze: give either axis or dim, not both \(got axis=0, dim=1\)"),
    (lambda: tg.ones(2, 3)[[[0, 1], [0]]], ValueError,
     r"indexing a tensor of shape \(2, 3\) with the list \[\[0, 1\], \[0\]\]: nested index "
     r"lists must be rectangular"),
], ids=["cat-tuple-axis", "cat-none-axis", "cat-list", "stack-ints", "stack-ndarray",
        "stack-tuple-axis", "split-0d", "split-ndarray", "split-float", "split-float-list",
        "split-dim", "split-dim-uneven", "split-dim-long", "split-dim-sizes", "split-dim-bad",
        "chunk-axis-and-dim",
        "sum-bool", "sum-bool-tuple", "unsqueeze-bool", "squeeze-bool", "softmax-bool",
        "stack-range", "unsqueeze-range", "cat-range", "cat-tensor", "stack-tensor", "cat-none",
        "flatten-0d-range", "cat-axis-and-dim", "stack-axis-and-dim", "softmax-axis-and-dim",
        "log-softmax-axis-and-dim", "unsqueeze-axis-and-dim", "ragged-list-index"])
def test_join_split_and_axis_argument_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("indices", [np.array([2, 4]), tg.tensor([2, 4]), (2, np.int64(4)),
                                     [tg.tensor(2), np.array(4)], range(2, 6, 2), tg.tensor(3),
                                     np.array(3)],
                         ids=["ndarray", "tensor", "numpy-int", "0-d-elements", "range",
                              "0-d-tensor-sections", "0-d-array-sections"])
def test_split_takes_indices_as_any_sequence_of_ints(indices):
    parts = tg.split(tg.arange(6), indices)
    assert [p.tolist() for p in parts] == [[0, 1], [2, 3], [4, 5]]


# A 0-d tensor or array stands for the number it holds, as in PyTorch (they were refused
# as "not a number").
@pytest.mark.parametrize("call, expected", [
    (lambda: tg.full((2,), tg.tensor(1.5)), [1.5, 1.5]),
    (lambda: tg.full((2,), np.array(1.5)), [1.5, 1.5]),
    (lambda: tg.arange(tg.tensor(3)), [0, 1, 2]),
    (lambda: tg.arange(np.array(0.5), tg.tensor(2), np.float32(0.5)), [0.5, 1.0, 1.5]),
    (lambda: tg.eye(tg.tensor(2)), [[1, 0], [0, 1]]),
    (lambda: tg.eye(np.array(2), np.array(1)), [[1], [0]]),
    (lambda: tg.nn.init.constant_(tg.zeros(2), tg.tensor(0.5)), [0.5, 0.5]),
    (lambda: tg.nn.init.uniform_(tg.zeros(2), tg.tensor(3.0), np.array(3.0)), [3.0, 3.0]),
    (lambda: tg.nn.init.normal_(tg.zeros(2), tg.tensor(2.0), np.array(0.0)), [2.0, 2.0]),
    (lambda: tg.tensor([-1.0, 2.0]).leaky_relu(tg.tensor(0.5)), [-0.5, 2.0]),
    (lambda: F.leaky_relu(tg.tensor([-1.0]), np.array(0.25)), [-0.25]),
    (lambda: tg.ones(1).pad(1, value=tg.tensor(2.0)), [2.0, 1.0, 2.0]),
    (lambda: F.dropout(tg.ones(2), tg.tensor(0.0)), [1.0, 1.0]),
    (lambda: tg.zeros(np.array([2, 1])), [[0], [0]]),
    (lambda: tg.ones(1, 1, 2, 2).reshape(tg.tensor([2, 2])), [[1, 1], [1, 1]]),
], ids=["full-tensor", "full-array", "arange-tensor", "arange-mixed", "eye-tensor",
        "eye-array", "constant", "uniform", "normal", "leaky-relu", "F-leaky-relu", "pad",
        "dropout", "zeros-1d-array", "reshape-1d-tensor"])
def test_zero_dim_tensors_and_arrays_stand_for_their_numbers(call, expected):
    assert call().tolist() == expected


def test_summary_takes_the_shape_as_a_1d_array_or_tensor():
    model = tg.nn.Sequential(tg.nn.Conv2d(1, 2, 3), tg.nn.Flatten())
    for shape in (np.array([1, 1, 8, 8]), tg.tensor([1, 1, 8, 8]), (tg.tensor(1), 1, 8, 8)):
        assert tg.nn.summary(model, shape).output_shape == (1, 72)


@pytest.mark.parametrize("call, error, match", [
    # One rule: a wrong type is a TypeError, NaN or a value out of range a ValueError.
    (lambda: tg.arange(tg.tensor([3])), TypeError, r"arange: stop must be a finite number"),
    (lambda: tg.eye(tg.tensor(2.0)), TypeError, r"eye: n must be an int, got 2\.0 \(float\)"),
    (lambda: tg.full((2,), tg.tensor([1.0])), TypeError, r"fill_value must be a number"),
    (lambda: tg.ones(2).leaky_relu(float("nan")), ValueError,
     r"leaky_relu: negative_slope must be a number, got nan"),
    (lambda: tg.nn.LeakyReLU(np.array(float("nan"))), ValueError, r"got nan"),
    (lambda: tg.zeros(np.array([2.0, 1.0])), TypeError, r"zeros: a shape must be ints"),
    # A tensor that requires grad would lose its gradient as a number: refused.
    (lambda: tg.ones(2).leaky_relu(tg.tensor(0.3, requires_grad=True)), TypeError,
     r"negative_slope must be a number, got a tensor that requires grad"),
    (lambda: tg.full((2,), tg.tensor(1.0, requires_grad=True)), TypeError,
     r"fill_value must be a number, got a tensor that requires grad"),
    (lambda: tg.ones(1).pad(1, value=tg.tensor(2.0, requires_grad=True)), TypeError,
     r"requires grad"),
    # Sizes are ints: a float tensor is refused as such, whether or not it requires grad.
    (lambda: tg.zeros(tg.tensor(2.0, requires_grad=True)), TypeError, r"zeros: a shape must be"),
    # An int too long for str() is still named, by its first digits and length.
    (lambda: tg.full(2, 10**5000, dtype="int64"), OverflowError,
     r"the value 10000000000000000000\.\.\. \(5001 digits\) does not fit the dtype int64"),
], ids=["arange-1d", "eye-float", "full-1d", "leaky-relu-nan", "layer-nan", "zeros-float",
        "slope-requires-grad", "fill-requires-grad", "pad-requires-grad", "size-requires-grad",
        "huge-int"])
def test_scalar_arguments_still_refuse_what_is_no_number(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    (lambda: tg.zeros(-1), ValueError, r"zeros: sizes must be >= 0, got shape \(-1,\)"),
    (lambda: tg.ones((2, -3)), ValueError, r"ones: sizes must be >= 0, got shape \(2, -3\)"),
    (lambda: tg.randn(2, -1), ValueError, r"randn: .*\(2, -1\)"),
    (lambda: tg.full(-2, 1.0), ValueError, r"full: sizes must be >= 0, got shape \(-2,\)"),
    (lambda: tg.full((2, 2), "a"), TypeError, r"full: fill_value must be a number, got 'a'"),
    (lambda: tg.eye(2.5), TypeError, r"eye: n must be an int, got 2\.5"),
    (lambda: tg.eye(-1), ValueError, r"eye: n must be an int >= 0, got -1"),
    (lambda: tg.eye(2, -3), ValueError, r"eye: m must be an int >= 0, got -3"),
    (lambda: tg.arange(0, 1, 0), ValueError, r"arange: step must be nonzero"),
    (lambda: tg.arange(float("nan")), ValueError, r"arange: stop must be a finite number"),
    (lambda: tg.arange(0, float("inf")), ValueError, r"arange: stop must be a finite number"),
    (lambda: tg.arange("a"), TypeError, r"arange: stop must be a finite number, got 'a'"),
    (lambda: tg.nn.summary(tg.nn.Linear(3, 4), (-1, 3)), ValueError,
     r"summary: input_shape: sizes must be >= 0, got shape \(-1, 3\)"),
    (lambda: tg.nn.summary(tg.nn.Linear(3, 4), "a"), TypeError,
     r"summary: input_shape: a shape must be ints, got 'a'"),
    (lambda: tg.arange(0, 1e20), ValueError,
     r"arange: start 0, stop 1e\+20 and step 1 give more elements than a tensor can hold"),
    # counted exactly for ints (a float division of 10**400 overflowed)
    (lambda: tg.arange(10**400), ValueError, r"arange: start 0, stop 10+ and step 1 give more"),
    (lambda: tg.zeros_like([1.0, 2.0]), TypeError, r"zeros_like: t must be a Tensor, got list"),
    (lambda: tg.ones_like(None), TypeError, r"ones_like: t must be a Tensor, got NoneType"),
    # Given is given: a 0 or "" is not "keep t's" (as ``dtype or t.dtype`` took it).
    (lambda: tg.zeros_like(tg.ones(2), dtype=0), TypeError, r"unknown dtype 0"),
    (lambda: tg.ones_like(tg.ones(2), device=""), DeviceError, r"unknown device ''"),
    (lambda: tg.manual_seed(-1), ValueError, r"manual_seed: seed must be an int >= 0, got -1"),
    (lambda: tg.manual_seed(1.5), TypeError,
     r"manual_seed: seed must be an int >= 0, a numpy.random.SeedSequence or None, got 1\.5"),
], ids=["zeros", "ones", "randn", "full", "full-str", "eye-float", "eye-negative", "eye-m",
        "arange-step", "arange-nan", "arange-inf", "arange-str", "summary-negative", "summary-str",
        "arange-too-long", "arange-huge-int", "zeros-like-list", "ones-like-none",
        "zeros-like-dtype-0", "ones-like-device-empty", "seed-negative", "seed-float"])
def test_factory_argument_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _isub(target, value):
    target -= value


@pytest.mark.parametrize("call", [
    lambda b: b - b, lambda b: b - True, lambda b: True - b, lambda b: _isub(b, b),
], ids=["tensors", "python-bool", "reflected", "in-place"])
def test_subtracting_two_bool_tensors_says_what_to_use(call):
    with pytest.raises(TypeError, match=r"two bool tensors is not supported; use the \^ "):
        call(tg.tensor([True, False]))


def test_sign_of_bool_and_int_tensors_keeps_their_dtype(device):
    # np.sign has no loop for bools: a bool's sign is itself, as in PyTorch.  Float sign
    # is a case of test_ops.py's table, whose inputs stay off 0 for gradcheck; sign(0) = 0
    # (the same xp.sign call) is checked here on ints.
    b = tg.tensor([True, False], device=device)
    s = b.sign()
    assert s.device == b.device and s.dtype == np.bool_ and s.tolist() == [True, False]
    assert (b - 1).tolist() == [0, -1]
    i = tg.tensor([-2, 0, 3], device=device)
    s = i.sign()
    assert s.device == i.device and s.dtype == np.int64 and s.tolist() == [-1, 0, 1]


@pytest.mark.parametrize("call, error, match", [
    (lambda x: F.leaky_relu(x, "a"), TypeError, r"leaky_relu: negative_slope must be a number"),
    (lambda x: x.leaky_relu(True), TypeError, r"negative_slope must be a number, got True"),
    (lambda x: F.avg_pool2d(x, 2, divisor_override=True), TypeError,
     r"avg_pool2d: divisor_override must be a number, got True"),
    (lambda x: F.avg_pool2d(x, 2, divisor_override=0), ValueError,
     r"avg_pool2d: divisor_override must be > 0, got 0"),
    # flags are True or False: a truthy string or number was taken silently
    (lambda x: F.max_pool2d(x, 2, ceil_mode="yes"), TypeError,
     r"max_pool2d: ceil_mode must be True or False, got 'yes'"),
    (lambda x: F.max_pool2d(x, 2, return_indices=2), TypeError,
     r"max_pool2d: return_indices must be True or False, got 2"),
    (lambda x: F.max_pool1d(x[0], 2, ceil_mode=None), TypeError,
     r"max_pool1d: ceil_mode must be True or False, got None"),
    (lambda x: F.avg_pool2d(x, 2, padding=1, count_include_pad="x"), TypeError,
     r"avg_pool2d: count_include_pad must be True or False, got 'x'"),
    (lambda x: F.adaptive_max_pool2d(x, 3, return_indices="y"), TypeError,
     r"adaptive_max_pool2d: return_indices must be True or False, got 'y'"),
    (lambda x: F.dropout(x, 0.5, training="no"), TypeError,
     r"dropout: training must be True or False, got 'no'"),
    # conv ops are float-only: an integer bias made the float32 op float64
    (lambda x: F.conv2d(x, tg.ones(2, 1, 3, 3), tg.ones(2, dtype="int64")), TypeError,
     r"conv2d: b of shape \(2,\) has dtype int64; expected a float dtype"),
    (lambda x: F.conv_transpose2d(x, tg.ones(1, 2, 3, 3), tg.ones(2, dtype="int32")),
     TypeError, r"conv_transpose2d: b of shape \(2,\) has dtype int32"),
    (lambda x: F.conv2d(x.astype("uint8"), tg.ones(2, 1, 3, 3)), TypeError,
     r"conv2d: x has dtype uint8; expected a float dtype \(float32 or float64: convert with "
     r"x\.float\(\)\)"),
    # linear computes in floats or in integers, not in a mix of both (NumPy's promotion
    # of the pair, not the float operands, would choose the dtype)
    (lambda x: F.linear(x[0, 0], tg.ones(2, 4), tg.ones(2, dtype="bool")), TypeError,
     r"linear: mixed float and integer operands: x of shape \(4, 4\), dtype float32, w of "
     r"shape \(2, 4\), dtype float32, b of shape \(2,\), dtype bool; expected all float or "
     r"all integer \(convert the integer ones with \.float\(\)\)"),
    (lambda x: F.linear(x[0, 0].astype("int64"), tg.ones(2, 4)), TypeError,
     r"linear: mixed float and integer operands: x of shape \(4, 4\), dtype int64, w of "
     r"shape \(2, 4\), dtype float32; expected"),
    (lambda x: F.linear(x[0, 0].astype("int64"), tg.ones(2, 4, dtype="int64"), tg.ones(2)),
     TypeError, r"linear: mixed .* b of shape \(2,\), dtype float32; expected all float"),
    # the thin aliases of Tensor methods: an AttributeError from inside
    (lambda x: F.relu(x.numpy()), TypeError, r"relu: x must be a Tensor, got ndarray"),
    (lambda x: F.softmax(x.numpy(), 1), TypeError, r"softmax: x must be a Tensor, got ndarray"),
    (lambda x: F.flatten(x.tolist()), TypeError, r"flatten: x must be a Tensor, got list"),
    (lambda x: F.pad(x.numpy(), (1, 1)), TypeError, r"pad: x must be a Tensor, got ndarray"),
], ids=["leaky-relu-str", "leaky-relu-bool", "divisor-bool", "divisor-zero",
        "ceil-mode-str", "return-indices-int", "pool1d-ceil-mode-none", "count-include-pad-str",
        "adaptive-return-indices-str", "dropout-training-str", "conv-int-bias",
        "conv-transpose-int-bias", "conv-uint8-x", "linear-bool-bias", "linear-int-x",
        "linear-float-b-int-xw", "relu-ndarray", "softmax-ndarray", "flatten-list",
        "pad-ndarray"])
def test_functional_number_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call(tg.ones(1, 1, 4, 4))


def test_plain_numbers_take_the_checks_short_path(monkeypatch):
    # A Python float or int in range needs only the range test: the layers' forward
    # passes (LeakyReLU's slope, Dropout's p) call the shared checks on every call.
    checks = importlib.import_module("tinygrad_cnn._checks")
    slope_layer, drop_layer = tg.nn.LeakyReLU(np.float32(0.5)), tg.nn.Dropout(0.5)
    monkeypatch.setattr(checks, "as_scalar", _refuse("as_scalar"))
    assert slope_layer(tg.tensor([-2.0, 2.0])).tolist() == [-1.0, 2.0]
    assert tg.tensor([-2.0]).leaky_relu(-3).tolist() == [6.0]
    assert drop_layer(tg.ones(8)).shape == (8,) and F.dropout(tg.ones(2), 0).tolist() == [1, 1]
    assert checks.check_number("x", 1.0, low=0, high=1) == 1.0
    assert checks.check_number("x", 2**80, low=0, open_low=True) == 2**80
    assert checks.check_probability("p", 1) == 1
    monkeypatch.undo()
    # Anything else takes the full path, with its wording.
    for call, error, match in [
            (lambda: checks.check_number("x", 1.0, high=1, open_high=True), ValueError,
             r"x must be >= 0\.0 and < 1, got 1\.0"),
            (lambda: checks.check_number("x", 0, low=0, open_low=True), ValueError,
             r"x must be > 0, got 0"),
            (lambda: checks.check_number("x", float("nan"), low=None), ValueError,
             r"x must be a number, got nan"),
            (lambda: checks.check_number("x", True), TypeError, r"x must be a number, got True"),
            (lambda: checks.check_probability("p", float("nan")), ValueError,
             r"p must be a probability in \[0, 1\], got nan"),
            (lambda: checks.check_probability("p", -1), ValueError, r"got -1"),
            (lambda: checks.check_probability("p", False), TypeError, r"got False \(bool\)"),
            (lambda: tg.tensor([-2.0]).leaky_relu(float("nan")), ValueError, r"got nan")]:
        with pytest.raises(error, match=match):
            call()
    assert tg.tensor([-2.0]).leaky_relu(np.array(0.25)).tolist() == [-0.5]


@pytest.mark.parametrize("call, match", [
    (lambda y, w: tg.grad(y, 5), r"grad: inputs must be a Tensor or a sequence of Tensors, got 5"),
    (lambda y, w: tg.grad(5, w), r"grad: outputs must be a Tensor or a sequence"),
    (lambda y, w: tg.grad(y, [np.ones(3)]), r"grad: inputs\[0\] is not a Tensor \(got ndarray\)"),
    (lambda y, w: tg.grad([y, 3], w), r"grad: outputs\[1\] is not a Tensor \(got int\)"),
    (lambda y, w: tg.grad(y, w, grad_outputs=1.0), r"grad: grad_outputs must be a Tensor, a "
                                                   r"sequence of them .*got 1\.0 \(float\)"),
    # Flags are True or False: allow_unused="no" meant yes, retain_graph="no" kept the graph.
    (lambda y, w: tg.grad(y, w, allow_unused="no"), r"grad: allow_unused must be True or False"),
    (lambda y, w: tg.grad(y, w, retain_graph="no"), r"grad: retain_graph must be True or False"),
    (lambda y, w: y.backward(create_graph=1), r"backward: create_graph must be True or False"),
    (lambda y, w: y.backward(retain_graph="yes"), r"backward: retain_graph must be True or"),
], ids=["inputs-int", "outputs-int", "inputs-ndarray", "outputs-mixed", "grad-outputs-float",
        "allow-unused-str", "grad-retain-str", "backward-create-int", "backward-retain-str"])
def test_grad_names_arguments_that_are_not_tensors(call, match):
    w = tg.ones(3, requires_grad=True)
    with pytest.raises(TypeError, match=match):
        call((w * 2).sum(), w)


@pytest.mark.parametrize("index, error, words", [
    (2**70, IndexError, ["index 1180591620717411303424 is out of range"]),
    ((0, -2**64), IndexError, ["index -18446744073709551616 is out of range"]),
    (slice(None, None, 0), ValueError, ["slice step cannot be zero"]),
    (slice(0.5, 2), TypeError, ["slice indices must be integers"]),
], ids=["huge", "huge-negative", "zero-step", "float-slice"])
def test_index_errors_name_the_shape(index, error, words):
    x = tg.zeros(2, 3)
    for use in (lambda: x[index], lambda: _assign(x, index, 1.0)):
        with pytest.raises(error) as info:
            use()
        for word in words + ["shape (2, 3)"]:
            assert word in str(info.value)


@pytest.mark.parametrize("call, match", [
    (lambda: tg.ones(2).requires_grad_("yes"), r"requires_grad must be True or False, got 'yes'"),
    (lambda: setattr(tg.ones(2), "requires_grad", 1), r"requires_grad must be True or False"),
    (lambda: tg.tensor([1.0], requires_grad=None), r"requires_grad must be True or False"),
    (lambda: setattr(tg.arange(3), "requires_grad", True),
     r"only floating-point tensors can require gradients; this tensor has dtype int64"),
], ids=["requires-grad-str", "requires-grad-int", "constructor-none", "int-tensor"])
def test_requires_grad_takes_a_bool_for_a_float_tensor(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_comparing_with_none_is_false_as_in_torch():
    x = tg.ones(3)
    assert (x == None) is False and (x != None) is True   # noqa: E711 (the point of the test)


def test_where_needs_a_bool_condition():
    # As PyTorch; a float condition was read as != 0, so a NaN counted as true.
    with pytest.raises(TypeError, match=r"where: condition must be a bool tensor, got dtype "
                                        r"float32 \(shape \(2,\)\)"):
        tg.where(tg.tensor([float("nan"), 0.0]), 1, 2)


def test_tensor_to_takes_a_dtype_as_module_to_does():
    x = tg.ones(2)
    assert x.to("float64").dtype == np.float64 and x.to(np.float16).dtype == np.float16
    assert x.to("cpu", "int64").dtype == np.int64
    with pytest.raises(DeviceError, match=r"unknown device 'npu'.*nor is 'npu' a dtype"):
        x.to("npu")


@pytest.mark.parametrize("shape, dtype, text", [
    ((0, 3), "float32", "tensor([], size=(0, 3))"), ((3, 0), "float32", "tensor([], size=(3, 0))"),
    ((0,), "float32", "tensor([])"),
    # No values show that an empty tensor holds ints or bools: its dtype is said.
    ((0, 3), "int64", "tensor([], size=(0, 3), dtype=int64)"),
    ((0,), "int64", "tensor([], dtype=int64)"), ((0,), "bool", "tensor([], dtype=bool)"),
    ((0,), "float64", "tensor([], dtype=float64)"),
])
def test_repr_of_an_empty_tensor_keeps_its_shape_and_dtype(shape, dtype, text):
    assert repr(tg.zeros(*shape, dtype=dtype)) == text   # as PyTorch


def test_repr_leaves_out_the_dtypes_its_values_show():
    assert repr(tg.tensor([1, 2])) == "tensor([1, 2])"
    assert repr(tg.tensor([True])) == "tensor([ True])"
    assert repr(tg.tensor([1, 2], dtype="int32")) == "tensor([1, 2], dtype=int32)"


@pytest.mark.parametrize("call, error, match", [
    # These reached NumPy (a TypeError about "an integer"), or Python's own error.
    (lambda x: x.sum(0, keepdims="yes"), TypeError, r"sum: keepdims must be True or False"),
    (lambda x: x.max(keepdims=None), TypeError, r"max: keepdims must be True or False, got None"),
    (lambda x: x.mean(0, keepdims=1), TypeError, r"mean: keepdims must be True or False, got 1"),
    (lambda x: x.argmax(0, keepdims=1), TypeError, r"argmax: keepdims must be True or False"),
    (lambda x: x.logsumexp(0, keepdims=1), TypeError, r"logsumexp: keepdims must be True"),
    (lambda x: x.var(correction=None), TypeError,
     r"var: correction must be a finite number, got None"),
    (lambda x: x.std(correction="1"), TypeError, r"correction must be a finite number, got '1'"),
    (lambda x: x.sum_to(None), TypeError, r"sum_to: a shape must be ints, got None"),
    (lambda x: x.sum_to((2.0, 3)), TypeError, r"sum_to: a shape must be ints, got 2\.0"),
    (lambda x: x.astype(None), TypeError, r"astype: dtype must be a dtype .*got None"),
    (lambda x: x.clip("a"), TypeError, r"clip: min must be a number, a tensor or None, got 'a'"),
    (lambda x: x.clip(None, True), TypeError, r"clip: max must be a number.*got True \(bool\)"),
    (lambda x: x.std(1, keepdims=1), TypeError, r"std: keepdims must be True or False"),
    (lambda x: x.var(correction=float("inf")), ValueError,
     r"var: correction must be a finite number, got inf"),
    (lambda x: _ipow(x.astype("int64"), -1), ValueError,
     r"power: an integer tensor \(dtype int64\) to a negative integer power"),
    # keepdim, PyTorch's name, is a flag too; with keepdims as well it is one name too many
    # (even with the same value, or False: an explicit False is told from the default).
    (lambda x: x.sum(1, keepdims=True, keepdim=True), TypeError,
     r"sum: give either keepdims or keepdim, not both \(got keepdims=True, keepdim=True\)"),
    (lambda x: x.mean(1, False, keepdim=True), TypeError,
     r"mean: give either keepdims or keepdim, not both \(got keepdims=False, keepdim=True\)"),
    (lambda x: x.var(keepdims=True, keepdim=False), TypeError,
     r"var: give either keepdims or keepdim, not both"),
    (lambda x: x.argmin(0, keepdims=False, keepdim=False), TypeError,
     r"argmin: give either keepdims or keepdim"),
    (lambda x: x.max(keepdim=None), TypeError, r"max: keepdim must be True or False, got None"),
    (lambda x: x.std(1, keepdim=1), TypeError, r"std: keepdim must be True or False, got 1"),
    (lambda x: x.logsumexp(dim=0, keepdim="no"), TypeError,
     r"logsumexp: keepdim must be True or False, got 'no'"),
], ids=["sum-keepdims-str", "max-keepdims-none", "mean-keepdims-int", "argmax-keepdims-int",
        "logsumexp-keepdims-int", "var-correction-none", "std-correction-str", "sum-to-none",
        "sum-to-float", "astype-none", "clip-str", "clip-bool", "std-keepdims-int",
        "var-correction-inf",
        "ipow-negative", "sum-keepdims-and-keepdim", "mean-false-and-keepdim",
        "var-keepdims-and-keepdim", "argmin-both-false", "max-keepdim-none",
        "std-keepdim-int", "logsumexp-keepdim-str"])
def test_tensor_method_argument_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(tg.ones(2, 3))


@pytest.mark.parametrize("x, lo, hi, want", [
    # An integer bound beyond the dtype's range acts as the range's end (as numpy.clip);
    # it was refused, and a NumPy-int bound was cast, wrapping around (300 -> 44 in int8).
    (np.array([1, 200], np.uint8), 0, 300, [1, 200]),
    (np.array([1, 200], np.uint8), -1, 100, [1, 100]),
    (np.array([1, 100], np.int8), np.int64(300), None, [127, 127]),
    (np.array([-5, 100], np.int8), np.int64(-300), np.int64(50), [-5, 50]),
    (np.array([True, False]), False, True, [True, False]),   # bool bounds of a bool tensor
])
def test_clip_bounds_beyond_an_integer_dtype(x, lo, hi, want, device):
    y = tg.tensor(x, device=device).clip(lo, hi)
    assert y.dtype == x.dtype and y.tolist() == want


def _ipow(target, value):
    target **= value


def test_empty_tensors_split_and_pad_as_numpy():
    # numpy.split of an empty axis gives empty sections (was: range() arg 3 must not be
    # zero); numpy.pad of a 0-d array has no axis to pad (was: NumPy's TypeError).
    assert [p.shape for p in tg.zeros(0, 2).split(3)] == [(0, 2)] * 3
    for x in (tg.tensor(2.0), tg.tensor(True), tg.tensor(3, dtype="int8")):
        y = x.pad(1)
        assert (y.shape, y.dtype, y.tolist()) == ((), x.dtype, x.tolist())


class _Listing(tg.Function):
    def forward(self, x):
        return x.tolist()


class _OnTheHost(tg.Function):
    def forward(self, x):
        return np.ones(3)   # a NumPy array whatever the inputs' device


@pytest.mark.parametrize("call, match", [
    (lambda: _Listing.apply(tg.ones(3, requires_grad=True)),
     r"_Listing.forward must return an array of its inputs' backend \(device cpu\), "
     r"got list$"),
    # without a graph to record it was a Tensor wrapping a list, failing later (in repr)
    (lambda: _Listing.apply(tg.ones(3)), r"_Listing.forward must .* got list$"),
    (lambda: tg.no_grad()(_Listing.apply)(tg.ones(3, requires_grad=True)),
     r"_Listing.forward must .* got list$"),
    # an array, but of another backend: it was taken
    (lambda: _OnTheHost.apply(tg.ones(3, device="strict")),
     r"_OnTheHost.forward must return an array of its inputs' backend \(device strict\), "
     r"got numpy.ndarray$"),
], ids=["grad-mode", "no-grad-input", "no-grad-mode", "another-backend"])
def test_function_forward_must_return_an_array(call, match):
    with pytest.raises(TypeError, match=match):
        call()
