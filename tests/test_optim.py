"""Optimisers, schedulers and gradient clipping: by hand, against PyTorch, state round-trips."""
from __future__ import annotations

import copy
import math
import weakref

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import nn, optim


def scalar_param(value=1.0):
    return nn.Parameter(np.array([value]), dtype="float64")


def run_quadratic(opt, p, steps):
    """Minimise p^2 (gradient 2p) for ``steps`` steps; return p after each."""
    values = []
    for _ in range(steps):
        opt.zero_grad()
        (p * p).sum().backward()
        opt.step()
        values.append(p.item())
    return values


# ---- hand-computed steps -------------------------------------------------------------
def test_sgd_momentum_two_steps_by_hand():
    # g1 = 2, buf = 2, p = 1 - 0.1*2 = 0.8; g2 = 1.6, buf = 0.9*2 + 1.6 = 3.4, p = 0.8 - 0.34
    p = scalar_param()
    assert run_quadratic(optim.SGD([p], lr=0.1, momentum=0.9), p, 2) == \
        pytest.approx([0.8, 0.46])


def test_sgd_nesterov_dampening_weight_decay_by_hand():
    # nesterov: g + m*buf; step 1: buf = 2, 2 + 1.8 = 3.8 -> 0.62
    # step 2: g = 1.24, buf = 1.8 + 1.24 = 3.04, 1.24 + 2.736 = 3.976 -> 0.2224
    p = scalar_param()
    assert run_quadratic(optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True), p, 2) == \
        pytest.approx([0.62, 0.2224])
    # dampening 0.5, weight decay 0.5 (g = 2p + 0.5p = 2.5p):
    # step 1: g = 2.5, buf = 2.5, p = 0.75; step 2: g = 1.875, buf = 2.25 + 0.9375, p = 0.43125
    p = scalar_param()
    assert run_quadratic(optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.5),
                         p, 2) == pytest.approx([0.75, 0.43125])


def test_adam_and_adamw_first_steps_by_hand():
    # Step 1 of Adam moves by lr * g / (|g| + eps) whatever the betas.
    p = scalar_param(1.0)
    run_quadratic(optim.Adam([p], lr=0.1, eps=1e-8), p, 1)
    assert p.item() == pytest.approx(1 - 0.1 * 2 / (2 + 1e-8), abs=1e-15)
    # Step 2 (state restored from step 1: m = 0.1 * 2, v = 0.001 * 2^2), g = 2 p ~ 1.8:
    # m = 0.9 m + 0.1 g, v = 0.999 v + 0.001 g^2, bias-corrected by 1 - beta^2.
    p2 = p.item()
    opt = optim.Adam([p], lr=0.1)
    opt.load_state_dict({"state": {"0": {"step": 1, "exp_avg": np.array([0.2]),
                                         "exp_avg_sq": np.array([0.004])}},
                         "param_groups": [{"lr": 0.1, "params": [0]}]})
    run_quadratic(opt, p, 1)
    g = 2 * p2
    m_hat = (0.9 * 0.2 + 0.1 * g) / (1 - 0.9 ** 2)
    v_hat = (0.999 * 0.004 + 0.001 * g * g) / (1 - 0.999 ** 2)
    assert p.item() == pytest.approx(p2 - 0.1 * m_hat / (math.sqrt(v_hat) + 1e-8), abs=1e-12)
    # AdamW shrinks the weight first: p = 2 * (1 - 0.1 * 0.5) = 1.9, then the Adam step.
    p = scalar_param(2.0)
    run_quadratic(optim.AdamW([p], lr=0.1, weight_decay=0.5), p, 1)
    assert p.item() == pytest.approx(1.9 - 0.1 * 4 / (4 + 1e-8), abs=1e-12)


def test_rmsprop_first_steps_by_hand():
    # g = 2: v = 0.01 * 4 = 0.04, p = 1 - 0.01 * 2 / (sqrt(0.04) + eps)
    p = scalar_param(1.0)
    run_quadratic(optim.RMSprop([p]), p, 1)
    assert p.item() == pytest.approx(1 - 0.01 * 2 / (0.2 + 1e-8), abs=1e-15)
    # centered: m = 0.01 * 2, avg = sqrt(v - m^2) + eps, with eps outside the square root
    # (inside, it would move p by 0.1 * 2 / sqrt(0.0396 + 0.1) = 0.535, not 0.917).
    p = scalar_param(1.0)
    run_quadratic(optim.RMSprop([p], lr=0.1, eps=0.1, centered=True), p, 1)
    assert p.item() == pytest.approx(1 - 0.1 * 2 / (math.sqrt(0.04 - 0.02 ** 2) + 0.1),
                                     abs=1e-15)
    # momentum 0.5, alpha 0.5, weight decay 0.5 (g = 2p + 0.5p = 2.5p):
    # step 1: g = 2.5, v = 3.125, buf = 2.5 / sqrt(3.125), p = 1 - 0.1 buf
    # step 2: g = 2.5 p1, v = 0.5 v + 0.5 g^2, buf = 0.5 buf + g / sqrt(v)
    p = scalar_param(1.0)
    got = run_quadratic(optim.RMSprop([p], lr=0.1, alpha=0.5, eps=0.0, momentum=0.5,
                                      weight_decay=0.5), p, 2)
    v1, buf1 = 3.125, 2.5 / math.sqrt(3.125)
    p1 = 1 - 0.1 * buf1
    v2 = 0.5 * v1 + 0.5 * (2.5 * p1) ** 2
    buf2 = 0.5 * buf1 + 2.5 * p1 / math.sqrt(v2)
    assert got == pytest.approx([p1, p1 - 0.1 * buf2], abs=1e-15)


def test_step_with_closure():
    p = scalar_param(1.0)
    opt = optim.SGD([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 1.0
    assert p.item() == pytest.approx(0.8)


def test_params_without_grad_are_skipped_and_zero_grad():
    a, b = scalar_param(1.0), scalar_param(5.0)
    opt = optim.Adam([a, b], lr=0.1)
    (a * a).sum().backward()
    opt.step()
    assert b.item() == 5.0 and b.grad is None
    assert set(opt.state_dict()["state"]) == {"0"}
    opt.zero_grad()
    assert a.grad is None
    (a * 3).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert a.grad.numpy().tolist() == [0.0]


# ---- against PyTorch ---------------------------------------------------------------
OPT_CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("Adam", dict(lr=0.02, amsgrad=True, weight_decay=0.05)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.03, betas=(0.85, 0.995), weight_decay=0.2, amsgrad=True)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.02, alpha=0.9, eps=1e-3, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True)),
    ("RMSprop", dict(lr=0.01, alpha=0.3, momentum=0.5, centered=True, weight_decay=0.05)),
]


@pytest.mark.parametrize("name,kwargs", OPT_CASES, ids=[f"{n}-{i}" for i, (n, _) in
                                                        enumerate(OPT_CASES)])
def test_optimizer_matches_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    shapes = [(3, 2), (4,), ()]
    init = [rng.standard_normal(s) for s in shapes]
    ours = [nn.Parameter(a, dtype="float64") for a in init]
    theirs = [torch.tensor(a, requires_grad=True) for a in init]
    opt = getattr(optim, name)(ours, **kwargs)
    topt = getattr(torch.optim, name)(theirs, **kwargs)
    for step in range(6):
        for p, tp in zip(ours, theirs):
            g = rng.standard_normal(p.shape)
            if step == 3 and p.ndim == 0:
                p.grad, tp.grad = None, None   # a step without a gradient for one parameter
                continue
            p.grad, tp.grad = tg.tensor(g), torch.tensor(g)
        opt.step()
        topt.step()
        for p, tp in zip(ours, theirs):
            np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-12, atol=1e-14)


RMSPROP_GROUPS = [
    # each group has settings of its own
    dict(lr=0.01),
    dict(lr=0.02, alpha=0.8, momentum=0.9, eps=1e-4),
    dict(lr=0.005, centered=True, weight_decay=0.1),
    dict(lr=0.01, alpha=0.95, centered=True, momentum=0.6),
]


def _rmsprop_pair(torch, rng):
    init = [rng.standard_normal(s) for s in [(3, 2), (4,), (), (2, 2)]]
    ours = [nn.Parameter(a, dtype="float64") for a in init]
    theirs = [torch.tensor(a, requires_grad=True) for a in init]
    opt = optim.RMSprop([dict(g, params=[p]) for g, p in zip(RMSPROP_GROUPS, ours)])
    topt = torch.optim.RMSprop([dict(g, params=[p]) for g, p in zip(RMSPROP_GROUPS, theirs)])
    return ours, theirs, opt, topt


def test_rmsprop_matches_torch_over_many_steps_with_groups_and_a_resume(tmp_path):
    """40 steps of four groups; after 20 the state goes through a checkpoint file into
    a new optimizer, which must go on as PyTorch's uninterrupted one does."""
    torch = pytest.importorskip("torch")
    from tinygrad_cnn import checkpoint
    rng = np.random.default_rng(5)
    ours, theirs, opt, topt = _rmsprop_pair(torch, rng)
    grads = [[rng.standard_normal(p.shape) for p in ours] for _ in range(40)]
    for step, gs in enumerate(grads):
        if step == 20:
            path = checkpoint.save(tmp_path / "rms.npz", {
                "optim": opt.state_dict(), "params": [p.numpy() for p in ours]})
            saved = checkpoint.load(path)
            ours = [nn.Parameter(a, dtype="float64") for a in saved["params"]]
            opt = optim.RMSprop([dict(lr=1.0, params=[p]) for p in ours])
            opt.load_state_dict(saved["optim"])
            assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in RMSPROP_GROUPS]
        for p, tp, g in zip(ours, theirs, gs):
            p.grad, tp.grad = tg.tensor(g), torch.tensor(g)
        opt.step()
        topt.step()
        for p, tp in zip(ours, theirs):
            np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-11, atol=1e-14)
    for i, p in enumerate(ours):
        assert opt.state[p]["step"] == 40
        for key in ("square_avg", "grad_avg", "momentum_buffer"):
            if key in topt.state[theirs[i]]:
                np.testing.assert_allclose(opt.state[p][key], topt.state[theirs[i]][key],
                                           rtol=1e-11, atol=1e-14)
            else:
                assert key not in opt.state[p]


def _run_steps(params, opt, steps):
    """One optimiser step per entry of ``steps``, each a gradient per parameter."""
    for gs in steps:
        for p, g in zip(params, gs):
            p.grad = tg.tensor(g)
        opt.step()


def test_rmsprop_state_round_trip_without_torch():
    """Momentum switched on after the first steps starts from a zero buffer; the state,
    loaded into a new optimizer, continues bit for bit."""
    rng = np.random.default_rng(6)
    init = [rng.standard_normal((2, 3)), rng.standard_normal(3)]
    grads = [[rng.standard_normal(a.shape) for a in init] for _ in range(8)]

    def make():
        params = [nn.Parameter(a, dtype="float64") for a in init]
        return params, optim.RMSprop([{"params": params[:1], "centered": True},
                                      {"params": params[1:], "momentum": 0.0}], lr=0.01)

    params, opt = make()
    _run_steps(params, opt, grads[:2])
    assert set(opt.state[params[1]]) == {"step", "square_avg"}
    opt.param_groups[1]["momentum"] = 0.9
    _run_steps(params, opt, grads[2:4])
    state = opt.state[params[1]]
    assert set(state) == {"step", "square_avg", "momentum_buffer"} and state["step"] == 4
    saved, saved_params = opt.state_dict(), [p.numpy() for p in params]
    assert set(saved["state"]["0"]) == {"step", "square_avg", "grad_avg"}
    _run_steps(params, opt, grads[4:])
    params2, opt2 = make()
    for p, a in zip(params2, saved_params):
        p.data[...] = a
    opt2.load_state_dict(saved)
    assert opt2.param_groups[1]["momentum"] == 0.9
    _run_steps(params2, opt2, grads[4:])
    for p, q in zip(params, params2):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_state_dict_round_trip_continues_identically(tmp_path):
    from tinygrad_cnn import checkpoint
    rng = np.random.default_rng(1)
    init = [rng.standard_normal((3, 2)), rng.standard_normal(4)]
    grads = [[rng.standard_normal(a.shape) for a in init] for _ in range(6)]

    def make():
        params = [nn.Parameter(a, dtype="float64") for a in init]
        return params, optim.Adam(params, lr=0.05, amsgrad=True, weight_decay=0.01)

    params, opt = make()
    _run_steps(params, opt, grads[:3])
    path = checkpoint.save(tmp_path / "opt.npz", {"optim": opt.state_dict(),
                                                  "params": [p.numpy() for p in params]})
    _run_steps(params, opt, grads[3:])

    loaded = checkpoint.load(path)            # through .npz, without pickle
    params2, opt2 = make()
    for p, a in zip(params2, loaded["params"]):
        p.data[...] = a
    opt2.lr = 123.0                           # overwritten by the loaded hyper-parameters
    opt2.load_state_dict(loaded["optim"])
    assert opt2.param_groups[0]["betas"] == (0.9, 0.999) and opt2.lr == 0.05
    _run_steps(params2, opt2, grads[3:])
    for p, q in zip(params, params2):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_load_state_dict_rejects_other_parameters():
    opt = optim.SGD([scalar_param(), scalar_param()], lr=0.1, momentum=0.9)
    other = optim.SGD([scalar_param()], lr=0.1)
    with pytest.raises(ValueError, match="1 parameter"):
        opt.load_state_dict(other.state_dict())
    bad = {"state": {"0": {"momentum_buffer": np.zeros(3)}},
           "param_groups": [{"lr": 0.1, "params": [0, 1]}]}
    with pytest.raises(ValueError, match=r"shape \(3,\).*\(1,\)"):
        opt.load_state_dict(bad)


# ---- parameters with names: model.named_parameters() --------------------------------
def _two_layers(seed=0):
    tg.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()


def _train(model, opt, steps=3):
    rng = np.random.default_rng(5)
    for _ in range(steps):
        opt.zero_grad()
        x = tg.Tensor(rng.standard_normal((6, 3)))
        (model(x) ** 2).mean().backward()
        opt.step()


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.Adam(ps, lr=0.01)], ids=["sgd", "adam"])
def test_named_parameters_train_as_parameters_and_keep_their_names(make, tmp_path):
    from tinygrad_cnn import checkpoint
    named, plain = _two_layers(), _two_layers()
    opt_named, opt_plain = make(named.named_parameters()), make(plain.parameters())
    _train(named, opt_named)
    _train(plain, opt_plain)
    for p, q in zip(named.parameters(), plain.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    names = ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert opt_named.param_groups[0]["param_names"] == names
    assert "param_names" not in opt_plain.param_groups[0]
    saved = opt_named.state_dict()
    assert saved["param_groups"][0]["param_names"] == names
    saved["param_groups"][0]["param_names"].append("changed")   # a copy, not the group's list
    assert opt_named.param_groups[0]["param_names"] == names

    # Through a checkpoint file into a fresh named optimiser: the same next steps.
    path = checkpoint.save(tmp_path / "named.npz", {"optim": opt_named.state_dict()})
    resumed = _two_layers()
    resumed.load_state_dict(named.state_dict())
    opt_resumed = make(resumed.named_parameters())
    opt_resumed.load_state_dict(checkpoint.load(path)["optim"])
    _train(named, opt_named)
    _train(resumed, opt_resumed)
    for p, q in zip(named.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_named_parameters_state_dict_matches_torch():
    torch = pytest.importorskip("torch")
    model = _two_layers()
    ours = optim.SGD(model.named_parameters(), lr=0.1).state_dict()["param_groups"][0]
    t_model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    theirs = torch.optim.SGD(t_model.named_parameters(), lr=0.1).state_dict()["param_groups"][0]
    assert ours["param_names"] == theirs["param_names"]
    assert ours["params"] == theirs["params"]


def test_named_and_unnamed_parameters_do_not_mix():
    model = _two_layers()
    first, second = model[0], model[2]
    with pytest.raises(ValueError, match=r"parameter 1 of a group is a Parameter, not a "
                                         r"\(name, tensor\) pair"):
        optim.SGD([("w", first.weight), first.bias], lr=0.1)
    with pytest.raises(ValueError, match="all parameter groups must be given with names"):
        optim.SGD([{"params": first.named_parameters()}, {"params": second.parameters()}],
                  lr=0.1)
    opt = optim.SGD(first.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="this group is with, the first was without"):
        opt.add_param_group({"params": second.named_parameters()})
    with pytest.raises(TypeError, match="named 3, a int; names are strings"):
        optim.SGD([(3, first.weight)], lr=0.1)
    with pytest.raises(TypeError, match="not a 'param_names' entry"):
        optim.SGD([{"params": [first.weight], "param_names": ["w"]}], lr=0.1)


def test_a_state_saved_under_other_names_is_refused():
    model = _two_layers()
    opt = optim.SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    _train(model, opt, steps=1)
    saved = opt.state_dict()
    renamed = copy.deepcopy(saved)
    renamed["param_groups"][0]["param_names"][2] = "fc.weight"
    other = _two_layers()
    fresh = optim.SGD(other.named_parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="parameter 2 was saved as 'fc.weight' but is "
                                         "'2.weight' here"):
        fresh.load_state_dict(renamed)
    assert fresh.state == {}                              # nothing loaded
    broken = copy.deepcopy(saved)
    broken["param_groups"][0]["param_names"] = ["a", "b"]
    with pytest.raises(ValueError, match="must be a list of 4 strings"):
        fresh.load_state_dict(broken)
    # Across the two forms: loaded by position; each optimiser keeps its own names.
    plain = optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    plain.load_state_dict(saved)
    assert "param_names" not in plain.param_groups[0] and len(plain.state) == 4
    fresh.load_state_dict(plain.state_dict())
    assert fresh.param_groups[0]["param_names"] == saved["param_groups"][0]["param_names"]


def _adam_state_dict(change):
    opt = optim.Adam([scalar_param()])
    opt.param_groups[0]["params"][0].grad = tg.ones(1)
    opt.step()
    state = opt.state_dict()
    change(state)
    return state


@pytest.mark.parametrize("change, error, match", [
    # settings get the constructor's checks
    (lambda s: s["param_groups"][0].update(lr=-5), ValueError,
     r"param_groups\[0\]: lr must be >= 0\.0, got -5"),
    (lambda s: s["param_groups"][0].update(lr="abc"), TypeError,
     r"param_groups\[0\]: lr must be a number, got 'abc'"),
    (lambda s: s["param_groups"][0].update(betas=[2, 3]), ValueError,
     r"param_groups\[0\]: betas\[0\] must be >= 0\.0 and < 1\.0, got 2"),
    (lambda s: s["param_groups"][0].update(betas=0.9), TypeError,
     r"param_groups\[0\]: betas must be a pair"),
    (lambda s: s["param_groups"][0].update(foo=1), ValueError,
     r"param_groups\[0\]: unknown setting\(s\) \['foo'\] for Adam"),
    (lambda s: s["param_groups"][0].update(max_lr="x"), TypeError, r"max_lr must be a number"),
    # structure
    (lambda s: s["param_groups"][0].pop("params"), ValueError, r"has no 'params' entry"),
    (lambda s: s.update(param_groups=[5]), TypeError,
     r"param_groups\[0\] .*must be a dict, got 5"),
    (lambda s: s.update(param_groups=5), TypeError, r"'param_groups' to be a list"),
    (lambda s: s["state"].update(x={}), ValueError, r"state key 'x' is not a parameter index"),
    (lambda s: s["state"].update({"0": 5}), TypeError, r"state of parameter 0 must be a dict"),
    (lambda s: s["state"]["0"].update(foo=np.ones(1)), ValueError,
     r"state of parameter 0 has unknown entries \['foo'\]"),
    (lambda s: s["state"]["0"].update(step="a"), TypeError, r"state 0\.step must be an int"),
    (lambda s: s["state"]["0"].update(step=-1), ValueError, r"state 0\.step must be an int >= 0"),
    (lambda s: s["state"]["0"].update(step=1.5), TypeError,
     r"state 0\.step must be an int, got 1\.5 \(float\)"),
    (lambda s: s["param_groups"][0].update(amsgrad="no"), TypeError,
     r"param_groups\[0\]: amsgrad must be True or False, got 'no'"),
    (lambda s: s["param_groups"][0].update(amsgrad=1), TypeError, r"amsgrad must be True or False"),
    (lambda s: s["state"]["0"].update(exp_avg=np.array(["a"])), TypeError,
     r"'0\.exp_avg' has dtype <U1; expected numbers"),
], ids=["lr-negative", "lr-str", "betas-range", "betas-scalar", "unknown-setting",
        "schedule-setting", "no-params", "group-not-dict", "groups-not-list", "state-key",
        "state-not-dict", "state-unknown", "step-str", "step-negative", "step-fraction",
        "amsgrad-str", "amsgrad-int", "state-str-array"])
def test_optimizer_load_state_dict_refuses_damaged_states(change, error, match):
    state = _adam_state_dict(change)
    opt = optim.Adam([scalar_param()], lr=0.5)
    with pytest.raises(error, match=match):
        opt.load_state_dict(state)
    assert opt.lr == 0.5 and opt.state == {}   # nothing was changed


def test_optimizer_load_state_dict_takes_a_whole_float_step_and_numpy_flags():
    # PyTorch's Adam keeps its step as a float tensor; a loaded "no" became True.
    for step in (2.0, np.float32(2), np.array(2.0), tg.tensor(2.0)):
        state = _adam_state_dict(lambda s: s["state"]["0"].update(step=step))
        opt = optim.Adam([scalar_param()])
        opt.load_state_dict(state)
        assert next(iter(opt.state.values()))["step"] == 2
    state = _adam_state_dict(lambda s: s["param_groups"][0].update(amsgrad=np.bool_(True)))
    opt = optim.Adam([scalar_param()])
    opt.load_state_dict(state)
    assert opt.param_groups[0]["amsgrad"] is True


@pytest.mark.parametrize("betas", [np.array([0.8, 0.9]), tg.tensor([0.8, 0.9]), [0.8, 0.9],
                                   (np.float32(0.8), tg.tensor(0.9))],
                         ids=["ndarray", "tensor", "list", "mixed"])
def test_adam_takes_betas_as_any_pair_of_numbers(betas):
    opt = optim.Adam([scalar_param()], betas=betas)
    assert opt.param_groups[0]["betas"] == pytest.approx((0.8, 0.9))
    assert all(type(b) is float for b in opt.param_groups[0]["betas"])
    again = optim.Adam([scalar_param()])
    again.load_state_dict(opt.state_dict())     # plain numbers, loadable
    assert again.param_groups[0]["betas"] == opt.param_groups[0]["betas"]


@pytest.mark.parametrize("make, change, match", [
    (lambda o: optim.CosineAnnealingLR(o, 10), lambda s: s.update(T_max=0),
     r"CosineAnnealingLR.load_state_dict: T_max must be an int >= 1, got 0"),
    (lambda o: optim.StepLR(o, 2), lambda s: s.update(gamma="x"), r"gamma must be a number"),
    (lambda o: optim.StepLR(o, 2), lambda s: s.update(last_epoch=1.5),
     r"last_epoch must be an int"),
    (lambda o: optim.StepLR(o, 2), lambda s: s.update(base_lrs=[0.1, 0.2]),
     r"base_lrs must be a list of 1 learning rate"),
    (lambda o: optim.OneCycleLR(o, 0.1, total_steps=10), lambda s: s.update(total_steps=0),
     r"total_steps must be an int >= 1, got 0"),
    (lambda o: optim.OneCycleLR(o, 0.1, total_steps=10), lambda s: s.update(last_epoch=11),
     r"last_epoch 11 is past total_steps 10"),
    (lambda o: optim.OneCycleLR(o, 0.1, total_steps=10), lambda s: s.update(phases=[5]),
     r"phases is not a list of the 2 or 3 phases"),
    (lambda o: optim.OneCycleLR(o, 0.1, total_steps=10),
     lambda s: s.update(anneal_strategy="cosine"), r"anneal_strategy must be 'cos' or 'linear'"),
], ids=["cosine-T_max", "step-gamma", "last-epoch", "base-lrs", "one-cycle-total",
        "one-cycle-past-end", "one-cycle-phases", "one-cycle-anneal"])
def test_scheduler_load_state_dict_refuses_damaged_states(make, change, match):
    sched = make(optim.Adam([scalar_param()]))
    state = sched.state_dict()
    change(state)
    before = sched.state_dict()
    with pytest.raises((TypeError, ValueError), match=match):
        sched.load_state_dict(state)
    assert sched.state_dict() == before


def test_scheduler_state_holding_0d_tensors_loads_as_python_numbers():
    sched = optim.StepLR(optim.SGD([scalar_param()], lr=0.1), 2)
    state = sched.state_dict()
    state.update(last_epoch=tg.tensor(3), step_size=np.array(2), gamma=np.float32(0.5),
                 base_lrs=np.array([0.1]), _last_lr=[np.float64(0.05)])
    sched.load_state_dict(state)
    assert type(sched.last_epoch) is int and type(sched.step_size) is int
    assert type(sched.gamma) is float
    assert all(type(v) is float for v in sched.base_lrs + sched.get_last_lr())
    sched.step()
    assert sched.last_epoch == 4 and sched.get_last_lr() == pytest.approx([0.025])
    one_cycle = optim.OneCycleLR(optim.Adam([scalar_param()]), 0.1, total_steps=10)
    state = one_cycle.state_dict()
    state["phases"][0]["end_step"] = np.float64(state["phases"][0]["end_step"])
    state.update(total_steps=np.int32(10), cycle_momentum=np.bool_(True))
    one_cycle.load_state_dict(state)
    assert type(one_cycle.phases[0]["end_step"]) is float
    assert type(one_cycle.total_steps) is int and one_cycle.cycle_momentum is True


def test_optimizer_settings_loaded_as_numpy_values_become_python_numbers():
    state = _adam_state_dict(lambda s: s["param_groups"][0].update(
        lr=np.float32(0.5), betas=np.array([0.8, 0.9]), eps=tg.tensor(1e-6),
        weight_decay=np.array(0.0), amsgrad=np.bool_(False)))
    opt = optim.Adam([scalar_param()])
    opt.load_state_dict(state)
    group = opt.param_groups[0]
    assert type(group["betas"]) is tuple
    assert all(type(v) is float for v in (group["lr"], group["eps"], group["weight_decay"],
                                          *group["betas"]))
    assert group["amsgrad"] is False and group["betas"] == pytest.approx((0.8, 0.9))


def test_settings_given_as_0d_tensors_or_arrays_are_kept_as_python_numbers():
    p = scalar_param()
    opt = optim.SGD([p], lr=tg.tensor(0.5), momentum=np.array(0.5), weight_decay=np.float32(0))
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.5, 0.5, 0.0)
    assert all(type(group[k]) is float for k in ("lr", "momentum", "weight_decay"))
    opt.lr = np.array(0.25)
    assert type(opt.lr) is float and opt.lr == 0.25
    p.grad = tg.ones(1)
    opt.step()                          # the update works with the numbers
    assert optim.clip_grad_norm_([p], tg.tensor(0.5)).item() == pytest.approx(1.0)
    assert p.grad.item() == pytest.approx(0.5, rel=1e-5)


def test_param_groups_and_lr_property():
    a, b = scalar_param(), scalar_param()
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    (a * b).sum().backward()
    opt.step()
    assert (a.item(), b.item()) == pytest.approx((0.9, 0.0))
    assert opt.lr == 0.1
    opt.lr = 0.5
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5]


OPT_ERRORS = [
    (lambda p: optim.SGD([p], lr=-1), ValueError, "lr"),
    (lambda p: optim.SGD([p], lr=0.1, nesterov=True), ValueError, "Nesterov"),
    (lambda p: optim.Adam([p], betas=(1.0, 0.9)), ValueError, "betas"),
    (lambda p: optim.SGD([], lr=0.1), ValueError, "empty"),
    (lambda p: optim.SGD(p, lr=0.1), TypeError, "single Tensor"),
    (lambda p: optim.SGD([p, p], lr=0.1), ValueError, "more than one"),
    (lambda p: optim.SGD([p * 2], lr=0.1), ValueError, "leaf"),
    # a tensor moved or cast after requires_grad=True is a differentiable copy, no leaf:
    # the error says how to get a leaf there
    (lambda p: optim.SGD([p.float()], lr=0.1), ValueError,
     r"is not a leaf tensor .*; it is a copy made by \.to\(\), \.cuda\(\) or a cast: create "
     r"the tensor on cpu as float32 directly \(tg\.zeros\(\.\.\., device='cpu', "
     r"dtype='float32', requires_grad=True\)\), or keep parameters in a Module, whose "
     r"\.to\(\) moves them in place$"),
    (lambda p: optim.Adam([p.to("strict")]), ValueError,
     r"copy made by .* on strict as float64 directly \(tg\.zeros\(\.\.\., device='strict'"),
    (lambda p: optim.SGD([{"params": [p], "momentun": 0.9}], lr=0.1), TypeError, "momentun"),
    (lambda p: optim.Adam([p], betas=0.9), TypeError, r"betas must be a pair \(beta1, beta2\)"),
    (lambda p: optim.Adam([p], betas="ab"), TypeError, r"betas must be a pair"),
    (lambda p: optim.Adam([p], betas=np.array([0.9, 0.99, 0.999])), ValueError,
     r"betas must be a pair \(beta1, beta2\), got array"),
    (lambda p: optim.Adam([p], betas=(0.9, "x")), TypeError, r"betas\[1\] must be a number"),
    # flags are bools: "no" was taken as True
    (lambda p: optim.Adam([p], amsgrad="no"), TypeError, r"amsgrad must be True or False"),
    (lambda p: optim.AdamW([p], amsgrad=0), TypeError, r"amsgrad must be True or False"),
    (lambda p: optim.SGD([p], lr=0.1, momentum=0.9, nesterov="no"), TypeError,
     r"nesterov must be True or False, got 'no'"),
    (lambda p: optim.RMSprop([p], centered="yes"), TypeError,
     r"centered must be True or False, got 'yes'"),
    (lambda p: optim.RMSprop([p], alpha=-0.5), ValueError, r"alpha must be >= 0\.0, got -0\.5"),
    (lambda p: optim.RMSprop([p], momentum=-0.1), ValueError,
     r"momentum must be >= 0\.0, got -0\.1"),
    (lambda p: optim.RMSprop([p], eps=-1e-8), ValueError, r"eps must be >= 0\.0, got -1e-08"),
    (lambda p: optim.RMSprop([p], 0.01, 0.99, 1e-8, True), TypeError,
     r"weight_decay must be a number, got True"),
    (lambda p: optim.RMSprop([{"params": [p], "betas": (0.9, 0.99)}]), TypeError,
     r"unknown setting\(s\) \['betas'\] for RMSprop"),
    # one rule: a wrong type is a TypeError (it was a ValueError), a count < 1 a ValueError
    (lambda p: optim.StepLR(optim.SGD([p], lr=0.1), 2.0), TypeError,
     r"step_size must be an int, got 2\.0 \(float\)"),
    (lambda p: optim.CosineAnnealingLR(optim.SGD([p], lr=0.1), "x"), TypeError,
     r"T_max must be an int, got 'x'"),
    # last_epoch: -1 (new) or the steps taken (resuming); it was a KeyError about initial_lr
    (lambda p: optim.StepLR(optim.SGD([p], lr=0.1), 2, last_epoch=-2), ValueError,
     r"StepLR: last_epoch must be an int >= -1, got -2"),
    (lambda p: optim.StepLR(optim.SGD([p], lr=0.1), 2, last_epoch=1.5), TypeError,
     r"StepLR: last_epoch must be an int"),
    (lambda p: optim.OneCycleLR(optim.SGD([p], lr=0.1), 0.1, total_steps=0), ValueError,
     r"total_steps must be an int >= 1, got 0"),
    (lambda p: optim.clip_grad_norm_([p], 1, norm_type="fro"), ValueError,
     r"norm_type must be a positive number, inf or 'inf', got 'fro'; the Frobenius norm .* "
     r"is their 2-norm: pass 2\.0"),
    (lambda p: optim.clip_grad_norm_([p], 1, norm_type="max"), ValueError,
     r"norm_type must be a positive number, inf or 'inf', got 'max'$"),
    (lambda p: optim.clip_grad_norm_([p], 1, norm_type=True), TypeError, r"norm_type .*True"),
    (lambda p: optim.clip_grad_norm_([p], 1, norm_type=0), ValueError, r"norm_type must be > 0"),
    (lambda p: optim.clip_grad_norm_([np.ones(3)], 1), TypeError,
     r"clip_grad_norm_: parameter 0 is a ndarray, not a Tensor"),
    # the model instead of its parameters: a Sequential was iterated as its layers and
    # the error named a layer ("parameter 0 of a group is a Linear")
    (lambda p: optim.SGD(nn.Sequential(nn.Linear(2, 2)), lr=0.1), TypeError,
     r"params is a Sequential model; pass its parameters: model\.parameters\(\)"),
    (lambda p: optim.SGD([nn.Linear(2, 2)], lr=0.1), TypeError,
     r"parameter 0 of a group is a Linear model; pass its parameters"),
    (lambda p: optim.clip_grad_norm_(nn.Linear(2, 2), 1.0), TypeError,
     r"clip_grad_norm_: params is a Linear model; pass its parameters"),
    # not iterable: it was Python's "'NoneType' object is not iterable"
    (lambda p: optim.SGD(None, lr=0.1), TypeError,
     r"params must be an iterable of tensors or of parameter group dicts .* got NoneType"),
    (lambda p: optim.clip_grad_norm_(None, 1), TypeError,
     r"clip_grad_norm_: params must be a Tensor or an iterable of tensors .* got NoneType"),
    (lambda p: optim.clip_grad_value_(3, 1), TypeError, r"clip_grad_value_: params .* got int"),
    # a TypeError raised inside the user's generator is its own, not "must be an iterable"
    (lambda p: optim.SGD((q for q in [p, None] if q + 0), lr=0.1), TypeError,
     r"unsupported operand type\(s\) for \+: 'NoneType' and 'int'"),
    (lambda p: optim.clip_grad_norm_((q for q in [p, None] if q + 0), 1), TypeError,
     r"unsupported operand type\(s\) for \+: 'NoneType' and 'int'"),
    # flags are True or False: a truthy string was taken as True
    (lambda p: optim.clip_grad_norm_([p], 1, error_if_nonfinite="x"), TypeError,
     r"clip_grad_norm_: error_if_nonfinite must be True or False, got 'x'"),
    (lambda p: optim.SGD([p], lr=0.1).zero_grad(set_to_none="no"), TypeError,
     r"zero_grad: set_to_none must be True or False, got 'no'"),
]


@pytest.mark.parametrize("make,error,word", OPT_ERRORS)
def test_optimizer_errors(make, error, word):
    with pytest.raises(error, match=word):
        make(scalar_param())


def test_state_follows_the_parameters_to_another_dtype():
    model = nn.Linear(3, 2)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(tg.randn(4, 3)).sum().backward()
    opt.step()
    model.double()                      # same Parameter objects, float64 data
    model.zero_grad()
    model(tg.randn(4, 3, dtype="float64")).sum().backward()
    opt.step()
    assert model.weight.dtype == np.float64
    assert all(s["momentum_buffer"].dtype == np.float64 for s in opt.state.values())


def read_only_leaf():
    """A leaf parameter that is a read-only view (an expand) of a tensor it must not change."""
    base = tg.zeros(1, 3, dtype="float64")
    p = base.expand(2, 3).detach().requires_grad_()
    p.grad = tg.tensor(np.arange(6.0).reshape(2, 3))
    return base, p


OPTIMIZERS_WITH_STATE = [
    lambda ps: optim.SGD(ps, lr=1.0, momentum=0.9),
    lambda ps: optim.Adam(ps, lr=1.0),
    lambda ps: optim.AdamW(ps, lr=1.0),
    lambda ps: optim.RMSprop(ps, lr=1.0, momentum=0.9, centered=True),
]
WITH_STATE_IDS = ["sgd", "adam", "adamw", "rmsprop"]


@pytest.mark.parametrize("make", OPTIMIZERS_WITH_STATE, ids=WITH_STATE_IDS)
def test_a_replaced_parameter_does_not_inherit_the_state_of_the_one_it_replaced(make):
    # State is kept per parameter id; a new tensor often gets the id (the memory)
    # of one just freed, and must still start from a fresh state: with a zero
    # gradient, a first step leaves it where it is.
    opt = make([tg.zeros(3, requires_grad=True)])
    for _ in range(20):
        opt.param_groups[0]["params"][0].grad = tg.ones(3)
        opt.step()                       # the parameter has a state from now on
        opt.param_groups[0]["params"] = [tg.zeros(3, requires_grad=True)]   # frees it
        q = opt.param_groups[0]["params"][0]
        q.grad = tg.zeros(3)
        opt.step()
        np.testing.assert_array_equal(q.numpy(), np.zeros(3))
        del q


@pytest.mark.parametrize("make", OPTIMIZERS_WITH_STATE, ids=WITH_STATE_IDS)
def test_state_of_removed_parameters_is_dropped_at_the_next_step(make):
    # Parameters taken out of the groups (kept alive elsewhere, e.g. an old
    # head) must not leave their state behind to grow with every swap: at
    # most the two parameters of the groups and the one replaced since.
    keep = tg.zeros(2, requires_grad=True)
    heads = [tg.zeros(3, requires_grad=True)]
    opt = make([keep, heads[0]])
    for _ in range(20):
        for p in opt.param_groups[0]["params"]:
            p.grad = tg.ones(p.shape)
        opt.step()
        assert len(opt.state) <= 3
        heads.append(tg.zeros(3, requires_grad=True))
        opt.param_groups[0]["params"] = [keep, heads[-1]]
    assert set(opt.state) <= {id(keep), id(heads[-2]), id(heads[-3])}
    assert len(opt.state_dict()["state"]) == 1          # only keep is still optimised


@pytest.mark.parametrize("make", OPTIMIZERS_WITH_STATE, ids=WITH_STATE_IDS)
def test_a_removed_parameter_is_freed_even_when_its_successor_has_no_gradient(make):
    # A frozen replacement (no gradient, so no state) leaves as many states as
    # parameters: the removed one's state, and the tensor itself, must still go.
    keep, head = tg.zeros(2, requires_grad=True), tg.zeros(3, requires_grad=True)
    opt = make([keep, head])
    keep.grad, head.grad = tg.ones(2), tg.ones(3)
    opt.step()
    opt.param_groups[0]["params"] = [keep, tg.zeros(3, requires_grad=True)]
    gone = weakref.ref(head)
    del head
    opt.step()
    assert gone() is None, "the optimizer keeps the removed parameter alive"
    assert set(opt.state) == {id(keep)}


@pytest.mark.parametrize("make", OPTIMIZERS_WITH_STATE, ids=WITH_STATE_IDS)
def test_a_deep_copied_optimizer_keeps_its_state(make):
    # copy.deepcopy copies the parameters too: the copy's state must follow them
    # (state is kept by id, and the copies have ids of their own), so that the
    # copy steps on as the original does, momentum included.
    ps = [tg.tensor([1.0, -2.0], requires_grad=True), tg.tensor([0.5], requires_grad=True)]
    opt = make(ps)
    for _ in range(2):
        for p in ps:
            p.grad = tg.tensor(p.numpy())
        opt.step()
    copied_ps, copied = copy.deepcopy((ps, opt))   # one memo: the same parameter copies
    assert copied.param_groups[0]["params"][0] is copied_ps[0]
    assert all(q is not p for q, p in zip(copied_ps, ps))
    assert set(copied.state) == {id(q) for q in copied_ps}
    for q, p in zip(copied_ps, ps):
        for name, value in opt.state[id(p)].items():
            np.testing.assert_array_equal(copied.state[id(q)][name], value)
            assert not np.shares_memory(copied.state[id(q)][name], value) \
                if isinstance(value, np.ndarray) else True
    alone = copy.deepcopy(opt)            # the parameters copied with it
    for other, other_ps in ((copied, copied_ps), (alone, alone.param_groups[0]["params"])):
        for q in other_ps:
            q.grad = tg.tensor(q.numpy())
        other.step()
    for p in ps:
        p.grad = tg.tensor(p.numpy())
    opt.step()
    for q, r, p in zip(copied_ps, alone.param_groups[0]["params"], ps):
        np.testing.assert_array_equal(q.numpy(), p.numpy())
        np.testing.assert_array_equal(r.numpy(), p.numpy())


def test_state_is_indexed_by_the_parameter_too():
    # PyTorch's optimizer.state[p]: here the state is kept by id(p), and a tensor
    # key finds the same entry (a bare dict would compare id(p) == p elementwise).
    p, q = tg.zeros(3, requires_grad=True), tg.zeros(2, requires_grad=True)
    opt = optim.SGD([p, q], lr=0.1, momentum=0.9)
    p.grad = tg.ones(3)
    opt.step()
    assert opt.state[p] is opt.state[id(p)]
    assert p in opt.state and id(p) in opt.state and q not in opt.state
    assert opt.state.get(p) is opt.state[id(p)] and opt.state.get(q) is None
    np.testing.assert_array_equal(opt.state[p]["momentum_buffer"], np.ones(3))
    with pytest.raises(KeyError, match=r"no state for this parameter of shape \(2,\)"):
        opt.state[q]


def test_state_is_written_and_deleted_by_the_parameter_too():
    p, q = tg.zeros(3, requires_grad=True), tg.zeros(2, requires_grad=True)
    opt = optim.SGD([p, q], lr=0.1, momentum=0.9)
    opt.state[q] = {"momentum_buffer": np.full(2, 5.0, np.float32)}   # before any step
    assert q in opt.state and id(q) in opt.state and opt.state[id(q)] is opt.state[q]
    p.grad, q.grad = tg.ones(3), tg.ones(2)
    opt.step()                          # the written state is q's: 0.9 * 5 + 1
    np.testing.assert_allclose(opt.state[q]["momentum_buffer"], [5.5, 5.5])
    assert opt.state.setdefault(p, {}) is opt.state[id(p)]
    assert opt.state.pop(q) is not None and q not in opt.state
    assert opt.state.pop(q, None) is None
    del opt.state[p]
    assert not opt.state
    with pytest.raises(KeyError):
        del opt.state[p]
    opt.step()                          # starts again from empty state


def test_loaded_adam_state_with_arrays_needs_its_step():
    p = tg.zeros(3, requires_grad=True)
    opt = optim.Adam([p], lr=0.1)
    p.grad = tg.ones(3)
    opt.step()
    saved = opt.state_dict()
    del saved["state"]["0"]["step"]
    with pytest.raises(ValueError, match=r"state of parameter 0 has \['exp_avg', "
                                         r"'exp_avg_sq'\] but no 'step'"):
        optim.Adam([p], lr=0.1).load_state_dict(saved)


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
    lambda ps: optim.Adam(ps, lr=0.1, weight_decay=0.1),
    lambda ps: optim.AdamW(ps, lr=0.1, weight_decay=0.1),
    lambda ps: optim.AdamW(ps, lr=0.1, weight_decay=0.1, amsgrad=True),
    lambda ps: optim.RMSprop(ps, lr=0.1, weight_decay=0.1, momentum=0.9, centered=True),
], ids=["sgd", "adam", "adamw", "adamw-amsgrad", "rmsprop"])
def test_a_read_only_leaf_is_updated_on_a_copy_of_its_own(make):
    base, p = read_only_leaf()
    q = nn.Parameter(p.numpy())         # the same values, writeable
    q.grad = p.grad
    make([p]).step()
    opt = make([q])
    opt.step()
    np.testing.assert_array_equal(p.numpy(), q.numpy())
    assert not base.numpy().any()       # the view's base is untouched
    if "step" in opt.state[id(q)]:
        assert opt.state[id(q)]["step"] == 1


def test_optimizer_runs_on_a_strict_device():
    # CuPy's rules: no implicit host conversion, state on the parameter's device.
    pytest.importorskip("strict_backend")
    p = nn.Parameter(np.arange(3.0), device="strict")
    for opt in (optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1),
                optim.Adam([p], amsgrad=True, weight_decay=0.1), optim.AdamW([p]),
                optim.RMSprop([p], momentum=0.9, centered=True, weight_decay=0.1)):
        for _ in range(2):
            opt.zero_grad()
            (p * p).sum().backward()
            opt.step()
        state = opt.state_dict()["state"]["0"]
        assert all(isinstance(v, (int, float, np.ndarray)) for v in state.values())
    p.grad = tg.tensor([3.0, 4.0, 0.0], device="strict")
    assert optim.clip_grad_norm_([p], 1.0).item() == pytest.approx(5.0)
    # one norm over gradients on two devices: refused as other ops mixing devices are
    q = nn.Parameter(np.ones(2))
    q.grad = tg.ones(2)
    with pytest.raises(tg.DeviceError, match=r"different devices \(strict and cpu\)"):
        optim.clip_grad_norm_([p, q], 1.0)


# ---- schedulers --------------------------------------------------------------------------
SCHED_CASES = [
    ("StepLR", dict(step_size=3, gamma=0.5), 12, "SGD"),
    ("CosineAnnealingLR", dict(T_max=10), 25, "SGD"),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.01), 20, "SGD"),
    ("OneCycleLR", dict(max_lr=1.0, total_steps=20), 20, "SGD"),
    ("OneCycleLR", dict(max_lr=0.5, total_steps=17, pct_start=0.25, anneal_strategy="linear",
                        div_factor=10, final_div_factor=100), 17, "SGD"),
    ("OneCycleLR", dict(max_lr=0.5, total_steps=15, three_phase=True), 15, "Adam"),
    ("OneCycleLR", dict(max_lr=0.5, epochs=3, steps_per_epoch=4, cycle_momentum=False), 12,
     "Adam"),
    ("OneCycleLR", dict(max_lr=[1.0, 0.4], total_steps=10, base_momentum=0.8), 10, "SGD"),
]


@pytest.mark.parametrize("name,kwargs,steps,opt_name", SCHED_CASES)
def test_scheduler_matches_torch(name, kwargs, steps, opt_name):
    """Two parameter groups with learning rates of their own: each follows its own schedule."""
    torch = pytest.importorskip("torch")
    opt = getattr(optim, opt_name)([{"params": [scalar_param()]},
                                    {"params": [scalar_param()], "lr": 0.03}], lr=0.1)
    topt = getattr(torch.optim, opt_name)([{"params": [torch.zeros(1, requires_grad=True)]},
                                           {"params": [torch.zeros(1, requires_grad=True)],
                                            "lr": 0.03}], lr=0.1)
    sched = getattr(optim, name)(opt, **kwargs)
    tsched = getattr(torch.optim.lr_scheduler, name)(topt, **kwargs)
    key = "betas" if opt_name == "Adam" else "momentum"
    for _ in range(steps):
        assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-12, abs=1e-15)
        for group, tgroup in zip(opt.param_groups, topt.param_groups, strict=True):
            assert group["lr"] == pytest.approx(tgroup["lr"], rel=1e-12, abs=1e-15)
            assert np.allclose(group[key], tgroup[key], rtol=1e-12)
        opt.step()
        topt.step()
        sched.step()
        tsched.step()


def test_step_lr_by_hand_and_scheduler_state_round_trip(tmp_path):
    from tinygrad_cnn import checkpoint
    opt = optim.SGD([scalar_param()], lr=1.0)
    sched = optim.StepLR(opt, step_size=2, gamma=0.1)
    lrs = []
    for _ in range(5):
        lrs.append(sched.get_last_lr()[0])
        sched.step()
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])

    opt = optim.SGD([scalar_param()], lr=0.1, momentum=0.9)
    sched = optim.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    for _ in range(4):
        sched.step()
    path = checkpoint.save(tmp_path / "s.npz", {"opt": opt.state_dict(),
                                                "sched": sched.state_dict()})
    saved = checkpoint.load(path)           # through .npz and JSON, without pickle
    saved_opt, saved_sched = saved["opt"], saved["sched"]
    expected = []
    for _ in range(5):
        sched.step()
        expected.append((opt.lr, opt.param_groups[0]["momentum"]))
    opt2 = optim.SGD([scalar_param()], lr=0.1, momentum=0.9)
    opt2.load_state_dict(saved_opt)
    sched2 = optim.OneCycleLR(opt2, max_lr=1.0, total_steps=10)
    sched2.load_state_dict(saved_sched)
    got = []
    for _ in range(5):
        sched2.step()
        got.append((opt2.lr, opt2.param_groups[0]["momentum"]))
    assert got == expected
    with pytest.raises(ValueError, match="total_steps"):
        for _ in range(3):
            sched2.step()


def test_one_cycle_refuses_a_step_past_the_end_and_stays_at_the_end():
    opt = optim.SGD([scalar_param()], lr=0.1, momentum=0.9)
    sched = optim.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    for _ in range(10):
        sched.step()
    end = (sched.last_epoch, opt.lr, opt.param_groups[0]["momentum"])
    with pytest.raises(ValueError, match=r"OneCycleLR cannot step 11 times: total_steps is 10"):
        sched.step()
    # The refused step changed nothing (last_epoch was left at 11), so the state saved
    # here loads again.
    assert (sched.last_epoch, opt.lr, opt.param_groups[0]["momentum"]) == end == (10, *end[1:])
    again = optim.OneCycleLR(optim.SGD([scalar_param()], lr=0.1, momentum=0.9), max_lr=1.0,
                             total_steps=10)
    again.load_state_dict(sched.state_dict())
    assert again.last_epoch == 10


@pytest.mark.parametrize("flag", ["cycle_momentum", "three_phase"])
def test_one_cycle_flags_are_bools(flag):
    # bool("no") is True: the string switched the setting on.
    with pytest.raises(TypeError, match=rf"{flag} must be True or False, got 'no'"):
        optim.OneCycleLR(optim.SGD([scalar_param()], lr=0.1, momentum=0.9), max_lr=1.0,
                         total_steps=10, **{flag: "no"})


@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_zero_length_phase(three_phase):
    # pct_start * total_steps == 1: the warm-up (and the way back) ends at step 0, where
    # pct would be 0 / 0; the lr is max_lr there, then anneals to min_lr at step 9.
    opt = optim.SGD([scalar_param()], lr=0.1, momentum=0.9)
    sched = optim.OneCycleLR(opt, max_lr=0.1, total_steps=10, pct_start=0.1,
                             three_phase=three_phase)
    lrs, momenta = [], []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        momenta.append(opt.param_groups[0]["momentum"])
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and momenta[0] == pytest.approx(0.85)
    assert lrs[-1] == pytest.approx(0.1 / 25 / 1e4) and momenta[-1] == pytest.approx(0.95)
    assert all(math.isfinite(v) for v in lrs + momenta)
    if not three_phase:  # one cosine from max_lr to min_lr over steps 0..9
        lo = 0.1 / 25 / 1e4
        assert lrs == pytest.approx([lo + (0.1 - lo) / 2 * (math.cos(math.pi * k / 9) + 1)
                                     for k in range(10)], rel=1e-12)


# ---- more schedulers: against PyTorch, resumed mid-run, by hand -----------------------
class WarmupThenDecay:
    """A callable lr_lambda with state: the factor it returned last (saved by state_dict)."""

    def __init__(self, warmup):
        self.warmup, self.last = warmup, None

    def __call__(self, step):
        self.last = (step + 1) / self.warmup if step < self.warmup else 0.9 ** (step - self.warmup)
        return self.last


class HalfLife:
    """A callable scale_fn with state: the argument it was called with last."""

    def __init__(self, half_life):
        self.half_life, self.last = half_life, None

    def __call__(self, x):
        self.last = x
        return 0.5 ** (x / self.half_life)


def _plateau_metric(step):
    """A validation loss that falls, stalls, jitters and rises: every branch of the rule."""
    return [5.0, 4.0, 4.0, 3.9999, 4.1, 3.0, 3.0, 3.0, 3.0, 2.99, 2.5, 2.6, 2.7, 2.8,
            2.9, 3.0, 2.4, 2.4, 2.4, 2.4][step % 20] + 0.5 * (step // 20)


# (id, make(lib, opt) with lib torch.optim.lr_scheduler or our optim, steps, metric or None)
MORE_SCHED_CASES = [
    ("exponential", lambda lib, o: lib.ExponentialLR(o, gamma=0.93), 80, None),
    ("multistep", lambda lib, o: lib.MultiStepLR(o, milestones=[30, 10, 60], gamma=0.5), 80,
     None),
    ("multistep-repeated", lambda lib, o: lib.MultiStepLR(o, [5, 5, 12]), 20, None),
    ("linear-default", lambda lib, o: lib.LinearLR(o), 12, None),
    ("linear-decay", lambda lib, o: lib.LinearLR(o, start_factor=1.0, end_factor=0.05,
                                                 total_iters=30), 45, None),
    ("lambda-one", lambda lib, o: lib.LambdaLR(o, lambda e: 1 / (1 + e) ** 0.5), 40, None),
    ("lambda-per-group", lambda lib, o: lib.LambdaLR(o, [lambda e: 0.95 ** e,
                                                         WarmupThenDecay(5)]), 40, None),
    ("warmup-cosine", lambda lib, o: lib.SequentialLR(o, [
        lib.LinearLR(o, start_factor=0.01, total_iters=5),
        lib.CosineAnnealingLR(o, T_max=60, eta_min=1e-4)], milestones=[5]), 70, None),
    ("three-stages", lambda lib, o: lib.SequentialLR(o, [
        lib.ExponentialLR(o, gamma=0.9), lib.MultiStepLR(o, [4, 9], gamma=0.3),
        lib.LinearLR(o, start_factor=0.5, total_iters=6)], milestones=[10, 25]), 45, None),
    ("plateau-min", lambda lib, o: lib.ReduceLROnPlateau(o, patience=2), 60, _plateau_metric),
    ("plateau-options", lambda lib, o: lib.ReduceLROnPlateau(
        o, mode="max", factor=0.5, patience=1, threshold=0.05, threshold_mode="abs",
        cooldown=2, min_lr=[0.02, 1e-3], eps=1e-3), 60, lambda k: -_plateau_metric(k)),
    ("plateau-rel-max", lambda lib, o: lib.ReduceLROnPlateau(
        o, "max", factor=0.0, patience=0, min_lr=0.01), 30, lambda k: 1 + k % 3),
]

# The schedulers added with ConstantLR, with the same runs (the momenta are compared too).
NEW_SCHED_CASES = [
    ("constant-default", lambda lib, o: lib.ConstantLR(o), 12, None),
    ("constant", lambda lib, o: lib.ConstantLR(o, factor=0.25, total_iters=7), 20, None),
    ("polynomial-default", lambda lib, o: lib.PolynomialLR(o), 10, None),
    ("polynomial", lambda lib, o: lib.PolynomialLR(o, total_iters=30, power=2.5), 40, None),
    ("multiplicative", lambda lib, o: lib.MultiplicativeLR(o, lambda e: 0.95), 40, None),
    ("multiplicative-per-group", lambda lib, o: lib.MultiplicativeLR(
        o, [lambda e: 1 + 0.3 * math.sin(e), WarmupThenDecay(5)]), 40, None),
    ("warm-restarts", lambda lib, o: lib.CosineAnnealingWarmRestarts(o, T_0=7), 40, None),
    ("warm-restarts-mult", lambda lib, o: lib.CosineAnnealingWarmRestarts(
        o, T_0=3, T_mult=2, eta_min=1e-3), 60, None),
    ("cyclic", lambda lib, o: lib.CyclicLR(o, 0.01, 0.1, step_size_up=5), 40, None),
    ("cyclic-triangular2", lambda lib, o: lib.CyclicLR(
        o, [0.01, 0.002], [0.1, 0.03], step_size_up=4, step_size_down=6, mode="triangular2"),
     50, None),
    ("cyclic-exp-range", lambda lib, o: lib.CyclicLR(
        o, 0.01, 0.1, step_size_up=3, mode="exp_range", gamma=0.97, base_momentum=[0.7, 0.8],
        max_momentum=0.95), 40, None),
    ("cyclic-scale-fn", lambda lib, o: lib.CyclicLR(
        o, 0.01, 0.1, 2.5, step_size_down=1.5, scale_fn=HalfLife(7), scale_mode="iterations",
        cycle_momentum=False), 30, None),
    ("cyclic-scale-fn-cycle", lambda lib, o: lib.CyclicLR(
        o, 0.01, 0.1, 3, step_size_down=0, scale_fn=lambda c: 1 / c), 20, None),
    ("one-cycle", lambda lib, o: lib.OneCycleLR(o, [1.0, 0.3], total_steps=30), 30, None),
]


def _two_group_sgd(lib, torch=None):
    """SGD over two groups with learning rates of their own, ours (torch=None) or torch's."""
    if torch is None:
        groups = [{"params": [scalar_param()]}, {"params": [scalar_param()], "lr": 0.03}]
        return optim.SGD(groups, lr=0.1, momentum=0.9)
    groups = [{"params": [torch.zeros(1, requires_grad=True)]},
              {"params": [torch.zeros(1, requires_grad=True)], "lr": 0.03}]
    return torch.optim.SGD(groups, lr=0.1, momentum=0.9)


def _run_schedule(sched, opt, steps, metric, start=0):
    """The lrs, then the momenta, before each of ``steps`` steps (from step ``start``), one
    list per step."""
    lrs = []
    for k in range(start, start + steps):
        lrs.append(list(sched.get_last_lr()) + [g["momentum"] for g in opt.param_groups])
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(
            lrs[-1][:len(opt.param_groups)], rel=1e-15)
        opt.step()
        sched.step(metric(k)) if metric is not None else sched.step()
    return lrs


@pytest.mark.parametrize("at_milestone", [False, True],
                         ids=["inside-a-schedule", "at-the-milestone"])
def test_a_sequential_step_that_raises_changes_nothing(at_milestone):
    """A step whose scheduler raises (here a flaky lr_lambda, at the second step: inside
    the first schedule, or where the second one starts) leaves SequentialLR and that
    scheduler as they were: retried, the run goes on as one that never failed."""
    def make():
        opt = optim.SGD([scalar_param()], lr=1.0)
        armed = []

        def factor(epoch):
            if armed:
                armed.clear()
                raise RuntimeError("flaky")
            return 0.5 ** epoch

        flaky = optim.LambdaLR(opt, factor)
        if at_milestone:
            schedulers = [optim.ConstantLR(opt, 0.25, total_iters=4), flaky]
        else:
            schedulers = [flaky, optim.ConstantLR(opt, 0.25, total_iters=4)]
        return opt, optim.SequentialLR(opt, schedulers, [2 if at_milestone else 5]), armed

    def run(fail):
        opt, sched, armed = make()
        lrs = []
        for k in range(5):
            if fail and k == 1:
                armed.append(True)
                with pytest.raises(RuntimeError, match="flaky"):
                    sched.step()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        return lrs, sched.last_epoch

    assert run(fail=True) == run(fail=False)


def _resumed_run(make, steps, metric, tmp_path, step_before_load=False, order="build-first"):
    """The lrs of a schedule run for ``steps`` steps, saved half-way through a checkpoint
    file (optimizer and scheduler) and loaded into new ones built as a resuming script
    builds them (which may have stepped before loading): both built, then both loaded
    (``order`` "build-first"), or the optimizer's state loaded before the scheduler is
    built on it ("optimizer-first")."""
    from tinygrad_cnn import checkpoint
    half = steps // 2
    opt = _two_group_sgd(optim)
    sched = make(optim, opt)
    first = _run_schedule(sched, opt, half, metric)
    path = checkpoint.save(tmp_path / "sched.npz", {"opt": opt.state_dict(),
                                                    "sched": sched.state_dict()})
    saved = checkpoint.load(path)
    opt2 = _two_group_sgd(optim)
    if order == "optimizer-first":
        opt2.load_state_dict(saved["opt"])
    sched2 = make(optim, opt2)
    if step_before_load:
        sched2.step(metric(0)) if metric is not None else sched2.step()
    if order == "build-first":
        opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    return first + _run_schedule(sched2, opt2, steps - half, metric, start=half)


@pytest.mark.parametrize("make,steps,metric", [c[1:] for c in MORE_SCHED_CASES + NEW_SCHED_CASES],
                         ids=[c[0] for c in MORE_SCHED_CASES + NEW_SCHED_CASES])
@pytest.mark.parametrize("order", ["build-first", "optimizer-first"])
def test_more_schedulers_match_torch_and_resume_mid_run(make, steps, metric, order, tmp_path):
    """Two groups over many steps against PyTorch's get_last_lr(); then, half-way, the
    optimizer's and scheduler's states go through a checkpoint file into new ones, built
    as a resuming script builds them, which must go on as PyTorch's uninterrupted run."""
    torch = pytest.importorskip("torch")
    import warnings
    topt = _two_group_sgd(None, torch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # PyTorch's about the order of the two steps
        expected = _run_schedule(make(torch.optim.lr_scheduler, topt), topt, steps, metric)
    opt = _two_group_sgd(optim)
    sched = make(optim, opt)
    np.testing.assert_allclose(_run_schedule(sched, opt, steps, metric), expected, rtol=1e-10,
                               atol=1e-15)

    np.testing.assert_allclose(_resumed_run(make, steps, metric, tmp_path, order=order),
                               expected, rtol=1e-10, atol=1e-15)


def _stepped(sched, times):
    for _ in range(times):
        sched.step()
    return sched


# (make(opt) over one group with lr 1.0, the lrs of steps 0, 1, ... worked out by hand)
SCHED_BY_HAND = [
    (lambda o: optim.ExponentialLR(o, 0.5), [1, 0.5, 0.25, 0.125]),
    (lambda o: optim.MultiStepLR(o, [1, 3, 3], gamma=0.1), [1, 0.1, 0.1, 0.001, 0.001]),
    (lambda o: optim.LinearLR(o, start_factor=0.25, total_iters=3), [0.25, 0.5, 0.75, 1, 1]),
    (lambda o: optim.LinearLR(o, 1.0, 0.0, total_iters=2), [1, 0.5, 0, 0]),
    (lambda o: optim.LambdaLR(o, lambda e: 1 / 2 ** e), [1, 0.5, 0.25]),
    (lambda o: optim.LambdaLR(o, [WarmupThenDecay(2)]), [0.5, 1, 1, 0.9, 0.81]),
    # warm-up 0.1 -> 1 over 2 steps, then a cosine from 1 to 0 over 2 steps
    (lambda o: optim.SequentialLR(o, [optim.LinearLR(o, 0.1, total_iters=2),
                                      optim.CosineAnnealingLR(o, T_max=2)], [2]),
     [0.1, 0.55, 1, 0.5, 0, 0.5]),
    # a milestone at 0 skips the first schedule; the second restarts at each of its steps
    (lambda o: optim.SequentialLR(o, [optim.ExponentialLR(o, 0.5), optim.StepLR(o, 1, 0.5),
                                      optim.ExponentialLR(o, 0.1)], [0, 2]),
     [1, 0.5, 1, 0.1, 0.01]),
    # a schedule stepped before it was handed over still starts at its step 0 at its
    # milestone (PyTorch's step(0) there)
    (lambda o: optim.SequentialLR(o, [optim.LinearLR(o, 0.5, total_iters=1),
                                      _stepped(optim.ExponentialLR(o, 0.5), 3)], [2]),
     [0.5, 1, 1, 0.5, 0.25]),
    (lambda o: optim.ConstantLR(o, factor=0.5, total_iters=2), [0.5, 0.5, 1, 1]),
    (lambda o: optim.ConstantLR(o, factor=0.0, total_iters=1), [0, 1, 1]),
    (lambda o: optim.PolynomialLR(o, total_iters=4, power=2), [1, 0.5625, 0.25, 0.0625, 0, 0]),
    (lambda o: optim.MultiplicativeLR(o, lambda e: 0.5), [1, 0.5, 0.25, 0.125]),
    (lambda o: optim.MultiplicativeLR(o, lambda e: e), [1, 1, 2, 6, 24]),   # lr_k = k!
    (lambda o: optim.CosineAnnealingWarmRestarts(o, T_0=2), [1, 0.5, 1, 0.5, 1]),
    # cycles of 1, 2 and 4 steps start at steps 0, 1 and 3
    (lambda o: optim.CosineAnnealingWarmRestarts(o, T_0=1, T_mult=2, eta_min=0.2),
     [1, 1, 0.6, 1, 0.2 + 0.8 * (1 + math.cos(math.pi / 4)) / 2, 0.6]),
    (lambda o: optim.CyclicLR(o, 0.0, 1.0, step_size_up=2), [0, 0.5, 1, 0.5, 0, 0.5]),
    (lambda o: optim.CyclicLR(o, 0.0, 1.0, 1, mode="triangular2"), [0, 1, 0, 0.5, 0, 0.25]),
    (lambda o: optim.CyclicLR(o, 0.0, 1.0, 2, step_size_down=0), [0, 0.5, 0, 0.5, 0]),
    (lambda o: optim.CyclicLR(o, 0.0, 1.0, 1, mode="exp_range", gamma=0.5),
     [0, 0.5, 0, 0.125, 0]),
    (lambda o: optim.CyclicLR(o, 0.5, 1.0, 1, scale_fn=lambda c: c), [0.5, 1, 0.5, 1.5, 0.5]),
]


@pytest.mark.parametrize("make,expected", SCHED_BY_HAND, ids=[
    "exponential", "multistep", "linear-warmup", "linear-decay", "lambda", "lambda-object",
    "sequential-warmup-cosine", "sequential-milestone-0", "sequential-restart",
    "constant", "constant-0", "polynomial", "multiplicative", "multiplicative-factorial",
    "warm-restarts", "warm-restarts-mult", "cyclic", "cyclic-triangular2", "cyclic-sawtooth",
    "cyclic-exp-range", "cyclic-scale-fn"])
def test_more_schedulers_by_hand(make, expected):
    opt = optim.SGD([scalar_param()], lr=1.0)
    sched = make(opt)
    lrs = []
    for _ in expected:
        lrs.append(sched.get_last_lr()[0])
        assert opt.lr == lrs[-1]
        sched.step()
    assert lrs == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("make,steps", [c[1:3] for c in NEW_SCHED_CASES],
                         ids=[c[0] for c in NEW_SCHED_CASES])
@pytest.mark.parametrize("order", ["build-first", "optimizer-first"])
def test_new_schedulers_resume_through_a_checkpoint_without_torch(make, steps, order,
                                                                  tmp_path):
    """Saved half-way (optimizer and scheduler) and loaded into new ones built as a
    resuming script builds them: the run goes on exactly as the uninterrupted one."""
    opt = _two_group_sgd(optim)
    expected = _run_schedule(make(optim, opt), opt, steps, None)
    # A resumed run is set back by loading, whatever its scheduler did before.
    assert _resumed_run(make, steps, None, tmp_path, step_before_load=True,
                        order=order) == expected


@pytest.mark.parametrize("order", ["build-first", "optimizer-first"])
def test_a_sequential_schedule_resumes_its_current_schedulers_lr_and_momentum(
        order, tmp_path):
    """Resumed inside its second scheduler (a OneCycleLR, which cycles the momentum):
    loading sets the optimizer's lr and momentum to that scheduler's, not to those
    its own or the first scheduler's construction left there."""
    def make(lib, o):
        return lib.SequentialLR(o, [lib.LinearLR(o, start_factor=0.1, total_iters=4),
                                    lib.OneCycleLR(o, 0.5, total_steps=20, three_phase=True)],
                                milestones=[6])
    opt = _two_group_sgd(optim)
    expected = _run_schedule(make(optim, opt), opt, 26, None)
    assert _resumed_run(make, 26, None, tmp_path, order=order) == expected


def test_loading_a_schedule_keeps_an_lr_set_since_it_last_stepped():
    """Loading replaces only what the schedule itself wrote last: an lr set by hand
    after the optimizer's state was loaded stays (as in PyTorch); so does
    ReduceLROnPlateau's optimizer-held lr, changed by hand before saving."""
    opt = optim.SGD([scalar_param()], lr=0.1)
    sched = optim.StepLR(opt, 2, 0.5)
    for _ in range(5):
        opt.step()
        sched.step()
    saved_opt, saved_sched = opt.state_dict(), sched.state_dict()
    opt2 = optim.SGD([scalar_param()], lr=0.1)
    opt2.load_state_dict(saved_opt)
    sched2 = optim.StepLR(opt2, 2, 0.5)
    opt2.param_groups[0]["lr"] = 0.3
    sched2.load_state_dict(saved_sched)
    assert opt2.lr == 0.3

    opt = optim.SGD([scalar_param()], lr=0.1)
    plateau = optim.ReduceLROnPlateau(opt, patience=0)
    plateau.step(1.0)
    plateau.step(2.0)                      # no improvement: lr 0.1 -> 0.01
    opt.param_groups[0]["lr"] = 0.05
    saved_opt, saved_sched = opt.state_dict(), plateau.state_dict()
    for load_optimizer_first in (True, False):
        opt2 = optim.SGD([scalar_param()], lr=0.1)
        plateau2 = optim.ReduceLROnPlateau(opt2, patience=0)
        if load_optimizer_first:
            opt2.load_state_dict(saved_opt)
        plateau2.load_state_dict(saved_sched)
        if not load_optimizer_first:
            opt2.load_state_dict(saved_opt)
        assert opt2.lr == 0.05


def test_a_sequential_load_that_fails_leaves_the_optimizer_alone():
    def build():
        opt = optim.SGD([scalar_param()], lr=1.0, momentum=0.9)
        return opt, optim.SequentialLR(opt, [optim.LinearLR(opt, 0.1, total_iters=4),
                                             optim.ExponentialLR(opt, 0.9)], milestones=[4])
    opt, sched = build()
    for _ in range(6):
        sched.step()
    bad = sched.state_dict()
    bad["_schedulers"][0]["_last_lr"] = [123.0]   # loadable on its own
    bad["_schedulers"][1]["gamma"] = -5           # refused
    opt2, sched2 = build()
    with pytest.raises(ValueError, match="scheduler 1"):
        sched2.load_state_dict(bad)
    assert opt2.lr == pytest.approx(0.1) and sched2.last_epoch == 0


def _fractional_epochs(sched, epochs, batches, then=0):
    """PyTorch's per-batch form, step(epoch + i / batches), then ``then`` plain steps;
    the lr after each."""
    lrs = []
    for epoch in range(epochs):
        for i in range(batches):
            sched.step(epoch + i / batches)
            lrs.append(sched.get_last_lr())
    for _ in range(then):
        sched.step()
        lrs.append(sched.get_last_lr())
    return lrs


@pytest.mark.parametrize("kwargs", [dict(T_0=3), dict(T_0=2, T_mult=2, eta_min=0.01)])
def test_warm_restarts_fractional_epochs_match_torch_and_resume(kwargs, tmp_path):
    torch = pytest.importorskip("torch")
    from tinygrad_cnn import checkpoint
    topt = _two_group_sgd(None, torch)
    expected = _fractional_epochs(torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        topt, **kwargs), 15, 7, then=5)
    opt = _two_group_sgd(optim)
    sched = optim.CosineAnnealingWarmRestarts(opt, **kwargs)
    np.testing.assert_allclose(_fractional_epochs(sched, 15, 7, then=5), expected, rtol=1e-12,
                               atol=1e-15)
    # saved in the middle of an epoch: the fraction is in the state
    opt = _two_group_sgd(optim)
    sched = optim.CosineAnnealingWarmRestarts(opt, **kwargs)
    _fractional_epochs(sched, 4, 7)
    sched.step(4 + 3 / 7)
    path = checkpoint.save(tmp_path / "w.npz", {"sched": sched.state_dict()})
    again = optim.CosineAnnealingWarmRestarts(_two_group_sgd(optim), **kwargs)
    again.load_state_dict(checkpoint.load(path)["sched"])
    assert again.last_epoch == 4 and again.last_epoch + again._epoch_fraction == 4 + 3 / 7
    again.step()                    # one epoch on: 5 + 3 / 7
    np.testing.assert_allclose(again.get_last_lr(), expected[5 * 7 + 3], rtol=1e-12)


def test_warm_restarts_fractional_epochs_by_hand():
    opt = optim.SGD([scalar_param()], lr=1.0)
    sched = optim.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2)
    sched.step(0.5)                                   # a quarter of the first cycle
    assert (sched.last_epoch, sched.T_cur, sched.T_i) == (0, 0.5, 2)
    assert opt.lr == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    sched.step(3.0)                                   # the second cycle (4 steps) from 2
    assert (sched.last_epoch, sched.T_cur, sched.T_i) == (3, 1, 4)
    assert opt.lr == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    sched.step()
    assert (sched.last_epoch, sched.T_cur) == (4, 2) and opt.lr == pytest.approx(0.5)
    sched.step(np.float32(6.25))                      # the third cycle (8 steps) from 6
    assert (sched.last_epoch, sched.T_cur, sched.T_i) == (6, 0.25, 8)
    # The restart at epoch 121 of T_0=1, T_mult=3 (1 + 3 + ... + 81) is on time here,
    # where PyTorch's floating-point logarithm puts it at 122.
    sched = optim.CosineAnnealingWarmRestarts(optim.SGD([scalar_param()], lr=1.0), 1, 3)
    sched.step(121)
    assert (sched.T_cur, sched.T_i, sched.get_last_lr()) == (0, 243, [1.0])
    sched.step(120.5)
    assert (sched.T_cur, sched.T_i) == (80.5, 81)


@pytest.mark.parametrize("opt_name", ["SGD", "Adam", "AdamW", "RMSprop"])
def test_cyclic_lr_cycles_momentum_or_beta1_as_torch(opt_name, tmp_path):
    """PyTorch 2.x cycles beta1 for the Adam family, the momentum for the others; a run
    resumed from a checkpoint half-way goes on the same."""
    torch = pytest.importorskip("torch")
    from tinygrad_cnn import checkpoint
    key, steps = ("betas" if "Adam" in opt_name else "momentum"), 30

    def build(lib, groups):
        o = getattr(lib.optim if lib is torch else lib, opt_name)(groups, lr=0.1)
        sched_lib = lib.optim.lr_scheduler if lib is torch else lib
        return o, sched_lib.CyclicLR(o, [0.01, 0.02], 0.1, step_size_up=4, step_size_down=3,
                                     mode="triangular2", base_momentum=[0.6, 0.7])

    def run(opt, sched, steps):
        seen = []
        for _ in range(steps):
            seen.append(sched.get_last_lr() + [list(np.atleast_1d(g[key])) for g in
                                               opt.param_groups])
            opt.step()
            sched.step()
        return seen

    tgroups = [{"params": [torch.zeros(1, requires_grad=True)]} for _ in range(2)]
    expected = run(*build(torch, tgroups), steps)

    def groups():
        return [{"params": [scalar_param()]} for _ in range(2)]

    got = run(*build(optim, groups()), steps)
    for mine, theirs in zip(got, expected, strict=True):
        assert mine[:2] == pytest.approx(theirs[:2], rel=1e-12)
        for a, b in zip(mine[2:], theirs[2:], strict=True):
            assert a == pytest.approx(b, rel=1e-12)
    opt, sched = build(optim, groups())
    first = run(opt, sched, steps // 2)
    path = checkpoint.save(tmp_path / "c.npz", {"opt": opt.state_dict(),
                                                "sched": sched.state_dict()})
    saved = checkpoint.load(path)
    opt2, sched2 = build(optim, groups())
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    assert first + run(opt2, sched2, steps - steps // 2) == got


def test_cyclic_lr_momentum_and_beta1_by_hand():
    # momentum 0.9 at the bottom of the lr, 0.8 at its top, in a straight line between
    opt = optim.SGD([scalar_param()], lr=1.0)
    sched = optim.CyclicLR(opt, 0.1, 0.5, step_size_up=2)
    seen = []
    for _ in range(5):
        seen.append((opt.lr, opt.param_groups[0]["momentum"]))
        sched.step()
    np.testing.assert_allclose(seen, [(0.1, 0.9), (0.3, 0.85), (0.5, 0.8), (0.3, 0.85),
                                      (0.1, 0.9)], rtol=1e-12)
    assert opt.param_groups[0]["initial_lr"] == 0.1
    assert (opt.param_groups[0]["max_momentum"], opt.param_groups[0]["base_momentum"]) == \
        (0.9, 0.8)
    opt = optim.Adam([scalar_param()], betas=(0.5, 0.99))
    sched = optim.CyclicLR(opt, 0.1, 0.5, step_size_up=1, base_momentum=0.7)
    betas = []
    for _ in range(3):
        betas.append(opt.param_groups[0]["betas"])
        sched.step()
    assert betas == [(0.9, 0.99), pytest.approx((0.7, 0.99)), pytest.approx((0.9, 0.99))]
    # base_lr is the bottom from step 0 on, whatever initial_lr an earlier scheduler left
    # (PyTorch's step 0 takes that initial_lr, 1.0 here, then base_lr from step 1)
    opt = optim.SGD([scalar_param()], lr=1.0, momentum=0.3)
    optim.StepLR(opt, 2)
    sched = optim.CyclicLR(opt, 0.1, 0.5, step_size_up=2, cycle_momentum=False)
    assert (opt.lr, sched.base_lrs, opt.param_groups[0]["initial_lr"]) == (0.1, [0.1], 0.1)
    sched.step()
    assert opt.param_groups[0]["momentum"] == 0.3 and "max_momentum" not in opt.param_groups[0]


def test_cyclic_lr_saves_a_callable_scale_fn_s_attributes():
    opt = optim.SGD([scalar_param()], lr=1.0)
    fn = HalfLife(3)
    sched = optim.CyclicLR(opt, 0.1, 0.5, step_size_up=2, scale_fn=fn)
    _stepped(sched, 5)
    state = sched.state_dict()
    assert state["_scale_fn_custom"] == {"half_life": 3, "last": 2} and fn.last == 2
    fn2 = HalfLife(3)
    again = optim.CyclicLR(optim.SGD([scalar_param()], lr=1.0), 0.1, 0.5, step_size_up=2,
                           scale_fn=fn2)
    again.load_state_dict(state)
    assert fn2.last == 2 and again.last_epoch == 5
    assert _stepped(again, 1).get_last_lr() == _stepped(sched, 1).get_last_lr()
    plain = optim.CyclicLR(optim.SGD([scalar_param()], lr=1.0), 0.1, 0.5,
                           scale_fn=lambda c: 1.0)
    assert plain.state_dict()["_scale_fn_custom"] is None        # a function is code
    fn.target = object()
    with pytest.raises(TypeError, match=r"CyclicLR.state_dict: scale_fn \(a HalfLife\) has "
                                        r"attribute 'target'"):
        sched.state_dict()


def test_multiplicative_lr_multiplies_the_lr_the_group_holds():
    opt = optim.SGD([scalar_param()], lr=1.0)
    sched = optim.MultiplicativeLR(opt, lambda e: 0.5)
    sched.step()
    opt.lr = 4.0                   # a change by hand carries on, as in PyTorch
    sched.step()
    assert opt.lr == sched.get_last_lr()[0] == 2.0
    # resuming through last_epoch multiplies the (loaded) lr of step 2 by lr_lambda(3)
    again = optim.MultiplicativeLR(opt, lambda e: 1 / e, last_epoch=2)
    assert again.last_epoch == 3 and opt.lr == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"MultiplicativeLR: lr_lambda of parameter group 0 "
                                         r"returned -1\.0 at step 4; expected a finite "
                                         r"number >= 0"):
        optim.MultiplicativeLR(opt, lambda e: 1.0 - e / 2, last_epoch=3)
    opt = optim.SGD([scalar_param()], lr=1.0)
    sched = _stepped(optim.MultiplicativeLR(opt, lambda e: 3.0 - e), 2)
    assert opt.lr == 2.0
    with pytest.raises(ValueError, match=r"returned -1\.0 at step 4"):
        _stepped(sched, 2)                  # step 3 (factor 0) is taken, step 4 is not
    assert (sched.last_epoch, opt.lr, sched.get_last_lr()) == (3, 0.0, [0.0])


def test_reduce_lr_on_plateau_by_hand():
    # patience 1: the second bad step in a row reduces the lr (by 10), then cooldown 1
    # ignores the next bad step; an improvement smaller than threshold (rel 1e-4) is bad.
    opt = optim.SGD([{"params": [scalar_param()]}, {"params": [scalar_param()], "lr": 0.02}],
                    lr=1.0)
    sched = optim.ReduceLROnPlateau(opt, patience=1, cooldown=1, min_lr=[0, 0.01])
    lrs = []
    for loss in [1.0, 1.0, 0.99995, 2.0, 3.0, 4.0, 0.5, 0.6, 0.7]:
        sched.step(loss)
        lrs.append(sched.get_last_lr())
    np.testing.assert_allclose(lrs, [[1, 0.02], [1, 0.02], [0.1, 0.01], [0.1, 0.01],
                                     [0.1, 0.01], [0.01, 0.01], [0.01, 0.01], [0.01, 0.01],
                                     [0.001, 0.01]], rtol=1e-15)
    assert (sched.best, sched.num_bad_epochs, sched.cooldown_counter, sched.last_epoch) == \
        (0.5, 0, 1, 9)
    sched.step(tg.tensor(0.1, requires_grad=True))    # a loss tensor is a number here
    assert sched.best == pytest.approx(0.1)
    # a reduction by eps or less is skipped: 1 -> 0.1 is made, 0.1 -> 0.01 is not
    opt = optim.SGD([scalar_param()], lr=1.0)
    sched = optim.ReduceLROnPlateau(opt, patience=0, eps=0.5)
    for loss in [1.0, 2.0, 2.0, 2.0]:
        sched.step(loss)
    assert opt.lr == pytest.approx(0.1) and sched.num_bad_epochs == 0


def test_reduce_lr_on_plateau_state_round_trip(tmp_path):
    """The state holds inf (no best value yet) and goes through a checkpoint file."""
    from tinygrad_cnn import checkpoint
    opt = optim.SGD([scalar_param()], lr=1.0)
    sched = optim.ReduceLROnPlateau(opt, mode="max", patience=0)
    assert sched.state_dict()["best"] == -math.inf
    path = checkpoint.save(tmp_path / "p.npz", {"sched": sched.state_dict()})
    sched.step(1.0)
    sched.step(0.5)                               # one bad step: lr 1 -> 0.1
    again = optim.ReduceLROnPlateau(optim.SGD([scalar_param()], lr=1.0), mode="max",
                                    patience=0)
    again.load_state_dict(checkpoint.load(path)["sched"])
    assert again.best == -math.inf
    again.step(1.0)
    again.step(0.5)
    assert again.get_last_lr() == sched.get_last_lr() == pytest.approx([0.1])
    assert again.state_dict() == sched.state_dict()


def test_lambda_lr_saves_a_callable_objects_attributes_and_no_functions():
    fn = WarmupThenDecay(4)
    opt = optim.SGD([{"params": [scalar_param()]}, {"params": [scalar_param()]}], lr=1.0)
    sched = optim.LambdaLR(opt, [lambda e: 1.0, fn])
    for _ in range(3):
        sched.step()
    state = sched.state_dict()
    assert state["lr_lambdas"] == [None, {"warmup": 4, "last": 1.0}]
    fn2 = WarmupThenDecay(4)
    again = optim.LambdaLR(optim.SGD([{"params": [scalar_param()]},
                                      {"params": [scalar_param()]}], lr=1.0),
                           [lambda e: 1.0, fn2])
    assert fn2.last == 0.25
    again.load_state_dict(state)
    assert fn2.last == 1.0 and again.last_epoch == 3
    assert state["lr_lambdas"][1] == {"warmup": 4, "last": 1.0}   # not taken by the object
    fn.target = object()
    with pytest.raises(TypeError, match=r"LambdaLR.state_dict: lr_lambda of parameter group 1 "
                                        r"\(a WarmupThenDecay\) has attribute 'target'"):
        sched.state_dict()


def test_lambda_lr_refuses_a_bad_factor_and_stays_where_it_was():
    opt = optim.SGD([scalar_param()], lr=1.0)
    sched = optim.LambdaLR(opt, lambda e: 1.0 - e)    # negative from step 2 on
    sched.step()
    with pytest.raises(ValueError, match=r"lr_lambda of parameter group 0 returned -1\.0 at "
                                         r"step 2; expected a finite number >= 0"):
        sched.step()
    assert sched.last_epoch == 1 and opt.lr == 0.0
    with pytest.raises(TypeError, match=r"returned 'x' \(str\) at step 0; expected a number"):
        optim.LambdaLR(optim.SGD([scalar_param()], lr=1.0), lambda e: "x")


def _sgd(groups=1):
    return optim.SGD([{"params": [scalar_param()]} for _ in range(groups)], lr=0.1)


MORE_SCHED_ERRORS = [
    (lambda: optim.ExponentialLR(_sgd(), gamma=-0.5), ValueError, r"gamma must be >= 0\.0"),
    (lambda: optim.ExponentialLR(_sgd(), gamma="x"), TypeError, r"gamma must be a number"),
    (lambda: optim.MultiStepLR(_sgd(), milestones=[3, -1]), ValueError,
     r"milestones must be step numbers >= 0, got -1 in \[3, -1\]"),
    (lambda: optim.MultiStepLR(_sgd(), milestones=[2.5]), TypeError,
     r"milestones must be a list of ints \(step numbers\), got \[2\.5\]"),
    (lambda: optim.MultiStepLR(_sgd(), milestones=5), TypeError, r"milestones must be a list"),
    (lambda: optim.LinearLR(_sgd(), start_factor=0), ValueError,
     r"start_factor must be > 0 and <= 1, got 0"),
    (lambda: optim.LinearLR(_sgd(), end_factor=1.5), ValueError,
     r"end_factor must be >= 0 and <= 1, got 1\.5"),
    (lambda: optim.LinearLR(_sgd(), total_iters=0), ValueError,
     r"total_iters must be an int >= 1, got 0"),
    (lambda: optim.LambdaLR(_sgd(2), [lambda e: 1.0]), ValueError,
     r"LambdaLR: expected 2 lr_lambdas, one per parameter group, got 1"),
    (lambda: optim.LambdaLR(_sgd(), 0.5), TypeError,
     r"LambdaLR: lr_lambda must be a function of the step number, got 0\.5 \(float\)"),
    (lambda: optim.LambdaLR(None, lambda e: 1), TypeError, r"LambdaLR needs an Optimizer"),
    (lambda: optim.SequentialLR(_sgd(), [], []), ValueError, r"at least one scheduler"),
    (lambda: (lambda o: optim.SequentialLR(o, [optim.ExponentialLR(o, 0.9)], [3]))(_sgd()),
     ValueError, r"one milestone fewer than schedulers, got 1 scheduler\(s\) and 1 milestone"),
    (lambda: optim.SequentialLR(_sgd(), [optim.ExponentialLR(_sgd(), 0.9)], []), ValueError,
     r"scheduler 0 \(ExponentialLR\) belongs to another optimizer"),
    (lambda: (lambda o: optim.SequentialLR(o, [optim.ReduceLROnPlateau(o)], []))(_sgd()),
     ValueError, r"cannot run a ReduceLROnPlateau \(scheduler 0\): its step needs the metric"),
    (lambda: (lambda o: optim.SequentialLR(o, [o], []))(_sgd()), TypeError,
     r"scheduler 0 is a SGD, not a learning-rate scheduler"),
    (lambda: (lambda o: optim.SequentialLR(o, [optim.ExponentialLR(o, 0.9)], [],
                                           last_epoch=4))(_sgd()), ValueError,
     r"last_epoch must be -1, got 4; to resume, load its state_dict"),
    (lambda: optim.ReduceLROnPlateau(_sgd(), mode="minimum"), ValueError,
     r"mode must be 'min' or 'max', got 'minimum'"),
    (lambda: optim.ReduceLROnPlateau(_sgd(), threshold_mode="relative"), ValueError,
     r"threshold_mode must be 'rel' or 'abs', got 'relative'"),
    (lambda: optim.ReduceLROnPlateau(_sgd(), factor=1.0), ValueError,
     r"factor must be >= 0\.0 and < 1, got 1\.0"),
    (lambda: optim.ReduceLROnPlateau(_sgd(), patience=2.5), TypeError,
     r"patience must be an int, got 2\.5"),
    (lambda: optim.ReduceLROnPlateau(_sgd(), cooldown=-1), ValueError,
     r"cooldown must be an int >= 0, got -1"),
    (lambda: optim.ReduceLROnPlateau(_sgd(2), min_lr=[0.1]), ValueError,
     r"expected 2 min_lrs, one per parameter group, got 1"),
    (lambda: optim.ReduceLROnPlateau(_sgd(2), min_lr=[0.1, -1]), ValueError,
     r"min_lr\[1\] must be >= 0\.0, got -1"),
    (lambda: optim.ReduceLROnPlateau(_sgd()).step("low"), TypeError,
     r"ReduceLROnPlateau.step: metrics must be a number .* got 'low' \(str\)"),
    (lambda: optim.ConstantLR(_sgd(), factor=1.5), ValueError,
     r"factor must be >= 0\.0 and <= 1, got 1\.5"),
    (lambda: optim.ConstantLR(_sgd(), total_iters=0), ValueError,
     r"total_iters must be an int >= 1, got 0"),
    (lambda: optim.ConstantLR(None), TypeError, r"ConstantLR needs an Optimizer, got NoneType"),
    (lambda: optim.PolynomialLR(_sgd(), total_iters=2.5), TypeError,
     r"total_iters must be an int, got 2\.5 \(float\)"),
    (lambda: optim.PolynomialLR(_sgd(), power=-1), ValueError, r"power must be >= 0\.0, got -1"),
    (lambda: optim.MultiplicativeLR(_sgd(2), [lambda e: 1.0]), ValueError,
     r"MultiplicativeLR: expected 2 lr_lambdas, one per parameter group, got 1"),
    (lambda: optim.MultiplicativeLR(_sgd(), 0.9), TypeError,
     r"MultiplicativeLR: lr_lambda must be a function of the step number, got 0\.9 \(float\)"),
    (lambda: optim.MultiplicativeLR(None, lambda e: 1), TypeError,
     r"MultiplicativeLR needs an Optimizer"),
    (lambda: optim.CosineAnnealingWarmRestarts(_sgd(), T_0=0), ValueError,
     r"T_0 must be an int >= 1, got 0"),
    (lambda: optim.CosineAnnealingWarmRestarts(_sgd(), T_0=2.0), TypeError,
     r"T_0 must be an int, got 2\.0 \(float\)"),
    (lambda: optim.CosineAnnealingWarmRestarts(_sgd(), 2, T_mult=0), ValueError,
     r"T_mult must be an int >= 1, got 0"),
    (lambda: optim.CosineAnnealingWarmRestarts(_sgd(), 2, eta_min=-0.1), ValueError,
     r"eta_min must be >= 0\.0, got -0\.1"),
    (lambda: optim.CosineAnnealingWarmRestarts(_sgd(), 2).step(-0.5), ValueError,
     r"CosineAnnealingWarmRestarts.step: epoch must be a finite number >= 0 \(or None for "
     r"the next step\), got -0\.5 \(float\)"),
    (lambda: optim.CosineAnnealingWarmRestarts(_sgd(), 2).step(math.inf), ValueError,
     r"epoch must be a finite number >= 0 .* got inf"),
    (lambda: optim.CosineAnnealingWarmRestarts(_sgd(), 2).step("3"), TypeError,
     r"epoch must be a finite number >= 0 .* got '3' \(str\)"),
    (lambda: optim.CosineAnnealingWarmRestarts(_sgd(), 2).step(True), TypeError,
     r"epoch must be a finite number >= 0 .* got True \(bool\)"),
    (lambda: optim.CyclicLR(_sgd(2), 0.01, [0.1]), ValueError,
     r"max_lr has 1 values for 2 parameter groups"),
    (lambda: optim.CyclicLR(_sgd(), -0.01, 0.1), ValueError, r"base_lr must be >= 0\.0"),
    (lambda: optim.CyclicLR(_sgd(), 0.01, 0.1, mode="triangle"), ValueError,
     r"mode must be 'triangular' or 'triangular2' or 'exp_range', got 'triangle'"),
    (lambda: optim.CyclicLR(_sgd(), 0.01, 0.1, scale_fn=abs, scale_mode="iteration"),
     ValueError, r"scale_mode must be 'cycle' or 'iterations', got 'iteration'"),
    (lambda: optim.CyclicLR(_sgd(), 0.01, 0.1, step_size_up=0), ValueError,
     r"step_size_up must be > 0\.0 and < inf, got 0"),
    (lambda: optim.CyclicLR(_sgd(), 0.01, 0.1, step_size_down=-1), ValueError,
     r"step_size_down must be >= 0\.0 and < inf, got -1"),
    (lambda: optim.CyclicLR(_sgd(), 0.01, 0.1, scale_fn=2.0), TypeError,
     r"CyclicLR: scale_fn must be None or a function of the cycle or step number, got 2\.0"),
    (lambda: optim.CyclicLR(_sgd(), 0.01, 0.1, scale_fn=lambda c: -1.0), ValueError,
     r"CyclicLR: scale_fn returned -1\.0 at step 0; expected a finite number >= 0"),
    (lambda: optim.CyclicLR(_sgd(), 0.01, 0.1, cycle_momentum="yes"), TypeError,
     r"cycle_momentum must be True or False, got 'yes'"),
    (lambda: optim.CyclicLR(optim.Adam([scalar_param()]), 0.01, 0.1, max_momentum=1.0),
     ValueError, r"max_momentum must be >= 0\.0 and < 1, got 1\.0"),
    (lambda: optim.CyclicLR(_sgd(2), 0.01, 0.1, base_momentum=[0.8, -0.1]), ValueError,
     r"base_momentum must be >= 0\.0, got -0\.1"),
    # PyTorch refuses it too: no momentum to cycle
    (lambda: optim.CyclicLR(optim.Optimizer([scalar_param()], {"lr": 0.1}), 0.01, 0.1),
     ValueError, r"cycle_momentum needs an optimizer with 'momentum' or 'betas' \(Optimizer "
                 r"has neither\); pass cycle_momentum=False"),
]


@pytest.mark.parametrize("make,error,match", MORE_SCHED_ERRORS)
def test_more_scheduler_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def _sequential(o):
    return optim.SequentialLR(o, [optim.LinearLR(o, 0.1, total_iters=3),
                                  optim.MultiStepLR(o, [2])], [3])


@pytest.mark.parametrize("make, change, error, match", [
    (lambda o: optim.MultiStepLR(o, [2, 4]), lambda s: s.update(milestones=[2, -4]),
     ValueError, r"MultiStepLR.load_state_dict: milestones must be step numbers >= 0"),
    (lambda o: optim.ExponentialLR(o, 0.9), lambda s: s.update(gamma=None), TypeError,
     r"ExponentialLR.load_state_dict: gamma must be a number, got None"),
    (lambda o: optim.LinearLR(o), lambda s: s.update(total_iters=0), ValueError,
     r"LinearLR.load_state_dict: total_iters must be an int >= 1, got 0"),
    (lambda o: optim.LambdaLR(o, lambda e: 1.0), lambda s: s.update(lr_lambdas=[{"a": 1}]),
     ValueError, r"lr_lambdas\[0\] holds attributes \['a'\], but lr_lambda of parameter group "
                 r"0 is a function, which keeps none"),
    (lambda o: optim.LambdaLR(o, lambda e: 1.0), lambda s: s.update(lr_lambdas=[None] * 2),
     ValueError, r"lr_lambdas must be a list of 1 entries"),
    (lambda o: optim.LambdaLR(o, lambda e: 1.0), lambda s: s.update(base_lrs=[-1.0]),
     ValueError, r"LambdaLR.load_state_dict: base_lrs must be >= 0\.0, got -1\.0"),
    (_sequential, lambda s: s["_schedulers"][1].update(gamma="x"), TypeError,
     r"SequentialLR.load_state_dict: scheduler 1: MultiStepLR.load_state_dict: gamma must be "
     r"a number"),
    (_sequential, lambda s: s.update(_schedulers=s["_schedulers"][:1]), ValueError,
     r"_schedulers must be a list of 2 scheduler state_dicts"),
    (_sequential, lambda s: s.update(_milestones=[3, 5]), ValueError,
     r"_milestones must hold 1 step number\(s\), one fewer than the schedulers, got \[3, 5\]"),
    (_sequential, lambda s: s["_schedulers"][0].update(extra=1), KeyError,
     r"scheduler 0: .*unexpected keys \['extra'\]"),
    (lambda o: optim.ReduceLROnPlateau(o), lambda s: s.update(mode="median"), ValueError,
     r"ReduceLROnPlateau.load_state_dict: mode must be 'min' or 'max', got 'median'"),
    (lambda o: optim.ReduceLROnPlateau(o), lambda s: s.update(num_bad_epochs=-2), ValueError,
     r"num_bad_epochs must be an int >= 0, got -2"),
    (lambda o: optim.ReduceLROnPlateau(o), lambda s: s.update(best="x"), TypeError,
     r"best must be a number"),
    (lambda o: optim.ReduceLROnPlateau(o), lambda s: s.update(min_lrs=[0, 0], default_min_lr=None),
     ValueError, r"min_lrs must hold 1 learning rate\(s\), one per parameter group"),
    (lambda o: optim.ConstantLR(o), lambda s: s.update(factor=2), ValueError,
     r"ConstantLR.load_state_dict: factor must be >= 0\.0 and <= 1, got 2"),
    (lambda o: optim.PolynomialLR(o), lambda s: s.update(power="x"), TypeError,
     r"PolynomialLR.load_state_dict: power must be a number"),
    (lambda o: optim.PolynomialLR(o), lambda s: s.update(total_iters=0), ValueError,
     r"PolynomialLR.load_state_dict: total_iters must be an int >= 1, got 0"),
    (lambda o: optim.MultiplicativeLR(o, lambda e: 1.0), lambda s: s.update(lr_lambdas=[]),
     ValueError, r"MultiplicativeLR.load_state_dict: lr_lambdas must be a list of 1 entries"),
    (lambda o: optim.CosineAnnealingWarmRestarts(o, 3), lambda s: s.update(_epoch_fraction=1.0),
     ValueError, r"_epoch_fraction must be >= 0\.0 and < 1, got 1\.0"),
    (lambda o: optim.CosineAnnealingWarmRestarts(o, 3), lambda s: s.update(T_mult=0),
     ValueError, r"CosineAnnealingWarmRestarts.load_state_dict: T_mult must be an int >= 1"),
    (lambda o: optim.CyclicLR(o, 0.01, 0.1), lambda s: s.update(step_ratio=0.0), ValueError,
     r"CyclicLR.load_state_dict: step_ratio must be > 0\.0 and <= 1, got 0\.0"),
    (lambda o: optim.CyclicLR(o, 0.01, 0.1), lambda s: s.update(max_lrs=[0.1, 0.2]),
     ValueError, r"max_lrs must be a list of 1 learning rate\(s\), one per parameter group"),
    (lambda o: optim.CyclicLR(o, 0.01, 0.1), lambda s: s.update(base_momentums=0.8),
     ValueError, r"base_momentums must be a list of 1 momentum\(s\), one per parameter group"),
    (lambda o: optim.CyclicLR(o, 0.01, 0.1), lambda s: s.update(scale_mode="iterations"),
     ValueError, r"scale_mode is 'iterations', but mode 'triangular' without a scale_fn "
                 r"scales by 'cycle'"),
    (lambda o: optim.CyclicLR(o, 0.01, 0.1), lambda s: s.update(use_beta1=True), ValueError,
     r"use_beta1 is True, but the optimizer lacks betas"),
    (lambda o: optim.CyclicLR(o, 0.01, 0.1), lambda s: s.update(_scale_fn_custom={"a": 1}),
     ValueError, r"CyclicLR.load_state_dict: _scale_fn_custom holds attributes \['a'\], but "
                 r"scale_fn is None, which keeps none"),
    (lambda o: optim.CyclicLR(o, 0.01, 0.1, scale_fn=HalfLife(2)),
     lambda s: s.update(_scale_fn_custom=[1]), TypeError,
     r"_scale_fn_custom must be None or a dict of attributes, got \[1\]"),
], ids=["multistep-milestones", "exponential-gamma", "linear-total", "lambda-attrs-for-function",
        "lambda-count", "lambda-base-lrs", "sequential-child", "sequential-count",
        "sequential-milestones", "sequential-child-keys", "plateau-mode", "plateau-bad-epochs",
        "plateau-best", "plateau-min-lrs", "constant-factor", "polynomial-power",
        "polynomial-total", "multiplicative-count", "warm-restarts-fraction",
        "warm-restarts-mult", "cyclic-ratio", "cyclic-max-lrs", "cyclic-momenta",
        "cyclic-scale-mode", "cyclic-beta1", "cyclic-attrs-for-none", "cyclic-attrs-type"])
def test_more_scheduler_load_state_dict_refuses_damaged_states(make, change, error, match):
    sched = make(optim.SGD([scalar_param()], lr=0.1))
    sched.step(1.0) if isinstance(sched, optim.ReduceLROnPlateau) else sched.step()
    state = copy.deepcopy(sched.state_dict())
    change(state)
    before = copy.deepcopy(sched.state_dict())
    with pytest.raises(error, match=match):
        sched.load_state_dict(state)
    assert sched.state_dict() == before                 # nothing was changed


# ---- gradient clipping ---------------------------------------------------------------
def test_clip_grad_norm_by_hand():
    a, b = nn.Parameter(np.zeros(2), dtype="float64"), nn.Parameter(np.zeros(1), dtype="float64")
    a.grad, b.grad = tg.tensor([3.0, 0.0], dtype="float64"), tg.tensor([4.0], dtype="float64")
    total = optim.clip_grad_norm_([a, b], max_norm=1.0)
    assert total.item() == pytest.approx(5.0)
    scale = 1.0 / (5.0 + 1e-6)
    assert a.grad.numpy() == pytest.approx([3 * scale, 0.0])
    assert b.grad.numpy() == pytest.approx([4 * scale])
    # under the limit: unchanged
    a.grad = tg.tensor([0.3, 0.4], dtype="float64")
    assert optim.clip_grad_norm_(a, 1.0).item() == pytest.approx(0.5)
    assert a.grad.numpy() == pytest.approx([0.3, 0.4])
    optim.clip_grad_value_([a], 0.35)
    assert a.grad.numpy() == pytest.approx([0.3, 0.35])
    a.grad = tg.tensor([-0.5, 0.2], dtype="float64")   # clamped from below too
    optim.clip_grad_value_([a], 0.35)
    assert a.grad.numpy() == pytest.approx([-0.35, 0.2])


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf, "inf", "Inf", np.inf, 2],
                         ids=["2", "1", "3", "inf", "str-inf", "str-Inf", "np-inf", "int-2"])
def test_clip_grad_norm_matches_torch(norm_type):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    grads = [rng.standard_normal((3, 2)), rng.standard_normal(5)]
    ours = [nn.Parameter(np.zeros(g.shape), dtype="float64") for g in grads]
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, tp, g in zip(ours, theirs, grads):
        p.grad, tp.grad = tg.tensor(g), torch.tensor(g)
    total = optim.clip_grad_norm_(ours, 0.7, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, 0.7, norm_type=norm_type)
    assert total.item() == pytest.approx(ttotal.item(), rel=1e-12)
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("norm_type", [2.0, 3.0, math.inf])
def test_clip_grad_norm_of_float16_gradients_does_not_overflow(norm_type):
    # 300**2 is beyond float16's largest value (65504): summed in float16 the norm
    # would be inf and every gradient scaled to 0.  The norm comes back in float16,
    # as PyTorch's does.
    g = np.array([300.0, 4.0, 1.0])
    p = nn.Parameter(np.zeros(3), dtype="float16")
    p.grad = tg.tensor(g, dtype="float16")
    total = optim.clip_grad_norm_([p], 1.0, norm_type=norm_type)
    expected = np.linalg.norm(g, ord=norm_type)
    assert total.dtype == np.float16 and p.grad.dtype == np.float16
    assert total.item() == pytest.approx(expected, rel=1e-3)
    np.testing.assert_allclose(p.grad.numpy(), g / expected, rtol=2e-3)


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop"])
def test_a_gradient_of_the_wrong_shape_is_refused(name):
    """A hand-assigned gradient that merely broadcasts would update every row alike."""
    p = tg.tensor(np.ones((3, 4)), requires_grad=True)
    opt = getattr(tg.optim, name)([p], lr=0.1)
    p.grad = tg.ones(4, dtype=tg.float64)
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(4,\)"):
        opt.step()
    assert np.array_equal(p.numpy(), np.ones((3, 4)))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"max_momentum": 1.0}, ValueError, r"max_momentum must be >= 0 and < 1, got 1\.0"),
    ({"base_momentum": -0.1}, ValueError, r"base_momentum must be >= 0"),
    ({"max_momentum": "x"}, TypeError, r"max_momentum must be a number"),
])
def test_one_cycle_momenta_follow_the_optimizers_rules(kwargs, error, match):
    """They become Adam's beta1: one it refuses would make the run's checkpoint unloadable."""
    with pytest.raises(error, match=match):
        optim.OneCycleLR(optim.Adam([scalar_param()]), 0.1, total_steps=10, **kwargs)
