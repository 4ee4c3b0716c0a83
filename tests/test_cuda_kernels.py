"""The CUDA kernels of ``tinygrad_cnn.cuda_kernels``, proved as far as a machine without
a GPU allows.

* **They compile.**  Every source variant the package can compile at run
  time goes through NVRTC (the compiler CuPy's ``RawModule`` uses, with the
  same options, down to machine code for the oldest and newest GPUs it
  knows) and through ``nvcc`` when there is one.  Each compiler's tests skip
  with a reason naming what is missing; ``TINYGRAD_CNN_REQUIRE_CUDA_COMPILER=1``
  turns "no compiler at all" into a failure, for CI.
* **Their index arithmetic is right.**  The very same source is compiled
  for the host by a C++ compiler, with a small shim standing in for CUDA's
  thread indices, and run through :class:`ConvKernels`' own launch code
  (grid-stride loops over an emulated grid of several blocks and threads;
  every argument checked against the kernel's C signature, as a wrong
  argument type would corrupt memory silently on a GPU).  The results must
  equal the array code of :mod:`tinygrad_cnn.conv_arrays` bit for bit, over
  a table of geometries and all three column layouts; then the CNN ops run
  on a backend using these kernels and must match the CPU, gradients and
  gradients of gradients included.  Each thread writes only its own
  element, so running the threads one after another computes what the GPU
  computes in parallel.
* **Numerics on a GPU** (:class:`TestOnGpu`): the kernels against the array
  code, both on CuPy.  Skipped here with the probe's reason; a failure
  instead of a skip with ``TINYGRAD_CNN_REQUIRE_GPU=1``.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest

import tinygrad_cnn as tg
import tinygrad_cnn.functional as F
from tinygrad_cnn import backend as backend_module
from tinygrad_cnn import models, nn, optim
from tinygrad_cnn.backend import CupyBackend, NumpyBackend
from tinygrad_cnn.conv_arrays import (
    conv_geometry, fold_array, max_pool_array, max_pool_gather_array, max_pool_scatter_array,
    pool_geometry, unfold_array,
)
from tinygrad_cnn.cuda_kernels import OPTIONS, ConvKernels, all_sources

from conftest import device_params
from strict_backend import StrictArray, StrictBackend

PACKAGE = pathlib.Path(tg.__file__).parent
SOURCES = all_sources()
CPU = tg.get_backend("cpu")


# ---- every CUDA source of the package is compiled here ------------------------------
def test_all_cuda_source_lives_in_cuda_kernels():
    holders = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                     if "__global__" in p.read_text())
    assert holders == ["cuda_kernels.py"], holders
    defined = {name for src in SOURCES.values()
               for name in re.findall(r'extern "C" __global__ void (\w+)\(', src)}
    launched = set(re.findall(r'"(tg_\w+)"', (PACKAGE / "cuda_kernels.py").read_text()))
    assert defined == launched == {"tg_im2col", "tg_col2im", "tg_max_pool",
                                   "tg_max_pool_scatter", "tg_max_pool_gather"}


def _nvrtc():
    """(the nvrtc binding CuPy uses, None) or (None, why not)."""
    try:
        from cupy_backends.cuda.libs import nvrtc
    except Exception as e:  # noqa: BLE001 - any failure to import is a reason to skip
        return None, (f"cupy is not installed ({type(e).__name__}); pip install cupy-cuda12x "
                      f"nvidia-cuda-nvrtc-cu12")
    try:
        nvrtc.getVersion()
    except Exception as e:  # noqa: BLE001
        return None, (f"CuPy finds no NVRTC library ({type(e).__name__}: "
                      f"{' '.join(str(e).split())}); "
                      f"pip install nvidia-cuda-nvrtc-cu12")
    return nvrtc, None


def _nvcc():
    """(path of nvcc, None) or (None, why not)."""
    candidates = [shutil.which("nvcc")] + [
        os.path.join(root, "bin", "nvcc")
        for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda")
        if root]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path, None
    return None, "nvcc is not on PATH, nor in $CUDA_HOME/bin or /usr/local/cuda/bin"


def _skip_or_fail_without_compiler(reason):
    if os.environ.get("TINYGRAD_CNN_REQUIRE_CUDA_COMPILER") == "1":
        pytest.fail(f"TINYGRAD_CNN_REQUIRE_CUDA_COMPILER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def test_some_cuda_compiler_is_available():
    (nvrtc, nvrtc_why), (nvcc, nvcc_why) = _nvrtc(), _nvcc()
    if nvrtc is None and nvcc is None:
        _skip_or_fail_without_compiler(f"no CUDA compiler: {nvrtc_why}; {nvcc_why}")


@pytest.fixture(scope="module")
def nvrtc():
    module, why = _nvrtc()
    if module is None:
        pytest.skip(why)
    return module


@pytest.mark.parametrize("label", sorted(SOURCES))
def test_compiles_with_nvrtc(nvrtc, label):
    archs = nvrtc.getSupportedArchs()
    for arch in (min(archs), max(archs)):
        # What CuPy's RawModule passes: our options, the device's -arch (here
        # machine code for the oldest and the newest GPU this NVRTC knows).
        options = list(OPTIONS) + [f"-arch=sm_{arch}", "--device-as-default-execution-space"]
        program = nvrtc.createProgram(SOURCES[label], f"{label}.cu", [], [])
        try:
            try:
                nvrtc.compileProgram(program, options)
            except nvrtc.NVRTCError as e:
                pytest.fail(f"{label} does not compile for sm_{arch} with NVRTC "
                            f"{nvrtc.getVersion()}: {e}\n{nvrtc.getProgramLog(program)}")
            log = [line for line in nvrtc.getProgramLog(program).splitlines()
                   if line.strip() and "are deprecated" not in line]
            assert log == [], f"NVRTC warnings for {label}, sm_{arch}:\n" + "\n".join(log)
            assert len(nvrtc.getCUBIN(program)) > 0
        finally:
            nvrtc.destroyProgram(program)


@pytest.fixture(scope="module")
def nvcc():
    path, why = _nvcc()
    if path is None:
        pytest.skip(why)
    listed = subprocess.run([path, "--list-gpu-arch"], capture_output=True, text=True)
    archs = [int(a) for a in re.findall(r"compute_(\d+)", listed.stdout)]
    return path, min(archs) if archs else 75


@pytest.mark.parametrize("label", sorted(SOURCES))
def test_compiles_with_nvcc(nvcc, label, tmp_path):
    path, arch = nvcc
    source = tmp_path / f"{label}.cu"
    source.write_text(SOURCES[label])
    done = subprocess.run(
        [path, "-cubin", f"-arch=sm_{arch}", "-Werror", "all-warnings",
         "-Wno-deprecated-gpu-targets", "-o", str(tmp_path / "out.cubin"), str(source)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and not done.stderr.strip(), \
        f"nvcc -cubin -arch=sm_{arch} fails on {label}:\n{done.stderr}"
    assert (tmp_path / "out.cubin").stat().st_size > 0


# ---- the same source on the host: index arithmetic against the array code -----------
HOST_SHIM = r"""
// CUDA's thread coordinates, set by the test before each emulated thread runs.
struct tg_dim3 { unsigned int x, y, z; };
static tg_dim3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
extern "C" void tg_host_set_thread(unsigned int block, unsigned int thread,
                                   unsigned int blocks, unsigned int threads)
{
    blockIdx.x = block; threadIdx.x = thread; gridDim.x = blocks; blockDim.x = threads;
}
"""
C_TYPES = {"float": np.float32, "double": np.float64, "unsigned char": np.uint8,
           "unsigned short": np.uint16, "unsigned int": np.uint32, "int": np.int32,
           "long long": np.int64}
EMULATED_GRID = (2, 3)  # blocks, threads per block: each emulated thread strides


def _cxx():
    for name in ("c++", "g++", "clang++"):
        if shutil.which(name):
            return shutil.which(name)
    return None


class HostFunction:
    """One kernel of a host-compiled source, launched as CuPy launches a RawKernel."""

    def __init__(self, module, name):
        self.module, self.name = module, name
        self.fn = getattr(module.lib, name)
        m = re.search(r'extern "C" __global__ void ' + name + r"\((.*?)\)\s*\{",
                      module.code, re.S)
        self.params = []   # (name, numpy dtype, pointer?, const?)
        for param in m.group(1).split(","):
            words = param.replace("*", " * ").split()
            pointer, const = "*" in words, "const" in words
            ctype = " ".join(w for w in words[:-1] if w not in ("const", "*", "__restrict__"))
            self.params.append((words[-1], np.dtype(C_TYPES[module.typedefs.get(ctype, ctype)]),
                                pointer, const))
        self.fn.argtypes = [ctypes.c_void_p if p else np.ctypeslib.as_ctypes_type(d)
                            for _, d, p, _ in self.params]
        self.fn.restype = None

    def __call__(self, grid, block, args):
        # CUDA's limits: at most 1024 threads a block, 2**31 - 1 blocks along x.
        assert len(grid) == len(block) == 1, (grid, block)
        assert 1 <= block[0] <= 1024 and 1 <= grid[0] <= 2**31 - 1, (grid, block)
        assert len(args) == len(self.params), f"{self.name}: {len(args)} arguments"
        converted = []
        for value, (name, dtype, pointer, const) in zip(args, self.params):
            where = f"{self.name} argument {name!r}"
            if pointer:
                assert isinstance(value, np.ndarray) and value.dtype == dtype, \
                    f"{where}: expected a {dtype} array, got {getattr(value, 'dtype', value)}"
                assert value.flags.c_contiguous and (const or value.flags.writeable), where
                converted.append(value.ctypes.data)
            else:
                # A Python int would reach a GPU kernel as a 64-bit long long.
                assert type(value) is dtype.type, \
                    f"{where}: expected numpy.{dtype.name}, got {type(value).__name__}"
                converted.append(value)
        self.module.launches.append(self.name)
        blocks, threads = EMULATED_GRID
        for b in range(blocks):
            for t in range(threads):
                self.module.lib.tg_host_set_thread(b, t, blocks, threads)
                self.fn(*converted)


class HostModule:
    """``cupy.RawModule(code=..., options=...)``, compiled for the host."""

    _cache = {}

    def __init__(self, code, options=()):
        assert options == OPTIONS
        self.code, self.launches = code, HostCupy.launches
        self.typedefs = dict((t, c) for c, t in re.findall(r"typedef ([\w ]+) (\w+);", code))
        key = hashlib.sha256(code.encode()).hexdigest()[:16]
        if key not in self._cache:
            directory = HostCupy.build_dir
            source, lib = directory / f"{key}.cpp", directory / f"{key}.so"
            source.write_text(HOST_SHIM + code)
            done = subprocess.run([_cxx(), "-O1", "-Wall", "-Werror", "-shared", "-fPIC",
                                   "-o", str(lib), str(source)],
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"host compile failed:\n{done.stderr}"
            self._cache[key] = ctypes.CDLL(str(lib))
        self.lib = self._cache[key]
        self.lib.tg_host_set_thread.argtypes = [ctypes.c_uint] * 4

    def get_function(self, name):
        return HostFunction(self, name)


class HostCupy:
    """The three names :class:`ConvKernels` takes from CuPy, on the host."""

    launches = []
    build_dir = None
    RawModule = HostModule
    ascontiguousarray = staticmethod(np.ascontiguousarray)

    @staticmethod
    def empty(shape, dtype):
        # Garbage where a kernel forgot to write: NaN, or the largest integer.
        dtype = np.dtype(dtype)
        return np.full(shape, np.nan if dtype.kind == "f" else np.iinfo(dtype).max, dtype)


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    if _cxx() is None:
        pytest.skip("no C++ compiler (c++, g++ or clang++) on PATH")
    HostCupy.build_dir = tmp_path_factory.mktemp("host_kernels")
    return ConvKernels(HostCupy)


def _launches(fn):
    """Run fn(); return (result, the kernels it launched)."""
    start = len(HostCupy.launches)
    result = fn()
    return result, HostCupy.launches[start:]


def _data(shape, dtype, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    if ties:   # few distinct values: many equal maxima in a window
        return rng.integers(-2, 3, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


# (x shape, kernel, stride, ((top, bottom), (left, right)), dilation)
CONV_CASES = [
    ((2, 3, 7, 6), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ((3, 2, 9, 8), (3, 2), (2, 3), ((0, 1), (2, 0)), (2, 1)),
    ((2, 2, 6, 7), (6, 7), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    ((5, 4, 4, 4), (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1)),
    ((2, 1, 9, 9), (2, 2), (3, 3), ((1, 2), (0, 1)), (1, 2)),
    ((1, 3, 5, 5), (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1)),
]
CONV_IDS = [f"{s[0]}-k{s[1]}-s{s[2]}-p{s[3]}-d{s[4]}".replace(" ", "") for s in CONV_CASES]
# (x shape, kernel, stride, padding, dilation, ceil_mode)
POOL_CASES = [
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0), (1, 1), False),
    ((2, 2, 7, 9), (3, 3), (2, 2), (1, 1), (1, 1), True),
    ((1, 2, 9, 7), (3, 2), (1, 2), (1, 0), (2, 1), False),
    ((2, 1, 6, 5), (2, 3), (1, 1), (1, 1), (1, 2), True),
    ((1, 1, 18, 18), (17, 17), (1, 1), (8, 8), (1, 1), False),   # 289 offsets
]
POOL_IDS = [f"{s[0]}-k{s[1]}-s{s[2]}-p{s[3]}-d{s[4]}-ceil{int(s[5])}".replace(" ", "")
            for s in POOL_CASES]
DTYPES = [np.float32, np.float64]


def _conv_geom(case):
    shape, kernel, stride, padding, dilation = case
    return shape, conv_geometry("test", shape, kernel, stride, padding, dilation)


def _pool_geom(case):
    shape, kernel, stride, padding, dilation, ceil_mode = case
    return shape, pool_geometry("test", shape, kernel, stride, padding, dilation, ceil_mode)


def _pool_input(shape, dtype, geom):
    """Ties, a NaN and an all -inf plane corner, so every tie and NaN rule is exercised."""
    x = _data(shape, dtype, ties=True)
    x[0, 0, 0, 0] = x[0, -1, 1, 1] = np.nan   # first in its window, and not first
    x[-1, -1, -2:, -2:] = -np.inf
    return x


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_im2col_and_col2im_equal_the_array_code(host_kernels, case, dtype):
    shape, geom = _conv_geom(case)
    N, C = shape[:2]
    x = _data(shape, dtype)
    for layout in ("nkl", "knl", "kln"):
        expected = unfold_array(CPU, x, geom, layout)
        cols, launched = _launches(lambda: host_kernels.im2col(x, geom, layout))
        assert launched == ["tg_im2col"] and cols.dtype == x.dtype
        np.testing.assert_array_equal(cols, expected, err_msg=f"im2col {layout}")
        g = _data(expected.shape, dtype, seed=1)
        x_back, launched = _launches(lambda: host_kernels.col2im(g, geom, N, C, layout))
        assert launched == ["tg_col2im"]
        # The same sums in the same order: equal bit for bit.
        np.testing.assert_array_equal(x_back, fold_array(CPU, g, geom, N, C, layout),
                                      err_msg=f"col2im {layout}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", POOL_CASES, ids=POOL_IDS)
def test_max_pool_kernels_equal_the_array_code(host_kernels, case, dtype):
    shape, geom = _pool_geom(case)
    x = _pool_input(shape, dtype, geom)
    y, launched = _launches(lambda: host_kernels.max_pool(x, geom))
    assert launched == ["tg_max_pool"] and y.dtype == x.dtype
    np.testing.assert_array_equal(y, max_pool_array(CPU, x, geom))
    g = _data(y.shape, dtype, seed=2)
    gx, launched = _launches(lambda: host_kernels.max_pool_scatter(g, x, y, geom))
    assert launched == ["tg_max_pool_scatter"]
    np.testing.assert_array_equal(gx, max_pool_scatter_array(CPU, g, x, y, geom))
    v = _data(shape, dtype, seed=3)
    gy, launched = _launches(lambda: host_kernels.max_pool_gather(v, x, y, geom))
    assert launched == ["tg_max_pool_gather"]
    np.testing.assert_array_equal(gy, max_pool_gather_array(CPU, v, x, y, geom))


def _strided(a):
    """The values of ``a`` as a non-contiguous view (every other element of a larger array)."""
    holder = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    holder[..., ::2] = a
    return holder[..., ::2]


def _conv_input():
    shape, geom = _conv_geom(CONV_CASES[1])
    return shape, geom, _data(shape, np.float64)


def _pool_input_and_output():
    shape, geom = _pool_geom(POOL_CASES[1])
    x = _pool_input(shape, np.float64, geom)
    return shape, geom, x, max_pool_array(CPU, x, geom)


def _im2col_of_a_view(kernels):
    _, geom, x = _conv_input()
    return kernels.im2col(_strided(x), geom, "knl"), unfold_array(CPU, x, geom, "knl")


def _col2im_of_a_view(kernels):
    shape, geom, x = _conv_input()
    g = _data(unfold_array(CPU, x, geom, "knl").shape, np.float64, seed=1)
    return (kernels.col2im(_strided(g), geom, *shape[:2], "knl"),
            fold_array(CPU, g, geom, *shape[:2], "knl"))


def _max_pool_of_a_view(kernels):
    _, geom, x, y = _pool_input_and_output()
    return kernels.max_pool(_strided(x), geom), y


def _max_pool_scatter_of_views(kernels):
    _, geom, x, y = _pool_input_and_output()
    g = _data(y.shape, np.float64, seed=2)
    return (kernels.max_pool_scatter(_strided(g), _strided(x), _strided(y), geom),
            max_pool_scatter_array(CPU, g, x, y, geom))


def _max_pool_gather_of_views(kernels):
    shape, geom, x, y = _pool_input_and_output()
    v = _data(shape, np.float64, seed=3)
    return (kernels.max_pool_gather(_strided(v), _strided(x), _strided(y), geom),
            max_pool_gather_array(CPU, v, x, y, geom))


# kernel -> (the kernel's result on non-contiguous views of its inputs, the array code's)
NON_CONTIGUOUS = [
    ("im2col", _im2col_of_a_view),
    ("col2im", _col2im_of_a_view),
    ("max_pool", _max_pool_of_a_view),
    ("max_pool_scatter", _max_pool_scatter_of_views),
    ("max_pool_gather", _max_pool_gather_of_views),
]


@pytest.mark.parametrize("run", [c[1] for c in NON_CONTIGUOUS], ids=[c[0] for c in NON_CONTIGUOUS])
def test_kernels_take_non_contiguous_arrays(host_kernels, run):
    """A sliced or transposed tensor reaches the kernels as a strided view; read as if
    it were contiguous, it would give other elements (a GPU reads them silently)."""
    got, expected = run(host_kernels)
    np.testing.assert_array_equal(got, expected)


def test_max_pool_kernels_when_x_changed_after_the_forward(host_kernels):
    """Where no element of a window reaches its y any more (x lowered in place after
    the forward), the kernels give what the array code gives (nothing from that
    window) and read nothing outside it."""
    shape, geom = _pool_geom(POOL_CASES[0])
    x = _pool_input(shape, np.float64, geom)
    y = max_pool_array(CPU, x, geom)
    lowered = x - 1.0
    v = _data(shape, np.float64, seed=3)
    gy, _ = _launches(lambda: host_kernels.max_pool_gather(v, lowered, y, geom))
    np.testing.assert_array_equal(gy, max_pool_gather_array(CPU, v, lowered, y, geom))
    g = _data(y.shape, np.float64, seed=2)
    gx, _ = _launches(lambda: host_kernels.max_pool_scatter(g, lowered, y, geom))
    np.testing.assert_array_equal(gx, max_pool_scatter_array(CPU, g, lowered, y, geom))


@pytest.mark.parametrize("x_dtype, g_dtype", [(np.float32, np.float64), (np.float64, np.float32)],
                         ids=["float32-x", "float64-x"])
def test_max_pool_gradient_in_another_precision_than_x(host_kernels, x_dtype, g_dtype):
    """The gradient keeps its own dtype, and x is compared with y in the wider one: float64
    values 1e-10 apart all round to 1.0 in float32, where the first would win every window."""
    shape, geom = _pool_geom(POOL_CASES[1])
    if x_dtype == np.float64:
        x = 1.0 + _data(shape, np.float64, ties=True) * 1e-10
    else:
        x = _pool_input(shape, x_dtype, geom)
    y = host_kernels.max_pool(x, geom)
    g = _data(y.shape, g_dtype, seed=2)
    gx = host_kernels.max_pool_scatter(g, x, y, geom)
    expected = max_pool_scatter_array(CPU, g, x, y, geom)
    assert gx.dtype == expected.dtype == g_dtype
    # Overlapping windows' gradients are summed in the wider dtype: a float32 sum may
    # differ from the array code's in the last bit.
    np.testing.assert_allclose(gx, expected, rtol=1e-15 if g_dtype == np.float64 else 1e-6)
    v = _data(shape, g_dtype, seed=3)
    gy = host_kernels.max_pool_gather(v, x, y, geom)
    expected = max_pool_gather_array(CPU, v, x, y, geom)
    assert gy.dtype == expected.dtype == g_dtype
    np.testing.assert_array_equal(gy, expected)


def test_empty_batches_launch_nothing(host_kernels):
    _, geom = _conv_geom(CONV_CASES[0])
    x = np.zeros((0, 3, 7, 6), np.float32)
    cols, launched = _launches(lambda: host_kernels.im2col(x, geom, "knl"))
    assert cols.shape == (27, 0) and launched == []


def test_unsupported_dtype_is_a_clear_error(host_kernels):
    _, geom = _conv_geom(CONV_CASES[0])
    with pytest.raises(TypeError, match="float32 and float64 arrays, got float16"):
        host_kernels.im2col(np.zeros((1, 3, 7, 6), np.float16), geom, "nkl")


class HostKernelBackend(NumpyBackend):
    """NumPy, with the CNN hot spots in the host-compiled CUDA kernels (as CupyBackend)."""

    kernel_dtypes = CupyBackend.kernel_dtypes

    def __init__(self, kernels):
        self.kernels = kernels

    def im2col(self, x, geom, layout):
        return self.kernels.im2col(x, geom, layout)

    def col2im(self, cols, geom, N, C, layout):
        return self.kernels.col2im(cols, geom, N, C, layout)

    def max_pool(self, x, geom):
        return self.kernels.max_pool(x, geom)

    def max_pool_scatter(self, g, x, y, geom):
        return self.kernels.max_pool_scatter(g, x, y, geom)

    def max_pool_gather(self, gx, x, y, geom):
        return self.kernels.max_pool_gather(gx, x, y, geom)


@pytest.fixture
def kernel_device(host_kernels):
    name = "hostkernels"
    tg.register_backend(name, HostKernelBackend(host_kernels))
    yield name
    backend_module._BACKENDS.pop(name, None)


OPS = [  # x (2, 2, 5, 6), w (4, 2, 2, 3); every op uses both
    ("conv2d", lambda x, w: F.conv2d(x, w, stride=(2, 1), padding=(1, 2), dilation=(1, 2))),
    ("conv2d-groups-same", lambda x, w: F.conv2d(x, w[:, :1], groups=2, padding="same")),
    ("conv_transpose2d",
     lambda x, w: F.conv_transpose2d(x, w.swapaxes(0, 1), stride=2, padding=1)),
    ("unfold-fold", lambda x, w: F.fold(F.unfold(x, (2, 3), stride=(1, 2)) * w.sum(),
                                        (5, 6), (2, 3), stride=(1, 2))),
    ("max_pool2d", lambda x, w: F.max_pool2d(x * w.sum(), 3, stride=2, padding=1,
                                             ceil_mode=True)),
    ("max_pool2d-dilated", lambda x, w: F.max_pool2d(x * w.sum(), (2, 3), stride=1,
                                                     dilation=(2, 1))),
]


@pytest.mark.parametrize("fn", [o[1] for o in OPS], ids=[o[0] for o in OPS])
def test_ops_on_the_kernels_match_the_cpu_to_second_order(kernel_device, fn):
    rng = np.random.default_rng(0)
    x0, w0 = rng.standard_normal((2, 2, 5, 6)), rng.standard_normal((4, 2, 2, 3)) * 0.5
    results = []
    for device in ("cpu", kernel_device):
        x = tg.tensor(x0, device=device, requires_grad=True)
        w = tg.tensor(w0, device=device, requires_grad=True)
        start = len(HostCupy.launches)
        y = fn(x, w)
        v = tg.tensor(np.random.default_rng(1).standard_normal(y.shape), device=device)
        gx, gw = tg.grad((y * v).sum(), (x, w), create_graph=True)
        ggx = tg.grad((gx * gx).sum() + (gw * gw).sum(), (x,), allow_unused=True)[0]
        if device == kernel_device:
            assert len(HostCupy.launches) > start  # the kernels ran
        results.append([t.numpy() for t in (y, gx, gw) + ((ggx,) if ggx is not None else ())])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
    x = tg.tensor(x0, device=kernel_device, requires_grad=True)
    w = tg.tensor(w0, device=kernel_device, requires_grad=True)
    assert tg.gradcheck(fn, (x, w)) and tg.gradgradcheck(fn, (x, w))


def test_other_dtypes_take_the_array_code(kernel_device):
    """The kernels handle float32 and float64; a float16 conv or pooling on a kernel
    backend runs the array code instead of failing in the kernel's dtype check."""
    rng = np.random.default_rng(0)
    x0, w0 = rng.standard_normal((2, 2, 5, 6)), rng.standard_normal((4, 2, 3, 3))
    results = []
    for device in ("cpu", kernel_device):
        x = tg.tensor(x0, dtype=tg.float16, device=device, requires_grad=True)
        w = tg.tensor(w0, dtype=tg.float16, device=device, requires_grad=True)
        start = len(HostCupy.launches)
        y = F.max_pool2d(F.conv2d(x, w, padding=1), 2)
        y.sum().backward()
        if device == kernel_device:
            assert len(HostCupy.launches) == start   # no kernel was asked for float16
        results.append([y.numpy(), x.grad.numpy(), w.grad.numpy()])
    for a, b in zip(*results):
        np.testing.assert_array_equal(b, a)


class StrictKernelBackend(StrictBackend):
    """The strict CuPy stand-in with the host-compiled kernels: CupyBackend's
    configuration (no cache blocking, so the GPU's layouts and routes; kernels for
    float32 and float64) under CuPy's rules.  :class:`HostKernelBackend` is a
    NumPy backend, which takes the host's layouts instead."""

    kernel_dtypes = CupyBackend.kernel_dtypes

    def __init__(self, device, kernels):
        super().__init__(device)
        self.kernels = kernels

    def _run(self, name, arrays, *args):
        with self.context():   # as CupyBackend, which enters its own device
            self._launch(f"kernel {name}")
            host = [self._own(a, f"kernel {name}") for a in arrays]
            return StrictArray(getattr(self.kernels, name)(*host, *args), self)

    def im2col(self, x, geom, layout):
        return self._run("im2col", (x,), geom, layout)

    def col2im(self, cols, geom, N, C, layout):
        return self._run("col2im", (cols,), geom, N, C, layout)

    def max_pool(self, x, geom):
        return self._run("max_pool", (x,), geom)

    def max_pool_scatter(self, g, x, y, geom):
        return self._run("max_pool_scatter", (g, x, y), geom)

    def max_pool_gather(self, gx, x, y, geom):
        return self._run("max_pool_gather", (gx, x, y), geom)


@pytest.fixture
def strict_kernel_device(host_kernels):
    name = "strictkernels"
    backend = StrictKernelBackend(name, host_kernels)
    tg.register_backend(name, backend)
    yield name
    backend_module._BACKENDS.pop(name, None)


@pytest.mark.parametrize("fn", [o[1] for o in OPS], ids=[o[0] for o in OPS])
def test_ops_on_the_kernels_under_cupys_rules_match_the_cpu(strict_kernel_device, fn):
    """The kernels as CupyBackend uses them: without cache blocking (the layouts
    and routes of a GPU) and with CuPy's rules on every array in between."""
    rng = np.random.default_rng(0)
    x0, w0 = rng.standard_normal((4, 2, 5, 6)), rng.standard_normal((4, 2, 2, 3)) * 0.5
    backend = tg.get_backend(strict_kernel_device)
    results = []
    for device in ("cpu", strict_kernel_device):
        x = tg.tensor(x0, device=device, requires_grad=True)
        w = tg.tensor(w0, device=device, requires_grad=True)
        v = tg.tensor(np.random.default_rng(1).standard_normal(fn(x, w).shape), device=device)
        start = len(HostCupy.launches)
        with backend.track_syncs() as log:
            y = fn(x, w)
            gx, gw = tg.grad((y * v).sum(), (x, w), create_graph=True)
            ggx = tg.grad((gx * gx).sum() + (gw * gw).sum(), (x,), allow_unused=True)[0]
        if device == strict_kernel_device:
            assert len(HostCupy.launches) > start and log == []
        results.append([t.numpy() for t in (y, gx, gw) + ((ggx,) if ggx is not None else ())])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


def test_a_training_step_on_the_kernels_under_cupys_rules(strict_kernel_device):
    """The default CNN's steps on the kernels, as on a GPU: no host synchronisation,
    the CPU's losses and weights."""
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((32, 1, 8, 8)).astype(np.float32)
    y0 = rng.integers(0, 10, 32)
    backend = tg.get_backend(strict_kernel_device)
    runs = []
    for device in ("cpu", strict_kernel_device):
        tg.manual_seed(0)
        model = models.cnn((1, 8, 8), 10).to(device)
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        xb, yb = tg.tensor(x0, device=device), tg.tensor(y0, device=device)
        start = len(HostCupy.launches)
        with backend.track_syncs() as log:
            for _ in range(2):
                loss = nn.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
        if device == strict_kernel_device:
            assert len(HostCupy.launches) > start and log == []
        runs.append([loss.item()] + [p.numpy() for p in model.parameters()])
    for a, b in zip(*runs):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


# ---- on a real GPU ------------------------------------------------------------------
@pytest.mark.parametrize("device", device_params(["cuda"]), indirect=True)
class TestOnGpu:
    """The kernels against the array code, both on CuPy; ConvKernels as CupyBackend runs it."""

    @staticmethod
    def backends(device):
        backend = tg.get_backend(device)

        class Portable(type(backend)):  # the same device, without the kernels
            im2col = col2im = max_pool = max_pool_scatter = max_pool_gather = None
        return backend, Portable(backend.index)

    @pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
    @pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
    def test_im2col_col2im(self, device, case, dtype):
        backend, portable = self.backends(device)
        shape, geom = _conv_geom(case)
        N, C = shape[:2]
        x = backend.asarray(_data(shape, dtype))
        for layout in ("nkl", "knl", "kln"):
            cols = unfold_array(backend, x, geom, layout)
            np.testing.assert_array_equal(backend.to_numpy(cols),
                                          backend.to_numpy(unfold_array(portable, x, geom,
                                                                        layout)))
            g = backend.asarray(_data(cols.shape, dtype, seed=1))
            x_back = fold_array(backend, g, geom, N, C, layout)
            again = fold_array(backend, g, geom, N, C, layout)
            expected = fold_array(portable, g, geom, N, C, layout)
            np.testing.assert_array_equal(backend.to_numpy(x_back), backend.to_numpy(again))
            np.testing.assert_allclose(backend.to_numpy(x_back), backend.to_numpy(expected),
                                       rtol=1e-6 if dtype == np.float32 else 1e-14)

    @pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
    @pytest.mark.parametrize("case", POOL_CASES, ids=POOL_IDS)
    def test_max_pool(self, device, case, dtype):
        backend, portable = self.backends(device)
        shape, geom = _pool_geom(case)
        x = backend.asarray(_pool_input(shape, dtype, geom))
        y = max_pool_array(backend, x, geom)
        np.testing.assert_array_equal(backend.to_numpy(y),
                                      backend.to_numpy(max_pool_array(portable, x, geom)))
        g = backend.asarray(_data(y.shape, dtype, seed=2))
        np.testing.assert_allclose(
            backend.to_numpy(max_pool_scatter_array(backend, g, x, y, geom)),
            backend.to_numpy(max_pool_scatter_array(portable, g, x, y, geom)), rtol=1e-6)
        v = backend.asarray(_data(shape, dtype, seed=3))
        np.testing.assert_array_equal(
            backend.to_numpy(max_pool_gather_array(backend, v, x, y, geom)),
            backend.to_numpy(max_pool_gather_array(portable, v, x, y, geom)))
