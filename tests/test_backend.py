"""Backends: the CUDA probe, device strings, errors that say how to fix them, and
keeping cupy out of the import of tinygrad_cnn."""
from __future__ import annotations

import ctypes
import os
import pathlib
import platform
import re
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import backend as backend_module
from tinygrad_cnn.backend import DeviceError, NumpyBackend

PACKAGE = pathlib.Path(tg.__file__).parent
REPO = PACKAGE.parent


def _run(code, env=None):
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=env)


def test_backends_lists_cpu_and_cuda_with_reasons():
    rows = {r["device"]: r for r in tg.backends()}
    assert rows["cpu"]["usable"] is True and "numpy" in rows["cpu"]["reason"]
    usable, reason = tg.cuda_status()
    assert rows["cuda"]["usable"] is usable and rows["cuda"]["reason"] == reason
    assert isinstance(reason, str) and reason
    for row in rows.values():
        assert set(row) == {"device", "usable", "reason"}


def test_cuda_status_is_cached():
    assert tg.cuda_status() is tg.cuda_status()
    assert backend_module.cuda_status.cache_info().hits >= 1


def test_cpu_backend():
    b = tg.get_backend("cpu")
    assert b is tg.get_backend(None) is tg.get_backend(" CPU ") and b.xp is np
    assert b.device == "cpu" and tg.tensor([1.0]).device == "cpu"
    assert b.describe()["device"] == "cpu"
    assert b.is_array(np.zeros(1)) and not b.is_array([0.0])
    a = np.zeros(3)
    b.scatter_add(a, np.array([0, 0, 2]), np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(a, [3.0, 0.0, 3.0])
    v = b.as_strided(np.arange(4.0), (3, 2), (8, 8))
    np.testing.assert_array_equal(v, [[0, 1], [1, 2], [2, 3]])
    assert not v.flags.writeable


def _gather_cases():
    """(shape, index, values) for scatter_add: gathers along one axis whose indices form
    few runs (a pad's: interior, edges, reflected edges), many runs, and repeats; and
    indices of other forms, which go to np.add.at."""
    rng = np.random.default_rng(5)
    cases = []
    for k in range(200):
        shape = tuple(int(n) for n in rng.integers(1, 6, size=rng.integers(1, 5)))
        axis = int(rng.integers(0, len(shape)))
        size = shape[axis]
        idx = [
            np.concatenate([[1 % size], np.arange(size), [max(size - 2, 0)]]),     # reflect
            np.concatenate([[0, 0], np.arange(size), [size - 1] * 3]),             # replicate
            np.concatenate([np.arange(size)[-2:], np.arange(size), [0]]),          # circular
            np.arange(size)[::-1],                                                 # reversed
            rng.integers(-size, size, size=int(rng.integers(0, 40))),              # random
            np.arange(size)[1:size - 1],                                           # a crop
        ][k % 6]
        index = (slice(None),) * axis + (idx.astype(np.int64),)
        values = rng.standard_normal(shape[:axis] + (len(idx),) + shape[axis + 1:])
        cases.append((shape, index, values))
    cases.append(((3, 4), (slice(None), np.array([0, 0, 3])), np.array(2.0)))   # broadcast
    cases.append(((3, 4), (np.array([0, 2, 2]), np.array([1, 1, 3])), np.ones(3)))
    cases.append(((3, 4), (slice(1, 3), np.array([0, 0])), np.ones((2, 2))))
    cases.append(((3, 4), (Ellipsis, np.array([3, 3])), np.ones((3, 2))))
    cases.append(((3, 4), np.array([[0, 0], [2, 1]]), np.ones((2, 2, 4))))
    return cases


def test_scatter_add_agrees_with_add_at():
    """The CPU backend's scatter_add (slice adds for gathers along one axis in few runs
    of consecutive indices) accumulates exactly as np.add.at, repeats included."""
    b = tg.get_backend("cpu")
    for shape, index, values in _gather_cases():
        expected, got = np.zeros(shape), np.zeros(shape)
        np.add.at(expected, index, values)
        b.scatter_add(got, index, values)
        np.testing.assert_array_equal(got, expected, err_msg=f"{shape} {index}")


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32,
                                   np.uint32, np.int64, np.uint64])
def test_scatter_add_takes_every_integer_index_dtype(dtype):
    """Gathers accumulate as np.add.at whatever the index dtype beside the sizes:
    int8 on an axis of 300 (the index plus the axis size overflows it), uint16 on
    40000 (a run's end overflowed, and its gradient was silently dropped), uint64
    (with int64, a float slice bound).  Out of range still raises."""
    b = tg.get_backend("cpu")
    size = 40000 if np.dtype(dtype).itemsize == 2 else 300
    pad = np.concatenate([[1, 0], np.arange(size), [size - 1, size - 2]])   # few runs
    for idx in (pad, [size - 1, 3, 3, 0], [-1, -size, 2] if np.dtype(dtype).kind == "i" else [5]):
        index = (slice(None), np.array(idx).astype(dtype))
        values = np.arange(2.0 * len(idx)).reshape(2, len(idx))
        expected, got = np.zeros((2, size)), np.zeros((2, size))
        np.add.at(expected, index, values)
        b.scatter_add(got, index, values)
        np.testing.assert_array_equal(got, expected, err_msg=f"{idx}")
    for bad in ([0, 1, 2, size], [size + 7]):   # few runs, a run past the end
        with pytest.raises(IndexError, match="out of bounds"):
            b.scatter_add(np.zeros((2, size)), (slice(None), np.array(bad, dtype=np.int64)),
                          1.0)
    with pytest.raises(IndexError, match="out of bounds"):
        b.scatter_add(np.zeros((2, 5)), (slice(None), np.array([-6, -5])), 1.0)


@pytest.mark.parametrize("name", ["gpu", "tpu:0", "cuda:x", "", "cpu:zero"])
def test_unknown_device_string_errors(name):
    with pytest.raises(DeviceError, match=r"unknown device .*expected one of.*cpu.*cuda"):
        tg.get_backend(name)
    with pytest.raises(DeviceError):
        tg.tensor([1.0], device=name)


@pytest.mark.parametrize("name, canonical", [("cuda", "cuda:0"), (" CUDA:1 ", "cuda:1"),
                                             ("cuda:00", "cuda:0"), ("cuda:01", "cuda:1")])
def test_one_gpu_has_one_canonical_name(name, canonical):
    # Two names for one GPU would give it two backends, whose tensors refuse to mix.
    from tinygrad_cnn.backend import canonical_device
    assert canonical_device(name) == canonical


def test_device_must_be_a_string():
    with pytest.raises(DeviceError, match="string"):
        tg.get_backend(0)


def test_asking_for_cuda_without_a_gpu_says_what_is_missing():
    usable, reason = tg.cuda_status()
    if usable:
        pytest.skip("a CUDA GPU is usable here")
    for device in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(DeviceError) as info:
            tg.zeros(2, device=device)
        msg = str(info.value)
        assert "not available" in msg and reason in msg
    try:
        import cupy  # noqa: F401
    except Exception:
        # No cupy: the message says so and how to install it.
        assert "cupy is not installed" in reason
        assert 'pip install "cupy-cuda12x[ctk]>=14"' in reason  # a name PyPI has
    else:
        # cupy present but no usable GPU (the dev machine): it says which.
        assert re.search(r"cupy \S+ is installed but (no CUDA GPU is usable|found no CUDA GPU)",
                         reason), reason
        assert "NVIDIA GPU" in reason and "device='cpu'" in reason
    with pytest.raises(DeviceError):
        tg.tensor([1.0]).to("cuda")


def test_cuda_probe_without_cupy_gives_the_install_hint():
    """Run the probe in a fresh interpreter where cupy cannot be imported."""
    out = _run("import sys; sys.modules['cupy'] = None\n"
               "import tinygrad_cnn as tg\n"
               "print(tg.cuda_status())\n"
               "try:\n"
               "    tg.zeros(1, device='cuda')\n"
               "except tg.DeviceError as e:\n"
               "    print('DeviceError:', e)\n")
    assert out.returncode == 0, out.stderr
    assert "(False, 'cupy is not installed" in out.stdout
    assert 'pip install "cupy-cuda12x[ctk]>=14"' in out.stdout
    assert "tinygrad_cnn[" not in out.stdout  # not on PyPI: a hint that cannot work
    assert ("DeviceError: device 'cuda' (cuda:0) is not available: cupy is not installed"
            in out.stdout)


def test_import_works_with_cupy_unimportable():
    out = _run("import sys; sys.modules['cupy'] = None\n"
               "import tinygrad_cnn as tg\n"
               "x = tg.tensor([1.0, 2.0], requires_grad=True)\n"
               "(x * x).sum().backward()\n"
               "print(x.grad.tolist(), [r['device'] for r in tg.backends()])\n")
    assert out.returncode == 0, out.stderr
    assert "[2.0, 4.0] ['cpu', 'cuda']" in out.stdout


def test_importing_does_not_import_cupy():
    out = _run("import sys, tinygrad_cnn, tinygrad_cnn.gradcheck\n"
               "x = tinygrad_cnn.tensor([1.0]) * 2\n"
               "print('cupy' in sys.modules, 'cupyx' in sys.modules)\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_only_backend_module_imports_cupy():
    pattern = re.compile(r"^\s*(import\s+cupy|from\s+cupy)", re.MULTILINE)
    offenders = [str(p.relative_to(PACKAGE)) for p in sorted(PACKAGE.rglob("*.py"))
                 if pattern.search(p.read_text()) and p.name != "backend.py"]
    assert offenders == []
    assert pattern.search((PACKAGE / "backend.py").read_text())


def test_default_device_from_environment(monkeypatch):
    monkeypatch.setenv("TINYGRAD_CNN_DEVICE", "cpu")
    assert tg.tensor([1.0]).device == "cpu"
    monkeypatch.setenv("TINYGRAD_CNN_DEVICE", "auto")
    assert tg.tensor([1.0]).device == ("cuda:0" if tg.cuda_status()[0] else "cpu")
    monkeypatch.setenv("TINYGRAD_CNN_DEVICE", "abacus")
    with pytest.raises(DeviceError, match="TINYGRAD_CNN_DEVICE"):
        tg.tensor([1.0])


def test_auto_is_a_device_in_python_too():
    # Documented for TINYGRAD_CNN_DEVICE and --device; tg.zeros(..., device="auto") and
    # model.to("auto") are the same choice.
    want = "cuda:0" if tg.cuda_status()[0] else "cpu"
    assert tg.zeros(2, device=" Auto ").device == want
    assert tg.nn.Linear(2, 2).to("auto").weight.device == want
    with pytest.raises(DeviceError, match=r"expected one of: auto, cpu, cuda"):
        tg.get_backend("automatic")


@pytest.mark.parametrize("usable", [True, False])
def test_auto_names_the_first_gpu_when_cuda_is_usable(monkeypatch, usable):
    # Names only: no backend is made, so no GPU is needed to check the choice.
    monkeypatch.setattr(backend_module, "cuda_status", lambda: (usable, "stated by the test"))
    monkeypatch.setenv("TINYGRAD_CNN_DEVICE", "auto")
    want = "cuda:0" if usable else "cpu"
    assert backend_module.canonical_device("AUTO") == backend_module.default_device() == want


def test_an_unusable_default_device_names_the_environment_variable(monkeypatch):
    if tg.cuda_status()[0]:
        pytest.skip("a CUDA GPU is usable here")
    monkeypatch.setenv("TINYGRAD_CNN_DEVICE", "cuda")
    with pytest.raises(DeviceError, match=r"^TINYGRAD_CNN_DEVICE='cuda' \(environment "
                                          r"variable\): device 'cuda:0' is not available: "):
        tg.randn(2)


@pytest.mark.parametrize("loadable, no_driver", [
    ((), True), (("libcuda.so.1",), False), (("libcuda.so",), False), (("nvcuda.dll",), False),
    (("libcudart.so.12",), True),   # the runtime alone is no driver
])
def test_no_driver_means_no_driver_library_loads(monkeypatch, loadable, no_driver):
    def load(name):
        if name not in loadable:
            raise OSError(f"{name}: cannot open shared object file")
        return object()
    monkeypatch.setattr(backend_module.ctypes, "CDLL", load)
    assert backend_module._no_driver() is no_driver


@pytest.mark.parametrize("no_driver", [True, False])
def test_a_missing_driver_is_not_called_an_old_one(monkeypatch, no_driver):
    """The CUDA runtime reports a missing driver as cudaErrorInsufficientDriver, which
    reads as "upgrade your driver"; the probe says when no driver library loads."""
    class Runtime:
        @staticmethod
        def getDeviceCount():
            raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is "
                               "insufficient for CUDA runtime version")

    fake = type(sys)("cupy")
    fake.__version__ = "14.2.0"
    fake.cuda = type(sys)("cupy.cuda")
    fake.cuda.runtime = Runtime
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(backend_module, "_no_driver", lambda: no_driver)
    backend_module.cuda_status.cache_clear()
    try:
        usable, reason = tg.cuda_status()
    finally:
        backend_module.cuda_status.cache_clear()
    assert not usable and "cudaErrorInsufficientDriver" in reason
    assert ("no NVIDIA driver is installed: libcuda cannot be loaded" in reason) is no_driver
    assert "device='cpu'; --device cpu on the command line" in reason


class _OtherHost(NumpyBackend):
    """A second NumPy backend, to have two devices without a GPU."""


@pytest.fixture
def other_device():
    name = "testhost"
    tg.register_backend(name, _OtherHost())
    yield name
    backend_module._BACKENDS.pop(name, None)


def test_registered_backend_is_a_device(other_device):
    t = tg.tensor([1.0, 2.0], requires_grad=True, device=other_device)
    assert t.device == other_device and (t * 2).device == other_device
    assert any(r["device"] == other_device and r["usable"] for r in tg.backends())
    # Moving between devices is differentiable; the gradient comes back.
    c = t.to("cpu")
    assert c.device == "cpu"
    (c * 3).sum().backward()
    assert t.grad.device == other_device
    np.testing.assert_array_equal(t.grad.numpy(), [3.0, 3.0])
    assert tg.tensor(c, device=other_device).device == other_device


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint64", "int32"])
def test_check_index_compares_only_with_bounds_the_index_dtype_holds(dtype):
    """A uint8 index against an axis of 300, or an unsigned one against -size: the
    comparison never uses a Python int outside the dtype (CuPy, like NumPy's NEP 50
    rules, may refuse it)."""
    backend = tg.get_backend("cpu")
    fine = np.array([0, 5, 100], dtype=dtype)
    backend.check_index(fine, 300)
    backend.check_index(fine, 101)
    with pytest.raises(IndexError, match="index 5 is out of range"):
        backend.check_index(fine, 5)
    top = int(np.iinfo(dtype).max)   # an axis as long as the largest index the dtype holds
    backend.check_index(np.array([top - 1], dtype=dtype), top)
    with pytest.raises(IndexError, match=f"index {top} is out of range"):
        backend.check_index(np.array([top], dtype=dtype), top)
    if np.dtype(dtype).kind == "i":
        backend.check_index(np.array([-100], dtype=dtype), 300)
        backend.check_index(np.array([-100, 99], dtype=dtype), 100)  # both ends are in range
        with pytest.raises(IndexError, match="index -100 is out of range"):
            backend.check_index(np.array([-100], dtype=dtype), 50)


def _has_mallinfo2():
    try:
        return hasattr(ctypes.CDLL(None), "mallinfo2")   # glibc >= 2.33
    except OSError:
        return False


# Run in a child process whose environment has none of glibc's malloc tunables: an inherited
# MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_ or GLIBC_TUNABLES would
# change the untuned baseline (or pre-tune it, so a broken reduce_malloc_churn would pass).
# Measured with mallinfo2(): hblkhd is the bytes held in mmapped blocks, keepcost the free
# chunk at the top of the heap that a trim would hand back to the OS.
_MALLOC_CYCLE = """\
import ctypes
from tinygrad_cnn.backend import reduce_malloc_churn
libc = ctypes.CDLL('libc.so.6')
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks',
        'uordblks', 'fordblks', 'keepcost')]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
def cycle():
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(64 << 20)
    mmapped = (libc.mallinfo2().hblkhd - before) >> 20
    libc.free(block)
    return mmapped, libc.mallinfo2().keepcost >> 20
print(*cycle(), reduce_malloc_churn(1 << 30), *cycle())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="reduce_malloc_churn tunes glibc's malloc only")
@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc's mallinfo2() (glibc >= 2.33)")
def test_reduce_malloc_churn_keeps_large_freed_blocks_in_the_heap():
    """By default a 64 MiB malloc is an mmapped block of its own, unmapped on free; after
    reduce_malloc_churn it comes from the heap (mmap threshold raised), and after the free
    the heap keeps it at its top (trim threshold raised), for the next step's arrays."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = _run(_MALLOC_CYCLE, env=env)
    assert out.returncode == 0, out.stderr
    mmapped_before, kept_before, tuned, mmapped_after, kept_after = out.stdout.split()
    assert tuned == "True"
    # Untuned: the block is mmapped and nothing of it stays at the top of the heap.
    assert int(mmapped_before) >= 64 and int(kept_before) < 64, out.stdout
    # Tuned: no mmap (a wrong M_MMAP_THRESHOLD number) and the freed block is kept (no
    # M_TRIM_THRESHOLD: the free trims it away).
    assert int(mmapped_after) == 0, out.stdout
    assert int(kept_after) >= 64, out.stdout
