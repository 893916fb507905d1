"""What verification costs, measured in one run on the tiny model and on SmolLM2-135M.

Not a test. Run:  .venv/bin/python benchmarks/verify_cost.py [--threads 2] [--tiny-only]

For each model: one training step vs hashing the whole state (params + AdamW moments), as a %
of the step (target < 5%); training N steps vs replaying them from checkpoints; and a dispute
against a bit-flip adversary: rounds used vs the bound, and the referee's time as a fraction of
one training step (target < 5%). Work goes to a temporary directory (SmolLM2 checkpoints are
1.6 GB each); the store is $BITSWARM_HOME's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from repro_overhead import median_time  # a sibling script: benchmarks run as scripts from this folder



def measure(store, cid, name, steps, batch, seq, work: Path) -> dict:
    from bitswarm.jobs.spec import example_spec
    from bitswarm.jobs.train_job import prepare, run_training
    from bitswarm.repro.train import train_step
    from bitswarm.verify.dispute import dispute
    from bitswarm.verify.replay import replay

    spec = example_spec(cid, steps=steps).model_copy(update={"seq_len": seq, "global_batch": batch, "checkpoint_every": steps})
    p = prepare(store, spec)
    batches = p.batches_for_step(0)
    step_s = median_time(lambda: train_step(p.model, p.state, batches, p.hyper), 3)
    hash_s = median_time(lambda: p.state.hash(), 3)
    # the hash costs the same whatever the batch; a step grows with it
    big = prepare(store, spec.model_copy(update={"seq_len": 128, "global_batch": 4}))
    big_batches = big.batches_for_step(0)
    big_step_s = median_time(lambda: train_step(big.model, big.state, big_batches, big.hyper), 2)
    t = time.perf_counter()
    run_training(store, spec, work / f"{name}-honest")
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    ok = replay(work / f"{name}-honest", prepare(store, spec)).ok
    replay_s = time.perf_counter() - t
    run_training(store, spec, work / f"{name}-cheat", adversary="bitflip@step=2,op=25")
    t = time.perf_counter()
    d = dispute(work / f"{name}-honest", work / f"{name}-cheat", lambda: prepare(store, spec))
    game_s = time.perf_counter() - t
    return dict(step_s=step_s, hash_s=hash_s, big_step_s=big_step_s, train_s=train_s, replay_s=replay_s, replay_ok=ok, game_s=game_s, **d)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tiny-only", action="store_true")
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from bitswarm.models.importer import import_model, init_model
    from bitswarm.node.home import resolve_home, store_dir
    from bitswarm.repro.backend import set_threads
    from bitswarm.store import BlobStore

    set_threads(args.threads)
    store = BlobStore(store_dir(resolve_home()))
    models = [("tiny", init_model(store, "tiny", 0), 8, 8, 64)]
    if not args.tiny_only:
        models.append(("SmolLM2-135M", import_model(store, "smollm2-135m-instruct"), 3, 2, 64))
    table = Table(title=f"verification cost, {args.threads} threads")
    for col in ("model", "measure", "value"):
        table.add_column(col, justify="right")
    con = Console(stderr=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, cid, steps, batch, seq in models:
            with con.status(f"{name}: measuring"):
                r = measure(store, cid, name, steps, batch, seq, Path(tmp))
            table.add_row(name, f"train step ({batch}x{seq} tokens)", f"{r['step_s']:.3f} s")
            table.add_row(name, "state hash per step", f"{r['hash_s']:.3f} s = {100 * r['hash_s'] / r['step_s']:.1f}% of a step")
            table.add_row(name, "  vs a 4x128-token step", f"{r['big_step_s']:.3f} s: hash = {100 * r['hash_s'] / r['big_step_s']:.1f}%")
            table.add_row(name, f"train {steps} steps vs replay", f"{r['train_s']:.2f} s vs {r['replay_s']:.2f} s (ok={r['replay_ok']})")
            table.add_row(name, "dispute vs bitflip@2,op=25", f"winner {r['winner']}, step {r['first_divergent_step']}, op #{r['op_index']} {r['op']}")
            table.add_row(name, "rounds vs bound", f"{r['rounds']} <= {r['round_bound']}")
            table.add_row(name, "referee time", f"{r['referee_seconds']:.4f} s = {100 * r['referee_seconds'] / r['step_s']:.2f}% of a step ({r['referee']})")
            table.add_row(name, "whole game (both parties' traces)", f"{r['game_s']:.2f} s")
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
