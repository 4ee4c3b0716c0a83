"""Numerical gradient checking, for the test suite and for user code.

``gradcheck(fn, inputs)`` compares the analytic gradients that backward
computes with central finite differences, for every input that requires
grad and every output of ``fn``, each (input, output) pair on its own, so a
large correct output cannot hide a small wrong one.

By default each output ``y`` is contracted with its own random upstream
gradient ``v`` (backward computes exactly such vector-Jacobian products):
the analytic side is ``grad(y, x, v)``, the numerical side, at element i of
x, ``sum(v * (y(x + eps e_i) - y(x - eps e_i))) / (2 eps)``, the difference
taken element by element before the sum, so that the small change eps makes
is not lost in rounding against large output values.  A random ``v`` (not
all ones) catches a backward that mishandles how the upstream gradient
varies across elements.  ``full_jacobian=True`` compares every entry of
every Jacobian instead (one backward per output element), as PyTorch's
default gradcheck does: then an error in one element of an output cannot
hide behind larger elements of the same output either.

Tolerances: a value passes when ``|analytic - numerical| <= atol +
rtol * |numerical|``.  Central differences in float64 with ``eps=1e-6``
have an error of about ``eps**2 * f''' + 1e-16 * |f| / eps``, well inside
the defaults for smooth functions of O(1) inputs and outputs.  Where every
gradient value of a pair is below ``atol``, a wrong one of that size would
pass too: that gives a :class:`GradcheckWarning`.

Beyond the values, a check fails (it would otherwise pass a wrong
gradient, or fail without saying why) when ``fn`` or its backward changes an
input in place, when a backward changes its upstream gradient in place,
when a second backward pass gives other gradients than the first, or when
``fn`` gives other values for the same inputs (differences within
``nondet_tol`` plus 1e-12 of the largest value, the rounding of a GPU's
reordered sums, are allowed).  Inputs keep their memory layout (a
transposed or sliced input stays one), so code that assumes C order is
checked as the caller runs it.  float32 and float16 inputs are checked
in float64 too, and then, with ``check_input_dtype``, their backward is
run once more in their own dtype and compared with the float64 gradient,
so a low-precision path of its own (or an overflow) is not missed.

Checks fail legitimately where the function is not differentiable: at
kinks (relu, abs, clip at 0 or its bounds, max/min) the finite difference
straddles two slopes, and at ties (two equal maxima in a max or max-pool
window) the analytic rule picks one documented choice while a perturbation
picks the other.  Keep test inputs at least ``10 * eps`` away from kinks
and ties.  Where a check fails at one, the message says so: the one-sided
differences at the worst element disagree as well, and not ten times less
over a tenth of the step, as a smooth fn's do.  Where fn's outputs are
so large that their rounding, over the step, is as large as the difference
found (``x + 1e10``, or ``x * x`` at 1e8), the message says that instead: the
numerical side is noise there, and a larger eps or values nearer 1 are needed.
Inputs must be finite: at inf or nan a difference measures nothing.
"""
from __future__ import annotations

import math
import secrets
import warnings

import numpy as np

from ._checks import check_flag, check_int, check_number, check_seed
from .autograd import enable_grad, no_grad
from .backend import DeviceError
from .tensor import Tensor, float64, grad as _grad, zeros_like


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with the numerical one (or cannot be trusted)."""


class GradcheckWarning(UserWarning):
    """A check that passed but could not have caught a wrong gradient of that size."""


# Repeated runs may differ by rounding (a GPU's atomic adds sum in any order):
# up to this fraction of the largest value, plus nondet_tol.
_REPEAT_RTOL = 1e-12


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _holds_grad_tensor(x):
    if isinstance(x, Tensor):
        return x.requires_grad
    if isinstance(x, dict):
        x = list(x.values())
    return isinstance(x, (tuple, list)) and any(_holds_grad_tensor(e) for e in x)


# ---- inputs: copies laid out as given ------------------------------------------------------
def _dense_plan(a, axes):
    """For ``a`` with strides >= 0: ``axes`` outermost first and the shape of a dense
    buffer that a slice of gives them ``a``'s steps (strides in items), or None
    where a step is not a multiple of the next one's or leaves it no room."""
    if any(a.strides[ax] % a.itemsize for ax in axes):
        return None
    steps = {ax: a.strides[ax] // a.itemsize for ax in axes}
    order = sorted(axes, key=lambda ax: -steps[ax])
    inner = [steps[ax] for ax in order[1:]] + [1]
    if any(step == 0 or steps[ax] % step or steps[ax] < a.shape[nxt] * step
           for ax, nxt, step in zip(order, order[1:], inner)) or steps[order[-1]] == 0:
        return None
    return order, [a.shape[order[0]]] + [steps[ax] // step for ax, step in zip(order, inner)]


def _copy_laid_out_like(backend, a, dtype):
    """A copy of ``a`` in ``dtype`` with ``a``'s memory layout: its axis order,
    gaps and reversed axes, so ``fn`` sees the input as the caller gave it.

    ``a = base[:, ::2]`` of a (4, 6) ``base`` steps 6 and 2 items along its
    axes; so does ``buf[:, :3, 0]`` of a dense (4, 3, 2) ``buf``, whose axes
    are a's axes outermost first, each as long as the step outside it allows,
    and then the innermost step.  Where the steps do not nest (overlapping or
    irregular views), or such a buffer would be far larger than ``a`` (a
    column of a big array), only the axis order is kept."""
    xp = backend.xp
    if a.size == 0 or a.flags.c_contiguous or any(
            s == 0 for s, n in zip(a.strides, a.shape) if n > 1):
        return a.astype(dtype, order="K")
    flips = tuple(slice(None, None, -1) if s < 0 else slice(None) for s in a.strides)
    pos = a[flips]                                                   # strides >= 0
    # Size-1 axes keep their strides where they nest, else get NumPy's own.
    plan = (_dense_plan(pos, list(range(a.ndim)))
            or _dense_plan(pos, [ax for ax in range(a.ndim) if a.shape[ax] > 1]))
    if plan is None or math.prod(plan[1]) > 4 * a.size + 4096:
        return a.astype(dtype, order="K")
    order, dense = plan
    buf = xp.zeros(dense, dtype=dtype)
    view = buf[(slice(None),) + tuple(slice(0, pos.shape[ax]) for ax in order[1:]) + (0,)]
    view = view.transpose(tuple(int(k) for k in np.argsort(order))).reshape(a.shape)
    view[...] = pos
    return view[flips]


def _copies(inputs, name, dtype_of):
    """Copies of the tensor inputs in ``dtype_of(x)``, laid out like them, so the
    caller's tensors are never touched; other inputs pass through."""
    copies = []
    for i, x in enumerate(inputs):
        if not isinstance(x, Tensor):
            if _holds_grad_tensor(x):
                # It would reach fn uncopied and unchecked: a wrong gradient would pass.
                raise TypeError(f"{name}: input {i} is a {type(x).__name__} holding tensors "
                                f"that require grad; pass each such tensor as an input of "
                                f"its own so that it is copied and checked")
            copies.append(x)
            continue
        with x._backend.context():
            data = _copy_laid_out_like(x._backend, x.data, dtype_of(x))
        copies.append(Tensor._make(data, x._backend, x.requires_grad))
    return copies


def _float64_copies(inputs, name):
    return _copies(inputs, name, lambda x: float64 if x.dtype.kind == "f" else x.dtype)


def _requiring_grad(inputs, name):
    """The positions of the tensor inputs that require grad: those to check."""
    wrt = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not wrt:
        given = "; ".join(
            f"input {i}: {x.dtype} tensor of shape {x.shape}, requires_grad=False"
            if isinstance(x, Tensor) else f"input {i}: {type(x).__name__}"
            for i, x in enumerate(inputs)) or "no inputs"
        what = ("give the tensors to check requires_grad=True"
                if any(isinstance(x, Tensor) for x in inputs) else
                "the inputs to check must be tensors with requires_grad=True, such as "
                "tg.tensor(x, dtype=tg.float64, requires_grad=True)")
        raise ValueError(f"{name}: no input requires grad, so there is nothing to check "
                         f"({given}); {what}")
    return wrt


# ---- failures that are not a mismatch of values ----------------------------------------------
class _Failed(Exception):
    """A failed check, raised from deep inside; ``_check`` reports it."""


class _Watch:
    """The inputs that require grad, as they were: ``check(when)`` fails if fn or a
    backward has changed one in place since (the gradient would then be taken at
    other values than the caller's)."""

    def __init__(self, inputs, wrt, names, name):
        self.inputs, self.wrt, self.names, self.name = inputs, wrt, names, name
        self.values = {i: inputs[i].numpy().copy() for i in wrt}

    def require_finite(self):
        """Refuses inf and nan: finite differences there measure nothing."""
        for j, i in enumerate(self.wrt):
            bad = ~np.isfinite(self.values[i])
            if bad.any():
                e = tuple(int(k) for k in np.argwhere(bad)[0])
                raise ValueError(f"{self.name}: {self.names.inp(j)} (shape {bad.shape}) is "
                                 f"{self.values[i][e]} at index {e} ({int(bad.sum())} of "
                                 f"{bad.size} values not finite); a gradient can only be "
                                 f"checked at finite values")

    def check(self, when):
        for j, i in enumerate(self.wrt):
            old, new = self.values[i], self.inputs[i].numpy()
            if not np.array_equal(new, old, equal_nan=True):
                e = tuple(int(k) for k in np.argwhere(~((new == old) | (new != new)))[0])
                raise _Failed(f"{self.name}: {when} changed {self.names.inp(j)} (shape "
                              f"{new.shape}) in place, at index {e} from {old[e]:.10g} to "
                              f"{new[e]:.10g}; the gradient would then be taken at other "
                              f"values than the caller's (copy an input before writing "
                              f"into it)")


def _repeat_differs(a, b, nondet_tol):
    """max |a - b|, if it exceeds what repeated runs may differ by, else None."""
    if a.shape != b.shape:
        return math.inf
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    if same.all():
        return None
    finite = np.isfinite(a) & np.isfinite(b)
    if not finite[~same].all():
        return math.inf
    diff = float(np.abs(a - b)[finite].max())
    scale = float(np.abs(a[finite]).max()) if finite.any() else 0.0
    return diff if diff > nondet_tol + _REPEAT_RTOL * scale else None


# ---- the two sides ---------------------------------------------------------------------------
def _outputs(fn, inputs, name):
    outs = _as_tuple(fn(*inputs))
    for k, o in enumerate(outs):
        if not isinstance(o, Tensor):
            raise TypeError(f"{name}: fn must return a tensor or a tuple or list of tensors; "
                            f"its output {k} has type {type(o).__name__}")
    return outs


def _upstream(outs, grad_outputs, rng, name):
    """One host float64 ``v`` per output (None for outputs that are not float)."""
    if grad_outputs is None:
        return [rng.standard_normal(o.shape) if o.dtype.kind == "f" else None for o in outs]
    given = _as_tuple(grad_outputs)
    if len(given) != len(outs):
        # zip would silently leave the outputs without a v unchecked.
        raise ValueError(f"{name}: fn returned {len(outs)} output(s) but grad_outputs has "
                         f"{len(given)}; give one per output")
    vs = []
    for k, (o, g) in enumerate(zip(outs, given)):
        if o.dtype.kind != "f":
            vs.append(None)
            continue
        if not isinstance(g, Tensor):
            raise TypeError(f"{name}: grad_outputs[{k}] is a {type(g).__name__}; expected a "
                            f"tensor of output {k}'s shape {o.shape}")
        if g.shape != o.shape:
            raise ValueError(f"{name}: grad_outputs[{k}] is shape {g.shape}; expected a tensor "
                             f"of output {k}'s shape {o.shape}")
        if g.device != o.device:
            raise DeviceError(f"{name}: grad_outputs[{k}] is on {g.device} but output {k} "
                              f"is on {o.device}")
        vs.append(g.numpy().astype(np.float64))
    return vs


def _backward(y, xs, row, names, k, name):
    """Gradients of output k, ``y``, contracted with the host array ``row``, as flat
    host arrays (None where no gradient arrived)."""
    expected = row.reshape(y.shape).astype(y.dtype)
    with y._backend.context():
        g_out = Tensor._make(y._backend.asarray(expected.copy()), y._backend)  # its own
    grads = _grad([y], xs, [g_out], retain_graph=True, allow_unused=True)
    if not np.array_equal(g_out.numpy(), expected, equal_nan=True):
        raise _Failed(f"{name}: the backward from {names.out(k)} changed its upstream "
                      f"gradient (grad_out) in place; a gradient passed to a backward may be "
                      f"shared with other ops (all the inputs of an addition get the same "
                      f"one), so it must be left as it is")
    return [None if g is None else g.numpy().astype(np.float64).ravel() for g in grads]


def _analytic(outs, xs, vs, full_jacobian, nondet_tol, watch, names, name):
    """analytic[k][j]: (rows, x_j.size), each row the gradient of output k contracted
    with one upstream row (v_k, or one-hot rows for the full Jacobian), or None where
    no gradient reached x_j from output k."""
    result = []
    for k, (y, v) in enumerate(zip(outs, vs)):
        if v is None:                  # not a float output: nothing to differentiate
            result.append(None)
            continue
        rows = np.eye(y.size) if full_jacobian else v.reshape(1, -1)
        per_x = [None] * len(xs)
        if y.requires_grad:
            for r, row in enumerate(rows):
                grads = _backward(y, xs, row, names, k, name)
                if r == 0:             # the first row twice: a second pass must agree
                    watch.check("the backward")
                    again = _backward(y, xs, row, names, k, name)
                    watch.check("a second backward pass")
                    for j, (g, h) in enumerate(zip(grads, again)):
                        d = _repeat_differs(np.zeros(0) if g is None else g,
                                            np.zeros(0) if h is None else h, nondet_tol)
                        if d is not None:
                            raise _Failed(
                                f"{name}: a second backward pass from {names.out(k)} gave a "
                                f"different gradient for {names.inp(j)} (largest difference "
                                f"{d:.3g}): the backward keeps state between calls "
                                f"(accumulating into a buffer, say) or draws random "
                                f"numbers, so a graph differentiated twice gets other "
                                f"gradients (nondet_tol allows differences up to it)")
                for j, g in enumerate(grads):
                    if g is not None:
                        if per_x[j] is None:
                            per_x[j] = np.zeros((len(rows), xs[j].size))
                        per_x[j][r] = g
        result.append(per_x)
    return result


def _numerical(fn, inputs, i, start, vs, cols, eps, full_jacobian, name):
    """numerical[k]: (rows, x.size) finite differences of output k for the flat elements
    ``cols`` of input i (zero elsewhere), contracted as in :func:`_analytic`, around
    the flat host values ``start``."""
    x = inputs[i]
    data = x.data              # perturbed in place, so it keeps its memory layout
    numerical = [None if v is None else np.zeros((v.size if full_jacobian else 1, x.size))
                 for v in vs]

    def evaluate(index, value):
        with x._backend.context():
            data[index] = value
        with no_grad():
            values = _outputs(fn, inputs, name)
        if len(values) != len(vs):
            raise ValueError(f"{name}: fn returned {len(vs)} outputs, then {len(values)}")
        return [None if v is None else values[k].numpy().astype(np.float64)
                for k, v in enumerate(vs)]

    index = None
    try:
        for e in cols:
            index = tuple(int(j) for j in np.unravel_index(int(e), x.shape))
            hi, lo = start[e] + eps, start[e] - eps
            if hi == lo:
                raise ValueError(f"{name}: eps={eps} is below the rounding step of input {i} "
                                 f"at index {index} (value {start[e]:.6g}); use a larger eps")
            plus, minus = evaluate(index, hi), evaluate(index, lo)
            with x._backend.context():
                data[index] = start[e]
            for k, v in enumerate(vs):
                if v is None:
                    continue
                if plus[k].shape != v.shape or minus[k].shape != v.shape:
                    raise ValueError(f"{name}: output {k} changed shape from {v.shape} to "
                                     f"{plus[k].shape} when input {i} was perturbed")
                # Differences first, element by element, then the contraction;
                # hi - lo is the step actually taken (x +- eps rounds for large x).
                column = ((plus[k] - minus[k]) / (hi - lo)).ravel()
                numerical[k][:, e] = column if full_jacobian else v.ravel() @ column
    finally:
        if index is not None:
            with x._backend.context():
                data[index] = start[int(np.ravel_multi_index(index, x.shape))]
    return numerical


# ---- comparing -------------------------------------------------------------------------------
class _Names:
    """How messages name inputs and outputs (gradgradcheck's are its own)."""

    def __init__(self, inputs=None, outputs=None, wrt=()):
        self._inputs, self._outputs, self._wrt = inputs, outputs, list(wrt)

    def inp(self, j):          # j counts the inputs that require grad
        i = self._wrt[j]
        return self._inputs[i] if self._inputs else f"input {i}"

    def out(self, k):
        return self._outputs[k] if self._outputs else f"output {k}"

    @property
    def custom_outputs(self):
        return self._outputs is not None


def _fail(msg, raise_exception):
    if raise_exception:
        raise GradcheckError(msg)
    return False


def _index(flat, shape):
    return tuple(int(j) for j in np.unravel_index(int(flat), shape))


def _compare(a, n, cols, x, y, j, k, names, show_output, mode, atol, rtol, noise, name):
    """None if output k's gradient w.r.t. input j agrees on ``cols``, else the message
    and where the worst value is, ``(k, row, flat element of x, analytic value)`` (None
    for a non-finite one).  ``noise``: how large the numerical values of a zero
    gradient may come out."""
    reached = a is not None
    a = np.zeros_like(n) if a is None else a
    a, n = a[:, cols], n[:, cols]
    pair = f"{names.inp(j)} (shape {x.shape})" + (
        f" and {names.out(k)} (shape {y.shape})" if show_output else "")

    def where(row, col):
        if mode == "full":
            return (f"at index {_index(cols[col], x.shape)} of the input and "
                    f"{_index(row, y.shape)} of the output")
        return f"at index {_index(cols[col], x.shape)}"

    finite = np.isfinite(a) & np.isfinite(n)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        return (f"{name}: {pair} has a non-finite gradient {where(row, col)}: analytic "
                f"{a[row, col]:.10g}, numerical {n[row, col]:.10g} ({int((~finite).sum())} "
                f"of {finite.size} value(s) non-finite)"), None
    err = np.abs(a - n) - (atol + rtol * np.abs(n))
    if not err.size or err.max() <= 0:
        # Where every numerical value is below atol (and above rounding noise),
        # an analytic one off by 100 % (twice the value, or zero) passes too.
        largest = float(np.abs(n).max(initial=0))
        if noise < largest < atol:
            warnings.warn(f"{name}: every numerical gradient value of {pair} is below "
                          f"atol={atol} (the largest is {largest:.3g}), so a gradient wrong "
                          f"by that much would pass as well; scale the inputs or outputs up, "
                          f"or lower atol", GradcheckWarning, stacklevel=5)
        return None
    row, col = np.unravel_index(int(np.argmax(err)), err.shape)
    unit = "Jacobian entries" if mode == "full" else "element(s)"
    count = f"{int((err > 0).sum())} of {err.size} {unit}"
    if len(cols) < x.size:
        count += f" ({len(cols)} of the input's {x.size} elements checked)"
    what = {"full": "",
            "random": " (values of v^T J for a random upstream gradient v; "
                      "full_jacobian=True compares single entries)",
            "given": " (values of v^T J for the given grad_outputs v)"}[mode]
    hint = ("" if reached else
            f"; no gradient reached {names.inp(j)} from this output: a backward returned "
            f"None for it, or the output was computed outside the graph (from raw arrays, "
            f"a .detach()ed tensor, or under no_grad)")
    return (f"{name}: analytic and numerical gradients differ for {pair} {where(row, col)}: "
            # + 0.0: a zero gradient shows as 0, not as "-0"
            f"analytic {a[row, col] + 0.0:.10g}, numerical {n[row, col] + 0.0:.10g} "
            f"(|difference| "
            f"{abs(a[row, col] - n[row, col]):.3g} > atol {atol} + rtol {rtol} * "
            f"|numerical|); {count} out of tolerance{what}{hint}"), (k, row, cols[col], a[row, col])


def _hint(fn, inputs, i, e, start, k, weights, analytic, eps, atol, rtol, nondet_tol, name):
    """Why output k's check may fail at flat element e of input i without a wrong
    backward: a hint where fn's slope jumps there (a kink or a tie, where fn has no
    derivative), where rounding swamps the finite difference, or where the
    ``nondet_tol`` the caller allowed fn's outputs to vary by does, else "".

    The central difference at a kink is the mean of the slopes on either side; an
    analytic rule that picks one of them (or a value between) fails the check
    without being wrong.  And where fn's outputs are so large that float64 rounds
    them by about as much as eps changes them, the difference measures noise."""
    x = inputs[i]
    index = _index(e, x.shape)
    # One-sided differences over eps and over a tenth of it, on either side; the
    # steps actually taken, as x +- step rounds for large x.
    points = start[e] + np.array([-eps, -eps / 10, eps / 10, eps])
    steps = np.abs(points - start[e])
    if steps[0] == 0 or steps[-1] == 0:   # eps is below the rounding step on one side
        return ""
    try:
        values = []
        for point in [start[e], *points]:
            with x._backend.context():
                x.data[index] = point
            with no_grad():
                values.append(_outputs(fn, inputs, name)[k].numpy().astype(np.float64).ravel())
    finally:
        with x._backend.context():
            x.data[index] = start[e]
    at = values[0]
    # Rounding: an output value y is off by about float64's eps times |y| (a few
    # times that after a few ops), so a difference of two values over a step by
    # ``unit / step``.  Outputs the step leaves alone round alike and cancel.
    moved = np.any([v != at for v in values[1:]], axis=0)
    largest = np.abs(np.array(values)[:, moved]).max(axis=0, initial=0)   # per output
    unit = 2 * np.finfo(np.float64).eps * float(np.abs(weights[moved]) @ largest)
    step = steps[0] + steps[3]                   # of the central difference
    noise = unit / step
    # Outputs that may differ by nondet_tol from call to call move the weighted sum
    # by up to this much.
    jitter = nondet_tol * float(np.abs(weights[moved]).sum())
    if jitter and abs(analytic - weights @ (values[4] - values[1]) / step) <= 2 * jitter / step:
        return (f"; fn's outputs may differ by up to nondet_tol = {nondet_tol:g} from call "
                f"to call, which can move the finite difference over the step 2 * eps = "
                f"{step:.3g} by {2 * jitter / step:.3g}, as much as the difference found "
                f"(the backward may well be right): check with a larger eps, or make fn "
                f"deterministic")
    if abs(analytic - weights @ (values[4] - values[1]) / step) <= noise:
        return (f"; the finite difference there is only good to about {noise:.3g}: fn's "
                f"outputs reach {largest.max(initial=0):.3g} and round by about 1e-16 of "
                f"that, which over the step 2 * eps = {step:.3g} is as large as the "
                f"difference found (the backward may well be right); check with a larger "
                f"eps, or with inputs and outputs nearer 1")
    below, below_near, above_near, above = (
        np.nan if step == 0 else weights @ (sign * (v - at)) / step
        for v, step, sign in zip(values[1:], steps, (-1, -1, 1, 1)))
    # Where fn is smooth the two sides differ by about the steps times its second
    # derivative, so by a tenth as much over the tenth of eps; at a kink or tie by
    # the jump of the slope, over either step.  (A thousandth of the slope is more
    # than a smooth fn's difference over eps, but not where the slope is small
    # against the curvature: near a minimum, or log at 1e-4.)  A gap that rounding
    # could make, over eps or over its tenth, shows no jump.
    gap, gap_near = above - below, above_near - below_near
    ratio = (steps[1] + steps[2]) / (steps[0] + steps[3])   # a smooth fn's gap_near / gap
    noisy = abs(gap) <= 2 * (unit + jitter) * (1 / steps[0] + 1 / steps[3]) or (
        np.isfinite(gap_near) and abs(gap) <= 4 * unit * (1 / steps[1] + 1 / steps[2]))
    tol = atol + rtol * abs(analytic)
    if (noisy or abs(gap) <= 1e-3 * max(abs(below), abs(above))
            or (np.isfinite(gap_near) and ratio <= 0.5
                and ratio / 2 <= gap_near / gap <= ratio * 2)
            or not min(below, above) - tol <= analytic <= max(below, above) + tol):
        return ""
    return (f"; the one-sided differences there disagree as well ({below:.4g} below the "
            f"point, {above:.4g} above it): where fn has a kink or a tie (relu or abs at 0, "
            f"equal values in a max), it has no derivative, and the check needs inputs "
            f"away from that point")


def _low_precision(fn, originals, wrt, vs, analytic, full_jacobian, atol, names, name):
    """Fails unless the backward in the inputs' own float32/float16 dtype agrees with
    the float64 analytic gradient to that dtype's precision."""
    low = [j for j, i in enumerate(wrt) if originals[i].dtype.itemsize < 8]
    if not low:
        return
    inputs = _copies(originals, name, lambda x: x.dtype)
    xs = [inputs[i] for i in wrt]
    with enable_grad():
        outs = _outputs(fn, inputs, name)
    for k, (y, v) in enumerate(zip(outs, vs)):
        if v is None or analytic[k] is None or not y.requires_grad:
            continue
        grads = _backward(y, xs, v.ravel(), names, k, name)
        # The float64 gradients contracted with v, as here; rounding in the
        # low dtype scales with the largest of them, not with each element.
        refs = [np.zeros(x.size) if a is None else (v.ravel() @ a if full_jacobian else a[0])
                for x, a in zip(xs, analytic[k])]
        scale = max(float(np.abs(r).max(initial=0)) for r in refs)
        for j in low:
            x, ref = xs[j], refs[j]
            got = np.zeros(x.size) if grads[j] is None else grads[j]
            tol = 3 * math.sqrt(np.finfo(x.dtype).eps)
            bad = ~(np.abs(got - ref) <= atol + tol * (np.abs(ref) + scale))
            if bad.any():
                e = int(np.argmax(bad))
                raise _Failed(
                    f"{name}: in {x.dtype}, {names.inp(j)}'s own dtype, the gradient from "
                    f"{names.out(k)} is {got[e]:.7g} at index {_index(e, x.shape)} where the "
                    f"float64 check gives {ref[e]:.7g} (allowed: atol {atol} + {tol:.2g} "
                    f"relative to the largest gradient); the backward's {x.dtype} path is "
                    f"wrong or loses precision (overflow?); check_input_dtype=False checks "
                    f"float64 only")


# ---- the check -------------------------------------------------------------------------------
def _check_fn(name, fn):
    if not callable(fn):
        raise TypeError(f"{name}: fn must be a function of the inputs, got {type(fn).__name__}")


def _check_arguments(name, eps, atol, rtol, nondet_tol, seed, max_elements, **flags):
    """The settings, checked, as Python numbers: ``(eps, atol, rtol, nondet_tol, seed,
    max_elements)``; each of ``flags`` must be True or False."""
    for arg, value in flags.items():
        check_flag(f"{name}: {arg}", value)
    eps = check_number(f"{name}: eps", eps, low=0, open_low=True, high=math.inf,
                       open_high=True)
    atol, rtol, nondet_tol = (check_number(f"{name}: {arg}", value, high=math.inf,
                                           open_high=True)
                              for arg, value in (("atol", atol), ("rtol", rtol),
                                                 ("nondet_tol", nondet_tol)))
    seed = check_seed(f"{name}: seed", seed, none=True)
    if max_elements is not None:
        max_elements = check_int(f"{name}: max_elements", max_elements, low=1)
    return eps, atol, rtol, nondet_tol, seed, max_elements


def _check(fn, inputs, eps, atol, rtol, raise_exception, seed, grad_outputs, max_elements,
           full_jacobian, nondet_tol, check_input_dtype, name, names=None, seed_drawn=False,
           random=False):
    """gradcheck's body; ``seed_drawn``: ``seed`` was drawn for a seed=None, ``random``:
    random values from it (gradgradcheck's upstream gradients) are among the inputs."""
    _check_fn(name, fn)
    eps, atol, rtol, nondet_tol, seed, max_elements = _check_arguments(
        name, eps, atol, rtol, nondet_tol, seed, max_elements, raise_exception=raise_exception,
        full_jacobian=full_jacobian, check_input_dtype=check_input_dtype)
    if seed is None:    # a new seed, from the operating system, that a failure can name
        seed, seed_drawn = secrets.randbits(32), True
    if full_jacobian and grad_outputs is not None:
        raise ValueError(f"{name}: grad_outputs has no use with full_jacobian=True (every "
                         f"Jacobian entry is compared); pass one or the other")
    originals = _as_tuple(inputs)
    inputs = _float64_copies(originals, name)
    wrt = _requiring_grad(originals, name)
    for i in wrt:
        if inputs[i].dtype.kind != "f":
            raise TypeError(f"{name}: input {i} has dtype {inputs[i].dtype}; only "
                            f"float inputs can be checked")
    names = names or _Names(wrt=wrt)
    try:
        _run(fn, inputs, originals, wrt, eps, atol, rtol, seed, grad_outputs, max_elements,
             full_jacobian, nondet_tol, check_input_dtype, names, name)
    except _Failed as e:
        message = str(e)
        # The seed matters where random values were used: an upstream gradient drawn
        # for v^T J (not with full_jacobian) or elements sampled for max_elements.
        random = random or (grad_outputs is None and not full_jacobian) or (
            max_elements is not None and any(inputs[i].size > max_elements for i in wrt))
        if seed_drawn and random:
            message += (f" [the random values of this check came from seed={seed}, drawn "
                        f"because seed=None; pass seed={seed} to repeat it]")
        return _fail(message, raise_exception)
    return True


def _run(fn, inputs, originals, wrt, eps, atol, rtol, seed, grad_outputs, max_elements,
         full_jacobian, nondet_tol, check_input_dtype, names, name):
    """The check itself: forward, analytic side, numerical side, comparison, then
    the inputs' own dtype; a failure raises _Failed."""
    watch = _Watch(inputs, wrt, names, name)
    watch.require_finite()
    with enable_grad():  # the analytic side needs a graph, even inside a no_grad block
        outs = _outputs(fn, inputs, name)
    watch.check("fn")
    if not any(o.dtype.kind == "f" for o in outs):
        raise ValueError(f"{name}: fn returned no float output (dtypes "
                         f"{', '.join(str(o.dtype) for o in outs) or 'none'}), so there is "
                         f"nothing to differentiate")
    for k, o in enumerate(outs):
        # Rounding to o's precision, divided by 2 eps, would swamp the derivative.
        fine = math.sqrt(np.finfo(o.dtype).eps) if o.dtype.kind == "f" else 0.0
        if o.requires_grad and o.dtype.itemsize < 8 and eps < fine:
            raise ValueError(f"{name}: {names.out(k)} has dtype {o.dtype}, but the check "
                             f"runs in float64 (the inputs are converted to it): does fn "
                             f"cast to a lower precision? Finite differences with eps={eps} "
                             f"need float64 outputs (or, to check such a cast itself, an eps "
                             f"of at least {fine:.1g} and a looser rtol)")
    rng = np.random.default_rng(seed)
    vs = _upstream(outs, grad_outputs, rng, name)
    analytic = _analytic(outs, [inputs[i] for i in wrt], vs, full_jacobian, nondet_tol,
                         watch, names, name)
    with no_grad():
        again = _outputs(fn, inputs, name)
    watch.check("a second call of fn")
    for k, (o, p) in enumerate(zip(outs, again)):
        d = _repeat_differs(o.numpy(), p.numpy(), nondet_tol) if o.dtype.kind == "f" else None
        if d is not None:
            raise _Failed(f"{name}: fn is not deterministic: called twice with the same "
                          f"inputs (the second time under no_grad, as the finite "
                          f"differences call it), its {names.out(k)} differs by up to "
                          f"{d:.3g}; finite differences need the same function at every "
                          f"call (seed any randomness inside fn, or pass nondet_tol)")
    # Rounding noise of the numerical side, where a gradient is zero: about
    # float64's eps times the outputs' size, over 2 eps, summed against v.
    noises = [0.0 if v is None else 10 * np.finfo(np.float64).eps / eps * math.sqrt(o.size)
              * float(np.abs(o.numpy()).max(initial=0)) for o, v in zip(outs, vs)]
    mode = "full" if full_jacobian else "random" if grad_outputs is None else "given"
    show_output = names.custom_outputs or sum(v is not None for v in vs) > 1
    failure, anything = None, False
    for j, i in enumerate(wrt):
        x = inputs[i]
        cols = np.arange(x.size)
        if max_elements is not None and x.size > max_elements:
            cols = np.sort(rng.choice(x.size, size=max_elements, replace=False))
        start = watch.values[i].astype(np.float64).ravel()
        numerical = _numerical(fn, inputs, i, start, vs, cols, eps, full_jacobian, name)
        watch.check("fn")
        for k, (y, n) in enumerate(zip(outs, numerical)):
            if n is None:
                continue
            a = analytic[k][j]
            anything = anything or (len(cols) > 0 and y.size > 0
                                    and (a is not None or bool(n.any())))
            failure = failure or _compare(a, n, cols, x, y, j, k, names, show_output, mode,
                                          atol, rtol, noises[k], name)
        if failure:
            message, worst = failure
            if worst is not None:
                k, row, e, value = worst
                weights = vs[k].ravel()
                if full_jacobian:   # one entry of the Jacobian: output element ``row``
                    weights = np.zeros(outs[k].size)
                    weights[row] = 1.0
                message += _hint(fn, inputs, i, e, start, k, weights, value, eps, atol, rtol,
                                 nondet_tol, name)
            raise _Failed(message)
    if not anything:
        # Both sides are zero everywhere (or empty) and agree, checking nothing.
        raise ValueError(
            f"{name}: fn's outputs do not depend on any input that requires grad (or those "
            f"inputs or outputs have no elements), so there is nothing to check; does fn "
            f"compute from its arguments (not from tensors it closes over)?")
    if check_input_dtype:
        _low_precision(fn, originals, wrt, vs, analytic, full_jacobian, atol, names, name)


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True,
              seed=0, grad_outputs=None, max_elements=None, full_jacobian=False,
              nondet_tol=0.0, check_input_dtype=True):
    """Check ``fn``'s analytic gradients against central finite differences.

    ``inputs`` is a tensor or a tuple of arguments for ``fn`` (non-tensor
    entries are passed through; a list of tensors that require grad must be
    spread into separate inputs); every float tensor with
    ``requires_grad=True`` is checked, element by element, on a float64 copy
    laid out in memory as the input is.  ``fn`` returns a tensor or a tuple
    (or list) of tensors; each float output is checked against each input on
    its own.

    ``grad_outputs``: one upstream gradient per output (by default random
    normal, drawn from ``seed``, so a check repeats itself; ``seed=None``
    draws a new seed each call, and a failure that used it names it).
    ``max_elements`` checks at most that many randomly chosen elements per
    input (for large tensors such as a model's weights); by default every
    element is checked.  ``full_jacobian=True`` compares every Jacobian
    entry instead of one random contraction per output (one backward per
    output element: for small outputs).  ``nondet_tol``: how far two calls
    of ``fn``, or two backward passes, may differ (beyond rounding).
    ``check_input_dtype``: for float32/float16 inputs, also run the backward
    in their own dtype and compare it with the float64 gradient.

    Tolerances apply to each (input, output) pair on its own, as in
    PyTorch.  Returns True, or raises :class:`GradcheckError` naming the
    input (and output), the worst element, both values and the tolerance
    (and whether that element sits on a kink or tie, or where rounding of
    large outputs swamps the finite difference), or what else went
    wrong (an input or upstream gradient changed in place, a backward or
    ``fn`` that does not repeat itself).  With ``raise_exception=False``
    those failures return False instead; errors that make the check
    impossible (bad arguments, inputs that are not finite, no float output,
    a backward that fails or returns a gradient of the wrong shape) are
    raised either way.
    """
    return _check(fn, inputs, eps, atol, rtol, raise_exception, seed, grad_outputs,
                  max_elements, full_jacobian, nondet_tol, check_input_dtype, "gradcheck")


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3,
                  raise_exception=True, seed=0, full_jacobian=False, nondet_tol=0.0,
                  max_elements=None):
    """Check second-order gradients: ``gradcheck`` of ``x, v -> grad(fn(x), x, v)``.

    The backward pass, built with ``create_graph=True``, is itself checked
    against finite differences with respect to the inputs and to the
    upstream gradients ``v`` (``grad_outputs``, one per output of ``fn``;
    random normal from ``seed`` by default, as in :func:`gradcheck`), in
    float64.  Failures name
    ``fn``'s inputs, ``grad_outputs[k]`` for an upstream gradient, and
    "the gradient w.r.t. input i" for the first-order result being checked.
    ``max_elements`` checks at most that many randomly chosen elements of each
    input and upstream gradient, as in :func:`gradcheck` (each checked element
    costs two calls of fn and of its backward).
    """
    name = "gradgradcheck"
    _check_fn(name, fn)
    seed = check_seed(f"{name}: seed", seed, none=True)
    seed_drawn = seed is None
    if seed_drawn:      # as in _check, but both orders of gradient need it
        seed = secrets.randbits(32)
    inputs = _as_tuple(inputs)
    wrt = _requiring_grad(inputs, name)
    # The outputs' shapes and dtypes, from copies as the check makes them (_check
    # makes its own, so an fn that writes into its inputs is caught there).
    outs = _outputs(fn, _float64_copies(inputs, name), name)
    given = grad_outputs is not None
    vs = _upstream(outs, grad_outputs, np.random.default_rng(seed + 1), name)
    float_outs = [k for k, v in enumerate(vs) if v is not None]
    grad_outputs = [Tensor._make(outs[k]._backend.asarray(vs[k]), outs[k]._backend, True)
                    for k in float_outs]
    n_in = len(inputs)

    def first_order(*args):
        xs, gs = args[:n_in], args[n_in:]
        with enable_grad():  # the numerical side evaluates this under no_grad
            ys = _outputs(fn, xs, name)
            pairs = [(ys[k], g) for k, g in zip(float_outs, gs) if ys[k].requires_grad]
            grads = _grad([y for y, _ in pairs], [xs[i] for i in wrt], [g for _, g in pairs],
                          create_graph=True, allow_unused=True)
        return tuple(zeros_like(xs[i]) if g is None else g for i, g in zip(wrt, grads))

    all_inputs = tuple(inputs) + tuple(grad_outputs)
    names = _Names([f"input {i}" for i in range(n_in)]
                   + [f"grad_outputs[{k}]" for k in float_outs],
                   [f"the gradient w.r.t. input {i}" for i in wrt],
                   wrt=[i for i, x in enumerate(all_inputs)
                        if isinstance(x, Tensor) and x.requires_grad])
    return _check(first_order, all_inputs, eps, atol, rtol, raise_exception, seed, None,
                  max_elements, full_jacobian, nondet_tol, False, name, names, seed_drawn,
                  random=not given)
