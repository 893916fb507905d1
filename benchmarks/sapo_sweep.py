"""When does sharing pay? SAPO's I/J splits against the base policy's success rate (`sapo.py --sweep`).

    .venv/bin/python benchmarks/sapo.py --sweep [--sweep-warm 20,25,40] [--sweep-splits 8/0,4/4]
        [--seeds 3] [--peers 8] [--rounds 20] [--jobs 2] [--out benchmarks/out]

The base policy is the tiny model warm-started on `tiny_count` for W supervised steps: few steps
give a policy that rarely answers right (sparse reward), more give one that often does. For each
W, each split I local / J external groups per peer per round (I + J = 8 groups per update) and
each seed (peer keys, task draws and sampling), one in-memory swarm of `--peers` peers runs
`--rounds` rounds. Reported per (W, split): the base success rate (round 0's mean reward, before
any update), cumulative reward (mean over peers, summed over rounds) as mean ± spread over seeds,
and the ratio of each split's cumulative reward to 8/0's (per seed, then mean and min..max).
Arms run in `--jobs` processes; run it with NUMBA_NUM_THREADS=1 so that they do not fight over cores.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _arm(job: dict) -> dict:
    from bitswarm.jobs.tasks import TaskMix
    from bitswarm.store import BlobStore
    from bitswarm.swarm.peer import PeerSettings
    from bitswarm.swarm.runner import LocalSwarm

    store = BlobStore(Path(job["store"]))
    s = PeerSettings(local=job["local"], external=job["external"], group_size=4, max_new_tokens=20,
                     lr=job["lr"], micro_batch=8, task_seed=job["seed"])
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        swarm = LocalSwarm(store, job["model"], Path(tmp), TaskMix([job["task"]]), s, swarm_seed=job["seed"])
        try:
            for i in range(job["peers"]):
                swarm.add_peer(f"p{i}")
            per_round = []
            for _ in range(job["rounds"]):
                reports = swarm.run_round()
                per_round.append(sum(x["reward"] for x in reports) / len(reports))
        finally:
            swarm.close()
    return {**{k: job[k] for k in ("warm", "local", "external", "seed")}, "reward_per_round": per_round,
            "cumulative": sum(per_round), "seconds": round(time.perf_counter() - t, 1)}


def sweep(warm_steps: list[int], splits: list[tuple[int, int]], seeds: int, peers: int, rounds: int, jobs: int,
          task: str, lr: float, out: Path) -> dict:
    from bitswarm.jobs.tasks import TaskMix
    from bitswarm.models.importer import init_model
    from bitswarm.store import BlobStore
    from bitswarm.swarm.warmstart import warm_start

    with tempfile.TemporaryDirectory() as tmp:
        store = BlobStore(Path(tmp) / "store")
        base = init_model(store, "tiny", 0)
        models = {w: warm_start(store, base, TaskMix([task]), Path(tmp) / f"warm-{w}", steps=w, lr=1e-2)
                  for w in warm_steps}
        work = [{"store": str(Path(tmp) / "store"), "model": models[w], "warm": w, "local": i, "external": j,
                 "seed": seed, "peers": peers, "rounds": rounds, "task": task, "lr": lr}
                for w in warm_steps for seed in range(seeds) for i, j in splits]
        results = []
        # spawn, not fork: the parent already runs OpenMP (warm-start), and a forked OpenMP child aborts.
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for res in pool.map(_arm, work):
                print(f"W={res['warm']:>3} {res['local']}/{res['external']} seed {res['seed']}: cumulative "
                      f"{res['cumulative']:.3f} ({res['seconds']} s)", flush=True)
                results.append(res)
    table = []
    for w in warm_steps:
        rows = [r for r in results if r["warm"] == w]
        base_rate = statistics.mean(r["reward_per_round"][0] for r in rows)
        isolated = {r["seed"]: r["cumulative"] for r in rows if r["external"] == 0}
        for i, j in splits:
            cums = [r["cumulative"] for r in rows if (r["local"], r["external"]) == (i, j)]
            ratios = [r["cumulative"] / isolated[r["seed"]] for r in rows
                      if (r["local"], r["external"]) == (i, j) and isolated.get(r["seed"])]
            table.append({"warm_steps": w, "base_success": round(base_rate, 4), "split": f"{i}/{j}",
                          "cumulative_mean": round(statistics.mean(cums), 3),
                          "cumulative_min": round(min(cums), 3), "cumulative_max": round(max(cums), 3),
                          "ratio_vs_8_0_mean": round(statistics.mean(ratios), 3) if ratios else None,
                          "ratio_min": round(min(ratios), 3) if ratios else None,
                          "ratio_max": round(max(ratios), 3) if ratios else None,
                          "seeds_with_isolated_reward": len(ratios)})
    report = {"task": task, "peers": peers, "rounds": rounds, "seeds": seeds, "lr": lr, "table": table,
              "arms": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / "sapo_sweep.json").write_text(json.dumps(report, indent=1))
    plot(report, out / "sapo_sweep.png")
    print(f"{'W':>4} {'base':>6} {'split':>6} {'cumulative (min..max)':>24} {'ratio vs 8/0 (min..max)':>26}")
    for row in table:
        ratio = (f"{row['ratio_vs_8_0_mean']:.2f} ({row['ratio_min']:.2f}..{row['ratio_max']:.2f})"
                 if row["ratio_vs_8_0_mean"] is not None else "n/a (8/0 never scored)")
        print(f"{row['warm_steps']:>4} {row['base_success']:>6.3f} {row['split']:>6} "
              f"{row['cumulative_mean']:>8.3f} ({row['cumulative_min']:.3f}..{row['cumulative_max']:.3f}) {ratio:>26}")
    return report


def plot(report: dict, path: Path) -> None:
    """Left: mean reward per round per split at the sparsest warm start, the seeds' spread shaded.
    Right: each split's cumulative reward over 8/0's against the base success rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401 - matplotlib.ticker below
    import numpy as np

    arms = report["arms"]
    sparse = min(a["warm"] for a in arms)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for split in sorted({(a["local"], a["external"]) for a in arms}, reverse=True):
        runs = np.array([a["reward_per_round"] for a in arms if a["warm"] == sparse and (a["local"], a["external"]) == split])
        if len(runs):
            x = np.arange(runs.shape[1])
            left.plot(x, runs.mean(0), label=f"{split[0]}/{split[1]}")
            left.fill_between(x, runs.min(0), runs.max(0), alpha=0.2)
        rows = [t for t in report["table"] if t["split"] == f"{split[0]}/{split[1]}" and t["ratio_vs_8_0_mean"]]
        if rows and split != (8, 0):
            xs = [t["base_success"] for t in rows]
            right.errorbar(xs, [t["ratio_vs_8_0_mean"] for t in rows], fmt="o-", capsize=3, label=f"{split[0]}/{split[1]}",
                           yerr=[[t["ratio_vs_8_0_mean"] - t["ratio_min"] for t in rows],
                                 [t["ratio_max"] - t["ratio_vs_8_0_mean"] for t in rows]])
    left.set(title=f"reward per round, warm start {sparse} steps ({report['peers']} peers, {report['seeds']} seeds)",
             xlabel="round", ylabel="mean reward over peers")
    left.legend(title="I/J")
    right.axhline(1.0, color="grey", lw=0.8)
    right.axhline(1093.31 / 561.79, color="grey", lw=0.8, ls="--", label="SAPO's +94%")
    right.set(title="cumulative reward / 8/0's", xlabel="base success rate (round 0)", ylabel="ratio", xscale="log")
    right.set_xticks(sorted({t["base_success"] for t in report["table"]}))
    right.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    right.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.0%}" if v >= 0.1 else f"{v:.1%}"))
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
