"""``Module``, ``Parameter`` and the containers: how networks hold their state.

A :class:`Module` keeps three ordered registries, filled by plain attribute
assignment in ``__init__``:

* ``_parameters``: :class:`Parameter` tensors that an optimiser updates,
* ``_buffers``: tensors that are state but not learned (BatchNorm's
  running statistics), registered with :meth:`Module.register_buffer`,
* ``_modules``: child modules.

Everything else (``state_dict``, ``to``, ``train``/``eval``, ``repr``)
walks these registries, so a layer only has to assign its pieces.  Names
are dotted paths (``features.0.weight``); the order is the registration
order, each module's own parameters before those of its children, as in
PyTorch, so parameter lists and state dicts line up across runs.
"""
from __future__ import annotations

import itertools
import numbers
from collections import OrderedDict, namedtuple
from collections.abc import Mapping

import numpy as np

from .._checks import check_cast_fits, check_flag, shown_value
from .._porting import hint_error, nn_module_hint
from ..autograd import (Function, RemovableHandle, check_replacement, hook_name,
                        is_grad_enabled, no_grad)
from ..backend import get_backend
from ..tensor import (_SUPPORTED_KINDS, Tensor, _as_dtype, _device_and_dtype, _find_backend_of,
                      _to_array)

__all__ = ["Parameter", "Module", "Sequential", "ModuleList", "ModuleDict", "ParameterList",
           "ParameterDict", "Identity", "IncompatibleKeys", "RemovableHandle"]


class Parameter(Tensor):
    """A tensor that a :class:`Module` registers as learnable.

    ``Parameter(data, requires_grad=True, dtype=None, device=None)``.  The
    data are always *copied* into a fresh array: optimisers update
    parameters in place, and that must never write into an array the
    caller still holds.  Assigning a ``Parameter`` to a module attribute
    registers it (``self.weight = Parameter(...)``).
    """

    def __init__(self, data=None, requires_grad=True, dtype=None, device=None):
        if data is None:
            data = np.zeros(0, dtype=np.float32)
        if device is None and isinstance(data, Tensor):
            device = data.device
        backend = get_backend(device)
        array = _to_array(data, backend, _as_dtype(dtype))
        if array.dtype.kind != "f":
            raise TypeError(f"a Parameter must have a floating-point dtype, got {array.dtype}; "
                            f"pass dtype=float32 (or float64) to convert")
        self._init(array, backend, requires_grad)  # _to_array made a copy

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


def _register(registry, hook, where):
    """Add ``hook`` to a module's ``registry``; its handle."""
    if not callable(hook):
        raise TypeError(f"{where}: hook must be a function, got {shown_value(hook)}")
    handle = RemovableHandle(registry)
    registry[handle.id] = hook
    return handle


class BackwardHook(Function):
    """y = x: marks where ``register_full_backward_hook`` hooks watch a gradient."""

    view_of_input = True

    def forward(self, x):
        return x

    def backward(self, grad_out):
        return grad_out


class _BackwardHooks:
    """One call of a module with ``register_full_backward_hook`` hooks.

    Its input and output pass through a :class:`BackwardHook` op each: the
    gradient of the new input tensor is then what this module sends its
    input (an input used outside the module too gets more than that), and
    the tensor hooks on the two run the module's hooks.  The output's comes
    first in the sweep and keeps ``grad_output`` for the input's.
    """

    def __init__(self, module, hooks):
        self.module, self.hooks = module, hooks
        self.grad_output = (None,)
        self.position = None   # of the argument that requires grad, if one does
        self.n_args = 0

    def name(self):
        return type(self.module).__name__

    def watch_input(self, args):
        self.n_args = len(args)
        positions = [k for k, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad]
        if len(positions) > 1:
            raise TypeError(f"register_full_backward_hook: {self.name()} was called with "
                            f"{len(positions)} tensors that require grad (arguments "
                            f"{positions}); backward hooks here take modules called with one")
        if not positions:
            return args
        (self.position,) = positions
        x = BackwardHook.apply(args[self.position])
        x.register_hook(self._input_hook)
        return args[:self.position] + (x,) + args[self.position + 1:]

    def watch_output(self, out):
        if not isinstance(out, Tensor):
            raise TypeError(f"register_full_backward_hook: {self.name()} returned a "
                            f"{type(out).__name__}; backward hooks here take modules that "
                            f"return one tensor")
        if not out.requires_grad:   # no gradient will come back through it
            return out
        out = BackwardHook.apply(out)
        out.register_hook(self._output_hook)
        return out

    def _output_hook(self, grad):
        self.grad_output = (grad,)
        if self.position is None:
            self._run((None,) * self.n_args)

    def _input_hook(self, grad):
        grad_input = [None] * self.n_args
        grad_input[self.position] = grad
        return self._run(tuple(grad_input))[self.position]

    def _run(self, grad_input):
        for hook in self.hooks:
            result = hook(self.module, grad_input, self.grad_output)
            if result is not None:
                grad_input = self._check(result, grad_input, hook)
        return grad_input

    def _check(self, result, grad_input, hook):
        """``result``, what ``hook`` returned in place of ``grad_input``, as a tuple of
        one gradient of the right kind where ``grad_input`` has one, None elsewhere."""
        who = f"register_full_backward_hook: the hook {hook_name(hook)} of {self.name()}"
        if not isinstance(result, (tuple, list)) or len(result) != len(grad_input):
            what = type(result).__name__ + (f" of {len(result)}" if isinstance(
                result, (tuple, list)) else "")
            raise TypeError(f"{who} returned a {what}; expected None or a tuple of "
                            f"{len(grad_input)} gradient(s), one per positional argument "
                            f"(as grad_input)")
        for k, (new, old) in enumerate(zip(result, grad_input)):
            if old is None and new is not None:
                raise TypeError(f"{who} returned a gradient for argument {k}, which gets "
                                f"none (not a tensor that requires grad); return None there")
            if old is not None and new is None:
                raise TypeError(f"{who} returned None for argument {k}, a tensor that "
                                f"requires grad; return its gradient (zeros to send none)")
            if old is not None:
                check_replacement(new, old, who)
        return tuple(result)


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])
IncompatibleKeys.__doc__ = "What ``load_state_dict(strict=False)`` skipped."


def _addindent(text, spaces):
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    pad = " " * spaces
    return "\n".join([lines[0]] + [pad + line for line in lines[1:]])


def _host_array(value, name):
    """A state-dict value (Tensor, NumPy/CuPy array, number) -> a host array.

    Raises ``TypeError`` naming ``name`` for values that are not arrays of
    real numbers (strings, objects, complex numbers, ragged lists).
    """
    if isinstance(value, Tensor):
        array = value.numpy()
    elif isinstance(value, np.ndarray):
        array = value
    else:
        backend = _find_backend_of(value)
        if backend is not None:
            array = backend.to_numpy(value)
        else:
            try:
                array = np.asarray(value)
            except Exception as e:  # ragged lists and other exotic inputs
                raise TypeError(f"{name}: cannot read a {type(value).__name__} as an array "
                                f"({e})") from None
    if array.dtype.kind not in _SUPPORTED_KINDS:
        raise TypeError(f"{name}: got a {type(value).__name__} of dtype {array.dtype}; "
                        f"expected real numbers (float, int or bool)")
    return array


def _cast_for_load(array, dtype):
    """Host ``array`` cast to ``dtype`` and None, or None and why it would not survive
    the cast (a phrase).  The cast is made once, here, for the check and the load.

    Floats take any real numbers, rounded to the parameter's precision (what
    a cast to it means), but a finite value beyond its range would become
    inf.  Integer and bool buffers (BatchNorm's ``num_batches_tracked``) must
    get values they can hold exactly: a fraction, NaN or an out-of-range
    count is a damaged state.
    """
    if np.can_cast(array.dtype, dtype, casting="safe") or array.size == 0:
        return array.astype(dtype, copy=False), None
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            cast = array.astype(dtype)
        # One pass over the cast values decides the common case; only if some are
        # not finite is the source read, to tell an overflow from a loaded NaN or inf.
        if np.isfinite(cast).all():
            return cast, None
        overflows = np.isfinite(array) & ~np.isfinite(cast)
        if overflows.any():
            values = array[overflows]
            worst = values[np.argmax(np.abs(values))]   # the largest, with its sign
            return None, (f"the value {worst} overflows the model's dtype {dtype} (largest "
                          f"finite value {np.finfo(dtype).max})")
        return cast, None
    expected = (f"values of dtype {array.dtype} do not fit the model's dtype {dtype} "
                f"(expected whole numbers in its range)")
    if dtype.kind == "b":
        if not np.isin(array, (0, 1)).all():
            return None, expected
        return array.astype(dtype), None
    # Whole numbers only (NaN fails this too): a cast would cut a fraction silently.
    if array.dtype.kind == "f" and not (array == np.trunc(array)).all():
        return None, expected
    try:   # the package's one rule for values in an integer dtype
        check_cast_fits(array, dtype, f"a value of dtype {array.dtype}",
                        hint="the model's integer buffers take whole numbers in their range")
    except (OverflowError, ValueError) as e:
        return None, str(e)
    return array.astype(dtype), None


def _move_(t, backend=None, dtype=None):
    """Move/cast tensor ``t`` in place: the same object, new ``.data``.

    Keeping the object is what lets an optimiser built before
    ``model.to(device)`` go on updating the moved parameters.  Only
    floating-point tensors are cast (integer buffers keep their dtype).
    """
    data = t.data
    if dtype is not None and data.dtype.kind == "f" and data.dtype != dtype:
        # The cast allocates: on a GPU that is not the current one it must run
        # in the source device's context.
        with t._backend.context():
            data = data.astype(dtype)
    if backend is not None and backend is not t._backend:
        data = backend.asarray(t._backend.to_numpy(data))
        t._backend = backend
    t.data = data
    # ._grad, not .grad: reading that warns for a buffer computed by ops (a non-leaf).
    if t._grad is not None:
        t.grad = t._grad.detach().to(device=backend.device if backend is not None else None,
                                     dtype=dtype if t._grad.dtype.kind == "f" else None)


def _parse_to_args(device, dtype):
    """``to("cuda")``, ``to(float64)``, ``to("cuda", float64)``, ``to(x)`` -> (backend,
    dtype)."""
    other = device if isinstance(device, Tensor) else None
    device, dtype = _device_and_dtype(device, dtype)
    backend = get_backend(device) if device is not None else None
    if dtype is not None and dtype.kind != "f":
        if other is not None:   # model.to(batch) with a batch of integer pixels or labels
            raise TypeError(f"Module.to(other) takes other's device and dtype, and other "
                            f"has dtype {dtype}; Module.to() casts floating-point parameters "
                            f"and buffers only: pass other.device ({other.device!r}) to "
                            f"move the model without a cast")
        raise TypeError(f"Module.to() casts floating-point parameters and buffers only; "
                        f"got dtype {dtype}")
    return backend, dtype


# The instance attributes Module.__init__ sets: never replaced by a registration.
_MODULE_STATE = frozenset({"training", "_parameters", "_buffers", "_non_persistent", "_modules",
                           "_forward_hooks", "_forward_pre_hooks", "_backward_hooks"})


class Module:
    """Base class of every layer and network.

    Subclass it, call ``super().__init__()`` first, assign parameters,
    buffers and sub-modules as attributes, and define ``forward``.  Call
    the module itself (``model(x)``), not ``forward``, so that hooks run.
    A name already taken by another attribute (a method such as ``eval``
    or ``forward``, a setting such as ``training``) cannot be registered:
    ``KeyError: "attribute 'eval' already exists"``, as in PyTorch.
    """

    training: bool
    # Names of this module's own buffers that a state dict may leave out: loading one
    # without them keeps the module's values and does not report them missing.
    _optional_state = ()

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_backward_hooks", OrderedDict())

    # ---- forward and hooks ---------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward(); define "
                                  f"forward(self, ...) in the subclass")

    def __call__(self, *args, **kwargs):
        for hook in list(self._forward_pre_hooks.values()):
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        backward_hooks = None
        if self._backward_hooks and is_grad_enabled():
            backward_hooks = _BackwardHooks(self, list(self._backward_hooks.values()))
            args = backward_hooks.watch_input(args)
        out = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            result = hook(self, args, out)
            if result is not None:
                out = result
        if backward_hooks is not None:
            out = backward_hooks.watch_output(out)
        return out

    def register_forward_pre_hook(self, hook):
        """``hook(module, args)`` runs before each ``forward``, ``args`` the tuple of
        positional arguments (keyword arguments go to ``forward`` unseen); it returns
        None, or new arguments: a tuple, or one value, which becomes ``(value,)``.
        Returns a handle whose ``remove()`` unregisters the hook."""
        return _register(self._forward_pre_hooks, hook, "register_forward_pre_hook")

    def register_forward_hook(self, hook):
        """``hook(module, args, output)`` runs after each ``forward`` (``args`` as the
        pre-hooks left them); it returns None, or an output to use instead.  Returns
        a handle whose ``remove()`` unregisters the hook."""
        return _register(self._forward_hooks, hook, "register_forward_hook")

    def register_full_backward_hook(self, hook):
        """``hook(module, grad_input, grad_output)`` runs in each backward pass through
        this module once the gradient of its input is complete; it returns None, or
        a tuple of gradients to send to the inputs instead of ``grad_input``.

        ``grad_output`` is ``(gradient of the output,)`` and ``grad_input`` holds one
        entry per positional argument of the call: the gradient the module sends to
        that argument (not what uses outside the module add to it) where it is a
        tensor that requires grad, None elsewhere.  With no input that requires grad,
        the hook runs once the output's gradient is there, and must return None.
        As in PyTorch, each call (with grad enabled) passes the input and the
        output through an identity op (``BackwardHook``), whose gradients the
        hooks registered at that call are given; unlike PyTorch, the module must
        return one tensor and take at most one that requires grad (the gradients
        of several inputs are complete at different times of the sweep).  Returns
        a handle whose ``remove()`` unregisters the hook.
        """
        return _register(self._backward_hooks, hook, "register_full_backward_hook")

    # ---- registration --------------------------------------------------------------
    def _registries(self):
        try:
            d = self.__dict__
            return d["_parameters"], d["_buffers"], d["_modules"]
        except KeyError:
            raise AttributeError(f"cannot assign parameters, buffers or modules to a "
                                 f"{type(self).__name__} before Module.__init__() was "
                                 f"called; call super().__init__() first") from None

    @staticmethod
    def _check_name(name, kind):
        if not isinstance(name, str):
            raise TypeError(f"{kind} name must be a string, got {type(name).__name__}")
        if not name or "." in name:
            raise KeyError(f"{kind} name {name!r} must be a non-empty string without '.'")

    def _check_free(self, name):
        """Refuse a name taken by an attribute that is not a parameter, buffer or child.

        Class attributes (methods such as ``eval`` or ``forward``) win over
        ``__getattr__``: a tensor registered under such a name would be saved
        and optimised but unreachable as ``self.name``.  As in PyTorch, this is
        a ``KeyError``; a registered entry of that name may be replaced.
        """
        if any(name in r for r in self._registries()):
            return
        if hasattr(type(self), name) or name in self.__dict__:
            raise KeyError(f"attribute '{name}' already exists")

    def _forget(self, name):
        """Drop ``name`` from every registry and the instance dict."""
        for registry in self._registries():
            registry.pop(name, None)
        self.__dict__.pop(name, None)
        self._non_persistent.discard(name)

    def register_parameter(self, name, param):
        """Register ``param`` (a :class:`Parameter`, or None for an absent one)."""
        self._check_name(name, "parameter")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot register a {type(param).__name__} as parameter {name!r}: "
                            f"wrap it in nn.Parameter (or register it as a buffer)")
        params, _, _ = self._registries()
        self._check_free(name)
        if name in self._modules or name in self._buffers:
            self._forget(name)
        params[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        """Register a tensor that is state but not a parameter (e.g. running statistics).

        Buffers move with ``to()`` and appear in ``state_dict()`` unless
        ``persistent=False``.  ``tensor`` may be None (an absent buffer).
        """
        self._check_name(name, "buffer")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"buffer {name!r} must be a Tensor or None, got "
                            f"{type(tensor).__name__}")
        _, buffers, _ = self._registries()
        self._check_free(name)
        if name in self._parameters or name in self._modules:
            self._forget(name)
        buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def add_module(self, name, module):
        """Register ``module`` as a child called ``name`` (None for an absent one)."""
        self._check_name(name, "module")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        _, _, modules = self._registries()
        self._check_free(name)
        if name in self._parameters or name in self._buffers:
            self._forget(name)
        modules[name] = module

    register_module = add_module

    def __setattr__(self, name, value):
        if isinstance(value, (Parameter, Module)):
            self._registries()   # the "call super().__init__() first" error, if so
            # Assignment replaces a plain instance attribute of that name (as in
            # PyTorch), but not the module's own state; a class attribute is still
            # refused by _check_free.
            if name in self.__dict__ and name not in _MODULE_STATE:
                del self.__dict__[name]
            if isinstance(value, Parameter):
                self.register_parameter(name, value)
            else:
                self.add_module(name, value)
        else:
            d = self.__dict__
            if name in d.get("_parameters", ()):
                if value is not None:
                    raise TypeError(f"cannot assign a {type(value).__name__} to parameter "
                                    f"{name!r}: expected an nn.Parameter or None")
                self._parameters[name] = None
            elif name in d.get("_modules", ()):
                if value is not None:
                    raise TypeError(f"cannot assign a {type(value).__name__} to child module "
                                    f"{name!r}: expected a Module or None")
                self._modules[name] = None
            elif name in d.get("_buffers", ()):
                if value is not None and not isinstance(value, Tensor):
                    raise TypeError(f"cannot assign a {type(value).__name__} to buffer "
                                    f"{name!r}: expected a Tensor or None")
                self._buffers[name] = value
            else:
                object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Called only when normal lookup fails: look in the registries.
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = d.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        hint = nn_module_hint(name)
        if hint is not None:   # a PyTorch method missing here: say what does the same
            raise hint_error(f"'{type(self).__name__}' object", name, hint)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        if any(name in r for r in self._registries()):
            self._forget(name)
        else:
            object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    # ---- traversal -----------------------------------------------------------------
    def named_modules(self, prefix="", memo=None):
        """``(dotted name, module)`` for this module and every descendant, depth first.

        A module reachable along two paths is listed once.
        """
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def get_submodule(self, target):
        """The module at dotted path ``target`` (``"layer1.0.conv1"``; ``""``: self), as
        PyTorch's; an AttributeError names the first part of the path that is missing or
        not a module."""
        if not isinstance(target, str):
            raise TypeError(f"get_submodule: target must be a dotted-path string, got "
                            f"{type(target).__name__}")
        module = self
        path = []
        for name in target.split(".") if target else ():
            where = ".".join(path) or "the root module"
            child = getattr(module, name, None) if name else None
            if child is None:
                raise AttributeError(f"get_submodule({target!r}): {type(module).__name__} "
                                     f"({where}) has no attribute `{name}`")
            if not isinstance(child, Module):
                raise AttributeError(f"get_submodule({target!r}): `{name}` of {where} is a "
                                     f"{type(child).__name__}, not an nn.Module")
            module = child
            path.append(name)
        return module

    def get_parameter(self, target):
        """The parameter at dotted path ``target`` (``"layer1.0.conv1.weight"``), as
        PyTorch's; an AttributeError says which part is missing or not a parameter."""
        if not isinstance(target, str):
            raise TypeError(f"get_parameter: target must be a dotted-path string, got "
                            f"{type(target).__name__}")
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        where = module_path or "the root module"
        param = getattr(module, name, None) if name else None
        if param is None:
            raise AttributeError(f"get_parameter({target!r}): {type(module).__name__} "
                                 f"({where}) has no attribute `{name}`")
        if not isinstance(param, Parameter):
            raise AttributeError(f"get_parameter({target!r}): `{name}` of {where} is a "
                                 f"{type(param).__name__}, not an nn.Parameter")
        return param

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, child in self._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named_members(self, registry, prefix, recurse):
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_prefix, module in modules:
            for name, t in getattr(module, registry).items():
                if t is None or id(t) in seen:
                    continue
                seen.add(id(t))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), t

    def named_parameters(self, prefix="", recurse=True):
        """``(dotted name, Parameter)`` pairs in registration order; shared ones once.

        Each module's own parameters come before its children's.
        """
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True):
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def num_parameters(self, trainable_only=False):
        """Total number of parameter elements (shared parameters counted once)."""
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    def apply(self, fn):
        """Call ``fn(module)`` on every descendant (children first) and on self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ---- modes and gradients -------------------------------------------------------
    def train(self, mode=True):
        """Set training mode (``True``) or evaluation mode on self and all descendants.

        As in PyTorch, each child's own ``train`` is called: a module that
        overrides it (to keep a frozen BatchNorm in evaluation mode, say) keeps
        doing so when the model it is part of changes mode.
        """
        mode = check_flag("train: mode", mode)
        object.__setattr__(self, "training", mode)
        for child in self.children():
            child.train(mode)
        return self

    def eval(self):
        """Evaluation mode: dropout off, BatchNorm uses its running statistics."""
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Forget the gradients of all parameters (``None``, or zeros if asked)."""
        for p in self.parameters():
            if p._grad is None:   # the stored value: no property call per parameter
                continue
            if set_to_none:
                p.grad = None
            else:
                with p._backend.context():
                    p.grad = Tensor._make(p.xp.zeros_like(p.data), p._backend)

    # ---- devices and dtypes --------------------------------------------------------
    def to(self, device=None, dtype=None):
        """Move parameters and buffers to ``device`` and/or cast them to ``dtype``.

        ``to("cuda")``, ``to(float64)``, ``to("cpu", float64)``, or ``to(x)``: the
        device and (float) dtype of tensor ``x``.  The tensors
        are changed in place (same objects, new ``.data``), so optimisers
        and references held elsewhere keep working.  Only floating-point
        tensors are cast.
        """
        backend, dtype = _parse_to_args(device, dtype)
        with no_grad():
            for t in itertools.chain(self.parameters(), self.buffers()):
                _move_(t, backend, dtype)
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

    def double(self):
        return self.to(dtype=np.float64)

    def float(self):
        return self.to(dtype=np.float32)

    def half(self):
        """Cast floating-point parameters and buffers to float16 (``to(float16)``)."""
        return self.to(dtype=np.float16)

    # ---- state ---------------------------------------------------------------------
    def _state_items(self, prefix=""):
        """``(key, tensor)`` of own parameters and persistent buffers, then children's."""
        for name, p in self._parameters.items():
            if p is not None:
                yield prefix + name, p
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent:
                yield prefix + name, b
        for name, child in self._modules.items():
            if child is not None:
                yield from child._state_items(f"{prefix}{name}.")

    def state_dict(self, keep_vars=False):
        """An ordered ``{dotted name: Tensor}`` of parameters and persistent buffers.

        The tensors are detached and share memory with the module, as in
        PyTorch: an optimiser step changes them.  Snapshot with
        ``{k: v.numpy() for k, v in model.state_dict().items()}``.
        ``keep_vars=True`` returns the Parameter objects themselves.
        """
        return OrderedDict((k, t if keep_vars else t.detach()) for k, t in self._state_items())

    def load_state_dict(self, state_dict, strict=True):
        """Copy values from ``state_dict`` into the parameters and buffers, in place.

        Values may be Tensors, NumPy/CuPy arrays or numbers on any device;
        they are cast to each tensor's dtype and copied to its device.
        Every problem is collected first and reported in one error: missing
        and unexpected keys (only when ``strict``), shape mismatches and
        values that are not real numbers or do not fit the tensor's dtype,
        such as a finite float64 beyond float32's range (always).  Every
        value is checked, converted and moved to its device before the first
        one is copied, so nothing is changed unless the whole load can
        succeed.
        Returns ``IncompatibleKeys(missing_keys, unexpected_keys)``.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"load_state_dict expects a dict, got {type(state_dict).__name__}")
        strict = check_flag("load_state_dict: strict", strict)
        own = OrderedDict(self._state_items())
        optional = {f"{prefix}.{name}" if prefix else name
                    for prefix, module in self.named_modules()
                    for name in module._optional_state}
        missing = [k for k in own if k not in state_dict and k not in optional]
        unexpected = [k for k in state_dict if k not in own]
        mismatched, bad_values, updates = [], [], []
        for key, t in own.items():
            if key not in state_dict:
                continue
            try:
                value = _host_array(state_dict[key], key)
            except TypeError as e:
                bad_values.append(str(e))
                continue
            if tuple(value.shape) != t.shape:
                mismatched.append(f"{key}: checkpoint shape {tuple(value.shape)}, "
                                  f"model shape {t.shape}")
                continue
            cast, problem = _cast_for_load(value, t.dtype)
            if problem is not None:
                bad_values.append(f"{key}: {problem}")
                continue
            updates.append((key, t, value.dtype, cast))
        problems = []
        if strict and missing:
            problems.append("missing key(s): " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected key(s): " + ", ".join(map(str, unexpected)))
        if mismatched:
            problems.append("shape mismatch(es): " + "; ".join(mismatched))
        if bad_values:
            problems.append("bad value(s): " + "; ".join(bad_values))
        if problems:
            raise RuntimeError(f"error(s) loading state_dict into {type(self).__name__}:\n  "
                               + "\n  ".join(problems))
        # Transfer everything first (the values were cast by the check): a failure
        # here (say, out of device memory) must still leave the module untouched.
        converted = []
        for key, t, src_dtype, cast in updates:
            try:
                converted.append((t, t._backend.asarray(cast)))
            except Exception as e:
                raise RuntimeError(f"error loading state_dict into {type(self).__name__}: "
                                   f"cannot copy {key} ({src_dtype}, shape "
                                   f"{tuple(cast.shape)}) to {t.device} as {t.dtype}: "
                                   f"{type(e).__name__}: {e}; nothing was changed") from e
        with no_grad():
            for t, array in converted:
                with t._backend.context():
                    t.data[...] = array
                t._bump_version()
        return IncompatibleKeys(missing, unexpected)

    # ---- printing ------------------------------------------------------------------
    def extra_repr(self):
        """The layer's settings for ``repr`` (``"3, 8, kernel_size=(3, 3)"``); override it."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): " + _addindent(repr(m), 2)
                       for name, m in self._modules.items()]
        lines = extra_lines + child_lines
        body = ""
        if len(extra_lines) == 1 and not child_lines:
            body = extra_lines[0]
        elif lines:
            body = "\n  " + "\n  ".join(lines) + "\n"
        return f"{type(self).__name__}({body})"


class Identity(Module):
    """y = x (a placeholder layer)."""

    def forward(self, x):
        return x


def _check_module(m, where):
    if not isinstance(m, Module):
        raise TypeError(f"{where}: {type(m).__name__} is not a Module")
    return m


def _position(container, idx, accepted="integers or slices", item="module"):
    """Integer index ``idx`` of ``container`` (of ``item``s) -> its position in [0, len)."""
    name, n = type(container).__name__, len(container)
    if not isinstance(idx, numbers.Integral):
        raise TypeError(f"{name} indices must be {accepted}, got {type(idx).__name__}")
    if not -n <= idx < n:
        raise IndexError(f"index {idx} is out of range for a {name} of {n} {item}s")
    return int(idx) % n


def _check_item_assignment(container, idx, item="module"):
    """The position for ``container[idx] = value``: one ``item`` at an integer index."""
    if isinstance(idx, slice):
        raise TypeError(f"{type(container).__name__} does not support slice assignment (got "
                        f"{idx!r}); assign one {item} at an integer index, e.g. "
                        f"container[0] = {item}")
    return _position(container, idx, accepted="integers for item assignment", item=item)


def _check_iterable(values, where, expected):
    """``values`` for ``extend`` or ``update``: an iterable of entries.  A string or a
    Tensor is iterable too, but as characters or rows: never what was meant."""
    if isinstance(values, (str, Tensor)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{where}: expected {expected}, got {type(values).__name__}")
    return values


def _renumber(container, items):
    """Make ``items`` the children of ``container``, named "0", "1", ..."""
    container._modules.clear()
    for i, m in enumerate(items):
        container.add_module(str(i), m)


class Sequential(Module):
    """Modules applied one after the other: ``Sequential(conv, relu, ...)``.

    Also ``Sequential(OrderedDict(name=module, ...))`` for named children.
    Indexing gives a child (``model[0]``) or a sub-``Sequential``
    (``model[1:]``); ``len`` and iteration work as for a list.
    ``model[i] = module`` replaces one child (no slice assignment), and
    ``del model[i]`` / ``del model[i:j]`` remove children.  As in PyTorch,
    a deletion renumbers the children left ``"0"``, ``"1"``, ..., which
    drops the names of a named ``Sequential`` (and changes its state-dict keys).
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (dict, OrderedDict)):
            for name, m in modules[0].items():
                self.add_module(name, _check_module(m, "Sequential"))
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), _check_module(m, "Sequential"))

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(OrderedDict(list(self._modules.items())[idx]))
        return list(self._modules.values())[_position(self, idx)]

    def __setitem__(self, idx, module):
        key = list(self._modules)[_check_item_assignment(self, idx)]
        self.add_module(key, _check_module(module, "Sequential"))

    def __delitem__(self, idx):
        items = list(self._modules.values())
        del items[idx if isinstance(idx, slice) else _position(self, idx)]
        _renumber(self, items)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self.add_module(str(len(self)), _check_module(module, "Sequential.append"))
        return self

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


class ModuleList(Module):
    """A list of modules whose parameters are registered (``ModuleList([a, b])``).

    It has no ``forward``: iterate over it in the parent's ``forward``.
    Indexing, slicing, ``len``, ``append``/``extend``/``insert``,
    ``layers[i] = module`` and ``del layers[i]`` / ``del layers[i:j]`` work
    as for a list (the children stay numbered ``"0"``, ``"1"``, ...); slice
    assignment is not supported.
    """

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __getitem__(self, idx):
        items = list(self._modules.values())
        if isinstance(idx, slice):
            return type(self)(items[idx])
        return items[_position(self, idx)]

    def __setitem__(self, idx, module):
        self.add_module(str(_check_item_assignment(self, idx)),
                        _check_module(module, "ModuleList"))

    def __delitem__(self, idx):
        items = list(self._modules.values())
        del items[idx if isinstance(idx, slice) else _position(self, idx)]
        _renumber(self, items)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self.add_module(str(len(self)), _check_module(module, "ModuleList.append"))
        return self

    def extend(self, modules):
        # None, a number, a single layer
        for m in _check_iterable(modules, "ModuleList.extend", "an iterable of Modules"):
            self.append(m)
        return self

    def insert(self, index, module):
        items = list(self._modules.values())
        items.insert(index, _check_module(module, "ModuleList.insert"))
        _renumber(self, items)


# ---- containers with string keys, and containers of parameters ------------------------
def _entry(container, entries, key):
    """``container[key]``, looked up in ``entries`` (one of its registries); a missing
    key is a KeyError that names the keys there."""
    try:
        return entries[key]
    except (KeyError, TypeError):   # TypeError: an unhashable key, such as a list
        pass
    name = type(container).__name__
    if not isinstance(key, str):
        raise KeyError(f"{name} keys are strings, got {shown_value(key)}")
    keys = ", ".join(map(repr, entries)) if entries else "none: it is empty"
    raise KeyError(f"{key!r} is not a key of this {name} (its keys: {keys})")


def _pairs(container, values, item, sort_mappings=False):
    """The argument of ``update`` as a list of ``(key, value)`` pairs, read as PyTorch
    reads it: a mapping's items, or an iterable of 2-item pairs.

    With ``sort_mappings`` (ParameterDict's rule in PyTorch), the items of a mapping
    other than an ``OrderedDict`` or a ``ParameterDict``, a plain dict included, are
    taken in the order of their keys: the same order gives the same parameter order
    as PyTorch, which optimiser state is indexed by.
    """
    where = f"{type(container).__name__}.update"
    _check_iterable(values, where, f"a mapping or an iterable of (key, {item}) pairs")
    if isinstance(values, (Mapping, ModuleDict, ParameterDict)):
        pairs = list(values.items())
        if sort_mappings and not isinstance(values, (OrderedDict, ParameterDict)):
            pairs.sort(key=lambda pair: str(pair[0]))   # a key that is no string is refused later
        return pairs
    pairs = []
    for j, pair in enumerate(values):
        if isinstance(pair, (str, Tensor)) or not hasattr(pair, "__iter__"):
            raise TypeError(f"{where}: element #{j} is {shown_value(pair)}, not a "
                            f"(key, {item}) pair")
        pair = tuple(pair)
        if len(pair) != 2:
            raise ValueError(f"{where}: element #{j} has {len(pair)} items; a (key, {item}) "
                             f"pair has 2")
        pairs.append(pair)
    return pairs


def _check_keys(container, pairs, kind):
    """Every key of ``pairs`` valid for ``container`` (see ``Module._check_name`` and
    ``_check_free``), checked before any is added: an update that fails adds nothing."""
    for key, _ in pairs:
        container._check_name(key, kind)
        container._check_free(key)


class _Keyed:
    """The dict methods of ModuleDict and ParameterDict, over ``_entries``: the
    registry (``_modules`` or ``_parameters``) that holds their entries by key."""

    def __getitem__(self, key):
        return _entry(self, self._entries, key)

    def __delitem__(self, key):
        _entry(self, self._entries, key)
        del self._entries[key]

    def __len__(self):
        return len(self._entries)

    def __iter__(self):
        return iter(self._entries)

    def __contains__(self, key):
        return key in self._entries

    def keys(self):
        return self._entries.keys()

    def items(self):
        return self._entries.items()

    def values(self):
        return self._entries.values()

    def pop(self, key):
        """Remove the entry under ``key`` and return it."""
        value = self[key]
        del self[key]
        return value

    def clear(self):
        """Remove every entry."""
        self._entries.clear()


class ModuleDict(_Keyed, Module):
    """A dict of modules whose parameters are registered (``ModuleDict({"conv": conv})``).

    Keys are strings and stay in insertion order; each is also the child's
    attribute name and the first part of its state-dict keys
    (``blocks.conv.weight``), so, as in PyTorch, it may not be empty, hold a
    ``'.'`` or be the name of an attribute (``ModuleDict({"keys": ...})``
    is a ``KeyError``).  ``[]``, ``[]=``, ``del``, ``in``, ``len``, iteration
    (over the keys), ``keys``/``values``/``items``, ``update``, ``pop`` and
    ``clear`` work as for a dict.  It has no ``forward``: pick modules by key
    in the parent's ``forward``.
    """

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    @property
    def _entries(self):
        return self._modules

    def __setitem__(self, key, module):
        self.add_module(key, _check_module(module, f"ModuleDict[{key!r}]"))

    def update(self, modules):
        """Add or replace modules from a mapping (in its order) or from ``(key, module)``
        pairs.  Every key and module is checked first: a bad one adds nothing."""
        pairs = [(key, _check_module(m, f"ModuleDict.update: key {key!r}"))
                 for key, m in _pairs(self, modules, "module")]
        _check_keys(self, pairs, "module")
        for key, m in pairs:
            self.add_module(key, m)


def _as_parameter(value, where):
    """An entry of a ParameterList or ParameterDict: a Parameter as it is, another Tensor
    wrapped in a new Parameter (with ``requires_grad=True``, as PyTorch wraps one),
    or None for an absent entry.  The new Parameter holds a copy of the tensor's
    data, as every Parameter does here; PyTorch's shares the tensor's memory."""
    if value is None or isinstance(value, Parameter):
        return value
    if not isinstance(value, Tensor):
        raise TypeError(f"{where}: expected a Parameter, a Tensor or None, got "
                        f"{type(value).__name__} (make arrays and lists a parameter with "
                        f"nn.Parameter(data))")
    if value.dtype.kind != "f":
        raise TypeError(f"{where}: a Tensor of dtype {value.dtype} cannot be a Parameter, "
                        f"which holds floating-point values; convert it first, e.g. with "
                        f".float()")
    return Parameter(value)


def _parameter_lines(items):
    """``extra_repr`` of a ParameterList or ParameterDict: one line per entry, as in
    PyTorch (``(0): Parameter containing: [float32 of size 3x4]``)."""
    lines = []
    for key, p in items:
        if p is None:
            text = "None"
        else:
            device = "" if p.device == "cpu" else f" ({p.device})"
            text = (f"Parameter containing: [{p.dtype} of size "
                    f"{'x'.join(map(str, p.shape))}{device}]")
        lines.append(f"  ({key}): {text}")
    return "\n".join(lines)


class ParameterList(Module):
    """A list of parameters registered as ``"0"``, ``"1"``, ... (``ParameterList([w, b])``).

    As in PyTorch, a Tensor put in it (by the constructor, ``append``,
    ``extend``, ``+=`` or ``params[i] = t``) becomes a new Parameter with
    ``requires_grad=True``; here that Parameter holds a copy of the tensor's
    data, as every Parameter does.  Entries may be None (absent, as a
    layer's ``bias=None``).  Indexing, slicing (a new ParameterList of the
    same Parameters), ``len`` and iteration work as for a list; as in
    PyTorch there is no deletion or ``insert``.  It cannot be called: index
    it in the parent's ``forward``.
    """

    def __init__(self, values=None):
        super().__init__()
        if values is not None:
            self.extend(values)

    def __getitem__(self, idx):
        items = list(self._parameters.values())
        if isinstance(idx, slice):
            return type(self)(items[idx])
        return items[_position(self, idx, item="parameter")]

    def __setitem__(self, idx, value):
        i = _check_item_assignment(self, idx, item="parameter")
        self.register_parameter(str(i), _as_parameter(value, f"ParameterList[{i}]"))

    def __len__(self):
        return len(self._parameters)

    def __iter__(self):
        return iter(self._parameters.values())

    def __iadd__(self, values):
        return self.extend(values)

    def append(self, value):
        self.register_parameter(str(len(self)), _as_parameter(value, "ParameterList.append"))
        return self

    def extend(self, values):
        """Append every entry of ``values``; each is checked first: a bad one adds nothing."""
        _check_iterable(values, "ParameterList.extend",
                        "an iterable of Parameters or Tensors (append one Tensor with "
                        "ParameterList.append)")
        params = [_as_parameter(v, f"ParameterList.extend: element {i}")
                  for i, v in enumerate(values)]
        for p in params:
            self.register_parameter(str(len(self)), p)
        return self

    def extra_repr(self):
        return _parameter_lines(enumerate(self))

    def forward(self, *args, **kwargs):
        raise RuntimeError("a ParameterList cannot be called; use its parameters (params[i]) "
                           "in the parent module's forward")


class ParameterDict(_Keyed, Module):
    """A dict of parameters registered under their keys (``ParameterDict({"w": w})``).

    Keys follow :class:`ModuleDict`'s rules (strings usable as attribute
    names); values those of :class:`ParameterList` (a Tensor becomes a new
    Parameter).  It has the methods of PyTorch's: ``[]``, ``[]=``, ``del``,
    ``in``, ``len``, iteration over the keys, ``keys``/``values``/``items``,
    ``get``, ``setdefault``, ``pop``, ``popitem``, ``clear``, ``copy``,
    ``fromkeys``, ``update`` and ``|``.  As in PyTorch, ``update`` (and the
    constructor) takes an ``OrderedDict``'s or a ParameterDict's items in
    their order but a plain dict's in the order of its keys; a missing key
    is a ``KeyError`` here (PyTorch's is an ``AttributeError``).
    """

    def __init__(self, parameters=None):
        super().__init__()
        if parameters is not None:
            self.update(parameters)

    @property
    def _entries(self):
        return self._parameters

    def __getitem__(self, key):
        if not isinstance(key, str):   # a TypeError, as in PyTorch
            raise TypeError(f"ParameterDict keys are strings, got {shown_value(key)}")
        return super().__getitem__(key)

    def __setitem__(self, key, value):
        self.register_parameter(key, _as_parameter(value, f"ParameterDict[{key!r}]"))

    def __reversed__(self):
        return reversed(self._parameters)

    def get(self, key, default=None):
        return self[key] if key in self else default

    def setdefault(self, key, default=None):
        """The parameter under ``key``; if there is none, ``default`` is put there first."""
        if key not in self:
            self[key] = default
        return self[key]

    def popitem(self):
        """Remove the last ``(key, parameter)`` added and return it."""
        if not self._parameters:
            raise KeyError("popitem(): the ParameterDict is empty")
        key = next(reversed(self._parameters))
        return key, self.pop(key)

    def copy(self):
        """A new ParameterDict holding the same Parameter objects, in the same order."""
        return ParameterDict(OrderedDict(self.items()))

    def fromkeys(self, keys, default=None):
        """A new ParameterDict with ``default`` under every key of ``keys``."""
        return ParameterDict((key, default) for key in keys)

    def update(self, parameters):
        """Add or replace parameters from a mapping or from ``(key, value)`` pairs.  Every
        key and value is checked first: a bad one adds nothing."""
        pairs = [(key, _as_parameter(value, f"ParameterDict.update: key {key!r}"))
                 for key, value in _pairs(self, parameters, "parameter", sort_mappings=True)]
        _check_keys(self, pairs, "parameter")
        for key, p in pairs:
            self.register_parameter(key, p)

    def __or__(self, other):
        merged = self.copy()
        merged.update(other)
        return merged

    def __ror__(self, other):
        merged = other.copy()
        merged.update(self)
        return merged

    def __ior__(self, other):
        self.update(other)
        return self

    def extra_repr(self):
        return _parameter_lines(self.items())

    def forward(self, *args, **kwargs):
        raise RuntimeError("a ParameterDict cannot be called; use its parameters "
                           "(params[key]) in the parent module's forward")
