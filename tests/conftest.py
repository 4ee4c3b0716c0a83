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
