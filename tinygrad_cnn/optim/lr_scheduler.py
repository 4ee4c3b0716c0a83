"""Learning-rate schedulers (PyTorch's formulas).

A scheduler writes ``group["lr"]`` of every parameter group of its
optimiser.  Building one sets the lr for step 0; call ``scheduler.step()``
once per epoch (StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR, ...)
or once per batch (OneCycleLR, CyclicLR), after ``optimizer.step()``;
``ReduceLROnPlateau.step(metric)`` once per validation.  The lr is computed
in closed form from the number of steps taken (PyTorch's own
``_get_closed_form_lr``; its chained forms give the same numbers, to
rounding, when nothing else changes the lr), so these schedulers do not
compose ("chain") with each other or with hand-made changes to
``group["lr"]``: the next step overwrites them.  ``SequentialLR`` runs
several one after the other, as PyTorch's does.  Two read the lr the groups
hold instead: ``ReduceLROnPlateau``, which has no closed form, and
``MultiplicativeLR``, which PyTorch defines as a running product.

PyTorch's ``ChainedScheduler`` is not offered.  It steps each of its
schedulers in turn on the same lr, so its result rests on each one's
chained form (a ratio applied to the lr the one before left) or, for
LambdaLR, CosineAnnealingWarmRestarts, CyclicLR and OneCycleLR, on the last
of those overwriting what came before.  Here, MultiplicativeLR and
ReduceLROnPlateau aside, the schedules have no chained form: chaining them
would need a second, multiplicative form of each, kept in step with the
first.  The product of factors it would give for the multiplicative kinds
is what a ``LambdaLR`` whose function multiplies those factors gives.

``state_dict()`` is a plain dict of numbers, strings and lists (and
``ReduceLROnPlateau``'s ``inf`` for "no best value yet").
"""
from __future__ import annotations

import bisect
import copy
import functools
import math
import types

import numpy as np

from .._checks import (
    as_scalar, check_flag, check_int, check_number, int_list, is_real, shown_value)
from .optimizers import Optimizer

__all__ = ["LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR", "LinearLR", "ConstantLR",
           "PolynomialLR", "LambdaLR", "MultiplicativeLR", "CosineAnnealingLR",
           "CosineAnnealingWarmRestarts", "OneCycleLR", "CyclicLR", "SequentialLR",
           "ReduceLROnPlateau"]


def _choice(name, value, choices):
    """``value`` is one of the strings ``choices``; returns it."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be " + " or ".join(repr(c) for c in choices)
                         + f", got {value!r}")
    return value


def _step_numbers(name, values):
    """A collection of step numbers -> a sorted list of Python ints >= 0."""
    steps = int_list(values)
    if steps is None:
        raise TypeError(f"{name} must be a list of ints (step numbers), got "
                        f"{shown_value(values)}")
    for step in steps:
        if step < 0:
            raise ValueError(f"{name} must be step numbers >= 0, got {step} in {steps}")
    return sorted(steps)


def _anneal_strategy(value):
    if value not in ("cos", "linear"):
        raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {value!r}")
    return value


def _group_settings(optimizer):
    """What building a schedule may write into each of the optimiser's groups: its lr
    and momentum (or Adam's betas)."""
    return [(g["lr"], g.get("momentum"), g.get("betas")) for g in optimizer.param_groups]


def _check_optimizer(name, optimizer):
    """The scheduler ``name`` is given an Optimizer; returns it."""
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{name} needs an Optimizer, got {type(optimizer).__name__}")
    return optimizer


def _per_group(name, value, n, **bounds):
    """One number, or a list or tuple of ``n`` (one per parameter group) -> a list of ``n``
    numbers, each passing ``check_number(name, ..., **bounds)``."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} values for {n} parameter groups")
    return [check_number(name, v, **bounds) for v in values]


# ---- momentum cycled against the lr (OneCycleLR, CyclicLR) -------------------------
def _uses_beta1(optimizer, cycle_momentum):
    """Whether the cycled momentum is Adam's beta1 (else SGD's or RMSprop's momentum);
    refuses, when cycling, an optimizer that has neither."""
    if cycle_momentum and not {"momentum", "betas"} & set(optimizer.defaults):
        raise ValueError(f"cycle_momentum needs an optimizer with 'momentum' or 'betas' "
                         f"({type(optimizer).__name__} has neither); pass "
                         f"cycle_momentum=False")
    return "betas" in optimizer.defaults


def _momentum_bounds(optimizer):
    """The momenta become the optimiser's momentum or beta1: hold them to its rules
    (beta1 < 1), or a checkpoint of the run could not be loaded again."""
    return {"high": 1, "open_high": True} if "betas" in optimizer.defaults else {}


def _check_use_beta1(value, optimizer):
    """A loaded ``use_beta1`` agrees with the optimiser; returns it as a bool."""
    value = check_flag("use_beta1", value)
    if value != ("betas" in optimizer.defaults):
        raise ValueError(f"use_beta1 is {value!r}, but the optimizer "
                         f"{'has' if not value else 'lacks'} betas")
    return value


def _set_momentum(group, value, use_beta1):
    if use_beta1:
        group["betas"] = (value,) + tuple(group["betas"][1:])
    else:
        group["momentum"] = value


class LRScheduler:
    """Base class: ``step()``, ``get_last_lr()``, ``state_dict()``; subclasses define ``get_lr()``.

    ``base_lrs`` are the groups' learning rates when the schedule started
    (kept in ``group["initial_lr"]``); ``last_epoch`` counts ``step()`` calls
    (0 after construction).  Built with ``last_epoch=k`` (after loading the
    optimiser's state), a schedule steps once, to step k + 1, and its lr is
    that of step k + 1 of an uninterrupted run (PyTorch's chained schedulers,
    CosineAnnealingLR, ExponentialLR, MultiStepLR and LinearLR among them, keep
    the optimiser's saved lr for that step instead).  ``load_state_dict`` is
    the way to resume that gives PyTorch's numbers exactly, whether the
    optimiser's state was loaded before the schedule was built or after:
    building a schedule sets the lr of its step 0 in the optimiser's groups
    (and the momentum, for the schedules that cycle it), and loading puts
    the loaded step's there instead, if the groups still hold what building
    set, or the schedule's last step (an lr loaded or set by hand since is
    kept).  (PyTorch's leaves the
    lr its constructor set, which for OneCycleLR, CyclicLR and LinearLR is
    not the loaded one.)
    """

    # The lists of per-group learning rates the state holds (checked on loading).
    _lr_lists = ("base_lrs", "_last_lr")

    def __init__(self, optimizer, last_epoch=-1):
        self.optimizer = _check_optimizer(type(self).__name__, optimizer)
        # -1: a new schedule; k >= 0: resuming after k steps
        last_epoch = check_int(f"{type(self).__name__}: last_epoch", last_epoch, low=-1)
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        elif any("initial_lr" not in g for g in optimizer.param_groups):
            raise KeyError("resuming a schedule (last_epoch != -1) needs 'initial_lr' in every "
                           "parameter group: load the optimizer's state_dict first")
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self):
        raise NotImplementedError

    def step(self):
        """Advance one step and write the new learning rates into the optimiser."""
        self.last_epoch += 1
        try:
            lrs = [float(lr) for lr in self.get_lr()]
        except BaseException:
            self.last_epoch -= 1   # nothing changed: the step can be retried or saved
            raise
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs
        self._written = _group_settings(self.optimizer)   # for load_state_dict (not saved)

    def get_last_lr(self):
        """The learning rates (one per group) that the last ``step`` set."""
        return list(self._last_lr)

    def state_dict(self):
        """Everything but the optimiser, as numbers, strings and lists."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in self.__dict__.items() if k not in ("optimizer", "_written")}

    def load_state_dict(self, state_dict):
        """Restore what :meth:`state_dict` gave: the same keys, no others; then set the
        optimiser's groups to the loaded step's lr (and momentum, where it cycles)
        if they still hold what this schedule last set there.

        The loaded settings pass the checks the constructor applies (a
        ``T_max`` of 0 is refused here, not met as a division by zero at the
        next step); the error names the setting.  Nothing changes unless the
        whole state loads.
        """
        self._load_state(state_dict)
        self._restore_groups()

    def _load_state(self, state_dict):
        """:meth:`load_state_dict` without touching the optimiser's groups."""
        name = type(self).__name__
        if not isinstance(state_dict, dict):
            raise TypeError(f"{name}.load_state_dict: expected a dict, got "
                            f"{type(state_dict).__name__}")
        expected = set(self.state_dict())
        unknown, missing = set(state_dict) - expected, expected - set(state_dict)
        if unknown or missing:
            raise KeyError(f"{name}.load_state_dict: "
                           + "; ".join(f"{what} keys {sorted(keys)}" for what, keys in
                                       (("unexpected", unknown), ("missing", missing)) if keys))
        loaded = copy.copy(self)   # shares the optimiser; the checks only read it
        loaded.__dict__.update(state_dict)
        try:
            loaded._check_state()
        except (TypeError, ValueError) as e:
            raise type(e)(f"{name}.load_state_dict: {e}") from None
        self.__dict__.update(loaded.__dict__)

    def _restore_groups(self):
        """After loading: the loaded step's values in the optimiser's groups, in place
        of those this schedule wrote there last (building it writes step 0's,
        over an optimiser state loaded first).  Groups that no longer hold those
        (an optimiser state loaded since, or an lr set by hand) are left alone."""
        if _group_settings(self.optimizer) == self._written:
            self._set_groups()

    def _set_groups(self):
        """Write the current step's lr (and, in subclasses that cycle it, momentum)
        into the optimiser's groups."""
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def _check_state(self):
        """Raise TypeError or ValueError unless the schedule's state is usable, and keep
        each setting as the plain Python value its check returns (as an optimiser's
        ``_validate`` does: a 0-d array or tensor becomes its number).

        Subclasses extend it with their settings, through the checks their
        constructors apply to the same arguments: in :meth:`_check_settings`, which
        it calls last, where the constructor runs the same checks.
        """
        # -1: not started yet, as a SequentialLR's later schedulers are until their
        # milestone
        self.last_epoch = check_int("last_epoch", self.last_epoch, low=-1)
        for key in self._lr_lists:
            setattr(self, key, self._per_group_state(key, "learning rate"))
        self._check_settings()

    def _check_settings(self):
        """Check the schedule's own settings (none here): for a subclass whose
        constructor and ``load_state_dict`` check them alike."""

    def _per_group_state(self, key, what, **bounds):
        """The attribute ``key``, checked: a list of one ``what`` per parameter group,
        each passing ``check_number(key, ..., **bounds)``."""
        n = len(self.optimizer.param_groups)
        values = getattr(self, key)
        if isinstance(values, np.ndarray) and values.ndim == 1:   # a list, saved as one
            values = list(values)
        if not isinstance(values, list) or len(values) != n:
            raise ValueError(f"{key} must be a list of {n} {what}(s), one per parameter "
                             f"group, got {values!r}")
        return [check_number(key, v, **bounds) for v in values]

    def __repr__(self):
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, lr={self.get_last_lr()})"


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size): times ``gamma`` every ``step_size`` steps."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = check_int("step_size", step_size, low=1)
        self.gamma = check_number("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _check_state(self):
        super()._check_state()
        self.step_size = check_int("step_size", self.step_size, low=1)
        self.gamma = check_number("gamma", self.gamma)

    def get_lr(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """lr = base_lr * gamma ** (the number of milestones <= epoch): times ``gamma`` at
    each milestone.

    A milestone listed n times multiplies by ``gamma ** n`` there, as in
    PyTorch (whose Counter of milestones is a sorted list here).
    """

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones = _step_numbers("milestones", milestones)
        self.gamma = check_number("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _check_state(self):
        super()._check_state()
        self.milestones = _step_numbers("milestones", self.milestones)
        self.gamma = check_number("gamma", self.gamma)

    def get_lr(self):
        passed = bisect.bisect_right(self.milestones, self.last_epoch)
        return [base * self.gamma ** passed for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    """lr = base_lr * gamma ** epoch: times ``gamma`` every step."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = check_number("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _check_state(self):
        super()._check_state()
        self.gamma = check_number("gamma", self.gamma)

    def get_lr(self):
        return [base * self.gamma ** self.last_epoch for base in self.base_lrs]


class LinearLR(LRScheduler):
    """lr = base_lr * factor, the factor going in a straight line from ``start_factor``
    (step 0) to ``end_factor`` (step ``total_iters`` and after).

    The usual warm-up: ``LinearLR(opt, start_factor=0.01, total_iters=k)``,
    followed by another schedule through :class:`SequentialLR`.
    ``total_iters`` must be at least 1 (PyTorch's closed form divides by it;
    for a constant factor use :class:`ConstantLR`).
    """

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5,
                 last_epoch=-1):
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        self._check_settings()
        super().__init__(optimizer, last_epoch)

    def _check_settings(self):
        # PyTorch's bounds: 0 < start_factor <= 1, 0 <= end_factor <= 1.
        self.start_factor = check_number("start_factor", self.start_factor, low=0,
                                         open_low=True, high=1)
        self.end_factor = check_number("end_factor", self.end_factor, low=0, high=1)
        self.total_iters = check_int("total_iters", self.total_iters, low=1)

    def get_lr(self):
        # PyTorch's order of operations, for the same rounding.
        factor = self.start_factor + (self.end_factor - self.start_factor) \
            * min(self.total_iters, self.last_epoch) / self.total_iters
        return [base * factor for base in self.base_lrs]


class ConstantLR(LRScheduler):
    """lr = base_lr * factor for the first ``total_iters`` steps, then base_lr.

    PyTorch's bounds, 0 <= factor <= 1; ``total_iters`` must be at least 1.
    A ``factor`` of 0 (no updates until step ``total_iters``) works here;
    PyTorch's chained step divides by it there.
    """

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        self.factor = factor
        self.total_iters = total_iters
        self._check_settings()
        super().__init__(optimizer, last_epoch)

    def _check_settings(self):
        self.factor = check_number("factor", self.factor, high=1)
        self.total_iters = check_int("total_iters", self.total_iters, low=1)

    def get_lr(self):
        factor = self.factor if self.last_epoch < self.total_iters else 1.0
        return [base * factor for base in self.base_lrs]


class PolynomialLR(LRScheduler):
    """lr = base_lr * (1 - min(epoch, total_iters) / total_iters) ** power: from base_lr
    down to 0 at step ``total_iters`` (a straight line for ``power`` 1), then 0.

    ``total_iters`` must be at least 1 and ``power`` at least 0.
    """

    def __init__(self, optimizer, total_iters=5, power=1.0, last_epoch=-1):
        self.total_iters = total_iters
        self.power = power
        self._check_settings()
        super().__init__(optimizer, last_epoch)

    def _check_settings(self):
        self.total_iters = check_int("total_iters", self.total_iters, low=1)
        self.power = check_number("power", self.power)

    def get_lr(self):
        # PyTorch's closed form, in its order of operations
        factor = (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters) ** self.power
        return [base * factor for base in self.base_lrs]


# Callables whose attributes are not state: functions are code, passed again on resuming.
_CODE = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, functools.partial)


def _plain(value):
    """Whether a state_dict (and a checkpoint) can hold ``value`` as it is."""
    if value is None or isinstance(value, (bool, int, float, str, np.generic)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biuf"
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _saved_attributes(fn, where):
    """What a state_dict keeps of the callable ``fn``: None for a function, else its
    attributes (a copy).  ``where`` names it in the error for an attribute a
    state_dict cannot hold."""
    attributes = None if isinstance(fn, _CODE) else getattr(fn, "__dict__", None)
    if attributes is None:
        return None
    for key, value in attributes.items():
        if not _plain(value):
            raise TypeError(f"{where} (a {type(fn).__name__}) has attribute {key!r} = "
                            f"{shown_value(value)}, which a state_dict cannot hold "
                            f"(numbers, strings, bools, None, arrays, and lists and dicts "
                            f"of them); keep it out of the object's attributes")
    return copy.deepcopy(attributes)


def _check_saved_attributes(fn, attributes, saved_name, fn_name):
    """``attributes`` (what :func:`_saved_attributes` gave) can go back into ``fn``."""
    if attributes is None:
        return
    if not isinstance(attributes, dict) or not all(isinstance(k, str) for k in attributes):
        raise TypeError(f"{saved_name} must be None or a dict of attributes, got "
                        f"{attributes!r}")
    if isinstance(fn, _CODE) or not hasattr(fn, "__dict__"):
        what = "None" if fn is None else f"a {type(fn).__name__}"
        raise ValueError(f"{saved_name} holds attributes {sorted(attributes)}, but {fn_name} "
                         f"is {what}, which keeps none")


def _checked_factor(value, where, step):
    """A factor a function returned at ``step``: a finite number >= 0 (the lr is
    multiplied by it)."""
    value = as_scalar(value)
    if not is_real(value):
        raise TypeError(f"{where} {shown_value(value)} at step {step}; expected a number")
    if not (0 <= value < math.inf):
        raise ValueError(f"{where} {value} at step {step}; expected a finite number >= 0 "
                         f"(the lr is multiplied by it)")
    return value


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(epoch): one function for every group, or a list with one
    per group.

    Each function takes the step number (0, 1, ...) and returns a factor, a
    number >= 0.  ``state_dict()`` saves, as PyTorch's does, no function or
    lambda (code, not state: pass them to the constructor again when
    resuming), but it does save the attributes (``__dict__``) of a callable
    object, an instance of a class with ``__call__``, so that one which
    keeps a count resumes where it was.  Those attributes must be numbers,
    strings, bools, None, NumPy arrays, or lists, tuples and dicts of them
    (what a checkpoint holds); ``state_dict()`` refuses other values with a
    ``TypeError`` naming the attribute.
    """

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        name = type(self).__name__
        n = len(_check_optimizer(name, optimizer).param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n:
                raise ValueError(f"{name}: expected {n} lr_lambdas, one per parameter group, "
                                 f"got {len(lr_lambda)}")
            names = [f"lr_lambda[{i}]" for i in range(n)]
            self.lr_lambdas = list(lr_lambda)
        else:
            names = ["lr_lambda"] * n
            self.lr_lambdas = [lr_lambda] * n
        for fn_name, fn in zip(names, self.lr_lambdas):
            if not callable(fn):
                raise TypeError(f"{name}: {fn_name} must be a function of the step number, "
                                f"got {shown_value(fn)}")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * self._factor(i, fn)
                for i, (fn, base) in enumerate(zip(self.lr_lambdas, self.base_lrs))]

    def _factor(self, i, fn):
        return _checked_factor(fn(self.last_epoch), f"{type(self).__name__}: lr_lambda of "
                               f"parameter group {i} returned", self.last_epoch)

    def state_dict(self):
        """As the base class's, with ``lr_lambdas`` saved as None for each function and
        as a dict of attributes for each callable object."""
        state = {k: v for k, v in super().state_dict().items() if k != "lr_lambdas"}
        where = f"{type(self).__name__}.state_dict: lr_lambda of parameter group"
        state["lr_lambdas"] = [_saved_attributes(fn, f"{where} {i}")
                               for i, fn in enumerate(self.lr_lambdas)]
        return state

    def _load_state(self, state_dict):
        # Each saved dict of attributes updates its callable object's.
        saved = None
        if isinstance(state_dict, dict) and "lr_lambdas" in state_dict:
            saved = self._checked_lambdas(state_dict["lr_lambdas"])
            state_dict = dict(state_dict, lr_lambdas=self.lr_lambdas)
        super()._load_state(state_dict)
        for fn, attributes in zip(self.lr_lambdas, saved or ()):
            if attributes is not None:
                fn.__dict__.update(copy.deepcopy(attributes))

    def _checked_lambdas(self, saved):
        n = len(self.lr_lambdas)
        where = f"{type(self).__name__}.load_state_dict: lr_lambdas"
        if not isinstance(saved, (list, tuple)) or len(saved) != n:
            raise ValueError(f"{where} must be a list of {n} entries (None or a dict of "
                             f"attributes), one per parameter group, got {saved!r}")
        for i, (fn, attributes) in enumerate(zip(self.lr_lambdas, saved)):
            _check_saved_attributes(fn, attributes, f"{where}[{i}]",
                                    f"lr_lambda of parameter group {i}")
        return list(saved)


class MultiplicativeLR(LambdaLR):
    """lr = lr * lr_lambda(epoch) at each step from step 1 on (step 0 keeps the lr).

    PyTorch's, which, unlike the closed-form schedules here, is chained: it
    multiplies whatever lr each group holds, so the factors compound (a
    constant 0.95 is ``ExponentialLR(opt, 0.95)``) and a change made by hand to
    ``group["lr"]`` carries on.  The lr lives in the optimiser, so resume by
    loading the optimiser's state_dict as well as this one's (built with
    ``last_epoch=k`` after that, it multiplies the loaded lr, that of step k,
    by ``lr_lambda(k + 1)``).  ``lr_lambda(0)`` is never used: in a
    :class:`SequentialLR` too, its step 0 at its milestone keeps the lr
    (PyTorch's multiplies it by ``lr_lambda(0)`` there, though not when the
    schedule is built).  The functions and the saving of callable objects'
    attributes are :class:`LambdaLR`'s.
    """

    def get_lr(self):
        groups = self.optimizer.param_groups
        if self.last_epoch == 0:
            return [group["lr"] for group in groups]
        return [group["lr"] * self._factor(i, fn)
                for i, (fn, group) in enumerate(zip(self.lr_lambdas, groups))]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2.

    Half a cosine from base_lr down to eta_min over ``T_max`` steps (past
    ``T_max`` it continues the cosine back up, as PyTorch's does).
    """

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = check_int("T_max", T_max, low=1)
        self.eta_min = check_number("eta_min", eta_min)
        super().__init__(optimizer, last_epoch)

    def _check_state(self):
        super()._check_state()
        self.T_max = check_int("T_max", self.T_max, low=1)
        self.eta_min = check_number("eta_min", self.eta_min)

    def get_lr(self):
        c = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return [self.eta_min + (base - self.eta_min) * c for base in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    """SGDR (Loshchilov & Hutter): a cosine from base_lr down to ``eta_min`` over
    ``T_i`` steps, then a restart at base_lr, the cycles ``T_0``, ``T_0 * T_mult``,
    ``T_0 * T_mult ** 2``, ... steps long.

    lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2, with
    ``T_cur`` the steps since the last restart.  ``step()`` once per epoch, or,
    as PyTorch allows, ``step(epoch)`` with a fractional epoch once per batch
    (``step(epoch + i / batches_per_epoch)``): the schedule goes to that point
    (``last_epoch`` becomes its whole part, as there); a later ``step()`` goes
    one epoch on from it.  Where the cycles start is worked out in whole
    numbers, so a restart falls exactly on its epoch (PyTorch's fractional form
    takes a floating-point logarithm, which puts some restarts, e.g. epoch 121
    for ``T_0=1, T_mult=3``, one step late).  ``T_cur`` and ``T_i`` are
    read-only, computed from the position.
    """

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0.0, last_epoch=-1):
        self.T_0 = check_int("T_0", T_0, low=1)
        self.T_mult = check_int("T_mult", T_mult, low=1)
        self.eta_min = check_number("eta_min", eta_min)
        # the fractional part of the position step(epoch) gave, in [0, 1)
        self._epoch_fraction = 0.0
        super().__init__(optimizer, last_epoch)

    def _check_state(self):
        super()._check_state()
        self.T_0 = check_int("T_0", self.T_0, low=1)
        self.T_mult = check_int("T_mult", self.T_mult, low=1)
        self.eta_min = check_number("eta_min", self.eta_min)
        self._epoch_fraction = check_number("_epoch_fraction", self._epoch_fraction, high=1,
                                            open_high=True)

    def _cycle(self):
        """(steps since the last restart, length of this cycle) at the current position."""
        epoch = self.last_epoch
        if self.T_mult == 1:
            return epoch % self.T_0 + self._epoch_fraction, self.T_0
        start, length = 0, self.T_0
        while epoch >= start + length:   # whole numbers: each restart on its epoch
            start, length = start + length, length * self.T_mult
        return epoch - start + self._epoch_fraction, length

    @property
    def T_cur(self):
        """Steps (epochs) since the last restart."""
        return self._cycle()[0]

    @property
    def T_i(self):
        """The length of the current cycle."""
        return self._cycle()[1]

    def get_lr(self):
        t_cur, t_i = self._cycle()
        c = (1 + math.cos(math.pi * t_cur / t_i)) / 2
        return [self.eta_min + (base - self.eta_min) * c for base in self.base_lrs]

    def step(self, epoch=None):
        """Advance one step, or, given ``epoch`` (a number >= 0, fractional for a point
        within an epoch), go to that point of the schedule."""
        if epoch is None:
            super().step()
            return
        epoch = as_scalar(epoch, "epoch")
        if not is_real(epoch) or not (0 <= epoch < math.inf):
            raise (ValueError if is_real(epoch) else TypeError)(
                f"CosineAnnealingWarmRestarts.step: epoch must be a finite number >= 0 "
                f"(or None for the next step), got {shown_value(epoch)}")
        whole = math.floor(epoch)
        # the base class's step adds the 1 back
        self.last_epoch, self._epoch_fraction = whole - 1, float(epoch - whole)
        super().step()


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin): warm up to ``max_lr``, then anneal far below.

    With ``initial = max_lr / div_factor`` and ``min = initial / final_div_factor``:
    the lr goes from ``initial`` to ``max_lr`` over the first
    ``pct_start * total_steps - 1`` steps, then from ``max_lr`` to ``min`` at
    step ``total_steps - 1`` (``anneal_strategy`` "cos" or "linear";
    ``three_phase=True`` adds a symmetric way back to ``initial`` before the
    final descent).  Step once per batch; ``total_steps`` (or ``epochs *
    steps_per_epoch``) is the number of ``step()`` calls planned.

    With ``cycle_momentum`` (default, as PyTorch) the momentum (SGD's
    ``momentum`` or Adam's beta1) moves the opposite way, between
    ``max_momentum`` and ``base_momentum``.  Note that this turns on
    momentum for an ``SGD`` built without it; pass ``cycle_momentum=False``
    to leave momentum alone.
    """

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85,
                 max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=False,
                 last_epoch=-1):
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("give total_steps, or both epochs and steps_per_epoch")
            total_steps = epochs * steps_per_epoch
        total_steps = check_int("total_steps", total_steps, low=1)
        pct_start = check_number("pct_start", pct_start, low=0, open_low=True, high=1,
                                 open_high=True)
        div_factor = check_number("div_factor", div_factor, low=0, open_low=True)
        final_div_factor = check_number("final_div_factor", final_div_factor, low=0,
                                        open_low=True)
        _check_optimizer("OneCycleLR", optimizer)
        groups = optimizer.param_groups
        max_lrs = _per_group("max_lr", max_lr, len(groups))
        bound = _momentum_bounds(optimizer)
        base_momentum = check_number("base_momentum", base_momentum, low=0, **bound)
        max_momentum = check_number("max_momentum", max_momentum, low=0, **bound)
        self.total_steps = total_steps
        self.anneal_strategy = _anneal_strategy(anneal_strategy)
        self.cycle_momentum = check_flag("cycle_momentum", cycle_momentum)
        self.use_beta1 = _uses_beta1(optimizer, self.cycle_momentum)
        end1 = float(pct_start * total_steps) - 1
        if check_flag("three_phase", three_phase):
            self.phases = [
                dict(end_step=end1, start_lr="initial_lr", end_lr="max_lr",
                     start_momentum="max_momentum", end_momentum="base_momentum"),
                dict(end_step=float(2 * pct_start * total_steps) - 2, start_lr="max_lr",
                     end_lr="initial_lr", start_momentum="base_momentum",
                     end_momentum="max_momentum"),
                dict(end_step=total_steps - 1, start_lr="initial_lr", end_lr="min_lr",
                     start_momentum="max_momentum", end_momentum="max_momentum"),
            ]
        else:
            self.phases = [
                dict(end_step=end1, start_lr="initial_lr", end_lr="max_lr",
                     start_momentum="max_momentum", end_momentum="base_momentum"),
                dict(end_step=total_steps - 1, start_lr="max_lr", end_lr="min_lr",
                     start_momentum="base_momentum", end_momentum="max_momentum"),
            ]
        if last_epoch == -1:
            for group, top in zip(groups, max_lrs):
                group["initial_lr"] = top / div_factor
                group["max_lr"] = top
                group["min_lr"] = group["initial_lr"] / final_div_factor
                if self.cycle_momentum:
                    group["max_momentum"], group["base_momentum"] = max_momentum, base_momentum
                    _set_momentum(group, max_momentum, self.use_beta1)
        super().__init__(optimizer, last_epoch)

    # The group settings each entry of a phase may name.
    _PHASE_KEYS = {"start_lr": ("initial_lr", "max_lr"),
                   "end_lr": ("initial_lr", "max_lr", "min_lr"),
                   "start_momentum": ("max_momentum", "base_momentum"),
                   "end_momentum": ("max_momentum", "base_momentum")}

    def _check_state(self):
        super()._check_state()
        self.total_steps = check_int("total_steps", self.total_steps, low=1)
        if self.last_epoch > self.total_steps:
            raise ValueError(f"last_epoch {self.last_epoch} is past total_steps "
                             f"{self.total_steps}")
        _anneal_strategy(self.anneal_strategy)
        self.cycle_momentum = check_flag("cycle_momentum", self.cycle_momentum)
        self.use_beta1 = _check_use_beta1(self.use_beta1, self.optimizer)
        phases = self.phases
        if not isinstance(phases, list) or len(phases) not in (2, 3) or not all(
                isinstance(ph, dict) and set(ph) == {"end_step", *self._PHASE_KEYS}
                and is_real(as_scalar(ph["end_step"]))
                and all(ph[k] in names for k, names in self._PHASE_KEYS.items())
                for ph in phases):
            raise ValueError(f"phases is not a list of the 2 or 3 phases OneCycleLR builds, "
                             f"got {phases!r}")
        self.phases = phases = [dict(ph, end_step=as_scalar(ph["end_step"])) for ph in phases]
        used = {ph[k] for ph in phases for k in ("start_lr", "end_lr")}
        if self.cycle_momentum:
            used |= {ph[k] for ph in phases for k in ("start_momentum", "end_momentum")}
        for i, group in enumerate(self.optimizer.param_groups):
            for key in sorted(used):
                if key not in group:
                    raise ValueError(f"parameter group {i} of the optimizer has no {key!r} "
                                     f"(load the optimizer's state_dict first)")

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def step(self):
        """Advance one step; past ``total_steps`` steps it raises and changes nothing (the
        schedule, and its ``state_dict``, stay at the end)."""
        if self.last_epoch + 1 > self.total_steps:
            raise ValueError(f"OneCycleLR cannot step {self.last_epoch + 1} times: "
                             f"total_steps is {self.total_steps}")
        super().step()

    def _set_groups(self):
        super()._set_groups()
        if self.cycle_momentum:
            self.get_lr()   # sets the groups' momenta of this step (and nothing else)

    def get_lr(self):
        step = self.last_epoch
        lrs = []
        for group in self.optimizer.param_groups:
            start = 0.0
            for i, phase in enumerate(self.phases):
                end = phase["end_step"]
                if step <= end or i == len(self.phases) - 1:
                    # A zero-length phase (e.g. pct_start * total_steps == 1) is
                    # over as soon as it starts: its end values, not 0 / 0.
                    pct = (step - start) / (end - start) if end != start else 1.0
                    lrs.append(self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct))
                    if self.cycle_momentum:
                        _set_momentum(group, self._anneal(
                            group[phase["start_momentum"]], group[phase["end_momentum"]], pct),
                            self.use_beta1)
                    break
                start = end
        return lrs


class CyclicLR(LRScheduler):
    """Cyclical learning rates (Smith, 2017): the lr rises from ``base_lr`` to ``max_lr``
    over ``step_size_up`` steps and falls back over ``step_size_down`` (default: the
    same), cycle after cycle; step once per batch.

    The height of cycle ``c`` (1, 2, ...) at step ``k`` is scaled by: ``mode``
    "triangular" 1; "triangular2" 1 / 2 ** (c - 1), halved every cycle;
    "exp_range" gamma ** k.  Or by ``scale_fn``, a function of ``c``
    (``scale_mode`` "cycle") or of ``k`` ("iterations") returning a number >= 0;
    ``mode`` is then not used (without a ``scale_fn``, the scale mode is the
    mode's, whatever ``scale_mode`` says, as in PyTorch).  ``scale_fn`` is called
    once per step (PyTorch's once per group and again for the momenta; with
    ``cycle_momentum``, once more by ``load_state_dict``, to set the loaded
    step's momenta), and
    ``state_dict()`` saves the attributes of one that is a callable object, as
    :class:`LambdaLR` does.  ``base_lr``, ``max_lr``, ``base_momentum`` and
    ``max_momentum`` are one number or a list with one per group; the step
    sizes are numbers > 0 (>= 0 for ``step_size_down``), not only whole ones,
    as in PyTorch.  Building it sets every group's lr and ``initial_lr`` to its
    ``base_lr`` (PyTorch's keeps an ``initial_lr`` an earlier scheduler set, and
    takes its step 0 from it).

    With ``cycle_momentum`` (default, as PyTorch) the momentum moves the other
    way, from ``max_momentum`` down to ``base_momentum`` and back: SGD's and
    RMSprop's ``momentum``, Adam's and AdamW's beta1, as PyTorch 2.x does.  As
    there, an optimiser with neither is refused (pass ``cycle_momentum=False``),
    and an ``SGD`` built without momentum gets some.
    """

    _lr_lists = ("base_lrs", "_last_lr", "max_lrs")

    def __init__(self, optimizer, base_lr, max_lr, step_size_up=2000, step_size_down=None,
                 mode="triangular", gamma=1.0, scale_fn=None, scale_mode="cycle",
                 cycle_momentum=True, base_momentum=0.8, max_momentum=0.9, last_epoch=-1):
        groups = _check_optimizer("CyclicLR", optimizer).param_groups
        base_lrs = _per_group("base_lr", base_lr, len(groups))
        self.max_lrs = _per_group("max_lr", max_lr, len(groups))
        finite = {"high": math.inf, "open_high": True}
        up = float(check_number("step_size_up", step_size_up, open_low=True, **finite))
        down = up if step_size_down is None else \
            float(check_number("step_size_down", step_size_down, **finite))
        # PyTorch's state and arithmetic, for the same rounding
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        self.mode = _choice("mode", mode, ("triangular", "triangular2", "exp_range"))
        self.gamma = check_number("gamma", gamma)
        if scale_fn is not None and not callable(scale_fn):
            raise TypeError(f"CyclicLR: scale_fn must be None or a function of the cycle or "
                            f"step number, got {shown_value(scale_fn)}")
        self._scale_fn_custom = scale_fn
        scale_mode = _choice("scale_mode", scale_mode, ("cycle", "iterations"))
        self.scale_mode = scale_mode if scale_fn is not None else self._mode_scale()
        self.cycle_momentum = check_flag("cycle_momentum", cycle_momentum)
        self.use_beta1 = _uses_beta1(optimizer, self.cycle_momentum)
        bound = _momentum_bounds(optimizer)
        self.base_momentums = _per_group("base_momentum", base_momentum, len(groups), **bound)
        self.max_momentums = _per_group("max_momentum", max_momentum, len(groups), **bound)
        if last_epoch == -1:
            for group, lr, low, high in zip(groups, base_lrs, self.base_momentums,
                                            self.max_momentums):
                group["lr"] = group["initial_lr"] = lr
                if self.cycle_momentum:
                    group["max_momentum"], group["base_momentum"] = high, low
                    _set_momentum(group, high, self.use_beta1)
        super().__init__(optimizer, last_epoch)

    def _mode_scale(self):
        """The scale mode of ``mode``'s own scale function."""
        return "iterations" if self.mode == "exp_range" else "cycle"

    def _check_state(self):
        super()._check_state()
        self.total_size = check_number("total_size", self.total_size, open_low=True,
                                       high=math.inf, open_high=True)
        self.step_ratio = check_number("step_ratio", self.step_ratio, open_low=True, high=1)
        self.mode = _choice("mode", self.mode, ("triangular", "triangular2", "exp_range"))
        self.gamma = check_number("gamma", self.gamma)
        self.scale_mode = _choice("scale_mode", self.scale_mode, ("cycle", "iterations"))
        if self._scale_fn_custom is None and self.scale_mode != self._mode_scale():
            raise ValueError(f"scale_mode is {self.scale_mode!r}, but mode {self.mode!r} "
                             f"without a scale_fn scales by {self._mode_scale()!r}")
        self.cycle_momentum = check_flag("cycle_momentum", self.cycle_momentum)
        self.use_beta1 = _check_use_beta1(self.use_beta1, self.optimizer)
        bound = _momentum_bounds(self.optimizer)
        for key in ("base_momentums", "max_momentums"):
            setattr(self, key, self._per_group_state(key, "momentum", **bound))

    def scale_fn(self, x):
        """The height factor of cycle ``x`` (or step ``x``, for scale mode "iterations")."""
        if self._scale_fn_custom is not None:
            return _checked_factor(self._scale_fn_custom(x), "CyclicLR: scale_fn returned",
                                   self.last_epoch)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return self.gamma ** x

    def _set_groups(self):
        super()._set_groups()
        if self.cycle_momentum:
            self.get_lr()   # sets the groups' momenta of this step (calls scale_fn once more)

    def get_lr(self):
        # PyTorch's arithmetic, for the same rounding
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle     # where in the cycle, [0, 1)
        if x <= self.step_ratio:
            rise = x / self.step_ratio
        else:
            rise = (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else self.last_epoch)
        lrs = [base + (top - base) * rise * scale
               for base, top in zip(self.base_lrs, self.max_lrs)]
        if self.cycle_momentum:
            for group, low, high in zip(self.optimizer.param_groups, self.base_momentums,
                                        self.max_momentums):
                _set_momentum(group, high - (high - low) * rise * scale, self.use_beta1)
        return lrs

    def state_dict(self):
        """As the base class's, with ``_scale_fn_custom`` saved as None for no scale_fn
        or a function, and as a dict of attributes for a callable object."""
        state = super().state_dict()
        state["_scale_fn_custom"] = _saved_attributes(self._scale_fn_custom,
                                                      "CyclicLR.state_dict: scale_fn")
        return state

    def _load_state(self, state_dict):
        # Saved attributes of the scale_fn update the object's.
        saved = None
        if isinstance(state_dict, dict) and "_scale_fn_custom" in state_dict:
            saved = state_dict["_scale_fn_custom"]
            _check_saved_attributes(self._scale_fn_custom, saved,
                                    "CyclicLR.load_state_dict: _scale_fn_custom", "scale_fn")
            state_dict = dict(state_dict, _scale_fn_custom=self._scale_fn_custom)
        super()._load_state(state_dict)
        if saved is not None:
            self._scale_fn_custom.__dict__.update(copy.deepcopy(saved))


class SequentialLR(LRScheduler):
    """Several schedules one after the other: ``schedulers[i]`` from step
    ``milestones[i - 1]`` on, each starting again from its own step 0.

    The common case, a linear warm-up then a cosine::

        warmup = LinearLR(opt, start_factor=0.01, total_iters=5)
        cosine = CosineAnnealingLR(opt, T_max=95)
        sched = SequentialLR(opt, [warmup, cosine], milestones=[5])

    As PyTorch's: building it puts every group's lr back to its
    ``initial_lr``, undoes the step each scheduler took when it was built
    and sets the lr of step 0 with the scheduler that owns step 0; at each
    milestone the next scheduler restarts at its step 0.  ``state_dict()``
    holds the schedulers' states under ``"_schedulers"``; to resume, build
    the same schedulers and this over them, then load the optimiser's and
    this scheduler's state.  Resuming through ``last_epoch`` is not offered
    (PyTorch's leaves the lr of the resumed step wrong): ``load_state_dict``
    is the way.
    """

    _lr_lists = ("_last_lr",)

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        _check_optimizer("SequentialLR", optimizer)
        if isinstance(schedulers, LRScheduler) or not isinstance(schedulers, (list, tuple)):
            raise TypeError(f"SequentialLR: schedulers must be a list of schedulers, got "
                            f"{type(schedulers).__name__}")
        if not schedulers:
            raise ValueError("SequentialLR expects at least one scheduler, got none")
        for i, sched in enumerate(schedulers):
            if isinstance(sched, (ReduceLROnPlateau, SequentialLR)):
                raise ValueError(f"SequentialLR cannot run a {type(sched).__name__} (scheduler "
                                 f"{i}): " + ("its step needs the metric"
                                              if isinstance(sched, ReduceLROnPlateau) else
                                              "list its schedulers in this one instead"))
            if not isinstance(sched, LRScheduler):
                raise TypeError(f"SequentialLR: scheduler {i} is a {type(sched).__name__}, "
                                f"not a learning-rate scheduler")
            if sched.optimizer is not optimizer:
                raise ValueError(f"SequentialLR: scheduler {i} ({type(sched).__name__}) "
                                 f"belongs to another optimizer; every scheduler must "
                                 f"belong to the one given")
        milestones = _step_numbers("milestones", milestones)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR expects one milestone fewer than schedulers, got "
                             f"{len(schedulers)} scheduler(s) and {len(milestones)} "
                             f"milestone(s)")
        if last_epoch != -1:
            raise ValueError(f"SequentialLR: last_epoch must be -1, got {last_epoch!r}; to "
                             f"resume, load its state_dict")
        self.optimizer = optimizer
        self._schedulers = list(schedulers)
        self._milestones = milestones
        self.last_epoch = 0
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        for sched in self._schedulers:
            sched.last_epoch -= 1
        first = self._schedulers[bisect.bisect_right(milestones, 0)]
        first.step()
        self._last_lr = first.get_last_lr()
        self._written = _group_settings(optimizer)   # for load_state_dict (not saved)

    def step(self):
        """Advance one step: the current scheduler steps, or the next one starts."""
        epoch = self.last_epoch + 1
        i = bisect.bisect_right(self._milestones, epoch)
        sched = self._schedulers[i]
        before = sched.last_epoch
        if i > 0 and self._milestones[i - 1] == epoch:
            sched.last_epoch = -1          # PyTorch's step(0): the schedule starts over
        try:
            sched.step()
        except BaseException:
            # Nothing changed, as the base class promises: the step can be retried.
            sched.last_epoch = before
            raise
        self.last_epoch = epoch
        self._last_lr = sched.get_last_lr()
        self._written = _group_settings(self.optimizer)

    def get_lr(self):
        raise NotImplementedError("SequentialLR's lr is its current scheduler's "
                                  "(get_last_lr())")

    def state_dict(self):
        """``last_epoch``, ``_milestones``, ``_last_lr`` and the schedulers' states."""
        state = {k: v for k, v in super().state_dict().items() if k != "_schedulers"}
        state["_milestones"] = list(self._milestones)
        state["_schedulers"] = [sched.state_dict() for sched in self._schedulers]
        return state

    def _load_state(self, state_dict):
        # This one's state and every scheduler's; nothing changes unless all of it loads.
        saved = None
        if isinstance(state_dict, dict) and "_schedulers" in state_dict:
            saved = state_dict["_schedulers"]
            n = len(self._schedulers)
            if not isinstance(saved, (list, tuple)) or len(saved) != n:
                raise ValueError(f"SequentialLR.load_state_dict: _schedulers must be a list "
                                 f"of {n} scheduler state_dicts, got {saved!r}")
            for i, (sched, state) in enumerate(zip(self._schedulers, saved)):
                # A trial load into a copy (sharing the optimizer, which loading only
                # reads): the real ones below cannot fail half-way.
                trial = copy.deepcopy(sched, {id(self.optimizer): self.optimizer})
                try:
                    trial._load_state(state)
                except (TypeError, ValueError, KeyError) as e:
                    message = e.args[0] if len(e.args) == 1 else str(e)
                    raise type(e)(f"SequentialLR.load_state_dict: scheduler {i}: "
                                  f"{message}") from None
            state_dict = dict(state_dict, _schedulers=self._schedulers)
        super()._load_state(state_dict)
        for sched, state in zip(self._schedulers, saved or ()):
            sched._load_state(state)

    def _set_groups(self):   # the current scheduler's values
        self._schedulers[bisect.bisect_right(self._milestones, self.last_epoch)]._set_groups()

    def _check_state(self):
        super()._check_state()
        milestones = _step_numbers("_milestones", self._milestones)
        if len(milestones) != len(self._schedulers) - 1:
            raise ValueError(f"_milestones must hold {len(self._schedulers) - 1} step "
                             f"number(s), one fewer than the schedulers, got {milestones}")
        self._milestones = milestones


class ReduceLROnPlateau(LRScheduler):
    """Divide the lr when a metric has stopped improving: ``step(metric)`` after each
    validation.

    A metric counts as an improvement when it beats the best so far by
    ``threshold`` (``mode`` "min": below ``best * (1 - threshold)`` for
    ``threshold_mode`` "rel", below ``best - threshold`` for "abs"; "max"
    the other way).  After more than ``patience`` steps in a row without
    one, every group's lr becomes ``max(lr * factor, min_lr)`` (unless that
    changes it by ``eps`` or less), and the next ``cooldown`` steps count no
    bad steps.  ``min_lr`` is one number or one per group.

    PyTorch's rules and state, with one difference in what is accepted:
    ``step`` takes the metric alone (PyTorch's deprecated ``epoch`` argument
    is not offered).  A NaN metric is no improvement, as there.  The lr is
    read from the groups and multiplied, not computed from a step count: it
    resumes from the optimiser's state_dict, so load both.
    """

    _lr_lists = ("_last_lr",)

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8):
        self.optimizer = _check_optimizer("ReduceLROnPlateau", optimizer)
        n = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n:
                raise ValueError(f"ReduceLROnPlateau: expected {n} min_lrs, one per parameter "
                                 f"group, got {len(min_lr)}")
            self.default_min_lr = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * n
        self.mode, self.factor, self.patience = mode, factor, patience
        self.threshold, self.threshold_mode = threshold, threshold_mode
        self.cooldown, self.eps = cooldown, eps
        self._check_settings()
        self.last_epoch = 0
        self._last_lr = [group["lr"] for group in optimizer.param_groups]
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def _check_settings(self):
        self.mode = _choice("mode", self.mode, ("min", "max"))
        self.threshold_mode = _choice("threshold_mode", self.threshold_mode, ("rel", "abs"))
        self.factor = check_number("factor", self.factor, high=1, open_high=True)
        self.patience = check_int("patience", self.patience, low=0)
        self.threshold = check_number("threshold", self.threshold)
        self.cooldown = check_int("cooldown", self.cooldown, low=0)
        self.eps = check_number("eps", self.eps)
        if self.default_min_lr is not None:
            self.default_min_lr = check_number("min_lr", self.default_min_lr)
        self.min_lrs = [check_number(f"min_lr[{i}]", v) for i, v in enumerate(self.min_lrs)]
        # the worst value for the mode: anything improves on it
        self.mode_worse = math.inf if self.mode == "min" else -math.inf

    def _check_state(self):
        # min_lrs a list before the base class checks the settings (_check_settings)
        if isinstance(self.min_lrs, np.ndarray) and self.min_lrs.ndim == 1:
            self.min_lrs = list(self.min_lrs)
        if not isinstance(self.min_lrs, list):
            raise ValueError(f"min_lrs must be a list of learning rates, got {self.min_lrs!r}")
        super()._check_state()
        n = len(self.optimizer.param_groups)
        if self.default_min_lr is None and len(self.min_lrs) != n:
            raise ValueError(f"min_lrs must hold {n} learning rate(s), one per parameter "
                             f"group, got {self.min_lrs}")
        self.best = check_number("best", self.best, low=None)
        self.cooldown_counter = check_int("cooldown_counter", self.cooldown_counter, low=0)
        self.num_bad_epochs = check_int("num_bad_epochs", self.num_bad_epochs, low=0)

    def _restore_groups(self):
        """Nothing: the lr is the optimiser's own (loaded with its state), which the
        schedule only multiplies."""

    @property
    def in_cooldown(self):
        return self.cooldown_counter > 0

    def get_lr(self):
        raise NotImplementedError("ReduceLROnPlateau has no lr formula: step(metric) "
                                  "multiplies the groups' learning rates")

    def step(self, metrics):
        """Record one value of the metric (a number or a 0-d tensor); reduce the lr
        after more than ``patience`` steps without improvement."""
        current = as_scalar(metrics)
        if not is_real(current):
            raise TypeError(f"ReduceLROnPlateau.step: metrics must be a number (the "
                            f"validation loss, say), got {shown_value(current)}")
        current = float(current)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0   # bad steps in the cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _reduce_lr(self):
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(f"ReduceLROnPlateau: the optimizer has "
                                   f"{len(groups)} parameter groups, but min_lr gave "
                                   f"{len(self.min_lrs)} (a group was added since): set "
                                   f"scheduler.min_lrs to one per group")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, min_lr in zip(groups, self.min_lrs):
            old = float(group["lr"])
            new = max(old * self.factor, min_lr)
            if old - new > self.eps:
                group["lr"] = new

    def _is_better(self, a, best):
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold
