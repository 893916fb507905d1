"""SAPO's comparison on this machine: a swarm sharing rollouts (I=4 local / J=4 external) against
isolated peers (8 local / 0 external), with the same number of rollout groups per update.

    .venv/bin/python benchmarks/sapo.py [--peers 4] [--rounds 30] [--out benchmarks/out]
    .venv/bin/python benchmarks/sapo.py --sweep --peers 8 --rounds 20   # the gain against base success
    .venv/bin/python benchmarks/sapo.py --scaling [--scaling-sizes 4,8,16,32,64] [--scaling-hivemind 8]

Both arms start from the same policy: the tiny test model given a short supervised warm start
on the task's answer format (a random model never writes an answer, so RL would have nothing
to learn from), then run on `tiny_count` (reasoning-gym letter_counting in one word) in one
process with the in-memory transport. (`tiny_sum`, two one-digit terms, does not move within
the budget: after 300 supervised steps the tiny model still only guesses the commonest sum.)
Reported:

* reward per round for both arms (PNG) and the cumulative-reward ratio swarm / isolated,
  next to SAPO's +94% (1093.31 vs 561.79, eight Qwen2.5-0.5B peers, nine tasks);
* communication time (publish + gather + verify) as a share of round time.

`--scaling` measures only how a peer's communication time grows with the swarm, in memory and
over hivemind processes on loopback (benchmarks/sapo_scaling.py), and writes sapo_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bitswarm.models.importer import init_model
from bitswarm.store import BlobStore
from bitswarm.swarm.peer import PeerSettings
from bitswarm.swarm.runner import LocalSwarm
from bitswarm.jobs.tasks import TaskMix
from bitswarm.swarm.warmstart import warm_start


def arm(store, model, mix, workdir, peers, rounds, local, external, settings, label) -> dict:
    s = PeerSettings(**{**settings.__dict__, "local": local, "external": external})
    swarm = LocalSwarm(store, model, workdir, mix, s, swarm_seed=0)
    for i in range(peers):
        swarm.add_peer(f"{label}-{i}")
    per_round = []
    for r in range(rounds):
        t = time.perf_counter()
        reports = swarm.run_round()
        mean = sum(x["reward"] for x in reports) / len(reports)
        per_round.append(mean)
        print(f"{label:>8} round {r:>3}  mean reward {mean:.3f}  {time.perf_counter() - t:.1f}s", flush=True)
    summary = swarm.summary()
    swarm.close()
    return {"reward_per_round": per_round, "cumulative": sum(per_round), "summary": summary}


def hivemind_comm(store, model, mix, root: Path, settings: PeerSettings, rounds: int) -> dict:
    """The swarm setting over real libp2p DHTs (two peers on loopback): communication share."""
    swarm = LocalSwarm(store, model, root / "hivemind", mix, settings, transport="hivemind")
    try:
        for i in range(2):
            swarm.add_peer(f"h{i}")
        for _ in range(rounds):
            swarm.run_round()
        s = swarm.summary()
    finally:
        swarm.close()
    comm = [r["comm_seconds"] for p in swarm.peers.values() for r in p.history]
    print(f"hivemind: comm {sum(comm) / len(comm) * 1000:.1f} ms per peer-round, {s['comm_fraction']:.2%} of round time",
          flush=True)
    return {"peers": 2, "rounds": rounds, "comm_share": s["comm_fraction"],
            "comm_ms_per_peer_round": round(sum(comm) / len(comm) * 1000, 2)}


def plot(swarm: list[float], isolated: list[float], path: Path, ratio: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(len(swarm)), swarm, label="swarm: 4 local / 4 external")
    ax.plot(range(len(isolated)), isolated, label="isolated: 8 local / 0 external")
    ax.set_xlabel("round")
    ax.set_ylabel("mean reward over peers")
    ax.set_title(f"SAPO, tiny model: cumulative reward swarm / isolated = {ratio:.2f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warm-steps", type=int, default=25, help="few on purpose: RL should have room to improve")
    ap.add_argument("--task", default="tiny_count", help="task name, or several comma-separated")
    ap.add_argument("--hivemind-rounds", type=int, default=3, help="rounds of the 2-peer libp2p measurement (0 skips)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--scaling", action="store_true", help="measure only comm time against swarm size")
    ap.add_argument("--scaling-sizes", default="4,8,16,32,64", help="in-memory swarm sizes for --scaling")
    ap.add_argument("--scaling-hivemind", default="8", help="hivemind process counts for --scaling; empty to skip")
    ap.add_argument("--sweep", action="store_true", help="map sharing's gain against the base success rate "
                    "(benchmarks/sapo_sweep.py): every split at every warm-start length, several seeds")
    ap.add_argument("--sweep-warm", default="20,25,40", help="warm-start steps for --sweep (few: sparse reward)")
    ap.add_argument("--sweep-splits", default="8/0,6/2,4/4,2/6", help="I/J splits for --sweep (8/0 is the baseline)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per point for --sweep")
    ap.add_argument("--jobs", type=int, default=2, help="processes for --sweep (one thread each)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.sweep:
        import sapo_sweep

        splits = [tuple(int(x) for x in s.split("/")) for s in args.sweep_splits.split(",")]
        if (8, 0) not in splits:
            ap.error("--sweep-splits must include 8/0, the isolated baseline the others are compared with")
        sapo_sweep.sweep(_sizes(args.sweep_warm), splits, args.seeds, args.peers, args.rounds, args.jobs,
                         args.task, args.lr, args.out)
        return
    mix = TaskMix(args.task.split(","))
    settings = PeerSettings(group_size=4, max_new_tokens=20, lr=args.lr, micro_batch=8)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = BlobStore(root / "store")
        t = time.perf_counter()
        model = warm_start(store, init_model(store, "tiny", 0), mix, root / "warm", steps=args.warm_steps, lr=1e-2)
        print(f"warm start: {time.perf_counter() - t:.1f}s -> {model}", flush=True)
        if args.scaling:
            import sapo_scaling

            sapo_scaling.run(store, root / "store", model, args.task, root, _sizes(args.scaling_sizes),
                             _sizes(args.scaling_hivemind), args.out)
            return
        t = time.perf_counter()
        swarm = arm(store, model, mix, root / "swarm", args.peers, args.rounds, 4, 4, settings, "swarm")
        isolated = arm(store, model, mix, root / "isolated", args.peers, args.rounds, 8, 0, settings, "isolated")
        arms_seconds = time.perf_counter() - t
        hm = hivemind_comm(store, model, mix, root, PeerSettings(**{**settings.__dict__, "local": 4, "external": 4}),
                           args.hivemind_rounds) if args.hivemind_rounds else None
    ratio = swarm["cumulative"] / isolated["cumulative"] if isolated["cumulative"] else float("inf")
    comm = swarm["summary"]["comm_fraction"]
    plot(swarm["reward_per_round"], isolated["reward_per_round"], args.out / "sapo_rewards.png", ratio)
    result = {
        "peers": args.peers, "rounds": args.rounds, "model": f"tiny + {args.warm_steps} warm-start steps", "task": args.task, "lr": args.lr,
        "cumulative_reward": {"swarm_4_4": round(swarm["cumulative"], 4), "isolated_8_0": round(isolated["cumulative"], 4)},
        "ratio_swarm_over_isolated": round(ratio, 4),
        "sapo_paper_ratio": round(1093.31 / 561.79, 4),
        "reward_per_round": {"swarm_4_4": swarm["reward_per_round"], "isolated_8_0": isolated["reward_per_round"]},
        "comm_share_of_round_time_swarm": comm,
        "rollouts_used_external": swarm["summary"]["rollouts_used_external"],
        "arms_seconds": round(arms_seconds, 1),
        "hivemind": hm,
    }
    (args.out / "sapo.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "reward_per_round"}, indent=2))
    print(f"plot: {args.out / 'sapo_rewards.png'}")


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


if __name__ == "__main__":
    main()
