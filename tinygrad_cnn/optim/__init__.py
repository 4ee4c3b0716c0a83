"""Optimisers, learning-rate schedulers and gradient clipping.

``SGD``, ``Adam``, ``AdamW`` follow PyTorch's update rules exactly; their
``param_groups`` (list of dicts with ``"lr"`` etc.) are what schedulers
change, and ``optimizer.lr`` is a shortcut to the learning rate of every
group.  See :mod:`tinygrad_cnn.optim.optimizers` and
:mod:`tinygrad_cnn.optim.lr_scheduler`.
"""
from .optimizers import SGD, Adam, AdamW, Optimizer, clip_grad_norm_, clip_grad_value_
from .lr_scheduler import CosineAnnealingLR, LRScheduler, OneCycleLR, StepLR
from . import lr_scheduler

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "clip_grad_norm_", "clip_grad_value_",
           "LRScheduler", "StepLR", "CosineAnnealingLR", "OneCycleLR", "lr_scheduler"]
