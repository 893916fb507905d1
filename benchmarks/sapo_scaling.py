"""`benchmarks/sapo.py --scaling`: what one round's communication costs a peer as the swarm grows.

In memory: one cheap round (after a warm-up round) at each swarm size, in one process; the
mean of the peers' `comm_seconds` (publish + list + fetch + verify + re-score). Over hivemind:
N peers as separate OS processes on loopback, each with its own DHT and p2p daemon, the first
the others' bootstrap; a warm-up round, then one measured round, with a barrier around each so
every peer has something to sample. A peer fetches SAMPLE_FANOUT * J publishers whatever N is,
so the target is comm time growing at most 2x from 4 to 64 peers.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import statistics
import time
from pathlib import Path

from bitswarm.jobs.tasks import TaskMix
from bitswarm.store import BlobStore
from bitswarm.swarm.peer import PeerSettings, SwarmPeer
from bitswarm.swarm.runner import LocalSwarm, peer_key

# One task, two 8-token completions, two external groups: communication, not compute, dominates.
CHEAP = PeerSettings(local=1, external=2, group_size=2, max_new_tokens=8)


def memory_row(store: BlobStore, model: str, mix: TaskMix, root: Path, n: int) -> dict:
    swarm = LocalSwarm(store, model, root / f"memory-{n}", mix, CHEAP)
    try:
        for i in range(n):
            swarm.add_peer(f"s{i}")
        swarm.run_round()  # round 0: warm-up (nothing to gather yet, kernels compiled)
        reports = swarm.run_round()
    finally:
        swarm.close()
    return _row("memory", n, reports)


def _row(transport: str, n: int, reports: list[dict]) -> dict:
    comm = [r["comm_seconds"] for r in reports]
    return {"transport": transport, "peers": n, "comm_ms_mean": round(statistics.mean(comm) * 1000, 3),
            "comm_ms_max": round(max(comm) * 1000, 3),
            "publishers_fetched_mean": round(statistics.mean(r["publishers_fetched"] for r in reports), 2),
            "external_groups_mean": round(statistics.mean(r["external_groups"] for r in reports), 2)}


def _hivemind_peer(i: int, store_root: str, model: str, task: str, workdir: str, boot, barrier, results) -> None:
    """One peer process: its own DHT (bootstrapping from peer 0's), a warm-up and a measured round."""
    import torch

    from bitswarm.swarm.hivemind_transport import HivemindTransport

    torch.set_num_threads(1)
    key = peer_key(0, f"h{i}")
    if i == 0:
        transport = HivemindTransport(key, start_timeout_s=60)
        for _ in range(barrier.parties - 1):
            boot.put(transport.visible_maddrs())
    else:
        transport = HivemindTransport(key, initial_peers=boot.get(timeout=120), start_timeout_s=60)
    try:
        peer = SwarmPeer(f"h{i}", BlobStore(Path(store_root)), Path(workdir) / f"h{i}", model, transport,
                         TaskMix(task.split(",")), key, CHEAP)
        reports = []
        for r in range(2):
            barrier.wait(timeout=300)  # everyone up (then: everyone has published round 0)
            peer.next_round = r
            reports.append(peer.run_round())
        results.put(reports[-1])
        barrier.wait(timeout=300)  # stay up until every peer has read from us
    finally:
        transport.close()


def hivemind_row(store_root: Path, model: str, task: str, root: Path, n: int) -> dict:
    ctx = mp.get_context("spawn")
    boot, results, barrier = ctx.Queue(), ctx.Queue(), ctx.Barrier(n)
    procs = [ctx.Process(target=_hivemind_peer, args=(i, str(store_root), model, task, str(root / f"hivemind-{n}"),
                                                      boot, barrier, results)) for i in range(n)]
    for p in procs:
        p.start()
    try:
        reports = [results.get(timeout=600) for _ in range(n)]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
    return _row("hivemind", n, reports)


def run(store: BlobStore, store_root: Path, model: str, task: str, root: Path, sizes: list[int],
        hivemind_sizes: list[int], out: Path) -> dict:
    mix = TaskMix(task.split(","))
    rows = []
    for n in sizes:
        t = time.perf_counter()
        rows.append(memory_row(store, model, mix, root, n))
        print(f"memory   {n:>3} peers: {rows[-1]['comm_ms_mean']:.2f} ms ({time.perf_counter() - t:.0f}s)", flush=True)
    for n in hivemind_sizes:
        t = time.perf_counter()
        rows.append(hivemind_row(store_root, model, task, root, n))
        print(f"hivemind {n:>3} processes: {rows[-1]['comm_ms_mean']:.2f} ms ({time.perf_counter() - t:.0f}s)",
              flush=True)
    for transport in ("memory", "hivemind"):
        mine = [r for r in rows if r["transport"] == transport]
        for r in mine:
            r["growth_vs_first"] = round(r["comm_ms_mean"] / mine[0]["comm_ms_mean"], 2)
    print(f"\n{'transport':<9} {'peers':>5} {'comm ms/peer':>13} {'growth':>7} {'fetched':>8}")
    for r in rows:
        print(f"{r['transport']:<9} {r['peers']:>5} {r['comm_ms_mean']:>13.2f} {r['growth_vs_first']:>6.2f}x "
              f"{r['publishers_fetched_mean']:>8}")
    result = {"settings": CHEAP.__dict__, "task": task, "model": model, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "sapo_scaling.json").write_text(json.dumps(result, indent=2))
    print(f"json: {out / 'sapo_scaling.json'}")
    return result
