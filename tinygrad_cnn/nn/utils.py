"""What ported code reaches as ``torch.nn.utils``: gradient clipping and parameter vectors.

``clip_grad_norm_`` and ``clip_grad_value_`` are the functions of
:mod:`tinygrad_cnn.optim` (``nn.utils.clip_grad_norm_ is
optim.clip_grad_norm_``).  :func:`parameters_to_vector` and
:func:`vector_to_parameters` turn a model's parameters into one flat vector
and back, in the order given (``model.parameters()``'s), as PyTorch's do.
"""
from __future__ import annotations

import numpy as np

from ..autograd import no_grad
from ..backend import DeviceError
from ..optim.optimizers import _tensor_list, clip_grad_norm_, clip_grad_value_
from ..tensor import Tensor, concatenate

__all__ = ["clip_grad_norm_", "clip_grad_value_", "parameters_to_vector",
           "vector_to_parameters"]


def _on_one_device(params, op):
    """The device of every tensor of ``params``, or a DeviceError naming the first two
    that differ (one vector cannot hold values of two devices)."""
    device = params[0].device
    for i, p in enumerate(params):
        if p.device != device:
            raise DeviceError(f"{op}: parameter 0 is on {device} but parameter {i} is on "
                              f"{p.device}; move the model to one device first "
                              f"(model.to(device))")
    return device


def parameters_to_vector(parameters):
    """All of ``parameters`` flattened and joined into one 1-d tensor, in their order.

    The vector is a new tensor computed by ops, so gradients flow from it back
    to the parameters, as in PyTorch.  Its dtype is the parameters' (mixed
    dtypes combine as ``tg.cat`` combines them: float32 with float64 gives
    float64).  The parameters must be on one device.
    """
    params = _tensor_list(parameters, "parameters_to_vector")
    if not params:
        raise ValueError("parameters_to_vector: no parameters were given (an empty "
                         "iterable); expected at least one tensor")
    _on_one_device(params, "parameters_to_vector")
    return concatenate([p.reshape(-1) for p in params])   # each (size,) -> (total,)


def vector_to_parameters(vec, parameters):
    """Copy consecutive slices of the 1-d tensor ``vec`` into ``parameters``, in place.

    The inverse of :func:`parameters_to_vector`: parameter ``i`` takes the
    next ``parameters[i].size`` values, reshaped to its shape.  As in
    PyTorch, this writes data only (no graph, gradients untouched); unlike
    PyTorch's, which makes each parameter a view of ``vec`` in ``vec``'s
    dtype, the parameters keep their own memory and dtype (``vec`` is cast
    to it, like ``load_state_dict`` does), so an optimiser holding them goes
    on working.  ``vec`` must be a floating-point vector on the parameters'
    device with exactly as many elements as they have in all; every check is
    made before the first parameter is changed.
    """
    op = "vector_to_parameters"
    if not isinstance(vec, Tensor):
        raise TypeError(f"{op}: vec must be a Tensor, got {type(vec).__name__}; convert it "
                        f"first with tg.tensor()")
    if vec.ndim != 1:
        raise ValueError(f"{op}: vec must be a 1-d vector, got shape {vec.shape}; flatten "
                         f"it with vec.reshape(-1)")
    if vec.dtype.kind != "f":
        raise TypeError(f"{op}: vec has dtype {vec.dtype}; parameters take floating-point "
                        f"values: convert it first, e.g. with vec.float()")
    params = _tensor_list(parameters, op)
    for i, p in enumerate(params):
        if p.dtype.kind != "f":
            raise TypeError(f"{op}: parameter {i} has dtype {p.dtype}; expected "
                            f"floating-point tensors")
    total = sum(p.size for p in params)
    if vec.shape[0] != total:
        shapes = ", ".join(str(p.shape) for p in params)
        raise ValueError(f"{op}: vec has {vec.shape[0]} elements but the {len(params)} "
                         f"parameter(s) have {total} in all (shapes {shapes})")
    if not params:
        return
    device = _on_one_device(params, op)
    if vec.device != device:
        raise DeviceError(f"{op}: vec is on {vec.device} but the parameters are on {device}; "
                          f"move it with vec.to({device!r})")
    pieces, overflows, start = [], [], 0   # overflows: (parameter index, flag on device)
    xp = vec.xp
    with vec._backend.context():
        for i, p in enumerate(params):
            piece = vec.data[start:start + p.size].reshape(p.shape)  # (size,) -> p.shape
            start += p.size
            if piece.dtype != p.dtype:
                with np.errstate(over="ignore"):   # an overflow is reported below
                    cast = piece.astype(p.dtype)
                # A narrowing cast (float64 -> float32) turns values beyond the range into
                # inf: refused, as load_state_dict refuses them.
                if not np.can_cast(piece.dtype, p.dtype, casting="safe"):
                    overflows.append((i, (xp.isfinite(piece) & ~xp.isfinite(cast)).any()))
                piece = cast
            pieces.append(piece)
        # One host synchronisation for all parameters, not one per parameter.
        if overflows and bool(xp.stack([flag for _, flag in overflows]).any()):
            i = next(i for i, flag in overflows if bool(flag))
            raise ValueError(f"{op}: parameter {i} is {params[i].dtype} and its slice of vec "
                             f"({vec.dtype}) holds values beyond that dtype's range (largest "
                             f"finite value {np.finfo(params[i].dtype).max}); nothing was "
                             f"changed")
        with no_grad():
            for p, piece in zip(params, pieces):
                p._own_writeable_data()   # a read-only parameter gets a copy of its own
                with p._backend.context():
                    p.data[...] = piece
                p._bump_version()
