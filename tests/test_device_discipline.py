"""Training on a device, proved without a GPU on the strict CuPy stand-in.

* A training step of the default CNN (data loader, forward, loss, backward,
  clipping, optimiser, schedule) never waits for the device: zero host
  synchronisations, and the same weights as on the CPU.
* After the first step, a training step copies nothing to the device but its
  batch and dropout mask: the numbers of ops (``x * 0.5``, eps, pooling
  divisors) are copied once and shared, and never written.
* ``train.train`` reads from the device only when the user asked for it:
  once per logged step (the progress bar), once per epoch summary and once
  per evaluation.
* The device facts of ``tinygrad-cnn info`` and ``TINYGRAD_CNN_DEVICE``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import types

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import backend as backend_module
from tinygrad_cnn import functional as F
from tinygrad_cnn import models, nn, optim
from tinygrad_cnn import train as train_module
from tinygrad_cnn.backend import DeviceError
from tinygrad_cnn.cli import main
from tinygrad_cnn.data import DataLoader, TensorDataset

from conftest import device_params
from strict_backend import STRICT, _cupy_has


@pytest.fixture(autouse=True)
def no_pending_checks():
    yield
    STRICT._deferred_status = None


# ---- a training step never waits for the device -------------------------------------
OPTIMIZERS = {
    "adam": lambda params: optim.Adam(params, lr=1e-2),
    "sgd-nesterov-wd": lambda params: optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True,
                                                weight_decay=1e-3),
    "adamw": lambda params: optim.AdamW(params, lr=1e-2),
    # OneCycleLR cycles its momentum, as it would in PyTorch
    "rmsprop-centered": lambda params: optim.RMSprop(params, lr=1e-3, centered=True,
                                                     weight_decay=1e-3),
}


def _run_steps(device, make_opt, x, y, steps):
    """``steps`` steps of the default CNN on ``device`` -> (model, losses, the host
    synchronisations of each step, the host -> device copies of each step)."""
    tg.manual_seed(0)
    model = models.cnn((1, 8, 8), 10).to(device)
    opt = make_opt(list(model.parameters()))
    sched = optim.OneCycleLR(opt, max_lr=opt.param_groups[0]["lr"], total_steps=steps)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, seed=0, device=device)
    backend = tg.get_backend(device)
    losses, syncs, uploads = [], [], []
    for k, (xb, yb) in enumerate(loader):
        if k == steps:
            break
        before = getattr(backend, "upload_count", 0)
        with contextlib.ExitStack() as stack:
            log = stack.enter_context(backend.track_syncs()) if device == "strict" else []
            loss = nn.cross_entropy(model(xb), yb)   # dropout is on: a host-drawn mask
            opt.zero_grad()
            loss.backward()
            optim.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
        losses.append(loss)
        syncs.append(list(log))
        uploads.append(getattr(backend, "upload_count", 0) - before)
    return model, losses, syncs, uploads


@pytest.mark.parametrize("make_opt", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_training_steps_of_the_default_cnn_never_wait_for_the_device(make_opt):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 48)
    model, losses, syncs, uploads = _run_steps("strict", make_opt, x, y, steps=3)
    assert syncs == [[], [], []], "a training step synchronised with the device:\n" + \
        "\n".join(entry for step in syncs for entry in step)
    # Host -> device copies in a step (the batch is copied by the loader,
    # before the step): the dropout mask, drawn on the host so that a seed
    # gives the same mask on every device.  Nothing else.
    assert uploads == [1, 1, 1]
    with STRICT.track_syncs() as log:
        values = [loss.item() for loss in losses]   # what the user asked for
    assert len(log) == 3
    reference, ref_losses, _, _ = _run_steps("cpu", make_opt, x, y, steps=3)
    np.testing.assert_allclose(values, [loss.item() for loss in ref_losses], rtol=1e-6)
    for (name, p), q in zip(model.state_dict().items(), reference.state_dict().values()):
        assert p.device == "strict"
        q = q.numpy()
        np.testing.assert_allclose(p.numpy(), q, rtol=0, atol=1e-4 * np.abs(q).max(),
                                   err_msg=name)


@pytest.mark.parametrize("make_opt", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_training_steps_on_a_second_device_match_the_cpu(make_opt):
    """"strict2" is not the current device unless its context makes it so, as cuda:1
    is not: array code run outside backend.context() raises there instead of
    landing on the wrong device."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 48)
    model, losses, _, _ = _run_steps("strict2", make_opt, x, y, steps=3)
    reference, ref_losses, _, _ = _run_steps("cpu", make_opt, x, y, steps=3)
    np.testing.assert_allclose([loss.item() for loss in losses],
                               [loss.item() for loss in ref_losses], rtol=1e-6)
    for (name, p), q in zip(model.state_dict().items(), reference.state_dict().values()):
        assert p.device == "strict2"
        q = q.numpy()
        np.testing.assert_allclose(p.numpy(), q, rtol=0, atol=1e-4 * np.abs(q).max(),
                                   err_msg=name)


def test_training_tools_on_a_second_device():
    """Gradient clipping, zeroed gradients, batch-norm statistics and init on a device
    that is not current by default."""
    tg.manual_seed(0)
    bn = nn.BatchNorm2d(2, momentum=None, device="strict2")
    lin = nn.Linear(3, 2, device="strict2")
    nn.init.constant_(lin.bias, 0.5)
    x = tg.tensor(np.arange(16.0).reshape(2, 2, 2, 2), dtype=tg.float32, device="strict2")
    (bn(x).sum() + lin(tg.ones(4, 3, device="strict2")).sum()).backward()
    params = list(bn.parameters()) + list(lin.parameters())
    total = optim.clip_grad_norm_(params, 1.0)
    optim.clip_grad_value_(params, 0.1)
    opt = optim.SGD(params, lr=0.1)
    opt.zero_grad(set_to_none=False)
    bn.reset_running_stats()
    assert total.device == "strict2" and float(total) > 0
    assert all(p.grad.device == "strict2" and not p.grad.numpy().any() for p in params)
    assert bn.running_var.tolist() == [1.0, 1.0] and lin.bias.tolist() == [0.5, 0.5]
    bn.eval()
    with tg.viz.trace() as steps:               # gradient norms, read on the device
        loss = bn(x).sum() + (lin.weight * lin.weight).sum()
        loss.backward(retain_graph=True)
    assert len(steps.steps) > 0 and "|grad|" in tg.viz.graph(loss).source
    lin.zero_grad(set_to_none=False)
    assert not lin.weight.grad.numpy().any()


@pytest.mark.parametrize("device", device_params(["cuda"]), indirect=True)
@pytest.mark.filterwarnings("ignore:cupyx.allow_synchronize")
def test_training_steps_of_the_default_cnn_on_a_gpu_never_wait_for_it(device):
    cupyx = pytest.importorskip("cupyx")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 48)
    # SGD: its update is linear in the gradient, so float32 rounding differences
    # between cuBLAS and the CPU stay small (Adam's normalised step would
    # amplify them in the tiniest gradients).
    make_opt = OPTIMIZERS["sgd-nesterov-wd"]
    # CuPy raises DeviceSynchronized at any device -> host copy or synchronize.
    with cupyx.allow_synchronize(False):
        model, losses, _, _ = _run_steps(device, make_opt, x, y, steps=3)
    reference, ref_losses, _, _ = _run_steps("cpu", make_opt, x, y, steps=3)
    np.testing.assert_allclose([loss.item() for loss in losses],
                               [loss.item() for loss in ref_losses], rtol=1e-4)
    for (name, p), q in zip(model.state_dict().items(), reference.state_dict().values()):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-3, atol=1e-5, err_msg=name)


def test_optimizer_state_lives_on_the_parameters_device():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 16)
    for name, make_opt in OPTIMIZERS.items():
        tg.manual_seed(0)
        model = models.cnn().to("strict")
        opt = make_opt(list(model.parameters()))
        nn.cross_entropy(model(tg.tensor(x, device="strict")),
                         tg.tensor(y, device="strict")).backward()
        opt.step()
        arrays = [v for state in opt.state.values() for v in state.values()
                  if not isinstance(v, (int, float))]
        assert arrays and all(STRICT.is_array(v) for v in arrays), name


def test_normalisation_in_evaluation_sends_nothing_to_the_device():
    """In evaluation BatchNorm (and batch_norm, instance_norm) normalise by running
    statistics already on the device: no synchronisation and no host -> device copy,
    not even of a scalar, so inference costs no transfer per layer."""
    bn = nn.BatchNorm2d(3, device="strict")
    x = tg.randn(4, 3, 5, 5, device="strict")
    bn(x)                                        # training: statistics to normalise by
    bn.eval()
    before = STRICT.upload_count
    with STRICT.track_syncs() as log:
        y = bn(x)
        F.batch_norm(x, bn.running_mean, bn.running_var, training=False)
        F.instance_norm(x, bn.running_mean, bn.running_var, use_input_stats=False)
    assert log == [] and STRICT.upload_count == before
    mean = bn.running_mean.numpy().reshape(1, 3, 1, 1)
    var = bn.running_var.numpy().reshape(1, 3, 1, 1)
    np.testing.assert_allclose(y.numpy(), (x.numpy() - mean) / np.sqrt(var + bn.eps),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_interpolate_uploads_its_maps_once(mode):
    """interpolate's per-axis maps (an index, or matrices) are copied to the device the
    first time only: later forward and backward passes of a training step send none."""
    x = tg.tensor(np.random.default_rng(0).standard_normal((2, 3, 40, 40)), device="strict",
                  requires_grad=True)

    def step():
        F.interpolate(x, scale_factor=1.5, mode=mode).sum().backward()

    step()                                       # the first: the maps go to the device
    before = STRICT.upload_count
    with STRICT.track_syncs() as log:
        step()
    assert log == [] and STRICT.upload_count == before


def test_the_losses_softplus_sends_nothing_to_the_device():
    """binary_cross_entropy_with_logits runs softplus every training step: its forward
    and backward copy nothing host -> device, not even a scalar."""
    x = tg.tensor(np.linspace(-30.0, 30.0, 12), device="strict", requires_grad=True)
    before = STRICT.upload_count
    with STRICT.track_syncs() as log:
        nn.softplus(x).sum().backward()
    assert log == [] and STRICT.upload_count == before
    np.testing.assert_allclose(x.grad.numpy(), 1 / (1 + np.exp(-x.numpy())), rtol=1e-15)


# ---- numbers and other constants go to the device once --------------------------------
def _net_of_many_layers():
    """Normalisation layers, GELU and SiLU, padded max and average pooling, adaptive
    pooling and a linear head: the layers whose forward and backward use numbers
    (eps, 0.5, 1 - x...) and size-dependent constants (divisors, masks)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.GELU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(8, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.SiLU(),
        nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
        nn.InstanceNorm2d(8, affine=True), nn.Mish(), nn.AdaptiveMaxPool2d(2),
        nn.Flatten(), nn.LayerNorm(32), nn.Linear(32, 10))


@pytest.mark.parametrize("make_opt", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_training_steps_copy_nothing_to_the_device_after_the_first(make_opt):
    """After the first step has put its numbers on the device, a training step (forward,
    a label-smoothed loss, backward, clipping, optimiser, schedule) copies nothing to
    it: each such copy is a host -> device transfer on a GPU, every step."""
    tg.manual_seed(0)
    model = _net_of_many_layers().to("strict")
    opt = make_opt(list(model.parameters()))
    sched = optim.OneCycleLR(opt, max_lr=opt.param_groups[0]["lr"], total_steps=4)
    rng = np.random.default_rng(0)
    x = tg.tensor(rng.standard_normal((4, 1, 8, 8)).astype(np.float32), device="strict")
    y = tg.tensor(rng.integers(0, 10, 4), device="strict")
    uploads = []
    for _ in range(4):
        before = STRICT.upload_count
        with STRICT.track_syncs() as log:
            loss = nn.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            optim.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
        assert log == []
        uploads.append(STRICT.upload_count - before)
    assert uploads[1:] == [0, 0, 0]
    assert np.isfinite(loss.item())


def _leaf(*shape, scale=1.0):
    data = np.random.default_rng(sum(shape)).standard_normal(shape) * scale
    return tg.tensor(data.astype(np.float32), device="strict", requires_grad=True)


_X, _IMG = _leaf(6, 5, scale=3.0), _leaf(2, 6, 7, 7)
_PROBABILITIES = tg.tensor(np.full((6, 5), 0.2, np.float32), device="strict")
_CLASSES = tg.tensor(np.array([0, 4, 2, 1, 3, 0]), device="strict")
_TARGET = tg.tensor(np.linspace(-1, 1, 30).reshape(6, 5).astype(np.float32), device="strict")
_RUNNING = (tg.zeros(6, device="strict"), tg.ones(6, device="strict"))

# Each a forward and backward pass whose formulas use numbers or size-dependent constants.
_NUMBER_USERS = {
    "arithmetic": lambda: (1 - _X * 0.5 + _X / 3 - 2 / (_X * _X + 1)).sum(),
    "powers": lambda: (_X ** 2 + (_X * _X + 1) ** 0.5 + 2 ** _X + _X ** 3).sum(),
    "comparisons": lambda: tg.where((_X > 0) & (_X <= 2.5), _X, 0.0).sum(),
    "clip-maximum": lambda: (_X.clip(-1, 1) + _X.maximum(0.5) + _X.clip(_TARGET, 2.0)).sum(),
    "gelu": lambda: F.gelu(_X).sum(),
    "gelu-tanh": lambda: F.gelu(_X, approximate="tanh").sum(),
    "activations": lambda: (F.silu(_X) + F.mish(_X) + F.elu(_X) + F.selu(_X) + F.celu(_X)
                            + F.softplus(_X, beta=2) + F.hardswish(_X) + F.hardsigmoid(_X)
                            + F.relu6(_X) + F.leaky_relu(_X, 0.2)).sum(),
    "batch_norm-train": lambda: F.batch_norm(_IMG, *_RUNNING, training=True).sum(),
    "batch_norm-eval": lambda: F.batch_norm(_IMG, *_RUNNING, training=False).sum(),
    "group_norm": lambda: F.group_norm(_IMG, 3).sum(),
    "layer_norm": lambda: F.layer_norm(_IMG, (7, 7)).sum(),
    "instance_norm": lambda: F.instance_norm(_IMG).sum(),
    "normalize": lambda: (F.normalize(_X) + F.cosine_similarity(_X, _TARGET)[:, None]).sum(),
    "cross_entropy-smoothed": lambda: nn.cross_entropy(_X, _CLASSES, label_smoothing=0.1),
    "cross_entropy-probabilities": lambda: nn.cross_entropy(_X, _PROBABILITIES),
    "mse": lambda: nn.mse_loss(_X, _TARGET),
    "bce-with-logits": lambda: nn.binary_cross_entropy_with_logits(_X, _TARGET.abs() / 2),
    "smooth_l1-huber": lambda: (nn.smooth_l1_loss(_X, _TARGET, beta=0.5)
                                + nn.huber_loss(_X, _TARGET, delta=2.0)),
    "kl_div": lambda: nn.kl_div(F.log_softmax(_X, 1), _PROBABILITIES, reduction="batchmean"),
    "avg_pool": lambda: (F.avg_pool2d(_IMG, 3, 2, 1, ceil_mode=True, count_include_pad=False)
                         .sum() + F.adaptive_avg_pool2d(_IMG, 3).sum()),
    "max_pool-padded": lambda: F.max_pool2d(_IMG, 3, 2, 1, ceil_mode=True).sum(),
    "adaptive_max_pool": lambda: F.adaptive_max_pool2d(_IMG, (3, 2)).sum(),
    "pad": lambda: sum(F.pad(_IMG, (2, 1, 1, 2), mode=m).sum()
                       for m in ("reflect", "replicate", "circular")),
}


@pytest.mark.parametrize("loss", _NUMBER_USERS.values(), ids=_NUMBER_USERS.keys())
def test_numbers_in_ops_are_copied_to_the_device_once(loss):
    """``x * 0.5``, eps, ``1 - x``, a pooling divisor: the first call copies them to the
    device, and every later forward and backward pass finds them there."""
    loss().backward()
    before = STRICT.upload_count
    with STRICT.track_syncs() as log:
        loss().backward()
    assert log == [] and STRICT.upload_count == before


def test_higher_order_gradients_copy_no_numbers_either():
    def second_derivative():
        (g,) = tg.grad(F.gelu(_X).sum() + (_X ** 3).sum() / 6, [_X], create_graph=True)
        return tg.grad(g.sum(), [_X])[0]

    expected = second_derivative().numpy()
    before = STRICT.upload_count
    np.testing.assert_array_equal(second_derivative().numpy(), expected)
    assert STRICT.upload_count == before


@pytest.mark.parametrize("make_opt", [
    lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
    lambda p: optim.Adam(p, lr=1e-3, amsgrad=True, weight_decay=1e-2),
    lambda p: optim.AdamW(p, lr=1e-3),
], ids=["sgd", "adam", "adamw"])
def test_optimiser_steps_copy_nothing_to_the_device(make_opt):
    params = [_leaf(5, 4), _leaf(3)]
    for p in params:
        p.grad = tg.ones_like(p)
    opt = make_opt(params)
    opt.step()
    before = STRICT.upload_count
    with STRICT.track_syncs() as log:
        opt.step()
        optim.clip_grad_norm_(params, 1.0)
        optim.clip_grad_value_(params, 0.1)
    assert log == [] and STRICT.upload_count == before


def test_a_shared_number_is_never_written():
    """A number's array is shared by every op that uses the number: a write into a
    tensor holding it (reachable through the graph) gets a copy of its own, and the
    stand-in's array refuses any other write, as the host's does."""
    x = tg.tensor([1.0, 2.0], device="strict", requires_grad=True)
    y = x * 0.5
    half = y.grad_fn.inputs[1]
    assert half.tolist() == 0.5
    half += 1
    half[...] = 7.0
    assert half.tolist() == 7.0 and (x * 0.5).tolist() == [0.5, 1.0]
    for backend in (STRICT, tg.get_backend("cpu")):
        shared = backend.constant(0.5, np.float32)
        with backend.context(), pytest.raises(ValueError, match="read-only"):
            backend.xp.add(shared, 1, out=shared)
        assert shared is backend.constant(0.5, "float32")
        host = np.arange(3.0)
        kept = backend.constant(host)
        host[0] = 5.0   # the caller's array was copied, not frozen
        assert backend.to_numpy(kept).tolist() == [0.0, 1.0, 2.0]


def test_numbers_are_told_apart_by_their_bits_and_dtype_and_kept_in_bounds(monkeypatch):
    """-0.0 is not 0.0 (1 / (x * -0.0) is -inf), a NaN finds its array again, an int is
    not a float, and a program making ever new numbers keeps a bounded number of them."""
    x = tg.tensor([1.0, 2.0], device="strict")
    with np.errstate(divide="ignore"):
        assert (1 / (x * 0.0)).tolist() == [np.inf, np.inf]
        assert (1 / (x * -0.0)).tolist() == [-np.inf, -np.inf]
    assert np.isnan((x * np.nan).numpy()).all()
    before = STRICT.upload_count
    assert np.isnan((x * float("nan")).numpy()).all() and STRICT.upload_count == before
    i = tg.tensor([3, 4], device="strict")
    assert (i * 2).dtype == np.int64 and (i * 2.0).dtype == np.float64
    assert (tg.tensor([3, 4], dtype="int8", device="strict") * 0.5).dtype == np.float64
    monkeypatch.setattr(STRICT, "_MAX_CONSTANTS", 8)
    for k in range(20):
        assert (x + (k + 0.25)).tolist() == [k + 1.25, k + 2.25]
    assert len(STRICT._constants) <= 8
    # A large array (a pooling mask of a big image) is copied each time, not kept.
    big = np.zeros(STRICT._MAX_CONSTANT_BYTES // 8 + 1)
    before = STRICT.upload_count
    assert STRICT.constant(big) is not STRICT.constant(big)
    assert STRICT.upload_count == before + 2
    assert all(a.nbytes <= STRICT._MAX_CONSTANT_BYTES for a in STRICT._constants.values())


# ---- what CuPy arrays cannot do ------------------------------------------------------
def test_layers_init_and_in_place_ops_on_a_device():
    """CuPy arrays have no flags.writeable (the stand-in's flags have none either):
    building layers on a device, init functions and in-place ops ask the backend."""
    for layer in (nn.Linear(3, 2, device="strict"), nn.Conv2d(1, 2, 3, device="strict"),
                  nn.BatchNorm2d(2, device="strict")):
        assert all(STRICT.is_array(p.data) for p in layer.parameters())
    t = tg.ones(3, device="strict")
    t += 1
    t *= tg.tensor([1.0, 2.0, 3.0], device="strict")
    nn.init.constant_(t, 5.0)
    assert t.tolist() == [5.0, 5.0, 5.0]


def test_a_mask_beside_other_index_arrays_is_refused_where_cupy_cannot():
    x = np.arange(12.0).reshape(3, 4)
    mask, idx = np.array([True, False, True]), np.array([0, 3])
    on_cpu = tg.tensor(x)[tg.tensor(mask), tg.tensor(idx)]
    assert on_cpu.tolist() == [0.0, 11.0]
    with pytest.raises(IndexError, match=r"\(3, 4\) on strict.*boolean mask.*two steps"):
        tg.tensor(x, device="strict")[tg.tensor(mask, device="strict"),
                                      tg.tensor(idx, device="strict")]


def test_ops_run_inside_their_device_context():
    """CuPy allocates on its current device: every op enters its tensors' device."""
    entered = []

    class Recording(backend_module.NumpyBackend):
        device = "recording"

        def context(self):
            entered.append(True)
            return contextlib.nullcontext()

    tg.register_backend("recording", Recording())
    try:
        w = tg.tensor([1.0, 2.0], device="recording", requires_grad=True)
        (w * w).sum().backward()
        forward_and_backward = len(entered)
        optim.SGD([w], lr=0.1).step()
        assert forward_and_backward >= 4 and len(entered) > forward_and_backward
    finally:
        backend_module._BACKENDS.pop("recording", None)


# ---- train.train: host reads only where the user asked ------------------------------
class _StepMarks(DataLoader):
    """The training loader, noting the sync and upload counts each time a batch is
    handed out."""

    marks, uploads = [], []

    def _batches(self, epoch, start):
        for batch in super()._batches(epoch, start):
            if self.shuffle:   # the training loader, not the evaluation one
                self.marks.append(STRICT.sync_count)
                self.uploads.append(STRICT.upload_count)
            yield batch


def test_train_reads_the_device_only_at_logging_intervals_and_epoch_ends(monkeypatch):
    monkeypatch.setattr(train_module, "DataLoader", _StepMarks)
    _StepMarks.marks, _StepMarks.uploads = [], []
    log_every, out = 2, []
    progress = importlib.util.find_spec("tqdm") is not None  # the bar (tqdm) logs
    cfg = dict(model="cnn", epochs=2, batch_size=512, log_every=log_every, seed=0,
               progress=progress)   # the bar, even though the tests' stderr is no terminal
    with STRICT.track_syncs() as log:
        result = train_module.train(train_module.TrainConfig(device="strict", **cfg),
                                    out=out.append)
    steps_per_epoch = len(_StepMarks.marks) // 2        # 1437 images: 3 batches of 512
    assert steps_per_epoch == 3
    marks = _StepMarks.marks + [STRICT.sync_count]
    per_step = [b - a for a, b in zip(marks, marks[1:])]
    # Global step k (1-based) reads once if it is a logging step; the last
    # step of an epoch also reads the epoch's sums and evaluates (one each).
    expected = []
    for k in range(1, 2 * steps_per_epoch + 1):
        n = int(progress and k % log_every == 0)
        if k % steps_per_epoch == 0:
            n += 2
        expected.append(n)
    expected[-1] += 1   # the final evaluation after the loop
    assert per_step == expected, "\n".join(log)
    assert all(" train" in entry or "evaluate" in entry for entry in log), log
    # Host -> device copies from one batch to the next, after the first step (which
    # puts the numbers of its ops on the device) and away from epoch ends (which
    # evaluate): the step's dropout mask, then the next batch's images and labels.
    uploads = [b - a for a, b in zip(_StepMarks.uploads, _StepMarks.uploads[1:])]
    assert [n for k, n in enumerate(uploads, 1) if k > 1 and k % steps_per_epoch] == [3, 3, 3]

    reference = train_module.train(train_module.TrainConfig(device="cpu", **cfg),
                                   out=lambda line: None)
    # The same run, up to rounding: on the host, convolutions keep batch-last
    # outputs, which the strict (GPU-like) backend copies to NCHW, and sums
    # over the two orders round differently.
    assert result["history"] and [
        {k: v for k, v in row.items() if k != "seconds"} for row in result["history"]] == [
        pytest.approx({k: v for k, v in row.items() if k != "seconds"}, rel=1e-4)
        for row in reference["history"]]
    for (name, p), q in zip(result["model"].state_dict().items(),
                            reference["model"].state_dict().values()):
        q = q.numpy()
        np.testing.assert_allclose(p.numpy(), q, rtol=0, atol=1e-4 * np.abs(q).max(),
                                   err_msg=name)


# ---- CupyBackend's own code, over a fake cupy with two GPUs --------------------------
class _FakeCupy(types.ModuleType):
    """The parts of cupy that CupyBackend reaches, with a current device (0 unless a
    ``cuda.Device`` context says otherwise) that every new array records; the rest of
    the namespace is NumPy's, limited to the names CuPy has (so a NumPy-only name in
    CupyBackend fails here as it would on a GPU)."""

    def __init__(self, count=2):
        super().__init__("cupy")
        self.stack, self.log, self.__version__ = [], [], "14.2.0"
        fake = self

        class Device:
            def __init__(self, index):
                self.id = index

            def __enter__(self):
                fake.stack.append(self.id)
                return self

            def __exit__(self, *exc):
                fake.stack.pop()

            def synchronize(self):
                fake.log.append(f"synchronize {self.id}")

        class ndarray(np.ndarray):
            device = property(lambda self: self._gpu)

            def __array_finalize__(self, obj):
                self._gpu = getattr(obj, "_gpu", None) or Device(fake.current)

        self.ndarray = ndarray
        # The runtime calls of ``describe``; each GPU has its own name and free memory,
        # and memGetInfo (like CUDA's) reports on the current device.
        runtime = types.SimpleNamespace(
            getDeviceCount=lambda: count,
            getDeviceProperties=lambda index: {
                "name": f"Fake GPU {9000 + index}".encode(), "major": 8, "minor": 6},
            memGetInfo=lambda: ((3 + fake.current) * 2**30, 8 * 2**30),
            runtimeGetVersion=lambda: 12080, driverGetVersion=lambda: 12040)
        self.cuda = types.SimpleNamespace(Device=Device, runtime=runtime)

    current = property(lambda self: self.stack[-1] if self.stack else 0)

    def asarray(self, data, dtype=None):
        a = np.array(data, dtype=dtype).view(self.ndarray)
        a._gpu = self.cuda.Device(self.current)
        return a

    def asnumpy(self, a):
        self.log.append(f"asnumpy {a.device.id}")
        return np.array(a)

    def __getattr__(self, name):
        if name.startswith("__") or not _cupy_has("", name):
            raise AttributeError(f"fake cupy: cupy has no {name} (the installed CuPy lacks "
                                 f"it), so CupyBackend may not use it")
        value = getattr(np, name)
        if isinstance(value, type) or not callable(value):
            return value

        def on_the_current_device(*args, **kwargs):
            result = value(*args, **kwargs)
            return self.asarray(result) if type(result) is np.ndarray else result
        return on_the_current_device


@pytest.fixture
def fake_cupy(monkeypatch):
    """A fake cupy (and cupyx) importable, CUDA usable, and no CUDA backend built yet."""
    # _cupy_has imports cupy once to list its names: do it before the fake takes cupy's
    # place in sys.modules, or it would list the fake's own names.
    _cupy_has("", "asarray")
    fake = _FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "cupyx", types.ModuleType("cupyx"))
    monkeypatch.setattr(backend_module, "cuda_status", lambda: (True, "fake cupy, 2 devices"))
    monkeypatch.setattr(backend_module, "_BACKENDS", {
        k: v for k, v in backend_module._BACKENDS.items() if not k.startswith("cuda")})
    return fake


class _KernelRecorder:
    """ConvKernels' methods, noting the device current at each call."""

    def __init__(self, fake):
        self.fake, self.calls = fake, []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, self.fake.current))


# CupyBackend calls that allocate or launch: each must make its own device current
# (CuPy puts new arrays and kernels on the current device, whatever the inputs' device).
ON_ITS_DEVICE = [
    ("asarray", lambda b: b.asarray([1.0, 2.0]).device.id),
    ("im2col", lambda b: b.im2col(None, None, "nkl")),
    ("col2im", lambda b: b.col2im(None, None, 1, 1, "nkl")),
    ("max_pool", lambda b: b.max_pool(None, None)),
    ("max_pool_scatter", lambda b: b.max_pool_scatter(None, None, None, None)),
    ("max_pool_gather", lambda b: b.max_pool_gather(None, None, None, None)),
]


@pytest.mark.parametrize("call", [c[1] for c in ON_ITS_DEVICE], ids=[c[0] for c in ON_ITS_DEVICE])
def test_cupy_backend_works_on_its_own_device_not_the_current_one(fake_cupy, call):
    backend = tg.get_backend("cuda:1")
    backend._kernels = kernels = _KernelRecorder(fake_cupy)
    device = call(backend)
    if kernels.calls:
        [(_, device)] = kernels.calls
    assert device == 1 and fake_cupy.current == 0


def test_cupy_backend_devices_and_their_spellings(fake_cupy):
    backend = tg.get_backend("cuda:1")
    assert backend.device == "cuda:1" and backend.index == 1
    assert tg.get_backend("CUDA:1") is backend
    # one GPU, one backend: tensors made with either name mix
    assert tg.get_backend("cuda:01") is backend
    assert (tg.ones(2, device="cuda:01") + tg.ones(2, device="cuda:1")).device == "cuda:1"
    assert tg.get_backend("cuda").device == "cuda:0"
    with pytest.raises(DeviceError, match="'cuda:2' does not exist: found 2 CUDA device"):
        tg.get_backend("cuda:2")


def test_cupy_backend_context_makes_its_device_current_and_is_array_checks_the_device(
        fake_cupy):
    backend = tg.get_backend("cuda:1")
    with backend.context():
        assert fake_cupy.current == 1
        on_1 = fake_cupy.asarray([0, 5])
    assert fake_cupy.current == 0
    on_0 = fake_cupy.asarray([0, 5])
    assert backend.is_array(on_1) and not backend.is_array(on_0)
    assert not backend.is_array(np.zeros(2))


def test_cupy_backend_reports_a_failed_deferred_check_at_synchronize_naming_the_device(
        fake_cupy):
    backend = tg.get_backend("cuda:1")
    with backend.context():
        index = fake_cupy.asarray([0, 5])
        backend.check_index(index, 3, "for the test")
    # Not reported where it happens: that would wait for the GPU (or read from it).
    assert fake_cupy.log == []
    with pytest.raises(IndexError, match=r"an index was out of range for the test \(found "
                                         r"on cuda:1 by a deferred check.*"
                                         r"get_backend\('cuda:1'\)\.defer_checks = False"):
        backend.synchronize()
    # It waited for its own GPU, and touched no other (device 0 is the current one).
    assert "synchronize 1" in fake_cupy.log
    assert {entry.split()[1] for entry in fake_cupy.log} == {"1"}, fake_cupy.log
    backend.synchronize()   # reported once
    assert backend.to_numpy(index).tolist() == [0, 5]


MOVES = [
    ("cuda(1)", lambda t: t.cuda(1), "cuda:1"),
    ("cuda()", lambda t: t.cuda(), "cuda:0"),
    ("to('CUDA:1')", lambda t: t.to("CUDA:1"), "cuda:1"),
    ("to('cuda')", lambda t: t.to("cuda"), "cuda:0"),
    ("to(other)", lambda t: t.to(tg.zeros(1, device="cuda:1")), "cuda:1"),   # its device
]


@pytest.mark.parametrize("move, device", [m[1:] for m in MOVES], ids=[m[0] for m in MOVES])
def test_tensors_move_to_the_gpu_asked_for_and_not_again_when_there(fake_cupy, move, device):
    t = move(tg.tensor([1.0, 2.0]))
    assert t.device == device and t.data.device.id == int(device[-1])
    assert move(t) is t and t.cpu().tolist() == [1.0, 2.0]


# ---- tinygrad-cnn info and TINYGRAD_CNN_DEVICE --------------------------------------
def test_describe_names_the_gpu_its_memory_and_the_versions(fake_cupy):
    # cuda:1 while device 0 is current: the name and the memory are those of GPU 1.
    assert tg.get_backend("cuda:1").describe() == {
        "device": "cuda:1", "gpu": "Fake GPU 9001 (compute capability 8.6)",
        "memory": "4.0 GiB free of 8.0 GiB", "array module": "cupy 14.2.0",
        "cuda runtime": "12.8", "cuda driver": "12.4"}


def _info():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["info"]) == 0
    return out.getvalue()


def test_info_prints_the_gpu_when_there_is_one(fake_cupy):
    text = _info()
    for line in ("cuda     usable: fake cupy, 2 devices",
                 "gpu: Fake GPU 9000 (compute capability 8.6)",
                 "memory: 3.0 GiB free of 8.0 GiB", "cuda runtime: 12.8", "cuda driver: 12.4"):
        assert line in text, text


@pytest.mark.skipif(tg.cuda_status()[0], reason="a CUDA GPU is usable here")
def test_info_prints_why_cuda_is_not_usable():
    assert f"cuda     not usable: {tg.cuda_status()[1]}" in _info()


@pytest.mark.skipif(tg.cuda_status()[0], reason="a CUDA GPU is usable here")
def test_default_device_auto_falls_back_to_cpu_and_cuda_says_why_not(monkeypatch):
    monkeypatch.setenv("TINYGRAD_CNN_DEVICE", "auto")
    assert tg.tensor([1.0]).device == "cpu" and tg.get_backend().device == "cpu"
    monkeypatch.setenv("TINYGRAD_CNN_DEVICE", "cuda")
    with pytest.raises(DeviceError, match="device 'cuda:0' is not available") as info:
        tg.zeros(2)
    assert tg.cuda_status()[1] in str(info.value)
    monkeypatch.setenv("TINYGRAD_CNN_DEVICE", "strict")   # any registered device
    assert tg.zeros(2).device == "strict"


@pytest.mark.parametrize("make, expected", [
    (lambda: tg.zeros(3, 4, device="strict"), np.zeros((3, 4), np.float32)),
    (lambda: tg.ones((2, 5), dtype="float64", device="strict"), np.ones((2, 5))),
    (lambda: tg.full((4,), 2.5, device="strict"), np.full(4, 2.5, np.float32)),
    (lambda: tg.full((2,), 2 ** 70, dtype="float32", device="strict"),
     np.full(2, 2.0 ** 70, np.float32)),
    (lambda: tg.full((3,), -7, dtype="int64", device="strict"), np.full(3, -7)),
    (lambda: tg.zeros_like(tg.zeros(2, 2, device="strict")), np.zeros((2, 2), np.float32)),
    (lambda: tg.ones_like(tg.zeros(2, 2, device="strict"), dtype="int32"),
     np.ones((2, 2), np.int32)),
], ids=["zeros", "ones", "full", "full-huge-int", "full-int", "zeros_like", "ones_like"])
def test_constant_tensors_are_made_on_their_device(make, expected):
    """Zeros, ones and fills need no host array copied to the device."""
    make()   # anything made on first use
    before = STRICT.upload_count
    with STRICT.track_syncs() as log:
        t = make()
    assert STRICT.upload_count == before and log == []
    assert STRICT.is_array(t.data) and t.dtype == expected.dtype
    np.testing.assert_array_equal(t.numpy(), expected)
