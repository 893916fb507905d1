"""Matmul speed: the repro numba kernel vs torch vs a naive numba fma-chain triple loop.

Not a test. Run:  .venv/bin/python benchmarks/matmul.py [--threads 2] [--repeats 7] [--quick]

All three use the same number of threads (numba.set_num_threads / torch.set_num_threads). Each
case is warmed up first (compilation, caches), then timed `repeats` times; the median is shown.
The three are timed one after the other, not interleaved, so that one's idle OpenMP threads do
not spin against the other's. The naive loop is one fma chain per output (rows over threads,
then j, then k in order), i.e. the same bits as the repro kernel without tiling or packing; it
is timed on the first rows only when the whole problem would take too long (the rate per row
is the same). torch is neither ordered nor bit-exact; it is the speed we would like to be near.

Layouts, as the model calls them: nn = a @ b; nt = x @ W.T (linear forward); tn = dy.T @ x
(weight gradient).
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

# (label, batch (0 = plain matmul), M, K, N, layout)
SHAPES = [
    ("smol q_proj fwd, 512 tok", 0, 512, 576, 576, "nt"),
    ("smol mlp up fwd, 512 tok", 0, 512, 576, 1536, "nt"),
    ("smol mlp down fwd", 0, 512, 1536, 576, "nt"),
    ("smol mlp up dX", 0, 512, 1536, 576, "nn"),
    ("smol mlp up dW", 0, 1536, 512, 576, "tn"),
    ("smol mlp up fwd, 2048 tok", 0, 2048, 576, 1536, "nt"),
    ("smol lm head fwd, 256 tok", 0, 256, 576, 49152, "nt"),
    ("smol lm head dX", 0, 256, 49152, 576, "nn"),
    ("smol lm head dW", 0, 49152, 256, 576, "tn"),
    ("smol attn q@k^T 9h x 256", 9, 256, 64, 256, "nt"),
    ("tiny 64x64x64", 0, 64, 64, 64, "nt"),
    ("tiny 256x64x160", 0, 256, 64, 160, "nt"),
    ("tiny 512x160x64", 0, 512, 160, 64, "nt"),
    ("tiny lm head 512x64x259", 0, 512, 64, 259, "nt"),
    ("tiny dW 160x512x64", 0, 160, 512, 64, "tn"),
    ("tiny attn 16 x 128x16x128", 16, 128, 16, 128, "nt"),
]
QUICK = {"smol mlp up fwd, 512 tok", "smol mlp down fwd", "smol mlp up dW", "tiny 64x64x64",
         "tiny 512x160x64", "tiny lm head 512x64x259"}
NAIVE_MAX_FLOP = 4e8


@njit(parallel=True, error_model="numpy", boundscheck=False)
def naive_bmm(a, b, c):
    nb, m, kk = a.shape
    n = b.shape[2]
    for t in prange(nb * m):
        p, i = t // m, t % m
        for j in range(n):
            acc = c[p, i, j]
            for k in range(kk):
                acc = fma32(a[p, i, k], b[p, k, j], acc)
            c[p, i, j] = acc


def operands(rng, nb: int, m: int, k: int, n: int, layout: str):
    """a (nb, m, k) and b (nb, k, n) float32 as the model passes them (views, not copies)."""
    bb = max(nb, 1)
    if layout[0] == "t":
        a = rng.standard_normal((bb, k, m), dtype=np.float32).transpose(0, 2, 1)
    else:
        a = rng.standard_normal((bb, m, k), dtype=np.float32)
    if layout[1] == "t":
        b = rng.standard_normal((bb, n, k), dtype=np.float32).transpose(0, 2, 1)
    else:
        b = rng.standard_normal((bb, k, n), dtype=np.float32)
    return a, b


def median_time(fn, repeats: int, budget_s: float) -> float:
    fn()  # warm-up: compilation, page faults, caches
    times: list[float] = []
    t_end = time.perf_counter() + budget_s
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    time.sleep(0.02)  # let this method's idle threads stop spinning before the next one
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=numba.config.NUMBA_NUM_THREADS)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="a few shapes only")
    p.add_argument("--no-naive", action="store_true", help="skip the (slow) naive loop")
    p.add_argument("--threading", choices=["pool", "prange"], default=repro.THREADING,
                   help="how the repro kernel runs its threads (default: %(default)s)")
    args = p.parse_args()
    repro.THREADING = args.threading

    numba.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"threads={args.threads} (repro: {args.threading}), torch {torch.__version__}, "
          f"numba {numba.__version__}, median of {args.repeats}, GFLOP/s")
    head = (f"{'case':26s} {'B':>3s} {'M':>5s} {'K':>5s} {'N':>5s} {'lay':>3s} "
            f"{'repro':>7s} {'torch':>7s} {'naive':>7s} {'repro/torch':>11s} {'repro/naive':>11s}")
    print(head + "\n" + "-" * len(head))
    for label, nb, m, k, n, layout in SHAPES:
        if args.quick and label not in QUICK:
            continue
        a3, b3 = operands(rng, nb, m, k, n, layout)
        flop = 2.0 * max(nb, 1) * m * k * n
        if nb:
            a, b = a3, b3
            c = np.zeros((nb, m, n), np.float32)
            run_repro = lambda: repro.bmm_acc(a, b, c)  # noqa: E731
            ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.empty(nb, m, n)
            run_torch = lambda: torch.bmm(ta, tb, out=tc)  # noqa: E731
        else:
            a, b = a3[0], b3[0]
            c = np.zeros((m, n), np.float32)
            run_repro = lambda: repro.matmul_acc(a, b, c)  # noqa: E731
            ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.empty(m, n)
            run_torch = lambda: torch.mm(ta, tb, out=tc)  # noqa: E731

        g_repro = flop / median_time(run_repro, args.repeats, 3.0) / 1e9
        g_torch = flop / median_time(run_torch, args.repeats, 3.0) / 1e9
        g_naive = float("nan")
        if not args.no_naive:
            rows = max(1, min(m, int(m * NAIVE_MAX_FLOP / flop)))
            an, cn = a3[:, :rows], np.zeros((a3.shape[0], rows, n), np.float32)
            t = median_time(lambda: naive_bmm(an, b3, cn), min(args.repeats, 3), 2.0)
            g_naive = flop * rows / m / t / 1e9
        print(f"{label:26s} {nb:3d} {m:5d} {k:5d} {n:5d} {layout:>3s} {g_repro:7.1f} {g_torch:7.1f} "
              f"{g_naive:7.1f} {g_repro / g_torch:11.2f} {g_repro / g_naive:11.1f}", flush=True)
    if args.threading == "prange":
        print(f"numba threading layer: {numba.threading_layer()}")


if __name__ == "__main__":
    main()
