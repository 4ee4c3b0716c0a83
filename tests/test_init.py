"""nn.init and the layers' default initialisation, against PyTorch's.

Exact where it can be: the gains, the fans and the parameters of every
draw (recorded from both libraries' ``uniform_``/``normal_``/fills).
Statistical on the values: for U(-b, b), max|w| within 1e-3 of b and the
std within 1% of b/sqrt(3); for N(m, s^2), the std within 1% of s (about
200k samples each, so these margins are over 5 standard errors).

eye_ and dirac_ are exact (against loops and PyTorch); orthogonal_ gives
orthonormal rows or columns, and PyTorch's Q for the same draws;
trunc_normal_ is checked against the truncated normal's mean, std and CDF.
"""
from __future__ import annotations

import inspect
import math
import re
import warnings

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


# ---- eye_ and dirac_: exact, against the formulas and PyTorch -----------------------------
def _torch_dtype(torch, dtype):
    return getattr(torch, dtype)


EYES = [(3, 5), (5, 3), (4, 4), (1, 1), (0, 3)]


@pytest.mark.parametrize("shape", EYES, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_eye_is_the_identity_as_in_pytorch(shape, dtype):
    w = tg.full(shape, 7.0, dtype=dtype)        # every element is written: no 7 is left
    assert init.eye_(w) is w
    assert w.dtype == dtype and w.data.dtype == dtype
    expected = np.array([[float(i == j) for j in range(shape[1])] for i in range(shape[0])])
    np.testing.assert_array_equal(w.numpy(), expected.reshape(shape))
    torch = pytest.importorskip("torch")
    theirs = torch.nn.init.eye_(torch.empty(shape, dtype=_torch_dtype(torch, dtype)))
    np.testing.assert_array_equal(w.numpy(), theirs.numpy())


def _dirac_by_hand(shape, groups):
    """PyTorch's loops: one 1 per (group, channel d < min(out/groups, in)), at the centre."""
    w = np.zeros(shape)
    per_group = shape[0] // groups
    for g in range(groups):
        for d in range(min(per_group, shape[1])):
            w[(g * per_group + d, d) + tuple(k // 2 for k in shape[2:])] = 1
    return w


DIRACS = [   # shape (out, in, *kernel), groups
    ((4, 2, 3), 1), ((2, 4, 5), 1), ((3, 3, 4), 3),                 # Conv1d: more out, more in
    ((6, 4, 3, 3), 1), ((6, 4, 3, 3), 2), ((6, 2, 3, 3), 3), ((6, 1, 2, 4), 6),
    ((4, 4, 2, 4), 1), ((3, 5, 1, 1), 1),                           # even and 1x1 kernels
    ((8, 2, 3, 2, 5), 4), ((4, 3, 3, 3, 3), 1), ((6, 3, 1, 2, 1), 2),   # Conv3d
    ((0, 3, 3), 1), ((0, 3, 3, 3), 4), ((4, 0, 3, 3), 2),           # no elements
]


@pytest.mark.parametrize("shape, groups", DIRACS, ids=[f"{s}-groups{g}" for s, g in DIRACS])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dirac_is_the_identity_as_in_pytorch(shape, groups, dtype):
    w = tg.full(shape, 7.0, dtype=dtype)
    assert init.dirac_(w, groups) is w
    assert w.dtype == dtype and w.data.dtype == dtype
    np.testing.assert_array_equal(w.numpy(), _dirac_by_hand(shape, groups))
    torch = pytest.importorskip("torch")
    theirs = torch.nn.init.dirac_(torch.empty(shape, dtype=_torch_dtype(torch, dtype)), groups)
    np.testing.assert_array_equal(w.numpy(), theirs.numpy())


def test_dirac_and_eye_pass_their_inputs_through():
    # What they are for: the layer computes the identity (its first channels or inputs).
    x = tg.randn(2, 6, 5, 7, dtype="float64")
    conv = nn.Conv2d(6, 6, 3, padding=1, groups=3, bias=False, dtype="float64")
    init.dirac_(conv.weight, groups=3)
    np.testing.assert_array_equal(conv(x).numpy(), x.numpy())
    conv1d = nn.Conv1d(6, 4, 5, padding=2, bias=False, dtype="float64")   # 4 of 6 channels
    init.dirac_(conv1d.weight)
    np.testing.assert_array_equal(conv1d(x[:, :, 0]).numpy(), x.numpy()[:, :4, 0])
    linear = nn.Linear(7, 3, bias=False, dtype="float64")
    init.eye_(linear.weight)
    np.testing.assert_array_equal(linear(x).numpy(), x.numpy()[..., :3])


# ---- orthogonal_ ------------------------------------------------------------------------
ORTHOGONAL = [(10, 4), (4, 10), (7, 7), (1, 6), (6, 1), (5, 2, 3),
              (16, 3, 3, 3), (64, 2, 2, 2), (8, 4, 5)]   # conv weights: wide, tall


@pytest.mark.parametrize("shape", ORTHOGONAL, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_orthogonal_rows_or_columns_are_orthonormal_times_gain(shape, dtype):
    tg.manual_seed(0)
    w = tg.zeros(*shape, dtype=dtype)
    assert init.orthogonal_(w, gain=1.5) is w
    assert w.dtype == dtype and w.data.dtype == dtype
    q = w.numpy().astype(np.float64).reshape(shape[0], -1)   # (rows, cols), as PyTorch's
    rows, cols = q.shape
    gram = q @ q.T if rows <= cols else q.T @ q              # (min, min)
    np.testing.assert_allclose(gram, 1.5 ** 2 * np.eye(min(rows, cols)),
                               atol=1e-5 if dtype == "float32" else 1e-13)
    tg.manual_seed(1)                                        # random: another seed, another Q
    other = init.orthogonal_(tg.zeros(*shape, dtype=dtype), gain=1.5).numpy()
    assert not np.allclose(other, w.numpy())
    tg.manual_seed(0)                                        # and the seed repeats it
    np.testing.assert_array_equal(init.orthogonal_(tg.zeros(*shape, dtype=dtype),
                                                   gain=1.5).numpy(), w.numpy())


@pytest.mark.parametrize("shape", [(6, 3), (3, 6), (4, 2, 3, 3), (5, 5)], ids=str)
def test_orthogonal_makes_pytorchs_q_from_the_same_draws(monkeypatch, shape):
    """Given the same N(0, 1) matrix, PyTorch's Q: the same QR, the same sign correction
    (each case's R has negative diagonal elements, which the correction flips)."""
    torch = pytest.importorskip("torch")
    rows = shape[0]
    cols = int(np.prod(shape)) // rows
    draws = np.random.default_rng(sum(shape)).standard_normal((rows, cols))
    r = np.linalg.qr(draws if rows >= cols else draws.T)[1]
    assert (np.diag(r) < 0).any() and (np.diag(r) > 0).any()

    def torch_normal_(t, *args, **kwargs):
        return t.copy_(torch.from_numpy(draws))
    with monkeypatch.context() as patch:
        patch.setattr(torch.Tensor, "normal_", torch_normal_)
        theirs = torch.nn.init.orthogonal_(torch.empty(shape, dtype=torch.float64), gain=0.5)

    class Draws:
        def normal(self, size):
            assert size == (rows, cols)
            return draws.copy()
    monkeypatch.setattr(init, "get_rng", Draws)
    ours = init.orthogonal_(tg.zeros(*shape, dtype="float64"), gain=0.5)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=0, atol=1e-14)


# ---- trunc_normal_ ----------------------------------------------------------------------
def _upper_mass(z):
    """P(Z > z) of N(0, 1), accurate far into the tail."""
    return math.erfc(z / math.sqrt(2)) / 2


def _truncated_moments(mean, std, a, b):
    """Mean and std of N(mean, std^2) conditioned on [a, b] (the textbook formulas)."""
    alpha, beta = (a - mean) / std, (b - mean) / std
    if alpha + beta < 0:   # mirrored into the upper half, where erfc loses no digits
        m, s = _truncated_moments(-mean, std, -b, -a)
        return -m, s

    def pdf(z):
        return 0.0 if math.isinf(z) else math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    def z_pdf(z):
        return 0.0 if math.isinf(z) else z * pdf(z)
    mass = _upper_mass(alpha) - _upper_mass(beta)
    shift = (pdf(alpha) - pdf(beta)) / mass
    var = 1 + (z_pdf(alpha) - z_pdf(beta)) / mass - shift ** 2
    return mean + std * shift, std * math.sqrt(var)


def _truncated_cdf(x, mean, std, a, b):
    """P(X <= x) for X ~ N(mean, std^2) conditioned on [a, b], x in [a, b]."""
    alpha, beta, z = (a - mean) / std, (b - mean) / std, (x - mean) / std
    if alpha + beta < 0:
        return 1 - _truncated_cdf(-x, -mean, std, -b, -a)
    return (_upper_mass(alpha) - _upper_mass(z)) / (_upper_mass(alpha) - _upper_mass(beta))


def _assert_truncated_normal(values, mean, std, a, b):
    """``values`` (50k or more) lie in [a, b] and look drawn from the truncated law:
    the mean within 5 standard errors, the std within 2% (over 5 of its standard
    errors, even for an exponential-like tail) and the empirical CDF within
    1.95 / sqrt(n) of the exact one at 200 points (the Kolmogorov-Smirnov test at the
    0.1% level)."""
    n = values.size
    assert values.min() >= np.asarray(a, values.dtype) and \
        values.max() <= np.asarray(b, values.dtype)
    values = np.sort(values.astype(np.float64).ravel())
    expected_mean, expected_std = _truncated_moments(mean, std, a, b)
    assert abs(values.mean() - expected_mean) <= 5 * expected_std / math.sqrt(n)
    assert values.std() == pytest.approx(expected_std, rel=0.02)
    grid = np.quantile(values, np.linspace(0.0025, 0.9975, 200))
    empirical = np.searchsorted(values, grid, side="right") / n
    exact = np.array([_truncated_cdf(x, mean, std, a, b) for x in grid])
    assert np.abs(empirical - exact).max() <= 1.95 / math.sqrt(n)


TRUNCATED = [   # mean, std, a, b; the proposal that _truncated_normal uses for it
    ((0.0, 1.0, -2.0, 2.0), "normal"),              # PyTorch's default
    ((1.5, 0.2, 1.0, 2.0), "normal"),
    ((0.0, 1.0, 0.0, math.inf), "normal"),           # the half-normal
    ((0.0, 1.0, -0.3, 0.2), "uniform"),              # short, around the mean
    ((0.0, 1.0, 1.0, 1.5), "uniform"),               # short, in the upper tail
    ((0.5, 2.0, -2.5, -1.9), "uniform"),             # short, in the lower tail
    ((0.0, 1.0, 3.0, math.inf), "exponential"),      # the tails
    ((0.0, 1.0, 1.0, 1.8), "exponential"),           # a quarter of its draws pass b
    ((2.0, 0.5, -math.inf, 0.0), "exponential"),
    ((0.0, 1.0, 8.0, 9.0), "exponential"),           # 1e-15 of the mass: normal draws
    ((10.0, 1.0, -2.0, 2.0), "exponential"),         # would keep none; PyTorch warns here
]
TRUNCATED_IDS = [f"{p}-{kind}" for p, kind in TRUNCATED]


class _CountingRng:
    """The project's generator, recording which distributions were drawn from."""

    def __init__(self, rng):
        self.rng, self.methods = rng, set()

    def __getattr__(self, name):
        self.methods.add(name)
        return getattr(self.rng, name)


@pytest.mark.parametrize("params, proposal", TRUNCATED, ids=TRUNCATED_IDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_trunc_normal_draws_the_truncated_normal(monkeypatch, params, proposal, dtype):
    tg.manual_seed(0)
    counting = _CountingRng(tg.get_rng())
    monkeypatch.setattr(init, "get_rng", lambda: counting)
    w = tg.zeros(400, 500, dtype=dtype)
    assert init.trunc_normal_(w, *params) is w
    assert w.dtype == dtype and w.data.dtype == dtype
    assert proposal in counting.methods        # the case tests the proposal it is meant to
    _assert_truncated_normal(w.numpy(), *params)


@pytest.mark.parametrize("params", [p for p, kind in TRUNCATED if kind != "exponential"
                                    and all(map(math.isfinite, p))], ids=str)
def test_trunc_normal_checks_pass_pytorchs_samples(params):
    """The formulas and tolerances above hold for PyTorch's own trunc_normal_ (50k
    samples; in the far tails its uniform proposal keeps too few draws to be quick)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch.nn.init.trunc_normal_(torch.empty(200, 250, dtype=torch.float64), *params)
    _assert_truncated_normal(theirs.numpy(), *params)


def test_trunc_normal_keeps_its_bounds_at_any_scale():
    tg.manual_seed(0)
    # float32: the values lie in [float32(a), float32(b)], as PyTorch's (0.7 rounds down)
    w = init.trunc_normal_(tg.zeros(50_000), 0.0, 1.0, 0.7, 0.7000001).numpy()
    assert w.min() >= np.float32(0.7) and w.max() <= np.float32(0.7000001)
    # an interval far shorter than std: about uniform on it (a width that would
    # underflow in units of std)
    w = init.trunc_normal_(tg.zeros(50_000, dtype="float64"), 0.0, 1e300, 0.0, 1e-300).numpy()
    assert w.min() >= 0 and w.max() <= 1e-300
    assert w.mean() == pytest.approx(0.5e-300, rel=0.01, abs=0)
    # farther from the mean than float64 counts in stds: all at the nearest bound
    w = init.trunc_normal_(tg.zeros(100, dtype="float64"), 0.0, 1e-310, 1.0, 2.0).numpy()
    assert (w == 1.0).all()
    w = init.trunc_normal_(tg.zeros(100, dtype="float64"), 0.0, 1e-300, -2.0, -1.0).numpy()
    assert w.max() == -1.0 and w.min() >= -1.0 - 1e-290


# ---- common to the four: errors, empty tensors, in place, devices ------------------------
NEW_INITS = [   # name, call, a shape it takes
    ("trunc_normal_", lambda t: init.trunc_normal_(t, 0.5, 2.0, -1.0, 3.0), (4, 3)),
    ("orthogonal_", lambda t: init.orthogonal_(t, gain=2.0), (4, 3, 2)),
    ("eye_", lambda t: init.eye_(t), (4, 3)),
    ("dirac_", lambda t: init.dirac_(t, groups=2), (4, 3, 3, 3)),
]
NEW_IDS = [name for name, _, _ in NEW_INITS]


@pytest.mark.parametrize("call, shape, error, match", [
    (lambda t: init.trunc_normal_(t, a=2, b=1), (4, 3), ValueError,
     r"^trunc_normal_: the bounds must satisfy a < b, got a=2, b=1$"),
    (lambda t: init.trunc_normal_(t, a=1.5, b=1.5), (4, 3), ValueError,
     r"^trunc_normal_: the bounds must satisfy a < b, got a=1\.5, b=1\.5$"),
    (lambda t: init.trunc_normal_(t, std=0), (4, 3), ValueError,
     r"^trunc_normal_: std must be > 0, got 0$"),
    (lambda t: init.trunc_normal_(t, std=-1.0), (4, 3), ValueError,
     r"^trunc_normal_: std must be > 0, got -1\.0$"),
    (lambda t: init.trunc_normal_(t, std=math.inf), (4, 3), ValueError,
     r"^trunc_normal_: std must be a finite number, got inf$"),
    (lambda t: init.trunc_normal_(t, mean=math.nan), (4, 3), ValueError,
     r"^trunc_normal_: mean must be a number, got nan$"),
    (lambda t: init.trunc_normal_(t, a="-2"), (4, 3), TypeError,
     r"^trunc_normal_: a must be a number, got '-2' \(str\)$"),
    (lambda t: init.trunc_normal_(t, b=math.nan), (4, 3), ValueError,
     r"^trunc_normal_: b must be a number, got nan$"),
    (lambda t: init.orthogonal_(t), (5,), ValueError,
     r"^orthogonal_: expected a tensor with at least 2 dimensions \(it is filled as a matrix "
     r"\(size\(0\), -1\)\), got shape \(5,\)$"),
    (lambda t: init.orthogonal_(t), (), ValueError, r"got shape \(\)$"),
    (lambda t: init.orthogonal_(t, gain=-1), (4, 3), ValueError,
     r"^orthogonal_: gain must be >= 0\.0, got -1$"),
    (lambda t: init.orthogonal_(t, gain=math.inf), (4, 3), ValueError,
     r"^orthogonal_: gain must be a finite number, got inf$"),
    (lambda t: init.eye_(t), (2, 3, 4), ValueError,
     r"^eye_: expected a 2-D tensor \(a Linear weight \(out, in\)\), got shape \(2, 3, 4\); "
     r"dirac_ fills a conv weight with the identity$"),
    (lambda t: init.eye_(t), (6,), ValueError,
     r"^eye_: expected a 2-D tensor \(a Linear weight \(out, in\)\), got shape \(6,\)$"),
    (lambda t: init.dirac_(t), (4, 3), ValueError,
     r"^dirac_: expected a 3-, 4- or 5-D conv weight \(out, in, \*kernel\), got shape "
     r"\(4, 3\); eye_ fills a 2-D one with the identity$"),
    (lambda t: init.dirac_(t), (1, 1, 1, 1, 1, 1), ValueError,
     r"^dirac_: expected a 3-, 4- or 5-D conv weight .*, got shape \(1, 1, 1, 1, 1, 1\)$"),
    (lambda t: init.dirac_(t, groups=4), (6, 2, 3, 3), ValueError,
     r"^dirac_: groups=4 must divide size\(0\)=6, the output channels of the weight of "
     r"shape \(6, 2, 3, 3\)$"),
    (lambda t: init.dirac_(t, groups=0), (6, 2, 3), ValueError,
     r"^dirac_: groups must be an int >= 1, got 0$"),
    (lambda t: init.dirac_(t, groups=2.0), (6, 2, 3), TypeError,
     r"^dirac_: groups must be an int, got 2\.0 \(float\)$"),
], ids=["trunc-a-above-b", "trunc-a-equals-b", "trunc-std-0", "trunc-std-negative",
        "trunc-std-inf", "trunc-mean-nan", "trunc-a-str", "trunc-b-nan", "orthogonal-1d",
        "orthogonal-0d", "orthogonal-gain-negative", "orthogonal-gain-inf", "eye-3d", "eye-1d",
        "dirac-2d", "dirac-6d", "dirac-groups-not-dividing", "dirac-groups-0",
        "dirac-groups-float"])
def test_new_init_argument_errors_change_nothing(call, shape, error, match):
    t = tg.full(shape, 3.0)
    state = tg.get_rng().bit_generator.state
    with pytest.raises(error, match=match):
        call(t)
    assert (t.numpy() == 3.0).all() and tg.get_rng().bit_generator.state == state


@pytest.mark.parametrize("name, call, shape", NEW_INITS, ids=NEW_IDS)
def test_new_inits_refuse_a_non_float_tensor(name, call, shape):
    for dtype in ("int64", "bool"):
        t = tg.zeros(*shape, dtype=dtype)
        with pytest.raises(TypeError, match=rf"^{name}: expected a floating-point tensor, got "
                                            rf"dtype {dtype} \(shape {re.escape(str(shape))}\)"):
            call(t)
        assert not t.numpy().any()


@pytest.mark.parametrize("name, call, shape", NEW_INITS, ids=NEW_IDS)
def test_new_inits_leave_a_zero_element_tensor_alone_without_a_warning(name, call, shape):
    # As PyTorch's: these have no fan to divide by, so no warning (kaiming_* and xavier_* warn).
    empty = (0,) + shape[1:]
    t = tg.zeros(*empty)
    state = tg.get_rng().bit_generator.state
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert call(t) is t
    assert t.shape == empty and tg.get_rng().bit_generator.state == state


@pytest.mark.parametrize("name, call, shape", NEW_INITS, ids=NEW_IDS)
def test_new_inits_write_in_place_without_a_graph(name, call, shape):
    w = nn.Parameter(tg.zeros(*shape))
    loss = (w * w).sum()                        # saves w
    version = w._version
    assert call(w) is w
    assert w.requires_grad and w.grad_fn is None and w._version == version + 1
    assert w.numpy().any()
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()
    # A view writes through to its base, as PyTorch's init functions do.
    base = tg.zeros(2, *shape)
    call(base[1])
    assert not base.numpy()[0].any() and base.numpy()[1].any()


@pytest.mark.parametrize("name, call, shape", NEW_INITS, ids=NEW_IDS)
def test_new_inits_fill_on_the_device_with_one_copy(name, call, shape):
    tg.manual_seed(5)
    on_cpu = call(tg.zeros(*shape)).numpy()
    t = tg.zeros(*shape, device="strict")
    before = STRICT.upload_count
    with STRICT.track_syncs() as log:
        tg.manual_seed(5)
        assert call(t) is t
    assert log == [] and STRICT.upload_count - before == 1
    assert STRICT.is_array(t.data)
    np.testing.assert_array_equal(t.numpy(), on_cpu)   # the same numbers on every device
