"""PyTorch names that do not exist here, each with what does the same here.

Code ported from PyTorch calls ``x.numel()`` or ``torch.randint``; here the Tensor
follows NumPy (``x.size``) and the package has its own names.  A failed
attribute lookup of such a name, on a Tensor, the package or ``nn``, raises an
``AttributeError`` that names the equivalent, instead of Python's bare "has no
attribute".  On the Tensor each such name is a class attribute that raises it
(:func:`add_missing_names`); ``nn.Module.__getattr__`` asks :func:`nn_module_hint`;
the package's module-level ``__getattr__``
(PEP 562), which Python calls only after normal lookup has failed, calls
:func:`module_hint`, and ``nn``'s calls :func:`nn_hint`.

Each hint is "use CODE", CODE being what to write here with the names of
PyTorch's call (``x`` the tensor, ``other`` another one), or a note where
nothing here does the same.  ``tests/test_porting.py`` runs every "use" hint
against PyTorch.
"""
from __future__ import annotations

TENSOR_HINTS = {
    # facts
    "numel": "use x.size",
    "nelement": "use x.size",
    "dim": "use x.ndim",
    "ndimension": "use x.ndim",
    "is_cuda": "use x.device.startswith('cuda')",
    # copies, layouts and dtypes
    "t": "use x.T",
    "contiguous": "use x (no memory layout to fix here: reshape and view take any tensor)",
    "clone": "use x * 1 (a new tensor in the graph, for a float or integer x; tg.tensor(x) "
             "is a detached copy)",
    "long": "use x.astype(tg.int64)",
    "int": "use x.astype(tg.int32)",
    "bool": "use x.astype(tg.bool_)",
    "half": "use x.astype(tg.float16)",
    "type_as": "use x.to(other)",
    "view_as": "use x.reshape(other.shape)",
    "reshape_as": "use x.reshape(other.shape)",
    "expand_as": "use x.broadcast_to(other.shape)",
    "unbind": "use list(x) (the slices along axis 0)",
    "repeat": "use tg.cat([x] * n, axis) (along one axis; one call per axis)",
    # new tensors like x
    "new_zeros": "use tg.zeros(shape, dtype=x.dtype, device=x.device)",
    "new_ones": "use tg.ones(shape, dtype=x.dtype, device=x.device)",
    "new_full": "use tg.full(shape, value, dtype=x.dtype, device=x.device)",
    "new_tensor": "use tg.tensor(data, dtype=x.dtype, device=x.device)",
    "new_empty": "use tg.zeros(shape, dtype=x.dtype, device=x.device) (no uninitialised "
                 "memory here)",
    "type": "not provided; x.dtype is the dtype (a NumPy dtype), x.astype(dtype) converts",
    # gradients
    "register_post_accumulate_grad_hook": "not provided; x.register_hook(fn) on a leaf calls "
                                          "fn with each gradient before it is added to "
                                          "x.grad, and x.grad is read after backward",
    # arithmetic and comparisons: the operators
    "add": "use x + other",
    "sub": "use x - other",
    "mul": "use x * other",
    "div": "use x / other",
    "neg": "use -x",
    "pow": "use x ** exponent",
    "square": "use x * x",
    "mm": "use x @ other",
    "bmm": "use x @ other",
    "eq": "use x == other",
    "ne": "use x != other",
    "lt": "use x < other",
    "le": "use x <= other",
    "gt": "use x > other",
    "ge": "use x >= other",
    "logical_not": "use ~x (for a bool x)",
    "logical_and": "use x & other (for bool tensors)",
    "logical_or": "use x | other (for bool tensors)",
    "where": "use tg.where(condition, x, other)",
    "masked_fill": "use tg.where(mask, value, x)",
    # reductions
    "rsqrt": "use x ** -0.5",
    "clamp_min": "use x.clip(min=min)",
    "clamp_max": "use x.clip(max=max)",
    "amax": "use x.max(axis)",
    "amin": "use x.min(axis)",
    "norm": "not provided; (x * x).sum().sqrt() is the 2-norm, but its gradient at x = 0 "
            "is NaN (torch.norm's: 0)",
    # in place: the augmented operators and item assignment
    "add_": "use x += other",
    "sub_": "use x -= other",
    "mul_": "use x *= other",
    "div_": "use x /= other",
    "pow_": "use x **= exponent",
    "zero_": "use x[...] = 0",
    "fill_": "use x[...] = value",
    "copy_": "use x[...] = other",
    "clamp_": "use x[...] = x.clip(min, max)",
    "clip_": "use x[...] = x.clip(min, max)",
    "masked_fill_": "use x[mask] = value",
    "bernoulli_": "not provided; x[...] = tg.rand(x.shape, dtype=x.dtype, device=x.device) "
                  "< p draws the same 0/1 values, from the generator tg.manual_seed seeds",
}

# PyTorch's nn.Module methods that nn.Module here lacks.
NN_MODULE_HINTS = {
    "register_backward_hook": "not provided (PyTorch deprecates it); "
                              "register_full_backward_hook(hook) calls hook(module, "
                              "grad_input, grad_output), as PyTorch's does",
    "register_full_backward_pre_hook": "not provided; register_forward_hook a hook that "
                                       "calls out.register_hook(fn) on the output: fn(grad) "
                                       "sees grad_output and may return a new one",
}

MODULE_HINTS = {
    # making tensors
    "from_numpy": "use tg.tensor(array) (a copy: a tensor here never shares NumPy's memory)",
    "as_tensor": "use tg.tensor(data)",
    "is_tensor": "use isinstance(x, tg.Tensor)",
    "numel": "use x.size",
    "empty": "use tg.zeros(shape) (no uninitialised memory here)",
    "empty_like": "use tg.zeros_like(x) (no uninitialised memory here)",
    "full_like": "use tg.full(x.shape, value, dtype=x.dtype, device=x.device)",
    "randn_like": "use tg.randn(x.shape, dtype=x.dtype, device=x.device)",
    "rand_like": "use tg.rand(x.shape, dtype=x.dtype, device=x.device)",
    "randint": "use tg.tensor(tg.get_rng().integers(low, high, size)) (from the generator "
               "tg.manual_seed seeds)",
    "randperm": "use tg.tensor(tg.get_rng().permutation(n))",
    "linspace": "use tg.tensor(np.linspace(start, end, steps), dtype=tg.float32) "
                "(np: NumPy)",
    "concat": "use tg.cat(tensors, axis)",
    "matmul": "use x @ other",
    "mm": "use x @ other",
    "bmm": "use x @ other",
    # dtypes: NumPy's, also given by name
    "long": "use tg.int64",
    "int": "use tg.int32",
    "float": "use tg.float32",
    "double": "use tg.float64",
    "half": "use tg.float16",
    "bool": "use tg.bool_",
    "int8": "use 'int8' (dtypes are NumPy's, given by name or as numpy.int8)",
    "int16": "use 'int16' (dtypes are NumPy's, given by name or as numpy.int16)",
    "uint8": "use 'uint8' (dtypes are NumPy's, given by name or as numpy.uint8)",
    "bfloat16": "not provided (NumPy has no bfloat16); use tg.float16 or tg.float32",
    # devices, gradients, files
    "device": "not provided: a device is a string here, such as 'cpu', 'cuda' or 'cuda:1'",
    "cuda": "use tg.cuda_status()[0] (torch.cuda.is_available(); tg.cuda_status()[1] says "
            "why not)",
    "inference_mode": "use tg.no_grad()",
    "save": "use checkpoint.save(path, model.state_dict()) (path first; from tinygrad_cnn "
            "import checkpoint)",
    "load": "use checkpoint.load(path) (from tinygrad_cnn import checkpoint; arrays come "
            "back as NumPy arrays, which load_state_dict takes)",
    "utils": "use tg.data (torch.utils.data's DataLoader, Dataset, TensorDataset and Subset)",
    "einsum": "not provided; write the product with @, transposes and sums",
}

NN_HINTS = {
    # torch.nn.functional: here beside nn, not inside it
    "functional": "use tg.functional (torch.nn.functional's ops and losses; import "
                  "tinygrad_cnn.functional as F)",
    # deprecated in PyTorch in favour of nn.Upsample
    "UpsamplingNearest2d": "not provided (PyTorch deprecates it); nn.Upsample(size, "
                           "scale_factor, mode='nearest') does the same",
    "UpsamplingBilinear2d": "not provided (PyTorch deprecates it); nn.Upsample(size, "
                            "scale_factor, mode='bilinear', align_corners=True) does the same",
}


def tensor_hint(name):
    """The error's text for PyTorch's Tensor attribute ``name``, or None."""
    hint = TENSOR_HINTS.get(name)
    return None if hint is None else f"(a PyTorch name; this Tensor follows NumPy): {hint}"


def module_hint(name):
    """The error's text for PyTorch's function ``torch.<name>``, or None: from the table,
    else, for a Tensor method (``torch.exp(x)``, ``torch.clamp(x, 0)``), the method."""
    hint = MODULE_HINTS.get(name)
    if hint is not None:
        return f"(a PyTorch name): {hint}"
    if name.startswith("_"):
        return None
    from .tensor import Tensor
    # Functions only: a property (size, shape, T) is no function in PyTorch either.
    if callable(getattr(Tensor, name, None)):
        return f"(a Tensor method here, as in NumPy's arrays): use x.{name}(...)"
    return None


def nn_hint(name):
    """The error's text for PyTorch's ``torch.nn.<name>``, or None."""
    hint = NN_HINTS.get(name)
    return None if hint is None else f"(a PyTorch name): {hint}"


def nn_module_hint(name):
    """The error's text for PyTorch's ``nn.Module`` attribute ``name``, or None."""
    hint = NN_MODULE_HINTS.get(name)
    return None if hint is None else f"(a PyTorch name): {hint}"


def hint_error(what, name, hint):
    """The AttributeError for ``what`` (``"'Tensor' object"``, ``"module 'tinygrad_cnn'"``)
    lacking ``name``: Python's wording, with ``hint`` added.  ``name=None`` keeps Python
    from adding its own "Did you mean" guess (x.long -> 'log'), which the hint replaces."""
    return AttributeError(f"{what} has no attribute '{name}' {hint}", name=None)


class _Missing:
    """A PyTorch name the Tensor lacks, as a class attribute: reading it raises the
    AttributeError with the hint, so ``hasattr`` answers False.  Not a
    ``Tensor.__getattr__``: merely defining one slows every attribute read of
    every tensor (CPython 3.11+ then stops specialising them), some 20 ns per
    ``x.data``."""

    def __init__(self, name):
        self.name = name
        # What help(tg.Tensor) prints under the name, which it lists among the
        # methods: without it a learner reads ``numel`` there as a method that exists.
        self.__doc__ = f"Not defined here {tensor_hint(name)}"

    def __get__(self, obj, owner=None):
        owner = owner if owner is not None else type(obj)
        raise hint_error(f"'{owner.__name__}' object", self.name, tensor_hint(self.name))


class ElementCount(int):
    """``x.size``: the number of elements, a plain int in all but one thing.

    Ported PyTorch code calls it (``x.size()``, ``x.size(0)``), which an int
    answers with Python's bare "'int' object is not callable"; this one says
    what to write here instead.  Arithmetic on it gives plain ints."""

    __slots__ = ()

    def __call__(self, *args, **kwargs):
        raise TypeError(f"x.size is the number of elements ({int(self)}), an int as in "
                        f"NumPy, not PyTorch's method: use x.shape for x.size() and "
                        f"x.shape[dim] for x.size(dim)")


_ABSENT = object()


def _found(cls, name):
    """What attribute lookup on ``cls`` finds first in the MRO for ``name``, without
    running it (a _Missing would raise); _ABSENT if nothing."""
    for k in cls.__mro__:
        if name in vars(k):
            return vars(k)[name]
    return _ABSENT


def is_missing(cls, name):
    """Whether ``name`` on ``cls`` is a :class:`_Missing`, not something real of ``cls``
    or a subclass."""
    return isinstance(_found(cls, name), _Missing)


def add_missing_names(cls):
    """Give ``cls`` (the Tensor) a :class:`_Missing` for each name of TENSOR_HINTS that
    it does not have."""
    for name in TENSOR_HINTS:
        if _found(cls, name) is _ABSENT:
            setattr(cls, name, _Missing(name))


def module_getattr(module_name, hint_of):
    """The ``__getattr__`` (PEP 562) of module ``module_name``, which Python calls only
    for a name the module lacks: an AttributeError, with the hint ``hint_of(name)``
    gives where it gives one."""
    def __getattr__(name):
        hint = hint_of(name)
        if hint is not None:
            raise hint_error(f"module '{module_name}'", name, hint)
        raise AttributeError(f"module '{module_name}' has no attribute '{name}'")
    return __getattr__
