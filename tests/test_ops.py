"""The core op set, as one table of cases run through one test per concern.

Every case names a tensor function, the NumPy function it must match, and
how to draw its inputs.  Each case is checked

* (a) by ``gradcheck`` in float64 (``test_gradcheck_op``),
* (b) forward against NumPy in float32 and float64 (``test_forward_matches_numpy``),
* (c) by ``gradgradcheck``, second derivatives included (``test_gradgradcheck_op``),
* (d) for the same gradients whatever the memory layout of the upstream gradient
  (Fortran order, batch-last, negative or step strides, a stride-0 broadcast),
  which the backward leaves unchanged (``test_gradients_ignore_the_upstream_layout``),

on every device of ``conftest.DEVICES``.  Inputs of kinked ops (relu, abs,
clip, maximum, max/min) are drawn well away from kinks and ties, since a
finite difference across a kink measures neither slope.

The end of the file tests tensor basics: dtype rules, host copies, factories
and comparisons.
"""
from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import gradcheck, gradgradcheck

try:  # tests/ as a package, or tests/ on sys.path (pytest's default rootdir mode)
    from .conftest import check_gradients_ignore_upstream_layout
except ImportError:
    from conftest import check_gradients_ignore_upstream_layout


# ---- input samplers: rng -> float64 host array ---------------------------------------
def R(*shape, scale=2.0):
    """Uniform in [-scale, scale] (smooth ops)."""
    return lambda rng: rng.uniform(-scale, scale, shape)


def P(*shape):
    """Positive, away from 0 (log, sqrt, division, pow bases)."""
    return lambda rng: rng.uniform(0.5, 2.0, shape)


def A(*shape, at=0.0):
    """Away from the kink at ``at`` by at least 0.2 (relu, abs, divisors)."""
    return lambda rng: at + rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 2.0, shape)


def D(*shape):
    """All values distinct, at least 0.2 apart (max/min without ties)."""
    def draw(rng):
        n = int(np.prod(shape))
        return ((rng.permutation(n) - n / 2) * 0.25 + rng.uniform(0, 0.05, n)).reshape(shape)
    return draw


def AWAY_FROM(*shape, points):
    """Uniform in [-2, 2] but at least 0.1 from each of ``points`` (clip bounds)."""
    def draw(rng):
        x = rng.uniform(-2, 2, shape)
        for p in points:
            near = np.abs(x - p) < 0.1
            x[near] += np.where(x[near] >= p, 0.2, -0.2)
        return x
    return draw


def T(sampler):
    """The same values laid out as the transpose of a contiguous array (non-contiguous)."""
    return lambda rng: np.ascontiguousarray(sampler(rng).T).T


def PAIR_APART(shape_x, shape_y):
    """x and y (broadcastable) with |x - y| >= 0.2 everywhere (maximum/minimum)."""
    def draw(rng):
        y = rng.uniform(-2, 2, shape_y)
        gap = rng.choice([-1.0, 1.0], shape_x) * rng.uniform(0.2, 1.0, shape_x)
        out = np.broadcast_shapes(shape_x, shape_y)
        x = np.broadcast_to(y, out) + np.broadcast_to(gap, out)
        assert x.shape == shape_x, "PAIR_APART needs x of the full shape"
        return [x, y]
    return draw


@dataclass(frozen=True)
class Case:
    id: str
    fn: Callable            # tensors -> tensor (or tuple/list of tensors)
    ref: Callable           # NumPy arrays -> array (or tuple/list)
    inputs: tuple           # samplers: rng -> array (or a list of related arrays)
    gc: dict = field(default_factory=dict)  # extra gradcheck arguments

    def arrays(self):
        """The case's inputs as float64 host arrays, the same on every run."""
        rng = np.random.default_rng(zlib.crc32(self.id.encode()))
        out = []
        for sample in self.inputs:
            drawn = sample(rng)  # a sampler may draw several related inputs (a list)
            out.extend(drawn if isinstance(drawn, list) else [drawn])
        return out


CASES: list[Case] = []


def case(id, fn, ref, *inputs, **gc):
    CASES.append(Case(id, fn, ref, inputs, gc))


# ---- arithmetic --------------------------------------------------------------------
_BINARY = {
    "add": (lambda x, y: x + y, np.add),
    "sub": (lambda x, y: x - y, np.subtract),
    "mul": (lambda x, y: x * y, np.multiply),
    "div": (lambda x, y: x / y, np.divide),
}
for _name, (_op, _np_op) in _BINARY.items():
    # Divisors stay away from 0; other ops take any values.
    _Y = A if _name == "div" else R
    case(_name, _op, _np_op, R(3, 4), _Y(3, 4))
    case(f"{_name}-bcast-left", _op, _np_op, R(4), _Y(3, 4))         # x broadcast
    case(f"{_name}-bcast-right", _op, _np_op, R(2, 3, 4), _Y(3, 1))  # y broadcast
    case(f"{_name}-bcast-both", _op, _np_op, R(3, 1), _Y(1, 4))
    case(f"{_name}-0d-left", _op, _np_op, R(), _Y(2, 3))
    case(f"{_name}-0d-right", _op, _np_op, R(2, 3), _Y())
    case(f"{_name}-0d-both", _op, _np_op, R(), _Y())
    case(f"{_name}-noncontig", _op, _np_op, T(R(3, 4)), T(_Y(3, 4)))
    # A Python scalar on either side (default arguments bind this iteration's op).
    case(f"{_name}-scalar-right", lambda x, op=_op: op(x, 1.5), lambda a, op=_np_op: op(a, 1.5),
         R(3, 4))
    case(f"{_name}-scalar-left", lambda x, op=_op: op(-1.5, x), lambda a, op=_np_op: op(-1.5, a),
         _Y(3, 4))

case("neg", lambda x: -x, np.negative, R(3, 4))
case("neg-0d", lambda x: -x, np.negative, R())
case("pow-int", lambda x: x ** 3, lambda a: a ** 3, R(3, 4))
case("pow-float", lambda x: x ** 2.5, lambda a: a ** 2.5, P(3, 4))
case("pow-negative", lambda x: x ** -1.5, lambda a: a ** -1.5, P(3, 4))
case("pow-0d", lambda x: x ** 2, lambda a: a ** 2, R())
case("pow-scalar-base", lambda x: 2.0 ** x, lambda a: 2.0 ** a, R(3, 4))
case("pow-tensors", lambda x, y: x ** y, np.power, P(3, 4), R(3, 4))
case("pow-tensors-bcast", lambda x, y: x ** y, np.power, P(3, 1), R(4))

# ---- matmul ------------------------------------------------------------------------
_mm = (lambda x, y: x @ y, np.matmul)
case("matmul-1d-1d", *_mm, R(3), R(3))
case("matmul-1d-2d", *_mm, R(3), R(3, 4))
case("matmul-2d-1d", *_mm, R(3, 4), R(4))
case("matmul-2d", *_mm, R(2, 3), R(3, 4))
case("matmul-batched", *_mm, R(2, 3, 4), R(2, 4, 2))
case("matmul-batched-bcast", *_mm, R(2, 1, 2, 3), R(3, 3, 2))  # -> (2, 3, 2, 2)
case("matmul-batched-2d", *_mm, R(2, 2, 3), R(3, 2))
case("matmul-batched-1d-right", *_mm, R(2, 3, 4), R(4))
case("matmul-batched-1d-left", *_mm, R(4), R(2, 4, 3))
case("matmul-noncontig", *_mm, T(R(3, 4)), T(R(4, 2)))
case("matmul-method", lambda x, y: x.matmul(y), np.matmul, R(2, 3), R(3, 2))
case("matmul-outer", *_mm, R(3, 1), R(1, 4))                       # K = 1: a broadcast product
case("matmul-outer-batched-bcast", *_mm, R(2, 1, 3, 1), R(3, 1, 2))  # -> (2, 3, 3, 2)

# ---- elementwise functions -----------------------------------------------------------


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def _erf(a):
    """math.erf elementwise, in a's dtype."""
    return np.vectorize(math.erf)(a).astype(a.dtype)


case("exp", lambda x: x.exp(), np.exp, R(3, 4))
case("exp-0d", lambda x: x.exp(), np.exp, R())
case("log", lambda x: x.log(), np.log, P(3, 4))
case("sqrt", lambda x: x.sqrt(), np.sqrt, P(3, 4))
case("abs", lambda x: x.abs(), np.abs, A(3, 4))
case("abs-builtin", lambda x: abs(x), np.abs, A(2, 3))
# sign's output needs no grad, so gradcheck needs an output that does: sign(x) * x,
# whose gradient is sign(x) only if sign's own is 0 (as it is away from its jump at 0).
case("sign", lambda x: (x.sign(), x.sign() * x), lambda a: (np.sign(a), np.sign(a) * a),
     A(3, 4))


def OFF_INTEGERS(*shape):
    """0.1 to 0.4 from the nearest integer (floor, ceil and round: away from their
    jumps at integers and, for round, at halves)."""
    return lambda rng: (rng.integers(-2, 3, shape)
                        + rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 0.4, shape))


# As sign: no gradient of their own, so each is checked times x too.
for _name in ("floor", "ceil", "round"):
    case(_name, lambda x, n=_name: (getattr(x, n)(), getattr(x, n)() * x),
         lambda a, n=_name: (getattr(np, n)(a), getattr(np, n)(a) * a), OFF_INTEGERS(3, 4))
case("round-decimals", lambda x: x.round(1) * x, lambda a: np.round(a, 1) * a,
     lambda rng: rng.integers(-20, 21, (3, 4)) / 10 + rng.uniform(0.01, 0.04, (3, 4)))
case("log1p", lambda x: x.log1p(), np.log1p, lambda rng: rng.uniform(-0.5, 2.0, (3, 4)))
case("log1p-small", lambda x: x.log1p(), np.log1p, R(3, 4, scale=1e-3))
case("expm1", lambda x: x.expm1(), np.expm1, R(3, 4))
case("expm1-small", lambda x: x.expm1(), np.expm1, R(3, 4, scale=1e-3))
case("sin", lambda x: x.sin(), np.sin, R(3, 4))
case("cos", lambda x: x.cos(), np.cos, R(3, 4))
case("tanh", lambda x: x.tanh(), np.tanh, R(3, 4))
case("tanh-noncontig", lambda x: x.tanh(), np.tanh, T(R(3, 4)))
case("erf", lambda x: x.erf(), _erf, R(3, 4, scale=4.0))
case("erf-noncontig", lambda x: x.erf(), _erf, T(R(3, 4)))
case("sigmoid", lambda x: x.sigmoid(), _sigmoid, R(3, 4, scale=6.0))
case("relu", lambda x: x.relu(), lambda a: np.maximum(a, 0), A(3, 4))
case("leaky_relu", lambda x: x.leaky_relu(0.1), lambda a: np.where(a > 0, a, 0.1 * a), A(3, 4))
case("leaky_relu-default", lambda x: x.leaky_relu(), lambda a: np.where(a > 0, a, 0.01 * a),
     A(3, 4))
case("maximum", lambda x, y: x.maximum(y), np.maximum, PAIR_APART((3, 4), (3, 4)))
case("maximum-bcast", lambda x, y: x.maximum(y), np.maximum, PAIR_APART((3, 4), (4,)))
case("maximum-scalar", lambda x: x.maximum(0.3), lambda a: np.maximum(a, 0.3), A(3, 4, at=0.3))
case("minimum", lambda x, y: x.minimum(y), np.minimum, PAIR_APART((3, 4), (3, 4)))
case("minimum-bcast", lambda x, y: x.minimum(y), np.minimum, PAIR_APART((3, 4), (1, 4)))
case("minimum-scalar", lambda x: x.minimum(-0.3), lambda a: np.minimum(a, -0.3),
     A(3, 4, at=-0.3))
case("clip", lambda x: x.clip(-0.5, 0.8), lambda a: np.clip(a, -0.5, 0.8),
     AWAY_FROM(4, 5, points=(-0.5, 0.8)))
case("clip-min", lambda x: x.clip(min=-0.5), lambda a: np.clip(a, -0.5, None),
     AWAY_FROM(4, 5, points=(-0.5,)))
case("clip-max", lambda x: x.clamp(max=0.8), lambda a: np.clip(a, None, 0.8),
     AWAY_FROM(4, 5, points=(0.8,)))

_MASK = np.array([[True, False, True, True], [False, False, True, False],
                  [True, True, False, True]])
case("where", lambda x, y: tg.where(_MASK, x, y), lambda a, b: np.where(_MASK, a, b),
     R(3, 4), R(3, 4))
case("where-bcast", lambda x, y: tg.where(_MASK, x, y), lambda a, b: np.where(_MASK, a, b),
     R(4), R(3, 1))
case("where-scalar", lambda x: tg.where(tg.tensor(_MASK, device=x.device), x, 0.5),
     lambda a: np.where(_MASK, a, 0.5), R(3, 4))
case("where-float-cond", lambda x, y: tg.where(x > 0, x, y), lambda a, b: np.where(a > 0, a, b),
     A(3, 4), R(3, 4))

# ---- reductions --------------------------------------------------------------------
# (kwargs for our method, kwargs for NumPy's function)
_AXES = {
    "all": ({}, {}),
    "axis1": ({"axis": 1}, {"axis": 1}),
    "axis-neg": ({"axis": -1}, {"axis": -1}),
    "axis-tuple": ({"axis": (0, 2)}, {"axis": (0, 2)}),
    "axis-tuple-neg": ({"axis": (-1, 0)}, {"axis": (-1, 0)}),
    "keepdims": ({"axis": 1, "keepdims": True}, {"axis": 1, "keepdims": True}),
    "keepdims-all": ({"keepdims": True}, {"keepdims": True}),
    "dim": ({"dim": -2}, {"axis": -2}),
}
_REDUCTIONS = {
    "sum": (np.sum, R, {}),
    "prod": (np.prod, R, {}),
    "mean": (np.mean, R, {}),
    "var": (np.var, R, {"ddof": 1}),      # unbiased by default, as PyTorch
    "std": (np.std, R, {"ddof": 1}),
    "max": (np.max, D, {}),
    "min": (np.min, D, {}),
}
for _name, (_np_red, _S, _np_extra) in _REDUCTIONS.items():
    for _ax, (_kw, _np_kw) in _AXES.items():
        # max(dim=...) is PyTorch's (values, indices) pair (test_porting checks the indices)
        _pair = _name in ("max", "min") and "dim" in _kw
        case(f"{_name}-{_ax}",
             lambda x, n=_name, kw=_kw, pair=_pair: getattr(x, n)(**kw)[0] if pair
             else getattr(x, n)(**kw),
             lambda a, f=_np_red, kw={**_np_kw, **_np_extra}: f(a, **kw),
             _S(2, 3, 4))
    if _name not in ("var", "std"):  # (a 1-element variance is 0/0)
        case(f"{_name}-0d", lambda x, n=_name: getattr(x, n)(), lambda a, f=_np_red: f(a),
             _S())
    case(f"{_name}-noncontig", lambda x, n=_name: getattr(x, n)(axis=0),
         lambda a, f=_np_red, kw=_np_extra: f(a, axis=0, **kw), T(_S(3, 4)))
case("var-correction0", lambda x: x.var(axis=1, correction=0), lambda a: np.var(a, axis=1),
     R(3, 4))
case("std-correction0", lambda x: x.std(correction=0), np.std, R(3, 4))
case("max-row-vector", lambda x: x.max(axis=0), lambda a: np.max(a, axis=0), D(1, 5))


def ZEROS(*shape, at):
    """Uniform in [-2, 2] with zeros at the indices ``at``: a product's gradient there is
    the product of the others (0 where the slice holds another zero), not y / x."""
    def draw(rng):
        x = rng.uniform(-2, 2, shape)
        for i in at:
            x[i] = 0.0
        return x
    return draw


# Rows with one zero, two zeros, all zeros and none; the zeros of a whole tensor.
_ROW_ZEROS = [(0, 1), (1, 0), (1, 3), (2, 0), (2, 1), (2, 2), (2, 3)]
case("prod-zeros-rows", lambda x: x.prod(1), lambda a: np.prod(a, 1), ZEROS(4, 4, at=_ROW_ZEROS))
case("prod-zeros-columns-keepdim", lambda x: x.prod(dim=0, keepdim=True),
     lambda a: np.prod(a, 0, keepdims=True), T(ZEROS(4, 3, at=[(0, 0), (1, 1), (3, 1)])))
case("prod-one-zero-all", lambda x: x.prod(), np.prod, ZEROS(2, 3, at=[(1, 2)]))
case("prod-two-zeros-all", lambda x: x.prod(), np.prod, ZEROS(2, 3, at=[(0, 1), (1, 2)]))
case("prod-zeros-axes", lambda x: x.prod(axis=(0, 2)), lambda a: np.prod(a, (0, 2)),
     ZEROS(2, 3, 2, at=[(0, 0, 0), (1, 0, 1), (1, 1, 0)]))
case("prod-one-element", lambda x: x.prod(1), lambda a: np.prod(a, 1), R(3, 1))
case("prod-long-axis", lambda x: x.prod(-1), lambda a: np.prod(a, -1),
     ZEROS(2, 11, at=[(0, 4), (1, 0), (1, 10)]))

# ---- shapes ------------------------------------------------------------------------
case("reshape", lambda x: x.reshape(6, -1), lambda a: a.reshape(6, -1), R(2, 3, 4))
case("reshape-tuple", lambda x: x.reshape((4, 6)), lambda a: a.reshape(4, 6), T(R(4, 6)))
case("reshape-0d", lambda x: x.reshape(1, 1), lambda a: a.reshape(1, 1), R())
case("view", lambda x: x.view(-1), lambda a: a.reshape(-1), R(2, 3))
case("flatten", lambda x: x.flatten(), lambda a: a.reshape(-1), R(2, 3, 4))
case("flatten-start", lambda x: x.flatten(1), lambda a: a.reshape(2, -1), R(2, 3, 4))
case("flatten-range", lambda x: x.flatten(0, 1), lambda a: a.reshape(6, 4), R(2, 3, 4))
case("transpose", lambda x: x.transpose(), np.transpose, R(2, 3, 4))
case("transpose-T", lambda x: x.T, lambda a: a.T, R(3, 4))
case("transpose-two-axes", lambda x: x.transpose(0, 2), lambda a: np.swapaxes(a, 0, 2),
     R(2, 3, 4))
case("transpose-two-axes-2d", lambda x: x.transpose(-2, -1), lambda a: a.T, R(3, 4))
case("transpose-perm", lambda x: x.transpose(1, 2, 0), lambda a: np.transpose(a, (1, 2, 0)),
     R(2, 3, 4))
case("permute", lambda x: x.permute(2, 0, 1), lambda a: np.transpose(a, (2, 0, 1)),
     R(2, 3, 4))
case("permute-neg", lambda x: x.permute((-1, 0, 1)), lambda a: np.transpose(a, (2, 0, 1)),
     R(2, 3, 4))
case("swapaxes", lambda x: x.swapaxes(0, -1), lambda a: np.swapaxes(a, 0, -1), R(2, 3, 4))
case("expand", lambda x: x.expand(2, -1, 4), lambda a: np.broadcast_to(a, (2, 3, 4)), R(3, 1))
case("broadcast_to", lambda x: x.broadcast_to(3, 4), lambda a: np.broadcast_to(a, (3, 4)),
     R(4))
case("broadcast_to-0d", lambda x: x.broadcast_to((2, 3)), lambda a: np.broadcast_to(a, (2, 3)),
     R())
case("squeeze", lambda x: x.squeeze(), np.squeeze, R(1, 3, 1, 2))
case("squeeze-axis", lambda x: x.squeeze(2), lambda a: np.squeeze(a, 2), R(1, 3, 1, 2))
case("squeeze-dim-tuple", lambda x: x.squeeze(dim=(0, -2)), lambda a: np.squeeze(a, (0, 2)),
     R(1, 3, 1, 2))
case("unsqueeze", lambda x: x.unsqueeze(0), lambda a: np.expand_dims(a, 0), R(3, 2))
case("unsqueeze-neg", lambda x: x.unsqueeze(dim=-1), lambda a: np.expand_dims(a, -1), R(3, 2))
case("unsqueeze-0d", lambda x: x.unsqueeze(0), lambda a: np.expand_dims(a, 0), R())

# Indexing: basic (ints, slices with steps, None, Ellipsis) and advanced (boolean
# masks, integer arrays with repeats: their gradients must accumulate).
_INDEX = {
    "int": 1,
    "neg-int": -1,
    "int-pair": (2, -3),
    "slice": slice(1, 3),
    "slice-step": (slice(0, 4, 2), slice(None, None, 3)),
    "slice-neg-step": (slice(None, None, -1), slice(4, 0, -2)),
    "none": (None, 1),
    "ellipsis": (Ellipsis, 2),
    "ellipsis-none": (Ellipsis, None, slice(1, 3)),
    "bool-mask": np.array([True, False, True, False]),
    "bool-mask-2d": np.arange(20).reshape(4, 5) % 3 == 0,
    "int-array-repeats": [0, 2, 0, 0],
    "int-arrays-repeats": ([0, 0, 3, 0], [1, 1, 4, 1]),
    "int-array-2d": np.array([[0, 1], [1, 1]]),
    "int-array-neg": [-1, -1, 0],
    "int-array-and-slice": ([3, 0, 3], slice(1, 4)),
    "slice-and-int-array": (slice(None), [4, 4, 0]),
}
for _ix_name, _ix in _INDEX.items():
    case(f"getitem-{_ix_name}", lambda x, ix=_ix: x[ix], lambda a, ix=_ix: a[ix], R(4, 5))
case("getitem-tensor-index", lambda x: x[tg.tensor([2, 0, 2], device=x.device)],
     lambda a: a[[2, 0, 2]], R(4, 5))
case("getitem-tensor-mask", lambda x: x[x > 0], lambda a: a[a > 0], A(3, 4))
case("getitem-noncontig", lambda x: x[1:, [0, 0]], lambda a: a[1:, [0, 0]], T(R(3, 4)))
case("getitem-0d", lambda x: x[()], lambda a: a[()], R())
case("getitem-3d", lambda x: x[:, [1, 1], ::-1], lambda a: a[:, [1, 1], ::-1], R(2, 3, 4))
case("iter", lambda x: tuple(x), lambda a: tuple(a), R(3, 2))

case("concatenate", lambda x, y, z: tg.concatenate([x, y, z]),
     lambda a, b, c: np.concatenate([a, b, c]), R(2, 3), R(1, 3), R(3, 3))
case("concatenate-neg-axis", lambda x, y: tg.concatenate((x, y), axis=-1),
     lambda a, b: np.concatenate((a, b), axis=-1), R(2, 1, 3), R(2, 1, 2))
case("cat-dim", lambda x, y: tg.cat([x, y], dim=1), lambda a, b: np.concatenate([a, b], 1),
     R(2, 2), T(R(2, 3)))
case("stack", lambda x, y: tg.stack([x, y]), lambda a, b: np.stack([a, b]), R(2, 3), R(2, 3))
case("stack-neg-axis", lambda x, y, z: tg.stack([x, y, z], axis=-1),
     lambda a, b, c: np.stack([a, b, c], axis=-1), R(2, 3), R(2, 3), R(2, 3))
case("stack-dim", lambda x, y: tg.stack([x, y], dim=1), lambda a, b: np.stack([a, b], 1),
     R(2, 3), R(2, 3))
case("split-sections", lambda x: x.split(2, axis=1), lambda a: np.split(a, 2, axis=1), R(3, 4))
case("split-indices", lambda x: tg.split(x, [1, 3]), lambda a: np.split(a, [1, 3]), R(5, 2))
case("chunk", lambda x: x.chunk(3, axis=-1), lambda a: np.split(a, 3, axis=-1), R(2, 6))
case("chunk-dim", lambda x: x.chunk(2, dim=0), lambda a: np.split(a, 2, axis=0), R(4, 3))
case("pad", lambda x: x.pad(((1, 0), (2, 1))), lambda a: np.pad(a, ((1, 0), (2, 1))), R(2, 3))
case("pad-int-value", lambda x: x.pad(1, value=-2.0),
     lambda a: np.pad(a, 1, constant_values=-2.0), R(2, 2))

# ---- orderings: flip, roll, cumsum, sort, topk ------------------------------------------
case("flip", lambda x: x.flip(0), lambda a: np.flip(a, 0), R(3, 4))
case("flip-axes", lambda x: x.flip((0, -1)), lambda a: np.flip(a, (0, 2)), R(2, 3, 4))
case("flip-all", lambda x: x.flip(), np.flip, T(R(3, 4)))
case("flip-dims", lambda x: x.flip(dims=[1]), lambda a: np.flip(a, 1), R(2, 3))
case("roll", lambda x: x.roll(1, 1), lambda a: np.roll(a, 1, 1), R(3, 4))
case("roll-negative-long", lambda x: x.roll(-6, axis=-1), lambda a: np.roll(a, -6, -1), R(2, 5))
case("roll-flat", lambda x: x.roll(2), lambda a: np.roll(a, 2), R(3, 4))
case("roll-axes", lambda x: x.roll((1, -2), dims=(0, 2)), lambda a: np.roll(a, (1, -2), (0, 2)),
     T(R(2, 3, 4)))
case("cumsum", lambda x: x.cumsum(1), lambda a: np.cumsum(a, 1), R(2, 3, 4))
case("cumsum-flat", lambda x: x.cumsum(), np.cumsum, R(3, 4))
case("cumsum-dim", lambda x: x.cumsum(dim=-1), lambda a: np.cumsum(a, -1), R(3, 4))
case("cumsum-noncontig", lambda x: x.cumsum(0), lambda a: np.cumsum(a, 0), T(R(3, 4)))
case("cumsum-0d", lambda x: x.cumsum(0), lambda a: np.cumsum(a, 0).reshape(()), R())
# sort and topk: values only here (the int64 indices have no gradient; test_porting
# compares them with torch's); distinct values, so no ties.
case("sort", lambda x: x.sort().values, lambda a: np.sort(a, -1), D(3, 5))
case("sort-axis0", lambda x: x.sort(0)[0], lambda a: np.sort(a, 0), T(D(3, 5)))
case("sort-descending", lambda x: x.sort(dim=1, descending=True).values,
     lambda a: -np.sort(-a, 1), D(2, 4, 3))
case("topk", lambda x: x.topk(2).values, lambda a: -np.sort(-a, -1)[:, :2], D(3, 5))
case("topk-smallest", lambda x: x.topk(3, dim=0, largest=False).values,
     lambda a: np.sort(a, 0)[:3], D(4, 2))

# ---- softmax family ------------------------------------------------------------------


def _softmax(a, axis=-1):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _logsumexp(a, axis=None, keepdims=False):
    return np.log(np.sum(np.exp(a), axis=axis, keepdims=keepdims))


case("softmax", lambda x: x.softmax(), _softmax, R(3, 4, scale=3.0))
case("softmax-axis0", lambda x: x.softmax(axis=0), lambda a: _softmax(a, 0), R(3, 4, scale=3.0))
case("softmax-dim", lambda x: x.softmax(dim=1), lambda a: _softmax(a, 1), R(2, 3, 2, scale=3.0))
case("log_softmax", lambda x: x.log_softmax(), lambda a: np.log(_softmax(a)), R(3, 4, scale=3.0))
case("log_softmax-dim0", lambda x: x.log_softmax(dim=0), lambda a: np.log(_softmax(a, 0)),
     R(3, 4, scale=3.0))
case("logsumexp", lambda x: x.logsumexp(), _logsumexp, R(3, 4, scale=3.0))
case("logsumexp-axis", lambda x: x.logsumexp(axis=1), lambda a: _logsumexp(a, 1),
     R(3, 4, scale=3.0))
case("logsumexp-keepdims", lambda x: x.logsumexp(axis=-1, keepdims=True),
     lambda a: _logsumexp(a, -1, True), R(2, 3, 4))
case("logsumexp-tuple", lambda x: x.logsumexp(dim=(0, 2)), lambda a: _logsumexp(a, (0, 2)),
     R(2, 3, 4))

# ---- dtype casts -----------------------------------------------------------------------
# Casting down to float32 rounds to ~1e-7 relative, so the finite difference
# needs a larger step there.
case("astype-float32", lambda x: x.astype(tg.float32), lambda a: a.astype(np.float32), R(3, 4),
     eps=1e-3, atol=1e-3)
case("astype-float64", lambda x: x.astype("float64"), lambda a: a.astype(np.float64), R(3, 4))
case("to-float32", lambda x: x.to(dtype=tg.float32), lambda a: a.astype(np.float32), R(3, 4),
     eps=1e-3, atol=1e-3)
case("to-float64", lambda x: x.double() * 2, lambda a: a.astype(np.float64) * 2, R(3, 4))

CASE_IDS = [c.id for c in CASES]


# ---- the parametrised tests ------------------------------------------------------------
def _tensors(arrays, dtype, device, requires_grad):
    return [tg.tensor(a, dtype=dtype, device=device, requires_grad=requires_grad) for a in arrays]


def _as_list(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_gradcheck_op(c, device):
    assert gradcheck(c.fn, _tensors(c.arrays(), tg.float64, device, True), **c.gc)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_forward_matches_numpy(c, dtype, device):
    arrays = [a.astype(dtype) for a in c.arrays()]
    outs = _as_list(c.fn(*_tensors(arrays, None, device, False)))
    expected = _as_list(c.ref(*arrays))
    assert len(outs) == len(expected)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-13}
    for out, want in zip(outs, expected):
        want = np.asarray(want)
        assert out.device == tg.get_backend(device).device
        assert out.shape == want.shape, c.id
        assert out.dtype == want.dtype, c.id
        np.testing.assert_allclose(out.numpy(), want, **tol)


@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_gradgradcheck_op(c, device):
    """Every backward is itself differentiable (written with tensor ops, not constants)."""
    assert gradgradcheck(c.fn, _tensors(c.arrays(), tg.float64, device, True), **c.gc)


@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_gradients_ignore_the_upstream_layout(c, device):
    """gradcheck's upstream gradient is C-ordered; in a graph it comes in the layout
    of the next op's backward (a transpose's, a slice's, a sum's broadcast): a
    backward that reads it as C order, or writes into it, fails here (see conftest)."""
    check_gradients_ignore_upstream_layout(c.fn, c.arrays(), device)


def test_case_table_is_complete():
    """Ids are unique and every core op appears."""
    assert len(set(CASE_IDS)) == len(CASE_IDS)
    required = [
        "add", "sub", "mul", "div", "pow-tensors", "pow-scalar-base", "neg", "matmul-1d-1d",
        "matmul-1d-2d", "matmul-2d-1d", "matmul-2d", "matmul-batched-bcast", "exp", "log",
        "sqrt", "abs", "sign", "sin", "cos", "tanh", "erf", "sigmoid", "relu", "leaky_relu",
        "maximum", "minimum", "clip", "where", "reshape", "flatten", "transpose", "permute",
        "swapaxes", "expand", "broadcast_to", "squeeze", "unsqueeze", "concatenate", "stack",
        "split-sections", "pad", "softmax", "log_softmax", "logsumexp", "astype-float32",
        "to-float32", "getitem-bool-mask", "getitem-int-array-repeats", "getitem-ellipsis",
        "getitem-none", "getitem-slice-neg-step", "floor", "ceil", "round", "log1p", "expm1",
        "flip", "roll", "cumsum", "sort", "topk",
    ] + [f"{r}-{a}" for r in _REDUCTIONS for a in _AXES]
    assert not [r for r in required if r not in CASE_IDS]


def test_noncontiguous_cases_are_noncontiguous():
    """The T(...) inputs really reach the ops as non-contiguous arrays."""
    for c in CASES:
        if c.id.endswith("noncontig"):
            x = _tensors(c.arrays(), tg.float64, "cpu", True)[0]
            assert not x.data.flags.c_contiguous, c.id


def test_the_concerns_have_teeth():
    """Run one case with a wrong forward and one with a wrong backward through the
    same tests: both fail."""
    wrong_forward = Case("wrong-forward", lambda x: x.exp(), lambda a: np.exp(a) * 1.001, (R(3),))
    with pytest.raises(AssertionError):
        test_forward_matches_numpy(wrong_forward, np.float32, "cpu")
    # x * x.detach() has the forward of x**2 but the gradient of x * const.
    wrong_backward = Case("wrong-backward", lambda x: x * x.detach(), lambda a: a * a, (R(3),))
    test_forward_matches_numpy(wrong_backward, np.float64, "cpu")
    with pytest.raises(AssertionError):  # GradcheckError is an AssertionError
        test_gradcheck_op(wrong_backward, "cpu")


class _ReadsMemoryOrder(tg.Function):
    """y = 2x, whose backward reads grad_out in memory order, as if it were C order."""

    def forward(self, x):
        return 2 * x

    def backward(self, grad_out):
        g = grad_out.data.ravel(order="K").reshape(grad_out.shape)
        return tg.Tensor._make(2 * g, grad_out._backend)


class _WritesIntoUpstream(tg.Function):
    """y = 2x, whose backward scrubs NaNs out of grad_out in place: finite values stay
    as they are, so gradcheck (which would see a changed upstream) passes, but a
    broadcast upstream refuses the write (on CuPy, which has no read-only views, it
    would take it)."""

    def forward(self, x):
        return 2 * x

    def backward(self, grad_out):
        self.xp.nan_to_num(grad_out.data, copy=False)
        return grad_out * 2


@pytest.mark.parametrize("op, error, match", [
    (_ReadsMemoryOrder, AssertionError, "fortran upstream gradient"),
    (_WritesIntoUpstream, ValueError, "read-only"),
], ids=["reads-memory-order", "writes-into-upstream"])
def test_the_layout_concern_has_teeth(op, error, match, device):
    """Backwards that gradcheck passes (its upstream is C-ordered and its own) fail
    test_gradients_ignore_the_upstream_layout."""
    wrong = Case(op.__name__, op.apply, lambda a: 2 * a, (R(3, 4),))
    assert gradcheck(wrong.fn, _tensors(wrong.arrays(), tg.float64, device, True))
    with pytest.raises(error, match=match):
        test_gradients_ignore_the_upstream_layout(wrong, device)


# ---- gradients that accumulate over repeated indices -------------------------------------
def test_integer_index_with_repeats_accumulates(device):
    x = tg.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True, device=device)
    x[[0, 2, 0, 0]].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 0.0, 1.0, 0.0])


@pytest.mark.parametrize("axis", [0, 1, 2, 3])
def test_a_gather_along_one_axis_is_laid_out_in_c_order(axis):
    """x[:, :, idx] as NumPy would lay it out puts the indexed axis outermost in
    memory, so every later pass over y and its gradient reads across the cache
    (pad's reflect mode, two such gathers, once took 57 ms forward + backward for a
    (32, 64, 32, 32) input; 7 in C order).  Values and gradients are NumPy's."""
    rng = np.random.default_rng(axis)
    a = rng.standard_normal((3, 4, 5, 6))
    idx = np.array([1, 0, 1, 2, -1, 2, 2])
    index = (slice(None),) * axis + (idx,)
    x = tg.tensor(a, requires_grad=True)
    y = x[index]
    assert y.data.flags.c_contiguous, y.data.strides
    np.testing.assert_array_equal(y.numpy(), a[index])
    g = rng.standard_normal(y.shape)
    y.backward(tg.tensor(g))
    expected = np.zeros_like(a)
    np.add.at(expected, index, g)
    np.testing.assert_array_equal(x.grad.numpy(), expected)
    padded = tg.functional.pad(x, (1, 2, 2, 1), mode="reflect")
    assert padded.data.flags.c_contiguous, padded.data.strides


@pytest.mark.parametrize("dtype, size", [(np.int8, 300), (np.uint8, 200), (np.int16, 40000),
                                         (np.uint64, 300)])
def test_a_gather_along_one_axis_takes_any_integer_index_dtype(dtype, size):
    """Its gradient too, whatever the sizes beside the index dtype: index plus axis
    size past int8, a run's end past uint8 (once silently dropping a gradient),
    and uint64 (with int64, a float slice bound)."""
    a = np.random.default_rng(0).standard_normal((2, size))
    top = min(size, np.iinfo(dtype).max + 1)
    replicate = np.concatenate([[0], np.arange(top), [top - 1]])
    for idx in (np.array([2, 1, 0, 1, 2, 2], dtype=dtype), replicate.astype(dtype)):
        x = tg.tensor(a, requires_grad=True)
        y = x[:, idx]
        np.testing.assert_array_equal(y.numpy(), a[:, idx])
        (y * y).sum().backward()
        expected = np.zeros_like(a)
        np.add.at(expected, (slice(None), idx), 2 * a[:, idx])
        np.testing.assert_array_equal(x.grad.numpy(), expected)


def test_integer_arrays_with_repeats_accumulate_weighted(device):
    x = tg.tensor(np.zeros((2, 3)), requires_grad=True, device=device)
    y = x[[1, 1, 0], [2, 2, 2]]
    y.backward(tg.tensor([1.0, 10.0, 100.0], dtype=tg.float64, device=device))
    want = np.zeros((2, 3))
    want[0, 2], want[1, 2] = 100.0, 11.0
    np.testing.assert_array_equal(x.grad.numpy(), want)


def test_boolean_mask_gradient(device):
    x = tg.tensor([[1.0, -2.0], [-3.0, 4.0]], requires_grad=True, device=device)
    (x[x > 0] * tg.tensor([5.0, 7.0], device=device)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[5.0, 0.0], [0.0, 7.0]])


def test_max_ties_share_the_gradient(device):
    """The documented tie rule (not checkable by finite differences)."""
    x = tg.tensor([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]], requires_grad=True, device=device)
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 0.5, 0.5], [0.5, 0, 0.5]])
    m = tg.tensor([1.0, 2.0], requires_grad=True, device=device)
    m.maximum(tg.tensor([1.0, 0.0], device=device)).sum().backward()
    np.testing.assert_array_equal(m.grad.numpy(), [0.5, 1.0])


# At a kink or a tie finite differences measure neither side, so gradcheck cannot see
# which one an op picks there; the documented choices (PyTorch's) are checked directly:
# (id, fn, x, the gradient of fn(x).sum() at x).
KINKS = [
    ("relu-at-0", lambda x: x.relu(), [-1.0, 0.0, 2.0], [0, 0, 1]),              # [x > 0]
    ("leaky_relu-at-0", lambda x: x.leaky_relu(0.1), [-1.0, 0.0, 2.0], [0.1, 0.1, 1]),
    ("abs-at-0", lambda x: x.abs(), [-1.0, 0.0, 2.0], [-1, 0, 1]),                # sign x
    ("clip-at-bounds", lambda x: x.clip(-0.5, 0.8), [-1.0, -0.5, 0.8, 1.0], [0, 1, 1, 0]),
    ("minimum-tie", lambda x: x.minimum(tg.tensor([1.0, 0.0, 5.0], device=x.device)),
     [1.0, 2.0, 3.0], [0.5, 0, 1]),
    ("min-ties", lambda x: x.min(), [2.0, 1.0, 1.0], [0, 0.5, 0.5]),
    # the activations of functional: PyTorch's choices (test_activations.py asks torch)
    ("hardtanh-at-bounds", lambda x: tg.functional.hardtanh(x, -0.5, 0.8),
     [-1.0, -0.5, 0.0, 0.8, 1.0], [0, 0, 1, 0, 0]),                     # lo < x < hi
    ("relu6-at-0-and-6", lambda x: tg.functional.relu6(x), [-1.0, 0.0, 3.0, 6.0, 7.0],
     [0, 0, 1, 0, 0]),
    ("hardsigmoid-at-3", lambda x: tg.functional.hardsigmoid(x), [-4.0, -3.0, 0.0, 3.0, 4.0],
     [0, 0, 1 / 6, 0, 0]),                                               # -3 < x < 3
    ("hardswish-at-3", lambda x: tg.functional.hardswish(x), [-4.0, -3.0, 0.0, 3.0, 4.0],
     [0, 0, 0.5, 1, 1]),                                                 # -3: 0, 3: 1
    ("elu-at-0", lambda x: tg.functional.elu(x, alpha=2.0), [0.0, 1.0], [2, 1]),  # alpha
    ("selu-at-0", lambda x: tg.functional.selu(x), [0.0],
     [1.0507009873554804934193349852946 * 1.6732632423543772848170429916717]),
]


@pytest.mark.parametrize("fn, x, want", [k[1:] for k in KINKS], ids=[k[0] for k in KINKS])
def test_gradients_at_kinks_and_ties_follow_the_documented_rule(fn, x, want, device):
    x = tg.tensor(x, dtype=tg.float64, requires_grad=True, device=device)
    fn(x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), want)


def test_relu_output_has_no_negative_zero():
    out = tg.tensor([-1.0, 2.0]).relu().numpy()
    assert not np.signbit(out).any()


# ---- tensor basics -----------------------------------------------------------------------
@pytest.mark.parametrize("data, dtype", [
    (1.5, np.float32), ([1.0, 2.0], np.float32), ([[1, 2]], np.int64), (3, np.int64),
    (True, np.bool_), ([True, False], np.bool_),
    (np.array([1.0, 2.0]), np.float64), (np.float64(2.0), np.float64),
    (np.array([1, 2], dtype=np.int32), np.int32), (np.ones(2, np.float32), np.float32),
])
def test_dtype_rules_on_creation(data, dtype, device):
    """Python floats -> float32 and ints -> int64; NumPy data keeps its dtype."""
    t = tg.tensor(data, device=device)
    assert t.dtype == dtype
    np.testing.assert_array_equal(t.numpy(), np.asarray(data))


def test_explicit_dtype_wins():
    assert tg.tensor([1, 2], dtype=tg.float64).dtype == np.float64
    assert tg.tensor(np.ones(2), dtype="float32").dtype == np.float32
    assert tg.tensor(tg.tensor([1.0]), dtype=tg.float64).dtype == np.float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scalars_do_not_upcast(dtype, device):
    x = tg.tensor(np.ones(3, dtype), device=device)
    for y in (x + 1.5, 2.5 * x, x - 1, x / 3, x ** 2, 2.0 ** x, x.maximum(0.5), x.clip(0, 1),
              tg.where(x > 0, x, 0.0), x.mean(), -x):
        assert y.dtype == dtype


def test_list_and_array_operands_join_the_tensor_on_its_device(device):
    x = tg.tensor([1.0, 2.0], device=device)
    for other in ([10.0, 20.0], np.array([10.0, 20.0], np.float32)):
        np.testing.assert_array_equal((x + other).numpy(), [11.0, 22.0])
        np.testing.assert_array_equal((other - x).numpy(), [9.0, 18.0])
        np.testing.assert_array_equal((x < other).numpy(), [True, True])


def test_mixed_float_dtypes_promote_and_gradients_keep_input_dtypes(device):
    a = tg.tensor([1.0, 2.0], requires_grad=True, device=device)                 # float32
    b = tg.tensor(np.array([3.0, 4.0]), requires_grad=True, device=device)       # float64
    y = a * b
    assert y.dtype == np.float64
    y.sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64
    np.testing.assert_allclose(a.grad.numpy(), [3.0, 4.0])
    x = tg.tensor([1.0, 2.0], requires_grad=True, device=device)
    x.astype(tg.float64).sum().backward()
    assert x.grad.dtype == np.float32


def test_integer_arithmetic():
    i = tg.tensor([1, 2, 3])
    assert (i + 1).dtype == np.int64 and (i * 2).tolist() == [2, 4, 6]
    assert (i / 2).dtype.kind == "f"
    assert i.sum().item() == 6 and isinstance(i.sum().item(), int)


@pytest.mark.parametrize("values, dtype", [([0, 5, 200], np.uint8), ([-128, 5, 127], np.int8),
                                           ([3, -2**63, 2**63 - 1], np.int64),
                                           ([True, False], np.bool_)])
def test_min_and_max_of_integers_do_not_wrap(values, dtype):
    """min is its own reduction, not -max(-x), which wraps for uint8 and the most
    negative int."""
    a = np.array(values, dtype)
    t = tg.tensor(a)
    assert t.min().item() == a.min() and t.max().item() == a.max()
    assert t.min().dtype == a.dtype


@pytest.mark.parametrize("method, expected", [
    ("sigmoid", lambda a: 1 / (1 + np.exp(-a))), ("exp", np.exp), ("tanh", np.tanh),
    ("sqrt", np.sqrt), ("log", np.log), ("sin", np.sin), ("cos", np.cos), ("erf", _erf),
    ("leaky_relu", lambda a: np.where(a > 0, a, 0.1 * a)),
    ("softmax", lambda a: np.exp(a) / np.exp(a).sum()),
])
def test_float_ops_on_integers_give_float32(method, expected):
    """As PyTorch: ops whose results are not integers compute in float32, never
    truncating to the integer dtype."""
    a = np.array([-1, 1, 2, 3]) if method == "leaky_relu" else np.array([1, 2, 3])
    args = (0.1,) if method == "leaky_relu" else ()
    y = getattr(tg.tensor(a), method)(*args)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), expected(a.astype(np.float64)), rtol=1e-6)


def test_python_numbers_never_truncate():
    i, b = tg.tensor([1, 2, 3]), tg.tensor([True, False])
    assert (i * 0.5).tolist() == [0.5, 1.0, 1.5]
    assert (b + 1).tolist() == [2, 1] and (b + 1).dtype == np.int64
    assert (b * 2.5).tolist() == [2.5, 0.0]
    assert i.clip(1.5, 2.5).tolist() == [1.5, 2.0, 2.5]
    assert i.clip(1, 2.5).tolist() == [1.0, 2.0, 2.5] and i.clip(1, 2.5).dtype == np.float32
    assert i.clip(1, 2).tolist() == [1, 2, 2] and i.clip(1, 2).dtype == np.int64
    with pytest.raises(TypeError, match="float64.*int64"):
        i += 1.7
    with pytest.raises(TypeError, match="int64.*bool"):
        b += 1
    f = tg.tensor([1.0, 2.0])
    f += tg.tensor([1.0, 1.0], dtype=tg.float64)   # same kind: allowed, keeps float32
    assert f.dtype == np.float32 and f.tolist() == [2.0, 3.0]


def test_clip_with_tensor_bounds(device):
    rng = np.random.default_rng(3)
    x = tg.tensor(AWAY_FROM(6, points=[-0.5, 0.5])(rng), requires_grad=True, device=device)
    lo = tg.tensor(np.full(6, -0.5), requires_grad=True, device=device)
    hi = tg.tensor(np.full(6, 0.5), device=device)
    y = x.clip(lo, hi)
    np.testing.assert_array_equal(y.numpy(), np.clip(x.numpy(), -0.5, 0.5))
    assert gradcheck(lambda a, b: a.clip(b, hi), (x, lo))
    assert gradcheck(lambda a: a.clip(max=hi), x)


def test_float32_log_softmax_keeps_the_small_term():
    """log_softmax = (x - m) - log(sum(exp(x - m))): the log term is not rounded away
    against a large maximum m."""
    x = tg.tensor(np.array([1e8, 1e8], np.float32))
    np.testing.assert_allclose(x.log_softmax().numpy(), [-np.log(2)] * 2, rtol=1e-6)
    logits = np.array([[30.0, 20.0]], np.float32)
    exact = np.log1p(np.exp(-10.0))                     # -log softmax[0], in float64
    loss = tg.nn.cross_entropy(tg.tensor(logits), tg.tensor([0])).item()
    # float32's 1 + 4.5e-5 costs up to 0.3 % (PyTorch: the same); x - (log + m) cost 0.8 %
    assert abs(loss - exact) / exact < 2e-3


INF, NAN = float("inf"), float("nan")


# (row, its logsumexp, its softmax), worked out by hand: logsumexp is the limit of
# log(sum(exp(row))); softmax is NaN throughout a row without a finite maximum (it
# was [nan, 0] for [inf, 1]), as in PyTorch, which test_..._match_torch confirms.
INFINITIES = [
    pytest.param([INF, 1.0], INF, [NAN, NAN], id="inf"),
    pytest.param([INF, INF], INF, [NAN, NAN], id="inf-inf"),
    pytest.param([INF, -INF], INF, [NAN, NAN], id="inf-neg-inf"),
    pytest.param([-INF, -INF], -INF, [NAN, NAN], id="all-neg-inf"),
    pytest.param([-INF, 0.0], 0.0, [0.0, 1.0], id="neg-inf"),
    pytest.param([NAN, 0.0], NAN, [NAN, NAN], id="nan"),
    # log(e + e**2) = 2 + log(1 + 1/e); softmax [1, e] / (1 + e)
    pytest.param([1.0, 2.0], 2.0 + np.log1p(np.exp(-1.0)),
                 [1.0 / (1.0 + np.e), np.e / (1.0 + np.e)], id="finite"),
]


def _softmax_family_of_infinities(x, lse, soft, rtol):
    """Checks logsumexp, softmax and log_softmax over axis 1 of ``x`` = [row, [0, 0]]
    (tensors of ours or torch's) against the table; the second row's are exact."""
    with np.errstate(divide="ignore"):   # log(0) = -inf is the expected value
        log_soft = np.log(soft)
    for out, want in zip([x.logsumexp(1), x.softmax(1), x.log_softmax(1)],
                         [[lse, np.log(2.0)], [soft, [0.5, 0.5]],
                          [log_soft, np.log([0.5, 0.5])]]):
        # (assert_allclose: infinities must be equal, NaN must meet NaN)
        np.testing.assert_allclose(out.numpy(), np.array(want), rtol=rtol)


@pytest.mark.parametrize("row, lse, soft", INFINITIES)
def test_softmax_and_logsumexp_of_infinities_match_torch(row, lse, soft):
    """PyTorch gives the table's values, and so do we in float32 (float64: below)."""
    torch = pytest.importorskip("torch")
    _softmax_family_of_infinities(torch.tensor([row, [0.0, 0.0]], dtype=torch.float64), lse,
                                  soft, 1e-12)
    _softmax_family_of_infinities(tg.tensor([row, [0.0, 0.0]]), lse, soft, 1e-6)


@pytest.mark.parametrize("row, lse, soft", INFINITIES)
def test_softmax_and_logsumexp_of_infinities_without_torch(row, lse, soft, device):
    """The table's values on every device, where torch may not be installed; they are
    the answers, so NumPy's warnings on the way (inf - inf) are noise."""
    x = tg.tensor([row, [0.0, 0.0]], dtype=tg.float64, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _softmax_family_of_infinities(x, lse, soft, 1e-12)


@pytest.mark.parametrize("row", [[INF, 100.0], [INF, INF], [-INF, -INF], [-INF, 0.0],
                                 [float("nan"), 0.0], [1.0, 2.0]],
                         ids=["inf", "inf-inf", "all-neg-inf", "neg-inf", "nan", "finite"])
def test_logsumexp_of_infinities_gives_torch_gradients_without_numpy_warnings(row):
    # -inf, inf and NaN gradients are the answers here (PyTorch's too), not accidents:
    # NumPy's warnings about log(0), exp overflow and inf - inf on the way are noise.
    torch = pytest.importorskip("torch")
    x = tg.tensor([row, [0.5, 0.25]], requires_grad=True)
    t = torch.tensor([row, [0.5, 0.25]], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (x.logsumexp(1) * tg.tensor([2.0, 3.0])).sum().backward()
    (t.logsumexp(1) * torch.tensor([2.0, 3.0])).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-6)


def test_softmax_and_logsumexp_over_an_empty_axis_match_torch():
    # An empty axis has no maximum to shift by: softmax is empty, logsumexp -inf (the log
    # of an empty sum), as in PyTorch; this used to be "max over an empty axis".
    x = tg.zeros(0, 3, requires_grad=True)
    assert x.softmax(0).shape == (0, 3) and x.log_softmax(0).shape == (0, 3)
    assert x.logsumexp(0).tolist() == [-INF] * 3 and x.logsumexp(0, keepdims=True).shape == (1, 3)
    assert x.logsumexp().item() == -INF and tg.zeros(2, 0).logsumexp(1).tolist() == [-INF] * 2
    x.logsumexp(0).sum().backward()
    assert x.grad.shape == (0, 3)


# ---- empty batches ---------------------------------------------------------------
@pytest.mark.parametrize("fn, shapes", [
    (lambda x, w: tg.functional.conv2d(x, w, padding=1), [(0, 3, 5, 5), (4, 3, 3, 3)]),
    (lambda x, w: tg.functional.conv_transpose2d(x, w, stride=2), [(0, 3, 5, 5), (3, 4, 3, 3)]),
    (lambda x, w: tg.functional.conv1d(x, w), [(0, 3, 5), (4, 3, 3)]),
    (lambda x, w: tg.functional.local2d(x, w), [(0, 2, 4, 4), (3, 3, 3, 2, 2, 2)]),
    (lambda x: tg.functional.max_pool2d(x, 2), [(0, 3, 4, 4)]),
    (lambda x: tg.functional.adaptive_max_pool2d(x, 3), [(0, 3, 5, 5)]),
    (lambda x: tg.functional.adaptive_avg_pool2d(x, 3), [(0, 3, 5, 5)]),
    (lambda x: tg.functional.unfold(x, 2), [(0, 3, 4, 4)]),
    (lambda x: x.log_softmax(1), [(0, 10)]),
    (lambda x: x.softmax(1), [(0, 10)]),
    (lambda x: x.max(1), [(0, 3)]),
    (lambda x: x.flatten(1), [(0, 3, 4, 4)]),
], ids=["conv2d", "conv_transpose2d", "conv1d", "local2d", "max_pool2d",
        "adaptive_max_pool2d", "adaptive_avg_pool2d", "unfold", "log_softmax", "softmax",
        "max", "flatten"])
def test_an_empty_batch_gives_empty_results_and_gradients(fn, shapes):
    """N = 0 flows through forward and backward like any batch size; the output's
    shape is that of a batch of one with N = 0."""
    rng = np.random.default_rng(0)
    one = [tg.tensor(rng.standard_normal((1,) + s[1:] if k == 0 else s)) for k, s in
           enumerate(shapes)]
    ts = [tg.tensor(np.zeros(s), requires_grad=True) for s in shapes]
    y = fn(*ts)
    assert y.shape == (0,) + fn(*one).shape[1:]
    y.sum().backward()
    assert [t.grad.shape for t in ts] == [t.shape for t in ts]


def test_reducing_an_empty_axis_is_an_error():
    with pytest.raises(ValueError, match=r"max over an empty axis.*\(3, 0\)"):
        tg.zeros(3, 0).max(1)
    with pytest.raises(ValueError, match="argmax over an empty axis"):
        tg.zeros(0, 3).argmax(0)
    assert tg.zeros(0, 3).argmax(1).shape == (0,)


def test_numpy_returns_a_host_copy(device):
    x = tg.tensor([1.0, 2.0], device=device)
    a = x.numpy()
    assert isinstance(a, np.ndarray)
    a[0] = 100.0
    assert x.numpy()[0] == 1.0


def test_np_array_of_a_tensor_is_a_copy():
    t = tg.tensor([1.0, 2.0])
    a = np.array(t)
    a[0] = 100.0
    assert t.tolist() == [1.0, 2.0]
    assert np.array(t, dtype=np.float64).dtype == np.float64


def test_tensor_copies_its_data(device):
    """Later writes to the source array (or to the tensor) never reach the other."""
    a = np.zeros(3)
    t = tg.tensor(a, device=device)
    a += 1
    assert t.numpy().tolist() == [0.0, 0.0, 0.0]
    t += 5
    assert a.tolist() == [1.0, 1.0, 1.0]
    # A tensor made from a tensor: a copy on t's device, in t's dtype or the one asked for;
    # t's own dtype included, where no cast makes a copy by the way.
    copies = [(tg.Tensor(t), np.float64), (tg.tensor(t), np.float64),
              (tg.tensor(t, dtype=tg.float64), np.float64),
              (tg.tensor(t, dtype=tg.float32), np.float32)]
    t += 1
    for u, dtype in copies:
        assert u.device == t.device and u.dtype == dtype
        assert u.numpy().tolist() == [5.0, 5.0, 5.0]


def test_a_list_of_device_tensors_says_to_stack_them(device):
    """``tg.tensor(losses)`` over a list of per-batch losses: NumPy reads host tensors,
    but would have to read device ones one by one from the device, which is refused
    ("implicit conversion ... call .numpy()", for a list that has no .numpy())."""
    losses = [tg.tensor(1.0, device=device), tg.tensor(2.0, device=device)]
    assert tg.stack(losses).mean().item() == 1.5
    if device == "cpu":
        assert tg.tensor(losses).tolist() == [1.0, 2.0]
        return
    for data in (losses, ([0.5, losses[1]],), [[losses[0].data]]):
        with pytest.raises(TypeError, match=rf"^cannot make a tensor from a (list|tuple) "
                                            rf"holding tensors or arrays on {device}: join "
                                            rf"them there with tg\.stack\(\.\.\.\)"):
            tg.tensor(data)


def test_0d_results_hold_arrays(device):
    """NumPy turns 0-d results into scalars; a tensor's .data stays an array."""
    backend = tg.get_backend(device)
    x = tg.tensor(2.0, requires_grad=True, device=device)
    for t in (x * 3, (x * 3).exp(), tg.tensor([1.0, 2.0], device=device).sum(), x < 3,
              tg.tensor([1.0, 3.0], device=device).argmax()):
        assert backend.is_array(t.data) or isinstance(t.data, np.ndarray), type(t.data)
    (x * 3).backward()
    assert x.grad.shape == () and x.grad.item() == 3.0


def test_item_and_conversions(device):
    assert tg.tensor(2.5, device=device).item() == 2.5
    assert isinstance(tg.tensor([[7]], device=device).item(), int)
    assert float(tg.tensor([1.5], device=device)) == 1.5
    assert int(tg.tensor(3, device=device)) == 3
    assert tg.tensor([[1.0, 2.0]], device=device).tolist() == [[1.0, 2.0]]
    with pytest.raises(ValueError, match=r"one element.*\(2,\)"):
        tg.tensor([1.0, 2.0], device=device).item()
    with pytest.raises(ValueError, match="ambiguous"):
        bool(tg.tensor([1.0, 2.0]))
    assert len(tg.zeros(4, 2)) == 4


def test_a_format_spec_formats_a_0d_tensors_number(device):
    """``f"{loss:.4f}"`` and ``f"{loss}"`` in a training loop, as in PyTorch: the number
    (one read from the device); other tensors print as they do with str()."""
    loss = tg.tensor([2.0, 3.0], device=device).mean()
    assert f"{loss:.3f}" == "2.500" and f"{loss:>6.1f}" == "   2.5"
    assert f"{tg.tensor(7, device=device):03d}" == "007"
    assert f"{loss}" == "2.5" and f"{tg.tensor(True, device=device)}" == "True"
    x = tg.tensor([1.0, 2.0], device=device)
    assert f"{x}" == str(x)
    with pytest.raises(TypeError, match=r"format spec '\.2f' applies to a 0-d tensor .* got a "
                                        r"tensor of shape \(2,\); format x\.item\(\)"):
        f"{tg.ones(2, device=device):.2f}"


def test_repr_is_readable():
    assert repr(tg.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert repr(tg.tensor([1, 2])) == "tensor([1, 2])"
    assert repr(tg.tensor(np.array([0.5]))) == "tensor([0.5], dtype=float64)"
    assert repr(tg.tensor([1.0], requires_grad=True)) == "tensor([1.], requires_grad=True)"
    y = tg.tensor([1.0], requires_grad=True) * 2
    assert repr(y) == "tensor([2.], grad_fn=<Mul>)"
    r = repr(tg.zeros(100, 100))
    assert "..." in r and len(r) < 1000


def test_factories(device):
    assert tg.zeros(2, 3, device=device).shape == (2, 3)
    assert tg.zeros((2, 3), device=device).numpy().sum() == 0
    assert tg.ones(4, device=device).dtype == np.float32
    assert tg.ones(2, dtype=tg.float64, device=device).dtype == np.float64
    np.testing.assert_array_equal(tg.full((2, 2), 7.0, device=device).numpy(), np.full((2, 2), 7))
    np.testing.assert_array_equal(tg.arange(5, device=device).numpy(), np.arange(5))
    assert tg.arange(5).dtype == np.int64 and tg.arange(0.0, 1.0, 0.25).dtype == np.float32
    np.testing.assert_array_equal(tg.eye(3, device=device).numpy(), np.eye(3))
    t = tg.tensor(np.ones((2, 3)), device=device)
    assert tg.zeros_like(t).dtype == np.float64 and tg.zeros_like(t).shape == (2, 3)
    assert tg.ones_like(t, dtype=tg.float32).dtype == np.float32
    assert tg.zeros_like(t).device == tg.ones_like(t).device == t.device   # not the default
    assert tg.zeros(3, requires_grad=True, device=device).requires_grad
    r = tg.rand(1000, device=device).numpy()
    assert r.dtype == np.float32 and 0 <= r.min() and r.max() < 1
    assert tg.randn(2, 3, dtype=tg.float64, device=device).dtype == np.float64


def test_manual_seed_reproducibility(device):
    tg.manual_seed(123)
    a = tg.randn(3, 4, device=device).numpy()
    b = tg.rand(5, device=device).numpy()
    tg.manual_seed(123)
    np.testing.assert_array_equal(tg.randn(3, 4, device=device).numpy(), a)
    np.testing.assert_array_equal(tg.rand(5, device=device).numpy(), b)
    assert not np.array_equal(tg.randn(3, 4, device=device).numpy(), a)
    # The same seed gives the same numbers on every device (drawn on the host).
    tg.manual_seed(123)
    np.testing.assert_array_equal(tg.randn(3, 4).numpy(), a)
    # A SeedSequence (or a NumPy int) seeds as its int does; None takes fresh OS entropy.
    tg.manual_seed(np.random.SeedSequence(123))
    np.testing.assert_array_equal(tg.randn(3, 4).numpy(), a)
    tg.manual_seed(None)
    assert not np.array_equal(tg.randn(3, 4).numpy(), a)


@pytest.mark.parametrize("op, np_op", [
    ("__lt__", np.less), ("__le__", np.less_equal), ("__gt__", np.greater),
    ("__ge__", np.greater_equal), ("__eq__", np.equal), ("__ne__", np.not_equal),
])
def test_comparisons_give_bool_tensors_without_grad(op, np_op, device):
    a = np.array([[1.0, 2.0, 3.0]])
    b = np.array([[2.0], [1.0]])
    x = tg.tensor(a, requires_grad=True, device=device)
    for other, other_np in ((tg.tensor(b, device=device), b), (2.0, 2.0)):
        out = getattr(x, op)(other)
        assert out.dtype == np.bool_ and not out.requires_grad and out.grad_fn is None
        np.testing.assert_array_equal(out.numpy(), np_op(a, other_np))


def test_boolean_tensor_logic(device):
    a, b = (tg.tensor(v, device=device) for v in ([True, False, True], [True, True, False]))
    assert (a & b).tolist() == [True, False, False]
    assert (a | b).tolist() == [True, True, True]
    assert (~a).tolist() == [False, True, False]
    assert a.any().item() and not a.all().item()
    with pytest.raises(TypeError, match="boolean"):
        ~tg.tensor([1.0])


def test_argmax_argmin():
    a = np.array([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]])
    x = tg.tensor(a)
    np.testing.assert_array_equal(x.argmax(axis=1).numpy(), a.argmax(axis=1))
    np.testing.assert_array_equal(x.argmin(dim=0).numpy(), a.argmin(axis=0))
    assert x.argmax().item() == 3
    assert x.argmax(axis=1, keepdims=True).shape == (2, 1)
    for name in ("argmax", "argmin"):   # no axis: one index, kept as NumPy keeps it
        np.testing.assert_array_equal(getattr(x, name)(keepdims=True).numpy(),
                                      getattr(np, name)(a, keepdims=True))
    assert x.argmax(axis=1).dtype == np.int64


def test_empty_index_list_selects_nothing():
    x = tg.ones(4, 5, requires_grad=True)
    y = x[[]]
    assert y.shape == (0, 5)
    (y.sum() + x.sum()).backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((4, 5)))


# ---- randomised shapes: many broadcasting/indexing/axis combinations, fixed seeds ----------
def _random_shape(rng, max_ndim=3):
    return tuple(int(d) for d in rng.integers(1, 4, size=int(rng.integers(0, max_ndim + 1))))


def _broadcast_partner(rng, shape):
    """A shape that broadcasts to ``shape``: a suffix of it with some sizes set to 1."""
    suffix = shape[int(rng.integers(0, len(shape) + 1)):]
    return tuple(1 if rng.random() < 0.3 else d for d in suffix)


@pytest.mark.parametrize("seed", range(3))
def test_random_broadcasting(seed, device):
    rng = np.random.default_rng(seed)
    for _ in range(8):
        out = _random_shape(rng)
        sa, sb = _broadcast_partner(rng, out), _broadcast_partner(rng, out)
        if rng.random() < 0.5:
            sa, sb = sb, sa
        a, b = rng.uniform(0.5, 2.0, sa), rng.uniform(0.5, 2.0, sb)
        fn = lambda x, y: (x * y + x / y - y * y + 4) ** x  # noqa: E731  (base > 0)
        x, y = _tensors([a, b], tg.float64, device, True)
        np.testing.assert_allclose(fn(x, y).numpy(), (a * b + a / b - b * b + 4) ** a, rtol=1e-12)
        assert gradcheck(fn, (x, y)), (sa, sb)


@pytest.mark.parametrize("seed", range(3))
def test_random_reduction_axes(seed, device):
    rng = np.random.default_rng(10 + seed)
    for _ in range(8):
        shape = _random_shape(rng)
        a = D(*shape)(rng)
        axis = None
        if shape and rng.random() < 0.8:
            k = int(rng.integers(1, len(shape) + 1))
            chosen = rng.choice(len(shape), size=k, replace=False)
            axis = tuple(int(ax) - len(shape) if rng.random() < 0.5 else int(ax) for ax in chosen)
        keepdims = bool(rng.random() < 0.5)
        x = _tensors([a], tg.float64, device, True)[0]
        for name in ("sum", "mean", "max", "min"):
            got = getattr(x, name)(axis, keepdims)
            want = getattr(np, name)(a, axis=axis, keepdims=keepdims)
            assert got.shape == np.shape(want), (name, shape, axis, keepdims)
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
        assert gradcheck(lambda t: t.max(axis, keepdims) * t.mean(axis, keepdims)
                         + t.logsumexp(axis, keepdims), x), (shape, axis, keepdims)


@pytest.mark.parametrize("seed", range(3))
def test_random_indexing(seed, device):
    rng = np.random.default_rng(20 + seed)
    done = 0
    while done < 10:
        shape = _random_shape(rng)[:2] + (int(rng.integers(1, 4)),)
        index = []
        for d in shape:
            r = rng.random()
            if r < 0.25:
                index.append(int(rng.integers(-d, d)))
            elif r < 0.5:
                step = int(rng.choice([-2, -1, 1, 2]))
                index.append(slice(int(rng.integers(-d, d)), None, step))
            elif r < 0.75:
                index.append([int(i) for i in rng.integers(-d, d, size=int(rng.integers(1, 4)))])
            else:
                index.append(slice(None))
            if rng.random() < 0.15:
                index.append(None)
        if rng.random() < 0.2:
            index[int(rng.integers(0, len(index)))] = Ellipsis
        index = tuple(index)
        a = rng.normal(size=shape)
        try:
            want = a[index]
        except IndexError:
            continue  # NumPy refuses it too (e.g. arrays that do not broadcast)
        x = _tensors([a], tg.float64, device, True)[0]
        got = x[index]
        assert got.shape == want.shape, (shape, index)
        np.testing.assert_array_equal(got.numpy(), want)
        assert gradcheck(lambda t: t[index], x), (shape, index)
        done += 1


@pytest.mark.parametrize("seed", range(2))
def test_random_matmul_shapes(seed, device):
    rng = np.random.default_rng(30 + seed)
    done = 0
    while done < 8:
        m, k, n = (int(d) for d in rng.integers(1, 4, size=3))
        bx, by = _random_shape(rng, 2), _random_shape(rng, 2)
        try:
            np.broadcast_shapes(bx, by)
        except ValueError:
            continue
        sx = bx + (m, k) if rng.random() < 0.8 else (k,)
        sy = by + (k, n) if rng.random() < 0.8 else (k,)
        a, b = rng.normal(size=sx), rng.normal(size=sy)
        x, y = _tensors([a, b], tg.float64, device, True)
        np.testing.assert_allclose((x @ y).numpy(), a @ b, rtol=1e-12, atol=1e-14)
        assert gradcheck(lambda p, q: p @ q, (x, y)), (sx, sy)
        done += 1


def test_sum_over_batch_and_more_axes_matches_numpy_in_every_dtype():
    """Sum reduces the batch axis first in float32/64 (faster); float16 keeps NumPy's
    order, since batch-first partial sums can overflow where the whole sum does not."""
    x = np.zeros((256, 2, 2, 2), np.float16)
    x[:, :, 0, 0], x[:, :, 0, 1] = 300, -300
    np.testing.assert_array_equal(tg.Tensor(x).sum((0, 2, 3)).numpy(), [0, 0])
    rng = np.random.default_rng(3)
    for dtype in ("float32", "float64", "int32", "bool"):
        a = rng.standard_normal((5, 3, 4, 2)) > 0 if dtype == "bool" else \
            (rng.standard_normal((5, 3, 4, 2)) * 10).astype(dtype)
        for axis, keepdims in (((0, 2, 3), False), ((0, 1), True), ((0, -1), False)):
            got = tg.Tensor(a).sum(axis, keepdims=keepdims).numpy()
            want = a.sum(axis, keepdims=keepdims)
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


# ---- edge cases of the core ops -------------------------------------------------------
def test_index_arrays_are_copied_so_a_reused_index_cannot_redirect_the_gradient(device):
    for make_index in (lambda: tg.tensor([0], device=device), lambda: tg.tensor([0]),
                       lambda: np.array([0]), lambda: np.array([True, False, False])):
        x = tg.tensor([1.0, 2.0, 3.0], device=device, requires_grad=True)
        index = make_index()
        y = x[index]
        index[...] = 2 if index.dtype != bool else np.array([False, False, True])
        y.sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), [1, 0, 0])


def test_an_index_tensor_on_the_host_indexes_a_tensor_on_any_device(device):
    """As in PyTorch, and as a NumPy index array or a list does: a host index tensor is
    copied to the indexed tensor's device.  An index on another device is refused."""
    a = np.arange(12.0).reshape(4, 3)
    x = tg.tensor(a, device=device, requires_grad=True)
    rows, mask = tg.tensor([3, 0, 3]), tg.tensor([True, False, True, False])
    np.testing.assert_array_equal(x[rows].numpy(), a[[3, 0, 3]])
    np.testing.assert_array_equal(x[mask, 1].numpy(), a[[True, False, True, False], 1])
    x[rows, tg.tensor([0, 1, 2])].sum().backward()
    want = np.zeros((4, 3))
    np.add.at(want, ([3, 0, 3], [0, 1, 2]), 1.0)
    np.testing.assert_array_equal(x.grad.numpy(), want)
    z = tg.zeros(4, device=device)
    z[tg.tensor([1, 3])] = 5.0
    assert z.device == device and z.tolist() == [0.0, 5.0, 0.0, 5.0]
    other = "strict2" if device != "strict2" else "strict"
    with pytest.raises(tg.DeviceError, match=rf"indexing: tensors are on different devices: "
                                             rf"{device} and {other}"):
        x[tg.tensor([0], device=other)]


def test_scalar_bools_in_an_index_use_no_axis(device):
    a = np.arange(6.0).reshape(3, 2)
    x = tg.tensor(a, device=device)
    for index in ((True, [2]), (np.True_, [2]), (False, slice(None))):
        np.testing.assert_array_equal(x[index].numpy(), a[index])


def test_an_index_array_after_a_2d_mask_is_checked_against_its_own_axis():
    # A mask uses as many axes as it has (CuPy cannot index so: host only).
    a = np.arange(30.0).reshape(2, 3, 5)
    mask = np.zeros((2, 3), bool)
    mask[0, 1] = mask[1, 2] = True
    x = tg.tensor(a)
    np.testing.assert_array_equal(x[mask, [4, 0]].numpy(), a[mask, [4, 0]])
    with pytest.raises(IndexError, match=r"index 5 is out of range for axis 2 of size 5"):
        x[mask, [5, 0]]


@pytest.mark.filterwarnings("ignore:.*encountered:RuntimeWarning",
                            "ignore:Degrees of freedom:RuntimeWarning")
def test_var_with_a_correction_of_at_least_the_count_divides_by_zero_as_numpy():
    # inf or NaN, as NumPy's ddof and PyTorch's correction give; never a negative variance.
    a = np.array([[1.0, 2.0], [3.0, 3.0]])
    for correction in (2, 3):
        np.testing.assert_array_equal(tg.tensor(a).var(axis=1, correction=correction).numpy(),
                                      np.var(a, axis=1, ddof=correction))


def test_clip_with_tensor_bounds_gives_ties_to_x(device):
    """As with number bounds and PyTorch's clamp: a bound takes the gradient only where
    it wins strictly (maximum/minimum would split a tie)."""
    x = tg.tensor([0.0, 1.0, 3.0], device=device, requires_grad=True)
    lo = tg.tensor([0.0, 0.0, 0.0], device=device, requires_grad=True)
    hi = tg.tensor([2.0, 1.0, 2.0], device=device, requires_grad=True)
    x.clip(lo, hi).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1, 1, 0])
    np.testing.assert_array_equal(lo.grad.numpy(), [0, 0, 0])
    np.testing.assert_array_equal(hi.grad.numpy(), [0, 0, 1])
    nan_bound = tg.tensor([np.nan, 0.0], device=device)
    for clipped, second in ((x[:2].clip(nan_bound), 1), (x[:2].clip(None, nan_bound), 0),
                            (x[:2].clip(nan_bound, 5.0), 1)):   # NaN, as with a number bound
        assert np.isnan(clipped.numpy()[0]) and clipped.numpy()[1] == second


def test_float16_reductions_accumulate_in_float32():
    """The sum behind a mean of 10,000 tens exceeds float16's range (65504)."""
    assert tg.tensor(np.full(10000, 10.0, np.float16)).mean().item() == 10.0
    x = tg.tensor((300 + np.arange(100)).astype(np.float16))
    assert x.var().dtype == np.float16 and x.var().item() == pytest.approx(841.67, rel=1e-3)
    p = tg.tensor(np.zeros(70000, np.float16)).softmax()
    assert p.dtype == np.float16 and p[0].item() == pytest.approx(1 / 70000, rel=2e-3)


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_std_of_constant_data_has_a_zero_gradient(device):
    x = tg.tensor([1.0, 1.0, 1.0], dtype=tg.float64, device=device, requires_grad=True)
    x.std().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 0, 0])
    one = tg.tensor([2.0], dtype=tg.float64, device=device, requires_grad=True)
    assert np.isnan(one.std().item())   # n - correction = 0: undefined, as in PyTorch


def test_integer_base_to_a_float_tensor_power_has_nan_exponent_gradient_for_negatives():
    y = tg.tensor([2.0, 2.0], requires_grad=True)
    (tg.tensor([-2, 3]) ** y).sum().backward()
    assert np.isnan(y.grad.numpy()[0]) and y.grad.numpy()[1] == pytest.approx(9 * np.log(3))


def test_nan_takes_the_gradient_of_max_and_maximum(device):
    x = tg.tensor([1.0, np.nan, 3.0], device=device, requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 1, 0])
    a = tg.tensor([np.nan, 1.0], device=device, requires_grad=True)
    b = tg.tensor([1.0, np.nan], device=device, requires_grad=True)
    a.maximum(b).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [1, 0])
    np.testing.assert_array_equal(b.grad.numpy(), [0, 1])


def test_argmax_of_a_0d_tensor_along_axis_0():
    assert tg.tensor(3.0).argmax(0).item() == 0 and tg.tensor(3.0).argmin(-1).item() == 0


def test_clear_errors_for_bad_dtypes_and_sizes():
    with pytest.raises(TypeError, match="randn: dtype must be a floating-point type, got int32"):
        tg.randn(5, dtype="int32")
    with pytest.raises(TypeError, match="rand: dtype .* got bool"):
        tg.rand(3, dtype="bool")
    with pytest.raises(ValueError, match=r"new leading dimensions of \(-1, 2, 3\)"):
        tg.ones(2, 3).expand(-1, 2, 3)
    with pytest.raises(ValueError, match=r"to \(-1, 2, 3\): sizes must be >= 0"):
        tg.ones(2, 3).broadcast_to((-1, 2, 3))
    f = tg.ones(2)
    with pytest.raises(TypeError, match=r"\| needs boolean or integer tensors, got dtypes "
                                        r"float32 and float32"):
        f | f
    with pytest.raises(TypeError, match="- on a boolean tensor"):
        -tg.tensor([True])
    with pytest.raises(OverflowError, match="use a float tensor"):
        tg.tensor([1]) + 2**63
    with pytest.raises(OverflowError, match=r"x.astype\('int64'\)"):
        tg.tensor([1], dtype="int32") + 2**40


def test_bitwise_ops_and_integer_tensors_as_python_indices():
    m, n = tg.tensor([True, False, True]), tg.tensor([True, True, False])
    assert (m & n).tolist() == [True, False, False] and (m | n).tolist() == [True, True, True]
    assert (m ^ n).tolist() == [False, True, True]
    assert [10, 20, 30][tg.tensor(1)] == 20
    assert tg.arange(5)[tg.tensor(3):].tolist() == [3, 4]
    with pytest.raises(TypeError, match="one-element integer tensor"):
        [1, 2][tg.tensor(1.0)]


def test_inplace_power_changes_the_tensor_itself():
    x = tg.tensor([1.0, 2.0])
    alias = x
    x **= 2
    assert x is alias and x.tolist() == [1.0, 4.0]
