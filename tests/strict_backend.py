"""A strict test backend: NumPy underneath, CuPy's rules on top, no GPU needed.

Importing this module registers two devices, ``"strict"`` and ``"strict2"``.
Their arrays (:class:`StrictArray`) hold a NumPy array and a device tag, and
refuse everything a CuPy array refuses, so the test suite run on ``"strict"``
proves the core would run on CuPy:

* no implicit conversion to NumPy: ``np.asarray(a)`` raises CuPy's
  ``TypeError``; NumPy functions and ufuncs applied to a strict array raise
  (CuPy would dispatch some of them, but the project's rule is to go
  through ``backend.xp``);
* no mixing: host ``numpy.ndarray`` operands and arrays of the other strict
  device raise ``TypeError`` in operators, in ``xp`` functions and in
  indices; Python and NumPy scalars are fine, as on CuPy;
* ``xp`` offers only what CuPy offers (when CuPy is importable, a name that
  ``cupy`` lacks raises ``AttributeError``), has no ``ufunc.at`` (use
  ``backend.scatter_add``) and no ``random`` (the project draws randomness
  on the host);
* calls take only the arguments CuPy's own function or method takes (read
  from the installed CuPy's signatures): NumPy's extra keywords, such as
  ``where=`` of ufuncs and reductions, ``initial=`` of ``max`` or
  ``order=`` of ufuncs, raise ``TypeError`` as on CuPy;
* ``backend.scatter_add`` through an integer index array takes only the
  dtypes CuPy's atomic adds take (not int8, int16, uint8, uint16, bool or
  complex);
* assignment through repeated integer indices raises (CuPy leaves which
  write wins undefined), and an integer index out of range raises unless
  ``backend.check_index`` has vetted that index array, in which case it
  wraps around as on CuPy and the deferred check reports it later;
* a current device, as CuPy's (per thread): ``"strict"`` plays device 0
  (current unless a context says otherwise), ``"strict2"`` device 1, and
  ``backend.context()`` makes its device current.  Anything that would
  allocate or launch a kernel (operators, ``xp`` functions, methods that
  copy, a reshape that must copy, advanced indexing, assignment) on arrays
  or in the namespace of a device that is not current raises: CuPy would
  put the result on the current device, or fail without peer access.
  Views (slicing, reshape, transpose, ``broadcast_to``, ``as_strided``),
  facts and ``.get()`` need no current device.  The suite runs on ``"strict2"`` too, so array code
  outside ``backend.context()`` fails there;
* reductions and scalar indexing give 0-d arrays, never scalars;
* host -> device copies (``xp.asarray`` and ``xp.array`` of host data,
  ``.set()``) are counted in ``upload_count``, and the arrays that
  ``Backend.constant`` shares between ops refuse writes (CuPy's cannot, so
  the suite proves that nothing writes into them);
* every host synchronisation is counted on the backend: ``to_numpy``,
  ``synchronize``, ``.get()``, ``.item()``, ``.tolist()``, ``float() /
  int() / bool()``, printing, boolean-mask indexing and ``xp.nonzero`` and
  friends (whose output size lives on the device).  ``with
  backend.track_syncs() as log:`` collects them with the code location.
"""
from __future__ import annotations

import contextlib
import inspect
import operator
import os
import re
import sys
import threading

import numpy as np

from tinygrad_cnn.backend import Backend, is_writeable_strides, register_backend

IMPLICIT_CONVERSION = ("Implicit conversion to a NumPy array is not allowed. "
                       "Please use `.get()` to construct a NumPy array explicitly.")

_HERE = os.path.abspath(__file__)
_SCALARS = (bool, int, float, complex, np.generic)


# ---- what CuPy has ------------------------------------------------------------------
_CUPY = {}
_CUPY_MODULE = []   # [the real cupy module, or None], imported on first use


def _cupy_module():
    """The installed cupy, or None.  Kept from the first call, so that a test's fake
    ``cupy`` in ``sys.modules`` does not become what the rules are read from."""
    if not _CUPY_MODULE:
        try:
            import importlib
            _CUPY_MODULE.append(importlib.import_module("cupy"))
        except Exception:  # no cupy here: nothing to compare with
            _CUPY_MODULE.append(None)
    return _CUPY_MODULE[0]


def _cupy_owner(where):
    """``cupy.<where>`` (``""``: cupy itself, a submodule path, or ``"ndarray"``)."""
    import importlib
    cupy = _cupy_module()
    if cupy is None:
        raise ImportError("cupy is not installed")
    return (cupy.ndarray if where == "ndarray" else
            importlib.import_module(f"cupy.{where}") if where else cupy)


def _cupy_has(where, name):
    """Does ``cupy.<where>`` have ``name``?  ``where``: ``""`` for cupy itself, a
    submodule path, or ``"ndarray"``.  True when CuPy is not installed (CI)."""
    if where not in _CUPY:
        try:
            _CUPY[where] = set(dir(_cupy_owner(where)))
        except Exception:  # no cupy here: nothing to compare with
            _CUPY[where] = None
    return _CUPY[where] is None or name in _CUPY[where]


_SIGNATURES = {}
_UFUNC_KEYWORDS = ("out", "dtype", "casting")   # all that cupy's ufunc.__call__ takes


def _cupy_object(where, name):
    """``cupy.<where>.<name>`` (``where`` as for :func:`_cupy_has`, or a ufunc
    method's owner ``"ufunc:<name>"``), or None when CuPy or the name is missing."""
    try:
        if where.startswith("ufunc:"):
            return getattr(getattr(_cupy_owner(""), where[6:]), name)
        return getattr(_cupy_owner(where), name)
    except Exception:
        return None


def _docstring_signature(fn):
    """The signature on the first line of a Cython function's docstring
    (``_ndarray_base.sum(self, axis=None, ...) -> ...``), without ``self`` and
    C types; None if it cannot be read."""
    doc = (getattr(fn, "__doc__", None) or "").lstrip()
    m = re.match(r"[\w.]+\((.*?)\)(\s*->.*)?$", doc.splitlines()[0] if doc else "")
    if not m:
        return None
    params = []
    for part in filter(None, (p.strip() for p in m.group(1).split(","))):
        head, eq, default = part.partition("=")
        words = head.split()
        if not words:
            return None
        # "Py_ssize_t axis1", "int axis=-1", "_ndarray_base out=None": the name is last.
        params.append(words[-1] + (eq + default.strip() if eq else ""))
    if params and params[0] == "self":
        params = params[1:]
    namespace = {}
    try:
        exec(f"def f({', '.join(params)}): pass", {}, namespace)
        return inspect.signature(namespace["f"])
    except Exception:
        return None


def _cupy_signature(where, name):
    """The signature CuPy gives ``cupy.<where>.<name>``, for checking the arguments
    of a call; None when it cannot be known (no CuPy, no signature)."""
    key = (where, name)
    if key not in _SIGNATURES:
        fn = _cupy_object(where, name)
        sig = None
        if fn is not None and type(fn).__name__ == "ufunc":
            nin, nout = fn.nin, fn.nout
            sig = inspect.Signature(
                [inspect.Parameter(f"x{i}", inspect.Parameter.POSITIONAL_ONLY)
                 for i in range(nin)]
                + [inspect.Parameter(f"out{i}", inspect.Parameter.POSITIONAL_ONLY, default=None)
                   for i in range(nout)]
                + [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=None)
                   for k in _UFUNC_KEYWORDS])
        elif fn is not None:
            try:
                sig = inspect.signature(fn)
                if where == "ndarray" and next(iter(sig.parameters), None) == "self":
                    sig = sig.replace(parameters=list(sig.parameters.values())[1:])
            except (TypeError, ValueError):   # a Cython method: read its docstring
                sig = _docstring_signature(fn)
        _SIGNATURES[key] = sig
    return _SIGNATURES[key]


def _check_arguments(where, name, args, kwargs, label):
    """Refuse a call that CuPy's ``cupy.<where>.<name>`` would refuse: a keyword it
    does not take (NumPy's ``where=``, ``initial=``, ``order=``...) or too many
    positional arguments.  NumPy underneath would accept them."""
    sig = _cupy_signature(where, name)
    if sig is None:
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"strict backend: {label}{sig} in cupy {_cupy_module().__version__} "
                        f"refuses these arguments ({e}); NumPy takes them, CuPy does "
                        f"not") from None


def _site():
    """Where a synchronisation came from: the innermost frames outside this file."""
    frame, where = sys._getframe(1), []
    while frame is not None and len(where) < 3:
        path = frame.f_code.co_filename
        if os.path.abspath(path) != _HERE:
            where.append(f"{os.path.basename(path)}:{frame.f_lineno} {frame.f_code.co_name}")
        frame = frame.f_back
    return " <- ".join(where)


# ---- the array --------------------------------------------------------------------
def _wrap(value, device):
    """NumPy results -> strict arrays of ``device`` (scalars become 0-d arrays)."""
    if isinstance(value, np.ndarray):
        return StrictArray(value, device)
    if isinstance(value, np.generic):
        return StrictArray(np.asarray(value), device)
    if isinstance(value, tuple):
        return tuple(_wrap(v, device) for v in value)
    if isinstance(value, list):
        return [_wrap(v, device) for v in value]
    return value


def _describe(a):
    if isinstance(a, StrictArray):
        return f"a {a._device.device} array of shape {a.shape}"
    return f"a host numpy.ndarray of shape {a.shape}"


class _CupyFlags:
    """The flags of a CuPy array: no ``writeable`` (CuPy arrays are always writeable)."""

    def __init__(self, flags):
        self.c_contiguous = flags.c_contiguous
        self.f_contiguous = flags.f_contiguous
        self.owndata = flags.owndata

    def __getitem__(self, name):
        if name.upper() not in ("C_CONTIGUOUS", "F_CONTIGUOUS", "OWNDATA"):
            raise KeyError(f"{name} is not defined for cupy.ndarray.flags")
        return getattr(self, name.lower())


class StrictArray:
    """A NumPy array on a strict device; behaves as a CuPy array where it matters."""

    __slots__ = ("_a", "_device", "_checked_sizes")
    __array_ufunc__ = None   # numpy ufuncs and ndarray operators refuse us
    __hash__ = None

    def __init__(self, array, device):
        self._a = array
        self._device = device
        self._checked_sizes = ()

    # ---- no way to the host but the explicit ones -----------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT_CONVERSION)

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(f"numpy.{func.__name__} was called on a {self._device.device} array; "
                        f"device arrays go through the backend's xp namespace")

    def get(self, stream=None, order="C", out=None, blocking=True):
        """CuPy's explicit device -> host copy (counted as a synchronisation)."""
        self._device._sync("get()")
        return np.array(self._a, order=order, copy=True)

    def set(self, array):
        """CuPy's explicit host -> device copy into this array."""
        if not isinstance(array, np.ndarray):
            raise TypeError(f"set() takes a host numpy.ndarray, got {type(array).__name__}")
        if array.shape != self.shape:
            raise ValueError(f"set(): shape {array.shape} does not match {self.shape}")
        self._device.upload_count += 1
        self._a[...] = array

    def item(self, *args):
        self._device._sync("item()")
        return self._a.item(*args)

    def tolist(self):
        self._device._sync("tolist()")
        return self._a.tolist()

    def _scalar(self, kind):
        if self._a.size != 1 and kind == "bool":
            raise ValueError(f"The truth value of an array with more than one element is "
                             f"ambiguous (shape {self.shape})")
        if self._a.size != 1:
            raise TypeError(f"only arrays of size 1 can be converted to Python scalars, "
                            f"got shape {self.shape}")
        self._device._sync(f"{kind}()")
        return self._a.reshape(()).item()

    def __float__(self):
        return float(self._scalar("float"))

    def __int__(self):
        return int(self._scalar("int"))

    def __complex__(self):
        return complex(self._scalar("complex"))

    def __bool__(self):
        return bool(self._scalar("bool"))

    def __repr__(self):
        self._device._sync("repr()")
        return (f"strict_array({np.array2string(self._a, separator=', ')}, "
                f"device={self._device.device!r})")

    def __str__(self):
        self._device._sync("str()")
        return str(self._a)

    def __format__(self, spec):
        self._device._sync("format()")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __reduce__(self):
        raise TypeError(f"a {self._device.device} array cannot be pickled; copy it to the "
                        f"host with .get() first")

    def __copy__(self):
        return StrictArray(self._a.copy(), self._device)

    def __deepcopy__(self, memo):
        return StrictArray(self._a.copy(), self._device)

    # ---- facts (no synchronisation) ---------------------------------------------------
    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    dtype = property(lambda self: self._a.dtype)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: _CupyFlags(self._a.flags))
    device = property(lambda self: self._device.device)
    T = property(lambda self: StrictArray(self._a.T, self._device))
    base = property(lambda self: (None if self._a.base is None
                                  else _wrap(self._a.base, self._device)))

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    # ---- methods: NumPy's, re-wrapped ----------------------------------------------------
    _REFUSED = {
        "data": "the host buffer of a device array is not reachable (CuPy's .data is a "
                "device pointer)",
        "ctypes": "no host pointer", "flat": "no flat iterator over device data",
        "tofile": "write host copies", "dump": "write host copies",
        "dumps": "write host copies", "tobytes": "copy to the host with .get() first",
        "setflags": "CuPy arrays have no setflags", "resize": "CuPy has no in-place resize",
        "to_device": "move tensors with Tensor.to()",
    }

    def __getattr__(self, name):
        if name.startswith("_"):
            # __array_interface__, __array_struct__, __dlpack__, ... would hand
            # NumPy the host buffer behind our back.
            raise AttributeError(f"strict array has no attribute {name!r}")
        if name in self._REFUSED:
            raise AttributeError(f"strict array: .{name} is refused: {self._REFUSED[name]}")
        if not _cupy_has("ndarray", name):
            raise AttributeError(f"cupy.ndarray has no attribute {name!r}")
        attr = getattr(self._a, name)
        device = self._device
        if not callable(attr):
            return _wrap(attr, device)

        def method(*args, **kwargs):
            _check_arguments("ndarray", name, args, kwargs, f"cupy.ndarray.{name}")
            if name not in _VIEW_METHODS:
                device._launch(f"ndarray.{name}")
            args, kwargs = device._unwrap((args, kwargs), f"ndarray.{name}")
            if name == "nonzero":  # the output size lives on the device
                device._sync("ndarray.nonzero")
            result = attr(*args, **kwargs)
            if name in _VIEW_METHODS and not np.may_share_memory(result, self._a):
                device._launch(f"ndarray.{name} (a copy)")   # reshape of a strided array
            return _wrap(result, device)
        method.__name__ = name
        return method

    # ---- indexing ------------------------------------------------------------------------
    def __getitem__(self, key):
        key, masked = self._device._key(key, self._a.shape, "indexing")
        if any(isinstance(k, np.ndarray) for k in (key if isinstance(key, tuple) else (key,))):
            self._device._launch("advanced indexing")   # a gather kernel; slices are views
        if masked:
            self._device._sync("boolean-mask indexing")  # CuPy needs the count of Trues
        return _wrap(self._a[key], self._device)

    def __setitem__(self, key, value):
        self._device._launch("assignment")
        key, masked = self._device._key(key, self._a.shape, "assignment")
        value = self._device._unwrap(value, "assignment")
        if masked:
            self._device._sync("boolean-mask assignment")
        if any(isinstance(k, np.ndarray) and k.dtype != bool
               for k in (key if isinstance(key, tuple) else (key,))):
            targets = np.arange(self._a.size).reshape(self._a.shape)[key]
            if np.unique(targets).size != targets.size:
                raise IndexError(
                    "strict backend: assignment a[index] = v through repeated indices; "
                    "on CuPy which write wins is undefined (a[index] += v does not "
                    "accumulate either): use backend.scatter_add or unique indices")
        self._a[key] = value


# Methods that give a view (no allocation, no kernel), as CuPy's do for the
# cases the core uses; every other method may launch on the current device.
_VIEW_METHODS = {"reshape", "transpose", "swapaxes", "view", "squeeze"}


def _binary(op, reflected=False):
    def method(self, other):
        self._device._launch(f"operator {op.__name__}")
        other = self._device._operand(other, op.__name__)
        if other is NotImplemented:
            return NotImplemented
        result = op(other, self._a) if reflected else op(self._a, other)
        return _wrap(result, self._device)
    return method


def _inplace(op):
    def method(self, other):
        self._device._launch(f"operator {op.__name__}")
        other = self._device._operand(other, op.__name__)
        if other is NotImplemented:
            return NotImplemented
        op(self._a, other)  # numpy's in-place operators write into self._a
        return self
    return method


def _unary(op):
    def method(self):
        self._device._launch(f"operator {op.__name__}")
        return _wrap(op(self._a), self._device)
    return method


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul",
              "and", "or", "xor", "lshift", "rshift"):
    _op = getattr(operator, _name if _name not in ("and", "or") else _name + "_")
    setattr(StrictArray, f"__{_name}__", _binary(_op))
    setattr(StrictArray, f"__r{_name}__", _binary(_op, reflected=True))
    if _name != "matmul":  # CuPy has no in-place @=
        setattr(StrictArray, f"__i{_name}__", _inplace(getattr(operator, f"i{_name}")))
for _name in ("lt", "le", "eq", "ne", "gt", "ge"):
    setattr(StrictArray, f"__{_name}__", _binary(getattr(operator, _name)))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(StrictArray, f"__{_name}__", _unary(getattr(operator, _name)))


# ---- the xp namespace -------------------------------------------------------------------
class _Ufunc:
    """A NumPy ufunc on strict arrays; like CuPy's, but without ``at``."""

    def __init__(self, device, ufunc):
        self._device, self._ufunc = device, ufunc
        self.__name__ = ufunc.__name__
        self.nin, self.nout = ufunc.nin, ufunc.nout

    def _call(self, fn, label, args, kwargs):
        method = label.rsplit(".", 1)[1] if label.count(".") > 1 else None
        _check_arguments(f"ufunc:{self.__name__}" if method else "",
                         method or self.__name__, args, kwargs, f"cupy.{label[3:]}")
        self._device._launch(label)
        args, kwargs = self._device._unwrap((args, kwargs), label)
        return _wrap(fn(*args, **kwargs), self._device)

    def __call__(self, *args, **kwargs):
        return self._call(self._ufunc, f"xp.{self.__name__}", args, kwargs)

    def reduce(self, *args, **kwargs):
        return self._call(self._ufunc.reduce, f"xp.{self.__name__}.reduce", args, kwargs)

    def accumulate(self, *args, **kwargs):
        return self._call(self._ufunc.accumulate, f"xp.{self.__name__}.accumulate", args,
                          kwargs)

    def outer(self, *args, **kwargs):
        return self._call(self._ufunc.outer, f"xp.{self.__name__}.outer", args, kwargs)

    def __getattr__(self, name):
        if name == "at":
            raise AttributeError(
                f"strict backend: xp.{self.__name__}.at is not part of the backend contract "
                f"(older CuPy releases lack it); use "
                f"backend.scatter_add(a, index, values)")
        raise AttributeError(f"ufunc {self.__name__!r} has no attribute {name!r}")


class _Namespace:
    """``xp`` (and its submodules): NumPy's functions on strict arrays, CuPy's names."""

    # Functions whose output size depends on the data: CuPy synchronises.
    _DATA_DEPENDENT = {"nonzero", "argwhere", "flatnonzero", "unique", "extract",
                       "compress"}
    # CuPy returns 0-d arrays where NumPy returns Python bools.
    _BOOL_RESULTS = {"array_equal", "array_equiv", "allclose"}
    # Views and facts: no allocation, no kernel, so no current device needed.
    _NO_LAUNCH = {"broadcast_to", "moveaxis", "expand_dims", "squeeze", "transpose",
                  "swapaxes", "may_share_memory", "shares_memory", "result_type", "can_cast",
                  "ndim", "shape", "size", "isscalar", "iscomplexobj"}
    _SUBMODULES = {"": ("linalg", "fft", "lib"), "lib": ("stride_tricks",)}

    def __init__(self, device, module=np, path=""):
        self._device, self._module, self._path = device, module, path

    def __repr__(self):
        return f"<strict xp{'.' + self._path if self._path else ''} of {self._device.device!r}>"

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = self._lookup(name)
        setattr(self, name, value)  # cache
        return value

    def _lookup(self, name):
        device, where = self._device, f"xp.{self._path + '.' if self._path else ''}{name}"
        if name == "random" and not self._path:
            raise AttributeError("strict backend: xp.random is refused: draw random numbers "
                                 "on the host with tinygrad_cnn.get_rng() so that a seed gives "
                                 "the same numbers on every device")
        if not self._path and name in ("ndarray",):
            return StrictArray
        if not self._path and name in ("asarray", "array", "asanyarray"):
            return getattr(device, "_" + ("asarray" if name == "asanyarray" else name))
        if not self._path and name == "asnumpy":
            return device._asnumpy
        if not self._path and name == "get_array_module":
            return lambda *args: self
        if self._path == "lib.stride_tricks" and name == "as_strided":
            return device._as_strided
        if name in self._SUBMODULES.get(self._path, ()):
            path = f"{self._path}.{name}" if self._path else name
            return _Namespace(device, getattr(self._module, name), path)
        if not _cupy_has(self._path, name):
            raise AttributeError(f"strict backend: cupy has no {where} (the installed CuPy "
                                 f"lacks it), so the core may not use it")
        value = getattr(self._module, name)  # AttributeError if NumPy lacks it too
        if isinstance(value, np.ufunc):
            return _Ufunc(device, value)
        if isinstance(value, type) or not callable(value):
            return value  # dtypes and scalar types (cupy.float32 is numpy.float32), constants
        data_dependent = name in self._DATA_DEPENDENT
        bool_result = name in self._BOOL_RESULTS
        launches = name not in self._NO_LAUNCH

        def function(*args, **kwargs):
            _check_arguments(self._path, name, args, kwargs, f"cupy.{where[3:]}")
            if launches:
                device._launch(where)
            args, kwargs = device._unwrap((args, kwargs), where)
            if data_dependent or (name == "where" and len(args) + len(kwargs) == 1):
                device._sync(where)
            result = value(*args, **kwargs)
            if bool_result:
                result = np.asarray(result)
            return _wrap(result, device)
        function.__name__ = name
        return function


# ---- the backend ------------------------------------------------------------------------
class StrictBackend(Backend):
    """A NumPy-backed device that enforces CuPy's rules and counts synchronisations.

    Deferred checks work as on CuPy (``defer_checks = True``), so tests can
    prove a training step never waits for the device.
    """

    defer_checks = True
    mask_with_arrays = False   # as CuPy: one boolean array and no other array

    def __init__(self, device="strict"):
        self.device = device
        self.xp = _Namespace(self)
        self.sync_count = 0
        self.upload_count = 0
        self._logs = []

    # ---- the current device ------------------------------------------------------------------
    @contextlib.contextmanager
    def context(self):
        """Make this device current (as ``with cupy.cuda.Device(i):``)."""
        before = _current()
        _THREAD.current = self
        try:
            yield
        finally:
            _THREAD.current = before

    def _launch(self, where):
        """Refuse work on this device's arrays while another device is current."""
        current = _current() or STRICT
        if current is not self:
            raise RuntimeError(
                f"strict backend: {where} on {self.device} while {current.device} is the "
                f"current device: CuPy would allocate or launch on {current.device} (or fail "
                f"without peer access); run the array code inside "
                f"get_backend({self.device!r}).context()")

    # ---- bookkeeping -----------------------------------------------------------------------
    def _sync(self, what):
        self.sync_count += 1
        if self._logs:
            entry = f"{what} at {_site()}"
            for log in self._logs:
                log.append(entry)

    @contextlib.contextmanager
    def track_syncs(self):
        """``with backend.track_syncs() as log:``: ``log`` lists each synchronisation."""
        log = []
        self._logs.append(log)
        try:
            yield log
        finally:
            self._logs.remove(log)

    def _own(self, a, where):
        """``a``'s NumPy array, if ``a`` is an array of this device."""
        if a._device is not self:
            raise TypeError(f"{where}: {_describe(a)} cannot be mixed with arrays on "
                            f"{self.device}; move it explicitly")
        return a._a

    def _unwrap(self, value, where):
        """Strict arrays -> NumPy arrays, through tuples, lists and dicts; host arrays refused."""
        if isinstance(value, StrictArray):
            return self._own(value, where)
        if isinstance(value, np.ndarray):
            raise TypeError(f"{where}: mixing host and device arrays: got {_describe(value)} "
                            f"on {self.device}; transfer it with backend.asarray first")
        if isinstance(value, (tuple, list)):
            return type(value)(self._unwrap(v, where) for v in value)
        if isinstance(value, dict):
            return {k: self._unwrap(v, where) for k, v in value.items()}
        return value

    def _operand(self, other, op):
        if isinstance(other, (StrictArray, np.ndarray)):
            return self._unwrap(other, f"operator {op}")
        if isinstance(other, _SCALARS):
            return other
        return NotImplemented

    def _key(self, key, shape, where):
        """Unwrap an index; refuse host arrays; range-check integer arrays.

        Returns the NumPy index and whether it holds a boolean mask.  An
        out-of-range integer index raises unless ``check_index`` vetted
        that array for that axis size: then it wraps around, as CuPy does,
        and the deferred check reports it at the next transfer.
        """
        parts = key if isinstance(key, tuple) else (key,)
        arrays = []
        for p in parts:
            if isinstance(p, StrictArray):
                arrays.append((p, self._own(p, where)))
            elif isinstance(p, np.ndarray):
                raise TypeError(f"{where}: mixing host and device arrays: an index is "
                                f"{_describe(p)}; transfer it with backend.asarray first")
            elif isinstance(p, list):
                arrays.append((None, np.asarray(p)))
            else:
                arrays.append((None, p))
        is_array = [isinstance(a, np.ndarray) for _, a in arrays]
        masked = any(ok and a.dtype == bool for ok, (_, a) in zip(is_array, arrays))
        if masked and sum(is_array) > 1:
            raise ValueError(f"strict backend: {where} combines a boolean mask with other "
                             f"array indices; CuPy supports one boolean array and no other "
                             f"array in an index")
        # Axes each part consumes: a mask its ndim; None, ... and a bare bool none.
        used = sum(a.ndim if ok and a.dtype == bool else 1
                   for ok, (_, a) in zip(is_array, arrays)
                   if a is not None and a is not Ellipsis and not isinstance(a, (bool, np.bool_)))
        dim, out = 0, []
        for ok, (wrapper, a) in zip(is_array, arrays):
            if a is None or isinstance(a, (bool, np.bool_)):
                out.append(a)
                continue
            if a is Ellipsis:
                dim += len(shape) - used
                out.append(a)
                continue
            if ok and a.dtype == bool:
                dim += a.ndim
            elif ok and a.dtype.kind in "iu" and dim < len(shape) and a.size:
                n = shape[dim]
                if n and ((a < -n) | (a >= n)).any():
                    if wrapper is None or n not in wrapper._checked_sizes:
                        bad = int(a[(a < -n) | (a >= n)].ravel()[0])
                        raise IndexError(
                            f"strict backend: index {bad} is out of range for axis {dim} of "
                            f"size {n} in {where}; CuPy would silently wrap it around: "
                            f"bound-check indices with backend.check_index first")
                    a = a % n  # what CuPy computes
                dim += 1
            else:
                dim += 1
            out.append(a)
        out = tuple(out)
        return (out if isinstance(key, tuple) else out[0]), masked

    # ---- xp entry points -----------------------------------------------------------------------
    def _asarray(self, data, dtype=None, order=None, blocking=False):
        """Explicit host -> device transfer; device data stays (another device is refused)."""
        self._launch("xp.asarray")
        if isinstance(data, StrictArray):
            a = self._own(data, "xp.asarray")
            return data if dtype is None or a.dtype == dtype else StrictArray(
                a.astype(dtype), self)
        if isinstance(data, (list, tuple)) and _holds_strict(data):
            raise TypeError("xp.asarray: a list of device arrays; use xp.stack")
        self.upload_count += 1
        return StrictArray(np.array(data, dtype=dtype, order=order or "K"), self)

    def _array(self, data, dtype=None, copy=True, order="K", ndmin=0):
        self._launch("xp.array")
        if isinstance(data, StrictArray):
            a = self._own(data, "xp.array")
            return StrictArray(np.array(a, dtype=dtype, copy=copy, order=order, ndmin=ndmin),
                               self)
        if isinstance(data, (list, tuple)) and _holds_strict(data):
            raise TypeError("xp.array: a list of device arrays; use xp.stack")
        self.upload_count += 1
        return StrictArray(np.array(data, dtype=dtype, order=order, ndmin=ndmin), self)

    def _asnumpy(self, a, stream=None, order="C", out=None, blocking=True):
        if isinstance(a, StrictArray):
            self._sync("xp.asnumpy")
            return np.array(self._own(a, "xp.asnumpy"), order=order, copy=True)
        return np.asarray(a, order=order)

    def _as_strided(self, x, shape=None, strides=None):
        """CuPy's signature (no ``writeable``); the view is read-only here, so a
        write through overlapping windows fails instead of racing."""
        a = self._own(x, "as_strided")
        return StrictArray(np.lib.stride_tricks.as_strided(a, shape=shape, strides=strides,
                                                           writeable=False), self)

    # ---- the Backend interface ----------------------------------------------------------------
    def asarray(self, data, dtype=None):
        with self.context():   # as CupyBackend.asarray
            return self._asarray(data, dtype=dtype)

    def to_numpy(self, a):
        self._sync("to_numpy")
        return super().to_numpy(a)

    def _to_host(self, a):
        if isinstance(a, StrictArray):
            return np.array(self._own(a, "to_numpy"), copy=True)
        if isinstance(a, np.ndarray):  # as cupy.asnumpy: host data passes through
            return a
        raise TypeError(f"to_numpy: expected an array of {self.device}, got "
                        f"{type(a).__name__}")

    def is_array(self, a):
        return isinstance(a, StrictArray) and a._device is self

    def is_writeable(self, a):
        # The backend knows its own arrays; library code asking a.flags.writeable
        # would fail on CuPy, whose flags have no such entry (see _CupyFlags).
        # CupyBackend's rule, so a broadcast view is copied before a write here
        # as there; a write into any other read-only view (as_strided windows)
        # still fails, in NumPy.
        self._own(a, "is_writeable")
        return is_writeable_strides(a)

    def as_strided(self, a, shape, strides):
        return self._as_strided(a, shape=shape, strides=strides)

    def read_only(self, a):
        # CuPy arrays cannot refuse writes; the NumPy array under a shared
        # constant (Backend.constant) does here, so a write into one fails.
        self._own(a, "read_only").flags.writeable = False
        return a

    # What cupyx.scatter_add (cupy.add.at) adds through an integer index array in
    # CuPy 14: the dtypes of CUDA's atomicAdd.  Other targets (int8, int16, uint8,
    # uint16, bool, complex) raise TypeError there; slices and masks take any.
    SCATTER_ADD_DTYPES = frozenset(np.dtype(t) for t in (
        np.int32, np.int64, np.uint32, np.uint64, np.float16, np.float32, np.float64))

    def scatter_add(self, a, index, values):
        self._launch("scatter_add")
        target = self._own(a, "scatter_add")
        key, masked = self._key(index, target.shape, "scatter_add")
        if target.dtype not in self.SCATTER_ADD_DTYPES and any(
                isinstance(k, np.ndarray) and k.dtype != bool
                for k in (key if isinstance(key, tuple) else (key,))):
            raise TypeError(f"strict backend: scatter_add into a {target.dtype} array through "
                            f"an integer index array; cupyx.scatter_add (cupy.add.at) only "
                            f"supports int32, int64, float16, float32, float64, uint32, "
                            f"uint64 as data type")
        if masked:   # CuPy counts the mask's true entries on the host first
            self._sync("boolean-mask scatter_add")
        np.add.at(target, key, self._unwrap(values, "scatter_add"))

    def check_index(self, index, size, where=""):
        super().check_index(index, size, where)
        if isinstance(index, StrictArray):
            index._checked_sizes += (size,)

    def synchronize(self):
        self._sync("synchronize")
        super().synchronize()

    def describe(self):
        return {"device": self.device,
                "array module": f"strict test backend over numpy {np.__version__}"}


def _holds_strict(seq):
    return any(isinstance(v, StrictArray) or (isinstance(v, (list, tuple)) and _holds_strict(v))
               for v in seq)


_THREAD = threading.local()   # .current: the strict device a context made current


def _current():
    """The strict device made current in this thread (None: "strict", as CuPy's 0)."""
    return getattr(_THREAD, "current", None)


STRICT = StrictBackend("strict")
STRICT2 = StrictBackend("strict2")
register_backend("strict", STRICT)
register_backend("strict2", STRICT2)
