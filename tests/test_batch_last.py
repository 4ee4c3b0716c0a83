"""Batch-last arrays: a ``kln`` convolution returns its output as an NCHW view of
(C, OH, OW, N) memory, and the ops after it read that order as it is (see
"Batch-last arrays" in tinygrad_cnn/conv_arrays.py).  Memory order must never
change a value or a gradient: each test runs the same computation on a
batch-last input and on a C-order copy of it (or with every convolution forced
to the per-image layout) and requires the same numbers, and checks that the
fast path was really taken, so a silent fallback to copies would fail too.
"""
import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import conv_arrays, ops
from tinygrad_cnn import functional as F
from tinygrad_cnn.backend import get_backend
from tinygrad_cnn.conv_arrays import is_batch_last
from tinygrad_cnn.tensor import Tensor

from conftest import forward_and_grads


def batch_last_copy(a):
    """a (N, ...) as a view of a C-contiguous (..., N) array."""
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 0, -1)), -1, 0)


def assert_same(a, b, what):
    for k, (x, y) in enumerate(zip(a, b)):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12, err_msg=f"{what} [{k}]")


def lenet_like(x, w1, b1, w2, b2, w3):
    """conv 5x5 -> relu -> max-pool -> conv 3x3 -> relu -> avg-pool -> flatten -> linear."""
    h = F.max_pool2d(F.relu(F.conv2d(x, w1, b1)), 2)              # (N, 4, 6, 6)
    h = F.avg_pool2d(F.relu(F.conv2d(h, w2, b2, padding=1)), 2)   # (N, 6, 3, 3)
    return F.linear(F.flatten(h), w3)                              # (N, 5)


def lenet_arrays(N=6, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in
            [(N, 1, 16, 16), (4, 1, 5, 5), (4,), (6, 4, 3, 3), (6,), (5, 54)]]


def test_a_small_kernel_convolution_returns_a_batch_last_view_that_the_next_ops_keep():
    x, w1, b1, w2, b2, w3 = (Tensor(a) for a in lenet_arrays())
    y = F.conv2d(x, w1, b1)                     # K = 25 < 64, 12x12 output, N = 6: kln
    assert is_batch_last(y.data) and y.data.base is not None
    h = F.relu(y)
    assert is_batch_last(h.data)
    p = F.max_pool2d(h, 2)
    assert is_batch_last(p.data)
    y2 = F.conv2d(p, w2, b2, padding=1)         # reads p in place, writes batch-last again
    assert is_batch_last(y2.data)
    a = F.avg_pool2d(y2, 2)
    assert is_batch_last(a.data)
    flat = F.flatten(a)                         # the (C, H, W) axes stay adjacent: a view
    assert np.shares_memory(flat.data, a.data)


def test_a_network_gives_the_same_values_and_gradients_in_either_layout(monkeypatch):
    arrays = lenet_arrays()
    natural = forward_and_grads(lenet_like, arrays)
    monkeypatch.setattr(F, "choose_layout", lambda *args, **kwargs: "nkl")
    per_image = forward_and_grads(lenet_like, arrays)
    assert_same(natural, per_image, "kln/batch-last against nkl/NCHW")


def test_a_network_gives_the_same_gradients_in_chunks(monkeypatch):
    """Chunked convolutions read a batch-last input by converting it to NCHW once."""
    arrays = lenet_arrays(N=8)
    whole = forward_and_grads(lenet_like, arrays)
    previous = F.set_im2col_limit(1)            # one image per chunk
    try:
        chunked = forward_and_grads(lenet_like, arrays)
    finally:
        F.set_im2col_limit(previous)
    assert_same(whole, chunked, "chunked")


def test_gradcheck_through_batch_last_layers():
    arrays = lenet_arrays(N=4, seed=3)
    xs = [Tensor(a, requires_grad=True) for a in arrays]
    assert tg.gradcheck(lenet_like, xs)


def test_gradgradcheck_through_batch_last_layers():
    """Second order runs through the relayout of gradients too (create_graph)."""
    rng = np.random.default_rng(4)
    x, w1, w2 = (Tensor(rng.standard_normal(s), requires_grad=True) for s in
                 [(4, 1, 7, 7), (3, 1, 3, 3), (2, 3, 3, 3)])

    def fn(x, w1, w2):
        h = F.conv2d(x, w1)                    # kln: batch-last
        return F.conv2d(h * h, w2).reshape(4, -1)

    assert is_batch_last(F.conv2d(x, w1).data)
    assert tg.gradgradcheck(fn, [x, w1, w2])


POOLS = {
    "max_pool2d": lambda x: F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True),
    "max_pool2d_tiles": lambda x: F.max_pool2d(x, 2),
    "avg_pool2d": lambda x: F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False),
    "adaptive_max": lambda x: F.adaptive_max_pool2d(x, (3, 2)),
    "adaptive_avg": lambda x: F.adaptive_avg_pool2d(x, (3, 2)),
    "conv2d_nkl": lambda x: F.conv2d(x, x[:2, :, :3, :3] * 1.0, padding=1),
    "local2d": lambda x: F.local2d(x, x[:1, :, :4, :4].reshape(1, 1, 1, 3, 4, 4).expand(
        2, 2, 2, 3, 4, 4) * 0.5, stride=2),
    "conv_transpose2d": lambda x: F.conv_transpose2d(x, x[:3, :2, :2, :2] * 1.0, stride=2),
    "unfold": lambda x: F.unfold(x, 2, padding=1),
    "sum_023": lambda x: x.sum(axis=(0, 2, 3)),
    "sum_023_keepdims": lambda x: x.sum(axis=(0, 2, 3), keepdims=True),
    "mixed_add": lambda x: x + Tensor(np.arange(x.size).reshape(x.shape) / 7.0,
                                      device=x.device),
    "mixed_mul_reversed": lambda x: Tensor(np.arange(x.size).reshape(x.shape) / 7.0,
                                           device=x.device) * x,
    "pad": lambda x: F.pad(x, (1, 2, 0, 1)),
    "concatenate_channels": lambda x: tg.concatenate([x, x * 2], axis=1),
    "concatenate_batch": lambda x: tg.concatenate([x * 3, x], axis=0),
    "stack": lambda x: tg.stack([x, x], axis=2),
    "clip": lambda x: x.clip(-0.5, 0.7),
    "dropout": lambda x: (tg.manual_seed(3), F.dropout(x, 0.3))[1],
    "flatten_linear": lambda x: F.linear(F.flatten(x), x[:4].reshape(4, -1) * 1.0),
}


@pytest.mark.parametrize("name", list(POOLS))
def test_ops_give_the_same_result_on_a_batch_last_input(name, device):
    """Every op reading a batch-last array (as a kln convolution returns them) gives the
    values and gradients it gives on the same array in C order."""
    a = np.random.default_rng(5).standard_normal((6, 3, 7, 6))
    blast = batch_last_copy(a)
    assert is_batch_last(blast)
    fn = POOLS[name]
    assert_same(forward_and_grads(fn, [blast], device), forward_and_grads(fn, [a], device), name)


@pytest.mark.parametrize("shape", [(64, 20, 24, 24), (256, 50, 8, 8), (5, 3, 4, 4)])
def test_order_conversions_are_exact_and_land_where_asked(shape):
    backend = get_backend("cpu")
    a = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
    blast = conv_arrays.in_order_of(backend, a, batch_last_copy(a[:, :, :1, :1] * 0 + a))
    assert is_batch_last(blast) and np.array_equal(blast, a)
    back = conv_arrays.as_nchw(backend, blast)
    assert back.flags.c_contiguous and np.array_equal(back, a)
    assert conv_arrays.as_nchw(backend, a) is a
    assert conv_arrays.in_order_of(backend, a, a) is a
    out = conv_arrays.empty_as(backend, blast)
    conv_arrays.assign(backend, out, a)
    assert is_batch_last(out) and np.array_equal(out, a)


def test_gradients_are_stored_like_their_tensors():
    """A gradient reaching a batch-last tensor in C order (through a reshape here) is
    laid out like the tensor before the tensor's own backward reads it."""
    seen = []

    class Spy(tg.Function):
        def forward(self, x):
            return x * 1.0

        def backward(self, grad_out):
            seen.append(is_batch_last(grad_out.data))
            return grad_out

    rng = np.random.default_rng(7)
    x = Tensor(batch_last_copy(rng.standard_normal((6, 2, 3, 3))), requires_grad=True)
    v = rng.standard_normal((6, 9, 2))
    y = Spy.apply(x)
    assert is_batch_last(y.data)
    (y.reshape(6, 2, 9).transpose(0, 2, 1) * Tensor(v)).sum().backward()
    assert seen == [True]
    np.testing.assert_array_equal(x.grad.numpy(), v.transpose(0, 2, 1).reshape(x.shape))


def test_a_binary_op_gives_its_second_operand_the_order_of_the_first():
    """NumPy would read one of two differently ordered operands across the cache."""
    a = np.random.default_rng(8).standard_normal((64, 4, 8, 8))
    blast, corder = Tensor(batch_last_copy(a)), Tensor(a * 2)
    assert is_batch_last((blast + corder).data)
    assert (corder * blast).data.flags.c_contiguous
    np.testing.assert_array_equal((blast - corder).numpy(), a - a * 2)


def _head_grads(head, y, xs):
    if head == "mean":
        return tg.grad(y.mean(axis=(2, 3)).sum(), xs)
    if head == "sum":
        return tg.grad(y.sum(), xs)
    return tg.grad(y, xs, Tensor(np.random.default_rng(1).standard_normal(y.shape)))  # C order


@pytest.mark.parametrize("head", ["mean", "sum", "grad_outputs"])
def test_input_gradient_when_the_backward_would_choose_another_layout(monkeypatch, head):
    """A kln convolution of a batch-last input gets a gradient that is not batch-last
    (a broadcast from a mean, a root gradient): its input gradient must use the
    forward's layout for the output gradient it laid out, not choose anew."""
    rng = np.random.default_rng(9)
    arrays = [rng.standard_normal(s) for s in [(8, 1, 28, 28), (8, 1, 3, 3), (16, 8, 3, 3)]]
    results = []
    for forced in (False, True):
        if forced:
            monkeypatch.setattr(F, "choose_layout", lambda *args, **kwargs: "nkl")
        xs = [Tensor(a, requires_grad=True) for a in arrays]
        y = F.conv2d(F.relu(F.conv2d(xs[0], xs[1])), xs[2])   # 26x26 -> 24x24, no padding
        assert is_batch_last(y.data) != forced      # conv2 read a batch-last input: kln
        results.append([g.numpy() for g in _head_grads(head, y, xs)])
    assert_same(results[0], results[1], head)


def test_concatenation_clip_and_dropout_keep_batch_last_inputs_batch_last(monkeypatch):
    x = Tensor(batch_last_copy(np.random.default_rng(10).standard_normal((64, 3, 4, 4))),
               requires_grad=True)
    assert is_batch_last(tg.concatenate([x, x], axis=1).data)
    assert is_batch_last(tg.concatenate([x, x], axis=0).data)
    clipped = x.clip(-1, 1)
    assert is_batch_last(clipped.data) and is_batch_last(clipped._ctx.mask)
    # dropout draws its scale in x's order: the product has nothing to reorder
    reordered = []
    real = ops.in_order_of
    monkeypatch.setattr(ops, "in_order_of", lambda backend, a, ref: (
        reordered.append(conv_arrays.reorders(a, ref)), real(backend, a, ref))[1])
    assert is_batch_last(F.dropout(x, 0.5).data)
    assert not any(reordered)


@pytest.mark.parametrize("between", ["nothing", "smaller_limit"])
def test_rows_laid_out_for_one_chunk_are_not_reused_in_chunks(monkeypatch, between):
    """A batch-last x may be one chunk (its bound is larger) where the output gradient,
    in C order, is not: the input gradient then chunks and must lay out each chunk
    itself, as it must when the im2col limit shrinks between forward and backward."""
    rng = np.random.default_rng(11)
    arrays = [batch_last_copy(rng.standard_normal((8, 3, 9, 9))), rng.standard_normal((4, 3, 3, 3))]
    geom = conv_arrays.conv_geometry("c", (1, 3, 9, 9), (3, 3))
    one_image = 3 * 9 * geom.OH * geom.OW * 8                   # bytes of columns per image
    monkeypatch.setattr(conv_arrays, "COLUMN_BLOCK_BYTES", 2 * one_image)
    monkeypatch.setattr(conv_arrays, "BATCH_LAST_BLOCK_BYTES", 8 * one_image)

    def grads():
        xs = [Tensor(a, requires_grad=True) for a in arrays]
        y = F.conv2d(*xs)
        assert is_batch_last(y.data)                # one kln chunk in the forward
        previous = F.set_im2col_limit(one_image) if between == "smaller_limit" else None
        try:
            v = Tensor(np.random.default_rng(1).standard_normal(y.shape))   # C order
            return [g.numpy() for g in tg.grad(y, xs, v)]
        finally:
            if previous is not None:
                F.set_im2col_limit(previous)

    natural = grads()
    assert len(conv_arrays.batch_chunks(get_backend("cpu"), 8, one_image)) == 4
    monkeypatch.setattr(F, "choose_layout", lambda *args, **kwargs: "nkl")
    monkeypatch.setattr(F, "is_batch_last", lambda a: False)
    xs = [Tensor(np.ascontiguousarray(a), requires_grad=True) for a in arrays]
    y = F.conv2d(*xs)
    v = Tensor(np.random.default_rng(1).standard_normal(y.shape))
    assert_same(natural, [g.numpy() for g in tg.grad(y, xs, v)], between)
