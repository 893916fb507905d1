"""What bit-exactness costs: repro (numba kernels) vs native (torch) on the same model code.

Not a test. Run:  .venv/bin/python benchmarks/repro_overhead.py [--threads 2] [--quick]

Measured in one run, side by side, on SmolLM2-135M-Instruct and on the tiny model:
  - one training step (forward + backward + AdamW) at batch x seq tokens; also against the
    plain-PyTorch way (transformers' Llama + autograd + torch.optim.AdamW) as a second baseline
  - matmul GFLOP/s at the model's MLP shape: repro kernel vs torch.mm
  - generation tokens/s (greedy, KV cache), repro vs native
  - batched decoding (SmolLM2, repro only): 8 different chat prompts decoded together vs the
    same 8 one by one, tokens/s of both and the ratio; the tokens must be identical
    (`--only batched` runs just this measure)
Each timing is the median of several repeats after a warm-up, each backend in its own
subprocess: numba's and torch's OpenMP pools spin-wait after a parallel region, and in one
process the idle pool of one would steal the cores of the other. The machine is shared and
noisy: read the ratios, not the absolute numbers. The data directory is $BITSWARM_HOME (default
~/.bitswarm); SmolLM2 is imported there on first use (conversion cached).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
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


def hf_train_step_time(model_dir, batch: int, seq: int, repeats: int) -> float:
    """The plain-PyTorch reference point: transformers' Llama, autograd, torch.optim.AdamW."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95))
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(3, model.config.vocab_size, size=(batch, seq + 1)).astype(np.int64))

    def step():
        opt.zero_grad()
        out = model(ids[:, :-1], labels=None).logits
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return median_time(step, repeats)


def matmul_rate(m: int, k: int, n: int, backend: str, repeats: int) -> float:
    """GFLOP/s of x @ W.T (a linear layer's forward) on one backend."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)
    if backend == "numba":
        from bitswarm.repro.kernels.cpu import matmul as rk

        fn = lambda: rk.matmul(x, w.T)  # noqa: E731
    else:
        import torch

        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        fn = lambda: torch.mm(xt, wt.T)  # noqa: E731
    return 2.0 * m * k * n / median_time(fn, repeats) / 1e9


def gen_rate(store, cid: str, backend: str, tokens: int) -> float:
    """Greedy decoding tokens/s with a KV cache, never stopping early at an end token."""
    from bitswarm.models.generate import encode_prompt, load
    from bitswarm.repro.generate import generate

    model, tok = load(store, cid, backend)
    prompt = encode_prompt(tok, "Write a short poem about the sea.", chat=True)
    generate(model, [prompt], 2)  # warm-up: compile, caches
    t = time.perf_counter()
    [out] = generate(model, [prompt], tokens, eos_ids=())
    return len(out) / (time.perf_counter() - t)


CHAT_PROMPTS = (
    "Write a short poem about the sea.",
    "What is 17 times 23?",
    "Name three countries in South America.",
    "Explain in one paragraph why the sky is blue, as if to a ten year old child who keeps asking why.",
    "Translate 'good morning' into French.",
    "Give me a haiku about autumn leaves falling on a quiet mountain path at dusk.",
    "hi",
    "List the planets of the solar system in order from the sun, with one fact about each of them.",
)


def batched_gen_rates(store, cid: str, tokens: int) -> dict:
    """Greedy decoding of 8 different chat prompts, never stopping early: all 8 decoding
    together (batch_size=8) vs one after the other (batch_size=1), with repro. Both include the
    prefill: one prompt at a time one by one, the 8 packed into one pass (`Llama.prefill`) when
    batched; "decode" rates leave each side's own prefill time out."""
    from bitswarm.models.generate import encode_prompt, load
    from bitswarm.repro.generate import generate
    from bitswarm.repro.model import KVCache

    model, tok = load(store, cid, "repro")
    prompts = [encode_prompt(tok, p, chat=True) for p in CHAT_PROMPTS]
    for size in (1, 2):  # warm-up of both paths: compile, caches
        generate(model, prompts[:2], 3, batch_size=size)
    with model.decoding():  # the weights generate prefills with
        prefill_alone = median_time(lambda: [model.prefill([p], [KVCache()]) for p in prompts], 3)
        prefill_packed = median_time(lambda: model.prefill(prompts, [KVCache() for _ in prompts]), 3)
    t = time.perf_counter()
    alone = generate(model, prompts, tokens, eos_ids=(), batch_size=1)
    t_alone = time.perf_counter() - t
    t = time.perf_counter()
    together = generate(model, prompts, tokens, eos_ids=(), batch_size=len(prompts))
    t_together = time.perf_counter() - t
    assert together == alone, "batched decoding changed tokens"
    n = sum(map(len, alone))
    decoded = n - len(prompts)  # the first token of each request comes from its prefill
    return {
        "prompt_tokens": [len(p) for p in prompts], "new_tokens": n,
        "one_by_one": n / t_alone, "batched": n / t_together, "ratio": t_alone / t_together,
        "prefill_one_by_one_s": prefill_alone, "prefill_packed_s": prefill_packed,
        "decode_one_by_one": decoded / max(t_alone - prefill_alone, 1e-9),
        "decode_batched": decoded / max(t_together - prefill_packed, 1e-9),
        "decode_ratio": (t_alone - prefill_alone) / max(t_together - prefill_packed, 1e-9),
    }


def commit_time(model_dir, repeats: int) -> float:
    """Seconds to hash the whole training state once (parameters and both AdamW moments)."""
    from bitswarm.repro.config import LlamaConfig
    from bitswarm.repro.train import TrainState
    from bitswarm.repro.weights import load_params

    cfg = LlamaConfig.from_dir(model_dir)
    state = TrainState(load_params(model_dir, cfg), seed=0)
    return median_time(state.hash, repeats)


def machine_limits() -> dict:
    """The machine's physical limits, measured: peak fp32 GFLOP/s (torch.mm on a large square,
    MKL/oneDNN near the FMA units' peak) and memory bandwidth GB/s (a 512 MiB copy: read + write)."""
    import torch

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    flops = 2.0 * n**3 / median_time(lambda: torch.mm(a, b), 5) / 1e9
    src = np.ones(128 << 20, np.float32)
    dst = np.empty_like(src)
    bw = 2 * src.nbytes / median_time(lambda: np.copyto(dst, src), 5) / 1e9
    return {"peak_gflops": flops, "bandwidth_gbs": bw}


MEASURES = ("train", "matmul", "generate")
SHAPES = {"tiny": dict(batch=8, seq=64, mm=(512, 64, 160)), "SmolLM2-135M": dict(batch=4, seq=128, mm=(512, 576, 1536))}


def worker(args) -> dict:
    """One measurement in this process: prints {"value": ...}."""
    from bitswarm.home import Home
    from bitswarm.repro.backend import set_threads
    from bitswarm.store import BlobStore

    set_threads(args.threads)
    store = BlobStore(Home.resolve().store)
    s = SHAPES[args.model_name]
    reps = 2 if args.quick else 3
    if args.measure == "train":
        if args.backend == "torch":
            return {"value": hf_train_step_time(store.checkout(args.cid), s["batch"], s["seq"], reps)}
        return {"value": train_step_time(store.checkout(args.cid), args.backend, s["batch"], s["seq"], reps)}
    if args.measure == "matmul":
        return {"value": matmul_rate(*s["mm"], args.backend, repeats=7)}
    if args.measure == "commit":
        return {"value": commit_time(store.checkout(args.cid), reps)}
    if args.measure == "limits":
        return {"value": machine_limits()}
    if args.measure == "batched":
        return {"value": batched_gen_rates(store, args.cid, 16 if args.quick else 32)}
    return {"value": gen_rate(store, args.cid, "repro" if args.backend == "numba" else "native", 16 if args.quick else 32)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and tokens")
    ap.add_argument("--only", choices=["batched"], help="run only this measure")
    ap.add_argument("--worker", nargs=4, metavar=("MEASURE", "MODEL", "CID", "BACKEND"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.measure, args.model_name, args.cid, args.backend = args.worker
        print(json.dumps(worker(args)))
        return 0

    from rich.console import Console
    from rich.table import Table

    from bitswarm.models.importer import import_model, init_model
    from bitswarm.home import Home
    from bitswarm.store import BlobStore

    con = Console(stderr=True)
    store = BlobStore(Home.resolve().store)
    with con.status("importing models"):
        models = {"SmolLM2-135M": import_model(store, "smollm2-135m-instruct")}
        if not args.only:
            models = {"tiny": init_model(store, "tiny", 0), **models}

    def measure(what, name, cid, backend) -> float:
        cmd = [sys.executable, __file__, "--threads", str(args.threads), "--worker", what, name, cid, backend]
        if args.quick:
            cmd.insert(2, "--quick")
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])["value"]

    def batched_rows(table) -> dict:
        with con.status("SmolLM2-135M: batched decoding of 8 chat prompts"):
            b = measure("batched", "SmolLM2-135M", models["SmolLM2-135M"], "numba")
        table.add_row("SmolLM2-135M", f"8 prompts x {b['new_tokens'] // 8} tokens/s, batched | one by one",
                      f"{b['batched']:.2f}", f"{b['one_by_one']:.2f}", f"batched {b['ratio']:.2f}x faster")
        table.add_row("SmolLM2-135M", "  decode only (prefill left out)", f"{b['decode_batched']:.2f}",
                      f"{b['decode_one_by_one']:.2f}", f"batched {b['decode_ratio']:.2f}x faster")
        return b

    if args.only == "batched":
        table = Table(title=f"repro batched decoding, {args.threads} threads (identical tokens)")
        for col in ("model", "measure", "batched", "one by one", "ratio"):
            table.add_column(col, justify="right")
        b = batched_rows(table)
        Console().print(table)
        print(json.dumps({"SmolLM2-135M/batched": b}))
        return 0

    table = Table(title=f"repro vs native, {args.threads} threads")
    for col in ("model", "measure", "repro", "native", "ratio"):
        table.add_column(col, justify="right")
    results = {}
    for name, cid in models.items():
        s = SHAPES[name]
        for what in MEASURES:
            with con.status(f"{name}: {what}"):
                r, n = measure(what, name, cid, "numba"), measure(what, name, cid, "native")
            results[f"{name}/{what}"] = {"repro": r, "native": n}
            if what == "train":
                with con.status(f"{name}: transformers train step"):
                    hf = measure(what, name, cid, "torch")
                results[f"{name}/{what}"]["transformers"] = hf
                table.add_row(name, f"train step s ({s['batch']}x{s['seq']} tokens)", f"{r:.3f}", f"{n:.3f}", f"repro takes {r / n:.2f}x")
                table.add_row(name, "  vs transformers+autograd step s", f"{r:.3f}", f"{hf:.3f}", f"repro takes {r / hf:.2f}x")
            elif what == "matmul":
                table.add_row(name, f"matmul GFLOP/s {s['mm']}", f"{r:.1f}", f"{n:.1f}", f"torch {n / r:.2f}x faster")
            else:
                table.add_row(name, "generation tokens/s", f"{r:.2f}", f"{n:.2f}", f"native {n / r:.2f}x faster")
    results["SmolLM2-135M/batched"] = batched_rows(table)
    with con.status("state commitment and machine limits"):
        commit = measure("commit", "SmolLM2-135M", models["SmolLM2-135M"], "numba")
        limits = measure("limits", "tiny", models["tiny"], "numba")
    step = results["SmolLM2-135M/train"]["repro"]
    results["SmolLM2-135M/commit"] = {"seconds": commit, "share_of_step": commit / (step + commit)}
    results["limits"] = limits
    table.add_row("SmolLM2-135M", "state commitment s (per step)", f"{commit:.3f}", "", f"{commit / (step + commit):.1%} of a step")
    table.add_row("machine", "peak fp32 GFLOP/s | bandwidth GB/s", f"{limits['peak_gflops']:.0f}", f"{limits['bandwidth_gbs']:.1f}", "")
    Console().print(table)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
