"""The autograd engine: ``Function``, the reverse-mode sweep, and grad mode.

Read this file first.  A forward op builds one :class:`Function` node that
remembers its input tensors; the output tensor points back at that node
(``tensor._ctx``).  ``backward`` walks the nodes in reverse topological
order and asks each ``Function.backward`` to turn the gradient of its output
into gradients of its inputs.  Backward formulas are written with ordinary
differentiable tensor ops, so with ``create_graph=True`` the gradient is
itself a graph that can be differentiated again.

In file order: :class:`Function` (``apply`` runs ``forward``, ``link``
records the graph), :func:`topological_order`, :func:`backprop` (the whole
reverse sweep), the checks it runs on what each ``backward`` returns
(:func:`_call_backward`), the tensor hooks of ``Tensor.register_hook``
(:func:`_run_hooks`), then the grad-mode switches (``no_grad`` and
friends), which only decide whether ``link`` records anything, and last
the hook of ``tinygrad_cnn.viz.trace`` (per thread, like grad mode).
"""
from __future__ import annotations

import functools
import inspect
import itertools
import threading
import weakref

from .conv_arrays import reorders


class Function:
    """One differentiable op: ``forward`` on arrays, ``backward`` on Tensors.

    Subclasses implement

    * ``forward(self, *arrays, **params) -> array``: the op on raw arrays of
      the inputs' backend (``self.xp`` is its array module, ``self.backend``
      the backend).  Save on ``self`` only what backward needs.
    * ``backward(self, grad_out) -> Tensor | tuple``: one gradient per tensor
      input (``None`` where there is none), written with differentiable
      tensor ops.  ``self.inputs`` are the input tensors and ``self.output``
      the output tensor.

    Call an op as ``MyOp.apply(*tensors, **params)``.
    """

    inputs = ()
    view_of_input = False  # True where forward may return a view of its first input
    read_only_view = False  # ... and that view must not be written through (a broadcast)

    @classmethod
    def apply(cls, *inputs, **params):
        from .tensor import Tensor, common_backend
        if not inputs or not all(isinstance(t, Tensor) for t in inputs):
            raise _not_tensors_error(cls, inputs)
        for key, value in params.items():
            if isinstance(value, Tensor) and value.requires_grad:
                # A parameter is outside the graph: its gradient would be lost.
                raise TypeError(f"{cls.__name__}.apply: the keyword argument {key} is a "
                                f"tensor that requires grad (shape {value.shape}); pass it "
                                f"positionally, as an input whose gradient backward returns "
                                f"(or .detach() it to use it as a constant)")
        backend = common_backend(inputs, cls.__name__)
        fn = cls()
        fn.backend, fn.xp = backend, backend.xp
        with backend.context():
            data = fn.forward(*(t.data for t in inputs), **params)
        out = Tensor._make(data, backend)   # (a NumPy scalar becomes a 0-d array here)
        if not backend.is_array(out.data):   # a list, or an array of another backend
            raise _not_an_array_error(cls, data, backend)
        if fn.view_of_input and backend.xp.may_share_memory(data, inputs[0].data):
            out._version_box = inputs[0]._version_box  # one memory, one version
            out._read_only = inputs[0]._read_only or fn.read_only_view
        return fn.link(inputs, out)

    def link(self, inputs, out):
        """Record ``out = self(*inputs)`` in the graph if a gradient may flow (to a
        float output: an integer or bool one has no gradient, as in PyTorch)."""
        if (is_grad_enabled() and out.data.dtype.kind == "f"
                and any(t.requires_grad for t in inputs)):
            self.inputs = inputs
            self._versions = tuple(t._version for t in inputs)
            self._output_version = out._version
            self._output = weakref.ref(out)
            out.requires_grad = True
            out._ctx = self
        return out

    @property
    def output(self):
        return self._output()

    def forward(self, *arrays, **params):
        raise NotImplementedError

    def backward(self, grad_out):
        raise NotImplementedError

    def release(self):
        """Drop the inputs and saved arrays once backward has used them."""
        self.__dict__.clear()
        self.inputs = None

    @property
    def name(self):
        return type(self).__name__

    def __repr__(self):
        return f"<{self.name}>"


def topological_order(roots):
    """Tensors that require grad, each after all the tensors it depends on.

    Iterative depth-first search, so a 10,000-op chain needs no recursion.
    """
    order, visited = [], set()
    stack = [(t, False) for t in reversed(roots)]
    while stack:
        t, children_done = stack.pop()
        if children_done:
            order.append(t)
            continue
        if id(t) in visited:
            continue
        visited.add(id(t))
        stack.append((t, True))
        fn = t._ctx
        if fn is not None and fn.inputs is not None:
            stack.extend((x, False) for x in fn.inputs
                         if x.requires_grad and id(x) not in visited)
    return order


def backprop(roots, root_grads, retain_graph=False, create_graph=False,
             targets=None):
    """The reverse sweep behind ``Tensor.backward`` and ``tg.grad``.

    Visits each tensor once, last-computed first; by then every consumer
    has already added its share to ``grads[id(tensor)]``.  With ``targets``
    None, gradients of leaves (and of tensors that ``retain_grad()``) are
    accumulated into ``.grad``; otherwise the gradients of the ``targets``
    are returned in a dict keyed by ``id`` and no ``.grad`` is touched.
    """
    grads, found = {}, {}
    tracer = _tracer()
    for root, g in zip(roots, root_grads):
        grads[id(root)] = g if id(root) not in grads else grads[id(root)] + g
    order, through = topological_order(roots), None
    if targets is not None:
        order, through = _leading_to(order, targets)
    with set_grad_enabled(create_graph):
        for t in reversed(order):
            g = grads.pop(id(t), None)
            if g is None:
                continue
            if tracer is not None:  # t's gradient is complete: every use added to it
                tracer.arrive(t, g)
            if t._backward_hooks:   # register_hook's; None on a tensor without any
                g = _run_hooks(t, g)
            if targets is not None:
                if id(t) in targets:
                    found[id(t)] = g
            elif t._ctx is None or t._retains_grad:
                _accumulate_grad(t, g, create_graph)
            fn = t._ctx
            if fn is None or (through is not None and id(t) not in through):
                continue   # a leaf, or (tg.grad) a target whose inputs lead to no other
            for x, gx in zip(fn.inputs, _call_backward(fn, t, g)):
                if gx is not None and x.requires_grad:
                    grads[id(x)] = gx if id(x) not in grads else grads[id(x)] + gx
            if not retain_graph:
                fn.release()
    return found


def _leading_to(order, targets):
    """``(tensors, through)``: the tensors of ``order`` (a topological order) whose
    gradient reaches a target, in that order, and the ids of those whose op's
    backward leads on to one: ``tg.grad`` runs no backward, and no hook,
    elsewhere, as PyTorch's ``autograd.grad`` (nor a target's own, unless it
    leads to another target).  A freed graph counts as leading there, so that
    the sweep reaches it and says it was freed."""
    reach, through = set(), set()
    for t in order:   # inputs first: a tensor leads to a target through its inputs
        fn = t._ctx
        if fn is not None and (fn.inputs is None or any(id(x) in reach for x in fn.inputs)):
            through.add(id(t))
        if id(t) in targets or id(t) in through:
            reach.add(id(t))
    return [t for t in order if id(t) in reach], through


def _accumulate_grad(t, g, create_graph):
    """``t.grad += g``, giving a first gradient an array of its own."""
    from .tensor import Tensor
    if t.grad is not None and (not isinstance(t.grad, Tensor) or t.grad.shape != t.shape
                               or t.grad.dtype != t.dtype):
        # A .grad set by hand that does not fit would broadcast or promote silently.
        what = (f"shape {t.grad.shape} and dtype {t.grad.dtype}" if isinstance(t.grad, Tensor)
                else f"a {type(t.grad).__name__}")
        raise RuntimeError(f"backward: a tensor of shape {t.shape} and dtype {t.dtype} has a "
                           f".grad of {what} (set by hand?); expected a Tensor of its shape "
                           f"and dtype, or None")
    if t.grad is None:
        # g may be a read-only broadcast view, the caller's grad, or shared
        # with another input (Add passes grad_out through): .grad gets its own
        # array (through an op when the gradient must stay differentiable).
        # A Parameter's .grad is a plain Tensor, as in PyTorch.
        with g._backend.context():
            g = g * 1 if create_graph else Tensor._make(g.data.copy(), g._backend)
    t.grad = g if t.grad is None else t.grad + g


def _call_backward(fn, t, g):
    """Run ``fn.backward(g)`` and check it returned one gradient per input."""
    if fn.inputs is None:
        raise RuntimeError(
            f"trying to backward through the graph a second time: the graph "
            f"behind this {t.shape} tensor was freed by an earlier backward; "
            f"pass retain_graph=True to the first backward to keep it")
    changed = [k for k, (x, version) in enumerate(zip(fn.inputs, fn._versions))
               if x._version != version]
    if changed or t._version != fn._output_version:
        what = (f"input {changed[0]} (shape {fn.inputs[changed[0]].shape})" if changed
                else f"the output (shape {t.shape})")
        raise RuntimeError(
            f"{what} of {fn.name} was modified in place after the forward pass used it, so "
            f"its gradient would be wrong; change a copy instead")
    # Every input was on fn.backend at the forward pass (ToDevice's too); one that is
    # not was moved in place since (Module.to), and its gradient would come back on
    # the old device: say so rather than blame this op's backward for the mismatch.
    moved = next((k for k, x in enumerate(fn.inputs) if x._backend is not fn.backend), None)
    if moved is not None:
        moved_x = fn.inputs[moved]
        raise RuntimeError(
            f"input {moved} (shape {moved_x.shape}) of {fn.name} was moved from "
            f"{fn.backend.device} to {moved_x.device} after the forward pass used it (a "
            f"model.to() between forward and backward?); run the forward pass again after "
            f"moving")
    with t._backend.context():   # backward's own array code lands on t's device
        grads_in = fn.backward(g)
    if not isinstance(grads_in, (tuple, list)):
        grads_in = (grads_in,)
    # zip in the caller would silently drop missing or surplus gradients
    # (surplus Nones are fine: an optional input that was not given).
    if len(grads_in) < len(fn.inputs) or any(
            gx is not None for gx in grads_in[len(fn.inputs):]):
        raise RuntimeError(
            f"{fn.name}.backward returned {len(grads_in)} gradient(s) for "
            f"{len(fn.inputs)} input(s); return one per input (None where "
            f"there is none)")
    tracer = _tracer()
    if tracer is not None:
        tracer.record(fn, t, g, grads_in)
    return [None if gx is None else _conform(gx, x, k, fn)
            for k, (x, gx) in enumerate(zip(fn.inputs, grads_in))]


def _conform(gx, x, k, fn):
    """Check a gradient from ``fn.backward`` against its input ``x``, input ``k``
    of ``fn`` (messages name it by position, which tells inputs of one shape
    apart), and fix its dtype."""
    from .tensor import Tensor
    if not isinstance(gx, Tensor):
        raise TypeError(f"{fn.name}.backward must return Tensors (or None), got "
                        f"{type(gx).__name__} for input {k} (shape {x.shape}); build "
                        f"gradients from tensor ops")
    if gx.shape != x.shape:
        raise RuntimeError(
            f"{fn.name}.backward returned a gradient of shape {gx.shape} for input {k} "
            f"(shape {x.shape}); they must match (backward returns one gradient per "
            f"input of apply, in order)")
    if gx.device != x.device:
        raise RuntimeError(
            f"{fn.name}.backward returned a gradient on {gx.device} for input {k}, "
            f"which is on {x.device}")
    if reorders(gx.data, x.data):
        # A gradient is stored as its tensor is (batch-last or C order;
        # broadcasts stay as they are): the backward that reads it reads the
        # tensor's saved arrays (a ReLU mask, a pool's input) with it, and
        # NumPy reads arrays of two orders in one pass across the cache.
        from .ops import Relayout
        gx = Relayout.apply(gx, like=x.data)
    # Mixed-precision ops (float32 + float64) give the wider dtype; the
    # gradient of each input has that input's own dtype.
    return gx if gx.dtype == x.dtype else gx.astype(x.dtype)


def _not_tensors_error(cls, inputs):
    """The error of ``Function.apply`` given something other than tensors."""
    kinds = ", ".join(type(t).__name__ for t in inputs) or "nothing"
    return TypeError(f"{cls.__name__}.apply takes tensors as positional arguments "
                     f"(got {kinds}); pass other parameters as keywords")


def _not_an_array_error(cls, data, backend):
    """The error of a ``forward`` that returned no array of its inputs' backend."""
    kind = type(data)
    kind = kind.__qualname__ if kind.__module__ == "builtins" else \
        f"{kind.__module__}.{kind.__qualname__}"
    return TypeError(f"{cls.__name__}.forward must return an array of its inputs' "
                     f"backend (device {backend.device}), got {kind}")


# ---- tensor hooks ------------------------------------------------------------------
class RemovableHandle:
    """Returned by ``register_hook`` and the module hooks: ``remove()`` unregisters the
    hook (again: nothing happens), and so does leaving a ``with handle:`` block."""

    _ids = itertools.count()

    def __init__(self, registry):
        self.registry = registry
        self.id = next(RemovableHandle._ids)

    def remove(self):
        self.registry.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _run_hooks(t, g):
    """Call the hooks of ``t`` in the order they were registered on its complete
    gradient ``g``: each gets what the one before returned (or its own input,
    if that returned None), and the last result goes on down the graph."""
    for hook in list(t._backward_hooks.values()):   # a hook may remove itself
        new = hook(g)
        if new is not None:
            g = check_replacement(new, t, f"register_hook: the hook {hook_name(hook)}")
    return g


def hook_name(hook):
    """How error messages name a hook: its function's name (``<lambda>`` for one)."""
    return getattr(hook, "__qualname__", None) or repr(hook)


def check_replacement(new, t, who):
    """``new``, a gradient for ``t`` that ``who`` returned in place of the one it was
    given, after checking that it is one: a Tensor of ``t``'s shape, dtype and device
    (a gradient that broadcast or was cast here would change every gradient below)."""
    from .tensor import Tensor
    if not isinstance(new, Tensor):
        raise TypeError(f"{who} returned a {type(new).__name__}; a hook returns None "
                        f"(keep the gradient) or a Tensor (a gradient to use instead)")
    if (new.shape, new.dtype, new.device) != (t.shape, t.dtype, t.device):
        raise RuntimeError(f"{who} returned a gradient of shape {new.shape}, dtype "
                           f"{new.dtype} on {new.device} for a tensor of shape {t.shape}, "
                           f"dtype {t.dtype} on {t.device}; a replacement gradient must "
                           f"match its tensor in all three")
    return new


# ---- grad mode: no_grad, enable_grad, set_grad_enabled -----------------------------
# Grad mode is per thread, as in PyTorch: a no_grad block in one thread must
# not switch recording off (or, exiting out of order, on) in another.
_grad_mode = threading.local()


def is_grad_enabled():
    """True when ops record the graph (not inside ``no_grad`` / ``set_grad_enabled(False)``)."""
    return getattr(_grad_mode, "enabled", True)


def _set_grad_mode(mode):
    _grad_mode.enabled = mode


class _GradMode:
    """A grad mode as a context manager (the previous mode comes back at its end)
    and as a decorator (the mode holds during every call of the function, and
    during every resumption of a generator function)."""

    def __init__(self, mode):
        self.mode = bool(mode)
        self._prev = []  # a stack, so one instance can be entered again while active

    def __enter__(self):
        self._prev.append(is_grad_enabled())
        _set_grad_mode(self.mode)

    def __exit__(self, *exc):
        _set_grad_mode(self._prev.pop())

    def __call__(self, func):
        mode = self.mode
        if inspect.isgeneratorfunction(func):
            @functools.wraps(func)
            def generator(*args, **kwargs):
                # The body of a generator runs at each next(), not at the call:
                # the mode must be in force around every resumption.
                gen = func(*args, **kwargs)
                try:
                    with _GradMode(mode):
                        item = next(gen)
                    while True:
                        try:
                            sent = yield item
                        except GeneratorExit:
                            with _GradMode(mode):
                                gen.close()
                            raise
                        except BaseException as e:
                            with _GradMode(mode):
                                item = gen.throw(e)
                        else:
                            with _GradMode(mode):
                                item = gen.send(sent)
                except StopIteration as done:
                    return done.value
            return generator

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with _GradMode(mode):
                return func(*args, **kwargs)
        return wrapper


class set_grad_enabled(_GradMode):
    """``tg.set_grad_enabled(mode)``: turn graph recording on or off in this thread.

    As PyTorch: called on its own it switches at once; as a context manager
    the mode from before the call comes back at the end of the block; as a
    decorator it holds during each call of the function.
    """

    def __init__(self, mode):
        super().__init__(mode)
        self._before = is_grad_enabled()
        _set_grad_mode(self.mode)

    def __enter__(self):
        self._prev.append(self._before)
        _set_grad_mode(self.mode)

    def __call__(self, func):
        _set_grad_mode(self._before)  # decorating is not switching
        return super().__call__(func)


class _FixedMode(_GradMode):
    """A grad mode fixed by the class (``MODE``), usable as ``with cls():``,
    ``@cls()`` or, without parentheses, ``@cls``."""

    MODE = None

    def __new__(cls, func=None):
        if func is not None:       # @tg.no_grad, without parentheses
            return cls()(func)
        return super().__new__(cls)

    def __init__(self, func=None):
        super().__init__(self.MODE)


class no_grad(_FixedMode):
    """``with tg.no_grad():``, ``@tg.no_grad()`` or ``@tg.no_grad``: record no graph inside."""

    MODE = False


class enable_grad(_FixedMode):
    """Re-enable graph recording inside a ``no_grad`` block (also a decorator)."""

    MODE = True


# ---- tracing ----------------------------------------------------------------------
# The trace (tinygrad_cnn.viz.trace) watching this thread's backward passes: per
# thread, as grad mode, so that a trace never records another thread's passes.
_tracing = threading.local()


def _tracer():
    """The trace active in this thread, or None."""
    return getattr(_tracing, "tracer", None)


def _set_tracer(tracer):
    _tracing.tracer = tracer
