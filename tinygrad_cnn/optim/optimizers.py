"""Optimisers (SGD, Adam, AdamW, RMSprop) with PyTorch's update rules, and gradient clipping.

An optimiser holds parameter *groups*: ``param_groups`` is a list of dicts,
each with ``"params"`` (a list of tensors) and its hyper-parameters
(``"lr"``, ``"momentum"``, ...).  Pass a plain iterable of parameters for
one group, or a list of dicts to give groups their own settings.
Schedulers change ``group["lr"]``; ``optimizer.lr`` reads the first group's
learning rate and sets every group's.  Parameters may also come with names,
``model.named_parameters()`` (in every group or in none): a group then keeps
them in ``"param_names"``, its ``state_dict`` saves them, and
``load_state_dict`` refuses a state saved under other names.

``step()`` works on raw arrays (``p.data``, ``p.grad.data``) through the
parameter's array module, so it builds no graph and runs on the
parameter's device; the state (momentum buffers, moment estimates) is
kept next to each parameter, on its device and in its dtype
(``optimizer.state[p]``, as in PyTorch, or ``optimizer.state[id(p)]``, the
key it is stored under; ``copy.deepcopy`` keeps it with the copied
parameters).  Parameters
are updated in place, so anything sharing their arrays (``state_dict()``
tensors) sees the new values, as in PyTorch.  Parameters whose ``grad`` is
None are skipped.

``state_dict()`` is a plain nested dict with string keys and values that are
NumPy arrays, numbers, booleans or lists (no pickling needed)::

    {"state": {"0": {"step": 3, "exp_avg": array, ...}, ...},
     "param_groups": [{"lr": 0.001, "betas": [0.9, 0.999], ..., "params": [0, 1, 2]}]}

where the state keys and ``params`` entries index the parameters in the
order of the groups.

PyTorch's keyword-only options (``maximize``, ``foreach``, ``fused``,
``capturable``, ``differentiable``) are not offered: passing one is a
``TypeError``, and a PyTorch optimiser's ``state_dict``, which holds them, is
refused by ``load_state_dict`` with their names.
"""
from __future__ import annotations

import copy
import math
import numbers

import numpy as np

from .._checks import (
    check_flag as _check_flag, check_int as _check_int, check_number as _check_number)
from ..autograd import enable_grad
from ..backend import DeviceError
from ..ops import Cast, ToDevice
from ..tensor import Tensor, _find_backend_of

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "clip_grad_norm_",
           "clip_grad_value_"]


def _host(value):
    """A state value (array of any backend, number) -> a host copy or Python number."""
    if isinstance(value, np.ndarray):
        return value.copy()
    backend = _find_backend_of(value)
    if backend is not None:
        return backend.to_numpy(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _not_a_model(value, what):
    """A model passed where its parameters belong (``SGD(model)``): a Sequential would
    otherwise be iterated as its layers, and the error would name a layer.  A
    ParameterList is iterated as its parameters, so it is taken, as in PyTorch."""
    from ..nn.module import ParameterList   # not at the top: nn.utils imports this module
    if callable(getattr(value, "parameters", None)) and not isinstance(value, ParameterList):
        raise TypeError(f"{what} is a {type(value).__name__} model; pass its parameters: "
                        f"model.parameters()")


def _split_names(params):
    """(tensors, names or None) of a group's ``params``: ``model.named_parameters()``
    gives (name, tensor) pairs, whose names the group keeps in ``"param_names"``
    (as PyTorch 2.6+ does) and its ``state_dict`` saves."""
    named = [isinstance(p, tuple) and len(p) == 2 and isinstance(p[1], Tensor) for p in params]
    if not any(named):
        return params, None
    if not all(named):
        i = named.index(False)
        raise ValueError(f"parameter {i} of a group is a {type(params[i]).__name__}, not a "
                         f"(name, tensor) pair like the others: give all parameters with "
                         f"names (model.named_parameters()) or none (model.parameters())")
    for i, (name, _) in enumerate(params):
        if not isinstance(name, str):
            raise TypeError(f"parameter {i} of a group is named {name!r}, a "
                            f"{type(name).__name__}; names are strings")
    return [p for _, p in params], [name for name, _ in params]


def _check_saved_names(where, saved, names, n):
    """Saved parameter names, if any, must be n strings and, where this optimiser has
    names too, the same ones: state saved for other parameters of the same shapes
    would otherwise load without a word."""
    if saved is None:
        return
    if (not isinstance(saved, (list, tuple)) or len(saved) != n
            or not all(isinstance(name, str) for name in saved)):
        raise ValueError(f"{where}: 'param_names' of the state_dict must be a list of {n} "
                         f"strings, got {saved!r}")
    for j, (was, now) in enumerate(zip(saved, names or saved)):
        if was != now:
            raise ValueError(f"{where}: parameter {j} was saved as {was!r} but is {now!r} "
                             f"here; the state_dict belongs to other parameters (map the "
                             f"names, or build the optimizer from model.parameters() to "
                             f"load it by position)")


def _moved_hint(p):
    """For a non-leaf made by ``.to()``/``.cuda()``/``.double()``: how to get a leaf there
    (the copy is differentiable, so it is no leaf, as in PyTorch)."""
    if not isinstance(p._ctx, (ToDevice, Cast)):
        return ""
    return (f"; it is a copy made by .to(), .cuda() or a cast: create the tensor on "
            f"{p.device} as {p.dtype} directly (tg.zeros(..., device={p.device!r}, "
            f"dtype={p.dtype.name!r}, requires_grad=True)), or keep parameters in a Module, "
            f"whose .to() moves them in place")


def _check_grad(p):
    """A gradient assigned by hand must fit its parameter: broadcasting it would
    silently apply one row's update to every row."""
    grad = p._grad
    if not isinstance(grad, Tensor):
        raise TypeError(f"optimizer step: a parameter of shape {p.shape} has a .grad of type "
                        f"{type(grad).__name__}; expected a Tensor or None")
    if grad.shape != p.shape:
        raise ValueError(f"optimizer step: a parameter of shape {p.shape} has a gradient of "
                         f"shape {grad.shape}; they must match")
    if grad.device != p.device:
        raise DeviceError(f"optimizer step: a parameter on {p.device} has its gradient on "
                          f"{grad.device}; move them to one device")


def _as_param_array(value, p, name):
    """A saved state array -> an array on ``p``'s device in ``p``'s dtype."""
    if isinstance(value, Tensor):
        value = value.numpy()
    elif not isinstance(value, np.ndarray):
        backend = _find_backend_of(value)
        value = backend.to_numpy(value) if backend is not None else np.asarray(value)
    if value.dtype.kind not in "fiub":
        raise TypeError(f"optimizer state {name!r} has dtype {value.dtype}; expected numbers")
    if value.shape != p.shape:
        raise ValueError(f"optimizer state {name!r} has shape {value.shape} but its parameter "
                         f"has shape {p.shape}")
    return p._backend.asarray(value.astype(p.dtype))


class _ParamState(dict):
    """``optimizer.state``: ``id(param) -> state dict``, also indexed by the parameter
    itself, as PyTorch's ``optimizer.state[p]`` is (to read, write, delete or test;
    a parameter without state is a KeyError, where PyTorch's defaultdict gives {}).

    A plain dict would find the int key ``id(p)`` for the key ``p`` (a tensor
    hashes as its id) and then compare the two with ``==``, which for a tensor
    is elementwise: an error about a tensor's truth value instead of the state.
    """

    @staticmethod
    def _key(key):
        return id(key) if isinstance(key, Tensor) else key

    def __getitem__(self, key):
        try:
            return super().__getitem__(self._key(key))
        except KeyError:
            if isinstance(key, Tensor):
                raise KeyError(f"no state for this parameter of shape {key.shape} (it is not "
                               f"optimized here, or has not been stepped with a gradient "
                               f"yet)") from None
            raise

    def __setitem__(self, key, value):
        super().__setitem__(self._key(key), value)

    def __delitem__(self, key):
        super().__delitem__(self._key(key))

    def __contains__(self, key):
        return super().__contains__(self._key(key))

    def get(self, key, default=None):
        return super().get(self._key(key), default)

    def pop(self, key, *default):
        return super().pop(self._key(key), *default)

    def setdefault(self, key, default=None):
        return super().setdefault(self._key(key), default)


# Settings that learning-rate schedulers keep in a parameter group.
_SCHEDULE_KEYS = frozenset({"initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"})


class Optimizer:
    """Base class: parameter groups, ``zero_grad``, ``step``, ``state_dict``.

    Subclasses define ``defaults``, ``_update(p, grad, state, group)``, which
    changes ``p.data`` in place from the raw gradient array, ``_validate(group)``
    and ``state_keys``, the names of the per-parameter state they keep.
    """

    state_keys = frozenset()

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = _ParamState()  # id(param) -> dict of arrays and numbers
        self._owners = {}  # id(param) -> param: no other tensor takes that id meanwhile
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of tensors (e.g. model.parameters()), "
                            "not a single Tensor; wrap it in a list")
        _not_a_model(params, "params")
        try:
            items = iter(params)
        except TypeError:   # None, a number: not iterable
            raise TypeError(f"params must be an iterable of tensors or of parameter group "
                            f"dicts (e.g. model.parameters()), got {type(params).__name__}") \
                from None
        groups = list(items)   # outside the try: an error inside a generator stays its own
        if not groups:
            raise ValueError("the optimizer got an empty parameter list (did the model "
                             "register its parameters, and was a generator used up?)")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __deepcopy__(self, memo):
        """A copy over copies of the parameters, each with a copy of its state.

        The state is kept by ``id``, and the copied parameters have ids of
        their own: re-keyed here, or the copy's first step would drop every
        state as that of a removed parameter (momentum lost without a word).
        Parameters copied along with it (``copy.deepcopy((model, opt))``) are
        the ones its groups hold.
        """
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = copy.deepcopy(value, memo)
        # _owners maps each old id to its (now copied) parameter.
        new.state = _ParamState((id(new._owners[key]) if key in new._owners else key, state)
                                for key, state in new.state.items())
        new._owners = {id(p): p for p in new._owners.values()}
        return new

    def add_param_group(self, group):
        """Add a dict ``{"params": [...], "lr": ..., ...}``; missing settings take the defaults."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError("a parameter group is a dict with a 'params' entry")
        if "param_names" in group:
            raise TypeError("a parameter group takes its names as (name, tensor) pairs in "
                            "'params' (model.named_parameters()), not a 'param_names' entry")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        params, names = _split_names(params)
        if self.param_groups and ("param_names" in self.param_groups[0]) != (names is not None):
            raise ValueError("all parameter groups must be given with names "
                             "(model.named_parameters()) or all without (model.parameters()); "
                             f"this group is {'with' if names is not None else 'without'}, the "
                             f"first was {'without' if names is not None else 'with'}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                _not_a_model(p, f"parameter {i} of a group")
                raise TypeError(f"parameter {i} of a group is a {type(p).__name__}, not a Tensor")
            if p.dtype.kind != "f":
                raise TypeError(f"parameter {i} (shape {p.shape}) has dtype {p.dtype}; only "
                                f"floating-point tensors can be optimized")
            if not p.is_leaf:
                raise ValueError(f"parameter {i} (shape {p.shape}) is not a leaf tensor (it "
                                 f"was computed from others); optimize the leaves "
                                 f"instead{_moved_hint(p)}")
            if id(p) in seen:
                raise ValueError(f"parameter {i} (shape {p.shape}) appears in more than one "
                                 f"place in the parameter groups")
            seen.add(id(p))
        unknown = set(group) - set(self.defaults) - {"params"} - _SCHEDULE_KEYS
        if unknown:
            raise TypeError(f"unknown setting(s) {sorted(unknown)} for {type(self).__name__}; "
                            f"expected some of {sorted(self.defaults)}")
        full = dict(self.defaults)
        full.update(group)
        full["params"] = params
        if names is not None:
            full["param_names"] = names
        self._validate(full)
        self.param_groups.append(full)

    def _validate(self, group):
        """Check ``group``'s settings, keeping them as plain Python numbers and bools
        (a 0-d array or tensor becomes the number it holds)."""
        group["lr"] = _check_number("lr", group["lr"])
        for key in _SCHEDULE_KEYS & set(group):
            group[key] = _check_number(key, group[key])

    @property
    def lr(self):
        """The first group's learning rate; setting it sets every group's."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value):
        value = _check_number("lr", value)
        for group in self.param_groups:
            group["lr"] = value

    def _params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none=True):
        """Forget every parameter's gradient (``None``; zeros if ``set_to_none=False``)."""
        set_to_none = _check_flag("set_to_none", set_to_none, "zero_grad")
        for p in self._params():
            if p._grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                with p._backend.context():
                    p.grad = Tensor._make(p.xp.zeros_like(p.data), p._backend)

    def step(self, closure=None):
        """Update every parameter that has a gradient, in place.

        ``closure``, if given, is called first (with gradients enabled) to
        recompute the loss and gradients; its result is returned.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        self._forget_removed()
        for group in self.param_groups:
            for p in group["params"]:
                if p._grad is None:
                    continue
                _check_grad(p)
                with p._backend.context():   # the state lives beside the parameter
                    state = self._state_of(p)
                    self._conform_state(state, p)
                    grad = p._grad.data
                    if grad.dtype != p.dtype:
                        grad = grad.astype(p.dtype)
                    self._update(p, grad, state, group)
        return loss

    def _state_of(self, p):
        """``p``'s state (a new, empty one the first time)."""
        state = self.state.get(id(p))
        if state is None:
            state = self.state[id(p)] = {}
            self._owners[id(p)] = p
        return state

    def _forget_removed(self):
        """Drop the state of tensors taken out of ``param_groups`` since the last step.

        State is keyed by ``id``: kept, it would grow with every parameter ever
        replaced, and a new tensor given a freed one's id would inherit its
        momentum.  (``_owners`` keeps such a tensor alive, so its id stays its
        own, until this runs.)
        """
        # Not skipped when there are no more states than parameters: a parameter
        # without a gradient has none, so a removed one's state would outlive it.
        for key in self.state.keys() - {id(p) for p in self._params()}:
            del self.state[key]
            self._owners.pop(key, None)

    @staticmethod
    def _conform_state(state, p):
        """Follow the parameter after ``model.to(device/dtype)``: move/cast its state."""
        for k, v in state.items():
            if isinstance(v, numbers.Number):
                continue
            if not p._backend.is_array(v):
                src = _find_backend_of(v)
                v = p._backend.asarray(src.to_numpy(v) if src is not None else np.asarray(v))
            if v.dtype != p.dtype:
                v = v.astype(p.dtype)
            state[k] = v

    @staticmethod
    def _apply(p, delta, decay=None):
        """``p.data -= delta`` in place (on a copy of its own if ``p`` is a read-only view).

        ``decay``, if given, first scales ``p.data`` in place (AdamW's decoupled
        weight decay), after the copy like the step itself.
        """
        p._own_writeable_data()
        if decay is not None:
            p.data *= decay
        p.data -= delta
        p._bump_version()  # a graph that used the old values can no longer backward

    def _update(self, p, grad, state, group):
        raise NotImplementedError

    # ---- state ---------------------------------------------------------------------
    def state_dict(self):
        """A plain dict of host arrays and numbers (see the module docstring)."""
        index = {id(p): i for i, p in enumerate(self._params())}
        groups = []
        for group in self.param_groups:
            g = {k: (list(v) if isinstance(v, (tuple, list)) else v)
                 for k, v in group.items() if k != "params"}
            g["params"] = [index[id(p)] for p in group["params"]]
            groups.append(g)
        state = {str(index[pid]): {k: _host(v) for k, v in s.items()}
                 for pid, s in self.state.items() if pid in index and s}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and state saved by :meth:`state_dict`.

        The optimiser must have been built over the same parameters (same
        groups, counts and shapes); arrays are copied to each parameter's
        device and dtype.  Every loaded group passes the checks the
        constructor applies (an lr of -5 or betas of (2, 3) are refused), and
        unknown settings or state names are refused too; the error, a
        ``ValueError`` or ``TypeError``, names the entry.  Nothing changes
        unless the whole state_dict loads.
        """
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError("not an optimizer state_dict: expected a dict with 'state' and "
                             "'param_groups'")
        groups, state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(groups, (list, tuple)) or not isinstance(state, dict):
            raise TypeError(f"not an optimizer state_dict: expected 'param_groups' to be a list "
                            f"and 'state' a dict, got a {type(groups).__name__} and a "
                            f"{type(state).__name__}")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"the state_dict has {len(groups)} parameter group(s), this "
                             f"optimizer has {len(self.param_groups)}")
        loaded_groups = [self._loaded_group(i, saved, group)
                         for i, (saved, group) in enumerate(zip(groups, self.param_groups))]
        params = self._params()
        new_state, owners = {}, {}
        for key, saved in state.items():
            p, entry = self._loaded_state(key, saved, params)
            new_state[id(p)], owners[id(p)] = entry, p
        for group, loaded in zip(self.param_groups, loaded_groups):
            group.update(loaded)
        self.state, self._owners = _ParamState(new_state), owners

    def _loaded_group(self, i, saved, group):
        """Saved group ``i`` as this optimiser's settings, checked; ``group`` is unchanged."""
        where = f"param_groups[{i}]"
        if not isinstance(saved, dict):
            raise TypeError(f"{where} of the state_dict must be a dict, got {saved!r}")
        if "params" not in saved:
            raise ValueError(f"{where} of the state_dict has no 'params' entry")
        n = len(saved["params"]) if isinstance(saved["params"], (list, tuple)) else None
        if n != len(group["params"]):
            raise ValueError(f"parameter group {i}: the state_dict has {n} parameter(s), this "
                             f"optimizer has {len(group['params'])}")
        unknown = set(saved) - set(self.defaults) - {"params", "param_names"} - _SCHEDULE_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown setting(s) {sorted(unknown)} for "
                             f"{type(self).__name__}; expected some of {sorted(self.defaults)}")
        _check_saved_names(where, saved.get("param_names"), group.get("param_names"), n)
        # _validate keeps every setting as the plain Python value its check returns (a
        # NumPy scalar or 0-d array read from a file included): no conversion here.
        # The names stay this optimiser's: they describe its parameters.
        loaded = dict(group)
        loaded.update((k, v) for k, v in saved.items() if k not in ("params", "param_names"))
        try:
            self._validate(loaded)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{where}: {e}") from None
        del loaded["params"]
        return loaded

    def _loaded_state(self, key, saved, params):
        """One saved per-parameter state -> (parameter, state on its device), checked."""
        try:
            i = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"the state_dict's state key {key!r} is not a parameter "
                             f"index") from None
        if not 0 <= i < len(params):
            raise ValueError(f"the state_dict has state for parameter {i}, but this "
                             f"optimizer has {len(params)} parameters")
        if not isinstance(saved, dict):
            raise TypeError(f"the state_dict's state of parameter {i} must be a dict, got "
                            f"{saved!r}")
        unknown = set(saved) - self.state_keys
        if unknown:
            raise ValueError(f"the state_dict's state of parameter {i} has unknown entries "
                             f"{sorted(unknown)} for {type(self).__name__}; expected some of "
                             f"{sorted(self.state_keys)}")
        p = params[i]
        entry = {}
        for name, value in saved.items():
            if name == "step":
                # A count, kept on the host; PyTorch's Adam saves it as a float tensor.
                entry[name] = _check_int(f"state {i}.step", _host(value), low=0,
                                         whole_floats=True)
            else:
                entry[name] = _as_param_array(value, p, f"{i}.{name}")
        if entry and "step" in self.state_keys and "step" not in entry:
            # The update reads the count with the arrays (Adam's bias correction).
            raise ValueError(f"the state_dict's state of parameter {i} has {sorted(entry)} "
                             f"but no 'step', which {type(self).__name__} keeps with them")
        return p, entry

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(group):
                if k != "params":
                    lines.append(f"    {k}: {group[k]}")
        return "\n".join(lines) + "\n)"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (PyTorch's rule).

    For each parameter p with gradient g::

        g = g + weight_decay * p
        if momentum:
            buf = g                                     (first step)
            buf = momentum * buf + (1 - dampening) * g  (later steps)
            g = g + momentum * buf  if nesterov else  buf
        p = p - lr * g
    """

    state_keys = frozenset({"momentum_buffer"})

    # PyTorch's order and defaults: SGD(params, 0.1, 0.9, 0, 1e-4) is a weight decay there.
    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _validate(self, group):
        super()._validate(group)
        group["momentum"] = _check_number("momentum", group["momentum"])
        group["dampening"] = _check_number("dampening", group["dampening"], low=-math.inf)
        if isinstance(group["weight_decay"], (bool, np.bool_)):
            # A flag in weight_decay's place: nesterov, given by position in an order
            # that put it before weight_decay.
            raise TypeError(f"SGD: weight_decay must be a number, got "
                            f"{group['weight_decay']!r}; the order is PyTorch's, "
                            f"SGD(params, lr, momentum, dampening, weight_decay, nesterov): "
                            f"pass nesterov by keyword")
        group["weight_decay"] = _check_number("weight_decay", group["weight_decay"])
        group["nesterov"] = _check_flag("nesterov", group["nesterov"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening = 0")

    def _update(self, p, grad, state, group):
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        if wd:
            grad = grad + wd * p.data
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                # xp.array, not grad.copy(): NumPy arithmetic on 0-d arrays gives
                # scalars, and the buffer must be an array to be updated in place.
                buf = state["momentum_buffer"] = p.xp.array(grad, dtype=p.dtype)
            else:
                buf *= momentum
                buf += (1 - group["dampening"]) * grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        self._apply(p, lr * grad)


class Adam(Optimizer):
    """Adam (Kingma & Ba), PyTorch's rule, with optional AMSGrad.

    For each parameter p with gradient g, at step t = 1, 2, ...::

        g = g + weight_decay * p                  (L2 penalty; AdamW decouples it)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g^2
        v_hat = max(v_hat, v)  if amsgrad  else  v
        p = p - lr / (1 - beta1^t) * m / (sqrt(v_hat) / sqrt(1 - beta2^t) + eps)
    """

    decoupled = False
    state_keys = frozenset({"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"})

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad))

    def _validate(self, group):
        super()._validate(group)
        betas = group["betas"]
        # Any pair of numbers, as in PyTorch: a tuple, a list, an array or a tensor.
        try:
            pair = None if isinstance(betas, (str, bytes)) else tuple(betas)
        except TypeError:
            pair = None
        if pair is None:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        if len(pair) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        group["betas"] = tuple(_check_number(f"betas[{i}]", b, high=1.0, open_high=True)
                               for i, b in enumerate(pair))
        group["eps"] = _check_number("eps", group["eps"])
        group["weight_decay"] = _check_number("weight_decay", group["weight_decay"])
        group["amsgrad"] = _check_flag("amsgrad", group["amsgrad"])

    def _update(self, p, grad, state, group):
        xp = p.xp
        lr, (beta1, beta2) = group["lr"], group["betas"]
        eps, wd = group["eps"], group["weight_decay"]
        if "exp_avg" not in state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] = step = state["step"] + 1
        if wd and not self.decoupled:
            grad = grad + wd * p.data
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * grad * grad
        if group["amsgrad"]:
            v = xp.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        step_size = lr / (1 - beta1 ** step)
        denom = xp.sqrt(v) / math.sqrt(1 - beta2 ** step) + eps
        # AdamW shrinks the weights directly, p * (1 - lr * wd), before the step
        # (the step does not depend on p, so computing it first changes nothing).
        decay = 1 - lr * wd if wd and self.decoupled else None
        self._apply(p, step_size * m / denom, decay)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): first
    ``p = p * (1 - lr * weight_decay)``, then the Adam step without an L2 term."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


class RMSprop(Optimizer):
    """RMSprop (Hinton), PyTorch's rule, with optional momentum and centering.

    For each parameter p with gradient g::

        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g^2
        if centered:
            m = lerp(m, g, 1 - alpha)                 (m + (1 - alpha) * (g - m))
            avg = sqrt(v - m^2) + eps
        else:
            avg = sqrt(v) + eps
        if momentum > 0:
            buf = momentum * buf + g / avg
            p = p - lr * buf
        else:
            p = p - lr * g / avg

    ``eps`` is added after the square root, outside it, in both cases (as in
    PyTorch; Keras and TensorFlow add it inside).  The state is ``step``,
    ``square_avg`` (v), ``grad_avg`` (m, when centered) and
    ``momentum_buffer`` (buf, when momentum > 0), each made, as zeros, the
    first time a step needs it: a momentum switched on later (by
    ``OneCycleLR``'s ``cycle_momentum``, say) starts from a zero buffer.
    """

    state_keys = frozenset({"step", "square_avg", "grad_avg", "momentum_buffer"})

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    def _validate(self, group):
        super()._validate(group)
        # PyTorch's bounds: each of these >= 0, alpha included (alpha > 1 is accepted
        # there too, and here).
        for key in ("alpha", "eps", "weight_decay", "momentum"):
            group[key] = _check_number(key, group[key])
        group["centered"] = _check_flag("centered", group["centered"])

    def _update(self, p, grad, state, group):
        xp = p.xp
        lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
        momentum, wd = group["momentum"], group["weight_decay"]
        if "square_avg" not in state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p.data)
        if group["centered"] and "grad_avg" not in state:
            state["grad_avg"] = xp.zeros_like(p.data)
        if momentum > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = xp.zeros_like(p.data)
        state["step"] += 1
        if wd:
            grad = grad + wd * p.data
        v = state["square_avg"]
        v *= alpha
        v += (1 - alpha) * grad * grad
        if group["centered"]:
            m = state["grad_avg"]
            # torch.lerp's two formulas (the second for weights >= 0.5), so that the
            # average rounds as PyTorch's does.
            weight = 1 - alpha
            if weight < 0.5:
                m += weight * (grad - m)
            else:
                m[...] = grad - (grad - m) * (1 - weight)
            avg = xp.sqrt(v - m * m) + eps
        else:
            avg = xp.sqrt(v) + eps
        if momentum > 0:
            buf = state["momentum_buffer"]
            buf *= momentum
            buf += grad / avg
            self._apply(p, lr * buf)
        else:
            self._apply(p, lr * grad / avg)


# ---- gradient clipping ----------------------------------------------------------------
def _tensor_list(params, op):
    """``params`` of ``op`` (one Tensor, or an iterable of them such as
    ``model.parameters()``) as a list of Tensors; anything else is named."""
    if isinstance(params, Tensor):
        return [params]
    _not_a_model(params, f"{op}: params")
    try:
        items = iter(params)
    except TypeError:   # None, a number: not iterable
        raise TypeError(f"{op}: params must be a Tensor or an iterable of tensors (e.g. "
                        f"model.parameters()), got {type(params).__name__}") from None
    params = list(items)   # outside the try: an error inside a generator stays its own
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{op}: parameter {i} is a {type(p).__name__}, not a Tensor")
    return params


def _with_grads(params, op):
    # ._grad, not .grad: reading that warns for a tensor that is not a leaf.
    return [p for p in _tensor_list(params, op) if p._grad is not None]


def _norm_order(norm_type):
    """``norm_type`` of clip_grad_norm_ as a float > 0 (inf included).  A string is read
    as a number, as PyTorch reads it (``'inf'``); 'fro' is not one."""
    value = norm_type
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            hint = ("; the Frobenius norm of the gradients taken as one vector is their "
                    "2-norm: pass 2.0" if value.strip().lower() == "fro" else "")
            raise ValueError(f"norm_type must be a positive number, inf or 'inf', got "
                             f"{norm_type!r}{hint}") from None
    value = _check_number("norm_type", value, low=0, open_low=True)
    return float(value)


def clip_grad_norm_(params, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Rescale gradients so that their joint norm is at most ``max_norm``.

    The total norm is the ``norm_type``-norm of all gradients taken as one
    vector (``inf``, ``float('inf')`` or the string ``'inf'`` as in PyTorch:
    the largest absolute entry).  Every gradient is multiplied by
    ``min(1, max_norm / (total + 1e-6))``, computed on the device (no host
    synchronisation).  Returns the total norm before clipping, as a 0-d
    Tensor.
    """
    max_norm = _check_number("max_norm", max_norm)
    norm_type = _norm_order(norm_type)
    error_if_nonfinite = _check_flag("clip_grad_norm_: error_if_nonfinite", error_if_nonfinite)
    params = _with_grads(params, "clip_grad_norm_")
    if not params:
        return Tensor(0.0)
    backend = params[0]._grad._backend
    for p in params:
        if p._grad._backend is not backend:
            raise DeviceError(f"clip_grad_norm_: gradients are on different devices "
                              f"({backend.device} and {p._grad.device})")
    with backend.context():
        return _clip_grad_norm(params, max_norm, norm_type, error_if_nonfinite, backend)


def _clip_grad_norm(params, max_norm, norm_type, error_if_nonfinite, backend):
    xp = backend.xp
    grads = [p._grad.data for p in params]
    dtype = np.result_type(*[g.dtype for g in grads])
    # float16 cannot hold the square of a gradient entry above 256 (its largest value
    # is 65504): summed in float16 the norm would be inf and every gradient scaled to
    # 0.  The norm and the scale are computed in float32 at least; the norm is
    # returned in the gradients' dtype, as PyTorch's is.
    acc = np.promote_types(dtype, np.float32)
    if math.isinf(norm_type):
        total = xp.max(xp.stack([xp.max(xp.abs(g)) for g in grads])).astype(acc)
    else:
        powered = xp.stack([xp.sum(xp.abs(g).astype(acc) ** norm_type) for g in grads])
        total = xp.sum(powered) ** (1.0 / norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"the total norm of order {norm_type} of the gradients is "
                           f"{float(total)}; gradients cannot be clipped")
    scale = xp.minimum(max_norm / (total + 1e-6), 1.0)
    for p in params:
        grad = p._grad
        p.grad = Tensor._make((grad.data * scale).astype(grad.dtype, copy=False), grad._backend)
    return Tensor._make(xp.asarray(total).astype(dtype, copy=False), backend)


def clip_grad_value_(params, clip_value):
    """Clamp every gradient entry to ``[-clip_value, clip_value]``."""
    clip_value = _check_number("clip_value", clip_value)
    for p in _with_grads(params, "clip_grad_value_"):
        grad = p._grad
        with grad._backend.context():
            p.grad = Tensor._make(p.xp.clip(grad.data, -clip_value, clip_value), grad._backend)
