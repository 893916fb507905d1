"""The GPU half of repro's contract: the triton kernels on a CUDA device give the CPU's bits.

Not a test. `benchmarks/gpu_check.sh` runs it on a machine with a GPU (nothing to download);
the expected values come from this machine's CPU beforehand:

    .venv/bin/python benchmarks/gpu_check.py --write-expect benchmarks/gpu_expected.json   # here (numba)
    python benchmarks/gpu_check.py --expect benchmarks/gpu_expected.json                   # on the GPU

Two models, both random (numpy PCG64 in sorted parameter order, as `models.tiny` initialises,
so no download, no tokenizer and no transformers are needed): the tiny test model's shape, and
SmolLM2-135M's shape (30 layers, 576 wide, 9 query / 3 KV heads, vocabulary 49152). For each:
the state hash after a few AdamW steps on fixed token batches, and the greedy tokens of a short
decode, compared with the CPU's. Then timings of the SmolLM2-shaped step and of decoding, repro
on the GPU against plain torch on the same GPU (transformers' Llama + autograd + torch AdamW,
and `generate`), when transformers is installed there.

`--allow-cpu` runs the same thing through triton's interpreter (tiny shape only): how this
script itself is tested without a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SHAPES = {
    "tiny": dict(vocab_size=259, hidden_size=64, intermediate_size=160, num_layers=2, num_heads=4, num_kv_heads=2,
                 head_dim=16, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
                 max_position_embeddings=1024),
    "smollm2": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
                    num_kv_heads=3, head_dim=64, rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
                    max_position_embeddings=2048),
}
# (steps, batch, seq) of the bit check, and decode length
PLAN = {"tiny": (3, 2, 16, 8), "smollm2": (2, 4, 128, 8)}


def config(shape: str):
    from bitswarm.repro.config import LlamaConfig

    return LlamaConfig(**SHAPES[shape])


def params(cfg, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(seed))
    out = {}
    for name, shape in cfg.param_shapes().items():
        if name.endswith("norm.weight"):
            out[name] = np.ones(shape, np.float32)
        else:
            out[name] = rng.normal(0.0, 0.02, size=shape).astype(np.float32)
    return out


def batch(cfg, b: int, t: int, step: int):
    from bitswarm.repro.train import MicroBatch

    ids = np.random.Generator(np.random.PCG64(1000 + step)).integers(3, cfg.vocab_size, size=(b, t + 1))
    return [MicroBatch(ids=ids[:, :-1].astype(np.int64), targets=ids[:, 1:].astype(np.int64))]


def train(backend: str, shape: str) -> dict:
    from bitswarm.repro.backend import get_backend
    from bitswarm.repro.model import Llama
    from bitswarm.repro.train import Hyper, TrainState, train_step

    steps, b, t, _ = PLAN[shape]
    cfg = config(shape)
    p = params(cfg)
    model, state = Llama(cfg, p, get_backend(backend)), TrainState(p, seed=0)
    hyper, times = Hyper(lr=1e-3, total_steps=steps), []
    for step in range(steps):
        t0 = time.perf_counter()
        r = train_step(model, state, batch(cfg, b, t, step), hyper)
        times.append(time.perf_counter() - t0)
    return {"state_hash": state.hash(), "loss": r["loss"], "step_s": times}


def decode(backend: str, shape: str, batch_size: int = 1) -> dict:
    from bitswarm.repro.backend import get_backend
    from bitswarm.repro.model import KVCache, Llama

    *_, n = PLAN[shape]
    cfg = config(shape)
    B = get_backend(backend)
    model = Llama(cfg, params(cfg), B)
    ids = np.random.Generator(np.random.PCG64(7)).integers(3, cfg.vocab_size, size=(batch_size, 8)).astype(np.int64)
    cache, out = KVCache(), []
    t0 = time.perf_counter()
    logits, _ = model.forward(ids, cache)
    for _ in range(n):
        nxt = B.greedy(logits.reshape(batch_size, -1, cfg.vocab_size)[:, -1])
        out.append(np.asarray(nxt).reshape(-1).tolist())
        logits, _ = model.forward(np.asarray(nxt, np.int64).reshape(batch_size, 1), cache)
    dt = time.perf_counter() - t0
    return {"tokens": out, "tokens_per_s": n * batch_size / dt}


def torch_baseline(shape: str) -> dict:
    """Plain torch on the GPU: transformers' Llama, autograd, torch.optim.AdamW; then generate."""
    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as e:
        return {"skipped": f"{e.name} is not installed here"}
    s = SHAPES[shape]
    hf = LlamaConfig(vocab_size=s["vocab_size"], hidden_size=s["hidden_size"], intermediate_size=s["intermediate_size"],
                     num_hidden_layers=s["num_layers"], num_attention_heads=s["num_heads"],
                     num_key_value_heads=s["num_kv_heads"], rms_norm_eps=s["rms_norm_eps"], rope_theta=s["rope_theta"],
                     tie_word_embeddings=True, max_position_embeddings=s["max_position_embeddings"])
    model = LlamaForCausalLM(hf).to("cuda", torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    steps, b, t, n = PLAN[shape]
    ids = torch.randint(3, s["vocab_size"], (b, t + 1), device="cuda")
    times = []
    for _ in range(steps + 2):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = model(input_ids=ids[:, :-1], labels=ids[:, 1:]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    prompt = torch.randint(3, s["vocab_size"], (1, 8), device="cuda")
    with torch.no_grad():
        model.generate(prompt, max_new_tokens=2, do_sample=False)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        torch.cuda.synchronize()
    return {"step_s": statistics.median(times[2:]), "tokens_per_s": n / (time.perf_counter() - t0)}


def measure(backend: str, shapes: list[str]) -> dict:
    out = {}
    for shape in shapes:
        print(f"  {shape}: training {PLAN[shape][0]} steps on {backend} ...", flush=True)
        out[shape] = {"train": train(backend, shape)}
        print(f"  {shape}: decoding {PLAN[shape][3]} tokens on {backend} ...", flush=True)
        out[shape]["decode"] = decode(backend, shape)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--expect", type=Path, help="the CPU's values (from --write-expect) to compare with")
    ap.add_argument("--write-expect", type=Path, help="compute the expected values here with numba and write them")
    ap.add_argument("--allow-cpu", action="store_true", help="no GPU: run the triton kernels interpreted (tiny only)")
    ap.add_argument("--shapes", default="tiny,smollm2")
    args = ap.parse_args()
    shapes = args.shapes.split(",")
    if args.write_expect:
        got = measure("numba", shapes)
        expect = {s: {"state_hash": got[s]["train"]["state_hash"], "tokens": got[s]["decode"]["tokens"]} for s in shapes}
        args.write_expect.write_text(json.dumps(expect, indent=2) + "\n")
        print(f"wrote {args.write_expect}")
        return 0

    from bitswarm.repro.kernels.triton.runtime import ON_GPU

    if not ON_GPU and not args.allow_cpu:
        print("no CUDA device here (pass --allow-cpu to run the kernels in triton's interpreter)", file=sys.stderr)
        return 2
    backend = "cuda" if ON_GPU else "triton"
    if not ON_GPU:
        shapes = [s for s in shapes if s == "tiny"]
    expect = json.loads(args.expect.read_text()) if args.expect else {}
    got = measure(backend, shapes)
    failed = False
    print(f"\n{'shape':<9} {'state hash':<14} {'greedy tokens':<14} {'step s':>8} {'tok/s':>8}")
    for s in shapes:
        tr, de, want = got[s]["train"], got[s]["decode"], expect.get(s)
        same_hash = want is None or tr["state_hash"] == want["state_hash"]
        same_tokens = want is None or de["tokens"] == want["tokens"]
        failed |= not (same_hash and same_tokens)
        mark = (lambda ok: ("same as CPU" if ok else "DIFFERENT") if want else "(no expect)")
        print(f"{s:<9} {mark(same_hash):<14} {mark(same_tokens):<14} {statistics.median(tr['step_s'][1:] or tr['step_s']):>8.3f}"
              f" {de['tokens_per_s']:>8.1f}")
        if want and not same_hash:
            print(f"    GPU {tr['state_hash']}\n    CPU {want['state_hash']}")
    if ON_GPU and "smollm2" in shapes:
        base = torch_baseline("smollm2")
        rep = got["smollm2"]
        if "skipped" in base:
            print(f"\nplain torch baseline skipped: {base['skipped']}")
        else:
            step = statistics.median(rep["train"]["step_s"][1:])
            print(f"\nSmolLM2 shape, 4x128 train step: repro {step:.3f} s, torch {base['step_s']:.3f} s "
                  f"({step / base['step_s']:.2f}x)")
            print(f"greedy decoding, batch 1: repro {rep['decode']['tokens_per_s']:.1f} tok/s, torch "
                  f"{base['tokens_per_s']:.1f} tok/s ({rep['decode']['tokens_per_s'] / base['tokens_per_s']:.2f}x)")
    print("\nRESULT:", "bits DIFFER from the CPU" if failed else "same bits as the CPU" if expect else "measured")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
