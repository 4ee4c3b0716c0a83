"""nn: Module machinery, layers (vs PyTorch and gradcheck), BatchNorm and the other
normalisation layers, init, summary."""
from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import nn, optim
from tinygrad_cnn.gradcheck import gradcheck

try:
    from . import reference_loops as ref
except ImportError:
    import reference_loops as ref


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.scale = nn.Parameter(np.ones(1))

    def forward(self, x):
        return self.bn(self.conv(x)).relu() * self.scale


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
        self.temperature = nn.Parameter(np.ones(1))   # registered after the children

    def forward(self, x):
        return self.head(self.block(x)) / self.temperature


# ---- Module machinery ----------------------------------------------------------------
def test_parameter_order_and_names():
    net = Net()
    # each module's own parameters first, then its children's, in registration order
    assert [n for n, _ in net.named_parameters()] == [
        "temperature", "block.scale", "block.conv.weight", "block.conv.bias",
        "block.bn.weight", "block.bn.bias", "head.1.weight", "head.1.bias"]
    assert [n for n, _ in net.named_buffers()] == [
        "block.bn.running_mean", "block.bn.running_var", "block.bn.num_batches_tracked"]
    assert list(net.state_dict()) == [
        "temperature", "block.scale", "block.conv.weight", "block.conv.bias",
        "block.bn.weight", "block.bn.bias", "block.bn.running_mean", "block.bn.running_var",
        "block.bn.num_batches_tracked", "head.1.weight", "head.1.bias"]
    assert [n for n, _ in net.named_children()] == ["block", "head"]
    assert [n for n, _ in net.named_modules()] == [
        "", "block", "block.conv", "block.bn", "head", "head.0", "head.1"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    assert net.num_parameters() == 1 + 1 + 54 + 3 + 3 + 3 + 48 * 5 + 5


def test_shared_modules_count_once():
    lin = nn.Linear(2, 2)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(model.parameters())) == 2
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_state_dict_round_trip_through_a_checkpoint(tmp_path):
    from tinygrad_cnn import checkpoint
    tg.manual_seed(0)
    net = Net()
    x = tg.randn(4, 2, 4, 4)
    net(x)                              # training mode: running statistics move
    net.temperature.data[...] = 2.0
    path = checkpoint.save(tmp_path / "net.npz", {"model": net.state_dict()})
    tg.manual_seed(1)
    other = Net()
    result = other.load_state_dict(checkpoint.load(path)["model"])
    assert result.missing_keys == [] and result.unexpected_keys == []
    net.eval(), other.eval()
    np.testing.assert_array_equal(net(x).numpy(), other(x).numpy())
    assert other.block.bn.num_batches_tracked.item() == 1
    assert other.block.bn.num_batches_tracked.dtype == np.int64


def test_state_dict_shares_memory_and_load_copies():
    lin = nn.Linear(2, 2)
    sd = lin.state_dict()
    opt = optim.SGD(lin.parameters(), lr=1.0)
    lin(tg.ones(1, 2)).sum().backward()
    opt.step()
    np.testing.assert_array_equal(sd["weight"].numpy(), lin.weight.numpy())
    new = {k: v.numpy() + 1 for k, v in sd.items()}
    weight = lin.weight
    lin.load_state_dict(new)
    assert lin.weight is weight
    np.testing.assert_array_equal(lin.weight.numpy(), new["weight"])


def test_load_state_dict_reports_every_problem_at_once():
    net = Net()
    before = {k: v.numpy() for k, v in net.state_dict().items()}
    state = {k: v.numpy() + 1 for k, v in Net().state_dict().items()}
    del state["block.bn.running_var"], state["head.1.bias"]
    state["block.extra"] = np.zeros(2)
    state["head.1.weight"] = np.zeros((4, 48))
    with pytest.raises(RuntimeError) as info:
        net.load_state_dict(state)
    message = str(info.value)
    for words in ("block.bn.running_var", "head.1.bias", "block.extra",
                  "head.1.weight", "(4, 48)", "(5, 48)"):
        assert words in message
    for k, v in net.state_dict().items():        # nothing was changed
        np.testing.assert_array_equal(v.numpy(), before[k])
    with pytest.raises(RuntimeError, match="shape mismatch") as info:
        net.load_state_dict(state, strict=False)
    assert "missing" not in str(info.value)
    state["head.1.weight"] = np.zeros((5, 48))
    result = net.load_state_dict(state, strict=False)
    assert result.missing_keys == ["block.bn.running_var", "head.1.bias"]
    assert result.unexpected_keys == ["block.extra"]
    assert net.head[1].weight.numpy().sum() == 0


def test_load_state_dict_takes_a_batch_norm_state_without_its_batch_count():
    """PyTorch loads BatchNorm weights saved without ``num_batches_tracked`` (as before
    PyTorch 0.4.1), keeping the layer's own count: so does ours, for that key only."""
    tg.manual_seed(0)
    net = Net()
    net(tg.randn(4, 2, 4, 4))                   # a batch counted: num_batches_tracked 1
    state = {k: v.numpy() + 1 for k, v in Net().state_dict().items()}
    del state["block.bn.num_batches_tracked"]
    result = net.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert net.block.bn.num_batches_tracked.item() == 1
    np.testing.assert_array_equal(net.block.bn.running_var.numpy(),
                                  state["block.bn.running_var"])
    assert net.load_state_dict(state, strict=False).missing_keys == []
    del state["block.bn.running_var"]           # the statistics themselves are required
    with pytest.raises(RuntimeError, match=r"missing key\(s\): block\.bn\.running_var$"):
        net.load_state_dict(state)
    other = nn.Module()                         # a buffer of that name elsewhere is required
    other.register_buffer("num_batches_tracked", tg.zeros(()))
    with pytest.raises(RuntimeError, match="missing key.*num_batches_tracked"):
        other.load_state_dict({})


@pytest.mark.parametrize("key, value, words", [
    ("1.weight", np.array([["x", "y"], ["z", "w"]]), ["1.weight", "<U1", "real numbers"]),
    ("1.weight", np.ones((2, 2), complex), ["1.weight", "complex128", "real numbers"]),
    ("1.weight", [[1.0, 2.0], [3.0]], ["1.weight", "cannot read a list"]),
    ("1.weight", np.array([{}, {}, {}, {}], object).reshape(2, 2), ["1.weight", "object"]),
    ("bn.num_batches_tracked", np.array(1.5), ["num_batches_tracked", "float64", "int64"]),
    ("bn.num_batches_tracked", np.array(np.nan), ["num_batches_tracked", "float64", "int64"]),
    ("bn.num_batches_tracked", np.array(2**64 - 1, np.uint64), ["uint64", "int64"]),
    # 2**63 is one past int64's range, and float64(iinfo(int64).max) rounds up to it
    ("bn.num_batches_tracked", np.array(2.0**63), ["float64", "int64"]),
    ("bn.num_batches_tracked", np.array(-(2.0**63) * 1.5), ["float64", "int64"]),
    # a finite float64 beyond float32's range would load as inf
    ("1.weight", np.full((2, 2), 1e300), ["1.weight", "1e+300", "overflows", "float32"]),
    # the value keeps its sign (the message said 1e+39)
    ("bn.running_var", np.array([1.0, -1e39]), ["running_var", "-1e+39", "float32"]),
    # a loaded NaN or inf beside it does not hide the overflow
    ("bn.running_mean", np.array([np.nan, 1e39]), ["running_mean", "1e+39", "overflows"]),
    ("bn.running_mean", np.array([-np.inf, -1e39]), ["running_mean", "-1e+39", "overflows"]),
])
def test_load_state_dict_checks_every_value_before_changing_anything(key, value, words):
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    net.add_module("bn", nn.BatchNorm1d(2))
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    state = {k: v + 1 for k, v in before.items()}  # valid new values for every other key
    state[key] = value
    with pytest.raises(RuntimeError, match="bad value") as info:
        net.load_state_dict(state)
    for word in words:
        assert word in str(info.value)
    for k, v in net.state_dict().items():  # 0.weight, which comes first, is unchanged too
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=k)


def test_load_state_dict_casts_values_that_fit():
    net = nn.BatchNorm1d(2)
    state = {"weight": np.array([1, 2]), "bias": np.array([True, False]),
             "running_mean": np.array([0.5, 1.5], np.float64), "running_var": [2.0, 3.0],
             "num_batches_tracked": np.array(7.0)}
    net.load_state_dict(state)
    assert net.weight.dtype == np.float32 and net.weight.numpy().tolist() == [1, 2]
    assert net.num_batches_tracked.dtype == np.int64 and net.num_batches_tracked.item() == 7
    for edge in (np.array(-(2.0**63)), np.array(2**63 - 1, np.uint64)):   # int64's own bounds
        net.load_state_dict({**state, "num_batches_tracked": edge})
        assert net.num_batches_tracked.item() == int(edge)
    # infinities and NaN are kept as they are (only a finite value turned inf is refused)
    net.load_state_dict({**state, "running_mean": np.array([np.inf, np.nan])})
    assert np.isinf(net.running_mean.numpy()[0]) and np.isnan(net.running_mean.numpy()[1])


BOOL_BUFFER_VALUES = [   # (value, loads): a bool buffer takes 0/1 in any dtype, nothing else
    (np.array([True, False]), True), (np.array([0, 1]), True), (np.array([1.0, 0.0]), True),
    (np.array([0, 2]), False), (np.array([1.0, 0.5]), False), (np.array([-1, 1]), False),
    (np.array([np.nan, 1.0]), False),
]


@pytest.mark.parametrize("value, loads", BOOL_BUFFER_VALUES)
def test_load_state_dict_into_a_bool_buffer(value, loads):
    module = nn.Identity()
    module.register_buffer("mask", tg.tensor(np.array([False, True])))
    if loads:
        module.load_state_dict({"mask": value})
        assert module.mask.numpy().tolist() == value.astype(bool).tolist()
    else:
        with pytest.raises(RuntimeError, match="bad value.*mask.*bool"):
            module.load_state_dict({"mask": value})
        assert module.mask.numpy().tolist() == [False, True]


def test_non_persistent_buffers_are_state_but_not_saved():
    net = nn.Sequential(nn.Linear(2, 2))
    net[0].register_buffer("cache", tg.zeros(2), persistent=False)
    net.register_buffer("kept", tg.ones(3))
    assert [n for n, _ in net.named_buffers()] == ["kept", "0.cache"]
    assert list(net.state_dict()) == ["kept", "0.weight", "0.bias"]
    assert net.load_state_dict({k: v.numpy() for k, v in net.state_dict().items()}) == ([], [])
    with pytest.raises(RuntimeError, match=r"unexpected key\(s\): 0\.cache"):
        net.load_state_dict({**net.state_dict(), "0.cache": np.ones(2)})
    net.double()
    assert net[0].cache.dtype == np.float64
    net[0].register_buffer("cache", tg.zeros(2))   # registered again: persistent now
    assert list(net.state_dict()) == ["kept", "0.weight", "0.bias", "0.cache"]


def test_state_dict_values_are_detached_unless_keep_vars():
    lin = nn.Linear(2, 2)
    kept = lin.state_dict(keep_vars=True)
    assert kept["weight"] is lin.weight and kept["bias"] is lin.bias
    for v in lin.state_dict().values():
        assert not isinstance(v, nn.Parameter) and not v.requires_grad


def test_load_state_dict_is_an_in_place_change_for_autograd():
    lin = nn.Linear(2, 2)
    loss = (lin(tg.ones(1, 2)) ** 2).sum()
    lin.load_state_dict({k: v.numpy() + 1 for k, v in lin.state_dict().items()})
    # the saved weights are gone: a gradient from the new ones would be wrong
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()


def test_requires_grad_freezes_a_submodule_and_num_parameters_counts_what_trains():
    net = Net()
    assert net.block.requires_grad_(False) is net.block
    assert [n for n, p in net.named_parameters() if p.requires_grad] == [
        "temperature", "head.1.weight", "head.1.bias"]
    assert net.num_parameters(trainable_only=True) == 1 + 48 * 5 + 5
    assert net.num_parameters() == 1 + 48 * 5 + 5 + 1 + 54 + 3 + 3 + 3
    net.requires_grad_()
    assert all(p.requires_grad for p in net.parameters())


def test_apply_visits_the_children_before_the_module():
    net = Net()
    order = []
    assert net.apply(lambda m: order.append(type(m).__name__)) is net
    # children first, then the module itself
    assert order == ["Conv2d", "BatchNorm2d", "Block", "Flatten", "Linear", "Sequential", "Net"]


def test_to_device_keeps_the_same_parameters():
    pytest.importorskip("strict_backend")     # a NumPy device with CuPy's rules
    tg.manual_seed(0)
    net = Net()
    reference = copy.deepcopy(net)
    params = list(net.parameters())
    x = np.random.default_rng(0).standard_normal((3, 2, 4, 4)).astype(np.float32)
    opts = {}
    for model in (net, reference):   # one step on the host: Adam's state is made there
        opts[id(model)] = optim.Adam(model.parameters(), lr=0.01)
        nn.cross_entropy(model(tg.tensor(x)), [0, 1, 4]).backward()
        opts[id(model)].step()
    assert net.to("strict") is net    # after the optimiser was built and had state
    assert [id(p) for p in net.parameters()] == [id(p) for p in params]
    assert all(t.device == "strict" for t in list(net.parameters()) + list(net.buffers()))
    for model, device in ((net, "strict"), (reference, "cpu")):
        ropt = opts[id(model)]
        for _ in range(2):
            ropt.zero_grad()
            loss = nn.cross_entropy(model(tg.tensor(x, device=device)), [0, 1, 4])
            loss.backward()
            ropt.step()
    net.to("cpu")
    for (k, a), b in zip(net.state_dict().items(), reference.state_dict().values()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


def test_to_dtype_casts_floats_only():
    net = Net().double()
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net.block.bn.running_mean.dtype == np.float64
    assert net.block.bn.num_batches_tracked.dtype == np.int64
    assert net(tg.randn(2, 2, 4, 4, dtype="float64")).dtype == np.float64
    net.to("float32")
    assert net.head[1].weight.dtype == np.float32
    with pytest.raises(TypeError, match="floating-point"):
        net.to(dtype="int32")


def test_to_dtype_runs_on_the_modules_own_device(device):
    # "strict2" is not the current device: the cast must run in its context.
    tg.manual_seed(0)
    lin = nn.Linear(3, 2, device=device)
    lin(tg.ones(4, 3, device=device)).sum().backward()
    weight = lin.weight.numpy()
    assert lin.double() is lin
    assert lin.weight.dtype == np.float64 and lin.weight.grad.dtype == np.float64
    assert lin.weight.device == device and lin.weight.grad.device == device
    np.testing.assert_array_equal(lin.weight.numpy(), weight)
    lin.float()
    assert lin.weight.dtype == np.float32 and lin.bias.dtype == np.float32
    lin.to(device, "float64")
    assert lin.bias.dtype == np.float64 and lin.bias.device == device
    bn = nn.BatchNorm1d(2, device=device).double()
    assert bn.running_mean.dtype == np.float64 and bn.num_batches_tracked.dtype == np.int64


def test_to_another_tensor_takes_its_device_and_dtype(device):
    """``x.to(other)`` and ``model.to(other)``, as in PyTorch.  (NumPy reads any object
    with a .dtype as that dtype: the tensor was taken for a dtype, its device dropped.)"""
    ref = tg.zeros(1, dtype="float64", device=device)
    x = tg.ones(2, requires_grad=True)            # float32, on the host
    y = x.to(ref)
    assert (y.device, y.dtype) == (device, np.float64)
    (y * 3).sum().backward()
    assert (x.grad.device, x.grad.tolist()) == ("cpu", [3.0, 3.0])
    lin = nn.Linear(3, 2)
    assert lin.to(ref) is lin
    assert [(p.device, p.dtype) for p in lin.parameters()] == [(device, np.float64)] * 2
    with pytest.raises(TypeError, match=r"to\(other\): the tensor gives the device and the "
                                        r"dtype \(" + device + r", float64\); pass no dtype"):
        x.to(ref, "float32")
    # a tensor of integer labels or pixels gives a dtype a model cannot take: say how to
    # take its device alone
    with pytest.raises(TypeError, match=r"^Module\.to\(other\) takes other's device and "
                                        r"dtype, and other has dtype int64; .* pass "
                                        r"other\.device \('" + device + r"'\) to move"):
        nn.Linear(3, 2).to(tg.zeros(2, dtype="int64", device=device))


def test_a_model_moved_between_forward_and_backward_is_named(device):
    """The graph holds the parameters as the forward pass used them: after an in-place
    move their gradients would come back on the old device.  The error said that an
    op's backward (Add) had returned a gradient on the wrong device, as if it had a bug."""
    lin = nn.Linear(3, 1, device=device)
    loss = lin(tg.ones(2, 3, device=device)).sum()
    other = "strict" if device == "cpu" else "cpu"
    lin.to(other)
    with pytest.raises(RuntimeError, match=rf"^input \d+ \(shape \([\d, ]+\)\) of \w+ was moved "
                                           rf"from {device} to {other} after the forward pass "
                                           rf"used it .*; run the forward pass again after "
                                           rf"moving$"):
        loss.backward()
    lin(tg.ones(2, 3, device=other)).sum().backward()
    assert lin.weight.grad.device == other


def test_to_dtype_and_device_from_a_device_that_is_not_the_current_one():
    pytest.importorskip("strict_backend")
    lin = nn.Linear(3, 2, device="strict2")
    weight = lin.weight.numpy()
    lin.to("strict", "float64")
    assert (lin.weight.device, lin.weight.dtype) == ("strict", np.float64)
    lin.to("strict2", "float32")
    assert (lin.weight.device, lin.weight.dtype) == ("strict2", np.float32)
    np.testing.assert_array_equal(lin.weight.numpy(), weight)


def test_repr_shows_the_tree():
    assert repr(Net()) == """Net(
  (block): Block(
    (conv): Conv2d(2, 3, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
    (bn): BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
  )
  (head): Sequential(
    (0): Flatten(start_dim=1, end_dim=-1)
    (1): Linear(in_features=48, out_features=5, bias=True)
  )
)"""
    assert repr(nn.Conv2d(4, 8, 3, 2, dilation=2, groups=2, bias=False)) == (
        "Conv2d(4, 8, kernel_size=(3, 3), stride=(2, 2), dilation=(2, 2), groups=2, bias=False)")
    assert repr(nn.Conv1d(1, 2, 3, padding=1, padding_mode="circular")) == (
        "Conv1d(1, 2, kernel_size=(3,), stride=(1,), padding=(1,), padding_mode=circular)")
    assert repr(nn.LocallyConnected2d(1, 2, 6, 3)) == (
        "LocallyConnected2d(1, 2, input_size=(6, 6), kernel_size=(3, 3), stride=(1, 1))")
    # PyTorch's repr, then each setting that is not its default
    assert repr(nn.AvgPool2d(2)) == "AvgPool2d(kernel_size=2, stride=2, padding=0)"
    assert repr(nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False,
                             divisor_override=4)) == (
        "AvgPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False, "
        "divisor_override=4)")
    assert repr(nn.AvgPool1d(3, count_include_pad=False)) == (
        "AvgPool1d(kernel_size=3, stride=3, padding=0, count_include_pad=False)")
    assert repr(nn.Parameter(np.zeros(2))).startswith("Parameter containing:\ntensor(")


def test_containers():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    seq = nn.Sequential(a, b, c)
    assert len(seq) == 3 and list(seq) == [a, b, c] and seq[-1] is c
    sub = seq[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == [b, c]
    assert [n for n, _ in sub.named_children()] == ["1", "2"]   # names kept, as in PyTorch
    seq[1] = nn.Tanh()
    assert isinstance(seq[1], nn.Tanh)
    with pytest.raises(IndexError, match="out of range"):
        seq[3]
    with pytest.raises(TypeError, match="not a Module"):
        nn.Sequential(a, lambda x: x)
    from collections import OrderedDict
    named = nn.Sequential(OrderedDict(fc=a, act=b))
    assert [n for n, _ in named.named_parameters()] == ["fc.weight", "fc.bias"]

    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    layers.insert(1, nn.Linear(2, 4))
    del layers[0]
    assert [m.out_features for m in layers] == [4, 2, 2]
    assert [n for n, _ in layers.named_parameters()][:2] == ["0.weight", "0.bias"]
    with pytest.raises(NotImplementedError, match="forward"):
        layers(tg.ones(2))


def test_container_deletion_renumbers_and_assignment_takes_one_index():
    from collections import OrderedDict
    mods = [nn.Linear(2, 2), nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.Linear(2, 1)]
    seq = nn.Sequential(*mods)
    del seq[1]
    assert list(seq) == [mods[0]] + mods[2:]
    del seq[1:3]
    assert list(seq) == [mods[0], mods[4]]
    # the children are numbered again from 0, as in PyTorch (so are their state-dict keys)
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    named = nn.Sequential(OrderedDict(fc=mods[0], act=mods[1], out=mods[4]))
    del named[-2]
    assert [n for n, _ in named.named_children()] == ["0", "1"] and named[1] is mods[4]
    layers = nn.ModuleList(mods)
    del layers[::2]
    assert list(layers) == [mods[1], mods[3]]
    assert [n for n, _ in layers.named_children()] == ["0", "1"]
    for container in (seq, layers):
        kind = type(container).__name__
        with pytest.raises(TypeError, match=rf"{kind} does not support slice assignment"):
            container[0:1] = nn.Tanh()
        with pytest.raises(TypeError, match=rf"{kind} indices must be integers.*got str"):
            container["0"] = nn.Tanh()
        with pytest.raises(TypeError, match=rf"{kind} indices must be integers.*got str"):
            del container["0"]
        with pytest.raises(IndexError, match=rf"index 2 is out of range for a {kind} of 2"):
            del container[2]
        with pytest.raises(IndexError, match=rf"index -3 is out of range for a {kind} of 2"):
            container[-3] = nn.Tanh()
        container[-1] = nn.Tanh()
        assert isinstance(container[1], nn.Tanh) and len(container) == 2


# ---- ModuleDict, ParameterList, ParameterDict ----------------------------------------
class Router(nn.Module):
    """Every kind of keyed and parameter container, for state-dict tests."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleDict({"conv": nn.Conv2d(1, 2, 3, padding=1),
                                     "bn": nn.BatchNorm2d(2)})
        self.blocks.update([("head", nn.Linear(2 * 4 * 4, 3))])
        self.scales = nn.ParameterList([tg.ones(2), nn.Parameter(np.full(3, 0.5, np.float32))])
        self.gains = nn.ParameterDict({"out": tg.ones(3), "in": tg.ones(1)})

    def forward(self, x):
        x = self.blocks["bn"](self.blocks["conv"](x * self.gains["in"])).relu()
        x = x * self.scales[0].reshape(1, 2, 1, 1)
        return self.blocks["head"](x.reshape(x.shape[0], -1)) * self.gains["out"] + self.scales[1]


ROUTER_KEYS = [
    "blocks.conv.weight", "blocks.conv.bias", "blocks.bn.weight", "blocks.bn.bias",
    "blocks.bn.running_mean", "blocks.bn.running_var", "blocks.bn.num_batches_tracked",
    "blocks.head.weight", "blocks.head.bias", "scales.0", "scales.1",
    "gains.in", "gains.out"]   # a plain dict's keys sorted, as PyTorch's ParameterDict does


def test_keyed_containers_state_dict_matches_torch():
    torch = pytest.importorskip("torch")
    tnn = torch.nn

    class TorchRouter(tnn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = tnn.ModuleDict({"conv": tnn.Conv2d(1, 2, 3, padding=1),
                                          "bn": tnn.BatchNorm2d(2)})
            self.blocks.update([("head", tnn.Linear(2 * 4 * 4, 3))])
            self.scales = tnn.ParameterList([torch.ones(2), tnn.Parameter(torch.full((3,), 0.5))])
            self.gains = tnn.ParameterDict({"out": torch.ones(3), "in": torch.ones(1)})

        def forward(self, x):
            x = torch.relu(self.blocks["bn"](self.blocks["conv"](x * self.gains["in"])))
            x = x * self.scales[0].reshape(1, 2, 1, 1)
            return (self.blocks["head"](x.reshape(x.shape[0], -1)) * self.gains["out"]
                    + self.scales[1])

    torch.manual_seed(0)
    theirs, ours = TorchRouter(), Router()
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert list(theirs.state_dict()) == list(ours.state_dict()) == ROUTER_KEYS
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((5, 1, 4, 4)).astype(np.float32)
    for mode in ("train", "eval"):   # batch statistics, then the running ones
        getattr(ours, mode)(), getattr(theirs, mode)()
        np.testing.assert_allclose(ours(tg.tensor(x)).numpy(),
                                   theirs(torch.tensor(x)).detach().numpy(),
                                   rtol=1e-5, atol=1e-6, err_msg=mode)
    for (key, value), theirs_value in zip(ours.state_dict().items(),
                                          theirs.state_dict().values()):
        np.testing.assert_allclose(value.numpy(), theirs_value.numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=key)


def _module_dict_story(lib, make):
    """The same ModuleDict operations on ``lib.nn``; ``make(n)`` is a layer with n outputs."""
    from collections import OrderedDict
    md = lib.nn.ModuleDict({"c": make(1), "a": make(2)})   # a plain dict keeps its order
    md.update([("b", make(3)), ("a", make(4))])   # "a" replaced in its place
    md.update(OrderedDict(z=make(5), d=make(6)))
    md["e"] = make(7)
    del md["c"]
    popped = md.pop("z")
    parent = lib.nn.Module()
    parent.blocks = md
    story = {
        "keys": list(md), "keys()": list(md.keys()),
        "values": [m.out_features for m in md.values()],
        "items": [(k, m.out_features) for k, m in md.items()],
        "in": ("a" in md, "z" in md, 0 in md), "len": len(md), "popped": popped.out_features,
        "getitem": md["d"].out_features, "attribute": md.d.out_features,
        "state_dict": list(parent.state_dict()),
        "named_modules": [n for n, _ in parent.named_modules()],
        "parameters": [tuple(p.shape) for p in parent.parameters()], "repr": repr(md),
    }
    md.clear()
    story["cleared"] = (len(md), list(parent.state_dict()))
    return story


def test_module_dict_operations_match_torch():
    torch = pytest.importorskip("torch")
    ours = _module_dict_story(tg, lambda n: nn.Linear(2, n))
    theirs = _module_dict_story(torch, lambda n: torch.nn.Linear(2, n))
    assert ours == theirs
    assert ours["keys"] == ["a", "b", "d", "e"] and ours["values"] == [4, 3, 6, 7]


def _parameter_container_story(lib, tensor):
    """The same ParameterList/ParameterDict operations on ``lib.nn``; ``tensor(values)``
    makes a plain float32 tensor of ``lib``."""
    from collections import OrderedDict
    Parameter = lib.nn.Parameter
    pl = lib.nn.ParameterList([tensor([1.0, 2.0])])
    pl.append(tensor([3.0]))
    kept = Parameter(tensor([6.0]))
    pl.extend([tensor([4.0, 5.0]), kept])
    pl += [tensor([7.0])]
    pl[1] = tensor([8.0, 9.0])
    sub = pl[1:4:2]
    pd = lib.nn.ParameterDict({"b": tensor([1.0]), "a": tensor([2.0])})
    pd.update(OrderedDict(z=tensor([3.0]), c=tensor([4.0])))
    pd.update([("y", tensor([5.0])), ("a", tensor([6.0]))])
    pd.update({"x": tensor([7.0]), "w": tensor([8.0])})
    pd["v"] = tensor([9.0])
    shared = Parameter(tensor([0.5]))
    pd.setdefault("u", shared)
    pd.setdefault("b", tensor([0.0]))          # present: unchanged
    popped = pd.popitem()
    pd.pop("z")
    del pd["c"]
    merged = pd | OrderedDict(t=tensor([1.0]))
    copied = pd.copy()
    pd |= [("s", tensor([2.0]))]
    fresh = pd.fromkeys(["k", "j"], shared)
    values = lambda ps: [p.tolist() for p in ps]   # noqa: E731
    return {
        "list": values(pl), "list_state": list(pl.state_dict()), "len": len(pl),
        "wrapped": [type(p) is Parameter and p.requires_grad and p.is_leaf for p in pl],
        "kept": pl[3] is kept, "slice": (type(sub).__name__, values(sub), sub[1] is kept),
        "list_repr": repr(pl).replace("torch.", ""),
        "dict": list(pd), "dict_values": values(pd.values()),
        "dict_state": list(pd.state_dict()), "popped": (popped[0], popped[1].tolist()),
        "merged": list(merged), "copied": (list(copied), all(copied[k] is pd[k] for k in copied)),
        "fromkeys": (list(fresh.state_dict()), len(list(fresh.parameters()))),
        "get": (pd.get("nope") is None, pd.get("a").tolist()), "in": ("a" in pd, 1 in pd),
        "reversed": list(reversed(pd)),
        "wrapped_dict": [type(p) is Parameter and p.requires_grad for p in pd.values()],
    }


def test_parameter_list_and_dict_operations_match_torch():
    torch = pytest.importorskip("torch")
    ours = _parameter_container_story(tg, lambda v: tg.tensor(v, dtype=tg.float32))
    theirs = _parameter_container_story(torch, lambda v: torch.tensor(v, dtype=torch.float32))
    assert ours == theirs
    assert ours["dict"] == ["a", "b", "y", "w", "x", "v", "s"]   # {"x", "w"} sorted
    assert ours["list"] == [[1.0, 2.0], [8.0, 9.0], [4.0, 5.0], [6.0], [7.0]]


def test_module_dict_registers_its_modules():
    conv, act, pool = nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2)
    md = nn.ModuleDict({"conv": conv, "act": act})
    assert list(md) == list(md.keys()) == ["conv", "act"] and len(md) == 2
    assert list(md.values()) == [conv, act] and list(md.items()) == [("conv", conv), ("act", act)]
    assert md["conv"] is conv and md.conv is conv and "act" in md
    assert "pool" not in md and 0 not in md
    md["pool"] = pool
    new_conv = nn.Conv2d(1, 2, 3)
    md["conv"] = new_conv                        # replaced where it was
    assert list(md) == ["conv", "act", "pool"] and md["conv"] is new_conv

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = md

        def forward(self, x):
            return self.blocks["pool"](self.blocks["act"](self.blocks["conv"](x)))

    net = Net()
    assert list(net.state_dict()) == ["blocks.conv.weight", "blocks.conv.bias"]
    assert [n for n, _ in net.named_modules()] == [
        "", "blocks", "blocks.conv", "blocks.act", "blocks.pool"]
    opt = optim.SGD(net.parameters(), lr=0.1)   # the optimiser sees the dict's parameters
    before = new_conv.weight.numpy().copy()
    net(tg.randn(2, 1, 6, 6)).sum().backward()
    opt.step()
    assert not np.array_equal(new_conv.weight.numpy(), before)
    assert net.to(dtype=np.float64) is net and new_conv.weight.dtype == np.float64
    net.eval()
    assert not any(m.training for m in md.values())
    assert md.pop("pool") is pool and list(md) == ["conv", "act"]
    del md["conv"]
    assert list(net.state_dict()) == [] and list(md) == ["act"]
    md.clear()
    assert len(md) == 0 and list(net.named_modules()) == [("", net), ("blocks", md)]


def _fresh_module_dict():
    return nn.ModuleDict({"conv": nn.Conv2d(1, 1, 1)})


@pytest.mark.parametrize("call, error, match", [
    (lambda md: md.__setitem__(1, nn.ReLU()), TypeError, r"module name must be a string, got int"),
    (lambda md: md.__setitem__("a.b", nn.ReLU()), KeyError,
     r"module name 'a\.b' must be a non-empty string without '\.'"),
    (lambda md: md.__setitem__("", nn.ReLU()), KeyError, r"module name '' must be a non-empty"),
    (lambda md: md.__setitem__("keys", nn.ReLU()), KeyError, r"attribute 'keys' already exists"),
    (lambda md: md.__setitem__("training", nn.ReLU()), KeyError,
     r"attribute 'training' already exists"),
    (lambda md: md.__setitem__("x", 3), TypeError, r"ModuleDict\['x'\]: int is not a Module"),
    (lambda md: md.__setitem__("x", None), TypeError, r"NoneType is not a Module"),
    (lambda md: md["nope"], KeyError,
     r"'nope' is not a key of this ModuleDict \(its keys: 'conv'\)"),
    (lambda md: md[0], KeyError, r"ModuleDict keys are strings, got 0 \(int\)"),
    (lambda md: md.__delitem__("nope"), KeyError, r"'nope' is not a key of this ModuleDict"),
    (lambda md: md.pop("nope"), KeyError, r"'nope' is not a key"),
    (lambda md: md.update(3), TypeError,
     r"ModuleDict\.update: expected a mapping or an iterable of \(key, module\) pairs, got int"),
    (lambda md: md.update("ab"), TypeError, r"pairs, got str"),
    (lambda md: md.update([nn.ReLU()]), TypeError,
     r"element #0 is ReLU\(\) \(ReLU\), not a \(key, module\) pair"),
    (lambda md: md.update([("a", nn.ReLU(), 1)]), ValueError,
     r"element #0 has 3 items; a \(key, module\) pair has 2"),
    # a bad entry after a good one adds neither
    (lambda md: md.update({"ok": nn.ReLU(), "b": 2}), TypeError,
     r"ModuleDict\.update: key 'b': int is not a Module"),
    (lambda md: md.update([("ok", nn.ReLU()), ("a.b", nn.ReLU())]), KeyError, r"'a\.b'"),
    (lambda md: md.update([("ok", nn.ReLU()), (3, nn.ReLU())]), TypeError,
     r"module name must be a string, got int"),
    (lambda md: nn.ModuleDict(nn.ReLU()), TypeError, r"pairs, got ReLU"),
])
def test_module_dict_refuses_bad_keys_and_values(call, error, match):
    md = _fresh_module_dict()
    conv = md["conv"]
    with pytest.raises(error, match=match):
        call(md)
    assert list(md.items()) == [("conv", conv)]   # nothing changed


def test_parameter_list_wraps_tensors_and_registers_them():
    source = tg.tensor([1.0, 2.0])                # requires_grad=False
    pl = nn.ParameterList([source])
    p = pl[0]
    assert type(p) is nn.Parameter and p.requires_grad and p.is_leaf
    source.data[...] = 0                          # a copy, as every Parameter here
    assert p.tolist() == [1.0, 2.0]
    w = nn.Parameter(np.ones(3, np.float32))
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    pl.append(w).append(x * 2)                     # a computed tensor becomes a leaf
    assert pl[1] is w and pl[2].is_leaf and pl[2].tolist() == [2.0, 4.0]
    pl.append(None)                                # absent, as a layer's bias=None
    assert len(pl) == 4 and pl[3] is None and pl[-1] is None
    assert list(pl.state_dict()) == ["0", "1", "2"]
    assert [n for n, _ in pl.named_parameters()] == ["0", "1", "2"]
    pl[-1] = tg.zeros(1)
    assert list(pl.state_dict()) == ["0", "1", "2", "3"] and type(pl[3]) is nn.Parameter
    sub = pl[1:3]
    assert type(sub) is nn.ParameterList and list(sub) == [w, pl[2]]
    assert list(sub.state_dict()) == ["0", "1"]
    # An optimiser takes a ParameterList as its parameters, as in PyTorch.
    opt = optim.SGD(pl, lr=1.0)
    sum(q.sum() for q in pl).backward()
    opt.step()
    assert pl[1].tolist() == [0.0, 0.0, 0.0] and p.tolist() == [0.0, 1.0]
    assert pl.to(dtype=np.float64) is pl and pl[1] is w and w.dtype == np.float64
    assert repr(nn.ParameterList([tg.zeros(2, 3)])) == (
        "ParameterList(  (0): Parameter containing: [float32 of size 2x3])")
    assert repr(nn.ParameterList([tg.zeros(2), None])) == (
        "ParameterList(\n    (0): Parameter containing: [float32 of size 2]\n    (1): None\n)")


def test_parameter_dict_keeps_ordered_keys_and_registers_them():
    from collections import OrderedDict
    w = nn.Parameter(np.ones(2, np.float32))
    assert list(nn.ParameterDict({"b": tg.zeros(1), "a": w})) == ["a", "b"]  # sorted
    pd = nn.ParameterDict(OrderedDict(b=tg.zeros(1), a=w))                    # as given
    assert list(pd) == ["b", "a"] and pd["a"] is w and pd.a is w
    assert type(pd["b"]) is nn.Parameter and pd["b"].requires_grad
    pd["b"] = tg.ones(3)                       # replaced where it was
    pd["c"] = None
    assert list(pd.keys()) == ["b", "a", "c"] and pd["c"] is None
    assert list(pd.state_dict()) == ["b", "a"] and len(pd) == 3
    assert pd.get("c", 1) is None and pd.get("nope", 1) == 1 and pd.get(0) is None
    assert pd.setdefault("a", tg.zeros(1)) is w
    assert pd.popitem() == ("c", None) and pd.pop("b").tolist() == [1.0, 1.0, 1.0]
    shared = pd.fromkeys(["x", "y"], w)         # one Parameter under two keys
    assert list(shared.state_dict()) == ["x", "y"] and list(shared.parameters()) == [w]
    assert (pd | {"z": tg.zeros(1)})["a"] is w and list(pd) == ["a"]
    pd |= {"z": tg.zeros(1)}
    assert list(reversed(pd)) == ["z", "a"]
    holder = nn.Module()
    holder.gains = pd
    opt = optim.SGD(holder.parameters(), lr=1.0)
    (pd["a"].sum() + pd["z"].sum()).backward()
    opt.step()
    assert w.tolist() == [0.0, 0.0] and pd["z"].tolist() == [-1.0]
    assert list(holder.state_dict()) == ["gains.a", "gains.z"]
    pd.clear()
    assert len(pd) == 0 and list(holder.state_dict()) == []


def _fresh_parameter_containers():
    return nn.ParameterList([tg.zeros(1)]), nn.ParameterDict({"a": tg.zeros(1)})


@pytest.mark.parametrize("call, error, match", [
    (lambda pl, pd: pl.append(np.zeros(2)), TypeError,
     r"ParameterList\.append: expected a Parameter, a Tensor or None, got ndarray"),
    (lambda pl, pd: pl.append(nn.ReLU()), TypeError, r"got ReLU"),
    (lambda pl, pd: pl.append(tg.tensor([1, 2])), TypeError,
     r"a Tensor of dtype int64 cannot be a Parameter"),
    (lambda pl, pd: pl.extend(tg.zeros(3)), TypeError,
     r"ParameterList\.extend: expected an iterable of Parameters or Tensors .*got Tensor"),
    (lambda pl, pd: pl.extend(3), TypeError, r"ParameterList\.extend: .*got int"),
    (lambda pl, pd: pl.extend([tg.zeros(1), "x"]), TypeError,
     r"ParameterList\.extend: element 1: expected a Parameter, a Tensor or None, got str"),
    (lambda pl, pd: pl[1], IndexError, r"index 1 is out of range for a ParameterList of 1 "
                                       r"parameters"),
    (lambda pl, pd: pl["0"], TypeError, r"ParameterList indices must be integers or slices"),
    (lambda pl, pd: pl.__setitem__(slice(0, 1), tg.zeros(1)), TypeError,
     r"ParameterList does not support slice assignment"),
    (lambda pl, pd: pl.__setitem__(1, tg.zeros(1)), IndexError, r"index 1 is out of range"),
    (lambda pl, pd: pl.__delitem__(0), (TypeError, AttributeError), None),  # as in PyTorch
    (lambda pl, pd: pl(tg.zeros(1)), RuntimeError, r"a ParameterList cannot be called"),
    (lambda pl, pd: pd.__setitem__(1, tg.zeros(1)), TypeError,
     r"parameter name must be a string, got int"),
    (lambda pl, pd: pd.__setitem__("a.b", tg.zeros(1)), KeyError, r"without '\.'"),
    (lambda pl, pd: pd.__setitem__("", tg.zeros(1)), KeyError, r"non-empty"),
    (lambda pl, pd: pd.__setitem__("pop", tg.zeros(1)), KeyError,
     r"attribute 'pop' already exists"),
    (lambda pl, pd: pd.__setitem__("b", [1.0]), TypeError,
     r"ParameterDict\['b'\]: expected a Parameter, a Tensor or None, got list"),
    (lambda pl, pd: pd[1], TypeError, r"ParameterDict keys are strings, got 1 \(int\)"),
    (lambda pl, pd: pd["nope"], KeyError,
     r"'nope' is not a key of this ParameterDict \(its keys: 'a'\)"),
    (lambda pl, pd: pd.__delitem__("nope"), KeyError, r"'nope' is not a key"),
    (lambda pl, pd: nn.ParameterDict().popitem(), KeyError, r"the ParameterDict is empty"),
    (lambda pl, pd: pd.update({"ok": tg.zeros(1), "bad": np.zeros(1)}), TypeError,
     r"ParameterDict\.update: key 'bad': expected a Parameter"),
    (lambda pl, pd: pd.update([("ok", tg.zeros(1)), ("a.b", tg.zeros(1))]), KeyError,
     r"'a\.b'"),
    (lambda pl, pd: pd.update([("ok", tg.zeros(1)), ("x",)]), ValueError,
     r"element #1 has 1 items; a \(key, parameter\) pair has 2"),
    (lambda pl, pd: pd(tg.zeros(1)), RuntimeError, r"a ParameterDict cannot be called"),
])
def test_parameter_containers_refuse_bad_entries(call, error, match):
    pl, pd = _fresh_parameter_containers()
    entries = list(pl) + list(pd.values())
    with pytest.raises(error, match=match):
        call(pl, pd)
    assert list(pl) + list(pd.values()) == entries and list(pd) == ["a"]   # nothing changed


def test_containers_round_trip_through_a_checkpoint(tmp_path):
    from tinygrad_cnn import checkpoint
    tg.manual_seed(0)
    model = Router()
    x = tg.randn(4, 1, 4, 4)
    model(x)                                     # training mode: running statistics move
    for p in model.parameters():
        p.data[...] += tg.get_rng().standard_normal(p.shape).astype(np.float32)
    path = checkpoint.save(tmp_path / "router.npz", {"model": model.state_dict()})
    tg.manual_seed(1)
    other = Router()
    assert not np.array_equal(other.scales[0].numpy(), model.scales[0].numpy())
    result = other.load_state_dict(checkpoint.load(path)["model"])
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert list(other.state_dict()) == ROUTER_KEYS
    for (key, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=key)
    model.eval(), other.eval()
    np.testing.assert_array_equal(model(x).numpy(), other(x).numpy())


# ---- nn.utils -----------------------------------------------------------------------
def test_nn_utils_clipping_is_optims():
    import tinygrad_cnn.nn.utils as utils
    assert utils is nn.utils
    assert nn.utils.clip_grad_norm_ is optim.clip_grad_norm_
    assert nn.utils.clip_grad_value_ is optim.clip_grad_value_
    pl = nn.ParameterList([tg.ones(3), tg.ones(4)])
    sum(p.sum() for p in pl).backward()            # gradients of ones: norm sqrt(7)
    total = nn.utils.clip_grad_norm_(pl, 1.0)      # a ParameterList is its parameters
    assert total.item() == pytest.approx(math.sqrt(7), rel=1e-6)
    np.testing.assert_allclose(pl[0].grad.numpy(), 1 / math.sqrt(7), rtol=1e-5)
    nn.utils.clip_grad_value_(pl.parameters(), 0.1)
    np.testing.assert_array_equal(pl[1].grad.numpy(), np.full(4, 0.1, np.float32))


def test_parameter_vectors_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in [(2, 3), (4,), (), (1, 2, 2)]]
    ours = [nn.Parameter(a) for a in arrays]
    theirs = [torch.nn.Parameter(torch.tensor(a)) for a in arrays]
    v, tv = nn.utils.parameters_to_vector(ours), torch.nn.utils.parameters_to_vector(theirs)
    assert v.shape == tuple(tv.shape) == (15,) and v.dtype == np.float32
    np.testing.assert_array_equal(v.numpy(), tv.detach().numpy())
    w = rng.standard_normal(15).astype(np.float32)
    (v * v * tg.tensor(w)).sum().backward()        # gradients flow back to the parameters
    (tv * tv * torch.tensor(w)).sum().backward()
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-6)
    new = rng.standard_normal(15).astype(np.float32)
    nn.utils.vector_to_parameters(tg.tensor(new), ours)
    torch.nn.utils.vector_to_parameters(torch.tensor(new), theirs)
    for p, tp, a in zip(ours, theirs, arrays):
        assert p.shape == a.shape and p.dtype == np.float32 and p.is_leaf
        np.testing.assert_array_equal(p.numpy(), tp.detach().numpy())
    mixed = [nn.Parameter(arrays[1]), nn.Parameter(arrays[0].astype(np.float64))]
    tmixed = [torch.tensor(arrays[1]), torch.tensor(arrays[0], dtype=torch.float64)]
    assert nn.utils.parameters_to_vector(mixed).dtype == np.float64
    assert torch.nn.utils.parameters_to_vector(tmixed).dtype == torch.float64


def test_parameter_vectors_on_a_device(device):
    model = nn.Linear(3, 2).to(device)
    weight = model.weight
    v = nn.utils.parameters_to_vector(model.parameters())
    assert v.device == device and v.shape == (8,)
    expected = np.concatenate([model.weight.numpy().ravel(), model.bias.numpy()])
    np.testing.assert_array_equal(v.numpy(), expected)
    # float64 values into float32 parameters: cast, in place, the dtype kept
    nn.utils.vector_to_parameters(tg.tensor(np.arange(8.0), device=device), model.parameters())
    assert model.weight is weight and weight.dtype == np.float32 and weight.device == device
    np.testing.assert_array_equal(weight.numpy(), np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(model.bias.numpy(), [6.0, 7.0])


def test_vector_to_parameters_checks_a_narrowing_cast_with_one_sync():
    # A float64 vector into float32 parameters is checked for overflow: one host
    # synchronisation for all of them, not one per parameter.
    pytest.importorskip("strict_backend")
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2)).to("strict")
    vec = tg.tensor(np.arange(14.0), device="strict")
    with tg.get_backend("strict").track_syncs() as log:
        nn.utils.vector_to_parameters(vec, model.parameters())
    assert len(log) == 1, log
    np.testing.assert_array_equal(model[1].bias.numpy(), [12.0, 13.0])


def test_vector_to_parameters_writes_a_read_only_parameter_on_a_copy():
    # As an optimiser step does: the parameter gets data of its own, its base is untouched.
    base = tg.zeros(1, 3)
    p = base.expand(2, 3).detach().requires_grad_()
    nn.utils.vector_to_parameters(tg.arange(6.0), [p])
    np.testing.assert_array_equal(p.numpy(), np.arange(6.0).reshape(2, 3))
    assert not base.numpy().any()


def _vector_case_params():
    return [nn.Parameter(np.zeros((2, 3), np.float32)), nn.Parameter(np.zeros(2, np.float32))]


@pytest.mark.parametrize("vec, params, error, match", [
    (lambda: [0.0] * 8, None, TypeError, r"vec must be a Tensor, got list"),
    (lambda: tg.zeros(2, 4), None, ValueError,
     r"vec must be a 1-d vector, got shape \(2, 4\); flatten it"),
    (lambda: tg.zeros(8, dtype="int64"), None, TypeError, r"vec has dtype int64"),
    (lambda: tg.zeros(7), None, ValueError,
     r"vec has 7 elements but the 2 parameter\(s\) have 8 in all \(shapes \(2, 3\), \(2,\)\)"),
    (lambda: tg.zeros(9), None, ValueError, r"vec has 9 elements but .* have 8 in all"),
    (lambda: tg.zeros(8), lambda ps: nn.Sequential(nn.Linear(3, 2)), TypeError,
     r"params is a Sequential model; pass its parameters"),
    (lambda: tg.zeros(8), lambda ps: ps + [tg.zeros(2, dtype="int64")], TypeError,
     r"parameter 2 has dtype int64; expected floating-point tensors"),
    # the last value overflows float32: refused before the first parameter is changed
    (lambda: tg.tensor(np.r_[np.ones(7), 1e300]), None, ValueError,
     r"parameter 1 is float32 and its slice of vec \(float64\) holds values beyond"),
    (lambda: tg.zeros(8, device="strict"), None, tg.DeviceError,
     r"vec is on strict but the parameters are on cpu; move it with vec.to\('cpu'\)"),
    (lambda: tg.zeros(8), lambda ps: [ps[0], ps[1].to("strict")], tg.DeviceError,
     r"parameter 0 is on cpu but parameter 1 is on strict"),
], ids=["list", "2d", "int", "short", "long", "model", "int-param", "overflow",
        "vec-device", "param-devices"])
def test_vector_to_parameters_refuses_bad_vectors(vec, params, error, match):
    pytest.importorskip("strict_backend")
    ps = _vector_case_params()
    target = ps if params is None else params(ps)
    with pytest.raises(error, match=match):
        nn.utils.vector_to_parameters(vec(), target)
    assert all(not p.numpy().any() for p in ps)   # nothing changed


@pytest.mark.parametrize("params, error, match", [
    (lambda: [], ValueError, r"parameters_to_vector: no parameters were given"),
    (lambda: nn.Linear(2, 2), TypeError, r"params is a Linear model; pass its parameters"),
    (lambda: 3, TypeError, r"params must be a Tensor or an iterable of tensors"),
    (lambda: [tg.zeros(1), 3], TypeError, r"parameter 1 is a int, not a Tensor"),
    (lambda: [tg.zeros(1), tg.zeros(1, device="strict")], tg.DeviceError,
     r"parameters_to_vector: parameter 0 is on cpu but parameter 1 is on strict"),
])
def test_parameters_to_vector_refuses_bad_parameters(params, error, match):
    pytest.importorskip("strict_backend")
    with pytest.raises(error, match=match):
        nn.utils.parameters_to_vector(params())


def test_optimizers_take_a_parameter_list_but_not_other_modules():
    pl = nn.ParameterList([tg.ones(2)])
    assert optim.SGD(pl, lr=0.1).param_groups[0]["params"] == [pl[0]]
    with pytest.raises(TypeError, match=r"params is a ParameterDict model; pass its "
                                        r"parameters: model\.parameters\(\)"):
        optim.SGD(nn.ParameterDict({"a": tg.ones(2)}), lr=0.1)
    with pytest.raises(TypeError, match=r"params is a ModuleList model"):
        optim.SGD(nn.ModuleList([nn.Linear(2, 2)]), lr=0.1)


def test_modes_grads_and_hooks():
    net = Net()
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net.train(np.bool_(False))          # the package's flag check: NumPy bools are bools
    assert not any(m.training for m in net.modules()) and net.training is False
    with pytest.raises(TypeError, match=r"train: mode must be True or False, got 1 \(int\)"):
        net.train(1)
    net.train()
    net(tg.randn(2, 2, 4, 4)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())

    seen = []
    handle = net.block.register_forward_hook(lambda m, args, out: seen.append(out.shape))
    pre = net.head.register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    out = net(tg.randn(2, 2, 4, 4))
    assert seen == [(2, 3, 4, 4)]
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(net.head[1].bias.numpy(), (2, 5)),
                               rtol=1e-6)
    handle.remove(), pre.remove()
    net(tg.randn(2, 2, 4, 4))
    assert len(seen) == 1


def test_train_calls_each_childs_own_train():
    """As in PyTorch, a parent's train()/eval() reaches every descendant through its
    children's own train(): a module that overrides it (to keep a frozen BatchNorm in
    evaluation mode, say) is obeyed when a model it is part of changes mode."""
    class FrozenNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(2)
            self.fc = nn.Linear(2, 2)

        def train(self, mode=True):
            super().train(mode)
            self.bn.eval()
            return self

        def forward(self, x):
            return self.fc(self.bn(x))

    model = nn.Sequential(FrozenNorm(), nn.ReLU())
    assert model.train() is model
    block = model[0]
    assert model.training and block.training and block.fc.training and model[1].training
    assert not block.bn.training
    model(tg.randn(4, 2))
    assert int(block.bn.num_batches_tracked.numpy()) == 0   # the running statistics stay
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train(True)
    assert not block.bn.training and block.fc.training


def test_module_misuse_errors():
    class Forgot(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(1))

    with pytest.raises(AttributeError, match="super"):
        Forgot()
    lin = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="Parameter"):
        lin.weight = tg.zeros(2, 2)
    lin.bias = None                     # an absent parameter is fine
    assert [n for n, _ in lin.named_parameters()] == ["weight"]
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(1)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lin.nope
    with pytest.raises(TypeError, match="floating-point"):
        nn.Parameter(np.arange(3))


def test_names_taken_by_other_attributes_are_refused():
    from collections import OrderedDict

    # A class attribute wins over __getattr__: a tensor registered as "eval" would be
    # saved and optimised but unreachable, so (as in PyTorch) the name is refused.
    class Shadow(nn.Module):
        def __init__(self):
            super().__init__()
            self.eval = nn.Parameter(np.ones(3))

    with pytest.raises(KeyError, match="attribute 'eval' already exists"):
        Shadow()
    lin = nn.Linear(2, 2)
    for register, value in ((lin.register_buffer, tg.zeros(1)),
                            (lin.register_parameter, nn.Parameter(np.zeros(1))),
                            (lin.add_module, nn.ReLU())):
        for name in ("forward", "training", "in_features", "_parameters"):
            with pytest.raises(KeyError, match=f"attribute '{name}' already exists"):
                register(name, value)
    with pytest.raises(KeyError, match="attribute 'train' already exists"):
        nn.Sequential(OrderedDict(train=nn.ReLU()))
    with pytest.raises(KeyError, match="attribute 'training' already exists"):
        lin.training = nn.Parameter(np.zeros(1))
    assert list(lin.state_dict()) == ["weight", "bias"] and lin.training is True
    # A registered name may be registered again, as another kind; an assignment
    # replaces a plain instance attribute, as in PyTorch.
    lin.register_buffer("bias", tg.zeros(2))
    assert [n for n, _ in lin.named_parameters()] == ["weight"] and "bias" in lin.state_dict()
    lin.scale = 2.0
    lin.scale = nn.Parameter(np.ones(1))
    assert isinstance(lin.scale, nn.Parameter) and "scale" in lin.state_dict()
    # a layer built without bias keeps the name free for one
    for layer in (nn.Linear(2, 3, bias=False), nn.Conv2d(2, 3, 1, bias=False),
                  nn.LocallyConnected2d(2, 3, 4, 1, bias=False)):
        assert layer.bias is None and "bias" not in layer.state_dict()
        layer.register_parameter("bias", nn.Parameter(np.zeros(3)))
        assert "bias" in layer.state_dict()


def test_parameter_owns_its_data_and_deepcopy_works():
    a = np.zeros(3)
    p = nn.Parameter(a)
    p.data += 1
    assert a.sum() == 0
    net = Net()
    twin = copy.deepcopy(net)
    x = tg.randn(2, 2, 4, 4)
    np.testing.assert_array_equal(net(x).numpy(), twin(x).numpy())
    assert twin.block.conv.weight is not net.block.conv.weight


def test_deepcopy_of_a_tensor_computed_by_ops_says_what_to_copy():
    # Its graph holds modules, which cannot be copied: PyTorch refuses it too, and the
    # error says to copy a detached tensor, not "cannot pickle 'module' object".
    p = nn.Parameter(np.ones(2))
    with pytest.raises(RuntimeError, match=r"shape \(2,\) computed by ops .*x\.detach\(\)"):
        copy.deepcopy({"last_out": p * 2, "p": p})
    p.grad = p * 1                        # a gradient assigned from an expression
    with pytest.raises(RuntimeError, match=r"grad_fn=<.*>\) cannot be deep-copied"):
        copy.deepcopy(p)
    p.grad = tg.ones(2, dtype="float64")
    twin = copy.deepcopy(p)
    assert type(twin) is nn.Parameter and twin.requires_grad and twin.is_leaf
    assert not np.shares_memory(twin.data, p.data)
    np.testing.assert_array_equal(twin.grad.numpy(), np.ones(2))
    assert twin.grad is not p.grad


# ---- layers against PyTorch -----------------------------------------------------------
LAYERS = {
    # name: (our layer, torch layer (given torch.nn), input shape)
    "linear": (lambda: nn.Linear(5, 3), lambda T: T.Linear(5, 3), (4, 5)),
    "linear-nobias-3d": (lambda: nn.Linear(5, 2, bias=False),
                         lambda T: T.Linear(5, 2, bias=False), (2, 3, 5)),
    "conv2d": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1),
               lambda T: T.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 7, 7)),
    "conv2d-groups-dilation": (
        lambda: nn.Conv2d(4, 6, (3, 2), dilation=(2, 1), groups=2, bias=False),
        lambda T: T.Conv2d(4, 6, (3, 2), dilation=(2, 1), groups=2, bias=False), (2, 4, 9, 8)),
    "conv2d-same": (lambda: nn.Conv2d(2, 3, 4, padding="same"),
                    lambda T: T.Conv2d(2, 3, 4, padding="same"), (1, 2, 5, 6)),
    "conv1d": (lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1),
               lambda T: T.Conv1d(3, 4, 3, stride=2, padding=1), (2, 3, 9)),
    # padding modes: F.pad of x, then a convolution with padding 0; "same" splits an even
    # kernel's padding as the zero padding does; the limits (reflect < size, circular <= size)
    "conv2d-reflect": (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=(1, 2), padding_mode="reflect"),
                       lambda T: T.Conv2d(2, 3, 3, stride=2, padding=(1, 2),
                                          padding_mode="reflect"), (2, 2, 5, 3)),
    "conv2d-replicate-beyond-size": (
        lambda: nn.Conv2d(2, 2, 2, padding=3, dilation=2, padding_mode="replicate"),
        lambda T: T.Conv2d(2, 2, 2, padding=3, dilation=2, padding_mode="replicate"),
        (1, 2, 2, 3)),
    "conv2d-circular-groups": (
        lambda: nn.Conv2d(4, 2, (2, 3), padding=(2, 3), groups=2, padding_mode="circular"),
        lambda T: T.Conv2d(4, 2, (2, 3), padding=(2, 3), groups=2, padding_mode="circular"),
        (2, 4, 2, 3)),
    "conv2d-same-reflect": (
        lambda: nn.Conv2d(2, 3, (4, 3), padding="same", dilation=(1, 2), padding_mode="reflect"),
        lambda T: T.Conv2d(2, 3, (4, 3), padding="same", dilation=(1, 2),
                           padding_mode="reflect"), (1, 2, 5, 6)),
    "conv2d-same-circular": (
        lambda: nn.Conv2d(2, 2, 2, padding="same", bias=False, padding_mode="circular"),
        lambda T: T.Conv2d(2, 2, 2, padding="same", bias=False, padding_mode="circular"),
        (2, 2, 3, 4)),
    "conv2d-valid-replicate": (
        lambda: nn.Conv2d(2, 2, 2, padding="valid", padding_mode="replicate"),
        lambda T: T.Conv2d(2, 2, 2, padding="valid", padding_mode="replicate"), (1, 2, 3, 3)),
    "conv1d-reflect": (lambda: nn.Conv1d(2, 3, 3, padding=2, padding_mode="reflect"),
                       lambda T: T.Conv1d(2, 3, 3, padding=2, padding_mode="reflect"), (2, 2, 4)),
    "conv1d-same-replicate": (
        lambda: nn.Conv1d(2, 3, 4, padding="same", padding_mode="replicate"),
        lambda T: T.Conv1d(2, 3, 4, padding="same", padding_mode="replicate"), (2, 2, 5)),
    "conv1d-circular": (lambda: nn.Conv1d(3, 2, 2, stride=2, padding=3, padding_mode="circular"),
                        lambda T: T.Conv1d(3, 2, 2, stride=2, padding=3,
                                           padding_mode="circular"), (1, 3, 3)),
    "conv-transpose2d": (
        lambda: nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1),
        lambda T: T.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1),
        (2, 4, 3, 3)),
    "conv-transpose2d-groups": (
        lambda: nn.ConvTranspose2d(4, 6, 2, groups=2, dilation=2),
        lambda T: T.ConvTranspose2d(4, 6, 2, groups=2, dilation=2), (1, 4, 3, 2)),
    "maxpool2d": (lambda: nn.MaxPool2d(3, stride=2, padding=1),
                  lambda T: T.MaxPool2d(3, stride=2, padding=1), (2, 3, 7, 7)),
    "maxpool2d-ceil": (lambda: nn.MaxPool2d(2, ceil_mode=True),
                       lambda T: T.MaxPool2d(2, ceil_mode=True), (1, 2, 5, 5)),
    "avgpool2d": (lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
                  lambda T: T.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
                  (2, 2, 6, 5)),
    "maxpool1d": (lambda: nn.MaxPool1d(3, stride=2), lambda T: T.MaxPool1d(3, stride=2),
                  (2, 3, 8)),
    "avgpool1d": (lambda: nn.AvgPool1d(2), lambda T: T.AvgPool1d(2), (2, 3, 8)),
    "avgpool2d-divisor-override": (
        lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False, divisor_override=2),
        lambda T: T.AvgPool2d(3, stride=2, padding=1, count_include_pad=False,
                              divisor_override=2), (2, 2, 6, 5)),
    # every setting a pooling layer keeps reaches the op (dilation and ceil_mode change the
    # windows, count_include_pad the divisor)
    "maxpool2d-dilation-ceil": (lambda: nn.MaxPool2d(2, dilation=2, ceil_mode=True),
                                lambda T: T.MaxPool2d(2, dilation=2, ceil_mode=True),
                                (1, 2, 6, 7)),
    "avgpool2d-ceil": (lambda: nn.AvgPool2d(2, ceil_mode=True),
                       lambda T: T.AvgPool2d(2, ceil_mode=True), (1, 2, 5, 5)),
    "maxpool1d-dilation-ceil": (lambda: nn.MaxPool1d(2, dilation=2, ceil_mode=True),
                                lambda T: T.MaxPool1d(2, dilation=2, ceil_mode=True), (2, 3, 8)),
    "avgpool1d-exclude-pad": (
        lambda: nn.AvgPool1d(3, stride=2, padding=1, count_include_pad=False),
        lambda T: T.AvgPool1d(3, stride=2, padding=1, count_include_pad=False), (2, 3, 8)),
    "adaptive-avg": (lambda: nn.AdaptiveAvgPool2d((2, 3)), lambda T: T.AdaptiveAvgPool2d((2, 3)),
                     (1, 2, 5, 7)),
    "adaptive-max": (lambda: nn.AdaptiveMaxPool2d(3), lambda T: T.AdaptiveMaxPool2d(3),
                     (1, 2, 5, 7)),
    # one unbatched image (C, H, W) or sequence (C, L): no batch axis out either
    "conv2d-unbatched": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1),
                         lambda T: T.Conv2d(3, 4, 3, stride=2, padding=1), (3, 7, 6)),
    "conv1d-unbatched": (lambda: nn.Conv1d(3, 4, 3, padding="same"),
                         lambda T: T.Conv1d(3, 4, 3, padding="same"), (3, 9)),
    "conv2d-reflect-unbatched": (
        lambda: nn.Conv2d(3, 4, 3, padding="same", padding_mode="reflect"),
        lambda T: T.Conv2d(3, 4, 3, padding="same", padding_mode="reflect"), (3, 5, 6)),
    "conv1d-circular-unbatched": (
        lambda: nn.Conv1d(3, 2, 3, padding=2, padding_mode="circular"),
        lambda T: T.Conv1d(3, 2, 3, padding=2, padding_mode="circular"), (3, 4)),
    "conv-transpose2d-unbatched": (
        lambda: nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1),
        lambda T: T.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1),
        (4, 3, 2)),
    "maxpool2d-unbatched": (lambda: nn.MaxPool2d(3, stride=2, padding=1),
                            lambda T: T.MaxPool2d(3, stride=2, padding=1), (3, 7, 6)),
    "avgpool2d-unbatched": (lambda: nn.AvgPool2d(2, ceil_mode=True),
                            lambda T: T.AvgPool2d(2, ceil_mode=True), (2, 5, 5)),
    "avgpool2d-divisor-override-unbatched": (
        lambda: nn.AvgPool2d(2, ceil_mode=True, divisor_override=3),
        lambda T: T.AvgPool2d(2, ceil_mode=True, divisor_override=3), (2, 5, 5)),
    "maxpool1d-unbatched": (lambda: nn.MaxPool1d(3, stride=2), lambda T: T.MaxPool1d(3, stride=2),
                            (3, 8)),
    "avgpool1d-unbatched": (lambda: nn.AvgPool1d(2), lambda T: T.AvgPool1d(2), (3, 8)),
    "adaptive-avg-unbatched": (lambda: nn.AdaptiveAvgPool2d((2, 3)),
                               lambda T: T.AdaptiveAvgPool2d((2, 3)), (2, 5, 7)),
    "adaptive-max-unbatched": (lambda: nn.AdaptiveMaxPool2d(3), lambda T: T.AdaptiveMaxPool2d(3),
                               (2, 5, 7)),
    "flatten": (lambda: nn.Flatten(), lambda T: T.Flatten(), (2, 3, 2, 2)),
    "relu": (lambda: nn.ReLU(), lambda T: T.ReLU(), (3, 4)),
    "leaky-relu": (lambda: nn.LeakyReLU(0.2), lambda T: T.LeakyReLU(0.2), (3, 4)),
    "tanh": (lambda: nn.Tanh(), lambda T: T.Tanh(), (3, 4)),
    "sigmoid": (lambda: nn.Sigmoid(), lambda T: T.Sigmoid(), (3, 4)),
    "softmax": (lambda: nn.Softmax(dim=1), lambda T: T.Softmax(dim=1), (3, 4, 2)),
    "log-softmax": (lambda: nn.LogSoftmax(dim=1), lambda T: T.LogSoftmax(dim=1), (3, 4)),
    "batchnorm1d": (lambda: nn.BatchNorm1d(3), lambda T: T.BatchNorm1d(3), (5, 3)),
    "batchnorm1d-3d": (lambda: nn.BatchNorm1d(3), lambda T: T.BatchNorm1d(3), (4, 3, 2)),
    "batchnorm2d": (lambda: nn.BatchNorm2d(3), lambda T: T.BatchNorm2d(3), (2, 3, 2, 3)),
    "layernorm-last": (lambda: nn.LayerNorm(4), lambda T: T.LayerNorm(4), (2, 3, 4)),
    "layernorm-chw-nobias": (lambda: nn.LayerNorm((3, 2, 2), bias=False),
                             lambda T: T.LayerNorm((3, 2, 2), bias=False), (2, 3, 2, 2)),
    "layernorm-no-affine": (lambda: nn.LayerNorm([2, 3], elementwise_affine=False),
                            lambda T: T.LayerNorm([2, 3], elementwise_affine=False), (1, 2, 3)),
    "groupnorm": (lambda: nn.GroupNorm(2, 4), lambda T: T.GroupNorm(2, 4), (2, 4, 3, 2)),
    "groupnorm-b1-features": (lambda: nn.GroupNorm(3, 6, eps=1e-3),
                              lambda T: T.GroupNorm(3, 6, eps=1e-3), (1, 6)),
    "groupnorm-no-affine": (lambda: nn.GroupNorm(1, 3, affine=False),
                            lambda T: T.GroupNorm(1, 3, affine=False), (2, 3, 5)),
    "instancenorm2d": (lambda: nn.InstanceNorm2d(3), lambda T: T.InstanceNorm2d(3),
                       (2, 3, 2, 3)),
    "instancenorm2d-affine-tracked": (
        lambda: nn.InstanceNorm2d(3, momentum=0.3, affine=True, track_running_stats=True),
        lambda T: T.InstanceNorm2d(3, momentum=0.3, affine=True, track_running_stats=True),
        (2, 3, 3, 2)),
    "instancenorm2d-unbatched-tracked-nobias": (
        lambda: nn.InstanceNorm2d(2, affine=True, track_running_stats=True, bias=False),
        lambda T: T.InstanceNorm2d(2, affine=True, track_running_stats=True, bias=False),
        (2, 3, 3)),
    "instancenorm1d": (lambda: nn.InstanceNorm1d(3), lambda T: T.InstanceNorm1d(3), (2, 3, 5)),
    "instancenorm1d-affine-tracked": (
        lambda: nn.InstanceNorm1d(3, momentum=0.3, affine=True, track_running_stats=True),
        lambda T: T.InstanceNorm1d(3, momentum=0.3, affine=True, track_running_stats=True),
        (4, 3, 2)),
    "instancenorm1d-unbatched-tracked-nobias": (
        lambda: nn.InstanceNorm1d(2, eps=1e-3, affine=True, track_running_stats=True,
                                  bias=False),
        lambda T: T.InstanceNorm1d(2, eps=1e-3, affine=True, track_running_stats=True,
                                   bias=False),
        (2, 6)),
}


def _randomise(module, rng):
    """Replace every float parameter and buffer with random values (away from defaults)."""
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t.dtype.kind == "f":
            positive = name.endswith("running_var")
            t.data[...] = rng.uniform(0.5, 1.5, t.shape) if positive else \
                rng.standard_normal(t.shape)


@pytest.mark.filterwarnings("ignore::UserWarning")   # torch's note on padding="same"
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_matches_torch(name):
    torch = pytest.importorskip("torch")
    ours_f, theirs_f, shape = LAYERS[name]
    rng = np.random.default_rng(0)
    theirs = theirs_f(torch.nn).double()
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.tensor(rng.standard_normal(tuple(p.shape))))
    ours = ours_f().double()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x_np = rng.standard_normal(shape)
    for mode in ("train", "eval"):
        getattr(ours, mode)(), getattr(theirs, mode)()
        x, tx = tg.tensor(x_np, requires_grad=True), torch.tensor(x_np, requires_grad=True)
        y, ty = ours(x), theirs(tx)
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        g = rng.standard_normal(ty.shape)
        ours.zero_grad(), theirs.zero_grad()
        y.backward(tg.tensor(g))
        ty.backward(torch.tensor(g))
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-11)
        for (n, p), tp in zip(ours.named_parameters(), theirs.parameters()):
            np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-9, atol=1e-11,
                                       err_msg=n)
        for (n, b), tb in zip(ours.named_buffers(), theirs.buffers()):
            np.testing.assert_allclose(b.numpy(), tb.numpy(), rtol=1e-12, err_msg=n)


GRAD_LAYERS = {
    "linear": (lambda: nn.Linear(3, 2), (2, 3)),
    "conv2d": (lambda: nn.Conv2d(2, 2, 2, stride=2, padding=1, dilation=1), (1, 2, 3, 3)),
    "conv2d-groups": (lambda: nn.Conv2d(2, 4, (2, 1), groups=2, dilation=(1, 2)), (1, 2, 3, 3)),
    "conv1d": (lambda: nn.Conv1d(2, 2, 2, padding=1), (2, 2, 3)),
    "conv2d-reflect": (lambda: nn.Conv2d(2, 2, 2, padding=(1, 2), padding_mode="reflect"),
                       (1, 2, 3, 3)),
    "conv2d-circular-same": (lambda: nn.Conv2d(2, 1, 2, padding="same", padding_mode="circular"),
                             (2, 2, 3, 2)),
    "conv1d-replicate": (lambda: nn.Conv1d(2, 2, 3, padding=2, padding_mode="replicate"),
                         (2, 2, 3)),
    "conv-transpose2d": (lambda: nn.ConvTranspose2d(2, 1, 2, stride=2, padding=1), (1, 2, 2, 2)),
    "local2d": (lambda: nn.LocallyConnected2d(2, 2, (3, 3), 2, padding=1, stride=2), (1, 2, 3, 3)),
    "maxpool2d": (lambda: nn.MaxPool2d(2, stride=1), (1, 2, 3, 3)),
    "avgpool2d": (lambda: nn.AvgPool2d(2, padding=1), (1, 2, 3, 3)),
    "avgpool2d-divisor-override": (lambda: nn.AvgPool2d(2, padding=1, divisor_override=3),
                                   (1, 2, 3, 3)),
    "adaptive-avg": (lambda: nn.AdaptiveAvgPool2d(2), (1, 2, 3, 3)),
    "batchnorm2d": (lambda: nn.BatchNorm2d(2), (2, 2, 2, 2)),
    "batchnorm1d-eval": (lambda: nn.BatchNorm1d(3).eval(), (4, 3)),
    "batchnorm1d-no-stats": (lambda: nn.BatchNorm1d(3, track_running_stats=False).eval(), (4, 3)),
    "layernorm": (lambda: nn.LayerNorm((2, 3)), (2, 2, 3)),
    "groupnorm": (lambda: nn.GroupNorm(2, 4), (2, 4, 2)),
    "instancenorm2d-affine": (lambda: nn.InstanceNorm2d(2, affine=True), (2, 2, 2, 2)),
    "instancenorm2d-tracked-eval": (
        lambda: nn.InstanceNorm2d(2, affine=True, track_running_stats=True).eval(), (2, 2, 1, 2)),
    "instancenorm1d-affine": (lambda: nn.InstanceNorm1d(2, affine=True), (2, 2, 3)),
    "instancenorm1d-tracked-eval-unbatched": (
        lambda: nn.InstanceNorm1d(2, affine=True, track_running_stats=True).eval(), (2, 1)),
    "maxpool1d": (lambda: nn.MaxPool1d(2), (1, 2, 5)),
    "avgpool1d": (lambda: nn.AvgPool1d(3, stride=2, padding=1), (1, 2, 5)),
    "adaptive-max": (lambda: nn.AdaptiveMaxPool2d((2, 2)), (1, 2, 3, 3)),
    "conv2d-unbatched": (lambda: nn.Conv2d(2, 2, 2, stride=2, padding=1), (2, 3, 3)),
    "conv1d-unbatched": (lambda: nn.Conv1d(2, 2, 2, padding=1), (2, 3)),
    "conv-transpose2d-unbatched": (lambda: nn.ConvTranspose2d(2, 1, 2, stride=2), (2, 2, 2)),
    "local2d-unbatched": (lambda: nn.LocallyConnected2d(2, 2, (3, 3), 2, padding=1, stride=2),
                          (2, 3, 3)),
    "maxpool1d-unbatched": (lambda: nn.MaxPool1d(2), (2, 5)),
    "activations": (lambda: nn.Sequential(nn.LeakyReLU(0.1), nn.Tanh(), nn.Sigmoid(),
                                          nn.Softmax(dim=1), nn.LogSoftmax(dim=0), nn.ReLU(),
                                          nn.Flatten(0)), (3, 4)),
}


@pytest.mark.parametrize("name", sorted(GRAD_LAYERS))
def test_layer_gradcheck(name):
    factory, shape = GRAD_LAYERS[name]
    tg.manual_seed(0)
    layer = factory().double()
    rng = np.random.default_rng(1)
    _randomise(layer, rng)
    slots = [(m, key) for _, m in layer.named_modules() for key, p in m._parameters.items()
             if p is not None]
    originals = [m._parameters[key] for m, key in slots]

    def fn(x, *params):
        for (m, key), p in zip(slots, params):
            m._parameters[key] = p          # plug gradcheck's copies into the layer
        try:
            return layer(x)
        finally:
            for (m, key), p in zip(slots, originals):
                m._parameters[key] = p

    x = tg.tensor(rng.standard_normal(shape), requires_grad=True)
    params = [tg.tensor(p.numpy(), requires_grad=True) for p in originals]
    assert gradcheck(fn, (x, *params))


def test_dropout_gradcheck():
    drop = nn.Dropout(0.4)

    def fn(x):
        tg.manual_seed(0)             # the same mask at every evaluation
        return drop(x)

    x = tg.tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    assert gradcheck(fn, (x,))


def test_training_step_never_synchronises():
    strict = pytest.importorskip("strict_backend")
    backend = tg.get_backend("strict")
    assert isinstance(backend, strict.StrictBackend)
    tg.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=None),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.2), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 10)).to("strict")
    opt = optim.AdamW(model.parameters(), lr=1e-3, amsgrad=True)
    sched = optim.OneCycleLR(opt, max_lr=0.01, total_steps=10)
    x = tg.randn(8, 1, 8, 8, device="strict")
    y = tg.tensor(np.arange(8), device="strict")
    weight = tg.ones(10, device="strict")
    for _ in range(2):
        with backend.track_syncs() as log:
            opt.zero_grad()
            loss = nn.cross_entropy(model(x), y, label_smoothing=0.1, weight=weight)
            loss.backward()
            optim.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
        assert log == []
    assert math.isfinite(loss.item())


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_conv_padding_modes_on_a_device_never_synchronise(mode):
    # The index arrays of the padding go to the device with x; nothing waits for it.
    strict = pytest.importorskip("strict_backend")
    backend = tg.get_backend("strict")
    assert isinstance(backend, strict.StrictBackend)
    tg.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=(2, 1), padding_mode=mode).double()
    x_np = np.random.default_rng(0).standard_normal((2, 2, 4, 5))
    expected_y = conv(tg.tensor(x_np))
    x = tg.tensor(x_np, device="strict", requires_grad=True)
    conv.to("strict")
    with backend.track_syncs() as log:
        y = conv(x)
        y.sum().backward()
    assert log == []
    assert y.device == "strict" and x.grad.device == "strict"
    np.testing.assert_allclose(y.numpy(), expected_y.numpy(), rtol=1e-12)


# ---- BatchNorm -----------------------------------------------------------------------
BN_CASES = [
    ("BatchNorm2d", dict(), (4, 3, 2, 3)),
    ("BatchNorm2d", dict(momentum=None), (3, 3, 2, 2)),
    ("BatchNorm2d", dict(affine=False, momentum=0.3, eps=1e-3), (2, 3, 3, 3)),
    ("BatchNorm2d", dict(track_running_stats=False), (4, 3, 2, 2)),
    ("BatchNorm1d", dict(), (6, 3)),
    ("BatchNorm1d", dict(momentum=None, affine=False), (3, 3, 4)),
]


@pytest.mark.parametrize("name,kwargs,shape", BN_CASES)
def test_batchnorm_train_eval_and_running_stats_match_torch(name, kwargs, shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    ours = getattr(nn, name)(3, dtype="float64", **kwargs)
    theirs = getattr(torch.nn, name)(3, dtype=torch.float64, **kwargs)
    if ours.affine:
        w, b = rng.standard_normal(3), rng.standard_normal(3)
        ours.load_state_dict({**{k: v.numpy() for k, v in ours.state_dict().items()},
                              "weight": w, "bias": b})
        theirs.weight.data, theirs.bias.data = torch.tensor(w), torch.tensor(b)
    for step in range(4):
        train = step < 3
        ours.train(train), theirs.train(train)
        x_np = rng.standard_normal(shape) * 3 + 1.5
        x, tx = tg.tensor(x_np, requires_grad=True), torch.tensor(x_np, requires_grad=True)
        y, ty = ours(x), theirs(tx)
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        g = rng.standard_normal(shape)
        y.backward(tg.tensor(g)), ty.backward(torch.tensor(g))
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-11)
        ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
        assert list(ours_sd) == list(theirs_sd)
        for k in ours_sd:
            np.testing.assert_allclose(ours_sd[k].numpy(), theirs_sd[k].numpy(), rtol=1e-12,
                                       err_msg=k)


def test_batchnorm_evaluation_output_backpropagates_after_a_training_step():
    """The running statistics an evaluation read are updated in place by the next
    training step; the evaluation's backward still runs, with the values it used, as in
    PyTorch (it reads none of them again)."""
    bn = nn.BatchNorm2d(2, dtype="float64").eval()
    x = tg.tensor(np.random.default_rng(3).standard_normal((3, 2, 2, 2)), requires_grad=True)
    y = bn(x)
    invstd = 1 / np.sqrt(bn.running_var.numpy() + bn.eps)
    bn.train()(tg.randn(3, 2, 2, 2, dtype="float64"))
    assert bn.num_batches_tracked.item() == 1
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.broadcast_to(invstd[:, None, None], x.shape))


def test_batchnorm_by_hand_and_errors():
    bn = nn.BatchNorm1d(1, momentum=0.5, affine=False, dtype="float64")
    y = bn(tg.tensor([[1.0], [3.0]], dtype="float64"))
    # mean 2, biased var 1 -> +-1/sqrt(1 + eps); running: mean 0.5*2, var 0.5*1 + 0.5*2 (unbiased)
    assert y.numpy().ravel() == pytest.approx([-1 / math.sqrt(1 + 1e-5), 1 / math.sqrt(1 + 1e-5)])
    assert bn.running_mean.item() == pytest.approx(1.0)
    assert bn.running_var.item() == pytest.approx(1.5)
    bn.eval()
    assert bn(tg.tensor([[1.0]], dtype="float64")).item() == pytest.approx(0 / math.sqrt(1.5))
    bn.train()
    with pytest.raises(ValueError, match="more than 1 value per channel when training"):
        bn(tg.tensor([[1.0]]))
    # Without running statistics evaluation uses the batch too: one value per channel
    # would normalise to 0, so it is refused in eval mode as well (as in PyTorch).
    for make in (lambda: nn.BatchNorm1d(3, track_running_stats=False),
                 lambda: nn.BatchNorm1d(3, track_running_stats=False, affine=False)):
        with pytest.raises(ValueError, match=r"more than 1 value per channel with "
                                             r"track_running_stats=False.*\(1, 3\)"):
            make().eval()(tg.ones(1, 3))
    assert nn.BatchNorm1d(3).eval()(tg.ones(1, 3)).shape == (1, 3)  # running stats: fine


@pytest.mark.parametrize("bn_device,x_device", [("strict", "cpu"), ("cpu", "strict"),
                                                ("strict", "strict2")])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_refuses_an_input_on_another_device(bn_device, x_device, training):
    pytest.importorskip("strict_backend")
    bn = nn.BatchNorm2d(2, momentum=None, device=bn_device).train(training)
    before = {k: v.numpy().copy() for k, v in bn.state_dict().items()}
    x = tg.tensor(np.arange(24.0).reshape(3, 2, 2, 2), device=x_device)
    with pytest.raises(tg.DeviceError, match=rf"BatchNorm2d: the input is on {x_device} but "
                                             rf".* is on {bn_device}"):
        bn(x)
    # refused before anything was counted: momentum=None's average would be off by one
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=k)
    bn(x.to(bn_device))
    assert bn.num_batches_tracked.item() == int(training)


# Each layer with parameters or buffers, built on a device, an input shape it takes, and
# the tensor the error names first.
LAYERS_WITH_PARAMETERS = {
    "Linear": (lambda d: nn.Linear(3, 2, device=d), (2, 3), "parameter 'weight'"),
    "Conv1d": (lambda d: nn.Conv1d(1, 2, 3, device=d), (1, 1, 5), "parameter 'weight'"),
    "Conv2d": (lambda d: nn.Conv2d(1, 2, 3, device=d), (1, 1, 5, 5), "parameter 'weight'"),
    "ConvTranspose2d": (lambda d: nn.ConvTranspose2d(1, 2, 3, device=d), (1, 1, 5, 5),
                        "parameter 'weight'"),
    "LocallyConnected2d": (lambda d: nn.LocallyConnected2d(1, 2, (5, 5), 3, device=d),
                           (1, 1, 5, 5), "parameter 'weight'"),
    "BatchNorm1d": (lambda d: nn.BatchNorm1d(2, device=d), (4, 2), "parameter 'weight'"),
    "BatchNorm2d": (lambda d: nn.BatchNorm2d(1, device=d), (2, 1, 5, 5), "parameter 'weight'"),
    # no parameters: its running statistics are named
    "BatchNorm2d(affine=False)": (lambda d: nn.BatchNorm2d(1, affine=False, device=d),
                                  (2, 1, 5, 5), "buffer 'running_mean'"),
    "LayerNorm": (lambda d: nn.LayerNorm(3, device=d), (2, 3), "parameter 'weight'"),
    "GroupNorm": (lambda d: nn.GroupNorm(2, 4, device=d), (2, 4, 3), "parameter 'weight'"),
    "InstanceNorm2d": (lambda d: nn.InstanceNorm2d(2, affine=True, device=d), (1, 2, 3, 3),
                       "parameter 'weight'"),
    "InstanceNorm2d(track_running_stats=True)": (
        lambda d: nn.InstanceNorm2d(2, track_running_stats=True, device=d), (2, 3, 3),
        "buffer 'running_mean'"),
    "InstanceNorm1d(track_running_stats=True)": (
        lambda d: nn.InstanceNorm1d(2, affine=True, track_running_stats=True, device=d),
        (2, 3), "parameter 'weight'"),
}


@pytest.mark.parametrize("name", LAYERS_WITH_PARAMETERS)
def test_a_layer_says_its_input_is_on_another_device_and_what_to_move(name, device):
    """The batch not moved to the model's device, the commonest slip of GPU training: the
    layer says so and how to fix it (a Linear's error named its inner MatMul and two
    devices, without saying which one was the input's)."""
    make, shape, what = LAYERS_WITH_PARAMETERS[name]
    layer = make(device)
    other = "strict" if device == "cpu" else "cpu"
    x = tg.ones(*shape, device=other)
    with pytest.raises(tg.DeviceError) as info:
        layer(x)
    assert str(info.value) == (f"{type(layer).__name__}: the input is on {other} but the "
                               f"layer's {what} is on {device}; move the input with "
                               f"x.to('{device}') (or the model with .to('{other}'))")
    assert layer(x.to(device)).device == device


@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_empty_batch_gives_empty_output(track, training):
    """N = 0: an empty output and gradient, as in PyTorch; running statistics untouched,
    but a training step counted in num_batches_tracked, as PyTorch counts it."""
    bn = nn.BatchNorm2d(3, track_running_stats=track, dtype="float64").train(training)
    before = {k: v.numpy().copy() for k, v in bn.state_dict().items()}
    x = tg.zeros(0, 3, 4, 4, dtype="float64", requires_grad=True)
    y = bn(x)
    assert y.shape == (0, 3, 4, 4)
    y.sum().backward()
    assert x.grad.shape == (0, 3, 4, 4) and bn.weight.grad.numpy().tolist() == [0, 0, 0]
    if track and training:
        before["num_batches_tracked"] += 1
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=k)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*\(2, 4, 5, 5\)"):
        nn.BatchNorm2d(3)(tg.zeros(2, 4, 5, 5))


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("make, empty", [
    (lambda T, m: T.BatchNorm2d(3, momentum=m), (0, 3, 4, 4)),
    (lambda T, m: T.BatchNorm2d(3, momentum=m), (2, 3, 0, 4)),
    (lambda T, m: T.BatchNorm1d(3, momentum=m), (0, 3)),
], ids=["batch", "height", "features"])
def test_batchnorm_counts_an_empty_batch_as_torch_does(make, empty, momentum):
    """An empty batch between two others: the same state dicts as PyTorch's at every
    step (its count goes up, so momentum=None weighs the next batch 1/3, not 1/2)."""
    torch = pytest.importorskip("torch")
    ours, theirs = make(nn, momentum).double(), make(torch.nn, momentum).double()
    rng = np.random.default_rng(0)
    for shape in [(4,) + empty[1:2] + (2, 2)[:len(empty) - 2], empty, (5,) + empty[1:2]
                  + (3, 2)[:len(empty) - 2]]:
        a = rng.standard_normal(shape)
        np.testing.assert_allclose(ours(tg.tensor(a)).numpy(),
                                   theirs(torch.tensor(a)).detach().numpy(), rtol=1e-12,
                                   atol=1e-12)
        for k, v in ours.state_dict().items():
            np.testing.assert_allclose(v.numpy(), theirs.state_dict()[k].numpy(),
                                       rtol=1e-12, err_msg=f"{k} after input {shape}")


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.InstanceNorm1d(3, track_running_stats=True), (0, 3, 4)),
    (lambda: nn.InstanceNorm2d(3, affine=True, track_running_stats=True), (0, 3, 2, 2)),
])
def test_instance_norm_empty_batch_leaves_the_running_statistics(make, shape):
    """An empty batch has no per-sample statistics to average: the running ones stay as
    they are (PyTorch's become NaN, the mean over no sample) and nothing is counted."""
    layer = make()
    before = {k: v.numpy().copy() for k, v in layer.state_dict().items()}
    assert layer(tg.zeros(*shape)).shape == shape
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=k)


# ---- LayerNorm, GroupNorm, InstanceNorm -----------------------------------------------------
NORM_LAYERS = {
    # name: (make, given nn or torch.nn, and an input shape)
    "LayerNorm": (lambda T: T.LayerNorm(4), (2, 3, 4)),
    "LayerNorm-chw-nobias": (lambda T: T.LayerNorm((3, 2, 2), eps=1e-3, bias=False),
                             (2, 3, 2, 2)),
    "LayerNorm-no-affine": (lambda T: T.LayerNorm([2, 3], elementwise_affine=False), (4, 2, 3)),
    "GroupNorm": (lambda T: T.GroupNorm(3, 6), (2, 6, 2, 2)),
    "GroupNorm-nobias": (lambda T: T.GroupNorm(2, 4, bias=False), (3, 4, 5)),
    "GroupNorm-no-affine": (lambda T: T.GroupNorm(1, 2, affine=False), (2, 2, 3)),
    "InstanceNorm2d": (lambda T: T.InstanceNorm2d(3), (2, 3, 2, 2)),
    "InstanceNorm2d-affine-tracked": (
        lambda T: T.InstanceNorm2d(3, momentum=0.2, affine=True, track_running_stats=True),
        (2, 3, 3, 2)),
    "InstanceNorm2d-tracked-nobias": (
        lambda T: T.InstanceNorm2d(2, affine=True, track_running_stats=True, bias=False),
        (2, 2, 2, 3)),
    "InstanceNorm1d": (lambda T: T.InstanceNorm1d(3), (2, 3, 4)),
    "InstanceNorm1d-affine-tracked": (
        lambda T: T.InstanceNorm1d(3, momentum=0.2, affine=True, track_running_stats=True),
        (2, 3, 5)),
}


@pytest.mark.parametrize("name", NORM_LAYERS)
def test_norm_layer_defaults_match_torch(name):
    """The same repr, parameter and buffer names, state-dict keys (in order), shapes,
    dtypes and initial values (weight 1, bias 0, running statistics 0 and 1)."""
    torch = pytest.importorskip("torch")
    make, _ = NORM_LAYERS[name]
    ours, theirs = make(nn), make(torch.nn)
    assert repr(ours) == repr(theirs)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    for k, v in ours_sd.items():
        tv = theirs_sd[k].numpy()
        assert (v.shape, v.dtype) == (tv.shape, tv.dtype), k
        np.testing.assert_array_equal(v.numpy(), tv, err_msg=k)


@pytest.mark.parametrize("name", NORM_LAYERS)
def test_norm_layer_state_dicts_load_both_ways_with_torch(name):
    """A state dict of random values made by either library loads into the other, and
    the two modules then compute the same outputs, in training and in evaluation."""
    torch = pytest.importorskip("torch")
    make, shape = NORM_LAYERS[name]
    rng = np.random.default_rng(40)
    x_np = rng.standard_normal(shape) * 2 + 1
    for source in ("ours", "torch"):
        ours, theirs = make(nn).double(), make(torch.nn).double()
        if source == "ours":
            _randomise(ours, rng)
            theirs.load_state_dict({k: torch.tensor(v.numpy())
                                    for k, v in ours.state_dict().items()})
        else:
            with torch.no_grad():
                for n, t in list(theirs.named_parameters()) + list(theirs.named_buffers()):
                    if t.is_floating_point():
                        t.copy_(torch.tensor(rng.uniform(0.5, 1.5, tuple(t.shape))))
            ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
        for mode in ("eval", "train"):
            getattr(ours, mode)(), getattr(theirs, mode)()
            y, ty = ours(tg.tensor(x_np)), theirs(torch.tensor(x_np))
            np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=f"{source}'s state dict, {mode}")


def test_norm_layers_in_a_model_match_torch_over_training_steps():
    """A small CNN with each normalisation layer, trained three steps by SGD in both
    libraries from one state dict: the same losses and state dicts."""
    torch = pytest.importorskip("torch")

    def make(T):
        return T.Sequential(T.Conv2d(2, 4, 3, padding=1), T.GroupNorm(2, 4), T.ReLU(),
                            T.Conv2d(4, 4, 3), T.InstanceNorm2d(4, affine=True,
                                                                track_running_stats=True),
                            T.Tanh(), T.Flatten(), T.LayerNorm(4 * 3 * 3), T.Linear(36, 3))
    theirs = make(torch.nn).double()
    ours = make(nn).double()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    opt = optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(41)
    for step in range(3):
        x_np, labels = rng.standard_normal((4, 2, 5, 5)), rng.integers(0, 3, 4)
        loss = nn.cross_entropy(ours(tg.tensor(x_np)), tg.tensor(labels))
        tloss = torch.nn.functional.cross_entropy(theirs(torch.tensor(x_np)),
                                                  torch.tensor(labels))
        assert loss.item() == pytest.approx(tloss.item(), rel=1e-10), step
        opt.zero_grad(), topt.zero_grad()
        loss.backward(), tloss.backward()
        opt.step(), topt.step()
        for (k, v), tv in zip(ours.state_dict().items(), theirs.state_dict().values()):
            np.testing.assert_allclose(v.numpy(), tv.numpy(), rtol=1e-9, atol=1e-12,
                                       err_msg=f"{k}, step {step}")


@pytest.mark.parametrize("make, error, match", [
    (lambda: nn.GroupNorm(4, 6), ValueError,
     r"^GroupNorm: num_channels \(6\) must be divisible by num_groups \(4\)$"),
    (lambda: nn.GroupNorm(0, 6), ValueError, r"^GroupNorm: num_groups must be an int >= 1"),
    (lambda: nn.GroupNorm(2, 4.0), TypeError, r"^GroupNorm: num_channels must be an int"),
    (lambda: nn.GroupNorm(2, 4, eps=0), ValueError, r"^GroupNorm: eps must be > 0, got 0"),
    (lambda: nn.GroupNorm(2, 4, affine=1), TypeError, r"GroupNorm: affine must be True or False"),
    (lambda: nn.GroupNorm(2, 4, bias="no"), TypeError, r"GroupNorm: bias must be True or False"),
    (lambda: nn.GroupNorm(2, 4, 1e-5, True, "float64", None, True), TypeError,
     r"positional argument"),                                 # bias is keyword only, as in torch
    (lambda: nn.LayerNorm(1), ValueError,
     r"^LayerNorm: normalized_shape \(1,\) holds one value, which would normalise to 0"),
    (lambda: nn.LayerNorm((1, 1)), ValueError, r"normalized_shape \(1, 1\) holds one value"),
    (lambda: nn.LayerNorm(()), ValueError, r"^LayerNorm: normalized_shape must hold at least one"),
    (lambda: nn.LayerNorm(-2), ValueError, r"each >= 0, got \(-2,\)"),
    (lambda: nn.LayerNorm(2.5), TypeError,
     r"^LayerNorm: normalized_shape must be an int or a sequence of ints, got 2\.5 \(float\)"),
    (lambda: nn.LayerNorm(3, eps=-1e-5), ValueError, r"^LayerNorm: eps must be > 0"),
    (lambda: nn.LayerNorm(3, elementwise_affine=None), TypeError,
     r"LayerNorm: elementwise_affine must be True or False, got None"),
    (lambda: nn.LayerNorm(3, bias=0), TypeError, r"LayerNorm: bias must be True or False"),
    (lambda: nn.LayerNorm(3, dtype="int64"), TypeError, r"floating-point"),
    (lambda: nn.InstanceNorm2d(0), ValueError, r"InstanceNorm2d: num_features must be an int >= 1"),
    (lambda: nn.InstanceNorm2d(3, eps=0), ValueError, r"InstanceNorm2d: eps must be > 0"),
    (lambda: nn.InstanceNorm2d(3, momentum=1.5), ValueError, r"momentum must be >= 0.0 and <= 1"),
    (lambda: nn.InstanceNorm2d(3, momentum=None, track_running_stats=True), ValueError,
     r"^InstanceNorm2d: momentum=None is not supported with track_running_stats=True"),
    (lambda: nn.InstanceNorm2d(3, affine=True, bias=1), TypeError,
     r"InstanceNorm2d: bias must be True or False, got 1"),
    (lambda: nn.InstanceNorm1d(0), ValueError, r"InstanceNorm1d: num_features must be an int >= 1"),
    (lambda: nn.InstanceNorm1d(3, eps=-1.0), ValueError, r"InstanceNorm1d: eps must be > 0"),
    (lambda: nn.InstanceNorm1d(3, momentum=None, track_running_stats=True), ValueError,
     r"^InstanceNorm1d: momentum=None is not supported with track_running_stats=True "
     r"\(PyTorch's InstanceNorm1d never"),
    (lambda: nn.InstanceNorm1d(3, 1e-5, 0.1, True, False, None, None, False), TypeError,
     r"positional argument"),                                 # bias is keyword only, as in torch
])
def test_norm_layer_construction_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_instance_norm_without_running_stats_takes_momentum_none():
    """As in PyTorch: without running statistics the momentum is never used."""
    layer = nn.InstanceNorm2d(2, momentum=None)
    assert layer(tg.ones(1, 2, 2, 2)).shape == (1, 2, 2, 2)


@pytest.mark.parametrize("make, x, error, match", [
    (lambda: nn.LayerNorm(3), tg.ones(2, 3, dtype="int64"), TypeError,
     r"^LayerNorm: the input of shape \(2, 3\) has dtype int64; expected a float dtype"),
    (lambda: nn.GroupNorm(1, 2), tg.ones(2, 2, 3, dtype="int32"), TypeError,
     r"^GroupNorm: the input of shape \(2, 2, 3\) has dtype int32"),
    (lambda: nn.InstanceNorm2d(2), tg.ones(2, 2, 2, 2, dtype="bool"), TypeError,
     r"^InstanceNorm2d: the input of shape \(2, 2, 2, 2\) has dtype bool"),
    (lambda: nn.LayerNorm(3), np.ones((2, 3)), TypeError, r"^LayerNorm expects a Tensor, got "
                                                          r"ndarray"),
    (lambda: nn.GroupNorm(1, 2), [1.0, 2.0], TypeError, r"^GroupNorm expects a Tensor, got list"),
    (lambda: nn.InstanceNorm2d(2), np.ones((2, 2, 2)), TypeError, r"^InstanceNorm2d expects a"),
    (lambda: nn.InstanceNorm1d(2), tg.ones(2, 2, 3, dtype="int8"), TypeError,
     r"^InstanceNorm1d: the input of shape \(2, 2, 3\) has dtype int8"),
])
def test_norm_layer_forward_input_errors(make, x, error, match):
    with pytest.raises(error, match=match):
        make()(x)


def test_norm_layers_train_on_a_device_without_synchronising():
    strict = pytest.importorskip("strict_backend")
    backend = tg.get_backend("strict")
    assert isinstance(backend, strict.StrictBackend)
    tg.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
                          nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
                          nn.Flatten(), nn.LayerNorm(4 * 4 * 4), nn.Linear(64, 3))
    x_np = np.random.default_rng(42).standard_normal((5, 1, 4, 4))
    expected = copy.deepcopy(model)(tg.tensor(x_np))
    model.to("strict")
    x = tg.tensor(x_np, device="strict")
    with backend.track_syncs() as log:
        y = model(x)
        y.sum().backward()
    assert log == []
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert model[3].running_mean.device == "strict"


# ---- errors and behaviour of other layers ---------------------------------------------------
LAYER_ERRORS = [
    (lambda: nn.Conv2d(3, 8, 3), (2, 1, 28, 28),
     [r"\(3, H, W\) or \(N, 3, H, W\)", r"\(2, 1, 28, 28\)"]),
    (lambda: nn.Conv2d(3, 8, 3), (1, 3, 28), [r"\(3, H, W\) or \(N, 3, H, W\)", r"\(1, 3, 28\)"]),
    (lambda: nn.Conv2d(3, 8, 3), (28, 28), [r"\(3, H, W\) or \(N, 3, H, W\)", r"\(28, 28\)"]),
    (lambda: nn.Conv2d(3, 8, 3), (1, 1, 3, 8, 8),
     [r"\(3, H, W\) or \(N, 3, H, W\)", r"\(1, 1, 3, 8, 8\)"]),
    (lambda: nn.ConvTranspose2d(4, 2, 3), (2, 4, 3), [r"\(4, H, W\) or \(N, 4, H, W\)"]),
    (lambda: nn.Conv1d(3, 4, 3), (1, 3, 5, 5), [r"\(3, L\) or \(N, 3, L\)", r"\(1, 3, 5, 5\)"]),
    (lambda: nn.Conv1d(3, 4, 3), (2, 5), [r"\(3, L\) or \(N, 3, L\)", r"\(2, 5\)"]),
    (lambda: nn.Linear(10, 2), (4, 9), [r"\(\.\.\., 10\)", r"\(4, 9\)"]),
    (lambda: nn.LocallyConnected2d(1, 2, (8, 8), 3), (2, 1, 9, 9),
     [r"\(1, 8, 8\) or \(N, 1, 8, 8\)", r"\(2, 1, 9, 9\)"]),
    (lambda: nn.LocallyConnected2d(1, 2, (8, 8), 3), (2, 8, 8),
     [r"\(1, 8, 8\) or \(N, 1, 8, 8\)", r"\(2, 8, 8\)"]),
    (lambda: nn.MaxPool2d(2), (4, 4), [r"\(C, H, W\) or \(N, C, H, W\)", r"\(4, 4\)"]),
    (lambda: nn.AdaptiveAvgPool2d(2), (1, 1, 2, 4, 4),
     [r"\(C, H, W\) or \(N, C, H, W\)", r"\(1, 1, 2, 4, 4\)"]),
    (lambda: nn.AvgPool1d(2), (5,), [r"\(C, L\) or \(N, C, L\)", r"\(5,\)"]),
    (lambda: nn.BatchNorm1d(4), (2, 3), [r"\(N, 4\)", r"\(2, 3\)"]),
    (lambda: nn.LayerNorm((3, 4)), (2, 4, 3),
     [r"^LayerNorm\(\(3, 4\), eps=1e-05, elementwise_affine=True, bias=True\) expects input "
      r"of shape \(\*, 3, 4\), got \(2, 4, 3\)$"]),
    (lambda: nn.LayerNorm(5), (), [r"\(\*, 5\), got \(\)$"]),
    (lambda: nn.GroupNorm(2, 4), (2, 6, 3),
     [r"^GroupNorm\(2, 4, eps=1e-05, affine=True, bias=True\) expects input of shape "
      r"\(N, 4, \*\), got \(2, 6, 3\)$"]),
    (lambda: nn.GroupNorm(2, 4, affine=False), (2, 6, 3), [r"\(N, 4, \*\), got \(2, 6, 3\)"]),
    (lambda: nn.GroupNorm(2, 4), (4,), [r"\(N, 4, \*\), got \(4,\)"]),
    (lambda: nn.GroupNorm(4, 4), (3, 4),
     [r"^GroupNorm: expected more than 1 value per group, got input of shape \(3, 4\)"]),
    (lambda: nn.InstanceNorm2d(3), (2, 4, 5, 5),
     [r"^InstanceNorm2d\(3, .*\) expects input of shape \(3, H, W\) or \(N, 3, H, W\), got "
      r"\(2, 4, 5, 5\)$"]),
    (lambda: nn.InstanceNorm2d(3), (2, 3, 5), [r"\(3, H, W\) or \(N, 3, H, W\), got \(2, 3, 5\)"]),
    (lambda: nn.InstanceNorm2d(3), (1, 2, 3, 5, 5), [r"got \(1, 2, 3, 5, 5\)$"]),
    (lambda: nn.InstanceNorm2d(3), (3, 1, 1),
     [r"^InstanceNorm2d: expected more than 1 value per channel of an image .* got input of "
      r"shape \(3, 1, 1\)$"]),
    (lambda: nn.InstanceNorm1d(3), (2, 4, 5),
     [r"^InstanceNorm1d\(3, .*\) expects input of shape \(3, L\) or \(N, 3, L\), got "
      r"\(2, 4, 5\)$"]),
    (lambda: nn.InstanceNorm1d(3), (2, 3, 5, 5), [r"\(3, L\) or \(N, 3, L\), got \(2, 3, 5, 5\)"]),
    (lambda: nn.InstanceNorm1d(3), (3,), [r"got \(3,\)$"]),
    (lambda: nn.InstanceNorm1d(3), (2, 3, 1),
     [r"^InstanceNorm1d: expected more than 1 value per channel of a sequence .* got input "
      r"of shape \(2, 3, 1\)$"]),
]


@pytest.mark.parametrize("kwargs, shape, output_size", [
    (dict(stride=2, padding=1), (2, 2, 4, 5), (8, 9)),              # the largest: + stride-1
    (dict(stride=2, padding=1), (2, 2, 4, 5), [7, 10]),
    (dict(stride=(3, 2), padding=(1, 0), dilation=(1, 2)), (1, 2, 3, 4), (2, 3, 9, 12)),
    (dict(stride=3, output_padding=2), (1, 2, 3, 3), (9, 11)),      # the layer's own ignored
    (dict(stride=1, dilation=3, groups=2), (2, 2, 4, 4), (10, 10)),  # stride 1: one size
    (dict(stride=2), (2, 4, 3), (10, 7)),                            # unbatched
    (dict(stride=2), (2, 4, 3), (3, 9, 8)),
])
def test_conv_transpose2d_output_size_picks_pytorchs_output_padding(kwargs, shape, output_size):
    torch = pytest.importorskip("torch")
    ours = nn.ConvTranspose2d(2, 3 if kwargs.get("groups", 1) == 1 else 4, 3, **kwargs).double()
    theirs = torch.nn.ConvTranspose2d(2, ours.out_channels, 3, **kwargs).double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    a = np.random.default_rng(0).standard_normal(shape)
    x, tx = tg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    y, ty = ours(x, output_size=output_size), theirs(tx, output_size=list(output_size))
    assert y.shape == tuple(ty.shape) and y.shape[-2:] == tuple(output_size)[-2:]
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-13)
    g = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(tg.tensor(g))
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(),
                               rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("shape, output_size, error, match", [
    ((1, 2, 4, 5), (9, 9), ValueError,
     r"^ConvTranspose2d: requested an output size of \(9, 9\), but valid sizes range from "
     r"\(7, 9\) to \(8, 10\) \(for an input of shape \(1, 2, 4, 5\); the largest adds "
     r"stride - 1\)$"),
    ((1, 2, 4, 5), (1, 3, 6, 9), ValueError, r"requested an output size of \(6, 9\)"),
    ((2, 4, 5), (1, 2, 8, 10), ValueError,
     r"^ConvTranspose2d: for an input of shape \(2, 4, 5\), output_size must have 2 or 3 "
     r"elements, got 4: \(1, 2, 8, 10\)$"),
    ((1, 2, 4, 5), (8,), ValueError, r"must have 2 or 4 elements, got 1"),
    ((1, 2, 4, 5), 8, TypeError, r"^ConvTranspose2d: output_size must be a sequence of ints, "
                                 r"got 8 \(int\)$"),
    ((1, 2, 4, 5), (8.0, 9.0), TypeError, r"output_size must be a sequence of ints"),
])
def test_conv_transpose2d_output_size_out_of_reach_is_pytorchs_error(
        shape, output_size, error, match):
    layer = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)
    with pytest.raises(error, match=match):
        layer(tg.zeros(*shape), output_size=output_size)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv_padding_mode_is_a_setting_not_state(mode):
    # The same parameters (names, shapes, initial values) for every mode, so a state
    # dict loads across modes, as in PyTorch.
    tg.manual_seed(0)
    zeros = nn.Conv2d(2, 3, 3, padding=1)
    tg.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode=mode)
    assert conv.padding_mode == mode
    state, expected = conv.state_dict(), zeros.state_dict()
    assert list(state) == list(expected)
    for key in state:
        np.testing.assert_array_equal(state[key].numpy(), expected[key].numpy(), err_msg=key)
    assert conv.load_state_dict(expected) == ([], [])


@pytest.mark.parametrize("make, shape, match", [
    (lambda: nn.Conv2d(1, 1, 3, padding=(1, 4), padding_mode="reflect"), (1, 1, 4, 4),
     r"^Conv2d\(1, 1, kernel_size=\(3, 3\), .*padding_mode=reflect\) cannot pad its input "
     r"of shape \(1, 1, 4, 4\): pad: "
     r"mode='reflect' .* got \(4, 4\) for dimension 3 \(size 4\) of the input of shape "
     r"\(1, 1, 4, 4\), so at most 3"),
    (lambda: nn.Conv1d(1, 1, 2, padding=4, padding_mode="circular"), (2, 1, 3),
     r"^Conv1d\(1, 1, .*padding_mode=circular\) cannot pad its input of shape \(2, 1, 3\): "
     r"pad: mode='circular' .* <= the 3 element\(s\) left of dimension 2 \(size 3\) of the "
     r"input of shape \(2, 1, 3\).*got \(4, 4\)"),
    (lambda: nn.Conv2d(2, 1, 2, padding="same", padding_mode="replicate"), (2, 0, 3),
     r"^Conv2d\(2, 1, .*padding='same', padding_mode=replicate\) cannot pad its input of "
     r"shape \(2, 0, 3\): pad: mode='replicate' cannot pad dimension 1 \(size 0\)"),
], ids=["conv2d-reflect", "conv1d-circular", "conv2d-replicate-empty"])
def test_conv_padding_beyond_the_mode_limit_names_the_input(make, shape, match):
    """The error names the layer: the user called no pad."""
    with pytest.raises(ValueError, match=match):
        make()(tg.zeros(*shape))


@pytest.mark.parametrize("make,shape,patterns", LAYER_ERRORS)
def test_layer_input_errors_name_the_shapes(make, shape, patterns):
    with pytest.raises(ValueError) as info:
        make()(tg.zeros(*shape))
    for p in patterns:
        assert __import__("re").search(p, str(info.value)), str(info.value)


@pytest.mark.parametrize("make,error,word", [
    (lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError, "divisible"),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding="same"), ValueError, "stride 1"),
    (lambda: nn.Conv2d(3, 4, 0), ValueError, "kernel_size"),
    (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, output_padding=2), ValueError, "output_padding"),
    (lambda: nn.LocallyConnected2d(1, 1, 4, 5), ValueError, "does not fit"),
    (lambda: nn.Dropout(1.5), ValueError, "probability"),
    (lambda: nn.Linear(3, 2, dtype="int32"), TypeError, "floating-point"),
    (lambda: nn.LeakyReLU("a"), TypeError, "LeakyReLU: negative_slope must be a number, got 'a'"),
    (lambda: nn.LeakyReLU(True), TypeError, "negative_slope must be a number, got True"),
    (lambda: nn.BatchNorm2d(3, momentum="a"), TypeError, "BatchNorm2d: momentum must be a number"),
    (lambda: nn.BatchNorm2d(3, momentum=2), ValueError, r"momentum must be >= 0.0 and <= 1"),
    (lambda: nn.BatchNorm1d(3, eps=True), TypeError, "BatchNorm1d: eps must be a number"),
    (lambda: nn.BatchNorm2d(3, eps=-1), ValueError, r"BatchNorm2d: eps must be > 0, got -1"),
    (lambda: nn.Linear(3.0, 2), TypeError,
     r"^Linear: in_features must be an int, got 3\.0 \(float\)"),
    (lambda: nn.Linear((3,), 2), TypeError, r"in_features must be an int, got \(3,\)"),
    (lambda: nn.Linear(3, 0), ValueError, r"^Linear: out_features must be an int >= 1, got 0"),
    (lambda: nn.Conv2d(3, 4, 1.5), TypeError,
     r"kernel_size must be an int or a pair of ints, got 1\.5 \(float\)"),
    (lambda: nn.Conv2d(3, 4, 3, stride=True), TypeError, r"stride must be an int or a pair"),
    (lambda: nn.Conv2d(3, 4, (3, 3, 3)), ValueError,
     r"kernel_size must be an int or a pair of ints, got 3 ints: \(3, 3, 3\)"),
    (lambda: nn.Conv1d(3, 4, (3, 3)), ValueError, r"kernel_size must be an int, got 2 ints"),
    (lambda: nn.Conv2d(3, 4, 3, padding=(1, -1)), ValueError,
     r"padding must be an int or a pair of ints >= 0, got \(1, -1\)"),
    (lambda: nn.Conv1d(3, 4, 3, padding="full"), ValueError,
     r"padding must be an int, 'same' or 'valid', got 'full'"),
    (lambda: nn.Conv2d(3, 4, 3, padding_mode="constant"), ValueError,
     r"^Conv2d: padding_mode must be one of 'zeros', 'reflect', 'replicate', 'circular', "
     r"got 'constant'"),
    (lambda: nn.Conv1d(3, 4, 3, padding_mode=None), ValueError,
     r"^Conv1d: padding_mode must be one of .*, got None"),
    (lambda: nn.ConvTranspose2d(3, 4, 3, padding_mode="reflect"), ValueError,
     r"^ConvTranspose2d: only padding_mode='zeros' is supported, got 'reflect'"),
    (lambda: nn.Conv2d(3, 4, 3, groups=1.0), TypeError,
     r"^Conv2d: groups must be an int, got 1\.0"),
    (lambda: nn.BatchNorm2d(3.0), TypeError, r"^BatchNorm2d: num_features must be an int"),
    # flags are True or False (a truthy string or number was taken silently), and the
    # pooling sizes are checked at construction, as the convolutions'
    (lambda: nn.Linear(3, 2, bias="no"), TypeError,
     r"^Linear: bias must be True or False, got 'no'"),
    (lambda: nn.Conv2d(3, 4, 3, bias=2), TypeError, r"^Conv2d: bias must be True or False, got 2"),
    (lambda: nn.ConvTranspose2d(3, 4, 3, bias=0), TypeError, r"^ConvTranspose2d: bias must be"),
    (lambda: nn.BatchNorm2d(3, affine="x"), TypeError,
     r"BatchNorm2d: affine must be True or False, got 'x'"),
    (lambda: nn.BatchNorm1d(3, track_running_stats=None), TypeError,
     r"BatchNorm1d: track_running_stats must be True or False, got None"),
    (lambda: nn.MaxPool2d(2, ceil_mode="x"), TypeError,
     r"MaxPool2d: ceil_mode must be True or False, got 'x'"),
    (lambda: nn.MaxPool2d(2, return_indices=3), TypeError,
     r"MaxPool2d: return_indices must be True or False, got 3"),
    (lambda: nn.AvgPool2d(2, count_include_pad="no"), TypeError,
     r"AvgPool2d: count_include_pad must be True or False"),
    (lambda: nn.AvgPool2d(2, divisor_override=0), ValueError,
     r"^AvgPool2d: divisor_override must be > 0, got 0"),
    (lambda: nn.AvgPool2d(2, divisor_override=True), TypeError,
     r"^AvgPool2d: divisor_override must be a number, got True"),
    # PyTorch's AvgPool1d has none (nor has F.avg_pool1d)
    (lambda: nn.AvgPool1d(2, divisor_override=2), TypeError,
     r"unexpected keyword argument 'divisor_override'"),
    (lambda: nn.AdaptiveMaxPool2d(2, return_indices=1), TypeError,
     r"AdaptiveMaxPool2d: return_indices must be True or False, got 1"),
    (lambda: nn.MaxPool2d(0), ValueError,
     r"MaxPool2d: kernel_size must be an int or a pair of ints >= 1, got 0"),
    (lambda: nn.MaxPool2d(2.5), TypeError, r"MaxPool2d: kernel_size must be an int or a pair"),
    (lambda: nn.MaxPool2d(2, stride=0), ValueError, r"MaxPool2d: stride must be .* >= 1"),
    (lambda: nn.MaxPool1d((2, 2)), ValueError, r"MaxPool1d: kernel_size must be an int, got 2"),
    (lambda: nn.AvgPool1d(0), ValueError, r"AvgPool1d: kernel_size must be an int >= 1"),
    (lambda: nn.AvgPool2d(2, padding=-1), ValueError, r"AvgPool2d: padding must be .* >= 0"),
    (lambda: nn.AdaptiveAvgPool2d(0), ValueError, r"AdaptiveAvgPool2d: output_size must be"),
    (lambda: nn.AdaptiveAvgPool2d("a"), TypeError, r"AdaptiveAvgPool2d: output_size must be"),
    (lambda: nn.AdaptiveMaxPool2d((1, 2, 3)), ValueError, r"output_size .* got 3 ints"),
    (lambda: nn.Flatten(1.0), TypeError, r"Flatten: start_dim must be an int, got 1\.0"),
    (lambda: nn.Flatten(1, "a"), TypeError, r"Flatten: end_dim must be an int, got 'a'"),
])
def test_layer_construction_errors(make, error, word):
    with pytest.raises(error, match=word):
        make()


@pytest.mark.parametrize("call, error, match", [
    (lambda: nn.Linear(3, 2).load_state_dict({}, strict="no"), TypeError,
     r"load_state_dict: strict must be True or False, got 'no'"),
    # a key that is no string: it was "sequence item 0: expected str instance, int found"
    (lambda: nn.Linear(3, 2).load_state_dict({0: tg.zeros(2, 3)}), RuntimeError,
     r"unexpected key\(s\): 0"),
    (lambda: nn.ModuleList(3), TypeError,
     r"ModuleList\.extend: expected an iterable of Modules, got int"),
    (lambda: nn.ModuleList(nn.ReLU()), TypeError, r"iterable of Modules, got ReLU"),
    # a Tensor is iterable, but as its rows
    (lambda: nn.ModuleList(tg.zeros(2)), TypeError, r"iterable of Modules, got Tensor"),
], ids=["strict-str", "int-key", "module-list-int", "module-list-module", "module-list-tensor"])
def test_module_container_and_state_dict_argument_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("make, x, error, match", [
    (lambda: nn.Linear(3, 2), np.ones((2, 3)), TypeError, r"Linear expects a Tensor, got ndarray"),
    (lambda: nn.Linear(3, 2), tg.ones(2, 3, dtype="int64"), TypeError,
     r"linear: mixed float and integer operands: x of shape \(2, 3\), dtype int64, w of "
     r"shape \(2, 3\), dtype float32, b of shape \(2,\), dtype float32"),
    (lambda: nn.Linear(3, 2), tg.tensor(1.0), ValueError,
     r"Linear\(in_features=3, out_features=2, bias=True\) expects input of shape \(\.\.\., 3\), "
     r"got \(\)"),
    (lambda: nn.Linear(3, 2), tg.ones(2, 4), ValueError, r"expects input of shape \(\.\.\., 3\), "
     r"got \(2, 4\)"),
    (lambda: nn.BatchNorm2d(3), tg.ones(2, 3, 4, 4, dtype="int64"), TypeError,
     r"BatchNorm2d: the input of shape \(2, 3, 4, 4\) has dtype int64; expected a float"),
    (lambda: nn.ReLU(), np.ones(3), TypeError,
     r"ReLU expects a Tensor, got ndarray \(make one with tg\.tensor\(x\)\)"),
    (lambda: nn.Softmax(), [1.0, 2.0], TypeError, r"Softmax expects a Tensor, got list"),
    (lambda: nn.Flatten(), np.ones((2, 3)), TypeError, r"Flatten expects a Tensor, got ndarray"),
], ids=["linear-ndarray", "linear-int", "linear-0d", "linear-features", "batchnorm-int",
        "relu-ndarray", "softmax-list", "flatten-ndarray"])
def test_layer_forward_input_errors(make, x, error, match):
    # A wrong type is a TypeError (Linear said ValueError for an array; an integer input
    # of Linear or BatchNorm gave a float64 output); a wrong shape a ValueError.
    with pytest.raises(error, match=match):
        make()(x)


def test_layer_sizes_may_be_0d_integer_tensors_or_arrays():
    # They stand for their ints, as the functional ops take them.
    conv = nn.Conv2d(tg.tensor(3), np.int64(4), tg.tensor([3, 1]), stride=np.array(2),
                     padding=(tg.tensor(1), 0))
    assert (conv.in_channels, conv.out_channels) == (3, 4)
    assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 1), (2, 2), (1, 0))
    assert all(type(v) is int for v in conv.kernel_size + conv.stride + conv.padding)
    assert nn.Linear(np.array(5), tg.tensor(2)).weight.shape == (2, 5)


def test_init_negative_slope_and_fan_follow_the_number_rule():
    t = tg.zeros(4, 3)
    with pytest.raises(TypeError, match="calculate_gain: negative_slope must be a number, "
                                        "got 'x'"):
        nn.init.kaiming_uniform_(t, a="x")
    with pytest.raises(ValueError, match="calculate_gain: negative_slope must be a number, "
                                         "got nan"):
        nn.init.calculate_gain("leaky_relu", float("nan"))
    assert nn.init.calculate_gain("leaky_relu", tg.tensor(0.5)) == \
        nn.init.calculate_gain("leaky_relu", 0.5)
    with pytest.raises(TypeError, match="kaiming_normal_: fan must be a number, got '8'"):
        nn.init.kaiming_normal_(t, fan="8")
    assert not t.numpy().any()          # refused before drawing
    # A fan below 1 is a number like any other, not cut to 0 (a division by zero).
    nn.init.kaiming_uniform_(t, a=1.0, fan=0.5)
    assert np.abs(t.numpy()).max() <= math.sqrt(3 / 0.5) + 1e-6


@pytest.mark.parametrize("layer", [nn.Softmax, nn.LogSoftmax])
def test_softmax_without_dim(layer):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for shape in [(5,), (2, 5)]:   # the last axis, which is PyTorch's implicit dim here too
        x = rng.standard_normal(shape)
        expected = layer(dim=-1)(tg.tensor(x)).numpy()
        np.testing.assert_array_equal(layer()(tg.tensor(x)).numpy(), expected)
        with pytest.warns(UserWarning, match="Implicit dimension"):
            theirs = getattr(torch.nn, layer.__name__)()(torch.tensor(x)).numpy()
        np.testing.assert_allclose(expected, theirs, rtol=1e-12)
    # PyTorch would take dim 0 of a 3-D and dim 1 of a 4-D input: refused, not guessed
    for shape in [(2, 3, 4), (2, 3, 4, 5)]:
        with pytest.raises(ValueError, match=re.escape(f"{layer.__name__}() without dim got an "
                                                       f"input of shape {shape}; for inputs of "
                                                       f"more than 2 dimensions pass dim")):
            layer()(tg.zeros(*shape))
    assert layer(dim=1)(tg.zeros(2, 3, 4)).shape == (2, 3, 4)
    assert repr(layer()) == f"{layer.__name__}(dim=None)"


def test_avg_pool_layer_passes_divisor_override_to_the_op():
    # Without torch: against the textbook loop, for both count_include_pad settings
    # (which the override makes irrelevant).
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 6))
    for kw in ({}, {"count_include_pad": False}):
        layer = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, divisor_override=4, **kw)
        assert layer.divisor_override == 4
        expected = ref.avg_pool2d(x, 3, 2, 1, ceil_mode=True, divisor_override=4, **kw)
        np.testing.assert_allclose(layer(tg.tensor(x)).numpy(), expected, rtol=1e-13)
    assert nn.AvgPool2d(2).divisor_override is None


def test_dropout_follows_the_mode():
    drop = nn.Dropout(0.5)
    x = tg.ones(1000)
    y = drop(x).numpy()
    assert set(np.unique(y)) == {0.0, 2.0} and 350 < (y == 0).sum() < 650
    drop.eval()
    assert drop(x) is x


def test_locally_connected_with_shared_filters_is_a_convolution():
    tg.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, dtype="float64")
    local = nn.LocallyConnected2d(2, 3, (5, 6), 3, stride=2, padding=1, dtype="float64")
    OH, OW = local.output_size
    assert (OH, OW) == (3, 3) and local.weight.shape == (3, 3, 3, 2, 3, 3)
    local.weight.data[...] = conv.weight.data[:, None, None]   # the same filter everywhere
    local.bias.data[...] = conv.bias.data[:, None, None]
    x = tg.randn(2, 2, 5, 6, dtype="float64")
    np.testing.assert_allclose(local(x).numpy(), conv(x).numpy(), rtol=1e-12)
    # and against the textbook loop
    w, b = local.weight.numpy(), local.bias.numpy()
    expected = ref.local2d(x.numpy(), w, b, stride=2, padding=1)
    np.testing.assert_allclose(local(x).numpy(), expected, rtol=1e-12)


# ---- initialisation -----------------------------------------------------------------
INIT_CASES = [
    # layer, weight bound = 1/sqrt(fan_in)
    (lambda: nn.Linear(400, 300), 1 / math.sqrt(400)),
    (lambda: nn.Conv2d(16, 32, 3), 1 / math.sqrt(16 * 9)),
    (lambda: nn.Conv2d(16, 32, 3, groups=4), 1 / math.sqrt(4 * 9)),
    (lambda: nn.Conv1d(8, 64, 5), 1 / math.sqrt(8 * 5)),
    (lambda: nn.ConvTranspose2d(16, 32, 3, groups=2), 1 / math.sqrt(16 * 9)),  # OC/groups*K*K
    (lambda: nn.LocallyConnected2d(4, 8, (10, 10), 3), 1 / math.sqrt(4 * 9)),  # not OH*OW*...
]


@pytest.mark.parametrize("make,bound", INIT_CASES)
def test_default_init_bounds(make, bound):
    tg.manual_seed(0)
    layer = make()
    w, b = layer.weight.numpy(), layer.bias.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.97 * bound
    assert abs(w.mean()) < 0.05 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)   # std of U(-a, a)
    assert np.abs(b).max() <= bound and len(np.unique(b)) == b.size


def test_init_is_seeded_and_device_independent():
    pytest.importorskip("strict_backend")
    tg.manual_seed(3)
    a = nn.Conv2d(2, 4, 3)
    tg.manual_seed(3)
    b = nn.Conv2d(2, 4, 3, device="strict")
    assert b.weight.device == "strict"
    np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())
    np.testing.assert_array_equal(a.bias.numpy(), b.bias.numpy())


def test_init_functions():
    torch = pytest.importorskip("torch")
    for args in [("linear",), ("relu",), ("tanh",), ("leaky_relu",), ("leaky_relu", 0.2),
                 ("selu",), ("conv2d",), ("sigmoid",)]:
        assert nn.init.calculate_gain(*args) == pytest.approx(torch.nn.init.calculate_gain(*args))
    for shape in [(5, 3), (8, 4, 3, 2), (6, 2, 5)]:
        assert nn.init.calculate_fan_in_and_fan_out(tg.zeros(*shape)) == \
            torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape))
    tg.manual_seed(0)
    w = tg.zeros(256, 128, 3, 3)
    nn.init.kaiming_normal_(w, nonlinearity="relu")
    assert w.numpy().std() == pytest.approx(math.sqrt(2 / (128 * 9)), rel=0.02)
    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert w.numpy().std() == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.02)
    nn.init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu")
    assert np.abs(w.numpy()).max() == pytest.approx(math.sqrt(6 / (256 * 9)), rel=0.01)
    nn.init.xavier_uniform_(w, gain=2.0)
    assert np.abs(w.numpy()).max() == pytest.approx(2 * math.sqrt(6 / (384 * 9)), rel=0.01)
    nn.init.xavier_normal_(w)
    assert w.numpy().std() == pytest.approx(math.sqrt(2 / (384 * 9)), rel=0.02)
    nn.init.ones_(w)
    assert (w.numpy() == 1).all()
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nn.init.xavier_uniform_(tg.zeros(3))


FAN_INITS = [nn.init.kaiming_uniform_, nn.init.kaiming_normal_, nn.init.xavier_uniform_,
             nn.init.xavier_normal_]


@pytest.mark.parametrize("fn", FAN_INITS, ids=lambda f: f.__name__)
def test_init_of_a_zero_element_tensor_warns_and_changes_nothing(fn):
    # Its fan may be 0 (a division by zero): PyTorch's warning and no-op instead.
    for shape in [(5, 0), (0, 0), (0, 3, 2, 2)]:
        t = tg.zeros(*shape)
        state = tg.get_rng().bit_generator.state
        with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op"):
            assert fn(t) is t
        assert t.shape == shape and tg.get_rng().bit_generator.state == state
    for fn_ in (nn.init.uniform_, nn.init.normal_, nn.init.zeros_):   # no fan: a plain no-op
        assert fn_(tg.zeros(0, 3)).shape == (0, 3)
    with pytest.raises(ValueError, match="kaiming_uniform_: fan must be > 0, got 0"):
        nn.init.kaiming_uniform_(tg.zeros(2, 3), fan=0)


@pytest.mark.parametrize("fn", FAN_INITS + [nn.init.uniform_, nn.init.normal_, nn.init.ones_],
                         ids=lambda f: f.__name__)
def test_init_refuses_a_non_float_tensor(fn):
    for dtype in ("int64", "int32", "bool"):
        t = tg.zeros(4, 3, dtype=dtype)
        with pytest.raises(TypeError, match=rf"expected a floating-point tensor, got dtype "
                                            rf"{dtype} \(shape \(4, 3\)\)"):
            fn(t)
        assert not t.numpy().any()


@pytest.mark.parametrize("call, error, match", [
    (lambda t: nn.init.uniform_(t, 2, 1), ValueError, r"uniform_: b must be >= 2, got 1"),
    (lambda t: nn.init.uniform_(t, "a"), TypeError, r"uniform_: a must be a number, got 'a'"),
    (lambda t: nn.init.normal_(t, std=-1), ValueError, r"normal_: std must be >= 0\.0, got -1"),
    (lambda t: nn.init.normal_(t, mean=None), TypeError, r"normal_: mean must be a number"),
    (lambda t: nn.init.constant_(t, "a"), TypeError, r"constant_: val must be a number"),
    (lambda t: nn.init.kaiming_uniform_(t, mode="fan_avg"), ValueError,
     r"mode must be 'fan_in' or 'fan_out', got 'fan_avg'"),
    # NumPy's OverflowError "high - low range exceeds valid bounds"
    (lambda t: nn.init.uniform_(t, -math.inf, 0), ValueError,
     r"uniform_: a must be a finite number, got -inf"),
    # the error named uniform_'s bound b and normal_'s std, not the caller's gain
    (lambda t: nn.init.xavier_uniform_(t, gain=-1), ValueError,
     r"xavier_uniform_: gain must be >= 0\.0, got -1"),
    (lambda t: nn.init.xavier_normal_(t, gain=float("nan")), ValueError,
     r"xavier_normal_: gain must be a number, got nan"),
    # a slope that PyTorch would ignore: not in the gain, so refused
    (lambda t: nn.init.kaiming_uniform_(t, a=0.2, nonlinearity="relu"), ValueError,
     r"kaiming_uniform_: a=0\.2 is the negative slope of leaky_relu, but "
     r"nonlinearity='relu' takes none; pass a=0 or nonlinearity='leaky_relu'"),
    (lambda t: nn.init.kaiming_normal_(t, a=-1, nonlinearity="tanh"), ValueError,
     r"kaiming_normal_: a=-1 is the negative slope of leaky_relu, but nonlinearity='tanh'"),
    (lambda t: nn.init.kaiming_normal_(t, a="x", nonlinearity="relu"), TypeError,
     r"kaiming_normal_: a must be a number, got 'x'"),
    (lambda t: nn.init.kaiming_uniform_(t, nonlinearity="softplus"), ValueError,
     r"unsupported nonlinearity 'softplus'; expected one of linear, conv1d, conv2d, conv3d, "
     r"conv_transpose1d, conv_transpose2d, conv_transpose3d, sigmoid, tanh, relu, "
     r"leaky_relu, selu"),
    # the mode is checked even where an explicit fan makes it unused
    (lambda t: nn.init.kaiming_normal_(t, mode="fan_avg", fan=4), ValueError,
     r"kaiming_normal_: mode must be 'fan_in' or 'fan_out', got 'fan_avg'"),
    (lambda t: nn.init.kaiming_uniform_(t, mode=None), ValueError,
     r"kaiming_uniform_: mode must be 'fan_in' or 'fan_out', got None"),
], ids=["uniform-bounds", "uniform-str", "normal-std", "normal-mean", "constant-str",
        "kaiming-mode", "uniform-infinite", "xavier-gain-negative", "xavier-gain-nan",
        "kaiming-a-relu", "kaiming-a-tanh", "kaiming-a-str", "kaiming-nonlinearity",
        "kaiming-mode-with-fan", "kaiming-mode-none"])
def test_init_argument_errors_change_nothing(call, error, match):
    t = tg.zeros(4, 3)
    state = tg.get_rng().bit_generator.state
    with pytest.raises(error, match=match):
        call(t)
    assert not t.numpy().any() and tg.get_rng().bit_generator.state == state


# ---- summary ---------------------------------------------------------------------------
def test_summary_numbers_by_hand():
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3),              # 10x10 -> 8x8
        nn.ReLU(),
        nn.MaxPool2d(2),                 # -> 4x4
        nn.Conv2d(4, 6, 3, bias=False),  # -> 2x2
        nn.Flatten(),
        nn.Linear(24, 3),
    )
    model.eval()
    state = tg.get_rng().bit_generator.state
    s = nn.summary(model, (1, 2, 10, 10))
    assert tg.get_rng().bit_generator.state == state      # drew no random numbers
    assert not model.training                             # mode restored
    rows = {r["name"]: r for r in s.rows}
    conv = rows["0"]
    assert conv["output_shape"] == (1, 4, 8, 8)
    assert conv["params"] == 2 * 4 * 9 + 4                           # 76
    assert conv["fc_params"] == (2 * 10 * 10) * (4 * 8 * 8) + 4 * 8 * 8  # 51,456
    assert conv["lc_params"] == 8 * 8 * 4 * (2 * 3 * 3) + 4 * 8 * 8      # 4,864
    assert conv["receptive_field"] == (3, 3)
    assert rows["1"]["receptive_field"] == (3, 3) and rows["1"]["fc_params"] is None
    assert rows["2"]["receptive_field"] == (4, 4)                  # + (2-1)*1, jump 2
    conv2 = rows["3"]
    assert conv2["params"] == 216
    assert conv2["fc_params"] == 64 * 24                           # no bias: none counted
    assert conv2["lc_params"] == 2 * 2 * 6 * (4 * 9)
    assert conv2["receptive_field"] == (8, 8)                      # 4 + (3-1)*2
    assert rows["5"]["receptive_field"] == (10, 10)                # the whole input
    assert rows["5"]["fc_params"] == 75 and rows["5"]["lc_params"] is None
    assert s.total_params == 76 + 216 + 75
    assert s.total_params_if_fully_connected == 51456 + 64 * 24 + 75
    assert s.total_params_if_locally_connected == 4864 + 864 + 75
    text = str(s)
    for piece in ("51,456", "4,864", "8x8", "10x10", "Total params: 367", "[1, 4, 8, 8]"):
        assert piece in text


@pytest.mark.parametrize("layers, field", [
    ([nn.Conv2d(1, 1, 3, dilation=2)], (5, 5)),                            # 1 + (3-1)*2
    ([nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3, dilation=2)], (11, 11)),  # 3 + 2*2*2
    ([nn.Conv2d(1, 1, (3, 2), dilation=(1, 3))], (3, 4)),                  # per axis
])
def test_summary_receptive_field_of_dilated_convolutions(layers, field):
    assert nn.summary(nn.Sequential(*layers), (1, 1, 16, 16)).receptive_field == field


@pytest.mark.parametrize("model, shape, layer, sample", [
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2)), (1, 28, 28),
     "Conv2d", (1, 28, 28)),
    (lambda: nn.Sequential(nn.Conv1d(2, 4, 3), nn.MaxPool1d(2)), (2, 28), "Conv1d", (2, 28)),
    (lambda: nn.Sequential(nn.Identity(), nn.AvgPool2d(2)), (3, 8, 8), "AvgPool2d", (3, 8, 8)),
    (lambda: nn.Sequential(nn.AdaptiveAvgPool2d(2)), (3, 5, 5), "AdaptiveAvgPool2d",
     (3, 5, 5)),
    (lambda: nn.Sequential(nn.LocallyConnected2d(2, 3, (5, 5), 3)), (2, 5, 5),
     "LocallyConnected2d", (2, 5, 5)),
    (lambda: nn.Sequential(nn.ConvTranspose2d(2, 3, 3)), (2, 5, 5), "ConvTranspose2d",
     (2, 5, 5)),
], ids=["conv2d", "conv1d", "avg-pool", "adaptive-pool", "local", "conv-transpose"])
def test_summary_refuses_an_input_shape_without_the_batch(model, shape, layer, sample):
    """Without the batch dimension (torchsummary's convention) the layers run one
    unbatched sample, and the counts and fields, read after (N, C), would be wrong."""
    with pytest.raises(ValueError, match=re.escape(
            f"summary: input_shape {shape} reaches {layer} as one unbatched sample, of "
            f"shape {sample}; give the batch dimension too, e.g. {(1,) + shape}")):
        nn.summary(model(), shape)


def test_summary_of_a_composed_module_and_local_layers():
    model = Net()
    s = nn.summary(model, (2, 2, 4, 4))
    # containers that own parameters get a row (their own parameters only) before their children
    assert [r["name"] for r in s.rows] == ["Net", "block", "block.conv", "block.bn", "head.0",
                                           "head.1"]
    assert [r["params"] for r in s.rows] == [1, 1, 57, 6, 0, 245]
    assert [r["receptive_field"] for r in s.rows] == [None, None, (3, 3), (3, 3), (3, 3), (6, 6)]
    assert s.total_params == model.num_parameters() == sum(r["params"] for r in s.rows)
    assert model.training
    conv = nn.Conv2d(1, 1, 3, padding=1)
    twice = nn.summary(nn.Sequential(conv, conv), (1, 1, 4, 4))
    assert [r["repeat"] for r in twice.rows] == [False, True]
    assert [r["receptive_field"] for r in twice.rows] == [(3, 3), (5, 5)]
    assert twice.total_params == 10
    assert twice.total_params_if_fully_connected == 16 * 16 + 16
    local = nn.Sequential(nn.LocallyConnected2d(2, 3, (5, 5), 3), nn.Tanh())
    row = nn.summary(local, (1, 2, 5, 5)).rows[0]
    assert row["params"] == row["lc_params"] == 3 * 3 * 3 * 2 * 9 + 27
    assert row["fc_params"] == 50 * 27 + 27
    assert row["receptive_field"] == (3, 3)


class DownBlock(nn.Module):
    """A ResNet block that halves the size, with a 1x1 convolution on the shortcut."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.shortcut = nn.Conv2d(2, 4, 1, stride=2)

    def forward(self, x):
        return self.conv2(self.conv1(x).relu()) + self.shortcut(x)


class TinyUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc, self.mid = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)
        self.dec = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x):
        e = self.enc(x)
        m = self.mid(tg.functional.max_pool2d(e, 2))
        return self.dec(tg.cat([tg.functional.interpolate(m, scale_factor=2), e], axis=1))


class PooledHead(nn.Module):
    """Flattened by a method, not a Flatten layer: a reshape, not a break in the chain."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def test_summary_stops_the_receptive_field_where_the_layers_stop_being_a_chain():
    """The shortcut's 1x1 convolution reads the block's input, not conv2's output, and
    the U-Net's decoder a concatenation after ops outside the layers: the arithmetic
    along the calls gave 15x15 after the block (whose field is 11x11 there: the
    shortcut's stride counted twice) and 7x7 for the U-Net (10x10: the pooling
    uncounted), numbers that looked computed."""
    s = nn.summary(nn.Sequential(DownBlock(), nn.Conv2d(4, 4, 3, padding=1)), (1, 2, 8, 8))
    assert [r["name"] for r in s.rows] == ["0.conv1", "0.conv2", "0.shortcut", "1"]
    assert [r["receptive_field"] for r in s.rows] == [(3, 3), (7, 7), None, None]
    assert s.receptive_field is None and s.chain_break == "0.shortcut"
    assert str(s).splitlines()[-2] == (
        "Receptive field of one output unit: - (not computed from 0.shortcut on: that "
        "layer's input is not the previous layer's output; a shortcut, a concatenation or "
        "an op between the layers changed its size)")
    s = nn.summary(TinyUNet(), (1, 1, 8, 8))
    assert [r["receptive_field"] for r in s.rows] == [(3, 3), None, None]
    assert s.chain_break == "mid"
    # a reshape between the layers keeps the chain, as does an identity shortcut
    s = nn.summary(PooledHead(), (1, 1, 6, 6))
    assert s.receptive_field == (6, 6) and s.chain_break is None
    assert "not computed" not in str(s)


def test_summary_counts_normalisation_layers_as_elementwise():
    """Their parameters are counted, they have no fully- or locally-connected
    counterpart, and the receptive field passes through them unchanged (as through
    BatchNorm: the statistics they share across positions are not a window; see
    summary's docstring); InstanceNorm2d, which also takes an unbatched image, needs
    the batch dimension in the input shape, as the convolutions do."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.MaxPool2d(2),
                          nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
                          nn.LayerNorm((4, 3, 3), bias=False), nn.Conv2d(4, 2, 2),
                          nn.BatchNorm2d(2))
    s = nn.summary(model, (1, 1, 8, 8))
    assert [r["type"] for r in s.rows] == ["Conv2d", "GroupNorm", "MaxPool2d", "InstanceNorm2d",
                                           "LayerNorm", "Conv2d", "BatchNorm2d"]
    assert [r["params"] for r in s.rows] == [40, 8, 0, 8, 36, 34, 4]
    assert [r["receptive_field"] for r in s.rows] == [(3, 3), (3, 3), (4, 4), (4, 4), (4, 4),
                                                      (6, 6), (6, 6)]
    for r in (s.rows[1], s.rows[3], s.rows[4]):
        assert r["fc_params"] is None and r["lc_params"] is None
        assert r["output_shape"] == r["input_shape"]
    assert s.total_params == model.num_parameters() == 130
    with pytest.raises(ValueError, match=re.escape(
            "summary: input_shape (2, 5, 5) reaches InstanceNorm2d as one unbatched sample, "
            "of shape (2, 5, 5); give the batch dimension too, e.g. (1, 2, 5, 5)")):
        nn.summary(nn.Sequential(nn.InstanceNorm2d(2)), (2, 5, 5))
