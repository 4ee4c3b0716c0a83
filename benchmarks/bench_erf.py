"""Times erf and exact GELU (forward, and forward + backward) against PyTorch CPU.

    python benchmarks/bench_erf.py                  # float32 64x32x16x16
    python benchmarks/bench_erf.py --dtype float64 --shape 8 16 32 32
    python benchmarks/bench_erf.py --no-mallopt     # glibc's default malloc thresholds

Median milliseconds of ``--repeats`` timed calls after 3 warm-up calls, in one
process: ``x.erf()``, ``F.gelu(x)`` and ``F.gelu(x)`` with its backward (an
upstream gradient of ones), ours and PyTorch's (float32 and float64 only).
PyTorch runs with its default thread count and with one thread, as NumPy's
elementwise ufuncs use one core.  As in ``bench_cnn.py``, glibc's malloc
thresholds are raised first (``reduce_malloc_churn``) unless ``--no-mallopt``.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing

import tinygrad_cnn as tg  # noqa: E402  (after the path set-up above)
import tinygrad_cnn.functional as F  # noqa: E402
from tinygrad_cnn.backend import reduce_malloc_churn  # noqa: E402

sys.path.insert(0, HERE)
import bench_norm  # noqa: E402  (its timing loop)


def median_ms(fn, repeats):
    """Median milliseconds of ``repeats`` calls after 3 untimed ones."""
    return bench_norm.median_ms(fn, repeats, warmup=3, settle=0)


def ours(x_np):
    x = tg.tensor(x_np)
    xg = tg.tensor(x_np, requires_grad=True)

    def fwd_bwd():
        y = F.gelu(xg)
        y.backward(tg.ones_like(y))
        xg.grad = None
    return {"erf": lambda: x.erf(), "gelu fwd": lambda: F.gelu(x), "gelu fwd+bwd": fwd_bwd}


def theirs(x_np):
    import torch
    x = torch.from_numpy(x_np.copy())
    xg = x.clone().requires_grad_(True)
    ones = torch.ones_like(x)

    def fwd_bwd():
        y = torch.nn.functional.gelu(xg)
        y.backward(ones)
        xg.grad = None
    return {"erf": lambda: torch.erf(x), "gelu fwd": lambda: torch.nn.functional.gelu(x),
            "gelu fwd+bwd": fwd_bwd}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float16", "float32", "float64"])
    parser.add_argument("--shape", type=int, nargs="+", default=[64, 32, 16, 16])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--no-mallopt", action="store_true",
                        help="keep glibc's default malloc thresholds")
    args = parser.parse_args()
    tuned = False if args.no_mallopt else reduce_malloc_churn()
    x_np = (np.random.default_rng(0).standard_normal(args.shape) * 2).astype(args.dtype)
    rows = {name: [median_ms(fn, args.repeats)] for name, fn in ours(x_np).items()}
    header = f"{'':14s}{'ours ms':>10s}"
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and args.dtype != "float16":
        default_threads = torch.get_num_threads()
        for threads in (default_threads, 1):
            torch.set_num_threads(threads)
            for name, fn in theirs(x_np).items():
                rows[name].append(median_ms(fn, args.repeats))
            header += f"{f'torch {threads}t ms':>15s}"
        torch.set_num_threads(default_threads)
    print(f"{args.dtype} {tuple(args.shape)}, median of {args.repeats}, malloc thresholds "
          f"raised: {'yes' if tuned else 'no'}")
    print(header)
    for name, times in rows.items():
        print(f"{name:14s}{times[0]:10.3f}" + "".join(f"{t:15.3f}" for t in times[1:]))


if __name__ == "__main__":
    main()
