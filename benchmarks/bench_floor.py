"""The LeNet training step written by hand in NumPy, timed beside tinygrad_cnn and PyTorch.

    python benchmarks/bench_floor.py            # batch 64 and 256
    python benchmarks/bench_floor.py --quick    # smoke run (numbers meaningless)

``bench_cnn.py``'s LeNet step (conv 5x5 20 -> relu -> maxpool 2 -> conv 5x5 50 ->
relu -> maxpool 2 -> linear 800 -> 500 -> relu -> linear 500 -> 10 ->
cross-entropy -> SGD) as one NumPy function: no Tensor, no graph, every
gradient written out, and each layer's arrays laid out however suits the next
(the second convolution, its ReLU and its pooling stay channel-major, (C, H,
W, N), as tinygrad_cnn's convolutions also keep their outputs).  It is the
"hand-written NumPy" peer the speed targets were set against: what plain
NumPy reaches on this machine without an engine's bookkeeping, against which
the engine's own overhead can be read.

Before timing, one step of each is run from the same parameters and the
updated parameters are compared, so the three compute the same thing.  The
three take turns as in ``bench_cnn.py`` (``measure``), mallopt on.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing

import bench_cnn  # noqa: E402  (after the path set-up above)

OFFSETS_2X2 = ((0, 0), (0, 1), (1, 0), (1, 1))   # row-major: the first maximum wins ties


def max_pool_2x2(a, axes):
    """The 4 strided slices of 2x2 windows over ``axes`` (H, W) of ``a``, and their max."""
    slices = []
    for i, j in OFFSETS_2X2:
        index = [slice(None)] * a.ndim
        index[axes[0]], index[axes[1]] = slice(i, None, 2), slice(j, None, 2)
        slices.append(a[tuple(index)])
    return slices, np.maximum(np.maximum(slices[0], slices[1]),
                              np.maximum(slices[2], slices[3]))


def max_pool_2x2_backward(grad_out, slices, y, grad_in, axes):
    """Send grad_out to the first maximal element of each 2x2 window of grad_in."""
    free = None                    # windows whose maximum no earlier offset took
    for k, (i, j) in enumerate(OFFSETS_2X2):
        below = slices[k] < y
        if free is None:
            hit, free = ~below, below
        else:
            hit = free > below     # free and not below
            if k < 3:
                np.logical_xor(free, hit, out=free)
        index = [slice(None)] * grad_in.ndim
        index[axes[0]], index[axes[1]] = slice(i, None, 2), slice(j, None, 2)
        np.multiply(grad_out, hit, out=grad_in[tuple(index)])


def make_step(params, x, labels, lr=0.01):
    """A training step on copies of ``params`` (bench_cnn.lenet_params' order): returns
    (step, params), step() updating the params in place."""
    p = [a.copy() for a in params]
    N, dtype = x.shape[0], x.dtype
    onehot = (labels[:, None] == np.arange(10)).astype(dtype)         # (N, 10)
    cols1 = np.empty((N, 26, 24 * 24), dtype)  # conv1's columns + a row of ones for the bias
    cols1[:, 25] = 1

    def step():
        w1, b1, w2, b2, w3, b3, w4, b4 = p
        # conv1, one GEMM per image with the bias inside: (20, 26) @ (26, 576)
        for i in range(5):
            for j in range(5):
                cols1[:, i * 5 + j].reshape(N, 24, 24)[...] = x[:, 0, i:i + 24, j:j + 24]
        w1b = np.concatenate([w1.reshape(20, 25), b1[:, None]], axis=1)  # (20, 26)
        y1 = np.matmul(w1b, cols1).reshape(N, 20, 24, 24)                 # (N, 20, 24, 24)
        a1 = np.maximum(y1, 0)
        s1, p1 = max_pool_2x2(a1, (2, 3))                                 # (N, 20, 12, 12)
        # conv2 on all images at once, channel-major: (50, 500) @ (500, 8*8*N)
        p1t = np.ascontiguousarray(p1.transpose(1, 2, 3, 0))             # (20, 12, 12, N)
        cols2 = np.empty((20, 5, 5, 8, 8, N), dtype)
        for i in range(5):
            for j in range(5):
                cols2[:, i, j] = p1t[:, i:i + 8, j:j + 8]
        cols2 = cols2.reshape(500, 64 * N)                               # (C*KH*KW, OH*OW*N)
        y2 = w2.reshape(50, 500) @ cols2                                 # (50, 64 N)
        y2 += b2[:, None]
        a2 = np.maximum(y2, 0).reshape(50, 8, 8, N)
        s2, p2 = max_pool_2x2(a2, (1, 2))                                # (50, 4, 4, N)
        f = p2.reshape(800, N)         # rows in NCHW's flatten order c*16 + h*4 + w
        h3 = w3 @ f                                                      # (500, N)
        h3 += b3[:, None]
        a3 = np.maximum(h3, 0)
        logits = (w4 @ a3).T + b4                                        # (N, 10)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        grad_logits = (e / e.sum(axis=1, keepdims=True) - onehot) / N    # mean cross-entropy

        grad_w4, grad_b4 = grad_logits.T @ a3.T, grad_logits.sum(axis=0)
        grad_h3 = w4.T @ grad_logits.T                                   # (500, N)
        grad_h3 *= h3 > 0
        grad_w3, grad_b3 = grad_h3 @ f.T, grad_h3.sum(axis=1)
        grad_p2 = (w3.T @ grad_h3).reshape(50, 4, 4, N)
        grad_a2 = np.empty_like(a2)
        max_pool_2x2_backward(grad_p2, s2, p2, grad_a2, (1, 2))
        grad_y2 = grad_a2.reshape(50, 64 * N)
        grad_y2 *= y2 > 0
        grad_w2, grad_b2 = (cols2 @ grad_y2.T).T, grad_y2.sum(axis=1)   # (50, 500), (50,)
        grad_cols2 = (w2.reshape(50, 500).T @ grad_y2).reshape(20, 5, 5, 8, 8, N)
        grad_p1t = np.zeros((20, 12, 12, N), dtype)                      # col2im
        for i in range(5):
            for j in range(5):
                grad_p1t[:, i:i + 8, j:j + 8] += grad_cols2[:, i, j]
        grad_p1 = np.ascontiguousarray(grad_p1t.transpose(3, 0, 1, 2))  # (N, 20, 12, 12)
        grad_a1 = np.empty_like(a1)
        max_pool_2x2_backward(grad_p1, s1, p1, grad_a1, (2, 3))
        grad_a1 *= y1 > 0
        grad_y1 = grad_a1.reshape(N, 20, 576)
        grad_w1b = (grad_y1 @ cols1.swapaxes(1, 2)).sum(axis=0)          # (20, 26)
        grads = (grad_w1b[:, :25], grad_w1b[:, 25], grad_w2, grad_b2,
                 grad_w3, grad_b3, grad_w4, grad_b4)
        for param, grad in zip(p, grads):
            param -= lr * grad.reshape(param.shape)
    return step, p


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="batch 8, 3 repeats: a smoke run (timings meaningless)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats (default 15; 3 with --quick)")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    repeats = args.repeats or (3 if args.quick else 15)

    from tinygrad_cnn.backend import reduce_malloc_churn
    tuned = reduce_malloc_churn()
    import tinygrad_cnn as tg
    import tinygrad_cnn.functional as F
    try:
        import torch
    except ImportError:
        torch = None
    blas, threads = bench_cnn.blas_description()
    if torch is not None:
        torch.set_num_threads(threads or os.cpu_count() or 1)
    print(f"# LeNet step: hand-written NumPy, tinygrad_cnn, PyTorch; float32, medians of "
          f"{repeats} repeats, taking turns; mallopt: {'yes' if tuned else 'no'}")
    print(f"# numpy {np.__version__}: {blas}; torch: "
          f"{'not installed' if torch is None else torch.__version__}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| batch | hand ms | ours ms | torch ms | hand/torch | ours/torch | ours/hand |")
    print("|-------|---------|---------|----------|------------|------------|-----------|")
    for N in (8,) if args.quick else (64, 256):
        tg.manual_seed(0)
        ours, theirs, _ = bench_cnn.lenet_case(tg, F, torch, N, np.float32)
        params, x, labels = ours.inputs       # the same start for the hand-written step
        hand, hand_params = make_step(params, x, labels)
        check_same_step(hand, hand_params, ours, params)
        results = bench_cnn.measure([hand, ours] + ([theirs] if theirs else []), repeats,
                                    1 if args.quick else 3)
        t_hand, t_ours = results[0][0], results[1][0]
        t_torch = results[2][0] if theirs else None
        peer = (f"{t_torch * 1e3:8.2f} | {t_hand / t_torch:10.2f} | {t_ours / t_torch:10.2f}"
                if t_torch else f"{'-':>8} | {'-':>10} | {'-':>10}")
        print(f"| {N:5d} | {t_hand * 1e3:7.2f} | {t_ours * 1e3:7.2f} | {peer} | "
              f"{t_ours / t_hand:9.2f} |", flush=True)
    return 0


def check_same_step(hand, hand_params, ours, params):
    """Run one step of each from the same start; their updated parameters must agree."""
    hand()
    ours()
    names = ("w1", "b1", "w2", "b2", "w3", "b3", "w4", "b4")
    for name, a, b, start in zip(names, hand_params, ours.params, params):
        moved = np.abs(a - start).max()
        if not np.allclose(a, b.data, rtol=1e-4, atol=1e-6) or moved == 0:
            raise AssertionError(f"the hand-written step and tinygrad_cnn's disagree on "
                                 f"{name}: max difference {np.abs(a - b.data).max():.3g} "
                                 f"(the step moved it by {moved:.3g})")


if __name__ == "__main__":
    sys.exit(main())
