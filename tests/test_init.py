"""nn.init and the layers' default initialisation, against PyTorch's.

Exact where it can be: the gains, the fans and the parameters of every
draw (recorded from both libraries' ``uniform_``/``normal_``/fills).
Statistical on the values: for U(-b, b), max|w| within 1e-3 of b and the
std within 1% of b/sqrt(3); for N(m, s^2), the std within 1% of s (about
200k samples each, so these margins are over 5 standard errors).
"""
from __future__ import annotations

import inspect
import math
import re

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import models, nn
from tinygrad_cnn.nn import init

from strict_backend import STRICT

SQRT2 = math.sqrt(2)


# ---- gains and fans: expected values, and PyTorch's -------------------------------------
GAINS = [
    (("linear",), 1.0), (("conv1d",), 1.0), (("conv2d",), 1.0), (("conv3d",), 1.0),
    (("conv_transpose1d",), 1.0), (("conv_transpose2d",), 1.0),
    (("conv_transpose3d",), 1.0), (("sigmoid",), 1.0), (("tanh",), 5 / 3),
    (("relu",), SQRT2), (("leaky_relu",), math.sqrt(2 / (1 + 0.01 ** 2))),
    (("leaky_relu", 0.2), math.sqrt(2 / 1.04)), (("leaky_relu", 0), SQRT2),
    (("leaky_relu", -1), 1.0), (("leaky_relu", 3), math.sqrt(0.2)),
    (("leaky_relu", math.sqrt(5)), math.sqrt(1 / 3)), (("selu",), 0.75),
]


@pytest.mark.parametrize("args, gain", GAINS, ids=[" ".join(map(str, a)) for a, _ in GAINS])
def test_calculate_gain(args, gain):
    assert init.calculate_gain(*args) == pytest.approx(gain, rel=1e-15)


@pytest.mark.parametrize("args", [a for a, _ in GAINS], ids=[" ".join(map(str, a))
                                                             for a, _ in GAINS])
def test_calculate_gain_is_pytorchs(args):
    torch = pytest.importorskip("torch")
    assert init.calculate_gain(*args) == torch.nn.init.calculate_gain(*args)


@pytest.mark.parametrize("args, error, match", [
    (("softplus",), ValueError, r"unsupported nonlinearity 'softplus'; expected one of linear"),
    (("ReLU",), ValueError, r"unsupported nonlinearity 'ReLU'"),
    (("leaky_relu", True), TypeError, r"calculate_gain: negative_slope must be a number, got "
                                      r"True"),
    (("leaky_relu", "0.1"), TypeError, r"negative_slope must be a number, got '0\.1'"),
    # PyTorch ignores these: a slope meant for leaky_relu would be silently lost
    (("relu", 0.2), ValueError, r"calculate_gain: 'relu' takes no parameter, got param=0\.2 "
                                r"\(a negative slope is leaky_relu's\)"),
    (("tanh", 0), ValueError, r"calculate_gain: 'tanh' takes no parameter, got param=0"),
    (("linear", 1.0), ValueError, r"'linear' takes no parameter"),
], ids=["unknown", "class-name", "slope-bool", "slope-str", "relu-param", "tanh-param",
        "linear-param"])
def test_calculate_gain_errors(args, error, match):
    with pytest.raises(error, match=match):
        init.calculate_gain(*args)


@pytest.mark.parametrize("call, error, match", [
    (lambda: init.constant_(tg.zeros(2), 2 ** 1100), OverflowError,
     r"constant_: val: the Python int 1\d+\.\.\. \(332 digits\) is too large for any float "
     r"dtype"),
    (lambda: init.constant_(tg.zeros(2, dtype="float64"), -(2 ** 1024)), OverflowError,
     r"constant_: val: the Python int -1\d+\.\.\. \(\d+ digits\) is too large"),
], ids=["int-beyond-float64", "negative-int-beyond-float64"])
def test_fill_errors(call, error, match):
    """A number no float holds is named, not a bare "int too large to convert"."""
    with pytest.raises(error, match=match):
        call()


def _weight(layer):
    return layer.weight.shape


FANS = [  # weight shape, (fan_in, fan_out)
    ((5, 3), (3, 5)),                                   # Linear(3, 5)
    ((1, 1), (1, 1)),
    ((8, 4, 3, 2), (24, 48)),
    ((6, 2, 5), (10, 30)),                              # Conv1d(4, 6, 5, groups=2)
    ((4, 3, 3, 3, 2), (54, 72)),                        # a 3-D kernel
    (_weight(nn.Conv2d(16, 32, 3, groups=4)), (36, 288)),
    # a transposed conv's weight is (C, OC/groups, *kernel): PyTorch's rule on it
    # gives fan_in = OC/groups*KH*KW, and so do we
    (_weight(nn.ConvTranspose2d(6, 4, 3, groups=2)), (18, 54)),
]


@pytest.mark.parametrize("shape, fans", FANS, ids=[str(s) for s, _ in FANS])
def test_fans(shape, fans):
    assert init.calculate_fan_in_and_fan_out(tg.zeros(*shape)) == fans
    torch = pytest.importorskip("torch")
    assert torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape)) == fans


@pytest.mark.parametrize("shape", [(), (7,)])
def test_fans_need_two_dimensions(shape):
    with pytest.raises(ValueError, match=rf"fan in and fan out need a tensor with at least 2 "
                                         rf"dimensions, got shape {re.escape(str(shape))}"):
        init.calculate_fan_in_and_fan_out(tg.zeros(*shape))
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape))


# ---- recording the draws ------------------------------------------------------------------
def _record_ours(monkeypatch):
    """Patch init's fills (the layers and the fan-based inits call them through the
    module) to record ``(kind, shape, parameters)`` of each call, then fill."""
    calls = []
    for name, kind in [("uniform_", "uniform"), ("normal_", "normal"), ("constant_", "fill")]:
        original = getattr(init, name)

        def recorded(tensor, *args, _original=original, _kind=kind, **kwargs):
            bound = inspect.signature(_original).bind(tensor, *args, **kwargs)
            bound.apply_defaults()
            values = tuple(float(v) for v in list(bound.arguments.values())[1:])
            calls.append((_kind, tuple(tensor.shape), values))
            return _original(tensor, *args, **kwargs)
        monkeypatch.setattr(init, name, recorded)
    return calls


def _record_torch(monkeypatch, torch, parameters_only=False):
    """The same for PyTorch's in-place fills (where all of torch.nn.init ends)."""
    calls = []
    for name, kind in [("uniform_", "uniform"), ("normal_", "normal"), ("fill_", "fill"),
                       ("zero_", "fill")]:
        original = getattr(torch.Tensor, name)

        def recorded(tensor, *args, _original=original, _kind=kind, **kwargs):
            if not parameters_only or isinstance(tensor, torch.nn.Parameter):
                values = tuple(float(a) for a in args) if args else (0.0,)
                calls.append((_kind, tuple(tensor.shape), values))
            return _original(tensor, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, recorded)
    return calls


def _assert_same_draws(ours, theirs):
    assert [c[:2] for c in ours] == [c[:2] for c in theirs]
    for (kind, shape, a), (_, _, b) in zip(ours, theirs):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-300), (kind, shape)


def _assert_distribution(values, kind, params):
    """``values`` look drawn from the recorded ``(kind, params)``."""
    values = np.asarray(values, dtype=np.float64)
    if kind == "fill":
        assert (values == params[0]).all()
    elif kind == "uniform":
        low, high = params
        half, mid = (high - low) / 2, (high + low) / 2
        assert values.min() >= low and values.max() <= high
        if half > 0:
            assert np.abs(values - mid).max() == pytest.approx(half, rel=1e-3)
            assert values.std() == pytest.approx(half / math.sqrt(3), rel=0.01)
    else:
        mean, std = params
        assert values.std() == pytest.approx(std, rel=0.01)
        assert abs(values.mean() - mean) <= 0.01 * max(std, 1e-12)


# ---- init functions against PyTorch -------------------------------------------------------
INITS = [   # function, shape (about 200k elements), keyword arguments
    ("kaiming_uniform_", (400, 500), {}),                    # leaky_relu, slope 0
    ("kaiming_uniform_", (128, 64, 5, 5), {"a": math.sqrt(5)}),    # the layers' default
    ("kaiming_uniform_", (128, 64, 5, 5), {"mode": "fan_out", "nonlinearity": "relu"}),
    ("kaiming_uniform_", (32, 25, 250), {"a": 0.2}),
    ("kaiming_uniform_", (200, 1000), {"mode": "FAN_OUT"}),  # PyTorch reads any case
    ("kaiming_uniform_", (400, 500), {"nonlinearity": "selu"}),
    ("kaiming_normal_", (400, 500), {"nonlinearity": "relu"}),
    ("kaiming_normal_", (64, 128, 5, 5), {"mode": "fan_out", "nonlinearity": "relu"}),
    ("kaiming_normal_", (400, 500), {"a": -0.5}),
    ("kaiming_normal_", (400, 500), {"nonlinearity": "tanh", "mode": "Fan_In"}),
    ("kaiming_normal_", (400, 500), {"nonlinearity": "linear", "a": 0}),
    ("xavier_uniform_", (400, 500), {}),
    ("xavier_uniform_", (128, 64, 5, 5), {"gain": 5 / 3}),
    ("xavier_normal_", (400, 500), {"gain": 2.0}),
    ("xavier_normal_", (64, 128, 5, 5), {}),
    ("uniform_", (400, 500), {}),
    ("uniform_", (400, 500), {"a": -0.3, "b": 0.7}),
    ("normal_", (400, 500), {}),
    ("normal_", (400, 500), {"mean": 1.5, "std": 0.2}),
    ("constant_", (400, 500), {"val": 0.25}),
    ("zeros_", (400, 500), {}),
    ("ones_", (400, 500), {}),
]


@pytest.mark.parametrize("name, shape, kwargs", INITS,
                         ids=[f"{n}-{s}-{k}" for n, s, k in INITS])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_init_matches_pytorch(monkeypatch, name, shape, kwargs, dtype):
    torch = pytest.importorskip("torch")
    theirs = _record_torch(monkeypatch, torch)
    getattr(torch.nn.init, name)(torch.empty(shape, dtype=getattr(torch, dtype)), **kwargs)
    ours = _record_ours(monkeypatch)
    tg.manual_seed(0)
    w = getattr(init, name)(tg.zeros(*shape, dtype=dtype), **kwargs)
    assert len(theirs) == 1
    _assert_same_draws(ours, theirs)
    assert w.dtype == dtype and w.data.dtype == dtype
    _assert_distribution(w.numpy(), *theirs[0][::2])


# ---- the layers' defaults -----------------------------------------------------------------
def _layers(lib):
    """name -> a factory of the same layer in ``lib`` (tinygrad_cnn.nn or torch.nn)."""
    return {
        "linear": lambda: lib.Linear(500, 400),
        "linear-small": lambda: lib.Linear(3, 7),
        "linear-no-bias": lambda: lib.Linear(20, 10, bias=False),
        "conv1d": lambda: lib.Conv1d(64, 128, 25),
        "conv1d-groups": lambda: lib.Conv1d(64, 256, 25, groups=8),
        "conv2d": lambda: lib.Conv2d(64, 128, 5),
        "conv2d-groups": lambda: lib.Conv2d(64, 256, 5, groups=4),
        "conv2d-depthwise": lambda: lib.Conv2d(32, 32, 3, groups=32),
        "conv2d-no-bias": lambda: lib.Conv2d(16, 8, (3, 5), bias=False),
        "conv-transpose2d": lambda: lib.ConvTranspose2d(64, 128, 5),
        "conv-transpose2d-groups": lambda: lib.ConvTranspose2d(128, 64, 5, groups=4),
        "batchnorm2d": lambda: lib.BatchNorm2d(16),
        "batchnorm1d-no-affine": lambda: lib.BatchNorm1d(8, affine=False),
    }


LAYERS = list(_layers(nn))


@pytest.mark.parametrize("name", LAYERS)
def test_default_layer_init_matches_pytorch(monkeypatch, name):
    torch = pytest.importorskip("torch")
    theirs = _record_torch(monkeypatch, torch, parameters_only=True)
    reference = _layers(torch.nn)[name]()
    ours = _record_ours(monkeypatch)
    tg.manual_seed(0)
    layer = _layers(nn)[name]()
    _assert_same_draws(ours, theirs)
    # every parameter and buffer: PyTorch's names, shapes and dtypes; the buffers
    # (running statistics) equal, each parameter from its recorded draw
    state, expected = layer.state_dict(), reference.state_dict()
    assert list(state) == list(expected)
    drawn = dict(zip([key for key, _ in reference.named_parameters()], theirs))
    for key, t in state.items():
        e = expected[key].numpy()
        assert t.shape == e.shape and t.dtype == e.dtype, key
        if key not in drawn:
            np.testing.assert_array_equal(t.numpy(), e, err_msg=key)
        elif drawn[key][0] == "fill" or t.size >= 50_000:   # enough samples for a bound
            _assert_distribution(t.numpy(), drawn[key][0], drawn[key][2])


EXPECTED_DRAWS = [   # no PyTorch needed: the formulas, worked out by hand
    (lambda: nn.Linear(4, 3), [("uniform", (3, 4), (-0.5, 0.5)),
                               ("uniform", (3,), (-0.5, 0.5))]),
    # fan_in = C/groups*KH*KW = 3/3*3*3
    (lambda: nn.Conv2d(3, 9, 3, groups=3), [("uniform", (9, 1, 3, 3), (-1 / 3, 1 / 3)),
                                            ("uniform", (9,), (-1 / 3, 1 / 3))]),
    (lambda: nn.Conv1d(2, 4, 8, bias=False), [("uniform", (4, 2, 8), (-0.25, 0.25))]),
    # fan_in = OC/groups*KH*KW = 4/2*3*3 (PyTorch's rule on the (C, OC/groups, KH, KW) weight)
    (lambda: nn.ConvTranspose2d(6, 4, 3, groups=2),
     [("uniform", (6, 2, 3, 3), (-1 / math.sqrt(18), 1 / math.sqrt(18))),
      ("uniform", (4,), (-1 / math.sqrt(18), 1 / math.sqrt(18)))]),
    # no PyTorch peer: fan_in = C*KH*KW, the inputs of one output unit (the weight's
    # dims would give OH*OW*C*KH*KW, a bound OH*OW times too small)
    (lambda: nn.LocallyConnected2d(4, 8, (10, 10), 3),
     [("uniform", (8, 8, 8, 4, 3, 3), (-1 / 6, 1 / 6)), ("uniform", (8, 8, 8), (-1 / 6, 1 / 6))]),
    (lambda: nn.BatchNorm2d(3), [("fill", (3,), (1.0,)), ("fill", (3,), (0.0,))]),
]


@pytest.mark.parametrize("make, draws", EXPECTED_DRAWS,
                         ids=["linear", "conv2d-groups", "conv1d", "conv-transpose2d-groups",
                              "locally-connected", "batchnorm"])
def test_default_layer_init_formulas(monkeypatch, make, draws):
    ours = _record_ours(monkeypatch)
    make()
    _assert_same_draws(ours, draws)


# ---- dtypes, devices, seeds ---------------------------------------------------------------
DEVICE_LAYERS = [   # factory(**kwargs), host -> device copies it needs (one per random draw)
    (lambda **kw: nn.Linear(30, 20, **kw), 2),
    (lambda **kw: nn.Linear(30, 20, bias=False, **kw), 1),
    (lambda **kw: nn.Conv1d(4, 6, 3, **kw), 2),
    (lambda **kw: nn.Conv2d(4, 6, 3, groups=2, **kw), 2),
    (lambda **kw: nn.ConvTranspose2d(4, 6, 3, **kw), 2),
    (lambda **kw: nn.LocallyConnected2d(2, 3, (6, 6), 3, **kw), 2),
    (lambda **kw: nn.BatchNorm2d(5, **kw), 0),         # fills and buffers: made there
    (lambda **kw: nn.BatchNorm1d(5, affine=False, **kw), 0),
]
DEVICE_IDS = ["linear", "linear-no-bias", "conv1d", "conv2d", "conv-transpose2d",
              "locally-connected", "batchnorm2d", "batchnorm1d-no-affine"]


@pytest.mark.parametrize("make, uploads", DEVICE_LAYERS, ids=DEVICE_IDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layers_init_in_their_dtype(make, uploads, dtype):
    layer = make(dtype=dtype)
    for key, t in layer.state_dict().items():
        expected = "int64" if key == "num_batches_tracked" else dtype
        assert t.dtype == expected and t.data.dtype == expected, key


@pytest.mark.parametrize("make, uploads", DEVICE_LAYERS, ids=DEVICE_IDS)
def test_layers_init_on_a_device_without_waiting_or_extra_copies(make, uploads):
    tg.manual_seed(5)
    on_cpu = make()
    before = STRICT.upload_count
    with STRICT.track_syncs() as log:
        tg.manual_seed(5)
        layer = make(device="strict")
    assert log == []
    # The random values are drawn on the host (one copy each, the same numbers on
    # every device); zeros, ones and running statistics are made on the device.
    assert STRICT.upload_count - before == uploads
    for key, t in layer.state_dict().items():
        assert STRICT.is_array(t.data), key
        np.testing.assert_array_equal(t.numpy(), on_cpu.state_dict()[key].numpy(), err_msg=key)


def test_constant_fills_on_the_device():
    t = tg.zeros(4, 3, device="strict")
    before = STRICT.upload_count
    with STRICT.track_syncs() as log:
        for fill in (lambda: init.constant_(t, 2.5), lambda: init.ones_(t)):
            fill()
    assert log == [] and STRICT.upload_count == before
    assert (t.numpy() == 1).all()


def test_a_seed_gives_the_same_model():
    def build():
        return nn.Sequential(models.cnn((1, 8, 8), 10), nn.LocallyConnected2d(1, 2, (3, 4), 2),
                             nn.ConvTranspose2d(2, 4, 3), nn.Conv1d(2, 3, 2))
    tg.manual_seed(11)
    a = build().state_dict()
    tg.manual_seed(11)
    b = build().state_dict()
    tg.manual_seed(12)
    c = build().state_dict()
    assert list(a) == list(b)
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy(), err_msg=key)
    random = [k for k in a if k.endswith("weight") and a[k].numpy().std() > 0]
    assert len(random) >= 5
    assert all((a[k].numpy() != c[k].numpy()).any() for k in random)
