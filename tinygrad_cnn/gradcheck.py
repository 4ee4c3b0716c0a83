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
the defaults for smooth functions of O(1) inputs and outputs.

Checks fail legitimately where the function is not differentiable: at
kinks (relu, abs, clip at 0 or its bounds, max/min) the finite difference
straddles two slopes, and at ties (two equal maxima in a max or max-pool
window) the analytic rule picks one documented choice while a perturbation
picks the other.  Keep test inputs at least ``10 * eps`` away from kinks
and ties.
"""
from __future__ import annotations

import numpy as np

from .autograd import enable_grad, no_grad
from .backend import DeviceError
from .tensor import Tensor, float64, grad as _grad, zeros_like


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with the numerical one."""


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _holds_grad_tensor(x):
    if isinstance(x, Tensor):
        return x.requires_grad
    if isinstance(x, dict):
        x = list(x.values())
    return isinstance(x, (tuple, list)) and any(_holds_grad_tensor(e) for e in x)


def _float64_copies(inputs, name):
    """float64 copies of the inputs, so the caller's tensors are never touched."""
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
            data = x.data.astype(float64) if x.dtype.kind == "f" else x.data.copy()
        copies.append(Tensor._make(data, x._backend, x.requires_grad))
    return copies


def _outputs(fn, inputs, name):
    outs = _as_tuple(fn(*inputs))
    for o in outs:
        if not isinstance(o, Tensor):
            raise TypeError(f"{name}: fn must return tensors, got {type(o).__name__}")
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
        if not isinstance(g, Tensor) or g.shape != o.shape:
            what = f"shape {g.shape}" if isinstance(g, Tensor) else f"a {type(g).__name__}"
            raise ValueError(f"{name}: grad_outputs[{k}] is {what}; expected a tensor of "
                             f"output {k}'s shape {o.shape}")
        if g.device != o.device:
            raise DeviceError(f"{name}: grad_outputs[{k}] is on {g.device} but output {k} "
                              f"is on {o.device}")
        vs.append(g.numpy().astype(np.float64))
    return vs


def _analytic(outs, xs, vs, full_jacobian):
    """analytic[k][j]: (rows, x_j.size), each row the gradient of output k contracted
    with one upstream row (v_k, or one-hot rows for the full Jacobian), or None where
    no gradient reached x_j from output k."""
    result = []
    for y, v in zip(outs, vs):
        if v is None:                  # not a float output: nothing to differentiate
            result.append(None)
            continue
        rows = np.eye(y.size) if full_jacobian else v.reshape(1, -1)
        per_x = [None] * len(xs)
        if y.requires_grad:
            for r, row in enumerate(rows):
                # A fresh copy per pass: a backward may write into its grad_out,
                # which must not change the v of the numerical side.
                with y._backend.context():
                    g_out = Tensor._make(y._backend.asarray(row.reshape(y.shape).copy()),
                                         y._backend)
                grads = _grad([y], xs, [g_out], retain_graph=True, allow_unused=True)
                for j, g in enumerate(grads):
                    if g is not None:
                        if per_x[j] is None:
                            per_x[j] = np.zeros((len(rows), xs[j].size))
                        per_x[j][r] = g.numpy().ravel()
        result.append(per_x)
    return result


def _numerical(fn, inputs, i, vs, cols, eps, full_jacobian, name):
    """numerical[k]: (rows, x.size) finite differences of output k for the flat elements
    ``cols`` of input i (zero elsewhere), contracted as in :func:`_analytic`."""
    x = inputs[i]
    original = x.data
    start = x._backend.to_numpy(original).astype(np.float64).ravel()
    numerical = [None if v is None else np.zeros((v.size if full_jacobian else 1, x.size))
                 for v in vs]

    def evaluate(e, value):
        host = start.copy()
        host[e] = value
        with x._backend.context():
            x.data = x._backend.asarray(host.reshape(x.shape).astype(x.dtype))
        with no_grad():
            values = _outputs(fn, inputs, name)
        if len(values) != len(vs):
            raise ValueError(f"{name}: fn returned {len(vs)} outputs, then {len(values)}")
        return [None if v is None else values[k].numpy().astype(np.float64)
                for k, v in enumerate(vs)]

    try:
        for e in cols:
            plus = evaluate(e, start[e] + eps)
            minus = evaluate(e, start[e] - eps)
            for k, v in enumerate(vs):
                if v is None:
                    continue
                if plus[k].shape != v.shape or minus[k].shape != v.shape:
                    raise ValueError(f"{name}: output {k} changed shape from {v.shape} to "
                                     f"{plus[k].shape} when input {i} was perturbed")
                # Differences first, element by element, then the contraction.
                column = ((plus[k] - minus[k]) / (2 * eps)).ravel()
                numerical[k][:, e] = column if full_jacobian else v.ravel() @ column
    finally:
        x.data = original
    return numerical


def _fail(msg, raise_exception):
    if raise_exception:
        raise GradcheckError(msg)
    return False


def _index(flat, shape):
    return tuple(int(j) for j in np.unravel_index(int(flat), shape))


def _compare(a, n, cols, x, i, y, k, several_outputs, full_jacobian, atol, rtol, name):
    """None if output k's gradient w.r.t. input i agrees on ``cols``, else the message."""
    reached = a is not None
    a = np.zeros_like(n) if a is None else a
    a, n = a[:, cols], n[:, cols]
    pair = f"input {i} (shape {x.shape})" + (
        f" and output {k} (shape {y.shape})" if several_outputs else "")
    if not (np.isfinite(a).all() and np.isfinite(n).all()):
        return (f"{name}: {pair} has non-finite gradients: analytic {a.ravel()[:8]}, "
                f"numerical {n.ravel()[:8]}")
    err = np.abs(a - n) - (atol + rtol * np.abs(n))
    if not err.size or err.max() <= 0:
        return None
    row, col = np.unravel_index(int(np.argmax(err)), err.shape)
    if full_jacobian:
        where = (f"at index {_index(cols[col], x.shape)} of the input and "
                 f"{_index(row, y.shape)} of the output")
        count = f"{int((err > 0).sum())} of {err.size} Jacobian entries"
    else:
        where = f"at index {_index(cols[col], x.shape)}"
        count = f"{int((err > 0).sum())} of {err.size} element(s)"
    if len(cols) < x.size:
        count += f" ({len(cols)} of the input's {x.size} elements checked)"
    hint = ("" if reached else
            f"; no gradient reached input {i} from this output: a backward returned None "
            f"for it, or the output was computed outside the graph (from raw arrays or "
            f"under no_grad)")
    return (f"{name}: analytic and numerical gradients differ for {pair} {where}: "
            f"analytic {a[row, col]:.10g}, numerical {n[row, col]:.10g} (|difference| "
            f"{abs(a[row, col] - n[row, col]):.3g} > atol {atol} + rtol {rtol} * "
            f"|numerical|); {count} out of tolerance{hint}")


def _check(fn, inputs, eps, atol, rtol, raise_exception, seed, grad_outputs, max_elements,
           full_jacobian, name):
    if max_elements is not None and max_elements < 1:
        raise ValueError(f"{name}: max_elements must be at least 1, got {max_elements}")
    inputs = _float64_copies(_as_tuple(inputs), name)
    wrt = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not wrt:
        raise ValueError(f"{name}: no input requires grad, so there is nothing to check")
    for i in wrt:
        if inputs[i].dtype.kind != "f":
            raise TypeError(f"{name}: input {i} has dtype {inputs[i].dtype}; only "
                            f"float inputs can be checked")
    with enable_grad():  # the analytic side needs a graph, even inside a no_grad block
        outs = _outputs(fn, inputs, name)
    rng = np.random.default_rng(seed)
    vs = _upstream(outs, grad_outputs, rng, name)
    analytic = _analytic(outs, [inputs[i] for i in wrt], vs, full_jacobian)
    several = sum(v is not None for v in vs) > 1
    failure, anything = None, False
    for j, i in enumerate(wrt):
        x = inputs[i]
        cols = np.arange(x.size)
        if max_elements is not None and x.size > max_elements:
            cols = np.sort(rng.choice(x.size, size=max_elements, replace=False))
        numerical = _numerical(fn, inputs, i, vs, cols, eps, full_jacobian, name)
        for k, (y, n) in enumerate(zip(outs, numerical)):
            if n is None:
                continue
            a = analytic[k][j]
            anything = anything or (len(cols) > 0 and (a is not None or bool(n.any())))
            failure = failure or _compare(a, n, cols, x, i, y, k, several, full_jacobian,
                                          atol, rtol, name)
        if failure:
            return _fail(failure, raise_exception)
    if not anything:
        # Both sides are zero everywhere (or empty) and agree, checking nothing.
        raise ValueError(
            f"{name}: fn's outputs do not depend on any input that requires grad (or those "
            f"inputs have no elements), so there is nothing to check; does fn compute from "
            f"its arguments (not from tensors it closes over)?")
    return True


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True,
              seed=0, grad_outputs=None, max_elements=None, full_jacobian=False):
    """Check ``fn``'s analytic gradients against central finite differences.

    ``inputs`` is a tensor or a tuple of arguments for ``fn`` (non-tensor
    entries are passed through; a list of tensors that require grad must be
    spread into separate inputs); every float tensor with
    ``requires_grad=True`` is checked, element by element, in float64.  ``fn``
    returns a tensor or a tuple of tensors; each float output is checked
    against each input on its own.

    ``grad_outputs``: one upstream gradient per output (by default random
    normal, drawn from ``seed``).  ``max_elements`` checks at most that many
    randomly chosen elements per input (for large tensors such as a model's
    weights); by default every element is checked.  ``full_jacobian=True``
    compares every Jacobian entry instead of one random contraction per
    output (one backward per output element: for small outputs).

    Tolerances apply to each (input, output) pair on its own, as in
    PyTorch.  Returns True, or raises :class:`GradcheckError` naming the
    input (and output), the worst element and both values (returns False if
    ``raise_exception`` is False).
    """
    return _check(fn, inputs, eps, atol, rtol, raise_exception, seed, grad_outputs,
                  max_elements, full_jacobian, "gradcheck")


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3,
                  raise_exception=True, seed=0, full_jacobian=False):
    """Check second-order gradients: ``gradcheck`` of ``x, v -> grad(fn(x), x, v)``.

    The backward pass, built with ``create_graph=True``, is itself checked
    against finite differences with respect to the inputs and to the
    upstream gradients ``v`` (``grad_outputs``, one per output of ``fn``;
    random normal from ``seed`` by default).
    """
    name = "gradgradcheck"
    inputs = _float64_copies(_as_tuple(inputs), name)
    wrt = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not wrt:
        raise ValueError(f"{name}: no input requires grad, so there is nothing to check")
    outs = _outputs(fn, inputs, name)
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

    return _check(first_order, tuple(inputs) + tuple(grad_outputs), eps, atol, rtol,
                  raise_exception, seed, None, None, full_jacobian, name)
