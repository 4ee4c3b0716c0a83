"""Loss functions: hand-computed values, gradient checks, PyTorch agreement, errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import nn
from tinygrad_cnn.gradcheck import gradcheck


def t64(a, requires_grad=False):
    return tg.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


# ---- hand-computed values ------------------------------------------------------------
def test_cross_entropy_by_hand():
    logits = t64([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    target = np.array([2, 0])
    per = [math.log(math.e + math.e ** 2 + math.e ** 3) - 3, math.log(3)]
    assert nn.cross_entropy(logits, target, reduction="none").numpy() == pytest.approx(per)
    assert nn.cross_entropy(logits, target).item() == pytest.approx(sum(per) / 2)
    assert nn.cross_entropy(logits, target, reduction="sum").item() == pytest.approx(sum(per))
    # ignore_index: the mean is over the remaining sample only
    assert nn.cross_entropy(logits, [2, -100]).item() == pytest.approx(per[0])
    # label smoothing eps: (1 - eps) * nll + eps * mean over classes of -log p
    eps = 0.3
    logp = logits.log_softmax(axis=1).numpy()
    expected = (1 - eps) * per[0] + eps * -logp[0].mean()
    assert nn.cross_entropy(logits[:1], [2], label_smoothing=eps).item() == pytest.approx(expected)


def test_binary_losses_by_hand():
    x, y = t64([0.0, 2.0, -1.0]), t64([1.0, 0.0, 1.0])
    p = 1 / (1 + np.exp(-x.numpy()))
    bce = -(y.numpy() * np.log(p) + (1 - y.numpy()) * np.log(1 - p))
    assert nn.binary_cross_entropy_with_logits(x, y, reduction="none").numpy() == pytest.approx(bce)
    assert nn.binary_cross_entropy(tg.tensor(p), y).item() == pytest.approx(bce.mean())
    assert nn.mse_loss(x, y).item() == pytest.approx(np.mean((x.numpy() - y.numpy()) ** 2))
    l1 = np.abs(x.numpy() - y.numpy()).sum()
    assert nn.l1_loss(x, y, reduction="sum").item() == pytest.approx(l1)


def test_bce_with_logits_gradient_at_zero():
    # max(x, 0) and |x| have kinks at 0 that cancel in the loss; the gradient
    # there must be sigmoid(0) - y = 0.5 - y, not what the pieces' subgradients give.
    x = t64([0.0, 0.0], requires_grad=True)
    nn.binary_cross_entropy_with_logits(x, [1.0, 0.0], reduction="sum").backward()
    assert x.grad.numpy() == pytest.approx([-0.5, 0.5])


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-7), ("float32", 1e-6)])
def test_bce_gradient_at_probabilities_0_and_1_is_finite(dtype, rtol):
    """The clamped logs make the loss finite at p = 0 and 1; the gradient is PyTorch's
    (p - y) / max(p (1 - p), 1e-12), large but finite, not 0 * inf = NaN."""
    p = tg.tensor(np.array([0.0, 1.0, 0.3, 1.0], dtype=dtype), requires_grad=True)
    y = tg.tensor(np.array([1.0, 0.0, 1.0, 1.0], dtype=dtype), requires_grad=True)
    loss = nn.binary_cross_entropy(p, y, reduction="sum")
    assert loss.item() == pytest.approx(100.0 + 100.0 - math.log(0.3) + 0.0, rel=rtol)
    loss.backward()
    pv, yv = p.numpy(), y.numpy()
    expected = (pv - yv) / np.maximum(pv * (1 - pv), 1e-12)
    np.testing.assert_allclose(p.grad.numpy(), expected, rtol=rtol)
    # dl/dy = max(log(1 - p), -100) - max(log p, -100): the slope of the clamped loss,
    # exactly 100 in float32 too (e^-100 is a float32 subnormal: its log was -99.98)
    np.testing.assert_allclose(y.grad.numpy(), [100.0, -100.0, math.log(0.7 / 0.3), -100.0],
                               rtol=rtol)


def test_cross_entropy_with_every_target_ignored():
    """As PyTorch: the mean over no elements is NaN, but no gradient flows (a NaN
    gradient would poison every weight)."""
    x = t64(np.random.default_rng(0).standard_normal((2, 3)), requires_grad=True)
    loss = nn.cross_entropy(x, [-100, -100])
    assert math.isnan(loss.item())
    loss.backward()
    assert np.array_equal(x.grad.numpy(), np.zeros((2, 3)))
    weighted = nn.cross_entropy(x, [1, 2], weight=[0.0, 1.0, 0.0])   # only sample 0 counts
    assert weighted.item() == pytest.approx(-x.log_softmax(1).numpy()[0, 1])


def test_large_logits_are_stable():
    big = t64([[1000.0, 0.0, -1000.0], [-5e4, 5e4, 0.0]], requires_grad=True)
    loss = nn.cross_entropy(big, [2, 1], reduction="none")
    assert loss.numpy() == pytest.approx([2000.0, 0.0])
    loss.sum().backward()
    assert np.isfinite(big.grad.numpy()).all()
    assert big.grad.numpy()[0] == pytest.approx([1.0, 0.0, -1.0])
    x = tg.tensor([-1000.0, 1000.0, 1000.0, -1000.0], requires_grad=True)  # float32
    loss = nn.binary_cross_entropy_with_logits(x, [0.0, 1.0, 0.0, 1.0], reduction="none")
    assert loss.numpy() == pytest.approx([0.0, 0.0, 1000.0, 1000.0])
    loss.sum().backward()
    assert x.grad.numpy() == pytest.approx([0.0, 0.0, 1.0, -1.0])


INF, NAN = math.inf, math.nan
# (loss, input with a non-finite row where the target is ignored, the same input with
# finite values there, target, keyword arguments).  Masked or padded positions often
# hold -inf logits; ignoring them must leave the loss and the other gradients finite.
IGNORED_NONFINITE_CASES = [
    ("cross_entropy", [[-INF, -INF, -INF], [0.0, 1.0, 2.0]], [[0.0, 0.0, 0.0], [0.0, 1.0, 2.0]],
     [-100, 1], {}),
    ("cross_entropy", [[NAN, 0.0, 3.0], [0.0, 1.0, 2.0]], [[0.0, 0.0, 3.0], [0.0, 1.0, 2.0]],
     [-100, 1], {}),
    ("cross_entropy", [[-INF, 0.0, 3.0], [0.0, 1.0, 2.0]], [[0.0, 0.0, 3.0], [0.0, 1.0, 2.0]],
     [-100, 1], {"label_smoothing": 0.1}),
    ("cross_entropy", [[-INF, 0.0, 3.0], [0.0, 1.0, 2.0]], [[0.0, 0.0, 3.0], [0.0, 1.0, 2.0]],
     [-100, 1], {"label_smoothing": 0.1, "weight": [1.0, 2.0, 3.0], "reduction": "sum"}),
    ("cross_entropy", [[[-INF, 0.0], [-INF, 1.0], [-INF, 2.0]]],
     [[[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]]], [[-100, 1]], {"label_smoothing": 0.2}),
    ("nll_loss", [[-INF, -INF, 0.0], [0.0, -1.0, -2.0]], [[0.0, -1.0, 0.0], [0.0, -1.0, -2.0]],
     [-100, 1], {"reduction": "none"}),
    ("nll_loss", [[-INF, -INF, 0.0], [0.0, -1.0, -2.0]], [[0.0, -1.0, 0.0], [0.0, -1.0, -2.0]],
     [5, 1], {"ignore_index": 5, "weight": [0.5, 2.0, 1.0]}),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,x,x_finite,target,kwargs", IGNORED_NONFINITE_CASES)
def test_ignored_targets_do_not_see_their_input(name, x, x_finite, target, kwargs, dtype):
    """An ignored element's input does not matter: the loss and the gradients of the
    other elements are those of a finite input there (0 * -inf gave a NaN loss)."""
    fn = getattr(nn, name)
    results = []
    for values in (x, x_finite):
        xt = tg.tensor(np.array(values, dtype=dtype), requires_grad=True)
        loss = fn(xt, target, **kwargs)
        (grad_x,) = tg.grad(loss.sum(), [xt])
        results.append((loss.numpy(), grad_x.numpy()))
    (loss, grad_x), (expected, expected_grad) = results
    assert np.isfinite(loss).all()
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    # The samples that are not ignored: their class vectors (axis 1) are the same.
    kept = (np.array(x) == np.array(x_finite)).all(axis=1, keepdims=True)
    kept = np.broadcast_to(kept, grad_x.shape)
    np.testing.assert_allclose(grad_x[kept], expected_grad[kept], rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,x,x_finite,target,kwargs", IGNORED_NONFINITE_CASES)
def test_ignored_nonfinite_inputs_match_torch(name, x, x_finite, target, kwargs, dtype):
    torch = pytest.importorskip("torch")
    x = np.array(x, dtype=dtype)
    torch_kwargs = dict(kwargs)
    if "weight" in kwargs:
        torch_kwargs["weight"] = torch.tensor(np.array(kwargs["weight"], dtype=dtype))
    ours = tg.tensor(x, requires_grad=True)
    loss = getattr(nn, name)(ours, target, **kwargs)
    (grad_x,) = tg.grad(loss.sum(), [ours])
    theirs = torch.tensor(x, requires_grad=True)
    torch_loss = getattr(torch.nn.functional, name)(theirs, torch.tensor(target),
                                                    **torch_kwargs)
    (torch_grad,) = torch.autograd.grad(torch_loss.sum(), [theirs])
    # NaN where PyTorch has NaN: the gradient of an all -inf (or NaN) row, as in softmax
    np.testing.assert_allclose(loss.numpy(), torch_loss.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(grad_x.numpy(), torch_grad.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(0, 3), (2, 3, 0)])
def test_soft_target_cross_entropy_over_no_samples(shape):
    # The mean over no samples is NaN, as on the class-index path and in PyTorch (it was 0).
    x = t64(np.zeros(shape), requires_grad=True)
    loss = nn.cross_entropy(x, np.zeros(shape))
    assert math.isnan(loss.item())
    assert nn.cross_entropy(x, np.zeros(shape), reduction="sum").item() == 0.0


# ---- gradient checks -----------------------------------------------------------------
def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


GRAD_CASES = {
    "ce": lambda x: nn.cross_entropy(x, [0, 2, 1, 2]),
    "ce-sum-weight": lambda x: nn.cross_entropy(x, [0, 2, 1, 2], weight=[0.2, 1.0, 3.0],
                                                reduction="sum"),
    "ce-smooth-ignore-weight": lambda x: nn.cross_entropy(
        x, [0, -100, 1, 2], weight=[0.5, 1.5, 2.0], label_smoothing=0.2),
    "ce-none": lambda x: nn.cross_entropy(x, [1, 1, 0, 2], reduction="none"),
    "ce-soft": lambda x: nn.cross_entropy(x, np.full((4, 3), 1 / 3) + [0.1, -0.1, 0.0],
                                          label_smoothing=0.1),
    "nll": lambda x: nn.nll_loss(x.log_softmax(axis=1), [2, 0, 1, 1], weight=[1.0, 2.0, 0.5]),
    "mse": lambda x: nn.mse_loss(x, _rand(4, 3, seed=1)),
    "l1": lambda x: nn.l1_loss(x, _rand(4, 3, seed=1) + 0.5),
    "bce-logits": lambda x: nn.binary_cross_entropy_with_logits(
        x, np.random.default_rng(2).random((4, 3)), weight=[1.0, 2.0, 0.5],
        pos_weight=[3.0, 1.0, 0.5]),
    "bce": lambda x: nn.binary_cross_entropy(x.sigmoid(), np.random.default_rng(2).random((4, 3))),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_loss_gradcheck(name):
    x = t64(_rand(4, 3) * 2, requires_grad=True)
    assert gradcheck(GRAD_CASES[name], (x,))


def test_cross_entropy_spatial_gradcheck():
    x = t64(_rand(2, 3, 2, 2), requires_grad=True)
    target = np.array([[[0, 1], [2, -100]], [[1, 1], [0, 2]]])
    assert gradcheck(lambda x: nn.cross_entropy(x, target, label_smoothing=0.1), (x,))


def test_targets_of_mse_and_bce_are_differentiable():
    x, y = t64(_rand(3, 2), True), t64(np.random.default_rng(1).random((3, 2)), True)
    assert gradcheck(lambda x, y: nn.mse_loss(x, y), (x, y))
    assert gradcheck(lambda x, y: nn.binary_cross_entropy_with_logits(x, y, pos_weight=[2.0, 0.5]),
                     (x, y))


# ---- against PyTorch -----------------------------------------------------------------
CE_CASES = [
    # (input shape, reduction, label_smoothing, weighted, ignore some)
    ((5, 4), "mean", 0.0, False, False),
    ((5, 4), "sum", 0.0, True, False),
    ((5, 4), "none", 0.1, True, True),
    ((5, 4), "mean", 0.2, False, True),
    ((5, 4), "mean", 0.2, True, True),
    ((2, 3, 4, 2), "mean", 0.0, True, True),
    ((2, 3, 4, 2), "none", 0.3, False, True),
    ((2, 3, 5), "sum", 0.1, True, False),
    ((4,), "none", 0.1, True, False),
]


@pytest.mark.parametrize("shape,reduction,smoothing,weighted,ignore", CE_CASES)
def test_cross_entropy_matches_torch(shape, reduction, smoothing, weighted, ignore):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(sum(shape))
    logits = rng.standard_normal(shape) * 3
    C = shape[1] if len(shape) > 1 else shape[0]
    target = rng.integers(0, C, size=(shape[0],) + shape[2:] if len(shape) > 1 else ())
    if ignore:
        target = np.where(rng.random(target.shape) < 0.3, 7 if len(shape) > 1 else 1, target)
        ignore_index = 7 if len(shape) > 1 else 1
    else:
        ignore_index = -100
    weight = rng.random(C) + 0.5 if weighted else None
    kwargs = dict(reduction=reduction, label_smoothing=smoothing, ignore_index=ignore_index)
    x = t64(logits, requires_grad=True)
    ours = nn.cross_entropy(x, target, weight=weight, **kwargs)
    tx = torch.tensor(logits, requires_grad=True)
    theirs = torch.nn.functional.cross_entropy(
        tx, torch.tensor(target), weight=None if weight is None else torch.tensor(weight),
        **kwargs)
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rng.standard_normal(theirs.shape)
    ours.backward(t64(g))
    theirs.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction,smoothing,weighted", [("mean", 0.0, False),
                                                          ("sum", 0.2, True),
                                                          ("none", 0.1, False)])
def test_soft_target_cross_entropy_matches_torch(reduction, smoothing, weighted):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((4, 3, 2))
    probs = rng.random((4, 3, 2))
    probs /= probs.sum(axis=1, keepdims=True)
    weight = rng.random(3) if weighted else None
    ours = nn.cross_entropy(t64(logits), t64(probs), weight=weight, reduction=reduction,
                            label_smoothing=smoothing)
    theirs = torch.nn.functional.cross_entropy(
        torch.tensor(logits), torch.tensor(probs), reduction=reduction,
        weight=None if weight is None else torch.tensor(weight), label_smoothing=smoothing)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-10)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_mse_bce_match_torch(reduction):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 4)) * 4
    y = rng.random((6, 4))
    cls = rng.integers(0, 4, 6)
    w, pw = rng.random(4) + 0.1, rng.random(4) * 3
    pairs = [
        (nn.nll_loss(t64(x), cls, weight=w, reduction=reduction),
         F.nll_loss(torch.tensor(x), torch.tensor(cls), weight=torch.tensor(w),
                    reduction=reduction)),
        (nn.mse_loss(t64(x), y, reduction=reduction),
         F.mse_loss(torch.tensor(x), torch.tensor(y), reduction=reduction)),
        (nn.l1_loss(t64(x), y, reduction=reduction),
         F.l1_loss(torch.tensor(x), torch.tensor(y), reduction=reduction)),
        (nn.binary_cross_entropy_with_logits(t64(x), y, weight=w, pos_weight=pw,
                                             reduction=reduction),
         F.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(y),
                                            weight=torch.tensor(w), pos_weight=torch.tensor(pw),
                                            reduction=reduction)),
        (nn.binary_cross_entropy(t64(y), np.round(y), reduction=reduction),
         F.binary_cross_entropy(torch.tensor(y), torch.tensor(np.round(y)), reduction=reduction)),
    ]
    for ours, theirs in pairs:
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-10, atol=1e-12)


# ---- module wrappers, devices, errors -------------------------------------------------
def test_loss_modules_match_functions():
    x = t64(_rand(4, 3))
    target = np.array([0, 2, 1, 1])
    w = np.array([1.0, 2.0, 3.0])
    assert nn.CrossEntropyLoss(weight=w, label_smoothing=0.1)(x, target).item() == \
        pytest.approx(nn.cross_entropy(x, target, weight=w, label_smoothing=0.1).item())
    assert nn.NLLLoss(reduction="sum")(x, target).item() == \
        pytest.approx(nn.nll_loss(x, target, reduction="sum").item())
    assert nn.MSELoss()(x, x * 2).item() == pytest.approx(nn.mse_loss(x, x * 2).item())
    y = (x.numpy() > 0).astype(np.float64)
    assert nn.BCEWithLogitsLoss(pos_weight=[2.0, 1.0, 1.0])(x, y).item() == pytest.approx(
        nn.binary_cross_entropy_with_logits(x, y, pos_weight=[2.0, 1.0, 1.0]).item())
    assert repr(nn.CrossEntropyLoss(label_smoothing=0.1)) == "CrossEntropyLoss(label_smoothing=0.1)"
    # the class weight is a buffer: it follows the module to another dtype/device
    assert list(dict(nn.CrossEntropyLoss(weight=w).named_buffers())) == ["weight"]


def test_loss_modules_keep_the_precision_of_their_weights():
    # The functional form casts the weights to the input's dtype; a module that
    # rounded them to float32 first gave a different float64 loss.
    x = t64(_rand(4, 3))
    target = np.array([0, 2, 1, 1])
    y = (x.numpy() > 0).astype(np.float64)
    w, pos = np.array([0.1, 0.7, 0.3]), np.array([1 / 3, 0.7, 2.1])
    pairs = [
        (nn.CrossEntropyLoss(weight=w)(x, target), nn.cross_entropy(x, target, weight=w)),
        (nn.CrossEntropyLoss(weight=list(w))(x, target), nn.cross_entropy(x, target, weight=w)),
        (nn.NLLLoss(weight=w)(x, target), nn.nll_loss(x, target, weight=w)),
        (nn.BCEWithLogitsLoss(weight=w, pos_weight=pos)(x, y),
         nn.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pos)),
        (nn.BCEWithLogitsLoss(pos_weight=1 / 3)(x, y),
         nn.binary_cross_entropy_with_logits(x, y, pos_weight=1 / 3)),
        (nn.BCELoss(weight=w)(x.sigmoid(), y), nn.binary_cross_entropy(x.sigmoid(), y, weight=w)),
    ]
    for module_loss, functional_loss in pairs:
        assert module_loss.item() == functional_loss.item()
    assert nn.CrossEntropyLoss(weight=w).weight.dtype == np.float64
    assert nn.CrossEntropyLoss(weight=w.astype(np.float32)).weight.dtype == np.float32
    assert nn.CrossEntropyLoss(weight=[1, 2, 3]).weight.dtype == np.float64   # ints: exact


def test_targets_as_tensor_array_or_list(device):
    x = tg.tensor(_rand(3, 4), dtype="float32", device=device)
    expected = nn.cross_entropy(x, np.array([0, 3, 1])).item()
    assert nn.cross_entropy(x, [0, 3, 1]).item() == pytest.approx(expected)
    as_tensor = tg.tensor([0, 3, 1], device=device)
    assert nn.cross_entropy(x, as_tensor).item() == pytest.approx(expected)
    assert nn.cross_entropy(x, tg.tensor([0, 3, 1], dtype="int32", device=device)).item() == \
        pytest.approx(expected)


ERROR_CASES = [
    # (call, exception, words the message must contain)
    (lambda x: nn.cross_entropy(x, [0, 1]), ValueError, ["(2,)", "(3, 4)", "(3,)"]),
    (lambda x: nn.cross_entropy(x, [[0], [1], [2]]), ValueError, ["(3, 1)", "(3, 4)"]),
    (lambda x: nn.cross_entropy(x, np.array([0.0, 1.0, 2.0])), TypeError, ["float64", "integer"]),
    (lambda x: nn.cross_entropy(x, [0, 4, 1]), IndexError, ["4", "[0, 4)", "(3, 4)"]),
    (lambda x: nn.cross_entropy(x, [0, -1, 1]), IndexError, ["-1", "[0, 4)"]),
    (lambda x: nn.cross_entropy(x, [0, 1, 2], reduction="avg"), ValueError, ["reduction", "avg"]),
    (lambda x: nn.cross_entropy(x, [0, 1, 2], weight=[1.0, 2.0]), ValueError, ["(4,)", "(2,)"]),
    (lambda x: nn.cross_entropy(x, [0, 1, 2], label_smoothing=1.5), ValueError,
     ["label_smoothing must be a probability in [0, 1], got 1.5"]),
    (lambda x: nn.cross_entropy(x, [0, 1, 2], label_smoothing=float("nan")), ValueError,
     ["cross_entropy: label_smoothing must be a probability in [0, 1], got nan"]),
    (lambda x: nn.cross_entropy(x, [0, 1, 2], ignore_index=True), TypeError,
     ["cross_entropy: ignore_index must be an int, got True (bool)"]),
    # probability targets: the smoothed target would hold negative "probabilities"
    (lambda x: nn.cross_entropy(x, np.full((3, 4), 0.25), label_smoothing=1.5), ValueError,
     ["cross_entropy: label_smoothing must be a probability in [0, 1], got 1.5"]),
    (lambda x: nn.cross_entropy(x, np.full((3, 4), 0.25), label_smoothing=-0.1), ValueError,
     ["cross_entropy: label_smoothing must be a probability in [0, 1], got -0.1"]),
    (lambda x: nn.cross_entropy(x, np.full((3, 4), 0.25), ignore_index=0), ValueError,
     ["ignore_index=0", "float target"]),
    (lambda x: nn.CrossEntropyLoss(label_smoothing=1.5), ValueError,
     ["CrossEntropyLoss: label_smoothing must be a probability in [0, 1], got 1.5"]),
    (lambda x: nn.CrossEntropyLoss(label_smoothing="0.1"), TypeError,
     ["label_smoothing must be a probability in [0, 1], got '0.1' (str)"]),
    (lambda x: nn.mse_loss(x, np.zeros((3, 1))), ValueError, ["(3, 4)", "(3, 1)"]),
    (lambda x: nn.l1_loss(x, np.zeros((3, 1))), ValueError, ["(3, 4)", "(3, 1)"]),
    (lambda x: nn.binary_cross_entropy(x.sigmoid(), np.zeros((1, 4))), ValueError,
     ["(3, 4)", "(1, 4)"]),
    # an unbatched input (C,) takes a scalar target; one of a single element is no scalar
    (lambda x: nn.cross_entropy(x[0], [[1]]), ValueError, ["(4,)", "scalar target", "(1, 1)"]),
    (lambda x: nn.binary_cross_entropy_with_logits(x, np.zeros(4)), ValueError, ["(3, 4)", "(4,)"]),
    (lambda x: nn.binary_cross_entropy(x, np.zeros((3, 4))), ValueError, ["[0, 1]"]),
    (lambda x: nn.cross_entropy(x.numpy(), [0, 1, 2]), TypeError, ["Tensor"]),
    # no classes at all: the class index is out of range (it was "max over an empty axis")
    (lambda x: nn.cross_entropy(x[:, :0], [0, 0, 0]), IndexError, ["[0, 0)", "(3, 0)"]),
    # nor any class probabilities (it was a raw ZeroDivisionError)
    (lambda x: nn.cross_entropy(x[:, :0], np.zeros((3, 0))), ValueError,
     ["(3, 0)", "no classes"]),
    (lambda x: nn.cross_entropy(x[0, :0], np.zeros(0)), ValueError, ["(0,)", "no classes"]),
]


@pytest.mark.parametrize("call,error,words", ERROR_CASES)
def test_loss_errors(call, error, words):
    x = t64(_rand(3, 4) * 2)
    with pytest.raises(error) as info:
        call(x)
    for w in words:
        assert w in str(info.value)


BCE = nn.binary_cross_entropy
BCE_LOGITS = nn.binary_cross_entropy_with_logits


@pytest.mark.parametrize("call, words", [
    # A weight with more or larger axes than the input would broadcast the loss
    # itself: "sum" gave 8.32 (four copies) here instead of 2.08.
    (lambda p, y: BCE(p, y, weight=tg.ones(4, 3), reduction="sum"), ["weight", "(4, 3)", "(3,)"]),
    (lambda p, y: BCE_LOGITS(p, y, weight=tg.ones(2, 3)), ["weight", "(2, 3)", "(3,)"]),
    (lambda p, y: BCE_LOGITS(p, y, pos_weight=tg.ones(2, 3)), ["pos_weight", "(2, 3)", "(3,)"]),
    (lambda p, y: BCE_LOGITS(p, y, pos_weight=tg.ones(3, 1)), ["pos_weight", "(3, 1)"]),
    # Shapes that do not broadcast at all name the argument too, not "Mul".
    (lambda p, y: BCE_LOGITS(p, y, weight=tg.ones(4)), ["weight", "(4,)", "(3,)"]),
    (lambda p, y: nn.BCELoss(weight=np.ones(4))(p, y), ["weight", "(4,)", "(3,)"]),
    # Targets are probabilities, as in PyTorch.
    (lambda p, y: BCE(p, tg.tensor([2.0, 0.5, -1.0])), ["target", "[0, 1]"]),
    # NaN is no probability either (it gave a NaN loss); PyTorch refuses both.
    (lambda p, y: BCE(p, tg.tensor([0.5, float("nan"), 1.0])), ["target", "[0, 1]", "NaN"]),
    (lambda p, y: BCE(tg.tensor([0.5, float("nan"), 1.0]), y), ["input", "[0, 1]", "NaN"]),
], ids=["bce-weight-larger", "logits-weight-larger", "pos-weight-larger", "pos-weight-column",
        "logits-weight-mismatch", "module-weight-mismatch", "bce-target-range", "bce-target-nan",
        "bce-input-nan"])
def test_binary_loss_argument_errors(call, words):
    with pytest.raises(ValueError) as info:
        call(tg.full((3,), 0.5), tg.ones(3))
    for w in words:
        assert w in str(info.value)


def test_binary_loss_weights_that_broadcast_to_the_input_are_fine():
    p, y = tg.full((2, 3), 0.5), tg.ones(2, 3)
    full = BCE(p, y, reduction="sum").item()
    assert BCE(p, y, weight=tg.ones(3), reduction="sum").item() == pytest.approx(full)
    assert BCE(p, y, weight=tg.ones(2, 1), reduction="sum").item() == pytest.approx(full)
    assert BCE_LOGITS(p, y, pos_weight=tg.ones(3)).shape == ()
    assert BCE(p, tg.tensor([[0.0, 1.0, 0.25]] * 2)).shape == ()


def test_out_of_range_class_on_a_deferring_backend():
    strict = pytest.importorskip("strict_backend")
    x = tg.tensor(_rand(3, 4), device="strict")
    loss = nn.cross_entropy(x, tg.tensor([0, 9, 1], device="strict"))  # no synchronisation
    with pytest.raises(IndexError, match=r"outside \[0, 4\)"):
        loss.item()
    assert strict is not None


@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss", "mse_loss", "l1_loss",
                                  "binary_cross_entropy", "binary_cross_entropy_with_logits",
                                  "smooth_l1_loss", "huber_loss", "kl_div"])
def test_functional_offers_the_losses_where_torch_has_them(name):
    # torch.nn.functional.cross_entropy is where a PyTorch user looks: the same function.
    assert getattr(tg.functional, name) is getattr(nn, name)
    assert name in tg.functional.__all__


# ---- smooth_l1_loss, huber_loss, kl_div ------------------------------------------------
def _log_probs(shape, seed):
    z = np.random.default_rng(seed).standard_normal(shape)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


REGRESSION_CASES = {
    # differences spread over both sides of beta / delta (drawn, so none sits on a kink)
    "smooth_l1": lambda x, y: nn.smooth_l1_loss(x, y),
    "smooth_l1-beta-sum": lambda x, y: nn.smooth_l1_loss(x, y, reduction="sum", beta=0.5),
    "smooth_l1-beta0": lambda x, y: nn.smooth_l1_loss(x, y, beta=0.0),
    "huber": lambda x, y: nn.huber_loss(x, y, reduction="none"),
    "huber-delta": lambda x, y: nn.huber_loss(x, y, delta=2.0),
    "kl_div-batchmean": lambda x, y: nn.kl_div(x, y.softmax(-1), reduction="batchmean"),
    "kl_div-none": lambda x, y: nn.kl_div(x, y.softmax(-1), reduction="none"),
    "kl_div-log-target": lambda x, y: nn.kl_div(x, y.log_softmax(-1), log_target=True,
                                                reduction="sum"),
}


@pytest.mark.parametrize("name", sorted(REGRESSION_CASES))
def test_regression_and_kl_losses_gradcheck_and_gradgradcheck(name, device):
    """Both arguments differentiable, in float64, random upstream gradients (gradcheck's),
    second derivatives too."""
    from tinygrad_cnn import gradgradcheck
    x = tg.tensor(_rand(4, 3) * 2, dtype=tg.float64, requires_grad=True, device=device)
    y = tg.tensor(_rand(4, 3, seed=1) * 2, dtype=tg.float64, requires_grad=True, device=device)
    assert gradcheck(REGRESSION_CASES[name], (x, y))
    assert gradgradcheck(REGRESSION_CASES[name], (x, y))


TORCH_LOSSES = [
    ("smooth_l1_loss", {}), ("smooth_l1_loss", {"beta": 0.3}), ("smooth_l1_loss", {"beta": 0.0}),
    ("huber_loss", {}), ("huber_loss", {"delta": 0.4}),
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name, kwargs", TORCH_LOSSES)
def test_smooth_l1_and_huber_match_torch(name, kwargs, reduction):
    torch = pytest.importorskip("torch")
    a, b = _rand(5, 3) * 2, _rand(5, 3, seed=1) * 2
    x, y = t64(a, requires_grad=True), t64(b, requires_grad=True)
    ours = getattr(nn, name)(x, y, reduction=reduction, **kwargs)
    tx, ty = (torch.tensor(v, requires_grad=True) for v in (a, b))
    theirs = getattr(torch.nn.functional, name)(tx, ty, reduction=reduction, **kwargs)
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-13)
    upstream = np.random.default_rng(3).standard_normal(ours.shape)
    ours.backward(tg.tensor(upstream))
    theirs.backward(torch.tensor(upstream))
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-13)
    np.testing.assert_allclose(y.grad.numpy(), ty.grad.numpy(), rtol=1e-13)
    module = {"smooth_l1_loss": nn.SmoothL1Loss, "huber_loss": nn.HuberLoss}[name]
    np.testing.assert_allclose(module(reduction=reduction, **kwargs)(x, y).numpy(),
                               ours.numpy(), rtol=1e-15)


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "batchmean", "sum", "none"])
def test_kl_div_matches_torch_with_zero_targets(reduction, log_target):
    torch = pytest.importorskip("torch")
    x = _log_probs((4, 3), 0)
    target = np.exp(_log_probs((4, 3), 1))
    if not log_target:
        target[0, 1] = 0.0   # 0 log 0 = 0: no NaN in value or gradient
    target = np.log(target) if log_target else target
    ours_x, ours_t = t64(x, requires_grad=True), t64(target, requires_grad=True)
    ours = nn.kl_div(ours_x, ours_t, reduction=reduction, log_target=log_target)
    tx, tt = (torch.tensor(v, requires_grad=True) for v in (x, target))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch warns about "mean"
        theirs = torch.nn.functional.kl_div(tx, tt, reduction=reduction, log_target=log_target)
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-13)
    upstream = np.random.default_rng(3).standard_normal(ours.shape)
    ours.backward(tg.tensor(upstream))
    theirs.backward(torch.tensor(upstream))
    np.testing.assert_allclose(ours_x.grad.numpy(), tx.grad.numpy(), rtol=1e-13)
    ours_grad, their_grad = ours_t.grad.numpy(), tt.grad.numpy()
    if not log_target:
        # At the target 0, 0 log 0 adds nothing to the gradient (torch: log 0 + 1 = -inf),
        # which is -x there: finite, where torch's would put -inf into a learnt target.
        assert not np.isfinite(their_grad[0, 1])
        scale = {"mean": 1 / 12, "batchmean": 1 / 4}.get(reduction, 1.0)
        u = upstream if reduction == "none" else upstream[()]
        u = u[0, 1] if reduction == "none" else u
        assert ours_grad[0, 1] == pytest.approx(-x[0, 1] * u * scale, rel=1e-13)
        ours_grad[0, 1] = their_grad[0, 1] = 0.0
    np.testing.assert_allclose(ours_grad, their_grad, rtol=1e-13)
    module = nn.KLDivLoss(reduction=reduction, log_target=log_target)
    np.testing.assert_allclose(module(ours_x, ours_t).numpy(), ours.numpy(), rtol=1e-15)


@pytest.mark.parametrize("reduction", ["none", "sum", "batchmean"])
def test_kl_div_of_a_negative_target_is_nan_as_in_torch(reduction):
    """A negative target is no probability: its term is NaN (PyTorch's xlogy), not the
    -target * input left when its log was taken as 0; the input's gradient there is
    still -target, the target's NaN."""
    torch = pytest.importorskip("torch")
    x, target = _log_probs((2, 3), 0), np.array([[0.5, -0.2, 0.7], [0.1, 0.0, 0.9]])
    ours_x, ours_t = t64(x, requires_grad=True), t64(target, requires_grad=True)
    tx, tt = (torch.tensor(v, requires_grad=True) for v in (x, target))
    ours = nn.kl_div(ours_x, ours_t, reduction=reduction)
    theirs = torch.nn.functional.kl_div(tx, tt, reduction=reduction)
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-13)
    assert np.isnan(ours.numpy()).any()
    upstream = np.ones(ours.shape)
    ours.backward(tg.tensor(upstream))
    theirs.backward(torch.tensor(upstream))
    np.testing.assert_allclose(ours_x.grad.numpy(), tx.grad.numpy(), rtol=1e-13)
    assert ours_x.grad.numpy()[0, 1] == 0.2 / (2 if reduction == "batchmean" else 1)
    assert np.isnan(ours_t.grad.numpy()[0, 1]) and np.isnan(tt.grad.numpy()[0, 1])
    # the other targets' gradients as torch's (at the target 0 torch's is not finite)
    keep = np.ones((2, 3), bool)
    keep[0, 1] = keep[1, 1] = False
    np.testing.assert_allclose(ours_t.grad.numpy()[keep], tt.grad.numpy()[keep], rtol=1e-13)


def test_kl_div_batchmean_is_the_kl_divergence_per_sample():
    p, q = np.array([[0.5, 0.5], [0.9, 0.1]]), np.array([[0.25, 0.75], [0.5, 0.5]])
    kl = (p * np.log(p / q)).sum(axis=1)
    assert nn.kl_div(t64(np.log(q)), t64(p), reduction="batchmean").item() == \
        pytest.approx(kl.mean())
    assert nn.kl_div(t64(np.log(q)), t64(p)).item() == pytest.approx(kl.sum() / 4)


@pytest.mark.parametrize("call, error, words", [
    ("nn.smooth_l1_loss(x, y, beta=-1.0)", ValueError, "smooth_l1_loss: beta"),
    ("nn.huber_loss(x, y, delta=0.0)", ValueError, "huber_loss: delta"),
    ("nn.huber_loss(x, y[:, :2])", ValueError, r"huber_loss: input of shape \(4, 3\) and "
                                               r"target of shape \(4, 2\) differ"),
    ("nn.smooth_l1_loss(x, y, reduction='batchmean')", ValueError,
     "smooth_l1_loss: reduction must be one of"),
    ("nn.kl_div(x, y, reduction='avg')", ValueError,
     r"kl_div: reduction must be one of \('mean', 'sum', 'none', 'batchmean'\), got 'avg'"),
    ("nn.kl_div(x, y, log_target=1)", TypeError, "log_target"),
    ("nn.kl_div(x.astype('int64'), y)", TypeError, "kl_div: the input must be floating-point, "
                                                   "got dtype int64"),
    ("nn.KLDivLoss(reduction='avg')", ValueError, "KLDivLoss: reduction must be one of"),
    ("nn.HuberLoss(delta=-1)", ValueError, "HuberLoss: delta"),
])
def test_regression_and_kl_loss_errors(call, error, words):
    x, y = t64(_rand(4, 3)), t64(_rand(4, 3, seed=1))
    with pytest.raises(error, match=words):
        eval(call, {"nn": nn, "x": x, "y": y})
