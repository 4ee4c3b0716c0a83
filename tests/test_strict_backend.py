"""The strict test backend is strict, and the core keeps CuPy's discipline on it.

The whole op suite (gradchecks included) also runs on the ``"strict"`` device
through ``conftest.DEVICES``; this file tests the backend's own rules, the
host synchronisations of a training step, and the deferred index checks.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn._checks import check_cast_fits
from tinygrad_cnn.backend import DeviceError, NumpyBackend

from strict_backend import (
    IMPLICIT_CONVERSION, STRICT, STRICT2, StrictArray, _cupy_has, _cupy_module,
    _cupy_signature)

xp = STRICT.xp


def dev(values, backend=STRICT):
    return backend.asarray(np.asarray(values))


@pytest.fixture
def a():
    return dev(np.arange(6.0).reshape(2, 3))


@pytest.fixture(autouse=True)
def no_pending_checks():
    """A failed deferred check left by one test (an assertion that fails before its
    synchronize(), say) must not surface in another: cleared whatever the outcome."""
    yield
    for backend in (STRICT, STRICT2):
        backend._deferred_status = None


def _assign(target, key, value):
    target[key] = value


# ---- the backend refuses what CuPy refuses ------------------------------------------
REFUSED = [
    ("implicit-asarray", lambda a: np.asarray(a), TypeError, IMPLICIT_CONVERSION[:40]),
    ("implicit-array", lambda a: np.array(a, dtype=float), TypeError, "Implicit conversion"),
    ("numpy-ufunc", lambda a: np.exp(a), TypeError, "does not support ufuncs"),
    ("numpy-function", lambda a: np.sum(a), TypeError, "numpy.sum was called"),
    ("numpy-concatenate", lambda a: np.concatenate([a, a]), TypeError, "numpy.concatenate"),
    ("host-operand", lambda a: a + np.ones(3), TypeError, "mixing host and device"),
    ("host-operand-left", lambda a: np.ones(3) * a, TypeError, "mixing host and device"),
    ("host-in-xp", lambda a: xp.maximum(a, np.zeros(3)), TypeError, "mixing host and device"),
    ("host-in-xp-list", lambda a: xp.concatenate([a, np.zeros((1, 3))]), TypeError,
     "mixing host and device"),
    ("host-index", lambda a: a[np.array([0])], TypeError, "mixing host and device"),
    ("host-value", lambda a: _assign(a, 0, np.zeros(3)), TypeError, "mixing host and device"),
    ("other-device-operand", lambda a: a + dev(np.ones(3), STRICT2), TypeError,
     "strict2 array .* cannot be mixed"),
    ("other-device-xp", lambda a: xp.where(a > 0, a, dev(np.ones(3), STRICT2)), TypeError,
     "cannot be mixed"),
    ("other-device-index", lambda a: a[dev([0], STRICT2)], TypeError, "cannot be mixed"),
    ("other-device-asarray", lambda a: STRICT2.asarray(a), TypeError, "cannot be mixed"),
    ("ufunc-at", lambda a: xp.add.at(a, dev([0]), 1.0), AttributeError, "scatter_add"),
    ("xp-random", lambda a: xp.random.rand(2), AttributeError, "on the host"),
    ("host-buffer", lambda a: a.data, AttributeError, "refused"),
    ("array-interface", lambda a: a.__array_interface__, AttributeError, "no attribute"),
    ("pickle", lambda a: pickle.dumps(a), TypeError, "cannot be pickled"),
    ("as-strided-writeable", lambda a: xp.lib.stride_tricks.as_strided(
        a, (2,), (8,), writeable=True), TypeError, "writeable"),
    ("float-of-many", lambda a: float(a), TypeError, "size 1"),
    ("bool-of-many", lambda a: bool(a), ValueError, "ambiguous"),
    ("flags-writeable", lambda a: a.flags.writeable, AttributeError, "writeable"),
    ("flags-item-writeable", lambda a: a.flags["WRITEABLE"], KeyError, "not defined for cupy"),
    ("set-from-a-list", lambda a: a.set([[0.0] * 3] * 2), TypeError, "host numpy.ndarray"),
    ("index-as-python-int", lambda a: [1, 2, 3][a[0, 0]], TypeError, "indices"),
]


@pytest.mark.parametrize("fn, error, match", [r[1:] for r in REFUSED],
                         ids=[r[0] for r in REFUSED])
def test_refuses_what_cupy_refuses(a, fn, error, match):
    with pytest.raises(error, match=match):
        fn(a)


# Names NumPy has and the installed CuPy lacks: (where, name, use, message).
LACKED = [("", "vecdot", lambda a: xp.vecdot(a, a), "cupy has no xp.vecdot"),
          ("ndarray", "getfield", lambda a: a.getfield(np.float64),
           "cupy.ndarray has no attribute 'getfield'")]


@pytest.mark.parametrize("use, match", [pytest.param(
    *r[2:], id=r[1], marks=pytest.mark.skipif(
        not _cupy_has("", "ndarray") or _cupy_has(r[0], r[1]),
        reason=f"needs an installed CuPy that lacks {r[1]}")) for r in LACKED])
def test_xp_and_arrays_offer_only_names_cupy_has(a, use, match):
    with pytest.raises(AttributeError, match=match):
        use(a)


# NumPy-only arguments: NumPy (under the stand-in) takes them, CuPy 14 raises TypeError.
NUMPY_ONLY_ARGUMENTS = [
    ("method-max-initial", lambda a: a.max(initial=0.0), "cupy.ndarray.max"),
    ("method-sum-where", lambda a: a.sum(where=a > 1), "cupy.ndarray.sum"),
    ("method-std-correction", lambda a: a.std(correction=1), "cupy.ndarray.std"),
    ("xp-sum-where", lambda a: xp.sum(a, where=a > 1), "cupy.sum"),
    ("xp-max-initial", lambda a: xp.max(a, initial=0.0), "cupy.max"),
    ("ufunc-where", lambda a: xp.maximum(a, 0, where=a > 1), "cupy.maximum"),
    ("ufunc-order", lambda a: xp.exp(a, order="F"), "cupy.exp"),
    ("ufunc-reduce-initial", lambda a: xp.add.reduce(a, initial=0.0), "cupy.add.reduce"),
    ("xp-where-out", lambda a: xp.where(a > 1, a, 0.0, out=a), "cupy.where"),
    ("too-many-positional", lambda a: a.copy("C", True), "cupy.ndarray.copy"),
]


@pytest.mark.skipif(_cupy_module() is None, reason="needs an installed CuPy to read its "
                                                   "signatures")
@pytest.mark.parametrize("fn, where", [r[1:] for r in NUMPY_ONLY_ARGUMENTS],
                         ids=[r[0] for r in NUMPY_ONLY_ARGUMENTS])
def test_refuses_arguments_that_only_numpy_takes(a, fn, where):
    with pytest.raises(TypeError, match=rf"strict backend: {where}\(.*refuses these arguments"):
        fn(a)


@pytest.mark.skipif(_cupy_module() is None, reason="needs an installed CuPy")
def test_reads_the_signature_of_every_cupy_function_and_array_method():
    """The argument check is only as good as the signatures it reads: CuPy's Cython
    methods have theirs on their docstring's first line, its ufuncs none at all."""
    cupy = _cupy_module()
    unread = []
    for where, owner in (("", cupy), ("ndarray", cupy.ndarray)):
        for name in dir(owner):
            value = getattr(owner, name)
            if (not name.startswith("_") and callable(value) and not isinstance(value, type)
                    and _cupy_signature(where, name) is None):
                unread.append(f"{where or 'cupy'}.{name}")
    assert unread == []
    assert str(_cupy_signature("ndarray", "max")) == "(axis=None, out=None, keepdims=False)"
    assert "where" not in _cupy_signature("", "maximum").parameters


@pytest.mark.skipif(_cupy_module() is None, reason="needs an installed CuPy")
def test_takes_the_arguments_cupy_takes(a):
    b = a.copy()
    xp.maximum(b, 1.0, out=b)             # a ufunc's out, dtype and casting
    xp.multiply(b, 2, b)                  # out by position
    xp.add(b, 1, dtype=np.float64, casting="same_kind")
    xp.copyto(b, a, where=a > 2)          # copyto's where, not a ufunc's
    a.sum(axis=0, keepdims=True, dtype=np.float64)
    a.astype(np.float32, copy=False)
    a.reshape(3, 2, order="C")
    a.transpose(1, 0)
    xp.add.reduce(a, axis=1, keepdims=True)
    xp.concatenate([a, a], axis=0, dtype=np.float32)
    np.testing.assert_array_equal(b.get(), [[2.0, 2.0, 4.0], [3.0, 4.0, 5.0]])


def test_allows_what_cupy_allows(a):
    # Python and NumPy scalars mix with device arrays; dtypes are NumPy's.
    for r in (a * 2, 2.5 - a, np.float32(2) * a, xp.maximum(a, 0), xp.where(a > 1, a, 0.5),
              a.astype(xp.float32), xp.zeros((2, 3), dtype=bool) | (a > 2)):
        assert isinstance(r, StrictArray) and r.device == "strict" and r.shape == (2, 3)
    assert xp.float32 is np.float32 and xp.dtype is np.dtype and xp.newaxis is None
    assert isinstance(a, xp.ndarray) and not isinstance(np.zeros(1), xp.ndarray)
    uploads = STRICT.upload_count
    with STRICT.track_syncs() as log:
        xp.asarray(np.ones(3))  # the explicit host -> device transfers
        xp.array([1.0, 2.0])
        a.set(np.zeros((2, 3)))
    assert log == [] and STRICT.upload_count == uploads + 3


ZERO_D = [
    ("method-sum", lambda a: a.sum()),
    ("xp-sum", lambda a: xp.sum(a)),
    ("method-max", lambda a: a.max()),
    ("xp-argmax", lambda a: xp.argmax(a)),
    ("xp-any", lambda a: xp.any(a > 0)),
    ("scalar-index", lambda a: a[0, 1]),
    ("0d-arithmetic", lambda a: a.sum() * 2 + 1),
    ("dot", lambda a: xp.dot(a[0], a[1])),
]


@pytest.mark.parametrize("fn", [z[1] for z in ZERO_D], ids=[z[0] for z in ZERO_D])
def test_reductions_and_scalar_indexing_stay_0d_device_arrays(a, fn):
    r = fn(a)
    assert isinstance(r, StrictArray) and r.shape == () and r.device == "strict"


def test_views_and_in_place_updates_write_through(a):
    row = a[0]
    row[...] = 7.0
    b = a
    a += 1.0
    assert b is a
    np.testing.assert_array_equal(a.get(), [[8, 8, 8], [4, 5, 6]])


# ---- indices: repeats and ranges -----------------------------------------------------
def test_assignment_through_repeated_indices_raises(a):
    with pytest.raises(IndexError, match="repeated indices"):
        a[dev([0, 0])] = 1.0
    with pytest.raises(IndexError, match="repeated indices"):
        a[dev([1, 1]), dev([2, 2])] += 1.0  # the classic non-accumulating update
    a[dev([0, 0]), dev([1, 2])] = -1.0  # distinct elements: fine
    a[dev([True, False])] = 0.0  # a mask never repeats
    np.testing.assert_array_equal(a.get(), [[0, 0, 0], [3, 4, 5]])


def test_scatter_add_accumulates_repeats(a):
    STRICT.scatter_add(a, (dev([1, 1, 0]), dev([2, 2, 0])), dev([10.0, 20.0, 30.0]))
    np.testing.assert_array_equal(a.get(), [[30, 1, 2], [3, 4, 35]])


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint8, np.uint16, bool,
                                   np.complex64])
def test_scatter_add_through_an_index_array_takes_only_cupys_atomic_add_dtypes(dtype):
    """cupy.add.at raises TypeError for these through an integer index array; through
    slices or a mask (a plain add on CuPy) they are fine."""
    target = dev(np.zeros((2, 3), dtype))
    with pytest.raises(TypeError, match=f"scatter_add into a {np.dtype(dtype)} array.*"
                                        f"only supports int32, int64, float16"):
        STRICT.scatter_add(target, (dev([1, 1]), dev([0, 0])), dev(np.ones(2, dtype)))
    STRICT.scatter_add(target, (slice(None), 0), dev(np.ones(2, dtype)))
    STRICT.scatter_add(target, dev(np.array([True, False])), dev(np.ones(3, dtype)))
    assert target.get()[:, 0].tolist() == ([True, True] if dtype is bool else [2, 1])
    for ok in (np.int32, np.int64, np.uint32, np.uint64, np.float16, np.float32):
        a = dev(np.zeros(3, ok))
        STRICT.scatter_add(a, dev([2, 2]), dev(np.ones(2, ok)))
        assert a.get().tolist() == [0, 0, 2]


def test_unchecked_out_of_range_index_raises_checked_one_wraps_as_on_cupy(a):
    i = dev([0, 5])
    for fn in (lambda: a[:, i], lambda: _assign(a, (0, i), 1.0),
               lambda: STRICT.scatter_add(a, (0, i), 1.0)):
        with pytest.raises(IndexError, match="index 5 is out of range.*silently wrap"):
            fn()
    with STRICT.track_syncs() as log:
        STRICT.check_index(i, 3, "for the test")
        wrapped = a[:, i]  # CuPy's answer: 5 wraps around to 2
    assert log == []
    np.testing.assert_array_equal(wrapped.get(), [[0, 2], [3, 5]])
    with pytest.raises(IndexError, match="an index was out of range for the test"):
        STRICT.synchronize()
    STRICT.synchronize()  # reported once


# ---- synchronisations are counted ------------------------------------------------------
SYNCS = [
    ("to_numpy", lambda a: STRICT.to_numpy(a), 1),
    ("get", lambda a: a.get(), 1),
    ("item", lambda a: a[0, 0].item(), 1),
    ("float", lambda a: float(a.sum()), 1),
    ("int", lambda a: int(a[1, 1]), 1),
    ("bool", lambda a: bool(a[0, 0] > 0), 1),
    ("tolist", lambda a: a.tolist(), 1),
    ("repr", lambda a: repr(a), 1),
    ("if-array", lambda a: 1 if (a > 0).any() else 0, 1),
    ("mask-index", lambda a: a[a > 2], 1),
    ("nonzero", lambda a: xp.nonzero(a), 1),
    ("one-argument-where", lambda a: xp.where(a > 2), 1),
    ("method-nonzero", lambda a: a.nonzero(), 1),
    ("unique", lambda a: xp.unique(a), 1),
    ("argwhere", lambda a: xp.argwhere(a > 2), 1),
    ("flatnonzero", lambda a: xp.flatnonzero(a), 1),
    ("mask-assignment", lambda a: _assign(a, a > 2, 0.0), 1),
    ("mask-scatter_add", lambda a: STRICT.scatter_add(a, a > 2, 1.0), 1),
    ("asnumpy", lambda a: xp.asnumpy(a), 1),
    ("format", lambda a: f"{a[0, 0]:.3f}", 1),
    ("if-array_equal", lambda a: 1 if xp.array_equal(a, a) else 0, 1),
    ("synchronize", lambda a: STRICT.synchronize(), 1),
    ("device-work", lambda a: (xp.exp(a.T @ a) * 2 + 1).sum(axis=0).reshape(3, 1)[0], 0),
    ("facts", lambda a: (a.shape, a.ndim, a.size, a.dtype, len(a), a.strides), 0),
    ("upload", lambda a: xp.asarray(np.ones(3)) + a, 0),
]


@pytest.mark.parametrize("fn, count", [s[1:] for s in SYNCS], ids=[s[0] for s in SYNCS])
def test_counts_host_synchronisations(a, fn, count):
    before = STRICT.sync_count
    with STRICT.track_syncs() as log:
        fn(a)
    assert STRICT.sync_count - before == len(log) == count, log


def test_sync_log_says_what_and_where(a):
    with STRICT.track_syncs() as log:
        a.sum().item()
    assert len(log) == 1 and log[0].startswith("item() at test_strict_backend.py:"), log


# ---- the Backend interface ---------------------------------------------------------------
def test_backend_interface(a):
    assert tg.get_backend("strict") is STRICT and tg.get_backend("strict2") is STRICT2
    assert STRICT.is_array(a) and not STRICT2.is_array(a) and not STRICT.is_array(a.get())
    assert STRICT.describe()["device"] == "strict"
    v = STRICT.as_strided(dev(np.arange(4.0)), (3, 2), (8, 8))
    np.testing.assert_array_equal(v.get(), [[0, 1], [1, 2], [2, 3]])
    with pytest.raises(ValueError, match="read-only"):
        v[0, 0] = 1.0  # stricter than CuPy: overlapping windows are never written
    devices = {r["device"] for r in tg.backends() if r["usable"]}
    assert {"cpu", "strict", "strict2"} <= devices
    t = tg.tensor(a, device="strict")
    assert t.device == "strict" and STRICT.is_array(t.data) and t.data is not a
    with STRICT.track_syncs() as log:
        assert tg.tensor(a).device == "cpu"  # the default device: an explicit transfer
    assert len(log) == 1


# ---- the core on the strict device --------------------------------------------------------
def test_tensors_refuse_implicit_conversion_and_mixing():
    t = tg.ones(2, 3, device="strict")
    with pytest.raises(TypeError, match="implicit conversion of a strict tensor"):
        np.asarray(t)
    with STRICT.track_syncs() as log:
        assert t.numpy().sum() == 6.0
    assert len(log) == 1
    for other in ("strict2", "cpu"):
        with pytest.raises(DeviceError, match=f"different devices: strict and {other}"):
            t + tg.ones(2, 3, device=other)


def test_moving_between_strict_devices_is_differentiable():
    x = tg.tensor([1.0, 2.0], device="strict", requires_grad=True)
    y = x.to("strict2") * tg.tensor([3.0, 4.0], device="strict2")
    y.sum().backward()
    assert y.device == "strict2" and x.grad.device == "strict"
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 4.0])


def test_moving_to_the_own_device_is_no_move_and_copies_stay_on_it():
    x = tg.tensor([1.0, 2.0], device="strict2", requires_grad=True)
    for spec in ("strict2", " Strict2 ", STRICT2):   # any spelling of its own device
        assert x.to(spec) is x
    # A new tensor from a device tensor, with another dtype: copied and cast on its
    # device (here not the current one).
    for dtype in ("int32", "float64"):
        y = tg.tensor(x, dtype=dtype)
        assert y.device == "strict2" and y.dtype == np.dtype(dtype) and y.tolist() == [1, 2]


def test_moving_to_another_device_is_one_transfer():
    x = tg.ones(3, device="strict")
    with STRICT.track_syncs() as log:
        y = x.to("strict2")
    assert len(log) == 1 and y.device == "strict2"


# To another device as to the host: the move reads the data, so a failed deferred check
# of the source device must be reported there, not carried along unnoticed.
@pytest.mark.parametrize("target", ["strict2", "cpu"])
def test_moving_to_another_device_reports_failed_checks(target):
    x = tg.ones(3, device="strict")
    bad = x[tg.tensor([0, 7], device="strict")]   # wraps around, as on CuPy
    with pytest.raises(IndexError, match="out of range for axis 0 of size 3"):
        bad.to(target)


@pytest.mark.parametrize("device", ["cpu", "strict"])
def test_every_result_holds_an_array_of_its_backend(device):
    x = tg.tensor([[1.0, -3.0], [2.0, 0.5]], device=device)
    backend = tg.get_backend(device)
    for t in (x.sum(), x.max(), x.argmax(), x.argmin(axis=0), x.any(), (x > 0).all(), x[0, 1],
              x.mean(), x.logsumexp(), x[tg.tensor([1, 0], device=device)]):
        assert backend.is_array(t.data), type(t.data)


def _mlp_step(device, xb, yb, params, lr=0.1):
    """One SGD step of a two-layer classifier written with core ops only."""
    w1, b1, w2 = params
    x = tg.tensor(xb, device=device)                       # the batch: an upload
    target = tg.tensor(yb, device=device)
    logp = ((x @ w1 + b1).relu() @ w2).log_softmax(axis=1)   # (N, classes)
    loss = -logp[tg.arange(len(yb), device=device), target].mean()
    loss.backward()
    with tg.no_grad():
        for p in params:
            p.data -= lr * p.grad.data
            p.grad = None
    return loss


def _mlp(device, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(4, 8), (8,), (8, 3)]
    return [tg.tensor(rng.standard_normal(s) * 0.5, device=device, requires_grad=True)
            for s in shapes]


def test_a_training_step_never_waits_for_the_device():
    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((5, 4)), rng.integers(0, 3, 5)) for _ in range(3)]
    params, reference = _mlp("strict"), _mlp("cpu")
    with STRICT.track_syncs() as log:
        for xb, yb in batches:
            loss = _mlp_step("strict", xb, yb, params)
    assert log == [], "a training step synchronised with the device:\n" + "\n".join(log)
    for xb, yb in batches:
        expected = _mlp_step("cpu", xb, yb, reference)
    with STRICT.track_syncs() as log:
        value = loss.item()
    assert len(log) == 1  # reading the loss is the one synchronisation
    assert value == pytest.approx(expected.item(), rel=1e-5)
    for p, q in zip(params, reference):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-5)


def test_out_of_range_target_raises_at_once_on_numpy_and_at_the_next_transfer_on_a_gpu():
    xb, yb = np.ones((3, 4)), np.array([0, 7, 1])
    with pytest.raises(IndexError, match=r"index 7 is out of range for axis 1 of size 3 in "
                                         r"a tensor of shape \(3, 3\)"):
        _mlp_step("cpu", xb, yb, _mlp("cpu"))
    with STRICT.track_syncs() as log:
        loss = _mlp_step("strict", xb, yb, _mlp("strict"))  # forward and backward run on
    assert log == []
    with pytest.raises(IndexError, match=r"an index was out of range for axis 1 of size 3 .*"
                                         r"deferred check.*defer_checks = False"):
        loss.item()
    loss.item()  # reported once; the state is clean again
    tg.ones(2, device="strict")[tg.tensor([2], device="strict")]
    with pytest.raises(IndexError, match="out of range for axis 0 of size 2"):
        STRICT.synchronize()


# The strict arrays are NumPy underneath, which warns where CuPy casts a NaN silently.
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_integer_values_that_do_not_fit_are_reported_by_a_deferred_check():
    x = tg.zeros(3, dtype="int32", device="strict")
    with STRICT.track_syncs() as log:
        x[0] = tg.tensor(2**40, device="strict")
    assert log == []
    with pytest.raises(OverflowError, match=r"item assignment .*int32 \(range .*deferred"):
        STRICT.synchronize()
    with STRICT.track_syncs() as log:
        x += tg.tensor([2**40, 0, 0], device="strict")
    assert log == []
    with pytest.raises(OverflowError, match=r"in-place add .*int32 \(range .*deferred"):
        STRICT.synchronize()
    # The shared rule for float arrays, deferred the same way (on the host and on a
    # device, item assignment and in-place operands refuse floats for integer tensors
    # by dtype, so only this direct call reaches it).
    for values, dtype, error, match in [([1.0, float("nan")], "float32", ValueError, "NaN"),
                                        ([65504.0, 0.0], "float16", OverflowError, "int16")]:
        array = STRICT.asarray(np.array(values, dtype))
        with STRICT.track_syncs() as log:
            check_cast_fits(array, np.dtype("int16"), "a test", STRICT)
        assert log == []
        with pytest.raises(error, match=rf"a test: .*{match}.*deferred"):
            STRICT.synchronize()
    # A tensor given a dtype is cast as astype casts it: no check, no synchronisation.
    with STRICT.track_syncs() as log:
        y = tg.tensor(tg.tensor([1.5, 300.0], device="strict"), dtype="int64")
    assert log == [] and y.tolist() == [1, 300]


def test_the_table_of_deferred_check_messages_stays_bounded_between_syncs():
    """Messages differ with shapes; a host that never synchronises must not grow the
    table without end: beyond the limit a failed check is still reported, generically.
    (If an assertion fails before synchronize(), the autouse no_pending_checks fixture
    clears the pending failure, which would otherwise surface in the next strict test.)"""
    limit = STRICT._MAX_CHECK_MESSAGES
    for k in range(limit + 50):
        STRICT.check(dev([k == limit + 10]), ValueError, f"check {k}")
    # The table's size is seen only through internals: no public call reports it.
    assert len(STRICT._check_messages) <= limit + 1   # and the generic message
    with pytest.raises(RuntimeError, match="a deferred check failed .*too many distinct"):
        STRICT.synchronize()


@pytest.mark.parametrize("backend", [STRICT, STRICT2], ids=["strict", "strict2"])
def test_eager_checks_for_debugging_raise_where_it_happens_at_one_sync_each(monkeypatch, backend):
    monkeypatch.setattr(backend, "defer_checks", False)
    device = backend.device   # strict2: the checks' own array code needs its device context
    x = tg.ones(2, 3, device=device)
    with backend.track_syncs() as log:
        x[tg.tensor([1, 0], device=device)]
    assert len(log) == 1
    with pytest.raises(IndexError, match="index -3 is out of range for axis 0 of size 2"):
        x[tg.tensor([1, -3], device=device)]
    i = tg.zeros(20, dtype="int32", device=device)
    big = (tg.tensor(2**40, device=device), tg.full((20,), 2**40, dtype="int64", device=device))
    for value in big:   # one number, and many (their minimum and maximum)
        with pytest.raises(OverflowError, match=r"item assignment .*1099511627776 .*int32"):
            i[:] = value


def test_check_reports_the_failed_check_by_its_own_type_and_message():
    with STRICT.track_syncs() as log:
        STRICT.check(dev([False, False]), ValueError, "first")
        STRICT.check(dev([False, True]), KeyError, "second")
        for _ in range(50):
            STRICT.check(dev([False]), ValueError, "third")
    assert log == [] and len(STRICT._check_messages) == 3  # one entry per message
    with pytest.raises(KeyError, match="second"):
        STRICT.to_numpy(dev([1.0]))
    STRICT.check(dev([False]), ValueError, "fourth")
    assert len(STRICT._check_messages) == 1  # a fresh table after each report
    STRICT.synchronize()
    with pytest.raises(ValueError, match="now"):
        NumpyBackend().check(np.array([True]), ValueError, "now")


# ---- the current device, as CuPy's ------------------------------------------------------
def test_work_on_a_device_that_is_not_current_is_refused():
    """"strict" plays device 0 (current by default), "strict2" device 1: allocating
    or computing on strict2 needs its context; views and reads do not."""
    with STRICT2.context():
        b = STRICT2.xp.arange(6.0).reshape(2, 3)
    refused = [lambda: STRICT2.xp.zeros(3), lambda: b + 1, lambda: b.copy(),
               lambda: STRICT2.xp.exp(b), lambda: b[STRICT2.asarray(np.array([0]))],
               lambda: b.T.reshape(6),               # a copy: non-contiguous
               lambda: STRICT2.xp.asarray(np.ones(2)), lambda: STRICT2.xp.array([1.0]),
               lambda: STRICT2.scatter_add(b, (0, STRICT2.asarray(np.array([1]))), 1.0)]
    for work in refused:
        with pytest.raises(RuntimeError, match="strict is the current device"):
            work()
    assert b[0].shape == (3,) and b.T.shape == (3, 2) and b.reshape(3, 2).shape == (3, 2)
    assert b.get().tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]] and b[0, 0].item() == 0.0
    with STRICT2.context():
        assert (b + 1).shape == (2, 3) and b.T.reshape(6).shape == (6,)
        with STRICT.context():                      # contexts nest, as CuPy's
            with pytest.raises(RuntimeError, match="strict is the current device"):
                b + 1
        assert (b * 2).shape == (2, 3)


def test_the_current_device_is_per_thread():
    import threading
    seen = []
    with STRICT2.context():
        worker = threading.Thread(target=lambda: seen.append(_current_name()))
        worker.start()
        worker.join()
        seen.append(_current_name())
    assert seen == ["strict", "strict2"]


def _current_name():
    import strict_backend
    return (strict_backend._current() or STRICT).device
