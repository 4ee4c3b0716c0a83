"""Second-order derivatives through whole models, against PyTorch.

``test_functional.py`` checks every op's second (and higher) derivatives on its
own; this file checks that they compose: small models built from ``nn`` layers
and a loss, differentiated twice with ``create_graph=True``, give PyTorch's
numbers (float64, relative 1e-10).  One table, ``MODEL_CASES``, lists the
models; each concern is one parametrised test run over it:

* ``test_inputs_avoid_kinks_and_ties``: the drawn data keep every ReLU and
  LeakyReLU input away from 0 and every max-pool window free of ties, where
  the derivatives are not defined and two libraries may pick differently;
* ``test_gradient_penalty_matches_torch``: a double-backprop loss, as in
  WGAN-GP, ``loss(model(x), y) + PENALTY * ||d loss / dx||^2``, and its
  gradient with respect to every parameter (and the penalty's alone, which
  is orders of magnitude smaller than the loss's);
* ``test_hessian_vector_product_matches_torch``: ``H v``, the gradient of
  ``(d loss / d params) . v`` with respect to the parameters;
* ``test_input_curvature_matches_torch``: the gradient with respect to x of
  ``(d sum(model(x)) / dx) . u``, a Hessian-vector product in input space;
* ``test_gradient_penalty_same_on_device``: the gradient penalty on the
  strict CuPy stand-ins of ``conftest`` gives the numbers of the cpu.

Each quantity is written once, against a small adapter (``OURS``,
``Torch``), and run on both libraries; the torch model is built layer by
layer from the tinygrad one (``torch_peer``) and loads its state dict, so the
weights are the same and a layer setting that torch reads otherwise shows.
``LocallyConnected2d`` has no torch layer: its peer is torch's ``unfold``
and an ``einsum``.  BatchNorm layers run in training mode (batch
statistics), with random scales and shifts rather than the 1 and 0 of
their initialisation, which would hide a missing factor.

Every model has a curved part (Tanh, a batch norm, the loss): a model of
ReLUs and linear maps alone has a zero input Hessian, and comparing zeros
would test nothing; the comparison also checks that the compared values are
not all zero.  The negative control at the end shows
that a backward whose result is detached from the graph, correct at first
order, fails the model-level comparison.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import nn, ops

try:  # tests/ as a package, or tests/ on sys.path (pytest's default rootdir mode)
    from .conftest import device_params
except ImportError:
    from conftest import device_params

RTOL = 1e-10
PENALTY = 0.7       # the weight of the gradient penalty
KINK = 1e-6         # how far every ReLU input stays from 0, and max-pool maxima apart


# ---- the models ---------------------------------------------------------------------
@dataclass(frozen=True)
class ModelCase:
    """A model of ``layers()`` (an ``nn.Sequential``, cast to float64) on inputs of
    ``x_shape``, trained with ``loss`` ("cross_entropy", "mse" or "bce_with_logits")."""
    name: str
    layers: Callable
    x_shape: tuple
    loss: str
    seed: int = 0

    def model(self):
        tg.manual_seed(self.seed)
        model = nn.Sequential(*self.layers()).double()
        rng = np.random.default_rng(self.seed)
        for layer in model:
            if isinstance(layer, nn.BatchNorm2d):
                C = layer.num_features
                layer.load_state_dict({"weight": 1 + 0.3 * rng.standard_normal(C),
                                       "bias": 0.3 * rng.standard_normal(C),
                                       "running_mean": rng.standard_normal(C),
                                       "running_var": rng.uniform(0.5, 2.0, C)},
                                      strict=False)
        return model

    def data(self):
        """(x, target, v, u) as NumPy: input, loss target, a random direction in
        parameter space ({name: array}) and one in input space."""
        model = self.model()   # for the output shape and the parameters' names
        rng = np.random.default_rng(self.seed + 1)
        x = rng.standard_normal(self.x_shape)
        with tg.no_grad():
            out_shape = model(tg.tensor(x)).shape
        if self.loss == "cross_entropy":
            target = rng.integers(0, out_shape[1], size=out_shape[0])
        elif self.loss == "mse":
            target = rng.standard_normal(out_shape)
        else:   # probabilities for binary cross-entropy
            target = rng.uniform(0.0, 1.0, out_shape)
        v = {name: rng.standard_normal(p.shape) for name, p in model.named_parameters()}
        u = rng.standard_normal(self.x_shape)
        return x, target, v, u


MODEL_CASES = [
    # LeNet-like: conv, relu, max pool, conv, tanh, average pool, two linear layers.
    ModelCase("lenet_cross_entropy", lambda: [
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(6, 8), nn.LeakyReLU(0.1), nn.Linear(8, 5)],
        (3, 1, 8, 8), "cross_entropy"),
    ModelCase("lenet_batchnorm_cross_entropy", lambda: [
        nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 2, stride=2), nn.BatchNorm2d(5), nn.Tanh(),
        nn.Flatten(), nn.Linear(5 * 2 * 2, 4)],
        (4, 2, 10, 10), "cross_entropy"),
    ModelCase("locally_connected_mse", lambda: [
        nn.LocallyConnected2d(2, 3, (6, 6), 3, padding=1), nn.Tanh(),
        nn.MaxPool2d(2), nn.LocallyConnected2d(3, 2, (3, 3), 2), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(2 * 2 * 2, 3)],
        (3, 2, 6, 6), "mse"),
    ModelCase("conv_transpose_bce_with_logits", lambda: [
        nn.Conv2d(2, 3, 3, stride=2), nn.LeakyReLU(0.1),
        nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1), nn.Tanh(),
        nn.ConvTranspose2d(4, 2, 2, stride=1), nn.AvgPool2d(2, stride=1)],
        (2, 2, 7, 7), "bce_with_logits"),
    ModelCase("conv_batchnorm_mse", lambda: [
        nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.LeakyReLU(0.05),
        nn.AvgPool2d(2), nn.ConvTranspose2d(3, 2, 2, stride=2), nn.Tanh(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 3 * 3, 2), nn.ReLU(), nn.Linear(2, 2)],
        (3, 1, 6, 6), "mse"),
]
CASE_PARAMS = [pytest.param(c, id=c.name) for c in MODEL_CASES]


# ---- one computation, two libraries ---------------------------------------------------
class _Ours:
    """The calls the quantities below need, on tinygrad_cnn."""

    def __init__(self, device="cpu"):
        self.device = device

    def model(self, case):
        return case.model().to(self.device)

    def leaf(self, a):
        return tg.tensor(a, requires_grad=True, device=self.device)

    def const(self, a):
        return tg.tensor(a, device=self.device)

    @staticmethod
    def grad(y, xs, create_graph=False, retain_graph=None):
        """The gradients of y, zeros for an input y does not depend on (so that a
        dependence lost or made up shows in the comparison, as any wrong value)."""
        grads = tg.grad(y, list(xs), create_graph=create_graph, retain_graph=retain_graph,
                        allow_unused=True)
        return [tg.zeros_like(x) if g is None else g for x, g in zip(xs, grads)]

    @staticmethod
    def loss(name):
        return {"cross_entropy": nn.cross_entropy, "mse": nn.mse_loss,
                "bce_with_logits": nn.binary_cross_entropy_with_logits}[name]

    @staticmethod
    def numpy(t):
        return t.numpy()


OURS = _Ours()


class Torch:
    """The same calls on PyTorch (the test is skipped without it)."""

    def __init__(self):
        self.torch = pytest.importorskip("torch")

    def model(self, case):
        return torch_peer(self.torch, case.model())

    def leaf(self, a):
        return self.torch.tensor(a, requires_grad=True)

    def const(self, a):
        return self.torch.tensor(a)

    def grad(self, y, xs, create_graph=False, retain_graph=None):
        grads = self.torch.autograd.grad(y, list(xs), create_graph=create_graph,
                                         retain_graph=retain_graph, allow_unused=True)
        return [self.torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads)]

    def loss(self, name):
        nnf = self.torch.nn.functional
        return {"cross_entropy": nnf.cross_entropy, "mse": nnf.mse_loss,
                "bce_with_logits": nnf.binary_cross_entropy_with_logits}[name]

    @staticmethod
    def numpy(t):
        return t.detach().numpy()


def _torch_local2d(torch, layer):
    """A torch module computing ``layer`` (a LocallyConnected2d): torch's unfold, then
    each output position's own filter applied to its column."""
    class LocallyConnected2d(torch.nn.Module):
        def __init__(self):
            super().__init__()
            empty = lambda t: torch.nn.Parameter(torch.empty(t.shape))   # noqa: E731
            self.weight = empty(layer.weight)
            self.bias = None if layer.bias is None else empty(layer.bias)

        def forward(self, x):
            OC, OH, OW, C, KH, KW = self.weight.shape
            cols = torch.nn.functional.unfold(x, (KH, KW), dilation=layer.dilation,
                                              padding=layer.padding, stride=layer.stride)
            w_rows = self.weight.reshape(OC, OH * OW, C * KH * KW)   # (OC, L, C*KH*KW)
            y = torch.einsum("olk,nkl->nol", w_rows, cols)          # (N, OC, L)
            y = y.reshape(x.shape[0], OC, OH, OW)
            return y if self.bias is None else y + self.bias
    return LocallyConnected2d()


def _torch_layer(torch, layer):
    """The torch layer with ``layer``'s settings (its values come from the state dict)."""
    tnn = torch.nn
    bias = getattr(layer, "bias", None) is not None
    make = {
        nn.Linear: lambda: tnn.Linear(layer.in_features, layer.out_features, bias=bias),
        nn.Conv2d: lambda: tnn.Conv2d(
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
            layer.padding, layer.dilation, layer.groups, bias),
        nn.ConvTranspose2d: lambda: tnn.ConvTranspose2d(
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
            layer.padding, layer.output_padding, layer.groups, bias, layer.dilation),
        nn.LocallyConnected2d: lambda: _torch_local2d(torch, layer),
        nn.BatchNorm2d: lambda: tnn.BatchNorm2d(
            layer.num_features, layer.eps, layer.momentum, layer.affine,
            layer.track_running_stats),
        nn.MaxPool2d: lambda: tnn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding,
                                            layer.dilation, ceil_mode=layer.ceil_mode),
        nn.AvgPool2d: lambda: tnn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding,
                                            layer.ceil_mode, layer.count_include_pad,
                                            layer.divisor_override),
        nn.Flatten: lambda: tnn.Flatten(layer.start_dim, layer.end_dim),
        nn.ReLU: tnn.ReLU,
        nn.LeakyReLU: lambda: tnn.LeakyReLU(layer.negative_slope),
        nn.Tanh: tnn.Tanh,
    }[type(layer)]
    return make()


def torch_peer(torch, model):
    """A float64 ``torch.nn.Sequential`` of the torch layers matching ``model``'s, in
    its training mode, holding copies of its parameters and buffers (the strict
    load checks that both have the same names and shapes)."""
    peer = torch.nn.Sequential(*(_torch_layer(torch, layer) for layer in model)).double()
    peer.load_state_dict({k: torch.from_numpy(v.numpy().copy())
                          for k, v in model.state_dict().items()})
    return peer.train(model.training)


# ---- the quantities ------------------------------------------------------------------
# Each returns {name: NumPy array}: the values a test compares.
def gradient_penalty(lib, case):
    """``L = loss + PENALTY * ||d loss / dx||^2``, ``dL / d params`` ("total: <name>")
    and, on its own, the gradient of the penalty ("penalty: <name>"), which is much
    smaller than the loss's and would otherwise hide in its rounding."""
    model = lib.model(case)
    x, target, _, _ = case.data()
    x = lib.leaf(x)
    data_loss = lib.loss(case.loss)(model(x), lib.const(target))
    (grad_x,) = lib.grad(data_loss, [x], create_graph=True)
    penalty = (grad_x * grad_x).sum()
    penalised = data_loss + PENALTY * penalty
    names, params = zip(*model.named_parameters())
    out = {"value": lib.numpy(penalised)}
    for what, y in (("total", penalised), ("penalty", penalty)):
        grads = lib.grad(y, params, retain_graph=True)
        out.update((f"{what}: {n}", lib.numpy(g)) for n, g in zip(names, grads))
    return out


def hessian_vector_product(lib, case):
    """``H v`` for the loss's Hessian H in the parameters: ``d (grad . v) / d params``."""
    model = lib.model(case)
    x, target, v, _ = case.data()
    loss = lib.loss(case.loss)(model(lib.const(x)), lib.const(target))
    names, params = zip(*model.named_parameters())
    grads = lib.grad(loss, params, create_graph=True)
    dot = sum((g * lib.const(v[n])).sum() for n, g in zip(names, grads))
    return {n: lib.numpy(hv) for n, hv in zip(names, lib.grad(dot, params))}


def input_curvature(lib, case):
    """``d ((d sum(model(x)) / dx) . u) / dx``: the Hessian of the output sum in x
    times ``u``."""
    model = lib.model(case)
    x, _, _, u = case.data()
    x = lib.leaf(x)
    (grad_x,) = lib.grad(model(x).sum(), [x], create_graph=True)
    (hu,) = lib.grad((grad_x * lib.const(u)).sum(), [x])
    return {"x": lib.numpy(hu)}


def assert_all_close(ours, theirs, what, rtol=RTOL):
    """The same names, and each array within ``rtol`` of ``theirs``, relative to the
    largest value of its kind (its prefix before ": ", or all of them): a structural
    zero, such as the gradient of a bias just before a batch norm, is rounding noise
    in either library, compared on the scale of its layer-mates."""
    assert ours.keys() == theirs.keys(), f"{what}: {list(ours)} vs {list(theirs)}"
    kind = lambda name: name.split(": ")[0] if ": " in name else ""   # noqa: E731
    scale = {}
    for name, t in theirs.items():
        scale[kind(name)] = max(scale.get(kind(name), 0.0), float(np.abs(t).max(initial=0)))
    for name, t in theirs.items():
        assert scale[kind(name)] > 1e-8, f"{what}: {kind(name) or 'everything'} is zero"
        o = ours[name]
        assert np.shape(o) == np.shape(t), f"{what}, {name}: shape {np.shape(o)} vs {np.shape(t)}"
        np.testing.assert_allclose(o, t, rtol=rtol, atol=rtol * scale[kind(name)],
                                   err_msg=f"{what}, {name}")


# ---- the table, one test per concern ------------------------------------------------
def _windows(a, layer):
    """The max-pool windows of ``layer`` over ``a`` (N, C, H, W): (..., window size)."""
    assert (layer.padding, layer.dilation, layer.ceil_mode) == (0, 1, False), \
        "the tie check covers unpadded, undilated, floor-mode max pooling only"
    kh, kw = np.broadcast_to(layer.kernel_size, 2)
    sh, sw = np.broadcast_to(layer.stride, 2)
    win = np.lib.stride_tricks.sliding_window_view(a, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    return win.reshape(win.shape[:4] + (-1,))


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_inputs_avoid_kinks_and_ties(case):
    """No ReLU or LeakyReLU input within KINK of 0, and in every max-pool window the
    largest value exceeds the next by more than KINK.  A tie at exactly 0 after a ReLU
    is allowed: the ReLU's inputs there are all negative, so whichever value the
    pooling picks, the ReLU sends no gradient back."""
    model = case.model()
    x, _, _, _ = case.data()
    watched = (nn.ReLU, nn.LeakyReLU, nn.MaxPool2d)
    after_relu = {id(b) for a, b in zip(model, list(model)[1:]) if isinstance(a, nn.ReLU)}
    seen = []

    def watch(layer, args, out):
        a = args[0].numpy()
        seen.append(layer)
        if isinstance(layer, (nn.ReLU, nn.LeakyReLU)):
            assert np.abs(a).min() > KINK, f"{layer!r}: an input within {KINK} of 0"
        else:
            top = np.sort(_windows(a, layer), axis=-1)[..., -2:]
            ties = top[..., 1] - top[..., 0] <= KINK
            if id(layer) in after_relu:
                ties &= top[..., 1] != 0
            assert not ties.any(), f"{layer!r}: {ties.sum()} windows with tied maxima"

    for layer in model:
        if isinstance(layer, watched):
            layer.register_forward_hook(watch)
    model(tg.tensor(x))
    assert len(seen) == sum(isinstance(layer, watched) for layer in model)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_gradient_penalty_matches_torch(case):
    assert_all_close(gradient_penalty(OURS, case), gradient_penalty(Torch(), case),
                     f"{case.name}: gradient penalty")


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_hessian_vector_product_matches_torch(case):
    assert_all_close(hessian_vector_product(OURS, case), hessian_vector_product(Torch(), case),
                     f"{case.name}: Hessian-vector product")


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_input_curvature_matches_torch(case):
    assert_all_close(input_curvature(OURS, case), input_curvature(Torch(), case),
                     f"{case.name}: input Hessian-vector product")


@pytest.mark.parametrize("device", device_params(["strict", "strict2"]), indirect=True)
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_gradient_penalty_same_on_device(case, device):
    """The strict stand-ins compute with NumPy, as the cpu does; the same numbers
    (up to the order of a sum) show that no op's second-order path is lost or
    changed on a CuPy-like backend."""
    assert_all_close(gradient_penalty(_Ours(device), case), gradient_penalty(OURS, case),
                     f"{case.name}: gradient penalty on {device}", rtol=1e-12)


# ---- negative control: a first-order-only backward fails at model level --------------
@pytest.mark.parametrize("op", [ops.ReLU, ops.Tanh])
def test_detached_backward_fails_the_comparison(monkeypatch, op):
    """A backward that computes the right values on a raw array, cut off from the
    graph, passes every first-order check; the gradient penalty must catch it."""
    case = MODEL_CASES[0]
    theirs = gradient_penalty(Torch(), case)
    assert_all_close(gradient_penalty(OURS, case), theirs, "intact")
    original = op.backward

    def detached(self, grad_out):
        return original(self, grad_out).detach()
    monkeypatch.setattr(op, "backward", detached)
    with pytest.raises(AssertionError, match=f"{op.__name__} detached, (total|penalty): "):
        assert_all_close(gradient_penalty(OURS, case), theirs, f"{op.__name__} detached")
