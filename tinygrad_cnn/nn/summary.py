"""``summary(model, input_shape)``: a per-layer table of shapes, parameters and receptive fields.

The lesson it prints: for every convolution, how many parameters the same
layer would need without the two assumptions that make convolutions cheap.

* **fully-connected**: every output unit sees every input unit,
  ``in_volume * out_volume + out_volume`` parameters (volumes per sample,
  C*H*W);
* **locally-connected**: the same windows as the convolution, but no
  weight sharing between positions, ``OH*OW*OC * (C/groups*KH*KW) +
  OC*OH*OW``.

The bias terms (``+ out_volume``, ``+ OC*OH*OW``) are counted only when the
layer has a bias, so the three numbers compare like with like.

The **receptive field** of a layer is the size of the input window that
can influence one of its output units.  It is accumulated through the stack
with ``rf += (k - 1) * dilation * jump; jump *= stride``, where ``jump`` is
the distance, in input pixels, between neighbouring units of the current
feature map.  Elementwise layers (activations, dropout, flatten) and the
normalisation layers keep it.  A normalisation layer scales and shifts each
unit by statistics shared with other units: BatchNorm by its running
statistics in evaluation mode, in which ``summary`` runs the model, but
LayerNorm, GroupNorm and InstanceNorm by statistics over each sample's
whole feature map (or a group of its channels), through which, strictly,
every input pixel influences every unit after the layer.  The field counts
the window a unit is computed from, not such shared statistics (which would
make it the whole input from the first of these layers on and tell the
layers apart no more).  A ``Linear`` layer after the convolutions sees the
whole last feature map; adaptive pooling counts as a pooling whose window is
its largest bin; ``Unfold`` as the convolution whose windows it cuts out.  A
resampling layer reads a window of 1 input pixel (``Upsample`` with a
nearest mode, ``PixelShuffle``), 2 (the linear modes) or 4 (bicubic) with a stride of
input size / output size, and ``PixelUnshuffle`` by r a window of r with
stride r (its channels at one position hold an r x r block): after
upsampling, neighbouring units lie a fraction of an input pixel apart, and
a field that comes out fractional is rounded up.  Like pooling, these
layers have no parameters to compare.  The window may reach into the
padding (zeros, or copies of the input's own pixels with another
``padding_mode``), so it can be larger than the input (the table then says
so).  After a transposed convolution or a ``Fold`` (each output pixel sums
the windows over it), or a layer this module does not know, the receptive
field is not computed ("-").

How layers are found: ``summary`` runs one forward pass on zeros (in
evaluation mode, without building a graph) with hooks on every leaf
module, and lists them in the order they were *called*.  A module with
children that also owns parameters directly gets a row too, before its
children, with only its own parameters (and no receptive field).  The
receptive-field arithmetic assumes that order is a chain, each layer
consuming the previous one's output, as in a ``Sequential`` or a module
whose ``forward`` calls its children one after the other.  A layer whose
input holds another number of values than the previous layer's output
breaks the chain: a shortcut that skips layers (a ResNet's downsampling
branch), a concatenation (a U-Net's skip connections) or an op between the
layers that changes the size (``F.interpolate``, ``F.max_pool2d``) fed it.
From there on the receptive field is not computed ("-"), and the table's
last line names that layer.  A branch that keeps the number of values (an
identity shortcut; a reshape, which is harmless) goes unseen, so for
branching models the shapes and parameter counts are right but a field
that is shown is only indicative.  A module called twice gets two rows;
the totals count each parameter once.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ..autograd import no_grad
from ..tensor import Tensor, _new_shape, float32, zeros
from .layers import (_ACTIVATIONS, AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool1d, AvgPool2d,
                     BatchNorm1d, BatchNorm2d, Conv1d, Conv2d, ConvTranspose2d, Dropout,
                     Dropout2d, Flatten, Fold, GroupNorm, InstanceNorm1d, InstanceNorm2d, LayerNorm,
                     LeakyReLU, Linear, LocallyConnected2d, MaxPool1d, MaxPool2d, PixelShuffle,
                     PixelUnshuffle, ReLU, Sigmoid, Tanh, Unfold, Upsample)
from .module import Identity, Module

__all__ = ["summary", "ModelSummary"]

_ELEMENTWISE = (ReLU, LeakyReLU, Tanh, Sigmoid, Dropout, BatchNorm1d, BatchNorm2d, Identity,
                Flatten)
_ELEMENTWISE += _ACTIVATIONS   # GELU, SiLU, ... (layers' "more activations")
_ELEMENTWISE += (LayerNorm, GroupNorm, InstanceNorm1d, InstanceNorm2d)   # see above
_WINDOWED = (Conv1d, Conv2d, LocallyConnected2d, MaxPool1d, MaxPool2d, AvgPool1d, AvgPool2d)
_ELEMENTWISE += (Dropout2d,)   # resampling
_WINDOWED += (Unfold,)
_RESAMPLING = (Upsample, PixelShuffle, PixelUnshuffle)
# The layers that also take one unbatched sample, and the dimensions of a batch for them.
_BATCH_NDIM = {Conv1d: 3, MaxPool1d: 3, AvgPool1d: 3, Conv2d: 4, ConvTranspose2d: 4,
               LocallyConnected2d: 4, MaxPool2d: 4, AvgPool2d: 4, AdaptiveAvgPool2d: 4,
               AdaptiveMaxPool2d: 4}
_BATCH_NDIM.update({InstanceNorm1d: 3, InstanceNorm2d: 4})
_BATCH_NDIM.update({Unfold: 4, Fold: 3, PixelShuffle: 4, PixelUnshuffle: 4})   # resampling


def _first_tensor(out):
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


def _n(value, n):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def _prod(shape):
    return int(np.prod(shape)) if len(shape) else 1


def _adaptive_window(size, out):
    """Largest bin and mean step of adaptive pooling from ``size`` to ``out`` cells."""
    widths = [math.ceil((i + 1) * size / out) - (i * size) // out for i in range(out)]
    return max(widths), max(size // out, 1)


def _resampling_window(module, size, out):
    """(window, stride) along one axis of a resampling layer from ``size`` to ``out``
    pixels, in input pixels (the stride a Fraction: below 1 when upsampling)."""
    if isinstance(module, PixelShuffle):
        return 1, Fraction(1, module.upscale_factor)
    if isinstance(module, PixelUnshuffle):
        return module.downscale_factor, module.downscale_factor
    if module.mode == "area":   # adaptive average pooling
        return _adaptive_window(size, out)
    if size == out:             # copied
        return 1, 1
    if module.align_corners and out > 1:
        step = Fraction(size - 1, out - 1)
    else:
        step = Fraction(size, out)
    return {"linear": 2, "bilinear": 2, "bicubic": 4}.get(module.mode, 1), step


def _comparisons(module, in_shape, out_shape):
    """``(fully-connected, locally-connected)`` parameter counts, or None where meaningless."""
    if isinstance(module, Linear):
        return sum(p.size for p in module.parameters()), None
    if not isinstance(module, (Conv1d, Conv2d, ConvTranspose2d, LocallyConnected2d)):
        return None, None
    in_vol, out_vol = _prod(in_shape[1:]), _prod(out_shape[1:])
    bias = out_vol if module.bias is not None else 0
    fc = in_vol * out_vol + bias
    k = _prod(module.kernel_size)
    if isinstance(module, LocallyConnected2d):
        lc = sum(p.size for p in module.parameters())
    elif isinstance(module, ConvTranspose2d):
        # No sharing: every input position scatters with its own C -> OC/groups filter.
        lc = _prod(in_shape[2:]) * module.in_channels * (module.out_channels // module.groups) * k \
            + bias
    else:
        lc = _prod(out_shape[2:]) * module.out_channels * (module.in_channels // module.groups) \
            * k + bias
    return fc, lc


class _Field:
    """The receptive-field state carried along the chain of layers."""

    def __init__(self, input_shape):
        spatial = tuple(input_shape[2:])
        self.defined = len(spatial) > 0
        self.rf = (1,) * len(spatial)
        self.jump = (1,) * len(spatial)
        self.spatial = spatial          # the size of the last spatial feature map
        self.full = False               # True once a layer sees the whole input

    def advance(self, module, in_shape, out_shape):
        if not self.defined:
            return None
        if self.full and (isinstance(module, (Linear,) + _ELEMENTWISE)):
            return self.rf
        if isinstance(module, _ELEMENTWISE):
            pass
        elif isinstance(module, _WINDOWED) and not self.full:
            n = len(self.rf)
            if len(in_shape) - 2 != n:
                self.defined = False
                return None
            k = _n(module.kernel_size, n)
            s = _n(module.stride, n)
            d = _n(getattr(module, "dilation", 1), n)
            self.rf = tuple(r + (kk - 1) * dd * j for r, kk, dd, j in zip(self.rf, k, d, self.jump))
            self.jump = tuple(j * ss for j, ss in zip(self.jump, s))
        elif (isinstance(module, (AdaptiveAvgPool2d, AdaptiveMaxPool2d)) and not self.full
              and len(in_shape) == 4):
            windows = [_adaptive_window(i, o) for i, o in zip(in_shape[2:], out_shape[2:])]
            self.rf = tuple(r + (k - 1) * j for r, (k, _), j in zip(self.rf, windows, self.jump))
            self.jump = tuple(j * s for j, (_, s) in zip(self.jump, windows))
        elif (isinstance(module, _RESAMPLING) and not self.full
              and len(in_shape) == len(out_shape) == len(self.rf) + 2):
            windows = [_resampling_window(module, i, o)
                       for i, o in zip(in_shape[2:], out_shape[2:])]
            self.rf = tuple(r + (k - 1) * j for r, (k, _), j in zip(self.rf, windows, self.jump))
            self.jump = tuple(j * s for j, (_, s) in zip(self.jump, windows))
        elif isinstance(module, Linear) and len(in_shape) == 2:
            # Every unit of the last feature map feeds every output unit.
            self.rf = tuple(r + (size - 1) * j
                            for r, size, j in zip(self.rf, self.spatial, self.jump))
            self.full = True
        else:
            self.defined = False
            return None
        if len(out_shape) - 2 == len(self.rf) and not self.full:
            self.spatial = tuple(out_shape[2:])
        return self.rf


class ModelSummary:
    """What :func:`summary` returns: ``rows`` (a list of dicts) and totals; ``str`` is a table.

    Each row has ``name``, ``type``, ``input_shape``, ``output_shape``,
    ``params``, ``fc_params`` and ``lc_params`` (None where not
    meaningful), ``receptive_field`` (a tuple per spatial axis, or None)
    and ``repeat`` (True for a second call of the same module).
    """

    def __init__(self, rows, input_shape, output_shape, total_params, trainable_params,
                 chain_break=None):
        self.rows = rows
        # The layer from which the receptive field is not computed, because its input is
        # not the previous layer's output (see the module docstring), or None.
        self.chain_break = chain_break
        self.input_shape = tuple(input_shape)
        self.output_shape = output_shape
        self.total_params = total_params
        self.trainable_params = trainable_params
        # Swap each conv/local layer for its fully-/locally-connected counterpart
        # (a layer called twice shares its parameters: count it once).
        once = [r for r in rows if not r["repeat"]]
        self.total_params_if_fully_connected = total_params + sum(
            r["fc_params"] - r["params"] for r in once if r["fc_params"] is not None)
        self.total_params_if_locally_connected = total_params + sum(
            r["lc_params"] - r["params"] for r in once if r["lc_params"] is not None)
        fields = [r["receptive_field"] for r in rows]
        self.receptive_field = fields[-1] if fields else None

    @staticmethod
    def _fmt(value):
        if value is None:
            return "-"
        if isinstance(value, tuple):
            return "x".join(str(v) for v in value) if value else "-"
        return f"{value:,}"

    def _field_note(self):
        """Why a receptive field can exceed the image, said where it does: its
        windows reach into the padding around the input; or why there is none."""
        if self.chain_break is not None:
            return (f" (not computed from {self.chain_break} on: that layer's input is not "
                    f"the previous layer's output; a shortcut, a concatenation or an op "
                    f"between the layers changed its size)")
        field, size = self.receptive_field, self.input_shape[2:]
        if not field or len(field) != len(size) or all(f <= s for f, s in zip(field, size)):
            return ""
        return f" (larger than the {self._fmt(tuple(size))} input: it counts the padding)"

    def __str__(self):
        head = ["Layer (type)", "Output shape", "Params", "If fully-connected",
                "If locally-connected", "Receptive field"]
        body = [[f"{r['name']} ({r['type']})", str(list(r["output_shape"])),
                 self._fmt(r["params"]), self._fmt(r["fc_params"]), self._fmt(r["lc_params"]),
                 self._fmt(r["receptive_field"])] for r in self.rows]
        body.insert(0, ["Input", str(list(self.input_shape)), "", "", "", ""])
        widths = [max(len(row[i]) for row in body + [head]) for i in range(len(head))]

        def line(cells):
            return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        rule = "-" * len(line(head))
        out = [rule, line(head), "=" * len(rule)] + [line(r) for r in body] + ["=" * len(rule)]
        out += [
            f"Total params: {self.total_params:,}",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.total_params - self.trainable_params:,}",
            f"Params if every conv/local layer were fully-connected: "
            f"{self.total_params_if_fully_connected:,}",
            f"Params if every conv layer were locally-connected (no weight sharing): "
            f"{self.total_params_if_locally_connected:,}",
            f"Receptive field of one output unit: {self._fmt(self.receptive_field)}"
            f"{self._field_note()}",
            rule,
        ]
        return "\n".join(out)

    __repr__ = __str__


def _check_batched(records, input_shape):
    """Refuse an ``input_shape`` without the batch dimension: the conv and pooling
    layers would run it as one unbatched sample, and every count and receptive field
    here, which read the spatial sizes after the batch and channel axes, would be
    wrong without a word."""
    for module, in_shape, _ in records:
        ndim = next((n for cls, n in _BATCH_NDIM.items() if isinstance(module, cls)), None)
        if ndim is not None and len(in_shape) == ndim - 1:
            raise ValueError(f"summary: input_shape {tuple(input_shape)} reaches "
                             f"{type(module).__name__} as one unbatched sample, of shape "
                             f"{tuple(in_shape)}; give the batch dimension too, e.g. "
                             f"{(1,) + tuple(input_shape)}")


def summary(model, input_shape, dtype=None, device=None):
    """Run ``model`` once on zeros of ``input_shape`` (batch dimension included,
    e.g. ``(1, 1, 28, 28)``; a shape that reaches a conv or pooling layer without it
    is a ``ValueError``) and return a :class:`ModelSummary`.

    ``dtype``/``device`` default to those of the model's first parameter
    (float32 on the default device for a model without parameters).  The
    model's train/eval modes are restored afterwards and no random numbers
    are drawn, so calling ``summary`` does not change a seeded run.
    """
    if not isinstance(model, Module):
        raise TypeError(f"summary needs a Module, got {type(model).__name__}")
    input_shape = _new_shape((input_shape,), "summary: input_shape")
    first = next(model.parameters(), None)
    if dtype is None:
        dtype = first.dtype if first is not None else float32
    if device is None and first is not None:
        device = first.device
    records, handles, pending = [], [], {}
    named = list(model.named_modules())
    names = {id(m): name or type(m).__name__ for name, m in named}
    leaves = {id(m) for _, m in named if next(m.children(), None) is None}

    # A row is reserved when a module is entered (so containers that own
    # parameters precede their children) and completed when it returns.
    def pre_hook(module, args):
        x = _first_tensor(args)
        pending.setdefault(id(module), []).append(len(records))
        records.append([module, x.shape if x is not None else (), ()])

    def hook(module, args, out):
        y = _first_tensor(out)
        records[pending[id(module)].pop()][2] = y.shape if y is not None else ()

    for _, m in named:
        owns_params = any(p is not None for p in m._parameters.values())
        if id(m) in leaves or owns_params:
            handles.append(m.register_forward_pre_hook(pre_hook))
            handles.append(m.register_forward_hook(hook))
    modes = [(m, m.training) for _, m in named]
    model.eval()
    try:
        with no_grad():
            out = model(zeros(input_shape, dtype=dtype, device=device))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            object.__setattr__(m, "training", mode)
    _check_batched(records, input_shape)
    field = _Field(input_shape)
    rows, seen = [], set()
    chain_break, last = None, tuple(input_shape)   # the input a layer in a chain gets
    for module, in_shape, out_shape in records:
        leaf = id(module) in leaves
        repeat = id(module) in seen
        seen.add(id(module))
        if leaf and field.defined and in_shape and _prod(in_shape) != _prod(last):
            field.defined = False
            chain_break = names[id(module)]
        if leaf:
            last = tuple(out_shape)
        # A container row counts only the parameters it owns directly.
        params = sum(p.size for p in module.parameters(recurse=leaf))
        fc, lc = _comparisons(module, in_shape, out_shape) if leaf else (None, None)
        rf = field.advance(module, in_shape, out_shape) if leaf else None
        rows.append(dict(name=names[id(module)], type=type(module).__name__,
                         input_shape=tuple(in_shape), output_shape=tuple(out_shape),
                         params=params, fc_params=fc, lc_params=lc,
                         receptive_field=None if rf is None else tuple(math.ceil(v) for v in rf),
                         repeat=repeat))
    y = _first_tensor(out)
    return ModelSummary(rows, input_shape, y.shape if y is not None else None,
                        model.num_parameters(), model.num_parameters(trainable_only=True),
                        chain_break)
