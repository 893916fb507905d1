"""Matmul speed: the repro numba kernel vs torch.mm vs a naive numba fma-chain triple loop.

Not a test. Run:  .venv/bin/python benchmarks/matmul.py [--threads 2] [--repeats 7] [--quick]

All three use the same number of threads (numba.set_num_threads / torch.set_num_threads). Each
case is warmed up first (compilation, caches), then timed `repeats` times; the median is shown.
The naive loop is one fma chain per output (i over threads, j, k in order), i.e. the same bits
as the repro kernel, without tiling or packing. torch.mm is neither ordered nor bit-exact; it
is the speed we would like to be close to.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numba
import numpy as np
import torch
from numba import njit, prange

from bitswarm.repro.fp import fma32
from bitswarm.repro.kernels.cpu import matmul as repro

# (label, M, K, N)
SHAPES = [
    ("smollm2 q/o proj", 512, 576, 576),
    ("smollm2 mlp up", 512, 576, 1536),
    ("smollm2 mlp down", 512, 1536, 576),
    ("smollm2 mlp up, 2048 tok", 2048, 576, 1536),
    ("smollm2 lm head, 256 tok", 256, 576, 49152),
    ("smollm2 lm head^T (dW)", 576, 256, 49152),
    ("smollm2 dW mlp (K=tokens)", 576, 512, 1536),
    ("tiny 64x64x64", 64, 64, 64),
    ("tiny 256x64x160", 256, 64, 160),
    ("tiny 512x160x64", 512, 160, 64),
    ("tiny lm head 512x64x259", 512, 64, 259),
]
QUICK = {"smollm2 mlp up", "smollm2 mlp down", "tiny 64x64x64", "tiny 512x160x64"}


@njit(parallel=True, error_model="numpy", boundscheck=False)
def naive(a, b, c):
    m, kk = a.shape
    n = b.shape[1]
    for i in prange(m):
        for j in range(n):
            acc = c[i, j]
            for k in range(kk):
                acc = fma32(a[i, k], b[k, j], acc)
            c[i, j] = acc


def median_time(fn, repeats: int, budget_s: float) -> float:
    fn()  # warm-up
    times: list[float] = []
    t_end = time.perf_counter() + budget_s
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=numba.config.NUMBA_NUM_THREADS)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="a few shapes only")
    p.add_argument("--no-naive", action="store_true", help="skip the (slow) naive loop")
    args = p.parse_args()

    numba.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"threads={args.threads} (numba layer after first run below), torch {torch.__version__}, "
          f"numba {numba.__version__}, median of {args.repeats}")
    head = f"{'shape':28s} {'M':>5s} {'K':>5s} {'N':>6s} {'repro':>8s} {'torch':>8s} {'naive':>8s} {'repro/torch':>11s} {'repro/naive':>11s}"
    print(head + "\n" + "-" * len(head) + "   (GFLOP/s)")
    for label, m, k, n in SHAPES:
        if args.quick and label not in QUICK:
            continue
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        c = np.zeros((m, n), np.float32)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        tc = torch.empty((m, n))
        flop = 2.0 * m * k * n

        g_repro = flop / median_time(lambda: repro.matmul_acc(a, b, c), args.repeats, 3.0) / 1e9
        g_torch = flop / median_time(lambda: torch.mm(ta, tb, out=tc), args.repeats, 3.0) / 1e9
        if args.no_naive:
            g_naive = float("nan")
        else:
            g_naive = flop / median_time(lambda: naive(a, b, c), args.repeats, 3.0) / 1e9
        print(f"{label:28s} {m:5d} {k:5d} {n:6d} {g_repro:8.1f} {g_torch:8.1f} {g_naive:8.1f} "
              f"{g_repro / g_torch:11.2f} {g_repro / g_naive:11.1f}", flush=True)
    print(f"numba threading layer: {numba.threading_layer()}")


if __name__ == "__main__":
    main()
