"""PyTorch is the oracle for the training stack: ``nn`` layers, optimisers, schedulers.

Hypothesis draws constructor arguments, input shapes and training runs; the same
module, optimiser or schedule is built in both libraries from the same numbers and
run side by side in float64:

- layers, as modules: several training steps then one in evaluation mode, comparing
  outputs, input and parameter gradients, and the ``state_dict`` (key names, shapes,
  dtypes and values, BatchNorm's and InstanceNorm's running statistics and batch
  count included) after every step;
- optimisers: 20+ steps over two parameter groups with settings of their own, on
  gradients of mixed signs and magnitudes, some parameters without a gradient on
  some steps (their state must not advance), ``zero_grad`` either way, a learning
  rate changed by hand and a ``state_dict`` round trip mid-run: parameters equal to
  1e-12 relative;
- schedulers: 100+ steps, ``get_last_lr()`` and the cycled momentum equal to 1e-12,
  resumed mid-run by a ``state_dict`` round trip or by ``last_epoch``.

Without torch these tests skip; the regression tables at the end pin each bug the
fuzz found, with expected values of their own, and run without torch.

Where the library deliberately differs, the strategies do not draw that case and a
comment names the rule: schedulers do not chain (README, ``lr_scheduler``), a
convolution whose output would be empty is refused, not computed (PyTorch returns an
empty tensor for a transposed one), a OneCycleLR phase of length 0 is over at once
(PyTorch divides by zero).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import tinygrad_cnn as tg
from tinygrad_cnn import nn, optim

FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def import_torch():
    torch = pytest.importorskip("torch")
    warnings.filterwarnings("ignore", module="torch")  # e.g. its note on padding="same"
    return torch


# ---- layers -------------------------------------------------------------------------
@st.composite
def conv_layers(draw):
    """(label, make(torch.nn or nn), input shape) of a Conv1d, Conv2d or ConvTranspose2d."""
    kind = draw(st.sampled_from(["Conv1d", "Conv2d", "ConvTranspose2d"]))
    n = 1 if kind == "Conv1d" else 2
    ints = lambda lo, hi: tuple(draw(st.integers(lo, hi)) for _ in range(n))  # noqa: E731
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    C, OC = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel, stride, dilation, padding = ints(1, 3), ints(1, 3), ints(1, 2), ints(0, 2)
    kwargs = dict(groups=groups, bias=draw(st.booleans()))
    if kind == "ConvTranspose2d":
        # an output padding below stride or dilation; an input long enough that the
        # output is not empty (we refuse an empty one, PyTorch returns it)
        kwargs.update(stride=stride, padding=padding, dilation=dilation,
                      output_padding=tuple(draw(st.integers(0, max(s, d) - 1))
                                           for s, d in zip(stride, dilation)))
        size = tuple(1 + 2 * p + draw(st.integers(0, 2)) for p in padding)
    else:
        if draw(st.booleans()):
            padding = draw(st.sampled_from(["same", "valid"]))
            stride = (1,) * n    # "same" needs stride 1
        one = (lambda v: v[0]) if n == 1 and draw(st.booleans()) else (lambda v: v)
        kwargs.update(stride=one(stride), dilation=one(dilation),
                      padding=padding if isinstance(padding, str) else one(padding))
        kernel = one(kernel) if n == 1 else kernel
        size = tuple(draw(st.integers(1, 6)) + d * (k - 1)
                     for d, k in zip(dilation, np.broadcast_to(kernel, (n,)).tolist()))
    shape = (draw(st.integers(1, 3)), C) + size
    return (f"{kind}({C}, {OC}, {kernel}, {kwargs})",
            lambda T: getattr(T, kind)(C, OC, kernel, **kwargs), shape)


@st.composite
def batchnorm_layers(draw):
    kind = draw(st.sampled_from(["BatchNorm1d", "BatchNorm2d"]))
    C = draw(st.integers(1, 4))
    kwargs = dict(eps=draw(st.sampled_from([1e-5, 1e-3, 0.5, 1e-12])),
                  momentum=draw(st.sampled_from([0.1, None, 0.0, 1.0, 0.7])),
                  affine=draw(st.booleans()), track_running_stats=draw(st.booleans()))
    rest = [draw(st.integers(1, 3)) for _ in range(2 if kind == "BatchNorm2d" else
                                                   draw(st.integers(0, 1)))]
    N = draw(st.integers(2 if np.prod(rest) == 1 else 1, 4))   # 2+ values per channel
    return f"{kind}({C}, {kwargs})", lambda T: getattr(T, kind)(C, **kwargs), (N, C, *rest)


@st.composite
def norm_layers(draw):
    """LayerNorm, GroupNorm, InstanceNorm1d or InstanceNorm2d with drawn settings, on
    inputs whose groups hold 2+ values (a group of one value is refused here; see the
    layers)."""
    kind = draw(st.sampled_from(["LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d"]))
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.5, 1e-12]))
    N = draw(st.integers(1, 3))
    if kind == "LayerNorm":
        lead = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2))))
        shape = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(1, 3))))
        assume(np.prod(shape) > 1)
        kwargs = dict(eps=eps, elementwise_affine=draw(st.booleans()), bias=draw(st.booleans()))
        return (f"LayerNorm({shape}, {kwargs})", lambda T: T.LayerNorm(shape, **kwargs),
                lead + shape)
    if kind == "GroupNorm":
        G, per_group = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        spatial = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2))))
        assume(per_group * np.prod(spatial) > 1)
        kwargs = dict(eps=eps, affine=draw(st.booleans()))
        if kwargs["affine"]:   # (torch's backward fails given a bias without a weight)
            kwargs["bias"] = draw(st.booleans())
        return (f"GroupNorm({G}, {G * per_group}, {kwargs})",
                lambda T: T.GroupNorm(G, G * per_group, **kwargs), (N, G * per_group) + spatial)
    C = draw(st.integers(1, 3))
    kwargs = dict(eps=eps, momentum=draw(st.sampled_from([0.1, 0.0, 1.0, 0.7])),
                  affine=draw(st.booleans()), track_running_stats=draw(st.booleans()),
                  bias=draw(st.booleans()))
    spatial = tuple(draw(st.integers(1, 3)) for _ in range(int(kind[-2])))
    assume(np.prod(spatial) > 1)
    shape = ((N, C) if draw(st.booleans()) else (C,)) + spatial
    return f"{kind}({C}, {kwargs})", lambda T: getattr(T, kind)(C, **kwargs), shape


@st.composite
def pool_layers(draw):
    kind = draw(st.sampled_from(["MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d",
                                 "AdaptiveMaxPool2d", "AdaptiveAvgPool2d"]))
    N, C = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if kind.startswith("Adaptive"):
        side = st.integers(1, 4)
        size = draw(st.one_of(side, st.tuples(side, side), st.tuples(st.none(), side)))
        shape = (N, C, draw(st.integers(1, 7)), draw(st.integers(1, 7)))
        return f"{kind}({size})", lambda T: getattr(T, kind)(size), shape
    n = int(kind[-2])
    k = draw(st.integers(1, 4))
    kwargs = dict(stride=draw(st.sampled_from([None, 1, 2, 3])),
                  padding=draw(st.integers(0, k // 2)),    # PyTorch's limit
                  ceil_mode=draw(st.booleans()))
    d = 1
    if kind.startswith("Max"):
        kwargs["dilation"] = d = draw(st.integers(1, 2))
    else:
        kwargs["count_include_pad"] = draw(st.booleans())
        if n == 2:   # PyTorch's AvgPool1d has no divisor_override
            kwargs["divisor_override"] = draw(st.one_of(st.none(), st.integers(1, 5)))
    shape = (N, C) + tuple(draw(st.integers(k, 7)) + (d - 1) * (k - 1) for _ in range(n))
    return f"{kind}({k}, {kwargs})", lambda T: getattr(T, kind)(k, **kwargs), shape


@st.composite
def other_layers(draw):
    """Linear, activations, Flatten, Dropout(0) and a small Sequential CNN."""
    kind = draw(st.sampled_from(["Linear", "ReLU", "Tanh", "Sigmoid", "LeakyReLU", "Softmax",
                                 "LogSoftmax", "Flatten", "Dropout", "Sequential"]))
    nd = draw(st.integers(1, 4))
    shape = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    if kind == "Linear":
        i, o, bias = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.booleans())
        return f"Linear({i}, {o}, {bias})", lambda T: T.Linear(i, o, bias=bias), shape + (i,)
    if kind == "LeakyReLU":
        slope = draw(st.floats(-2, 2))
        return f"LeakyReLU({slope})", lambda T: T.LeakyReLU(slope), shape
    if kind in ("Softmax", "LogSoftmax"):
        dim = draw(st.integers(-nd, nd - 1))
        return f"{kind}({dim})", lambda T: getattr(T, kind)(dim=dim), shape
    if kind == "Flatten":
        start, end = sorted([draw(st.integers(-nd, nd - 1)) for _ in range(2)],
                            key=lambda axis: axis % nd)
        return f"Flatten({start}, {end})", lambda T: T.Flatten(start, end), shape
    if kind == "Dropout":   # p=0 in training, any p in evaluation: the identity
        return "Dropout(0)", lambda T: T.Dropout(0.0), shape
    if kind == "Sequential":
        bias = draw(st.booleans())
        return ("Sequential", lambda T: T.Sequential(
            T.Conv2d(2, 3, 2, bias=bias), T.BatchNorm2d(3), T.ReLU(), T.MaxPool2d(2),
            T.Flatten(), T.Linear(3 * 2 * 2, 4), T.Sequential(T.Tanh(), T.Linear(4, 2))),
            (draw(st.integers(2, 3)), 2, 5, 5))
    return kind, lambda T: getattr(T, kind)(), shape


def assert_state_dicts_equal(ours, theirs, label, parameters=True):
    """The same keys in the same order, each with the same shape, dtype and values (with
    ``parameters=False``, values of the buffers only: the weights are random)."""
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd), label
    buffers = {name for name, _ in theirs.named_buffers()}
    for k, v in ours_sd.items():
        tv = theirs_sd[k].numpy()
        assert (v.shape, v.dtype) == (tv.shape, tv.dtype), (label, k)
        if parameters or k in buffers:
            np.testing.assert_allclose(v.numpy(), tv, rtol=1e-12, atol=1e-14,
                                       err_msg=f"{label} {k}")


def run_layer_against_torch(label, make, shape, seed):
    torch = import_torch()
    rng = np.random.default_rng(seed)
    theirs, ours = make(torch.nn).double(), make(nn).double()
    assert_state_dicts_equal(ours, theirs, label, parameters=False)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.tensor(rng.standard_normal(tuple(p.shape))))
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    for step, mode in enumerate(["train"] * 3 + ["eval"]):
        getattr(ours, mode)(), getattr(theirs, mode)()
        x_np = rng.standard_normal(shape) * 2 + 0.5
        x, tx = tg.tensor(x_np, requires_grad=True), torch.tensor(x_np, requires_grad=True)
        y, ty = ours(x), theirs(tx)
        where = f"{label}, step {step} ({mode})"
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=where)
        g = rng.standard_normal(tuple(ty.shape))
        ours.zero_grad(), theirs.zero_grad()
        y.backward(tg.tensor(g)), ty.backward(torch.tensor(g))
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-11,
                                   err_msg=where)
        named, theirs_named = list(ours.named_parameters()), list(theirs.named_parameters())
        assert [n for n, _ in named] == [n for n, _ in theirs_named], where
        for (n, p), (_, tp) in zip(named, theirs_named):
            np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-9, atol=1e-11,
                                       err_msg=f"{where}: {n}")
        assert_state_dicts_equal(ours, theirs, where)


@FUZZ
@given(case=st.one_of(conv_layers(), batchnorm_layers(), pool_layers(), other_layers()),
       seed=st.integers(0, 2**32 - 1))
def test_layer_trains_and_evaluates_as_in_torch(case, seed):
    run_layer_against_torch(*case, seed)


@FUZZ
@given(case=norm_layers(), seed=st.integers(0, 2**32 - 1))
def test_norm_layer_trains_and_evaluates_as_in_torch(case, seed):
    run_layer_against_torch(*case, seed)


@FUZZ
@given(p=st.floats(0.05, 0.95), shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
       seed=st.integers(0, 2**32 - 1))
def test_dropout_keeps_or_zeroes_each_element_and_scales_its_gradient(p, shape, seed):
    """The mask is drawn from our own generator, so not torch's: what is compared is the
    rule around it.  Every element is 0 or x/(1-p) and its gradient is g/(1-p) exactly
    where it was kept; evaluation is the identity."""
    rng = np.random.default_rng(seed)
    tg.manual_seed(seed)
    x_np = rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape)
    layer = nn.Dropout(p)
    x = tg.tensor(x_np, requires_grad=True)
    y = layer(x)
    kept = y.numpy() != 0
    np.testing.assert_allclose(y.numpy()[kept], x_np[kept] / (1 - p), rtol=1e-15)
    g = rng.standard_normal(shape)
    y.backward(tg.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), np.where(kept, g / (1 - p), 0), rtol=1e-15)
    np.testing.assert_array_equal(layer.eval()(x).numpy(), x_np)


# ---- optimisers ---------------------------------------------------------------------
@st.composite
def sgd_settings(draw):
    momentum = draw(st.sampled_from([0.0, 0.5, 0.9, 0.99]))
    nesterov = momentum > 0 and draw(st.booleans())
    return dict(lr=draw(st.floats(1e-3, 0.5)), momentum=momentum, nesterov=nesterov,
                dampening=0.0 if nesterov else draw(st.sampled_from([0.0, 0.1, 0.9])),
                weight_decay=draw(st.sampled_from([0.0, 1e-4, 0.1, 1.0])))


@st.composite
def adam_settings(draw):
    return dict(lr=draw(st.floats(1e-4, 0.3)),
                betas=(draw(st.sampled_from([0.0, 0.5, 0.9])),
                       draw(st.sampled_from([0.0, 0.9, 0.999]))),
                eps=draw(st.sampled_from([1e-8, 1e-3, 1e-12])),
                weight_decay=draw(st.sampled_from([0.0, 1e-4, 0.1, 1.0])),
                amsgrad=draw(st.booleans()))


@st.composite
def optimizer_runs(draw):
    name = draw(st.sampled_from(["SGD", "Adam", "AdamW"]))
    settings_of = sgd_settings() if name == "SGD" else adam_settings()
    groups = [draw(settings_of), draw(settings_of)]
    steps = draw(st.integers(20, 26))
    return dict(name=name, groups=groups, steps=steps,
                zero_grads=[draw(st.sampled_from([None, True, False])) for _ in range(steps)],
                reload_at=draw(st.integers(0, steps - 1)),
                lr_change_at=draw(st.integers(0, steps - 1)),
                seed=draw(st.integers(0, 2**32 - 1)))


SHAPES = [(3, 2), (4,), ()]


def run_optimizer_against_torch(name, groups, steps, zero_grads, reload_at, lr_change_at,
                                seed):
    """Step both optimisers; each step a parameter gets a new gradient with probability
    0.7, else keeps what it has: None (no step, no state change), zeros left by
    ``zero_grad(set_to_none=False)`` (a step) or the previous gradient."""
    torch = import_torch()
    rng = np.random.default_rng(seed)
    inits = [[rng.standard_normal(s) for s in SHAPES] for _ in groups]
    ours = [[nn.Parameter(a, dtype="float64") for a in init] for init in inits]
    theirs = [[torch.tensor(a, requires_grad=True) for a in init] for init in inits]

    def make(lib, params):
        return getattr(lib, name)([dict(g, params=ps) for g, ps in zip(groups, params)])
    opt, topt = make(optim, ours), make(torch.optim, theirs)
    pairs = [(p, tp) for ps, tps in zip(ours, theirs) for p, tp in zip(ps, tps)]
    for step in range(steps):
        if zero_grads[step] is not None:
            opt.zero_grad(set_to_none=zero_grads[step])
            topt.zero_grad(set_to_none=zero_grads[step])
        for p, tp in pairs:
            if rng.random() < 0.7:
                g = rng.standard_normal(p.shape) * 10 ** rng.uniform(-3, 2)
                p.grad, tp.grad = tg.tensor(g), torch.tensor(g)
        opt.step(), topt.step()
        where = f"{name} {groups}, step {step}"
        if step == lr_change_at:
            for group, tgroup in zip(opt.param_groups, topt.param_groups):
                group["lr"] = tgroup["lr"] = group["lr"] * 0.3
        if step == reload_at:   # continue in a new optimiser from the saved state
            saved = opt.state_dict()
            opt = make(optim, ours)
            opt.load_state_dict(saved)
        for i, (p, tp) in enumerate(pairs):
            np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-12, atol=1e-14,
                                       err_msg=f"{where}, parameter {i}")
            state, tstate = opt.state.get(id(p), {}), topt.state.get(tp, {})
            assert sorted(state) == sorted(tstate), (where, i)
            if "step" in state:   # a parameter without a gradient does not count a step
                assert state["step"] == int(tstate["step"]), (where, i)


@FUZZ
@given(run=optimizer_runs())
def test_optimizer_follows_torch_over_a_run(run):
    run_optimizer_against_torch(**run)


# ---- schedulers ---------------------------------------------------------------------
@st.composite
def schedules(draw):
    """(scheduler name, its arguments, optimiser name, optimiser settings, steps)."""
    name = draw(st.sampled_from(["StepLR", "CosineAnnealingLR", "OneCycleLR"]))
    opt_name = draw(st.sampled_from(["SGD", "Adam", "AdamW"]))
    opt_kwargs = {"momentum": draw(st.sampled_from([0.0, 0.9]))} if opt_name == "SGD" else {}
    steps = draw(st.integers(100, 160))
    if name == "StepLR":
        kwargs = dict(step_size=draw(st.integers(1, 30)), gamma=draw(st.floats(0.05, 1.5)))
    elif name == "CosineAnnealingLR":
        kwargs = dict(T_max=draw(st.integers(1, 80)),
                      eta_min=draw(st.sampled_from([0.0, 1e-4, 0.02])))
    else:
        top = st.floats(0.01, 2.0)
        kwargs = dict(max_lr=draw(st.one_of(top, st.tuples(top, top).map(list))),
                      pct_start=draw(st.floats(0.01, 0.99)),
                      anneal_strategy=draw(st.sampled_from(["cos", "linear"])),
                      cycle_momentum=draw(st.booleans()),
                      base_momentum=draw(st.floats(0.5, 0.85)),
                      max_momentum=draw(st.floats(0.85, 0.99)),
                      div_factor=draw(st.floats(1.0, 100.0)),
                      final_div_factor=draw(st.floats(1.0, 1e4)),
                      three_phase=draw(st.booleans()))
        if draw(st.booleans()):
            kwargs["total_steps"] = steps
        else:
            epochs = draw(st.integers(1, 10))
            kwargs.update(epochs=epochs, steps_per_epoch=-(-steps // epochs))
            steps = epochs * kwargs["steps_per_epoch"]
        # A phase of length 0 is over as soon as it starts here; PyTorch divides by 0.
        pct = kwargs["pct_start"]
        ends = [0, pct * steps - 1] + [2 * pct * steps - 2] * kwargs["three_phase"] + [steps - 1]
        assume(all(start != end for start, end in zip(ends, ends[1:])))
    return name, kwargs, opt_name, opt_kwargs, steps


def run_schedule_against_torch(name, kwargs, opt_name, opt_kwargs, steps, resume_at, resume):
    """Two groups with learning rates of their own, stepped ``steps`` times (OneCycleLR:
    as many as it plans); after step ``resume_at`` ours continues in a new optimiser and
    scheduler, restored by ``load_state_dict`` (torch's the same way) or built with
    ``last_epoch``, compared then with torch's uninterrupted run.  (PyTorch 2.13 resumed
    with ``last_epoch=k`` is no oracle: its StepLR steps from the optimiser's saved lr to
    step k + 1, its CosineAnnealingLR keeps that lr as step k + 1's.)"""
    torch = import_torch()

    def build(lib, last_epoch=-1, saved=None):
        params = [lib.zeros(1, requires_grad=True) for _ in range(2)] if lib is torch else \
            [nn.Parameter(np.zeros(1)) for _ in range(2)]
        o = getattr(lib.optim, opt_name)([{"params": params[:1]},
                                          {"params": params[1:], "lr": 0.03}],
                                         lr=0.1, **opt_kwargs)
        if saved is not None and last_epoch != -1:
            o.load_state_dict(saved[0])   # the schedule's settings live in the groups
        s = getattr(lib.optim.lr_scheduler, name)(o, **kwargs, last_epoch=last_epoch)
        if saved is not None and last_epoch == -1:
            o.load_state_dict(saved[0])
            s.load_state_dict(saved[1])
        return o, s

    momentum = "momentum" if opt_name == "SGD" else "betas"
    (opt, sched), (topt, tsched) = build(tg), build(torch)
    for step in range(steps):
        where = f"{name} {kwargs} on {opt_name}, step {step}"
        np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-12,
                                   atol=1e-15, err_msg=where)
        for group, tgroup in zip(opt.param_groups, topt.param_groups, strict=True):
            np.testing.assert_allclose(group["lr"], tgroup["lr"], rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(group[momentum], tgroup[momentum], rtol=1e-12,
                                       err_msg=where)
        if name == "OneCycleLR" and sched.last_epoch >= steps - 1:
            break    # it plans ``steps`` values, the first set when it is built
        opt.step(), topt.step()
        sched.step(), tsched.step()
        if step == resume_at:
            if resume == "state_dict":
                opt, sched = build(tg, saved=(opt.state_dict(), sched.state_dict()))
                topt, tsched = build(torch, saved=(topt.state_dict(), tsched.state_dict()))
            else:   # built after k steps with last_epoch=k, it steps once: to step k + 1
                opt, sched = build(tg, sched.last_epoch, saved=(opt.state_dict(),))
                topt.step(), tsched.step()


@FUZZ
@given(schedule=schedules(), resume_at=st.integers(0, 150),
       resume=st.sampled_from(["state_dict", "last_epoch"]))
def test_scheduler_follows_torch_over_a_run(schedule, resume_at, resume):
    run_schedule_against_torch(*schedule, resume_at, resume)


# ---- regressions: each bug the fuzz found, with values of its own ----------------------
INF, NAN = np.inf, np.nan
ADAPTIVE_AVG_CASES = [
    # (x as (H, W), output size, y, grad_x for grad_out of ones): uneven bins, where the
    # mean was a product with an averaging matrix, 0 * inf giving NaN in every other bin
    ([[INF], [0.0], [0.0]], (2, 1), [[INF], [0.0]], [[0.5], [1.0], [0.5]]),
    ([[NAN], [1.0], [2.0]], (2, 1), [[NAN], [1.5]], [[0.5], [1.0], [0.5]]),
    ([[-INF, 1.0, 3.0]], (1, 2), [[-INF, 2.0]], [[0.5, 1.0, 0.5]]),
    ([[1.0, 2.0, 4.0], [INF, 0.0, 8.0]], (1, 2), [[INF, 3.5]], [[0.25, 0.5, 0.25]] * 2),
    ([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, INF]], (2, 2),
     [[3.0, 4.0], [6.0, INF]], [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]),
]


@pytest.mark.parametrize("x, size, y, grad_x", ADAPTIVE_AVG_CASES)
def test_adaptive_avg_pool_keeps_a_non_finite_value_in_its_own_bins(x, size, y, grad_x):
    x = tg.tensor(np.array(x)[None, None], requires_grad=True)
    out = nn.AdaptiveAvgPool2d(size)(x)
    np.testing.assert_array_equal(out.numpy()[0, 0], y)
    out.backward(tg.ones(out.shape, dtype="float64"))
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], grad_x)


def test_adaptive_avg_pool_spreads_a_non_finite_gradient_over_its_own_bin_only():
    x = tg.zeros(1, 1, 3, 1, dtype="float64", requires_grad=True)
    nn.AdaptiveAvgPool2d((2, 1))(x).backward(tg.tensor([[[[INF], [1.0]]]]))
    np.testing.assert_array_equal(x.grad.numpy().ravel(), [INF, INF, 0.5])


CONSTRUCTION_ERRORS = [
    # eps = 0 normalised a constant channel to NaN (0 / 0); PyTorch refuses it in training
    (lambda: nn.BatchNorm2d(3, eps=0), ValueError, r"BatchNorm2d: eps must be > 0, got 0"),
    (lambda: nn.BatchNorm1d(3, eps=0.0), ValueError, r"BatchNorm1d: eps must be > 0, got 0"),
    # ... and so are the other normalisation layers (PyTorch's take any eps)
    (lambda: nn.LayerNorm(3, eps=0), ValueError, r"LayerNorm: eps must be > 0, got 0"),
    (lambda: nn.GroupNorm(1, 3, eps=-1e-5), ValueError, r"GroupNorm: eps must be > 0"),
    (lambda: nn.InstanceNorm2d(3, eps=0.0), ValueError, r"InstanceNorm2d: eps must be > 0"),
    # a normalised slice of one value is 0 whatever the input (PyTorch computes it)
    (lambda: nn.LayerNorm(1), ValueError, r"LayerNorm: normalized_shape \(1,\) holds one value"),
    # momentum=None leaves PyTorch's InstanceNorm2d statistics at their initial values
    (lambda: nn.InstanceNorm2d(3, momentum=None, track_running_stats=True), ValueError,
     r"momentum=None is not supported with track_running_stats=True"),
]


@pytest.mark.parametrize("make, error, match", CONSTRUCTION_ERRORS)
def test_construction_refuses(make, error, match):
    with pytest.raises(error, match=match):
        make()


SGD_SIGNATURES = [
    # (positional arguments after params, keyword arguments, settings they give):
    # PyTorch's order (lr, momentum, dampening, weight_decay, nesterov) and lr default
    ((), {}, dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False)),
    ((0.1, 0.9, 0.0, 1e-4), {}, dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=1e-4,
                                     nesterov=False)),
    ((0.1, 0.9, 0.0, 0.0, True), {}, dict(lr=0.1, momentum=0.9, weight_decay=0.0,
                                          nesterov=True)),
    ((), dict(momentum=0.5), dict(lr=1e-3, momentum=0.5)),
]


@pytest.mark.parametrize("args, kwargs, expected", SGD_SIGNATURES)
def test_sgd_takes_torchs_argument_order_and_default_lr(args, kwargs, expected):
    group = optim.SGD([nn.Parameter(np.zeros(2))], *args, **kwargs).param_groups[0]
    assert {k: group[k] for k in expected} == expected


@pytest.mark.parametrize("args", [(0.1, 0.9, 0.0, True), (0.1, 0.9, 0.0, False, 1e-4)],
                         ids=["nesterov-fourth", "six-arguments"])
def test_a_flag_in_weight_decays_place_names_the_argument_order(args):
    """Code written for an order with nesterov before weight_decay fails saying why."""
    with pytest.raises(TypeError, match=r"weight_decay must be a number, got (True|False); "
                                        r"the order is PyTorch's, SGD\(params, lr, momentum, "
                                        r"dampening, weight_decay, nesterov\)"):
        optim.SGD([nn.Parameter(np.zeros(2))], *args)
