"""Code ported from PyTorch: its argument names.

The Tensor follows NumPy (README, "Conventions"); PyTorch's ``dim`` and ``keepdim``
are accepted as aliases of ``axis`` and ``keepdims``.
"""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_cnn as tg


def R(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---- keepdim, PyTorch's name for keepdims ----------------------------------------------
KEEPDIM_CASES = [
    ("sum", 1), ("sum", (0, 2)), ("sum", None), ("mean", -1), ("mean", (0, 1)),
    ("var", 1), ("var", None), ("std", (0, 2)), ("std", 2), ("max", 1), ("max", (0, 2)),
    ("min", 0), ("min", None), ("argmax", 1), ("argmax", None), ("argmin", -1),
    ("logsumexp", 1), ("logsumexp", (0, 2)), ("logsumexp", None),
]
TORCH_NAME = {"max": "amax", "min": "amin"}   # torch's max(dim) gives (values, indices)


def _case_id(case):
    method, dim = case
    return f"{method}-{dim}".replace(" ", "")


@pytest.mark.parametrize("keepdim", [True, False])
@pytest.mark.parametrize("method, dim", KEEPDIM_CASES, ids=map(_case_id, KEEPDIM_CASES))
def test_keepdim_gives_what_keepdims_gives(method, dim, keepdim, device):
    x = tg.tensor(R(2, 3, 4), device=device)
    ours = getattr(x, method)(dim=dim, keepdim=keepdim)
    want = getattr(x, method)(axis=dim, keepdims=keepdim)
    assert (ours.shape, ours.dtype) == (want.shape, want.dtype)
    np.testing.assert_array_equal(ours.numpy(), want.numpy())
    # axis with keepdim, dim with keepdims: any mix of the names
    np.testing.assert_array_equal(getattr(x, method)(dim, keepdim=keepdim).numpy(),
                                  want.numpy())


@pytest.mark.parametrize("keepdim", [True, False])
@pytest.mark.parametrize("method, dim", KEEPDIM_CASES, ids=map(_case_id, KEEPDIM_CASES))
def test_keepdim_matches_torch(method, dim, keepdim):
    torch = pytest.importorskip("torch")
    if method == "logsumexp" and dim is None:
        pytest.skip("torch's logsumexp needs a dim")
    a = R(2, 3, 4).astype(np.float64)
    ours = getattr(tg.tensor(a), method)(dim=dim, keepdim=keepdim)
    theirs = getattr(torch.tensor(a), TORCH_NAME.get(method, method))(dim=dim, keepdim=keepdim)
    assert ours.shape == tuple(theirs.shape)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)
