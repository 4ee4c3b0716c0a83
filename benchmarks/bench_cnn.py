"""Speed and page-fault benchmark of the CNN primitives against PyTorch CPU.

    python benchmarks/bench_cnn.py            # full table (a few minutes)
    python benchmarks/bench_cnn.py --rounds 3 # three tables and each ratio's range
    python benchmarks/bench_cnn.py --quick    # smoke run: tiny repeats, seconds
    python benchmarks/bench_cnn.py --memory   # peak memory per call instead of time

Each case runs forward + backward (and for LeNet a whole training step with
SGD) in this process, for tinygrad_cnn and, when ``torch`` is importable, for
PyTorch with ``torch.set_num_threads`` equal to NumPy's BLAS thread count.
Reported: median milliseconds over 15 timed repeats after warm-up (ours and
PyTorch's taking turns in blocks of 5, so background load affects both alike),
GFLOP/s (multiply-adds counted as 2 flops), minor page faults per call
(``ru_minflt``: large arrays that glibc handed back to the OS and that must
be faulted in again), and our time / PyTorch's time.

Two settings of this machine change the numbers and are printed in the header:

* ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE``: they override the kernels and
  block sizes OpenBLAS picks for the CPU (the header names the kernel that
  runs).  Some machines set them for old OpenBLAS builds; on the AMD Zen 4
  machine of docs/benchmarks.md, ``OPENBLAS_CORETYPE=Zen`` ran this table's
  products faster than the detected kernel.  For the table most users get,
  unset them for this command only:
  ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_cnn.py``.
* glibc's allocator returns every freed block above ``M_MMAP_THRESHOLD``
  (128 KiB to 32 MiB, adaptive) to the OS, so each training step page-faults
  its large temporaries in again.  By default this script raises the
  thresholds with ``mallopt`` (see ``tinygrad_cnn.backend.reduce_malloc_churn``), for both
  frameworks alike; ``--no-mallopt`` measures the glibc defaults.

``--memory`` measures, instead of time, how much memory one call (forward +
backward, or a training step) holds at its peak beyond what was live before
it: each case and library in a fresh process, after one warm-up call, as the
growth of the peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs``; Linux only).  That process sets glibc's malloc
thresholds low instead of high, so that every large block goes back to the OS
when freed and the resident set follows what is live.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing


def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(fns, repeats, warmup, block=5, settle=0.25):
    """[(median seconds, minor page faults per call)] for each function in ``fns``.

    The functions take turns in blocks of ``block`` repeats, so a change of
    background load hits all of them alike and their ratio stays meaningful.
    With more than one function, each turn starts with untimed calls for at
    least ``settle`` seconds (and at least two calls), so that the timed
    calls see the steady state of a training loop:

    * after a call, OpenBLAS's and OpenMP's worker threads keep spinning for
      a while (~0.1 s) and would slow the other library's first calls down;
    * on a shared (virtual) machine, other tenants evict a process's arrays
      from the shared last-level cache while it runs something else, and an
      engine whose step touches tens of MB needs several calls, not one, to
      get back to its speed (measured: 1.6x slower on the first call after a
      0.2 s turn away, still 1.1x on the eighth).
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    faults = [0] * len(fns)
    while len(times[0]) < repeats:
        for k, fn in enumerate(fns):
            if len(fns) > 1:
                start, calls = time.perf_counter(), 0
                while calls < 2 or time.perf_counter() - start < settle:
                    fn()
                    calls += 1
            for _ in range(min(block, repeats - len(times[k]))):
                f0 = minor_faults()
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
                faults[k] += minor_faults() - f0
    return [(statistics.median(t), f / repeats) for t, f in zip(times, faults)]


# ---- cases: each returns (ours, theirs or None, flops) ------------------------------------
def timed(forward, leaves, backward, no_grad):
    """A callable running ``forward`` alone (under ``no_grad``) or forward + backward."""
    if not backward:
        def fn():
            with no_grad():
                forward()
        return fn

    def fn():
        y = forward()
        y.backward(y.detach())
        for t in leaves:
            t.grad = None
    return fn


def both(tg, torch, ours, theirs, arrays, grads, backward, flops):
    """Time ``ours(*tensors)`` and, with torch, ``theirs(*torch tensors)`` on ``arrays``;
    ``grads[i]`` says whether input i needs a gradient."""
    xs = [tg.Tensor(a, requires_grad=g) for a, g in zip(arrays, grads)]
    mine = timed(lambda: ours(*xs), [x for x in xs if x.requires_grad], backward, tg.no_grad)
    if torch is None:
        return mine, None, flops
    txs = [torch.tensor(a, requires_grad=g) for a, g in zip(arrays, grads)]
    peer = timed(lambda: theirs(*txs), [x for x in txs if x.requires_grad], backward,
                 torch.no_grad)
    return mine, peer, flops


def conv_case(tg, F, torch, N, C, OC, H, K, padding, input_grad, dtype, backward=True):
    rng = tg.get_rng()
    arrays = [rng.standard_normal((N, C, H, H)).astype(dtype),
              (rng.standard_normal((OC, C, K, K)) * 0.1).astype(dtype),
              rng.standard_normal(OC).astype(dtype)]
    OH = H + 2 * padding - K + 1
    fwd = 2 * N * OC * OH * OH * C * K * K
    flops = fwd * (3 if input_grad else 2) if backward else fwd
    return both(tg, torch, lambda x, w, b: F.conv2d(x, w, b, padding=padding),
                lambda x, w, b: torch.nn.functional.conv2d(x, w, b, padding=padding),
                arrays, [input_grad, True, True], backward, flops)


def depthwise_case(tg, F, torch, N, C, H, K, dtype, backward=True):
    """A depthwise convolution (groups == C, one output per channel), "same" padding."""
    rng = tg.get_rng()
    arrays = [rng.standard_normal((N, C, H, H)).astype(dtype),
              (rng.standard_normal((C, 1, K, K)) * 0.1).astype(dtype),
              rng.standard_normal(C).astype(dtype)]
    fwd = 2 * N * C * H * H * K * K
    return both(tg, torch, lambda x, w, b: F.conv2d(x, w, b, padding=K // 2, groups=C),
                lambda x, w, b: torch.nn.functional.conv2d(x, w, b, padding=K // 2, groups=C),
                arrays, [True, True, True], backward, fwd * 3 if backward else fwd)


def pool_case(tg, F, torch, N, C, H, dtype, backward=True):
    rng = tg.get_rng()
    arrays = [rng.standard_normal((N, C, H, H)).astype(dtype)]
    return both(tg, torch, lambda x: F.max_pool2d(x, 2),
                lambda x: torch.nn.functional.max_pool2d(x, 2), arrays, [True], backward, None)


def local_case(tg, F, torch, N, C, OC, H, K, dtype, backward=True):
    """local2d; PyTorch has no such op, so its peer is the same unfold + batched matmul."""
    rng = tg.get_rng()
    OH = H - K + 1
    L, KK = OH * OH, C * K * K
    arrays = [rng.standard_normal((N, C, H, H)).astype(dtype),
              (rng.standard_normal((OC, OH, OH, C, K, K)) * 0.1).astype(dtype)]

    def theirs(x, w):
        cols = torch.nn.functional.unfold(x, K)                      # (N, C*K*K, L)
        filters = w.reshape(OC, L, KK).permute(1, 2, 0)              # (L, C*K*K, OC)
        y = torch.bmm(cols.permute(2, 0, 1), filters)                # (L, N, OC)
        return y.permute(1, 2, 0).reshape(N, OC, OH, OH)
    fwd = 2 * N * OC * L * KK
    return both(tg, torch, lambda x, w: F.local2d(x, w), theirs, arrays, [True, True],
                backward, fwd * 3 if backward else fwd)


def lenet_params(rng, dtype):
    def init(*shape, fan_in):
        return (rng.standard_normal(shape) / fan_in ** 0.5).astype(dtype)
    return [init(20, 1, 5, 5, fan_in=25), init(20, fan_in=25),
            init(50, 20, 5, 5, fan_in=500), init(50, fan_in=500),
            init(500, 800, fan_in=800), init(500, fan_in=800),
            init(10, 500, fan_in=500), init(10, fan_in=500)]


def lenet_flops(N):
    conv1 = 2 * N * 20 * 24 * 24 * 25 * 2            # forward + weight gradient
    conv2 = 2 * N * 50 * 8 * 8 * 500 * 3             # + input gradient
    fc = 2 * N * (800 * 500 + 500 * 10) * 3
    return conv1 + conv2 + fc


def lenet_case(tg, F, torch, N, dtype, lr=0.01):
    """One training step: forward, cross-entropy, backward, SGD update."""
    rng = tg.get_rng()
    arrays = lenet_params(rng, dtype)
    x_np = rng.standard_normal((N, 1, 28, 28)).astype(dtype)
    labels = rng.integers(0, 10, N)
    onehot_np = (labels[:, None] == range(10)).astype(dtype)
    params = [tg.Tensor(a, requires_grad=True) for a in arrays]
    x, onehot = tg.Tensor(x_np), tg.Tensor(onehot_np)

    def ours():
        w1, b1, w2, b2, w3, b3, w4, b4 = params
        h = F.max_pool2d(F.relu(F.conv2d(x, w1, b1)), 2)          # (N, 20, 12, 12)
        h = F.max_pool2d(F.relu(F.conv2d(h, w2, b2)), 2)          # (N, 50, 4, 4)
        h = F.relu(F.linear(F.flatten(h), w3, b3))                # (N, 500)
        logits = F.linear(h, w4, b4)                              # (N, 10)
        loss = -(F.log_softmax(logits, dim=-1) * onehot).sum() / N
        loss.backward()
        for p in params:
            p.data -= lr * p.grad.data
            p.grad = None
    # for bench_floor.py, which runs the same step written by hand
    ours.inputs, ours.params = (arrays, x_np, labels), params

    if torch is None:
        return ours, None, lenet_flops(N)
    tparams = [torch.tensor(a, requires_grad=True) for a in arrays]
    tx, tlabels = torch.tensor(x_np), torch.tensor(labels)
    tF = torch.nn.functional

    def theirs():
        w1, b1, w2, b2, w3, b3, w4, b4 = tparams
        h = tF.max_pool2d(tF.relu(tF.conv2d(tx, w1, b1)), 2)
        h = tF.max_pool2d(tF.relu(tF.conv2d(h, w2, b2)), 2)
        h = tF.relu(tF.linear(h.flatten(1), w3, b3))
        loss = tF.cross_entropy(tF.linear(h, w4, b4), tlabels)
        loss.backward()
        with torch.no_grad():
            for p in tparams:
                p -= lr * p.grad
                p.grad = None
    return ours, theirs, lenet_flops(N)


def cases(quick):
    """(name, builder) rows; builders take (tg, F, torch, dtype)."""
    rows = [
        ("conv2d 64x1x28x28 -> 20, 5x5 (no input grad)",
         lambda *a: conv_case(*a[:3], 64, 1, 20, 28, 5, 0, False, a[3])),
        ("conv2d 64x20x12x12 -> 50, 5x5",
         lambda *a: conv_case(*a[:3], 64, 20, 50, 12, 5, 0, True, a[3])),
        ("conv2d 32x64x32x32 -> 64, 3x3 pad 1",
         lambda *a: conv_case(*a[:3], 32, 64, 64, 32, 3, 1, True, a[3])),
        ("depthwise conv2d 32x128x16x16, 3x3 pad 1",
         lambda *a: depthwise_case(*a[:3], 32, 128, 16, 3, a[3])),
        ("depthwise conv2d 32x96x16x16, 7x7 pad 3",
         lambda *a: depthwise_case(*a[:3], 32, 96, 16, 7, a[3])),
        ("max_pool2d 2x2 64x20x24x24", lambda *a: pool_case(*a[:3], 64, 20, 24, a[3])),
        ("max_pool2d 2x2 64x50x8x8", lambda *a: pool_case(*a[:3], 64, 50, 8, a[3])),
        ("local2d 64x20x12x12 -> 50, 5x5",
         lambda *a: local_case(*a[:3], 64, 20, 50, 12, 5, a[3])),
        ("LeNet step, batch 64", lambda *a: lenet_case(*a[:3], 64, a[3])),
        ("conv2d 256x1x28x28 -> 20, 5x5 (no input grad)",
         lambda *a: conv_case(*a[:3], 256, 1, 20, 28, 5, 0, False, a[3])),
        ("conv2d 256x20x12x12 -> 50, 5x5",
         lambda *a: conv_case(*a[:3], 256, 20, 50, 12, 5, 0, True, a[3])),
        ("max_pool2d 2x2 256x20x24x24", lambda *a: pool_case(*a[:3], 256, 20, 24, a[3])),
        ("local2d 256x20x12x12 -> 50, 5x5",
         lambda *a: local_case(*a[:3], 256, 20, 50, 12, 5, a[3])),
        ("LeNet step, batch 256", lambda *a: lenet_case(*a[:3], 256, a[3])),
    ]
    # The same ops forward only (inference, no graph recorded).
    forward_only = [
        ("forward: conv2d 64x20x12x12 -> 50, 5x5",
         lambda *a: conv_case(*a[:3], 64, 20, 50, 12, 5, 0, True, a[3], backward=False)),
        ("forward: conv2d 32x64x32x32 -> 64, 3x3 pad 1",
         lambda *a: conv_case(*a[:3], 32, 64, 64, 32, 3, 1, True, a[3], backward=False)),
        ("forward: max_pool2d 2x2 64x20x24x24",
         lambda *a: pool_case(*a[:3], 64, 20, 24, a[3], backward=False)),
        ("forward: local2d 64x20x12x12 -> 50, 5x5",
         lambda *a: local_case(*a[:3], 64, 20, 50, 12, 5, a[3], backward=False)),
    ]
    if quick:
        return [rows[0], rows[5], rows[7], rows[8], forward_only[0]]
    return rows + forward_only


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_child(index, library, dtype, quick):
    """In a fresh process: the bytes one call of case ``index`` (ours or torch's)
    holds at its peak beyond what was live before it.  Prints ``peak <bytes>``."""
    from tinygrad_cnn.backend import reduce_malloc_churn
    reduce_malloc_churn(64 * 1024)   # freed blocks go back: RSS follows live memory
    import numpy as np
    import tinygrad_cnn as tg
    import tinygrad_cnn.functional as F
    torch = None
    if library == "torch":
        import torch
        torch.set_num_threads(blas_description()[1] or os.cpu_count() or 1)
    tg.manual_seed(0)
    ours, theirs, _ = cases(quick)[index][1](tg, F, torch, np.dtype(dtype))
    fn = ours if library == "ours" else theirs
    fn()                                                  # warm-up: lazy setup, caches
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                                      # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    fn()
    print(f"peak {(_status_kib('VmHWM') - before) * 1024}")


def memory_table(args, names, torch_available):
    """The ``--memory`` table: each case and library in a fresh process."""
    if not os.path.exists("/proc/self/clear_refs"):
        print("# --memory needs Linux's /proc/self/clear_refs", file=sys.stderr)
        return 1
    print(f"# tinygrad_cnn CNN benchmark, memory: peak MiB one call holds beyond what was "
          f"live before it, {args.dtype}, each in a fresh process after one warm-up call")
    header = f"| {'case':<46} | {'ours MiB':>8} | {'torch MiB':>9} | {'ratio':>5} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for index, name in enumerate(names):
        if args.only and args.only.lower() not in name.lower():
            continue
        peaks = []
        for library in ("ours", "torch") if torch_available else ("ours",):
            cmd = [sys.executable, os.path.abspath(__file__), "--dtype", args.dtype,
                   "--memory-child", str(index), library] + (["--quick"] if args.quick else [])
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0 or not done.stdout.startswith("peak "):
                print(f"# {name}, {library}: the measuring process failed:\n{done.stderr}",
                      file=sys.stderr)
                return 1
            peaks.append(int(done.stdout.split()[1]) / 2 ** 20)
        theirs = (f"{peaks[1]:9.1f} | {peaks[0] / peaks[1]:5.2f}" if len(peaks) == 2
                  and peaks[1] > 0 else f"{peaks[1] if len(peaks) == 2 else '-':>9} | {'-':>5}")
        print(f"| {name:<46} | {peaks[0]:8.1f} | {theirs} |", flush=True)
    return 0


def blas_description():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed", None
    parts, threads = [], None
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            parts.append(f"{pool.get('internal_api')} {pool.get('version')} "
                         f"kernel={pool.get('architecture')} threads={pool.get('num_threads')}")
            threads = threads or pool.get("num_threads")
    return "; ".join(parts) or "no BLAS found", threads


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"a short smoke run: {len(cases(True))} cases (conv2d, max_pool2d, "
                             f"local2d, a LeNet step, a forward-only conv2d), 3 repeats "
                             f"(timings meaningless)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per case (default 15; 3 with --quick)")
    parser.add_argument("--no-mallopt", action="store_true",
                        help="keep glibc's default malloc thresholds (more page faults)")
    parser.add_argument("--no-torch", action="store_true", help="do not compare with PyTorch")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--only", default=None, metavar="TEXT",
                        help="run only the cases whose name contains TEXT (e.g. LeNet)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the table this many times and end with each case's "
                             "range of ratios (single runs vary with the machine's load)")
    parser.add_argument("--memory", action="store_true",
                        help="measure each call's peak memory instead of its time "
                             "(each case in a fresh process; Linux)")
    parser.add_argument("--memory-child", nargs=2, metavar=("INDEX", "LIBRARY"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        peak_child(int(args.memory_child[0]), args.memory_child[1], args.dtype, args.quick)
        return 0
    if args.rounds < 1 or args.repeats is not None and args.repeats < 1:
        parser.error("--rounds and --repeats must be at least 1")
    names = [name for name, _ in cases(args.quick)]
    if args.only and not any(args.only.lower() in name.lower() for name in names):
        parser.error(f"--only {args.only!r} matches no case; the cases are: "
                     + "; ".join(names))
    if args.memory:   # the measuring processes import torch; this one need not
        torch_available = not args.no_torch and importlib.util.find_spec("torch") is not None
        return memory_table(args, names, torch_available)
    repeats = args.repeats or (3 if args.quick else 15)
    warmup = 1 if args.quick else 3

    from tinygrad_cnn.backend import reduce_malloc_churn
    tuned = False if args.no_mallopt else reduce_malloc_churn()
    import numpy as np
    import tinygrad_cnn as tg
    import tinygrad_cnn.functional as F
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None
    blas, threads = blas_description()
    if torch is not None:
        torch.set_num_threads(threads or os.cpu_count() or 1)

    print(f"# tinygrad_cnn CNN benchmark ({'quick' if args.quick else 'full'}), "
          f"{args.dtype}, medians of {repeats} repeats after {warmup} warm-up, ours and "
          f"torch taking turns in blocks of 5")
    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"# numpy {np.__version__}: {blas}")
    if torch is not None:
        print(f"# torch {torch.__version__}: {torch.get_num_threads()} threads")
    else:
        print(f"# torch: {'left out (--no-torch)' if args.no_torch else 'not installed'}; "
              f"its columns and the ratios stay empty")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if os.environ.get(var):
            print(f"# NOTE: {var}={os.environ[var]} is set: OpenBLAS runs what it says, not "
                  f"what it detects; for the default table run: env -u OPENBLAS_CORETYPE "
                  f"-u OPENBLAS_L2_SIZE python benchmarks/bench_cnn.py")
    print(f"# malloc thresholds raised with mallopt: {'yes' if tuned else 'no'}")
    header = (f"| {'case':<46} | {'ours ms':>8} | {'GFLOP/s':>7} | {'faults':>7} | "
              f"{'torch ms':>8} | {'faults':>7} | {'ratio':>5} |")
    ratios = {}
    for round_ in range(args.rounds):
        if args.rounds > 1:
            print(f"# round {round_ + 1} of {args.rounds}")
        print(header)
        print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
        tg.manual_seed(0)
        for name, build in cases(args.quick):
            if args.only and args.only.lower() not in name.lower():
                continue
            ours, theirs, flops = build(tg, F, torch, np.dtype(args.dtype))
            results = measure([ours] if theirs is None else [ours, theirs], repeats, warmup)
            t, faults = results[0]
            gflops = f"{flops / t / 1e9:7.1f}" if flops else f"{'-':>7}"
            if theirs is not None:
                tt, tfaults = results[1]
                torch_cols = f"{tt * 1e3:8.2f} | {tfaults:7.0f} | {t / tt:5.2f}"
                ratios.setdefault(name, []).append(t / tt)
            else:
                torch_cols = f"{'-':>8} | {'-':>7} | {'-':>5}"
            print(f"| {name:<46} | {t * 1e3:8.2f} | {gflops} | {faults:7.0f} | {torch_cols} |",
                  flush=True)
    if args.rounds > 1 and ratios:
        print(f"# ratio over {args.rounds} rounds (min-max)")
        for name, values in ratios.items():
            print(f"| {name:<46} | {min(values):5.2f}-{max(values):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
