"""Where a repro training step (or a generation) spends its time, op by op.

Not a test. Run:  .venv/bin/python benchmarks/repro_profile.py [--threads 2] [--what train|prefill|decode|batched]

Every op of the numba backend is wrapped with a timer (the wrapper costs about a microsecond a
call); matmuls are split by shape, so the table shows which products are slow. "outside ops"
is the step's time that no op accounts for: numpy elementwise work and copies in the model
code, and Python. SmolLM2-135M at the benchmark's shape (4 x 128 tokens); the data directory is
$BITSWARM_HOME (default ~/.bitswarm).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--what", choices=["train", "prefill", "decode", "batched"], default="train")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()

    from bitswarm.home import Home
    from bitswarm.models.importer import import_model
    from bitswarm.repro.backend import get_backend, set_threads
    from bitswarm.repro.config import LlamaConfig
    from bitswarm.repro.model import KVCache, Llama
    from bitswarm.repro.train import Hyper, MicroBatch, TrainState, train_step
    from bitswarm.repro.weights import load_params
    from bitswarm.store import BlobStore

    set_threads(args.threads)
    store = BlobStore(Home.resolve().store)
    model_dir = store.checkout(import_model(store, "smollm2-135m-instruct"))
    cfg = LlamaConfig.from_dir(model_dir)
    params = load_params(model_dir, cfg)
    B = get_backend("numba")
    times: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)

    def timed(name, fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            out = fn(*a, **kw)
            key = name
            if name in ("matmul", "matmul_acc", "bmm", "bmm_acc"):
                key = f"{name} {'x'.join(map(str, a[0].shape))} @ {'x'.join(map(str, getattr(a[1], 'shape', ('packed',))))}"
            times[key] += time.perf_counter() - t
            calls[key] += 1
            return out
        return wrapper

    from types import SimpleNamespace

    wrapped = SimpleNamespace(**{k: (timed(k, v) if callable(v) and k != "decode_weight" else v)
                                 for k, v in vars(B).items()})
    model = Llama(cfg, params, wrapped)
    rng = np.random.default_rng(0)
    if args.what == "train":
        state = TrainState(params, seed=0)
        ids = rng.integers(3, cfg.vocab_size, size=(4, 129)).astype(np.int64)
        mb = [MicroBatch(ids=ids[:, :-1].copy(), targets=ids[:, 1:].copy())]
        run = lambda: train_step(model, state, mb, Hyper(lr=1e-5))  # noqa: E731
    elif args.what == "prefill":
        ids = rng.integers(3, cfg.vocab_size, size=(1, 48)).astype(np.int64)
        run = lambda: model.forward(ids, cache=KVCache())  # noqa: E731
    else:  # decode: one prompt; batched: 8 prompts of 31..52 tokens decoding together
        from bitswarm.repro.generate import generate

        n = 1 if args.what == "decode" else 8
        prompts = [list(rng.integers(3, cfg.vocab_size, size=40 if n == 1 else 31 + 3 * i)) for i in range(n)]
        run = lambda: generate(model, prompts, 32, eos_ids=(), batch_size=n)  # noqa: E731
    run()  # warm-up: compilation, caches
    times.clear(), calls.clear()
    t = time.perf_counter()
    for _ in range(args.repeats):
        run()
    total = (time.perf_counter() - t) / args.repeats
    rows = sorted(times.items(), key=lambda kv: -kv[1])
    in_ops = sum(times.values()) / args.repeats
    print(f"{args.what}: {total:.3f} s per run, ops {in_ops:.3f} s, outside ops {total - in_ops:.3f} s")
    for key, s in rows[: args.top]:
        print(f"{s / args.repeats:8.4f} s {calls[key] // args.repeats:6d} calls  {key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
