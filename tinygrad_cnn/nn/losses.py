"""Loss functions (PyTorch semantics) and their ``Module`` wrappers.

All losses take ``reduction`` in ``{"mean", "sum", "none"}``.  Targets may
be Tensors, NumPy arrays or lists; they are moved to the input's device.
Class-index losses pick each sample's log-probability by integer-array
indexing (one gather, no Python loop over samples), and work on logits of
shape ``(N, C)`` or ``(N, C, d1, d2, ...)`` (e.g. per-pixel
classification) with targets ``(N,)`` / ``(N, d1, d2, ...)``.
"""
from __future__ import annotations

import numpy as np

from .._checks import check_flag, check_int, check_number, check_probability
from ..autograd import Function
from ..backend import DeviceError
from ..tensor import Tensor, _find_backend_of, where
from .module import Module

__all__ = ["cross_entropy", "nll_loss", "mse_loss", "l1_loss",
           "binary_cross_entropy_with_logits", "binary_cross_entropy", "softplus",
           "smooth_l1_loss", "huber_loss", "kl_div",
           "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "BCEWithLogitsLoss", "BCELoss",
           "SmoothL1Loss", "HuberLoss", "KLDivLoss"]

_REDUCTIONS = ("mean", "sum", "none")


# ---- helpers ----------------------------------------------------------------------
def _check_input(x, name):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: the input must be a Tensor, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{name}: the input must be floating-point, got dtype {x.dtype}")


def _check_reduction(reduction, name):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _on_device_of(value, ref, name, what="target", dtype=None):
    """``value`` as a Tensor on ``ref``'s device (converting arrays and lists)."""
    if isinstance(value, Tensor):
        if value.device != ref.device:
            raise DeviceError(f"{name}: the input is on {ref.device} but the {what} is on "
                              f"{value.device}; move them to one device")
        return value if dtype is None else value.astype(dtype)
    return Tensor(value, dtype=dtype, device=ref.device)


def _reduce(loss, reduction, denominator=None):
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    if denominator is None:
        return total / loss.size
    # A zero denominator (every target ignored) gives a NaN loss, as in PyTorch,
    # but no gradient: total * (1/0) would put NaN into every gradient and so
    # into the weights.  Built from array ops, so a device never synchronises.
    xp = loss.xp
    with loss._backend.context():
        # A count known on the host (the batch size of soft targets) is kept on the
        # device (Backend.constant) rather than copied there at every call.
        d = (loss._backend.constant(denominator) if isinstance(denominator, int)
             else xp.asarray(denominator))
        scale = _const(xp.where(d > 0, 1 / xp.where(d > 0, d, 1), 0), total)
        nan_if_empty = _const(xp.where(d > 0, 0, xp.nan), total)
    return total * scale + nan_if_empty


def _const(array, ref):
    """A raw array as a tensor that carries no gradient, in ``ref``'s dtype."""
    return Tensor._make(array.astype(ref.dtype, copy=False), ref._backend)


def _elementwise_weight(value, input, name, what):
    """``weight`` / ``pos_weight`` of a binary loss, on the input's device in its dtype.

    It must broadcast *to* the input's shape: a weight with more or larger
    axes would broadcast the loss itself to a bigger shape, and ``sum`` and
    ``mean`` would then count every element several times.
    """
    value = _on_device_of(value, input, name, what, dtype=input.dtype)
    try:
        fits = np.broadcast_shapes(value.shape, input.shape) == input.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{name}: {what} of shape {value.shape} does not broadcast to the "
                         f"input's shape {input.shape}; expected a shape whose axes, aligned "
                         f"from the right, are 1 or the input's")
    return value


def _check_same_shape(x, y, name):
    if x.shape != y.shape:
        raise ValueError(f"{name}: input of shape {x.shape} and target of shape {y.shape} "
                         f"differ; they must match (no broadcasting, which would silently "
                         f"compare every input with every target)")


class Softplus(Function):
    """y = log(1 + e^x), computed as max(x, 0) + log1p(e^-|x|); dy/dx = sigmoid(x)"""

    def forward(self, x):
        xp = self.xp
        return (xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))).astype(x.dtype, copy=False)

    def backward(self, grad_out):
        return grad_out * self.inputs[0].sigmoid()


def softplus(x):
    """log(1 + e^x), stable for large |x| in both directions.  (``F.softplus`` adds
    ``beta`` and PyTorch's linear region; the losses need neither, and this op, run
    every training step, costs no pass or device copy for them.)"""
    return Softplus.apply(x)


# ---- classification ---------------------------------------------------------------
def _class_targets(logp, target, name):
    """Validate class-index targets; flatten to ``(M, C)`` log-probs and ``(M,)`` classes."""
    N, C = logp.shape[:2]
    expected = (N,) + logp.shape[2:]
    if target.dtype.kind not in "iu":
        raise TypeError(
            f"{name}: target has dtype {target.dtype} and shape {target.shape}; class-index "
            f"targets must be integers (convert with .astype('int64'))"
            + ("; float targets are read as class probabilities and need the input's shape "
               f"{logp.shape}" if name == "cross_entropy" else ""))
    if target.shape != expected:
        raise ValueError(f"{name}: target of shape {target.shape} does not fit an input of "
                         f"shape {logp.shape}: expected a target of shape {expected} holding "
                         f"one class index in [0, {C}) per sample")
    if logp.ndim > 2:
        # Classes last, then one row per (sample, position).
        order = (0,) + tuple(range(2, logp.ndim)) + (1,)
        logp = logp.permute(order).reshape(-1, C)           # (N*d1*..., C)
    return logp, target.data.reshape(-1)                    # (M, C), (M,)


def _nll(logp, target, weight, ignore_index, reduction, label_smoothing, name):
    """Negative log-likelihood of class indices, with PyTorch's weighting and smoothing.

    Per element ``i`` with class ``t_i`` (ignored ones contribute 0)::

        loss_i = (1 - eps) * w[t_i] * (-logp[i, t_i]) + eps / C * sum_c w[c] * (-logp[i, c])

    and ``mean`` divides the sum by ``sum_i w[t_i]`` over non-ignored
    elements (their count when unweighted).
    """
    _check_reduction(reduction, name)
    ignore_index = check_int(f"{name}: ignore_index", ignore_index)
    label_smoothing = check_probability(f"{name}: label_smoothing", label_smoothing)
    if logp.ndim == 0:
        raise ValueError(f"{name}: input must have a class dimension, (C,) or (N, C, ...), "
                         f"got a 0-d tensor")
    unbatched = logp.ndim == 1
    if unbatched:                       # (C,) with a scalar target
        if target.ndim != 0:
            raise ValueError(f"{name}: an unbatched input of shape {logp.shape} needs a "
                             f"scalar target, got shape {target.shape}")
        logp, target = logp.unsqueeze(0), target.reshape(1)
    out_shape = (logp.shape[0],) + logp.shape[2:]
    C = logp.shape[1]
    flat, t = _class_targets(logp, target, name)            # (M, C), (M,)
    with logp._backend.context():   # the array code below lands on logp's device
        xp = logp.xp
        valid = t != ignore_index
        bad = valid & ((t < 0) | (t >= C))
        backend = logp._backend
        what = (f"outside [0, {C}) for an input of shape {logp.shape} with {C} classes"
                + (f" (ignore_index is {ignore_index})" if ignore_index != -100 else ""))
        if not backend.defer_checks:
            if bad.any():
                raise IndexError(f"{name}: target holds class index {int(t[bad][0])}, "
                                 f"{what}")
        else:  # checked on the device, reported at the next transfer (no synchronisation)
            backend.check(bad, IndexError, f"{name}: target holds a class index {what}")
        # Ignored (and, on a deferring device, bad) elements gather class 0, masked out.
        safe = xp.where(valid & ~bad, t, 0)
        kept = Tensor._make(valid, logp._backend)               # (M,) False where ignored
        zero = _const(xp.zeros((), logp.dtype), logp)   # made here: no upload from the host
        picked = flat[xp.arange(flat.shape[0]), safe]           # (M,) log p of the true class
        if weight is not None:
            weight = _on_device_of(weight, logp, name, "weight", dtype=logp.dtype)
            if weight.shape != (C,):
                raise ValueError(f"{name}: weight must have shape ({C},), one per class, "
                                 f"got {weight.shape}")
            w_t = _const(weight.data[safe] * valid, logp)       # (M,) w[t_i], 0 if ignored
        else:
            w_t = _const(valid, logp)
        denominator = w_t.data.sum()
    # Ignored elements are selected away, not multiplied by 0: their rows may hold
    # -inf or NaN (masked or padded positions), and 0 * inf is NaN.
    loss = where(kept, -picked, zero)
    if weight is not None:
        loss = loss * w_t
    if label_smoothing > 0:
        per_class = flat if weight is None else flat * weight.detach()
        smooth = where(kept, -per_class.sum(axis=1), zero)
        loss = (1 - label_smoothing) * loss + (label_smoothing / C) * smooth
    if reduction == "none":
        return loss.reshape(out_shape).squeeze(0) if unbatched else loss.reshape(out_shape)
    return _reduce(loss, reduction, denominator=denominator)


def _soft_cross_entropy(logp, target, weight, reduction, label_smoothing, name):
    """Cross-entropy against class probabilities ``target`` (same shape as the input)."""
    _check_reduction(reduction, name)
    # Outside [0, 1] the smoothed target has negative "probabilities": a loss
    # without meaning, so refused here as on the class-index path.
    label_smoothing = check_probability(f"{name}: label_smoothing", label_smoothing)
    C = logp.shape[1] if logp.ndim > 1 else logp.shape[0]
    if C == 0:
        raise ValueError(f"{name}: input of shape {logp.shape} has no classes; class "
                         f"probabilities need at least one class")
    if label_smoothing > 0:
        target = target * (1 - label_smoothing) + label_smoothing / C
    if weight is not None:
        weight = _on_device_of(weight, logp, name, "weight", dtype=logp.dtype)
        if weight.shape != (C,):
            raise ValueError(f"{name}: weight must have shape ({C},), got {weight.shape}")
        shape = (C,) + (1,) * (logp.ndim - 2) if logp.ndim > 1 else (C,)
        logp = logp * weight.reshape(shape)
    loss = -(logp * target).sum(axis=1 if logp.ndim > 1 else 0)
    # One term per sample: the mean over an empty batch is NaN, as on the class-index path.
    return _reduce(loss, reduction, denominator=loss.size)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """Cross-entropy between logits ``input`` and ``target``: log_softmax, then NLL.

    ``input``: logits ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)``.
    ``target``: integer class indices ``(N,)`` / ``(N, d1, ...)`` / scalar, or
    class probabilities of the input's shape (a float target).
    ``weight``: optional per-class weights ``(C,)``.  Elements whose target
    is ``ignore_index`` contribute nothing, and ``mean`` averages over the
    others only (weighted by ``weight[target]``).  ``label_smoothing`` eps,
    in [0, 1] for either kind of target, mixes the one-hot (or probability)
    target with the uniform distribution: ``(1 - eps) * onehot + eps / C``.
    With nothing to average (every target ignored, or all their weights 0),
    ``mean`` is NaN, as in PyTorch, and the gradient 0 (not NaN).

    Stable for large logits: log_softmax subtracts each row's maximum.
    """
    name = "cross_entropy"
    _check_input(input, name)
    if input.ndim == 0:
        raise ValueError(f"{name}: input must have a class dimension, got a scalar")
    target = _on_device_of(target, input, name)
    logp = input.log_softmax(axis=1 if input.ndim > 1 else 0)
    if target.dtype.kind == "f" and target.shape == input.shape:
        if ignore_index != -100:   # no class index to compare it with: it would do nothing
            raise ValueError(f"{name}: ignore_index={ignore_index!r} has no meaning for a "
                             f"float target (class probabilities); it applies to integer "
                             f"class indices only")
        return _soft_cross_entropy(logp, target.astype(input.dtype), weight, reduction,
                                   label_smoothing, name)
    return _nll(logp, target, weight, ignore_index, reduction, label_smoothing, name)


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of class indices, given log-probabilities ``input``.

    Shapes and ``weight``/``ignore_index``/``reduction`` as :func:`cross_entropy`.
    """
    _check_input(input, "nll_loss")
    target = _on_device_of(target, input, "nll_loss")
    return _nll(input, target, weight, ignore_index, reduction, 0.0, "nll_loss")


# ---- regression and binary --------------------------------------------------------
def mse_loss(input, target, reduction="mean"):
    """Mean squared error: (input - target)^2, reduced.  Shapes must match."""
    _check_input(input, "mse_loss")
    _check_reduction(reduction, "mse_loss")
    target = _on_device_of(target, input, "mse_loss", dtype=input.dtype)
    _check_same_shape(input, target, "mse_loss")
    diff = input - target
    return _reduce(diff * diff, reduction)


def l1_loss(input, target, reduction="mean"):
    """Mean absolute error: |input - target|, reduced.  Shapes must match."""
    _check_input(input, "l1_loss")
    _check_reduction(reduction, "l1_loss")
    target = _on_device_of(target, input, "l1_loss", dtype=input.dtype)
    _check_same_shape(input, target, "l1_loss")
    return _reduce((input - target).abs(), reduction)


def _regression_pair(input, target, reduction, name):
    _check_input(input, name)
    _check_reduction(reduction, name)
    target = _on_device_of(target, input, name, dtype=input.dtype)
    _check_same_shape(input, target, name)
    return input - target


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (d = input - target), reduced,
    as PyTorch's; ``beta=0`` is :func:`l1_loss`.  Shapes must match."""
    beta = check_number("smooth_l1_loss: beta", beta, low=0)
    d = _regression_pair(input, target, reduction, "smooth_l1_loss")
    a = d.abs()
    if beta == 0:
        return _reduce(a, reduction)
    return _reduce(where(a < beta, d * d * (0.5 / beta), a - 0.5 * beta), reduction)


def huber_loss(input, target, reduction="mean", delta=1.0):
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta) (d = input - target),
    reduced, as PyTorch's: ``smooth_l1_loss`` with ``beta=delta``, times delta."""
    delta = check_number("huber_loss: delta", delta, low=0, open_low=True)
    d = _regression_pair(input, target, reduction, "huber_loss")
    a = d.abs()
    return _reduce(where(a < delta, d * d * 0.5, (a - 0.5 * delta) * delta), reduction)


_KL_REDUCTIONS = _REDUCTIONS + ("batchmean",)


def kl_div(input, target, reduction="mean", log_target=False):
    """target * (log target - input), reduced: KL(target || p) for log-probabilities
    ``input`` = log p, as PyTorch's (``log_target=True``: ``target`` holds log-probabilities
    too).  Shapes must match.

    ``reduction="batchmean"`` divides the sum by the batch size (``input.shape[0]``):
    the KL divergence per sample, which is what one usually wants.  ``"mean"`` is the
    mean over all elements, as in PyTorch (which warns that it is not the KL
    divergence; here the docstring says so instead).  Where the target is 0 its term
    is 0 (0 log 0 = 0), as in PyTorch, and so is that term's gradient with respect to
    the target (PyTorch's is log 0 + 1 = -inf).  A negative target (no probability)
    makes its term NaN, and so the reduced loss, as in PyTorch; its gradient with
    respect to the input stays -target, with respect to the target NaN.
    """
    _check_input(input, "kl_div")
    if reduction not in _KL_REDUCTIONS:
        raise ValueError(f"kl_div: reduction must be one of {_KL_REDUCTIONS}, got "
                         f"{reduction!r}")
    log_target = check_flag("log_target", log_target, "kl_div")
    target = _on_device_of(target, input, "kl_div", dtype=input.dtype)
    _check_same_shape(input, target, "kl_div")
    if log_target:
        loss = target.exp() * (target - input)
    else:
        positive = target > 0
        # 0 log 0 = 0: the log is taken of 1 where the target is not positive; a
        # negative target has no log, and its term is NaN, as PyTorch's xlogy gives.
        log_t = where(target < 0, float("nan"), where(positive, target, 1.0).log())
        loss = target * log_t - target * input
    if reduction != "batchmean":
        return _reduce(loss, reduction)
    if input.ndim == 0:
        raise ValueError("kl_div: reduction='batchmean' needs a batch axis; the input is 0-d")
    return loss.sum() / input.shape[0]


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean",
                                     pos_weight=None):
    """Binary cross-entropy on logits x with targets y in [0, 1], computed stably.

    ``loss = (1 - y) x + L * softplus(-x)`` with ``L = 1 + (pos_weight - 1) y``,
    which for ``pos_weight = 1`` is ``max(x, 0) - x y + log(1 + e^-|x|)``:
    no exp can overflow, whatever the size of x.  ``weight`` multiplies each
    element; ``pos_weight`` (e.g. one per class, the last dimension) weighs
    the positive term; both must broadcast to the input's shape.
    """
    name = "binary_cross_entropy_with_logits"
    _check_input(input, name)
    _check_reduction(reduction, name)
    target = _on_device_of(target, input, name, dtype=input.dtype)
    _check_same_shape(input, target, name)
    if pos_weight is None:
        loss = softplus(input) - input * target
    else:
        pos_weight = _elementwise_weight(pos_weight, input, name, "pos_weight")
        scale = 1 + (pos_weight - 1) * target
        loss = (1 - target) * input + scale * softplus(-input)
    if weight is not None:
        loss = loss * _elementwise_weight(weight, input, name, "weight")
    return _reduce(loss, reduction)


class BinaryCrossEntropy(Function):
    """l = -(y max(log p, -100) + (1 - y) max(log(1 - p), -100));
    dl/dp = (p - y) / max(p (1 - p), 1e-12), dl/dy = max(log(1 - p), -100) - max(log p, -100)"""

    def forward(self, p, y):
        xp = self.xp
        with np.errstate(divide="ignore"):   # log(0) = -inf, clamped just below
            log_p = xp.maximum(xp.log(p), -100)
            log_1mp = xp.maximum(xp.log1p(-p), -100)
        return -(y * log_p + (1 - y) * log_1mp)

    def backward(self, grad_out):
        p, y = self.inputs
        grad_p = grad_y = None
        if p.requires_grad:
            # The derivative of the unclamped loss, its denominator kept away
            # from 0: p = 0 or 1 gets a huge finite gradient, not 0 * inf = NaN.
            grad_p = grad_out * (p - y) / (p * (1 - p)).clip(min=1e-12)
        if y.requires_grad:
            # max(log q, -100) as max(log(max(q, e^-101)), -100): the same values and
            # slopes, without taking log(0).  Not log(max(q, e^-100)): float32 holds
            # e^-100 only as a subnormal, rounded to one whose log is -99.98.
            tiny = float(np.exp(-101.0))
            grad_y = grad_out * ((1 - p).clip(min=tiny).log().clip(min=-100)
                                 - p.clip(min=tiny).log().clip(min=-100))
        return grad_p, grad_y


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """Binary cross-entropy on probabilities p: -(y log p + (1 - y) log(1 - p)).

    As PyTorch, each log is clamped at -100 so p = 0 or 1 gives a large
    finite loss rather than inf, and targets must lie in [0, 1].  ``weight``
    multiplies each element and must broadcast to the input's shape.
    Prefer :func:`binary_cross_entropy_with_logits`, which is stable
    without clamping.
    """
    name = "binary_cross_entropy"
    _check_input(input, name)
    _check_reduction(reduction, name)
    target = _on_device_of(target, input, name, dtype=input.dtype)
    _check_same_shape(input, target, name)
    # "Not in [0, 1]" rather than "< 0 or > 1": NaN is refused too, as PyTorch refuses it.
    input._backend.check(~((input.data >= 0) & (input.data <= 1)), ValueError,
                         f"{name}: input values must be probabilities in [0, 1] (not NaN); "
                         f"for logits use binary_cross_entropy_with_logits")
    # As PyTorch: outside [0, 1] the loss is no cross-entropy and has no
    # minimum (with a target of 2 it falls without bound as p -> 1).
    input._backend.check(~((target.data >= 0) & (target.data <= 1)), ValueError,
                         f"{name}: target values must be probabilities in [0, 1], not NaN "
                         f"(target of shape {target.shape})")
    loss = BinaryCrossEntropy.apply(input, target)
    if weight is not None:
        loss = loss * _elementwise_weight(weight, input, name, "weight")
    return _reduce(loss, reduction)


# ---- Module wrappers -------------------------------------------------------------
class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        _check_reduction(reduction, type(self).__name__)
        self.reduction = reduction

    def _weight_buffer(self, name, value):
        """Register ``value`` (class weights and the like) as a buffer, in its own precision.

        The functional form casts weights to the input's dtype at use, so a
        rounding here (to float32, say) would make a float64 loss differ from
        the functional one.  Arrays keep their float dtype, Python floats are
        float64, integers and booleans are read as float64.
        """
        if value is not None and not isinstance(value, Tensor):
            if not isinstance(value, np.ndarray) and _find_backend_of(value) is None:
                value = np.asarray(value)   # not Tensor(list), which would round to float32
            value = Tensor(value)
            if value.dtype.kind != "f":
                value = value.astype(np.float64)
        self.register_buffer(name, value)

    def extra_repr(self):
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""


class CrossEntropyLoss(_Loss):
    """``loss(logits, target)`` = :func:`cross_entropy` with fixed settings.

    ``weight`` is kept as a buffer in its own precision (see ``_weight_buffer``);
    ``label_smoothing`` outside [0, 1] is refused here, when the loss is built.
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        # Refused when built, not at the first call deep inside a training loop.
        label_smoothing = check_probability(f"{type(self).__name__}: label_smoothing",
                                            label_smoothing)
        self._weight_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return cross_entropy(input, target, self.weight, self.ignore_index, self.reduction,
                             self.label_smoothing)

    def extra_repr(self):
        parts = [super().extra_repr()]
        if self.ignore_index != -100:
            parts.append(f"ignore_index={self.ignore_index}")
        if self.label_smoothing:
            parts.append(f"label_smoothing={self.label_smoothing}")
        return ", ".join(p for p in parts if p)


class NLLLoss(_Loss):
    """``loss(log_probs, target)`` = :func:`nll_loss` with fixed settings."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        self._weight_buffer("weight", weight)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


class MSELoss(_Loss):
    """``loss(input, target)`` = :func:`mse_loss`."""

    def forward(self, input, target):
        return mse_loss(input, target, self.reduction)


class L1Loss(_Loss):
    """``loss(input, target)`` = :func:`l1_loss`."""

    def forward(self, input, target):
        return l1_loss(input, target, self.reduction)


class SmoothL1Loss(_Loss):
    """``loss(input, target)`` = :func:`smooth_l1_loss`."""

    def __init__(self, reduction="mean", beta=1.0):
        super().__init__(reduction)
        self.beta = check_number("SmoothL1Loss: beta", beta, low=0)

    def forward(self, input, target):
        return smooth_l1_loss(input, target, self.reduction, self.beta)


class HuberLoss(_Loss):
    """``loss(input, target)`` = :func:`huber_loss`."""

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction)
        self.delta = check_number("HuberLoss: delta", delta, low=0, open_low=True)

    def forward(self, input, target):
        return huber_loss(input, target, self.reduction, self.delta)


class KLDivLoss(Module):
    """``loss(input, target)`` = :func:`kl_div` (``reduction`` also takes ``"batchmean"``)."""

    def __init__(self, reduction="mean", log_target=False):
        super().__init__()
        if reduction not in _KL_REDUCTIONS:
            raise ValueError(f"KLDivLoss: reduction must be one of {_KL_REDUCTIONS}, got "
                             f"{reduction!r}")
        self.reduction = reduction
        self.log_target = check_flag("log_target", log_target, "KLDivLoss")

    def forward(self, input, target):
        return kl_div(input, target, self.reduction, self.log_target)


class BCEWithLogitsLoss(_Loss):
    """``loss(logits, target)`` = :func:`binary_cross_entropy_with_logits`."""

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction)
        self._weight_buffer("weight", weight)
        self._weight_buffer("pos_weight", pos_weight)

    def forward(self, input, target):
        return binary_cross_entropy_with_logits(input, target, self.weight, self.reduction,
                                                self.pos_weight)


class BCELoss(_Loss):
    """``loss(probs, target)`` = :func:`binary_cross_entropy`."""

    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction)
        self._weight_buffer("weight", weight)

    def forward(self, input, target):
        return binary_cross_entropy(input, target, self.weight, self.reduction)
