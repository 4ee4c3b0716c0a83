"""Learning-rate schedulers (PyTorch's formulas).

A scheduler writes ``group["lr"]`` of every parameter group of its
optimiser.  Building one sets the lr for step 0; call ``scheduler.step()``
once per epoch (StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR, ...)
or once per batch (OneCycleLR), after ``optimizer.step()``;
``ReduceLROnPlateau.step(metric)`` once per validation.  The lr is computed
in closed form from the number of steps taken (PyTorch's own
``_get_closed_form_lr``; its chained forms give the same numbers, to
rounding, when nothing else changes the lr), so these schedulers do not
compose ("chain") with each other or with hand-made changes to
``group["lr"]``: the next step overwrites them.  ``SequentialLR`` runs
several one after the other, as PyTorch's does; ``ReduceLROnPlateau``, which
has no closed form, multiplies whatever lr the group holds.

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

__all__ = ["LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR", "LinearLR", "LambdaLR",
           "CosineAnnealingLR", "OneCycleLR", "SequentialLR", "ReduceLROnPlateau"]


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


class LRScheduler:
    """Base class: ``step()``, ``get_last_lr()``, ``state_dict()``; subclasses define ``get_lr()``.

    ``base_lrs`` are the groups' learning rates when the schedule started
    (kept in ``group["initial_lr"]``); ``last_epoch`` counts ``step()`` calls
    (0 after construction).  Built with ``last_epoch=k`` (after loading the
    optimiser's state), a schedule steps once, to step k + 1, and its lr is
    that of step k + 1 of an uninterrupted run (PyTorch's chained schedulers,
    CosineAnnealingLR, ExponentialLR, MultiStepLR and LinearLR among them, keep
    the optimiser's saved lr for that step instead).  ``load_state_dict`` is
    the way to resume that gives PyTorch's numbers exactly.
    """

    # The lists of per-group learning rates the state holds (checked on loading).
    _lr_lists = ("base_lrs", "_last_lr")

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__} needs an Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
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

    def get_last_lr(self):
        """The learning rates (one per group) that the last ``step`` set."""
        return list(self._last_lr)

    def state_dict(self):
        """Everything but the optimiser, as numbers, strings and lists."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        """Restore what :meth:`state_dict` gave: the same keys, no others.

        The loaded settings pass the checks the constructor applies (a
        ``T_max`` of 0 is refused here, not met as a division by zero at the
        next step); the error names the setting.  Nothing changes unless the
        whole state loads.
        """
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

    def _check_state(self):
        """Raise TypeError or ValueError unless the schedule's state is usable, and keep
        each setting as the plain Python value its check returns (as an optimiser's
        ``_validate`` does: a 0-d array or tensor becomes its number).

        Subclasses extend it with their settings, through the checks their
        constructors apply to the same arguments.
        """
        # -1: not started yet, as a SequentialLR's later schedulers are until their
        # milestone
        self.last_epoch = check_int("last_epoch", self.last_epoch, low=-1)
        n = len(self.optimizer.param_groups)
        for key in self._lr_lists:
            values = getattr(self, key)
            if isinstance(values, np.ndarray) and values.ndim == 1:   # a list, saved as one
                values = list(values)
            if not isinstance(values, list) or len(values) != n:
                raise ValueError(f"{key} must be a list of {n} learning rate(s), one per "
                                 f"parameter group, got {values!r}")
            setattr(self, key, [check_number(key, lr) for lr in values])

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
    for a constant factor use :class:`LambdaLR`).
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

    def _check_state(self):
        super()._check_state()
        self._check_settings()

    def get_lr(self):
        # PyTorch's order of operations, for the same rounding.
        factor = self.start_factor + (self.end_factor - self.start_factor) \
            * min(self.total_iters, self.last_epoch) / self.total_iters
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
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"LambdaLR needs an Optimizer, got {type(optimizer).__name__}")
        n = len(optimizer.param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n:
                raise ValueError(f"LambdaLR: expected {n} lr_lambdas, one per parameter group, "
                                 f"got {len(lr_lambda)}")
            names = [f"lr_lambda[{i}]" for i in range(n)]
            self.lr_lambdas = list(lr_lambda)
        else:
            names = ["lr_lambda"] * n
            self.lr_lambdas = [lr_lambda] * n
        for name, fn in zip(names, self.lr_lambdas):
            if not callable(fn):
                raise TypeError(f"LambdaLR: {name} must be a function of the step number, "
                                f"got {shown_value(fn)}")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * self._factor(i, fn)
                for i, (fn, base) in enumerate(zip(self.lr_lambdas, self.base_lrs))]

    def _factor(self, i, fn):
        value = as_scalar(fn(self.last_epoch))
        where = f"LambdaLR: lr_lambda of parameter group {i} returned"
        if not is_real(value):
            raise TypeError(f"{where} {shown_value(value)} at step {self.last_epoch}; "
                            f"expected a number")
        if not (0 <= value < math.inf):
            raise ValueError(f"{where} {value} at step {self.last_epoch}; expected a finite "
                             f"number >= 0 (the lr is base_lr times it)")
        return value

    def _saved_attributes(self, i, fn):
        """What state_dict keeps of ``fn``: None for a function, else its attributes."""
        attributes = None if isinstance(fn, _CODE) else getattr(fn, "__dict__", None)
        if attributes is None:
            return None
        for key, value in attributes.items():
            if not _plain(value):
                raise TypeError(f"LambdaLR.state_dict: lr_lambda of parameter group {i} (a "
                                f"{type(fn).__name__}) has attribute {key!r} = "
                                f"{shown_value(value)}, which a state_dict cannot hold "
                                f"(numbers, strings, bools, None, arrays, and lists and dicts "
                                f"of them); keep it out of the object's attributes")
        return copy.deepcopy(attributes)

    def state_dict(self):
        """As the base class's, with ``lr_lambdas`` saved as None for each function and
        as a dict of attributes for each callable object."""
        state = {k: v for k, v in super().state_dict().items() if k != "lr_lambdas"}
        state["lr_lambdas"] = [self._saved_attributes(i, fn)
                               for i, fn in enumerate(self.lr_lambdas)]
        return state

    def load_state_dict(self, state_dict):
        """Restore the state; each saved dict of attributes updates its callable object's."""
        saved = None
        if isinstance(state_dict, dict) and "lr_lambdas" in state_dict:
            saved = self._checked_lambdas(state_dict["lr_lambdas"])
            state_dict = dict(state_dict, lr_lambdas=self.lr_lambdas)
        super().load_state_dict(state_dict)
        for fn, attributes in zip(self.lr_lambdas, saved or ()):
            if attributes is not None:
                fn.__dict__.update(copy.deepcopy(attributes))

    def _checked_lambdas(self, saved):
        n = len(self.lr_lambdas)
        where = "LambdaLR.load_state_dict: lr_lambdas"
        if not isinstance(saved, (list, tuple)) or len(saved) != n:
            raise ValueError(f"{where} must be a list of {n} entries (None or a dict of "
                             f"attributes), one per parameter group, got {saved!r}")
        for i, (fn, attributes) in enumerate(zip(self.lr_lambdas, saved)):
            if attributes is None:
                continue
            if not isinstance(attributes, dict) or not all(isinstance(k, str)
                                                           for k in attributes):
                raise TypeError(f"{where}[{i}] must be None or a dict of attributes, got "
                                f"{attributes!r}")
            if isinstance(fn, _CODE) or not hasattr(fn, "__dict__"):
                raise ValueError(f"{where}[{i}] holds attributes {sorted(attributes)}, but "
                                 f"lr_lambda of parameter group {i} is a "
                                 f"{type(fn).__name__}, which keeps none")
        return list(saved)


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
        groups = optimizer.param_groups
        max_lrs = list(max_lr) if isinstance(max_lr, (list, tuple)) else [max_lr] * len(groups)
        if len(max_lrs) != len(groups):
            raise ValueError(f"max_lr has {len(max_lrs)} values for {len(groups)} parameter groups")
        max_lrs = [check_number("max_lr", top) for top in max_lrs]
        # The momenta become the optimizer's momentum or beta1: hold them to its
        # rules now, or a checkpoint of this run could not be loaded again.
        bound = {"high": 1, "open_high": True} if "betas" in optimizer.defaults else {}
        base_momentum = check_number("base_momentum", base_momentum, low=0, **bound)
        max_momentum = check_number("max_momentum", max_momentum, low=0, **bound)
        self.total_steps = total_steps
        self.anneal_strategy = _anneal_strategy(anneal_strategy)
        self.cycle_momentum = check_flag("cycle_momentum", cycle_momentum)
        self.use_beta1 = "betas" in optimizer.defaults
        if self.cycle_momentum and not self.use_beta1 and "momentum" not in optimizer.defaults:
            raise ValueError("cycle_momentum needs an optimizer with 'momentum' or 'betas'; "
                             "pass cycle_momentum=False")
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
                    self._set_momentum(group, max_momentum)
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
        self.use_beta1 = check_flag("use_beta1", self.use_beta1)
        if self.use_beta1 != ("betas" in self.optimizer.defaults):
            raise ValueError(f"use_beta1 is {self.use_beta1!r}, but the optimizer "
                             f"{'has' if not self.use_beta1 else 'lacks'} betas")
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

    def _set_momentum(self, group, value):
        if self.use_beta1:
            group["betas"] = (value,) + tuple(group["betas"][1:])
        else:
            group["momentum"] = value

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
                        self._set_momentum(group, self._anneal(
                            group[phase["start_momentum"]], group[phase["end_momentum"]], pct))
                    break
                start = end
        return lrs


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
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"SequentialLR needs an Optimizer, got {type(optimizer).__name__}")
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

    def step(self):
        """Advance one step: the current scheduler steps, or the next one starts."""
        self.last_epoch += 1
        i = bisect.bisect_right(self._milestones, self.last_epoch)
        sched = self._schedulers[i]
        if i > 0 and self._milestones[i - 1] == self.last_epoch:
            sched.last_epoch = -1          # PyTorch's step(0): the schedule starts over
        sched.step()
        self._last_lr = sched.get_last_lr()

    def get_lr(self):
        raise NotImplementedError("SequentialLR's lr is its current scheduler's "
                                  "(get_last_lr())")

    def state_dict(self):
        """``last_epoch``, ``_milestones``, ``_last_lr`` and the schedulers' states."""
        state = {k: v for k, v in super().state_dict().items() if k != "_schedulers"}
        state["_milestones"] = list(self._milestones)
        state["_schedulers"] = [sched.state_dict() for sched in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        """Restore the state and every scheduler's; nothing changes unless all of it loads."""
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
                    trial.load_state_dict(state)
                except (TypeError, ValueError, KeyError) as e:
                    message = e.args[0] if len(e.args) == 1 else str(e)
                    raise type(e)(f"SequentialLR.load_state_dict: scheduler {i}: "
                                  f"{message}") from None
            state_dict = dict(state_dict, _schedulers=self._schedulers)
        super().load_state_dict(state_dict)
        for sched, state in zip(self._schedulers, saved or ()):
            sched.load_state_dict(state)

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
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"ReduceLROnPlateau needs an Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
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
        super()._check_state()
        if isinstance(self.min_lrs, np.ndarray) and self.min_lrs.ndim == 1:
            self.min_lrs = list(self.min_lrs)
        if not isinstance(self.min_lrs, list):
            raise ValueError(f"min_lrs must be a list of learning rates, got {self.min_lrs!r}")
        self._check_settings()
        n = len(self.optimizer.param_groups)
        if self.default_min_lr is None and len(self.min_lrs) != n:
            raise ValueError(f"min_lrs must hold {n} learning rate(s), one per parameter "
                             f"group, got {self.min_lrs}")
        self.best = check_number("best", self.best, low=None)
        self.cooldown_counter = check_int("cooldown_counter", self.cooldown_counter, low=0)
        self.num_bad_epochs = check_int("num_bad_epochs", self.num_bad_epochs, low=0)

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
