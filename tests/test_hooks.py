"""Hooks: ``Tensor.register_hook`` in the reverse sweep (and in ``tg.grad``), and the
forward and backward hooks of ``nn.Module``, against the gradients computed without
hooks and, where it is installed, against PyTorch."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import nn


def _t(values, device="cpu", requires_grad=True):
    return tg.tensor(np.asarray(values, dtype=np.float64), requires_grad=requires_grad,
                     device=device)


X = [0.5, -1.25, 2.0]


def _graph(x):
    """A few ops in which ``h`` is used three times: (loss, h)."""
    h = x.sin() * 3
    loss = (h * h + h.exp()).sum()
    return loss, h


def _reference(device):
    """The gradients of ``h`` and ``x`` in :func:`_graph`, computed without hooks."""
    x = _t(X, device)
    loss, h = _graph(x)
    h.retain_grad()
    loss.backward()
    return h.grad.numpy(), x.grad.numpy()


class Recorder:
    """A hook that keeps a host copy of each gradient it is given and returns ``result``
    of it (None: keep it)."""

    def __init__(self, result=None):
        self.seen, self.result = [], result

    def __call__(self, grad):
        self.seen.append(grad.numpy())
        return None if self.result is None else self.result(grad)


# ---- what a hook sees ---------------------------------------------------------------
def test_hooks_see_the_complete_gradient_once(device):
    h_grad, x_grad = _reference(device)
    x = _t(X, device)
    loss, h = _graph(x)
    on_h, on_x = Recorder(), Recorder()
    h.register_hook(on_h)
    x.register_hook(on_x)
    loss.backward()
    # Once, with the sum of the three uses' shares (not once per use).
    assert len(on_h.seen) == 1 and len(on_x.seen) == 1
    np.testing.assert_allclose(on_h.seen[0], h_grad, rtol=1e-12)
    np.testing.assert_allclose(on_x.seen[0], x_grad, rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), x_grad, rtol=1e-12)   # hooks that return None


def test_a_replacement_flows_on_to_the_inputs(device):
    h_grad, x_grad = _reference(device)
    x = _t(X, device)
    loss, h = _graph(x)
    doubling = Recorder(lambda g: g * 2)
    h.register_hook(doubling)
    loss.backward()
    assert len(doubling.seen) == 1
    np.testing.assert_allclose(doubling.seen[0], h_grad, rtol=1e-12)
    # x reaches the loss through h only: its gradient doubles too.
    np.testing.assert_allclose(x.grad.numpy(), 2 * x_grad, rtol=1e-12)


def test_a_leaf_hook_changes_what_is_added_to_grad(device):
    _, x_grad = _reference(device)
    x = _t(X, device)
    on_x = Recorder(lambda g: g * 10)
    x.register_hook(on_x)
    for _ in range(2):
        _graph(x)[0].backward()
    # Each pass's own gradient, not the .grad accumulated so far, and that times 10 added.
    np.testing.assert_allclose(on_x.seen, [x_grad, x_grad], rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), 20 * x_grad, rtol=1e-12)


def test_hooks_run_in_order_each_on_what_the_last_returned():
    x = _t([1.0, 2.0])
    y = x * 3
    calls = []
    y.register_hook(lambda g: calls.append(("first", g.numpy())) or g + 1)
    y.register_hook(lambda g: calls.append(("second", g.numpy())))      # keeps g + 1
    y.register_hook(lambda g: calls.append(("third", g.numpy())) or g * 10)
    y.sum().backward()
    assert [name for name, _ in calls] == ["first", "second", "third"]
    np.testing.assert_array_equal([g for _, g in calls], [[1, 1], [2, 2], [2, 2]])
    np.testing.assert_array_equal(x.grad.numpy(), [60, 60])               # (1 + 1) * 10 * 3


def test_a_removed_hook_no_longer_runs():
    x = _t([1.0, 2.0])
    kept, dropped = Recorder(), Recorder(lambda g: g * 0)
    x.register_hook(kept)
    handle = x.register_hook(dropped)
    (x * 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 0])
    handle.remove()
    handle.remove()                        # again: nothing to do
    x.grad = None
    (x * 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2, 2])
    assert len(kept.seen) == 2 and len(dropped.seen) == 1
    with x.register_hook(dropped):         # a handle is a context manager too
        (x * 2).sum().backward()
    (x * 2).sum().backward()
    assert len(kept.seen) == 4 and len(dropped.seen) == 2


def test_a_hook_may_remove_itself_while_the_hooks_run():
    x = _t([1.0])
    after = Recorder()

    def once(grad):
        handle.remove()
        return grad * 5

    handle = x.register_hook(once)
    x.register_hook(after)
    for _ in range(2):
        (x * 1).sum().backward()
    np.testing.assert_array_equal(after.seen, [[5.0], [1.0]])   # run once, then gone
    np.testing.assert_array_equal(x.grad.numpy(), [6.0])


def test_hooks_on_the_output_and_on_a_retained_tensor():
    x = _t([1.0, 2.0])
    y = x * 3
    y.retain_grad()
    y.register_hook(lambda g: g * 10)
    loss = y.sum()
    on_loss = Recorder(lambda g: g * 2)
    loss.register_hook(on_loss)
    loss.backward()
    np.testing.assert_array_equal(on_loss.seen, [1.0])      # the implied upstream gradient
    # .grad of a retained tensor is its gradient as the hooks left it, as in PyTorch.
    np.testing.assert_array_equal(y.grad.numpy(), [20, 20])
    np.testing.assert_array_equal(x.grad.numpy(), [60, 60])


def test_the_hook_sees_the_grad_mode_of_the_pass():
    x = _t([2.0])
    y = x * x
    modes = []
    y.register_hook(lambda g: modes.append((tg.is_grad_enabled(), g.requires_grad)))
    y.sum().backward(retain_graph=True)
    tg.grad(y.sum(), [x], create_graph=True)
    assert modes == [(False, False), (True, False)]   # the upstream 1 is a constant


def test_hooks_are_not_deep_copied():
    x = _t([1.0])
    x.register_hook(lambda g: g * 100)
    twin = copy.deepcopy(x)
    (twin * 1).sum().backward()
    np.testing.assert_array_equal(twin.grad.numpy(), [1.0])
    (x * 1).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [100.0])


def test_parameter_hooks_clip_each_gradient():
    """Gradient clipping per tensor, as ported code writes it."""
    tg.manual_seed(0)
    layer = nn.Linear(4, 3)
    for p in layer.parameters():
        p.register_hook(lambda g: g.clip(-0.1, 0.1))
    x = tg.randn(5, 4) * 10
    (layer(x) ** 2).sum().backward()
    unclipped = nn.Linear(4, 3)
    unclipped.load_state_dict(layer.state_dict())
    (unclipped(x) ** 2).sum().backward()
    for p, q in zip(layer.parameters(), unclipped.parameters()):
        assert np.abs(q.grad.numpy()).max() > 0.1          # so that the clip is seen
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy().clip(-0.1, 0.1))


# ---- tg.grad --------------------------------------------------------------------------
def test_tg_grad_runs_the_hooks_and_returns_what_they_leave(device):
    h_grad, x_grad = _reference(device)
    x = _t(X, device)
    loss, h = _graph(x)
    on_h, on_x = Recorder(lambda g: g * 2), Recorder(lambda g: g + 1)
    h.register_hook(on_h)
    x.register_hook(on_x)
    (gx,) = tg.grad(loss, [x])
    np.testing.assert_allclose(on_h.seen, [h_grad], rtol=1e-12)
    np.testing.assert_allclose(on_x.seen, [2 * x_grad], rtol=1e-12)
    np.testing.assert_allclose(gx.numpy(), 2 * x_grad + 1, rtol=1e-12)
    assert x.grad is None


def test_tg_grad_returns_a_gradient_as_its_hooks_left_it_even_when_it_flows_on():
    # (PyTorch's autograd.grad returns y's gradient from before its hook here: [4, 8].)
    x = _t([1.0, 2.0])
    y = x * 2
    y.register_hook(lambda g: g * 0)
    gx, gy = tg.grad((y * y).sum(), [x, y])
    np.testing.assert_array_equal(gx.numpy(), [0, 0])
    np.testing.assert_array_equal(gy.numpy(), [0, 0])


def test_tg_grad_runs_no_hook_off_the_path_to_its_inputs():
    """As PyTorch's autograd.grad: a gradient penalty taken with respect to the input
    does not run the hooks of the weights (they run in the backward of the penalty)."""
    w = _t([1.5, -2.0])
    x = _t([0.5, 3.0])
    on_w = Recorder()
    w.register_hook(on_w)
    loss = ((x * w).sin() * w).sum()
    (gx,) = tg.grad(loss, [x], create_graph=True)
    assert on_w.seen == []
    np.testing.assert_allclose(gx.numpy(), (np.cos(x.numpy() * w.numpy()) * w.numpy() ** 2))
    (gx ** 2).sum().backward()
    assert len(on_w.seen) == 1 and w.grad is not None


def test_tg_grad_after_backward_still_says_the_graph_was_freed():
    x = _t([1.0])
    y = (x * 2).sin()
    y.sum().backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        tg.grad(y.sum(), [x])


def _leaf(L, values):
    """A float64 leaf that requires grad, of tinygrad_cnn (``L`` is tg) or of torch."""
    return L.tensor(np.asarray(values, dtype=np.float64), requires_grad=True)


def _grad(L):
    return tg.grad if L is tg else L.autograd.grad


def test_tg_grad_and_its_hooks_match_torch():
    torch = pytest.importorskip("torch")
    results = []
    for L in (tg, torch):
        x = _leaf(L, X)
        h = x.sin() * 3
        h.register_hook(lambda g: g * 2)
        x.register_hook(lambda g: g + 1)
        loss = (h * h + h.exp()).sum()
        (gx,) = _grad(L)(loss, [x])
        h2 = x.sin() * 3
        h2.register_hook(lambda g: g * 2)
        (gh,) = _grad(L)((h2 * h2).sum(), [h2])
        results.append([gx.detach().numpy(), gh.detach().numpy()])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


# ---- second order -----------------------------------------------------------------------
@pytest.mark.parametrize("how", ["backward", "grad"])
def test_a_differentiable_replacement_is_differentiated_through(how, device):
    # h = x^2, y = h x (= x^3); the hook scales dy/dh = x by h: dy/dh -> x^3.
    # dy/dx = 2x * x^3 + h = 2x^4 + x^2, whose derivative is 8x^3 + 2x.
    xv = np.array([0.5, -1.5, 2.0])
    x = _t(xv, device)
    h = x * x
    seen = []

    def scale(grad):
        seen.append((grad.requires_grad, tg.is_grad_enabled()))
        return grad * h

    handle = h.register_hook(scale)
    y = (h * x).sum()
    if how == "backward":
        y.backward(create_graph=True)
        slope = x.grad
    else:
        (slope,) = tg.grad(y, [x], create_graph=True)
    assert seen == [(True, True)]                   # the gradient it got is in the graph
    np.testing.assert_allclose(slope.numpy(), 2 * xv ** 4 + xv ** 2, rtol=1e-12)
    # h is in the graph of the slope too, where the hook would run again (as in
    # PyTorch: test_second_order_with_hooks_matches_torch): remove it first.
    handle.remove()
    (curvature,) = tg.grad(slope.sum(), [x])
    np.testing.assert_allclose(curvature.numpy(), 8 * xv ** 3 + 2 * xv, rtol=1e-12)
    if how == "backward":
        x.grad = None    # the graph-valued .grad refers back to x


def test_second_order_with_hooks_matches_torch():
    torch = pytest.importorskip("torch")
    out = []
    for L in (tg, torch):
        x = _leaf(L, X)
        h = (x * 2).tanh()
        h.register_hook(lambda g, h=h: g * h + g)   # runs in both passes: h is in both graphs
        y = (h * h * x).sum()
        (g,) = _grad(L)(y, [x], create_graph=True)
        (gg,) = _grad(L)((g * g).sum(), [x])
        out.append((g.detach().numpy(), gg.detach().numpy()))
    for ours, theirs in zip(*out):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


# ---- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("make, what", [
    (lambda: tg.tensor([1.0, 2.0]), r"shape \(2,\), dtype float32"),
    (lambda: tg.tensor([1, 2]), r"shape \(2,\), dtype int64"),
    (lambda: tg.ones(2, requires_grad=True).detach(), r"shape \(2,\), dtype float32"),
    (lambda: nn.Linear(2, 3).requires_grad_(False).weight, r"shape \(3, 2\), dtype float32"),
])
def test_a_hook_on_a_tensor_without_gradient_is_refused(make, what):
    with pytest.raises(RuntimeError, match=r"register_hook: cannot register a hook on a tensor "
                                           r"that does not require grad \(" + what + r"\): no "
                                           r"gradient is computed for it; set "
                                           r"requires_grad=True on the leaves"):
        make().register_hook(print)


def test_a_hook_must_be_callable():
    with pytest.raises(TypeError, match=r"register_hook: hook must be a function of the "
                                        r"gradient, got 3 \(int\)"):
        _t([1.0]).register_hook(3)


def _bad_replacement(replacement, device="cpu"):
    x = tg.ones((2, 3), requires_grad=True, device=device)
    y = x * 2

    def swap(grad):
        return replacement(grad)

    y.register_hook(swap)
    y.sum().backward()


@pytest.mark.parametrize("replacement, message", [
    (lambda g: g.sum(0), r"register_hook: the hook _bad_replacement\.<locals>\.swap returned "
                         r"a gradient of shape \(3,\), dtype float32 on cpu for a tensor of "
                         r"shape \(2, 3\), dtype float32 on cpu; a replacement gradient must "
                         r"match its tensor in all three"),
    (lambda g: g.astype(tg.float64), r"returned a gradient of shape \(2, 3\), dtype float64 "
                                     r"on cpu for a tensor of shape \(2, 3\), dtype float32"),
])
def test_a_replacement_of_another_shape_or_dtype_is_refused(replacement, message):
    with pytest.raises(RuntimeError, match=message):
        _bad_replacement(replacement)


def test_a_replacement_on_another_device_is_refused():
    with pytest.raises(RuntimeError, match=r"returned a gradient of shape \(2, 3\), dtype "
                                           r"float32 on strict2 for a tensor of shape \(2, 3\), "
                                           r"dtype float32 on strict; a replacement"):
        _bad_replacement(lambda g: g.to("strict2"), device="strict")


@pytest.mark.parametrize("value, kind", [(3.0, "float"), (np.ones((2, 3)), "ndarray"),
                                         ((None,), "tuple")])
def test_a_replacement_that_is_no_tensor_is_refused(value, kind):
    with pytest.raises(TypeError, match=r"register_hook: the hook _bad_replacement\.<locals>"
                                        r"\.swap returned a " + kind + r"; a hook returns None "
                                        r"\(keep the gradient\) or a Tensor"):
        _bad_replacement(lambda g: value)


# ---- module forward hooks ---------------------------------------------------------------
def test_forward_hooks_change_the_output_and_its_gradient():
    tg.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = tg.randn(5, 3)
    want = net(x).numpy()
    net(x).sum().backward()
    plain = [p.grad.numpy() for p in net.parameters()]
    net.zero_grad()
    calls = []
    pre = net[2].register_forward_pre_hook(lambda m, args: calls.append("pre") or args[0] * 2)
    post = net[2].register_forward_hook(
        lambda m, args, out: calls.append(("post", args[0].shape)) or out * 3)
    out = net(x)
    assert calls == ["pre", ("post", (5, 4))]
    b = net[2].bias.numpy()
    np.testing.assert_allclose(out.numpy(), 3 * (2 * (want - b) + b), rtol=1e-5)
    out.sum().backward()
    # The bias is added after the pre-hook's doubling: its gradient triples; the weights
    # below see both factors.
    np.testing.assert_allclose(net[2].bias.grad.numpy(), 3 * plain[3], rtol=1e-6)
    np.testing.assert_allclose(net[0].weight.grad.numpy(), 6 * plain[0], rtol=1e-5)
    pre.remove(), post.remove()
    np.testing.assert_allclose(net(x).numpy(), want, rtol=1e-6)


def test_forward_hooks_run_in_order_and_a_pre_hook_may_return_a_tuple():
    layer = nn.Identity()
    calls = []
    layer.register_forward_pre_hook(lambda m, args: calls.append(1) or (args[0] + 1,))
    layer.register_forward_pre_hook(lambda m, args: calls.append(2) or args[0] * 10)
    layer.register_forward_hook(lambda m, args, out: calls.append(3) or out - 5)
    layer.register_forward_hook(lambda m, args, out: calls.append((4, out.item())))
    assert layer(tg.tensor(1.0)).item() == 15
    assert calls == [1, 2, 3, (4, 15.0)]


@pytest.mark.parametrize("register", ["register_forward_pre_hook", "register_forward_hook",
                                      "register_full_backward_hook"])
def test_module_hooks_must_be_callable(register):
    with pytest.raises(TypeError, match=register + r": hook must be a function, got None"):
        getattr(nn.ReLU(), register)(None)


# ---- Grad-CAM ------------------------------------------------------------------------------
def _small_cnn(L):
    return L.nn.Sequential(L.nn.Conv2d(2, 4, 3, padding=1), L.nn.ReLU(),
                           L.nn.Conv2d(4, 6, 3, padding=1), L.nn.ReLU(),
                           L.nn.Flatten(), L.nn.Linear(6 * 5 * 5, 3))


def _grad_cam(model, layer, images, classes):
    """Grad-CAM maps of ``classes``: a forward hook of ``layer`` keeps its output, and a
    hook on that output keeps its gradient.  (activation, gradient, maps)."""
    seen = {}

    def keep(module, args, out):
        seen["activation"] = out
        out.register_hook(lambda grad: seen.update(gradient=grad))

    handle = layer.register_forward_hook(keep)
    scores = model(images)
    handle.remove()
    scores[list(range(len(classes))), list(classes)].sum().backward()
    act, grad = seen["activation"].detach(), seen["gradient"]
    weights = grad.mean((2, 3), keepdim=True)                # (N, C, 1, 1)
    maps = (weights * act).sum(1).relu()                       # (N, H, W)
    return act.numpy(), grad.numpy(), maps.numpy()


def test_grad_cam_matches_torch():
    torch = pytest.importorskip("torch")
    tg.manual_seed(0)
    ours = _small_cnn(tg).to(tg.float64)
    theirs = _small_cnn(torch).double()
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    images = np.random.default_rng(0).standard_normal((2, 2, 5, 5))
    classes = [2, 0]
    got = _grad_cam(ours, ours[3], tg.tensor(images), classes)
    want = _grad_cam(theirs, theirs[3], torch.tensor(images), classes)
    assert got[2].max() > 0                                      # a map that shows something
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-10, atol=1e-12)


# ---- module backward hooks -----------------------------------------------------------------
def _linear(L, seed=0):
    layer = L.nn.Linear(3, 2).double() if L is not tg else nn.Linear(3, 2, dtype=tg.float64)
    rng = np.random.default_rng(seed)
    with (tg.no_grad() if L is tg else L.no_grad()):
        for p in layer.parameters():
            p[...] = L.tensor(rng.standard_normal(p.shape))
    return layer


def _full_backward_run(L, result=None, x_requires_grad=True):
    """A linear layer whose input is also used outside it, with a full backward hook:
    (grad_input, grad_output seen by the hook, the input's gradient, the weight's)."""
    layer = _linear(L)
    seen = []

    def hook(module, grad_input, grad_output):
        assert module is layer
        seen.append((grad_input, grad_output))
        return result(grad_input) if result else None

    layer.register_full_backward_hook(hook)
    x = L.tensor(np.random.default_rng(1).standard_normal((4, 3)),
                 requires_grad=x_requires_grad)
    out = layer(x)
    loss = (out * out).sum() + (x * x).sum()
    loss.backward()
    assert len(seen) == 1
    (grad_input, grad_output), = seen

    def host(gs):
        return tuple(None if g is None else g.detach().numpy() for g in gs)
    return (host(grad_input), host(grad_output),
            None if x.grad is None else x.grad.detach().numpy(), layer.weight.grad.numpy())


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")   # PyTorch's, on the last
@pytest.mark.parametrize("case", ["watch", "replace", "input without grad"])
def test_full_backward_hook_matches_torch(case):
    torch = pytest.importorskip("torch")
    kwargs = {"watch": {}, "replace": dict(result=lambda gi: (gi[0] * 0 + 1,)),
              "input without grad": dict(x_requires_grad=False)}[case]
    ours, theirs = _full_backward_run(tg, **kwargs), _full_backward_run(torch, **kwargs)
    if case == "input without grad":
        assert ours[0] == (None,) and ours[2] is None
    for g, w in zip(ours, theirs):
        if g is None or w is None:
            assert g is None and w is None
            continue
        if isinstance(g, tuple):
            assert len(g) == len(w) and [a is None for a in g] == [b is None for b in w]
            g, w = [a for a in g if a is not None], [b for b in w if b is not None]
        np.testing.assert_allclose(g, w, rtol=1e-12)


def test_full_backward_hook_sees_the_modules_own_share():
    layer = _linear(tg)
    seen = []
    layer.register_full_backward_hook(lambda m, gi, go: seen.append(gi[0].numpy()))
    x = _t(np.ones((2, 3)))
    (layer(x).sum() + (x * 100).sum()).backward()
    # Not the 100 the use outside the layer adds: what the layer sends its input.
    np.testing.assert_allclose(seen[0], np.tile(layer.weight.numpy().sum(0), (2, 1)))
    np.testing.assert_allclose(x.grad.numpy(), seen[0] + 100)


def test_full_backward_hook_runs_once_per_call_and_on_an_identity():
    layer = nn.Identity()
    seen = []
    handle = layer.register_full_backward_hook(
        lambda m, gi, go: seen.append((gi[0].numpy(), go[0].numpy())))
    x = _t([1.0, 2.0])
    (layer(layer(x) * 3) * 2).sum().backward()
    np.testing.assert_array_equal(seen, [([2, 2], [2, 2]), ([6, 6], [6, 6])])
    np.testing.assert_array_equal(x.grad.numpy(), [6, 6])
    handle.remove()
    layer(x).sum().backward()
    assert len(seen) == 2


def test_full_backward_hook_leaves_no_trace_under_no_grad():
    layer = nn.Linear(3, 2)
    layer.register_full_backward_hook(lambda m, gi, go: None)
    with tg.no_grad():
        out = layer(tg.ones((1, 3)))
    assert out.grad_fn is None
    assert layer(tg.ones((1, 3))).grad_fn.name == "BackwardHook"


class _Two(nn.Module):
    def forward(self, a, b):
        return a * b


class _Pair(nn.Module):
    def forward(self, a):
        return a, a * 2


@pytest.mark.parametrize("module, args, error, message", [
    (_Two(), (_t([1.0]), _t([2.0])), TypeError,
     r"register_full_backward_hook: _Two was called with 2 tensors that require grad "
     r"\(arguments \[0, 1\]\); backward hooks here take modules called with one"),
    (_Pair(), (_t([1.0]),), TypeError,
     r"register_full_backward_hook: _Pair returned a tuple; backward hooks here take modules "
     r"that return one tensor"),
])
def test_full_backward_hook_refuses_what_it_cannot_watch(module, args, error, message):
    module.register_full_backward_hook(lambda m, gi, go: None)
    with pytest.raises(error, match=message):
        module(*args)


def test_full_backward_hook_with_a_second_argument_that_needs_no_grad():
    seen = []
    module = _Two()
    module.register_full_backward_hook(lambda m, gi, go: seen.append(gi) or (None, gi[1] * 2))
    a, b = tg.tensor([3.0]), _t([2.0])
    module(a, b).sum().backward()
    assert seen[0][0] is None and seen[0][1].item() == 3
    assert b.grad.item() == 6


@pytest.mark.parametrize("result, error, message", [
    (lambda gi: gi[0], TypeError, r"register_full_backward_hook: the hook .*hook of Linear "
                                  r"returned a Tensor; expected None or a tuple of 1 "
                                  r"gradient\(s\), one per positional argument"),
    (lambda gi: (gi[0], gi[0]), TypeError, r"returned a tuple of 2; expected None or a tuple "
                                           r"of 1 gradient"),
    (lambda gi: (None,), TypeError, r"returned None for argument 0, a tensor that requires "
                                    r"grad; return its gradient \(zeros to send none\)"),
    (lambda gi: (gi[0][:, :2],), RuntimeError, r"the hook .*hook of Linear returned a "
                                               r"gradient of shape \(4, 2\), dtype float64 on "
                                               r"cpu for a tensor of shape \(4, 3\)"),
])
def test_full_backward_hook_refuses_a_bad_replacement(result, error, message):
    with pytest.raises(error, match=message):
        _full_backward_run(tg, result=result)


def test_full_backward_hook_without_input_gradient_must_return_none():
    with pytest.raises(TypeError, match=r"returned a gradient for argument 0, which gets "
                                        r"none \(not a tensor that requires grad\); return "
                                        r"None there"):
        _full_backward_run(tg, result=lambda gi: (tg.ones((4, 3), dtype=tg.float64),),
                           x_requires_grad=False)
