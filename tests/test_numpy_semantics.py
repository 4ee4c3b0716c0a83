"""NumPy is the oracle for the Tensor's indexing, shape, broadcasting and reduction ops.

Hypothesis draws shapes (with size-0 and size-1 axes, and 0-d tensors), dtypes and
arguments; ``op(tensor).numpy()`` must equal ``op(array)`` in values, shape and dtype,
or both must raise, ours with an error the library raises itself (a ``raise`` in
tinygrad_cnn, not an exception escaping from NumPy or from a bug deep inside).
Gradients: indexing against ``np.add.at`` into zeros (repeated indices accumulate),
reductions against torch in float64, shape ops by ``tg.gradcheck`` in float64.

Where the library deliberately differs from NumPy the strategies do not draw that
case, and a comment names the rule.  Each bug the fuzz found is pinned as a case in
the regression tables at the end.
"""
from __future__ import annotations

import operator
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tinygrad_cnn as tg

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])
LIBRARY = os.path.dirname(tg.__file__)
DTYPES = ["bool", "int8", "uint8", "int32", "int64", "float16", "float32", "float64"]
# What bad input may raise: NumPy's AxisError is both a ValueError and an IndexError.
REFUSALS = (ValueError, TypeError, IndexError, OverflowError)

shapes = st.lists(st.integers(0, 3), max_size=4).map(tuple)


# ---- the oracle ---------------------------------------------------------------------
def values(rng, shape, dtype):
    """Small values of ``dtype``: floats are halves, so sums are exact in any order."""
    dtype = np.dtype(dtype)
    if dtype == bool:
        return np.asarray(rng.random(shape) < 0.5)
    low = 0 if dtype.kind == "u" else -3
    ints = rng.integers(low, 4, size=shape)
    return np.asarray(ints / 2 if dtype.kind == "f" else ints).astype(dtype)


def numpy_result(fn, *args):
    """``(array, None)``, or ``(None, error)`` if NumPy refuses."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return np.asarray(fn(*args)), None
        except REFUSALS as e:
            return None, e


def assert_refused_by_us(call, what):
    """``call()`` raises a refusal from a ``raise`` statement of the library itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(REFUSALS) as info:
            call()
    last = info.traceback[-1]
    assert str(last.path).startswith(LIBRARY) and "raise" in str(last.statement), (
        f"{what}: {info.type.__name__}({info.value}) escaped from {last.path}:{last.lineno} "
        f"({str(last.statement).strip()})")


def assert_same(got, want, what, rtol=0.0):
    """A tensor equal to NumPy's array in shape, dtype and values (NaN equals NaN)."""
    assert isinstance(got, tg.Tensor), what
    assert (got.shape, got.dtype) == (want.shape, want.dtype), (
        f"{what}: got {got.shape} {got.dtype}, NumPy gives {want.shape} {want.dtype}")
    if rtol:
        np.testing.assert_allclose(got.numpy(), want, rtol=rtol, atol=rtol, err_msg=what)
    else:
        np.testing.assert_array_equal(got.numpy(), want, err_msg=what)


def check_against_numpy(ours, theirs, args_ours, args_numpy, what, rtol=0.0):
    """``ours(*args_ours)`` gives what ``theirs(*args_numpy)`` gives, or both refuse."""
    want, error = numpy_result(theirs, *args_numpy)
    if error is not None:
        assert_refused_by_us(lambda: ours(*args_ours), f"{what} (NumPy: {error})")
        return None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        got = ours(*args_ours)
    assert_same(got, want, what, rtol)
    return got


# ---- indexing -----------------------------------------------------------------------
def _partner(draw, shape):
    """A shape that broadcasts to ``shape``: a suffix of it with some sizes set to 1."""
    suffix = shape[draw(st.integers(0, len(shape))):]
    return tuple(1 if draw(st.booleans()) else d for d in suffix)


def _as_index_array(draw, a):
    """An index array ``a`` as NumPy's array, a list or a tensor (the oracle gets ``a``)."""
    form = draw(st.sampled_from(["array", "list", "tensor"]))
    if form == "list" and a.size > 0:   # [] would be an empty int index of shape (0,)
        return a.tolist()
    return tg.tensor(a) if form == "tensor" else a


@st.composite
def indices(draw, shape):
    """``(index, numpy_index)`` for an array of ``shape``: ints (negative, out of range),
    slices (any bounds and steps), None, Ellipsis, integer arrays (broadcast together,
    repeated) and boolean masks (of one or two axes, or 0-d), in any order.

    Integer arrays stay in range: where the broadcast selects nothing, NumPy never
    reads an out-of-range entry and accepts it, while we refuse any (the bounds check
    that CuPy, which would wrap them, needs).  Masks match the axes they cover: NumPy
    takes a 1-d empty mask for an axis of any size, a legacy quirk we refuse.
    """
    ndim = len(shape)
    ellipsis = draw(st.booleans())
    head = draw(st.integers(0, ndim))
    tail = draw(st.integers(0, ndim - head)) if ellipsis else 0
    array_shape = draw(st.lists(st.integers(0, 3), max_size=2).map(tuple))
    parts, numpy_parts = [], []

    def consume(axis, room):
        """Parts for axes axis.. (at most ``room`` of them); returns the axes used."""
        kinds = ["int", "slice", "array", "mask", "none", "bool"] if room else ["none", "bool"]
        kind = draw(st.sampled_from(kinds))
        d = shape[axis] if room else 0
        if kind == "none" or kind == "bool":
            part = None if kind == "none" else draw(st.booleans())
            parts.append(part)
            numpy_parts.append(part)
            return 0
        if kind == "int":
            part = draw(st.integers(-d - 2, d + 1))
            parts.append(part)
            numpy_parts.append(part)
        elif kind == "slice" or (kind == "array" and d == 0):
            ends = st.none() | st.integers(-d - 3, d + 3)
            part = slice(draw(ends), draw(ends), draw(st.sampled_from([None, -3, -2, -1, 1, 2])))
            parts.append(part)
            numpy_parts.append(part)
        elif kind == "array":
            rng = np.random.default_rng(draw(st.integers(0, 2**16)))
            a = rng.integers(-d, d, size=_partner(draw, array_shape))
            a = a.astype(draw(st.sampled_from([np.int64, np.int32])))
            parts.append(_as_index_array(draw, a))
            numpy_parts.append(a)
        else:
            m = draw(st.integers(1, min(room, 2)))
            rng = np.random.default_rng(draw(st.integers(0, 2**16)))
            mask = rng.random(shape[axis:axis + m]) < draw(st.sampled_from([0.0, 0.5, 1.0]))
            parts.append(_as_index_array(draw, mask))
            numpy_parts.append(mask)
            return m
        return 1

    axis = 0
    while axis < head:
        axis += consume(axis, head - axis)
    if ellipsis:
        parts.append(Ellipsis)
        numpy_parts.append(Ellipsis)
        axis = ndim - tail
        while axis < ndim:
            axis += consume(axis, ndim - axis)
    if draw(st.booleans()):
        consume(ndim, 0)   # a trailing None or scalar bool
    if len(parts) == 1 and draw(st.booleans()):
        return parts[0], numpy_parts[0]
    return tuple(parts), tuple(numpy_parts)


@st.composite
def indexing_cases(draw):
    shape = draw(shapes)
    index, numpy_index = draw(indices(shape))
    return shape, draw(st.sampled_from(DTYPES)), index, numpy_index, draw(st.integers(0, 2**16))


@FUZZ
@given(case=indexing_cases())
def test_getitem_matches_numpy(case):
    shape, dtype, index, numpy_index, seed = case
    a = values(np.random.default_rng(seed), shape, dtype)
    check_against_numpy(lambda: tg.tensor(a)[index], lambda: a[numpy_index], (), (),
                        f"x[{index!r}] of shape {shape}")


@FUZZ
@given(case=indexing_cases())
def test_getitem_gradient_scatters_and_accumulates(case):
    """grad_x = zeros, then np.add.at(grad_x, index, grad_out)."""
    shape, _, index, numpy_index, seed = case
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    want, error = numpy_result(lambda: a[numpy_index])
    if error is not None:
        return
    x = tg.tensor(a, requires_grad=True)
    grad_out = rng.standard_normal(want.shape)
    x[index].backward(tg.tensor(grad_out))
    grad_x = np.zeros(shape)
    np.add.at(grad_x, numpy_index, grad_out)
    assert x.grad.dtype == np.float64
    np.testing.assert_allclose(x.grad.numpy(), grad_x, rtol=1e-12, atol=1e-12,
                               err_msg=f"grad of x[{index!r}] of shape {shape}")


@st.composite
def setitem_cases(draw):
    """An index, and a value of the selection's shape or one that broadcasts to it."""
    shape, dtype, index, numpy_index, seed = draw(indexing_cases())
    a = values(np.random.default_rng(seed), shape, dtype)
    selected, error = numpy_result(lambda: a[numpy_index])
    value_shape = draw(st.just(()) | st.just(selected.shape if error is None else ())
                       | shapes)
    if error is None and draw(st.booleans()):
        value_shape = _partner(draw, selected.shape)
    # Only values that fit: item assignment refuses what a cast would change (the
    # Tensor docstring), where NumPy would cut 1.5 to 1 or wrap 300 to 44.
    kind = np.dtype(dtype).kind
    value_dtype = draw(st.sampled_from([d for d in DTYPES if np.can_cast(d, dtype, "same_kind")
                                        and not (kind == "u" and np.dtype(d).kind == "i")]))
    value = values(np.random.default_rng(seed + 1), value_shape, value_dtype)
    return a, index, numpy_index, value


@FUZZ
@given(case=setitem_cases())
def test_setitem_matches_numpy(case):
    a, index, numpy_index, value = case

    def ours():
        x = tg.tensor(a)
        x[index] = tg.tensor(value)
        return x

    def theirs():
        b = a.copy()
        b[numpy_index] = value
        return b
    check_against_numpy(ours, theirs, (), (), f"x[{index!r}] = value of shape {value.shape} "
                                              f"into shape {a.shape}")


# ---- reductions ---------------------------------------------------------------------
def _axis(draw, ndim, single=False):
    """None, an int or (unless ``single``) a tuple, any of them possibly out of range or
    repeated.  A 0-d tensor gets only what NumPy can take or refuses as we do: it takes
    axis 0 and -1 (as PyTorch; ``tensor._axes``), where NumPy has no axis at all."""
    n = max(ndim, 1)
    ints = st.integers(-n - 1, n) if ndim else st.integers(2, 3) | st.integers(-3, -2)
    choices = st.none() | ints
    if not single:
        choices |= st.lists(ints, max_size=ndim + 1).map(tuple) if ndim else st.just(())
    return draw(choices)


def _same_call(name):
    """(ours, NumPy's) for a reduction both spell ``name(axis, keepdims)``."""
    return (lambda x, axis, keepdims: getattr(x, name)(axis, keepdims),
            lambda a, axis, keepdims: getattr(a, name)(axis=axis, keepdims=keepdims))


SAME_CALL = ("sum", "prod", "mean", "max", "min", "argmax", "argmin")
REDUCTIONS = {name: _same_call(name) for name in SAME_CALL}
REDUCTIONS.update({
    # float16 products accumulate in float32, as PyTorch's (NumPy's round at every step)
    "prod": (REDUCTIONS["prod"][0],
             lambda a, axis, keepdims: a.prod(axis=axis, keepdims=keepdims) if a.dtype != "e"
             else a.astype("f").prod(axis=axis, keepdims=keepdims).astype("e")),
    "var0": (lambda x, axis, keepdims: x.var(axis, keepdims=keepdims, correction=0),
             lambda a, axis, keepdims: a.var(axis=axis, keepdims=keepdims)),
    "var1": (lambda x, axis, keepdims: x.var(axis, keepdims=keepdims),
             lambda a, axis, keepdims: a.var(axis=axis, keepdims=keepdims, ddof=1)),
    "std1": (lambda x, axis, keepdims: x.std(axis, keepdims=keepdims),
             lambda a, axis, keepdims: a.std(axis=axis, keepdims=keepdims, ddof=1)),
})
ROUNDED = {"mean", "var0", "var1", "std1"}   # a division: equal up to rounding
TOLERANCE = {"float16": 1e-3, "float32": 1e-6}


@st.composite
def reduction_cases(draw):
    name = draw(st.sampled_from(sorted(REDUCTIONS)))
    shape = draw(shapes)
    dtype = draw(st.sampled_from(DTYPES))
    axis = _axis(draw, len(shape), single=name.startswith("arg"))
    return name, shape, dtype, axis, draw(st.booleans()), draw(st.integers(0, 2**16))


@FUZZ
@given(case=reduction_cases())
def test_reductions_match_numpy(case):
    name, shape, dtype, axis, keepdims, seed = case
    a = values(np.random.default_rng(seed), shape, dtype)
    ours, theirs = REDUCTIONS[name]
    rtol = TOLERANCE.get(dtype, 1e-12) if name in ROUNDED else 0.0
    check_against_numpy(ours, theirs, (tg.tensor(a), axis, keepdims), (a, axis, keepdims),
                        f"{name}(axis={axis!r}, keepdims={keepdims}) of {dtype} {shape}", rtol)


def _torch_prod(t, dim, keepdim):
    """torch's prod over several dims (its own takes one): one dim at a time."""
    dims = range(t.dim()) if dim is None else [dim] if isinstance(dim, int) else dim
    for d in sorted((d % max(t.dim(), 1) for d in dims), reverse=True):
        t = t.prod(d, keepdim=keepdim) if t.dim() else t.prod()
    return t


TORCH_REDUCTIONS = {
    "sum": lambda t, dim, keepdim: t.sum(dim, keepdim=keepdim),
    "prod": _torch_prod,
    "mean": lambda t, dim, keepdim: t.mean(dim, keepdim=keepdim),
    "max": lambda t, dim, keepdim: t.amax(dim, keepdim=keepdim),   # ties share, as ours
    "min": lambda t, dim, keepdim: t.amin(dim, keepdim=keepdim),
    "var0": lambda t, dim, keepdim: t.var(dim, keepdim=keepdim, correction=0),
    "var1": lambda t, dim, keepdim: t.var(dim, keepdim=keepdim),
    "std1": lambda t, dim, keepdim: t.std(dim, keepdim=keepdim),
}


@FUZZ
@given(case=reduction_cases())
def test_reduction_gradients_match_torch(case):
    torch = pytest.importorskip("torch")
    name, shape, _, axis, keepdims, seed = case
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    if name not in TORCH_REDUCTIONS or numpy_result(REDUCTIONS[name][1], a, axis,
                                                    keepdims)[1] is not None:
        return
    x = tg.tensor(a, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = REDUCTIONS[name][0](x, axis, keepdims)
        grad_out = rng.standard_normal(y.shape)
        y.backward(tg.tensor(grad_out))
        t = torch.tensor(a, requires_grad=True)
        # axis=() reduces nothing here and everything in torch (README, "Conventions"):
        # for torch, reduce a new axis of size 1 instead.
        u = (TORCH_REDUCTIONS[name](t.unsqueeze(-1), -1, False) if axis == ()
             else TORCH_REDUCTIONS[name](t, axis, keepdims))
        (want,) = torch.autograd.grad(u, t, torch.tensor(grad_out))
    np.testing.assert_allclose(x.grad.numpy(), want.numpy(), rtol=1e-10, atol=1e-12,
                               err_msg=f"grad of {name}(axis={axis!r}) of {shape}")


# ---- elementwise binary ops -----------------------------------------------------------
BINARY = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "**": operator.pow, "<": operator.lt, "==": operator.eq, "!=": operator.ne,
    ">=": operator.ge, "&": operator.and_, "|": operator.or_, "^": operator.xor,
    "maximum": None, "minimum": None,
}


@st.composite
def operands(draw):
    """Two operands: tensors of any dtypes and shapes that broadcast (or not), or a
    Python number on either side."""
    out = draw(shapes)
    if draw(st.integers(0, 9)) == 0:
        shape_x, shape_y = draw(shapes), draw(shapes)
    else:
        shape_x, shape_y = _partner(draw, out), _partner(draw, out)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = values(rng, shape_x, draw(st.sampled_from(DTYPES)))
    scalars = st.booleans() | st.integers(-3, 3) | st.sampled_from([0.5, -1.5, 2.0, 300])
    y = (draw(scalars) if draw(st.integers(0, 2)) == 0
         else values(rng, shape_y, draw(st.sampled_from(DTYPES))))
    return (y, x) if not isinstance(y, np.ndarray) and draw(st.booleans()) else (x, y)


@FUZZ
@given(op=st.sampled_from(sorted(BINARY)), pair=operands())
def test_binary_ops_match_numpy_in_values_and_dtype(op, pair):
    a, b = pair
    if BINARY[op] is None:   # maximum and minimum are methods: a tensor on the left
        if not isinstance(a, np.ndarray):
            a, b = b, a
        ours = getattr(tg.Tensor, op)
        theirs = getattr(np, op)
    else:
        ours = theirs = BINARY[op]
    args = [tg.tensor(v) if isinstance(v, np.ndarray) else v for v in (a, b)]
    check_against_numpy(ours, theirs, args, (a, b), f"{a!r} {op} {b!r}")


# ---- shape ops ----------------------------------------------------------------------
@st.composite
def new_shapes(draw, shape):
    """A shape with as many elements (its sizes shuffled, neighbours merged, one of
    them perhaps -1), or, now and then, any shape at all."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.lists(st.integers(-1, 4), max_size=4).map(tuple))
    sizes = list(draw(st.permutations(shape)))
    while len(sizes) > 1 and draw(st.booleans()):
        i = draw(st.integers(0, len(sizes) - 2))
        sizes[i:i + 2] = [sizes[i] * sizes[i + 1]]
    sizes += [1] * draw(st.integers(0, 1))
    if sizes and draw(st.booleans()):
        sizes[draw(st.integers(0, len(sizes) - 1))] = -1
    return tuple(sizes)


def _flatten_numpy(a, start, end):
    s, e = (np.core.numeric.normalize_axis_index(i, max(a.ndim, 1)) for i in (start, end))
    if a.ndim == 0:
        return a.reshape(1)
    if s > e:
        raise ValueError("start after end")
    return a.reshape(a.shape[:s] + (int(np.prod(a.shape[s:e + 1])),) + a.shape[e + 1:])


@st.composite
def shape_cases(draw):
    """``(name, ours, numpy's, arrays)``: one shape op with drawn arguments; ``ours`` and
    ``numpy's`` take the arrays (ours as tensors)."""
    shape = draw(shapes)
    n = len(shape)
    axis = st.integers(-n - 1, n)
    name = draw(st.sampled_from(["reshape", "flatten", "squeeze", "unsqueeze", "permute",
                                 "transpose", "swapaxes", "broadcast_to", "expand",
                                 "concatenate", "stack", "split", "chunk", "pad", "where"]))
    if name == "reshape":
        s = draw(new_shapes(shape))
        ours, theirs = (lambda x: x.reshape(s)), (lambda a: a.reshape(s))
    elif name == "flatten":
        start, end = draw(axis), draw(axis)
        if n == 0:   # a 0-d tensor has axes 0 and -1 (as PyTorch), NumPy none: both say 0
            start = end = 0
        ours = lambda x: x.flatten(start, end)   # noqa: E731
        theirs = lambda a: _flatten_numpy(a, start, end)   # noqa: E731
    elif name == "squeeze":
        ax = _axis(draw, n)
        ours, theirs = (lambda x: x.squeeze(ax)), (lambda a: a.squeeze(ax))
    elif name == "unsqueeze":
        ax = draw(st.integers(-n - 2, n + 1))
        ours, theirs = (lambda x: x.unsqueeze(ax)), (lambda a: np.expand_dims(a, ax))
    elif name in ("permute", "transpose"):
        axes = tuple(draw(st.permutations(range(n))))
        axes = tuple(a - n if draw(st.booleans()) else a for a in axes)
        if draw(st.integers(0, 5)) == 0:
            axes = tuple(draw(st.lists(axis, max_size=n + 1)))
        if name == "transpose" and len(axes) == 2:
            # Two axes always swap, as PyTorch (Tensor.transpose's docstring): for a 2-d
            # tensor transpose(0, 1) is NumPy's transpose(1, 0).  Swapping is NumPy's
            # swapaxes, checked below; here a permutation of two axes is one of all.
            axes = axes if sorted(a % 2 for a in axes) != [0, 1] or n != 2 else (1, 0)
        ours = lambda x: getattr(x, name)(*axes)   # noqa: E731
        theirs = lambda a: np.transpose(a, axes)   # noqa: E731
    elif name == "swapaxes":
        a0, a1 = draw(axis), draw(axis)
        ours, theirs = (lambda x: x.swapaxes(a0, a1)), (lambda a: a.swapaxes(a0, a1))
        if n == 0 and {a0, a1} <= {0, -1}:
            # A 0-d tensor has axes 0 and -1, as in PyTorch (tensor._axes), NumPy none.
            theirs = lambda a: a   # noqa: E731
    elif name in ("broadcast_to", "expand"):
        lead = draw(st.lists(st.integers(0, 3), max_size=2).map(tuple))
        target = lead + tuple(d if draw(st.booleans()) else draw(st.integers(0, 3))
                              for d in shape)
        if draw(st.integers(0, 5)) == 0:
            target = draw(shapes)
        if name == "expand":
            lead = len(target) - n
            keep = [i >= lead and draw(st.booleans()) for i in range(len(target))]
            given = tuple(-1 if k else s for k, s in zip(keep, target))
            ours = lambda x: x.expand(given)   # noqa: E731
            target = tuple(shape[i - lead] if k else s for i, (k, s) in
                           enumerate(zip(keep, target)))
        else:
            ours = lambda x: x.broadcast_to(target)   # noqa: E731
        theirs = lambda a: np.broadcast_to(a, target)   # noqa: E731
    elif name in ("concatenate", "stack"):
        ax = draw(axis)
        count = draw(st.integers(1, 3))
        others = [shape] * count
        if name == "concatenate" and n:
            k = ax % n if -n <= ax < n else 0
            others = [shape[:k] + (draw(st.integers(0, 3)),) + shape[k + 1:] for _ in others]
        if draw(st.integers(0, 5)) == 0:
            others[-1] = draw(shapes)
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        dtypes = [draw(st.sampled_from(["float64", "float32", "int64", "bool"]))
                  for _ in others]
        arrays = [values(rng, s, d) for s, d in zip(others, dtypes)]
        ours = lambda *xs: getattr(tg, name)(list(xs), ax)   # noqa: E731
        theirs = lambda *xs: getattr(np, name)(list(xs), ax)   # noqa: E731
        return name, f"{name}({[a.shape for a in arrays]}, axis={ax})", ours, theirs, arrays
    elif name in ("split", "chunk"):
        ax = draw(axis)
        size = shape[ax] if -n <= ax < n else 0
        if name == "split" and draw(st.booleans()):
            parts = draw(st.lists(st.integers(-size - 1, size + 1), max_size=3))
        else:
            parts = draw(st.integers(1, 4))
        if n == 0:
            ax = 0
        ours = _joined(lambda x: getattr(x, name)(parts, ax))
        theirs = _joined(lambda a: np.split(a, parts, ax), numpy=True)
    elif name == "pad":
        widths = draw(st.integers(0, 2) | st.tuples(st.integers(0, 2), st.integers(0, 2))
                      | st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)),
                                 min_size=n, max_size=n))
        # Only values the dtype holds: pad refuses 0.5 for an integer tensor (as item
        # assignment, the Tensor docstring) where NumPy would cut it to 0.
        value = draw(st.sampled_from([0, 1, -2, 0.5, True]))
        ours = lambda x: x.pad(widths, value)   # noqa: E731
        theirs = lambda a: np.pad(a, widths, constant_values=value)   # noqa: E731
        dtypes = ["float64", "float32"] + (["int64", "bool"] if value in (0, 1) else
                                           [] if value == 0.5 else ["int64"])
    else:   # where
        shape_c, shape_y = _partner(draw, shape), _partner(draw, shape)
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        arrays = [rng.random(shape_c) < 0.5,
                  values(rng, shape, draw(st.sampled_from(DTYPES))),
                  values(rng, shape_y, draw(st.sampled_from(DTYPES)))]
        return name, f"where{tuple(a.shape for a in arrays)}", tg.where, np.where, arrays
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if name != "pad":
        dtypes = ["float64", "float32", "int64", "bool"]
    arrays = [values(rng, shape, draw(st.sampled_from(dtypes)))]
    return name, f"{name} of {shape}", ours, theirs, arrays


def _joined(split, numpy=False):
    """The pieces of ``split`` as one array (each flattened, with a marker between
    them), so that one comparison covers their number, shapes and values."""
    def join(x):
        pieces = split(x)
        if numpy:
            return np.concatenate([np.append(np.array(p.shape, float), [-1.0])
                                   for p in pieces] + [np.ravel(p) for p in pieces])
        return tg.cat([tg.tensor(list(p.shape) + [-1], dtype="float64") for p in pieces]
                      + [p.flatten().astype("float64") for p in pieces])
    return join


@FUZZ
@given(case=shape_cases())
def test_shape_ops_match_numpy(case):
    name, what, ours, theirs, arrays = case
    check_against_numpy(ours, theirs, [tg.tensor(a) for a in arrays], arrays, what)


@FUZZ
@given(case=shape_cases())
def test_shape_op_gradients_pass_gradcheck(case):
    name, what, ours, theirs, arrays = case
    want, error = numpy_result(theirs, *arrays)
    if error is not None or want.size == 0 or all(a.size == 0 for a in arrays):
        return   # refused, or nothing to check (gradcheck says so)
    inputs = [tg.tensor(a) if name == "where" and i == 0   # the condition
              else tg.tensor(a.astype(np.float64), requires_grad=True)
              for i, a in enumerate(arrays)]
    assert tg.gradcheck(ours, tuple(inputs)), what


# ---- regressions: cases the fuzz found ------------------------------------------------
I8 = np.array([2, -3, 0], np.int8)
U8 = np.array([2, 255, 0], np.uint8)
MASK = np.array([True, False, True])
REGRESSIONS = [
    # A Python float with a bool or small-int tensor is float64, as in NumPy (was
    # float32, while int32 and int64 tensors gave float64).
    ("mask * 0.5", lambda: tg.tensor(MASK) * 0.5, MASK * 0.5),
    ("0.5 - int8", lambda: 0.5 - tg.tensor(I8), 0.5 - I8),
    ("uint8 / 2.0", lambda: tg.tensor(U8) / 2.0, U8 / 2.0),
    ("int8.maximum(0.5)", lambda: tg.tensor(I8).maximum(0.5), np.maximum(I8, 0.5)),
    ("where(mask, mask, 0.5)", lambda: tg.where(tg.tensor(MASK), tg.tensor(MASK), 0.5),
     np.where(MASK, MASK, 0.5)),
    # A Python number left of & | ^ (was Python's TypeError: no reflected method).
    ("True & mask", lambda: True & tg.tensor(MASK), True & MASK),
    ("1 | int8", lambda: 1 | tg.tensor(I8), 1 | I8),
    ("3 ^ uint8", lambda: 3 ^ tg.tensor(U8), 3 ^ U8),
    # An int beyond the dtype's range compares by its value (was an OverflowError).
    ("uint8 < 300", lambda: tg.tensor(U8) < 300, U8 < 300),
    ("int8 != -1000", lambda: tg.tensor(I8) != -1000, I8 != -1000),
    ("300 <= uint8", lambda: 300 <= tg.tensor(U8), 300 <= U8),
    ("uint8 == -1", lambda: tg.tensor(U8) == -1, U8 == -1),
    # A bool tensor clipped at an int bound is int64, as in NumPy (was bool: 2 became True).
    ("mask.clip(2, None)", lambda: tg.tensor(MASK).clip(2, None), np.clip(MASK, 2, None)),
    ("mask.clip(0, 1)", lambda: tg.tensor(MASK).clip(0, 1), np.clip(MASK, 0, 1)),
    # swapaxes of a 0-d tensor at its axes 0 and -1 (was a raw IndexError from inside).
    ("0-d swapaxes(0, -1)", lambda: tg.tensor(np.float64(2.5)).swapaxes(0, -1),
     np.asarray(2.5)),
    ("0-d transpose(0, 0)", lambda: tg.tensor(np.float64(2.5)).transpose(0, 0),
     np.asarray(2.5)),
]


@pytest.mark.parametrize("op, want", [pytest.param(op, np.asarray(want), id=name)
                                      for name, op, want in REGRESSIONS])
def test_regressions_match_numpy(op, want):
    assert_same(op(), want, "")


ERROR_REGRESSIONS = [
    # A bool base to a negative int tensor power: NumPy's raw error escaped from inside
    # (and CuPy would give a number): refused as for an integer base.
    ("False ** int8", lambda: False ** tg.tensor(I8 - 3), ValueError,
     r"power: an integer tensor \(dtype bool\) to a negative integer power"),
    ("mask ** int64", lambda: tg.tensor(MASK) ** tg.tensor([-1, 0, 1]), ValueError,
     r"power: an integer tensor \(dtype bool\) to a negative integer power"),
]


@pytest.mark.parametrize("op, error, match", [pytest.param(op, error, match, id=name)
                                              for name, op, error, match in
                                              ERROR_REGRESSIONS])
def test_error_regressions_are_refused_by_us(op, error, match):
    with pytest.raises(error, match=match):
        op()
    assert_refused_by_us(op, "")
