"""Smoke tests of the machinery under ``tinygrad_cnn.functional`` that the op-level
suite (``test_functional.py``, batches of 1-2 images) does not reach: the
batch-inner column layout, batch chunking under an im2col limit, the
backend-kernel hook, the CuPy-rules ("strict") backend, and the benchmark's
``--quick`` run.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_cnn as tg
import tinygrad_cnn.functional as F
from tinygrad_cnn import Tensor, conv_arrays
from tinygrad_cnn.backend import NumpyBackend, get_backend, register_backend

try:  # registers the "strict" device (CuPy's rules on NumPy arrays)
    from . import reference_loops as ref
    from . import strict_backend  # noqa: F401
except ImportError:
    import reference_loops as ref
    import strict_backend  # noqa: F401

from conftest import forward_and_grads  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _close(a, b, what):
    for k, (x, y) in enumerate(zip(a, b)):
        np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-10, err_msg=f"{what} [{k}]")


CONVS = {
    # N >= 4 images with short output rows: the batch-inner ("kln") layout.
    "conv2d_short_rows":
        (lambda F, x, w, b: F.conv2d(x, w, b, stride=2, padding=1, groups=2),
         [(6, 4, 9, 8), (6, 2, 3, 3), (6,)]),
    "conv2d_long_rows":
        (lambda F, x, w, b: F.conv2d(x, w, b, padding=(1, 2), dilation=(2, 1)),
         [(4, 3, 5, 20), (2, 3, 3, 2), (2,)]),
    # A batch of 64 in float64 (512-byte strides) and > 1 MiB of rows: the tiled copies
    # of conv_arrays.batch_first, in the forward and in fold.
    "conv2d_batch_64_tiled":
        (lambda F, x, w, b: F.conv2d(x, w, b, padding=1, stride=(1, 2)),
         [(64, 16, 12, 24), (32, 16, 3, 3), (32,)]),
    # fold of N >= 4 images with short rows: copied into the batch-inner layout first.
    "fold_short_rows":
        (lambda F, c: F.fold(c, (9, 8), 3, padding=1, stride=2), [(6, 72, 20)]),
    "conv_transpose2d_short_rows":
        (lambda F, x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1,
                                               groups=2),
         [(5, 4, 3, 4), (4, 3, 3, 3), (6,)]),
}


def _arrays(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in shapes]


@pytest.mark.parametrize("name", list(CONVS))
def test_layouts_and_chunks_agree(name, monkeypatch):
    """Each column layout, and chunked batches, give the same forward and gradients.
    Chunks come from the im2col limit (each chunk's columns made again for the
    weight gradient) or from the cache-sized chunk bound (the per-image
    layout's chunks then write into one buffer that the weight gradient reuses)."""
    fn, shapes = CONVS[name]
    arrays = _arrays(shapes)
    reference = None
    limit, block = F.get_im2col_limit(), conv_arrays.COLUMN_BLOCK_BYTES
    try:
        for layout in ("nkl", "knl", "kln"):
            monkeypatch.setattr(F, "choose_layout",
                                lambda *args, layout=layout, **kwargs: layout)
            for chunked in ("no", "by the limit", "cache-sized"):
                # 1 byte: one image per chunk
                F.set_im2col_limit(1 if chunked == "by the limit" else limit)
                monkeypatch.setattr(conv_arrays, "COLUMN_BLOCK_BYTES",
                                    1 if chunked == "cache-sized" else block)
                result = forward_and_grads(lambda *xs: fn(F, *xs), arrays)
                if reference is None:
                    reference = result
                else:
                    _close(result, reference, f"{name} layout {layout} chunked {chunked}")
    finally:
        F.set_im2col_limit(limit)


def test_weight_gradient_reuses_the_columns_of_cache_sized_chunks(monkeypatch):
    """In cache-sized chunks of the per-image layout the forward writes each chunk's
    columns into one buffer for the batch, and the weight gradient reads them there:
    backward builds no columns.  Chunks forced by the im2col limit build them again."""
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((4, 8, 16, 16)))
    w, b = (Tensor(rng.standard_normal(s), requires_grad=True) for s in ((8, 8, 3, 3), (8,)))
    g = Tensor(rng.standard_normal((4, 8, 16, 16)))
    expected = tg.grad(F.conv2d(x, w, b, padding=1), [w, b], g)
    calls = []
    unfold = F.unfold_array
    monkeypatch.setattr(F, "unfold_array", lambda *a, **k: calls.append(a[3]) or unfold(*a, **k))
    monkeypatch.setattr(F, "choose_layout", lambda *args, **kwargs: "nkl")
    monkeypatch.setattr(conv_arrays, "COLUMN_BLOCK_BYTES", 1)     # one image per chunk
    limit = F.get_im2col_limit()
    try:
        for limited, backward_calls in ((False, 0), (True, 4)):
            F.set_im2col_limit(1 if limited else limit)
            calls.clear()
            y = F.conv2d(x, w, b, padding=1)
            assert calls == ["nkl"] * 4, calls
            grads = tg.grad(y, [w, b], g)
            assert len(calls) == 4 + backward_calls, (limited, calls)
            _close([t.numpy() for t in grads], [t.numpy() for t in expected],
                   f"weight gradient, chunks by the limit: {limited}")
    finally:
        F.set_im2col_limit(limit)


@pytest.mark.parametrize("name", list(CONVS))
def test_short_rows_match_torch(name):
    torch = pytest.importorskip("torch")
    fn, shapes = CONVS[name]
    arrays = _arrays(shapes)
    ours = forward_and_grads(lambda *xs: fn(F, *xs), arrays)
    xs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(torch.nn.functional, *xs)
    v = torch.tensor(np.random.default_rng(1).standard_normal(tuple(out.shape)))
    theirs = [out.detach().numpy()] + [g.numpy() for g in torch.autograd.grad(out, xs, v)]
    _close(ours, theirs, name)


@pytest.mark.parametrize("N", [6, 160])   # 160: > 1 MiB of patches, copied in tiles
def test_local2d_with_short_rows_matches_the_loops(N):
    """local2d through the batch-inner fold and, for the large batch, the tiled copies
    of its permuted patches, against the textbook loops."""
    rng = np.random.default_rng(7)
    shapes = [(N, 8, 6, 6), (2, 4, 4, 8, 3, 3), (N, 2, 4, 4)]
    x, w, g = (rng.standard_normal(s) for s in shapes)
    xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
    grads = tg.grad(F.local2d(xt, wt), [xt, wt], Tensor(g))
    np.testing.assert_allclose(F.local2d(Tensor(x), Tensor(w)).numpy(), ref.local2d(x, w),
                               rtol=1e-10, atol=1e-10)
    for ours, theirs in zip(grads, ref.local2d_vjp(x, w, g)):
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("device", ["cpu", "strict"])
@pytest.mark.parametrize("shape,order,dtype", [
    ((96, 300, 20), (2, 0, 1), "float32"),   # contiguous axis first: tiles
    ((96, 300, 20), (2, 1, 0), "float64"),   # ... reversed
    ((1000, 300), (1, 0), "float64"),        # a long 2-D transpose: tiles along rows
    ((60, 300, 20), (0, 2, 1), "float32"),   # contiguous axis second to last, short rows
    ((5, 7, 3), (2, 0, 1), "float64"),       # small: one plain copy
])
def test_contiguous_copies_permuted_arrays(device, shape, order, dtype, monkeypatch):
    backend = get_backend(device)
    monkeypatch.setattr(type(backend), "cache_blocking", True)
    host = np.random.default_rng(8).standard_normal(shape).astype(dtype).transpose(order)
    a = backend.asarray(np.ascontiguousarray(host.transpose(np.argsort(order)))).transpose(order)
    out = conv_arrays.contiguous(backend, a)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(backend.to_numpy(out), host)
    assert conv_arrays.contiguous(backend, out) is out
    # MatMul copies operands BLAS cannot read in place the same way.
    other = np.random.default_rng(9).standard_normal(host.shape[-1:] + (3,)).astype(dtype)
    tol = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose((Tensor(a, device=device) @ Tensor(other, device=device)).numpy(),
                               host @ other, rtol=tol, atol=tol)


def test_tiled_copy_only_where_a_plain_copy_reads_across_the_cache():
    cpu, strict = get_backend("cpu"), get_backend("strict")
    big = np.zeros((256, 500, 64), np.float32)                        # 33 MB
    assert conv_arrays.tiled_copy_pays(cpu, big.transpose(2, 0, 1))   # local2d's patches
    assert not conv_arrays.tiled_copy_pays(strict, big.transpose(2, 0, 1))  # no CPU caches
    assert not conv_arrays.tiled_copy_pays(cpu, big)                 # already contiguous
    assert conv_arrays.tiled_copy_pays(cpu, big.transpose(0, 2, 1))  # rows of 500 lines
    rows = np.zeros((2048, 20, 64), np.float32).transpose(0, 2, 1)    # rows of 20: reused
    assert not conv_arrays.tiled_copy_pays(cpu, rows)
    short = np.zeros((8192, 64, 4), np.float32)                       # contiguous axis of 4
    assert not conv_arrays.tiled_copy_pays(cpu, short.transpose(2, 1, 0))
    wide = np.zeros((4000, 1000), np.float32)
    assert conv_arrays.tiled_copy_pays(cpu, wide.T)
    assert conv_arrays.tiled_copy_pays(cpu, wide.T[None])             # size-1 axes ignored


def test_unfold_array_layouts_are_one_matrix():
    """'nkl', 'knl' and 'kln' hold the same columns in different orders; fold is the adjoint."""
    backend = get_backend("cpu")
    x = np.random.default_rng(2).standard_normal((5, 3, 7, 6))
    geom = conv_arrays.conv_geometry("t", x.shape, (3, 2), (2, 1), ((1, 2), (0, 1)), (1, 2))
    nkl = conv_arrays.unfold_array(backend, x, geom, "nkl")               # (N, K, L)
    knl = conv_arrays.unfold_array(backend, x, geom, "knl")               # (K, N*L)
    kln = conv_arrays.unfold_array(backend, x, geom, "kln")               # (K, L*N)
    N, K, L = nkl.shape
    np.testing.assert_array_equal(knl.reshape(K, N, L).transpose(1, 0, 2), nkl)
    np.testing.assert_array_equal(kln.reshape(K, L, N).transpose(2, 0, 1), nkl)
    for layout, cols in (("nkl", nkl), ("knl", knl), ("kln", kln)):
        y = np.random.default_rng(3).standard_normal(cols.shape)
        back = conv_arrays.fold_array(backend, y, geom, 5, 3, layout)
        assert back.shape == x.shape
        np.testing.assert_allclose(np.sum(cols * y), np.sum(x * back), rtol=1e-12)


@pytest.mark.parametrize("device", ["cpu", "strict"])
@pytest.mark.parametrize("shape,dtype,view", [
    ((50, 8, 8, 256), "float32", False),    # channels not a multiple of the tile's 16
    ((20, 14, 14, 64), "float64", True),    # the interior of a padded array, as in fold
    ((3, 5, 7, 256), "float32", False),     # under 1 MiB: one plain copy
    ((7, 9, 11, 100), "float64", False),    # 800-byte stride: one plain copy
])
def test_batch_first_moves_the_batch_axis(device, shape, dtype, view, monkeypatch):
    """The tiled copy (on any backend that asks for it) equals moving the axis."""
    _check_batch_move(device, shape, dtype, view, monkeypatch, conv_arrays.batch_first, -1, 0)


@pytest.mark.parametrize("device", ["cpu", "strict"])
@pytest.mark.parametrize("shape,dtype,view", [
    ((256, 50, 8, 8), "float32", False),    # 12800-byte image stride, as in LeNet's conv2
    ((64, 20, 12, 12), "float64", True),    # into the interior of a padded array
    ((256, 5, 7, 3), "float32", False),     # under 1 MiB: one plain copy
    ((100, 7, 9, 11), "float64", False),    # 5544-byte stride: one plain copy
])
def test_batch_last_moves_the_batch_axis(device, shape, dtype, view, monkeypatch):
    _check_batch_move(device, shape, dtype, view, monkeypatch, conv_arrays.batch_last, 0, -1)


def _check_batch_move(device, shape, dtype, view, monkeypatch, move, source, destination):
    backend = get_backend(device)
    monkeypatch.setattr(type(backend), "cache_blocking", True)
    host = np.random.default_rng(4).standard_normal(shape).astype(dtype)
    expected = np.moveaxis(host, source, destination)
    a = backend.asarray(host)
    if view and source == -1:  # pad H, W by 2 and take the interior back: a strided source
        padded = backend.xp.zeros((shape[0], shape[1] + 4, shape[2] + 4, shape[3]), dtype)
        padded[:, 2:-2, 2:-2] = a
        a = padded[:, 2:-2, 2:-2]
    np.testing.assert_array_equal(backend.to_numpy(move(backend, a)), expected)
    out = backend.xp.full(expected.shape, np.nan, dtype)
    if view and source == 0:   # a strided destination, as in _padded(channels_first=True)
        C, H, W, N = expected.shape
        out = backend.xp.full((C, H + 4, W + 4, N), np.nan, dtype)[:, 2:-2, 2:-2]
    assert move(backend, a, out) is out
    np.testing.assert_array_equal(backend.to_numpy(out), expected)


POOLS = {
    "max_pool2d_tiles": (lambda F, x: F.max_pool2d(x, 2), (7, 3, 6, 8)),
    "max_pool2d_overlapping_padded": (lambda F, x: F.max_pool2d(x, 3, stride=2, padding=1),
                                      (7, 3, 7, 6)),
    "max_pool2d_ceil_mode": (lambda F, x: F.max_pool2d(x, 2, ceil_mode=True), (7, 2, 5, 7)),
}


@pytest.mark.parametrize("order", ["nchw", "batch_last"])
@pytest.mark.parametrize("device", ["cpu", "strict"])
@pytest.mark.parametrize("name", list(POOLS))
def test_max_pool_in_cache_chunks_agrees(device, name, order, monkeypatch):
    """Max-pool forward, gradient (scatter) and second order (gather) with the batch
    (or, batch-last, the channels) in cache-sized slices equal the whole-batch
    results, ties and all."""
    fn, shape = POOLS[name]
    rng = np.random.default_rng(5)
    x = rng.integers(0, 3, shape).astype(np.float64)     # many ties: first-max rule
    if order == "batch_last":
        x = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 0, -1)), -1, 0)
    u = rng.standard_normal(shape)
    v = rng.standard_normal(fn(F, Tensor(x)).shape)
    backend = get_backend(device)

    def run():
        xt = Tensor(x, requires_grad=True, device=device)
        vt = Tensor(v, requires_grad=True, device=device)
        y = fn(F, xt)
        (gx,) = tg.grad(y, [xt], vt, create_graph=True)               # scatter
        (gv,) = tg.grad((gx * Tensor(u, device=device)).sum(), [vt])  # gather
        return [y.numpy(), gx.numpy(), gv.numpy()]

    monkeypatch.setattr(type(backend), "cache_blocking", False)
    whole = run()
    monkeypatch.setattr(type(backend), "cache_blocking", True)
    monkeypatch.setattr(conv_arrays, "CACHE_BLOCK_MIN_BYTES", 0)
    if order == "nchw":
        monkeypatch.setattr(conv_arrays, "CACHE_BLOCK_BYTES", int(2.5 * x[0].nbytes))
        assert len(conv_arrays.cache_chunks(backend, backend.asarray(x))) == 4   # 2+2+2+1
    else:
        monkeypatch.setattr(conv_arrays, "CACHE_BLOCK_BYTES", int(1.5 * x[:, 0].nbytes))
        chunks = conv_arrays.cache_chunks(backend, backend.asarray(x))
        assert len(chunks) == shape[1] and chunks[0][0] == slice(None)   # one channel each
    for a, b, what in zip(run(), whole, ("forward", "gradient", "second order")):
        np.testing.assert_array_equal(a, b, err_msg=f"{name} {what}")


class _OwnIm2col(NumpyBackend):
    """A host backend with its own im2col kernel (as CuPy's), for the hook paths."""
    calls = []

    def im2col(self, x, geom, layout):
        self.calls.append(layout)
        return conv_arrays.unfold_array(get_backend("cpu"), x, geom, layout)


def test_unfold_array_writes_into_out():
    x = np.random.default_rng(2).standard_normal((2, 3, 5, 4))
    geom = conv_arrays.conv_geometry("unfold", x.shape, (2, 2), padding=((1, 0), (0, 1)))
    expected = conv_arrays.unfold_array(get_backend("cpu"), x, geom)
    for backend in (get_backend("cpu"), _OwnIm2col()):
        out = np.full((2, expected.shape[1] + 1, expected.shape[2]), np.nan)[:, 1:]  # a view
        assert conv_arrays.unfold_array(backend, x, geom, out=out) is out
        np.testing.assert_array_equal(out, expected)
        with pytest.raises(ValueError, match=r"'kln' layout, of shape \(12, 40\)"):
            conv_arrays.unfold_array(backend, x, geom, "kln", out=out)
        with pytest.raises(ValueError, match=r"shape \(2, 12, 20\)"):
            conv_arrays.unfold_array(backend, x, geom, out=out[:, :, 1:])
        with pytest.raises(ValueError, match="contiguous last axis"):
            conv_arrays.unfold_array(backend, x, geom, "knl", out=out)
        # kln: into the first rows of a taller buffer (a row of ones below, say)
        expected_kln = conv_arrays.unfold_array(get_backend("cpu"), x, geom, "kln")
        out = np.full((13, 40), np.nan)[:12]
        assert conv_arrays.unfold_array(backend, x, geom, "kln", out=out) is out
        np.testing.assert_array_equal(out, expected_kln)
    assert _OwnIm2col.calls == ["nkl", "kln"]


def test_im2col_limit_setting_and_env():
    previous = F.set_im2col_limit("3M")
    try:
        assert F.get_im2col_limit() == 3 * 2**20
        cpu = get_backend("cpu")
        assert conv_arrays.batch_chunks(cpu, 10, 2**20) == [(0, 3), (3, 6), (6, 9), (9, 10)]
        assert conv_arrays.batch_chunks(cpu, 10, 2**30) == [(k, k + 1) for k in range(10)]
        # Above the limit, on the CPU chunks also stay under 16 MiB of columns
        # (elsewhere, as on a GPU, only the limit applies).
        F.set_im2col_limit("64M")
        assert conv_arrays.batch_chunks(cpu, 10, 5 * 2**20) == [(0, 3), (3, 6), (6, 9),
                                                                (9, 10)]
        # ... and under 64 MiB for a batch-last operand, read as one chunk if it can be
        assert conv_arrays.batch_chunks(cpu, 10, 5 * 2**20, batch_last=True) == [(0, 10)]
        assert conv_arrays.batch_chunks(cpu, 20, 5 * 2**20, batch_last=True) == [
            (0, 12), (12, 20)]
        strict = get_backend("strict")
        assert conv_arrays.batch_chunks(strict, 10, 5 * 2**20) == [(0, 10)]
        for bad in (0, -5, "lots", 1.5):
            with pytest.raises(ValueError, match="bytes"):
                F.set_im2col_limit(bad)
    finally:
        F.set_im2col_limit(previous)


@pytest.mark.parametrize("text, nbytes", [
    ("1048576", 2**20), ("100b", 100), ("64k", 64 * 2**10), ("64 KiB", 64 * 2**10),
    ("3M", 3 * 2**20), ("512 MiB", 512 * 2**20), ("1.5mb", 3 * 2**19), ("2G", 2 * 2**30),
    ("1 gib", 2**30),
])
def test_parse_bytes_reads_binary_units(text, nbytes):
    """Every unit the docs and TINYGRAD_CNN_IM2COL_LIMIT accept, any case: powers of 1024."""
    assert conv_arrays.parse_bytes(text) == nbytes


def test_im2col_limit_from_the_environment(monkeypatch):
    """Read at the first convolution, not at import: a bad value is an error naming
    the variable where the limit is needed, and never stops `import tinygrad_cnn`."""
    monkeypatch.setattr(conv_arrays, "_im2col_limit", None)
    monkeypatch.setenv("TINYGRAD_CNN_IM2COL_LIMIT", "2M")
    assert F.get_im2col_limit() == 2 * 2**20
    monkeypatch.setattr(conv_arrays, "_im2col_limit", None)
    monkeypatch.setenv("TINYGRAD_CNN_IM2COL_LIMIT", "lots")
    with pytest.raises(ValueError, match=r"TINYGRAD_CNN_IM2COL_LIMIT='lots' \(environment"):
        F.conv2d(Tensor(np.ones((1, 1, 3, 3))), Tensor(np.ones((1, 1, 2, 2))))
    assert F.set_im2col_limit("1M") == conv_arrays.DEFAULT_IM2COL_LIMIT   # replaces it
    assert F.get_im2col_limit() == 2**20
    result = subprocess.run([sys.executable, "-c", "import tinygrad_cnn"], capture_output=True,
                            text=True, env={**os.environ, "TINYGRAD_CNN_IM2COL_LIMIT": "lots"})
    assert result.returncode == 0, result.stderr


def test_backend_kernel_hook_is_used():
    """A backend with its own im2col/col2im gets them called instead of the generic code."""
    calls = []

    class HookedBackend(NumpyBackend):
        def im2col(self, x, geom, layout):
            calls.append(("im2col", layout))
            return conv_arrays.unfold_array(get_backend("cpu"), x, geom, layout)

        def col2im(self, cols, geom, N, C, layout):
            calls.append(("col2im", layout))
            return conv_arrays.fold_array(get_backend("cpu"), cols, geom, N, C, layout)

    register_backend("hooked", HookedBackend())
    arrays = _arrays([(2, 3, 6, 6), (4, 3, 3, 3), (4,)])
    fn = lambda x, w, b: F.conv2d(x, w, b, stride=2)  # noqa: E731
    _close(forward_and_grads(fn, arrays, device="hooked"), forward_and_grads(fn, arrays),
           "hooked backend")
    assert {name for name, _ in calls} == {"im2col", "col2im"}


STRICT_OPS = {
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, padding=1, groups=2),
               [(4, 4, 6, 5), (6, 2, 3, 3), (6,)]),
    "conv2d_bias_in_gemm": (lambda x, w, b: F.conv2d(x, w, b, stride=(1, 2)),
                            [(2, 3, 6, 5), (4, 3, 3, 2), (4,)]),
    "conv_transpose2d": (lambda x, w: F.conv_transpose2d(x, w, stride=2, output_padding=1),
                         [(2, 3, 4, 3), (3, 2, 3, 2)]),
    "max_pool2d_padded": (lambda x: F.max_pool2d(x, 3, 2, padding=1, ceil_mode=True),
                          [(2, 3, 7, 6)]),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False),
                   [(2, 3, 7, 6)]),
    "adaptive_max": (lambda x: F.adaptive_max_pool2d(x, (3, 2)), [(2, 3, 7, 5)]),
    "adaptive_avg": (lambda x: F.adaptive_avg_pool2d(x, (3, 2)), [(2, 3, 7, 5)]),
    "local2d": (lambda x, w: F.local2d(x, w, stride=2), [(2, 3, 5, 5), (2, 2, 2, 3, 2, 2)]),
    "fold": (lambda c: F.fold(c, (5, 4), 2), [(2, 12, 12)]),
}


@pytest.mark.parametrize("name", list(STRICT_OPS))
def test_strict_backend_matches_cpu_without_syncs(name):
    """The ops keep to CuPy's rules and never wait for the device (no host sync)."""
    fn, shapes = STRICT_OPS[name]
    arrays = _arrays(shapes)
    strict = get_backend("strict")
    xs = [Tensor(a, requires_grad=True, device="strict") for a in arrays]
    v = Tensor(np.random.default_rng(1).standard_normal(fn(*xs).shape), device="strict")
    with strict.track_syncs() as log:
        out = fn(*xs)
        grads = tg.grad(out, xs, v, create_graph=True)
        second = tg.grad(sum((g * g).sum() for g in grads), xs, allow_unused=True)
    assert log == [], f"host synchronisations: {log}"
    ours = [out.numpy()] + [g.numpy() for g in grads] + \
        [np.zeros(1) if g is None else g.numpy() for g in second]
    xs = [Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*xs)
    grads = tg.grad(out, xs, Tensor(v.numpy()), create_graph=True)
    second = tg.grad(sum((g * g).sum() for g in grads), xs, allow_unused=True)
    cpu = [out.numpy()] + [g.numpy() for g in grads] + \
        [np.zeros(1) if g is None else g.numpy() for g in second]
    _close(ours, cpu, name)


def test_max_pool_return_indices_without_grad():
    x = Tensor(np.random.default_rng(4).permutation(np.arange(2 * 3 * 5 * 4.0)).reshape(2, 3, 5, 4))
    with tg.no_grad():
        y, idx = F.max_pool2d(x, 2, stride=1, padding=1, return_indices=True)
    flat = x.numpy().reshape(2, 3, -1)
    np.testing.assert_array_equal(np.take_along_axis(flat, idx.numpy().reshape(2, 3, -1), 2),
                                  y.numpy().reshape(2, 3, -1))
    assert idx.dtype == np.int64 and not idx.requires_grad


def test_nan_propagates_through_max_pool():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 1, 2] = np.nan
    t = Tensor(x, requires_grad=True)
    y = F.max_pool2d(t, 2, padding=1)                 # (1, 1, 3, 3); (1, 2) is in window (1, 1)
    nan = np.isnan(y.numpy()[0, 0])
    assert nan[1, 1] and nan.sum() == 1
    y.sum().backward()
    assert np.isfinite(t.grad.numpy()).all()


def test_benchmark_quick_runs():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_cnn.py"), "--quick",
         "--no-torch", "--repeats", "1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "LeNet step, batch 64" in result.stdout


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                    reason="bench_cnn.py --memory needs Linux's /proc/self/clear_refs")
def test_benchmark_memory_table_measures_the_live_arrays():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_cnn.py"), "--quick",
         "--memory", "--no-torch", "--only", "conv2d 64x1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    (row,) = [line for line in result.stdout.splitlines() if "conv2d 64x1x28x28" in line]
    ours = float(row.split("|")[2])
    # At its peak the call holds y (64x20x24x24 float32, 2.8 MiB) and the columns
    # kept for the weight gradient (64x26x576 with the bias row, 3.7 MiB); the
    # kernel's resident-set counters are approximate, hence the margin.
    assert 4.5 <= ours < 64, row


def test_benchmark_rounds_end_with_the_ratio_ranges():
    pytest.importorskip("torch")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_cnn.py"), "--quick",
         "--repeats", "1", "--rounds", "2", "--only", "max_pool2d"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "# round 2 of 2" in out and "# ratio over 2 rounds (min-max)" in out
    summary = out.split("# ratio over 2 rounds (min-max)")[1].strip().splitlines()
    assert len(summary) == 1 and "max_pool2d" in summary[0]
    lo, hi = (float(v) for v in summary[0].split("|")[2].split("-"))
    assert 0 < lo <= hi


def test_hand_written_benchmark_step_runs_and_matches_ours():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_floor.py"), "--quick",
         "--repeats", "1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "|     8 |" in result.stdout


def test_hand_written_benchmark_step_check_catches_a_different_step():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import bench_cnn
        import bench_floor
    finally:
        sys.path.pop(0)
    ours = bench_cnn.lenet_case(tg, F, None, 4, np.float32)[0]
    params, x, labels = ours.inputs
    hand, hand_params = bench_floor.make_step(params, x, (labels + 1) % 10)  # other labels
    with pytest.raises(AssertionError, match="disagree on"):
        bench_floor.check_same_step(hand, hand_params, ours, params)


@pytest.mark.parametrize("device", ["cpu", "own_im2col"])
@pytest.mark.parametrize("layout, shape", [("kln", (16, 4, 12, 12)), ("nkl", (2, 4, 36, 36))])
def test_conv_forward_with_bias_holds_one_im2col_buffer(device, layout, shape):
    """The bias rides in the GEMM on NumPy's im2col; a backend's own im2col, which
    makes its own buffer, must not get a second one to be copied into."""
    import tracemalloc
    register_backend("own_im2col", _OwnIm2col())
    rng = np.random.default_rng(6)
    x, w, b = (Tensor(rng.standard_normal(s), device=device)      # C*KH*KW < 64
               for s in [shape, (8, 4, 3, 3), (8,)])
    geom = conv_arrays.conv_geometry("c", x.shape, (3, 3))
    assert conv_arrays.choose_layout(shape[0], geom, 36) == layout
    cols = shape[0] * 36 * geom.OH * geom.OW * 8                     # N * C*KH*KW * L * 8 bytes
    with tg.no_grad():
        F.conv2d(x, w, b)                   # warm-up
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            y = F.conv2d(x, w, b)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    assert peak - y.data.nbytes <= 1.25 * cols, f"{(peak - y.data.nbytes) / cols:.2f} buffers"


def test_fold_in_the_batch_inner_layout_stays_within_the_limit():
    """Fold copies short-row columns into the batch-inner layout chunk by chunk (so the
    copy stays within the im2col limit), and only where CPU caches make it pay: a
    backend without cache_blocking (a GPU) gets the columns as they are."""
    import tracemalloc
    cols = Tensor(np.random.default_rng(3).standard_normal((64, 72, 20)))   # 737 KB
    previous = F.set_im2col_limit(64 * 1024)
    try:
        F.fold(cols, (9, 8), 3, padding=1, stride=2)                        # warm-up
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            y = F.fold(cols, (9, 8), 3, padding=1, stride=2)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    finally:
        F.set_im2col_limit(previous)
    assert peak - y.data.nbytes <= 0.3 * cols.data.nbytes, peak / cols.data.nbytes

    layouts = []

    class NoCaches(NumpyBackend):
        cache_blocking = False

        def col2im(self, c, geom, N, C, layout):
            layouts.append(layout)
            return conv_arrays.fold_array(get_backend("cpu"), c, geom, N, C, layout)

    register_backend("no_caches", NoCaches())
    got = F.fold(Tensor(cols.numpy(), device="no_caches"), (9, 8), 3, padding=1, stride=2)
    np.testing.assert_allclose(got.numpy(), y.numpy(), rtol=1e-12)
    assert layouts == ["nkl"]


@pytest.mark.parametrize("limit", [None, 16 * 8 * 9 * 10 * 10 * 8 // 4],
                         ids=["whole_batch", "chunked_in_4"])
def test_conv_memory_stays_within_two_im2col_buffers(limit):
    """Forward + backward allocate about two im2col buffers (documented in conv2d), and
    about one im2col limit's worth when the batch is chunked."""
    import tracemalloc
    rng = np.random.default_rng(5)
    x = Tensor(rng.standard_normal((16, 8, 12, 12)), requires_grad=True)
    w = Tensor(rng.standard_normal((8, 8, 3, 3)), requires_grad=True)
    g = Tensor(rng.standard_normal((16, 8, 10, 10)))
    cols = 16 * 8 * 9 * 10 * 10 * 8                                  # N * C*KH*KW * L * 8 bytes
    previous = F.set_im2col_limit(limit or F.get_im2col_limit())
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        y = F.conv2d(x, w)
        y.backward(g)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        F.set_im2col_limit(previous)
    extra = peak - y.data.nbytes - x.grad.data.nbytes - w.grad.data.nbytes
    budget = 2.5 * cols if limit is None else 1.5 * limit + 4 * x.data.nbytes
    assert extra <= budget, f"{extra / cols:.2f} im2col buffers"


def test_pooling_takes_numpy_bools_for_ceil_mode():
    x = Tensor(np.arange(25.0).reshape(1, 1, 5, 5))
    for flag in (np.bool_(True), np.array(True)):
        np.testing.assert_array_equal(F.max_pool2d(x, 2, ceil_mode=flag).numpy(),
                                      F.max_pool2d(x, 2, ceil_mode=True).numpy())
        np.testing.assert_array_equal(F.avg_pool2d(x, 2, ceil_mode=flag).numpy(),
                                      F.avg_pool2d(x, 2, ceil_mode=True).numpy())
