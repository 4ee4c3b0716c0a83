"""``Tensor``: an array of some backend plus what autograd needs to know.

The differentiable ops live in :mod:`tinygrad_cnn.ops` as ``Function``
classes; the methods here only convert arguments and call them.

Where to read: ``class Tensor`` (below the conversion helpers that open the
file), first its "autograd" section (``backward`` hands the graph to
:func:`tinygrad_cnn.autograd.backprop`), then "arithmetic" and the sections
after it, where each method is one ``ops.X.apply`` call or a few.  The
in-place operators and item assignment, the argument helpers after the
class and the factories at the end are plumbing: conversions and checks.
"""
from __future__ import annotations

import collections
import copy
import functools
import itertools
import numbers
import operator
import warnings

import numpy as np

from . import autograd
from ._checks import (
    as_scalar, check_cast_fits, check_fill_value, check_finite, check_flag, check_int,
    check_number, check_seed, check_value_fits, fits, int_bounds, int_list, is_int, is_real,
    range_error, shown_int, shown_value)
from .backend import Backend, DeviceError, get_backend, canonical_device, _BACKENDS
from ._porting import TENSOR_HINTS, ElementCount, add_missing_names, is_missing

float16 = np.dtype("float16")
float32 = np.dtype("float32")
float64 = np.dtype("float64")
int32 = np.dtype("int32")
int64 = np.dtype("int64")
bool_ = np.dtype("bool")

_SUPPORTED_KINDS = "fiub"  # float, signed/unsigned int, bool


def _as_dtype(dtype):
    if dtype is None:
        return None
    if isinstance(dtype, Tensor):
        # NumPy would read any object with a .dtype as that dtype, dropping the
        # tensor's device without a word.
        raise TypeError(f"dtype must be a dtype such as tg.float32 or 'float64', got a "
                        f"tensor of shape {dtype.shape}; pass its .dtype (or use .to(other) "
                        f"for its device and dtype)")
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"unknown dtype {dtype!r}") from e
    if dt.kind not in _SUPPORTED_KINDS:
        raise TypeError(f"unsupported dtype {dt}; expected a float, integer or bool dtype")
    return dt


def _find_backend_of(data):
    for backend in list(_BACKENDS.values()):
        if type(backend).is_array is not Backend.is_array and backend.is_array(data):
            return backend
    return None


def _to_array(data, backend, dtype):
    """Convert user data to an array of ``backend`` with tensor dtype rules.

    Python data (numbers, nested sequences; NumPy scalars count as numbers)
    must fit an integer ``dtype``; an array or a tensor is cast as ``astype``
    casts it.  PyTorch's ``torch.tensor`` draws the same line.
    """
    given = data
    if isinstance(data, Tensor):
        data = data.data
    src = None if isinstance(data, (np.ndarray, np.generic)) else _find_backend_of(data)
    if src is not None and src is not backend:
        data = src.to_numpy(data)  # explicit device -> host transfer
    # A tensor owns a copy of its data (as torch.tensor), so later writes to the
    # caller's array and in-place updates of the tensor never reach each other.
    if src is backend:
        with backend.context():
            arr = data.copy()
    else:
        try:
            arr = np.array(data)  # copies, keeping the memory layout (order="K")
        except ValueError as e:
            raise ValueError(f"cannot make a tensor from this {type(data).__name__}: nested "
                             f"sequences must be rectangular, every row of one length "
                             f"({e})") from None
        except TypeError:
            device = _device_inside(data)
            if device is None:
                raise
            # NumPy would read each element from the device, one synchronisation each,
            # and is refused: say how to keep the values on the device instead.
            raise TypeError(f"cannot make a tensor from a {type(data).__name__} holding "
                            f"tensors or arrays on {device}: join them there with "
                            f"tg.stack(...) (and move the result with .to() if needed), or "
                            f"read each one with .item()") from None
        if (dtype is None and arr.dtype == np.float64
                and not isinstance(data, (np.ndarray, np.generic))):
            dtype = float32  # Python floats become float32, as in PyTorch
        if arr.dtype.kind == "O":
            arr = _big_ints(arr, dtype)
        if arr.dtype.kind not in _SUPPORTED_KINDS:
            raise TypeError(f"cannot make a tensor from data of dtype {arr.dtype}; "
                            f"expected numbers (float, int or bool)")
    if dtype is not None and arr.dtype != dtype:
        if dtype.kind in "iu" and src is None and not isinstance(given, (Tensor, np.ndarray)):
            # Python numbers must fit an explicit integer dtype, not wrap around.
            check_cast_fits(arr, dtype, "tensor")
        with backend.context():   # a device array's copy stays on its device
            arr = arr.astype(dtype)
    return arr if src is backend else backend.asarray(arr)


def _device_inside(data):
    """The device of the first tensor or device array, not on the host, inside nested
    lists and tuples ``data``; None if there is none."""
    if isinstance(data, Tensor):
        return None if data.device == "cpu" else data.device
    if isinstance(data, (list, tuple)):
        return next((d for d in map(_device_inside, data) if d is not None), None)
    backend = None if isinstance(data, np.ndarray) else _find_backend_of(data)
    return None if backend is None else backend.device


def _big_ints(arr, dtype):
    """An object array that holds Python ints beyond 64 bits (NumPy keeps them as
    objects): as float64 for a float or bool ``dtype``, as PyTorch takes them;
    refused for any other.  Other object arrays are returned unchanged."""
    values = list(arr.flat)
    if not values or not all(isinstance(v, numbers.Real) for v in values):
        return arr
    big = next((v for v in values if is_int(v) and not (fits(v, int64) or fits(v, np.uint64))),
               None)
    if big is None:
        return arr
    if dtype is None or dtype.kind not in "fb":
        raise OverflowError(f"cannot make a tensor from the Python int {shown_int(big)}: "
                            f"integer tensors hold at most 64 bits; use a float dtype")
    try:
        return arr.astype(float64)
    except OverflowError:
        raise OverflowError(f"cannot make a tensor from the Python int {shown_int(big)}: it "
                            f"is too large for any float dtype (float64 ends near "
                            f"1.8e308)") from None


def _subtrahends(a, b):
    """(a, b) for a - b; two bool tensors have no difference (NumPy's TypeError, worded
    as PyTorch's advice)."""
    if a.dtype == bool_ and b.dtype == bool_:
        raise TypeError("subtraction, the - operator, with two bool tensors is not "
                        "supported; use the ^ operator (logical xor) or ~ (logical not) "
                        "instead")
    return a, b


def _device_and_dtype(device, dtype):
    """The arguments of ``to()`` -> ``(device or None, numpy dtype or None)``.

    As PyTorch's ``to(dtype)``, a dtype may come first: ``to(float64)`` and
    ``to("float64")`` cast, ``to("cuda")`` moves.  As PyTorch's ``to(other)``,
    a tensor gives both its device and its dtype.
    """
    if isinstance(device, Tensor):
        # Checked first: NumPy reads any object with a .dtype as that dtype, so the
        # tensor would otherwise pass as a dtype and its device would be ignored.
        if dtype is not None:
            raise TypeError(f"to(other): the tensor gives the device and the dtype "
                            f"({device.device}, {device.dtype}); pass no dtype with it "
                            f"(got dtype={dtype!r})")
        return device.device, device.dtype
    if device is not None and dtype is None and not isinstance(device, (str, Backend)):
        device, dtype = None, device  # to(float64)
    if isinstance(device, str) and dtype is None:
        try:
            canonical_device(device)
        except DeviceError as e:
            try:  # to("float64")
                dtype, device = _as_dtype(device), None
            except TypeError:
                raise DeviceError(f"to(): {e} (nor is {device!r} a dtype)") from None
    return device, _as_dtype(dtype)


def common_backend(tensors, op_name="op"):
    """The one backend shared by ``tensors``; an error naming both if mixed."""
    backend = tensors[0]._backend
    for t in tensors[1:]:
        if t._backend is not backend:
            raise DeviceError(f"{op_name}: tensors are on different devices: "
                              f"{backend.device} and {t._backend.device}; move them "
                              f"to one device with .to(device)")
    return backend


def check_devices(op, x, *named):
    """Each ``(name, tensor)`` of ``named`` (a None tensor: not given) on ``x``'s device.

    For ops with named tensor arguments (``linear``'s w and b, ``clip``'s bounds):
    checked before the op, whose own error would name an inner op (``MatMul`` for
    linear) and two devices without saying which argument is where.
    """
    for name, t in named:
        if t is not None and t._backend is not x._backend:
            raise DeviceError(f"{op}: x is on {x.device} but {name} is on {t.device}; move "
                              f"them to one device with .to(device)")


@functools.lru_cache(maxsize=None)
def _inplace_result(op, dtype, other_dtype):
    """The dtype of ``op`` on the two dtypes if a ``dtype`` tensor cannot hold it in
    place (NumPy's same_kind rule), else None.  Found by running the ufunc on one
    element: NumPy's promotion differs per ufunc (true_divide of ints is float)."""
    result = np.result_type(getattr(np, op)(np.ones(1, dtype), np.ones(1, other_dtype)))
    return None if np.can_cast(result, dtype, casting="same_kind") else result


class _FalseByDefault:
    """The default of ``keepdims`` and of its alias ``keepdim``: False, but told apart
    from a False passed explicitly, so that passing both names is refused (NumPy's
    ``_NoValue`` does the same for its own defaults)."""
    __slots__ = ()

    def __repr__(self):   # help() shows the signature as keepdims=False
        return "False"


_NOT_GIVEN = _FalseByDefault()

# What ``x.max(dim=...)`` and ``x.min(dim=...)`` return, as PyTorch's do.
ValuesIndices = collections.namedtuple("ValuesIndices", ["values", "indices"])


def _float32_for_half(method):
    """Run a reduction of a float16 tensor in float32 and cast the result back, as
    PyTorch does: the sum behind a mean of a few thousand ordinary float16 values
    already exceeds float16's largest value (65504)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.dtype != float16:
            return method(self, *args, **kwargs)
        return method(self.astype(float32), *args, **kwargs).astype(float16)
    return wrapper


class Tensor:
    """An n-dimensional array with reverse-mode automatic differentiation.

    ``Tensor(data, requires_grad=False, dtype=None, device=None)``; see
    :func:`tensor`.  ``.grad`` is a Tensor once a backward pass reaches it.

    Dtypes: two tensors combine by NumPy's promotion rules; a Python number
    takes the tensor's dtype unless that would change its value: then a
    float is float64 (``x * 0.5`` and ``x / 2`` on an integer or bool tensor
    are float64, by NumPy's rules, where PyTorch gives float32), an int
    with a bool tensor int64, and an int beyond an integer tensor's range
    is refused, as by NumPy (a comparison takes it by value); ops whose
    results are not integers (exp,
    log, sqrt, sin, cos, tanh, erf, sigmoid, leaky_relu, softmax) turn integer
    and bool tensors into float32 first, as PyTorch does; an in-place op
    refuses a result its tensor's dtype cannot hold.  Values an integer
    dtype cannot hold (NaN, infinities, out of its range) are refused
    rather than wrapped around where they enter an integer tensor as
    numbers: Python numbers given to :func:`tensor` or ``full`` with an
    integer ``dtype``, item assignment and in-place operands.  Converting
    data that already is an array or a tensor (``astype``, ``to``, and
    :func:`tensor` of an array or tensor) casts as NumPy does, as PyTorch's
    ``.to()`` does.
    """

    __array_priority__ = 1000  # numpy defers ``ndarray * Tensor`` to us
    __array_ufunc__ = None

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        if device is None and isinstance(data, Tensor):
            device = data.device
        backend = get_backend(device)
        self._init(_to_array(data, backend, _as_dtype(dtype)), backend, requires_grad)

    @classmethod
    def _make(cls, data, backend, requires_grad=False):
        """Wrap ``data`` (already an array of ``backend``) without copying or checks."""
        t = cls.__new__(cls)
        t._init(data, backend, requires_grad)
        return t

    @classmethod
    def _constant(cls, value, dtype, backend):
        """A number or a host array that ops use unchanged, as a tensor of ``backend``:
        its array is copied to the device once and shared (``Backend.constant``),
        so the tensor is read-only (an in-place op gives it a copy of its own)."""
        t = cls._make(backend.constant(value, dtype), backend)
        t._read_only = True
        return t

    def _init(self, data, backend, requires_grad):
        if isinstance(data, np.generic):
            # NumPy gives scalars for 0-d results (x.sum(), 0-d + 0-d); CuPy gives
            # 0-d arrays.  Keep arrays on every backend, so .data is always one.
            data = np.asarray(data)
        self.data = data
        self._grad = None
        if requires_grad is False:   # most tensors: skip the setter's checks
            self._requires_grad = False
        else:
            self.requires_grad = requires_grad
        self.name = None
        self._backend = backend
        self._ctx = None
        self._retains_grad = False
        # In-place writes bump this counter, shared with detach() and view results
        # (one box per memory), so backward can refuse values changed after use.
        self._version_box = [0]
        # True for a view that must not be written through: a broadcast (one
        # element seen at several places), or a view of one.  NumPy marks such
        # arrays read-only, CuPy has no such flag: the tensor keeps it.
        self._read_only = False

    # ---- facts ---------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape), doc="The size of each axis, a tuple.")
    ndim = property(lambda self: self.data.ndim, doc="The number of axes.")
    size = property(lambda self: ElementCount(self.data.size),
                    doc="The number of elements, an int (calling it, as PyTorch's "
                        "x.size(), raises a TypeError that says to use x.shape).")
    dtype = property(lambda self: self.data.dtype, doc="The ``numpy.dtype`` of the data.")
    device = property(lambda self: self._backend.device,
                      doc="The canonical device string (``'cpu'``, ``'cuda:0'``).")
    is_leaf = property(lambda self: self._ctx is None,
                       doc="True unless an op with a recorded graph made this tensor.")
    grad_fn = property(lambda self: self._ctx,
                       doc="The Function that made this tensor (None for a leaf).")
    xp = property(lambda self: self._backend.xp,
                  doc="The array module of the data (``numpy`` or ``cupy``).")

    def __dir__(self):
        # Without the PyTorch names that are here only to raise a hint (see the end
        # of this file): tab completion offers what exists.  By what the name is, not
        # by name: a subclass may define numel() itself.
        cls = type(self)
        return [name for name in super().__dir__()
                if name not in TENSOR_HINTS or not is_missing(cls, name)]

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __hash__(self):
        return id(self)

    def __deepcopy__(self, memo):
        """A copy of a leaf (data, ``requires_grad``, ``.grad``), as ``copy.deepcopy``
        makes it.  A tensor computed by ops is refused, as in PyTorch, with a message
        that says so: its graph holds modules, which cannot be copied."""
        if self._ctx is not None:
            raise RuntimeError(f"copy.deepcopy: a tensor of shape {self.shape} computed by "
                               f"ops (grad_fn=<{self._ctx.name}>) cannot be deep-copied, "
                               f"only a leaf can; copy x.detach() instead (a .grad "
                               f"assigned from an expression such as p * 1 is one too)")
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key != "_backward_hooks":   # hooks stay with the original, as in PyTorch
                new.__dict__[key] = copy.deepcopy(value, memo)
        return new

    def numpy(self):
        """A host NumPy copy of the data (a device-to-host transfer on a GPU)."""
        return np.array(self._backend.to_numpy(self.data), copy=True)

    def tolist(self):
        """The data as (nested) Python lists of numbers (a host copy)."""
        return self.numpy().tolist()

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is "
                             f"ambiguous; use .any() or .all()")
        return bool(self.item())

    def __format__(self, spec):
        """``f"{loss:.4f}"`` and ``f"{loss}"``: a 0-d tensor formats as its number (read
        from the device, as ``item()`` does), as in PyTorch; other tensors take no format
        spec, and ``f"{x}"`` is ``str(x)``."""
        if self.ndim == 0:
            return format(self.item(), spec)
        if spec:
            raise TypeError(f"format spec {spec!r} applies to a 0-d tensor (one number), got "
                            f"a tensor of shape {self.shape}; format x.item() or x.numpy()")
        return str(self)

    def __array__(self, dtype=None, copy=None):
        if self._backend.device != "cpu":
            raise TypeError(f"implicit conversion of a {self.device} tensor to a NumPy "
                            f"array is not allowed; call .numpy() to copy it to the host")
        # The tensor's memory is never handed out: a write through it would
        # bypass the version check that guards backward.  So np.asarray(t)
        # copies too, and a request for no copy at all is refused.
        if copy is False:
            raise ValueError("a Tensor does not share its memory with NumPy; use "
                             "np.asarray(t) or t.numpy(), which copy")
        return np.array(self.data, dtype=dtype, copy=True)

    def __repr__(self):
        body = np.array2string(self._backend.to_numpy(self.data), separator=", ",
                               prefix="tensor(", threshold=200)
        extras = []
        if self.size == 0 and self.ndim > 1:   # "[]" alone would hide the shape, as PyTorch
            body = "[]"
            extras.append(f"size={self.shape}")
        if self.device != "cpu":
            extras.append(f"device='{self.device}'")
        # The dtypes tensor() infers from the values shown go unsaid, as in PyTorch; with
        # no values shown only float32, the default, does.
        if self.dtype != float32 and (self.size == 0 or self.dtype not in (int64, bool_)):
            extras.append(f"dtype={self.dtype}")
        if self._ctx is not None:
            extras.append(f"grad_fn=<{self._ctx.name}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body] + extras) + ")"

    # ---- autograd ------------------------------------------------------------
    def backward(self, grad=None, retain_graph=None, create_graph=False):
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf.

        ``grad`` is the upstream gradient (d loss / d self); it may be left
        out only for a one-element tensor.  With ``create_graph=True`` the
        gradients are themselves differentiable.  The graph is freed
        afterwards unless ``retain_graph`` is true; it defaults to
        ``create_graph``, since gradients built as a graph go on using it.
        Such a ``.grad`` refers back to its leaf through that graph (a
        reference cycle): set it to None (``zero_grad``) when done, or the
        graph lives until Python's cyclic garbage collector runs; ``tg.grad``
        touches no ``.grad`` and makes no cycle.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: "
                               "no input of its graph has requires_grad=True, or its "
                               "graph was cut: by an op without a gradient (floor, ceil, "
                               "round, sign, argmax, comparisons, casts to an integer "
                               "dtype, detach()) or by "
                               "computing it under no_grad()")
        retain_graph, create_graph = _graph_flags(retain_graph, create_graph, "backward")
        grad = _upstream(self, grad, "backward")
        autograd.backprop([self], [grad], retain_graph, create_graph)

    def retain_grad(self):
        """Keep ``.grad`` for this non-leaf tensor in the next backward."""
        self._retains_grad = True
        return self

    # {handle id: hook}, made by the first register_hook: a tensor without hooks costs
    # the sweep one attribute read of this class default.
    _backward_hooks = None

    def register_hook(self, hook):
        """Call ``hook(grad)`` in every backward pass (and ``tg.grad``) that computes
        the gradient of this tensor, once that gradient is complete (every use of
        the tensor has added its share): for a tensor computed by ops, before it
        goes on to the inputs; for a leaf, before it is added to ``.grad``.

        ``hook`` returns None to keep ``grad``, or a Tensor of the same shape,
        dtype and device to use instead; it should not change ``grad`` in place
        (one gradient may be shared by several tensors).  Several hooks run in
        the order they were registered, each given what the one before returned.
        With ``create_graph=True``, ``grad`` is part of the graph, and a
        replacement built from it by tensor ops is differentiated through (one
        cut from the graph, such as ``grad.detach() * 2``, counts as a constant).
        Returns a handle whose ``remove()`` unregisters the hook.  As in PyTorch,
        the tensor must require grad, and ``copy.deepcopy`` does not copy hooks.
        """
        if not callable(hook):
            raise TypeError(f"register_hook: hook must be a function of the gradient, got "
                            f"{shown_value(hook)}")
        if not self.requires_grad:
            raise RuntimeError(f"register_hook: cannot register a hook on a tensor that does "
                               f"not require grad (shape {self.shape}, dtype {self.dtype}): "
                               f"no gradient is computed for it; set requires_grad=True on "
                               f"the leaves it is computed from (or on it, if it is a leaf) "
                               f"first")
        if self._backward_hooks is None:
            self._backward_hooks = {}
        handle = autograd.RemovableHandle(self._backward_hooks)
        self._backward_hooks[handle.id] = hook
        return handle

    def detach(self):
        """The same data, cut from the graph (in-place changes show in both, except
        on a broadcast view such as an ``expand``: its first write gives it a copy
        of its own, since one element of it stands for many)."""
        out = Tensor._make(self.data, self._backend, False)
        out._version_box, out._read_only = self._version_box, self._read_only
        return out

    @property
    def _version(self):
        return self._version_box[0]

    def _bump_version(self):
        """Record an in-place change of ``.data`` (optimisers, init, load_state_dict)."""
        self._version_box[0] += 1

    @property
    def requires_grad(self):
        """Whether ops record the graph through this tensor (floating-point tensors only;
        True or False, as in PyTorch)."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        if value is not True and value is not False:
            value = check_flag("requires_grad", value)
        if value and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients; "
                            f"this tensor has dtype {self.data.dtype}")
        self._requires_grad = value

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` in place (floating-point tensors only); returns self."""
        self.requires_grad = requires_grad
        return self

    @property
    def grad(self):
        """The gradient accumulated by backward (a Tensor), or None.

        A tensor computed by ops gets none unless it calls :meth:`retain_grad`;
        reading it then warns, as in PyTorch, since it stays None.
        """
        if self._ctx is not None and not self._retains_grad:
            warnings.warn("the .grad of a tensor that is not a leaf is not filled by "
                          "backward(); call .retain_grad() on it first if you need it, or "
                          "read the .grad of the leaf tensors", UserWarning, stacklevel=2)
        return self._grad

    @grad.setter
    def grad(self, value):
        self._grad = value

    def zero_grad(self):
        """Drop the accumulated gradient (``.grad = None``)."""
        self.grad = None

    # ---- devices and dtypes --------------------------------------------------
    def to(self, device=None, dtype=None):
        """Move to ``device`` and/or cast to ``dtype`` (differentiably):
        ``to("cuda")``, ``to("float64")``, ``to("cuda", "float64")``, or to the
        device and dtype of another tensor, ``to(other)``."""
        device, dtype = _device_and_dtype(device, dtype)
        out = self
        if dtype is not None and dtype != self.dtype:
            out = out.astype(dtype)
        if device is not None and canonical_device(device) != self.device:
            out = ops.ToDevice.apply(out, device=get_backend(device))
        return out

    def cpu(self):
        """A copy on the host (self if already there); differentiable."""
        return self.to("cpu")

    def cuda(self, index=0):
        """A copy on GPU ``cuda:index`` (self if already there); differentiable."""
        return self.to(f"cuda:{index}")

    def _floating(self):
        """This tensor if it is floating-point, else a float32 copy (for exp, log, sigmoid and
        the like, whose results are not integers; PyTorch's rule)."""
        return self if self.dtype.kind == "f" else self.astype(float32)

    def astype(self, dtype):
        """Cast to ``dtype``; differentiable between float dtypes, detached otherwise.

        As NumPy's ``astype`` and PyTorch's ``.to()``: a float becomes an integer
        by cutting towards zero; an integer outside an integer dtype's range wraps
        around, and a float outside it, NaN or an infinity gives what NumPy gives
        (with its RuntimeWarning).  Nothing is refused.
        """
        dtype = _as_dtype(dtype)
        if dtype is None:
            raise TypeError("astype: dtype must be a dtype (such as 'float32' or tg.float64), "
                            "got None")
        if dtype == self.dtype:
            return self
        if dtype.kind != "f" or self.dtype.kind != "f":
            with self._backend.context():
                return Tensor._make(self.data.astype(dtype), self._backend)
        return ops.Cast.apply(self, dtype=dtype)

    def float(self):
        """Cast to float32 (``astype(float32)``)."""
        return self.astype(float32)

    def double(self):
        """Cast to float64 (``astype(float64)``)."""
        return self.astype(float64)

    # ---- arithmetic ----------------------------------------------------------
    def _other(self, other, what="an int operand"):
        """A scalar or array operand as a tensor on this tensor's device; ``what``
        names it in the error for an int this tensor's dtype cannot hold."""
        if isinstance(other, Tensor):
            return other
        if isinstance(other, numbers.Number) and not isinstance(other, bool):
            # A Python number takes the tensor's dtype (so float32 stays float32)
            # unless that would change its value: a float with an integer
            # tensor, or any number with a bool tensor.
            if self.dtype.kind == "f" or (isinstance(other, numbers.Integral)
                                          and self.dtype.kind != "b"):
                dtype = self.dtype
                if dtype.kind in "iu" and not fits(other, dtype):
                    raise range_error(what, other, dtype,
                                      "convert the tensor first, e.g. x.astype('int64')"
                                      if dtype != int64 and fits(other, int64)
                                      else "use a float tensor")
            else:
                # NumPy's dtypes for Python numbers, so that every integer or bool
                # tensor gives what NumPy gives (float32 would make int8 * 0.5
                # float32 but int32 * 0.5 float64).
                dtype = int64 if isinstance(other, numbers.Integral) else float64
            # On the device once per (dtype, value), not copied there at every op.
            return Tensor._constant(other, dtype, self._backend)
        return Tensor(other, device=self.device)

    def __add__(self, other):
        return ops.Add.apply(self, self._other(other))

    def __radd__(self, other):
        return ops.Add.apply(self._other(other), self)

    def __sub__(self, other):
        return ops.Sub.apply(*_subtrahends(self, self._other(other)))

    def __rsub__(self, other):
        return ops.Sub.apply(*_subtrahends(self._other(other), self))

    def __mul__(self, other):
        return ops.Mul.apply(self, self._other(other))

    def __rmul__(self, other):
        return ops.Mul.apply(self._other(other), self)

    def __truediv__(self, other):
        return ops.Div.apply(self, self._other(other))

    def __rtruediv__(self, other):
        return ops.Div.apply(self._other(other), self)

    def __pow__(self, other):
        if isinstance(other, numbers.Number) and not isinstance(other, bool):
            return ops.PowConst.apply(self, exponent=other)
        return ops.Pow.apply(self, self._other(other))

    def __rpow__(self, other):
        return ops.Pow.apply(self._other(other), self)

    # In-place arithmetic changes ``.data`` and records no graph: for updates
    # such as ``w -= lr * w.grad`` inside ``tg.no_grad()``.
    def _inplace(self, other, op):
        if autograd.is_grad_enabled() and self.requires_grad:
            if not self.is_leaf:   # out += identity, as in ported residual blocks
                raise RuntimeError(
                    f"in-place {op} on a tensor that requires grad, computed in the graph "
                    f"(shape {self.shape}), is not recorded by autograd here (PyTorch "
                    f"records it): write it out of place, e.g. out = out + v instead of "
                    f"out += v (or, to update a parameter, do it inside "
                    f"`with tg.no_grad():`)")
            raise RuntimeError(
                f"in-place {op} on a tensor that requires grad would bypass autograd; "
                f"update parameters inside `with tg.no_grad():` (or write to .data)")
        other = self._other(
            other, lambda: f"in-place {op} into a tensor of dtype {self.dtype}")
        if op == "subtract":
            _subtrahends(self, other)
        if autograd.is_grad_enabled() and other.requires_grad:
            # x[i] += v comes here first (x[i] itself needs no grad): refuse it
            # as x[i] = v is refused, rather than drop v's gradient.
            raise RuntimeError(
                f"in-place {op} with an operand that requires grad would bypass autograd "
                f"(its gradient would be lost); write x = x + v (or tg.where / tg.cat), or "
                f"update inside `with tg.no_grad():`")
        name = "in-place " + op
        common_backend((self, other), name)
        shape = ops.check_broadcast(self.shape, other.shape, name)
        if shape != self.shape:
            raise ValueError(f"in-place {op}: the result would have shape {shape}, not the "
                             f"target's shape {self.shape}")
        if op == "power" and self.dtype.kind in "iu" and other.dtype.kind == "i":
            with self._backend.context():   # as x ** y: checked on the device
                self._backend.check(other.data < 0, ValueError,
                                    "in-place " + ops.integer_power_message(self.dtype))
        result = _inplace_result(op, self.dtype, other.dtype)
        if result is not None:
            raise TypeError(f"in-place {op}: the result has dtype {result}, which a {self.dtype} "
                            f"tensor cannot hold; use the out-of-place operator instead")
        # The operand is cast to the tensor's dtype first; an int64 operand of an
        # int8 tensor must not wrap around in that cast.
        check_cast_fits(other.data, self.dtype,
                        lambda: f"in-place {op} into a tensor of dtype {self.dtype}",
                        other._backend)
        self._own_writeable_data()
        with self._backend.context():
            getattr(self.xp, op)(self.data, other.data.astype(self.dtype, copy=False),
                                 out=self.data)
        self._bump_version()
        return self

    def _own_writeable_data(self):
        """Before an in-place write: a read-only view (an ``expand``, say) becomes a
        copy of its own, which no longer shares memory, nor a version, with its base."""
        if self._read_only or not self._backend.is_writeable(self.data):
            with self._backend.context():
                self.data = self.data.copy()
            self._version_box, self._read_only = [self._version], False

    def __setitem__(self, index, value):
        """``x[index] = value`` in place (NumPy indexing; value broadcast to the selection).

        Like the in-place operators it records no graph, so it is refused on a
        tensor that requires grad (or with a value that does) while gradients
        are recorded: build such results with ops (``tg.where``, ``tg.cat``) or
        assign inside ``tg.no_grad()``.  ``x[i] += v`` works the same way.
        """
        value_grad = isinstance(value, Tensor) and value.requires_grad
        if autograd.is_grad_enabled() and (self.requires_grad or value_grad):
            which = "a tensor that requires grad" if self.requires_grad else \
                "a tensor, from a value that requires grad,"
            raise RuntimeError(
                f"item assignment into {which} would bypass autograd (shape "
                f"{self.shape}); build the result with ops such as tg.where or tg.cat, "
                f"or assign inside `with tg.no_grad():`")

        def what():
            return f"item assignment into a tensor of dtype {self.dtype}"
        value = self._other(value, what)
        common_backend((self, value), "item assignment")
        if not np.can_cast(value.dtype, self.dtype, casting="same_kind"):
            raise TypeError(f"item assignment: a value of dtype {value.dtype} into a tensor of "
                            f"dtype {self.dtype} would change its values; convert it first")
        # same_kind lets int64 into int32: the values must fit (a number is checked by
        # _other already).
        check_cast_fits(value.data, self.dtype, what, value._backend)
        index = _index_arg(index, self)
        self._own_writeable_data()
        with self._backend.context():
            if any(map(ops._is_array, index if isinstance(index, tuple) else (index,))):
                ops._check_index(self._backend, self.shape, index)   # CuPy would wrap
            try:
                self.data[index] = value.data
            except (IndexError, ValueError, TypeError) as e:
                raise type(e)(f"item assignment into a tensor of shape {self.shape} at index "
                              f"{index!r} with a value of shape {value.shape}: {e}") from None
        self._bump_version()

    def __iadd__(self, other):
        return self._inplace(other, "add")

    def __isub__(self, other):
        return self._inplace(other, "subtract")

    def __imul__(self, other):
        return self._inplace(other, "multiply")

    def __itruediv__(self, other):
        return self._inplace(other, "true_divide")

    def __ipow__(self, other):
        return self._inplace(other, "power")

    def __neg__(self):
        if self.dtype == bool_:
            raise TypeError("- on a boolean tensor: use ~ to negate a mask")
        return ops.Neg.apply(self)

    def __pos__(self):
        return self

    def __matmul__(self, other):
        return ops.MatMul.apply(self, self._other(other))

    def __rmatmul__(self, other):
        return ops.MatMul.apply(self._other(other), self)

    matmul = __matmul__

    # Comparisons give boolean tensors that carry no gradient.
    def _compare(self, other, op):
        x = self
        if (is_int(other) and self.dtype.kind in "iu" and fits(other, int64)
                and not fits(other, self.dtype) and self.dtype != np.uint64):
            # An int beyond the dtype's range still compares by its value, as in
            # NumPy (a uint8 tensor is < 300 everywhere): compare in int64.
            x = self.astype(int64)
        other = x._other(other)
        ops.check_broadcast(self.shape, other.shape, op)
        backend = common_backend((self, other), op)
        with backend.context():
            return Tensor._make(getattr(self.xp, op)(x.data, other.data), backend)

    def __lt__(self, other):
        return self._compare(other, "less")

    def __le__(self, other):
        return self._compare(other, "less_equal")

    def __gt__(self, other):
        return self._compare(other, "greater")

    def __ge__(self, other):
        return self._compare(other, "greater_equal")

    def __eq__(self, other):
        if other is None:   # as PyTorch: Python's identity test, False
            return NotImplemented
        return self._compare(other, "equal")

    def __ne__(self, other):
        if other is None:
            return NotImplemented
        return self._compare(other, "not_equal")

    def __invert__(self):
        if self.dtype != bool_:
            raise TypeError(f"~ needs a boolean tensor, got dtype {self.dtype}")
        with self._backend.context():
            return Tensor._make(~self.data, self._backend)

    def _bitwise(self, other, op, symbol):
        other = self._other(other)
        if self.dtype.kind not in "biu" or other.dtype.kind not in "biu":
            raise TypeError(f"{symbol} needs boolean or integer tensors, got dtypes "
                            f"{self.dtype} and {other.dtype}")
        ops.check_broadcast(self.shape, other.shape, symbol)
        backend = common_backend((self, other), symbol)
        with backend.context():
            return Tensor._make(getattr(self.xp, op)(self.data, other.data), backend)

    def __and__(self, other):
        return self._bitwise(other, "bitwise_and", "&")

    def __or__(self, other):
        return self._bitwise(other, "bitwise_or", "|")

    def __xor__(self, other):
        return self._bitwise(other, "bitwise_xor", "^")

    # ``True & mask`` and ``1 | i``: the three are commutative, so the same method
    # serves with a Python number on the left.
    __rand__, __ror__, __rxor__ = __and__, __or__, __xor__

    def __index__(self):
        """A one-element integer tensor as a Python int (``lst[t]``, ``x[t:]``)."""
        if self.dtype.kind not in "iu" or self.size != 1:
            raise TypeError(f"only a one-element integer tensor can be used as an index, "
                            f"got shape {self.shape} and dtype {self.dtype}")
        return int(self.item())

    def any(self):
        """A 0-d bool tensor: True if any element is nonzero (no gradient)."""
        with self._backend.context():
            return Tensor._make(self.xp.any(self.data), self._backend)

    def all(self):
        """A 0-d bool tensor: True if every element is nonzero (no gradient)."""
        with self._backend.context():
            return Tensor._make(self.xp.all(self.data), self._backend)

    # ---- elementwise ---------------------------------------------------------
    def exp(self):
        """Elementwise e**x."""
        return ops.Exp.apply(self._floating())

    def log(self):
        """Elementwise natural logarithm ln(x)."""
        return ops.Log.apply(self._floating())

    def sqrt(self):
        """Elementwise square root."""
        return ops.Sqrt.apply(self._floating())

    def abs(self):
        """Elementwise |x| (gradient sign(x), so 0 at x = 0)."""
        return ops.Abs.apply(self)

    __abs__ = abs

    def sin(self):
        """Elementwise sine."""
        return ops.Sin.apply(self._floating())

    def cos(self):
        """Elementwise cosine."""
        return ops.Cos.apply(self._floating())

    def tanh(self):
        """Elementwise hyperbolic tangent."""
        return ops.Tanh.apply(self._floating())

    def erf(self):
        """Elementwise error function erf(x) = 2/sqrt(pi) * integral from 0 to x of e^(-t^2) dt."""
        return ops.Erf.apply(self._floating())

    def sigmoid(self):
        """Elementwise logistic function 1 / (1 + e**-x)."""
        return ops.Sigmoid.apply(self._floating())

    def relu(self):
        """Elementwise max(x, 0)."""
        return ops.ReLU.apply(self)

    def leaky_relu(self, negative_slope=0.01):
        """Elementwise x if x > 0 else ``negative_slope`` * x."""
        negative_slope = check_number("leaky_relu: negative_slope", negative_slope, low=None)
        return ops.LeakyReLU.apply(self._floating(), slope=negative_slope)

    def maximum(self, other):
        """Elementwise maximum with ``other`` (broadcast)."""
        return ops.Maximum.apply(self, self._other(other))

    def minimum(self, other):
        """Elementwise minimum with ``other`` (broadcast)."""
        return ops.Minimum.apply(self, self._other(other))

    def clip(self, min=None, max=None):
        """Limit values to [min, max] (numbers or tensors, broadcast; None: no bound).

        The gradient passes where min <= x <= max; with tensor bounds, the bound
        that is taken gets it.  An integer tensor with a fractional bound is
        first converted to float32, as PyTorch does; a bool tensor with an int
        bound to int64, as NumPy does.
        """
        x = self
        min, max = _clip_bound(x, "min", min), _clip_bound(x, "max", max)
        bounds = [b for b in (min, max) if isinstance(b, numbers.Real)]
        if x.dtype.kind in "biu" and any(not float(b).is_integer() for b in bounds):
            x = x.astype(float32)
        elif x.dtype == bool_ and any(is_int(b) for b in bounds):
            # As bool + int: int64 (clipped in bool, 2 would become True).
            x = x.astype(int64)
        if isinstance(min, Tensor) or isinstance(max, Tensor):
            # A bound takes the gradient only where it wins strictly: at a tie x
            # keeps it, as with number bounds (maximum/minimum would split it).
            # A NaN bound gives NaN, as a number bound and PyTorch's clamp do.
            if min is not None:
                lo = x._other(min)
                check_devices("clip", x, ("min", lo))
                x = where((x < lo) | (lo != lo), lo, x)
            if max is not None:
                hi = x._other(max)
                check_devices("clip", x, ("max", hi))
                x = where((x > hi) | (hi != hi), hi, x)
            return x
        return ops.Clip.apply(x, lo=min, hi=max)

    clamp = clip

    def sign(self):
        """Elementwise -1, 0 or 1 (no gradient); a bool tensor's sign is itself, as in
        PyTorch."""
        with self._backend.context():
            if self.dtype == bool_:   # NumPy has no sign of bools
                return Tensor._make(self.data.copy(), self._backend)
            return Tensor._make(self.xp.sign(self.data), self._backend)

    def _rounded(self, name, *args):
        """NumPy's ``name`` of the data, outside the graph (see :meth:`floor`)."""
        with self._backend.context():
            if self.dtype.kind in "biu":   # already whole: a copy, of the same dtype
                return Tensor._make(self.data.copy(), self._backend)
            return Tensor._make(getattr(self.xp, name)(self.data, *args), self._backend)

    def floor(self):
        """Elementwise largest integer <= x, in x's dtype.

        No gradient, as :meth:`sign`: the result is a constant of the graph (its
        derivative is 0 wherever it exists; PyTorch's backward gives those zeros,
        here ``x.floor() * y`` sends none to x).  Integer and bool tensors are
        returned as copies, as in NumPy.
        """
        return self._rounded("floor")

    def ceil(self):
        """Elementwise smallest integer >= x (no gradient; see :meth:`floor`)."""
        return self._rounded("ceil")

    def round(self, decimals=0):
        """Round to ``decimals`` decimals, halves to even (``round(0.5)`` is 0, ``round(1.5)``
        is 2), as NumPy and PyTorch do (no gradient; see :meth:`floor`).

        A negative ``decimals`` rounds to tens, hundreds, ...: an integer tensor
        then rounds too, in its dtype, as NumPy's does (``[1234, 1250]`` to
        ``decimals=-2`` is ``[1200, 1200]``; PyTorch rounds no integer tensor),
        but exactly (NumPy's goes through float64) and refusing a result beyond
        the dtype's range (an int8 127 to tens), which NumPy wraps around.  A bool
        tensor is returned as a copy for ``decimals >= 0`` and refused otherwise,
        as in NumPy.
        """
        decimals = check_int("round: decimals", decimals, low=None)
        if decimals < 0 and self.dtype.kind in "biu":
            return self._round_integers(decimals)
        return self._rounded("round", decimals)

    def _round_integers(self, decimals):
        """An integer tensor rounded to the nearest multiple of q = 10**-decimals, halves
        to the even multiple, in integer arithmetic (see :meth:`round`)."""
        if self.dtype == bool_:
            raise TypeError(f"round: a bool tensor of shape {self.shape} cannot be rounded "
                            f"to decimals={decimals} (NumPy refuses it too); convert it "
                            f"first, x.astype(tg.int64)")
        lo, hi = int_bounds(self.dtype)
        # Beyond 10**20 every int64 rounds to 0 alike (below, q > hi): no need to
        # build a huge integer for decimals=-10**7.
        q = 10 ** min(-decimals, 20)
        with self._backend.context():
            xp, x = self.xp, self.data
            if q > hi:
                # q does not fit the dtype: every value within q/2 of 0 rounds to 0
                # (a half to the even multiple 0), which only int64 can exceed.
                out = xp.zeros_like(x)
                half = q // 2
                bad = [x > half] if half < hi else []
                bad += [x < -half] if -half > lo else []
            else:
                r = x % q                                # 0 <= r < q: x - r is a multiple
                up = (r > q - r) | ((r == q - r) & ((x // q) % 2 != 0))
                # Each candidate is computed as the result itself, so the one taken
                # overflows only where the result does.
                out = xp.where(up, x + (q - r), x - r)
                bad = [up & (x > hi - (q - r))]
                bad += [~up & (x < lo + r)] if lo < 0 else []
            if bad:
                self._backend.check(
                    bad[0] | bad[1] if len(bad) == 2 else bad[0], OverflowError,
                    f"round: a value of the {self.dtype} tensor of shape {self.shape} rounds "
                    f"(to decimals={decimals}) beyond the dtype's range {lo}..{hi}; convert "
                    f"it to a wider dtype first (a float one for 64 bits)")
            return Tensor._make(out, self._backend)

    def log1p(self):
        """Elementwise ln(1 + x), accurate where x is small (where ``(1 + x).log()`` loses
        x's digits to the rounding of 1 + x)."""
        return ops.Log1p.apply(self._floating())

    def expm1(self):
        """Elementwise e**x - 1, accurate where x is small."""
        return ops.Expm1.apply(self._floating())

    # ---- reductions ----------------------------------------------------------
    def sum(self, axis=None, keepdims=_NOT_GIVEN, dim=None, keepdim=_NOT_GIVEN):
        """Sum over ``axis`` (int, tuple or None: all); ``dim`` and ``keepdim`` are
        aliases of ``axis`` and ``keepdims`` (PyTorch's names), as in every reduction."""
        return ops.Sum.apply(self, axis=_axes(self, axis, dim),
                             keepdims=_keepdims(keepdims, keepdim, "sum"))

    @_float32_for_half
    def prod(self, axis=None, keepdims=_NOT_GIVEN, dim=None, keepdim=_NOT_GIVEN):
        """Product over ``axis`` (int, tuple or None: all; 1 over an empty axis);
        ``dim`` and ``keepdim`` are aliases, as in :meth:`sum`.

        Integer and bool tensors multiply in int64 (unsigned ones in uint64), as
        NumPy's ``prod`` and :meth:`sum` do; float16 ones in float32, rounded to
        float16 once at the end (PyTorch's rounds at other points, so the last
        bit can differ).
        The gradient of an element is the product of the others in its slice,
        computed without dividing by the element, so it is exact where x holds
        zeros (as PyTorch's is), and differentiable again.
        """
        return ops.Prod.apply(self, axis=_axes(self, axis, dim),
                              keepdims=_keepdims(keepdims, keepdim, "prod"))

    @_float32_for_half
    def mean(self, axis=None, keepdims=_NOT_GIVEN, dim=None, keepdim=_NOT_GIVEN):
        """Arithmetic mean over ``axis`` (int, tuple or None: all); ``dim`` and ``keepdim``
        are aliases, as in :meth:`sum`."""
        axis = _axes(self, axis, dim)
        return self.sum(axis, _keepdims(keepdims, keepdim, "mean")) / _count(self.shape, axis)

    @_float32_for_half
    def var(self, axis=None, *ambiguous, keepdims=_NOT_GIVEN, correction=_NOT_GIVEN, dim=None,
            keepdim=_NOT_GIVEN, unbiased=None):
        """Variance over ``axis`` with Bessel's ``correction`` (1, the default: unbiased,
        as PyTorch; 0: as NumPy).  PyTorch's ``unbiased=True/False`` is correction 1/0.

        Only ``axis`` may be positional: the next argument is ``unbiased`` in
        PyTorch and ``dtype`` in NumPy, so ``x.var(1, False)`` would mean a
        different thing to each reader; pass ``keepdims`` and ``correction`` by name.
        """
        return self._var("var", axis, ambiguous, keepdims, correction, dim, keepdim, unbiased)

    def _var(self, op, axis, ambiguous, keepdims, correction, dim, keepdim, unbiased):
        if ambiguous:
            raise TypeError(f"{op}: only the axis may be positional, got {ambiguous!r} after "
                            f"it (PyTorch's next argument is unbiased, NumPy's dtype): pass "
                            f"correction=0/1 (or unbiased=) and keepdims= by name")
        axis = _axes(self, axis, dim)
        keepdims = _keepdims(keepdims, keepdim, op)
        if unbiased is not None:
            if correction is not _NOT_GIVEN:
                raise TypeError(f"{op}: give either correction or unbiased, not both (got "
                                f"correction={correction!r}, unbiased={unbiased!r})")
            correction = int(check_flag("unbiased", unbiased, op))
        elif correction is _NOT_GIVEN:
            correction = 1
        elif type(correction) is not int:   # fractional is fine (PyTorch too); not NaN or inf
            correction = check_finite(f"{op}: correction", correction)
        centred = self - self.mean(axis, keepdims=True)
        n = _count(self.shape, axis)
        return (centred * centred).sum(axis, keepdims) / max(n - correction, 0)

    @_float32_for_half
    def std(self, axis=None, *ambiguous, keepdims=_NOT_GIVEN, correction=_NOT_GIVEN, dim=None,
            keepdim=_NOT_GIVEN, unbiased=None):
        """Standard deviation, sqrt(var); see :meth:`var` for ``correction``, ``unbiased``
        and the arguments to pass by name.

        Where the variance is 0 (constant data) the gradient is 0, as in
        PyTorch, not the NaN of sqrt's infinite slope times zero deviations.
        """
        v = self._var("std", axis, ambiguous, keepdims, correction, dim, keepdim, unbiased)
        zero = v == 0
        return where(zero, 0.0, where(zero, 1.0, v).sqrt())

    def max(self, axis=None, keepdims=_NOT_GIVEN, dim=None, keepdim=_NOT_GIVEN):
        """Maximum over ``axis`` (int, tuple or None: all), as NumPy's ``amax``; tied
        maxima share the gradient equally.

        With PyTorch's keywords over one axis (``x.max(dim=1)``, ``x.max(1,
        keepdim=True)``) it returns PyTorch's pair, ``(values, indices)`` (a named
        tuple; the indices are :meth:`argmax`'s, the first maximum's), so that
        ported code such as ``x.max(dim=1, keepdim=True)[0]`` gets the values.
        """
        return self._extreme(ops.Max, "max", axis, keepdims, dim, keepdim)

    def min(self, axis=None, keepdims=_NOT_GIVEN, dim=None, keepdim=_NOT_GIVEN):
        """Minimum; as :meth:`max` (tied minima share the gradient; PyTorch's keywords
        over one axis give ``(values, indices)``)."""
        return self._extreme(ops.Min, "min", axis, keepdims, dim, keepdim)

    def _extreme(self, op, name, axis, keepdims, dim, keepdim):
        axes = _axes(self, axis, dim)
        keep = _keepdims(keepdims, keepdim, name)
        values = op.apply(self, axis=axes, keepdims=keep)
        pytorch = dim is not None or keepdim is not _NOT_GIVEN
        one_axis = axes is not None and (len(axes) == 1 or self.ndim == 0)   # 0-d: axis 0
        if not pytorch or not one_axis or isinstance(_axis_or_dim(axis, dim), (tuple, list)):
            return values
        # PyTorch's max(dim) is a (values, indices) pair: returning the values
        # alone would let x.max(dim=1)[0] index the batch without a word.
        return ValuesIndices(values, self._arg("arg" + name, axes, keep, None))

    def argmax(self, axis=None, keepdims=_NOT_GIVEN, dim=None, keepdim=_NOT_GIVEN):
        """int64 index of the largest value along one ``axis`` (None: of the flattened tensor)."""
        return self._arg("argmax", axis, _keepdims(keepdims, keepdim, "argmax"), dim)

    def argmin(self, axis=None, keepdims=_NOT_GIVEN, dim=None, keepdim=_NOT_GIVEN):
        """int64 index of the smallest value along one ``axis`` (None: of the flattened tensor)."""
        return self._arg("argmin", axis, _keepdims(keepdims, keepdim, "argmin"), dim)

    def _arg(self, name, axis, keepdims, dim):
        axis = _axes(self, axis, dim)
        if axis == ():   # a 0-d tensor's axis 0: its only element
            axis = None
        if isinstance(axis, tuple):
            if len(axis) != 1:
                raise ValueError(f"{name} takes one axis, got {axis}")
            axis = axis[0]
        if ops.reduces_empty(self.shape, axis):
            raise ValueError(f"{name} over an empty axis of a tensor of shape {self.shape}")
        with self._backend.context():
            out = getattr(self.xp, name)(self.data, axis=axis)
            if keepdims:
                out = (self.xp.expand_dims(out, axis) if axis is not None
                       else out.reshape((1,) * self.ndim))
            return Tensor._make(out.astype(int64), self._backend)

    def _shifted(self, axis):
        """(x - m, m) with m the (detached) maximum over ``axis``: exp(x - m) <= 1.

        A slice without a finite maximum (all -inf, or holding +inf or NaN)
        is shifted by NaN, so it becomes NaN throughout, as PyTorch's softmax
        gives (shifting by the infinite maximum would too, with NumPy's
        warnings about inf - inf).  Over an empty axis there is no maximum:
        (x, None).
        """
        x = self._floating()
        if ops.reduces_empty(x.shape, axis):
            return x, None
        m = x.max(axis, keepdims=True).detach()
        with x._backend.context():
            xp = x.xp
            m = xp.where(xp.isfinite(m.data), m.data, np.nan)
            m = Tensor._make(m.astype(x.dtype), x._backend)
        return x - m, m

    @_float32_for_half
    def logsumexp(self, axis=None, keepdims=_NOT_GIVEN, dim=None, keepdim=_NOT_GIVEN):
        """log(sum(exp(x))), computed stably by subtracting the maximum (-inf over an
        empty axis, the log of an empty sum); see :class:`ops.LogSumExp`."""
        axis = _axes(self, axis, dim)
        keepdims = _keepdims(keepdims, keepdim, "logsumexp")
        x = self._floating()
        if ops.reduces_empty(x.shape, axis):   # the log of an empty sum
            out = x.sum(axis, keepdims=True) + float("-inf")
        else:
            out = ops.LogSumExp.apply(x, axis=axis)
        return out if keepdims else out.squeeze(axis if axis is not None else None)

    @_float32_for_half
    def softmax(self, axis=-1, dim=None):
        """exp(x) / sum(exp(x)) along ``axis`` (default: last), computed stably.

        As in PyTorch, a slice holding +inf or NaN, or only -inf, gives NaN
        throughout.
        """
        axis = _axes(self, _join_axis(axis, dim, "softmax", default=-1))
        e = self._shifted(axis)[0].exp()
        return e / e.sum(axis, keepdims=True)

    @_float32_for_half
    def log_softmax(self, axis=-1, dim=None):
        """x - logsumexp(x) along ``axis`` (last by default)."""
        axis = _axes(self, _join_axis(axis, dim, "log_softmax", default=-1))
        # (x - m) - log(sum(exp(x - m))), not x - (log(...) + m): adding the
        # small log term to a large m first would round it away in float32.
        shifted, m = self._shifted(axis)
        if m is None:   # an empty axis: the result is empty too
            return shifted * 1
        return shifted - shifted.exp().sum(axis, keepdims=True).log()

    # ---- shapes --------------------------------------------------------------
    def reshape(self, *shape):
        """The same elements in ``shape`` (ints or one tuple; one -1 is inferred)."""
        shape = _shape_arg(shape)
        new = _resolve_reshape(self.shape, shape)
        return self if new == self.shape else ops.Reshape.apply(self, shape=new)

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        """Merge axes ``start_dim`` .. ``end_dim`` (inclusive) into one; 0-d gives shape (1,)."""
        s, e = (_norm_axis(a, self.ndim, "flatten") for a in (start_dim, end_dim))
        if self.ndim == 0:
            return self.reshape(1)
        if s > e:
            raise ValueError(f"flatten: start_dim {start_dim} (axis {s}) comes after end_dim "
                             f"{end_dim} (axis {e}) for a tensor of shape {self.shape}")
        # (*shape[:s], prod(shape[s:e+1]), *shape[e+1:]); the product, not -1,
        # which a tensor with no elements could not resolve.
        merged = int(np.prod(self.shape[s:e + 1], dtype=np.int64))
        return self.reshape(self.shape[:s] + (merged,) + self.shape[e + 1:])

    def permute(self, *axes):
        """Reorder the axes: axis i of the result is axis ``axes[i]`` of self."""
        axes = _shape_arg(axes)
        if sorted(_norm_axis(a, self.ndim) for a in axes) != list(range(self.ndim)):
            raise ValueError(f"permute: {axes} is not a permutation of the {self.ndim} "
                             f"axes of a tensor of shape {self.shape}")
        axes = tuple(_norm_axis(a, self.ndim) for a in axes)
        return ops.Permute.apply(self, axes=axes)

    def transpose(self, *axes):
        """No axes: reverse them; a full permutation: as NumPy; two axes: swap them."""
        axes = _shape_arg(axes)
        if not axes:
            return self.permute(tuple(reversed(range(self.ndim))))
        # Two axes always swap, also on a 2-D tensor, so transpose(-2, -1)
        # means the same for matrices and for batches of them.
        if len(axes) == 2:
            return self.swapaxes(*axes)
        if len(axes) == self.ndim:
            return self.permute(axes)
        raise ValueError(f"transpose of a tensor of shape {self.shape} takes no axes, "
                         f"a permutation of all {self.ndim}, or two axes to swap; got {axes}")

    @property
    def T(self):
        """All axes reversed (``transpose()``)."""
        return self.transpose()

    def swapaxes(self, axis0, axis1):
        """Exchange two axes."""
        a, b = _norm_axis(axis0, self.ndim), _norm_axis(axis1, self.ndim)
        if self.ndim == 0:   # axes 0 and -1 of a 0-d tensor are the tensor itself
            return self
        order = list(range(self.ndim))
        order[a], order[b] = order[b], order[a]
        return self.permute(order)

    def broadcast_to(self, *shape):
        """Broadcast to ``shape`` by NumPy's rules; the gradient sums back."""
        shape = _shape_arg(shape)
        if shape == self.shape:
            return self
        ops.check_broadcast_to(self.shape, shape)
        return ops.BroadcastTo.apply(self, shape=shape)

    def expand(self, *shape):
        """Broadcast to ``shape``; -1 keeps a dimension's size (as PyTorch)."""
        shape = _shape_arg(shape)
        lead = len(shape) - self.ndim
        if any(s == -1 for s in shape[:lead]):
            raise ValueError(f"expand: -1 keeps the size of an existing dimension; the new "
                             f"leading dimensions of {shape} (from {self.shape}) need sizes")
        shape = tuple(self.shape[i - lead] if s == -1 and i >= lead else s
                      for i, s in enumerate(shape))
        return self.broadcast_to(shape)

    def sum_to(self, shape):
        """Sum broadcast dimensions away so the result has ``shape``."""
        try:
            shape = _shape_arg((shape,))
        except TypeError as e:
            raise TypeError(f"sum_to: {e}") from None
        if shape == self.shape:
            return self
        if len(shape) > self.ndim or any(
                s != 1 and s != n for s, n in zip(shape[::-1], self.shape[::-1])):
            raise ValueError(f"sum_to: a tensor of shape {self.shape} cannot be summed "
                             f"to {shape} (which must broadcast to it)")
        return ops.SumTo.apply(self, shape=shape)

    def squeeze(self, axis=None, dim=None):
        """Drop size-1 axes: those in ``axis`` (each must have size 1), or all if None."""
        axis = _axes(self, axis, dim)
        if axis is None:
            axis = tuple(i for i, s in enumerate(self.shape) if s == 1)
        for a in axis:
            if self.shape[a] != 1:
                raise ValueError(f"squeeze: axis {a} of shape {self.shape} has size "
                                 f"{self.shape[a]}, not 1")
        return self.reshape(tuple(s for i, s in enumerate(self.shape) if i not in axis))

    def unsqueeze(self, axis=None, dim=None):
        """Insert a size-1 axis at position ``axis`` (-1: last) of the result."""
        axis = _norm_axis(_axis_or_dim(axis, dim, "unsqueeze"), self.ndim + 1, "unsqueeze",
                          of="the result")
        return self.reshape(self.shape[:axis] + (1,) + self.shape[axis:])

    def __getitem__(self, index):
        """NumPy indexing (ints, slices, None, ..., int/bool arrays or tensors); differentiable.

        As in NumPy, slices give views of this tensor's memory (an in-place
        change shows in both) while a single element, or an array index,
        gives a copy (unlike PyTorch, where a single element is a view too).
        """
        return ops.GetItem.apply(self, index=_index_arg(index, self))

    def pad(self, pad_width, value=0.0):
        """Constant padding; ``pad_width`` as ``numpy.pad`` (one (before, after) per axis)."""
        try:
            widths = np.asarray(pad_width)
            # Only ints: NumPy would cut 1.5 down to 1 (and read True as 1) silently.
            if widths.size and widths.dtype.kind not in "iu":
                raise TypeError(f"pad: widths must be ints, got {pad_width!r}")
            widths = np.broadcast_to(widths.astype(np.int64), (self.ndim, 2))
        except ValueError:
            raise ValueError(f"pad: pad_width {pad_width!r} does not give one (before, after) "
                             f"pair per axis of a tensor of shape {self.shape}") from None
        if (widths < 0).any():
            raise ValueError(f"pad: widths must be >= 0, got {pad_width}")
        value = check_value_fits("pad: value", check_fill_value("pad: value", value), self.dtype)
        if self.ndim == 0:   # no axis to pad: a copy, of the same dtype, as numpy.pad
            return ops.Pad.apply(self.reshape(1), widths=((0, 0),), value=value).reshape(())
        return ops.Pad.apply(self, widths=tuple(map(tuple, widths.tolist())), value=value)

    def split(self, indices_or_sections, axis=0, dim=None):
        """See :func:`split`."""
        return split(self, indices_or_sections, axis, dim)

    def chunk(self, chunks, axis=0, dim=None):
        """Split into ``chunks`` equal sections along ``axis`` (``dim`` is an alias;
        see :func:`split`)."""
        return split(self, chunks, _join_axis(axis, dim, "chunk"))

    # ---- orderings -----------------------------------------------------------
    def flip(self, axis=None, *more_axes, dims=None):
        """Reverse the order of elements along ``axis`` (int or tuple; None: every axis),
        as ``numpy.flip``; ``dims`` is PyTorch's name (``x.flip(dims=(0, 1))``), and
        several positional axes are PyTorch's form too (``x.flip(0, 1)``)."""
        if more_axes:
            axis = (axis,) + more_axes
        axes = _axes(self, _axis_or_dim(axis, dims, "flip"))
        axes = range(self.ndim) if axes is None else axes
        if not axes:
            return self._new_copy()   # as NumPy's flip of nothing is a new view
        return self[tuple(slice(None, None, -1) if i in axes else slice(None)
                          for i in range(self.ndim))]

    def roll(self, shift=None, axis=None, dims=None, shifts=None):
        """Shift elements by ``shift`` along ``axis``, those past the end coming back at the
        start, as ``numpy.roll`` (``axis=None``: along the flattened tensor; ``shift`` and
        ``axis`` may be equal-length tuples); ``shifts`` and ``dims`` are PyTorch's names."""
        if (shift is None) == (shifts is None):
            raise TypeError(f"roll: give the shift once, as shift (NumPy's name) or shifts "
                            f"(PyTorch's), got shift={shift!r}, shifts={shifts!r}")
        shift = shift if shifts is None else shifts
        axis = _axis_or_dim(axis, dims, "roll")
        shifts = tuple(shift) if isinstance(shift, (tuple, list)) else (shift,)
        for s in shifts:
            check_int("roll: shift", s, low=None)
        if axis is None:
            if len(shifts) != 1:
                raise ValueError(f"roll: without an axis, shift must be one int, got {shift!r}")
            return self.reshape(-1).roll(shifts[0], 0).reshape(self.shape)
        axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
        if len(shifts) == 1:
            shifts = shifts * len(axes)
        if len(shifts) != len(axes):
            raise ValueError(f"roll: shift {shift!r} and axis {axis!r} must have the same "
                             f"length (or shift be one int)")
        out = self
        for s, a in zip(shifts, axes):
            a = _norm_axis(a, self.ndim, "roll")
            n = self.shape[a] if self.ndim else 1
            s = int(s) % n if n else 0
            if s:
                lead = (slice(None),) * a
                out = concatenate([out[lead + (slice(n - s, None),)],
                                   out[lead + (slice(None, n - s),)]], axis=a)
        return out if out is not self else self._new_copy()

    @_float32_for_half
    def cumsum(self, axis=None, dim=None):
        """Running sum along ``axis`` (None: of the flattened tensor, as ``numpy.cumsum``);
        ``dim`` is PyTorch's name.  Bool and signed integer tensors sum in int64 and
        unsigned ones in uint64, as NumPy's (and :meth:`sum`) do (PyTorch: int64 for
        every integer dtype, uint8 included); float16 ones in float32, as PyTorch's
        (in float16 a running sum of ones stops at 2048)."""
        axis = _axis_or_dim(axis, dim, "cumsum")
        x = self
        if x.dtype.kind in "biu" and x.dtype.itemsize < 8:
            # NumPy's accumulator, named here so that every path and backend takes it.
            x = x.astype(np.uint64 if x.dtype.kind == "u" else int64)
        if axis is None:
            return ops.CumSum.apply(x.reshape(-1), axis=0)
        axis = _norm_axis(axis, x.ndim, "cumsum")
        if x.ndim == 0:
            return ops.CumSum.apply(x.reshape(1), axis=0).reshape(())
        return ops.CumSum.apply(x, axis=axis)

    def argsort(self, axis=-1, descending=False, dim=None, stable=True):
        """int64 indices that sort along ``axis`` (last by default; ``dim`` is PyTorch's
        name), ascending or ``descending`` (no gradient).

        Stable, in both directions: tied values keep their order, the first one
        first (NumPy's ``kind='stable'``; PyTorch's default sort promises no order
        among ties, its ``stable=True`` is this), so ``stable=False``, which asks
        for no order among ties, gets this one too.  NaN sorts as the largest
        value, as in both libraries.
        """
        check_flag("descending", descending, "argsort")
        check_flag("stable", stable, "argsort")   # either way: a stable sort
        axis = _norm_axis(_join_axis(axis, dim, "argsort", default=-1), self.ndim, "argsort")
        if self.ndim == 0:
            with self._backend.context():   # allocated on x's device, not the current one
                return Tensor._make(self.xp.zeros((), dtype=int64), self._backend)
        xp, data = self.xp, self.data
        kind = {"kind": "stable"} if xp is np else {}   # CuPy's sort is stable anyway
        with self._backend.context():
            if not descending:
                idx = xp.argsort(data, axis=axis, **kind)
            else:
                # Ascending over the reversed axis puts the last of tied values
                # first; reversing that order again gives descending values with
                # ties first-to-last, and n - 1 - i maps back to positions of x.
                flipped = xp.flip(data, axis=axis)
                idx = self.shape[axis] - 1 - xp.flip(xp.argsort(flipped, axis=axis, **kind),
                                                     axis=axis)
            return Tensor._make(idx.astype(int64), self._backend)

    def sort(self, axis=-1, descending=False, dim=None, stable=True):
        """``(values, indices)`` sorted along ``axis`` (last by default), as PyTorch's
        ``sort`` (``x.sort().values`` is ``numpy.sort``'s result; NumPy's method sorts in
        place and returns None, which here would be a silent no-op).

        The indices are :meth:`argsort`'s (stable: ties keep their order); the
        values are x gathered at them, so the gradient goes back to where each
        value came from.
        """
        axis = _norm_axis(_join_axis(axis, dim, "sort", default=-1), self.ndim, "sort")
        indices = self.argsort(axis, descending, stable=stable)
        return ValuesIndices(self._take_along(indices, axis), indices)

    def topk(self, k, axis=-1, largest=True, sorted=True, dim=None):
        """``(values, indices)`` of the ``k`` largest (``largest=False``: smallest) along
        ``axis`` (last by default; ``dim`` is PyTorch's name), as PyTorch's ``topk``.

        Always in sorted order (PyTorch's ``sorted=False`` allows any order), and
        among tied values the first comes first (PyTorch leaves that open).
        """
        check_flag("sorted", sorted, "topk")
        axis = _norm_axis(_join_axis(axis, dim, "topk", default=-1), self.ndim, "topk")
        n = self.shape[axis] if self.ndim else 1
        k = check_int("topk: k", k, low=0)
        if k > n:
            raise ValueError(f"topk: k={k} exceeds the {n} elements along axis {axis} of a "
                             f"tensor of shape {self.shape}")
        indices = self.argsort(axis, descending=check_flag("largest", largest, "topk"))
        if self.ndim:
            indices = indices[(slice(None),) * axis + (slice(None, k),)]
        elif k == 0:
            raise ValueError("topk: k=0 of a 0-d tensor (which has no axis to shorten)")
        return ValuesIndices(self._take_along(indices, axis), indices)

    def _new_copy(self):
        """A new tensor equal to x, of x's dtype, in the graph (``x * 1`` would make a
        bool tensor int64, by NumPy's promotion)."""
        if self.dtype == bool_:   # no gradient to keep: a plain copy
            with self._backend.context():
                return Tensor._make(self.data.copy(), self._backend)
        return self * 1

    def _take_along(self, indices, axis):
        """x at ``indices`` (an int64 tensor of x's shape but along ``axis``), as
        ``numpy.take_along_axis``; differentiable (one gather, whose backward scatters)."""
        if self.ndim == 0:
            return self._new_copy()
        with self._backend.context():
            xp = self.xp
            index = tuple(indices.data if i == axis else
                          xp.arange(n).reshape((-1,) + (1,) * (self.ndim - 1 - i))
                          for i, n in enumerate(indices.shape))
        return ops.GetItem.apply(self, index=index)


# ---- argument helpers ---------------------------------------------------------
def _norm_axis(axis, ndim, op=None, of="a tensor"):
    """One int ``axis`` (no tuple, no None) of ``ndim`` dimensions as 0..ndim-1; ``op``
    prefixes the errors and ``of`` names what has the dimensions."""
    if not is_int(axis):   # a bool too: True would quietly mean axis 1
        raise TypeError(f"{op + ': ' if op else ''}axis must be an int, got {axis!r}")
    n = max(ndim, 1)
    if not -n <= axis < n:
        raise ValueError(f"{op + ': ' if op else ''}axis {axis} is out of range for {of} with "
                         f"{ndim} dimension(s) (valid axes {-n}..{n - 1})")
    return int(axis) % n


def _axes(t, axis, dim=None):
    """Normalise ``axis`` (or its alias ``dim``) to None or a sorted tuple."""
    axis = _axis_or_dim(axis, dim)
    if axis is None:
        return None
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    axes = tuple(sorted(_norm_axis(a, t.ndim) for a in axes))
    if t.ndim == 0:
        axes = ()  # 0-d accepts axis 0 or -1 (as PyTorch) and reduces over nothing
    if len(set(axes)) != len(axes):
        raise ValueError(f"repeated axis in {axis}")
    return axes


def _clip_bound(x, name, b):
    """A number bound of ``x.clip``, checked; a tensor, array or None passes as it is.
    On an integer tensor an integer bound beyond the dtype's range acts as the range's
    end (as NumPy's clip; cast to the dtype, it would wrap around)."""
    if b is None or isinstance(b, (Tensor, list, tuple, np.ndarray)):
        return b
    if type(b) is float and x.dtype.kind == "f":   # the common case, without the checks
        return b
    b = as_scalar(b, f"clip: {name}")
    if not (is_real(b) or x.dtype == bool_ and isinstance(b, (bool, np.bool_))):
        raise TypeError(f"clip: {name} must be a number, a tensor or None, got {shown_value(b)}")
    if x.dtype.kind in "iu" and is_int(b):
        lo, hi = int_bounds(x.dtype)
        b = lo if b < lo else hi if b > hi else int(b)
    return b


def _count(shape, axis):
    axis = range(len(shape)) if axis is None else axis
    return int(np.prod([shape[a] for a in axis])) if len(shape) else 1


def _shape_arg(shape):
    """Sizes given as separate ints or as one sequence (a tuple, a list, a 1-d
    integer array or tensor) -> a tuple of ints."""
    if len(shape) == 1 and type(shape[0]) is not int:
        if isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        elif getattr(shape[0], "ndim", None) == 1 and hasattr(shape[0], "tolist"):
            shape = shape[0].tolist()
    return tuple(_size(s, shape) for s in shape)


def _new_shape(shape, op):
    """The shape of a new tensor (separate ints or one tuple), every size >= 0."""
    try:
        shape = _shape_arg(shape)
    except TypeError as e:
        raise TypeError(f"{op}: {e}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"{op}: sizes must be >= 0, got shape {shape}")
    return shape


def _size(s, shape):
    """One size of a shape: an int, a NumPy integer or a 0-d integer array or tensor."""
    value = as_scalar(s)
    if not isinstance(value, (bool, np.bool_)):
        try:
            return operator.index(value)   # ints and anything integer-like, never a float
        except TypeError:
            pass
    raise TypeError(f"a shape must be ints, got {s!r} ({type(s).__name__}) in "
                    f"{tuple(shape)}")


def _resolve_reshape(old, new):
    size = int(np.prod(old))
    if new.count(-1) > 1:
        raise ValueError(f"reshape: only one dimension can be -1, got {new}")
    if -1 in new:
        known = int(np.prod([s for s in new if s != -1]))
        if known == 0 or size % known:
            raise ValueError(f"cannot reshape a tensor of shape {old} into {new}")
        new = tuple(size // known if s == -1 else s for s in new)
    if int(np.prod(new)) != size or any(s < 0 for s in new):
        raise ValueError(f"cannot reshape a tensor of shape {old} ({size} elements) into {new}")
    return new


_INT64_MIN, _INT64_MAX = int_bounds(int64)
_INTP_MAX = int_bounds(np.dtype(np.intp))[1]


def _index_arg(index, t):
    """Tensors inside an index become arrays on ``t``'s device.

    An index tensor is on ``t``'s device or on the host, as in PyTorch: a host
    index is copied to the device as a NumPy index array or a list is.
    """
    def conv(i):
        if type(i) is int and _INT64_MIN <= i <= _INT64_MAX:   # the common case, first
            return i
        # Array parts are copied: GetItem keeps the index for backward, and a
        # caller reusing its index array must not redirect that gradient.
        if isinstance(i, Tensor):
            if i._backend is not t._backend and i.device == "cpu":
                # A copy of its own on every backend (a host one's asarray would not copy).
                return t._backend.asarray(np.array(i.data))
            common_backend((t, i), "indexing")
            with i._backend.context():
                return i.data.copy()
        if isinstance(i, (list, np.ndarray)):
            try:
                i = np.array(i)
            except ValueError:
                raise ValueError(f"indexing a tensor of shape {t.shape} with the list {i!r}: "
                                 f"nested index lists must be rectangular, every row of one "
                                 f"length") from None
            if i.size == 0 and i.dtype.kind == "f":
                i = i.astype(np.int64)  # x[[]] selects nothing, as in NumPy
            return t._backend.asarray(i)
        if is_int(i) and not fits(i, int64):
            # NumPy says such an int is not a valid index at all.
            raise IndexError(f"index {i} is out of range for a tensor of shape {t.shape}")
        return i
    if type(index) is int and _INT64_MIN <= index <= _INT64_MAX:   # x[0]: nothing to convert
        return index
    return tuple(conv(i) for i in index) if isinstance(index, tuple) else conv(index)


def _upstream(t, grad, where):
    """Validate the gradient handed to backward/grad for output ``t``."""
    if grad is None:
        if t.size != 1:
            raise RuntimeError(f"{where}: the output has shape {t.shape}; a gradient can "
                               f"be implied only for a one-element output, so pass "
                               f"grad (a tensor of shape {t.shape})")
        with t._backend.context():
            return Tensor._make(t.xp.ones(t.shape, dtype=t.dtype), t._backend)
    grad = grad if isinstance(grad, Tensor) else Tensor(grad, dtype=t.dtype, device=t.device)
    if grad.shape != t.shape:
        raise ValueError(f"{where}: grad has shape {grad.shape} but the output has "
                         f"shape {t.shape}; they must match")
    common_backend((t, grad), where)
    # As a Function's input gradients take their input's dtype, the upstream
    # gradient takes the output's: a float32 leaf never gets a float64 .grad.
    return grad if grad.dtype == t.dtype else grad.astype(t.dtype)


def _graph_flags(retain_graph, create_graph, op):
    """``(retain_graph, create_graph)`` as bools; ``retain_graph`` None means ``create_graph``."""
    create_graph = check_flag(f"{op}: create_graph", create_graph)
    if retain_graph is None:
        return create_graph, create_graph
    return check_flag(f"{op}: retain_graph", retain_graph), create_graph


def _tensors_of(value, op, name):
    """A Tensor or a sequence of them -> a list of tensors; anything else is named."""
    if isinstance(value, Tensor):
        return [value]
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{op}: {name} must be a Tensor or a sequence of Tensors, got "
                        f"{value!r}") from None
    return _all_tensors(items, op, name + "[{}]")


def _all_tensors(items, op, what):
    """``items`` if each is a Tensor; else a TypeError naming ``what`` (formatted with
    the position) and what it is."""
    for i, t in enumerate(items):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {what.format(i)} is not a Tensor (got "
                            f"{type(t).__name__}); convert it first with tg.tensor()")
    return items


# ---- functions of several tensors -----------------------------------------------
def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False):
    """Gradients of ``outputs`` with respect to ``inputs``, leaving ``.grad`` alone.

    Returns a tuple with one tensor per input (or ``None`` for an input the
    outputs do not depend on, when ``allow_unused=True``).
    """
    outputs = _tensors_of(outputs, "grad", "outputs")
    inputs_list = _tensors_of(inputs, "grad", "inputs")
    if grad_outputs is None or isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs] * len(outputs) if grad_outputs is None else [grad_outputs]
    elif not isinstance(grad_outputs, (list, tuple)):
        raise TypeError(f"grad: grad_outputs must be a Tensor, a sequence of them (one per "
                        f"output) or None, got {shown_value(grad_outputs)}")
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad: {len(outputs)} outputs but {len(grad_outputs)} grad_outputs")
    for x in inputs_list:
        if not x.requires_grad:
            raise RuntimeError(f"grad: an input of shape {x.shape} does not require grad")
    retain_graph, create_graph = _graph_flags(retain_graph, create_graph, "grad")
    allow_unused = check_flag("grad: allow_unused", allow_unused)
    pairs = [(o, _upstream(o, g, "grad")) for o, g in zip(outputs, grad_outputs) if o.requires_grad]
    found = autograd.backprop([o for o, _ in pairs], [g for _, g in pairs], retain_graph,
                              create_graph, targets={id(x) for x in inputs_list})
    result = []
    for i, x in enumerate(inputs_list):
        g = found.get(id(x))
        if g is None and not allow_unused:
            raise RuntimeError(f"grad: input {i} (shape {x.shape}) was not used to compute "
                               f"the outputs; pass allow_unused=True to get None for it")
        result.append(g)
    return tuple(result)


def where(condition, x, y):
    """``x`` where ``condition`` holds, else ``y`` (differentiable in x and y)."""
    ref = next((a for a in (x, y, condition) if isinstance(a, Tensor)), None)
    if ref is None:
        ref = Tensor(x)
    cond = condition if isinstance(condition, Tensor) else Tensor(condition, device=ref.device)
    if ref is cond:  # x and y are both plain values: their own dtypes, not bool
        x, y = Tensor(x, device=ref.device), Tensor(y, device=ref.device)
    else:
        x, y = ref._other(x), ref._other(y)
    if cond.dtype != bool_:
        # As PyTorch: a float condition (NaN counts as true under != 0) is more often a
        # mistake than a mask.
        raise TypeError(f"where: condition must be a bool tensor, got dtype {cond.dtype} "
                        f"(shape {cond.shape}); compare first, e.g. tg.where(c != 0, x, y)")
    return ops.Where.apply(cond, x, y)


def _tensor_list(tensors, op):
    """The tensors to join, as a non-empty list; anything else is named."""
    if isinstance(tensors, Tensor) or not hasattr(tensors, "__iter__"):
        what = (f"a Tensor of shape {tensors.shape}" if isinstance(tensors, Tensor)
                else shown_value(tensors))
        raise TypeError(f"{op}: tensors must be a sequence of Tensors (a list or a tuple), "
                        f"got {what}")
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{op} needs at least one tensor")
    return _all_tensors(tensors, op, "element {}")


def _axis_or_dim(axis, dim, op=None):
    """``axis``, or its alias ``dim`` (PyTorch's name): either one, or both the same."""
    if dim is None:
        return axis
    if axis is not None and axis != dim:
        raise TypeError(f"{op + ': ' if op else ''}give either axis or dim, not both "
                        f"(got axis={axis!r}, dim={dim!r})")
    return dim


def _keepdims(keepdims, keepdim, op):
    """``keepdims``, or its alias ``keepdim`` (PyTorch's name), as a bool: one of the
    two, not both (False if neither is given)."""
    if keepdim is _NOT_GIVEN:
        return False if keepdims is _NOT_GIVEN else check_flag("keepdims", keepdims, op)
    if keepdims is not _NOT_GIVEN:
        raise TypeError(f"{op}: give either keepdims or keepdim, not both (got "
                        f"keepdims={keepdims!r}, keepdim={keepdim!r})")
    return check_flag("keepdim", keepdim, op)


def _join_axis(axis, dim, op, default=0):
    """The axis of an op whose ``axis`` defaults to an int (cat, stack, chunk: 0; softmax:
    -1): ``dim`` (PyTorch's name) wins over that default, not over another axis.
    (cat's ``axis=None`` stays an error: NumPy would flatten.)"""
    if dim is None:
        return axis
    at_default = type(axis) is int and axis == default
    return _axis_or_dim(None if at_default else axis, dim, op)


def concatenate(tensors, axis=0, dim=None):
    """Join tensors along an existing ``axis`` (``dim`` is an alias); shapes must match
    elsewhere.  Alias ``cat``."""
    tensors = _tensor_list(tensors, "concatenate")
    common_backend(tensors, "concatenate")
    axis = _join_axis(axis, dim, "concatenate")
    if tensors[0].ndim == 0:
        raise ValueError("concatenate: 0-d tensors cannot be joined; use stack")
    axis = _norm_axis(axis, tensors[0].ndim, "concatenate")
    ref = tensors[0].shape
    for t in tensors[1:]:
        if t.ndim != len(ref) or any(a != b for i, (a, b) in enumerate(zip(t.shape, ref))
                                     if i != axis):
            raise ValueError(f"concatenate along axis {axis}: shapes {ref} and {t.shape} "
                             f"must match except on that axis")
    return ops.Concatenate.apply(*tensors, axis=axis)


cat = concatenate


def stack(tensors, axis=0, dim=None):
    """Join tensors of one shape along a new ``axis`` (``dim`` is an alias)."""
    tensors = _tensor_list(tensors, "stack")
    common_backend(tensors, "stack")   # before the unsqueezes, so the error names stack
    axis = _norm_axis(_join_axis(axis, dim, "stack"), tensors[0].ndim + 1, "stack",
                      of="the stacked result")
    for t in tensors[1:]:
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack: all tensors need one shape, got {tensors[0].shape} "
                             f"and {t.shape}")
    return concatenate([t.unsqueeze(axis) for t in tensors], axis)


def split(x, indices_or_sections, axis=0, dim=None):
    """As ``numpy.split``: a number of equal sections, or the indices to cut at.

    ``dim`` is refused: it is PyTorch's name, whose ``split`` reads an int as a
    section size, not a count; the error says how to get either."""
    if not isinstance(x, Tensor):
        raise TypeError(f"split: x must be a Tensor, got {type(x).__name__}")
    if dim is not None:
        raise TypeError(_split_dim_error(x, indices_or_sections, dim))
    if x.ndim == 0:
        raise ValueError("split: a 0-d tensor has no axis to split; it needs at least one "
                         "dimension")
    axis = _norm_axis(axis, x.ndim, "split")
    n = x.shape[axis]
    sections = as_scalar(indices_or_sections)
    if is_int(sections):
        if sections <= 0 or n % sections:
            raise ValueError(f"split: axis {axis} of size {n} does not divide into "
                             f"{sections} equal sections")
        step = n // sections
        cuts = [step * i for i in range(1, sections)]
    else:
        cuts = int_list(indices_or_sections)
        if cuts is None:
            raise TypeError(f"split: indices_or_sections must be an int (a number of equal "
                            f"sections) or a sequence of int indices, got "
                            f"{indices_or_sections!r}")
    bounds = zip([0] + cuts, cuts + [n])
    lead = (slice(None),) * axis
    return [x[lead + (slice(a, b),)] for a, b in bounds]


def _split_dim_error(x, indices_or_sections, dim):
    """split's message for ``dim=``: what PyTorch's split(..., dim=dim) would give,
    as the numpy.split call that gives it, when the arguments allow."""
    head = f"split: follows numpy.split, with axis= (got dim={dim!r}): "
    try:
        sections = as_scalar(indices_or_sections)
        axis = _norm_axis(dim, x.ndim, "split")
        n = x.shape[axis]
    except (TypeError, ValueError, IndexError):
        sections = axis = n = None
    if n is not None and is_int(sections) and sections >= 1:
        cuts = list(range(sections, n, sections))
        shown = cuts if len(cuts) <= 8 else f"list(range({sections}, {n}, {sections}))"
        equal = (f"; for {sections} equal sections: split({sections}, axis={axis})"
                 if n % sections == 0 else "")
        return (f"{head}an int is a number of equal sections, not PyTorch's section size; "
                f"for sections of size {sections}, as torch's split({sections}, dim={dim}) "
                f"gives, pass the indices to cut at: split({shown}, axis={axis}){equal}")
    sizes = None if is_int(sections) else int_list(indices_or_sections)
    if n is not None and sizes and all(size >= 0 for size in sizes) and sum(sizes) == n:
        cuts = list(itertools.accumulate(sizes))[:-1]
        return (f"{head}a list holds the indices to cut at, not PyTorch's section sizes; "
                f"for sections of sizes {sizes}, as torch's split gives, pass "
                f"split({cuts}, axis={axis})")
    return (f"{head}an int is a number of equal sections and a list the indices to cut at, "
            f"not PyTorch's section sizes; for sections of size s of an axis of length n, "
            f"pass the indices list(range(s, n, s)) and axis=")


# ---- factories -------------------------------------------------------------------
_rng = np.random.default_rng()


def manual_seed(seed):
    """Seed the generator behind randn/rand/dropout/shuffling (host-side, so a
    seed gives the same numbers on every device).  ``seed``: an int >= 0, a
    ``numpy.random.SeedSequence``, or None for fresh entropy from the OS."""
    global _rng
    _rng = np.random.default_rng(check_seed("manual_seed: seed", seed, none=True,
                                            also=(np.random.SeedSequence,)))
    return _rng


def get_rng():
    """The host ``numpy.random.Generator`` behind all randomness (see :func:`manual_seed`)."""
    return _rng


def tensor(data, requires_grad=False, dtype=None, device=None):
    """Make a tensor from a copy of ``data``: Python floats become float32,
    Python ints int64, NumPy arrays keep their dtype.

    With a ``dtype``, as in PyTorch: Python data (numbers, NumPy scalars,
    nested sequences) must fit an integer ``dtype``: fractions are cut
    towards zero, but NaN (``ValueError``), infinities and values out of its
    range (``OverflowError``) are refused; a Python int beyond 64 bits fits
    only a float (or bool) dtype.  An array or a tensor is cast as
    :meth:`Tensor.astype` casts it, refusing nothing (out-of-range integers
    wrap around).
    """
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


def _factory(array, requires_grad, device):
    backend = get_backend(device)
    return Tensor._make(backend.asarray(array), backend, requires_grad)


def _filled(shape, value, dtype, device, requires_grad=False, cls=None):
    """A ``cls`` (default Tensor) of ``shape`` filled with ``value``, allocated and
    filled on its device: a host array would be one more host -> device copy."""
    backend = get_backend(device)
    # Converted on the host, by NumPy's rules (an int beyond 64 bits into a float
    # dtype too), so that every backend fills with the same value.
    value = dtype.type(float(value) if dtype.kind == "f" else value)
    with backend.context():
        data = backend.xp.full(shape, value, dtype=dtype)
    return (cls or Tensor)._make(data, backend, requires_grad)


def _float_dtype(dtype):
    return float32 if dtype is None else _as_dtype(dtype)


def zeros(*shape, dtype=None, device=None, requires_grad=False):
    """A tensor of zeros (float32 unless ``dtype``); ``shape`` as ints or one tuple."""
    return _filled(_new_shape(shape, "zeros"), 0, _float_dtype(dtype), device, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False):
    """A tensor of ones (float32 unless ``dtype``); ``shape`` as ints or one tuple."""
    return _filled(_new_shape(shape, "ones"), 1, _float_dtype(dtype), device, requires_grad)


def full(shape, fill_value, dtype=None, device=None, requires_grad=False):
    """A tensor of ``shape`` filled with ``fill_value`` (float32 unless ``dtype``)."""
    shape = _new_shape((shape,), "full")
    dtype = _float_dtype(dtype)
    fill_value = check_value_fits("full: fill_value",
                                  check_fill_value("full: fill_value", fill_value), dtype)
    if dtype == bool_:   # any number is a truth value (NumPy cannot read ints beyond 64 bits)
        fill_value = bool(fill_value)
    return _filled(shape, fill_value, dtype, device, requires_grad)


def _like_arg(t, op):
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: t must be a Tensor, got {type(t).__name__}; for an array, "
                        f"use tg.zeros(shape) or tg.ones(shape)")


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    """Zeros with the shape of ``t`` and, unless given (not None), its dtype and device."""
    _like_arg(t, "zeros_like")
    return zeros(t.shape, dtype=t.dtype if dtype is None else dtype,
                 device=t.device if device is None else device,
                 requires_grad=requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False):
    """Ones with the shape of ``t`` and, unless given (not None), its dtype and device."""
    _like_arg(t, "ones_like")
    return ones(t.shape, dtype=t.dtype if dtype is None else dtype,
                device=t.device if device is None else device,
                requires_grad=requires_grad)


def _random_dtype(dtype, name):
    dtype = _float_dtype(dtype)
    if dtype.kind != "f":   # the samples would be truncated to zeros (or all True)
        raise TypeError(f"{name}: dtype must be a floating-point type, got {dtype}")
    return dtype


def randn(*shape, dtype=None, device=None, requires_grad=False):
    """Standard normal samples, drawn on the host from the seeded generator."""
    dtype = _random_dtype(dtype, "randn")
    data = _rng.standard_normal(_new_shape(shape, "randn")).astype(dtype)
    return _factory(data, requires_grad, device)


def rand(*shape, dtype=None, device=None, requires_grad=False):
    """Uniform samples in [0, 1), drawn on the host from the seeded generator."""
    dtype = _random_dtype(dtype, "rand")
    data = _rng.random(_new_shape(shape, "rand")).astype(dtype)
    return _factory(data, requires_grad, device)


def arange(start, stop=None, step=1, dtype=None, device=None, requires_grad=False):
    """``start, start + step, ...`` below ``stop``, as ``numpy.arange`` (floats: float32)."""
    if stop is None:
        start, stop = 0, start
    start, stop, step = (check_finite(f"arange: {name}", value) for name, value in
                         (("start", start), ("stop", stop), ("step", step)))
    if step == 0:
        raise ValueError("arange: step must be nonzero")
    if is_int(start) and is_int(stop) and is_int(step):
        count = -((start - stop) // step)      # ceil((stop - start) / step), exactly
    else:
        count = (stop - start) / step          # inf where the span overflows a float
    if count > _INTP_MAX:
        raise ValueError(f"arange: start {start}, stop {stop} and step {step} give more "
                         f"elements than a tensor can hold ({_INTP_MAX} at most)")
    data = np.arange(start, stop, step)
    if dtype is None and data.dtype.kind == "f":
        dtype = float32
    return _factory(data.astype(_as_dtype(dtype) or data.dtype), requires_grad, device)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    """An ``n`` x ``m`` (default n x n) identity matrix (float32 unless ``dtype``)."""
    n = check_int("eye: n", n, low=0)
    m = None if m is None else check_int("eye: m", m, low=0)
    return _factory(np.eye(n, m, dtype=_float_dtype(dtype)), requires_grad, device)


# PyTorch names this Tensor lacks (x.numel(), x.long()): reading one raises an
# AttributeError naming the equivalent here (x.size, x.astype(tg.int64)).
add_missing_names(Tensor)

from . import ops  # noqa: E402  (ops needs Tensor; Tensor methods need ops)
