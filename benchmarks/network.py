"""The network's figures, side by side in one run (not part of the test suite).

    .venv/bin/python benchmarks/network.py [--jobs 3] [--blob-mb 540] [--steps 40]

1. Throughput: a devnet and `bitswarm node run` processes (poster, solver, verifier, referee)
   on loopback; tiny train jobs submitted one after another with `bitswarm job submit`: jobs
   settled per minute and seconds from submit to settled (the challenge window is part of it).
2. Verification cost: verifier CPU time / solver CPU time for one tiny job at the default
   sample rate (jobs.market.solve against jobs.market.audit, in this process; target <= 0.3).
3. Blob fetch: a blob fetched from a peer over libp2p on loopback against sha256 over the same
   bytes on one core (every byte is hashed on arrival; target >= 70% of the hashing rate).
4. An idle node: CPU share and resident memory of a `bitswarm node run` process and its
   children (the libp2p daemon) over 20 s with no jobs (targets < 2% and < 400 MB).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the loopback network launcher the node tests use

from tests.node.network import cli_json, make_node, start_chain, wait_for  # noqa: E402


def verification_cost(steps: int, size: str) -> dict:
    from bitswarm.jobs import market
    from bitswarm.jobs.onchain import last_leaf
    from bitswarm.jobs.spec import example_spec
    from bitswarm.models.importer import init_model
    from bitswarm.node.config import Settings
    from bitswarm.store import BlobStore

    d = Path(tempfile.mkdtemp())
    store = BlobStore(d / "store")
    model = init_model(store, size, 0)
    spec = example_spec(model, steps=steps).model_copy(update={"seq_len": 64, "global_batch": 4, "checkpoint_every": 2})
    doc = market.load_doc(store, market.store_doc(store, market.make_doc(store, "train", spec.model_dump(mode="json"))))
    market.plan(store, doc)  # compile kernels before timing either side
    t0 = time.process_time()
    solved = market.solve(store, doc, d / "solver")
    solver = time.process_time() - t0
    rate = Settings.model_fields["verify_sample_rate"].default
    t0 = time.process_time()
    audit = market.audit(store, doc, solved.result_cid, lambda cid: None, d / "verifier", root=solved.party.root,
                         last_leaf=last_leaf(solved.party)[0], audit_leaf=steps // 2,
                         samples=max(1, round(rate * steps)), seed=1)
    verifier = time.process_time() - t0
    assert audit.ok, audit.why
    return {"model": size, "steps": steps, "checkpoint_every": 2, "sample_rate": rate, "steps_reexecuted": len(audit.checked),
            "solver_cpu_s": round(solver, 3), "verifier_cpu_s": round(verifier, 3),
            "verifier_over_solver": round(verifier / solver, 3), "target": "<= 0.3"}


def _tree_usage(pid: int) -> tuple[float, int, dict]:
    """CPU seconds and memory of a node and its children (the DHT process, the libp2p daemon):
    the node's whole resident set plus what each child holds on its own (its unique set: pages
    it shares with the node, libraries and forked memory, are counted once, in the node)."""
    p = psutil.Process(pid)
    children = p.children(recursive=True)
    cpu = sum(q.cpu_times().user + q.cpu_times().system for q in [p, *children])
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    kb = {k: int(status[k].split()[0]) * 1024 for k in ("RssAnon", "RssFile", "RssShmem")}
    each = {f"node:{p.pid} (rss)": p.memory_info().rss,
            f"node:{p.pid} of it anonymous": kb["RssAnon"] + kb["RssShmem"],
            f"node:{p.pid} of it file-backed (code of the libraries)": kb["RssFile"]}
    for q in children:
        each[f"{q.name()}:{q.pid} (uss)"] = q.memory_full_info().uss
    total = sum(v for k, v in each.items() if "of it" not in k)
    return cpu, total, {k: round(v / 2**20) for k, v in each.items()}


def network(jobs: int, root: Path) -> dict:
    from bitswarm.jobs.spec import example_spec
    from bitswarm.ledger.client import JOB_STATUS
    from bitswarm.models.importer import init_model
    from bitswarm.store import BlobStore

    chain = start_chain(root / "chain")
    nodes = []
    try:
        poster = make_node(root, "poster", chain, "")
        nodes.append(poster)
        model = init_model(BlobStore(poster.home / "store"), "tiny", 0)
        spec = example_spec(model, steps=6).model_copy(update={"seq_len": 16, "global_batch": 2, "checkpoint_every": 2})
        (root / "spec.yaml").write_text(spec.to_yaml())
        poster.start()
        boot = ["--bootstrap", poster.bootstrap_addr()]
        for name in ("solver", "verifier", "referee"):
            nodes.append(make_node(root, name, chain, name, args=boot).start())
        time.sleep(5)
        cpu0, _, _ = _tree_usage(nodes[3].proc.pid)
        t0 = time.monotonic()
        time.sleep(20)
        cpu1, uss, each = _tree_usage(nodes[3].proc.pid)
        idle = {"cpu_percent": round(100 * (cpu1 - cpu0) / (time.monotonic() - t0), 2), "memory_mb": round(uss / 2**20),
                "memory_by_process_mb": each, "targets": "< 2% CPU, < 400 MB"}
        lg = poster.ledger()
        seconds, start = [], time.monotonic()
        for _ in range(jobs):
            t = time.monotonic()
            job = cli_json(poster.home, "job", "submit", str(root / "spec.yaml"), "--bounty", "10", "--window", "10")["job_id"]
            wait_for("settled", lambda: JOB_STATUS[lg.job(job)["status"]] in ("done", "failed"), timeout=600)
            seconds.append(round(time.monotonic() - t, 1))
        total = time.monotonic() - start
        return {"jobs": jobs, "jobs_per_minute": round(60 * jobs / total, 2), "submit_to_settled_s": seconds,
                "challenge_window_s": 10, "idle_node": idle}
    finally:
        for n in nodes:
            n.stop()
        chain.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40, help="steps of the job whose verification cost is measured")
    ap.add_argument("--model-size", default="small", choices=["tiny", "small"],
                    help="model of the job whose verification cost is measured")
    ap.add_argument("--blob-mb", type=int, default=540)
    args = ap.parse_args()
    results = {"verification": verification_cost(args.steps, args.model_size)}
    print(json.dumps(results["verification"]), flush=True)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from blob_fetch import measure

    results["blob_fetch"] = measure(args.blob_mb)
    print(json.dumps(results["blob_fetch"]), flush=True)
    with tempfile.TemporaryDirectory() as d:
        results["network"] = network(args.jobs, Path(d))
    print(json.dumps(results["network"]), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
