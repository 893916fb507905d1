"""What bit-exactness costs: repro (numba kernels) vs native (torch) on the same model code.

Not a test. Run:  .venv/bin/python benchmarks/repro_overhead.py [--threads 2] [--quick]

Measured in one run, side by side, on SmolLM2-135M-Instruct and on the tiny model:
  - one training step (forward + backward + AdamW) at batch x seq tokens
  - matmul GFLOP/s at the model's MLP shape: repro kernel vs torch.mm
  - generation tokens/s (greedy, KV cache), repro vs native
Each timing is the median of several repeats after a warm-up. The machine is shared and noisy:
read the ratios, not the absolute numbers. The data directory is $BITSWARM_HOME (default
~/.bitswarm); SmolLM2 is imported there on first use (conversion cached).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def train_step_time(model_dir, backend: str, batch: int, seq: int, repeats: int) -> float:
    from bitswarm.repro.backend import get_backend
    from bitswarm.repro.config import LlamaConfig
    from bitswarm.repro.model import Llama
    from bitswarm.repro.train import Hyper, MicroBatch, TrainState, train_step
    from bitswarm.repro.weights import load_params

    cfg = LlamaConfig.from_dir(model_dir)
    params = load_params(model_dir, cfg)
    model = Llama(cfg, params, get_backend(backend))
    state = TrainState(params, seed=0)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, cfg.vocab_size, size=(batch, seq + 1)).astype(np.int64)
    mb = [MicroBatch(ids=ids[:, :-1].copy(), targets=ids[:, 1:].copy())]
    return median_time(lambda: train_step(model, state, mb, Hyper(lr=1e-5)), repeats)


def matmul_rates(m: int, k: int, n: int, repeats: int) -> tuple[float, float]:
    import torch

    from bitswarm.repro.kernels.cpu import matmul as rk

    rng = np.random.default_rng(1)
    x = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)
    flop = 2.0 * m * k * n
    t_repro = median_time(lambda: rk.matmul(x, w.T), repeats)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    t_torch = median_time(lambda: torch.mm(xt, wt.T), repeats)
    return flop / t_repro / 1e9, flop / t_torch / 1e9


def gen_rate(store, cid: str, backend: str, tokens: int) -> float:
    from bitswarm.models.generate import generate

    generate(store, cid, "Hello", 2, backend=backend)  # warm-up: compile, caches
    r = generate(store, cid, "Write a short poem about the sea.", tokens, backend=backend)
    return r.new_tokens / r.seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and tokens")
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from bitswarm.models.importer import import_model, init_model
    from bitswarm.node.home import resolve_home, store_dir
    from bitswarm.repro.backend import set_threads
    from bitswarm.store import BlobStore

    set_threads(args.threads)
    con = Console(stderr=True)
    store = BlobStore(store_dir(resolve_home()))
    with con.status("importing models"):
        models = {
            "tiny": init_model(store, "tiny", 0),
            "SmolLM2-135M": import_model(store, "smollm2-135m-instruct"),
        }
    reps = 2 if args.quick else 3
    shapes = {"tiny": dict(batch=8, seq=64, mm=(512, 64, 160)), "SmolLM2-135M": dict(batch=4, seq=128, mm=(512, 576, 1536))}
    table = Table(title=f"repro vs native, {args.threads} threads")
    for col in ("model", "measure", "repro", "native", "repro / native"):
        table.add_column(col, justify="right")
    for name, cid in models.items():
        d = store.checkout(cid)
        s = shapes[name]
        with con.status(f"{name}: training step"):
            tr = train_step_time(d, "numba", s["batch"], s["seq"], reps)
            tn = train_step_time(d, "native", s["batch"], s["seq"], reps)
        table.add_row(name, f"train step s ({s['batch']}x{s['seq']} tokens)", f"{tr:.3f}", f"{tn:.3f}", f"{tr / tn:.2f}x time")
        with con.status(f"{name}: matmul"):
            gr, gt = matmul_rates(*s["mm"], repeats=5)
        table.add_row(name, f"matmul GFLOP/s {s['mm']}", f"{gr:.1f}", f"{gt:.1f}", f"{gt / gr:.2f}x slower")
        with con.status(f"{name}: generation"):
            ntok = 16 if args.quick else 32
            rr = gen_rate(store, cid, "repro", ntok)
            rn = gen_rate(store, cid, "native", ntok)
        table.add_row(name, "generation tokens/s", f"{rr:.2f}", f"{rn:.2f}", f"{rn / rr:.2f}x slower")
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
