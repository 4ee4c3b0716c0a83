"""Tests for the CNN primitives in ``tinygrad_cnn.functional``.

One table, ``CASES``, lists every op on a grid of small shapes and
hyper-parameters; each concern is one parametrised test run over it:

* ``test_gradcheck`` / ``test_gradgradcheck``: analytic gradients against
  finite differences, in float64; ``test_higher_orders`` (cases flagged
  ``higher_orders``): third and fourth derivatives too;
* ``test_matches_torch``: forward and every input gradient against
  ``torch.nn.functional`` (skipped without torch), in float64 and float32;
* ``test_float32_forward``: float32 results agree with float64 ones;
* ``test_on_device``: the same results on every backend of ``conftest``;
* ``test_partial_requires_grad``, ``test_conv_in_image_chunks``: the
  implementation's shortcuts (gradients only where asked, batches split to
  cap im2col memory) change nothing;
* ``test_mixed_float_dtypes_compute_in_float64`` (conv, local2d and linear
  cases): one float64 operand makes the whole op float64;
* ``test_results_keep_their_values_after_the_next_call``: outputs and
  gradients are arrays of their own (no view of an input, no reused buffer);
* ``test_gradients_ignore_the_upstream_layout``: the same input gradients
  whatever the memory layout of the upstream gradient (Fortran order,
  batch-last, negative or step strides, a stride-0 broadcast), which the
  backward leaves unchanged.

A second table, ``LOOP_SPECS``, draws random shapes and hyper-parameters
with hypothesis and compares forward and vector-Jacobian products with the
explicit-loop references in ``reference_loops.py`` (and the references
themselves with torch).  Then come identities between ops, the max-pool tie
rule, error messages, dropout, and negative controls showing that the
harness does fail on a wrong backward.

Max-pool inputs are permutations of well-separated values, so no window has
a tie and finite differences never cross a switch of the maximum; relu-like
inputs stay away from 0.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import tinygrad_cnn as tg
import tinygrad_cnn.functional as F
from tinygrad_cnn import GradcheckError, Tensor, conv_arrays, gradcheck, gradgradcheck

try:  # tests/ as a package, or tests/ on sys.path (pytest's default rootdir mode)
    from . import reference_loops as ref
    from .conftest import check_gradients_ignore_upstream_layout, forward_and_grads
except ImportError:
    import reference_loops as ref
    from conftest import check_gradients_ignore_upstream_layout, forward_and_grads


# ---- input builders: rng -> float64 array ------------------------------------------
def randn(*shape):
    return lambda rng: rng.standard_normal(shape)


def distinct(*shape):
    """Tie-free values for max pooling: a shuffled grid in [-1, 1], spacing >= 2e-3."""
    def build(rng):
        n = math.prod(shape)
        return rng.permutation(np.linspace(-1.0, 1.0, n)).reshape(shape)
    return build


def away_from_zero(*shape):
    """Values with |x| in [0.1, 1], so relu-like kinks are never crossed."""
    def build(rng):
        return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.1, 1.0, size=shape)
    return build


def away_from(*shape, points, low=-8.0, high=8.0):
    """Uniform in [low, high] but at least 0.1 from each of ``points`` (the kinks of
    hardtanh, relu6, hardsigmoid, hardswish; softplus's switch to its linear region)."""
    def build(rng):
        x = rng.uniform(low, high, size=shape)
        for p in points:
            near = np.abs(x - p) < 0.1
            x[near] += np.where(x[near] >= p, 0.2, -0.2)
        return x
    return build


def scaled_randn(*shape, scale):
    return lambda rng: scale * rng.standard_normal(shape)


def n_blocks(size, kernel, dilation=1, padding=0, stride=1):
    """Number of sliding blocks of unfold, for shaping fold inputs."""
    (H, W), (KH, KW), (dh, dw), (ph, pw), (sh, sw) = map(
        ref.pair, (size, kernel, dilation, padding, stride))
    return (ref.window_count(H, KH, sh, ph, ph, dh) *
            ref.window_count(W, KW, sw, pw, pw, dw))


@dataclass(frozen=True)
class Case:
    """An op applied to freshly built inputs: ``fn(F, *tensors)``.

    ``fn`` takes the functional namespace as its first argument, so the same
    lambda runs on ``tinygrad_cnn.functional`` and on ``torch.nn.functional``.
    """
    name: str
    fn: Callable
    inputs: tuple
    gradgrad: bool = False
    higher_orders: bool = False   # also third and fourth derivatives (small cases only)

    def arrays(self, seed=0):
        rng = np.random.default_rng(seed)
        return [build(rng) for build in self.inputs]


def case(name, fn, *inputs, **flags):
    return Case(name, fn, inputs, **flags)


def _running(x):
    """Running statistics (C,) for batch_norm and instance_norm of x (N, C, ...): fresh
    constants at every call (the ops update them in place), of x's library, dtype and
    device; no gradient, as PyTorch requires."""
    C = x.shape[1]
    mean, var = np.linspace(-0.5, 0.5, C), np.linspace(0.5, 2.0, C)
    if isinstance(x, Tensor):
        return (tg.tensor(mean, dtype=x.dtype, device=x.device),
                tg.tensor(var, dtype=x.dtype, device=x.device))
    import torch
    return torch.tensor(mean, dtype=x.dtype), torch.tensor(var, dtype=x.dtype)


CASES = [
    # conv2d: batch 1 and 2, odd/even/non-square, strides, paddings, dilations, groups.
    case("conv2d_b1_single_channel", lambda F, x, w: F.conv2d(x, w),
         randn(1, 1, 5, 5), randn(1, 1, 3, 3)),
    case("conv2d_nonsquare_bias", lambda F, x, w, b: F.conv2d(x, w, b),
         randn(2, 3, 5, 6), randn(4, 3, 3, 2), randn(4), gradgrad=True),
    case("conv2d_stride2_untiled", lambda F, x, w, b: F.conv2d(x, w, b, stride=2),
         randn(2, 2, 6, 7), randn(3, 2, 3, 3), randn(3)),
    case("conv2d_stride3x2_pad1", lambda F, x, w: F.conv2d(x, w, stride=(3, 2), padding=1),
         randn(1, 2, 7, 7), randn(2, 2, 2, 3)),
    case("conv2d_pad2_dil2", lambda F, x, w, b: F.conv2d(x, w, b, padding=2, dilation=2),
         randn(2, 2, 6, 5), randn(3, 2, 3, 2), randn(3)),
    case("conv2d_pair_args",
         lambda F, x, w: F.conv2d(x, w, stride=(1, 2), padding=(1, 2), dilation=(2, 1)),
         randn(2, 2, 5, 4), randn(2, 2, 2, 3)),
    case("conv2d_same_odd", lambda F, x, w, b: F.conv2d(x, w, b, padding="same"),
         randn(2, 3, 5, 6), randn(2, 3, 3, 3), randn(2)),
    case("conv2d_same_even_dil",
         lambda F, x, w: F.conv2d(x, w, padding="same", dilation=(2, 1)),
         randn(1, 2, 5, 6), randn(3, 2, 2, 4)),
    case("conv2d_valid", lambda F, x, w: F.conv2d(x, w, padding="valid"),
         randn(2, 2, 4, 5), randn(2, 2, 2, 2)),
    case("conv2d_groups2_stride2_pad1",
         lambda F, x, w, b: F.conv2d(x, w, b, stride=2, padding=1, groups=2),
         randn(1, 4, 4, 5), randn(4, 2, 2, 3), randn(4), gradgrad=True, higher_orders=True),
    case("conv2d_depthwise_mult2",
         lambda F, x, w, b: F.conv2d(x, w, b, padding=1, groups=3),
         randn(2, 3, 6, 5), randn(6, 1, 3, 3), randn(6)),
    case("conv2d_depthwise_dil2", lambda F, x, w: F.conv2d(x, w, groups=4, dilation=2),
         randn(1, 4, 5, 5), randn(4, 1, 2, 2)),
    # Depthwise convolutions with 7x7 kernels (5x5 at stride 1) take the depthwise array
    # code (loops of multiply-adds over kernel offsets, conv_arrays.depthwise_conv_array);
    # the others above and here take it in test_depthwise_path_*, which force it.
    case("conv2d_depthwise_7x7_same_bias",
         lambda F, x, w, b: F.conv2d(x, w, b, padding="same", groups=3),
         randn(2, 3, 7, 6), randn(3, 1, 7, 7), randn(3), gradgrad=True),
    case("conv2d_depthwise_7x7_stride2_dil2x1",
         lambda F, x, w: F.conv2d(x, w, stride=2, padding=3, dilation=(2, 1), groups=2),
         randn(3, 2, 9, 8), randn(2, 1, 7, 7)),
    case("conv2d_depthwise_same_even_b1",
         lambda F, x, w: F.conv2d(x, w, padding="same", groups=4),
         randn(1, 4, 5, 6), randn(4, 1, 2, 4)),
    case("conv2d_depthwise_mult3_stride2_pad1x2",
         lambda F, x, w, b: F.conv2d(x, w, b, stride=2, padding=(1, 2), groups=2),
         randn(3, 2, 7, 6), randn(6, 1, 3, 3), randn(6), gradgrad=True),
    case("conv_transpose2d_depthwise_stride2",
         lambda F, x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1,
                                               groups=3),
         randn(2, 3, 4, 3), randn(3, 1, 3, 3), randn(3)),
    case("conv2d_1x1", lambda F, x, w, b: F.conv2d(x, w, b),
         randn(2, 3, 4, 3), randn(4, 3, 1, 1), randn(4)),
    case("conv2d_batch4_stride2_groups2",
         lambda F, x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=(0, 1), groups=2),
         randn(4, 2, 5, 4), randn(4, 1, 2, 3), randn(4), gradgrad=True),
    case("conv2d_batch5_dil2", lambda F, x, w: F.conv2d(x, w, padding=1, dilation=2),
         randn(5, 2, 4, 5), randn(3, 2, 2, 3)),
    case("conv2d_kernel_covers_input", lambda F, x, w: F.conv2d(x, w),
         randn(2, 2, 3, 4), randn(3, 2, 3, 4)),
    # Narrowing stride-1 convs take their input gradient as a correlation with the
    # flipped kernel: an even "same" kernel (asymmetric padding), groups, unequal
    # dilations; padding beyond the kernel (the route is invalid there) and a stride
    # along one axis only (invalid too) must take the fold route.
    case("conv2d_flipped_same_even_groups2_dil2x1",
         lambda F, x, w, b: F.conv2d(x, w, b, padding="same", dilation=(2, 1), groups=2),
         randn(2, 4, 5, 6), randn(2, 2, 2, 4), randn(2)),
    case("conv2d_narrowing_pad_beyond_kernel", lambda F, x, w: F.conv2d(x, w, padding=(1, 2)),
         randn(1, 3, 3, 4), randn(2, 3, 1, 2)),
    case("conv2d_narrowing_stride1x2", lambda F, x, w: F.conv2d(x, w, padding=1, stride=(1, 2)),
         randn(1, 4, 4, 6), randn(1, 4, 3, 3)),
    # conv_transpose2d
    case("conv_transpose2d_basic", lambda F, x, w, b: F.conv_transpose2d(x, w, b),
         randn(2, 3, 4, 5), randn(3, 2, 3, 3), randn(2), gradgrad=True),
    case("conv_transpose2d_stride2_pad1_outpad1",
         lambda F, x, w: F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1),
         randn(1, 2, 3, 4), randn(2, 3, 3, 2)),
    case("conv_transpose2d_stride3x2_outpad",
         lambda F, x, w, b: F.conv_transpose2d(x, w, b, stride=(3, 2), output_padding=(2, 1)),
         randn(2, 2, 3, 3), randn(2, 2, 2, 3), randn(2)),
    case("conv_transpose2d_groups2",
         lambda F, x, w, b: F.conv_transpose2d(x, w, b, stride=2, groups=2),
         randn(1, 4, 3, 3), randn(4, 2, 2, 3), randn(4), gradgrad=True),
    case("conv_transpose2d_dil2_pad2",
         lambda F, x, w: F.conv_transpose2d(x, w, padding=2, dilation=2),
         randn(2, 2, 4, 3), randn(2, 3, 3, 3)),
    case("conv_transpose2d_batch4_stride2",
         lambda F, x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1),
         randn(4, 2, 3, 3), randn(2, 3, 3, 3), randn(3)),
    # unfold / fold
    case("unfold_nonsquare_kernel", lambda F, x: F.unfold(x, (2, 3)),
         randn(2, 3, 5, 6), gradgrad=True),
    case("unfold_dil2_pad1_stride2",
         lambda F, x: F.unfold(x, 3, dilation=2, padding=1, stride=2), randn(1, 2, 7, 6)),
    case("unfold_stride2x3_pad0x2",
         lambda F, x: F.unfold(x, (2, 2), padding=(0, 2), stride=(2, 3)), randn(2, 2, 5, 5)),
    # A 1x1 kernel, or one window over the whole unpadded input: the columns hold x's
    # values in x's order, so a view of x is at hand (fold's output: cols' values).
    case("unfold_1x1", lambda F, x: F.unfold(x, 1), randn(2, 3, 3, 4)),
    case("unfold_one_window", lambda F, x: F.unfold(x, (3, 4)), randn(2, 2, 3, 4)),
    case("fold_1x1", lambda F, c: F.fold(c, (3, 4), 1), randn(2, 3, 12)),
    case("fold_basic", lambda F, c: F.fold(c, (5, 6), (2, 3)),
         randn(2, 3 * 6, n_blocks((5, 6), (2, 3))), gradgrad=True),
    case("fold_dil2_pad1_stride2",
         lambda F, c: F.fold(c, (7, 6), 3, dilation=2, padding=1, stride=2),
         randn(1, 2 * 9, n_blocks((7, 6), 3, 2, 1, 2))),
    case("fold_stride_untiled",
         lambda F, c: F.fold(c, (5, 4), (2, 2), stride=(2, 1), padding=(1, 0)),
         randn(2, 2 * 4, n_blocks((5, 4), 2, 1, (1, 0), (2, 1)))),
    # max_pool2d (tie-free inputs)
    case("max_pool2d_k2", lambda F, x: F.max_pool2d(x, 2),
         distinct(2, 3, 6, 6), gradgrad=True),
    case("max_pool2d_k3_s2_untiled", lambda F, x: F.max_pool2d(x, 3, 2),
         distinct(2, 2, 7, 6)),
    # stride == kernel, but the last row and column lie in no window (their gradient is 0)
    case("max_pool2d_k2_rest_uncovered", lambda F, x: F.max_pool2d(x, 2),
         distinct(2, 2, 5, 7)),
    case("max_pool2d_nonsquare_pad1",
         lambda F, x: F.max_pool2d(x, (3, 2), stride=(2, 1), padding=1),
         distinct(1, 3, 5, 6), gradgrad=True, higher_orders=True),
    case("max_pool2d_dil2", lambda F, x: F.max_pool2d(x, 2, stride=1, dilation=2),
         distinct(2, 2, 5, 6)),
    case("max_pool2d_ceil", lambda F, x: F.max_pool2d(x, 3, 2, ceil_mode=True),
         distinct(2, 2, 6, 6)),
    case("max_pool2d_ceil_pad1",
         lambda F, x: F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True),
         distinct(1, 2, 5, 6)),
    case("max_pool2d_ceil_window_over_input",    # 4 rows of window, 3 of input
         lambda F, x: F.max_pool2d(x, 4, ceil_mode=True), distinct(2, 2, 3, 8)),
    case("max_pool2d_return_indices",
         lambda F, x: F.max_pool2d(x, 2, stride=(2, 1), padding=1, return_indices=True),
         distinct(2, 2, 5, 4)),
    # avg_pool2d
    case("avg_pool2d_k2", lambda F, x: F.avg_pool2d(x, 2), randn(2, 3, 6, 6), gradgrad=True),
    case("avg_pool2d_pad1_include",
         lambda F, x: F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=True),
         randn(2, 2, 5, 6)),
    case("avg_pool2d_pad1_exclude",
         lambda F, x: F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False),
         randn(2, 2, 5, 6)),
    case("avg_pool2d_ceil_pad1_include",
         lambda F, x: F.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True),
         randn(1, 2, 6, 5)),
    case("avg_pool2d_ceil_exclude",
         lambda F, x: F.avg_pool2d(x, (2, 3), (2, 2), padding=(1, 1), ceil_mode=True,
                                   count_include_pad=False),
         randn(2, 2, 6, 7), gradgrad=True, higher_orders=True),
    case("avg_pool2d_ceil_window_over_input",
         lambda F, x: F.avg_pool2d(x, 3, ceil_mode=True), randn(2, 2, 2, 5)),
    case("avg_pool2d_ceil_window_over_input_exclude",
         lambda F, x: F.avg_pool2d(x, (3, 2), ceil_mode=True, count_include_pad=False),
         randn(1, 2, 2, 5)),
    case("avg_pool2d_divisor_override",
         lambda F, x: F.avg_pool2d(x, 3, 2, padding=1, divisor_override=3),
         randn(1, 2, 5, 5)),
    # the override wins over count_include_pad=False too
    case("avg_pool2d_divisor_override_exclude",
         lambda F, x: F.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True, count_include_pad=False,
                                   divisor_override=2),
         randn(1, 2, 6, 5)),
    case("avg_pool2d_nonsquare_stride", lambda F, x: F.avg_pool2d(x, (2, 3), stride=(1, 2)),
         randn(2, 2, 5, 7)),
    # adaptive pools, divisible and not, smaller and larger than the input
    case("adaptive_avg_pool2d_nondivisible", lambda F, x: F.adaptive_avg_pool2d(x, (3, 2)),
         randn(2, 3, 7, 5), gradgrad=True),
    case("adaptive_avg_pool2d_int", lambda F, x: F.adaptive_avg_pool2d(x, 4),
         randn(1, 2, 6, 5)),
    case("adaptive_avg_pool2d_global", lambda F, x: F.adaptive_avg_pool2d(x, 1),
         randn(2, 3, 4, 5)),
    case("adaptive_avg_pool2d_upsample", lambda F, x: F.adaptive_avg_pool2d(x, (3, 4)),
         randn(1, 2, 5, 3)),
    case("adaptive_max_pool2d_nondivisible", lambda F, x: F.adaptive_max_pool2d(x, (3, 2)),
         distinct(1, 2, 7, 5), gradgrad=True, higher_orders=True),
    case("adaptive_max_pool2d_divisible", lambda F, x: F.adaptive_max_pool2d(x, 3),
         distinct(1, 2, 6, 6)),
    case("adaptive_max_pool2d_upsample", lambda F, x: F.adaptive_max_pool2d(x, (2, 4)),
         distinct(2, 2, 5, 3)),
    # None keeps that axis's size: on non-square inputs it must be the right axis
    case("adaptive_avg_pool2d_keep_width", lambda F, x: F.adaptive_avg_pool2d(x, (3, None)),
         randn(1, 2, 7, 5)),
    case("adaptive_max_pool2d_keep_height", lambda F, x: F.adaptive_max_pool2d(x, (None, 2)),
         distinct(1, 2, 5, 7)),
    # local2d
    case("local2d_basic", lambda F, x, w, b: F.local2d(x, w, b),
         randn(2, 3, 4, 4), randn(2, 2, 2, 3, 3, 3), randn(2, 2, 2), gradgrad=True),
    case("local2d_stride2_pad1_nonsquare",
         lambda F, x, w: F.local2d(x, w, stride=2, padding=1),
         randn(1, 2, 6, 5), randn(2, 4, 3, 2, 2, 3)),
    case("local2d_dil2_pairs",
         lambda F, x, w, b: F.local2d(x, w, b, stride=(1, 2), padding=(0, 1), dilation=2),
         randn(2, 2, 5, 5), randn(3, 3, 3, 2, 2, 2), randn(3, 3, 3)),
    # linear
    case("linear_bias", lambda F, x, w, b: F.linear(x, w, b),
         randn(3, 4), randn(5, 4), randn(5), gradgrad=True),
    case("linear_batch_dims", lambda F, x, w: F.linear(x, w), randn(2, 3, 4), randn(2, 4)),
    case("linear_vector", lambda F, x, w, b: F.linear(x, w, b), randn(4), randn(3, 4), randn(3)),
    # 1-d ops on (N, C, L)
    case("conv1d_stride2_pad1", lambda F, x, w, b: F.conv1d(x, w, b, stride=2, padding=1),
         randn(2, 3, 7), randn(4, 3, 3), randn(4)),
    case("conv1d_groups_dil2", lambda F, x, w: F.conv1d(x, w, groups=3, dilation=2),
         randn(1, 3, 6), randn(6, 1, 2)),
    case("conv1d_same_even", lambda F, x, w: F.conv1d(x, w, padding="same"),
         randn(2, 2, 5), randn(3, 2, 4)),
    case("max_pool1d_ceil_pad1",
         lambda F, x: F.max_pool1d(x, 3, 2, padding=1, ceil_mode=True), distinct(2, 3, 6)),
    case("max_pool1d_dil2", lambda F, x: F.max_pool1d(x, 2, dilation=2), distinct(2, 2, 7)),
    case("avg_pool1d_ceil_exclude",
         lambda F, x: F.avg_pool1d(x, 3, 2, padding=1, ceil_mode=True, count_include_pad=False),
         randn(2, 3, 6)),
    case("avg_pool1d_k2", lambda F, x: F.avg_pool1d(x, 2), randn(2, 2, 7)),
    # ---- resampling: interpolate, pixel_shuffle, pixel_unshuffle ----
    # nearest: integer, fractional and per-axis scales, up and down, size=, 3-D
    case("interpolate_nearest_x2", lambda F, x: F.interpolate(x, scale_factor=2),
         randn(2, 3, 4, 5), gradgrad=True, higher_orders=True),
    case("interpolate_nearest_size_up_down", lambda F, x: F.interpolate(x, size=(7, 3)),
         randn(1, 2, 5, 4), gradgrad=True),
    case("interpolate_nearest_fractional_scales",
         lambda F, x: F.interpolate(x, scale_factor=(1.7, 0.6)), randn(2, 2, 5, 6)),
    case("interpolate_nearest_recomputed_scale",
         lambda F, x: F.interpolate(x, scale_factor=2.6, recompute_scale_factor=True),
         randn(1, 2, 3, 4)),
    case("interpolate_nearest_1d_x3", lambda F, x: F.interpolate(x, scale_factor=3),
         randn(2, 2, 4)),
    case("interpolate_nearest_exact_size", lambda F, x: F.interpolate(x, size=(7, 3),
                                                                      mode="nearest-exact"),
         randn(1, 2, 4, 5), gradgrad=True),
    case("interpolate_nearest_exact_scale_1d",
         lambda F, x: F.interpolate(x, scale_factor=1.5, mode="nearest-exact"), randn(2, 3, 5)),
    # (bi)linear: align_corners both ways, up and down, integer and fractional scales
    case("interpolate_bilinear_x2", lambda F, x: F.interpolate(x, scale_factor=2, mode="bilinear"),
         randn(2, 3, 4, 5), gradgrad=True, higher_orders=True),
    case("interpolate_bilinear_align_corners_size",
         lambda F, x: F.interpolate(x, size=(7, 4), mode="bilinear", align_corners=True),
         randn(1, 2, 4, 6), gradgrad=True),
    case("interpolate_bilinear_down_half",
         lambda F, x: F.interpolate(x, scale_factor=0.5, mode="bilinear"), randn(2, 2, 6, 7)),
    case("interpolate_bilinear_fractional_scales",
         lambda F, x: F.interpolate(x, scale_factor=(1.7, 0.7), mode="bilinear",
                                    align_corners=False), randn(1, 3, 5, 6)),
    case("interpolate_bilinear_align_corners_fractional",
         lambda F, x: F.interpolate(x, scale_factor=2.3, mode="bilinear", align_corners=True),
         randn(2, 1, 3, 4)),
    case("interpolate_bilinear_recomputed_scale",
         lambda F, x: F.interpolate(x, scale_factor=1.7, mode="bilinear",
                                    recompute_scale_factor=True), randn(1, 2, 3, 5)),
    case("interpolate_bilinear_to_one_pixel",
         lambda F, x: F.interpolate(x, size=1, mode="bilinear", align_corners=True),
         randn(2, 2, 3, 4)),
    case("interpolate_bilinear_one_axis_kept",
         lambda F, x: F.interpolate(x, size=(5, 9), mode="bilinear"), randn(1, 2, 5, 4)),
    # an axis longer than one block of the map: the product goes in stretches
    case("interpolate_bilinear_long_axis",
         lambda F, x: F.interpolate(x, size=(4, 301), mode="bilinear"), randn(1, 1, 2, 150)),
    case("interpolate_linear_x2_5", lambda F, x: F.interpolate(x, scale_factor=2.5,
                                                               mode="linear"),
         randn(2, 3, 5), gradgrad=True),
    case("interpolate_linear_down_align_corners",
         lambda F, x: F.interpolate(x, size=3, mode="linear", align_corners=True),
         randn(1, 2, 7)),
    # bicubic: four taps clamped at the borders, align_corners both ways, up and down,
    # integer and fractional scales, one pixel, and an axis longer than one block
    case("interpolate_bicubic_x2", lambda F, x: F.interpolate(x, scale_factor=2, mode="bicubic"),
         randn(2, 3, 4, 5), gradgrad=True, higher_orders=True),
    case("interpolate_bicubic_align_corners_size",
         lambda F, x: F.interpolate(x, size=(9, 4), mode="bicubic", align_corners=True),
         randn(1, 2, 4, 6), gradgrad=True),
    case("interpolate_bicubic_down",
         lambda F, x: F.interpolate(x, size=(3, 2), mode="bicubic"), randn(2, 2, 7, 6)),
    case("interpolate_bicubic_down_align_corners",
         lambda F, x: F.interpolate(x, scale_factor=0.5, mode="bicubic", align_corners=True),
         randn(1, 2, 8, 7)),
    case("interpolate_bicubic_fractional_scales",
         lambda F, x: F.interpolate(x, scale_factor=(1.7, 0.6), mode="bicubic"),
         randn(1, 3, 5, 6)),
    case("interpolate_bicubic_recomputed_scale",
         lambda F, x: F.interpolate(x, scale_factor=2.3, mode="bicubic",
                                    recompute_scale_factor=True), randn(2, 1, 3, 2)),
    case("interpolate_bicubic_from_one_pixel",
         lambda F, x: F.interpolate(x, size=(3, 5), mode="bicubic", align_corners=True),
         randn(1, 2, 1, 2)),
    case("interpolate_bicubic_to_one_pixel",
         lambda F, x: F.interpolate(x, size=1, mode="bicubic"), randn(2, 2, 3, 4)),
    case("interpolate_bicubic_long_axis",
         lambda F, x: F.interpolate(x, size=(3, 97), mode="bicubic"), randn(1, 1, 2, 70)),
    case("interpolate_area_4d", lambda F, x: F.interpolate(x, size=(3, 2), mode="area"),
         randn(2, 2, 7, 5)),
    case("interpolate_area_1d", lambda F, x: F.interpolate(x, scale_factor=0.5, mode="area"),
         randn(1, 2, 7)),
    case("pixel_shuffle_r2", lambda F, x: F.pixel_shuffle(x, 2), randn(2, 8, 3, 4),
         gradgrad=True, higher_orders=True),
    case("pixel_shuffle_r3_unbatched", lambda F, x: F.pixel_shuffle(x, 3), randn(9, 2, 3)),
    case("pixel_shuffle_5d", lambda F, x: F.pixel_shuffle(x, 2), randn(2, 1, 4, 2, 3)),
    case("pixel_shuffle_1x1_images", lambda F, x: F.pixel_shuffle(x, 2), randn(2, 4, 1, 1)),
    case("pixel_shuffle_r1", lambda F, x: F.pixel_shuffle(x, 1), randn(1, 2, 3, 3)),
    case("pixel_unshuffle_r2", lambda F, x: F.pixel_unshuffle(x, 2), randn(2, 3, 4, 6),
         gradgrad=True),
    case("pixel_unshuffle_r3_unbatched", lambda F, x: F.pixel_unshuffle(x, 3), randn(2, 6, 3)),
    case("pixel_unshuffle_r1", lambda F, x: F.pixel_unshuffle(x, 1), randn(1, 2, 3, 3)),
    # One sample without the batch axis, (C, H, W) or (C, L) (and (C*KH*KW, L) for
    # fold), as PyTorch takes it: the output has no batch axis either.
    case("conv2d_unbatched", lambda F, x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=1),
         randn(3, 5, 6), randn(4, 3, 3, 2), randn(4), gradgrad=True, higher_orders=True),
    case("conv2d_unbatched_groups2_same",
         lambda F, x, w: F.conv2d(x, w, padding="same", groups=2),
         randn(4, 5, 4), randn(2, 2, 2, 3)),
    case("conv_transpose2d_unbatched",
         lambda F, x, w, b: F.conv_transpose2d(x, w, b, stride=2, output_padding=1),
         randn(2, 3, 4), randn(2, 3, 3, 2), randn(3), gradgrad=True),
    case("conv1d_unbatched", lambda F, x, w, b: F.conv1d(x, w, b, stride=2, padding=1),
         randn(3, 7), randn(4, 3, 3), randn(4), gradgrad=True),
    case("local2d_unbatched", lambda F, x, w, b: F.local2d(x, w, b, padding=1, stride=2),
         randn(3, 4, 5), randn(2, 2, 3, 3, 3, 2), randn(2, 2, 3), gradgrad=True),
    case("unfold_unbatched", lambda F, x: F.unfold(x, (2, 3), padding=1, stride=2),
         randn(2, 5, 6), gradgrad=True),
    case("fold_unbatched", lambda F, c: F.fold(c, (5, 6), (2, 3)),
         randn(3 * 6, n_blocks((5, 6), (2, 3))), gradgrad=True),
    case("max_pool2d_unbatched_return_indices",
         lambda F, x: F.max_pool2d(x, 3, stride=2, padding=1, return_indices=True),
         distinct(2, 5, 6), gradgrad=True, higher_orders=True),
    case("max_pool1d_unbatched_return_indices",
         lambda F, x: F.max_pool1d(x, 3, 2, padding=1, ceil_mode=True, return_indices=True),
         distinct(3, 6), gradgrad=True),
    case("avg_pool2d_unbatched",
         lambda F, x: F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False),
         randn(2, 5, 6), gradgrad=True),
    case("avg_pool1d_unbatched", lambda F, x: F.avg_pool1d(x, 3, 2, padding=1),
         randn(2, 7), gradgrad=True),
    # adaptive pools: uneven bins (their own Functions) and even ones (plain pooling)
    case("adaptive_avg_pool2d_unbatched_nondivisible",
         lambda F, x: F.adaptive_avg_pool2d(x, (3, 2)), randn(2, 7, 5), gradgrad=True),
    case("adaptive_avg_pool2d_unbatched_divisible",
         lambda F, x: F.adaptive_avg_pool2d(x, (3, 2)), randn(2, 6, 4)),
    case("adaptive_max_pool2d_unbatched_nondivisible",
         lambda F, x: F.adaptive_max_pool2d(x, (3, 2), return_indices=True),
         distinct(2, 7, 5), gradgrad=True),
    case("adaptive_max_pool2d_unbatched_divisible",
         lambda F, x: F.adaptive_max_pool2d(x, (3, 2), return_indices=True),
         distinct(2, 6, 4)),
    # normalization: batch 1 and more, affine or not (weight or bias alone too), 1-d, 2-d
    # and (N, C, ...) inputs, running statistics used or updated (_running: constants)
    case("batch_norm_train_affine",
         lambda F, x, w, b: F.batch_norm(x, None, None, w, b, training=True),
         randn(4, 3, 2, 3), randn(3), randn(3), gradgrad=True),
    case("batch_norm_train_updates_stats",
         lambda F, x: F.batch_norm(x, *_running(x), training=True, momentum=0.3),
         randn(3, 2, 4), gradgrad=True),
    case("batch_norm_b1_train_weight", lambda F, x, w: F.batch_norm(x, None, None, w,
                                                                    training=True),
         randn(1, 2, 3, 2), randn(2), gradgrad=True, higher_orders=True),
    case("batch_norm_features_bias", lambda F, x, b: F.batch_norm(x, None, None, bias=b,
                                                                  training=True, eps=0.1),
         randn(5, 3), randn(3)),
    case("batch_norm_eval", lambda F, x, w, b: F.batch_norm(x, *_running(x), w, b),
         randn(2, 3, 2, 2), randn(3), randn(3), gradgrad=True),
    # batch_norm in training is one Function (BatchNorm, its backward BatchNormGrad and
    # BatchNormSums): its higher orders with weight and bias, a bias alone, (N, C) rows
    case("batch_norm_train_5d_affine",
         lambda F, x, w, b: F.batch_norm(x, None, None, w, b, training=True, eps=1e-3),
         randn(2, 2, 1, 2, 2), randn(2), randn(2), gradgrad=True, higher_orders=True),
    case("batch_norm_train_bias_only", lambda F, x, b: F.batch_norm(x, None, None, bias=b,
                                                                    training=True),
         randn(3, 2, 4), randn(2), gradgrad=True),
    case("batch_norm_features_affine",
         lambda F, x, w, b: F.batch_norm(x, None, None, w, b, training=True),
         randn(6, 4), randn(4), randn(4), gradgrad=True),
    case("layer_norm_last_dim", lambda F, x, w, b: F.layer_norm(x, (5,), w, b),
         randn(2, 3, 5), randn(5), randn(5), gradgrad=True),
    case("layer_norm_chw", lambda F, x: F.layer_norm(x, (3, 2, 4)), randn(2, 3, 2, 4),
         gradgrad=True),
    case("layer_norm_b1_two_dims_affine", lambda F, x, w, b: F.layer_norm(x, [3, 4], w, b),
         randn(1, 2, 3, 4), randn(3, 4), randn(3, 4)),
    case("layer_norm_vector_eps", lambda F, x, w: F.layer_norm(x, (6,), w, eps=0.5),
         randn(6), randn(6), gradgrad=True, higher_orders=True),
    case("group_norm_g2_affine", lambda F, x, w, b: F.group_norm(x, 2, w, b),
         randn(2, 4, 3, 3), randn(4), randn(4), gradgrad=True),
    case("group_norm_one_group", lambda F, x: F.group_norm(x, 1), randn(3, 4, 2, 2)),
    case("group_norm_b1_per_channel", lambda F, x, w: F.group_norm(x, 3, w),
         randn(1, 3, 2, 3), randn(3), gradgrad=True),
    # (torch 2.13's group_norm backward fails given a bias without a weight)
    case("group_norm_features", lambda F, x, w, b: F.group_norm(x, 2, weight=w, bias=b),
         randn(2, 6), randn(6), randn(6), gradgrad=True, higher_orders=True),
    case("group_norm_sequences_g3", lambda F, x, w, b: F.group_norm(x, 3, w, b, eps=1e-3),
         randn(2, 6, 4), randn(6), randn(6)),
    case("instance_norm_affine", lambda F, x, w, b: F.instance_norm(x, weight=w, bias=b),
         randn(2, 3, 3, 4), randn(3), randn(3), gradgrad=True),
    case("instance_norm_b1_updates_stats",
         lambda F, x: F.instance_norm(x, *_running(x), momentum=0.2), randn(1, 2, 3, 3)),
    case("instance_norm_sequences_affine",
         lambda F, x, w, b: F.instance_norm(x, weight=w, bias=b, eps=1e-3),
         randn(2, 3, 5), randn(3), randn(3), gradgrad=True),
    case("instance_norm_sequences_updates_stats",
         lambda F, x: F.instance_norm(x, *_running(x), momentum=0.3), randn(3, 2, 4)),
    case("instance_norm_running_stats",
         lambda F, x, w: F.instance_norm(x, *_running(x), w, use_input_stats=False),
         randn(2, 3, 2, 2), randn(3), gradgrad=True),
    # activations and helpers
    case("relu", lambda F, x: F.relu(x), away_from_zero(2, 3, 4)),
    case("leaky_relu", lambda F, x: F.leaky_relu(x, 0.2), away_from_zero(2, 3, 4)),
    case("sigmoid", lambda F, x: F.sigmoid(x), randn(2, 5)),
    case("tanh", lambda F, x: F.tanh(x), randn(2, 5)),
    # PyTorch's other activations: the smooth ones on wide inputs (both tails), the
    # kinked ones away from their kinks (elu's at 0 with alpha != 1)
    case("gelu", lambda F, x: F.gelu(x), scaled_randn(2, 3, 4, scale=3.0), gradgrad=True,
         higher_orders=True),
    case("gelu_tanh", lambda F, x: F.gelu(x, approximate="tanh"), scaled_randn(2, 5, scale=3.0),
         gradgrad=True),
    case("silu", lambda F, x: F.silu(x), scaled_randn(2, 5, scale=4.0), gradgrad=True),
    case("mish", lambda F, x: F.mish(x), scaled_randn(2, 5, scale=4.0), gradgrad=True),
    case("elu_alpha", lambda F, x: F.elu(x, alpha=0.7), away_from_zero(2, 3, 4), gradgrad=True,
         higher_orders=True),
    case("selu", lambda F, x: F.selu(x), away_from_zero(2, 5), gradgrad=True),
    case("celu", lambda F, x: F.celu(x, 1.5), scaled_randn(2, 5, scale=3.0), gradgrad=True),
    case("softplus", lambda F, x: F.softplus(x), scaled_randn(2, 5, scale=4.0), gradgrad=True),
    case("softplus_beta_threshold", lambda F, x: F.softplus(x, beta=2.0, threshold=3.0),
         away_from(2, 5, points=(1.5,), low=-4.0, high=4.0), gradgrad=True),
    case("hardtanh", lambda F, x: F.hardtanh(x, -0.5, 2.0),
         away_from(2, 5, points=(-0.5, 2.0), low=-3.0, high=3.0), gradgrad=True),
    case("relu6", lambda F, x: F.relu6(x), away_from(2, 5, points=(0.0, 6.0)), gradgrad=True),
    case("hardsigmoid", lambda F, x: F.hardsigmoid(x), away_from(2, 5, points=(-3.0, 3.0)),
         gradgrad=True),
    case("hardswish", lambda F, x: F.hardswish(x), away_from(2, 3, 4, points=(-3.0, 3.0)),
         gradgrad=True, higher_orders=True),
    case("softmax_dim1", lambda F, x: F.softmax(x, dim=1), randn(2, 4, 3)),
    case("log_softmax_last", lambda F, x: F.log_softmax(x, dim=-1), randn(3, 5)),
    case("pad_last_dim", lambda F, x: F.pad(x, (1, 2)), randn(2, 2, 3)),
    case("pad_two_dims_value", lambda F, x: F.pad(x, (1, 0, 2, 1), value=0.5),
         randn(1, 2, 3, 3)),
    case("pad_negative_crops", lambda F, x: F.pad(x, (-1, 2, 1, -1)), randn(2, 3, 4)),
    # reflect, replicate, circular: 1, 2 and 3 padded dimensions of batched and unbatched
    # inputs, amounts up to each mode's limit, negative amounts (cropping), nothing padded
    case("pad_reflect_1d", lambda F, x: F.pad(x, (2, 1), mode="reflect"), randn(2, 3, 4),
         gradgrad=True, higher_orders=True),
    case("pad_reflect_2d_unbatched", lambda F, x: F.pad(x, (1, 3, 2, 0), mode="reflect"),
         randn(2, 3, 4)),
    case("pad_reflect_negative", lambda F, x: F.pad(x, (-1, 2, 1, -2), mode="reflect"),
         randn(1, 2, 4, 5), gradgrad=True),
    case("pad_reflect_3d", lambda F, x: F.pad(x, (1, 0, 0, 2, 1, 1), mode="reflect"),
         randn(1, 2, 2, 3, 2)),
    case("pad_reflect_nothing", lambda F, x: F.pad(x, (0, 0), mode="reflect"), randn(2, 3)),
    case("pad_replicate_beyond_size", lambda F, x: F.pad(x, (3, 1, 0, 5), mode="replicate"),
         randn(1, 2, 3, 2), gradgrad=True),
    case("pad_replicate_negative", lambda F, x: F.pad(x, (-2, 4), mode="replicate"),
         randn(3, 4)),
    case("pad_replicate_3d_unbatched",
         lambda F, x: F.pad(x, (1, 1, 1, 0, 0, 2), mode="replicate"), randn(2, 2, 3, 2)),
    case("pad_circular_2d_whole", lambda F, x: F.pad(x, (2, 1, 3, 3), mode="circular"),
         randn(2, 2, 3, 4), gradgrad=True),
    case("pad_circular_negative", lambda F, x: F.pad(x, (-1, 2, 2, -1), mode="circular"),
         randn(2, 3, 4), gradgrad=True),
    case("pad_circular_3d", lambda F, x: F.pad(x, (1, 0, 0, 1, 2, 2), mode="circular"),
         randn(1, 1, 2, 3, 2)),
    case("flatten", lambda F, x: F.flatten(x, 1), randn(2, 3, 2, 2)),
]
CASE_PARAMS = [pytest.param(c, id=c.name) for c in CASES]
GRADGRAD_PARAMS = [p for p, c in zip(CASE_PARAMS, CASES) if c.gradgrad]
CASES_BY_NAME = {c.name: c for c in CASES}


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _leaves(arrays, dtype=np.float64):
    return [Tensor(np.asarray(a, dtype=dtype), requires_grad=True) for a in arrays]


def assert_close(actual, expected, rtol, what):
    """Elementwise closeness with an absolute floor scaled to the values' magnitude."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, \
        f"{what}: shape {actual.shape}, expected {expected.shape}"
    if expected.dtype.kind in "iub":
        np.testing.assert_array_equal(actual, expected, err_msg=what)
        return
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64),
                               rtol=rtol, atol=rtol * scale, err_msg=what)


def run_with_grads(fn, xs, seed=1):
    """Run ``fn(F, *xs)``; return (outputs, upstream vs as NumPy, input grads or None)."""
    outs = _as_tuple(fn(F, *xs))
    rng = np.random.default_rng(seed)
    diff = [o for o in outs if o.dtype.kind == "f"]
    vs = [rng.standard_normal(o.shape) for o in diff]
    grads = tg.grad(diff, xs, [Tensor(v.astype(o.dtype)) for v, o in zip(vs, diff)],
                    allow_unused=True)
    return list(outs), vs, list(grads)


def ours_with_grads(fn, arrays, dtype=np.float64, seed=1):
    """Run ``fn(F, *tensors)``; return (outputs, upstream vs, input grads) as NumPy."""
    xs = _leaves(arrays, dtype)
    outs, vs, grads = run_with_grads(fn, xs, seed)
    grads = [np.zeros(x.shape) if g is None else g.numpy() for x, g in zip(xs, grads)]
    return [o.numpy() for o in outs], vs, grads


# ---- torch as an oracle (optional) ----------------------------------------------------
class TorchF:
    """``torch.nn.functional`` plus the project's extras expressed in torch."""

    def __init__(self, torch):
        self.torch, self.nnf = torch, torch.nn.functional

    def __getattr__(self, name):
        return getattr(self.nnf, name)

    def flatten(self, x, start_dim=0, end_dim=-1):
        return self.torch.flatten(x, start_dim, end_dim)

    def hardsigmoid(self, x):
        # PyTorch's float64 backward multiplies by 1/6 rounded to float32 (relative error
        # 3e-8, beyond RTOL); relu6(x + 3) / 6 has its forward and its zero gradient at
        # +-3, with 1/6 exact.  test_activations.py compares with torch's own, to 1e-7.
        return self.nnf.relu6(x + 3) / 6

    def local2d(self, x, w, b=None, stride=1, padding=0, dilation=1):
        OC, OH, OW, C, KH, KW = w.shape
        cols = self.nnf.unfold(x, (KH, KW), dilation=dilation, padding=padding,
                               stride=stride)                              # (N, C*KH*KW, L)
        w_rows = w.reshape(OC, OH * OW, C * KH * KW)                       # (OC, L, C*KH*KW)
        y = self.torch.einsum("olk,...kl->...ol", w_rows, cols)            # (N, OC, L)
        y = y.reshape(y.shape[:-1] + (OH, OW))       # (N, OC, OH, OW), or (OC, OH, OW)
        return y if b is None else y + b


def torch_with_grads(fn, arrays, vs, dtype=np.float64):
    torch = pytest.importorskip("torch")
    tdtype = {np.float64: torch.float64, np.float32: torch.float32}[dtype]
    xs = [torch.tensor(np.asarray(a), dtype=tdtype, requires_grad=True) for a in arrays]
    outs = _as_tuple(fn(TorchF(torch), *xs))
    diff = [o for o in outs if o.is_floating_point()]
    grads = torch.autograd.grad(diff, xs, [torch.tensor(v, dtype=tdtype) for v in vs],
                                allow_unused=True)
    grads = [np.zeros(x.shape) if g is None else g.numpy() for x, g in zip(xs, grads)]
    return [o.detach().numpy() for o in outs], grads


RTOL = {np.float64: 1e-10, np.float32: 1e-4}


# ---- the table, one test per concern ------------------------------------------------
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_gradcheck(case):
    inputs = _leaves(case.arrays())
    assert gradcheck(lambda *xs: case.fn(F, *xs), inputs)


@pytest.mark.parametrize("case", GRADGRAD_PARAMS)
def test_gradgradcheck(case):
    inputs = _leaves(case.arrays())
    assert gradgradcheck(lambda *xs: case.fn(F, *xs), inputs)


def _differentiated(fn, n):
    """(inputs, one upstream per float output) -> fn's input gradients, with create_graph."""
    def grads(*args):
        with tg.enable_grad():   # gradcheck's numerical side runs under no_grad
            ys = [y for y in _as_tuple(fn(*args[:n])) if y.dtype.kind == "f"]
            pairs = [(y, v) for y, v in zip(ys, args[n:]) if y.requires_grad]
            gs = tg.grad([y for y, _ in pairs], list(args[:n]), [v for _, v in pairs],
                         create_graph=True, allow_unused=True)
        return tuple(tg.zeros_like(x) if g is None else g for x, g in zip(args[:n], gs))
    return grads


@pytest.mark.parametrize("case, order", [
    pytest.param(c, order, id=f"{c.name}-{order}")   # ~1 s at most (conv, order 4)
    for c in CASES if c.higher_orders for order in (3, 4)])
def test_higher_orders(case, order):
    """gradgradcheck of the first (order 3) or second (order 4) derivative: every
    backward is made of differentiable ops, at every order.  A backward of a
    backward built on raw arrays or on a detached operand (the conv weight
    gradient's, the max-pool or index gather's) passes gradgradcheck, not this."""
    rng = np.random.default_rng(2)
    xs = _leaves(case.arrays())
    fn = lambda *args: case.fn(F, *args)   # noqa: E731
    for _ in range(order - 2):
        outs = [y for y in _as_tuple(fn(*xs)) if y.dtype.kind == "f" and y.requires_grad]
        fn, xs = (_differentiated(fn, len(xs)),
                  xs + _leaves([rng.standard_normal(y.shape) for y in outs]))
    assert gradgradcheck(fn, xs)


# torch warns that padding="same" with an even kernel copies the input; that is fine here.
IGNORE_TORCH_SAME_WARNING = pytest.mark.filterwarnings("ignore:Using padding='same'")


@IGNORE_TORCH_SAME_WARNING
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_matches_torch(case, dtype):
    arrays = case.arrays()
    outs, vs, grads = ours_with_grads(case.fn, arrays, dtype)
    t_outs, t_grads = torch_with_grads(case.fn, arrays, vs, dtype)
    assert len(outs) == len(t_outs)
    for k, (o, t) in enumerate(zip(outs, t_outs)):
        assert o.dtype.kind == t.dtype.kind, f"output {k}: dtype {o.dtype} vs torch {t.dtype}"
        if o.dtype.kind == "f":
            assert o.dtype == dtype, f"output {k} has dtype {o.dtype} for {dtype} inputs"
        assert_close(o, t, RTOL[dtype], f"{case.name} output {k}")
    for k, (g, t) in enumerate(zip(grads, t_grads)):
        assert_close(g, t, RTOL[dtype], f"{case.name} grad of input {k}")


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_float32_forward(case):
    """float32 in, float32 out (and gradients), close to the float64 result; inputs untouched."""
    arrays = case.arrays()
    outs64, vs, grads64 = ours_with_grads(case.fn, arrays, np.float64)
    xs = _leaves(arrays, np.float32)
    before = [x.numpy() for x in xs]
    outs = _as_tuple(case.fn(F, *xs))
    diff = [o for o in outs if o.dtype.kind == "f"]
    grads = tg.grad(diff, xs, [Tensor(v.astype(np.float32)) for v in vs])
    for x, b in zip(xs, before):
        np.testing.assert_array_equal(x.numpy(), b, err_msg="an input was modified in place")
    for o, o64 in zip(outs, outs64):
        if o.dtype.kind == "f":
            assert o.dtype == np.float32
        assert_close(o.numpy(), o64, 1e-4, f"{case.name} float32 output")
    for g, g64 in zip(grads, grads64):
        assert g.dtype == np.float32
        assert_close(g.numpy(), g64, 1e-4, f"{case.name} float32 gradient")


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_on_device(case, device):
    """The same results on every backend (the strict one refuses implicit NumPy use)."""
    arrays = case.arrays()
    outs, vs, grads = ours_with_grads(case.fn, arrays)
    xs = [tg.tensor(a, requires_grad=True, device=device) for a in arrays]
    d_outs = _as_tuple(case.fn(F, *xs))
    diff = [o for o in d_outs if o.dtype.kind == "f"]
    d_grads = tg.grad(diff, xs, [tg.tensor(v, device=device) for v in vs])
    for o, e in zip(d_outs, outs):
        assert o.device == xs[0].device
        assert_close(o.numpy(), e, 1e-12, f"{case.name} output on {device}")
    for g, e in zip(d_grads, grads):
        assert g.device == xs[0].device
        assert_close(g.numpy(), e, 1e-12, f"{case.name} gradient on {device}")


MULTI_INPUT_PARAMS = [p for p, c in zip(CASE_PARAMS, CASES) if len(c.inputs) > 1]


@pytest.mark.parametrize("case", MULTI_INPUT_PARAMS)
def test_partial_requires_grad(case):
    """With one input requiring grad its gradient is unchanged; under no_grad, no graph."""
    arrays = case.arrays()
    outs, vs, grads = ours_with_grads(case.fn, arrays)
    for i in range(len(arrays)):
        xs = [Tensor(a, requires_grad=(k == i)) for k, a in enumerate(arrays)]
        out = _as_tuple(case.fn(F, *xs))[0]
        (g,) = tg.grad(out, [xs[i]], Tensor(vs[0]))
        assert_close(g.numpy(), grads[i], 1e-12, f"{case.name} grad of input {i} alone")
        with tg.no_grad():
            out = _as_tuple(case.fn(F, *_leaves(arrays)))[0]
        assert not out.requires_grad and out.grad_fn is None
        assert_close(out.numpy(), outs[0], 1e-12, f"{case.name} output under no_grad")


@pytest.fixture
def im2col_limit():
    """Set the im2col buffer cap for one test: ``im2col_limit(nbytes)``; restored afterwards."""
    previous = F.get_im2col_limit()
    yield F.set_im2col_limit
    F.set_im2col_limit(previous)


CONV_PARAMS = [p for p, c in zip(CASE_PARAMS, CASES) if c.name.startswith(("conv", "local"))]


@pytest.mark.parametrize("case", CONV_PARAMS)
def test_conv_in_image_chunks(case, im2col_limit):
    """A 1-byte im2col cap (one image per chunk) changes nothing but speed."""
    arrays = case.arrays()
    outs, vs, grads = ours_with_grads(case.fn, arrays)
    im2col_limit(1)
    c_outs, _, c_grads = ours_with_grads(case.fn, arrays)
    for k, (o, e) in enumerate(zip(c_outs + c_grads, outs + grads)):
        assert_close(o, e, 1e-12, f"{case.name} result {k} in chunks")


@pytest.mark.parametrize("groups, bias", [(1, False), (2, False), (2, True)])
def test_conv_of_zero_channels_in_image_chunks(groups, bias, im2col_limit):
    """An input with no channels has empty columns, whose strides mean nothing: in
    chunks they are as good a buffer as whole (the result is the bias, or zeros, as
    without chunks; the gradients are zeros)."""
    rng = np.random.default_rng(21)
    x = Tensor(np.zeros((3, 0, 5, 5)), requires_grad=True)
    w = Tensor(np.zeros((4, 0, 3, 3)), requires_grad=True)
    b = Tensor(rng.standard_normal(4), requires_grad=True) if bias else None
    leaves = [x, w] + ([b] if bias else [])
    g = Tensor(rng.standard_normal((3, 4, 3, 3)))
    results = []
    for limit in (None, 1):   # the whole batch, then one image per chunk
        if limit is not None:
            im2col_limit(limit)
        y = F.conv2d(x, w, b, groups=groups)
        results.append([y.numpy()] + [v.numpy() for v in tg.grad(y, leaves, g)])
    expected = np.broadcast_to((b.numpy() if bias else np.zeros(4))[:, None, None],
                               (3, 4, 3, 3))
    np.testing.assert_array_equal(results[0][0], expected)
    np.testing.assert_allclose(results[0][-1], g.numpy().sum(axis=(0, 2, 3)) if bias
                               else np.zeros((4, 0, 3, 3)), rtol=1e-12)
    for whole, chunked in zip(*results):
        np.testing.assert_array_equal(chunked, whole)


@pytest.mark.parametrize("limit", ["one_image", "four_images"])
def test_conv_gradients_in_uneven_chunks(limit, im2col_limit):
    """gradcheck and gradgradcheck still hold when the batch is split (5 = 4 + 1 or 1 * 5)."""
    rng = np.random.default_rng(13)
    x, w, b = _leaves([rng.standard_normal((5, 2, 4, 4)), rng.standard_normal((2, 2, 2, 2)),
                       rng.standard_normal(2)])
    # conv2d columns of one image: C*KH*KW * OH*OW float64s = 2*2*2 * 3*3 * 8 bytes.
    im2col_limit(1 if limit == "one_image" else 4 * 8 * 9 * 8)

    def fn(x, w, b):
        return F.conv2d(x, w, b, padding=(0, 1), stride=(1, 2))
    assert gradcheck(fn, (x, w, b))
    assert gradgradcheck(fn, (x, w, b))
    assert gradcheck(lambda y, w: F.conv_transpose2d(y, w, stride=2), (x, w))


# ---- the depthwise array code ----------------------------------------------------------
DEPTHWISE_PARAMS = [p for p, c in zip(CASE_PARAMS, CASES)
                    if "depthwise" in c.name or c.name in ("conv2d_b1_single_channel",
                                                           "conv2d_batch4_stride2_groups2")]
DEPTHWISE_ARRAY_CODE = ("depthwise_conv_array", "depthwise_transpose_array",
                        "depthwise_weight_array")


@pytest.fixture
def depthwise_calls(monkeypatch):
    """Count the calls of the depthwise array functions (by name) in the conv ops."""
    calls = {name: 0 for name in DEPTHWISE_ARRAY_CODE}
    for name in DEPTHWISE_ARRAY_CODE:
        def counted(*args, _name=name, _fn=getattr(F, name), **kwargs):
            calls[_name] += 1
            return _fn(*args, **kwargs)
        monkeypatch.setattr(F, name, counted)
    return calls


@pytest.fixture
def force_depthwise(monkeypatch, depthwise_calls):
    """Every depthwise convolution takes the depthwise array code, whatever its shape;
    returns the call counts, to check that it did."""
    monkeypatch.setattr(F, "depthwise_pays", lambda *args: True)
    return depthwise_calls


def _took_depthwise_path(calls, what):
    """Forward, weight gradient and input gradient (depthwise_transpose_array, or for
    one output per channel at stride 1 a depthwise correlation with the flipped
    kernel: a second depthwise_conv_array) all ran the depthwise code."""
    assert calls["depthwise_conv_array"] >= 1, f"{what}: forward not depthwise ({calls})"
    assert calls["depthwise_weight_array"] >= 1, f"{what}: weight grad not depthwise ({calls})"
    assert calls["depthwise_transpose_array"] + calls["depthwise_conv_array"] >= 2, \
        f"{what}: input gradient not depthwise ({calls})"


@pytest.mark.parametrize("case", DEPTHWISE_PARAMS)
def test_depthwise_path_gradcheck(case, force_depthwise):
    inputs = _leaves(case.arrays())
    assert gradcheck(lambda *xs: case.fn(F, *xs), inputs)
    assert gradgradcheck(lambda *xs: case.fn(F, *xs), inputs)
    _took_depthwise_path(force_depthwise, case.name)


@IGNORE_TORCH_SAME_WARNING
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", DEPTHWISE_PARAMS)
def test_depthwise_path_matches_torch(case, dtype, force_depthwise):
    arrays = case.arrays()
    outs, vs, grads = ours_with_grads(case.fn, arrays, dtype)
    _took_depthwise_path(force_depthwise, case.name)
    t_outs, t_grads = torch_with_grads(case.fn, arrays, vs, dtype)
    for k, (o, t) in enumerate(zip(outs + grads, t_outs + t_grads)):
        assert_close(o, t, RTOL[dtype], f"{case.name} result {k}")


@pytest.mark.parametrize("case", DEPTHWISE_PARAMS)
def test_depthwise_path_on_device_and_batch_last(case, device, monkeypatch, depthwise_calls,
                                                 im2col_limit):
    """The depthwise code gives the im2col route's results, on every backend, for an
    input in C order and (on the host) stored batch-last, then with a 1-byte
    im2col limit (which it does not need) and slices of one image or channel
    (``cache_chunks``)."""
    arrays = case.arrays()
    monkeypatch.setattr(F, "depthwise_pays", lambda *args: False)
    expected = ours_with_grads(case.fn, arrays)
    assert sum(depthwise_calls.values()) == 0
    monkeypatch.setattr(F, "depthwise_pays", lambda *args: True)
    layouts = [lambda a: a]
    if device == "cpu":   # x (and the other 4-d inputs) stored batch-last
        layouts.append(lambda a: np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 0, -1)),
                                             -1, 0) if a.ndim == 4 else a)
    for chunked in (False, True):
        if chunked:
            monkeypatch.setattr(conv_arrays, "CACHE_BLOCK_BYTES", 1)
            monkeypatch.setattr(conv_arrays, "CACHE_BLOCK_MIN_BYTES", 0)
            im2col_limit(1)
        for layout in layouts:
            xs = [tg.tensor(layout(a), requires_grad=True, device=device) for a in arrays]
            if layout is not layouts[0] and arrays[0].shape[0] > 1:
                assert conv_arrays.is_batch_last(xs[0].data)
            outs = _as_tuple(case.fn(F, *xs))
            grads = tg.grad(list(outs), xs, [tg.tensor(v, device=device) for v in expected[1]])
            results = [o.numpy() for o in outs] + [g.numpy() for g in grads]
            for k, (o, e) in enumerate(zip(results, expected[0] + expected[2])):
                assert_close(o, e, 1e-12, f"{case.name} result {k} on {device}")
    _took_depthwise_path(depthwise_calls, case.name)


def test_depthwise_path_is_the_default_for_7x7_kernels(depthwise_calls):
    """The default choice (conv_arrays.depthwise_pays): 7x7 depthwise kernels take the
    depthwise code, 3x3 ones and several outputs per channel im2col, which is as
    fast or faster there."""
    for name, taken in (("conv2d_depthwise_7x7_same_bias", True),
                        ("conv2d_depthwise_mult2", False), ("conv2d_depthwise_dil2", False)):
        for key in depthwise_calls:
            depthwise_calls[key] = 0
        case = CASES_BY_NAME[name]
        ours_with_grads(case.fn, case.arrays())
        if taken:
            _took_depthwise_path(depthwise_calls, name)
        else:
            assert sum(depthwise_calls.values()) == 0, (name, depthwise_calls)


MEMORY_CASES = [  # N, C, OC, H, W, K, padding, stride, dilation, groups, batch-last x
    (8, 8, 8, 16, 16, 3, 1, 1, 1, 1, False),
    (8, 4, 32, 16, 16, 3, 1, 1, 1, 1, False),     # widening "same": input gradient by fold
    (8, 32, 4, 16, 16, 3, 1, 1, 1, 1, False),     # narrowing: by the flipped correlation
    (8, 16, 4, 12, 12, 5, 0, 1, 1, 1, False),     # narrowing "valid" conv, flipped too
    (8, 1, 20, 28, 28, 5, 0, 1, 1, 1, False),
    (8, 8, 8, 17, 15, 3, 1, 2, 1, 1, False),
    (8, 8, 8, 16, 16, 3, 2, 1, 2, 2, False),
    (8, 8, 8, 16, 16, 3, 1, 1, 1, 8, False),
    (8, 8, 12, 16, 16, 3, 1, 1, 1, 1, True),
]


def _conv_memory(x, w, b, **kw):
    """Bytes the forward + backward of conv2d allocates at its peak beyond its
    inputs, its output and the three gradients (NumPy reports its arrays to
    tracemalloc)."""
    import tracemalloc
    y = F.conv2d(x, w, b, **kw)
    g = Tensor(np.random.default_rng(0).standard_normal(y.shape).astype(x.dtype))
    del y
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        y = F.conv2d(x, w, b, **kw)
        y.backward(g)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - start - sum(t.data.nbytes for t in (y, x.grad, w.grad, b.grad)), y.shape


@pytest.mark.parametrize("chunked", ["whole", "limit", "cache"])
@pytest.mark.parametrize("case", MEMORY_CASES, ids=lambda c: "-".join(map(str, c)))
def test_conv_memory_stays_within_the_documented_bound(case, chunked, im2col_limit,
                                                       monkeypatch):
    """The README's formula: at most two im2col buffers (C*KH*KW * N*OH*OW elements,
    or one chunk's when the im2col limit splits the batch), plus about one padded
    copy of x and one of y.  A widening "same" conv whose input gradient took the
    flipped correlation built columns OC/C times larger and failed this.  Chunks of
    cache size ("cache") may keep the whole batch's columns for the weight gradient."""
    N, C, OC, H, W, K, p, s, d, groups, batch_last = case
    rng = np.random.default_rng(15)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    if batch_last:   # as a kln convolution's output is laid out
        x = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 0, -1)), -1, 0)
    x, w, b = (Tensor(a, requires_grad=True) for a in (
        x, rng.standard_normal((OC, C // groups, K, K)).astype(np.float32),
        rng.standard_normal(OC).astype(np.float32)))
    if chunked == "limit":
        im2col_limit(1)   # one image per chunk
    elif chunked == "cache":
        monkeypatch.setattr(conv_arrays, "COLUMN_BLOCK_BYTES", 1)
    extra, (_, _, OH, OW) = _conv_memory(x, w, b, padding=p, stride=s, dilation=d,
                                         groups=groups)
    cols = C * K * K * (1 if chunked == "limit" else N) * OH * OW * 4
    padded_x = N * C * (H + 2 * p) * (W + 2 * p) * 4
    y = N * OC * OH * OW * 4
    bound = 2 * cols + 2 * (padded_x + y) + 64 * 1024   # and some bookkeeping
    assert extra <= bound, (f"{extra} bytes beyond operands and gradients; "
                            f"bound {bound} (columns {cols}, padded x {padded_x}, y {y})")


@pytest.mark.parametrize("grad,chunked", [
    ("no_grad", "whole"), ("no_grad", "cache"), ("frozen_w", "whole"), ("frozen_w", "cache"),
    ("pointwise", "cache")])
def test_conv_keeps_no_columns_the_weight_gradient_does_not_read(grad, chunked,
                                                                 monkeypatch):
    """Between forward and backward a convolution holds its columns only for a
    weight gradient that reads them: none under no_grad or for a w that needs no
    gradient, and in cache-sized chunks ("cache", one image each: the per-image
    layout) no copy of x for a 1x1 kernel at stride 1, whose columns are views
    of x.  Its forward then allocates one chunk's columns, not a buffer for the
    whole batch."""
    import tracemalloc
    N, C, OC, H, W = 8, 8, 8, 16, 16
    K = 1 if grad == "pointwise" else 3
    rng = np.random.default_rng(16)
    x = Tensor(rng.standard_normal((N, C, H, W)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((OC, C, K, K)).astype(np.float32),
               requires_grad=grad != "frozen_w")
    if chunked == "cache":
        monkeypatch.setattr(conv_arrays, "COLUMN_BLOCK_BYTES", 1)   # one image per chunk
    image_cols = C * K * K * H * W * 4           # columns of one image ("same" padding)
    y_bytes = N * OC * H * W * 4
    padded_x = N * C * (H + K - 1) * (W + K - 1) * 4
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        with tg.no_grad() if grad == "no_grad" else tg.enable_grad():
            y = F.conv2d(x, w, padding=K // 2)
        held, peak = (m - start for m in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
    assert held <= y_bytes + 16 * 1024, (
        f"{held - y_bytes} bytes held beyond y after the forward ({image_cols} per "
        f"image of columns, x {x.data.nbytes})")
    columns = image_cols * (1 if chunked == "cache" else N)
    assert peak <= y_bytes + padded_x + columns + 64 * 1024, (
        f"forward peak {peak} bytes: y {y_bytes}, padded x {padded_x}, columns {columns}")
    if grad != "no_grad":   # and the gradient is still right
        y.backward(Tensor(np.ones(y.shape, np.float32)))
        assert x.grad is not None


@pytest.mark.parametrize("N", [1, 4])
def test_large_stride_equals_kernel_convs_match_closed_form(N):
    """With stride == kernel the windows tile the image, and both convolutions are
    per-block products (einsum): an independent check on images large enough that the
    implementation accumulates its output in several blocks of channels."""
    rng = np.random.default_rng(14)
    H = W = 130
    x = Tensor(rng.standard_normal((N, 2, H, W)), requires_grad=True)
    w = Tensor(rng.standard_normal((3, 2, 2, 2)), requires_grad=True)
    blocks = x.numpy().reshape(N, 2, H // 2, 2, W // 2, 2)       # (N, C, OH, KH, OW, KW)
    y = F.conv2d(x, w, stride=2)
    assert_close(y.numpy(), np.einsum("nciajb,ocab->noij", blocks, w.numpy()), 1e-12,
                 "conv2d")
    g = rng.standard_normal(y.shape)
    grad_x, grad_w = tg.grad(y, [x, w], Tensor(g))
    expected = np.einsum("noij,ocab->nciajb", g, w.numpy()).reshape(x.shape)
    assert_close(grad_x.numpy(), expected, 1e-12, "conv2d grad x")
    assert_close(grad_w.numpy(), np.einsum("noij,nciajb->ocab", g, blocks), 1e-12,
                 "conv2d grad w")
    # conv_transpose2d with w (C=2 -> OC=3): each pixel becomes a 2x2 block.
    wt = Tensor(rng.standard_normal((2, 3, 2, 2)))
    yt = F.conv_transpose2d(x, wt, stride=2)
    expected = np.einsum("ncij,coab->noiajb", x.numpy(), wt.numpy()).reshape(N, 3, 2 * H, 2 * W)
    assert_close(yt.numpy(), expected, 1e-12, "conv_transpose2d")


# ---- explicit-loop references, property-based -----------------------------------------
def _ints(lo, hi):
    return st.integers(lo, hi)


def _int_or_pair(lo, hi):
    return st.one_of(_ints(lo, hi), st.tuples(_ints(lo, hi), _ints(lo, hi)))


SEEDS = st.integers(0, 2**32 - 1)
# Batches of 4 and more take another column layout inside the conv ops.
BATCHES = st.sampled_from([1, 2, 5])


@st.composite
def conv2d_draws(draw):
    N = draw(BATCHES)
    kind = draw(st.sampled_from(["dense", "grouped", "depthwise"]))
    if kind == "dense":
        groups, cg, og = 1, draw(_ints(1, 3)), draw(_ints(1, 3))
    elif kind == "grouped":
        groups, cg, og = 2, draw(_ints(1, 2)), draw(_ints(1, 2))
    else:
        groups, cg, og = draw(_ints(1, 3)), 1, draw(_ints(1, 2))
    KH, KW = draw(_ints(1, 3)), draw(_ints(1, 3))
    dilation = draw(_int_or_pair(1, 2))
    padding = draw(st.one_of(_int_or_pair(0, 2), st.sampled_from(["same", "valid"])))
    stride = 1 if padding == "same" else draw(_int_or_pair(1, 3))
    (dh, dw) = ref.pair(dilation)
    (pt, pb), (pl, pr) = ref.conv_padding(padding, (KH, KW), (dh, dw))
    H = draw(_ints(max(1, dh * (KH - 1) + 1 - pt - pb), 7))
    W = draw(_ints(max(1, dw * (KW - 1) + 1 - pl - pr), 7))
    rng = np.random.default_rng(draw(SEEDS))
    arrays = [rng.standard_normal((N, groups * cg, H, W)),
              rng.standard_normal((groups * og, cg, KH, KW))]
    if draw(st.booleans()):
        arrays.append(rng.standard_normal(groups * og))
    return arrays, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@st.composite
def conv_transpose2d_draws(draw):
    N = draw(BATCHES)
    groups = draw(_ints(1, 2))
    cg, og = draw(_ints(1, 2)), draw(_ints(1, 2))
    KH, KW = draw(_ints(1, 3)), draw(_ints(1, 3))
    (sh, sw), (dh, dw) = draw(st.tuples(_ints(1, 3), _ints(1, 3))), \
        draw(st.tuples(_ints(1, 2), _ints(1, 2)))
    ph, pw = draw(_ints(0, 2)), draw(_ints(0, 2))
    oph = draw(_ints(0, max(sh, dh) - 1))
    opw = draw(_ints(0, max(sw, dw) - 1))
    H, W = draw(_ints(1, 4)), draw(_ints(1, 4))
    kw = dict(stride=(sh, sw), padding=(ph, pw), output_padding=(oph, opw), groups=groups,
              dilation=(dh, dw))
    w_shape = (groups * cg, og, KH, KW)
    _, _, OH, OW = ref.conv_transpose2d_out_shape((N, groups * cg, H, W), w_shape, **kw)
    assume(OH >= 1 and OW >= 1)
    rng = np.random.default_rng(draw(SEEDS))
    arrays = [rng.standard_normal((N, groups * cg, H, W)), rng.standard_normal(w_shape)]
    if draw(st.booleans()):
        arrays.append(rng.standard_normal(groups * og))
    return arrays, kw


@st.composite
def local2d_draws(draw):
    N, C, OC = draw(_ints(1, 2)), draw(_ints(1, 3)), draw(_ints(1, 3))
    kernel = (draw(_ints(1, 3)), draw(_ints(1, 3)))
    stride, padding, dilation = draw(_int_or_pair(1, 3)), draw(_int_or_pair(0, 2)), \
        draw(_int_or_pair(1, 2))
    (KH, KW), (ph, pw), (dh, dw) = kernel, ref.pair(padding), ref.pair(dilation)
    H = draw(_ints(max(1, dh * (KH - 1) + 1 - 2 * ph), 6))
    W = draw(_ints(max(1, dw * (KW - 1) + 1 - 2 * pw), 6))
    OH, OW = ref.local2d_out_hw((N, C, H, W), kernel, stride, padding, dilation)
    rng = np.random.default_rng(draw(SEEDS))
    arrays = [rng.standard_normal((N, C, H, W)), rng.standard_normal((OC, OH, OW, C, KH, KW))]
    if draw(st.booleans()):
        arrays.append(rng.standard_normal((OC, OH, OW)))
    return arrays, dict(stride=stride, padding=padding, dilation=dilation)


def _pool_geometry(draw, dilated, ceil_mode):
    """Kernel, stride, padding (<= half the kernel, as PyTorch requires), dilation, H, W.

    With ``ceil_mode`` a window may be larger than the (padded) input, as long as
    one starts inside it."""
    KH, KW = draw(_ints(1, 3)), draw(_ints(1, 3))
    kernel = draw(st.sampled_from([(KH, KW), KH])) if KH == KW else (KH, KW)
    stride = draw(st.one_of(st.none(), _int_or_pair(1, 3)))
    ph, pw = draw(_ints(0, KH // 2)), draw(_ints(0, KW // 2))
    dh, dw = (draw(_ints(1, 2)), draw(_ints(1, 2))) if dilated else (1, 1)
    if ceil_mode:
        H, W = draw(_ints(1, 7)), draw(_ints(1, 7))
        sh, sw = ref.pair(kernel if stride is None else stride)
        assume(ref.window_count(H, KH, sh, ph, ph, dh, True) >= 1
               and ref.window_count(W, KW, sw, pw, pw, dw, True) >= 1)
    else:
        H = draw(_ints(max(1, dh * (KH - 1) + 1 - 2 * ph), 7))
        W = draw(_ints(max(1, dw * (KW - 1) + 1 - 2 * pw), 7))
    return kernel, stride, (ph, pw), (dh, dw), H, W


@st.composite
def max_pool2d_draws(draw):
    ceil_mode = draw(st.booleans())
    kernel, stride, padding, dilation, H, W = _pool_geometry(draw, True, ceil_mode)
    N, C = draw(_ints(1, 2)), draw(_ints(1, 3))
    kw = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation,
              ceil_mode=ceil_mode)
    # A dilated window can straddle a tiny input and see only padding; its -inf is no
    # sensible maximum, so such geometries are left out.
    assume(not ref.has_empty_window((N, C, H, W), **kw))
    return [distinct(N, C, H, W)(np.random.default_rng(draw(SEEDS)))], kw


@st.composite
def avg_pool2d_draws(draw):
    ceil_mode = draw(st.booleans())
    kernel, stride, padding, _, H, W = _pool_geometry(draw, False, ceil_mode)
    N, C = draw(_ints(1, 2)), draw(_ints(1, 3))
    x = np.random.default_rng(draw(SEEDS)).standard_normal((N, C, H, W))
    return [x], dict(kernel_size=kernel, stride=stride, padding=padding,
                     ceil_mode=ceil_mode,
                     count_include_pad=draw(st.booleans()),
                     divisor_override=draw(st.one_of(st.none(), _ints(1, 5))))


@st.composite
def adaptive_draws(draw, builder):
    N, C, H, W = draw(_ints(1, 2)), draw(_ints(1, 3)), draw(_ints(1, 7)), draw(_ints(1, 7))
    output_size = draw(st.one_of(_ints(1, 5), st.tuples(_ints(1, 5), _ints(1, 5))))
    x = builder(N, C, H, W)(np.random.default_rng(draw(SEEDS)))
    return [x], dict(output_size=output_size)


@st.composite
def unfold_draws(draw, folding=False):
    N, C = draw(_ints(1, 2)), draw(_ints(1, 3))
    KH, KW = draw(_ints(1, 3)), draw(_ints(1, 3))
    (dh, dw) = draw(st.tuples(_ints(1, 2), _ints(1, 2)))
    (ph, pw) = draw(st.tuples(_ints(0, 2), _ints(0, 2)))
    stride = draw(_int_or_pair(1, 3))
    H = draw(_ints(max(1, dh * (KH - 1) + 1 - 2 * ph), 7))
    W = draw(_ints(max(1, dw * (KW - 1) + 1 - 2 * pw), 7))
    kw = dict(kernel_size=(KH, KW), dilation=(dh, dw), padding=(ph, pw), stride=stride)
    rng = np.random.default_rng(draw(SEEDS))
    if folding:
        L = n_blocks((H, W), (KH, KW), (dh, dw), (ph, pw), stride)
        return [rng.standard_normal((N, C * KH * KW, L))], dict(output_size=(H, W), **kw)
    return [rng.standard_normal((N, C, H, W))], kw


@dataclass(frozen=True)
class LoopSpec:
    """An op, a hypothesis strategy for (arrays, kwargs), and its loop reference.

    ``apply(F, *tensors, **kw)`` runs the op; ``loop(*arrays, **kw)`` is the
    reference forward and ``vjp(arrays, g, **kw)`` its vector-Jacobian
    product, one gradient per array.
    """
    name: str
    draws: st.SearchStrategy
    apply: Callable
    loop: Callable
    vjp: Callable
    examples: int = 30


LOOP_SPECS = [
    LoopSpec("conv2d", conv2d_draws(),
             lambda F, *xs, **kw: F.conv2d(*xs, **kw), ref.conv2d,
             lambda a, g, **kw: ref.conv2d_vjp(a[0], a[1], g, **kw)[:len(a)]),
    LoopSpec("conv_transpose2d", conv_transpose2d_draws(),
             lambda F, *xs, **kw: F.conv_transpose2d(*xs, **kw), ref.conv_transpose2d,
             lambda a, g, **kw: ref.conv_transpose2d_vjp(a[0], a[1], g, **kw)[:len(a)]),
    LoopSpec("local2d", local2d_draws(),
             lambda F, *xs, **kw: F.local2d(*xs, **kw), ref.local2d,
             lambda a, g, **kw: ref.local2d_vjp(a[0], a[1], g, **kw)[:len(a)]),
    LoopSpec("max_pool2d", max_pool2d_draws(),
             lambda F, x, **kw: F.max_pool2d(x, return_indices=True, **kw), ref.max_pool2d,
             lambda a, g, **kw: [ref.max_pool2d_vjp(a[0], g, **kw)]),
    LoopSpec("avg_pool2d", avg_pool2d_draws(),
             lambda F, x, **kw: F.avg_pool2d(x, **kw), ref.avg_pool2d,
             lambda a, g, **kw: [ref.avg_pool2d_vjp(a[0], g, **kw)]),
    LoopSpec("adaptive_avg_pool2d", adaptive_draws(randn),
             lambda F, x, **kw: F.adaptive_avg_pool2d(x, **kw), ref.adaptive_avg_pool2d,
             lambda a, g, **kw: [ref.adaptive_avg_pool2d_vjp(a[0], g, **kw)], examples=20),
    LoopSpec("adaptive_max_pool2d", adaptive_draws(distinct),
             lambda F, x, **kw: F.adaptive_max_pool2d(x, **kw), ref.adaptive_max_pool2d,
             lambda a, g, **kw: [ref.adaptive_max_pool2d_vjp(a[0], g, **kw)], examples=20),
    LoopSpec("unfold", unfold_draws(),
             lambda F, x, **kw: F.unfold(x, **kw), ref.unfold,
             lambda a, g, **kw: [ref.fold(g, a[0].shape[2:], **kw)], examples=20),
    LoopSpec("fold", unfold_draws(folding=True),
             lambda F, c, **kw: F.fold(c, **kw), ref.fold,
             lambda a, g, output_size, **kw: [ref.unfold(g, **kw)], examples=20),
]
LOOP_PARAMS = [pytest.param(s, id=s.name) for s in LOOP_SPECS]
LOOP_SPECS_BY_NAME = {s.name: s for s in LOOP_SPECS}


def check_against_loop(spec, arrays, kw):
    """Our forward and input gradients equal the loop reference's (float64)."""
    outs, vs, grads = ours_with_grads(lambda F, *xs: spec.apply(F, *xs, **kw), arrays)
    expected = _as_tuple(spec.loop(*arrays, **kw))
    assert len(outs) == len(expected)
    for k, (o, e) in enumerate(zip(outs, expected)):
        assert_close(o, e, 1e-10, f"{spec.name} output {k} with {kw}")
    expected_grads = spec.vjp(arrays, vs[0], **kw)
    for k, (g, e) in enumerate(zip(grads, expected_grads)):
        assert_close(g, e, 1e-10, f"{spec.name} grad of input {k} with {kw}")


def _loop_test(test, needs_torch=False):
    """Run ``test(spec, arrays, kw)`` on ``spec.examples`` hypothesis draws."""
    @IGNORE_TORCH_SAME_WARNING
    @pytest.mark.parametrize("spec", LOOP_PARAMS)
    def wrapper(spec):
        if needs_torch:
            pytest.importorskip("torch")

        @settings(max_examples=spec.examples, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        @given(drawn=spec.draws)
        def run(drawn):
            test(spec, *drawn)
        run()
    wrapper.__name__, wrapper.__doc__ = test.__name__, test.__doc__
    return wrapper


@_loop_test
def test_matches_loop_reference(spec, arrays, kw):
    """Forward and gradients equal the textbook loops on random shapes and hyper-parameters."""
    check_against_loop(spec, arrays, kw)


def test_loop_reference_matches_torch(spec, arrays, kw):
    """The loop references themselves agree with torch (so they are worth trusting)."""
    expected = _as_tuple(spec.loop(*arrays, **kw))
    v = np.random.default_rng(1).standard_normal(expected[0].shape)
    t_outs, t_grads = torch_with_grads(lambda F, *xs: spec.apply(F, *xs, **kw), arrays, [v])
    for k, (e, t) in enumerate(zip(expected, t_outs)):
        assert_close(e, t, 1e-10, f"loop {spec.name} output {k} vs torch with {kw}")
    for k, (e, t) in enumerate(zip(spec.vjp(arrays, v, **kw), t_grads)):
        assert_close(e, t, 1e-10, f"loop {spec.name} grad {k} vs torch with {kw}")


test_loop_reference_matches_torch = _loop_test(test_loop_reference_matches_torch,
                                               needs_torch=True)


# ---- identities between ops ------------------------------------------------------------
def _inner(a, b):
    return float(np.sum(a.numpy() * b.numpy()))


@pytest.mark.parametrize("kw", [
    dict(), dict(stride=2, padding=1), dict(stride=(1, 2), padding=(2, 0), dilation=(1, 2)),
], ids=["plain", "stride2_pad1", "mixed"])
def test_conv2d_equals_local2d_with_tiled_kernel(kw):
    rng = np.random.default_rng(3)
    x, w, b = _leaves([rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 2)),
                       rng.standard_normal(4)])
    y = F.conv2d(x, w, b, **kw)
    _, OC, OH, OW = y.shape
    xl, wl, bl = _leaves([x.numpy(), np.broadcast_to(w.numpy()[:, None, None], (OC, OH, OW) +
                                                     w.shape[1:]),
                          np.broadcast_to(b.numpy()[:, None, None], (OC, OH, OW))])
    yl = F.local2d(xl, wl, bl, **kw)
    assert_close(yl.numpy(), y.numpy(), 1e-12, "forward")
    v = Tensor(rng.standard_normal(y.shape))
    gx, gw, gb = tg.grad(y, [x, w, b], v)
    glx, glw, glb = tg.grad(yl, [xl, wl, bl], v)
    assert_close(glx.numpy(), gx.numpy(), 1e-12, "grad x")
    # A shared kernel's gradient is the sum of the per-position kernels' gradients.
    assert_close(glw.numpy().sum(axis=(1, 2)), gw.numpy(), 1e-12, "grad w")
    assert_close(glb.numpy().sum(axis=(1, 2)), gb.numpy(), 1e-12, "grad b")


def test_conv2d_with_whole_input_kernel_equals_linear():
    rng = np.random.default_rng(4)
    x, w, b = _leaves([rng.standard_normal((3, 2, 4, 5)), rng.standard_normal((6, 2, 4, 5)),
                       rng.standard_normal(6)])
    y = F.conv2d(x, w, b)
    assert y.shape == (3, 6, 1, 1)
    expected = F.linear(x.reshape(3, -1), w.reshape(6, -1), b)
    assert_close(y.numpy().reshape(3, 6), expected.numpy(), 1e-12, "forward")
    v = rng.standard_normal((3, 6))
    grads = tg.grad(y, [x, w, b], Tensor(v.reshape(3, 6, 1, 1)))
    expected_grads = tg.grad(expected, [x, w, b], Tensor(v))
    for k, (g, e) in enumerate(zip(grads, expected_grads)):
        assert_close(g.numpy(), e.numpy(), 1e-12, f"grad {k}")


def test_1x1_conv_equals_linear_over_channels():
    rng = np.random.default_rng(5)
    x, w, b = _leaves([rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((4, 3, 1, 1)),
                       rng.standard_normal(4)])
    y = F.conv2d(x, w, b)
    expected = F.linear(x.permute(0, 2, 3, 1), w.reshape(4, 3), b).permute(0, 3, 1, 2)
    assert_close(y.numpy(), expected.numpy(), 1e-12, "forward")
    v = Tensor(rng.standard_normal(y.shape))
    for k, (g, e) in enumerate(zip(tg.grad(y, [x, w, b], v), tg.grad(expected, [x, w, b], v))):
        assert_close(g.numpy(), e.numpy(), 1e-12, f"grad {k}")


@pytest.mark.parametrize("kernel, dilation", [((2, 4), 1), ((3, 2), (1, 3)), ((2, 3), 2)])
def test_same_padding_puts_the_odd_pixel_bottom_right(kernel, dilation):
    """padding="same" is explicit zero padding of d*(k-1) per axis, the larger half after."""
    rng = np.random.default_rng(15)
    x = Tensor(rng.standard_normal((2, 2, 5, 6)))
    w = Tensor(rng.standard_normal((3, 2) + kernel))
    (dh, dw) = ref.pair(dilation)
    th, tw = dh * (kernel[0] - 1), dw * (kernel[1] - 1)
    padded = F.pad(x, (tw // 2, tw - tw // 2, th // 2, th - th // 2))
    y = F.conv2d(x, w, padding="same", dilation=dilation)
    assert y.shape == (2, 3, 5, 6)
    assert_close(y.numpy(), F.conv2d(padded, w, dilation=dilation).numpy(), 1e-12, "same")


def test_conv2d_equals_unfold_matmul():
    rng = np.random.default_rng(6)
    x = Tensor(rng.standard_normal((2, 3, 6, 7)))
    w = Tensor(rng.standard_normal((4, 3, 2, 3)))
    kw = dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1))
    y = F.conv2d(x, w, **kw)
    cols = F.unfold(x, (2, 3), **kw)                                        # (N, C*KH*KW, L)
    expected = (w.reshape(4, -1) @ cols).reshape(y.shape)
    assert_close(y.numpy(), expected.numpy(), 1e-12, "conv2d vs unfold @ w")


def test_avg_pool2d_equals_depthwise_conv_with_constant_kernel():
    rng = np.random.default_rng(7)
    x = Tensor(rng.standard_normal((2, 3, 7, 6)))
    y = F.avg_pool2d(x, (3, 2), stride=2, padding=1, count_include_pad=True)
    w = Tensor(np.full((3, 1, 3, 2), 1 / 6))
    assert_close(y.numpy(), F.conv2d(x, w, stride=2, padding=1, groups=3).numpy(), 1e-12,
                 "avg_pool2d vs conv2d")


@settings(max_examples=25, deadline=None, database=None)
@given(drawn=unfold_draws())
def test_unfold_fold_adjoint(drawn):
    """<unfold(x), y> == <x, fold(y)> for the same geometry."""
    (x,), kw = drawn
    cols = F.unfold(Tensor(x), **kw)
    y = Tensor(np.random.default_rng(0).standard_normal(cols.shape))
    lhs = _inner(cols, y)
    rhs = _inner(Tensor(x), F.fold(y, x.shape[2:], **kw))
    assert math.isclose(lhs, rhs, rel_tol=1e-12, abs_tol=1e-12 * np.abs(x).sum())


@settings(max_examples=25, deadline=None, database=None)
@given(drawn=conv2d_draws())
def test_conv_transpose2d_is_adjoint_of_conv2d(drawn):
    """<conv2d(x, w), y> == <x, conv_transpose2d(y, w)>, output_padding recovering x's size."""
    (x, w, *_), kw = drawn
    assume(kw["padding"] != "same")
    padding = 0 if kw["padding"] == "valid" else kw["padding"]
    (sh, sw), (ph, pw), (dh, dw) = map(ref.pair, (kw["stride"], padding, kw["dilation"]))
    _, _, H, W = x.shape
    _, _, KH, KW = w.shape
    output_padding = ((H + 2 * ph - dh * (KH - 1) - 1) % sh,
                      (W + 2 * pw - dw * (KW - 1) - 1) % sw)
    conv = F.conv2d(Tensor(x), Tensor(w), stride=kw["stride"], padding=padding,
                    dilation=kw["dilation"], groups=kw["groups"])
    y = Tensor(np.random.default_rng(0).standard_normal(conv.shape))
    back = F.conv_transpose2d(y, Tensor(w), stride=kw["stride"], padding=padding,
                              output_padding=output_padding, groups=kw["groups"],
                              dilation=kw["dilation"])
    assert back.shape == x.shape
    lhs, rhs = _inner(conv, y), _inner(Tensor(x), back)
    assert math.isclose(lhs, rhs, rel_tol=1e-12,
                        abs_tol=1e-12 * np.abs(x).sum() * np.abs(w).sum())


@pytest.mark.parametrize("case, wide", [
    pytest.param(c, k, id=f"{c.name}-input{k}")
    for c in CASES if c.name.startswith(("conv", "local2d", "linear"))
    or "_norm_" in c.name and len(c.inputs) > 1
    for k in range(len(c.inputs))])
def test_mixed_float_dtypes_compute_in_float64(case, wide):
    """One float64 operand (input ``wide``) among float32 ones: the result is float64,
    equal to the all-float64 one (no rounding to float32 on the way, not even for a
    float64 bias alone), and each gradient has its input's dtype, as for elementwise
    ops."""
    arrays = [a.astype(np.float32) for a in case.arrays()]   # values float32 can hold
    mixed = [a.astype(np.float64) if k == wide else a for k, a in enumerate(arrays)]
    fn = lambda *xs: case.fn(F, *xs)   # noqa: E731
    got = forward_and_grads(fn, mixed)
    want = forward_and_grads(fn, [a.astype(np.float64) for a in arrays])
    assert got[0].dtype == np.float64
    assert_close(got[0], want[0], 1e-12, f"{case.name} mixed-dtype forward")
    for k, (g, g64) in enumerate(zip(got[1:], want[1:])):
        assert g.dtype == mixed[k].dtype, f"gradient {k}: {g.dtype} for {mixed[k].dtype}"
        assert_close(g, g64, 1e-12 if g.dtype == np.float64 else 1e-6,
                     f"{case.name} mixed-dtype gradient {k}")


@pytest.mark.parametrize("dtypes, want", [
    (("int64", "int64", "int64"), "int64"),   # as torch: integers stay integers, bias too
    (("int64", "int64", None), "int64"),
    (("int8", "int16", "int32"), "int32"),      # NumPy's promotion among integers
    (("float32", "float32", "float32"), "float32"),
], ids=["int64", "int64-no-bias", "small-ints", "float32"])
def test_linear_computes_in_the_dtype_of_its_operands(dtypes, want):
    x, w, b = (None if d is None else tg.ones(*shape, dtype=d)
               for d, shape in zip(dtypes, [(2, 3), (4, 3), (4,)]))
    y = F.linear(x, w, b)
    assert y.dtype == want and y.tolist() == [[3 + (b is not None)] * 4] * 2


@pytest.mark.parametrize("op", [
    lambda x: F.conv2d(x, Tensor(np.linspace(-1, 1, 2 * 3 * 2 * 3).reshape(2, 3, 2, 3)),
                       stride=(1, 2), padding=1),
    lambda x: F.max_pool2d(x, 2, stride=1, padding=1),
    lambda x: F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True),
    lambda x: F.unfold(x, (2, 3), dilation=(2, 1)),
    lambda x: F.adaptive_avg_pool2d(x, (2, 3)),
    lambda x: F.local2d(x, Tensor(np.linspace(-1, 1, 2 * 4 * 3 * 3 * 2 * 2)
                                  .reshape(2, 4, 3, 3, 2, 2))),
], ids=["conv2d", "max_pool2d", "avg_pool2d", "unfold", "adaptive_avg_pool2d", "local2d"])
def test_non_contiguous_input(op):
    """A transposed or strided view gives the same result as its contiguous copy."""
    rng = np.random.default_rng(8)
    base = distinct(2, 3, 4, 5)(rng)                               # (N, C, W, H) on purpose
    view = Tensor(base).permute(0, 1, 3, 2)                        # (N, C, 5, 4), not contiguous
    copy = Tensor(np.ascontiguousarray(base.transpose(0, 1, 3, 2)))
    assert_close(op(view).numpy(), op(copy).numpy(), 1e-12, "permuted view")
    wide = distinct(2, 3, 10, 4)(rng)
    sliced = Tensor(wide)[:, :, ::2]                                # strided rows
    assert_close(op(sliced).numpy(), op(Tensor(np.ascontiguousarray(wide[:, :, ::2]))).numpy(),
                 1e-12, "strided view")


# flatten's output is a view of its input by design (as torch.flatten's): an in-place
# update of the input reaches it.
VIEW_CASES = {"flatten"}


@pytest.mark.parametrize("case", [p for p, c in zip(CASE_PARAMS, CASES)
                                  if c.name not in VIEW_CASES])
def test_results_keep_their_values_after_the_next_call(case):
    """Outputs and input gradients are arrays of their own: neither an in-place update
    of the inputs (an optimiser step) nor the next call of the op (were a buffer
    reused) changes them; unfold_1x1's columns, say, must not be a view of x."""
    xs = _leaves(case.arrays())
    outs, _, grads = run_with_grads(case.fn, xs, seed=1)
    first = outs + grads
    kept = [r.numpy() for r in first]   # host copies
    with tg.no_grad():
        for x in xs:
            x *= -2.0   # tie-free inputs stay tie-free, relu-like ones off 0; a product
            # of two inputs changes too, as it would not were both only negated
    outs, _, grads = run_with_grads(case.fn, xs, seed=2)
    for k, (r, before, again) in enumerate(zip(first, kept, outs + grads)):
        np.testing.assert_array_equal(r.numpy(), before,
                                      err_msg=f"{case.name}: first call's result {k} changed")
        if before.dtype.kind == "f":   # new values, which a shared buffer would show
            assert not np.array_equal(again.numpy(), before), f"{case.name}: result {k}"


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_gradients_ignore_the_upstream_layout(case, device):
    """An op's upstream gradient comes in the layout of whatever op consumed its
    output (a transpose's, a batch-last conv's, a slice's, a sum's broadcast), not
    the C order gradcheck gives: a backward that reads it as C order, or writes
    into it, gives other gradients or changes it (see conftest)."""
    check_gradients_ignore_upstream_layout(lambda *xs: case.fn(F, *xs), case.arrays(), device)


# ---- the max-pool tie rule ---------------------------------------------------------------
TIES = np.array([[1.0, 3.0, 3.0],
                 [3.0, 2.0, 3.0],
                 [0.0, 3.0, 1.0]])


@pytest.mark.parametrize("op, x, grad, indices", [
    # Every 2x2 window holds several 3s; each window's gradient goes to its first 3.
    (lambda x: F.max_pool2d(x, 2, stride=1, return_indices=True), TIES,
     [[0, 2, 0], [1, 0, 1], [0, 0, 0]], [[1, 1], [3, 5]]),
    # A constant window: everything to the top-left element.
    (lambda x: F.max_pool2d(x, 2, return_indices=True), np.full((2, 2), 5.0),
     [[1, 0], [0, 0]], [[0]]),
    # Padding (-inf) never wins; the first real maximum does.
    (lambda x: F.max_pool2d(x, 3, stride=2, padding=1, return_indices=True), np.ones((3, 3)),
     [[1, 1, 0], [1, 1, 0], [0, 0, 0]], [[0, 1], [3, 4]]),
    # ... not even where the maximum is NaN or -inf, which padding's -inf would match
    # (PyTorch's results: the window's first real element).
    (lambda x: F.max_pool2d(x, 3, stride=2, padding=1, return_indices=True),
     [[np.nan, 1.0], [2.0, 3.0]], [[1, 0], [0, 0]], [[0]]),
    (lambda x: F.max_pool2d(x, 3, stride=1, padding=1, return_indices=True),
     np.full((2, 2), -np.inf), [[4, 0], [0, 0]], [[0, 0], [0, 0]]),
    (lambda x: (F.adaptive_max_pool2d(x, (1, 2)), None), np.ones((2, 4)),
     [[1, 0, 1, 0], [0, 0, 0, 0]], None),
    # Overlapping bins of unequal size (rows [0, 2), [1, 3); columns [0, 2), [1, 4), [3, 5)).
    (lambda x: (F.adaptive_max_pool2d(x, (2, 3)), None), np.ones((3, 5)),
     [[1, 1, 0, 1, 0], [1, 1, 0, 1, 0], [0, 0, 0, 0, 0]], None),
    (lambda x: F.max_pool1d(x[:, :, 0], 2, stride=1, return_indices=True), np.ones((1, 4)),
     [[1, 1, 1, 0]], [0, 1, 2]),
], ids=["overlapping", "constant", "padded", "padded_nan", "padded_minus_inf", "adaptive",
        "adaptive_uneven", "1d"])
def test_max_pool_ties_go_to_first_maximum(op, x, grad, indices):
    x = Tensor(np.asarray(x, dtype=np.float64)[None, None], requires_grad=True)
    y, idx = op(x)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], np.asarray(grad, dtype=np.float64))
    if indices is not None:
        np.testing.assert_array_equal(idx.numpy()[0, 0], indices)


@pytest.mark.parametrize("output_size", [1, (1, 2)], ids=["divisible", "uneven_bins"])
def test_adaptive_max_pool_nan_rule_matches_max_pool(output_size):
    """A bin holding NaN outputs NaN and sends its gradient and index to its first
    element, whether adaptive_max_pool2d takes the max_pool2d path (bins that tile
    the input) or its own (overlapping bins)."""
    x = np.array([[1.0, np.nan, 0.0], [3.0, 2.0, 5.0]])
    xt = Tensor(x[None, None], requires_grad=True)
    y, idx = F.adaptive_max_pool2d(xt, output_size, return_indices=True)
    y.sum().backward()
    assert np.isnan(y.numpy()).all()     # every bin holds the NaN at (0, 1)
    first = [0, 1][:idx.shape[-1]]       # the first element of each bin: (0, 0), (0, 1)
    np.testing.assert_array_equal(idx.numpy()[0, 0, 0], first)
    np.testing.assert_array_equal(np.flatnonzero(xt.grad.numpy()), first)


# ---- bad input ------------------------------------------------------------------------
def _t(*shape):
    return Tensor(np.zeros(shape))


IMAGE_NDIM = r"expected x of shape \(C, H, W\) or \(N, C, H, W\) \(3 or 4 dimensions\)"
SEQUENCE_NDIM = r"expected x of shape \(C, L\) or \(N, C, L\) \(2 or 3 dimensions\)"


@pytest.mark.parametrize("op", [F.adaptive_avg_pool2d, F.adaptive_max_pool2d])
@pytest.mark.parametrize("size, error, message", [
    ((None, 2.5), TypeError, r"output_size must be an int, got 2.5 \(float\)"),
    ((0, None), ValueError, r"output_size must be an int >= 1, got 0"),
])
def test_adaptive_output_size_with_none_names_the_bad_entry(op, size, error, message):
    # The error shows the entry given, not a pair with the input size put in for None.
    with pytest.raises(error, match=rf"{op.__name__}: {message}$"):
        op(_t(1, 2, 4, 4), size)


@pytest.mark.parametrize("call, patterns", [
    (lambda: F.conv2d(_t(1, 3, 5, 5), _t(2, 4, 3, 3)), [r"\(1, 3, 5, 5\)", r"\(2, 4, 3, 3\)"]),
    (lambda: F.conv2d(_t(1, 1, 3, 3), _t(1, 1, 5, 5)), [r"\(1, 1, 3, 3\)", r"5, 5\)|5x5"]),
    (lambda: F.conv2d(_t(1, 1, 3, 3), _t(1, 1, 3, 6), padding=1), [r"\(1, 1, 3, 3\)"]),
    (lambda: F.conv2d(_t(1, 3, 5, 5), _t(4, 1, 3, 3), groups=2), [r"groups", r"\b3\b"]),
    (lambda: F.conv2d(_t(1, 4, 5, 5), _t(3, 2, 3, 3), groups=2), [r"groups", r"\b3\b"]),
    (lambda: F.conv2d(_t(1, 2, 5, 5), _t(3, 2, 3, 3), _t(4)), [r"\(4,\)", r"\b3\b"]),
    (lambda: F.conv2d(_t(5, 5), _t(3, 2, 3, 3)), [IMAGE_NDIM, r"got shape \(5, 5\)"]),
    (lambda: F.conv2d(_t(1, 2, 5, 5), _t(3, 2, 3)), [r"\(3, 2, 3\)"]),
    (lambda: F.conv2d(_t(1, 2, 5, 5), _t(3, 2, 3, 3), stride=0), [r"stride"]),
    (lambda: F.conv2d(_t(1, 2, 5, 5), _t(3, 2, 3, 3), stride=(1, -1)), [r"stride"]),
    (lambda: F.conv2d(_t(1, 2, 5, 5), _t(3, 2, 3, 3), padding="same", stride=2),
     [r"same", r"stride"]),
    (lambda: F.conv2d(_t(1, 2, 5, 5), _t(3, 2, 3, 3), padding="full"), [r"full"]),
    (lambda: F.conv2d(_t(1, 2, 5, 5), _t(3, 2, 3, 3), padding=-1), [r"padding"]),
    (lambda: F.conv2d(_t(1, 2, 5, 5), _t(3, 2, 3, 3), dilation=0), [r"dilation"]),
    (lambda: F.conv_transpose2d(_t(1, 3, 4, 4), _t(2, 3, 3, 3)),
     [r"\(1, 3, 4, 4\)", r"\(2, 3, 3, 3\)"]),
    (lambda: F.conv_transpose2d(_t(1, 2, 4, 4), _t(2, 3, 3, 3), stride=2, output_padding=2),
     [r"output_padding"]),
    (lambda: F.local2d(_t(1, 2, 5, 5), _t(2, 4, 4, 2, 3, 3)), [r"\(2, 4, 4, 2, 3, 3\)", r"3"]),
    (lambda: F.local2d(_t(1, 2, 5, 5), _t(2, 3, 3, 3, 3, 3)),
     [r"\(1, 2, 5, 5\)", r"\(2, 3, 3, 3, 3, 3\)"]),
    (lambda: F.local2d(_t(1, 2, 5, 5), _t(2, 3, 3, 2, 3, 3), _t(2, 2, 2)),
     [r"\(2, 2, 2\)"]),
    (lambda: F.linear(_t(3, 4), _t(5, 3)), [r"\(3, 4\)", r"\(5, 3\)"]),
    (lambda: F.max_pool2d(_t(3, 4), 2), [IMAGE_NDIM, r"\(3, 4\)"]),
    (lambda: F.max_pool2d(_t(1, 1, 3, 3), 5), [r"\(1, 1, 3, 3\)"]),
    (lambda: F.max_pool2d(_t(1, 1, 4, 4), 2, stride=0), [r"stride"]),
    (lambda: F.avg_pool2d(_t(1, 1, 2, 2), 3), [r"\(1, 1, 2, 2\)"]),
    (lambda: F.avg_pool2d(_t(1, 1, 4, 4), 2, stride=-1), [r"stride"]),
    (lambda: F.adaptive_avg_pool2d(_t(4, 4), 2), [IMAGE_NDIM, r"\(4, 4\)"]),
    (lambda: F.unfold(_t(1, 1, 3, 3), 4), [r"\(1, 1, 3, 3\)"]),
    (lambda: F.fold(_t(1, 4, 5), (4, 4), 2), [r"\(1, 4, 5\)"]),
    (lambda: F.fold(_t(1, 5, 9), (4, 4), 2), [r"\(1, 5, 9\)"]),
    (lambda: F.conv1d(_t(1, 2, 5, 5), _t(3, 2, 3)), [SEQUENCE_NDIM, r"\(1, 2, 5, 5\)"]),
    (lambda: F.conv1d(_t(1, 2, 5), _t(3, 4, 3)), [r"\(1, 2, 5\)", r"\(3, 4, 3\)"]),
    # dilation 3 puts the first window's two taps at rows -1 and 2 of a 2-row input
    (lambda: F.max_pool2d(_t(1, 1, 2, 6), (2, 1), (4, 2), (1, 0), (3, 2), ceil_mode=True),
     [r"\(1, 1, 2, 6\)", r"wholly in the padding", r"dilation \(3, 2\)"]),
    # even with ceil_mode, some window must start inside the input
    (lambda: F.max_pool2d(_t(1, 1, 2, 2), 5, stride=1, ceil_mode=True),
     [r"\(1, 1, 2, 2\)", r"kernel \(5, 5\)", r"no window starts inside the input"]),
    (lambda: F.conv2d(_t(2, 4, 5, 5), _t(6, 4, 0, 3)), [r"\(6, 4, 0, 3\)", r"along KH;"]),
    (lambda: F.conv_transpose2d(_t(2, 4, 5, 5), _t(4, 2, 3, 0)), [r"\(4, 2, 3, 0\)", r"KW"]),
    (lambda: F.conv1d(_t(1, 2, 5), _t(3, 2, 0)), [r"\(3, 2, 0\)", r"along K;"]),
    (lambda: F.local2d(_t(1, 2, 5, 5), _t(2, 5, 3, 2, 0, 3)), [r"\(2, 5, 3, 2, 0, 3\)"]),
    (lambda: F.conv2d(_t(2, 4, 0, 5), _t(3, 4, 1, 1), padding=1),
     [r"\(2, 4, 0, 5\)", r"along H;"]),
    (lambda: F.conv_transpose2d(_t(2, 4, 5, 0), _t(4, 2, 3, 3)), [r"\(2, 4, 5, 0\)", r"W"]),
    (lambda: F.conv1d(_t(1, 2, 0), _t(3, 2, 1), padding=1), [r"\(1, 2, 0\)", r"along L;"]),
    (lambda: F.max_pool2d(_t(1, 1, 0, 4), 1), [r"\(1, 1, 0, 4\)"]),
    (lambda: F.avg_pool1d(_t(1, 1, 0), 1), [r"\(1, 1, 0\)"]),
    (lambda: F.adaptive_max_pool2d(_t(2, 4, 0, 5), 2), [r"\(2, 4, 0, 5\)"]),
    (lambda: F.adaptive_avg_pool2d(_t(2, 4, 3, 0), 2), [r"\(2, 4, 3, 0\)"]),
    (lambda: F.unfold(_t(1, 1, 0, 3), 1, padding=1), [r"\(1, 1, 0, 3\)"]),
    (lambda: F.conv1d(_t(1, 2, 5), _t(3, 2, 3), padding="same", stride=2),
     [r"got stride 2$"]),
    (lambda: F.pad(_t(1, 5), (-3, -3)), [r"\(1, 5\)", r"only 5"]),
    # PyTorch's rule: pooling padding of at most half the kernel, per axis
    (lambda: F.max_pool2d(_t(1, 1, 5, 5), 3, stride=1, padding=2),
     [r"padding \(2, 2\)", r"half the kernel"]),
    (lambda: F.avg_pool2d(_t(1, 1, 5, 6), (2, 4), padding=(1, 3)),
     [r"padding \(1, 3\)", r"half the kernel size \(2, 4\)"]),
    (lambda: F.conv_transpose2d(_t(1, 2, 2, 2), _t(2, 3, 3, 3), padding=2),
     [r"\(1, 2, 2, 2\)", r"empty output 0x0"]),
    (lambda: F.conv_transpose2d(_t(1, 3, 2, 2), _t(3, 2, 3, 3), groups=2),
     [r"\b3 channels", r"groups=2"]),
    # 1-d ops name their own (N, C, L) shapes, not the 4-d ones they run on
    (lambda: F.conv1d(_t(1, 2, 3), _t(3, 2, 5)),
     [r"kernel 5 is larger than the input x of shape \(1, 2, 3\) padded to 3 \(padding "
      r"left/right 0/0\)"]),
    (lambda: F.conv1d(_t(1, 4, 5), _t(3, 2, 3), groups=2), [r"\(3, 2, 3\)", r"groups=2"]),
    (lambda: F.max_pool1d(_t(1, 2, 3), 5, padding=1, dilation=2),
     [r"window 5 \(9 with dilation 2\) is larger than the input x of shape \(1, 2, 3\) "
      r"padded to 5 \(padding left/right 1/1\)"]),
    # an unbatched sample is (C, H, W) or (C, L): other ranks name both layouts
    (lambda: F.conv2d(_t(1, 1, 2, 5, 5), _t(3, 2, 3, 3)), [IMAGE_NDIM, r"\(1, 1, 2, 5, 5\)"]),
    (lambda: F.conv_transpose2d(_t(4, 4), _t(2, 3, 3, 3)), [IMAGE_NDIM, r"\(4, 4\)"]),
    (lambda: F.local2d(_t(5, 5), _t(2, 4, 4, 1, 2, 2)), [IMAGE_NDIM, r"\(5, 5\)"]),
    (lambda: F.unfold(_t(4, 4), 2), [IMAGE_NDIM, r"\(4, 4\)"]),
    (lambda: F.fold(_t(8), (4, 4), 2),
     [r"expected cols of shape \(C\*KH\*KW, L\) or \(N, C\*KH\*KW, L\) \(2 or 3 dim",
      r"\(8,\)"]),
    (lambda: F.avg_pool2d(_t(1, 1, 1, 4, 4), 2), [IMAGE_NDIM, r"\(1, 1, 1, 4, 4\)"]),
    (lambda: F.adaptive_max_pool2d(_t(4,), 2), [IMAGE_NDIM, r"\(4,\)"]),
    (lambda: F.max_pool1d(_t(5), 2), [SEQUENCE_NDIM, r"\(5,\)"]),
    (lambda: F.avg_pool1d(_t(1, 1, 1, 5), 2), [SEQUENCE_NDIM, r"\(1, 1, 1, 5\)"]),
    # errors about an unbatched sample name its shape, not the batch of one it runs as
    (lambda: F.conv2d(_t(2, 5, 5), _t(3, 3, 3, 3)),
     [r"x of shape \(2, 5, 5\) has 2 channels", r"\(3, 3, 3, 3\)"]),
    (lambda: F.conv2d(_t(1, 3, 3), _t(1, 1, 5, 5)),
     [r"larger than the input x of shape \(1, 3, 3\) padded"]),
    (lambda: F.conv_transpose2d(_t(3, 4, 4), _t(2, 3, 3, 3)),
     [r"x of shape \(3, 4, 4\) has 3 channels", r"\(2, 3, 3, 3\)"]),
    (lambda: F.conv1d(_t(2, 5), _t(3, 4, 3)), [r"x of shape \(2, 5\) has 2 channels"]),
    (lambda: F.local2d(_t(2, 5, 5), _t(2, 4, 4, 2, 3, 3)),
     [r"x of shape \(2, 5, 5\) with kernel 3x3", r"3x3 output"]),
    (lambda: F.max_pool2d(_t(1, 3, 3), 5), [r"input x of shape \(1, 3, 3\) padded"]),
    (lambda: F.max_pool1d(_t(2, 3), 5), [r"input x of shape \(2, 3\) padded"]),
    (lambda: F.avg_pool2d(_t(1, 2, 2), 5, stride=1, ceil_mode=True),
     [r"input of shape \(1, 2, 2\), kernel \(5, 5\)", r"no window starts inside"]),
    (lambda: F.unfold(_t(1, 0, 3), 1), [r"x of shape \(1, 0, 3\) is empty along H"]),
    (lambda: F.fold(_t(4, 5), (4, 4), 2), [r"cols of shape \(4, 5\) hold 5 windows"]),
    # fold's windows lie in its output: the message names output_size, not an "input x"
    (lambda: F.fold(_t(1, 4, 1), (1, 1), 2),
     [r"kernel 2x2 is larger than output_size \(1, 1\) padded to 1x1"]),
], ids=["conv_channels", "conv_kernel_too_big", "conv_kernel_too_wide_padded",
        "conv_groups_in", "conv_groups_out", "conv_bias", "conv_x_ndim", "conv_w_ndim",
        "conv_stride0", "conv_stride_negative", "conv_same_stride2", "conv_padding_word",
        "conv_padding_negative", "conv_dilation0", "convT_channels", "convT_output_padding",
        "local2d_out_hw", "local2d_channels", "local2d_bias", "linear_features",
        "max_pool_ndim", "max_pool_kernel_too_big", "max_pool_stride0",
        "avg_pool_kernel_too_big", "avg_pool_stride_negative", "adaptive_ndim",
        "unfold_kernel_too_big", "fold_blocks", "fold_channels", "conv1d_ndim",
        "conv1d_channels", "max_pool_window_all_padding", "max_pool_ceil_no_window",
        "conv_kernel_empty", "convT_kernel_empty", "conv1d_kernel_empty", "local2d_kernel_empty",
        "conv_input_empty", "convT_input_empty", "conv1d_input_empty", "max_pool_input_empty",
        "avg_pool1d_input_empty", "adaptive_max_input_empty", "adaptive_avg_input_empty",
        "unfold_input_empty", "conv1d_same_stride2", "pad_crops_too_much",
        "max_pool_padding_over_half", "avg_pool_padding_over_half_width", "convT_empty_output",
        "convT_groups_in", "conv1d_kernel_too_big", "conv1d_groups_out",
        "max_pool1d_window_too_big",
        "conv_x_5d", "convT_x_ndim", "local2d_x_ndim", "unfold_x_ndim", "fold_ndim",
        "avg_pool_x_5d", "adaptive_max_ndim", "max_pool1d_ndim", "avg_pool1d_ndim",
        "unbatched_conv_channels", "unbatched_conv_kernel_too_big", "unbatched_convT_channels",
        "unbatched_conv1d_channels", "unbatched_local2d_out_hw", "unbatched_max_pool_too_big",
        "unbatched_max_pool1d_too_big", "unbatched_avg_pool_ceil_no_window",
        "unbatched_unfold_empty", "unbatched_fold_blocks", "fold_kernel_larger_than_output"])
def test_bad_input_raises_clear_error(call, patterns):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    for pattern in patterns:
        assert re.search(pattern, message), \
            f"error message {message!r} does not mention {pattern!r}"


@pytest.mark.parametrize("call", [
    lambda: F.conv2d(np.zeros((1, 1, 3, 3)), _t(1, 1, 2, 2)),
    lambda: F.conv2d(Tensor(np.zeros((1, 1, 3, 3), dtype=np.int64)), _t(1, 1, 2, 2)),
    lambda: F.max_pool2d([[[[1.0, 2.0]]]], 1),
    lambda: F.local2d(_t(1, 1, 3, 3), np.zeros((1, 2, 2, 1, 2, 2))),
], ids=["conv_ndarray", "conv_int_dtype", "pool_list", "local2d_ndarray"])
def test_bad_type_raises_type_error(call):
    with pytest.raises(TypeError, match=r"Tensor|dtype"):
        call()


@pytest.mark.parametrize("call, error, match", [
    (lambda: F.conv2d(_t(1, 2, 5, 5), _t(3, 2, 3, 3), stride=1.5), TypeError,
     r"conv2d: stride must be an int or a pair of ints, got 1\.5 \(float\)"),
    (lambda: F.conv2d(_t(1, 2, 5, 5), _t(3, 2, 3, 3), stride=True), TypeError,
     r"conv2d: stride must be an int or a pair of ints, got True \(bool\)"),
    (lambda: F.conv2d(_t(1, 2, 5, 5), _t(3, 2, 3, 3), padding=(1, 1.0)), TypeError,
     r"conv2d: padding must be an int or a pair of ints, got \(1, 1\.0\)"),
    (lambda: F.conv2d(_t(1, 2, 5, 5), _t(3, 2, 3, 3), stride=(1, 1, 1)), ValueError,
     r"conv2d: stride must be an int or a pair of ints, got 3 ints: \(1, 1, 1\)"),
    (lambda: F.conv2d(_t(1, 2, 5, 5), _t(3, 2, 3, 3), stride=(1, 0)), ValueError,
     r"conv2d: stride must be an int or a pair of ints >= 1, got \(1, 0\)"),
    (lambda: F.conv2d(_t(1, 2, 5, 5), _t(2, 1, 3, 3), groups=2.0), TypeError,
     r"conv2d: groups must be an int, got 2\.0 \(float\)"),
    (lambda: F.conv2d(_t(1, 2, 5, 5), _t(2, 2, 3, 3), groups=0), ValueError,
     r"conv2d: groups must be an int >= 1, got 0"),
    (lambda: F.conv1d(_t(1, 2, 5), _t(3, 2, 3), stride=(1, 2)), ValueError,
     r"conv1d: stride must be an int, got 2 ints: \(1, 2\)"),
    (lambda: F.conv1d(_t(1, 2, 5), _t(3, 2, 3), dilation="2"), TypeError,
     r"conv1d: dilation must be an int, got '2' \(str\)"),
    (lambda: F.max_pool2d(_t(1, 1, 4, 4), 2, stride=2.0), TypeError,
     r"max_pool2d: stride must be an int or a pair of ints, got 2\.0"),
], ids=["stride-float", "stride-bool", "padding-float-element", "stride-three", "stride-zero",
        "groups-float", "groups-zero", "conv1d-stride-pair", "conv1d-dilation-str",
        "pool-stride-float"])
def test_window_settings_follow_the_int_rule(call, error, match):
    # A wrong type is a TypeError; a count or a value out of range a ValueError.
    with pytest.raises(error, match=match):
        call()


def test_window_settings_take_0d_integer_tensors_and_arrays():
    rng = np.random.default_rng(0)
    x, w = Tensor(rng.standard_normal((1, 2, 6, 6))), Tensor(rng.standard_normal((2, 1, 3, 3)))
    expected = F.conv2d(x, w, stride=2, padding=1, groups=2).numpy()
    for stride, padding, groups in [(tg.tensor(2), np.int64(1), tg.tensor(2)),
                                    (np.array(2), (tg.tensor(1), 1), np.array(2)),
                                    (tg.tensor([2, 2]), np.array([1, 1]), 2)]:
        got = F.conv2d(x, w, stride=stride, padding=padding, groups=groups).numpy()
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(F.max_pool2d(x, 2, stride=tg.tensor(2)).numpy(),
                                  F.max_pool2d(x, 2).numpy())
    np.testing.assert_array_equal(F.avg_pool1d(x[0], 2, stride=tg.tensor(2)).numpy(),
                                  F.avg_pool1d(x[0], 2).numpy())


# ---- dropout ---------------------------------------------------------------------------
def test_dropout_identity_when_not_training_or_p0():
    x = Tensor(np.random.default_rng(9).standard_normal((3, 4)), requires_grad=True)
    for y in (F.dropout(x, 0.5, training=False), F.dropout(x, 0.0, training=True)):
        np.testing.assert_array_equal(y.numpy(), x.numpy())


def test_dropout_scales_kept_units_and_masks_gradient():
    tg.manual_seed(0)
    x = Tensor(np.random.default_rng(10).uniform(1.0, 2.0, (100, 100)), requires_grad=True)
    y = F.dropout(x, 0.3, training=True)
    kept = y.numpy() != 0
    assert 0.65 < kept.mean() < 0.75, kept.mean()
    np.testing.assert_allclose(y.numpy()[kept], x.numpy()[kept] / 0.7, rtol=1e-12)
    v = np.random.default_rng(11).standard_normal(x.shape)
    y.backward(Tensor(v))
    np.testing.assert_allclose(x.grad.numpy(), v * kept / 0.7, rtol=1e-12)


def test_dropout_seeded_and_extremes():
    x = Tensor(np.ones((4, 5)))
    tg.manual_seed(123)
    a = F.dropout(x, 0.5, training=True).numpy()
    tg.manual_seed(123)
    np.testing.assert_array_equal(F.dropout(x, 0.5, training=True).numpy(), a)
    all_dropped = F.dropout(x, 1.0, training=True).numpy()
    np.testing.assert_array_equal(all_dropped, np.zeros((4, 5)))
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"probability|\[0, 1\]"):
            F.dropout(x, p, training=True)


def test_dropout_gradcheck():
    def fn(x):
        tg.manual_seed(0)  # the same mask on every evaluation
        return F.dropout(x, 0.4, training=True)
    assert gradcheck(fn, Tensor(np.random.default_rng(12).standard_normal((3, 4)),
                                requires_grad=True))


# ---- normalization ---------------------------------------------------------------------
def _stats(C, dtype=np.float64, device="cpu"):
    """Fresh running statistics (running_mean, running_var), away from their defaults."""
    return (tg.tensor(np.linspace(-0.5, 0.5, C), dtype=dtype, device=device),
            tg.tensor(np.linspace(0.5, 2.0, C), dtype=dtype, device=device))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("op, shape, momentum", [
    ("batch_norm", (4, 3, 2, 3), 0.1),
    ("batch_norm", (5, 2), 1.0),          # (N, C): the running values become the batch's
    ("batch_norm", (2, 3, 4), 0.0),       # momentum 0: they stay as they are
    ("instance_norm", (3, 2, 2, 3), 0.3),
    ("instance_norm", (1, 3, 5), 0.1),
])
def test_running_stats_are_updated_in_place_as_in_torch(op, shape, momentum, dtype):
    """Three training steps then one in evaluation: the same outputs and running
    statistics as torch's, the statistics updated in place (the same tensors and
    arrays; PyTorch's unbiased variance) and each update recorded as an in-place change."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(31)
    C = shape[1]
    ours = _stats(C, dtype)
    theirs = tuple(torch.tensor(t.numpy()) for t in ours)
    arrays, versions = [t.data for t in ours], [t._version for t in ours]
    fn, tfn = getattr(F, op), getattr(torch.nn.functional, op)
    flag = "training" if op == "batch_norm" else "use_input_stats"
    for step, train in enumerate([True, True, True, False]):
        x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
        y = fn(Tensor(x), *ours, momentum=momentum, **{flag: train})
        ty = tfn(torch.tensor(x), *theirs, momentum=momentum, **{flag: train})
        assert y.dtype == dtype
        assert_close(y.numpy(), ty.numpy(), RTOL[dtype], f"{op} output, step {step}")
        for name, t, tt, a in zip(("running_mean", "running_var"), ours, theirs, arrays):
            assert t.data is a, f"{name} was replaced, not updated in place"
            assert_close(t.numpy(), tt.numpy(), RTOL[dtype], f"{op} {name}, step {step}")
    assert [t._version for t in ours] == [v + 3 for v in versions]


def test_running_stats_update_is_an_in_place_change_for_autograd():
    """A graph that read the running statistics before an update refuses to
    backpropagate with the new values, as after any in-place change."""
    rm, rv = _stats(2)
    w = Tensor(np.ones(2), requires_grad=True)
    y = (w * rm).sum()
    F.batch_norm(Tensor(np.arange(8.0).reshape(4, 2)), rm, rv, training=True)
    with pytest.raises(RuntimeError, match="modified in place"):
        y.backward()


@pytest.mark.parametrize("call", [
    lambda x, rm, rv: F.batch_norm(x, rm, rv),                         # evaluation
    lambda x, rm, rv: F.instance_norm(x, rm, rv, use_input_stats=False),
    lambda x, rm, rv: F.batch_norm(x[:0], rm, rv, training=True),       # an empty batch
    lambda x, rm, rv: F.instance_norm(x[:0], rm, rv),
], ids=["batch_norm-eval", "instance_norm-running", "batch_norm-empty", "instance_norm-empty"])
def test_running_stats_are_left_alone_without_input_statistics(call):
    x = Tensor(np.random.default_rng(32).standard_normal((3, 2, 4)), requires_grad=True)
    rm, rv = _stats(2)
    before = [t.numpy().copy() for t in (rm, rv)]
    y = call(x, rm, rv)
    y.sum().backward()
    assert y.shape[1:] == x.shape[1:] and x.grad.shape == x.shape
    for t, b in zip((rm, rv), before):
        np.testing.assert_array_equal(t.numpy(), b)


@pytest.mark.parametrize("call, shape", [
    (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), (0, 3, 2)),
    (lambda x, w, b: F.group_norm(x, 3, w, b), (0, 3, 2)),
    (lambda x, w, b: F.group_norm(x, 1, w, b), (2, 3, 0)),
    (lambda x, w, b: F.instance_norm(x, weight=w, bias=b), (0, 3, 2)),
    (lambda x, w, b: F.layer_norm(x, (3, 2), w.reshape(3, 1).expand(3, 2)), (0, 3, 2)),
])
def test_empty_input_gives_an_empty_result(call, shape):
    """As in PyTorch: no values, no statistics, an empty result (and zero gradients of
    the weight and bias), without a NaN or a warning from an empty mean."""
    x = Tensor(np.zeros(shape), requires_grad=True)
    w, b = Tensor(np.ones(3), requires_grad=True), Tensor(np.zeros(3), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = call(x, w, b)
        y.sum().backward()
    assert y.shape == shape and x.grad.shape == shape
    np.testing.assert_array_equal(w.grad.numpy(), np.zeros(3))


def test_normalizations_agree_with_each_other():
    """group_norm with one group per channel is instance_norm, and with one group
    layer_norm over (C, ...); batch_norm is instance_norm of one sample whose spatial
    axis holds the whole batch; BatchNorm2d is batch_norm of its running statistics."""
    rng = np.random.default_rng(33)
    x = Tensor(rng.standard_normal((3, 4, 2, 5)))
    w, b = Tensor(rng.standard_normal(4)), Tensor(rng.standard_normal(4))
    assert_close(F.group_norm(x, 4, w, b).numpy(), F.instance_norm(x, weight=w, bias=b).numpy(),
                 1e-12, "group_norm(x, C) vs instance_norm")
    assert_close(F.group_norm(x, 1).numpy(), F.layer_norm(x, (4, 2, 5)).numpy(), 1e-12,
                 "group_norm(x, 1) vs layer_norm")
    one_sample = x.permute(1, 0, 2, 3).reshape(1, 4, 3 * 2 * 5)       # (1, C, N*H*W)
    expected = F.instance_norm(one_sample).reshape(4, 3, 2, 5).permute(1, 0, 2, 3)
    assert_close(F.batch_norm(x, None, None, training=True).numpy(), expected.numpy(), 1e-12,
                 "batch_norm vs instance_norm of the batch as one sample")
    from tinygrad_cnn import nn
    bn = nn.BatchNorm2d(4, momentum=0.3, dtype="float64")
    rm, rv = _stats(4)
    bn.running_mean.data[...], bn.running_var.data[...] = rm.numpy(), rv.numpy()
    with tg.no_grad():
        bn.weight[...], bn.bias[...] = w, b
    for train in (True, False):
        y = bn.train(train)(x)
        expected = F.batch_norm(x, rm, rv, w, b, training=train, momentum=0.3)
        assert_close(y.numpy(), expected.numpy(), 1e-15, f"BatchNorm2d, training={train}")
        assert_close(bn.running_var.numpy(), rv.numpy(), 1e-15, "running_var")


# Each normalisation op by its own statistics, on (N, C, H, W) x (C even)
NORMALIZATIONS = pytest.mark.parametrize("op", [
    lambda x: F.batch_norm(x, None, None, training=True),
    lambda x: F.instance_norm(x),
    lambda x: F.layer_norm(x, x.shape[1:]),
    lambda x: F.group_norm(x, 2),
], ids=["batch_norm", "instance_norm", "layer_norm", "group_norm"])


@NORMALIZATIONS
def test_normalization_is_sound_far_from_zero(op):
    """float32 values around 1e4 with a unit spread: the variance as the mean of squared
    deviations keeps the result within float32's resolution of those values (~1e-3);
    E[x^2] - E[x]^2 would subtract two numbers near 1e8, whose float32 spacing is 8, and
    lose the variance entirely (the control below shows it does)."""
    x32 = (1e4 + np.random.default_rng(34).standard_normal((4, 4, 3, 3))).astype(np.float32)
    got = op(Tensor(x32)).numpy()
    want = op(Tensor(x32.astype(np.float64))).numpy()   # the same values, exactly
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-2)
    # control: the one-pass formula in float32 on the same values, per group of layer_norm
    flat = x32.reshape(4, -1)
    mean = flat.mean(axis=1, dtype=np.float32, keepdims=True)
    naive = (flat * flat).mean(axis=1, dtype=np.float32, keepdims=True) - mean * mean
    exact = x32.astype(np.float64).reshape(4, -1).var(axis=1, keepdims=True)
    assert np.abs(naive - exact).max() > 0.1


@pytest.mark.parametrize("shape", [(64, 4, 16, 16), (65536, 4)], ids=["maps", "features"])
def test_batch_norm_statistics_of_many_values_far_from_zero_are_float32_accurate(shape):
    """float32 values around 1e4 in many rows (64 images of 256, or 65536 samples of
    one value): the mean is within one float32 rounding of the exact one, so y is too
    (~5e-4 here).  Summed row after row in float32, the 65536 features' mean was off by
    ~1 (y's spread 0.33, running_var 1.8) and the maps' y 5x the rounding."""
    x32 = (1e4 + np.random.default_rng(37).standard_normal(shape)).astype(np.float32)
    layer = tg.nn.BatchNorm1d(4) if len(shape) == 2 else tg.nn.BatchNorm2d(4)
    got = layer(Tensor(x32)).numpy()
    x64 = x32.astype(np.float64)
    axes = (0,) + tuple(range(2, len(shape)))
    mean, var = x64.mean(axes, keepdims=True), x64.var(axes, keepdims=True)
    np.testing.assert_allclose(got, (x64 - mean) / np.sqrt(var + 1e-5), atol=8e-4)
    n = x64.size // 4
    np.testing.assert_allclose(layer.running_var.numpy(),
                               0.9 + 0.1 * var.ravel() * n / (n - 1), rtol=1e-4)


@NORMALIZATIONS
def test_float16_normalization_survives_a_wide_spread(op):
    """float16 values spread over +-1000: their squared deviations (up to ~1e6) are
    beyond float16's largest value (65504), so the statistics are computed in float32,
    as PyTorch computes them; in float16 the variance is inf and every output 0."""
    x16 = (np.random.default_rng(36).standard_normal((4, 4, 3, 3)) * 400).astype(np.float16)
    got = op(Tensor(x16)).numpy()
    want = op(Tensor(x16.astype(np.float64))).numpy()
    assert got.dtype == np.float16
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)


def test_float16_batch_norm_running_variance_stays_finite():
    # a variance of ~4e4 fits float16, the squares it is the mean of do not
    x16 = (np.random.default_rng(37).standard_normal((4, 3, 5, 5)) * 200).astype(np.float16)
    bn = tg.nn.BatchNorm2d(3, momentum=1.0, dtype=np.float16)
    bn(Tensor(x16))
    want = x16.astype(np.float64).transpose(1, 0, 2, 3).reshape(3, -1).var(axis=1, ddof=1)
    np.testing.assert_allclose(bn.running_var.numpy(), want, rtol=2e-3)
    # A batch variance beyond float16's range (~1.6e5) still updates the running one
    # (1 + 0.1 * 1.6e5, within it), as PyTorch's float32 update does.
    bn = tg.nn.BatchNorm2d(3, momentum=0.1, dtype=np.float16)
    bn(Tensor(x16 * 2))
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * 4 * want, rtol=2e-3)


def _detached_statistics(x, axes, eps):
    """_normalize with the mean and variance cut from the graph: the forward is the same,
    the backward misses the statistics' dependence on x (a classic batch-norm bug)."""
    mean = x.mean(axes, keepdims=True).detach()
    centred = x - mean
    var = (centred * centred).mean(axes, keepdims=True).detach()
    return centred * (var + eps) ** -0.5, mean, var


# (batch_norm in training computes without _normalize: its own controls follow)
@pytest.mark.parametrize("name", ["layer_norm_last_dim", "group_norm_g2_affine",
                                  "instance_norm_affine"])
def test_gradcheck_catches_statistics_treated_as_constants(monkeypatch, name):
    c = CASES_BY_NAME[name]
    inputs = _leaves(c.arrays())
    expected = c.fn(F, *inputs).numpy()
    monkeypatch.setattr(F, "_normalize", _detached_statistics)
    np.testing.assert_array_equal(c.fn(F, *inputs).numpy(), expected)   # forward unchanged
    with pytest.raises(GradcheckError):
        gradcheck(lambda *xs: c.fn(F, *xs), inputs)


def _grad_with_constant_statistics(backend, x, grad_out, weight, mean, invstd,
                                   sums_out=None):
    """batch_norm_grad_array as if the mean and variance did not depend on x: w invstd g
    (the same bug, in the backward of batch_norm's Function)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    scale = invstd if weight is None else invstd * weight
    return grad_out * scale.reshape(shape)


def test_gradcheck_catches_batch_norm_statistics_treated_as_constants(monkeypatch):
    c = CASES_BY_NAME["batch_norm_train_affine"]
    inputs = _leaves(c.arrays())
    assert gradcheck(lambda *xs: c.fn(F, *xs), inputs)
    monkeypatch.setattr(F, "batch_norm_grad_array", _grad_with_constant_statistics)
    with pytest.raises(GradcheckError):
        gradcheck(lambda *xs: c.fn(F, *xs), inputs)


def test_gradgradcheck_catches_a_wrong_batch_norm_double_backward(monkeypatch):
    """The gradient of batch_norm's x gradient for x is its own formula (tensor ops):
    dropping it leaves gradcheck passing and gradgradcheck failing."""
    c = CASES_BY_NAME["batch_norm_train_affine"]
    inputs = _leaves(c.arrays())
    assert gradgradcheck(lambda *xs: c.fn(F, *xs), inputs)
    monkeypatch.setattr(F, "_batch_norm_grad_x", lambda x, h, u, eps: x * 0)
    assert gradcheck(lambda *xs: c.fn(F, *xs), inputs)
    with pytest.raises(GradcheckError):
        gradgradcheck(lambda *xs: c.fn(F, *xs), inputs)


# ---- batch_norm's array code (training) -------------------------------------------------
def _batch_norm64(x, w, b, g, eps):
    """(y, x gradient, (sum g, sum g xhat), mean, biased variance) of batch normalisation
    in float64, straight from the formulas."""
    x, g = x.astype(np.float64), g.astype(np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    w, b = w.astype(np.float64).reshape(shape), b.astype(np.float64).reshape(shape)
    mean = x.mean(axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axes, keepdims=True)
    invstd = 1 / np.sqrt(var + eps)
    xhat = (x - mean) * invstd
    grad_x = w * invstd * (g - g.mean(axes, keepdims=True)
                           - xhat * (g * xhat).mean(axes, keepdims=True))
    sums = np.stack([g.sum(axes), (g * xhat).sum(axes)])
    return xhat * w + b, grad_x, sums, mean.ravel(), var.ravel()


def _batch_norm_arrays(x, w, b, g, eps=1e-5):
    """batch_norm_array, batch_norm_grad_array (and the sums it hands over) and
    batch_norm_sums_array on the CPU."""
    backend = tg.get_backend("cpu")
    y, mean, var, invstd = conv_arrays.batch_norm_array(backend, x, w, b, eps)
    handed_over = []
    grad_x = conv_arrays.batch_norm_grad_array(backend, x, g, w, mean, invstd, handed_over)
    sums = conv_arrays.batch_norm_sums_array(backend, x, g, mean, invstd)
    np.testing.assert_array_equal(handed_over[0], sums)
    return y, grad_x, sums, mean, var


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batch_norm_arrays_are_the_formula(dtype):
    """Forward, x gradient and the weight and bias gradients against float64 formulas,
    on values offset from 0 (float64 to its rounding, float32 to a few of its ulps)."""
    rng = np.random.default_rng(38)
    x = (3 + 2 * rng.standard_normal((6, 3, 5, 7))).astype(dtype)
    g, w, b = (rng.standard_normal(s).astype(dtype) for s in (x.shape, 3, 3))
    got = _batch_norm_arrays(x, w, b, g)
    want = _batch_norm64(x, w, b, g, 1e-5)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    for k, (a, e) in enumerate(zip(got, want)):
        assert a.dtype == dtype, f"result {k}"
        assert_close(a, e, rtol, f"batch_norm array result {k}")
    # no weight: the gradient of the normalisation alone
    backend, (_, mean, _, invstd) = tg.get_backend("cpu"), conv_arrays.batch_norm_array(
        tg.get_backend("cpu"), x, None, None, 1e-5)
    assert_close(conv_arrays.batch_norm_grad_array(backend, x, g, None, mean, invstd),
                 want[1] / w.astype(np.float64).reshape(1, 3, 1, 1), rtol, "without weight")


def test_batch_norm_arrays_take_any_layout_and_keep_x_s():
    """x batch-last, in Fortran order or a strided view, g stored otherwise than x or
    broadcast: the same values as C order, and results stored like x."""
    rng = np.random.default_rng(39)
    x = rng.standard_normal((8, 4, 6, 5))
    g, w, b = rng.standard_normal(x.shape), rng.standard_normal(4), rng.standard_normal(4)
    batch_last = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 0, -1)), -1, 0)
    ones = np.broadcast_to(1.0, x.shape)
    want = _batch_norm_arrays(x, w, b, g)
    for xv in (batch_last, np.asfortranarray(x)):
        for gv in (g, np.moveaxis(np.ascontiguousarray(np.moveaxis(g, 0, -1)), -1, 0)):
            got = _batch_norm_arrays(xv, w, b, gv)
            for k, (a, e) in enumerate(zip(got, want)):
                assert_close(a, e, 1e-12, f"result {k}")
            for a in got[:2]:
                assert conv_arrays.is_batch_last(a) == conv_arrays.is_batch_last(xv)
        got = _batch_norm_arrays(xv, w, b, ones)
        for k, (a, e) in enumerate(zip(got, _batch_norm_arrays(x, w, b, ones.copy()))):
            assert_close(a, e, 1e-12, f"result {k} for a broadcast g")
    views = (x[:, ::2, 1:], w[::2], b[::2], g[:, ::2, 1:])
    got = _batch_norm_arrays(*views)
    want = _batch_norm_arrays(*(np.ascontiguousarray(a) for a in views))
    for k, (a, e) in enumerate(zip(got, want)):
        assert_close(a, e, 1e-12, f"result {k} of a strided view")
    with pytest.raises(ValueError, match=r"grad_out has shape \(8, 4, 6\)"):
        conv_arrays.batch_norm_grad_array(tg.get_backend("cpu"), x, g[..., 0], w, *want[3:5])


def test_batch_norm_keeps_a_batch_last_input_s_order():
    """F.batch_norm in training runs as one Function whose output, and the input's
    gradient, are stored like a batch-last input (the next ops read them as they are)."""
    rng = np.random.default_rng(40)
    x = np.moveaxis(np.ascontiguousarray(np.moveaxis(rng.standard_normal((4, 3, 5, 5)), 0, -1)),
                    -1, 0)
    xt = Tensor(x, requires_grad=True)
    y = F.batch_norm(xt, None, None, training=True)
    assert type(y.grad_fn).__name__ == "BatchNorm"
    assert conv_arrays.is_batch_last(y.data)
    (grad_x,) = tg.grad(y, [xt], Tensor(rng.standard_normal(x.shape)))
    assert conv_arrays.is_batch_last(grad_x.data)


def test_batch_norm_in_float16_is_the_float32_value_rounded_once():
    """float16 is computed in float32: output and every gradient equal the float32
    computation on the same values, rounded once."""
    rng = np.random.default_rng(41)
    arrays = [(rng.standard_normal((4, 3, 5, 5)) * 300).astype(np.float16),
              rng.standard_normal(3).astype(np.float16), rng.standard_normal(3).astype(np.float16)]
    g = rng.standard_normal((4, 3, 5, 5)).astype(np.float16)
    results = []
    for dtype in (np.float16, np.float32):
        xs = [Tensor(a.astype(dtype), requires_grad=True) for a in arrays]
        y = F.batch_norm(xs[0], None, None, xs[1], xs[2], training=True)
        grads = tg.grad(y, xs, Tensor(g.astype(dtype)))
        assert y.dtype == dtype and all(t.dtype == dtype for t in grads)
        results.append([y.numpy()] + [t.numpy() for t in grads])
    for k, (a16, a32) in enumerate(zip(*results)):
        np.testing.assert_array_equal(a16, a32.astype(np.float16), err_msg=f"result {k}")


def test_normalized_output_needs_a_random_upstream_gradient():
    """A normalised slice sums to 0 whatever x is, so for an all-ones upstream gradient
    the input gradient is 0, and a backward returning zeros would pass a check that
    used ones; gradcheck's random upstream gradient catches it."""
    x = Tensor(np.random.default_rng(35).standard_normal((2, 5)), requires_grad=True)
    (g,) = tg.grad(F.layer_norm(x, 5), [x], Tensor(np.ones((2, 5))))
    np.testing.assert_allclose(g.numpy(), 0, atol=1e-12)

    class ZeroBackward(tg.Function):
        """layer_norm over the last axis, with a backward right for all-ones only"""

        def forward(self, a):
            centred = a - a.mean(axis=-1, keepdims=True)
            return centred / np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + 1e-5)

        def backward(self, grad_out):
            return grad_out * 0.0

    np.testing.assert_allclose(ZeroBackward.apply(x).numpy(), F.layer_norm(x, 5).numpy(),
                               rtol=1e-12)
    with pytest.raises(GradcheckError):
        gradcheck(ZeroBackward.apply, x)


@pytest.mark.parametrize("call, error, match", [
    # normalized_shape against x's trailing dimensions, and its own form
    (lambda: F.layer_norm(_t(2, 3, 4), (3, 5)), ValueError,
     r"^layer_norm: normalized_shape \(3, 5\) must equal the last 2 dimensions of x, got x of "
     r"shape \(2, 3, 4\); expected x of shape \(\*, 3, 5\)$"),
    (lambda: F.layer_norm(_t(4), (2, 4)), ValueError, r"last 2 dimensions .* shape \(4,\)"),
    (lambda: F.layer_norm(_t(2, 3), ()), ValueError, r"at least one size, each >= 0, got \(\)"),
    (lambda: F.layer_norm(_t(2, 3), (-3,)), ValueError, r"each >= 0, got \(-3,\)"),
    (lambda: F.layer_norm(_t(2, 3), 3.0), TypeError,
     r"^layer_norm: normalized_shape must be an int or a sequence of ints, got 3\.0 \(float\)"),
    (lambda: F.layer_norm(_t(2, 3, 1), (1,)), ValueError,
     r"^layer_norm: expected more than 1 value per normalized slice \(normalized_shape "
     r"\(1,\)\), got x of shape \(2, 3, 1\)"),
    # num_groups
    (lambda: F.group_norm(_t(2, 6, 4), 4), ValueError,
     r"^group_norm: num_groups=4 does not divide the 6 channels of x of shape \(2, 6, 4\)"),
    (lambda: F.group_norm(_t(2, 6, 4), 0), ValueError, r"num_groups must be an int >= 1, got 0"),
    (lambda: F.group_norm(_t(2, 6, 4), 2.0), TypeError, r"num_groups must be an int, got 2\.0"),
    (lambda: F.group_norm(_t(3, 4), 4), ValueError,
     r"^group_norm: expected more than 1 value per group \(num_groups=4\), got x of shape "
     r"\(3, 4\)"),
    # dimensions
    (lambda: F.group_norm(_t(6), 2), ValueError,
     r"^group_norm: expected x of shape \(N, C, \.\.\.\) \(at least 2 dimensions\), got shape "
     r"\(6,\)$"),
    (lambda: F.batch_norm(_t(3), _t(3), _t(3)), ValueError, r"^batch_norm: expected x of shape"),
    (lambda: F.instance_norm(_t(3)), ValueError, r"^instance_norm: expected x of shape"),
    # weight, bias and running statistics of the wrong shape, dtype or kind
    (lambda: F.layer_norm(_t(2, 3, 4), (3, 4), _t(4)), ValueError,
     r"^layer_norm: weight has shape \(4,\), but x of shape \(2, 3, 4\) has normalized_shape "
     r"\(3, 4\); expected weight of shape \(3, 4\)$"),
    (lambda: F.layer_norm(_t(2, 3, 4), (4,), None, _t(3, 4)), ValueError,
     r"bias has shape \(3, 4\).*expected bias of shape \(4,\)"),
    (lambda: F.group_norm(_t(2, 6, 4), 2, _t(4)), ValueError,
     r"^group_norm: weight has shape \(4,\), but x of shape \(2, 6, 4\) has 6 channels; "
     r"expected weight of shape \(6,\)$"),
    (lambda: F.batch_norm(_t(2, 3), _t(3), _t(3), _t(2, 3)), ValueError,
     r"weight has shape \(2, 3\).*expected weight of shape \(3,\)"),
    (lambda: F.instance_norm(_t(2, 3, 4), bias=_t(4)), ValueError, r"bias has shape \(4,\)"),
    (lambda: F.batch_norm(_t(2, 4, 5), _t(3), _t(3)), ValueError,
     r"^batch_norm: running_mean has shape \(3,\), but x of shape \(2, 4, 5\) has 4 channels; "
     r"expected running_mean of shape \(4,\)$"),
    (lambda: F.group_norm(_t(2, 6, 4), 2, tg.ones(6, dtype="int64")), TypeError,
     r"^group_norm: weight of shape \(6,\) has dtype int64; expected a float dtype"),
    (lambda: F.batch_norm(_t(2, 3), tg.zeros(3, dtype="int64"), _t(3)), TypeError,
     r"running_mean of shape \(3,\) has dtype int64"),
    (lambda: F.batch_norm(_t(2, 3), [0.0, 0.0, 0.0], _t(3)), TypeError,
     r"^batch_norm: running_mean must be a Tensor or None, got list$"),
    # non-float input
    (lambda: F.layer_norm(tg.ones(2, 3, dtype="int64"), 3), TypeError,
     r"^layer_norm: x of shape \(2, 3\) has dtype int64; expected a float dtype"),
    (lambda: F.group_norm(tg.ones(2, 4, dtype="int32"), 2), TypeError, r"dtype int32"),
    (lambda: F.batch_norm(tg.ones(2, 3, dtype="int64"), None, None, training=True), TypeError,
     r"dtype int64"),
    (lambda: F.instance_norm(tg.ones(2, 3, 4, dtype="bool")), TypeError, r"dtype bool"),
    (lambda: F.layer_norm(np.zeros((2, 3)), 3), TypeError,
     r"^layer_norm: x must be a Tensor, got ndarray$"),
    # eps <= 0, momentum, flags
    (lambda: F.layer_norm(_t(2, 3), 3, eps=0), ValueError, r"^layer_norm: eps must be > 0, got 0"),
    (lambda: F.group_norm(_t(2, 4), 2, eps=-1e-5), ValueError, r"group_norm: eps must be > 0"),
    (lambda: F.batch_norm(_t(2, 3), _t(3), _t(3), eps=0.0), ValueError, r"batch_norm: eps must"),
    (lambda: F.instance_norm(_t(2, 3, 4), eps=-1), ValueError, r"instance_norm: eps must be > 0"),
    (lambda: F.batch_norm(_t(2, 3), _t(3), _t(3), training=True, momentum=None), TypeError,
     r"^batch_norm: momentum must be a number in \[0, 1\], got None"),
    (lambda: F.instance_norm(_t(2, 3, 4), momentum=1.5), ValueError, r"momentum must be >= 0"),
    (lambda: F.batch_norm(_t(2, 3), _t(3), _t(3), training=1), TypeError,
     r"^batch_norm: training must be True or False, got 1 \(int\)$"),
    # statistics: both or neither, needed without the input's own, of one value refused
    (lambda: F.batch_norm(_t(2, 3, 5), None, None), ValueError,
     r"^batch_norm: with training=False x is normalised by the running statistics, but "
     r"running_mean and running_var are None$"),
    (lambda: F.instance_norm(_t(2, 3, 4), use_input_stats=False), ValueError,
     r"with use_input_stats=False .* are None"),
    (lambda: F.batch_norm(_t(2, 3, 5), _t(3), None, training=True), ValueError,
     r"^batch_norm: running_mean was given without running_var; pass both"),
    (lambda: F.batch_norm(_t(1, 3), _t(3), _t(3), training=True), ValueError,
     r"^batch_norm: expected more than 1 value per channel when training, got x of shape "
     r"\(1, 3\)"),
    (lambda: F.instance_norm(_t(2, 3, 1, 1)), ValueError,
     r"^instance_norm: expected more than 1 value per channel of a sample .* \(2, 3, 1, 1\)"),
    (lambda: F.batch_norm(_t(2, 3), Tensor(np.zeros(3), requires_grad=True), _t(3)),
     RuntimeError, r"^batch_norm: running_mean requires grad, but running statistics are "
                   r"state updated in place"),
    (lambda: F.batch_norm(_t(2, 3), tg.zeros(1).expand(3), _t(3), training=True), ValueError,
     r"^batch_norm: running_mean of shape \(3,\) is a read-only view"),
], ids=lambda v: None)
def test_normalization_bad_input_raises_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call", [
    lambda t: F.batch_norm(_t(2, 3), t(3), _t(3)),
    lambda t: F.batch_norm(_t(2, 3), _t(3), _t(3), t(3), training=True),
    lambda t: F.instance_norm(_t(2, 3, 4), bias=t(3)),
    lambda t: F.layer_norm(_t(2, 3), 3, t(3)),
    lambda t: F.group_norm(_t(2, 4, 2), 2, None, t(4)),
], ids=["batch_norm-running_mean", "batch_norm-weight", "instance_norm-bias",
        "layer_norm-weight", "group_norm-bias"])
def test_normalization_operands_on_another_device_are_named(call):
    pytest.importorskip("strict_backend")
    with pytest.raises(tg.DeviceError, match=r"x is on cpu but (running_mean|weight|bias) is "
                                             r"on strict"):
        call(lambda *shape: tg.zeros(*shape, device="strict"))


# ---- negative controls: the harness catches a wrong backward ------------------------------
def _corrupt(monkeypatch, out, mode):
    """Make the backward of the op that produced ``out`` return wrong gradients.

    The op's class is patched, but only nodes whose output has ``out``'s shape
    are corrupted: an op built from two nodes of one class (matmul @ matmul)
    could otherwise undo a flip with a second flip.
    """
    cls, shape = type(out._ctx), out.shape
    original = cls.backward

    def backward(self, grad_out):
        grads = original(self, grad_out)
        if self.output.shape != shape:
            return grads
        single = not isinstance(grads, tuple)
        bad = tuple(None if g is None else g * 1.1 if mode == "scale" else g[..., ::-1]
                    for g in _as_tuple(grads))
        return bad[0] if single else bad
    monkeypatch.setattr(cls, "backward", backward)


NEGATIVE_CASES = ["conv2d_nonsquare_bias", "conv_transpose2d_stride2_pad1_outpad1",
                  "max_pool2d_k3_s2_untiled", "avg_pool2d_pad1_exclude",
                  "local2d_stride2_pad1_nonsquare", "unfold_dil2_pad1_stride2",
                  "adaptive_avg_pool2d_nondivisible"]
NEGATIVE_CASES += ["interpolate_bilinear_x2", "interpolate_nearest_size_up_down"]  # resampling


@pytest.mark.parametrize("mode", ["scale", "flip"])
@pytest.mark.parametrize("name", NEGATIVE_CASES)
def test_gradcheck_catches_wrong_backward(monkeypatch, name, mode):
    c = CASES_BY_NAME[name]
    inputs = _leaves(c.arrays())
    _corrupt(monkeypatch, c.fn(F, *inputs), mode)
    with pytest.raises(GradcheckError):
        gradcheck(lambda *xs: c.fn(F, *xs), inputs)


@pytest.mark.parametrize("name", ["conv2d", "max_pool2d", "local2d", "avg_pool2d"])
def test_loop_comparison_catches_wrong_backward(monkeypatch, name):
    spec = LOOP_SPECS_BY_NAME[name]
    arrays, kw = {
        "conv2d": ([randn(2, 2, 5, 5)(np.random.default_rng(0)),
                    randn(2, 1, 3, 3)(np.random.default_rng(1))], dict(groups=2, padding=1)),
        "max_pool2d": ([distinct(1, 2, 5, 5)(np.random.default_rng(0))],
                       dict(kernel_size=2, stride=1)),
        "local2d": ([randn(1, 2, 4, 4)(np.random.default_rng(0)),
                     randn(2, 2, 2, 2, 3, 3)(np.random.default_rng(1))], {}),
        "avg_pool2d": ([randn(1, 2, 5, 5)(np.random.default_rng(0))],
                       dict(kernel_size=3, stride=2, padding=1)),
    }[name]
    check_against_loop(spec, arrays, kw)  # sound before the corruption
    out = _as_tuple(spec.apply(F, *_leaves(arrays), **kw))[0]
    _corrupt(monkeypatch, out, "scale")
    with pytest.raises(AssertionError):
        check_against_loop(spec, arrays, kw)


# ---- normalize, cosine_similarity, one_hot -------------------------------------------------
VECTOR_CASES = {
    "normalize": lambda x, y: F.normalize(x),
    "normalize-p1-dim0": lambda x, y: F.normalize(x, p=1.0, dim=0),
    "normalize-p3": lambda x, y: F.normalize(x, p=3, dim=-1),
    "cosine_similarity": lambda x, y: F.cosine_similarity(x, y),
    "cosine_similarity-bcast": lambda x, y: F.cosine_similarity(x, y[:1], dim=-1),
}


@pytest.mark.parametrize("name", sorted(VECTOR_CASES))
def test_normalize_and_cosine_similarity_gradcheck_and_gradgradcheck(name, device):
    from tinygrad_cnn import gradcheck, gradgradcheck
    rng = np.random.default_rng(0)
    x, y = (tg.tensor(rng.standard_normal((3, 4, 2)), requires_grad=True, device=device)
            for _ in range(2))
    assert gradcheck(VECTOR_CASES[name], (x, y))
    assert gradgradcheck(VECTOR_CASES[name], (x, y))


@pytest.mark.parametrize("p", [2.0, 1.0, 3, float("inf")])
def test_normalize_matches_torch_at_zero_vectors_too(p):
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(0).standard_normal((3, 4, 2))
    a[0, :, 1] = 0.0   # a zero vector along dim 1: the result 0, the gradient 1/eps
    x, t = tg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    ours, theirs = F.normalize(x, p=p), torch.nn.functional.normalize(t, p=p)
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-13)
    upstream = np.random.default_rng(1).standard_normal(a.shape)
    ours.backward(tg.tensor(upstream))
    theirs.backward(torch.tensor(upstream))
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("p", [2.0, 3, float("inf")])
def test_normalize_and_cosine_similarity_of_float16_match_torch(p, device):
    torch = pytest.importorskip("torch")
    a = np.array([[300.0, 400.0], [1e-3, 2e-3], [-7.0, 0.5]], np.float16)   # 300**2: inf
    tf = torch.nn.functional
    x = tg.tensor(a, device=device)
    ours = F.normalize(x, p=p, dim=1)
    assert ours.dtype == np.float16
    np.testing.assert_allclose(ours.numpy(), tf.normalize(torch.tensor(a), p=p, dim=1).numpy(),
                               rtol=2e-3)
    cos = F.cosine_similarity(x, x.flip(1), dim=1)
    np.testing.assert_allclose(cos.numpy(), tf.cosine_similarity(
        torch.tensor(a), torch.tensor(a).flip(1), dim=1).numpy(), rtol=2e-3)


@pytest.mark.parametrize("dim, shapes", [(1, ((3, 4, 2), (3, 4, 2))), (-1, ((3, 4, 2), (4, 2))),
                                         (0, ((3, 1), (3, 5)))])
def test_cosine_similarity_matches_torch(dim, shapes):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s) for s in shapes)
    ours = F.cosine_similarity(tg.tensor(a), tg.tensor(b), dim=dim)
    theirs = torch.nn.functional.cosine_similarity(torch.tensor(a), torch.tensor(b), dim=dim)
    assert ours.shape == tuple(theirs.shape)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-13)


@pytest.mark.parametrize("num_classes", [-1, 5])
def test_one_hot_matches_torch(num_classes, device):
    torch = pytest.importorskip("torch")
    a = np.array([[0, 3], [2, 2]])
    ours = F.one_hot(tg.tensor(a, device=device), num_classes)
    theirs = torch.nn.functional.one_hot(torch.tensor(a), num_classes)
    assert ours.dtype == np.int64 and ours.device == tg.get_backend(device).device
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    empty = F.one_hot(tg.tensor(np.zeros(0, np.int64), device=device), 3)
    assert empty.shape == (0, 3)


@pytest.mark.parametrize("call, error, words", [
    ("F.one_hot(tg.tensor([0, -2, 1]))", ValueError, r"one_hot: class indices must be >= 0, "
                                                     r"got -2 in a tensor of shape \(3,\)"),
    ("F.one_hot(tg.tensor([0, 4]), 3)", ValueError, r"one_hot: class index 4 is out of range "
                                                    r"for num_classes=3 \(valid 0..2\)"),
    ("F.one_hot(tg.tensor([0.0, 1.0]))", TypeError, "one_hot: the class indices must be an "
                                                    "integer tensor, got dtype float32"),
    ("F.one_hot(tg.tensor(np.zeros(0, np.int64)))", ValueError, "pass num_classes"),
    ("F.one_hot([0, 1])", TypeError, "one_hot: the class indices must be a Tensor, got list"),
    ("F.normalize(tg.ones(2, 3), p=0)", ValueError, "normalize: p must be > 0"),
    ("F.normalize(tg.ones(2, 3), dim=2)", ValueError, "normalize: axis 2 is out of range"),
    ("F.normalize(tg.tensor([1, 2]))", TypeError, "normalize: x must be floating-point, got "
                                                  "dtype int64"),
    ("F.cosine_similarity(tg.ones(2, 3), tg.ones(2, 4))", ValueError,
     r"cosine_similarity: x1 of shape \(2, 3\) and x2 of shape \(2, 4\) cannot be "
     r"broadcast together"),
    ("F.cosine_similarity(tg.ones(2, 3), tg.ones(2, 3), eps=-1.0)", ValueError,
     "cosine_similarity: eps"),
])
def test_vector_op_errors(call, error, words):
    with pytest.raises(error, match=words):
        eval(call, {"F": F, "tg": tg, "np": np})
