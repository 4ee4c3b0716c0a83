"""Neural-network building blocks: ``Module``, layers, losses, initialisers, ``summary``.

``Module`` holds parameters, buffers and child modules (see
:mod:`tinygrad_cnn.nn.module`); the layers wrap :mod:`tinygrad_cnn.functional`
with PyTorch's signatures and default initialisations; the loss functions
(``cross_entropy``, ``mse_loss``, ...) and their ``Module`` wrappers live in
:mod:`tinygrad_cnn.nn.losses`; :func:`summary` prints a model's layers with
their parameter counts, what fully- and locally-connected layers would
cost instead, and receptive fields.  The containers (``Sequential``,
``ModuleList``, ``ModuleDict``, ``ParameterList``, ``ParameterDict``) are
PyTorch's, and :mod:`tinygrad_cnn.nn.utils` holds what ported code calls from
``torch.nn.utils`` (gradient clipping, ``parameters_to_vector``).
"""
from . import init, utils
from .module import (IncompatibleKeys, Identity, Module, ModuleDict, ModuleList, Parameter,
                     ParameterDict, ParameterList, RemovableHandle, Sequential)
from .layers import (CELU, ELU, GELU, SELU, AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool1d,
                     AvgPool2d, BatchNorm1d, BatchNorm2d, Conv1d, Conv2d, ConvTranspose2d,
                     Dropout, Dropout2d, Flatten, Fold, GroupNorm, Hardsigmoid, Hardswish,
                     Hardtanh, InstanceNorm1d, InstanceNorm2d, LayerNorm, LeakyReLU, Linear,
                     LocallyConnected2d, LogSoftmax, MaxPool1d, MaxPool2d, Mish, PixelShuffle,
                     PixelUnshuffle, ReLU, ReLU6, Sigmoid, SiLU, Softmax, Softplus, Tanh, Unfold,
                     Upsample, conv_output_size)
from .losses import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, KLDivLoss,
                     L1Loss, MSELoss, NLLLoss, SmoothL1Loss, binary_cross_entropy,
                     binary_cross_entropy_with_logits, cross_entropy, huber_loss, kl_div,
                     l1_loss, mse_loss, nll_loss, smooth_l1_loss, softplus)
from .summary import ModelSummary, summary
from .._porting import module_getattr as _module_getattr, nn_hint as _nn_hint

__all__ = [
    "init", "utils", "Module", "Parameter", "Sequential", "ModuleList", "ModuleDict",
    "ParameterList", "ParameterDict", "Identity",
    "IncompatibleKeys", "RemovableHandle",
    "Linear", "Conv1d", "Conv2d", "ConvTranspose2d", "LocallyConnected2d",
    "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d",
    "Upsample", "PixelShuffle", "PixelUnshuffle", "Unfold", "Fold",
    "Flatten", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Softmax", "LogSoftmax", "GELU", "SiLU",
    "Mish", "ELU", "SELU", "CELU", "Softplus", "Hardtanh", "ReLU6", "Hardsigmoid", "Hardswish",
    "Dropout", "Dropout2d", "BatchNorm1d", "BatchNorm2d", "InstanceNorm1d", "InstanceNorm2d",
    "GroupNorm", "LayerNorm", "conv_output_size",
    "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "binary_cross_entropy_with_logits",
    "binary_cross_entropy", "smooth_l1_loss", "huber_loss", "kl_div", "softplus",
    "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "BCEWithLogitsLoss", "BCELoss",
    "SmoothL1Loss", "HuberLoss", "KLDivLoss", "summary", "ModelSummary",
]


# A PyTorch name this module lacks (nn.functional, nn.UpsamplingNearest2d) fails with an
# error naming the equivalent here.
__getattr__ = _module_getattr(__name__, _nn_hint)
