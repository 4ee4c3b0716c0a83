"""Times BatchNorm2d in training (forward, and forward + backward) against PyTorch CPU.

    python benchmarks/bench_norm.py                       # float32, three ResNet-sized inputs
    python benchmarks/bench_norm.py --shape 64 16 32 32   # one input
    python benchmarks/bench_norm.py --batch-last          # inputs stored as a kln conv gives them
    python benchmarks/bench_norm.py --no-mallopt          # glibc's default malloc thresholds

Median milliseconds of ``--repeats`` timed calls after 0.25 s of untimed ones, in
one process: a BatchNorm2d layer in training mode (weight, bias and running
statistics) on x, forward alone (under no_grad) and forward + backward (a given
upstream gradient; the gradients of x, weight and bias), ours and PyTorch's.
PyTorch runs with its default thread count and with one thread, as NumPy's
elementwise ufuncs use one core.  Each library takes its turn ``--rounds`` times
and the table shows each one's range of medians, as the two share the machine's
caches and cores.  As in ``bench_cnn.py``, glibc's malloc thresholds are raised
first (``reduce_malloc_churn``) unless ``--no-mallopt``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing

import tinygrad_cnn as tg  # noqa: E402  (after the path set-up above)
from tinygrad_cnn import nn  # noqa: E402
from tinygrad_cnn.backend import reduce_malloc_churn  # noqa: E402

SHAPES = [(64, 16, 32, 32), (64, 32, 16, 16), (64, 64, 8, 8)]


def median_ms(fn, repeats, warmup=3, settle=0.25):
    """Median milliseconds of ``repeats`` calls, after untimed calls for at least
    ``settle`` seconds (and ``warmup`` calls): the other library's BLAS and OpenMP
    threads stop spinning, and this one's arrays are back in the caches (as
    ``bench_cnn.measure`` explains)."""
    start, calls = time.perf_counter(), 0
    while calls < warmup or time.perf_counter() - start < settle:
        fn()
        calls += 1
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def batch_last(a):
    """a (N, C, H, W) as a view of (C, H, W, N) memory, as a kln convolution returns it."""
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 0, -1)), -1, 0)


def ours(x_np, g_np):
    bn = nn.BatchNorm2d(x_np.shape[1], dtype=x_np.dtype)
    x, g = tg.tensor(x_np, requires_grad=True), tg.tensor(g_np)

    def forward():
        with tg.no_grad():
            bn(x)

    def fwd_bwd():
        bn(x).backward(g)
        x.grad = bn.weight.grad = bn.bias.grad = None
    return {"forward": forward, "forward + backward": fwd_bwd}


def theirs(x_np, g_np):
    import torch
    bn = torch.nn.BatchNorm2d(x_np.shape[1], dtype=getattr(torch, str(x_np.dtype)))
    x = torch.from_numpy(x_np.copy()).requires_grad_(True)
    g = torch.from_numpy(g_np.copy())

    def forward():
        with torch.no_grad():
            bn(x)

    def fwd_bwd():
        bn(x).backward(g)
        x.grad = bn.weight.grad = bn.bias.grad = None
    return {"forward": forward, "forward + backward": fwd_bwd}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--shape", type=int, nargs=4, default=None)
    parser.add_argument("--batch-last", action="store_true",
                        help="x and the upstream gradient stored as (C, H, W, N)")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-mallopt", action="store_true",
                        help="keep glibc's default malloc thresholds")
    args = parser.parse_args()
    tuned = False if args.no_mallopt else reduce_malloc_churn()
    try:
        import torch
    except ImportError:
        torch = None
    threads = [] if torch is None else [torch.get_num_threads(), 1]
    print(f"BatchNorm2d, training, {args.dtype}{', batch-last' if args.batch_last else ''}: "
          f"median of {args.repeats}, min-max over {args.rounds} rounds, malloc thresholds "
          f"raised: {'yes' if tuned else 'no'}")
    print(f"{'':34s}{'ours ms':>14s}" + "".join(f"{f'torch {t}t ms':>16s}" for t in threads))
    for shape in [tuple(args.shape)] if args.shape else SHAPES:
        rng = np.random.default_rng(0)
        x_np, g_np = (rng.standard_normal(shape).astype(args.dtype) for _ in range(2))
        if args.batch_last:
            x_np, g_np = batch_last(x_np), batch_last(g_np)
        cases = [(None, ours(x_np, g_np))] + [(t, theirs(x_np, g_np)) for t in threads]
        times = [{name: [] for name in fns} for _, fns in cases]
        for _ in range(args.rounds):
            for (t, fns), results in zip(cases, times):
                if t is not None:
                    torch.set_num_threads(t)
                for name, fn in fns.items():
                    results[name].append(median_ms(fn, args.repeats))
        if threads:
            torch.set_num_threads(threads[0])
        for name in cases[0][1]:
            label = f"{'x'.join(map(str, shape))} {name}"
            print(f"{label:34s}" + "".join(
                f"{f'{min(r[name]):.2f}-{max(r[name]):.2f}':>{14 if k == 0 else 16}s}"
                for k, r in enumerate(times)))


if __name__ == "__main__":
    main()
