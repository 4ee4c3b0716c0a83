"""Graph semantics of the reverse sweep: sharing, depth, freeing, accumulation,
grad modes, non-leaf gradients, higher-order gradients and ``tg.grad``."""
from __future__ import annotations

import gc
import sys
import threading
import warnings

import numpy as np
import pytest

import tinygrad_cnn as tg


def _t(values, device="cpu", requires_grad=True):
    return tg.tensor(np.asarray(values, dtype=np.float64), requires_grad=requires_grad,
                     device=device)


# ---- the acceptance example ------------------------------------------------------------
def test_acceptance_example(device):
    x = tg.tensor([1., 2., 3.], requires_grad=True, device=device)
    (x ** 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3, 12, 27])
    g, = tg.grad((x ** 3).sum(), [x], create_graph=True)
    gg, = tg.grad(g.sum(), [x])
    np.testing.assert_allclose(gg.numpy(), [6, 12, 18])
    # The same, written in one line as in the issue.
    np.testing.assert_allclose(
        tg.grad(tg.grad((x ** 3).sum(), [x], create_graph=True)[0].sum(), [x])[0].numpy(),
        6 * x.numpy())


# ---- graph shapes ------------------------------------------------------------------------
def test_value_used_twice(device):
    x = _t([1.0, -2.0, 3.0], device)
    ((x + x) * x).sum().backward()               # d/dx 2x^2 = 4x
    np.testing.assert_allclose(x.grad.numpy(), [4.0, -8.0, 12.0])


def test_diamond(device):
    x = _t([0.5, 1.5], device)
    a = x * 3
    b = a.exp()
    c = a.sin()
    (b * c).sum().backward()
    xv = x.numpy()
    want = 3 * np.exp(3 * xv) * (np.sin(3 * xv) + np.cos(3 * xv))
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-12)


def test_same_tensor_twice_in_one_op(device):
    x = _t([2.0, 3.0], device)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 6.0])
    y = _t([2.0], device)
    tg.concatenate([y, y, y]).sum().backward()
    np.testing.assert_allclose(y.grad.numpy(), [3.0])


def test_long_chain_needs_no_recursion():
    """10,000 ops: the sweep and the graph's garbage collection stay iterative."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)  # the default: an accidental recursion would blow it
    try:
        x = _t([1.0, 2.0])
        y = x
        for _ in range(10_000):
            y = y * 1.0001
        y.sum().backward(retain_graph=True)
        np.testing.assert_allclose(x.grad.numpy(), [1.0001 ** 10_000] * 2, rtol=1e-9)
        g, = tg.grad(y.sum(), [x], create_graph=True)  # a 10,000-op gradient graph too
        np.testing.assert_allclose(g.numpy(), x.grad.numpy())
        del y, g
        gc.collect()
    finally:
        sys.setrecursionlimit(limit)


# ---- freeing and retaining ---------------------------------------------------------------
def test_backward_twice_needs_retain_graph(device):
    x = _t([1.0, 2.0], device)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 8.0])   # accumulated twice
    with pytest.raises(RuntimeError, match="freed") as info:
        y.backward()
    assert "retain_graph" in str(info.value)


def test_freed_graph_error_also_for_tg_grad():
    x = _t([1.0, 2.0])
    y = (x.exp() * 2).sum()
    tg.grad(y, [x])
    with pytest.raises(RuntimeError, match="retain_graph"):
        tg.grad(y, [x])


def test_backward_accumulates_into_grad(device):
    x = _t([1.0, 2.0], device)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3 + 2, 3 + 4])
    x.zero_grad()
    assert x.grad is None


def test_parameter_grad_accumulates_over_many_backwards(device):
    """A Parameter's .grad is a plain Tensor (as in PyTorch) and keeps accumulating."""
    w = tg.nn.Parameter(np.array([1.0, 2.0]), dtype="float64", device=device)
    for _ in range(3):
        (w * w).sum().backward()
    assert type(w.grad) is tg.Tensor
    np.testing.assert_allclose(w.grad.numpy(), [6.0, 12.0])


def test_leaf_grads_are_own_writeable_arrays(device):
    """.grad never aliases another tensor's .grad, the caller's upstream grad, or a
    read-only broadcast view, so optimisers may update it in place."""
    a, b = _t([1.0, 2.0], device), _t([3.0, 4.0], device)
    (a + b).sum().backward()
    assert a.grad is not b.grad
    with a._backend.context():
        a.grad.data *= 2        # raw, in place: must neither fail nor touch b.grad
    np.testing.assert_allclose(b.grad.numpy(), [1.0, 1.0])
    up = tg.tensor(np.ones(2), device=device)
    c = _t([1.0, 2.0], device)
    (c * 1).backward(up)
    with c._backend.context():
        c.grad.data += 1
    np.testing.assert_allclose(up.numpy(), [1.0, 1.0])


# ---- grad modes --------------------------------------------------------------------------
def test_no_grad_context_builds_nothing(device):
    x = _t([1.0, 2.0], device)
    with tg.no_grad():
        y = (x * 2).exp()
        assert not tg.is_grad_enabled()
    assert tg.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_no_grad_decorator_and_enable_grad():
    x = _t([1.0, 2.0])

    @tg.no_grad()
    def f(t):
        return t * 2

    y = f(x)
    assert not y.requires_grad and y.grad_fn is None
    assert tg.is_grad_enabled()
    with tg.no_grad():
        with tg.enable_grad():
            assert (x * 2).requires_grad
        assert not (x * 2).requires_grad
    with tg.set_grad_enabled(False):
        assert not (x * 2).requires_grad


def test_grad_mode_restored_after_an_exception_and_on_reuse():
    ctx = tg.no_grad()
    with pytest.raises(ZeroDivisionError):
        with ctx:
            1 / 0
    assert tg.is_grad_enabled()
    with ctx:
        with ctx:   # one instance entered twice
            pass
        assert not tg.is_grad_enabled()
    assert tg.is_grad_enabled()


# ---- what requires grad, and which grads are kept --------------------------------------
def test_requires_grad_propagation(device):
    x = _t([1.0], device)
    c = _t([2.0], device, requires_grad=False)
    assert (x * c).requires_grad and not (c * c).requires_grad
    assert (x * c).grad_fn is not None and (c * 2).grad_fn is None
    assert x.is_leaf and not (x * c).is_leaf
    z = c * 2
    z.requires_grad_()
    (z * x).sum().backward()
    np.testing.assert_allclose(z.grad.numpy(), [1.0])


def test_non_leaf_grads_are_not_kept_unless_retained(device):
    x = _t([1.0, 2.0], device)
    h = x * 3
    k = (x * 2).retain_grad()
    (h * k).sum().backward()
    with pytest.warns(UserWarning, match=r"\.grad of a tensor that is not a leaf .*retain_grad"):
        assert h.grad is None   # PyTorch warns here too
    np.testing.assert_allclose(k.grad.numpy(), 3 * x.numpy())
    np.testing.assert_allclose(x.grad.numpy(), 12 * x.numpy())


def test_the_library_reads_no_non_leaf_grad_through_the_warning_property():
    # The warning is for user code; a buffer computed by ops (a non-leaf) or a non-leaf
    # handed to clipping must not set it off inside the library.
    class WithComputedBuffer(tg.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = tg.nn.Linear(2, 2)
            self.register_buffer("scale", tg.ones(2, requires_grad=True) * 2)

    model = WithComputedBuffer()
    model.lin(tg.ones(1, 2)).sum().backward()
    h = tg.ones(3, requires_grad=True) * 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.to(tg.float64)
        tg.optim.clip_grad_norm_([h], 1.0)
        tg.optim.clip_grad_value_([h], 1.0)
    assert model.scale.dtype == np.float64


def test_constant_input_gets_no_grad():
    x = _t([1.0, 2.0])
    c = _t([5.0, 6.0], requires_grad=False)
    (x * c).sum().backward()
    assert c.grad is None


def test_detach(device):
    x = _t([1.0, 2.0], device)
    d = (x * 2).detach()
    assert not d.requires_grad and d.is_leaf
    np.testing.assert_array_equal(d.numpy(), [2.0, 4.0])
    (x * d).sum().backward()                 # d is a constant: grad is d, not 4x
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="int64"):
        tg.tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError, match="floating"):
        tg.tensor([1, 2]).requires_grad_()
    with pytest.raises(TypeError):
        tg.zeros(2, dtype=tg.int32, requires_grad=True)
    i = tg.tensor([1, 2])
    assert not (i * 2).requires_grad and not (_t([1.0, 1.0]) > 0).requires_grad


# ---- higher order and tg.grad -----------------------------------------------------------
def test_second_derivative_of_cube(device):
    x = _t([1.0, -2.0, 0.5], device)
    g, = tg.grad((x ** 3).sum(), [x], create_graph=True)
    np.testing.assert_allclose(g.numpy(), 3 * x.numpy() ** 2)
    assert g.requires_grad
    h, = tg.grad(g.sum(), [x])
    np.testing.assert_allclose(h.numpy(), 6 * x.numpy())


def test_third_derivative_of_fourth_power(device):
    x = _t([1.0, -2.0, 0.5], device)
    g1, = tg.grad((x ** 4).sum(), [x], create_graph=True)
    g2, = tg.grad(g1.sum(), [x], create_graph=True)
    g3, = tg.grad(g2.sum(), [x])
    np.testing.assert_allclose(g2.numpy(), 12 * x.numpy() ** 2)
    np.testing.assert_allclose(g3.numpy(), 24 * x.numpy())


def test_backward_with_create_graph_gives_differentiable_grad():
    x = _t([1.5, 2.0])
    (x ** 3).sum().backward(create_graph=True)
    g = x.grad
    assert g.requires_grad
    h, = tg.grad(g.sum(), [x])
    np.testing.assert_allclose(h.numpy(), 6 * x.numpy())


def _numeric_hvp(f, x, v, eps=1e-5):
    """(grad f(x + eps v) - grad f(x - eps v)) / (2 eps), from first derivatives."""
    def gradient(at):
        t = tg.tensor(at, requires_grad=True)
        return tg.grad(f(t), [t])[0].numpy()
    return (gradient(x + eps * v) - gradient(x - eps * v)) / (2 * eps)


_W = np.linspace(-1, 1, 12).reshape(3, 4)
_C = np.arange(6.0).reshape(2, 3)


@pytest.mark.parametrize("name, f", [
    ("matmul-tanh", lambda x: ((x.reshape(2, 3) @ tg.tensor(_W)).tanh() ** 2).sum()),
    ("softmax", lambda x: (x.reshape(2, 3).softmax(axis=-1) * tg.tensor(_C)).sum()),
    ("log_softmax-matmul", lambda x: (x.reshape(3, 2) @ x.reshape(2, 3)).log_softmax(0)[0].sum()),
])
def test_hessian_vector_products(name, f):
    rng = np.random.default_rng(3)
    xv, v = rng.normal(size=6), rng.normal(size=6)
    x = tg.tensor(xv, requires_grad=True)
    g, = tg.grad(f(x), [x], create_graph=True)
    hv, = tg.grad(g, [x], grad_outputs=tg.tensor(v))
    np.testing.assert_allclose(hv.numpy(), _numeric_hvp(f, xv, v), rtol=1e-6, atol=1e-8)
    # Through (g * v).sum(), the same product.
    g, = tg.grad(f(x), [x], create_graph=True)
    hv2, = tg.grad((g * tg.tensor(v)).sum(), [x])
    np.testing.assert_allclose(hv2.numpy(), hv.numpy(), rtol=1e-12)


def test_tg_grad_leaves_dot_grad_alone(device):
    x = _t([1.0, 2.0], device)
    h = (x * 2).retain_grad()
    g, = tg.grad((h * x).sum(), [x])
    np.testing.assert_allclose(g.numpy(), 4 * x.numpy())
    assert x.grad is None and h.grad is None
    x.grad = tg.tensor(np.array([7.0, 7.0]))
    tg.grad((x * x).sum(), x)
    np.testing.assert_array_equal(x.grad.numpy(), [7.0, 7.0])


def test_tg_grad_with_respect_to_a_non_leaf():
    x = _t([1.0, 2.0])
    h = x * 3
    y = (h * h).sum()
    gh, gx = tg.grad(y, [h, x])
    np.testing.assert_allclose(gh.numpy(), 2 * h.numpy())
    np.testing.assert_allclose(gx.numpy(), 18 * x.numpy())


def test_tg_grad_runs_no_backward_below_the_tensors_asked_for():
    # As PyTorch's autograd.grad: the op that made y is not differentiated (nor its
    # graph freed), so the graph below y serves a later backward, and an in-place
    # change to an input of that op does not matter.
    x = tg.tensor([0.0, 1.0], requires_grad=True)
    y = x.exp()
    (gy,) = tg.grad((y * 2).sum(), [y])
    np.testing.assert_array_equal(gy.numpy(), [2.0, 2.0])
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp([0.0, 1.0]))
    a, b = tg.tensor([1.0, 2.0], requires_grad=True), tg.tensor([3.0, 4.0], requires_grad=True)
    y = a * b
    z = (y * 3).sum()
    with tg.no_grad():
        a += 1
    np.testing.assert_array_equal(tg.grad(z, [y])[0].numpy(), [3.0, 3.0])


def test_tg_grad_allow_unused():
    x, u = _t([1.0]), _t([2.0])
    with pytest.raises(RuntimeError, match="allow_unused"):
        tg.grad((x * 2).sum(), [x, u])
    gx, gu = tg.grad((x * 2).sum(), [x, u], allow_unused=True)
    assert gu is None
    np.testing.assert_allclose(gx.numpy(), [2.0])


def test_tg_grad_several_outputs_and_grad_outputs():
    x = _t([1.0, 2.0])
    a, b = x * 2, x ** 2
    ga, = tg.grad([a, b], [x], grad_outputs=[tg.tensor(np.ones(2)), tg.tensor(np.full(2, 3.0))])
    np.testing.assert_allclose(ga.numpy(), 2 + 3 * 2 * x.numpy())


def test_tg_grad_of_one_output_given_twice_adds_both_grad_outputs():
    x = _t([1.0, 2.0])
    y = x ** 2
    gx, = tg.grad([y, y], [x], grad_outputs=[tg.tensor([1.0, 1.0]), tg.tensor([3.0, 5.0])])
    np.testing.assert_allclose(gx.numpy(), 2 * x.numpy() * [4.0, 6.0])


def test_tg_grad_of_a_second_derivative_keeps_first_graph_only_if_asked():
    x = _t([2.0])
    y = (x ** 3).sum()
    g, = tg.grad(y, [x], create_graph=True)   # retain_graph defaults to create_graph
    g2, = tg.grad(y, [x])
    np.testing.assert_allclose(g2.numpy(), g.numpy())


# ---- in-place arithmetic -----------------------------------------------------------
def test_inplace_on_tensor_requiring_grad_is_refused_while_recording():
    w = tg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        w -= 0.1


def test_inplace_on_a_graph_tensor_says_to_write_it_out_of_place():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    out = x * 2
    with pytest.raises(RuntimeError, match=r"computed in the graph \(shape \(2,\)\).*"
                                           r"out = out \+ v instead of out \+= v"):
        out += x
    np.testing.assert_array_equal(out.numpy(), [2.0, 4.0])   # refused before writing


def test_inplace_under_no_grad_updates_data_and_keeps_leaf():
    w = tg.tensor([1.0, 2.0], requires_grad=True)
    (w * w).sum().backward()
    with tg.no_grad():
        w -= 0.5 * w.grad
    assert w.is_leaf and w.requires_grad
    np.testing.assert_allclose(w.numpy(), [0.0, 0.0])


def test_inplace_change_of_a_saved_input_is_caught_at_backward():
    w = tg.tensor([1.0, 2.0], requires_grad=True)
    c = tg.tensor([3.0, 4.0])
    y = (w * c).sum()
    c += 1  # Mul saved c for its backward
    with pytest.raises(RuntimeError, match=r"input 1 \(shape \(2,\)\) of Mul was modified in "
                                           r"place"):
        y.backward()


@pytest.mark.parametrize("take", [lambda a: a[[0, 1]], lambda a: a[a > 0],
                                  lambda a: a.reshape(3, 2).T.reshape(-1)],
                         ids=["int-array-index", "mask-index", "reshape-that-copies"])
def test_an_inplace_change_does_not_reach_a_copy_taken_by_a_view_op(take):
    # Ops that may return a view share a version with their input only where they do.
    values = np.arange(1.0, 7.0)
    b_before = take(values)   # the same indexing and reshapes in NumPy: not the op under test
    w = tg.tensor(np.ones(6), requires_grad=True)
    a = tg.tensor(values)
    b = take(a)
    loss = (w[:b.shape[0]] * b).sum()   # Mul saved b, a copy
    a += 10
    loss.backward()
    np.testing.assert_array_equal(w.grad.numpy()[:b.shape[0]], b_before)


def test_inplace_that_would_broadcast_the_target_is_refused():
    a = tg.zeros(3)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        a += tg.ones(2, 3)


@pytest.mark.parametrize("change", ["view", "detach", "output", "optimizer"])
def test_inplace_change_through_any_alias_is_caught_at_backward(change):
    w = tg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    a = tg.tensor([1.0, 1.0, 1.0])
    if change == "view":
        loss = (w * a).sum()
        alias = a[:2]          # shares a's memory
        alias += 10
    elif change == "detach":
        loss = (w * w).sum()
        alias = w.detach()     # shares w's memory
        alias += 10
    elif change == "output":
        y = w.exp()            # Exp's backward reads its output
        loss = y.sum()
        with tg.no_grad():
            y += 100
    else:
        loss = (w * w).sum()
        loss.backward(retain_graph=True)
        tg.optim.SGD([w], lr=0.5).step()
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()


def test_first_grads_of_two_leaves_are_separate_tensors_with_create_graph():
    a = tg.tensor([1.0, 2.0], requires_grad=True)
    b = tg.tensor([1.0, 2.0], requires_grad=True)
    (a + b).sum().backward(create_graph=True)
    assert a.grad is not b.grad
    with tg.no_grad():
        a.grad *= 5
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0])


def test_pow_gradient_is_zero_not_nan_where_the_exponent_is_zero():
    a = tg.tensor([0.0, 2.0], requires_grad=True)
    b = tg.tensor([0.0, 3.0], requires_grad=True)
    (a ** b).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [0.0, 12.0])
    a.grad = None
    (a ** 0).sum().backward()   # a number exponent too
    np.testing.assert_array_equal(a.grad.numpy(), [0.0, 0.0])


def test_pow_gradient_in_the_exponent_is_nan_for_a_negative_base():
    """log x is undefined for x < 0: NaN there (as PyTorch), not a plausible 0; x == 0
    with a positive exponent still gives 0."""
    a = tg.tensor([-2.0, 0.0, 2.0], requires_grad=True)
    b = tg.tensor([2.0, 3.0, 3.0], requires_grad=True)
    (a ** b).sum().backward()
    g = b.grad.numpy()
    assert np.isnan(g[0]) and g[1] == 0.0
    np.testing.assert_allclose(g[2], 8 * np.log(2), rtol=1e-6)


# ---- item assignment ------------------------------------------------------------------
def test_item_assignment_writes_in_place_and_bumps_the_version():
    x = tg.zeros(3, 4)
    c = tg.ones(3, 4, requires_grad=True)
    loss = (c * x).sum()                 # Mul saved x
    x[0] += 1                            # x[0] is a view: += writes through it
    x[1:, 1] = tg.tensor([5.0, 6.0])
    x[2, 3] = 7
    np.testing.assert_array_equal(x.numpy(), [[1, 1, 1, 1], [0, 5, 0, 0], [0, 6, 0, 7]])
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()
    w = tg.tensor([1.0, 2.0, 3.0])
    w[1] -= 0.5                          # w[1] is a copy (a 0-d element)
    assert w.tolist() == [1.0, 1.5, 3.0]


def test_item_assignment_is_refused_before_writing_where_autograd_would_be_bypassed():
    w = tg.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="requires grad"):
        w[0] = 5.0
    with pytest.raises(RuntimeError, match="requires grad"):
        w[0] += 5.0
    x = tg.zeros(3)
    with pytest.raises(RuntimeError, match="value that requires grad"):
        x[0] = w[1]
    with pytest.raises(RuntimeError, match="operand that requires grad"):
        x[0] += w[1]                     # x[0] needs no grad, but its += would drop w's
    assert w.tolist() == [1.0, 1.0, 1.0] and x.tolist() == [0.0, 0.0, 0.0]
    with tg.no_grad():
        w[0] = 5.0                       # as an optimizer update would
    assert w.tolist() == [5.0, 1.0, 1.0]


def test_item_assignment_checks_integer_indices(device):
    """CuPy wraps an out-of-range integer index around and writes the wrong element;
    the index is checked first (on a GPU, reported at the next transfer)."""
    x = tg.zeros(3, device=device)
    with pytest.raises(IndexError, match=r"out of range for axis 0 of size 3 in a tensor"):
        x[tg.tensor([0, 5], device=device)] = 1.0
        x.numpy()
    x = tg.zeros(3, device=device)
    x[tg.tensor(np.array([0, 2], np.uint64), device=device)] = 1.0
    assert x.tolist() == [1.0, 0.0, 1.0]


def test_item_assignment_errors_name_the_shapes_and_dtypes():
    x = tg.zeros(2, 3)
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*shape \(4,\)"):
        x[0] = tg.ones(4)
    with pytest.raises(IndexError, match=r"shape \(2, 3\)"):
        x[5] = 1.0
    with pytest.raises(TypeError, match="float64.*int64"):
        tg.zeros(3, dtype=tg.int64)[0] = 1.5


def test_upstream_gradient_takes_the_output_dtype():
    x = tg.ones(3, requires_grad=True)                   # float32
    x.backward(tg.tensor(np.ones(3)))                    # float64 upstream
    assert x.grad.dtype == tg.float32
    x.backward(tg.tensor([1, 2, 3]))                     # int upstream
    assert x.grad.dtype == tg.float32 and x.grad.tolist() == [2.0, 3.0, 4.0]
    (g,) = tg.grad(x * 2, [x], tg.tensor(np.ones(3)))
    assert g.dtype == tg.float32
    for dtype in (tg.float64, tg.float16):   # the implied gradient of a one-element output
        w = tg.ones((), dtype=dtype, requires_grad=True)
        w.backward()
        assert w.grad.dtype == dtype
        (g,) = tg.grad(w * 2, [w])
        assert g.dtype == dtype and g.item() == 2.0


def test_function_apply_refuses_non_tensor_positional_arguments():
    with pytest.raises(TypeError, match="keywords"):
        tg.ops.Exp.apply(tg.tensor([1.0]), 3)


# ---- found by review: gradients of gradients through .grad, views, grad mode ----------
def test_backward_with_create_graph_keeps_the_graph_for_the_gradient():
    """As PyTorch, retain_graph defaults to create_graph: the gradient's own graph
    goes on using the forward graph (here tanh's output), so it must not be freed."""
    x = tg.tensor([0.5, -0.3], requires_grad=True, dtype=tg.float64)
    x.tanh().sum().backward(create_graph=True)
    g = x.grad
    x.grad = None
    g.sum().backward()
    t = np.tanh(np.array([0.5, -0.3]))
    np.testing.assert_allclose(x.grad.numpy(), -2 * t * (1 - t * t))


def test_unfold_result_has_its_own_memory():
    """A 1x1 unfold could be a view of x; like torch's it is a copy, so changing x in
    place afterwards changes neither the columns nor the gradient built from them."""
    x = tg.ones(1, 1, 3, 3)
    w = tg.tensor(np.arange(9.0).reshape(1, 1, 9), requires_grad=True)
    cols = tg.functional.unfold(x, 1)
    loss = (cols * w).sum()
    with tg.no_grad():
        x *= 10
    loss.backward()
    assert cols.tolist() == np.ones((1, 1, 9)).tolist()
    assert w.grad.tolist() == np.ones((1, 1, 9)).tolist()


def test_in_place_change_of_a_read_only_view_leaves_its_base_alone(device):
    """An in-place op on an expand (a broadcast view: read-only in NumPy, and treated
    so on CuPy, which has no such flag) writes to a copy of its own; the base neither
    changes nor counts as modified, so its graph still backpropagates."""
    a = tg.ones(1, 4, requires_grad=True, device=device)
    loss = (a * a).sum()
    e = a.detach().expand(3, 4)
    e += tg.tensor([[1.0], [2.0], [3.0]], device=device)
    e[0, 1] = 9.0
    assert e.tolist() == [[2.0, 9.0, 2.0, 2.0], [3.0] * 4, [4.0] * 4]
    assert a.tolist() == [[1.0] * 4]
    loss.backward()
    assert a.grad.tolist() == [[2.0] * 4]


def test_writes_to_views_of_a_broadcast_leave_its_base_alone(device):
    """A row of an expand is no broadcast itself, but still a view of the base: on
    every device an in-place op, an optimiser step or an init writes to a copy."""
    a = tg.ones(4, requires_grad=True, device=device)
    loss = (a * a).sum()
    row = a.detach().expand(3, 4)[0]
    with tg.no_grad():
        row += 1
    p = a.detach().expand(2, 4)[1:].requires_grad_()
    (p * 3).sum().backward()
    tg.optim.SGD([p], lr=1.0).step()
    q = a.detach().expand(2, 4)[0]
    tg.nn.init.constant_(q, 7.0)
    assert row.tolist() == [2.0] * 4 and p.tolist() == [[-2.0] * 4] and q.tolist() == [7.0] * 4
    assert a.tolist() == [1.0] * 4
    loss.backward()
    assert a.grad.tolist() == [2.0] * 4


def test_broadcast_views_are_not_writeable_in_place():
    from tinygrad_cnn.backend import is_writeable_strides
    assert not is_writeable_strides(np.broadcast_to(np.ones(4), (3, 4)))
    assert is_writeable_strides(np.broadcast_to(np.ones(4), (1, 4)))    # one element per 0
    assert is_writeable_strides(np.ones((3, 4))[:, ::2])


def test_numpy_views_of_a_tensor_are_copies():
    """np.asarray(t) must not hand out the memory backward relies on."""
    w = tg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x = tg.tensor([2.0, 2.0, 2.0], requires_grad=True)
    y = (w * x).sum()
    np.asarray(x)[:] = 100
    y.backward()
    assert w.grad.tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="does not share its memory"):
        np.asarray(x, copy=False)


def test_grad_mode_is_per_thread():
    """Two threads in and out of no_grad, interleaved: neither changes the other's mode,
    and the main thread records afterwards."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with tg.no_grad():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b():
        a_in.wait(5)
        with tg.no_grad():
            b_in.set()
            a_out.wait(5)
            seen["b inside"] = tg.is_grad_enabled()
        seen["b after"] = tg.is_grad_enabled()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == {"b inside": False, "b after": True}
    assert tg.is_grad_enabled()
    x = tg.tensor([1.0], requires_grad=True)
    assert (x * 2).requires_grad


def test_grad_mode_decorators_as_in_pytorch():
    x = tg.tensor([1.0], requires_grad=True)

    @tg.no_grad
    def bare():
        return x * 2

    @tg.no_grad()
    def gen():
        yield (x * 2).requires_grad
        yield (x * 3).requires_grad

    assert not bare().requires_grad
    inside = list(gen())
    assert inside == [False, False] and tg.is_grad_enabled()
    # set_grad_enabled switches at once when called, like PyTorch
    tg.set_grad_enabled(False)
    try:
        assert not tg.is_grad_enabled() and not (x * 2).requires_grad
    finally:
        tg.set_grad_enabled(True)
    with tg.set_grad_enabled(False):
        assert not tg.is_grad_enabled()
    assert tg.is_grad_enabled()

    @tg.set_grad_enabled(False)      # decorating does not switch
    def off():
        return tg.is_grad_enabled()
    assert tg.is_grad_enabled() and off() is False and tg.is_grad_enabled()


def test_a_hand_set_grad_of_the_wrong_shape_is_refused_at_backward():
    w = tg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    w.grad = tg.zeros(3, 1)
    with pytest.raises(RuntimeError, match=r"\(3,\).*shape \(3, 1\)"):
        (w * 2).sum().backward()
    w.grad = np.zeros(3)
    with pytest.raises(RuntimeError, match="ndarray"):
        (w * 2).sum().backward()
    w.grad = tg.zeros(3, dtype="float64")         # w is float32: the sum would promote
    with pytest.raises(RuntimeError, match="dtype float32.*dtype float64"):
        (w * 2).sum().backward()


class Positive(tg.Function):
    """mask = x > 0: a bool output, which has no gradient."""

    def forward(self, x):
        return x > 0

    def backward(self, grad_out):
        raise AssertionError("a bool output gets no backward")


def test_a_function_with_a_bool_output_records_no_graph():
    x = tg.tensor([-1.0, 2.0], requires_grad=True)
    mask = Positive.apply(x)
    assert mask.dtype == np.bool_ and not mask.requires_grad and mask.grad_fn is None
    (x * mask).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0])
