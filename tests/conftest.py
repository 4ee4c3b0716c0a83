"""Shared test fixtures: the ``device`` fixture runs a test once per device.

Any test that takes a ``device`` argument is run for every entry of
:data:`DEVICES`, without copying the test: the test builds its tensors with
``device=device`` and compares results on the host with ``.numpy()``.

* ``"cpu"`` always runs.
* ``"cuda"`` is marked ``gpu`` and skipped, with the probe's reason from
  :func:`tinygrad_cnn.backend.cuda_status`, when no GPU is usable; with
  ``TINYGRAD_CNN_REQUIRE_GPU=1`` that skip becomes a failure (for GPU CI).
* Any other name must be a backend registered with ``register_backend``
  (for example a strict NumPy stand-in for CuPy).  Adding one is a one-line
  change: append its name to ``DEVICES`` after registering it here.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import settings

from tinygrad_cnn.backend import DeviceError, cuda_status, get_backend

import strict_backend  # noqa: F401  (registers the "strict" CuPy stand-in, see that file)

# "strict2" plays a second GPU: not the current device unless a context makes it
# so, which is where array code run outside backend.context() goes wrong.
DEVICES = ["cpu", "cuda", "strict", "strict2"]

# Property-based tests draw the same cases on every run, so a CI failure
# reproduces locally; HYPOTHESIS_PROFILE=explore searches afresh.
settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


def is_gpu_device(name):
    return name == "cuda" or name.startswith("cuda:")


def unavailable_reason(name):
    """None if tensors can be made on device ``name``, else why not."""
    if is_gpu_device(name):
        usable, reason = cuda_status()
        if not usable:
            return reason
    try:
        get_backend(name)
    except DeviceError as e:
        return str(e)
    return None


def device_params(devices=None):
    """``pytest.param`` entries for ``devices`` (default: all), GPU ones marked ``gpu``.

    For tests that parametrise ``device`` themselves, e.g. on a subset::

        @pytest.mark.parametrize("device", device_params(["cpu"]), indirect=True)
    """
    return [pytest.param(d, id=d, marks=[pytest.mark.gpu] if is_gpu_device(d) else [])
            for d in (DEVICES if devices is None else devices)]


@pytest.fixture(params=device_params())
def device(request):
    """The device string of this run of the test; skips (or fails) if it is unusable."""
    name = request.param
    reason = unavailable_reason(name)
    if reason is not None:
        if is_gpu_device(name) and os.environ.get("TINYGRAD_CNN_REQUIRE_GPU") == "1":
            pytest.fail(f"TINYGRAD_CNN_REQUIRE_GPU=1 but device {name!r} is not usable: "
                        f"{reason}", pytrace=False)
        pytest.skip(f"device {name!r} is not usable: {reason}")
    return name


def forward_and_grads(fn, arrays, device="cpu", seed=1):
    """fn's output and the gradients of all its inputs (tensors made from ``arrays``
    on ``device``) for a random upstream gradient, as host arrays."""
    import numpy as np

    import tinygrad_cnn as tg
    xs = [tg.Tensor(a, requires_grad=True, device=device) for a in arrays]
    out = fn(*xs)
    v = tg.Tensor(np.random.default_rng(seed).standard_normal(out.shape), device=device)
    return [out.numpy()] + [g.numpy() for g in tg.grad(out, xs, v)]


# ---- upstream gradients in other memory layouts -----------------------------------------
# In real graphs the gradient handed to an op's backward is often not C-contiguous:
# a transpose's backward hands on a permuted view, a batch-last convolution's
# consumers a batch-last gradient, a slice's backward negative or step strides, a
# sum's backward a stride-0 broadcast.  Each layout: (xp, C-contiguous a) -> a view
# of a's values laid out otherwise.
def _flipped(xp, a):
    """Every axis reversed in memory: a's values through negative strides."""
    return xp.flip(xp.ascontiguousarray(xp.flip(a)))


def _stepped(xp, a):
    """a's values at every other element of a NaN buffer twice as long (a step slice)."""
    buf = xp.full(a.shape[:-1] + (2 * a.shape[-1],), xp.nan, dtype=a.dtype)
    buf[..., ::2] = a
    return buf[..., ::2]


UPSTREAM_LAYOUTS = {
    "fortran": lambda xp, a: xp.asfortranarray(a),
    "batch_last": lambda xp, a: xp.moveaxis(xp.ascontiguousarray(xp.moveaxis(a, 0, -1)), -1, 0),
    "flipped": _flipped,
    "stepped": _stepped,
}


def _one_along_first_long_axis(shape):
    axis = next((k for k, n in enumerate(shape) if n > 1), 0)
    return shape[:axis] + (1,) + shape[axis + 1:]


# Stride-0 views: output shape -> the shape of the values broadcast to it (so the
# upstream's values are constant along the other axes).
UPSTREAM_BROADCASTS = {
    "broadcast_axis": lambda shape: _one_along_first_long_axis(shape) if shape else (),
    "broadcast_all": lambda shape: (1,) * len(shape),   # as Sum.backward hands on
}


def _long_axis_strides(a):
    """The strides that matter: those of the axes of more than one element."""
    return tuple(s for s, n in zip(a.strides, a.shape) if n > 1)


def check_gradients_ignore_upstream_layout(fn, arrays, device="cpu", seed=1):
    """The input gradients of ``fn`` (on float64 tensors made from ``arrays`` on
    ``device``) do not depend on the memory layout of the upstream gradients, and
    the backward leaves those upstream arrays unchanged.

    The upstream values of each float output are given in C order, then (the same
    values) in Fortran order, batch-last, through negative strides and through step
    strides; then values constant along some axes, as a stride-0 broadcast view and
    as its C-order copy.  Each upstream tensor wraps its view as it is
    (``Tensor(view)`` would copy it to a dense layout), and the strides arriving at
    the backward of each output's op are checked to be the view's, so a layout lost
    on the way fails instead of testing C order only.  A layout that is C order for
    every output (a 1-d output in Fortran order) is not run again.
    """
    import numpy as np

    import tinygrad_cnn as tg
    from tinygrad_cnn import Tensor
    backend = get_backend(device)
    xp = backend.xp

    def on_device(values):
        """A device array of its own (the host backend's asarray would share ``values``,
        which a backward writing into its upstream would then change unseen)."""
        with backend.context():
            return backend.asarray(np.array(values, copy=True))

    def run(upstreams_of):
        """A fresh forward pass and the backward from ``upstreams_of(outputs)``:
        (host gradients, the upstream tensors, the upstream strides each output's
        op received, None for an output that is an input)."""
        xs = [tg.tensor(a, dtype=tg.float64, requires_grad=True, device=device)
              for a in arrays]
        outs = fn(*xs)
        outs = [o for o in (outs if isinstance(outs, (tuple, list)) else [outs])
                if o.dtype.kind == "f" and o.requires_grad]
        upstreams = upstreams_of(outs)
        received = [None] * len(outs)
        for k, o in enumerate(outs):
            if o._ctx is not None:
                o._ctx.backward = _watched(o._ctx.backward, received, k)
        grads = tg.grad(outs, xs, upstreams, allow_unused=True)
        return [None if g is None else g.numpy() for g in grads], upstreams, received

    def check(what, upstreams_of, held, want):
        """Run with the upstreams ``upstreams_of`` gives, which hold the C-order
        values ``held``: they must reach the ops as given and come back unchanged,
        and the gradients must be ``want`` (None: return them)."""
        got, upstreams, received = run(upstreams_of)
        for k, (u, v, r) in enumerate(zip(upstreams, held, received)):
            assert r is None or r == u.data.strides, \
                (f"{what}: output {k}'s op received an upstream with strides {r}, not "
                 f"the strides {u.data.strides} it was given in")
            assert np.array_equal(backend.to_numpy(u.data), v), \
                f"{what}: the backward changed upstream gradient {k} in place"
        for k, (g, w) in enumerate(zip(got, want or got)):
            assert (g is None) == (w is None), f"{what}: gradient {k} is {g} vs {w}"
            if w is not None:
                scale = max(1.0, float(np.abs(w).max(initial=0.0)))
                np.testing.assert_allclose(
                    g, w, rtol=1e-12, atol=1e-12 * scale,
                    err_msg=f"gradient of input {k} with a {what} upstream gradient")
        return got

    rng = np.random.default_rng(seed)
    values = []

    def c_order(outs):
        values[:] = [rng.standard_normal(o.shape).astype(o.dtype) for o in outs]
        return [Tensor._make(on_device(v), backend) for v in values]

    want = check("C-order", c_order, values, None)   # (values is filled in by then)
    rows = []   # (name, upstream tensors, the C-order values they hold, the gradients)
    for name, layout in UPSTREAM_LAYOUTS.items():
        with backend.context():
            views = [layout(xp, on_device(v)) if v.ndim else on_device(v) for v in values]
        rows.append((name, [Tensor._make(view, backend) for view in views], values, want))
    for name, small_shape in UPSTREAM_BROADCASTS.items():
        smalls = [rng.standard_normal(small_shape(v.shape)).astype(v.dtype) for v in values]
        held = [np.array(np.broadcast_to(s, v.shape), order="C")   # (0-d stays 0-d)
                for s, v in zip(smalls, values)]
        # The reference: the same values in C order.
        same = check(f"C-order copy of {name}",
                     lambda outs: [Tensor._make(on_device(h), backend) for h in held], held, None)
        # Tensor.broadcast_to gives the view Sum.backward gives, marked read-only.
        rows.append((name, [Tensor._make(on_device(s), backend).broadcast_to(v.shape)
                            for s, v in zip(smalls, values)], held, same))
    ran = []
    for name, upstreams, held, reference in rows:
        if all(_long_axis_strides(u.data) == _long_axis_strides(np.empty(v.shape, v.dtype))
               for u, v in zip(upstreams, held)):
            continue   # C order for every output: nothing new
        check(name, lambda outs, upstreams=upstreams: upstreams, held, reference)
        ran.append(name)
    assert ran or all(v.size <= 1 for v in values), "no upstream layout other than C order"
    return ran


def _watched(backward, received, k):
    """``backward`` that records the strides of the gradient it is given in ``received[k]``."""
    def watched(grad_out):
        received[k] = grad_out.data.strides
        return backward(grad_out)
    return watched
