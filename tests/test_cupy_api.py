"""The CuPy backend against the installed CuPy: without a GPU, and on one if present.

Without a GPU nothing of CuPy can run, but its API can be checked: every
``cupy``/``cupyx`` attribute that ``backend.py`` uses, and every ``xp.<name>``
anywhere in the package, must exist in the installed CuPy.  The numerics
run in :class:`TestOnGpu`, skipped here with the probe's reason (and a
failure instead of a skip with ``TINYGRAD_CNN_REQUIRE_GPU=1``, as for the
``device`` fixture of ``conftest.py``).
"""
from __future__ import annotations

import ast
import inspect
import pathlib

import numpy as np
import pytest

cupy = pytest.importorskip("cupy")
cupyx = pytest.importorskip("cupyx")

import tinygrad_cnn as tg  # noqa: E402
from tinygrad_cnn.backend import DeviceError  # noqa: E402

from conftest import device_params  # noqa: E402

PACKAGE = pathlib.Path(tg.__file__).parent

# The modules that reach CuPy directly: backend.py, and cuda_kernels.py with
# the cupy module backend.py hands it.
CUPY_USERS = ("backend.py", "cuda_kernels.py")
# What they name, by the expression they reach CuPy through.
ROOTS = {
    ("cupy",): "cupy",
    ("cupyx",): "cupyx",
    ("self", "xp"): "cupy",              # Backend code runs with xp = cupy on a GPU
    ("self", "_cupyx"): "cupyx",
    ("self", "_cupy"): "cupy",           # ConvKernels
    ("self", "_device"): "cupy.cuda.Device",
}
# Used by backend.py in ways the parser does not see (the context manager of
# the device, methods of the arrays it handles), and the core's array methods.
EXPLICIT = [
    "cupy.cuda.Device.__enter__", "cupy.cuda.Device.__exit__", "cupy.ndarray",
    "cupy.asarray", "cupy.asnumpy", "cupy.lib.stride_tricks.as_strided", "cupyx.scatter_add",
    "cupy.cuda.runtime.getDeviceCount", "cupy.cuda.runtime.CUDARuntimeError",
    "cupy.RawModule.get_function",
] + [f"cupy.ndarray.{m}" for m in (
    "astype", "reshape", "transpose", "swapaxes", "sum", "max", "min", "any", "all", "copy",
    "ravel", "fill", "argmax", "argmin", "squeeze", "get", "item", "T", "ndim", "shape",
    "dtype", "size", "strides")]


def _chain(node):
    """``a.b.c`` -> ("a", "b", "c"); None unless the chain starts at a plain name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return (node.id,) + tuple(reversed(parts))


def _outer_chains(tree):
    """Every maximal attribute chain (``a.b.c``, not also ``a.b``) in a module."""
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            chain = _chain(node)
            if chain:
                yield chain


def backend_uses():
    """``"cupy.cuda.runtime.getDeviceCount"``-style names used in :data:`CUPY_USERS`."""
    used = set()
    for name in CUPY_USERS:
        for chain in _outer_chains(ast.parse((PACKAGE / name).read_text())):
            for prefix, root in ROOTS.items():
                if chain[:len(prefix)] == prefix and len(chain) > len(prefix):
                    used.add(".".join((root,) + chain[len(prefix):]))
    return used


def package_xp_uses():
    """``(file, "cupy.name...")`` for every ``xp.<name>`` / ``<obj>.xp.<name>`` in the package."""
    uses = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for chain in _outer_chains(ast.parse(path.read_text())):
            if "xp" in chain[:-1]:
                rest = chain[chain.index("xp") + 1:]
                uses.add((str(path.relative_to(PACKAGE)), ".".join(("cupy",) + rest)))
    return sorted(uses)


def _resolve(name):
    obj = {"cupy": cupy, "cupyx": cupyx}[name.split(".")[0]]
    for part in name.split(".")[1:]:
        obj = getattr(obj, part)
    return obj


def test_the_parser_finds_what_backend_py_uses():
    used = backend_uses()
    for name in ("cupy.cuda.runtime.getDeviceCount", "cupy.asnumpy", "cupyx.scatter_add",
                 "cupy.lib.stride_tricks.as_strided", "cupy.cuda.Device.synchronize",
                 "cupy.RawModule", "cupy.empty", "cupy.cuda.runtime.driverGetVersion"):
        assert name in used, sorted(used)


@pytest.mark.parametrize("name", sorted(backend_uses() | set(EXPLICIT)))
def test_backend_py_uses_only_what_the_installed_cupy_has(name):
    try:
        _resolve(name)
    except AttributeError:
        pytest.fail(f"backend.py uses {name}, which cupy {cupy.__version__} does not have")


@pytest.mark.parametrize("where, name", package_xp_uses())
def test_every_xp_name_in_the_package_exists_in_cupy(where, name):
    try:
        _resolve(name)
    except AttributeError:
        pytest.fail(f"{where} uses xp.{name[5:]}, which cupy {cupy.__version__} does not have")


def test_cupy_signatures_the_backend_relies_on():
    # No ``writeable`` here: CupyBackend.as_strided must not pass it.
    params = inspect.signature(cupy.lib.stride_tricks.as_strided).parameters
    assert "writeable" not in params and {"shape", "strides"} <= set(params)
    # cupy.asnumpy and ndarray.get are the explicit device -> host copies.
    assert callable(cupy.asnumpy) and callable(cupy.ndarray.get)
    # ConvKernels builds its modules so (compiled only at the first get_function).
    from tinygrad_cnn.cuda_kernels import OPTIONS, kernel_source
    module = cupy.RawModule(code=kernel_source("pool", np.float32), options=OPTIONS)
    assert module.code.startswith("typedef float T;")


# ---- installed CuPy, no GPU ----------------------------------------------------------
no_gpu = pytest.mark.skipif(tg.cuda_status()[0], reason="a CUDA GPU is usable here")


@no_gpu
def test_import_and_backends_work_with_cupy_installed_and_no_gpu():
    rows = {r["device"]: r for r in tg.backends()}
    assert rows["cpu"]["usable"] and not rows["cuda"]["usable"]
    reason = rows["cuda"]["reason"]
    assert reason.startswith(f"cupy {cupy.__version__} is installed but")
    assert "no CUDA GPU" in reason and "CUDARuntimeError" in reason, reason


@no_gpu
@pytest.mark.parametrize("make", [
    lambda: tg.zeros(2, device="cuda"),
    lambda: tg.tensor([1.0], device="cuda:0"),
    lambda: tg.ones(2).to("cuda"),
    lambda: tg.ones(2).cuda(),
    lambda: tg.get_backend("cuda:1"),
], ids=["zeros", "tensor", "to", "cuda", "get_backend"])
def test_cuda_device_fails_with_the_probe_reason(make):
    reason = tg.cuda_status()[1]
    with pytest.raises(DeviceError, match="is not available") as info:
        make()
    assert reason in str(info.value) and "no CUDA GPU is usable" in str(info.value)


# ---- on a real GPU ---------------------------------------------------------------------
@pytest.mark.parametrize("device", device_params(["cuda"]), indirect=True)
class TestOnGpu:
    """Numerics on CuPy arrays, compared with the NumPy backend."""

    def test_arrays_are_cupy_arrays(self, device):
        t = tg.randn(3, 4, device=device)
        backend = tg.get_backend(device)
        assert isinstance(t.data, cupy.ndarray) and backend.is_array(t.data)
        assert isinstance(t.sum().data, cupy.ndarray) and t.sum().shape == ()
        assert {"device", "gpu", "memory", "array module"} <= set(backend.describe())
        with pytest.raises(TypeError, match="implicit conversion"):
            np.asarray(t)

    def test_forward_and_backward_match_the_cpu(self, device):
        rng = np.random.default_rng(0)
        x, w = rng.standard_normal((5, 4)), rng.standard_normal((4, 3))
        target = np.array([0, 2, 1, 2, 0])
        grads = []
        for d in ("cpu", device):
            xt = tg.tensor(x, device=d, requires_grad=True)
            wt = tg.tensor(w, device=d, requires_grad=True)
            logp = (xt @ wt).tanh().log_softmax(axis=1)
            loss = -logp[tg.arange(5, device=d), tg.tensor(target, device=d)].mean()
            loss.backward()
            grads.append((loss.item(), xt.grad.numpy(), wt.grad.numpy()))
        for a, b in zip(*grads):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    def test_gradcheck_and_scatter_add(self, device):
        x = tg.randn(4, 3, device=device, requires_grad=True)
        index = tg.tensor([0, 0, 3], device=device)
        assert tg.gradcheck(lambda a: (a[index] * a[index]).sin(), (x,))
        assert tg.gradgradcheck(lambda a: a.max(axis=1), (x,))

    def test_out_of_range_index_is_reported_at_the_next_transfer(self, device):
        x = tg.ones(3, 2, device=device)
        y = x[tg.tensor([0, 5], device=device)]  # CuPy wraps it; the check is deferred
        with pytest.raises(IndexError, match="out of range for axis 0 of size 3"):
            y.numpy()
        y.numpy()

    @pytest.mark.filterwarnings("ignore:cupyx.allow_synchronize")
    def test_a_training_step_does_not_synchronise(self, device):
        if not hasattr(cupyx, "allow_synchronize"):
            pytest.skip("this CuPy has no cupyx.allow_synchronize")
        w = tg.randn(4, 3, device=device, requires_grad=True)
        x = tg.randn(8, 4, device=device)
        target = tg.tensor(np.arange(8) % 3, device=device)
        with cupyx.allow_synchronize(False):
            for _ in range(2):
                logp = (x @ w).log_softmax(axis=1)
                loss = -logp[tg.arange(8, device=device), target].mean()
                loss.backward()
                with tg.no_grad():
                    w.data -= 0.1 * w.grad.data
                w.grad = None
        assert np.isfinite(loss.item())
