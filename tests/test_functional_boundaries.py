"""The CNN ops of ``tinygrad_cnn.functional`` against ``torch.nn.functional`` at the
edges of their hyper-parameter space (skipped without torch).

Hypothesis draws shapes and hyper-parameters so that they land on the boundaries:
a kernel as large as the padded input and one element larger, padding of half the
kernel and one more, output sizes of 0 and 1, sizes where ``ceil_mode`` adds a
window and where it does not, ``output_padding`` at ``stride - 1`` and ``stride``.
For each draw both libraries run on the same float64 values and:

* both succeed: the same output shape, values within 1e-10 (relative), the same
  indices (``return_indices``; the values are distinct, so there are no ties), and
  every input gradient, for a random upstream gradient, within 1e-10;
* both refuse: ours with a ``ValueError`` or ``TypeError`` that names the op (never
  an error from inside NumPy);
* one refuses and the other does not: the test fails, unless the case is one of the
  deliberate refusals of ``REFUSED_ON_PURPOSE`` (configurations whose torch result
  is meaningless: a window wholly in the padding, an empty output).

``REGRESSIONS`` lists the cases the search found wrong, as explicit rows, and
``test_compare_finds_a_wrong_op`` shows that the comparison does fail on a wrong op.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tinygrad_cnn as tg
import tinygrad_cnn.functional as F

torch = pytest.importorskip("torch")
nnf = torch.nn.functional

RTOL = 1e-10
EXAMPLES = 60   # per op: the whole file runs in about 15 s


# ---- values -----------------------------------------------------------------------------
def distinct(rng, shape):
    """Tie-free float64 values (a shuffled grid in [-1, 1]), so max pooling's winner and
    index are the same in both libraries."""
    n = math.prod(shape)
    return rng.permutation(np.linspace(-1.0, 1.0, max(n, 1)))[:n].reshape(shape)


def torch_local2d(x, w, b=None, stride=1, padding=0, dilation=1):
    """local2d in torch: unfold, then one filter per output position (einsum)."""
    OC, OH, OW, C, KH, KW = w.shape
    cols = nnf.unfold(x, (KH, KW), dilation=dilation, padding=padding, stride=stride)
    y = torch.einsum("olk,nkl->nol", w.reshape(OC, OH * OW, C * KH * KW), cols)
    y = y.reshape(x.shape[0], OC, OH, OW)
    return y if b is None else y + b


def torch_op(op):
    return torch_local2d if op == "local2d" else getattr(nnf, op)


# ---- running both -----------------------------------------------------------------------
LAYOUTS = {   # x's values in other memory orders, which some ops read differently
    "c": lambda a: a,
    "fortran": np.asfortranarray,
    "batch_last": lambda a: np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 0, -1)), -1, 0),
}


def _run_ours(op, arrays, kw, im2col_limit=None, layout="c", wanted=None):
    """Our outputs and the gradients of the inputs flagged in ``wanted`` (default all;
    None for the others), x laid out in memory as ``layout``, under ``im2col_limit``."""
    wanted = [True] * len(arrays) if wanted is None else wanted
    arrays = [LAYOUTS[layout](arrays[0])] + list(arrays[1:])
    xs = [tg.Tensor(a, requires_grad=bool(r)) for a, r in zip(arrays, wanted)]
    saved = F.get_im2col_limit()
    if im2col_limit is not None:
        F.set_im2col_limit(im2col_limit)
    try:
        out = getattr(F, op)(*xs, **kw)
        outs = out if isinstance(out, tuple) else (out,)
        grads = [None] * len(xs)
        asked = [x for x in xs if x.requires_grad]
        if outs[0].size and asked:
            g = np.random.default_rng(1).standard_normal(outs[0].shape)
            it = iter(tg.grad(outs[0], asked, tg.Tensor(g), allow_unused=True))
            grads = [next(it) if x.requires_grad else None for x in xs]
    finally:
        F.set_im2col_limit(saved)
    return xs, outs, grads


def _run_torch(op, arrays, kw):
    xs = [torch.tensor(a, requires_grad=True) for a in arrays]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # padding="same" warns about an extra copy
        out = torch_op(op)(*xs, **kw)
    outs = out if isinstance(out, tuple) else (out,)
    return xs, outs


def _refusal(run, *args):
    """(result, None) or (None, the exception)."""
    try:
        return run(*args), None
    except Exception as e:   # noqa: BLE001 - any refusal is compared below
        return None, e


def _differs(a, b):
    """Is a (ours) not within RTOL of b (torch), relative to b's magnitude?"""
    scale = max(1.0, float(np.abs(b).max(initial=0.0)))
    return a.shape != b.shape or not np.allclose(a, b, rtol=RTOL, atol=RTOL * scale)


def compare(op, arrays, kw, im2col_limit=None, layout="c", wanted=None):
    """Run ``op`` on ``arrays`` (float64) with ``kw`` in both libraries; None if they
    agree by the rules of the module docstring, else a description of the difference.
    Ours runs under ``im2col_limit`` (a small one splits the batch), with x laid out
    as ``layout`` and gradients for the inputs flagged in ``wanted`` only."""
    what = f"{op} on {[a.shape for a in arrays]} with {kw}"
    ours, our_error = _refusal(_run_ours, op, arrays, kw, im2col_limit, layout, wanted)
    theirs, their_error = _refusal(_run_torch, op, arrays, kw)
    if our_error is not None:
        if not isinstance(our_error, (ValueError, TypeError)) or \
                not str(our_error).startswith(f"{op}:"):
            return f"{what}: unclear refusal {type(our_error).__name__}: {our_error}"
        if their_error is None and not refused_on_purpose(op, arrays, kw, theirs[1]):
            return f"{what}: we refuse ({our_error}), torch gives {theirs[1][0].shape}"
        return None
    if their_error is not None:
        return f"{what}: torch refuses ({their_error}), we give {ours[1][0].shape}"
    (xs, outs, grads), (txs, touts) = ours, theirs
    if len(outs) != len(touts):
        return f"{what}: {len(outs)} outputs, torch {len(touts)}"
    for k, (o, t) in enumerate(zip(outs, touts)):
        o, t = o.numpy(), t.detach().numpy()
        if o.dtype != t.dtype or _differs(o, t) if t.dtype.kind == "f" else \
                o.shape != t.shape or not np.array_equal(o, t):
            return f"{what}: output {k} {o.dtype}{o.shape} differs from torch's {t.dtype}" \
                   f"{tuple(t.shape)}:\n{o}\nvs\n{t}"
    for k, o in enumerate(outs):
        if any(np.may_share_memory(o.data, x.data) for x in xs):
            return f"{what}: output {k} shares memory with an input (torch's is new)"
    if outs[0].size == 0:
        return None
    g = np.random.default_rng(1).standard_normal(outs[0].shape)
    t_grads = torch.autograd.grad(touts[0], txs, torch.tensor(g), allow_unused=True)
    for k, (a, x, t) in enumerate(zip(grads, xs, t_grads)):
        if not x.requires_grad:
            continue
        a = np.zeros(x.shape) if a is None else a.numpy()
        t = np.zeros(x.shape) if t is None else t.numpy()
        if _differs(a, t):
            return f"{what}: gradient of input {k} differs from torch's:\n{a}\nvs\n{t}"
    return None


def refused_on_purpose(op, arrays, kw, torch_outs):
    """The configurations we refuse though torch computes something: torch skips its
    checks for an empty batch, and some of its results are meaningless (an output
    size of 0, windows with no input element in them)."""
    if op != "pad" and arrays[0].shape[0] == 0:
        # torch checks little on an empty batch: what does it do with one image?
        one = [np.zeros((1,) + arrays[0].shape[1:])] + list(arrays[1:])
        torch_outs, error = _refusal(_run_torch, op, one, kw)
        if error is not None:
            return True
        torch_outs = torch_outs[1]
    y = torch_outs[0]
    if y.numel() == 0 and min(y.shape[2:], default=1) == 0:
        return True          # an empty output: some spatial size is 0
    if op in ("max_pool2d", "max_pool1d") and torch.isinf(y).any():
        return True          # a window wholly in the (-inf) padding
    return False


# ---- strategies: shapes and hyper-parameters at the edges --------------------------------
SEEDS = st.integers(0, 2**16)


@st.composite
def int_or_pair(draw, a, b):
    """PyTorch's ways to give an (h, w) argument: an int when both agree, a tuple or a list."""
    if a == b and draw(st.booleans()):
        return a
    return draw(st.sampled_from([tuple, list]))((a, b))


@st.composite
def size_near(draw, extent, low=0):
    """An input size around ``extent`` (the padded input a kernel just fits): one less,
    exactly, or a little more."""
    return max(low, extent + draw(st.integers(-1, 3)))


@st.composite
def conv2d_draws(draw, transposed=False, one_d=False):
    groups = draw(st.integers(1, 3))
    wide = draw(st.sampled_from([1, 1, 1, 8]))   # C*KH*KW >= 64: other column layouts
    C, OC = groups * wide * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    N = draw(st.integers(0, 5))
    dims = 1 if one_d else 2
    k = [draw(st.integers(1, 5)) for _ in range(dims)]
    s = [draw(st.integers(1, 4)) for _ in range(dims)]
    d = [draw(st.integers(1, 3)) for _ in range(dims)]
    p = [draw(st.integers(0, 3)) for _ in range(dims)]
    rng = np.random.default_rng(draw(SEEDS))
    if transposed:
        size = [draw(st.integers(1, 4)) for _ in range(dims)]
        op = [draw(st.integers(0, max(si, di))) for si, di in zip(s, d)]
        w_shape = (C, OC // groups, *k)
    else:
        pad_kind = draw(st.sampled_from(["int", "same", "valid"]))
        if pad_kind != "int":
            p = [0] * dims if pad_kind == "valid" else [di * (ki - 1) // 2 for ki, di in zip(k, d)]
            if draw(st.booleans()):
                s = [1] * dims
        size = [draw(size_near(di * (ki - 1) + 1 - 2 * pi)) for ki, di, pi in zip(k, d, p)]
        w_shape = (OC, C // groups, *k)
    b = [rng.standard_normal(OC if not transposed else OC)] if draw(st.booleans()) else []
    arrays = [distinct(rng, (N, C, *size)), distinct(rng, w_shape)] + b
    if one_d:
        kw = dict(stride=s[0], padding=p[0], dilation=d[0], groups=groups)
        if draw(st.booleans()):
            kw = {name: (v,) if name != "groups" else v for name, v in kw.items()}
    else:
        kw = dict(stride=draw(int_or_pair(*s)), padding=draw(int_or_pair(*p)),
                  dilation=draw(int_or_pair(*d)), groups=groups)
    if transposed:
        kw["output_padding"] = draw(int_or_pair(*op)) if not one_d else op[0]
    elif pad_kind != "int":
        kw["padding"] = pad_kind
    return arrays, kw


@st.composite
def pool_draws(draw, op):
    one_d = op.endswith("1d")
    dims = 1 if one_d else 2
    k = [draw(st.integers(1, 5)) for _ in range(dims)]
    s = [draw(st.integers(1, 4)) for _ in range(dims)]
    d = [draw(st.integers(1, 3)) if op.startswith("max") else 1 for _ in range(dims)]
    p = [draw(st.integers(0, ki // 2 + 1)) for ki in k]
    ceil_mode = draw(st.booleans())
    size = [draw(size_near(di * (ki - 1) + 1 - 2 * pi, low=1)) for ki, di, pi in zip(k, d, p)]
    N, C = draw(st.integers(0, 5)), draw(st.integers(1, 2))
    rng = np.random.default_rng(draw(SEEDS))
    arrays = [distinct(rng, (N, C, *size))]
    pick = (lambda v: v[0]) if one_d else (lambda v: draw(int_or_pair(*v)))
    kw = dict(kernel_size=pick(k), padding=pick(p), ceil_mode=ceil_mode)
    if draw(st.booleans()):
        kw["stride"] = pick(s)
    if op.startswith("max"):
        kw.update(dilation=pick(d), return_indices=draw(st.booleans()))
    else:
        kw["count_include_pad"] = draw(st.booleans())
        if not one_d and draw(st.booleans()):
            kw["divisor_override"] = draw(st.integers(1, 5))
    return arrays, kw


@st.composite
def adaptive_draws(draw, op):
    H, W = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    OH, OW = draw(st.integers(0, 8)), draw(st.integers(0, 8))
    size = draw(st.sampled_from(["int", "pair", "none_h", "none_w"]))
    output_size = {"int": OH, "pair": (OH, OW), "none_h": (None, OW), "none_w": (OH, None)}
    rng = np.random.default_rng(draw(SEEDS))
    kw = dict(output_size=output_size[size])
    if op == "adaptive_max_pool2d":
        kw["return_indices"] = draw(st.booleans())
    return [distinct(rng, (draw(st.integers(1, 2)), 2, H, W))], kw


@st.composite
def unfold_draws(draw, folding=False, local=False):
    k = [draw(st.integers(1, 4)) for _ in range(2)]
    s = [draw(st.integers(1, 3)) for _ in range(2)]
    d = [draw(st.integers(1, 3)) for _ in range(2)]
    p = [draw(st.integers(0, 3)) for _ in range(2)]
    H, W = [draw(size_near(di * (ki - 1) + 1 - 2 * pi, low=1)) for ki, di, pi in zip(k, d, p)]
    N, C = draw(st.integers(0, 5)), draw(st.integers(1, 2))
    rng = np.random.default_rng(draw(SEEDS))
    kw = dict(kernel_size=draw(int_or_pair(*k)), dilation=draw(int_or_pair(*d)),
              padding=draw(int_or_pair(*p)), stride=draw(int_or_pair(*s)))
    OH, OW = [max(0, (n + 2 * pi - di * (ki - 1) - 1) // si + 1)
              for n, ki, di, pi, si in zip((H, W), k, d, p, s)]
    if folding:
        L = max(0, OH * OW + draw(st.sampled_from([0, 0, 0, -1, 1])))
        kw["output_size"] = draw(int_or_pair(H, W))
        return [distinct(rng, (N, C * k[0] * k[1], L))], kw
    if local:
        OC = draw(st.integers(1, 2))
        del kw["kernel_size"]
        w = distinct(rng, (OC, max(OH, 1), max(OW, 1), C, *k))
        b = [distinct(rng, (OC, max(OH, 1), max(OW, 1)))] if draw(st.booleans()) else []
        return [distinct(rng, (N, C, H, W)), w] + b, kw
    return [distinct(rng, (N, C, H, W))], kw


@st.composite
def pad_draws(draw):
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    n = draw(st.integers(1, ndim))
    amounts = [draw(st.integers(-4, 3)) for _ in range(2 * n)]
    rng = np.random.default_rng(draw(SEEDS))
    kw = dict(pad=draw(st.sampled_from([tuple, list]))(amounts))
    if draw(st.booleans()):
        kw["value"] = draw(st.sampled_from([0.0, 1.5, -2.0]))
    return [distinct(rng, shape)], kw


DRAWS = {
    "conv2d": conv2d_draws(),
    "conv1d": conv2d_draws(one_d=True),
    "conv_transpose2d": conv2d_draws(transposed=True),
    "max_pool2d": pool_draws("max_pool2d"),
    "max_pool1d": pool_draws("max_pool1d"),
    "avg_pool2d": pool_draws("avg_pool2d"),
    "avg_pool1d": pool_draws("avg_pool1d"),
    "adaptive_avg_pool2d": adaptive_draws("adaptive_avg_pool2d"),
    "adaptive_max_pool2d": adaptive_draws("adaptive_max_pool2d"),
    "unfold": unfold_draws(),
    "fold": unfold_draws(folding=True),
    "local2d": unfold_draws(local=True),
    "pad": pad_draws(),
}


@pytest.mark.parametrize("op", list(DRAWS))
def test_matches_torch_at_the_edges(op):
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(drawn=DRAWS[op], chunked=st.booleans(), layout=st.sampled_from(list(LAYOUTS)),
           wanted=st.lists(st.booleans(), min_size=3, max_size=3))
    def run(drawn, chunked, layout, wanted):
        # 1 byte: one image per chunk, for the ops whose columns are chunked
        problem = compare(op, *drawn, im2col_limit=1 if chunked else None, layout=layout,
                          wanted=wanted if any(wanted) else None)
        assert problem is None, problem
    run()


# ---- what the search found, as explicit rows --------------------------------------------
def _x(*shape):
    return distinct(np.random.default_rng(0), shape)


REGRESSIONS = [
    # nothing to pad: the result was x itself, so an in-place write to it changed x
    pytest.param("pad", [_x(2)], dict(pad=(0, 0)), id="pad_zero_widths"),
    pytest.param("pad", [_x(2, 3)], dict(pad=()), id="pad_no_widths"),
    # cropping only: the result was a view of x
    pytest.param("pad", [_x(2)], dict(pad=[-1, 0]), id="pad_crop_only"),
    pytest.param("pad", [_x(3, 4)], dict(pad=(-1, 0, 0, -1)), id="pad_crop_both_axes"),
    # an empty list for the stride means the kernel size (PyTorch's default), as () does
    pytest.param("max_pool2d", [_x(1, 2, 5, 5)], dict(kernel_size=2, stride=[]),
                 id="max_pool2d_stride_empty_list"),
    pytest.param("avg_pool2d", [_x(1, 2, 5, 5)], dict(kernel_size=(2, 3), stride=[]),
                 id="avg_pool2d_stride_empty_list"),
    pytest.param("max_pool1d", [_x(1, 2, 5)], dict(kernel_size=2, stride=[]),
                 id="max_pool1d_stride_empty_list"),
    pytest.param("avg_pool1d", [_x(1, 2, 5)], dict(kernel_size=2, stride=[]),
                 id="avg_pool1d_stride_empty_list"),
]


@pytest.mark.parametrize("op, arrays, kw", REGRESSIONS)
def test_regressions(op, arrays, kw):
    problem = compare(op, arrays, kw)
    assert problem is None, problem


# ---- the harness does fail ----------------------------------------------------------------
_avg_pool2d = F.avg_pool2d


def _off_by_a_little(x, **kw):
    return _avg_pool2d(x, **kw) * (1 + 1e-8)


def _wrong_gradient(x, **kw):
    y = _avg_pool2d(x, **kw)
    return y + (y - y.detach()) * 1e-8     # the same values, a gradient 1e-8 too large


def _raw_error(x, **kw):
    return np.empty(2)[5]


def _accepts_anything(x, **kw):
    return _avg_pool2d(x, 1)


def _shares_memory(x, **kw):
    return x


@pytest.mark.parametrize("wrong, kernel_size, found", [
    (_off_by_a_little, 2, "output 0"),
    (_wrong_gradient, 2, "gradient of input 0"),
    (_raw_error, 2, "unclear refusal IndexError"),
    (_accepts_anything, 5, "torch refuses"),
    (_shares_memory, 1, "shares memory"),
], ids=["value", "gradient", "raw_error", "accepts_what_torch_refuses", "shares_memory"])
def test_compare_finds_a_wrong_op(monkeypatch, wrong, kernel_size, found):
    monkeypatch.setattr(F, "avg_pool2d", wrong)
    problem = compare("avg_pool2d", [_x(1, 2, 4, 4)], dict(kernel_size=kernel_size))
    assert problem is not None and found in problem, problem
