"""Numerical gradient checking, for the test suite and for user code.

``gradcheck(fn, inputs)`` compares the analytic gradient that backward
computes with central finite differences, element by element, for every
input that requires grad.  Both sides are contracted with the same random
upstream gradient ``v``: the analytic side is ``grad(fn(x), x, v)``, the
numerical side ``sum(v * (fn(x + eps e_i) - fn(x - eps e_i)) / (2 eps))``.
A random ``v`` (not all ones) catches a backward that mishandles how the
upstream gradient varies across elements.

Tolerances: element i passes when ``|analytic - numerical| <= atol +
rtol * |numerical|``.  Central differences in float64 with ``eps=1e-6``
have an error of about ``eps**2 * f''' + 1e-16 / eps``, well inside the
defaults for smooth functions of O(1) inputs.

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
from .tensor import Tensor, float64, grad as _grad, zeros_like


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with the numerical one."""


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _float64_copies(inputs):
    """float64 copies of the inputs, so the caller's tensors are never touched."""
    copies = []
    for x in inputs:
        if not isinstance(x, Tensor):
            copies.append(x)
            continue
        with x._backend.context():
            data = x.data.astype(float64) if x.dtype.kind == "f" else x.data.copy()
        copies.append(Tensor._make(data, x._backend, x.requires_grad))
    return copies


def _outputs(fn, inputs):
    outs = _as_tuple(fn(*inputs))
    for o in outs:
        if not isinstance(o, Tensor):
            raise TypeError(f"gradcheck: fn must return tensors, got {type(o).__name__}")
    return outs


def _fail(msg, raise_exception):
    if raise_exception:
        raise GradcheckError(msg)
    return False


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True,
              seed=0, grad_outputs=None, max_elements=None):
    """Check ``fn``'s analytic gradients against central finite differences.

    ``inputs`` is a tensor or a tuple (non-tensor entries are passed through);
    every float tensor with ``requires_grad=True`` is checked, element by
    element, in float64.  ``fn`` returns a tensor or a tuple of tensors.
    Returns True, or raises :class:`GradcheckError` naming the input, the
    worst element and both values (returns False if ``raise_exception`` is
    False).  ``max_elements`` checks at most that many randomly chosen
    elements per input (for large tensors such as a model's weights); by
    default every element is checked.
    """
    if max_elements is not None and max_elements < 1:
        raise ValueError(f"gradcheck: max_elements must be at least 1, got {max_elements}")
    inputs = _float64_copies(_as_tuple(inputs))
    wrt = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not wrt:
        raise ValueError("gradcheck: no input requires grad, so there is nothing to check")
    for i in wrt:
        if inputs[i].dtype.kind != "f":
            raise TypeError(f"gradcheck: input {i} has dtype {inputs[i].dtype}; only "
                            f"float inputs can be checked")
    with enable_grad():  # the analytic side needs a graph, even inside a no_grad block
        outs = _outputs(fn, inputs)
    rng = np.random.default_rng(seed)
    if grad_outputs is None:
        grad_outputs = [Tensor._make(o._backend.asarray(rng.standard_normal(o.shape)), o._backend)
                        for o in outs]
    else:
        grad_outputs = [g.detach().double() for g in _as_tuple(grad_outputs)]
    # Copied before backward runs: a backward that writes into its upstream
    # gradient must not change what the numerical side is contracted with.
    host_v = [v.numpy().copy() for v in grad_outputs]
    diff = [(o, v) for o, v in zip(outs, grad_outputs) if o.requires_grad and o.dtype.kind == "f"]
    if diff:
        analytic = _grad([o for o, _ in diff], [inputs[i] for i in wrt],
                         [v for _, v in diff], allow_unused=True)
    else:
        analytic = [None] * len(wrt)
    if all(a is None for a in analytic):
        # Both sides would be zero and agree, checking nothing.
        raise ValueError(
            "gradcheck: fn's outputs do not depend on any input that requires grad, so there "
            "is nothing to check; does fn compute from its arguments (not from tensors it "
            "closes over)?")

    def contracted():
        with no_grad():
            values = _outputs(fn, inputs)
        return sum(float(np.sum(o.numpy().astype(np.float64) * v))
                   for o, v in zip(values, host_v) if o.dtype.kind == "f")

    for k, i in enumerate(wrt):
        x = inputs[i]
        a = np.zeros(x.shape) if analytic[k] is None else analytic[k].numpy()
        original = x.data
        n = np.zeros(x.shape)
        checked = list(np.ndindex(*x.shape))
        if max_elements is not None and len(checked) > max_elements:
            picks = rng.choice(len(checked), size=max_elements, replace=False)
            checked = [checked[j] for j in sorted(picks)]
            # Unchecked elements compare equal: copy the analytic value over.
            n[...] = a
        for idx in checked:
            host = x._backend.to_numpy(original).copy()
            host[idx] += eps
            x.data = x._backend.asarray(host)
            plus = contracted()
            host[idx] -= 2 * eps
            x.data = x._backend.asarray(host)
            minus = contracted()
            n[idx] = (plus - minus) / (2 * eps)
        x.data = original
        if not (np.isfinite(a).all() and np.isfinite(n).all()):
            return _fail(f"gradcheck: input {i} (shape {x.shape}) has non-finite gradients: "
                         f"analytic {a.ravel()[:8]}, numerical {n.ravel()[:8]}", raise_exception)
        err = np.abs(a - n) - (atol + rtol * np.abs(n))
        if err.size and err.max() > 0:
            worst = np.unravel_index(int(np.argmax(err)), err.shape)
            bad = int((err > 0).sum())
            return _fail(
                f"gradcheck: analytic and numerical gradients differ for input {i} "
                f"(shape {x.shape}) at index {tuple(int(j) for j in worst)}: analytic "
                f"{a[worst]:.10g}, numerical {n[worst]:.10g} (|difference| "
                f"{abs(a[worst] - n[worst]):.3g} > atol {atol} + rtol {rtol} * "
                f"|numerical|); {bad} of {n.size} element(s) out of tolerance",
                raise_exception)
    return True


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3,
                  raise_exception=True, seed=0):
    """Check second-order gradients: ``gradcheck`` of ``x, v -> grad(fn(x), x, v)``.

    The backward pass, built with ``create_graph=True``, is itself checked
    against finite differences with respect to the inputs and to the random
    upstream gradient ``v``.
    """
    inputs = _float64_copies(_as_tuple(inputs))
    wrt = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not wrt:
        raise ValueError("gradgradcheck: no input requires grad, so there is nothing to check")
    outs = _outputs(fn, inputs)
    rng = np.random.default_rng(seed + 1)
    if grad_outputs is None:
        grad_outputs = [Tensor._make(o._backend.asarray(rng.standard_normal(o.shape)),
                                     o._backend, True) for o in outs]
    else:
        grad_outputs = [g.detach().double().requires_grad_() for g in _as_tuple(grad_outputs)]
    n_in = len(inputs)

    def first_order(*args):
        xs, vs = args[:n_in], args[n_in:]
        with enable_grad():  # gradcheck evaluates this under no_grad
            outs = _outputs(fn, xs)
            pairs = [(o, v) for o, v in zip(outs, vs) if o.requires_grad]
            grads = _grad([o for o, _ in pairs], [xs[i] for i in wrt], [v for _, v in pairs],
                          create_graph=True, allow_unused=True)
        return tuple(zeros_like(xs[i]) if g is None else g for i, g in zip(wrt, grads))

    return gradcheck(first_order, tuple(inputs) + tuple(grad_outputs), eps=eps, atol=atol,
                     rtol=rtol, raise_exception=raise_exception, seed=seed)
