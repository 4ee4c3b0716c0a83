"""Learning-rate schedulers (PyTorch's formulas).

A scheduler writes ``group["lr"]`` of every parameter group of its
optimiser.  Building one sets the lr for step 0; call ``scheduler.step()``
once per epoch (StepLR, CosineAnnealingLR) or once per batch (OneCycleLR),
after ``optimizer.step()``.  The lr is computed in closed form from the
number of steps taken, so schedulers do not compose ("chain") with each
other or with hand-made changes to ``group["lr"]``.

``state_dict()`` is a plain dict of numbers, strings and lists.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from .._checks import as_scalar, check_flag, check_int, check_number, is_real
from .optimizers import Optimizer

__all__ = ["LRScheduler", "StepLR", "CosineAnnealingLR", "OneCycleLR"]


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
    that of step k + 1 of an uninterrupted run (PyTorch's CosineAnnealingLR
    keeps the optimiser's saved lr for that step instead).
    """

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
        lrs = [float(lr) for lr in self.get_lr()]
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
        self.last_epoch = check_int("last_epoch", self.last_epoch, low=0)
        n = len(self.optimizer.param_groups)
        for key in ("base_lrs", "_last_lr"):
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
