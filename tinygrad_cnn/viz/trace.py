"""Watch the backward pass step by step.

::

    with tg.viz.trace(names={x: "x"}) as t:
        loss.backward()
    print(t)          # one row per step, in the order the engine ran them
    t.steps           # the same rows as Step records

Two kinds of step appear:

* ``"backward"``: one ``Function.backward`` ran.  It received the gradient
  of its output and sent one gradient to each input.
* ``"accumulate"``: a tensor was used by several ops, so several
  gradients reached it; the engine summed them before going on (the
  multivariable chain rule: d loss/dx is the sum over every use of x).
  The row shows how many were summed and the norm of each part.

Norms are L2 norms of whole gradient tensors, computed on the tensor's
device and copied to the host with ``float()``: on a GPU every step
therefore waits for the device.  Tracing is a learning tool, not for
training runs.
"""
from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass

from .. import autograd

__all__ = ["trace", "Step"]


@dataclass(frozen=True)
class Step:
    """One row of a backward trace.

    ``kind`` is ``"backward"`` or ``"accumulate"``.

    For ``"backward"``: ``op`` is the Function's name; ``tensor`` labels its
    output; ``output_shape`` and ``input_shapes`` are shapes;
    ``grad_norm`` is the norm of the gradient it received (of its output);
    ``sent_norms`` has one norm per input (``None`` where no gradient flows,
    e.g. into a constant).

    For ``"accumulate"``: ``tensor`` labels the tensor whose gradients were
    summed (``op`` is the name of the Function that produced it, or None for
    a leaf);
    ``contributions`` is how many gradients were summed, ``parts`` their
    norms in arrival order and ``grad_norm`` the norm of the sum.
    """

    kind: str
    op: str | None
    tensor: str
    output_shape: tuple
    input_shapes: tuple = ()
    grad_norm: float = 0.0
    sent_norms: tuple = ()
    contributions: int = 1
    parts: tuple = ()

    def describe(self):
        """``(what, shapes, received, sent)`` strings for the table."""
        if self.kind == "backward":
            what = self.op if self.tensor == f"{self.op} output" else f"{self.op} -> {self.tensor}"
            shapes = ", ".join(map(_shape, self.input_shapes)) + " -> " + _shape(self.output_shape)
            sent = ", ".join("-" if n is None else _num(n) for n in self.sent_norms)
            return what, shapes, _num(self.grad_norm), sent
        what = f"{self.tensor}: {self.contributions} contributions summed"
        sent = "sum of " + " + ".join(map(_num, self.parts))
        return what, _shape(self.output_shape), _num(self.grad_norm), sent


class trace:
    """Context manager recording every step of the backward passes run inside.

    ``names`` labels tensors in the table: a mapping ``{tensor: "x"}``, or
    ``{"x": tensor}`` such as ``dict(model.named_parameters())``.  Otherwise
    a tensor's ``name`` attribute is used; an unnamed result is called
    after its op (``Add output``: its accumulate row comes right before that
    op's backward row) and unnamed leaves ``leaf#1``, ``leaf#2``, ...

    A trace records the backward passes of the thread that entered it, as
    grad mode is per thread; one trace is active in one thread at a time.
    """

    def __init__(self, names=None):
        self.steps = []
        self._names = _name_map(names)
        self._auto = _ByTensor()    # leaf -> generated label
        self._parts = _ByTensor()   # tensor -> norms of the gradients sent to it so far
        self._prev = None
        self._active = False

    def __enter__(self):
        # Entered twice (in this thread or another), its first exit would
        # restore the wrong outer trace.
        if self._active:
            raise RuntimeError("this trace is already active; use a new trace() object")
        self._active, self._prev = True, autograd._tracer()
        autograd._set_tracer(self)
        return self

    def __exit__(self, *exc):
        autograd._set_tracer(self._prev)
        self._active = False

    # ---- called by autograd.backprop ---------------------------------------------
    def arrive(self, t, g):
        """``t``'s gradient ``g`` is complete; record the sum if there were several parts."""
        if self._prev is not None:  # an enclosing trace sees the pass too
            self._prev.arrive(t, g)
        parts = self._parts.pop(t, ())
        if len(parts) > 1:
            self.steps.append(Step(
                kind="accumulate", op=None if t._ctx is None else t._ctx.name,
                tensor=self.label(t), output_shape=t.shape, grad_norm=_norm(g),
                contributions=len(parts), parts=tuple(parts)))

    def record(self, fn, t, g, grads_in):
        """``fn.backward`` turned ``g`` (gradient of ``fn``'s output ``t``) into ``grads_in``."""
        if self._prev is not None:
            self._prev.record(fn, t, g, grads_in)
        sent = []
        for x, gx in zip(fn.inputs, grads_in):
            if gx is None or not x.requires_grad:  # the engine drops these
                sent.append(None)
                continue
            n = _norm(gx)
            sent.append(n)
            self._parts.setdefault(x, []).append(n)
        self.steps.append(Step(
            kind="backward", op=fn.name, tensor=self.label(t), output_shape=t.shape,
            input_shapes=tuple(x.shape for x in fn.inputs), grad_norm=_norm(g),
            sent_norms=tuple(sent)))

    # ---- presentation ----------------------------------------------------------------
    def label(self, t):
        """The name shown for tensor ``t``."""
        name = self._names.get(t) or getattr(t, "name", None)
        if name:
            return str(name)
        if t._ctx is not None:
            return f"{t._ctx.name} output"
        return self._auto.setdefault(t, f"leaf#{self._auto.count + 1}")

    @property
    def backward_steps(self):
        return [s for s in self.steps if s.kind == "backward"]

    @property
    def accumulations(self):
        return [s for s in self.steps if s.kind == "accumulate"]

    def table(self):
        """The steps as a text table (what ``print(trace)`` shows)."""
        head = ("step", "what", "shapes (inputs -> output)", "|grad received|", "|grads sent|")
        rows = [(str(i),) + s.describe() for i, s in enumerate(self.steps, 1)]
        widths = [max(len(r[c]) for r in [head] + rows) for c in range(len(head))]

        def fmt(row):  # the step number right-aligned, the rest left-aligned
            return "  ".join(v.rjust(w) if c == 0 else v.ljust(w)
                             for c, (v, w) in enumerate(zip(row, widths))).rstrip()

        lines = [f"backward trace: {len(self.steps)} steps, in the order they ran "
                 f"(|g| = L2 norm of a gradient)", fmt(head), fmt(["-" * w for w in widths])]
        return "\n".join(lines + [fmt(r) for r in rows])

    def __str__(self):
        return self.table()

    def __repr__(self):
        return f"<trace of {len(self.steps)} backward steps>"

    def __len__(self):
        return len(self.steps)

    def __iter__(self):
        return iter(self.steps)


class _ByTensor:
    """A dict keyed by tensor identity that keeps no tensor alive (a trace outlives
    its graphs).  A key is ``id(t)`` with a weak reference beside it: once ``t`` is
    gone, a new tensor given the same id does not inherit ``t``'s entry."""

    def __init__(self):
        self._entries = {}   # id(tensor) -> (weak reference to it, value)
        self.count = 0       # entries ever added

    def get(self, t, default=None):
        entry = self._entries.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else default

    def setdefault(self, t, value):
        entry = self._entries.get(id(t))
        if entry is not None and entry[0]() is t:
            return entry[1]
        self._entries[id(t)] = (weakref.ref(t), value)
        self.count += 1
        return value

    def pop(self, t, default=None):
        value = self.get(t, default)
        self._entries.pop(id(t), None)
        return value


def tensor_name_pairs(names, op):
    """``names`` (``{tensor: name}`` or ``{name: tensor}``, or None) as ``(tensor, name)``
    pairs; anything else is a TypeError naming ``op`` (else never matched, silently)."""
    from ..tensor import Tensor
    expected = f"{op}: names maps tensors to their names ({{tensor: 'x'}} or {{'x': tensor}})"
    if names is not None and not isinstance(names, Mapping):
        raise TypeError(f"{expected}, got a {type(names).__name__}")
    pairs = []
    for k, v in (names or {}).items():
        if isinstance(k, str):
            k, v = v, k
        if not isinstance(k, Tensor):
            raise TypeError(f"{expected}, got a {type(k).__name__} named {v!r}")
        pairs.append((k, v))
    return pairs


def _name_map(names):
    """``{tensor: name}`` or ``{name: tensor}`` -> a :class:`_ByTensor` of names."""
    out = _ByTensor()
    for k, v in tensor_name_pairs(names, "trace"):
        out.setdefault(k, v)
    return out


def _norm(t):
    """L2 norm of a tensor's data as a Python float (a host sync on a GPU)."""
    xp, a = t.xp, t.data
    with t._backend.context():
        return float(xp.sqrt(xp.sum(xp.square(a.astype("float64")))))


def _shape(shape):
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _num(v):
    return f"{v:.4g}"
