"""Array backends: the one place that knows about NumPy vs CuPy.

A :class:`Backend` bundles the array namespace ``xp`` with the handful of
operations where NumPy and CuPy differ (host transfer, strided windows,
scatter-add, synchronisation).  Every op reaches arrays only through
``backend.xp`` and these methods, so the same op code runs on both.

This is the only module of the package that imports ``cupy``, and only
lazily, when a CUDA device is asked for or probed.

Checks on device data, and why some of them are deferred
---------------------------------------------------------
Some errors can only be seen in the data: an integer index out of range,
a class target outside ``[0, C)``.  NumPy raises on a bad index at once;
CuPy silently wraps it around and computes a wrong answer.  Checking on the
host would need the data on the host, and on a GPU that is a
synchronisation: the CPU stops queueing work until the device has caught
up, every training step.  So validation goes through :meth:`Backend.check`
(and :meth:`Backend.check_index`, built on it):

* NumPy (``defer_checks = False``): the condition is tested and the error
  raised immediately, where the mistake is made.
* CuPy (``defer_checks = True``): the condition is reduced on the device
  into one small status array and nothing waits.  The error is raised at
  the next transfer to the host (``to_numpy``, so ``Tensor.item()``,
  ``.numpy()``, ``print``) or ``synchronize()``, naming the failed check.
  Results computed between the bad op and that point are garbage, and the
  traceback points at the transfer rather than the op.  Training loops
  read their loss every few steps, so the error arrives within a step or
  a logging interval.  To debug, set ``backend.defer_checks = False``
  (e.g. ``tg.get_backend("cuda").defer_checks = False``) and every check
  raises where it happens, at the price of one synchronisation each.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import platform
import re

import numpy as np


class DeviceError(RuntimeError):
    """A device was asked for that does not exist, or cannot be used here."""


_NO_CONTEXT = contextlib.nullcontext()   # reusable: entered once per op on the host


class Backend:
    """An array namespace plus the operations where array libraries differ.

    ``device`` is the canonical device string (``"cpu"``, ``"cuda:0"``);
    ``xp`` is the array module (``numpy`` or ``cupy``).
    """

    device = "cpu"
    xp = np
    defer_checks = False  # see "Checks on device data" in the module docstring
    # Split large array passes into cache-sized pieces (conv_arrays.batch_first,
    # cache_chunks): CPU caches reward it; a GPU gains nothing.  It also lets
    # convolutions return batch-last outputs and pick their layouts for the
    # host (conv_arrays, "Batch-last arrays"): NumPy-based backends only.
    cache_blocking = False
    _deferred_status = None  # device int: -1, or the id of a failed deferred check
    _MAX_CHECK_MESSAGES = 256

    def asarray(self, data, dtype=None):
        """Host or device data -> an array of this backend."""
        return self.xp.asarray(data, dtype=dtype)

    _MAX_CONSTANTS = 256
    _MAX_CONSTANT_BYTES = 1 << 16

    @functools.cached_property
    def _constants(self):
        return {}   # (dtype, shape, bytes) -> the array on this device, see constant()

    def constant(self, value, dtype=None):
        """A host number or array that ops use unchanged, as an array of this device.

        The 0.5 of ``x * 0.5`` (a 0-d array), a pooling divisor, a padding
        index: on a GPU each ``asarray`` of them is a host -> device copy,
        several per training step.  Kept per (dtype, shape, value), each is
        copied once.  Shared, so never written: the array is read-only where
        the array library allows it (NumPy) and tensors that hold it are
        marked read-only (an in-place op gives them a copy of their own
        first).  Up to ``_MAX_CONSTANTS`` are kept; a program that makes ever
        new ones (a schedule's factor, new image sizes) starts over when that
        many are.  Arrays over ``_MAX_CONSTANT_BYTES`` (64 KiB: the valid-offset
        masks of pooling over large images) are copied at each call instead, so
        that the cache stays below 16 MiB.
        """
        host = np.asarray(value, dtype=dtype)
        if host.nbytes > self._MAX_CONSTANT_BYTES:   # kept, these could fill a GPU
            return self.read_only(self.asarray(host.copy()))
        # By bits: -0.0 is not 0.0, and a NaN finds itself.
        key = (host.dtype, host.shape, host.tobytes())
        constants = self._constants
        a = constants.get(key)
        if a is None:
            if len(constants) >= self._MAX_CONSTANTS:
                constants.clear()
            # A copy: on the host, asarray would share (and freeze) the caller's array.
            a = constants[key] = self.read_only(self.asarray(host.copy()))
        return a

    def read_only(self, a):
        """``a``, made to refuse writes where the array library can (NumPy; CuPy
        cannot, and the tensors holding ``a`` are marked read-only instead)."""
        if isinstance(a, np.ndarray):
            a.flags.writeable = False
        return a

    def to_numpy(self, a):
        """This backend's array -> a host ``numpy.ndarray`` (explicit copy).

        First raises the error of any deferred check that failed.
        """
        self.raise_deferred_errors()
        return self._to_host(a)

    def _to_host(self, a):
        """The plain device -> host copy; backends override this, not ``to_numpy``."""
        return np.asarray(a)

    def check(self, bad, error_type, message):
        """Raise ``error_type(message)`` if the boolean array ``bad`` has a true entry.

        At once when ``defer_checks`` is false; otherwise without waiting
        for the device, at the next ``to_numpy`` or ``synchronize``.
        """
        if not self.defer_checks:
            if bad.any():
                raise error_type(message)
            return
        # One id per distinct message since the last report (shapes repeat
        # every step, so the table stays small); the device keeps the largest
        # failed id, so memory and work per check stay constant however far
        # the host runs ahead of the device.
        status = self._deferred_status
        if status is None:
            self._check_messages = {}
        messages = self._check_messages
        key = (error_type, message)
        if key not in messages and len(messages) >= self._MAX_CHECK_MESSAGES:
            key = (RuntimeError, "a deferred check failed (its message was not kept: "
                                 "too many distinct checks between synchronisations)")
        check_id = messages.setdefault(key, len(messages))
        with self.context():
            failed = self.xp.where(bad.any(), check_id, -1)
            self._deferred_status = failed if status is None else self.xp.maximum(status, failed)

    def check_index(self, index, size, where=""):
        """Check that every entry of the integer array ``index`` is in ``[-size, size)``.

        ``where`` completes the message (e.g. "for axis 0 of size 10 in a
        tensor of shape (10, 3)").  Deferred on GPU backends, see :meth:`check`.
        """
        # Only bounds the dtype can hold: NumPy 2 and CuPy may refuse to compare
        # with a Python int outside it (NEP 50), and an unsigned index is never < 0.
        info = np.iinfo(index.dtype)
        bounds = ([index >= size] if size <= info.max else []) + \
            ([index < -size] if -size >= info.min else [])
        if not bounds:
            return
        bad = bounds[0] | bounds[1] if len(bounds) == 2 else bounds[0]
        if not self.defer_checks:
            if bad.any():
                raise IndexError(f"index {int(index[bad].ravel()[0])} is out of range {where}")
            return
        self.check(bad, IndexError, f"an index was out of range {where}")

    def raise_deferred_errors(self):
        """Raise the error of a failed deferred check, if any (reads one number)."""
        status = self._deferred_status
        if status is None:
            return
        self._deferred_status = None
        check_id = int(self._to_host(status))
        if check_id < 0:
            return
        error_type, message = next(k for k, i in self._check_messages.items() if i == check_id)
        raise error_type(f"{message} (found on {self.device} by a deferred check and reported "
                         f"at the next transfer to the host or synchronize(); results "
                         f"computed since the failing op are invalid; set "
                         f"get_backend({self.device!r}).defer_checks = False to raise where "
                         f"it happens)")

    def is_array(self, a):
        """Is ``a`` an array of this backend (and, for a GPU, on its device)?"""
        return isinstance(a, np.ndarray)

    def is_writeable(self, a):
        """May ``a`` be written in place?  (NumPy has read-only arrays; CuPy does not.)"""
        return a.flags.writeable

    # Can one index hold a boolean mask beside other array indices (x[mask, idx])?
    # NumPy: yes; CuPy supports one boolean array and no other array in an index.
    mask_with_arrays = True

    # The dtypes that this backend's own kernels (im2col, col2im, max_pool, ...)
    # handle, None for all; conv_arrays runs its array code for any other.
    kernel_dtypes = None

    def context(self):
        """A context in which new arrays land on this backend's device.

        Array libraries allocate on their *current* device, so ops wrap
        their array code in this (a no-op on the host).
        """
        return _NO_CONTEXT

    def as_strided(self, a, shape, strides):
        """A read-only strided view of ``a`` (strides in bytes)."""
        return np.lib.stride_tricks.as_strided(a, shape=shape, strides=strides,
                                               writeable=False)

    def scatter_add(self, a, index, values):
        """``a[index] += values`` with repeated indices accumulated, in place.

        ``np.add.at`` steps element by element.  A gather along one axis
        (full slices, then one 1-D integer array, then full slices: how
        ``x[:, idx]`` and pad's reflect, replicate and circular modes index)
        whose indices form a few runs of consecutive values (a pad's: the
        interior, and a run per padded element at most) goes as one slice
        add per run instead; indices within a run never repeat (~20x faster
        for the gradient of a padded (32, 64, 34, 34) array).
        """
        gather = one_axis_gather(index, a.ndim)
        if gather is not None:
            axis, idx = gather
            # In int64: a narrow dtype (int8, uint8, int16...) may not hold idx
            # plus the axis size (NumPy 2 raises OverflowError) or a run's end
            # (which would wrap around to an empty slice).
            idx = idx.astype(np.int64)
            idx = np.where(idx < 0, idx + a.shape[axis], idx)
            starts = np.flatnonzero(np.diff(idx, prepend=idx[:1] - 2) != 1)  # run starts
            if len(starts) <= 16 and idx.min(initial=0) >= 0 and idx.max(
                    initial=0) < a.shape[axis]:
                lead = (slice(None),) * axis
                values = np.broadcast_to(
                    values, a.shape[:axis] + idx.shape + a.shape[axis + 1:])
                for lo, hi in zip(starts, list(starts[1:]) + [len(idx)]):
                    target = slice(idx[lo], idx[lo] + hi - lo)
                    a[lead + (target,)] += values[lead + (slice(lo, hi),)]
                return
        np.add.at(a, index, values)

    def synchronize(self):
        """Wait until queued device work is done, then raise any deferred error."""
        self.raise_deferred_errors()

    def describe(self):
        """A dict of facts for ``tinygrad-cnn info``."""
        return {"device": self.device, "array module": f"numpy {np.__version__}"}

    def __repr__(self):
        return f"<{type(self).__name__} device={self.device!r}>"

    # One backend object per device: tensors compare backends with ``is``, so
    # copy.deepcopy(model) must share them rather than clone them.
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def one_axis_gather(index, ndim):
    """(axis, idx) if ``index`` picks along one axis of an ``ndim``-d array with a 1-D
    integer NumPy array ``idx`` (full slices before and after it), else None.

    Not for a uint64 ``idx``: np.take refuses it before NumPy 2.1, and cast to
    int64 a huge entry would wrap around to a valid negative index."""
    parts = index if isinstance(index, tuple) else (index,)
    arrays = [k for k, part in enumerate(parts) if isinstance(part, np.ndarray)]
    if len(parts) > ndim or len(arrays) != 1:
        return None
    axis = arrays[0]
    idx = parts[axis]
    if idx.ndim != 1 or not np.can_cast(idx.dtype, np.int64) or idx.dtype == bool or any(
            part != slice(None) for k, part in enumerate(parts) if k != axis):
        return None
    return axis, idx


def is_writeable_strides(a):
    """May an array without a read-only flag be written in place: no axis of more than
    one element with a stride of 0 (a broadcast view)?"""
    return not any(stride == 0 and n > 1 for stride, n in zip(a.strides, a.shape))


class NumpyBackend(Backend):
    """The default host backend."""

    cache_blocking = True


class CupyBackend(Backend):
    """CUDA arrays through CuPy; built only after :func:`cuda_status` says yes."""

    defer_checks = True

    def __init__(self, index=0):
        import cupy
        import cupyx
        self.xp = cupy
        self._cupyx = cupyx
        self.index = index
        self.device = f"cuda:{index}"
        self._device = cupy.cuda.Device(index)
        self._kernels = None  # the CUDA kernels of the CNN ops, built on first use

    def asarray(self, data, dtype=None):
        with self._device:
            return self.xp.asarray(data, dtype=dtype)

    def _to_host(self, a):
        return self.xp.asnumpy(a)

    def is_array(self, a):
        return isinstance(a, self.xp.ndarray) and a.device.id == self.index

    def is_writeable(self, a):
        # CuPy arrays have no read-only flag; a broadcast view (a stride of 0
        # over more than one element) would write several elements into one.
        return is_writeable_strides(a)

    kernel_dtypes = (np.dtype("float32"), np.dtype("float64"))
    mask_with_arrays = False

    def context(self):
        # CuPy allocates (and launches) on the current device, which is not
        # necessarily this backend's; the Device object is a reusable context.
        return self._device

    def as_strided(self, a, shape, strides):
        # cupy's as_strided has no ``writeable`` argument; callers never write
        # through the view, so the result is read-only by convention.
        return self.xp.lib.stride_tricks.as_strided(a, shape=shape, strides=strides)

    def scatter_add(self, a, index, values):
        # cupyx.scatter_add accumulates duplicates; a[index] += v would not.
        self._cupyx.scatter_add(a, index, values)

    def synchronize(self):
        self._device.synchronize()
        self.raise_deferred_errors()

    # ---- the CUDA kernels of the CNN ops (see conv_arrays, "Backend kernels") ----------
    def _conv_kernels(self):
        if self._kernels is None:
            from .cuda_kernels import ConvKernels
            self._kernels = ConvKernels(self.xp)
        return self._kernels

    def im2col(self, x, geom, layout):
        with self._device:
            return self._conv_kernels().im2col(x, geom, layout)

    def col2im(self, cols, geom, N, C, layout):
        with self._device:
            return self._conv_kernels().col2im(cols, geom, N, C, layout)

    def max_pool(self, x, geom):
        with self._device:
            return self._conv_kernels().max_pool(x, geom)

    def max_pool_scatter(self, g, x, y, geom):
        with self._device:
            return self._conv_kernels().max_pool_scatter(g, x, y, geom)

    def max_pool_gather(self, gx, x, y, geom):
        with self._device:
            return self._conv_kernels().max_pool_gather(gx, x, y, geom)

    def describe(self):
        cupy = self.xp
        props = cupy.cuda.runtime.getDeviceProperties(self.index)
        with self._device:  # memGetInfo reports on the current device
            free, total = cupy.cuda.runtime.memGetInfo()
        name = props["name"]
        return {
            "device": self.device,
            "gpu": (f"{name.decode() if isinstance(name, bytes) else name} (compute "
                    f"capability {props['major']}.{props['minor']})"),
            "memory": f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB",
            "array module": f"cupy {cupy.__version__}",
            "cuda runtime": _cuda_version(cupy.cuda.runtime.runtimeGetVersion()),
            "cuda driver": _cuda_version(cupy.cuda.runtime.driverGetVersion()),
        }


def _cuda_version(number):
    """CUDA's version numbers, 1000 * major + 10 * minor -> "major.minor"."""
    return f"{number // 1000}.{number % 1000 // 10}"


CUDA_INSTALL_HINT = ('install CuPy with: pip install "cupy-cuda12x[ctk]>=14" (for a CUDA 12 '
                     'driver; [ctk] brings the CUDA compiler and libraries from PyPI)')
CUDA_DRIVER_HINT = ("CUDA needs an NVIDIA GPU with a CUDA 12 driver (check nvidia-smi); "
                    "without one, use the CPU (device='cpu'; --device cpu on the command line)")


def _no_driver():
    """Whether no NVIDIA driver library can be loaded.  The CUDA runtime reports a
    missing driver as an insufficient one, which reads as "upgrade your driver"."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            ctypes.CDLL(name)
            return False
        except OSError:
            pass
    return True


@functools.lru_cache(maxsize=None)
def cuda_status():
    """``(usable, reason)`` for CUDA through CuPy, probed once and cached.

    CuPy imports fine on a machine without a driver or GPU; only a runtime
    call tells, so the probe asks for the device count.
    """
    try:
        import cupy
    except Exception as e:  # ImportError, or a broken install
        return False, f"cupy is not installed ({type(e).__name__}: {e}); {CUDA_INSTALL_HINT}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError without a driver
        cause = f"{type(e).__name__}: {e}"
        if _no_driver():
            cause = f"no NVIDIA driver is installed: libcuda cannot be loaded; CUDA said {cause}"
        return False, (f"cupy {cupy.__version__} is installed but no CUDA GPU is usable "
                       f"({cause}); {CUDA_DRIVER_HINT}")
    if count < 1:
        return False, (f"cupy {cupy.__version__} is installed but found no CUDA GPU; "
                       f"{CUDA_DRIVER_HINT}")
    return True, f"cupy {cupy.__version__}, {count} CUDA device(s)"


_BACKENDS: dict[str, Backend] = {"cpu": NumpyBackend()}
_DEVICE_RE = re.compile(r"^([a-z_][a-z0-9_]*)(?::(\d+))?$")


def register_backend(name, backend):
    """Make ``backend`` reachable as device ``name`` (used for test backends)."""
    backend.device = name
    _BACKENDS[name] = backend


def canonical_device(device):
    """``None``/``"cpu"``/``"cuda"``/``"cuda:1"``/``"auto"`` -> canonical device string
    (``None``: the default device; ``"auto"``: the GPU if usable, else the CPU)."""
    if device is None:
        return default_device()
    if isinstance(device, Backend):
        return device.device
    if not isinstance(device, str):
        raise DeviceError(f"device must be a string such as 'cpu' or 'cuda:0', "
                          f"got {device!r}")
    device = device.strip().lower()
    if device == "auto":   # as TINYGRAD_CNN_DEVICE=auto and --device auto
        return _auto_device()
    canonical = _parse_device(device)
    if canonical is not None:
        return canonical
    known = ", ".join(sorted(set(_BACKENDS) | {"auto", "cuda", "cuda:N"}))
    raise DeviceError(f"unknown device {device!r}; expected one of: {known}")


def _auto_device():
    """What ``"auto"`` names: the first GPU if CUDA is usable, else the CPU."""
    return "cuda:0" if cuda_status()[0] else "cpu"


def _parse_device(name):
    """A stripped, lower-case device name -> its canonical string, or None if unknown.

    A registered name (``"cpu"``, test backends) stays as is; ``"cuda"`` and
    ``"cuda:N"`` become ``"cuda:0"`` / ``"cuda:N"`` (whether or not CUDA works), N
    without leading zeros: one GPU has one name, so one backend.
    """
    if name in _BACKENDS:
        return name
    m = _DEVICE_RE.match(name)
    if m and m.group(1) == "cuda":
        return f"cuda:{int(m.group(2) or 0)}"   # "cuda:01" is GPU 1, named as "cuda:1"
    return None


def get_backend(device=None):
    """The :class:`Backend` for a device string, creating CUDA ones on demand."""
    asked, device = device, canonical_device(device)
    backend = _BACKENDS.get(device)
    if backend is not None:
        return backend
    usable, reason = cuda_status()
    if not usable:
        shown = repr(device) if asked in (None, device) else f"{asked!r} ({device})"
        source = ""
        if asked is None:   # the default device, which only the environment makes a GPU
            source = (f"TINYGRAD_CNN_DEVICE={os.environ.get('TINYGRAD_CNN_DEVICE', '')!r} "
                      f"(environment variable): ")
        raise DeviceError(f"{source}device {shown} is not available: {reason}")
    index = int(device.split(":")[1])
    import cupy
    count = cupy.cuda.runtime.getDeviceCount()
    if index >= count:
        raise DeviceError(f"device {device!r} does not exist: found {count} CUDA device(s)")
    backend = _BACKENDS[device] = CupyBackend(index)
    return backend


def default_device():
    """The device from ``TINYGRAD_CNN_DEVICE`` (cpu, cuda, cuda:N, auto or a
    registered name); cpu if unset."""
    choice = os.environ.get("TINYGRAD_CNN_DEVICE", "cpu").strip().lower() or "cpu"
    if choice == "auto":
        return _auto_device()
    canonical = "cpu" if choice == "cpu" else _parse_device(choice)
    if canonical is not None:
        return canonical
    raise DeviceError(f"TINYGRAD_CNN_DEVICE={choice!r} (environment variable) is not a device; "
                      f"expected one of: auto, cpu, cuda, cuda:N")


def backends():
    """List every backend: ``[{"device", "usable", "reason"}, ...]``."""
    rows = [{"device": "cpu", "usable": True, "reason": f"numpy {np.__version__}"}]
    usable, reason = cuda_status()
    rows.append({"device": "cuda", "usable": usable, "reason": reason})
    for name in sorted(_BACKENDS):
        if name != "cpu" and not name.startswith("cuda"):
            rows.append({"device": name, "usable": True, "reason": "registered backend"})
    return rows


_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_M_MMAP_THRESHOLD = -3


def reduce_malloc_churn(nbytes=1 << 30):
    """Keep freed large blocks in the process instead of returning them to the OS.

    Sets glibc's ``M_MMAP_THRESHOLD`` (blocks above it are mmapped and
    unmapped on free) and ``M_TRIM_THRESHOLD`` (free memory above it at the
    top of the heap is returned) to ``nbytes``.  The next step's arrays of
    the same sizes then reuse that memory without page faults, at the price
    of the process keeping its peak heap.  Safe: only tuning parameters
    change, and only on glibc; returns False elsewhere.
    """
    if platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, nbytes)) and \
        bool(libc.mallopt(_M_TRIM_THRESHOLD, nbytes))
