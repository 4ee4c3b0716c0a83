"""Optimisers, learning-rate schedulers and gradient clipping.

``SGD``, ``Adam``, ``AdamW``, ``RMSprop`` follow PyTorch's update rules
exactly; their ``param_groups`` (list of dicts with ``"lr"`` etc.) are what
schedulers change, and ``optimizer.lr`` is a shortcut to the learning rate
of every group.  The schedulers are PyTorch's ``StepLR``, ``MultiStepLR``,
``ExponentialLR``, ``LinearLR``, ``ConstantLR``, ``PolynomialLR``,
``LambdaLR``, ``MultiplicativeLR``, ``CosineAnnealingLR``,
``CosineAnnealingWarmRestarts``, ``OneCycleLR``, ``CyclicLR``,
``SequentialLR`` and ``ReduceLROnPlateau``.  See
:mod:`tinygrad_cnn.optim.optimizers` and :mod:`tinygrad_cnn.optim.lr_scheduler`.
"""
from .optimizers import (
    SGD, Adam, AdamW, Optimizer, RMSprop, clip_grad_norm_, clip_grad_value_)
from .lr_scheduler import (
    ConstantLR, CosineAnnealingLR, CosineAnnealingWarmRestarts, CyclicLR, ExponentialLR, LambdaLR,
    LinearLR, LRScheduler, MultiplicativeLR, MultiStepLR, OneCycleLR, PolynomialLR,
    ReduceLROnPlateau, SequentialLR, StepLR)
from . import lr_scheduler

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "clip_grad_norm_",
           "clip_grad_value_", "LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR",
           "LinearLR", "ConstantLR", "PolynomialLR", "LambdaLR", "MultiplicativeLR",
           "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "OneCycleLR", "CyclicLR",
           "SequentialLR", "ReduceLROnPlateau", "lr_scheduler"]
