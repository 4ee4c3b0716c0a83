"""tinygrad_cnn: a from-scratch reverse-mode autograd engine for convolutional networks.

Start reading at ``autograd.py`` (Function and the reverse sweep), then
``tensor.py``, ``ops.py``, ``conv_arrays.py`` and ``functional.py``.
"""
__version__ = "0.1.0"

from .autograd import Function, no_grad, enable_grad, set_grad_enabled, is_grad_enabled
from .backend import DeviceError, backends, cuda_status, get_backend, register_backend
from .gradcheck import GradcheckError, GradcheckWarning, gradcheck, gradgradcheck
from .tensor import (
    Tensor, tensor, grad, where, concatenate, cat, stack, split, manual_seed, get_rng,
    zeros, ones, full, zeros_like, ones_like, randn, rand, arange, eye,
    float16, float32, float64, int32, int64, bool_,
)
from . import functional, nn, optim, data, viz
from .viz import trace, graph
from ._porting import module_getattr as _module_getattr, module_hint as _module_hint

__all__ = [
    "Function", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled",
    "DeviceError", "backends", "cuda_status", "get_backend", "register_backend",
    "GradcheckError", "GradcheckWarning", "gradcheck", "gradgradcheck",
    "Tensor", "tensor", "grad", "where", "concatenate", "cat", "stack", "split",
    "manual_seed", "get_rng", "zeros", "ones", "full", "zeros_like", "ones_like", "randn",
    "rand", "arange", "eye", "float16", "float32", "float64", "int32", "int64", "bool_",
    "functional", "nn", "optim", "data", "viz", "trace", "graph",
]


# A PyTorch name the package lacks (tg.randint, tg.long, tg.exp) fails with an error
# naming the equivalent here.
__getattr__ = _module_getattr(__name__, _module_hint)
